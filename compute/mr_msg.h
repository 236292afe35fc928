/*
 * compute/mr_msg.h — the messages map-reduce nodes exchange (compute/mr_msg.c):
 * their type numbers, their layout, an encoder and a decoder for each. Not a
 * public API.
 *
 * Every integer is little-endian (keel_put_le32/64), whatever the host; a
 * string is [u32 length][bytes], at most MR_MSG_MAX_STR bytes, no NUL inside.
 *
 *   JOB        u32 R, u64 budget, u64 split, u32 no_fsync, str spec, str arg,
 *              str tmpdir, u32 n, str input[n]          (C → every node)
 *   READY      u32 splits, str data_dir                  (node → C)
 *   TASKS      u32 epoch, u32 n, u32 task[n]             (C → node)
 *   TASK_DONE  u32 task                                  (node → C)
 *   SEALED     u32 epoch                                 (node → C)
 *   REDUCE     u32 epoch, u32 p, u32 n, u32 node[n]      (C → node)
 *   FETCH      u32 epoch, u32 p                          (node → node)
 *   DATA       u32 epoch, u32 p, then pairs              (node → node)
 *   DATA_END   u32 epoch, u32 p                          (node → node)
 *   PART_DONE  u32 epoch, u32 p, str path                (node → C)
 *   FINISH     (empty)                                   (C → every node)
 *   ERROR      str message                               (node → C)
 *
 * A pair in DATA is [u32 klen][u32 vlen][key][value] (klen <= KEEL_MR_MAX_KEY,
 * vlen <= KEEL_MR_MAX_VALUE), pairs of one partition in key order; the
 * reducer reads them with mr_source_buf (compute/mr_run.c).
 *
 * Decoders never trust the sender: anything short, long, over a limit or with
 * bytes left over is KEEL_EPROTO and the decoded struct is left empty. Views
 * (const pointers into the message) are valid as long as the message is.
 */
#ifndef KEEL_COMPUTE_MR_MSG_H
#define KEEL_COMPUTE_MR_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "keel/base.h"

/* The message types (the transport's frame type; the numbers are the wire
 * protocol). */
enum mr_msg_type {
	MR_MSG_JOB = 0x4d01,
	MR_MSG_READY,
	MR_MSG_TASKS,
	MR_MSG_TASK_DONE,
	MR_MSG_SEALED,
	MR_MSG_REDUCE,
	MR_MSG_FETCH,
	MR_MSG_DATA,
	MR_MSG_DATA_END,
	MR_MSG_PART_DONE,
	MR_MSG_FINISH,
	MR_MSG_ERROR,
};
/* Its name ("TASKS"), or "?" for a number that is none of them. */
const char *mr_msg_name(uint16_t type);

/* Node ids of a job are 1..MR_MAXN-1. */
#define MR_MAXN 64
#define MR_MSG_MAX_STR 65536u
#define MR_MSG_MAX_INPUTS 4096u
#define MR_MSG_MAX_PARTS (1u << 20)
/* Bytes before the pairs of a DATA message. */
#define MR_MSG_DATA_HDR 8u
/* Bytes of a pair's header in DATA. */
#define MR_MSG_PAIR_HDR 8u

/* A growing buffer messages are encoded into; oom set (and nothing more
 * appended) once an allocation failed. The caller frees p. */
struct mr_wbuf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};
/* Appends n bytes and returns where they go (NULL, oom set, on failure). */
uint8_t *mr_wbuf_grow(struct mr_wbuf *w, size_t n);
void mr_wbuf_put(struct mr_wbuf *w, const void *d, size_t n);
void mr_wbuf_u32(struct mr_wbuf *w, uint32_t v);
void mr_wbuf_u64(struct mr_wbuf *w, uint64_t v);
void mr_wbuf_str(struct mr_wbuf *w, const char *s);
void mr_wbuf_free(struct mr_wbuf *w);

/* A string inside a message (not NUL-terminated). */
struct mr_str {
	const char *p;
	uint32_t len;
};
/* Whether s equals the C string c. */
bool mr_str_eq(struct mr_str s, const char *c);

