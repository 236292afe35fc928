/*
 * paxos_proposer.c — the proposer: phase 1 for every slot from the first
 * unchosen one (PMS §3: "phase 1 for infinitely many instances" with one
 * message), phase 2 per slot, the distinguished proposer's heartbeats,
 * retransmission, catch-up of peers behind it, and the read barrier's
 * quorum round (keel/paxos.h says why it is linearizable).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

/* Unchosen slots re-sent per heartbeat, and after how many ticks. */
#define RESEND_MAX 256
#define RESEND_TICKS 3

static uint32_t popcount(uint32_t x)
{
	return (uint32_t)__builtin_popcount(x);
}

void px_saw_ballot(struct keel_paxos *p, uint64_t b)
{
	uint64_t r = keel_paxos_ballot_round(b);
	if (r > p->max_round)
		p->max_round = r;
}

void px_reads_drop(struct keel_paxos *p)
{
	/* Reads in a round of a lost leadership never complete here; the
	 * host times them out (or fails them on the role change). */
	p->n_preads = 0;
	p->read_round = false;
}

static void merge_free(struct keel_paxos *p)
{
	for (size_t i = 0; i < p->n_merge; i++)
		free(p->merge[i].data);
	free(p->merge);
	p->merge = NULL;
	p->n_merge = 0;
}

/* A follower of the proposer of ballot (leader unknown when 0). */
void px_become_follower(struct keel_paxos *p, uint64_t ballot)
{
	if (p->role != KEEL_PAXOS_FOLLOWER) {
		if (p->role == KEEL_PAXOS_LEADER) {
			keel_debug("paxos %llu: leader at ballot %llx steps down (promised %llx, follows %llx)",
				   (unsigned long long)p->id, (unsigned long long)p->ballot,
				   (unsigned long long)p->promised, (unsigned long long)ballot);
			px_reads_drop(p);
		}
		merge_free(p);
		p->role = KEEL_PAXOS_FOLLOWER;
	}
	p->ballot = ballot;
	p->leader = ballot ? keel_paxos_ballot_node(ballot) : KEEL_PAXOS_NONE;
	if (ballot)
		p->attempts = 0; /* a leader is back: no more backoff */
	px_reset_timeout(p);
}

static int merge_value(struct keel_paxos *p, const struct keel_paxos_value *v)
{
	/* Slots at or below a promiser's compaction point are chosen and come
	 * from its snapshot: the merge starts above them, and moves up when a
	 * promise raises max_base. */
	uint64_t from = p->max_base + 1 > p->p1_from ? p->max_base + 1 : p->p1_from;
	if (p->merge_from < from) {
		size_t drop = from - p->merge_from < p->n_merge ? (size_t)(from - p->merge_from)
								   : p->n_merge;
		for (size_t i = 0; i < drop; i++)
			free(p->merge[i].data);
		if (p->n_merge > drop)
			memmove(p->merge, p->merge + drop, (p->n_merge - drop) * sizeof(*p->merge));
		p->n_merge -= drop;
		p->merge_from = from;
	}
	if (v->slot < from)
		return 0;
	/* A promise may not name a slot this far ahead: it does not count
	 * (ignoring the value would be unsafe, refusing the promise is not). */
	if (v->slot - from >= PX_MAX_AHEAD)
		return KEEL_EPROTO;
	size_t i = (size_t)(v->slot - p->merge_from);
	if (i >= p->n_merge) {
		size_t n = i + 1;
		struct pmerge *m = realloc(p->merge, n * sizeof(*m));
		if (!m)
			return -ENOMEM;
		memset(m + p->n_merge, 0, (n - p->n_merge) * sizeof(*m));
		p->merge = m;
		p->n_merge = n;
	}
	struct pmerge *m = &p->merge[i];
	if (m->chosen)
		return 0;
	/* PMS §2.2 (P2c): the value of the highest-numbered proposal among
	 * the quorum's; a value known chosen beats everything. */
	if (m->has && !v->chosen && m->ballot >= v->ballot)
		return 0;
	uint8_t *d = NULL;
	if (v->len) {
		d = malloc(v->len);
		if (!d)
			return -ENOMEM;
		memcpy(d, v->data, v->len);
	}
	free(m->data);
	*m = (struct pmerge){.has = true, .chosen = v->chosen, .ballot = v->ballot,
			     .type = v->type, .len = v->len, .data = d};
	return 0;
}

