/*
 * tests/integration/dpdk/rogue.h — a rogue peer for dpdk_node --rogue: it
 * speaks the DPDK backend's reliability layer (transport/dpdk/dpdk_rel.h,
 * the same code the backend runs, so it follows wire-format changes) on
 * the node's own port, but never completes the HMAC handshake, and sends
 * application data anyway. Built with DPDK's flags (rogue.c); dpdk_node
 * sees only these two calls.
 *
 * Ownership: the EAL and the port are the process-wide ones of
 * transport/dpdk/dpdk_port.h (brought up here, reused by the transports
 * dpdk_node opens afterwards); every rogue session and mbuf is released
 * before a call returns.
 */
#ifndef KEEL_TEST_DPDK_ROGUE_H
#define KEEL_TEST_DPDK_ROGUE_H

#include <stdint.h>

#include "transport/dpdk/dpdk_config.h"

/* Brings up the port (nqueues queue pairs) and attacks node `victim` (an
 * entry of dc's peer table) on its shard 0 from node ids 3..9, on queue 0,
 * each id one scenario: data right after HELLO; data instead of AUTH; a bad
 * AUTH followed by data; data with no HELLO at all; a 64 KiB message after
 * HELLO; an internal message type after HELLO; HELLO and two data messages
 * coalesced into one packet (dpdk_rel's BATCH). Prints what it did and what
 * came back. Returns 0, 1 on error, 77 when DPDK cannot start here. */
int keel_test_rogue_attacks(const struct keel_dpdk_config *dc, uint16_t nqueues,
			    uint64_t cluster_id, uint32_t victim);

/* Claims a restart of the session node/shard dialled to victim's shard
 * vshard: a packet from a new epoch carrying an application message, as a
 * spoofer that knows only the node ids would send. Must run on the thread
 * that owns queue `shard` (it transmits on it). Returns 0 or 1. */
int keel_test_rogue_spoof_restart(const struct keel_dpdk_config *dc, uint32_t node,
				  uint16_t shard, uint32_t victim, uint16_t vshard);

#endif /* KEEL_TEST_DPDK_ROGUE_H */
