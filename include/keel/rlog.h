/*
 * keel/rlog.h — the replicated log: the one interface services (kv, lock)
 * and the CLI see of consensus. A log is one consensus group on one shard:
 * an engine (Raft or Multi-Paxos, chosen by `[log] protocol`)
 * with its WAL, its snapshot store, the shard's endpoint (keel/node.h) and
 * the service's state machine. Nothing here names an engine's types.
 *
 * What a log promises its state machine:
 *   - apply() sees every committed command exactly once per process life,
 *     in order, after it is durable on a quorum and after this node's own
 *     copy is durable; after a restart, again from the snapshot's index + 1
 *     (the state machine is in memory and starts from restore() or empty);
 *   - propose() completes with 0 only after apply() for that command has
 *     returned here (so the proposer can read its own result);
 *   - a read barrier completes with 0 only when every command committed
 *     before the barrier was issued has been applied here: a read served
 *     then is linearizable;
 *   - on_leader() reports every change of known leader or epoch.
 *
 * The engine's collaborators are injected: the WAL's file I/O and the
 * snapshot store's (struct keel_wal_io, keel/wal.h), the transport and the
 * clock (through the endpoint), so the deterministic simulation runs this
 * production code on a fault-injecting disk, the sim transport and a
 * virtual clock.
 *
 * Threads and ownership: a struct keel_rlog belongs to the thread of its
 * endpoint's shard; every call is made there and every callback runs
 * there. The log owns its WAL, its snapshot store and the I/O backends
 * handed to it (it destroys them at close, or at a failed open). The
 * endpoint is borrowed and must outlive the log. Data passed to propose is
 * copied before it returns; pointers handed to apply() and restore() are
 * valid during the call only.
 *
 * Errors: 0 or a negative code (keel/base.h). A malformed message from a
 * peer is dropped with a log line; the log keeps serving. A failed WAL or
 * snapshot write (EIO, ENOSPC) stops the log: it stops answering (it must
 * not acknowledge what is not durable), fails pending requests with
 * KEEL_EDURABLE and calls on_error; the service reports the node unhealthy.
 */
#ifndef KEEL_RLOG_H
#define KEEL_RLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"
#include "keel/wal.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_endpoint;
struct keel_rlog;

/* Most members a log's configuration holds (voters plus learners). */
#define KEEL_RLOG_MAX_MEMBERS 16

enum keel_rlog_role {
	KEEL_RLOG_FOLLOWER = 0,
	KEEL_RLOG_CANDIDATE = 1, /* trying to become leader */
	KEEL_RLOG_LEADER = 2,
	KEEL_RLOG_LEARNER = 3,   /* receives the log, does not vote */
	KEEL_RLOG_REMOVED = 4,   /* not in the configuration (or not yet added) */
};

/* The state machine. apply is required; the rest may be NULL. */
struct keel_rlog_sm {
	/* A committed command (see the promises above). index is the engine's
	 * position (Raft: log index; Paxos: slot), increasing. */
	void (*apply)(void *arg, uint64_t index, const void *data, size_t len);
	/* The whole state as of the last apply, in a malloc'd buffer the log
	 * frees. 0 or a negative code (logged; tried again later). Without
	 * snapshot+restore the log is never compacted. */
	int (*snapshot)(void *arg, void **data, size_t *len);
	/* Replace the whole state by a snapshot's bytes taken at index; the
	 * next apply is index + 1. A negative code stops the log. */
	int (*restore)(void *arg, uint64_t index, const void *data, size_t len);
	/* The known leader or the epoch changed (leader 0: none known; self:
	 * this node leads). */
	void (*on_leader)(void *arg, uint32_t leader, uint64_t epoch, bool self);
	/* The log stopped on an error it cannot recover from. */
	void (*on_error)(void *arg, int code, const char *why);
	void *arg;
};

