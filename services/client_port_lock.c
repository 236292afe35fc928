/*
 * services/client_port_lock.c — the lock service on the client port: the
 * KEEL_PROTO_LOCK_* requests (keel/proto_lock.h checks them and makes them
 * commands) run on their group's shard, as the KV requests do
 * (client_port.c), and the lock events of every shard's groups pushed to
 * the connections their sessions' requests came on.
 *
 * Pushes: a session's "home" on this node is every connection that sent
 * a request for it (a client reconnecting adds one; a connection going
 * away removes its; the session's end removes all of them). Lock events come from each shard's services (every
 * replica applies the same commands, so a follower's event is as true as
 * the leader's); a GRANTED, WAIT_TIMEOUT or EXPIRED event is copied and
 * posted to shard 0, which pushes a LOCK_EVENT to the session's homes. A
 * client may hear one event from several nodes: it matches them by
 * (group, sequence), so a repeat is harmless; a lost one (a connection
 * that broke) is made up for by the client's next request, whose answer
 * says what the state machine holds (ALREADY with the token, NO_SESSION).
 *
 * Homes are a flat array searched linearly: a node has at most max_conns
 * connections with a few sessions each, and a search costs less than the
 * post that brought the event.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keel/node.h"
#include "keel/proto_lock.h"
#include "keel/runtime.h"
#include "keel/services.h"

#include "client_port_int.h"

struct home {
	uint64_t session;
	struct cconn *c;
};

struct shard_hook {
	struct cport_lock *L;
	unsigned shard;
};

struct cport_lock {
	struct keel_client_port *p;
	struct cport_view v;
	struct home *homes;
	size_t nhomes, caphomes;
	struct shard_hook *hooks; /* [nshards] */
};

/* ---- homes ------------------------------------------------------------- */

static void home_add(struct cport_lock *L, uint64_t session, struct cconn *c)
{
	for (size_t i = 0; i < L->nhomes; i++)
		if (L->homes[i].session == session && L->homes[i].c == c)
			return;
	if (L->nhomes == L->caphomes) {
		size_t nc = L->caphomes ? L->caphomes * 2 : 64;
		struct home *h = realloc(L->homes, nc * sizeof(*h));
		if (!h)
			return; /* no pushes for it: its next request tells it */
		L->homes = h;
		L->caphomes = nc;
	}
	L->homes[L->nhomes++] = (struct home){session, c};
}

void cport_lock_conn_gone(struct keel_client_port *p, struct cconn *c)
{
	struct cport_lock *L = *cport_lock_slot(p);
	if (!L)
		return;
	for (size_t i = 0; i < L->nhomes;) {
		if (L->homes[i].c == c)
			L->homes[i] = L->homes[--L->nhomes];
		else
			i++;
	}
}

/* ---- events: any shard -> shard 0 -> the session's homes ------------------ */

struct pushed {
	struct cport_lock *L;
	uint32_t group;
	struct keel_lock_event ev;
	uint8_t name[];
};

static void push_home(struct keel_shard *on, void *arg)
{
	(void)on;
	struct pushed *x = arg;
	struct cport_lock *L = x->L;
	struct keel_proto_msg m;
	keel_proto_lock_event(&m, x->group, &x->ev);
	for (size_t i = 0; i < L->nhomes; i++) {
		if (L->homes[i].session != x->ev.session || cport_closing(L->homes[i].c))
			continue;
		struct outbuf *b = cport_encode(&m);
		if (b)
			cport_queue(L->homes[i].c, b);
	}
	/* an ended session (expired or closed) never comes back: a client
	 * opens a new id, so its homes here can go */
	if (x->ev.kind == KEEL_LOCK_EV_EXPIRED) {
		for (size_t i = 0; i < L->nhomes;) {
			if (L->homes[i].session == x->ev.session)
				L->homes[i] = L->homes[--L->nhomes];
			else
				i++;
		}
	}
	free(x);
}

static void on_lock_event(void *arg, uint32_t group, const struct keel_lock_event *ev)
{
	struct shard_hook *h = arg;
	if (ev->kind != KEEL_LOCK_EV_GRANTED && ev->kind != KEEL_LOCK_EV_WAIT_TIMEOUT &&
	    ev->kind != KEEL_LOCK_EV_EXPIRED)
		return; /* RELEASED: nobody watches yet */
	uint32_t nl = ev->name ? ev->name_len : 0;
	struct pushed *x = malloc(sizeof(*x) + nl);
	if (!x)
		return; /* the client's next request tells it */
	x->L = h->L;
	x->group = group;
	x->ev = *ev;
	if (nl)
		memcpy(x->name, ev->name, nl);
	x->ev.name = nl ? x->name : NULL;
	struct keel_shard *from = keel_endpoint_reactor(keel_node_endpoint(h->L->v.node, h->shard));
	if (!from || keel_shard_post(from, 0, push_home, x) < 0)
		free(x);
}

