/* Private to consensus/group/: the replicated-log engines' common parts and
 * the Raft engine (the group host).
 *
 *   rlog.c          the engine registry and the keel_rlog_* dispatch
 *   group_queue.c   proposal and read queues with deadlines (engine-neutral)
 *   group_snapshot.c  the snapshot store on a struct keel_wal_io (atomic
 *                   save, load) and the Raft snapshot file codec
 *   group_snapwriter.c  the helper thread that writes snapshot files off
 *                   the shards (one per process, shared by both engines)
 *   group_host.c    the Raft engine: core + WAL + endpoint + state machine
 *   group_net.c     its messages on the endpoint ("raft" type, one group)
 *   group_member.c  its membership changes and leadership transfer
 *
 * Everything runs on the log's shard thread, but the snapshot writer's
 * thread, which touches only its jobs and their stores. */
#ifndef KEEL_GROUP_INTERNAL_H
#define KEEL_GROUP_INTERNAL_H

#include "keel/node.h"
#include "keel/raft.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/wal.h"

/* ---- engines (rlog.c) --------------------------------------------------- */

/* An engine. Its log struct starts with struct keel_rlog. */
struct rlog_engine {
	const char *name;
	int (*open)(const struct keel_rlog_config *cfg, struct keel_rlog **out, char *errmsg);
	void (*close)(struct keel_rlog *l);
	int (*poll)(struct keel_rlog *l);
	int (*propose)(struct keel_rlog *l, const void *data, size_t len, keel_rlog_done_fn *cb,
		       void *arg);
	int (*read_barrier)(struct keel_rlog *l, keel_rlog_read_fn *cb, void *arg);
	int (*change_member)(struct keel_rlog *l, enum keel_rlog_member_op op, uint32_t node,
			     keel_rlog_done_fn *cb, void *arg);
	int (*transfer_leader)(struct keel_rlog *l, uint32_t to);
	int (*campaign)(struct keel_rlog *l);
	void (*status)(const struct keel_rlog *l, struct keel_rlog_status *st);
	void (*stats)(const struct keel_rlog *l, struct keel_rlog_stats *st);
};

struct keel_rlog {
	const struct rlog_engine *engine;
	uint32_t group;            /* set by rlog.c */
	struct keel_endpoint *ep;  /* set by rlog.c */
};

extern const struct rlog_engine rlog_raft_engine;
/* consensus/paxos/paxos_host.c */
extern const struct rlog_engine rlog_paxos_engine;

/* ---- request queues (group_queue.c) -------------------------------------
 * A proposal is queued (not yet given to the engine), then pending (in the
 * log at index/term, waiting to be applied). A read is queued, then waits
 * for its barrier, then for the applied index to reach it. Deadlines are in
 * the engine's ticks. */
struct gprop {
	struct gprop *next;
	keel_rlog_done_fn *cb;
	void *arg;
	uint64_t index, term;
	uint64_t deadline;
	int status; /* while being completed */
	size_t len;
	uint8_t data[];
};

struct gread {
	struct gread *next;
	keel_rlog_read_fn *cb;
	void *arg;
	uint64_t ctx, index, deadline;
	bool have_index;
};

struct gprop_list {
	struct gprop *head, *tail;
};

struct gprop *gprop_new(const void *data, size_t len, keel_rlog_done_fn *cb, void *arg,
			uint64_t deadline);
void gprop_push(struct gprop_list *l, struct gprop *p);
struct gprop *gprop_pop(struct gprop_list *l);
/* Completes (cb + free) every proposal with code. */
void gprop_fail_all(struct gprop_list *l, int code);
/* Completes those at or below index with code (a snapshot covered them). */
void gprop_fail_upto(struct gprop_list *l, uint64_t index, int code);
/* The pending proposal at index leaves the list: status 0 when term
 * matches (our entry), KEEL_ESTALE otherwise (another leader's). Returns
 * how many completed with 0. */
unsigned gprop_complete_at(struct gprop_list *l, uint64_t index, uint64_t term);
/* Completes those whose deadline <= now with KEEL_ETIMEOUT. */
void gprop_expire(struct gprop_list *l, uint64_t now);

void gread_fail_all(struct gread **head, int code);
/* Completes reads whose barrier is known and applied >= their index. */
void gread_complete(struct gread **head, uint64_t applied);
void gread_expire(struct gread **head, uint64_t now);

