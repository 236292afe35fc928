/*
 * dpdk_node — one keel node on the dpdk transport, for the integration
 * tests (memif.sh and netns.sh here). It listens, dials every peer given
 * with --peer, sends --count messages of random sizes (up to --max-size,
 * from --seed) to each, and checks every message it receives from each
 * peer: the size and bytes it must have (regenerated from the sender's
 * seed), an FNV-1a checksum carried in the message, and the order (an
 * index carried in the message). It exits 0 when it got every message from
 * every peer and all of its own were acknowledged, 1 on any error or
 * timeout, 77 when DPDK cannot start here.
 *
 * Peers authenticate with --secret (the handshake of transport/handshake.h).
 * With --expect-refused the peers are given different secrets: the node
 * then passes only if no connection ever comes up, nothing at all reaches
 * on_recv, and every connection it dialled is dropped with KEEL_EAUTH.
 *
 *   dpdk_node --node 1 --ip 10.9.0.1 --eal "..." --peer "2 02:..:02 10.9.0.2" \
 *             --count 1000 --max-size 1048576 [--loss 0.01] [--shards 1]
 *
 * Sizes: most messages are small (as consensus traffic is), one in 64 is
 * log-uniform up to --max-size, so megabyte fragmentation is exercised
 * without the run taking minutes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/transport.h"
#include "transport/dpdk/dpdk.h"

#define MAXP KEEL_DPDK_MAX_PEERS
#define HDR 16 /* u64 index, u32 fnv, u32 len */

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t msg_size(uint64_t seed, uint32_t from, uint64_t i, uint32_t max)
{
	uint64_t r = mix(seed ^ ((uint64_t)from << 40) ^ i);
	uint32_t sz;
	if (r % 64 == 0) {
		uint32_t bits = 1 + (uint32_t)((r >> 8) % 20);
		sz = (uint32_t)((r >> 16) & ((1u << bits) - 1));
	} else {
		sz = (uint32_t)((r >> 16) % 1024);
	}
	if (sz > max)
		sz = max;
	return sz < HDR ? HDR : sz;
}

static void msg_body(uint64_t seed, uint32_t from, uint64_t i, uint8_t *b, uint32_t len)
{
	uint64_t st = mix(seed ^ ((uint64_t)from << 40) ^ i ^ 0xabcdef);
	for (uint32_t k = HDR; k < len; k += 8) {
		st = mix(st);
		uint32_t c = len - k < 8 ? len - k : 8;
		memcpy(b + k, &st, c);
	}
}

static uint32_t fnv(const uint8_t *p, uint32_t n)
{
	uint32_t h = 2166136261u;
	for (uint32_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

struct peer_state {
	uint32_t node;
	struct keel_conn *out; /* dialled by us: we send on it */
	bool out_up;
	uint64_t sent;
	uint64_t got; /* received from this peer (on its dialled conn) */
};

static struct {
	struct keel_dpdk_config dc;
	uint32_t node, shards, shard;
	uint64_t count, seed;
	uint32_t max_size;
	unsigned timeout_s;
	struct peer_state peers[MAXP];
	uint32_t npeers;
	struct keel_transport *t;
	bool failed;
	uint8_t *scratch;
	uint64_t conn_downs;
	const char *secret;
	bool expect_refused;
	uint64_t ups, recvs, auth_downs;
} g;

static struct peer_state *peer_of(uint32_t node)
{
	for (uint32_t i = 0; i < g.npeers; i++)
		if (g.peers[i].node == node)
			return &g.peers[i];
	return NULL;
}

static void on_up(struct keel_transport *t, struct keel_conn *c)
{
	struct peer_state *p = peer_of(c->peer.node);
	g.ups++;
	if (g.expect_refused) {
		fprintf(stderr, "node %u: connection %u/%u came up with a wrong secret\n", g.node,
			c->peer.node, c->peer.shard);
		g.failed = true;
	}
	if (p && !c->inbound && c == p->out)
		p->out_up = true;
}

static void on_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct peer_state *p = peer_of(c->peer.node);
	g.recvs++;
	if (g.expect_refused) {
		fprintf(stderr, "node %u: a message from unauthenticated %u reached on_recv\n",
			g.node, c->peer.node);
		g.failed = true;
	}
	if (!p || g.failed)
		return;
	uint64_t want_i = p->got;
	uint32_t want_len = msg_size(g.seed, p->node, want_i, g.max_size);
	uint64_t idx;
	uint32_t sum, len;
	if (m->len < HDR) {
		fprintf(stderr, "node %u: from %u: message of %u bytes\n", g.node, p->node, m->len);
		g.failed = true;
		return;
	}
	memcpy(&idx, m->data, 8);
	memcpy(&sum, (const uint8_t *)m->data + 8, 4);
	memcpy(&len, (const uint8_t *)m->data + 12, 4);
	if (idx != want_i || len != m->len || m->len != want_len || m->type != (uint16_t)(idx & 0x7fff)) {
		fprintf(stderr, "node %u: from %u: got #%" PRIu64 " (%u bytes, type %u), want #%" PRIu64 " (%u bytes)\n",
			g.node, p->node, idx, m->len, m->type, want_i, want_len);
		g.failed = true;
		return;
	}
	if (fnv((const uint8_t *)m->data + HDR, m->len - HDR) != sum) {
		fprintf(stderr, "node %u: from %u: #%" PRIu64 " checksum mismatch\n", g.node, p->node, idx);
		g.failed = true;
		return;
	}
	msg_body(g.seed, p->node, idx, g.scratch, m->len);
	if (memcmp(g.scratch + HDR, (const uint8_t *)m->data + HDR, m->len - HDR)) {
		fprintf(stderr, "node %u: from %u: #%" PRIu64 " content differs\n", g.node, p->node, idx);
		g.failed = true;
		return;
	}
	p->got++;
}

static void on_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct peer_state *p = peer_of(c->peer.node);
	g.conn_downs++;
	fprintf(stderr, "node %u: connection %s %u/%u down: %s\n", g.node,
		c->inbound ? "from" : "to", c->peer.node, c->peer.shard, keel_strerror(reason));
	if (p && c == p->out) {
		p->out = NULL;
		p->out_up = false;
	}
	if (g.expect_refused && reason == KEEL_EAUTH) {
		g.auth_downs++;
		return;
	}
	g.failed = true; /* nothing in these tests should break a connection */
}

