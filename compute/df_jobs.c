/*
 * compute/df_jobs.c — the dataflow's built-in jobs: PageRank on a generated
 * graph, and a join + group-by over two generated CSV tables. Both are
 * plain drivers on the public API (include/keel/dataflow.h), written the
 * way a user's job would be.
 *
 * Keys are big-endian u64 so that byte order is numeric order.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/dataflow.h"

static inline uint64_t mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline void be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint64_t be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* ---- PageRank ---------------------------------------------------------- */

uint32_t keel_df_pr_degree(uint64_t seed, uint64_t u, uint32_t avg_degree)
{
	if (avg_degree <= 1)
		return 1;
	return 1 + (uint32_t)(mix64(seed * 0x100000001b3ull ^ u) % (2ull * avg_degree - 1));
}

uint64_t keel_df_pr_edge(uint64_t seed, uint64_t vertices, uint64_t u, uint32_t j)
{
	uint64_t h = mix64(mix64(seed ^ 0x5851f42d4c957f2dull) ^ (u * 0x9E3779B97F4A7C15ull + j));
	/* x^3 on [0,1): in-degrees follow a power law, low ids get most. */
	double x = (double)(h >> 11) * 0x1.0p-53;
	uint64_t v = (uint64_t)((double)vertices * x * x * x);
	return v < vertices ? v : vertices - 1;
}

struct pr {
	const struct keel_df_pagerank *p;
	double base, damping;
};

static void pr_edges(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	const struct pr *pr = arg;
	uint64_t u;
	memcpy(&u, r->val, 8);
	uint8_t k[8], v[8];
	be64_put(k, u);
	uint32_t deg = keel_df_pr_degree(pr->p->seed, u, pr->p->avg_degree);
	for (uint32_t j = 0; j < deg; j++) {
		be64_put(v, keel_df_pr_edge(pr->p->seed, pr->p->vertices, u, j));
		if (keel_df_emit(out, k, 8, v, 8))
			return;
	}
}

/* Adjacency list as one value: the destinations, 8 bytes each. */
static void pr_links(void *arg, const void *key, size_t klen, struct keel_df_values *vals,
		     struct keel_df_emit *out)
{
	(void)arg;
	size_t n = 0, cap = 16;
	uint8_t *buf = malloc(cap * 8);
	const void *v;
	size_t vl;
	while (buf && keel_df_values_next(vals, &v, &vl)) {
		if (n == cap) {
			uint8_t *b = realloc(buf, (cap *= 2) * 8);
			if (!b) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = b;
		}
		memcpy(buf + n * 8, v, 8);
		n++;
	}
	if (!buf) {
		keel_df_fail(out, -ENOMEM, "pagerank: adjacency list");
		return;
	}
	keel_df_emit(out, key, klen, buf, n * 8);
	free(buf);
}

static void pr_init(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	const struct pr *pr = arg;
	double v = 1.0 / (double)pr->p->vertices;
	keel_df_emit(out, r->key, r->klen, &v, sizeof v);
}

static void pr_contrib(void *arg, const void *key, size_t klen, const void *lval, size_t llen,
		       const void *rval, size_t rlen, struct keel_df_emit *out)
{
	(void)arg;
	if (rlen != 8 || llen % 8 || llen == 0) {
		keel_df_fail(out, KEEL_ECORRUPT, "pagerank: a rank of %zu bytes, links of %zu", rlen, llen);
		return;
	}
	double r;
	memcpy(&r, rval, 8);
	size_t deg = llen / 8;
	double c = r / (double)deg;
	const uint8_t *dst = lval;
	for (size_t i = 0; i < deg; i++)
		if (keel_df_emit(out, dst + i * 8, 8, &c, 8))
			return;
	/* Every vertex keeps a rank even with no in-edge. */
	double zero = 0.0;
	keel_df_emit(out, key, klen, &zero, 8);
}

static void pr_add(void *arg, void *acc, const void *val, size_t vsize)
{
	(void)arg, (void)vsize;
	double a, b;
	memcpy(&a, acc, 8);
	memcpy(&b, val, 8);
	a += b;
	memcpy(acc, &a, 8);
}

static void pr_apply(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	const struct pr *pr = arg;
	double s;
	memcpy(&s, r->val, 8);
	double v = pr->base + pr->damping * s;
	keel_df_emit(out, r->key, r->klen, &v, 8);
}

struct pr_out {
	double *ranks;
	uint64_t vertices, seen;
};

static int pr_collect(void *arg, uint32_t part, const struct keel_df_rec *r)
{
	(void)part;
	struct pr_out *o = arg;
	if (r->klen != 8 || r->vlen != 8)
		return KEEL_ECORRUPT;
	uint64_t u = be64_get(r->key);
	if (u >= o->vertices)
		return KEEL_ECORRUPT;
	memcpy(&o->ranks[u], r->val, 8);
	o->seen++;
	return 0;
}

