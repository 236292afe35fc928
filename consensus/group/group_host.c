/* The Raft engine of the replicated log (keel/rlog.h), "the group host": a
 * Raft core (keel/raft.h) + a WAL + the shard's endpoint + a state machine,
 * on one shard.
 *
 * The loop is the one written at the top of keel/raft.h: hard state (term,
 * vote) is saved synchronously and entries are appended to the WAL
 * asynchronously (group commit: one ready batch, one write + fdatasync).
 * While that write is in flight the leader's APPEND and HEARTBEAT messages
 * already go out (§10.2.1: the leader may send in parallel with its own
 * write; the core counts its own log only after advance); every other
 * message (votes, append acks) waits until the batch is durable, and
 * committed entries are applied only then. At open the snapshot is
 * restore()d, then the WAL's entries after it become the core's boot; the
 * commit index is not persisted, so the state machine sees every committed
 * entry after the snapshot again once the leader says it is committed.
 * Snapshots every snapshot_every applied entries go to the snapshot store
 * and compact the WAL (§5.1); one from the leader replaces both (§5.3).
 *
 * Shape of the code: every input (a message, a tick, a proposal, a read)
 * is queued, then pump() feeds the queue to the core and walks the ready
 * batches. A batch whose entries must be written is "in flight" (busy)
 * from keel_raft_ready() until the WAL reports them durable; meanwhile the
 * core is not touched (keel/raft.h forbids mutating calls between ready and
 * advance) and inputs wait in the queues. That wait is also the group
 * commit: everything that arrived during one fdatasync goes out in the
 * next batch's single write. Messages are group_net.c's; membership changes and
 * transfer group_member.c's; the time source is the endpoint's clock, the
 * disks are the injected I/O backends, so the simulation runs this file. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "consensus/group/group_internal.h"
#include "keel/config.h"

/* ---- queues ------------------------------------------------------------- */

void group_queue_msg(struct keel_group *g, struct gin *in)
{
	in->next = NULL;
	if (g->in_tail)
		g->in_tail->next = in;
	else
		g->in_head = in;
	g->in_tail = in;
	g->in_n++;
}

/* Feeds queued inputs to the core. Only when no batch is in flight. */
static void drain_inputs(struct keel_group *g)
{
	while (g->queued_ticks) {
		g->queued_ticks--;
		keel_raft_tick(g->r);
	}
	while (g->in_head) {
		struct gin *in = g->in_head;
		g->in_head = in->next;
		if (!g->in_head)
			g->in_tail = NULL;
		g->in_n--;
		int rc = keel_raft_step(g->r, &in->m);
		if (rc < 0)
			keel_log_limited(&g->lim, 5, KEEL_LOG_WARN,
					 "raft: group %u: %s from node %llu dropped by the core: %s",
					 g->cfg.group, keel_raft_msg_type_name(in->m.type),
					 (unsigned long long)in->m.from, keel_strerror(rc));
		keel_raft_msg_free(&in->m);
		free(in);
	}
	struct gprop *p;
	while ((p = gprop_pop(&g->queued))) {
		int rc = keel_raft_propose(g->r, p->data, p->len, &p->index, &p->term);
		if (rc < 0) {
			g->st.proposals_failed++;
			if (p->cb)
				p->cb(p->arg, rc, 0);
			free(p);
			continue;
		}
		gprop_push(&g->pending, p);
	}
	if (g->transfer_to) {
		int rc = keel_raft_transfer_leadership(g->r, g->transfer_to);
		if (rc < 0)
			keel_info("raft: group %u: transfer to node %u: %s", g->cfg.group,
				  g->transfer_to, keel_strerror(rc));
		g->transfer_to = 0;
	}
	while (g->rq_head) {
		struct gread *r = g->rq_head;
		g->rq_head = r->next;
		r->ctx = ++g->next_ctx;
		int rc = keel_raft_read_index(g->r, r->ctx);
		if (rc < 0) {
			r->cb(r->arg, rc, 0);
			free(r);
			continue;
		}
		r->next = g->reads;
		g->reads = r;
	}
}

/* ---- applying ----------------------------------------------------------- */

static void apply_committed(struct keel_group *g, const struct keel_raft_ready *rd)
{
	for (size_t i = 0; i < rd->n_committed; i++) {
		const struct keel_raft_entry *e = &rd->committed[i];
#ifdef KEEL_GROUP_BUG_APPLY_AHEAD
		/* planted: the entry was applied when it was appended */
		if (e->index <= g->applied)
			continue;
#endif
		if (e->type == KEEL_RAFT_ENTRY_NORMAL) {
			g->cfg.sm.apply(g->cfg.sm.arg, e->index, e->data, e->len);
			g->st.applied++;
		}
		g->applied = e->index;
		if (e->type == KEEL_RAFT_ENTRY_CONF)
			group_change_applied(g, e->index, e->term);
		if (g->pending.head)
			g->st.proposals_ok += gprop_complete_at(&g->pending, e->index, e->term);
	}
	for (size_t i = 0; i < rd->n_reads; i++) {
		for (struct gread *r = g->reads; r; r = r->next) {
			if (r->ctx == rd->reads[i].ctx) {
				r->index = rd->reads[i].index;
				r->have_index = true;
			}
		}
	}
}

