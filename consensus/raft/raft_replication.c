/*
 * raft_replication.c — log replication (§3.5), the commit rule (§3.6.2),
 * heartbeats, and the leader's per-follower flow control (§10.2.1
 * pipelining; etcd's Progress: probe, replicate with an in-flight window
 * bounded in messages and bytes, snapshot).
 *
 * Appends are not sent from the handlers that make them possible; the
 * handlers set repl_dirty and keel_raft_ready() flushes, so every proposal
 * made between two ready batches travels in as few messages as the size
 * limit allows (batching).
 */
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

struct progress *raft_progress(struct keel_raft *r, uint64_t id)
{
	for (uint32_t i = 0; i < r->n_prs; i++)
		if (r->prs[i].id == id)
			return &r->prs[i];
	return NULL;
}

static void infl_reset(struct progress *p)
{
	p->infl_start = p->infl_count = 0;
	p->infl_total = 0;
}

void raft_progress_probe(struct progress *p, uint64_t next)
{
	p->state = PR_PROBE;
	p->next = next;
	p->probe_sent = false;
	infl_reset(p);
}

void raft_progress_reset(struct keel_raft *r, struct progress *p, uint64_t next)
{
	raft_progress_probe(p, next);
	p->match = 0;
	p->snap_index = p->snap_offset = 0;
	p->ack_seq = 0;
	p->ack_tick1 = 0;
	if (p->id == r->id) {
		p->match = r->stabled;
		p->next = raft_last_index(r) + 1;
	}
}

void raft_progress_free(struct progress *p)
{
	free(p->infl_idx);
	free(p->infl_bytes);
	p->infl_idx = p->infl_bytes = NULL;
	p->infl_cap = 0;
}

static bool infl_full(const struct keel_raft *r, const struct progress *p)
{
	return p->infl_count >= r->cfg.max_inflight_msgs ||
	       p->infl_total >= r->cfg.max_inflight_bytes;
}

static void infl_add(struct keel_raft *r, struct progress *p, uint64_t last, uint64_t bytes)
{
	if (!p->infl_cap) {
		uint32_t cap = r->cfg.max_inflight_msgs;
		p->infl_idx = malloc(cap * sizeof(uint64_t));
		p->infl_bytes = malloc(cap * sizeof(uint64_t));
		if (!p->infl_idx || !p->infl_bytes) {
			raft_progress_free(p);
			return;
		}
		p->infl_cap = cap;
	}
	if (p->infl_count == p->infl_cap)
		return;
	uint32_t at = (p->infl_start + p->infl_count) % p->infl_cap;
	p->infl_idx[at] = last;
	p->infl_bytes[at] = bytes;
	p->infl_count++;
	p->infl_total += bytes;
}

static void infl_free_to(struct progress *p, uint64_t index)
{
	while (p->infl_count && p->infl_idx[p->infl_start] <= index) {
		p->infl_total -= p->infl_bytes[p->infl_start];
		p->infl_start = (p->infl_start + 1) % p->infl_cap;
		p->infl_count--;
	}
}

/* Sends one append to p if its state allows. Returns 1 when it sent
 * entries in the replicate state (the caller may send again: pipelining),
 * else 0. */
static int send_append(struct keel_raft *r, struct progress *p, bool allow_empty)
{
	if (p->state == PR_SNAPSHOT)
		return 0;
	if (p->state == PR_PROBE && p->probe_sent)
		return 0;
	if (p->state == PR_REPLICATE && infl_full(r, p))
		return 0;
	uint64_t prev = p->next - 1, prev_term;
	if (!raft_term_at(r, prev, &prev_term)) {
		/* §5.3: the entries it needs were compacted away. */
#ifndef KEEL_MUTANT_RAFT_SNAPSHOT_NEVER_SENT
		/* MUTANT (when defined): nothing is sent; "the heartbeat
		 * resends what is missing" — it never does. */
		raft_send_snapshot(r, p);
#endif
		return 0;
	}
	uint64_t last = raft_last_index(r), n = 0, bytes = 0;
	for (uint64_t i = p->next; i <= last; i++) {
		uint64_t len = r->ents[i - r->base - 1].len;
		if (n && bytes + len > r->cfg.max_msg_bytes)
			break;
		bytes += len;
		n++;
	}
	if (!n && !allow_empty)
		return 0;
	struct keel_raft_msg *m = raft_send(r, KEEL_RAFT_MSG_APPEND, p->id);
	if (!m)
		return 0;
	m->index = prev;
	m->log_term = prev_term;
	m->commit = r->commit;
	r->aux[r->n_out - 1].ent_lo = p->next;
	r->aux[r->n_out - 1].ent_n = n;
	if (p->state == PR_PROBE) {
		p->probe_sent = true;
		return 0;
	}
	if (n) {
		p->next += n;
		infl_add(r, p, p->next - 1, bytes);
		return 1;
	}
	return 0;
}

