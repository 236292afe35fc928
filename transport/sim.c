/*
 * transport/sim.c — the `sim` backend: an in-process network driven by a
 * seeded PRNG and a virtual clock (see transport/sim.h for the model).
 *
 * Layout: each endpoint has a min-heap of events ordered by (time, seq);
 * seq is a network-wide counter, so ties keep send order and the run is a
 * pure function of the seed and the calls made. Events refer to
 * connections by id, never by pointer: a connection closed or crashed
 * while an event for it is in flight simply makes the event a no-op (the
 * message is "lost"), with no dangling pointer to worry about.
 *
 * Send buffers are heap blocks handed out by alloc_send_buf; send() queues
 * that very block as the message (nothing is copied, as with the zero-copy
 * backends), and on_recv gets a view of it, freed after the handler.
 */
#include "transport/sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum ev_kind {
	EV_MSG = 1,
	EV_CONN_REQ,    /* at the listener: a dial arrives */
	EV_CONN_ACCEPT, /* at the dialler: the listener accepted */
	EV_CONN_FAIL,   /* at the dialler: refused or timed out */
	EV_CONN_DOWN,   /* at either end: the connection is gone */
};

struct sim_buf {
	struct keel_send_buf pub;
	uint64_t conn_id; /* the sending connection */
	uint32_t reserved;
	struct sim_buf *next; /* pending list while connecting */
	uint8_t data[];
};

struct sim_event {
	uint64_t at, seq;
	enum ev_kind kind;
	uint64_t conn_id;   /* the connection at this endpoint the event is for */
	uint64_t peer_conn; /* CONN_REQ: the dialler's; ACCEPT: the listener's */
	struct keel_addr from;
	int reason;
	struct sim_buf *buf; /* EV_MSG */
};

enum conn_state { C_CONNECTING, C_UP, C_CLOSING };

struct sim_conn {
	struct keel_conn pub; /* first */
	uint64_t id;
	uint64_t twin; /* the peer's connection id, 0 until up */
	enum conn_state state;
	uint64_t queued;       /* reserved bytes not yet out of the network */
	uint64_t last_deliver; /* FIFO: no message overtakes an earlier one */
	bool want_writable;
	struct sim_buf *pend_head, *pend_tail;
	struct sim_conn *next;
};

struct sim_ep {
	struct keel_transport pub; /* first */
	struct keel_sim_net *net;
	bool listening, dead;
	uint32_t sendq;
	uint64_t dial_timeout_ns; /* a dial not answered by then fails */
	struct sim_conn *conns;
	struct sim_event **heap;
	size_t nheap, capheap;
	struct sim_ep *next;
};

/* A delivered message remembered for replay (replay_ppm). */
struct sim_replay {
	struct keel_addr from, to;
	uint16_t type;
	uint32_t len;
	uint8_t *data;
};
#define SIM_REPLAY_RING 32

struct keel_sim_net {
	uint64_t rng[4];
	struct keel_sim_faults f;
	uint64_t now, seq, next_conn_id;
	uint64_t hash;
	bool blocked[KEEL_SIM_MAX_NODES][KEEL_SIM_MAX_NODES];
	bool down[KEEL_SIM_MAX_NODES];
	struct sim_ep *eps;
	struct keel_sim_stats st;
	FILE *trace;
	keel_sim_tap_fn *tap;
	void *tap_arg;
	struct sim_replay replay[SIM_REPLAY_RING];
	unsigned nreplay, replay_next;
};

