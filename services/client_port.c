/*
 * services/client_port.c — a node's client port: the client protocol
 * (keel/proto.h) over TCP on shard 0's reactor, answered by the services
 * (keel/services.h) of whichever shard hosts the request's group.
 *
 * Shape: shard 0 accepts, receives, decodes and answers what needs no
 * group (HELLO, PING); a KV request becomes a struct creq posted to the
 * group's shard (g mod S), which runs it on its services and encodes the
 * answer frame there (the bytes of a value or a range are read where the
 * store lives), then posts the frame back to shard 0, which queues it on
 * the connection. A connection that closes while requests are out is
 * freed when the last one comes back.
 *
 * A node that does not lead the key's group answers KEEL_ENOTLEADER with
 * the leader it knows (the client library follows the hint); linearizable
 * reads are served on any node (the read barrier goes through the leader).
 *
 * Hostile clients: a frame that does not decode, an over-long frame, a
 * request before HELLO or a wrong token gets an ERROR naming the reason
 * and the connection is closed, logged at most a few times a second; a
 * client that sends HELLO late (hello_timeout_ms) or stops reading (more
 * than KEEL_CPORT_MAX_QUEUED bytes of answers queued) is closed; at most
 * max_conns connections are kept (new ones beyond are closed at once).
 * The node serves on in every case.
 *
 * Admission (issue 18): at most max_pending connections may be waiting for
 * their HELLO at once. When that many wait, a newcomer from an address
 * holding fewer of them than the address holding the most evicts that
 * address's oldest waiting connection; otherwise the newcomer is refused.
 * So a flood from one address (which never says HELLO: it has no token)
 * holds at most the waiting slots no one else wants, and a client from
 * any other address is always let in; a client that says HELLO leaves the
 * waiting set at once and counts only against max_conns.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sodium.h>

#include "keel/kv.h"
#include "keel/node.h"
#include "keel/proto.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/services.h"
#include "keel/proto_lock.h"
#include "client_port_int.h"
#include "listen.h"

#define KEEL_CPORT_MAX_QUEUED (16u << 20)
#define MAX_INFLIGHT 4096
#define LOG_BURST 5

struct outbuf {
	struct outbuf *next;
	size_t len;
	uint8_t data[];
};

struct cconn {
	struct keel_client_port *p;
	struct cconn *next, *prev;
	int fd;
	bool hello, closing, recv_armed, sending;
	unsigned inflight;       /* requests out on other shards (or this one) */
	struct sockaddr_storage addr; /* the client's address (port ignored) */
	uint64_t born;           /* accept order: the oldest is evicted first */
	struct keel_io_op recv_op, send_op;
	struct keel_timer hello_timer;
	uint8_t *rbuf;
	size_t rlen, rcap;
	struct outbuf *out_head, *out_tail;
	struct cwatch *watches;  /* KV watches opened on this connection */
	size_t queued, head_off;
	struct iovec iov;
	struct msghdr msg;
	char peer[64];
};

struct keel_client_port {
	struct keel_client_port_config cfg;
	struct keel_shard *sh;
	struct keel_clock *clock;
	unsigned nshards;
	uint32_t self, groups;
	int lfd;
	bool stopping;
	struct keel_io_op accept_op;
	bool accept_armed;
	struct cconn *conns;
	unsigned nconns;
	unsigned npending;         /* open, not closing, no HELLO yet */
	uint64_t accepts;          /* cconn.born */
	struct keel_log_limit lim;
	/* admission's own lines, so a flood's refusals (thousands a second)
	 * neither hide an eviction nor the other reasons */
	struct keel_log_limit lim_refuse, lim_evict;
	struct keel_client_port_stats st;
	struct cport_lock *lock;   /* client_port_lock.c */
};

/* ---- answers ------------------------------------------------------------ */

/* A frame encoded into a malloc'd outbuf (NULL on failure). */
static struct outbuf *encode(const struct keel_proto_msg *m)
{
	size_t n = keel_proto_size(m);
	if (!n)
		return NULL;
	struct outbuf *b = malloc(sizeof(*b) + n);
	if (!b)
		return NULL;
	b->next = NULL;
	int rc = keel_proto_encode(m, b->data, n);
	if (rc < 0) {
		free(b);
		return NULL;
	}
	b->len = (size_t)rc;
	return b;
}

static void conn_free_if_done(struct cconn *c);
static void start_send(struct cconn *c);
static void watches_close(struct cconn *c);
static void watches_free(struct cconn *c);

static void free_outbufs(struct outbuf *b)
{
	while (b) {
		struct outbuf *next = b->next;
		free(b);
		b = next;
	}
}

/* Closes c's socket and frees it with what it holds (not in any list). */
static void conn_release(struct cconn *c)
{
	close(c->fd);
	watches_free(c);
	free_outbufs(c->out_head);
	free(c->rbuf);
	free(c);
}

static void conn_close(struct cconn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	if (!c->hello)
		c->p->npending--;
	if (why)
		keel_log_limited(&c->p->lim, LOG_BURST, KEEL_LOG_WARN, "client port: %s: %s", c->peer,
				 why);
	keel_clock_cancel(c->p->clock, &c->hello_timer);
	watches_close(c);
	/* the last completions of recv and send follow; then the fd closes */
	keel_io_cancel_fd(c->p->sh, c->fd);
	shutdown(c->fd, SHUT_RDWR);
	conn_free_if_done(c);
}

static void conn_free_if_done(struct cconn *c)
{
	if (!c->closing || c->recv_armed || c->sending || c->inflight)
		return;
	struct keel_client_port *p = c->p;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->nconns--;
	cport_lock_conn_gone(p, c);
	conn_release(c);
}

static void queue(struct cconn *c, struct outbuf *b)
{
	if (c->closing) {
		free(b);
		return;
	}
	if (c->queued + b->len > KEEL_CPORT_MAX_QUEUED) {
		free(b);
		c->p->st.slow_closed++;
		conn_close(c, "closed: the client stopped reading its answers");
		return;
	}
	if (c->out_tail)
		c->out_tail->next = b;
	else
		c->out_head = b;
	c->out_tail = b;
	c->queued += b->len;
	start_send(c);
}

static void answer(struct cconn *c, const struct keel_proto_msg *m)
{
	struct outbuf *b = encode(m);
	if (!b) {
		conn_close(c, "closed: an answer could not be encoded (out of memory)");
		return;
	}
	queue(c, b);
}

