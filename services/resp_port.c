/*
 * services/resp_port.c — a node's RESP (Redis protocol) listener: Redis
 * commands over TCP on shard 0's reactor, run on the KV service of the
 * key's group (keel/services.h), answered in RESP2 or RESP3 (keel/resp.h).
 *
 * Shape: shard 0 accepts, receives and parses (services/resp_parse.c) and
 * answers what needs no group (PING, HELLO, AUTH, CLIENT, COMMAND...). A
 * key command becomes a struct rop posted to its group's shard (g mod S),
 * which runs it there: reads after a read barrier (linearizable, served on
 * any node: the barrier goes through the leader), writes proposed to the
 * group's log and answered once applied (replicated and durable). A node
 * that does not lead the group forwards the write over the peer mesh
 * ("fwd" messages, shard s to shard s) to the leader it knows, which
 * proposes it and sends the outcome back: plain Redis clients do not
 * follow redirects. Every write carries the connection's (client id,
 * sequence), so a write retried after a leader change or a lost forward
 * is answered from the state machine's table, never applied twice; writes
 * are retried for up to RETRY_MS before the client gets an error.
 *
 * Replies go out in command order (pipelining): every parsed command takes
 * a slot in its connection's queue, filled when its answer is ready (on
 * shard 0); the queue is sent from its head while the head is filled.
 *
 * Keys map to groups as Redis Cluster maps keys to slots: a key holding a
 * non-empty {hash tag} maps by the tag alone, so {user1}.a and {user1}.b
 * share a group. A multi-key command (MGET, MSET, DEL, EXISTS) over keys
 * of more than one group answers -CROSSSLOT.
 *
 * Hostile clients: a protocol error is answered with Redis's words and the
 * connection closes; more than MAX_SLOTS commands waiting for answers stop
 * the parsing (the socket's buffer fills: TCP pushes back), and a client
 * whose unparsed input passes MAX_RBUF or whose unsent answers pass
 * MAX_QUEUED (it sends without reading) is closed; each close is logged
 * with its reason, rate-limited. The node serves on in every case.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keel/kv.h"
#include "keel/node.h"
#include "keel/resp.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/services.h"
#include "keel_config.h"
#include "listen.h"

#define MAX_SLOTS 1024             /* commands waiting for answers, per connection */
#define MAX_RBUF (8u << 20)        /* unparsed input, per connection */
#define MAX_QUEUED (16u << 20)     /* unsent answers, per connection */
#define RETRY_MS 10000             /* a write is retried this long (leader changes) */
#define RETRY_GAP_MS 100
#define FWD_TIMEOUT_MS 3000        /* a forwarded write's answer not back: retry */
#define CAS_TRIES 32               /* read-then-compare loops (SET XX / GET) */
#define LOG_BURST 5

enum { FWD_REQ = 1, FWD_RES = 2 };
enum { AGAIN_WRITE, AGAIN_READ, AGAIN_SET_READ };

/* ---- connections ---------------------------------------------------------- */

struct rslot {
	struct rslot *next;
	bool done;
	struct keel_resp_buf b;
};

struct rconn {
	struct keel_resp_port *p;
	struct rconn *next, *prev;
	int fd;
	bool authed, closing, recv_armed, sending, quitting;
	bool local_reads;          /* READONLY: serializable reads of this node's replicas */
	int proto;                 /* 2 or 3 */
	unsigned inflight;         /* rops out, and the hold through parse */
	unsigned reads, writes;    /* key commands out, by kind (ordering) */
	uint64_t id;               /* CLIENT ID */
	uint64_t kv_client, seq;   /* the connection's writes */
	char name[64];
	struct keel_io_op recv_op, send_op;
	uint8_t *rbuf;
	size_t rlen, rcap;
	struct keel_resp_parser parser;
	struct rslot *head, *tail; /* replies in command order */
	unsigned nslots;
	size_t queued, head_off;   /* bytes of filled slots not yet sent */
	struct iovec iov[16];      /* the send in flight: valid until it completes */
	struct msghdr msg;
	char peer[64];
};

struct keel_resp_port {
	struct keel_resp_port_config cfg;
	struct keel_shard *sh;
	unsigned nshards;
	uint32_t self, groups;
	int lfd;
	bool stopping, accept_armed;
	struct keel_io_op accept_op;
	struct rconn *conns;
	unsigned nconns;
	uint64_t next_id;
	uint64_t client_base;      /* kv client ids: base + connection id */
	struct keel_log_limit lim;
	struct keel_resp_port_stats st;
	uint64_t started_ms;
};

/* ---- per-shard forwarding state (every shard) ---------------------------- */

struct rop;

struct resp_shard {
	struct keel_endpoint *ep;
	struct keel_shard *sh;
	int fwd_type;
	uint32_t self, groups, nshards;
	uint64_t next_fwd;
	struct rop *fwd_pending;   /* forwarded, waiting for the leader's answer */
	struct fserve *serving;    /* writes served for other nodes, in flight */
	struct keel_log_limit lim;
};

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint32_t keel_resp_group_of(const uint8_t *key, size_t len, uint32_t groups)
{
	/* Redis Cluster's hash tag: the bytes between the first '{' and the
	 * first '}' after it, when there are any */
	const uint8_t *o = memchr(key, '{', len);
	if (o) {
		size_t rest = len - (size_t)(o + 1 - key);
		const uint8_t *c = memchr(o + 1, '}', rest);
		if (c && c > o + 1)
			return keel_service_group_of(o + 1, (size_t)(c - o - 1), groups);
	}
	return keel_service_group_of(key, len, groups);
}

static bool arg_is(const uint8_t *a, size_t n, const char *s)
{
	return n == strlen(s) && !strncasecmp((const char *)a, s, n);
}

static bool arg_ll(const uint8_t *a, size_t n, long long *v)
{
	char t[32];
	if (n == 0 || n >= sizeof(t))
		return false;
	memcpy(t, a, n);
	t[n] = 0;
	char *end;
	errno = 0;
	long long x = strtoll(t, &end, 10);
	if (errno || *end || end == t || t[0] == ' ' || t[0] == '+')
		return false;
	*v = x;
	return true;
}

/* ---- sending ---------------------------------------------------------------- */

static void conn_free_if_done(struct rconn *c);
static void start_send(struct rconn *c);
static void parse(struct rconn *c);

static void conn_release(struct rconn *c)
{
	close(c->fd);
	for (struct rslot *s = c->head, *n; s; s = n) {
		n = s->next;
		keel_resp_buf_free(&s->b);
		free(s);
	}
	keel_resp_parser_free(&c->parser);
	free(c->rbuf);
	free(c);
}

static void conn_close(struct rconn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	if (why) {
		c->p->st.closed_bad++;
		keel_log_limited(&c->p->lim, LOG_BURST, KEEL_LOG_WARN, "resp port: %s: %s", c->peer,
				 why);
	}
	keel_io_cancel_fd(c->p->sh, c->fd);
	shutdown(c->fd, SHUT_RDWR);
	conn_free_if_done(c);
}

static void conn_free_if_done(struct rconn *c)
{
	if (!c->closing || c->recv_armed || c->sending || c->inflight)
		return;
	struct keel_resp_port *p = c->p;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->nconns--;
	conn_release(c);
}

static struct rslot *slot_new(struct rconn *c)
{
	struct rslot *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (c->tail)
		c->tail->next = s;
	else
		c->head = s;
	c->tail = s;
	c->nslots++;
	return s;
}

/* s's answer is in s->b: counts it and sends what is ready. */
static void slot_done(struct rconn *c, struct rslot *s)
{
	s->done = true;
	if (c->closing)
		return;
	if (s->b.oom) {
		conn_close(c, "closed: an answer could not be encoded (out of memory)");
		return;
	}
	c->queued += s->b.len;
	if (c->queued > MAX_QUEUED) {
		c->p->st.slow_closed++;
		conn_close(c, "closed: the client stopped reading its answers");
		return;
	}
	start_send(c);
}

static void send_complete(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	(void)flags;
	struct rconn *c = (struct rconn *)((char *)op - offsetof(struct rconn, send_op));
	c->sending = false;
	if (res < 0 || c->closing) {
		if (res < 0 && res != -ECANCELED)
			conn_close(c, NULL);
		conn_free_if_done(c);
		return;
	}
	c->head_off += (size_t)res;
	c->queued -= (size_t)res;
	bool freed = false;
	while (c->head && c->head->done && c->head_off >= c->head->b.len) {
		struct rslot *s = c->head;
		c->head_off -= s->b.len;
		c->head = s->next;
		if (!c->head)
			c->tail = NULL;
		keel_resp_buf_free(&s->b);
		free(s);
		c->nslots--;
		freed = true;
	}
	if (c->quitting && !c->head) {
		conn_close(c, NULL);
		return;
	}
	start_send(c);
	/* parsing stopped at MAX_SLOTS: room again */
	if (freed && c->rlen && c->nslots < MAX_SLOTS / 2 && !c->closing) {
		c->inflight++;
		parse(c);
		c->inflight--;
		conn_free_if_done(c);
	}
}

