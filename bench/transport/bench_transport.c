/*
 * bench-transport: keel's transport backends against sockperf on loopback.
 *
 * For each backend of the registry that crosses a real network (sim is
 * skipped: its time is virtual), in the same run as sockperf:
 *   - ping-pong RTT p50/p99/p99.9 for 64 B, 1 KiB and 65000 B messages
 *     (sockperf ping-pong --tcp --full-rtt, same sizes; 65000 B stands for
 *     64 KiB because sockperf's largest message is 65507 B);
 *   - one-way messages/s for 64 B (sockperf throughput --tcp -m 64). keel's
 *     figure is end to end: from the first send until the receiver has
 *     counted the last message and said so; sockperf's is its sender's rate.
 * The server side runs in a child process on CPU 1, the client on CPU 0
 * (sockperf likewise, through taskset). Both sleep in the kernel when idle
 * (keel: in its reactor, sockperf: blocking recvfrom) unless --poll is
 * given, which busy-polls keel's reactors only (sockperf has no equivalent
 * mode). Rounds alternate keel and sockperf (A B A B ...) and the JSON lines
 * report medians over rounds. Output as /work/shared/BENCH.md describes.
 *
 * Reactors: by default keel runs on io_uring and on epoll (both sides of
 * keel on the same one; rounds alternate io_uring, epoll, sockperf), each
 * is compared with sockperf, and the run ends with the epoll fallback's
 * cost as a ratio to io_uring (issue 15's target: RTT p50 with
 * epoll <= 1.2x io_uring). --reactor io_uring|epoll runs one of them.
 *
 * TLS (issue 18): then keel tcp over TLS 1.3 ([tls] with certificates that
 * `openssl req` makes for the run) against keel tcp without TLS, both on
 * io_uring, rounds alternating; the ratio is the cost of TLS (user-space
 * TLS: this machine's kernel has no kTLS). --no-tls skips it; without the
 * openssl command the lines say peer_value null with the reason.
 *
 * usage: bench-transport [--quick] [--transport NAME] [--rounds N] [--poll]
 *                        [--size 64|1024|65000] [--reactor io_uring|epoll|both]
 *                        [--no-tls] [--skip NAME]
 * --skip leaves one backend out (the smoke run skips dpdk, whose own program
 * bench-transport-dpdk has its own smoke run).
 * --size runs the ping-pong of that size only (no one-way), for profiling.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"
#include "keel_config.h"
#if KEEL_HAVE_RDMA
#include <infiniband/verbs.h>
#endif

enum { T_PING = 1, T_DATA = 2, T_DONE = 3, T_REPORT = 4 };

#define NSIZES 3
/* The "64 KiB" case is 65000 B: sockperf refuses messages above 65507 B. */
static const uint32_t sizes[NSIZES] = {64, 1024, 65000};
static const char *size_names[NSIZES] = {"64B", "1KiB", "65000B"};

struct opts {
	bool quick, poll;
	const char *only;
	const char *skip; /* --skip NAME: every backend but this one */
	unsigned rounds;
	unsigned size_mask;  /* ping-pong sizes to run (bit i: sizes[i]) */
	unsigned samples;   /* most RTT samples per size */
	double pp_secs;     /* ping-pong time per size, as sockperf -t */
	uint64_t oneway_msgs;
	unsigned sockperf_secs;
	int cpus;
	enum keel_reactor_kind reactor; /* the one this pass runs */
	bool reactors[3];               /* by keel_reactor_kind: run it */
};

struct figures {
	double p50[NSIZES], p99[NSIZES], p999[NSIZES]; /* ns */
	double oneway;                                /* msgs/s */
	bool ok;
};

static char dir[64];
static bool use_tls; /* load_config writes a [tls] section (certificates in dir) */

/* Backends this bench knows how to set up with the generic [node] config
 * written below. A backend that needs more (dpdk: EAL arguments, devices,
 * its raw-memif peer) adds its mode here; until then it is listed as
 * skipped, not failed. */
static const char *const bench_ready[] = {"tcp", NULL};

static bool ready(const char *name)
{
	for (const char *const *b = bench_ready; *b; b++)
		if (!strcmp(*b, name))
			return true;
	return false;
}

/* ---- configuration ---------------------------------------------------- */

static int write_file(const char *name, const char *text, mode_t mode)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, mode);
	if (fd < 0)
		return -errno;
	size_t n = strlen(text);
	int rc = write(fd, text, n) == (ssize_t)n ? 0 : -EIO;
	close(fd);
	return rc;
}

