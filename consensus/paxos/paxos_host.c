/* The Multi-Paxos engine of the replicated log (keel/rlog.h): a Paxos core
 * (keel/paxos.h) + a WAL used as the acceptor's journal + the shard's
 * endpoint + a state machine, on one shard. The same loop as the Raft
 * engine's (consensus/group/group_host.c), sharing its request queues and
 * snapshot store (consensus/group/group_internal.h):
 *
 *   - the promised ballot is the WAL's hard state (term = ballot), saved
 *     synchronously before anything else of a batch;
 *   - accepted (slot, ballot, value)s are WAL records whose index is the
 *     journal's own sequence, not the slot: payload = u64 slot + value,
 *     term = ballot, type = value type. Slots are accepted out of order and
 *     again at higher ballots, which an index-addressed log cannot hold; at
 *     recovery the highest ballot per slot wins (docs/design/paxos.md);
 *   - PROMISE, ACCEPTED and HEARTBEAT_RESP leave only after the batch is
 *     durable; the proposer's PREPARE/ACCEPT/HEARTBEAT/LEARN/SNAPSHOT go
 *     out while the write runs (the core counts its own acceptance after
 *     advance);
 *   - chosen values are applied in slot order once the batch is durable;
 *   - every snapshot_every applied commands the state machine is
 *     snapshotted, the live accepted values after the snapshot are written
 *     again at the journal's end (a checkpoint) and the journal before them
 *     is dropped (keel_wal_compact): the WAL's prefix compaction works on a
 *     journal because nothing before the checkpoint is needed.
 *
 * Reconfiguration is not implemented: change_member and transfer_leader
 * are absent from the ops, so keel_rlog_change_member answers KEEL_ENOTSUP,
 * and `join = true` is refused at open with a message that says so. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "consensus/group/group_internal.h"
#include "keel/config.h"
#include "keel/paxos.h"

#define MAX_QUEUED_MSGS 4096
#define LOG_BURST 5
#define JOURNAL_HDR 8 /* u64 slot before the value */
/* The hard state's vote field of a Paxos WAL (Raft keeps a node id there):
 * a directory written by the other engine is refused by name, not
 * misread as a journal. "PAXOSWAL". */
#define PAXOS_WAL_MARK 0x4c4157534f584150ull

struct pin {
	struct pin *next;
	struct keel_paxos_msg m;
};

struct keel_phost {
	struct keel_rlog head;
	struct keel_rlog_config cfg;
	char dir[512];
	struct keel_endpoint *ep;
	struct keel_clock *clock;
	uint16_t type;
	uint32_t id;
	uint32_t tick_ms, req_timeout, max_entry;
	uint64_t voters[KEEL_PAXOS_MAX_NODES];
	uint32_t n_voters;
	struct keel_paxos *p;
	struct keel_wal *w;
	struct keel_wal_reactor *wr;
	struct keel_timer tick, kick;
	uint64_t ticks;

	struct keel_paxos_ready rd;
	bool busy, pumping, in_start, wal_done;
	int wal_status;
	bool failed, closing, joined;
	int fail_code;
	uint64_t saved_promised;
	struct keel_wal_entry *wents;
	size_t wents_cap;
	uint8_t *jbuf;
	size_t jbuf_cap;

	struct pin *in_head, *in_tail;
	size_t in_n;
	uint32_t queued_ticks;
	struct gprop_list queued, pending;
	struct gread *rq_head, *reads;
	uint64_t next_ctx, applied;

	enum keel_paxos_role role;
	uint64_t ballot, leader;
	bool role_changed, fail_reads;

	struct snapstore snap;
	uint64_t snap_index;
	uint32_t snap_every, snap_keep, snap_phase;
	bool snap_async;          /* files go to the snapshot writer */
	struct keel_shard *shard; /* where its answers come (snap_async) */
	struct snapjob *snap_job; /* the write in flight, or NULL */
	uint64_t checkpoint_at;   /* a durable snapshot not checkpointed yet (0: none) */

	struct keel_log_limit lim;
	struct keel_rlog_stats st;
};

static struct keel_phost *H(struct keel_rlog *l)
{
	return (struct keel_phost *)l;
}

static const struct keel_phost *CH(const struct keel_rlog *l)
{
	return (const struct keel_phost *)l;
}

/* A proposal is ours iff the value chosen at its slot is its bytes: a new
 * leader re-proposes it at a higher ballot, so the ballot cannot say. */
static uint64_t value_hash(uint32_t type, const void *data, size_t len)
{
	const uint8_t *b = data;
	uint64_t h = 0xcbf29ce484222325ull ^ type;
	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return keel_mix64(h ^ len);
}

static void host_fail(struct keel_phost *h, int code, const char *why)
{
	if (h->failed)
		return;
	h->failed = true;
	h->fail_code = code;
	keel_error("paxos: group %u on node %u stops: %s (%s)", h->cfg.group, h->id, why,
		   keel_strerror(code));
	keel_clock_cancel(h->clock, &h->tick);
	gprop_fail_all(&h->queued, KEEL_EDURABLE);
	gprop_fail_all(&h->pending, KEEL_EDURABLE);
	gread_fail_all(&h->rq_head, KEEL_EDURABLE);
	gread_fail_all(&h->reads, KEEL_EDURABLE);
	if (h->cfg.sm.on_error)
		h->cfg.sm.on_error(h->cfg.sm.arg, code, why);
}

