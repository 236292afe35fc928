/* bench/wal: the WAL against fio (ioengine=io_uring) on the same filesystem.
 *
 *  (a) one appender, 4 KiB payload, append + wait until durable: latency
 *      p50/p99, against fio 4 KiB writes with fdatasync=1 at iodepth 1
 *      (fio's per-op latency = write clat + fdatasync latency percentiles);
 *  (b) 1, 8, 64, 256 concurrent appenders of 256 B records on one thread
 *      (each appender appends again from its durability callback): records/s
 *      and payload MB/s, against fio 1 MiB sequential writes with
 *      fdatasync=1 (bandwidth), and against the single-appender rate.
 *
 * Reactors (issue 15): where a node runs the epoll reactor the WAL writes
 * through its helper thread (pwrite + fdatasync) instead of io_uring. By
 * default each round also runs (a) and (b) with 64 appenders on that path
 * and the run ends with its cost as a ratio to io_uring (target: p50 <=
 * 1.2x); --reactor io_uring|epoll runs one path only, compared with fio.
 *
 * Keel and fio alternate (A B A B) for --rounds rounds; figures are medians.
 * The directory must be on a real disk: the filesystem type is printed and
 * a tmpfs directory is refused. Output per BENCH.md: a table, then one JSON
 * line per figure. */
#include <errno.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "keel/wal.h"

static const char *dir = "bench-wal.tmp";
static bool quick;
/* AUTO: io_uring where allowed, as the io_uring reactor's WAL; THREAD:
 * the epoll reactor's */
static enum keel_wal_engine engine = KEEL_WAL_ENGINE_AUTO;
static int rounds = 3;

static void die(const char *what, int rc, const char *msg)
{
	fprintf(stderr, "bench-wal: %s: %s (%s)\n", what, keel_strerror(rc), msg ? msg : "");
	exit(1);
}

static void rm_dir_files(const char *d)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "bench-wal: could not clean %s\n", d);
}

static struct keel_wal *open_fresh(const char *sub)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	rm_dir_files(path);
	struct keel_wal_io *io;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_wal_io_posix_new(&io, path, engine, err);
	if (rc)
		die("io", rc, err);
	struct keel_wal *w;
	struct keel_wal_config c = {.segment_size = 64u << 20, .max_batch = 1u << 20};
	rc = keel_wal_open(&w, io, &c, err);
	if (rc)
		die("open", rc, err);
	return w;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_dbl);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- (a) latency ---------------------------------------------------------- */

static void mark(void *arg, uint64_t last, int status)
{
	if (status)
		die("append", status, "");
	*(int *)arg = 1;
}

static bool direct_used;
static const char *engine_used = "?";

static void keel_latency(double *p50_us, double *p99_us, double *mean_us)
{
	struct keel_wal *w = open_fresh("lat");
	int n = quick ? 200 : 3000;
	static uint8_t payload[4096];
	memset(payload, 0xab, sizeof(payload));
	uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)n);
	uint64_t sum = 0;
	for (int i = 0; i < n + 20; i++) {
		struct keel_wal_entry e = {
			.index = (uint64_t)i + 1, .term = 1, .len = sizeof(payload), .data = payload};
		int done = 0;
		uint64_t t0 = keel_now_ns();
		int rc = keel_wal_append(w, &e, 1, mark, &done);
		if (rc)
			die("append", rc, keel_wal_errmsg(w));
		while (!done)
			keel_wal_wait(w);
		uint64_t dt = keel_now_ns() - t0;
		if (i >= 20) { /* warm-up excluded */
			lat[i - 20] = dt;
			sum += dt;
		}
	}
	direct_used = keel_wal_is_direct(w);
	engine_used = keel_wal_engine_name(w);
	keel_wal_close(w);
	qsort(lat, (size_t)n, sizeof(uint64_t), cmp_u64);
	*p50_us = (double)lat[n / 2] / 1e3;
	*p99_us = (double)lat[n * 99 / 100] / 1e3;
	*mean_us = (double)sum / n / 1e3;
	free(lat);
}

/* ---- (b) throughput --------------------------------------------------------- */

struct tput {
	struct keel_wal *w;
	uint64_t next_index;
	uint64_t done;
	uint64_t deadline;
	bool stop;
	uint8_t payload[256];
};

