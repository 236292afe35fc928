/* The group host's connections (include/keel/group.h): shard s of this node
 * dials shard s of every other voter and sends on that connection; peers'
 * messages arrive on the connections they dialled. Two one-way connections
 * per pair need no tie-break between simultaneous dials, and a restarted
 * peer simply dials again. A dialled connection that breaks is redialled
 * with exponential backoff (50 ms doubling to 1 s, jittered). Messages to
 * a peer without a connection, or whose send queue is full, are dropped:
 * Raft's heartbeats and append retries resend what matters. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"
#include "keel/config.h"

#define REDIAL_BASE_MS 50
#define REDIAL_MAX_MS 1000
/* Messages queued for the core while a WAL write is in flight; beyond
 * this, new ones are dropped (Raft resends). */
#define MAX_QUEUED_MSGS 4096

static struct gpeer *peer_of(struct keel_group *g, uint64_t node)
{
	for (uint32_t i = 0; i < g->npeers; i++)
		if (g->peers[i].node == node)
			return &g->peers[i];
	return NULL;
}

static void dial(struct gpeer *p);

static void schedule_redial(struct gpeer *p)
{
	struct keel_group *g = p->g;
	if (g->closing)
		return;
	uint64_t rnd = keel_now_ns() * 0x9e3779b97f4a7c15ull ^ p->node;
	uint32_t ms = keel_transport_backoff_ms(p->attempt, REDIAL_BASE_MS, REDIAL_MAX_MS, rnd);
	if (p->attempt < 16)
		p->attempt++;
	keel_timer_arm(g->cfg.shard, &p->redial, (uint64_t)ms * 1000000u);
}

static void dial(struct gpeer *p)
{
	struct keel_group *g = p->g;
	struct keel_conn *c;
	if (p->dials++)
		g->st.reconnects++;
	int rc = keel_transport_connect(g->t, (struct keel_addr){p->node, g->t->self.shard}, &c);
	if (rc < 0) {
		if (p->attempt == 0)
			keel_warn("group: dialling node %u: %s", p->node, g->t->errmsg);
		schedule_redial(p);
		return;
	}
	c->user = p;
	p->conn = c;
}

static void on_redial(struct keel_timer *t)
{
	struct gpeer *p = t->arg;
	if (!p->conn && !p->g->closing)
		dial(p);
}

static void on_up(struct keel_transport *t, struct keel_conn *c)
{
	struct keel_group *g = t->user;
	struct gpeer *p = c->user;
	if (c->inbound || !p)
		return;
	p->up = true;
	p->attempt = 0;
	keel_info("group: node %llu connected to node %u", (unsigned long long)g->id, p->node);
	p->ever_up = true;
}

static void on_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct keel_group *g = t->user;
	struct gpeer *p = c->user;
	if (c->inbound || !p || p->conn != c)
		return;
	if (p->up)
		keel_info("group: node %llu lost its connection to node %u: %s",
			  (unsigned long long)g->id, p->node,
			  reason ? keel_strerror(reason) : "closed");
	p->conn = NULL;
	p->up = false;
	c->user = NULL;
	schedule_redial(p);
}

static void bad_input(struct keel_group *g, const struct keel_conn *c, const char *what, int rc)
{
	g->st.bad_msgs++;
	if (!g->log_budget)
		return;
	g->log_budget--;
	keel_warn("group: node %llu drops a message from node %u/%u: %s%s%s",
		  (unsigned long long)g->id, c->peer.node, c->peer.shard, what, rc ? ": " : "",
		  rc ? keel_strerror(rc) : "");
}

static void on_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct keel_group *g = t->user;
	if (g->failed || g->closing)
		return;
	if (m->type != KEEL_GROUP_MSG_RAFT) {
		bad_input(g, c, "not a Raft message (wrong type)", 0);
		return;
	}
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
		bad_input(g, c, "undecodable", rc);
		return;
	}
	/* The transport authenticated c->peer; a message claiming another
	 * sender, or for another node, is not one we can trust or use. */
	if (in->m.from != c->peer.node || in->m.to != g->id || c->peer.shard != t->self.shard) {
		keel_raft_msg_free(&in->m);
		free(in);
		bad_input(g, c, "wrong sender, receiver or shard", 0);
		return;
	}
	g->st.msgs_received++;
	group_queue_msg(g, in);
	group_pump(g);
}

static const struct keel_transport_handlers group_handlers = {
	.on_conn_up = on_up,
	.on_recv = on_recv,
	.on_conn_down = on_down,
};

static void send_one(struct keel_group *g, const struct keel_raft_msg *m)
{
	struct gpeer *p = peer_of(g, m->to);
	if (!p || !p->conn) {
		g->st.msgs_dropped++;
		return;
	}
	size_t size = keel_raft_msg_encoded_size(m);
	if (size > g->t->max_frame) {
		g->st.msgs_dropped++;
		if (g->log_budget) {
			g->log_budget--;
			keel_warn("group: %s to node %u is %zu bytes, above the frame limit",
				  keel_raft_msg_type_name(m->type), p->node, size);
		}
		return;
	}
	struct keel_send_buf *b;
	int rc = keel_transport_alloc(p->conn, (uint32_t)size, &b);
	if (rc < 0) {
		g->st.msgs_dropped++; /* KEEL_EFULL: Raft resends */
		return;
	}
	rc = keel_raft_msg_encode(m, b->data, b->cap);
	if (rc < 0) {
		keel_transport_discard(p->conn, b);
		g->st.msgs_dropped++;
		return;
	}
	b->len = (uint32_t)rc;
	b->type = KEEL_GROUP_MSG_RAFT;
	if (keel_transport_send_buf(p->conn, b) == 0)
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
	const struct keel_node_config *node = g->cfg.node;
	unsigned shard = keel_shard_id(g->cfg.shard);
	struct keel_transport_config tc;
	keel_node_config_transport(node, shard, &tc);
	tc.shards = keel_shard_count(g->cfg.shard);
	tc.handlers = &group_handlers;
	tc.user = g;
	tc.shard = g->cfg.shard;
	int rc = keel_transport_open(node->transport, &tc, &g->t, errmsg);
	if (rc < 0)
		return rc;
	rc = keel_transport_listen(g->t);
	if (rc < 0)
		return keel_errmsg_set(errmsg, rc, "group: listen: %s", g->t->errmsg);
	for (size_t i = 0; i < node->npeers; i++) {
		if (node->peers[i].node == node->node_id)
			continue;
		struct gpeer *p = &g->peers[g->npeers++];
		p->g = g;
		p->node = node->peers[i].node;
		keel_timer_init(&p->redial, on_redial, p);
	}
	for (uint32_t i = 0; i < g->npeers; i++)
		dial(&g->peers[i]);
	return 0;
}

void group_net_close(struct keel_group *g)
{
	for (uint32_t i = 0; i < g->npeers; i++)
		keel_timer_cancel(g->cfg.shard, &g->peers[i].redial);
	/* No handler runs from here on: our per-connection state is the
	 * peers table, which needs no freeing. */
	keel_transport_close(g->t);
	g->t = NULL;
	for (uint32_t i = 0; i < g->npeers; i++) {
		g->peers[i].conn = NULL;
		g->peers[i].up = false;
	}
}
