/*
 * raft_snapshot.c — snapshots, log compaction (§5.1) and InstallSnapshot
 * in chunks (§5.3).
 *
 * The application snapshots its state machine and hands the bytes to the
 * core (keel_raft_snapshot_taken); the core keeps one copy, the latest, to
 * send to followers whose next entry was compacted away. Chunks go one at a
 * time (stop and wait): the follower acknowledges each with the offset it
 * wants next, and a heartbeat response resends a chunk that was lost. The
 * snapshot is identified by (index, term): the same pair names the same
 * state (log matching plus a deterministic state machine), so a follower
 * resumes a transfer across leader changes and rejects mixed chunks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

int raft_snapshot_store(struct keel_raft *r, const struct keel_raft_snapshot_meta *meta,
			const void *data, size_t len)
{
	uint8_t *copy = NULL;
	if (len) {
		copy = malloc(len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, data, len);
	}
	free(r->snap_buf);
	r->snap_buf = copy;
	r->snap.meta = *meta;
	r->snap.data = copy;
	r->snap.len = len;
	r->have_snap = true;
	return 0;
}

void raft_snapshot_free(struct keel_raft *r)
{
	free(r->snap_buf);
	r->snap_buf = NULL;
	r->have_snap = false;
}

int keel_raft_snapshot_taken(struct keel_raft *r, uint64_t index,
			     const void *data, size_t len, uint64_t keep_entries)
{
	uint64_t term;
	if (index > r->applied || (r->have_snap && index < r->snap.meta.index) ||
	    !raft_term_at(r, index, &term) || (len && !data))
		return KEEL_EBADINPUT;
	struct keel_raft_snapshot_meta meta = {.index = index, .term = term};
	if (!raft_conf_at(r, index, &meta.conf))
		return KEEL_EBADINPUT;
	int rc = raft_snapshot_store(r, &meta, data, len);
	if (rc)
		return rc;
	if (index > keep_entries)
		raft_log_compact(r, index - keep_entries);
	return 0;
}

int keel_raft_compact(struct keel_raft *r, uint64_t index)
{
	if (!r->have_snap || index > r->snap.meta.index || index > r->applied)
		return KEEL_EBADINPUT;
	raft_log_compact(r, index);
	return 0;
}

/* Leader: (re)start or continue sending the latest snapshot to p. */
bool raft_send_snapshot(struct keel_raft *r, struct progress *p)
{
	if (!r->have_snap)
		return false;
	if (p->state != PR_SNAPSHOT || p->snap_index != r->snap.meta.index) {
		p->state = PR_SNAPSHOT;
		p->snap_index = r->snap.meta.index;
		p->snap_offset = 0;
		p->probe_sent = false;
		p->infl_start = p->infl_count = 0;
		p->infl_total = 0;
	}
	uint64_t off = p->snap_offset, total = r->snap.len;
	if (off > total)
		off = p->snap_offset = 0;
	uint64_t n = total - off;
	if (n > r->cfg.max_snapshot_chunk)
		n = r->cfg.max_snapshot_chunk;
	struct keel_raft_msg *m = raft_send(r, KEEL_RAFT_MSG_SNAPSHOT, p->id);
	if (!m)
		return false;
	m->snap = r->snap.meta;
	m->snap_offset = off;
	m->snap_total = total;
	m->chunk_len = n;
	m->snap_done = off + n == total;
	r->aux[r->n_out - 1].chunk = true;
	return true;
}

void raft_handle_snapshot_resp(struct keel_raft *r, const struct keel_raft_msg *m)
{
	struct progress *p = raft_progress(r, m->from);
	if (!p)
		return;
	p->recent_active = true;
	if (p->state != PR_SNAPSHOT || m->snap.index != p->snap_index)
		return;
	if (!m->reject && m->snap_offset <= p->snap_offset)
		return; /* duplicate acknowledgement */
	p->snap_offset = m->snap_offset;
	if (p->snap_index == r->snap.meta.index && p->snap_offset < r->snap.len)
		raft_send_snapshot(r, p);
}

