/*
 * paxos_core.c — the Multi-Paxos core's life cycle, its slot window, tick,
 * step dispatch and the ready/advance hand-off. See include/keel/paxos.h.
 *
 * The slot window holds slots base+1 .. last: accepted values (the
 * acceptor's state), learned values, and which are chosen. The learner's
 * commit is the chosen prefix: slots are chosen in any order (an ACCEPT
 * lost on the way leaves a hole below later chosen slots) but handed to
 * the application only in slot order, so chosen slots above a hole wait
 * here until it is filled.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

#define DEFAULT_MSG_BYTES (1u << 20)

static uint64_t rng_next(struct keel_paxos *p)
{
	uint64_t x = p->rng; /* xorshift64*, as the Raft core */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	p->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void px_reset_timeout(struct keel_paxos *p)
{
	/* [T, 2T), plus up to T per failed attempt (at most 3): duelling
	 * proposers spread further apart each time they collide. */
	uint32_t t = p->cfg.election_tick;
	uint32_t extra = p->attempts > 3 ? 3 : p->attempts;
	p->timeout = t + (uint32_t)(rng_next(p) % (t * (1 + extra)));
	p->elapsed = 0;
}

int px_voter_idx(const struct keel_paxos *p, uint64_t id)
{
	for (uint32_t i = 0; i < p->cfg.n_voters; i++)
		if (p->cfg.voters[i] == id)
			return (int)i;
	return -1;
}

/* ---- slots -------------------------------------------------------------- */

struct pslot *px_slot(const struct keel_paxos *p, uint64_t s)
{
	if (s <= p->base || s > p->last)
		return NULL;
	return &p->slots[s - p->base - 1];
}

struct pslot *px_slot_ensure(struct keel_paxos *p, uint64_t s)
{
	/* A slot far past our last is a peer's bad (or hostile) number, not
	 * a window to allocate: refused, which is always safe (not accepted,
	 * not learned; a lagging server catches up in order or by snapshot). */
	if (s <= p->base || (s > p->last && s - p->last > PX_MAX_AHEAD))
		return NULL;
	if (s > p->last) {
		size_t need = (size_t)(s - p->base);
		if (need > p->cap_slots) {
			size_t cap = p->cap_slots ? p->cap_slots : 64;
			while (cap < need)
				cap *= 2;
			struct pslot *n = realloc(p->slots, cap * sizeof(*n));
			if (!n)
				return NULL;
			p->slots = n;
			p->cap_slots = cap;
		}
		memset(&p->slots[p->last - p->base], 0,
		       (size_t)(s - p->last) * sizeof(struct pslot));
		p->last = s;
	}
	return &p->slots[s - p->base - 1];
}

int px_slot_set(struct keel_paxos *p, struct pslot *sl, uint64_t ballot, uint32_t type,
		const void *data, uint32_t len)
{
	(void)p;
	uint8_t *d = NULL;
	if (len) {
		d = malloc(len);
		if (!d)
			return -ENOMEM;
		memcpy(d, data, len);
	}
	free(sl->data);
	sl->data = d;
	sl->len = len;
	sl->type = type;
	sl->ballot = ballot;
	sl->has = true;
	return 0;
}

void px_queue_persist(struct keel_paxos *p, uint64_t s, struct pslot *sl)
{
	sl->durable = false;
	if (sl->queued)
		return;
	if (p->n_unst == p->cap_unst) {
		size_t cap = p->cap_unst ? p->cap_unst * 2 : 64;
		uint64_t *n = realloc(p->unst, cap * sizeof(*n));
		if (!n)
			return; /* not persisted, so never acknowledged: as if lost */
		p->unst = n;
		p->cap_unst = cap;
	}
	p->unst[p->n_unst++] = s;
	sl->queued = true;
}

struct keel_paxos_value px_value_of(uint64_t s, const struct pslot *sl)
{
	return (struct keel_paxos_value){.slot = s, .ballot = sl->ballot, .type = sl->type,
					 .len = sl->len, .data = sl->data, .chosen = sl->chosen};
}

void px_advance_commit(struct keel_paxos *p)
{
	struct pslot *sl;
	while ((sl = px_slot(p, p->commit + 1)) && sl->chosen)
		p->commit++;
}

