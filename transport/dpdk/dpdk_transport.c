/*
 * transport/dpdk/dpdk_transport.c — the `dpdk` backend of keel/transport.h:
 * Ethernet + IPv4 + UDP frames on a DPDK port, one RX/TX queue pair per
 * shard, busy-polled by the shard's thread, made reliable by dpdk_rel.
 *
 * A connection is one reliability session, keyed by (peer node, peer shard,
 * who dialled): A->B and B->A are two connections, as with TCP. The first
 * messages of a session are the peer authentication handshake of
 * transport/handshake.h (HELLO, WELCOME, AUTH: cluster id, HMAC-SHA256 with
 * the cluster secret over both nonces), carried as internal message types
 * over the reliable session. Nothing a peer sends before its AUTH checks
 * out reaches on_recv: an application message before that breaks the
 * session, a failed handshake is logged and the session dropped. The
 * dialler's sends before the handshake ends are held and go out after AUTH.
 *
 * Coalescing: sends are queued on the session and pumped once per poll
 * (after the received frames were handled, so replies made in on_recv go
 * too), or at once when a packet's worth is queued; the session packs the
 * small messages queued by then into one packet each (dpdk_rel.h, BATCH).
 * No timer holds a message back: a lone message leaves at the next poll.
 *
 * Buffers: a send buffer up to SMALL_MAX bytes lives inside the send
 * descriptor itself (no allocation; its bytes are copied into the
 * coalesced packet, which is cheaper than an mbuf per message); one up to
 * a packet's payload IS an mbuf (record and frame headers are written in
 * front of the caller's bytes at send time, smaller messages queued behind
 * it are copied after them) and stays referenced until the peer
 * acknowledges it; a bigger one is heap memory cut into fragments (copied
 * into mbufs). On receive, a message that fits in one packet, alone or
 * coalesced, is lent to on_recv straight from the mbuf; a fragmented one
 * from the session's reassembly buffer.
 *
 * Ownership: everything here belongs to the shard thread that opened the
 * transport; the port, pool and steering rings are process-wide
 * (dpdk_port.h).
 */
#include <errno.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <string.h>
#include <sys/random.h>

#include <sodium.h>

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"
#include "transport/dpdk/dpdk.h"
#include "transport/dpdk/dpdk_csum.h"
#include "transport/dpdk/dpdk_port.h"
#include "transport/dpdk/dpdk_rel.h"
#include "transport/handshake.h"

/* Internal message types, above what the layer above may use. */
#define T_HELLO 0xfff0
#define T_WELCOME 0xfff1
#define T_AUTH 0xfff2
#define INTERNAL_TYPES 0xfff0

#define HDRS (KEEL_DPDK_L2L4_LEN + KEEL_DREL_HDR_LEN)
#define TXQ_LEN 512
#define RX_BURST 64
/* Send buffers up to this size live in the descriptor (see above). */
#define SMALL_MAX 256
/* Where a zero-copy send buffer's bytes start in its mbuf: after the frame
 * headers and the record header of a coalesced packet. */
#define ZC_OFF (HDRS + KEEL_DREL_REC_LEN)
/* Frames up to this size go to the wire as a copy (see wire_push). */
#define WIRE_COPY_MAX 512

struct dconn;

struct dbuf {
	struct keel_send_buf pub;
	struct keel_drel_msg msg;
	struct dconn *c;
	struct rte_mbuf *m; /* zero-copy: the payload lives in this mbuf */
	uint8_t *heap;
	struct dbuf *next_free;
	struct dbuf *next_hold; /* dialler's sends held until the handshake ends */
	uint8_t small[SMALL_MAX];
};

struct dconn {
	struct keel_conn pub;
	struct dtrans *t;
	struct keel_drel s;
	struct rte_ether_addr mac;
	uint32_t ip; /* host order */
	uint16_t udp_port; /* the peer shard's port */
	bool initiator, up, closing, reported;
	int down_reason;
	uint64_t queued_bytes; /* allocated or queued, not yet emitted */
	uint32_t queued_n;
	bool was_full;
	struct keel_hs hs;
	uint64_t hs_deadline; /* ns; 0 until the first poll sets it */
	struct dbuf *hold, *hold_tail;
	struct dconn *next_dead;
};

struct dtrans {
	struct keel_transport pub;
	struct keel_dpdk_config cfg;
	struct keel_dpdk_port *port;
	uint16_t queue;
	uint16_t my_udp;
	uint32_t shards;
	uint32_t epoch;
	uint32_t sendq_bytes;
	struct keel_drel_cfg rcfg;
	bool listening;
	struct dconn **conns;
	uint32_t nconns, capconns;
	struct dconn *dead; /* closed or broken, on_conn_down pending */
	struct dbuf *free_bufs;
	struct rte_mbuf *txq[TXQ_LEN];
	uint16_t ntx;
	uint64_t rng;
	uint64_t now; /* ns, read at the end of a poll (see dpdk_now) */
	uint64_t tsc0, ns0; /* the TSC and keel_now_ns() at open */
	double ns_per_tsc;  /* 0: no usable TSC rate, read the clock */
	uint32_t idle_polls;
	bool tx_pending; /* sends queued since the last full poll */
	uint32_t zc_held; /* mbufs held by zero-copy buffers not yet emitted */
	uint32_t zc_limit;
	struct keel_dpdk_stats st;
	struct keel_shard *shard; /* reactor we are a poller of, or NULL */
	int poller_id;
	uint8_t *secret; /* copy of the cluster secret, wiped on close */
	size_t secret_len;
	uint64_t hs_timeout_ns;
	struct keel_hs_nonce_cache nonces;
};

static inline struct dtrans *T(struct keel_transport *t)
{
	return (struct dtrans *)t;
}

/* Nanoseconds on keel_now_ns()'s scale, from the TSC at the rate EAL
 * calibrated. clock_gettime (kvm-clock here) costs 30 ns, and 70 ns right
 * after a transmit, where its ordered TSC read waits for the ring writes;
 * a plain rdtsc costs a few and waits for nothing. The session timers
 * need microseconds: the TSC's drift against the clock over a run is far
 * below that. */
static inline uint64_t dpdk_now(const struct dtrans *t)
{
	if (t->ns_per_tsc == 0)
		return keel_now_ns();
	return t->ns0 + (uint64_t)((double)(rte_rdtsc() - t->tsc0) * t->ns_per_tsc);
}