/* Phase 2a for slot s at our ballot: accepted here first (persisted by the
 * next ready), sent to the others by px_flush. */
static int propose_at(struct keel_paxos *p, uint64_t s, uint32_t type, const void *data,
		      uint32_t len)
{
	struct pslot *sl = px_slot_ensure(p, s);
	if (!sl)
		return -ENOMEM;
	int rc = px_slot_set(p, sl, p->ballot, type, data, len);
	if (rc)
		return rc;
	sl->accepted = true;
	sl->chosen = false;
	sl->acks = 0;
	sl->sent_tick = p->ticks;
	px_queue_persist(p, s, sl);
	if (s < p->flush_from)
		p->flush_from = s;
	return 0;
}

static void become_leader(struct keel_paxos *p)
{
	p->role = KEEL_PAXOS_LEADER;
	p->leader = p->id;
	p->active = 1u << p->self_idx;
	p->elapsed = p->hb_elapsed = 0;
	p->attempts = 0;
	memset(p->ack_seq, 0, sizeof(p->ack_seq));
	uint64_t top = p->last;
	if (p->n_merge && p->merge_from + p->n_merge - 1 > top)
		top = p->merge_from + p->n_merge - 1;
	if (p->max_base > top)
		top = p->max_base;
	if (p->commit > top)
		top = p->commit;
	p->next_slot = top + 1;
	p->flush_from = p->next_slot;
	for (uint64_t s = p->commit + 1 > p->p1_from ? p->commit + 1 : p->p1_from; s <= top; s++) {
		struct pslot *sl = px_slot(p, s);
		if (s <= p->commit || (sl && sl->chosen))
			continue;
		/* Chosen by a quorum that compacted it; learned from its
		 * snapshot (the acceptor sent it with its promise). */
		if (s <= p->max_base) {
			s = p->max_base;
			continue;
		}
		struct pmerge *m = s >= p->merge_from && s - p->merge_from < p->n_merge
					   ? &p->merge[s - p->merge_from]
					   : NULL;
		if (m && m->chosen) {
			/* chosen: learned, nothing to propose */
			sl = px_slot_ensure(p, s);
			if (sl && px_slot_set(p, sl, m->ballot, m->type, m->data, m->len) == 0)
				sl->chosen = true;
			continue;
		}
#ifdef KEEL_PAXOS_BUG_NO_REPROPOSE
		/* planted: the accepted value is dropped, the slot gets a no-op */
		m = NULL;
#endif
		if (m && m->has)
			propose_at(p, s, m->type, m->data, m->len);
		else
			propose_at(p, s, KEEL_PAXOS_VALUE_NOOP, NULL, 0); /* a hole: PMS §3 */
	}
	merge_free(p);
	px_advance_commit(p);
	keel_debug("paxos %llu: leader at ballot %llx, slots %llu..%llu re-proposed",
		   (unsigned long long)p->id, (unsigned long long)p->ballot,
		   (unsigned long long)p->p1_from, (unsigned long long)top);
	/* announce at once: followers stop their failure detectors */
	p->read_round = true;
}

/* A quorum but us promised: our own acceptor promises too, unless it
 * promised a higher ballot meanwhile, and its state joins the merge. The
 * promise is persisted (hard state, first in the next batch) before any
 * ACCEPT of this ballot leaves. */
static void try_lead(struct keel_paxos *p)
{
	if (p->promised > p->ballot) {
		px_become_follower(p, 0);
		return;
	}
	p->promised = p->ballot;
	p->promises |= 1u << p->self_idx;
	for (uint64_t s = p->p1_from; s <= p->last; s++) {
		struct pslot *sl = px_slot(p, s);
		if (sl && sl->has && (sl->accepted || sl->chosen)) {
			struct keel_paxos_value v = px_value_of(s, sl);
			if (merge_value(p, &v) < 0) {
				px_become_follower(p, 0);
				return;
			}
		}
	}
	become_leader(p);
}

