/* The group host (include/keel/group.h) in one process: three nodes, each a
 * runtime of one shard with a real TCP transport on 127.0.0.1 and a real
 * WAL in a temporary directory. A leader is elected, proposals commit and
 * apply on all three in the same order, reads and refusals behave, and a
 * restart from the WALs keeps term, vote and log. With snapshots on, a node
 * that was down catches up through InstallSnapshot and restarts from its
 * snapshot file. A fourth endpoint that speaks garbage is dropped with log
 * lines while the others keep working. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/group.h"
#include "keel/runtime.h"
#include "keel/transport.h"

#define TICK_MS 30

struct node {
	unsigned id;
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct keel_group *g;
	struct keel_transport *raw; /* the garbage-speaking endpoint instead of a group */
	char wal[160];
	/* state machine, written on the shard, read by the test thread */
	atomic_ullong count, sum, last_index;
	atomic_int role;
	atomic_ullong term, leader;
	/* proposals and reads answered */
	atomic_int ok, failed, reads_ok, reads_failed;
	atomic_ullong read_index, max_ok_index;
	/* status at open (recovery) and at close */
	atomic_ullong open_term, open_vote, open_last;
	atomic_ullong close_term, close_vote, close_last;
	atomic_ullong bad_msgs;
	bool snap;             /* snapshots on (every 5 entries, 1 kept) */
	atomic_int restored;   /* restore() calls */
	atomic_int open_rc;
	atomic_ullong restored_index;
};

static char dir[64];
static unsigned base;
static struct node nodes[4];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/keel-group-unit-XXXXXX");
	cr_assert(mkdtemp(dir));
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", dir);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "unit-test-cluster-secret-0123456789", 35), 35);
	close(fd);
	/* Below the ephemeral range (32768+): no outgoing connection of
	 * another test can hold these ports. */
	base = 20000 + (unsigned)(getpid() % 600) * 20;
	memset(nodes, 0, sizeof(nodes));
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static uint64_t fnv64(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static void on_apply(void *arg, uint64_t index, uint64_t term, const void *data, size_t len)
{
	struct node *n = arg;
	(void)term;
	atomic_store(&n->sum, fnv64(atomic_load(&n->sum) ^ index, data, len));
	atomic_store(&n->last_index, index);
	atomic_fetch_add(&n->count, 1);
}

static int on_snapshot(void *arg, void **data, size_t *len)
{
	struct node *n = arg;
	uint64_t *b = malloc(3 * sizeof(uint64_t));
	if (!b)
		return -ENOMEM;
	b[0] = atomic_load(&n->count);
	b[1] = atomic_load(&n->sum);
	b[2] = atomic_load(&n->last_index);
	*data = b;
	*len = 3 * sizeof(uint64_t);
	return 0;
}

static int on_restore(void *arg, uint64_t index, const void *data, size_t len)
{
	struct node *n = arg;
	uint64_t b[3];
	if (len != sizeof(b))
		return KEEL_ECORRUPT;
	memcpy(b, data, sizeof(b));
	atomic_store(&n->count, b[0]);
	atomic_store(&n->sum, b[1]);
	atomic_store(&n->last_index, index);
	atomic_store(&n->restored_index, index);
	atomic_fetch_add(&n->restored, 1);
	return 0;
}

static void on_role(void *arg, enum keel_raft_role role, uint64_t term, uint64_t leader)
{
	struct node *n = arg;
	atomic_store(&n->term, term);
	atomic_store(&n->leader, leader);
	atomic_store(&n->role, (int)role);
}

static void snapshot_status(struct node *n, atomic_ullong *t, atomic_ullong *v, atomic_ullong *l)
{
	struct keel_raft_status st;
	keel_group_status(n->g, &st);
	atomic_store(t, st.term);
	atomic_store(v, st.vote);
	atomic_store(l, st.last_index);
}

static void init(struct keel_shard *shard, void *arg)
{
	struct node *n = arg;
	struct keel_wal_config wc = {.segment_size = 256 * 1024};
	struct keel_group_config gc = {
		.shard = shard, .node = &n->cfg, .wal_dir = n->wal, .wal = &wc,
		.tick_ms = TICK_MS, .apply = on_apply, .on_role = on_role, .arg = n,
		.seed = n->id * 7919,
		.snapshot = n->snap ? on_snapshot : NULL,
		.restore = n->snap ? on_restore : NULL,
		.snapshot_every = n->snap ? 5 : 0,
		.snapshot_keep = 1,
	};
	char err[KEEL_ERRMSG_LEN];
	/* No cr_assert off the test's thread: report, the test asserts. */
	int rc = keel_group_open(&gc, &n->g, err);
	atomic_store(&n->open_rc, rc);
	if (rc < 0) {
		fprintf(stderr, "node %u: %s\n", n->id, err);
		return;
	}
	snapshot_status(n, &n->open_term, &n->open_vote, &n->open_last);
}

static void fini(struct keel_shard *shard, void *arg)
{
	(void)shard;
	struct node *n = arg;
	if (!n->g)
		return;
	snapshot_status(n, &n->close_term, &n->close_vote, &n->close_last);
	keel_group_close(n->g);
	n->g = NULL;
}

static void load(struct node *n, unsigned id)
{
	char text[512], err[KEEL_ERRMSG_LEN];
	snprintf(text, sizeof(text),
		 "[node]\nid = %u\ncluster = 5\nlisten = 127.0.0.1:%u\nshards = 1\n"
		 "secret_file = secret\nhandshake_timeout_ms = 1000\n[peers]\n1 = 127.0.0.1:%u\n"
		 "2 = 127.0.0.1:%u\n3 = 127.0.0.1:%u\n",
		 id, base + id * 4, base + 4, base + 8, base + 12);
	n->id = id;
	cr_assert_eq(keel_node_config_parse(text, "unit.ini", dir, &n->cfg, err), 0, "%s", err);
	snprintf(n->wal, sizeof(n->wal), "%s/wal%u", dir, id);
}

static void start(struct node *n, void (*in)(struct keel_shard *, void *),
		  void (*out)(struct keel_shard *, void *))
{
	atomic_store(&n->count, 0);
	atomic_store(&n->sum, 0);
	atomic_store(&n->role, 0);
	atomic_store(&n->leader, 0);
	struct keel_runtime_config rc = {.nshards = 1, .synthetic_topology = "pack:1 core:1 pu:1",
					 .node_id = (int)n->id};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_runtime_create(&rc, &n->rt, err), 0, "%s", err);
	cr_assert_eq(keel_runtime_start(n->rt, in, out, n), 0, "%s", keel_runtime_errmsg(n->rt));
	cr_assert_eq(atomic_load(&n->open_rc), 0, "node %u did not open: %s", n->id,
		     keel_strerror(atomic_load(&n->open_rc)));
}

