#include <stdio.h>

#include "cli/cli.h"
#include "keel/transport.h"
#include "keel_config.h"

int keel_cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("keel %s\n", KEEL_VERSION);
	printf("optional backends built: dpdk=%s rdma=%s\n",
	       KEEL_HAVE_DPDK ? "yes" : "no", KEEL_HAVE_RDMA ? "yes" : "no");
	printf("transports:\n");
	keel_transport_registry_print(stdout);
	return 0;
}
