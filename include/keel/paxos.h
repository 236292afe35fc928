/*
 * keel/paxos.h — the Multi-Paxos core: a pure state machine in the style of
 * the Raft core (keel/raft.h). No I/O, no clock, no threads, no randomness
 * of its own (a seeded PRNG from the config). Citations: Lamport, "Paxos
 * Made Simple" (2001, "PMS"), and Chandra, Griesemer, Redstone, "Paxos Made
 * Live" (2007, "PML").
 *
 * Roles, all in every server: an acceptor (promised ballot, and per slot
 * the accepted (ballot, value)), a learner (chosen values, applied strictly
 * in slot order; out-of-order chosen slots are buffered), and a proposer
 * that becomes the distinguished proposer (the leader, PMS §3) by running
 * phase 1 once for every slot from its first unchosen one, then phase 2
 * per slot. A ballot is (round, node id), packed as round << 16 | node, so
 * two proposers never use the same ballot and a higher round always wins;
 * rounds are also dealt out among the voters (round mod n = the voter's
 * index), so one round names one proposer.
 *
 * A new leader takes, for every open slot reported by a quorum's promises,
 * the value accepted at the highest ballot and proposes it again in its own
 * ballot; slots nobody accepted (holes) get a no-op (PMS §3). Slots a
 * promising acceptor has already compacted into a snapshot are chosen but
 * unknown to the leader: it proposes nothing there and learns them from
 * that acceptor's snapshot. Leader election: followers watch the leader's
 * heartbeats; one that misses them for a randomized timeout in [T, 2T)
 * (longer after each failed attempt: backoff) starts phase 1, and a
 * proposer that sees a higher ballot in a rejection gives up at once, so
 * duelling proposers converge. A follower that heard from a live leader
 * within T refuses to promise (like Raft's §4.2.3) so a server coming back
 * from a partition does not depose a working leader every timeout; a
 * leader that did not hear from a quorum within T steps down.
 *
 * Reads: a quorum round. A read barrier at the leader takes index = the
 * last slot it has proposed and completes once a quorum of acceptors
 * answered a heartbeat sent after the barrier was issued without having
 * promised a higher ballot. Any leader that chose a value before the
 * barrier was issued needed a promise from one of them before that answer,
 * and acceptors never go back on a promise, so no such leader exists: every
 * value chosen before the barrier is at or below index. No clocks, no lease.
 *
 * Inputs:  keel_paxos_step(msg), keel_paxos_tick(), keel_paxos_propose(data),
 *          keel_paxos_read(ctx), keel_paxos_campaign(),
 *          keel_paxos_snapshot_taken().
 * Output:  a ready batch (keel_paxos_ready) — messages, the promised ballot
 *          and accepted values to persist, chosen values to apply, a
 *          snapshot to install, confirmed reads — acknowledged by
 *          keel_paxos_advance().
 *
 * The application loop (one thread):
 *
 *     while (keel_paxos_has_ready(p)) {
 *         struct keel_paxos_ready rd;
 *         keel_paxos_ready(p, &rd);
 *         1. if rd.snapshot: persist it and restore the state machine;
 *            accepted values at or below its index are obsolete.
 *         2. persist rd.promised if rd.promised_changed, then rd.accepted
 *            (slot, ballot, value; slots in any order, a slot may come
 *            again at a higher ballot: a journal, not an array). Durable
 *            before step 3's PROMISE/ACCEPTED messages leave: they promise
 *            this state (PMS §2.3: an acceptor must remember).
 *         3. send rd.msgs. PREPARE, ACCEPT, HEARTBEAT, LEARN and SNAPSHOT
 *            depend on nothing in this batch and may go out during step 2
 *            (the leader counts its own acceptance only after advance).
 *         4. apply rd.chosen in order; serve rd.reads once applied >= index.
 *         5. keel_paxos_advance(p, &rd);
 *     }
 *
 * Ownership: the core copies what it is given (config, boot, proposals,
 * decoded messages' contents, snapshots). Every pointer in a ready batch is
 * the core's and valid until keel_paxos_advance(); no other call may be
 * made on the core between keel_paxos_ready() and keel_paxos_advance().
 *
 * Planted bugs (tests/sim builds copies of consensus/paxos/ with one):
 *   KEEL_PAXOS_BUG_ACCEPT_LOWER   an acceptor accepts a ballot below its promise
 *   KEEL_PAXOS_BUG_SKIP_PHASE1    a new leader proposes without phase 1
 *   KEEL_PAXOS_BUG_NO_REPROPOSE   a new leader fills every open slot with a
 *                                 no-op instead of the accepted value
 *   KEEL_PAXOS_BUG_APPLY_GAP      the learner applies a chosen slot while a
 *                                 lower one is not chosen yet
 */
