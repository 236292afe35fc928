/* bench-group: the consensus group host (include/keel/group.h) end to end:
 * three groups in one process (three runtimes of one shard each), real TCP
 * on 127.0.0.1, real WALs (write + fdatasync) under --dir. Measured on the
 * leader's shard, from keel_group_propose to its callback (committed on a
 * quorum and applied here):
 *   - commit latency with one proposal in flight (64-byte entries), p50/p99;
 *   - throughput with --window proposals in flight (64-byte entries).
 * For scale, the same run measures one WAL append (write + fdatasync, one
 * 64-byte record) on the same filesystem: a commit cannot be faster than
 * the leader's own fdatasync. No peer runs the same job here (etcd is not
 * packaged for this machine's Debian), so the figures have no ratio.
 *
 *   bench-group [--quick] [--dir DIR] [--count N] [--seconds S] [--window W] */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/group.h"
#include "keel/runtime.h"
#include "keel/wal.h"

#define PAYLOAD 64

struct node {
	unsigned id;
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct keel_group *g;
	char wal[600];
	atomic_int role, open_rc;
	atomic_ullong applied;
};

static struct node nodes[4];
static char dir[512];
static unsigned base;

/* the driver's state, on the leader's shard */
struct driver {
	struct node *n;
	uint64_t *lat;       /* latency mode: one per proposal */
	uint64_t want, done, failed, inflight, window;
	uint64_t started_at, deadline, t_start;
	atomic_int finished;
	uint8_t payload[PAYLOAD];
};
static struct driver D;

static void on_apply(void *arg, uint64_t index, uint64_t term, const void *data, size_t len)
{
	(void)index;
	(void)term;
	(void)data;
	(void)len;
	struct node *n = arg;
	atomic_fetch_add_explicit(&n->applied, 1, memory_order_relaxed);
}

static void on_role(void *arg, enum keel_raft_role role, uint64_t term, uint64_t leader)
{
	(void)term;
	(void)leader;
	struct node *n = arg;
	atomic_store(&n->role, (int)role);
}

static void init(struct keel_shard *shard, void *arg)
{
	struct node *n = arg;
	struct keel_wal_config wc = {.segment_size = 64ull << 20};
	struct keel_group_config gc = {.shard = shard, .node = &n->cfg, .wal_dir = n->wal,
				       .wal = &wc, .tick_ms = 50, .apply = on_apply,
				       .on_role = on_role, .arg = n, .seed = n->id};
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_group_open(&gc, &n->g, err);
	if (rc < 0)
		fprintf(stderr, "bench-group: node %u: %s\n", n->id, err);
	atomic_store(&n->open_rc, rc);
}

static void fini(struct keel_shard *shard, void *arg)
{
	(void)shard;
	struct node *n = arg;
	keel_group_close(n->g);
	n->g = NULL;
}

static int start(struct node *n, unsigned id)
{
	char text[512], err[KEEL_ERRMSG_LEN];
	snprintf(text, sizeof(text),
		 "[node]\nid = %u\ncluster = 3\nlisten = 127.0.0.1:%u\nshards = 1\n"
		 "secret_file = secret\n[peers]\n1 = 127.0.0.1:%u\n2 = 127.0.0.1:%u\n"
		 "3 = 127.0.0.1:%u\n",
		 id, base + id * 4, base + 4, base + 8, base + 12);
	n->id = id;
	if (keel_node_config_parse(text, "bench.ini", dir, &n->cfg, err) < 0) {
		fprintf(stderr, "bench-group: %s\n", err);
		return -1;
	}
	snprintf(n->wal, sizeof(n->wal), "%s/wal%u", dir, id);
	/* Unpinned (a synthetic topology): three nodes on a 2-core machine must
	 * not all be pinned to the first core. */
	struct keel_runtime_config rc = {.nshards = 1, .synthetic_topology = "pack:1 core:1 pu:1",
					 .node_id = (int)id};
	if (keel_runtime_create(&rc, &n->rt, err) < 0 ||
	    keel_runtime_start(n->rt, init, fini, n) < 0 || atomic_load(&n->open_rc) < 0) {
		fprintf(stderr, "bench-group: node %u: %s\n", id, n->rt ? keel_runtime_errmsg(n->rt) : err);
		return -1;
	}
	return 0;
}

static void propose_one(struct driver *d);

static void done(void *arg, int status, uint64_t index)
{
	(void)index;
	struct driver *d = arg;
	uint64_t now = keel_now_ns();
	d->inflight--;
	if (status == 0) {
		if (d->lat && d->done < d->want)
			d->lat[d->done] = now - d->started_at;
		d->done++;
	} else {
		d->failed++;
	}
	propose_one(d);
}

