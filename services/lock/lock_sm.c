/* The lock service's state machine (keel/lock.h says the rules and why).
 * Every decision depends only on the state and the command, and every walk
 * whose order shows (expiries, grants, events) goes in id or name order, so
 * replicas that applied the same log, restored or not, agree byte for
 * byte.
 *
 * Planted bugs (tests/sim/meson.build builds this file again with one, for
 * lock-sim to catch; none is ever defined in a real build):
 *   KEEL_LOCK_BUG_GRANT_EXPIRED           an ending session's waits stay
 *                                         queued and are granted (etcd#11456)
 *   KEEL_LOCK_BUG_SHARED_WITH_EXCLUSIVE   an exclusive waiter is granted
 *                                         beside shared holders
 *   KEEL_LOCK_BUG_TOKEN_COUNTER           tokens from a grant counter that
 *                                         a snapshot does not keep
 *   KEEL_LOCK_BUG_DOUBLE_GRANT            a release decides once that the
 *                                         lock is free and grants waiters
 *                                         from the head while that stale
 *                                         answer holds: two exclusive
 *                                         waiters both granted
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keel/lock.h"

#define SNAP_MAGIC "KEELLK01"

/* ---- command codec -------------------------------------------------------
 *   u8 version (1) u8 op u8 mode u8 reserved
 *   u64 session u64 seq u32 ttl_ms u32 wait_ms u32 lock_delay_ms
 *   u64 token u64 elapsed_ms u64 term
 *   u32 name_len u32 value_len u32 n_sessions
 *   name value sessions (8 bytes each)
 */
#define CMD_HDR 72u
#define MAX_KEEPALIVE 65536u

static bool cmd_valid(const struct keel_lock_cmd *c)
{
	if (c->op < KEEL_LOCK_OPEN || c->op > KEEL_LOCK_TICK)
		return false;
	bool named = c->op == KEEL_LOCK_ACQUIRE || c->op == KEEL_LOCK_RELEASE ||
		     c->op == KEEL_LOCK_CANCEL;
	bool sessioned = c->op != KEEL_LOCK_TICK && c->op != KEEL_LOCK_KEEPALIVE;
	if (sessioned != (c->session != 0))
		return false;
	if (named != (c->name_len != 0) || c->name_len > KEEL_LOCK_MAX_NAME)
		return false;
	if ((c->op == KEEL_LOCK_ACQUIRE) != (c->mode != 0))
		return false;
	if (c->mode && c->mode != KEEL_LOCK_EXCLUSIVE && c->mode != KEEL_LOCK_SHARED)
		return false;
	if (c->value_len > KEEL_LOCK_MAX_VALUE || (c->value_len && c->op != KEEL_LOCK_ACQUIRE))
		return false;
	if (c->op == KEEL_LOCK_OPEN &&
	    (c->ttl_ms < KEEL_LOCK_MIN_TTL_MS || c->ttl_ms > KEEL_LOCK_MAX_TTL_MS))
		return false;
	if (c->op != KEEL_LOCK_OPEN && c->ttl_ms)
		return false;
	if ((c->op == KEEL_LOCK_KEEPALIVE) != (c->n_sessions != 0) || c->n_sessions > MAX_KEEPALIVE)
		return false;
	if (c->op != KEEL_LOCK_ACQUIRE && (c->wait_ms || c->lock_delay_ms))
		return false;
	if (c->wait_ms > KEEL_LOCK_MAX_TTL_MS || c->lock_delay_ms > KEEL_LOCK_MAX_TTL_MS)
		return false;
	if (c->op != KEEL_LOCK_RELEASE && c->token)
		return false;
	if (c->op != KEEL_LOCK_TICK && (c->elapsed_ms || c->term))
		return false;
	return true;
}

size_t keel_lock_cmd_size(const struct keel_lock_cmd *c)
{
	return CMD_HDR + (size_t)c->name_len + c->value_len + (size_t)c->n_sessions * 8;
}

int keel_lock_cmd_encode(const struct keel_lock_cmd *c, uint8_t *buf, size_t cap)
{
	if (!cmd_valid(c))
		return KEEL_EBADINPUT;
	size_t n = keel_lock_cmd_size(c);
	if (n > cap)
		return KEEL_ETOOBIG;
	memset(buf, 0, CMD_HDR);
	buf[0] = 1;
	buf[1] = c->op;
	buf[2] = c->mode;
	keel_put_le64(buf + 4, c->session);
	keel_put_le64(buf + 12, c->seq);
	keel_put_le32(buf + 20, c->ttl_ms);
	keel_put_le32(buf + 24, c->wait_ms);
	keel_put_le32(buf + 28, c->lock_delay_ms);
	keel_put_le64(buf + 32, c->token);
	keel_put_le64(buf + 40, c->elapsed_ms);
	keel_put_le64(buf + 48, c->term);
	keel_put_le32(buf + 56, c->name_len);
	keel_put_le32(buf + 60, c->value_len);
	keel_put_le32(buf + 64, c->n_sessions);
	uint8_t *p = buf + CMD_HDR;
	if (c->name_len)
		memcpy(p, c->name, c->name_len);
	p += c->name_len;
	if (c->value_len)
		memcpy(p, c->value, c->value_len);
	p += c->value_len;
	if (c->n_sessions)
		memcpy(p, c->sessions, (size_t)c->n_sessions * 8);
	return (int)n;
}

