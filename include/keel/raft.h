/*
 * keel/raft.h — the Raft core: a pure state machine in the style of etcd's
 * raft. No I/O, no clock, no threads, no randomness of its own (a seeded
 * PRNG from the config). Citations are to Ongaro's dissertation, "Consensus:
 * Bridging Theory and Practice" (2014).
 *
 * Inputs:  keel_raft_step(msg), keel_raft_tick(), keel_raft_propose(data),
 *          keel_raft_read_index(ctx), keel_raft_propose_conf_change(),
 *          keel_raft_transfer_leadership(), keel_raft_snapshot_taken().
 * Output:  a ready batch (keel_raft_ready) — messages to send, entries and
 *          hard state to persist, committed entries to apply, a snapshot to
 *          install, read states — acknowledged by keel_raft_advance().
 *
 * Storage model (the "core keeps its own log" choice): the core holds the
 * whole log since the last compaction in memory, and knows which suffix of
 * it is not yet durable ("unstable"). The application never serves log reads
 * to the core; it only persists what each ready batch hands it, and on
 * restart hands everything it persisted back in a struct keel_raft_boot.
 *
 * The application loop, one core, one thread:
 *
 *     while (keel_raft_has_ready(r)) {
 *         struct keel_raft_ready rd;
 *         keel_raft_ready(r, &rd);
 *         1. if rd.snapshot: persist it (and restore the state machine from
 *            it); the persisted log before it is obsolete.
 *         2. persist rd.entries: rd.entries[0].index may be <= the last
 *            index persisted earlier (a follower's conflicting suffix was
 *            replaced, §3.5); discard persisted entries from that index on
 *            before appending. Then persist rd.hard_state if
 *            rd.hard_state_changed. Make both durable (fsync).
 *         3. send rd.msgs (only after step 2: a vote or an append ack
 *            promises durable state). The transport copies or encodes them.
 *         4. apply rd.committed in order; serve rd.reads once applied >=
 *            read.index.
 *         5. keel_raft_advance(r, &rd);
 *     }
 *
 * The leader counts its own log toward the commit quorum only for entries
 * acknowledged durable by advance() (§10.2.1 lets it send before its own
 * write finishes; it must not count itself before), so the order above is
 * safe for a crash that loses unsynced writes.
 *
 * Ownership: every pointer inside a struct keel_raft_ready (msgs, their
 * entries and snapshot chunks, entries, committed, snapshot, reads) points
 * into memory the core owns, valid until keel_raft_advance(). Between
 * keel_raft_ready() and keel_raft_advance() the application calls no
 * mutating function on the core (step, tick, propose, read_index,
 * conf change, transfer, snapshot_taken, compact); accessors are fine.
 * Data passed in (propose data, a stepped message and its entries and chunk,
 * snapshot data) is copied: the caller keeps ownership and may free it when
 * the call returns.
 *
 * Errors: 0 or a negative code (KEEL_E* from keel/base.h). A malformed or
 * stale message from a peer is never fatal: step() drops it and returns 0
 * or KEEL_EPROTO; the core stays usable.
 */
#ifndef KEEL_RAFT_H
#define KEEL_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Node ids are non-zero; 0 means "none" (no leader, no vote). */
#define KEEL_RAFT_NONE 0
/* Upper bound on voters and on learners in one configuration; keeps the
 * configuration a fixed-size value that messages and snapshots carry. */
#define KEEL_RAFT_MAX_NODES 16

