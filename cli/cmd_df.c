/*
 * keel df — run the dataflow's built-in jobs (include/keel/dataflow.h).
 *
 *   keel df run pagerank [--vertices N] [--degree D] [--iterations I] [options]
 *   keel df run joingroup [--orders N | --input-dir DIR] [options]
 *   keel df jobs
 *
 * On a terminal, `run` redraws one progress line on stderr per stage (the
 * stage, what it ends in, its tasks) and prints a summary; --json prints one
 * JSON object instead. --check also runs a single-threaded reference here
 * and reports the difference (PageRank: mean L1 per vertex; join + group-by:
 * exact). The job runs in this process on --shards worker shards; across
 * nodes (--local-cluster) is not built yet (docs/design/dataflow.md).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keel/dataflow.h"

struct df_prog {
	bool tty, quiet;
};

static void on_stage(void *arg, const struct keel_df_stage_info *st)
{
	struct df_prog *p = arg;
	if (!p->tty || p->quiet)
		return;
	fprintf(stderr, "\r\033[Kstage %u  ends in %-7s  %u tasks  %" PRIu64 " in  %.1f ms", st->stage,
		st->ends_in, st->tasks, st->records_in, (double)st->ns / 1e6);
	fflush(stderr);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The single-threaded reference --check compares with: the definition of
 * keel_df_pagerank, one loop per iteration. */
static int pagerank_ref(const struct keel_df_pagerank *p, double *r)
{
	uint64_t N = p->vertices;
	double d = p->damping > 0 ? p->damping : 0.85;
	double *next = malloc(N * sizeof *next);
	if (!next)
		return -ENOMEM;
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
	return 0;
}

static int jg_ref(const char *orders, const char *lineitem, uint32_t maxq,
		  struct keel_df_jg_row *out, char *errmsg)
{
	FILE *f = fopen(orders, "r");
	if (!f)
		return keel_errmsg_set(errmsg, -errno, "check: %s", orders);
	size_t cap = 1u << 16;
	uint8_t *pri = calloc(cap, 1);
	unsigned long long ok, ck, lk, ln, q, pc;
	unsigned pr;
	int rc = 0;
	while (pri && fscanf(f, "%llu,%llu,%u\n", &ok, &ck, &pr) == 3) {
		while (ok >= cap) {
			uint8_t *n = realloc(pri, cap * 2);
			if (!n) {
				free(pri);
				pri = NULL;
				break;
			}
			memset(n + cap, 0, cap);
			pri = n;
			cap *= 2;
		}
		if (pri)
			pri[ok] = (uint8_t)pr;
	}
	fclose(f);
	if (!pri)
		return keel_errmsg_set(errmsg, -ENOMEM, "check: orders");
	memset(out, 0, KEEL_DF_PRIORITIES * sizeof *out);
	f = fopen(lineitem, "r");
	if (!f) {
		free(pri);
		return keel_errmsg_set(errmsg, -errno, "check: %s", lineitem);
	}
	while (fscanf(f, "%llu,%llu,%llu,%llu\n", &lk, &ln, &q, &pc) == 4) {
		if (lk >= cap || !pri[lk] || pri[lk] > KEEL_DF_PRIORITIES || q > maxq)
			continue;
		struct keel_df_jg_row *r = &out[pri[lk] - 1];
		r->count++;
		r->quantity += q;
		r->revenue += q * pc;
	}
	fclose(f);
	free(pri);
	return rc;
}

struct run_opts {
	uint32_t shards, partitions;
	uint64_t mem_mb;
	bool json, check;
	struct df_prog prog;
	/* pagerank */
	uint64_t vertices;
	uint32_t degree, iterations;
	uint64_t seed;
	/* joingroup */
	uint64_t orders;
	const char *input_dir, *data_dir;
	uint32_t max_quantity;
	uint64_t split_kb;
	/* a job .so */
	const char *job_path, *job_arg, *output;
};