/* Forgets slots up to upto (chosen, applied and in a snapshot). */
void px_compact(struct keel_paxos *p, uint64_t upto)
{
	if (upto <= p->base)
		return;
	size_t drop = (size_t)((upto < p->last ? upto : p->last) - p->base);
	for (size_t i = 0; i < drop; i++)
		free(p->slots[i].data);
	size_t left = (size_t)(p->last - p->base) - drop;
	if (left)
		memmove(p->slots, p->slots + drop, left * sizeof(*p->slots));
	p->base = upto;
	if (p->last < upto)
		p->last = upto;
	/* unstable entries of dropped slots are skipped at ready() */
	size_t j = 0;
	for (size_t i = 0; i < p->n_unst; i++)
		if (p->unst[i] > upto)
			p->unst[j++] = p->unst[i];
	p->n_unst = j;
	if (p->commit < upto)
		p->commit = upto;
}

struct keel_paxos_value *px_scratch(struct keel_paxos *p, size_t n)
{
	if (n > p->cap_scratch) {
		size_t cap = n < 64 ? 64 : n * 2;
		struct keel_paxos_value *v = realloc(p->scratch, cap * sizeof(*v));
		if (!v)
			return NULL;
		p->scratch = v;
		p->cap_scratch = cap;
	}
	return p->scratch;
}

/* ---- outbox ------------------------------------------------------------- */

int px_send(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (p->n_out == p->cap_out) {
		size_t cap = p->cap_out ? p->cap_out * 2 : 16;
		struct keel_paxos_msg *o = realloc(p->out, cap * sizeof(*o));
		if (!o)
			return -ENOMEM;
		p->out = o;
		p->cap_out = cap;
	}
	struct keel_paxos_msg tmp = *m;
	tmp.from = p->id;
	if (!tmp.commit)
		tmp.commit = p->commit;
	int rc = px_msg_own(&p->out[p->n_out], &tmp);
	if (rc == 0)
		p->n_out++;
	return rc;
}

/* ---- create / destroy ----------------------------------------------------- */

int px_snapshot_store(struct keel_paxos *p, uint64_t index, const void *data, size_t len)
{
	uint8_t *b = len ? malloc(len) : NULL;
	if (len && !b)
		return -ENOMEM;
	if (len)
		memcpy(b, data, len);
	free(p->snap_buf);
	p->snap_buf = b;
	p->snap = (struct keel_paxos_snapshot){.index = index, .data = b, .len = len};
	p->have_snap = true;
	return 0;
}

static int boot(struct keel_paxos *p, const struct keel_paxos_boot *b, char *errmsg)
{
	p->promised = p->prev_promised = b->promised;
	p->max_round = keel_paxos_ballot_round(b->promised);
	if (b->snapshot) {
		int rc = px_snapshot_store(p, b->snapshot->index, b->snapshot->data,
					   b->snapshot->len);
		if (rc)
			return rc;
		p->base = p->last = p->commit = b->snapshot->index;
	}
	for (size_t i = 0; i < b->n_accepted; i++) {
		const struct keel_paxos_value *v = &b->accepted[i];
		if (v->slot <= p->base)
			continue;
		if (v->ballot == 0 || v->ballot > p->promised ||
		    (v->type != KEEL_PAXOS_VALUE_NORMAL && v->type != KEEL_PAXOS_VALUE_NOOP))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "paxos: boot value at slot %llu has ballot %llx (promised %llx) "
					       "or type %u",
					       (unsigned long long)v->slot, (unsigned long long)v->ballot,
					       (unsigned long long)p->promised, v->type);
		struct pslot *sl = px_slot_ensure(p, v->slot);
		if (!sl)
			return -ENOMEM;
		if (sl->has && sl->ballot > v->ballot)
			continue;
		if (px_slot_set(p, sl, v->ballot, v->type, v->data, v->len))
			return -ENOMEM;
		sl->accepted = sl->durable = true;
		uint64_t r = keel_paxos_ballot_round(v->ballot);
		if (r > p->max_round)
			p->max_round = r;
	}
	p->applied = b->applied ? b->applied : p->base;
	if (p->applied < p->base || p->applied > p->commit)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "paxos: boot applied %llu outside the snapshot's %llu",
				       (unsigned long long)p->applied, (unsigned long long)p->base);
	return 0;
}

