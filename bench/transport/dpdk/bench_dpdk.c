/*
 * bench-transport-dpdk: keel's dpdk transport over net_memif against the
 * physical limit of the same link, a raw DPDK memif ping-pong without
 * keel's protocol, in the same run (and keel's TCP backend when the shared
 * bench-transport program is built next to this one: its tcp line is read
 * from it).
 *
 * Figures:
 *   - ping-pong RTT p50/p99 of 64 B messages: keel dpdk vs raw memif
 *     (target keel <= 2x raw) and vs keel tcp (target <= 1/10);
 *   - one-way 64 B messages/s on one shard: keel dpdk vs raw memif
 *     frames/s (goal: >= 5 M messages/s per shard; keel coalesces small
 *     messages, so its messages/s should exceed the raw frames/s: target
 *     ratio >= 1), and keel's own data frames/s and messages per frame (the
 *     coalescing factor). The sender sends bursts of 256 messages between
 *     polls, as an application with that much to say would.
 *
 * Every measurement is a fresh pair of processes (server pinned to CPU 0,
 * client to CPU 1; the EAL comes up once per process), alternating raw and
 * keel (A B A B) in the full run; lines report medians.
 *
 * usage: bench-transport-dpdk [--quick] [--rounds N] [--seconds S]
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "keel/transport.h"
#include "transport/dpdk/dpdk.h"
#include "transport/dpdk/dpdk_port.h"

struct opts {
	unsigned rounds;
	double seconds;
	int reps;
	bool quick;
};

struct result {
	double p50, p99, per_s;
	double frames_s; /* one-way data frames/s (raw: = per_s) */
	int ok;
};

static char g_dir[128];
static unsigned g_run;

static void pin(int cpu)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(n > 1 ? cpu % n : 0, &s);
	sched_setaffinity(0, sizeof(s), &s);
}

static void eal_args(char *buf, size_t n, bool server, const char *sock)
{
	snprintf(buf, n,
		 "--no-huge -m 256 --no-pci --no-telemetry --log-level=*:error "
		 "--file-prefix=kbd%d%c "
		 "--vdev=net_memif0,role=%s,socket=%s,socket-abstract=no,mac=02:00:00:99:00:0%d",
		 (int)getpid(), server ? 's' : 'c', server ? "server" : "client", sock,
		 server ? 1 : 2);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint16_t wait_port_up(void)
{
	struct rte_eth_link link;
	uint64_t deadline = keel_now_ns() + 20000000000ull;
	do {
		if (rte_eth_link_get_nowait(0, &link) == 0 && link.link_status)
			return 0;
	} while (keel_now_ns() < deadline);
	return 1;
}

/* ---- raw memif: the physical limit ------------------------------------ */

static volatile sig_atomic_t g_stop;
static void on_term(int sig)
{
	g_stop = 1;
}

static int raw_setup(bool server, const char *sock, struct rte_mempool **pool)
{
	char eal[512];
	eal_args(eal, sizeof(eal), server, sock);
	char err[KEEL_ERRMSG_LEN];
	if (keel_dpdk_eal_init(eal, err)) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	*pool = rte_pktmbuf_pool_create("raw", 8192, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
	struct rte_eth_conf conf = {0};
	if (!*pool || rte_eth_dev_configure(0, 1, 1, &conf) ||
	    rte_eth_rx_queue_setup(0, 0, 1024, 0, NULL, *pool) ||
	    rte_eth_tx_queue_setup(0, 0, 1024, 0, NULL) || rte_eth_dev_start(0)) {
		fprintf(stderr, "raw memif: port setup failed\n");
		return -1;
	}
	return wait_port_up() ? -1 : 0;
}

/* Server: bounce every frame back (ping-pong) or count them (one-way). */
static int raw_server(const char *sock)
{
	struct rte_mempool *pool;
	pin(0);
	if (raw_setup(true, sock, &pool))
		return 77;
	struct rte_mbuf *b[32];
	while (!g_stop) {
		uint16_t n = rte_eth_rx_burst(0, 0, b, 32);
		if (!n)
			continue;
		/* The first byte after the Ethernet header says: 1 echo, 0 sink. */
		uint16_t echo = 0;
		for (uint16_t i = 0; i < n; i++) {
			if (rte_pktmbuf_mtod_offset(b[i], uint8_t *, 14)[0] == 1)
				b[echo++] = b[i];
			else
				rte_pktmbuf_free(b[i]);
		}
		uint16_t s = 0;
		while (s < echo && !g_stop)
			s = (uint16_t)(s + rte_eth_tx_burst(0, 0, b + s, (uint16_t)(echo - s)));
	}
	return 0;
}

static struct rte_mbuf *raw_frame(struct rte_mempool *pool, uint8_t echo)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (!m)
		return NULL;
	/* 64 B of payload after Ethernet+IPv4+UDP, like keel's 64 B message */
	uint32_t len = 14 + 20 + 8 + 64;
	uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)len);
	memset(p, 0, len);
	p[12] = 0x08;
	p[14] = echo;
	return m;
}

