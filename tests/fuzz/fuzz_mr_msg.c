/* Fuzz target: what one map-reduce node decodes from another
 * (compute/mr_msg.h) — every message decoder, and the stream of serialized
 * pairs a node sends for a partition (merged as a reducer would). The first
 * byte picks: odd → JOB; even → (byte >> 1) % 8: 0 pairs, 1 READY, 2 TASKS,
 * 3 REDUCE, 4 PART_DONE, 5 ERROR, 6 DATA, 7 the fixed-size ones. A decoded
 * message is encoded again and must decode to the same thing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compute/mr_internal.h"
#include "compute/mr_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
	if (!ok)
		abort();
}

static void pairs(const uint8_t *d, size_t n)
{
	/* Two sources from the same bytes, merged without reduce. */
	struct mr_source src[2];
	size_t half = n / 2;
	char err[KEEL_ERRMSG_LEN];
	if (mr_source_buf(&src[0], d, half) || mr_source_buf(&src[1], d + half, n - half))
		return;
	struct mr_merge *m;
	if (mr_merge_begin(&m, src, 2, NULL, NULL, NULL, err))
		return;
	const uint8_t *k, *v;
	uint32_t kl, vl;
	uint64_t sum = 0;
	while (mr_merge_peek(m, &k, &kl, &v, &vl)) {
		if (kl)
			sum += k[kl - 1];
		if (vl)
			sum += v[vl - 1];
		if (mr_merge_pop(m))
			break;
	}
	mr_merge_end(m);
	(void)sum;
}

static void job(const uint8_t *d, size_t n)
{
	struct mr_job_msg m, m2;
	if (mr_job_msg_decode(d, n, &m))
		return;
	for (uint32_t i = 0; i < m.n_inputs; i++)
		check(m.inputs[i] != NULL);
	/* Encoded again, it decodes to the same job (no_fsync is a flag:
	 * any non-zero word decodes as true). */
	struct mr_wbuf w = {0};
	check(mr_msg_job_encode(&w, &m) == 0);
	check(mr_job_msg_decode(w.p, w.len, &m2) == 0);
	check(m2.R == m.R && m2.budget == m.budget && m2.split == m.split &&
	      m2.no_fsync == m.no_fsync && !strcmp(m2.spec, m.spec) && !strcmp(m2.arg, m.arg) &&
	      !strcmp(m2.tmpdir, m.tmpdir) && m2.n_inputs == m.n_inputs);
	for (uint32_t i = 0; i < m.n_inputs; i++)
		check(!strcmp(m.inputs[i], m2.inputs[i]));
	mr_job_msg_free(&m2);
	mr_wbuf_free(&w);
	mr_job_msg_free(&m);
}

/* A string from a message, NUL-terminated, for re-encoding. */
static char *cstr(struct mr_str s)
{
	char *c = malloc((size_t)s.len + 1);
	check(c != NULL);
	memcpy(c, s.p, s.len);
	c[s.len] = 0;
	check(strlen(c) == s.len);
	return c;
}

/* The re-encoding of a decoded message is the message itself. */
static void same(struct mr_wbuf *w, const uint8_t *d, size_t n)
{
	check(!w->oom && w->len == n && !memcmp(w->p, d, n));
	mr_wbuf_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
	struct mr_wbuf w = {0};
	if (data[0] & 1) {
		job(d, n);
		return 0;
	}
	switch ((data[0] >> 1) % 8) {
	case 0:
		pairs(d, n);
		break;
	case 1: {
		struct mr_ready_msg m;
		if (mr_msg_ready_decode(d, n, &m) == 0) {
			char *s = cstr(m.data_dir);
			mr_msg_ready_encode(&w, m.splits, s);
			same(&w, d, n);
			free(s);
		}
		break;
	}
	case 2: {
		struct mr_tasks_msg m;
		if (mr_msg_tasks_decode(d, n, &m) == 0) {
			uint32_t *t = malloc(((size_t)m.n + 1) * sizeof *t);
			check(t != NULL);
			for (uint32_t i = 0; i < m.n; i++)
				t[i] = mr_tasks_msg_at(&m, i);
			mr_msg_tasks_encode(&w, m.epoch, t, m.n);
			same(&w, d, n);
			free(t);
		}
		break;
	}
	case 3: {
		struct mr_reduce_msg m;
		if (mr_msg_reduce_decode(d, n, &m) == 0) {
			check(m.n <= MR_MAXN);
			mr_msg_reduce_encode(&w, m.epoch, m.p, m.nodes, m.n);
			same(&w, d, n);
		}
		break;
	}
	case 4: {
		struct mr_part_done_msg m;
		if (mr_msg_part_done_decode(d, n, &m) == 0) {
			char *s = cstr(m.path);
			mr_msg_part_done_encode(&w, m.epoch, m.p, s);
			same(&w, d, n);
			free(s);
		}
		break;
	}
	case 5: {
		struct mr_str m;
		if (mr_msg_error_decode(d, n, &m) == 0) {
			char *s = cstr(m);
			mr_msg_error_encode(&w, s);
			same(&w, d, n);
			free(s);
		}
		break;
	}
	case 6: {
		uint32_t e, p;
		const uint8_t *pr;
		size_t pl;
		if (mr_msg_data_decode(d, n, &e, &p, &pr, &pl) == 0) {
			check(pl == n - MR_MSG_DATA_HDR);
			pairs(pr, pl);
		}
		break;
	}
	default: {
		uint32_t v, e, p;
		if (mr_msg_u32_decode(d, n, &v) == 0)
			check(n == 4);
		if (mr_msg_ep_decode(d, n, &e, &p) == 0)
			check(n == 8);
		break;
	}
	}
	return 0;
}
