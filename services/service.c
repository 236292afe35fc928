/* A shard's replicated services (keel/services.h): its groups' logs, each
 * with a state machine that holds the group's KV store and lock service,
 * the writes and reads of both, KV watches, and the lock service's clock
 * (ticks and batched keepalives proposed by the group's leader). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/node.h"
#include "keel/services.h"

#define SNAP_MAGIC "KEELSV01"

struct kv_watch {
	struct kv_watch *next;
	uint64_t id;
	uint64_t from_rev;
	bool prefix;
	keel_kv_event_fn *fn;
	void *arg;
	uint32_t key_len;
	uint8_t key[];
};

struct ka_waiter {
	struct ka_waiter *next;
	uint64_t session;
	keel_lock_done_fn *cb;
	void *arg;
};

struct sgroup {
	struct keel_services *s;
	uint32_t id;
	char dir[600];
	struct keel_kv *kv;
	struct keel_lock_sm *lock;
	struct keel_rlog *log;
	struct kv_watch *watches;
	/* the lock clock, while this node leads */
	bool leading;
	uint64_t term;
	uint64_t last_tick_ns;
	struct keel_timer tick;
	struct ka_waiter *ka_head, *ka_tail;
	size_t ka_n;
	/* The last KV command applied and its outcome: a proposal's callback
	 * runs right after its entry is applied, so it finds its own answer
	 * here, the duplicate flag included (the client table keeps the
	 * result, not whether this entry was a retry). */
	uint64_t kv_last_index;
	struct keel_kv_result kv_last;
};

struct keel_services {
	struct keel_services_config cfg;
	struct keel_clock *clock;
	struct sgroup *groups; /* this shard's, by group id */
	uint32_t ngroups;
	uint64_t next_watch;
	uint32_t tick_ms;
	void (*lock_listener)(void *arg, uint32_t group, const struct keel_lock_event *ev);
	void *lock_listener_arg;
};

uint32_t keel_service_group_of(const void *key, size_t len, uint32_t ngroups)
{
	const uint8_t *p = key;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return ngroups ? (uint32_t)(keel_mix64(h) % ngroups) : 0;
}

