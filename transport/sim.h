/*
 * transport/sim.h — control of the `sim` transport backend: an in-process
 * network, deterministic from a seed, that the simulator drives.
 *
 * The endpoints are ordinary keel transports (keel/transport.h) opened with
 * keel_transport_open("sim", cfg) and cfg->backend_arg = the network, so the
 * code under test runs unchanged on it. What only a simulator needs is here:
 * the virtual clock, the fault model, partitions, crash and restart, and a
 * hash of everything the network did (the trace), which is what "the same
 * seed gives the same run" is checked against.
 *
 * Time: nothing moves unless the simulator moves it. keel_sim_net_advance_to
 * sets the clock; poll() on an endpoint then delivers its events that are
 * due (delivery time <= now), in (time, send order) order.
 * keel_sim_net_next_event says when the next event of any endpoint is due.
 *
 * Faults (all drawn from the network's one PRNG, at send time, so one seed
 * and the same sequence of calls always give the same trace):
 *   delay    uniform in [delay_min_ns, delay_max_ns]; with probability
 *            slow_ppm/1e6 uniform in [delay_max_ns, slow_max_ns] instead
 *            (a long tail);
 *   drop     lost with probability drop_ppm/1e6;
 *   dup      delivered twice (second copy with its own delay), dup_ppm;
 *   reorder  a connection delivers in send order unless a message draws
 *            reorder (reorder_ppm): it then keeps its own delay and may
 *            overtake earlier messages.
 *   hold     a message that meets a partition (at send or on arrival) is,
 *            with hold_ppm, kept in flight and tried again uniform in
 *            [delay_max_ns, hold_max_ns] later instead of lost, as a
 *            stalled TCP connection delivers after the partition heals:
 *            messages of an old term arrive late;
 *   replay   a delivered message is, with replay_ppm, remembered (the last
 *            32); when a new connection between the same two endpoints
 *            comes up (after a restart, say), each remembered one is
 *            delivered again on it with probability 1/2, up to
 *            hold_max_ns late.
 * With hold and replay at 0 nothing is drawn for them (seeds of older
 * simulations keep their runs). With drop, dup, reorder and replay at 0 a connection keeps the RELIABLE contract
 * (whole, in order, at most once); with them on it deliberately does not,
 * which is why the backend does not advertise KEEL_TRANSPORT_RELIABLE.
 *
 * Partitions are per direction between nodes (all shards): a message whose
 * link is blocked when it is sent or when it would arrive is lost; a
 * connect across a blocked link fails with -ETIMEDOUT. Connections
 * themselves survive a partition (a stalled link), as TCP would for a while.
 *
 * Crash: keel_sim_net_crash(node) kills every endpoint of the node at once:
 * they deliver and send nothing more, messages to and from them are lost,
 * and their peers see on_conn_down(-ECONNRESET) after one network delay.
 * The simulator must then keel_transport_close() the dead endpoints (the
 * process is gone). keel_sim_net_restart(node) lets the node open endpoints
 * again (open fails with KEEL_EUNAVAIL while it is down).
 *
 * Ownership: the simulator owns the network; it must close every endpoint
 * before keel_sim_net_destroy. Everything runs on one thread.
 */
#ifndef KEEL_TRANSPORT_SIM_H
#define KEEL_TRANSPORT_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "keel/transport.h"

/* Node ids the partition matrix covers: 0 .. KEEL_SIM_MAX_NODES-1. */
#define KEEL_SIM_MAX_NODES 64

struct keel_sim_net;

struct keel_sim_faults {
	uint64_t delay_min_ns;
	uint64_t delay_max_ns;
	uint32_t slow_ppm;
	uint64_t slow_max_ns;
	uint32_t drop_ppm;
	uint32_t dup_ppm;
	uint32_t reorder_ppm;
	uint32_t hold_ppm;
	uint64_t hold_max_ns;
	uint32_t replay_ppm;
};

struct keel_sim_stats {
	uint64_t sent;       /* send() calls accepted */
	uint64_t delivered;  /* on_recv calls */
	uint64_t dropped;    /* lost to drop_ppm */
	uint64_t partitioned;/* lost to a blocked link */
	uint64_t dead;       /* lost because an end crashed or closed */
	uint64_t duplicated;
	uint64_t reordered;
	uint64_t conns_up;
	uint64_t conns_down;
	uint64_t held;       /* kept in flight across a partition (hold_ppm) */
	uint64_t replayed;   /* old messages delivered again (replay_ppm) */
};

/* Creates a network whose PRNG starts from seed. */
int keel_sim_net_create(uint64_t seed, const struct keel_sim_faults *faults,
			struct keel_sim_net **out);
/* Every endpoint must be closed first. */
void keel_sim_net_destroy(struct keel_sim_net *net);
/* Changes the fault model from now on (messages in flight keep theirs). */
void keel_sim_net_set_faults(struct keel_sim_net *net, const struct keel_sim_faults *f);

uint64_t keel_sim_net_now(const struct keel_sim_net *net);
/* Moves the clock forward to t (never backward). */
void keel_sim_net_advance_to(struct keel_sim_net *net, uint64_t t);
/* The earliest time an endpoint has something to do, or UINT64_MAX. */
uint64_t keel_sim_net_next_event(const struct keel_sim_net *net);

/* Blocks (or unblocks) messages from node `from` to node `to`. */
void keel_sim_net_block(struct keel_sim_net *net, uint32_t from, uint32_t to, bool blocked);
/* Both directions. */
void keel_sim_net_partition(struct keel_sim_net *net, uint32_t a, uint32_t b, bool blocked);
bool keel_sim_net_blocked(const struct keel_sim_net *net, uint32_t from, uint32_t to);
/* Unblocks every link. */
void keel_sim_net_heal(struct keel_sim_net *net);

void keel_sim_net_crash(struct keel_sim_net *net, uint32_t node);
void keel_sim_net_restart(struct keel_sim_net *net, uint32_t node);
bool keel_sim_net_is_up(const struct keel_sim_net *net, uint32_t node);

/* A running hash of every event: deliveries (time, ends, type, bytes),
 * losses, duplicates, connection ups and downs. */
uint64_t keel_sim_net_trace_hash(const struct keel_sim_net *net);
void keel_sim_net_stats(const struct keel_sim_net *net, struct keel_sim_stats *st);
/* If f is non-NULL, one line per network event goes there. */
void keel_sim_net_set_trace(struct keel_sim_net *net, FILE *f);

/* A tap: called for every message a process puts into the network (before
 * any fault decides its fate), with the ends and the frame as sent. The
 * simulator's observer (a vote ledger, say); it must not call back into the
 * network. NULL turns it off. */
typedef void keel_sim_tap_fn(void *arg, struct keel_addr from, struct keel_addr to, uint16_t type,
			     const void *data, size_t len);
void keel_sim_net_set_tap(struct keel_sim_net *net, keel_sim_tap_fn *fn, void *arg);

/* Delivers a copy of a frame from `from` to `to` delay_ns from now on the
 * connection between them that is up now (the receiver's end), as a message
 * that sat in a queue somewhere: a simulator replaying an old message it
 * saw through the tap. KEEL_ENOTFOUND if no such connection is up. The
 * frame goes through the receiver's checks like any other. */
int keel_sim_net_inject(struct keel_sim_net *net, struct keel_addr from, struct keel_addr to,
			uint16_t type, const void *data, size_t len, uint64_t delay_ns);

/* The backend's ops (also listed in the transport registry as "sim"). */
extern const struct keel_transport_ops keel_transport_sim_ops;

#endif
