/*
 * raft_election.c — leader election (§3.4), the voting rule that gives
 * leader completeness (§3.6.1), and pre-vote (§9.6).
 */
#include "raft_internal.h"

static bool record(uint64_t *ids, uint32_t *n, uint64_t id)
{
	for (uint32_t i = 0; i < *n; i++)
		if (ids[i] == id)
			return false;
	if (*n < KEEL_RAFT_MAX_NODES * 2)
		ids[(*n)++] = id;
	return true;
}

static uint32_t count_in(const uint64_t *set, uint32_t nset, const uint64_t *ids, uint32_t n)
{
	uint32_t c = 0;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < nset; j++)
			if (set[j] == ids[i])
				c++;
	return c;
}

/* Did the ids reach a majority (of both halves, in a joint configuration,
 * §4.3)? */
static bool majority(const struct keel_raft *r, const uint64_t *ids, uint32_t n)
{
	const struct keel_raft_conf *c = &r->conf;
	if (count_in(c->voters, c->n_voters, ids, n) < raft_quorum(c->n_voters))
		return false;
#ifdef KEEL_MUTANT_RAFT_JOINT_VOTE_NEW_ONLY
	/* MUTANT: an election in a joint configuration needs only C_new. */
	return true;
#endif
	return !c->n_outgoing ||
	       count_in(c->outgoing, c->n_outgoing, ids, n) >= raft_quorum(c->n_outgoing);
}

/* Can the grants still reach a majority, given the rejections? */
static bool lost(const struct keel_raft *r, const uint64_t *ids, uint32_t n)
{
	const struct keel_raft_conf *c = &r->conf;
	if (count_in(c->voters, c->n_voters, ids, n) > c->n_voters - raft_quorum(c->n_voters))
		return true;
	return c->n_outgoing &&
	       count_in(c->outgoing, c->n_outgoing, ids, n) > c->n_outgoing - raft_quorum(c->n_outgoing);
}

/* Returns true once the (pre-)election is decided and acted upon. */
static bool tally(struct keel_raft *r)
{
	if (r->conf.n_voters == 0)
		return false;
	if (majority(r, r->granted, r->n_granted)) {
		if (r->role == KEEL_RAFT_PRE_CANDIDATE)
			raft_campaign(r, false, false);
		else
			raft_become_leader(r);
		return true;
	}
	if (lost(r, r->rejected, r->n_rejected)) {
		raft_become_follower(r, r->term, KEEL_RAFT_NONE);
		return true;
	}
	return false;
}

/* Starts a pre-election (§9.6) or an election (§3.4). `force` marks the
 * election a leadership transfer asked for (§3.10): voters then ignore the
 * lease of the current leader, which is giving way on purpose. */
void raft_campaign(struct keel_raft *r, bool pre, bool force)
{
	uint32_t type;
	uint64_t term;
	if (pre) {
		raft_become_pre_candidate(r);
		type = KEEL_RAFT_MSG_PREVOTE;
		term = r->term + 1;
	} else {
		raft_become_candidate(r);
		type = KEEL_RAFT_MSG_VOTE;
		term = r->term;
	}
	keel_debug("raft %llu: %s at term %llu", (unsigned long long)r->id,
		   pre ? "pre-campaign" : "campaign", (unsigned long long)term);
	record(r->granted, &r->n_granted, r->id);
	if (tally(r))
		return;
	uint64_t li = raft_last_index(r), lt = raft_last_term(r);
	for (uint32_t i = 0; i < r->conf.n_voters + r->conf.n_outgoing; i++) {
		uint64_t to;
		if (i < r->conf.n_voters) {
			to = r->conf.voters[i];
		} else {
			to = r->conf.outgoing[i - r->conf.n_voters];
			if (count_in(r->conf.voters, r->conf.n_voters, &to, 1))
				continue; /* in both halves: asked once */
		}
		if (to == r->id)
			continue;
		struct keel_raft_msg *m = raft_send(r, type, to);
		if (!m)
			return;
		m->term = term;
		m->index = li;
		m->log_term = lt;
		m->force = force;
	}
}

void raft_handle_vote(struct keel_raft *r, const struct keel_raft_msg *m)
{
	bool pre = m->type == KEEL_RAFT_MSG_PREVOTE;
	/* One vote per term (§3.4): we may repeat a vote for the same
	 * candidate; a pre-vote for a later term commits us to nothing. */
	bool can_vote = r->vote == m->from ||
			(r->vote == KEEL_RAFT_NONE && r->leader == KEEL_RAFT_NONE) ||
			(pre && m->term > r->term);
#ifdef KEEL_RAFT_BUG_DOUBLE_VOTE
	/* PLANTED BUG: grant every candidate of the term. */
	if (!pre)
		can_vote = true;
#endif
	/* §3.6.1: only a candidate whose log is at least as up-to-date as
	 * ours may get our vote, so a leader holds every committed entry. */
	uint64_t lt = raft_last_term(r), li = raft_last_index(r);
	bool up_to_date = m->log_term > lt || (m->log_term == lt && m->index >= li);
#ifdef KEEL_RAFT_BUG_VOTE_STALE_LOG
	/* PLANTED BUG: ignore the candidate's log. */
	up_to_date = true;
#endif
	uint32_t rt = pre ? KEEL_RAFT_MSG_PREVOTE_RESP : KEEL_RAFT_MSG_VOTE_RESP;
	if (can_vote && up_to_date) {
		struct keel_raft_msg *o = raft_send(r, rt, m->from);
		if (o)
			o->term = m->term; /* pre-vote: the term it asks about */
		if (!pre) {
			r->vote = m->from;
			r->election_elapsed = 0;
		}
	} else {
		struct keel_raft_msg *o = raft_send(r, rt, m->from);
		if (o)
			o->reject = true;
	}
}

void raft_handle_vote_resp(struct keel_raft *r, const struct keel_raft_msg *m)
{
	if (m->type == KEEL_RAFT_MSG_PREVOTE_RESP) {
		if (r->role != KEEL_RAFT_PRE_CANDIDATE)
			return;
		if (!m->reject && m->term != r->term + 1)
			return;
	} else {
#ifdef KEEL_MUTANT_RAFT_STALE_VOTE_RESP
		/* MUTANT: a grant of any term counts ("it is our election"). */
		if (r->role != KEEL_RAFT_CANDIDATE)
			return;
#else
		if (r->role != KEEL_RAFT_CANDIDATE || m->term != r->term)
			return;
#endif
	}
	if (m->reject)
		record(r->rejected, &r->n_rejected, m->from);
	else
		record(r->granted, &r->n_granted, m->from);
	tally(r);
}