/* ---- Planted bugs ------------------------------------------------------
 * Compiled only into a second copy of the core built with one of these
 * defines (the simulator's planted-bug tests; consensus/raft/meson.build exports
 * the source list as keel_raft_src). Each breaks exactly one rule, in one
 * place, so the simulator's invariant and linearizability checks must
 * find it. Never defined in libkeel.
 *
 *  KEEL_RAFT_BUG_COMMIT_OLD_TERM  the leader commits any entry stored on a
 *      quorum, including entries of earlier terms (breaks §3.6.2; the
 *      Figure 3.7 scenario overwrites a committed entry).
 *  KEEL_RAFT_BUG_DOUBLE_VOTE  a server grants its vote to every candidate
 *      of a term, not only the first (breaks election safety, §3.4).
 *  KEEL_RAFT_BUG_VOTE_STALE_LOG  a server grants a vote without checking
 *      that the candidate's log is at least as up-to-date (§3.6.1; breaks
 *      leader completeness).
 *  KEEL_RAFT_BUG_READ_NO_QUORUM  ReadIndex answers at once without the
 *      heartbeat round that confirms leadership (§6.4 step 3; a deposed
 *      leader serves stale reads: linearizability breaks).
 * More of the same kind, KEEL_MUTANT_RAFT_* (stale terms, vote
 * persistence, leases, joint consensus, snapshots, commit bounds, apply
 * order), are the mutation suite's: tests/mutants/README.md lists them and
 * the simulator check that must catch each.
 */

enum keel_raft_role {
	KEEL_RAFT_FOLLOWER = 0,
	KEEL_RAFT_PRE_CANDIDATE = 1, /* §9.6: polling before a real election */
	KEEL_RAFT_CANDIDATE = 2,
	KEEL_RAFT_LEADER = 3,
};

enum keel_raft_read_mode {
	/* §6.4: confirm leadership with a heartbeat round per batch of reads. */
	KEEL_RAFT_READ_INDEX = 0,
	/* §6.4.1: serve from the leader's lease, no round trip. Needs
	 * check_quorum (followers then refuse votes while their leader's lease
	 * may still run) and assumes clocks advance at the same rate: ticks on
	 * different servers may drift by at most lease_margin_ticks per
	 * election timeout. */
	KEEL_RAFT_READ_LEASE = 1,
};

/* A configuration: who votes and who only learns (§4, §4.2.1). During a
 * joint-consensus change (§4.3) `outgoing` holds the old voters and
 * decisions (elections, commitment, reads) need a majority of `voters` AND
 * a majority of `outgoing`; n_outgoing is 0 otherwise. */
struct keel_raft_conf {
	uint32_t n_voters;
	uint32_t n_learners;
	uint64_t voters[KEEL_RAFT_MAX_NODES];
	uint64_t learners[KEEL_RAFT_MAX_NODES];
	uint32_t n_outgoing;
	uint64_t outgoing[KEEL_RAFT_MAX_NODES];
};

struct keel_raft_config {
	uint64_t id; /* this server, non-zero */
	/* Bootstrap: used only when keel_raft_create() gets an empty boot (no
	 * snapshot, no entries, term 0). Every founding member is created with
	 * the same initial configuration; the core writes it as entry 1
	 * (term 1, type CONF, committed) so a member added later learns it from
	 * the log. A server created to join an existing cluster passes an empty
	 * configuration (n_voters 0) and waits for the leader to contact it. */
	struct keel_raft_conf initial;
	/* Election timeout in ticks is drawn uniformly from
	 * [election_tick, 2 * election_tick) at every reset (§3.4). */
	uint32_t election_tick;  /* e.g. 10 */
	uint32_t heartbeat_tick; /* e.g. 1; must be < election_tick */
	/* Flow control (§10.2 pipelining): at most this many append messages
	 * and this many entry bytes unacknowledged per follower. 0 = default
	 * (256 messages, 16 MiB). */
	uint32_t max_inflight_msgs;
	uint64_t max_inflight_bytes;
	/* Batching: one append message carries entries up to this many data
	 * bytes (always at least one entry). 0 = default (1 MiB). */
	uint64_t max_msg_bytes;
	/* InstallSnapshot chunk size (§5.3). 0 = default (64 KiB). */
	uint64_t max_snapshot_chunk;
	/* §6.2: a leader that has not heard from a quorum within an election
	 * timeout steps down; followers that heard from a leader within the
	 * minimum election timeout ignore vote requests (§4.2.3). */
	bool check_quorum;
	bool pre_vote; /* §9.6 */
	enum keel_raft_read_mode read_mode;
	/* Lease reads: the lease ends this many ticks before the earliest time
	 * a follower may vote for someone else (clock-drift margin). */
	uint32_t lease_margin_ticks;
	/* Seed of the PRNG that randomizes election timeouts. Give each server
	 * a different seed; the simulator derives them from its own seed. */
	uint64_t seed;
};

