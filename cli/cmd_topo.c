/* keel topo: the machine's topology (hwloc) and where a node's shards would
 * run: shard i -> PU, core, NUMA node. Takes the same placement options as
 * a node (--shards, --cpuset, --overcommit), so it answers "where would my
 * shards go" before starting anything. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/runtime.h"
#include "keel/transport.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: keel topo [--shards N] [--cpuset LIST] [--overcommit] [--synthetic SPEC]\n"
		"  --shards N       shards to place (default: one per core of the cpuset)\n"
		"  --cpuset LIST    CPUs to use, cpuset(7) list format, e.g. 0-3,8 (default: all)\n"
		"  --overcommit     allow more shards than cores (they share cores)\n"
		"  --synthetic SPEC place on an hwloc synthetic topology instead of this\n"
		"                   machine, e.g. \"pack:2 numa:2 core:4 pu:2\"\n");
}

/* Strict unsigned parse for option values: digits only, no overflow. */
int keel_cli_parse_uint(const char *opt, const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	if (!s || !*s || *s < '0' || *s > '9')
		goto bad;
	unsigned long v = strtoul(s, &end, 10);
	if (*end || v < min || v > max)
		goto bad;
	*out = (unsigned)v;
	return 0;
bad:
	fprintf(stderr, "keel: %s: '%s' is not a number from %u to %u\n", opt, s ? s : "", min, max);
	return -1;
}

/* The transport backends this build has (transport/registry.c). */
static void print_transports(FILE *f)
{
	fprintf(f, "transports:\n");
	keel_transport_registry_print(f);
}

int keel_cmd_topo(int argc, char **argv)
{
	static const struct option opts[] = {
		{"shards", required_argument, NULL, 's'},
		{"cpuset", required_argument, NULL, 'c'},
		{"overcommit", no_argument, NULL, 'o'},
		{"synthetic", required_argument, NULL, 'y'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	unsigned nshards = 0;
	const char *cpuset = NULL, *synthetic = NULL;
	bool overcommit = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (keel_cli_parse_uint("--shards", optarg, 1, 4096, &nshards))
				return 2;
			break;
		case 'c':
			cpuset = optarg;
			break;
		case 'o':
			overcommit = true;
			break;
		case 'y':
			synthetic = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "keel topo: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	char em[KEEL_ERRMSG_LEN];
	struct keel_cpuset set;
	if (cpuset && keel_cpuset_parse(cpuset, &set, em)) {
		fprintf(stderr, "keel topo: %s\n", em);
		return 2;
	}
	struct keel_topo *topo;
	if (keel_topo_load(synthetic, &topo, em)) {
		fprintf(stderr, "keel topo: %s\n", em);
		return 1;
	}
	struct keel_placement *pl;
	unsigned n;
	int rc = keel_topo_place(topo, cpuset ? &set : NULL, nshards, overcommit, &pl, &n, em);
	if (rc) {
		fprintf(stderr, "keel topo: %s\n", em);
		keel_topo_free(topo);
		return 1;
	}
	keel_topo_print(topo, stdout);
	struct keel_topo_counts cnt;
	keel_topo_get_counts(topo, &cnt);
	unsigned ncores = 0;
	for (unsigned i = 0; i < n; i++) {
		bool seen = false;
		for (unsigned j = 0; j < i; j++)
			seen |= pl[j].core == pl[i].core;
		ncores += !seen;
	}
	printf("placement: %u shard%s on %s%s, %u core%s%s\n", n, n == 1 ? "" : "s",
	       cpuset ? "cpuset " : "all PUs", cpuset ? cpuset : "", ncores, ncores == 1 ? "" : "s",
	       ncores < n ? " (overcommitted: shards share cores)" : "");
	printf("  %-6s %-5s %-5s %s\n", "shard", "PU", "core", "NUMA");
	for (unsigned i = 0; i < n; i++)
		printf("  %-6u %-5u %-5u %u\n", pl[i].shard, pl[i].pu, pl[i].core, pl[i].numa_node);
	print_transports(stdout);
	free(pl);
	keel_topo_free(topo);
	return 0;
}