static void start_send(struct rconn *c)
{
	if (c->sending || c->closing)
		return;
	/* skip empty filled slots at the head (a command with no answer) */
	while (c->head && c->head->done && c->head->b.len == c->head_off) {
		struct rslot *s = c->head;
		c->head = s->next;
		if (!c->head)
			c->tail = NULL;
		c->head_off = 0;
		keel_resp_buf_free(&s->b);
		free(s);
		c->nslots--;
	}
	if (!c->head || !c->head->done) {
		if (c->quitting && !c->head)
			conn_close(c, NULL);
		return;
	}
	/* one sendmsg over the filled slots in a row (pipelined answers) */
	int n = 0;
	size_t off = c->head_off;
	for (struct rslot *s = c->head; s && s->done && n < 16; s = s->next) {
		if (s->b.len > off)
			c->iov[n++] = (struct iovec){s->b.p + off, s->b.len - off};
		off = 0;
	}
	if (!n)
		return;
	c->msg = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = (size_t)n};
	c->sending = true;
	keel_io_sendmsg(c->p->sh, &c->send_op, c->fd, &c->msg);
}

/* ---- key commands on the group's shard ------------------------------------- */

enum op_kind { OP_GET, OP_SET, OP_DEL, OP_EXISTS, OP_MGET, OP_MSET, OP_STRLEN, OP_INCR, OP_APPEND, OP_TYPE };

struct rop {
	struct rconn *c;           /* shard 0's; never dereferenced elsewhere */
	struct rslot *slot;
	struct keel_resp_port *p;
	struct keel_node *node;
	struct keel_shard *on;     /* the group's shard, while there */
	struct rop *fwd_next;      /* resp_shard.fwd_pending */
	uint64_t fwd_id;
	struct keel_timer timer;   /* retry gap, or a forward's timeout */
	bool timer_retry;
	uint8_t again;             /* what a retry runs: AGAIN_* */
	int kind, proto;
	bool is_write, local;
	uint32_t group;
	uint64_t client, seq;      /* the next write's */
	uint64_t deadline_ms;
	/* SET */
	bool nx, xx, get;
	int tries;
	bool old_present;
	uint64_t old_rev;
	uint8_t *old;
	size_t old_len;
	int64_t delta;             /* INCR, INCRBY, DECR, DECRBY */
	/* MSET, DEL: the key being written (index into argv) */
	uint32_t step;
	int64_t count;
	/* the write in flight, encoded once: retries resend the same bytes */
	struct keel_kv_cmd cmd;
	uint8_t *cmd_enc;
	size_t cmd_len;
	uint32_t argc;
	const uint8_t **argv;
	size_t *argl;
	struct keel_resp_buf out;
};

static struct resp_shard *rshard(struct keel_shard *on, struct keel_node *node)
{
	return keel_endpoint_slot(keel_node_endpoint(node, keel_shard_id(on)), KEEL_SLOT_RESP);
}

static struct keel_services *services_on(struct rop *o)
{
	return keel_services_of(keel_node_endpoint(o->node, keel_shard_id(o->on)));
}

static void op_deliver(struct keel_shard *on, void *arg)
{
	(void)on;
	struct rop *o = arg;
	struct rconn *c = o->c;
	o->slot->b = o->out;
	o->out = (struct keel_resp_buf){0};
	c->inflight--;
	if (o->is_write)
		c->writes--;
	else
		c->reads--;
	slot_done(c, o->slot);
	free(o->old);
	free(o->cmd_enc);
	free(o);
	/* a command held back for ordering may go now */
	if (!c->closing && c->rlen && (!c->reads || !c->writes)) {
		c->inflight++;
		parse(c);
		c->inflight--;
	}
	conn_free_if_done(c);
}

/* The answer is in o->out: home to shard 0. */
static void op_finish(struct rop *o)
{
	if (keel_shard_post(o->on, 0, op_deliver, o) < 0) {
		/* stopping: shard 0 frees its connections itself */
		keel_resp_buf_free(&o->out);
		free(o->old);
		free(o->cmd_enc);
		free(o);
	}
}

static void op_error(struct rop *o, int code)
{
	const char *what = code == KEEL_ENOTLEADER || code == KEEL_EUNAVAIL
				   ? "no leader reachable for the key's group"
			   : code == KEEL_ETIMEOUT ? "timed out: the write's outcome is unknown"
						   : keel_strerror(code);
	keel_resp_errorf(&o->out, "%s keel: group %u: %s",
			 code == KEEL_ENOTLEADER || code == KEEL_EUNAVAIL ? "CLUSTERDOWN" : "ERR",
			 o->group, what);
	op_finish(o);
}

static void op_step(struct rop *o);
static void op_reread(struct rop *o);
static void op_read_then(struct rop *o);
static void op_written(struct rop *o, int status, const struct keel_kv_result *res);

static void write_cb(void *arg, int status, const struct keel_kv_result *res)
{
	op_written(arg, status, res);
}

static void retry_fire(struct keel_timer *t);

/* Proposes o->cmd_enc on this node, or forwards it to the group's leader. */
static void op_submit(struct rop *o)
{
	struct keel_services *s = services_on(o);
	if (!s) {
		op_error(o, KEEL_EUNAVAIL);
		return;
	}
	struct keel_kv_cmd c;
	if (keel_kv_cmd_decode(o->cmd_enc, o->cmd_len, &c) < 0) {
		op_error(o, KEEL_EBADINPUT);
		return;
	}
	int rc = keel_kv_write(s, o->group, &c, write_cb, o);
	if (rc == 0)
		return;
	if (rc != KEEL_ENOTLEADER) {
		op_written(o, rc, NULL);
		return;
	}
	struct keel_rlog *l = keel_services_log(s, o->group);
	struct keel_rlog_status st = {0};
	if (l)
		keel_rlog_status(l, &st);
	struct resp_shard *rs = rshard(o->on, o->node);
	if (!st.leader || st.leader == st.self || !rs) {
		op_written(o, KEEL_ENOTLEADER, NULL);
		return;
	}
	/* forward: [u8 REQ][u64 id][the command] */
	size_t n = 9 + o->cmd_len;
	uint8_t *m = malloc(n);
	if (!m) {
		op_written(o, -ENOMEM, NULL);
		return;
	}
	o->fwd_id = ++rs->next_fwd;
	m[0] = FWD_REQ;
	keel_put_le64(m + 1, o->fwd_id);
	memcpy(m + 9, o->cmd_enc, o->cmd_len);
	rc = keel_endpoint_send(rs->ep, st.leader, (uint16_t)rs->fwd_type, o->group, m, n);
	free(m);
	if (rc < 0) {
		op_written(o, KEEL_EUNAVAIL, NULL);
		return;
	}
	o->fwd_next = rs->fwd_pending;
	rs->fwd_pending = o;
	o->timer_retry = false;
	keel_timer_init(&o->timer, retry_fire, o);
	keel_clock_arm(keel_endpoint_clock(rs->ep), &o->timer, (uint64_t)FWD_TIMEOUT_MS * 1000000u);
}

static void fwd_unlink(struct resp_shard *rs, struct rop *o)
{
	for (struct rop **pp = &rs->fwd_pending; *pp; pp = &(*pp)->fwd_next) {
		if (*pp == o) {
			*pp = o->fwd_next;
			break;
		}
	}
	o->fwd_next = NULL;
	o->fwd_id = 0;
}

static void retry_fire(struct keel_timer *t)
{
	struct rop *o = t->arg;
	if (!o->timer_retry) {
		/* the forward's answer did not come: ask again (the same
		 * client and sequence: applied at most once) */
		struct resp_shard *rs = rshard(o->on, o->node);
		if (rs)
			fwd_unlink(rs, o);
		op_written(o, KEEL_ETIMEOUT, NULL);
		return;
	}
	struct resp_shard *rs = rshard(o->on, o->node);
	if (rs)
		fwd_unlink(rs, o);
	if (o->again == AGAIN_READ)
		op_reread(o);
	else if (o->again == AGAIN_SET_READ)
		op_read_then(o);
	else
		op_submit(o);
}

