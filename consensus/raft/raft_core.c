/*
 * raft_core.c — the Raft core's life cycle, roles, tick, step dispatch and
 * the ready/advance hand-off. See include/keel/raft.h for the contract.
 *
 * Term handling in step() follows §3.3 (a higher term turns anyone into a
 * follower) with the refinements of §9.6 (pre-vote does not disturb terms)
 * and §4.2.3 / §6.2 (with check-quorum, a follower that heard from its
 * leader within the minimum election timeout ignores vote requests, so a
 * removed or partitioned server cannot depose a working leader).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

#define DEFAULT_INFLIGHT_MSGS 256
#define DEFAULT_INFLIGHT_BYTES (16u << 20)
#define DEFAULT_MSG_BYTES (1u << 20)
#define DEFAULT_SNAPSHOT_CHUNK (64u << 10)

uint32_t raft_quorum(uint32_t n)
{
	return n / 2 + 1;
}

static uint64_t rng_next(struct keel_raft *r)
{
	/* xorshift64*: deterministic per seed, which the simulator needs. */
	uint64_t x = r->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void raft_reset_timeout(struct keel_raft *r)
{
	/* §3.4: a fresh random timeout in [T, 2T) at every reset spreads the
	 * candidates so that one usually wins before the others time out. */
	uint32_t t = r->cfg.election_tick;
	r->randomized_timeout = t + (uint32_t)(rng_next(r) % t);
	r->election_elapsed = 0;
}

/* ---- outbox ---------------------------------------------------------- */

struct keel_raft_msg *raft_send(struct keel_raft *r, uint32_t type, uint64_t to)
{
	if (r->n_out == r->cap_out) {
		size_t cap = r->cap_out ? r->cap_out * 2 : 16;
		struct keel_raft_msg *o = realloc(r->out, cap * sizeof(*o));
		if (!o)
			return NULL;
		r->out = o;
		struct out_aux *a = realloc(r->aux, cap * sizeof(*a));
		if (!a)
			return NULL;
		r->aux = a;
		r->cap_out = cap;
	}
	struct keel_raft_msg *m = &r->out[r->n_out];
	memset(m, 0, sizeof(*m));
	memset(&r->aux[r->n_out], 0, sizeof(r->aux[0]));
	r->n_out++;
	m->type = type;
	m->from = r->id;
	m->to = to;
	m->term = r->term;
	return m;
}

/* A deposed leader's queued appends name entries that a new leader may
 * truncate before ready() resolves them: drop them (losing a message is
 * always safe in Raft). */
static void drop_queued_appends(struct keel_raft *r)
{
	size_t j = 0;
	for (size_t i = 0; i < r->n_out; i++) {
		uint32_t t = r->out[i].type;
		if (t == KEEL_RAFT_MSG_APPEND || t == KEEL_RAFT_MSG_SNAPSHOT ||
		    t == KEEL_RAFT_MSG_HEARTBEAT || t == KEEL_RAFT_MSG_TIMEOUT_NOW)
			continue;
		r->out[j] = r->out[i];
		r->aux[j] = r->aux[i];
		j++;
	}
	r->n_out = j;
}

/* The log just lost its entries after `last` (truncated by a new leader,
 * or replaced by a snapshot): acknowledgements still queued for them would
 * tell their leader we hold entries we no longer have and never made
 * durable, and it could count us towards committing them. Drop them; the
 * leader learns where we are from the next exchange. */
void raft_drop_acks_above(struct keel_raft *r, uint64_t last)
{
	size_t j = 0;
	for (size_t i = 0; i < r->n_out; i++) {
		const struct keel_raft_msg *m = &r->out[i];
		if (m->type == KEEL_RAFT_MSG_APPEND_RESP && !m->reject && m->index > last)
			continue;
		r->out[j] = r->out[i];
		r->aux[j] = r->aux[i];
		j++;
	}
	r->n_out = j;
}

/* ---- roles ----------------------------------------------------------- */

static void reset_votes(struct keel_raft *r)
{
	r->n_granted = r->n_rejected = 0;
}

