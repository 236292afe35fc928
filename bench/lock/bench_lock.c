/*
 * bench/lock — the lock service against etcd's lock API, ZooKeeper's lock
 * recipe and Redis SET NX, in the same run on the same machine.
 *
 * keel: `keel cluster up` (3 nodes, 2 shards, 8 groups, fsync on), one
 * keel_lock_client (include/keel/lock_client.h) per client thread.
 * etcd: a 3-member etcd 3.4 (Debian etcd-server) on 127.0.0.1, one lease
 * per client, /v3/lock/lock and /v3/lock/unlock over its HTTP gateway.
 * ZooKeeper: a 3-server 3.8 ensemble (Debian zookeeperd, the JVM) with the
 * C client (libzookeeper-mt): the recipe's cycle is create an
 * EPHEMERAL|SEQUENTIAL child of /locks/NAME, list the children, if lowest
 * hold it, else watch the next-lower one and wait; release deletes it.
 * Redis: one redis-server (appendonly, appendfsync always; no replication:
 * an upper bound, not a peer in safety), hiredis: SET name token NX PX
 * ttl, then a compare-and-delete script; a contended SET that fails
 * retries after 1 ms (Redis has no queue to wait in).
 *
 * Cases: acquire+release cycles/s and acquire latency p50/p99 with 1 and
 * 64 clients on distinct locks; 64 clients on one lock (grants/s, and
 * fairness: the fewest grants of a client over the mean); keel's session
 * keepalives/s (64 clients renewing in a loop; each renewal waits for the
 * group's next tick, which batches every session's keepalive into one log
 * entry). Printed: a table, then JSON lines (../shared/BENCH.md) with
 * keel/peer ratios. A peer that cannot run here gets peer_value null and
 * the reason.
 *
 * usage: bench-lock --keel KEEL_BINARY [--quick] [--seconds N]
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

#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif
#ifdef HAVE_ZOOKEEPER
#include <zookeeper/zookeeper.h>
#endif

#include "keel/base.h"
#include "keel/lock_client.h"

#define MAX_THREADS 64

enum sys { SYS_KEEL, SYS_ETCD, SYS_ZK, SYS_REDIS, NSYS };
static const char *const sys_name[NSYS] = {"keel", "etcd-3.4", "zookeeper-3.8", "redis-7"};
static bool have[NSYS];
static char why[NSYS][512];

static const char *keel_bin;
static char work[256], endpoints[1024], ktoken[128];
static uint16_t etcd_port[3], zk_port[3], redis_port;
static pid_t etcd_pid[3], zk_pid[3], redis_pid;

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

static pid_t spawn_logged(const char *logp, char *const argv[])
{
	pid_t p = fork();
	if (p == 0) {
		FILE *lf = freopen(logp, "w", stdout);
		(void)lf;
		dup2(1, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return p;
}

static void stop_pids(pid_t *p, int n)
{
	for (int i = 0; i < n; i++)
		if (p[i] > 0) {
			kill(p[i], SIGTERM);
			waitpid(p[i], NULL, 0);
			p[i] = 0;
		}
}

/* ---- etcd over its HTTP gateway (as bench/kv talks to it) --------------------- */

static int http_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct timeval tv = {30, 0};
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
	uint16_t port;
	char buf[65536];
	size_t len;
	const char *body;
};

static int http_post(struct http *h, const char *path, const char *body, int *code)
{
	char req[4096];
	int n = snprintf(req, sizeof(req),
			 "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n%s",
			 path, h->port, strlen(body), body);
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
		h->body = end + 4;
		return 0;
	}
}

/* The string value of "field" in the answer's JSON (no escapes in etcd's
 * base64 and decimal strings). */
static bool json_field(const char *body, const char *field, char *out, size_t cap)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":\"", field);
	const char *p = strstr(body, pat);
	if (!p)
		return false;
	p += strlen(pat);
	const char *e = strchr(p, '"');
	if (!e || (size_t)(e - p) >= cap)
		return false;
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = '\0';
	return true;
}

static void b64(const char *in, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(in), o = 0;
	const uint8_t *s = (const uint8_t *)in;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
			     (i + 2 < n ? s[i + 2] : 0);
		out[o++] = t[v >> 18 & 63];
		out[o++] = t[v >> 12 & 63];
		out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? t[v & 63] : '=';
	}
	out[o] = '\0';
}

