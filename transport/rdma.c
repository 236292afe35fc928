/*
 * transport/rdma.c — the RDMA verbs backend: one reliable-connected queue
 * pair per (peer, shard), every verbs call through a function table
 * (transport/rdma_verbs.h: libibverbs in production, an in-process
 * emulation in tests; cfg->backend_arg picks it, NULL = libibverbs).
 *
 * ## Set-up: over the TCP backend's authenticated channel, not librdmacm
 *
 * Each endpoint opens a private TCP transport (transport/tcp.c, same
 * listen port, same peers) as its control channel. Its handshake already
 * proves the cluster secret (HMAC over fresh nonces) and names the peer's
 * (node, shard); only after that do the two sides exchange set-up records
 * (transport/rdma_wire.h): CONNECT (dialler: QPN, PSN, LID, GID, MTU, its
 * receive ring's address and rkey), ACCEPT (the listener's, its QP already
 * in RTS), READY (dialler in RTS). No rkey is ever shown to a peer that has
 * not proven the secret. librdmacm would give its own address resolution
 * and connection manager, but no authentication, a second listening port
 * per shard and its own event channel; the TCP channel is already there,
 * already tested against hostile peers, and its break is a second,
 * independent signal that the peer is gone. It stays open for the life of
 * the connection and carries nothing else.
 *
 * ## Data path: RDMA WRITE with immediate into the peer's ring
 *
 * Each connection registers, once, when it is created: a receive ring of
 * `slots` slots of `slot_size` bytes (remote write), a send pool of
 * sendq_bytes + max_frame (the buffer API hands out pieces of it, so the
 * HCA reads a message from where the caller wrote it: no copy), and one
 * 16-byte header per slot. A message of n bytes goes out as
 * ceil(n / (slot_size - 16)) chunks (at least one), each one RDMA WRITE
 * with immediate of two SGEs (header, payload piece) into the next remote
 * slot; the immediate is the slot's sequence number. The receiver's
 * completion (one pre-posted zero-length receive per chunk) names the slot;
 * it checks the header (untrusted: the peer wrote it), hands a single-slot
 * message to on_recv straight from the ring, and reassembles longer ones.
 * Credits (FaRM/eRPC style): the sender holds one per free remote slot;
 * the receiver returns consumed slots in batches of slots/4 as a
 * zero-length WRITE with immediate carrying KEEL_RDMA_IMM_CREDIT | count.
 * A slot is rewritten only after its credit came back, so it has been
 * consumed. Each connection has its own CQ, polled by the shard's reactor
 * (a poller: busy-poll while a connection exists).
 *
 * ## Errors
 *
 * A completion with an error status, an async QP-fatal or CQ event, a
 * device-fatal event (device removal), a malformed slot header or set-up
 * record, or the control channel breaking: the connection is reported
 * broken (on_conn_down with the reason; its queued and in-flight messages
 * are dropped, which is how they are failed to the sender: the API has no
 * per-message failure) and the layer above redials, as for TCP. After a
 * device removal the endpoint refuses new connections with -ENODEV.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"
#include "transport/rdma_verbs.h"
#include "transport/rdma_wire.h"

#define RDMA_SLOTS_DEFAULT 256
#define RDMA_SLOT_SIZE_DEFAULT 4096
#define SETUP_TYPE 0x5244 /* the only message type on the control channel */
#define WR_CHUNK 1
#define WR_LAST 2
#define WR_CREDIT 3
#define POOL_ALIGN 64

enum cstate {
	C_INIT,  /* QP in INIT; waiting for the control channel / the peer's record */
	C_UP_RX, /* listener: announced, receives; sends wait for READY */
	C_UP,
	C_DEAD,  /* reported broken; freed by the poller */
};

struct extent {
	size_t off, len;
	struct extent *next;
};

struct rbuf {
	struct keel_send_buf pub;
	size_t off, size;  /* piece of the pool */
	uint32_t sent;     /* payload bytes posted */
	struct rbuf *next;
};

struct rtrans;

struct rconn {
	struct keel_conn pub;
	struct rtrans *t;
	struct keel_conn *ctl; /* control connection, NULL once detached */
	enum cstate st;
	bool owed;             /* on_conn_down owed (dialled, or announced) */
	int reason;
	struct ibv_cq *cq;
	struct ibv_qp *qp;
	uint32_t psn;
	uint8_t *ring, *pool, *hdrs;
	struct ibv_mr *ring_mr, *pool_mr, *hdr_mr;
	size_t pool_size;
	struct extent *free_list;
	/* the peer's ring */
	uint64_t r_addr;
	uint32_t r_rkey, r_slots, r_slot_size;
	/* send side */
	uint32_t tx_seq, credits, sq_out, sq_max, rq_max;
	struct rbuf *pend_head, *pend_tail, *infl_head, *infl_tail;
	size_t queued;
	bool want_writable;
	/* receive side */
	uint32_t rx_seq, rx_unreturned;
	uint8_t *rx_buf;
	uint32_t rx_len, rx_total;
	uint16_t rx_type;
	bool rx_active;
	struct rconn *next;
};

struct rtrans {
	struct keel_transport pub;
	const struct keel_rdma_verbs *v;
	struct keel_transport *ctl;
	struct keel_transport_handlers ctl_h;
	struct keel_shard *shard;
	int poller_id;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	uint8_t port;
	int gid_index;      /* -1: InfiniBand LID routing, no GRH */
	union ibv_gid gid;
	uint16_t lid;
	uint8_t mtu;        /* enum ibv_mtu */
	uint32_t slots, slot_size, sendq;
	struct rconn *conns;
	bool dev_dead;
	struct keel_prng rnd;
	char dev[64];
};

static void fail(struct rconn *c, int reason, const char *fmt, ...) KEEL_PRINTF(3, 4);

/* ---- configuration ([rdma] section) */