void raft_become_follower(struct keel_raft *r, uint64_t term, uint64_t leader)
{
	bool was_leader = r->role == KEEL_RAFT_LEADER;
	if (term != r->term) {
		r->term = term;
		r->vote = KEEL_RAFT_NONE;
	}
#ifdef KEEL_MUTANT_RAFT_FOLLOWER_CLEARS_VOTE
	/* MUTANT: stepping down clears the vote even within the term (a
	 * candidate that lost may then vote again in its own term). */
	r->vote = KEEL_RAFT_NONE;
#endif
	r->role = KEEL_RAFT_FOLLOWER;
	r->leader = leader;
	r->transferee = KEEL_RAFT_NONE;
	r->heartbeat_elapsed = 0;
	reset_votes(r);
	raft_reset_timeout(r);
	if (was_leader) {
		drop_queued_appends(r);
		raft_reads_drop(r);
		r->repl_dirty = r->commit_bcast = r->read_round = false;
	}
}

void raft_become_pre_candidate(struct keel_raft *r)
{
	/* §9.6: no term change, no vote; just ask whether we could win. */
	r->role = KEEL_RAFT_PRE_CANDIDATE;
	r->leader = KEEL_RAFT_NONE;
	reset_votes(r);
	raft_reset_timeout(r);
}

void raft_become_candidate(struct keel_raft *r)
{
	bool was_leader = r->role == KEEL_RAFT_LEADER;
	r->term++;
	r->vote = r->id;
	r->role = KEEL_RAFT_CANDIDATE;
	r->leader = KEEL_RAFT_NONE;
	reset_votes(r);
	raft_reset_timeout(r);
	if (was_leader) {
		drop_queued_appends(r);
		raft_reads_drop(r);
	}
}

void raft_become_leader(struct keel_raft *r)
{
	r->role = KEEL_RAFT_LEADER;
	r->leader = r->id;
	r->transferee = KEEL_RAFT_NONE;
	r->committed_in_term = false;
	r->lease_disabled = false;
	r->heartbeat_elapsed = 0;
	r->election_elapsed = 0;
	uint64_t next = raft_last_index(r) + 1;
	raft_sync_progress(r);
	for (uint32_t i = 0; i < r->n_prs; i++) {
		raft_progress_reset(r, &r->prs[i], next);
		r->prs[i].recent_active = r->prs[i].id == r->id;
	}
	/* §3.6.2 / §6.4: a leader commits an entry of its own term before
	 * it can know what is committed; an empty entry does it at once. */
	if (raft_log_append(r, r->term, KEEL_RAFT_ENTRY_NOOP, NULL, 0) == 0)
		r->repl_dirty = true;
	/* Reads pending from before (as follower, none) start fresh. */
	keel_debug("raft %llu: leader at term %llu", (unsigned long long)r->id,
		   (unsigned long long)r->term);
}

/* ---- create / destroy ------------------------------------------------- */

static int restore(struct keel_raft *r, const struct keel_raft_boot *b, char *errmsg)
{
	int rc;
	r->term = b->hard_state.term;
#ifndef KEEL_MUTANT_RAFT_BOOT_FORGETS_VOTE
	/* MUTANT (when defined): the vote is not restored at boot. */
	r->vote = b->hard_state.vote;
#endif
	if (b->snapshot) {
		const struct keel_raft_snapshot *s = b->snapshot;
		rc = raft_snapshot_store(r, &s->meta, s->data, s->len);
		if (rc)
			return rc;
		raft_log_reset(r, s->meta.index, s->meta.term);
		r->conf = s->meta.conf;
		r->prev_conf = s->meta.conf;
		r->conf_index = s->meta.index;
	}
	for (size_t i = 0; i < b->n_entries; i++) {
		const struct keel_raft_entry *e = &b->entries[i];
		if (e->index <= r->base)
			continue; /* covered by the snapshot */
		uint64_t expect = raft_last_index(r) + 1;
		if (e->index != expect)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "raft: boot entry %zu has index %llu, want %llu", i,
					       (unsigned long long)e->index,
					       (unsigned long long)expect);
		if (e->term > r->term)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "raft: boot entry %llu has term %llu above hard state term %llu",
					       (unsigned long long)e->index, (unsigned long long)e->term,
					       (unsigned long long)r->term);
		if ((rc = raft_log_append(r, e->term, e->type, e->data, e->len)))
			return rc;
	}
	r->stabled = raft_last_index(r);
	r->commit = b->hard_state.commit;
	if (r->commit > raft_last_index(r))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: boot commit %llu beyond the last entry %llu",
				       (unsigned long long)r->commit,
				       (unsigned long long)raft_last_index(r));
	if (r->commit < r->base)
		r->commit = r->base;
	r->applied = b->applied ? b->applied : r->base;
	if (r->applied < r->base || r->applied > r->commit)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: boot applied %llu outside [%llu, %llu]",
				       (unsigned long long)r->applied, (unsigned long long)r->base,
				       (unsigned long long)r->commit);
	raft_conf_recompute(r);
	r->prev_hs = (struct keel_raft_hard_state){r->term, r->vote, r->commit};
	return 0;
}