/* ---- messages ------------------------------------------------------------ */

static void host_pump(struct keel_phost *h);

static void on_msg(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	struct keel_phost *h = arg;
	(void)ep;
	if (h->failed || h->closing)
		return;
	if (h->in_n >= MAX_QUEUED_MSGS) {
		h->st.msgs_dropped++;
		return;
	}
	struct pin *in = malloc(sizeof(*in));
	if (!in) {
		h->st.msgs_dropped++;
		return;
	}
	int rc = keel_paxos_msg_decode(m->data, m->len, &in->m);
	if (rc < 0 || in->m.from != m->from.node || in->m.to != h->id) {
		if (rc == 0)
			keel_paxos_msg_free(&in->m);
		free(in);
		h->st.bad_msgs++;
		keel_log_limited(&h->lim, LOG_BURST, KEEL_LOG_WARN,
				 "paxos: group %u drops a message from node %u: %s", h->cfg.group,
				 m->from.node, rc < 0 ? keel_strerror(rc) : "wrong sender or receiver");
		return;
	}
	h->st.msgs_received++;
	in->next = NULL;
	if (h->in_tail)
		h->in_tail->next = in;
	else
		h->in_head = in;
	h->in_tail = in;
	h->in_n++;
	host_pump(h);
}

static void send_one(struct keel_phost *h, const struct keel_paxos_msg *m)
{
	size_t size = keel_paxos_msg_encoded_size(m);
	if (size > keel_endpoint_max_payload(h->ep)) {
		h->st.msgs_dropped++;
		keel_log_limited(&h->lim, LOG_BURST, KEEL_LOG_WARN,
				 "paxos: group %u: %s to node %llu is %zu bytes, above the frame limit",
				 h->cfg.group, keel_paxos_msg_type_name(m->type),
				 (unsigned long long)m->to, size);
		return;
	}
	struct keel_endpoint_buf b;
	if (keel_endpoint_alloc(h->ep, (uint32_t)m->to, h->type, h->cfg.group, (uint32_t)size,
				&b) < 0) {
		h->st.msgs_dropped++; /* no connection, full: Paxos resends */
		return;
	}
	int rc = keel_paxos_msg_encode(m, b.data, b.cap);
	if (rc < 0) {
		keel_endpoint_discard(h->ep, &b);
		h->st.msgs_dropped++;
		return;
	}
	b.len = (uint32_t)rc;
	if (keel_endpoint_send_buf(h->ep, &b) == 0)
		h->st.msgs_sent++;
	else
		h->st.msgs_dropped++;
}

/* What an acceptor says promises durable state: after the batch's write. */
static bool late(uint32_t type)
{
	return type == KEEL_PAXOS_MSG_PROMISE || type == KEEL_PAXOS_MSG_ACCEPTED ||
	       type == KEEL_PAXOS_MSG_HEARTBEAT_RESP;
}

static void send_msgs(struct keel_phost *h, const struct keel_paxos_ready *rd, int phase)
{
	/* phase 0: all; 1: early only; 2: late only */
	for (size_t i = 0; i < rd->n_msgs; i++) {
		bool l = late(rd->msgs[i].type);
		if ((phase == 1 && l) || (phase == 2 && !l))
			continue;
		send_one(h, &rd->msgs[i]);
	}
}

/* ---- snapshots ------------------------------------------------------------- */

/* The snapshot file is the Raft engine's (group_snapshot.c: magic, CRC,
 * fuzzed) with term 0 and no configuration: the index is the slot. */
static int snap_save(struct keel_phost *h, uint64_t index, const void *data, size_t len,
		     char *err)
{
	struct keel_raft_snapshot s = {.meta = {.index = index}, .data = data, .len = len};
	uint8_t hdr[KEEL_GROUP_SNAPSHOT_HDR_MAX];
	int n = keel_group_snapshot_encode_header(&s, hdr, sizeof(hdr));
	if (n < 0)
		return keel_errmsg_set(err, n, "snapshot: encoding %zu bytes", len);
	return snapstore_save(&h->snap, hdr, (size_t)n, data, len, err);
}

/* A write in flight is waited for (and forgotten) before the store is
 * written or closed by the shard itself. */
static void snap_job_drop(struct keel_phost *h)
{
	if (h->snap_job) {
		snapjob_detach(h->snap_job);
		h->snap_job = NULL;
	}
}

static int install_snapshot(struct keel_phost *h, const struct keel_paxos_snapshot *s)
{
	char err[KEEL_ERRMSG_LEN];
	if (!h->cfg.sm.restore) {
		host_fail(h, KEEL_ENOTSUP, "a snapshot arrived, and the state machine cannot restore one");
		return KEEL_ENOTSUP;
	}
	snap_job_drop(h); /* an older one of ours */
	h->checkpoint_at = 0;
	int rc = snap_save(h, s->index, s->data, s->len, err);
	if (rc < 0) {
		host_fail(h, rc, err);
		return rc;
	}
	rc = h->cfg.sm.restore(h->cfg.sm.arg, s->index, s->data, s->len);
	if (rc < 0) {
		host_fail(h, rc, "the state machine refused a peer's snapshot");
		return rc;
	}
	h->applied = h->snap_index = s->index;
	h->st.snapshots_installed++;
	/* ours at or below it: chosen or replaced, we cannot tell which */
	gprop_fail_upto(&h->pending, s->index, KEEL_ETIMEOUT);
	return 0;
}

