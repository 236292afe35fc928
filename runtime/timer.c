/* Per-shard timers: a binary min-heap of caller-owned timers ordered by
 * (deadline, arm sequence). A heap rather than a wheel because shards hold
 * few timers (election, heartbeat, lease, retransmit per group) and need
 * exact deadlines for the sleep timeout; arm and cancel are O(log n), the
 * next deadline O(1). Each timer keeps its heap index, so cancel needs no
 * search. Owner-thread only: no locks. */
#include <errno.h>
#include <stdlib.h>

#include "runtime/runtime_internal.h"

void keel_timer_init(struct keel_timer *t, void (*fn)(struct keel_timer *t), void *arg)
{
	t->deadline_ns = 0;
	t->seq = 0;
	t->heap_idx = 0;
	t->shard = NULL;
	t->fn = fn;
	t->arg = arg;
}

bool keel_timer_armed(const struct keel_timer *t) { return t->heap_idx != 0; }

static bool before(const struct keel_timer *a, const struct keel_timer *b)
{
	return a->deadline_ns < b->deadline_ns ||
	       (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
}

static void heap_set(struct keel_shard *s, uint32_t i, struct keel_timer *t)
{
	s->heap[i] = t;
	t->heap_idx = i;
}

static void sift_up(struct keel_shard *s, uint32_t i)
{
	struct keel_timer *t = s->heap[i];
	while (i > 1 && before(t, s->heap[i / 2])) {
		heap_set(s, i, s->heap[i / 2]);
		i /= 2;
	}
	heap_set(s, i, t);
}

static void sift_down(struct keel_shard *s, uint32_t i)
{
	struct keel_timer *t = s->heap[i];
	for (;;) {
		uint32_t c = 2 * i;
		if (c > s->heap_len)
			break;
		if (c + 1 <= s->heap_len && before(s->heap[c + 1], s->heap[c]))
			c++;
		if (!before(s->heap[c], t))
			break;
		heap_set(s, i, s->heap[c]);
		i = c;
	}
	heap_set(s, i, t);
}

static void heap_remove(struct keel_shard *s, struct keel_timer *t)
{
	uint32_t i = t->heap_idx;
	struct keel_timer *last = s->heap[s->heap_len--];
	t->heap_idx = 0;
	if (last == t)
		return;
	heap_set(s, i, last);
	if (i > 1 && before(last, s->heap[i / 2]))
		sift_up(s, i);
	else
		sift_down(s, i);
}

void keel_timer_arm(struct keel_shard *s, struct keel_timer *t, uint64_t delay_ns)
{
	if (t->heap_idx)
		heap_remove(t->shard, t);
	if (s->heap_len + 1 >= s->heap_cap) {
		uint32_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
		struct keel_timer **h = realloc(s->heap, cap * sizeof(*h));
		if (!h) {
			/* Arming cannot fail in the API (callers have no sane
			 * recovery from a lost timeout); running out of memory
			 * for a few pointers means the process is done. */
			keel_error("timer: out of memory growing the heap");
			abort();
		}
		s->heap = h;
		s->heap_cap = cap;
	}
	uint64_t now = keel_now_ns();
	t->deadline_ns = now + delay_ns < now ? UINT64_MAX : now + delay_ns;
	t->seq = ++s->timer_seq;
	t->shard = s;
	s->heap_len++;
	heap_set(s, s->heap_len, t);
	sift_up(s, s->heap_len);
}

void keel_timer_cancel(struct keel_shard *s, struct keel_timer *t)
{
	(void)s;
	if (t->heap_idx)
		heap_remove(t->shard, t);
}

void keel_timers_fire(struct keel_shard *s)
{
	/* No clock read without timers: in a VM clock_gettime costs ~100 ns
	 * (kvm-clock), several times the rest of an idle loop iteration. */
	if (!s->heap_len)
		return;
	uint64_t now = keel_now_ns();
	s->now = now;
	/* Bounded, so a callback that re-arms itself with delay 0 cannot keep
	 * the loop from reaching the rings and I/O. */
	for (unsigned fired = 0; s->heap_len && fired < 1024; fired++) {
		struct keel_timer *t = s->heap[1];
		if (t->deadline_ns > now)
			break;
		heap_remove(s, t);
		t->fn(t);
	}
}

uint64_t keel_timers_next_delay(struct keel_shard *s)
{
	if (!s->heap_len)
		return UINT64_MAX;
	uint64_t now = keel_now_ns();
	uint64_t d = s->heap[1]->deadline_ns;
	return d > now ? d - now : 0;
}

void keel_timers_free(struct keel_shard *s)
{
	for (uint32_t i = 1; i <= s->heap_len; i++)
		s->heap[i]->heap_idx = 0;
	free(s->heap);
	s->heap = NULL;
	s->heap_len = s->heap_cap = 0;
}

uint64_t keel_shard_now_ns(const struct keel_shard *s)
{
	(void)s;
	return keel_now_ns();
}
