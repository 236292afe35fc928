/*
 * compute/df_sched.c — the dataflow scheduler: cuts the graph into stages
 * and runs them on the context's shards.
 *
 * A stage is a chain of narrow transformations over one input: a source
 * (range, text split), a persisted dataset's partition, or one partition of
 * a shuffle read back through map-reduce's k-way merge. Elements are
 * pushed through the chain one at a time (keel_df_emit calls the next
 * transformation directly), so nothing between the input and the stage's
 * end is materialised. A stage ends in a shuffle (map-reduce's per-shard
 * combining table, mr_table: combined in place for reduce_by_key, sorted
 * into a run per partition, spilled past the budget), a persisted
 * partition, or an action.
 *
 * An action first prepares what its dataset needs, parents first: every
 * shuffle feeding a wide dataset on the way (each shuffle runs once and its
 * sorted runs are kept for later actions), and every persisted dataset not
 * yet computed. Tasks: partition p runs on shard p mod S (a worker thread),
 * so a persisted partition is read back by the shard that wrote it, and a
 * shard writes only its own shuffle table (no locks on the data path).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "compute/df_internal.h"

extern const struct keel_mr_job df_lines_job;

enum sink_kind { SINK_OP = 0, SINK_TABLE, SINK_MAT, SINK_COUNT };

struct df_task {
	struct keel_df_ctx *ctx;
	uint32_t stage, part, shard;
	const char *file; /* the text record being processed, for messages */
	uint64_t offset;
	bool in_file;
	uint64_t records_in;
	int err;
	char errmsg[KEEL_ERRMSG_LEN];
	uint8_t *vbuf; /* tagged values for join, distinct keys */
	size_t vcap;
};

struct keel_df_emit {
	struct df_task *task;
	struct keel_df *op; /* SINK_OP: the transformation elements arriving here go through */
	struct keel_df_emit *next;
	void *pctx;
	uint64_t arrived;
	enum sink_kind sink;
	struct mr_table *table;
	int tag;       /* join: 0/1 prefixed to the value; -1 none */
	bool distinct; /* the pair is the key */
	struct df_part *part;
	uint32_t nparts;
	bool persisted; /* SINK_MAT of persist (not of collect): counts against the budget */
	uint64_t count;
};

struct keel_df_values {
	const uint8_t *buf;
	size_t len, pos;
};