/* A RESULT with an error and why (the connection stays). */
static void answer_error(struct cconn *c, uint64_t id, int code, const char *why)
{
	struct keel_proto_msg a = {.type = KEEL_PROTO_RESULT, .id = id, .status = code,
				   .message = {(const uint8_t *)why, (uint32_t)strlen(why)}};
	keel_proto_set(&a, KEEL_PT_STATUS);
	keel_proto_set(&a, KEEL_PT_MESSAGE);
	answer(c, &a);
}

/* An ERROR frame, then the connection closes. */
static void refuse(struct cconn *c, uint64_t id, int code, const char *why)
{
	struct keel_proto_msg m = {.type = KEEL_PROTO_ERROR, .id = id, .status = code,
				   .message = {(const uint8_t *)why, (uint32_t)strlen(why)}};
	keel_proto_set(&m, KEEL_PT_STATUS);
	keel_proto_set(&m, KEEL_PT_MESSAGE);
	struct outbuf *b = encode(&m);
	if (b && !c->closing && !c->sending && !c->out_head) {
		/* best effort: one try, without waiting for the reactor; only
		 * when nothing else is on its way, so bytes never interleave */
		(void)send(c->fd, b->data, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	free(b);
	c->p->st.refused++;
	char msg[160];
	snprintf(msg, sizeof(msg), "closed: %s", why);
	conn_close(c, msg);
}

/* ---- sending -------------------------------------------------------------- */

static void send_complete(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	(void)flags;
	struct cconn *c = (struct cconn *)((char *)op - offsetof(struct cconn, send_op));
	c->sending = false;
	if (res < 0 || c->closing) {
		if (res < 0 && res != -ECANCELED)
			conn_close(c, NULL);
		conn_free_if_done(c);
		return;
	}
	c->head_off += (size_t)res;
	c->queued -= (size_t)res;
	while (c->out_head && c->head_off >= c->out_head->len) {
		struct outbuf *b = c->out_head;
		c->head_off -= b->len;
		c->out_head = b->next;
		if (!c->out_head)
			c->out_tail = NULL;
		free(b);
	}
	start_send(c);
}

static void start_send(struct cconn *c)
{
	if (c->sending || c->closing || !c->out_head)
		return;
	c->iov = (struct iovec){c->out_head->data + c->head_off, c->out_head->len - c->head_off};
	c->msg = (struct msghdr){.msg_iov = &c->iov, .msg_iovlen = 1};
	c->sending = true;
	keel_io_sendmsg(c->p->sh, &c->send_op, c->fd, &c->msg);
}

/* ---- requests on the group's shard --------------------------------------- */

struct creq {
	struct cconn *c;
	struct keel_client_port *p;
	struct keel_shard *home;   /* shard 0 */
	struct keel_shard *on;     /* the group's shard, while there */
	struct keel_node *node;
	uint64_t id;
	uint8_t type;
	int status;                /* the answer's, for the metrics */
	uint32_t group;
	uint32_t flags, limit;
	uint8_t cmp;
	uint64_t client, seq, rev;
	struct keel_proto_bytes key, value, expect, after;
	struct outbuf *out;        /* the answer, encoded on the group's shard */
	uint8_t bytes[];           /* key, value, expect, after copied */
};

static void deliver(struct keel_shard *on, void *arg)
{
	(void)on;
	struct creq *r = arg;
	struct cconn *c = r->c;
	c->inflight--;
	cport_count_answer(r->p, r->type, r->status);
	if (r->out)
		queue(c, r->out);
	else if (!c->closing)
		conn_close(c, "closed: an answer could not be encoded (out of memory)");
	free(r);
	conn_free_if_done(c);
}

/* Encodes m as r's answer and sends it home. */
static void reply(struct creq *r, struct keel_proto_msg *m)
{
	m->id = r->id;
	r->status = m->status;
	r->out = encode(m);
	if (keel_shard_post(r->on, 0, deliver, r) < 0) {
		/* the runtime is stopping: shard 0 frees its connections
		 * itself (keel_client_port_stop); r's is not touched */
		free(r->out);
		free(r);
	}
}

static void reply_status(struct creq *r, int status, uint32_t leader_hint)
{
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .status = status};
	keel_proto_set(&m, KEEL_PT_STATUS);
	if (status == KEEL_ENOTLEADER) {
		m.leader = leader_hint;
		keel_proto_set(&m, KEEL_PT_LEADER);
	}
	reply(r, &m);
}

static uint32_t leader_of(struct keel_services *s, uint32_t group)
{
	struct keel_rlog *l = keel_services_log(s, group);
	if (!l)
		return 0;
	struct keel_rlog_status st;
	keel_rlog_status(l, &st);
	return st.leader;
}

/* A KV request's error: the leader hint for KEEL_ENOTLEADER, and for a
 * group that failed on this node (its WAL could not write: a full disk,
 * an I/O error) a message that says so, so the client's error names the
 * cause and not only "durability lost". */
static void reply_kv_error(struct creq *r, struct keel_services *s, int status)
{
	struct keel_rlog *l = s ? keel_services_log(s, r->group) : NULL;
	struct keel_rlog_status st = {0};
	if (l)
		keel_rlog_status(l, &st);
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .status = status};
	keel_proto_set(&m, KEEL_PT_STATUS);
	if (status == KEEL_ENOTLEADER) {
		m.leader = s ? leader_of(s, r->group) : 0;
		keel_proto_set(&m, KEEL_PT_LEADER);
	}
	char why[160];
	if (st.failed) {
		int n = snprintf(why, sizeof(why), "group %u stopped on node %u: %s", r->group, st.self,
				 keel_strerror(st.fail_code));
		m.message = (struct keel_proto_bytes){(const uint8_t *)why,
						      (uint32_t)(n < (int)sizeof(why) ? n : (int)sizeof(why) - 1)};
		keel_proto_set(&m, KEEL_PT_MESSAGE);
	}
	reply(r, &m);
}