#ifdef KEEL_GROUP_BUG_APPLY_AHEAD
/* Planted bug (tests/sim): entries are applied as soon as they are
 * appended to this node's log, before they are known committed. */
static void apply_ahead(struct keel_group *g, const struct keel_raft_ready *rd)
{
	for (size_t i = 0; i < rd->n_entries; i++) {
		const struct keel_raft_entry *e = &rd->entries[i];
		if (e->index != g->applied + 1)
			continue;
		if (e->type == KEEL_RAFT_ENTRY_NORMAL) {
			g->cfg.sm.apply(g->cfg.sm.arg, e->index, e->data, e->len);
			g->st.applied++;
		}
		g->applied = e->index;
	}
}
#endif

/* ---- failure ------------------------------------------------------------ */

void group_fail(struct keel_group *g, int code, const char *why)
{
	if (g->failed)
		return;
	g->failed = true;
	g->fail_code = code;
	keel_error("raft: group %u on node %u stops: %s (%s)", g->cfg.group, g->id, why,
		   keel_strerror(code));
	keel_clock_cancel(g->clock, &g->tick);
	gprop_fail_all(&g->queued, KEEL_EDURABLE);
	gprop_fail_all(&g->pending, KEEL_EDURABLE);
	gread_fail_all(&g->rq_head, KEEL_EDURABLE);
	gread_fail_all(&g->reads, KEEL_EDURABLE);
	group_change_fail(g, KEEL_EDURABLE);
	if (g->cfg.sm.on_error)
		g->cfg.sm.on_error(g->cfg.sm.arg, code, why);
}

/* ---- snapshots ---------------------------------------------------------- */

/* The WAL holds exactly the log after index: entries up to it are in the
 * snapshot, later ones (a conflicting suffix) are gone; the next append is
 * index + 1. Truncate first, so a crash in between leaves a prefix. */
static int wal_reset_to(struct keel_group *g, uint64_t index)
{
	int rc = 0;
	if (keel_wal_last_index(g->w) > index && keel_wal_first_index(g->w) <= index + 1)
		rc = keel_wal_truncate(g->w, index);
	if (rc == 0)
		rc = keel_wal_compact(g->w, index);
	return rc;
}

/* Inline, on the shard: a leader's snapshot (it must be durable before the
 * WAL is cut, right now), and every snapshot where there is no writer. */
static int snap_save(struct keel_group *g, const struct keel_raft_snapshot *s, char *err)
{
	uint8_t hdr[KEEL_GROUP_SNAPSHOT_HDR_MAX];
	int n = keel_group_snapshot_encode_header(s, hdr, sizeof(hdr));
	if (n < 0)
		return keel_errmsg_set(err, n, "snapshot: encoding %zu bytes", s->len);
	return snapstore_save(&g->snap, hdr, (size_t)n, s->data, s->len, err);
}

/* The WAL drops what a durable snapshot covers. Only between batches (no
 * append in flight: keel_wal_compact would wait for it). */
static void compact_now(struct keel_group *g)
{
	uint64_t upto = g->compact_to;
	g->compact_to = 0;
	if (!upto || g->failed)
		return;
	int rc = keel_wal_compact(g->w, upto);
	if (rc < 0)
		keel_warn("raft: group %u: compacting the WAL to %llu: %s", g->cfg.group,
			  (unsigned long long)upto, keel_wal_errmsg(g->w));
}

static void maybe_snapshot(struct keel_group *g);

/* The snapshot writer's answer, on the shard (a runtime message). */
static void snap_written(void *arg, uint64_t index, int rc, const char *errmsg)
{
	struct keel_group *g = arg;
	g->snap_job = NULL;
	if (rc < 0) {
		keel_warn("raft: group %u: %s (the WAL keeps the log)", g->cfg.group, errmsg);
		return;
	}
	g->st.snapshots_taken++;
	keel_debug("raft: group %u: snapshot at index %llu durable", g->cfg.group,
		   (unsigned long long)index);
	g->compact_to = index;
	if (!g->busy) { /* else at the end of the batch in flight */
		compact_now(g);
		maybe_snapshot(g); /* one skipped while this one was written */
	}
}

/* A write in flight is waited for (and forgotten) before the store is
 * written or closed by the shard itself. */
static void snap_job_drop(struct keel_group *g)
{
	if (g->snap_job) {
		snapjob_detach(g->snap_job);
		g->snap_job = NULL;
	}
}

/* §5.3: a snapshot from the leader replaces our state and our log. Saved
 * before the WAL is cut, so a crash in between finds the snapshot and an
 * old log, which open_core() reconciles. */