bool keel_df_values_next(struct keel_df_values *it, const void **val, size_t *vlen)
{
	if (it->pos + 4 > it->len)
		return false;
	uint32_t l;
	memcpy(&l, it->buf + it->pos, 4);
	*val = it->buf + it->pos + 4;
	*vlen = l;
	it->pos += 4 + (size_t)l;
	return true;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- errors ------------------------------------------------------------ */

static int task_fail(struct df_task *t, int code, const char *msg)
{
	if (t->err)
		return t->err;
	if (t->in_file && t->file)
		snprintf(t->errmsg, sizeof t->errmsg,
			 "df: stage %u partition %u (%s at byte %llu): %s", t->stage, t->part, t->file,
			 (unsigned long long)t->offset, msg);
	else
		snprintf(t->errmsg, sizeof t->errmsg, "df: stage %u partition %u: %s", t->stage, t->part,
			 msg);
	t->err = code ? code : KEEL_EBADINPUT;
	return t->err;
}

int keel_df_fail(struct keel_df_emit *e, int code, const char *fmt, ...)
{
	char m[KEEL_ERRMSG_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof m, fmt, ap);
	va_end(ap);
	return task_fail(e->task, code, m);
}

/* ---- persisted partitions ---------------------------------------------- */

static int part_append(struct df_part *p, uint32_t part, uint32_t parts, const void *k,
		       size_t kl, const void *v, size_t vl)
{
	size_t need = 8 + kl + vl;
	if (p->len + need > p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 4096;
		while (cap < p->len + need)
			cap *= 2;
		uint8_t *b = realloc(p->buf, cap);
		if (!b)
			return -ENOMEM;
		p->buf = b;
		p->cap = cap;
	}
	if (!p->unsorted_or_moved) {
		if (mr_part_of(mr_hash(k, kl), parts) != part) {
			p->unsorted_or_moved = true;
		} else if (p->n) {
			const uint8_t *lk = p->buf + p->last + 8;
			if (mr_keycmp(lk, keel_get_le32(p->buf + p->last), k, kl) > 0)
				p->unsorted_or_moved = true;
		}
	}
	p->last = p->len;
	/* The layout map-reduce's merge reads (mr_source_buf). */
	keel_put_le32(p->buf + p->len, (uint32_t)kl);
	keel_put_le32(p->buf + p->len + 4, (uint32_t)vl);
	if (kl)
		memcpy(p->buf + p->len + 8, k, kl);
	if (vl)
		memcpy(p->buf + p->len + 8 + kl, v, vl);
	p->len += need;
	p->n++;
	return 0;
}

static bool part_next(const struct df_part *p, size_t *pos, struct keel_df_rec *r)
{
	if (*pos >= p->len)
		return false;
	uint32_t l32[2] = {keel_get_le32(p->buf + *pos), keel_get_le32(p->buf + *pos + 4)};
	r->key = p->buf + *pos + 8;
	r->klen = l32[0];
	r->val = p->buf + *pos + 8 + l32[0];
	r->vlen = l32[1];
	*pos += 8 + (size_t)l32[0] + l32[1];
	return true;
}

static void parts_free(struct df_part *parts, uint32_t n)
{
	if (!parts)
		return;
	for (uint32_t i = 0; i < n; i++)
		free(parts[i].buf);
	free(parts);
}

/* Gives back what persisted partitions held against their shards'
 * budgets (partition p lives on shard p mod S). */
static void shard_release(struct keel_df_ctx *c, const struct df_part *parts, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		atomic_fetch_sub(&c->shard_persisted[i % c->shards], parts[i].len);
}

void df_free_mat(struct keel_df *d)
{
	if (d->mat) {
		shard_release(d->ctx, d->mat, d->partitions);
		for (uint32_t i = 0; i < d->partitions; i++)
			d->ctx->stats.persisted_bytes -= d->mat[i].len;
		parts_free(d->mat, d->partitions);
		d->mat = NULL;
	}
}

void df_free_shuffle(struct keel_df *d)
{
	for (int side = 0; side < 2; side++) {
		if (d->tables[side]) {
			for (uint32_t s = 0; s < d->ctx->shards; s++)
				mr_table_free(&d->tables[side][s]);
			free(d->tables[side]);
			d->tables[side] = NULL;
		}
		d->shuffled[side] = false;
		d->copart[side] = false;
	}
}

/* ---- the push chain ---------------------------------------------------- */

int keel_df_emit(struct keel_df_emit *e, const void *key, size_t klen, const void *val,
		 size_t vlen)
{
	struct df_task *t = e->task;
	if (KEEL_UNLIKELY(t->err))
		return t->err;
	e->arrived++;
	/* Empty keys and values may come as NULL: callbacks and memcpy get a
	 * valid pointer either way. */
	if (!key)
		key = "";
	if (!val)
		val = "";
	struct keel_df_rec r = {key, klen, val, vlen};
	switch (e->sink) {
	case SINK_OP: {
		struct keel_df *op = e->op;
		switch (op->kind) {
		case DF_MAP: {
			uint64_t before = e->next->arrived;
			op->flat(op->arg, &r, e->next);
			if (!t->err && e->next->arrived - before != 1) {
				char m[128];
				snprintf(m, sizeof m,
					 "map emitted %llu elements for one (map emits exactly one; flat_map any)",
					 (unsigned long long)(e->next->arrived - before));
				return task_fail(t, KEEL_EBADJOB, m);
			}
			break;
		}
		case DF_FLAT:
			op->flat(op->arg, &r, e->next);
			break;
		case DF_FILTER:
			if (op->filter(op->arg, &r))
				return keel_df_emit(e->next, key, klen, val, vlen);
			break;
		case DF_MAPPART:
			op->pops.each(e->pctx, &r, e->next);
			break;
		default:
			return task_fail(t, KEEL_EBADJOB, "internal: a wide dataset in a stage's chain");
		}
		return t->err;
	}
	case SINK_TABLE: {
		const void *k = key, *v = val;
		size_t kl = klen, vl = vlen;
		size_t need = e->distinct ? 4 + klen + vlen : 1 + vlen;
		if (e->distinct || e->tag >= 0) {
			if (need > t->vcap) {
				size_t cap = t->vcap ? t->vcap : 256;
				while (cap < need)
					cap *= 2;
				uint8_t *b = realloc(t->vbuf, cap);
				if (!b)
					return task_fail(t, -ENOMEM, "out of memory");
				t->vbuf = b;
				t->vcap = cap;
			}
		}
		if (e->distinct) {
			uint32_t l = (uint32_t)klen;
			memcpy(t->vbuf, &l, 4);
			if (klen)
				memcpy(t->vbuf + 4, key, klen);
			if (vlen)
				memcpy(t->vbuf + 4 + klen, val, vlen);
			k = t->vbuf;
			kl = need;
			v = "";
			vl = 0;
		} else if (e->tag >= 0) {
			t->vbuf[0] = (uint8_t)e->tag;
			if (vlen)
				memcpy(t->vbuf + 1, val, vlen);
			v = t->vbuf;
			vl = need;
		}
		int rc = mr_table_add(e->table, k, kl, v, vl);
		if (rc)
			return task_fail(t, rc, e->table->errmsg);
		return 0;
	}
	case SINK_MAT: {
		struct keel_df_ctx *c = t->ctx;
		if (e->persisted && c->persist_budget) {
			uint64_t held = atomic_fetch_add(&c->shard_persisted[t->shard], 8 + klen + vlen);
			if (held + 8 + klen + vlen > c->persist_budget) {
				atomic_fetch_sub(&c->shard_persisted[t->shard], 8 + klen + vlen);
				char m[200];
				snprintf(m, sizeof m,
					 "persisted partitions of shard %u exceed its budget of %llu bytes "
					 "(persisted data does not spill to disk yet)",
					 t->shard, (unsigned long long)c->persist_budget);
				return task_fail(t, KEEL_ETOOBIG, m);
			}
		}
		if (part_append(e->part, t->part, e->nparts, key, klen, val, vlen)) {
			if (e->persisted && c->persist_budget)
				atomic_fetch_sub(&c->shard_persisted[t->shard], 8 + klen + vlen);
			return task_fail(t, -ENOMEM, "out of memory keeping a persisted partition");
		}
		return 0;
	}
	case SINK_COUNT:
		e->count++;
		return 0;
	}
	return 0;
}

/* ---- inputs -------------------------------------------------------------- */

static int text_rec(void *arg, const struct keel_mr_record *rec)
{
	struct keel_df_emit *e = arg;
	struct df_task *t = e->task;
	t->file = rec->file;
	t->offset = rec->offset;
	t->in_file = true;
	t->records_in++;
	return keel_df_emit(e, NULL, 0, rec->data, rec->len);
}

static int feed_text(struct keel_df *x, struct df_task *t, struct keel_df_emit *in)
{
	if (x->plan.n_splits == 0)
		return 0;
	struct mr_scan sc;
	uint8_t *buf = NULL;
	size_t cap = 0;
	uint64_t done = 0;
	int rc = mr_scan_open(&sc, &x->plan, &x->plan.splits[t->part], &df_lines_job, &buf, &cap,
			      t->errmsg);
	if (rc) {
		t->err = rc;
		free(buf);
		return rc;
	}
	void *dst;
	size_t len;
	uint64_t off;
	while (!rc && mr_scan_next_read(&sc, &dst, &len, &off)) {
		ssize_t got = pread(sc.fd, dst, len, (off_t)off);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			rc = keel_errmsg_set(t->errmsg, -errno, "df: read %s",
					     x->plan.files[x->plan.splits[t->part].file].path);
			t->err = rc;
			break;
		}
		char em[KEEL_ERRMSG_LEN] = "";
		rc = mr_scan_feed(&sc, (size_t)got, text_rec, in, &done, em);
		if (rc && !t->err)
			rc = task_fail(t, rc, em);
	}
	mr_scan_close(&sc);
	free(buf);
	t->in_file = false;
	return t->err ? t->err : rc;
}