static int journal_append(struct keel_phost *h, const struct keel_paxos_value *v, size_t n,
			  keel_wal_done_fn *cb);

/* After a snapshot at index is durable, between batches: the live accepted
 * values after it again at the journal's end, and everything before them
 * dropped. Still on the shard, and synchronous (one append and its
 * fdatasync, then the unlinks): the journal is the shard's. */
static void checkpoint_now(struct keel_phost *h)
{
	uint64_t index = h->checkpoint_at;
	h->checkpoint_at = 0;
	if (!index || h->failed)
		return;
	size_t n = 0;
	const struct keel_paxos_value *v = keel_paxos_accepted_values(h->p, &n);
	while (n && v->slot <= index) {
		v++;
		n--;
	}
	uint64_t first = keel_wal_last_index(h->w) + 1;
	int rc = n ? journal_append(h, v, n, NULL) : 0;
	if (rc == 0 && n)
		rc = keel_wal_flush(h->w);
	if (rc == 0)
		rc = keel_wal_compact(h->w, first - 1);
	if (rc < 0)
		keel_warn("paxos: group %u: journal checkpoint after slot %llu: %s", h->cfg.group,
			  (unsigned long long)index, keel_wal_errmsg(h->w));
}

static void maybe_snapshot(struct keel_phost *h);

/* The snapshot writer's answer, on the shard (a runtime message). */
static void snap_written(void *arg, uint64_t index, int rc, const char *errmsg)
{
	struct keel_phost *h = arg;
	h->snap_job = NULL;
	if (rc < 0) {
		keel_warn("paxos: group %u: %s (the journal keeps everything)", h->cfg.group, errmsg);
		return;
	}
	h->st.snapshots_taken++;
	h->checkpoint_at = index;
	if (!h->busy) { /* else at the end of the batch in flight */
		checkpoint_now(h);
		maybe_snapshot(h); /* one skipped while this one was written */
	}
}

/* Every snapshot_every applied slots: snapshot the state machine (its copy,
 * on the shard), give it to the core, and have the file written — by the
 * snapshot writer's thread when there is one, else here — and only once it
 * is durable checkpoint the journal (snap_written). One write at a time.
 * Failures are logged and the journal just stays longer; a crash before
 * the checkpoint finds the old snapshot and the whole journal. */
static void maybe_snapshot(struct keel_phost *h)
{
	if (h->snap_job || !snap_due(h->applied, h->snap_index, h->snap_every, h->snap_phase))
		return;
	void *data = NULL;
	size_t len = 0;
	int rc = h->cfg.sm.snapshot(h->cfg.sm.arg, &data, &len);
	if (rc < 0) {
		keel_warn("paxos: group %u: the state machine's snapshot failed: %s", h->cfg.group,
			  keel_strerror(rc));
		h->snap_index = h->applied;
		return;
	}
	uint64_t index = h->applied;
	char err[KEEL_ERRMSG_LEN];
	rc = keel_paxos_snapshot_taken(h->p, index, data, len, h->snap_keep);
	h->snap_index = index;
	if (rc < 0) {
		free(data);
		keel_warn("paxos: group %u: snapshot at %llu: %s", h->cfg.group,
			  (unsigned long long)index, keel_strerror(rc));
		return;
	}
	if (h->snap_async) {
		struct keel_raft_snapshot_meta meta = {.index = index};
		rc = snapwriter_submit(&h->snap, h->shard, &meta, data, len, snap_written, h,
				       &h->snap_job, err);
		if (rc < 0)
			keel_warn("paxos: group %u: %s (the journal keeps everything)", h->cfg.group,
				  err);
		return;
	}
	rc = snap_save(h, index, data, len, err);
	free(data);
	snap_written(h, index, rc, err);
}

/* ---- the ready loop ----------------------------------------------------------- */

/* Messages before ticks: ticks that piled up behind a slow fdatasync must
 * not fire a follower's failure detector ahead of the heartbeats that came
 * in meanwhile. */
static void drain_inputs(struct keel_phost *h)
{
	while (h->in_head) {
		struct pin *in = h->in_head;
		h->in_head = in->next;
		if (!h->in_head)
			h->in_tail = NULL;
		h->in_n--;
		int rc = keel_paxos_step(h->p, &in->m);
		if (rc < 0)
			keel_log_limited(&h->lim, LOG_BURST, KEEL_LOG_WARN,
					 "paxos: group %u: %s from node %llu dropped by the core: %s",
					 h->cfg.group, keel_paxos_msg_type_name(in->m.type),
					 (unsigned long long)in->m.from, keel_strerror(rc));
		keel_paxos_msg_free(&in->m);
		free(in);
	}
	while (h->queued_ticks) {
		h->queued_ticks--;
		keel_paxos_tick(h->p);
	}
	struct gprop *g;
	while ((g = gprop_pop(&h->queued))) {
		int rc = keel_paxos_propose(h->p, g->data, g->len, &g->index, NULL);
		if (rc < 0) {
			h->st.proposals_failed++;
			if (g->cb)
				g->cb(g->arg, rc, 0);
			free(g);
			continue;
		}
		gprop_push(&h->pending, g);
	}
	while (h->rq_head) {
		struct gread *r = h->rq_head;
		h->rq_head = r->next;
		r->ctx = ++h->next_ctx;
		int rc = keel_paxos_read(h->p, r->ctx);
		if (rc < 0) {
			r->cb(r->arg, rc, 0);
			free(r);
			continue;
		}
		r->next = h->reads;
		h->reads = r;
	}
}

