/*
 * transport/dpdk/dpdk_port.h — process-wide DPDK state shared by the shard
 * transports of one node: the EAL, one ethdev port with one RX/TX queue
 * pair per shard, the mbuf pool, and the software steering rings.
 *
 * Ownership and threads: the EAL and the port are set up once per process,
 * by the first shard that opens a dpdk transport (under a mutex); they live
 * until the process exits (DPDK has no clean way to bring the EAL up twice).
 * After that, queue q is used only by shard q's thread, and inbox[q] is
 * dequeued only by shard q (any shard may enqueue into it: that is the
 * software steering for PMDs without flow rules).
 *
 * keel_dpdk_eal_init restores the calling thread's CPU affinity afterwards:
 * placement belongs to hwloc (the runtime), not to EAL's core list. Shard
 * threads join the EAL through rte_thread_register (keel_dpdk_thread_join).
 */
#ifndef KEEL_TRANSPORT_DPDK_PORT_H
#define KEEL_TRANSPORT_DPDK_PORT_H

#include <rte_ethdev.h>
#include <rte_ring.h>

#include "transport/dpdk/dpdk_config.h"

#define KEEL_DPDK_MAX_SHARDS 64
/* Ethernet + IPv4 + UDP in front of the reliability header. */
#define KEEL_DPDK_L2L4_LEN (14 + 20 + 8)

struct keel_dpdk_port {
	uint16_t port_id;
	uint16_t nqueues;
	uint32_t mtu;
	struct rte_mempool *pool;
	struct rte_ether_addr mac;
	bool tx_ip_csum, tx_udp_csum; /* offloads the PMD has */
	bool rx_csum;
	bool flow_steering;           /* rte_flow rules steer ports to queues */
	char name[RTE_ETH_NAME_MAX_LEN];
	struct rte_ring *inbox[KEEL_DPDK_MAX_SHARDS];
};

/* Brings up the EAL from a whitespace-separated argument string, once per
 * process (later calls return 0 and ignore args). */
int keel_dpdk_eal_init(const char *args, char *errmsg);
/* Registers the calling thread with the EAL if it is not an EAL thread. */
int keel_dpdk_thread_join(char *errmsg);
/* The node's port, configured with nqueues queue pairs and started on the
 * first call; later calls must ask for the same nqueues. */
int keel_dpdk_port_get(const struct keel_dpdk_config *c, uint16_t nqueues,
		       struct keel_dpdk_port **out, char *errmsg);

#endif /* KEEL_TRANSPORT_DPDK_PORT_H */
