/*
 * raft_membership.c — cluster membership changes one server at a time
 * (§4.1, §4.2), learners (§4.2.1), and leadership transfer (§3.10).
 *
 * A configuration takes effect on each server as soon as its entry is
 * appended to that server's log, committed or not (§4.1); a truncated
 * configuration entry is undone by recomputing from the log. Single-server
 * changes are safe because any two majorities of C and C±1 overlap; the
 * traps this file handles:
 *  - only one uncommitted configuration entry at a time (§4.1);
 *  - a new leader must commit an entry of its own term before changing the
 *    configuration, or a change racing a leader change can lose a
 *    committed change (the bug Ongaro reported on raft-dev in 2015);
 *  - a leader removed from the configuration keeps leading without
 *    counting itself until the entry commits, then steps down (§4.2.2);
 *  - a server whose latest (uncommitted) configuration removed it but whose
 *    previous one had it may still campaign: otherwise a two-server cluster
 *    whose leader crashed right after appending its own removal could never
 *    elect anyone (the survivor needs the removed server's vote and cannot
 *    get it with a shorter log; the removed server must finish the change).
 */
#include <string.h>

#include "raft_internal.h"

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Layout: u32 n_voters, n_learners, n_outgoing, then the ids of each. */
int keel_raft_conf_encode(const struct keel_raft_conf *c, uint8_t *buf, size_t cap)
{
	if (c->n_voters > KEEL_RAFT_MAX_NODES || c->n_learners > KEEL_RAFT_MAX_NODES ||
	    c->n_outgoing > KEEL_RAFT_MAX_NODES)
		return KEEL_EBADINPUT;
	size_t need = 12 + 8 * (size_t)(c->n_voters + c->n_learners + c->n_outgoing);
	if (cap < need)
		return KEEL_ETOOBIG;
	uint32_t n[3] = {c->n_voters, c->n_learners, c->n_outgoing};
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < 4; i++)
			buf[4 * k + i] = (uint8_t)(n[k] >> (8 * i));
	uint8_t *p = buf + 12;
	for (uint32_t i = 0; i < n[0]; i++, p += 8)
		put64(p, c->voters[i]);
	for (uint32_t i = 0; i < n[1]; i++, p += 8)
		put64(p, c->learners[i]);
	for (uint32_t i = 0; i < n[2]; i++, p += 8)
		put64(p, c->outgoing[i]);
	return (int)need;
}

int keel_raft_conf_decode(const uint8_t *buf, size_t len, struct keel_raft_conf *c)
{
	memset(c, 0, sizeof(*c));
	if (len < 12)
		return KEEL_EPROTO;
	uint32_t n[3] = {0, 0, 0};
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < 4; i++)
			n[k] |= (uint32_t)buf[4 * k + i] << (8 * i);
	if (n[0] > KEEL_RAFT_MAX_NODES || n[1] > KEEL_RAFT_MAX_NODES ||
	    n[2] > KEEL_RAFT_MAX_NODES || len != 12 + 8 * (size_t)(n[0] + n[1] + n[2]))
		return KEEL_EPROTO;
	const uint8_t *p = buf + 12;
	for (uint32_t i = 0; i < n[0]; i++, p += 8)
		c->voters[i] = get64(p);
	for (uint32_t i = 0; i < n[1]; i++, p += 8)
		c->learners[i] = get64(p);
	for (uint32_t i = 0; i < n[2]; i++, p += 8)
		c->outgoing[i] = get64(p);
	c->n_voters = n[0];
	c->n_learners = n[1];
	c->n_outgoing = n[2];
	return 0;
}

static bool in_list(const uint64_t *ids, uint32_t n, uint64_t id)
{
	for (uint32_t i = 0; i < n && i < KEEL_RAFT_MAX_NODES; i++)
		if (ids[i] == id)
			return true;
	return false;
}

bool keel_raft_conf_is_voter(const struct keel_raft_conf *c, uint64_t id)
{
	return in_list(c->voters, c->n_voters, id) || in_list(c->outgoing, c->n_outgoing, id);
}

bool keel_raft_conf_is_learner(const struct keel_raft_conf *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->n_learners && i < KEEL_RAFT_MAX_NODES; i++)
		if (c->learners[i] == id)
			return true;
	return false;
}

static bool member(const struct keel_raft_conf *c, uint64_t id)
{
	return keel_raft_conf_is_voter(c, id) || keel_raft_conf_is_learner(c, id);
}

/* Leader: one progress per member (voters, learners) plus itself. While
 * the latest configuration is uncommitted, members it removed keep theirs,
 * so they receive the entry that removes them and stop campaigning. */
static bool tracked(const struct keel_raft *r, uint64_t id)
{
	return id == r->id || member(&r->conf, id) ||
	       (r->conf_index > r->commit && member(&r->prev_conf, id));
}

