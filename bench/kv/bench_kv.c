/*
 * bench/kv — the replicated KV against etcd, in the same run on the same
 * machine, loopback and disk.
 *
 * keel: a 3-node local cluster (`keel cluster up`: 2 shards, 4 groups,
 * fsync on; on Raft, Multi-Paxos or one of each), driven through the client library (include/keel/client.h)
 * two ways: pipelined (the figures compared: N requests in flight on
 * PIPE_THREADS threads, each a keel_client with N / PIPE_THREADS calls in
 * flight through keel_client_*_async and keel_client_poll), and blocking
 * (one client per thread, one request in flight each: what the library
 * had before its pipelined calls, kept as the "before"). etcd: a 3-member cluster of Debian's
 * etcd-server 3.4 on 127.0.0.1, each member with its own data directory
 * on the same filesystem, driven through its v3 JSON gateway (POST
 * /v3/kv/put and /v3/kv/range, base64 keys and values), one keep-alive
 * HTTP/1.1 connection per thread (the gateway answers one request at a
 * time per connection). The same number of requests in flight for all
 * three (N: keel pipelined on fewer connections, keel blocking and etcd
 * on N connections), 256-byte values, keys spread over 1,000 per client.
 *
 * Figures, for each client count of --clients (full: 1, 64, 256):
 * writes/s and write latency p50/p99/p99.9; linearizable reads/s. Then a
 * sustained write run at 64 clients on keel (--sustain seconds; full 120,
 * --quick 5) reporting the leader changes it saw (term increases summed
 * over groups) and the worst 1-second window against the median second.
 * Then leader fail-over (--failovers repetitions; full 5, --quick 1): the
 * leader of a key's group killed with SIGKILL by PID, the time to the first
 * write acknowledged by another node, as one client writing that key sees
 * it, the node restarted between repetitions; the same for etcd's leader
 * member; median and max.
 *
 * --protocol raft|paxos|both ([log] protocol of the keel cluster; default
 * raft): both brings up one cluster of each, side by side, and alternates
 * them point by point (raft, paxos, etcd), then prints the figures side by
 * side with paxos/raft and keel/etcd ratios.
 *
 * Printed: a table, then JSON lines (../shared/BENCH.md) with keel/etcd
 * ratios, each with "protocol"; Paxos's cases end in _paxos, and with both,
 * paxos_vs_raft_* lines compare the two (peer "keel on raft"). Targets
 * (issue 12): writes/s >= 10x etcd at 64 and 256 clients,
 * p99 at 1 client <= etcd's p50 at 1 client, reads/s >= 10x at 64, 0
 * leader changes and a worst second >= 0.5x the median in the sustained
 * run. Issue 14: Paxos within 10% of Raft (writes/s, reads/s ratio >= 0.90,
 * p50/p99 ratio <= 1.10), fail-over under 3 election timeouts (1 s each).
 *
 * usage: bench-kv --keel PATH [--quick] [--protocol raft|paxos|both]
 *                 [--clients 1,64,256] [--seconds S] [--sustain S]
 *                 [--failovers N] [--dir DIR] [--series] [--keep]
 * --series prints every second of the sustained run with its wall-clock
 * start (UTC, as the nodes' log lines are stamped), to line a slow second
 * up with what the nodes logged then (KEEL_LOG=debug); --keep leaves the
 * work directory (the nodes' logs, c-raft/n1.log ...) in place.
 * Without etcd installed (scripts/deps bench) its figures are null, with
 * the reason.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel/base.h"
#include "keel/client.h"

#define MAX_THREADS 256
#define VALUE_LEN 256
#define KEYS_PER_THREAD 1000
#define MAX_SECONDS 600

static const char *keel_bin;
static char work[256];

/* One keel cluster per protocol of --protocol (both: Raft and Paxos, up
 * side by side so their points alternate in one run); `cur` is the one the
 * load drives. */
struct cluster {
	const char *protocol;   /* "raft" or "paxos": [log] protocol */
	const char *sfx;        /* JSON case suffix: "" for raft, "_paxos" */
	char dir[400];          /* work/c-PROTOCOL */
	char endpoints[1024], token[128];
};
static struct cluster clusters[2];
static unsigned nclusters;
static struct cluster *cur;

static uint16_t etcd_port[3], etcd_peer_port[3];
static char etcd_cluster[512];
static pid_t etcd_pid[3];
static bool have_etcd;
static char etcd_why[512] = "";

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int run(const char *fmt, ...) KEEL_PRINTF(1, 2);
static int run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	return (int)n;
}

/* ---- etcd: start a 3-member cluster, talk HTTP/1.1 to its gateway ----------- */

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	return ntohs(sa.sin_port);
}

static int http_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

struct http {
	int fd;
	char buf[65536];
	size_t len;
};

