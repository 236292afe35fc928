/*
 * Dataflow tests (include/keel/dataflow.h): every transformation and the
 * two built-in jobs against single-threaded references written here, across
 * shard and partition counts and with shuffles spilling; persist computes a
 * dataset once; bad input fails with a message naming the place.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/dataflow.h"

static char tmpbase[256];

static void make_tmp(void)
{
	snprintf(tmpbase, sizeof tmpbase, "/tmp/keel-df-test.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpbase));
}

static void cleanup(void)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpbase);
	cr_assert_eq(system(cmd), 0);
}

static struct keel_df_ctx *ctx_new(uint32_t shards, uint32_t partitions, uint64_t budget)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_df_config cfg = {.shards = shards, .partitions = partitions,
				     .mem_budget = budget, .spill_dir = tmpbase[0] ? tmpbase : NULL};
	struct keel_df_ctx *c = keel_df_ctx_new(&cfg, err);
	cr_assert_not_null(c, "%s", err);
	return c;
}

static void be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t be64_get(const void *q)
{
	const uint8_t *p = q;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint64_t u64_of(const struct keel_df_rec *r)
{
	uint64_t v;
	cr_assert_eq(r->vlen, 8);
	memcpy(&v, r->val, 8);
	return v;
}

/* ---- narrow transformations ------------------------------------------- */

/* x -> (key x % 7, value 3x) */
static void m_triple(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	uint64_t x = u64_of(r), y = 3 * x;
	uint8_t k[8];
	be64_put(k, x % 7);
	keel_df_emit(out, k, 8, &y, 8);
}

static bool f_even(void *arg, const struct keel_df_rec *r)
{
	(void)arg;
	return u64_of(r) % 2 == 0;
}

/* Multiples of 5 twice. */
static void fm_dup(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	int n = u64_of(r) % 5 == 0 ? 2 : 1;
	for (int i = 0; i < n; i++)
		keel_df_emit(out, r->key, r->klen, r->val, r->vlen);
}

/* map_partitions: passes elements on and, at the end, emits the count it
 * saw under key "count". */
struct mp_ctx {
	uint64_t n;
};
static void *mp_begin(void *arg, uint32_t part)
{
	(void)arg, (void)part;
	return calloc(1, sizeof(struct mp_ctx));
}
static void mp_each(void *pctx, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	((struct mp_ctx *)pctx)->n++;
	keel_df_emit(out, r->key, r->klen, r->val, r->vlen);
}
static void mp_end(void *pctx, struct keel_df_emit *out)
{
	struct mp_ctx *m = pctx;
	keel_df_emit(out, "count", 5, &m->n, 8);
	free(m);
}
static const struct keel_df_part_ops mp_ops = {mp_begin, mp_each, mp_end};

struct narrow_sum {
	uint64_t n, sum, keysum, counted, count_records;
	uint32_t last_part;
};
static int narrow_collect(void *arg, uint32_t part, const struct keel_df_rec *r)
{
	struct narrow_sum *s = arg;
	cr_assert_geq(part, s->last_part, "collect goes partition by partition");
	s->last_part = part;
	if (r->klen == 5 && memcmp(r->key, "count", 5) == 0) {
		s->counted += u64_of(r);
		s->count_records++;
		return 0;
	}
	cr_assert_eq(r->klen, 8);
	s->n++;
	s->sum += u64_of(r);
	s->keysum += be64_get(r->key);
	return 0;
}

