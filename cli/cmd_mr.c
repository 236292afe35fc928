/*
 * keel mr — run map-reduce jobs and generate their inputs.
 *
 *   keel mr run JOB --input PATH [--input PATH ...] --output DIR [options]
 *   keel mr jobs
 *   keel mr gen words|sort --out FILE [--size BYTES | --records N] [--seed N]
 *
 * On a terminal, `run` redraws one progress line on stderr (tasks done/total,
 * MB/s, ETA) and prints a summary; --json prints one JSON object instead.
 * --progress-fd FD writes one JSON line per step of the job to FD as it
 * happens (what tests act on: see usage()). With --config (or
 * --local-cluster N) the job runs across nodes; `keel mr worker --config
 * FILE` serves one job.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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
		"       keel mr worker --config FILE\n"
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
		"  --config FILE     run across nodes: this node (from its configuration file)\n"
		"                    coordinates; the others run `keel mr worker --config`\n"
		"  --local-cluster N start N-1 local worker processes on 127.0.0.1 and run the\n"
		"                    job across all N nodes (--shards per node, default 1)\n"
		"  --quiet           no progress line\n"
		"  --progress-fd FD  write one JSON line per step of the job to file descriptor FD\n"
		"                    as it happens (\"event\": node (a local cluster's node and\n"
		"                    its pid), start, map_done, node_lost, reduce, part_done, end),\n"
		"                    each with the epoch and the counts of tasks and partitions\n");
}

struct prog {
	bool tty;
	bool quiet;
	int event_fd; /* -1: none */
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

/* One line to the --progress-fd descriptor (whole, or not at all once the
 * reader has gone). */
static void event_line(struct prog *pr, const char *line, size_t len)
{
	size_t off = 0;
	while (pr->event_fd >= 0 && off < len) {
		ssize_t w = write(pr->event_fd, line + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			pr->event_fd = -1;
			return;
		}
		off += (size_t)w;
	}
}

static void on_event(void *arg, const struct keel_mr_event *ev)
{
	struct prog *pr = arg;
	static const char *const names[] = {
		[KEEL_MR_EV_START] = "start",         [KEEL_MR_EV_MAP_DONE] = "map_done",
		[KEEL_MR_EV_NODE_LOST] = "node_lost", [KEEL_MR_EV_REDUCE] = "reduce",
		[KEEL_MR_EV_PART_DONE] = "part_done", [KEEL_MR_EV_END] = "end",
	};
	char line[2048];
	int n = snprintf(line, sizeof line,
			 "{\"event\":\"%s\",\"epoch\":%u,\"nodes\":%u,\"map_done\":%" PRIu64
			 ",\"map_tasks\":%" PRIu64 ",\"committed\":%" PRIu64 ",\"partitions\":%" PRIu64,
			 names[ev->kind], ev->epoch, ev->nodes, ev->map_tasks_done, ev->map_tasks_total,
			 ev->reduce_tasks_done, ev->reduce_tasks_total);
	switch (ev->kind) {
	case KEEL_MR_EV_MAP_DONE:
		n += snprintf(line + n, sizeof line - (size_t)n, ",\"node\":%u,\"task\":%u,\"node_tasks\":%u",
			      ev->node, ev->task, ev->node_tasks);
		break;
	case KEEL_MR_EV_NODE_LOST:
		n += snprintf(line + n, sizeof line - (size_t)n, ",\"node\":%u", ev->node);
		break;
	case KEEL_MR_EV_PART_DONE:
		n += snprintf(line + n, sizeof line - (size_t)n, ",\"node\":%u,\"partition\":%u",
			      ev->node, ev->partition);
		break;
	case KEEL_MR_EV_END:
		n += snprintf(line + n, sizeof line - (size_t)n, ",\"ok\":%s", ev->error ? "false" : "true");
		if (ev->error && ev->errmsg) {
			n += snprintf(line + n, sizeof line - (size_t)n, ",\"error\":");
			char esc[KEEL_ERRMSG_LEN * 6 + 3]; /* each byte escaped in six, and quotes */
			keel_json_escape(esc, sizeof esc, ev->errmsg, strlen(ev->errmsg));
			n += snprintf(line + n, sizeof line - (size_t)n, "%s", esc);
		}
		break;
	default:
		break;
	}
	if (n < 0 || (size_t)n + 2 > sizeof line)
		return;
	line[n++] = '}';
	line[n++] = '\n';
	event_line(pr, line, (size_t)n);
}