/* ---- the snapshot store (group_snapshot.c) ------------------------------
 * One file, "snapshot", in the store's directory, replaced atomically
 * (write snapshot.tmp, fdatasync, rename, sync the directory): a crash
 * leaves the old one or the new one. Through a struct keel_wal_io, so the
 * simulation's disk is the fault-injecting one. */
struct snapstore {
	struct keel_wal_io *io;
};
/* Writes hdr then data (len may be 0) as the new snapshot file. Any thread
 * the store's I/O allows (keel_wal_io.background), one at a time. */
int snapstore_save(struct snapstore *s, const void *hdr, size_t hlen, const void *data,
		   size_t len, char *errmsg);
/* 1 with *buf (malloc'd, the caller frees) and *len, 0 when there is none,
 * or a negative code. */
int snapstore_load(struct snapstore *s, uint8_t **buf, size_t *len, char *errmsg);

/* The Raft snapshot file: encode returns bytes written or KEEL_ETOOBIG;
 * encoded_size is exact (0 for an unencodable configuration); decode checks
 * magic, version, lengths and a CRC32C and returns 0 with s->data pointing
 * into buf, or KEEL_ECORRUPT with *why (may be NULL). Pure; fuzzed by
 * tests/fuzz/fuzz_group_snapshot.c. */
size_t keel_group_snapshot_encoded_size(const struct keel_raft_snapshot *s);
int keel_group_snapshot_encode(const struct keel_raft_snapshot *s, uint8_t *buf, size_t cap);
/* The file's header alone (the data follows it; the CRC covers both):
 * returns its length, at most KEEL_GROUP_SNAPSHOT_HDR_MAX. */
#define KEEL_GROUP_SNAPSHOT_HDR_MAX (8 + 4 + 4 + 8 + 8 + 4 + KEEL_RAFT_CONF_ENCODED_MAX + 8)
int keel_group_snapshot_encode_header(const struct keel_raft_snapshot *s, uint8_t *buf,
				      size_t cap);

/* ---- the snapshot writer (group_snapwriter.c) ----------------------------
 * One helper thread per process writes snapshot files (snapstore_save) for
 * the groups of every shard, so that their write and fsyncs leave the
 * shard's thread. A group holds a reference while open (the thread runs
 * while anyone does), submits one job at a time, and hears of its end by
 * done(arg, index, rc, errmsg) run on its shard through a runtime message.
 * Only for a store whose I/O may run on another thread
 * (keel_wal_io.background: the real files) and a group on a shard: the
 * simulations' disk sees every call in order on the caller's thread, so
 * there the hosts save inline, deterministically. */
/* Whether a snapshot is due: applied crossed a multiple of every, shifted
 * by this node's phase (snap_phase). Every node snapshots a group at the
 * same rate, but each at its own offset in [0, every/4]: without it all
 * nodes (and, under an even load, all groups) copy their state in the same
 * second, and a leader and its followers stall together (docs/perf/kv.md).
 * Deterministic (node id and group), so the simulations stay so.
 * KEEL_SNAPSHOT_STAGGER=0 turns it off (0 for everyone), to benchmark. */
uint32_t snap_phase(uint64_t node, uint32_t group, uint32_t every);
static inline bool snap_due(uint64_t applied, uint64_t last, uint32_t every, uint32_t phase)
{
	return every && (applied + phase) / every > (last + phase) / every;
}

struct snapjob;
typedef void snapjob_done_fn(void *arg, uint64_t index, int rc, const char *errmsg);
bool snapwriter_usable(const struct snapstore *st, struct keel_shard *shard);
int snapwriter_ref(char *errmsg);
void snapwriter_unref(void);
/* Queues the write of the snapshot (meta, data[len]). Takes data (malloc'd:
 * the state machine's copy) whatever the outcome. 0 with *job, or a
 * negative code (nothing queued). On shard's thread. */
int snapwriter_submit(struct snapstore *st, struct keel_shard *shard,
		      const struct keel_raft_snapshot_meta *meta, void *data, size_t len,
		      snapjob_done_fn *done, void *arg, struct snapjob **job, char *errmsg);