static void write_done(void *arg, int status, const struct keel_kv_result *res)
{
	struct creq *r = arg;
	if (status < 0) {
		reply_kv_error(r, keel_services_of(keel_node_endpoint(r->node, keel_shard_id(r->on))),
			       status);
		return;
	}
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .status = 0,
				   .kv_status = res->status, .rev = res->rev, .mod_rev = res->mod_rev,
				   .flags = res->duplicate ? KEEL_PF_DUPLICATE : 0};
	keel_proto_set(&m, KEEL_PT_STATUS);
	keel_proto_set(&m, KEEL_PT_KV_STATUS);
	keel_proto_set(&m, KEEL_PT_REV);
	keel_proto_set(&m, KEEL_PT_MOD_REV);
	keel_proto_set(&m, KEEL_PT_FLAGS);
	reply(r, &m);
}

/* Most range items in one answer: a frame stays under the maximum. */
#define RANGE_PAGE 1000

struct range_acc {
	struct keel_proto_item *items;
	uint32_t n, cap;
	size_t bytes;
	bool full;
};

static int range_one(void *arg, const struct keel_kv_kv *kv)
{
	struct range_acc *a = arg;
	size_t sz = 64 + kv->key_len + kv->value_len;
	if (a->n && (a->n == RANGE_PAGE || a->bytes + sz > KEEL_PROTO_MAX_FRAME - 4096)) {
		a->full = true;
		return 1;
	}
	if (a->n == a->cap) {
		uint32_t nc = a->cap ? a->cap * 2 : 64;
		struct keel_proto_item *ni = realloc(a->items, nc * sizeof(*ni));
		if (!ni)
			return -ENOMEM;
		a->items = ni;
		a->cap = nc;
	}
	a->items[a->n++] = (struct keel_proto_item){
		.key = {kv->key, kv->key_len}, .value = {kv->value, kv->value_len},
		.create_rev = kv->create_rev, .mod_rev = kv->mod_rev, .version = kv->version};
	a->bytes += sz;
	return 0;
}

static void read_done(void *arg, int status, const struct keel_kv *kv)
{
	struct creq *r = arg;
	if (status < 0) {
		reply_kv_error(r, keel_services_of(keel_node_endpoint(r->node, keel_shard_id(r->on))),
			       status);
		return;
	}
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .status = 0, .rev = keel_kv_revision(kv)};
	keel_proto_set(&m, KEEL_PT_STATUS);
	keel_proto_set(&m, KEEL_PT_REV);
	if (r->type == KEEL_PROTO_GET) {
		struct keel_kv_kv out;
		keel_proto_set(&m, KEEL_PT_KV_STATUS);
		if (keel_kv_get(kv, r->key.p, r->key.len, &out) == 0) {
			m.kv_status = KEEL_KV_OK;
			m.value = (struct keel_proto_bytes){out.value, out.value_len};
			m.mod_rev = out.mod_rev;
			m.create_rev = out.create_rev;
			m.version = out.version;
			keel_proto_set(&m, KEEL_PT_VALUE);
			keel_proto_set(&m, KEEL_PT_MOD_REV);
			keel_proto_set(&m, KEEL_PT_CREATE_REV);
			keel_proto_set(&m, KEEL_PT_VERSION);
		} else {
			m.kv_status = KEEL_KV_NOT_FOUND;
		}
		reply(r, &m);
		return;
	}
	struct range_acc a = {0};
	bool more = false;
	int rc = keel_kv_range(kv, r->key.p, r->key.len, r->after.p, r->after.len, r->limit,
			       range_one, &a, &more);
	if (rc < 0 && rc != 1) {
		free(a.items);
		reply_status(r, -ENOMEM, 0);
		return;
	}
	m.n_items = a.n;
	m.item = a.items;
	m.flags = (more || a.full) ? KEEL_PF_MORE : 0;
	keel_proto_set(&m, KEEL_PT_FLAGS);
	reply(r, &m);
	free(a.items);
}

static void run_req(struct keel_shard *on, void *arg)
{
	struct creq *r = arg;
	r->on = on;
	struct keel_services *s = keel_services_of(keel_node_endpoint(r->node, keel_shard_id(on)));
	if (!s) {
		reply_status(r, KEEL_EUNAVAIL, 0);
		return;
	}
	int rc;
	if (r->type == KEEL_PROTO_GET || r->type == KEEL_PROTO_RANGE) {
		rc = keel_kv_read(s, r->group, !(r->flags & KEEL_PF_SERIALIZABLE), read_done, r);
	} else {
		struct keel_kv_cmd c = {.client = r->client, .seq = r->seq, .key = r->key.p,
					.key_len = r->key.len, .value = r->value.p,
					.value_len = r->value.len};
		if (r->type == KEEL_PROTO_PUT) {
			c.op = KEEL_KV_PUT;
		} else if (r->type == KEEL_PROTO_DEL) {
			c.op = KEEL_KV_DEL;
		} else {
			c.op = KEEL_KV_CAS;
			c.cmp = r->cmp;
			c.cas_delete = r->flags & KEEL_PF_CAS_DELETE;
			c.expect = r->expect.p;
			c.expect_len = r->expect.len;
			c.rev = r->rev; /* CMP_MOD_REV, CMP_VERSION */
		}
		rc = keel_kv_write(s, r->group, &c, write_done, r);
	}
	if (rc < 0)
		reply_kv_error(r, s, rc);
}

/* ---- status: every shard's groups ---------------------------------------- */

struct cstatus {
	struct cconn *c;
	struct keel_client_port *p;
	uint64_t id;
	unsigned pending;          /* shards not back yet */
	struct outbuf *frames, *frames_tail;
};

struct cstatus_part {
	struct cstatus *st;
	struct keel_shard *on;
	struct outbuf *frames, *tail;
};

/* Every shard has answered: the GROUP frames, then the RESULT. */
static void status_finish(struct cstatus *st)
{
	struct cconn *c = st->c;
	c->inflight--;
	while (st->frames) {
		struct outbuf *b = st->frames;
		st->frames = b->next;
		b->next = NULL;
		queue(c, b);
	}
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .id = st->id, .status = 0};
	keel_proto_set(&m, KEEL_PT_STATUS);
	answer(c, &m);
	free(st);
	conn_free_if_done(c);
}

static void status_back(struct keel_shard *on, void *arg)
{
	(void)on;
	struct cstatus_part *pt = arg;
	struct cstatus *st = pt->st;
	if (pt->frames) {
		if (st->frames_tail)
			st->frames_tail->next = pt->frames;
		else
			st->frames = pt->frames;
		st->frames_tail = pt->tail;
	}
	free(pt);
	if (--st->pending == 0)
		status_finish(st);
}

