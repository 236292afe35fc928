/* Cross-shard messages on a running runtime: a call round trip between
 * every ordered pair of shards, post order through a tiny ring (overflow),
 * and pool buffers freed on another shard going home. Also in suite tsan. */
#include <criterion/criterion.h>
#include <stdatomic.h>

#include "rt_test.h"

#define NSH 4
#define ROUNDS 300

struct pairs {
	struct keel_runtime *rt;
	_Atomic unsigned done_pairs;
	_Atomic unsigned bad;
	unsigned left[NSH][NSH]; /* [from][to], touched only by shard `from` */
	struct {
		unsigned from, to;
	} args[NSH][NSH];
};

static void *on_target(struct keel_shard *on, void *arg)
{
	unsigned *ft = arg; /* {from, to} */
	if (keel_shard_self() != on || keel_shard_id(on) != ft[1])
		return (void *)(uintptr_t)0xdead;
	return (void *)(uintptr_t)(ft[1] * 1000 + ft[0]);
}

static struct pairs *G;

static void on_reply(struct keel_shard *from, void *result, void *arg)
{
	unsigned *ft = arg;
	struct pairs *p = G;
	if (keel_shard_self() != from || keel_shard_id(from) != ft[0] ||
	    (uintptr_t)result != ft[1] * 1000 + ft[0])
		atomic_fetch_add(&p->bad, 1);
	if (--p->left[ft[0]][ft[1]] > 0) {
		if (keel_shard_call(from, ft[1], on_target, on_reply, arg))
			atomic_fetch_add(&p->bad, 1);
		return;
	}
	if (atomic_fetch_add(&p->done_pairs, 1) + 1 == NSH * NSH)
		keel_runtime_stop(p->rt);
}

static void pairs_init(struct keel_shard *s, void *arg)
{
	struct pairs *p = arg;
	unsigned me = keel_shard_id(s);
	for (unsigned to = 0; to < NSH; to++) {
		p->left[me][to] = ROUNDS;
		p->args[me][to].from = me;
		p->args[me][to].to = to;
		if (keel_shard_call(s, to, on_target, on_reply, &p->args[me][to]))
			atomic_fetch_add(&p->bad, 1);
	}
}

static void run_pairs(enum keel_idle_policy idle)
{
	static struct pairs p;
	memset(&p, 0, sizeof(p));
	G = &p;
	p.rt = rt_make(NSH, idle, 0);
	cr_assert_eq(keel_runtime_shard_count(p.rt), NSH);
	cr_assert_eq(keel_runtime_run(p.rt, pairs_init, NULL, &p), 0, "%s", keel_runtime_errmsg(p.rt));
	cr_expect_eq(atomic_load(&p.done_pairs), NSH * NSH);
	cr_expect_eq(atomic_load(&p.bad), 0);
	keel_runtime_destroy(p.rt);
}

Test(xshard, call_round_trip_every_pair_sleeping, .timeout = 60) { run_pairs(KEEL_IDLE_SLEEP); }
Test(xshard, call_round_trip_every_pair_busy_poll, .timeout = 60) { run_pairs(KEEL_IDLE_BUSY_POLL); }

/* Post order through a 4-slot ring: most messages go through overflow. */
#define NPOST 20000
struct order {
	struct keel_runtime *rt;
	unsigned next;
	bool ok;
	size_t max_pending;
};
static struct order O;

static void take(struct keel_shard *on, void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	if (keel_shard_id(on) != 1 || i != O.next)
		O.ok = false;
	O.next++;
	if (O.next == NPOST)
		keel_runtime_stop(O.rt);
}

static void order_init(struct keel_shard *s, void *arg)
{
	if (keel_shard_id(s) != 0)
		return;
	for (uintptr_t i = 0; i < NPOST; i++) {
		int rc = keel_shard_post(s, 1, take, (void *)i);
		if (rc)
			O.ok = false;
		if (i % 1000 == 0)
			keel_shard_flush(s);
	}
	O.max_pending = keel_shard_pending(s, 1);
}

Test(xshard, post_order_kept_through_a_full_ring, .timeout = 60)
{
	memset(&O, 0, sizeof(O));
	O.ok = true;
	O.rt = rt_make(2, KEEL_IDLE_SLEEP, 4);
	cr_assert_eq(keel_runtime_run(O.rt, order_init, NULL, NULL), 0);
	cr_expect(O.ok, "out of order or refused");
	cr_expect_eq(O.next, NPOST);
	cr_expect_gt(O.max_pending, 4, "the overflow queue was never used");
	keel_runtime_destroy(O.rt);
}

/* Messages posted before the stop run before any shard_fini, overflow
 * included (a 4-slot ring), and so do the replies of calls among them:
 * a request's answer between shards is never left in a ring. */
#define NLATE 5000
struct late {
	struct keel_runtime *rt;
	atomic_uint ran, replied, at_fini;
};
static struct late L;

