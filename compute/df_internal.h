/*
 * compute/df_internal.h — the dataflow graph (df_graph.c) and its scheduler
 * (df_sched.c). Not a public API; see include/keel/dataflow.h.
 *
 * Ownership: every struct keel_df belongs to its context and is freed with
 * it. A wide dataset's shuffle tables (one mr_table per shard and side) are
 * written only by the shard that owns them during the stage that feeds
 * them, sealed (sorted) by that shard at the end of the stage, then only
 * read, by every shard, until freed on the driver's thread. A persisted
 * partition is written by the one task that computes it and read after.
 */
#ifndef KEEL_COMPUTE_DF_INTERNAL_H
#define KEEL_COMPUTE_DF_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "compute/mr_internal.h"
#include "keel/dataflow.h"

enum df_kind {
	DF_RANGE,
	DF_TEXT,
	DF_MAP,
	DF_FLAT,
	DF_FILTER,
	DF_MAPPART,
	DF_REDUCE,
	DF_GROUP,
	DF_JOIN,
	DF_DISTINCT,
};

static inline bool df_is_wide(enum df_kind k)
{
	return k >= DF_REDUCE;
}

/* One partition held in memory: [u32 klen][u32 vlen][key][value]... */
struct df_part {
	uint8_t *buf;
	size_t len, cap;
	uint64_t n;
	/* Seen while it was written: every key hashes to this partition (the
	 * shuffles' partitioner) and keys never go down. A join can then read
	 * it as it is instead of shuffling it (co-partitioning). */
	bool unsorted_or_moved;
	size_t last; /* offset of the last element */
};

struct keel_df {
	struct keel_df_ctx *ctx;
	enum df_kind kind;
	uint32_t id;
	struct keel_df *parent[2];
	uint32_t partitions;
	void *arg;
	keel_df_flat_fn flat;
	keel_df_filter_fn filter;
	keel_df_combine_fn combine;
	keel_df_group_fn group;
	keel_df_join_fn join;
	struct keel_df_part_ops pops;
	uint32_t value_size;
	/* range */
	uint64_t start, end;
	/* text */
	struct mr_plan plan;
	/* wide: the shuffle's tables, [side][shard], and the mr job they
	 * combine with */
	struct keel_mr_job job;
	struct mr_table *tables[2];
	bool shuffled[2];
	/* persist */
	bool persist;
	struct df_part *mat; /* partitions, once computed */
	/* Observed when computed: mat is hash-partitioned by key over its
	 * partitions and key-sorted in each (see struct df_part). */
	bool hash_sorted;
	bool copart[2]; /* join: side read from the parent's partitions, no shuffle */
	struct keel_df *next_all; /* the context's list */
	uint32_t visit; /* graph walks: the walk that last saw it */
};

struct keel_df_ctx {
	uint32_t shards;
	uint32_t partitions;
	uint64_t mem_budget;
	uint64_t persist_budget;
	_Atomic uint64_t *shard_persisted; /* bytes held per shard */
	char spill_dir[512];
	void (*on_stage)(void *arg, const struct keel_df_stage_info *st);
	void *stage_arg;
	struct keel_df *all;
	uint32_t next_id;
	uint32_t visit_gen;
	struct keel_df_stats stats;
	char error[KEEL_ERRMSG_LEN];
};

void df_free_shuffle(struct keel_df *d);
void df_free_mat(struct keel_df *d);

#endif
