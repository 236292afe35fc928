/* keel raft --config FILE [--data DIR] [--propose N] [--groups G] ...: runs
 * Raft groups (the group host, include/keel/group.h), one per shard: shard
 * s hosts group s and talks to shard s of the peers, with the voters of the
 * node config's [peers] table, over the transport the config names (tcp,
 * dpdk). Each group's state machine is a replicated append-only log of
 * strings with a running FNV-1a checksum. It prints one line per role
 * change and per applied entry, for people and for the tests:
 *
 *   node 2: leader term 3
 *   node 1: follower term 3 leader 2
 *   node 1: applied index 7 term 3 count 5 sum 8a3f... data n2-t3-4
 *
 * With --groups G > 1 the node token names the group too ("node 2.1:" is
 * group 1 on node 2), so the fields stay where they are.
 *
 * --propose N: whenever this node leads, it proposes entries until N of
 * its own have committed (a few in flight at a time), so every leader of
 * a run adds N entries; a test kills the leader and sees the next one add
 * its N. SIGINT/SIGTERM stop it. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/config.h"
#include "keel/group.h"
#include "keel/runtime.h"

#define INFLIGHT 4

/* One group: its shard's state, touched only by that shard's thread. */
struct raft_grp {
	struct raft_app *a;
	unsigned id;          /* = shard */
	char who[24];         /* "node 2" or "node 2.1" */
	char wal_dir[600];
	struct keel_group *g;
	unsigned committed;   /* of our own proposals */
	unsigned inflight;
	unsigned seq;
	uint64_t count, sum, last_index;
} KEEL_CACHE_ALIGNED;

struct raft_app {
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct raft_grp *grps;
	unsigned ngroups;
	unsigned tick_ms;
	unsigned segment_kib;
	unsigned snap_every, snap_keep;
	unsigned target;      /* --propose N */
	atomic_int failed;
};