static void put_stats(struct keel_json *j, struct keel_df_ctx *c)
{
	struct keel_df_stats st;
	keel_df_ctx_stats(c, &st);
	keel_json_put_u64(j, "shards", keel_df_ctx_shards(c));
	keel_json_put_u64(j, "stages", st.stages);
	keel_json_put_u64(j, "tasks", st.tasks);
	keel_json_put_u64(j, "records_in", st.records_in);
	keel_json_put_u64(j, "shuffled", st.shuffled);
	keel_json_put_u64(j, "spills", st.spills);
	keel_json_put_u64(j, "spill_bytes", st.spill_bytes);
}

static void print_stats(struct keel_df_ctx *c, double secs)
{
	struct keel_df_stats st;
	keel_df_ctx_stats(c, &st);
	printf("%u shards, %" PRIu64 " stages, %" PRIu64 " tasks, %" PRIu64 " pairs shuffled, %" PRIu64
	       " spills (%" PRIu64 " bytes), %.3f s\n",
	       keel_df_ctx_shards(c), st.stages, st.tasks, st.shuffled, st.spills, st.spill_bytes, secs);
}

static int run_pagerank(struct run_opts *o, struct keel_df_ctx *c)
{
	struct keel_df_pagerank p = {.vertices = o->vertices, .avg_degree = o->degree,
				     .iterations = o->iterations, .seed = o->seed};
	double *r = malloc(p.vertices * sizeof *r), *ref = NULL;
	if (!r) {
		fprintf(stderr, "keel df run: out of memory for %" PRIu64 " ranks\n", p.vertices);
		return 1;
	}
	char err[KEEL_ERRMSG_LEN];
	double t0 = now_s();
	int rc = keel_df_pagerank_run(c, &p, r, err);
	double secs = now_s() - t0;
	if (o->prog.tty && !o->prog.quiet)
		fprintf(stderr, "\r\033[K");
	if (rc) {
		fprintf(stderr, "keel df run pagerank: %s\n", err);
		free(r);
		return 1;
	}
	double sum = 0, top = 0, l1 = -1;
	uint64_t top_v = 0;
	for (uint64_t v = 0; v < p.vertices; v++) {
		sum += r[v];
		if (r[v] > top) {
			top = r[v];
			top_v = v;
		}
	}
	if (o->check) {
		ref = malloc(p.vertices * sizeof *ref);
		if (!ref || pagerank_ref(&p, ref)) {
			fprintf(stderr, "keel df run: out of memory for the reference\n");
			free(r);
			free(ref);
			return 1;
		}
		l1 = 0;
		for (uint64_t v = 0; v < p.vertices; v++)
			l1 += fabs(r[v] - ref[v]);
		l1 /= (double)p.vertices;
	}
	if (o->json) {
		struct keel_json j;
		keel_json_init_file(&j, stdout);
		keel_json_open_obj(&j, NULL);
		keel_json_put_str(&j, "job", "pagerank");
		keel_json_put_u64(&j, "vertices", p.vertices);
		keel_json_put_u64(&j, "iterations", p.iterations);
		keel_json_put_double(&j, "rank_sum", sum, 12);
		keel_json_put_u64(&j, "top_vertex", top_v);
		keel_json_put_double(&j, "top_rank", top, 12);
		if (o->check)
			keel_json_put_double(&j, "mean_l1_vs_reference", l1, 15);
		keel_json_put_double(&j, "seconds", secs, 3);
		put_stats(&j, c);
		keel_json_close(&j);
		keel_json_finish(&j, true);
	} else {
		printf("pagerank: %" PRIu64 " vertices, %u iterations: ranks sum to %.12f, top vertex %" PRIu64
		       " (%.9f)\n",
		       p.vertices, p.iterations, sum, top_v, top);
		if (o->check)
			printf("check: mean L1 distance to the single-threaded reference %.3g per vertex (%s)\n",
			       l1, l1 <= 1e-9 ? "ok" : "TOO FAR");
		print_stats(c, secs);
	}
	free(r);
	free(ref);
	return o->check && !(l1 <= 1e-9) ? 1 : 0;
}