static int install_snapshot(struct keel_group *g, const struct keel_raft_snapshot *s)
{
	char err[KEEL_ERRMSG_LEN];
	if (!g->cfg.sm.restore) {
		group_fail(g, KEEL_ENOTSUP, "a snapshot arrived, and the state machine cannot restore one");
		return KEEL_ENOTSUP;
	}
	snap_job_drop(g); /* older than this one: the WAL is reset below anyway */
	g->compact_to = 0;
	int rc = snap_save(g, s, err);
	if (rc < 0) {
		group_fail(g, rc, err);
		return rc;
	}
	rc = g->cfg.sm.restore(g->cfg.sm.arg, s->meta.index, s->data, s->len);
	if (rc < 0) {
		group_fail(g, rc, "the state machine refused the leader's snapshot");
		return rc;
	}
	rc = wal_reset_to(g, s->meta.index);
	if (rc < 0) {
		group_fail(g, rc, keel_wal_errmsg(g->w));
		return rc;
	}
	keel_info("raft: group %u installed a snapshot at index %llu (term %llu, %zu bytes)",
		  g->cfg.group, (unsigned long long)s->meta.index,
		  (unsigned long long)s->meta.term, s->len);
	g->applied = s->meta.index;
	g->snap_index = s->meta.index;
	g->st.snapshots_installed++;
	/* Our proposals at or below the snapshot: committed or overwritten,
	 * we cannot tell which. */
#ifdef KEEL_MUTANT_GROUP_SNAPSHOT_PROPS_COMMITTED
	/* MUTANT: "the leader's snapshot holds them, so they committed":
	 * proposals at or below it are reported committed, though another
	 * leader's entries may have taken their indexes. */
	gprop_fail_upto(&g->pending, s->meta.index, 0);
#else
	gprop_fail_upto(&g->pending, s->meta.index, KEEL_ETIMEOUT);
#endif
	return 0;
}

/* After advance (the core may be mutated again): every snapshot_every
 * applied entries, snapshot the state machine (its copy of its state, on
 * the shard), give it to the core (which keeps a copy for followers), and
 * have the file written: by the snapshot writer's thread when there is one
 * (snap_written() then compacts the WAL, once the file is durable), else
 * here. One write at a time; the next snapshot waits for it. A failure is
 * logged and retried later: the log just stays longer. A crash at any
 * point leaves the old snapshot file and a WAL not yet compacted past it,
 * or the new file and that WAL. */
static void maybe_snapshot(struct keel_group *g)
{
	if (g->snap_job || !snap_due(g->applied, g->snap_index, g->snap_every, g->snap_phase))
		return;
	void *data = NULL;
	size_t len = 0;
	uint64_t t0 = keel_now_ns();
	int rc = g->cfg.sm.snapshot(g->cfg.sm.arg, &data, &len);
	if (rc < 0) {
		keel_warn("raft: group %u: the state machine's snapshot failed: %s", g->cfg.group,
			  keel_strerror(rc));
		g->snap_index = g->applied; /* try again after snapshot_every more */
		return;
	}
	rc = keel_raft_snapshot_taken(g->r, g->applied, data, len, g->snap_keep);
	if (rc < 0) {
		free(data);
		keel_warn("raft: group %u: snapshot at %llu: %s", g->cfg.group,
			  (unsigned long long)g->applied, keel_strerror(rc));
		g->snap_index = g->applied;
		return;
	}
	const struct keel_raft_snapshot *s = keel_raft_snapshot_get(g->r);
	char err[KEEL_ERRMSG_LEN];
	g->snap_index = s->meta.index;
	keel_debug("raft: group %u: snapshot at index %llu, %zu bytes, copied in %llu us", g->cfg.group,
		   (unsigned long long)s->meta.index, s->len,
		   (unsigned long long)(keel_now_ns() - t0) / 1000);
	if (g->snap_async) {
		/* the writer takes data (the same bytes as the core's copy) */
		rc = snapwriter_submit(&g->snap, g->shard, &s->meta, data, len, snap_written, g,
				       &g->snap_job, err);
		if (rc < 0)
			keel_warn("raft: group %u: %s (the WAL keeps the log)", g->cfg.group, err);
		return;
	}
	free(data);
	rc = snap_save(g, s, err);
	snap_written(g, s->meta.index, rc, err);
}

/* ---- the ready loop ----------------------------------------------------- */

static void note_role(struct keel_group *g, const struct keel_raft_ready *rd)
{
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	if (rd->role == g->role && st.term == g->term && rd->leader == g->leader)
		return;
	bool was_leader = g->role == KEEL_RAFT_LEADER;
	if (rd->leader != g->leader || st.term != g->term)
		g->st.leader_changes++;
	g->role = rd->role;
	g->term = st.term;
	g->leader = rd->leader;
	g->role_changed = true;
	/* A deposed leader's pending reads are dropped by the core (§6.4):
	 * say so now rather than at their timeout. */
	g->fail_reads = was_leader && rd->role != KEEL_RAFT_LEADER;
}