static uint64_t fnv64(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static void app_apply(void *arg, uint64_t index, uint64_t term, const void *data, size_t len)
{
	struct raft_grp *a = arg;
	a->count++;
	a->sum = fnv64(a->sum ^ index, data, len);
	a->last_index = index;
	int shown = len > 64 ? 64 : (int)len;
	printf("%s: applied index %" PRIu64 " term %" PRIu64 " count %" PRIu64
	       " sum %016" PRIx64 " data %.*s\n",
	       a->who, index, term, a->count, a->sum, shown, (const char *)data);
	fflush(stdout);
}

/* The whole state is (count, sum, last index): the strings themselves are
 * only printed. */
static int app_snapshot(void *arg, void **data, size_t *len)
{
	struct raft_grp *a = arg;
	uint64_t *b = malloc(3 * sizeof(uint64_t));
	if (!b)
		return -ENOMEM;
	b[0] = a->count;
	b[1] = a->sum;
	b[2] = a->last_index;
	*data = b;
	*len = 3 * sizeof(uint64_t);
	return 0;
}

static int app_restore(void *arg, uint64_t index, const void *data, size_t len)
{
	struct raft_grp *a = arg;
	uint64_t b[3];
	if (len != sizeof(b))
		return KEEL_ECORRUPT;
	memcpy(b, data, sizeof(b));
	a->count = b[0];
	a->sum = b[1];
	a->last_index = index;
	printf("%s: snapshot index %" PRIu64 " term - count %" PRIu64 " sum %016" PRIx64
	       " restored\n",
	       a->who, index, a->count, a->sum);
	fflush(stdout);
	return 0;
}

static void propose_more(struct raft_grp *a);

static void proposal_done(void *arg, int status, uint64_t index)
{
	struct raft_grp *a = arg;
	a->inflight--;
	if (status == 0) {
		a->committed++;
		if (a->committed == a->a->target) {
			printf("%s: %u proposals committed (last index %" PRIu64 ")\n",
			       a->who, a->committed, index);
			fflush(stdout);
		}
	} else {
		keel_info("raft: proposal at index %" PRIu64 ": %s", index, keel_strerror(status));
	}
	propose_more(a);
}

static void propose_more(struct raft_grp *a)
{
	if (!a->g || keel_group_role(a->g) != KEEL_RAFT_LEADER)
		return;
	while (a->committed + a->inflight < a->a->target && a->inflight < INFLIGHT) {
		char buf[64];
		int n = snprintf(buf, sizeof(buf), "n%u-g%u-t%" PRIu64 "-%u", a->a->cfg.node_id,
				 a->id, keel_group_term(a->g), a->seq);
		if (a->a->ngroups == 1)
			n = snprintf(buf, sizeof(buf), "n%u-t%" PRIu64 "-%u", a->a->cfg.node_id,
				     keel_group_term(a->g), a->seq);
		int rc = keel_group_propose(a->g, buf, (size_t)n, proposal_done, a);
		if (rc < 0) {
			keel_info("raft: propose: %s", keel_strerror(rc));
			return;
		}
		a->seq++;
		a->inflight++;
	}
}

static void app_role(void *arg, enum keel_raft_role role, uint64_t term, uint64_t leader)
{
	struct raft_grp *a = arg;
	if (role == KEEL_RAFT_FOLLOWER)
		printf("%s: follower term %" PRIu64 " leader %" PRIu64 "\n", a->who, term, leader);
	else
		printf("%s: %s term %" PRIu64 "\n", a->who, keel_raft_role_name(role), term);
	fflush(stdout);
	if (role == KEEL_RAFT_LEADER)
		propose_more(a);
}

static void app_error(void *arg, int code, const char *why)
{
	struct raft_grp *a = arg;
	fprintf(stderr, "keel raft: %s: group %u failed: %s (%s)\n", a->who, a->id, why,
		keel_strerror(code));
	atomic_store(&a->a->failed, 1);
	keel_runtime_stop(a->a->rt);
}

static void raft_shard_init(struct keel_shard *shard, void *arg)
{
	struct raft_app *app = arg;
	struct raft_grp *a = &app->grps[keel_shard_id(shard)];
	struct keel_wal_config wc = {.segment_size = (uint64_t)app->segment_kib * 1024};
	struct keel_group_config gc = {
		.shard = shard,
		.node = &app->cfg,
		.wal_dir = a->wal_dir,
		.wal = &wc,
		.tick_ms = app->tick_ms,
		.apply = app_apply,
		.on_role = app_role,
		.on_error = app_error,
		.snapshot = app_snapshot,
		.restore = app_restore,
		.snapshot_every = app->snap_every,
		.snapshot_keep = app->snap_keep,
		.arg = a,
	};
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_group_open(&gc, &a->g, err);
	if (rc < 0) {
		fprintf(stderr, "keel raft: group %u: %s\n", a->id, err);
		atomic_store(&app->failed, 1);
		keel_runtime_stop(keel_shard_runtime(shard));
	}
}

static void raft_shard_fini(struct keel_shard *shard, void *arg)
{
	struct raft_app *app = arg;
	struct raft_grp *a = &app->grps[keel_shard_id(shard)];
	if (!a->g)
		return;
	struct keel_raft_status st;
	keel_group_status(a->g, &st);
	struct keel_group_stats gs;
	keel_group_get_stats(a->g, &gs);
	printf("%s: stopped: %s term %" PRIu64 " commit %" PRIu64 " count %" PRIu64
	       " sum %016" PRIx64 "\n",
	       a->who, keel_raft_role_name(st.role), st.term, st.commit, a->count, a->sum);
	fflush(stdout);
	keel_info("raft: group %u: sent %" PRIu64 ", received %" PRIu64 ", dropped %" PRIu64
		  ", bad %" PRIu64 ", WAL batches %" PRIu64 ", redials %" PRIu64
		  ", snapshots taken %" PRIu64 ", installed %" PRIu64,
		  a->id, gs.msgs_sent, gs.msgs_received, gs.msgs_dropped, gs.bad_msgs,
		  gs.wal_batches, gs.reconnects, gs.snapshots_taken, gs.snapshots_installed);
	keel_group_close(a->g);
	a->g = NULL;
}

static void raft_usage(FILE *f)
{
	fprintf(f,
		"usage: keel raft --config FILE [--data DIR] [--propose N] [--groups G] [--tick-ms MS]\n"
		"                 [--segment-kib KIB] [--snapshot-every N] [--snapshot-keep K] [--poll]\n"
		"  runs Raft groups with the voters of the config's [peers], group s on shard s\n"
		"  (talking to shard s of the peers), over the configured transport (tcp, dpdk),\n"
		"  each with a replicated log of strings as state machine. Prints role changes\n"
		"  ('node 2: leader term 3', 'node 2.1: ...' for group 1) and applied entries.\n"
		"  --data DIR       data directory (default ./keel-raft-<id>): DIR/group-<s> holds\n"
		"                   group s's WAL and snapshot; a restart reuses them\n"
		"  --groups G       groups (= shards, one thread each; default 1); every node of\n"
		"                   the cluster must run the same G\n"
		"  --propose N      while leading, propose until N own entries have committed\n"
		"  --tick-ms MS     Raft tick (default 100; elections after 10-20 ticks)\n"
		"  --segment-kib K  WAL segment size (default 4096)\n"
		"  --snapshot-every N  snapshot the state machine every N applied entries and\n"
		"                   drop the WAL segments it covers (default 0: never)\n"
		"  --snapshot-keep K   entries kept in the log behind a snapshot (default 64)\n"
		"  --poll           busy-poll instead of sleeping in io_uring\n");
}

int keel_cmd_raft(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"data", required_argument, NULL, 'd'},
		{"propose", required_argument, NULL, 'n'},
		{"groups", required_argument, NULL, 'g'},
		{"tick-ms", required_argument, NULL, 't'},
		{"segment-kib", required_argument, NULL, 'k'},
		{"snapshot-every", required_argument, NULL, 'S'},
		{"snapshot-keep", required_argument, NULL, 'K'},
		{"poll", no_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL, *data = NULL;
	bool poll = false;
	struct raft_app *a = calloc(1, sizeof(*a));
	if (!a)
		return 1;
	a->tick_ms = 100;
	a->segment_kib = 4096;
	a->ngroups = 1;
	int o, ret = 2;
	while ((o = getopt_long(argc, argv, "c:d:n:g:t:k:S:K:ph", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			data = optarg;
			break;
		case 'n':
			if (keel_cli_parse_uint("--propose", optarg, 0, 1000000, &a->target))
				goto out;
			break;
		case 'g':
			if (keel_cli_parse_uint("--groups", optarg, 1, 64, &a->ngroups))
				goto out;
			break;
		case 't':
			if (keel_cli_parse_uint("--tick-ms", optarg, 1, 10000, &a->tick_ms))
				goto out;
			break;
		case 'k':
			if (keel_cli_parse_uint("--segment-kib", optarg, 16, 1u << 20, &a->segment_kib))
				goto out;
			if (a->segment_kib % 4) {
				fprintf(stderr, "keel raft: --segment-kib must be a multiple of 4\n");
				goto out;
			}
			break;
		case 'S':
			if (keel_cli_parse_uint("--snapshot-every", optarg, 0, 1u << 30, &a->snap_every))
				goto out;
			break;
		case 'K':
			if (keel_cli_parse_uint("--snapshot-keep", optarg, 1, 1u << 30, &a->snap_keep))
				goto out;
			break;
		case 'p':
			poll = true;
			break;
		case 'h':
			raft_usage(stdout);
			ret = 0;
			goto out;
		default:
			raft_usage(stderr);
			goto out;
		}
	}
	if (!path || optind != argc) {
		raft_usage(stderr);
		goto out;
	}
	ret = 1;
	char err[KEEL_ERRMSG_LEN];
	if (keel_node_config_load(path, &a->cfg, err) < 0) {
		fprintf(stderr, "keel raft: %s\n", err);
		goto out;
	}
	keel_log_set_node((int)a->cfg.node_id);
	a->grps = calloc(a->ngroups, sizeof(*a->grps));
	if (!a->grps) {
		keel_node_config_free(&a->cfg);
		goto out;
	}
	for (unsigned i = 0; i < a->ngroups; i++) {
		struct raft_grp *g = &a->grps[i];
		g->a = a;
		g->id = i;
		if (a->ngroups == 1)
			snprintf(g->who, sizeof(g->who), "node %u", a->cfg.node_id);
		else
			snprintf(g->who, sizeof(g->who), "node %u.%u", a->cfg.node_id, i);
		if (data)
			snprintf(g->wal_dir, sizeof(g->wal_dir), "%s/group-%u", data, i);
		else
			snprintf(g->wal_dir, sizeof(g->wal_dir), "keel-raft-%u/group-%u",
				 a->cfg.node_id, i);
	}
	/* Group s on shard s, which talks to shard s of each peer (the
	 * transport's port + s for TCP, queue s for DPDK): [node] shards is
	 * not used, --groups decides. */
	struct keel_runtime_config rc_cfg = {
		.nshards = a->ngroups,
		.idle = poll ? KEEL_IDLE_BUSY_POLL : KEEL_IDLE_SLEEP,
		.node_id = (int)a->cfg.node_id,
		.overcommit = true,
	};
	if (keel_runtime_create(&rc_cfg, &a->rt, err) < 0) {
		fprintf(stderr, "keel raft: %s\n", err);
		keel_node_config_free(&a->cfg);
		goto out;
	}
	keel_runtime_stop_on_signals(a->rt);
	keel_info("raft: node %u of cluster %llu, %zu voters, %u group(s), transport %s, data %s",
		  a->cfg.node_id, (unsigned long long)a->cfg.cluster_id, a->cfg.npeers, a->ngroups,
		  a->cfg.transport, data ? data : "keel-raft-<id>");
	int rc = keel_runtime_start(a->rt, raft_shard_init, raft_shard_fini, a);
	if (rc == 0)
		rc = keel_runtime_wait(a->rt);
	if (rc < 0)
		fprintf(stderr, "keel raft: %s\n", keel_runtime_errmsg(a->rt));
	keel_runtime_destroy(a->rt);
	keel_node_config_free(&a->cfg);
	ret = rc < 0 || atomic_load(&a->failed) ? 1 : 0;
out:
	free(a->grps);
	free(a);
	return ret;
}
