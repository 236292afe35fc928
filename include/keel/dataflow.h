/*
 * keel/dataflow.h — Spark-style dataflow: multi-stage in-memory pipelines.
 *
 * A driver builds a graph of datasets in a context (struct keel_df_ctx) and
 * runs it with an action (keel_df_count, keel_df_collect). Every element is
 * a (key, value) pair of byte strings; an unkeyed element has an empty key.
 *
 *   sources        keel_df_range (generated numbers), keel_df_text (files
 *                  split on line boundaries by map-reduce's splitter)
 *   narrow         map, flat_map, filter, map_partitions: pipelined inside a
 *                  stage, each element pushed through the whole chain with
 *                  nothing materialised in between
 *   wide           reduce_by_key (with a combiner), group_by_key, join: end a
 *                  stage with a hash-partitioned shuffle through
 *                  map-reduce's per-shard combining tables (mr_table: sorted
 *                  runs, spilled past the memory budget) and its k-way merge
 *   persist        keeps a dataset's partitions in the memory of the shard
 *                  that computed them; later stages read them from there
 *
 * How it runs (compute/df_sched.c): an action cuts the graph into stages at
 * wide dependencies and persisted datasets, runs the stages a dataset needs
 * parents first, each as one task per partition, on the context's shards
 * (worker threads of this process; partition p on shard p mod S, so a
 * persisted partition is read by the shard that holds it). Across nodes,
 * lineage recovery and checkpoint are not built yet (docs/design/dataflow.md).
 *
 * Ownership: datasets belong to their context and are freed with it; the
 * pointers handed to a callback are valid only during the call (copy what
 * you keep). `arg` pointers are borrowed until keel_df_ctx_free.
 * Threading: callbacks run concurrently on several shards with the same
 * arg; the arg must be read-only while an action runs (or synchronised).
 * Errors: 0 or a negative code with errmsg (KEEL_ERRMSG_LEN) naming the
 * stage, the partition and, for file sources, the file and byte offset of
 * the record being processed.
 */
#ifndef KEEL_DATAFLOW_H
#define KEEL_DATAFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_df_ctx;
struct keel_df;

/* One element, valid only during the callback it is handed to. */
struct keel_df_rec {
	const void *key;
	size_t klen;
	const void *val;
	size_t vlen;
};

/* Where a callback sends elements: the next transformation of its stage,
 * or the stage's end (a shuffle table, a persisted partition, an action). */
struct keel_df_emit;
/* Copies the pair onward. 0, or a negative code after which the task fails
 * (a key over 64 KiB, a value over 16 MiB, a reduce_by_key value whose size
 * is not value_size, out of memory or disk). */
int keel_df_emit(struct keel_df_emit *e, const void *key, size_t klen, const void *val,
		 size_t vlen);
/* Fails the task from inside a callback (bad input): the message is kept,
 * prefixed with where the task was; later emits are ignored. Returns code. */
int keel_df_fail(struct keel_df_emit *e, int code, const char *fmt, ...) KEEL_PRINTF(3, 4);

/* The values of one key (group_by_key). */
struct keel_df_values;
bool keel_df_values_next(struct keel_df_values *it, const void **val, size_t *vlen);

typedef void (*keel_df_flat_fn)(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out);
typedef bool (*keel_df_filter_fn)(void *arg, const struct keel_df_rec *r);
/* Folds val into acc in place; both are value_size bytes. Must be
 * associative and commutative (it runs in any order, on any shard). */
typedef void (*keel_df_combine_fn)(void *arg, void *acc, const void *val, size_t vsize);
typedef void (*keel_df_group_fn)(void *arg, const void *key, size_t klen,
				 struct keel_df_values *vals, struct keel_df_emit *out);
/* Called for every pair of a left and a right value with the same key. */
typedef void (*keel_df_join_fn)(void *arg, const void *key, size_t klen, const void *lval,
				size_t llen, const void *rval, size_t rlen, struct keel_df_emit *out);
/* map_partitions: begin once per partition (returns a per-partition
 * context, may be NULL), each per element, end after the last (and may
 * emit: a per-partition summary). */
struct keel_df_part_ops {
	void *(*begin)(void *arg, uint32_t partition);
	void (*each)(void *pctx, const struct keel_df_rec *r, struct keel_df_emit *out);
	void (*end)(void *pctx, struct keel_df_emit *out);
};