static void ready_finish(struct keel_group *g)
{
	struct keel_raft_ready *rd = &g->rd;
#ifdef KEEL_GROUP_BUG_ACK_EARLY
	/* planted: everything went out in ready_start already */
	if (!rd->n_entries)
		group_send_msgs(g, rd, GROUP_SEND_ALL);
#else
	group_send_msgs(g, rd, rd->n_entries ? GROUP_SEND_LATE : GROUP_SEND_ALL);
#endif
	apply_committed(g, rd);
	note_role(g, rd);
	keel_raft_advance(g->r, rd);
	g->busy = false;
	compact_now(g);
	maybe_snapshot(g);
	gread_complete(&g->reads, g->applied);
	if (g->fail_reads) {
		g->fail_reads = false;
		gread_fail_all(&g->reads, KEEL_ENOTLEADER);
	}
	if (g->role_changed) {
		g->role_changed = false;
		if (g->cfg.sm.on_leader)
			g->cfg.sm.on_leader(g->cfg.sm.arg, (uint32_t)g->leader, g->term,
					    g->role == KEEL_RAFT_LEADER);
	}
	group_change_step(g);
}

static void wal_done(void *arg, uint64_t last_index, int status)
{
	struct keel_group *g = arg;
	(void)last_index;
	g->wal_done = true;
	g->wal_status = status;
	if (g->closing || g->in_start)
		return;
	/* We run inside keel_wal_poll: the WAL may not be truncated from
	 * here, and the next batch may need that. Finish on a timer (it
	 * fires in this same reactor iteration). */
	keel_clock_arm(g->clock, &g->kick, 0);
}

/* Starts persisting the batch in g->rd. Returns with g->busy still set when
 * its entries are being written (wal_done finishes it). */
static void ready_start(struct keel_group *g)
{
	struct keel_raft_ready *rd = &g->rd;
	int rc;
	/* Hard state first: an entry's term is never above the saved term, as
	 * keel_raft_create checks at restart. Only term and vote are saved:
	 * the commit index is learned again from the leader. */
	if (rd->hard_state_changed &&
	    (rd->hard_state.term != g->saved_hs.term || rd->hard_state.vote != g->saved_hs.vote)) {
		struct keel_wal_hard_state hs = {rd->hard_state.term, rd->hard_state.vote};
		rc = keel_wal_save_hard_state(g->w, &hs);
		if (rc < 0) {
			group_fail(g, rc, keel_wal_errmsg(g->w));
			return;
		}
		g->saved_hs = hs;
		g->st.hard_state_saves++;
	}
	if (rd->snapshot && install_snapshot(g, rd->snapshot) < 0)
		return;
	if (!rd->n_entries) {
		ready_finish(g);
		return;
	}
	uint64_t first = rd->entries[0].index;
	if (keel_wal_last_index(g->w) >= first) {
		/* A follower's conflicting suffix was replaced (§3.5). */
		rc = keel_wal_truncate(g->w, first - 1);
		if (rc < 0) {
			group_fail(g, rc, keel_wal_errmsg(g->w));
			return;
		}
	}
	if (g->wents_cap < rd->n_entries) {
		size_t cap = rd->n_entries * 2;
		struct keel_wal_entry *n = realloc(g->wents, cap * sizeof(*n));
		if (!n) {
			group_fail(g, -ENOMEM, "out of memory for a WAL batch");
			return;
		}
		g->wents = n;
		g->wents_cap = cap;
	}
	for (size_t i = 0; i < rd->n_entries; i++) {
		const struct keel_raft_entry *e = &rd->entries[i];
		g->wents[i] = (struct keel_wal_entry){
			.index = e->index, .term = e->term, .type = e->type, .len = e->len,
			.data = e->data};
	}
	g->wal_done = false;
	g->in_start = true;
	rc = keel_wal_append(g->w, g->wents, rd->n_entries, wal_done, g);
	g->in_start = false;
	if (rc < 0) {
		group_fail(g, rc, keel_wal_errmsg(g->w));
		return;
	}
	g->st.wal_batches++;
	g->st.wal_entries += rd->n_entries;
#ifdef KEEL_GROUP_BUG_ACK_EARLY
	/* Planted bug (tests/sim): votes and append acknowledgements go out
	 * before the batch they promise is durable. */
	group_send_msgs(g, rd, GROUP_SEND_ALL);
#else
	/* §10.2.1: the leader's appends go out while its own write runs. */
	group_send_msgs(g, rd, GROUP_SEND_EARLY);
#endif
#ifdef KEEL_GROUP_BUG_APPLY_AHEAD
	apply_ahead(g, rd);
#endif
	if (g->wal_done) {
		if (g->wal_status < 0)
			group_fail(g, g->wal_status, "WAL write failed");
		else
			ready_finish(g);
	}
}

void group_pump(struct keel_group *g)
{
	if (g->pumping || g->closing)
		return;
	g->pumping = true;
	while (!g->busy && !g->failed) {
		drain_inputs(g);
		if (!keel_raft_has_ready(g->r))
			break;
		keel_raft_ready(g->r, &g->rd);
		g->busy = true;
		ready_start(g);
	}
	g->pumping = false;
}

static void on_kick(struct keel_timer *t)
{
	struct keel_group *g = t->arg;
	if (!g->busy || g->failed)
		return;
	if (g->wal_status < 0) {
		group_fail(g, g->wal_status, "WAL write failed");
		return;
	}
	ready_finish(g);
	group_pump(g);
}

