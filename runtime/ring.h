/*
 * runtime/ring.h — the single-producer/single-consumer message ring between
 * one ordered pair of shards. Internal to runtime/ (and its tests).
 *
 * Ownership: the ring memory belongs to the runtime (allocated on the
 * consumer's NUMA node, freed by keel_runtime_destroy). The `prod` half is
 * touched only by the producer thread, `cons` only by the consumer; the
 * slots are handed over one at a time through their `seq` field.
 *
 * Why not ck_ring (Concurrency Kit, the Debian library we would use otherwise):
 *  - ck_ring 0.7 publishes every entry by storing the shared producer index
 *    and re-reads the consumer's index on every enqueue, so each message costs
 *    at least two cross-core cache-line transfers (index + slot) and there is
 *    no batched commit on the consumer side. Here a slot carries its own
 *    sequence number (FastForward/B-Queue style): the consumer polls the slot
 *    itself, so a message costs one line transfer, the producer re-reads the
 *    consumer's head only when the ring looks full, and the consumer publishes
 *    its head once per drained batch. This is what keeps the cross-shard round
 *    trip near the bare cache-line ping-pong (bench/ring).
 *  - ck_pr's fences and loads are inline assembly that ThreadSanitizer cannot
 *    see, so the TSan suite would report every ck_ring hand-over as a race;
 *    C11 atomics here are understood by TSan.
 */
#ifndef KEEL_RUNTIME_RING_H
#define KEEL_RUNTIME_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "keel/base.h"

struct keel_shard;

enum keel_msg_kind {
	KEEL_MSG_POST = 1,  /* fn.post(on, arg) */
	KEEL_MSG_CALL = 2,  /* extra = reply; result = fn.call(on, arg) */
	KEEL_MSG_REPLY = 3, /* fn.reply(from, extra = result, arg) */
	KEEL_MSG_FREE = 4,  /* arg = block to return to the owner's pool */
	KEEL_MSG_RAW = 5,   /* tests and bench: fields as they are */
};

union keel_msg_fn {
	void (*post)(struct keel_shard *on, void *arg);
	void *(*call)(struct keel_shard *on, void *arg);
	void (*reply)(struct keel_shard *from, void *result, void *arg);
	uintptr_t raw;
};

/* 32 bytes: two messages per cache line. */
struct keel_ring_slot {
	_Atomic uint32_t seq; /* position + 1 once written; lap-aware */
	uint32_t kind;
	union keel_msg_fn fn;
	void *arg;
	void *extra;
};

struct keel_ring {
	struct {
		uint32_t tail;       /* next position to write */
		uint32_t head_cache; /* last head read from cons */
		uint32_t mask;
		struct keel_ring_slot *slots;
	} prod KEEL_CACHE_ALIGNED;
	struct {
		_Atomic uint32_t head; /* published: slots below are free */
		uint32_t next;         /* next position to read */
		uint32_t mask;
		struct keel_ring_slot *slots;
	} cons KEEL_CACHE_ALIGNED;
};

/* Bytes for a ring of `capacity` slots (a power of two), header included;
 * the slots follow the header. */
static inline size_t keel_ring_bytes(uint32_t capacity)
{
	return sizeof(struct keel_ring) + (size_t)capacity * sizeof(struct keel_ring_slot);
}

/* mem: keel_ring_bytes(capacity) zeroed bytes, cache-line aligned. The
 * slots are not written here: zero already means "empty" (seq 0 never
 * matches a position + 1 of the first lap), and leaving the fresh mmap'd
 * pages untouched means a ring only takes memory as far as it is used
 * (n^2 rings for n shards). */
static inline struct keel_ring *keel_ring_init(void *mem, uint32_t capacity)
{
	struct keel_ring *r = (struct keel_ring *)mem;
	struct keel_ring_slot *slots = (struct keel_ring_slot *)(r + 1);
	r->prod.tail = 0;
	r->prod.head_cache = 0;
	r->prod.mask = capacity - 1;
	r->prod.slots = slots;
	atomic_init(&r->cons.head, 0);
	r->cons.next = 0;
	r->cons.mask = capacity - 1;
	r->cons.slots = slots;
	return r;
}

/* Producer: the slot to fill next, or NULL when the ring is full. */
static inline struct keel_ring_slot *keel_ring_reserve(struct keel_ring *r)
{
	uint32_t tail = r->prod.tail;
	if (KEEL_UNLIKELY(tail - r->prod.head_cache > r->prod.mask)) {
		r->prod.head_cache = atomic_load_explicit(&r->cons.head, memory_order_acquire);
		if (tail - r->prod.head_cache > r->prod.mask)
			return NULL;
	}
	return &r->prod.slots[tail & r->prod.mask];
}

/* Producer: hands the reserved slot (fields filled) to the consumer. */
static inline void keel_ring_commit(struct keel_ring *r, struct keel_ring_slot *s)
{
	uint32_t tail = r->prod.tail;
	atomic_store_explicit(&s->seq, tail + 1, memory_order_release);
	r->prod.tail = tail + 1;
}

/* Producer: messages written that the consumer has not released yet. */
static inline uint32_t keel_ring_used(const struct keel_ring *r)
{
	return r->prod.tail - atomic_load_explicit(&r->cons.head, memory_order_acquire);
}

/* Consumer: the next filled slot, or NULL when empty. The slot stays valid
 * (the producer cannot reuse it) until keel_ring_release publishes. */
static inline struct keel_ring_slot *keel_ring_peek(struct keel_ring *r)
{
	uint32_t next = r->cons.next;
	struct keel_ring_slot *s = &r->cons.slots[next & r->cons.mask];
	if (atomic_load_explicit(&s->seq, memory_order_acquire) != next + 1)
		return NULL;
	return s;
}

/* Consumer: done with the slot from keel_ring_peek (not yet visible). */
static inline void keel_ring_advance(struct keel_ring *r)
{
	r->cons.next++;
}

/* Consumer: publishes every advanced slot as free, once per batch. */
static inline void keel_ring_release(struct keel_ring *r)
{
	atomic_store_explicit(&r->cons.head, r->cons.next, memory_order_release);
}

/* Consumer: whether a message is waiting (for the sleep decision). */
static inline bool keel_ring_nonempty(struct keel_ring *r)
{
	return keel_ring_peek(r) != NULL;
}

#endif /* KEEL_RUNTIME_RING_H */
