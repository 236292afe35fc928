/*
 * compute/mr_internal.h — pieces of the map-reduce engine shared between its
 * files: input planning (mr_input.c), the per-shard combining table and
 * sorted runs (mr_table.c), spills and the k-way merge (mr_run.c), output
 * files (mr_output.c). What runs a job on them: compute/mr_node.h. Not a
 * public API.
 *
 * Ownership: a struct mr_table, its arena and its spill files belong to the
 * one shard that fills them; once sealed they are read (never written) by
 * the shards reducing partitions and by streams to other nodes, and freed by
 * the owner when the job ends (a node's death may make any partition run
 * again until then).
 */
#ifndef KEEL_COMPUTE_MR_INTERNAL_H
#define KEEL_COMPUTE_MR_INTERNAL_H

#include "keel/runtime.h"
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "keel/mr.h"

/* ---- hashing ---------------------------------------------------------- */

static inline uint64_t mr_rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* A fast multiplicative hash for short keys; the same bytes give the same
 * hash in every process of a cluster (same architecture). */
static inline uint64_t mr_hash(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)len * 0xff51afd7ed558ccdull);
	while (len >= 8) {
		h = (h ^ mr_rd64(p)) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 29;
		p += 8;
		len -= 8;
	}
	/* The last 0-7 bytes without a byte loop: two overlapping loads for
	 * 4-7, first/middle/last byte for 1-3 (len is already in h). */
	uint64_t t = 0;
	if (len >= 4) {
		uint32_t a, b;
		memcpy(&a, p, 4);
		memcpy(&b, p + len - 4, 4);
		t = (uint64_t)a << 32 | b;
	} else if (len) {
		t = (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
	}
	h = (h ^ t) * 0x94d049bb133111ebull;
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return h;
}

/* The reduce partition of a key with hash h: bits 16..47 scaled to [0, R)
 * by a multiply (no division on the emit path); the index of the
 * combining table uses the low bits and its tag the high ones. */
static inline uint32_t mr_part_of(uint64_t h, uint32_t partitions)
{
	return (uint32_t)(((h >> 16) & 0xffffffffull) * partitions >> 32);
}

/* Byte order of keys: memcmp, a prefix first. */
static inline int mr_keycmp(const void *a, size_t al, const void *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c)
		return c;
	return (al > bl) - (al < bl);
}

/* ---- input planning (mr_input.c) -------------------------------------- */

struct mr_file {
	char *path;
	uint64_t size;
};

struct mr_split {
	uint32_t file;
	uint64_t start, end; /* byte range; records starting in it belong to it */
};

struct mr_plan {
	struct mr_file *files;
	size_t n_files;
	struct mr_split *splits;
	size_t n_splits;
	uint64_t total_bytes;
};

/* Lists the inputs (files, and the regular files directly inside
 * directories, skipping names starting with '.' or '_'), sorted by path,
 * checks each is readable and, for fixed records, a whole number of records;
 * then cuts them into splits of about split_size bytes. */
int mr_plan_build(struct mr_plan *plan, const char *const *inputs, size_t n_inputs,
		  const struct keel_mr_job *job, uint64_t split_size, char *errmsg);
void mr_plan_free(struct mr_plan *plan);

/* Reads about n records spread over the input (copies, freed with
 * mr_samples_free). */
int mr_plan_sample(const struct mr_plan *plan, const struct keel_mr_job *job, size_t n,
		   struct keel_mr_record **out, size_t *n_out, char *errmsg);
void mr_samples_free(struct keel_mr_record *s, size_t n);

/* A split being read: incremental, so a shard can read it through its
 * reactor one chunk per completion. next_read says where the next read
 * goes (false: the split is finished); feed hands over how many bytes
 * arrived there (0 = end of file) and runs fn over every complete record. */
typedef int (*mr_record_fn)(void *arg, const struct keel_mr_record *rec);
struct mr_scan {
	const struct mr_plan *plan;
	const struct mr_split *sp;
	const struct keel_mr_job *job;
	int fd;
	uint8_t **bufp;
	size_t *capp;
	size_t len, pos;
	uint64_t base, reported;
	bool skipping, eof, done;
	struct keel_mr_record rec;
};
int mr_scan_open(struct mr_scan *sc, const struct mr_plan *plan, const struct mr_split *sp,
		 const struct keel_mr_job *job, uint8_t **bufp, size_t *capp, char *errmsg);
bool mr_scan_next_read(struct mr_scan *sc, void **dst, size_t *len, uint64_t *off);
int mr_scan_feed(struct mr_scan *sc, size_t got, mr_record_fn fn, void *arg,
		 uint64_t *bytes_done, char *errmsg);
/* The completion of an asynchronous read issued at next_read's place: res
 * is the reactor's result. A read error gets a message naming the file; a
 * short read of fixed-size records is finished synchronously (they want
 * whole chunks); then feed runs. The caller retries -EINTR/-EAGAIN itself,
 * before calling this. */
int mr_scan_complete(struct mr_scan *sc, int32_t res, mr_record_fn fn, void *arg,
		     uint64_t *bytes_done, char *errmsg);
void mr_scan_close(struct mr_scan *sc);

/* ---- combining table and sorted runs (mr_table.c, mr_run.c) ----------- */

/* A pair in a table's arena, 8-byte aligned. */
struct mr_rec {
	uint32_t part;
	uint32_t klen;
	uint32_t vlen;
	uint32_t hash32;
	uint8_t data[]; /* key, then value */
};

static inline size_t mr_rec_size(size_t klen, size_t vlen)
{
	return (sizeof(struct mr_rec) + klen + vlen + 7) & ~(size_t)7;
}