/* ---- JOB (decoded into copies: the node keeps them) ---- */
struct mr_job_msg {
	uint32_t R;
	uint64_t budget, split;
	bool no_fsync;
	char *spec, *arg, *tmpdir;
	char **inputs;
	uint32_t n_inputs;
};
/* 0 or -ENOMEM. */
int mr_msg_job_encode(struct mr_wbuf *w, const struct mr_job_msg *m);
int mr_job_msg_decode(const void *d, size_t len, struct mr_job_msg *m);
void mr_job_msg_free(struct mr_job_msg *m);

/* ---- READY ---- */
struct mr_ready_msg {
	uint32_t splits;
	struct mr_str data_dir;
};
int mr_msg_ready_encode(struct mr_wbuf *w, uint32_t splits, const char *data_dir);
int mr_msg_ready_decode(const void *d, size_t len, struct mr_ready_msg *m);

/* ---- TASKS: the tasks are read with mr_tasks_msg_at ---- */
struct mr_tasks_msg {
	uint32_t epoch, n;
	const uint8_t *raw;
};
int mr_msg_tasks_encode(struct mr_wbuf *w, uint32_t epoch, const uint32_t *tasks, uint32_t n);
int mr_msg_tasks_decode(const void *d, size_t len, struct mr_tasks_msg *m);
static inline uint32_t mr_tasks_msg_at(const struct mr_tasks_msg *m, uint32_t i)
{
	return keel_get_le32(m->raw + 4 * (size_t)i);
}

/* ---- REDUCE ---- */
struct mr_reduce_msg {
	uint32_t epoch, p, n;
	uint32_t nodes[MR_MAXN];
};
int mr_msg_reduce_encode(struct mr_wbuf *w, uint32_t epoch, uint32_t p, const uint32_t *nodes,
			 uint32_t n);
int mr_msg_reduce_decode(const void *d, size_t len, struct mr_reduce_msg *m);

/* ---- PART_DONE ---- */
struct mr_part_done_msg {
	uint32_t epoch, p;
	struct mr_str path;
};
int mr_msg_part_done_encode(struct mr_wbuf *w, uint32_t epoch, uint32_t p, const char *path);
int mr_msg_part_done_decode(const void *d, size_t len, struct mr_part_done_msg *m);

/* ---- ERROR ---- */
int mr_msg_error_encode(struct mr_wbuf *w, const char *msg);
int mr_msg_error_decode(const void *d, size_t len, struct mr_str *msg);

/* ---- the fixed-size ones: TASK_DONE, SEALED (one u32); FETCH, DATA_END
 * and DATA's header (two u32s: epoch, partition) ---- */
static inline void mr_msg_u32_encode(uint8_t out[4], uint32_t v)
{
	keel_put_le32(out, v);
}
int mr_msg_u32_decode(const void *d, size_t len, uint32_t *v);
static inline void mr_msg_ep_encode(uint8_t out[8], uint32_t epoch, uint32_t p)
{
	keel_put_le32(out, epoch);
	keel_put_le32(out + 4, p);
}
int mr_msg_ep_decode(const void *d, size_t len, uint32_t *epoch, uint32_t *p);
/* DATA: the header, then pairs (len >= MR_MSG_DATA_HDR); the pairs
 * themselves are checked by the reducer's mr_source_buf. */
int mr_msg_data_decode(const void *d, size_t len, uint32_t *epoch, uint32_t *p,
		       const uint8_t **pairs, size_t *pairs_len);
/* Writes one pair at o (MR_MSG_PAIR_HDR + kl + vl bytes). */
static inline void mr_msg_pair_put(uint8_t *o, const void *k, uint32_t kl, const void *v, uint32_t vl)
{
	keel_put_le32(o, kl);
	keel_put_le32(o + 4, vl);
	memcpy(o + 8, k, kl);
	memcpy(o + 8 + kl, v, vl);
}

#endif
