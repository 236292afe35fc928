/* A rogue peer of the DPDK backend for dpdk_node --rogue; see rogue.h. */
#include "tests/integration/dpdk/rogue.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "keel/base.h"
#include "transport/dpdk/dpdk_port.h"
#include "transport/dpdk/dpdk_rel.h"
#include "transport/handshake.h"

/* The backend's internal message types (transport/dpdk/dpdk_transport.c). */
#define T_HELLO 0xfff0
#define T_WELCOME 0xfff1
#define T_AUTH 0xfff2
#define APP_TYPE 7
/* Rogue session k answers on UDP port ROGUE_PORT + k, so replies find it. */
#define ROGUE_PORT 7500
#define NSC 7
#define BIG (64u * 1024)

/* A secret the rogue made up: it does not know the cluster's. */
static const char rogue_secret[] = "rogue-does-not-know-the-secret";

struct rsess {
	const char *what;
	uint32_t node;
	struct keel_drel s;
	bool inited;
	struct keel_dpdk_port *port;
	uint16_t queue;
	struct rte_ether_addr dmac;
	uint32_t sip, dip; /* host order */
	uint16_t sport, dport;
	struct keel_hs hs;
	struct keel_drel_msg m[3];
	uint8_t hello[KEEL_HS_HELLO_LEN], auth[KEEL_HS_AUTH_LEN], data[16];
	uint8_t *big;
	bool welcome, followed;
	uint64_t delivered, tx;
};

static struct keel_dpdk_port *g_rport;

static struct rte_mbuf *frame(struct rsess *r, const struct keel_drel_hdr *h, const uint8_t *pl)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(r->port->pool);
	if (!m)
		return NULL;
	uint16_t l4 = (uint16_t)(KEEL_DREL_HDR_LEN + h->len);
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	m->data_len = m->pkt_len = (uint32_t)(KEEL_DPDK_L2L4_LEN + l4);
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)p;
	eth->dst_addr = r->dmac;
	eth->src_addr = r->port->mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(20 + 8 + l4));
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(r->sip);
	ip->dst_addr = rte_cpu_to_be_32(r->dip);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	udp->src_port = rte_cpu_to_be_16(r->sport);
	udp->dst_port = rte_cpu_to_be_16(r->dport);
	udp->dgram_len = rte_cpu_to_be_16((uint16_t)(8 + l4));
	udp->dgram_cksum = 0;
	keel_drel_hdr_encode(p + KEEL_DPDK_L2L4_LEN, h);
	if (h->len)
		memcpy(p + KEEL_DPDK_L2L4_LEN + KEEL_DREL_HDR_LEN, pl, h->len);
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	udp->dgram_cksum = rte_ipv4_udptcp_cksum(ip, udp);
	return m;
}

static void xmit(struct rsess *r, struct rte_mbuf *m)
{
	if (rte_eth_tx_burst(r->port->port_id, r->queue, &m, 1) != 1)
		rte_pktmbuf_free(m);
	else
		r->tx++;
}

static void *io_emit(void *ctx, const struct keel_drel_hdr *h, struct keel_drel_msg *msg)
{
	struct rsess *r = ctx;
	struct rte_mbuf *m = frame(r, h, msg->data + h->offset);
	if (!m)
		return NULL;
	rte_mbuf_refcnt_update(m, 1); /* one for the wire, one kept until acked */
	xmit(r, m);
	return m;
}

/* Coalesced packets (dpdk_rel's BATCH records), as the backend sends them. */
static void *io_emit_batch(void *ctx, const struct keel_drel_hdr *h,
			   struct keel_drel_msg *const *msgs, uint32_t n)
{
	struct rsess *r = ctx;
	uint8_t buf[RTE_MBUF_DEFAULT_DATAROOM];
	if (h->len > sizeof(buf))
		return NULL;
	keel_drel_batch_write(buf, msgs, n);
	struct rte_mbuf *m = frame(r, h, buf);
	if (!m)
		return NULL;
	rte_mbuf_refcnt_update(m, 1);
	xmit(r, m);
	return m;
}

