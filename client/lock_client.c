/*
 * client/lock_client.c — the lock service's client library
 * (keel/lock_client.h).
 *
 * Shape: one non-blocking TCP connection per node, opened as needed; every
 * wait is one loop (pump) that polls all of them until its deadline,
 * dispatching what arrives: the answer it waits for, keepalive answers
 * (which move a group's lease view), pushed LOCK_EVENTs (grants, wait
 * timeouts, expiries, matched by group and session), and answers to
 * abandoned requests (dropped). Keepalives due are sent from the same
 * loop, so a blocked acquire keeps its session alive.
 *
 * Routing is the KV client's: a group's leader as last answered or
 * hinted (KEEL_ENOTLEADER carries the leader), else the next endpoint,
 * with backoff. Every session request carries (session, sequence): a
 * retry reuses the sequence, so it is applied once.
 */
#include "keel/lock_client.h"

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

#include "keel/proto.h"
#include "keel/services.h"

#define MAX_EPS 32
#define MAX_GROUPS 4096

struct lconn {
	char host[256], port[8];
	int fd;
	uint32_t node;
	uint8_t *rbuf;
	size_t rlen, rcap;
};

/* One group's registration of the session. */
struct lgroup {
	uint64_t session;     /* 0: not opened here */
	struct keel_lock_lease lease; /* client clock: held locks are good until then */
	uint64_t ka_id, ka_sent, last_ka;
	uint32_t leader;
	uint32_t gen;         /* sessions opened here before: each gets a new id */
	bool lost;            /* the cluster said it expired, or the view ran out */
};

struct held {
	struct held *next;
	uint32_t group;
	uint64_t token;
	bool lost_reported;
	size_t len;
	uint8_t name[];
};

/* What a wait looks for among the frames. */
struct want {
	uint64_t id;              /* an answer */
	bool got;
	int32_t status;
	uint8_t lock_status;
	uint64_t fence;
	uint32_t leader, node, flags;
	/* a pushed event for (group, session, seq); the wait ends on it
	 * only when want_event (an answer's wait records it and goes on) */
	bool want_event;
	uint32_t ev_group;
	uint64_t ev_session, ev_seq;
	const void *ev_name;      /* or the name: a re-asked wait keeps its first sequence */
	size_t ev_name_len;
	uint8_t ev_kind;
	uint64_t ev_token;
	/* INSPECT answers */
	struct keel_lock_state *st;
	void (*fn)(void *arg, bool waiter, uint64_t session, uint64_t v, uint8_t mode);
	void *arg;
};

struct keel_lock_client {
	struct keel_lock_client_config cfg;
	char token[KEEL_PROTO_MAX_TOKEN + 1];
	struct lconn ep[MAX_EPS];
	unsigned nep, cur;
	uint32_t groups;
	struct lgroup *g;
	struct held *held;
	uint64_t base_session, seq, next_id;
	bool newly_lost;
	uint8_t *wbuf;
	size_t wcap;
	char err[KEEL_ERRMSG_LEN];
};

static uint64_t mono_ms(void *arg)
{
	(void)arg;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now(const struct keel_lock_client *lc)
{
	return lc->cfg.now_ms(lc->cfg.clock_arg);
}

static int fail(struct keel_lock_client *lc, int code, const char *fmt, ...) KEEL_PRINTF(3, 4);
static int fail(struct keel_lock_client *lc, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lc->err, sizeof(lc->err), fmt, ap);
	va_end(ap);
	return code;
}

const char *keel_lock_client_errmsg(const struct keel_lock_client *lc)
{
	return lc->err;
}