/* Encodes the write o->cmd (with a new sequence) and submits it. */
static void op_write(struct rop *o)
{
	o->cmd.client = o->client;
	o->cmd.seq = o->seq++;
	o->cmd.time_ms = wall_ms();
	free(o->cmd_enc);
	o->cmd_len = keel_kv_cmd_size(&o->cmd);
	o->cmd_enc = malloc(o->cmd_len);
	int rc = o->cmd_enc ? keel_kv_cmd_encode(&o->cmd, o->cmd_enc, o->cmd_len) : -ENOMEM;
	if (rc < 0) {
		op_error(o, rc);
		return;
	}
	op_submit(o);
}

static bool retryable(int status)
{
	return status == KEEL_ENOTLEADER || status == KEEL_EUNAVAIL || status == KEEL_ETIMEOUT ||
	       status == KEEL_EFULL;
}


/* A failure a retry may cure (no leader yet, a leader change, a lost
 * forward): runs `again` after RETRY_GAP_MS, until the deadline. */
static bool park(struct rop *o, int status, uint8_t again)
{
	if (!retryable(status) || mono_ms() >= o->deadline_ms)
		return false;
	struct resp_shard *rs = rshard(o->on, o->node);
	if (!rs)
		return false;
	/* parked on the shard's list too, so a stop frees it */
	o->fwd_id = 0;
	o->fwd_next = rs->fwd_pending;
	rs->fwd_pending = o;
	o->timer_retry = true;
	o->again = again;
	keel_timer_init(&o->timer, retry_fire, o);
	keel_clock_arm(keel_endpoint_clock(rs->ep), &o->timer, (uint64_t)RETRY_GAP_MS * 1000000u);
	return true;
}

static void op_written(struct rop *o, int status, const struct keel_kv_result *res)
{
	if (status < 0) {
		if (!park(o, status, AGAIN_WRITE))
			op_error(o, status);
		return;
	}
	if (res->status == KEEL_KV_STALE_SEQ) {
		op_error(o, KEEL_ETIMEOUT);
		return;
	}
	switch (o->kind) {
	case OP_SET:
		if (res->status == KEEL_KV_CAS_FAILED) {
			if (o->nx && !o->get) {
				keel_resp_null(&o->out, o->proto);
				op_finish(o);
				return;
			}
			/* the key changed between our read and the CAS: again */
			if (++o->tries >= CAS_TRIES) {
				keel_resp_error(&o->out, "ERR keel: the key changes too fast, try again");
				op_finish(o);
				return;
			}
			op_read_then(o);
			return;
		}
		if (o->get) {
			if (o->old_present)
				keel_resp_bulk(&o->out, o->old, o->old_len);
			else
				keel_resp_null(&o->out, o->proto);
		} else {
			keel_resp_simple(&o->out, "OK");
		}
		op_finish(o);
		return;
	case OP_INCR:
	case OP_APPEND:
		if (res->status == KEEL_KV_CAS_FAILED) {
			if (++o->tries >= CAS_TRIES) {
				keel_resp_error(&o->out, "ERR keel: the key changes too fast, try again");
				op_finish(o);
				return;
			}
			op_read_then(o);
			return;
		}
		keel_resp_int(&o->out, o->count);
		op_finish(o);
		return;
	case OP_DEL:
		o->count += res->status == KEEL_KV_OK;
		o->step++;
		op_step(o);
		return;
	case OP_MSET:
		o->step += 2;
		op_step(o);
		return;
	default:
		op_error(o, KEEL_EBADINPUT);
	}
}

/* A SET that must look first (XX, GET, or NX with GET): read, then CAS on
 * the key's mod revision (0: absent), so nothing can slip in between. */
static void set_after_read(void *arg, int status, const struct keel_kv *kv)
{
	struct rop *o = arg;
	if (status < 0) {
		if (!park(o, status, AGAIN_SET_READ))
			op_error(o, status);
		return;
	}
	struct keel_kv_kv cur;
	bool present = keel_kv_get(kv, o->argv[1], o->argl[1], &cur) == 0;
	free(o->old);
	o->old = NULL;
	o->old_present = present;
	o->old_rev = present ? cur.mod_rev : 0;
	if (o->kind == OP_INCR || o->kind == OP_APPEND) {
		/* the new value from the one read, written only if the key
		 * has not moved since (CAS on its mod revision): atomic */
		char t[32];
		const uint8_t *add = (const uint8_t *)t;
		size_t base = 0, addl;
		if (o->kind == OP_INCR) {
			long long v = 0;
			if (present && !keel_resp_ll(cur.value, cur.value_len, &v)) {
				keel_resp_error(&o->out, "ERR value is not an integer or out of range");
				op_finish(o);
				return;
			}
			if ((o->delta > 0 && v > INT64_MAX - o->delta) ||
			    (o->delta < 0 && v < INT64_MIN - o->delta)) {
				keel_resp_error(&o->out, "ERR increment or decrement would overflow");
				op_finish(o);
				return;
			}
			o->count = v + o->delta;
			addl = (size_t)snprintf(t, sizeof(t), "%lld", (long long)o->count);
		} else {
			base = present ? cur.value_len : 0;
			add = o->argv[2];
			addl = o->argl[2];
			if (base + addl > KEEL_KV_MAX_VALUE) {
				keel_resp_errorf(&o->out, "ERR keel: value of %zu bytes is over the limit of %u",
						 base + addl, KEEL_KV_MAX_VALUE);
				op_finish(o);
				return;
			}
			o->count = (int64_t)(base + addl);
		}
		o->old = malloc(base + addl + 1);
		if (!o->old) {
			op_error(o, -ENOMEM);
			return;
		}
		if (base)
			memcpy(o->old, cur.value, base);
		memcpy(o->old + base, add, addl);
		o->old_len = base + addl;
		o->cmd = (struct keel_kv_cmd){.op = KEEL_KV_CAS, .key = o->argv[1],
					      .key_len = (uint32_t)o->argl[1], .value = o->old,
					      .value_len = (uint32_t)o->old_len,
					      .cmp = KEEL_KV_CMP_MOD_REV, .rev = o->old_rev};
		op_write(o);
		return;
	}
	if (present && o->get) {
		o->old = malloc(cur.value_len ? cur.value_len : 1);
		if (!o->old) {
			op_error(o, -ENOMEM);
			return;
		}
		memcpy(o->old, cur.value, cur.value_len);
		o->old_len = cur.value_len;
	}
	if ((o->nx && present) || (o->xx && !present)) {
		if (o->get && present)
			keel_resp_bulk(&o->out, o->old, o->old_len);
		else
			keel_resp_null(&o->out, o->proto);
		op_finish(o);
		return;
	}
	o->cmd = (struct keel_kv_cmd){.op = KEEL_KV_CAS, .key = o->argv[1],
				      .key_len = (uint32_t)o->argl[1], .value = o->argv[2],
				      .value_len = (uint32_t)o->argl[2], .cmp = KEEL_KV_CMP_MOD_REV,
				      .rev = o->old_rev};
	op_write(o);
}

static void op_read_then(struct rop *o)
{
	struct keel_services *s = services_on(o);
	int rc = s ? keel_kv_read(s, o->group, true, set_after_read, o) : KEEL_EUNAVAIL;
	if (rc < 0 && !park(o, rc, AGAIN_SET_READ))
		op_error(o, rc);
}

static void read_cb(void *arg, int status, const struct keel_kv *kv)
{
	struct rop *o = arg;
	if (status < 0) {
		if (!park(o, status, AGAIN_READ))
			op_error(o, status);
		return;
	}
	struct keel_kv_kv cur;
	switch (o->kind) {
	case OP_GET:
		if (keel_kv_get(kv, o->argv[1], o->argl[1], &cur) == 0)
			keel_resp_bulk(&o->out, cur.value, cur.value_len);
		else
			keel_resp_null(&o->out, o->proto);
		break;
	case OP_TYPE:
		/* every keel value is a string */
		keel_resp_simple(&o->out, keel_kv_get(kv, o->argv[1], o->argl[1], &cur) == 0 ? "string"
											   : "none");
		break;
	case OP_STRLEN:
		keel_resp_int(&o->out, keel_kv_get(kv, o->argv[1], o->argl[1], &cur) == 0
					       ? (int64_t)cur.value_len
					       : 0);
		break;
	case OP_EXISTS: {
		int64_t n = 0;
		for (uint32_t i = 1; i < o->argc; i++)
			n += keel_kv_get(kv, o->argv[i], o->argl[i], &cur) == 0;
		keel_resp_int(&o->out, n);
		break;
	}
	case OP_MGET:
		keel_resp_array(&o->out, o->argc - 1);
		for (uint32_t i = 1; i < o->argc; i++) {
			if (keel_kv_get(kv, o->argv[i], o->argl[i], &cur) == 0)
				keel_resp_bulk(&o->out, cur.value, cur.value_len);
			else
				keel_resp_null(&o->out, o->proto);
		}
		break;
	}
	op_finish(o);
}