#ifndef KEEL_PAXOS_H
#define KEEL_PAXOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_PAXOS_NONE 0
#define KEEL_PAXOS_MAX_NODES 16
/* Node ids are below this: they are the low 16 bits of a ballot. */
#define KEEL_PAXOS_MAX_ID 0xffffu

static inline uint64_t keel_paxos_ballot(uint64_t round, uint64_t node)
{
	return round << 16 | (node & KEEL_PAXOS_MAX_ID);
}
static inline uint64_t keel_paxos_ballot_round(uint64_t b)
{
	return b >> 16;
}
static inline uint64_t keel_paxos_ballot_node(uint64_t b)
{
	return b & KEEL_PAXOS_MAX_ID;
}

enum keel_paxos_role {
	KEEL_PAXOS_FOLLOWER = 0,
	KEEL_PAXOS_CANDIDATE = 1, /* phase 1 in progress */
	KEEL_PAXOS_LEADER = 2,    /* phase 1 done: the distinguished proposer */
};

enum keel_paxos_value_type {
	KEEL_PAXOS_VALUE_NORMAL = 0,
	KEEL_PAXOS_VALUE_NOOP = 2, /* a hole filled by a new leader; not applied */
};

/* A value at a slot. ballot: the ballot it was accepted (or proposed) in;
 * chosen: known chosen (PROMISE and LEARN carry it). */
struct keel_paxos_value {
	uint64_t slot;
	uint64_t ballot;
	uint32_t type; /* enum keel_paxos_value_type */
	uint32_t len;
	const uint8_t *data; /* len bytes; NULL when len is 0 */
	bool chosen;
};

struct keel_paxos_config {
	uint64_t id; /* this server, 1..KEEL_PAXOS_MAX_ID */
	uint64_t voters[KEEL_PAXOS_MAX_NODES]; /* every acceptor, self included */
	uint32_t n_voters;
	uint32_t election_tick;  /* failure-detector timeout T, e.g. 10 */
	uint32_t heartbeat_tick; /* < election_tick, e.g. 1 */
	/* Values per ACCEPT/LEARN message up to this many data bytes (always
	 * at least one). 0 = 1 MiB. */
	uint64_t max_msg_bytes;
	uint64_t seed; /* election jitter */
};

struct keel_paxos_snapshot {
	uint64_t index; /* last slot the snapshot covers */
	const uint8_t *data;
	size_t len;
};

enum keel_paxos_msg_type {
	KEEL_PAXOS_MSG_PREPARE = 1,   /* phase 1a: ballot, index = first slot */
	KEEL_PAXOS_MSG_PROMISE = 2,   /* phase 1b: values accepted at >= index */
	KEEL_PAXOS_MSG_ACCEPT = 3,    /* phase 2a: values, commit */
	KEEL_PAXOS_MSG_ACCEPTED = 4,  /* phase 2b: slots index..last */
	KEEL_PAXOS_MSG_HEARTBEAT = 5, /* commit, ctx = read round */
	KEEL_PAXOS_MSG_HEARTBEAT_RESP = 6,
	KEEL_PAXOS_MSG_LEARN = 7,     /* chosen values for a lagging peer */
	KEEL_PAXOS_MSG_SNAPSHOT = 8,  /* a whole snapshot for a peer behind it */
	KEEL_PAXOS_MSG_READ = 9,      /* a follower's read barrier: ctx */
	KEEL_PAXOS_MSG_READ_RESP = 10,
};
#define KEEL_PAXOS_MSG_TYPE_MAX 10

