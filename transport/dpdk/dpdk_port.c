/* EAL bring-up, the node's port, its mempool and steering; see dpdk_port.h. */
#include "transport/dpdk/dpdk_port.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_flow.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static bool g_eal_up;
static struct keel_dpdk_port g_port;
static bool g_port_up;
static char *g_eal_args; /* EAL keeps pointers into it: lives forever */

int keel_dpdk_eal_init(const char *args, char *errmsg)
{
	pthread_mutex_lock(&g_mu);
	if (g_eal_up) {
		pthread_mutex_unlock(&g_mu);
		return 0;
	}
	/* Two nodes on one host must not share EAL runtime files. */
	char prefix[64] = "";
	if (!args || (!strstr(args, "--file-prefix") && !strstr(args, "--in-memory")))
		snprintf(prefix, sizeof(prefix), " --file-prefix=keel%d", (int)getpid());
	size_t alen = (args ? strlen(args) : 0) + strlen(prefix) + 1;
	char *copy = malloc(alen);
	if (!copy) {
		pthread_mutex_unlock(&g_mu);
		return -ENOMEM;
	}
	snprintf(copy, alen, "%s%s", args ? args : "", prefix);
	char *argv[128];
	int argc = 0;
	argv[argc++] = (char *)"keel";
	for (char *save = NULL, *tok = strtok_r(copy, " \t\n", &save);
	     tok && argc < (int)KEEL_ARRAY_LEN(argv) - 1; tok = strtok_r(NULL, " \t\n", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;
	/* EAL pins the calling thread to its main lcore; hwloc placement is
	 * the runtime's job, so put the affinity back afterwards. */
	cpu_set_t saved;
	bool have_aff = pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved) == 0;
	int rc = rte_eal_init(argc, argv);
	if (have_aff)
		pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
	if (rc < 0) {
		int e = rte_errno;
		free(copy);
		pthread_mutex_unlock(&g_mu);
		return keel_errmsg_set(errmsg, -e, "dpdk: rte_eal_init(%s): %s", args,
				       rte_strerror(e));
	}
	g_eal_args = copy;
	g_eal_up = true;
	pthread_mutex_unlock(&g_mu);
	return 0;
}

int keel_dpdk_thread_join(char *errmsg)
{
	if (rte_lcore_id() != LCORE_ID_ANY)
		return 0;
	if (rte_thread_register() < 0)
		return keel_errmsg_set(errmsg, -rte_errno, "dpdk: rte_thread_register: %s",
				       rte_strerror(rte_errno));
	return 0;
}

static int find_port(const char *spec, uint16_t *id)
{
	char *end;
	unsigned long v = strtoul(spec, &end, 10);
	if (*spec && !*end) {
		if (v >= RTE_MAX_ETHPORTS || !rte_eth_dev_is_valid_port((uint16_t)v))
			return -ENODEV;
		*id = (uint16_t)v;
		return 0;
	}
	return rte_eth_dev_get_port_by_name(spec, id) == 0 ? 0 : -ENODEV;
}

/* Flow rules: UDP destination port base+q to queue q, where the PMD has
 * rte_flow (real NICs, net_tap with tc flower); virtual devices mostly
 * don't, then the shards steer in software through their inboxes. Says
 * why not in why (the PMD's rte_flow error). */
static bool try_flow_rules(uint16_t port, uint16_t base, uint16_t nq, char *why, size_t whylen)
{
	if (nq < 2) {
		snprintf(why, whylen, "one queue");
		return false;
	}
	for (uint16_t q = 0; q < nq; q++) {
		struct rte_flow_attr attr = {.ingress = 1};
		struct rte_flow_item_udp spec = {.hdr.dst_port = rte_cpu_to_be_16((uint16_t)(base + q))};
		struct rte_flow_item_udp mask = {.hdr.dst_port = 0xffff};
		struct rte_flow_item pattern[] = {
			{.type = RTE_FLOW_ITEM_TYPE_ETH},
			{.type = RTE_FLOW_ITEM_TYPE_IPV4},
			{.type = RTE_FLOW_ITEM_TYPE_UDP, .spec = &spec, .mask = &mask},
			{.type = RTE_FLOW_ITEM_TYPE_END},
		};
		struct rte_flow_action_queue qa = {.index = q};
		struct rte_flow_action actions[] = {
			{.type = RTE_FLOW_ACTION_TYPE_QUEUE, .conf = &qa},
			{.type = RTE_FLOW_ACTION_TYPE_END},
		};
		struct rte_flow_error err = {0};
		const char *step = "rte_flow_validate";
		int rc = rte_flow_validate(port, &attr, pattern, actions, &err);
		if (rc == 0) {
			step = "rte_flow_create";
			rc = rte_flow_create(port, &attr, pattern, actions, &err) ? 0 : -rte_errno;
		}
		if (rc != 0) {
			snprintf(why, whylen, "%s (UDP port %u -> queue %u): %s (%s, error type %d)",
				 step, base + q, q, err.message ? err.message : "no message",
				 rte_strerror(rc < 0 ? -rc : rc), (int)err.type);
			rte_flow_flush(port, &err);
			return false;
		}
	}
	return true;
}

static int port_setup(const struct keel_dpdk_config *c, uint16_t nq, char *errmsg)
{
	struct keel_dpdk_port *p = &g_port;
	memset(p, 0, sizeof(*p));
	if (rte_eth_dev_count_avail() == 0)
		return keel_errmsg_set(errmsg, -ENODEV,
				       "dpdk: no ethdev port (give one with --vdev or a PCI device in [dpdk] eal)");
	int rc = find_port(c->port, &p->port_id);
	if (rc)
		return keel_errmsg_set(errmsg, rc, "dpdk: port '%s' not found", c->port);
	rte_eth_dev_get_name_by_port(p->port_id, p->name);
	struct rte_eth_dev_info info;
	rc = rte_eth_dev_info_get(p->port_id, &info);
	if (rc)
		return keel_errmsg_set(errmsg, rc, "dpdk: %s: dev_info", p->name);
	if (nq > info.max_rx_queues || nq > info.max_tx_queues)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "dpdk: %s has %u/%u rx/tx queues, %u shards need one pair each",
				       p->name, info.max_rx_queues, info.max_tx_queues, nq);
	struct rte_eth_conf conf = {0};
	uint64_t txo = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
	if ((info.tx_offload_capa & txo) == txo) {
		conf.txmode.offloads |= txo;
		p->tx_ip_csum = p->tx_udp_csum = true;
	}
	uint64_t rxo = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
	if ((info.rx_offload_capa & rxo) == rxo) {
		conf.rxmode.offloads |= rxo;
		p->rx_csum = true;
	}
	/* No MBUF_FAST_FREE: retransmission keeps references to sent mbufs. */
	/* Frames never exceed the MTU: we fragment ourselves. */
	rc = rte_eth_dev_configure(p->port_id, nq, nq, &conf);
	if (rc)
		return keel_errmsg_set(errmsg, rc, "dpdk: %s: configure %u queues", p->name, nq);
	uint16_t nrx = 1024, ntx = 1024;
	rte_eth_dev_adjust_nb_rx_tx_desc(p->port_id, &nrx, &ntx);
	char pname[64];
	snprintf(pname, sizeof(pname), "keel_mb_%u", p->port_id);
	int socket = rte_eth_dev_socket_id(p->port_id);
	if (socket < 0)
		socket = (int)rte_socket_id();
	p->pool = rte_pktmbuf_pool_create(pname, c->mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
					  socket);
	if (!p->pool)
		return keel_errmsg_set(errmsg, -rte_errno,
				       "dpdk: mempool of %u mbufs: %s (more memory: -m in eal)",
				       c->mbufs, rte_strerror(rte_errno));
	for (uint16_t q = 0; q < nq; q++) {
		struct rte_eth_rxconf rxc = info.default_rxconf;
		rxc.offloads = conf.rxmode.offloads;
		rc = rte_eth_rx_queue_setup(p->port_id, q, nrx, (unsigned)socket, &rxc, p->pool);
		if (rc)
			return keel_errmsg_set(errmsg, rc, "dpdk: %s: rx queue %u", p->name, q);
		struct rte_eth_txconf txc = info.default_txconf;
		txc.offloads = conf.txmode.offloads;
		rc = rte_eth_tx_queue_setup(p->port_id, q, ntx, (unsigned)socket, &txc);
		if (rc)
			return keel_errmsg_set(errmsg, rc, "dpdk: %s: tx queue %u", p->name, q);
		char rname[64];
		snprintf(rname, sizeof(rname), "keel_in_%u_%u", p->port_id, q);
		p->inbox[q] = rte_ring_create(rname, 4096, socket, RING_F_SC_DEQ);
		if (!p->inbox[q])
			return keel_errmsg_set(errmsg, -rte_errno, "dpdk: steering ring %u", q);
	}
	if (c->mtu != 1500 && rte_eth_dev_set_mtu(p->port_id, (uint16_t)c->mtu) != 0)
		keel_warn("dpdk: %s: could not set MTU %u, using it anyway", p->name, c->mtu);
	p->mtu = c->mtu;
	if (c->has_mac) {
		struct rte_ether_addr a;
		memcpy(a.addr_bytes, c->mac, 6);
		if (rte_eth_dev_default_mac_addr_set(p->port_id, &a) != 0)
			keel_info("dpdk: %s keeps its MAC (setting it is not supported); "
				  "frames still carry the configured one", p->name);
		p->mac = a;
	} else {
		rte_eth_macaddr_get(p->port_id, &p->mac);
	}
	rc = rte_eth_dev_start(p->port_id);
	if (rc)
		return keel_errmsg_set(errmsg, rc, "dpdk: %s: start", p->name);
	/* We filter by MAC/IP/port ourselves; some vdevs only pass frames for
	 * the device MAC otherwise. */
	rte_eth_promiscuous_enable(p->port_id);
	char why[256] = "";
	p->flow_steering = try_flow_rules(p->port_id, c->udp_port, nq, why, sizeof(why));
	p->nqueues = nq;
	keel_info("dpdk: port %u (%s) up: %u queue pairs, %u mbufs, csum offload tx %s rx %s, "
		  "steering: %s%s%s",
		  p->port_id, p->name, nq, c->mbufs, p->tx_ip_csum ? "yes" : "no",
		  p->rx_csum ? "yes" : "no", p->flow_steering ? "rte_flow" : "software",
		  p->flow_steering ? "" : ", no flow rules: ", p->flow_steering ? "" : why);
	return 0;
}

int keel_dpdk_port_get(const struct keel_dpdk_config *c, uint16_t nqueues,
		       struct keel_dpdk_port **out, char *errmsg)
{
	if (nqueues == 0 || nqueues > KEEL_DPDK_MAX_SHARDS)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: %u shards (1..%d)", nqueues,
				       KEEL_DPDK_MAX_SHARDS);
	int rc = keel_dpdk_eal_init(c->eal, errmsg);
	if (rc)
		return rc;
	pthread_mutex_lock(&g_mu);
	if (!g_port_up) {
		rc = port_setup(c, nqueues, errmsg);
		if (rc == 0)
			g_port_up = true;
	} else if (g_port.nqueues != nqueues) {
		rc = keel_errmsg_set(errmsg, KEEL_ECONFIG,
				     "dpdk: port set up for %u shards, asked for %u",
				     g_port.nqueues, nqueues);
	}
	pthread_mutex_unlock(&g_mu);
	if (rc)
		return rc;
	*out = &g_port;
	return 0;
}