static int raw_client(const char *sock, const struct opts *o, struct result *r)
{
	struct rte_mempool *pool;
	pin(1);
	if (raw_setup(false, sock, &pool))
		return 77;
	uint64_t *rtt = malloc(sizeof(*rtt) * o->rounds);
	struct rte_mbuf *b[32];
	/* warm up, then measure */
	for (unsigned i = 0; i < o->rounds + o->rounds / 10; i++) {
		struct rte_mbuf *m = raw_frame(pool, 1);
		uint64_t t0 = keel_now_ns();
		while (rte_eth_tx_burst(0, 0, &m, 1) == 0)
			;
		uint16_t n;
		uint64_t give_up = t0 + 1000000000ull;
		while ((n = rte_eth_rx_burst(0, 0, b, 32)) == 0)
			if (keel_now_ns() > give_up)
				break;
		uint64_t t1 = keel_now_ns();
		for (uint16_t k = 0; k < n; k++)
			rte_pktmbuf_free(b[k]);
		if (i >= o->rounds / 10)
			rtt[i - o->rounds / 10] = t1 - t0;
	}
	qsort(rtt, o->rounds, sizeof(*rtt), cmp_u64);
	r->p50 = (double)rtt[o->rounds / 2];
	r->p99 = (double)rtt[(size_t)(o->rounds * 0.99)];
	free(rtt);
	/* one-way: bursts of 32 frames as fast as the ring takes them */
	uint64_t sent = 0, t0 = keel_now_ns(), end = t0 + (uint64_t)(o->seconds * 1e9);
	while (keel_now_ns() < end) {
		struct rte_mbuf *burst[32];
		if (rte_pktmbuf_alloc_bulk(pool, burst, 32) != 0)
			continue;
		for (int k = 0; k < 32; k++) {
			uint8_t *p = (uint8_t *)rte_pktmbuf_append(burst[k], 106);
			memset(p, 0, 16);
			p[12] = 0x08;
		}
		uint16_t s = rte_eth_tx_burst(0, 0, burst, 32);
		sent += s;
		for (uint16_t k = s; k < 32; k++)
			rte_pktmbuf_free(burst[k]);
	}
	r->per_s = (double)sent / ((double)(keel_now_ns() - t0) / 1e9);
	r->frames_s = r->per_s;
	r->ok = 1;
	return 0;
}

/* ---- keel dpdk transport ------------------------------------------------ */

struct kstate {
	struct keel_transport *t;
	struct keel_conn *out;
	bool up, got;
	uint64_t count;
	bool fin;
	bool server;
	uint64_t peer_count;
};
static struct kstate ks;

#define T_PING 1
#define T_SINK 2
#define T_FIN 3
#define T_FIN_ACK 4

static void k_up(struct keel_transport *t, struct keel_conn *c)
{
	if (c == ks.out)
		ks.up = true;
}

static void k_send(struct keel_conn *c, uint16_t type, const void *d, uint32_t len)
{
	while (keel_transport_send(c, type, d, len) == KEEL_EFULL)
		keel_transport_poll(ks.t, 64);
}

static void k_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	switch (m->type) {
	case T_PING:
		if (ks.server && ks.out) { /* answer on our own connection to the client */
			struct keel_send_buf *b;
			if (keel_transport_alloc(ks.out, m->len, &b) == 0) {
				memcpy(b->data, m->data, m->len);
				b->len = m->len;
				b->type = T_PING;
				keel_transport_send_buf(ks.out, b);
			}
		}
		ks.got = true;
		break;
	case T_SINK:
		ks.count++;
		break;
	case T_FIN:
		ks.fin = true;
		break;
	case T_FIN_ACK:
		memcpy(&ks.peer_count, m->data, sizeof(ks.peer_count));
		ks.fin = true;
		break;
	}
}

