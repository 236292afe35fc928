/* One shard's endpoint (keel/node.h): the transport endpoint, the peer mesh
 * (one connection per peer shard; the higher id dials, redials with backoff,
 * a newer connection replaces an older one) and the dispatch of frames by
 * type and group to the handlers the layers registered. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keel/node.h"

#define REDIAL_BASE_MS 50
#define REDIAL_MAX_MS 1000
#define MAX_PEERS 64
#define LOG_BURST 5 /* lines per second per kind of bad input */

struct ep_peer {
	struct keel_endpoint *ep;
	uint32_t node;
	bool dial;                 /* our id is higher: we dial it */
	struct keel_conn *dialing; /* returned by connect, not yet up */
	struct keel_conn *conn;    /* the up connection, dialled or accepted */
	uint32_t attempt;
	bool down_logged;
	struct keel_timer redial;
};

struct ep_handler {
	uint16_t type;
	uint32_t group;
	keel_endpoint_recv_fn *fn;
	void *arg;
};

struct ep_listener {
	struct keel_endpoint_listener l;
	bool used;
};

struct keel_endpoint {
	struct keel_endpoint_config cfg;
	struct keel_transport *t;
	uint32_t self;
	struct keel_prng rng;
	struct ep_peer *peers[MAX_PEERS];
	uint32_t npeers;
	/* sorted by (type, group): binary search per frame */
	struct ep_handler *h;
	size_t nh, hcap;
	struct ep_listener *ls;
	size_t nls;
	bool closing;
	void *slots[KEEL_SLOT_COUNT];
	struct keel_endpoint_stats st;
	struct keel_log_limit lim_type, lim_group, lim_conn;
};

/* ---- peers -------------------------------------------------------------- */

static struct ep_peer *peer_find(struct keel_endpoint *ep, uint32_t node)
{
	for (uint32_t i = 0; i < ep->npeers; i++)
		if (ep->peers[i]->node == node)
			return ep->peers[i];
	return NULL;
}

static void on_redial(struct keel_timer *t);
static void notify_down(struct keel_endpoint *ep, uint32_t node, int reason);

static struct ep_peer *peer_add(struct keel_endpoint *ep, uint32_t node)
{
	if (ep->npeers == MAX_PEERS)
		return NULL;
	struct ep_peer *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->ep = ep;
	p->node = node;
	p->dial = ep->self > node;
	keel_timer_init(&p->redial, on_redial, p);
	ep->peers[ep->npeers++] = p;
	return p;
}

static void schedule_redial(struct ep_peer *p)
{
	struct keel_endpoint *ep = p->ep;
	if (ep->closing || !p->dial)
		return;
	uint32_t ms = keel_transport_backoff_ms(p->attempt, REDIAL_BASE_MS, REDIAL_MAX_MS,
						keel_prng_next(&ep->rng));
	if (p->attempt < 16)
		p->attempt++;
	keel_clock_arm(ep->cfg.clock, &p->redial, (uint64_t)ms * 1000000u);
}

static void dial(struct ep_peer *p)
{
	struct keel_endpoint *ep = p->ep;
	if (p->conn || p->dialing || ep->closing)
		return;
	ep->st.dials++;
	struct keel_conn *c;
	int rc = keel_transport_connect(ep->t, (struct keel_addr){p->node, ep->cfg.shard}, &c);
	if (rc < 0) {
		if (!p->down_logged) {
			p->down_logged = true;
			keel_warn("node: dialling node %u: %s (retrying with backoff)", p->node,
				  ep->t->errmsg);
		}
		schedule_redial(p);
		notify_down(ep, p->node, rc);
		return;
	}
	c->user = p;
	p->dialing = c;
}

static void on_redial(struct keel_timer *t)
{
	dial(t->arg);
}

static void notify_up(struct keel_endpoint *ep, uint32_t node)
{
	for (size_t i = 0; i < ep->nls && !ep->closing; i++)
		if (ep->ls[i].used && ep->ls[i].l.peer_up)
			ep->ls[i].l.peer_up(ep->ls[i].l.arg, ep, node);
}

static void notify_down(struct keel_endpoint *ep, uint32_t node, int reason)
{
	for (size_t i = 0; i < ep->nls && !ep->closing; i++)
		if (ep->ls[i].used && ep->ls[i].l.peer_down)
			ep->ls[i].l.peer_down(ep->ls[i].l.arg, ep, node, reason);
}

/* ---- transport callbacks ------------------------------------------------ */

