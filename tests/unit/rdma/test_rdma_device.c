/* The rdma backend on a REAL verbs device (libibverbs): two one-shard
 * endpoints in this process, connected through the device, 2000 messages
 * of sizes from 8 bytes to 64 KiB (chunked), checked whole and in order.
 *
 * Needs a device that ibv_get_device_list finds (a RoCE or InfiniBand NIC,
 * or soft-RoCE: `modprobe rdma_rxe; rdma link add rxe0 type rxe netdev
 * IFACE`, on a kernel built with CONFIG_RDMA_RXE) and a memlock limit for
 * the rings and pools (`ulimit -l` of 64 MiB or unlimited). Without a
 * device it skips (exit 77) and says so. [rdma] lines for the endpoints
 * come from KEEL_RDMA_TEST_CONFIG, e.g. "device = rxe0\ngid_index = 1\n". */
#include <errno.h>
#include <infiniband/verbs.h>

#include "rdma_harness.h"

static int check(bool ok, const char *what)
{
	if (!ok)
		fprintf(stderr, "rdma-device: FAILED: %s\n", what);
	return ok ? 0 : 1;
}

int main(void)
{
	int n = 0;
	errno = 0;
	struct ibv_device **l = ibv_get_device_list(&n);
	int e = errno;
	if (l)
		ibv_free_device_list(l);
	if (!l || n == 0) {
		printf("SKIP: rdma-device needs an RDMA device from ibv_get_device_list (%s%s); "
		       "this machine has none. On a kernel with CONFIG_RDMA_RXE, soft-RoCE gives "
		       "one: modprobe rdma_rxe && rdma link add rxe0 type rxe netdev IFACE. "
		       "The backend's logic is tested on emulated verbs in rdma-emu.\n",
		       l ? "it found none" : "it failed: ", l ? "" : strerror(e ? e : ENODEV));
		return 77;
	}
	const char *extra = getenv("KEEL_RDMA_TEST_CONFIG");
	static struct side srv, cli;
	static const uint32_t lens[] = {8, 64, 1000, 4080, 4081, 20000, 65536};
	char err[KEEL_ERRMSG_LEN];
	h_write_secret();
	cli.total = 2000;
	cli.lens = lens;
	cli.nlens = KEEL_ARRAY_LEN(lens);
	cli.dial = true;
	if (h_load(&srv, 1, extra, err) || h_load(&cli, 2, extra, err)) {
		fprintf(stderr, "rdma-device: config: %s\n", err);
		return 1;
	}
	if (h_start(&srv, err) || !h_wait_i(&srv.open_rc, 1, 10000)) {
		fprintf(stderr, "rdma-device: server: %s %s\n", err, srv.open_err);
		return 1;
	}
	if (atomic_load(&srv.open_rc) < 0) {
		fprintf(stderr, "rdma-device: opening the rdma transport on the device failed: %s\n",
			srv.open_err);
		return 1;
	}
	if (h_start(&cli, err) || !h_wait_i(&cli.open_rc, 1, 10000) || atomic_load(&cli.open_rc) < 0) {
		fprintf(stderr, "rdma-device: client: %s %s\n", err, cli.open_err);
		return 1;
	}
	int bad = 0;
	bad += check(h_wait_u(&srv.received, 2000, 60000), "all 2000 messages arrive");
	bad += check(atomic_load(&srv.bad) == 0, "every message whole, in order, its type kept");
	bad += check(atomic_load(&srv.peer_node) == 2, "the listener learns the dialler's node");
	h_stop(&cli);
	bad += check(h_wait_i(&srv.down, 1, 20000), "the listener sees the dialler go");
	h_stop(&srv);
	h_cleanup();
	printf("rdma-device: %s: %u messages over a real device\n", bad ? "FAILED" : "ok",
	       atomic_load(&srv.received));
	return bad ? 1 : 0;
}
