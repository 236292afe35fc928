/*
 * keel/group.h — the consensus group host (consensus/group/group_host.c): one
 * Raft core (keel/raft.h) tied to a WAL (keel/wal.h), a transport endpoint
 * (keel/transport.h) and a state machine (the apply callback), on one shard.
 *
 * What it does, per shard s of a node:
 *   - opens the node's transport for shard s (the backend the node config
 *     names: tcp, dpdk, ...) and dials shard s of every other voter; a
 *     dialled connection that breaks is redialled with backoff
 *     (keel_transport_backoff_ms). Messages go out on the connection we
 *     dialled and come in on the ones peers dialled. A message to a peer
 *     without a connection, or whose queue is full, is dropped: Raft
 *     retransmits (heartbeats, append retries, new elections).
 *   - ticks the core from a shard timer every tick_ms.
 *   - runs the application loop written at the top of keel/raft.h: hard
 *     state (term, vote) is saved synchronously (keel_wal_save_hard_state)
 *     and entries are appended to the WAL asynchronously (group commit: one
 *     ready batch, one write + fdatasync). While that write is in flight the
 *     leader's APPEND and HEARTBEAT messages already go out (§10.2.1: the
 *     leader may send in parallel with its own write; the core counts its
 *     own log only after advance); every other message (votes, append acks)
 *     waits until the batch is durable, and committed entries are applied
 *     only then. Inputs that arrive meanwhile (messages, ticks, proposals,
 *     reads) are queued and fed to the core after keel_raft_advance().
 *   - recovers at open: the WAL's hard state and entries become the core's
 *     struct keel_raft_boot; the commit index is not persisted, so the state
 *     machine sees every committed entry again, from index 1, once the
 *     leader tells this node the commit index (the state machine is in
 *     memory and starts empty).
 *
 *   - snapshots (§5), when the state machine provides snapshot() and
 *     restore() and snapshot_every is set: after every snapshot_every applied
 *     entries the host asks the state machine for its bytes, hands them to
 *     the core (which keeps snapshot_keep entries behind it for slow
 *     followers and sends the snapshot to those further behind), saves them
 *     to <wal_dir>/snap/snapshot (write, fdatasync, rename) and drops the
 *     WAL segments the snapshot covers. A snapshot from the leader is saved
 *     the same way, restore()d, and replaces the WAL's log. At open a saved
 *     snapshot is restore()d first, then the WAL's entries after it are
 *     replayed. Without snapshot()/restore() the log grows without bound
 *     and a snapshot arriving from a peer stops the group (logged).
 *
 * Not done: membership changes (the voters are the node config's [peers],
 * fixed at bootstrap).
 *
 * Threads and ownership: a struct keel_group belongs to the shard thread
 * that opened it; every function here is called on that thread, and every
 * callback runs on it. The group owns its transport endpoint, its WAL and
 * its core. `node` (the node config) is borrowed and must outlive the group.
 * Data passed to keel_group_propose is copied before it returns. Pointers
 * handed to apply() are valid during the call only.
 *
 * Errors: 0 or a negative code (KEEL_E* / -errno) with keel_strerror(); open
 * explains in errmsg. A malformed message from a peer is dropped with a log
 * line; the group keeps serving. A failed WAL write (EIO, ENOSPC) stops the
 * group: it stops ticking and answering (it must not acknowledge what is not
 * durable), fails pending requests with KEEL_EDURABLE and calls on_error.
 */
#ifndef KEEL_GROUP_H
#define KEEL_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"
#include "keel/raft.h"
#include "keel/wal.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_shard;
struct keel_node_config;
struct keel_group;

/* The transport message type the host sends Raft messages with; other
 * types arriving on the group's connections are dropped with a log line. */
#define KEEL_GROUP_MSG_RAFT 0x5241u

/* A committed normal entry, in log order, exactly once per process life
 * (after a restart, again from the snapshot's index + 1, or from index 1). */
typedef void keel_group_apply_fn(void *arg, uint64_t index, uint64_t term, const void *data,
				 size_t len);
/* Role, term or known leader changed (leader 0: none known). */
typedef void keel_group_role_fn(void *arg, enum keel_raft_role role, uint64_t term,
				uint64_t leader);
/* The group stopped on an error it cannot recover from (WAL failure). */
typedef void keel_group_error_fn(void *arg, int code, const char *why);
/* Snapshot: the state machine's whole state as of the last entry applied,
 * in a malloc'd buffer the host frees. 0 or a negative code (the host logs
 * it and tries again later). */
typedef int keel_group_snapshot_fn(void *arg, void **data, size_t *len);
/* Restore: replace the whole state with a snapshot's bytes (taken at index);
 * the next apply() is index + 1. A negative code stops the group. */
typedef int keel_group_restore_fn(void *arg, uint64_t index, const void *data, size_t len);
/* A proposal finished. status 0: committed at index and applied (apply()
 * for it has returned). Otherwise: KEEL_ENOTLEADER (leadership lost before
 * it could be appended; keel_group_leader() hints who leads), KEEL_ESTALE
 * (another leader's entry took its index: not committed), KEEL_ETIMEOUT
 * (outcome unknown: it may still commit), KEEL_EDURABLE, KEEL_ESTOPPED. */