static int run_joingroup(struct run_opts *o, struct keel_df_ctx *c)
{
	char dir[1024] = "", orders[1100], lineitem[1100], err[KEEL_ERRMSG_LEN];
	bool made = false;
	if (o->input_dir) {
		snprintf(dir, sizeof dir, "%s", o->input_dir);
	} else {
		const char *base = o->data_dir ? o->data_dir : getenv("TMPDIR");
		snprintf(dir, sizeof dir, "%s/keel-df-jg.XXXXXX", base && *base ? base : "/tmp");
		if (!mkdtemp(dir)) {
			fprintf(stderr, "keel df run joingroup: %s: %s\n", dir, strerror(errno));
			return 1;
		}
		made = true;
		if (keel_df_jg_generate(dir, o->orders, o->seed, err)) {
			fprintf(stderr, "keel df run joingroup: %s\n", err);
			goto fail;
		}
	}
	snprintf(orders, sizeof orders, "%s/orders.csv", dir);
	snprintf(lineitem, sizeof lineitem, "%s/lineitem.csv", dir);
	struct keel_df_jg_row rows[KEEL_DF_PRIORITIES], ref[KEEL_DF_PRIORITIES];
	double t0 = now_s();
	int rc = keel_df_jg_run(c, orders, lineitem, o->max_quantity, o->split_kb << 10, rows, err);
	double secs = now_s() - t0;
	if (o->prog.tty && !o->prog.quiet)
		fprintf(stderr, "\r\033[K");
	if (rc) {
		fprintf(stderr, "keel df run joingroup: %s\n", err);
		goto fail;
	}
	bool same = true;
	if (o->check) {
		if (jg_ref(orders, lineitem, o->max_quantity, ref, err)) {
			fprintf(stderr, "keel df run joingroup: %s\n", err);
			goto fail;
		}
		same = !memcmp(rows, ref, sizeof rows);
	}
	if (o->json) {
		struct keel_json j;
		keel_json_init_file(&j, stdout);
		keel_json_open_obj(&j, NULL);
		keel_json_put_str(&j, "job", "joingroup");
		keel_json_open_arr(&j, "rows");
		for (int p = 0; p < KEEL_DF_PRIORITIES; p++) {
			keel_json_open_obj(&j, NULL);
			keel_json_put_u64(&j, "priority", (uint64_t)p + 1);
			keel_json_put_u64(&j, "count", rows[p].count);
			keel_json_put_u64(&j, "quantity", rows[p].quantity);
			keel_json_put_u64(&j, "revenue_cents", rows[p].revenue);
			keel_json_close(&j);
		}
		keel_json_close(&j);
		if (o->check)
			keel_json_put_bool(&j, "matches_reference", same);
		keel_json_put_double(&j, "seconds", secs, 3);
		put_stats(&j, c);
		keel_json_close(&j);
		keel_json_finish(&j, true);
	} else {
		printf("priority      count     quantity        revenue_cents\n");
		for (int p = 0; p < KEEL_DF_PRIORITIES; p++)
			printf("%8d %10" PRIu64 " %12" PRIu64 " %20" PRIu64 "\n", p + 1, rows[p].count,
			       rows[p].quantity, rows[p].revenue);
		if (o->check)
			printf("check: %s the single-threaded reference\n", same ? "matches" : "DIFFERS FROM");
		print_stats(c, secs);
	}
	if (made) {
		unlink(orders);
		unlink(lineitem);
		rmdir(dir);
	}
	return same ? 0 : 1;
fail:
	if (made) {
		unlink(orders);
		unlink(lineitem);
		rmdir(dir);
	}
	return 1;
}

