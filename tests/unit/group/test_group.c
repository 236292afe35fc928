/* The replicated log's Raft engine (include/keel/rlog.h) in one process:
 * three nodes, each a keel_node (include/keel/node.h) of one shard with a
 * real TCP endpoint on 127.0.0.1 and a real WAL in a temporary directory. A leader is elected, proposals commit and
 * apply on all three in the same order, reads and refusals behave, and a
 * restart from the WALs keeps term, vote and log. With snapshots on, a node
 * that was down catches up through InstallSnapshot and restarts from its
 * snapshot file. A fourth endpoint that speaks garbage is dropped with log
 * lines while the others keep working. A snapshot whose write hangs does
 * not stop the group (Raft and Paxos). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/node.h"
#include "keel/raft.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/transport.h"
#include "keel/wal.h"

#define TICK_MS 30

struct node {
	unsigned id;
	struct keel_node_config cfg;
	struct keel_node *node;
	struct keel_runtime *rt; /* the node's, or the raw endpoint's own */
	struct keel_rlog *g;
	struct keel_endpoint *ep;
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
	atomic_ullong open_term, open_last;
	atomic_ullong close_term, close_last;
	atomic_ullong bad_msgs;
	bool snap;             /* snapshots on (every 5 entries, 1 kept) */
	bool gated;            /* its snapshot store is the gated one below */
	uint64_t seg_size;     /* WAL segment size; 0: 256 KiB */
	const char *protocol;  /* NULL: raft */
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

static void on_apply(void *arg, uint64_t index, const void *data, size_t len)
{
	struct node *n = arg;
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

static void on_leader(void *arg, uint32_t leader, uint64_t epoch, bool self)
{
	struct node *n = arg;
	atomic_store(&n->term, epoch);
	atomic_store(&n->leader, leader);
	atomic_store(&n->role, self ? KEEL_RAFT_LEADER : KEEL_RAFT_FOLLOWER);
}

/* The vote is the engine's own: read it from the WAL's hard state, with
 * the node stopped. */
static uint64_t wal_vote(struct node *n)
{
	char err[KEEL_ERRMSG_LEN], d[200];
	snprintf(d, sizeof(d), "%s/g0", n->wal);
	struct keel_wal_io *io;
	struct keel_wal *w;
	cr_assert_eq(keel_wal_io_posix_new(&io, d, KEEL_WAL_ENGINE_THREAD, err), 0, "%s", err);
	cr_assert_eq(keel_wal_open(&w, io, NULL, err), 0, "%s", err);
	struct keel_wal_hard_state hs;
	keel_wal_hard_state(w, &hs);
	keel_wal_close(w);
	return hs.vote;
}

static void snapshot_status(struct node *n, atomic_ullong *t, atomic_ullong *l)
{
	struct keel_rlog_status st;
	keel_rlog_status(n->g, &st);
	atomic_store(t, st.epoch);
	atomic_store(l, st.last_index);
}

/* ---- a snapshot store whose fdatasync waits at a gate ------------------
 * The real files (keel_wal_io_posix_new) behind a wrapper that, while the
 * gate is closed, holds every fdatasync of a snapshot file until the test
 * opens it (then each held call returns gate.fail: 0, or an error standing
 * for a disk that failed mid-write), and counts the writing calls made on
 * a shard thread: with the snapshot writer there are none, and a shard
 * whose snapshot is stuck at the gate still commits. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool closed;
	int fail;
	atomic_int held;     /* fdatasyncs waiting at the gate now */
	atomic_int on_shard; /* writing calls made on a shard thread */
	atomic_int syncs;    /* fdatasyncs that went through */
} gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static struct keel_wal_io *IN(struct keel_wal_io *io) { return io->impl; }
static void note_shard(void)
{
	if (keel_shard_self())
		atomic_fetch_add(&gate.on_shard, 1);
}
static int g_open(struct keel_wal_io *io, const char *name, int *flags)
{
	if (*flags & KEEL_WAL_IO_CREATE)
		note_shard();
	return IN(io)->ops->open(IN(io), name, flags);
}
static int g_close(struct keel_wal_io *io, int fd) { return IN(io)->ops->close(IN(io), fd); }
static int64_t g_pread(struct keel_wal_io *io, int fd, void *b, size_t l, uint64_t o)
{
	return IN(io)->ops->pread(IN(io), fd, b, l, o);
}
static int64_t g_pwrite(struct keel_wal_io *io, int fd, const void *b, size_t l, uint64_t o)
{
	note_shard();
	return IN(io)->ops->pwrite(IN(io), fd, b, l, o);
}
static int g_fdatasync(struct keel_wal_io *io, int fd)
{
	note_shard();
	pthread_mutex_lock(&gate.mu);
	int rc = 0;
	if (gate.closed) {
		atomic_fetch_add(&gate.held, 1);
		while (gate.closed)
			pthread_cond_wait(&gate.cv, &gate.mu);
		atomic_fetch_sub(&gate.held, 1);
		rc = gate.fail;
	}
	pthread_mutex_unlock(&gate.mu);
	if (rc)
		return rc;
	atomic_fetch_add(&gate.syncs, 1);
	return IN(io)->ops->fdatasync(IN(io), fd);
}
static int g_fallocate(struct keel_wal_io *io, int fd, uint64_t l)
{
	return IN(io)->ops->fallocate(IN(io), fd, l);
}
static int g_ftruncate(struct keel_wal_io *io, int fd, uint64_t l)
{
	return IN(io)->ops->ftruncate(IN(io), fd, l);
}
static int64_t g_size(struct keel_wal_io *io, int fd) { return IN(io)->ops->size(IN(io), fd); }
static int g_rename(struct keel_wal_io *io, const char *a, const char *b)
{
	note_shard();
	return IN(io)->ops->rename(IN(io), a, b);
}
static int g_unlink(struct keel_wal_io *io, const char *a) { return IN(io)->ops->unlink(IN(io), a); }
static int g_sync_dir(struct keel_wal_io *io)
{
	note_shard();
	return IN(io)->ops->sync_dir(IN(io));
}
static int g_list(struct keel_wal_io *io, int (*fn)(void *, const char *), void *arg)
{
	return IN(io)->ops->list(IN(io), fn, arg);
}
static int g_submit(struct keel_wal_io *io, struct keel_wal_io_req *r)
{
	return IN(io)->ops->submit(IN(io), r);
}
static int g_reap(struct keel_wal_io *io, unsigned m) { return IN(io)->ops->reap(IN(io), m); }
static int g_event_fd(struct keel_wal_io *io) { return IN(io)->ops->event_fd(IN(io)); }
static void g_destroy(struct keel_wal_io *io)
{
	IN(io)->ops->destroy(IN(io));
	free(io);
}
static const struct keel_wal_io_ops gate_ops = {
	.open = g_open, .close = g_close, .pread = g_pread, .pwrite = g_pwrite,
	.fdatasync = g_fdatasync, .fallocate = g_fallocate, .ftruncate = g_ftruncate,
	.size = g_size, .rename = g_rename, .unlink = g_unlink, .sync_dir = g_sync_dir,
	.list = g_list, .submit = g_submit, .reap = g_reap, .event_fd = g_event_fd,
	.destroy = g_destroy};