static int status_group(void *arg, struct keel_rlog *l)
{
	struct cstatus_part *pt = arg;
	struct keel_rlog_status s;
	keel_rlog_status(l, &s);
	struct keel_proto_msg m = {.type = KEEL_PROTO_GROUP, .id = pt->st->id, .group = s.group,
				   .leader = s.leader, .rev = s.epoch, .index = s.commit,
				   .applied = s.applied, .status = s.failed ? s.fail_code : 0,
				   .node = s.self};
	keel_proto_set(&m, KEEL_PT_GROUP);
	keel_proto_set(&m, KEEL_PT_LEADER);
	keel_proto_set(&m, KEEL_PT_REV);
	keel_proto_set(&m, KEEL_PT_INDEX);
	keel_proto_set(&m, KEEL_PT_APPLIED);
	keel_proto_set(&m, KEEL_PT_STATUS);
	keel_proto_set(&m, KEEL_PT_NODE);
	struct outbuf *b = encode(&m);
	if (!b)
		return -ENOMEM;
	if (pt->tail)
		pt->tail->next = b;
	else
		pt->frames = b;
	pt->tail = b;
	return 0;
}

static void status_run(struct keel_shard *on, void *arg)
{
	struct cstatus_part *pt = arg;
	pt->on = on;
	(void)keel_rlog_foreach(keel_node_endpoint(pt->st->p->cfg.node, keel_shard_id(on)),
				status_group, pt);
	if (keel_shard_post(on, 0, status_back, pt) < 0) {
		free_outbufs(pt->frames);
		free(pt);
	}
}

static void start_status(struct cconn *c, uint64_t id)
{
	struct keel_client_port *p = c->p;
	struct cstatus *st = calloc(1, sizeof(*st));
	if (!st) {
		refuse(c, id, -ENOMEM, "out of memory");
		return;
	}
	*st = (struct cstatus){.c = c, .p = p, .id = id, .pending = p->nshards};
	c->inflight++;
	/* The parts come back later, on this thread (posts are never run
	 * inline), so a shard that cannot be asked is simply not waited for. */
	unsigned unasked = 0;
	for (unsigned i = 0; i < p->nshards; i++) {
		struct cstatus_part *pt = calloc(1, sizeof(*pt));
		if (pt)
			pt->st = st;
		if (!pt || keel_shard_post(p->sh, i, status_run, pt) < 0) {
			free(pt);
			unasked++;
		}
	}
	st->pending -= unasked;
	if (st->pending == 0)
		status_finish(st);
}

/* ---- KV watches ------------------------------------------------------------
 * A WATCH names one group (a prefix watch of the client library opens one
 * per group): its watch id is the WATCH request's id, unique on the
 * connection, so the client can tell the events apart from the start.
 * The watch is registered on the group's shard (keel_kv_watch: the history
 * from the asked revision, then live changes); the RESULT (status, the
 * group's revision at registration) goes home first, the replayed events
 * right after it in the same message, then each live change as it is
 * applied. Events are encoded on the group's shard (key and value are read
 * where the store lives) and posted home, in order (one ring per pair of
 * shards). A watch counts as a request in flight on its connection until
 * its shard confirms it is unregistered, so the connection is not freed
 * while events may still come. */

struct cwatch {
	struct cwatch *next;       /* the connection's watches (shard 0) */
	struct cconn *c;           /* dereferenced on shard 0 only */
	struct keel_client_port *p;
	uint64_t wid;              /* the WATCH request's id */
	uint64_t unwatch_id;       /* an UNWATCH to answer once it is gone, or 0 */
	uint64_t from_rev, rev, hist_start;
	uint64_t sid;              /* keel_kv_watch's id, on the group's shard */
	uint32_t group;
	int status;                /* of the registration */
	bool prefix;
	/* the group's shard's */
	struct keel_shard *on;
	bool registering, live, encode_failed;
	struct outbuf *early, *early_tail; /* events replayed while registering */
	/* shard 0's */
	bool started, ending;
	uint32_t key_len;
	uint8_t key[];
};

struct wevent {
	struct cwatch *w;
	struct outbuf *b;  /* NULL: the event could not be encoded */
	bool last;         /* the service ended the watch (compacted) */
};

static void watch_end(struct cwatch *w);

static void wevent_deliver(struct keel_shard *on, void *arg)
{
	(void)on;
	struct wevent *e = arg;
	struct cwatch *w = e->w;
	if (e->b)
		queue(w->c, e->b); /* freed there when the connection is closing */
	else
		/* a change the client would never see: it must resume (from
		 * its last revision) on a new connection */
		conn_close(w->c, "closed: a watch event could not be encoded (out of memory)");
	if (e->last)
		watch_end(w);
	free(e);
}

/* On the group's shard: one change (or the end of the watch) as an EVENT. */
static void watch_event(void *arg, const struct keel_kv_event *ev)
{
	struct cwatch *w = arg;
	struct keel_proto_msg m = {.type = KEEL_PROTO_EVENT, .watch_id = w->wid, .group = w->group,
				   .rev = ev->rev};
	keel_proto_set(&m, KEEL_PT_WATCH_ID);
	keel_proto_set(&m, KEEL_PT_GROUP);
	keel_proto_set(&m, KEEL_PT_REV);
	static const char gone[] = "this node installed a snapshot past the revisions the watch "
				   "wanted: resume from the last one seen";
	if (ev->compacted) {
		w->live = false; /* the service dropped it */
		m.status = KEEL_ESTALE;
		m.message = (struct keel_proto_bytes){(const uint8_t *)gone, sizeof(gone) - 1};
		keel_proto_set(&m, KEEL_PT_STATUS);
		keel_proto_set(&m, KEEL_PT_MESSAGE);
	} else {
		m.key = (struct keel_proto_bytes){ev->key, ev->key_len};
		keel_proto_set(&m, KEEL_PT_KEY);
		if (ev->deleted) {
			m.flags = KEEL_PF_DELETED;
			keel_proto_set(&m, KEEL_PT_FLAGS);
		} else {
			m.value = (struct keel_proto_bytes){ev->value, ev->value_len};
			keel_proto_set(&m, KEEL_PT_VALUE);
		}
	}
	struct outbuf *b = encode(&m);
	if (b && w->registering) {
		if (w->early_tail)
			w->early_tail->next = b;
		else
			w->early = b;
		w->early_tail = b;
		return;
	}
	struct wevent *e = malloc(sizeof(*e));
	if (!e) {
		free(b);
		b = NULL;
	}
	if (!b)
		w->encode_failed = true; /* watch_started closes the connection */
	if (!e)
		return;
	*e = (struct wevent){w, b, ev->compacted};
	if (keel_shard_post(w->on, 0, wevent_deliver, e) < 0) {
		free(b);
		free(e);
	}
}

