/*
 * compute/mr_run.c — reading sorted runs (a table's in-memory run, spill
 * files read through io_uring) and the k-way merge that calls reduce once
 * per key with all of that key's values across runs.
 *
 * The merge keeps a binary heap of sources ordered by current key. A value
 * handed to reduce stays valid until the next keel_mr_values_next(): the
 * source it came from is advanced lazily, on the next call, so a spill
 * buffer is never refilled under a pointer reduce still holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "compute/mr_internal.h"

#define RBUF (1u << 20)

static int src_advance(struct mr_source *s, char *errmsg);

int mr_source_mem(struct mr_source *s, const struct mr_sorted_ent *ents, size_t n)
{
	memset(s, 0, sizeof *s);
	s->kind = 0;
	s->fd = -1;
	s->ents = ents;
	s->n = n;
	return src_advance(s, NULL);
}

int mr_source_buf(struct mr_source *s, const uint8_t *buf, size_t len)
{
	memset(s, 0, sizeof *s);
	s->kind = 2;
	s->fd = -1;
	s->sbuf = buf;
	s->slen = len;
	return src_advance(s, NULL);
}

int mr_source_file(struct mr_source *s, const char *path, uint64_t off, uint64_t end,
		   struct keel_fileq *q, char *errmsg)
{
	memset(s, 0, sizeof *s);
	s->kind = 1;
	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->fd < 0)
		return keel_errmsg_set(errmsg, -errno, "mr: spill %s", path);
	s->off = off;
	s->end = end;
	s->q = q;
	s->buf_cap = RBUF;
	s->buf = malloc(s->buf_cap);
	if (!s->buf)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: merge buffer");
	return src_advance(s, errmsg);
}

void mr_source_close(struct mr_source *s)
{
	if (s->kind == 1) {
		if (s->fd >= 0)
			close(s->fd);
		free(s->buf);
	}
	memset(s, 0, sizeof *s);
	s->fd = -1;
}

static void fq_nop(struct keel_fileq_req *req) { (void)req; }

/* Reads more of the file behind the unread bytes, through the file queue
 * when there is one. */
static int src_refill(struct mr_source *s, size_t need)
{
	size_t rem = s->buf_len - s->buf_pos;
	if (s->buf_pos)
		memmove(s->buf, s->buf + s->buf_pos, rem);
	s->buf_pos = 0;
	s->buf_len = rem;
	if (need > s->buf_cap) {
		size_t nc = s->buf_cap;
		while (nc < need)
			nc *= 2;
		uint8_t *b = realloc(s->buf, nc);
		if (!b)
			return -ENOMEM;
		s->buf = b;
		s->buf_cap = nc;
	}
	while (s->buf_len < need) {
		size_t want = s->buf_cap - s->buf_len;
		if (want > s->end - s->off)
			want = (size_t)(s->end - s->off);
		if (want == 0)
			return KEEL_ECORRUPT; /* a pair runs past its partition */
		ssize_t got;
		if (s->q) {
			struct keel_fileq_req req = {.fd = s->fd, .op = KEEL_FILEQ_READ,
						     .buf = s->buf + s->buf_len, .len = (uint32_t)want,
						     .off = s->off, .done = fq_nop};
			int rc = keel_fileq_submit(s->q, &req);
			if (rc == -EAGAIN)
				return -EBUSY;
			if (rc < 0)
				return rc;
			while (keel_fileq_inflight(s->q)) {
				rc = keel_fileq_reap(s->q, 1);
				if (rc < 0)
					return rc;
			}
			got = req.res;
		} else {
			got = pread(s->fd, s->buf + s->buf_len, want, (off_t)s->off);
			if (got < 0)
				got = -errno;
		}
		if (got == -EINTR || got == -EAGAIN)
			continue;
		if (got < 0)
			return (int)got;
		if (got == 0)
			return KEEL_ECORRUPT; /* the spill file is shorter than its index */
		s->buf_len += (size_t)got;
		s->off += (uint64_t)got;
	}
	return 0;
}