static int bootstrap(struct keel_raft *r, const struct keel_raft_conf *c)
{
	uint8_t buf[KEEL_RAFT_CONF_ENCODED_MAX];
	int n = keel_raft_conf_encode(c, buf, sizeof(buf));
	if (n < 0)
		return n;
	/* Entry 1 (term 1) holds the founding configuration, committed by
	 * construction: every founder writes the same one. */
	r->term = 1;
	int rc = raft_log_append(r, 1, KEEL_RAFT_ENTRY_CONF, buf, (size_t)n);
	if (rc)
		return rc;
	r->commit = 1;
	raft_conf_apply(r, c, 1);
	r->prev_conf = *c;
	return 0;
}

static bool conf_valid(const struct keel_raft_conf *c)
{
	if (c->n_voters > KEEL_RAFT_MAX_NODES || c->n_learners > KEEL_RAFT_MAX_NODES ||
	    c->n_outgoing)
		return false;
	for (uint32_t i = 0; i < c->n_voters + c->n_learners; i++) {
		uint64_t a = i < c->n_voters ? c->voters[i] : c->learners[i - c->n_voters];
		if (a == KEEL_RAFT_NONE)
			return false;
		for (uint32_t j = i + 1; j < c->n_voters + c->n_learners; j++) {
			uint64_t b = j < c->n_voters ? c->voters[j] : c->learners[j - c->n_voters];
			if (a == b)
				return false;
		}
	}
	return true;
}

int keel_raft_create(const struct keel_raft_config *cfg,
		     const struct keel_raft_boot *boot, struct keel_raft **out,
		     char *errmsg)
{
	*out = NULL;
	if (cfg->id == KEEL_RAFT_NONE)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "raft: id must be non-zero");
	if (cfg->election_tick < 2 || cfg->heartbeat_tick == 0 ||
	    cfg->heartbeat_tick >= cfg->election_tick)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: need 0 < heartbeat_tick (%u) < election_tick (%u), election_tick >= 2",
				       cfg->heartbeat_tick, cfg->election_tick);
	if (cfg->read_mode == KEEL_RAFT_READ_LEASE && !cfg->check_quorum)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: lease reads need check_quorum (§6.4.1)");
	if (cfg->read_mode == KEEL_RAFT_READ_LEASE &&
	    cfg->lease_margin_ticks >= cfg->election_tick)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: lease_margin_ticks must be below election_tick");
	if (!conf_valid(&cfg->initial))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: initial configuration has a zero or repeated id or too many members");

	struct keel_raft *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	if (!r->cfg.max_inflight_msgs)
		r->cfg.max_inflight_msgs = DEFAULT_INFLIGHT_MSGS;
	if (!r->cfg.max_inflight_bytes)
		r->cfg.max_inflight_bytes = DEFAULT_INFLIGHT_BYTES;
	if (!r->cfg.max_msg_bytes)
		r->cfg.max_msg_bytes = DEFAULT_MSG_BYTES;
	if (!r->cfg.max_snapshot_chunk)
		r->cfg.max_snapshot_chunk = DEFAULT_SNAPSHOT_CHUNK;
	r->id = cfg->id;
	r->rng = (cfg->seed ^ (cfg->id * 0x9E3779B97F4A7C15ULL)) | 1;
	r->role = r->prev_role = KEEL_RAFT_FOLLOWER;

	int rc = 0;
	bool empty = !boot || (!boot->snapshot && !boot->n_entries && !boot->hard_state.term);
	if (!empty)
		rc = restore(r, boot, errmsg);
	else if (cfg->initial.n_voters)
		rc = bootstrap(r, &cfg->initial);
	if (rc) {
		keel_raft_destroy(r);
		if (rc == -ENOMEM)
			return rc;
		return rc;
	}
	raft_reset_timeout(r);
	*out = r;
	return 0;
}