void px_campaign(struct keel_paxos *p, bool force)
{
	if (p->role == KEEL_PAXOS_LEADER)
		px_reads_drop(p);
	merge_free(p);
	uint64_t round = p->max_round;
	if (keel_paxos_ballot_round(p->promised) > round)
		round = keel_paxos_ballot_round(p->promised);
	/* Rounds are dealt out among the voters (round mod n = the voter's
	 * index), so one round names one proposer: the epoch the host
	 * reports identifies a leadership, as a Raft term does. */
	round++;
	while (round % p->cfg.n_voters != p->self_idx)
		round++;
	p->max_round = round;
	p->ballot = keel_paxos_ballot(round, p->id);
	keel_debug("paxos %llu: phase 1 at ballot %llx from slot %llu%s (elapsed %u of %u)",
		   (unsigned long long)p->id, (unsigned long long)p->ballot,
		   (unsigned long long)p->commit + 1, force ? ", forced" : "", p->elapsed, p->timeout);
	p->role = KEEL_PAXOS_CANDIDATE;
	p->leader = KEEL_PAXOS_NONE;
	p->attempts++;
	px_reset_timeout(p);
	p->p1_from = p->commit + 1;
	p->max_base = p->base;
	p->merge_from = p->p1_from;
	/* Our own acceptor promises last (try_lead): a candidate the others
	 * ignore (they hear from a live leader) has then promised nothing,
	 * and the leader's next ACCEPT is not refused here. Raising our own
	 * promise first would depose a working leader every time a follower
	 * timed out spuriously (what Raft's pre-vote prevents). */
	p->promises = 0;
#ifdef KEEL_PAXOS_BUG_SKIP_PHASE1
	/* planted: leads at once with only its own acceptor's knowledge */
	try_lead(p);
	return;
#endif
	for (uint32_t i = 0; i < p->cfg.n_voters; i++) {
		if (i == p->self_idx)
			continue;
		px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_PREPARE,
						    .to = p->cfg.voters[i], .ballot = p->ballot,
						    .index = p->p1_from, .force = force});
	}
	if (popcount(p->promises) + 1 >= p->quorum)
		try_lead(p);
}

void px_handle_promise(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->reject) {
		if (p->role != KEEL_PAXOS_LEADER && m->promised > p->ballot &&
		    m->ballot == p->ballot && p->role == KEEL_PAXOS_CANDIDATE)
			px_become_follower(p, 0); /* a higher ballot is out there: back off */
		return;
	}
	if (p->role != KEEL_PAXOS_CANDIDATE || m->ballot != p->ballot)
		return;
	int idx = px_voter_idx(p, m->from);
	if (m->base > p->max_base)
		p->max_base = m->base;
	for (size_t i = 0; i < m->n_values; i++)
		if (merge_value(p, &m->values[i]) < 0)
			return; /* out of memory: this promise does not count */
	p->promises |= 1u << idx;
	if (popcount(p->promises) + 1 >= p->quorum)
		try_lead(p);
}

/* ---- phase 2 ------------------------------------------------------------------ */

void px_slot_acked(struct keel_paxos *p, uint64_t s, struct pslot *sl, uint32_t idx)
{
	(void)s;
	sl->acks |= 1u << idx;
	if (!sl->chosen && popcount(sl->acks) >= p->quorum) {
		sl->chosen = true;
		px_advance_commit(p);
	}
}

void px_handle_accepted(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->reject) {
		if (p->role == KEEL_PAXOS_LEADER && m->promised > p->ballot)
			px_become_follower(p, 0);
		return;
	}
	if (p->role != KEEL_PAXOS_LEADER || m->ballot != p->ballot)
		return;
	uint32_t idx = (uint32_t)px_voter_idx(p, m->from);
	p->active |= 1u << idx;
	for (size_t i = 0; i < m->n_values; i++) {
		struct pslot *sl = px_slot(p, m->values[i].slot);
		if (sl && sl->ballot == p->ballot && sl->accepted)
			px_slot_acked(p, m->values[i].slot, sl, idx);
	}
}

/* ACCEPTs of slots in [from, to) at our ballot, to every voter in mask,
 * batched up to max_msg_bytes per message. */
