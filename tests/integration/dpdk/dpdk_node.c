/*
 * dpdk_node — one keel node on the dpdk transport, for the integration
 * tests here (memif.sh, netns.sh, shards.sh, tap_flow.sh, rogue.sh). It runs
 * --shards shard threads; shard s opens its own transport (queue pair s),
 * listens, dials peer shard s of every --peer (peer shard s+1 mod N with
 * --cross), sends --count messages of random sizes (up to --max-size, from
 * --seed) on each dialled connection, and checks every message it receives:
 * that it came from the peer shard it expects, the size and bytes it must
 * have (regenerated from the sender's node, shard and seed), an FNV-1a
 * checksum carried in the message, and the order (an index carried in the
 * message). It exits 0 when every shard got every message from every peer
 * and all of its own were acknowledged, 1 on any error or timeout, 77 when
 * DPDK cannot start here. At exit it prints one line per shard with the
 * backend's counters, among them the frames this shard handed over to
 * another shard (software steering) and the ones handed to it.
 *
 * Peers authenticate with --secret (the handshake of transport/handshake.h).
 * With --expect-refused the peers are given different secrets: the node
 * then passes only if no connection ever comes up, nothing at all reaches
 * on_recv, and every connection it dialled is dropped with KEEL_EAUTH.
 * A connection or message from a node that is not a --peer always fails
 * the run (nothing unauthenticated may reach the application).
 *
 * --rogue (tests/integration/dpdk/rogue.c): before opening its transport,
 * the node attacks the first --peer from other node ids with application
 * data before or instead of the handshake; after the exchange it claims a
 * restart of its own session (a new epoch) and sends data on it. --victim:
 * the node on the other end tolerates exactly that: its inbound connection
 * going down (KEEL_ECLOSED) after all messages were received.
 *
 *   dpdk_node --node 1 --ip 10.9.0.1 --eal "..." --peer "2 02:..:02 10.9.0.2" \
 *             --count 1000 --max-size 1048576 [--loss 0.01] [--shards 2 [--cross]]
 *
 * Sizes: most messages are small (as consensus traffic is), one in 64 is
 * log-uniform up to --max-size, so megabyte fragmentation is exercised
 * without the run taking minutes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/runtime.h"
#include "keel/transport.h"
#include "tests/integration/dpdk/rogue.h"
#include "transport/dpdk/dpdk.h"

#define MAXP KEEL_DPDK_MAX_PEERS
#define MAXS 8
#define HDR 16 /* u64 index, u32 fnv, u32 len */
#define CLUSTER 0x6b65656c

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* `from` names the sending node and shard: node + (shard << 16). */
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

/* One shard: its thread, its transport, its view of the peers. */
struct shard_state {
	uint32_t shard;
	pthread_t th;
	struct keel_transport *t;
	struct peer_state peers[MAXP];
	uint8_t *scratch;
	uint64_t ups, recvs, auth_downs, tolerated_downs;
	uint64_t done_at, start, last_report, link_deadline;
	bool linked, spoofed, stopped;
	int poller; /* runtime mode: the test's poller on the shard */
	struct keel_dpdk_stats st;
	int exit_code; /* 77: could not open */
};

static struct {
	struct keel_dpdk_config dc;
	uint32_t node, shards;
	uint64_t count, seed;
	uint32_t max_size;
	unsigned timeout_s, handshake_ms;
	uint32_t npeers;
	const char *secret;
	bool expect_refused, cross, rogue, victim;
	atomic_bool failed;
	atomic_uint ndone, nstopped;
	bool runtime;
	struct keel_runtime *rt;
	_Atomic uint64_t all_done_at;
	pthread_barrier_t opened, finished;
	struct shard_state sh[MAXS];
} g;

static void fail(void)
{
	atomic_store(&g.failed, true);
}

/* The peer shard our shard s dials, and the one that dials our shard s. */
static uint32_t dial_shard(uint32_t s)
{
	return g.cross ? (s + 1) % g.shards : s;
}
static uint32_t inbound_shard(uint32_t s)
{
	return g.cross ? (s + g.shards - 1) % g.shards : s;
}