/* POSTs body to path; 0 with the status code in *code, or -errno. */
static int http_post(struct http *h, uint16_t port, const char *path, const char *body,
		     int *code)
{
	char req[4096];
	int n = snprintf(req, sizeof(req),
			 "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n%s",
			 path, port, strlen(body), body);
	if (send(h->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		return -EIO;
	h->len = 0;
	for (;;) {
		ssize_t r = recv(h->fd, h->buf + h->len, sizeof(h->buf) - 1 - h->len, 0);
		if (r <= 0)
			return r == 0 ? -ECONNRESET : -errno;
		h->len += (size_t)r;
		h->buf[h->len] = '\0';
		char *end = strstr(h->buf, "\r\n\r\n");
		if (!end)
			continue;
		size_t hdr = (size_t)(end - h->buf) + 4;
		const char *cl = strcasestr(h->buf, "Content-Length:");
		size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
		if (!cl && strcasestr(h->buf, "chunked")) {
			if (!strstr(end + 4, "0\r\n\r\n"))
				continue;
		} else if (h->len < hdr + want) {
			continue;
		}
		*code = atoi(h->buf + 9);
		return 0;
	}
}

static void b64(const uint8_t *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
			     (i + 2 < n ? in[i + 2] : 0);
		out[o++] = t[v >> 18 & 63];
		out[o++] = t[v >> 12 & 63];
		out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? t[v & 63] : '=';
	}
	out[o] = '\0';
}

static void etcd_stop(void)
{
	for (int i = 0; i < 3; i++)
		if (etcd_pid[i] > 0) {
			kill(etcd_pid[i], SIGTERM);
			waitpid(etcd_pid[i], NULL, 0);
			etcd_pid[i] = 0;
		}
}

/* Starts member i (0..2) of the cluster etcd_start set up; a member whose
 * data directory exists rejoins with it (the --initial-* flags are then
 * ignored), which is how a member killed by the fail-over run comes back. */
static pid_t etcd_spawn(int i)
{
	char name[16], data[400], curl[64], purl[64], logp[400];
	snprintf(name, sizeof(name), "e%d", i + 1);
	snprintf(data, sizeof(data), "%s/etcd-%s", work, name);
	snprintf(curl, sizeof(curl), "http://127.0.0.1:%u", etcd_port[i]);
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%u", etcd_peer_port[i]);
	snprintf(logp, sizeof(logp), "%s/etcd-%s.log", work, name);
	/* the child's freopen would flush a copy of our buffered table */
	fflush(stdout);
	pid_t p = fork();
	if (p == 0) {
		FILE *lf = freopen(logp, "a", stdout);
		(void)lf;
		dup2(1, 2);
		execl("/usr/bin/etcd", "etcd", "--name", name, "--data-dir", data,
		      "--listen-client-urls", curl, "--advertise-client-urls", curl,
		      "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		      "--initial-cluster", etcd_cluster, "--initial-cluster-state", "new",
		      "--initial-cluster-token", "keel-bench", "--log-level", "error",
		      (char *)NULL);
		_exit(127);
	}
	return p;
}

/* Member i answers a put (through its gateway, so with a leader), within
 * the deadline. */
static bool etcd_healthy(int i, uint64_t deadline)
{
	while (now_ns() < deadline) {
		struct http h = {.fd = http_connect(etcd_port[i])};
		int code = 0;
		bool ok = h.fd >= 0 &&
			  http_post(&h, etcd_port[i], "/v3/kv/put", "{\"key\":\"aGVhbHRo\",\"value\":\"MQ==\"}",
				    &code) == 0 &&
			  code == 200;
		if (h.fd >= 0)
			close(h.fd);
		if (ok)
			return true;
		usleep(100000);
	}
	return false;
}

static bool etcd_start(void)
{
	if (access("/usr/bin/etcd", X_OK) != 0) {
		snprintf(etcd_why, sizeof(etcd_why), "etcd not installed (scripts/deps bench installs etcd-server)");
		return false;
	}
	for (int i = 0; i < 3; i++) {
		etcd_port[i] = free_port();
		etcd_peer_port[i] = free_port();
	}
	snprintf(etcd_cluster, sizeof(etcd_cluster),
		 "e1=http://127.0.0.1:%u,e2=http://127.0.0.1:%u,e3=http://127.0.0.1:%u", etcd_peer_port[0],
		 etcd_peer_port[1], etcd_peer_port[2]);
	for (int i = 0; i < 3; i++)
		etcd_pid[i] = etcd_spawn(i);
	/* healthy: a put answered by every member */
	uint64_t deadline = now_ns() + 30000000000ull;
	for (int i = 0; i < 3; i++) {
		if (!etcd_healthy(i, deadline)) {
			snprintf(etcd_why, sizeof(etcd_why), "etcd member %d did not become healthy in 30 s (%s/etcd-e%d.log)",
				 i + 1, work, i + 1);
			etcd_stop();
			return false;
		}
	}
	return true;
}

/* ---- the load ---------------------------------------------------------------- */

enum sys { SYS_KEEL = 0, SYS_ETCD = 1, SYS_KEEL_PIPE = 2 };
#define PIPE_THREADS 2
enum op { OP_PUT = 0, OP_GET = 1 };

struct worker {
	pthread_t th;
	int id;
	enum sys sys;
	enum op op;
	unsigned depth;        /* SYS_KEEL_PIPE: calls in flight */
	uint64_t deadline;
	uint64_t *lat;
	size_t nlat, cap;
	uint64_t errors;
	pthread_barrier_t *start;
};

static atomic_ullong per_second[MAX_SECONDS];
static uint64_t t_begin;

static void note(struct worker *w, uint64_t t0, uint64_t t1)
{
	if (w->nlat == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 4096;
		uint64_t *p = realloc(w->lat, nc * sizeof(*p));
		if (!p)
			return;
		w->lat = p;
		w->cap = nc;
	}
	w->lat[w->nlat++] = t1 - t0;
	uint64_t s = (t1 - t_begin) / 1000000000ull;
	if (s < MAX_SECONDS)
		atomic_fetch_add(&per_second[s], 1);
}

/* The value every put writes, and its base64 for etcd (set in main). */
static uint8_t value[VALUE_LEN];
static char vb64[(VALUE_LEN + 2) / 3 * 4 + 1];

/* ---- pipelined keel clients ---- */

struct pcall {
	struct worker *w;
	struct keel_client *c;
	unsigned client;       /* this call's key space */
	uint64_t i, t0;
	char key[64];
};

static void pipe_submit(struct pcall *pc);

static void pipe_done(void *arg, int status, const struct keel_client_result *res,
		      const void *v, size_t vlen)
{
	(void)res;
	(void)v;
	(void)vlen;
	struct pcall *pc = arg;
	uint64_t t1 = now_ns();
	if (status == 0 || (pc->w->op == OP_GET && status == KEEL_ENOTFOUND))
		note(pc->w, pc->t0, t1);
	else
		pc->w->errors++;
	if (t1 < pc->w->deadline)
		pipe_submit(pc);
}

static void pipe_submit(struct pcall *pc)
{
	int kl = snprintf(pc->key, sizeof(pc->key), "bench/%u/%" PRIu64, pc->client,
			  pc->i++ % KEYS_PER_THREAD);
	pc->t0 = now_ns();
	int rc = pc->w->op == OP_PUT
			 ? keel_client_put_async(pc->c, pc->key, (size_t)kl, value, VALUE_LEN, pipe_done, pc)
			 : keel_client_get_async(pc->c, pc->key, (size_t)kl, false, pipe_done, pc);
	if (rc < 0)
		pc->w->errors++;
}

static void *pipe_main(struct worker *w)
{
	struct keel_client_config cc = {.endpoints = cur->endpoints, .token = cur->token,
					.timeout_ms = 10000, .max_inflight = w->depth};
	struct keel_client *c = NULL;
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, &c, err) < 0) {
		fprintf(stderr, "bench-kv: pipelined client %d: %s\n", w->id, err);
		w->errors++;
	}
	struct pcall *pc = calloc(w->depth, sizeof(*pc));
	pthread_barrier_wait(w->start);
	if (!c || !pc) {
		free(pc);
		keel_client_close(c);
		return NULL;
	}
	for (unsigned k = 0; k < w->depth; k++) {
		pc[k] = (struct pcall){.w = w, .c = c, .client = (unsigned)w->id * w->depth + k};
		pipe_submit(&pc[k]);
	}
	while (keel_client_pending(c))
		if (keel_client_poll(c, 1000) < 0)
			break;
	keel_client_close(c);
	free(pc);
	return NULL;
}