static int gate_io_new(const char *path, struct keel_wal_io **out, char *errmsg)
{
	struct keel_wal_io *in, *io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	int rc = keel_wal_io_posix_new(&in, path, KEEL_WAL_ENGINE_SYNC, errmsg);
	if (rc < 0) {
		free(io);
		return rc;
	}
	*io = (struct keel_wal_io){.ops = &gate_ops, .impl = in, .engine = "gated",
				   .background = in->background};
	*out = io;
	return 0;
}

static void gate_set(bool closed, int fail)
{
	pthread_mutex_lock(&gate.mu);
	gate.closed = closed;
	gate.fail = fail;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
}

static int init(void *arg, struct keel_node *node, struct keel_endpoint *ep, char *errmsg)
{
	struct node *n = arg;
	(void)node;
	const struct keel_wal_config wc = {.segment_size = n->seg_size ? n->seg_size : 256 * 1024};
	char dir0[200];
	snprintf(dir0, sizeof(dir0), "%s/g0", n->wal);
	struct keel_wal_io *sio = NULL;
	if (n->gated) {
		char sdir[220];
		snprintf(sdir, sizeof(sdir), "%s/snap", dir0);
		mkdir(n->wal, 0700);
		mkdir(dir0, 0700);
		int rc = gate_io_new(sdir, &sio, errmsg);
		if (rc < 0) {
			atomic_store(&n->open_rc, rc);
			fprintf(stderr, "node %u: %s\n", n->id, errmsg);
			return 0;
		}
	}
	struct keel_rlog_config lc = {
		.protocol = n->protocol, .ep = ep, .group = 0, .dir = dir0, .wal = &wc,
		.tick_ms = TICK_MS, .seed = n->id * 7919,
		.snapshot_every = n->snap ? 5 : 0,
		.snapshot_keep = 1,
		.snap_io = sio,
		.sm = {.apply = on_apply, .on_leader = on_leader, .arg = n,
		       .snapshot = n->snap ? on_snapshot : NULL,
		       .restore = n->snap ? on_restore : NULL},
	};
	n->ep = ep;
	/* No cr_assert off the test's thread: report, the test asserts. */
	int rc = keel_rlog_open(&lc, &n->g, errmsg);
	atomic_store(&n->open_rc, rc);
	if (rc < 0) {
		fprintf(stderr, "node %u: %s\n", n->id, errmsg);
		return 0; /* the node runs on; the test looks at open_rc */
	}
	snapshot_status(n, &n->open_term, &n->open_last);
	return 0;
}

