/* bench-group: the replicated log (include/keel/rlog.h, the Raft engine)
 * end to end, on the node layer: three keel_node in one process, each with
 * --shards shards, real TCP on 127.0.0.1, real WALs (write + fdatasync)
 * under --dir, G groups with group g on shard g mod S (one WAL per group).
 * Measured on each group's leader, from keel_rlog_propose to its callback
 * (committed on a quorum and applied there):
 *   - commit latency with one proposal in flight in one group, p50/p99;
 *   - for each G in --groups: commits/s of all groups together and their
 *     latency p50/p99, with --window proposals in flight in total, spread
 *     evenly over the groups (so every G sees the same offered load, and
 *     the figure shows what spreading it over groups, shards and WALs buys).
 * For scale the run measures one WAL append (write + fdatasync, one record)
 * on the same filesystem: a commit cannot be faster than the leader's own
 * fdatasync. No peer runs the same job here (bench/kv compares with etcd).
 *
 * Reactors (issue 15): by default everything runs twice, on the io_uring
 * reactor (WALs on io_uring) and on the epoll one (WALs on their helper
 * thread, as where io_uring is refused), each group count on both before
 * the next, and the run ends with epoll's cost
 * as a ratio (target: commit p50 <= 1.2x io_uring). --reactor picks one.
 *
 *   bench-group [--quick] [--dir DIR] [--groups N[,N...]] [--shards S]
 *               [--count N] [--seconds S] [--window W]
 *               [--reactor io_uring|epoll|both] [--protocol raft|paxos|both]
 *
 * --protocol picks the engine ([log] protocol, default raft); both runs
 * Multi-Paxos right after Raft at each group count, on one reactor, and
 * ends with Paxos / Raft ratios (target: within 10%, issue 14). */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/node.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/wal.h"

#define PAYLOAD 64
#define MAXG 64

struct bgroup;

/* The driver of one group, on its leader's shard. */
struct driver {
	struct bgroup *g;
	uint64_t *lat;
	size_t nlat, cap;
	uint64_t want, done, failed, inflight, window;
	uint64_t deadline;
	atomic_int finished;
	uint8_t payload[PAYLOAD];
};

struct bgroup {
	struct bnode *n;
	unsigned id;
	char dir[600];
	struct keel_rlog *log;
	atomic_int leading;
	atomic_ullong applied;
	struct driver d;
};

struct bnode {
	unsigned id;
	struct keel_node_config cfg;
	struct keel_node *node;
	struct bgroup g[MAXG];
	unsigned ngroups;
	atomic_int open_rc;
};

static struct bnode nodes[4];
static char dir[512];
static unsigned base, shards = 2;

static void on_apply(void *arg, uint64_t index, const void *data, size_t len)
{
	(void)index;
	(void)data;
	(void)len;
	struct bgroup *g = arg;
	atomic_fetch_add_explicit(&g->applied, 1, memory_order_relaxed);
}

static void on_leader(void *arg, uint32_t leader, uint64_t epoch, bool self)
{
	(void)leader;
	(void)epoch;
	struct bgroup *g = arg;
	atomic_store(&g->leading, self);
}

/* The reactor of this pass; its WALs follow it as a node's would. */
static enum keel_reactor_kind reactor = KEEL_REACTOR_IO_URING;
/* The engine of this pass ([log] protocol); --protocol both runs Paxos
 * after Raft at each group count and prints Paxos / Raft ratios. */
static const char *protocol = "raft";