void raft_flush_appends(struct keel_raft *r)
{
	bool bcast = r->commit_bcast;
	if (!r->repl_dirty && !bcast)
		return;
	r->repl_dirty = r->commit_bcast = false;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		struct progress *p = &r->prs[i];
		if (p->id == r->id)
			continue;
		size_t before = r->n_out;
		while (send_append(r, p, false) == 1)
			;
		/* A new commit index travels on an (empty) append so
		 * followers apply without waiting for the heartbeat. */
		if (bcast && r->n_out == before)
			send_append(r, p, true);
	}
}

static void send_heartbeat(struct keel_raft *r, struct progress *p)
{
	struct keel_raft_msg *m = raft_send(r, KEEL_RAFT_MSG_HEARTBEAT, p->id);
	if (!m)
		return;
	/* Never tell a follower of a commit beyond what it is known to
	 * hold: its log past match may still differ from ours. */
#ifdef KEEL_MUTANT_RAFT_HEARTBEAT_FULL_COMMIT
	/* MUTANT: the heartbeat tells every follower the leader's commit
	 * index, whatever the follower is known to hold. */
	m->commit = r->commit;
#else
	m->commit = p->match < r->commit ? p->match : r->commit;
#endif
	m->ctx = r->read_seq;
	m->lease_tick = r->ticks;
}

void raft_bcast_heartbeat(struct keel_raft *r)
{
	for (uint32_t i = 0; i < r->n_prs; i++)
		if (r->prs[i].id != r->id)
			send_heartbeat(r, &r->prs[i]);
}

static uint64_t majority_value(struct keel_raft *r, const uint64_t *ids, uint32_t n,
			       raft_voter_value_fn fn)
{
	uint64_t v[KEEL_RAFT_MAX_NODES];
	if (!n)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t x = fn(r, ids[i]);
		/* insertion sort, descending: n <= 16 */
		uint32_t j = i;
		while (j && v[j - 1] < x) {
			v[j] = v[j - 1];
			j--;
		}
		v[j] = x;
	}
	return v[raft_quorum(n) - 1];
}

/* The largest value that a quorum of voters all reach: a majority of the
 * configuration, and during joint consensus also of the outgoing one
 * (§4.3). Commit, reads, leases and check-quorum all go through here. */
uint64_t raft_quorum_value(struct keel_raft *r, raft_voter_value_fn fn)
{
	uint64_t a = majority_value(r, r->conf.voters, r->conf.n_voters, fn);
#ifdef KEEL_MUTANT_RAFT_JOINT_QUORUM_NEW_ONLY
	/* MUTANT: commitment, reads and leases in a joint configuration
	 * count only C_new. */
	return a;
#endif
	if (r->conf.n_outgoing) {
		uint64_t b = majority_value(r, r->conf.outgoing, r->conf.n_outgoing, fn);
		if (b < a)
			a = b;
	}
	return a;
}

static uint64_t match_of(struct keel_raft *r, uint64_t id)
{
	struct progress *p = raft_progress(r, id);
	return p ? p->match : 0;
}

static uint64_t active_of(struct keel_raft *r, uint64_t id)
{
	struct progress *p = raft_progress(r, id);
	return p && (p->recent_active || id == r->id);
}

bool raft_quorum_active(struct keel_raft *r)
{
	return raft_quorum_value(r, active_of) == 1;
}

bool raft_maybe_commit(struct keel_raft *r)
{
	uint64_t idx = raft_quorum_value(r, match_of), t;
	if (idx <= r->commit || !raft_term_at(r, idx, &t))
		return false;
#ifndef KEEL_RAFT_BUG_COMMIT_OLD_TERM
	/* §3.6.2: only an entry of the leader's own term is committed by
	 * counting replicas; earlier ones are committed indirectly. */
	if (t != r->term)
		return false;
#endif
	r->commit = idx;
	r->commit_bcast = true;
	return true;
}

void raft_commit_to(struct keel_raft *r, uint64_t index)
{
	if (index > raft_last_index(r))
		index = raft_last_index(r);
	if (index > r->commit)
		r->commit = index;
}

