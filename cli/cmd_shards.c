/* keel shards: starts the runtime's shards pinned as `keel topo` places
 * them, has every shard call every other shard (round trips through the
 * cross-shard rings) and send it pool buffers to free (which travel back to
 * their owner), then prints what each shard did. A smoke run of the whole
 * runtime: placement, pinning, rings, timers, pools, shutdown. Ctrl-C stops
 * it early. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/runtime.h"

#define WINDOW 4 /* calls in flight per shard */

struct shard_stats {
	unsigned next_target;
	uint64_t calls, rtt_ns_sum, served, bufs_sent, bufs_eaten;
	int cpu_seen;
	bool cpu_moved;
	struct keel_timer stop, sample;
	struct {
		uint64_t t0;
		struct shard_stats *st;
	} slot[WINDOW];
} KEEL_CACHE_ALIGNED;

struct demo {
	struct keel_runtime *rt;
	struct shard_stats *st;
	uint64_t duration_ns;
};
static struct demo D;

static void *served(struct keel_shard *on, void *arg)
{
	D.st[keel_shard_id(on)].served++;
	return arg;
}

static void eat(struct keel_shard *on, void *arg)
{
	D.st[keel_shard_id(on)].bufs_eaten++;
	keel_shard_free(arg); /* back to the shard that allocated it */
}

static void call_next(struct keel_shard *s, unsigned w);

static void replied(struct keel_shard *from, void *result, void *arg)
{
	struct shard_stats *st = &D.st[keel_shard_id(from)];
	unsigned w = (unsigned)(uintptr_t)arg;
	st->calls++;
	st->rtt_ns_sum += keel_now_ns() - st->slot[w].t0;
	call_next(from, w);
}

static void call_next(struct keel_shard *s, unsigned w)
{
	unsigned me = keel_shard_id(s), n = keel_shard_count(s);
	struct shard_stats *st = &D.st[me];
	unsigned to = n == 1 ? 0 : (me + 1 + st->next_target++ % (n - 1)) % n;
	st->slot[w].t0 = keel_now_ns();
	if (keel_shard_call(s, to, served, replied, (void *)(uintptr_t)w))
		return; /* stopping */
	if (st->calls % 8 == 0) {
		char *buf = keel_shard_alloc(s, 256);
		if (buf) {
			memset(buf, (int)me, 256);
			if (keel_shard_post(s, to, eat, buf) == 0)
				st->bufs_sent++;
			else
				keel_shard_free(buf);
		}
	}
}

static void sample_cpu(struct keel_timer *t)
{
	struct keel_shard *s = keel_shard_self();
	struct shard_stats *st = &D.st[keel_shard_id(s)];
	if (sched_getcpu() != st->cpu_seen)
		st->cpu_moved = true;
	keel_timer_arm(s, t, 10 * 1000 * 1000);
}

static void stop_all(struct keel_timer *t) { keel_runtime_stop(D.rt); }

static void demo_init(struct keel_shard *s, void *arg)
{
	struct shard_stats *st = &D.st[keel_shard_id(s)];
	st->cpu_seen = sched_getcpu();
	keel_timer_init(&st->sample, sample_cpu, NULL);
	keel_timer_arm(s, &st->sample, 10 * 1000 * 1000);
	if (keel_shard_id(s) == 0) {
		keel_timer_init(&st->stop, stop_all, NULL);
		keel_timer_arm(s, &st->stop, D.duration_ns);
	}
	for (unsigned w = 0; w < WINDOW; w++)
		call_next(s, w);
}

static void demo_fini(struct keel_shard *s, void *arg)
{
	struct shard_stats *st = &D.st[keel_shard_id(s)];
	keel_timer_cancel(s, &st->sample);
	keel_timer_cancel(s, &st->stop);
}