static void on_tick(struct keel_timer *t)
{
	struct keel_group *g = t->arg;
	if (g->failed || g->closing)
		return;
	g->ticks++;
	g->queued_ticks++;
	/* Requests past their deadline: the outcome of a proposal is unknown
	 * (it may still commit), a read can simply be retried. */
	gprop_expire(&g->pending, g->ticks);
	gread_expire(&g->reads, g->ticks);
	keel_clock_arm(g->clock, &g->tick, (uint64_t)g->tick_ms * 1000000u);
	group_pump(g);
	if (!g->busy)
		group_change_step(g);
}

/* ---- the engine's calls ------------------------------------------------- */

static struct keel_group *G(struct keel_rlog *l)
{
	return (struct keel_group *)l;
}

static const struct keel_group *CG(const struct keel_rlog *l)
{
	return (const struct keel_group *)l;
}

static int raft_propose(struct keel_rlog *l, const void *data, size_t len, keel_rlog_done_fn *cb,
			void *arg)
{
	struct keel_group *g = G(l);
	if (g->closing)
		return KEEL_ESTOPPED;
	if (g->failed)
		return KEEL_EDURABLE;
	if (len > UINT32_MAX || len > g->max_entry)
		return KEEL_ETOOBIG;
	if (len && !data)
		return KEEL_EBADINPUT;
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	if (st.role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	if (st.transferee)
		return KEEL_EBUSY;
	struct gprop *p = gprop_new(data, len, cb, arg, g->ticks + g->req_timeout);
	if (!p)
		return -ENOMEM;
	if (!g->busy && !g->pumping) {
		int rc = keel_raft_propose(g->r, p->data, len, &p->index, &p->term);
		if (rc < 0) {
			free(p);
			return rc;
		}
		gprop_push(&g->pending, p);
		group_pump(g);
		return 0;
	}
	gprop_push(&g->queued, p);
	return 0;
}

static int raft_read_barrier(struct keel_rlog *l, keel_rlog_read_fn *cb, void *arg)
{
	struct keel_group *g = G(l);
	if (g->closing)
		return KEEL_ESTOPPED;
	if (g->failed)
		return KEEL_EDURABLE;
	if (!cb)
		return KEEL_EBADINPUT;
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	if (st.leader == KEEL_RAFT_NONE)
		return KEEL_ENOTLEADER;
	struct gread *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cb = cb;
	r->arg = arg;
	r->deadline = g->ticks + g->req_timeout;
	/* Issued from the queue (in order, after queued proposals). */
	struct gread **tail = &g->rq_head;
	while (*tail)
		tail = &(*tail)->next;
	*tail = r;
	group_pump(g);
	return 0;
}

static int raft_campaign(struct keel_rlog *l)
{
	struct keel_group *g = G(l);
	if (g->failed)
		return KEEL_EDURABLE;
	if (g->busy || g->pumping)
		return KEEL_EBUSY;
	int rc = keel_raft_campaign(g->r);
	if (rc == 0)
		group_pump(g);
	return rc;
}

static int raft_poll(struct keel_rlog *l)
{
	struct keel_group *g = G(l);
	if (g->wr || g->closing)
		return 0;
	int n = keel_wal_poll(g->w);
	return n > 0 ? n : 0;
}

static enum keel_rlog_role role_of(const struct keel_raft_status *st)
{
	if (!keel_raft_conf_is_voter(&st->conf, st->id))
		return keel_raft_conf_is_learner(&st->conf, st->id) ? KEEL_RLOG_LEARNER
								    : KEEL_RLOG_REMOVED;
	switch (st->role) {
	case KEEL_RAFT_LEADER: return KEEL_RLOG_LEADER;
	case KEEL_RAFT_CANDIDATE:
	case KEEL_RAFT_PRE_CANDIDATE: return KEEL_RLOG_CANDIDATE;
	default: return KEEL_RLOG_FOLLOWER;
	}
}

static void add_member(const struct keel_group *g, struct keel_rlog_status *out, uint64_t id,
		       bool voter)
{
	for (uint32_t i = 0; i < out->n_members; i++)
		if (out->members[i].node == id)
			return;
	if (out->n_members == KEEL_RLOG_MAX_MEMBERS)
		return;
	struct keel_rlog_member *m = &out->members[out->n_members++];
	*m = (struct keel_rlog_member){.node = (uint32_t)id, .voter = voter};
	keel_raft_progress(g->r, id, &m->match, &m->active);
}

static void raft_status(const struct keel_rlog *l, struct keel_rlog_status *out)
{
	const struct keel_group *g = CG(l);
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	out->protocol = "raft";
	out->group = g->cfg.group;
	out->self = g->id;
	out->role = role_of(&st);
	out->leader = (uint32_t)st.leader;
	out->epoch = st.term;
	out->commit = st.commit;
	out->applied = g->applied;
	out->last_index = st.last_index;
	out->snapshot_index = st.snapshot_index;
	out->failed = g->failed;
	out->fail_code = g->fail_code;
	out->changing = g->change.state != GC_NONE;
	out->joint = st.conf.n_outgoing > 0;
	for (uint32_t i = 0; i < st.conf.n_voters; i++)
		add_member(g, out, st.conf.voters[i], true);
	for (uint32_t i = 0; i < st.conf.n_outgoing; i++)
		add_member(g, out, st.conf.outgoing[i], true);
	for (uint32_t i = 0; i < st.conf.n_learners; i++)
		add_member(g, out, st.conf.learners[i], false);
}

static void raft_stats(const struct keel_rlog *l, struct keel_rlog_stats *st)
{
	*st = CG(l)->st;
	if (CG(l)->w)
		keel_wal_get_stats(CG(l)->w, &st->wal);
}

/* ---- open / close ------------------------------------------------------- */

struct boot_ctx {
	struct keel_raft_entry *e;
	size_t n, cap;
};

static int boot_entry(void *arg, const struct keel_wal_entry *we)
{
	struct boot_ctx *b = arg;
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		struct keel_raft_entry *n = realloc(b->e, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		b->e = n;
		b->cap = cap;
	}
	uint8_t *data = NULL;
	if (we->len) {
		data = malloc(we->len);
		if (!data)
			return -ENOMEM;
		memcpy(data, we->data, we->len);
	}
	b->e[b->n++] = (struct keel_raft_entry){
		.term = we->term, .index = we->index, .type = we->type, .len = we->len,
		.data = data};
	return 0;
}

static void boot_free(struct boot_ctx *b)
{
	for (size_t i = 0; i < b->n; i++)
		free((void *)b->e[i].data);
	free(b->e);
}

static int mkdir_p(const char *path)
{
	char buf[512];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The founding configuration: the config's voters, or every [peers] node. */
static int initial_conf(const struct keel_group *g, struct keel_raft_conf *c, char *errmsg)
{
	memset(c, 0, sizeof(*c));
	const struct keel_rlog_config *cfg = &g->cfg;
	if (cfg->join)
		return 0;
	const struct keel_node_config *node = keel_endpoint_node_config(g->ep);
	size_t n = cfg->voters ? cfg->n_voters : node->npeers;
	if (n > KEEL_RAFT_MAX_NODES)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "raft: %zu voters, at most %d", n,
				       KEEL_RAFT_MAX_NODES);
	bool self = false;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = cfg->voters ? cfg->voters[i] : node->peers[i].node;
		if (!keel_node_config_peer(node, id))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "raft: voter %u is not in [peers]", id);
		self |= id == g->id;
		c->voters[c->n_voters++] = id;
	}
	if (!self)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: node %u is not among the founding voters (use join to "
				       "start it empty and add it with keel member add)",
				       g->id);
	return 0;
}