static int vec_put(uint8_t **b, size_t *len, size_t *cap, const void *v, uint32_t vl)
{
	if (*len + 4 + vl > *cap) {
		size_t c = *cap ? *cap : 1024;
		while (c < *len + 4 + vl)
			c *= 2;
		uint8_t *n = realloc(*b, c);
		if (!n)
			return -ENOMEM;
		*b = n;
		*cap = c;
	}
	memcpy(*b + *len, &vl, 4);
	if (vl)
		memcpy(*b + *len + 4, v, vl);
	*len += 4 + (size_t)vl;
	return 0;
}

/* Reads partition p of wide dataset x: merges every shard's sorted run of
 * it (and the runs it spilled) and groups equal keys. */
static int feed_shuffle(struct keel_df *x, struct df_task *t, struct keel_df_emit *in)
{
	struct keel_df_ctx *c = x->ctx;
	uint32_t p = t->part;
	int sides = x->kind == DF_JOIN ? 2 : 1;
	size_t nsrc = 0;
	for (int side = 0; side < sides; side++)
		if (x->copart[side])
			nsrc++;
		else
			for (uint32_t s = 0; s < c->shards; s++)
				nsrc += 1 + x->tables[side][s].n_spills;
	/* A co-partitioned side is read from its parent's partition p as it
	 * is (key-sorted, untagged): its values are told apart from the
	 * other side's by where they point. */
	const uint8_t *co_lo[2] = {NULL, NULL}, *co_hi[2] = {NULL, NULL};
	struct mr_source *src = calloc(nsrc ? nsrc : 1, sizeof *src);
	uint8_t *kbuf = malloc(KEEL_MR_MAX_KEY);
	uint8_t *acc = malloc(x->value_size ? x->value_size : 1);
	uint8_t *lb = NULL, *rb = NULL;
	size_t ll = 0, lc = 0, rl = 0, rc_ = 0;
	struct mr_merge *m = NULL;
	int rc = 0;
	size_t opened = 0;
	if (!src || !kbuf || !acc) {
		rc = task_fail(t, -ENOMEM, "out of memory reading a shuffle");
		goto out;
	}
	for (int side = 0; side < sides && !rc; side++) {
		if (x->copart[side]) {
			const struct df_part *mp = &x->parent[side]->mat[p];
			co_lo[side] = mp->buf;
			co_hi[side] = mp->buf + mp->len;
			if ((rc = mr_source_buf(&src[opened], mp->buf, mp->len)))
				break;
			opened++;
			continue;
		}
		for (uint32_t s = 0; s < c->shards && !rc; s++) {
			struct mr_table *tb = &x->tables[side][s];
			size_t a = tb->part_start[p], b = tb->part_start[p + 1];
			if ((rc = mr_source_mem(&src[opened], tb->sorted + a, b - a)))
				break;
			opened++;
			for (size_t i = 0; i < tb->n_spills && !rc; i++) {
				const struct mr_spill *sp = &tb->spills[i];
				char em[KEEL_ERRMSG_LEN];
				rc = mr_source_file(&src[opened], sp->path, sp->part_off[p],
						    sp->part_off[p + 1], NULL, em);
				opened++;
				if (rc)
					task_fail(t, rc, em);
			}
		}
	}
	if (rc) {
		task_fail(t, rc, "opening a shuffle run");
		goto out;
	}
	{
		char em[KEEL_ERRMSG_LEN];
		if ((rc = mr_merge_begin(&m, src, opened, &x->job, x, NULL, em))) {
			task_fail(t, rc, em);
			goto out;
		}
	}
	const uint8_t *k, *v;
	uint32_t kl, vl;
	while (!t->err && mr_merge_peek(m, &k, &kl, &v, &vl)) {
		memcpy(kbuf, k, kl);
		uint32_t klen = kl;
		t->records_in++;
		ll = rl = 0;
		bool first = true;
		do {
			switch (x->kind) {
			case DF_REDUCE:
				if (first)
					memcpy(acc, v, x->value_size);
				else
					x->combine(x->arg, acc, v, x->value_size);
				break;
			case DF_GROUP:
				if (vec_put(&lb, &ll, &lc, v, vl))
					rc = -ENOMEM;
				break;
			case DF_JOIN:
				if (co_lo[0] && v >= co_lo[0] && v <= co_hi[0])
					rc = vec_put(&lb, &ll, &lc, v, vl) ? -ENOMEM : 0;
				else if (co_lo[1] && v >= co_lo[1] && v <= co_hi[1])
					rc = vec_put(&rb, &rl, &rc_, v, vl) ? -ENOMEM : 0;
				else if (vl < 1)
					rc = KEEL_ECORRUPT;
				else if (v[0] == 0 ? vec_put(&lb, &ll, &lc, v + 1, vl - 1)
						   : vec_put(&rb, &rl, &rc_, v + 1, vl - 1))
					rc = -ENOMEM;
				break;
			default:
				break;
			}
			first = false;
			if (rc) {
				task_fail(t, rc, "grouping a shuffle's values");
				goto out;
			}
			if ((rc = mr_merge_pop(m))) {
				task_fail(t, rc, "reading a spilled shuffle run");
				goto out;
			}
		} while (mr_merge_peek(m, &k, &kl, &v, &vl) && mr_keycmp(k, kl, kbuf, klen) == 0);
		switch (x->kind) {
		case DF_REDUCE:
			keel_df_emit(in, kbuf, klen, acc, x->value_size);
			break;
		case DF_GROUP: {
			struct keel_df_values it = {lb, ll, 0};
			x->group(x->arg, kbuf, klen, &it, in);
			break;
		}
		case DF_JOIN: {
			struct keel_df_values li = {lb, ll, 0};
			const void *lv, *rv;
			size_t lvl, rvl;
			while (!t->err && keel_df_values_next(&li, &lv, &lvl)) {
				struct keel_df_values ri = {rb, rl, 0};
				while (!t->err && keel_df_values_next(&ri, &rv, &rvl))
					x->join(x->arg, kbuf, klen, lv, lvl, rv, rvl, in);
			}
			break;
		}
		case DF_DISTINCT: {
			uint32_t okl;
			memcpy(&okl, kbuf, 4);
			keel_df_emit(in, kbuf + 4, okl, kbuf + 4 + okl, klen - 4 - okl);
			break;
		}
		default:
			break;
		}
	}
	rc = t->err;
out:
	mr_merge_end(m);
	for (size_t i = 0; i < opened; i++)
		mr_source_close(&src[i]);
	free(src);
	free(kbuf);
	free(acc);
	free(lb);
	free(rb);
	return t->err ? t->err : rc;
}

