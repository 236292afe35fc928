/* The replicated log (keel/rlog.h): the engine registry and the dispatch
 * of every call to the engine that opened the log. An engine is one ops
 * struct (group_internal.h) plus one line in the table below. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"

/* The logs of one shard, in the endpoint's KEEL_SLOT_RLOG, sorted by group. */
struct rlog_table {
	struct keel_rlog **v;
	size_t n, cap;
};

static int table_add(struct keel_endpoint *ep, struct keel_rlog *l)
{
	struct rlog_table *t = keel_endpoint_slot(ep, KEEL_SLOT_RLOG);
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t)
			return -ENOMEM;
		keel_endpoint_set_slot(ep, KEEL_SLOT_RLOG, t);
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct keel_rlog **v = realloc(t->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		t->v = v;
		t->cap = cap;
	}
	size_t i = t->n;
	while (i > 0 && t->v[i - 1]->group > l->group) {
		t->v[i] = t->v[i - 1];
		i--;
	}
	t->v[i] = l;
	t->n++;
	return 0;
}

static void table_remove(struct keel_endpoint *ep, struct keel_rlog *l)
{
	struct rlog_table *t = keel_endpoint_slot(ep, KEEL_SLOT_RLOG);
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i] != l)
			continue;
		memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof(*t->v));
		t->n--;
		break;
	}
	if (!t->n) {
		free(t->v);
		free(t);
		keel_endpoint_set_slot(ep, KEEL_SLOT_RLOG, NULL);
	}
}

struct keel_rlog *keel_rlog_lookup(struct keel_endpoint *ep, uint32_t group)
{
	struct rlog_table *t = keel_endpoint_slot(ep, KEEL_SLOT_RLOG);
	size_t lo = 0, hi = t ? t->n : 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (t->v[mid]->group == group)
			return t->v[mid];
		if (t->v[mid]->group < group)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int keel_rlog_foreach(struct keel_endpoint *ep, int (*fn)(void *arg, struct keel_rlog *l),
		      void *arg)
{
	struct rlog_table *t = keel_endpoint_slot(ep, KEEL_SLOT_RLOG);
	for (size_t i = 0; t && i < t->n; i++) {
		int rc = fn(arg, t->v[i]);
		if (rc)
			return rc;
	}
	return 0;
}

uint32_t keel_rlog_group(const struct keel_rlog *l)
{
	return l->group;
}

static const struct rlog_engine *const engines[] = {
	&rlog_raft_engine,
	&rlog_paxos_engine,
};

static const char *const names[] = {"raft", "paxos", NULL};

const char *const *keel_rlog_protocols(void)
{
	return names;
}

int keel_rlog_open(const struct keel_rlog_config *cfg, struct keel_rlog **out, char *errmsg)
{
	*out = NULL;
	const char *p = cfg->protocol ? cfg->protocol : "raft";
	for (size_t i = 0; i < KEEL_ARRAY_LEN(engines); i++) {
		if (strcmp(engines[i]->name, p))
			continue;
		if (cfg->ep && keel_rlog_lookup(cfg->ep, cfg->group)) {
			if (cfg->wal_io)
				cfg->wal_io->ops->destroy(cfg->wal_io);
			if (cfg->snap_io)
				cfg->snap_io->ops->destroy(cfg->snap_io);
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "rlog: group %u is already open on this shard",
					       cfg->group);
		}
		int rc = engines[i]->open(cfg, out, errmsg);
		if (rc < 0)
			return rc;
		(*out)->group = cfg->group;
		(*out)->ep = cfg->ep;
		rc = table_add(cfg->ep, *out);
		if (rc < 0) {
			engines[i]->close(*out);
			*out = NULL;
			return keel_errmsg_set(errmsg, rc, "rlog: out of memory");
		}
		return 0;
	}
	/* the I/O backends are ours to destroy even when nothing opens */
	if (cfg->wal_io)
		cfg->wal_io->ops->destroy(cfg->wal_io);
	if (cfg->snap_io)
		cfg->snap_io->ops->destroy(cfg->snap_io);
	return keel_errmsg_set(errmsg, KEEL_ECONFIG,
			       "[log] protocol = %s: unknown (raft, paxos)", p);
}

void keel_rlog_close(struct keel_rlog *l)
{
	if (!l)
		return;
	table_remove(l->ep, l);
	l->engine->close(l);
}

int keel_rlog_poll(struct keel_rlog *l)
{
	return l->engine->poll(l);
}

int keel_rlog_propose(struct keel_rlog *l, const void *data, size_t len, keel_rlog_done_fn *cb,
		      void *arg)
{
	return l->engine->propose(l, data, len, cb, arg);
}

int keel_rlog_read_barrier(struct keel_rlog *l, keel_rlog_read_fn *cb, void *arg)
{
	return l->engine->read_barrier(l, cb, arg);
}

int keel_rlog_change_member(struct keel_rlog *l, enum keel_rlog_member_op op, uint32_t node,
			    keel_rlog_done_fn *cb, void *arg)
{
	if (!l->engine->change_member)
		return KEEL_ENOTSUP;
	return l->engine->change_member(l, op, node, cb, arg);
}

int keel_rlog_transfer_leader(struct keel_rlog *l, uint32_t to)
{
	if (!l->engine->transfer_leader)
		return KEEL_ENOTSUP;
	return l->engine->transfer_leader(l, to);
}

int keel_rlog_campaign(struct keel_rlog *l)
{
	return l->engine->campaign(l);
}

void keel_rlog_status(const struct keel_rlog *l, struct keel_rlog_status *st)
{
	memset(st, 0, sizeof(*st));
	l->engine->status(l, st);
}

void keel_rlog_get_stats(const struct keel_rlog *l, struct keel_rlog_stats *st)
{
	memset(st, 0, sizeof(*st));
	l->engine->stats(l, st);
}

const char *keel_rlog_role_name(enum keel_rlog_role role)
{
	switch (role) {
	case KEEL_RLOG_FOLLOWER: return "follower";
	case KEEL_RLOG_CANDIDATE: return "candidate";
	case KEEL_RLOG_LEADER: return "leader";
	case KEEL_RLOG_LEARNER: return "learner";
	case KEEL_RLOG_REMOVED: return "removed";
	}
	return "unknown";
}