void keel_raft_destroy(struct keel_raft *r)
{
	if (!r)
		return;
	raft_log_free(r);
	for (uint32_t i = 0; i < r->n_prs; i++)
		raft_progress_free(&r->prs[i]);
	raft_snapshot_free(r);
	free(r->rcv_buf);
	free(r->preads);
	free(r->reads);
	free(r->out);
	free(r->aux);
	free(r);
}

/* ---- tick ------------------------------------------------------------- */

void keel_raft_tick(struct keel_raft *r)
{
	r->ticks++;
	if (r->role != KEEL_RAFT_LEADER) {
		r->election_elapsed++;
		if (r->election_elapsed >= r->randomized_timeout) {
			r->election_elapsed = 0;
			if (raft_promotable(r)) {
				raft_campaign(r, r->cfg.pre_vote, false);
			} else {
				/* A learner or a server outside the configuration
				 * waits; but a leader not heard from in an election
				 * timeout is forgotten, or it would never stop
				 * ignoring vote requests (raft_in_lease). */
				r->leader = KEEL_RAFT_NONE;
				raft_reset_timeout(r);
			}
		}
		return;
	}
	r->election_elapsed++;
	if (r->election_elapsed >= r->cfg.election_tick) {
		r->election_elapsed = 0;
		/* §6.2: without a quorum heard from in an election timeout the
		 * leader steps down, so clients find the real leader. */
		if (r->cfg.check_quorum && !raft_quorum_active(r)) {
			keel_debug("raft %llu: lost quorum, stepping down",
				   (unsigned long long)r->id);
			raft_become_follower(r, r->term, KEEL_RAFT_NONE);
			return;
		}
		for (uint32_t i = 0; i < r->n_prs; i++)
			r->prs[i].recent_active = r->prs[i].id == r->id;
		/* §3.10: a transfer that did not finish within an election
		 * timeout is abandoned and proposals resume. */
		r->transferee = KEEL_RAFT_NONE;
	}
	r->heartbeat_elapsed++;
	if (r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
		r->heartbeat_elapsed = 0;
		raft_bcast_heartbeat(r);
	}
}

int keel_raft_campaign(struct keel_raft *r)
{
	if (r->role == KEEL_RAFT_LEADER || !raft_promotable(r))
		return KEEL_EBUSY;
	raft_campaign(r, r->cfg.pre_vote, false);
	return 0;
}

/* ---- step ------------------------------------------------------------- */

static bool msg_valid(const struct keel_raft_msg *m)
{
	if (m->type < 1 || m->type > KEEL_RAFT_MSG_TYPE_MAX || m->from == KEEL_RAFT_NONE)
		return false;
	if (m->n_entries && !m->entries)
		return false;
	for (size_t i = 0; i < m->n_entries; i++) {
		const struct keel_raft_entry *e = &m->entries[i];
		if (e->index != m->index + 1 + i || e->term > m->term ||
		    (i && e->term < m->entries[i - 1].term) || (e->len && !e->data) ||
		    e->type > KEEL_RAFT_ENTRY_NOOP)
			return false;
	}
	if (m->n_entries && m->entries[0].term < m->log_term)
		return false;
	if (m->chunk_len && !m->chunk)
		return false;
	if (m->type == KEEL_RAFT_MSG_SNAPSHOT &&
	    (m->snap_offset > m->snap_total || m->chunk_len > m->snap_total - m->snap_offset ||
	     m->snap.conf.n_voters > KEEL_RAFT_MAX_NODES ||
	     m->snap.conf.n_learners > KEEL_RAFT_MAX_NODES ||
	     m->snap.conf.n_outgoing > KEEL_RAFT_MAX_NODES))
		return false;
	return true;
}

/* §4.2.3: with check-quorum, a server that heard from a leader within the
 * minimum election timeout refuses to vote. It also refuses for the first
 * election timeout after it starts: it may have acknowledged a leader's
 * heartbeat just before a crash, and that leader may be counting on it for
 * its read lease (§6.4.1). */