int keel_paxos_create(const struct keel_paxos_config *cfg, const struct keel_paxos_boot *b,
		      struct keel_paxos **out, char *errmsg)
{
	*out = NULL;
	if (cfg->id == KEEL_PAXOS_NONE || cfg->id > KEEL_PAXOS_MAX_ID)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: id %llu not in 1..%u",
				       (unsigned long long)cfg->id, KEEL_PAXOS_MAX_ID);
	if (cfg->election_tick < 2 || cfg->heartbeat_tick == 0 ||
	    cfg->heartbeat_tick >= cfg->election_tick)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "paxos: need 0 < heartbeat_tick (%u) < election_tick (%u)",
				       cfg->heartbeat_tick, cfg->election_tick);
	if (cfg->n_voters == 0 || cfg->n_voters > KEEL_PAXOS_MAX_NODES)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: %u voters, want 1..%d",
				       cfg->n_voters, KEEL_PAXOS_MAX_NODES);
	bool self = false;
	for (uint32_t i = 0; i < cfg->n_voters; i++) {
		if (cfg->voters[i] == KEEL_PAXOS_NONE || cfg->voters[i] > KEEL_PAXOS_MAX_ID)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: voter id %llu out of range",
					       (unsigned long long)cfg->voters[i]);
		for (uint32_t j = 0; j < i; j++)
			if (cfg->voters[j] == cfg->voters[i])
				return keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: voter %llu twice",
						       (unsigned long long)cfg->voters[i]);
		self |= cfg->voters[i] == cfg->id;
	}
	if (!self)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "paxos: server %llu is not a voter",
				       (unsigned long long)cfg->id);
	struct keel_paxos *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	if (!p->cfg.max_msg_bytes)
		p->cfg.max_msg_bytes = DEFAULT_MSG_BYTES;
	p->id = cfg->id;
	p->self_idx = (uint32_t)px_voter_idx(p, p->id);
	p->quorum = cfg->n_voters / 2 + 1;
	p->rng = (cfg->seed ^ (cfg->id * 0x9E3779B97F4A7C15ULL)) | 1;
	if (b) {
		int rc = boot(p, b, errmsg);
		if (rc) {
			keel_paxos_destroy(p);
			return rc;
		}
	}
	px_reset_timeout(p);
	*out = p;
	return 0;
}

static void free_outbox(struct keel_paxos *p)
{
	for (size_t i = 0; i < p->n_out; i++)
		keel_paxos_msg_free(&p->out[i]);
	p->n_out = 0;
}

void keel_paxos_destroy(struct keel_paxos *p)
{
	if (!p)
		return;
	for (uint64_t s = p->base + 1; s <= p->last; s++)
		free(px_slot(p, s)->data);
	free(p->slots);
	for (size_t i = 0; i < p->n_merge; i++)
		free(p->merge[i].data);
	free(p->merge);
	free(p->unst);
	free(p->preads);
	free(p->reads);
	free(p->snap_buf);
	free_outbox(p);
	free(p->out);
	free(p->rd_acc);
	free(p->rd_chosen);
	free(p->scratch);
	free(p);
}

/* ---- tick / step ------------------------------------------------------------ */

void keel_paxos_tick(struct keel_paxos *p)
{
	p->ticks++;
	if (p->role == KEEL_PAXOS_LEADER) {
		px_leader_tick(p);
		return;
	}
	/* The failure detector: no word from a leader (or no phase 1 that
	 * finished) within the randomized timeout. */
	if (++p->elapsed >= p->timeout)
		px_campaign(p, false);
}

int keel_paxos_campaign(struct keel_paxos *p)
{
	if (p->role == KEEL_PAXOS_LEADER)
		return KEEL_EBUSY;
	px_campaign(p, true);
	return 0;
}

static bool msg_valid(const struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->type < 1 || m->type > KEEL_PAXOS_MSG_TYPE_MAX || px_voter_idx(p, m->from) < 0 ||
	    m->from == p->id)
		return false;
	if (m->n_values && !m->values)
		return false;
	if (m->snap_len && !m->snap)
		return false;
	/* Slot numbers never come near 2^62: a larger one is a bad peer, and
	 * refusing it keeps every slot + 1 in the core from wrapping. */
	if (m->index > PX_MAX_SLOT || m->last > PX_MAX_SLOT || m->commit > PX_MAX_SLOT ||
	    m->base > PX_MAX_SLOT || m->snap_index > PX_MAX_SLOT)
		return false;
	for (size_t i = 0; i < m->n_values; i++) {
		const struct keel_paxos_value *v = &m->values[i];
		if (v->slot == 0 || v->slot > PX_MAX_SLOT || (v->len && !v->data) ||
		    (v->type != KEEL_PAXOS_VALUE_NORMAL && v->type != KEEL_PAXOS_VALUE_NOOP))
			return false;
	}
	/* A proposer's own messages carry its own ballot. */
	switch (m->type) {
	case KEEL_PAXOS_MSG_PREPARE:
	case KEEL_PAXOS_MSG_ACCEPT:
	case KEEL_PAXOS_MSG_HEARTBEAT:
		if (keel_paxos_ballot_node(m->ballot) != m->from || m->ballot == 0)
			return false;
		break;
	default:
		break;
	}
	return true;
}

