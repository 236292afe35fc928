/*
 * keel mr — run map-reduce jobs and generate their inputs.
 *
 *   keel mr run JOB --input PATH [--input PATH ...] --output DIR [options]
 *   keel mr worker --config FILE
 *   keel mr jobs
 *   keel mr gen words|sort --out FILE [--size BYTES | --records N] [--seed N]
 *
 * On a terminal, `run` redraws one progress line on stderr (tasks done/total,
 * MB/s, ETA) and prints a summary; --json prints one JSON object instead.
 * --progress-fd FD writes one JSON line per step of the job to FD as it
 * happens. With --config (or --local-cluster N) the job runs across nodes;
 * `keel mr worker --config FILE` serves one job.
 *
 * Supervision. `run` does the job in a child process and waits for it, so
 * that whatever the job's code does, this process is left to clean up: a
 * job .so that crashes (SIGSEGV in map) takes the child, the child's crash
 * handler says which task it was in (keel_mr_running), this process removes
 * the child's temporary output (OUT.keel-tmp.PID/ and its spills) and runs
 * the job again, up to --retries times, then fails naming the job, the task
 * and the signal. SIGINT and SIGTERM are passed to the child and end with
 * the same clean-up (exit 128 + signal). The retry is of the whole job on
 * this node, not of the one task: the engine runs map and reduce on its
 * shard threads, in one address space, so a crash loses the in-memory
 * tables of every task before it (see docs/design/mapreduce.md).
 *
 * A --local-cluster's configurations, worker logs and secret live in
 * DATA/.keel-mr-cluster.PID/ (mode 0700, the secret 0600, DATA = --data-dir
 * or the output's parent directory) and are removed on every exit of this
 * process but SIGKILL.
 */
/* _GNU_SOURCE (sched_getaffinity, CPU_COUNT) comes from meson.build */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <inttypes.h>
#include <libgen.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keel/mr.h"
#include "keel/runtime.h"

#define MAX_PARTITIONS 65536u   /* output files; the engine's own cap is 1 Mi */
#define MAX_MEM_MB (1u << 20)   /* 1 TiB per shard */
#define MAX_SPLIT_MB 4096u
#define MAX_LOCAL_NODES 32u
#define MAX_RETRIES 10u

struct prog {
	bool tty;
	bool quiet;
	int event_fd; /* -1: none */
};

static void human(char *b, size_t n, double bytes)
{
	const char *u[] = {"B", "KB", "MB", "GB", "TB"};
	int i = 0;
	while (bytes >= 1000 && i < 4) {
		bytes /= 1000;
		i++;
	}
	snprintf(b, n, "%.1f %s", bytes, u[i]);
}

static void on_progress(void *arg, const struct keel_mr_progress *p)
{
	struct prog *pr = arg;
	if (!pr->tty || pr->quiet)
		return;
	double secs = (double)p->elapsed_ns / 1e9;
	double rate = secs > 0 ? (double)p->input_bytes_done / secs : 0;
	char done[32], total[32];
	human(done, sizeof done, (double)p->input_bytes_done);
	human(total, sizeof total, (double)p->input_bytes_total);
	char eta[32] = "-";
	if (p->input_bytes_done < p->input_bytes_total && rate > 0)
		snprintf(eta, sizeof eta, "%.0fs",
			 (double)(p->input_bytes_total - p->input_bytes_done) / rate);
	else if (p->input_bytes_done >= p->input_bytes_total)
		snprintf(eta, sizeof eta, "reducing");
	fprintf(stderr, "\r\033[Kmap %" PRIu64 "/%" PRIu64 "  reduce %" PRIu64 "/%" PRIu64
		"  %s/%s  %.1f MB/s  ETA %s",
		p->map_tasks_done, p->map_tasks_total, p->reduce_tasks_done, p->reduce_tasks_total,
		done, total, rate / 1e6, eta);
	fflush(stderr);
}

/* One line to the --progress-fd descriptor (whole, or not at all once the
 * reader has gone). */
static void event_line(struct prog *pr, const char *line, size_t len)
{
	size_t off = 0;
	while (pr->event_fd >= 0 && off < len) {
		ssize_t w = write(pr->event_fd, line + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			pr->event_fd = -1;
			return;
		}
		off += (size_t)w;
	}
}

/* A JSON line built in j (keel_json_init_buf) to the event descriptor. */
static void event_json(struct prog *pr, struct keel_json *j, char *line)
{
	long n = keel_json_finish(j, true);
	if (n > 0)
		event_line(pr, line, (size_t)n);
}