static void watch_revision(void *arg, int status, const struct keel_kv *kv)
{
	struct cwatch *w = arg;
	if (status == 0) {
		w->rev = keel_kv_revision(kv);
		w->hist_start = keel_kv_history_start(kv);
	}
}

static void watch_started(struct keel_shard *on, void *arg);
static void watch_gone(struct keel_shard *on, void *arg);

static void watch_run(struct keel_shard *on, void *arg)
{
	struct cwatch *w = arg;
	struct keel_services *s = keel_services_of(keel_node_endpoint(w->p->cfg.node, keel_shard_id(on)));
	w->on = on;
	w->status = KEEL_EUNAVAIL;
	if (s) {
		/* serializable: runs at once, on this thread */
		(void)keel_kv_read(s, w->group, false, watch_revision, w);
		w->registering = true;
		w->status = keel_kv_watch(s, w->group, w->key, w->key_len, w->prefix, w->from_rev,
					  watch_event, w, &w->sid);
		w->registering = false;
		w->live = w->status == 0;
	}
	if (keel_shard_post(on, 0, watch_started, w) < 0) {
		/* stopping: shard 0 frees the connection and its watches */
		if (w->live)
			keel_kv_unwatch(s, w->sid);
		w->live = false;
	}
}

static void watch_unregister(struct keel_shard *on, void *arg)
{
	struct cwatch *w = arg;
	struct keel_services *s = keel_services_of(keel_node_endpoint(w->p->cfg.node, keel_shard_id(on)));
	if (w->live && s)
		keel_kv_unwatch(s, w->sid);
	w->live = false;
	(void)keel_shard_post(on, 0, watch_gone, w);
}

/* Shard 0: asks the group's shard to drop w (once). */
static void watch_end(struct cwatch *w)
{
	if (w->ending || !w->started)
		return;
	w->ending = true;
	(void)keel_shard_post(w->p->sh, w->group % w->p->nshards, watch_unregister, w);
}