/* ---- PRNG: xoshiro256**, seeded by splitmix64 */

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rnd(struct keel_sim_net *n)
{
	uint64_t *s = n->rng;
	uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

static bool chance(struct keel_sim_net *n, uint32_t ppm)
{
	return ppm && rnd(n) % 1000000 < ppm;
}

static uint64_t uniform(struct keel_sim_net *n, uint64_t lo, uint64_t hi)
{
	return hi <= lo ? lo : lo + rnd(n) % (hi - lo + 1);
}

static uint64_t draw_delay(struct keel_sim_net *n)
{
	if (chance(n, n->f.slow_ppm) && n->f.slow_max_ns > n->f.delay_max_ns)
		return uniform(n, n->f.delay_max_ns, n->f.slow_max_ns);
	return uniform(n, n->f.delay_min_ns, n->f.delay_max_ns);
}

static void mix(struct keel_sim_net *n, uint64_t v)
{
	uint64_t x = n->hash ^ v;
	n->hash = splitmix(&x);
}

/* Hash of a payload for the trace, 8 bytes a step (every delivery is
 * hashed, so this is on the simulator's hot path). */
static uint64_t fnv(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull ^ len;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, b + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	for (; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static void trace_event(struct keel_sim_net *n, const char *what, struct keel_addr from,
			struct keel_addr to, uint64_t extra)
{
	mix(n, fnv(what, strlen(what)));
	mix(n, n->now);
	mix(n, ((uint64_t)from.node << 32) | from.shard);
	mix(n, ((uint64_t)to.node << 32) | to.shard);
	mix(n, extra);
	if (n->trace)
		fprintf(n->trace, "t=%llu %s %u/%u->%u/%u %llx\n", (unsigned long long)n->now,
			what, from.node, from.shard, to.node, to.shard, (unsigned long long)extra);
}

/* ---- the network */

int keel_sim_net_create(uint64_t seed, const struct keel_sim_faults *faults,
			struct keel_sim_net **out)
{
	struct keel_sim_net *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		n->rng[i] = splitmix(&x);
	if (faults)
		n->f = *faults;
	n->next_conn_id = 1;
	n->hash = 0x6b65656c73696d00ull ^ seed;
	*out = n;
	return 0;
}

void keel_sim_net_destroy(struct keel_sim_net *n)
{
	if (!n)
		return;
	/* Endpoints must be closed by their owners first; if not, it is a
	 * bug in the caller, and leaking beats freeing under its feet. */
	for (unsigned i = 0; i < n->nreplay; i++)
		free(n->replay[i].data);
	free(n);
}

void keel_sim_net_set_faults(struct keel_sim_net *n, const struct keel_sim_faults *f)
{
	n->f = *f;
}

uint64_t keel_sim_net_now(const struct keel_sim_net *n)
{
	return n->now;
}

void keel_sim_net_advance_to(struct keel_sim_net *n, uint64_t t)
{
	if (t > n->now)
		n->now = t;
}

uint64_t keel_sim_net_next_event(const struct keel_sim_net *n)
{
	uint64_t best = UINT64_MAX;
	for (const struct sim_ep *e = n->eps; e; e = e->next) {
		if (e->dead)
			continue;
		if (e->nheap && e->heap[0]->at < best)
			best = e->heap[0]->at;
		for (const struct sim_conn *c = e->conns; c; c = c->next)
			if (c->want_writable && c->queued < e->sendq)
				return n->now;
	}
	return best;
}

static bool node_ok(uint32_t node)
{
	return node < KEEL_SIM_MAX_NODES;
}

void keel_sim_net_block(struct keel_sim_net *n, uint32_t from, uint32_t to, bool blocked)
{
	if (node_ok(from) && node_ok(to))
		n->blocked[from][to] = blocked;
}

void keel_sim_net_partition(struct keel_sim_net *n, uint32_t a, uint32_t b, bool blocked)
{
	keel_sim_net_block(n, a, b, blocked);
	keel_sim_net_block(n, b, a, blocked);
}

bool keel_sim_net_blocked(const struct keel_sim_net *n, uint32_t from, uint32_t to)
{
	return node_ok(from) && node_ok(to) && n->blocked[from][to];
}

void keel_sim_net_heal(struct keel_sim_net *n)
{
	memset(n->blocked, 0, sizeof(n->blocked));
}

bool keel_sim_net_is_up(const struct keel_sim_net *n, uint32_t node)
{
	return node_ok(node) && !n->down[node];
}

uint64_t keel_sim_net_trace_hash(const struct keel_sim_net *n)
{
	return n->hash;
}

void keel_sim_net_stats(const struct keel_sim_net *n, struct keel_sim_stats *st)
{
	*st = n->st;
}

void keel_sim_net_set_trace(struct keel_sim_net *n, FILE *f)
{
	n->trace = f;
}

void keel_sim_net_set_tap(struct keel_sim_net *n, keel_sim_tap_fn *fn, void *arg)
{
	n->tap = fn;
	n->tap_arg = arg;
}

/* ---- events */

static bool ev_less(const struct sim_event *a, const struct sim_event *b)
{
	return a->at != b->at ? a->at < b->at : a->seq < b->seq;
}

static void heap_push(struct sim_ep *e, struct sim_event *ev)
{
	if (e->nheap == e->capheap) {
		size_t nc = e->capheap ? e->capheap * 2 : 64;
		struct sim_event **h = realloc(e->heap, nc * sizeof(*h));
		if (!h)
			abort(); /* the simulator has no sensible way on */
		e->heap = h;
		e->capheap = nc;
	}
	size_t i = e->nheap++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!ev_less(ev, e->heap[p]))
			break;
		e->heap[i] = e->heap[p];
		i = p;
	}
	e->heap[i] = ev;
}

static struct sim_event *heap_pop(struct sim_ep *e)
{
	struct sim_event *top = e->heap[0], *last = e->heap[--e->nheap];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		const struct sim_event *cur = last;
		if (l < e->nheap && ev_less(e->heap[l], cur)) {
			m = l;
			cur = e->heap[l];
		}
		if (r < e->nheap && ev_less(e->heap[r], cur))
			m = r;
		if (m == i)
			break;
		e->heap[i] = e->heap[m];
		i = m;
	}
	if (e->nheap)
		e->heap[i] = last;
	return top;
}