/* ---- tx batch ----------------------------------------------------------- */

static void tx_flush(struct dtrans *t)
{
	uint16_t off = 0;
	while (off < t->ntx) {
		uint16_t n = rte_eth_tx_burst(t->port->port_id, t->queue, t->txq + off,
					      (uint16_t)(t->ntx - off));
		if (n == 0)
			break;
		off = (uint16_t)(off + n);
	}
	t->st.tx_pkts += off;
	if (off < t->ntx)
		t->st.tx_ring_full++;
	if (off && off < t->ntx)
		memmove(t->txq, t->txq + off, (size_t)(t->ntx - off) * sizeof(t->txq[0]));
	t->ntx = (uint16_t)(t->ntx - off);
}

/* Takes one reference of m into the batch; false when the wire is full. */
static bool tx_push(struct dtrans *t, struct rte_mbuf *m)
{
	if (t->ntx == TXQ_LEN) {
		tx_flush(t);
		if (t->ntx == TXQ_LEN)
			return false;
	}
	t->txq[t->ntx++] = m;
	if (t->ntx >= 64)
		tx_flush(t);
	return true;
}

/* Puts a DATA frame that the session keeps for retransmission on the wire.
 * Sharing the mbuf (one more reference) makes the PMD drop its reference
 * with an atomic decrement; a PMD that copies on transmit (memif,
 * af_packet) does that inside rte_eth_tx_burst right after writing the
 * shared ring, and the locked instruction waits until those stores reach
 * the peer's cache: rdtsc medians on this VM put rte_eth_tx_burst of one
 * shared 64 B frame at 650-1000 cycles against 300 for the same call on
 * an unshared one (raw memif, or keel with this copy), when the host is
 * contended. The peer sees the frame no sooner either way (the round trip
 * barely moves); the sender's poll is back sooner. A small frame is
 * cheaper to copy (an mbuf from the per-lcore cache and a few cache
 * lines), so the wire gets its own mbuf with one reference and frees it
 * without an atomic; a bigger frame is shared, where the copy would cost
 * more than the wait. False when the wire is full. */
static bool wire_push(struct dtrans *t, struct rte_mbuf *m)
{
	if (m->data_len <= WIRE_COPY_MAX && t->ntx < TXQ_LEN) {
		struct rte_mbuf *w = rte_pktmbuf_alloc(t->port->pool);
		if (w) {
			w->data_len = m->data_len;
			w->pkt_len = m->pkt_len;
			w->ol_flags = m->ol_flags;
			w->tx_offload = m->tx_offload;
			rte_memcpy(rte_pktmbuf_mtod(w, void *), rte_pktmbuf_mtod(m, const void *),
				   m->data_len);
			if (tx_push(t, w))
				return true;
			rte_pktmbuf_free(w);
			return false;
		}
	}
	rte_mbuf_refcnt_update(m, 1); /* one for the wire, one kept until acked */
	if (!tx_push(t, m)) {
		rte_mbuf_refcnt_update(m, -1);
		return false;
	}
	return true;
}

/* ---- frames ------------------------------------------------------------- */

static void write_l2l4(struct dtrans *t, struct dconn *c, struct rte_mbuf *m, uint16_t l4_payload)
{
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)p;
	eth->dst_addr = c->mac;
	eth->src_addr = t->port->mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->type_of_service = 0;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(20 + 8 + l4_payload));
	ip->packet_id = 0;
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->hdr_checksum = 0;
	ip->src_addr = rte_cpu_to_be_32(t->cfg.ip);
	ip->dst_addr = rte_cpu_to_be_32(c->ip);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	udp->src_port = rte_cpu_to_be_16(t->my_udp);
	udp->dst_port = rte_cpu_to_be_16(c->udp_port);
	udp->dgram_len = rte_cpu_to_be_16((uint16_t)(8 + l4_payload));
	udp->dgram_cksum = 0;
	if (t->port->tx_ip_csum) {
		m->l2_len = sizeof(*eth);
		m->l3_len = sizeof(*ip);
		m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
		udp->dgram_cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
	} else {
		ip->hdr_checksum = rte_ipv4_cksum(ip);
		uint16_t ck = (uint16_t)~keel_dpdk_csum_fold(
			keel_dpdk_csum_add(udp, 8u + l4_payload, rte_ipv4_phdr_cksum(ip, 0)));
		udp->dgram_cksum = ck ? ck : 0xffff; /* 0 would mean "no checksum" */
	}
}

static struct rte_mbuf *frame_alloc(struct dtrans *t)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(t->port->pool);
	if (!m)
		t->st.no_mbuf++;
	return m;
}

/* ---- reliability io ------------------------------------------------------ */

static inline struct dbuf *msg_dbuf(struct keel_drel_msg *msg)
{
	return (struct dbuf *)((char *)msg - offsetof(struct dbuf, msg));
}

/* Headers, then onto the wire; the mbuf stays referenced until acked. */
static void *emit_frame(struct dtrans *t, struct dconn *c, struct rte_mbuf *m,
			const struct keel_drel_hdr *h)
{
	m->data_len = m->pkt_len = (uint32_t)(HDRS + h->len);
	/* Our header first: the UDP checksum covers it. */
	keel_drel_hdr_encode(rte_pktmbuf_mtod_offset(m, uint8_t *, KEEL_DPDK_L2L4_LEN), h);
	write_l2l4(t, c, m, (uint16_t)(KEEL_DREL_HDR_LEN + h->len));
	/* The callers made room in the batch: this cannot fail. */
	wire_push(t, m);
	return m;
}

/* A fragment of a message too big for one packet (always a heap buffer). */
static void *io_emit(void *ctx, const struct keel_drel_hdr *h, struct keel_drel_msg *msg)
{
	struct dconn *c = ctx;
	struct dtrans *t = c->t;
	if (t->ntx == TXQ_LEN) {
		tx_flush(t);
		if (t->ntx == TXQ_LEN)
			return NULL;
	}
	struct rte_mbuf *m = frame_alloc(t);
	if (!m)
		return NULL;
	rte_memcpy(rte_pktmbuf_mtod_offset(m, uint8_t *, HDRS), msg->data + h->offset, h->len);
	return emit_frame(t, c, m, h);
}

/* A coalesced packet: when the first message is a zero-copy mbuf, the
 * packet is that mbuf and the others are copied behind it. */
