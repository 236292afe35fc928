/*
 * runtime/runtime_internal.h — the runtime's private structures, shared by
 * the files of runtime/ (and white-box tests). Not a public header.
 *
 * Ownership: struct keel_runtime owns the topology, the placement, the
 * shards and the rings. Each struct keel_shard lives in memory bound to its
 * shard's NUMA node; the fields above `shared` are touched only by the shard's
 * own thread, the cache lines after it by other threads (atomics only).
 */
#ifndef KEEL_RUNTIME_INTERNAL_H
#define KEEL_RUNTIME_INTERNAL_H

#include <hwloc.h>
#include <pthread.h>
#include <stdatomic.h>

#include "keel/runtime.h"
#include "runtime/reactor.h"
#include "runtime/ring.h"

struct keel_topo {
	hwloc_topology_t t;
	bool synthetic;
};

int keel_topo_bind_thread(const struct keel_topo *topo, unsigned pu, char *errmsg);
void keel_topo_bind_thread_memory(const struct keel_topo *topo, unsigned node);
void *keel_topo_alloc_on_node(const struct keel_topo *topo, unsigned node, size_t len);
void keel_topo_free_on_node(const struct keel_topo *topo, void *p, size_t len);

/* A message waiting in the sender's overflow queue for ring space. */
struct keel_ovf_item {
	uint32_t kind;
	union keel_msg_fn fn;
	void *arg;
	void *extra;
};
struct keel_ovf {
	struct keel_ovf_item *items; /* circular, cap a power of two */
	size_t head, len, cap;
};

struct keel_ext_msg {
	struct keel_ext_msg *next;
	void (*fn)(struct keel_shard *on, void *arg);
	void *arg;
};

struct keel_poller {
	int (*poll)(void *arg);
	void *arg;
};

/* Per-shard memory pools: size classes 64 B .. 64 KiB, in powers of two. */
#define KEEL_POOL_MIN_SHIFT 6
#define KEEL_POOL_MAX_SHIFT 16
#define KEEL_POOL_NCLASS (KEEL_POOL_MAX_SHIFT - KEEL_POOL_MIN_SHIFT + 1)
#define KEEL_POOL_LARGE 0xffu
#define KEEL_POOL_MAGIC 0x6b65656cu

/* 16 bytes before every block. */
struct keel_block_hdr {
	struct keel_shard *owner; /* NULL for large (malloc) blocks */
	uint32_t cls;
	uint32_t magic;
};
struct keel_free_block {
	struct keel_free_block *next;
};
struct keel_slab {
	struct keel_slab *next;
	size_t len;
};

struct keel_gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned count, target;
	bool abort;
};

/* A clock and its timers (runtime/timer.c): a 1-based min-heap on
 * (deadline, arm sequence). Real clocks read CLOCK_MONOTONIC; a virtual one
 * reads `vnow`, which only keel_clock_advance_to moves. */
struct keel_clock {
	struct keel_timer **heap;
	uint32_t len, cap;
	uint64_t seq;
	bool virt;
	uint64_t vnow;
};

struct keel_shard {
	/* --- owned by the shard's thread --- */
	struct keel_runtime *rt;
	unsigned id, n;
	struct keel_placement pl;
	uint64_t now;
	struct keel_ring **out; /* out[to]: this shard -> to */
	struct keel_ring **in;  /* in[from]: from -> this shard */
	struct keel_ovf *ovf;   /* per target */
	unsigned *dirty;        /* targets posted to since the last flush */
	uint8_t *is_dirty;
	unsigned ndirty;
	unsigned novf;          /* targets with a non-empty overflow queue */

	struct keel_clock clock; /* the shard's timers */
	unsigned timer_skip;

	struct keel_poller *pollers;
	unsigned npollers, pollers_cap;

	const struct keel_reactor_ops *rops; /* = rt->reactor */
	void *reactor;                       /* the backend's state */

	struct keel_free_block *pool_free[KEEL_POOL_NCLASS];
	struct keel_slab *slabs;

	uint64_t msgs_in, msgs_out, loops;

	/* --- touched by other threads --- */
	_Atomic int sleeping KEEL_CACHE_ALIGNED;
	int efd;
	_Atomic(struct keel_free_block *) remote_free KEEL_CACHE_ALIGNED;
	/* keel_shard_post_external: from threads that are not shards */
	_Atomic int ext_pending KEEL_CACHE_ALIGNED;
	pthread_mutex_t ext_mu;
	struct keel_ext_msg *ext_head, *ext_tail;
	pthread_t thread;
	bool thread_started;
	size_t alloc_len; /* bytes of this struct's NUMA allocation */
};

struct keel_runtime {
	struct keel_runtime_config cfg;
	const struct keel_reactor_ops *reactor; /* chosen at create */
	struct keel_topo *topo;
	struct keel_placement *pl;
	unsigned n;
	uint32_t ring_cap;
	bool shared_pus; /* overcommitted: some shards share a PU */
	struct keel_shard **shards;
	struct keel_ring **rings; /* rings[from * n + to] */
	size_t ring_bytes;

	void (*init)(struct keel_shard *, void *);
	void (*fini)(struct keel_shard *, void *);
	void *arg;
	struct keel_gate g_setup, g_init, g_loop;
	atomic_uint draining;     /* shards still running messages after the stop */
	pthread_mutex_t err_mu;
	int run_err;
	char errmsg[KEEL_ERRMSG_LEN];
	bool started, waited;

	_Atomic int stop KEEL_CACHE_ALIGNED;
};

extern _Thread_local struct keel_shard *keel_tls_shard;

/* runtime/timer.c */
void keel_timers_fire(struct keel_shard *s);
/* Nanoseconds until the next timer, UINT64_MAX if none. */
uint64_t keel_timers_next_delay(struct keel_shard *s);
void keel_timers_free(struct keel_shard *s);
/* Fires c's timers due at `now`, at most max of them; returns how many. */
unsigned keel_clock_fire(struct keel_clock *c, uint64_t now, unsigned max);

/* runtime/msg.c */
unsigned keel_msgs_drain(struct keel_shard *s);
bool keel_msgs_incoming(struct keel_shard *s);
void keel_msgs_free(struct keel_shard *s);

/* runtime/memory.c */
void keel_pool_drain_remote(struct keel_shard *s);
void keel_pool_free_local(struct keel_shard *s, void *p);
void keel_pool_destroy(struct keel_shard *s);

#endif