static int io_retransmit(void *ctx, void *pkt)
{
	rte_mbuf_refcnt_update(pkt, 1);
	xmit(ctx, pkt);
	return 0;
}

static void io_release(void *ctx, void *pkt)
{
	(void)ctx;
	rte_pktmbuf_free(pkt);
}

static void io_msg_done(void *ctx, struct keel_drel_msg *m)
{
	(void)ctx;
	(void)m;
}

static void io_deliver(void *ctx, uint16_t type, const uint8_t *data, uint32_t len, bool view)
{
	struct rsess *r = ctx;
	(void)data;
	(void)view;
	if (type == T_WELCOME && len == KEEL_HS_WELCOME_LEN)
		r->welcome = true;
	else
		r->delivered++;
}

static int io_send_ack(void *ctx, const struct keel_drel_hdr *h)
{
	struct rsess *r = ctx;
	struct rte_mbuf *m = frame(r, h, NULL);
	if (!m)
		return -1;
	xmit(r, m);
	return 0;
}

static int sess_init(struct rsess *r, const char *what, uint32_t node, uint16_t shard,
		     uint16_t sport, const struct keel_dpdk_config *dc, uint32_t victim,
		     uint16_t vshard, uint16_t queue, bool batch)
{
	const struct keel_dpdk_peer *p = keel_dpdk_config_peer(dc, victim);
	if (!p)
		return -1;
	memset(r, 0, sizeof(*r));
	r->what = what;
	r->node = node;
	r->port = g_rport;
	r->queue = queue;
	memcpy(r->dmac.addr_bytes, p->mac, 6);
	r->sip = dc->ip;
	r->dip = p->ip;
	r->sport = sport;
	r->dport = (uint16_t)((p->udp_port ? p->udp_port : dc->udp_port) + vshard);
	struct keel_drel_cfg cfg;
	keel_drel_cfg_default(&cfg);
	cfg.mss = g_rport->mtu - 20 - 8 - KEEL_DREL_HDR_LEN;
	cfg.max_msg = 1u << 20;
	struct keel_drel_io io = {
		.ctx = r,
		.emit = io_emit,
		.emit_batch = batch ? io_emit_batch : NULL,
		.retransmit = io_retransmit,
		.release = io_release,
		.msg_done = io_msg_done,
		.deliver = io_deliver,
		.send_ack = io_send_ack,
	};
	uint32_t epoch = 0;
	while (!epoch)
		if (getrandom(&epoch, sizeof(epoch), 0) != sizeof(epoch))
			return -1;
	if (keel_drel_init(&r->s, &cfg, &io, node, shard, victim, vshard, epoch) != 0)
		return -1;
	r->s.hdr_flags = KEEL_DREL_F_INIT; /* we dial, as a client would */
	r->inited = true;
	memcpy(r->data, "ROGUE-APP-DATA!!", 16);
	return 0;
}

static void sess_send(struct rsess *r, int i, uint16_t type, const uint8_t *data, uint32_t len)
{
	r->m[i] = (struct keel_drel_msg){.data = data, .len = len, .type = type};
	if (keel_drel_send(&r->s, &r->m[i]) != 0)
		fprintf(stderr, "rogue: node %u: could not queue a message\n", r->node);
}

static void sess_fini(struct rsess *r)
{
	if (r->inited)
		keel_drel_fini(&r->s);
	r->inited = false;
	free(r->big);
	r->big = NULL;
}