static void *worker_main(void *p)
{
	struct worker *w = p;
	if (w->sys == SYS_KEEL_PIPE)
		return pipe_main(w);
	char key[64];
	struct keel_client *c = NULL;
	struct http h = {.fd = -1};
	uint16_t port = etcd_port[w->id % 3];
	if (w->sys == SYS_KEEL) {
		struct keel_client_config cc = {.endpoints = cur->endpoints, .token = cur->token,
						.timeout_ms = 10000};
		char err[KEEL_ERRMSG_LEN];
		if (keel_client_open(&cc, &c, err) < 0) {
			fprintf(stderr, "bench-kv: client %d: %s\n", w->id, err);
			w->errors++;
		}
	} else {
		h.fd = http_connect(port);
		if (h.fd < 0)
			w->errors++;
	}
	pthread_barrier_wait(w->start);
	if ((w->sys == SYS_KEEL && !c) || (w->sys == SYS_ETCD && h.fd < 0))
		return NULL;
	char kb64[128], body[1024];
	for (uint64_t i = 0; now_ns() < w->deadline; i++) {
		int kl = snprintf(key, sizeof(key), "bench/%d/%" PRIu64, w->id, i % KEYS_PER_THREAD);
		uint64_t t0 = now_ns();
		int rc;
		if (w->sys == SYS_KEEL) {
			if (w->op == OP_PUT) {
				rc = keel_client_put(c, key, (size_t)kl, value, VALUE_LEN, NULL);
			} else {
				void *v;
				size_t vl;
				rc = keel_client_get(c, key, (size_t)kl, false, &v, &vl, NULL);
				if (rc == 0)
					keel_client_free_value(v);
				if (rc == KEEL_ENOTFOUND)
					rc = 0;
			}
		} else {
			b64((const uint8_t *)key, (size_t)kl, kb64);
			int code = 0;
			if (w->op == OP_PUT) {
				snprintf(body, sizeof(body), "{\"key\":\"%s\",\"value\":\"%s\"}", kb64, vb64);
				rc = http_post(&h, port, "/v3/kv/put", body, &code);
			} else {
				snprintf(body, sizeof(body), "{\"key\":\"%s\"}", kb64);
				rc = http_post(&h, port, "/v3/kv/range", body, &code);
			}
			if (rc == 0 && code != 200)
				rc = -EIO;
			if (rc < 0) { /* reconnect */
				close(h.fd);
				h.fd = http_connect(port);
				if (h.fd < 0)
					break;
			}
		}
		uint64_t t1 = now_ns();
		if (rc == 0)
			note(w, t0, t1);
		else
			w->errors++;
	}
	if (c)
		keel_client_close(c);
	if (h.fd >= 0)
		close(h.fd);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct result {
	double ops;            /* per second */
	double p50, p99, p999; /* microseconds */
	uint64_t errors;
	bool valid;
};

static struct result load(enum sys sys, enum op op, unsigned clients, double seconds)
{
	struct result r = {0};
	/* pipelined: the clients' requests in flight on a few threads */
	unsigned threads = clients, depth = 1;
	if (sys == SYS_KEEL_PIPE) {
		threads = clients < PIPE_THREADS ? clients : PIPE_THREADS;
		depth = clients / threads;
	}
	struct worker *w = calloc(threads, sizeof(*w));
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, threads + 1);
	memset(per_second, 0, sizeof(per_second));
	for (unsigned i = 0; i < threads; i++) {
		w[i] = (struct worker){.id = (int)i, .sys = sys, .op = op, .start = &bar,
				       .deadline = UINT64_MAX, .depth = depth};
		pthread_create(&w[i].th, NULL, worker_main, &w[i]);
	}
	/* every connection made before the clock starts */
	uint64_t start = now_ns() + 200000000ull;
	for (unsigned i = 0; i < threads; i++)
		w[i].deadline = start + (uint64_t)(seconds * 1e9);
	t_begin = start;
	pthread_barrier_wait(&bar);
	size_t total = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(w[i].th, NULL);
		total += w[i].nlat;
		r.errors += w[i].errors;
	}
	uint64_t *all = malloc((total ? total : 1) * sizeof(*all));
	size_t k = 0;
	for (unsigned i = 0; i < threads; i++) {
		memcpy(all + k, w[i].lat, w[i].nlat * sizeof(*all));
		k += w[i].nlat;
		free(w[i].lat);
	}
	if (total) {
		qsort(all, total, sizeof(*all), cmp_u64);
		r.ops = (double)total / seconds;
		r.p50 = (double)all[total / 2] / 1e3;
		r.p99 = (double)all[(size_t)((double)total * 0.99)] / 1e3;
		r.p999 = (double)all[(size_t)((double)total * 0.999)] / 1e3;
		r.valid = true;
	}
	free(all);
	free(w);
	pthread_barrier_destroy(&bar);
	return r;
}

/* The sum over groups of the highest term any node reports, from keel status. */
static uint64_t term_sum(void)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "'%s' status --dir '%s' --json 2>/dev/null", keel_bin, cur->dir);
	FILE *f = popen(cmd, "r");
	if (!f)
		return 0;
	uint64_t best[64] = {0}, sum = 0;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		unsigned g;
		unsigned long long t;
		const char *pg = strstr(line, "\"group\":"), *pt = strstr(line, "\"term\":");
		if (pg && pt && sscanf(pg + 8, "%u", &g) == 1 && sscanf(pt + 7, "%llu", &t) == 1 && g < 64 &&
		    t > best[g])
			best[g] = t;
	}
	pclose(f);
	for (int g = 0; g < 64; g++)
		sum += best[g];
	return sum;
}

/* ---- leader fail-over: kill -9 of a leader to the first write it did not ack ---- */