static void op_reread(struct rop *o)
{
	struct keel_services *s = services_on(o);
	int rc = s ? keel_kv_read(s, o->group, !o->local, read_cb, o) : KEEL_EUNAVAIL;
	if (rc < 0 && !park(o, rc, AGAIN_READ))
		op_error(o, rc);
}

/* The next write of a DEL or MSET, or the answer when all are done. */
static void op_step(struct rop *o)
{
	if (o->kind == OP_DEL) {
		if (o->step >= o->argc) {
			keel_resp_int(&o->out, o->count);
			op_finish(o);
			return;
		}
		o->cmd = (struct keel_kv_cmd){.op = KEEL_KV_DEL, .key = o->argv[o->step],
					      .key_len = (uint32_t)o->argl[o->step]};
	} else {
		if (o->step >= o->argc) {
			keel_resp_simple(&o->out, "OK");
			op_finish(o);
			return;
		}
		o->cmd = (struct keel_kv_cmd){.op = KEEL_KV_PUT, .key = o->argv[o->step],
					      .key_len = (uint32_t)o->argl[o->step],
					      .value = o->argv[o->step + 1],
					      .value_len = (uint32_t)o->argl[o->step + 1]};
	}
	o->deadline_ms = mono_ms() + RETRY_MS;
	op_write(o);
}

static void op_run(struct keel_shard *on, void *arg)
{
	struct rop *o = arg;
	o->on = on;
	struct keel_services *s = services_on(o);
	if (!s) {
		op_error(o, KEEL_EUNAVAIL);
		return;
	}
	o->deadline_ms = mono_ms() + RETRY_MS;
	int rc = 0;
	switch (o->kind) {
	case OP_GET:
	case OP_STRLEN:
	case OP_TYPE:
	case OP_EXISTS:
	case OP_MGET:
		op_reread(o);
		return;
	case OP_SET:
		if (o->xx || o->get) {
			op_read_then(o);
			return;
		}
		o->cmd = (struct keel_kv_cmd){.op = o->nx ? KEEL_KV_CAS : KEEL_KV_PUT,
					      .key = o->argv[1], .key_len = (uint32_t)o->argl[1],
					      .value = o->argv[2], .value_len = (uint32_t)o->argl[2],
					      .cmp = o->nx ? KEEL_KV_CMP_ABSENT : 0};
		op_write(o);
		return;
	case OP_INCR:
	case OP_APPEND:
		op_read_then(o);
		return;
	case OP_DEL:
		o->step = 1;
		op_step(o);
		return;
	case OP_MSET:
		o->step = 1;
		op_step(o);
		return;
	}
	if (rc < 0)
		op_error(o, rc);
}

/* ---- forwarded writes: the leader's side and the answers ------------------- */

struct fserve {
	struct fserve *next;
	struct resp_shard *rs;
	uint32_t from, group;
	uint64_t id;
};

static void fwd_answer(struct resp_shard *rs, uint32_t to, uint32_t group, uint64_t id, int status,
		       const struct keel_kv_result *res)
{
	uint8_t m[1 + 8 + 4 + 1 + 8 + 8];
	m[0] = FWD_RES;
	keel_put_le64(m + 1, id);
	keel_put_le32(m + 9, (uint32_t)status);
	m[13] = res ? res->status : 0;
	keel_put_le64(m + 14, res ? res->rev : 0);
	keel_put_le64(m + 22, res ? res->mod_rev : 0);
	/* lost: the origin's timeout retries with the same sequence */
	(void)keel_endpoint_send(rs->ep, to, (uint16_t)rs->fwd_type, group, m, sizeof(m));
}

static void fserve_unlink(struct fserve *f)
{
	for (struct fserve **pp = &f->rs->serving; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	}
}

static void fserve_done(void *arg, int status, const struct keel_kv_result *res)
{
	struct fserve *f = arg;
	if (!f->rs) { /* completed by keel_services_stop after our shard stopped */
		free(f);
		return;
	}
	fserve_unlink(f);
	fwd_answer(f->rs, f->from, f->group, f->id, status, res);
	free(f);
}

static void fwd_recv(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	struct resp_shard *rs = arg;
	(void)ep;
	const uint8_t *d = m->data;
	struct keel_resp_fwd f;
	if (keel_resp_fwd_decode(d, m->len, &f) < 0) {
		keel_log_limited(&rs->lim, LOG_BURST, KEEL_LOG_WARN,
				 "resp port: a malformed forward from node %u dropped", m->from.node);
		return;
	}
	if (f.kind == FWD_REQ) {
		struct keel_services *s = keel_services_of(rs->ep);
		struct keel_kv_cmd c;
		if (!s || keel_kv_cmd_decode(f.cmd, f.cmd_len, &c) < 0) {
			fwd_answer(rs, m->from.node, m->group, f.id, KEEL_EBADINPUT, NULL);
			return;
		}
		struct fserve *sv = malloc(sizeof(*sv));
		if (!sv) {
			fwd_answer(rs, m->from.node, m->group, f.id, -ENOMEM, NULL);
			return;
		}
		*sv = (struct fserve){rs->serving, rs, m->from.node, m->group, f.id};
		rs->serving = sv;
		int rc = keel_kv_write(s, m->group, &c, fserve_done, sv);
		if (rc < 0) {
			fserve_unlink(sv);
			free(sv);
			fwd_answer(rs, m->from.node, m->group, f.id, rc, NULL);
		}
		return;
	}
	for (struct rop *o = rs->fwd_pending; o; o = o->fwd_next) {
		if (!o->fwd_id || o->fwd_id != f.id)
			continue;
		fwd_unlink(rs, o);
		keel_clock_cancel(keel_endpoint_clock(rs->ep), &o->timer);
		struct keel_kv_result res = {.status = f.kv_status, .rev = f.rev, .mod_rev = f.mod_rev};
		op_written(o, f.status, f.status < 0 ? NULL : &res);
		return;
	}
	/* an answer after our timeout: the retry gets its own */
}

int keel_resp_shard_start(struct keel_endpoint *ep, uint32_t groups, char *errmsg)
{
	struct resp_shard *rs = calloc(1, sizeof(*rs));
	if (!rs)
		return keel_errmsg_set(errmsg, -ENOMEM, "resp port: out of memory");
	rs->ep = ep;
	rs->sh = keel_endpoint_reactor(ep);
	rs->fwd_type = keel_msg_type_id("fwd");
	rs->self = keel_endpoint_node_id(ep);
	rs->groups = groups;
	rs->nshards = keel_endpoint_nshards(ep);
	uint32_t me = keel_endpoint_shard(ep);
	for (uint32_t g = me; g < groups; g += rs->nshards) {
		int rc = keel_endpoint_join(ep, "fwd", g, fwd_recv, rs);
		if (rc < 0) {
			for (uint32_t h = me; h < g; h += rs->nshards)
				keel_endpoint_leave(ep, "fwd", h);
			free(rs);
			return keel_errmsg_set(errmsg, rc, "resp port: group %u: %s", g,
					       keel_strerror(rc));
		}
	}
	keel_endpoint_set_slot(ep, KEEL_SLOT_RESP, rs);
	return 0;
}

void keel_resp_shard_stop(struct keel_endpoint *ep)
{
	struct resp_shard *rs = keel_endpoint_slot(ep, KEEL_SLOT_RESP);
	if (!rs)
		return;
	for (uint32_t g = keel_endpoint_shard(ep); g < rs->groups; g += rs->nshards)
		keel_endpoint_leave(ep, "fwd", g);
	/* forwarded writes waiting: their connections are gone with shard 0's
	 * port; the loops have ended, nothing completes them any more */
	for (struct rop *o = rs->fwd_pending, *n; o; o = n) {
		n = o->fwd_next;
		keel_clock_cancel(keel_endpoint_clock(ep), &o->timer);
		keel_resp_buf_free(&o->out);
		free(o->old);
		free(o->cmd_enc);
		free(o);
	}
	/* served writes: keel_services_stop completes them later, and must
	 * find their context; they are freed there (the answer's send fails) */
	keel_endpoint_set_slot(ep, KEEL_SLOT_RESP, NULL);
	for (struct fserve *f = rs->serving; f; f = f->next)
		f->rs = NULL;
	free(rs);
}