Test(df, narrow_chain_matches_reference)
{
	const uint64_t N = 20000;
	struct narrow_sum ref = {0};
	for (uint64_t x = 0; x < N; x++) {
		if (x % 2)
			continue;
		int reps = x % 5 == 0 ? 2 : 1;
		ref.n += reps;
		ref.sum += reps * 3 * x;
		ref.keysum += reps * (x % 7);
	}
	const uint32_t shards[] = {1, 3}, parts[] = {1, 5, 8};
	for (size_t i = 0; i < 2; i++) {
		for (size_t j = 0; j < 3; j++) {
			struct keel_df_ctx *c = ctx_new(shards[i], parts[j], 0);
			struct keel_df *d = keel_df_range(c, 0, N, 0);
			d = keel_df_filter(d, f_even, NULL);
			d = keel_df_flat_map(d, fm_dup, NULL);
			d = keel_df_map(d, m_triple, NULL);
			d = keel_df_map_partitions(d, &mp_ops, NULL);
			struct narrow_sum got = {0};
			char err[KEEL_ERRMSG_LEN];
			cr_assert_eq(keel_df_collect(d, narrow_collect, &got, err), 0, "%s", err);
			cr_assert_eq(got.n, ref.n);
			cr_assert_eq(got.sum, ref.sum);
			cr_assert_eq(got.keysum, ref.keysum);
			cr_assert_eq(got.counted, ref.n, "map_partitions saw every element once");
			cr_assert_eq(got.count_records, parts[j], "one summary per partition");
			uint64_t n;
			cr_assert_eq(keel_df_count(d, &n, err), 0, "%s", err);
			cr_assert_eq(n, ref.n + parts[j]);
			struct keel_df_stats st;
			keel_df_ctx_stats(c, &st);
			/* Two actions, no shuffle: one stage each, nothing in between. */
			cr_assert_eq(st.stages, 2);
			cr_assert_eq(st.shuffled, 0);
			keel_df_ctx_free(c);
		}
	}
}

/* ---- wide transformations ---------------------------------------------- */

#define NKEYS 5003u

static void m_mod_key(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	uint64_t x = u64_of(r);
	uint8_t k[8];
	be64_put(k, (x * 2654435761u) % NKEYS);
	keel_df_emit(out, k, 8, &x, 8);
}

static void c_add(void *arg, void *acc, const void *val, size_t vsize)
{
	(void)arg;
	cr_assert_eq(vsize, 8);
	uint64_t a, b;
	memcpy(&a, acc, 8);
	memcpy(&b, val, 8);
	a += b;
	memcpy(acc, &a, 8);
}

struct keyed {
	uint64_t *v;   /* per key */
	uint64_t *n;   /* elements per key */
	uint8_t last[8];
	uint32_t last_part;
	bool have_last;
	uint64_t records;
};
static int keyed_collect(void *arg, uint32_t part, const struct keel_df_rec *r)
{
	struct keyed *k = arg;
	cr_assert_eq(r->klen, 8);
	if (k->have_last && part == k->last_part)
		cr_assert_lt(memcmp(k->last, r->key, 8), 0, "keys in order, once, in a partition");
	memcpy(k->last, r->key, 8);
	k->last_part = part;
	k->have_last = true;
	uint64_t key = be64_get(r->key);
	cr_assert_lt(key, NKEYS);
	k->v[key] += u64_of(r);
	k->n[key]++;
	k->records++;
	return 0;
}

Test(df, reduce_by_key_exact_with_spills, .init = make_tmp, .fini = cleanup)
{
	const uint64_t N = 120000;
	uint64_t ref[NKEYS] = {0};
	for (uint64_t x = 0; x < N; x++)
		ref[(x * 2654435761u) % NKEYS] += x;
	const uint32_t cfgs[][3] = {{1, 1, 0}, {2, 3, 1}, {3, 7, 1}};
	for (size_t i = 0; i < 3; i++) {
		/* 64 KiB per shard (the floor) holds ~2,000 pairs: many spills. */
		struct keel_df_ctx *c = ctx_new(cfgs[i][0], cfgs[i][1], cfgs[i][2] ? 1 : 0);
		struct keel_df *d = keel_df_map(keel_df_range(c, 0, N, 0), m_mod_key, NULL);
		d = keel_df_reduce_by_key(d, 8, c_add, NULL, 0);
		static uint64_t v[NKEYS], n[NKEYS];
		memset(v, 0, sizeof v);
		memset(n, 0, sizeof n);
		struct keyed got = {v, n};
		char err[KEEL_ERRMSG_LEN];
		cr_assert_eq(keel_df_collect(d, keyed_collect, &got, err), 0, "%s", err);
		for (uint32_t k = 0; k < NKEYS; k++) {
			cr_assert_eq(n[k], 1, "key %u once", k);
			cr_assert_eq(v[k], ref[k], "key %u", k);
		}
		struct keel_df_stats st;
		keel_df_ctx_stats(c, &st);
		if (cfgs[i][2])
			cr_assert_gt(st.spills, 0, "the small budget spilled");
		keel_df_ctx_free(c);
	}
}