int keel_lock_cmd_decode(const uint8_t *buf, size_t len, struct keel_lock_cmd *c)
{
	memset(c, 0, sizeof(*c));
	if (len < CMD_HDR || buf[0] != 1 || buf[3])
		return KEEL_EPROTO;
	for (int i = 68; i < 72; i++)
		if (buf[i])
			return KEEL_EPROTO;
	c->op = buf[1];
	c->mode = buf[2];
	c->session = keel_get_le64(buf + 4);
	c->seq = keel_get_le64(buf + 12);
	c->ttl_ms = keel_get_le32(buf + 20);
	c->wait_ms = keel_get_le32(buf + 24);
	c->lock_delay_ms = keel_get_le32(buf + 28);
	c->token = keel_get_le64(buf + 32);
	c->elapsed_ms = keel_get_le64(buf + 40);
	c->term = keel_get_le64(buf + 48);
	c->name_len = keel_get_le32(buf + 56);
	c->value_len = keel_get_le32(buf + 60);
	c->n_sessions = keel_get_le32(buf + 64);
	if (!cmd_valid(c) || keel_lock_cmd_size(c) != len) {
		memset(c, 0, sizeof(*c));
		return KEEL_EPROTO;
	}
	const uint8_t *p = buf + CMD_HDR;
	c->name = c->name_len ? p : NULL;
	p += c->name_len;
	c->value = c->value_len ? p : NULL;
	p += c->value_len;
	c->sessions = c->n_sessions ? p : NULL;
	return 0;
}

/* ---- state ---------------------------------------------------------------- */

struct session {
	uint64_t id; /* 0: empty slot */
	uint32_t ttl_ms;
	uint64_t deadline_ms;
	uint64_t seq;
	struct keel_lock_result res;
};

struct holder {
	uint64_t session, token;
	uint32_t delay_ms; /* its lock-delay, should its session expire */
	uint8_t *value;
	uint32_t value_len;
};

struct waiter {
	struct waiter *next;
	uint64_t session, seq;
	uint8_t mode;
	uint64_t deadline_ms;
	uint32_t delay_ms;
	uint32_t value_len;
	uint8_t value[];
};

struct lock {
	struct lock *hnext; /* hash chain */
	uint8_t mode;       /* of the holders */
	struct holder *holders;
	size_t n_holders, cap_holders;
	struct waiter *wq_head, *wq_tail;
	size_t n_waiters;
	uint64_t delay_until_ms;
	uint32_t name_len;
	uint8_t name[];
};

struct keel_lock_sm {
	uint64_t now_ms, term, index;
	struct session *sessions;
	size_t nsessions, scap;
	struct lock **buckets;
	size_t nlocks, bcap;
	keel_lock_event_fn *on_event;
	void *event_arg;
#ifdef KEEL_LOCK_BUG_TOKEN_COUNTER
	uint64_t grants; /* the planted bug's token counter: not in the snapshot */
#endif
};

/* A grant's token: the granting command's index (see keel/lock.h). The
 * planted bug counts grants instead, a counter a snapshot forgets. */
#ifdef KEEL_LOCK_BUG_TOKEN_COUNTER
#define GRANT_TOKEN(sm) (++(sm)->grants)
#else
#define GRANT_TOKEN(sm) ((sm)->index)
#endif

static uint64_t name_hash(const uint8_t *n, uint32_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint32_t i = 0; i < len; i++)
		h = (h ^ n[i]) * 0x100000001b3ull;
	return keel_mix64(h);
}

static int name_cmp(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl)
{
	uint32_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;
	return c ? c : (al < bl ? -1 : al > bl);
}

/* ---- sessions: open addressing, backward-shift deletion ---- */

static size_t sslot(const struct keel_lock_sm *sm, uint64_t id)
{
	return (size_t)keel_mix64(id) & (sm->scap - 1);
}

static struct session *session_find(const struct keel_lock_sm *sm, uint64_t id)
{
	if (!sm->scap || !id)
		return NULL;
	for (size_t i = sslot(sm, id);; i = (i + 1) & (sm->scap - 1)) {
		if (sm->sessions[i].id == id)
			return &sm->sessions[i];
		if (!sm->sessions[i].id)
			return NULL;
	}
}

static struct session *session_add(struct keel_lock_sm *sm, uint64_t id)
{
	if ((sm->nsessions + 1) * 4 > sm->scap * 3) {
		size_t cap = sm->scap ? sm->scap * 2 : 64;
		struct session *n = calloc(cap, sizeof(*n));
		if (!n)
			abort(); /* replicated state: no correct way to skip */
		for (size_t i = 0; i < sm->scap; i++) {
			if (!sm->sessions[i].id)
				continue;
			size_t j = (size_t)keel_mix64(sm->sessions[i].id) & (cap - 1);
			while (n[j].id)
				j = (j + 1) & (cap - 1);
			n[j] = sm->sessions[i];
		}
		free(sm->sessions);
		sm->sessions = n;
		sm->scap = cap;
	}
	size_t i = sslot(sm, id);
	while (sm->sessions[i].id)
		i = (i + 1) & (sm->scap - 1);
	sm->sessions[i] = (struct session){.id = id};
	sm->nsessions++;
	return &sm->sessions[i];
}