int keel_paxos_step(struct keel_paxos *p, const struct keel_paxos_msg *m)
{
	if (m->to != p->id)
		return 0;
	if (!msg_valid(p, m))
		return KEEL_EPROTO;
	px_saw_ballot(p, m->ballot);
	if (m->reject)
		px_saw_ballot(p, m->promised);
	switch (m->type) {
	case KEEL_PAXOS_MSG_PREPARE: px_handle_prepare(p, m); break;
	case KEEL_PAXOS_MSG_PROMISE: px_handle_promise(p, m); break;
	case KEEL_PAXOS_MSG_ACCEPT: px_handle_accept(p, m); break;
	case KEEL_PAXOS_MSG_ACCEPTED: px_handle_accepted(p, m); break;
	case KEEL_PAXOS_MSG_HEARTBEAT: px_handle_heartbeat(p, m); break;
	case KEEL_PAXOS_MSG_HEARTBEAT_RESP: px_handle_heartbeat_resp(p, m); break;
	case KEEL_PAXOS_MSG_LEARN: px_handle_learn(p, m); break;
	case KEEL_PAXOS_MSG_SNAPSHOT: px_handle_snapshot(p, m); break;
	case KEEL_PAXOS_MSG_READ: px_handle_read(p, m); break;
	case KEEL_PAXOS_MSG_READ_RESP: px_handle_read_resp(p, m); break;
	}
	return 0;
}

/* ---- ready / advance -------------------------------------------------------- */

static uint64_t apply_from(const struct keel_paxos *p)
{
	uint64_t a = p->applied;
	if (p->pending_install && p->snap.index > a)
		a = p->snap.index;
	return a;
}

static bool have_chosen(const struct keel_paxos *p)
{
#ifdef KEEL_PAXOS_BUG_APPLY_GAP
	for (uint64_t s = apply_from(p) + 1; s <= p->last; s++) {
		const struct pslot *sl = px_slot(p, s);
		if (sl && sl->chosen)
			return true;
	}
	return false;
#else
	return p->commit > apply_from(p);
#endif
}

bool keel_paxos_has_ready(const struct keel_paxos *p)
{
	return p->n_out || p->n_unst || p->n_reads || p->promised != p->prev_promised ||
	       p->pending_install || have_chosen(p) || p->role != p->prev_role ||
	       p->leader != p->prev_leader || p->ballot != p->prev_ballot ||
	       (p->role == KEEL_PAXOS_LEADER && (p->flush_from < p->next_slot || p->read_round));
}

static bool grow(struct keel_paxos_value **v, size_t *cap, size_t n)
{
	if (n <= *cap)
		return true;
	size_t c = n < 64 ? 64 : n * 2;
	struct keel_paxos_value *x = realloc(*v, c * sizeof(*x));
	if (!x)
		return false;
	*v = x;
	*cap = c;
	return true;
}

void keel_paxos_ready(struct keel_paxos *p, struct keel_paxos_ready *rd)
{
	memset(rd, 0, sizeof(*rd));
	if (p->role == KEEL_PAXOS_LEADER)
		px_flush(p);
	rd->msgs = p->out;
	rd->n_msgs = p->n_out;
	rd->promised_changed = p->promised != p->prev_promised;
	rd->promised = p->promised;
	size_t na = 0;
	if (p->n_unst && grow(&p->rd_acc, &p->cap_acc, p->n_unst)) {
		for (size_t i = 0; i < p->n_unst; i++) {
			struct pslot *sl = px_slot(p, p->unst[i]);
			if (sl && sl->queued && sl->accepted)
				p->rd_acc[na++] = px_value_of(p->unst[i], sl);
		}
	}
	rd->accepted = na ? p->rd_acc : NULL;
	rd->n_accepted = na;
	uint64_t a = apply_from(p);
#ifdef KEEL_PAXOS_BUG_APPLY_GAP
	uint64_t hi = p->last; /* planted: chosen slots above a hole go too */
#else
	uint64_t hi = p->commit;
#endif
	size_t nc = 0;
	if (hi > a && grow(&p->rd_chosen, &p->cap_chosen, (size_t)(hi - a))) {
		for (uint64_t s = a + 1; s <= hi; s++) {
			struct pslot *sl = px_slot(p, s);
			if (sl && sl->chosen)
				p->rd_chosen[nc++] = px_value_of(s, sl);
		}
	}
	rd->chosen = nc ? p->rd_chosen : NULL;
	rd->n_chosen = nc;
	if (p->pending_install)
		rd->snapshot = &p->snap;
	rd->reads = p->reads;
	rd->n_reads = p->n_reads;
	rd->leader = p->leader;
	rd->ballot = p->ballot;
	rd->role = p->role;
}