static void appender_done(void *arg, uint64_t last, int status);

static void append_one(struct tput *t)
{
	struct keel_wal_entry e = {
		.index = t->next_index++, .term = 1, .len = sizeof(t->payload), .data = t->payload};
	int rc = keel_wal_append(t->w, &e, 1, appender_done, t);
	if (rc)
		die("append", rc, keel_wal_errmsg(t->w));
}

static void appender_done(void *arg, uint64_t last, int status)
{
	struct tput *t = arg;
	if (status)
		die("append", status, "");
	t->done++;
	if (!t->stop)
		append_one(t);
}

static void keel_throughput(int appenders, double *rec_s, double *mb_s, double *per_write)
{
	char sub[32];
	snprintf(sub, sizeof(sub), "tput%d", appenders);
	static struct tput t;
	memset(&t, 0, sizeof(t));
	memset(t.payload, 0x5a, sizeof(t.payload));
	t.w = open_fresh(sub);
	t.next_index = 1;
	uint64_t dur = quick ? 300000000ull : 2000000000ull;
	/* warm up, then measure */
	for (int i = 0; i < appenders; i++)
		append_one(&t);
	uint64_t warm = keel_now_ns() + dur / 10;
	while (keel_now_ns() < warm)
		keel_wal_wait(t.w);
	struct keel_wal_stats s0, s1;
	keel_wal_get_stats(t.w, &s0);
	uint64_t d0 = t.done, t0 = keel_now_ns();
	while (keel_now_ns() - t0 < dur)
		keel_wal_wait(t.w);
	uint64_t d1 = t.done, t1 = keel_now_ns();
	keel_wal_get_stats(t.w, &s1);
	*per_write = s1.syncs > s0.syncs ? (double)(s1.records_durable - s0.records_durable) /
						    (double)(s1.syncs - s0.syncs)
					 : 0;
	t.stop = true;
	keel_wal_flush(t.w);
	keel_wal_close(t.w);
	double secs = (double)(t1 - t0) / 1e9;
	*rec_s = (double)(d1 - d0) / secs;
	*mb_s = *rec_s * (double)sizeof(t.payload) / 1e6;
}

/* ---- fio ------------------------------------------------------------------ */

static char *run_cmd(const char *cmd)
{
	FILE *f = popen(cmd, "r");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 4096)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = 0;
	if (pclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* Finds key after the position of each anchor in turn; parses a number. */
static double jnum(const char *js, const char *const *path, int n)
{
	const char *p = js;
	for (int i = 0; i < n && p; i++) {
		p = strstr(p, path[i]);
		if (p)
			p += strlen(path[i]);
	}
	if (!p)
		return -1;
	while (*p == ' ' || *p == ':' || *p == '"')
		p++;
	return strtod(p, NULL);
}

static bool have_fio(void)
{
	return system("fio --version >/dev/null 2>&1") == 0;
}

/* fio 4 KiB writes + fdatasync at iodepth 1: p50/p99 as write clat + sync
 * latency percentiles, mean from IOPS. */
static bool fio_latency(bool prewritten, double *p50_us, double *p99_us, double *mean_us)
{
	char cmd[1024];
	/* prewritten: the file is written whole first (as keel zero-fills its
	 * segments), so the measured writes overwrite allocated blocks */
	snprintf(cmd, sizeof(cmd),
		 "%s%s%s"
		 "fio --name=lat --directory='%s' --filename=fio-lat --ioengine=io_uring "
		 "--rw=write --bs=4k --size=64m --direct=1 --fdatasync=1 --iodepth=1 "
		 "--time_based --runtime=%d --output-format=json 2>/dev/null",
		 prewritten ? "fio --name=fill --directory='" : "", prewritten ? dir : "",
		 prewritten ? "' --filename=fio-lat --rw=write --bs=1m --size=64m --end_fsync=1 "
			      "--output-format=terse >/dev/null 2>&1 && "
			    : "",
		 dir, quick ? 1 : 4);
	char *js = run_cmd(cmd);
	if (!js)
		return false;
	const char *w50[] = {"\"write\" :", "\"clat_ns\"", "\"50.000000\""};
	const char *w99[] = {"\"write\" :", "\"clat_ns\"", "\"99.000000\""};
	const char *s50[] = {"\"sync\" :", "\"lat_ns\"", "\"50.000000\""};
	const char *s99[] = {"\"sync\" :", "\"lat_ns\"", "\"99.000000\""};
	const char *iops[] = {"\"write\" :", "\"iops\""};
	double a = jnum(js, w50, 3), b = jnum(js, s50, 3), c = jnum(js, w99, 3),
	       d = jnum(js, s99, 3), i = jnum(js, iops, 2);
	free(js);
	char path[512];
	snprintf(path, sizeof(path), "%s/fio-lat", dir);
	unlink(path);
	if (a < 0 || b < 0 || c < 0 || d < 0 || i <= 0)
		return false;
	*p50_us = (a + b) / 1e3;
	*p99_us = (c + d) / 1e3;
	*mean_us = 1e6 / i;
	return true;
}

static bool fio_seq(double *mb_s)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
		 "fio --name=seq --directory='%s' --filename=fio-seq --ioengine=io_uring "
		 "--rw=write --bs=1m --size=%dm --direct=1 --fdatasync=1 --iodepth=1 "
		 "--output-format=json 2>/dev/null",
		 dir, quick ? 64 : 512);
	char *js = run_cmd(cmd);
	if (!js)
		return false;
	const char *bw[] = {"\"write\" :", "\"bw_bytes\""};
	double b = jnum(js, bw, 2);
	free(js);
	char path[512];
	snprintf(path, sizeof(path), "%s/fio-seq", dir);
	unlink(path);
	if (b <= 0)
		return false;
	*mb_s = b / 1e6;
	return true;
}