static struct peer_state *peer_of(struct shard_state *ss, uint32_t node)
{
	for (uint32_t i = 0; i < g.npeers; i++)
		if (ss->peers[i].node == node)
			return &ss->peers[i];
	return NULL;
}

static void on_up(struct keel_transport *t, struct keel_conn *c)
{
	struct shard_state *ss = t->user;
	struct peer_state *p = peer_of(ss, c->peer.node);
	ss->ups++;
	if (g.expect_refused) {
		fprintf(stderr, "node %u: connection %u/%u came up with a wrong secret\n", g.node,
			c->peer.node, c->peer.shard);
		fail();
	}
	if (!p) {
		fprintf(stderr, "node %u/%u: connection %s %u/%u, which is not a peer, came up\n",
			g.node, ss->shard, c->inbound ? "from" : "to", c->peer.node, c->peer.shard);
		fail();
		return;
	}
	uint32_t want = c->inbound ? inbound_shard(ss->shard) : dial_shard(ss->shard);
	if (c->peer.shard != want) {
		fprintf(stderr, "node %u/%u: connection %s %u/%u, expected shard %u\n", g.node,
			ss->shard, c->inbound ? "from" : "to", c->peer.node, c->peer.shard, want);
		fail();
	}
	if (!c->inbound && c == p->out)
		p->out_up = true;
}

static void on_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct shard_state *ss = t->user;
	struct peer_state *p = peer_of(ss, c->peer.node);
	ss->recvs++;
	if (g.expect_refused) {
		fprintf(stderr, "node %u: a message from unauthenticated %u reached on_recv\n",
			g.node, c->peer.node);
		fail();
	}
	if (!p) {
		fprintf(stderr, "node %u/%u: a message from %u/%u, which is not a peer, reached on_recv\n",
			g.node, ss->shard, c->peer.node, c->peer.shard);
		fail();
		return;
	}
	if (atomic_load(&g.failed))
		return;
	uint32_t from_shard = inbound_shard(ss->shard);
	uint32_t from = p->node + (from_shard << 16);
	uint64_t want_i = p->got;
	uint32_t want_len = msg_size(g.seed, from, want_i, g.max_size);
	uint64_t idx;
	uint32_t sum, len;
	if (c->peer.shard != from_shard || !c->inbound) {
		fprintf(stderr, "node %u/%u: message on a connection %s %u/%u, want from %u/%u\n",
			g.node, ss->shard, c->inbound ? "from" : "to", c->peer.node, c->peer.shard,
			p->node, from_shard);
		fail();
		return;
	}
	if (m->len < HDR) {
		fprintf(stderr, "node %u/%u: from %u: message of %u bytes\n", g.node, ss->shard,
			p->node, m->len);
		fail();
		return;
	}
	memcpy(&idx, m->data, 8);
	memcpy(&sum, (const uint8_t *)m->data + 8, 4);
	memcpy(&len, (const uint8_t *)m->data + 12, 4);
	if (idx != want_i || len != m->len || m->len != want_len || m->type != (uint16_t)(idx & 0x7fff)) {
		fprintf(stderr, "node %u/%u: from %u/%u: got #%" PRIu64 " (%u bytes, type %u), want #%" PRIu64 " (%u bytes)\n",
			g.node, ss->shard, p->node, c->peer.shard, idx, m->len, m->type, want_i,
			want_len);
		fail();
		return;
	}
	if (fnv((const uint8_t *)m->data + HDR, m->len - HDR) != sum) {
		fprintf(stderr, "node %u/%u: from %u: #%" PRIu64 " checksum mismatch\n", g.node,
			ss->shard, p->node, idx);
		fail();
		return;
	}
	msg_body(g.seed, from, idx, ss->scratch, m->len);
	if (memcmp(ss->scratch + HDR, (const uint8_t *)m->data + HDR, m->len - HDR)) {
		fprintf(stderr, "node %u/%u: from %u: #%" PRIu64 " content differs\n", g.node,
			ss->shard, p->node, idx);
		fail();
		return;
	}
	p->got++;
}

