/*
 * transport/dpdk/dpdk_config.h — the [dpdk] section of a node configuration:
 * EAL arguments, which port, our addresses, the static peer table, and the
 * loss-injection setting. Pure C (no DPDK types) so it is parsed and tested
 * in every build.
 *
 *   [dpdk]
 *   eal = --no-huge -m 256 --no-pci --vdev=net_memif0,role=server,socket=/tmp/k.sock
 *                                ; without --file-prefix or --in-memory, keel adds
 *                                ; --file-prefix=keel<pid> so nodes on one host
 *                                ; never share EAL state (--in-memory needs hugepages)
 *   port = 0                     ; ethdev port id or device name (default 0)
 *   ip = 10.9.0.1                ; our IPv4 address (frames are Ethernet+IPv4+UDP)
 *   udp_port = 7400              ; shard s receives on udp_port + s
 *   mac = 02:00:00:00:00:01      ; optional: override the port's MAC
 *   peer = 2 02:00:00:00:00:02 10.9.0.2 7400   ; node mac ip [udp_port], repeatable
 *   loss = 0.01                  ; drop this fraction of received packets (tests)
 *   loss_seed = 42
 *   mbufs = 16384                ; mbufs in the pool
 *   mtu = 1500
 *
 * Ownership: plain value struct; the caller owns it. keel_dpdk_config_set
 * takes one key/value at a time so a node config parser can forward the
 * [dpdk] section's lines to it.
 */
#ifndef KEEL_TRANSPORT_DPDK_CONFIG_H
#define KEEL_TRANSPORT_DPDK_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "keel/base.h"

#define KEEL_DPDK_MAX_PEERS 64
#define KEEL_DPDK_EAL_LEN 1024

struct keel_dpdk_peer {
	uint32_t node;
	uint8_t mac[6];
	uint32_t ip;       /* host byte order */
	uint16_t udp_port; /* base port; 0: same as ours */
};

struct keel_dpdk_config {
	char eal[KEEL_DPDK_EAL_LEN];
	char port[128];    /* "0", or a device name such as net_memif0 */
	uint32_t ip;       /* host byte order; 0 = unset */
	uint16_t udp_port;
	bool has_mac;
	uint8_t mac[6];
	struct keel_dpdk_peer peers[KEEL_DPDK_MAX_PEERS];
	uint32_t npeers;
	uint32_t loss_ppm; /* received packets dropped per million (tests) */
	uint64_t loss_seed;
	uint32_t mbufs;
	uint32_t mtu;
	uint32_t rto_us;   /* 0: the reliability layer's default */
};

/* Defaults: port 0, udp_port 7400, 16384 mbufs, MTU 1500, no loss, EAL
 * arguments that need neither hugepages nor a PCI device. */
void keel_dpdk_config_default(struct keel_dpdk_config *c);
/* Sets one key of the [dpdk] section. Returns 0, or KEEL_ECONFIG with the
 * reason in errmsg (may be NULL). */
int keel_dpdk_config_set(struct keel_dpdk_config *c, const char *key,
			 const char *value, char *errmsg);
/* Parses INI text and applies its [dpdk] section (other sections are
 * ignored). Returns 0 or KEEL_ECONFIG. */
int keel_dpdk_config_parse(struct keel_dpdk_config *c, const char *ini_text,
			   char *errmsg);
/* The peer entry for node, or NULL. */
const struct keel_dpdk_peer *keel_dpdk_config_peer(const struct keel_dpdk_config *c,
						   uint32_t node);
/* Parsers for the pieces (exposed for tests). */
int keel_dpdk_parse_mac(const char *s, uint8_t mac[6]);
int keel_dpdk_parse_ip(const char *s, uint32_t *ip);

#endif /* KEEL_TRANSPORT_DPDK_CONFIG_H */
