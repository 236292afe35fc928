/* keel topo: the machine's topology (hwloc) and where a node's shards would
 * run: shard i -> PU, core, NUMA node. Takes the same placement options as
 * a node (--shards, --cpuset, --overcommit), so it answers "where would my
 * shards go" before starting anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/runtime.h"
#include "keel/transport.h"

/* Which reactor a node here would run, and why (runtime/reactor.c). */
static void print_reactor(FILE *f, const char *asked)
{
	enum keel_reactor_kind k;
	char why[KEEL_ERRMSG_LEN];
	if (keel_reactor_parse(asked, &k) == 0 && k != KEEL_REACTOR_AUTO) {
		fprintf(f, "reactor: %s (--reactor)\n", keel_reactor_name(k));
		return;
	}
	k = keel_reactor_default(why);
	fprintf(f, "reactor: %s (%s)\n", keel_reactor_name(k), why);
}

/* The transport backends this build has (transport/registry.c). */
static void print_transports(FILE *f)
{
	fprintf(f, "transports:\n");
	keel_transport_registry_print(f);
	keel_transport_devices_print(f);
}

int keel_cmd_topo(int argc, char **argv)
{
	unsigned nshards = 0;
	const char *cpuset = NULL, *synthetic = NULL, *reactor = "auto";
	bool overcommit = false;
	const struct keel_opt opts[] = {
		{"shards", 0, KEEL_OPT_U32, &nshards, 1, KEEL_MAX_SHARDS, "N",
		 "shards to place (more than cores: --overcommit)",
		 .def = "one per core of the cpuset"},
		{"cpuset", 0, KEEL_OPT_STR, &cpuset, .arg = "LIST",
		 .help = "CPUs to use, cpuset(7) list, e.g. 0-3,8", .def = "all"},
		{"overcommit", 0, KEEL_OPT_FLAG, &overcommit,
		 .help = "allow more shards than cores (they share cores)"},
		{"synthetic", 0, KEEL_OPT_STR, &synthetic, .arg = "SPEC",
		 .help = "place on an hwloc synthetic topology instead of this\n"
			 "machine, e.g. \"pack:2 numa:2 core:4 pu:2\""},
		{"reactor", 0, KEEL_OPT_STR, &reactor, .arg = "NAME",
		 .help = "auto, io_uring or epoll: which reactor to report"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		.name = "topo",
		.synopsis = "[--shards N] [--cpuset LIST] [--overcommit] [--synthetic SPEC] [--reactor NAME]",
		.about = "  prints the machine's topology (hwloc) and where a node's shards would run:\n"
			 "  shard -> PU, core, NUMA node, with the same placement options as a node;\n"
			 "  then the reactor a node would run here (io_uring, or epoll where\n"
			 "  io_uring_setup is refused or KEEL_REACTOR=epoll) and the transports.\n",
		.opts = opts,
	};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	char em[KEEL_ERRMSG_LEN];
	enum keel_reactor_kind rk;
	if (keel_reactor_parse(reactor, &rk))
		return keel_opt_usage(&spec, "--reactor: '%s' is not auto, io_uring or epoll", reactor);
	struct keel_cpuset set;
	if (cpuset && keel_cpuset_parse(cpuset, &set, em))
		return keel_opt_usage(&spec, "%s", em);
	struct keel_topo *topo;
	if (keel_topo_load(synthetic, &topo, em)) {
		fprintf(stderr, "keel topo: %s\n", em);
		return 1;
	}
	struct keel_placement *pl;
	unsigned n;
	int rc = keel_topo_place(topo, cpuset ? &set : NULL, nshards, overcommit, &pl, &n, em);
	if (rc) {
		keel_topo_free(topo);
		/* a placement that does not fit comes from the options */
		if (rc == KEEL_ETOPO)
			return keel_opt_usage(&spec, "%s", em);
		fprintf(stderr, "keel topo: %s\n", em);
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
	print_reactor(stdout, reactor);
	print_transports(stdout);
	free(pl);
	keel_topo_free(topo);
	return 0;
}
