/* The Raft engine's membership changes and leadership transfer
 * (keel/rlog.h, group_internal.h). The core does one configuration step
 * at a time (§4.1) and refuses a step while another is uncommitted; the
 * host turns the caller's request into those steps, retries a refused step
 * on the next batch or tick, and for ADD_VOTER waits between the learner
 * step and the promotion until the learner has the leader's commit index
 * (§4.2.1: a new voter that is far behind could make the cluster
 * unavailable), which it reaches by snapshot when the log was compacted. */
#include <stdlib.h>

#include "consensus/group/group_internal.h"

static void finish(struct keel_group *g, int status, uint64_t index)
{
	struct gchange c = g->change;
	g->change = (struct gchange){0};
	if (status == 0)
		keel_info("raft: group %u: membership change for node %u done at index %llu",
			  g->cfg.group, c.node, (unsigned long long)index);
	else
		keel_info("raft: group %u: membership change for node %u failed: %s", g->cfg.group,
			  c.node, keel_strerror(status));
	if (c.cb)
		c.cb(c.arg, status, index);
}

void group_change_fail(struct keel_group *g, int code)
{
	if (g->change.state != GC_NONE)
		finish(g, code, g->change.index);
}

int group_change_member(struct keel_rlog *l, enum keel_rlog_member_op op, uint32_t node,
			keel_rlog_done_fn *cb, void *arg)
{
	struct keel_group *g = (struct keel_group *)l;
	if (g->closing)
		return KEEL_ESTOPPED;
	if (g->failed)
		return KEEL_EDURABLE;
	if (!node)
		return KEEL_EBADINPUT;
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	if (st.role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	if (g->change.state != GC_NONE || st.conf.n_outgoing)
		return KEEL_EBUSY;
	bool voter = keel_raft_conf_is_voter(&st.conf, node);
	bool learner = keel_raft_conf_is_learner(&st.conf, node);
	struct gchange c = {.op = op, .node = node, .cb = cb, .arg = arg, .state = GC_PROPOSE,
			    .deadline = g->ticks + 10ull * g->req_timeout};
	switch (op) {
	case KEEL_RLOG_ADD_VOTER:
		if (voter)
			return KEEL_EBADINPUT; /* already one */
		c.step = KEEL_RAFT_CONF_ADD_LEARNER;
		if (learner) {
			c.state = GC_CATCHUP;
			c.step = KEEL_RAFT_CONF_ADD_VOTER;
		}
		break;
	case KEEL_RLOG_ADD_LEARNER:
		if (voter || learner)
			return KEEL_EBADINPUT;
		c.step = KEEL_RAFT_CONF_ADD_LEARNER;
		break;
	case KEEL_RLOG_PROMOTE:
		if (!learner)
			return KEEL_ENOTFOUND;
		c.step = KEEL_RAFT_CONF_ADD_VOTER;
		break;
	case KEEL_RLOG_REMOVE:
		if (!voter && !learner)
			return KEEL_ENOTFOUND;
		c.step = KEEL_RAFT_CONF_REMOVE;
		break;
	default:
		return KEEL_EBADINPUT;
	}
	g->change = c;
	keel_info("raft: group %u: membership change for node %u started", g->cfg.group, node);
	if (!g->busy && !g->pumping)
		group_change_step(g);
	return 0;
}

void group_change_step(struct keel_group *g)
{
	struct gchange *c = &g->change;
	if (c->state == GC_NONE || g->busy || g->pumping || g->failed)
		return;
	if (g->ticks >= c->deadline) {
		finish(g, KEEL_ETIMEOUT, c->index);
		return;
	}
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	if (st.role != KEEL_RAFT_LEADER && c->state != GC_COMMIT) {
		finish(g, KEEL_ENOTLEADER, 0);
		return;
	}
	if (c->state == GC_CATCHUP) {
		uint64_t match = 0;
		if (keel_raft_progress(g->r, c->node, &match, NULL) < 0 || match < st.commit)
			return; /* the next tick looks again */
		c->step = KEEL_RAFT_CONF_ADD_VOTER;
		c->state = GC_PROPOSE;
	}
	if (c->state != GC_PROPOSE)
		return;
	int rc = keel_raft_propose_conf_change(g->r, c->step, c->node, &c->index, &c->term);
	if (rc == KEEL_EBUSY)
		return; /* an earlier change or this term's first entry still commits */
	if (rc < 0) {
		finish(g, rc, 0);
		return;
	}
	c->state = GC_COMMIT;
	group_pump(g);
}

void group_change_applied(struct keel_group *g, uint64_t index, uint64_t term)
{
	struct gchange *c = &g->change;
	if (c->state != GC_COMMIT || index != c->index)
		return;
	if (term != c->term) {
		finish(g, KEEL_ESTALE, index);
		return;
	}
	if (c->op == KEEL_RLOG_ADD_VOTER && c->step == KEEL_RAFT_CONF_ADD_LEARNER) {
		c->state = GC_CATCHUP; /* group_change_step promotes it once caught up */
		return;
	}
	finish(g, 0, index);
}

int group_transfer_leader(struct keel_rlog *l, uint32_t to)
{
	struct keel_group *g = (struct keel_group *)l;
	if (g->failed)
		return KEEL_EDURABLE;
	struct keel_raft_status st;
	keel_raft_status(g->r, &st);
	if (st.role != KEEL_RAFT_LEADER)
		return KEEL_ENOTLEADER;
	if (!keel_raft_conf_is_voter(&st.conf, to))
		return KEEL_ENOTFOUND;
	if (to == g->id)
		return 0;
	if (st.transferee || g->transfer_to)
		return KEEL_EBUSY;
	if (g->busy || g->pumping) {
		g->transfer_to = to; /* given to the core with the next inputs */
		return 0;
	}
	int rc = keel_raft_transfer_leadership(g->r, to);
	if (rc == 0)
		group_pump(g);
	return rc;
}