static void stop(struct node *n)
{
	keel_runtime_stop(n->rt);
	keel_runtime_wait(n->rt);
	keel_runtime_destroy(n->rt);
	n->rt = NULL;
}

/* The node all of `ids` follow as leader, once one leads and the rest
 * agree on it and its term; 0 after 20 s. */
static unsigned wait_leader(const unsigned *ids, int k)
{
	for (int i = 0; i < 2000; i++) {
		unsigned lead = 0;
		for (int j = 0; j < k; j++)
			if (atomic_load(&nodes[ids[j]].role) == KEEL_RAFT_LEADER)
				lead = ids[j];
		bool agree = lead != 0;
		for (int j = 0; j < k && agree; j++) {
			struct node *n = &nodes[ids[j]];
			agree = atomic_load(&n->leader) == lead &&
				atomic_load(&n->term) == atomic_load(&nodes[lead].term);
		}
		if (agree)
			return lead;
		usleep(10000);
	}
	return 0;
}

static bool wait_count(const unsigned *ids, int k, uint64_t want)
{
	for (int i = 0; i < 2000; i++) {
		bool all = true;
		for (int j = 0; j < k; j++)
			all = all && atomic_load(&nodes[ids[j]].count) >= want;
		if (all)
			return true;
		usleep(10000);
	}
	return false;
}

static bool wait_atomic(atomic_int *v, int want)
{
	for (int i = 0; i < 2000 && atomic_load(v) < want; i++)
		usleep(10000);
	return atomic_load(v) >= want;
}

/* ---- work posted to a node's shard from the test thread ---------------- */

struct propose_req {
	struct node *n;
	int count;
	char tag[16];
	atomic_int rc; /* first immediate refusal, or 1 when all were accepted */
	atomic_ullong hint;
};

static void prop_done(void *arg, int status, uint64_t index)
{
	struct node *n = arg;
	if (status == 0) {
		atomic_fetch_add(&n->ok, 1);
		if (index > atomic_load(&n->max_ok_index))
			atomic_store(&n->max_ok_index, index);
	} else {
		atomic_fetch_add(&n->failed, 1);
	}
}