static void schedule(struct sim_ep *e, struct sim_event ev)
{
	struct sim_event *p = malloc(sizeof(*p));
	if (!p)
		abort();
	*p = ev;
	p->seq = e->net->seq++;
	heap_push(e, p);
}

static struct sim_ep *find_ep(struct keel_sim_net *n, struct keel_addr a)
{
	for (struct sim_ep *e = n->eps; e; e = e->next)
		if (!e->dead && e->pub.self.node == a.node && e->pub.self.shard == a.shard)
			return e;
	return NULL;
}

static struct sim_conn *find_conn(struct sim_ep *e, uint64_t id)
{
	for (struct sim_conn *c = e->conns; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* The connection with this id anywhere (the sender of a message), or NULL. */
static struct sim_conn *find_conn_any(struct keel_sim_net *n, uint64_t id, struct sim_ep **ep)
{
	for (struct sim_ep *e = n->eps; e; e = e->next) {
		struct sim_conn *c = find_conn(e, id);
		if (c) {
			*ep = e;
			return c;
		}
	}
	return NULL;
}

static void release_bytes(struct keel_sim_net *n, uint64_t conn_id, uint32_t bytes)
{
	struct sim_ep *e;
	struct sim_conn *c = find_conn_any(n, conn_id, &e);
	if (c)
		c->queued -= bytes <= c->queued ? bytes : c->queued;
}

static void free_event(struct keel_sim_net *n, struct sim_event *ev)
{
	if (ev->buf) {
		release_bytes(n, ev->buf->conn_id, ev->buf->reserved);
		free(ev->buf);
	}
	free(ev);
}

static bool link_blocked(struct keel_sim_net *n, struct keel_addr a, struct keel_addr b)
{
	return keel_sim_net_blocked(n, a.node, b.node) || !keel_sim_net_is_up(n, a.node) ||
	       !keel_sim_net_is_up(n, b.node);
}

/* hold_ppm: a message that meets a partition stays in flight (a stalled
 * TCP connection) and is tried again this much later. */
static uint64_t hold_delay(struct keel_sim_net *n)
{
	return uniform(n, n->f.delay_max_ns, n->f.hold_max_ns);
}

/* Puts one message of an up connection into the network. */
static void transmit(struct sim_ep *src, struct sim_conn *c, struct sim_buf *b)
{
	struct keel_sim_net *n = src->net;
	struct sim_ep *dst = find_ep(n, c->pub.peer);
	n->st.sent++;
	if (n->tap)
		n->tap(n->tap_arg, src->pub.self, c->pub.peer, b->pub.type, b->data, b->pub.len);
	if (dst && n->f.hold_ppm && keel_sim_net_blocked(n, src->pub.self.node, c->pub.peer.node) &&
	    keel_sim_net_is_up(n, c->pub.peer.node) && chance(n, n->f.hold_ppm)) {
		n->st.held++;
		uint64_t at = n->now + hold_delay(n);
		trace_event(n, "hold", src->pub.self, c->pub.peer, at);
		schedule(dst, (struct sim_event){ .at = at, .kind = EV_MSG, .conn_id = c->twin,
						  .from = src->pub.self, .buf = b });
		return;
	}
	if (!dst || link_blocked(n, src->pub.self, c->pub.peer)) {
		n->st.partitioned += dst != NULL;
		n->st.dead += dst == NULL;
		trace_event(n, dst ? "lost-partition" : "lost-dead", src->pub.self, c->pub.peer,
			    b->pub.len);
		release_bytes(n, c->id, b->reserved);
		free(b);
		return;
	}
	if (chance(n, n->f.drop_ppm)) {
		n->st.dropped++;
		trace_event(n, "drop", src->pub.self, c->pub.peer, b->pub.len);
		release_bytes(n, c->id, b->reserved);
		free(b);
		return;
	}
	int copies = chance(n, n->f.dup_ppm) ? 2 : 1;
	for (int i = 0; i < copies; i++) {
		struct sim_buf *m = b;
		if (i == 1) {
			m = malloc(sizeof(*m) + b->pub.cap);
			if (!m)
				abort();
			memcpy(m, b, sizeof(*m) + b->pub.len);
			m->pub.data = m->data;
			m->reserved = 0; /* the original carries the reservation */
			n->st.duplicated++;
			trace_event(n, "dup", src->pub.self, c->pub.peer, b->pub.len);
		}
		uint64_t at = n->now + draw_delay(n);
		if (chance(n, n->f.reorder_ppm)) {
			n->st.reordered++;
			trace_event(n, "reorder", src->pub.self, c->pub.peer, at);
		} else {
			if (at < c->last_deliver)
				at = c->last_deliver;
			c->last_deliver = at;
		}
		schedule(dst, (struct sim_event){ .at = at, .kind = EV_MSG, .conn_id = c->twin,
						  .from = src->pub.self, .buf = m });
	}
}

/* ---- ops */

static int sim_open(const struct keel_transport_config *cfg, struct keel_transport **out,
		    char *errmsg)
{
	struct keel_sim_net *n = cfg->backend_arg;
	*out = NULL;
	if (!n)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "transport sim: backend_arg must be a struct keel_sim_net");
	if (!node_ok(cfg->self.node))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "transport sim: node %u >= %u",
				       cfg->self.node, KEEL_SIM_MAX_NODES);
	if (!keel_sim_net_is_up(n, cfg->self.node))
		return keel_errmsg_set(errmsg, KEEL_EUNAVAIL, "transport sim: node %u is crashed",
				       cfg->self.node);
	if (find_ep(n, cfg->self))
		return keel_errmsg_set(errmsg, -EADDRINUSE, "transport sim: %u/%u is open",
				       cfg->self.node, cfg->self.shard);
	struct sim_ep *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->pub.ops = &keel_transport_sim_ops;
	e->pub.handlers = cfg->handlers;
	e->pub.user = cfg->user;
	e->pub.self = cfg->self;
	e->pub.cluster_id = cfg->cluster_id;
	e->pub.max_frame = cfg->max_frame ? cfg->max_frame : KEEL_TRANSPORT_MAX_FRAME_DEFAULT;
	e->sendq = cfg->sendq_bytes ? cfg->sendq_bytes : KEEL_TRANSPORT_SENDQ_DEFAULT;
	e->dial_timeout_ns = (uint64_t)(cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 5000) *
			     1000000u;
	e->net = n;
	/* Append, so endpoints are visited in open order (determinism). */
	struct sim_ep **pp = &n->eps;
	while (*pp)
		pp = &(*pp)->next;
	*pp = e;
	*out = &e->pub;
	return 0;
}