int cport_lock_start(struct keel_client_port *p)
{
	struct cport_lock *L = calloc(1, sizeof(*L));
	if (!L)
		return -ENOMEM;
	L->p = p;
	L->v = cport_view(p);
	L->hooks = calloc(L->v.nshards ? L->v.nshards : 1, sizeof(*L->hooks));
	if (!L->hooks) {
		free(L);
		return -ENOMEM;
	}
	/* the port starts once every shard's services are (before any loop
	 * runs), so the listeners are in place before the first event */
	for (unsigned i = 0; i < L->v.nshards; i++) {
		L->hooks[i] = (struct shard_hook){L, i};
		struct keel_services *s = keel_services_of(keel_node_endpoint(L->v.node, i));
		if (s)
			keel_services_lock_listener(s, on_lock_event, &L->hooks[i]);
	}
	*cport_lock_slot(p) = L;
	return 0;
}

void cport_lock_stop(struct keel_client_port *p)
{
	struct cport_lock *L = *cport_lock_slot(p);
	if (!L)
		return;
	/* the loops have ended: no listener runs while they are removed */
	for (unsigned i = 0; i < L->v.nshards; i++) {
		struct keel_services *s = keel_services_of(keel_node_endpoint(L->v.node, i));
		if (s)
			keel_services_lock_listener(s, NULL, NULL);
	}
	*cport_lock_slot(p) = NULL;
	free(L->homes);
	free(L->hooks);
	free(L);
}

/* ---- requests on the group's shard --------------------------------------- */

struct lreq {
	struct cconn *c;
	struct cport_lock *L;
	struct keel_shard *on;
	uint64_t id;
	uint8_t type;
	int status;              /* the answer's, for the metrics */
	uint32_t group;
	bool serializable;
	struct keel_lock_cmd cmd;
	struct outbuf *out;
	uint8_t bytes[]; /* name, value */
};

static void lreq_home(struct keel_shard *on, void *arg)
{
	(void)on;
	struct lreq *r = arg;
	cport_count_answer(cport_of(r->c), r->type, r->status);
	if (r->out)
		cport_queue(r->c, r->out);
	cport_unhold(r->c);
	free(r);
}

static void lreq_reply(struct lreq *r, struct keel_proto_msg *m)
{
	m->id = r->id;
	r->status = m->status;
	r->out = cport_encode(m);
	if (keel_shard_post(r->on, 0, lreq_home, r) < 0) {
		/* stopping: the port frees its connections itself */
		cport_outbuf_free(r->out);
		free(r);
	}
}

static struct keel_services *services_here(struct lreq *r)
{
	return keel_services_of(keel_node_endpoint(r->L->v.node, keel_shard_id(r->on)));
}

static void lreq_error(struct lreq *r, int status)
{
	struct keel_proto_msg m;
	keel_proto_lock_result(&m, r->id, status, NULL);
	if (status == KEEL_ENOTLEADER) {
		struct keel_services *s = services_here(r);
		struct keel_rlog *l = s ? keel_services_log(s, r->group) : NULL;
		struct keel_rlog_status st = {0};
		if (l)
			keel_rlog_status(l, &st);
		m.leader = st.leader;
		keel_proto_set(&m, KEEL_PT_LEADER);
	}
	lreq_reply(r, &m);
}

static void lreq_done(void *arg, int status, const struct keel_lock_result *res)
{
	struct lreq *r = arg;
	if (status < 0) {
		lreq_error(r, status);
		return;
	}
	struct keel_proto_msg m;
	keel_proto_lock_result(&m, r->id, 0, res);
	lreq_reply(r, &m);
}

/* Most holders and waiters in one INSPECT answer (a frame's bound). */
#define INSPECT_MAX 1000

struct inspect_acc {
	struct keel_proto_item items[INSPECT_MAX];
	uint32_t n;
	size_t bytes;
	bool more;
};

static bool inspect_room(struct inspect_acc *a, size_t vlen)
{
	if (a->n == INSPECT_MAX || a->bytes + 64 + vlen > KEEL_PROTO_MAX_FRAME - 4096) {
		a->more = true;
		return false;
	}
	a->bytes += 64 + vlen;
	return true;
}

static void inspect_holder(void *arg, const struct keel_lock_holder *h)
{
	struct inspect_acc *a = arg;
	if (!inspect_room(a, h->value_len))
		return;
	a->items[a->n++] = (struct keel_proto_item){
		.key = {(const uint8_t *)"h", 1}, .value = {h->value, h->value_len},
		.create_rev = h->session, .mod_rev = h->token};
}

static void inspect_waiter(void *arg, const struct keel_lock_waiter *w)
{
	struct inspect_acc *a = arg;
	if (!inspect_room(a, 0))
		return;
	a->items[a->n++] = (struct keel_proto_item){
		.key = {(const uint8_t *)"w", 1}, .create_rev = w->session,
		.mod_rev = w->deadline_ms, .version = w->mode};
}