static void do_propose(struct keel_shard *on, void *arg)
{
	(void)on;
	struct propose_req *r = arg;
	for (int i = 0; i < r->count; i++) {
		char buf[48];
		int len = snprintf(buf, sizeof(buf), "%s-%d", r->tag, i);
		int rc = keel_group_propose(r->n->g, buf, (size_t)len, prop_done, r->n);
		if (rc < 0) {
			atomic_store(&r->hint, keel_group_leader(r->n->g));
			atomic_store(&r->rc, rc);
			return;
		}
	}
	atomic_store(&r->rc, 1);
}

static int propose(struct node *n, const char *tag, int count, uint64_t *hint)
{
	struct propose_req r = {.n = n, .count = count};
	snprintf(r.tag, sizeof(r.tag), "%s", tag);
	cr_assert_eq(keel_shard_post_external(keel_runtime_shard(n->rt, 0), do_propose, &r), 0);
	for (int i = 0; i < 1000 && atomic_load(&r.rc) == 0; i++)
		usleep(10000);
	if (hint)
		*hint = atomic_load(&r.hint);
	return atomic_load(&r.rc);
}

static void read_done(void *arg, int status, uint64_t index)
{
	struct node *n = arg;
	if (status == 0) {
		atomic_store(&n->read_index, index);
		atomic_fetch_add(&n->reads_ok, 1);
	} else {
		atomic_fetch_add(&n->reads_failed, 1);
	}
}

static void do_read(struct keel_shard *on, void *arg)
{
	(void)on;
	struct node *n = arg;
	if (keel_group_read_barrier(n->g, read_done, n) < 0)
		atomic_fetch_add(&n->reads_failed, 1);
}

/* ---- tests ----------------------------------------------------------- */

TestSuite(group, .init = setup, .fini = teardown, .timeout = 120);

Test(group, elect_commit_read_restart)
{
	const unsigned all[] = {1, 2, 3};
	for (unsigned i = 1; i <= 3; i++) {
		load(&nodes[i], i);
		start(&nodes[i], init, fini);
	}
	unsigned lead = wait_leader(all, 3);
	cr_assert(lead, "no leader elected among three nodes");
	uint64_t term = atomic_load(&nodes[lead].term);

	/* A follower refuses with a hint; the leader commits on all. */
	unsigned follower = lead == 1 ? 2 : 1;
	uint64_t hint = 0;
	int rc = propose(&nodes[follower], "f", 1, &hint);
	cr_assert_eq(rc, KEEL_ENOTLEADER, "follower proposal: %d", rc);
	cr_assert_eq(hint, lead, "leader hint %llu, leader %u", (unsigned long long)hint, lead);
	cr_assert_eq(propose(&nodes[lead], "a", 20, NULL), 1);
	cr_assert(wait_count(all, 3, 20), "20 proposals not applied on all three");
	cr_assert(wait_atomic(&nodes[lead].ok, 20), "proposal callbacks: %d ok, %d failed",
		  atomic_load(&nodes[lead].ok), atomic_load(&nodes[lead].failed));
	cr_assert_eq(atomic_load(&nodes[lead].failed), 0);
	for (unsigned i = 1; i <= 3; i++)
		cr_assert_eq(atomic_load(&nodes[i].sum), atomic_load(&nodes[1].sum),
			     "node %u applied a different sequence", i);

	/* A read barrier on a follower covers every committed write. */
	cr_assert_eq(keel_shard_post_external(keel_runtime_shard(nodes[follower].rt, 0), do_read,
					      &nodes[follower]), 0);
	cr_assert(wait_atomic(&nodes[follower].reads_ok, 1), "read barrier on a follower: %d failed",
		  atomic_load(&nodes[follower].reads_failed));
	cr_assert_geq(atomic_load(&nodes[follower].read_index), atomic_load(&nodes[lead].max_ok_index));
	cr_assert_geq(atomic_load(&nodes[follower].last_index), atomic_load(&nodes[follower].read_index));

	uint64_t sum = atomic_load(&nodes[1].sum);
	for (unsigned i = 1; i <= 3; i++)
		stop(&nodes[i]);

	/* Restart from the WALs: term, vote and log come back. */
	for (unsigned i = 1; i <= 3; i++) {
		start(&nodes[i], init, fini);
		struct node *n = &nodes[i];
		cr_assert_eq(atomic_load(&n->open_term), atomic_load(&n->close_term),
			     "node %u: term %llu after restart, %llu before", i,
			     (unsigned long long)atomic_load(&n->open_term),
			     (unsigned long long)atomic_load(&n->close_term));
		cr_assert_geq(atomic_load(&n->open_term), term);
		cr_assert_eq(atomic_load(&n->open_vote), atomic_load(&n->close_vote), "node %u vote", i);
		cr_assert_geq(atomic_load(&n->open_last), 22, "node %u log ends at %llu", i,
			      (unsigned long long)atomic_load(&n->open_last));
	}
	cr_assert_eq(atomic_load(&nodes[lead].open_vote), lead, "the leader voted for itself");
	lead = wait_leader(all, 3);
	cr_assert(lead, "no leader after the restart");
	cr_assert_gt(atomic_load(&nodes[lead].term), term);
	/* The state machines start empty and see the same 20 entries again,
	 * then 5 new ones. */
	cr_assert(wait_count(all, 3, 20), "the restarted nodes did not re-apply the log");
	cr_assert_eq(propose(&nodes[lead], "b", 5, NULL), 1);
	cr_assert(wait_count(all, 3, 25), "proposals after the restart not applied");
	for (unsigned i = 1; i <= 3; i++)
		cr_assert_eq(atomic_load(&nodes[i].sum), atomic_load(&nodes[lead].sum));
	cr_assert_neq(atomic_load(&nodes[lead].sum), sum);
	for (unsigned i = 1; i <= 3; i++) {
		stop(&nodes[i]);
		keel_node_config_free(&nodes[i].cfg);
	}
}