struct keel_df_stage_info {
	uint32_t stage;      /* 1, 2, ... in the order they ran */
	uint32_t tasks;      /* partitions */
	const char *ends_in; /* "shuffle", "persist", "action" */
	uint64_t records_in; /* elements read by the stage's sources */
	uint64_t ns;
};

struct keel_df_config {
	uint32_t shards;     /* worker shards; 0: one per online CPU */
	uint32_t partitions; /* default for sources and shuffles; 0: 2 x shards */
	uint64_t mem_budget; /* per shard per shuffle, bytes, before spilling; 0: 64 MiB */
	const char *spill_dir; /* 0: $TMPDIR or /tmp */
	/* Per shard, bytes of persisted partitions it may hold; 0: no limit.
	 * Past it the task fails naming the dataset's stage and partition
	 * (persisted partitions do not spill to disk yet). */
	uint64_t persist_budget;
	/* Called on the driver's thread after each stage (progress). */
	void (*on_stage)(void *arg, const struct keel_df_stage_info *st);
	void *stage_arg;
};

struct keel_df_stats {
	uint64_t stages, tasks;
	uint64_t records_in;     /* read by stage sources (ranges, files, shuffles, persisted) */
	uint64_t shuffled;       /* pairs written to shuffles, after combining */
	uint64_t spills, spill_bytes;
	uint64_t persisted_bytes; /* held now by persisted partitions */
};

/* A new context, or NULL with errmsg set. */
struct keel_df_ctx *keel_df_ctx_new(const struct keel_df_config *cfg, char *errmsg);
void keel_df_ctx_free(struct keel_df_ctx *ctx);
void keel_df_ctx_stats(const struct keel_df_ctx *ctx, struct keel_df_stats *st);
uint32_t keel_df_ctx_shards(const struct keel_df_ctx *ctx);

/* Constructors return NULL only when out of memory or given a NULL parent
 * (which is how an earlier failure propagates); keel_df_ctx_error says why. */
const char *keel_df_ctx_error(const struct keel_df_ctx *ctx);

/* [start, end) as elements with an empty key and the number as an 8-byte
 * native-endian u64 value, cut into `partitions` even ranges (0: default). */
struct keel_df *keel_df_range(struct keel_df_ctx *ctx, uint64_t start, uint64_t end,
			      uint32_t partitions);
/* The lines of files (and the files directly inside directories), without
 * '\n', empty key; one partition per split of about split_size bytes (0:
 * 32 MiB). Fails (NULL, errmsg) if an input cannot be listed or read. */
struct keel_df *keel_df_text(struct keel_df_ctx *ctx, const char *const *paths, size_t n,
			     uint64_t split_size, char *errmsg);

/* map must emit exactly one element per input (checked); flat_map any. */
struct keel_df *keel_df_map(struct keel_df *d, keel_df_flat_fn fn, void *arg);
struct keel_df *keel_df_flat_map(struct keel_df *d, keel_df_flat_fn fn, void *arg);
struct keel_df *keel_df_filter(struct keel_df *d, keel_df_filter_fn fn, void *arg);
struct keel_df *keel_df_map_partitions(struct keel_df *d, const struct keel_df_part_ops *ops,
				       void *arg);
/* Wide: partitions 0 means the context's default. The output is
 * hash-partitioned by key; within a partition, keys in byte order. */
struct keel_df *keel_df_reduce_by_key(struct keel_df *d, uint32_t value_size,
				      keel_df_combine_fn fn, void *arg, uint32_t partitions);
struct keel_df *keel_df_group_by_key(struct keel_df *d, keel_df_group_fn fn, void *arg,
				     uint32_t partitions);
/* Inner join of two datasets of the same context on their keys. */
struct keel_df *keel_df_join(struct keel_df *left, struct keel_df *right, keel_df_join_fn fn,
			     void *arg, uint32_t partitions);
/* One element per distinct (key, value). */
struct keel_df *keel_df_distinct(struct keel_df *d, uint32_t partitions);

/* Marks d to be kept in shard memory once computed (by the next action
 * that needs it); returns d. unpersist frees the partitions (the lineage
 * stays, so d can be computed again). */
struct keel_df *keel_df_persist(struct keel_df *d);
void keel_df_unpersist(struct keel_df *d);
uint32_t keel_df_partitions(const struct keel_df *d);