static int src_advance(struct mr_source *s, char *errmsg)
{
	if (s->kind == 0) {
		if (s->i >= s->n) {
			s->done = true;
			return 0;
		}
		/* The pairs are scattered over the arena: fetch ahead. */
		if (s->i + 8 < s->n)
			__builtin_prefetch(s->ents[s->i + 8].rec);
		const struct mr_rec *r = s->ents[s->i++].rec;
		s->key = r->data;
		s->klen = r->klen;
		s->val = r->data + r->klen;
		s->vlen = r->vlen;
		return 0;
	}
	if (s->kind == 2) {
		/* Pairs received from another node: checked, never trusted. */
		if (s->spos == s->slen) {
			s->done = true;
			return 0;
		}
		uint32_t h[2];
		if (s->slen - s->spos < 8)
			return keel_errmsg_set(errmsg, KEEL_EPROTO, "mr: truncated pair from a peer");
		/* Little-endian on the wire (compute/mr_msg.h). */
		h[0] = keel_get_le32(s->sbuf + s->spos);
		h[1] = keel_get_le32(s->sbuf + s->spos + 4);
		if (h[0] > KEEL_MR_MAX_KEY || h[1] > KEEL_MR_MAX_VALUE ||
		    s->slen - s->spos - 8 < (size_t)h[0] + h[1])
			return keel_errmsg_set(errmsg, KEEL_EPROTO, "mr: malformed pair from a peer");
		s->key = s->sbuf + s->spos + 8;
		s->klen = h[0];
		s->val = s->key + h[0];
		s->vlen = h[1];
		s->spos += 8 + (size_t)h[0] + h[1];
		return 0;
	}
	size_t avail = s->buf_len - s->buf_pos;
	if (avail == 0 && s->off >= s->end) {
		s->done = true;
		return 0;
	}
	int rc;
	if (avail < 8 && (rc = src_refill(s, 8)))
		return keel_errmsg_set(errmsg, rc, "mr: reading spill");
	uint32_t hdr[2];
	memcpy(hdr, s->buf + s->buf_pos, 8);
	if (hdr[0] > KEEL_MR_MAX_KEY || hdr[1] > KEEL_MR_MAX_VALUE)
		return keel_errmsg_set(errmsg, KEEL_ECORRUPT, "mr: spill pair of %u+%u bytes", hdr[0], hdr[1]);
	size_t need = 8 + (size_t)hdr[0] + hdr[1];
	if (s->buf_len - s->buf_pos < need && (rc = src_refill(s, need)))
		return keel_errmsg_set(errmsg, rc, "mr: reading spill");
	s->key = s->buf + s->buf_pos + 8;
	s->klen = hdr[0];
	s->val = s->key + hdr[0];
	s->vlen = hdr[1];
	s->buf_pos += need;
	return 0;
}

/* ---- merge ------------------------------------------------------------ */

struct keel_mr_values {
	struct mr_source **heap;
	size_t n;
	const uint8_t *key;
	uint32_t klen;
	struct mr_source *cur; /* source of the last value, advanced lazily */
	bool exhausted;
	int err;
	uint64_t pairs;
	char *errmsg;
};

static inline bool src_less(const struct mr_source *a, const struct mr_source *b)
{
	return mr_keycmp(a->key, a->klen, b->key, b->klen) < 0;
}

static void sift_down(struct mr_source **h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && src_less(h[l], h[m]))
			m = l;
		if (r < n && src_less(h[r], h[m]))
			m = r;
		if (m == i)
			return;
		struct mr_source *t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

/* Advances the heap's top source and restores the heap. */
static int heap_pop_advance(struct keel_mr_values *it)
{
	struct mr_source *s = it->heap[0];
	int rc = src_advance(s, it->errmsg);
	if (rc)
		return rc;
	if (s->done)
		it->heap[0] = it->heap[--it->n];
	if (it->n)
		sift_down(it->heap, it->n, 0);
	return 0;
}