static void apply_chosen(struct keel_phost *h, const struct keel_paxos_ready *rd)
{
	for (size_t i = 0; i < rd->n_chosen; i++) {
		const struct keel_paxos_value *v = &rd->chosen[i];
		if (v->slot <= h->applied)
			continue;
		if (v->type == KEEL_PAXOS_VALUE_NORMAL) {
			h->cfg.sm.apply(h->cfg.sm.arg, v->slot, v->data, v->len);
			h->st.applied++;
		}
		h->applied = v->slot;
		if (h->pending.head)
			h->st.proposals_ok += gprop_complete_at(&h->pending, v->slot,
								value_hash(v->type, v->data, v->len));
	}
	for (size_t i = 0; i < rd->n_reads; i++)
		for (struct gread *r = h->reads; r; r = r->next)
			if (r->ctx == rd->reads[i].ctx) {
				r->index = rd->reads[i].index;
				r->have_index = true;
			}
}

static void note_role(struct keel_phost *h, const struct keel_paxos_ready *rd)
{
	if (rd->role == h->role && rd->ballot == h->ballot && rd->leader == h->leader)
		return;
	bool was_leader = h->role == KEEL_PAXOS_LEADER;
	if (rd->leader != h->leader)
		h->st.leader_changes++;
	bool report = rd->leader != h->leader ||
		      (rd->leader && keel_paxos_ballot_round(rd->ballot) !=
					     keel_paxos_ballot_round(h->ballot));
	h->role = rd->role;
	h->ballot = rd->ballot;
	h->leader = rd->leader;
	h->role_changed |= report;
	h->fail_reads |= was_leader && rd->role != KEEL_PAXOS_LEADER;
}

static void ready_finish(struct keel_phost *h)
{
	struct keel_paxos_ready *rd = &h->rd;
	send_msgs(h, rd, rd->n_accepted ? 2 : 0);
	apply_chosen(h, rd);
	note_role(h, rd);
	keel_paxos_advance(h->p, rd);
	h->busy = false;
	checkpoint_now(h);
	maybe_snapshot(h);
	gread_complete(&h->reads, h->applied);
	if (h->fail_reads) {
		h->fail_reads = false;
		gread_fail_all(&h->reads, KEEL_ENOTLEADER);
	}
	if (h->role_changed) {
		h->role_changed = false;
		if (h->cfg.sm.on_leader)
			h->cfg.sm.on_leader(h->cfg.sm.arg, (uint32_t)h->leader,
					    keel_paxos_ballot_round(h->ballot),
					    h->role == KEEL_PAXOS_LEADER);
	}
}

static void wal_done(void *arg, uint64_t last_index, int status)
{
	struct keel_phost *h = arg;
	(void)last_index;
	h->wal_done = true;
	h->wal_status = status;
	if (h->closing || h->in_start)
		return;
	/* inside keel_wal_poll: finish on a timer, which may compact */
	keel_clock_arm(h->clock, &h->kick, 0);
}

/* Records: index = the journal's next, term = ballot, type = value type,
 * payload = u64 slot + value. One buffer for the batch: the WAL copies
 * payloads before keel_wal_append returns. */
static int journal_append(struct keel_phost *h, const struct keel_paxos_value *v, size_t n,
			  keel_wal_done_fn *cb)
{
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += JOURNAL_HDR + v[i].len;
	if (h->wents_cap < n) {
		struct keel_wal_entry *e = realloc(h->wents, n * 2 * sizeof(*e));
		if (!e)
			return -ENOMEM;
		h->wents = e;
		h->wents_cap = n * 2;
	}
	if (h->jbuf_cap < bytes) {
		uint8_t *b = realloc(h->jbuf, bytes * 2);
		if (!b)
			return -ENOMEM;
		h->jbuf = b;
		h->jbuf_cap = bytes * 2;
	}
	uint64_t idx = keel_wal_last_index(h->w);
	uint8_t *q = h->jbuf;
	for (size_t i = 0; i < n; i++) {
		keel_put_le64(q, v[i].slot);
		if (v[i].len)
			memcpy(q + JOURNAL_HDR, v[i].data, v[i].len);
		h->wents[i] = (struct keel_wal_entry){.index = idx + 1 + i, .term = v[i].ballot,
						      .type = v[i].type,
						      .len = JOURNAL_HDR + v[i].len, .data = q};
		q += JOURNAL_HDR + v[i].len;
	}
	return keel_wal_append(h->w, h->wents, n, cb, h);
}

