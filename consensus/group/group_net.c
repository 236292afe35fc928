/* The Raft engine's messages (group_internal.h) on the shard's endpoint
 * (keel/node.h): every message is a "raft" frame of this group; the peer
 * mesh, redial and envelope are node/'s. A message to a peer without a
 * connection, or whose queue is full, is dropped: Raft's heartbeats and
 * append retries resend what matters. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"

/* Messages queued for the core while a WAL write is in flight; beyond
 * this, new ones are dropped (Raft resends). */
#define MAX_QUEUED_MSGS 4096
#define LOG_BURST 5

static void bad_input(struct keel_group *g, const struct keel_node_msg *m, const char *what,
		      int rc)
{
	g->st.bad_msgs++;
	keel_log_limited(&g->lim, LOG_BURST, KEEL_LOG_WARN,
			 "raft: group %u drops a message from node %u: %s%s%s", g->cfg.group,
			 m->from.node, what, rc ? ": " : "", rc ? keel_strerror(rc) : "");
}

static void on_raft(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	struct keel_group *g = arg;
	(void)ep;
	if (g->failed || g->closing)
		return;
	if (g->in_n >= MAX_QUEUED_MSGS) {
		g->st.msgs_dropped++;
		return;
	}
	struct gin *in = malloc(sizeof(*in));
	if (!in) {
		g->st.msgs_dropped++;
		return;
	}
	int rc = keel_raft_msg_decode(m->data, m->len, &in->m);
	if (rc < 0) {
		free(in);
		bad_input(g, m, "undecodable", rc);
		return;
	}
	/* The transport authenticated m->from; a message claiming another
	 * sender, or for another node, is not one we can trust or use. */
	if (in->m.from != m->from.node || in->m.to != g->id) {
		keel_raft_msg_free(&in->m);
		free(in);
		bad_input(g, m, "wrong sender or receiver", 0);
		return;
	}
	g->st.msgs_received++;
	group_queue_msg(g, in);
	group_pump(g);
}

static void send_one(struct keel_group *g, const struct keel_raft_msg *m)
{
	size_t size = keel_raft_msg_encoded_size(m);
	if (size > keel_endpoint_max_payload(g->ep)) {
		g->st.msgs_dropped++;
		keel_log_limited(&g->lim, LOG_BURST, KEEL_LOG_WARN,
				 "raft: group %u: %s to node %llu is %zu bytes, above the frame limit",
				 g->cfg.group, keel_raft_msg_type_name(m->type),
				 (unsigned long long)m->to, size);
		return;
	}
	struct keel_endpoint_buf b;
	int rc = keel_endpoint_alloc(g->ep, (uint32_t)m->to, g->raft_type, g->cfg.group,
				     (uint32_t)size, &b);
	if (rc < 0) {
		g->st.msgs_dropped++; /* no connection, KEEL_EFULL: Raft resends */
		return;
	}
	rc = keel_raft_msg_encode(m, b.data, b.cap);
	if (rc < 0) {
		keel_endpoint_discard(g->ep, &b);
		g->st.msgs_dropped++;
		return;
	}
	b.len = (uint32_t)rc;
	if (keel_endpoint_send_buf(g->ep, &b) == 0)
		g->st.msgs_sent++;
	else
		g->st.msgs_dropped++;
}

static bool early(uint32_t type)
{
	return type == KEEL_RAFT_MSG_APPEND || type == KEEL_RAFT_MSG_HEARTBEAT;
}

void group_send_msgs(struct keel_group *g, const struct keel_raft_ready *rd,
		     enum group_send_phase phase)
{
	for (size_t i = 0; i < rd->n_msgs; i++) {
		const struct keel_raft_msg *m = &rd->msgs[i];
		if (phase == GROUP_SEND_EARLY && !early(m->type))
			continue;
		if (phase == GROUP_SEND_LATE && early(m->type))
			continue;
		send_one(g, m);
	}
}

int group_net_open(struct keel_group *g, char *errmsg)
{
	int id = keel_msg_type_id("raft");
	if (id < 0)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "raft: no \"raft\" message type");
	g->raft_type = (uint16_t)id;
	int rc = keel_endpoint_join(g->ep, "raft", g->cfg.group, on_raft, g);
	if (rc < 0)
		return keel_errmsg_set(errmsg, rc, "raft: group %u cannot join the endpoint",
				       g->cfg.group);
	g->joined = true;
	return 0;
}

void group_net_close(struct keel_group *g)
{
	if (g->joined)
		keel_endpoint_leave(g->ep, "raft", g->cfg.group);
	g->joined = false;
}