/* The WAL and the snapshot, recovered into a core. */
static int open_core(struct keel_group *g, char *errmsg)
{
	const struct keel_rlog_config *cfg = &g->cfg;
	struct keel_wal_io *io = cfg->wal_io;
	struct keel_wal_io *sio = cfg->snap_io;
	g->cfg.wal_io = g->cfg.snap_io = NULL; /* ours now, whatever happens */
	int rc = 0;
	if (!io || !sio) {
		rc = mkdir_p(g->dir);
		if (rc < 0) {
			keel_errmsg_set(errmsg, rc, "raft: cannot create %s", g->dir);
			goto fail_io;
		}
	}
	if (!io) {
		rc = keel_wal_io_posix_new(&io, g->dir, cfg->wal_engine, errmsg);
		if (rc < 0)
			goto fail_io;
	}
	if (!sio) {
		char sdir[600];
		snprintf(sdir, sizeof(sdir), "%s/snap", g->dir);
		rc = keel_wal_io_posix_new(&sio, sdir, KEEL_WAL_ENGINE_SYNC, errmsg);
		if (rc < 0)
			goto fail_io;
	}
	g->snap.io = sio;
	sio = NULL;
	rc = keel_wal_open(&g->w, io, cfg->wal, errmsg); /* destroys io on failure */
	io = NULL;
	if (rc < 0)
		return rc;
	keel_wal_hard_state(g->w, &g->saved_hs);

	/* The snapshot first, then the WAL's entries after it. */
	uint8_t *snap_buf = NULL;
	size_t snap_len = 0;
	struct keel_raft_snapshot snap;
	rc = snapstore_load(&g->snap, &snap_buf, &snap_len, errmsg);
	if (rc < 0)
		return rc;
	bool have_snap = rc == 1;
	if (have_snap) {
		const char *why = NULL;
		if (keel_group_snapshot_decode(snap_buf, snap_len, &snap, &why) < 0) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, KEEL_ECORRUPT, "raft: %s/snap/snapshot: %s",
					       g->dir, why);
		}
		if (!cfg->sm.restore) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "raft: %s/snap/snapshot exists but the state machine has "
					       "no restore()",
					       g->dir);
		}
		rc = cfg->sm.restore(cfg->sm.arg, snap.meta.index, snap.data, snap.len);
		if (rc < 0) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, rc,
					       "raft: the state machine refused %s/snap/snapshot", g->dir);
		}
		g->snap_index = g->applied = snap.meta.index;
	}
	struct boot_ctx b = {0};
	uint64_t first = keel_wal_first_index(g->w);
	if (first) {
		rc = keel_wal_iterate(g->w, first, boot_entry, &b);
		if (rc < 0) {
			boot_free(&b);
			free(snap_buf);
			return keel_errmsg_set(errmsg, rc, "raft: reading the WAL in %s: %s", g->dir,
					       keel_wal_errmsg(g->w));
		}
	}
	size_t skip = 0;
	if (have_snap) {
		/* Entries the snapshot covers are skipped. The rest count only
		 * if they continue it: the entry at its index has its term, or
		 * the log starts right after it. Otherwise they are what a crash
		 * left between saving a leader's snapshot and cutting the WAL. */
		uint64_t s_idx = snap.meta.index;
		bool ok = b.n == 0 || b.e[0].index == s_idx + 1 || b.e[b.n - 1].index <= s_idx;
		for (size_t i = 0; i < b.n; i++)
			if (b.e[i].index == s_idx)
				ok = b.e[i].term == snap.meta.term;
		while (skip < b.n && b.e[skip].index <= s_idx)
			skip++;
		/* A WAL that ends below the snapshot (a crash or an I/O error
		 * between saving the snapshot and compacting) would take its
		 * next append at its own end, not after the snapshot: reset it
		 * too (found by host-sim, seeds 120 and 976). */
		if (ok && keel_wal_last_index(g->w) < s_idx) {
			rc = wal_reset_to(g, s_idx);
			if (rc < 0) {
				boot_free(&b);
				free(snap_buf);
				return keel_errmsg_set(errmsg, rc, "raft: %s", keel_wal_errmsg(g->w));
			}
		}
		if (!ok) {
			keel_warn("raft: %s does not continue the snapshot at %llu: dropping its log",
				  g->dir, (unsigned long long)s_idx);
			skip = b.n;
			rc = wal_reset_to(g, s_idx);
			if (rc < 0) {
				boot_free(&b);
				free(snap_buf);
				return keel_errmsg_set(errmsg, rc, "raft: %s", keel_wal_errmsg(g->w));
			}
		}
	}
	struct keel_raft_boot boot = {
		.hard_state = {.term = g->saved_hs.term, .vote = g->saved_hs.vote, .commit = 0},
		.snapshot = have_snap ? &snap : NULL,
		.entries = b.e ? b.e + skip : NULL,
		.n_entries = b.n - skip,
	};
	struct keel_raft_config rc_cfg = {
		.id = g->id,
		.election_tick = cfg->election_ticks ? cfg->election_ticks : 10,
		.heartbeat_tick = cfg->heartbeat_ticks ? cfg->heartbeat_ticks : 1,
		.check_quorum = true,
		.pre_vote = true,
		.read_mode = KEEL_RAFT_READ_INDEX,
		.max_msg_bytes = g->max_entry,
		.seed = keel_mix64(cfg->seed ? cfg->seed
					     : keel_clock_now(g->clock) ^ keel_now_ns()) ^
			((uint64_t)g->id << 48 | cfg->group),
	};