static int sim_listen(struct keel_transport *t)
{
	((struct sim_ep *)t)->listening = true;
	return 0;
}

static struct sim_conn *new_conn(struct sim_ep *e, struct keel_addr peer, bool inbound)
{
	struct sim_conn *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->pub.t = &e->pub;
	c->pub.peer = peer;
	c->pub.inbound = inbound;
	c->id = e->net->next_conn_id++;
	struct sim_conn **pp = &e->conns;
	while (*pp)
		pp = &(*pp)->next;
	*pp = c;
	return c;
}

static int sim_connect(struct keel_transport *t, struct keel_addr peer, struct keel_conn **out)
{
	struct sim_ep *e = (struct sim_ep *)t;
	struct keel_sim_net *n = e->net;
	*out = NULL;
	if (e->dead)
		return KEEL_ECLOSED;
	struct sim_conn *c = new_conn(e, peer, false);
	c->state = C_CONNECTING;
	*out = &c->pub;
	uint64_t at = n->now + draw_delay(n);
	struct sim_ep *dst = find_ep(n, peer);
	if (!dst || link_blocked(n, t->self, peer)) {
		schedule(e, (struct sim_event){ .at = at + (dst ? draw_delay(n) : 0),
						.kind = EV_CONN_FAIL, .conn_id = c->id,
						.reason = dst ? -ETIMEDOUT : -ECONNREFUSED });
		return 0;
	}
	schedule(dst, (struct sim_event){ .at = at, .kind = EV_CONN_REQ, .peer_conn = c->id,
					  .from = t->self });
	/* As a handshake timeout would: a dial whose request or answer is
	 * lost (the listener crashed with it queued) fails in the end. */
	schedule(e, (struct sim_event){ .at = n->now + e->dial_timeout_ns, .kind = EV_CONN_FAIL,
					.conn_id = c->id, .reason = -ETIMEDOUT });
	return 0;
}