bool raft_in_lease(const struct keel_raft *r)
{
	if (!r->cfg.check_quorum)
		return false;
	if (r->ticks < r->cfg.election_tick)
		return true;
	return r->leader != KEEL_RAFT_NONE && r->election_elapsed < r->cfg.election_tick;
}

int keel_raft_step(struct keel_raft *r, const struct keel_raft_msg *m)
{
	if (m->to != r->id)
		return 0;
	if (!msg_valid(m))
		return KEEL_EPROTO;
	uint32_t t = m->type;

	if (m->term > r->term) {
		if (t == KEEL_RAFT_MSG_VOTE || t == KEEL_RAFT_MSG_PREVOTE) {
			/* §4.2.3: ignore a vote request while our leader's
			 * lease may run, unless it comes from a transfer. */
			if (raft_in_lease(r) && !m->force)
				return 0;
		}
		if (t == KEEL_RAFT_MSG_PREVOTE) {
			/* §9.6: a pre-vote never changes our term. */
		} else if (t == KEEL_RAFT_MSG_PREVOTE_RESP && !m->reject) {
			/* a granted pre-vote carries the future term */
		} else if (t == KEEL_RAFT_MSG_APPEND || t == KEEL_RAFT_MSG_HEARTBEAT ||
			   t == KEEL_RAFT_MSG_SNAPSHOT) {
			raft_become_follower(r, m->term, m->from);
		} else {
			raft_become_follower(r, m->term, KEEL_RAFT_NONE);
		}
	} else if (m->term < r->term
#ifdef KEEL_MUTANT_RAFT_STALE_APPEND
		   /* MUTANT: an append of an older term is taken like a current
		    * one ("the log matching check will refuse what is wrong"). */
		   && t != KEEL_RAFT_MSG_APPEND
#endif
#ifdef KEEL_MUTANT_RAFT_STALE_ACK
		   /* MUTANT: append responses of older terms still update the
		    * leader's match index ("an ack is an ack"). */
		   && t != KEEL_RAFT_MSG_APPEND_RESP
#endif
#ifdef KEEL_MUTANT_RAFT_STALE_VOTE_RESP
		   /* MUTANT (with raft_handle_vote_resp's): vote responses are
		    * not checked for their term. */
		   && t != KEEL_RAFT_MSG_VOTE_RESP
#endif
	) {
		if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
		    (t == KEEL_RAFT_MSG_APPEND || t == KEEL_RAFT_MSG_HEARTBEAT)) {
			/* A stale leader, maybe cut off while we moved on
			 * (perhaps through pre-votes that never raised its
			 * term): tell it our term so it steps down. */
			raft_send(r, KEEL_RAFT_MSG_APPEND_RESP, m->from);
		} else if (t == KEEL_RAFT_MSG_PREVOTE) {
			struct keel_raft_msg *o = raft_send(r, KEEL_RAFT_MSG_PREVOTE_RESP, m->from);
			if (o)
				o->reject = true;
		}
		return 0;
	}

	switch (t) {
	case KEEL_RAFT_MSG_VOTE:
	case KEEL_RAFT_MSG_PREVOTE:
		raft_handle_vote(r, m);
		return 0;
	case KEEL_RAFT_MSG_VOTE_RESP:
	case KEEL_RAFT_MSG_PREVOTE_RESP:
		raft_handle_vote_resp(r, m);
		return 0;
	case KEEL_RAFT_MSG_READ_INDEX:
		raft_handle_read_index(r, m);
		return 0;
	case KEEL_RAFT_MSG_READ_INDEX_RESP:
		raft_handle_read_index_resp(r, m);
		return 0;
	default:
		break;
	}

	if (r->role == KEEL_RAFT_LEADER) {
		switch (t) {
		case KEEL_RAFT_MSG_APPEND_RESP:
			raft_handle_append_resp(r, m);
			break;
		case KEEL_RAFT_MSG_HEARTBEAT_RESP:
			raft_handle_heartbeat_resp(r, m);
			break;
		case KEEL_RAFT_MSG_SNAPSHOT_RESP:
			raft_handle_snapshot_resp(r, m);
			break;
		default:
			/* APPEND/HEARTBEAT/SNAPSHOT at our own term from
			 * someone else would be a second leader: impossible
			 * unless a peer is broken. Drop it. */
			break;
		}
		return 0;
	}

	switch (t) {
	case KEEL_RAFT_MSG_APPEND:
	case KEEL_RAFT_MSG_HEARTBEAT:
	case KEEL_RAFT_MSG_SNAPSHOT:
		if (r->role != KEEL_RAFT_FOLLOWER)
			raft_become_follower(r, m->term, m->from);
		r->leader = m->from;
		r->election_elapsed = 0;
		if (t == KEEL_RAFT_MSG_APPEND)
			raft_handle_append(r, m);
		else if (t == KEEL_RAFT_MSG_HEARTBEAT)
			raft_handle_heartbeat(r, m);
		else
			raft_handle_snapshot(r, m);
		break;
	case KEEL_RAFT_MSG_TIMEOUT_NOW:
		raft_handle_timeout_now(r, m);
		break;
	default:
		break;
	}
	return 0;
}