static void *io_emit_batch(void *ctx, const struct keel_drel_hdr *h,
			   struct keel_drel_msg *const *msgs, uint32_t n)
{
	struct dconn *c = ctx;
	struct dtrans *t = c->t;
	if (t->ntx == TXQ_LEN) {
		tx_flush(t);
		if (t->ntx == TXQ_LEN)
			return NULL;
	}
	struct dbuf *b0 = msg_dbuf(msgs[0]);
	struct rte_mbuf *m;
	if (b0->m) {
		m = b0->m; /* the first message's bytes are already in place */
		b0->m = NULL;
		t->zc_held--;
		uint8_t *p = rte_pktmbuf_mtod_offset(m, uint8_t *, HDRS);
		keel_drel_rec_put(p, msgs[0]->type, (uint16_t)msgs[0]->len);
		keel_drel_batch_write(p + KEEL_DREL_REC_LEN + msgs[0]->len, msgs + 1, n - 1);
	} else {
		m = frame_alloc(t);
		if (!m)
			return NULL;
		keel_drel_batch_write(rte_pktmbuf_mtod_offset(m, uint8_t *, HDRS), msgs, n);
	}
	return emit_frame(t, c, m, h);
}

static int io_retransmit(void *ctx, void *pkt)
{
	struct dconn *c = ctx;
	if (!wire_push(c->t, pkt))
		return -1;
	c->t->st.retransmits++;
	return 0;
}

static void io_release(void *ctx, void *pkt)
{
	rte_pktmbuf_free(pkt);
}

static void buf_recycle(struct dtrans *t, struct dbuf *b)
{
	if (b->m) {
		rte_pktmbuf_free(b->m);
		t->zc_held--;
		b->m = NULL;
	}
	if (b->heap) {
		free(b->heap);
		b->heap = NULL;
	}
	b->next_free = t->free_bufs;
	t->free_bufs = b;
}

static void io_msg_done(void *ctx, struct keel_drel_msg *msg)
{
	struct dconn *c = ctx;
	struct dbuf *b = msg_dbuf(msg);
	c->queued_bytes -= msg->len;
	c->queued_n--;
	buf_recycle(c->t, b);
}

static void conn_fail(struct dconn *c, int reason);
static int send_internal(struct dconn *c, uint16_t type, const void *data, uint32_t len);

static void hs_fail(struct dconn *c, int rc, const char *errmsg)
{
	keel_warn("dpdk: %s %u/%u: handshake failed, disconnecting: %s",
		  c->initiator ? "to" : "from", c->pub.peer.node, c->pub.peer.shard, errmsg);
	if (c->initiator)
		snprintf(c->t->pub.errmsg, sizeof(c->t->pub.errmsg), "%s", errmsg);
	conn_fail(c, rc);
}

static void conn_up(struct dconn *c)
{
	struct dtrans *t = c->t;
	c->up = true;
	keel_hs_wipe(&c->hs);
	/* The dialler's sends made during the handshake go out now, after AUTH. */
	struct dbuf *b = c->hold;
	c->hold = c->hold_tail = NULL;
	t->tx_pending = true;
	while (b) {
		struct dbuf *n = b->next_hold;
		b->next_hold = NULL;
		if (keel_drel_send(&c->s, &b->msg) != 0) { /* room was reserved at alloc */
			c->queued_bytes -= b->msg.len;
			c->queued_n--;
			buf_recycle(t, b);
		}
		b = n;
	}
	keel_info("dpdk: connection %s %u/%u up (authenticated)", c->initiator ? "to" : "from",
		  c->pub.peer.node, c->pub.peer.shard);
	if (t->pub.handlers->on_conn_up)
		t->pub.handlers->on_conn_up(&t->pub, &c->pub);
}

static void on_handshake(struct dconn *c, uint16_t type, const uint8_t *data, uint32_t len)
{
	struct dtrans *t = c->t;
	char err[KEEL_ERRMSG_LEN];
	int rc;
	if (c->up) {
		rc = keel_errmsg_set(err, KEEL_EPROTO, "handshake message after the handshake");
	} else if (!c->initiator && type == T_HELLO && c->hs.state == KEEL_HS_SERVER_WAIT_HELLO) {
		uint8_t welcome[KEEL_HS_WELCOME_LEN];
		rc = keel_hs_server_on_hello(&c->hs, data, len, &t->nonces, welcome, err);
		/* The HELLO must name the node and shard the session comes from. */
		if (rc == 0 && (c->hs.peer.node != c->pub.peer.node ||
				c->hs.peer.shard != c->pub.peer.shard ||
				c->hs.peer.node == t->pub.self.node))
			rc = keel_errmsg_set(err, KEEL_EAUTH,
					     "handshake: HELLO names %u/%u on a session from %u/%u",
					     c->hs.peer.node, c->hs.peer.shard, c->pub.peer.node,
					     c->pub.peer.shard);
		if (rc == 0 && send_internal(c, T_WELCOME, welcome, sizeof(welcome)) != 0)
			rc = keel_errmsg_set(err, KEEL_EFULL, "handshake: cannot queue WELCOME");
	} else if (!c->initiator && type == T_AUTH && c->hs.state == KEEL_HS_SERVER_WAIT_AUTH) {
		rc = keel_hs_server_on_auth(&c->hs, data, len, err);
		if (rc == 0) {
			conn_up(c);
			return;
		}
	} else if (c->initiator && type == T_WELCOME && c->hs.state == KEEL_HS_CLIENT_WAIT_WELCOME) {
		uint8_t auth[KEEL_HS_AUTH_LEN];
		rc = keel_hs_client_on_welcome(&c->hs, data, len, auth, err);
		if (rc == 0 && send_internal(c, T_AUTH, auth, sizeof(auth)) != 0)
			rc = keel_errmsg_set(err, KEEL_EFULL, "handshake: cannot queue AUTH");
		if (rc == 0) {
			conn_up(c);
			return;
		}
	} else {
		rc = keel_errmsg_set(err, KEEL_EPROTO, "handshake: unexpected message type %#x",
				     type);
	}
	if (rc < 0)
		hs_fail(c, rc, err);
}