int keel_df_pagerank_run(struct keel_df_ctx *ctx, const struct keel_df_pagerank *p, double *ranks,
			 char *errmsg)
{
	if (p->vertices == 0 || p->avg_degree == 0)
		return keel_errmsg_set(errmsg, KEEL_EBADINPUT, "pagerank: %s",
				       "vertices and avg_degree must be >= 1");
	struct pr pr = {p, 0, p->damping > 0 ? p->damping : 0.85};
	pr.base = (1.0 - pr.damping) / (double)p->vertices;
	struct keel_df *edges = keel_df_flat_map(keel_df_range(ctx, 0, p->vertices, p->partitions),
						 pr_edges, &pr);
	struct keel_df *links =
		keel_df_persist(keel_df_group_by_key(edges, pr_links, NULL, p->partitions));
	struct keel_df *rk = keel_df_persist(keel_df_map(links, pr_init, &pr));
	if (!rk)
		return keel_errmsg_set(errmsg, -ENOMEM, "pagerank: %s", keel_df_ctx_error(ctx));
	for (uint32_t it = 0; it < p->iterations; it++) {
		struct keel_df *contrib = keel_df_join(links, rk, pr_contrib, NULL, p->partitions);
		struct keel_df *sums = keel_df_reduce_by_key(contrib, 8, pr_add, NULL, p->partitions);
		struct keel_df *next = keel_df_persist(keel_df_map(sums, pr_apply, &pr));
		uint64_t n;
		int rc = next ? keel_df_count(next, &n, errmsg)
			      : keel_errmsg_set(errmsg, -ENOMEM, "pagerank: %s", keel_df_ctx_error(ctx));
		if (rc)
			return rc;
		if (n != p->vertices)
			return keel_errmsg_set(errmsg, KEEL_ECORRUPT,
					       "pagerank: iteration %u has %" PRIu64 " ranks for %" PRIu64
					       " vertices", it + 1, n, p->vertices);
		keel_df_unpersist(rk);
		rk = next;
	}
	struct pr_out o = {ranks, p->vertices, 0};
	int rc = keel_df_collect(rk, pr_collect, &o, errmsg);
	if (rc)
		return rc;
	if (o.seen != p->vertices)
		return keel_errmsg_set(errmsg, KEEL_ECORRUPT, "pagerank: %" PRIu64 " ranks for %" PRIu64
				       " vertices", o.seen, p->vertices);
	return 0;
}

/* ---- join + group-by over CSV ------------------------------------------ */

static int write_file(const char *dir, const char *name, uint64_t orders, uint64_t seed,
		      bool lineitem, char *errmsg)
{
	char path[1024], tmp[1100];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%d", dir, name, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f)
		return keel_errmsg_set(errmsg, -errno, "df: create %s", tmp);
	for (uint64_t o = 1; o <= orders; o++) {
		uint64_t h = mix64(seed ^ o * 0x9E3779B97F4A7C15ull);
		if (!lineitem) {
			fprintf(f, "%" PRIu64 ",%" PRIu64 ",%u\n", o, h % 100000, (unsigned)(h >> 40) % 5 + 1);
			continue;
		}
		/* Every 10th order's lines name an order that does not exist. */
		uint64_t key = o % 10 == 0 ? orders + o : o;
		unsigned lines = 1 + (unsigned)((h >> 20) % 7);
		for (unsigned l = 1; l <= lines; l++) {
			uint64_t g = mix64(h + l);
			fprintf(f, "%" PRIu64 ",%u,%u,%u\n", key, l, (unsigned)(g % 50) + 1,
				100 + (unsigned)((g >> 16) % 99901));
		}
	}
	if (ferror(f) | (fclose(f) != 0)) {
		unlink(tmp);
		return keel_errmsg_set(errmsg, -EIO, "df: write %s", tmp);
	}
	if (rename(tmp, path)) {
		int e = -errno;
		unlink(tmp);
		return keel_errmsg_set(errmsg, e, "df: rename to %s", path);
	}
	return 0;
}

int keel_df_jg_generate(const char *dir, uint64_t orders, uint64_t seed, char *errmsg)
{
	int rc = write_file(dir, "orders.csv", orders, seed, false, errmsg);
	return rc ? rc : write_file(dir, "lineitem.csv", orders, seed, true, errmsg);
}

/* Exactly n comma-separated decimal fields, each < 2^63. */
static bool parse_fields(const struct keel_df_rec *r, uint64_t *f, int n)
{
	const char *s = r->val, *e = s + r->vlen;
	for (int i = 0; i < n; i++) {
		if (s == e || *s < '0' || *s > '9')
			return false;
		uint64_t v = 0;
		while (s < e && *s >= '0' && *s <= '9') {
			if (v > (UINT64_MAX >> 1) / 10)
				return false;
			v = v * 10 + (uint64_t)(*s++ - '0');
		}
		f[i] = v;
		if (i + 1 < n) {
			if (s == e || *s != ',')
				return false;
			s++;
		}
	}
	if (s < e && *s == '\r')
		s++;
	return s == e;
}

