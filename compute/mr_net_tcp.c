/*
 * compute/mr_net_tcp.c — struct mr_net on the transport API
 * (include/keel/transport.h): one endpoint on the node's shard 0, one
 * connection per peer node (node i dials every node j < i, so each pair
 * shares one authenticated connection), redialled every 200 ms until it is
 * up. A connection that was up and breaks is the peer's death, reported
 * once (down) and never redialled: the coordinator's links are the job's
 * failure detector. Contract in compute/mr_net.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "compute/mr_msg.h"
#include "compute/mr_net.h"
#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"

#define REDIAL_NS (200 * 1000000ull)

struct tcp_net {
	struct mr_net net;
	struct keel_transport *t;
	struct keel_shard *sh;
	uint32_t self;
	bool peer[MR_MAXN];
	struct keel_conn *conn[MR_MAXN];
	bool up[MR_MAXN];
	struct keel_timer dial_timer;
};

/* c->user holds node + 1 for every connection we keep. */
static uint32_t conn_node(struct tcp_net *tn, struct keel_conn *c)
{
	uintptr_t x = (uintptr_t)c->user;
	if (x == 0 || x > MR_MAXN || tn->conn[x - 1] != c)
		return MR_MAXN;
	return (uint32_t)(x - 1);
}

static void dial_missing(struct tcp_net *tn)
{
	for (uint32_t x = 1; x < tn->self && x < MR_MAXN; x++) {
		if (!tn->peer[x] || tn->conn[x])
			continue;
		struct keel_conn *c;
		if (keel_transport_connect(tn->t, (struct keel_addr){.node = x, .shard = 0}, &c) == 0) {
			tn->conn[x] = c;
			c->user = (void *)(uintptr_t)(x + 1);
		}
	}
}

static void dial_fire(struct keel_timer *tm)
{
	dial_missing(tm->arg);
}

static void t_up(struct keel_transport *t, struct keel_conn *c)
{
	struct tcp_net *tn = t->user;
	uint32_t x = c->peer.node;
	if (x >= MR_MAXN || !tn->peer[x] || (tn->conn[x] && tn->conn[x] != c)) {
		keel_transport_close_conn(c);
		return;
	}
	tn->conn[x] = c;
	c->user = (void *)(uintptr_t)(x + 1);
	tn->up[x] = true;
	tn->net.h->up(tn->net.user, x);
}

static void t_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct tcp_net *tn = t->user;
	uint32_t x = conn_node(tn, c);
	if (x == MR_MAXN || !tn->up[x])
		return;
	tn->net.h->recv(tn->net.user, x, m->type, m->data, m->len);
}

static void t_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct tcp_net *tn = t->user;
	uint32_t x = conn_node(tn, c);
	if (x == MR_MAXN)
		return;
	tn->conn[x] = NULL;
	bool was_up = tn->up[x];
	tn->up[x] = false;
	if (keel_runtime_stopping(keel_shard_runtime(tn->sh)))
		return;
	if (!was_up) {
		/* Not up yet (the peer has not started): dial again shortly. */
		if (!keel_timer_armed(&tn->dial_timer))
			keel_timer_arm(tn->sh, &tn->dial_timer, REDIAL_NS);
		return;
	}
	tn->net.h->down(tn->net.user, x, reason);
}

static void t_writable(struct keel_transport *t, struct keel_conn *c)
{
	struct tcp_net *tn = t->user;
	uint32_t x = conn_node(tn, c);
	if (x < MR_MAXN && tn->net.h->writable)
		tn->net.h->writable(tn->net.user, x);
}

static const struct keel_transport_handlers handlers = {
	.on_conn_up = t_up,
	.on_recv = t_recv,
	.on_conn_down = t_down,
	.on_writable = t_writable,
};

static int tcp_send(struct mr_net *net, uint32_t to, uint16_t type, const void *data, size_t len)
{
	struct tcp_net *tn = (struct tcp_net *)net;
	if (to >= MR_MAXN || !tn->conn[to] || !tn->up[to])
		return KEEL_ECLOSED;
	if (len > net->max_msg)
		return KEEL_ETOOBIG;
	return keel_transport_send(tn->conn[to], type, data, (uint32_t)len);
}

static void tcp_close(struct mr_net *net)
{
	struct tcp_net *tn = (struct tcp_net *)net;
	keel_timer_cancel(tn->sh, &tn->dial_timer);
	keel_transport_close(tn->t);
	free(tn);
}

static const struct mr_net_ops tcp_ops = {.send = tcp_send, .close = tcp_close};

int mr_net_tcp_open(const struct keel_node_config *cfg, struct keel_shard *sh, unsigned shards,
		    const struct mr_net_handlers *h, void *user, struct mr_net **out, char *errmsg)
{
	*out = NULL;
	struct tcp_net *tn = calloc(1, sizeof *tn);
	if (!tn)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: network");
	tn->net = (struct mr_net){.ops = &tcp_ops, .h = h, .user = user};
	tn->sh = sh;
	tn->self = cfg->node_id;
	for (size_t i = 0; i < cfg->npeers; i++) {
		uint32_t x = cfg->peers[i].node;
		if (x < MR_MAXN && x != tn->self)
			tn->peer[x] = true;
	}
	struct keel_transport_config tc;
	keel_node_config_transport(cfg, 0, &tc);
	tc.shards = shards;
	tc.handlers = &handlers;
	tc.user = tn;
	tc.shard = sh;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_transport_open(cfg->transport, &tc, &tn->t, err);
	if (rc == 0 && (rc = keel_transport_listen(tn->t)) < 0) {
		snprintf(err, sizeof err, "%s", tn->t->errmsg);
		keel_transport_close(tn->t);
	}
	if (rc < 0) {
		free(tn);
		if (errmsg)
			snprintf(errmsg, KEEL_ERRMSG_LEN, "mr: node %u: transport: %.200s", cfg->node_id, err);
		return rc;
	}
	tn->net.max_msg = tn->t->max_frame;
	keel_timer_init(&tn->dial_timer, dial_fire, tn);
	*out = &tn->net;
	dial_missing(tn);
	return 0;
}