static void io_deliver(void *ctx, uint16_t type, const uint8_t *data, uint32_t len, bool view)
{
	struct dconn *c = ctx;
	struct dtrans *t = c->t;
	if (c->closing)
		return;
	if (type >= INTERNAL_TYPES) {
		on_handshake(c, type, data, len);
		return;
	}
	if (!c->up) {
		/* Data before the peer authenticated: never delivered. */
		char err[KEEL_ERRMSG_LEN];
		keel_errmsg_set(err, KEEL_EPROTO, "application message before the handshake ended");
		hs_fail(c, KEEL_EPROTO, err);
		return;
	}
	struct keel_msg m = {.data = data, .len = len, .type = type, .from = c->pub.peer};
	t->st.rx_msgs++;
	t->st.rx_zero_copy += view;
	t->pub.handlers->on_recv(&t->pub, &c->pub, &m);
}

static int io_send_ack(void *ctx, const struct keel_drel_hdr *h)
{
	struct dconn *c = ctx;
	struct dtrans *t = c->t;
	struct rte_mbuf *m = frame_alloc(t);
	if (!m)
		return -1;
	m->data_len = m->pkt_len = HDRS;
	keel_drel_hdr_encode(rte_pktmbuf_mtod_offset(m, uint8_t *, KEEL_DPDK_L2L4_LEN), h);
	write_l2l4(t, c, m, KEEL_DREL_HDR_LEN);
	if (!tx_push(t, m)) {
		rte_pktmbuf_free(m);
		return -1;
	}
	return 0;
}

static const struct keel_drel_io dconn_io = {
	.emit = io_emit,
	.emit_batch = io_emit_batch,
	.retransmit = io_retransmit,
	.release = io_release,
	.msg_done = io_msg_done,
	.deliver = io_deliver,
	.send_ack = io_send_ack,
};

/* ---- connections ---------------------------------------------------------- */

static struct dconn *conn_new(struct dtrans *t, uint32_t node, uint16_t shard, bool initiator,
			      const struct rte_ether_addr *mac, uint32_t ip, uint16_t udp_port)
{
	if (t->nconns == t->capconns) {
		uint32_t cap = t->capconns ? t->capconns * 2 : 8;
		struct dconn **n = realloc(t->conns, cap * sizeof(*n));
		if (!n)
			return NULL;
		t->conns = n;
		t->capconns = cap;
	}
	struct dconn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->pub.t = &t->pub;
	c->pub.peer = (struct keel_addr){node, shard};
	c->pub.inbound = !initiator;
	c->t = t;
	c->initiator = initiator;
	c->mac = *mac;
	c->ip = ip;
	c->udp_port = udp_port;
	struct keel_drel_io io = dconn_io;
	io.ctx = c;
	if (keel_drel_init(&c->s, &t->rcfg, &io, t->pub.self.node, (uint16_t)t->pub.self.shard,
			   node, shard, t->epoch) != 0) {
		free(c);
		return NULL;
	}
	c->s.hdr_flags = initiator ? KEEL_DREL_F_INIT : 0;
	if (!initiator)
		keel_hs_server_start(&c->hs, t->secret, t->secret_len, t->pub.cluster_id,
				     t->pub.self.node, t->pub.self.shard);
	t->conns[t->nconns++] = c;
	return c;
}

static struct dconn *conn_find(struct dtrans *t, uint32_t node, uint16_t shard, bool initiator)
{
	for (uint32_t i = 0; i < t->nconns; i++) {
		struct dconn *c = t->conns[i];
		if (c->pub.peer.node == node && c->pub.peer.shard == shard &&
		    c->initiator == initiator)
			return c;
	}
	return NULL;
}

/* Marks c broken or closed; on_conn_down runs from poll, after the current
 * callback (and the lent message) is done. */
static void conn_fail(struct dconn *c, int reason)
{
	if (c->closing)
		return;
	c->closing = true;
	c->down_reason = reason;
	if (reason == KEEL_EPROTO) /* a broken or hostile peer: worth a warning */
		keel_warn("dpdk: connection %s %u/%u down: %s (%s)",
			  c->initiator ? "to" : "from", c->pub.peer.node, c->pub.peer.shard,
			  keel_strerror(reason), c->s.errmsg[0] ? c->s.errmsg : "-");
	else if (reason)
		keel_info("dpdk: connection %s %u/%u down: %s (%s)",
			  c->initiator ? "to" : "from", c->pub.peer.node, c->pub.peer.shard,
			  keel_strerror(reason), c->s.errmsg[0] ? c->s.errmsg : "-");
	c->next_dead = c->t->dead;
	c->t->dead = c;
}

static void conn_free(struct dtrans *t, struct dconn *c)
{
	for (uint32_t i = 0; i < t->nconns; i++)
		if (t->conns[i] == c) {
			t->conns[i] = t->conns[--t->nconns];
			break;
		}
	while (c->hold) {
		struct dbuf *b = c->hold;
		c->hold = b->next_hold;
		b->next_hold = NULL;
		buf_recycle(t, b);
	}
	keel_hs_wipe(&c->hs);
	keel_drel_fini(&c->s);
	free(c);
}

static void reap_dead(struct dtrans *t)
{
	while (t->dead) {
		struct dconn *c = t->dead;
		t->dead = c->next_dead;
		/* Announced connections and dialled ones hear on_conn_down. */
		bool tell = c->up || c->initiator;
		if (tell && t->pub.handlers->on_conn_down)
			t->pub.handlers->on_conn_down(&t->pub, &c->pub, c->down_reason);
		conn_free(t, c);
	}
}

static int send_internal(struct dconn *c, uint16_t type, const void *data, uint32_t len)
{
	struct dtrans *t = c->t;
	struct dbuf *b = t->free_bufs;
	if (b)
		t->free_bufs = b->next_free;
	else if (!(b = calloc(1, sizeof(*b))))
		return -ENOMEM;
	uint8_t *dst = b->small;
	if (len > SMALL_MAX) {
		b->heap = malloc(len);
		if (!b->heap) {
			buf_recycle(t, b);
			return -ENOMEM;
		}
		dst = b->heap;
	}
	memcpy(dst, data, len);
	b->c = c;
	b->msg = (struct keel_drel_msg){.data = dst, .len = len, .type = type};
	int rc = keel_drel_send(&c->s, &b->msg);
	if (rc) {
		buf_recycle(t, b);
		return rc;
	}
	t->tx_pending = true;
	c->queued_bytes += len;
	c->queued_n++;
	return 0;
}

