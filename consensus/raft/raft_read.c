/*
 * raft_read.c — linearizable reads without writing to the log.
 *
 * ReadIndex (§6.4): the leader records its commit index as the read index,
 * confirms it is still the leader by a heartbeat round acknowledged by a
 * quorum, and then the read may be served once the state machine has
 * applied the read index. Rounds are numbered (read_seq); a heartbeat
 * carries the latest round and its acknowledgement confirms every read of
 * that round or an earlier one, so one round serves a whole batch of reads.
 * A new leader first commits an entry of its own term (the no-op), since
 * only then does its commit index cover every committed entry (§6.4 step 1).
 *
 * Lease (§6.4.1): a heartbeat carries the leader's tick count when sent;
 * a follower that answers will not vote for anyone else for an election
 * timeout (raft_in_lease), so until (tick sent + election timeout - margin)
 * of a quorum no other leader can exist and the leader answers at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

int raft_push_read(struct keel_raft *r, uint64_t ctx, uint64_t index)
{
	if (r->n_reads == r->cap_reads) {
		size_t cap = r->cap_reads ? r->cap_reads * 2 : 16;
		struct keel_raft_read_state *n = realloc(r->reads, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		r->reads = n;
		r->cap_reads = cap;
	}
	r->reads[r->n_reads++] = (struct keel_raft_read_state){ctx, index};
	return 0;
}

static int release(struct keel_raft *r, uint64_t from, uint64_t ctx, uint64_t index)
{
	if (from == KEEL_RAFT_NONE || from == r->id)
		return raft_push_read(r, ctx, index);
	struct keel_raft_msg *m = raft_send(r, KEEL_RAFT_MSG_READ_INDEX_RESP, from);
	if (!m)
		return -ENOMEM;
	m->ctx = ctx;
	m->index = index;
	return 0;
}

static uint64_t tick_of(struct keel_raft *r, uint64_t id)
{
	if (id == r->id)
		return r->ticks + 1;
	struct progress *p = raft_progress(r, id);
	return p ? p->ack_tick1 : 0;
}

static uint64_t seq_of(struct keel_raft *r, uint64_t id)
{
	if (id == r->id)
		return UINT64_MAX;
	struct progress *p = raft_progress(r, id);
	return p ? p->ack_seq : 0;
}

static bool lease_valid(struct keel_raft *r)
{
#ifdef KEEL_MUTANT_RAFT_LEASE_AFTER_TRANSFER
	/* MUTANT: the lease survives a leadership transfer (TIMEOUT_NOW
	 * lets the transferee win while our lease runs). */
	if (r->cfg.read_mode != KEEL_RAFT_READ_LEASE || !r->committed_in_term)
		return false;
#else
#ifdef KEEL_MUTANT_RAFT_LEASE_BEFORE_TERM_COMMIT
	/* MUTANT: "a quorum acknowledged us, so we lead": the lease serves
	 * before an entry of the term is committed, at a commit index that
	 * may not yet cover every committed entry (§6.4 step 1). */
	if (r->cfg.read_mode != KEEL_RAFT_READ_LEASE || r->lease_disabled ||
	    r->transferee != KEEL_RAFT_NONE)
		return false;
#else
	if (r->cfg.read_mode != KEEL_RAFT_READ_LEASE || r->lease_disabled ||
	    r->transferee != KEEL_RAFT_NONE || !r->committed_in_term)
		return false;
#endif
#endif
	uint64_t t1 = raft_quorum_value(r, tick_of);
	if (!t1)
		return false;
	/* One tick less than the follower's refusal, for the phase between
	 * the two tick clocks. */
	uint64_t end = (t1 - 1) + r->cfg.election_tick - 1 - r->cfg.lease_margin_ticks;
	return r->ticks < end;
}

static bool sole_voter(const struct keel_raft *r)
{
	return r->conf.n_voters == 1 && r->conf.voters[0] == r->id && !r->conf.n_outgoing;
}