static int load_config(unsigned node, const char *transport, unsigned base,
		       struct keel_node_config *cfg)
{
	char text[640], name[32], err[KEEL_ERRMSG_LEN];
	int n = snprintf(text, sizeof(text),
			 "[node]\nid = %u\ncluster = 99\nlisten = 127.0.0.1:%u\nshards = 1\n"
			 "transport = %s\nsecret_file = secret\n"
			 "[peers]\n1 = 127.0.0.1:%u\n2 = 127.0.0.1:%u\n",
			 node, base + node * 10, transport, base + 10, base + 20);
	if (use_tls)
		snprintf(text + n, sizeof(text) - (size_t)n,
			 "[tls]\ncert = n%u.crt\nkey = n%u.key\nca = ca.crt\n", node, node);
	/* one file per node and port base: the servers of both reactors are
	 * forked at once and must not read each other's file */
	snprintf(name, sizeof(name), "n%u-%s-%u.ini", node, transport, base);
	write_file(name, text, 0600);
	char p[128];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int rc = keel_node_config_load(p, cfg, err);
	if (rc < 0)
		fprintf(stderr, "bench-transport: %s\n", err);
	return rc;
}

/* ---- server (child process) -------------------------------------------- */

struct server {
	struct keel_node_config cfg;
	struct keel_transport *t;
	uint64_t count;
};

static void srv_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct server *s = t->user;
	if (m->type == T_DATA) {
		s->count++;
	} else if (m->type == T_PING) {
		/* Echo the lent bytes, as sockperf's server sends back what it
		 * received. */
		keel_transport_send(c, T_PING, m->data, m->len);
	} else if (m->type == T_DONE) {
		keel_transport_send(c, T_REPORT, &s->count, sizeof(s->count));
		s->count = 0;
	}
}

static const struct keel_transport_handlers srv_handlers = {.on_recv = srv_recv};

static void srv_init(struct keel_shard *shard, void *arg)
{
	struct server *s = arg;
	struct keel_transport_config tc;
	char err[KEEL_ERRMSG_LEN];
	keel_node_config_transport(&s->cfg, 0, &tc);
	tc.shards = 1;
	tc.handlers = &srv_handlers;
	tc.user = s;
	tc.shard = shard;
	if (keel_transport_open(s->cfg.transport, &tc, &s->t, err) < 0 ||
	    keel_transport_listen(s->t) < 0) {
		fprintf(stderr, "bench-transport server: %s\n", s->t ? s->t->errmsg : err);
		keel_runtime_stop(keel_shard_runtime(shard));
	}
}

static void srv_fini(struct keel_shard *shard, void *arg)
{
	struct server *s = arg;
	keel_transport_close(s->t);
}

static int run_server(const char *transport, unsigned base, const struct opts *o)
{
	struct server s = {0};
	if (load_config(1, transport, base, &s.cfg) < 0)
		return 1;
	struct keel_runtime_config rc = {.nshards = 1, .cpuset = o->cpus > 1 ? "1" : NULL,
					 .idle = o->poll ? KEEL_IDLE_BUSY_POLL : KEEL_IDLE_SLEEP,
					 .node_id = 1, .overcommit = true, .reactor = o->reactor};
	struct keel_runtime *rt;
	char err[KEEL_ERRMSG_LEN];
	if (keel_runtime_create(&rc, &rt, err) < 0) {
		fprintf(stderr, "bench-transport server: %s\n", err);
		return 1;
	}
	keel_runtime_stop_on_signals(rt);
	keel_runtime_run(rt, srv_init, srv_fini, &s);
	keel_runtime_destroy(rt);
	keel_node_config_free(&s.cfg);
	return 0;
}

/* ---- client ------------------------------------------------------------- */

struct client {
	const struct opts *o;
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct keel_transport *t;
	struct keel_conn *c;
	int phase; /* 0..NSIZES-1 ping-pong, NSIZES one-way */
	unsigned n, warmup;
	uint64_t *samples;
	uint64_t t_sent;
	uint64_t t_phase_end;
	uint64_t sent, t0;
	bool done_sent;
	struct figures *f;
	int failed;
	struct keel_timer deadline;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, unsigned n, double p)
{
	unsigned i = (unsigned)(p / 100.0 * (n - 1) + 0.5);
	return (double)v[i < n ? i : n - 1];
}

/* The ping's payload, filled once, as sockperf's client sends the same
 * message buffer every time. */
static uint8_t ping_payload[65000];

static void send_ping(struct client *cl)
{
	uint32_t len = sizes[cl->phase];
	cl->t_sent = keel_now_ns();
	if (keel_transport_send(cl->c, T_PING, ping_payload, len) < 0) {
		cl->failed = 1;
		keel_runtime_stop(cl->rt);
	}
}

static void pump(struct client *cl)
{
	static const uint8_t msg[64] = {1};
	while (cl->sent < cl->o->oneway_msgs) {
		if (keel_transport_send(cl->c, T_DATA, msg, sizeof(msg)) < 0)
			return; /* KEEL_EFULL: on_writable resumes */
		cl->sent++;
	}
	if (!cl->done_sent && keel_transport_send(cl->c, T_DONE, NULL, 0) == 0)
		cl->done_sent = true;
}