/* ---- receive -------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void answer_arp(struct dtrans *t, struct rte_mbuf *m)
{
	if (m->data_len < sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr))
		return;
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(eth + 1);
	if (arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) ||
	    arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
	    arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
	    arp->arp_data.arp_tip != rte_cpu_to_be_32(t->cfg.ip))
		return;
	struct rte_mbuf *r = frame_alloc(t);
	if (!r)
		return;
	r->data_len = r->pkt_len = sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr);
	struct rte_ether_hdr *re = rte_pktmbuf_mtod(r, struct rte_ether_hdr *);
	struct rte_arp_hdr *ra = (struct rte_arp_hdr *)(re + 1);
	re->dst_addr = eth->src_addr;
	re->src_addr = t->port->mac;
	re->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	*ra = *arp;
	ra->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
	ra->arp_data.arp_tha = arp->arp_data.arp_sha;
	ra->arp_data.arp_tip = arp->arp_data.arp_sip;
	ra->arp_data.arp_sha = t->port->mac;
	ra->arp_data.arp_sip = arp->arp_data.arp_tip;
	if (!tx_push(t, r))
		rte_pktmbuf_free(r);
	else
		t->st.arp_replies++;
}

/* Handles one frame for this shard; frees it. */
static void rx_frame(struct dtrans *t, struct rte_mbuf *m, bool steer)
{
	uint32_t dlen = rte_pktmbuf_data_len(m);
	if (m->nb_segs != 1 || dlen < KEEL_DPDK_L2L4_LEN)
		goto drop;
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) {
		if (t->queue == 0)
			answer_arp(t, m);
		goto drop;
	}
	if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
		goto drop;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	if (ip->version_ihl != RTE_IPV4_VHL_DEF || ip->next_proto_id != IPPROTO_UDP ||
	    ip->dst_addr != rte_cpu_to_be_32(t->cfg.ip) ||
	    (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)))
		goto drop;
	uint16_t iplen = rte_be_to_cpu_16(ip->total_length);
	if (iplen < 28 || (uint32_t)iplen + 14 > dlen)
		goto drop;
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	uint16_t ulen = rte_be_to_cpu_16(udp->dgram_len);
	uint16_t dport = rte_be_to_cpu_16(udp->dst_port);
	if (ulen < 8 || ulen > iplen - 20)
		goto drop;
	if (dport < t->cfg.udp_port || dport >= t->cfg.udp_port + t->shards)
		goto drop;
	uint16_t shard = (uint16_t)(dport - t->cfg.udp_port);
	if (shard != t->queue) {
		/* Software steering: the PMD has no flow rules for this. */
		if (!steer || rte_ring_enqueue(t->port->inbox[shard], m) != 0)
			goto drop;
		t->st.steered++;
		return;
	}
	uint64_t fl = m->ol_flags;
	if ((fl & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
	    (fl & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD)
		goto bad_csum;
	if ((fl & RTE_MBUF_F_RX_IP_CKSUM_MASK) != RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
	    rte_raw_cksum(ip, 20) != 0xffff)
		goto bad_csum;
	if ((fl & RTE_MBUF_F_RX_L4_CKSUM_MASK) != RTE_MBUF_F_RX_L4_CKSUM_GOOD &&
	    udp->dgram_cksum != 0 &&
	    keel_dpdk_csum_fold(keel_dpdk_csum_add(udp, iplen - 20u, rte_ipv4_phdr_cksum(ip, 0))) !=
		    0xffff)
		goto bad_csum;
	if (t->cfg.loss_ppm && rng_next(&t->rng) % 1000000 < t->cfg.loss_ppm) {
		t->st.injected_drops++;
		goto drop;
	}
	const uint8_t *pl = (const uint8_t *)(udp + 1);
	struct keel_drel_hdr h;
	char err[KEEL_ERRMSG_LEN];
	if (keel_drel_hdr_decode(&h, pl, (size_t)ulen - 8, t->pub.max_frame, err) != 0) {
		t->st.bad_frames++;
		keel_debug("dpdk: dropped frame: %s", err);
		goto drop;
	}
	if (h.dst_shard != t->queue)
		goto drop;
	bool peer_dialled = h.flags & KEEL_DREL_F_INIT;
	struct dconn *c = conn_find(t, h.src_node, h.src_shard, !peer_dialled);
	if (!c) {
		/* A new inbound session starts with its first packet. */
		if (!peer_dialled || !t->listening || h.type != KEEL_DREL_DATA || h.seq != 0 ||
		    keel_drel_first_type(&h, pl + KEEL_DREL_HDR_LEN) != T_HELLO)
			goto drop;
		c = conn_new(t, h.src_node, h.src_shard, false, &eth->src_addr,
			     rte_be_to_cpu_32(ip->src_addr), rte_be_to_cpu_16(udp->src_port));
		if (!c)
			goto drop;
	}
	if (c->closing)
		goto drop;
	if (c->s.peer_epoch && h.epoch != c->s.peer_epoch && h.epoch != c->s.prev_peer_epoch &&
	    (!h.dst_epoch || h.dst_epoch == c->s.my_epoch)) {
		/* A new epoch: the peer restarted, or someone who knows only the
		 * node ids says so. Its new run has not authenticated, so none of
		 * it may be taken (and delivered) under this session's AUTH, as
		 * the reliability layer's reset would: drop the connection; a
		 * restarted peer dials again with a HELLO. */
		keel_errmsg_set(c->s.errmsg, KEEL_ECLOSED,
				"peer restarted (new epoch %#x): it must authenticate again", h.epoch);
		conn_fail(c, KEEL_ECLOSED);
		goto drop;
	}
	if (!c->up && h.type == KEEL_DREL_DATA && !(h.flags & KEEL_DREL_F_BATCH) &&
	    h.msg_len > KEEL_HS_WELCOME_LEN && h.seq == c->s.rx_next &&
	    h.epoch == c->s.peer_epoch) {
		/* Nothing larger than a handshake message before the peer proved
		 * it knows the secret: it cannot make us reassemble megabytes.
		 * Only a packet the session would take in order counts: after a
		 * lost AUTH the dialler's next packets (sent after AUTH) arrive
		 * first, and the session drops them as out of order. */
		keel_errmsg_set(err, KEEL_EPROTO, "%u-byte message before the handshake ended",
				h.msg_len);
		hs_fail(c, KEEL_EPROTO, err);
		goto drop;
	}
	t->st.rx_pkts++;
	int rc = keel_drel_input(&c->s, &h, pl + KEEL_DREL_HDR_LEN, t->now);
	if (rc < 0)
		conn_fail(c, rc);
drop:
	rte_pktmbuf_free(m);
	return;
bad_csum:
	t->st.bad_csum++;
	rte_pktmbuf_free(m);
}

/* ---- ops ---------------------------------------------------------------- */

/* The [dpdk] section of the node configuration (keel/config.h keeps it as
 * raw entries); our IP defaults to the node's listen address. */
static int config_from_node(const struct keel_node_config *nc, struct keel_dpdk_config *dc,
			    char *errmsg)
{
	keel_dpdk_config_default(dc);
	for (size_t i = 0; i < nc->nentries; i++) {
		const struct keel_config_entry *e = &nc->entries[i];
		if (strcmp(e->section, "dpdk"))
			continue;
		int rc = keel_dpdk_config_set(dc, e->key, e->value, errmsg);
		if (rc)
			return keel_errmsg_set(errmsg, rc, "%s: [dpdk] %s = %s", nc->path, e->key,
					       e->value);
	}
	if (!dc->ip && keel_dpdk_parse_ip(nc->listen_host, &dc->ip) != 0)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "%s: [dpdk] ip not set and listen host '%s' is not IPv4",
				       nc->path, nc->listen_host);
	return 0;
}