static const struct keel_transport_handlers handlers = {
	.on_conn_up = on_up,
	.on_recv = on_recv,
	.on_conn_down = on_down,
};

static void send_some(struct peer_state *p)
{
	while (p->out && p->sent < g.count) {
		uint32_t len = msg_size(g.seed, g.node, p->sent, g.max_size);
		struct keel_send_buf *b;
		int rc = keel_transport_alloc(p->out, len, &b);
		if (rc == KEEL_EFULL)
			return;
		if (rc) {
			fprintf(stderr, "node %u: alloc: %s\n", g.node, keel_strerror(rc));
			g.failed = true;
			return;
		}
		uint8_t *d = b->data;
		msg_body(g.seed, g.node, p->sent, d, len);
		uint32_t sum = fnv(d + HDR, len - HDR);
		memcpy(d, &p->sent, 8);
		memcpy(d + 8, &sum, 4);
		memcpy(d + 12, &len, 4);
		b->len = len;
		b->type = (uint16_t)(p->sent & 0x7fff);
		rc = keel_transport_send_buf(p->out, b);
		if (rc) {
			fprintf(stderr, "node %u: send: %s\n", g.node, keel_strerror(rc));
			g.failed = true;
			return;
		}
		p->sent++;
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: dpdk_node --node N --ip A [--udp-port P] [--mac M] --eal ARGS "
			"[--peer 'node mac ip [port]']... [--count N] [--max-size B] [--seed S] "
			"[--loss F] [--timeout S]\n");
	return 2;
}