/* ---- the node-wide commands: DBSIZE, INFO ---------------------------------- */

struct gstat {
	uint32_t group, leader;
	uint64_t epoch, keys;
	bool failed;
};

struct ragg {
	struct rconn *c;
	struct rslot *slot;
	struct keel_resp_port *p;
	bool info;
	unsigned pending;
	struct gstat *g;           /* p->groups entries, each filled by its shard */
	char section[32];
};

struct ragg_part {
	struct ragg *a;
	struct keel_node *node;
};

static void count_cb(void *arg, int status, const struct keel_kv *kv)
{
	struct gstat *g = arg;
	if (status == 0)
		g->keys = keel_kv_count(kv);
}

static void agg_finish(struct ragg *a)
{
	struct rconn *c = a->c;
	struct keel_resp_buf *b = &a->slot->b;
	uint64_t keys = 0;
	for (uint32_t i = 0; i < a->p->groups; i++)
		keys += a->g[i].keys;
	if (!a->info) {
		keel_resp_int(b, (int64_t)keys);
	} else {
		char *t = NULL;
		size_t tl = 0;
		FILE *f = open_memstream(&t, &tl);
		if (f) {
			bool all = !a->section[0] || !strcasecmp(a->section, "all") ||
				   !strcasecmp(a->section, "everything") ||
				   !strcasecmp(a->section, "default");
			if (all || !strcasecmp(a->section, "server"))
				fprintf(f,
					"# Server\r\nredis_version:7.0.0\r\nkeel_version:" KEEL_VERSION
					"\r\nredis_mode:standalone\r\nos:Linux\r\ntcp_port:%s\r\n"
					"uptime_in_seconds:%llu\r\nkeel_node:%u\r\n\r\n",
					strrchr(a->p->cfg.listen, ':') + 1,
					(unsigned long long)((mono_ms() - a->p->started_ms) / 1000),
					a->p->self);
			if (all || !strcasecmp(a->section, "clients"))
				fprintf(f, "# Clients\r\nconnected_clients:%u\r\n\r\n", a->p->nconns);
			if (all || !strcasecmp(a->section, "replication")) {
				unsigned led = 0;
				for (uint32_t i = 0; i < a->p->groups; i++)
					led += a->g[i].leader == a->p->self;
				fprintf(f, "# Replication\r\nrole:%s\r\nkeel_groups:%u\r\n"
					   "keel_groups_led:%u\r\n",
					led ? "master" : "slave", a->p->groups, led);
				for (uint32_t i = 0; i < a->p->groups; i++)
					fprintf(f, "keel_group%u:leader=%u,term=%llu,keys=%llu%s\r\n", i,
						a->g[i].leader, (unsigned long long)a->g[i].epoch,
						(unsigned long long)a->g[i].keys,
						a->g[i].failed ? ",failed=1" : "");
				fprintf(f, "\r\n");
			}
			if (all || !strcasecmp(a->section, "keyspace")) {
				fprintf(f, "# Keyspace\r\n");
				if (keys)
					fprintf(f, "db0:keys=%llu,expires=0,avg_ttl=0\r\n",
						(unsigned long long)keys);
			}
			fclose(f);
		}
		if (t) {
			/* Redis ends INFO without the last blank line */
			while (tl >= 2 && t[tl - 1] == '\n' && t[tl - 2] == '\r' && tl >= 4 &&
			       t[tl - 3] == '\n' && t[tl - 4] == '\r')
				tl -= 2;
			keel_resp_verbatim(b, c->proto, t, tl);
			free(t);
		} else {
			b->oom = true;
		}
	}
	c->inflight--;
	slot_done(c, a->slot);
	free(a->g);
	free(a);
	conn_free_if_done(c);
}

static void agg_back(struct keel_shard *on, void *arg)
{
	(void)on;
	struct ragg_part *pt = arg;
	struct ragg *a = pt->a;
	free(pt);
	if (--a->pending == 0)
		agg_finish(a);
}

static void agg_run(struct keel_shard *on, void *arg)
{
	struct ragg_part *pt = arg;
	struct ragg *a = pt->a;
	struct keel_endpoint *ep = keel_node_endpoint(pt->node, keel_shard_id(on));
	struct keel_services *s = keel_services_of(ep);
	for (uint32_t g = keel_shard_id(on); s && g < a->p->groups; g += a->p->nshards) {
		struct gstat *gs = &a->g[g];
		gs->group = g;
		struct keel_rlog *l = keel_services_log(s, g);
		if (l) {
			struct keel_rlog_status st;
			keel_rlog_status(l, &st);
			gs->leader = st.leader;
			gs->epoch = st.epoch;
			gs->failed = st.failed;
		}
		/* this replica's count (serializable: runs at once) */
		(void)keel_kv_read(s, g, false, count_cb, gs);
	}
	if (keel_shard_post(on, 0, agg_back, pt) < 0)
		free(pt);
}

static void start_agg(struct rconn *c, struct rslot *slot, bool info, const char *section)
{
	struct keel_resp_port *p = c->p;
	struct ragg *a = calloc(1, sizeof(*a));
	struct gstat *g = calloc(p->groups ? p->groups : 1, sizeof(*g));
	if (!a || !g) {
		free(a);
		free(g);
		slot->b.oom = true;
		slot_done(c, slot);
		return;
	}
	*a = (struct ragg){.c = c, .slot = slot, .p = p, .info = info, .g = g,
			   .pending = p->nshards};
	if (section)
		snprintf(a->section, sizeof(a->section), "%s", section);
	c->inflight++;
	unsigned unasked = 0;
	for (unsigned i = 0; i < p->nshards; i++) {
		struct ragg_part *pt = malloc(sizeof(*pt));
		if (pt)
			*pt = (struct ragg_part){a, p->cfg.node};
		if (!pt || keel_shard_post(p->sh, i, agg_run, pt) < 0) {
			free(pt);
			unasked++;
		}
	}
	a->pending -= unasked;
	if (a->pending == 0)
		agg_finish(a);
}

/* ---- commands on shard 0 ----------------------------------------------------- */

static void reply_now(struct rconn *c, struct rslot *s)
{
	slot_done(c, s);
}