static void on_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct shard_state *ss = t->user;
	struct peer_state *p = peer_of(ss, c->peer.node);
	fprintf(stderr, "node %u/%u: connection %s %u/%u down: %s\n", g.node, ss->shard,
		c->inbound ? "from" : "to", c->peer.node, c->peer.shard, keel_strerror(reason));
	if (p && c == p->out) {
		p->out = NULL;
		p->out_up = false;
	}
	if (g.expect_refused && reason == KEEL_EAUTH) {
		ss->auth_downs++;
		return;
	}
	if (g.victim && c->inbound && reason == KEEL_ECLOSED && ss->done_at) {
		/* The rogue claimed a restart of its finished session. */
		ss->tolerated_downs++;
		return;
	}
	fail(); /* nothing else in these tests should break a connection */
}

static const struct keel_transport_handlers handlers = {
	.on_conn_up = on_up,
	.on_recv = on_recv,
	.on_conn_down = on_down,
};

static void send_some(struct shard_state *ss, struct peer_state *p)
{
	uint32_t from = g.node + (ss->shard << 16);
	while (p->out && p->sent < g.count) {
		uint32_t len = msg_size(g.seed, from, p->sent, g.max_size);
		struct keel_send_buf *b;
		int rc = keel_transport_alloc(p->out, len, &b);
		if (rc == KEEL_EFULL)
			return;
		if (rc) {
			fprintf(stderr, "node %u/%u: alloc: %s\n", g.node, ss->shard, keel_strerror(rc));
			fail();
			return;
		}
		uint8_t *d = b->data;
		msg_body(g.seed, from, p->sent, d, len);
		uint32_t sum = fnv(d + HDR, len - HDR);
		memcpy(d, &p->sent, 8);
		memcpy(d + 8, &sum, 4);
		memcpy(d + 12, &len, 4);
		b->len = len;
		b->type = (uint16_t)(p->sent & 0x7fff);
		rc = keel_transport_send_buf(p->out, b);
		if (rc) {
			fprintf(stderr, "node %u/%u: send: %s\n", g.node, ss->shard, keel_strerror(rc));
			fail();
			return;
		}
		p->sent++;
	}
}

static bool shard_done(struct shard_state *ss)
{
	if (g.expect_refused) {
		/* Done once every dial was refused (p->out cleared by on_down). */
		bool all = ss->auth_downs >= g.npeers;
		for (uint32_t i = 0; i < g.npeers; i++)
			all = all && !ss->peers[i].out;
		return all;
	}
	bool all = true;
	for (uint32_t i = 0; i < g.npeers; i++) {
		struct peer_state *p = &ss->peers[i];
		all = all && p->got == g.count && p->sent == g.count && p->out &&
		      keel_dpdk_conn_idle(p->out); /* all of ours acknowledged */
	}
	return all;
}

/* Opens shard ss's transport (a poller of `shard` when it runs on the keel
 * runtime, NULL on a plain thread). false when it could not. */
static bool shard_open(struct shard_state *ss, struct keel_shard *shard)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_transport_config cfg = {
		.cluster_id = CLUSTER,
		.self = {g.node, ss->shard},
		.shards = g.shards,
		.max_frame = g.max_size,
		.secret = (const uint8_t *)g.secret,
		.secret_len = strlen(g.secret),
		.handshake_timeout_ms = g.handshake_ms,
		.handlers = &handlers,
		.user = ss,
		.shard = shard,
		.backend_arg = &g.dc,
	};
	int rc = keel_transport_open("dpdk", &cfg, &ss->t, err);
	if (rc) {
		fprintf(stderr, "node %u/%u: SKIP or FAIL: %s\n", g.node, ss->shard, err);
		/* EAL or device unavailable on this machine: skip, loudly */
		ss->exit_code = rc == KEEL_ECONFIG || rc == KEEL_ENOTFOUND || rc == -EINVAL ? 1 : 77;
		ss->t = NULL;
		fail();
		return false;
	}
	keel_transport_listen(ss->t);
	ss->link_deadline = keel_now_ns() + 30000000000ull;
	return true;
}