static void on_event(void *arg, const struct keel_mr_event *ev)
{
	struct prog *pr = arg;
	static const char *const names[] = {
		[KEEL_MR_EV_START] = "start",         [KEEL_MR_EV_MAP_DONE] = "map_done",
		[KEEL_MR_EV_NODE_LOST] = "node_lost", [KEEL_MR_EV_REDUCE] = "reduce",
		[KEEL_MR_EV_PART_DONE] = "part_done", [KEEL_MR_EV_END] = "end",
	};
	char line[KEEL_ERRMSG_LEN * 6 + 512]; /* an error escaped at worst 6 bytes a byte */
	struct keel_json j;
	keel_json_init_buf(&j, line, sizeof line);
	keel_json_open_obj(&j, NULL);
	keel_json_put_str(&j, "event", names[ev->kind]);
	keel_json_put_u64(&j, "epoch", ev->epoch);
	keel_json_put_u64(&j, "nodes", ev->nodes);
	keel_json_put_u64(&j, "map_done", ev->map_tasks_done);
	keel_json_put_u64(&j, "map_tasks", ev->map_tasks_total);
	keel_json_put_u64(&j, "committed", ev->reduce_tasks_done);
	keel_json_put_u64(&j, "partitions", ev->reduce_tasks_total);
	switch (ev->kind) {
	case KEEL_MR_EV_MAP_DONE:
		keel_json_put_u64(&j, "node", ev->node);
		keel_json_put_u64(&j, "task", ev->task);
		keel_json_put_u64(&j, "node_tasks", ev->node_tasks);
		break;
	case KEEL_MR_EV_NODE_LOST:
		keel_json_put_u64(&j, "node", ev->node);
		break;
	case KEEL_MR_EV_PART_DONE:
		keel_json_put_u64(&j, "node", ev->node);
		keel_json_put_u64(&j, "partition", ev->partition);
		break;
	case KEEL_MR_EV_END:
		keel_json_put_bool(&j, "ok", !ev->error);
		if (ev->error && ev->errmsg)
			keel_json_put_str(&j, "error", ev->errmsg);
		break;
	default:
		break;
	}
	keel_json_close(&j);
	event_json(pr, &j, line);
}

/* ---- files -------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (type == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* Removes a tree if it is there (never follows a symbolic link out of it). */
static void rmtree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return;
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* The output's absolute path, as the engine names its temporaries from it
 * (compute/mr_cluster.c: "<absolute output>.keel-tmp.<pid>"). */
static void abs_output(const char *out, char *b, size_t n)
{
	snprintf(b, n, "%s", out);
	if (out[0] != '/') {
		char cwd[2048];
		if (getcwd(cwd, sizeof cwd))
			snprintf(b, n, "%s/%s", cwd, out);
	}
}

/* Every temporary a job process `pid` may have left: OUT.keel-tmp.PID/
 * (partition files, spills under it) and, with --spill-dir, its
 * keel-spill.PID.* there. */
static void remove_temporaries(const char *output, const char *spill_dir, pid_t pid)
{
	char abs[4096], path[4200];
	abs_output(output, abs, sizeof abs);
	snprintf(path, sizeof path, "%s.keel-tmp.%d", abs, (int)pid);
	rmtree(path);
	if (spill_dir) {
		snprintf(path, sizeof path, "%s/keel-spill.%d.*", spill_dir, (int)pid);
		glob_t g;
		if (glob(path, GLOB_NOSORT, NULL, &g) == 0)
			for (size_t i = 0; i < g.gl_pathc; i++)
				rmtree(g.gl_pathv[i]);
		globfree(&g);
	}
}

/* ---- a local cluster ---------------------------------------------------- */

/* A throwaway cluster on 127.0.0.1: configurations and a secret in
 * DATA/.keel-mr-cluster.PID/, N-1 `keel mr worker` processes started from
 * this binary (their output in nK.log there, shown if the job fails). */
struct local_cluster {
	char dir[4096];
	char n1[4200];
	unsigned nodes;
	pid_t pids[MAX_LOCAL_NODES + 1];
};

/* The secret: created, not truncated (O_EXCL: never through a link someone
 * put there), 0600 from the first byte rather than chmod'ed after. */