/* ---- output --------------------------------------------------------------- */

static void json(const char *cs, const char *unit, double keel, const char *peer, double peer_v,
		 bool have_peer, const char *better, double target, const char *note)
{
	printf("{\"bench\":\"wal\",\"case\":\"%s\",\"unit\":\"%s\",\"keel\":%.2f", cs, unit, keel);
	if (peer) {
		if (have_peer) {
			double r = keel / peer_v;
			bool meets = !strcmp(better, "lower") ? r <= target : r >= target;
			printf(",\"peer\":\"%s\",\"peer_value\":%.2f,\"ratio\":%.3f,\"better\":\"%s\","
			       "\"target\":%.2f,\"meets\":%s",
			       peer, peer_v, r, better, target, meets ? "true" : "false");
		} else {
			printf(",\"peer\":\"%s\",\"peer_value\":null,\"ratio\":null,\"better\":\"%s\","
			       "\"target\":%.2f,\"meets\":null",
			       peer, better, target);
		}
	}
	if (note)
		printf(",\"note\":\"%s\"", note);
	printf("}\n");
}

static const char *fs_name(long type)
{
	switch (type) {
	case EXT4_SUPER_MAGIC:
		return "ext2/3/4";
	case XFS_SUPER_MAGIC:
		return "xfs";
	case BTRFS_SUPER_MAGIC:
		return "btrfs";
	case TMPFS_MAGIC:
		return "tmpfs";
	case OVERLAYFS_SUPER_MAGIC:
		return "overlayfs";
	default:
		return "other";
	}
}