/* ---- one task -------------------------------------------------------------- */

#define MAX_CHAIN 256

static int run_task(struct keel_df *d, struct df_task *t, struct keel_df_emit *sink)
{
	struct keel_df_emit chain[MAX_CHAIN];
	struct keel_df_emit *cur = sink;
	size_t n = 0;
	struct keel_df *x = d;
	while (!x->mat && !df_is_wide(x->kind) && x->kind != DF_RANGE && x->kind != DF_TEXT) {
		if (n == MAX_CHAIN)
			return task_fail(t, KEEL_EBADJOB, "more than 256 narrow transformations in a stage");
		chain[n] = (struct keel_df_emit){.task = t, .op = x, .next = cur, .sink = SINK_OP};
		cur = &chain[n++];
		x = x->parent[0];
	}
	for (size_t i = 0; i < n; i++)
		if (chain[i].op->kind == DF_MAPPART && chain[i].op->pops.begin)
			chain[i].pctx = chain[i].op->pops.begin(chain[i].op->arg, t->part);
	if (x->mat) {
		struct keel_df_rec r;
		size_t pos = 0;
		while (!t->err && part_next(&x->mat[t->part], &pos, &r)) {
			t->records_in++;
			keel_df_emit(cur, r.key, r.klen, r.val, r.vlen);
		}
	} else if (x->kind == DF_RANGE) {
		uint64_t len = x->end - x->start, P = x->partitions;
		uint64_t a = x->start + (uint64_t)((unsigned __int128)len * t->part / P);
		uint64_t b = x->start + (uint64_t)((unsigned __int128)len * (t->part + 1) / P);
		for (uint64_t i = a; i < b && !t->err; i++) {
			t->records_in++;
			keel_df_emit(cur, NULL, 0, &i, sizeof i);
		}
	} else if (x->kind == DF_TEXT) {
		feed_text(x, t, cur);
	} else {
		feed_shuffle(x, t, cur);
	}
	/* map_partitions' end, nearest the input first: what it emits goes
	 * through the ends above it. */
	for (size_t i = n; i-- > 0 && !t->err;)
		if (chain[i].op->kind == DF_MAPPART && chain[i].op->pops.end)
			chain[i].op->pops.end(chain[i].pctx, chain[i].next);
	return t->err;
}