/* Feeds the frames on our queue to the rogue sessions (by UDP port). */
static void rx_some(struct rsess *rs, int n, uint64_t now)
{
	struct rte_mbuf *pk[32];
	uint16_t k = rte_eth_rx_burst(g_rport->port_id, 0, pk, 32);
	for (uint16_t i = 0; i < k; i++) {
		struct rte_mbuf *m = pk[i];
		uint32_t dlen = rte_pktmbuf_data_len(m);
		const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);
		const struct rte_ether_hdr *eth = (const void *)p;
		if (dlen < KEEL_DPDK_L2L4_LEN + KEEL_DREL_HDR_LEN ||
		    eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
			goto next;
		const struct rte_ipv4_hdr *ip = (const void *)(eth + 1);
		const struct rte_udp_hdr *udp = (const void *)(ip + 1);
		uint16_t ulen = rte_be_to_cpu_16(udp->dgram_len);
		if (ip->next_proto_id != IPPROTO_UDP || ulen < 8 || 14u + 20u + ulen > dlen)
			goto next;
		uint16_t dport = rte_be_to_cpu_16(udp->dst_port);
		for (int j = 0; j < n; j++) {
			struct rsess *r = &rs[j];
			if (!r->inited || r->sport != dport)
				continue;
			struct keel_drel_hdr h;
			const uint8_t *pl = (const uint8_t *)(udp + 1);
			if (keel_drel_hdr_decode(&h, pl, (size_t)ulen - 8, 1u << 20, NULL) == 0)
				keel_drel_input(&r->s, &h, pl + KEEL_DREL_HDR_LEN, now);
		}
	next:
		rte_pktmbuf_free(m);
	}
}