static void t_up(struct keel_transport *t, struct keel_conn *c)
{
	struct keel_endpoint *ep = t->user;
	if (c->peer.shard != ep->cfg.shard) {
		/* The mesh pairs equal shards; a peer with another shard count
		 * (or a misrouted dial) cannot be served here. */
		keel_log_limited(&ep->lim_conn, LOG_BURST, KEEL_LOG_WARN,
				 "node: refusing node %u shard %u on shard %u (every node must run "
				 "the same number of shards)",
				 c->peer.node, c->peer.shard, ep->cfg.shard);
		struct ep_peer *d = c->user;
		c->user = NULL;
		keel_transport_close_conn(c);
		if (d && d->dialing == c) {
			d->dialing = NULL;
			schedule_redial(d);
		}
		return;
	}
	struct ep_peer *p = c->user ? c->user : peer_find(ep, c->peer.node);
	if (!p)
		p = peer_add(ep, c->peer.node);
	if (!p) {
		keel_log_limited(&ep->lim_conn, LOG_BURST, KEEL_LOG_WARN,
				 "node: refusing node %u: more than %d peers", c->peer.node, MAX_PEERS);
		keel_transport_close_conn(c);
		return;
	}
	if (p->dialing == c)
		p->dialing = NULL;
	if (p->conn && p->conn != c) {
		/* The peer restarted (or both ends dialled): the newest
		 * authenticated connection is the live one. */
		struct keel_conn *old = p->conn;
		p->conn = NULL;
		old->user = NULL;
		keel_transport_close_conn(old);
		ep->st.replaced++;
		notify_down(ep, p->node, KEEL_ECLOSED);
	}
	c->user = p;
	p->conn = c;
	p->attempt = 0;
	p->down_logged = false;
	ep->st.conns_up++;
	keel_info("node: connected to node %u (shard %u, %s)", p->node, ep->cfg.shard,
		  c->inbound ? "it dialled" : "we dialled");
	notify_up(ep, p->node);
}

static void t_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct keel_endpoint *ep = t->user;
	struct ep_peer *p = c->user;
	c->user = NULL;
	if (!p)
		return;
	if (p->dialing == c) {
		p->dialing = NULL;
		if (!p->down_logged) {
			p->down_logged = true;
			keel_warn("node: cannot reach node %u: %s%s", p->node,
				  reason ? keel_strerror(reason) : "closed",
				  reason == KEEL_EAUTH ? " (wrong cluster or secret?)" : "");
		}
		schedule_redial(p);
		/* A dial that never came up is news too: the listener learns why
		 * (refused, timed out, KEEL_EAUTH) and may give up. */
		notify_down(ep, p->node, reason ? reason : KEEL_ECLOSED);
		return;
	}
	if (p->conn != c)
		return;
	p->conn = NULL;
	ep->st.conns_down++;
	keel_info("node: lost node %u: %s", p->node, reason ? keel_strerror(reason) : "closed");
	notify_down(ep, p->node, reason);
	if (p->dial && !ep->closing) {
		p->attempt = 0;
		schedule_redial(p);
	}
}

static void t_writable(struct keel_transport *t, struct keel_conn *c)
{
	struct keel_endpoint *ep = t->user;
	struct ep_peer *p = c->user;
	if (!p || p->conn != c)
		return;
	for (size_t i = 0; i < ep->nls && !ep->closing; i++)
		if (ep->ls[i].used && ep->ls[i].l.writable)
			ep->ls[i].l.writable(ep->ls[i].l.arg, ep, p->node);
}