/* ---- ready / advance --------------------------------------------------- */

static struct keel_raft_hard_state hard_state(const struct keel_raft *r)
{
	return (struct keel_raft_hard_state){r->term, r->vote, r->commit};
}

static uint64_t apply_from(const struct keel_raft *r)
{
	uint64_t a = r->applied;
	if (r->pending_install && r->snap.meta.index > a)
		a = r->snap.meta.index;
	return a;
}

bool keel_raft_has_ready(const struct keel_raft *r)
{
	struct keel_raft_hard_state hs = hard_state(r);
	return r->n_out || r->n_reads || r->stabled < raft_last_index(r) ||
	       r->pending_install || r->commit > apply_from(r) ||
	       memcmp(&hs, &r->prev_hs, sizeof(hs)) || r->role != r->prev_role ||
	       r->leader != r->prev_leader ||
	       (r->role == KEEL_RAFT_LEADER && (r->repl_dirty || r->commit_bcast || r->read_round));
}

/* Resolves queued messages' entries and chunks against the current log and
 * snapshot, dropping those whose data is gone (compacted, replaced). */
static void resolve_outbox(struct keel_raft *r)
{
	size_t j = 0;
	for (size_t i = 0; i < r->n_out; i++) {
		struct keel_raft_msg *m = &r->out[i];
		struct out_aux *a = &r->aux[i];
		if (a->ent_n) {
			if (a->ent_lo <= r->base || a->ent_lo + a->ent_n - 1 > raft_last_index(r))
				continue;
			m->entries = &r->ents[a->ent_lo - r->base - 1];
			m->n_entries = a->ent_n;
		}
		if (a->chunk) {
			if (!r->have_snap || r->snap.meta.index != m->snap.index ||
			    m->snap_offset + m->chunk_len > r->snap.len)
				continue;
			m->chunk = m->chunk_len ? r->snap.data + m->snap_offset : NULL;
		}
		if (j != i) {
			r->out[j] = *m;
			r->aux[j] = *a;
		}
		j++;
	}
	r->n_out = j;
}

void keel_raft_ready(struct keel_raft *r, struct keel_raft_ready *rd)
{
	memset(rd, 0, sizeof(*rd));
	if (r->role == KEEL_RAFT_LEADER) {
		raft_reads_flush(r);
		raft_flush_appends(r);
	}
	resolve_outbox(r);
	rd->msgs = r->out;
	rd->n_msgs = r->n_out;
	uint64_t last = raft_last_index(r);
	if (r->stabled < last) {
		uint64_t from = r->stabled + 1;
		if (from <= r->base)
			from = r->base + 1;
		if (from <= last) {
			rd->entries = &r->ents[from - r->base - 1];
			rd->n_entries = last - from + 1;
		}
	}
	rd->hard_state = hard_state(r);
#ifdef KEEL_MUTANT_RAFT_VOTE_NOT_PERSISTED
	/* MUTANT: "the vote only changes with the term": a vote cast in a
	 * term already on disk is not written. */
	rd->hard_state_changed = rd->hard_state.term != r->prev_hs.term ||
				 rd->hard_state.commit != r->prev_hs.commit;
#else
	rd->hard_state_changed = memcmp(&rd->hard_state, &r->prev_hs, sizeof(rd->hard_state)) != 0;
#endif
	uint64_t a = apply_from(r);
	if (r->commit > a && a >= r->base) {
		rd->committed = &r->ents[a - r->base];
		rd->n_committed = r->commit - a;
#ifdef KEEL_MUTANT_RAFT_APPLY_FROM_COMMIT
		/* MUTANT: a batch of several committed entries hands out only
		 * the newest ("the state machine catches up from there"). */
		if (rd->n_committed > 1) {
			rd->committed += rd->n_committed - 1;
			rd->n_committed = 1;
		}
#endif
	}
	if (r->pending_install)
		rd->snapshot = &r->snap;
	rd->reads = r->reads;
	rd->n_reads = r->n_reads;
	rd->leader = r->leader;
	rd->role = r->role;
}