static uint64_t random_id(void)
{
	uint64_t r = 0;
	while (!r) {
		int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
		if (fd < 0 || read(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
			r = keel_mix64(keel_now_ns() ^ (uint64_t)getpid() << 32);
		if (fd >= 0)
			close(fd);
	}
	return r;
}

static void lconn_close(struct lconn *k)
{
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
	k->rlen = 0;
}

/* ---- frames ---------------------------------------------------------------- */

static int send_frame(struct keel_lock_client *lc, struct lconn *k, struct keel_proto_msg *m)
{
	size_t need = keel_proto_size(m);
	if (!need)
		return fail(lc, KEEL_ETOOBIG, "request over the protocol's limits");
	if (need > lc->wcap) {
		uint8_t *b = realloc(lc->wbuf, need);
		if (!b)
			return fail(lc, -ENOMEM, "out of memory");
		lc->wbuf = b;
		lc->wcap = need;
	}
	int n = keel_proto_encode(m, lc->wbuf, lc->wcap);
	if (n < 0)
		return n;
	/* requests are small: a full socket buffer means a stuck node */
	size_t off = 0;
	uint64_t deadline = mono_ms(NULL) + 1000;
	while (off < (size_t)n) {
		ssize_t w = send(k->fd, lc->wbuf + off, (size_t)n - off, MSG_NOSIGNAL);
		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		uint64_t t = mono_ms(NULL);
		if (t >= deadline)
			return KEEL_ETIMEOUT;
		struct pollfd pf = {.fd = k->fd, .events = POLLOUT};
		(void)poll(&pf, 1, (int)(deadline - t));
	}
	return 0;
}

static void on_event(struct keel_lock_client *lc, const struct keel_proto_msg *m, struct want *w)
{
	if (m->group >= lc->groups)
		return;
	struct lgroup *g = &lc->g[m->group];
	if (!g->session || m->client != g->session)
		return; /* an old session of ours, or a repeat for one we closed */
	if (m->ev_kind == KEEL_LOCK_EV_EXPIRED) {
		if (!g->lost)
			lc->newly_lost = true;
		g->lost = true;
		keel_lock_lease_lose(&g->lease);
	}
	/* a wait's event carries the sequence of the ACQUIRE that queued it:
	 * this call's first, or a later one (a retry queued anew). One of an
	 * earlier call — a repeat from another node, arriving late — has a
	 * lower sequence and is not this wait's. */
	bool same_name = w && w->ev_name && m->key.len == w->ev_name_len &&
			 !memcmp(m->key.p, w->ev_name, m->key.len);
	if (w && w->ev_session == m->client && w->ev_group == m->group &&
	    (m->ev_kind == KEEL_LOCK_EV_EXPIRED || (same_name && m->seq >= w->ev_seq)) &&
	    !w->ev_kind) {
		w->ev_kind = m->ev_kind;
		w->ev_token = m->fence;
	}
}

static void on_ka_answer(struct keel_lock_client *lc, uint32_t gi, const struct keel_proto_msg *m)
{
	struct lgroup *g = &lc->g[gi];
	g->ka_id = 0;
	if (m->status == KEEL_ENOTLEADER) {
		if (m->leader && m->leader != g->leader) {
			g->leader = m->leader;
			g->last_ka = 0; /* again at once, at the leader */
		} else {
			/* no new hint (an election): another node, in 50 ms */
			g->leader = 0;
			lc->cur = (lc->cur + 1) % lc->nep;
			uint64_t every = lc->cfg.ttl_ms / 3, t = now(lc);
			g->last_ka = every > 50 && t > every ? t - (every - 50) : t;
		}
		return;
	}
	if (m->status < 0)
		return; /* the next round tries again */
	if (m->lock_status == KEEL_LOCK_NO_SESSION) {
		if (!g->lost)
			lc->newly_lost = true;
		g->lost = true;
		keel_lock_lease_lose(&g->lease);
		return;
	}
	/* the renewal applied after it was sent (lock_lease.c) */
	if (!g->lost)
		keel_lock_lease_renewed(&g->lease, g->ka_sent, now(lc));
}

static void dispatch(struct keel_lock_client *lc, struct lconn *k, const struct keel_proto_msg *m,
		     struct want *w)
{
	if (m->type == KEEL_PROTO_LOCK_EVENT) {
		on_event(lc, m, w);
		return;
	}
	if (m->type == KEEL_PROTO_ERROR) {
		fail(lc, m->status ? m->status : KEEL_EPROTO, "%s:%s: %.*s", k->host, k->port,
		     (int)m->message.len, m->message.p ? (const char *)m->message.p : "");
		if (w && !w->got) {
			w->got = true;
			w->status = m->status ? m->status : KEEL_EPROTO;
		}
		return;
	}
	if (w && m->id == w->id && m->id) {
		w->got = true;
		w->status = m->status;
		w->lock_status = m->lock_status;
		w->fence = m->fence;
		w->leader = m->leader;
		w->node = k->node;
		w->flags = m->flags;
		if (m->has[KEEL_PT_MESSAGE])
			fail(lc, m->status, "%.*s", (int)m->message.len, (const char *)m->message.p);
		if (w->st && m->status == 0) {
			w->st->mode = m->mode;
			w->st->now_ms = m->rev;
			w->st->delay_left_ms = m->delay_ms;
			w->st->more = (m->flags & KEEL_PF_MORE) != 0;
			size_t pos = 0;
			struct keel_proto_item it;
			while (keel_proto_item_next(m, &pos, &it) == 1)
				if (w->fn)
					w->fn(w->arg, it.key.p[0] == 'w', it.create_rev, it.mod_rev,
					      (uint8_t)it.version);
		}
		return;
	}
	for (uint32_t i = 0; i < lc->groups; i++) {
		if (lc->g[i].ka_id && lc->g[i].ka_id == m->id) {
			on_ka_answer(lc, i, m);
			return;
		}
	}
	/* an answer to a request given up on */
}

/* Reads what k has; -1 when it broke (closed). */
static int drain(struct keel_lock_client *lc, struct lconn *k, struct want *w)
{
	for (;;) {
		if (k->rcap - k->rlen < 65536) {
			size_t nc = k->rcap ? k->rcap * 2 : 131072;
			uint8_t *b = realloc(k->rbuf, nc);
			if (!b)
				return -1;
			k->rbuf = b;
			k->rcap = nc;
		}
		ssize_t r = recv(k->fd, k->rbuf + k->rlen, k->rcap - k->rlen, MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
			lconn_close(k);
			return -1;
		}
		if (r > 0)
			k->rlen += (size_t)r;
		size_t pos = 0;
		for (;;) {
			int fl = keel_proto_frame_len(k->rbuf + pos, k->rlen - pos);
			if (fl < 0) {
				fail(lc, KEEL_EPROTO, "%s:%s sent a bad frame", k->host, k->port);
				lconn_close(k);
				return -1;
			}
			if (fl == 0 || (size_t)fl > k->rlen - pos)
				break;
			struct keel_proto_msg m;
			const char *why = NULL;
			if (keel_proto_decode(k->rbuf + pos, (size_t)fl, &m, &why) < 0) {
				fail(lc, KEEL_EPROTO, "%s:%s sent a bad frame: %s", k->host, k->port, why);
				lconn_close(k);
				return -1;
			}
			dispatch(lc, k, &m, w);
			pos += (size_t)fl;
		}
		memmove(k->rbuf, k->rbuf + pos, k->rlen - pos);
		k->rlen -= pos;
		if (r < 0)
			return 0;
	}
}

/* ---- connecting ------------------------------------------------------------ */

static int dial(struct lconn *k, uint64_t deadline_mono)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	if (getaddrinfo(k->host, k->port, &hints, &ai))
		return KEEL_EUNAVAIL;
	int rc = KEEL_EUNAVAIL;
	for (struct addrinfo *a = ai; a && rc < 0; a = a->ai_next) {
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
		uint64_t t = mono_ms(NULL);
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		int pr = t < deadline_mono ? poll(&pf, 1, (int)(deadline_mono - t)) : 0;
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
			rc = pr == 0 ? KEEL_ETIMEOUT : -(soerr ? soerr : errno);
			close(fd);
			continue;
		}
		k->fd = fd;
		rc = 0;
	}
	freeaddrinfo(ai);
	return rc;
}

