/*
 * compute/mr_msg.c — encoders and decoders of the map-reduce messages
 * (layouts in compute/mr_msg.h). Pure functions: no I/O, no state; every
 * decoder is reached by tests/fuzz/fuzz_mr_msg.c.
 */
#include <errno.h>
#include <stdlib.h>

#include "compute/mr_msg.h"

const char *mr_msg_name(uint16_t type)
{
	static const char *const names[] = {
		"JOB", "READY", "TASKS", "TASK_DONE", "SEALED", "REDUCE",
		"FETCH", "DATA", "DATA_END", "PART_DONE", "FINISH", "ERROR",
	};
	if (type < MR_MSG_JOB || type > MR_MSG_ERROR)
		return "?";
	return names[type - MR_MSG_JOB];
}

/* ---- writing ---------------------------------------------------------- */

uint8_t *mr_wbuf_grow(struct mr_wbuf *w, size_t n)
{
	if (w->oom)
		return NULL;
	if (n > w->cap - w->len) {
		size_t nc = w->cap ? w->cap * 2 : 256;
		while (nc - w->len < n)
			nc *= 2;
		uint8_t *p = realloc(w->p, nc);
		if (!p) {
			w->oom = true;
			return NULL;
		}
		w->p = p;
		w->cap = nc;
	}
	uint8_t *at = w->p + w->len;
	w->len += n;
	return at;
}

void mr_wbuf_put(struct mr_wbuf *w, const void *d, size_t n)
{
	uint8_t *at = mr_wbuf_grow(w, n);
	if (at && n)
		memcpy(at, d, n);
}

void mr_wbuf_u32(struct mr_wbuf *w, uint32_t v)
{
	uint8_t b[4];
	keel_put_le32(b, v);
	mr_wbuf_put(w, b, 4);
}

void mr_wbuf_u64(struct mr_wbuf *w, uint64_t v)
{
	uint8_t b[8];
	keel_put_le64(b, v);
	mr_wbuf_put(w, b, 8);
}

void mr_wbuf_str(struct mr_wbuf *w, const char *s)
{
	size_t n = strlen(s);
	if (n > MR_MSG_MAX_STR) {
		/* Longer than any decoder takes: refuse here, not at the peer. */
		w->oom = true;
		return;
	}
	mr_wbuf_u32(w, (uint32_t)n);
	mr_wbuf_put(w, s, n);
}

void mr_wbuf_free(struct mr_wbuf *w)
{
	free(w->p);
	*w = (struct mr_wbuf){0};
}

static int wdone(struct mr_wbuf *w)
{
	return w->oom ? -ENOMEM : 0;
}

/* ---- reading ---------------------------------------------------------- */

struct rbuf {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};