static void watch_unlink_free(struct cwatch *w)
{
	struct cconn *c = w->c;
	for (struct cwatch **pp = &c->watches; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	free_outbufs(w->early);
	free(w);
	c->inflight--;
	conn_free_if_done(c);
}

static void watch_gone(struct keel_shard *on, void *arg)
{
	(void)on;
	struct cwatch *w = arg;
	if (w->unwatch_id) {
		struct keel_proto_msg a = {.type = KEEL_PROTO_RESULT, .id = w->unwatch_id, .status = 0,
					   .watch_id = w->wid};
		keel_proto_set(&a, KEEL_PT_STATUS);
		keel_proto_set(&a, KEEL_PT_WATCH_ID);
		if (!w->c->closing)
			answer(w->c, &a);
	}
	watch_unlink_free(w);
}

static void watch_started(struct keel_shard *on, void *arg)
{
	(void)on;
	struct cwatch *w = arg;
	struct cconn *c = w->c;
	w->started = true;
	struct keel_proto_msg a = {.type = KEEL_PROTO_RESULT, .id = w->wid, .status = w->status,
				   .watch_id = w->wid, .group = w->group, .rev = w->rev};
	keel_proto_set(&a, KEEL_PT_STATUS);
	keel_proto_set(&a, KEEL_PT_WATCH_ID);
	keel_proto_set(&a, KEEL_PT_GROUP);
	keel_proto_set(&a, KEEL_PT_REV);
	char why[160];
	if (w->status == KEEL_ESTALE) {
		int n = snprintf(why, sizeof(why),
				 "revision %llu is compacted on node %u: its history of group %u starts at %llu",
				 (unsigned long long)w->from_rev, c->p->self, w->group,
				 (unsigned long long)w->hist_start);
		a.message = (struct keel_proto_bytes){(const uint8_t *)why,
						      (uint32_t)(n < (int)sizeof(why) ? n : (int)sizeof(why) - 1)};
		keel_proto_set(&a, KEEL_PT_MESSAGE);
	}
	if (!c->closing)
		answer(c, &a);
	/* the replayed history right after the answer, before any live event */
	while (w->early) {
		struct outbuf *b = w->early;
		w->early = b->next;
		b->next = NULL;
		queue(c, b);
	}
	w->early_tail = NULL;
	if (w->encode_failed)
		conn_close(c, "closed: a watch event could not be encoded (out of memory)");
	if (w->status < 0) {
		watch_unlink_free(w);
		return;
	}
	if (c->closing || w->unwatch_id)
		watch_end(w);
}

static void start_watch(struct cconn *c, const struct keel_proto_msg *m)
{
	struct keel_client_port *p = c->p;
	const char *bad = NULL;
	bool prefix = m->flags & KEEL_PF_PREFIX;
	if (!m->has[KEEL_PT_GROUP] || m->group >= p->groups)
		bad = "a watch needs a group below the cluster's group count";
	else if (!prefix && (!m->has[KEEL_PT_KEY] || !m->key.len))
		bad = "a key watch needs a key";
	else if (!prefix && keel_service_group_of(m->key.p, m->key.len, p->groups) != m->group)
		bad = "the key is not in that group";
	else if (!m->id)
		bad = "a watch needs a request id (its watch id)";
	for (struct cwatch *w = c->watches; w && !bad; w = w->next)
		if (w->wid == m->id)
			bad = "a watch with that id is open on this connection";
	if (bad) {
		answer_error(c, m->id, KEEL_EBADINPUT, bad);
		return;
	}
	if (c->inflight >= MAX_INFLIGHT) {
		refuse(c, m->id, KEEL_EFULL, "more than 4096 requests and watches on one connection");
		return;
	}
	struct cwatch *w = calloc(1, sizeof(*w) + m->key.len);
	if (!w) {
		refuse(c, m->id, -ENOMEM, "out of memory");
		return;
	}
	*w = (struct cwatch){.c = c, .p = p, .wid = m->id, .from_rev = m->rev, .group = m->group,
			     .prefix = prefix, .key_len = m->key.len};
	if (m->key.len)
		memcpy(w->key, m->key.p, m->key.len);
	if (keel_shard_post(p->sh, w->group % p->nshards, watch_run, w) < 0) {
		free(w);
		refuse(c, m->id, KEEL_ESTOPPED, "the node is stopping");
		return;
	}
	w->next = c->watches;
	c->watches = w;
	c->inflight++;
	p->st.requests++;
}

static void stop_watch(struct cconn *c, const struct keel_proto_msg *m)
{
	struct cwatch *w = c->watches;
	while (w && (w->wid != m->watch_id || w->unwatch_id))
		w = w->next;
	if (!w) {
		answer_error(c, m->id, KEEL_ENOTFOUND, "no such watch on this connection");
		return;
	}
	w->unwatch_id = m->id ? m->id : UINT64_MAX;
	watch_end(w); /* not started yet: when it is */
}

/* The connection is closing: every watch ends (each frees itself). */
static void watches_close(struct cconn *c)
{
	for (struct cwatch *w = c->watches; w; w = w->next)
		watch_end(w);
}

/* The runtime has stopped: nothing comes back any more. */
static void watches_free(struct cconn *c)
{
	while (c->watches) {
		struct cwatch *w = c->watches;
		c->watches = w->next;
		free_outbufs(w->early);
		free(w);
	}
}

/* ---- one frame from a client --------------------------------------------- */

static bool token_ok(const struct keel_client_port *p, const struct keel_proto_msg *m)
{
	if (!p->cfg.token_len)
		return true;
	return m->token.len == p->cfg.token_len &&
	       sodium_memcmp(m->token.p, p->cfg.token, p->cfg.token_len) == 0;
}

static void handle(struct cconn *c, const struct keel_proto_msg *m)
{
	struct keel_client_port *p = c->p;
	if (!c->hello && m->type != KEEL_PROTO_HELLO) {
		refuse(c, m->id, KEEL_EAUTH, "a request before HELLO");
		return;
	}
	if (keel_proto_is_lock(m->type)) {
		cport_lock_handle(c, m);
		return;
	}
	switch (m->type) {
	case KEEL_PROTO_HELLO: {
		if (c->hello) {
			refuse(c, m->id, KEEL_EPROTO, "a second HELLO");
			return;
		}
		if (!token_ok(p, m)) {
			p->st.auth_failed++;
			refuse(c, m->id, KEEL_EAUTH, "wrong or missing client token");
			return;
		}
		c->hello = true;
		p->npending--;
		keel_clock_cancel(p->clock, &c->hello_timer);
		struct keel_proto_msg a = {.type = KEEL_PROTO_HELLO_OK, .id = m->id, .node = p->self,
					   .groups = p->groups};
		keel_proto_set(&a, KEEL_PT_NODE);
		keel_proto_set(&a, KEEL_PT_GROUPS);
		answer(c, &a);
		return;
	}
	case KEEL_PROTO_PING: {
		struct keel_proto_msg a = {.type = KEEL_PROTO_PONG, .id = m->id};
		answer(c, &a);
		return;
	}
	case KEEL_PROTO_STATUS:
		start_status(c, m->id);
		return;
	case KEEL_PROTO_MEMBER:
		cport_member_handle(c, m);
		return;
	case KEEL_PROTO_WATCH:
		start_watch(c, m);
		return;
	case KEEL_PROTO_UNWATCH:
		stop_watch(c, m);
		return;
	case KEEL_PROTO_PUT:
	case KEEL_PROTO_DEL:
	case KEEL_PROTO_CAS:
	case KEEL_PROTO_GET:
	case KEEL_PROTO_RANGE:
		break;
	default: {
		struct keel_proto_msg a = {.type = KEEL_PROTO_RESULT, .id = m->id,
					   .status = KEEL_ENOTSUP};
		keel_proto_set(&a, KEEL_PT_STATUS);
		const char *why = "unknown request type";
		a.message = (struct keel_proto_bytes){(const uint8_t *)why, (uint32_t)strlen(why)};
		keel_proto_set(&a, KEEL_PT_MESSAGE);
		answer(c, &a);
		return;
	}
	}
	bool is_write = m->type == KEEL_PROTO_PUT || m->type == KEEL_PROTO_DEL ||
			m->type == KEEL_PROTO_CAS;
	const char *bad = NULL;
	if (m->type != KEEL_PROTO_RANGE && (!m->has[KEEL_PT_KEY] || m->key.len == 0))
		bad = "a key is required";
	else if (is_write && (!m->client || !m->has[KEEL_PT_SEQ]))
		bad = "a write needs a client id and a sequence";
	else if (m->type == KEEL_PROTO_CAS &&
		 (m->cmp < KEEL_KV_CMP_VALUE || m->cmp > KEEL_KV_CMP_ABSENT))
		bad = "a CAS needs a comparison";
	else if (m->type == KEEL_PROTO_RANGE && (!m->has[KEEL_PT_GROUP] || m->group >= p->groups))
		bad = "a range needs a group below the cluster's group count";
	if (bad) {
		answer_error(c, m->id, KEEL_EBADINPUT, bad);
		return;
	}
	if (c->inflight >= MAX_INFLIGHT) {
		refuse(c, m->id, KEEL_EFULL, "more than 4096 requests in flight on one connection");
		return;
	}
	size_t nb = m->key.len + m->value.len + m->expect.len + m->after.len;
	struct creq *r = malloc(sizeof(*r) + nb);
	if (!r) {
		refuse(c, m->id, -ENOMEM, "out of memory");
		return;
	}
	*r = (struct creq){.c = c, .p = p, .home = p->sh, .node = p->cfg.node, .id = m->id,
			   .type = m->type, .flags = m->flags, .limit = m->limit, .cmp = m->cmp,
			   .client = m->client, .seq = m->seq, .rev = m->rev};
	r->group = m->type == KEEL_PROTO_RANGE ? m->group
					       : keel_service_group_of(m->key.p, m->key.len, p->groups);
	uint8_t *q = r->bytes;
	const struct keel_proto_bytes *src[4] = {&m->key, &m->value, &m->expect, &m->after};
	struct keel_proto_bytes *dst[4] = {&r->key, &r->value, &r->expect, &r->after};
	for (int i = 0; i < 4; i++) {
		*dst[i] = (struct keel_proto_bytes){src[i]->len ? q : NULL, src[i]->len};
		if (src[i]->len)
			memcpy(q, src[i]->p, src[i]->len);
		q += src[i]->len;
	}
	c->inflight++;
	p->st.requests++;
	if (keel_shard_post(p->sh, r->group % p->nshards, run_req, r) < 0) {
		c->inflight--;
		free(r);
		refuse(c, m->id, KEEL_ESTOPPED, "the node is stopping");
	}
}

/* ---- receiving ----------------------------------------------------------- */

static void parse(struct cconn *c)
{
	size_t pos = 0;
	while (!c->closing) {
		int fl = keel_proto_frame_len(c->rbuf + pos, c->rlen - pos);
		if (fl == 0 || (fl > 0 && (size_t)fl > c->rlen - pos))
			break;
		if (fl < 0) {
			c->p->st.bad_frames++;
			refuse(c, 0, fl, fl == KEEL_ETOOBIG ? "a frame over the maximum size"
							   : "not a keel client frame");
			return;
		}
		struct keel_proto_msg m;
		const char *why = NULL;
		if (keel_proto_decode(c->rbuf + pos, (size_t)fl, &m, &why) < 0) {
			c->p->st.bad_frames++;
			refuse(c, 0, KEEL_EPROTO, why ? why : "a frame that does not decode");
			return;
		}
		handle(c, &m);
		pos += (size_t)fl;
	}
	if (pos) {
		memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
		c->rlen -= pos;
	}
}

static void recv_complete(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	struct cconn *c = (struct cconn *)((char *)op - offsetof(struct cconn, recv_op));
	if (!(flags & KEEL_IO_MORE))
		c->recv_armed = false;
	if (c->closing) {
		conn_free_if_done(c);
		return;
	}
	if (res == -ENOBUFS) {
		if (!c->recv_armed) {
			c->recv_armed = true;
			keel_io_recv_multi(c->p->sh, &c->recv_op, c->fd);
		}
		return;
	}
	if (res <= 0) {
		conn_close(c, res < 0 && res != -ECONNRESET ? "closed: receive failed" : NULL);
		return;
	}
	if (c->rlen + (size_t)res > c->rcap) {
		size_t nc = c->rcap ? c->rcap : 65536;
		while (nc < c->rlen + (size_t)res)
			nc *= 2;
		if (nc > (size_t)KEEL_PROTO_MAX_FRAME * 2 + 65536) {
			refuse(c, 0, KEEL_ETOOBIG, "a frame over the maximum size");
			return;
		}
		uint8_t *b = realloc(c->rbuf, nc);
		if (!b) {
			conn_close(c, "closed: out of memory");
			return;
		}
		c->rbuf = b;
		c->rcap = nc;
	}
	memcpy(c->rbuf + c->rlen, op->data, (size_t)res);
	c->rlen += (size_t)res;
	/* Held through parse: a refusal closes c, and with no receive armed
	 * (the multishot ended) conn_close would free it under us. */
	c->inflight++;
	parse(c);
	c->inflight--;
	if (c->closing) {
		conn_free_if_done(c);
		return;
	}
	if (!c->recv_armed) {
		c->recv_armed = true;
		keel_io_recv_multi(c->p->sh, &c->recv_op, c->fd);
	}
}

/* The same host (the port does not count). */
static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
	return false;
}