static const struct ep_handler *handler_find(const struct keel_endpoint *ep, uint16_t type,
					     uint32_t group)
{
	size_t lo = 0, hi = ep->nh;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct ep_handler *h = &ep->h[mid];
		if (h->type == type && h->group == group)
			return h;
		if (h->type < type || (h->type == type && h->group < group))
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

void keel_endpoint_dispatch(struct keel_endpoint *ep, struct keel_addr from, const struct keel_msg *m)
{
	if (ep->closing)
		return;
	const struct keel_msg_type_info *info = keel_msg_type_by_id(m->type);
	if (!info) {
		ep->st.unknown_type++;
		keel_log_limited(&ep->lim_type, LOG_BURST, KEEL_LOG_WARN,
				 "node: dropping a frame of unknown type 0x%04x from node %u",
				 m->type, from.node);
		return;
	}
	struct keel_node_msg nm = {.from = from, .type = m->type, .data = m->data,
				   .len = m->len};
	if (info->grouped) {
		if (m->len < KEEL_GROUP_ENVELOPE) {
			ep->st.malformed++;
			keel_log_limited(&ep->lim_type, LOG_BURST, KEEL_LOG_WARN,
					 "node: dropping a %s frame of %u bytes from node %u: shorter "
					 "than its group envelope",
					 info->name, m->len, from.node);
			return;
		}
		nm.group = keel_get_le32(m->data);
		nm.data = (const uint8_t *)m->data + KEEL_GROUP_ENVELOPE;
		nm.len = m->len - KEEL_GROUP_ENVELOPE;
	}
	const struct ep_handler *h = handler_find(ep, m->type, nm.group);
	if (!h) {
		if (info->grouped) {
			ep->st.unknown_group++;
			keel_log_limited(&ep->lim_group, LOG_BURST, KEEL_LOG_WARN,
					 "node: dropping a %s frame from node %u for group %u, which "
					 "shard %u does not host",
					 info->name, from.node, nm.group, ep->cfg.shard);
		} else {
			ep->st.unhandled++;
			keel_log_limited(&ep->lim_type, LOG_BURST, KEEL_LOG_WARN,
					 "node: dropping a %s frame from node %u: nothing on shard %u "
					 "handles it",
					 info->name, from.node, ep->cfg.shard);
		}
		return;
	}
	ep->st.received++;
	/* The handler may unregister itself: call through a copy. */
	keel_endpoint_recv_fn *fn = h->fn;
	void *arg = h->arg;
	fn(arg, ep, &nm);
}

static void t_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	keel_endpoint_dispatch(t->user, c->peer, m);
}

static const struct keel_transport_handlers ep_handlers = {
	.on_conn_up = t_up,
	.on_recv = t_recv,
	.on_conn_down = t_down,
	.on_writable = t_writable,
};

/* ---- open / close ------------------------------------------------------- */

int keel_endpoint_open(const struct keel_endpoint_config *cfg, struct keel_endpoint **out,
		       char *errmsg)
{
	*out = NULL;
	if (!cfg->node || !cfg->clock || !cfg->nshards || cfg->shard >= cfg->nshards)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "node: an endpoint needs a node config, a clock and a shard "
				       "below the shard count");
	struct keel_endpoint *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return keel_errmsg_set(errmsg, -ENOMEM, "node: out of memory");
	ep->cfg = *cfg;
	ep->self = cfg->node->node_id;
	uint64_t seed = cfg->seed ? cfg->seed : keel_clock_now(cfg->clock) ^ keel_now_ns();
	keel_prng_seed(&ep->rng, keel_mix64(seed ^ ((uint64_t)ep->self << 32 | cfg->shard)));
	struct keel_transport_config tc;
	keel_node_config_transport(cfg->node, cfg->shard, &tc);
	tc.shards = cfg->nshards;
	tc.handlers = &ep_handlers;
	tc.user = ep;
	tc.shard = cfg->shard_rt;
	tc.backend_arg = cfg->backend_arg;
	const char *backend = cfg->transport ? cfg->transport : cfg->node->transport;
	int rc = keel_transport_open(backend, &tc, &ep->t, errmsg);
	if (rc < 0) {
		free(ep);
		return rc;
	}
	rc = keel_transport_listen(ep->t);
	if (rc < 0) {
		/* The transport's message already ends with the reason. */
		keel_errmsg_set(errmsg, 0, "node: listen: %s", ep->t->errmsg);
		keel_transport_close(ep->t);
		free(ep);
		return rc;
	}
	for (size_t i = 0; i < cfg->node->npeers; i++) {
		uint32_t id = cfg->node->peers[i].node;
		if (id == ep->self || peer_find(ep, id))
			continue;
		if (!peer_add(ep, id)) {
			keel_endpoint_close(ep);
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "node: more than %d peers",
					       MAX_PEERS);
		}
	}
	for (uint32_t i = 0; i < ep->npeers; i++)
		if (ep->peers[i]->dial)
			dial(ep->peers[i]);
	*out = ep;
	return 0;
}

void keel_endpoint_close(struct keel_endpoint *ep)
{
	if (!ep)
		return;
	ep->closing = true;
	for (uint32_t i = 0; i < ep->npeers; i++)
		keel_clock_cancel(ep->cfg.clock, &ep->peers[i]->redial);
	/* No transport callback runs from here on. */
	keel_transport_close(ep->t);
	for (uint32_t i = 0; i < ep->npeers; i++)
		free(ep->peers[i]);
	free(ep->h);
	free(ep->ls);
	free(ep);
}