/* One turn of shard ss's test loop (the transport is polled by the caller
 * or by the reactor): waits for the link, dials, sends, checks whether
 * everything is done. Returns false once the shard should stop. */
static bool shard_step(struct shard_state *ss)
{
	uint64_t now = keel_now_ns();
	if (atomic_load(&g.failed))
		return false;
	if (!ss->linked) {
		/* memif: wait for the other process to attach; af_packet: carrier. */
		if (!keel_dpdk_link_up(ss->t)) {
			if (now > ss->link_deadline) {
				fprintf(stderr, "node %u: link never came up\n", g.node);
				fail();
				return false;
			}
			return true;
		}
		ss->linked = true;
		for (uint32_t i = 0; i < g.npeers; i++) {
			struct keel_addr to = {ss->peers[i].node, dial_shard(ss->shard)};
			int rc = keel_transport_connect(ss->t, to, &ss->peers[i].out);
			if (rc) {
				fprintf(stderr, "node %u/%u: connect %u/%u: %s\n", g.node, ss->shard,
					to.node, to.shard, keel_strerror(rc));
				fail();
				return false;
			}
		}
		ss->start = ss->last_report = now;
		return true;
	}
	for (uint32_t i = 0; i < g.npeers; i++)
		send_some(ss, &ss->peers[i]);
	if (!ss->done_at && shard_done(ss)) {
		ss->done_at = now;
		if (atomic_fetch_add(&g.ndone, 1) + 1 == g.shards)
			atomic_store(&g.all_done_at, now);
	}
	/* Linger after every shard is done: keep acking the peers' last packets
	 * (and, with software steering, keep handing frames to other shards).
	 * Refused: linger past the peer's handshake timeout too, so its
	 * half-open inbound session ends while we still listen. */
	uint64_t linger = g.expect_refused || g.victim ? 3000000000ull : 1500000000ull;
	uint64_t all_done = atomic_load(&g.all_done_at);
	if (g.rogue && !ss->spoofed && ss->shard == 0 && all_done && now - all_done > 300000000ull) {
		ss->spoofed = true;
		if (keel_test_rogue_spoof_restart(&g.dc, g.node, 0, g.dc.peers[0].node, 0) != 0)
			fail();
	}
	if (all_done && now - all_done > linger)
		return false;
	if (now - ss->start > (uint64_t)g.timeout_s * 1000000000ull) {
		fprintf(stderr, "node %u/%u: timeout after %us\n", g.node, ss->shard, g.timeout_s);
		fail();
		return false;
	}
	if (now - ss->last_report > 5000000000ull) {
		ss->last_report = now;
		for (uint32_t i = 0; i < g.npeers; i++)
			fprintf(stderr, "node %u/%u: peer %u: sent %" PRIu64 " got %" PRIu64 "\n",
				g.node, ss->shard, ss->peers[i].node, ss->peers[i].sent,
				ss->peers[i].got);
	}
	return true;
}

/* Prints shard ss's line (counters included); on its own thread. */
static void shard_report(struct shard_state *ss)
{
	keel_dpdk_get_stats(ss->t, &ss->st);
	double secs = (double)((ss->done_at ? ss->done_at : keel_now_ns()) -
			       (ss->start ? ss->start : keel_now_ns())) / 1e9;
	uint64_t total = 0;
	for (uint32_t i = 0; i < g.npeers; i++)
		total += ss->peers[i].got;
	const struct keel_dpdk_stats *st = &ss->st;
	printf("node %u shard %u: %s: received %" PRIu64 " messages from %u peers in %.2fs; rx %" PRIu64
	       " tx %" PRIu64 " pkts, zero-copy deliveries %" PRIu64 ", retransmits %" PRIu64
	       ", injected drops %" PRIu64 ", bad csum %" PRIu64 " bad frames %" PRIu64
	       ", timeouts %" PRIu64 ", port missed %" PRIu64 " nombuf %" PRIu64 " oerr %" PRIu64
	       ", steered out %" PRIu64 " in %" PRIu64 ", steering %s%s\n",
	       g.node, ss->shard, atomic_load(&g.failed) ? "FAILED" : "ok", total, g.npeers, secs,
	       st->rx_pkts, st->tx_pkts, st->rx_zero_copy, st->retransmits, st->injected_drops,
	       st->bad_csum, st->bad_frames, st->rel_timeouts, st->port_imissed,
	       st->port_rx_nombuf, st->port_oerrors, st->steered, st->steered_in,
	       st->flow_steering ? "rte_flow" : "software", g.runtime ? ", on the keel runtime" : "");
	fflush(stdout);
}