static int pump(struct keel_lock_client *lc, struct want *w, uint64_t deadline);

/* Connects endpoint i and says hello. */
static int ensure(struct keel_lock_client *lc, unsigned i)
{
	struct lconn *k = &lc->ep[i];
	if (k->fd >= 0)
		return 0;
	int rc = dial(k, mono_ms(NULL) + lc->cfg.timeout_ms / 2);
	if (rc < 0)
		return fail(lc, rc, "%s:%s: %s", k->host, k->port, keel_strerror(rc));
	struct keel_proto_msg m = {.type = KEEL_PROTO_HELLO, .id = ++lc->next_id,
				   .client = lc->base_session};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	if (lc->token[0]) {
		m.token = (struct keel_proto_bytes){(const uint8_t *)lc->token,
						    (uint32_t)strlen(lc->token)};
		keel_proto_set(&m, KEEL_PT_TOKEN);
	}
	rc = send_frame(lc, k, &m);
	if (rc < 0) {
		lconn_close(k);
		return fail(lc, rc, "%s:%s: hello: %s", k->host, k->port, keel_strerror(rc));
	}
	/* HELLO_OK: read it here (its node and group count) */
	uint64_t deadline = mono_ms(NULL) + lc->cfg.timeout_ms / 2;
	for (;;) {
		int fl = keel_proto_frame_len(k->rbuf, k->rlen);
		if (fl > 0 && (size_t)fl <= k->rlen) {
			struct keel_proto_msg a;
			const char *why;
			rc = keel_proto_decode(k->rbuf, (size_t)fl, &a, &why);
			if (rc == 0 && a.type == KEEL_PROTO_ERROR)
				rc = a.status ? a.status : KEEL_EAUTH;
			else if (rc == 0 && (a.type != KEEL_PROTO_HELLO_OK || !a.node || !a.groups ||
					     a.groups > MAX_GROUPS ||
					     (lc->groups && a.groups != lc->groups)))
				rc = KEEL_EPROTO;
			if (rc == 0) {
				k->node = a.node;
				if (!lc->groups) {
					lc->g = calloc(a.groups, sizeof(*lc->g));
					if (!lc->g)
						rc = -ENOMEM;
					else
						lc->groups = a.groups;
				}
			}
			memmove(k->rbuf, k->rbuf + fl, k->rlen - (size_t)fl);
			k->rlen -= (size_t)fl;
			if (rc < 0) {
				lconn_close(k);
				return fail(lc, rc, "%s:%s: hello: %s", k->host, k->port,
					    rc == KEEL_EAUTH ? "the node refused the token"
							     : keel_strerror(rc));
			}
			return 0;
		}
		if (fl < 0)
			break;
		if (k->rcap - k->rlen < 4096) {
			uint8_t *b = realloc(k->rbuf, k->rcap ? k->rcap * 2 : 131072);
			if (!b)
				break;
			k->rbuf = b;
			k->rcap = k->rcap ? k->rcap * 2 : 131072;
		}
		ssize_t r = recv(k->fd, k->rbuf + k->rlen, k->rcap - k->rlen, MSG_DONTWAIT);
		if (r > 0) {
			k->rlen += (size_t)r;
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EINTR))
			break;
		uint64_t t = mono_ms(NULL);
		if (t >= deadline)
			break;
		struct pollfd pf = {.fd = k->fd, .events = POLLIN};
		(void)poll(&pf, 1, (int)(deadline - t));
	}
	lconn_close(k);
	return fail(lc, KEEL_EUNAVAIL, "%s:%s: no HELLO_OK", k->host, k->port);
}