bool keel_mr_values_next(struct keel_mr_values *it, const void **val, size_t *vlen)
{
	if (it->exhausted)
		return false;
	if (it->cur) {
		it->cur = NULL;
		int rc = heap_pop_advance(it);
		if (rc) {
			it->err = rc;
			it->exhausted = true;
			return false;
		}
	}
	if (it->n == 0 || mr_keycmp(it->heap[0]->key, it->heap[0]->klen, it->key, it->klen) != 0) {
		it->exhausted = true;
		return false;
	}
	it->cur = it->heap[0];
	*val = it->cur->val;
	*vlen = it->cur->vlen;
	it->pairs++;
	return true;
}

struct mr_merge {
	struct keel_mr_values it;
	uint8_t *kbuf;
	const struct keel_mr_job *job;
	void *state;
	struct keel_mr_out *out;
	char *errmsg;
};

int mr_merge_begin(struct mr_merge **mp, struct mr_source *src, size_t n,
		   const struct keel_mr_job *job, void *state, struct keel_mr_out *out, char *errmsg)
{
	struct mr_merge *m = calloc(1, sizeof *m);
	if (!m)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: merge");
	m->it.errmsg = errmsg;
	m->it.heap = malloc((n ? n : 1) * sizeof *m->it.heap);
	m->kbuf = malloc(KEEL_MR_MAX_KEY);
	if (!m->it.heap || !m->kbuf) {
		mr_merge_end(m);
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: merge");
	}
	m->job = job;
	m->state = state;
	m->out = out;
	m->errmsg = errmsg;
	for (size_t i = 0; i < n; i++)
		if (!src[i].done)
			m->it.heap[m->it.n++] = &src[i];
	for (size_t i = m->it.n / 2; i-- > 0;)
		sift_down(m->it.heap, m->it.n, i);
	*mp = m;
	return 0;
}

int mr_merge_step(struct mr_merge *m, size_t max_keys, struct mr_merge_stats *st)
{
	struct keel_mr_values *it = &m->it;
	int rc = 0;
	uint64_t pairs0 = it->pairs;
	for (size_t k = 0; k < max_keys && it->n; k++) {
		struct mr_source *top = it->heap[0];
		memcpy(m->kbuf, top->key, top->klen);
		it->key = m->kbuf;
		it->klen = top->klen;
		it->exhausted = false;
		it->cur = NULL;
		m->job->reduce(m->state, m->kbuf, top->klen, it, m->out);
		const void *v;
		size_t vl;
		while (keel_mr_values_next(it, &v, &vl))
			;
		if (it->err) {
			rc = it->err;
			break;
		}
		if (it->cur) {
			it->cur = NULL;
			if ((rc = heap_pop_advance(it)))
				break;
		}
		st->keys++;
		if (m->out->err) {
			rc = keel_errmsg_set(m->errmsg, m->out->err, "mr: writing %s", m->out->path);
			break;
		}
	}
	st->pairs += it->pairs - pairs0;
	if (rc)
		return rc;
	return it->n ? 1 : 0;
}

bool mr_merge_peek(struct mr_merge *m, const uint8_t **k, uint32_t *kl, const uint8_t **v,
		   uint32_t *vl)
{
	if (m->it.n == 0)
		return false;
	const struct mr_source *s = m->it.heap[0];
	*k = s->key;
	*kl = s->klen;
	*v = s->val;
	*vl = s->vlen;
	return true;
}

int mr_merge_pop(struct mr_merge *m)
{
	return m->it.n ? heap_pop_advance(&m->it) : 0;
}

void mr_merge_end(struct mr_merge *m)
{
	if (!m)
		return;
	free(m->it.heap);
	free(m->kbuf);
	free(m);
}