static bool pending(const struct cconn *c) { return !c->hello && !c->closing; }

static unsigned pending_from(const struct keel_client_port *p, const struct sockaddr_storage *a)
{
	unsigned n = 0;
	for (const struct cconn *c = p->conns; c; c = c->next)
		n += pending(c) && same_addr(&c->addr, a);
	return n;
}

/* Every waiting slot is taken and a connection from `a` arrives: evicts
 * the oldest waiting connection of the address holding the most, if that
 * is more than `a` would hold with the newcomer. Returns whether a slot
 * was freed. Runs only under pressure (max_pending connections waiting),
 * over at most max_conns connections. */
static bool evict_for(struct keel_client_port *p, const struct sockaddr_storage *a)
{
	unsigned mine = pending_from(p, a), most = 0;
	const struct cconn *heavy = NULL;
	for (const struct cconn *c = p->conns; c; c = c->next) {
		if (!pending(c))
			continue;
		unsigned n = pending_from(p, &c->addr);
		if (n > most) {
			most = n;
			heavy = c;
		}
	}
	if (!heavy || most <= mine + 1)
		return false;
	struct cconn *victim = NULL;
	for (struct cconn *c = p->conns; c; c = c->next)
		if (pending(c) && same_addr(&c->addr, &heavy->addr) &&
		    (!victim || c->born < victim->born))
			victim = c;
	p->st.evicted++;
	keel_log_limited(&p->lim_evict, LOG_BURST, KEEL_LOG_WARN,
			 "client port: %s: closed: evicted, its address held the most (%u) of the "
			 "%u connections without HELLO",
			 victim->peer, most, p->npending);
	conn_close(victim, NULL);
	return true;
}

static void hello_late(struct keel_timer *t)
{
	struct cconn *c = t->arg;
	c->p->st.hello_timeouts++;
	conn_close(c, "closed: no HELLO in time");
}

