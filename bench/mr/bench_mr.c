/*
 * bench/mr — map-reduce throughput against peers in the same run.
 *
 *   wordcount over Zipf words (1 GiB, generated once under the build dir):
 *     `wc -w` (the scan ceiling), a single-threaded C reference wordcount
 *     with an open-addressing hash table (ref_wordcount.c), keel on 1 shard
 *     and on all shards;
 *   sort of 100-byte gensort-style records: GNU `sort --parallel=S`
 *     (C locale, whole lines) and keel's sort job on 1 shard and all shards.
 *
 * Peers and keel alternate (A B A B ...) and medians are reported. Inputs are
 * deterministic (seeded generators in compute/mr_gen.c) and reused across
 * runs; outputs are deleted after each run. Output: a table, then one JSON
 * line per figure (see /work/shared/BENCH.md). --quick: small inputs, one
 * repetition (a smoke run for the 'bench' test suite).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/mr/ref_wordcount.h"
#include "keel/mr.h"

#ifndef KEEL_BENCH_KEEL_EXE
#define KEEL_BENCH_KEEL_EXE "keel"
#endif
#ifndef KEEL_BENCH_MR_DATA
#define KEEL_BENCH_MR_DATA "bench-mr-data"
#endif

/* CPU seconds (user + system) of this process's threads, or of its
 * waited-for children: on a shared machine, MB per CPU-second shows the
 * engine's efficiency when wall-clock rates are swamped by other load. */
static double cpu_s(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double last_cpu; /* CPU seconds of the last run_* call */
static uint64_t split_bytes; /* per map task; 0: the engine's default */

static double now_s(void)
{
	return (double)keel_now_ns() / 1e9;
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "bench-mr: %s: %s\n", what, err);
	exit(1);
}

