/*
 * paxos_internal.h — the Multi-Paxos core's private state, shared by
 * consensus/paxos/paxos_*.c. Everything here is owned by one struct
 * keel_paxos and touched by the one thread that calls the public API.
 *
 *   paxos_core.c      life cycle, the slot window, tick, step, ready/advance
 *   paxos_proposer.c  phase 1 and 2 as proposer, leadership, reads
 *   paxos_acceptor.c  acceptor and learner: PREPARE, ACCEPT, HEARTBEAT,
 *                     LEARN, SNAPSHOT
 *   paxos_codec.c     the wire codec
 */
#ifndef KEEL_PAXOS_INTERNAL_H
#define KEEL_PAXOS_INTERNAL_H

#include "keel/paxos.h"

/* How far past the last slot held (the slot window) or past the merge's
 * first slot (phase 1) a peer's slot number may point. */
#define PX_MAX_AHEAD 65536u
/* The largest slot number a message may carry. */
#define PX_MAX_SLOT (1ull << 62)

/* One slot as this server knows it. */
struct pslot {
	uint64_t ballot;   /* accepted here at (0: nothing) or, learned, its ballot */
	uint32_t type, len;
	uint8_t *data;
	bool has;          /* a value is here (accepted or learned) */
	bool accepted;     /* this acceptor accepted it (not only learned) */
	bool chosen;
	bool durable;      /* the accepted (ballot, value) is persisted */
	bool queued;       /* waits in the unstable list */
	uint32_t acks;     /* leader: voters (bit per index) that accepted at its ballot */
	uint64_t sent_tick;
};

/* Phase 1: the highest-ballot value the promises report for one slot. */
struct pmerge {
	bool has, chosen;
	uint64_t ballot;
	uint32_t type, len;
	uint8_t *data;
};

struct pread {
	uint64_t ctx, index, seq, from;
};

struct keel_paxos {
	struct keel_paxos_config cfg;
	uint64_t id;
	uint32_t self_idx, quorum;
	uint64_t rng;

	/* acceptor */
	uint64_t promised, prev_promised;

	/* proposer / soft state */
	enum keel_paxos_role role, prev_role;
	uint64_t ballot, prev_ballot; /* own when candidate/leader; the leader's otherwise */
	uint64_t leader, prev_leader;
	uint64_t max_round;
	uint64_t ticks;
	uint32_t elapsed, timeout, hb_elapsed, attempts;

	/* slots base+1 .. last */
	struct pslot *slots;
	size_t cap_slots;
	uint64_t base, last;
	uint64_t commit;  /* chosen prefix */
	uint64_t applied; /* acknowledged applied */
	uint64_t *unst;   /* slots whose acceptance waits to be persisted */
	size_t n_unst, cap_unst;

	/* candidate */
	uint32_t promises;
	uint64_t p1_from, max_base;
	struct pmerge *merge; /* slots merge_from .. merge_from + n_merge - 1 */
	uint64_t merge_from;
	size_t n_merge;

	/* leader */
	uint64_t next_slot;  /* next slot to propose in */
	uint64_t flush_from; /* first proposed slot whose ACCEPT is not sent */
	uint32_t active;     /* voters heard from since the last check */

	/* reads */
	uint64_t read_seq;
	bool read_round;
	uint64_t ack_seq[KEEL_PAXOS_MAX_NODES];
	struct pread *preads;
	size_t n_preads, cap_preads;
	struct keel_paxos_read_state *reads;
	size_t n_reads, cap_reads;

	/* snapshot held (taken or installed) */
	struct keel_paxos_snapshot snap;
	uint8_t *snap_buf;
	bool have_snap, pending_install;

	/* outbox: every message owns its values (px_msg_own) */
	struct keel_paxos_msg *out;
	size_t n_out, cap_out;

	/* ready scratch */
	struct keel_paxos_value *rd_acc, *rd_chosen, *scratch;
	size_t cap_acc, cap_chosen, cap_scratch;
};

/* paxos_core.c */
struct pslot *px_slot(const struct keel_paxos *p, uint64_t s);
struct pslot *px_slot_ensure(struct keel_paxos *p, uint64_t s);
int px_slot_set(struct keel_paxos *p, struct pslot *sl, uint64_t ballot, uint32_t type,
		const void *data, uint32_t len);
void px_queue_persist(struct keel_paxos *p, uint64_t s, struct pslot *sl);
void px_advance_commit(struct keel_paxos *p);
void px_compact(struct keel_paxos *p, uint64_t upto);
int px_voter_idx(const struct keel_paxos *p, uint64_t id);
void px_reset_timeout(struct keel_paxos *p);
/* Queues a message; values (n) and the snapshot are copied. */
int px_send(struct keel_paxos *p, const struct keel_paxos_msg *m);
struct keel_paxos_value *px_scratch(struct keel_paxos *p, size_t n);
struct keel_paxos_value px_value_of(uint64_t s, const struct pslot *sl);

/* paxos_codec.c */
int px_msg_own(struct keel_paxos_msg *out, const struct keel_paxos_msg *m);

/* paxos_proposer.c */
void px_campaign(struct keel_paxos *p, bool force);
void px_become_follower(struct keel_paxos *p, uint64_t ballot);
void px_saw_ballot(struct keel_paxos *p, uint64_t b);
void px_handle_promise(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_accepted(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_heartbeat_resp(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_read(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_read_resp(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_leader_tick(struct keel_paxos *p);
void px_flush(struct keel_paxos *p);
void px_slot_acked(struct keel_paxos *p, uint64_t s, struct pslot *sl, uint32_t idx);
void px_reads_drop(struct keel_paxos *p);
int px_push_read(struct keel_paxos *p, uint64_t ctx, uint64_t index);
void px_catch_up(struct keel_paxos *p, uint64_t to, uint64_t their_commit, uint64_t upto);

/* paxos_acceptor.c */
void px_handle_prepare(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_accept(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_heartbeat(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_learn(struct keel_paxos *p, const struct keel_paxos_msg *m);
void px_handle_snapshot(struct keel_paxos *p, const struct keel_paxos_msg *m);
int px_snapshot_store(struct keel_paxos *p, uint64_t index, const void *data, size_t len);

#endif
