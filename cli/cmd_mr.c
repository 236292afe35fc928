/*
 * keel mr — run map-reduce jobs and generate their inputs.
 *
 *   keel mr run JOB --input PATH [--input PATH ...] --output DIR [options]
 *   keel mr jobs
 *   keel mr gen words|sort --out FILE [--size BYTES | --records N] [--seed N]
 *
 * On a terminal, `run` redraws one progress line on stderr (tasks done/total,
 * MB/s, ETA) and prints a summary; --json prints one JSON object instead.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keel/mr.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: keel mr run JOB --input PATH [--input PATH ...] --output DIR [options]\n"
		"       keel mr jobs\n"
		"       keel mr gen words|sort --out FILE [--size BYTES] [--records N] [--seed N]\n"
		"\n"
		"JOB is a built-in job (wordcount, grep, index, sort) or, with --job, a path\n"
		"to a shared object exporting `const struct keel_mr_job keel_mr_job`.\n"
		"\n"
		"run options:\n"
		"  --input PATH      a file or a directory of files (repeatable)\n"
		"  --output DIR      must not exist (or be empty); gets part-NNNNN + _SUCCESS\n"
		"  --job PATH.so     a user job instead of a built-in\n"
		"  --arg TEXT        the job's argument (grep: the pattern)\n"
		"  --shards N        shards to run on (default: one per CPU)\n"
		"  --partitions R    reduce partitions (default: the shard count)\n"
		"  --mem MB          memory budget per shard before spilling (default 256)\n"
		"  --split MB        bytes of input per map task (default 32)\n"
		"  --spill-dir DIR   where sorted runs spill (default: inside the output's temp dir)\n"
		"  --no-fsync        do not fsync the output files before committing them\n"
		"  --json            print the result as one JSON object\n"
		"  --quiet           no progress line\n");
}

struct prog {
	bool tty;
	bool quiet;
};

static void human(char *b, size_t n, double bytes)
{
	const char *u[] = {"B", "KB", "MB", "GB", "TB"};
	int i = 0;
	while (bytes >= 1000 && i < 4) {
		bytes /= 1000;
		i++;
	}
	snprintf(b, n, "%.1f %s", bytes, u[i]);
}

static void on_progress(void *arg, const struct keel_mr_progress *p)
{
	struct prog *pr = arg;
	if (!pr->tty || pr->quiet)
		return;
	double secs = (double)p->elapsed_ns / 1e9;
	double rate = secs > 0 ? (double)p->input_bytes_done / secs : 0;
	char done[32], total[32];
	human(done, sizeof done, (double)p->input_bytes_done);
	human(total, sizeof total, (double)p->input_bytes_total);
	char eta[32] = "-";
	if (p->input_bytes_done < p->input_bytes_total && rate > 0)
		snprintf(eta, sizeof eta, "%.0fs",
			 (double)(p->input_bytes_total - p->input_bytes_done) / rate);
	else if (p->input_bytes_done >= p->input_bytes_total)
		snprintf(eta, sizeof eta, "reducing");
	fprintf(stderr, "\r\033[Kmap %" PRIu64 "/%" PRIu64 "  reduce %" PRIu64 "/%" PRIu64
		"  %s/%s  %.1f MB/s  ETA %s",
		p->map_tasks_done, p->map_tasks_total, p->reduce_tasks_done, p->reduce_tasks_total,
		done, total, rate / 1e6, eta);
	fflush(stderr);
}

static int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"input", required_argument, 0, 'i'}, {"output", required_argument, 0, 'o'},
		{"job", required_argument, 0, 'j'},   {"arg", required_argument, 0, 'a'},
		{"shards", required_argument, 0, 's'}, {"partitions", required_argument, 0, 'r'},
		{"mem", required_argument, 0, 'm'},   {"split", required_argument, 0, 'S'},
		{"spill-dir", required_argument, 0, 'D'}, {"json", no_argument, 0, 'J'},
		{"quiet", no_argument, 0, 'q'},       {"help", no_argument, 0, 'h'},
		{"no-fsync", no_argument, 0, 'F'},
		{0, 0, 0, 0},
	};
	const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
	size_t n_inputs = 0;
	const char *jobpath = NULL, *arg = NULL;
	bool json = false;
	struct prog pr = {.tty = isatty(2) != 0};
	struct keel_mr_config cfg = {0};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "i:o:j:a:s:r:m:S:D:JqhF", opts, NULL)) != -1) {
		switch (c) {
		case 'i': inputs[n_inputs++] = optarg; break;
		case 'o': cfg.output = optarg; break;
		case 'j': jobpath = optarg; break;
		case 'a': arg = optarg; break;
		case 's': cfg.shards = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'r': cfg.partitions = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'm': cfg.mem_budget = strtoull(optarg, NULL, 10) << 20; break;
		case 'S': cfg.split_size = strtoull(optarg, NULL, 10) << 20; break;
		case 'D': cfg.spill_dir = optarg; break;
		case 'J': json = true; break;
		case 'q': pr.quiet = true; break;
		case 'F': cfg.no_fsync = true; break;
		case 'h': usage(stdout); free(inputs); return 0;
		default: usage(stderr); free(inputs); return 2;
		}
	}
	const char *spec = jobpath;
	if (!spec && optind < argc)
		spec = argv[optind];
	if (!spec || !cfg.output || n_inputs == 0) {
		fprintf(stderr, "keel mr run: needs a job, --input and --output\n");
		usage(stderr);
		free(inputs);
		return 2;
	}
	/* The progress line is the output; the runtime's start-up notes are
	 * noise here unless asked for with KEEL_LOG. */
	if (!getenv("KEEL_LOG"))
		keel_log_set_level(KEEL_LOG_WARN);
	char err[KEEL_ERRMSG_LEN];
	struct keel_mr_jobref job;
	int rc = keel_mr_job_open(&job, spec, arg, err);
	if (rc) {
		fprintf(stderr, "keel mr: %s\n", err);
		free(inputs);
		return 1;
	}
	cfg.job = &job;
	cfg.inputs = inputs;
	cfg.n_inputs = n_inputs;
	cfg.progress = on_progress;
	cfg.progress_arg = &pr;
	struct keel_mr_stats st;
	rc = keel_mr_run(&cfg, &st, err);
	if (pr.tty && !pr.quiet)
		fprintf(stderr, "\r\033[K");
	if (rc) {
		if (json) {
			printf("{\"ok\":false,\"error\":\"");
			for (const char *p = err; *p; p++)
				if (*p == '"' || *p == '\\')
					printf("\\%c", *p);
				else if ((unsigned char)*p >= 0x20)
					putchar(*p);
			printf("\"}\n");
		}
		fprintf(stderr, "keel mr: job %s failed: %s\n", job.job->name, err);
		keel_mr_job_close(&job);
		free(inputs);
		return 1;
	}
	double secs = (double)st.total_ns / 1e9;
	double mbps = secs > 0 ? (double)st.input_bytes / 1e6 / secs : 0;
	if (json) {
		printf("{\"ok\":true,\"job\":\"%s\",\"output\":\"%s\",\"shards\":%u,\"partitions\":%u,"
		       "\"map_tasks\":%" PRIu64 ",\"input_files\":%" PRIu64 ",\"input_bytes\":%" PRIu64
		       ",\"input_records\":%" PRIu64 ",\"emitted\":%" PRIu64 ",\"shuffled\":%" PRIu64
		       ",\"spills\":%" PRIu64 ",\"spill_bytes\":%" PRIu64 ",\"keys\":%" PRIu64
		       ",\"output_bytes\":%" PRIu64 ",\"seconds\":%.3f,\"map_seconds\":%.3f,"
		       "\"reduce_seconds\":%.3f,\"mb_per_s\":%.1f}\n",
		       job.job->name, cfg.output, st.shards, st.partitions, st.map_tasks, st.input_files,
		       st.input_bytes, st.input_records, st.emitted, st.shuffled, st.spills, st.spill_bytes,
		       st.reduce_keys, st.output_bytes, secs, (double)st.map_ns / 1e9,
		       (double)st.reduce_ns / 1e9, mbps);
	} else {
		char in[32], out[32];
		human(in, sizeof in, (double)st.input_bytes);
		human(out, sizeof out, (double)st.output_bytes);
		printf("job %s: %s in %" PRIu64 " files, %" PRIu64 " map tasks on %u shards, %u partitions\n",
		       job.job->name, in, st.input_files, st.map_tasks, st.shards, st.partitions);
		printf("  %" PRIu64 " records, %" PRIu64 " pairs emitted, %" PRIu64
		       " after combining, %" PRIu64 " spills\n",
		       st.input_records, st.emitted, st.shuffled, st.spills);
		printf("  %" PRIu64 " keys reduced, %s written to %s\n", st.reduce_keys, out, cfg.output);
		printf("  %.2f s (map %.2f s, reduce %.2f s), %.1f MB/s\n", secs, (double)st.map_ns / 1e9,
		       (double)st.reduce_ns / 1e9, mbps);
	}
	keel_mr_job_close(&job);
	free(inputs);
	return 0;
}