static bool exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static uint64_t file_size(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static void rm_rf(const char *p)
{
	pid_t pid = fork();
	if (pid == 0) {
		execlp("rm", "rm", "-rf", p, (char *)NULL);
		_exit(127);
	}
	int st;
	waitpid(pid, &st, 0);
}

/* Runs argv with stdout to out_fd (or /dev/null); returns seconds, or -1. */
static double run_timed(char *const argv[], int out_fd, int in_fd)
{
	double t0 = now_s(), c0 = cpu_s(RUSAGE_CHILDREN);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (in_fd >= 0)
			dup2(in_fd, 0);
		if (out_fd >= 0) {
			dup2(out_fd, 1);
		} else {
			int dn = open("/dev/null", O_WRONLY);
			dup2(dn, 1);
		}
		setenv("LC_ALL", "C", 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	int st;
	waitpid(pid, &st, 0);
	double t = now_s() - t0;
	last_cpu = cpu_s(RUSAGE_CHILDREN) - c0;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? t : -1;
}

/* wc -w < path: seconds, and the count it printed. */
static double run_wc(const char *path, uint64_t *count)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.wc-out", path);
	int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int in = open(path, O_RDONLY);
	char *argv[] = {"wc", "-w", NULL};
	double t = run_timed(argv, out, in);
	close(out);
	close(in);
	FILE *f = fopen(tmp, "r");
	*count = 0;
	if (f) {
		if (fscanf(f, "%" SCNu64, count) != 1)
			*count = 0;
		fclose(f);
	}
	unlink(tmp);
	return t;
}

static double run_keel(const char *job_name, const char *input, const char *outdir, uint32_t shards,
		       uint64_t budget, struct keel_mr_stats *st)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_mr_jobref job;
	if (keel_mr_job_open(&job, job_name, NULL, err))
		die("job", err);
	const char *inputs[] = {input};
	struct keel_mr_config cfg = {
		.job = &job, .inputs = inputs, .n_inputs = 1, .output = outdir,
		.shards = shards, .mem_budget = budget, .split_size = split_bytes,
		.no_fsync = true, /* the peers write to the page cache too */
	};
	rm_rf(outdir);
	double t0 = now_s(), c0 = cpu_s(RUSAGE_SELF);
	if (keel_mr_run(&cfg, st, err))
		die(job_name, err);
	double t = now_s() - t0;
	last_cpu = cpu_s(RUSAGE_SELF) - c0;
	keel_mr_job_close(&job);
	rm_rf(outdir);
	return t;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void json(const char *cs, double keel, const char *peer, double peer_v, double target,
		 const char *note)
{
	printf("{\"bench\":\"mr\",\"case\":\"%s\",\"unit\":\"MB/s\",\"keel\":%.1f", cs, keel);
	if (peer) {
		double ratio = peer_v > 0 ? keel / peer_v : 0;
		printf(",\"peer\":\"%s\",\"peer_value\":%.1f,\"ratio\":%.2f,\"better\":\"higher\"", peer,
		       peer_v, ratio);
		if (target > 0)
			printf(",\"target\":%.1f,\"meets\":%s", target, ratio >= target ? "true" : "false");
	}
	if (note)
		printf(",\"note\":\"%s\"", note);
	printf("}\n");
}

int main(int argc, char **argv)
{
	bool quick = false;
	const char *data = KEEL_BENCH_MR_DATA;
	int reps = 3;
	uint64_t words_mb = 0, sort_n = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--data") && i + 1 < argc)
			data = argv[++i];
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--words-mb") && i + 1 < argc)
			words_mb = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--sort-records") && i + 1 < argc)
			sort_n = strtoull(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: bench-mr [--quick] [--data DIR] [--reps N] [--words-mb N]"
				" [--sort-records N]\n");
			return 2;
		}
	}
	if (quick) {
		reps = 1;
		split_bytes = 2 << 20; /* small inputs: still several tasks per shard */
	}
	if (reps < 1)
		reps = 1;
	keel_log_init_from_env();
	mkdir(data, 0755);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t S = ncpu > 0 ? (uint32_t)ncpu : 1;
	uint64_t words_bytes = quick ? 16ull << 20 : 1ull << 30;
	uint64_t sort_recs = quick ? 100000 : 3000000;
	if (words_mb)
		words_bytes = words_mb << 20;
	if (sort_n)
		sort_recs = sort_n;
	uint64_t budget = 1ull << 30; /* per shard: the sort fits, as GNU sort gets -S */
	char wpath[4096], spath[4096], out[4096], tmpd[4096];
	snprintf(wpath, sizeof wpath, "%s/words-%" PRIu64 ".txt", data, words_bytes);
	snprintf(spath, sizeof spath, "%s/sort-%" PRIu64 ".dat", data, sort_recs);
	snprintf(out, sizeof out, "%s/out", data);
	snprintf(tmpd, sizeof tmpd, "%s/sort-tmp", data);
	char err[KEEL_ERRMSG_LEN];
	if (!exists(wpath)) {
		fprintf(stderr, "bench-mr: generating %s (once)\n", wpath);
		if (keel_mr_gen_words(wpath, words_bytes, 42, 100000, err))
			die("gen words", err);
	}
	if (!exists(spath)) {
		fprintf(stderr, "bench-mr: generating %s (once)\n", spath);
		if (keel_mr_gen_sort(spath, sort_recs, 42, 0, err))
			die("gen sort", err);
	}
	double wmb = (double)file_size(wpath) / 1e6, smb = (double)file_size(spath) / 1e6;

	/* ---- wordcount ---- */
	double t_wc[16], t_ref[16], t_k1[16], t_ks[16];
	uint64_t wc_count = 0;
	struct ref_wc_result ref;
	struct keel_mr_stats st1, sts;
	if (reps > 16)
		reps = 16;
	double c_wc[16], c_ref[16], c_k1[16], c_ks[16];
	for (int r = 0; r < reps; r++) {
		t_wc[r] = run_wc(wpath, &wc_count);
		c_wc[r] = last_cpu;
		double t0 = now_s(), cc = cpu_s(RUSAGE_SELF);
		int rc = ref_wordcount(wpath, &ref);
		t_ref[r] = now_s() - t0;
		c_ref[r] = cpu_s(RUSAGE_SELF) - cc;
		if (rc)
			die("reference", keel_strerror(rc));
		t_k1[r] = run_keel("wordcount", wpath, out, 1, budget, &st1);
		c_k1[r] = last_cpu;
		t_ks[r] = run_keel("wordcount", wpath, out, S, budget, &sts);
		c_ks[r] = last_cpu;
	}
	if (sts.emitted != ref.words || st1.emitted != ref.words || (wc_count && wc_count != ref.words)) {
		fprintf(stderr, "bench-mr: word counts disagree: keel %" PRIu64 "/%" PRIu64 " ref %" PRIu64
			" wc %" PRIu64 "\n", st1.emitted, sts.emitted, ref.words, wc_count);
		return 1;
	}
	if (sts.reduce_keys != ref.distinct) {
		fprintf(stderr, "bench-mr: distinct words disagree: keel %" PRIu64 " ref %" PRIu64 "\n",
			sts.reduce_keys, ref.distinct);
		return 1;
	}
	/* A local 3-node cluster (3 processes, TCP on 127.0.0.1, 1 shard each)
	 * through the keel binary, alternating with the runs above. */
	double t_k3[16], c_k3[16];
	int k3_ok = 0;
	char *k3_argv[] = {KEEL_BENCH_KEEL_EXE, "mr", "run", "wordcount", "--input", wpath,
			   "--output", out, "--local-cluster", "3", "--shards", "1", "--no-fsync",
			   "--mem", "1024", "--quiet", "--json", NULL};
	for (int r = 0; r < reps; r++) {
		rm_rf(out);
		double t = run_timed(k3_argv, -1, -1);
		rm_rf(out);
		if (t > 0) {
			c_k3[k3_ok] = last_cpu;
			t_k3[k3_ok++] = t;
		}
	}
	double k3 = k3_ok ? wmb / median(t_k3, k3_ok) : 0;
	double wc = wmb / median(t_wc, reps), rf = wmb / median(t_ref, reps);
	double k1 = wmb / median(t_k1, reps), ks = wmb / median(t_ks, reps);

	/* ---- sort ---- */
	double t_gs[16], t_s1[16], t_ss[16], c_gs[16], c_s1[16], c_ss[16];
	char par[32], sorted[4200];
	snprintf(par, sizeof par, "--parallel=%u", S);
	snprintf(sorted, sizeof sorted, "%s/gnu-sorted", data);
	mkdir(tmpd, 0755);
	bool gnu_ok = true;
	for (int r = 0; r < reps; r++) {
		char *gs_argv[] = {"sort", par, "-S", "2G", "-T", tmpd, "-o", sorted, spath, NULL};
		t_gs[r] = run_timed(gs_argv, -1, -1);
		c_gs[r] = last_cpu;
		if (t_gs[r] < 0)
			gnu_ok = false;
		unlink(sorted);
		t_s1[r] = run_keel("sort", spath, out, 1, budget, &st1);
		c_s1[r] = last_cpu;
		t_ss[r] = run_keel("sort", spath, out, S, budget, &sts);
		c_ss[r] = last_cpu;
	}
	rm_rf(tmpd);
	if (sts.output_bytes != file_size(spath)) {
		fprintf(stderr, "bench-mr: sort wrote %" PRIu64 " bytes of %" PRIu64 "\n", sts.output_bytes,
			file_size(spath));
		return 1;
	}
	double gs = gnu_ok ? smb / median(t_gs, reps) : 0;
	double s1 = smb / median(t_s1, reps), ss = smb / median(t_ss, reps);

	printf("bench mr: %u shards, %d repetition%s (medians)%s\n", S, reps, reps > 1 ? "s" : "",
	       quick ? ", --quick" : "");
	printf("%-34s %8s %9s %9s %12s\n", "case", "MB", "MB/s", "CPU s", "MB/CPU-s");