static int sim_alloc(struct keel_conn *kc, uint32_t len, struct keel_send_buf **out)
{
	struct sim_conn *c = (struct sim_conn *)kc;
	struct sim_ep *e = (struct sim_ep *)kc->t;
	*out = NULL;
	if (c->state == C_CLOSING || e->dead)
		return KEEL_ECLOSED;
	if (len > e->pub.max_frame)
		return KEEL_ETOOBIG;
	if (c->queued + len > e->sendq && c->queued > 0) {
		c->want_writable = true;
		return KEEL_EFULL;
	}
	struct sim_buf *b = malloc(sizeof(*b) + (len ? len : 1));
	if (!b)
		return -ENOMEM;
	memset(b, 0, sizeof(*b));
	b->pub.data = b->data;
	b->pub.cap = len;
	b->conn_id = c->id;
	b->reserved = len;
	c->queued += len;
	*out = &b->pub;
	return 0;
}

static void sim_discard(struct keel_conn *kc, struct keel_send_buf *kb)
{
	struct sim_conn *c = (struct sim_conn *)kc;
	struct sim_buf *b = (struct sim_buf *)kb;
	if (!b)
		return;
	c->queued -= b->reserved <= c->queued ? b->reserved : c->queued;
	free(b);
}

static int sim_send(struct keel_conn *kc, struct keel_send_buf *kb)
{
	struct sim_conn *c = (struct sim_conn *)kc;
	struct sim_ep *e = (struct sim_ep *)kc->t;
	struct sim_buf *b = (struct sim_buf *)kb;
	if (b->pub.len > b->pub.cap) {
		sim_discard(kc, kb);
		return KEEL_ETOOBIG;
	}
	if (c->state == C_CLOSING || e->dead) {
		sim_discard(kc, kb);
		return KEEL_ECLOSED;
	}
	if (c->state == C_CONNECTING) {
		b->next = NULL;
		if (c->pend_tail)
			c->pend_tail->next = b;
		else
			c->pend_head = b;
		c->pend_tail = b;
		return 0;
	}
	transmit(e, c, b);
	return 0;
}

static void free_conn(struct sim_ep *e, struct sim_conn *c)
{
	struct sim_conn **pp = &e->conns;
	while (*pp && *pp != c)
		pp = &(*pp)->next;
	if (*pp)
		*pp = c->next;
	for (struct sim_buf *b = c->pend_head, *nx; b; b = nx) {
		nx = b->next;
		free(b);
	}
	free(c);
}

/* Tells the twin, one delay later, that the connection is gone. */
static void notify_twin_down(struct sim_ep *e, struct sim_conn *c, int reason)
{
	if (!c->twin)
		return;
	struct sim_ep *dst = find_ep(e->net, c->pub.peer);
	if (dst)
		schedule(dst, (struct sim_event){ .at = e->net->now + draw_delay(e->net),
						  .kind = EV_CONN_DOWN, .conn_id = c->twin,
						  .reason = reason });
}

static void sim_close_conn(struct keel_conn *kc)
{
	struct sim_conn *c = (struct sim_conn *)kc;
	struct sim_ep *e = (struct sim_ep *)kc->t;
	if (c->state == C_CLOSING)
		return;
	c->state = C_CLOSING;
	notify_twin_down(e, c, -ECONNRESET);
	schedule(e, (struct sim_event){ .at = e->net->now, .kind = EV_CONN_DOWN, .conn_id = c->id,
					.reason = 0 });
}

