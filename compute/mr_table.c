/*
 * compute/mr_table.c — a shard's combining hash table, sorting it into a run
 * grouped by reduce partition, and spilling sorted runs to disk through a
 * private file queue (keel_fileq: io_uring), or pwrite where it is refused.
 *
 * The table is an arena of pairs plus, for jobs with a combine, an
 * open-addressing index (linear probing, 32-bit tag + arena offset) so an
 * emitted pair whose key is already present folds into it in place and the
 * arena holds each key once. Jobs without a combine only append. When the
 * arena (about 3/4 of the budget) or the index (about 1/4) is full, the
 * pairs are sorted by (partition, key) and written as one run: partitions
 * back to back, each a sequence of [u32 klen][u32 vlen][key][value].
 *
 * Pipelined combining: with a big vocabulary nearly every emit misses the
 * cache twice, once on its index slot and once on the pair in the arena
 * (perf on wordcount: >80% of map time on those two loads). So an emitted
 * pair is hashed, its slot prefetched, and it waits in a ring of
 * MR_PEND_DEPTH pairs; halfway through the ring its slot is read (by then
 * in cache) and the matching pair's arena line prefetched; it is folded in
 * when it leaves the ring. The misses of several pairs then overlap
 * instead of queueing. Combining is associative and commutative, so the
 * delay changes nothing in the result; pairs too big for the ring go
 * straight in after the ring drains.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compute/mr_internal.h"

#define WBUF (4u << 20)

int mr_table_init(struct mr_table *t, const struct keel_mr_job *job, void *state,
		  uint32_t partitions, uint64_t budget, const char *spill_dir, int shard,
		  char *errmsg)
{
	memset(t, 0, sizeof *t);
	t->job = job;
	t->state = state;
	t->partitions = partitions;
	t->combine = job->combine != NULL;
	t->spill_dir = spill_dir;
	t->shard = shard;
	if (budget < (1u << 16))
		budget = 1u << 16;
	t->arena_max = t->combine ? budget / 4 * 3 : budget;
	/* Reserved, not touched: pages are faulted in as pairs arrive, and
	 * the arena never moves (no copies as it grows). */
	t->arena_cap = t->arena_max;
	t->arena = mmap(NULL, t->arena_cap, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (t->arena == MAP_FAILED) {
		t->arena = NULL;
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: table arena of %zu bytes", t->arena_cap);
	}
	/* Huge pages where the kernel allows them: a fresh arena otherwise
	 * costs a page fault per 4 KiB, a large share of a sort's map phase. */
	madvise(t->arena, t->arena_cap, MADV_HUGEPAGE);
	if (t->combine) {
		t->slots_cap_bytes = budget / 4;
		t->nslots = 1u << 12;
		t->slots = calloc(t->nslots, sizeof *t->slots);
		if (!t->slots)
			return keel_errmsg_set(errmsg, -ENOMEM, "mr: table index");
	}
	return 0;
}

void mr_table_free(struct mr_table *t)
{
	for (size_t i = 0; i < t->n_spills; i++) {
		if (t->spills[i].path) {
			unlink(t->spills[i].path);
			free(t->spills[i].path);
		}
		free(t->spills[i].part_off);
	}
	free(t->spills);
	if (t->arena)
		munmap(t->arena, t->arena_cap);
	free(t->slots);
	free(t->sorted);
	free(t->part_start);
	free(t->wbuf[0]);
	free(t->wbuf[1]);
	keel_fileq_free(t->q);
	memset(t, 0, sizeof *t);
}

/* Kept out of line so the compiler does not second-guess truncation of an
 * error message. */
static void vformat(char *buf, size_t n, const char *fmt, ...) KEEL_PRINTF(3, 4);
static void vformat(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, n, fmt, ap);
	va_end(ap);
}

static int table_err(struct mr_table *t, int code, const char *fmt, const char *a)
{
	if (!t->err) {
		char m[KEEL_ERRMSG_LEN];
		int n = snprintf(m, sizeof m, "mr: shard %d: ", t->shard);
		size_t used = n > 0 && (size_t)n < sizeof m ? (size_t)n : 0;
		vformat(m + used, sizeof m - used, fmt, a);
		t->err = keel_errmsg_set(t->errmsg, code, "%s", m);
	}
	return t->err;
}

static int spill_now(struct mr_table *t);