static int conn_of_node(struct keel_lock_client *lc, uint32_t node)
{
	if (!node)
		return -1;
	for (unsigned i = 0; i < lc->nep; i++)
		if (lc->ep[i].node == node && ensure(lc, i) == 0)
			return (int)i;
	for (unsigned i = 0; i < lc->nep; i++)
		if (lc->ep[i].node == 0 && ensure(lc, i) == 0 && lc->ep[i].node == node)
			return (int)i;
	return -1;
}

/* The connection to use for group gi (its leader if known). */
static int route(struct keel_lock_client *lc, uint32_t gi)
{
	int k = gi < lc->groups ? conn_of_node(lc, lc->g[gi].leader) : -1;
	for (unsigned tries = 0; k < 0 && tries < lc->nep; tries++) {
		if (ensure(lc, lc->cur) == 0)
			k = (int)lc->cur;
		else
			lc->cur = (lc->cur + 1) % lc->nep;
	}
	return k;
}

/* ---- keepalives and the loop ----------------------------------------------- */

static void note_lost(struct keel_lock_client *lc, uint64_t t)
{
	for (uint32_t i = 0; i < lc->groups; i++) {
		struct lgroup *g = &lc->g[i];
		if (g->session && !g->lost && keel_lock_lease_check(&g->lease, t)) {
			g->lost = true;
			lc->newly_lost = true;
		}
	}
}

static void send_keepalives(struct keel_lock_client *lc, uint64_t t)
{
	uint32_t every = lc->cfg.ttl_ms / 3;
	for (uint32_t i = 0; i < lc->groups; i++) {
		struct lgroup *g = &lc->g[i];
		if (!g->session || g->lost)
			continue;
		/* one in flight at a time, unless it is overdue (a lost
		 * connection, a node that died holding it) */
		if (g->ka_id && t - g->ka_sent < every)
			continue;
		if (!g->ka_id && g->last_ka && t - g->last_ka < every)
			continue;
		/* a connection already open first: dialing a node that drops
		 * SYNs blocks, and the other groups' keepalives would wait */
		int k = -1;
		for (unsigned j = 0; j < lc->nep && k < 0; j++)
			if (lc->ep[j].fd >= 0 && g->leader && lc->ep[j].node == g->leader)
				k = (int)j;
		if (k < 0 && !g->leader && lc->ep[lc->cur].fd >= 0)
			k = (int)lc->cur; /* no leader known: it answers with its name */
		if (k < 0)
			k = route(lc, i);
		if (k < 0)
			continue;
		struct keel_proto_msg m = {.type = KEEL_PROTO_LOCK_KEEPALIVE, .id = ++lc->next_id,
					   .client = g->session, .group = i};
		keel_proto_set(&m, KEEL_PT_CLIENT);
		keel_proto_set(&m, KEEL_PT_GROUP);
		if (send_frame(lc, &lc->ep[k], &m) < 0) {
			lconn_close(&lc->ep[k]);
			lc->cur = (lc->cur + 1) % lc->nep;
			g->leader = 0;
			continue;
		}
		g->ka_id = m.id;
		g->ka_sent = t;
		g->last_ka = t;
	}
}

/* Polls every connection until w is satisfied (an answer, or an event
 * when w->ev_session) or the deadline (client clock), running the
 * keepalive stream. 0, or KEEL_ETIMEOUT. */
static int pump(struct keel_lock_client *lc, struct want *w, uint64_t deadline)
{
	for (;;) {
		uint64_t t = now(lc);
		note_lost(lc, t);
		send_keepalives(lc, t);
		if (w && (w->got || (w->want_event && w->ev_kind)))
			return 0;
		if (t >= deadline)
			return KEEL_ETIMEOUT;
		struct pollfd pf[MAX_EPS];
		unsigned map[MAX_EPS], n = 0;
		for (unsigned i = 0; i < lc->nep; i++) {
			if (lc->ep[i].fd < 0)
				continue;
			pf[n] = (struct pollfd){.fd = lc->ep[i].fd, .events = POLLIN};
			map[n++] = i;
		}
		uint64_t step = deadline - t;
		uint32_t every = lc->cfg.ttl_ms / 3;
		if (step > every / 4 + 1)
			step = every / 4 + 1; /* wake for keepalives */
		if (step > 50 && lc->cfg.now_ms != mono_ms)
			step = 50; /* an injected clock moves on its own */
		int pr = poll(pf, n, (int)step);
		if (pr < 0 && errno != EINTR)
			return -errno;
		for (unsigned j = 0; pr > 0 && j < n; j++) {
			if (!pf[j].revents)
				continue;
			if (drain(lc, &lc->ep[map[j]], w) < 0) {
				/* the node went away: ask the others */
				for (uint32_t i = 0; i < lc->groups; i++)
					if (lc->g[i].leader == lc->ep[map[j]].node)
						lc->g[i].leader = 0;
				if (w && !w->got && w->node == 0)
					w->node = UINT32_MAX; /* the caller resends */
			}
		}
		if (w && w->node == UINT32_MAX && !w->got)
			return -ECONNRESET;
	}
}