/* group_by_key: value = count of values, then their sum (checks every
 * value arrives once). */
static void g_sum(void *arg, const void *key, size_t klen, struct keel_df_values *vals,
		  struct keel_df_emit *out)
{
	(void)arg;
	uint64_t s = 0;
	const void *v;
	size_t vl;
	while (keel_df_values_next(vals, &v, &vl)) {
		uint64_t x;
		cr_assert_eq(vl, 8);
		memcpy(&x, v, 8);
		s += x;
	}
	keel_df_emit(out, key, klen, &s, 8);
}

Test(df, group_by_key_exact, .init = make_tmp, .fini = cleanup)
{
	const uint64_t N = 50000;
	uint64_t ref[NKEYS] = {0};
	for (uint64_t x = 0; x < N; x++)
		ref[(x * 2654435761u) % NKEYS] += x;
	for (uint32_t shards = 1; shards <= 4; shards += 3) {
		struct keel_df_ctx *c = ctx_new(shards, 6, 1);
		struct keel_df *d = keel_df_map(keel_df_range(c, 0, N, 4), m_mod_key, NULL);
		d = keel_df_group_by_key(d, g_sum, NULL, 5);
		cr_assert_eq(keel_df_partitions(d), 5);
		static uint64_t v[NKEYS], n[NKEYS];
		memset(v, 0, sizeof v);
		memset(n, 0, sizeof n);
		struct keyed got = {v, n};
		char err[KEEL_ERRMSG_LEN];
		cr_assert_eq(keel_df_collect(d, keyed_collect, &got, err), 0, "%s", err);
		for (uint32_t k = 0; k < NKEYS; k++) {
			cr_assert_eq(n[k], 1);
			cr_assert_eq(v[k], ref[k], "key %u", k);
		}
		keel_df_ctx_free(c);
	}
}

/* join: left = x in [0, 3000) keyed x % 500 (six per key), right = y in
 * [250, 1000) keyed y (one per key); out (key, x * 1000 + y). */
static void m_left(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	uint64_t x = u64_of(r);
	uint8_t k[8];
	be64_put(k, x % 500);
	keel_df_emit(out, k, 8, &x, 8);
}
static void m_right(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	uint64_t y = u64_of(r);
	uint8_t k[8];
	be64_put(k, y);
	keel_df_emit(out, k, 8, &y, 8);
}
static void j_pair(void *arg, const void *key, size_t klen, const void *lv, size_t ll,
		   const void *rv, size_t rl, struct keel_df_emit *out)
{
	(void)arg;
	cr_assert_eq(ll, 8);
	cr_assert_eq(rl, 8);
	uint64_t x, y;
	memcpy(&x, lv, 8);
	memcpy(&y, rv, 8);
	uint64_t z = x * 1000 + y;
	keel_df_emit(out, key, klen, &z, 8);
}
static void m_keyonly(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	keel_df_emit(out, r->key, r->klen, NULL, 0);
}
struct jsum {
	uint64_t n, sum, keysum;
};
static int jsum_collect(void *arg, uint32_t part, const struct keel_df_rec *r)
{
	(void)part;
	struct jsum *s = arg;
	s->n++;
	s->sum += u64_of(r);
	s->keysum += be64_get(r->key) * 7919;
	return 0;
}

Test(df, join_and_distinct_exact)
{
	struct jsum ref = {0};
	for (uint64_t x = 0; x < 3000; x++)
		for (uint64_t y = 250; y < 1000; y++)
			if (x % 500 == y) {
				ref.n++;
				ref.sum += x * 1000 + y;
				ref.keysum += y * 7919;
			}
	const uint32_t cfgs[][2] = {{1, 1}, {2, 4}, {3, 9}};
	for (size_t i = 0; i < 3; i++) {
		struct keel_df_ctx *c = ctx_new(cfgs[i][0], cfgs[i][1], 0);
		struct keel_df *l = keel_df_map(keel_df_range(c, 0, 3000, 0), m_left, NULL);
		struct keel_df *r = keel_df_map(keel_df_range(c, 250, 1000, 3), m_right, NULL);
		struct keel_df *j = keel_df_join(l, r, j_pair, NULL, 0);
		struct jsum got = {0};
		char err[KEEL_ERRMSG_LEN];
		cr_assert_eq(keel_df_collect(j, jsum_collect, &got, err), 0, "%s", err);
		cr_assert_eq(got.n, ref.n);
		cr_assert_eq(got.sum, ref.sum);
		cr_assert_eq(got.keysum, ref.keysum);
		/* distinct of the left side's keys (values dropped by a map). */
		struct keel_df *keys = keel_df_distinct(keel_df_map(l, m_keyonly, NULL), 0);
		uint64_t n;
		cr_assert_eq(keel_df_count(keys, &n, err), 0, "%s", err);
		cr_assert_eq(n, 500);
		keel_df_ctx_free(c);
	}
}