/* The election timeout the keel cluster runs with, in ms: [log] tick_ms x
 * election_ticks of its node 1 (a follower waits 1..2 of them), with
 * keel/rlog.h's defaults (100 ms, 10) for what the file leaves out, as
 * cluster up does today. etcd's --election-timeout defaults to 1000 ms.
 * The target is a fail-over under 3 of them. */
static double election_timeout_ms(const struct cluster *cl)
{
	char path[512], line[256];
	snprintf(path, sizeof(path), "%s/n1.ini", cl->dir);
	unsigned tick = 100, ticks = 10, v;
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, " tick_ms = %u", &v) == 1 && v)
			tick = v;
		else if (sscanf(line, " election_ticks = %u", &v) == 1 && v)
			ticks = v;
	}
	if (f)
		fclose(f);
	return (double)tick * ticks;
}

#define FAILOVER_TIMEOUT_NS 30000000000ull

struct health {
	unsigned rows, bad;
	uint32_t leader[64];
	bool split;
};

static void health_row(void *arg, const struct keel_client_group_status *st)
{
	struct health *h = arg;
	if (st->status != 0 || st->leader == 0 || st->group >= 64) {
		h->bad++;
		return;
	}
	h->rows++;
	if (h->leader[st->group] && h->leader[st->group] != st->leader)
		h->split = true;
	h->leader[st->group] = st->leader;
}

/* Every node answers and reports the same leader for each of its groups
 * (a restarted node has rejoined), within 30 s. */
static bool keel_healthy(struct keel_client *c, unsigned want_rows)
{
	uint64_t deadline = now_ns() + FAILOVER_TIMEOUT_NS;
	while (now_ns() < deadline) {
		struct health h = {0};
		if (keel_client_status(c, health_row, &h) >= 0 && !h.bad && !h.split && h.rows >= want_rows)
			return true;
		usleep(100000);
	}
	return false;
}

/* One fail-over of the cluster `cl`: a blocking client writes a key, the
 * node that acknowledged it (the leader of the key's group) is killed with
 * SIGKILL by PID, and the same client writes again until a write is
 * acknowledged by another node: that is the new leader's first commit as a
 * client sees it. The client library's retry backoff (10 ms doubling to
 * 200 ms between attempts when no node takes the write) is in the figure:
 * its resolution is that, not better. The killed node is restarted and the
 * cluster is healthy again before this returns. Milliseconds, or -1 with
 * the reason in why. */
static double keel_failover_once(struct cluster *cl, unsigned groups_x_nodes, char *why, size_t wl)
{
	struct keel_client_config cc = {.endpoints = cl->endpoints, .token = cl->token,
					.timeout_ms = 10000};
	struct keel_client *c = NULL;
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, &c, err) < 0) {
		snprintf(why, wl, "%s: client: %s", cl->protocol, err);
		return -1;
	}
	double ms = -1;
	const char key[] = "bench/failover";
	struct keel_client_result res = {0};
	int rc = keel_client_put(c, key, sizeof(key) - 1, value, VALUE_LEN, &res);
	char path[512], pidbuf[32];
	snprintf(path, sizeof(path), "%s/n%u.pid", cl->dir, res.node);
	if (rc < 0 || read_file(path, pidbuf, sizeof(pidbuf)) <= 0 || atoi(pidbuf) <= 0) {
		snprintf(why, wl, "%s: no leader to kill (put: %s; %s)", cl->protocol,
			 rc < 0 ? keel_strerror(rc) : "ok", path);
		keel_client_close(c);
		return -1;
	}
	uint32_t old = res.node;
	pid_t pid = (pid_t)atoi(pidbuf);
	uint64_t t0 = now_ns();
	if (kill(pid, SIGKILL) < 0) {
		snprintf(why, wl, "%s: kill %d (node %u): %s", cl->protocol, (int)pid, old, strerror(errno));
		keel_client_close(c);
		return -1;
	}
	for (;;) {
		rc = keel_client_put(c, key, sizeof(key) - 1, value, VALUE_LEN, &res);
		uint64_t t1 = now_ns();
		if (rc == 0 && res.node != old) {
			ms = (double)(t1 - t0) / 1e6;
			break;
		}
		if (t1 - t0 > FAILOVER_TIMEOUT_NS) {
			snprintf(why, wl, "%s: no write acknowledged within 30 s of killing node %u", cl->protocol,
				 old);
			break;
		}
	}
	if (run("'%s' cluster restart --node %u --dir '%s' >>'%s/restart.log' 2>&1", keel_bin, old, cl->dir,
		cl->dir)) {
		snprintf(why, wl, "%s: keel cluster restart --node %u failed (%s/restart.log)", cl->protocol, old,
			 cl->dir);
		ms = -1;
	} else if (!keel_healthy(c, groups_x_nodes)) {
		snprintf(why, wl, "%s: node %u restarted but the cluster did not agree on leaders within 30 s",
			 cl->protocol, old);
		ms = -1;
	}
	keel_client_close(c);
	return ms;
}

/* The member etcd's status says leads, or -1. */
static int etcd_leader(void)
{
	for (int i = 0; i < 3; i++) {
		struct http h = {.fd = http_connect(etcd_port[i])};
		int code = 0;
		bool ok = h.fd >= 0 && http_post(&h, etcd_port[i], "/v3/maintenance/status", "{}", &code) == 0 &&
			  code == 200;
		if (h.fd >= 0)
			close(h.fd);
		if (!ok)
			continue;
		/* {"header":{...,"member_id":"N",...},...,"leader":"N",...} */
		char me[32] = "", lead[32] = "";
		const char *m = strstr(h.buf, "\"member_id\":\""), *l = strstr(h.buf, "\"leader\":\"");
		if (m && l && sscanf(m + 13, "%31[0-9]", me) == 1 && sscanf(l + 10, "%31[0-9]", lead) == 1 &&
		    !strcmp(me, lead))
			return i;
	}
	return -1;
}

/* A gateway connection whose requests give up after 200 ms: a put a
 * follower forwarded to the dead leader is not answered until etcd's own
 * request timeout (about 5 s, which the first run measured instead of the
 * election), so the fail-over client abandons it and asks again, as a
 * client with a short deadline would; the figure's resolution is that. */
static int etcd_connect_short(uint16_t port)
{
	int fd = http_connect(port);
	struct timeval tv = {0, 200000};
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* The same for etcd: its leader member killed with SIGKILL, a client on
 * another member's gateway writing (one request at a time, each given up
 * after 200 ms, reconnecting after an error) until a put is answered 200;
 * then the member restarted on its data directory and healthy again. */