static void ready_start(struct keel_phost *h)
{
	struct keel_paxos_ready *rd = &h->rd;
	int rc;
	/* PMS §2.3: the promise is durable before anything depends on it */
	if (rd->promised_changed && rd->promised != h->saved_promised) {
		struct keel_wal_hard_state hs = {.term = rd->promised, .vote = PAXOS_WAL_MARK};
		rc = keel_wal_save_hard_state(h->w, &hs);
		if (rc < 0) {
			host_fail(h, rc, keel_wal_errmsg(h->w));
			return;
		}
		h->saved_promised = rd->promised;
		h->st.hard_state_saves++;
	}
	if (rd->snapshot && install_snapshot(h, rd->snapshot) < 0)
		return;
	if (!rd->n_accepted) {
		ready_finish(h);
		return;
	}
	h->wal_done = false;
	h->in_start = true;
	rc = journal_append(h, rd->accepted, rd->n_accepted, wal_done);
	h->in_start = false;
	if (rc < 0) {
		host_fail(h, rc, keel_wal_errmsg(h->w));
		return;
	}
	h->st.wal_batches++;
	h->st.wal_entries += rd->n_accepted;
	send_msgs(h, rd, 1);
	if (h->wal_done) {
		if (h->wal_status < 0)
			host_fail(h, h->wal_status, "WAL write failed");
		else
			ready_finish(h);
	}
}

static void host_pump(struct keel_phost *h)
{
	if (h->pumping || h->closing)
		return;
	h->pumping = true;
	while (!h->busy && !h->failed) {
		drain_inputs(h);
		if (!keel_paxos_has_ready(h->p))
			break;
		keel_paxos_ready(h->p, &h->rd);
		h->busy = true;
		ready_start(h);
	}
	h->pumping = false;
}

static void on_kick(struct keel_timer *t)
{
	struct keel_phost *h = t->arg;
	if (!h->busy || h->failed)
		return;
	if (h->wal_status < 0) {
		host_fail(h, h->wal_status, "WAL write failed");
		return;
	}
	ready_finish(h);
	host_pump(h);
}

static void on_tick(struct keel_timer *t)
{
	struct keel_phost *h = t->arg;
	if (h->failed || h->closing)
		return;
	h->ticks++;
	h->queued_ticks++;
	gprop_expire(&h->pending, h->ticks);
	gread_expire(&h->reads, h->ticks);
	keel_clock_arm(h->clock, &h->tick, (uint64_t)h->tick_ms * 1000000u);
	host_pump(h);
}

/* ---- the engine's calls ----------------------------------------------------- */

static int px_propose(struct keel_rlog *l, const void *data, size_t len, keel_rlog_done_fn *cb,
		      void *arg)
{
	struct keel_phost *h = H(l);
	if (h->closing)
		return KEEL_ESTOPPED;
	if (h->failed)
		return KEEL_EDURABLE;
	if (len > h->max_entry)
		return KEEL_ETOOBIG;
	if (len && !data)
		return KEEL_EBADINPUT;
	struct keel_paxos_status st;
	keel_paxos_status(h->p, &st);
	if (st.role != KEEL_PAXOS_LEADER)
		return KEEL_ENOTLEADER;
	struct gprop *g = gprop_new(data, len, cb, arg, h->ticks + h->req_timeout);
	if (!g)
		return -ENOMEM;
	g->term = value_hash(KEEL_PAXOS_VALUE_NORMAL, data, len);
	if (!h->busy && !h->pumping) {
		/* straight to the core: a refusal is returned, cb never runs */
		int rc = keel_paxos_propose(h->p, g->data, len, &g->index, NULL);
		if (rc < 0) {
			free(g);
			return rc;
		}
		gprop_push(&h->pending, g);
		host_pump(h);
		return 0;
	}
	gprop_push(&h->queued, g); /* proposed by the next drain_inputs */
	return 0;
}

static int px_read_barrier(struct keel_rlog *l, keel_rlog_read_fn *cb, void *arg)
{
	struct keel_phost *h = H(l);
	if (h->closing)
		return KEEL_ESTOPPED;
	if (h->failed)
		return KEEL_EDURABLE;
	if (!cb)
		return KEEL_EBADINPUT;
	struct keel_paxos_status st;
	keel_paxos_status(h->p, &st);
	if (st.leader == KEEL_PAXOS_NONE)
		return KEEL_ENOTLEADER;
	struct gread *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cb = cb;
	r->arg = arg;
	r->deadline = h->ticks + h->req_timeout;
	struct gread **tail = &h->rq_head;
	while (*tail)
		tail = &(*tail)->next;
	*tail = r;
	host_pump(h);
	return 0;
}

static int px_campaign(struct keel_rlog *l)
{
	struct keel_phost *h = H(l);
	if (h->failed)
		return KEEL_EDURABLE;
	if (h->busy || h->pumping)
		return KEEL_EBUSY;
	int rc = keel_paxos_campaign(h->p);
	if (rc == 0)
		host_pump(h);
	return rc;
}

static int px_poll(struct keel_rlog *l)
{
	struct keel_phost *h = H(l);
	if (h->wr || h->closing)
		return 0;
	int n = keel_wal_poll(h->w);
	return n > 0 ? n : 0;
}