static struct sgroup *group_of(struct keel_services *s, uint32_t group)
{
	uint32_t lo = 0, hi = s->ngroups;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (s->groups[mid].id == group)
			return &s->groups[mid];
		if (s->groups[mid].id < group)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* ---- the composite state machine ---------------------------------------- */

static void on_kv_event(void *arg, const struct keel_kv_event *ev)
{
	struct sgroup *g = arg;
	for (struct kv_watch *w = g->watches, *next; w; w = next) {
		next = w->next;
		bool m = ev->rev >= w->from_rev &&
			 (w->prefix ? ev->key_len >= w->key_len &&
					      (!w->key_len || !memcmp(ev->key, w->key, w->key_len))
				    : ev->key_len == w->key_len && !memcmp(ev->key, w->key, w->key_len));
		if (m)
			w->fn(w->arg, ev);
	}
}

static void on_lock_event(void *arg, const struct keel_lock_event *ev)
{
	struct sgroup *g = arg;
	if (g->s->cfg.on_lock_event)
		g->s->cfg.on_lock_event(g->s->cfg.arg, g->id, ev);
	if (g->s->lock_listener)
		g->s->lock_listener(g->s->lock_listener_arg, g->id, ev);
}

static void sm_apply(void *arg, uint64_t index, const void *data, size_t len)
{
	struct sgroup *g = arg;
	const uint8_t *b = data;
	if (len && b[0] == KEEL_SERVICE_KV) {
		keel_kv_apply(g->kv, index, b + 1, len - 1, &g->kv_last);
		g->kv_last_index = index;
	} else if (len && b[0] == KEEL_SERVICE_LOCK)
		keel_lock_sm_apply(g->lock, index, b + 1, len - 1, NULL);
	else
		keel_warn("services: group %u: log index %llu has no service tag: skipped", g->id,
			  (unsigned long long)index);
}

/* A snapshot moved the store to new_rev without the changes in between:
 * a watch that wanted any of them would silently miss them, so it ends
 * with a `compacted` event (the client resumes on a replica with the
 * history). Watches waiting for later revisions go on. */
static void end_skipped_watches(struct sgroup *g, uint64_t new_rev)
{
	for (struct kv_watch **pp = &g->watches; *pp;) {
		struct kv_watch *w = *pp;
		if (w->from_rev > new_rev) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		struct keel_kv_event ev = {.rev = new_rev, .compacted = true};
		w->fn(w->arg, &ev);
		free(w);
	}
}

/* "KEELSV01" u64 kv_len kv u64 lock_len lock; each part has its own CRC. */
static int sm_snapshot(void *arg, void **data, size_t *len)
{
	struct sgroup *g = arg;
	void *a, *b;
	size_t al, bl;
	int rc = keel_kv_snapshot(g->kv, &a, &al);
	if (rc < 0)
		return rc;
	rc = keel_lock_sm_snapshot(g->lock, &b, &bl);
	if (rc < 0) {
		free(a);
		return rc;
	}
	uint8_t *out = malloc(8 + 16 + al + bl);
	if (!out) {
		free(a);
		free(b);
		return -ENOMEM;
	}
	memcpy(out, SNAP_MAGIC, 8);
	keel_put_le64(out + 8, al);
	memcpy(out + 16, a, al);
	keel_put_le64(out + 16 + al, bl);
	memcpy(out + 24 + al, b, bl);
	free(a);
	free(b);
	*data = out;
	*len = 24 + al + bl;
	return 0;
}

static int sm_restore(void *arg, uint64_t index, const void *data, size_t len)
{
	struct sgroup *g = arg;
	const uint8_t *b = data;
	g->kv_last_index = 0; /* what was applied before is replaced */
	if (len < 24 || memcmp(b, SNAP_MAGIC, 8))
		return KEEL_ECORRUPT;
	uint64_t al = keel_get_le64(b + 8);
	if (al > len - 24)
		return KEEL_ECORRUPT;
	uint64_t bl = keel_get_le64(b + 16 + al);
	if (bl != len - 24 - al)
		return KEEL_ECORRUPT;
	/* both or neither: restore into new objects, then swap */
	struct keel_kv *kv;
	struct keel_lock_sm *lk;
	if (keel_kv_create(&g->s->cfg.kv, &kv) < 0)
		return -ENOMEM;
	if (keel_lock_sm_create(&lk) < 0) {
		keel_kv_destroy(kv);
		return -ENOMEM;
	}
	int rc = keel_kv_restore(kv, index, b + 16, al);
	if (rc == 0)
		rc = keel_lock_sm_restore(lk, index, b + 24 + al, bl);
	if (rc < 0) {
		keel_kv_destroy(kv);
		keel_lock_sm_destroy(lk);
		return rc;
	}
	uint64_t old_rev = keel_kv_revision(g->kv), new_rev = keel_kv_revision(kv);
	keel_kv_destroy(g->kv);
	keel_lock_sm_destroy(g->lock);
	g->kv = kv;
	g->lock = lk;
	keel_kv_on_event(kv, on_kv_event, g);
	keel_lock_sm_on_event(lk, on_lock_event, g);
	if (new_rev > old_rev)
		end_skipped_watches(g, new_rev);
	return 0;
}

/* ---- proposals ---------------------------------------------------------- */

/* Proposes tag + payload (copied). */
static int propose_tagged(struct sgroup *g, uint8_t tag, const uint8_t *payload, size_t len,
			  keel_rlog_done_fn *cb, void *arg)
{
	uint8_t stackbuf[512];
	uint8_t *buf = len + 1 <= sizeof(stackbuf) ? stackbuf : malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	buf[0] = tag;
	memcpy(buf + 1, payload, len);
	int rc = keel_rlog_propose(g->log, buf, len + 1, cb, arg);
	if (buf != stackbuf)
		free(buf);
	return rc;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the lock clock ------------------------------------------------------ */

struct ka_batch {
	struct sgroup *g;
	struct ka_waiter *head;
};

static void ka_done(void *arg, int status, uint64_t index)
{
	struct ka_batch *b = arg;
	(void)index;
	while (b->head) {
		struct ka_waiter *w = b->head;
		b->head = w->next;
		/* the command renews the sessions it finds and skips the rest:
		 * say which, or a client that missed its EXPIRED event would
		 * think a renewal of nothing kept its locks */
		struct keel_lock_result r = {.status = KEEL_LOCK_OK};
		if (status == 0 && keel_lock_sm_session(b->g->lock, w->session, NULL, NULL) < 0)
			r.status = KEEL_LOCK_NO_SESSION;
		if (w->cb)
			w->cb(w->arg, status, status == 0 ? &r : NULL);
		free(w);
	}
	free(b);
}

static void tick_done(void *arg, int status, uint64_t index)
{
	(void)arg;
	(void)status;
	(void)index;
}

static void propose_keepalives(struct sgroup *g)
{
	while (g->ka_head) {
		/* one command per up to 4096 sessions */
		size_t n = 0;
		uint8_t ids[4096 * 8];
		struct ka_batch *b = malloc(sizeof(*b));
		if (!b)
			return;
		b->g = g;
		b->head = NULL;
		struct ka_waiter **tail = &b->head;
		while (g->ka_head && n < 4096) {
			struct ka_waiter *w = g->ka_head;
			g->ka_head = w->next;
			g->ka_n--;
			w->next = NULL;
			keel_put_le64(ids + 8 * n++, w->session);
			*tail = w;
			tail = &w->next;
		}
		if (!g->ka_head)
			g->ka_tail = NULL;
		struct keel_lock_cmd c = {.op = KEEL_LOCK_KEEPALIVE, .sessions = ids,
					  .n_sessions = (uint32_t)n};
		uint8_t buf[4096 * 8 + 128];
		int len = keel_lock_cmd_encode(&c, buf, sizeof(buf));
		int rc = len < 0 ? len : propose_tagged(g, KEEL_SERVICE_LOCK, buf, (size_t)len, ka_done, b);
		if (rc < 0)
			ka_done(b, rc, 0);
	}
}

/* Proposes a TICK bringing the lock clock up to now (when there is
 * anything to time, or force). */
static void propose_tick(struct sgroup *g, bool force)
{
	uint64_t now = keel_clock_now(g->s->clock);
	if (force || keel_lock_sm_sessions(g->lock) || g->ka_n) {
		struct keel_lock_cmd c = {.op = KEEL_LOCK_TICK, .elapsed_ms = (now - g->last_tick_ns) / 1000000,
					  .term = g->term};
		uint8_t buf[128];
		int len = keel_lock_cmd_encode(&c, buf, sizeof(buf));
		if (len > 0 &&
		    propose_tagged(g, KEEL_SERVICE_LOCK, buf, (size_t)len, tick_done, NULL) == 0)
			/* only time that went into a proposal counts: a lost
			 * tick makes the lock clock slower, never faster */
			g->last_tick_ns += c.elapsed_ms * 1000000;
	} else {
		g->last_tick_ns = now; /* nothing to time: idle time is nobody's */
	}
}

static void lock_tick(struct keel_timer *t)
{
	struct sgroup *g = t->arg;
	if (!g->leading)
		return;
	/* The TICK first, then the keepalives it batched: a renewal applies
	 * at the lock clock's present (this leader's now, after it received
	 * them), so each deadline is at least the client's send time + TTL.
	 * In the other order a renewal applied at the previous tick's time,
	 * up to a lock tick before it was sent, and a client whose margin
	 * was smaller than the lock tick (any TTL under 1 s with the default
	 * 100 ms tick) could still believe it held a lock the cluster had
	 * granted to another (found by lock-sim, seed 26). */
	propose_tick(g, false);
	propose_keepalives(g);
	keel_clock_arm(g->s->clock, &g->tick, (uint64_t)g->s->tick_ms * 1000000);
}

static void on_leader(void *arg, uint32_t leader, uint64_t epoch, bool self)
{
	struct sgroup *g = arg;
	g->term = epoch;
	if (self && !g->leading) {
		g->leading = true;
		g->last_tick_ns = keel_clock_now(g->s->clock);
		keel_clock_arm(g->s->clock, &g->tick, 0);
	} else if (!self && g->leading) {
		g->leading = false;
		keel_clock_cancel(g->s->clock, &g->tick);
		/* keepalives nobody will propose here: the client retries
		 * at the new leader */
		while (g->ka_head) {
			struct ka_waiter *w = g->ka_head;
			g->ka_head = w->next;
			if (w->cb)
				w->cb(w->arg, KEEL_ENOTLEADER, NULL);
			free(w);
		}
		g->ka_tail = NULL;
		g->ka_n = 0;
	}
	if (g->s->cfg.on_leader)
		g->s->cfg.on_leader(g->s->cfg.arg, g->id, leader, epoch, self);
}

static void on_error(void *arg, int code, const char *why)
{
	struct sgroup *g = arg;
	if (g->s->cfg.on_error)
		g->s->cfg.on_error(g->s->cfg.arg, g->id, code, why);
}

/* ---- start / stop -------------------------------------------------------- */

int keel_services_start(const struct keel_services_config *cfg, struct keel_services **out,
			char *errmsg)
{
	*out = NULL;
	if (!cfg->ep || !cfg->log || !cfg->groups)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "services: an endpoint, [log] and a group count are needed");
	struct keel_services *s = calloc(1, sizeof(*s));
	if (!s)
		return keel_errmsg_set(errmsg, -ENOMEM, "services: out of memory");
	s->cfg = *cfg;
	s->clock = keel_endpoint_clock(cfg->ep);
	s->tick_ms = cfg->lock_tick_ms ? cfg->lock_tick_ms : 100;
	uint32_t shard = keel_endpoint_shard(cfg->ep), nshards = keel_endpoint_nshards(cfg->ep);
	uint32_t mine = shard < cfg->groups ? (cfg->groups - shard + nshards - 1) / nshards : 0;
	s->groups = calloc(mine ? mine : 1, sizeof(*s->groups));
	if (!s->groups) {
		free(s);
		return keel_errmsg_set(errmsg, -ENOMEM, "services: out of memory");
	}
	int rc = 0;
	for (uint32_t gid = shard; gid < cfg->groups && rc == 0; gid += nshards) {
		struct sgroup *g = &s->groups[s->ngroups];
		g->s = s;
		g->id = gid;
		keel_timer_init(&g->tick, lock_tick, g);
		if (keel_kv_create(&cfg->kv, &g->kv) < 0 || keel_lock_sm_create(&g->lock) < 0) {
			keel_kv_destroy(g->kv);
			rc = keel_errmsg_set(errmsg, -ENOMEM, "services: out of memory");
			break;
		}
		s->ngroups++;
		keel_kv_on_event(g->kv, on_kv_event, g);
		keel_lock_sm_on_event(g->lock, on_lock_event, g);
		struct keel_rlog_config lc;
		keel_rlog_settings_config(cfg->log, gid, g->dir, sizeof(g->dir), &lc);
		lc.ep = cfg->ep;
		if (cfg->log_config)
			cfg->log_config(cfg->arg, gid, &lc);
		lc.sm = (struct keel_rlog_sm){.apply = sm_apply, .snapshot = sm_snapshot,
					      .restore = sm_restore, .on_leader = on_leader,
					      .on_error = on_error, .arg = g};
		char e2[KEEL_ERRMSG_LEN];
		rc = keel_rlog_open(&lc, &g->log, e2);
		if (rc < 0)
			keel_errmsg_set(errmsg, rc, "services: group %u: %s", gid, e2);
	}
	if (rc < 0) {
		keel_services_stop(s);
		return rc;
	}
	keel_endpoint_set_slot(cfg->ep, KEEL_SLOT_KV, s);
	*out = s;
	return 0;
}

void keel_services_stop(struct keel_services *s)
{
	if (!s)
		return;
	if (keel_endpoint_slot(s->cfg.ep, KEEL_SLOT_KV) == s)
		keel_endpoint_set_slot(s->cfg.ep, KEEL_SLOT_KV, NULL);
	for (uint32_t i = 0; i < s->ngroups; i++) {
		struct sgroup *g = &s->groups[i];
		keel_clock_cancel(s->clock, &g->tick);
		g->leading = false;
		keel_rlog_close(g->log); /* pending calls complete with KEEL_ESTOPPED */
		g->log = NULL;
		while (g->ka_head) {
			struct ka_waiter *w = g->ka_head;
			g->ka_head = w->next;
			if (w->cb)
				w->cb(w->arg, KEEL_ESTOPPED, NULL);
			free(w);
		}
		while (g->watches) {
			struct kv_watch *w = g->watches;
			g->watches = w->next;
			free(w);
		}
		keel_kv_destroy(g->kv);
		keel_lock_sm_destroy(g->lock);
	}
	free(s->groups);
	free(s);
}

struct keel_services *keel_services_of(struct keel_endpoint *ep)
{
	return keel_endpoint_slot(ep, KEEL_SLOT_KV);
}

struct keel_rlog *keel_services_log(struct keel_services *s, uint32_t group)
{
	struct sgroup *g = group_of(s, group);
	return g ? g->log : NULL;
}

uint32_t keel_services_groups(const struct keel_services *s)
{
	return s->cfg.groups;
}

/* ---- KV ------------------------------------------------------------------ */

struct kv_write {
	struct sgroup *g;
	uint64_t client, seq;
	keel_kv_write_fn *cb;
	void *arg;
};

static void kv_write_done(void *arg, int status, uint64_t index)
{
	struct kv_write *w = arg;
	struct keel_kv_result res = {0};
	if (status == 0 && index == w->g->kv_last_index) {
		res = w->g->kv_last;
	} else if (status == 0 && keel_kv_client_result(w->g->kv, w->client, w->seq, &res) < 0) {
		/* applied, but a later sequence of the same client was applied
		 * right after it: superseded before its answer was read */
		res.status = KEEL_KV_STALE_SEQ;
		res.rev = keel_kv_revision(w->g->kv);
	}
	w->cb(w->arg, status, status == 0 ? &res : NULL);
	free(w);
}

int keel_kv_write(struct keel_services *s, uint32_t group, const struct keel_kv_cmd *c,
		  keel_kv_write_fn *cb, void *arg)
{
	struct sgroup *g = group_of(s, group);
	if (!g)
		return KEEL_ENOTFOUND;
	if (!cb)
		return KEEL_EBADINPUT;
	struct keel_kv_cmd cmd = *c;
	cmd.time_ms = wall_ms();
	size_t n = keel_kv_cmd_size(&cmd);
	uint8_t *buf = malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	buf[0] = KEEL_SERVICE_KV;
	int rc = keel_kv_cmd_encode(&cmd, buf + 1, n);
	struct kv_write *w = rc < 0 ? NULL : malloc(sizeof(*w));
	if (rc >= 0 && !w)
		rc = -ENOMEM;
	if (rc >= 0) {
		*w = (struct kv_write){g, c->client, c->seq, cb, arg};
		rc = keel_rlog_propose(g->log, buf, n + 1, kv_write_done, w);
		if (rc < 0)
			free(w);
	}
	free(buf);
	return rc < 0 ? rc : 0;
}

struct kv_read {
	struct sgroup *g;
	keel_kv_read_fn *cb;
	void *arg;
};

static void kv_read_done(void *arg, int status, uint64_t index)
{
	struct kv_read *r = arg;
	(void)index;
	r->cb(r->arg, status, status == 0 ? r->g->kv : NULL);
	free(r);
}

int keel_kv_read(struct keel_services *s, uint32_t group, bool linearizable,
		 keel_kv_read_fn *cb, void *arg)
{
	struct sgroup *g = group_of(s, group);
	if (!g)
		return KEEL_ENOTFOUND;
	if (!linearizable) {
		cb(arg, 0, g->kv);
		return 0;
	}
	struct kv_read *r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct kv_read){g, cb, arg};
	int rc = keel_rlog_read_barrier(g->log, kv_read_done, r);
	if (rc < 0)
		free(r);
	return rc;
}