int keel_endpoint_poll(struct keel_endpoint *ep, int budget)
{
	if (ep->t->ops->caps & KEEL_TRANSPORT_REACTOR)
		return 0;
	return keel_transport_poll(ep->t, budget);
}

/* ---- accessors ---------------------------------------------------------- */

uint32_t keel_endpoint_node_id(const struct keel_endpoint *ep) { return ep->self; }
uint32_t keel_endpoint_shard(const struct keel_endpoint *ep) { return ep->cfg.shard; }
uint32_t keel_endpoint_nshards(const struct keel_endpoint *ep) { return ep->cfg.nshards; }
struct keel_clock *keel_endpoint_clock(struct keel_endpoint *ep) { return ep->cfg.clock; }
struct keel_shard *keel_endpoint_reactor(struct keel_endpoint *ep) { return ep->cfg.shard_rt; }

const struct keel_node_config *keel_endpoint_node_config(const struct keel_endpoint *ep)
{
	return ep->cfg.node;
}

uint32_t keel_endpoint_max_payload(const struct keel_endpoint *ep)
{
	uint32_t max = ep->t->max_frame;
	if (ep->t->ops->max_msg && ep->t->ops->max_msg < max)
		max = ep->t->ops->max_msg;
	return max - KEEL_GROUP_ENVELOPE;
}

bool keel_endpoint_peer_up(const struct keel_endpoint *ep, uint32_t node)
{
	for (uint32_t i = 0; i < ep->npeers; i++)
		if (ep->peers[i]->node == node)
			return ep->peers[i]->conn != NULL;
	return false;
}

void keel_endpoint_get_stats(const struct keel_endpoint *ep, struct keel_endpoint_stats *st)
{
	*st = ep->st;
}

/* ---- handlers and listeners --------------------------------------------- */