/* A plain thread per shard: it polls its transport itself. */
static void *shard_main(void *arg)
{
	struct shard_state *ss = arg;
	bool ok = shard_open(ss, NULL);
	pthread_barrier_wait(&g.opened);
	if (ok) {
		while (shard_step(ss))
			keel_transport_poll(ss->t, 32);
		shard_report(ss);
	}
	/* No shard closes while another still polls its frames. */
	pthread_barrier_wait(&g.finished);
	if (ok)
		keel_transport_close(ss->t);
	return NULL;
}

/* On the keel runtime (--runtime): shard s of the runtime (hwloc placement,
 * its reactor busy-polls the transport as a poller) runs shard s's test
 * from a second poller; the last shard to finish stops the runtime. */
static int rt_poll(void *arg)
{
	struct shard_state *ss = arg;
	if (ss->stopped)
		return 0;
	if (!shard_step(ss)) {
		ss->stopped = true;
		if (atomic_fetch_add(&g.nstopped, 1) + 1 == g.shards || atomic_load(&g.failed))
			keel_runtime_stop(g.rt);
	}
	return 1;
}

static void rt_init(struct keel_shard *shard, void *arg)
{
	(void)arg;
	struct shard_state *ss = &g.sh[keel_shard_id(shard)];
	if (!shard_open(ss, shard)) {
		keel_runtime_stop(g.rt);
		return;
	}
	ss->poller = keel_shard_add_poller(shard, rt_poll, ss);
	if (ss->poller < 0) {
		fail();
		keel_runtime_stop(g.rt);
	}
}

static void rt_fini(struct keel_shard *shard, void *arg)
{
	(void)arg;
	struct shard_state *ss = &g.sh[keel_shard_id(shard)];
	if (!ss->t)
		return;
	shard_report(ss);
	if (ss->poller >= 0)
		keel_shard_remove_poller(shard, ss->poller);
	keel_transport_close(ss->t);
}