enum keel_raft_entry_type {
	KEEL_RAFT_ENTRY_NORMAL = 0,
	/* data is the new configuration, keel_raft_conf_encode()d; it takes
	 * effect on every server as soon as it is appended to its log (§4.1). */
	KEEL_RAFT_ENTRY_CONF = 1,
	/* appended by a new leader to commit an entry of its term (§3.6.2,
	 * §6.4); empty, the application skips it. */
	KEEL_RAFT_ENTRY_NOOP = 2,
};

struct keel_raft_entry {
	uint64_t term;
	uint64_t index;
	uint32_t type; /* enum keel_raft_entry_type */
	uint32_t len;
	const uint8_t *data; /* len bytes; NULL when len is 0 */
};

/* What must be durable before messages that depend on it are sent (§3.8). */
struct keel_raft_hard_state {
	uint64_t term;
	uint64_t vote;
	uint64_t commit;
};

struct keel_raft_snapshot_meta {
	uint64_t index; /* last index the snapshot covers */
	uint64_t term;  /* term of that entry */
	struct keel_raft_conf conf; /* configuration as of index */
};

struct keel_raft_snapshot {
	struct keel_raft_snapshot_meta meta;
	const uint8_t *data;
	size_t len;
};

enum keel_raft_msg_type {
	KEEL_RAFT_MSG_VOTE = 1,         /* RequestVote (§3.4) */
	KEEL_RAFT_MSG_VOTE_RESP = 2,
	KEEL_RAFT_MSG_PREVOTE = 3,      /* §9.6: term is the term it would use */
	KEEL_RAFT_MSG_PREVOTE_RESP = 4,
	KEEL_RAFT_MSG_APPEND = 5,       /* AppendEntries (§3.5) */
	KEEL_RAFT_MSG_APPEND_RESP = 6,
	KEEL_RAFT_MSG_HEARTBEAT = 7,    /* empty AppendEntries, carries commit
					 * and the read/lease round (§6.4) */
	KEEL_RAFT_MSG_HEARTBEAT_RESP = 8,
	KEEL_RAFT_MSG_SNAPSHOT = 9,     /* one InstallSnapshot chunk (§5.3) */
	KEEL_RAFT_MSG_SNAPSHOT_RESP = 10,
	KEEL_RAFT_MSG_TIMEOUT_NOW = 11, /* leadership transfer (§3.10) */
	KEEL_RAFT_MSG_READ_INDEX = 12,  /* follower asks its leader (§6.4) */
	KEEL_RAFT_MSG_READ_INDEX_RESP = 13,
};
#define KEEL_RAFT_MSG_TYPE_MAX 13