/* ---- a peer that speaks garbage ----------------------------------------- */

static void raw_up(struct keel_transport *t, struct keel_conn *c)
{
	(void)t;
	if (c->inbound)
		return;
	/* Wrong message type, undecodable bytes, and a well-formed Raft
	 * message that claims to come from node 1. */
	uint8_t junk[64];
	memset(junk, 0xa5, sizeof(junk));
	keel_transport_send(c, 7, junk, sizeof(junk));
	keel_transport_send(c, KEEL_GROUP_MSG_RAFT, junk, sizeof(junk));
	struct keel_raft_msg m = {.type = KEEL_RAFT_MSG_VOTE, .from = 1, .to = c->peer.node,
				  .term = 1000, .index = 1000, .log_term = 1000};
	uint8_t buf[256];
	int len = keel_raft_msg_encode(&m, buf, sizeof(buf));
	if (len > 0)
		keel_transport_send(c, KEEL_GROUP_MSG_RAFT, buf, (uint32_t)len);
}

static void raw_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	(void)t;
	(void)c;
	(void)m;
}

static const struct keel_transport_handlers raw_handlers = {.on_conn_up = raw_up,
							    .on_recv = raw_recv};

static void raw_init(struct keel_shard *shard, void *arg)
{
	struct node *n = arg;
	struct keel_transport_config tc;
	char err[KEEL_ERRMSG_LEN];
	keel_node_config_transport(&n->cfg, 0, &tc);
	tc.shards = 1;
	tc.handlers = &raw_handlers;
	tc.user = n;
	tc.shard = shard;
	int rc = keel_transport_open("tcp", &tc, &n->raw, err);
	struct keel_conn *c;
	if (rc == 0)
		rc = keel_transport_listen(n->raw);
	if (rc == 0)
		rc = keel_transport_connect(n->raw, (struct keel_addr){1, 0}, &c);
	if (rc == 0)
		rc = keel_transport_connect(n->raw, (struct keel_addr){2, 0}, &c);
	if (rc < 0)
		fprintf(stderr, "raw endpoint: %s\n", n->raw ? n->raw->errmsg : err);
	atomic_store(&n->open_rc, rc);
}

static void raw_fini(struct keel_shard *shard, void *arg)
{
	(void)shard;
	struct node *n = arg;
	keel_transport_close(n->raw);
}

static void get_bad(struct keel_shard *on, void *arg)
{
	(void)on;
	struct node *n = arg;
	struct keel_group_stats st;
	keel_group_get_stats(n->g, &st);
	atomic_store(&n->bad_msgs, st.bad_msgs + 1); /* +1: answered */
}