/* What a leader does when its commit index moves. */
void raft_after_commit(struct keel_raft *r)
{
	uint64_t t;
	if (!r->committed_in_term && raft_term_at(r, r->commit, &t) && t == r->term)
		r->committed_in_term = true;
	raft_reads_on_commit(r);
	if (r->conf_index > r->commit)
		return;
	if (r->conf.n_outgoing) {
		/* §4.3: C_old,new is committed (or a new leader inherited it):
		 * now C_new alone. Needs our own term committed first, like
		 * any configuration change. */
		if (!r->committed_in_term)
			return;
		struct keel_raft_conf c = r->conf;
		c.n_outgoing = 0;
		memset(c.outgoing, 0, sizeof(c.outgoing));
		raft_append_conf(r, &c, NULL, NULL);
		return;
	}
	if (!keel_raft_conf_is_voter(&r->conf, r->id)) {
		/* §4.2.2: a leader removed by a configuration entry keeps
		 * leading until that entry commits, without counting itself,
		 * then steps down. On the way out it tells the others the
		 * commit index and hands leadership to an up-to-date voter
		 * (§3.10) rather than leave them to time out. */
		uint64_t heir = KEEL_RAFT_NONE, last = raft_last_index(r);
		for (uint32_t i = 0; i < r->n_prs; i++)
			if (r->prs[i].match == last && keel_raft_conf_is_voter(&r->conf, r->prs[i].id))
				heir = r->prs[i].id;
		raft_become_follower(r, r->term, KEEL_RAFT_NONE);
		raft_bcast_heartbeat(r);
		if (heir)
			raft_send(r, KEEL_RAFT_MSG_TIMEOUT_NOW, heir);
		return;
	}
	/* The removed members' progress may go now; first tell them the
	 * commit, so one that holds its removal knows it is final and stops
	 * campaigning. */
	uint64_t ct;
	raft_term_at(r, r->commit, &ct);
	for (uint32_t i = 0; i < r->n_prs; i++) {
		struct progress *p = &r->prs[i];
		if (p->id == r->id || keel_raft_conf_is_voter(&r->conf, p->id) ||
		    keel_raft_conf_is_learner(&r->conf, p->id))
			continue;
		/* An empty append anchored at the commit index: it commits
		 * only if its log matches there (§3.5), so it is safe even
		 * though we never learned what it holds. */
		struct keel_raft_msg *m = raft_send(r, KEEL_RAFT_MSG_APPEND, p->id);
		if (m) {
			m->index = r->commit;
			m->log_term = ct;
			m->commit = r->commit;
		}
	}
	raft_sync_progress(r);
}

/* ---- follower side ---------------------------------------------------- */

void raft_handle_append(struct keel_raft *r, const struct keel_raft_msg *m)
{
	struct keel_raft_msg *o;
	if (m->index < r->commit) {
		/* Old, or a duplicate: everything up to commit matches. */
		if ((o = raft_send(r, KEEL_RAFT_MSG_APPEND_RESP, m->from)))
			o->index = r->commit;
		return;
	}
	uint64_t t;
	if (!raft_term_at(r, m->index, &t) || t != m->log_term) {
		/* §3.5 consistency check failed. Hint the last index whose
		 * term is <= the leader's prev term, so the leader skips a
		 * whole conflicting term per round trip. */
		uint64_t hint = m->index < raft_last_index(r) ? m->index : raft_last_index(r);
		while (hint > r->commit && raft_term_at(r, hint, &t) && t > m->log_term)
			hint--;
		if ((o = raft_send(r, KEEL_RAFT_MSG_APPEND_RESP, m->from))) {
			o->reject = true;
			o->index = m->index;
			o->reject_hint = hint;
		}
		return;
	}
	size_t i = 0;
	for (; i < m->n_entries; i++) {
		const struct keel_raft_entry *e = &m->entries[i];
		if (!raft_term_at(r, e->index, &t))
			break; /* past our end: append from here */
		if (t == e->term)
			continue;
		if (e->index <= r->commit) {
			keel_error("raft %llu: leader %llu conflicts with committed entry %llu",
				   (unsigned long long)r->id, (unsigned long long)m->from,
				   (unsigned long long)e->index);
			return;
		}
		raft_log_truncate(r, e->index);
		if (r->conf_index >= e->index)
			raft_conf_recompute(r);
		break;
	}
	for (; i < m->n_entries; i++) {
		const struct keel_raft_entry *e = &m->entries[i];
		if (raft_log_append(r, e->term, e->type, e->data, e->len))
			return; /* out of memory: no ack, the leader retries */
		if (e->type == KEEL_RAFT_ENTRY_CONF) {
			struct keel_raft_conf c;
			if (keel_raft_conf_decode(e->data, e->len, &c) == 0)
				raft_conf_apply(r, &c, e->index);
		}
	}
	uint64_t last_new = m->index + m->n_entries;
	raft_commit_to(r, m->commit < last_new ? m->commit : last_new);
	if ((o = raft_send(r, KEEL_RAFT_MSG_APPEND_RESP, m->from)))
		o->index = last_new;
}