struct replay {
	struct kv_watch *w;
};

static int replay_one(void *arg, const struct keel_kv_event *ev)
{
	struct replay *r = arg;
	r->w->fn(r->w->arg, ev);
	return 0;
}

int keel_kv_watch(struct keel_services *s, uint32_t group, const void *key, size_t key_len,
		  bool prefix, uint64_t from_rev, keel_kv_event_fn *fn, void *arg, uint64_t *id)
{
	struct sgroup *g = group_of(s, group);
	if (!g)
		return KEEL_ENOTFOUND;
	if (!fn || key_len > KEEL_KV_MAX_KEY || (!prefix && !key_len))
		return KEEL_EBADINPUT;
	struct kv_watch *w = malloc(sizeof(*w) + key_len);
	if (!w)
		return -ENOMEM;
	*w = (struct kv_watch){.id = ++s->next_watch, .prefix = prefix, .fn = fn, .arg = arg,
			       .key_len = (uint32_t)key_len};
	if (key_len)
		memcpy(w->key, key, key_len);
	uint64_t now = keel_kv_revision(g->kv);
	if (from_rev && from_rev <= now) {
		/* the past from the history, then the future live: both on
		 * this thread, so nothing falls between them */
		struct replay r = {w};
		int rc = keel_kv_history(g->kv, from_rev, key, key_len, prefix, replay_one, &r);
		if (rc < 0) {
			free(w);
			return rc;
		}
		w->from_rev = now + 1;
	} else {
		w->from_rev = from_rev ? from_rev : now + 1;
	}
	w->next = g->watches;
	g->watches = w;
	*id = w->id;
	return 0;
}

