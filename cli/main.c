/* keel — entry point: dispatches to the subcommand named by argv[1].
 *
 *   keel CMD [options]       runs CMD
 *   keel help CMD [SUB]      the same as keel CMD [SUB] --help
 *   keel --help | -h | help  the command list (stdout, exit 0)
 *   keel --version           the same as keel version
 *
 * An unknown command is a usage error (exit 2) like an unknown option. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "keel/base.h"
#include "keel_config.h"

struct keel_cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
};

static const struct keel_cmd commands[] = {
	{"version", keel_cmd_version, "print the version and what this build has"},
	{"topo", keel_cmd_topo, "print the topology and where shards would run"},
	{"shards", keel_cmd_shards, "run pinned shards exchanging messages; print a summary"},
	{"config", keel_cmd_config, "check a node configuration file (as keel node would)"},
	{"node", keel_cmd_node, "run a node from its configuration file"},
	{"cluster", keel_cmd_cluster, "run a local cluster on 127.0.0.1: up, status, down, restart"},
	{"status", keel_cmd_status, "every group's leader, term, commit and applied index, per node"},
	{"kv", keel_cmd_kv, "put, get, del, cas and range keys of a cluster's KV store"},
	{"member", keel_cmd_member, "list, add or remove a node in every group of a cluster"},
	{"lock", keel_cmd_lock, "hold a cluster lock while a command runs (fencing token in its env); status"},
	{"send", keel_cmd_send, "send a verified message stream to a node (tests, demo)"},
	{"mr", keel_cmd_mr, "run map-reduce jobs (wordcount, grep, index, sort, or a job .so)"},
	{"df", keel_cmd_df, "run dataflow jobs (pagerank, joingroup): multi-stage, in memory"},
};

static const char *const log_levels[] = {"debug", "info", "warn", "error", "off"};

static void usage(FILE *f)
{
	fprintf(f, "usage: keel <command> [options]\n"
		   "       keel help <command>\n\ncommands:\n");
	for (size_t i = 0; i < KEEL_ARRAY_LEN(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'keel <command> --help' (or 'keel help <command>') shows a command's options.\n"
		   "\nenvironment:\n"
		   "  KEEL_LOG=LEVEL   what is logged to stderr: debug, info, warn, error or off\n"
		   "                   (default info; keel mr run defaults to warn). Log lines are\n"
		   "                   'TIME LEVEL nNODE/sSHARD message', one per event.\n"
		   "\nexit status: 0 done, 1 failed, 2 usage error (bad option or argument).\n");
}

static const struct keel_cmd *find(const char *name)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(commands); i++)
		if (!strcmp(name, commands[i].name))
			return &commands[i];
	return NULL;
}

static int unknown(const char *name)
{
	fprintf(stderr, "keel: unknown command '%s'\ntry 'keel --help'\n", name);
	return 2;
}

/* An unknown KEEL_LOG value is reported, not silently ignored (a typo
 * would otherwise look like "keel logs nothing"). */
static void check_log_env(void)
{
	const char *v = getenv("KEEL_LOG");
	if (!v)
		return;
	for (size_t i = 0; i < KEEL_ARRAY_LEN(log_levels); i++)
		if (!strcasecmp(v, log_levels[i]))
			return;
	fprintf(stderr, "keel: KEEL_LOG='%s' is not debug, info, warn, error or off; ignored\n", v);
}

int main(int argc, char **argv)
{
	check_log_env();
	keel_log_init_from_env();
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") ||
	    (!strcmp(name, "help") && argc == 2)) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(name, "help")) {
		/* keel help CMD: exactly what keel CMD --help does, since it is
		 * that call (the command prints its own table). */
		if (argc > 4) {
			fprintf(stderr, "keel help: unexpected argument '%s'\ntry 'keel --help'\n",
				argv[4]);
			return 2;
		}
		const struct keel_cmd *c = find(argv[2]);
		if (!c)
			return unknown(argv[2]);
		/* keel help mr run: a subcommand's help, as keel mr run --help */
		char *hargv[] = {argv[2], argc == 4 ? argv[3] : "--help", "--help", NULL};
		return c->run(argc == 4 ? 3 : 2, hargv);
	}
	if (!strcmp(name, "--version"))
		name = "version";
	const struct keel_cmd *c = find(name);
	if (!c)
		return unknown(argv[1]);
	return c->run(argc - 1, argv + 1);
}