static void start_phase(struct client *cl)
{
	while (cl->phase < NSIZES && !(cl->o->size_mask & (1u << cl->phase)))
		cl->phase++;
	if (cl->phase < NSIZES) {
		cl->n = 0;
		cl->warmup = 100;
		cl->t_phase_end = keel_now_ns() + (uint64_t)(cl->o->pp_secs * 1e9);
		send_ping(cl);
	} else if (cl->phase == NSIZES && cl->o->oneway_msgs) {
		cl->sent = 0;
		cl->done_sent = false;
		cl->t0 = keel_now_ns();
		pump(cl);
	} else {
		cl->f->ok = true;
		keel_runtime_stop(cl->rt);
	}
}

static void cl_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct client *cl = t->user;
	if (m->type == T_PING && cl->phase < NSIZES) {
		uint64_t rtt = keel_now_ns() - cl->t_sent;
		if (cl->warmup) {
			cl->warmup--;
		} else {
			cl->samples[cl->n++] = rtt;
		}
		if (cl->n < cl->o->samples && (cl->n < 100 || keel_now_ns() < cl->t_phase_end)) {
			send_ping(cl);
			return;
		}
		qsort(cl->samples, cl->n, sizeof(uint64_t), cmp_u64);
		cl->f->p50[cl->phase] = pct(cl->samples, cl->n, 50);
		cl->f->p99[cl->phase] = pct(cl->samples, cl->n, 99);
		cl->f->p999[cl->phase] = pct(cl->samples, cl->n, 99.9);
		cl->phase++;
		start_phase(cl);
	} else if (m->type == T_REPORT && cl->phase == NSIZES) {
		uint64_t got;
		memcpy(&got, m->data, sizeof(got));
		double secs = (double)(keel_now_ns() - cl->t0) / 1e9;
		cl->f->oneway = got == cl->sent ? (double)got / secs : 0;
		if (got != cl->sent)
			fprintf(stderr, "bench-transport: server counted %llu of %llu messages\n",
				(unsigned long long)got, (unsigned long long)cl->sent);
		cl->phase++;
		start_phase(cl);
	}
}

static void cl_up(struct keel_transport *t, struct keel_conn *c)
{
	start_phase(t->user);
}

static void cl_writable(struct keel_transport *t, struct keel_conn *c)
{
	struct client *cl = t->user;
	if (cl->phase == NSIZES)
		pump(cl);
}

static void cl_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct client *cl = t->user;
	if (!cl->f->ok) {
		fprintf(stderr, "bench-transport: connection lost: %s (%s)\n", keel_strerror(reason),
			t->errmsg);
		cl->failed = 1;
		keel_runtime_stop(cl->rt);
	}
}

static const struct keel_transport_handlers cl_handlers = {
	.on_conn_up = cl_up, .on_recv = cl_recv, .on_conn_down = cl_down,
	.on_writable = cl_writable};

static void cl_deadline(struct keel_timer *tm)
{
	struct client *cl = tm->arg;
	fprintf(stderr, "bench-transport: client timed out in phase %d\n", cl->phase);
	cl->failed = 1;
	keel_runtime_stop(cl->rt);
}

static void cl_init(struct keel_shard *shard, void *arg)
{
	struct client *cl = arg;
	struct keel_transport_config tc;
	char err[KEEL_ERRMSG_LEN];
	keel_node_config_transport(&cl->cfg, 0, &tc);
	tc.shards = 1;
	tc.handlers = &cl_handlers;
	tc.user = cl;
	tc.shard = shard;
	keel_timer_init(&cl->deadline, cl_deadline, cl);
	keel_timer_arm(shard, &cl->deadline, 600ull * 1000000000u);
	if (keel_transport_open(cl->cfg.transport, &tc, &cl->t, err) < 0) {
		fprintf(stderr, "bench-transport client: %s\n", err);
		cl->failed = 2; /* not worth a retry */
		keel_runtime_stop(keel_shard_runtime(shard));
	} else if (keel_transport_connect(cl->t, (struct keel_addr){.node = 1, .shard = 0}, &cl->c) < 0) {
		fprintf(stderr, "bench-transport client: %s\n", cl->t->errmsg);
		cl->failed = 2;
		keel_runtime_stop(keel_shard_runtime(shard));
	}
}

static void cl_fini(struct keel_shard *shard, void *arg)
{
	struct client *cl = arg;
	keel_timer_cancel(shard, &cl->deadline);
	keel_transport_close(cl->t);
}