static double etcd_failover_once(char *why, size_t wl)
{
	int lead = -1;
	for (int t = 0; t < 100 && lead < 0; t++) {
		lead = etcd_leader();
		if (lead < 0)
			usleep(100000);
	}
	if (lead < 0) {
		snprintf(why, wl, "etcd: no member reports itself leader");
		return -1;
	}
	int via = (lead + 1) % 3;
	struct http h = {.fd = etcd_connect_short(etcd_port[via])};
	char body[1024];
	snprintf(body, sizeof(body), "{\"key\":\"YmVuY2gvZmFpbG92ZXI=\",\"value\":\"%s\"}", vb64);
	uint64_t t0 = now_ns();
	kill(etcd_pid[lead], SIGKILL);
	waitpid(etcd_pid[lead], NULL, 0);
	etcd_pid[lead] = 0;
	double ms = -1;
	for (;;) {
		int code = 0;
		if (h.fd >= 0 && http_post(&h, etcd_port[via], "/v3/kv/put", body, &code) == 0 && code == 200) {
			ms = (double)(now_ns() - t0) / 1e6;
			break;
		}
		if (now_ns() - t0 > FAILOVER_TIMEOUT_NS) {
			snprintf(why, wl, "etcd: no put answered within 30 s of killing member %d", lead + 1);
			break;
		}
		if (h.fd >= 0)
			close(h.fd);
		h.fd = etcd_connect_short(etcd_port[via]);
		if (h.fd < 0 || code != 0)
			usleep(10000); /* a refusal, not a timeout: do not spin */
	}
	if (h.fd >= 0)
		close(h.fd);
	etcd_pid[lead] = etcd_spawn(lead);
	if (!etcd_healthy(lead, now_ns() + FAILOVER_TIMEOUT_NS)) {
		snprintf(why, wl, "etcd: member %d did not come back within 30 s (%s/etcd-e%d.log)", lead + 1,
			 work, lead + 1);
		ms = -1;
	}
	return ms;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct failover {
	double median, max;    /* ms */
	unsigned n;            /* repetitions measured */
	char why[1024];        /* why a repetition failed ("": none) */
};

static void failover_stats(struct failover *f, double *ms, unsigned n)
{
	f->n = n;
	if (!n)
		return;
	qsort(ms, n, sizeof(*ms), cmp_double);
	f->median = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;
	f->max = ms[n - 1];
}

static void json_line(const char *cse, const char *unit, double keel, double peer, bool have_peer,
		      const char *better, double target, bool has_target)
{
	printf("{\"bench\":\"kv\",\"case\":\"%s%s\",\"unit\":\"%s\",\"protocol\":\"%s\",\"keel\":%.1f", cse,
	       cur->sfx, unit, cur->protocol, keel);
	if (have_peer) {
		double ratio = peer > 0 ? keel / peer : 0;
		printf(",\"peer\":\"etcd-3.4\",\"peer_value\":%.1f,\"ratio\":%.2f,\"better\":\"%s\"", peer,
		       ratio, better);
		if (has_target) {
			bool meets = !strcmp(better, "higher") ? ratio >= target : ratio <= target;
			printf(",\"target\":%.1f,\"meets\":%s", target, meets ? "true" : "false");
		}
	} else {
		printf(",\"peer\":\"etcd-3.4\",\"peer_value\":null,\"better\":\"%s\",\"note\":\"%s\"", better,
		       etcd_why);
	}
	printf("}\n");
}

/* Paxos against Raft on the same cluster shape, both in this run: keel is
 * Paxos, the peer "keel on raft" (as bench/group prints it). */
static void pvr_line(const char *cse, const char *unit, double paxos, double raft, const char *better,
		     double target, bool has_target)
{
	double ratio = raft > 0 ? paxos / raft : 0;
	printf("{\"bench\":\"kv\",\"case\":\"paxos_vs_raft_%s\",\"unit\":\"%s\",\"keel\":%.1f,\"peer\":\"keel on "
	       "raft\",\"peer_value\":%.1f,\"ratio\":%.3f,\"better\":\"%s\"",
	       cse, unit, paxos, raft, ratio, better);
	if (has_target) {
		bool meets = !strcmp(better, "higher") ? ratio >= target : ratio <= target;
		printf(",\"target\":%.2f,\"meets\":%s", target, meets ? "true" : "false");
	}
	printf("}\n");
}

static void print_row(const char *name, const struct result *r, bool missing_etcd)
{
	if (!r->valid)
		printf("%-34s %10s\n", name, missing_etcd ? "(no etcd)" : "(none)");
	else
		printf("%-34s %10.0f %10.0f %10.0f %10.0f %8" PRIu64 "\n", name, r->ops, r->p50, r->p99, r->p999,
		       r->errors);
}

static double ratio_or_0(double a, double b)
{
	return b > 0 ? a / b : 0;
}

int main(int argc, char **argv)
{
	bool quick = false, series = false, keep = false;
	const char *clients_arg = NULL, *dir_arg = NULL, *protocol = "raft";
	double seconds = 0, sustain = -1;
	int failovers = -1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--keel") && i + 1 < argc)
			keel_bin = argv[++i];
		else if (!strcmp(argv[i], "--clients") && i + 1 < argc)
			clients_arg = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--sustain") && i + 1 < argc)
			sustain = atof(argv[++i]);
		else if (!strcmp(argv[i], "--failovers") && i + 1 < argc)
			failovers = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--protocol") && i + 1 < argc)
			protocol = argv[++i];
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir_arg = argv[++i];
		else if (!strcmp(argv[i], "--series"))
			series = true;
		else if (!strcmp(argv[i], "--keep"))
			keep = true;
		else {
			fprintf(stderr, "usage: bench-kv --keel PATH [--quick] [--protocol raft|paxos|both] "
					"[--clients 1,64,256] [--seconds S] [--sustain S] [--failovers N] "
					"[--dir DIR] [--series] [--keep]\n");
			return 2;
		}
	}
	if (!keel_bin) {
		fprintf(stderr, "bench-kv: --keel PATH (the keel binary) is required\n");
		return 2;
	}
	if (!strcmp(protocol, "both")) {
		clusters[0] = (struct cluster){.protocol = "raft", .sfx = ""};
		clusters[1] = (struct cluster){.protocol = "paxos", .sfx = "_paxos"};
		nclusters = 2;
	} else if (!strcmp(protocol, "raft") || !strcmp(protocol, "paxos")) {
		clusters[0] = (struct cluster){.protocol = protocol, .sfx = strcmp(protocol, "raft") ? "_paxos" : ""};
		nclusters = 1;
	} else {
		fprintf(stderr, "bench-kv: --protocol %s: raft, paxos or both\n", protocol);
		return 2;
	}
	if (seconds <= 0)
		seconds = quick ? 1.0 : 5.0;
	if (sustain < 0)
		sustain = quick ? 5 : 120;
	if (sustain > MAX_SECONDS - 5)
		sustain = MAX_SECONDS - 5;
	if (failovers < 0)
		failovers = quick ? 1 : 5;
	if (failovers > 32)
		failovers = 32;
	unsigned counts[8], ncounts = 0;
	const char *cl = clients_arg ? clients_arg : quick ? "1,16" : "1,64,256";
	for (const char *p = cl; *p && ncounts < 8;) {
		unsigned v = (unsigned)strtoul(p, (char **)&p, 10);
		if (v < 1 || v > MAX_THREADS) {
			fprintf(stderr, "bench-kv: --clients: each 1..%u\n", MAX_THREADS);
			return 2;
		}
		counts[ncounts++] = v;
		if (*p == ',')
			p++;
	}
	snprintf(work, sizeof(work), "%s/keel-bench-kv.XXXXXX", dir_arg ? dir_arg : "/var/tmp");
	if (!mkdtemp(work)) {
		fprintf(stderr, "bench-kv: mkdtemp %s: %s\n", work, strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < VALUE_LEN; i++)
		value[i] = (uint8_t)('a' + i % 26);
	b64(value, VALUE_LEN, vb64);
	for (unsigned k = 0; k < nclusters; k++) {
		struct cluster *c = &clusters[k];
		snprintf(c->dir, sizeof(c->dir), "%s/c-%s", work, c->protocol);
		if (run("'%s' cluster up --nodes 3 --shards 2 --groups 4 --protocol %s --dir '%s' >'%s-up.log' 2>&1",
			keel_bin, c->protocol, c->dir, c->dir)) {
			fprintf(stderr, "bench-kv: keel cluster up --protocol %s failed (%s-up.log)\n", c->protocol,
				c->dir);
			for (unsigned j = 0; j < k; j++)
				run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel_bin, clusters[j].dir);
			return 1;
		}
		char path[512];
		snprintf(path, sizeof(path), "%s/endpoints", c->dir);
		read_file(path, c->endpoints, sizeof(c->endpoints));
		snprintf(path, sizeof(path), "%s/client-token", c->dir);
		read_file(path, c->token, sizeof(c->token));
	}
	have_etcd = etcd_start();
	if (!have_etcd)
		fprintf(stderr, "bench-kv: %s\n", etcd_why);

	printf("bench kv: 3 nodes each (keel on %s: 2 shards, 4 groups; etcd 3.4), fsync on, %d-byte values, "
	       "%.1f s per point, in %s\n",
	       nclusters == 2 ? "raft and on paxos" : clusters[0].protocol, VALUE_LEN, seconds, work);
	printf("%-34s %10s %10s %10s %10s %8s\n", "case", "ops/s", "p50 us", "p99 us", "p99.9 us", "errors");
	/* [cluster][client count]; etcd's once */
	struct result kw[2][8], ew[8], kr[2][8], er[8], bw[2][8], br[2][8];
	for (unsigned i = 0; i < ncounts; i++) {
		/* A B C, writes then reads (reads find the keys written); with
		 * both protocols, raft and paxos alternate point by point */
		for (unsigned k = 0; k < nclusters; k++) {
			cur = &clusters[k];
			kw[k][i] = load(SYS_KEEL_PIPE, OP_PUT, counts[i], seconds);
		}
		ew[i] = have_etcd ? load(SYS_ETCD, OP_PUT, counts[i], seconds) : (struct result){0};
		for (unsigned k = 0; k < nclusters; k++) {
			cur = &clusters[k];
			bw[k][i] = load(SYS_KEEL, OP_PUT, counts[i], seconds);
		}
		for (unsigned k = 0; k < nclusters; k++) {
			cur = &clusters[k];
			kr[k][i] = load(SYS_KEEL_PIPE, OP_GET, counts[i], seconds);
		}
		er[i] = have_etcd ? load(SYS_ETCD, OP_GET, counts[i], seconds) : (struct result){0};
		for (unsigned k = 0; k < nclusters; k++) {
			cur = &clusters[k];
			br[k][i] = load(SYS_KEEL, OP_GET, counts[i], seconds);
		}
		char name[80];
		for (unsigned k = 0; k < nclusters; k++) {
			const char *pr = clusters[k].protocol;
			snprintf(name, sizeof(name), "keel/%s put, %u cl", pr, counts[i]);
			print_row(name, &kw[k][i], false);
			snprintf(name, sizeof(name), "keel/%s put, blocking, %u cl", pr, counts[i]);
			print_row(name, &bw[k][i], false);
		}
		snprintf(name, sizeof(name), "etcd put, %u cl", counts[i]);
		print_row(name, &ew[i], !have_etcd);
		for (unsigned k = 0; k < nclusters; k++) {
			const char *pr = clusters[k].protocol;
			snprintf(name, sizeof(name), "keel/%s get (lin.), %u cl", pr, counts[i]);
			print_row(name, &kr[k][i], false);
			snprintf(name, sizeof(name), "keel/%s get, blocking, %u cl", pr, counts[i]);
			print_row(name, &br[k][i], false);
		}
		snprintf(name, sizeof(name), "etcd get (lin.), %u cl", counts[i]);
		print_row(name, &er[i], !have_etcd);
	}
	/* sustained writes on keel, 64 clients (or the largest count asked) */
	unsigned sc = 64;
	if (quick)
		sc = counts[ncounts - 1];
	unsigned nsec = (unsigned)sustain;
	uint64_t worst[2] = {0}, median[2] = {0}, changes[2] = {0};
	struct result sr[2];
	for (unsigned k = 0; k < nclusters; k++) {
		cur = &clusters[k];
		uint64_t t0 = term_sum();
		struct timespec wall0;
		clock_gettime(CLOCK_REALTIME, &wall0);
		uint64_t mono0 = now_ns();
		sr[k] = load(SYS_KEEL_PIPE, OP_PUT, sc, sustain);
		uint64_t t1 = term_sum();
		uint64_t secs[MAX_SECONDS];
		for (unsigned s = 0; s < nsec; s++)
			secs[s] = atomic_load(&per_second[s]);
		if (series) {
			/* second s began at t_begin + s on the monotonic clock; mapped
			 * to the wall clock through the pair read just before the load */
			int64_t wall_ns = (int64_t)wall0.tv_sec * 1000000000ll + wall0.tv_nsec +
					  (int64_t)(t_begin - mono0);
			for (unsigned s = 0; s < nsec; s++) {
				int64_t t = wall_ns + (int64_t)s * 1000000000ll;
				time_t ts = (time_t)(t / 1000000000ll);
				struct tm tm;
				gmtime_r(&ts, &tm);
				char stamp[32];
				strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
				printf("keel/%s sustained second %3u from %s.%03lld UTC: %" PRIu64 " writes\n",
				       cur->protocol, s, stamp, (long long)(t % 1000000000ll / 1000000), secs[s]);
			}
		}
		worst[k] = nsec ? secs[0] : 0;
		for (unsigned s = 0; s < nsec; s++)
			if (secs[s] < worst[k])
				worst[k] = secs[s];
		qsort(secs, nsec, sizeof(secs[0]), cmp_u64);
		median[k] = nsec ? secs[nsec / 2] : 0;
		changes[k] = t1 > t0 ? t1 - t0 : 0;
		printf("keel/%s sustained put (pipelined), %u cl, %.0f s: %.0f/s, worst second %" PRIu64
		       ", median second %" PRIu64 ", leader changes %" PRIu64 ", errors %" PRIu64 "\n",
		       cur->protocol, sc, sustain, sr[k].ops, worst[k], median[k], changes[k], sr[k].errors);
	}

	/* leader fail-over, last: it kills and restarts nodes. Raft, Paxos and
	 * etcd take turns, repetition by repetition. */
	struct failover kf[2] = {0}, ef = {0};
	double kms[2][32], ems[32];
	for (int r = 0; r < failovers; r++) {
		for (unsigned k = 0; k < nclusters; k++) {
			double ms = keel_failover_once(&clusters[k], 3 * 4, kf[k].why, sizeof(kf[k].why));
			if (ms >= 0)
				kms[k][kf[k].n++] = ms;
		}
		if (have_etcd) {
			double ms = etcd_failover_once(ef.why, sizeof(ef.why));
			if (ms >= 0)
				ems[ef.n++] = ms;
		}
	}
	for (unsigned k = 0; k < nclusters; k++) {
		failover_stats(&kf[k], kms[k], kf[k].n);
		if (kf[k].n)
			printf("keel/%s leader fail-over (kill -9 to the first write acknowledged by the new leader), %u "
			       "of %d: median %.0f ms, max %.0f ms\n",
			       clusters[k].protocol, kf[k].n, failovers, kf[k].median, kf[k].max);
		if (kf[k].why[0])
			printf("keel/%s fail-over: %s\n", clusters[k].protocol, kf[k].why);
	}
	failover_stats(&ef, ems, ef.n);
	if (ef.n)
		printf("etcd leader fail-over (kill -9 to the first put answered), %u of %d: median %.0f ms, max %.0f ms\n",
		       ef.n, failovers, ef.median, ef.max);
	if (ef.why[0])
		printf("etcd fail-over: %s\n", ef.why);

	if (nclusters == 2) {
		/* side by side: the figures, with both ratios */
		printf("\n%-30s %10s %10s %10s %10s %10s %10s\n", "side by side", "raft", "paxos", "etcd",
		       "paxos/raft", "raft/etcd", "paxos/etcd");
		for (unsigned i = 0; i < ncounts; i++) {
			const struct {
				const char *what;
				double r, p, e;
			} rows[] = {
				{"put/s", kw[0][i].ops, kw[1][i].ops, ew[i].ops},
				{"put p50 us", kw[0][i].p50, kw[1][i].p50, ew[i].p50},
				{"put p99 us", kw[0][i].p99, kw[1][i].p99, ew[i].p99},
				{"lin. get/s", kr[0][i].ops, kr[1][i].ops, er[i].ops},
			};
			for (size_t j = 0; j < sizeof(rows) / sizeof(rows[0]); j++) {
				char name[64];
				snprintf(name, sizeof(name), "%s, %u cl", rows[j].what, counts[i]);
				printf("%-30s %10.0f %10.0f %10.0f %10.2f %10.2f %10.2f\n", name, rows[j].r, rows[j].p,
				       rows[j].e, ratio_or_0(rows[j].p, rows[j].r), ratio_or_0(rows[j].r, rows[j].e),
				       ratio_or_0(rows[j].p, rows[j].e));
			}
		}
		printf("%-30s %10.0f %10.0f %10.0f %10.2f %10.2f %10.2f\n", "fail-over median ms", kf[0].median,
		       kf[1].median, ef.median, ratio_or_0(kf[1].median, kf[0].median),
		       ratio_or_0(kf[0].median, ef.median), ratio_or_0(kf[1].median, ef.median));
		printf("%-30s %10.0f %10.0f %10.0f %10.2f %10.2f %10.2f\n", "fail-over max ms", kf[0].max,
		       kf[1].max, ef.max, ratio_or_0(kf[1].max, kf[0].max), ratio_or_0(kf[0].max, ef.max),
		       ratio_or_0(kf[1].max, ef.max));
		printf("\n");
	}

	for (unsigned k = 0; k < nclusters; k++) {
		cur = &clusters[k];
		for (unsigned i = 0; i < ncounts; i++) {
			char c1[64];
			bool tgt = counts[i] == 64 || counts[i] == 256;
			snprintf(c1, sizeof(c1), "put_per_s_%u_clients", counts[i]);
			json_line(c1, "1/s", kw[k][i].ops, ew[i].ops, have_etcd && ew[i].valid, "higher", 10.0, tgt);
			snprintf(c1, sizeof(c1), "put_p99_us_%u_clients", counts[i]);
			json_line(c1, "us", kw[k][i].p99, ew[i].p99, have_etcd && ew[i].valid, "lower", 0, false);
			snprintf(c1, sizeof(c1), "get_per_s_%u_clients", counts[i]);
			json_line(c1, "1/s", kr[k][i].ops, er[i].ops, have_etcd && er[i].valid, "higher", 10.0,
				  counts[i] == 64);
			/* the blocking library (the "before"), against the same etcd run */
			snprintf(c1, sizeof(c1), "put_per_s_%u_clients_blocking", counts[i]);
			json_line(c1, "1/s", bw[k][i].ops, ew[i].ops, have_etcd && ew[i].valid, "higher", 0, false);
			snprintf(c1, sizeof(c1), "get_per_s_%u_clients_blocking", counts[i]);
			json_line(c1, "1/s", br[k][i].ops, er[i].ops, have_etcd && er[i].valid, "higher", 0, false);
			if (counts[i] == 1) {
				/* keel's p99 against etcd's p50, both at 1 client */
				printf("{\"bench\":\"kv\",\"case\":\"put_p99_vs_etcd_p50_1_client%s\",\"unit\":\"us\","
				       "\"protocol\":\"%s\",\"keel\":%.1f",
				       cur->sfx, cur->protocol, kw[k][i].p99);
				if (have_etcd && ew[i].valid)
					printf(",\"peer\":\"etcd-3.4-p50\",\"peer_value\":%.1f,\"ratio\":%.2f,\"better\":"
					       "\"lower\",\"target\":1.0,\"meets\":%s}\n",
					       ew[i].p50, kw[k][i].p99 / ew[i].p50,
					       kw[k][i].p99 <= ew[i].p50 ? "true" : "false");
				else
					printf(",\"peer_value\":null,\"better\":\"lower\",\"note\":\"%s\"}\n", etcd_why);
			}
		}
		printf("{\"bench\":\"kv\",\"case\":\"sustained_leader_changes%s\",\"unit\":\"count\",\"protocol\":"
		       "\"%s\",\"keel\":%" PRIu64 ",\"better\":\"lower\",\"target\":0,\"meets\":%s}\n",
		       cur->sfx, cur->protocol, changes[k], changes[k] == 0 ? "true" : "false");
		double wr = median[k] ? (double)worst[k] / (double)median[k] : 0;
		printf("{\"bench\":\"kv\",\"case\":\"sustained_worst_second_vs_median%s\",\"unit\":\"ratio\","
		       "\"protocol\":\"%s\",\"keel\":%.2f,\"better\":\"higher\",\"target\":0.5,\"meets\":%s}\n",
		       cur->sfx, cur->protocol, wr, wr >= 0.5 ? "true" : "false");
		/* fail-over against etcd's, and against the bound of 3
		 * election timeouts (the worst repetition) */
		if (kf[k].n) {
			bool ep = have_etcd && ef.n;
			const char *note = !have_etcd ? etcd_why : ef.why;
			printf("{\"bench\":\"kv\",\"case\":\"failover_ms_median%s\",\"unit\":\"ms\",\"protocol\":\"%s\","
			       "\"keel\":%.1f",
			       cur->sfx, cur->protocol, kf[k].median);
			if (ep)
				printf(",\"peer\":\"etcd-3.4\",\"peer_value\":%.1f,\"ratio\":%.2f,\"better\":\"lower\"}\n",
				       ef.median, kf[k].median / ef.median);
			else
				printf(",\"peer\":\"etcd-3.4\",\"peer_value\":null,\"better\":\"lower\",\"note\":\"%s\"}\n",
				       note);
			printf("{\"bench\":\"kv\",\"case\":\"failover_ms_max%s\",\"unit\":\"ms\",\"protocol\":\"%s\","
			       "\"keel\":%.1f",
			       cur->sfx, cur->protocol, kf[k].max);
			if (ep)
				printf(",\"peer\":\"etcd-3.4\",\"peer_value\":%.1f,\"ratio\":%.2f,\"better\":\"lower\"}\n",
				       ef.max, kf[k].max / ef.max);
			else
				printf(",\"peer\":\"etcd-3.4\",\"peer_value\":null,\"better\":\"lower\",\"note\":\"%s\"}\n",
				       note);
			double et = kf[k].max / election_timeout_ms(cur);
			printf("{\"bench\":\"kv\",\"case\":\"failover_max_election_timeouts%s\",\"unit\":\"timeouts\","
			       "\"protocol\":\"%s\",\"keel\":%.2f,\"election_timeout_ms\":%.0f,\"repetitions\":%u,"
			       "\"better\":\"lower\",\"target\":3.0,\"meets\":%s}\n",
			       cur->sfx, cur->protocol, et, election_timeout_ms(cur), kf[k].n, et < 3.0 ? "true" : "false");
		} else {
			printf("{\"bench\":\"kv\",\"case\":\"failover_ms_median%s\",\"unit\":\"ms\",\"protocol\":\"%s\","
			       "\"keel\":null,\"better\":\"lower\",\"note\":\"%s\"}\n",
			       cur->sfx, cur->protocol, kf[k].why);
		}
	}
	if (nclusters == 2) {
		for (unsigned i = 0; i < ncounts; i++) {
			char c1[64];
			snprintf(c1, sizeof(c1), "put_per_s_%u_clients", counts[i]);
			pvr_line(c1, "1/s", kw[1][i].ops, kw[0][i].ops, "higher", 0.90, true);
			snprintf(c1, sizeof(c1), "put_p50_us_%u_clients", counts[i]);
			pvr_line(c1, "us", kw[1][i].p50, kw[0][i].p50, "lower", 1.10, true);
			snprintf(c1, sizeof(c1), "put_p99_us_%u_clients", counts[i]);
			pvr_line(c1, "us", kw[1][i].p99, kw[0][i].p99, "lower", 1.10, true);
			snprintf(c1, sizeof(c1), "get_per_s_%u_clients", counts[i]);
			pvr_line(c1, "1/s", kr[1][i].ops, kr[0][i].ops, "higher", 0.90, true);
		}
		if (kf[0].n && kf[1].n) {
			pvr_line("failover_ms_median", "ms", kf[1].median, kf[0].median, "lower", 0, false);
			pvr_line("failover_ms_max", "ms", kf[1].max, kf[0].max, "lower", 0, false);
		}
	}

	etcd_stop();
	for (unsigned k = 0; k < nclusters; k++)
		run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel_bin, clusters[k].dir);
	if (keep)
		printf("bench-kv: kept %s (node logs in its c-raft/, c-paxos/)\n", work);
	else
		run("rm -rf '%s'", work);
	return 0;
}