/* ---- persist ------------------------------------------------------------ */

static _Atomic uint64_t persist_calls;
static void m_counted(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	atomic_fetch_add(&persist_calls, 1);
	keel_df_emit(out, r->key, r->klen, r->val, r->vlen);
}

Test(df, persist_computes_once)
{
	struct keel_df_ctx *c = ctx_new(3, 4, 0);
	struct keel_df *base = keel_df_persist(keel_df_map(keel_df_range(c, 0, 9999, 0), m_counted, NULL));
	struct keel_df *even = keel_df_filter(base, f_even, NULL);
	uint64_t n1, n2, n3;
	char err[KEEL_ERRMSG_LEN];
	atomic_store(&persist_calls, 0);
	cr_assert_eq(keel_df_count(base, &n1, err), 0, "%s", err);
	cr_assert_eq(keel_df_count(even, &n2, err), 0, "%s", err);
	cr_assert_eq(keel_df_count(even, &n3, err), 0, "%s", err);
	cr_assert_eq(n1, 9999);
	cr_assert_eq(n2, 5000);
	cr_assert_eq(n3, 5000);
	cr_assert_eq(atomic_load(&persist_calls), 9999, "the map ran once per element");
	struct keel_df_stats st;
	keel_df_ctx_stats(c, &st);
	cr_assert_gt(st.persisted_bytes, 9999 * 8);
	/* Unpersisted, it is computed again from its lineage. */
	keel_df_unpersist(base);
	cr_assert_eq(keel_df_count(even, &n3, err), 0, "%s", err);
	cr_assert_eq(n3, 5000);
	cr_assert_eq(atomic_load(&persist_calls), 2 * 9999);
	keel_df_ctx_stats(c, &st);
	cr_assert_eq(st.persisted_bytes, 0);
	keel_df_ctx_free(c);
}

/* ---- text files ---------------------------------------------------------- */

struct textsum {
	uint64_t n, bytes, digits;
};
static int text_collect(void *arg, uint32_t part, const struct keel_df_rec *r)
{
	(void)part;
	struct textsum *s = arg;
	s->n++;
	s->bytes += r->vlen;
	for (size_t i = 0; i < r->vlen; i++)
		s->digits += ((const char *)r->val)[i] == '7';
	return 0;
}

Test(df, text_source_splits_on_lines, .init = make_tmp, .fini = cleanup)
{
	char dir[300];
	snprintf(dir, sizeof dir, "%s/in", tmpbase);
	cr_assert_eq(mkdir(dir, 0700), 0);
	struct textsum ref = {0};
	for (int f = 0; f < 3; f++) {
		char path[400];
		snprintf(path, sizeof path, "%s/f%d.txt", dir, f);
		FILE *fp = fopen(path, "w");
		cr_assert_not_null(fp);
		for (int i = 0; i < 1000 * (f + 1); i++) {
			char line[64];
			int n = snprintf(line, sizeof line, "%d-%d-%0*d", f, i, i % 23, 7);
			fprintf(fp, "%s\n", line);
			ref.n++;
			ref.bytes += (uint64_t)n;
			for (int k = 0; k < n; k++)
				ref.digits += line[k] == '7';
		}
		fclose(fp);
	}
	const char *paths[1] = {dir};
	for (uint32_t shards = 1; shards <= 3; shards += 2) {
		struct keel_df_ctx *c = ctx_new(shards, 0, 0);
		char err[KEEL_ERRMSG_LEN];
		struct keel_df *t = keel_df_text(c, paths, 1, 4096, err);
		cr_assert_not_null(t, "%s", err);
		cr_assert_gt(keel_df_partitions(t), 10, "small splits: many partitions");
		struct textsum got = {0};
		cr_assert_eq(keel_df_collect(t, text_collect, &got, err), 0, "%s", err);
		cr_assert_eq(got.n, ref.n);
		cr_assert_eq(got.bytes, ref.bytes);
		cr_assert_eq(got.digits, ref.digits);
		keel_df_ctx_free(c);
	}
}