static void px_status(const struct keel_rlog *l, struct keel_rlog_status *out)
{
	const struct keel_phost *h = CH(l);
	struct keel_paxos_status st;
	keel_paxos_status(h->p, &st);
	out->protocol = "paxos";
	out->group = h->cfg.group;
	out->self = h->id;
	out->role = st.role == KEEL_PAXOS_LEADER	   ? KEEL_RLOG_LEADER
		    : st.role == KEEL_PAXOS_CANDIDATE ? KEEL_RLOG_CANDIDATE
						      : KEEL_RLOG_FOLLOWER;
	out->leader = (uint32_t)st.leader;
	out->epoch = keel_paxos_ballot_round(st.ballot);
	out->commit = st.commit;
	out->applied = h->applied;
	out->last_index = st.last;
	out->snapshot_index = st.snapshot_index;
	out->failed = h->failed;
	out->fail_code = h->fail_code;
	for (uint32_t i = 0; i < h->n_voters && i < KEEL_RLOG_MAX_MEMBERS; i++)
		out->members[out->n_members++] =
			(struct keel_rlog_member){.node = (uint32_t)h->voters[i], .voter = true};
}

static void px_stats(const struct keel_rlog *l, struct keel_rlog_stats *st)
{
	*st = CH(l)->st;
	if (CH(l)->w)
		keel_wal_get_stats(CH(l)->w, &st->wal);
}

/* ---- open / close --------------------------------------------------------------- */

struct boot_ctx {
	struct keel_paxos_value *v;
	size_t n, cap;
	const char *bad;
};

static int boot_record(void *arg, const struct keel_wal_entry *we)
{
	struct boot_ctx *b = arg;
	if (we->len < JOURNAL_HDR) {
		b->bad = "a journal record shorter than its slot number";
		return KEEL_ECORRUPT;
	}
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		struct keel_paxos_value *n = realloc(b->v, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		b->v = n;
		b->cap = cap;
	}
	uint32_t len = we->len - JOURNAL_HDR;
	uint8_t *d = NULL;
	if (len) {
		d = malloc(len);
		if (!d)
			return -ENOMEM;
		memcpy(d, (const uint8_t *)we->data + JOURNAL_HDR, len);
	}
	b->v[b->n++] = (struct keel_paxos_value){.slot = keel_get_le64(we->data),
						 .ballot = we->term, .type = we->type,
						 .len = len, .data = d};
	return 0;
}

static void boot_free(struct boot_ctx *b)
{
	for (size_t i = 0; i < b->n; i++)
		free((void *)b->v[i].data);
	free(b->v);
}

static int mkdir_p(const char *path)
{
	char buf[512];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *q = buf + 1; *q; q++) {
		if (*q != '/')
			continue;
		*q = 0;
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*q = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int voters_of(struct keel_phost *h, char *errmsg)
{
	const struct keel_rlog_config *cfg = &h->cfg;
	if (cfg->join)
		return keel_errmsg_set(errmsg, KEEL_ENOTSUP,
				       "paxos: join = true needs reconfiguration, which the Multi-Paxos "
				       "engine does not have (list every node in voters, or use "
				       "protocol = raft)");
	const struct keel_node_config *node = keel_endpoint_node_config(h->ep);
	size_t n = cfg->voters ? cfg->n_voters : node->npeers;
	if (n > KEEL_PAXOS_MAX_NODES)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: %zu voters, at most %d", n,
				       KEEL_PAXOS_MAX_NODES);
	bool self = false;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = cfg->voters ? cfg->voters[i] : node->peers[i].node;
		if (!keel_node_config_peer(node, id))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: voter %u is not in [peers]",
					       id);
		self |= id == h->id;
		h->voters[h->n_voters++] = id;
	}
	if (!self)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "paxos: node %u is not among the voters", h->id);
	return 0;
}

