/* Clocks and timers: a binary min-heap of caller-owned timers ordered by
 * (deadline, arm sequence). A heap rather than a wheel because shards hold
 * few timers (election, heartbeat, lease, retransmit per group) and need
 * exact deadlines for the sleep timeout; arm and cancel are O(log n), the
 * next deadline O(1). Each timer keeps its heap index, so cancel needs no
 * search. Owner-thread only: no locks.
 *
 * Every shard has a real clock; a virtual clock is the same heap read
 * against a time its owner sets, so a simulation drives the node layer and
 * the group host through exactly the calls a shard's reactor makes. */
#include <errno.h>
#include <stdlib.h>

#include "runtime/runtime_internal.h"

void keel_timer_init(struct keel_timer *t, void (*fn)(struct keel_timer *t), void *arg)
{
	t->deadline_ns = 0;
	t->seq = 0;
	t->heap_idx = 0;
	t->clock = NULL;
	t->fn = fn;
	t->arg = arg;
}

bool keel_timer_armed(const struct keel_timer *t) { return t->heap_idx != 0; }

static bool before(const struct keel_timer *a, const struct keel_timer *b)
{
	return a->deadline_ns < b->deadline_ns ||
	       (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
}

static void heap_set(struct keel_clock *c, uint32_t i, struct keel_timer *t)
{
	c->heap[i] = t;
	t->heap_idx = i;
}

static void sift_up(struct keel_clock *c, uint32_t i)
{
	struct keel_timer *t = c->heap[i];
	while (i > 1 && before(t, c->heap[i / 2])) {
		heap_set(c, i, c->heap[i / 2]);
		i /= 2;
	}
	heap_set(c, i, t);
}

static void sift_down(struct keel_clock *c, uint32_t i)
{
	struct keel_timer *t = c->heap[i];
	for (;;) {
		uint32_t k = 2 * i;
		if (k > c->len)
			break;
		if (k + 1 <= c->len && before(c->heap[k + 1], c->heap[k]))
			k++;
		if (!before(c->heap[k], t))
			break;
		heap_set(c, i, c->heap[k]);
		i = k;
	}
	heap_set(c, i, t);
}

static void heap_remove(struct keel_clock *c, struct keel_timer *t)
{
	uint32_t i = t->heap_idx;
	struct keel_timer *last = c->heap[c->len--];
	t->heap_idx = 0;
	if (last == t)
		return;
	heap_set(c, i, last);
	if (i > 1 && before(last, c->heap[i / 2]))
		sift_up(c, i);
	else
		sift_down(c, i);
}

uint64_t keel_clock_now(const struct keel_clock *c)
{
	return c->virt ? c->vnow : keel_now_ns();
}

void keel_clock_arm(struct keel_clock *c, struct keel_timer *t, uint64_t delay_ns)
{
	if (t->heap_idx)
		heap_remove(t->clock, t);
	if (c->len + 1 >= c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 64;
		struct keel_timer **h = realloc(c->heap, cap * sizeof(*h));
		if (!h) {
			/* Arming cannot fail in the API (callers have no sane
			 * recovery from a lost timeout); running out of memory
			 * for a few pointers means the process is done. */
			keel_error("timer: out of memory growing the heap");
			abort();
		}
		c->heap = h;
		c->cap = cap;
	}
	uint64_t now = keel_clock_now(c);
	t->deadline_ns = now + delay_ns < now ? UINT64_MAX : now + delay_ns;
	t->seq = ++c->seq;
	t->clock = c;
	c->len++;
	heap_set(c, c->len, t);
	sift_up(c, c->len);
}

void keel_clock_cancel(struct keel_clock *c, struct keel_timer *t)
{
	(void)c;
	if (t->heap_idx)
		heap_remove(t->clock, t);
}

unsigned keel_clock_fire(struct keel_clock *c, uint64_t now, unsigned max)
{
	unsigned fired = 0;
	while (c->len && fired < max) {
		struct keel_timer *t = c->heap[1];
		if (t->deadline_ns > now)
			break;
		heap_remove(c, t);
		t->fn(t);
		fired++;
	}
	return fired;
}

uint64_t keel_clock_next_deadline(const struct keel_clock *c)
{
	return c->len ? c->heap[1]->deadline_ns : UINT64_MAX;
}

int keel_clock_virtual_new(uint64_t start_ns, struct keel_clock **out)
{
	struct keel_clock *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->virt = true;
	c->vnow = start_ns;
	*out = c;
	return 0;
}

void keel_clock_virtual_free(struct keel_clock *c)
{
	if (!c)
		return;
	for (uint32_t i = 1; i <= c->len; i++)
		c->heap[i]->heap_idx = 0;
	free(c->heap);
	free(c);
}

unsigned keel_clock_advance_to(struct keel_clock *c, uint64_t t)
{
	if (t > c->vnow)
		c->vnow = t;
	/* Timers a callback arms at delay 0 are due now too: fire until
	 * nothing due is left. */
	unsigned n = 0, k;
	while ((k = keel_clock_fire(c, c->vnow, 1024)) > 0)
		n += k;
	return n;
}

void keel_clock_set(struct keel_clock *c, uint64_t t)
{
	if (t > c->vnow)
		c->vnow = t;
}

/* ---- the shard's clock -------------------------------------------------- */

struct keel_clock *keel_shard_clock(struct keel_shard *s)
{
	return &s->clock;
}

void keel_timer_arm(struct keel_shard *s, struct keel_timer *t, uint64_t delay_ns)
{
	keel_clock_arm(&s->clock, t, delay_ns);
}

void keel_timer_cancel(struct keel_shard *s, struct keel_timer *t)
{
	keel_clock_cancel(&s->clock, t);
}

void keel_timers_fire(struct keel_shard *s)
{
	/* No clock read without timers: in a VM clock_gettime costs ~100 ns
	 * (kvm-clock), several times the rest of an idle loop iteration. */
	if (!s->clock.len)
		return;
	uint64_t now = keel_now_ns();
	s->now = now;
	/* Bounded, so a callback that re-arms itself with delay 0 cannot keep
	 * the loop from reaching the rings and I/O. */
	keel_clock_fire(&s->clock, now, 1024);
}

uint64_t keel_timers_next_delay(struct keel_shard *s)
{
	if (!s->clock.len)
		return UINT64_MAX;
	uint64_t now = keel_now_ns();
	uint64_t d = s->clock.heap[1]->deadline_ns;
	return d > now ? d - now : 0;
}

void keel_timers_free(struct keel_shard *s)
{
	for (uint32_t i = 1; i <= s->clock.len; i++)
		s->clock.heap[i]->heap_idx = 0;
	free(s->clock.heap);
	s->clock.heap = NULL;
	s->clock.len = s->clock.cap = 0;
}

uint64_t keel_shard_now_ns(const struct keel_shard *s)
{
	(void)s;
	return keel_now_ns();
}