void keel_kv_unwatch(struct keel_services *s, uint64_t id)
{
	for (uint32_t i = 0; i < s->ngroups; i++) {
		for (struct kv_watch **pp = &s->groups[i].watches; *pp; pp = &(*pp)->next) {
			if ((*pp)->id == id) {
				struct kv_watch *w = *pp;
				*pp = w->next;
				free(w);
				return;
			}
		}
	}
}

/* ---- locks --------------------------------------------------------------- */

struct lock_call {
	struct sgroup *g;
	uint64_t session, seq;
	keel_lock_done_fn *cb;
	void *arg;
};

static void lock_call_done(void *arg, int status, uint64_t index)
{
	struct lock_call *c = arg;
	(void)index;
	struct keel_lock_result res = {.status = KEEL_LOCK_NO_SESSION};
	if (status == 0 && keel_lock_sm_result(c->g->lock, c->session, c->seq, &res) < 0) {
		/* no entry: the session is gone (this command closed it, or
		 * it expired in the same batch) */
		res = (struct keel_lock_result){.status = KEEL_LOCK_NO_SESSION};
	}
	c->cb(c->arg, status, status == 0 ? &res : NULL);
	free(c);
}

int keel_lock_call(struct keel_services *s, uint32_t group, const struct keel_lock_cmd *c,
		   keel_lock_done_fn *cb, void *arg)
{
	struct sgroup *g = group_of(s, group);
	if (!g)
		return KEEL_ENOTFOUND;
	if (!cb || c->op == KEEL_LOCK_TICK || c->op == KEEL_LOCK_KEEPALIVE)
		return KEEL_EBADINPUT;
	size_t n = keel_lock_cmd_size(c);
	uint8_t *buf = malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	buf[0] = KEEL_SERVICE_LOCK;
	int rc = keel_lock_cmd_encode(c, buf + 1, n);
	struct lock_call *lc = rc < 0 ? NULL : malloc(sizeof(*lc));
	if (rc >= 0 && !lc)
		rc = -ENOMEM;
	if (rc >= 0) {
		*lc = (struct lock_call){g, c->session, c->seq, cb, arg};
		/* An OPEN starts a lease: a TICK just before it makes it apply
		 * at the lock clock's present, not up to a tick in the past
		 * (see lock_tick). */
		if (c->op == KEEL_LOCK_OPEN && g->leading)
			propose_tick(g, true);
		rc = keel_rlog_propose(g->log, buf, n + 1, lock_call_done, lc);
		if (rc < 0)
			free(lc);
	}
	free(buf);
	return rc < 0 ? rc : 0;
}