void raft_handle_heartbeat(struct keel_raft *r, const struct keel_raft_msg *m)
{
	raft_commit_to(r, m->commit);
	struct keel_raft_msg *o = raft_send(r, KEEL_RAFT_MSG_HEARTBEAT_RESP, m->from);
	if (o) {
		o->ctx = m->ctx;
		o->lease_tick = m->lease_tick;
	}
}

/* ---- leader side ------------------------------------------------------ */

void raft_handle_append_resp(struct keel_raft *r, const struct keel_raft_msg *m)
{
	struct progress *p = raft_progress(r, m->from);
	if (!p || p->id == r->id)
		return;
	p->recent_active = true;
	if (m->reject) {
		if (p->state == PR_REPLICATE) {
			if (m->index <= p->match)
				return; /* stale */
			raft_progress_probe(p, p->match + 1);
		} else if (p->state == PR_PROBE) {
			if (p->next - 1 != m->index)
				return; /* stale */
			uint64_t next = m->reject_hint + 1 < m->index ? m->reject_hint + 1 : m->index;
			if (next < p->match + 1)
				next = p->match + 1;
			if (next < 1)
				next = 1;
			raft_progress_probe(p, next);
		} else {
			return;
		}
		r->repl_dirty = true;
		return;
	}
	if (m->index > raft_last_index(r))
		return; /* acknowledges entries we never sent: a broken peer */
	bool updated = false;
	if (m->index > p->match) {
		p->match = m->index;
		updated = true;
	}
	if (p->next < p->match + 1)
		p->next = p->match + 1;
	switch (p->state) {
	case PR_PROBE:
		p->state = PR_REPLICATE;
		p->next = p->match + 1;
		infl_reset(p);
		break;
	case PR_REPLICATE:
		infl_free_to(p, m->index);
		break;
	case PR_SNAPSHOT:
		if (p->match >= p->snap_index) {
			p->state = PR_REPLICATE;
			p->next = p->match + 1;
			infl_reset(p);
		}
		break;
	}
	p->probe_sent = false;
	r->repl_dirty = true;
	if (updated && raft_maybe_commit(r))
		raft_after_commit(r);
	if (r->role == KEEL_RAFT_LEADER)
		raft_maybe_send_timeout_now(r, p);
}

void raft_handle_heartbeat_resp(struct keel_raft *r, const struct keel_raft_msg *m)
{
	struct progress *p = raft_progress(r, m->from);
	if (!p || p->id == r->id)
		return;
	p->recent_active = true;
	if (m->ctx > p->ack_seq)
		p->ack_seq = m->ctx;
	if (m->lease_tick + 1 > p->ack_tick1)
		p->ack_tick1 = m->lease_tick + 1;
	p->probe_sent = false;
	if (p->state == PR_SNAPSHOT) {
		raft_send_snapshot(r, p); /* resend a lost chunk */
	} else if (p->match < raft_last_index(r)) {
		/* It is behind: an append, even an empty one, either fills the
		 * gap or draws the rejection that sends us back to probing
		 * (appends lost in the replicate state are found this way).
		 * A full window gives up its oldest slot, as that append is
		 * probably lost. */
		if (p->state == PR_REPLICATE && infl_full(r, p) && p->infl_count) {
			p->infl_total -= p->infl_bytes[p->infl_start];
			p->infl_start = (p->infl_start + 1) % p->infl_cap;
			p->infl_count--;
		}
		send_append(r, p, true);
		r->repl_dirty = true;
	}
	raft_reads_check(r);
}

int keel_raft_progress(const struct keel_raft *r, uint64_t id, uint64_t *match, bool *active)
{
	if (r->role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	const struct progress *p = raft_progress((struct keel_raft *)r, id);
	if (!p)
		return KEEL_ENOTFOUND;
	if (match)
		*match = p->match;
	if (active)
		*active = p->recent_active;
	return 0;
}