static const uint8_t *r_take(struct rbuf *r, size_t n)
{
	if (r->bad || r->len - r->pos < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->p + r->pos;
	r->pos += n;
	return p;
}

static uint32_t r_u32(struct rbuf *r)
{
	const uint8_t *p = r_take(r, 4);
	return p ? keel_get_le32(p) : 0;
}

static uint64_t r_u64(struct rbuf *r)
{
	const uint8_t *p = r_take(r, 8);
	return p ? keel_get_le64(p) : 0;
}

static struct mr_str r_str(struct rbuf *r)
{
	uint32_t n = r_u32(r);
	if (n > MR_MSG_MAX_STR)
		r->bad = true;
	const uint8_t *p = r_take(r, n);
	if (!p || (n && memchr(p, 0, n))) {
		r->bad = true;
		return (struct mr_str){"", 0};
	}
	return (struct mr_str){(const char *)p, n};
}

/* A string copied into a malloc'd NUL-terminated buffer (NULL if bad). */
static char *r_strdup(struct rbuf *r)
{
	struct mr_str s = r_str(r);
	if (r->bad)
		return NULL;
	char *c = malloc((size_t)s.len + 1);
	if (!c) {
		r->bad = true;
		return NULL;
	}
	memcpy(c, s.p, s.len);
	c[s.len] = 0;
	return c;
}

/* The whole message was read, nothing more, nothing less. */
static bool r_end(const struct rbuf *r)
{
	return !r->bad && r->pos == r->len;
}

bool mr_str_eq(struct mr_str s, const char *c)
{
	return strlen(c) == s.len && memcmp(s.p, c, s.len) == 0;
}

/* ---- JOB ---------------------------------------------------------------- */

int mr_msg_job_encode(struct mr_wbuf *w, const struct mr_job_msg *m)
{
	mr_wbuf_u32(w, m->R);
	mr_wbuf_u64(w, m->budget);
	mr_wbuf_u64(w, m->split);
	mr_wbuf_u32(w, m->no_fsync ? 1 : 0);
	mr_wbuf_str(w, m->spec);
	mr_wbuf_str(w, m->arg);
	mr_wbuf_str(w, m->tmpdir);
	mr_wbuf_u32(w, m->n_inputs);
	for (uint32_t i = 0; i < m->n_inputs; i++)
		mr_wbuf_str(w, m->inputs[i]);
	return wdone(w);
}

void mr_job_msg_free(struct mr_job_msg *m)
{
	free(m->spec);
	free(m->arg);
	free(m->tmpdir);
	for (uint32_t i = 0; m->inputs && i < m->n_inputs; i++)
		free(m->inputs[i]);
	free(m->inputs);
	memset(m, 0, sizeof *m);
}

int mr_job_msg_decode(const void *d, size_t len, struct mr_job_msg *m)
{
	memset(m, 0, sizeof *m);
	struct rbuf r = {.p = d, .len = len};
	m->R = r_u32(&r);
	m->budget = r_u64(&r);
	m->split = r_u64(&r);
	m->no_fsync = r_u32(&r) != 0;
	m->spec = r_strdup(&r);
	m->arg = r_strdup(&r);
	m->tmpdir = r_strdup(&r);
	uint32_t ni = r_u32(&r);
	if (r.bad || ni > MR_MSG_MAX_INPUTS || m->R == 0 || m->R > MR_MSG_MAX_PARTS)
		goto bad;
	m->inputs = calloc(ni ? ni : 1, sizeof *m->inputs);
	if (!m->inputs)
		goto bad;
	m->n_inputs = ni;
	for (uint32_t i = 0; i < ni; i++)
		m->inputs[i] = r_strdup(&r);
	if (!r_end(&r))
		goto bad;
	return 0;
bad:
	mr_job_msg_free(m);
	return KEEL_EPROTO;
}

/* ---- READY -------------------------------------------------------------- */

int mr_msg_ready_encode(struct mr_wbuf *w, uint32_t splits, const char *data_dir)
{
	mr_wbuf_u32(w, splits);
	mr_wbuf_str(w, data_dir);
	return wdone(w);
}

int mr_msg_ready_decode(const void *d, size_t len, struct mr_ready_msg *m)
{
	struct rbuf r = {.p = d, .len = len};
	m->splits = r_u32(&r);
	m->data_dir = r_str(&r);
	if (!r_end(&r)) {
		*m = (struct mr_ready_msg){.data_dir = {"", 0}};
		return KEEL_EPROTO;
	}
	return 0;
}

/* ---- TASKS -------------------------------------------------------------- */

int mr_msg_tasks_encode(struct mr_wbuf *w, uint32_t epoch, const uint32_t *tasks, uint32_t n)
{
	mr_wbuf_u32(w, epoch);
	mr_wbuf_u32(w, n);
	for (uint32_t i = 0; i < n; i++)
		mr_wbuf_u32(w, tasks[i]);
	return wdone(w);
}

int mr_msg_tasks_decode(const void *d, size_t len, struct mr_tasks_msg *m)
{
	struct rbuf r = {.p = d, .len = len};
	m->epoch = r_u32(&r);
	m->n = r_u32(&r);
	m->raw = r.bad || m->n > (len - r.pos) / 4 ? NULL : r_take(&r, (size_t)m->n * 4);
	if (!m->raw || !r_end(&r)) {
		*m = (struct mr_tasks_msg){0};
		return KEEL_EPROTO;
	}
	return 0;
}

/* ---- REDUCE ------------------------------------------------------------- */

int mr_msg_reduce_encode(struct mr_wbuf *w, uint32_t epoch, uint32_t p, const uint32_t *nodes,
			 uint32_t n)
{
	mr_wbuf_u32(w, epoch);
	mr_wbuf_u32(w, p);
	mr_wbuf_u32(w, n);
	for (uint32_t i = 0; i < n; i++)
		mr_wbuf_u32(w, nodes[i]);
	return wdone(w);
}

int mr_msg_reduce_decode(const void *d, size_t len, struct mr_reduce_msg *m)
{
	struct rbuf r = {.p = d, .len = len};
	m->epoch = r_u32(&r);
	m->p = r_u32(&r);
	m->n = r_u32(&r);
	if (m->n > MR_MAXN)
		r.bad = true;
	for (uint32_t i = 0; !r.bad && i < m->n; i++)
		m->nodes[i] = r_u32(&r);
	if (!r_end(&r)) {
		m->epoch = m->p = m->n = 0;
		return KEEL_EPROTO;
	}
	return 0;
}

/* ---- PART_DONE ---------------------------------------------------------- */

int mr_msg_part_done_encode(struct mr_wbuf *w, uint32_t epoch, uint32_t p, const char *path)
{
	mr_wbuf_u32(w, epoch);
	mr_wbuf_u32(w, p);
	mr_wbuf_str(w, path);
	return wdone(w);
}

int mr_msg_part_done_decode(const void *d, size_t len, struct mr_part_done_msg *m)
{
	struct rbuf r = {.p = d, .len = len};
	m->epoch = r_u32(&r);
	m->p = r_u32(&r);
	m->path = r_str(&r);
	if (!r_end(&r)) {
		*m = (struct mr_part_done_msg){.path = {"", 0}};
		return KEEL_EPROTO;
	}
	return 0;
}

/* ---- ERROR -------------------------------------------------------------- */

int mr_msg_error_encode(struct mr_wbuf *w, const char *msg)
{
	mr_wbuf_str(w, msg);
	return wdone(w);
}

int mr_msg_error_decode(const void *d, size_t len, struct mr_str *msg)
{
	struct rbuf r = {.p = d, .len = len};
	*msg = r_str(&r);
	if (!r_end(&r)) {
		*msg = (struct mr_str){"", 0};
		return KEEL_EPROTO;
	}
	return 0;
}

/* ---- fixed-size --------------------------------------------------------- */

int mr_msg_u32_decode(const void *d, size_t len, uint32_t *v)
{
	*v = 0;
	if (len != 4)
		return KEEL_EPROTO;
	*v = keel_get_le32(d);
	return 0;
}

int mr_msg_ep_decode(const void *d, size_t len, uint32_t *epoch, uint32_t *p)
{
	*epoch = *p = 0;
	if (len != 8)
		return KEEL_EPROTO;
	*epoch = keel_get_le32(d);
	*p = keel_get_le32((const uint8_t *)d + 4);
	return 0;
}

int mr_msg_data_decode(const void *d, size_t len, uint32_t *epoch, uint32_t *p,
		       const uint8_t **pairs, size_t *pairs_len)
{
	*epoch = *p = 0;
	*pairs = NULL;
	*pairs_len = 0;
	if (len < MR_MSG_DATA_HDR)
		return KEEL_EPROTO;
	*epoch = keel_get_le32(d);
	*p = keel_get_le32((const uint8_t *)d + 4);
	*pairs = (const uint8_t *)d + MR_MSG_DATA_HDR;
	*pairs_len = len - MR_MSG_DATA_HDR;
	return 0;
}