static int run_client(const char *transport, unsigned base, const struct opts *o,
		      struct figures *f)
{
	struct client cl = {.o = o, .f = f};
	memset(ping_payload, 0x5a, sizeof(ping_payload));
	memset(f, 0, sizeof(*f));
	if (load_config(2, transport, base, &cl.cfg) < 0)
		return -1;
	cl.samples = calloc(o->samples, sizeof(uint64_t));
	struct keel_runtime_config rc = {.nshards = 1, .cpuset = o->cpus > 1 ? "0" : NULL,
					 .idle = o->poll ? KEEL_IDLE_BUSY_POLL : KEEL_IDLE_SLEEP,
					 .node_id = 2, .overcommit = true, .reactor = o->reactor};
	char err[KEEL_ERRMSG_LEN];
	int rc2 = keel_runtime_create(&rc, &cl.rt, err);
	if (rc2 < 0) {
		fprintf(stderr, "bench-transport: %s\n", err);
	} else {
		/* The server may still be starting: retry the connection. */
		for (int attempt = 0; attempt < 50; attempt++) {
			cl.failed = 0;
			cl.t = NULL;
			cl.c = NULL;
			cl.phase = 0;
			rc2 = keel_runtime_run(cl.rt, cl_init, cl_fini, &cl);
			if (!cl.failed || cl.failed == 2 || f->ok || attempt == 49)
				break;
			keel_runtime_destroy(cl.rt);
			usleep(100000);
			if (keel_runtime_create(&rc, &cl.rt, err) < 0)
				break;
		}
		keel_runtime_destroy(cl.rt);
	}
	free(cl.samples);
	keel_node_config_free(&cl.cfg);
	return f->ok ? 0 : -1;
}

/* ---- sockperf ------------------------------------------------------------ */

static bool have_sockperf(void)
{
	return system("command -v sockperf >/dev/null 2>&1") == 0;
}

/* Runs cmd, returns its stdout+stderr (malloc'd) or NULL. */
static char *run_capture(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	if (!p)
		return NULL;
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
		len += n;
		if (cap - len < 4096) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	buf[len] = '\0';
	pclose(p);
	return buf;
}

static double find_value(const char *out, const char *key)
{
	const char *s = out ? strstr(out, key) : NULL;
	if (!s)
		return -1;
	s += strlen(key);
	while (*s == ' ' || *s == '=')
		s++;
	return strtod(s, NULL);
}

static int sockperf_round(unsigned port, const struct opts *o, struct figures *f)
{
	memset(f, 0, sizeof(*f));
	char cmd[512];
	const char *srv_cpu = o->cpus > 1 ? "taskset -c 1 " : "";
	const char *cl_cpu = o->cpus > 1 ? "taskset -c 0 " : "";
	snprintf(cmd, sizeof(cmd), "%ssockperf server -i 127.0.0.1 -p %u --tcp >/dev/null 2>&1 & echo $!",
		 srv_cpu, port);
	char *pid_s = run_capture(cmd);
	pid_t pid = pid_s ? (pid_t)atoi(pid_s) : 0;
	free(pid_s);
	if (pid <= 0)
		return -1;
	usleep(300000);
	for (int i = 0; i < NSIZES; i++) {
		if (!(o->size_mask & (1u << i)))
			continue;
		snprintf(cmd, sizeof(cmd),
			 "%ssockperf ping-pong -i 127.0.0.1 -p %u --tcp -m %u -t %u --full-rtt 2>&1",
			 cl_cpu, port, sizes[i], o->sockperf_secs);
		char *out = run_capture(cmd);
		f->p50[i] = find_value(out, "percentile 50.000") * 1000.0;
		f->p99[i] = find_value(out, "percentile 99.000") * 1000.0;
		f->p999[i] = find_value(out, "percentile 99.900") * 1000.0;
		free(out);
	}
	if (o->oneway_msgs) {
		snprintf(cmd, sizeof(cmd),
			 "%ssockperf throughput -i 127.0.0.1 -p %u --tcp -m 64 -t %u 2>&1", cl_cpu,
			 port, o->sockperf_secs);
		char *out = run_capture(cmd);
		f->oneway = find_value(out, "Message Rate is");
		free(out);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0); /* not our child (the shell's); harmless */
	f->ok = f->oneway > 0 || !o->oneway_msgs;
	for (int i = 0; i < NSIZES; i++)
		if ((o->size_mask & (1u << i)) && !(f->p50[i] > 0))
			f->ok = false;
	return f->ok ? 0 : -1;
}