/* Sends m for group gi (to its leader), retrying with the same id... until
 * an answer other than "not the leader" or the deadline. */
static int call(struct keel_lock_client *lc, uint32_t gi, struct keel_proto_msg *m, struct want *w)
{
	uint64_t deadline = now(lc) + lc->cfg.timeout_ms;
	unsigned backoff = 10;
	for (;;) {
		int k = route(lc, gi);
		if (k >= 0) {
			m->id = ++lc->next_id;
			struct keel_lock_state *st = w->st;
			void (*fn)(void *, bool, uint64_t, uint64_t, uint8_t) = w->fn;
			void *arg = w->arg;
			struct want keep = *w;
			*w = (struct want){.id = m->id, .st = st, .fn = fn, .arg = arg,
					   .ev_group = keep.ev_group, .ev_session = keep.ev_session,
					   .ev_seq = keep.ev_seq, .ev_name = keep.ev_name,
					   .ev_name_len = keep.ev_name_len, .ev_kind = keep.ev_kind,
					   .ev_token = keep.ev_token};
			int rc = send_frame(lc, &lc->ep[k], m);
			if (rc == 0)
				rc = pump(lc, w, deadline);
			if (rc == 0 && w->got) {
				if (w->status != KEEL_ENOTLEADER && w->status != KEEL_EUNAVAIL &&
				    w->status != KEEL_EBUSY) {
					if (gi < lc->groups && w->status == 0)
						lc->g[gi].leader = lc->ep[k].node;
					return 0;
				}
				uint32_t hint = w->leader;
				if (gi < lc->groups) {
					if (hint && hint != lc->g[gi].leader) {
						lc->g[gi].leader = hint;
						continue; /* a new hint: at once */
					}
					lc->g[gi].leader = 0;
				}
				lc->cur = (lc->cur + 1) % lc->nep;
			} else if (rc == KEEL_ETIMEOUT) {
				return fail(lc, KEEL_ETIMEOUT, "no answer within %u ms (the outcome is unknown)",
					    lc->cfg.timeout_ms);
			} else {
				lconn_close(&lc->ep[k]);
				if (gi < lc->groups)
					lc->g[gi].leader = 0;
				lc->cur = (lc->cur + 1) % lc->nep;
			}
		}
		if (now(lc) + backoff >= deadline)
			return fail(lc, KEEL_EUNAVAIL, "no node answered for group %u in %u ms", gi,
				    lc->cfg.timeout_ms);
		pump(lc, NULL, now(lc) + backoff);
		if (backoff < 400)
			backoff *= 2;
	}
}

/* ---- open / close ------------------------------------------------------------ */

int keel_lock_client_open(const struct keel_lock_client_config *cfg,
			  struct keel_lock_client **out, char *errmsg)
{
	*out = NULL;
	if (!cfg->endpoints || !cfg->endpoints[0])
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "lock client: no endpoints given");
	if (cfg->token && strlen(cfg->token) > KEEL_PROTO_MAX_TOKEN)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "lock client: token over %u bytes",
				       KEEL_PROTO_MAX_TOKEN);
	uint32_t ttl = cfg->ttl_ms ? cfg->ttl_ms : 10000;
	if (ttl < KEEL_LOCK_MIN_TTL_MS || ttl > KEEL_LOCK_MAX_TTL_MS)
		return keel_errmsg_set(errmsg, KEEL_EBADINPUT,
				       "lock client: a TTL of %u ms (100 ms to one hour)", ttl);
	struct keel_lock_client *lc = calloc(1, sizeof(*lc));
	if (!lc)
		return keel_errmsg_set(errmsg, -ENOMEM, "lock client: out of memory");
	lc->cfg = *cfg;
	lc->cfg.endpoints = lc->cfg.token = NULL;
	lc->cfg.ttl_ms = ttl;
	if (!lc->cfg.timeout_ms)
		lc->cfg.timeout_ms = 5000;
	if (!lc->cfg.now_ms)
		lc->cfg.now_ms = mono_ms;
	/* the view's margin (keel_lock_lease_margin) covers the client's
	 * clock running slower than the leader's and this process's
	 * scheduling */
	if (cfg->token)
		snprintf(lc->token, sizeof(lc->token), "%s", cfg->token);
	for (unsigned i = 0; i < MAX_EPS; i++)
		lc->ep[i].fd = -1;
	const char *p = cfg->endpoints;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n) {
			char one[300];
			char *colon = NULL, *end = NULL;
			if (n < sizeof(one)) {
				memcpy(one, p, n);
				one[n] = '\0';
				colon = strrchr(one, ':');
			}
			long port = colon ? strtol(colon + 1, &end, 10) : 0;
			if (!colon || colon == one || !end || *end || port < 1 || port > 65535 ||
			    lc->nep == MAX_EPS) {
				keel_errmsg_set(errmsg, KEEL_ECONFIG,
						"lock client: endpoint '%.*s': expected HOST:PORT", (int)n, p);
				free(lc);
				return KEEL_ECONFIG;
			}
			*colon = '\0';
			struct lconn *k = &lc->ep[lc->nep++];
			const char *h = one;
			size_t hl = strlen(h);
			if (h[0] == '[' && hl > 1 && h[hl - 1] == ']') {
				h++;
				hl -= 2;
			}
			snprintf(k->host, sizeof(k->host), "%.*s", (int)hl, h);
			snprintf(k->port, sizeof(k->port), "%ld", port);
		}
		p += n + (e ? 1 : 0);
	}
	if (!lc->nep) {
		free(lc);
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "lock client: no endpoints given");
	}
	lc->base_session = cfg->session ? cfg->session : random_id();
	int rc = KEEL_EUNAVAIL;
	for (unsigned i = 0; i < lc->nep && rc < 0; i++) {
		rc = ensure(lc, i);
		if (rc == 0)
			lc->cur = i;
		if (rc == KEEL_EAUTH)
			break;
	}
	if (rc < 0) {
		keel_errmsg_set(errmsg, rc == KEEL_EAUTH ? rc : KEEL_EUNAVAIL,
				"lock client: no endpoint answered: %.200s", lc->err);
		keel_lock_client_abandon(lc);
		return rc == KEEL_EAUTH ? rc : KEEL_EUNAVAIL;
	}
	*out = lc;
	return 0;
}