/* ---- PageRank -------------------------------------------------------------- */

static void pagerank_ref(const struct keel_df_pagerank *p, double *r)
{
	uint64_t N = p->vertices;
	double d = p->damping > 0 ? p->damping : 0.85;
	double *next = calloc(N, sizeof *next);
	cr_assert_not_null(next);
	for (uint64_t v = 0; v < N; v++)
		r[v] = 1.0 / (double)N;
	for (uint32_t it = 0; it < p->iterations; it++) {
		memset(next, 0, N * sizeof *next);
		for (uint64_t u = 0; u < N; u++) {
			uint32_t deg = keel_df_pr_degree(p->seed, u, p->avg_degree);
			for (uint32_t j = 0; j < deg; j++)
				next[keel_df_pr_edge(p->seed, N, u, j)] += r[u] / deg;
		}
		for (uint64_t v = 0; v < N; v++)
			r[v] = (1 - d) / (double)N + d * next[v];
	}
	free(next);
}

Test(df, pagerank_matches_reference, .init = make_tmp, .fini = cleanup)
{
	struct keel_df_pagerank p = {.vertices = 3000, .avg_degree = 6, .iterations = 5, .seed = 42};
	double *ref = malloc(p.vertices * sizeof *ref), *got = malloc(p.vertices * sizeof *got);
	cr_assert(ref && got);
	pagerank_ref(&p, ref);
	double total = 0;
	for (uint64_t v = 0; v < p.vertices; v++)
		total += ref[v];
	cr_assert_lt(fabs(total - 1.0), 1e-9, "no dangling vertices: ranks sum to 1");
	const uint32_t cfgs[][3] = {{1, 1, 0}, {2, 3, 1}, {4, 8, 0}};
	for (size_t i = 0; i < 3; i++) {
		struct keel_df_ctx *c = ctx_new(cfgs[i][0], cfgs[i][1], cfgs[i][2] ? 1 : 0);
		char err[KEEL_ERRMSG_LEN];
		memset(got, 0, p.vertices * sizeof *got);
		cr_assert_eq(keel_df_pagerank_run(c, &p, got, err), 0, "%s", err);
		double l1 = 0;
		for (uint64_t v = 0; v < p.vertices; v++)
			l1 += fabs(got[v] - ref[v]);
		cr_assert_leq(l1 / (double)p.vertices, 1e-9, "shards %u partitions %u: mean L1 %g",
			      cfgs[i][0], cfgs[i][1], l1 / (double)p.vertices);
		struct keel_df_stats st;
		keel_df_ctx_stats(c, &st);
		/* Only the latest ranks and the links stay in memory. */
		cr_assert_lt(st.persisted_bytes, 2 * (p.vertices * 16 + p.vertices * 8 * 12) + 65536);
		keel_df_ctx_free(c);
	}
	free(ref);
	free(got);
}

/* ---- join + group-by over CSV -------------------------------------------------- */