/* ---- reporting ------------------------------------------------------------ */

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	if (!n)
		return -1;
	qsort(v, n, sizeof(double), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Median of one field over rounds (offset into struct figures). */
static double med(const struct figures *r, unsigned n, size_t off)
{
	double v[64];
	unsigned k = 0;
	for (unsigned i = 0; i < n && k < 64; i++)
		if (r[i].ok)
			v[k++] = *(const double *)((const char *)&r[i] + off);
	return median(v, k);
}

static const char *json_suffix = ""; /* "_epoll" on the epoll pass */

static void json_line(const char *backend, const char *cs, const char *unit, double keel,
		      const char *peer, double peer_v, const char *better, double target,
		      const char *note)
{
	printf("{\"bench\":\"transport\",\"case\":\"%s_%s%s\",\"unit\":\"%s\",\"keel\":%.1f",
	       backend, cs, json_suffix, unit, keel);
	if (peer_v > 0) {
		double ratio = keel / peer_v;
		printf(",\"peer\":\"%s\",\"peer_value\":%.1f,\"ratio\":%.3f,\"better\":\"%s\"", peer,
		       peer_v, ratio, better);
		if (target > 0) {
			bool meets = !strcmp(better, "lower") ? ratio <= target : ratio >= target;
			printf(",\"target\":%.2f,\"meets\":%s", target, meets ? "true" : "false");
		}
	} else {
		printf(",\"peer\":\"%s\",\"peer_value\":null,\"better\":\"%s\"", peer, better);
		if (note)
			printf(",\"note\":\"%s\"", note);
	}
	printf("}\n");
}

/* --transport rdma. The figures (RTT p50/p99 against perftest's
 * ib_write_lat on the same device, 64 B messages/s) need a device; without
 * one every line says why, with "keel":null, and nothing is claimed. */
static void bench_rdma(void)
{
	static const char *const cases[] = {"rtt_p50_ns", "rtt_p99_ns", "msgs_per_s_64B"};
	static const char *const units[] = {"ns", "ns", "msgs/s"};
	const char *note;
#if KEEL_HAVE_RDMA
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);
	if (l)
		ibv_free_device_list(l);
	note = !l || n == 0
		       ? "skipped: no RDMA device (ibv_get_device_list found none; this kernel has no "
			 "rdma_rxe or siw); the backend ran only on emulated verbs (tests/unit/rdma)"
		       : "skipped: a device is present but this bench's rdma round trip and its "
			 "ib_write_lat run are not written yet";
#else
	note = "skipped: this build has no rdma backend (-Drdma, libibverbs)";
#endif
	printf("rdma: %s\n", note);
	for (int i = 0; i < 3; i++)
		printf("{\"bench\":\"transport\",\"case\":\"rdma_%s\",\"unit\":\"%s\",\"keel\":null,"
		       "\"peer\":\"%s\",\"peer_value\":null,\"better\":\"%s\",\"note\":\"%s\"}\n",
		       cases[i], units[i], i < 2 ? "ib_write_lat" : "ib_write_bw",
		       i < 2 ? "lower" : "higher", note);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench-transport [--quick] [--transport NAME] [--rounds N] [--poll]\n"
		   "                       [--size 64|1024|65000] [--reactor io_uring|epoll|both]\n"
		   "                       [--no-tls] [--skip NAME]\n");
}

/* A CA and a certificate per node (1 and 2) in dir, made with the openssl
 * command; false (and why in *why) when that fails. */
static bool make_certs(const char **why)
{
	if (system("command -v openssl >/dev/null 2>&1") != 0) {
		*why = "the openssl command is not installed";
		return false;
	}
	char cmd[1400];
	snprintf(cmd, sizeof(cmd),
		 "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca >/dev/null 2>&1 && "
		 "for n in 1 2; do openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-keyout n$n.key -out n$n.csr -subj /CN=node$n >/dev/null 2>&1 && "
		 "openssl x509 -req -in n$n.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
		 "-out n$n.crt -days 2 >/dev/null 2>&1 || exit 1; done && chmod 600 *.key",
		 dir);
	if (system(cmd) != 0) {
		*why = "openssl req failed to make the certificates";
		return false;
	}
	return true;
}

/* keel tcp over TLS against keel tcp without it, on io_uring, rounds
 * alternating; the peer of every line is keel's own plain TCP. */