/* ---- a stage --------------------------------------------------------------- */

struct stage {
	struct keel_df_ctx *ctx;
	struct keel_df *d;     /* the dataset whose elements reach the stage's end */
	enum sink_kind kind;
	struct keel_df *wide;  /* SINK_TABLE: the shuffle's dataset */
	int side;
	struct df_part *parts; /* SINK_MAT */
	bool persist;          /* SINK_MAT for persist (else for collect) */
	uint32_t stage_no;
	atomic_bool failed;
	pthread_mutex_t mu;
	int err;
	char errmsg[KEEL_ERRMSG_LEN];
	_Atomic uint64_t count, records_in;
};

struct worker {
	struct stage *st;
	uint32_t shard;
	pthread_t th;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct stage *st = w->st;
	struct keel_df_ctx *c = st->ctx;
	struct df_task t = {.ctx = c, .stage = st->stage_no, .shard = w->shard};
	uint64_t count = 0;
	for (uint32_t p = w->shard; p < st->d->partitions && !t.err; p += c->shards) {
		if (atomic_load_explicit(&st->failed, memory_order_relaxed))
			break;
		t.part = p;
		struct keel_df_emit sink = {.task = &t, .sink = st->kind, .tag = -1};
		if (st->kind == SINK_TABLE) {
			sink.table = &st->wide->tables[st->side][w->shard];
			sink.tag = st->wide->kind == DF_JOIN ? st->side : -1;
			sink.distinct = st->wide->kind == DF_DISTINCT;
		} else if (st->kind == SINK_MAT) {
			sink.part = &st->parts[p];
			sink.nparts = st->d->partitions;
			sink.persisted = st->persist;
		}
		run_task(st->d, &t, &sink);
		count += sink.count;
	}
	/* The shard seals its own table: sorted by (partition, key). */
	if (!t.err && st->kind == SINK_TABLE) {
		struct mr_table *tb = &st->wide->tables[st->side][w->shard];
		if (mr_table_finish(tb))
			task_fail(&t, tb->err, tb->errmsg);
	}
	atomic_fetch_add(&st->count, count);
	atomic_fetch_add(&st->records_in, t.records_in);
	if (t.err) {
		atomic_store(&st->failed, true);
		pthread_mutex_lock(&st->mu);
		if (!st->err) {
			st->err = t.err;
			snprintf(st->errmsg, sizeof st->errmsg, "%s", t.errmsg);
		}
		pthread_mutex_unlock(&st->mu);
	}
	free(t.vbuf);
	return NULL;
}