static int write_secret(const char *path, char *err)
{
	uint8_t raw[24];
	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
		return keel_errmsg_set(err, -errno, "getrandom");
	char hex[2 * sizeof raw + 1];
	for (size_t i = 0; i < sizeof raw; i++) {
		hex[2 * i] = "0123456789abcdef"[raw[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
	}
	hex[2 * sizeof raw] = '\n';
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return keel_errmsg_set(err, -errno, "%s", path);
	ssize_t w = write(fd, hex, sizeof hex);
	int rc = w == (ssize_t)sizeof hex ? 0 : keel_errmsg_set(err, w < 0 ? -errno : -EIO, "%s", path);
	close(fd);
	return rc;
}

static int local_cluster_start(struct local_cluster *lc, const char *data_dir, unsigned nodes,
			       unsigned shards, char *err)
{
	memset(lc, 0, sizeof *lc);
	int n = snprintf(lc->dir, sizeof lc->dir, "%s/.keel-mr-cluster.%d", data_dir, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof lc->dir - 16)
		return keel_errmsg_set(err, -ENAMETOOLONG, "%s", data_dir);
	if (mkdir(lc->dir, 0700) < 0) {
		lc->dir[0] = 0; /* not ours: never removed */
		return keel_errmsg_set(err, -errno, "%s/.keel-mr-cluster.%d", data_dir, (int)getpid());
	}
	lc->nodes = nodes;
	char path[4300];
	snprintf(path, sizeof path, "%s/secret", lc->dir);
	int rc = write_secret(path, err);
	if (rc)
		return rc;
	/* Below the ephemeral range (32768+), where other processes' outgoing
	 * connections could hold a port a node is about to bind; up to 32
	 * nodes 4 ports apart. */
	unsigned base = 3000 + (unsigned)(getpid() % 200) * 140;
	for (unsigned k = 1; k <= nodes; k++) {
		snprintf(path, sizeof path, "%s/n%u.ini", lc->dir, k);
		FILE *f = fopen(path, "w");
		if (!f)
			return keel_errmsg_set(err, -errno, "%s", path);
		fprintf(f, "[node]\nid = %u\ncluster = 77\nlisten = 127.0.0.1:%u\nshards = %u\n"
			   "secret_file = secret\n[peers]\n", k, base + k * 4, shards);
		for (unsigned j = 1; j <= nodes; j++)
			fprintf(f, "%u = 127.0.0.1:%u\n", j, base + j * 4);
		if (fclose(f) != 0)
			return keel_errmsg_set(err, -errno, "%s", path);
	}
	snprintf(lc->n1, sizeof lc->n1, "%s/n1.ini", lc->dir);
	for (unsigned k = 2; k <= nodes; k++) {
		pid_t pid = fork();
		if (pid < 0)
			return keel_errmsg_set(err, -errno, "fork");
		if (pid == 0) {
			char cfgp[4300], logp[4300];
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			signal(SIGHUP, SIG_DFL);
			sigset_t none;
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL);
			snprintf(cfgp, sizeof cfgp, "%s/n%u.ini", lc->dir, k);
			snprintf(logp, sizeof logp, "%s/n%u.log", lc->dir, k);
			int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
			execl("/proc/self/exe", "keel", "mr", "worker", "--config", cfgp, (char *)NULL);
			_exit(127);
		}
		lc->pids[k] = pid;
	}
	return 0;
}

/* Stops the workers (after a success they exit by themselves: FINISH),
 * shows their logs if the job failed, removes the directory. Safe on a
 * half-started cluster and twice. */
static void local_cluster_stop(struct local_cluster *lc, bool ok, bool show_logs)
{
	for (unsigned k = 2; k <= lc->nodes; k++) {
		if (lc->pids[k] <= 0)
			continue;
		int st = 0;
		for (int i = 0; i < 50 && waitpid(lc->pids[k], &st, WNOHANG) == 0; i++) {
			if (!ok || i == 49)
				kill(lc->pids[k], SIGTERM);
			usleep(100000);
		}
		if (waitpid(lc->pids[k], &st, WNOHANG) == 0) {
			kill(lc->pids[k], SIGKILL);
			waitpid(lc->pids[k], &st, 0);
		}
		lc->pids[k] = 0;
		if (!ok && show_logs) {
			char logp[4300];
			snprintf(logp, sizeof logp, "%s/n%u.log", lc->dir, k);
			FILE *f = fopen(logp, "r");
			char line[512];
			while (f && fgets(line, sizeof line, f))
				fprintf(stderr, "  node %u: %s", k, line);
			if (f)
				fclose(f);
		}
	}
	if (lc->dir[0]) {
		rmtree(lc->dir);
		if (exists(lc->dir))
			fprintf(stderr, "keel mr: could not remove %s\n", lc->dir);
		lc->dir[0] = 0;
	}
}

/* ---- the job process ---------------------------------------------------- */

struct run_opts {
	struct keel_opt_list inputs;
	const char *output, *jobspec, *arg, *node_config, *spill_dir, *data_dir;
	uint32_t shards, partitions, local_nodes, retries, progress_fd;
	uint64_t mem_mb, split_mb;
	bool json, overcommit, no_fsync;
	struct prog pr;
};

/* What the job process tells its parent through the report pipe, one line
 * each: "job NAME" once the job is open, "crash KIND INDEX SIGNAL" from the
 * crash handler. */
static int report_fd = -1;

static char *fmt_uint(char *p, unsigned long v)
{
	char t[24];
	int n = 0;
	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = t[--n];
	return p;
}

/* In the job process, on SIGSEGV and its kin: only async-signal-safe calls
 * (write, signal, raise); the line is built by hand. */
static void on_crash(int sig)
{
	uint32_t idx = 0;
	int kind = keel_mr_running(&idx);
	char b[80], *p = b;
	memcpy(p, "crash ", 6);
	p = fmt_uint(p + 6, (unsigned long)kind);
	*p++ = ' ';
	p = fmt_uint(p, idx);
	*p++ = ' ';
	p = fmt_uint(p, (unsigned long)sig);
	*p++ = '\n';
	if (report_fd >= 0 && write(report_fd, b, (size_t)(p - b)) < 0) {
		/* nothing to do: the parent still sees the signal */
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void say_job(const char *name)
{
	char b[300];
	int n = snprintf(b, sizeof b, "job %.250s\n", name);
	if (report_fd >= 0 && n > 0 && write(report_fd, b, (size_t)n) < 0) {
		/* the parent then names the job by its spec */
	}
}

static void print_result(const struct run_opts *o, const struct keel_mr_jobref *job,
			 const struct keel_mr_stats *st)
{
	double secs = (double)st->total_ns / 1e9;
	double mbps = secs > 0 ? (double)st->input_bytes / 1e6 / secs : 0;
	if (o->json) {
		struct keel_json j;
		keel_json_init_file(&j, stdout);
		keel_json_open_obj(&j, NULL);
		keel_json_put_bool(&j, "ok", true);
		keel_json_put_str(&j, "job", job->job->name);
		keel_json_put_str(&j, "output", o->output);
		keel_json_put_u64(&j, "nodes", st->nodes);
		keel_json_put_u64(&j, "epochs", st->epochs);
		keel_json_put_u64(&j, "local_tasks", st->local_tasks);
		keel_json_put_u64(&j, "shards", st->shards);
		keel_json_put_u64(&j, "partitions", st->partitions);
		keel_json_put_u64(&j, "map_tasks", st->map_tasks);
		keel_json_put_u64(&j, "input_files", st->input_files);
		keel_json_put_u64(&j, "input_bytes", st->input_bytes);
		keel_json_put_u64(&j, "input_records", st->input_records);
		keel_json_put_u64(&j, "emitted", st->emitted);
		keel_json_put_u64(&j, "shuffled", st->shuffled);
		keel_json_put_u64(&j, "spills", st->spills);
		keel_json_put_u64(&j, "spill_bytes", st->spill_bytes);
		keel_json_put_u64(&j, "keys", st->reduce_keys);
		keel_json_put_u64(&j, "output_bytes", st->output_bytes);
		keel_json_put_double(&j, "seconds", secs, 3);
		keel_json_put_double(&j, "map_seconds", (double)st->map_ns / 1e9, 3);
		keel_json_put_double(&j, "reduce_seconds", (double)st->reduce_ns / 1e9, 3);
		keel_json_put_double(&j, "mb_per_s", mbps, 1);
		keel_json_close(&j);
		keel_json_finish(&j, true);
		return;
	}
	char in[32], out[32];
	human(in, sizeof in, (double)st->input_bytes);
	human(out, sizeof out, (double)st->output_bytes);
	if (st->nodes > 1) {
		printf("job %s: %s in %" PRIu64 " files, %" PRIu64 " map tasks on %u nodes x %u shards, "
		       "%u partitions\n",
		       job->job->name, in, st->input_files, st->map_tasks, st->nodes, st->shards,
		       st->partitions);
		if (st->epochs > 1)
			printf("  %u node failure%s recovered from (their map tasks ran again)\n",
			       st->epochs - 1, st->epochs > 2 ? "s" : "");
		printf("  %s written to %s\n", out, o->output);
		printf("  %.2f s, %.1f MB/s\n", secs, mbps);
		return;
	}
	printf("job %s: %s in %" PRIu64 " files, %" PRIu64 " map tasks on %u shards, %u partitions\n",
	       job->job->name, in, st->input_files, st->map_tasks, st->shards, st->partitions);
	printf("  %" PRIu64 " records, %" PRIu64 " pairs emitted, %" PRIu64 " after combining, %" PRIu64
	       " spills\n",
	       st->input_records, st->emitted, st->shuffled, st->spills);
	printf("  %" PRIu64 " keys reduced, %s written to %s\n", st->reduce_keys, out, o->output);
	printf("  %.2f s (map %.2f s, reduce %.2f s), %.1f MB/s\n", secs, (double)st->map_ns / 1e9,
	       (double)st->reduce_ns / 1e9, mbps);
}

static void print_failure_json(const struct run_opts *o, const char *job, const char *err,
			       int sig, int kind, uint32_t index, unsigned attempts)
{
	if (!o->json)
		return;
	struct keel_json j;
	keel_json_init_file(&j, stdout);
	keel_json_open_obj(&j, NULL);
	keel_json_put_bool(&j, "ok", false);
	keel_json_put_str(&j, "job", job);
	keel_json_put_str(&j, "output", o->output);
	keel_json_put_str(&j, "error", err);
	if (sig) {
		keel_json_put_u64(&j, "signal", (uint64_t)sig);
		keel_json_put_str(&j, "task_kind", kind == KEEL_MR_IN_MAP      ? "map"
						   : kind == KEEL_MR_IN_REDUCE ? "reduce"
									       : NULL);
		if (kind != KEEL_MR_IN_NONE)
			keel_json_put_u64(&j, "task", index);
		keel_json_put_u64(&j, "attempts", attempts);
	}
	keel_json_close(&j);
	keel_json_finish(&j, true);
	fflush(stdout);
}

/* The job itself, in the child: the exit status of `keel mr run`. */
static int job_main(struct run_opts *o, const char *node_config)
{
	if (!getenv("KEEL_LOG"))
		keel_log_set_level(KEEL_LOG_WARN);
	char err[KEEL_ERRMSG_LEN];
	struct keel_mr_jobref job;
	int rc = keel_mr_job_open(&job, o->jobspec, o->arg, err);
	if (rc) {
		fprintf(stderr, "keel mr: %s\n", err);
		print_failure_json(o, o->jobspec, err, 0, 0, 0, 0);
		return 1;
	}
	say_job(job.job->name);
	struct keel_mr_config cfg = {
		.job = &job,
		.inputs = o->inputs.v,
		.n_inputs = o->inputs.n,
		.output = o->output,
		.shards = o->shards,
		.partitions = o->partitions,
		.mem_budget = o->mem_mb << 20,
		.split_size = o->split_mb << 20,
		.spill_dir = o->spill_dir,
		.no_fsync = o->no_fsync,
		.progress = on_progress,
		.progress_arg = &o->pr,
	};
	if (o->pr.event_fd >= 0) {
		cfg.on_event = on_event;
		cfg.event_arg = &o->pr;
	}
	struct keel_mr_stats st;
	if (node_config)
		rc = keel_mr_cluster_run(&cfg, node_config, &st, err);
	else
		rc = keel_mr_run(&cfg, &st, err);
	if (o->pr.tty && !o->pr.quiet)
		fprintf(stderr, "\r\033[K");
	if (rc) {
		print_failure_json(o, job.job->name, err, 0, 0, 0, 0);
		fprintf(stderr, "keel mr: job %s failed: %s\n", job.job->name, err);
		keel_mr_job_close(&job);
		return 1;
	}
	print_result(o, &job, &st);
	keel_mr_job_close(&job);
	return 0;
}

/* ---- supervision -------------------------------------------------------- */

static volatile sig_atomic_t got_signal;
static volatile pid_t job_pid;

static void on_stop(int sig)
{
	got_signal = sig;
	if (job_pid > 0)
		kill(job_pid, sig);
}

static const char *sig_name(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGFPE: return "SIGFPE";
	case SIGILL: return "SIGILL";
	case SIGABRT: return "SIGABRT";
	case SIGKILL: return "SIGKILL";
	case SIGTERM: return "SIGTERM";
	case SIGINT: return "SIGINT";
	case SIGTRAP: return "SIGTRAP";
	case SIGSYS: return "SIGSYS";
	case SIGXCPU: return "SIGXCPU";
	default: return "a signal";
	}
}

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};

/* The job process: default stop signals, the crash handler, wait for the
 * parent's go (it writes the "node" events first), run. Never returns. */
static void job_child(struct run_opts *o, const char *node_config, int report_w, int go_r)
{
	struct sigaction sa = {.sa_handler = SIG_DFL};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_crash;
	sa.sa_flags = SA_RESETHAND | SA_NODEFER;
	for (size_t i = 0; i < KEEL_ARRAY_LEN(crash_signals); i++)
		sigaction(crash_signals[i], &sa, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	report_fd = report_w;
	char go;
	while (read(go_r, &go, 1) < 0 && errno == EINTR)
		;
	close(go_r);
	int st = job_main(o, node_config);
	fflush(stdout);
	exit(st);
}

/* What the report pipe said: the job's name and, after a crash, where. */
struct report {
	char job[256];
	bool crashed;
	int kind, sig;
	uint32_t index;
};

static void read_report(int fd, struct report *r)
{
	char buf[4096];
	size_t len = 0;
	ssize_t n;
	while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		len += (size_t)n;
	}
	buf[len] = 0;
	for (char *line = buf, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = 0;
		unsigned kind, sig, idx;
		if (!strncmp(line, "job ", 4))
			snprintf(r->job, sizeof r->job, "%s", line + 4);
		else if (sscanf(line, "crash %u %u %u", &kind, &idx, &sig) == 3) {
			r->crashed = true;
			r->kind = (int)kind;
			r->index = idx;
			r->sig = (int)sig;
		}
	}
}

static void describe_crash(char *b, size_t n, const struct report *r, int sig)
{
	if (r->crashed && r->kind == KEEL_MR_IN_MAP)
		snprintf(b, n, "map task %u crashed with %s (%s)", r->index, sig_name(sig),
			 strsignal(sig));
	else if (r->crashed && r->kind == KEEL_MR_IN_REDUCE)
		snprintf(b, n, "reduce of partition %u crashed with %s (%s)", r->index,
			 sig_name(sig), strsignal(sig));
	else
		snprintf(b, n, "the job process was killed by %s (%s) outside map and reduce",
			 sig_name(sig), strsignal(sig));
}

/* Runs the job in a child, again after a crash up to o->retries times. */
static int supervise(struct run_opts *o)
{
	struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: waitpid wakes */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigset_t stop, old;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGHUP);

	char data_dir[4096];
	if (o->data_dir) {
		snprintf(data_dir, sizeof data_dir, "%s", o->data_dir);
	} else {
		char abs[4096];
		abs_output(o->output, abs, sizeof abs);
		snprintf(data_dir, sizeof data_dir, "%s", dirname(abs));
	}
	unsigned attempts = o->retries + 1;
	int status = 1;
	const char *spec = o->jobspec;
	for (unsigned attempt = 1; attempt <= attempts; attempt++) {
		char err[KEEL_ERRMSG_LEN];
		struct local_cluster lc = {0};
		const char *node_config = o->node_config;
		sigprocmask(SIG_BLOCK, &stop, &old);
		if (o->local_nodes > 1) {
			int rc = local_cluster_start(&lc, data_dir, o->local_nodes,
						     o->shards ? o->shards : 1, err);
			if (rc) {
				sigprocmask(SIG_SETMASK, &old, NULL);
				fprintf(stderr, "keel mr: local cluster: %s\n", err);
				local_cluster_stop(&lc, false, false);
				print_failure_json(o, spec, err, 0, 0, 0, 0);
				return 1;
			}
			node_config = lc.n1;
		}
		int rep[2], go[2];
		if (pipe2(rep, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0) {
			sigprocmask(SIG_SETMASK, &old, NULL);
			fprintf(stderr, "keel mr: pipe: %s\n", strerror(errno));
			local_cluster_stop(&lc, false, false);
			return 1;
		}
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0) {
			sigprocmask(SIG_SETMASK, &old, NULL);
			fprintf(stderr, "keel mr: fork: %s\n", strerror(errno));
			local_cluster_stop(&lc, false, false);
			return 1;
		}
		if (pid == 0) {
			close(rep[0]);
			close(go[1]);
			job_child(o, node_config, rep[1], go[0]);
		}
		job_pid = pid;
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(rep[1]);
		close(go[0]);
		if (got_signal)
			kill(pid, got_signal);
		/* Which process is which node, for whoever reads the events. */
		for (unsigned k = 1; o->local_nodes > 1 && k <= o->local_nodes; k++) {
			char line[128];
			struct keel_json j;
			keel_json_init_buf(&j, line, sizeof line);
			keel_json_open_obj(&j, NULL);
			keel_json_put_str(&j, "event", "node");
			keel_json_put_u64(&j, "node", k);
			keel_json_put_i64(&j, "pid", k == 1 ? (int64_t)pid : (int64_t)lc.pids[k]);
			keel_json_close(&j);
			event_json(&o->pr, &j, line);
		}
		if (write(go[1], "g", 1) < 0) {
			/* the child died already: waitpid says how */
		}
		close(go[1]);
		int wst = 0;
		while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
			;
		job_pid = 0;
		struct report r = {{0}};
		read_report(rep[0], &r);
		close(rep[0]);
		const char *name = r.job[0] ? r.job : spec;
		bool ok = WIFEXITED(wst) && WEXITSTATUS(wst) == 0;
		/* A failed job removed its own temporaries; a killed one could
		 * not. Either way nothing of this process's may stay. */
		if (!ok)
			remove_temporaries(o->output, o->spill_dir, pid);
		local_cluster_stop(&lc, ok, !ok && !got_signal && WIFEXITED(wst));
		if (got_signal) {
			if (o->pr.tty && !o->pr.quiet)
				fprintf(stderr, "\r\033[K");
			fprintf(stderr, "keel mr: job %s interrupted by %s; temporary output removed\n",
				name, sig_name(got_signal));
			snprintf(err, sizeof err, "interrupted by %s", sig_name(got_signal));
			print_failure_json(o, name, err, 0, 0, 0, 0);
			return 128 + got_signal;
		}
		if (WIFEXITED(wst))
			return WEXITSTATUS(wst);
		int sig = WIFSIGNALED(wst) ? WTERMSIG(wst) : 0;
		if (o->pr.tty && !o->pr.quiet)
			fprintf(stderr, "\r\033[K");
		char what[160];
		describe_crash(what, sizeof what, &r, sig);
		if (attempt < attempts) {
			fprintf(stderr, "keel mr: job %s: %s; temporary output removed, running it again "
					"(attempt %u of %u)\n",
				name, what, attempt + 1, attempts);
			continue;
		}
		snprintf(err, sizeof err, "%.160s, on %s%u attempt%s; temporary output removed", what,
			 attempts > 1 ? "each of " : "", attempts, attempts > 1 ? "s" : "");
		fprintf(stderr, "keel mr: job %s failed: %s\n", name, err);
		print_failure_json(o, name, err, sig, r.crashed ? r.kind : 0, r.index, attempts);
		status = 1;
	}
	return status;
}