static void late_take(struct keel_shard *on, void *arg)
{
	(void)on;
	(void)arg;
	atomic_fetch_add(&L.ran, 1);
}

static void *late_call(struct keel_shard *on, void *arg)
{
	(void)on;
	return arg;
}

static void late_reply(struct keel_shard *from, void *result, void *arg)
{
	(void)from;
	(void)result;
	(void)arg;
	atomic_fetch_add(&L.replied, 1);
}

static void late_init(struct keel_shard *s, void *arg)
{
	(void)arg;
	if (keel_shard_id(s) != 0)
		return;
	for (unsigned i = 0; i < NLATE; i++) {
		cr_expect_eq(keel_shard_post(s, 1, late_take, NULL), 0);
		cr_expect_eq(keel_shard_call(s, 1, late_call, late_reply, NULL), 0);
	}
	/* nothing is published yet: the loop never runs a phase */
	keel_runtime_stop(L.rt);
}

static void late_fini(struct keel_shard *s, void *arg)
{
	(void)s;
	(void)arg;
	atomic_fetch_add(&L.at_fini, atomic_load(&L.ran) == NLATE &&
					     atomic_load(&L.replied) == NLATE);
}

Test(xshard, messages_posted_before_the_stop_run_before_fini, .timeout = 60)
{
	memset(&L, 0, sizeof(L));
	L.rt = rt_make(2, KEEL_IDLE_SLEEP, 4);
	cr_assert_eq(keel_runtime_run(L.rt, late_init, late_fini, NULL), 0);
	cr_expect_eq(atomic_load(&L.ran), NLATE);
	cr_expect_eq(atomic_load(&L.replied), NLATE);
	cr_expect_eq(atomic_load(&L.at_fini), 2, "a shard_fini ran before every message had");
	keel_runtime_destroy(L.rt);
}

static void never(struct keel_shard *on, void *arg) { abort(); }

Test(xshard, bad_target_is_einval_and_stopped_is_estopped, .timeout = 30)
{
	struct keel_runtime *rt = rt_make(1, KEEL_IDLE_SLEEP, 0);
	cr_assert_eq(keel_runtime_start(rt, NULL, NULL, NULL), 0);
	keel_runtime_stop(rt);
	cr_assert_eq(keel_runtime_wait(rt), 0);
	/* Checked on the shard struct after its thread has gone. */
	struct keel_shard *s0 = keel_runtime_shard(rt, 0);
	cr_expect_eq(keel_shard_post(s0, 5, never, NULL), -EINVAL);
	cr_expect_eq(keel_shard_post(s0, 0, never, NULL), KEEL_ESTOPPED);
	keel_runtime_destroy(rt);
}

/* Shard 0 allocates, shard 1 frees: blocks must come back to shard 0. */
#define NBUF 64
struct homing {
	struct keel_runtime *rt;
	void *bufs[NBUF];
	bool ok, all_back;
};
static struct homing H;

static void back_home_check(struct keel_shard *on, void *arg)
{
	/* FREE messages from shard 1 precede this one in the same ring, so
	 * every block is on shard 0's free list by now. */
	unsigned back = 0;
	void *again[NBUF];
	for (int i = 0; i < NBUF; i++)
		again[i] = keel_shard_alloc(on, 100);
	for (int i = 0; i < NBUF; i++)
		for (int j = 0; j < NBUF; j++)
			back += again[i] == H.bufs[j];
	H.all_back = back == NBUF;
	for (int i = 0; i < NBUF; i++)
		keel_shard_free(again[i]);
	keel_runtime_stop(H.rt);
}

static void free_there(struct keel_shard *on, void *arg)
{
	if (keel_shard_id(on) != 1)
		H.ok = false;
	memset(arg, 0xab, 100);
	keel_shard_free(arg); /* remote: goes back to shard 0 */
	if (arg == H.bufs[NBUF - 1])
		keel_shard_post(on, 0, back_home_check, NULL);
}

static void homing_init(struct keel_shard *s, void *arg)
{
	if (keel_shard_id(s) != 0)
		return;
	for (int i = 0; i < NBUF; i++) {
		H.bufs[i] = keel_shard_alloc(s, 100);
		if (!H.bufs[i] || ((uintptr_t)H.bufs[i] & 15) || keel_shard_alloc_size(H.bufs[i]) < 100)
			H.ok = false;
	}
	for (int i = 0; i < NBUF; i++)
		keel_shard_post(s, 1, free_there, H.bufs[i]);
}

Test(xshard, buffer_freed_on_another_shard_returns_to_its_owner, .timeout = 30)
{
	memset(&H, 0, sizeof(H));
	H.ok = true;
	H.rt = rt_make(2, KEEL_IDLE_SLEEP, 0);
	cr_assert_eq(keel_runtime_run(H.rt, homing_init, NULL, NULL), 0);
	cr_expect(H.ok);
	cr_expect(H.all_back, "blocks freed on shard 1 were not reused by shard 0");
	keel_runtime_destroy(H.rt);
}