static void conn_down(struct sim_ep *e, struct sim_conn *c, int reason)
{
	struct keel_sim_net *n = e->net;
	n->st.conns_down++;
	trace_event(n, "conn-down", e->pub.self, c->pub.peer, (uint64_t)(int64_t)reason);
	if (e->pub.handlers->on_conn_down)
		e->pub.handlers->on_conn_down(&e->pub, &c->pub, reason);
	free_conn(e, c);
}

/* replay_ppm: a copy of a delivered message is kept (a ring of the last
 * SIM_REPLAY_RING), to be delivered again on a later connection between the
 * same two endpoints: an old message that reaches a restarted process. */
static void remember(struct keel_sim_net *n, struct keel_addr from, struct keel_addr to,
		     const struct sim_buf *b)
{
	struct sim_replay *r = &n->replay[n->replay_next];
	n->replay_next = (n->replay_next + 1) % SIM_REPLAY_RING;
	if (n->nreplay < SIM_REPLAY_RING)
		n->nreplay++;
	free(r->data);
	r->data = malloc(b->pub.len ? b->pub.len : 1);
	if (!r->data)
		abort();
	memcpy(r->data, b->data, b->pub.len);
	r->len = b->pub.len;
	r->type = b->pub.type;
	r->from = from;
	r->to = to;
}

static bool same_addr(struct keel_addr a, struct keel_addr b)
{
	return a.node == b.node && a.shard == b.shard;
}

/* A connection from peer came up at e: some remembered messages of that
 * peer to e arrive on it, one delay or more later. */
static void replay_on(struct sim_ep *e, struct sim_conn *c)
{
	struct keel_sim_net *n = e->net;
	if (!n->f.replay_ppm)
		return;
	for (unsigned i = 0; i < n->nreplay; i++) {
		const struct sim_replay *r = &n->replay[i];
		if (!same_addr(r->from, c->pub.peer) || !same_addr(r->to, e->pub.self) ||
		    rnd(n) % 2)
			continue;
		struct sim_buf *m = malloc(sizeof(*m) + r->len);
		if (!m)
			abort();
		memset(m, 0, sizeof(*m));
		m->pub.data = m->data;
		m->pub.cap = r->len;
		m->pub.len = r->len;
		m->pub.type = r->type;
		memcpy(m->data, r->data, r->len);
		uint64_t at = n->now + draw_delay(n) + uniform(n, 0, n->f.hold_max_ns);
		n->st.replayed++;
		trace_event(n, "replay", r->from, r->to, at);
		schedule(e, (struct sim_event){ .at = at, .kind = EV_MSG, .conn_id = c->id,
						.from = r->from, .buf = m });
	}
}

int keel_sim_net_inject(struct keel_sim_net *n, struct keel_addr from, struct keel_addr to,
			uint16_t type, const void *data, size_t len, uint64_t delay_ns)
{
	struct sim_ep *e = find_ep(n, to);
	if (!e || len > UINT32_MAX)
		return KEEL_ENOTFOUND;
	struct sim_conn *c = e->conns;
	while (c && (c->state != C_UP || !same_addr(c->pub.peer, from)))
		c = c->next;
	if (!c)
		return KEEL_ENOTFOUND;
	struct sim_buf *m = malloc(sizeof(*m) + len);
	if (!m)
		return -ENOMEM;
	memset(m, 0, sizeof(*m));
	m->pub.data = m->data;
	m->pub.cap = m->pub.len = (uint32_t)len;
	m->pub.type = type;
	memcpy(m->data, data, len);
	n->st.replayed++;
	trace_event(n, "inject", from, to, n->now + delay_ns);
	schedule(e, (struct sim_event){ .at = n->now + delay_ns, .kind = EV_MSG, .conn_id = c->id,
					.from = from, .buf = m });
	return 0;
}