static int add_handler(struct keel_endpoint *ep, const char *type, bool grouped, uint32_t group,
		       keel_endpoint_recv_fn *fn, void *arg)
{
	int id = keel_msg_type_id(type);
	if (id < 0 || !fn)
		return KEEL_EBADINPUT;
	const struct keel_msg_type_info *info = keel_msg_type_by_id((uint16_t)id);
	if (info->grouped != grouped)
		return KEEL_EBADINPUT;
	struct ep_handler *h = (struct ep_handler *)handler_find(ep, (uint16_t)id, group);
	if (h) {
		h->fn = fn;
		h->arg = arg;
		return 0;
	}
	if (ep->nh == ep->hcap) {
		size_t cap = ep->hcap ? ep->hcap * 2 : 16;
		struct ep_handler *n = realloc(ep->h, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		ep->h = n;
		ep->hcap = cap;
	}
	size_t i = ep->nh;
	while (i > 0 && (ep->h[i - 1].type > id ||
			 (ep->h[i - 1].type == id && ep->h[i - 1].group > group))) {
		ep->h[i] = ep->h[i - 1];
		i--;
	}
	ep->h[i] = (struct ep_handler){(uint16_t)id, group, fn, arg};
	ep->nh++;
	return 0;
}

static void remove_handler(struct keel_endpoint *ep, const char *type, uint32_t group)
{
	int id = keel_msg_type_id(type);
	if (id < 0)
		return;
	const struct ep_handler *h = handler_find(ep, (uint16_t)id, group);
	if (!h)
		return;
	size_t i = (size_t)(h - ep->h);
	memmove(&ep->h[i], &ep->h[i + 1], (ep->nh - i - 1) * sizeof(*ep->h));
	ep->nh--;
}

int keel_endpoint_handle(struct keel_endpoint *ep, const char *type, keel_endpoint_recv_fn *fn,
			 void *arg)
{
	return add_handler(ep, type, false, 0, fn, arg);
}

void keel_endpoint_unhandle(struct keel_endpoint *ep, const char *type)
{
	remove_handler(ep, type, 0);
}

int keel_endpoint_join(struct keel_endpoint *ep, const char *type, uint32_t group,
		       keel_endpoint_recv_fn *fn, void *arg)
{
	return add_handler(ep, type, true, group, fn, arg);
}

void keel_endpoint_leave(struct keel_endpoint *ep, const char *type, uint32_t group)
{
	remove_handler(ep, type, group);
}

int keel_endpoint_listen(struct keel_endpoint *ep, const struct keel_endpoint_listener *l)
{
	for (size_t i = 0; i < ep->nls; i++) {
		if (!ep->ls[i].used) {
			ep->ls[i] = (struct ep_listener){*l, true};
			return (int)i;
		}
	}
	struct ep_listener *n = realloc(ep->ls, (ep->nls + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	ep->ls = n;
	ep->ls[ep->nls] = (struct ep_listener){*l, true};
	return (int)ep->nls++;
}

void keel_endpoint_unlisten(struct keel_endpoint *ep, int id)
{
	if (id >= 0 && (size_t)id < ep->nls)
		ep->ls[id].used = false;
}

/* ---- sending ------------------------------------------------------------ */

static int conn_for(struct keel_endpoint *ep, uint32_t node, uint16_t type, bool *grouped,
		    struct keel_conn **c)
{
	const struct keel_msg_type_info *info = keel_msg_type_by_id(type);
	if (!info || node == ep->self)
		return KEEL_EBADINPUT;
	*grouped = info->grouped;
	struct ep_peer *p = peer_find(ep, node);
	if (!p || !p->conn) {
		ep->st.unavailable++;
		return KEEL_EUNAVAIL;
	}
	*c = p->conn;
	return 0;
}

int keel_endpoint_send(struct keel_endpoint *ep, uint32_t node, uint16_t type, uint32_t group,
		       const void *data, size_t len)
{
	bool grouped;
	struct keel_conn *c;
	int rc = conn_for(ep, node, type, &grouped, &c);
	if (rc < 0)
		return rc;
	if (len > keel_endpoint_max_payload(ep))
		return KEEL_ETOOBIG;
	if (!grouped) {
		rc = keel_transport_send(c, type, data, (uint32_t)len);
	} else {
		struct keel_send_buf *b;
		rc = keel_transport_alloc(c, (uint32_t)len + KEEL_GROUP_ENVELOPE, &b);
		if (rc == 0) {
			keel_put_le32(b->data, group);
			if (len)
				memcpy((uint8_t *)b->data + KEEL_GROUP_ENVELOPE, data, len);
			b->len = (uint32_t)len + KEEL_GROUP_ENVELOPE;
			b->type = type;
			rc = keel_transport_send_buf(c, b);
		}
	}
	if (rc == KEEL_EFULL)
		ep->st.full++;
	else if (rc == 0)
		ep->st.sent++;
	return rc;
}

int keel_endpoint_alloc(struct keel_endpoint *ep, uint32_t node, uint16_t type, uint32_t group,
			uint32_t len, struct keel_endpoint_buf *b)
{
	bool grouped;
	struct keel_conn *c;
	int rc = conn_for(ep, node, type, &grouped, &c);
	if (rc < 0)
		return rc;
	if (len > keel_endpoint_max_payload(ep))
		return KEEL_ETOOBIG;
	uint32_t hdr = grouped ? KEEL_GROUP_ENVELOPE : 0;
	struct keel_send_buf *sb;
	rc = keel_transport_alloc(c, len + hdr, &sb);
	if (rc < 0) {
		if (rc == KEEL_EFULL)
			ep->st.full++;
		return rc;
	}
	if (grouped)
		keel_put_le32(sb->data, group);
	sb->type = type;
	*b = (struct keel_endpoint_buf){.data = (uint8_t *)sb->data + hdr, .cap = sb->cap - hdr,
					.sb = sb, .conn = c, .hdr = hdr};
	return 0;
}

int keel_endpoint_send_buf(struct keel_endpoint *ep, struct keel_endpoint_buf *b)
{
	b->sb->len = b->len + b->hdr;
	int rc = keel_transport_send_buf(b->conn, b->sb);
	b->sb = NULL;
	if (rc == 0)
		ep->st.sent++;
	return rc;
}

void keel_endpoint_discard(struct keel_endpoint *ep, struct keel_endpoint_buf *b)
{
	(void)ep;
	if (b->sb)
		keel_transport_discard(b->conn, b->sb);
	b->sb = NULL;
}

void *keel_endpoint_slot(const struct keel_endpoint *ep, enum keel_endpoint_slot slot)
{
	return (unsigned)slot < KEEL_SLOT_COUNT ? ep->slots[slot] : NULL;
}

void keel_endpoint_set_slot(struct keel_endpoint *ep, enum keel_endpoint_slot slot, void *v)
{
	if ((unsigned)slot < KEEL_SLOT_COUNT)
		ep->slots[slot] = v;
}