static int init(void *arg, struct keel_node *node, struct keel_endpoint *ep, char *errmsg)
{
	(void)node;
	struct bnode *n = arg;
	static const struct keel_wal_config wc = {.segment_size = 64ull << 20};
	unsigned s = keel_endpoint_shard(ep);
	for (unsigned i = s; i < n->ngroups; i += keel_endpoint_nshards(ep)) {
		struct bgroup *g = &n->g[i];
		g->n = n;
		g->id = i;
		snprintf(g->dir, sizeof(g->dir), "%s/%s/n%u/g%u", dir, protocol, n->id, i);
		struct keel_rlog_config lc = {
			.protocol = protocol,
			.ep = ep, .group = i, .dir = g->dir, .wal = &wc, .tick_ms = 50,
			.seed = n->id * 1000 + i,
			.wal_engine = reactor == KEEL_REACTOR_EPOLL ? KEEL_WAL_ENGINE_THREAD
								    : KEEL_WAL_ENGINE_AUTO,
			.sm = {.apply = on_apply, .on_leader = on_leader, .arg = g},
		};
		int rc = keel_rlog_open(&lc, &g->log, errmsg);
		if (rc < 0) {
			atomic_store(&n->open_rc, rc);
			return rc;
		}
	}
	return 0;
}

static void fini(void *arg, struct keel_node *node, struct keel_endpoint *ep)
{
	(void)node;
	struct bnode *n = arg;
	unsigned s = keel_endpoint_shard(ep);
	for (unsigned i = s; i < n->ngroups; i += keel_endpoint_nshards(ep)) {
		keel_rlog_close(n->g[i].log);
		n->g[i].log = NULL;
	}
}

static int start(struct bnode *n, unsigned id, unsigned ngroups)
{
	char text[600], err[KEEL_ERRMSG_LEN];
	unsigned step = shards + 1;
	snprintf(text, sizeof(text),
		 "[node]\nid = %u\ncluster = 3\nlisten = 127.0.0.1:%u\nshards = %u\n"
		 "secret_file = secret\n[peers]\n1 = 127.0.0.1:%u\n2 = 127.0.0.1:%u\n"
		 "3 = 127.0.0.1:%u\n",
		 id, base + id * step, shards, base + step, base + 2 * step, base + 3 * step);
	memset(n, 0, sizeof(*n));
	n->id = id;
	n->ngroups = ngroups;
	if (keel_node_config_parse(text, "bench.ini", dir, &n->cfg, err) < 0) {
		fprintf(stderr, "bench-group: %s\n", err);
		return -1;
	}
	/* Unpinned (a synthetic topology): three nodes on a 2-core machine must
	 * not all be pinned to the same cores. */
	char topo[64];
	snprintf(topo, sizeof(topo), "pack:1 core:%u pu:1", shards);
	struct keel_node_options o = {.synthetic_topology = topo, .reactor = reactor};
	const struct keel_node_hooks h = {.start = init, .stop = fini, .arg = n};
	if (keel_node_create(&n->cfg, &o, &n->node, err) < 0 ||
	    keel_node_start(n->node, &h, err) < 0) {
		fprintf(stderr, "bench-group: node %u: %s\n", id, err);
		return -1;
	}
	return 0;
}

static void stop_all(void)
{
	for (unsigned i = 1; i <= 3; i++) {
		if (nodes[i].node) {
			keel_node_stop(nodes[i].node);
			keel_node_wait(nodes[i].node);
			keel_node_destroy(nodes[i].node);
			nodes[i].node = NULL;
		}
		if (nodes[i].cfg.secret)
			keel_node_config_free(&nodes[i].cfg);
	}
}

/* ---- the drivers, on the leaders' shards ------------------------------ */

static void propose_more(struct driver *d);

static void done(void *arg, int status, uint64_t index)
{
	(void)index;
	struct driver *d = arg;
	d->inflight--;
	if (status == 0)
		d->done++;
	else
		d->failed++;
	propose_more(d);
}

struct pending {
	struct driver *d;
	uint64_t t0;
};

static void done_timed(void *arg, int status, uint64_t index)
{
	struct pending *p = arg;
	struct driver *d = p->d;
	if (status == 0 && d->nlat < d->cap)
		d->lat[d->nlat++] = keel_now_ns() - p->t0;
	free(p);
	done(d, status, index);
}

