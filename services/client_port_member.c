/*
 * services/client_port_member.c — the client port's MEMBER request
 * (keel/proto.h): list, add or remove a node in one group's configuration,
 * on keel_rlog_change_member and keel_rlog_status, for `keel member`.
 *
 * Shape: shard 0 checks the request and posts it to the group's shard
 * (g mod S), which answers there: only the group's leader does (a follower's
 * configuration may be behind the leader's), anyone else answers
 * KEEL_ENOTLEADER with the leader it knows, which the client follows.
 *
 * Resumable: an add of a node that already votes, and a remove of a node
 * not in the configuration, answer 0 with KEEL_PF_DUPLICATE — the leader's
 * view is the configuration's, so a re-run of a half-done `keel member`
 * skips the groups done and goes on with the others. An add is
 * KEEL_RLOG_ADD_VOTER, the engine's whole safe path (learner, catch-up,
 * promotion): the answer comes when the node votes. An engine without
 * reconfiguration (Paxos) answers KEEL_ENOTSUP, said in words.
 *
 * Threads: cport_member_handle on shard 0; mreq_run and the change's
 * callback on the group's shard; mreq_home back on shard 0.
 * Ownership: a struct mreq is malloc'd on shard 0 and freed by mreq_home
 * (or where a post fails: the runtime is stopping).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/node.h"
#include "keel/proto.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/services.h"
#include "client_port_int.h"

struct mreq {
	struct cconn *c;
	struct cport_view v;
	struct keel_shard *on;
	uint64_t id;
	uint32_t group, node;
	uint8_t op;
	int status;              /* the answer's, for the metrics */
	struct outbuf *out;
};

static void mreq_home(struct keel_shard *on, void *arg)
{
	(void)on;
	struct mreq *r = arg;
	cport_count_answer(cport_of(r->c), KEEL_PROTO_MEMBER, r->status);
	if (r->out)
		cport_queue(r->c, r->out);
	cport_unhold(r->c);
	free(r);
}

/* On the group's shard: encodes m and posts it home with r. */
static void mreq_reply(struct mreq *r, struct keel_proto_msg *m)
{
	m->type = KEEL_PROTO_RESULT;
	m->id = r->id;
	keel_proto_set(m, KEEL_PT_STATUS);
	r->status = m->status;
	r->out = cport_encode(m);
	if (keel_shard_post(r->on, 0, mreq_home, r) < 0) {
		/* stopping: the port frees its connections itself */
		cport_outbuf_free(r->out);
		free(r);
	}
}

static struct keel_rlog *mreq_log(struct mreq *r)
{
	struct keel_services *s =
		keel_services_of(keel_node_endpoint(r->v.node, keel_shard_id(r->on)));
	return s ? keel_services_log(s, r->group) : NULL;
}

static void mreq_fail(struct mreq *r, int status, const char *why)
{
	struct keel_proto_msg m = {.status = status};
	struct keel_rlog *l = mreq_log(r);
	struct keel_rlog_status st = {0};
	if (l)
		keel_rlog_status(l, &st);
	if (status == KEEL_ENOTLEADER) {
		m.leader = st.leader != st.self ? st.leader : 0;
		keel_proto_set(&m, KEEL_PT_LEADER);
	}
	char buf[200];
	if (!why && status == KEEL_ENOTSUP)
		why = snprintf(buf, sizeof(buf),
			       "group %u runs the %s engine, which has no reconfiguration: its "
			       "members are fixed when the cluster starts",
			       r->group, st.protocol ? st.protocol : "?") > 0 ? buf : NULL;
	else if (!why && status == KEEL_EBUSY)
		why = "another membership change of this group is in progress: retry";
	if (why) {
		m.message = (struct keel_proto_bytes){(const uint8_t *)why, (uint32_t)strlen(why)};
		keel_proto_set(&m, KEEL_PT_MESSAGE);
	}
	mreq_reply(r, &m);
}

static void mreq_changed(void *arg, int status, uint64_t index)
{
	struct mreq *r = arg;
	if (status < 0) {
		mreq_fail(r, status, NULL);
		return;
	}
	struct keel_proto_msg m = {.status = 0, .leader = 0, .index = index};
	keel_proto_set(&m, KEEL_PT_INDEX);
	mreq_reply(r, &m);
}

static bool is_member(const struct keel_rlog_status *st, uint32_t node, bool *voter)
{
	for (uint32_t i = 0; i < st->n_members; i++) {
		if (st->members[i].node == node) {
			*voter = st->members[i].voter;
			return true;
		}
	}
	*voter = false;
	return false;
}