static void wrong_args(struct keel_resp_buf *b, const uint8_t *name, size_t n)
{
	char lc[64];
	size_t k = n < sizeof(lc) - 1 ? n : sizeof(lc) - 1;
	for (size_t i = 0; i < k; i++)
		lc[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
	lc[k] = 0;
	keel_resp_errorf(b, "ERR wrong number of arguments for '%s' command", lc);
}

static void unknown_command(struct keel_resp_buf *b, const struct keel_resp_parser *ps)
{
	/* Redis 7.0's words (server.c processCommand), byte for byte */
	char args[512] = "";
	size_t al = 0;
	for (uint32_t i = 1; i < ps->argc && al < 128; i++) {
		int lim = 128 - (int)al;
		int w = snprintf(args + al, sizeof(args) - al, "'%.*s' ",
				 (int)(ps->argl[i] < (size_t)lim ? ps->argl[i] : (size_t)lim),
				 (const char *)ps->argv[i]);
		if (w < 0)
			break;
		al += (size_t)w;
		if (al >= sizeof(args))
			al = sizeof(args) - 1;
	}
	keel_resp_errorf(b, "ERR unknown command '%.*s', with args beginning with: %s",
			 (int)(ps->argl[0] < 128 ? ps->argl[0] : 128), (const char *)ps->argv[0], args);
}

static bool password_ok(const struct keel_resp_port *p, const uint8_t *pw, size_t n)
{
	return n == p->cfg.password_len && sodium_memcmp(pw, p->cfg.password, n) == 0;
}

static void hello_reply(struct rconn *c, struct keel_resp_buf *b)
{
	keel_resp_map(b, c->proto, 7);
	keel_resp_bulk_str(b, "server");
	keel_resp_bulk_str(b, "redis");
	keel_resp_bulk_str(b, "version");
	keel_resp_bulk_str(b, "7.0.0");
	keel_resp_bulk_str(b, "proto");
	keel_resp_int(b, c->proto);
	keel_resp_bulk_str(b, "id");
	keel_resp_int(b, (int64_t)c->id);
	keel_resp_bulk_str(b, "mode");
	keel_resp_bulk_str(b, "standalone");
	keel_resp_bulk_str(b, "role");
	keel_resp_bulk_str(b, "master");
	keel_resp_bulk_str(b, "modules");
	keel_resp_array(b, 0);
}

/* HELLO [protover [AUTH username password] [SETNAME clientname]] */
static void cmd_hello(struct rconn *c, const struct keel_resp_parser *ps, struct keel_resp_buf *b)
{
	int proto = c->proto;
	uint32_t i = 1;
	if (ps->argc >= 2) {
		long long v;
		if (!arg_ll(ps->argv[1], ps->argl[1], &v)) {
			keel_resp_error(b, "ERR Protocol version is not an integer or out of range");
			return;
		}
		if (v < 2 || v > 3) {
			keel_resp_error(b, "NOPROTO unsupported protocol version");
			return;
		}
		proto = (int)v;
		i = 2;
	}
	const uint8_t *name = NULL;
	size_t name_len = 0;
	for (; i < ps->argc; i++) {
		bool more = i + 1 < ps->argc;
		if (arg_is(ps->argv[i], ps->argl[i], "AUTH") && i + 2 < ps->argc) {
			const uint8_t *user = ps->argv[i + 1], *pw = ps->argv[i + 2];
			if (!arg_is(user, ps->argl[i + 1], "default") ||
			    (c->p->cfg.password_len && !password_ok(c->p, pw, ps->argl[i + 2]))) {
				c->p->st.auth_failed++;
				keel_resp_error(b, "WRONGPASS invalid username-password pair or user is "
						   "disabled.");
				return;
			}
			c->authed = true;
			i += 2;
		} else if (arg_is(ps->argv[i], ps->argl[i], "SETNAME") && more) {
			name = ps->argv[i + 1];
			name_len = ps->argl[i + 1];
			i++;
		} else {
			keel_resp_errorf(b, "ERR Syntax error in HELLO option '%.*s'", (int)ps->argl[i],
					 (const char *)ps->argv[i]);
			return;
		}
	}
	if (!c->authed) {
		keel_resp_error(b, "NOAUTH HELLO must be called with the client already "
				   "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> "
				   "option can be used to authenticate the client and select the "
				   "RESP protocol version at the same time");
		return;
	}
	if (name) {
		size_t k = name_len < sizeof(c->name) - 1 ? name_len : sizeof(c->name) - 1;
		memcpy(c->name, name, k);
		c->name[k] = 0;
	}
	c->proto = proto;
	hello_reply(c, b);
}

static void cmd_client(struct rconn *c, const struct keel_resp_parser *ps, struct keel_resp_buf *b)
{
	if (ps->argc < 2) {
		wrong_args(b, ps->argv[0], ps->argl[0]);
		return;
	}
	const uint8_t *sub = ps->argv[1];
	size_t sl = ps->argl[1];
	if (arg_is(sub, sl, "ID") && ps->argc == 2) {
		keel_resp_int(b, (int64_t)c->id);
	} else if (arg_is(sub, sl, "GETNAME") && ps->argc == 2) {
		if (c->name[0])
			keel_resp_bulk_str(b, c->name);
		else
			keel_resp_null(b, c->proto);
	} else if (arg_is(sub, sl, "SETNAME") && ps->argc == 3) {
		for (size_t i = 0; i < ps->argl[2]; i++) {
			if (ps->argv[2][i] < '!' || ps->argv[2][i] > '~') {
				keel_resp_error(b, "ERR Client names cannot contain spaces, newlines or "
						   "special characters.");
				return;
			}
		}
		size_t k = ps->argl[2] < sizeof(c->name) - 1 ? ps->argl[2] : sizeof(c->name) - 1;
		memcpy(c->name, ps->argv[2], k);
		c->name[k] = 0;
		keel_resp_simple(b, "OK");
	} else if (arg_is(sub, sl, "SETINFO") && ps->argc == 4) {
		keel_resp_simple(b, "OK"); /* library name and version: not kept */
	} else {
		keel_resp_errorf(b, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.", (int)sl,
				 (const char *)sub);
	}
}

/* A key command: checks its arity and its keys' group, then posts it. */
static void key_command(struct rconn *c, const struct keel_resp_parser *ps, struct rslot *slot,
			int kind)
{
	struct keel_resp_port *p = c->p;
	uint32_t argc = ps->argc;
	uint32_t first = 1, stride = 1;
	bool nx = false, xx = false, get = false;
	int64_t delta = 0;
	uint32_t use = argc; /* the arguments the op keeps */
	switch (kind) {
	case OP_GET:
	case OP_STRLEN:
	case OP_TYPE:
		if (argc != 2)
			goto arity;
		break;
	case OP_APPEND:
		if (argc != 3)
			goto arity;
		break;
	case OP_INCR: {
		bool by = arg_is(ps->argv[0], ps->argl[0], "INCRBY") ||
			  arg_is(ps->argv[0], ps->argl[0], "DECRBY");
		bool down = arg_is(ps->argv[0], ps->argl[0], "DECR") ||
			    arg_is(ps->argv[0], ps->argl[0], "DECRBY");
		if (argc != (by ? 3u : 2u))
			goto arity;
		long long d = 1;
		if (by && !keel_resp_ll(ps->argv[2], ps->argl[2], &d)) {
			keel_resp_error(&slot->b, "ERR value is not an integer or out of range");
			reply_now(c, slot);
			return;
		}
		if (down && d == INT64_MIN) {
			keel_resp_error(&slot->b, "ERR decrement would overflow");
			reply_now(c, slot);
			return;
		}
		delta = down ? -d : d;
		use = 2;
		break;
	}
	case OP_DEL:
	case OP_EXISTS:
	case OP_MGET:
		if (argc < 2)
			goto arity;
		break;
	case OP_MSET:
		if (argc < 3 || (argc - 1) % 2)
			goto arity;
		stride = 2;
		break;
	case OP_SET:
		if (argc < 3)
			goto arity;
		if (arg_is(ps->argv[0], ps->argl[0], "GETSET")) {
			if (argc != 3)
				goto arity;
			get = true;
			break;
		}
		for (uint32_t i = 3; i < argc; i++) {
			const uint8_t *a = ps->argv[i];
			size_t n = ps->argl[i];
			if (arg_is(a, n, "NX") && !xx) {
				nx = true;
			} else if (arg_is(a, n, "XX") && !nx) {
				xx = true;
			} else if (arg_is(a, n, "GET")) {
				get = true;
			} else if ((arg_is(a, n, "EX") || arg_is(a, n, "PX") || arg_is(a, n, "EXAT") ||
				    arg_is(a, n, "PXAT")) && i + 1 < argc) {
				long long v;
				if (!arg_ll(ps->argv[i + 1], ps->argl[i + 1], &v)) {
					keel_resp_error(&slot->b,
							"ERR value is not an integer or out of range");
					reply_now(c, slot);
					return;
				}
				if (v <= 0) {
					keel_resp_error(&slot->b,
							"ERR invalid expire time in 'set' command");
					reply_now(c, slot);
					return;
				}
				/* the state machine has no per-key TTL yet: refusing is
				 * honest, a SET that never expires would not be */
				keel_resp_error(&slot->b, "ERR keel: SET with an expiry (EX, PX, EXAT, "
							  "PXAT) needs per-key TTL, not built yet");
				reply_now(c, slot);
				return;
			} else if (arg_is(a, n, "KEEPTTL")) {
				/* no key has a TTL: keeping it changes nothing */
			} else {
				keel_resp_error(&slot->b, "ERR syntax error");
				reply_now(c, slot);
				return;
			}
		}
		use = 3;
		break;
	}
	/* the keys: argv[1] alone, or every (MSET: every other) argument */
	uint32_t kend = kind == OP_SET || kind == OP_GET || kind == OP_STRLEN || kind == OP_TYPE ||
				kind == OP_INCR ||
				kind == OP_APPEND
			? 2
			: argc;
	uint32_t group = keel_resp_group_of(ps->argv[first], ps->argl[first], p->groups);
	for (uint32_t i = first + stride; i < kend; i += stride) {
		if (keel_resp_group_of(ps->argv[i], ps->argl[i], p->groups) != group) {
			keel_resp_error(&slot->b, "CROSSSLOT Keys in request don't hash to the same slot");
			reply_now(c, slot);
			return;
		}
	}
	for (uint32_t i = first; i < kend; i += stride) {
		if (ps->argl[i] == 0 || ps->argl[i] > KEEL_KV_MAX_KEY) {
			keel_resp_errorf(&slot->b, "ERR keel: a key is 1 to %u bytes", KEEL_KV_MAX_KEY);
			reply_now(c, slot);
			return;
		}
	}
	if (kind == OP_SET || kind == OP_MSET || kind == OP_APPEND) {
		for (uint32_t i = 2; i < use; i += stride) {
			if (ps->argl[i] > KEEL_KV_MAX_VALUE) {
				keel_resp_errorf(&slot->b,
						 "ERR keel: value of %zu bytes is over the limit of %u",
						 ps->argl[i], KEEL_KV_MAX_VALUE);
				reply_now(c, slot);
				return;
			}
		}
	}
	size_t bytes = 0;
	for (uint32_t i = 0; i < use; i++)
		bytes += ps->argl[i];
	size_t head = sizeof(struct rop) + use * (sizeof(uint8_t *) + sizeof(size_t));
	struct rop *o = calloc(1, head + bytes);
	if (!o) {
		conn_close(c, "closed: out of memory");
		return;
	}
	o->argv = (const uint8_t **)(o + 1);
	o->argl = (size_t *)(o->argv + use);
	uint8_t *q = (uint8_t *)(o->argl + use);
	for (uint32_t i = 0; i < use; i++) {
		memcpy(q, ps->argv[i], ps->argl[i]);
		o->argv[i] = q;
		o->argl[i] = ps->argl[i];
		q += ps->argl[i];
	}
	o->argc = use;
	o->c = c;
	o->slot = slot;
	o->p = p;
	o->node = p->cfg.node;
	o->kind = kind;
	o->proto = c->proto;
	o->group = group;
	o->nx = nx;
	o->xx = xx;
	o->get = get;
	o->client = c->kv_client;
	o->delta = delta;
	o->local = c->local_reads;
	o->is_write = kind == OP_SET || kind == OP_DEL || kind == OP_MSET || kind == OP_INCR ||
		      kind == OP_APPEND;
	if (o->is_write)
		c->writes++;
	else
		c->reads++;
	/* each write takes its own sequence: reserve the most it may use
	 * (one per key, one per CAS try) so pipelined commands never share */
	o->seq = c->seq;
	c->seq += (kind == OP_SET || kind == OP_INCR || kind == OP_APPEND ? CAS_TRIES + 1 : argc) + 1;
	c->inflight++;
	p->st.commands++;
	if (keel_shard_post(p->sh, group % p->nshards, op_run, o) < 0) {
		c->inflight--;
		if (o->is_write)
			c->writes--;
		else
			c->reads--;
		free(o);
		conn_close(c, "closed: the node is stopping");
	}
	return;
arity:
	wrong_args(&slot->b, ps->argv[0], ps->argl[0]);
	reply_now(c, slot);
}

static void command(struct rconn *c, const struct keel_resp_parser *ps)
{
	struct keel_resp_port *p = c->p;
	struct rslot *slot = slot_new(c);
	if (!slot) {
		conn_close(c, "closed: out of memory");
		return;
	}
	struct keel_resp_buf *b = &slot->b;
	const uint8_t *a0 = ps->argv[0];
	size_t n0 = ps->argl[0];
	uint32_t argc = ps->argc;
#define IS(s) arg_is(a0, n0, s)
	if (IS("AUTH")) {
		if (argc < 2 || argc > 3) {
			wrong_args(b, a0, n0);
		} else if (!p->cfg.password_len) {
			keel_resp_error(b, "ERR AUTH <password> called without any password configured "
					   "for the default user. Are you sure your configuration is "
					   "correct?");
		} else if ((argc == 3 && !arg_is(ps->argv[1], ps->argl[1], "default")) ||
			   !password_ok(p, ps->argv[argc - 1], ps->argl[argc - 1])) {
			p->st.auth_failed++;
			keel_resp_error(b, "WRONGPASS invalid username-password pair or user is "
					   "disabled.");
		} else {
			c->authed = true;
			keel_resp_simple(b, "OK");
		}
	} else if (IS("HELLO")) {
		cmd_hello(c, ps, b);
	} else if (IS("QUIT")) {
		keel_resp_simple(b, "OK");
		c->quitting = true;
	} else if (!c->authed) {
		keel_resp_error(b, "NOAUTH Authentication required.");
	} else if (IS("PING")) {
		if (argc > 2)
			wrong_args(b, a0, n0);
		else if (argc == 2)
			keel_resp_bulk(b, ps->argv[1], ps->argl[1]);
		else
			keel_resp_simple(b, "PONG");
	} else if (IS("ECHO")) {
		if (argc != 2)
			wrong_args(b, a0, n0);
		else
			keel_resp_bulk(b, ps->argv[1], ps->argl[1]);
	} else if (IS("SELECT")) {
		long long v;
		if (argc != 2)
			wrong_args(b, a0, n0);
		else if (!arg_ll(ps->argv[1], ps->argl[1], &v))
			keel_resp_error(b, "ERR value is not an integer or out of range");
		else if (v != 0)
			keel_resp_error(b, "ERR DB index is out of range");
		else
			keel_resp_simple(b, "OK");
	} else if (IS("READONLY") || IS("READWRITE")) {
		/* Redis Cluster's words for reads from a replica: here, reads of
		 * this node's replica without a read barrier (serializable, may
		 * be stale); READWRITE goes back to linearizable reads */
		if (argc != 1) {
			wrong_args(b, a0, n0);
		} else {
			c->local_reads = IS("READONLY");
			keel_resp_simple(b, "OK");
		}
	} else if (IS("CLIENT")) {
		cmd_client(c, ps, b);
	} else if (IS("COMMAND")) {
		/* no command table: clients (redis-cli's hints, redis-py)
		 * take an empty one as "nothing known" and go on */
		if (argc >= 2 && arg_is(ps->argv[1], ps->argl[1], "COUNT"))
			keel_resp_int(b, 0);
		else if (argc >= 2 && arg_is(ps->argv[1], ps->argl[1], "DOCS"))
			keel_resp_map(b, c->proto, 0);
		else
			keel_resp_array(b, 0);
	} else if (IS("DBSIZE")) {
		if (argc != 1) {
			wrong_args(b, a0, n0);
		} else {
			start_agg(c, slot, false, NULL);
			return;
		}
	} else if (IS("INFO")) {
		/* parse() made argv[1] a C string for INFO */
		start_agg(c, slot, true, argc >= 2 ? (const char *)ps->argv[1] : NULL);
		return;
	} else if (IS("GET")) {
		key_command(c, ps, slot, OP_GET);
		return;
	} else if (IS("SET") || IS("GETSET")) {
		key_command(c, ps, slot, OP_SET);
		return;
	} else if (IS("DEL") || IS("UNLINK")) {
		key_command(c, ps, slot, OP_DEL);
		return;
	} else if (IS("EXISTS")) {
		key_command(c, ps, slot, OP_EXISTS);
		return;
	} else if (IS("MGET")) {
		key_command(c, ps, slot, OP_MGET);
		return;
	} else if (IS("MSET")) {
		key_command(c, ps, slot, OP_MSET);
		return;
	} else if (IS("STRLEN")) {
		key_command(c, ps, slot, OP_STRLEN);
		return;
	} else if (IS("INCR") || IS("DECR") || IS("INCRBY") || IS("DECRBY")) {
		key_command(c, ps, slot, OP_INCR);
		return;
	} else if (IS("TYPE")) {
		key_command(c, ps, slot, OP_TYPE);
		return;
	} else if (IS("FLUSHDB") || IS("FLUSHALL")) {
		/* deleting every key of every group is not one replicated
		 * command here, and one typo away on a shared cluster */
		keel_resp_errorf(b, "ERR keel: %s is refused: not enabled on this cluster",
				 IS("FLUSHDB") ? "FLUSHDB" : "FLUSHALL");
	} else if (IS("APPEND")) {
		key_command(c, ps, slot, OP_APPEND);
		return;
	} else {
		unknown_command(b, ps);
	}
#undef IS
	reply_now(c, slot);
}

/* ---- receiving ------------------------------------------------------------------ */

/* Per-connection order (what Redis gives a pipeline): a read must see the
 * connection's earlier writes and not its later ones, and a write must
 * not slip under an earlier read. Commands of one kind run concurrently
 * (a pipeline of SETs is one log batch); a key command of the other kind
 * waits until those in flight are answered. */
static bool must_wait(const struct rconn *c, const struct keel_resp_parser *ps)
{
	const uint8_t *a = ps->argv[0];
	size_t n = ps->argl[0];
	bool w = arg_is(a, n, "SET") || arg_is(a, n, "GETSET") || arg_is(a, n, "DEL") ||
		 arg_is(a, n, "UNLINK") || arg_is(a, n, "MSET") || arg_is(a, n, "INCR") ||
		 arg_is(a, n, "DECR") || arg_is(a, n, "INCRBY") || arg_is(a, n, "DECRBY") ||
		 arg_is(a, n, "APPEND");
	bool r = arg_is(a, n, "GET") || arg_is(a, n, "MGET") || arg_is(a, n, "EXISTS") ||
		 arg_is(a, n, "STRLEN") || arg_is(a, n, "DBSIZE") || arg_is(a, n, "INFO") ||
		 arg_is(a, n, "TYPE");
	return (w && c->reads) || (r && c->writes);
}

static void parse(struct rconn *c)
{
	size_t pos = 0;
	while (!c->closing && !c->quitting && c->nslots < MAX_SLOTS && pos < c->rlen) {
		int rc = keel_resp_parse(&c->parser, c->rbuf + pos, c->rlen - pos);
		if (rc == 0)
			break;
		if (rc < 0) {
			c->p->st.bad_input++;
			struct rslot *s = slot_new(c);
			if (s) {
				keel_resp_errorf(&s->b, "ERR %s", rc == KEEL_EPROTO ? c->parser.error
										   : "out of memory");
				c->quitting = true; /* the error goes out, then the close */
				char why[160];
				snprintf(why, sizeof(why), "closing: %s", c->parser.error);
				keel_log_limited(&c->p->lim, LOG_BURST, KEEL_LOG_WARN, "resp port: %s: %s",
						 c->peer, why);
				slot_done(c, s);
			} else {
				conn_close(c, "closed: a protocol error (out of memory)");
			}
			break;
		}
		if (c->parser.argc && must_wait(c, &c->parser))
			break; /* parsed again once the other kind is answered */
		if (c->parser.argc) {
			/* INFO's section is read as a C string: terminate it in a
			 * copy, since the argument is not */
			struct keel_resp_parser *ps = &c->parser;
			char sec[32];
			if (ps->argc >= 2 && arg_is(ps->argv[0], ps->argl[0], "INFO")) {
				size_t k = ps->argl[1] < sizeof(sec) - 1 ? ps->argl[1] : sizeof(sec) - 1;
				memcpy(sec, ps->argv[1], k);
				sec[k] = 0;
				ps->argv[1] = (const uint8_t *)sec;
			}
			command(c, ps);
		}
		pos += (size_t)rc;
	}
	if (pos) {
		memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
		c->rlen -= pos;
	}
	if (!c->closing && c->rlen > MAX_RBUF) {
		c->p->st.slow_closed++;
		conn_close(c, "closed: over 8 MiB of commands sent without reading the answers");
	}
}

static void recv_complete(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	struct rconn *c = (struct rconn *)((char *)op - offsetof(struct rconn, recv_op));
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
	if (c->quitting) {
		/* after QUIT or a protocol error: the rest is not read */
	} else {
		if (c->rlen + (size_t)res > c->rcap) {
			size_t nc = c->rcap ? c->rcap : 16384;
			while (nc < c->rlen + (size_t)res)
				nc *= 2;
			uint8_t *b = nc <= 2 * (size_t)MAX_RBUF ? realloc(c->rbuf, nc) : NULL;
			if (!b) {
				conn_close(c, "closed: out of memory for its input");
				return;
			}
			c->rbuf = b;
			c->rcap = nc;
		}
		memcpy(c->rbuf + c->rlen, op->data, (size_t)res);
		c->rlen += (size_t)res;
		/* only when a whole command may be there: a big bulk string
		 * arriving in pieces is not parsed again for every piece */
		if (c->rlen >= c->parser.need) {
			c->inflight++;
			parse(c);
			c->inflight--;
		} else if (c->rlen > MAX_RBUF) {
			conn_close(c, "closed: over 8 MiB of commands sent without reading the answers");
		}
	}
	if (c->closing) {
		conn_free_if_done(c);
		return;
	}
	if (!c->recv_armed) {
		c->recv_armed = true;
		keel_io_recv_multi(c->p->sh, &c->recv_op, c->fd);
	}
}

static void accept_complete(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	struct keel_resp_port *p =
		(struct keel_resp_port *)((char *)op - offsetof(struct keel_resp_port, accept_op));
	if (!(flags & KEEL_IO_MORE))
		p->accept_armed = false;
	if (res >= 0) {
		int fd = res;
		struct rconn *c = NULL;
		if (p->stopping || p->nconns >= p->cfg.max_conns) {
			if (!p->stopping)
				keel_log_limited(&p->lim, LOG_BURST, KEEL_LOG_WARN,
						 "resp port: %u connections open: a new one refused",
						 p->nconns);
			p->st.refused++;
			close(fd);
		} else if (!(c = calloc(1, sizeof(*c)))) {
			close(fd);
		} else {
			c->p = p;
			c->fd = fd;
			c->proto = 2;
			c->authed = !p->cfg.password_len;
			c->id = ++p->next_id;
			c->kv_client = p->client_base + c->id;
			c->seq = 1;
			keel_resp_parser_init(&c->parser, NULL);
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			char h[48] = "?", s[8] = "?";
			if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
				getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), s, sizeof(s),
					    NI_NUMERICHOST | NI_NUMERICSERV);
			snprintf(c->peer, sizeof(c->peer), "%s:%s", h, s);
			c->recv_op.complete = recv_complete;
			c->send_op.complete = send_complete;
			c->next = p->conns;
			if (p->conns)
				p->conns->prev = c;
			p->conns = c;
			p->nconns++;
			p->st.accepted++;
			c->recv_armed = true;
			keel_io_recv_multi(p->sh, &c->recv_op, fd);
		}
	} else if (res != -ECANCELED && !p->stopping) {
		keel_log_limited(&p->lim, LOG_BURST, KEEL_LOG_WARN, "resp port: accept: %s",
				 keel_strerror(res));
	}
	if (!p->accept_armed && !p->stopping) {
		p->accept_armed = true;
		keel_io_accept_multi(p->sh, &p->accept_op, p->lfd);
	}
}