static int run_stage(struct stage *st, const char *ends_in, char *errmsg)
{
	struct keel_df_ctx *c = st->ctx;
	uint64_t t0 = now_ns();
	st->stage_no = (uint32_t)++c->stats.stages;
	pthread_mutex_init(&st->mu, NULL);
	uint32_t S = c->shards;
	struct worker *w = calloc(S, sizeof *w);
	if (!w) {
		pthread_mutex_destroy(&st->mu);
		return keel_errmsg_set(errmsg, -ENOMEM, "df: stage workers");
	}
	uint32_t started = 0;
	for (uint32_t s = 0; s < S; s++) {
		w[s] = (struct worker){.st = st, .shard = s};
		if (S == 1) {
			worker_main(&w[s]);
			continue;
		}
		int e = pthread_create(&w[s].th, NULL, worker_main, &w[s]);
		if (e) {
			/* Run this shard's tasks here instead of failing the job. */
			worker_main(&w[s]);
			w[s].th = 0;
			continue;
		}
		started++;
	}
	if (S > 1)
		for (uint32_t s = 0; s < S; s++)
			if (w[s].th)
				pthread_join(w[s].th, NULL);
	(void)started;
	free(w);
	pthread_mutex_destroy(&st->mu);
	c->stats.tasks += st->d->partitions;
	c->stats.records_in += st->records_in;
	if (st->kind == SINK_TABLE) {
		for (uint32_t s = 0; s < S; s++) {
			struct mr_table *tb = &st->wide->tables[st->side][s];
			c->stats.shuffled += tb->shuffled;
			c->stats.spills += tb->n_spills;
			c->stats.spill_bytes += tb->spill_bytes;
		}
	}
	if (c->on_stage) {
		struct keel_df_stage_info si = {st->stage_no, st->d->partitions, ends_in,
						st->records_in, now_ns() - t0};
		c->on_stage(c->stage_arg, &si);
	}
	if (st->err)
		return keel_errmsg_set(errmsg, st->err, "%s", st->errmsg);
	return 0;
}

