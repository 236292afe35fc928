/*
 * compute/df_graph.c — the dataflow context and the graph of datasets:
 * building a node runs nothing (stages run when an action needs them, in
 * df_sched.c). A constructor given a NULL parent returns NULL, so a chain
 * of calls after a failed source fails once, at the end, with the first
 * error kept in the context.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "compute/df_internal.h"

struct keel_df_ctx *keel_df_ctx_new(const struct keel_df_config *cfg, char *errmsg)
{
	struct keel_df_ctx *c = calloc(1, sizeof *c);
	if (!c) {
		keel_errmsg_set(errmsg, -ENOMEM, "df: context");
		return NULL;
	}
	c->shards = cfg && cfg->shards ? cfg->shards : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	if (c->shards == 0)
		c->shards = 1;
	if (c->shards > 1024) {
		keel_errmsg_set(errmsg, KEEL_ECONFIG, "df: %u shards (at most 1024)", c->shards);
		free(c);
		return NULL;
	}
	c->partitions = cfg && cfg->partitions ? cfg->partitions : 2 * c->shards;
	c->mem_budget = cfg && cfg->mem_budget ? cfg->mem_budget : 64u << 20;
	c->persist_budget = cfg ? cfg->persist_budget : 0;
	c->shard_persisted = calloc(c->shards, sizeof *c->shard_persisted);
	if (!c->shard_persisted) {
		keel_errmsg_set(errmsg, -ENOMEM, "df: context");
		free(c);
		return NULL;
	}
	/* A private directory for the shuffles' spills: two contexts (or
	 * processes) sharing a spill_dir never meet on a file name. */
	const char *sd = cfg && cfg->spill_dir ? cfg->spill_dir : getenv("TMPDIR");
	snprintf(c->spill_dir, sizeof c->spill_dir, "%s/keel-df.XXXXXX", sd && *sd ? sd : "/tmp");
	if (!mkdtemp(c->spill_dir)) {
		keel_errmsg_set(errmsg, -errno, "df: spill directory %s", c->spill_dir);
		free(c->shard_persisted);
		free(c);
		return NULL;
	}
	if (cfg) {
		c->on_stage = cfg->on_stage;
		c->stage_arg = cfg->stage_arg;
	}
	return c;
}

void keel_df_ctx_free(struct keel_df_ctx *c)
{
	if (!c)
		return;
	for (struct keel_df *d = c->all, *n; d; d = n) {
		n = d->next_all;
		df_free_shuffle(d);
		df_free_mat(d);
		if (d->kind == DF_TEXT)
			mr_plan_free(&d->plan);
		free(d);
	}
	mr_rmtree(c->spill_dir);
	free(c->shard_persisted);
	free(c);
}

void keel_df_ctx_stats(const struct keel_df_ctx *c, struct keel_df_stats *st)
{
	*st = c->stats;
}

uint32_t keel_df_ctx_shards(const struct keel_df_ctx *c)
{
	return c->shards;
}

const char *keel_df_ctx_error(const struct keel_df_ctx *c)
{
	return c->error[0] ? c->error : "no error";
}

static struct keel_df *node_new(struct keel_df_ctx *c, enum df_kind kind, uint32_t partitions)
{
	struct keel_df *d = calloc(1, sizeof *d);
	if (!d) {
		keel_errmsg_set(c->error, -ENOMEM, "df: dataset");
		return NULL;
	}
	d->ctx = c;
	d->kind = kind;
	d->id = ++c->next_id;
	d->partitions = partitions ? partitions : c->partitions;
	d->next_all = c->all;
	c->all = d;
	return d;
}

struct keel_df *keel_df_range(struct keel_df_ctx *c, uint64_t start, uint64_t end,
			      uint32_t partitions)
{
	struct keel_df *d = node_new(c, DF_RANGE, partitions);
	if (!d)
		return NULL;
	d->start = start;
	d->end = end < start ? start : end;
	return d;
}

/* The splitter wants a map-reduce job only for its record format. */
static void lines_map(void *s, const struct keel_mr_record *r, struct keel_mr_emit *e)
{
	(void)s, (void)r, (void)e;
}
static void lines_reduce(void *s, const void *k, size_t kl, struct keel_mr_values *v,
			 struct keel_mr_out *o)
{
	(void)s, (void)k, (void)kl, (void)v, (void)o;
}
const struct keel_mr_job df_lines_job = {
	.abi = KEEL_MR_ABI, .name = "df-text", .format = KEEL_MR_LINES,
	.map = lines_map, .reduce = lines_reduce,
};