static void jg_orders(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	uint64_t f[3];
	if (!parse_fields(r, f, 3) || f[2] < 1 || f[2] > KEEL_DF_PRIORITIES) {
		keel_df_fail(out, KEEL_EBADINPUT,
			     "malformed orders row '%.*s' (want o_orderkey,o_custkey,o_priority 1..5)",
			     (int)(r->vlen < 60 ? r->vlen : 60), (const char *)r->val);
		return;
	}
	uint8_t k[8], pri = (uint8_t)f[2];
	be64_put(k, f[0]);
	keel_df_emit(out, k, 8, &pri, 1);
}

static void jg_lines(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	uint64_t f[4];
	if (!parse_fields(r, f, 4) || f[2] > UINT32_MAX || f[3] > UINT32_MAX) {
		keel_df_fail(out, KEEL_EBADINPUT,
			     "malformed lineitem row '%.*s' (want l_orderkey,l_linenumber,l_quantity,"
			     "l_price_cents)",
			     (int)(r->vlen < 60 ? r->vlen : 60), (const char *)r->val);
		return;
	}
	uint8_t k[8];
	uint64_t v[2] = {f[2], f[3]};
	be64_put(k, f[0]);
	keel_df_emit(out, k, 8, v, sizeof v);
}

static bool jg_filter(void *arg, const struct keel_df_rec *r)
{
	uint64_t q;
	memcpy(&q, r->val, 8);
	return q <= *(const uint32_t *)arg;
}

static void jg_join(void *arg, const void *key, size_t klen, const void *lval, size_t llen,
		    const void *rval, size_t rlen, struct keel_df_emit *out)
{
	(void)arg, (void)key, (void)klen, (void)llen, (void)rlen;
	uint64_t qp[2];
	memcpy(qp, lval, sizeof qp);
	uint64_t agg[3] = {1, qp[0], qp[0] * qp[1]};
	keel_df_emit(out, rval, 1, agg, sizeof agg);
}

static void jg_add(void *arg, void *acc, const void *val, size_t vsize)
{
	(void)arg, (void)vsize;
	uint64_t a[3], b[3];
	memcpy(a, acc, sizeof a);
	memcpy(b, val, sizeof b);
	for (int i = 0; i < 3; i++)
		a[i] += b[i];
	memcpy(acc, a, sizeof a);
}

static int jg_collect(void *arg, uint32_t part, const struct keel_df_rec *r)
{
	(void)part;
	struct keel_df_jg_row *out = arg;
	uint8_t pri = *(const uint8_t *)r->key;
	if (r->klen != 1 || r->vlen != 24 || pri < 1 || pri > KEEL_DF_PRIORITIES)
		return KEEL_ECORRUPT;
	uint64_t a[3];
	memcpy(a, r->val, sizeof a);
	out[pri - 1] = (struct keel_df_jg_row){a[0], a[1], a[2]};
	return 0;
}

int keel_df_jg_run(struct keel_df_ctx *ctx, const char *orders_csv, const char *lineitem_csv,
		   uint32_t max_quantity, uint64_t split_size,
		   struct keel_df_jg_row out[KEEL_DF_PRIORITIES], char *errmsg)
{
	memset(out, 0, KEEL_DF_PRIORITIES * sizeof *out);
	const char *op[1] = {orders_csv}, *lp[1] = {lineitem_csv};
	struct keel_df *orders = keel_df_text(ctx, op, 1, split_size, errmsg);
	if (!orders)
		return KEEL_EBADINPUT;
	struct keel_df *lines = keel_df_text(ctx, lp, 1, split_size, errmsg);
	if (!lines)
		return KEEL_EBADINPUT;
	struct keel_df *o = keel_df_map(orders, jg_orders, NULL);
	struct keel_df *l = keel_df_filter(keel_df_map(lines, jg_lines, NULL), jg_filter, &max_quantity);
	struct keel_df *j = keel_df_join(l, o, jg_join, NULL, 0);
	struct keel_df *g = keel_df_reduce_by_key(j, 24, jg_add, NULL, 0);
	if (!g)
		return keel_errmsg_set(errmsg, -ENOMEM, "joingroup: %s", keel_df_ctx_error(ctx));
	return keel_df_collect(g, jg_collect, out, errmsg);
}

/* ---- jobs as shared objects ---------------------------------------------- */

int keel_df_job_open(struct keel_df_jobref *ref, const char *path, char *errmsg)
{
	memset(ref, 0, sizeof *ref);
	dlerror();
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		const char *why = dlerror();
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "df: cannot load job %s: %s", path,
				       why ? why : "dlopen failed");
	}
	const struct keel_df_job *job = dlsym(dl, KEEL_DF_JOB_SYMBOL);
	const char *bad = NULL;
	if (!job)
		bad = "does not export the symbol " KEEL_DF_JOB_SYMBOL;
	else if (job->abi != KEEL_DF_ABI)
		bad = "was built for another dataflow ABI (keel_df_job.abi != KEEL_DF_ABI)";
	else if (!job->run)
		bad = "has no run callback (keel_df_job.run is NULL)";
	if (bad) {
		dlclose(dl);
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "df: job %s %s", path, bad);
	}
	ref->job = job;
	ref->dl = dl;
	return 0;
}

void keel_df_job_close(struct keel_df_jobref *ref)
{
	if (ref->dl)
		dlclose(ref->dl);
	memset(ref, 0, sizeof *ref);
}