/* Waits for the job's file I/O to end; its done() will then never run and
 * the job is no longer the caller's. On its shard, before done() ran. */
void snapjob_detach(struct snapjob *job);
int keel_group_snapshot_decode(const uint8_t *buf, size_t len, struct keel_raft_snapshot *s,
			       const char **why);

/* ---- the Raft engine ---------------------------------------------------- */

/* A decoded message waiting for the core (owns its memory). */
struct gin {
	struct gin *next;
	struct keel_raft_msg m;
};

/* A membership change in progress (group_member.c). */
enum gchange_state {
	GC_NONE = 0,
	GC_PROPOSE,  /* propose the conf entry at the next chance */
	GC_COMMIT,   /* proposed at index/term: wait for it to apply */
	GC_CATCHUP,  /* ADD_VOTER: learner added, waiting for it to catch up */
};
struct gchange {
	enum gchange_state state;
	enum keel_rlog_member_op op;   /* what the caller asked */
	enum keel_raft_conf_op step;   /* the core's step now */
	uint32_t node;
	uint64_t index, term;
	uint64_t deadline;
	keel_rlog_done_fn *cb;
	void *arg;
};

struct keel_group {
	struct keel_rlog head;
	struct keel_rlog_config cfg;
	char dir[512];
	struct keel_endpoint *ep;
	struct keel_clock *clock;
	uint16_t raft_type;
	uint32_t id;
	uint32_t tick_ms, req_timeout;
	uint32_t max_entry;
	struct keel_raft *r;
	struct keel_wal *w;
	struct keel_wal_reactor *wr;
	struct keel_timer tick, kick;
	uint64_t ticks;

	/* the batch in flight */
	struct keel_raft_ready rd;
	bool busy, pumping, in_start, wal_done;
	int wal_status;
	bool failed, closing, joined;
	int fail_code;
	struct keel_wal_hard_state saved_hs;
	struct keel_wal_entry *wents;
	size_t wents_cap;

	/* inputs waiting for the core */
	struct gin *in_head, *in_tail;
	size_t in_n;
	uint32_t queued_ticks;
	struct gprop_list queued;  /* proposals not yet given to the core */
	struct gread *rq_head;     /* reads not yet given to the core */
	/* waiting for an answer */
	struct gprop_list pending;
	struct gread *reads;
	uint64_t next_ctx;
	uint64_t applied;

	/* what on_leader last reported */
	enum keel_raft_role role;
	uint64_t term, leader;
	bool role_changed, fail_reads;

	struct gchange change;
	uint32_t transfer_to; /* a transfer asked for while a batch was in flight */

	/* snapshots */
	struct snapstore snap;
	uint64_t snap_index; /* latest snapshot taken (0: none) */
	uint32_t snap_every, snap_keep, snap_phase;
	bool snap_async;            /* files go to the snapshot writer */
	struct keel_shard *shard;   /* where its answers come (snap_async) */
	struct snapjob *snap_job;   /* the write in flight, or NULL */
	uint64_t compact_to;        /* a durable snapshot the WAL has not dropped yet */

	struct keel_log_limit lim;
	struct keel_rlog_stats st;
};

enum group_send_phase {
	GROUP_SEND_ALL,
	GROUP_SEND_EARLY, /* the leader's appends and heartbeats only */
	GROUP_SEND_LATE,  /* everything else */
};

/* group_host.c */
void group_pump(struct keel_group *g);
void group_queue_msg(struct keel_group *g, struct gin *in);
void group_fail(struct keel_group *g, int code, const char *why);

/* group_net.c */
int group_net_open(struct keel_group *g, char *errmsg);
void group_net_close(struct keel_group *g);
void group_send_msgs(struct keel_group *g, const struct keel_raft_ready *rd,
		     enum group_send_phase phase);

/* group_member.c */
int group_change_member(struct keel_rlog *l, enum keel_rlog_member_op op, uint32_t node,
			keel_rlog_done_fn *cb, void *arg);
int group_transfer_leader(struct keel_rlog *l, uint32_t to);
/* After every ready batch and tick: moves a change in progress along. */
void group_change_step(struct keel_group *g);
/* A conf entry was applied at index/term. */
void group_change_applied(struct keel_group *g, uint64_t index, uint64_t term);
void group_change_fail(struct keel_group *g, int code);

#endif