/*
 * One message. Every message carries the sender's ballot (its leader's or
 * its own candidacy's; an acceptor's answer echoes the ballot it answers)
 * and commit = the sender's chosen prefix (every slot up to it is chosen
 * and known to the sender). Fields by type (unused ones are 0):
 *   PREPARE:   index = first slot of phase 1.
 *   PROMISE:   reject (then promised = the higher ballot promised); else
 *              values = every accepted value at slot >= index, base = the
 *              slot up to which the sender compacted (chosen, unknown to
 *              the proposer if above its commit).
 *   ACCEPT:    values (slot and value; their ballot is the message's).
 *   ACCEPTED:  index..last accepted, or reject with promised.
 *   HEARTBEAT: ctx = read round. HEARTBEAT_RESP: ctx echoed; reject with
 *              promised if the acceptor promised higher.
 *   LEARN:     values, all chosen.
 *   SNAPSHOT:  snap_index, snap/snap_len.
 *   READ:      ctx. READ_RESP: ctx, index = read index; reject: not leader.
 * A message decoded by keel_paxos_msg_decode() owns its memory: free it
 * with keel_paxos_msg_free().
 */
struct keel_paxos_msg {
	uint32_t type;
	uint64_t from, to;
	uint64_t ballot;
	uint64_t promised;
	uint64_t index, last;
	uint64_t commit;
	uint64_t base;
	uint64_t ctx;
	bool reject;
	bool force; /* PREPARE from keel_paxos_campaign: promised even in a lease */
	const struct keel_paxos_value *values;
	size_t n_values;
	uint64_t snap_index;
	const uint8_t *snap;
	size_t snap_len;
	void *owned; /* private */
};

/* A confirmed read: once index is applied, a read issued with ctx may be
 * answered linearizably. */
struct keel_paxos_read_state {
	uint64_t ctx;
	uint64_t index;
};

struct keel_paxos_ready {
	const struct keel_paxos_msg *msgs;
	size_t n_msgs;
	bool promised_changed;
	uint64_t promised;
	const struct keel_paxos_value *accepted; /* to persist */
	size_t n_accepted;
	const struct keel_paxos_value *chosen;   /* to apply, ascending slots */
	size_t n_chosen;
	const struct keel_paxos_snapshot *snapshot; /* to install, or NULL */
	const struct keel_paxos_read_state *reads;
	size_t n_reads;
	/* soft state */
	uint64_t leader;
	uint64_t ballot; /* the leader's ballot, or this candidate's */
	enum keel_paxos_role role;
};

/* What the application persisted, handed back at restart. */
struct keel_paxos_boot {
	uint64_t promised;
	const struct keel_paxos_snapshot *snapshot; /* or NULL */
	/* Accepted values in the order they were persisted; for a slot, the
	 * highest ballot wins (a later record of an equal ballot too). Slots
	 * at or below the snapshot are skipped. */
	const struct keel_paxos_value *accepted;
	size_t n_accepted;
	uint64_t applied; /* 0: the snapshot index */
};

struct keel_paxos_status {
	uint64_t id;
	enum keel_paxos_role role;
	uint64_t promised;
	uint64_t ballot;
	uint64_t leader;
	uint64_t commit;  /* chosen prefix */
	uint64_t applied;
	uint64_t base;    /* compacted up to */
	uint64_t last;    /* highest slot with a value here */
	uint64_t snapshot_index;
};