static void reply_append(struct keel_raft *r, uint64_t to, uint64_t index)
{
	struct keel_raft_msg *o = raft_send(r, KEEL_RAFT_MSG_APPEND_RESP, to);
	if (o)
		o->index = index;
}

/* A whole snapshot arrived (§5.3 steps 5-8). */
static void install(struct keel_raft *r, uint64_t from)
{
	uint64_t idx = r->rcv_index, t;
	if (idx <= r->commit) {
		reply_append(r, from, r->commit);
		return;
	}
#ifdef KEEL_MUTANT_RAFT_SNAPSHOT_KEEPS_LOG
	/* MUTANT: the log past the snapshot is kept whenever it reaches the
	 * snapshot's index, whatever the term there. */
	if (raft_term_at(r, idx, &t)) {
#else
	if (raft_term_at(r, idx, &t) && t == r->rcv_term) {
#endif
		/* Our log already holds it: keep the entries after it. */
		raft_commit_to(r, idx);
		reply_append(r, from, idx);
		return;
	}
	struct keel_raft_snapshot_meta meta = {
		.index = idx, .term = r->rcv_term, .conf = r->rcv_conf};
	if (raft_snapshot_store(r, &meta, r->rcv_buf, r->rcv_len))
		return; /* out of memory: no reply, the leader resends */
	raft_log_reset(r, idx, r->rcv_term);
	r->stabled = idx;
	r->commit = idx;
	r->conf = r->rcv_conf;
	r->prev_conf = r->rcv_conf;
	r->conf_index = idx;
	r->pending_install = true;
	keel_debug("raft %llu: installed snapshot %llu/%llu", (unsigned long long)r->id,
		   (unsigned long long)idx, (unsigned long long)r->rcv_term);
	reply_append(r, from, idx);
}

void raft_handle_snapshot(struct keel_raft *r, const struct keel_raft_msg *m)
{
	bool same = r->rcv_index == m->snap.index && r->rcv_term == m->snap.term &&
		    r->rcv_total == m->snap_total;
	struct keel_raft_msg *o;
	if (m->snap_offset == 0 && !(same && r->rcv_len == r->rcv_total && r->rcv_buf)) {
		r->rcv_index = m->snap.index;
		r->rcv_term = m->snap.term;
		r->rcv_total = m->snap_total;
		r->rcv_conf = m->snap.conf;
		r->rcv_len = 0;
		same = true;
	}
	if (!same || m->snap_offset > r->rcv_len) {
		if ((o = raft_send(r, KEEL_RAFT_MSG_SNAPSHOT_RESP, m->from))) {
			o->snap.index = m->snap.index;
			o->snap_offset = same ? r->rcv_len : 0;
			o->reject = true;
		}
		return;
	}
	if (m->snap_offset == r->rcv_len && m->chunk_len) {
		size_t need = r->rcv_len + m->chunk_len;
		if (need > r->rcv_cap) {
			/* Grow by what actually arrived, never by the total a
			 * peer claims. */
			size_t cap = r->rcv_cap ? r->rcv_cap * 2 : 4096;
			while (cap < need)
				cap *= 2;
			if (cap > r->rcv_total)
				cap = r->rcv_total;
			uint8_t *b = realloc(r->rcv_buf, cap);
			if (!b)
				return;
			r->rcv_buf = b;
			r->rcv_cap = cap;
		}
		memcpy(r->rcv_buf + r->rcv_len, m->chunk, m->chunk_len);
		r->rcv_len = need;
	}
	if (r->rcv_len == r->rcv_total) {
		install(r, m->from);
		return;
	}
	if ((o = raft_send(r, KEEL_RAFT_MSG_SNAPSHOT_RESP, m->from))) {
		o->snap.index = m->snap.index;
		o->snap_offset = r->rcv_len;
	}
}
