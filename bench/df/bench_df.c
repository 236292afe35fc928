/*
 * bench/df: the dataflow's built-in jobs against peers run in the same run
 * (docs/design/dataflow.md, BENCH.md).
 *
 *   pagerank   keel df (all CPUs) vs a single-threaded C reference: the
 *              same generated graph built into CSR arrays, then push
 *              iterations over them (both timings include building the
 *              graph from the generator);
 *   joingroup  keel df vs a single-threaded C reference reading the same
 *              two CSV files (orders into a dense array by key, lineitem
 *              streamed through a hand-written parser).
 * Peers not run here say so in their line ("peer_value":null, "note"):
 * pandas and scipy (python3-pandas / python3-scipy, when not installed),
 * and chained keel map-reduce jobs (not written yet).
 * Each case alternates keel and peer, --runs times, and reports medians.
 *
 *   bench-df [--quick] [--runs N] [--dir DIR]
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keel/dataflow.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- the single-threaded references -------------------------------------- */

static void pagerank_ref(const struct keel_df_pagerank *p, double *r)
{
	uint64_t N = p->vertices;
	uint64_t *off = malloc((N + 1) * sizeof *off);
	uint64_t E = 0;
	for (uint64_t u = 0; u < N; u++) {
		off[u] = E;
		E += keel_df_pr_degree(p->seed, u, p->avg_degree);
	}
	off[N] = E;
	uint32_t *dst = malloc(E * sizeof *dst);
	for (uint64_t u = 0; u < N; u++)
		for (uint64_t e = off[u]; e < off[u + 1]; e++)
			dst[e] = (uint32_t)keel_df_pr_edge(p->seed, N, u, (uint32_t)(e - off[u]));
	double *next = malloc(N * sizeof *next), d = 0.85;
	for (uint64_t v = 0; v < N; v++)
		r[v] = 1.0 / (double)N;
	for (uint32_t it = 0; it < p->iterations; it++) {
		memset(next, 0, N * sizeof *next);
		for (uint64_t u = 0; u < N; u++) {
			double c = r[u] / (double)(off[u + 1] - off[u]);
			for (uint64_t e = off[u]; e < off[u + 1]; e++)
				next[dst[e]] += c;
		}
		for (uint64_t v = 0; v < N; v++)
			r[v] = (1 - d) / (double)N + d * next[v];
	}
	free(off);
	free(dst);
	free(next);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	if (b)
		b[n] = 0;
	*len = (size_t)n;
	return b;
}

static inline uint64_t num(const char **s)
{
	uint64_t v = 0;
	while (**s >= '0' && **s <= '9')
		v = v * 10 + (uint64_t)(*(*s)++ - '0');
	(*s)++; /* ',' or '\n' */
	return v;
}

static int jg_ref(const char *orders, const char *lineitem, uint32_t maxq, struct keel_df_jg_row *out)
{
	size_t ol, ll;
	char *o = slurp(orders, &ol), *l = slurp(lineitem, &ll);
	if (!o || !l)
		return -1;
	uint64_t n = 0;
	for (size_t i = 0; i < ol; i++)
		n += o[i] == '\n';
	uint8_t *pri = calloc(n + 2, 1);
	for (const char *s = o, *e = o + ol; s < e;) {
		uint64_t k = num(&s);
		num(&s);
		uint64_t p = num(&s);
		if (k <= n)
			pri[k] = (uint8_t)p;
	}
	memset(out, 0, KEEL_DF_PRIORITIES * sizeof *out);
	for (const char *s = l, *e = l + ll; s < e;) {
		uint64_t k = num(&s);
		num(&s);
		uint64_t q = num(&s), pc = num(&s);
		if (k > n || !pri[k] || q > maxq)
			continue;
		struct keel_df_jg_row *r = &out[pri[k] - 1];
		r->count++;
		r->quantity += q;
		r->revenue += q * pc;
	}
	free(o);
	free(l);
	free(pri);
	return 0;
}

/* ---- lines ------------------------------------------------------------------ */

static void line(const char *bench_case, double keel, const char *peer, double peer_v,
		 double target, const char *note)
{
	printf("{\"bench\":\"df\",\"case\":\"%s\",\"unit\":\"s\",\"keel\":%.3f", bench_case, keel);
	if (peer && peer_v > 0) {
		/* keel / peer, as BENCH.md says: seconds, so lower is better;
		 * the "k times faster" is a target of 1/k. */
		double ratio = keel / peer_v;
		printf(",\"peer\":\"%s\",\"peer_value\":%.3f,\"ratio\":%.2f,\"better\":\"lower\","
		       "\"target\":%.2f,\"meets\":%s",
		       peer, peer_v, ratio, 1.0 / target, ratio <= 1.0 / target ? "true" : "false");
	} else if (peer) {
		printf(",\"peer\":\"%s\",\"peer_value\":null", peer);
	}
	if (note)
		printf(",\"note\":\"%s\"", note);
	printf("}\n");
}