static int dpdk_poll(struct keel_transport *kt, int budget);

/* The shard's reactor calls this first in every loop iteration. Never 0:
 * a kernel-bypass NIC raises no event the reactor could sleep on, so the
 * shard busy-polls (as ARCHITECTURE.md says it does with DPDK). */
static int reactor_poll(void *arg)
{
	int n = dpdk_poll(arg, RX_BURST);
	return n > 0 ? n : 1;
}

/* CPUID 0x80000007 EDX bit 8: the TSC runs at a constant rate in all
 * P-, C- and T-states (what Linux calls constant_tsc + nonstop_tsc). */
static bool invariant_tsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned a, b, c, d;
	if ((unsigned)__get_cpuid_max(0x80000000u, NULL) < 0x80000007u ||
	    !__get_cpuid(0x80000007u, &a, &b, &c, &d))
		return false;
	return (d >> 8) & 1;
#else
	return false;
#endif
}

static int dpdk_open(const struct keel_transport_config *cfg, struct keel_transport **out,
		     char *errmsg)
{
	const struct keel_dpdk_config *dc = cfg->backend_arg;
	struct keel_dpdk_config from_node; /* copied into the transport below */
	if (!dc && cfg->node) {
		int rc = config_from_node(cfg->node, &from_node, errmsg);
		if (rc)
			return rc;
		dc = &from_node;
	}
	if (!dc)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "transport dpdk: no [dpdk] configuration");
	if (dc->ip == 0)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "transport dpdk: [dpdk] ip is not set");
	if (!cfg->secret || cfg->secret_len < KEEL_HS_SECRET_MIN)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "transport dpdk: a cluster secret of at least %d bytes is required",
				       KEEL_HS_SECRET_MIN);
	uint32_t shards = cfg->shards ? cfg->shards : 1;
	if (cfg->self.shard >= shards)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "transport dpdk: shard %u of %u",
				       cfg->self.shard, shards);
	if ((uint32_t)dc->udp_port + shards > 65536)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "transport dpdk: udp_port too high");
	struct keel_dpdk_port *port;
	int rc = keel_dpdk_port_get(dc, (uint16_t)shards, &port, errmsg);
	if (rc)
		return rc;
	rc = keel_dpdk_thread_join(errmsg);
	if (rc)
		return rc;
	struct dtrans *t = rte_zmalloc("keel_dpdk_t", sizeof(*t), RTE_CACHE_LINE_SIZE);
	if (!t)
		return keel_errmsg_set(errmsg, -ENOMEM, "transport dpdk: out of memory");
	t->pub.ops = &keel_transport_dpdk_ops;
	t->pub.handlers = cfg->handlers;
	t->pub.user = cfg->user;
	t->pub.self = cfg->self;
	t->pub.cluster_id = cfg->cluster_id;
	t->pub.max_frame = cfg->max_frame ? cfg->max_frame : KEEL_TRANSPORT_MAX_FRAME_DEFAULT;
	t->cfg = *dc;
	t->port = port;
	t->secret = malloc(cfg->secret_len);
	if (!t->secret) {
		rte_free(t);
		return keel_errmsg_set(errmsg, -ENOMEM, "transport dpdk: out of memory");
	}
	memcpy(t->secret, cfg->secret, cfg->secret_len);
	t->secret_len = cfg->secret_len;
	t->hs_timeout_ns = (uint64_t)(cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 5000) *
			   1000000u;
	t->queue = (uint16_t)cfg->self.shard;
	t->shards = shards;
	t->my_udp = (uint16_t)(dc->udp_port + cfg->self.shard);
	t->sendq_bytes = cfg->sendq_bytes ? cfg->sendq_bytes : KEEL_TRANSPORT_SENDQ_DEFAULT;
	keel_drel_cfg_default(&t->rcfg);
	t->rcfg.mss = port->mtu - 20 - 8 - KEEL_DREL_HDR_LEN;
	if (t->rcfg.mss > RTE_MBUF_DEFAULT_DATAROOM - HDRS)
		t->rcfg.mss = RTE_MBUF_DEFAULT_DATAROOM - HDRS;
	t->rcfg.max_msg = t->pub.max_frame;
	t->rcfg.queue_msgs = 1u << 13; /* the backend stops at half */
	/* Queued zero-copy buffers hold mbufs: leave most of the pool to
	 * the receive rings and the retransmission windows. */
	t->zc_limit = dc->mbufs / 8 / shards;
	t->rcfg.queue_bytes = UINT64_MAX / 2; /* the backend bounds bytes itself */
	if (dc->rto_us)
		t->rcfg.rto_ns = (uint64_t)dc->rto_us * 1000;
	while (getrandom(&t->epoch, sizeof(t->epoch), 0) != sizeof(t->epoch) || !t->epoch)
		;
	t->rng = (dc->loss_seed ? dc->loss_seed : 1) * 0x9e3779b97f4a7c15ull + cfg->self.shard + 1;
	if (!t->rng)
		t->rng = 1;
	t->poller_id = -1;
	/* Only a TSC that ticks at a constant rate in every state can stand
	 * in for the clock; EAL reports 0 when it could not calibrate. */
	uint64_t hz = rte_get_tsc_hz();
	if (hz && invariant_tsc()) {
		t->ns_per_tsc = 1e9 / (double)hz;
		t->tsc0 = rte_rdtsc();
		t->ns0 = keel_now_ns();
	}
	t->now = dpdk_now(t);
	if (cfg->shard) {
		t->shard = cfg->shard;
		t->poller_id = keel_shard_add_poller(cfg->shard, reactor_poll, &t->pub);
		if (t->poller_id < 0) {
			int rc2 = t->poller_id;
			sodium_memzero(t->secret, t->secret_len);
			free(t->secret);
			rte_free(t);
			return keel_errmsg_set(errmsg, rc2, "transport dpdk: add poller");
		}
	}
	*out = &t->pub;
	keel_info("transport dpdk: %u/%u on %s queue %u, udp %u, epoch %#x%s", cfg->self.node,
		  cfg->self.shard, port->name, t->queue, t->my_udp, t->epoch,
		  dc->loss_ppm ? " (loss injection on)" : "");
	return 0;
}