void keel_raft_advance(struct keel_raft *r, const struct keel_raft_ready *rd)
{
	if (rd->n_entries) {
		uint64_t l = rd->entries[rd->n_entries - 1].index;
		if (l > r->stabled)
			r->stabled = l;
	}
	if (rd->snapshot) {
		if (r->stabled < rd->snapshot->meta.index)
			r->stabled = rd->snapshot->meta.index;
#ifndef KEEL_MUTANT_RAFT_SNAPSHOT_APPLIED_STUCK
		/* MUTANT (when defined): an installed snapshot does not move
		 * the applied index; entries after it are never handed out. */
		if (r->applied < rd->snapshot->meta.index)
			r->applied = rd->snapshot->meta.index;
#endif
		r->pending_install = false;
	}
	if (rd->n_committed)
		r->applied = rd->committed[rd->n_committed - 1].index;
	if (rd->hard_state_changed)
		r->prev_hs = rd->hard_state;
	r->prev_role = rd->role;
#ifndef KEEL_MUTANT_RAFT_READY_NEVER_SETTLES
	/* MUTANT (when defined): the leader reported is not remembered, so
	 * has_ready() stays true while a leader is known. */
	r->prev_leader = rd->leader;
#endif
	r->n_out = 0;
	r->n_reads = 0;
	if (r->role == KEEL_RAFT_LEADER) {
		/* The leader counts its own log only once it is durable
		 * (§10.2.1): a crash before the fsync must not lose an entry
		 * the quorum already counted. */
		struct progress *self = raft_progress(r, r->id);
		if (self && self->match < r->stabled) {
			self->match = r->stabled;
			self->next = r->stabled + 1;
			if (raft_maybe_commit(r))
				raft_after_commit(r);
		}
	}
}

/* ---- accessors -------------------------------------------------------- */

void keel_raft_status(const struct keel_raft *r, struct keel_raft_status *st)
{
	memset(st, 0, sizeof(*st));
	st->id = r->id;
	st->role = r->role;
	st->term = r->term;
	st->vote = r->vote;
	st->leader = r->leader;
	st->commit = r->commit;
	st->applied = r->applied;
	st->first_index = r->base + 1;
	st->last_index = raft_last_index(r);
	st->snapshot_index = r->have_snap ? r->snap.meta.index : 0;
	st->transferee = r->transferee;
	st->conf = r->conf;
}

const struct keel_raft_entry *keel_raft_entry_at(const struct keel_raft *r, uint64_t index)
{
	return raft_entry(r, index);
}

const struct keel_raft_snapshot *keel_raft_snapshot_get(const struct keel_raft *r)
{
	return r->have_snap ? &r->snap : NULL;
}

int keel_raft_propose(struct keel_raft *r, const void *data, size_t len,
		      uint64_t *index, uint64_t *term)
{
	if (r->role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	if (r->transferee != KEEL_RAFT_NONE)
		return KEEL_EBUSY;
	if (len > UINT32_MAX)
		return KEEL_ETOOBIG;
	if (len && !data)
		return KEEL_EBADINPUT;
	int rc = raft_log_append(r, r->term, KEEL_RAFT_ENTRY_NORMAL, data, len);
	if (rc)
		return rc;
	r->repl_dirty = true;
	if (index)
		*index = raft_last_index(r);
	if (term)
		*term = r->term;
	return 0;
}

const char *keel_raft_role_name(enum keel_raft_role role)
{
	switch (role) {
	case KEEL_RAFT_FOLLOWER: return "follower";
	case KEEL_RAFT_PRE_CANDIDATE: return "pre-candidate";
	case KEEL_RAFT_CANDIDATE: return "candidate";
	case KEEL_RAFT_LEADER: return "leader";
	}
	return "?";
}