static void propose_one(struct driver *d)
{
	for (;;) {
		uint64_t now = keel_now_ns();
		bool more = d->lat ? d->done + d->failed + d->inflight < d->want : now < d->deadline;
		if (!more || d->failed > 100) {
			if (!d->inflight)
				atomic_store(&d->finished, 1);
			return;
		}
		if (d->inflight >= d->window)
			return;
		d->started_at = now;
		memcpy(d->payload, &now, sizeof(now));
		int rc = keel_group_propose(d->n->g, d->payload, PAYLOAD, done, d);
		if (rc < 0) {
			d->failed++;
			if (!d->inflight) {
				atomic_store(&d->finished, 1);
				return;
			}
			return;
		}
		d->inflight++;
	}
}

static void kick(struct keel_shard *on, void *arg)
{
	(void)on;
	struct driver *d = arg;
	d->t_start = keel_now_ns();
	propose_one(d);
}

/* The leader's counters, read on its shard. */
struct stats_req {
	struct node *n;
	struct keel_group_stats st;
	atomic_int ready;
};

static void read_stats(struct keel_shard *on, void *arg)
{
	(void)on;
	struct stats_req *r = arg;
	keel_group_get_stats(r->n->g, &r->st);
	atomic_store(&r->ready, 1);
}

static int get_stats(struct node *n, struct keel_group_stats *out)
{
	struct stats_req r = {.n = n};
	if (keel_shard_post_external(keel_runtime_shard(n->rt, 0), read_stats, &r) < 0)
		return -1;
	for (int i = 0; i < 10000 && !atomic_load(&r.ready); i++)
		usleep(1000);
	if (!atomic_load(&r.ready))
		return -1;
	*out = r.st;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The leader, once one of the three leads; 0 after 20 s. */
static struct node *wait_leader(void)
{
	for (int i = 0; i < 2000; i++) {
		for (int k = 1; k <= 3; k++)
			if (atomic_load(&nodes[k].role) == KEEL_RAFT_LEADER)
				return &nodes[k];
		usleep(10000);
	}
	return NULL;
}

static int run(struct driver *d, struct node *lead)
{
	d->n = lead;
	atomic_store(&d->finished, 0);
	if (keel_shard_post_external(keel_runtime_shard(lead->rt, 0), kick, d) < 0)
		return -1;
	for (int i = 0; i < 120000 && !atomic_load(&d->finished); i++)
		usleep(1000);
	return atomic_load(&d->finished) ? 0 : -1;
}

/* One 64-byte WAL append (write + fdatasync) at a time on the same
 * filesystem, outside any runtime: the floor under a commit. */
static uint64_t wal_append_p50(unsigned count, uint64_t *p99)
{
	*p99 = 0;
	char wd[600], err[KEEL_ERRMSG_LEN];
	snprintf(wd, sizeof(wd), "%s/walref", dir);
	mkdir(wd, 0700);
	struct keel_wal_io *io;
	struct keel_wal *w;
	if (keel_wal_io_posix_new(&io, wd, KEEL_WAL_ENGINE_AUTO, err) < 0 ||
	    keel_wal_open(&w, io, &(struct keel_wal_config){.segment_size = 64ull << 20}, err) < 0) {
		fprintf(stderr, "bench-group: reference WAL: %s\n", err);
		return 0;
	}
	uint64_t *lat = calloc(count, sizeof(*lat));
	uint8_t payload[PAYLOAD] = {0};
	unsigned got = 0;
	for (unsigned i = 0; lat && i < count; i++) {
		struct keel_wal_entry e = {.index = i + 1, .term = 1, .len = PAYLOAD, .data = payload};
		uint64_t t0 = keel_now_ns();
		if (keel_wal_append(w, &e, 1, NULL, NULL) < 0 || keel_wal_flush(w) < 0)
			break;
		lat[got++] = keel_now_ns() - t0;
	}
	uint64_t p50 = 0;
	if (got) {
		qsort(lat, got, sizeof(*lat), cmp_u64);
		p50 = lat[got / 2];
		*p99 = lat[(size_t)((double)got * 0.99)];
	}
	free(lat);
	keel_wal_close(w);
	return p50;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"quick", no_argument, NULL, 'q'},   {"dir", required_argument, NULL, 'd'},
		{"count", required_argument, NULL, 'n'}, {"seconds", required_argument, NULL, 's'},
		{"window", required_argument, NULL, 'w'}, {NULL, 0, NULL, 0},
	};
	const char *parent = "/tmp";
	unsigned count = 2000, window = 64;
	double seconds = 3.0;
	int o;
	while ((o = getopt_long(argc, argv, "qd:n:s:w:", opts, NULL)) != -1) {
		switch (o) {
		case 'q':
			count = 200;
			seconds = 0.5;
			break;
		case 'd':
			parent = optarg;
			break;
		case 'n':
			count = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			seconds = strtod(optarg, NULL);
			break;
		case 'w':
			window = (unsigned)strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: bench-group [--quick] [--dir DIR] [--count N] "
					"[--seconds S] [--window W]\n");
			return 2;
		}
	}
	if (!count || !window || seconds <= 0) {
		fprintf(stderr, "bench-group: --count, --window and --seconds must be positive\n");
		return 2;
	}
	keel_log_set_level(KEEL_LOG_WARN);
	snprintf(dir, sizeof(dir), "%s/bench-group.XXXXXX", parent);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "bench-group: mkdtemp in %s: %s\n", parent, strerror(errno));
		return 1;
	}
	char p[600];
	snprintf(p, sizeof(p), "%s/secret", dir);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "bench-group-cluster-secret-0123456789", 37) != 37) {
		fprintf(stderr, "bench-group: writing %s\n", p);
		return 1;
	}
	close(fd);
	base = 20000 + (unsigned)(getpid() % 600) * 20;

	int rc = 1;
	uint64_t wal_p99;
	uint64_t wal_p50 = wal_append_p50(count, &wal_p99);
	for (unsigned i = 1; i <= 3; i++)
		if (start(&nodes[i], i) < 0)
			goto out;
	struct node *lead = wait_leader();
	if (!lead) {
		fprintf(stderr, "bench-group: no leader elected\n");
		goto out;
	}
	/* latency: one in flight */
	D.lat = calloc(count, sizeof(*D.lat));
	D.want = count;
	D.window = 1;
	if (!D.lat || run(&D, lead) < 0 || D.done < count) {
		fprintf(stderr, "bench-group: latency run: %llu of %u committed, %llu failed\n",
			(unsigned long long)D.done, count, (unsigned long long)D.failed);
		goto out;
	}
	qsort(D.lat, count, sizeof(*D.lat), cmp_u64);
	double p50 = (double)D.lat[count / 2] / 1000.0;
	double p99 = (double)D.lat[(size_t)((double)count * 0.99)] / 1000.0;
	free(D.lat);
	D.lat = NULL;

	/* throughput: `window` in flight for `seconds` */
	D.done = D.failed = 0;
	D.window = window;
	D.deadline = keel_now_ns() + (uint64_t)(seconds * 1e9);
	struct keel_group_stats st0, st1;
	if (get_stats(lead, &st0) < 0 || run(&D, lead) < 0 || get_stats(lead, &st1) < 0) {
		fprintf(stderr, "bench-group: throughput run did not finish\n");
		goto out;
	}
	uint64_t batches = st1.wal_batches - st0.wal_batches;
	double per_batch = batches ? (double)(st1.applied - st0.applied) / (double)batches : 0;
	double elapsed = (double)(keel_now_ns() - D.t_start) / 1e9;
	double per_s = (double)D.done / elapsed;

	printf("bench-group: 3 groups in one process, TCP on 127.0.0.1, WALs in %s, %d-byte entries\n",
	       parent, PAYLOAD);
	printf("%-44s %12s\n", "figure", "value");
	printf("%-44s %10.1f us\n", "commit latency p50 (1 in flight)", p50);
	printf("%-44s %10.1f us\n", "commit latency p99 (1 in flight)", p99);
	printf("%-44s %10.0f /s   (%u in flight, %.1f s)\n", "commits", per_s, window, elapsed);
	printf("%-44s %10.1f      (leader's WAL writes, each + fdatasync)\n",
	       "entries per WAL write at that load", per_batch);
	printf("%-44s %10.1f us   (reference: the floor under a commit)\n",
	       "one WAL append + fdatasync p50, same fs", (double)wal_p50 / 1000.0);
	printf("%-44s %10.1f us\n", "one WAL append + fdatasync p99, same fs",
	       (double)wal_p99 / 1000.0);
	printf("{\"bench\":\"group\",\"case\":\"commit_p50_us\",\"unit\":\"us\",\"keel\":%.1f,\"better\":\"lower\"}\n",
	       p50);
	printf("{\"bench\":\"group\",\"case\":\"commit_p99_us\",\"unit\":\"us\",\"keel\":%.1f,\"better\":\"lower\"}\n",
	       p99);
	printf("{\"bench\":\"group\",\"case\":\"commits_per_s_w%u\",\"unit\":\"1/s\",\"keel\":%.0f,\"better\":\"higher\"}\n",
	       window, per_s);
	printf("{\"bench\":\"group\",\"case\":\"entries_per_wal_write_w%u\",\"unit\":\"entries\",\"keel\":%.1f,\"better\":\"higher\"}\n",
	       window, per_batch);
	printf("{\"bench\":\"group\",\"case\":\"wal_append_fdatasync_p50_us\",\"unit\":\"us\",\"keel\":%.1f,\"better\":\"lower\"}\n",
	       (double)wal_p50 / 1000.0);
	printf("{\"bench\":\"group\",\"case\":\"wal_append_fdatasync_p99_us\",\"unit\":\"us\",\"keel\":%.1f,\"better\":\"lower\"}\n",
	       (double)wal_p99 / 1000.0);
	rc = 0;
out:
	for (unsigned i = 1; i <= 3; i++) {
		if (nodes[i].rt) {
			keel_runtime_stop(nodes[i].rt);
			keel_runtime_wait(nodes[i].rt);
			keel_runtime_destroy(nodes[i].rt);
		}
		if (nodes[i].cfg.secret)
			keel_node_config_free(&nodes[i].cfg);
	}
	free(D.lat);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench-group: could not remove %s\n", dir);
	return rc;
}