static int open_core(struct keel_phost *h, char *errmsg)
{
	const struct keel_rlog_config *cfg = &h->cfg;
	struct keel_wal_io *io = cfg->wal_io, *sio = cfg->snap_io;
	h->cfg.wal_io = h->cfg.snap_io = NULL; /* ours now */
	int rc = voters_of(h, errmsg);
	if (rc == 0 && (!io || !sio)) {
		rc = mkdir_p(h->dir);
		if (rc < 0)
			keel_errmsg_set(errmsg, rc, "paxos: cannot create %s", h->dir);
	}
	if (rc == 0 && !io)
		rc = keel_wal_io_posix_new(&io, h->dir, cfg->wal_engine, errmsg);
	if (rc == 0 && !sio) {
		char sdir[600];
		snprintf(sdir, sizeof(sdir), "%s/snap", h->dir);
		rc = keel_wal_io_posix_new(&sio, sdir, KEEL_WAL_ENGINE_SYNC, errmsg);
	}
	if (rc < 0) {
		if (io)
			io->ops->destroy(io);
		if (sio)
			sio->ops->destroy(sio);
		return rc;
	}
	h->snap.io = sio;
	rc = keel_wal_open(&h->w, io, cfg->wal, errmsg);
	if (rc < 0)
		return rc;
	struct keel_wal_hard_state hs;
	keel_wal_hard_state(h->w, &hs);
	h->saved_promised = hs.term;
	if (hs.vote != PAXOS_WAL_MARK && (hs.term || hs.vote || keel_wal_last_index(h->w)))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "paxos: %s holds another engine's log (a Raft WAL?): a group "
				       "keeps the protocol it was created with ([log] protocol)",
				       h->dir);
	if (!keel_wal_last_index(h->w) && !keel_wal_first_index(h->w)) {
		/* A new journal: mark it Paxos's and write a first record (slot
		 * 0, which recovery skips) now, so that creating the first
		 * segment (zero-filled, fdatasync'd) happens at open and not in
		 * the first proposal's write, where it stalls the shard for
		 * every group on it. Raft's founding entry does the same. */
		/* An empty journal is also what a compaction that kept nothing
		 * leaves behind: its promise stays (forgetting it would break
		 * every promise this acceptor made). */
		struct keel_wal_hard_state mark = {.term = hs.term, .vote = PAXOS_WAL_MARK};
		struct keel_paxos_value start = {.slot = 0, .type = KEEL_PAXOS_VALUE_NOOP};
		rc = hs.vote == PAXOS_WAL_MARK ? 0 : keel_wal_save_hard_state(h->w, &mark);
		if (rc == 0)
			rc = journal_append(h, &start, 1, NULL);
		if (rc == 0)
			rc = keel_wal_flush(h->w);
		if (rc < 0)
			return keel_errmsg_set(errmsg, rc, "paxos: starting the journal in %s: %s", h->dir,
					       keel_wal_errmsg(h->w));
		hs = mark;
	}

	uint8_t *snap_buf = NULL;
	size_t snap_len = 0;
	struct keel_raft_snapshot rs;
	struct keel_paxos_snapshot ps;
	rc = snapstore_load(&h->snap, &snap_buf, &snap_len, errmsg);
	if (rc < 0)
		return rc;
	bool have_snap = rc == 1;
	if (have_snap) {
		const char *why = NULL;
		if (keel_group_snapshot_decode(snap_buf, snap_len, &rs, &why) < 0) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, KEEL_ECORRUPT, "paxos: %s/snap/snapshot: %s",
					       h->dir, why);
		}
		if (!cfg->sm.restore) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "paxos: %s/snap/snapshot exists but the state machine has "
					       "no restore()",
					       h->dir);
		}
		rc = cfg->sm.restore(cfg->sm.arg, rs.meta.index, rs.data, rs.len);
		if (rc < 0) {
			free(snap_buf);
			return keel_errmsg_set(errmsg, rc,
					       "paxos: the state machine refused %s/snap/snapshot", h->dir);
		}
		ps = (struct keel_paxos_snapshot){.index = rs.meta.index, .data = rs.data,
						  .len = rs.len};
		h->snap_index = h->applied = ps.index;
	}
	struct boot_ctx b = {0};
	uint64_t first = keel_wal_first_index(h->w);
	if (first && keel_wal_last_index(h->w) >= first) {
		rc = keel_wal_iterate(h->w, first, boot_record, &b);
		if (rc < 0) {
			boot_free(&b);
			free(snap_buf);
			return keel_errmsg_set(errmsg, rc, "paxos: reading the journal in %s: %s", h->dir,
					       b.bad ? b.bad : keel_wal_errmsg(h->w));
		}
	}
	struct keel_paxos_boot boot = {.promised = hs.term,
				       .snapshot = have_snap ? &ps : NULL,
				       .accepted = b.v,
				       .n_accepted = b.n};
	struct keel_paxos_config pc = {
		.id = h->id,
		.n_voters = h->n_voters,
		.election_tick = cfg->election_ticks ? cfg->election_ticks : 10,
		.heartbeat_tick = cfg->heartbeat_ticks ? cfg->heartbeat_ticks : 1,
		.max_msg_bytes = h->max_entry,
		.seed = keel_mix64(cfg->seed ? cfg->seed : keel_clock_now(h->clock) ^ keel_now_ns()) ^
			((uint64_t)h->id << 48 | cfg->group),
	};
	memcpy(pc.voters, h->voters, sizeof(pc.voters));
	rc = keel_paxos_create(&pc, &boot, &h->p, errmsg);
	boot_free(&b);
	free(snap_buf);
	if (rc < 0)
		return rc;
	/* Read contexts of this incarnation's own, as the Raft host's
	 * (group_host.c, open_core): an answer to the previous incarnation's
	 * read must not release a new one. */
	h->next_ctx = keel_mix64(pc.seed ^ keel_clock_now(h->clock)) >> 1;
	struct keel_paxos_status st;
	keel_paxos_status(h->p, &st);
	keel_info("paxos: group %u recovered from %s (%s): promised %llx, slots (%llu, %llu], "
		  "snapshot %llu",
		  cfg->group, h->dir, keel_wal_engine_name(h->w), (unsigned long long)st.promised,
		  (unsigned long long)st.base, (unsigned long long)st.last,
		  (unsigned long long)st.snapshot_index);
	return 0;
}

static void px_close(struct keel_rlog *l);

