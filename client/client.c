/*
 * client/client.c — the C client library (keel/client.h): blocking calls
 * over the client protocol (keel/proto.h), one TCP connection per node it
 * talks to, poll() for deadlines.
 *
 * Routing: the group of a key is keel_service_group_of(key, groups), as
 * the nodes compute it; leader[g] caches the node that last answered for
 * group g or was named in a KEEL_ENOTLEADER hint. A call goes to that
 * node's connection if one is known, else to the current endpoint; on
 * KEEL_ENOTLEADER it follows the hint (connecting to endpoints it has not
 * identified yet to find that node), on a broken connection or no hint it
 * moves to the next endpoint, with backoff, until the deadline.
 */
#include "keel/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "keel/kv.h"
#include "keel/proto.h"
#include "keel/services.h"

#define MAX_ENDPOINTS 32
#define MAX_GROUPS 4096

struct conn {
	char host[256];
	char port[8];
	int fd;              /* -1: not connected */
	uint32_t node;       /* from HELLO_OK; 0 until then */
	uint8_t *rbuf;
	size_t rlen, rcap;
	/* pipelined calls: frames not sent yet, and requests sent here */
	uint8_t *obuf;
	size_t olen, ocap;
	unsigned inflight;
};

struct async;
static void async_free(struct async *as);

struct keel_client {
	struct keel_client_config cfg;
	char token[KEEL_PROTO_MAX_TOKEN + 1];
	struct conn ep[MAX_ENDPOINTS];
	unsigned nep;
	unsigned cur;        /* the endpoint tried first when no leader is known */
	uint32_t groups;
	uint32_t *leader;    /* [groups]: node id, 0 unknown */
	uint64_t id, seq, next_req;
	uint8_t *wbuf;
	size_t wcap;
	struct async *as;    /* pipelined calls, from the first one */
	char err[KEEL_ERRMSG_LEN];
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int fail(struct keel_client *c, int code, const char *fmt, ...) KEEL_PRINTF(3, 4);
static int fail(struct keel_client *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return code;
}

const char *keel_client_errmsg(const struct keel_client *c)
{
	return c->err;
}

static void conn_close(struct conn *k)
{
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
	k->rlen = 0;
	k->olen = 0;
	k->inflight = 0;
}

/* ---- frames on a connection -------------------------------------------- */

static int send_all(struct conn *k, const uint8_t *p, size_t n, uint64_t deadline)
{
	while (n) {
		ssize_t w = send(k->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		uint64_t t = now_ms();
		if (t >= deadline)
			return KEEL_ETIMEOUT;
		struct pollfd pf = {.fd = k->fd, .events = POLLOUT};
		if (poll(&pf, 1, (int)(deadline - t)) < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

/* Reads until one whole frame is buffered; returns its length. */
static int recv_frame(struct conn *k, uint64_t deadline)
{
	for (;;) {
		int fl = keel_proto_frame_len(k->rbuf, k->rlen);
		if (fl < 0)
			return fl;
		if (fl > 0 && (size_t)fl <= k->rlen)
			return fl;
		size_t want = fl > 0 && (size_t)fl > 65536 ? (size_t)fl : 65536;
		if (want > k->rcap) {
			uint8_t *b = realloc(k->rbuf, want);
			if (!b)
				return -ENOMEM;
			k->rbuf = b;
			k->rcap = want;
		}
		ssize_t r = recv(k->fd, k->rbuf + k->rlen, k->rcap - k->rlen, 0);
		if (r > 0) {
			k->rlen += (size_t)r;
			continue;
		}
		if (r == 0)
			return -ECONNRESET;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		uint64_t t = now_ms();
		if (t >= deadline)
			return KEEL_ETIMEOUT;
		struct pollfd pf = {.fd = k->fd, .events = POLLIN};
		if (poll(&pf, 1, (int)(deadline - t)) < 0 && errno != EINTR)
			return -errno;
	}
}

static void consume(struct conn *k, size_t n)
{
	memmove(k->rbuf, k->rbuf + n, k->rlen - n);
	k->rlen -= n;
}

/* Sends m and waits for the answer with its id (pushed frames, id 0, are
 * dropped: the blocking API has no watches). The answer borrows from the
 * connection's buffer until the next call on it; *used is its length, to
 * consume afterwards. */
static int roundtrip(struct keel_client *c, struct conn *k, struct keel_proto_msg *m,
		     struct keel_proto_msg *ans, size_t *used, uint64_t deadline)
{
	m->id = ++c->next_req;
	size_t need = keel_proto_size(m);
	if (!need)
		return fail(c, KEEL_ETOOBIG, "request over the protocol's limits");
	if (need > c->wcap) {
		uint8_t *b = realloc(c->wbuf, need);
		if (!b)
			return fail(c, -ENOMEM, "out of memory");
		c->wbuf = b;
		c->wcap = need;
	}
	int n = keel_proto_encode(m, c->wbuf, c->wcap);
	if (n < 0)
		return fail(c, n, "encoding the request: %s", keel_strerror(n));
	int rc = send_all(k, c->wbuf, (size_t)n, deadline);
	if (rc < 0)
		return rc;
	for (;;) {
		int fl = recv_frame(k, deadline);
		if (fl < 0)
			return fl;
		const char *why = NULL;
		rc = keel_proto_decode(k->rbuf, (size_t)fl, ans, &why);
		if (rc < 0) {
			fail(c, KEEL_EPROTO, "%s:%s sent a bad frame: %s", k->host, k->port, why);
			return KEEL_EPROTO;
		}
		if (ans->type == KEEL_PROTO_ERROR) {
			int st = ans->status ? ans->status : KEEL_EPROTO;
			fail(c, st, "%s:%s: %.*s", k->host, k->port, (int)ans->message.len,
			     ans->message.p ? (const char *)ans->message.p : "");
			consume(k, (size_t)fl);
			return st;
		}
		if (ans->id == m->id) {
			*used = (size_t)fl;
			return 0;
		}
		consume(k, (size_t)fl); /* a push, or a late answer to an abandoned call */
	}
}

/* ---- connecting ---------------------------------------------------------- */

static int dial(struct conn *k, uint64_t deadline)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	int g = getaddrinfo(k->host, k->port, &hints, &ai);
	if (g)
		return KEEL_EUNAVAIL;
	int rc = KEEL_EUNAVAIL;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
			rc = -errno;
			close(fd);
			continue;
		}
		uint64_t t = now_ms();
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		int pr = t < deadline ? poll(&pf, 1, (int)(deadline - t)) : 0;
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
			rc = pr == 0 ? KEEL_ETIMEOUT : -(soerr ? soerr : errno);
			close(fd);
			continue;
		}
		k->fd = fd;
		rc = 0;
		break;
	}
	freeaddrinfo(ai);
	return rc;
}

static int dial_hello(struct keel_client *c, struct conn *k, uint64_t deadline);

/* Connects endpoint i if needed and says hello. */
static int ensure(struct keel_client *c, unsigned i, uint64_t deadline)
{
	struct conn *k = &c->ep[i];
	if (k->fd >= 0)
		return 0;
	return dial_hello(c, k, deadline);
}

/* Connects k (not connected) and says hello: k->node, and the cluster's
 * group count on the first. */
static int dial_hello(struct keel_client *c, struct conn *k, uint64_t deadline)
{
	int rc = dial(k, deadline);
	if (rc < 0)
		return fail(c, rc, "%s:%s: %s", k->host, k->port, keel_strerror(rc));
	struct keel_proto_msg m = {.type = KEEL_PROTO_HELLO, .client = c->id};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	if (c->token[0]) {
		m.token = (struct keel_proto_bytes){(const uint8_t *)c->token, (uint32_t)strlen(c->token)};
		keel_proto_set(&m, KEEL_PT_TOKEN);
	}
	struct keel_proto_msg a;
	size_t used;
	rc = roundtrip(c, k, &m, &a, &used, deadline);
	if (rc == 0 && (a.type != KEEL_PROTO_HELLO_OK || !a.node || !a.groups ||
			a.groups > MAX_GROUPS))
		rc = fail(c, KEEL_EPROTO, "%s:%s: not a keel client port (no HELLO_OK)", k->host,
			  k->port);
	if (rc < 0) {
		if (!c->err[0] || rc == KEEL_ETIMEOUT || rc == -ECONNRESET)
			fail(c, rc, "%s:%s: hello: %s", k->host, k->port, keel_strerror(rc));
		conn_close(k);
		return rc;
	}
	k->node = a.node;
	if (!c->groups) {
		c->leader = calloc(a.groups, sizeof(*c->leader));
		if (!c->leader) {
			consume(k, used);
			conn_close(k);
			return fail(c, -ENOMEM, "out of memory");
		}
		c->groups = a.groups;
	} else if (a.groups != c->groups) {
		consume(k, used);
		conn_close(k);
		return fail(c, KEEL_ECONFIG, "%s:%s runs %u groups, another node %u: not one cluster",
			    k->host, k->port, a.groups, c->groups);
	}
	consume(k, used);
	return 0;
}

static int conn_of_node(struct keel_client *c, uint32_t node, uint64_t deadline)
{
	for (unsigned i = 0; i < c->nep; i++)
		if (c->ep[i].node == node && ensure(c, i, deadline) == 0)
			return (int)i;
	/* endpoints not identified yet: one of them may be that node */
	for (unsigned i = 0; i < c->nep; i++)
		if (c->ep[i].node == 0 && ensure(c, i, deadline) == 0 && c->ep[i].node == node)
			return (int)i;
	return -1;
}

int keel_client_open(const struct keel_client_config *cfg, struct keel_client **out, char *errmsg)
{
	*out = NULL;
	if (!cfg->endpoints || !cfg->endpoints[0])
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "client: no endpoints given");
	if (cfg->token && strlen(cfg->token) > KEEL_PROTO_MAX_TOKEN)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "client: token longer than %u bytes",
				       KEEL_PROTO_MAX_TOKEN);
	struct keel_client *c = calloc(1, sizeof(*c));
	if (!c)
		return keel_errmsg_set(errmsg, -ENOMEM, "client: out of memory");
	c->cfg = *cfg;
	c->cfg.endpoints = NULL;
	c->cfg.token = NULL;
	if (cfg->token)
		snprintf(c->token, sizeof(c->token), "%s", cfg->token);
	if (!c->cfg.timeout_ms)
		c->cfg.timeout_ms = 5000;
	const char *p = cfg->endpoints;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n) {
			char one[300];
			const char *colon = NULL;
			if (n < sizeof(one)) {
				memcpy(one, p, n);
				one[n] = '\0';
				colon = strrchr(one, ':');
			}
			char *end = NULL;
			long port = colon ? strtol(colon + 1, &end, 10) : 0;
			if (!colon || colon == one || !end || *end || port < 1 || port > 65535 ||
			    c->nep == MAX_ENDPOINTS) {
				keel_errmsg_set(errmsg, KEEL_ECONFIG,
						"client: endpoint '%.*s': expected HOST:PORT (at most %u endpoints)",
						(int)n, p, MAX_ENDPOINTS);
				free(c);
				return KEEL_ECONFIG;
			}
			struct conn *k = &c->ep[c->nep++];
			snprintf(k->host, sizeof(k->host), "%.*s", (int)(colon - one), one);
			if (k->host[0] == '[' && k->host[strlen(k->host) - 1] == ']') {
				memmove(k->host, k->host + 1, strlen(k->host));
				k->host[strlen(k->host) - 1] = '\0';
			}
			snprintf(k->port, sizeof(k->port), "%ld", port);
			k->fd = -1;
		}
		p += n + (e ? 1 : 0);
	}
	if (!c->nep) {
		free(c);
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "client: no endpoints given");
	}
	c->id = cfg->client_id;
	while (!c->id) {
		uint64_t r = 0;
		int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
		if (fd < 0 || read(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
			r = keel_mix64(now_ms() ^ (uint64_t)getpid() << 32);
		if (fd >= 0)
			close(fd);
		c->id = r;
	}
	uint64_t deadline = now_ms() + c->cfg.timeout_ms;
	int rc = KEEL_EUNAVAIL;
	for (unsigned i = 0; i < c->nep && rc < 0; i++) {
		rc = ensure(c, i, deadline);
		if (rc == 0)
			c->cur = i;
		if (rc == KEEL_EAUTH)
			break;
	}
	if (rc < 0) {
		if (errmsg)
			snprintf(errmsg, KEEL_ERRMSG_LEN, "client: no endpoint answered: %.200s", c->err);
		keel_client_close(c);
		return rc == KEEL_EAUTH ? rc : KEEL_EUNAVAIL;
	}
	*out = c;
	return 0;
}

void keel_client_close(struct keel_client *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->nep; i++) {
		conn_close(&c->ep[i]);
		free(c->ep[i].rbuf);
		free(c->ep[i].obuf);
	}
	async_free(c->as);
	free(c->leader);
	free(c->wbuf);
	free(c);
}

