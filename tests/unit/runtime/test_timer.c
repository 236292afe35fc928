#include <stdint.h>
/* Timers on a real shard: order, cancel, cancel and re-arm from a callback. */
#include <criterion/criterion.h>
#include <stdatomic.h>

#include "rt_test.h"

#define MS 1000000ull

struct tctx {
	struct keel_runtime *rt;
	struct keel_timer t[8];
	int order[16];
	int nfired;
	uint64_t armed_at[8];
	uint64_t delay[8];
	bool early;
	int rearms;
	struct keel_timer many[1000];
	uint64_t last_deadline;
	int many_fired;
	bool many_order_ok;
};

static void record(struct keel_timer *t)
{
	struct tctx *c = t->arg;
	int i = (int)(t - c->t);
	if (keel_now_ns() < c->armed_at[i] + c->delay[i])
		c->early = true;
	c->order[c->nfired++] = i;
	if (keel_timer_armed(t))
		c->early = true; /* must be disarmed when its callback runs */
}

static void stop_timer(struct keel_timer *t)
{
	record(t);
	struct tctx *c = t->arg;
	keel_runtime_stop(c->rt);
}

static void arm(struct keel_shard *s, struct tctx *c, int i, uint64_t delay)
{
	c->armed_at[i] = keel_now_ns();
	c->delay[i] = delay;
	keel_timer_arm(s, &c->t[i], delay);
}

static void order_init(struct keel_shard *s, void *arg)
{
	struct tctx *c = arg;
	for (int i = 0; i < 4; i++)
		keel_timer_init(&c->t[i], i == 2 ? stop_timer : record, c);
	arm(s, c, 2, 30 * MS);
	arm(s, c, 0, 10 * MS);
	arm(s, c, 3, 20 * MS);
	arm(s, c, 1, 10 * MS); /* same deadline class as 0, armed later */
	/* re-arming moves a timer: 3 goes from 20 ms to 5 ms */
	arm(s, c, 3, 5 * MS);
	cr_expect(keel_timer_armed(&c->t[0]));
}

Test(timer, fire_in_deadline_order, .timeout = 20)
{
	struct tctx c = {0};
	c.rt = rt_make(1, KEEL_IDLE_SLEEP, 0);
	cr_assert_eq(keel_runtime_run(c.rt, order_init, NULL, &c), 0);
	cr_expect_eq(c.nfired, 4);
	int want[4] = {3, 0, 1, 2};
	for (int i = 0; i < 4; i++)
		cr_expect_eq(c.order[i], want[i], "position %d: timer %d", i, c.order[i]);
	cr_expect_not(c.early, "a timer fired before its deadline or still armed");
	keel_runtime_destroy(c.rt);
}

static void cancel_init(struct keel_shard *s, void *arg)
{
	struct tctx *c = arg;
	keel_timer_init(&c->t[0], record, c);
	keel_timer_init(&c->t[1], stop_timer, c);
	keel_timer_init(&c->t[2], record, c);
	arm(s, c, 0, 5 * MS);
	arm(s, c, 1, 20 * MS);
	arm(s, c, 2, 1 * MS);
	keel_timer_cancel(s, &c->t[0]);
	keel_timer_cancel(s, &c->t[0]); /* twice is a no-op */
	cr_expect_not(keel_timer_armed(&c->t[0]));
	keel_timer_cancel(s, &c->t[2]);
}

Test(timer, cancelled_timers_do_not_fire, .timeout = 20)
{
	struct tctx c = {0};
	c.rt = rt_make(1, KEEL_IDLE_SLEEP, 0);
	cr_assert_eq(keel_runtime_run(c.rt, cancel_init, NULL, &c), 0);
	cr_expect_eq(c.nfired, 1);
	cr_expect_eq(c.order[0], 1);
	keel_runtime_destroy(c.rt);
}

/* Timer 0 cancels 1 (same deadline, next in line) and 2 (later), and
 * re-arms itself twice. */
static void canceller(struct keel_timer *t)
{
	struct tctx *c = t->arg;
	struct keel_shard *s = keel_shard_self();
	record(t);
	keel_timer_cancel(s, &c->t[1]);
	keel_timer_cancel(s, &c->t[2]);
	if (c->rearms++ < 2)
		arm(s, c, 0, 2 * MS);
}

static void cb_cancel_init(struct keel_shard *s, void *arg)
{
	struct tctx *c = arg;
	keel_timer_init(&c->t[0], canceller, c);
	keel_timer_init(&c->t[1], record, c);
	keel_timer_init(&c->t[2], record, c);
	keel_timer_init(&c->t[3], stop_timer, c);
	arm(s, c, 0, 5 * MS);
	arm(s, c, 1, 5 * MS);
	arm(s, c, 2, 8 * MS);
	arm(s, c, 3, 40 * MS);
}