static int tls_pass(struct opts *o, unsigned base)
{
	const char *why = NULL;
	bool have = make_certs(&why);
	int status = 0;
	o->reactor = o->reactors[KEEL_REACTOR_IO_URING] ? KEEL_REACTOR_IO_URING : KEEL_REACTOR_EPOLL;
	static struct figures tr[64], pr[64];
	unsigned nt = 0, np = 0;
	pid_t srv[2] = {0};
	if (have) {
		fflush(stdout);
		for (int k = 0; k < 2; k++) {
			use_tls = k == 1;
			srv[k] = fork();
			if (srv[k] == 0)
				_exit(run_server("tcp", base + 100 * (unsigned)k, o));
		}
		use_tls = false;
		usleep(300000);
		for (unsigned r = 0; r < o->rounds; r++) {
			use_tls = false;
			if (run_client("tcp", base, o, &pr[np]) == 0)
				np++;
			else
				status = 1;
			use_tls = true;
			if (run_client("tcp", base + 100, o, &tr[nt]) == 0)
				nt++;
			else
				status = 1;
		}
		use_tls = false;
		for (int k = 0; k < 2; k++) {
			kill(srv[k], SIGTERM);
			waitpid(srv[k], NULL, 0);
		}
	}
	printf("\ntcp over TLS 1.3 (user-space TLS, mutual certificates) against tcp without "
	       "TLS, %s reactor:\n", keel_reactor_name(o->reactor));
	if (!have)
		printf("  skipped: %s\n", why);
	printf("\n%-6s %-22s %12s %12s %8s\n", "tls", "figure", "tcp+tls", "tcp", "ratio");
	const char *peer = "keel tcp without TLS";
	for (int i = 0; i < NSIZES; i++) {
		if (!(o->size_mask & (1u << i)))
			continue;
		for (int k = 0; k < 2; k++) {
			size_t off = (k ? offsetof(struct figures, p99) : offsetof(struct figures, p50)) +
				     (size_t)i * sizeof(double);
			double tv = nt ? med(tr, nt, off) : -1, pv = np ? med(pr, np, off) : -1;
			char label[32], cs[64];
			snprintf(label, sizeof(label), "rtt %s %s (us)", k ? "p99" : "p50", size_names[i]);
			if (nt && np)
				printf("%-6s %-22s %12.1f %12.1f %8.2f\n", "", label, tv / 1000, pv / 1000,
				       pv > 0 ? tv / pv : 0);
			snprintf(cs, sizeof(cs), "tls_vs_plain_rtt_%s_%s_ns", k ? "p99" : "p50",
				 size_names[i]);
			json_line("tcp", cs, "ns", tv > 0 ? tv : 0, peer, nt && np ? pv : -1, "lower",
				  0, have ? "a TLS or plain round failed" : why);
		}
	}
	if (o->oneway_msgs) {
		size_t off = offsetof(struct figures, oneway);
		double tv = nt ? med(tr, nt, off) : -1, pv = np ? med(pr, np, off) : -1;
		if (nt && np)
			printf("%-6s %-22s %12.0f %12.0f %8.2f\n", "", "one-way 64B (msg/s)", tv, pv,
			       pv > 0 ? tv / pv : 0);
		json_line("tcp", "tls_vs_plain_oneway_64B_msgs_per_s", "msg/s", tv > 0 ? tv : 0, peer,
			  nt && np ? pv : -1, "higher", 0, have ? "a TLS or plain round failed" : why);
	}
	return status;
}

