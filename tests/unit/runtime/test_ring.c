/* The SPSC ring on its own: order, full/empty, wrap-around, and a
 * two-thread stress that checks every message (also run under TSan). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>

#include "runtime/ring.h"

static struct keel_ring *ring_new(uint32_t cap)
{
	void *mem = aligned_alloc(64, (keel_ring_bytes(cap) + 63) & ~(size_t)63);
	cr_assert_not_null(mem);
	memset(mem, 0, keel_ring_bytes(cap));
	return keel_ring_init(mem, cap);
}

static bool push(struct keel_ring *r, uintptr_t v)
{
	struct keel_ring_slot *s = keel_ring_reserve(r);
	if (!s)
		return false;
	s->kind = KEEL_MSG_RAW;
	s->arg = (void *)v;
	s->extra = (void *)~v;
	keel_ring_commit(r, s);
	return true;
}

static bool pop(struct keel_ring *r, uintptr_t *v)
{
	struct keel_ring_slot *s = keel_ring_peek(r);
	if (!s)
		return false;
	*v = (uintptr_t)s->arg;
	cr_assert_eq((uintptr_t)s->extra, ~*v, "slot fields torn");
	keel_ring_advance(r);
	keel_ring_release(r);
	return true;
}

Test(ring, empty_then_fifo_order)
{
	struct keel_ring *r = ring_new(8);
	uintptr_t v;
	cr_expect_not(pop(r, &v));
	cr_expect_not(keel_ring_nonempty(r));
	for (uintptr_t i = 1; i <= 5; i++)
		cr_assert(push(r, i));
	cr_expect(keel_ring_nonempty(r));
	cr_expect_eq(keel_ring_used(r), 5);
	for (uintptr_t i = 1; i <= 5; i++) {
		cr_assert(pop(r, &v));
		cr_expect_eq(v, i);
	}
	cr_expect_not(pop(r, &v));
	cr_expect_eq(keel_ring_used(r), 0);
	free(r);
}

Test(ring, full_refuses_until_consumer_releases)
{
	struct keel_ring *r = ring_new(4);
	for (uintptr_t i = 0; i < 4; i++)
		cr_assert(push(r, i));
	cr_expect_not(push(r, 99), "a full ring took a fifth message");
	/* consumed but not released: still full for the producer */
	struct keel_ring_slot *s = keel_ring_peek(r);
	cr_assert_not_null(s);
	keel_ring_advance(r);
	cr_expect_not(push(r, 99));
	keel_ring_release(r);
	cr_expect(push(r, 4));
	uintptr_t v;
	for (uintptr_t i = 1; i <= 4; i++) {
		cr_assert(pop(r, &v));
		cr_expect_eq(v, i);
	}
	cr_expect_not(pop(r, &v));
	free(r);
}

Test(ring, wraps_around_many_laps)
{
	struct keel_ring *r = ring_new(4);
	uintptr_t next_in = 0, next_out = 0, v;
	/* uneven batches so positions land everywhere in the slot array */
	for (int round = 0; round < 1000; round++) {
		int k = 1 + round % 4;
		for (int i = 0; i < k; i++)
			if (push(r, next_in))
				next_in++;
		int m = 1 + (round * 7) % 4;
		for (int i = 0; i < m && pop(r, &v); i++)
			cr_assert_eq(v, next_out++, "out of order at %lu", (unsigned long)next_out);
	}
	while (pop(r, &v))
		cr_assert_eq(v, next_out++);
	cr_expect_eq(next_in, next_out);
	cr_expect_gt(next_out, 1000);
	free(r);
}

Test(ring, sequence_numbers_survive_uint32_wrap)
{
	struct keel_ring *r = ring_new(4);
	/* start both ends just below 2^32 */
	r->prod.tail = r->prod.head_cache = UINT32_MAX - 5;
	r->cons.next = UINT32_MAX - 5;
	atomic_store(&r->cons.head, UINT32_MAX - 5);
	uintptr_t v, n = 0;
	for (int i = 0; i < 40; i++) {
		cr_assert(push(r, (uintptr_t)i));
		cr_assert(pop(r, &v));
		cr_assert_eq(v, (uintptr_t)i);
		n++;
	}
	cr_expect_eq(n, 40);
	free(r);
}

#define STRESS_N 2000000u
struct stress {
	struct keel_ring *r;
	uint64_t sum_in, sum_out, count_out;
	bool order_ok;
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static void *producer(void *p)
{
	struct stress *st = p;
	for (uint64_t i = 0; i < STRESS_N;) {
		/* bursts of varying size, then let the consumer catch up */
		unsigned burst = 1 + (unsigned)(mix(i) % 64);
		for (unsigned b = 0; b < burst && i < STRESS_N; b++) {
			struct keel_ring_slot *s;
			while (!(s = keel_ring_reserve(st->r)))
				sched_yield();
			s->kind = KEEL_MSG_RAW;
			s->arg = (void *)(uintptr_t)i;
			s->extra = (void *)(uintptr_t)mix(i);
			keel_ring_commit(st->r, s);
			st->sum_in += mix(i);
			i++;
		}
	}
	return NULL;
}

static void *consumer(void *p)
{
	struct stress *st = p;
	uint64_t expect = 0;
	st->order_ok = true;
	while (expect < STRESS_N) {
		unsigned got = 0;
		struct keel_ring_slot *s;
		while ((s = keel_ring_peek(st->r))) {
			uint64_t i = (uintptr_t)s->arg, h = (uintptr_t)s->extra;
			if (i != expect || h != mix(i))
				st->order_ok = false;
			st->sum_out += h;
			expect++;
			got++;
			keel_ring_advance(st->r);
			if (got == 32)
				break;
		}
		if (got)
			keel_ring_release(st->r);
		else
			sched_yield();
	}
	st->count_out = expect;
	return NULL;
}

Test(ring, two_thread_stress_checksums_every_message, .timeout = 120)
{
	struct stress st = {.r = ring_new(256)};
	pthread_t p, c;
	pthread_create(&c, NULL, consumer, &st);
	pthread_create(&p, NULL, producer, &st);
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	cr_expect(st.order_ok, "a message arrived out of order or torn");
	cr_expect_eq(st.count_out, STRESS_N);
	cr_expect_eq(st.sum_in, st.sum_out, "checksum mismatch");
	cr_expect_not(keel_ring_nonempty(st.r));
	free(st.r);
}