int main(int argc, char **argv)
{
	bool both = true;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--reactor") && i + 1 < argc && !strcmp(argv[i + 1], "both"))
			both = true, i++;
		else if (!strcmp(argv[i], "--reactor") && i + 1 < argc &&
			 (!strcmp(argv[i + 1], "io_uring") || !strcmp(argv[i + 1], "epoll"))) {
			both = false;
			engine = !strcmp(argv[++i], "epoll") ? KEEL_WAL_ENGINE_THREAD
							     : KEEL_WAL_ENGINE_AUTO;
		} else {
			fprintf(stderr, "usage: bench-wal [--quick] [--dir DIR] [--rounds N]\n"
					"                 [--reactor io_uring|epoll|both]\n"
					"  DIR on the disk to measure (default ./bench-wal.tmp)\n");
			return 2;
		}
	}
	if (quick)
		rounds = 1;
	if (rounds < 1)
		rounds = 1;
	keel_log_set_level(KEEL_LOG_WARN);
	if (mkdir(dir, 0755) && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	struct statfs sf;
	if (statfs(dir, &sf)) {
		perror(dir);
		return 1;
	}
	if (sf.f_type == TMPFS_MAGIC) {
		fprintf(stderr, "bench-wal: %s is on tmpfs; give --dir on a real disk\n", dir);
		return 1;
	}
	bool fio = have_fio();

	enum { NA = 4 };
	const int apps[NA] = {1, 8, 64, 256};
	double kl50[16], kl99[16], klm[16], fl50[16], fl99[16], flm[16], fseq[16];
	double pl50[16], pl99[16], plm[16];
	double krec[NA][16], kmb[NA][16], kpw[NA][16];
	int nf = 0, np = 0, nseq = 0;
	double el50[16], el99[16], elm[16], erec[16], emb[16], epw[16];
	if (rounds > 16)
		rounds = 16;
	for (int r = 0; r < rounds; r++) {
		if (both) { /* the epoll reactor's path first, then io_uring's */
			engine = KEEL_WAL_ENGINE_THREAD;
			keel_latency(&el50[r], &el99[r], &elm[r]);
			keel_throughput(64, &erec[r], &emb[r], &epw[r]);
			engine = KEEL_WAL_ENGINE_AUTO;
		}
		keel_latency(&kl50[r], &kl99[r], &klm[r]);
		if (fio && fio_latency(false, &fl50[nf], &fl99[nf], &flm[nf]))
			nf++;
		if (fio && fio_latency(true, &pl50[np], &pl99[np], &plm[np]))
			np++;
		for (int a = 0; a < NA; a++)
			keel_throughput(apps[a], &krec[a][r], &kmb[a][r], &kpw[a][r]);
		if (fio && fio_seq(&fseq[nseq]))
			nseq++;
	}
	double k50 = median(kl50, rounds), k99 = median(kl99, rounds), km = median(klm, rounds);
	double f50 = nf ? median(fl50, nf) : 0, f99 = nf ? median(fl99, nf) : 0,
	       fm = nf ? median(flm, nf) : 0;
	double fs = nseq ? median(fseq, nseq) : 0;
	double p50 = np ? median(pl50, np) : 0, p99 = np ? median(pl99, np) : 0,
	       pm = np ? median(plm, np) : 0;
	double rec[NA], mb[NA], pw[NA];
	for (int a = 0; a < NA; a++) {
		rec[a] = median(krec[a], rounds);
		mb[a] = median(kmb[a], rounds);
		pw[a] = median(kpw[a], rounds);
	}

	printf("bench wal: dir %s (%s), engine %s, %s, %d round%s (medians)%s\n", dir,
	       fs_name((long)sf.f_type), engine_used, direct_used ? "O_DIRECT" : "buffered", rounds,
	       rounds > 1 ? "s" : "", quick ? ", --quick" : "");
	printf("%-44s %12s %12s %8s\n", "case", "keel", "fio", "ratio");
	printf("%-44s %12.1f %12.1f %8.2f\n", "(a) 4 KiB append+fdatasync p50 (us)", k50, f50,
	       nf ? k50 / f50 : 0);
	printf("%-44s %12.1f %12.1f %8.2f\n", "(a) 4 KiB append+fdatasync p99 (us)", k99, f99,
	       nf ? k99 / f99 : 0);
	printf("%-44s %12.1f %12.1f %8.2f\n", "(a) 4 KiB append+fdatasync mean (us)", km, fm,
	       nf ? km / fm : 0);
	printf("%-44s %12.1f %12.1f %8.2f\n", "(a') p50 vs fio on a pre-written file (us)", k50, p50,
	       np ? k50 / p50 : 0);
	printf("%-44s %12.1f %12.1f %8.2f\n", "(a') p99 vs fio on a pre-written file (us)", k99, p99,
	       np ? k99 / p99 : 0);
	printf("%-44s %12.1f %12.1f %8.2f\n", "(a') mean vs fio on a pre-written file (us)", km, pm,
	       np ? km / pm : 0);
	for (int a = 0; a < NA; a++) {
		char c1[64];
		snprintf(c1, sizeof(c1), "(b) %d appenders x 256 B: records/s", apps[a]);
		printf("%-44s %12.0f %12s %8s\n", c1, rec[a], "", "");
		snprintf(c1, sizeof(c1), "(b) %d appenders x 256 B: MB/s", apps[a]);
		printf("%-44s %12.2f %12.1f %8.3f\n", c1, mb[a], fs, nseq ? mb[a] / fs : 0);
		snprintf(c1, sizeof(c1), "(b) %d appenders: records per fdatasync", apps[a]);
		printf("%-44s %12.1f\n", c1, pw[a]);
	}
	printf("(fio (a): 4 KiB writes, fdatasync=1, iodepth 1, direct; p50/p99 = write clat + "
	       "fdatasync latency percentiles; (b) peer: 1 MiB sequential writes, fdatasync=1)\n");
	printf("(256 appenders vs 1 appender: records/s x%.1f)\n", rec[0] > 0 ? rec[3] / rec[0] : 0);

	const char *nofio = fio ? "fio run failed" : "fio not installed (scripts/deps installs it)";
	json("append_4k_fdatasync_p50_us", "us", k50, "fio io_uring 4k write fdatasync=1 qd1", f50,
	     nf > 0, "lower", 1.1, nf ? NULL : nofio);
	json("append_4k_fdatasync_p99_us", "us", k99, "fio io_uring 4k write fdatasync=1 qd1", f99,
	     nf > 0, "lower", 1.1, nf ? NULL : nofio);
	json("append_4k_fdatasync_p50_us_vs_prewritten", "us", k50,
	     "fio io_uring 4k write fdatasync=1 qd1, pre-written file", p50, np > 0, "lower", 1.1,
	     np ? NULL : nofio);
	json("append_4k_fdatasync_p99_us_vs_prewritten", "us", k99,
	     "fio io_uring 4k write fdatasync=1 qd1, pre-written file", p99, np > 0, "lower", 1.1,
	     np ? NULL : nofio);
	for (int a = 0; a < NA; a++) {
		char cs[64];
		snprintf(cs, sizeof(cs), "appenders_%d_256B_records_per_s", apps[a]);
		if (a == NA - 1)
			json(cs, "records/s", rec[a], "keel 1 appender", rec[0], rec[0] > 0, "higher",
			     50.0, NULL);
		else
			json(cs, "records/s", rec[a], NULL, 0, false, NULL, 0, NULL);
		snprintf(cs, sizeof(cs), "appenders_%d_256B_MB_per_s", apps[a]);
		if (a == NA - 1)
			json(cs, "MB/s", mb[a], "fio io_uring 1MiB seq write fdatasync=1", fs, nseq > 0,
			     "higher", 0.8, nseq ? NULL : nofio);
		else
			json(cs, "MB/s", mb[a], NULL, 0, false, NULL, 0, NULL);
	}
	if (both && !strcmp(engine_used, "io_uring")) {
		double e50 = median(el50, rounds), e99 = median(el99, rounds);
		double erc = median(erec, rounds);
		printf("\n%-44s %12s %12s %8s\n", "the epoll reactor's WAL path", "thread",
		       "io_uring", "ratio");
		printf("%-44s %12.1f %12.1f %8.2f\n", "(a) 4 KiB append+fdatasync p50 (us)", e50, k50,
		       k50 > 0 ? e50 / k50 : 0);
		printf("%-44s %12.1f %12.1f %8.2f\n", "(a) 4 KiB append+fdatasync p99 (us)", e99, k99,
		       k99 > 0 ? e99 / k99 : 0);
		printf("%-44s %12.0f %12.0f %8.2f\n", "(b) 64 appenders x 256 B: records/s", erc,
		       rec[2], rec[2] > 0 ? erc / rec[2] : 0);
		json("epoll_vs_io_uring_append_4k_fdatasync_p50_us", "us", e50,
		     "keel WAL on io_uring", k50, k50 > 0, "lower", 1.2, NULL);
		json("epoll_vs_io_uring_append_4k_fdatasync_p99_us", "us", e99,
		     "keel WAL on io_uring", k99, k99 > 0, "lower", 1.5, NULL);
		json("epoll_vs_io_uring_appenders_64_256B_records_per_s", "records/s", erc,
		     "keel WAL on io_uring", rec[2], rec[2] > 0, "higher", 0.8, NULL);
	}
	rm_dir_files(dir);
	return 0;
}