static const struct keel_transport_handlers k_handlers = {
	.on_conn_up = k_up,
	.on_recv = k_recv,
};

static int keel_setup(bool server, const char *sock)
{
	ks.server = server;
	static struct keel_dpdk_config dc;
	keel_dpdk_config_default(&dc);
	char eal[512], err[KEEL_ERRMSG_LEN];
	eal_args(eal, sizeof(eal), server, sock);
	keel_dpdk_config_set(&dc, "eal", eal, NULL);
	keel_dpdk_config_set(&dc, "ip", server ? "10.99.0.1" : "10.99.0.2", NULL);
	keel_dpdk_config_set(&dc, "peer", server ? "2 02:00:00:99:00:02 10.99.0.2" :
					    "1 02:00:00:99:00:01 10.99.0.1", NULL);
	struct keel_transport_config cfg = {
		.cluster_id = 99,
		.self = {server ? 1u : 2u, 0},
		.shards = 1,
		/* both processes share it: the handshake needs a cluster secret */
		.secret = (const uint8_t *)"bench-dpdk-cluster-secret",
		.secret_len = 25,
		.handlers = &k_handlers,
		.backend_arg = &dc,
	};
	keel_log_set_level(KEEL_LOG_WARN);
	if (keel_transport_open("dpdk", &cfg, &ks.t, err)) {
		fprintf(stderr, "bench-transport-dpdk: %s\n", err);
		return -1;
	}
	keel_transport_listen(ks.t);
	uint64_t deadline = keel_now_ns() + 30000000000ull;
	while (!keel_dpdk_link_up(ks.t))
		if (keel_now_ns() > deadline) {
			fprintf(stderr, "bench-transport-dpdk: memif link not up after 30 s\n");
			return -1;
		}
	if (keel_transport_connect(ks.t, (struct keel_addr){server ? 2u : 1u, 0}, &ks.out))
		return -1;
	while (!ks.up) {
		keel_transport_poll(ks.t, 64);
		if (keel_now_ns() > deadline) {
			fprintf(stderr, "bench-transport-dpdk: no handshake after 30 s\n");
			return -1;
		}
	}
	return 0;
}

static int keel_server(const char *sock)
{
	pin(0);
	if (keel_setup(true, sock))
		return 77;
	while (!g_stop) {
		keel_transport_poll(ks.t, 64);
		if (ks.fin) {
			ks.fin = false;
			k_send(ks.out, T_FIN_ACK, &ks.count, sizeof(ks.count));
			ks.count = 0;
		}
	}
	if (getenv("KEEL_BENCH_DEBUG")) {
		struct keel_dpdk_stats st;
		keel_dpdk_get_stats(ks.t, &st);
		fprintf(stderr, "server: rx %" PRIu64 " tx %" PRIu64 " pkts, rx msgs %" PRIu64
			", dups %" PRIu64 " ooo %" PRIu64 " acks %" PRIu64 " imissed %" PRIu64
			" rx_nombuf %" PRIu64 " bad_csum %" PRIu64 " no_mbuf %" PRIu64 "\n",
			st.rx_pkts, st.tx_pkts, st.rx_msgs, st.rel_dups, st.rel_out_of_order,
			st.rel_acks_sent, st.port_imissed, st.port_rx_nombuf, st.bad_csum, st.no_mbuf);
	}
	return 0;
}