int keel_test_rogue_attacks(const struct keel_dpdk_config *dc, uint16_t nqueues,
			    uint64_t cluster_id, uint32_t victim)
{
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_dpdk_port_get(dc, nqueues, &g_rport, err);
	if (rc) {
		fprintf(stderr, "rogue: SKIP or FAIL: %s\n", err);
		return rc == KEEL_ECONFIG ? 1 : 77;
	}
	/* Wait for the victim to attach (memif) or the carrier (af_packet). */
	uint64_t deadline = keel_now_ns() + 30000000000ull;
	for (;;) {
		struct rte_eth_link link;
		if (rte_eth_link_get_nowait(g_rport->port_id, &link) == 0 &&
		    link.link_status == RTE_ETH_LINK_UP)
			break;
		if (keel_now_ns() > deadline) {
			fprintf(stderr, "rogue: link never came up\n");
			return 1;
		}
	}
	static const char *const what[NSC] = {
		"data right after HELLO",    "data instead of AUTH", "bad AUTH, then data",
		"data without any HELLO",    "64 KiB message after HELLO",
		"internal message type after HELLO",
		"HELLO and data coalesced in one packet",
	};
	struct rsess *rs = calloc(NSC, sizeof(*rs));
	if (!rs)
		return 1;
	for (int i = 0; i < NSC; i++) {
		uint32_t node = 3 + (uint32_t)i;
		if (sess_init(&rs[i], what[i], node, 0, (uint16_t)(ROGUE_PORT + node), dc, victim, 0,
			      0, i == 6) != 0) {
			fprintf(stderr, "rogue: cannot set up a session (victim %u in the peer table?)\n",
				victim);
			free(rs);
			return 1;
		}
		keel_hs_client_start(&rs[i].hs, (const uint8_t *)rogue_secret, strlen(rogue_secret),
				     cluster_id, node, 0, victim, 0, rs[i].hello);
	}
	/* What goes out at once; B and C continue once WELCOME arrives. */
	sess_send(&rs[0], 0, T_HELLO, rs[0].hello, KEEL_HS_HELLO_LEN);
	sess_send(&rs[0], 1, APP_TYPE, rs[0].data, sizeof(rs[0].data));
	sess_send(&rs[1], 0, T_HELLO, rs[1].hello, KEEL_HS_HELLO_LEN);
	sess_send(&rs[2], 0, T_HELLO, rs[2].hello, KEEL_HS_HELLO_LEN);
	sess_send(&rs[3], 0, APP_TYPE, rs[3].data, sizeof(rs[3].data));
	sess_send(&rs[4], 0, T_HELLO, rs[4].hello, KEEL_HS_HELLO_LEN);
	rs[4].big = calloc(1, BIG);
	if (rs[4].big)
		sess_send(&rs[4], 1, APP_TYPE, rs[4].big, BIG);
	sess_send(&rs[5], 0, T_HELLO, rs[5].hello, KEEL_HS_HELLO_LEN);
	sess_send(&rs[5], 1, 0xfff7, rs[5].data, sizeof(rs[5].data));
	sess_send(&rs[6], 0, T_HELLO, rs[6].hello, KEEL_HS_HELLO_LEN);
	sess_send(&rs[6], 1, APP_TYPE, rs[6].data, sizeof(rs[6].data));
	sess_send(&rs[6], 2, APP_TYPE, rs[6].data, sizeof(rs[6].data));
	/* Until B and C had their WELCOME and followed up, then a while for
	 * the victim's reactions (rogue.sh gives the victim's dial to our real
	 * node, answered once dpdk_node opens its transport, a handshake
	 * timeout well above this). */
	uint64_t start = keel_now_ns(), end = start + 8000000000ull;
	for (uint64_t now = start; now < end; now = keel_now_ns()) {
		if (rs[1].followed && rs[2].followed && end > now + 500000000ull)
			end = now + 500000000ull;
		rx_some(rs, NSC, now);
		for (int i = 1; i <= 2; i++) {
			struct rsess *r = &rs[i];
			if (!r->welcome || r->followed)
				continue;
			r->followed = true;
			if (i == 2) {
				/* An AUTH made up without the secret. */
				if (getrandom(r->auth, sizeof(r->auth), 0) != sizeof(r->auth))
					memset(r->auth, 0x5a, sizeof(r->auth));
				sess_send(r, 1, T_AUTH, r->auth, KEEL_HS_AUTH_LEN);
			}
			sess_send(r, 2, APP_TYPE, r->data, sizeof(r->data));
		}
		for (int i = 0; i < NSC; i++) {
			keel_drel_pump(&rs[i].s, now);
			keel_drel_tick(&rs[i].s, now);
		}
	}
	int bad = 0;
	for (int i = 0; i < NSC; i++) {
		struct rsess *r = &rs[i];
		printf("rogue: node %u (%s): %" PRIu64 " packets sent (%" PRIu64
		       " coalesced), WELCOME %s, acked to seq %u\n",
		       r->node, r->what, r->tx, r->s.st.batches_sent,
		       r->welcome ? "received" : "not received", r->s.tx_una);
		if ((i == 1 || i == 2) && !r->welcome) {
			fprintf(stderr, "rogue: node %u: no WELCOME, the scenario did not run\n",
				r->node);
			bad = 1;
		}
		keel_hs_wipe(&r->hs);
		sess_fini(r);
	}
	free(rs);
	fflush(stdout);
	return bad;
}

int keel_test_rogue_spoof_restart(const struct keel_dpdk_config *dc, uint32_t node,
				  uint16_t shard, uint32_t victim, uint16_t vshard)
{
	struct rsess r;
	if (!g_rport ||
	    sess_init(&r, "claimed restart", node, shard, (uint16_t)(dc->udp_port + shard), dc,
		      victim, vshard, shard, false) != 0)
		return 1;
	memset(r.data, 0xee, sizeof(r.data)); /* never a valid test message */
	sess_send(&r, 0, APP_TYPE, r.data, sizeof(r.data));
	keel_drel_pump(&r.s, keel_now_ns());
	printf("rogue: claimed a restart of %u/%u -> %u/%u (new epoch %#x): %" PRIu64
	       " packet sent\n",
	       node, shard, victim, vshard, r.s.my_epoch, r.tx);
	fflush(stdout);
	int rc = r.tx ? 0 : 1;
	sess_fini(&r);
	return rc;
}