static void drop_held(struct keel_lock_client *lc, uint32_t gi)
{
	for (struct held **pp = &lc->held; *pp;) {
		if ((*pp)->group == gi) {
			struct held *h = *pp;
			*pp = h->next;
			free(h);
		} else {
			pp = &(*pp)->next;
		}
	}
}

/* Closes gi's session (best effort) and forgets it there. */
static void close_group(struct keel_lock_client *lc, uint32_t gi)
{
	struct lgroup *g = &lc->g[gi];
	if (!g->session)
		return;
	struct keel_proto_msg m = {.type = KEEL_PROTO_LOCK_CLOSE, .client = g->session,
				   .seq = ++lc->seq, .group = gi};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	keel_proto_set(&m, KEEL_PT_SEQ);
	keel_proto_set(&m, KEEL_PT_GROUP);
	struct want w = {0};
	(void)call(lc, gi, &m, &w);
	drop_held(lc, gi);
	*g = (struct lgroup){.leader = g->leader, .gen = g->gen + 1};
}

void keel_lock_client_abandon(struct keel_lock_client *lc)
{
	if (!lc)
		return;
	for (unsigned i = 0; i < lc->nep; i++) {
		lconn_close(&lc->ep[i]);
		free(lc->ep[i].rbuf);
	}
	while (lc->held) {
		struct held *h = lc->held;
		lc->held = h->next;
		free(h);
	}
	free(lc->g);
	free(lc->wbuf);
	free(lc);
}

void keel_lock_client_close(struct keel_lock_client *lc)
{
	if (!lc)
		return;
	for (uint32_t i = 0; i < lc->groups; i++)
		close_group(lc, i);
	keel_lock_client_abandon(lc);
}

uint64_t keel_lock_client_session(const struct keel_lock_client *lc, uint32_t group)
{
	return group < lc->groups ? lc->g[group].session : 0;
}

/* ---- sessions and locks ---------------------------------------------------- */

/* The session is open in gi with a lease not run out; a lost one is
 * closed and a new one opened. */
static int session_in(struct keel_lock_client *lc, uint32_t gi)
{
	struct lgroup *g = &lc->g[gi];
	if (g->session && g->lost)
		close_group(lc, gi);
	if (g->session)
		return 0;
	/* one id per (logical session, group, generation): a group reopened
	 * after a loss gets a new one (see the header) */
	uint64_t sid = keel_mix64(lc->base_session ^ ((uint64_t)gi << 40) ^
				  ((uint64_t)g->gen * 0x9e3779b97f4a7c15ull)) | 1;
	struct keel_proto_msg m = {.type = KEEL_PROTO_LOCK_OPEN, .client = sid, .seq = ++lc->seq,
				   .ttl_ms = lc->cfg.ttl_ms, .group = gi};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	keel_proto_set(&m, KEEL_PT_SEQ);
	keel_proto_set(&m, KEEL_PT_TTL_MS);
	keel_proto_set(&m, KEEL_PT_GROUP);
	uint64_t sent = now(lc);
	struct want w = {0};
	int rc = call(lc, gi, &m, &w);
	if (rc < 0)
		return rc;
	if (w.status < 0)
		return fail(lc, w.status, "opening the session in group %u: %s", gi,
			    keel_strerror(w.status));
	*g = (struct lgroup){.session = sid, .leader = g->leader, .gen = g->gen,
			     .last_ka = sent, .ka_sent = sent};
	keel_lock_lease_open(&g->lease, lc->cfg.ttl_ms, sent);
	return 0;
}

static struct held *find_held(struct keel_lock_client *lc, const void *name, size_t len)
{
	for (struct held *h = lc->held; h; h = h->next)
		if (h->len == len && !memcmp(h->name, name, len))
			return h;
	return NULL;
}

