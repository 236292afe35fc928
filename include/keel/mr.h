/*
 * keel/mr.h — the partitioned map-reduce engine.
 *
 * A job is a struct of callbacks (struct keel_mr_job): map(record, emit),
 * an optional combine, reduce(key, values, out) and an optional
 * partition(key, R). Jobs are either built in (wordcount, grep, index, sort)
 * or loaded from a shared object that exports the data symbol
 * KEEL_MR_JOB_SYMBOL ("keel_mr_job"); examples/ has one to copy.
 *
 * How a job runs (compute/mr_cluster.c): one node coordinates, every node
 * (that one included) runs the same node agent and shard executor on a keel
 * runtime; a single process is a cluster of one.
 *   1. the input (files and directories) is cut into splits by byte range,
 *      on record boundaries (a line belongs to the split holding its first
 *      byte; fixed records never straddle a split); each split is a map task;
 *   2. map tasks run on the shards of the nodes; each shard folds what map
 *      emits into its own combining hash table, tagged with the reduce
 *      partition; beyond the shard's memory budget the table is sorted and
 *      spilled to disk as a run through io_uring;
 *   3. the R partitions are spread over the nodes and their shards; the
 *      shard reducing a partition k-way merges that partition's sorted
 *      segments from every shard (memory and spilled runs, and what the
 *      other nodes stream to it), calls reduce once per key, in key order,
 *      and writes one output file per partition;
 *   4. everything is written under a temporary directory which is renamed to
 *      the output directory only when every partition is complete, so a
 *      failed job leaves nothing that looks like a result.
 *
 * Ownership: the engine never keeps pointers handed to a callback after the
 * callback returns; callbacks must copy what they want to keep. Strings and
 * buffers in a config are borrowed for the duration of keel_mr_run().
 * Threading: map, combine, reduce and partition run concurrently on several
 * shards with the same job state; after setup() the state must be read-only
 * (or synchronised by the job).
 */
#ifndef KEEL_MR_H
#define KEEL_MR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when struct keel_mr_job changes incompatibly; a loaded job whose
 * abi field differs is refused. */
#define KEEL_MR_ABI 1
/* The symbol a job shared object exports: `const struct keel_mr_job
 * keel_mr_job = {...};` */
#define KEEL_MR_JOB_SYMBOL "keel_mr_job"

/* Largest key and value the engine carries (a longer one fails the job). */
#define KEEL_MR_MAX_KEY (64u * 1024)
#define KEEL_MR_MAX_VALUE (16u * 1024 * 1024)

enum keel_mr_format {
	KEEL_MR_LINES = 0, /* text lines; the record excludes the '\n' */
	KEEL_MR_FIXED = 1, /* fixed-size binary records of record_size bytes */
};

/* One input record, valid only during the map call. */
struct keel_mr_record {
	const void *data;
	size_t len;
	const char *file;    /* path of the file it came from */
	uint64_t offset;     /* byte offset of the record in that file */
	uint32_t file_index; /* index of the file in the job's sorted input list */
};

/* The sink map emits into: the calling shard's combining table. */
struct keel_mr_emit;
/* Copies key and value into the engine. Keys compare as bytes (memcmp, a
 * prefix sorts first). Returns 0, or a negative code after which the task
 * fails (key or value too long, out of disk for a spill). */
int keel_mr_emit(struct keel_mr_emit *e, const void *key, size_t klen,
		 const void *val, size_t vlen);

/* The values of one key, handed to reduce. */
struct keel_mr_values;
/* Next value; false when there are no more. *val stays valid until the next
 * call. */
bool keel_mr_values_next(struct keel_mr_values *it, const void **val, size_t *vlen);

/* The output writer of one partition (buffered, written with the partition's
 * file). Returns 0 or a negative code (the job then fails). */
struct keel_mr_out;
int keel_mr_out_write(struct keel_mr_out *o, const void *buf, size_t len);
int keel_mr_out_printf(struct keel_mr_out *o, const char *fmt, ...) KEEL_PRINTF(2, 3);
/* Writes "key<TAB>value\n" with value printed as a decimal u64. */
int keel_mr_out_kv_u64(struct keel_mr_out *o, const void *key, size_t klen, uint64_t v);

struct keel_mr_job {
	uint32_t abi; /* KEEL_MR_ABI */
	const char *name;
	enum keel_mr_format format;
	uint32_t record_size; /* KEEL_MR_FIXED: bytes per record (> 0) */
	/* With combine: every value this job emits has exactly value_size
	 * bytes, and combine folds val into acc in place (both value_size). */
	uint32_t value_size;
	/* > 0: before map, the engine reads about this many records spread
	 * evenly over the input and hands them to setup() (a range partitioner
	 * picks its split points from them). */
	uint32_t sample;