/* ---- subcommands -------------------------------------------------------- */

/* The CPUs this process may run on (its affinity mask: a container's or
 * taskset's cpuset, not the machine's count). */
static unsigned allowed_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

static int cmd_run(int argc, char **argv)
{
	struct run_opts o = {
		.mem_mb = 256, .split_mb = 32, .retries = 2, .progress_fd = UINT32_MAX,
		.pr = {.tty = isatty(2) != 0, .event_fd = -1},
	};
	const char *jobpath = NULL;
	const struct keel_opt opts[] = {
		{"input", 'i', KEEL_OPT_LIST, &o.inputs, .arg = "PATH",
		 .help = "a file or a directory of files (repeatable)", .flags = KEEL_OPT_REQUIRED},
		{"output", 'o', KEEL_OPT_STR, &o.output, .arg = "DIR",
		 .help = "must not exist (or be empty); gets part-NNNNN + _SUCCESS",
		 .flags = KEEL_OPT_REQUIRED},
		{"job", 'j', KEEL_OPT_STR, &jobpath, .arg = "PATH.so",
		 .help = "a user job instead of a built-in"},
		{"arg", 'a', KEEL_OPT_STR, &o.arg, .arg = "TEXT", .help = "the job's argument (grep: the pattern)"},
		{"shards", 's', KEEL_OPT_U32, &o.shards, 1, KEEL_MAX_SHARDS, "N",
		 "shards to run on, at most the CPUs this process may use\n"
		 "(more: --overcommit)", "one per CPU; a local cluster's nodes 1"},
		{"overcommit", 0, KEEL_OPT_FLAG, &o.overcommit, .help = "allow more shards than CPUs"},
		{"partitions", 'r', KEEL_OPT_U32, &o.partitions, 1, MAX_PARTITIONS, "R",
		 "reduce partitions (output files)", "one per shard of every node"},
		{"mem", 'm', KEEL_OPT_U64, &o.mem_mb, 1, MAX_MEM_MB, "MB",
		 "memory per shard before spilling; shards x MB must fit\n"
		 "in this machine's memory"},
		{"split", 'S', KEEL_OPT_U64, &o.split_mb, 1, MAX_SPLIT_MB, "MB", "input per map task"},
		{"spill-dir", 'D', KEEL_OPT_STR, &o.spill_dir, .arg = "DIR",
		 .help = "where sorted runs spill", .def = "inside the output's temp dir"},
		{"no-fsync", 'F', KEEL_OPT_FLAG, &o.no_fsync,
		 .help = "do not fsync the output files before committing them"},
		{"json", 'J', KEEL_OPT_FLAG, &o.json, .help = "print the result as one JSON object"},
		{"config", 'C', KEEL_OPT_STR, &o.node_config, .arg = "FILE",
		 .help = "run across nodes: this node (from its configuration file)\n"
			 "coordinates; the others run `keel mr worker --config`"},
		{"local-cluster", 'L', KEEL_OPT_U32, &o.local_nodes, 1, MAX_LOCAL_NODES, "N",
		 "start N-1 local worker processes on 127.0.0.1 and run the\n"
		 "job across all N nodes (--shards per node)", "1: no cluster"},
		{"data-dir", 0, KEEL_OPT_STR, &o.data_dir, .arg = "DIR",
		 .help = "where a local cluster keeps its configurations, logs and\n"
			 "secret (.keel-mr-cluster.PID/, removed at exit)",
		 .def = "the output's parent directory"},
		{"retries", 0, KEEL_OPT_U32, &o.retries, 0, MAX_RETRIES, "N",
		 "run the job again up to N times after its code crashes"},
		{"quiet", 'q', KEEL_OPT_FLAG, &o.pr.quiet, .help = "no progress line"},
		{"progress-fd", 'P', KEEL_OPT_U32, &o.progress_fd, 0, 1u << 20, "FD",
		 "write one JSON line per step of the job to descriptor FD"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"mr run", "JOB --input PATH [--input PATH ...] --output DIR [options]",
		"  JOB is a built-in job (keel mr jobs: wordcount, grep, index, sort) or, with\n"
		"  --job, a shared object exporting `const struct keel_mr_job keel_mr_job`.\n"
		"  The job runs in a child process: if its code crashes, its temporary output\n"
		"  is removed and it runs again (--retries); SIGINT/SIGTERM remove it too.",
		opts, 0, 1, "JOB",
		"--progress-fd events: \"event\": node (a local cluster's node and its pid),\n"
		"start, map_done, node_lost, reduce, part_done, end; each with the epoch and\n"
		"the counts of tasks and partitions.\n"
		"exit status: 0 done, 1 failed, 2 usage error, 128+N stopped by signal N."};
	int nargs = 0;
	int st = keel_opt_parse(&spec, argc, argv, &nargs);
	if (st != KEEL_OPT_RUN) {
		keel_opt_list_free(&o.inputs);
		return st;
	}
	st = KEEL_OPT_RUN;
	if (jobpath && nargs)
		st = keel_opt_usage(&spec, "give the job once: '%s' or --job %s", argv[1], jobpath);
	else if (!jobpath && !nargs)
		st = keel_opt_usage(&spec, "missing JOB (a built-in name, or --job PATH.so)");
	o.jobspec = jobpath ? jobpath : argv[1];
	unsigned cpus = allowed_cpus();
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t ram_mb = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize >> 20 : 0;
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t shards_eff = o.shards ? o.shards
			      : o.local_nodes > 1 ? 1
						  : (uint64_t)(online > 0 ? online : 1);
	if (st != KEEL_OPT_RUN) {
	} else if (o.shards > cpus && !o.overcommit) {
		st = keel_opt_usage(&spec,
				    "--shards %u: more than the %u CPU%s this process may run on "
				    "(expected 1..%u; --overcommit allows up to %u)",
				    o.shards, cpus, cpus == 1 ? "" : "s", cpus, KEEL_MAX_SHARDS);
	} else if (ram_mb && o.mem_mb * shards_eff > ram_mb) {
		st = keel_opt_usage(&spec,
				    "--mem %" PRIu64 ": %" PRIu64 " shard%s x %" PRIu64
				    " MB is more than this machine's %" PRIu64 " MB of memory",
				    o.mem_mb, shards_eff, shards_eff == 1 ? "" : "s", o.mem_mb, ram_mb);
	} else if (o.node_config && o.local_nodes > 1) {
		st = keel_opt_usage(&spec, "--config and --local-cluster: one or the other");
	} else if (o.data_dir && o.local_nodes < 2) {
		st = keel_opt_usage(&spec, "--data-dir is for --local-cluster N (N >= 2)");
	} else if (o.progress_fd != UINT32_MAX && fcntl((int)o.progress_fd, F_GETFD) < 0) {
		st = keel_opt_usage(&spec, "--progress-fd %u: not an open file descriptor",
				    o.progress_fd);
	}
	if (st != KEEL_OPT_RUN) {
		keel_opt_list_free(&o.inputs);
		return st;
	}
	if (o.progress_fd != UINT32_MAX) {
		o.pr.event_fd = (int)o.progress_fd;
		/* Not inherited by the workers a local cluster starts: the reader
		 * sees the end of the stream when this process and the job end. */
		fcntl(o.pr.event_fd, F_SETFD, FD_CLOEXEC);
		signal(SIGPIPE, SIG_IGN);
	}
	st = supervise(&o);
	keel_opt_list_free(&o.inputs);
	return st;
}

static int cmd_worker(int argc, char **argv)
{
	const char *config = NULL;
	const struct keel_opt opts[] = {
		{"config", 'c', KEEL_OPT_STR, &config, .arg = "FILE",
		 .help = "this node's configuration file", .flags = KEEL_OPT_REQUIRED},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"mr worker", "--config FILE",
		"  serves one job of the coordinator `keel mr run --config` runs, then exits.", opts};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_mr_worker_run(config, err);
	if (rc) {
		fprintf(stderr, "keel mr worker: %s\n", err);
		return 1;
	}
	return 0;
}

static int cmd_gen(int argc, char **argv)
{
	const char *out = NULL;
	uint64_t size = 64 << 20, records = 1000000, seed = 1;
	uint32_t vocab = 100000, distinct = 0;
	const struct keel_opt opts[] = {
		{"out", 'o', KEEL_OPT_STR, &out, .arg = "FILE", .help = "the file to write",
		 .flags = KEEL_OPT_REQUIRED},
		{"size", 'b', KEEL_OPT_SIZE, &size, 1, 1ull << 40, "BYTES", "words: bytes of text"},
		{"records", 'n', KEEL_OPT_U64, &records, 1, 10000000000ull, "N",
		 "sort: 100-byte records"},
		{"seed", 's', KEEL_OPT_U64, &seed, 0, UINT64_MAX, "N", "the PRNG seed"},
		{"vocab", 'v', KEEL_OPT_U32, &vocab, 1, 10000000, "N", "words: distinct words"},
		{"distinct", 'd', KEEL_OPT_U32, &distinct, 0, UINT32_MAX, "N",
		 "sort: draw keys from only N distinct ones (0: all random)"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"mr gen", "words|sort --out FILE [options]",
		"  writes a test input: words (text with a Zipf-like vocabulary) or sort\n"
		"  (gensort-style 100-byte records).",
		opts, 1, 1, "words or sort"};
	int nargs = 0;
	int st = keel_opt_parse(&spec, argc, argv, &nargs);
	if (st != KEEL_OPT_RUN)
		return st;
	char err[KEEL_ERRMSG_LEN];
	int rc;
	if (!strcmp(argv[1], "words"))
		rc = keel_mr_gen_words(out, size, seed, vocab, err);
	else if (!strcmp(argv[1], "sort"))
		rc = keel_mr_gen_sort(out, records, seed, distinct, err);
	else
		return keel_opt_usage(&spec, "'%s' is not words or sort", argv[1]);
	if (rc) {
		fprintf(stderr, "keel mr gen: %s\n", err);
		return 1;
	}
	return 0;
}

static int cmd_jobs(int argc, char **argv)
{
	const struct keel_cmd_spec spec = {"mr jobs", NULL, "  lists the built-in jobs, one a line.",
					   NULL};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	for (size_t i = 0; keel_mr_builtin_jobs[i]; i++)
		printf("%s\n", keel_mr_builtin_jobs[i]->name);
	return 0;
}

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} subs[] = {
	{"run", cmd_run, "run a job on this machine or across nodes"},
	{"worker", cmd_worker, "serve one job as a node of a cluster"},
	{"jobs", cmd_jobs, "list the built-in jobs"},
	{"gen", cmd_gen, "write a test input (words or sort records)"},
};

static void mr_usage(FILE *f)
{
	fprintf(f, "usage: keel mr <subcommand> [options]\n\nsubcommands:\n");
	for (size_t i = 0; i < KEEL_ARRAY_LEN(subs); i++)
		fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].help);
	fprintf(f, "\n'keel mr <subcommand> --help' shows its options.\n");
}

int keel_cmd_mr(int argc, char **argv)
{
	if (argc < 2) {
		mr_usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		mr_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < KEEL_ARRAY_LEN(subs); i++)
		if (!strcmp(argv[1], subs[i].name))
			return subs[i].run(argc - 1, argv + 1);
	fprintf(stderr, "keel mr: unknown subcommand '%s'\ntry 'keel mr --help'\n", argv[1]);
	return 2;
}
