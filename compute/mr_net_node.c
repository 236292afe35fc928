/*
 * compute/mr_net_node.c — struct mr_net (compute/mr_net.h) on a node's
 * endpoint (keel/node.h): map-reduce's messages travel over the node mesh,
 * the same connections the replicated logs use, as the one registered type
 * "mr". The map-reduce message type (compute/mr_msg.h) is the payload's
 * first two bytes (little-endian), the message follows.
 *
 * The mesh dials and redials with backoff; this file only turns its peer
 * events into mr_net's: up(node) when a peer's connection comes up,
 * down(node) once when a peer that was up is lost (a failed dial of a peer
 * that never came up is not reported: the mesh keeps dialling).
 *
 * Runs on the endpoint's shard thread; the endpoint is borrowed and
 * outlives the net (mr closes it in the shard's stop hook).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compute/mr_msg.h"
#include "compute/mr_net.h"
#include "keel/config.h"
#include "keel/node.h"

#define SUBTYPE_LEN 2

struct node_net {
	struct mr_net net;
	struct keel_endpoint *ep;
	uint16_t type; /* "mr"'s wire id */
	int listener;
	struct keel_log_limit lim;
	bool peer[MR_MAXN];
	bool up[MR_MAXN];
};

static void on_recv(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	(void)ep;
	struct node_net *nn = arg;
	uint32_t x = m->from.node;
	if (x >= MR_MAXN || !nn->peer[x] || !nn->up[x])
		return;
	if (m->len < SUBTYPE_LEN) {
		keel_log_limited(&nn->lim, 5, KEEL_LOG_WARN, "mr: a %u-byte message from node %u has no type: dropped",
				 m->len, x);
		return;
	}
	const uint8_t *p = m->data;
	nn->net.h->recv(nn->net.user, x, keel_get_le16(p), p + SUBTYPE_LEN, m->len - SUBTYPE_LEN);
}

static void on_peer_up(void *arg, struct keel_endpoint *ep, uint32_t node)
{
	(void)ep;
	struct node_net *nn = arg;
	if (node >= MR_MAXN || !nn->peer[node])
		return;
	if (nn->up[node]) {
		/* A new connection replaced the old one (the peer restarted):
		 * to the job that is a lost peer. */
		nn->up[node] = false;
		nn->net.h->down(nn->net.user, node, -ECONNRESET);
	}
	nn->up[node] = true;
	nn->net.h->up(nn->net.user, node);
}

static void on_peer_down(void *arg, struct keel_endpoint *ep, uint32_t node, int reason)
{
	(void)ep;
	struct node_net *nn = arg;
	if (node >= MR_MAXN || !nn->up[node])
		return;
	nn->up[node] = false;
	nn->net.h->down(nn->net.user, node, reason);
}

static void on_writable(void *arg, struct keel_endpoint *ep, uint32_t node)
{
	(void)ep;
	struct node_net *nn = arg;
	if (node < MR_MAXN && nn->up[node] && nn->net.h->writable)
		nn->net.h->writable(nn->net.user, node);
}

static int node_send(struct mr_net *net, uint32_t to, uint16_t type, const void *data, size_t len)
{
	struct node_net *nn = (struct node_net *)net;
	if (to >= MR_MAXN || !nn->up[to])
		return KEEL_ECLOSED;
	if (len > net->max_msg)
		return KEEL_ETOOBIG;
	struct keel_endpoint_buf b;
	int rc = keel_endpoint_alloc(nn->ep, to, nn->type, 0, (uint32_t)(len + SUBTYPE_LEN), &b);
	if (rc < 0)
		return rc == KEEL_EUNAVAIL ? KEEL_ECLOSED : rc;
	keel_put_le16(b.data, type);
	if (len)
		memcpy((uint8_t *)b.data + SUBTYPE_LEN, data, len);
	b.len = (uint32_t)(len + SUBTYPE_LEN);
	rc = keel_endpoint_send_buf(nn->ep, &b);
	return rc == KEEL_EUNAVAIL ? KEEL_ECLOSED : rc;
}

static void node_close(struct mr_net *net)
{
	struct node_net *nn = (struct node_net *)net;
	keel_endpoint_unlisten(nn->ep, nn->listener);
	keel_endpoint_unhandle(nn->ep, "mr");
	free(nn);
}

static const struct mr_net_ops node_ops = {.send = node_send, .close = node_close};

int mr_net_node_open(struct keel_endpoint *ep, const struct mr_net_handlers *h, void *user,
		     struct mr_net **out, char *errmsg)
{
	*out = NULL;
	int type = keel_msg_type_id("mr");
	if (type < 0)
		return keel_errmsg_set(errmsg, type, "mr: message type \"mr\" is not registered");
	struct node_net *nn = calloc(1, sizeof *nn);
	if (!nn)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: network");
	uint32_t maxp = keel_endpoint_max_payload(ep);
	nn->net = (struct mr_net){.ops = &node_ops, .h = h, .user = user,
				  .max_msg = maxp > SUBTYPE_LEN ? maxp - SUBTYPE_LEN : 0};
	nn->ep = ep;
	nn->type = (uint16_t)type;
	const struct keel_node_config *cfg = keel_endpoint_node_config(ep);
	uint32_t self = keel_endpoint_node_id(ep);
	for (size_t i = 0; i < cfg->npeers; i++) {
		uint32_t x = cfg->peers[i].node;
		if (x < MR_MAXN && x != self)
			nn->peer[x] = true;
	}
	int rc = keel_endpoint_handle(ep, "mr", on_recv, nn);
	if (rc < 0) {
		free(nn);
		return keel_errmsg_set(errmsg, rc, "mr: claiming the \"mr\" messages: %s",
				       keel_strerror(rc));
	}
	struct keel_endpoint_listener l = {.peer_up = on_peer_up, .peer_down = on_peer_down,
					   .writable = on_writable, .arg = nn};
	nn->listener = keel_endpoint_listen(ep, &l);
	if (nn->listener < 0) {
		keel_endpoint_unhandle(ep, "mr");
		free(nn);
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: listening for peers");
	}
	/* Opened from the shard's start hook, before its loop runs: no peer
	 * can be up yet, every one is reported by peer_up. */
	*out = &nn->net;
	return 0;
}