/*
 * One message. Fields by type (unused fields are 0):
 *   VOTE/PREVOTE:  index, log_term = candidate's last log index and term;
 *                  force = sent after TIMEOUT_NOW (ignores leader leases).
 *   *_RESP votes:  reject.
 *   APPEND:        index, log_term = previous entry; entries; commit.
 *   APPEND_RESP:   index = last index now matching (accept), or the index
 *                  rejected with reject_hint = receiver's last index.
 *   HEARTBEAT:     commit; ctx = read round; lease_tick = sender's tick
 *                  count when sent. HEARTBEAT_RESP echoes ctx, lease_tick.
 *   SNAPSHOT:      snap (meta), snap_offset, snap_total, chunk, chunk_len,
 *                  snap_done on the last chunk.
 *   SNAPSHOT_RESP: snap.index; snap_offset = next offset wanted; reject if
 *                  the chunk did not fit (then snap_offset says where to
 *                  resume).
 *   READ_INDEX:    ctx = the application's context.
 *   READ_INDEX_RESP: ctx; index = read index; reject if no leader could
 *                  serve it.
 * In a ready batch the pointers are the core's (see the top of this file).
 * A message decoded by keel_raft_msg_decode() or made by
 * keel_raft_msg_clone() owns its memory (`owned`): free it with
 * keel_raft_msg_free().
 */
struct keel_raft_msg {
	uint32_t type; /* enum keel_raft_msg_type */
	uint64_t from;
	uint64_t to;
	uint64_t term;
	uint64_t log_term;
	uint64_t index;
	uint64_t commit;
	bool reject;
	bool force;
	bool snap_done;
	uint64_t reject_hint;
	uint64_t ctx;
	uint64_t lease_tick;
	const struct keel_raft_entry *entries;
	size_t n_entries;
	struct keel_raft_snapshot_meta snap;
	uint64_t snap_offset;
	uint64_t snap_total;
	const uint8_t *chunk;
	size_t chunk_len;
	void *owned; /* private: memory this message owns, or NULL */
};

/* A confirmed read (§6.4): once the state machine has applied index, a read
 * issued with ctx may be answered linearizably. */
struct keel_raft_read_state {
	uint64_t ctx;
	uint64_t index;
};

struct keel_raft_ready {
	const struct keel_raft_msg *msgs;
	size_t n_msgs;
	const struct keel_raft_entry *entries; /* to persist, ascending */
	size_t n_entries;
	bool hard_state_changed;
	struct keel_raft_hard_state hard_state;
	const struct keel_raft_entry *committed; /* to apply, ascending */
	size_t n_committed;
	const struct keel_raft_snapshot *snapshot; /* to install, or NULL */
	const struct keel_raft_read_state *reads;
	size_t n_reads;
	/* Soft state, never persisted: who leads, and this server's role. */
	uint64_t leader;
	enum keel_raft_role role;
};

/* What the application persisted, handed back at restart. */
struct keel_raft_boot {
	struct keel_raft_hard_state hard_state;
	const struct keel_raft_snapshot *snapshot; /* or NULL */
	/* Persisted entries, contiguous and ascending; those at or below the
	 * snapshot index are skipped, the rest must follow it without a gap. */
	const struct keel_raft_entry *entries;
	size_t n_entries;
	/* Highest index the state machine has applied and will not see again
	 * (>= the snapshot index); 0 means the snapshot index. */
	uint64_t applied;
};

struct keel_raft_status {
	uint64_t id;
	enum keel_raft_role role;
	uint64_t term;
	uint64_t vote;
	uint64_t leader;
	uint64_t commit;
	uint64_t applied;
	uint64_t first_index; /* first entry still in the log (snapshot + 1) */
	uint64_t last_index;
	uint64_t snapshot_index;
	uint64_t transferee; /* leadership transfer target, or 0 */
	struct keel_raft_conf conf; /* the latest appended configuration */
};

struct keel_raft;

/* Creates a core. boot may be NULL (a fresh server). The core copies
 * everything from cfg and boot. Returns 0, KEEL_ECONFIG (errmsg says why,
 * errmsg may be NULL) or -ENOMEM. */
int keel_raft_create(const struct keel_raft_config *cfg,
		     const struct keel_raft_boot *boot, struct keel_raft **out,
		     char *errmsg);
void keel_raft_destroy(struct keel_raft *r);

/* One logical clock tick: drives election timeouts, heartbeats, check
 * quorum, lease expiry and transfer timeouts. */
void keel_raft_tick(struct keel_raft *r);