struct keel_rlog_config {
	const char *protocol;          /* "raft" or "paxos"; NULL: "raft" */
	struct keel_endpoint *ep;      /* this shard's endpoint (borrowed) */
	uint32_t group;                /* the group id in every frame */
	const char *dir;               /* the group's directory: WAL, snap/; created */
	/* I/O: NULL = real files under dir (wal_engine picks io_uring or the
	 * helper thread) and dir/snap; otherwise taken over by the log. */
	struct keel_wal_io *wal_io;
	struct keel_wal_io *snap_io;
	enum keel_wal_engine wal_engine;
	const struct keel_wal_config *wal; /* NULL: defaults */
	/* Founding voters, used only when the log is empty: NULL/0 = every
	 * node of the node config's [peers]. With join, the log starts with no
	 * configuration and waits for a leader to add it. */
	const uint32_t *voters;
	size_t n_voters;
	bool join;
	uint32_t tick_ms;              /* 0: 100 */
	uint32_t election_ticks;       /* 0: 10 (timeouts 10..20 ticks) */
	uint32_t heartbeat_ticks;      /* 0: 1 */
	/* Proposals and reads not answered within this many ticks fail with
	 * KEEL_ETIMEOUT; membership changes get 10 times as long. 0: 50. */
	uint32_t request_timeout_ticks;
	uint32_t snapshot_every;       /* applied commands between snapshots; 0: never */
	uint32_t snapshot_keep;        /* entries kept behind a snapshot; 0: 64 */
	uint64_t seed;                 /* election jitter; 0: from the clock */
	struct keel_rlog_sm sm;
};

/* The engines this build has: "raft", "paxos". */
const char *const *keel_rlog_protocols(void);

/* Opens the group's WAL and snapshot, recovers, joins the endpoint and
 * starts ticking. Returns 0, KEEL_ECONFIG (unknown protocol, bad voters),
 * KEEL_ECORRUPT, -errno... with errmsg. */
int keel_rlog_open(const struct keel_rlog_config *cfg, struct keel_rlog **out, char *errmsg);
/* Leaves the endpoint, waits for a WAL write in flight, fails pending
 * requests with KEEL_ESTOPPED, frees the log. */
void keel_rlog_close(struct keel_rlog *l);
/* For a log whose endpoint has no reactor (the simulation): runs WAL
 * completions. Returns the work done. A no-op with a reactor. */
int keel_rlog_poll(struct keel_rlog *l);

/* A proposal or membership change finished. status 0: committed at index
 * and applied here. Otherwise: KEEL_ENOTLEADER (leadership lost before it
 * was in the log; the status hints who leads), KEEL_ESTALE (another
 * leader's entry took its place: not committed), KEEL_ETIMEOUT (outcome
 * unknown: it may still commit), KEEL_EDURABLE, KEEL_ESTOPPED. */
typedef void keel_rlog_done_fn(void *arg, int status, uint64_t index);
/* A read barrier finished: status 0 = linearizable reads may be served
 * now (index: the barrier's position). Else KEEL_ENOTLEADER, KEEL_ETIMEOUT,
 * KEEL_ESTOPPED, KEEL_EDURABLE. */
typedef void keel_rlog_read_fn(void *arg, int status, uint64_t index);

/* Proposes a command (copied). 0: cb(arg, status, index) runs exactly once
 * later. Otherwise cb never runs: KEEL_ENOTLEADER, KEEL_EBUSY (leadership
 * transfer in progress), KEEL_ETOOBIG, KEEL_EDURABLE (the log failed),
 * KEEL_ESTOPPED, -ENOMEM. */
int keel_rlog_propose(struct keel_rlog *l, const void *data, size_t len, keel_rlog_done_fn *cb,
		      void *arg);
/* A linearizable read barrier; on a follower it asks the leader. 0: cb
 * runs exactly once later. KEEL_ENOTLEADER when no leader is known. */
int keel_rlog_read_barrier(struct keel_rlog *l, keel_rlog_read_fn *cb, void *arg);

/* Membership (leader only). ADD_VOTER is the safe whole path: the node joins
 * as a learner, catches up (by snapshot if the log was compacted), and is
 * promoted once it has the leader's commit index; cb runs when it votes.
 * The others are the single steps. One change at a time per log: a change
 * while another is in progress is KEEL_EBUSY. KEEL_ENOTSUP for an engine
 * without reconfiguration. Removing the leader itself is allowed: it steps
 * down once the change commits. */
enum keel_rlog_member_op {
	KEEL_RLOG_ADD_VOTER = 1,
	KEEL_RLOG_ADD_LEARNER = 2,
	KEEL_RLOG_PROMOTE = 3,
	KEEL_RLOG_REMOVE = 4,
};
int keel_rlog_change_member(struct keel_rlog *l, enum keel_rlog_member_op op, uint32_t node,
			    keel_rlog_done_fn *cb, void *arg);
/* Leadership transfer (leader only): brings `to` up to date and hands over;
 * on_leader reports the outcome. 0 when started; KEEL_ENOTLEADER,
 * KEEL_ENOTFOUND (not a voter), KEEL_EBUSY. */
int keel_rlog_transfer_leader(struct keel_rlog *l, uint32_t to);
/* Starts an election now (an operator's or a test's nudge). */
int keel_rlog_campaign(struct keel_rlog *l);