static int run_on_runtime(void)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_runtime_config rc = {
		.nshards = g.shards,
		.overcommit = true, /* 2 shards per node, 2 nodes, on a 2-core machine */
		.idle = KEEL_IDLE_BUSY_POLL,
		.node_id = (int)g.node,
	};
	if (keel_runtime_create(&rc, &g.rt, err) != 0) {
		fprintf(stderr, "node %u: runtime: %s\n", g.node, err);
		return 1;
	}
	int r = keel_runtime_start(g.rt, rt_init, rt_fini, NULL);
	if (r == 0)
		r = keel_runtime_wait(g.rt);
	if (r) {
		fprintf(stderr, "node %u: runtime: %s\n", g.node, keel_runtime_errmsg(g.rt));
		fail();
	}
	keel_runtime_destroy(g.rt);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: dpdk_node --node N --ip A [--udp-port P] [--mac M] --eal ARGS "
			"[--peer 'node mac ip [port]']... [--count N] [--max-size B] [--seed S] "
			"[--loss F] [--timeout S] [--shards N [--cross]] [--rogue | --victim] [--handshake-ms MS] [--runtime]\n");
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
	g.handshake_ms = 2000;
	g.shards = 1;
	g.secret = "keel-dpdk-test-cluster-secret";
	static const struct option opts[] = {
		{"node", 1, 0, 'n'}, {"ip", 1, 0, 'i'}, {"udp-port", 1, 0, 'u'},
		{"mac", 1, 0, 'm'}, {"eal", 1, 0, 'e'}, {"peer", 1, 0, 'p'},
		{"count", 1, 0, 'c'}, {"max-size", 1, 0, 's'}, {"seed", 1, 0, 'S'},
		{"loss", 1, 0, 'l'}, {"timeout", 1, 0, 't'}, {"port", 1, 0, 'P'},
		{"rto-us", 1, 0, 'r'}, {"secret", 1, 0, 'k'}, {"expect-refused", 0, 0, 'x'},
		{"shards", 1, 0, 'N'}, {"cross", 0, 0, 'C'}, {"rogue", 0, 0, 'R'},
		{"victim", 0, 0, 'V'}, {"handshake-ms", 1, 0, 'H'}, {"runtime", 0, 0, 'T'},
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
		case 'N': g.shards = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'C': g.cross = true; break;
		case 'R': g.rogue = true; break;
		case 'V': g.victim = true; break;
		case 'T': g.runtime = true; break;
		case 'H': g.handshake_ms = (unsigned)strtoul(optarg, NULL, 0); break;
		default: return usage();
		}
		if (key && keel_dpdk_config_set(&g.dc, key, optarg, err)) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
	}
	if (!g.node || !g.dc.ip || g.shards < 1 || g.shards > MAXS || (g.rogue && !g.dc.npeers))
		return usage();
	if (g.max_size < HDR)
		g.max_size = HDR;
	g.dc.loss_seed = g.seed * 1000 + g.node;
	g.npeers = g.dc.npeers;
	if (g.rogue) {
		/* Brings the EAL and the port up itself; the transports reuse them. */
		int rc = keel_test_rogue_attacks(&g.dc, (uint16_t)g.shards, CLUSTER, g.dc.peers[0].node);
		if (rc)
			return rc;
	}
	for (uint32_t s = 0; s < g.shards; s++) {
		struct shard_state *ss = &g.sh[s];
		ss->shard = s;
		ss->poller = -1;
		ss->scratch = malloc(g.max_size);
		for (uint32_t i = 0; i < g.npeers; i++)
			ss->peers[i] = (struct peer_state){.node = g.dc.peers[i].node};
	}
	if (g.runtime) {
		if (run_on_runtime() != 0)
			return 1;
	} else {
		pthread_barrier_init(&g.opened, NULL, g.shards);
		pthread_barrier_init(&g.finished, NULL, g.shards);
		for (uint32_t s = 1; s < g.shards; s++)
			if (pthread_create(&g.sh[s].th, NULL, shard_main, &g.sh[s]) != 0) {
				fprintf(stderr, "node %u: pthread_create\n", g.node);
				return 1;
			}
		shard_main(&g.sh[0]); /* the thread that brought up the EAL is shard 0 */
	}
	int code = 0;
	uint64_t ups = 0, recvs = 0, auth_downs = 0, tolerated = 0;
	for (uint32_t s = 0; s < g.shards; s++) {
		struct shard_state *ss = &g.sh[s];
		if (s > 0 && !g.runtime)
			pthread_join(ss->th, NULL);
		if (ss->exit_code == 77)
			code = 77;
		ups += ss->ups;
		recvs += ss->recvs;
		auth_downs += ss->auth_downs;
		tolerated += ss->tolerated_downs;
		free(ss->scratch);
	}
	if (g.expect_refused) {
		printf("node %u: wrong secret: %" PRIu64 " connections up, %" PRIu64
		       " messages delivered, %" PRIu64 " dials refused (auth)\n",
		       g.node, ups, recvs, auth_downs);
		if (ups || recvs || auth_downs < g.npeers * g.shards)
			fail();
	}
	if (g.victim)
		printf("node %u: victim: %" PRIu64 " connections up, %" PRIu64
		       " messages delivered, %" PRIu64
		       " inbound connections dropped after the run\n",
		       g.node, ups, recvs, tolerated);
	if (code == 77)
		return 77;
	return atomic_load(&g.failed) ? 1 : 0;
}