static void session_remove(struct keel_lock_sm *sm, uint64_t id)
{
	struct session *s = session_find(sm, id);
	if (!s)
		return;
	size_t i = (size_t)(s - sm->sessions), mask = sm->scap - 1;
	sm->sessions[i].id = 0;
	sm->nsessions--;
	for (size_t j = (i + 1) & mask; sm->sessions[j].id; j = (j + 1) & mask) {
		size_t home = sslot(sm, sm->sessions[j].id);
		bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
		if (movable) {
			sm->sessions[i] = sm->sessions[j];
			sm->sessions[j].id = 0;
			i = j;
		}
	}
}

/* ---- locks: chained hash ---- */

static struct lock *lock_find(const struct keel_lock_sm *sm, const uint8_t *name, uint32_t len)
{
	if (!sm->bcap)
		return NULL;
	for (struct lock *l = sm->buckets[name_hash(name, len) & (sm->bcap - 1)]; l; l = l->hnext)
		if (l->name_len == len && !memcmp(l->name, name, len))
			return l;
	return NULL;
}

static struct lock *lock_get(struct keel_lock_sm *sm, const uint8_t *name, uint32_t len)
{
	struct lock *l = lock_find(sm, name, len);
	if (l)
		return l;
	if ((sm->nlocks + 1) > sm->bcap) {
		size_t cap = sm->bcap ? sm->bcap * 2 : 64;
		struct lock **b = calloc(cap, sizeof(*b));
		if (!b)
			abort();
		for (size_t i = 0; i < sm->bcap; i++) {
			for (struct lock *x = sm->buckets[i], *next; x; x = next) {
				next = x->hnext;
				size_t j = name_hash(x->name, x->name_len) & (cap - 1);
				x->hnext = b[j];
				b[j] = x;
			}
		}
		free(sm->buckets);
		sm->buckets = b;
		sm->bcap = cap;
	}
	l = calloc(1, sizeof(*l) + len);
	if (!l)
		abort();
	memcpy(l->name, name, len);
	l->name_len = len;
	size_t j = name_hash(name, len) & (sm->bcap - 1);
	l->hnext = sm->buckets[j];
	sm->buckets[j] = l;
	sm->nlocks++;
	return l;
}

/* A lock nobody holds, waits for or is delayed on is forgotten. */
static void lock_maybe_free(struct keel_lock_sm *sm, struct lock *l)
{
	if (l->n_holders || l->n_waiters || l->delay_until_ms > sm->now_ms)
		return;
	struct lock **pp = &sm->buckets[name_hash(l->name, l->name_len) & (sm->bcap - 1)];
	while (*pp != l)
		pp = &(*pp)->hnext;
	*pp = l->hnext;
	free(l->holders);
	free(l);
	sm->nlocks--;
}

/* Every lock, sorted by name (for walks whose order shows). */
static struct lock **locks_sorted(const struct keel_lock_sm *sm, size_t *n);

static void emit(struct keel_lock_sm *sm, uint8_t kind, uint64_t session, uint64_t seq,
		 const struct lock *l, uint64_t token)
{
	if (!sm->on_event)
		return;
	struct keel_lock_event ev = {.kind = kind, .session = session, .seq = seq,
				     .name = l ? l->name : NULL, .name_len = l ? l->name_len : 0,
				     .token = token, .index = sm->index};
	sm->on_event(sm->event_arg, &ev);
}

static void add_holder(struct lock *l, uint64_t session, uint64_t token, const uint8_t *value,
		       uint32_t vlen, uint8_t mode, uint32_t delay_ms)
{
	if (l->n_holders == l->cap_holders) {
		size_t cap = l->cap_holders ? l->cap_holders * 2 : 2;
		struct holder *h = realloc(l->holders, cap * sizeof(*h));
		if (!h)
			abort();
		l->holders = h;
		l->cap_holders = cap;
	}
	uint8_t *v = NULL;
	if (vlen) {
		v = malloc(vlen);
		if (!v)
			abort();
		memcpy(v, value, vlen);
	}
	l->holders[l->n_holders++] = (struct holder){session, token, delay_ms, v, vlen};
	l->mode = mode;
}

static void remove_holder(struct lock *l, size_t i)
{
	free(l->holders[i].value);
	memmove(&l->holders[i], &l->holders[i + 1], (l->n_holders - i - 1) * sizeof(*l->holders));
	if (!--l->n_holders)
		l->mode = 0;
}

/* Grants from the head of the FIFO while it can: an exclusive waiter only
 * to a free lock; shared ones to a free or shared lock, but never past an
 * exclusive waiter ahead of them. The token is this command's index. */