/* The logs open on an endpoint's shard (on that shard's thread): lookup by
 * group id (NULL when this shard hosts no such group), and a walk in group
 * order; fn's non-zero return stops it and is returned. For the services'
 * and the client port's admin calls (status, membership). */
struct keel_rlog *keel_rlog_lookup(struct keel_endpoint *ep, uint32_t group);
int keel_rlog_foreach(struct keel_endpoint *ep, int (*fn)(void *arg, struct keel_rlog *l),
		      void *arg);
uint32_t keel_rlog_group(const struct keel_rlog *l);

struct keel_rlog_member {
	uint32_t node;
	bool voter;
	/* leader only (else 0/false): how far its log matches the leader's,
	 * and whether it answered recently */
	uint64_t match;
	bool active;
};

struct keel_rlog_status {
	const char *protocol;
	uint32_t group;
	uint32_t self;
	enum keel_rlog_role role;
	uint32_t leader;       /* 0: none known */
	uint64_t epoch;        /* Raft: term; Paxos: ballot round (one proposer per round) */
	uint64_t commit;       /* highest index known committed */
	uint64_t applied;      /* highest index applied here */
	uint64_t last_index;   /* last index in this node's log */
	uint64_t snapshot_index;
	bool failed;           /* stopped on an error (fail_code) */
	int fail_code;
	bool changing;         /* a membership change is in progress */
	bool joint;            /* in a joint configuration */
	uint32_t n_members;
	struct keel_rlog_member members[KEEL_RLOG_MAX_MEMBERS];
};
void keel_rlog_status(const struct keel_rlog *l, struct keel_rlog_status *st);

struct keel_rlog_stats {
	uint64_t msgs_sent, msgs_received;
	uint64_t msgs_dropped;   /* no connection, full queue, too big */
	uint64_t bad_msgs;       /* undecodable, wrong sender */
	uint64_t wal_batches;    /* ready batches that wrote entries */
	uint64_t wal_entries;    /* entries written */
	uint64_t hard_state_saves;
	uint64_t applied;        /* commands applied */
	uint64_t proposals_ok, proposals_failed;
	uint64_t leader_changes;
	uint64_t snapshots_taken, snapshots_installed;
	struct keel_wal_stats wal; /* the group's WAL (zero where it has none) */
};
void keel_rlog_get_stats(const struct keel_rlog *l, struct keel_rlog_stats *st);

/* ---- [log]: a node's replicated-log settings ----------------------------
 *
 *   [log]
 *   protocol = raft          # the engine (keel_rlog_protocols)
 *   groups = 8               # G groups; group g lives on shard g mod S of
 *                            # every node (0 or absent: one per shard)
 *   dir = data               # data directory, relative to the config file's
 *                            # (default data-n<id>); group g uses dir/g<g>
 *   voters = 1,2,3           # founding voters (default: every [peers] node)
 *   join = false             # true: start empty, wait to be added
 *   tick_ms = 100            election_ticks = 10     heartbeat_ticks = 1
 *   request_timeout_ticks = 50
 *   snapshot_every = 10000   # applied commands between snapshots (0: never)
 *   snapshot_keep = 64
 *   segment_size = 64M       # WAL segment (multiple of 4 KiB, >= 16 KiB)
 *   wal_engine = auto        # auto | uring | thread
 *   wal_buffered = false     # true: buffered writes + fdatasync, no O_DIRECT
 *
 * Every node of a cluster must run the same groups and shards. */
struct keel_node_config;
struct keel_rlog_settings {
	char protocol[16];
	uint32_t groups;
	char dir[512];
	uint32_t voters[KEEL_RLOG_MAX_MEMBERS];
	size_t n_voters;          /* 0: every [peers] node */
	bool join;
	uint32_t tick_ms, election_ticks, heartbeat_ticks, request_timeout_ticks;
	uint32_t snapshot_every, snapshot_keep;
	enum keel_wal_engine wal_engine;
	struct keel_wal_config wal;
};
/* Reads the [log] section of nc (defaults for what is absent). 0, or
 * KEEL_ECONFIG with "file:line: [log] key: why" in errmsg. */
int keel_rlog_settings_load(const struct keel_node_config *nc, struct keel_rlog_settings *s,
			    char *errmsg);
/* A log config for group `group` from s: everything but ep and sm. dir
 * points at dirbuf (cap bytes), which must outlive the open call. */
void keel_rlog_settings_config(const struct keel_rlog_settings *s, uint32_t group,
			       char *dirbuf, size_t cap, struct keel_rlog_config *cfg);

const char *keel_rlog_role_name(enum keel_rlog_role role);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_RLOG_H */