static int px_open(const struct keel_rlog_config *cfg, struct keel_rlog **out, char *errmsg)
{
	*out = NULL;
	if (!cfg->ep || !cfg->dir || !cfg->sm.apply) {
		if (cfg->wal_io)
			cfg->wal_io->ops->destroy(cfg->wal_io);
		if (cfg->snap_io)
			cfg->snap_io->ops->destroy(cfg->snap_io);
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "paxos: an endpoint, a directory and apply() are required");
	}
	struct keel_phost *h = calloc(1, sizeof(*h));
	if (!h) {
		if (cfg->wal_io)
			cfg->wal_io->ops->destroy(cfg->wal_io);
		if (cfg->snap_io)
			cfg->snap_io->ops->destroy(cfg->snap_io);
		return keel_errmsg_set(errmsg, -ENOMEM, "paxos: out of memory");
	}
	h->head.engine = &rlog_paxos_engine;
	h->cfg = *cfg;
	snprintf(h->dir, sizeof(h->dir), "%s", cfg->dir);
	h->cfg.dir = h->dir;
	h->ep = cfg->ep;
	h->clock = keel_endpoint_clock(cfg->ep);
	h->id = keel_endpoint_node_id(cfg->ep);
	h->tick_ms = cfg->tick_ms ? cfg->tick_ms : 100;
	h->req_timeout = cfg->request_timeout_ticks ? cfg->request_timeout_ticks : 50;
	h->snap_every = cfg->sm.snapshot && cfg->sm.restore ? cfg->snapshot_every : 0;
	h->snap_keep = cfg->snapshot_keep ? cfg->snapshot_keep : 64;
	h->snap_phase = snap_phase(h->id, cfg->group, h->snap_every);
	uint32_t frame = keel_endpoint_max_payload(cfg->ep);
	h->max_entry = frame / 2 < (1u << 20) ? frame / 2 : (1u << 20);
	keel_timer_init(&h->tick, on_tick, h);
	keel_timer_init(&h->kick, on_kick, h);
	int rc = open_core(h, errmsg);
	if (rc == 0) {
		int id = keel_msg_type_id("paxos");
		if (id < 0) {
			rc = keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: no \"paxos\" message type");
		} else {
			h->type = (uint16_t)id;
			rc = keel_endpoint_join(h->ep, "paxos", cfg->group, on_msg, h);
			if (rc < 0)
				keel_errmsg_set(errmsg, rc, "paxos: group %u cannot join the endpoint",
						cfg->group);
			else
				h->joined = true;
		}
	}
	if (rc == 0 && keel_endpoint_reactor(cfg->ep)) {
		rc = keel_wal_attach(h->w, keel_endpoint_reactor(cfg->ep), &h->wr);
		if (rc < 0)
			keel_errmsg_set(errmsg, rc, "paxos: attaching the WAL to the shard: %s",
					keel_strerror(rc));
	}
	if (rc == 0 && snapwriter_usable(&h->snap, keel_endpoint_reactor(cfg->ep))) {
		char werr[KEEL_ERRMSG_LEN];
		if (snapwriter_ref(werr) < 0) {
			keel_warn("paxos: group %u: %s: snapshots are written on the shard",
				  cfg->group, werr);
		} else {
			h->snap_async = true;
			h->shard = keel_endpoint_reactor(cfg->ep);
		}
	}
	if (rc < 0) {
		px_close(&h->head);
		return rc;
	}
	keel_clock_arm(h->clock, &h->tick, (uint64_t)h->tick_ms * 1000000u);
	*out = &h->head;
	host_pump(h);
	return 0;
}

static void px_close(struct keel_rlog *l)
{
	struct keel_phost *h = H(l);
	h->closing = true;
	keel_clock_cancel(h->clock, &h->tick);
	keel_clock_cancel(h->clock, &h->kick);
	if (h->joined)
		keel_endpoint_leave(h->ep, "paxos", h->cfg.group);
	if (h->wr)
		keel_wal_detach(h->wr);
	if (h->w)
		keel_wal_close(h->w);
	snap_job_drop(h); /* waits for the snapshot writer to be done with h->snap */
	if (h->snap_async)
		snapwriter_unref();
	if (h->snap.io)
		h->snap.io->ops->destroy(h->snap.io);
	gprop_fail_all(&h->queued, KEEL_ESTOPPED);
	gprop_fail_all(&h->pending, KEEL_ESTOPPED);
	gread_fail_all(&h->rq_head, KEEL_ESTOPPED);
	gread_fail_all(&h->reads, KEEL_ESTOPPED);
	while (h->in_head) {
		struct pin *in = h->in_head;
		h->in_head = in->next;
		keel_paxos_msg_free(&in->m);
		free(in);
	}
	keel_paxos_destroy(h->p);
	free(h->wents);
	free(h->jbuf);
	free(h);
}

const struct rlog_engine rlog_paxos_engine = {
	.name = "paxos",
	.open = px_open,
	.close = px_close,
	.poll = px_poll,
	.propose = px_propose,
	.read_barrier = px_read_barrier,
	/* no reconfiguration, no transfer: keel_rlog_* answer KEEL_ENOTSUP */
	.campaign = px_campaign,
	.status = px_status,
	.stats = px_stats,
};