static int cmd_gen(int argc, char **argv)
{
	static const struct option opts[] = {
		{"out", required_argument, 0, 'o'},   {"size", required_argument, 0, 'b'},
		{"records", required_argument, 0, 'n'}, {"seed", required_argument, 0, 's'},
		{"vocab", required_argument, 0, 'v'}, {"distinct", required_argument, 0, 'd'},
		{0, 0, 0, 0},
	};
	const char *out = NULL;
	uint64_t size = 64 << 20, records = 1000000, seed = 1;
	uint32_t vocab = 100000, distinct = 0;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:b:n:s:v:d:", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'b': size = strtoull(optarg, NULL, 10); break;
		case 'n': records = strtoull(optarg, NULL, 10); break;
		case 's': seed = strtoull(optarg, NULL, 10); break;
		case 'v': vocab = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'd': distinct = (uint32_t)strtoul(optarg, NULL, 10); break;
		default: usage(stderr); return 2;
		}
	}
	if (!out || optind >= argc) {
		usage(stderr);
		return 2;
	}
	char err[KEEL_ERRMSG_LEN];
	int rc;
	if (!strcmp(argv[optind], "words"))
		rc = keel_mr_gen_words(out, size, seed, vocab, err);
	else if (!strcmp(argv[optind], "sort"))
		rc = keel_mr_gen_sort(out, records, seed, distinct, err);
	else {
		usage(stderr);
		return 2;
	}
	if (rc) {
		fprintf(stderr, "keel mr gen: %s\n", err);
		return 1;
	}
	return 0;
}

int keel_cmd_mr(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "gen"))
		return cmd_gen(argc - 1, argv + 1);
	if (!strcmp(argv[1], "jobs")) {
		for (size_t i = 0; keel_mr_builtin_jobs[i]; i++)
			printf("%s\n", keel_mr_builtin_jobs[i]->name);
		return 0;
	}
	fprintf(stderr, "keel mr: unknown subcommand '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