static void fini(void *arg, struct keel_node *node, struct keel_endpoint *ep)
{
	struct node *n = arg;
	(void)node;
	(void)ep;
	if (!n->g)
		return;
	snapshot_status(n, &n->close_term, &n->close_last);
	keel_rlog_close(n->g);
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

static void reset(struct node *n)
{
	atomic_store(&n->count, 0);
	atomic_store(&n->sum, 0);
	atomic_store(&n->role, 0);
	atomic_store(&n->leader, 0);
}

static void start(struct node *n)
{
	reset(n);
	static const struct keel_node_options o = {.synthetic_topology = "pack:1 core:1 pu:1"};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_node_create(&n->cfg, &o, &n->node, err), 0, "%s", err);
	const struct keel_node_hooks h = {.start = init, .stop = fini, .arg = n};
	cr_assert_eq(keel_node_start(n->node, &h, err), 0, "%s", err);
	n->rt = keel_node_runtime(n->node);
	cr_assert_eq(atomic_load(&n->open_rc), 0, "node %u did not open: %s", n->id,
		     keel_strerror(atomic_load(&n->open_rc)));
}

/* The garbage-speaking peer: a bare runtime with a raw transport. */
static void start_raw(struct node *n, void (*in)(struct keel_shard *, void *),
		      void (*out)(struct keel_shard *, void *))
{
	reset(n);
	struct keel_runtime_config rc = {.nshards = 1, .synthetic_topology = "pack:1 core:1 pu:1",
					 .node_id = (int)n->id};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_runtime_create(&rc, &n->rt, err), 0, "%s", err);
	cr_assert_eq(keel_runtime_start(n->rt, in, out, n), 0, "%s", keel_runtime_errmsg(n->rt));
}