static void handle(struct sim_ep *e, struct sim_event *ev)
{
	struct keel_sim_net *n = e->net;
	const struct keel_transport_handlers *h = e->pub.handlers;
	switch (ev->kind) {
	case EV_MSG: {
		struct sim_conn *c = find_conn(e, ev->conn_id);
		if (!c || c->state != C_UP) {
			n->st.dead++;
			trace_event(n, "lost-closed", ev->from, e->pub.self, ev->buf->pub.len);
			break;
		}
		if (n->f.hold_ppm && keel_sim_net_blocked(n, ev->from.node, e->pub.self.node) &&
		    keel_sim_net_is_up(n, ev->from.node) && chance(n, n->f.hold_ppm)) {
			/* still cut off: the message waits in the network */
			n->st.held++;
			uint64_t at = n->now + hold_delay(n);
			trace_event(n, "hold", ev->from, e->pub.self, at);
			schedule(e, (struct sim_event){ .at = at, .kind = EV_MSG, .conn_id = ev->conn_id,
							.from = ev->from, .buf = ev->buf });
			ev->buf = NULL; /* the new event owns it */
			break;
		}
		if (link_blocked(n, ev->from, e->pub.self)) {
			n->st.partitioned++;
			trace_event(n, "lost-partition", ev->from, e->pub.self, ev->buf->pub.len);
			break;
		}
		struct keel_msg m = { .data = ev->buf->data, .len = ev->buf->pub.len,
				      .type = ev->buf->pub.type, .from = ev->from };
		n->st.delivered++;
		trace_event(n, "deliver", ev->from, e->pub.self,
			    fnv(m.data, m.len) ^ ((uint64_t)m.type << 48));
		if (chance(n, n->f.replay_ppm))
			remember(n, ev->from, e->pub.self, ev->buf);
		h->on_recv(&e->pub, &c->pub, &m);
		break;
	}
	case EV_CONN_REQ: {
		struct sim_ep *de = NULL;
		struct sim_conn *dc = find_conn_any(n, ev->peer_conn, &de);
		if (!dc || dc->state != C_CONNECTING)
			break; /* the dialler gave up or died meanwhile */
		if (!e->listening || link_blocked(n, ev->from, e->pub.self) ||
		    link_blocked(n, e->pub.self, ev->from)) {
			bool part = e->listening;
			schedule(de, (struct sim_event){
					     .at = n->now + draw_delay(n) * (part ? 2 : 1),
					     .kind = EV_CONN_FAIL, .conn_id = dc->id,
					     .reason = part ? -ETIMEDOUT : -ECONNREFUSED });
			break;
		}
		struct sim_conn *c = new_conn(e, ev->from, true);
		c->state = C_UP;
		c->twin = dc->id;
		n->st.conns_up++;
		trace_event(n, "accept", ev->from, e->pub.self, c->id);
		replay_on(e, c);
		schedule(de, (struct sim_event){ .at = n->now + draw_delay(n),
						 .kind = EV_CONN_ACCEPT, .conn_id = dc->id,
						 .peer_conn = c->id, .from = e->pub.self });
		if (h->on_conn_up)
			h->on_conn_up(&e->pub, &c->pub);
		break;
	}
	case EV_CONN_ACCEPT: {
		struct sim_conn *c = find_conn(e, ev->conn_id);
		if (!c || c->state != C_CONNECTING) {
			/* We closed it meanwhile: tear down the accepted end. */
			struct sim_ep *le = find_ep(n, ev->from);
			if (le)
				schedule(le, (struct sim_event){ .at = n->now + draw_delay(n),
								 .kind = EV_CONN_DOWN,
								 .conn_id = ev->peer_conn,
								 .reason = -ECONNRESET });
			break;
		}
		c->state = C_UP;
		c->twin = ev->peer_conn;
		n->st.conns_up++;
		trace_event(n, "conn-up", e->pub.self, c->pub.peer, c->id);
		replay_on(e, c);
		if (h->on_conn_up)
			h->on_conn_up(&e->pub, &c->pub);
		/* The handler may have closed it. */
		c = find_conn(e, ev->conn_id);
		while (c && c->state == C_UP && c->pend_head) {
			struct sim_buf *b = c->pend_head;
			c->pend_head = b->next;
			if (!c->pend_head)
				c->pend_tail = NULL;
			transmit(e, c, b);
		}
		break;
	}
	case EV_CONN_FAIL: {
		struct sim_conn *c = find_conn(e, ev->conn_id);
		if (c && c->state == C_CONNECTING)
			conn_down(e, c, ev->reason);
		break; /* up by now (a stale timeout), or closing: ignore */
	}
	case EV_CONN_DOWN: {
		struct sim_conn *c = find_conn(e, ev->conn_id);
		if (!c)
			break;
		if (ev->reason != 0 && c->state == C_CLOSING)
			break; /* our own close (reason 0) is already on its way */
		if (ev->kind == EV_CONN_DOWN && ev->reason == 0 && c->state != C_CLOSING)
			break;
		conn_down(e, c, ev->reason);
		break;
	}
	}
}

