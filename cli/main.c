/* keel — entry point: dispatches to the subcommand named by argv[1]. */
#include <stdio.h>
#include <string.h>

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
	{"node", keel_cmd_node, "run a node from its configuration file"},
	{"send", keel_cmd_send, "send a verified message stream to a node (tests, demo)"},
	{"raft", keel_cmd_raft, "run a Raft group of the config's peers (group host), a replicated log"},
	{"mr", keel_cmd_mr, "run map-reduce jobs (wordcount, grep, index, sort, or a job .so)"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: keel <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < KEEL_ARRAY_LEN(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\nkeel <command> --help shows a command's options.\n");
}

int main(int argc, char **argv)
{
	keel_log_init_from_env();
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(name, "--version"))
		name = "version";
	for (size_t i = 0; i < KEEL_ARRAY_LEN(commands); i++)
		if (!strcmp(name, commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "keel: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 2;
}