int main(int argc, char **argv)
{
	struct opts o = {.rounds = 3, .samples = 1000000, .pp_secs = 4, .oneway_msgs = 1000000,
			 .sockperf_secs = 4, .size_mask = (1u << NSIZES) - 1,
			 .reactors = {[KEEL_REACTOR_IO_URING] = true, [KEEL_REACTOR_EPOLL] = true}};
	bool no_tls = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			o.quick = true;
			o.rounds = 1;
			o.pp_secs = 1;
			o.oneway_msgs = 100000;
			o.sockperf_secs = 1;
		} else if (!strcmp(argv[i], "--poll")) {
			o.poll = true;
		} else if (!strcmp(argv[i], "--transport") && i + 1 < argc) {
			o.only = argv[++i];
		} else if (!strcmp(argv[i], "--skip") && i + 1 < argc) {
			o.skip = argv[++i];
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			o.rounds = (unsigned)atoi(argv[++i]);
			if (o.rounds < 1 || o.rounds > 64)
				o.rounds = 3;
		} else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			unsigned v = (unsigned)atoi(argv[++i]);
			o.size_mask = 0;
			for (int k = 0; k < NSIZES; k++)
				if (sizes[k] == v)
					o.size_mask = 1u << k;
			if (!o.size_mask) {
				usage(stderr);
				return 2;
			}
			o.oneway_msgs = 0;
		} else if (!strcmp(argv[i], "--reactor") && i + 1 < argc) {
			enum keel_reactor_kind k;
			const char *v = argv[++i];
			if (!strcmp(v, "both")) {
				o.reactors[KEEL_REACTOR_IO_URING] = o.reactors[KEEL_REACTOR_EPOLL] = true;
			} else if (keel_reactor_parse(v, &k) == 0 && k != KEEL_REACTOR_AUTO) {
				o.reactors[KEEL_REACTOR_IO_URING] = o.reactors[KEEL_REACTOR_EPOLL] = false;
				o.reactors[k] = true;
			} else {
				usage(stderr);
				return 2;
			}
		} else if (!strcmp(argv[i], "--no-tls")) {
			no_tls = true;
		} else if (!strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	keel_log_set_level(KEEL_LOG_WARN);
	keel_log_init_from_env();
	o.cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	snprintf(dir, sizeof(dir), "/tmp/keel-bench-transport.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	char secret[65];
	uint8_t raw[32];
	FILE *ur = fopen("/dev/urandom", "r");
	if (!ur || fread(raw, 1, sizeof(raw), ur) != sizeof(raw))
		return 1;
	fclose(ur);
	for (int i = 0; i < 32; i++)
		snprintf(secret + 2 * i, 3, "%02x", raw[i]);
	write_file("secret", secret, 0600);

	bool sp = have_sockperf();
	/* below the ephemeral range (32768+), as the tests */
	unsigned base = 2000 + (unsigned)(getpid() % 900) * 30; /* + 200 for the reactors */
	int status = 0;
	printf("bench-transport: %s run, %u round(s), ping-pong %.0f s per size (keel and sockperf), "
	       "%llu one-way messages, idle mode %s, reactor %s\n",
	       o.quick ? "quick" : "full", o.rounds, o.pp_secs, (unsigned long long)o.oneway_msgs,
	       o.poll ? "busy-poll (keel only)" : "sleep (keel: in its reactor, sockperf: recvfrom)",
	       o.reactors[KEEL_REACTOR_IO_URING] && o.reactors[KEEL_REACTOR_EPOLL]
		       ? "io_uring, then epoll"
		       : o.reactors[KEEL_REACTOR_EPOLL] ? "epoll" : "io_uring");
	/* keel's medians per reactor, for the epoll / io_uring ratio */
	double kmed[3][NSIZES][2];
	double kone[3];
	bool kran[3] = {false};
	for (const struct keel_transport_ops *const *b = keel_transport_registry(); *b; b++) {
		const struct keel_transport_ops *ops = *b;
		if ((o.only && strcmp(o.only, ops->name)) || (o.skip && !strcmp(o.skip, ops->name)))
			continue;
		if (ops->caps & KEEL_TRANSPORT_SIMULATED) {
			printf("%s: skipped (simulated backend, virtual time)\n", ops->name);
			continue;
		}
		if (!strcmp(ops->name, "dpdk")) { /* its own program: memif peers, raw-memif peer */
			char cmd[1200];
			snprintf(cmd, sizeof(cmd), "exec \"$(dirname '%s')/dpdk/bench-transport-dpdk\"%s",
				 argv[0], o.quick ? " --quick" : "");
			fflush(stdout);
			int rc = system(cmd);
			if (rc != 0 && !(WIFEXITED(rc) && WEXITSTATUS(rc) == 77))
				status = 1;
			continue;
		}
		if (!strcmp(ops->name, "rdma")) {
			fflush(stdout);
			bench_rdma();
			continue;
		}
		if (!ready(ops->name)) {
			printf("%s: skipped (this bench has no setup for it yet)\n", ops->name);
			continue;
		}
		/* One server per reactor (ports 100 apart), and rounds that
		 * alternate the reactors and sockperf (io_uring, epoll,
		 * sockperf, io_uring, ...), so that the machine's drift during
		 * the run weighs on all three alike. */
		fflush(stdout);
		pid_t srv[3] = {0};
		for (int rk = KEEL_REACTOR_IO_URING; rk <= KEEL_REACTOR_EPOLL; rk++) {
			if (!o.reactors[rk])
				continue;
			o.reactor = (enum keel_reactor_kind)rk;
			srv[rk] = fork();
			if (srv[rk] == 0)
				_exit(run_server(ops->name, base + 100 * (unsigned)rk, &o));
		}
		usleep(300000); /* let them listen; the client retries anyway */
		static struct figures krs[3][64], pr[64];
		unsigned nks[3] = {0}, np = 0;
		for (unsigned r = 0; r < o.rounds; r++) {
			for (int rk = KEEL_REACTOR_IO_URING; rk <= KEEL_REACTOR_EPOLL; rk++) {
				if (!o.reactors[rk])
					continue;
				o.reactor = (enum keel_reactor_kind)rk;
				if (run_client(ops->name, base + 100 * (unsigned)rk, &o,
					       &krs[rk][nks[rk]]) == 0)
					nks[rk]++;
				else
					status = 1;
			}
			if (sp && sockperf_round(base + 25, &o, &pr[np]) == 0)
				np++;
		}
		for (int rk = KEEL_REACTOR_IO_URING; rk <= KEEL_REACTOR_EPOLL; rk++) {
			if (srv[rk] > 0) {
				kill(srv[rk], SIGTERM);
				waitpid(srv[rk], NULL, 0);
			}
		}
		for (int rk = KEEL_REACTOR_IO_URING; rk <= KEEL_REACTOR_EPOLL; rk++) {
			if (!o.reactors[rk])
				continue;
			o.reactor = (enum keel_reactor_kind)rk;
			json_suffix = rk == KEEL_REACTOR_EPOLL ? "_epoll" : "";
			printf("\n%s on the %s reactor:\n", ops->name, keel_reactor_name(o.reactor));
			struct figures *kr = krs[rk];
			unsigned nk = nks[rk];
			if (!nk) {
				fprintf(stderr, "bench-transport: %s: no successful round on %s\n", ops->name,
					keel_reactor_name(o.reactor));
				continue;
			}
			kran[rk] = true;
			for (int i = 0; i < NSIZES; i++) {
				kmed[rk][i][0] = med(kr, nk, offsetof(struct figures, p50) + i * sizeof(double));
				kmed[rk][i][1] = med(kr, nk, offsetof(struct figures, p99) + i * sizeof(double));
			}
			kone[rk] = med(kr, nk, offsetof(struct figures, oneway));
			printf("\n%-6s %-22s %12s %12s %8s\n", ops->name, "figure", "keel", "sockperf",
			       "ratio");
			for (int i = 0; i < NSIZES; i++) {
				if (!(o.size_mask & (1u << i)))
					continue;
				size_t offs[3] = {offsetof(struct figures, p50) + i * sizeof(double),
						  offsetof(struct figures, p99) + i * sizeof(double),
						  offsetof(struct figures, p999) + i * sizeof(double)};
				const char *names[3] = {"p50", "p99", "p99.9"};
				for (int k = 0; k < 3; k++) {
					double kv = med(kr, nk, offs[k]);
					double pv = np ? med(pr, np, offs[k]) : -1;
					char label[32];
					snprintf(label, sizeof(label), "rtt %s %s (us)", names[k], size_names[i]);
					printf("%-6s %-22s %12.1f %12.1f %8.2f\n", "", label, kv / 1000,
					       pv / 1000, pv > 0 ? kv / pv : 0);
				}
			}
			double kv = med(kr, nk, offsetof(struct figures, oneway));
			double pv = np ? med(pr, np, offsetof(struct figures, oneway)) : -1;
			if (o.oneway_msgs)
				printf("%-6s %-22s %12.0f %12.0f %8.2f\n", "", "one-way 64B (msg/s)", kv, pv,
				       pv > 0 ? kv / pv : 0);
			printf("\n");
			const char *note = sp ? "sockperf failed in every round" : "sockperf not installed";
			for (int i = 0; i < NSIZES; i++) {
				if (!(o.size_mask & (1u << i)))
					continue;
				char cs[64];
				snprintf(cs, sizeof(cs), "rtt_p50_%s_ns", size_names[i]);
				json_line(ops->name, cs, "ns", med(kr, nk, offsetof(struct figures, p50) + i * sizeof(double)),
					  "sockperf ping-pong --tcp", np ? med(pr, np, offsetof(struct figures, p50) + i * sizeof(double)) : -1,
					  "lower", 1.1, note);
				snprintf(cs, sizeof(cs), "rtt_p99_%s_ns", size_names[i]);
				json_line(ops->name, cs, "ns", med(kr, nk, offsetof(struct figures, p99) + i * sizeof(double)),
					  "sockperf ping-pong --tcp", np ? med(pr, np, offsetof(struct figures, p99) + i * sizeof(double)) : -1,
					  "lower", 0, note);
				snprintf(cs, sizeof(cs), "rtt_p999_%s_ns", size_names[i]);
				json_line(ops->name, cs, "ns", med(kr, nk, offsetof(struct figures, p999) + i * sizeof(double)),
					  "sockperf ping-pong --tcp", np ? med(pr, np, offsetof(struct figures, p999) + i * sizeof(double)) : -1,
					  "lower", 0, note);
			}
			if (o.oneway_msgs)
				json_line(ops->name, "oneway_64B_msgs_per_s", "msg/s", kv,
					  "sockperf throughput --tcp", pv, "higher", 2.0, note);
		}
		json_suffix = "";
		if (kran[KEEL_REACTOR_IO_URING] && kran[KEEL_REACTOR_EPOLL]) {
			/* The fallback's cost: keel on epoll against keel on io_uring,
			 * the "peer" being the same program on the other reactor. */
			printf("\n%-6s %-22s %12s %12s %8s\n", ops->name, "figure", "epoll", "io_uring",
			       "ratio");
			for (int i = 0; i < NSIZES; i++) {
				if (!(o.size_mask & (1u << i)))
					continue;
				for (int k = 0; k < 2; k++) {
					char label[32], cs[64];
					double e = kmed[KEEL_REACTOR_EPOLL][i][k];
					double u = kmed[KEEL_REACTOR_IO_URING][i][k];
					snprintf(label, sizeof(label), "rtt %s %s (us)", k ? "p99" : "p50",
						 size_names[i]);
					printf("%-6s %-22s %12.1f %12.1f %8.2f\n", "", label, e / 1000,
					       u / 1000, u > 0 ? e / u : 0);
					snprintf(cs, sizeof(cs), "epoll_vs_io_uring_rtt_%s_%s_ns",
						 k ? "p99" : "p50", size_names[i]);
					json_line(ops->name, cs, "ns", e, "keel on io_uring", u, "lower",
						  k ? 0 : 1.2, NULL);
				}
			}
			if (o.oneway_msgs) {
				double e = kone[KEEL_REACTOR_EPOLL], u = kone[KEEL_REACTOR_IO_URING];
				printf("%-6s %-22s %12.0f %12.0f %8.2f\n", "", "one-way 64B (msg/s)", e, u,
				       u > 0 ? e / u : 0);
				json_line(ops->name, "epoll_vs_io_uring_oneway_64B_msgs_per_s", "msg/s", e,
					  "keel on io_uring", u, "higher", 0, NULL);
			}
		}
	}
	if (!no_tls && (!o.only || !strcmp(o.only, "tcp")) && tls_pass(&o, base + 300) != 0)
		status = 1;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench-transport: could not remove %s\n", dir);
	return status;
}