/* Starts an election now (a pre-election first if pre_vote is on), as if
 * the election timeout had fired: etcd's MsgHup, for tests and for an
 * operator who wants this server to lead. KEEL_EBUSY if this server is not
 * a voter (or already leads). */
int keel_raft_campaign(struct keel_raft *r);

/* Feeds a message from a peer (or from the transport's decoder). Messages
 * to another id, from unknown terms or stale rounds are dropped: 0. An
 * inconsistent message (bad type, entries not contiguous) is dropped with
 * KEEL_EPROTO. */
int keel_raft_step(struct keel_raft *r, const struct keel_raft_msg *m);

/* Leader only: appends a normal entry. *index and *term (either may be
 * NULL) say where; the proposal is committed iff an entry with that index
 * and term appears in a ready's committed list. KEEL_ENOTLEADER on a
 * non-leader, KEEL_EBUSY while a leadership transfer is in progress
 * (§3.10), KEEL_ETOOBIG if len exceeds UINT32_MAX, KEEL_EBADINPUT for
 * NULL data with a length. */
int keel_raft_propose(struct keel_raft *r, const void *data, size_t len,
		      uint64_t *index, uint64_t *term);

/* A linearizable read barrier (§6.4). On the leader (or a follower, which
 * forwards it to its leader) a read state with ctx appears in a later ready
 * once leadership is confirmed (or at once under a valid lease, §6.4.1).
 * KEEL_ENOTLEADER when no leader is known (retry later). A read lost with
 * a message or a leader change simply never completes: the application
 * times it out and retries. */
int keel_raft_read_index(struct keel_raft *r, uint64_t ctx);

/* Membership, one server at a time (§4.1, §4.2) — or by joint consensus,
 * keel_raft_propose_conf_joint() below. The leader appends a
 * configuration entry that differs from the current one by one server.
 * Adding a voter that is a learner promotes it; KEEL_EBUSY if that learner
 * has not caught up to the leader's commit index (§4.2.1). Refused with
 * KEEL_EBUSY while another configuration entry is uncommitted, or before
 * the leader has committed an entry of its own term (the fix to the
 * single-server change bug, §4.1 footnote / raft-dev 2015), during a
 * transfer, or while the configuration is joint. Removing the leader
 * itself is allowed: it replicates the entry without counting itself and
 * steps down once it commits (§4.2.2). */
enum keel_raft_conf_op {
	KEEL_RAFT_CONF_ADD_VOTER = 1,
	KEEL_RAFT_CONF_ADD_LEARNER = 2,
	KEEL_RAFT_CONF_REMOVE = 3,
};
int keel_raft_propose_conf_change(struct keel_raft *r, enum keel_raft_conf_op op,
				  uint64_t node, uint64_t *index, uint64_t *term);

/* Joint consensus (§4.3): move to any configuration `target` (its voters
 * and learners; n_outgoing ignored) in two steps. The leader appends
 * C_old,new (voters = target's, outgoing = the current voters); once that
 * commits it appends C_new by itself. Same refusals as above (KEEL_EBUSY
 * while a configuration entry is uncommitted or the configuration is still
 * joint); KEEL_EBADINPUT for an empty or malformed target. A leader that
 * is not in C_new steps down once C_new commits. *index and *term name the
 * C_old,new entry. */
int keel_raft_propose_conf_joint(struct keel_raft *r, const struct keel_raft_conf *target,
				 uint64_t *index, uint64_t *term);

/* Leadership transfer (§3.10): the leader stops taking proposals, brings
 * `to` up to date and sends it TIMEOUT_NOW. Aborts after an election
 * timeout. KEEL_ENOTLEADER, KEEL_ENOTFOUND if `to` is not a voter. */
int keel_raft_transfer_leadership(struct keel_raft *r, uint64_t to);

