/* The consensus group host: a Raft core + a WAL + a transport endpoint + a
 * state machine on one shard (include/keel/group.h says what and why).
 *
 * Shape of the code: every input (a message, a tick, a proposal, a read)
 * is queued, then pump() feeds the queue to the core and walks the ready
 * batches. A batch whose entries must be written is "in flight" (busy)
 * from keel_raft_ready() until the WAL reports them durable; meanwhile the
 * core is not touched (keel/raft.h forbids mutating calls between ready and
 * advance) and inputs wait in the queues. That wait is also the group
 * commit: everything that arrived during one fdatasync goes out in the
 * next batch's single write. The connection management (dial, redial with
 * backoff, drop when unconnected) is in group_net.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "consensus/group/group_internal.h"
#include "keel/config.h"
#include "keel/runtime.h"

/* ---- queues ------------------------------------------------------------- */

static void prop_free(struct gprop *p)
{
	free(p);
}

static void prop_list_fail(struct gprop **head, struct gprop **tail, int code)
{
	struct gprop *p = *head;
	*head = NULL;
	if (tail)
		*tail = NULL;
	while (p) {
		struct gprop *next = p->next;
		if (p->cb)
			p->cb(p->arg, code, p->index);
		prop_free(p);
		p = next;
	}
}

static void read_list_fail(struct gread **head, int code)
{
	struct gread *r = *head;
	*head = NULL;
	while (r) {
		struct gread *next = r->next;
		r->cb(r->arg, code, r->index);
		free(r);
		r = next;
	}
}

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
		if (rc < 0 && g->log_budget) {
			g->log_budget--;
			keel_warn("group: %s from node %llu dropped by the core: %s",
				  keel_raft_msg_type_name(in->m.type),
				  (unsigned long long)in->m.from, keel_strerror(rc));
		}
		keel_raft_msg_free(&in->m);
		free(in);
	}
	while (g->q_head) {
		struct gprop *p = g->q_head;
		g->q_head = p->next;
		if (!g->q_head)
			g->q_tail = NULL;
		p->next = NULL;
		int rc = keel_raft_propose(g->r, p->data, p->len, &p->index, &p->term);
		if (rc < 0) {
			if (p->cb)
				p->cb(p->arg, rc, 0);
			prop_free(p);
			continue;
		}
		if (g->p_tail)
			g->p_tail->next = p;
		else
			g->p_head = p;
		g->p_tail = p;
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

static void complete_props_at(struct keel_group *g, const struct keel_raft_entry *e)
{
	struct gprop **pp = &g->p_head, *prev = NULL;
	while (*pp) {
		struct gprop *p = *pp;
		if (p->index != e->index) {
			prev = p;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		if (g->p_tail == p)
			g->p_tail = prev;
		/* Same index and term: our entry (Log Matching, §3.5). Another
		 * term: another leader's entry took the index; ours is gone. */
		int status = p->term == e->term ? 0 : KEEL_ESTALE;
		if (p->cb)
			p->cb(p->arg, status, e->index);
		prop_free(p);
	}
}

static void complete_reads(struct keel_group *g)
{
	struct gread **rp = &g->reads;
	while (*rp) {
		struct gread *r = *rp;
		if (r->have_index && g->applied >= r->index) {
			*rp = r->next;
			r->cb(r->arg, 0, r->index);
			free(r);
			continue;
		}
		rp = &r->next;
	}
}

static void apply_committed(struct keel_group *g, const struct keel_raft_ready *rd)
{
	for (size_t i = 0; i < rd->n_committed; i++) {
		const struct keel_raft_entry *e = &rd->committed[i];
		if (e->type == KEEL_RAFT_ENTRY_NORMAL) {
			if (g->cfg.apply)
				g->cfg.apply(g->cfg.arg, e->index, e->term, e->data, e->len);
			g->st.applied++;
		}
		g->applied = e->index;
		if (g->p_head)
			complete_props_at(g, e);
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

/* ---- failure ------------------------------------------------------------ */

static void group_fail(struct keel_group *g, int code, const char *why)
{
	if (g->failed)
		return;
	g->failed = true;
	keel_error("group: node %llu stops: %s (%s)", (unsigned long long)g->id, why,
		   keel_strerror(code));
	keel_timer_cancel(g->cfg.shard, &g->tick);
	prop_list_fail(&g->q_head, &g->q_tail, KEEL_EDURABLE);
	prop_list_fail(&g->p_head, &g->p_tail, KEEL_EDURABLE);
	read_list_fail(&g->rq_head, KEEL_EDURABLE);
	read_list_fail(&g->reads, KEEL_EDURABLE);
	if (g->cfg.on_error)
		g->cfg.on_error(g->cfg.arg, code, why);
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

/* §5.3: a snapshot from the leader replaces our state and our log. Saved
 * before the WAL is cut, so a crash in between finds the snapshot and an
 * old log, which open_core() reconciles. */
static int install_snapshot(struct keel_group *g, const struct keel_raft_snapshot *s)
{
	char err[KEEL_ERRMSG_LEN];
	if (!g->cfg.restore) {
		group_fail(g, KEEL_ENOTSUP, "a snapshot arrived, and the state machine cannot restore one");
		return KEEL_ENOTSUP;
	}
	int rc = group_snap_save(g->snap_dir, s, err);
	if (rc < 0) {
		group_fail(g, rc, err);
		return rc;
	}
	rc = g->cfg.restore(g->cfg.arg, s->meta.index, s->data, s->len);
	if (rc < 0) {
		group_fail(g, rc, "the state machine refused the leader's snapshot");
		return rc;
	}
	rc = wal_reset_to(g, s->meta.index);
	if (rc < 0) {
		group_fail(g, rc, keel_wal_errmsg(g->w));
		return rc;
	}
	keel_info("group: node %llu installed a snapshot at index %llu (term %llu, %zu bytes)",
		  (unsigned long long)g->id, (unsigned long long)s->meta.index,
		  (unsigned long long)s->meta.term, s->len);
	g->applied = s->meta.index;
	g->snap_index = s->meta.index;
	g->st.snapshots_installed++;
	/* Our proposals at or below the snapshot: committed or overwritten,
	 * we cannot tell which. */
	struct gprop **pp = &g->p_head, *prev = NULL;
	while (*pp) {
		struct gprop *p = *pp;
		if (p->index > s->meta.index) {
			prev = p;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		if (g->p_tail == p)
			g->p_tail = prev;
		if (p->cb)
			p->cb(p->arg, KEEL_ETIMEOUT, p->index);
		prop_free(p);
	}
	return 0;
}

/* After advance (the core may be mutated again): every snapshot_every
 * applied entries, snapshot the state machine, save it, drop the WAL
 * segments it covers (§5.1). A failure is logged and retried later: the
 * log just stays longer. */
static void maybe_snapshot(struct keel_group *g)
{
	if (!g->cfg.snapshot || !g->snap_every || g->applied < g->snap_index + g->snap_every)
		return;
	void *data = NULL;
	size_t len = 0;
	int rc = g->cfg.snapshot(g->cfg.arg, &data, &len);
	if (rc < 0) {
		keel_warn("group: node %llu: the state machine's snapshot failed: %s",
			  (unsigned long long)g->id, keel_strerror(rc));
		g->snap_index = g->applied; /* try again after snapshot_every more */
		return;
	}
	rc = keel_raft_snapshot_taken(g->r, g->applied, data, len, g->snap_keep);
	free(data);
	if (rc < 0) {
		keel_warn("group: node %llu: snapshot at %llu: %s", (unsigned long long)g->id,
			  (unsigned long long)g->applied, keel_strerror(rc));
		g->snap_index = g->applied;
		return;
	}
	const struct keel_raft_snapshot *s = keel_raft_snapshot_get(g->r);
	char err[KEEL_ERRMSG_LEN];
	rc = group_snap_save(g->snap_dir, s, err);
	g->snap_index = s->meta.index;
	if (rc < 0) {
		keel_warn("group: node %llu: %s (the WAL keeps the log)", (unsigned long long)g->id, err);
		return;
	}
	g->st.snapshots_taken++;
	rc = keel_wal_compact(g->w, s->meta.index);
	if (rc < 0)
		keel_warn("group: node %llu: compacting the WAL to %llu: %s", (unsigned long long)g->id,
			  (unsigned long long)s->meta.index, keel_wal_errmsg(g->w));
	keel_debug("group: node %llu: snapshot at index %llu, %zu bytes", (unsigned long long)g->id,
		   (unsigned long long)s->meta.index, s->len);
}

/* ---- the ready loop ----------------------------------------------------- */

static void note_role(struct keel_group *g, const struct keel_raft_ready *rd)
{
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	if (rd->role == g->role && st.term == g->term && rd->leader == g->leader)
		return;
	bool was_leader = g->role == KEEL_RAFT_LEADER;
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
	group_send_msgs(g, rd, rd->n_entries ? GROUP_SEND_LATE : GROUP_SEND_ALL);
	apply_committed(g, rd);
	note_role(g, rd);
	keel_raft_advance(g->r, rd);
	g->busy = false;
	maybe_snapshot(g);
	complete_reads(g);
	if (g->fail_reads) {
		g->fail_reads = false;
		read_list_fail(&g->reads, KEEL_ENOTLEADER);
	}
	if (g->role_changed) {
		g->role_changed = false;
		if (g->cfg.on_role)
			g->cfg.on_role(g->cfg.arg, g->role, g->term, g->leader);
	}
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
	keel_timer_arm(g->cfg.shard, &g->kick, 0);
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
	/* §10.2.1: the leader's appends go out while its own write runs. */
	group_send_msgs(g, rd, GROUP_SEND_EARLY);
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
	struct gprop **pp = &g->p_head, *prev = NULL;
	while (*pp) {
		struct gprop *p = *pp;
		if (p->deadline > g->ticks) {
			prev = p;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		if (g->p_tail == p)
			g->p_tail = prev;
		if (p->cb)
			p->cb(p->arg, KEEL_ETIMEOUT, p->index);
		prop_free(p);
	}
	struct gread **rp = &g->reads;
	while (*rp) {
		struct gread *r = *rp;
		if (r->deadline > g->ticks) {
			rp = &r->next;
			continue;
		}
		*rp = r->next;
		r->cb(r->arg, KEEL_ETIMEOUT, 0);
		free(r);
	}
	keel_timer_arm(g->cfg.shard, &g->tick, (uint64_t)g->tick_ms * 1000000u);
	group_pump(g);
}

/* ---- public API --------------------------------------------------------- */

int keel_group_propose(struct keel_group *g, const void *data, size_t len,
		       keel_group_done_fn *cb, void *arg)
{
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
	struct gprop *p = malloc(sizeof(*p) + len);
	if (!p)
		return -ENOMEM;
	*p = (struct gprop){.cb = cb, .arg = arg, .len = len,
			    .deadline = g->ticks + g->req_timeout};
	if (len)
		memcpy(p->data, data, len);
	if (!g->busy && !g->pumping) {
		int rc = keel_raft_propose(g->r, p->data, len, &p->index, &p->term);
		if (rc < 0) {
			prop_free(p);
			return rc;
		}
		if (g->p_tail)
			g->p_tail->next = p;
		else
			g->p_head = p;
		g->p_tail = p;
		group_pump(g);
		return 0;
	}
	if (g->q_tail)
		g->q_tail->next = p;
	else
		g->q_head = p;
	g->q_tail = p;
	return 0;
}

int keel_group_read_barrier(struct keel_group *g, keel_group_read_fn *cb, void *arg)
{
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

int keel_group_campaign(struct keel_group *g)
{
	if (g->failed)
		return KEEL_EDURABLE;
	if (g->busy || g->pumping)
		return KEEL_EBUSY;
	int rc = keel_raft_campaign(g->r);
	if (rc == 0)
		group_pump(g);
	return rc;
}

enum keel_raft_role keel_group_role(const struct keel_group *g)
{
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	return st.role;
}

uint64_t keel_group_term(const struct keel_group *g)
{
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	return st.term;
}

uint64_t keel_group_leader(const struct keel_group *g)
{
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	return st.leader;
}

uint64_t keel_group_id(const struct keel_group *g)
{
	return g->id;
}

void keel_group_status(const struct keel_group *g, struct keel_raft_status *st)
{
	keel_raft_status(g->r, st);
}

void keel_group_get_stats(const struct keel_group *g, struct keel_group_stats *st)
{
	*st = g->st;
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

/* The WAL, recovered into a core. */
static int open_core(struct keel_group *g, char *errmsg)
{
	const struct keel_group_config *cfg = &g->cfg;
	int rc = mkdir_p(cfg->wal_dir);
	if (rc < 0)
		return keel_errmsg_set(errmsg, rc, "group: cannot create %s: %s", cfg->wal_dir,
				       keel_strerror(rc));
	struct keel_wal_io *io;
	rc = keel_wal_io_posix_new(&io, cfg->wal_dir, cfg->wal_engine, errmsg);
	if (rc < 0)
		return rc;
	rc = keel_wal_open(&g->w, io, cfg->wal, errmsg);
	if (rc < 0)
		return rc;
	keel_wal_hard_state(g->w, &g->saved_hs);

	/* The snapshot first, then the WAL's entries after it. */
	rc = group_snap_dir(cfg->wal_dir, g->snap_dir, sizeof(g->snap_dir));
	if (rc < 0)
		return keel_errmsg_set(errmsg, rc, "group: snapshot directory under %s: %s",
				       cfg->wal_dir, keel_strerror(rc));
	struct keel_raft_snapshot snap;
	uint8_t *snap_buf = NULL;
	rc = group_snap_load(g->snap_dir, &snap, &snap_buf, errmsg);
	if (rc < 0)
		return rc;
	bool have_snap = rc == 1;
	if (have_snap) {
		if (!cfg->restore) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "group: %s/snapshot exists but the state machine has no restore()",
					       g->snap_dir);
		}
		rc = cfg->restore(cfg->arg, snap.meta.index, snap.data, snap.len);
		if (rc < 0) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, rc, "group: the state machine refused %s/snapshot",
					       g->snap_dir);
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
			return keel_errmsg_set(errmsg, rc, "group: reading the WAL in %s: %s",
					       cfg->wal_dir, keel_wal_errmsg(g->w));
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
		if (!ok) {
			keel_warn("group: %s does not continue the snapshot at %llu: dropping its log",
				  cfg->wal_dir, (unsigned long long)s_idx);
			skip = b.n;
			rc = wal_reset_to(g, s_idx);
			if (rc < 0) {
				boot_free(&b);
				free(snap_buf);
				return keel_errmsg_set(errmsg, rc, "group: %s", keel_wal_errmsg(g->w));
			}
		}
	}
	struct keel_raft_boot boot = {
		.hard_state = {.term = g->saved_hs.term, .vote = g->saved_hs.vote, .commit = 0},
		.snapshot = have_snap ? &snap : NULL,
		.entries = b.e ? b.e + skip : NULL,
		.n_entries = b.n - skip,
	};
	const struct keel_node_config *node = cfg->node;
	struct keel_raft_config rc_cfg = {
		.id = g->id,
		.election_tick = cfg->election_tick ? cfg->election_tick : 10,
		.heartbeat_tick = cfg->heartbeat_tick ? cfg->heartbeat_tick : 1,
		.check_quorum = true,
		.pre_vote = true,
		.read_mode = KEEL_RAFT_READ_INDEX,
		.max_msg_bytes = g->max_entry,
		.seed = cfg->seed ? cfg->seed : keel_now_ns() ^ (g->id << 48),
	};
	if (node->npeers > KEEL_RAFT_MAX_NODES) {
		boot_free(&b);
		free(snap_buf);
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "group: %zu peers, at most %d",
				       node->npeers, KEEL_RAFT_MAX_NODES);
	}
	for (size_t i = 0; i < node->npeers; i++)
		rc_cfg.initial.voters[rc_cfg.initial.n_voters++] = node->peers[i].node;
	rc = keel_raft_create(&rc_cfg, &boot, &g->r, errmsg);
	boot_free(&b);
	free(snap_buf);
	if (rc < 0)
		return rc;
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	keel_info("group: node %llu recovered from %s (%s): term %llu, vote %llu, log [%llu, %llu], snapshot %llu",
		  (unsigned long long)g->id, cfg->wal_dir, keel_wal_engine_name(g->w),
		  (unsigned long long)st.term, (unsigned long long)st.vote,
		  (unsigned long long)st.first_index, (unsigned long long)st.last_index,
		  (unsigned long long)st.snapshot_index);
	g->role = st.role;
	g->term = st.term;
	g->leader = st.leader;
	return 0;
}

int keel_group_open(const struct keel_group_config *cfg, struct keel_group **out, char *errmsg)
{
	*out = NULL;
	if (!cfg->shard || !cfg->node || !cfg->wal_dir)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "group: shard, node and wal_dir are required");
	if (!keel_node_config_peer(cfg->node, cfg->node->node_id))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "group: node %u is not in its own [peers]",
				       cfg->node->node_id);
	struct keel_group *g = calloc(1, sizeof(*g));
	if (!g)
		return keel_errmsg_set(errmsg, -ENOMEM, "group: out of memory");
	g->cfg = *cfg;
	g->id = cfg->node->node_id;
	g->tick_ms = cfg->tick_ms ? cfg->tick_ms : 100;
	g->req_timeout = cfg->request_timeout_ticks ? cfg->request_timeout_ticks : 50;
	g->log_budget = 100;
	g->snap_every = cfg->snapshot && cfg->restore ? cfg->snapshot_every : 0;
	g->snap_keep = cfg->snapshot_keep ? cfg->snapshot_keep : 64;
	/* One append message must fit a frame with room for its header. */
	uint32_t frame = cfg->node->max_frame ? cfg->node->max_frame : KEEL_TRANSPORT_MAX_FRAME_DEFAULT;
	g->max_entry = frame / 2 < (1u << 20) ? frame / 2 : (1u << 20);
	keel_timer_init(&g->tick, on_tick, g);
	keel_timer_init(&g->kick, on_kick, g);
	int rc = open_core(g, errmsg);
	if (rc == 0)
		rc = group_net_open(g, errmsg);
	if (rc == 0) {
		rc = keel_wal_attach(g->w, cfg->shard, &g->wr);
		if (rc < 0)
			keel_errmsg_set(errmsg, rc, "group: attaching the WAL to the shard: %s",
					keel_strerror(rc));
	}
	if (rc < 0) {
		group_net_close(g);
		if (g->w)
			keel_wal_close(g->w);
		keel_raft_destroy(g->r);
		free(g);
		return rc;
	}
	keel_timer_arm(cfg->shard, &g->tick, (uint64_t)g->tick_ms * 1000000u);
	*out = g;
	group_pump(g);
	return 0;
}

void keel_group_close(struct keel_group *g)
{
	if (!g)
		return;
	g->closing = true;
	keel_timer_cancel(g->cfg.shard, &g->tick);
	keel_timer_cancel(g->cfg.shard, &g->kick);
	group_net_close(g);
	if (g->wr)
		keel_wal_detach(g->wr);
	keel_wal_close(g->w); /* waits for a write in flight; wal_done sees closing */
	prop_list_fail(&g->q_head, &g->q_tail, KEEL_ESTOPPED);
	prop_list_fail(&g->p_head, &g->p_tail, KEEL_ESTOPPED);
	read_list_fail(&g->rq_head, KEEL_ESTOPPED);
	read_list_fail(&g->reads, KEEL_ESTOPPED);
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