static int cfg_u32(const struct keel_transport_config *cfg, const char *key, uint32_t lo,
		   uint32_t hi, uint32_t *out, char *em)
{
	const char *s = cfg->node ? keel_node_config_get(cfg->node, "rdma", key) : NULL;
	if (!s)
		return 0;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 0);
	if (errno || end == s || *end || v < lo || v > hi)
		return keel_errmsg_set(em, KEEL_ECONFIG,
				       "transport rdma: [rdma] %s = '%s': want an integer in %u..%u",
				       key, s, lo, hi);
	*out = (uint32_t)v;
	return 0;
}

static int parse_mtu(uint32_t bytes, uint8_t *code)
{
	static const uint32_t sizes[] = {256, 512, 1024, 2048, 4096};
	for (unsigned i = 0; i < 5; i++)
		if (sizes[i] == bytes) {
			*code = (uint8_t)(i + 1); /* IBV_MTU_256 == 1 ... */
			return 0;
		}
	return KEEL_ECONFIG;
}

/* Opens the device named in [rdma] device (default: the first one). */
static int open_device(struct rtrans *t, const struct keel_transport_config *cfg, char *em)
{
	const char *want = cfg->node ? keel_node_config_get(cfg->node, "rdma", "device") : NULL;
	int n = 0;
	struct ibv_device **list = t->v->get_device_list(&n);
	if (!list)
		return keel_errmsg_set(em, errno ? -errno : -ENODEV,
				       "transport rdma (%s verbs): ibv_get_device_list: %s", t->v->name,
				       strerror(errno ? errno : ENODEV));
	struct ibv_device *dev = NULL;
	char names[160] = "";
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		const char *name = t->v->get_device_name(list[i]);
		int w = snprintf(names + off, sizeof(names) - off, "%s%s", off ? ", " : "", name);
		if (w > 0 && (size_t)w < sizeof(names) - off)
			off += (size_t)w;
		if (!dev && (!want || !strcmp(want, name)))
			dev = list[i];
	}
	int rc = 0;
	if (n == 0)
		rc = keel_errmsg_set(em, -ENODEV,
				     "transport rdma (%s verbs): no RDMA device (ibv_get_device_list "
				     "found none; soft-RoCE: modprobe rdma_rxe && rdma link add rxe0 "
				     "type rxe netdev IFACE)", t->v->name);
	else if (!dev)
		rc = keel_errmsg_set(em, KEEL_ECONFIG,
				     "transport rdma: [rdma] device = '%s' not found (devices: %s)",
				     want, names);
	else {
		snprintf(t->dev, sizeof(t->dev), "%s", t->v->get_device_name(dev));
		t->ctx = t->v->open_device(dev);
		if (!t->ctx)
			rc = keel_errmsg_set(em, -(errno ? errno : ENODEV),
					     "transport rdma: open device %s: %s", t->dev,
					     strerror(errno ? errno : ENODEV));
	}
	t->v->free_device_list(list);
	return rc;
}

static int open_port(struct rtrans *t, const struct keel_transport_config *cfg, char *em)
{
	uint32_t port = 1, gid = 0, mtu = 0;
	int rc;
	if ((rc = cfg_u32(cfg, "port", 1, 255, &port, em)) ||
	    (rc = cfg_u32(cfg, "mtu", 256, 4096, &mtu, em)))
		return rc;
	const char *gs = cfg->node ? keel_node_config_get(cfg->node, "rdma", "gid_index") : NULL;
	if (gs && !strcmp(gs, "none"))
		t->gid_index = -1;
	else if ((rc = cfg_u32(cfg, "gid_index", 0, 255, &gid, em)))
		return keel_errmsg_set(em, KEEL_ECONFIG,
				       "transport rdma: [rdma] gid_index = '%s': want 0..255 or none "
				       "(InfiniBand LID routing)", gs);
	else
		t->gid_index = (int)gid;
	t->port = (uint8_t)port;
	struct ibv_port_attr pa;
	if ((rc = t->v->query_port(t->ctx, t->port, &pa)))
		return keel_errmsg_set(em, KEEL_ECONFIG, "transport rdma: %s has no port %u (%s)",
				       t->dev, port, strerror(rc));
	if (pa.state != IBV_PORT_ACTIVE)
		return keel_errmsg_set(em, -ENETDOWN, "transport rdma: %s port %u is not active",
				       t->dev, port);
	t->lid = pa.lid;
	if (pa.link_layer == IBV_LINK_LAYER_ETHERNET && t->gid_index < 0)
		return keel_errmsg_set(em, KEEL_ECONFIG,
				       "transport rdma: %s port %u is RoCE (Ethernet): it needs a "
				       "gid_index (see `show_gids`; RoCE v2 is usually 1 or 3)", t->dev, port);
	if (t->gid_index >= 0) {
		if (t->gid_index >= pa.gid_tbl_len ||
		    t->v->query_gid(t->ctx, t->port, t->gid_index, &t->gid))
			return keel_errmsg_set(em, KEEL_ECONFIG,
					       "transport rdma: %s port %u has no GID at index %d "
					       "(table of %d)", t->dev, port, t->gid_index, pa.gid_tbl_len);
	}
	t->mtu = (uint8_t)pa.active_mtu;
	if (mtu) {
		uint8_t code;
		if (parse_mtu(mtu, &code))
			return keel_errmsg_set(em, KEEL_ECONFIG,
					       "transport rdma: [rdma] mtu = %u: want 256, 512, 1024, "
					       "2048 or 4096", mtu);
		if (code > pa.max_mtu)
			return keel_errmsg_set(em, KEEL_ECONFIG,
					       "transport rdma: [rdma] mtu = %u above %s port %u's "
					       "maximum (%u)", mtu, t->dev, port, 128u << pa.max_mtu);
		t->mtu = code;
	}
	return 0;
}

/* ---- the send pool: first fit over extents sorted by offset */