static int dpdk_listen(struct keel_transport *kt)
{
	T(kt)->listening = true;
	return 0;
}

static int dpdk_connect(struct keel_transport *kt, struct keel_addr peer, struct keel_conn **out)
{
	struct dtrans *t = T(kt);
	const struct keel_dpdk_peer *p = keel_dpdk_config_peer(&t->cfg, peer.node);
	if (!p)
		return keel_errmsg_set(kt->errmsg, KEEL_ENOTFOUND,
				       "transport dpdk: node %u is not in the [dpdk] peer table",
				       peer.node);
	if (peer.shard >= t->shards)
		return keel_errmsg_set(kt->errmsg, KEEL_EBADINPUT, "transport dpdk: shard %u",
				       peer.shard);
	struct dconn *old = conn_find(t, peer.node, (uint16_t)peer.shard, true);
	if (old && !old->closing)
		return keel_errmsg_set(kt->errmsg, -EISCONN,
				       "transport dpdk: already connected to %u/%u", peer.node,
				       peer.shard);
	struct rte_ether_addr mac;
	memcpy(mac.addr_bytes, p->mac, 6);
	uint16_t base = p->udp_port ? p->udp_port : t->cfg.udp_port;
	struct dconn *c = conn_new(t, peer.node, (uint16_t)peer.shard, true, &mac, p->ip,
				   (uint16_t)(base + peer.shard));
	if (!c)
		return keel_errmsg_set(kt->errmsg, -ENOMEM, "transport dpdk: out of memory");
	uint8_t hello[KEEL_HS_HELLO_LEN];
	keel_hs_client_start(&c->hs, t->secret, t->secret_len, t->pub.cluster_id, t->pub.self.node,
			     t->pub.self.shard, peer.node, peer.shard, hello);
	int rc = send_internal(c, T_HELLO, hello, sizeof(hello));
	if (rc) {
		conn_free(t, c);
		return rc;
	}
	*out = &c->pub;
	return 0;
}

static int dpdk_alloc(struct keel_conn *kc, uint32_t len, struct keel_send_buf **out)
{
	struct dconn *c = (struct dconn *)kc;
	struct dtrans *t = c->t;
	if (c->closing)
		return KEEL_ECLOSED;
	if (len > t->pub.max_frame)
		return KEEL_ETOOBIG;
	if ((c->queued_n && c->queued_bytes + len > t->sendq_bytes) ||
	    c->queued_n >= t->rcfg.queue_msgs / 2) {
		c->was_full = true;
		return KEEL_EFULL;
	}
	struct dbuf *b = t->free_bufs;
	if (b)
		t->free_bufs = b->next_free;
	else if (!(b = calloc(1, sizeof(*b))))
		return -ENOMEM;
	b->c = c;
	if (len <= SMALL_MAX) {
		b->pub.data = b->small;
		b->pub.cap = SMALL_MAX;
	} else if (len <= t->rcfg.mss - KEEL_DREL_REC_LEN && t->zc_held < t->zc_limit) {
		b->m = frame_alloc(t);
		if (!b->m) {
			buf_recycle(t, b);
			c->was_full = true;
			return KEEL_EFULL; /* pool exhausted: as good as a full queue */
		}
		t->zc_held++;
		b->pub.data = rte_pktmbuf_mtod_offset(b->m, uint8_t *, ZC_OFF);
		b->pub.cap = t->rcfg.mss - KEEL_DREL_REC_LEN;
	} else {
		b->heap = malloc(len);
		if (!b->heap) {
			buf_recycle(t, b);
			return -ENOMEM;
		}
		b->pub.data = b->heap;
		b->pub.cap = len;
	}
	b->pub.len = 0;
	b->pub.type = 0;
	c->queued_bytes += len;
	c->queued_n++;
	b->msg.len = len; /* reserved; send() sets the real length */
	*out = &b->pub;
	return 0;
}

static void dpdk_discard(struct keel_conn *kc, struct keel_send_buf *kb)
{
	struct dconn *c = (struct dconn *)kc;
	struct dbuf *b = (struct dbuf *)kb;
	c->queued_bytes -= b->msg.len;
	c->queued_n--;
	buf_recycle(c->t, b);
}

static int dpdk_send(struct keel_conn *kc, struct keel_send_buf *kb)
{
	struct dconn *c = (struct dconn *)kc;
	struct dbuf *b = (struct dbuf *)kb;
	if (c->closing) {
		dpdk_discard(kc, kb);
		return KEEL_ECLOSED;
	}
	if (b->pub.len > b->pub.cap) {
		dpdk_discard(kc, kb);
		return KEEL_ETOOBIG;
	}
	if (b->pub.type >= INTERNAL_TYPES) {
		dpdk_discard(kc, kb);
		return KEEL_EBADINPUT;
	}
	c->queued_bytes -= b->msg.len;
	c->queued_bytes += b->pub.len;
	b->msg = (struct keel_drel_msg){.data = b->pub.data, .len = b->pub.len,
					.type = b->pub.type};
	if (!c->up) {
		/* Only a dialler has the conn before it is up: hold until AUTH. */
		b->next_hold = NULL;
		if (c->hold_tail)
			c->hold_tail->next_hold = b;
		else
			c->hold = b;
		c->hold_tail = b;
		return 0;
	}
	int rc = keel_drel_send(&c->s, &b->msg);
	if (rc) { /* cannot happen: room was reserved at alloc */
		c->queued_bytes -= b->msg.len;
		c->queued_n--;
		buf_recycle(c->t, b);
		return rc;
	}
	/* The poll pumps what is queued (coalesced); a full packet's worth
	 * goes now. Either way nothing waits for more to come. */
	c->t->tx_pending = true;
	if (keel_drel_packet_ready(&c->s))
		keel_drel_pump(&c->s, c->t->now);
	return 0;
}