static int leader_read(struct keel_raft *r, uint64_t from, uint64_t ctx)
{
#ifdef KEEL_RAFT_BUG_READ_NO_QUORUM
	/* PLANTED BUG: answer without confirming leadership. */
	return release(r, from, ctx, r->commit);
#endif
#ifdef KEEL_MUTANT_RAFT_LEASE_BEFORE_TERM_COMMIT
	if (lease_valid(r))
		return release(r, from, ctx, r->commit);
#endif
	if (r->committed_in_term && (sole_voter(r) || lease_valid(r)))
		return release(r, from, ctx, r->commit);
	if (r->n_preads == r->cap_preads) {
		size_t cap = r->cap_preads ? r->cap_preads * 2 : 16;
		struct pending_read *n = realloc(r->preads, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		r->preads = n;
		r->cap_preads = cap;
	}
	struct pending_read *p = &r->preads[r->n_preads++];
	p->ctx = ctx;
	p->from = from;
	p->index = r->commit;
	p->seq = 0;
#ifdef KEEL_MUTANT_RAFT_READ_BEFORE_TERM_COMMIT
	/* MUTANT: a new leader confirms reads at its commit index before an
	 * entry of its term is committed (§6.4 step 1 skipped). */
	if (true) {
#else
	if (r->committed_in_term) {
#endif
		p->seq = r->read_seq + 1;
		r->read_round = true;
	}
	return 0;
}

int keel_raft_read_index(struct keel_raft *r, uint64_t ctx)
{
	if (r->role == KEEL_RAFT_LEADER)
		return leader_read(r, KEEL_RAFT_NONE, ctx);
	if (r->leader == KEEL_RAFT_NONE)
		return KEEL_ENOTLEADER;
	struct keel_raft_msg *m = raft_send(r, KEEL_RAFT_MSG_READ_INDEX, r->leader);
	if (!m)
		return -ENOMEM;
	m->ctx = ctx;
	return 0;
}

void raft_handle_read_index(struct keel_raft *r, const struct keel_raft_msg *m)
{
	if (r->role != KEEL_RAFT_LEADER)
		return; /* the follower times out and retries */
	leader_read(r, m->from, m->ctx);
}

void raft_handle_read_index_resp(struct keel_raft *r, const struct keel_raft_msg *m)
{
	if (!m->reject)
		raft_push_read(r, m->ctx, m->index);
}

/* The first commit of the term makes the parked reads startable. */
void raft_reads_on_commit(struct keel_raft *r)
{
	if (!r->committed_in_term)
		return;
	size_t j = 0;
	for (size_t i = 0; i < r->n_preads; i++) {
		struct pending_read *p = &r->preads[i];
		if (p->seq == 0) {
			p->index = r->commit;
			if (sole_voter(r)) {
				release(r, p->from, p->ctx, p->index);
				continue;
			}
			p->seq = r->read_seq + 1;
			r->read_round = true;
		}
		r->preads[j++] = *p;
	}
	r->n_preads = j;
}

/* Sends the heartbeat round the pending reads wait for (from ready()). */
void raft_reads_flush(struct keel_raft *r)
{
	if (!r->read_round)
		return;
	r->read_round = false;
	r->read_seq++;
	raft_bcast_heartbeat(r);
	raft_reads_check(r);
}

void raft_reads_check(struct keel_raft *r)
{
	if (!r->n_preads)
		return;
	uint64_t acked = raft_quorum_value(r, seq_of);
	size_t i = 0;
	while (i < r->n_preads && r->preads[i].seq && r->preads[i].seq <= acked) {
		release(r, r->preads[i].from, r->preads[i].ctx, r->preads[i].index);
		i++;
	}
	if (i) {
		memmove(r->preads, r->preads + i, (r->n_preads - i) * sizeof(*r->preads));
		r->n_preads -= i;
	}
}

void raft_reads_drop(struct keel_raft *r)
{
	r->n_preads = 0;
	r->read_round = false;
}