void raft_sync_progress(struct keel_raft *r)
{
	uint32_t j = 0;
	for (uint32_t i = 0; i < r->n_prs; i++) {
		struct progress *p = &r->prs[i];
		if (!tracked(r, p->id)) {
			raft_progress_free(p);
			continue;
		}
		r->prs[j++] = *p;
	}
	r->n_prs = j;
	const struct keel_raft_conf *cs[2] = {&r->conf, &r->prev_conf};
	for (int k = 0; k < 2; k++) {
		uint64_t ids[KEEL_RAFT_MAX_NODES * 3 + 1];
		uint32_t n = 0;
		ids[n++] = r->id;
		for (uint32_t i = 0; i < cs[k]->n_voters; i++)
			ids[n++] = cs[k]->voters[i];
		for (uint32_t i = 0; i < cs[k]->n_learners; i++)
			ids[n++] = cs[k]->learners[i];
		for (uint32_t i = 0; i < cs[k]->n_outgoing; i++)
			ids[n++] = cs[k]->outgoing[i];
		for (uint32_t i = 0; i < n; i++) {
			if (!tracked(r, ids[i]) || raft_progress(r, ids[i]) ||
			    r->n_prs >= KEEL_RAFT_MAX_NODES * 6 + 1)
				continue;
			struct progress *p = &r->prs[r->n_prs++];
			memset(p, 0, sizeof(*p));
			p->id = ids[i];
			raft_progress_reset(r, p, raft_last_index(r) + 1);
			p->recent_active = true; /* a new member gets a grace period */
		}
	}
}

void raft_conf_apply(struct keel_raft *r, const struct keel_raft_conf *c, uint64_t index)
{
	r->prev_conf = r->conf;
	r->conf = *c;
	r->conf_index = index;
	if (r->role == KEEL_RAFT_LEADER) {
		raft_sync_progress(r);
		if (r->transferee && !keel_raft_conf_is_voter(c, r->transferee))
			r->transferee = KEEL_RAFT_NONE;
	}
}

/* Latest configuration at or below index: from the log, else from the
 * snapshot, else empty (a server that has not yet heard of any). */
static bool find_conf(const struct keel_raft *r, uint64_t index, uint64_t *at,
		      struct keel_raft_conf *out)
{
	uint64_t last = raft_last_index(r);
	if (index > last)
		index = last;
	for (uint64_t i = index; i > r->base; i--) {
		const struct keel_raft_entry *e = &r->ents[i - r->base - 1];
		if (e->type == KEEL_RAFT_ENTRY_CONF && keel_raft_conf_decode(e->data, e->len, out) == 0) {
			*at = i;
			return true;
		}
	}
	return false;
}

bool raft_conf_at(const struct keel_raft *r, uint64_t index, struct keel_raft_conf *out)
{
	uint64_t at;
	if (find_conf(r, index, &at, out))
		return true;
	if (r->have_snap)
		*out = r->snap.meta.conf;
	else
		memset(out, 0, sizeof(*out));
	return true;
}

void raft_conf_recompute(struct keel_raft *r)
{
	uint64_t at = 0, at2 = 0;
	struct keel_raft_conf c, p;
	if (find_conf(r, raft_last_index(r), &at, &c)) {
		r->conf = c;
		r->conf_index = at;
		if (find_conf(r, at - 1, &at2, &p))
			r->prev_conf = p;
		else
			raft_conf_at(r, 0, &r->prev_conf);
	} else {
		raft_conf_at(r, 0, &r->conf);
		r->prev_conf = r->conf;
		r->conf_index = r->have_snap ? r->snap.meta.index : r->base;
	}
	if (r->role == KEEL_RAFT_LEADER)
		raft_sync_progress(r);
}

bool raft_promotable(const struct keel_raft *r)
{
	if (keel_raft_conf_is_voter(&r->conf, r->id))
		return true;
	return r->conf_index > r->commit && keel_raft_conf_is_voter(&r->prev_conf, r->id);
}

static bool conf_remove(uint64_t *ids, uint32_t *n, uint64_t id)
{
	for (uint32_t i = 0; i < *n; i++) {
		if (ids[i] == id) {
			memmove(ids + i, ids + i + 1, (*n - i - 1) * sizeof(*ids));
			(*n)--;
			return true;
		}
	}
	return false;
}