static int prepare(struct keel_df *d, char *errmsg, unsigned depth);

static int shuffle_into(struct keel_df *w, int side, char *errmsg, unsigned depth)
{
	struct keel_df_ctx *c = w->ctx;
	struct keel_df *p = w->parent[side];
	int rc = prepare(p, errmsg, depth + 1);
	if (rc)
		return rc;
	w->tables[side] = calloc(c->shards, sizeof *w->tables[side]);
	if (!w->tables[side])
		return keel_errmsg_set(errmsg, -ENOMEM, "df: shuffle tables");
	for (uint32_t s = 0; s < c->shards; s++) {
		if ((rc = mr_table_init(&w->tables[side][s], &w->job, w, w->partitions, c->mem_budget,
					c->spill_dir, (int)s, errmsg))) {
			df_free_shuffle(w);
			return rc;
		}
		/* Names its spills apart from every other shuffle's. */
		w->tables[side][s].gen = w->id * 2 + (unsigned)side;
	}
	struct stage st = {.ctx = c, .d = p, .kind = SINK_TABLE, .wide = w, .side = side};
	rc = run_stage(&st, "shuffle", errmsg);
	if (rc) {
		df_free_shuffle(w);
		return rc;
	}
	w->shuffled[side] = true;
	return 0;
}

static int materialise(struct keel_df *d, char *errmsg)
{
	struct df_part *parts = calloc(d->partitions ? d->partitions : 1, sizeof *parts);
	if (!parts)
		return keel_errmsg_set(errmsg, -ENOMEM, "df: persisted partitions");
	struct stage st = {.ctx = d->ctx, .d = d, .kind = SINK_MAT, .parts = parts, .persist = true};
	int rc = run_stage(&st, "persist", errmsg);
	if (rc) {
		shard_release(d->ctx, parts, d->partitions);
		parts_free(parts, d->partitions);
		return rc;
	}
	d->mat = parts;
	d->hash_sorted = true;
	for (uint32_t i = 0; i < d->partitions; i++) {
		d->ctx->stats.persisted_bytes += parts[i].len;
		if (parts[i].unsorted_or_moved)
			d->hash_sorted = false;
	}
	return 0;
}