static bool etcd_start(void)
{
	if (access("/usr/bin/etcd", X_OK) != 0) {
		snprintf(why[SYS_ETCD], sizeof(why[0]), "etcd not installed (scripts/deps bench)");
		return false;
	}
	uint16_t peer[3];
	for (int i = 0; i < 3; i++) {
		etcd_port[i] = free_port();
		peer[i] = free_port();
	}
	char cluster[512];
	snprintf(cluster, sizeof(cluster),
		 "e1=http://127.0.0.1:%u,e2=http://127.0.0.1:%u,e3=http://127.0.0.1:%u", peer[0],
		 peer[1], peer[2]);
	for (int i = 0; i < 3; i++) {
		char name[8], data[400], curl[64], purl[64], logp[400];
		snprintf(name, sizeof(name), "e%d", i + 1);
		snprintf(data, sizeof(data), "%s/etcd-%s", work, name);
		snprintf(curl, sizeof(curl), "http://127.0.0.1:%u", etcd_port[i]);
		snprintf(purl, sizeof(purl), "http://127.0.0.1:%u", peer[i]);
		snprintf(logp, sizeof(logp), "%s/etcd-%s.log", work, name);
		char *const argv[] = {"/usr/bin/etcd", "--name", name, "--data-dir", data,
				      "--listen-client-urls", curl, "--advertise-client-urls", curl,
				      "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
				      "--initial-cluster", cluster, "--initial-cluster-state", "new",
				      "--initial-cluster-token", "keel-bench-lock", "--log-level",
				      "error", NULL};
		etcd_pid[i] = spawn_logged(logp, argv);
	}
	uint64_t deadline = now_ns() + 30000000000ull;
	for (int i = 0; i < 3; i++) {
		bool ok = false;
		while (!ok && now_ns() < deadline) {
			struct http h = {.fd = http_connect(etcd_port[i]), .port = etcd_port[i]};
			int code = 0;
			if (h.fd >= 0 &&
			    http_post(&h, "/v3/kv/put", "{\"key\":\"aGVhbHRo\",\"value\":\"MQ==\"}",
				      &code) == 0 &&
			    code == 200)
				ok = true;
			if (h.fd >= 0)
				close(h.fd);
			if (!ok)
				usleep(100000);
		}
		if (!ok) {
			snprintf(why[SYS_ETCD], sizeof(why[0]),
				 "etcd member %d not healthy in 30 s (%s/etcd-e%d.log)", i + 1, work, i + 1);
			stop_pids(etcd_pid, 3);
			return false;
		}
	}
	return true;
}

/* ---- ZooKeeper: a 3-server ensemble from Debian's jars ---------------------- */