struct keel_paxos;

/* Creates a core; boot may be NULL. Returns 0, KEEL_ECONFIG (errmsg, may
 * be NULL, says why) or -ENOMEM. */
int keel_paxos_create(const struct keel_paxos_config *cfg, const struct keel_paxos_boot *boot,
		      struct keel_paxos **out, char *errmsg);
void keel_paxos_destroy(struct keel_paxos *p);

/* One logical clock tick: failure detector, heartbeats, retransmission. */
void keel_paxos_tick(struct keel_paxos *p);
/* Starts phase 1 now (an operator's or a test's nudge): its PREPAREs are
 * forced, promised also by followers that still hear from a leader, as
 * Raft's TIMEOUT_NOW votes are. KEEL_EBUSY when already leading. */
int keel_paxos_campaign(struct keel_paxos *p);
/* Feeds a peer's message. Messages to another id are dropped (0); an
 * inconsistent one is dropped with KEEL_EPROTO. */
int keel_paxos_step(struct keel_paxos *p, const struct keel_paxos_msg *m);
/* Leader only: proposes data at the next slot (*slot, may be NULL) in the
 * current ballot. The proposal is chosen iff that slot is applied with
 * this ballot (keel_paxos_value.ballot). KEEL_ENOTLEADER, KEEL_ETOOBIG,
 * KEEL_EBADINPUT, -ENOMEM. */
int keel_paxos_propose(struct keel_paxos *p, const void *data, size_t len, uint64_t *slot,
		       uint64_t *ballot);
/* A linearizable read barrier (the quorum round above); a follower asks its
 * leader. A read state with ctx appears in a later ready. KEEL_ENOTLEADER
 * when no leader is known. A lost read never completes: time it out. */
int keel_paxos_read(struct keel_paxos *p, uint64_t ctx);
/* The state machine was snapshotted at applied slot index; the core keeps
 * a copy (to send to peers behind it) and forgets slots up to
 * index - keep. KEEL_EBADINPUT if index > applied or below the last. */
int keel_paxos_snapshot_taken(struct keel_paxos *p, uint64_t index, const void *data,
			      size_t len, uint64_t keep);

bool keel_paxos_has_ready(const struct keel_paxos *p);
void keel_paxos_ready(struct keel_paxos *p, struct keel_paxos_ready *rd);
void keel_paxos_advance(struct keel_paxos *p, const struct keel_paxos_ready *rd);

void keel_paxos_status(const struct keel_paxos *p, struct keel_paxos_status *st);
/* The value this server holds at slot (accepted or chosen), or NULL. Valid
 * until the next mutating call. */
const struct keel_paxos_value *keel_paxos_value_at(const struct keel_paxos *p, uint64_t slot);
/* Every live accepted value (slots above the compaction point), ascending:
 * for the host's journal checkpoint. n set; pointers valid until the next
 * mutating call. */
const struct keel_paxos_value *keel_paxos_accepted_values(struct keel_paxos *p, size_t *n);

/* Binary codec (paxos_codec.c), little-endian, versioned. encoded_size is
 * exact; encode returns bytes written or KEEL_ETOOBIG; decode validates
 * every length and returns 0 with *out owning a private copy, or
 * KEEL_EPROTO/-ENOMEM with *out zeroed. Never reads outside buf. */
size_t keel_paxos_msg_encoded_size(const struct keel_paxos_msg *m);
int keel_paxos_msg_encode(const struct keel_paxos_msg *m, uint8_t *buf, size_t cap);
int keel_paxos_msg_decode(const uint8_t *buf, size_t len, struct keel_paxos_msg *out);
void keel_paxos_msg_free(struct keel_paxos_msg *m);

const char *keel_paxos_msg_type_name(uint32_t type);
const char *keel_paxos_role_name(enum keel_paxos_role role);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_PAXOS_H */
