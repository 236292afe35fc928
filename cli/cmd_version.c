/* keel version: the version, the optional backends this build has and the
 * transport registry. Takes no arguments. */
#include <stdio.h>

#include "cli/cli.h"
#include "keel/runtime.h"
#include "keel/transport.h"
#include "keel_config.h"

int keel_cmd_version(int argc, char **argv)
{
	const struct keel_cmd_spec spec = {
		.name = "version",
		.about = "  prints the version, the optional backends built (dpdk, rdma), the\n"
			 "  reactors and the transports this build has.\n",
	};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	printf("keel %s\n", KEEL_VERSION);
	printf("optional backends built: dpdk=%s rdma=%s\n",
	       KEEL_HAVE_DPDK ? "yes" : "no", KEEL_HAVE_RDMA ? "yes" : "no");
	/* Both reactors are always built; `keel topo` says which one runs here. */
	printf("reactors: %s %s (keel topo: which one runs here)\n",
	       keel_reactor_name(KEEL_REACTOR_IO_URING), keel_reactor_name(KEEL_REACTOR_EPOLL));
	printf("transports:\n");
	keel_transport_registry_print(stdout);
	return 0;
}