/* ---- start and stop ------------------------------------------------------------ */

int keel_resp_port_start(const struct keel_resp_port_config *cfg, struct keel_endpoint *ep,
			 struct keel_resp_port **out, char *errmsg)
{
	*out = NULL;
	struct keel_shard *sh = keel_endpoint_reactor(ep);
	if (!cfg->node || !cfg->listen || !sh || keel_endpoint_shard(ep) != 0)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "resp port: needs a node, an address and shard 0's endpoint");
	int fd;
	int rc = keel_services_listen("resp port", cfg->listen, 4096, &fd, errmsg);
	if (rc < 0)
		return rc;
	struct keel_resp_port *p = calloc(1, sizeof(*p));
	if (!p) {
		close(fd);
		return keel_errmsg_set(errmsg, -ENOMEM, "resp port: out of memory");
	}
	p->cfg = *cfg;
	if (!p->cfg.max_conns)
		p->cfg.max_conns = 1024;
	p->sh = sh;
	p->nshards = keel_endpoint_nshards(ep);
	p->self = keel_endpoint_node_id(ep);
	p->groups = cfg->groups;
	p->lfd = fd;
	p->started_ms = mono_ms();
	/* KV client ids of this node's RESP connections: unique across nodes
	 * and restarts (node id, a random part), never 0 */
	uint64_t rnd;
	randombytes_buf(&rnd, sizeof(rnd));
	p->client_base = ((uint64_t)p->self << 48) ^ ((rnd & 0xffffffffull) << 16) ^ (1ull << 63);
	p->accept_op.complete = accept_complete;
	p->accept_armed = true;
	keel_io_accept_multi(sh, &p->accept_op, fd);
	keel_info("resp port: listening on %s (%u groups, %s)", cfg->listen, p->groups,
		  cfg->password_len ? "password required" : "no password");
	*out = p;
	return 0;
}

void keel_resp_port_stop(struct keel_resp_port *p)
{
	if (!p)
		return;
	p->stopping = true;
	keel_io_cancel_fd(p->sh, p->lfd);
	for (struct rconn *c = p->conns, *n; c; c = n) {
		n = c->next;
		conn_close(c, NULL);
	}
	for (struct rconn *c = p->conns, *n; c; c = n) {
		n = c->next;
		conn_release(c);
	}
	close(p->lfd);
	free(p);
}

void keel_resp_port_get_stats(const struct keel_resp_port *p, struct keel_resp_port_stats *st)
{
	*st = p->st;
}