static void mreq_list(struct mreq *r, const struct keel_rlog_status *st)
{
	struct keel_proto_item items[KEEL_RLOG_MAX_MEMBERS];
	uint32_t n = 0;
	for (uint32_t i = 0; i < st->n_members && n < KEEL_RLOG_MAX_MEMBERS; i++) {
		const struct keel_rlog_member *mb = &st->members[i];
		items[n++] = (struct keel_proto_item){
			.key = {(const uint8_t *)(mb->voter ? "v" : "l"), 1},
			.create_rev = mb->node, .mod_rev = mb->match, .version = mb->active};
	}
	struct keel_proto_msg m = {.status = 0, .leader = st->self, .index = st->commit,
				   .rev = st->epoch, .n_items = n, .item = items,
				   .flags = st->changing ? KEEL_PF_MORE : 0};
	keel_proto_set(&m, KEEL_PT_LEADER);
	keel_proto_set(&m, KEEL_PT_INDEX);
	keel_proto_set(&m, KEEL_PT_REV);
	keel_proto_set(&m, KEEL_PT_FLAGS);
	mreq_reply(r, &m);
}

static void mreq_run(struct keel_shard *on, void *arg)
{
	struct mreq *r = arg;
	r->on = on;
	struct keel_rlog *l = mreq_log(r);
	if (!l) {
		mreq_fail(r, KEEL_EUNAVAIL, "this node does not host that group");
		return;
	}
	struct keel_rlog_status st;
	keel_rlog_status(l, &st);
	if (st.role != KEEL_RLOG_LEADER) {
		/* an engine without reconfiguration says so on any node */
		if (r->op != KEEL_PROTO_MEMBER_LIST &&
		    keel_rlog_change_member(l, KEEL_RLOG_REMOVE, 0, NULL, NULL) == KEEL_ENOTSUP)
			mreq_fail(r, KEEL_ENOTSUP, NULL);
		else
			mreq_fail(r, KEEL_ENOTLEADER, NULL);
		return;
	}
	if (r->op == KEEL_PROTO_MEMBER_LIST) {
		mreq_list(r, &st);
		return;
	}
	bool voter;
	bool member = is_member(&st, r->node, &voter);
	if ((r->op == KEEL_PROTO_MEMBER_ADD && member && voter) ||
	    (r->op == KEEL_PROTO_MEMBER_REMOVE && !member)) {
		struct keel_proto_msg m = {.status = 0, .flags = KEEL_PF_DUPLICATE,
					   .index = st.commit};
		keel_proto_set(&m, KEEL_PT_FLAGS);
		keel_proto_set(&m, KEEL_PT_INDEX);
		mreq_reply(r, &m);
		return;
	}
	if (r->op == KEEL_PROTO_MEMBER_REMOVE && voter) {
		uint32_t voters = 0;
		for (uint32_t i = 0; i < st.n_members; i++)
			voters += st.members[i].voter;
		if (voters == 1) {
			mreq_fail(r, KEEL_EBADINPUT, "that is the group's last voter");
			return;
		}
	}
	enum keel_rlog_member_op op =
		r->op == KEEL_PROTO_MEMBER_ADD ? KEEL_RLOG_ADD_VOTER : KEEL_RLOG_REMOVE;
	int rc = keel_rlog_change_member(l, op, r->node, mreq_changed, r);
	if (rc < 0)
		mreq_fail(r, rc, NULL);
}

void cport_member_handle(struct cconn *c, const struct keel_proto_msg *m)
{
	struct keel_client_port *p = cport_of(c);
	struct cport_view v = cport_view(p);
	const char *why = NULL;
	uint8_t op = m->mode;
	if (!m->has[KEEL_PT_GROUP] || m->group >= v.groups)
		why = "a MEMBER request needs a group below the cluster's group count";
	else if (!m->has[KEEL_PT_MODE] || op < KEEL_PROTO_MEMBER_LIST || op > KEEL_PROTO_MEMBER_REMOVE)
		why = "a MEMBER request needs an operation (MODE: 1 list, 2 add, 3 remove)";
	else if (op != KEEL_PROTO_MEMBER_LIST && (!m->has[KEEL_PT_NODE] || !m->node))
		why = "a MEMBER add or remove needs a node id (NODE, not 0)";
	if (why) {
		struct keel_proto_msg a = {.type = KEEL_PROTO_RESULT, .id = m->id,
					   .status = KEEL_EBADINPUT,
					   .message = {(const uint8_t *)why, (uint32_t)strlen(why)}};
		keel_proto_set(&a, KEEL_PT_STATUS);
		keel_proto_set(&a, KEEL_PT_MESSAGE);
		cport_answer(c, &a);
		return;
	}
	struct mreq *r = malloc(sizeof(*r));
	if (!r) {
		cport_refuse(c, m->id, -ENOMEM, "out of memory");
		return;
	}
	*r = (struct mreq){.c = c, .v = v, .id = m->id, .group = m->group, .node = m->node, .op = op};
	cport_hold(c);
	cport_count_request(p);
	if (keel_shard_post(v.sh, r->group % v.nshards, mreq_run, r) < 0) {
		free(r);
		cport_unhold(c);
		cport_refuse(c, m->id, KEEL_ESTOPPED, "the node is stopping");
	}
}