Test(group, bad_peer_dropped)
{
	for (unsigned i = 1; i <= 3; i++)
		load(&nodes[i], i);
	start(&nodes[1], init, fini);
	start(&nodes[2], init, fini);
	start(&nodes[3], raw_init, raw_fini);
	const unsigned two[] = {1, 2};
	unsigned lead = wait_leader(two, 2);
	cr_assert(lead, "nodes 1 and 2 elected no leader next to a garbage peer");
	for (unsigned i = 1; i <= 2; i++) {
		struct node *n = &nodes[i];
		for (int k = 0; k < 500; k++) {
			atomic_store(&n->bad_msgs, 0);
			cr_assert_eq(keel_shard_post_external(keel_runtime_shard(n->rt, 0), get_bad, n), 0);
			while (atomic_load(&n->bad_msgs) == 0)
				usleep(1000);
			if (atomic_load(&n->bad_msgs) - 1 >= 3)
				break;
			usleep(10000);
		}
		cr_assert_geq(atomic_load(&n->bad_msgs) - 1, 3, "node %u counted %llu bad messages", i,
			      (unsigned long long)atomic_load(&n->bad_msgs) - 1);
	}
	/* The spoofed vote for term 1000 was not stepped. */
	cr_assert_lt(atomic_load(&nodes[lead].term), 1000);
	const unsigned two_ids[] = {1, 2};
	cr_assert_eq(propose(&nodes[lead], "c", 5, NULL), 1);
	cr_assert(wait_count(two_ids, 2, 5), "proposals did not commit on the two good nodes");
	for (unsigned i = 1; i <= 3; i++) {
		stop(&nodes[i]);
		keel_node_config_free(&nodes[i].cfg);
	}
}

Test(group, snapshot_install_and_restart)
{
	const unsigned all[] = {1, 2, 3}, two[] = {1, 2};
	for (unsigned i = 1; i <= 3; i++) {
		load(&nodes[i], i);
		nodes[i].snap = true;
	}
	/* Node 3 stays down while 1 and 2 commit 30 entries and compact. */
	start(&nodes[1], init, fini);
	start(&nodes[2], init, fini);
	unsigned lead = wait_leader(two, 2);
	cr_assert(lead, "no leader among nodes 1 and 2");
	cr_assert_eq(propose(&nodes[lead], "s", 30, NULL), 1);
	cr_assert(wait_count(two, 2, 30), "30 proposals not applied on nodes 1 and 2");
	/* Node 3 starts empty; the leader's log no longer reaches back to
	 * index 1: only a snapshot can bring it up to date. */
	start(&nodes[3], init, fini);
	cr_assert(wait_count(all, 3, 30), "node 3 did not catch up");
	cr_assert_geq(atomic_load(&nodes[3].restored), 1, "node 3 caught up without a snapshot");
	cr_assert_geq(atomic_load(&nodes[3].restored_index), 20);
	for (unsigned i = 1; i <= 3; i++)
		cr_assert_eq(atomic_load(&nodes[i].sum), atomic_load(&nodes[lead].sum),
			     "node %u's state differs", i);
	uint64_t sum = atomic_load(&nodes[lead].sum);
	for (unsigned i = 1; i <= 3; i++)
		stop(&nodes[i]);

	/* Restart: each node restores its own snapshot file, then replays
	 * the WAL after it. */
	for (unsigned i = 1; i <= 3; i++) {
		atomic_store(&nodes[i].restored, 0);
		start(&nodes[i], init, fini);
		cr_assert_eq(atomic_load(&nodes[i].restored), 1, "node %u did not restore its snapshot", i);
		cr_assert_geq(atomic_load(&nodes[i].restored_index), 20);
	}
	lead = wait_leader(all, 3);
	cr_assert(lead, "no leader after the restart");
	cr_assert(wait_count(all, 3, 30));
	for (unsigned i = 1; i <= 3; i++)
		cr_assert_eq(atomic_load(&nodes[i].sum), sum, "node %u's state after restart differs", i);
	cr_assert_eq(propose(&nodes[lead], "t", 3, NULL), 1);
	cr_assert(wait_count(all, 3, 33));
	for (unsigned i = 1; i <= 3; i++) {
		stop(&nodes[i]);
		keel_node_config_free(&nodes[i].cfg);
	}
}

/* A damaged snapshot file stops the open with KEEL_ECORRUPT (never a
 * crash, never a silently empty state). */
Test(group, corrupt_snapshot_refused)
{
	struct node *n = &nodes[1];
	load(n, 1);
	n->snap = true;
	char p[256];
	snprintf(p, sizeof(p), "%s", n->wal);
	cr_assert_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/snap", n->wal);
	cr_assert_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/snap/snapshot", n->wal);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "KEELSNP1 but then nothing sensible at all", 41), 41);
	close(fd);
	struct keel_runtime_config rc = {.nshards = 1, .synthetic_topology = "pack:1 core:1 pu:1",
					 .node_id = 1};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_runtime_create(&rc, &n->rt, err), 0, "%s", err);
	cr_assert_eq(keel_runtime_start(n->rt, init, fini, n), 0);
	cr_assert_eq(atomic_load(&n->open_rc), KEEL_ECORRUPT, "open returned %d",
		     atomic_load(&n->open_rc));
	cr_assert_null(n->g);
	stop(n);
	keel_node_config_free(&n->cfg);
}
