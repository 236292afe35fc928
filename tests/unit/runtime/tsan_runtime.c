/* The ring and cross-shard tests as a plain C program, for the
 * ThreadSanitizer build (Criterion cannot start under TSan: its
 * "inheritable arena" mmap fails). Exits 0 when every check passes, 1
 * otherwise, 77 without io_uring. The same behaviours are tested in more
 * detail by the Criterion tests in this folder. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_test.h"
#include "runtime/ring.h"

static int failures;
#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, "\n");                                \
			failures++;                                           \
		}                                                             \
	} while (0)

/* ---- two-thread ring stress with a checksum of every message ---- */
#define STRESS_N 300000u
static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}
struct stress {
	struct keel_ring *r;
	uint64_t sum_in, sum_out, count;
	bool ok;
};
static void *producer(void *p)
{
	struct stress *st = p;
	for (uint64_t i = 0; i < STRESS_N; i++) {
		struct keel_ring_slot *s;
		while (!(s = keel_ring_reserve(st->r)))
			sched_yield();
		s->kind = KEEL_MSG_RAW;
		s->arg = (void *)(uintptr_t)i;
		s->extra = (void *)(uintptr_t)mix(i);
		keel_ring_commit(st->r, s);
		st->sum_in += mix(i);
	}
	return NULL;
}
static void *consumer(void *p)
{
	struct stress *st = p;
	st->ok = true;
	while (st->count < STRESS_N) {
		unsigned got = 0;
		struct keel_ring_slot *s;
		while (got < 16 && (s = keel_ring_peek(st->r))) {
			uint64_t i = (uintptr_t)s->arg, h = (uintptr_t)s->extra;
			if (i != st->count || h != mix(i))
				st->ok = false;
			st->sum_out += h;
			st->count++;
			got++;
			keel_ring_advance(st->r);
		}
		if (got)
			keel_ring_release(st->r);
		else
			sched_yield();
	}
	return NULL;
}
static void ring_stress(void)
{
	uint32_t cap = 64;
	void *mem = aligned_alloc(64, (keel_ring_bytes(cap) + 63) & ~(size_t)63);
	memset(mem, 0, keel_ring_bytes(cap));
	struct stress st = {.r = keel_ring_init(mem, cap)};
	pthread_t p, c;
	pthread_create(&c, NULL, consumer, &st);
	pthread_create(&p, NULL, producer, &st);
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	CHECK(st.ok, "out of order or torn");
	CHECK(st.count == STRESS_N, "%llu messages", (unsigned long long)st.count);
	CHECK(st.sum_in == st.sum_out, "checksum");
	free(mem);
}

/* ---- call round trip between every ordered pair of shards ---- */
#define NSH 4
#define ROUNDS 200
static struct {
	struct keel_runtime *rt;
	_Atomic unsigned done, bad;
	unsigned left[NSH][NSH];
	unsigned ft[NSH][NSH][2];
	uint64_t payload[NSH][NSH]; /* written by the caller, read by the target */
} P;