static void inspect_done(void *arg, int status, const struct keel_lock_sm *sm)
{
	struct lreq *r = arg;
	if (status < 0) {
		lreq_error(r, status);
		return;
	}
	struct inspect_acc *a = calloc(1, sizeof(*a));
	if (!a) {
		lreq_error(r, -ENOMEM);
		return;
	}
	struct keel_lock_info info = {0};
	int rc = keel_lock_sm_inspect(sm, r->cmd.name, r->cmd.name_len, &info, inspect_holder,
				      inspect_waiter, a);
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .status = 0,
				   .lock_status = rc == 0 ? KEEL_LOCK_OK : KEEL_LOCK_NOT_HOLDER,
				   .mode = info.mode, .delay_ms = 0, .rev = keel_lock_sm_now(sm),
				   .index = keel_lock_sm_index(sm),
				   .flags = a->more ? KEEL_PF_MORE : 0};
	/* holders' mode is the lock's; set it on each holder item */
	for (uint32_t i = 0; i < a->n; i++)
		if (a->items[i].key.p[0] == 'h')
			a->items[i].version = info.mode;
	if (info.delay_until_ms > m.rev)
		m.delay_ms = (uint32_t)(info.delay_until_ms - m.rev);
	keel_proto_set(&m, KEEL_PT_STATUS);
	keel_proto_set(&m, KEEL_PT_LOCK_STATUS);
	keel_proto_set(&m, KEEL_PT_MODE);
	keel_proto_set(&m, KEEL_PT_DELAY_MS);
	keel_proto_set(&m, KEEL_PT_REV);
	keel_proto_set(&m, KEEL_PT_INDEX);
	keel_proto_set(&m, KEEL_PT_FLAGS);
	m.n_items = a->n;
	m.item = a->items;
	lreq_reply(r, &m);
	free(a);
}

static void lreq_run(struct keel_shard *on, void *arg)
{
	struct lreq *r = arg;
	r->on = on;
	struct keel_services *s = services_here(r);
	if (!s) {
		lreq_error(r, KEEL_EUNAVAIL);
		return;
	}
	int rc;
	if (r->type == KEEL_PROTO_LOCK_INSPECT)
		rc = keel_lock_read(s, r->group, !r->serializable, inspect_done, r);
	else if (r->type == KEEL_PROTO_LOCK_KEEPALIVE)
		rc = keel_lock_keepalive(s, r->group, r->cmd.session, lreq_done, r);
	else
		rc = keel_lock_call(s, r->group, &r->cmd, lreq_done, r);
	if (rc < 0)
		lreq_error(r, rc);
}

void cport_lock_handle(struct cconn *c, const struct keel_proto_msg *m)
{
	struct keel_client_port *p = cport_of(c);
	struct cport_lock *L = *cport_lock_slot(p);
	struct keel_lock_cmd cmd;
	uint32_t group;
	const char *why = NULL;
	if (!L || keel_proto_lock_request(m, L->v.groups, &cmd, &group, &why) < 0) {
		if (!why)
			why = "the lock service is not running on this port";
		struct keel_proto_msg a = {.type = KEEL_PROTO_RESULT, .id = m->id,
					   .status = KEEL_EBADINPUT,
					   .message = {(const uint8_t *)why, (uint32_t)strlen(why)}};
		keel_proto_set(&a, KEEL_PT_STATUS);
		keel_proto_set(&a, KEEL_PT_MESSAGE);
		cport_answer(c, &a);
		return;
	}
	size_t nb = cmd.name_len + cmd.value_len;
	struct lreq *r = malloc(sizeof(*r) + nb);
	if (!r) {
		cport_refuse(c, m->id, -ENOMEM, "out of memory");
		return;
	}
	*r = (struct lreq){.c = c, .L = L, .id = m->id, .type = m->type, .group = group,
			   .serializable = (m->flags & KEEL_PF_SERIALIZABLE) != 0, .cmd = cmd};
	if (cmd.name_len) {
		memcpy(r->bytes, cmd.name, cmd.name_len);
		r->cmd.name = r->bytes;
	}
	if (cmd.value_len) {
		memcpy(r->bytes + cmd.name_len, cmd.value, cmd.value_len);
		r->cmd.value = r->bytes + cmd.name_len;
	}
	if (m->type != KEEL_PROTO_LOCK_INSPECT)
		home_add(L, cmd.session, c);
	cport_hold(c);
	cport_count_request(p);
	if (keel_shard_post(L->v.sh, group % L->v.nshards, lreq_run, r) < 0) {
		free(r);
		cport_unhold(c);
		cport_refuse(c, m->id, KEEL_ESTOPPED, "the node is stopping");
	}
}