static void pump(struct keel_lock_sm *sm, struct lock *l)
{
	if (l->delay_until_ms > sm->now_ms)
		return;
#ifdef KEEL_LOCK_BUG_DOUBLE_GRANT
	bool was_free = !l->n_holders; /* decided once, before the first grant */
	unsigned granted = 0;
#endif
	while (l->wq_head) {
		struct waiter *w = l->wq_head;
#ifdef KEEL_LOCK_BUG_DOUBLE_GRANT
		if (granted == 2)
			break;
		bool ok = was_free || (l->mode == KEEL_LOCK_SHARED && w->mode == KEEL_LOCK_SHARED);
#elif defined(KEEL_LOCK_BUG_SHARED_WITH_EXCLUSIVE)
		bool ok = !l->n_holders || l->mode == KEEL_LOCK_SHARED; /* the waiter's mode ignored */
#else
		bool ok = !l->n_holders ||
			  (l->mode == KEEL_LOCK_SHARED && w->mode == KEEL_LOCK_SHARED);
#endif
		if (!ok)
			break;
		l->wq_head = w->next;
		if (!l->wq_head)
			l->wq_tail = NULL;
		l->n_waiters--;
		uint64_t token = GRANT_TOKEN(sm);
		add_holder(l, w->session, token, w->value, w->value_len, w->mode, w->delay_ms);
		emit(sm, KEEL_LOCK_EV_GRANTED, w->session, w->seq, l, token);
		free(w);
#ifdef KEEL_LOCK_BUG_DOUBLE_GRANT
		granted++;
		if (l->mode == KEEL_LOCK_EXCLUSIVE && !was_free)
			break;
#else
		if (l->mode == KEEL_LOCK_EXCLUSIVE)
			break;
#endif
	}
}

/* Drops session s's holds and waits on l; returns the largest lock-delay
 * of what it held (0 if it held nothing or asked for none). */