static int keel_client(const char *sock, const struct opts *o, struct result *r)
{
	pin(1);
	if (keel_setup(false, sock))
		return 77;
	uint64_t *rtt = malloc(sizeof(*rtt) * o->rounds);
	uint8_t msg[64] = {0};
	for (unsigned i = 0; i < o->rounds + o->rounds / 10; i++) {
		ks.got = false;
		uint64_t t0 = keel_now_ns();
		struct keel_send_buf *b;
		while (keel_transport_alloc(ks.out, sizeof(msg), &b) != 0)
			keel_transport_poll(ks.t, 64);
		memcpy(b->data, msg, sizeof(msg));
		b->len = sizeof(msg);
		b->type = T_PING;
		keel_transport_send_buf(ks.out, b);
		while (!ks.got)
			keel_transport_poll(ks.t, 64);
		uint64_t t1 = keel_now_ns();
		if (i >= o->rounds / 10)
			rtt[i - o->rounds / 10] = t1 - t0;
	}
	qsort(rtt, o->rounds, sizeof(*rtt), cmp_u64);
	r->p50 = (double)rtt[o->rounds / 2];
	r->p99 = (double)rtt[(size_t)(o->rounds * 0.99)];
	free(rtt);
	if (getenv("KEEL_BENCH_DEBUG")) {
		struct keel_dpdk_stats st;
		keel_dpdk_get_stats(ks.t, &st);
		fprintf(stderr, "client after ping-pong: tx %" PRIu64 " rx %" PRIu64
			" pkts, retransmits %" PRIu64 ", rounds %u, acks %" PRIu64 " data %" PRIu64
			" stale %" PRIu64 " dups %" PRIu64 " ooo %" PRIu64 " timeouts %" PRIu64 "\n",
			st.tx_pkts, st.rx_pkts, st.retransmits, o->rounds + o->rounds / 10,
			st.rel_acks_sent, st.rel_data_sent, st.rel_stale, st.rel_dups,
			st.rel_out_of_order, st.rel_timeouts);
	}
	/* one-way 64 B: send while the connection takes them */
	struct keel_dpdk_stats st0;
	keel_dpdk_get_stats(ks.t, &st0);
	uint64_t sent = 0, efull = 0, t0 = keel_now_ns(), end = t0 + (uint64_t)(o->seconds * 1e9);
	while (keel_now_ns() < end) {
		for (int k = 0; k < 256; k++) {
			struct keel_send_buf *b;
			if (keel_transport_alloc(ks.out, 64, &b) != 0) {
				efull++;
				break;
			}
			memcpy(b->data, msg, 64);
			b->len = 64;
			b->type = T_SINK;
			keel_transport_send_buf(ks.out, b);
			sent++;
		}
		keel_transport_poll(ks.t, 64);
	}
	ks.fin = false;
	k_send(ks.out, T_FIN, msg, 8);
	uint64_t deadline = keel_now_ns() + 30000000000ull;
	while (!ks.fin && keel_now_ns() < deadline)
		keel_transport_poll(ks.t, 64);
	double secs = (double)(keel_now_ns() - t0) / 1e9;
	if (!ks.fin || ks.peer_count != sent) {
		fprintf(stderr, "bench-transport-dpdk: server counted %" PRIu64 " of %" PRIu64 "\n",
			ks.peer_count, sent);
		return 1;
	}
	if (getenv("KEEL_BENCH_DEBUG")) {
		struct keel_dpdk_stats st;
		keel_dpdk_get_stats(ks.t, &st);
		fprintf(stderr, "client after one-way: sent %" PRIu64 " msgs, tx %" PRIu64 " rx %" PRIu64
			" pkts, retransmits %" PRIu64 ", acks %" PRIu64 " data %" PRIu64
			" timeouts %" PRIu64 " nombuf %" PRIu64 " efull bursts %" PRIu64
			" tx ring full %" PRIu64 "\n",
			sent, st.tx_pkts, st.rx_pkts, st.retransmits, st.rel_acks_sent,
			st.rel_data_sent, st.rel_timeouts, st.no_mbuf, efull, st.tx_ring_full);
	}
	/* Delivered messages over the time until the last one was counted. */
	r->per_s = (double)ks.peer_count / secs;
	struct keel_dpdk_stats st1;
	keel_dpdk_get_stats(ks.t, &st1);
	r->frames_s = (double)(st1.rel_data_sent - st0.rel_data_sent) / secs;
	r->ok = 1;
	return 0;
}

/* ---- driver --------------------------------------------------------------- */

typedef int (*server_fn)(const char *sock);
typedef int (*client_fn)(const char *sock, const struct opts *o, struct result *r);