struct keel_df *keel_df_text(struct keel_df_ctx *c, const char *const *paths, size_t n,
			     uint64_t split_size, char *errmsg)
{
	struct keel_df *d = node_new(c, DF_TEXT, 1);
	if (!d) {
		keel_errmsg_set(errmsg, -ENOMEM, "df: dataset");
		return NULL;
	}
	int rc = mr_plan_build(&d->plan, paths, n, &df_lines_job, split_size ? split_size : 32u << 20,
			       errmsg);
	if (rc) {
		snprintf(c->error, sizeof c->error, "%s", errmsg);
		/* Stays on the context's list (freed with it); not returned. */
		d->kind = DF_RANGE;
		return NULL;
	}
	d->partitions = d->plan.n_splits ? (uint32_t)d->plan.n_splits : 1;
	return d;
}

static struct keel_df *narrow(struct keel_df *p, enum df_kind kind, void *arg)
{
	if (!p)
		return NULL;
	struct keel_df *d = node_new(p->ctx, kind, p->partitions);
	if (!d)
		return NULL;
	d->parent[0] = p;
	d->arg = arg;
	return d;
}

struct keel_df *keel_df_map(struct keel_df *p, keel_df_flat_fn fn, void *arg)
{
	struct keel_df *d = narrow(p, DF_MAP, arg);
	if (d)
		d->flat = fn;
	return d;
}

struct keel_df *keel_df_flat_map(struct keel_df *p, keel_df_flat_fn fn, void *arg)
{
	struct keel_df *d = narrow(p, DF_FLAT, arg);
	if (d)
		d->flat = fn;
	return d;
}

struct keel_df *keel_df_filter(struct keel_df *p, keel_df_filter_fn fn, void *arg)
{
	struct keel_df *d = narrow(p, DF_FILTER, arg);
	if (d)
		d->filter = fn;
	return d;
}

struct keel_df *keel_df_map_partitions(struct keel_df *p, const struct keel_df_part_ops *ops,
				       void *arg)
{
	struct keel_df *d = narrow(p, DF_MAPPART, arg);
	if (d)
		d->pops = *ops;
	return d;
}

static void combine_tramp(void *state, void *acc, const void *val, size_t vsize)
{
	struct keel_df *d = state;
	d->combine(d->arg, acc, val, vsize);
}
static void wide_map(void *s, const struct keel_mr_record *r, struct keel_mr_emit *e)
{
	(void)s, (void)r, (void)e;
}

static struct keel_df *wide(struct keel_df *p, struct keel_df *q, enum df_kind kind, void *arg,
			    uint32_t partitions)
{
	if (!p || (kind == DF_JOIN && !q))
		return NULL;
	if (q && q->ctx != p->ctx) {
		keel_errmsg_set(p->ctx->error, KEEL_EBADINPUT, "df: join of datasets of two contexts");
		return NULL;
	}
	struct keel_df *d = node_new(p->ctx, kind, partitions);
	if (!d)
		return NULL;
	d->parent[0] = p;
	d->parent[1] = q;
	d->arg = arg;
	/* The shuffle tables run on map-reduce's job struct: only the
	 * combine (reduce_by_key) and the name (messages) matter. */
	d->job = (struct keel_mr_job){.abi = KEEL_MR_ABI, .name = "df-shuffle",
				      .map = wide_map, .reduce = lines_reduce};
	return d;
}

struct keel_df *keel_df_reduce_by_key(struct keel_df *p, uint32_t value_size,
				      keel_df_combine_fn fn, void *arg, uint32_t partitions)
{
	struct keel_df *d = wide(p, NULL, DF_REDUCE, arg, partitions);
	if (!d)
		return NULL;
	d->combine = fn;
	d->value_size = value_size;
	d->job.combine = combine_tramp;
	d->job.value_size = value_size;
	return d;
}

struct keel_df *keel_df_group_by_key(struct keel_df *p, keel_df_group_fn fn, void *arg,
				     uint32_t partitions)
{
	struct keel_df *d = wide(p, NULL, DF_GROUP, arg, partitions);
	if (d)
		d->group = fn;
	return d;
}

struct keel_df *keel_df_join(struct keel_df *l, struct keel_df *r, keel_df_join_fn fn, void *arg,
			     uint32_t partitions)
{
	struct keel_df *d = wide(l, r, DF_JOIN, arg, partitions);
	if (d)
		d->join = fn;
	return d;
}

/* Distinct shuffles the whole pair as its key with an empty value, and
 * the table's in-place combining drops the duplicates on each shard before
 * the shuffle (a combine of zero bytes). */
static void combine_none(void *state, void *acc, const void *val, size_t vsize)
{
	(void)state, (void)acc, (void)val, (void)vsize;
}

struct keel_df *keel_df_distinct(struct keel_df *p, uint32_t partitions)
{
	struct keel_df *d = wide(p, NULL, DF_DISTINCT, NULL, partitions);
	if (d)
		d->job.combine = combine_none;
	return d;
}

struct keel_df *keel_df_persist(struct keel_df *d)
{
	if (d)
		d->persist = true;
	return d;
}

void keel_df_unpersist(struct keel_df *d)
{
	if (!d)
		return;
	d->persist = false;
	df_free_mat(d);
}

uint32_t keel_df_partitions(const struct keel_df *d)
{
	return d ? d->partitions : 0;
}