static uint32_t drop_session_on(struct lock *l, uint64_t s)
{
	uint32_t held = 0;
	for (size_t i = 0; i < l->n_holders;) {
		if (l->holders[i].session == s) {
			if (l->holders[i].delay_ms > held)
				held = l->holders[i].delay_ms;
			remove_holder(l, i);
		} else {
			i++;
		}
	}
#ifdef KEEL_LOCK_BUG_GRANT_EXPIRED
	return held; /* the waits stay queued, to be granted later (etcd#11456) */
#endif
	struct waiter **pp = &l->wq_head, *prev = NULL;
	while (*pp) {
		struct waiter *w = *pp;
		if (w->session != s) {
			prev = w;
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		if (l->wq_tail == w)
			l->wq_tail = prev;
		l->n_waiters--;
		free(w);
	}
	return held;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Ends sessions ids[0..n) (sorted): every hold and wait goes first, then
 * the locks they touched are pumped, so no lock is granted twice in one
 * command and no waiter of an ending session is ever granted. */
static void end_sessions(struct keel_lock_sm *sm, uint64_t *ids, size_t n, bool expired)
{
	if (!n)
		return;
	size_t nl;
	struct lock **ls = locks_sorted(sm, &nl);
	for (size_t k = 0; k < nl; k++) {
		struct lock *l = ls[k];
		uint32_t delay = 0;
		for (size_t i = 0; i < n; i++) {
			uint32_t d = drop_session_on(l, ids[i]);
			if (d > delay)
				delay = d;
		}
		if (expired && delay && sm->now_ms + delay > l->delay_until_ms)
			l->delay_until_ms = sm->now_ms + delay;
	}
	for (size_t i = 0; i < n; i++) {
		session_remove(sm, ids[i]);
		emit(sm, KEEL_LOCK_EV_EXPIRED, ids[i], 0, NULL, 0);
	}
	for (size_t k = 0; k < nl; k++) {
		pump(sm, ls[k]);
		lock_maybe_free(sm, ls[k]);
	}
	free(ls);
}

static int lock_cmp_ptr(const void *a, const void *b)
{
	const struct lock *x = *(const struct lock *const *)a, *y = *(const struct lock *const *)b;
	return name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static struct lock **locks_sorted(const struct keel_lock_sm *sm, size_t *n)
{
	struct lock **v = malloc((sm->nlocks ? sm->nlocks : 1) * sizeof(*v));
	if (!v)
		abort();
	size_t k = 0;
	for (size_t i = 0; i < sm->bcap; i++)
		for (struct lock *l = sm->buckets[i]; l; l = l->hnext)
			v[k++] = l;
	qsort(v, k, sizeof(*v), lock_cmp_ptr);
	*n = k;
	return v;
}

static void tick(struct keel_lock_sm *sm, const struct keel_lock_cmd *c)
{
	if (c->term != sm->term) {
		/* A new leader: it cannot know what the old one acknowledged
		 * but did not commit, so every lease gets a full TTL from now. */
		sm->term = c->term;
		for (size_t i = 0; i < sm->scap; i++) {
			struct session *s = &sm->sessions[i];
			if (s->id && s->deadline_ms < sm->now_ms + s->ttl_ms)
				s->deadline_ms = sm->now_ms + s->ttl_ms;
		}
		/* its first tick's elapsed time is its own, measured from
		 * nothing: count none of it */
	} else {
		sm->now_ms += c->elapsed_ms;
	}
	/* waits that ran out */
	size_t nl;
	struct lock **ls = locks_sorted(sm, &nl);
	for (size_t k = 0; k < nl; k++) {
		struct lock *l = ls[k];
		struct waiter **pp = &l->wq_head, *prev = NULL;
		while (*pp) {
			struct waiter *w = *pp;
			if (w->deadline_ms > sm->now_ms) {
				prev = w;
				pp = &w->next;
				continue;
			}
			*pp = w->next;
			if (l->wq_tail == w)
				l->wq_tail = prev;
			l->n_waiters--;
			emit(sm, KEEL_LOCK_EV_WAIT_TIMEOUT, w->session, w->seq, l, 0);
			free(w);
		}
	}
	/* sessions that ran out, in id order */
	uint64_t *ids = malloc((sm->nsessions ? sm->nsessions : 1) * sizeof(*ids));
	if (!ids)
		abort();
	size_t n = 0;
	for (size_t i = 0; i < sm->scap; i++)
		if (sm->sessions[i].id && sm->sessions[i].deadline_ms <= sm->now_ms)
			ids[n++] = sm->sessions[i].id;
	qsort(ids, n, sizeof(*ids), cmp_u64);
	end_sessions(sm, ids, n, true);
	free(ids);
	/* locks whose lock-delay ended, and those a timed-out waiter unblocked */
	free(ls);
	ls = locks_sorted(sm, &nl);
	for (size_t k = 0; k < nl; k++) {
		pump(sm, ls[k]);
		lock_maybe_free(sm, ls[k]);
	}
	free(ls);
}

static bool holds(const struct lock *l, uint64_t s, uint64_t *token)
{
	for (size_t i = 0; i < l->n_holders; i++) {
		if (l->holders[i].session == s) {
			if (token)
				*token = l->holders[i].token;
			return true;
		}
	}
	return false;
}

static bool waits(const struct lock *l, uint64_t s)
{
	for (const struct waiter *w = l->wq_head; w; w = w->next)
		if (w->session == s)
			return true;
	return false;
}

static struct keel_lock_result acquire(struct keel_lock_sm *sm, const struct keel_lock_cmd *c)
{
	struct keel_lock_result r = {0};
	struct lock *l = lock_get(sm, c->name, c->name_len);
	uint64_t token;
	if (holds(l, c->session, &token)) {
		r.status = KEEL_LOCK_ALREADY;
		r.token = token;
		return r;
	}
	if (waits(l, c->session)) {
		r.status = KEEL_LOCK_ALREADY;
		return r;
	}
	bool free_now = !l->wq_head && l->delay_until_ms <= sm->now_ms &&
			(!l->n_holders ||
			 (l->mode == KEEL_LOCK_SHARED && c->mode == KEEL_LOCK_SHARED));
	if (free_now) {
		r.token = GRANT_TOKEN(sm);
		add_holder(l, c->session, r.token, c->value, c->value_len, c->mode, c->lock_delay_ms);
		r.status = KEEL_LOCK_OK;
		return r;
	}
	if (!c->wait_ms) {
		r.status = KEEL_LOCK_BUSY;
		lock_maybe_free(sm, l);
		return r;
	}
	struct waiter *w = malloc(sizeof(*w) + c->value_len);
	if (!w)
		abort();
	*w = (struct waiter){.session = c->session, .seq = c->seq, .mode = c->mode,
			     .deadline_ms = sm->now_ms + c->wait_ms, .delay_ms = c->lock_delay_ms,
			     .value_len = c->value_len};
	if (c->value_len)
		memcpy(w->value, c->value, c->value_len);
	if (l->wq_tail)
		l->wq_tail->next = w;
	else
		l->wq_head = w;
	l->wq_tail = w;
	l->n_waiters++;
	r.status = KEEL_LOCK_WAITING;
	return r;
}

static struct keel_lock_result release(struct keel_lock_sm *sm, const struct keel_lock_cmd *c)
{
	struct keel_lock_result r = {.status = KEEL_LOCK_NOT_HOLDER, .token = c->token};
	struct lock *l = lock_find(sm, c->name, c->name_len);
	if (!l)
		return r;
	for (size_t i = 0; i < l->n_holders; i++) {
		if (l->holders[i].session == c->session && l->holders[i].token == c->token) {
			remove_holder(l, i);
			r.status = KEEL_LOCK_OK;
			emit(sm, KEEL_LOCK_EV_RELEASED, c->session, c->seq, l, c->token);
			pump(sm, l);
			lock_maybe_free(sm, l);
			return r;
		}
	}
	return r;
}

static struct keel_lock_result cancel(struct keel_lock_sm *sm, const struct keel_lock_cmd *c)
{
	struct keel_lock_result r = {.status = KEEL_LOCK_NOT_WAITING};
	struct lock *l = lock_find(sm, c->name, c->name_len);
	if (!l || !waits(l, c->session))
		return r;
	struct waiter **pp = &l->wq_head, *prev = NULL;
	while (*pp && (*pp)->session != c->session) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	struct waiter *w = *pp;
	*pp = w->next;
	if (l->wq_tail == w)
		l->wq_tail = prev;
	l->n_waiters--;
	free(w);
	/* a cancelled head may have blocked compatible waiters behind it */
	pump(sm, l);
	lock_maybe_free(sm, l);
	r.status = KEEL_LOCK_OK;
	return r;
}

/* ---- apply -------------------------------------------------------------- */

void keel_lock_sm_apply(struct keel_lock_sm *sm, uint64_t index, const void *data, size_t len,
			struct keel_lock_result *res)
{
	struct keel_lock_result r = {0};
	struct keel_lock_cmd c;
	sm->index = index;
	if (keel_lock_cmd_decode(data, len, &c) < 0) {
		keel_warn("lock: log index %llu does not hold a lock command (%zu bytes): skipped",
			  (unsigned long long)index, len);
		if (res)
			*res = r;
		return;
	}
	if (c.op == KEEL_LOCK_TICK) {
		tick(sm, &c);
	} else if (c.op == KEEL_LOCK_KEEPALIVE) {
		for (uint32_t i = 0; i < c.n_sessions; i++) {
			struct session *s = session_find(sm, keel_get_le64(c.sessions + 8 * i));
			if (s)
				s->deadline_ms = sm->now_ms + s->ttl_ms;
		}
	} else {
		struct session *s = session_find(sm, c.session);
		if (s && c.seq <= s->seq) {
			if (c.seq == s->seq) {
				r = s->res;
			} else {
				r = (struct keel_lock_result){.status = KEEL_LOCK_STALE_SEQ};
			}
			r.duplicate = true;
			if (res)
				*res = r;
			return;
		}
		if (!s && c.op != KEEL_LOCK_OPEN) {
			/* unknown or expired: never a grant, never a release */
			r.status = KEEL_LOCK_NO_SESSION;
			if (res)
				*res = r;
			return;
		}
		switch (c.op) {
		case KEEL_LOCK_OPEN:
			if (!s)
				s = session_add(sm, c.session);
			s->ttl_ms = c.ttl_ms;
			s->deadline_ms = sm->now_ms + c.ttl_ms;
			break;
		case KEEL_LOCK_CLOSE: {
			uint64_t id = c.session;
			end_sessions(sm, &id, 1, false);
			if (res)
				*res = r;
			return; /* no table entry to record the result in */
		}
		case KEEL_LOCK_ACQUIRE:
			r = acquire(sm, &c);
			break;
		case KEEL_LOCK_RELEASE:
			r = release(sm, &c);
			break;
		case KEEL_LOCK_CANCEL:
			r = cancel(sm, &c);
			break;
		}
		s = session_find(sm, c.session); /* the table may have grown */
		if (s) {
			s->seq = c.seq;
			s->res = r;
		}
	}
	if (res)
		*res = r;
}

int keel_lock_sm_result(const struct keel_lock_sm *sm, uint64_t session, uint64_t seq,
			struct keel_lock_result *res)
{
	const struct session *s = session_find(sm, session);
	if (!s || s->seq != seq)
		return KEEL_ENOTFOUND;
	*res = s->res;
	return 0;
}

/* ---- create / destroy / reads ------------------------------------------- */

int keel_lock_sm_create(struct keel_lock_sm **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static void free_locks(struct keel_lock_sm *sm)
{
	for (size_t i = 0; i < sm->bcap; i++) {
		for (struct lock *l = sm->buckets[i], *next; l; l = next) {
			next = l->hnext;
			for (size_t k = 0; k < l->n_holders; k++)
				free(l->holders[k].value);
			free(l->holders);
			while (l->wq_head) {
				struct waiter *w = l->wq_head;
				l->wq_head = w->next;
				free(w);
			}
			free(l);
		}
	}
	free(sm->buckets);
	sm->buckets = NULL;
	sm->bcap = sm->nlocks = 0;
}

void keel_lock_sm_destroy(struct keel_lock_sm *sm)
{
	if (!sm)
		return;
	free_locks(sm);
	free(sm->sessions);
	free(sm);
}

void keel_lock_sm_on_event(struct keel_lock_sm *sm, keel_lock_event_fn *fn, void *arg)
{
	sm->on_event = fn;
	sm->event_arg = arg;
}

uint64_t keel_lock_sm_now(const struct keel_lock_sm *sm) { return sm->now_ms; }
uint64_t keel_lock_sm_index(const struct keel_lock_sm *sm) { return sm->index; }
size_t keel_lock_sm_sessions(const struct keel_lock_sm *sm) { return sm->nsessions; }

int keel_lock_sm_session(const struct keel_lock_sm *sm, uint64_t session, uint64_t *deadline_ms,
			 uint32_t *ttl_ms)
{
	const struct session *s = session_find(sm, session);
	if (!s)
		return KEEL_ENOTFOUND;
	if (deadline_ms)
		*deadline_ms = s->deadline_ms;
	if (ttl_ms)
		*ttl_ms = s->ttl_ms;
	return 0;
}

int keel_lock_sm_inspect(const struct keel_lock_sm *sm, const void *name, size_t len,
			 struct keel_lock_info *info,
			 void (*holder)(void *arg, const struct keel_lock_holder *h),
			 void (*waiter)(void *arg, const struct keel_lock_waiter *w), void *arg)
{
	memset(info, 0, sizeof(*info));
	if (!len || len > KEEL_LOCK_MAX_NAME)
		return KEEL_ENOTFOUND;
	const struct lock *l = lock_find(sm, name, (uint32_t)len);
	if (!l)
		return KEEL_ENOTFOUND;
	info->mode = l->mode;
	info->n_holders = l->n_holders;
	info->n_waiters = l->n_waiters;
	info->delay_until_ms = l->delay_until_ms;
	for (size_t i = 0; holder && i < l->n_holders; i++) {
		struct keel_lock_holder h = {l->holders[i].session, l->holders[i].token,
					     l->holders[i].value, l->holders[i].value_len};
		holder(arg, &h);
	}
	for (const struct waiter *w = l->wq_head; waiter && w; w = w->next) {
		struct keel_lock_waiter x = {w->session, w->mode, w->deadline_ms};
		waiter(arg, &x);
	}
	return 0;
}

int keel_lock_fence_check(struct keel_lock_fence *f, uint64_t token)
{
	/* equal is fine: one holder writing twice, or shared holders
	 * granted together */
	if (token < f->highest)
		return KEEL_ESTALE;
	f->highest = token;
	return 0;
}

/* ---- snapshots -------------------------------------------------------------
 * "KEELLK01" u64 index u64 now u64 term
 * u64 nsessions  x (u64 id u32 ttl u64 deadline u64 seq u8 status u64 token)
 * u64 nlocks     x (u32 name_len name u64 delay_until u8 mode
 *                   u32 nholders x (u64 session u64 token u32 delay u32 vlen value)
 *                   u32 nwaiters x (u64 session u64 seq u8 mode u64 deadline
 *                                   u32 delay u32 vlen value))
 * u32 crc32c; sessions by id, locks by name. */

struct wbuf {
	uint8_t *p;
	size_t len, cap;
};

static void put(struct wbuf *w, const void *d, size_t n)
{
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 1024;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *p = realloc(w->p, cap);
		if (!p)
			abort();
		w->p = p;
		w->cap = cap;
	}
	if (n)
		memcpy(w->p + w->len, d, n);
	w->len += n;
}
static void p64(struct wbuf *w, uint64_t v) { uint8_t b[8]; keel_put_le64(b, v); put(w, b, 8); }
static void p32(struct wbuf *w, uint32_t v) { uint8_t b[4]; keel_put_le32(b, v); put(w, b, 4); }
static void p8(struct wbuf *w, uint8_t v) { put(w, &v, 1); }

int keel_lock_sm_snapshot(const struct keel_lock_sm *sm, void **data, size_t *len)
{
	struct wbuf w = {0};
	put(&w, SNAP_MAGIC, 8);
	p64(&w, sm->index);
	p64(&w, sm->now_ms);
	p64(&w, sm->term);
	uint64_t *ids = malloc((sm->nsessions ? sm->nsessions : 1) * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < sm->scap; i++)
		if (sm->sessions[i].id)
			ids[n++] = sm->sessions[i].id;
	qsort(ids, n, sizeof(*ids), cmp_u64);
	p64(&w, n);
	for (size_t i = 0; i < n; i++) {
		const struct session *s = session_find(sm, ids[i]);
		p64(&w, s->id);
		p32(&w, s->ttl_ms);
		p64(&w, s->deadline_ms);
		p64(&w, s->seq);
		p8(&w, s->res.status);
		p64(&w, s->res.token);
	}
	free(ids);
	size_t nl;
	struct lock **ls = locks_sorted(sm, &nl);
	p64(&w, nl);
	for (size_t k = 0; k < nl; k++) {
		const struct lock *l = ls[k];
		p32(&w, l->name_len);
		put(&w, l->name, l->name_len);
		p64(&w, l->delay_until_ms);
		p8(&w, l->mode);
		p32(&w, (uint32_t)l->n_holders);
		for (size_t i = 0; i < l->n_holders; i++) {
			p64(&w, l->holders[i].session);
			p64(&w, l->holders[i].token);
			p32(&w, l->holders[i].delay_ms);
			p32(&w, l->holders[i].value_len);
			put(&w, l->holders[i].value, l->holders[i].value_len);
		}
		p32(&w, (uint32_t)l->n_waiters);
		for (const struct waiter *x = l->wq_head; x; x = x->next) {
			p64(&w, x->session);
			p64(&w, x->seq);
			p8(&w, x->mode);
			p64(&w, x->deadline_ms);
			p32(&w, x->delay_ms);
			p32(&w, x->value_len);
			put(&w, x->value, x->value_len);
		}
	}
	free(ls);
	p32(&w, keel_crc32c(0, w.p, w.len));
	*data = w.p;
	*len = w.len;
	return 0;
}

struct rbuf {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};
static const uint8_t *take(struct rbuf *r, size_t n)
{
	if (r->bad || r->len - r->pos < n) {
		r->bad = true;
		return NULL;
	}
	r->pos += n;
	return r->p + r->pos - n;
}
static uint64_t g64(struct rbuf *r) { const uint8_t *p = take(r, 8); return p ? keel_get_le64(p) : 0; }
static uint32_t g32(struct rbuf *r) { const uint8_t *p = take(r, 4); return p ? keel_get_le32(p) : 0; }
static uint8_t g8(struct rbuf *r) { const uint8_t *p = take(r, 1); return p ? *p : 0; }

int keel_lock_sm_restore(struct keel_lock_sm *sm, uint64_t index, const void *data, size_t len)
{
	const uint8_t *b = data;
	if (len < 8 + 24 + 16 + 4 || memcmp(b, SNAP_MAGIC, 8) ||
	    keel_crc32c(0, b, len - 4) != keel_get_le32(b + len - 4))
		return KEEL_ECORRUPT;
	struct rbuf r = {.p = b, .len = len - 4, .pos = 8};
	struct keel_lock_sm *n;
	if (keel_lock_sm_create(&n) < 0)
		return -ENOMEM;
	g64(&r);
	n->now_ms = g64(&r);
	n->term = g64(&r);
	uint64_t ns = g64(&r), last = 0;
	for (uint64_t i = 0; i < ns && !r.bad; i++) {
		uint64_t id = g64(&r);
		uint32_t ttl = g32(&r);
		uint64_t dl = g64(&r), seq = g64(&r);
		uint8_t st = g8(&r);
		uint64_t tok = g64(&r);
		if (r.bad || !id || id <= last || ttl < KEEL_LOCK_MIN_TTL_MS ||
		    ttl > KEEL_LOCK_MAX_TTL_MS || st > KEEL_LOCK_STALE_SEQ) {
			r.bad = true;
			break;
		}
		last = id;
		struct session *s = session_add(n, id);
		*s = (struct session){.id = id, .ttl_ms = ttl, .deadline_ms = dl, .seq = seq,
				      .res = {.status = st, .token = tok}};
	}
	uint64_t nl = r.bad ? 0 : g64(&r);
	const uint8_t *lastname = NULL;
	uint32_t lastlen = 0;
	for (uint64_t k = 0; k < nl && !r.bad; k++) {
		uint32_t nlen = g32(&r);
		const uint8_t *name = nlen && nlen <= KEEL_LOCK_MAX_NAME ? take(&r, nlen) : NULL;
		if (!name || (lastname && name_cmp(lastname, lastlen, name, nlen) >= 0)) {
			r.bad = true;
			break;
		}
		lastname = name;
		lastlen = nlen;
		struct lock *l = lock_get(n, name, nlen);
		l->delay_until_ms = g64(&r);
		uint8_t mode = g8(&r);
		uint32_t nh = g32(&r);
		if (mode > KEEL_LOCK_SHARED || (!mode) != (!nh) || (mode == KEEL_LOCK_EXCLUSIVE && nh > 1)) {
			r.bad = true;
			break;
		}
		for (uint32_t i = 0; i < nh && !r.bad; i++) {
			uint64_t s = g64(&r), tok = g64(&r);
			uint32_t delay = g32(&r), vl = g32(&r);
			const uint8_t *v = vl <= KEEL_LOCK_MAX_VALUE ? take(&r, vl) : NULL;
			if (r.bad || (vl && !v) || vl > KEEL_LOCK_MAX_VALUE || !session_find(n, s)) {
				r.bad = true;
				break;
			}
			if (delay > KEEL_LOCK_MAX_TTL_MS) {
				r.bad = true;
				break;
			}
			add_holder(l, s, tok, v, vl, mode, delay);
		}
		uint32_t nw = g32(&r);
		for (uint32_t i = 0; i < nw && !r.bad; i++) {
			uint64_t s = g64(&r), seq = g64(&r);
			uint8_t m = g8(&r);
			uint64_t dl = g64(&r);
			uint32_t delay = g32(&r), vl = g32(&r);
			const uint8_t *v = vl <= KEEL_LOCK_MAX_VALUE ? take(&r, vl) : NULL;
			if (r.bad || (vl && !v) || vl > KEEL_LOCK_MAX_VALUE || !session_find(n, s) ||
			    (m != KEEL_LOCK_EXCLUSIVE && m != KEEL_LOCK_SHARED) ||
			    delay > KEEL_LOCK_MAX_TTL_MS) {
				r.bad = true;
				break;
			}
			struct waiter *w = malloc(sizeof(*w) + vl);
			if (!w)
				abort();
			*w = (struct waiter){.session = s, .seq = seq, .mode = m, .deadline_ms = dl,
					     .delay_ms = delay, .value_len = vl};
			if (vl)
				memcpy(w->value, v, vl);
			if (l->wq_tail)
				l->wq_tail->next = w;
			else
				l->wq_head = w;
			l->wq_tail = w;
			l->n_waiters++;
		}
	}
	if (r.bad || r.pos != r.len) {
		keel_lock_sm_destroy(n);
		return KEEL_ECORRUPT;
	}
	free_locks(sm);
	free(sm->sessions);
	sm->sessions = n->sessions;
	sm->nsessions = n->nsessions;
	sm->scap = n->scap;
	sm->buckets = n->buckets;
	sm->nlocks = n->nlocks;
	sm->bcap = n->bcap;
	sm->now_ms = n->now_ms;
	sm->term = n->term;
	sm->index = index;
	free(n);
	return 0;
}