static bool zk_start(void)
{
#ifndef HAVE_ZOOKEEPER
	snprintf(why[SYS_ZK], sizeof(why[0]),
		 "built without libzookeeper-mt (scripts/deps bench installs it)");
	return false;
#else
	if (access("/usr/bin/java", X_OK) != 0 || access("/usr/share/java/zookeeper.jar", R_OK) != 0) {
		snprintf(why[SYS_ZK], sizeof(why[0]),
			 "no JVM or no zookeeper.jar (scripts/deps bench installs zookeeperd)");
		return false;
	}
	uint16_t q[3], e[3];
	for (int i = 0; i < 3; i++) {
		zk_port[i] = free_port();
		q[i] = free_port();
		e[i] = free_port();
	}
	for (int i = 0; i < 3; i++) {
		char d[400], cfg[500], logp[500], myid[500];
		snprintf(d, sizeof(d), "%s/zk%d", work, i + 1);
		mkdir(d, 0755);
		snprintf(myid, sizeof(myid), "%s/myid", d);
		FILE *f = fopen(myid, "w");
		if (!f)
			return false;
		fprintf(f, "%d\n", i + 1);
		fclose(f);
		snprintf(cfg, sizeof(cfg), "%s/zoo.cfg", d);
		f = fopen(cfg, "w");
		if (!f)
			return false;
		/* forceSync on (the default): as durable as keel and etcd */
		fprintf(f, "tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir=%s\nclientPort=%u\n"
			   "clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n"
			   "server.1=127.0.0.1:%u:%u\nserver.2=127.0.0.1:%u:%u\nserver.3=127.0.0.1:%u:%u\n",
			d, zk_port[i], q[0], e[0], q[1], e[1], q[2], e[2]);
		fclose(f);
		snprintf(logp, sizeof(logp), "%s/zk%d.log", work, i + 1);
		char *const argv[] = {"/usr/bin/java", "-Xmx512m",
				      "-Dzookeeper.log.dir=/tmp", "-cp",
				      "/etc/zookeeper/conf_example:/usr/share/java/zookeeper.jar",
				      "org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg, NULL};
		zk_pid[i] = spawn_logged(logp, argv);
	}
	zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
	/* the C client logs to stderr: keep its reconnect noise in a file */
	char zlog[400];
	snprintf(zlog, sizeof(zlog), "%s/zk-client.log", work);
	FILE *zl = fopen(zlog, "w");
	if (zl)
		zoo_set_log_stream(zl);
	/* serving: /locks created through each server */
	uint64_t deadline = now_ns() + 60000000000ull;
	for (int i = 0; i < 3; i++) {
		char hp[64];
		snprintf(hp, sizeof(hp), "127.0.0.1:%u", zk_port[i]);
		bool ok = false;
		while (!ok && now_ns() < deadline) {
			zhandle_t *z = zookeeper_init(hp, NULL, 10000, NULL, NULL, 0);
			for (int k = 0; z && k < 50 && zoo_state(z) != ZOO_CONNECTED_STATE; k++)
				usleep(20000);
			if (z && zoo_state(z) == ZOO_CONNECTED_STATE) {
				int rc = zoo_create(z, "/locks", "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
				ok = rc == ZOK || rc == ZNODEEXISTS;
			}
			if (z)
				zookeeper_close(z);
			if (!ok)
				usleep(200000);
		}
		if (!ok) {
			snprintf(why[SYS_ZK], sizeof(why[0]),
				 "ZooKeeper server %d not serving in 60 s (%s/zk%d.log)", i + 1, work, i + 1);
			stop_pids(zk_pid, 3);
			return false;
		}
	}
	return true;
#endif
}

/* ---- Redis ------------------------------------------------------------------ */

static bool redis_start(void)
{
#ifndef HAVE_HIREDIS
	snprintf(why[SYS_REDIS], sizeof(why[0]), "built without hiredis (scripts/deps bench)");
	return false;
#else
	if (access("/usr/bin/redis-server", X_OK) != 0) {
		snprintf(why[SYS_REDIS], sizeof(why[0]), "redis-server not installed (scripts/deps bench)");
		return false;
	}
	redis_port = free_port();
	char port[8], logp[400];
	snprintf(port, sizeof(port), "%u", redis_port);
	snprintf(logp, sizeof(logp), "%s/redis.log", work);
	char *const argv[] = {"/usr/bin/redis-server", "--port", port, "--bind", "127.0.0.1",
			      "--dir", work, "--save", "", "--appendonly", "yes",
			      "--appendfsync", "always", NULL};
	redis_pid = spawn_logged(logp, argv);
	for (int i = 0; i < 100; i++) {
		redisContext *r = redisConnect("127.0.0.1", redis_port);
		if (r && !r->err) {
			redisReply *rep = redisCommand(r, "PING");
			bool ok = rep && rep->type == REDIS_REPLY_STATUS;
			freeReplyObject(rep);
			redisFree(r);
			if (ok)
				return true;
		} else if (r) {
			redisFree(r);
		}
		usleep(100000);
	}
	snprintf(why[SYS_REDIS], sizeof(why[0]), "redis-server did not answer (%s)", logp);
	stop_pids(&redis_pid, 1);
	return false;
#endif
}

/* ---- one client of each system ------------------------------------------------- */

struct client {
	enum sys sys;
	int id;
	struct keel_lock_client *kl;
	struct http h;
	char lease[32];
	char held_key[512];
	uint64_t ktoken;
	void *redis;
	void *zk;
	char zk_node[512];
};

static int client_open(struct client *c)
{
	switch (c->sys) {
	case SYS_KEEL: {
		struct keel_lock_client_config cc = {.endpoints = endpoints,
						     .token = ktoken[0] ? ktoken : NULL,
						     .ttl_ms = 10000, .timeout_ms = 10000};
		char err[KEEL_ERRMSG_LEN];
		return keel_lock_client_open(&cc, &c->kl, err);
	}
	case SYS_ETCD: {
		c->h.port = etcd_port[c->id % 3];
		c->h.fd = http_connect(c->h.port);
		if (c->h.fd < 0)
			return c->h.fd;
		int code = 0;
		if (http_post(&c->h, "/v3/lease/grant", "{\"TTL\":10}", &code) < 0 || code != 200 ||
		    !json_field(c->h.body, "ID", c->lease, sizeof(c->lease)))
			return -EIO;
		return 0;
	}
	case SYS_ZK:
#ifdef HAVE_ZOOKEEPER
	{
		char hp[64];
		snprintf(hp, sizeof(hp), "127.0.0.1:%u", zk_port[c->id % 3]);
		zhandle_t *z = zookeeper_init(hp, NULL, 10000, NULL, NULL, 0);
		for (int k = 0; z && k < 250 && zoo_state(z) != ZOO_CONNECTED_STATE; k++)
			usleep(20000);
		if (!z || zoo_state(z) != ZOO_CONNECTED_STATE)
			return -EIO;
		c->zk = z;
		return 0;
	}
#endif
		return -ENOTSUP;
	case SYS_REDIS:
#ifdef HAVE_HIREDIS
	{
		redisContext *r = redisConnect("127.0.0.1", redis_port);
		if (!r || r->err)
			return -EIO;
		c->redis = r;
		return 0;
	}
#endif
		return -ENOTSUP;
	default:
		return -EINVAL;
	}
}

static void client_close(struct client *c)
{
	if (c->kl)
		keel_lock_client_close(c->kl);
	if (c->h.fd > 0)
		close(c->h.fd);
#ifdef HAVE_HIREDIS
	if (c->redis)
		redisFree(c->redis);
#endif
#ifdef HAVE_ZOOKEEPER
	if (c->zk)
		zookeeper_close(c->zk);
#endif
}

#ifdef HAVE_ZOOKEEPER
struct zk_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool fired;
};

static void zk_watcher(zhandle_t *z, int type, int state, const char *path, void *ctx)
{
	(void)z;
	(void)type;
	(void)state;
	(void)path;
	struct zk_wait *w = ctx;
	pthread_mutex_lock(&w->mu);
	w->fired = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The recipe (ZooKeeper's docs, "Locks"), without the herd: each waiter
 * watches only the child just below its own. */
static int zk_acquire(struct client *c, const char *name)
{
	zhandle_t *z = c->zk;
	char dir[400], path[512];
	snprintf(dir, sizeof(dir), "/locks/%s", name);
	int rc = zoo_create(z, dir, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	if (rc != ZOK && rc != ZNODEEXISTS)
		return -EIO;
	snprintf(path, sizeof(path), "%s/l-", dir);
	rc = zoo_create(z, path, "", 0, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL | ZOO_SEQUENCE,
			c->zk_node, sizeof(c->zk_node));
	if (rc != ZOK)
		return -EIO;
	const char *mine = strrchr(c->zk_node, '/') + 1;
	for (;;) {
		struct String_vector ch;
		if (zoo_get_children(z, dir, 0, &ch) != ZOK)
			return -EIO;
		qsort(ch.data, (size_t)ch.count, sizeof(char *), cmp_str);
		const char *prev = NULL;
		for (int i = 0; i < ch.count; i++) {
			if (!strcmp(ch.data[i], mine))
				break;
			prev = ch.data[i];
		}
		if (!prev) {
			deallocate_String_vector(&ch);
			return 0;
		}
		char pp[600];
		snprintf(pp, sizeof(pp), "%s/%s", dir, prev);
		deallocate_String_vector(&ch);
		struct zk_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
		struct Stat st;
		rc = zoo_wexists(z, pp, zk_watcher, &w, &st);
		if (rc == ZNONODE)
			continue;
		if (rc != ZOK)
			return -EIO;
		pthread_mutex_lock(&w.mu);
		while (!w.fired)
			pthread_cond_wait(&w.cv, &w.mu);
		pthread_mutex_unlock(&w.mu);
	}
}
#endif

/* Acquire (blocking), then release; the acquire's latency in *lat. */
static int cycle(struct client *c, const char *name, uint64_t *lat)
{
	uint64_t t0 = now_ns();
	int rc = -EINVAL;
	switch (c->sys) {
	case SYS_KEEL: {
		uint64_t tok;
		rc = keel_lock_acquire(c->kl, name, strlen(name), KEEL_LOCK_EXCLUSIVE, 60000, 0, &tok);
		*lat = now_ns() - t0;
		if (rc == 0)
			rc = keel_lock_release(c->kl, name, strlen(name), tok);
		break;
	}
	case SYS_ETCD: {
		char body[1024], nb[700], key[512];
		b64(name, nb);
		snprintf(body, sizeof(body), "{\"name\":\"%s\",\"lease\":\"%s\"}", nb, c->lease);
		int code = 0;
		rc = http_post(&c->h, "/v3/lock/lock", body, &code);
		*lat = now_ns() - t0;
		if (rc < 0 || code != 200 || !json_field(c->h.body, "key", key, sizeof(key)))
			return -EIO;
		snprintf(body, sizeof(body), "{\"key\":\"%s\"}", key);
		rc = http_post(&c->h, "/v3/lock/unlock", body, &code);
		if (rc == 0 && code != 200)
			rc = -EIO;
		break;
	}
	case SYS_ZK:
#ifdef HAVE_ZOOKEEPER
		rc = zk_acquire(c, name);
		*lat = now_ns() - t0;
		if (rc == 0 && zoo_delete(c->zk, c->zk_node, -1) != ZOK)
			rc = -EIO;
#endif
		break;
	case SYS_REDIS:
#ifdef HAVE_HIREDIS
	{
		char tok[32];
		snprintf(tok, sizeof(tok), "%d-%" PRIu64, c->id, t0);
		for (;;) {
			redisReply *r = redisCommand(c->redis, "SET %s %s NX PX 10000", name, tok);
			if (!r)
				return -EIO;
			bool ok = r->type == REDIS_REPLY_STATUS;
			freeReplyObject(r);
			if (ok)
				break;
			usleep(1000);
		}
		*lat = now_ns() - t0;
		redisReply *r = redisCommand(
			c->redis,
			"EVAL %s 1 %s %s",
			"if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end",
			name, tok);
		rc = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 0 : -EIO;
		freeReplyObject(r);
	}
#endif
		break;
	default:
		break;
	}
	return rc;
}

/* ---- the load --------------------------------------------------------------- */

struct worker {
	pthread_t th;
	struct client c;
	bool contended, keepalive;
	uint64_t deadline;
	uint64_t *lat;
	size_t nlat, cap;
	uint64_t cycles, errors;
	pthread_barrier_t *start;
	int open_rc;
};

static void *worker_main(void *p)
{
	struct worker *w = p;
	w->open_rc = client_open(&w->c);
	char name[64];
	if (w->contended)
		snprintf(name, sizeof(name), "bench-hot");
	else
		snprintf(name, sizeof(name), "bench-%d", w->c.id);
	uint64_t tok = 0;
	if (w->open_rc == 0 && w->keepalive &&
	    keel_lock_acquire(w->c.kl, name, strlen(name), KEEL_LOCK_EXCLUSIVE, 10000, 0, &tok) < 0)
		w->open_rc = -EIO;
	pthread_barrier_wait(w->start);
	if (w->open_rc < 0)
		return NULL;
	while (now_ns() < w->deadline) {
		uint64_t lat = 0;
		int rc;
		if (w->keepalive) {
			uint64_t t0 = now_ns();
			rc = keel_lock_client_renew(w->c.kl);
			lat = now_ns() - t0;
		} else {
			rc = cycle(&w->c, name, &lat);
		}
		if (rc < 0) {
			if (!w->errors++ && w->c.sys == SYS_KEEL)
				fprintf(stderr, "bench-lock: keel client %d: %s (%s)\n", w->c.id,
					keel_strerror(rc), keel_lock_client_errmsg(w->c.kl));
			continue;
		}
		w->cycles++;
		if (w->nlat == w->cap) {
			size_t nc = w->cap ? w->cap * 2 : 4096;
			uint64_t *np = realloc(w->lat, nc * sizeof(*np));
			if (!np)
				continue;
			w->lat = np;
			w->cap = nc;
		}
		w->lat[w->nlat++] = lat;
	}
	return NULL;
}

struct result {
	bool ran;
	double per_s, p50_ms, p99_ms, fairness;
	uint64_t errors;
	int failed_open;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static struct result load(enum sys s, int n, bool contended, bool keepalive, double seconds)
{
	struct result r = {0};
	if (!have[s])
		return r;
	struct worker *w = calloc((size_t)n, sizeof(*w));
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
	for (int i = 0; i < n; i++) {
		w[i] = (struct worker){.c = {.sys = s, .id = i}, .contended = contended,
				       .keepalive = keepalive, .start = &bar};
		w[i].deadline = UINT64_MAX;
	}
	for (int i = 0; i < n; i++)
		pthread_create(&w[i].th, NULL, worker_main, &w[i]);
	/* the clock starts once every client is connected */
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
	for (int i = 0; i < n; i++)
		w[i].deadline = end;
	pthread_barrier_wait(&bar);
	t0 = now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	for (int i = 0; i < n; i++)
		__atomic_store_n(&w[i].deadline, end, __ATOMIC_RELEASE);
	size_t total = 0;
	uint64_t cycles = 0, minc = UINT64_MAX;
	for (int i = 0; i < n; i++) {
		pthread_join(w[i].th, NULL);
		total += w[i].nlat;
		cycles += w[i].cycles;
		r.errors += w[i].errors;
		if (w[i].open_rc < 0)
			r.failed_open++;
		else if (w[i].cycles < minc)
			minc = w[i].cycles;
	}
	double el = (double)(now_ns() - t0) / 1e9;
	uint64_t *all = malloc((total ? total : 1) * sizeof(*all));
	size_t k = 0;
	for (int i = 0; i < n; i++) {
		memcpy(all + k, w[i].lat, w[i].nlat * sizeof(*all));
		k += w[i].nlat;
		free(w[i].lat);
		client_close(&w[i].c);
	}
	qsort(all, total, sizeof(*all), cmp_u64);
	r.ran = total > 0;
	r.per_s = (double)cycles / el;
	r.p50_ms = total ? all[total / 2] / 1e6 : 0;
	r.p99_ms = total ? all[total * 99 / 100] / 1e6 : 0;
	double mean = n - r.failed_open > 0 ? (double)cycles / (n - r.failed_open) : 0;
	r.fairness = mean > 0 && minc != UINT64_MAX ? (double)minc / mean : 0;
	free(all);
	free(w);
	pthread_barrier_destroy(&bar);
	return r;
}

/* ---- report -------------------------------------------------------------------- */

static void json_line(const char *cas, const char *unit, double keel, enum sys peer,
		      const struct result *pr, double peer_v, const char *better, double target)
{
	printf("{\"bench\":\"lock\",\"case\":\"%s\",\"unit\":\"%s\",\"keel\":%.2f", cas, unit, keel);
	if (peer == NSYS) {
		printf("}\n");
		return;
	}
	if (have[peer] && pr->ran && peer_v > 0) {
		double ratio = keel / peer_v;
		bool meets = target <= 0 ||
			     (!strcmp(better, "higher") ? ratio >= target : ratio <= target);
		printf(",\"peer\":\"%s\",\"peer_value\":%.2f,\"ratio\":%.3f,\"better\":\"%s\"",
		       sys_name[peer], peer_v, ratio, better);
		if (target > 0)
			printf(",\"target\":%.2f,\"meets\":%s", target, meets ? "true" : "false");
		printf("}\n");
	} else {
		printf(",\"peer\":\"%s\",\"peer_value\":null,\"better\":\"%s\",\"note\":\"%s\"}\n",
		       sys_name[peer], better, have[peer] ? "the peer's run failed" : why[peer]);
	}
}

int main(int argc, char **argv)
{
	bool quick = false;
	double seconds = 5;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--keel") && i + 1 < argc)
			keel_bin = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else {
			fprintf(stderr, "usage: bench-lock --keel KEEL_BINARY [--quick] [--seconds N]\n");
			return 2;
		}
	}
	if (!keel_bin) {
		fprintf(stderr, "bench-lock: --keel KEEL_BINARY is needed\n");
		return 2;
	}
	if (quick)
		seconds = 1;
	signal(SIGPIPE, SIG_IGN);
	snprintf(work, sizeof(work), "/tmp/keel-bench-lock.XXXXXX");
	if (!mkdtemp(work)) {
		perror("mkdtemp");
		return 1;
	}
	char cdir[400], path[500];
	snprintf(cdir, sizeof(cdir), "%s/keel", work);
	if (run("'%s' cluster up --nodes 3 --shards 2 --groups 8 --dir '%s' >/dev/null 2>&1", keel_bin,
		cdir)) {
		fprintf(stderr, "bench-lock: keel cluster up failed\n");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/endpoints", cdir);
	read_file(path, endpoints, sizeof(endpoints));
	snprintf(path, sizeof(path), "%s/client-token", cdir);
	read_file(path, ktoken, sizeof(ktoken));
	have[SYS_KEEL] = true;
	/* the peers that need quick runs too: all of them, in quick mode
	 * only those already installed (nothing is fetched here) */
	have[SYS_ETCD] = etcd_start();
	have[SYS_ZK] = zk_start();
	have[SYS_REDIS] = redis_start();
	for (int s = 1; s < NSYS; s++)
		if (!have[s])
			fprintf(stderr, "bench-lock: %s: %s\n", sys_name[s], why[s]);

	int many = quick ? 8 : 64;
	struct {
		const char *name;
		int n;
		bool contended;
	} cases[] = {{"1 client, own lock", 1, false},
		     {"N clients, own locks", many, false},
		     {"N clients, one lock", many, true}};
	struct result res[3][NSYS];
	printf("bench lock: 3-node keel (2 shards, 8 groups), 3-member etcd 3.4, 3-server ZooKeeper "
	       "3.8, 1 redis-server (appendfsync always); %.0f s per case; N = %d\n",
	       seconds, many);
	printf("%-24s %-14s %12s %10s %10s %9s %7s\n", "case", "system", "cycles/s", "p50 ms",
	       "p99 ms", "fairness", "errors");
	for (int k = 0; k < 3; k++) {
		for (int s = 0; s < NSYS; s++) {
			res[k][s] = load((enum sys)s, cases[k].n, cases[k].contended, false, seconds);
			if (!have[s])
				continue;
			printf("%-24s %-14s %12.0f %10.2f %10.2f %9.2f %7" PRIu64 "%s\n", cases[k].name,
			       sys_name[s], res[k][s].per_s, res[k][s].p50_ms, res[k][s].p99_ms,
			       res[k][s].fairness, res[k][s].errors,
			       res[k][s].failed_open ? " (clients failed to connect)" : "");
		}
	}
	struct result ka = load(SYS_KEEL, many, false, true, seconds);
	printf("%-24s %-14s %12.0f %10.2f %10.2f   (keepalive round trips/s, per-group tick "
	       "batching)\n",
	       "N clients, keepalives", "keel", ka.per_s, ka.p50_ms, ka.p99_ms);

	static const char *const cn[3] = {"cycles_per_s_1", "cycles_per_s_n", "grants_per_s_contended"};
	for (int k = 0; k < 3; k++)
		for (int s = 1; s < NSYS; s++) {
			double target = k == 1 && s != SYS_REDIS ? 20.0 : (s == SYS_REDIS ? 0.5 : 0);
			json_line(cn[k], "1/s", res[k][0].per_s, (enum sys)s, &res[k][s],
				  res[k][s].per_s, "higher", target);
		}
	for (int s = 1; s < NSYS; s++) {
		json_line("acquire_p99_ms_1_vs_peer_p50", "ms", res[0][0].p99_ms, (enum sys)s, &res[0][s],
			  res[0][s].p50_ms, "lower", s == SYS_ZK ? 1.0 : 0);
		json_line("acquire_p50_ms_n", "ms", res[1][0].p50_ms, (enum sys)s, &res[1][s],
			  res[1][s].p50_ms, "lower", 0);
	}
	json_line("fairness_contended", "min/mean", res[2][0].fairness, NSYS, NULL, 0, "higher", 0);
	json_line("keepalives_per_s", "1/s", ka.per_s, NSYS, NULL, 0, "higher", 0);

	stop_pids(etcd_pid, 3);
	stop_pids(zk_pid, 3);
	stop_pids(&redis_pid, 1);
	run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel_bin, cdir);
	run("rm -rf '%s'", work);
	return res[0][0].ran ? 0 : 1;
}