static int run_pair(server_fn srv, client_fn cli, const struct opts *o, struct result *r)
{
	char sock[256];
	snprintf(sock, sizeof(sock), "%s/m%u.sock", g_dir, g_run++);
	int pfd[2];
	if (pipe(pfd))
		return -1;
	pid_t ps = fork();
	if (ps == 0) {
		signal(SIGTERM, on_term);
		_exit(srv(sock));
	}
	/* The memif client does not retry a refused connect: start it once
	 * the server's socket exists. */
	for (int i = 0; i < 600 && access(sock, F_OK) != 0; i++)
		usleep(50000);
	pid_t pc = fork();
	if (pc == 0) {
		struct result res = {0};
		int rc = cli(sock, o, &res);
		if (write(pfd[1], &res, sizeof(res)) != sizeof(res))
			rc = 1;
		_exit(rc);
	}
	close(pfd[1]);
	int st;
	waitpid(pc, &st, 0);
	kill(ps, SIGTERM);
	int sst;
	waitpid(ps, &sst, 0);
	memset(r, 0, sizeof(*r));
	ssize_t n = read(pfd[0], r, sizeof(*r));
	close(pfd[0]);
	if (!WIFEXITED(st)) {
		fprintf(stderr, "bench-transport-dpdk: client died (signal %d)\n",
			WIFSIGNALED(st) ? WTERMSIG(st) : 0);
		return -1;
	}
	if (WEXITSTATUS(st) != 0)
		fprintf(stderr, "bench-transport-dpdk: client exit %d\n", WEXITSTATUS(st));
	if (WEXITSTATUS(st) == 77)
		return 77;
	return n == sizeof(*r) && r->ok && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The TCP figure comes from the shared bench-transport, if built here. */
static double tcp_rtt_p50(const char *self, bool quick, char *note, size_t nn)
{
	char cmd[1024], path[512];
	snprintf(path, sizeof(path), "%s", self);
	char *slash = strrchr(path, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(path, sizeof(path), ".");
	snprintf(cmd, sizeof(cmd), "%s/../bench-transport", path);
	if (access(cmd, X_OK) != 0) {
		snprintf(note, nn, "bench/transport/bench-transport not built: no tcp figure");
		return -1;
	}
	snprintf(cmd, sizeof(cmd), "%s/../bench-transport --transport tcp %s 2>/dev/null", path,
		 quick ? "--quick" : "");
	FILE *f = popen(cmd, "r");
	if (!f) {
		snprintf(note, nn, "could not run bench-transport");
		return -1;
	}
	char line[2048];
	double v = -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, "\"case\":\"tcp_rtt_p50_64") )
			continue;
		char *k = strstr(line, "\"keel\":");
		if (k)
			v = strtod(k + 7, NULL);
	}
	pclose(f);
	if (v <= 0)
		snprintf(note, nn, "bench-transport printed no tcp_rtt_p50_64 line");
	return v;
}

static void json(const char *cas, const char *unit, double keel, const char *peer, double pv,
		 const char *better, double target, const char *note)
{
	printf("{\"bench\":\"transport-dpdk\",\"case\":\"%s\",\"unit\":\"%s\",\"keel\":%.1f", cas,
	       unit, keel);
	if (peer) {
		printf(",\"peer\":\"%s\"", peer);
		if (pv > 0) {
			double ratio = keel / pv;
			bool meets = !strcmp(better, "lower") ? ratio <= target : ratio >= target;
			printf(",\"peer_value\":%.1f,\"ratio\":%.3f,\"better\":\"%s\",\"target\":%g,"
			       "\"meets\":%s",
			       pv, ratio, better, target, meets ? "true" : "false");
		} else {
			printf(",\"peer_value\":null,\"better\":\"%s\",\"target\":%g,\"note\":\"%s\"",
			       better, target, note ? note : "");
		}
	}
	printf("}\n");
}