void keel_paxos_advance(struct keel_paxos *p, const struct keel_paxos_ready *rd)
{
	for (size_t i = 0; i < p->n_unst; i++) {
		struct pslot *sl = px_slot(p, p->unst[i]);
		if (sl)
			sl->queued = false;
	}
	p->n_unst = 0;
	for (size_t i = 0; i < rd->n_accepted; i++) {
		uint64_t s = rd->accepted[i].slot;
		struct pslot *sl = px_slot(p, s);
		if (!sl || sl->ballot != rd->accepted[i].ballot)
			continue;
		sl->durable = true;
		/* The leader counts its own acceptance only now that it is
		 * durable: a crash before the fsync must not lose a vote the
		 * quorum already counted. */
		if (p->role == KEEL_PAXOS_LEADER && sl->ballot == p->ballot)
			px_slot_acked(p, s, sl, p->self_idx);
	}
	p->prev_promised = rd->promised;
	if (rd->snapshot) {
		p->pending_install = false;
		if (p->applied < rd->snapshot->index)
			p->applied = rd->snapshot->index;
	}
	if (rd->n_chosen) {
		uint64_t s = rd->chosen[rd->n_chosen - 1].slot;
		if (s > p->applied)
			p->applied = s;
	}
	free_outbox(p);
	p->n_reads = 0;
	p->prev_role = rd->role;
	p->prev_leader = rd->leader;
	p->prev_ballot = rd->ballot;
	px_advance_commit(p);
}

/* ---- accessors ---------------------------------------------------------------- */

void keel_paxos_status(const struct keel_paxos *p, struct keel_paxos_status *st)
{
	*st = (struct keel_paxos_status){
		.id = p->id, .role = p->role, .promised = p->promised, .ballot = p->ballot,
		.leader = p->leader, .commit = p->commit, .applied = p->applied, .base = p->base,
		.last = p->last, .snapshot_index = p->have_snap ? p->snap.index : 0};
}

const struct keel_paxos_value *keel_paxos_value_at(const struct keel_paxos *p, uint64_t s)
{
	struct pslot *sl = px_slot(p, s);
	if (!sl || !sl->has)
		return NULL;
	struct keel_paxos *mp = (struct keel_paxos *)p;
	struct keel_paxos_value *v = px_scratch(mp, 1);
	if (!v)
		return NULL;
	*v = px_value_of(s, sl);
	return v;
}

const struct keel_paxos_value *keel_paxos_accepted_values(struct keel_paxos *p, size_t *n)
{
	*n = 0;
	size_t k = 0;
	for (uint64_t s = p->base + 1; s <= p->last; s++) {
		struct pslot *sl = px_slot(p, s);
		k += sl->accepted && sl->durable;
	}
	struct keel_paxos_value *v = px_scratch(p, k ? k : 1);
	if (!v)
		return NULL;
	for (uint64_t s = p->base + 1; s <= p->last; s++) {
		struct pslot *sl = px_slot(p, s);
		if (sl->accepted && sl->durable)
			v[(*n)++] = px_value_of(s, sl);
	}
	return v;
}

int keel_paxos_snapshot_taken(struct keel_paxos *p, uint64_t index, const void *data,
			      size_t len, uint64_t keep)
{
	if (index > p->applied || (p->have_snap && index < p->snap.index) || (len && !data))
		return KEEL_EBADINPUT;
	int rc = px_snapshot_store(p, index, data, len);
	if (rc)
		return rc;
	if (index > keep)
		px_compact(p, index - keep);
	return 0;
}