static void *target(struct keel_shard *on, void *arg)
{
	unsigned *ft = arg;
	if (keel_shard_id(on) != ft[1] || keel_shard_self() != on)
		atomic_fetch_add(&P.bad, 1);
	/* read what the caller wrote before posting: TSan checks the
	 * ring orders it */
	return (void *)(uintptr_t)(P.payload[ft[0]][ft[1]] * 3);
}
static void replied(struct keel_shard *from, void *res, void *arg)
{
	unsigned *ft = arg;
	if (keel_shard_id(from) != ft[0] || (uintptr_t)res != P.payload[ft[0]][ft[1]] * 3)
		atomic_fetch_add(&P.bad, 1);
	if (--P.left[ft[0]][ft[1]]) {
		P.payload[ft[0]][ft[1]]++;
		keel_shard_call(from, ft[1], target, replied, arg);
	} else if (atomic_fetch_add(&P.done, 1) + 1 == NSH * NSH) {
		keel_runtime_stop(P.rt);
	}
}
static void pairs_init(struct keel_shard *s, void *arg)
{
	unsigned me = keel_shard_id(s);
	for (unsigned to = 0; to < NSH; to++) {
		P.left[me][to] = ROUNDS;
		P.ft[me][to][0] = me;
		P.ft[me][to][1] = to;
		P.payload[me][to] = me * 100 + to;
		keel_shard_call(s, to, target, replied, P.ft[me][to]);
	}
}
static void pairs(enum keel_idle_policy idle)
{
	memset(&P, 0, sizeof(P));
	P.rt = rt_make(NSH, idle, 8); /* small rings: overflow in play */
	CHECK(keel_runtime_run(P.rt, pairs_init, NULL, NULL) == 0, "run");
	CHECK(atomic_load(&P.done) == NSH * NSH, "%u pairs done", atomic_load(&P.done));
	CHECK(atomic_load(&P.bad) == 0, "%u bad replies", atomic_load(&P.bad));
	keel_runtime_destroy(P.rt);
}

/* ---- pool buffers freed on another shard go home ---- */
static struct {
	struct keel_runtime *rt;
	_Atomic unsigned freed;
} M;
static void eat(struct keel_shard *on, void *arg)
{
	memset(arg, 1, 64);
	keel_shard_free(arg);
	if (atomic_fetch_add(&M.freed, 1) + 1 == 2 * 5000)
		keel_runtime_stop(M.rt);
}
static int sender(void *arg)
{
	struct keel_shard *s = arg;
	static _Thread_local unsigned sent;
	if (sent >= 5000 || keel_shard_pending(s, 1 - keel_shard_id(s)) > 100)
		return 0;
	for (int k = 0; k < 50; k++, sent++) {
		char *b = keel_shard_alloc(s, 64);
		memset(b, 2, 64);
		keel_shard_post(s, 1 - keel_shard_id(s), eat, b);
	}
	return 1;
}
static void mem_init(struct keel_shard *s, void *arg) { keel_shard_add_poller(s, sender, s); }
static void remote_free(void)
{
	memset(&M, 0, sizeof(M));
	M.rt = rt_make(2, KEEL_IDLE_SLEEP, 0);
	CHECK(keel_runtime_run(M.rt, mem_init, NULL, NULL) == 0, "run");
	CHECK(atomic_load(&M.freed) == 10000, "%u freed", atomic_load(&M.freed));
	keel_runtime_destroy(M.rt);
}

/* ---- keel_shard_post_external from this (non-shard) thread ---- */
static _Atomic unsigned ext_ran;
static uint64_t ext_data[2];
static void ext_fn(struct keel_shard *on, void *arg)
{
	uint64_t *d = arg;
	(*d)++; /* written here (on the shard), read by main after wait */
	atomic_fetch_add(&ext_ran, 1);
}
static void external(void)
{
	struct keel_runtime *rt = rt_make(2, KEEL_IDLE_SLEEP, 0);
	CHECK(keel_runtime_start(rt, NULL, NULL, NULL) == 0, "start");
	for (int i = 0; i < 1000; i++)
		CHECK(keel_shard_post_external(keel_runtime_shard(rt, (unsigned)(i % 2)), ext_fn,
					       &ext_data[i % 2]) == 0, "post_external");
	while (atomic_load(&ext_ran) < 1000)
		sched_yield();
	keel_runtime_stop(rt);
	CHECK(keel_runtime_wait(rt) == 0, "wait");
	CHECK(ext_data[0] == 500 && ext_data[1] == 500, "%llu %llu", (unsigned long long)ext_data[0],
	      (unsigned long long)ext_data[1]);
	keel_runtime_destroy(rt);
}

int main(void)
{
	keel_log_set_level(KEEL_LOG_WARN);
	ring_stress();
	pairs(KEEL_IDLE_SLEEP);
	pairs(KEEL_IDLE_BUSY_POLL);
	remote_free();
	external();
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("tsan_runtime: all checks passed\n");
	return 0;
}