static int run_user(struct run_opts *o, struct keel_df_ctx *c)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_df_jobref ref;
	if (keel_df_job_open(&ref, o->job_path, err)) {
		fprintf(stderr, "keel df run: %s\n", err);
		return 1;
	}
	FILE *out = stdout;
	if (o->output && !(out = fopen(o->output, "w"))) {
		fprintf(stderr, "keel df run: %s: %s\n", o->output, strerror(errno));
		keel_df_job_close(&ref);
		return 1;
	}
	double t0 = now_s();
	int rc = ref.job->run(c, o->job_arg, out, err);
	double secs = now_s() - t0;
	if (o->prog.tty && !o->prog.quiet)
		fprintf(stderr, "\r\033[K");
	bool werr = out != stdout ? fclose(out) != 0 : fflush(out) != 0;
	if (rc)
		fprintf(stderr, "keel df run %s: %s\n", ref.job->name ? ref.job->name : o->job_path, err);
	else if (werr)
		fprintf(stderr, "keel df run: writing %s failed\n", o->output ? o->output : "stdout");
	else if (o->json) {
		struct keel_json j;
		keel_json_init_file(&j, stdout);
		keel_json_open_obj(&j, NULL);
		keel_json_put_str(&j, "job", ref.job->name ? ref.job->name : o->job_path);
		keel_json_put_str(&j, "output", o->output);
		keel_json_put_double(&j, "seconds", secs, 3);
		put_stats(&j, c);
		keel_json_close(&j);
		keel_json_finish(&j, true);
	} else if (o->output) {
		print_stats(c, secs);
	}
	keel_df_job_close(&ref);
	return rc || werr ? 1 : 0;
}