	/* Optional: builds the job's state from its argument (--arg, e.g. the
	 * grep pattern). Returns NULL with errmsg (KEEL_ERRMSG_LEN) set on bad
	 * arguments. Without create the state is NULL. */
	void *(*create)(const char *arg, char *errmsg);
	void (*destroy)(void *state);
	/* Optional: called once with the samples and the partition count R,
	 * before any map. Returns 0 or a negative code with errmsg set. */
	int (*setup)(void *state, const struct keel_mr_record *samples, size_t n,
		     uint32_t partitions, char *errmsg);

	/* Required. */
	void (*map)(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit);
	/* Optional, see value_size. */
	void (*combine)(void *state, void *acc, const void *val, size_t vsize);
	/* Required: called once per distinct key of a partition, in key order. */
	void (*reduce)(void *state, const void *key, size_t klen,
		       struct keel_mr_values *vals, struct keel_mr_out *out);
	/* Optional: partition index in [0, partitions); default: a hash of
	 * the key modulo partitions. */
	uint32_t (*partition)(void *state, const void *key, size_t klen, uint32_t partitions);
};

/* A job ready to run: the callbacks, their state, and the shared object it
 * came from (if any). Owned by the caller from keel_mr_job_open() to
 * keel_mr_job_close(). */
struct keel_mr_jobref {
	const struct keel_mr_job *job;
	void *state;
	void *dl;
	char spec[256]; /* what was opened: a built-in name or a path */
	char arg[256];
};

/* The built-in jobs, NULL-terminated. */
extern const struct keel_mr_job *const keel_mr_builtin_jobs[];
const struct keel_mr_job *keel_mr_builtin_find(const char *name);

/* Opens a job by built-in name, or by path to a shared object when spec
 * contains a '/' or ends in ".so", and creates its state from arg (may be
 * NULL). Errors: KEEL_ENOTFOUND (no such built-in), KEEL_EBADJOB (dlopen
 * failed, symbol missing, wrong ABI, missing map/reduce, bad argument). */
int keel_mr_job_open(struct keel_mr_jobref *ref, const char *spec, const char *arg,
		     char *errmsg);
void keel_mr_job_close(struct keel_mr_jobref *ref);
/* Checks a job struct for what the engine needs; 0 or KEEL_EBADJOB. */
int keel_mr_job_validate(const struct keel_mr_job *job, char *errmsg);

/* What job code the calling thread is in, for a crash report: a signal
 * handler (SIGSEGV in a job's map) calls it to name the task that crashed.
 * Returns KEEL_MR_IN_NONE, or KEEL_MR_IN_MAP with *index the map task, or
 * KEEL_MR_IN_REDUCE with *index the partition. Async-signal-safe: it reads
 * two thread-local words the shard sets around each call into the job. */
enum { KEEL_MR_IN_NONE = 0, KEEL_MR_IN_MAP = 1, KEEL_MR_IN_REDUCE = 2 };
int keel_mr_running(uint32_t *index);

/* Default partitioner and the hash it uses (stable across processes). */
uint64_t keel_mr_hash(const void *key, size_t len);
uint32_t keel_mr_partition_default(const void *key, size_t klen, uint32_t partitions);

/* Progress, read while a job runs (every field only grows, except that a
 * node's death takes its finished map tasks back). */
struct keel_mr_progress {
	uint64_t map_tasks_total;
	uint64_t map_tasks_done;
	uint64_t reduce_tasks_total;
	uint64_t reduce_tasks_done;
	uint64_t input_bytes_total;
	uint64_t input_bytes_done;
	uint64_t elapsed_ns;
};

/* A step of a running job, as the coordinator sees it: for tools and tests
 * that act on a job's progress (`keel mr run --progress-fd`;
 * tests/integration/mr_cluster.sh kills a worker at a chosen step). */
enum keel_mr_event_kind {
	KEEL_MR_EV_START = 0,  /* the job went out to every node */
	KEEL_MR_EV_MAP_DONE,   /* `node` finished map task `task` */
	KEEL_MR_EV_NODE_LOST,  /* `node` is gone: its map tasks run again, in `epoch` */
	KEEL_MR_EV_REDUCE,     /* every map output is sealed: the reduce of `epoch` starts */
	KEEL_MR_EV_PART_DONE,  /* `partition`, reduced on `node`, is committed */
	KEEL_MR_EV_END,        /* the job is over: error 0, or why not (errmsg) */
};
struct keel_mr_event {
	enum keel_mr_event_kind kind;
	uint32_t node;       /* MAP_DONE, NODE_LOST, PART_DONE */
	uint32_t task;       /* MAP_DONE */
	uint32_t node_tasks; /* MAP_DONE: map tasks this node has finished so far */
	uint32_t partition;  /* PART_DONE */
	uint32_t epoch;      /* the coordinator's epoch (1 + node failures) */
	uint32_t nodes;      /* nodes alive */
	uint64_t map_tasks_done, map_tasks_total;
	uint64_t reduce_tasks_done, reduce_tasks_total;
	int error;           /* END */
	const char *errmsg;  /* END with an error; valid during the call */
};