static void send_accepts(struct keel_paxos *p, uint64_t from, uint64_t to, uint32_t only_missing,
			 size_t limit)
{
	for (uint32_t vi = 0; vi < p->cfg.n_voters; vi++) {
		if (vi == p->self_idx)
			continue;
		size_t n = 0, bytes = 0, sent = 0;
		struct keel_paxos_value *v = px_scratch(p, 64);
		for (uint64_t s = from; s < to && v && sent < limit; s++) {
			struct pslot *sl = px_slot(p, s);
			if (!sl || !sl->accepted || sl->ballot != p->ballot || sl->chosen)
				continue;
			if (only_missing && (sl->acks & (1u << vi)))
				continue;
			if (n && bytes + sl->len > p->cfg.max_msg_bytes) {
				px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_ACCEPT,
								    .to = p->cfg.voters[vi],
								    .ballot = p->ballot,
								    .values = v, .n_values = n});
				n = bytes = 0;
			}
			v = px_scratch(p, n + 1);
			if (!v)
				break;
			v[n] = px_value_of(s, sl);
			v[n].ballot = p->ballot;
			v[n].chosen = false;
			n++;
			bytes += sl->len;
			sent++;
		}
		if (n && v)
			px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_ACCEPT,
							    .to = p->cfg.voters[vi], .ballot = p->ballot,
							    .values = v, .n_values = n});
	}
}

static void bcast_heartbeat(struct keel_paxos *p)
{
	for (uint32_t i = 0; i < p->cfg.n_voters; i++) {
		if (i == p->self_idx)
			continue;
		px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_HEARTBEAT,
						    .to = p->cfg.voters[i], .ballot = p->ballot,
						    .ctx = p->read_seq});
	}
}

static void reads_check(struct keel_paxos *p)
{
	size_t j = 0;
	for (size_t i = 0; i < p->n_preads; i++) {
		struct pread *r = &p->preads[i];
		uint32_t n = 1;
		for (uint32_t v = 0; v < p->cfg.n_voters; v++)
			n += v != p->self_idx && p->ack_seq[v] >= r->seq;
		if (n < p->quorum) {
			p->preads[j++] = *r;
			continue;
		}
		if (r->from)
			px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_READ_RESP,
							    .to = r->from, .ballot = p->ballot,
							    .ctx = r->ctx, .index = r->index});
		else
			px_push_read(p, r->ctx, r->index);
	}
	p->n_preads = j;
}

/* At ready(): ACCEPTs of new proposals, and a read round if one waits. */
void px_flush(struct keel_paxos *p)
{
	if (p->flush_from < p->next_slot) {
		send_accepts(p, p->flush_from, p->next_slot, 0, SIZE_MAX);
		p->flush_from = p->next_slot;
	}
	if (p->read_round) {
		p->read_round = false;
		p->read_seq++;
		p->hb_elapsed = 0;
		bcast_heartbeat(p);
		reads_check(p);
	}
}

void px_leader_tick(struct keel_paxos *p)
{
	if (++p->elapsed >= p->cfg.election_tick) {
		p->elapsed = 0;
		/* Like Raft's check-quorum (§6.2): without a quorum heard from
		 * in T, step down so that clients find a leader that works. */
		if (popcount(p->active | 1u << p->self_idx) < p->quorum) {
			keel_debug("paxos %llu: lost its quorum, steps down",
				   (unsigned long long)p->id);
			px_become_follower(p, 0);
			return;
		}
		p->active = 1u << p->self_idx;
	}
	if (++p->hb_elapsed >= p->cfg.heartbeat_tick) {
		p->hb_elapsed = 0;
		p->read_round = true;
		/* ACCEPTs lost on the way: send again to who did not answer */
		uint64_t lo = p->commit + 1;
		uint64_t first = 0;
		for (uint64_t s = lo; s < p->next_slot && s < lo + RESEND_MAX; s++) {
			struct pslot *sl = px_slot(p, s);
			if (sl && sl->accepted && sl->ballot == p->ballot && !sl->chosen &&
			    p->ticks - sl->sent_tick >= RESEND_TICKS) {
				if (!first)
					first = s;
				sl->sent_tick = p->ticks;
			}
		}
		if (first)
			send_accepts(p, first, p->next_slot < lo + RESEND_MAX ? p->next_slot
									     : lo + RESEND_MAX,
				     1, RESEND_MAX);
	}
}

/* Chosen values a peer lacks: LEARN from our window, or our snapshot if it
 * is behind our compaction point. their_commit: its chosen prefix; upto:
 * ours when we told it. */