static int add_held(struct keel_lock_client *lc, uint32_t gi, const void *name, size_t len,
		    uint64_t token)
{
	struct held *h = find_held(lc, name, len);
	if (!h) {
		h = malloc(sizeof(*h) + len);
		if (!h)
			return fail(lc, -ENOMEM, "out of memory");
		h->len = len;
		memcpy(h->name, name, len);
		h->next = lc->held;
		lc->held = h;
	}
	h->group = gi;
	h->token = token;
	h->lost_reported = false;
	return 0;
}

static struct keel_proto_msg lock_req(uint8_t type, uint64_t session, uint64_t seq,
				      const void *name, size_t len)
{
	struct keel_proto_msg m = {.type = type, .client = session, .seq = seq,
				   .key = {(const uint8_t *)name, (uint32_t)len}};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	keel_proto_set(&m, KEEL_PT_SEQ);
	keel_proto_set(&m, KEEL_PT_KEY);
	return m;
}

static int lost_error(struct keel_lock_client *lc, uint32_t gi)
{
	return fail(lc, KEEL_ESTALE,
		    "the session expired in group %u (its lease ran out or the cluster expired it): "
		    "the lock is lost", gi);
}

int keel_lock_acquire(struct keel_lock_client *lc, const void *name, size_t len,
		      enum keel_lock_mode mode, uint32_t wait_ms, uint32_t lock_delay_ms,
		      uint64_t *token)
{
	lc->err[0] = '\0';
	if (!len || len > KEEL_LOCK_MAX_NAME)
		return fail(lc, KEEL_EBADINPUT, "a lock name of 1 to %u bytes", KEEL_LOCK_MAX_NAME);
	if (mode != KEEL_LOCK_EXCLUSIVE && mode != KEEL_LOCK_SHARED)
		return fail(lc, KEEL_EBADINPUT, "a lock mode is exclusive or shared");
	uint32_t gi = keel_service_group_of(name, len, lc->groups);
	int rc = session_in(lc, gi);
	if (rc < 0)
		return rc;
	struct lgroup *g = &lc->g[gi];
	uint64_t seq = ++lc->seq;
	struct keel_proto_msg m = lock_req(KEEL_PROTO_LOCK_ACQUIRE, g->session, seq, name, len);
	m.mode = (uint8_t)mode;
	m.wait_ms = wait_ms;
	m.delay_ms = lock_delay_ms;
	keel_proto_set(&m, KEEL_PT_MODE);
	keel_proto_set(&m, KEEL_PT_WAIT_MS);
	keel_proto_set(&m, KEEL_PT_DELAY_MS);
	struct want w = {.ev_group = gi, .ev_session = g->session, .ev_seq = seq, .ev_name = name,
			 .ev_name_len = len};
	uint64_t give_up = now(lc) + wait_ms + lc->cfg.timeout_ms;
	for (;;) {
		rc = call(lc, gi, &m, &w);
		if (rc < 0)
			return rc;
		if (w.status < 0)
			return fail(lc, w.status, "acquire: %s", keel_strerror(w.status));
		if (w.ev_kind == KEEL_LOCK_EV_GRANTED && w.lock_status == KEEL_LOCK_WAITING)
			goto granted_push; /* the push came before the answer */
		switch (w.lock_status) {
		case KEEL_LOCK_OK:
			goto granted_now;
		case KEEL_LOCK_ALREADY:
			if (w.fence) {
				/* a retry after a lost push: it was granted */
				w.ev_token = w.fence;
				goto granted_now;
			}
			break; /* still waiting (a retry of a wait) */
		case KEEL_LOCK_BUSY:
			return fail(lc, KEEL_EBUSY, "held by another session");
		case KEEL_LOCK_NO_SESSION:
			g->lost = true;
			return lost_error(lc, gi);
		case KEEL_LOCK_WAITING:
			break;
		default:
			return fail(lc, KEEL_EPROTO, "acquire: an unexpected answer (%u)", w.lock_status);
		}
		/* waiting: for the push (grant, timeout, expiry) */
		struct want ew = {.want_event = true, .ev_group = gi, .ev_session = g->session,
				  .ev_seq = seq, .ev_name = name, .ev_name_len = len,
				  .ev_kind = w.ev_kind, .ev_token = w.ev_token};
		w = ew;
		for (;;) {
			if (g->lost)
				return lost_error(lc, gi);
			uint64_t t = now(lc);
			if (t >= give_up) {
				struct keel_proto_msg c = lock_req(KEEL_PROTO_LOCK_CANCEL, g->session,
								   ++lc->seq, name, len);
				struct want cw = {0};
				(void)call(lc, gi, &c, &cw);
				return fail(lc, KEEL_ETIMEOUT, "not granted within %u ms", wait_ms);
			}
			rc = pump(lc, &w, t + 250 < give_up ? t + 250 : give_up);
			if (w.ev_kind == KEEL_LOCK_EV_GRANTED)
				goto granted_push;
			if (w.ev_kind == KEEL_LOCK_EV_WAIT_TIMEOUT)
				return fail(lc, KEEL_ETIMEOUT, "not granted within %u ms", wait_ms);
			if (w.ev_kind == KEEL_LOCK_EV_EXPIRED)
				return lost_error(lc, gi);
			if (rc == -ECONNRESET)
				break; /* the node went away: ask again (new sequence) */
			/* a push may have been lost with a connection: every few
			 * seconds, ask where the wait stands */
			if (rc == KEEL_ETIMEOUT && (t / 2000) != (now(lc) / 2000))
				break;
		}
		m.seq = ++lc->seq;
		w = (struct want){.ev_group = gi, .ev_session = g->session, .ev_seq = seq,
				  .ev_name = name, .ev_name_len = len};
	}
granted_now:
	if (g->lost)
		return lost_error(lc, gi);
	*token = w.lock_status == KEEL_LOCK_OK ? w.fence : w.ev_token;
	return add_held(lc, gi, name, len, *token);
granted_push:
	if (g->lost)
		return lost_error(lc, gi);
	*token = w.ev_token;
	return add_held(lc, gi, name, len, *token);
}