static void jg_ref(const char *dir, uint32_t maxq, struct keel_df_jg_row *out)
{
	char path[400];
	snprintf(path, sizeof path, "%s/orders.csv", dir);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	uint8_t *pri = calloc(1u << 20, 1);
	unsigned long long ok, ck, lk, ln, q, pc;
	unsigned pr;
	while (fscanf(f, "%llu,%llu,%u\n", &ok, &ck, &pr) == 3) {
		cr_assert_lt(ok, 1u << 20);
		pri[ok] = (uint8_t)pr;
	}
	fclose(f);
	snprintf(path, sizeof path, "%s/lineitem.csv", dir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	memset(out, 0, KEEL_DF_PRIORITIES * sizeof *out);
	while (fscanf(f, "%llu,%llu,%llu,%llu\n", &lk, &ln, &q, &pc) == 4) {
		if (lk >= (1u << 20) || !pri[lk] || q > maxq)
			continue;
		struct keel_df_jg_row *r = &out[pri[lk] - 1];
		r->count++;
		r->quantity += q;
		r->revenue += q * pc;
	}
	fclose(f);
	free(pri);
}

Test(df, joingroup_matches_reference, .init = make_tmp, .fini = cleanup)
{
	char err[KEEL_ERRMSG_LEN], o[400], l[400];
	cr_assert_eq(keel_df_jg_generate(tmpbase, 4000, 7, err), 0, "%s", err);
	snprintf(o, sizeof o, "%s/orders.csv", tmpbase);
	snprintf(l, sizeof l, "%s/lineitem.csv", tmpbase);
	struct keel_df_jg_row ref[KEEL_DF_PRIORITIES], got[KEEL_DF_PRIORITIES];
	jg_ref(tmpbase, 40, ref);
	uint64_t lines = 0;
	for (int i = 0; i < KEEL_DF_PRIORITIES; i++)
		lines += ref[i].count;
	cr_assert_gt(lines, 4000, "the join keeps most lines");
	const uint32_t cfgs[][3] = {{1, 1, 0}, {3, 5, 1}};
	for (size_t i = 0; i < 2; i++) {
		struct keel_df_ctx *c = ctx_new(cfgs[i][0], cfgs[i][1], cfgs[i][2] ? 1 : 0);
		cr_assert_eq(keel_df_jg_run(c, o, l, 40, 8192, got, err), 0, "%s", err);
		for (int p = 0; p < KEEL_DF_PRIORITIES; p++) {
			cr_assert_eq(got[p].count, ref[p].count, "priority %d", p + 1);
			cr_assert_eq(got[p].quantity, ref[p].quantity, "priority %d", p + 1);
			cr_assert_eq(got[p].revenue, ref[p].revenue, "priority %d", p + 1);
		}
		keel_df_ctx_free(c);
	}
}

/* ---- bad input -------------------------------------------------------------- */

Test(df, malformed_csv_row_named, .init = make_tmp, .fini = cleanup)
{
	char err[KEEL_ERRMSG_LEN], o[400], l[400];
	cr_assert_eq(keel_df_jg_generate(tmpbase, 500, 3, err), 0, "%s", err);
	snprintf(o, sizeof o, "%s/orders.csv", tmpbase);
	snprintf(l, sizeof l, "%s/lineitem.csv", tmpbase);
	/* Break one row in the middle of lineitem.csv: find where it starts. */
	FILE *f = fopen(l, "r+");
	cr_assert_not_null(f);
	char line[256];
	long off = 0;
	for (int i = 0; i < 700 && fgets(line, sizeof line, f); i++)
		off = ftell(f);
	cr_assert_eq(fseek(f, off, SEEK_SET), 0);
	cr_assert_eq(fputc('x', f), 'x');
	fclose(f);
	struct keel_df_jg_row got[KEEL_DF_PRIORITIES];
	for (uint32_t shards = 1; shards <= 2; shards++) {
		struct keel_df_ctx *c = ctx_new(shards, 3, 0);
		int rc = keel_df_jg_run(c, o, l, 50, 4096, got, err);
		cr_assert_eq(rc, KEEL_EBADINPUT, "%s", err);
		char want[512];
		snprintf(want, sizeof want, "%s at byte %ld", l, off);
		cr_assert_not_null(strstr(err, want), "names the file and offset: %s", err);
		cr_assert_not_null(strstr(err, "malformed lineitem row 'x"), "%s", err);
		keel_df_ctx_free(c);
	}
	/* A missing input is named before anything runs. */
	struct keel_df_ctx *c = ctx_new(1, 1, 0);
	const char *missing[1] = {"/nonexistent/keel-df/lineitem.csv"};
	cr_assert_null(keel_df_text(c, missing, 1, 0, err));
	cr_assert_not_null(strstr(err, "/nonexistent/keel-df/lineitem.csv"), "%s", err);
	keel_df_ctx_free(c);
}

static void m_twice(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	keel_df_emit(out, r->key, r->klen, r->val, r->vlen);
	keel_df_emit(out, r->key, r->klen, r->val, r->vlen);
}
static void m_short_value(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	keel_df_emit(out, "k", 1, r->val, 4);
}

Test(df, misused_callbacks_fail_the_task)
{
	char err[KEEL_ERRMSG_LEN];
	uint64_t n;
	struct keel_df_ctx *c = ctx_new(2, 4, 0);
	struct keel_df *d = keel_df_map(keel_df_range(c, 0, 100, 0), m_twice, NULL);
	cr_assert_eq(keel_df_count(d, &n, err), KEEL_EBADJOB);
	cr_assert_not_null(strstr(err, "map emitted 2 elements"), "%s", err);
	cr_assert_not_null(strstr(err, "partition"), "%s", err);
	/* reduce_by_key values must be value_size bytes. */
	struct keel_df *r = keel_df_reduce_by_key(keel_df_flat_map(keel_df_range(c, 0, 100, 0),
								    m_short_value, NULL),
						  8, c_add, NULL, 0);
	cr_assert_eq(keel_df_count(r, &n, err), KEEL_EBADJOB, "%s", err);
	cr_assert_not_null(strstr(err, "value_size"), "%s", err);
	/* The context keeps working after a failed action. */
	struct keel_df *ok = keel_df_range(c, 0, 100, 0);
	cr_assert_eq(keel_df_count(ok, &n, err), 0, "%s", err);
	cr_assert_eq(n, 100);
	keel_df_ctx_free(c);
}

/* ---- jobs as shared objects --------------------------------------------- */

Test(df, job_shared_object, .init = make_tmp, .fini = cleanup)
{
	char in[400], outp[400], err[KEEL_ERRMSG_LEN];
	snprintf(in, sizeof in, "%s/words.txt", tmpbase);
	snprintf(outp, sizeof outp, "%s/out.txt", tmpbase);
	FILE *f = fopen(in, "w");
	cr_assert_not_null(f);
	uint64_t ref[10] = {0};
	for (int i = 0; i < 3000; i++) {
		int a = (i * 7) % 10, b = (i * i) % 10;
		fprintf(f, "w%d  w%d\tw%d\n", a, b, a);
		ref[a] += 2;
		ref[b]++;
	}
	fclose(f);
	struct keel_df_jobref job;
	cr_assert_eq(keel_df_job_open(&job, KEEL_TEST_DF_JOB, err), 0, "%s", err);
	struct keel_df_ctx *c = ctx_new(2, 3, 0);
	FILE *out = fopen(outp, "w+");
	cr_assert_not_null(out);
	cr_assert_eq(job.job->run(c, in, out, err), 0, "%s", err);
	rewind(out);
	uint64_t got[10] = {0};
	char word[32];
	unsigned long long n;
	int lines = 0;
	while (fscanf(out, "w%31s\t%llu\n", word, &n) == 2) {
		int w = atoi(word);
		cr_assert(w >= 0 && w < 10);
		got[w] += n;
		lines++;
	}
	fclose(out);
	cr_assert_eq(lines, 10);
	for (int w = 0; w < 10; w++)
		cr_assert_eq(got[w], ref[w], "w%d", w);
	keel_df_ctx_free(c);
	keel_df_job_close(&job);
	/* Missing symbol, missing file: refused, naming the path and why. */
	cr_assert_eq(keel_df_job_open(&job, KEEL_TEST_NOSYM_JOB, err), KEEL_EBADJOB);
	cr_assert_not_null(strstr(err, "keel_df_job"), "%s", err);
	cr_assert_not_null(strstr(err, KEEL_TEST_NOSYM_JOB), "%s", err);
	cr_assert_eq(keel_df_job_open(&job, "/nonexistent/libx.so", err), KEEL_EBADJOB);
	cr_assert_not_null(strstr(err, "/nonexistent/libx.so"), "%s", err);
}

/* A join of two persisted datasets that came out of shuffles with the same
 * partition count reads them in place (no shuffle of its own), with the
 * same answer as the shuffled join; after one side is unpersisted, the
 * join shuffles it again. */
static void j_sum(void *arg, const void *key, size_t klen, const void *lv, size_t ll,
		  const void *rv, size_t rl, struct keel_df_emit *out)
{
	(void)arg, (void)ll, (void)rl;
	uint64_t x, y;
	memcpy(&x, lv, 8);
	memcpy(&y, rv, 8);
	uint64_t z = x * 3 + y;
	keel_df_emit(out, key, klen, &z, 8);
}

Test(df, copartitioned_join)
{
	for (uint32_t shards = 1; shards <= 3; shards += 2) {
		struct keel_df_ctx *c = ctx_new(shards, 5, 0);
		struct keel_df *a = keel_df_persist(keel_df_reduce_by_key(
			keel_df_map(keel_df_range(c, 0, 40000, 0), m_mod_key, NULL), 8, c_add, NULL, 0));
		struct keel_df *b = keel_df_persist(keel_df_reduce_by_key(
			keel_df_map(keel_df_range(c, 1000, 30000, 3), m_mod_key, NULL), 8, c_add, NULL, 0));
		char err[KEEL_ERRMSG_LEN];
		uint64_t na, nb;
		cr_assert_eq(keel_df_count(a, &na, err), 0, "%s", err);
		cr_assert_eq(keel_df_count(b, &nb, err), 0, "%s", err);
		struct keel_df_stats s0, s1, s2;
		keel_df_ctx_stats(c, &s0);
		struct jsum co = {0}, sh = {0}, again = {0};
		cr_assert_eq(keel_df_collect(keel_df_join(a, b, j_sum, NULL, 0), jsum_collect, &co, err), 0,
			     "%s", err);
		keel_df_ctx_stats(c, &s1);
		cr_assert_eq(s1.shuffled, s0.shuffled, "co-partitioned: nothing shuffled");
		/* Another partition count: both sides shuffled. */
		cr_assert_eq(keel_df_collect(keel_df_join(a, b, j_sum, NULL, 7), jsum_collect, &sh, err), 0,
			     "%s", err);
		keel_df_ctx_stats(c, &s2);
		cr_assert_eq(s2.shuffled - s1.shuffled, na + nb);
		cr_assert_eq(co.n, sh.n);
		cr_assert_eq(co.sum, sh.sum);
		cr_assert_eq(co.keysum, sh.keysum);
		cr_assert_eq(co.n, NKEYS < nb ? NKEYS : nb);
		struct keel_df *j = keel_df_join(a, b, j_sum, NULL, 0);
		cr_assert_eq(keel_df_collect(j, jsum_collect, &again, err), 0, "%s", err);
		keel_df_unpersist(b);
		struct jsum after = {0};
		cr_assert_eq(keel_df_collect(j, jsum_collect, &after, err), 0, "%s", err);
		cr_assert_eq(after.sum, co.sum, "recomputed from lineage, shuffled");
		cr_assert_eq(again.sum, co.sum);
		keel_df_ctx_free(c);
	}
}

/* A persisted dataset bigger than the per-shard budget fails naming the
 * stage and partition; the budget is given back, and a smaller one fits. */
Test(df, persist_over_budget_fails)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_df_config cfg = {.shards = 2, .partitions = 4, .persist_budget = 16000};
	struct keel_df_ctx *c = keel_df_ctx_new(&cfg, err);
	cr_assert_not_null(c, "%s", err);
	/* 16 bytes an element: 2,000 fit a shard's 16,000 bytes at most. */
	struct keel_df *big = keel_df_persist(keel_df_range(c, 0, 10000, 0));
	uint64_t n;
	cr_assert_eq(keel_df_count(big, &n, err), KEEL_ETOOBIG, "%s", err);
	cr_assert_not_null(strstr(err, "exceed its budget of 16000 bytes"), "%s", err);
	cr_assert_not_null(strstr(err, "stage 1 partition"), "%s", err);
	struct keel_df_stats st;
	keel_df_ctx_stats(c, &st);
	cr_assert_eq(st.persisted_bytes, 0);
	struct keel_df *small = keel_df_persist(keel_df_range(c, 0, 1500, 0));
	cr_assert_eq(keel_df_count(small, &n, err), 0, "%s", err);
	cr_assert_eq(n, 1500);
	keel_df_unpersist(small);
	cr_assert_eq(keel_df_count(small, &n, err), 0, "%s", err);
	/* Not persisted any more: no budget needed, all of it counted. */
	keel_df_unpersist(big);
	cr_assert_eq(keel_df_count(big, &n, err), 0, "%s", err);
	cr_assert_eq(n, 10000);
	keel_df_ctx_free(c);
}