static void stop(struct node *n)
{
	if (n->node) {
		keel_node_stop(n->node);
		keel_node_wait(n->node);
		keel_node_destroy(n->node);
		n->node = NULL;
	} else {
		keel_runtime_stop(n->rt);
		keel_runtime_wait(n->rt);
		keel_runtime_destroy(n->rt);
	}
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
		int rc = keel_rlog_propose(r->n->g, buf, (size_t)len, prop_done, r->n);
		if (rc < 0) {
			struct keel_rlog_status st;
			keel_rlog_status(r->n->g, &st);
			atomic_store(&r->hint, st.leader);
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
	if (keel_rlog_read_barrier(n->g, read_done, n) < 0)
		atomic_fetch_add(&n->reads_failed, 1);
}

/* ---- tests ----------------------------------------------------------- */

TestSuite(group, .init = setup, .fini = teardown, .timeout = 120);

Test(group, elect_commit_read_restart)
{
	const unsigned all[] = {1, 2, 3};
	for (unsigned i = 1; i <= 3; i++) {
		load(&nodes[i], i);
		start(&nodes[i]);
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
	uint64_t vote[4];
	for (unsigned i = 1; i <= 3; i++) {
		stop(&nodes[i]);
		vote[i] = wal_vote(&nodes[i]);
	}

	/* Restart from the WALs: term, vote and log come back. */
	for (unsigned i = 1; i <= 3; i++) {
		start(&nodes[i]);
		struct node *n = &nodes[i];
		cr_assert_eq(atomic_load(&n->open_term), atomic_load(&n->close_term),
			     "node %u: term %llu after restart, %llu before", i,
			     (unsigned long long)atomic_load(&n->open_term),
			     (unsigned long long)atomic_load(&n->close_term));
		cr_assert_geq(atomic_load(&n->open_term), term);
		cr_assert_geq(atomic_load(&n->open_last), 22, "node %u log ends at %llu", i,
			      (unsigned long long)atomic_load(&n->open_last));
	}
	cr_assert_eq(vote[lead], lead, "the leader voted for itself, and its WAL says so");
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
	uint16_t raft = (uint16_t)keel_msg_type_id("raft");
	memset(junk, 0, 4); /* group 0's envelope, then garbage */
	keel_transport_send(c, raft, junk, sizeof(junk));
	struct keel_raft_msg m = {.type = KEEL_RAFT_MSG_VOTE, .from = 1, .to = c->peer.node,
				  .term = 1000, .index = 1000, .log_term = 1000};
	uint8_t buf[256];
	int len = keel_raft_msg_encode(&m, buf + 4, sizeof(buf) - 4);
	keel_put_le32(buf, 0);
	if (len > 0)
		keel_transport_send(c, raft, buf, (uint32_t)len + 4);
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
	struct keel_rlog_stats st;
	keel_rlog_get_stats(n->g, &st);
	struct keel_endpoint_stats es;
	keel_endpoint_get_stats(n->ep, &es);
	/* the wrong type is the endpoint's to drop; the two bad Raft
	 * frames are the group's */
	atomic_store(&n->bad_msgs, st.bad_msgs + es.unknown_type + 1); /* +1: answered */
}

Test(group, bad_peer_dropped)
{
	for (unsigned i = 1; i <= 3; i++)
		load(&nodes[i], i);
	start(&nodes[1]);
	start(&nodes[2]);
	start_raw(&nodes[3], raw_init, raw_fini);
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
	start(&nodes[1]);
	start(&nodes[2]);
	unsigned lead = wait_leader(two, 2);
	cr_assert(lead, "no leader among nodes 1 and 2");
	cr_assert_eq(propose(&nodes[lead], "s", 30, NULL), 1);
	cr_assert(wait_count(two, 2, 30), "30 proposals not applied on nodes 1 and 2");
	/* Node 3 starts empty; the leader's log no longer reaches back to
	 * index 1: only a snapshot can bring it up to date. */
	start(&nodes[3]);
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
		start(&nodes[i]);
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

/* The lowest first index of the WAL segments of a node's group 0 (the WAL
 * names them by it), UINT64_MAX when there are none. */
static uint64_t oldest_segment(struct node *n)
{
	char d[200];
	snprintf(d, sizeof(d), "%s/g0", n->wal);
	DIR *dd = opendir(d);
	cr_assert(dd, "%s: %s", d, strerror(errno));
	uint64_t low = UINT64_MAX;
	struct dirent *e;
	while ((e = readdir(dd))) {
		unsigned long long first;
		char rest[8];
		if (strlen(e->d_name) == 20 && sscanf(e->d_name, "%16llx%7s", &first, rest) == 2 &&
		    !strcmp(rest, ".seg") && first < low)
			low = first;
	}
	closedir(dd);
	return low;
}

static bool has_snapshot_file(struct node *n)
{
	char p[220];
	struct stat st;
	snprintf(p, sizeof(p), "%s/g0/snap/snapshot", n->wal);
	return stat(p, &st) == 0;
}

/* No stalls (issue 12): a snapshot's file is written and fsynced by the
 * snapshot writer's thread, never the shard's, so a group whose snapshot
 * write hangs (the gate holds its fdatasync) still commits; the WAL keeps
 * its segments until the snapshot is durable and drops them after (Raft:
 * compaction; Paxos: the journal's checkpoint); a write that fails is
 * retried with the next snapshot; a restart restores the file the writer
 * made. Three nodes, 16 KiB segments, 600 entries. */
static void snapshot_off_the_shard(const char *protocol)
{
	const unsigned all[] = {1, 2, 3};
	atomic_store(&gate.on_shard, 0);
	atomic_store(&gate.syncs, 0);
	gate_set(true, -EIO); /* the first write to reach its fdatasync fails */
	for (unsigned i = 1; i <= 3; i++) {
		load(&nodes[i], i);
		nodes[i].snap = nodes[i].gated = true;
		nodes[i].seg_size = 16 * 1024;
		nodes[i].protocol = protocol;
		start(&nodes[i]);
	}
	unsigned lead = wait_leader(all, 3);
	cr_assert(lead, "no leader elected among three nodes");
	for (int k = 0; k < 3; k++)
		cr_assert_eq(propose(&nodes[lead], k == 0 ? "a" : k == 1 ? "b" : "c", 200, NULL), 1);
	cr_assert(wait_count(all, 3, 600),
		  "600 entries not applied on all three while a snapshot write hung "
		  "(applied %llu, %llu, %llu): the shard waits for its snapshot's fdatasync",
		  (unsigned long long)atomic_load(&nodes[1].count),
		  (unsigned long long)atomic_load(&nodes[2].count),
		  (unsigned long long)atomic_load(&nodes[3].count));
	cr_assert_eq(atomic_load(&gate.held), 1, "%d snapshot fdatasyncs at the gate, not one",
		     atomic_load(&gate.held));
	uint64_t before[4];
	for (unsigned i = 1; i <= 3; i++) {
		cr_assert(!has_snapshot_file(&nodes[i]), "node %u has a snapshot file before any "
			  "fdatasync of one returned", i);
		before[i] = oldest_segment(&nodes[i]);
		cr_assert_eq(before[i], 1, "node %u compacted its WAL (oldest segment %llu) before "
			     "a snapshot was durable", i, (unsigned long long)before[i]);
	}

	/* The held write fails; the next snapshots go through. */
	gate_set(false, -EIO);
	for (int t = 0; t < 2000; t++) {
		bool done = true;
		for (unsigned i = 1; i <= 3; i++)
			done = done && has_snapshot_file(&nodes[i]) && oldest_segment(&nodes[i]) > 1;
		if (done)
			break;
		usleep(10000);
	}
	for (unsigned i = 1; i <= 3; i++) {
		cr_assert(has_snapshot_file(&nodes[i]), "node %u wrote no snapshot file", i);
		cr_assert_gt(oldest_segment(&nodes[i]), 1, "node %u did not compact its WAL after "
			     "its snapshot was durable", i);
	}
	cr_assert_geq(atomic_load(&gate.syncs), 3);
	cr_assert_eq(atomic_load(&gate.on_shard), 0,
		     "%d snapshot writes, fsyncs or renames ran on a shard thread",
		     atomic_load(&gate.on_shard));
	uint64_t sum = atomic_load(&nodes[lead].sum);
	for (unsigned i = 1; i <= 3; i++) {
		cr_assert_eq(atomic_load(&nodes[i].sum), sum, "node %u's state differs", i);
		stop(&nodes[i]);
	}

	/* Restart from the writer's files and the compacted WALs. */
	for (unsigned i = 1; i <= 3; i++) {
		atomic_store(&nodes[i].restored, 0);
		start(&nodes[i]);
		cr_assert_eq(atomic_load(&nodes[i].restored), 1, "node %u did not restore its snapshot", i);
		cr_assert_geq(atomic_load(&nodes[i].restored_index), before[i]);
	}
	lead = wait_leader(all, 3);
	cr_assert(lead, "no leader after the restart");
	cr_assert(wait_count(all, 3, 600));
	for (unsigned i = 1; i <= 3; i++)
		cr_assert_eq(atomic_load(&nodes[i].sum), sum, "node %u's state after restart differs", i);
	cr_assert_eq(propose(&nodes[lead], "d", 3, NULL), 1);
	cr_assert(wait_count(all, 3, 603));
	cr_assert_eq(atomic_load(&gate.on_shard), 0);
	for (unsigned i = 1; i <= 3; i++) {
		stop(&nodes[i]);
		keel_node_config_free(&nodes[i].cfg);
	}
}

Test(group, snapshot_written_off_the_shard)
{
	snapshot_off_the_shard("raft");
}

Test(group, paxos_snapshot_written_off_the_shard)
{
	snapshot_off_the_shard("paxos");
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
	snprintf(p, sizeof(p), "%s/g0", n->wal);
	cr_assert_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/g0/snap", n->wal);
	cr_assert_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/g0/snap/snapshot", n->wal);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "KEELSNP1 but then nothing sensible at all", 41), 41);
	close(fd);
	static const struct keel_node_options o = {.synthetic_topology = "pack:1 core:1 pu:1"};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_node_create(&n->cfg, &o, &n->node, err), 0, "%s", err);
	const struct keel_node_hooks h = {.start = init, .stop = fini, .arg = n};
	cr_assert_eq(keel_node_start(n->node, &h, err), 0, "%s", err);
	cr_assert_eq(atomic_load(&n->open_rc), KEEL_ECORRUPT, "open returned %d",
		     atomic_load(&n->open_rc));
	cr_assert_null(n->g);
	stop(n);
	keel_node_config_free(&n->cfg);
}

/* ---- several groups on one shard; membership; transfer ------------------- */

#define MG 4 /* groups per node, all on the node's one shard */

struct mnode {
	unsigned id;
	bool join;
	struct keel_node_config cfg;
	struct keel_node *node;
	struct keel_rlog *g[MG];
	char dirs[MG][200];
	atomic_ullong count[MG], sum[MG];
	atomic_uint leader[MG];
	atomic_int open_rc;
};
static struct mnode mn[5];

static struct mg_arg {
	struct mnode *n;
	unsigned group;
} mga[5][MG];

static void mg_apply(void *arg, uint64_t index, const void *data, size_t len)
{
	struct mg_arg *a = arg;
	atomic_store(&a->n->sum[a->group], fnv64(atomic_load(&a->n->sum[a->group]) ^ index, data, len));
	atomic_fetch_add(&a->n->count[a->group], 1);
}

static int mg_snapshot(void *arg, void **data, size_t *len)
{
	struct mg_arg *a = arg;
	uint64_t *b = malloc(2 * sizeof(uint64_t));
	if (!b)
		return -ENOMEM;
	b[0] = atomic_load(&a->n->count[a->group]);
	b[1] = atomic_load(&a->n->sum[a->group]);
	*data = b;
	*len = 2 * sizeof(uint64_t);
	return 0;
}

static int mg_restore(void *arg, uint64_t index, const void *data, size_t len)
{
	struct mg_arg *a = arg;
	(void)index;
	uint64_t b[2];
	if (len != sizeof(b))
		return KEEL_ECORRUPT;
	memcpy(b, data, sizeof(b));
	atomic_store(&a->n->count[a->group], b[0]);
	atomic_store(&a->n->sum[a->group], b[1]);
	return 0;
}

static void mg_leader(void *arg, uint32_t leader, uint64_t epoch, bool self)
{
	struct mg_arg *a = arg;
	(void)epoch;
	(void)self;
	atomic_store(&a->n->leader[a->group], leader);
}

static int mg_init(void *arg, struct keel_node *node, struct keel_endpoint *ep, char *errmsg)
{
	struct mnode *n = arg;
	(void)node;
	static const struct keel_wal_config wc = {.segment_size = 64 * 1024};
	static const uint32_t founders[] = {1, 2, 3};
	for (unsigned g = 0; g < MG; g++) {
		snprintf(n->dirs[g], sizeof(n->dirs[g]), "%s/m%u/g%u", dir, n->id, g);
		mga[n->id][g] = (struct mg_arg){n, g};
		struct keel_rlog_config lc = {
			.ep = ep, .group = g, .dir = n->dirs[g], .wal = &wc, .tick_ms = TICK_MS,
			.seed = n->id * 131 + g, .voters = founders, .n_voters = 3, .join = n->join,
			.snapshot_every = 8, .snapshot_keep = 2,
			.sm = {.apply = mg_apply, .snapshot = mg_snapshot, .restore = mg_restore,
			       .on_leader = mg_leader, .arg = &mga[n->id][g]},
		};
		int rc = keel_rlog_open(&lc, &n->g[g], errmsg);
		if (rc < 0) {
			atomic_store(&n->open_rc, rc);
			fprintf(stderr, "node %u group %u: %s\n", n->id, g, errmsg);
			return 0;
		}
	}
	return 0;
}

static void mg_fini(void *arg, struct keel_node *node, struct keel_endpoint *ep)
{
	struct mnode *n = arg;
	(void)node;
	(void)ep;
	for (unsigned g = 0; g < MG; g++) {
		keel_rlog_close(n->g[g]);
		n->g[g] = NULL;
	}
}

static void mg_start(unsigned id, bool join)
{
	struct mnode *n = &mn[id];
	char text[512], err[KEEL_ERRMSG_LEN];
	snprintf(text, sizeof(text),
		 "[node]\nid = %u\ncluster = 6\nlisten = 127.0.0.1:%u\nshards = 1\n"
		 "secret_file = secret\nhandshake_timeout_ms = 1000\n[peers]\n1 = 127.0.0.1:%u\n"
		 "2 = 127.0.0.1:%u\n3 = 127.0.0.1:%u\n4 = 127.0.0.1:%u\n",
		 id, base + id * 4, base + 4, base + 8, base + 12, base + 16);
	n->id = id;
	n->join = join;
	cr_assert_eq(keel_node_config_parse(text, "mg.ini", dir, &n->cfg, err), 0, "%s", err);
	static const struct keel_node_options o = {.synthetic_topology = "pack:1 core:1 pu:1"};
	cr_assert_eq(keel_node_create(&n->cfg, &o, &n->node, err), 0, "%s", err);
	const struct keel_node_hooks h = {.start = mg_init, .stop = mg_fini, .arg = n};
	cr_assert_eq(keel_node_start(n->node, &h, err), 0, "%s", err);
	cr_assert_eq(atomic_load(&n->open_rc), 0);
}

static void mg_stop(unsigned id)
{
	struct mnode *n = &mn[id];
	keel_node_stop(n->node);
	keel_node_wait(n->node);
	keel_node_destroy(n->node);
	keel_node_config_free(&n->cfg);
	n->node = NULL;
}

/* A call run on a node's shard: propose, change membership, transfer. */
struct mg_call {
	unsigned id, group, count;
	int what; /* 0 propose, 1 member change, 2 transfer, 3 status */
	enum keel_rlog_member_op op;
	uint32_t node;
	atomic_int rc;       /* immediate result, 1 when accepted */
	atomic_int done;     /* completions */
	atomic_int done_rc;  /* last completion status */
	struct keel_rlog_status st;
};

static void mg_done(void *arg, int status, uint64_t index)
{
	struct mg_call *c = arg;
	(void)index;
	atomic_store(&c->done_rc, status);
	atomic_fetch_add(&c->done, 1);
}

static void mg_run(struct keel_shard *on, void *arg)
{
	(void)on;
	struct mg_call *c = arg;
	struct keel_rlog *l = mn[c->id].g[c->group];
	int rc = 0;
	switch (c->what) {
	case 0:
		for (unsigned i = 0; i < c->count && rc == 0; i++) {
			char buf[32];
			int len = snprintf(buf, sizeof(buf), "g%u-%u", c->group, i);
			rc = keel_rlog_propose(l, buf, (size_t)len, mg_done, c);
		}
		break;
	case 1:
		rc = keel_rlog_change_member(l, c->op, c->node, mg_done, c);
		break;
	case 2:
		rc = keel_rlog_transfer_leader(l, c->node);
		break;
	case 3:
		keel_rlog_status(l, &c->st);
		break;
	}
	atomic_store(&c->rc, rc < 0 ? rc : 1);
}

static int mg_call(struct mg_call *c)
{
	cr_assert_eq(keel_shard_post_external(keel_runtime_shard(keel_node_runtime(mn[c->id].node), 0),
					      mg_run, c), 0);
	for (int i = 0; i < 1000 && atomic_load(&c->rc) == 0; i++)
		usleep(5000);
	return atomic_load(&c->rc);
}

/* The leader, one of ids, that every node in ids agrees on for group g;
 * 0 after 20 s. */
static unsigned mg_leader_of(const unsigned *ids, int k, unsigned g)
{
	for (int i = 0; i < 2000; i++) {
		unsigned l = atomic_load(&mn[ids[0]].leader[g]);
		bool agree = l != 0;
		for (int j = 1; j < k && agree; j++)
			agree = atomic_load(&mn[ids[j]].leader[g]) == l;
		bool member = false;
		for (int j = 0; j < k; j++)
			member |= ids[j] == l;
		if (agree && member)
			return l;
		usleep(10000);
	}
	return 0;
}

static bool mg_wait_count(const unsigned *ids, int k, unsigned g, uint64_t want)
{
	for (int i = 0; i < 2000; i++) {
		bool all = true;
		for (int j = 0; j < k; j++)
			all = all && atomic_load(&mn[ids[j]].count[g]) >= want;
		if (all)
			return true;
		usleep(10000);
	}
	return false;
}

static void mg_propose(unsigned lead, unsigned g, unsigned count)
{
	struct mg_call c = {.id = lead, .group = g, .count = count, .what = 0};
	cr_assert_eq(mg_call(&c), 1, "propose on node %u group %u", lead, g);
	for (int i = 0; i < 2000 && atomic_load(&c.done) < (int)count; i++)
		usleep(5000);
	cr_assert_eq(atomic_load(&c.done), (int)count);
	cr_assert_eq(atomic_load(&c.done_rc), 0);
}

Test(group, many_groups_join_remove_and_transfer)
{
	memset(mn, 0, sizeof(mn));
	const unsigned three[] = {1, 2, 3}, four[] = {1, 2, 3, 4}, last3[] = {2, 3, 4};
	for (unsigned i = 1; i <= 3; i++)
		mg_start(i, false);
	/* every group elects on its own and commits */
	for (unsigned g = 0; g < MG; g++) {
		unsigned lead = mg_leader_of(three, 3, g);
		cr_assert(lead, "group %u elected no leader", g);
		mg_propose(lead, g, 20);
		cr_assert(mg_wait_count(three, 3, g, 20), "group %u did not apply 20 on all", g);
	}
	/* node 4 joins empty; every group adds it: learner, snapshot (the logs
	 * were compacted every 8 entries), promotion */
	mg_start(4, true);
	for (unsigned g = 0; g < MG; g++) {
		unsigned lead = mg_leader_of(three, 3, g);
		struct mg_call c = {.id = lead, .group = g, .what = 1, .op = KEEL_RLOG_ADD_VOTER,
				    .node = 4};
		cr_assert_eq(mg_call(&c), 1, "group %u: add node 4: %d", g, atomic_load(&c.rc));
		for (int i = 0; i < 4000 && !atomic_load(&c.done); i++)
			usleep(5000);
		cr_assert_eq(atomic_load(&c.done_rc), 0, "group %u: adding node 4: %s", g,
			     keel_strerror(atomic_load(&c.done_rc)));
		cr_assert(mg_wait_count(four, 4, g, 20), "node 4 did not catch up in group %u", g);
		struct mg_call s = {.id = 4, .group = g, .what = 3};
		mg_call(&s);
		bool voter = false;
		for (uint32_t i = 0; i < s.st.n_members; i++)
			voter |= s.st.members[i].node == 4 && s.st.members[i].voter;
		cr_assert(voter, "node 4 is not a voter of group %u", g);
		cr_assert_eq(s.st.role == KEEL_RLOG_LEARNER, false);
		/* more writes reach all four */
		mg_propose(lead, g, 5);
		cr_assert(mg_wait_count(four, 4, g, 25));
	}
	/* remove node 1 from every group (it may lead some: it steps down) */
	for (unsigned g = 0; g < MG; g++) {
		unsigned lead = mg_leader_of(four, 4, g);
		struct mg_call c = {.id = lead, .group = g, .what = 1, .op = KEEL_RLOG_REMOVE,
				    .node = 1};
		cr_assert_eq(mg_call(&c), 1, "group %u: remove node 1", g);
		for (int i = 0; i < 4000 && !atomic_load(&c.done); i++)
			usleep(5000);
		cr_assert_eq(atomic_load(&c.done_rc), 0, "group %u: removing node 1: %s", g,
			     keel_strerror(atomic_load(&c.done_rc)));
	}
	mg_stop(1);
	for (unsigned g = 0; g < MG; g++) {
		unsigned lead = mg_leader_of(last3, 3, g);
		cr_assert(lead && lead != 1, "group %u has no leader among 2, 3, 4", g);
		mg_propose(lead, g, 5);
		cr_assert(mg_wait_count(last3, 3, g, 30));
	}
	/* transfer group 0's leadership to whichever of 2..4 does not lead it */
	unsigned lead = mg_leader_of(last3, 3, 0), to = lead == 4 ? 3 : 4;
	struct mg_call t = {.id = lead, .group = 0, .what = 2, .node = to};
	cr_assert_eq(mg_call(&t), 1, "transfer: %d", atomic_load(&t.rc));
	for (int i = 0; i < 2000 && mg_leader_of(last3, 3, 0) != to; i++)
		usleep(10000);
	cr_assert_eq(mg_leader_of(last3, 3, 0), to, "leadership did not move to node %u", to);
	mg_propose(to, 0, 3);
	cr_assert(mg_wait_count(last3, 3, 0, 33));
	/* nothing lost, everyone agrees */
	for (unsigned g = 0; g < MG; g++)
		for (int j = 0; j < 3; j++)
			cr_assert_eq(atomic_load(&mn[last3[j]].sum[g]), atomic_load(&mn[2].sum[g]),
				     "node %u differs in group %u", last3[j], g);
	for (unsigned i = 2; i <= 4; i++)
		mg_stop(i);
}