int keel_lock_release(struct keel_lock_client *lc, const void *name, size_t len, uint64_t token)
{
	lc->err[0] = '\0';
	struct held *h = find_held(lc, name, len);
	if (!h || h->token != token)
		return fail(lc, KEEL_ESTALE, "this client does not hold the lock with token %llu",
			    (unsigned long long)token);
	uint32_t gi = h->group;
	struct lgroup *g = &lc->g[gi];
	bool was_lost = g->lost;
	struct keel_proto_msg m = lock_req(KEEL_PROTO_LOCK_RELEASE, g->session, ++lc->seq, name, len);
	m.fence = token;
	keel_proto_set(&m, KEEL_PT_FENCE);
	struct want w = {0};
	int rc = call(lc, gi, &m, &w);
	for (struct held **pp = &lc->held; *pp; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			free(h);
			break;
		}
	}
	if (rc < 0)
		return rc;
	if (w.status < 0)
		return fail(lc, w.status, "release: %s", keel_strerror(w.status));
	if (w.lock_status != KEEL_LOCK_OK || was_lost)
		return fail(lc, KEEL_ESTALE, "the lock was lost before its release (token %llu)",
			    (unsigned long long)token);
	return 0;
}

int keel_lock_client_poll(struct keel_lock_client *lc, uint32_t wait_ms)
{
	(void)pump(lc, NULL, now(lc) + wait_ms);
	note_lost(lc, now(lc));
	int rc = 0;
	for (struct held *h = lc->held; h; h = h->next) {
		if (lc->g[h->group].lost && !h->lost_reported) {
			h->lost_reported = true;
			rc = lost_error(lc, h->group);
		}
	}
	lc->newly_lost = false;
	return rc;
}

int keel_lock_client_renew(struct keel_lock_client *lc)
{
	lc->err[0] = '\0';
	for (uint32_t i = 0; i < lc->groups; i++) {
		lc->g[i].ka_id = 0;
		lc->g[i].last_ka = 0; /* due now */
	}
	uint64_t deadline = now(lc) + lc->cfg.timeout_ms;
	send_keepalives(lc, now(lc));
	for (;;) {
		bool waiting = false, lost = false;
		for (uint32_t i = 0; i < lc->groups; i++) {
			waiting |= lc->g[i].session && !lc->g[i].lost && lc->g[i].ka_id;
			lost |= lc->g[i].session && lc->g[i].lost;
		}
		if (lost)
			return fail(lc, KEEL_ESTALE, "the session expired in a group");
		if (!waiting)
			return 0;
		if (now(lc) >= deadline)
			return fail(lc, KEEL_ETIMEOUT, "keepalives not answered in %u ms",
				    lc->cfg.timeout_ms);
		struct want w = {0};
		(void)pump(lc, &w, now(lc) + 5 < deadline ? now(lc) + 5 : deadline);
	}
}

bool keel_lock_held(struct keel_lock_client *lc, const void *name, size_t len, uint64_t *left_ms)
{
	struct held *h = find_held(lc, name, len);
	uint64_t t = now(lc);
	bool ok = h && !lc->g[h->group].lost &&
		  keel_lock_lease_valid(&lc->g[h->group].lease, t, left_ms);
	if (!ok && left_ms)
		*left_ms = 0;
	return ok;
}

int keel_lock_inspect(struct keel_lock_client *lc, const void *name, size_t len,
		      struct keel_lock_state *st,
		      void (*fn)(void *arg, bool waiter, uint64_t session, uint64_t token_or_deadline,
				 uint8_t mode),
		      void *arg)
{
	lc->err[0] = '\0';
	if (!len || len > KEEL_LOCK_MAX_NAME)
		return fail(lc, KEEL_EBADINPUT, "a lock name of 1 to %u bytes", KEEL_LOCK_MAX_NAME);
	uint32_t gi = keel_service_group_of(name, len, lc->groups);
	struct keel_proto_msg m = {.type = KEEL_PROTO_LOCK_INSPECT,
				   .key = {(const uint8_t *)name, (uint32_t)len}};
	keel_proto_set(&m, KEEL_PT_KEY);
	memset(st, 0, sizeof(*st));
	st->group = gi;
	struct want w = {.st = st, .fn = fn, .arg = arg};
	int rc = call(lc, gi, &m, &w);
	if (rc < 0)
		return rc;
	if (w.status < 0)
		return fail(lc, w.status, "inspect: %s", keel_strerror(w.status));
	return 0;
}