void px_catch_up(struct keel_paxos *p, uint64_t to, uint64_t their_commit, uint64_t upto)
{
	if (upto > p->commit)
		upto = p->commit;
	if (their_commit >= upto)
		return;
	if (their_commit < p->base) {
		if (p->have_snap)
			px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_SNAPSHOT, .to = to,
							    .ballot = p->ballot,
							    .snap_index = p->snap.index,
							    .snap = p->snap.data,
							    .snap_len = p->snap.len});
		return;
	}
	size_t n = 0, bytes = 0;
	struct keel_paxos_value *v = NULL;
	for (uint64_t s = their_commit + 1; s <= upto; s++) {
		struct pslot *sl = px_slot(p, s);
		if (!sl || !sl->chosen)
			break;
		if (n && bytes + sl->len > p->cfg.max_msg_bytes)
			break;
		v = px_scratch(p, n + 1);
		if (!v)
			return;
		v[n++] = px_value_of(s, sl);
		bytes += sl->len;
	}
	if (n)
		px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_LEARN, .to = to,
						    .ballot = p->ballot, .values = v, .n_values = n});
}

void px_handle_heartbeat_resp(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->reject) {
		if (p->role == KEEL_PAXOS_LEADER && m->promised > p->ballot)
			px_become_follower(p, 0);
		return;
	}
	if (p->role != KEEL_PAXOS_LEADER || m->ballot != p->ballot)
		return;
	uint32_t idx = (uint32_t)px_voter_idx(p, m->from);
	p->active |= 1u << idx;
	if (m->ctx > p->ack_seq[idx])
		p->ack_seq[idx] = m->ctx;
	reads_check(p);
	px_catch_up(p, m->from, m->commit, m->index);
}

/* ---- reads -------------------------------------------------------------------- */

int px_push_read(struct keel_paxos *p, uint64_t ctx, uint64_t index)
{
	if (p->n_reads == p->cap_reads) {
		size_t cap = p->cap_reads ? p->cap_reads * 2 : 16;
		struct keel_paxos_read_state *r = realloc(p->reads, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		p->reads = r;
		p->cap_reads = cap;
	}
	p->reads[p->n_reads++] = (struct keel_paxos_read_state){ctx, index};
	return 0;
}

static int queue_read(struct keel_paxos *p, uint64_t ctx, uint64_t from)
{
	if (p->n_preads == p->cap_preads) {
		size_t cap = p->cap_preads ? p->cap_preads * 2 : 16;
		struct pread *r = realloc(p->preads, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		p->preads = r;
		p->cap_preads = cap;
	}
	/* index: every slot this leader proposed in, which after phase 1
	 * covers every slot any earlier leader could have chosen. */
	p->preads[p->n_preads++] =
		(struct pread){.ctx = ctx, .index = p->next_slot - 1, .seq = p->read_seq + 1,
			       .from = from};
	p->read_round = true;
	return 0;
}

int keel_paxos_read(struct keel_paxos *p, uint64_t ctx)
{
	if (p->role == KEEL_PAXOS_LEADER)
		return queue_read(p, ctx, 0);
	if (p->role != KEEL_PAXOS_FOLLOWER || p->leader == KEEL_PAXOS_NONE)
		return KEEL_ENOTLEADER;
	return px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_READ, .to = p->leader,
						   .ballot = p->ballot, .ctx = ctx});
}

void px_handle_read(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (p->role == KEEL_PAXOS_LEADER) {
		queue_read(p, m->ctx, m->from);
		return;
	}
	px_send(p, &(struct keel_paxos_msg){.type = KEEL_PAXOS_MSG_READ_RESP, .to = m->from,
					    .ballot = p->ballot, .ctx = m->ctx, .reject = true,
					    .promised = p->promised});
}

void px_handle_read_resp(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->reject)
		return; /* the host times the read out and the client retries */
	px_push_read(p, m->ctx, m->index);
}

int keel_paxos_propose(struct keel_paxos *p, const void *data, size_t len, uint64_t *slot,
		       uint64_t *ballot)
{
	if (p->role != KEEL_PAXOS_LEADER)
		return KEEL_ENOTLEADER;
	if (len > UINT32_MAX)
		return KEEL_ETOOBIG;
	if (len && !data)
		return KEEL_EBADINPUT;
	uint64_t s = p->next_slot;
	int rc = propose_at(p, s, KEEL_PAXOS_VALUE_NORMAL, data, (uint32_t)len);
	if (rc)
		return rc;
	p->next_slot = s + 1;
	if (slot)
		*slot = s;
	if (ballot)
		*ballot = p->ballot;
	return 0;
}