/* Actions. count: the number of elements. collect: fn is called for every
 * element on the caller's thread, partition by partition in order (order
 * within a partition: that of the stage; after a shuffle, keys in byte
 * order). A nonzero return from fn stops and is returned. */
int keel_df_count(struct keel_df *d, uint64_t *n, char *errmsg);
typedef int (*keel_df_collect_fn)(void *arg, uint32_t partition, const struct keel_df_rec *r);
int keel_df_collect(struct keel_df *d, keel_df_collect_fn fn, void *arg, char *errmsg);

/* ---- built-in jobs (compute/df_jobs.c) ---------------------------------- */

/* PageRank on a generated graph: vertex u (0 <= u < vertices) has
 * keel_df_pr_degree(seed, u, avg_degree) out-edges, edge j going to
 * keel_df_pr_edge(seed, vertices, u, j) (skewed towards low ids). Each
 * iteration: r'(v) = (1 - d) / N + d * sum over u->v of r(u) / outdeg(u),
 * from r = 1/N; d = damping. */
struct keel_df_pagerank {
	uint64_t vertices;
	uint32_t avg_degree; /* >= 1 */
	uint32_t iterations;
	uint64_t seed;
	double damping; /* 0: 0.85 */
	uint32_t partitions; /* 0: the context's default */
};
uint32_t keel_df_pr_degree(uint64_t seed, uint64_t u, uint32_t avg_degree);
uint64_t keel_df_pr_edge(uint64_t seed, uint64_t vertices, uint64_t u, uint32_t j);
/* Fills ranks[vertices]. */
int keel_df_pagerank_run(struct keel_df_ctx *ctx, const struct keel_df_pagerank *p,
			 double *ranks, char *errmsg);

/* Join + group-by over two CSV tables:
 *   orders.csv    o_orderkey,o_custkey,o_priority      (priority 1..5)
 *   lineitem.csv  l_orderkey,l_linenumber,l_quantity,l_price_cents
 * SELECT o_priority, count(*), sum(l_quantity), sum(l_quantity*l_price_cents)
 * FROM lineitem JOIN orders ON l_orderkey = o_orderkey
 * WHERE l_quantity <= max_quantity GROUP BY o_priority. */
#define KEEL_DF_PRIORITIES 5
struct keel_df_jg_row {
	uint64_t count, quantity, revenue;
};
/* Writes DIR/orders.csv and DIR/lineitem.csv (deterministic in seed);
 * some lineitems name orders that do not exist (the join drops them). */
int keel_df_jg_generate(const char *dir, uint64_t orders, uint64_t seed, char *errmsg);
int keel_df_jg_run(struct keel_df_ctx *ctx, const char *orders_csv, const char *lineitem_csv,
		   uint32_t max_quantity, uint64_t split_size,
		   struct keel_df_jg_row out[KEEL_DF_PRIORITIES], char *errmsg);

/* ---- jobs as shared objects ---------------------------------------------- */

/* Bumped when struct keel_df_job changes incompatibly; a loaded job whose
 * abi differs is refused. */
#define KEEL_DF_ABI 1
/* The symbol a job shared object exports: `const struct keel_df_job
 * keel_df_job = {...};` (examples/df_wordcount has one to copy). */
#define KEEL_DF_JOB_SYMBOL "keel_df_job"

/* A job is a driver: it builds datasets in ctx and runs actions. */
struct keel_df_job {
	uint32_t abi; /* KEEL_DF_ABI */
	const char *name;
	/* Required. arg is the job's argument (--arg, may be NULL); the job
	 * writes its result to out. 0, or a negative code with errmsg set. */
	int (*run)(struct keel_df_ctx *ctx, const char *arg, FILE *out, char *errmsg);
};

/* Owned by the caller from keel_df_job_open to keel_df_job_close. */
struct keel_df_jobref {
	const struct keel_df_job *job;
	void *dl;
};
/* Loads a job shared object. KEEL_EBADJOB with errmsg naming the path and
 * what is wrong: dlopen failed, no keel_df_job symbol, another ABI, no run. */
int keel_df_job_open(struct keel_df_jobref *ref, const char *path, char *errmsg);
void keel_df_job_close(struct keel_df_jobref *ref);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_DATAFLOW_H */