int keel_raft_propose_conf_change(struct keel_raft *r, enum keel_raft_conf_op op,
				  uint64_t node, uint64_t *index, uint64_t *term)
{
	if (r->role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	if (node == KEEL_RAFT_NONE)
		return KEEL_EBADINPUT;
	if (r->transferee != KEEL_RAFT_NONE || r->conf_index > r->commit ||
	    !r->committed_in_term || r->conf.n_outgoing)
		return KEEL_EBUSY;
	struct keel_raft_conf c = r->conf;
	switch (op) {
	case KEEL_RAFT_CONF_ADD_VOTER:
		if (keel_raft_conf_is_voter(&c, node))
			return KEEL_EBADINPUT;
		if (keel_raft_conf_is_learner(&c, node)) {
			/* §4.2.1: promote only a learner that caught up, so
			 * the new quorum does not wait on a slow log. */
			struct progress *p = raft_progress(r, node);
			if (!p || p->match < r->commit)
				return KEEL_EBUSY;
			conf_remove(c.learners, &c.n_learners, node);
		}
		if (c.n_voters >= KEEL_RAFT_MAX_NODES)
			return KEEL_ETOOBIG;
		c.voters[c.n_voters++] = node;
		break;
	case KEEL_RAFT_CONF_ADD_LEARNER:
		if (member(&c, node))
			return KEEL_EBADINPUT;
		if (c.n_learners >= KEEL_RAFT_MAX_NODES)
			return KEEL_ETOOBIG;
		c.learners[c.n_learners++] = node;
		break;
	case KEEL_RAFT_CONF_REMOVE:
		if (!conf_remove(c.voters, &c.n_voters, node) &&
		    !conf_remove(c.learners, &c.n_learners, node))
			return KEEL_ENOTFOUND;
		if (c.n_voters == 0)
			return KEEL_EBADINPUT;
		break;
	default:
		return KEEL_EBADINPUT;
	}
	return raft_append_conf(r, &c, index, term);
}

int raft_append_conf(struct keel_raft *r, const struct keel_raft_conf *c,
		     uint64_t *index, uint64_t *term)
{
	uint8_t buf[KEEL_RAFT_CONF_ENCODED_MAX];
	int n = keel_raft_conf_encode(c, buf, sizeof(buf));
	if (n < 0)
		return n;
	int rc = raft_log_append(r, r->term, KEEL_RAFT_ENTRY_CONF, buf, (size_t)n);
	if (rc)
		return rc;
	raft_conf_apply(r, c, raft_last_index(r));
	r->repl_dirty = true;
	if (index)
		*index = raft_last_index(r);
	if (term)
		*term = r->term;
	/* A change that shrinks the quorum may commit what is already
	 * replicated (e.g. removing an unreachable voter). */
	if (raft_maybe_commit(r))
		raft_after_commit(r);
	return 0;
}

static bool ids_valid(const uint64_t *ids, uint32_t n)
{
	if (n > KEEL_RAFT_MAX_NODES)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		if (ids[i] == KEEL_RAFT_NONE)
			return false;
		for (uint32_t j = i + 1; j < n; j++)
			if (ids[i] == ids[j])
				return false;
	}
	return true;
}

int keel_raft_propose_conf_joint(struct keel_raft *r, const struct keel_raft_conf *target,
				 uint64_t *index, uint64_t *term)
{
	if (r->role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	if (!target->n_voters || !ids_valid(target->voters, target->n_voters) ||
	    !ids_valid(target->learners, target->n_learners))
		return KEEL_EBADINPUT;
	for (uint32_t i = 0; i < target->n_learners; i++)
		if (in_list(target->voters, target->n_voters, target->learners[i]))
			return KEEL_EBADINPUT;
	if (r->transferee != KEEL_RAFT_NONE || r->conf_index > r->commit ||
	    !r->committed_in_term || r->conf.n_outgoing)
		return KEEL_EBUSY;
	/* §4.3: C_old,new. Decisions need both majorities from the moment
	 * it is appended; C_new follows once it commits (raft_after_commit). */
	struct keel_raft_conf c = {0};
	c.n_voters = target->n_voters;
	memcpy(c.voters, target->voters, sizeof(c.voters));
	c.n_learners = target->n_learners;
	memcpy(c.learners, target->learners, sizeof(c.learners));
	c.n_outgoing = r->conf.n_voters;
	memcpy(c.outgoing, r->conf.voters, sizeof(c.outgoing));
	return raft_append_conf(r, &c, index, term);
}

void raft_maybe_send_timeout_now(struct keel_raft *r, struct progress *p)
{
	if (r->transferee != p->id || p->match != raft_last_index(r))
		return;
	/* §3.10: the target's log is complete; tell it to start an election
	 * now. From here on our lease cannot be trusted: the target's voters
	 * ignore it on purpose. */
	r->lease_disabled = true;
	raft_send(r, KEEL_RAFT_MSG_TIMEOUT_NOW, p->id);
}

int keel_raft_transfer_leadership(struct keel_raft *r, uint64_t to)
{
	if (r->role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	if (to == r->id)
		return 0;
	if (!keel_raft_conf_is_voter(&r->conf, to))
		return KEEL_ENOTFOUND;
	struct progress *p = raft_progress(r, to);
	if (!p)
		return KEEL_ENOTFOUND;
	r->transferee = to;
	r->election_elapsed = 0; /* the transfer gets one election timeout */
	raft_maybe_send_timeout_now(r, p);
	r->repl_dirty = true;
	return 0;
}

void raft_handle_timeout_now(struct keel_raft *r, const struct keel_raft_msg *m)
{
	if (!raft_promotable(r))
		return;
	keel_debug("raft %llu: TIMEOUT_NOW from %llu", (unsigned long long)r->id,
		   (unsigned long long)m->from);
	raft_campaign(r, false, true);
}