static int sim_poll(struct keel_transport *t, int budget)
{
	struct sim_ep *e = (struct sim_ep *)t;
	struct keel_sim_net *n = e->net;
	int done = 0;
	if (e->dead)
		return KEEL_ECLOSED;
	for (struct sim_conn *c = e->conns; c; c = c->next) {
		if (c->want_writable && c->queued < e->sendq) {
			c->want_writable = false;
			if (t->handlers->on_writable)
				t->handlers->on_writable(t, &c->pub);
			done++;
			break; /* the list may have changed; the rest next poll */
		}
	}
	while (done < budget && e->nheap && e->heap[0]->at <= n->now && !e->dead) {
		struct sim_event *ev = heap_pop(e);
		handle(e, ev);
		free_event(n, ev);
		done++;
	}
	return done;
}

/* Dials queued at e that e will never answer (it crashed or closed): the
 * diallers learn it one delay later, as from a reset. */
static void fail_queued_dials(struct sim_ep *e)
{
	struct keel_sim_net *n = e->net;
	for (size_t i = 0; i < e->nheap; i++) {
		const struct sim_event *ev = e->heap[i];
		if (ev->kind != EV_CONN_REQ)
			continue;
		struct sim_ep *de;
		struct sim_conn *dc = find_conn_any(n, ev->peer_conn, &de);
		if (dc && dc->state == C_CONNECTING && !de->dead)
			schedule(de, (struct sim_event){ .at = n->now + draw_delay(n),
							 .kind = EV_CONN_FAIL, .conn_id = dc->id,
							 .reason = -ECONNREFUSED });
	}
}

static void sim_close(struct keel_transport *t)
{
	struct sim_ep *e = (struct sim_ep *)t;
	struct keel_sim_net *n = e->net;
	/* Peers learn of it as of a crash, unless the node is crashed (then
	 * keel_sim_net_crash already told them). */
	if (!e->dead) {
		for (struct sim_conn *c = e->conns; c; c = c->next)
			if (c->state != C_CLOSING)
				notify_twin_down(e, c, -ECONNRESET);
		fail_queued_dials(e);
	}
	struct sim_ep **pp = &n->eps;
	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp)
		*pp = e->next;
	while (e->nheap)
		free_event(n, heap_pop(e));
	free(e->heap);
	while (e->conns)
		free_conn(e, e->conns);
	free(e);
}

void keel_sim_net_crash(struct keel_sim_net *n, uint32_t node)
{
	if (!node_ok(node) || n->down[node])
		return;
	trace_event(n, "crash", (struct keel_addr){ node, 0 }, (struct keel_addr){ node, 0 }, 0);
	for (struct sim_ep *e = n->eps; e; e = e->next) {
		if (e->pub.self.node != node || e->dead)
			continue;
		for (struct sim_conn *c = e->conns; c; c = c->next)
			notify_twin_down(e, c, -ECONNRESET);
		fail_queued_dials(e);
		e->dead = true;
	}
	n->down[node] = true;
}

void keel_sim_net_restart(struct keel_sim_net *n, uint32_t node)
{
	if (!node_ok(node) || !n->down[node])
		return;
	n->down[node] = false;
	trace_event(n, "restart", (struct keel_addr){ node, 0 }, (struct keel_addr){ node, 0 }, 0);
}

const struct keel_transport_ops keel_transport_sim_ops = {
	.name = "sim",
	.description = "in-process simulated network, deterministic from a seed (tests)",
	.caps = KEEL_TRANSPORT_SIMULATED | KEEL_TRANSPORT_ZERO_COPY_SEND |
		KEEL_TRANSPORT_ZERO_COPY_RECV | KEEL_TRANSPORT_BUSY_POLL,
	.max_msg = 0,
	.open = sim_open,
	.listen = sim_listen,
	.connect = sim_connect,
	.alloc_send_buf = sim_alloc,
	.send = sim_send,
	.discard_send_buf = sim_discard,
	.poll = sim_poll,
	.close_conn = sim_close_conn,
	.close = sim_close,
};