static void propose_more(struct driver *d)
{
	for (;;) {
		uint64_t now = keel_now_ns();
		bool more = d->want ? d->done + d->failed + d->inflight < d->want : now < d->deadline;
		if (!more || d->failed > 100) {
			if (!d->inflight)
				atomic_store(&d->finished, 1);
			return;
		}
		if (d->inflight >= d->window)
			return;
		struct pending *p = malloc(sizeof(*p));
		if (!p) {
			d->failed++;
			continue;
		}
		*p = (struct pending){d, now};
		memcpy(d->payload, &now, sizeof(now));
		int rc = keel_rlog_propose(d->g->log, d->payload, PAYLOAD, done_timed, p);
		if (rc < 0) {
			free(p);
			d->failed++;
			if (!d->inflight)
				atomic_store(&d->finished, 1);
			return;
		}
		d->inflight++;
	}
}

static void kick(struct keel_shard *on, void *arg)
{
	(void)on;
	propose_more(arg);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Each group's leader, once every group has one; -1 after 20 s. */
static int wait_leaders(unsigned ngroups, struct bgroup **lead)
{
	for (int i = 0; i < 2000; i++) {
		unsigned have = 0;
		for (unsigned g = 0; g < ngroups; g++) {
			lead[g] = NULL;
			for (unsigned k = 1; k <= 3; k++)
				if (atomic_load(&nodes[k].g[g].leading))
					lead[g] = &nodes[k].g[g];
			have += lead[g] != NULL;
		}
		if (have == ngroups)
			return 0;
		usleep(10000);
	}
	return -1;
}

/* Runs one driver per group on its leader's shard until all finish. */
static int run(struct bgroup **lead, unsigned ngroups)
{
	for (unsigned g = 0; g < ngroups; g++) {
		struct driver *d = &lead[g]->d;
		atomic_store(&d->finished, 0);
		struct keel_runtime *rt = keel_node_runtime(lead[g]->n->node);
		if (keel_shard_post_external(keel_runtime_shard(rt, g % shards), kick, d) < 0)
			return -1;
	}
	for (int i = 0; i < 120000; i++) {
		unsigned fin = 0;
		for (unsigned g = 0; g < ngroups; g++)
			fin += atomic_load(&lead[g]->d.finished) != 0;
		if (fin == ngroups)
			return 0;
		usleep(1000);
	}
	return -1;
}

static void driver_setup(struct driver *d, struct bgroup *g, uint64_t want, uint64_t window,
			 uint64_t deadline, size_t cap)
{
	free(d->lat);
	*d = (struct driver){.g = g, .want = want, .window = window, .deadline = deadline,
			     .cap = cap};
	d->lat = calloc(cap ? cap : 1, sizeof(*d->lat));
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

struct figure {
	unsigned groups;
	double per_s, p50, p99;
};

/* A fresh cluster with ngroups groups: the load run (and, for the first,
 * the one-in-flight latency). */
static int measure(unsigned ngroups, unsigned count, double seconds, unsigned window,
		   struct figure *f, double *lat_p50, double *lat_p99)
{
	for (unsigned i = 1; i <= 3; i++)
		if (start(&nodes[i], i, ngroups) < 0)
			return -1;
	struct bgroup *lead[MAXG];
	if (wait_leaders(ngroups, lead) < 0) {
		fprintf(stderr, "bench-group: %u groups: not every group elected a leader\n", ngroups);
		return -1;
	}
	if (lat_p50) {
		/* one in flight, group 0 only */
		driver_setup(&lead[0]->d, lead[0], count, 1, 0, count);
		if (run(lead, 1) < 0 || lead[0]->d.nlat < count) {
			fprintf(stderr, "bench-group: latency run: %zu of %u committed\n",
				lead[0]->d.nlat, count);
			return -1;
		}
		qsort(lead[0]->d.lat, lead[0]->d.nlat, sizeof(uint64_t), cmp_u64);
		*lat_p50 = (double)lead[0]->d.lat[count / 2] / 1000.0;
		*lat_p99 = (double)lead[0]->d.lat[(size_t)((double)count * 0.99)] / 1000.0;
	}
	uint64_t deadline = keel_now_ns() + (uint64_t)(seconds * 1e9);
	unsigned per = window / ngroups ? window / ngroups : 1;
	size_t cap = (size_t)(seconds * 200000 / ngroups) + 1024;
	for (unsigned g = 0; g < ngroups; g++)
		driver_setup(&lead[g]->d, lead[g], 0, per + (g < window % ngroups ? 1 : 0), deadline,
			     cap);
	uint64_t t0 = keel_now_ns();
	if (run(lead, ngroups) < 0) {
		fprintf(stderr, "bench-group: %u groups: the load run did not finish\n", ngroups);
		return -1;
	}
	double elapsed = (double)(keel_now_ns() - t0) / 1e9;
	size_t total = 0;
	uint64_t done = 0;
	for (unsigned g = 0; g < ngroups; g++) {
		total += lead[g]->d.nlat;
		done += lead[g]->d.done;
	}
	uint64_t *all = calloc(total ? total : 1, sizeof(*all));
	size_t k = 0;
	for (unsigned g = 0; g < ngroups && all; g++) {
		memcpy(all + k, lead[g]->d.lat, lead[g]->d.nlat * sizeof(*all));
		k += lead[g]->d.nlat;
	}
	if (!all || !k)
		return -1;
	qsort(all, k, sizeof(*all), cmp_u64);
	*f = (struct figure){.groups = ngroups, .per_s = (double)done / elapsed,
			     .p50 = (double)all[k / 2] / 1000.0,
			     .p99 = (double)all[(size_t)((double)k * 0.99)] / 1000.0};
	free(all);
	for (unsigned g = 0; g < ngroups; g++) {
		free(lead[g]->d.lat);
		lead[g]->d.lat = NULL;
	}
	stop_all();
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench-group [--quick] [--dir DIR] [--groups N[,N...]] [--shards S]\n"
		   "                   [--count N] [--seconds S] [--window W]\n"
		   "                   [--reactor io_uring|epoll|both] [--protocol raft|paxos|both]\n"
		   "  default: --groups 1,8,32 --shards 2 --count 2000 --seconds 3 --window 64\n"
		   "  --quick: --groups 1,8 --count 200 --seconds 0.5\n");
}

int main(int argc, char **argv)
{
	const char *parent = "/tmp", *glist = NULL;
	unsigned count = 2000, window = 64;
	double seconds = 3.0;
	bool quick = false;
	bool passes[3] = {[KEEL_REACTOR_IO_URING] = true, [KEEL_REACTOR_EPOLL] = true};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--quick")) {
			quick = true;
		} else if (!strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (v && !strcmp(a, "--dir")) {
			parent = v, i++;
		} else if (v && !strcmp(a, "--groups")) {
			glist = v, i++;
		} else if (v && !strcmp(a, "--shards")) {
			shards = (unsigned)strtoul(v, NULL, 10), i++;
		} else if (v && !strcmp(a, "--count")) {
			count = (unsigned)strtoul(v, NULL, 10), i++;
		} else if (v && !strcmp(a, "--seconds")) {
			seconds = strtod(v, NULL), i++;
		} else if (v && !strcmp(a, "--window")) {
			window = (unsigned)strtoul(v, NULL, 10), i++;
		} else if (v && !strcmp(a, "--protocol")) {
			if (strcmp(v, "raft") && strcmp(v, "paxos") && strcmp(v, "both")) {
				usage(stderr);
				return 2;
			}
			protocol = v, i++;
		} else if (v && !strcmp(a, "--reactor")) {
			enum keel_reactor_kind k;
			i++;
			if (!strcmp(v, "both")) {
				passes[KEEL_REACTOR_IO_URING] = passes[KEEL_REACTOR_EPOLL] = true;
			} else if (keel_reactor_parse(v, &k) == 0 && k != KEEL_REACTOR_AUTO) {
				passes[KEEL_REACTOR_IO_URING] = passes[KEEL_REACTOR_EPOLL] = false;
				passes[k] = true;
			} else {
				usage(stderr);
				return 2;
			}
		} else {
			usage(stderr);
			return 2;
		}
	}
	/* Raft against Paxos on one reactor (io_uring unless --reactor epoll
	 * alone): the engines, not the reactors, are compared. */
	bool both = !strcmp(protocol, "both");
	if (both) {
		protocol = "raft";
		if (passes[KEEL_REACTOR_IO_URING])
			passes[KEEL_REACTOR_EPOLL] = false;
	}
	if (quick) {
		count = 200;
		seconds = 0.5;
	}
	unsigned gs[8], ng = 0;
	const char *p = glist ? glist : quick ? "1,8" : "1,8,32";
	while (*p && ng < 8) {
		char *end;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p || !v || v > MAXG) {
			fprintf(stderr, "bench-group: --groups: a list of 1..%d\n", MAXG);
			return 2;
		}
		gs[ng++] = (unsigned)v;
		p = *end == ',' ? end + 1 : end;
	}
	if (!count || !window || seconds <= 0 || !shards || shards > 8) {
		fprintf(stderr, "bench-group: --count, --window, --seconds positive; --shards 1..8\n");
		return 2;
	}
	keel_log_set_level(KEEL_LOG_WARN);
	snprintf(dir, sizeof(dir), "%s/bench-group.XXXXXX", parent);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "bench-group: mkdtemp in %s: %s\n", parent, strerror(errno));
		return 1;
	}
	char path[600];
	snprintf(path, sizeof(path), "%s/secret", dir);
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "bench-group-cluster-secret-0123456789", 37) != 37) {
		fprintf(stderr, "bench-group: writing %s\n", path);
		return 1;
	}
	close(fd);
	base = 20000 + (unsigned)(getpid() % 400) * 30; /* below the ephemeral range */

	int rc = 1;
	uint64_t wal_p99;
	uint64_t wal_p50 = wal_append_p50(count, &wal_p99);
	double pass_p50[3] = {0}, pass_p99[3] = {0};
	struct figure pass_f[3][8], px_f[8];
	double px_p50 = 0, px_p99 = 0;
	/* Each group count on io_uring then on epoll, before the next count:
	 * the machine's drift weighs on both reactors alike. */
	for (unsigned i = 0; i < ng; i++) {
		for (int rk = KEEL_REACTOR_IO_URING; rk <= KEEL_REACTOR_EPOLL; rk++) {
			if (!passes[rk])
				continue;
			reactor = (enum keel_reactor_kind)rk;
			if (measure(gs[i], count, seconds, window, &pass_f[rk][i],
				    i == 0 ? &pass_p50[rk] : NULL, i == 0 ? &pass_p99[rk] : NULL) < 0)
				goto out;
			if (both) {
				protocol = "paxos";
				int m = measure(gs[i], count, seconds, window, &px_f[i],
						i == 0 ? &px_p50 : NULL, i == 0 ? &px_p99 : NULL);
				protocol = "raft";
				if (m < 0)
					goto out;
			}
		}
	}
	for (int rk = KEEL_REACTOR_IO_URING; rk <= KEEL_REACTOR_EPOLL; rk++) {
		if (!passes[rk])
			continue;
		reactor = (enum keel_reactor_kind)rk;
		const char *sfx = rk == KEEL_REACTOR_EPOLL ? "_epoll" : "";
		struct figure *f = pass_f[rk];
		double lat_p50 = pass_p50[rk], lat_p99 = pass_p99[rk];
		printf("bench-group: 3 nodes in one process, %u shards each, TCP on 127.0.0.1, WALs in %s, "
		       "%d-byte entries, %u proposals in flight in all, %s reactor, %s\n",
		       shards, parent, PAYLOAD, window, keel_reactor_name(reactor), protocol);
		printf("%-46s %12s\n", "figure", "value");
		printf("%-46s %10.1f us\n", "commit latency p50 (1 group, 1 in flight)", lat_p50);
		printf("%-46s %10.1f us\n", "commit latency p99 (1 group, 1 in flight)", lat_p99);
		for (unsigned i = 0; i < ng; i++) {
			char name[64];
			snprintf(name, sizeof(name), "%u group%s: commits", f[i].groups, f[i].groups > 1 ? "s" : "");
			printf("%-46s %10.0f /s   p50 %.0f us, p99 %.0f us\n", name, f[i].per_s, f[i].p50,
			       f[i].p99);
		}
		printf("%-46s %10.1f us   (reference: the floor under a commit)\n",
		       "one WAL append + fdatasync p50, same fs", (double)wal_p50 / 1000.0);
		printf("%-46s %10.1f us\n", "one WAL append + fdatasync p99, same fs",
		       (double)wal_p99 / 1000.0);
		printf("{\"bench\":\"group\",\"case\":\"commit_p50_us%s\",\"unit\":\"us\",\"keel\":%.1f,\"better\":\"lower\"}\n",
		       sfx, lat_p50);
		printf("{\"bench\":\"group\",\"case\":\"commit_p99_us%s\",\"unit\":\"us\",\"keel\":%.1f,\"better\":\"lower\"}\n",
		       sfx, lat_p99);
		for (unsigned i = 0; i < ng; i++) {
			printf("{\"bench\":\"group\",\"case\":\"commits_per_s_g%u_w%u%s\",\"unit\":\"1/s\",\"keel\":%.0f,\"better\":\"higher\"}\n",
			       f[i].groups, window, sfx, f[i].per_s);
			printf("{\"bench\":\"group\",\"case\":\"load_p50_us_g%u_w%u%s\",\"unit\":\"us\",\"keel\":%.0f,\"better\":\"lower\"}\n",
			       f[i].groups, window, sfx, f[i].p50);
			printf("{\"bench\":\"group\",\"case\":\"load_p99_us_g%u_w%u%s\",\"unit\":\"us\",\"keel\":%.0f,\"better\":\"lower\"}\n",
			       f[i].groups, window, sfx, f[i].p99);
		}
		if (rk == KEEL_REACTOR_IO_URING || !passes[KEEL_REACTOR_IO_URING]) /* once */
			printf("{\"bench\":\"group\",\"case\":\"wal_append_fdatasync_p50_us\",\"unit\":\"us\",\"keel\":%.1f,\"better\":\"lower\"}\n",
			       (double)wal_p50 / 1000.0);
	}
	if (passes[KEEL_REACTOR_IO_URING] && passes[KEEL_REACTOR_EPOLL]) {
		/* The fallback's cost, the "peer" being the io_uring pass. */
		double e = pass_p50[KEEL_REACTOR_EPOLL], u = pass_p50[KEEL_REACTOR_IO_URING];
		printf("%-46s %10s %10s %7s\n", "epoll vs io_uring", "epoll", "io_uring", "ratio");
		printf("%-46s %10.1f %10.1f %7.2f\n", "commit latency p50 (us)", e, u, u > 0 ? e / u : 0);
		double e99 = pass_p99[KEEL_REACTOR_EPOLL], u99 = pass_p99[KEEL_REACTOR_IO_URING];
		printf("%-46s %10.1f %10.1f %7.2f\n", "commit latency p99 (us)", e99, u99,
		       u99 > 0 ? e99 / u99 : 0);
		printf("{\"bench\":\"group\",\"case\":\"epoll_vs_io_uring_commit_p50_us\","
		       "\"unit\":\"us\",\"keel\":%.1f,\"peer\":\"keel on io_uring\","
		       "\"peer_value\":%.1f,\"ratio\":%.3f,\"better\":\"lower\",\"target\":1.20,"
		       "\"meets\":%s}\n",
		       e, u, u > 0 ? e / u : 0, u > 0 && e / u <= 1.2 ? "true" : "false");
		for (unsigned i = 0; i < ng; i++) {
			double fe = pass_f[KEEL_REACTOR_EPOLL][i].per_s;
			double fu = pass_f[KEEL_REACTOR_IO_URING][i].per_s;
			char name[64];
			snprintf(name, sizeof(name), "%u group%s: commits/s", gs[i], gs[i] > 1 ? "s" : "");
			printf("%-46s %10.0f %10.0f %7.2f\n", name, fe, fu, fu > 0 ? fe / fu : 0);
			printf("{\"bench\":\"group\",\"case\":\"epoll_vs_io_uring_commits_per_s_g%u_w%u\","
			       "\"unit\":\"1/s\",\"keel\":%.0f,\"peer\":\"keel on io_uring\","
			       "\"peer_value\":%.0f,\"ratio\":%.3f,\"better\":\"higher\"}\n",
			       gs[i], window, fe, fu, fu > 0 ? fe / fu : 0);
		}
	}
	if (both) {
		/* Paxos is "keel", Raft the peer: the target is Paxos
		 * within 10% of Raft on the same cluster, disk and network. */
		int rk = passes[KEEL_REACTOR_IO_URING] ? KEEL_REACTOR_IO_URING : KEEL_REACTOR_EPOLL;
		double r50 = pass_p50[rk], r99 = pass_p99[rk];
		printf("%-46s %10s %10s %7s\n", "paxos vs raft", "paxos", "raft", "ratio");
		printf("%-46s %10.1f %10.1f %7.2f\n", "commit latency p50 (us, 1 in flight)", px_p50, r50,
		       r50 > 0 ? px_p50 / r50 : 0);
		printf("%-46s %10.1f %10.1f %7.2f\n", "commit latency p99 (us, 1 in flight)", px_p99, r99,
		       r99 > 0 ? px_p99 / r99 : 0);
		printf("{\"bench\":\"group\",\"case\":\"paxos_vs_raft_commit_p50_us\",\"unit\":\"us\","
		       "\"keel\":%.1f,\"peer\":\"keel on raft\",\"peer_value\":%.1f,\"ratio\":%.3f,"
		       "\"better\":\"lower\",\"target\":1.10,\"meets\":%s}\n",
		       px_p50, r50, r50 > 0 ? px_p50 / r50 : 0,
		       r50 > 0 && px_p50 / r50 <= 1.1 ? "true" : "false");
		for (unsigned i = 0; i < ng; i++) {
			const struct figure *r = &pass_f[rk][i], *x = &px_f[i];
			char name[64];
			snprintf(name, sizeof(name), "%u group%s: commits/s", gs[i], gs[i] > 1 ? "s" : "");
			printf("%-46s %10.0f %10.0f %7.2f\n", name, x->per_s, r->per_s,
			       r->per_s > 0 ? x->per_s / r->per_s : 0);
			snprintf(name, sizeof(name), "%u group%s: p50 / p99 (us)", gs[i], gs[i] > 1 ? "s" : "");
			printf("%-46s %5.0f/%-5.0f %5.0f/%-5.0f %7.2f\n", name, x->p50, x->p99, r->p50,
			       r->p99, r->p50 > 0 ? x->p50 / r->p50 : 0);
			printf("{\"bench\":\"group\",\"case\":\"paxos_vs_raft_commits_per_s_g%u_w%u\","
			       "\"unit\":\"1/s\",\"keel\":%.0f,\"peer\":\"keel on raft\","
			       "\"peer_value\":%.0f,\"ratio\":%.3f,\"better\":\"higher\",\"target\":0.90,"
			       "\"meets\":%s}\n",
			       gs[i], window, x->per_s, r->per_s, r->per_s > 0 ? x->per_s / r->per_s : 0,
			       r->per_s > 0 && x->per_s / r->per_s >= 0.9 ? "true" : "false");
			printf("{\"bench\":\"group\",\"case\":\"paxos_vs_raft_load_p99_us_g%u_w%u\","
			       "\"unit\":\"us\",\"keel\":%.0f,\"peer\":\"keel on raft\","
			       "\"peer_value\":%.0f,\"ratio\":%.3f,\"better\":\"lower\",\"target\":1.10,"
			       "\"meets\":%s}\n",
			       gs[i], window, x->p99, r->p99, r->p99 > 0 ? x->p99 / r->p99 : 0,
			       r->p99 > 0 && x->p99 / r->p99 <= 1.1 ? "true" : "false");
		}
	}
	rc = 0;
out:
	stop_all();
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench-group: could not remove %s\n", dir);
	return rc;
}
