/*
 * paxos_acceptor.c — the acceptor and the learner (PMS §2.2-2.3).
 *
 * An acceptor promises a ballot in phase 1 and then never accepts a lower
 * one; it accepts a value at a ballot it has not promised against. Both the
 * promise and the acceptance are persisted (the ready batch) before the
 * answer leaves (the host sends PROMISE and ACCEPTED only after the batch is
 * durable). The learner marks a slot chosen when the leader's commit covers
 * it and this acceptor holds the leader's value for it (same ballot: one
 * value per ballot and slot), or when a peer that knows it says so (LEARN,
 * SNAPSHOT); it hands out chosen slots only in slot order (paxos_core.c).
 */
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

static void follow(struct keel_paxos *p, uint64_t ballot)
{
	if (p->role != KEEL_PAXOS_FOLLOWER || p->ballot != ballot)
		px_become_follower(p, ballot);
	else
		p->elapsed = 0;
}

static void learn_upto(struct keel_paxos *p, uint64_t c, uint64_t ballot)
{
	uint64_t hi = c < p->last ? c : p->last;
	for (uint64_t s = p->commit + 1; s <= hi; s++) {
		struct pslot *sl = px_slot(p, s);
		if (sl && sl->accepted && sl->ballot == ballot)
			sl->chosen = true;
	}
	px_advance_commit(p);
}

static void reject(struct keel_paxos *p, uint32_t type, const struct keel_paxos_msg *m)
{
	px_send(p, &(struct keel_paxos_msg){.type = type, .to = m->from, .ballot = m->ballot,
					    .reject = true, .promised = p->promised});
}

void px_handle_prepare(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->ballot < p->promised) {
		reject(p, KEEL_PAXOS_MSG_PROMISE, m);
		return;
	}
	/* A follower that hears from a live leader, and that leader itself,
	 * do not help depose it: a server back from a partition (or whose
	 * failure detector fired spuriously) would otherwise interrupt a
	 * working leader. Refusing a promise is always safe; a leader that
	 * lost its quorum steps down within T and then promises. */
	if (m->ballot > p->promised && !m->force &&
	    (p->role == KEEL_PAXOS_LEADER ||
	     (p->role == KEEL_PAXOS_FOLLOWER && p->leader != KEEL_PAXOS_NONE &&
	      p->leader != m->from && p->elapsed < p->cfg.election_tick)))
		return;
	if (m->ballot > p->promised) {
		p->promised = m->ballot;
		px_become_follower(p, 0);
		p->elapsed = 0; /* give the candidate its chance */
	}
	uint64_t from = m->index > p->base ? m->index : p->base + 1;
	size_t n = 0;
	struct keel_paxos_value *v = px_scratch(p, 1);
	for (uint64_t s = from; s <= p->last && v; s++) {
		struct pslot *sl = px_slot(p, s);
		if (!sl || !sl->has || !(sl->accepted || sl->chosen))
			continue;
		v = px_scratch(p, n + 1);
		if (v)
			v[n++] = px_value_of(s, sl);
	}
	if (!v)
		return; /* out of memory: no promise (the candidate retries) */
	px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_PROMISE, .to = m->from,
					    .ballot = m->ballot, .base = p->base, .values = v,
					    .n_values = n});
	/* Slots it asks about that we compacted are chosen; it learns them
	 * from our snapshot rather than proposing there. */
	if (m->index <= p->base && p->have_snap)
		px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_SNAPSHOT, .to = m->from,
						    .ballot = m->ballot, .snap_index = p->snap.index,
						    .snap = p->snap.data, .snap_len = p->snap.len});
}

void px_handle_accept(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->ballot < p->promised) {
#ifndef KEEL_PAXOS_BUG_ACCEPT_LOWER
		reject(p, KEEL_PAXOS_MSG_ACCEPTED, m);
		return;
#endif
		/* planted: accepted although a higher ballot was promised */
	} else {
		p->promised = m->ballot;
		follow(p, m->ballot);
	}
	struct keel_paxos_value *acks = px_scratch(p, m->n_values ? m->n_values : 1);
	if (!acks)
		return;
	size_t n = 0;
	for (size_t i = 0; i < m->n_values; i++) {
		const struct keel_paxos_value *v = &m->values[i];
		struct pslot *sl = px_slot_ensure(p, v->slot);
		if (sl && !(sl->accepted && sl->ballot == m->ballot)) {
			if (px_slot_set(p, sl, m->ballot, v->type, v->data, v->len) < 0)
				continue; /* not accepted: no answer for it */
			sl->accepted = true;
			px_queue_persist(p, v->slot, sl);
		} else if (!sl && v->slot > p->base) {
			continue; /* out of memory */
		}
		/* at or below our compaction point the slot is chosen, and a
		 * value proposed there now is that value (P2c) */
		acks[n++] = (struct keel_paxos_value){.slot = v->slot, .ballot = m->ballot};
	}
	learn_upto(p, m->commit, m->ballot);
	px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_ACCEPTED, .to = m->from,
					    .ballot = m->ballot, .values = acks, .n_values = n});
}

void px_handle_heartbeat(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->ballot < p->promised) {
		/* a deposed leader learns of the higher ballot and steps down */
		reject(p, KEEL_PAXOS_MSG_HEARTBEAT_RESP, m);
		return;
	}
	p->promised = m->ballot;
	follow(p, m->ballot);
	learn_upto(p, m->commit, m->ballot);
	px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_HEARTBEAT_RESP, .to = m->from,
					    .ballot = m->ballot, .ctx = m->ctx,
					    .index = m->commit});
	/* A leader behind us (it knows fewer chosen slots): help it. */
	if (p->commit > m->commit)
		px_catch_up(p, m->from, m->commit, p->commit);
}

void px_handle_learn(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	for (size_t i = 0; i < m->n_values; i++) {
		const struct keel_paxos_value *v = &m->values[i];
		if (v->slot <= p->commit)
			continue;
		struct pslot *sl = px_slot_ensure(p, v->slot);
		if (!sl || sl->chosen)
			continue;
		/* A value accepted here keeps its ballot (what this acceptor
		 * did); the chosen value replaces it, which is always safe to
		 * report in phase 1: a proposer that picks it picks the one
		 * value that can be chosen. */
		uint64_t b = sl->accepted ? sl->ballot : v->ballot;
		if (px_slot_set(p, sl, b, v->type, v->data, v->len) < 0)
			continue;
		sl->chosen = true;
	}
	px_advance_commit(p);
}

void px_handle_snapshot(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->snap_index <= p->commit)
		return;
	if (px_snapshot_store(p, m->snap_index, m->snap, m->snap_len) < 0)
		return;
	px_compact(p, m->snap_index);
	p->commit = m->snap_index;
	p->pending_install = true;
	px_advance_commit(p);
}