int main(int argc, char **argv)
{
	struct opts o = {.rounds = 100000, .seconds = 3.0, .reps = 3};
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			o.quick = true;
			o.rounds = 5000;
			o.seconds = 0.5;
			o.reps = 1;
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			o.rounds = (unsigned)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			o.seconds = strtod(argv[++i], NULL);
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			o.reps = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: bench-transport-dpdk [--quick] [--rounds N] "
					"[--seconds S] [--reps N]\n");
			return 2;
		}
	}
	if (o.rounds < 100)
		o.rounds = 100;
	if (o.reps < 1 || o.reps > 15)
		o.reps = 3;
	snprintf(g_dir, sizeof(g_dir), "/tmp/keel-bench-dpdk.XXXXXX");
	if (!mkdtemp(g_dir))
		return 1;
	double rp50[15], rp99[15], rps[15], kp50[15], kp99[15], kps[15], kfs[15];
	for (int rep = 0; rep < o.reps; rep++) {
		struct result r;
		int rc = run_pair(raw_server, raw_client, &o, &r);
		if (rc == 77) {
			printf("bench-transport-dpdk: SKIP: DPDK net_memif could not start here\n");
			rmdir(g_dir);
			return 77;
		}
		if (rc) {
			fprintf(stderr, "bench-transport-dpdk: raw memif run failed\n");
			return 1;
		}
		rp50[rep] = r.p50, rp99[rep] = r.p99, rps[rep] = r.per_s;
		if (run_pair(keel_server, keel_client, &o, &r)) {
			fprintf(stderr, "bench-transport-dpdk: keel dpdk run failed\n");
			return 1;
		}
		kp50[rep] = r.p50, kp99[rep] = r.p99, kps[rep] = r.per_s, kfs[rep] = r.frames_s;
	}
	char sock_dir_rm[160];
	snprintf(sock_dir_rm, sizeof(sock_dir_rm), "rm -rf %s", g_dir);
	if (system(sock_dir_rm) != 0)
		fprintf(stderr, "bench-transport-dpdk: could not remove %s\n", g_dir);
	double r50 = median(rp50, o.reps), r99 = median(rp99, o.reps), rs = median(rps, o.reps);
	double k50 = median(kp50, o.reps), k99 = median(kp99, o.reps), kss = median(kps, o.reps);
	double kfr = median(kfs, o.reps);
	char note[256] = "";
	double tcp = tcp_rtt_p50(argv[0], o.quick, note, sizeof(note));

	printf("bench-transport-dpdk: net_memif between two processes, 64 B, %u round trips, "
	       "%.1fs one-way, %d rep(s), medians\n\n", o.rounds, o.seconds, o.reps);
	printf("%-26s %12s %12s %16s %16s\n", "", "rtt p50 ns", "rtt p99 ns", "one-way msg/s",
	       "one-way frames/s");
	printf("%-26s %12.0f %12.0f %16.0f %16.0f\n", "raw memif (no protocol)", r50, r99, rs, rs);
	printf("%-26s %12.0f %12.0f %16.0f %16.0f\n", "keel dpdk", k50, k99, kss, kfr);
	if (tcp > 0)
		printf("%-26s %12.0f %12s %16s %16s\n", "keel tcp (bench-transport)", tcp, "-", "-",
		       "-");
	char tcpr[32] = "n/a";
	if (tcp > 0)
		snprintf(tcpr, sizeof(tcpr), "%.4fx", k50 / tcp);
	printf("\nkeel/raw rtt p50 %.2fx (target <= 2), keel dpdk/tcp rtt p50 %s (target <= 0.1), "
	       "one-way %.2f M msg/s (goal >= 5 M per shard) in %.2f M frames/s, "
	       "%.1f msg/frame\n\n",
	       k50 / r50, tcpr, kss / 1e6, kfr / 1e6, kfr > 0 ? kss / kfr : 0.0);
	json("rtt_p50_64B", "ns", k50, "raw-memif", r50, "lower", 2.0, NULL);
	json("rtt_p99_64B", "ns", k99, "raw-memif", r99, "lower", 2.0, NULL);
	json("rtt_p50_64B_vs_tcp", "ns", k50, "keel-tcp", tcp, "lower", 0.1, note);
	json("oneway_64B_msgs_per_s", "msg/s", kss, "raw-memif", rs, "higher", 1.0, NULL);
	json("oneway_64B_frames_per_s", "frames/s", kfr, NULL, 0, NULL, 0, NULL);
	json("oneway_64B_msgs_per_frame", "msg/frame", kfr > 0 ? kss / kfr : 0.0, NULL, 0, NULL,
	     0, NULL);
	printf("{\"bench\":\"transport-dpdk\",\"case\":\"oneway_64B_msgs_per_s_goal\",\"unit\":\"msg/s\","
	       "\"keel\":%.1f,\"goal\":5000000,\"meets\":%s}\n",
	       kss, kss >= 5e6 ? "true" : "false");
	return 0;
}