int keel_cmd_shards(int argc, char **argv)
{
	struct keel_runtime_config cfg = {.node_id = -1};
	uint64_t ms = 1000;
	bool busy = false;
	const char *reactor = "auto";
	const struct keel_opt opts[] = {
		{"shards", 0, KEEL_OPT_U32, &cfg.nshards, 1, KEEL_MAX_SHARDS, "N",
		 "shards to run (more than cores: --overcommit)",
		 .def = "one per core of the cpuset"},
		{"cpuset", 0, KEEL_OPT_STR, &cfg.cpuset, .arg = "LIST",
		 .help = "CPUs to use, cpuset(7) list, e.g. 0-3,8", .def = "all"},
		{"overcommit", 0, KEEL_OPT_FLAG, &cfg.overcommit,
		 .help = "allow more shards than cores (they share cores)"},
		{"busy-poll", 0, KEEL_OPT_FLAG, &busy, .help = "never sleep when idle"},
		{"duration", 0, KEEL_OPT_MS, &ms, 1, 3600 * 1000, "MS", "how long to run"},
		{"reactor", 0, KEEL_OPT_STR, &reactor, .arg = "NAME",
		 .help = "auto, io_uring or epoll (auto: io_uring unless refused)"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		.name = "shards",
		.synopsis = "[--shards N] [--cpuset LIST] [--overcommit] [--busy-poll] [--duration MS]"
			    " [--reactor NAME]",
		.about = "  starts pinned shards that call each other through the cross-shard rings\n"
			 "  for MS milliseconds (Ctrl-C stops early), then prints a summary per\n"
			 "  shard. Placement options as for keel topo.\n",
		.opts = opts,
	};
	int status = keel_opt_parse(&spec, argc, argv, NULL);
	if (status != KEEL_OPT_RUN)
		return status;
	if (busy)
		cfg.idle = KEEL_IDLE_BUSY_POLL;
	if (keel_reactor_parse(reactor, &cfg.reactor))
		return keel_opt_usage(&spec, "--reactor: '%s' is not auto, io_uring or epoll", reactor);
	char em[KEEL_ERRMSG_LEN];
	memset(&D, 0, sizeof(D));
	D.duration_ns = ms * 1000000u;
	int rc = keel_runtime_create(&cfg, &D.rt, em);
	if (rc == KEEL_ETOPO || rc == KEEL_EBADINPUT) /* the options do not fit here */
		return keel_opt_usage(&spec, "%s", em);
	if (rc) {
		fprintf(stderr, "keel shards: %s\n", em);
		return 1;
	}
	unsigned n = keel_runtime_shard_count(D.rt);
	D.st = aligned_alloc(KEEL_CACHELINE, n * sizeof(*D.st));
	if (!D.st) {
		keel_runtime_destroy(D.rt);
		return 1;
	}
	memset(D.st, 0, n * sizeof(*D.st));
	keel_runtime_stop_on_signals(D.rt);
	uint64_t t0 = keel_now_ns();
	if (keel_runtime_run(D.rt, demo_init, demo_fini, NULL)) {
		fprintf(stderr, "keel shards: %s\n", keel_runtime_errmsg(D.rt));
		keel_runtime_destroy(D.rt);
		free(D.st);
		return 1;
	}
	double secs = (double)(keel_now_ns() - t0) / 1e9;
	printf("%u shard%s ran %.2f s (%s), each calling the others through the rings:\n", n,
	       n == 1 ? "" : "s", secs,
	       cfg.idle == KEEL_IDLE_BUSY_POLL ? "busy-poll" : "sleeping when idle");
	printf("  %-5s %-9s %-7s %-12s %-12s %-10s %-10s\n", "shard", "PU(ran)", "NUMA", "calls",
	       "served", "mean RTT", "bufs home");
	uint64_t calls = 0, sent = 0, eaten = 0;
	bool all_pinned = true;
	for (unsigned i = 0; i < n; i++) {
		const struct keel_placement *pl = keel_runtime_placement(D.rt, i);
		struct shard_stats *st = &D.st[i];
		bool pinned = st->cpu_seen == (int)pl->pu && !st->cpu_moved;
		all_pinned &= pinned;
		char pu[24];
		snprintf(pu, sizeof(pu), "%u(%d)%s", pl->pu, st->cpu_seen, pinned ? "" : "!");
		printf("  %-5u %-9s %-7u %-12llu %-12llu %-10.0f %-10llu\n", i, pu, pl->numa_node,
		       (unsigned long long)st->calls, (unsigned long long)st->served,
		       st->calls ? (double)st->rtt_ns_sum / (double)st->calls : 0.0,
		       (unsigned long long)st->bufs_eaten);
		calls += st->calls;
		sent += st->bufs_sent;
		eaten += st->bufs_eaten;
	}
	printf("total: %llu cross-shard calls (%.0f/s), %llu buffers sent, %llu freed on the "
	       "receiving shard and returned; every shard %s its PU\n",
	       (unsigned long long)calls, (double)calls / secs, (unsigned long long)sent,
	       (unsigned long long)eaten, all_pinned ? "stayed on" : "did NOT stay on");
	keel_runtime_destroy(D.rt);
	free(D.st);
	return all_pinned && calls > 0 ? 0 : 1;
}