int main(int argc, char **argv)
{
	keel_log_init_from_env();
	keel_dpdk_config_default(&g.dc);
	g.count = 1000;
	g.max_size = 1u << 20;
	g.seed = 1;
	g.timeout_s = 120;
	g.shards = 1;
	g.secret = "keel-dpdk-test-cluster-secret";
	static const struct option opts[] = {
		{"node", 1, 0, 'n'}, {"ip", 1, 0, 'i'}, {"udp-port", 1, 0, 'u'},
		{"mac", 1, 0, 'm'}, {"eal", 1, 0, 'e'}, {"peer", 1, 0, 'p'},
		{"count", 1, 0, 'c'}, {"max-size", 1, 0, 's'}, {"seed", 1, 0, 'S'},
		{"loss", 1, 0, 'l'}, {"timeout", 1, 0, 't'}, {"port", 1, 0, 'P'},
		{"rto-us", 1, 0, 'r'}, {"secret", 1, 0, 'k'}, {"expect-refused", 0, 0, 'x'},
		{0, 0, 0, 0},
	};
	char err[KEEL_ERRMSG_LEN];
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *key = NULL;
		switch (o) {
		case 'n': g.node = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'i': key = "ip"; break;
		case 'u': key = "udp_port"; break;
		case 'm': key = "mac"; break;
		case 'e': key = "eal"; break;
		case 'p': key = "peer"; break;
		case 'l': key = "loss"; break;
		case 'P': key = "port"; break;
		case 'r': key = "rto_us"; break;
		case 'k': g.secret = optarg; break;
		case 'x': g.expect_refused = true; break;
		case 'c': g.count = strtoull(optarg, NULL, 0); break;
		case 's': g.max_size = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'S': g.seed = strtoull(optarg, NULL, 0); break;
		case 't': g.timeout_s = (unsigned)strtoul(optarg, NULL, 0); break;
		default: return usage();
		}
		if (key && keel_dpdk_config_set(&g.dc, key, optarg, err)) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
	}
	if (!g.node || !g.dc.ip)
		return usage();
	if (g.max_size < HDR)
		g.max_size = HDR;
	g.dc.loss_seed = g.seed * 1000 + g.node;
	g.scratch = malloc(g.max_size);
	for (uint32_t i = 0; i < g.dc.npeers; i++)
		g.peers[g.npeers++] = (struct peer_state){.node = g.dc.peers[i].node};

	struct keel_transport_config cfg = {
		.cluster_id = 0x6b65656c,
		.self = {g.node, 0},
		.shards = g.shards,
		.max_frame = g.max_size,
		.secret = (const uint8_t *)g.secret,
		.secret_len = strlen(g.secret),
		.handshake_timeout_ms = 2000,
		.handlers = &handlers,
		.backend_arg = &g.dc,
	};
	int rc = keel_transport_open("dpdk", &cfg, &g.t, err);
	if (rc) {
		fprintf(stderr, "node %u: SKIP or FAIL: %s\n", g.node, err);
		/* EAL or device unavailable on this machine: skip, loudly */
		return rc == KEEL_ECONFIG || rc == KEEL_ENOTFOUND || rc == -EINVAL ? 1 : 77;
	}
	keel_transport_listen(g.t);
	/* memif: wait for the other process to attach; af_packet: carrier. */
	uint64_t link_deadline = keel_now_ns() + 30000000000ull;
	while (!keel_dpdk_link_up(g.t)) {
		if (keel_now_ns() > link_deadline) {
			fprintf(stderr, "node %u: link never came up\n", g.node);
			return 1;
		}
		keel_transport_poll(g.t, 32);
	}
	for (uint32_t i = 0; i < g.npeers; i++) {
		rc = keel_transport_connect(g.t, (struct keel_addr){g.peers[i].node, 0}, &g.peers[i].out);
		if (rc) {
			fprintf(stderr, "node %u: connect %u: %s\n", g.node, g.peers[i].node,
				keel_strerror(rc));
			return 1;
		}
	}
	uint64_t start = keel_now_ns(), deadline = start + (uint64_t)g.timeout_s * 1000000000ull;
	uint64_t done_at = 0, last_report = start;
	while (!g.failed) {
		for (uint32_t i = 0; i < g.npeers; i++)
			send_some(&g.peers[i]);
		keel_transport_poll(g.t, 32);
		uint64_t now = keel_now_ns();
		bool all = true;
		for (uint32_t i = 0; i < g.npeers; i++) {
			struct peer_state *p = &g.peers[i];
			all = all && p->got == g.count && p->sent == g.count && p->out &&
			      keel_dpdk_conn_idle(p->out); /* all of ours acknowledged */
		}
		if (g.expect_refused) {
			/* Done once every dial was refused (p->out cleared by on_down). */
			all = g.auth_downs >= g.npeers;
			for (uint32_t i = 0; i < g.npeers; i++)
				all = all && !g.peers[i].out;
		}
		if (all && !done_at) {
			done_at = now;
		}
		/* Refused: linger past the peer's handshake timeout too, so its
		 * half-open inbound session ends while we still listen. */
		if (g.expect_refused && done_at && now - done_at > 3000000000ull)
			break;
		/* Linger: keep acking the peers' last packets for a while. */
		if (!g.expect_refused && done_at && now - done_at > 1500000000ull)
			break;
		if (now > deadline) {
			fprintf(stderr, "node %u: timeout after %us\n", g.node, g.timeout_s);
			g.failed = true;
		}
		if (now - last_report > 5000000000ull) {
			last_report = now;
			for (uint32_t i = 0; i < g.npeers; i++)
				fprintf(stderr, "node %u: peer %u: sent %" PRIu64 " got %" PRIu64 "\n",
					g.node, g.peers[i].node, g.peers[i].sent, g.peers[i].got);
		}
	}
	struct keel_dpdk_stats st;
	keel_dpdk_get_stats(g.t, &st);
	double secs = (double)((done_at ? done_at : keel_now_ns()) - start) / 1e9;
	uint64_t total = 0;
	for (uint32_t i = 0; i < g.npeers; i++)
		total += g.peers[i].got;
	printf("node %u: %s: received %" PRIu64 " messages from %u peers in %.2fs; rx %" PRIu64
	       " tx %" PRIu64 " pkts, zero-copy deliveries %" PRIu64 ", retransmits %" PRIu64
	       ", injected drops %" PRIu64 ", bad csum %" PRIu64 " bad frames %" PRIu64 ", timeouts %" PRIu64
	       ", port missed %" PRIu64 " nombuf %" PRIu64 " oerr %" PRIu64 "\n",
	       g.node, g.failed ? "FAILED" : "ok", total, g.npeers, secs, st.rx_pkts, st.tx_pkts,
	       st.rx_zero_copy, st.retransmits, st.injected_drops, st.bad_csum, st.bad_frames, st.rel_timeouts,
	       st.port_imissed, st.port_rx_nombuf, st.port_oerrors);
	if (g.expect_refused) {
		printf("node %u: wrong secret: %" PRIu64 " connections up, %" PRIu64
		       " messages delivered, %" PRIu64 " dials refused (auth)\n",
		       g.node, g.ups, g.recvs, g.auth_downs);
		if (g.ups || g.recvs || g.auth_downs < g.npeers)
			g.failed = true;
	}
	keel_transport_close(g.t);
	free(g.scratch);
	return g.failed ? 1 : 0;
}