static int grow_slots(struct mr_table *t)
{
	size_t n = t->nslots * 2;
	if (n * sizeof *t->slots > t->slots_cap_bytes)
		return 1; /* at the budget: spill instead */
	void *s = calloc(n, sizeof *t->slots);
	if (!s)
		return 1;
	__typeof__(t->slots) ns = s;
	size_t mask = n - 1;
	for (size_t i = 0; i < t->nslots; i++) {
		if (!t->slots[i].off8)
			continue;
		const struct mr_rec *r = (const void *)(t->arena + (size_t)(t->slots[i].off8 - 1) * 8);
		size_t j = mr_hash(r->data, r->klen) & mask;
		while (ns[j].off8)
			j = (j + 1) & mask;
		ns[j] = t->slots[i];
	}
	free(t->slots);
	t->slots = ns;
	t->nslots = n;
	return 0;
}

static int ensure_arena(struct mr_table *t, size_t need)
{
	if (t->arena_len + need <= t->arena_cap)
		return 0;
	if (t->arena_len > 0) {
		int rc = spill_now(t);
		if (rc)
			return rc;
	}
	if (need > t->arena_cap) {
		/* One pair larger than the whole budget: hold it alone. */
		uint8_t *a = mmap(NULL, need, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (a == MAP_FAILED)
			return table_err(t, -ENOMEM, "pair of %s bytes", "many");
		munmap(t->arena, t->arena_cap);
		t->arena = a;
		t->arena_cap = need;
	}
	return 0;
}

/* Folds one pair into the combining index (or finds its key there). */
static int combine_insert(struct mr_table *t, uint64_t h, uint32_t part, const void *key,
			  size_t klen, const void *val, size_t vlen)
{
	size_t need = mr_rec_size(klen, vlen);
	uint32_t tag = (uint32_t)(h >> 32);
again:;
	size_t mask = t->nslots - 1, i = h & mask;
	while (t->slots[i].off8) {
		if (t->slots[i].tag == tag) {
			struct mr_rec *r = (void *)(t->arena + (size_t)(t->slots[i].off8 - 1) * 8);
			if (r->klen == klen && !memcmp(r->data, key, klen)) {
				t->job->combine(t->state, r->data + klen, val, vlen);
				return 0;
			}
		}
		i = (i + 1) & mask;
	}
	if (t->nitems + 1 > t->nslots / 2) {
		if (grow_slots(t)) {
			int rc = spill_now(t);
			if (rc)
				return rc;
		}
		goto again;
	}
	if (t->arena_len + need > t->arena_cap) {
		int rc = ensure_arena(t, need);
		if (rc)
			return rc;
		goto again;
	}
	struct mr_rec *r = (void *)(t->arena + t->arena_len);
	r->part = part;
	r->klen = (uint32_t)klen;
	r->vlen = (uint32_t)vlen;
	r->hash32 = tag;
	memcpy(r->data, key, klen);
	memcpy(r->data + klen, val, vlen);
	t->slots[i].tag = tag;
	t->slots[i].off8 = (uint32_t)(t->arena_len / 8 + 1);
	t->arena_len += need;
	t->nitems++;
	return 0;
}

/* Folds the oldest pending pair into the table. */
static int pend_pop(struct mr_table *t)
{
	struct mr_pend *p = &t->pend[t->pend_head];
	t->pend_head = (t->pend_head + 1) % MR_PEND_DEPTH;
	t->pend_n--;
	return combine_insert(t, p->h, p->part, p->key, p->klen, p->val, p->vlen);
}

int mr_table_drain(struct mr_table *t)
{
	while (t->pend_n) {
		int rc = pend_pop(t);
		if (rc) {
			t->pend_n = 0;
			return rc;
		}
	}
	return t->err;
}

int keel_mr_emit(struct keel_mr_emit *e, const void *key, size_t klen, const void *val, size_t vlen)
{
	return mr_table_add(e->t, key, klen, val, vlen);
}

int mr_table_add(struct mr_table *t, const void *key, size_t klen, const void *val, size_t vlen)
{
	if (KEEL_UNLIKELY(t->err))
		return t->err;
	if (KEEL_UNLIKELY(klen > KEEL_MR_MAX_KEY))
		return table_err(t, KEEL_EBADJOB, "emitted a key over the %s limit", "64 KiB");
	if (KEEL_UNLIKELY(vlen > KEEL_MR_MAX_VALUE))
		return table_err(t, KEEL_EBADJOB, "emitted a value over the %s limit", "16 MiB");
	uint64_t h = 0;
	uint32_t part;
	if (t->job->partition) {
		part = t->job->partition(t->state, key, klen, t->partitions);
		if (KEEL_UNLIKELY(part >= t->partitions))
			return table_err(t, KEEL_EBADJOB, "job partition() returned %s", "an index >= R");
		if (t->combine)
			h = mr_hash(key, klen);
	} else {
		h = mr_hash(key, klen);
		part = mr_part_of(h, t->partitions);
	}
	t->emitted++;
	if (t->combine) {
		if (KEEL_UNLIKELY(vlen != t->job->value_size))
			return table_err(t, KEEL_EBADJOB, "emitted a value whose size is not value_size%s", "");
		if (klen > MR_PEND_KEY || vlen > MR_PEND_VAL) {
			int rc = mr_table_drain(t);
			return rc ? rc : combine_insert(t, h, part, key, klen, val, vlen);
		}
		__builtin_prefetch(&t->slots[h & (t->nslots - 1)]);
		struct mr_pend *p = &t->pend[(t->pend_head + t->pend_n) % MR_PEND_DEPTH];
		p->h = h;
		p->part = part;
		p->klen = (uint16_t)klen;
		p->vlen = (uint16_t)vlen;
		memcpy(p->key, key, klen);
		memcpy(p->val, val, vlen);
		t->pend_n++;
		/* Halfway: the slot of this pair has arrived; fetch its pair. */
		if (t->pend_n > MR_PEND_DEPTH / 2) {
			const struct mr_pend *m =
				&t->pend[(t->pend_head + t->pend_n - 1 - MR_PEND_DEPTH / 2) % MR_PEND_DEPTH];
			const __typeof__(*t->slots) *sl = &t->slots[m->h & (t->nslots - 1)];
			if (sl->off8 && sl->tag == (uint32_t)(m->h >> 32))
				__builtin_prefetch(t->arena + (size_t)(sl->off8 - 1) * 8);
		}
		if (t->pend_n == MR_PEND_DEPTH)
			return pend_pop(t);
		return 0;
	}
	size_t need = mr_rec_size(klen, vlen);
	int rc = ensure_arena(t, need);
	if (rc)
		return rc;
	struct mr_rec *r = (void *)(t->arena + t->arena_len);
	r->part = part;
	r->klen = (uint32_t)klen;
	r->vlen = (uint32_t)vlen;
	r->hash32 = 0;
	memcpy(r->data, key, klen);
	if (vlen)
		memcpy(r->data + klen, val, vlen);
	t->arena_len += need;
	t->nitems++;
	return 0;
}

/* ---- sorting ---------------------------------------------------------- */

static inline uint64_t key_prefix(const uint8_t *k, size_t n)
{
	uint8_t b[8] = {0};
	memcpy(b, k, n < 8 ? n : 8);
	return __builtin_bswap64(mr_rd64(b));
}

static inline int ent_cmp(const struct mr_sorted_ent *a, const struct mr_sorted_ent *b)
{
	if (a->prefix != b->prefix)
		return a->prefix < b->prefix ? -1 : 1;
	return mr_keycmp(a->rec->data, a->rec->klen, b->rec->data, b->rec->klen);
}

#define SWAP(x, y)                                                            \
	do {                                                                  \
		struct mr_sorted_ent t_ = (x);                                \
		(x) = (y);                                                    \
		(y) = t_;                                                     \
	} while (0)

/* Three-way quicksort (many equal keys, as in skewed sort inputs, cost
 * one pass), smaller side recursed, insertion sort for short ranges. */
static void sort_ents(struct mr_sorted_ent *a, size_t n)
{
	while (n > 24) {
		size_t m = n / 2;
		if (ent_cmp(&a[m], &a[0]) < 0)
			SWAP(a[m], a[0]);
		if (ent_cmp(&a[n - 1], &a[0]) < 0)
			SWAP(a[n - 1], a[0]);
		if (ent_cmp(&a[n - 1], &a[m]) < 0)
			SWAP(a[n - 1], a[m]);
		struct mr_sorted_ent p = a[m];
		size_t lt = 0, i = 0, gt = n;
		while (i < gt) {
			int c = ent_cmp(&a[i], &p);
			if (c < 0) {
				SWAP(a[lt], a[i]);
				lt++;
				i++;
			} else if (c > 0) {
				gt--;
				SWAP(a[i], a[gt]);
			} else {
				i++;
			}
		}
		if (lt < n - gt) {
			sort_ents(a, lt);
			a += gt;
			n -= gt;
		} else {
			sort_ents(a + gt, n - gt);
			n = lt;
		}
	}
	for (size_t i = 1; i < n; i++) {
		struct mr_sorted_ent x = a[i];
		size_t j = i;
		while (j > 0 && ent_cmp(&x, &a[j - 1]) < 0) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = x;
	}
}

int mr_table_sort(struct mr_table *t, struct mr_sorted_ent **entsp, size_t **startp)
{
	size_t R = t->partitions;
	size_t *start = calloc(R + 1, sizeof *start);
	struct mr_sorted_ent *ents = malloc((t->nitems ? t->nitems : 1) * sizeof *ents);
	if (!start || !ents) {
		free(start);
		free(ents);
		return table_err(t, -ENOMEM, "sorting %s", "the table");
	}
	for (size_t off = 0; off < t->arena_len;) {
		const struct mr_rec *r = (const void *)(t->arena + off);
		start[r->part + 1]++;
		off += mr_rec_size(r->klen, r->vlen);
	}
	for (size_t p = 0; p < R; p++)
		start[p + 1] += start[p];
	size_t *fill = malloc((R ? R : 1) * sizeof *fill);
	if (!fill) {
		free(start);
		free(ents);
		return table_err(t, -ENOMEM, "sorting %s", "the table");
	}
	memcpy(fill, start, R * sizeof *fill);
	for (size_t off = 0; off < t->arena_len;) {
		const struct mr_rec *r = (const void *)(t->arena + off);
		ents[fill[r->part]++] = (struct mr_sorted_ent){key_prefix(r->data, r->klen), r};
		off += mr_rec_size(r->klen, r->vlen);
	}
	free(fill);
	for (size_t p = 0; p < R; p++)
		sort_ents(ents + start[p], start[p + 1] - start[p]);
	*entsp = ents;
	*startp = start;
	return 0;
}

int mr_table_finish(struct mr_table *t)
{
	if (mr_table_drain(t))
		return t->err;
	int rc = mr_table_sort(t, &t->sorted, &t->part_start);
	if (rc)
		return rc;
	t->shuffled += t->nitems;
	return 0;
}

/* ---- spilling through the file queue ---------------------------------- */

struct spill_writer {
	struct mr_table *t;
	int fd;
	uint64_t off; /* file offset of the current buffer's start */
	int cur;      /* buffer being filled */
	size_t len;
	bool inflight[2];
	size_t inflight_len[2];
	uint64_t inflight_off[2];
	struct keel_fileq_req req[2];
	int err;
};

static void sw_done(struct keel_fileq_req *req) { *(bool *)req->arg = false; }

static int pwrite_full(int fd, const uint8_t *b, size_t n, uint64_t off)
{
	while (n) {
		ssize_t w = pwrite(fd, b, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Waits for the write of buffer i; a short write is finished by pwrite. */
static int sw_wait(struct spill_writer *w, int i)
{
	struct mr_table *t = w->t;
	if (!w->inflight[i])
		return 0;
	while (w->inflight[i]) {
		int rc = keel_fileq_reap(t->q, 1);
		if (rc < 0)
			return rc;
	}
	int res = w->req[i].res;
	if (res < 0)
		return res;
	if ((size_t)res < w->inflight_len[i])
		return pwrite_full(w->fd, t->wbuf[i] + res, w->inflight_len[i] - (size_t)res,
				   w->inflight_off[i] + (uint64_t)res);
	return 0;
}

static int sw_flush(struct spill_writer *w)
{
	struct mr_table *t = w->t;
	int i = w->cur;
	if (w->len == 0)
		return 0;
	if (!t->q) {
		int rc = pwrite_full(w->fd, t->wbuf[i], w->len, w->off);
		w->off += w->len;
		w->len = 0;
		return rc;
	}
	w->req[i] = (struct keel_fileq_req){.fd = w->fd, .op = KEEL_FILEQ_WRITE,
					    .buf = t->wbuf[i], .len = (uint32_t)w->len,
					    .off = w->off, .done = sw_done, .arg = &w->inflight[i]};
	int rc = keel_fileq_submit(t->q, &w->req[i]);
	if (rc == -EAGAIN)
		return -EBUSY;
	if (rc < 0)
		return rc;
	w->inflight[i] = true;
	w->inflight_len[i] = w->len;
	w->inflight_off[i] = w->off;
	w->off += w->len;
	w->len = 0;
	/* Fill the other buffer while this one is written. */
	w->cur ^= 1;
	return sw_wait(w, w->cur);
}

static int sw_put(struct spill_writer *w, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		size_t room = WBUF - w->len;
		size_t c = n < room ? n : room;
		memcpy(w->t->wbuf[w->cur] + w->len, b, c);
		w->len += c;
		b += c;
		n -= c;
		if (w->len == WBUF) {
			int rc = sw_flush(w);
			if (rc)
				return rc;
		}
	}
	return 0;
}

int mr_table_spill(struct mr_table *t)
{
	int rc = mr_table_drain(t);
	return rc ? rc : spill_now(t);
}

/* Spills without draining the pipeline: the insert that needs the room is
 * in progress (called from it). */
static int spill_now(struct mr_table *t)
{
	if (t->err)
		return t->err;
	if (t->nitems == 0)
		return 0;
	if (!t->wbuf[0]) {
		t->wbuf[0] = malloc(WBUF);
		t->wbuf[1] = malloc(WBUF);
		if (!t->wbuf[0] || !t->wbuf[1])
			return table_err(t, -ENOMEM, "spill %s", "buffers");
		/* Containers often forbid io_uring: then spills use pwrite. */
		if (keel_fileq_new(8, -1, &t->q, NULL))
			t->q = NULL;
	}
	struct mr_sorted_ent *ents;
	size_t *start;
	int rc = mr_table_sort(t, &ents, &start);
	if (rc)
		return rc;
	struct mr_spill sp = {0};
	char path[4096];
	snprintf(path, sizeof path, "%s/s%d.g%u-%zu.run", t->spill_dir, t->shard, t->gen, t->n_spills);
	sp.path = strdup(path);
	sp.part_off = calloc(t->partitions + 1, sizeof *sp.part_off);
	struct mr_spill *ns = realloc(t->spills, (t->n_spills + 1) * sizeof *ns);
	if (!sp.path || !sp.part_off || !ns) {
		free(sp.path);
		free(sp.part_off);
		free(ents);
		free(start);
		if (ns)
			t->spills = ns;
		return table_err(t, -ENOMEM, "spill %s", "index");
	}
	t->spills = ns;
	struct spill_writer w = {.t = t};
	w.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w.fd < 0) {
		rc = -errno;
		free(sp.path);
		free(sp.part_off);
		free(ents);
		free(start);
		return table_err(t, rc, "spill file %s", path);
	}
	t->spills[t->n_spills++] = sp;
	for (uint32_t p = 0; p < t->partitions && !rc; p++) {
		sp.part_off[p] = w.off + w.len;
		for (size_t i = start[p]; i < start[p + 1] && !rc; i++) {
			const struct mr_rec *r = ents[i].rec;
			uint32_t hdr[2] = {r->klen, r->vlen};
			rc = sw_put(&w, hdr, sizeof hdr);
			if (!rc)
				rc = sw_put(&w, r->data, (size_t)r->klen + r->vlen);
		}
	}
	if (!rc) {
		sp.part_off[t->partitions] = w.off + w.len;
		rc = sw_flush(&w);
	}
	if (t->q) {
		int r2 = sw_wait(&w, 0);
		int r3 = sw_wait(&w, 1);
		if (!rc)
			rc = r2 ? r2 : r3;
	}
	close(w.fd);
	free(ents);
	free(start);
	if (rc)
		return table_err(t, rc, "writing spill %s", path);
	t->spills[t->n_spills - 1].bytes = sp.part_off[t->partitions];
	t->spill_bytes += sp.part_off[t->partitions];
	t->spilled_pairs += t->nitems;
	t->shuffled += t->nitems;
	t->arena_len = 0;
	t->nitems = 0;
	if (t->slots)
		memset(t->slots, 0, t->nslots * sizeof *t->slots);
	return 0;
}
