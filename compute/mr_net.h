/*
 * compute/mr_net.h — how a map-reduce node reaches the other nodes of its
 * job: the one seam between compute/ and the network. Everything in
 * compute/ above it (agent, coordinator, executor) sees node ids and message
 * types (compute/mr_msg.h), never a connection. Not a public API.
 *
 * The implementation, compute/mr_net_node.c, rides the node layer's mesh
 * (keel/node.h): shard 0's endpoint of the node's keel_node, the
 * connections every other layer of the node shares, and the one registered
 * message type "mr" with mr_msg_type inside. A lone process (keel_mr_run)
 * has no net.
 *
 * Contract for an implementation:
 *   - Everything runs on one shard's thread (the one that opened it): every
 *     op, every handler.
 *   - send(to, type, data, len): whole, in order, at most once per peer, or
 *     the peer is reported down. Returns 0, KEEL_EFULL when that peer's send
 *     queue is full (nothing was queued; writable(to) follows, once, when
 *     there is room), KEEL_ECLOSED when `to` is not up, or another negative
 *     code. The bytes are copied (or sent) before it returns.
 *   - max_msg: the largest len send takes.
 *   - up(node) once a peer's connection is authenticated; down(node, reason)
 *     once when a peer that was up is lost (a peer that never came up is not
 *     reported: the implementation keeps dialling it). recv(from, type, data,
 *     len) lends data until it returns. A message to this node itself never
 *     goes through the net (the caller loops it back).
 *   - close() from the same thread, while the shard's loop still runs; no
 *     handler runs after it.
 */
#ifndef KEEL_COMPUTE_MR_NET_H
#define KEEL_COMPUTE_MR_NET_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

struct mr_net;

struct mr_net_handlers {
	void (*up)(void *user, uint32_t node);
	void (*down)(void *user, uint32_t node, int reason);
	void (*recv)(void *user, uint32_t from, uint16_t type, const void *data, size_t len);
	void (*writable)(void *user, uint32_t node);
};

struct mr_net_ops {
	int (*send)(struct mr_net *net, uint32_t to, uint16_t type, const void *data, size_t len);
	void (*close)(struct mr_net *net);
};

struct mr_net {
	const struct mr_net_ops *ops;
	const struct mr_net_handlers *h; /* borrowed */
	void *user;                      /* passed to every handler */
	uint32_t max_msg;
};

static inline int mr_net_send(struct mr_net *net, uint32_t to, uint16_t type, const void *data,
			      size_t len)
{
	return net->ops->send(net, to, type, data, len);
}
static inline void mr_net_close(struct mr_net *net)
{
	if (net)
		net->ops->close(net);
}

/* On the node mesh (compute/mr_net_node.c): claims the "mr" message type on
 * ep (shard 0's endpoint of a keel_node) and reports its peers. ep is
 * borrowed and must outlive the net. */
struct keel_endpoint;
int mr_net_node_open(struct keel_endpoint *ep, const struct mr_net_handlers *h, void *user,
		     struct mr_net **out, char *errmsg);

#endif