int keel_lock_keepalive(struct keel_services *s, uint32_t group, uint64_t session,
			keel_lock_done_fn *cb, void *arg)
{
	struct sgroup *g = group_of(s, group);
	if (!g)
		return KEEL_ENOTFOUND;
	if (!g->leading)
		return KEEL_ENOTLEADER;
	if (!session)
		return KEEL_EBADINPUT;
	struct ka_waiter *w = malloc(sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct ka_waiter){.session = session, .cb = cb, .arg = arg};
	if (g->ka_tail)
		g->ka_tail->next = w;
	else
		g->ka_head = w;
	g->ka_tail = w;
	g->ka_n++;
	return 0;
}

struct lock_read {
	struct sgroup *g;
	keel_lock_read_fn *cb;
	void *arg;
};

static void lock_read_done(void *arg, int status, uint64_t index)
{
	struct lock_read *r = arg;
	(void)index;
	r->cb(r->arg, status, status == 0 ? r->g->lock : NULL);
	free(r);
}

int keel_lock_read(struct keel_services *s, uint32_t group, bool linearizable,
		   keel_lock_read_fn *cb, void *arg)
{
	struct sgroup *g = group_of(s, group);
	if (!g)
		return KEEL_ENOTFOUND;
	if (!linearizable) {
		cb(arg, 0, g->lock);
		return 0;
	}
	struct lock_read *r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct lock_read){g, cb, arg};
	int rc = keel_rlog_read_barrier(g->log, lock_read_done, r);
	if (rc < 0)
		free(r);
	return rc;
}

void keel_services_lock_listener(struct keel_services *s,
				 void (*fn)(void *arg, uint32_t group, const struct keel_lock_event *ev),
				 void *arg)
{
	s->lock_listener = fn;
	s->lock_listener_arg = arg;
}