static int dpdk_poll(struct keel_transport *kt, int budget)
{
	struct dtrans *t = T(kt);
	int done = 0;
	struct rte_mbuf *pkts[RX_BURST];
	uint16_t want = (uint16_t)(budget > 0 && budget < RX_BURST ? budget : RX_BURST);
	uint16_t n = rte_eth_rx_burst(t->port->port_id, t->queue, pkts, want);
	for (uint16_t i = 0; i < n; i++)
		rx_frame(t, pkts[i], !t->port->flow_steering);
	done += n;
	if (t->shards > 1 && !t->port->flow_steering) {
		unsigned k = rte_ring_sc_dequeue_burst(t->port->inbox[t->queue], (void **)pkts,
						       RX_BURST, NULL);
		for (unsigned i = 0; i < k; i++)
			rx_frame(t, pkts[i], false);
		t->st.steered_in += k;
		done += (int)k;
	}
	/* A poll that received nothing, with no send queued since the last
	 * full poll, has nothing to pump: only the timers could be due, and
	 * they need microseconds. So such a poll skips the sessions and the
	 * clock but every 8th time: a short idle poll is a short wait before
	 * the next frame is seen (an idle poll was ~200 cycles, rdtsc median
	 * with two sessions; half a poll is added to every hop on average). */
	bool full = done || t->tx_pending || (++t->idle_polls & 7) == 0;
	t->tx_pending = false;
	for (uint32_t i = 0; full && i < t->nconns; i++) {
		struct dconn *c = t->conns[i];
		if (c->closing)
			continue;
		if (!c->up) {
			if (!c->hs_deadline) {
				c->hs_deadline = t->now + t->hs_timeout_ns;
			} else if (t->now > c->hs_deadline) {
				char err[KEEL_ERRMSG_LEN];
				keel_errmsg_set(err, KEEL_ETIMEOUT, "handshake did not finish in time");
				hs_fail(c, KEEL_ETIMEOUT, err);
				continue;
			}
		}
		keel_drel_pump(&c->s, t->now);
		int rc = keel_drel_tick(&c->s, t->now);
		if (rc < 0) {
			conn_fail(c, rc);
			continue;
		}
		if (c->was_full && c->queued_bytes <= t->sendq_bytes / 2 &&
		    c->queued_n < t->rcfg.queue_msgs / 4) {
			c->was_full = false;
			if (kt->handlers->on_writable)
				kt->handlers->on_writable(kt, &c->pub);
		}
	}
	if (t->ntx)
		tx_flush(t);
	reap_dead(t);
	/* After the frames went out (off the latency path): t->now is at
	 * most one full poll old (8 idle polls, ~1 µs). */
	if (full)
		t->now = dpdk_now(t);
	return done;
}

static void dpdk_close_conn(struct keel_conn *kc)
{
	conn_fail((struct dconn *)kc, 0);
}

static void dpdk_close(struct keel_transport *kt)
{
	struct dtrans *t = T(kt);
	if (t->shard && t->poller_id >= 0)
		keel_shard_remove_poller(t->shard, t->poller_id);
	tx_flush(t);
	while (t->nconns)
		conn_free(t, t->conns[t->nconns - 1]);
	free(t->conns);
	while (t->free_bufs) {
		struct dbuf *b = t->free_bufs;
		t->free_bufs = b->next_free;
		free(b);
	}
	/* Whatever the PMD would not take is dropped. */
	for (uint16_t i = 0; i < t->ntx; i++)
		rte_pktmbuf_free(t->txq[i]);
	sodium_memzero(t->secret, t->secret_len);
	free(t->secret);
	rte_free(t);
}

void keel_dpdk_get_stats(struct keel_transport *kt, struct keel_dpdk_stats *out)
{
	struct dtrans *t = T(kt);
	*out = t->st;
	out->flow_steering = t->port->flow_steering;
	struct rte_eth_stats es;
	if (rte_eth_stats_get(t->port->port_id, &es) == 0) {
		out->port_imissed = es.imissed;
		out->port_ierrors = es.ierrors;
		out->port_rx_nombuf = es.rx_nombuf;
		out->port_oerrors = es.oerrors;
	}
	for (uint32_t i = 0; i < t->nconns; i++) {
		const struct keel_drel_stats *s = &t->conns[i]->s.st;
		out->rel_retransmits += s->retransmits;
		out->rel_timeouts += s->timeouts;
		out->rel_dups += s->dups;
		out->rel_out_of_order += s->out_of_order;
		out->rel_acks_sent += s->acks_sent;
		out->rel_data_sent += s->data_sent;
		out->rel_stale += s->stale;
		out->rel_msgs_sent += s->msgs_sent;
		out->rel_batches_sent += s->batches_sent;
	}
}

bool keel_dpdk_conn_idle(struct keel_conn *kc)
{
	struct dconn *c = (struct dconn *)kc;
	return c->queued_n == 0 && keel_drel_idle(&c->s);
}

bool keel_dpdk_link_up(struct keel_transport *kt)
{
	struct rte_eth_link link;
	return rte_eth_link_get_nowait(T(kt)->port->port_id, &link) == 0 &&
	       link.link_status == RTE_ETH_LINK_UP;
}

const struct keel_transport_ops keel_transport_dpdk_ops = {
	.name = "dpdk",
	.description = "DPDK kernel bypass: Ethernet/IPv4/UDP, seq/ack/retransmit/credits, busy-poll",
	.caps = KEEL_TRANSPORT_RELIABLE | KEEL_TRANSPORT_ZERO_COPY_SEND |
		KEEL_TRANSPORT_ZERO_COPY_RECV | KEEL_TRANSPORT_BUSY_POLL | KEEL_TRANSPORT_AUTH,
	.max_msg = 0,
	.open = dpdk_open,
	.listen = dpdk_listen,
	.connect = dpdk_connect,
	.alloc_send_buf = dpdk_alloc,
	.send = dpdk_send,
	.discard_send_buf = dpdk_discard,
	.poll = dpdk_poll,
	.close_conn = dpdk_close_conn,
	.close = dpdk_close,
};
