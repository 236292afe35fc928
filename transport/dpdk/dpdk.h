/*
 * transport/dpdk/dpdk.h — what the rest of keel (registry, tests, bench)
 * needs from the DPDK backend: its ops and its counters. The backend is
 * opened through keel/transport.h with cfg->backend_arg pointing at a
 * struct keel_dpdk_config (transport/dpdk/dpdk_config.h), which the caller
 * owns and which must stay valid until open returns (it is copied).
 */
#ifndef KEEL_TRANSPORT_DPDK_H
#define KEEL_TRANSPORT_DPDK_H

#include <stdbool.h>
#include <stdint.h>

#include "keel/transport.h"
#include "transport/dpdk/dpdk_config.h"

extern const struct keel_transport_ops keel_transport_dpdk_ops;

/* Per-shard counters of a dpdk transport. */
struct keel_dpdk_stats {
	uint64_t rx_pkts, tx_pkts, rx_msgs, rx_zero_copy;
	uint64_t retransmits, injected_drops, bad_csum, bad_frames;
	uint64_t steered, arp_replies, no_mbuf;
	/* software steering: frames another shard received on its queue and
	 * handed to this one (`steered` counts the ones this shard handed on) */
	uint64_t steered_in;
	/* 1 when rte_flow rules steer UDP ports to queues (no handing over) */
	uint64_t flow_steering;
	/* summed over the live sessions */
	uint64_t rel_retransmits, rel_timeouts, rel_dups, rel_out_of_order;
	uint64_t rel_acks_sent, rel_data_sent, rel_stale;
	/* messages sent, and coalesced packets among rel_data_sent */
	uint64_t rel_msgs_sent, rel_batches_sent;
	/* tx flushes that left frames behind (the PMD's ring was full) */
	uint64_t tx_ring_full;
	/* the port's (all queues): frames the NIC/PMD dropped */
	uint64_t port_imissed, port_ierrors, port_rx_nombuf, port_oerrors;
};

/* Reads t's counters; t must be a dpdk transport, on its own thread. */
void keel_dpdk_get_stats(struct keel_transport *t, struct keel_dpdk_stats *out);

/* Whether everything sent on c has been acknowledged by the peer. */
bool keel_dpdk_conn_idle(struct keel_conn *c);
/* Whether the port's link is up (memif: the peer process is attached). */
bool keel_dpdk_link_up(struct keel_transport *t);

#endif /* KEEL_TRANSPORT_DPDK_H */