static void release_walk(struct keel_df *d, uint32_t gen, unsigned depth)
{
	if (d->visit == gen || depth > 10000)
		return;
	d->visit = gen;
	if (depth > 0 && d->mat)
		return;
	for (int side = 0; side < 2; side++)
		if (d->parent[side])
			release_walk(d->parent[side], gen, depth + 1);
	if (df_is_wide(d->kind) && (d->tables[0] || d->tables[1]))
		df_free_shuffle(d);
}

static void release_lineage(struct keel_df *d, unsigned depth)
{
	(void)depth;
	release_walk(d, ++d->ctx->visit_gen, 0);
}

static int prepare(struct keel_df *d, char *errmsg, unsigned depth)
{
	if (depth > 10000)
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "df: lineage deeper than 10000 datasets");
	if (d->mat)
		return 0;
	int rc = 0;
	if (df_is_wide(d->kind)) {
		for (int side = 0; side < 2 && !rc; side++) {
			struct keel_df *p = d->parent[side];
			if (p && d->copart[side] && !p->mat) {
				/* Its side was unpersisted since: shuffle it now. */
				d->copart[side] = false;
				d->shuffled[side] = false;
			}
			if (!p || d->shuffled[side])
				continue;
			/* A persisted join side already hash-partitioned the
			 * same way and key-sorted (observed when it was
			 * computed) is read in place: no shuffle. */
			if (d->kind == DF_JOIN && p->persist && p->partitions == d->partitions) {
				if ((rc = prepare(p, errmsg, depth + 1)))
					break;
				if (p->mat && p->hash_sorted) {
					d->copart[side] = true;
					d->shuffled[side] = true;
					continue;
				}
			}
			rc = shuffle_into(d, side, errmsg, depth);
		}
	} else if (d->parent[0]) {
		rc = prepare(d->parent[0], errmsg, depth + 1);
	}
	if (rc)
		return rc;
	if (d->persist) {
		if ((rc = materialise(d, errmsg)))
			return rc;
		/* Its partitions are in memory now: the shuffle runs of its
		 * lineage (down to the persisted datasets it reads) are
		 * freed, so an iterative job's memory stays that of one
		 * iteration. Anything that needs them again reruns them from
		 * lineage (the shuffled flags go false). */
		release_lineage(d, 0);
	}
	return 0;
}

static int check(struct keel_df *d, char *errmsg)
{
	if (d)
		return 0;
	return keel_errmsg_set(errmsg, KEEL_EBADINPUT, "df: no dataset (an earlier call failed: %s)",
			       "see the context's error");
}

int keel_df_count(struct keel_df *d, uint64_t *n, char *errmsg)
{
	int rc = check(d, errmsg);
	if (rc)
		return rc;
	if ((rc = prepare(d, errmsg, 0)))
		return rc;
	struct stage st = {.ctx = d->ctx, .d = d, .kind = SINK_COUNT};
	if ((rc = run_stage(&st, "action", errmsg)))
		return rc;
	*n = st.count;
	return 0;
}

int keel_df_collect(struct keel_df *d, keel_df_collect_fn fn, void *arg, char *errmsg)
{
	int rc = check(d, errmsg);
	if (rc)
		return rc;
	if ((rc = prepare(d, errmsg, 0)))
		return rc;
	struct df_part *parts = d->mat;
	if (!parts) {
		parts = calloc(d->partitions ? d->partitions : 1, sizeof *parts);
		if (!parts)
			return keel_errmsg_set(errmsg, -ENOMEM, "df: collect");
		struct stage st = {.ctx = d->ctx, .d = d, .kind = SINK_MAT, .parts = parts};
		if ((rc = run_stage(&st, "action", errmsg))) {
			parts_free(parts, d->partitions);
			return rc;
		}
	}
	for (uint32_t p = 0; p < d->partitions && !rc; p++) {
		struct keel_df_rec r;
		size_t pos = 0;
		while (!rc && part_next(&parts[p], &pos, &r))
			rc = fn(arg, p, &r);
	}
	if (parts != d->mat)
		parts_free(parts, d->partitions);
	if (rc)
		return keel_errmsg_set(errmsg, rc, "df: collect stopped by its callback");
	return 0;
}