/* A sorted view of a table: index entries grouped by partition. */
struct mr_sorted_ent {
	uint64_t prefix; /* first 8 key bytes, big-endian, zero padded */
	const struct mr_rec *rec;
};

/* A spilled run: one file, partitions contiguous, each a sequence of
 * [u32 klen][u32 vlen][key][value] in key order. */
struct mr_spill {
	char *path;
	uint64_t *part_off; /* partitions + 1 offsets */
	uint64_t bytes;
};

/* A pair emitted but not yet folded into the table (see mr_table.c:
 * "pipelined combining"). Keys and values are copied: map's buffers are
 * only valid during the emit. */
#define MR_PEND_DEPTH 16
#define MR_PEND_KEY 48
#define MR_PEND_VAL 16
struct mr_pend {
	uint64_t h;
	uint32_t part;
	uint16_t klen, vlen;
	uint8_t key[MR_PEND_KEY];
	uint8_t val[MR_PEND_VAL];
};

struct mr_table {
	const struct keel_mr_job *job;
	void *state;
	uint32_t partitions;
	bool combine;
	uint8_t *arena;
	size_t arena_len, arena_cap, arena_max;
	struct { uint32_t tag, off8; } *slots; /* off8: arena offset / 8 + 1 */
	size_t nslots, nitems;
	size_t slots_cap_bytes;
	/* spills */
	struct mr_spill *spills;
	size_t n_spills;
	const char *spill_dir;
	int shard;
	unsigned gen; /* which of the shard's tables (sealed each time its node's task queue ran dry) */
	struct keel_fileq *q; /* spills; NULL where io_uring is refused: pwrite */
	uint8_t *wbuf[2];
	/* final in-memory run after the map phase */
	struct mr_sorted_ent *sorted;
	size_t *part_start; /* partitions + 1 */
	/* counters */
	uint64_t emitted, spilled_pairs, spill_bytes, shuffled;
	char errmsg[KEEL_ERRMSG_LEN];
	int err;
	/* pipelined combining: a ring of pairs waiting for their slot */
	struct mr_pend pend[MR_PEND_DEPTH];
	unsigned pend_head, pend_n;
};

/* What map emits into: the calling shard's current table. */
struct keel_mr_emit {
	struct mr_table *t;
};

int mr_table_init(struct mr_table *t, const struct keel_mr_job *job, void *state,
		  uint32_t partitions, uint64_t budget, const char *spill_dir, int shard,
		  char *errmsg);
void mr_table_free(struct mr_table *t);
int mr_table_add(struct mr_table *t, const void *key, size_t klen, const void *val,
		 size_t vlen);
/* Folds the pairs still in the pipeline into the table. finish and spill
 * do it themselves; anything else that reads the table must call it. */
int mr_table_drain(struct mr_table *t);
/* Sorts the arena into t->sorted / t->part_start (the in-memory run). */
int mr_table_finish(struct mr_table *t);
/* Sorts and writes the arena to a new spill file, then empties it. */
int mr_table_spill(struct mr_table *t);

/* Builds the sorted index of the arena (entries allocated with malloc). */
int mr_table_sort(struct mr_table *t, struct mr_sorted_ent **ents, size_t **part_start);

/* A source of one partition's sorted pairs for the merge. */
struct mr_source {
	int kind; /* 0 memory, 1 file, 2 serialized pairs in memory */
	/* serialized: [u32 klen][u32 vlen][key][value]... */
	const uint8_t *sbuf;
	size_t slen, spos;
	/* memory */
	const struct mr_sorted_ent *ents;
	size_t i, n;
	/* file */
	int fd;
	uint64_t off, end;
	uint8_t *buf;
	size_t buf_cap, buf_len, buf_pos;
	struct keel_fileq *q; /* NULL: pread */
	/* current pair */
	const uint8_t *key, *val;
	uint32_t klen, vlen;
	bool done;
};

/* Merges sources and calls reduce once per key. */
struct mr_merge_stats {
	uint64_t keys, pairs;
};
/* The same in steps, so a shard can reduce a partition a batch of keys
 * per loop iteration: step returns 1 while keys remain, 0 when done, or a
 * negative code. */
struct mr_merge;
int mr_merge_begin(struct mr_merge **m, struct mr_source *src, size_t n,
		   const struct keel_mr_job *job, void *state, struct keel_mr_out *out,
		   char *errmsg);
int mr_merge_step(struct mr_merge *m, size_t max_keys, struct mr_merge_stats *st);
void mr_merge_end(struct mr_merge *m);
/* Raw merge without reduce (a node streaming a partition to another):
 * peek at the smallest pair (valid until pop), pop it. */
bool mr_merge_peek(struct mr_merge *m, const uint8_t **k, uint32_t *kl, const uint8_t **v,
		   uint32_t *vl);
int mr_merge_pop(struct mr_merge *m);
int mr_source_buf(struct mr_source *s, const uint8_t *buf, size_t len);
int mr_source_mem(struct mr_source *s, const struct mr_sorted_ent *ents, size_t n);
int mr_source_file(struct mr_source *s, const char *path, uint64_t off, uint64_t end,
		   struct keel_fileq *q, char *errmsg);
void mr_source_close(struct mr_source *s);

/* ---- output (mr_output.c) --------------------------------------------- */

struct keel_mr_out {
	int fd;
	uint8_t *buf;
	size_t len, cap;
	uint64_t bytes;
	int err;
	bool no_fsync;
	char *path;
};

int mr_out_open(struct keel_mr_out *o, const char *path, char *errmsg);
/* Flushes, fsyncs and closes; returns the first error seen. */
int mr_out_close(struct keel_mr_out *o, char *errmsg);
void mr_out_abort(struct keel_mr_out *o);

/* Removes a directory tree (the job's temporary directory). */
void mr_rmtree(const char *path);

#endif