/* ---- one call, routed and retried ---------------------------------------- */

/* The endpoint to send group g's request to: its leader's when known (and
 * to_leader), else the first that connects from the current one; -1. */
static int pick_conn(struct keel_client *c, uint32_t g, bool to_leader, uint64_t deadline)
{
	int i = -1;
	if (to_leader && g < c->groups && c->leader[g])
		i = conn_of_node(c, c->leader[g], deadline);
	for (unsigned t = 0; t < c->nep && i < 0; t++) {
		unsigned j = (c->cur + t) % c->nep;
		if (ensure(c, j, deadline) == 0)
			i = (int)j;
	}
	return i;
}

/* Sends m for group g (to its leader when to_leader) until an answer that
 * is not "not the leader" arrives or the deadline passes. On 0 *ans is the
 * answer (status field included) and *k the connection whose buffer holds
 * it (consume *used afterwards). */
static int call(struct keel_client *c, uint32_t g, bool to_leader, struct keel_proto_msg *m,
		struct keel_proto_msg *ans, struct conn **kout, size_t *used)
{
	uint64_t deadline = now_ms() + c->cfg.timeout_ms;
	unsigned backoff = 10, tries = 0;
	uint32_t last_hint = 0;
	int last = KEEL_EUNAVAIL;
	c->err[0] = '\0';
	if (keel_client_pending(c))
		return fail(c, KEEL_EBUSY, "pipelined calls are pending: keel_client_poll them first");
	while (now_ms() < deadline) {
		int i = pick_conn(c, g, to_leader, deadline);
		if (i >= 0) {
			struct conn *k = &c->ep[i];
			int rc = roundtrip(c, k, m, ans, used, deadline);
			if (rc == 0 && ans->type == KEEL_PROTO_RESULT && ans->status == KEEL_ENOTLEADER &&
			    to_leader) {
				uint32_t hint = ans->has[KEEL_PT_LEADER] ? ans->leader : 0;
				consume(k, *used);
				last = KEEL_ENOTLEADER;
				if (g < c->groups)
					c->leader[g] = hint != k->node ? hint : 0;
				if (!hint) {
					c->cur = (unsigned)(i + 1) % c->nep;
				} else if (hint != last_hint) {
					last_hint = hint;
					continue; /* follow a new hint at once */
				}
				/* the same hint again (that node unreachable or not
				 * leading yet): back off before trying again */
			} else if (rc == 0 && ans->type == KEEL_PROTO_RESULT &&
				   (ans->status == KEEL_ETIMEOUT || ans->status == KEEL_EUNAVAIL ||
				    ans->status == KEEL_ESTOPPED || ans->status == KEEL_EDURABLE)) {
				/* the node could not finish it in its time (its leader
				 * died under a read barrier, a proposal timed out) or
				 * its disk failed (full: the group stops there, while
				 * the others may have committed the entry): a read is
				 * safe to repeat, and a write too, with the same
				 * sequence (answered once from the table) */
				last = ans->status;
				fail(c, ans->status, "node %u: %.*s", k->node,
				     ans->message.len ? (int)ans->message.len : 200,
				     ans->message.len ? (const char *)ans->message.p
						      : keel_strerror(ans->status));
				consume(k, *used);
				if (g < c->groups)
					c->leader[g] = 0;
				c->cur = (unsigned)(i + 1) % c->nep;
			} else if (rc == 0) {
				if (to_leader && g < c->groups)
					c->leader[g] = k->node;
				*kout = k;
				return 0;
			} else if (rc == KEEL_EPROTO || rc == KEEL_EAUTH || rc == KEEL_ETOOBIG) {
				conn_close(k);
				return rc;
			} else {
				/* broken or silent connection: the outcome of a write
				 * is unknown; retry elsewhere with the same sequence */
				last = rc;
				conn_close(k);
				if (g < c->groups)
					c->leader[g] = 0;
				c->cur = (unsigned)(i + 1) % c->nep;
			}
		}
		tries++;
		uint64_t t = now_ms();
		if (t >= deadline)
			break;
		unsigned nap = backoff < deadline - t ? backoff : (unsigned)(deadline - t);
		struct timespec ts = {nap / 1000, (long)(nap % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		if (backoff < 200)
			backoff *= 2;
	}
	/* c->err is fail()'s destination: quote a copy of it */
	char prev[KEEL_ERRMSG_LEN];
	memcpy(prev, c->err, sizeof(prev));
	if (last == KEEL_ENOTLEADER || last == KEEL_EUNAVAIL)
		return fail(c, KEEL_EUNAVAIL, "no leader for group %u reachable within %u ms (%u tries%s%s)", g,
			    c->cfg.timeout_ms, tries, prev[0] ? "; last: " : "", prev);
	return fail(c, KEEL_ETIMEOUT, "no answer within %u ms (%s): the outcome is unknown",
		    c->cfg.timeout_ms, prev[0] ? prev : keel_strerror(last));
}

static uint32_t group_of(struct keel_client *c, const void *key, size_t len)
{
	return keel_service_group_of(key, len, c->groups ? c->groups : 1);
}

static int check_key(struct keel_client *c, size_t key_len, size_t value_len)
{
	if (key_len == 0 || key_len > KEEL_KV_MAX_KEY)
		return fail(c, KEEL_ETOOBIG, "a key is 1 to %u bytes (got %zu)", KEEL_KV_MAX_KEY, key_len);
	if (value_len > KEEL_KV_MAX_VALUE)
		return fail(c, KEEL_ETOOBIG, "a value is at most %u bytes (got %zu)", KEEL_KV_MAX_VALUE,
			    value_len);
	return 0;
}

static void fill_result(const struct keel_proto_msg *a, uint32_t g, const struct conn *k,
			struct keel_client_result *res)
{
	if (!res)
		return;
	*res = (struct keel_client_result){.group = g, .node = k->node, .rev = a->rev,
					   .mod_rev = a->mod_rev, .create_rev = a->create_rev,
					   .version = a->version,
					   .flags = a->flags & KEEL_PF_DUPLICATE ? KEEL_CLIENT_DUPLICATE : 0};
}

/* A write (PUT, DEL, CAS): one new sequence, kept across retries. */
static int kv_write(struct keel_client *c, struct keel_proto_msg *m, const void *key, size_t key_len,
		 struct keel_client_result *res, uint8_t *kv_status)
{
	uint32_t g = group_of(c, key, key_len);
	m->client = c->id;
	m->seq = ++c->seq;
	m->key = (struct keel_proto_bytes){key, (uint32_t)key_len};
	keel_proto_set(m, KEEL_PT_CLIENT);
	keel_proto_set(m, KEEL_PT_SEQ);
	keel_proto_set(m, KEEL_PT_KEY);
	struct keel_proto_msg a;
	struct conn *k;
	size_t used;
	int rc = call(c, g, true, m, &a, &k, &used);
	if (rc < 0)
		return rc;
	rc = a.status;
	*kv_status = a.kv_status;
	fill_result(&a, g, k, res);
	if (rc < 0)
		fail(c, rc, "node %u: %.*s", k->node, a.message.len ? (int)a.message.len : 200,
		     a.message.len ? (const char *)a.message.p : keel_strerror(rc));
	consume(k, used);
	return rc;
}

int keel_client_put(struct keel_client *c, const void *key, size_t key_len, const void *value,
		    size_t value_len, struct keel_client_result *res)
{
	int rc = check_key(c, key_len, value_len);
	if (rc < 0)
		return rc;
	struct keel_proto_msg m = {.type = KEEL_PROTO_PUT,
				   .value = {value, (uint32_t)value_len}};
	keel_proto_set(&m, KEEL_PT_VALUE);
	uint8_t st;
	return kv_write(c, &m, key, key_len, res, &st);
}

int keel_client_del(struct keel_client *c, const void *key, size_t key_len,
		    struct keel_client_result *res)
{
	int rc = check_key(c, key_len, 0);
	if (rc < 0)
		return rc;
	struct keel_proto_msg m = {.type = KEEL_PROTO_DEL};
	uint8_t st = 0;
	rc = kv_write(c, &m, key, key_len, res, &st);
	if (rc == 0 && st == KEEL_KV_NOT_FOUND)
		return fail(c, KEEL_ENOTFOUND, "no such key");
	return rc;
}

int keel_client_cas(struct keel_client *c, const void *key, size_t key_len, const void *expect,
		    size_t expect_len, const void *value, size_t value_len,
		    struct keel_client_result *res)
{
	int rc = check_key(c, key_len, value_len > expect_len ? value_len : expect_len);
	if (rc < 0)
		return rc;
	struct keel_proto_msg m = {.type = KEEL_PROTO_CAS, .value = {value, (uint32_t)value_len},
				   .cmp = expect ? KEEL_KV_CMP_VALUE : KEEL_KV_CMP_ABSENT};
	keel_proto_set(&m, KEEL_PT_VALUE);
	keel_proto_set(&m, KEEL_PT_CMP);
	if (expect) {
		m.expect = (struct keel_proto_bytes){expect, (uint32_t)expect_len};
		keel_proto_set(&m, KEEL_PT_EXPECT);
	}
	uint8_t st = 0;
	rc = kv_write(c, &m, key, key_len, res, &st);
	if (rc == 0 && st == KEEL_KV_CAS_FAILED)
		return fail(c, KEEL_ESTALE, "the comparison failed: the value is not the expected one");
	return rc;
}

int keel_client_get(struct keel_client *c, const void *key, size_t key_len, bool serializable,
		    void **value, size_t *value_len, struct keel_client_result *res)
{
	*value = NULL;
	*value_len = 0;
	int rc = check_key(c, key_len, 0);
	if (rc < 0)
		return rc;
	uint32_t g = group_of(c, key, key_len);
	struct keel_proto_msg m = {.type = KEEL_PROTO_GET, .key = {key, (uint32_t)key_len},
				   .flags = serializable ? KEEL_PF_SERIALIZABLE : 0};
	keel_proto_set(&m, KEEL_PT_KEY);
	keel_proto_set(&m, KEEL_PT_FLAGS);
	struct keel_proto_msg a;
	struct conn *k;
	size_t used;
	/* A linearizable read may be served by any node (its read barrier
	 * goes through the leader); the leader saves that hop. */
	rc = call(c, g, true, &m, &a, &k, &used);
	if (rc < 0)
		return rc;
	rc = a.status;
	if (rc == 0 && a.kv_status == KEEL_KV_NOT_FOUND)
		rc = fail(c, KEEL_ENOTFOUND, "no such key");
	else if (rc < 0)
		fail(c, rc, "node %u: %s", k->node, keel_strerror(rc));
	if (rc == 0) {
		uint8_t *v = malloc(a.value.len + 1);
		if (!v) {
			consume(k, used);
			return fail(c, -ENOMEM, "out of memory");
		}
		if (a.value.len)
			memcpy(v, a.value.p, a.value.len);
		v[a.value.len] = '\0';
		*value = v;
		*value_len = a.value.len;
	}
	fill_result(&a, g, k, res);
	consume(k, used);
	return rc;
}

void keel_client_free_value(void *value)
{
	free(value);
}

/* ---- range: every group, merged in key order ----------------------------- */

struct kvrow {
	uint8_t *key, *value;
	uint32_t key_len, value_len;
	uint64_t mod_rev;
};

static int row_cmp(const void *a, const void *b)
{
	const struct kvrow *x = a, *y = b;
	uint32_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
	int r = memcmp(x->key, y->key, n);
	if (r)
		return r;
	return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

int keel_client_range(struct keel_client *c, const void *prefix, size_t prefix_len, size_t limit,
		      bool serializable,
		      int (*fn)(void *arg, const void *key, size_t key_len, const void *value,
				size_t value_len, uint64_t mod_rev),
		      void *arg)
{
	if (prefix_len > KEEL_KV_MAX_KEY)
		return fail(c, KEEL_ETOOBIG, "a prefix is at most %u bytes", KEEL_KV_MAX_KEY);
	struct kvrow *rows = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	for (uint32_t g = 0; g < c->groups && rc == 0; g++) {
		/* page through the group: after the last key of each answer */
		uint8_t after[KEEL_KV_MAX_KEY];
		uint32_t after_len = 0;
		bool more = true;
		size_t got = 0;
		while (more && rc == 0 && (!limit || got < limit)) {
			struct keel_proto_msg m = {.type = KEEL_PROTO_RANGE, .group = g,
						   .key = {prefix, (uint32_t)prefix_len},
						   .flags = serializable ? KEEL_PF_SERIALIZABLE : 0,
						   .limit = limit ? (uint32_t)(limit - got) : 0};
			keel_proto_set(&m, KEEL_PT_GROUP);
			keel_proto_set(&m, KEEL_PT_KEY);
			keel_proto_set(&m, KEEL_PT_FLAGS);
			keel_proto_set(&m, KEEL_PT_LIMIT);
			if (after_len) {
				m.after = (struct keel_proto_bytes){after, after_len};
				keel_proto_set(&m, KEEL_PT_AFTER);
			}
			struct keel_proto_msg a;
			struct conn *k;
			size_t used;
			rc = call(c, g, true, &m, &a, &k, &used);
			if (rc < 0)
				break;
			if (a.status < 0) {
				rc = fail(c, a.status, "node %u, group %u: %s", k->node, g,
					  keel_strerror(a.status));
				consume(k, used);
				break;
			}
			more = a.flags & KEEL_PF_MORE;
			size_t pos = 0;
			struct keel_proto_item it;
			int r;
			while ((r = keel_proto_item_next(&a, &pos, &it)) == 1) {
				if (n == cap) {
					size_t nc = cap ? cap * 2 : 64;
					struct kvrow *nr = realloc(rows, nc * sizeof(*nr));
					if (!nr) {
						rc = fail(c, -ENOMEM, "out of memory");
						break;
					}
					rows = nr;
					cap = nc;
				}
				struct kvrow *row = &rows[n];
				row->key = malloc(it.key.len);
				row->value = malloc(it.value.len ? it.value.len : 1);
				if (!row->key || !row->value) {
					free(row->key);
					free(row->value);
					rc = fail(c, -ENOMEM, "out of memory");
					break;
				}
				memcpy(row->key, it.key.p, it.key.len);
				if (it.value.len)
					memcpy(row->value, it.value.p, it.value.len);
				row->key_len = it.key.len;
				row->value_len = it.value.len;
				row->mod_rev = it.mod_rev;
				memcpy(after, it.key.p, it.key.len);
				after_len = it.key.len;
				n++;
				got++;
			}
			if (r < 0 && rc == 0)
				rc = fail(c, KEEL_EPROTO, "node %u sent a bad range item", k->node);
			if (!a.n_items)
				more = false;
			consume(k, used);
		}
	}
	int given = 0;
	if (rc == 0) {
		qsort(rows, n, sizeof(*rows), row_cmp);
		for (size_t i = 0; i < n && (!limit || i < limit); i++) {
			given++;
			if (fn(arg, rows[i].key, rows[i].key_len, rows[i].value, rows[i].value_len,
			       rows[i].mod_rev))
				break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		free(rows[i].key);
		free(rows[i].value);
	}
	free(rows);
	return rc < 0 ? rc : given;
}

/* ---- status -------------------------------------------------------------- */

int keel_client_status(struct keel_client *c,
		       void (*fn)(void *arg, const struct keel_client_group_status *st),
		       void *arg)
{
	int rows = 0;
	uint64_t deadline = now_ms() + c->cfg.timeout_ms;
	for (unsigned i = 0; i < c->nep; i++) {
		struct conn *k = &c->ep[i];
		int rc = ensure(c, i, deadline);
		struct keel_proto_msg m = {.type = KEEL_PROTO_STATUS};
		struct keel_proto_msg a;
		size_t used = 0;
		if (rc == 0)
			rc = roundtrip(c, k, &m, &a, &used, deadline);
		if (rc < 0) {
			conn_close(k);
			struct keel_client_group_status st = {.group = UINT32_MAX, .node = k->node,
							      .status = rc};
			fn(arg, &st);
			rows++;
			continue;
		}
		/* the answer: one GROUP frame per group the node hosts, then
		 * a RESULT that ends it */
		while (a.type == KEEL_PROTO_GROUP) {
			struct keel_client_group_status st = {
				.group = a.group, .node = k->node, .leader = a.leader, .term = a.rev,
				.commit = a.index, .applied = a.applied, .status = a.status};
			fn(arg, &st);
			rows++;
			consume(k, used);
			int fl = recv_frame(k, deadline);
			if (fl < 0 || keel_proto_decode(k->rbuf, (size_t)fl, &a, NULL) < 0) {
				conn_close(k);
				used = 0;
				break;
			}
			used = (size_t)fl;
		}
		if (used)
			consume(k, used);
	}
	return rows;
}

/* ---- watch ------------------------------------------------------------------
 * A watch has a connection of its own (the blocking calls' connections drop
 * pushed frames), to one node at a time: any node serves watches, since
 * every replica applies every change. One server watch per group it covers
 * (a key: its group; a prefix: every group), each named by the id of the
 * WATCH request that opened it. next[g] is the revision to resume group g
 * from: the revision after the last event given to the caller, or the
 * asked start until an event arrives, or 0 ("from now") until the first
 * answer says which revision "now" was. After a broken connection (the
 * node killed, a snapshot installed past what the watch needed) the watch
 * moves to the next endpoint and reopens every group from next[g], so no
 * change is given twice or skipped; an event below next[g] (which a correct
 * node does not send) is dropped all the same. */

struct wgroup {
	uint32_t group;
	uint64_t next;   /* 0: from now (not started yet) */
	uint64_t wid;    /* the WATCH request's id on the current connection */
	bool started;
};

struct keel_client_watch {
	struct keel_client *c;
	struct conn k;
	unsigned cur;          /* the endpoint k is (or was last) connected to */
	unsigned stale;        /* endpoints in a row whose history was too short */
	bool prefix;
	uint32_t n;
	struct wgroup *g;
	uint8_t *ev;           /* the last event's key and value */
	size_t evcap;
	uint8_t *key;
	uint32_t key_len;
};

static void watch_drop(struct keel_client_watch *w)
{
	conn_close(&w->k);
	for (uint32_t i = 0; i < w->n; i++)
		w->g[i].started = false;
}

/* Connects to the current endpoint and opens every group's watch there
 * (the answers are read by keel_client_watch_next). */
static int watch_connect(struct keel_client_watch *w, uint64_t deadline)
{
	struct keel_client *c = w->c;
	struct conn *src = &c->ep[w->cur];
	memcpy(w->k.host, src->host, sizeof(w->k.host));
	memcpy(w->k.port, src->port, sizeof(w->k.port));
	int rc = dial_hello(c, &w->k, deadline);
	if (rc < 0)
		return rc;
	for (uint32_t i = 0; i < w->n && rc == 0; i++) {
		struct wgroup *g = &w->g[i];
		struct keel_proto_msg m = {.type = KEEL_PROTO_WATCH, .id = ++c->next_req,
					   .group = g->group, .key = {w->key, w->key_len},
					   .flags = w->prefix ? KEEL_PF_PREFIX : 0, .rev = g->next};
		keel_proto_set(&m, KEEL_PT_GROUP);
		keel_proto_set(&m, KEEL_PT_KEY);
		keel_proto_set(&m, KEEL_PT_FLAGS);
		if (g->next)
			keel_proto_set(&m, KEEL_PT_REV);
		g->wid = m.id;
		size_t need = keel_proto_size(&m);
		if (need > c->wcap) {
			uint8_t *b = realloc(c->wbuf, need);
			if (!b) {
				rc = fail(c, -ENOMEM, "out of memory");
				break;
			}
			c->wbuf = b;
			c->wcap = need;
		}
		int len = keel_proto_encode(&m, c->wbuf, c->wcap);
		rc = len < 0 ? len : send_all(&w->k, c->wbuf, (size_t)len, deadline);
	}
	if (rc < 0) {
		if (rc != -ENOMEM)
			fail(c, rc, "%s:%s: opening the watch: %s", w->k.host, w->k.port, keel_strerror(rc));
		watch_drop(w);
	}
	return rc;
}

int keel_client_watch_open(struct keel_client *c, const void *key, size_t key_len, bool prefix,
			   uint64_t from_rev, struct keel_client_watch **out)
{
	*out = NULL;
	c->err[0] = '\0';
	if ((!prefix && !key_len) || key_len > KEEL_KV_MAX_KEY)
		return fail(c, KEEL_ETOOBIG, "a watched key is 1 to %u bytes (a prefix 0 to %u)",
			    KEEL_KV_MAX_KEY, KEEL_KV_MAX_KEY);
	if (!c->groups)
		return fail(c, KEEL_EUNAVAIL, "no node has answered yet");
	struct keel_client_watch *w = calloc(1, sizeof(*w));
	uint32_t n = prefix ? c->groups : 1;
	if (w) {
		w->g = calloc(n, sizeof(*w->g));
		w->key = malloc(key_len ? key_len : 1);
	}
	if (!w || !w->g || !w->key) {
		if (w) {
			free(w->g);
			free(w->key);
		}
		free(w);
		return fail(c, -ENOMEM, "out of memory");
	}
	w->c = c;
	w->k.fd = -1;
	w->cur = c->cur;
	w->prefix = prefix;
	w->n = n;
	if (key_len)
		memcpy(w->key, key, key_len);
	w->key_len = (uint32_t)key_len;
	for (uint32_t i = 0; i < n; i++)
		w->g[i] = (struct wgroup){.group = prefix ? i : group_of(c, key, key_len),
					  .next = from_rev};
	*out = w;
	return 0;
}

uint64_t keel_client_watch_revision(const struct keel_client_watch *w, uint32_t group)
{
	for (uint32_t i = 0; i < w->n; i++)
		if (w->g[i].group == group)
			return w->g[i].next;
	return 0;
}

/* The group whose watch has id wid on the current connection. */
static struct wgroup *wgroup_of(struct keel_client_watch *w, uint64_t wid)
{
	for (uint32_t i = 0; i < w->n; i++)
		if (w->g[i].wid == wid)
			return &w->g[i];
	return NULL;
}

static void watch_next_endpoint(struct keel_client_watch *w)
{
	watch_drop(w);
	w->cur = (w->cur + 1) % w->c->nep;
}

int keel_client_watch_next(struct keel_client_watch *w, uint32_t timeout_ms,
			   struct keel_client_event *ev)
{
	struct keel_client *c = w->c;
	uint64_t deadline = now_ms() + timeout_ms;
	unsigned backoff = 10;
	c->err[0] = '\0';
	for (;;) {
		if (w->k.fd < 0) {
			if (watch_connect(w, deadline) < 0) {
				watch_next_endpoint(w);
				uint64_t t = now_ms();
				if (t >= deadline)
					return 0;
				unsigned nap = backoff < deadline - t ? backoff : (unsigned)(deadline - t);
				struct timespec ts = {nap / 1000, (long)(nap % 1000) * 1000000L};
				nanosleep(&ts, NULL);
				if (backoff < 200)
					backoff *= 2;
				continue;
			}
		}
		int fl = recv_frame(&w->k, deadline);
		if (fl == KEEL_ETIMEOUT)
			return 0;
		struct keel_proto_msg m;
		const char *why = NULL;
		if (fl < 0 || keel_proto_decode(w->k.rbuf, (size_t)fl, &m, &why) < 0) {
			/* the node went away (or sent garbage): resume elsewhere */
			fail(c, fl < 0 ? fl : KEEL_EPROTO, "%s:%s: %s", w->k.host, w->k.port,
			     fl < 0 ? keel_strerror(fl) : why);
			watch_next_endpoint(w);
			continue;
		}
		if (m.type == KEEL_PROTO_ERROR) {
			int st = m.status ? m.status : KEEL_EPROTO;
			fail(c, st, "%s:%s: %.*s", w->k.host, w->k.port, (int)m.message.len,
			     m.message.len ? (const char *)m.message.p : "");
			watch_next_endpoint(w);
			if (st == KEEL_EAUTH)
				return st;
			continue;
		}
		struct wgroup *g = m.type == KEEL_PROTO_RESULT ? wgroup_of(w, m.id)
			       : m.type == KEEL_PROTO_EVENT  ? wgroup_of(w, m.watch_id)
							     : NULL;
		if (!g) {
			consume(&w->k, (size_t)fl);
			continue;
		}
		if (m.type == KEEL_PROTO_RESULT) {
			int st = m.status;
			if (st == 0) {
				g->started = true;
				w->stale = 0;
				if (!g->next)
					g->next = m.rev + 1;
				consume(&w->k, (size_t)fl);
				continue;
			}
			fail(c, st, "node %u, group %u: %.*s", w->k.node, g->group,
			     m.message.len ? (int)m.message.len : 200,
			     m.message.len ? (const char *)m.message.p : keel_strerror(st));
			consume(&w->k, (size_t)fl);
			if (st == KEEL_ESTALE && ++w->stale < c->nep) {
				/* this node's history is too short: another may have it */
				watch_next_endpoint(w);
				continue;
			}
			watch_drop(w);
			return st;
		}
		/* an EVENT */
		if (m.status == KEEL_ESTALE) {
			/* this replica skipped revisions by a snapshot: resume elsewhere */
			fail(c, KEEL_ESTALE, "node %u, group %u: %.*s", w->k.node, g->group,
			     (int)m.message.len, m.message.len ? (const char *)m.message.p : "");
			watch_next_endpoint(w);
			continue;
		}
		if (m.rev < g->next || !m.has[KEEL_PT_KEY]) {
			consume(&w->k, (size_t)fl);
			continue;
		}
		size_t need = (size_t)m.key.len + m.value.len + 1;
		if (need > w->evcap) {
			uint8_t *b = realloc(w->ev, need);
			if (!b) {
				watch_drop(w);
				return fail(c, -ENOMEM, "out of memory");
			}
			w->ev = b;
			w->evcap = need;
		}
		memcpy(w->ev, m.key.p, m.key.len);
		if (m.value.len)
			memcpy(w->ev + m.key.len, m.value.p, m.value.len);
		w->ev[m.key.len + m.value.len] = '\0';
		*ev = (struct keel_client_event){.group = g->group, .node = w->k.node, .rev = m.rev,
						 .deleted = (m.flags & KEEL_PF_DELETED) != 0,
						 .key = w->ev, .key_len = m.key.len,
						 .value = w->ev + m.key.len, .value_len = m.value.len};
		g->next = m.rev + 1;
		consume(&w->k, (size_t)fl);
		return 1;
	}
}

void keel_client_watch_close(struct keel_client_watch *w)
{
	if (!w)
		return;
	/* closing the connection ends every server watch on it */
	conn_close(&w->k);
	free(w->k.rbuf);
	free(w->g);
	free(w->key);
	free(w->ev);
	free(w);
}

/* ---- pipelined calls ----------------------------------------------------------
 * Many requests in flight per connection: a submitted request is encoded
 * once into its slot and queued; keel_client_poll sends queued requests
 * (to their group's leader, as the blocking calls route), reads every
 * answer that has arrived, and completes, redirects or requeues each as
 * call() would (a hint followed at once, the same hint again or a node
 * that could not finish it after a backoff, a broken connection's requests
 * resent elsewhere). Answers are matched by id; the id names the slot
 * (low 16 bits) and its use (the rest), so a late answer to a request
 * that timed out is recognized and dropped.
 *
 * Exactly once: a node's client table keeps one (sequence, answer) per
 * client id, the latest. Pipelined writes of one id would supersede each
 * other's entries, and a resent older write could then not be told
 * "applied" from "not applied". So the writes in flight hold lanes: lane i
 * is a client id of its own with its own sequence, carrying one write at a
 * time; a resend reuses the lane and its sequence, and the table answers
 * it exactly as it answers a blocking call's retry. */

struct areq {
	uint64_t id;          /* 0: free */
	uint8_t type;         /* KEEL_PROTO_PUT, DEL, CAS, GET */
	uint32_t group;
	int lane;             /* writes: the lane held; -1 for reads */
	int on;               /* the endpoint it was sent on; -1: queued */
	uint64_t deadline, not_before;
	unsigned backoff;
	uint32_t last_hint;
	keel_client_done_fn *cb;
	void *arg;
	uint8_t *frame;
	size_t frame_len;
	struct areq *qnext;   /* the queue of requests to send */
};

struct lane {
	uint64_t client, seq;
	bool busy;
};

struct async {
	uint32_t max;
	struct areq *slot;    /* [max] */
	struct lane *lane;    /* [max] */
	uint32_t n;           /* slots in use */
	uint64_t gen;
	struct areq *qhead, *qtail;
};

static void async_free(struct async *as)
{
	if (!as)
		return;
	for (uint32_t i = 0; i < as->max; i++)
		free(as->slot[i].frame);
	free(as->slot);
	free(as->lane);
	free(as);
}

size_t keel_client_pending(const struct keel_client *c)
{
	return c->as ? c->as->n : 0;
}

static struct async *async_of(struct keel_client *c)
{
	if (c->as)
		return c->as;
	struct async *as = calloc(1, sizeof(*as));
	uint32_t max = c->cfg.max_inflight ? c->cfg.max_inflight : 256;
	if (max > 65535)
		max = 65535;
	if (as) {
		as->max = max;
		as->slot = calloc(max, sizeof(*as->slot));
		as->lane = calloc(max, sizeof(*as->lane));
	}
	if (!as || !as->slot || !as->lane) {
		async_free(as);
		return NULL;
	}
	for (uint32_t i = 0; i < max; i++) {
		/* an id of its own per lane, never 0, far from c->id */
		uint64_t id = keel_mix64(c->id + 0x9e3779b97f4a7c15ull * (i + 1));
		as->lane[i].client = id ? id : 1;
	}
	c->as = as;
	return as;
}

static void enqueue(struct async *as, struct areq *r)
{
	r->on = -1;
	r->qnext = NULL;
	if (as->qtail)
		as->qtail->qnext = r;
	else
		as->qhead = r;
	as->qtail = r;
}

/* Frees r's slot (and lane) and tells its caller. */
static void complete(struct keel_client *c, struct areq *r, int status,
		     const struct keel_client_result *res, const void *value, size_t value_len)
{
	struct async *as = c->as;
	keel_client_done_fn *cb = r->cb;
	void *arg = r->arg;
	if (r->lane >= 0)
		as->lane[r->lane].busy = false;
	r->id = 0;
	as->n--;
	cb(arg, status, res, value, value_len);
}

static int submit(struct keel_client *c, struct keel_proto_msg *m, uint32_t g,
		  keel_client_done_fn *cb, void *arg)
{
	if (!cb)
		return fail(c, KEEL_EBADINPUT, "a pipelined call needs a callback");
	struct async *as = async_of(c);
	if (!as)
		return fail(c, -ENOMEM, "out of memory");
	if (as->n == as->max)
		return fail(c, KEEL_EFULL, "%u calls in flight: poll some to completion first", as->max);
	uint32_t si = 0;
	while (as->slot[si].id)
		si++;
	struct areq *r = &as->slot[si];
	int lane = -1;
	if (m->type != KEEL_PROTO_GET) {
		lane = 0;
		while (as->lane[lane].busy)
			lane++; /* as many lanes as slots: one is free */
		struct lane *l = &as->lane[lane];
		m->client = l->client;
		m->seq = ++l->seq;
		keel_proto_set(m, KEEL_PT_CLIENT);
		keel_proto_set(m, KEEL_PT_SEQ);
	}
	m->id = (++as->gen << 16) | si;
	size_t need = keel_proto_size(m);
	if (!need)
		return fail(c, KEEL_ETOOBIG, "request over the protocol's limits");
	uint8_t *f = realloc(r->frame, need);
	if (!f)
		return fail(c, -ENOMEM, "out of memory");
	r->frame = f;
	int n = keel_proto_encode(m, f, need);
	if (n < 0)
		return fail(c, n, "encoding the request: %s", keel_strerror(n));
	if (lane >= 0)
		as->lane[lane].busy = true;
	r->id = m->id;
	r->type = m->type;
	r->group = g;
	r->lane = lane;
	r->frame_len = (size_t)n;
	r->deadline = now_ms() + c->cfg.timeout_ms;
	r->not_before = 0;
	r->backoff = 10;
	r->last_hint = 0;
	r->cb = cb;
	r->arg = arg;
	as->n++;
	enqueue(as, r);
	return 0;
}

int keel_client_put_async(struct keel_client *c, const void *key, size_t key_len, const void *value,
			  size_t value_len, keel_client_done_fn *cb, void *arg)
{
	int rc = check_key(c, key_len, value_len);
	if (rc < 0)
		return rc;
	struct keel_proto_msg m = {.type = KEEL_PROTO_PUT, .key = {key, (uint32_t)key_len},
				   .value = {value, (uint32_t)value_len}};
	keel_proto_set(&m, KEEL_PT_KEY);
	keel_proto_set(&m, KEEL_PT_VALUE);
	return submit(c, &m, group_of(c, key, key_len), cb, arg);
}

int keel_client_del_async(struct keel_client *c, const void *key, size_t key_len,
			  keel_client_done_fn *cb, void *arg)
{
	int rc = check_key(c, key_len, 0);
	if (rc < 0)
		return rc;
	struct keel_proto_msg m = {.type = KEEL_PROTO_DEL, .key = {key, (uint32_t)key_len}};
	keel_proto_set(&m, KEEL_PT_KEY);
	return submit(c, &m, group_of(c, key, key_len), cb, arg);
}

int keel_client_get_async(struct keel_client *c, const void *key, size_t key_len, bool serializable,
			  keel_client_done_fn *cb, void *arg)
{
	int rc = check_key(c, key_len, 0);
	if (rc < 0)
		return rc;
	struct keel_proto_msg m = {.type = KEEL_PROTO_GET, .key = {key, (uint32_t)key_len},
				   .flags = serializable ? KEEL_PF_SERIALIZABLE : 0};
	keel_proto_set(&m, KEEL_PT_KEY);
	keel_proto_set(&m, KEEL_PT_FLAGS);
	return submit(c, &m, group_of(c, key, key_len), cb, arg);
}

/* Resends r later (or at once with when 0), elsewhere unless a leader is known. */
static void requeue(struct keel_client *c, struct areq *r, uint64_t when)
{
	r->not_before = when;
	enqueue(c->as, r);
}

static void backoff_requeue(struct keel_client *c, struct areq *r, uint64_t t)
{
	requeue(c, r, t + r->backoff);
	if (r->backoff < 200)
		r->backoff *= 2;
}

/* Endpoint i broke: its requests go back to the queue. */
static void async_conn_failed(struct keel_client *c, unsigned i, uint64_t t)
{
	struct async *as = c->as;
	conn_close(&c->ep[i]);
	for (uint32_t s = 0; s < as->max; s++) {
		struct areq *r = &as->slot[s];
		if (r->id && r->on == (int)i) {
			if (r->group < c->groups)
				c->leader[r->group] = 0;
			backoff_requeue(c, r, t);
		}
	}
	if (c->cur == i)
		c->cur = (i + 1) % c->nep;
}

/* Sends what the queue holds that may go now; completes what is past its
 * deadline (in the queue or in flight). */
static void dispatch(struct keel_client *c, uint64_t t)
{
	struct async *as = c->as;
	for (uint32_t s = 0; s < as->max; s++) {
		struct areq *r = &as->slot[s];
		if (r->id && r->deadline <= t && r->on >= 0) {
			c->ep[r->on].inflight--;
			r->on = -2; /* completed below; its late answer is dropped */
		}
	}
	struct areq *keep = NULL, *keep_tail = NULL;
	struct areq *r = as->qhead;
	as->qhead = as->qtail = NULL;
	/* the rest of the queue, kept aside while callbacks may queue more */
	while (r) {
		struct areq *next = r->qnext;
		r->qnext = NULL;
		int i = -1;
		if (r->deadline > t && r->not_before <= t)
			i = pick_conn(c, r->group, true,
				      r->deadline < t + 1000 ? r->deadline : t + 1000);
		if (i >= 0) {
			struct conn *k = &c->ep[i];
			if (k->olen + r->frame_len > k->ocap) {
				size_t nc = k->ocap ? k->ocap : 65536;
				while (nc < k->olen + r->frame_len)
					nc *= 2;
				uint8_t *b = realloc(k->obuf, nc);
				if (!b)
					i = -1;
				else {
					k->obuf = b;
					k->ocap = nc;
				}
			}
		}
		if (i >= 0) {
			struct conn *k = &c->ep[i];
			memcpy(k->obuf + k->olen, r->frame, r->frame_len);
			k->olen += r->frame_len;
			k->inflight++;
			r->on = i;
		} else if (r->deadline > t) {
			if (r->not_before <= t)
				r->not_before = t + r->backoff; /* nothing reachable now */
			if (keep_tail)
				keep_tail->qnext = r;
			else
				keep = r;
			keep_tail = r;
		} else {
			r->on = -2;
		}
		r = next;
	}
	/* the ones kept go first, before anything the callbacks below queue */
	if (keep) {
		keep_tail->qnext = as->qhead;
		as->qhead = keep;
		if (!as->qtail)
			as->qtail = keep_tail;
	}
	for (uint32_t s = 0; s < as->max; s++) {
		r = &as->slot[s];
		if (r->id && r->on == -2) {
			fail(c, KEEL_ETIMEOUT, "no answer within %u ms: the outcome is unknown",
			     c->cfg.timeout_ms);
			complete(c, r, KEEL_ETIMEOUT, NULL, NULL, 0);
		}
	}
}

/* One answer on endpoint i; 1 when it completed a call. */
static int async_answer(struct keel_client *c, unsigned i, const struct keel_proto_msg *a,
			uint64_t t)
{
	struct async *as = c->as;
	uint32_t si = (uint32_t)(a->id & 0xffff);
	if (a->type != KEEL_PROTO_RESULT || si >= as->max)
		return 0;
	struct areq *r = &as->slot[si];
	if (r->id != a->id || r->on != (int)i)
		return 0; /* a late answer to a call that timed out */
	struct conn *k = &c->ep[i];
	k->inflight--;
	int st = a->status;
	if (st == KEEL_ENOTLEADER) {
		uint32_t hint = a->has[KEEL_PT_LEADER] ? a->leader : 0;
		if (r->group < c->groups)
			c->leader[r->group] = hint != k->node ? hint : 0;
		if (!hint)
			c->cur = (i + 1) % c->nep;
		if (hint && hint != r->last_hint) {
			r->last_hint = hint;
			requeue(c, r, 0);
		} else {
			backoff_requeue(c, r, t);
		}
		return 0;
	}
	if (st == KEEL_ETIMEOUT || st == KEEL_EUNAVAIL || st == KEEL_ESTOPPED || st == KEEL_EDURABLE) {
		/* as call(): the node could not finish it; again, same sequence */
		if (r->group < c->groups)
			c->leader[r->group] = 0;
		c->cur = (i + 1) % c->nep;
		backoff_requeue(c, r, t);
		return 0;
	}
	if (r->group < c->groups && st != KEEL_EBADINPUT)
		c->leader[r->group] = k->node;
	struct keel_client_result res;
	fill_result(a, r->group, k, &res);
	const void *v = NULL;
	size_t vl = 0;
	if (st == 0 && a->kv_status == KEEL_KV_NOT_FOUND)
		st = KEEL_ENOTFOUND;
	else if (st == 0 && a->kv_status == KEEL_KV_CAS_FAILED)
		st = KEEL_ESTALE;
	else if (st == 0 && a->kv_status == KEEL_KV_STALE_SEQ)
		st = KEEL_ETIMEOUT; /* not with lanes; if ever: the outcome is unknown */
	if (st == 0 && r->type == KEEL_PROTO_GET) {
		v = a->value.p ? (const void *)a->value.p : "";
		vl = a->value.len;
	}
	if (st < 0)
		fail(c, st, "node %u: %.*s", k->node, a->message.len ? (int)a->message.len : 200,
		     a->message.len ? (const char *)a->message.p : keel_strerror(st));
	complete(c, r, st, &res, v, vl);
	return 1;
}

/* Reads what endpoint i has and handles every whole frame; 0, or a
 * negative code when the connection is broken. */
static int async_read(struct keel_client *c, unsigned i, uint64_t t, int *done)
{
	struct conn *k = &c->ep[i];
	for (;;) {
		if (k->rcap - k->rlen < 4096) {
			size_t nc = k->rcap ? k->rcap * 2 : 65536;
			uint8_t *b = realloc(k->rbuf, nc);
			if (!b)
				return -ENOMEM;
			k->rbuf = b;
			k->rcap = nc;
		}
		ssize_t n = recv(k->fd, k->rbuf + k->rlen, k->rcap - k->rlen, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		k->rlen += (size_t)n;
		if ((size_t)n < 4096)
			break;
	}
	size_t pos = 0;
	int rc = 0;
	while (rc == 0) {
		int fl = keel_proto_frame_len(k->rbuf + pos, k->rlen - pos);
		if (fl < 0) {
			rc = fail(c, KEEL_EPROTO, "%s:%s sent a bad frame", k->host, k->port);
			break;
		}
		if (fl == 0 || (size_t)fl > k->rlen - pos)
			break;
		struct keel_proto_msg a;
		const char *why = NULL;
		if (keel_proto_decode(k->rbuf + pos, (size_t)fl, &a, &why) < 0) {
			rc = fail(c, KEEL_EPROTO, "%s:%s sent a bad frame: %s", k->host, k->port, why);
			break;
		}
		if (a.type == KEEL_PROTO_ERROR) {
			rc = fail(c, a.status ? a.status : KEEL_EPROTO, "%s:%s: %.*s", k->host, k->port,
				  (int)a.message.len, a.message.len ? (const char *)a.message.p : "");
			break;
		}
		/* the callback sees the value in place: consume after it */
		*done += async_answer(c, i, &a, t);
		pos += (size_t)fl;
	}
	if (pos && k->fd >= 0) {
		memmove(k->rbuf, k->rbuf + pos, k->rlen - pos);
		k->rlen -= pos;
	}
	return rc;
}

int keel_client_poll(struct keel_client *c, uint32_t timeout_ms)
{
	struct async *as = c->as;
	if (!as || !as->n)
		return 0;
	uint64_t end = now_ms() + timeout_ms;
	int done = 0;
	for (;;) {
		uint64_t t = now_ms();
		dispatch(c, t);
		struct pollfd pf[MAX_ENDPOINTS];
		unsigned idx[MAX_ENDPOINTS], np = 0;
		for (unsigned i = 0; i < c->nep; i++) {
			struct conn *k = &c->ep[i];
			if (k->fd < 0)
				continue;
			if (k->olen) {
				ssize_t w = send(k->fd, k->obuf, k->olen, MSG_NOSIGNAL | MSG_DONTWAIT);
				if (w < 0 && errno != EAGAIN && errno != EINTR) {
					async_conn_failed(c, i, t);
					continue;
				}
				if (w > 0) {
					memmove(k->obuf, k->obuf + w, k->olen - (size_t)w);
					k->olen -= (size_t)w;
				}
			}
			if (!k->inflight && !k->olen)
				continue;
			pf[np] = (struct pollfd){.fd = k->fd, .events = POLLIN | (k->olen ? POLLOUT : 0)};
			idx[np++] = i;
		}
		if (done || !as->n || t >= end)
			return done;
		/* wake for the next answer, the next retry or deadline, or the end */
		uint64_t wake = end;
		for (struct areq *r = as->qhead; r; r = r->qnext)
			if (r->not_before < wake)
				wake = r->not_before > t ? r->not_before : t;
		for (uint32_t s = 0; s < as->max; s++)
			if (as->slot[s].id && as->slot[s].deadline < wake)
				wake = as->slot[s].deadline;
		int ms = wake > t ? (int)(wake - t) : 0;
		int pr = poll(pf, np, ms);
		if (pr < 0 && errno != EINTR)
			return fail(c, -errno, "poll: %s", strerror(errno));
		t = now_ms();
		for (unsigned j = 0; pr > 0 && j < np; j++) {
			if (!pf[j].revents)
				continue;
			unsigned i = idx[j];
			if (pf[j].revents & (POLLIN | POLLERR | POLLHUP)) {
				if (async_read(c, i, t, &done) < 0)
					async_conn_failed(c, i, t);
			}
		}
	}
}

/* ---- membership (keel_client_member) -------------------------------------- */

static void member_row_of(const struct keel_proto_msg *a, struct keel_client_member_row *row)
{
	row->already = (a->flags & KEEL_PF_DUPLICATE) != 0;
	row->changing = (a->flags & KEEL_PF_MORE) != 0;
	row->index = a->index;
	row->term = a->rev;
	size_t pos = 0;
	struct keel_proto_item it;
	while (row->n_members < sizeof(row->members) / sizeof(row->members[0]) &&
	       keel_proto_item_next(a, &pos, &it) == 1) {
		if (it.key.len != 1 || !it.create_rev || it.create_rev > UINT32_MAX)
			continue; /* not a member row this library knows */
		row->members[row->n_members++] = (struct keel_client_member){
			.node = (uint32_t)it.create_rev, .voter = it.key.p[0] == 'v',
			.match = it.mod_rev, .active = it.version != 0};
	}
}

int keel_client_member(struct keel_client *c, enum keel_client_member_op op, uint32_t node,
		       void (*fn)(void *arg, const struct keel_client_member_row *row), void *arg)
{
	if (op < KEEL_CLIENT_MEMBER_LIST || op > KEEL_CLIENT_MEMBER_REMOVE ||
	    (op != KEEL_CLIENT_MEMBER_LIST && !node))
		return fail(c, KEEL_EBADINPUT, "member: an operation (list, add, remove) and, to "
					       "add or remove, a node id above 0");
	if (!c->groups)
		return fail(c, KEEL_EUNAVAIL, "member: the cluster reported no groups");
	int failed = 0, unreachable = 0;
	char first_err[KEEL_ERRMSG_LEN] = "";
	for (uint32_t g = 0; g < c->groups; g++) {
		struct keel_client_member_row row = {.group = g, .message = ""};
		char msg[KEEL_ERRMSG_LEN] = "";
		uint64_t deadline = now_ms() + c->cfg.timeout_ms;
		for (;;) {
			struct keel_proto_msg m = {.type = KEEL_PROTO_MEMBER, .group = g,
						   .mode = (uint8_t)op, .node = node};
			keel_proto_set(&m, KEEL_PT_GROUP);
			keel_proto_set(&m, KEEL_PT_MODE);
			if (op != KEEL_CLIENT_MEMBER_LIST)
				keel_proto_set(&m, KEEL_PT_NODE);
			struct keel_proto_msg a;
			struct conn *k = NULL;
			size_t used = 0;
			int rc = call(c, g, true, &m, &a, &k, &used);
			if (rc < 0) {
				row.status = rc;
				unreachable += rc == KEEL_EUNAVAIL;
				snprintf(msg, sizeof(msg), "%s", c->err);
				break;
			}
			row.status = a.type == KEEL_PROTO_RESULT ? a.status : KEEL_EPROTO;
			row.leader = k->node;
			if (row.status == 0)
				member_row_of(&a, &row);
			else if (a.message.len)
				snprintf(msg, sizeof(msg), "node %u: %.*s", k->node, (int)a.message.len,
					 (const char *)a.message.p);
			else
				snprintf(msg, sizeof(msg), "node %u: %s", k->node,
					 keel_strerror(row.status));
			consume(k, used);
			/* another change of the group (perhaps this one's earlier
			 * try, still catching the node up) is in progress: wait */
			if (row.status != KEEL_EBUSY || now_ms() + 100 >= deadline)
				break;
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (row.status < 0) {
			failed++;
			row.message = msg;
			if (!first_err[0])
				snprintf(first_err, sizeof(first_err), "group %u: %s", g, msg);
		}
		if (fn)
			fn(arg, &row);
	}
	c->err[0] = '\0';
	if (failed)
		snprintf(c->err, sizeof(c->err), "%d of %u groups failed; first: %s", failed,
			 c->groups, first_err);
	if (unreachable == (int)c->groups)
		return KEEL_EUNAVAIL;
	return failed;
}