#ifdef KEEL_MUTANT_GROUP_BOOT_TERM_FROM_LOG
	/* MUTANT: "the term is the newest entry's (or the snapshot's)": the
	 * saved term is ignored at boot, the vote kept only if it matches. */
	{
		uint64_t t = boot.n_entries ? boot.entries[boot.n_entries - 1].term
					    : have_snap ? snap.meta.term : 0;
		if (t < boot.hard_state.term) {
			boot.hard_state.term = t;
			boot.hard_state.vote = 0;
		}
	}
#endif
#ifdef KEEL_MUTANT_GROUP_BOOT_NO_VOTE
	/* MUTANT: "the vote only matters in the running election": it is
	 * not restored at boot. */
	boot.hard_state.vote = 0;
#endif
	rc = initial_conf(g, &rc_cfg.initial, errmsg);
	if (rc == 0)
		rc = keel_raft_create(&rc_cfg, &boot, &g->r, errmsg);
	boot_free(&b);
	free(snap_buf);
	if (rc < 0)
		return rc;
	/* Read contexts start where this incarnation's own do: a leader may
	 * answer a read the previous incarnation asked for after this one has
	 * started (the request was in flight at the crash), and with contexts
	 * counted from 0 again that answer matched a new read and released it
	 * at an index older than writes acknowledged before it was issued
	 * (host-sim seeds 1693 and 3698, a stale linearizable read). Halved so
	 * that counting up never wraps to 0. */
	g->next_ctx = keel_mix64(rc_cfg.seed ^ keel_clock_now(g->clock)) >> 1;
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	keel_info("raft: group %u recovered from %s (%s): term %llu, vote %llu, log [%llu, %llu], "
		  "snapshot %llu",
		  cfg->group, g->dir, keel_wal_engine_name(g->w), (unsigned long long)st.term,
		  (unsigned long long)st.vote, (unsigned long long)st.first_index,
		  (unsigned long long)st.last_index, (unsigned long long)st.snapshot_index);
	g->role = st.role;
	g->term = st.term;
	g->leader = st.leader;
	return 0;