static int pool_alloc(struct rconn *c, size_t len, size_t *off)
{
	len = (len + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN;
	if (!len)
		len = POOL_ALIGN;
	for (struct extent **p = &c->free_list; *p; p = &(*p)->next) {
		struct extent *e = *p;
		if (e->len < len)
			continue;
		*off = e->off;
		e->off += len;
		e->len -= len;
		if (!e->len) {
			*p = e->next;
			free(e);
		}
		return (int)0;
	}
	return KEEL_EFULL;
}

static size_t pool_round(size_t len)
{
	len = (len + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN;
	return len ? len : POOL_ALIGN;
}

static void pool_free(struct rconn *c, size_t off, size_t len)
{
	struct extent **p = &c->free_list;
	while (*p && (*p)->off < off)
		p = &(*p)->next;
	struct extent *next = *p;
	/* merge with the previous extent (the one whose next pointer p is) */
	struct extent *prev = NULL;
	for (struct extent *e = c->free_list; e && e != next; e = e->next)
		prev = e;
	if (prev && prev->off + prev->len == off) {
		prev->len += len;
		if (next && prev->off + prev->len == next->off) {
			prev->len += next->len;
			prev->next = next->next;
			free(next);
		}
		return;
	}
	if (next && off + len == next->off) {
		next->off = off;
		next->len += len;
		return;
	}
	struct extent *e = malloc(sizeof(*e));
	if (!e)
		return; /* the piece is lost to this connection's pool, not to memory safety */
	e->off = off;
	e->len = len;
	e->next = next;
	*p = e;
}

static void buf_release(struct rconn *c, struct rbuf *b)
{
	pool_free(c, b->off, b->size);
	c->queued -= b->size;
	free(b);
}

/* ---- verbs resources of a connection */

static void conn_free(struct rconn *c)
{
	const struct keel_rdma_verbs *v = c->t->v;
	/* QP first: after it is gone no peer write lands in the ring. */
	if (c->qp)
		v->destroy_qp(c->qp);
	if (c->cq)
		v->destroy_cq(c->cq);
	if (c->ring_mr)
		v->dereg_mr(c->ring_mr);
	if (c->pool_mr)
		v->dereg_mr(c->pool_mr);
	if (c->hdr_mr)
		v->dereg_mr(c->hdr_mr);
	free(c->ring);
	free(c->pool);
	free(c->hdrs);
	for (struct rbuf *b = c->pend_head, *n; b; b = n) {
		n = b->next;
		free(b);
	}
	for (struct rbuf *b = c->infl_head, *n; b; b = n) {
		n = b->next;
		free(b);
	}
	while (c->free_list) {
		struct extent *e = c->free_list;
		c->free_list = e->next;
		free(e);
	}
	free(c->rx_buf);
	free(c);
}

static int post_recvs(struct rconn *c, uint32_t n)
{
	/* Zero-length receives: WRITE with immediate places its data through
	 * the rkey; the receive only carries the completion. */
	for (uint32_t i = 0; i < n; i++) {
		struct ibv_recv_wr wr = {.wr_id = 0, .num_sge = 0}, *bad;
		int rc = c->t->v->post_recv(c->qp, &wr, &bad);
		if (rc)
			return -rc;
	}
	return 0;
}

static int conn_create(struct rtrans *t, struct keel_addr peer, bool inbound,
		       struct rconn **out)
{
	const struct keel_rdma_verbs *v = t->v;
	char *em = t->pub.errmsg;
	if (t->dev_dead)
		return keel_errmsg_set(em, -ENODEV, "transport rdma: device %s was removed", t->dev);
	struct rconn *c = calloc(1, sizeof(*c));
	if (!c)
		return keel_errmsg_set(em, -ENOMEM, "transport rdma: out of memory");
	c->pub.t = &t->pub;
	c->pub.peer = peer;
	c->pub.inbound = inbound;
	c->t = t;
	c->sq_max = t->slots + 16;
	c->rq_max = t->slots + 16;
	size_t ring_len = (size_t)t->slots * t->slot_size;
	c->pool_size = pool_round((size_t)t->sendq + t->pub.max_frame);
	c->ring = aligned_alloc(4096, (ring_len + 4095) / 4096 * 4096);
	c->pool = aligned_alloc(4096, (c->pool_size + 4095) / 4096 * 4096);
	c->hdrs = calloc(t->slots, KEEL_RDMA_SLOT_HDR);
	c->free_list = calloc(1, sizeof(*c->free_list));
	int rc;
	if (!c->ring || !c->pool || !c->hdrs || !c->free_list) {
		rc = keel_errmsg_set(em, -ENOMEM, "transport rdma: out of memory for a %zu-byte ring "
				     "and a %zu-byte send pool", ring_len, c->pool_size);
		goto err;
	}
	memset(c->ring, 0, ring_len);
	c->free_list->len = c->pool_size;
	c->ring_mr = v->reg_mr(t->pd, c->ring, ring_len,
			       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	c->pool_mr = c->ring_mr ? v->reg_mr(t->pd, c->pool, c->pool_size, IBV_ACCESS_LOCAL_WRITE) : NULL;
	c->hdr_mr = c->pool_mr ? v->reg_mr(t->pd, c->hdrs, (size_t)t->slots * KEEL_RDMA_SLOT_HDR,
					   IBV_ACCESS_LOCAL_WRITE) : NULL;
	if (!c->hdr_mr) {
		rc = keel_errmsg_set(em, -(errno ? errno : ENOMEM),
				     "transport rdma: ibv_reg_mr of %zu bytes on %s: %s (is `ulimit -l` "
				     "large enough? see docs/design/rdma.md)", ring_len + c->pool_size,
				     t->dev, strerror(errno ? errno : ENOMEM));
		goto err;
	}
	c->cq = v->create_cq(t->ctx, (int)(c->sq_max + c->rq_max));
	if (!c->cq) {
		rc = keel_errmsg_set(em, -(errno ? errno : ENOMEM), "transport rdma: ibv_create_cq: %s",
				     strerror(errno ? errno : ENOMEM));
		goto err;
	}
	struct ibv_qp_init_attr qa = {
		.qp_context = c, .send_cq = c->cq, .recv_cq = c->cq, .qp_type = IBV_QPT_RC,
		.cap = {.max_send_wr = c->sq_max, .max_recv_wr = c->rq_max, .max_send_sge = 2,
			.max_recv_sge = 1},
	};
	c->qp = v->create_qp(t->pd, &qa);
	if (!c->qp) {
		rc = keel_errmsg_set(em, -(errno ? errno : ENOMEM), "transport rdma: ibv_create_qp: %s",
				     strerror(errno ? errno : ENOMEM));
		goto err;
	}
	struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = t->port,
				.qp_access_flags = IBV_ACCESS_REMOTE_WRITE};
	if ((rc = v->modify_qp(c->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
					      IBV_QP_ACCESS_FLAGS))) {
		rc = keel_errmsg_set(em, -rc, "transport rdma: QP to INIT: %s", strerror(rc));
		goto err;
	}
	if ((rc = post_recvs(c, c->rq_max))) {
		keel_errmsg_set(em, rc, "transport rdma: ibv_post_recv: %s", strerror(-rc));
		goto err;
	}
	c->psn = (uint32_t)(keel_prng_next(&t->rnd) & 0xffffff);
	c->next = t->conns;
	t->conns = c;
	*out = c;
	return 0;
err:
	conn_free(c);
	return rc;
}

/* Moves c's QP to RTR then RTS towards the peer's record. */
static int conn_rts(struct rconn *c, const struct keel_rdma_setup *s)
{
	struct rtrans *t = c->t;
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_RTR,
		.path_mtu = s->mtu < t->mtu ? s->mtu : t->mtu,
		.dest_qp_num = s->qpn,
		.rq_psn = s->psn,
		.max_dest_rd_atomic = 1,
		.min_rnr_timer = 12,
		.ah_attr = {.dlid = s->lid, .port_num = t->port},
	};
	if (t->gid_index >= 0) {
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, s->gid, 16);
		a.ah_attr.grh.sgid_index = (uint8_t)t->gid_index;
		a.ah_attr.grh.hop_limit = 64; /* RoCE v2 may be routed */
	}
	int rc = t->v->modify_qp(c->qp, &a,
				 IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
					 IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
					 IBV_QP_MIN_RNR_TIMER);
	if (rc)
		return keel_errmsg_set(t->pub.errmsg, -rc, "QP to RTR: %s", strerror(rc));
	struct ibv_qp_attr b = {.qp_state = IBV_QPS_RTS, .timeout = 14, .retry_cnt = 7,
				.rnr_retry = 7, .sq_psn = c->psn, .max_rd_atomic = 1};
	rc = t->v->modify_qp(c->qp, &b,
			     IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
				     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
	if (rc)
		return keel_errmsg_set(t->pub.errmsg, -rc, "QP to RTS: %s", strerror(rc));
	c->r_addr = s->ring_addr;
	c->r_rkey = s->ring_rkey;
	c->r_slots = s->slots;
	c->r_slot_size = s->slot_size;
	c->credits = s->slots;
	return 0;
}

/* ---- failure: report once, free later (never inside a callback) */

static void fail(struct rconn *c, int reason, const char *fmt, ...)
{
	if (c->st == C_DEAD)
		return;
	char why[KEEL_ERRMSG_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (reason)
		keel_warn("transport rdma: connection to %u/%u broken: %s (%s)", c->pub.peer.node,
			  c->pub.peer.shard, why, keel_strerror(reason));
	c->st = C_DEAD;
	c->reason = reason;
	if (c->ctl) {
		c->ctl->user = NULL;
		keel_transport_close_conn(c->ctl);
		c->ctl = NULL;
	}
}

/* Frees dead connections, reporting each one owed. */
static int reap(struct rtrans *t)
{
	int n = 0;
	for (struct rconn **p = &t->conns; *p;) {
		struct rconn *c = *p;
		if (c->st != C_DEAD) {
			p = &c->next;
			continue;
		}
		*p = c->next;
		if (c->owed && t->pub.handlers->on_conn_down)
			t->pub.handlers->on_conn_down(&t->pub, &c->pub, c->reason);
		conn_free(c);
		n++;
		p = &t->conns; /* the handler may have added or failed others */
	}
	return n;
}

/* ---- send path */

static void flush(struct rconn *c)
{
	struct rtrans *t = c->t;
	uint32_t payload = c->r_slot_size - KEEL_RDMA_SLOT_HDR;
	while (c->st == C_UP && c->pend_head) {
		struct rbuf *b = c->pend_head;
		do {
			/* One send WR stays free for a credit return. */
			if (!c->credits || c->sq_out + 1 >= c->sq_max)
				return;
			uint32_t chunk = b->pub.len - b->sent;
			if (chunk > payload)
				chunk = payload;
			bool last = b->sent + chunk == b->pub.len;
			uint32_t slot = c->tx_seq % c->r_slots;
			struct keel_rdma_slot_hdr h = {
				.chunk_len = chunk, .total_len = b->pub.len, .type = b->pub.type,
				.flags = (uint16_t)((b->sent == 0 ? KEEL_RDMA_FIRST : 0) |
						    (last ? KEEL_RDMA_LAST : 0))};
			uint8_t *hp = c->hdrs + (size_t)(c->tx_seq % t->slots) * KEEL_RDMA_SLOT_HDR;
			keel_rdma_slot_hdr_encode(&h, hp);
			struct ibv_sge sge[2] = {
				{.addr = (uintptr_t)hp, .length = KEEL_RDMA_SLOT_HDR, .lkey = c->hdr_mr->lkey},
				{.addr = (uintptr_t)(c->pool + b->off + b->sent), .length = chunk,
				 .lkey = c->pool_mr->lkey},
			};
			struct ibv_send_wr wr = {
				.wr_id = last ? WR_LAST : WR_CHUNK, .sg_list = sge,
				.num_sge = chunk ? 2 : 1, .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
				.send_flags = IBV_SEND_SIGNALED,
				.imm_data = htonl(c->tx_seq & KEEL_RDMA_SEQ_MASK),
				.wr.rdma = {.remote_addr = c->r_addr + (uint64_t)slot * c->r_slot_size,
					    .rkey = c->r_rkey},
			}, *bad;
			int rc = t->v->post_send(c->qp, &wr, &bad);
			if (rc) {
				fail(c, -rc, "ibv_post_send: %s", strerror(rc));
				return;
			}
			c->tx_seq++;
			c->credits--;
			c->sq_out++;
			b->sent += chunk;
		} while (b->sent < b->pub.len);
		c->pend_head = b->next;
		if (!c->pend_head)
			c->pend_tail = NULL;
		b->next = NULL;
		if (c->infl_tail)
			c->infl_tail->next = b;
		else
			c->infl_head = b;
		c->infl_tail = b;
	}
}

static void return_credits(struct rconn *c)
{
	if (c->st == C_DEAD || c->st == C_INIT || !c->rx_unreturned || c->sq_out >= c->sq_max)
		return;
	struct ibv_send_wr wr = {
		.wr_id = WR_CREDIT, .num_sge = 0, .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(KEEL_RDMA_IMM_CREDIT | c->rx_unreturned),
		.wr.rdma = {.remote_addr = c->r_addr, .rkey = c->r_rkey},
	}, *bad;
	int rc = c->t->v->post_send(c->qp, &wr, &bad);
	if (rc) {
		fail(c, -rc, "ibv_post_send (credits): %s", strerror(rc));
		return;
	}
	c->sq_out++;
	c->rx_unreturned = 0;
}

/* ---- receive path */

static void deliver(struct rconn *c, const void *data, uint32_t len, uint16_t type)
{
	struct keel_msg m = {.data = data, .len = len, .type = type, .from = c->pub.peer};
	c->t->pub.handlers->on_recv(&c->t->pub, &c->pub, &m);
}

static void on_slot(struct rconn *c, uint32_t byte_len)
{
	struct rtrans *t = c->t;
	const uint8_t *s = c->ring + (size_t)(c->rx_seq % t->slots) * t->slot_size;
	struct keel_rdma_slot_hdr h;
	char em[KEEL_ERRMSG_LEN];
	if (keel_rdma_slot_hdr_decode(s, t->slot_size, t->pub.max_frame, &h, em)) {
		fail(c, KEEL_EPROTO, "%s", em);
		return;
	}
	if (byte_len != KEEL_RDMA_SLOT_HDR + h.chunk_len) {
		fail(c, KEEL_EPROTO, "slot of %u bytes written, header says %u", byte_len,
		     KEEL_RDMA_SLOT_HDR + h.chunk_len);
		return;
	}
	const uint8_t *p = s + KEEL_RDMA_SLOT_HDR;
	if (h.flags & KEEL_RDMA_FIRST) {
		if (c->rx_active) {
			fail(c, KEEL_EPROTO, "a new message inside a chunked one");
			return;
		}
		if (h.flags & KEEL_RDMA_LAST) {
			deliver(c, p, h.chunk_len, h.type); /* in place, from the ring */
			return;
		}
		c->rx_buf = malloc(h.total_len ? h.total_len : 1);
		if (!c->rx_buf) {
			fail(c, -ENOMEM, "reassembly of %u bytes", h.total_len);
			return;
		}
		c->rx_active = true;
		c->rx_total = h.total_len;
		c->rx_type = h.type;
		c->rx_len = 0;
	} else if (!c->rx_active || h.total_len != c->rx_total || h.type != c->rx_type) {
		fail(c, KEEL_EPROTO, "a continuation chunk without its message");
		return;
	}
	if (h.chunk_len > c->rx_total - c->rx_len) {
		fail(c, KEEL_EPROTO, "chunks beyond the message's %u bytes", c->rx_total);
		return;
	}
	memcpy(c->rx_buf + c->rx_len, p, h.chunk_len);
	c->rx_len += h.chunk_len;
	if (!(h.flags & KEEL_RDMA_LAST))
		return;
	if (c->rx_len != c->rx_total) {
		fail(c, KEEL_EPROTO, "message ended at %u of %u bytes", c->rx_len, c->rx_total);
		return;
	}
	uint8_t *buf = c->rx_buf;
	c->rx_buf = NULL;
	c->rx_active = false;
	deliver(c, buf, c->rx_total, c->rx_type);
	free(buf);
}

static void on_send_done(struct rconn *c, uint64_t wr_id)
{
	struct rtrans *t = c->t;
	if (c->sq_out)
		c->sq_out--;
	if (wr_id != WR_LAST || !c->infl_head)
		return;
	struct rbuf *b = c->infl_head;
	c->infl_head = b->next;
	if (!c->infl_head)
		c->infl_tail = NULL;
	buf_release(c, b);
	if (c->want_writable && c->queued <= t->sendq / 2) {
		c->want_writable = false;
		if (t->pub.handlers->on_writable)
			t->pub.handlers->on_writable(&t->pub, &c->pub);
	}
}

static void on_async(struct rtrans *t);

/* Polls c's CQ; returns completions handled. */
static int poll_conn(struct rconn *c)
{
	struct rtrans *t = c->t;
	struct ibv_wc wc[32];
	int n = t->v->poll_cq(c->cq, 32, wc);
	if (n < 0) {
		fail(c, -EIO, "ibv_poll_cq failed");
		return 0;
	}
	for (int i = 0; i < n && c->st != C_DEAD; i++) {
		if (wc[i].status != IBV_WC_SUCCESS) {
			/* A device removal flushes every QP: its async event,
			 * if pending, is the better reason. */
			on_async(t);
			fail(c, -EIO, "completion error: %s (vendor error %u)",
			     ibv_wc_status_str(wc[i].status), wc[i].vendor_err);
			break;
		}
		if (!(wc[i].opcode & IBV_WC_RECV)) {
			on_send_done(c, wc[i].wr_id);
			continue;
		}
		if (wc[i].opcode != IBV_WC_RECV_RDMA_WITH_IMM || !(wc[i].wc_flags & IBV_WC_WITH_IMM)) {
			fail(c, KEEL_EPROTO, "a receive completion that is not a write with immediate");
			break;
		}
		int rc = post_recvs(c, 1);
		if (rc) {
			fail(c, rc, "ibv_post_recv: %s", strerror(-rc));
			break;
		}
		uint32_t imm = ntohl(wc[i].imm_data);
		if (imm & KEEL_RDMA_IMM_CREDIT) {
			uint32_t k = imm & KEEL_RDMA_SEQ_MASK;
			if (!k || k > c->r_slots - c->credits) {
				fail(c, KEEL_EPROTO, "credit return of %u with %u slots outstanding", k,
				     c->r_slots - c->credits);
				break;
			}
			c->credits += k;
			continue;
		}
		if (imm != (c->rx_seq & KEEL_RDMA_SEQ_MASK)) {
			fail(c, KEEL_EPROTO, "slot %u written, %u expected", imm,
			     c->rx_seq & KEEL_RDMA_SEQ_MASK);
			break;
		}
		if (c->st == C_INIT) {
			fail(c, KEEL_EPROTO, "data before the set-up finished");
			break;
		}
		on_slot(c, wc[i].byte_len);
		c->rx_seq++;
		c->rx_unreturned++;
		if (c->rx_unreturned >= t->slots / 4)
			return_credits(c);
	}
	if (c->st != C_DEAD) {
		if (c->rx_unreturned >= t->slots / 4)
			return_credits(c);
		flush(c);
	}
	return n;
}

static void on_async(struct rtrans *t)
{
	struct ibv_async_event ev;
	int rc;
	while (!t->dev_dead && (rc = t->v->poll_async(t->ctx, &ev)) > 0) {
		switch (ev.event_type) {
		case IBV_EVENT_DEVICE_FATAL:
			keel_error("transport rdma: device %s removed or fatal: every connection breaks",
				   t->dev);
			t->dev_dead = true;
			for (struct rconn *c = t->conns; c; c = c->next)
				fail(c, -ENODEV, "device %s removed", t->dev);
			break;
		case IBV_EVENT_QP_FATAL:
		case IBV_EVENT_QP_REQ_ERR:
		case IBV_EVENT_QP_ACCESS_ERR:
			for (struct rconn *c = t->conns; c; c = c->next)
				if (c->qp == ev.element.qp)
					fail(c, -EIO, "QP %u in error: %s", c->qp->qp_num,
					     ibv_event_type_str(ev.event_type));
			break;
		case IBV_EVENT_CQ_ERR:
			for (struct rconn *c = t->conns; c; c = c->next)
				fail(c, -EIO, "CQ error");
			break;
		default:
			keel_info("transport rdma: %s: %s", t->dev, ibv_event_type_str(ev.event_type));
		}
	}
}

static int rdma_poll(struct keel_transport *pub, int budget)
{
	(void)budget;
	struct rtrans *t = (struct rtrans *)pub;
	int work = 0;
	on_async(t);
	for (struct rconn *c = t->conns; c; c = c->next)
		if (c->st == C_UP || c->st == C_UP_RX)
			work += poll_conn(c);
	work += reap(t);
	/* Busy-poll: completions arrive without a wake-up, so the reactor
	 * keeps calling while a connection exists. */
	return t->conns && !work ? 1 : work;
}

static int poller(void *arg)
{
	return rdma_poll(arg, 0);
}

/* ---- control channel (the private TCP transport) */

static int send_setup(struct rconn *c, uint16_t kind)
{
	struct rtrans *t = c->t;
	struct keel_rdma_setup s = {
		.kind = kind, .qpn = c->qp->qp_num, .psn = c->psn, .lid = t->lid, .mtu = t->mtu,
		.ring_addr = (uintptr_t)c->ring, .ring_rkey = c->ring_mr->rkey,
		.slots = t->slots, .slot_size = t->slot_size, .max_frame = t->pub.max_frame,
	};
	memcpy(s.gid, t->gid.raw, 16);
	uint8_t rec[KEEL_RDMA_SETUP_LEN];
	keel_rdma_setup_encode(&s, rec);
	return keel_transport_send(c->ctl, SETUP_TYPE, rec, sizeof(rec));
}

static void announce(struct rconn *c)
{
	c->owed = true;
	if (c->t->pub.handlers->on_conn_up)
		c->t->pub.handlers->on_conn_up(&c->t->pub, &c->pub);
}

static void ctl_up(struct keel_transport *ct, struct keel_conn *cc)
{
	struct rtrans *t = ct->user;
	if (!cc->inbound) {
		struct rconn *c = cc->user;
		if (!c)
			return;
		int rc = send_setup(c, KEEL_RDMA_CONNECT);
		if (rc)
			fail(c, rc, "sending CONNECT");
		return;
	}
	struct rconn *c;
	if (conn_create(t, cc->peer, true, &c)) {
		keel_warn("transport rdma: inbound %u/%u refused: %s", cc->peer.node, cc->peer.shard,
			  t->pub.errmsg);
		keel_transport_close_conn(cc);
		return;
	}
	c->ctl = cc;
	cc->user = c;
}

static void ctl_recv(struct keel_transport *ct, struct keel_conn *cc, const struct keel_msg *m)
{
	(void)ct;
	struct rconn *c = cc->user;
	if (!c || c->st == C_DEAD)
		return;
	struct keel_rdma_setup s;
	char em[KEEL_ERRMSG_LEN];
	if (m->type != SETUP_TYPE) {
		fail(c, KEEL_EPROTO, "control message of type %u", m->type);
		return;
	}
	if (keel_rdma_setup_decode(m->data, m->len, &s, em)) {
		fail(c, KEEL_EPROTO, "%s", em);
		return;
	}
	struct rtrans *t = c->t;
	bool in = c->pub.inbound;
	uint16_t want = c->st != C_INIT ? (in && c->st == C_UP_RX ? KEEL_RDMA_READY : 0)
					: (in ? KEEL_RDMA_CONNECT : KEEL_RDMA_ACCEPT);
	if (s.kind != want) {
		fail(c, KEEL_EPROTO, "set-up record kind %u out of turn", s.kind);
		return;
	}
	if (s.kind == KEEL_RDMA_READY) {
		c->st = C_UP;
		flush(c);
		return;
	}
	if (s.max_frame != t->pub.max_frame) {
		fail(c, KEEL_ECONFIG, "peer max_frame %u, ours %u: give every node the same max_frame",
		     s.max_frame, t->pub.max_frame);
		return;
	}
	if (s.slot_size < KEEL_RDMA_SLOT_HDR + 64) {
		fail(c, KEEL_EPROTO, "peer slot size %u", s.slot_size);
		return;
	}
	int rc = conn_rts(c, &s);
	if (rc) {
		fail(c, rc, "%s", t->pub.errmsg);
		return;
	}
	if (in) {
		if ((rc = send_setup(c, KEEL_RDMA_ACCEPT))) {
			fail(c, rc, "sending ACCEPT");
			return;
		}
		c->st = C_UP_RX; /* it may write to us now; we wait for READY */
		announce(c);
		return;
	}
	uint8_t rec[KEEL_RDMA_SETUP_LEN];
	keel_rdma_setup_encode(&(struct keel_rdma_setup){.kind = KEEL_RDMA_READY}, rec);
	if ((rc = keel_transport_send(c->ctl, SETUP_TYPE, rec, sizeof(rec)))) {
		fail(c, rc, "sending READY");
		return;
	}
	c->st = C_UP;
	announce(c);
	if (c->st == C_UP)
		flush(c);
}

static void ctl_down(struct keel_transport *ct, struct keel_conn *cc, int reason)
{
	(void)ct;
	struct rconn *c = cc->user;
	if (!c)
		return;
	c->ctl = NULL;
	/* The peer usually closes the channel because its QP failed; ours
	 * then has an event pending too, and that is the better reason. */
	on_async(c->t);
	fail(c, reason ? reason : -ECONNRESET, "control connection closed");
}

/* ---- ops */

static void rdma_close(struct keel_transport *pub);

static int rdma_open(const struct keel_transport_config *cfg, struct keel_transport **out,
		     char *errmsg)
{
	struct rtrans *t = calloc(1, sizeof(*t));
	if (!t)
		return keel_errmsg_set(errmsg, -ENOMEM, "transport rdma: out of memory");
	extern const struct keel_transport_ops keel_transport_rdma_ops;
	t->pub.ops = &keel_transport_rdma_ops;
	t->pub.handlers = cfg->handlers;
	t->pub.user = cfg->user;
	t->pub.self = cfg->self;
	t->pub.cluster_id = cfg->cluster_id;
	t->pub.max_frame = cfg->max_frame ? cfg->max_frame : KEEL_TRANSPORT_MAX_FRAME_DEFAULT;
	t->v = cfg->backend_arg ? cfg->backend_arg : &keel_rdma_verbs_ibv;
	t->poller_id = -1;
	t->sendq = cfg->sendq_bytes ? cfg->sendq_bytes : KEEL_TRANSPORT_SENDQ_DEFAULT;
	t->slots = RDMA_SLOTS_DEFAULT;
	t->slot_size = RDMA_SLOT_SIZE_DEFAULT;
	keel_prng_seed(&t->rnd, keel_now_ns() ^ ((uint64_t)cfg->self.node << 32) ^ cfg->self.shard);
	char *em = errmsg;
	int rc;
	if ((rc = cfg_u32(cfg, "slots", KEEL_RDMA_SLOTS_MIN, KEEL_RDMA_SLOTS_MAX, &t->slots, em)) ||
	    (rc = cfg_u32(cfg, "slot_size", 128, KEEL_RDMA_SLOT_SIZE_MAX, &t->slot_size, em)))
		goto err;
	if ((t->slots & (t->slots - 1)) || t->slot_size % 64) {
		rc = keel_errmsg_set(em, KEEL_ECONFIG,
				     "transport rdma: [rdma] slots (%u) must be a power of two and "
				     "slot_size (%u) a multiple of 64", t->slots, t->slot_size);
		goto err;
	}
	if ((rc = open_device(t, cfg, em)) || (rc = open_port(t, cfg, em)))
		goto err;
	t->pd = t->v->alloc_pd(t->ctx);
	if (!t->pd) {
		rc = keel_errmsg_set(em, -(errno ? errno : ENOMEM), "transport rdma: ibv_alloc_pd on %s",
				     t->dev);
		goto err;
	}
	struct keel_transport_config cc = *cfg;
	t->ctl_h = (struct keel_transport_handlers){.on_conn_up = ctl_up, .on_recv = ctl_recv,
						    .on_conn_down = ctl_down};
	cc.handlers = &t->ctl_h;
	cc.user = t;
	cc.max_frame = 4096;
	cc.sendq_bytes = 0;
	cc.backend_arg = NULL;
	if ((rc = keel_transport_open("tcp", &cc, &t->ctl, em))) {
		char inner[KEEL_ERRMSG_LEN];
		snprintf(inner, sizeof(inner), "%s", em ? em : "");
		rc = keel_errmsg_set(em, rc, "transport rdma: control channel: %s", inner);
		goto err;
	}
	if (cfg->shard) {
		t->shard = cfg->shard;
		t->poller_id = keel_shard_add_poller(cfg->shard, poller, &t->pub);
		if (t->poller_id < 0) {
			rc = keel_errmsg_set(em, t->poller_id, "transport rdma: add poller");
			goto err;
		}
	}
	keel_info("transport rdma: shard %u on %s port %u (%s verbs), %u slots of %u bytes",
		  cfg->self.shard, t->dev, t->port, t->v->name, t->slots, t->slot_size);
	*out = &t->pub;
	return 0;
err:
	rdma_close(&t->pub);
	return rc;
}

static int rdma_listen(struct keel_transport *pub)
{
	struct rtrans *t = (struct rtrans *)pub;
	int rc = keel_transport_listen(t->ctl);
	if (rc)
		keel_errmsg_set(pub->errmsg, rc, "transport rdma: %s", t->ctl->errmsg);
	return rc;
}

static int rdma_connect(struct keel_transport *pub, struct keel_addr peer, struct keel_conn **out)
{
	struct rtrans *t = (struct rtrans *)pub;
	struct rconn *c;
	*out = NULL;
	int rc = conn_create(t, peer, false, &c);
	if (rc)
		return rc;
	if ((rc = keel_transport_connect(t->ctl, peer, &c->ctl))) {
		keel_errmsg_set(pub->errmsg, rc, "transport rdma: %s", t->ctl->errmsg);
		c->ctl = NULL;
		t->conns = c->next;
		conn_free(c);
		return rc;
	}
	c->ctl->user = c;
	c->owed = true;
	*out = &c->pub;
	return 0;
}

static int rdma_alloc(struct keel_conn *pc, uint32_t len, struct keel_send_buf **out)
{
	struct rconn *c = (struct rconn *)pc;
	struct rtrans *t = c->t;
	if (c->st == C_DEAD)
		return KEEL_ECLOSED;
	if (len > t->pub.max_frame)
		return KEEL_ETOOBIG;
	size_t size = pool_round(len);
	size_t off;
	if ((c->queued && c->queued + size > t->sendq) || pool_alloc(c, size, &off)) {
		c->want_writable = true;
		return KEEL_EFULL;
	}
	struct rbuf *b = calloc(1, sizeof(*b));
	if (!b) {
		pool_free(c, off, size);
		return -ENOMEM;
	}
	b->off = off;
	b->size = size;
	b->pub.data = c->pool + off;
	b->pub.cap = len;
	c->queued += size;
	*out = &b->pub;
	return 0;
}

static void rdma_discard(struct keel_conn *pc, struct keel_send_buf *pb)
{
	buf_release((struct rconn *)pc, (struct rbuf *)pb);
}

static int rdma_send(struct keel_conn *pc, struct keel_send_buf *pb)
{
	struct rconn *c = (struct rconn *)pc;
	struct rbuf *b = (struct rbuf *)pb;
	if (b->pub.len > b->pub.cap) {
		buf_release(c, b);
		return KEEL_ETOOBIG;
	}
	if (c->st == C_DEAD) {
		buf_release(c, b);
		return KEEL_ECLOSED;
	}
	b->sent = 0;
	b->next = NULL;
	if (c->pend_tail)
		c->pend_tail->next = b;
	else
		c->pend_head = b;
	c->pend_tail = b;
	flush(c);
	return 0;
}

static void rdma_close_conn(struct keel_conn *pc)
{
	fail((struct rconn *)pc, 0, "closed");
}

static void rdma_close(struct keel_transport *pub)
{
	struct rtrans *t = (struct rtrans *)pub;
	if (t->shard && t->poller_id >= 0)
		keel_shard_remove_poller(t->shard, t->poller_id);
	keel_transport_close(t->ctl); /* runs no handlers */
	while (t->conns) {
		struct rconn *c = t->conns;
		t->conns = c->next;
		conn_free(c);
	}
	if (t->pd)
		t->v->dealloc_pd(t->pd);
	if (t->ctx)
		t->v->close_device(t->ctx);
	free(t);
}

static void rdma_stats(const struct keel_transport *pub, struct keel_transport_stats *out)
{
	const struct rtrans *t = (const struct rtrans *)pub;
	keel_transport_get_stats(t->ctl, out);
}

const struct keel_transport_ops keel_transport_rdma_ops = {
	.name = "rdma",
	.description = "RDMA verbs: RC queue pairs, WRITE with immediate into a credited ring "
		       "(set-up over the authenticated TCP channel)",
	.caps = KEEL_TRANSPORT_RELIABLE | KEEL_TRANSPORT_ZERO_COPY_SEND |
		KEEL_TRANSPORT_ZERO_COPY_RECV | KEEL_TRANSPORT_BUSY_POLL | KEEL_TRANSPORT_AUTH |
		KEEL_TRANSPORT_REACTOR,
	.open = rdma_open,
	.listen = rdma_listen,
	.connect = rdma_connect,
	.alloc_send_buf = rdma_alloc,
	.send = rdma_send,
	.discard_send_buf = rdma_discard,
	.poll = rdma_poll,
	.close_conn = rdma_close_conn,
	.close = rdma_close,
	.get_stats = rdma_stats,
};

/* `keel topo`: the devices libibverbs sees, or why there are none
 * (declared in transport/registry.c, its only caller). */
void keel_transport_rdma_devices_print(FILE *f);
void keel_transport_rdma_devices_print(FILE *f)
{
	int n = 0;
	errno = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	if (!list) {
		int e = errno ? errno : ENODEV;
		fprintf(f, "rdma devices: none (ibv_get_device_list: %s%s)\n", strerror(e),
			e == ENOSYS ? ": this kernel has no RDMA support (no ib_uverbs, no "
				      "/sys/class/infiniband)" : "");
		return;
	}
	if (n == 0)
		fprintf(f, "rdma devices: none (ibv_get_device_list found no device: no RDMA NIC, "
			   "or its kernel driver is not loaded; soft-RoCE needs rdma_rxe)\n");
	for (int i = 0; i < n; i++) {
		struct ibv_context *ctx = ibv_open_device(list[i]);
		struct ibv_port_attr pa;
		if (!ctx || ibv_query_port(ctx, 1, &pa)) {
			fprintf(f, "rdma device %s: cannot open or query port 1 (%s)\n",
				ibv_get_device_name(list[i]), strerror(errno));
		} else {
			fprintf(f, "rdma device %s: port 1 %s, %s, active MTU %u, %d GIDs\n",
				ibv_get_device_name(list[i]), ibv_port_state_str(pa.state),
				pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand",
				128u << pa.active_mtu, pa.gid_tbl_len);
		}
		if (ctx)
			ibv_close_device(ctx);
	}
	ibv_free_device_list(list);
}