static int cmd_run(int argc, char **argv)
{
	struct run_opts o = {.vertices = 100000, .degree = 8, .iterations = 10, .seed = 1,
			     .orders = 200000, .max_quantity = 50, .split_kb = 8192};
	const struct keel_opt opts[] = {
		{"shards", 's', KEEL_OPT_U32, &o.shards, 1, 1024, "N", "worker shards", "one per CPU"},
		{"partitions", 'r', KEEL_OPT_U32, &o.partitions, 1, 65536, "R",
		 "partitions of sources and shuffles", "2 x shards"},
		{"mem", 'm', KEEL_OPT_U64, &o.mem_mb, 1, 1u << 20, "MB",
		 "memory per shard per shuffle before spilling", "64"},
		{"json", 'J', KEEL_OPT_FLAG, &o.json, .help = "print the result as one JSON object"},
		{"quiet", 'q', KEEL_OPT_FLAG, &o.prog.quiet, .help = "no progress line"},
		{"check", 0, KEEL_OPT_FLAG, &o.check,
		 .help = "also run a single-threaded reference and compare"},
		{"seed", 0, KEEL_OPT_U64, &o.seed, 0, 0, "N", "generator seed"},
		{"vertices", 'n', KEEL_OPT_U64, &o.vertices, 1, 1ull << 32, "N", "pagerank: vertices"},
		{"degree", 'd', KEEL_OPT_U32, &o.degree, 1, 1000, "D", "pagerank: mean out-degree"},
		{"iterations", 'i', KEEL_OPT_U32, &o.iterations, 0, 1000, "I", "pagerank: iterations"},
		{"orders", 0, KEEL_OPT_U64, &o.orders, 1, 1ull << 32, "N",
		 "joingroup: orders to generate (about 4 lineitems each)"},
		{"input-dir", 0, KEEL_OPT_STR, &o.input_dir, .arg = "DIR",
		 .help = "joingroup: read DIR/orders.csv and DIR/lineitem.csv\ninstead of generating them"},
		{"data-dir", 0, KEEL_OPT_STR, &o.data_dir, .arg = "DIR",
		 .help = "joingroup: where the generated tables go (removed after)",
		 .def = "$TMPDIR or /tmp"},
		{"max-quantity", 0, KEEL_OPT_U32, &o.max_quantity, 1, 1000000, "Q",
		 "joingroup: WHERE l_quantity <= Q"},
		{"split", 0, KEEL_OPT_U64, &o.split_kb, 1, 1u << 22, "KB", "joingroup: bytes of CSV per task"},
		{"job", 'j', KEEL_OPT_STR, &o.job_path, .arg = "PATH.so",
		 .help = "a user job (exports `const struct keel_df_job keel_df_job`)"},
		{"arg", 'a', KEEL_OPT_STR, &o.job_arg, .arg = "TEXT", .help = "the user job's argument"},
		{"output", 'o', KEEL_OPT_STR, &o.output, .arg = "FILE",
		 .help = "where a user job writes its result", .def = "stdout"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"df run", "JOB [options]",
		"  JOB is a built-in dataflow job (keel df jobs): pagerank on a generated\n"
		"  power-law graph, or joingroup (join + group-by over two generated CSV tables).\n"
		"  It runs in this process on --shards worker shards.",
		opts, 0, 1, "JOB", "exit status: 0 done, 1 failed (or --check differs), 2 usage error."};
	int nargs = 0;
	int st = keel_opt_parse(&spec, argc, argv, &nargs);
	if (st != KEEL_OPT_RUN)
		return st;
	if (o.job_path && nargs)
		return keel_opt_usage(&spec, "give the job once: '%s' or --job %s", argv[1], o.job_path);
	if (!o.job_path && !nargs)
		return keel_opt_usage(&spec, "missing JOB (pagerank, joingroup, or --job PATH.so)");
	if (o.job_path && o.json && !o.output)
		return keel_opt_usage(&spec, "--json with --job needs --output FILE for the job's result");
	const char *job = o.job_path ? "user" : argv[1];
	if (!o.job_path && strcmp(job, "pagerank") && strcmp(job, "joingroup"))
		return keel_opt_usage(&spec, "unknown job '%s' (keel df jobs lists them)", job);
	o.prog.tty = isatty(STDERR_FILENO) && !o.json;
	char err[KEEL_ERRMSG_LEN];
	struct keel_df_config cfg = {.shards = o.shards, .partitions = o.partitions,
				     .mem_budget = o.mem_mb << 20, .on_stage = on_stage,
				     .stage_arg = &o.prog};
	struct keel_df_ctx *c = keel_df_ctx_new(&cfg, err);
	if (!c) {
		fprintf(stderr, "keel df run: %s\n", err);
		return 1;
	}
	int rc = o.job_path		     ? run_user(&o, c)
		 : !strcmp(job, "pagerank") ? run_pagerank(&o, c)
					     : run_joingroup(&o, c);
	keel_df_ctx_free(c);
	return rc;
}

static int cmd_jobs(int argc, char **argv)
{
	const struct keel_cmd_spec spec = {"df jobs", NULL, "  lists the built-in jobs, one a line.",
					   NULL};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	printf("pagerank\tPageRank on a generated power-law graph (--vertices, --degree, --iterations)\n");
	printf("joingroup\tjoin of lineitem and orders CSV tables, grouped by order priority\n");
	return 0;
}

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} subs[] = {
	{"run", cmd_run, "run a built-in dataflow job on this machine"},
	{"jobs", cmd_jobs, "list the built-in jobs"},
};

static void df_usage(FILE *f)
{
	fprintf(f, "usage: keel df <subcommand> [options]\n\nsubcommands:\n");
	for (size_t i = 0; i < KEEL_ARRAY_LEN(subs); i++)
		fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].help);
	fprintf(f, "\n'keel df <subcommand> --help' shows its options.\n");
}

int keel_cmd_df(int argc, char **argv)
{
	if (argc < 2) {
		df_usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		df_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < KEEL_ARRAY_LEN(subs); i++)
		if (!strcmp(argv[1], subs[i].name))
			return subs[i].run(argc - 1, argv + 1);
	fprintf(stderr, "keel df: unknown subcommand '%s'\ntry 'keel df --help'\n", argv[1]);
	return 2;
}