static void accept_complete(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	struct keel_client_port *p =
		(struct keel_client_port *)((char *)op - offsetof(struct keel_client_port, accept_op));
	if (!(flags & KEEL_IO_MORE))
		p->accept_armed = false;
	if (res >= 0) {
		int fd = res;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
			memset(&ss, 0, sizeof(ss));
		bool full_pending = !p->stopping && p->npending >= p->cfg.max_pending &&
				    !evict_for(p, &ss);
		if (p->stopping || p->nconns >= p->cfg.max_conns || full_pending) {
			p->st.refused++;
			if (full_pending)
				keel_log_limited(&p->lim_refuse, LOG_BURST, KEEL_LOG_WARN,
						 "client port: %u connections wait for their HELLO, "
						 "most from the new one's address: it is refused",
						 p->npending);
			else if (!p->stopping)
				keel_log_limited(&p->lim, LOG_BURST, KEEL_LOG_WARN,
						 "client port: %u connections open: a new one refused",
						 p->nconns);
			close(fd);
		} else {
			struct cconn *c = calloc(1, sizeof(*c));
			if (!c) {
				close(fd);
			} else {
				c->p = p;
				c->fd = fd;
				int one = 1;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				char h[48] = "?", s[8] = "?";
				c->addr = ss;
				c->born = ++p->accepts;
				if (ss.ss_family)
					getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), s, sizeof(s),
						    NI_NUMERICHOST | NI_NUMERICSERV);
				snprintf(c->peer, sizeof(c->peer), "%s:%s", h, s);
				c->recv_op.complete = recv_complete;
				c->send_op.complete = send_complete;
				keel_timer_init(&c->hello_timer, hello_late, c);
				keel_clock_arm(p->clock, &c->hello_timer,
					       (uint64_t)p->cfg.hello_timeout_ms * 1000000u);
				c->next = p->conns;
				if (p->conns)
					p->conns->prev = c;
				p->conns = c;
				p->nconns++;
				p->npending++;
				p->st.accepted++;
				c->recv_armed = true;
				keel_io_recv_multi(p->sh, &c->recv_op, fd);
			}
		}
	} else if (res != -ECANCELED && !p->stopping) {
		keel_log_limited(&p->lim, LOG_BURST, KEEL_LOG_WARN, "client port: accept: %s",
				 keel_strerror(res));
	}
	if (!p->accept_armed && !p->stopping) {
		p->accept_armed = true;
		keel_io_accept_multi(p->sh, &p->accept_op, p->lfd);
	}
}

/* ---- start and stop -------------------------------------------------------- */

int keel_client_port_start(const struct keel_client_port_config *cfg, struct keel_endpoint *ep,
			   struct keel_client_port **out, char *errmsg)
{
	*out = NULL;
	struct keel_shard *sh = keel_endpoint_reactor(ep);
	if (!cfg->node || !cfg->listen || !sh || keel_endpoint_shard(ep) != 0)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "client port: needs a node, an address and shard 0's endpoint");
	int fd;
	int rc = keel_services_listen("client port", cfg->listen, 4096, &fd, errmsg);
	if (rc < 0)
		return rc;
	struct keel_client_port *p = calloc(1, sizeof(*p));
	if (!p) {
		close(fd);
		return keel_errmsg_set(errmsg, -ENOMEM, "client port: out of memory");
	}
	p->cfg = *cfg;
	if (!p->cfg.max_conns)
		p->cfg.max_conns = 1024;
	if (!p->cfg.hello_timeout_ms)
		p->cfg.hello_timeout_ms = 5000;
	if (!p->cfg.max_pending)
		p->cfg.max_pending = 128;
	p->sh = sh;
	p->clock = keel_endpoint_clock(ep);
	p->nshards = keel_endpoint_nshards(ep);
	p->self = keel_endpoint_node_id(ep);
	p->groups = cfg->groups;
	p->lfd = fd;
	int lrc = cport_lock_start(p);
	if (lrc < 0) {
		close(fd);
		free(p);
		return keel_errmsg_set(errmsg, lrc, "client port: the lock service's part: %s",
				       keel_strerror(lrc));
	}
	p->accept_op.complete = accept_complete;
	p->accept_armed = true;
	keel_io_accept_multi(sh, &p->accept_op, fd);
	keel_endpoint_set_slot(ep, KEEL_SLOT_CLIENT, p);
	keel_info("client port: listening on %s (%u groups, %s)", cfg->listen, p->groups,
		  cfg->token_len ? "token required" : "no token");
	*out = p;
	return 0;
}

void keel_client_port_stop(struct keel_client_port *p)
{
	if (!p)
		return;
	p->stopping = true;
	keel_io_cancel_fd(p->sh, p->lfd);
	for (struct cconn *c = p->conns, *n; c; c = n) {
		n = c->next;
		conn_close(c, NULL);
	}
	/* What is still in flight completes after the loop stopped, or never:
	 * the runtime frees nothing of ours, so free what is left now (the
	 * loops have ended when a node's stop hooks run). */
	for (struct cconn *c = p->conns, *n; c; c = n) {
		n = c->next;
		cport_lock_conn_gone(p, c);
		conn_release(c);
	}
	cport_lock_stop(p);
	close(p->lfd);
	free(p);
}

void keel_client_port_get_stats(const struct keel_client_port *p, struct keel_client_port_stats *st)
{
	*st = p->st;
	st->conns = p->nconns;
}

void cport_count_answer(struct keel_client_port *p, uint8_t type, int status)
{
	if (type >= KEEL_CLIENT_PORT_TYPES)
		return;
	int k = status == 0 ? KEEL_CLIENT_OK
		: status == KEEL_ENOTLEADER ? KEEL_CLIENT_REDIRECT : KEEL_CLIENT_ERROR;
	p->st.answers[type][k]++;
}

/* ---- lent to the lock service's part (client_port_int.h) ----------------- */

struct keel_client_port *cport_of(struct cconn *c)
{
	return c->p;
}

struct cport_view cport_view(const struct keel_client_port *p)
{
	return (struct cport_view){p->cfg.node, p->sh, p->nshards, p->groups};
}

struct cport_lock **cport_lock_slot(struct keel_client_port *p)
{
	return &p->lock;
}

bool cport_closing(const struct cconn *c)
{
	return c->closing;
}

struct outbuf *cport_encode(const struct keel_proto_msg *m)
{
	return encode(m);
}

void cport_outbuf_free(struct outbuf *b)
{
	free_outbufs(b);
}

void cport_queue(struct cconn *c, struct outbuf *b)
{
	queue(c, b);
}

void cport_answer(struct cconn *c, const struct keel_proto_msg *m)
{
	answer(c, m);
}

void cport_hold(struct cconn *c)
{
	c->inflight++;
}

void cport_unhold(struct cconn *c)
{
	c->inflight--;
	conn_free_if_done(c);
}

void cport_refuse(struct cconn *c, uint64_t id, int code, const char *why)
{
	refuse(c, id, code, why);
}

void cport_count_request(struct keel_client_port *p)
{
	p->st.requests++;
}