Test(timer, cancel_and_rearm_from_a_callback, .timeout = 20)
{
	struct tctx c = {0};
	c.rt = rt_make(1, KEEL_IDLE_SLEEP, 0);
	cr_assert_eq(keel_runtime_run(c.rt, cb_cancel_init, NULL, &c), 0);
	cr_expect_eq(c.nfired, 4, "fired %d", c.nfired);
	int want[4] = {0, 0, 0, 3};
	for (int i = 0; i < c.nfired && i < 4; i++)
		cr_expect_eq(c.order[i], want[i], "position %d: timer %d", i, c.order[i]);
	keel_runtime_destroy(c.rt);
}

static void many_cb(struct keel_timer *t)
{
	struct tctx *c = t->arg;
	if (t->deadline_ns < c->last_deadline)
		c->many_order_ok = false;
	c->last_deadline = t->deadline_ns;
	c->many_fired++;
}

static void many_init(struct keel_shard *s, void *arg)
{
	struct tctx *c = arg;
	c->many_order_ok = true;
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 1000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		keel_timer_init(&c->many[i], many_cb, c);
		keel_timer_arm(s, &c->many[i], x % (20 * MS));
	}
	for (int i = 0; i < 1000; i += 3)
		keel_timer_cancel(s, &c->many[i]);
	keel_timer_init(&c->t[0], stop_timer, c);
	arm(s, c, 0, 40 * MS);
}

Test(timer, heap_of_many_timers, .timeout = 20)
{
	struct tctx c = {0};
	c.rt = rt_make(1, KEEL_IDLE_BUSY_POLL, 0);
	cr_assert_eq(keel_runtime_run(c.rt, many_init, NULL, &c), 0);
	cr_expect_eq(c.many_fired, 1000 - 334);
	cr_expect(c.many_order_ok);
	keel_runtime_destroy(c.rt);
}

/* ---- virtual clocks: the simulation's time source ---- */

static int vfired[8], vn;
static void vrecord(struct keel_timer *t)
{
	vfired[vn++] = (int)(intptr_t)t->arg;
}

static struct keel_clock *vclock_again;
static struct keel_timer vchain;
static void vrearm_now(struct keel_timer *t)
{
	vrecord(t);
	if (vn < 3)
		keel_clock_arm(vclock_again, &vchain, 0);
}

Test(timer, virtual_clock_fires_only_when_advanced_in_deadline_order)
{
	struct keel_clock *c;
	cr_assert_eq(keel_clock_virtual_new(1000, &c), 0);
	cr_expect_eq(keel_clock_now(c), 1000);
	struct keel_timer a, b, d;
	keel_timer_init(&a, vrecord, (void *)(intptr_t)1);
	keel_timer_init(&b, vrecord, (void *)(intptr_t)2);
	keel_timer_init(&d, vrecord, (void *)(intptr_t)3);
	vn = 0;
	keel_clock_arm(c, &a, 50);
	keel_clock_arm(c, &b, 10);
	keel_clock_arm(c, &d, 50); /* same deadline as a: after it */
	cr_expect_eq(keel_clock_next_deadline(c), 1010);
	cr_expect_eq(keel_clock_advance_to(c, 1009), 0);
	cr_expect_eq(keel_clock_advance_to(c, 1010), 1);
	cr_expect_eq(keel_clock_advance_to(c, 2000), 2);
	cr_assert_eq(vn, 3);
	cr_expect(vfired[0] == 2 && vfired[1] == 1 && vfired[2] == 3);
	cr_expect_eq(keel_clock_next_deadline(c), UINT64_MAX);
	keel_clock_advance_to(c, 5); /* never backwards */
	cr_expect_eq(keel_clock_now(c), 2000);
	/* a callback that re-arms at delay 0 fires again in the same advance */
	vn = 0;
	vclock_again = c;
	keel_timer_init(&vchain, vrearm_now, (void *)(intptr_t)7);
	keel_clock_arm(c, &vchain, 0);
	cr_expect_eq(keel_clock_advance_to(c, 2000), 3);
	keel_clock_arm(c, &a, 100);
	keel_clock_cancel(c, &a);
	cr_expect(!keel_timer_armed(&a));
	keel_clock_arm(c, &b, 100); /* left armed: free forgets it */
	keel_clock_virtual_free(c);
	cr_expect(!keel_timer_armed(&b));
}