int main(int argc, char **argv)
{
	bool quick = false;
	int runs = 3;
	const char *dir = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else {
			fprintf(stderr, "usage: bench-df [--quick] [--runs N] [--dir DIR]\n");
			return 2;
		}
	}
	if (quick)
		runs = 1;
	if (runs < 1 || runs > 99)
		runs = 3;
	char err[KEEL_ERRMSG_LEN], tmp[512];
	snprintf(tmp, sizeof tmp, "%s/keel-bench-df.XXXXXX", dir ? dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmp)) {
		perror(tmp);
		return 1;
	}
	struct keel_df_config cfg = {0};
	struct keel_df_pagerank p = {.vertices = quick ? 20000 : 200000, .avg_degree = 10,
				     .iterations = quick ? 3 : 10, .seed = 1};
	uint64_t orders = quick ? 20000 : 1000000;
	double tk[99], tr[99], tkj[99], trj[99], l1 = 0;
	bool same = true;
	double *rk = malloc(p.vertices * sizeof *rk), *rr = malloc(p.vertices * sizeof *rr);
	if (keel_df_jg_generate(tmp, orders, 1, err)) {
		fprintf(stderr, "bench-df: %s\n", err);
		return 1;
	}
	char of[600], lf[600];
	snprintf(of, sizeof of, "%s/orders.csv", tmp);
	snprintf(lf, sizeof lf, "%s/lineitem.csv", tmp);
	struct stat st;
	stat(lf, &st);
	uint32_t shards = 0;
	for (int r = 0; r < runs; r++) {
		struct keel_df_ctx *c = keel_df_ctx_new(&cfg, err);
		if (!c) {
			fprintf(stderr, "bench-df: %s\n", err);
			return 1;
		}
		shards = keel_df_ctx_shards(c);
		double t0 = now_s();
		if (keel_df_pagerank_run(c, &p, rk, err)) {
			fprintf(stderr, "bench-df: %s\n", err);
			return 1;
		}
		tk[r] = now_s() - t0;
		keel_df_ctx_free(c);
		t0 = now_s();
		pagerank_ref(&p, rr);
		tr[r] = now_s() - t0;
		l1 = 0;
		for (uint64_t v = 0; v < p.vertices; v++)
			l1 += fabs(rk[v] - rr[v]);
		l1 /= (double)p.vertices;

		struct keel_df_jg_row a[KEEL_DF_PRIORITIES], b[KEEL_DF_PRIORITIES];
		c = keel_df_ctx_new(&cfg, err);
		t0 = now_s();
		if (keel_df_jg_run(c, of, lf, 50, 0, a, err)) {
			fprintf(stderr, "bench-df: %s\n", err);
			return 1;
		}
		tkj[r] = now_s() - t0;
		keel_df_ctx_free(c);
		t0 = now_s();
		if (jg_ref(of, lf, 50, b)) {
			fprintf(stderr, "bench-df: reading %s\n", tmp);
			return 1;
		}
		trj[r] = now_s() - t0;
		same = same && !memcmp(a, b, sizeof a);
	}
	double k = median(tk, runs), ref = median(tr, runs), kj = median(tkj, runs),
	       refj = median(trj, runs);
	printf("bench-df: %u shards, %d run(s)%s\n", shards, runs, quick ? " (quick)" : "");
	printf("%-34s %10s %10s %8s\n", "case", "keel s", "peer s", "speedup");
	printf("pagerank %" PRIu64 " v, %u it (c-ref) %10.3f %10.3f %8.2f   mean L1 %.2g\n", p.vertices,
	       p.iterations, k, ref, ref / k, l1);
	printf("joingroup %.0f MB csv (c-ref)     %10.3f %10.3f %8.2f   %s\n", (double)st.st_size / 1e6,
	       kj, refj, refj / kj, same ? "same answer" : "DIFFERENT ANSWER");
	line("pagerank_s", k, "c-reference-single-thread", ref, 1.5, NULL);
	line("pagerank_s", k, "scipy-sparse", 0, 3.0, "not run: bench/df has no scipy peer yet");
	line("pagerank_s", k, "keel-mr-chained", 0, 3.0, "not run: no chained map-reduce PageRank yet");
	line("joingroup_s", kj, "c-reference-single-thread", refj, 1.5, NULL);
	line("joingroup_s", kj, "pandas", 0, 2.0,
	     "not run: python3-pandas is not installed here and bench/df has no pandas peer yet");
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "bench-df: could not remove %s\n", tmp);
	free(rk);
	free(rr);
	return l1 <= 1e-9 && same ? 0 : 1;
}