struct keel_mr_stats {
	uint64_t map_tasks;
	uint64_t reduce_tasks;
	uint64_t input_files;
	uint64_t input_bytes;
	uint64_t input_records;
	uint64_t emitted;      /* pairs map emitted */
	uint64_t shuffled;     /* pairs after combining, handed to reducers */
	uint64_t spills;       /* sorted runs written to disk */
	uint64_t spill_bytes;
	uint64_t reduce_keys;  /* distinct keys reduced */
	uint64_t output_bytes;
	uint64_t map_ns, reduce_ns, total_ns;
	uint32_t shards;     /* per node */
	uint32_t partitions;
	uint32_t nodes;      /* 1, or the cluster's size */
	uint32_t epochs;     /* 1 + the number of node failures recovered from */
	uint64_t local_tasks; /* across nodes: map tasks run on a node holding their file */
};

struct keel_mr_config {
	struct keel_mr_jobref *job;
	const char *const *inputs; /* files and/or directories (not recursive) */
	size_t n_inputs;
	/* Must not exist, or be an empty directory. Holds part-NNNNN files
	 * and _SUCCESS when the job completes. */
	const char *output;
	uint32_t shards;      /* 0: one per online CPU */
	uint32_t partitions;  /* R; 0: the number of shards */
	uint64_t mem_budget;  /* per shard, bytes; 0: 256 MiB */
	uint64_t split_size;  /* bytes per map task; 0: 32 MiB */
	const char *spill_dir; /* 0: <output>.keel-tmp.<pid>/spill */
	/* Skip the fsync of each partition file before the commit rename
	 * (faster; a crash may then leave a committed but torn result). */
	bool no_fsync;
	/* Called about every progress_interval_ms from a monitor thread while
	 * the job runs, and once at the end. */
	void (*progress)(void *arg, const struct keel_mr_progress *p);
	void *progress_arg;
	uint32_t progress_interval_ms; /* 0: 200 */
	/* Called at each step of the job (struct keel_mr_event), in order, on
	 * the coordinator's shard thread, which waits for it: it must return
	 * quickly (write a line, set a flag). */
	void (*on_event)(void *arg, const struct keel_mr_event *ev);
	void *event_arg;
};

/* Runs the job to completion on this node (a cluster of one: the same
 * coordinator, agent and executor as keel_mr_cluster_run, no network).
 * Returns 0 with stats filled, or a negative code with errmsg
 * (KEEL_ERRMSG_LEN) saying what failed; on failure nothing is left at
 * cfg->output (and no temporary files; an empty directory given as the
 * output stays). */
int keel_mr_run(const struct keel_mr_config *cfg, struct keel_mr_stats *stats, char *errmsg);

/* ---- across nodes ----
 * Each node runs from a node configuration file (include/keel/config.h:
 * id, listen address, shards, transport, secret, peers). One node runs
 * keel_mr_cluster_run: it coordinates (and works); the others run
 * keel_mr_worker_run until the job ends. All nodes must see the input and
 * the output's parent directory at the same paths (the local cluster shares
 * one filesystem). A node whose configuration says `[mr] data = DIR` holds
 * the files under DIR: their map tasks go to it while it lives (else round
 * robin). cfg->shards is ignored (the node configuration says);
 * cfg->partitions 0 means shards x nodes. Same failure contract as
 * keel_mr_run; a worker that dies mid-job has its map tasks run again on
 * the others and the answer stays exact. With more than one node, stats
 * count map tasks, partitions, bytes in and out and epochs, not records,
 * pairs, spills or keys (those are counted where they happen). */
int keel_mr_cluster_run(const struct keel_mr_config *cfg, const char *node_config,
			struct keel_mr_stats *stats, char *errmsg);
/* Serves one job as a worker; 0 once the coordinator says it finished. */
int keel_mr_worker_run(const char *node_config, char *errmsg);

/* Deterministic input generators (tests, benchmark, demo). Both write to a
 * temporary name and rename, so an interrupted run leaves no partial file
 * under path. */
/* About `bytes` of text lines of words drawn from a Zipf(1) distribution
 * over a vocabulary of `vocab` words; the same (bytes, seed, vocab) always
 * gives the same file. */
int keel_mr_gen_words(const char *path, uint64_t bytes, uint64_t seed, uint32_t vocab,
		      char *errmsg);
/* `records` 100-byte gensort-style ASCII records (10-byte printable key,
 * record number, filler, "\r\n"). distinct_keys > 0 draws keys from only
 * that many values (skew). */
int keel_mr_gen_sort(const char *path, uint64_t records, uint64_t seed, uint32_t distinct_keys,
		     char *errmsg);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_MR_H */