fail_io:
	if (io)
		io->ops->destroy(io);
	if (sio)
		sio->ops->destroy(sio);
	return rc;
}

static void raft_close(struct keel_rlog *l);

static int raft_open(const struct keel_rlog_config *cfg, struct keel_rlog **out, char *errmsg)
{
	*out = NULL;
	if (!cfg->ep || !cfg->dir || !cfg->sm.apply) {
		if (cfg->wal_io)
			cfg->wal_io->ops->destroy(cfg->wal_io);
		if (cfg->snap_io)
			cfg->snap_io->ops->destroy(cfg->snap_io);
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "raft: an endpoint, a directory and apply() are required");
	}
	struct keel_group *g = calloc(1, sizeof(*g));
	if (!g) {
		if (cfg->wal_io)
			cfg->wal_io->ops->destroy(cfg->wal_io);
		if (cfg->snap_io)
			cfg->snap_io->ops->destroy(cfg->snap_io);
		return keel_errmsg_set(errmsg, -ENOMEM, "raft: out of memory");
	}
	g->head.engine = &rlog_raft_engine;
	g->cfg = *cfg;
	snprintf(g->dir, sizeof(g->dir), "%s", cfg->dir);
	g->cfg.dir = g->dir;
	g->ep = cfg->ep;
	g->clock = keel_endpoint_clock(cfg->ep);
	g->id = keel_endpoint_node_id(cfg->ep);
	g->tick_ms = cfg->tick_ms ? cfg->tick_ms : 100;
	g->req_timeout = cfg->request_timeout_ticks ? cfg->request_timeout_ticks : 50;
	g->snap_every = cfg->sm.snapshot && cfg->sm.restore ? cfg->snapshot_every : 0;
	g->snap_keep = cfg->snapshot_keep ? cfg->snapshot_keep : 64;
	g->snap_phase = snap_phase(g->id, cfg->group, g->snap_every);
	/* One append message must fit a frame with room for its header. */
	uint32_t frame = keel_endpoint_max_payload(cfg->ep);
	g->max_entry = frame / 2 < (1u << 20) ? frame / 2 : (1u << 20);
	keel_timer_init(&g->tick, on_tick, g);
	keel_timer_init(&g->kick, on_kick, g);
	int rc = open_core(g, errmsg);
	if (rc == 0)
		rc = group_net_open(g, errmsg);
	if (rc == 0 && keel_endpoint_reactor(cfg->ep)) {
		rc = keel_wal_attach(g->w, keel_endpoint_reactor(cfg->ep), &g->wr);
		if (rc < 0)
			keel_errmsg_set(errmsg, rc, "raft: attaching the WAL to the shard: %s",
					keel_strerror(rc));
	}
	if (rc == 0 && snapwriter_usable(&g->snap, keel_endpoint_reactor(cfg->ep))) {
		char werr[KEEL_ERRMSG_LEN];
		if (snapwriter_ref(werr) < 0) {
			keel_warn("raft: group %u: %s: snapshots are written on the shard",
				  cfg->group, werr);
		} else {
			g->snap_async = true;
			g->shard = keel_endpoint_reactor(cfg->ep);
		}
	}
	if (rc < 0) {
		raft_close(&g->head);
		return rc;
	}
	keel_clock_arm(g->clock, &g->tick, (uint64_t)g->tick_ms * 1000000u);
	*out = &g->head;
	group_pump(g);
	return 0;
}

static void raft_close(struct keel_rlog *l)
{
	struct keel_group *g = G(l);
	g->closing = true;
	keel_clock_cancel(g->clock, &g->tick);
	keel_clock_cancel(g->clock, &g->kick);
	group_net_close(g);
	if (g->wr)
		keel_wal_detach(g->wr);
	if (g->w)
		keel_wal_close(g->w); /* waits for a write in flight; wal_done sees closing */
	snap_job_drop(g); /* waits for the snapshot writer to be done with g->snap */
	if (g->snap_async)
		snapwriter_unref();
	if (g->snap.io)
		g->snap.io->ops->destroy(g->snap.io);
	gprop_fail_all(&g->queued, KEEL_ESTOPPED);
	gprop_fail_all(&g->pending, KEEL_ESTOPPED);
	gread_fail_all(&g->rq_head, KEEL_ESTOPPED);
	gread_fail_all(&g->reads, KEEL_ESTOPPED);
	group_change_fail(g, KEEL_ESTOPPED);
	while (g->in_head) {
		struct gin *in = g->in_head;
		g->in_head = in->next;
		keel_raft_msg_free(&in->m);
		free(in);
	}
	keel_raft_destroy(g->r);
	free(g->wents);
	free(g);
}

const struct rlog_engine rlog_raft_engine = {
	.name = "raft",
	.open = raft_open,
	.close = raft_close,
	.poll = raft_poll,
	.propose = raft_propose,
	.read_barrier = raft_read_barrier,
	.change_member = group_change_member,
	.transfer_leader = group_transfer_leader,
	.campaign = raft_campaign,
	.status = raft_status,
	.stats = raft_stats,
};