/* Snapshots and compaction (§5.1). The application snapshots its state
 * machine at an applied index and hands the bytes over; the core copies
 * them (it sends them to followers that fell behind the log, in chunks of
 * max_snapshot_chunk, §5.3) and computes term and configuration at index.
 * Then it discards log entries up to index - keep_entries (keeping a tail
 * lets slow followers catch up from the log instead of a snapshot).
 * KEEL_EBADINPUT if index > applied or below the current snapshot. */
int keel_raft_snapshot_taken(struct keel_raft *r, uint64_t index,
			     const void *data, size_t len, uint64_t keep_entries);
/* Discards entries up to index (<= the snapshot index). */
int keel_raft_compact(struct keel_raft *r, uint64_t index);

bool keel_raft_has_ready(const struct keel_raft *r);
void keel_raft_ready(struct keel_raft *r, struct keel_raft_ready *rd);
/* Acknowledges the batch returned by the last keel_raft_ready(): its
 * entries, hard state and snapshot are durable, its committed entries
 * applied, its messages handed to the transport. */
void keel_raft_advance(struct keel_raft *r, const struct keel_raft_ready *rd);

/* Accessors, for the application and the simulator's invariant checks. */
void keel_raft_status(const struct keel_raft *r, struct keel_raft_status *st);
/* Leader only: how far member id's log is known to match ours (§3.5
 * matchIndex; the leader's own last durable index for itself), and whether
 * it was heard from since the last check-quorum round. 0, KEEL_ENOTLEADER,
 * or KEEL_ENOTFOUND for a server not in the configuration. */
int keel_raft_progress(const struct keel_raft *r, uint64_t id, uint64_t *match, bool *active);
/* The entry at index, or NULL if compacted or past the end. Valid until the
 * next mutating call. */
const struct keel_raft_entry *keel_raft_entry_at(const struct keel_raft *r,
						 uint64_t index);
/* The latest snapshot the core holds (taken or installed), or NULL. */
const struct keel_raft_snapshot *keel_raft_snapshot_get(const struct keel_raft *r);

/* Configuration entry payload. encode returns bytes written or
 * KEEL_ETOOBIG; decode returns 0 or KEEL_EPROTO (never reads past len). */
#define KEEL_RAFT_CONF_ENCODED_MAX (12 + 24 * KEEL_RAFT_MAX_NODES)
int keel_raft_conf_encode(const struct keel_raft_conf *c, uint8_t *buf, size_t cap);
int keel_raft_conf_decode(const uint8_t *buf, size_t len, struct keel_raft_conf *c);
/* A voter of either half of a joint configuration. */
bool keel_raft_conf_is_voter(const struct keel_raft_conf *c, uint64_t id);
bool keel_raft_conf_is_learner(const struct keel_raft_conf *c, uint64_t id);

/* Binary codec for the transport (raft_codec.c), little-endian, versioned.
 * encoded_size is exact. encode returns bytes written, KEEL_ETOOBIG if cap
 * is short. decode validates every length against the buffer and the
 * limits (type range, entry count, sizes, configuration bounds) and returns
 * 0 with *out owning a private copy (free with keel_raft_msg_free), or
 * KEEL_EPROTO/-ENOMEM with *out zeroed; it never reads outside buf. */
size_t keel_raft_msg_encoded_size(const struct keel_raft_msg *m);
int keel_raft_msg_encode(const struct keel_raft_msg *m, uint8_t *buf, size_t cap);
int keel_raft_msg_decode(const uint8_t *buf, size_t len, struct keel_raft_msg *out);
/* Deep copy (entries, data, chunk) into one allocation owned by *out. */
int keel_raft_msg_clone(const struct keel_raft_msg *m, struct keel_raft_msg *out);
void keel_raft_msg_free(struct keel_raft_msg *m);

const char *keel_raft_msg_type_name(uint32_t type);
const char *keel_raft_role_name(enum keel_raft_role role);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_RAFT_H */