#define ROW(name, mb, t, c, k)                                                  \
	do {                                                                    \
		double cm_ = median(c, k);                                      \
		printf("%-34s %8.0f %9.1f %9.2f %12.1f\n", name, mb, (mb) / median(t, k), cm_, \
		       cm_ > 0 ? (mb) / cm_ : 0);                               \
	} while (0)
	ROW("wc -w", wmb, t_wc, c_wc, reps);
	ROW("reference wordcount (1 thread)", wmb, t_ref, c_ref, reps);
	ROW("keel wordcount, 1 shard", wmb, t_k1, c_k1, reps);
	ROW("keel wordcount, all shards", wmb, t_ks, c_ks, reps);
	if (k3_ok)
		ROW("keel wordcount, 3 local nodes", wmb, t_k3, c_k3, k3_ok);
	if (gnu_ok)
		ROW("GNU sort --parallel", smb, t_gs, c_gs, reps);
	ROW("keel sort, 1 shard", smb, t_s1, c_s1, reps);
	ROW("keel sort, all shards", smb, t_ss, c_ss, reps);
	printf("words %" PRIu64 ", distinct %" PRIu64 ", sort records %" PRIu64 "\n", ref.words,
	       ref.distinct, sort_recs);
	json("wordcount_all_shards_vs_1_shard", ks, "keel-wordcount-1-shard", k1, 1.8, NULL);
	json("wordcount_all_shards_vs_reference", ks, "c-reference-wordcount", rf, 1.5, NULL);
	json("wordcount_all_shards_vs_wc_w", ks, "wc -w", wc, 0, "scan ceiling, no target");
	if (gnu_ok)
		json("sort_all_shards_vs_gnu_sort", ss, "gnu-sort-parallel", gs, 2.0, NULL);
	else
		printf("{\"bench\":\"mr\",\"case\":\"sort_all_shards_vs_gnu_sort\",\"unit\":\"MB/s\","
		       "\"keel\":%.1f,\"peer\":\"gnu-sort-parallel\",\"peer_value\":null,"
		       "\"note\":\"sort failed or is not installed (coreutils)\"}\n", ss);
	json("sort_all_shards_vs_1_shard", ss, "keel-sort-1-shard", s1, 0, "scaling, no target");
	{
		double ek = wmb / median(c_ks, reps), er = wmb / median(c_ref, reps);
		printf("{\"bench\":\"mr\",\"case\":\"wordcount_mb_per_cpu_s_vs_reference\",\"unit\":"
		       "\"MB/CPU-s\",\"keel\":%.1f,\"peer\":\"c-reference-wordcount\",\"peer_value\":%.1f,"
		       "\"ratio\":%.2f,\"better\":\"higher\",\"note\":\"efficiency per CPU second, "
		       "independent of other load; no target\"}\n", ek, er, er > 0 ? ek / er : 0);
	}
	if (k3_ok)
		json("wordcount_3_local_nodes_vs_1_node", k3, "keel-wordcount-1-node-all-shards", ks, 0,
		     "3 processes x 1 shard on the same cores, TCP shuffle; no target");
	else
		printf("{\"bench\":\"mr\",\"case\":\"wordcount_3_local_nodes_vs_1_node\",\"unit\":\"MB/s\","
		       "\"keel\":null,\"note\":\"the 3-node run failed\"}\n");
	return 0;
}