/* A throwaway cluster on 127.0.0.1: configurations and a secret in a
 * temporary directory, N-1 `keel mr worker` processes started from this
 * binary (their output in nK.log there, shown if the job fails). */
struct local_cluster {
	char dir[64];
	char n1[128];
	unsigned nodes;
	pid_t pids[64];
};

static int local_cluster_start(struct local_cluster *lc, unsigned nodes, unsigned shards, char *err)
{
	if (nodes > 32)
		return keel_errmsg_set(err, -EINVAL, "at most 32 local nodes");
	snprintf(lc->dir, sizeof lc->dir, "/tmp/keel-mr-cluster.XXXXXX");
	if (!mkdtemp(lc->dir))
		return keel_errmsg_set(err, -errno, "mkdtemp");
	lc->nodes = nodes;
	char path[256];
	snprintf(path, sizeof path, "%s/secret", lc->dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return keel_errmsg_set(err, -errno, "%s", path);
	srand((unsigned)(getpid() ^ time(NULL)));
	for (int i = 0; i < 48; i++)
		fputc("0123456789abcdef"[rand() % 16], f);
	fputc('\n', f);
	fclose(f);
	chmod(path, 0600);
	/* Below the ephemeral range (32768+), where other processes' outgoing
	 * connections could hold a port a node is about to bind; up to 32
	 * nodes 4 ports apart. */
	unsigned base = 3000 + (unsigned)(getpid() % 200) * 140;
	for (unsigned k = 1; k <= nodes; k++) {
		snprintf(path, sizeof path, "%s/n%u.ini", lc->dir, k);
		f = fopen(path, "w");
		if (!f)
			return keel_errmsg_set(err, -errno, "%s", path);
		fprintf(f, "[node]\nid = %u\ncluster = 77\nlisten = 127.0.0.1:%u\nshards = %u\n"
			   "secret_file = secret\n[peers]\n", k, base + k * 4, shards);
		for (unsigned j = 1; j <= nodes; j++)
			fprintf(f, "%u = 127.0.0.1:%u\n", j, base + j * 4);
		fclose(f);
	}
	snprintf(lc->n1, sizeof lc->n1, "%s/n1.ini", lc->dir);
	for (unsigned k = 2; k <= nodes; k++) {
		pid_t pid = fork();
		if (pid < 0)
			return keel_errmsg_set(err, -errno, "fork");
		if (pid == 0) {
			char cfgp[128], logp[128];
			snprintf(cfgp, sizeof cfgp, "%s/n%u.ini", lc->dir, k);
			snprintf(logp, sizeof logp, "%s/n%u.log", lc->dir, k);
			int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
			execl("/proc/self/exe", "keel", "mr", "worker", "--config", cfgp, (char *)NULL);
			_exit(127);
		}
		lc->pids[k] = pid;
	}
	return 0;
}

static void local_cluster_stop(struct local_cluster *lc, bool ok)
{
	for (unsigned k = 2; k <= lc->nodes; k++) {
		if (lc->pids[k] <= 0)
			continue;
		/* After a success the workers exit by themselves (FINISH). */
		int st = 0;
		for (int i = 0; i < 50 && waitpid(lc->pids[k], &st, WNOHANG) == 0; i++) {
			if (!ok || i == 49)
				kill(lc->pids[k], SIGTERM);
			usleep(100000);
		}
		waitpid(lc->pids[k], &st, 0);
		if (!ok) {
			char logp[128];
			snprintf(logp, sizeof logp, "%s/n%u.log", lc->dir, k);
			FILE *f = fopen(logp, "r");
			char line[512];
			while (f && fgets(line, sizeof line, f))
				fprintf(stderr, "  node %u: %s", k, line);
			if (f)
				fclose(f);
		}
	}
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", lc->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "keel mr: could not remove %s\n", lc->dir);
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
		{"config", required_argument, 0, 'C'},
		{"local-cluster", required_argument, 0, 'L'},
		{"progress-fd", required_argument, 0, 'P'},
		{0, 0, 0, 0},
	};
	const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
	size_t n_inputs = 0;
	const char *jobpath = NULL, *arg = NULL, *node_config = NULL;
	unsigned local_nodes = 0;
	bool json = false;
	struct prog pr = {.tty = isatty(2) != 0, .event_fd = -1};
	struct keel_mr_config cfg = {0};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "i:o:j:a:s:r:m:S:D:JqhFC:L:P:", opts, NULL)) != -1) {
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
		case 'C': node_config = optarg; break;
		case 'L': local_nodes = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'P': {
			char *end;
			long fd = strtol(optarg, &end, 10);
			if (!*optarg || *end || fd < 0 || fd > 1 << 20 || fcntl((int)fd, F_GETFD) < 0) {
				fprintf(stderr, "keel mr run: --progress-fd %s: not an open file descriptor\n",
					optarg);
				free(inputs);
				return 2;
			}
			pr.event_fd = (int)fd;
			/* Not inherited by the workers a local cluster starts: the
			 * reader sees the end of the stream when this process ends. */
			fcntl(pr.event_fd, F_SETFD, FD_CLOEXEC);
			signal(SIGPIPE, SIG_IGN);
			break;
		}
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
	if (pr.event_fd >= 0) {
		cfg.on_event = on_event;
		cfg.event_arg = &pr;
	}
	struct keel_mr_stats st;
	struct local_cluster lc = {0};
	if (local_nodes > 1) {
		rc = local_cluster_start(&lc, local_nodes, cfg.shards ? cfg.shards : 1, err);
		if (rc) {
			fprintf(stderr, "keel mr: local cluster: %s\n", err);
			keel_mr_job_close(&job);
			free(inputs);
			return 1;
		}
		node_config = lc.n1;
		/* Which process is which node, for whoever reads the events. */
		for (unsigned k = 1; k <= local_nodes; k++) {
			char line[96];
			int n = snprintf(line, sizeof line, "{\"event\":\"node\",\"node\":%u,\"pid\":%d}\n", k,
					 k == 1 ? (int)getpid() : (int)lc.pids[k]);
			event_line(&pr, line, (size_t)n);
		}
	}
	if (node_config)
		rc = keel_mr_cluster_run(&cfg, node_config, &st, err);
	else
		rc = keel_mr_run(&cfg, &st, err);
	if (local_nodes > 1)
		local_cluster_stop(&lc, rc == 0);
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
		printf("{\"ok\":true,\"job\":\"%s\",\"output\":\"%s\",\"nodes\":%u,\"epochs\":%u,\"local_tasks\":%" PRIu64 ","
		       "\"shards\":%u,\"partitions\":%u,"
		       "\"map_tasks\":%" PRIu64 ",\"input_files\":%" PRIu64 ",\"input_bytes\":%" PRIu64
		       ",\"input_records\":%" PRIu64 ",\"emitted\":%" PRIu64 ",\"shuffled\":%" PRIu64
		       ",\"spills\":%" PRIu64 ",\"spill_bytes\":%" PRIu64 ",\"keys\":%" PRIu64
		       ",\"output_bytes\":%" PRIu64 ",\"seconds\":%.3f,\"map_seconds\":%.3f,"
		       "\"reduce_seconds\":%.3f,\"mb_per_s\":%.1f}\n",
		       job.job->name, cfg.output, st.nodes, st.epochs, st.local_tasks, st.shards, st.partitions, st.map_tasks,
		       st.input_files,
		       st.input_bytes, st.input_records, st.emitted, st.shuffled, st.spills, st.spill_bytes,
		       st.reduce_keys, st.output_bytes, secs, (double)st.map_ns / 1e9,
		       (double)st.reduce_ns / 1e9, mbps);
	} else if (st.nodes > 1) {
		char in[32], out[32];
		human(in, sizeof in, (double)st.input_bytes);
		human(out, sizeof out, (double)st.output_bytes);
		printf("job %s: %s in %" PRIu64 " files, %" PRIu64 " map tasks on %u nodes x %u shards, "
		       "%u partitions\n",
		       job.job->name, in, st.input_files, st.map_tasks, st.nodes, st.shards, st.partitions);
		if (st.epochs > 1)
			printf("  %u node failure%s recovered from (their map tasks ran again)\n",
			       st.epochs - 1, st.epochs > 2 ? "s" : "");
		printf("  %s written to %s\n", out, cfg.output);
		printf("  %.2f s, %.1f MB/s\n", secs, mbps);
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

static int cmd_worker(int argc, char **argv)
{
	const char *config = NULL;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			config = argv[++i];
	if (!config) {
		usage(stderr);
		return 2;
	}
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_mr_worker_run(config, err);
	if (rc) {
		fprintf(stderr, "keel mr worker: %s\n", err);
		return 1;
	}
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
	if (!strcmp(argv[1], "worker"))
		return cmd_worker(argc - 1, argv + 1);
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