typedef void keel_group_done_fn(void *arg, int status, uint64_t index);
/* A read barrier finished. status 0: every write committed before the
 * barrier was issued is applied here (index = the read index); a read
 * served now is linearizable. Else KEEL_ENOTLEADER, KEEL_ETIMEOUT,
 * KEEL_ESTOPPED, KEEL_EDURABLE. */
typedef void keel_group_read_fn(void *arg, int status, uint64_t index);

struct keel_group_config {
	struct keel_shard *shard;             /* this thread's shard */
	const struct keel_node_config *node;  /* transport settings; voters = its [peers] */
	const char *wal_dir;                  /* created if missing */
	enum keel_wal_engine wal_engine;      /* AUTO: io_uring, else a helper thread */
	const struct keel_wal_config *wal;    /* NULL: defaults */
	uint32_t tick_ms;                     /* 0: 100 */
	uint32_t election_tick;               /* 0: 10 (timeouts 10..20 ticks) */
	uint32_t heartbeat_tick;              /* 0: 1 */
	/* Proposals and reads not answered within this many ticks fail with
	 * KEEL_ETIMEOUT. 0: 50. */
	uint32_t request_timeout_ticks;
	uint64_t seed;                        /* election jitter; 0: from the clock */
	keel_group_apply_fn *apply;           /* may be NULL */
	keel_group_role_fn *on_role;          /* may be NULL */
	keel_group_error_fn *on_error;        /* may be NULL */
	keel_group_snapshot_fn *snapshot;     /* may be NULL: no snapshots */
	keel_group_restore_fn *restore;       /* may be NULL: none accepted */
	uint32_t snapshot_every;              /* entries between snapshots; 0: never */
	uint32_t snapshot_keep;               /* entries kept behind one; 0: 64 */
	void *arg;                            /* passed to the callbacks above */
};

/* Opens the WAL, recovers the core from it, opens the transport for this
 * shard (listening) and starts dialling peers and ticking. Call on cfg->shard's
 * thread. Returns 0, KEEL_ECONFIG, KEEL_ECORRUPT, -errno... with errmsg. */
int keel_group_open(const struct keel_group_config *cfg, struct keel_group **out, char *errmsg);
/* Stops everything (no callbacks of the transport after this), waits for a
 * WAL write in flight, fails pending proposals and reads with KEEL_ESTOPPED,
 * frees the group. Call on the shard's thread while its reactor still runs
 * or from shard_fini. */
void keel_group_close(struct keel_group *g);

/* Proposes data (copied). 0: cb(arg, status, index) runs exactly once later.
 * Otherwise cb never runs: KEEL_ENOTLEADER (keel_group_leader() hints),
 * KEEL_EBUSY (a leadership transfer), KEEL_ETOOBIG, KEEL_EDURABLE (the
 * group has failed), KEEL_ESTOPPED (called from a callback during
 * keel_group_close), -ENOMEM. */
int keel_group_propose(struct keel_group *g, const void *data, size_t len,
		       keel_group_done_fn *cb, void *arg);
/* A ReadIndex barrier (§6.4); works on followers too (forwarded to the
 * leader). 0: cb runs exactly once later. KEEL_ENOTLEADER when no leader is
 * known. */
int keel_group_read_barrier(struct keel_group *g, keel_group_read_fn *cb, void *arg);
/* Starts an election now (keel_raft_campaign); KEEL_EBUSY if not possible. */
int keel_group_campaign(struct keel_group *g);

enum keel_raft_role keel_group_role(const struct keel_group *g);
uint64_t keel_group_term(const struct keel_group *g);
uint64_t keel_group_leader(const struct keel_group *g); /* 0: none known */
uint64_t keel_group_id(const struct keel_group *g);     /* this node's id */
/* The core's status (commit, applied, last index...). */
void keel_group_status(const struct keel_group *g, struct keel_raft_status *st);

struct keel_group_stats {
	uint64_t msgs_sent, msgs_received;
	uint64_t msgs_dropped;   /* no connection, full queue, too big */
	uint64_t bad_msgs;       /* undecodable, wrong sender, wrong type */
	uint64_t wal_batches;    /* ready batches that wrote entries */
	uint64_t hard_state_saves;
	uint64_t applied;        /* normal entries applied */
	uint64_t reconnects;     /* dials after the first */
	uint64_t snapshots_taken, snapshots_installed;
};
void keel_group_get_stats(const struct keel_group *g, struct keel_group_stats *st);

/* The snapshot file's format (consensus/group/group_snapshot.c; pure, fuzzed).
 * encode returns the bytes written or KEEL_ETOOBIG; encoded_size is exact
 * (0 for an unencodable configuration). decode checks magic, version,
 * lengths against len and a CRC32C, and returns 0 with s->data pointing into
 * buf, or KEEL_ECORRUPT with *why (may be NULL) saying what was wrong. */
size_t keel_group_snapshot_encoded_size(const struct keel_raft_snapshot *s);
int keel_group_snapshot_encode(const struct keel_raft_snapshot *s, uint8_t *buf, size_t cap);
int keel_group_snapshot_decode(const uint8_t *buf, size_t len, struct keel_raft_snapshot *s,
			       const char **why);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_GROUP_H */
