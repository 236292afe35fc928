/*
 * Tests of the linearizability checker (tests/lib/linearizability.h): it
 * accepts histories that have a linearization and, just as important,
 * rejects those that do not, naming the key and the stuck operation.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "linearizability.h"

enum { G = KEEL_LIN_GET, P = KEEL_LIN_PUT, D = KEEL_LIN_DEL, C = KEEL_LIN_CAS };

static struct keel_lin_history h;

static void setup(void)
{
	keel_lin_history_init(&h);
}

static void teardown(void)
{
	keel_lin_history_free(&h);
}

TestSuite(lin, .init = setup, .fini = teardown);

static void put(int c, uint64_t k, uint64_t v, uint64_t t0, uint64_t t1)
{
	keel_lin_add(&h, c, KEEL_LIN_PUT, k, v, 0, 0, false, t0, t1);
}

static void get(int c, uint64_t k, uint64_t v, uint64_t t0, uint64_t t1)
{
	keel_lin_add(&h, c, KEEL_LIN_GET, k, 0, 0, v, false, t0, t1);
}

static void cas(int c, uint64_t k, uint64_t old, uint64_t nv, bool ok, uint64_t t0, uint64_t t1)
{
	keel_lin_add(&h, c, KEEL_LIN_CAS, k, nv, old, 0, ok, t0, t1);
}

static enum keel_lin_verdict check(struct keel_lin_report *r)
{
	enum keel_lin_verdict v = keel_lin_check(&h, 0, r);
	if (v != KEEL_LIN_LINEARIZABLE)
		cr_log_info("%s", r->text);
	return v;
}

static void expect_ok(void)
{
	struct keel_lin_report r;
	cr_expect_eq(check(&r), KEEL_LIN_LINEARIZABLE, "%s", r.text ? r.text : "");
	cr_expect_null(r.text);
	keel_lin_report_free(&r);
}

static void expect_violation(uint64_t key, const char *stuck)
{
	struct keel_lin_report r;
	cr_assert_eq(check(&r), KEEL_LIN_VIOLATION);
	cr_expect_eq(r.key, key);
	cr_assert_not_null(r.text);
	cr_expect(strstr(r.text, "NOT linearizable") != NULL, "%s", r.text);
	if (stuck)
		cr_expect(strstr(r.text, stuck) != NULL, "expected '%s' in:\n%s", stuck, r.text);
	keel_lin_report_free(&r);
}

Test(lin, empty_history_is_linearizable)
{
	expect_ok();
}

Test(lin, sequential_put_get)
{
	get(1, 1, 0, 0, 1); /* absent before any write */
	put(1, 1, 5, 2, 3);
	get(2, 1, 5, 4, 5);
	put(2, 1, 6, 6, 7);
	get(1, 1, 6, 8, 9);
	keel_lin_add(&h, 1, KEEL_LIN_DEL, 1, 0, 0, 0, false, 10, 11);
	get(1, 1, 0, 12, 13);
	expect_ok();
}

Test(lin, concurrent_read_may_see_old_or_new)
{
	put(1, 1, 1, 0, 10);
	put(1, 1, 2, 20, 40);
	get(2, 1, 1, 25, 30); /* overlaps put(2): may read the old value */
	get(3, 1, 2, 26, 35); /* ... or the new one */
	expect_ok();
}

Test(lin, reads_may_linearize_before_overlapping_write_in_any_order)
{
	/* Two writes concurrent with each other; readers see 2 then 1:
	 * legal, the order is put(2), put(1). */
	put(1, 1, 1, 0, 100);
	put(2, 1, 2, 0, 100);
	get(3, 1, 2, 10, 20);
	get(3, 1, 1, 30, 40);
	expect_ok();
}

Test(lin, touching_intervals_count_as_concurrent)
{
	put(1, 1, 7, 0, 10);
	get(2, 1, 0, 10, 12); /* invoked the instant put returned */
	expect_ok();
}

Test(lin, stale_read_fails)
{
	put(1, 1, 1, 0, 10);
	put(1, 1, 2, 20, 30);
	get(2, 1, 1, 40, 50); /* both writes done: 1 is stale */
	expect_violation(1, "c2 get(k1)=1 [40,50]");
}

Test(lin, lost_write_fails)
{
	put(1, 4, 9, 0, 10);
	get(2, 4, 0, 20, 30); /* the acknowledged write is gone */
	expect_violation(4, "c2 get(k4)=0 [20,30]");
}

Test(lin, reordered_writes_fail)
{
	/* Concurrent writes, but readers disagree on their order: one sees
	 * 1 then 2, a later one sees 1 again. Only one put(1) exists. */
	put(1, 2, 1, 0, 100);
	put(2, 2, 2, 0, 100);
	get(3, 2, 1, 10, 20);
	get(3, 2, 2, 30, 40);
	get(4, 2, 1, 50, 60);
	expect_violation(2, NULL);
}

Test(lin, read_from_the_future_fails)
{
	get(1, 1, 3, 0, 5); /* returned before put(3) was invoked */
	put(2, 1, 3, 10, 20);
	expect_violation(1, "c1 get(k1)=3 [0,5]");
}

Test(lin, cas_semantics)
{
	put(1, 1, 1, 0, 1);
	cas(1, 1, 1, 2, true, 2, 3);
	cas(2, 1, 1, 3, false, 4, 5); /* value is 2 now */
	get(1, 1, 2, 6, 7);
	cas(2, 1, 0, 9, false, 8, 9);
	expect_ok();
}

Test(lin, two_concurrent_cas_cannot_both_win)
{
	put(1, 1, 1, 0, 1);
	cas(1, 1, 1, 2, true, 10, 20);
	cas(2, 1, 1, 3, true, 10, 20);
	expect_violation(1, NULL);
}

Test(lin, failed_cas_must_see_a_mismatch)
{
	put(1, 1, 1, 0, 1);
	cas(2, 1, 1, 5, false, 2, 3); /* nothing else wrote: must succeed */
	expect_violation(1, "c2 cas(k1, 1->5)=fail");
}

Test(lin, pending_write_may_apply_late_or_never)
{
	size_t id = keel_lin_invoke(&h, 1, KEEL_LIN_PUT, 1, 5, 0, 10);
	(void)id;
	get(2, 1, 0, 20, 30);  /* not yet applied */
	get(2, 1, 5, 100, 110); /* applied much later */
	keel_lin_invoke(&h, 3, KEEL_LIN_PUT, 1, 8, 0, 120); /* never observed */
	get(2, 1, 5, 130, 140);
	expect_ok();
}

Test(lin, pending_write_cannot_apply_before_invocation)
{
	get(2, 1, 5, 0, 5);
	keel_lin_invoke(&h, 1, KEEL_LIN_PUT, 1, 5, 0, 10);
	expect_violation(1, "c2 get(k1)=5 [0,5]");
}

Test(lin, pending_write_applies_at_most_once)
{
	keel_lin_invoke(&h, 1, KEEL_LIN_PUT, 1, 5, 0, 0);
	get(2, 1, 5, 10, 11);
	put(3, 1, 6, 12, 13);
	get(2, 1, 5, 14, 15); /* the pending put cannot take effect twice */
	expect_violation(1, "c2 get(k1)=5 [14,15]");
}

Test(lin, pending_cas_may_swap)
{
	put(1, 1, 1, 0, 1);
	keel_lin_invoke(&h, 2, KEEL_LIN_CAS, 1, 9, 1, 5);
	get(3, 1, 9, 10, 11);
	expect_ok();
}

Test(lin, keys_are_checked_separately_and_the_failing_key_is_named)
{
	put(1, 1, 1, 0, 10);
	get(2, 1, 1, 20, 30);
	put(1, 7, 3, 0, 10);
	get(2, 7, 0, 20, 30);
	put(1, 9, 4, 0, 10);
	get(2, 9, 4, 20, 30);
	expect_violation(7, "key k7");
}

/* Random linearizable histories: clients run operations against a real
 * register, each taking effect at a random instant inside its interval.
 * The checker must accept them; corrupting one read must be rejected. */
static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void gen_history(uint64_t seed, int clients, int keys, int nops)
{
	rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
	uint64_t reg[8] = { 0 };
	struct inflight {
		bool busy, applied;
		size_t id;
	} cl[16] = { 0 };
	uint64_t t = 0, nextval = 1;
	int started = 0;
	while (started < nops || true) {
		bool any = false;
		for (int c = 0; c < clients; c++)
			any |= cl[c].busy;
		if (started >= nops && !any)
			break;
		t++;
		int c = (int)(rnd() % (uint64_t)clients);
		struct inflight *f = &cl[c];
		if (!f->busy) {
			if (started >= nops)
				continue;
			uint64_t k = rnd() % (uint64_t)keys;
			int kind = (int)(rnd() % 4);
			uint64_t v = nextval++;
			uint64_t ex = rnd() % 2 ? reg[k] : rnd() % nextval;
			f->id = keel_lin_invoke(&h, c, (enum keel_lin_kind)kind, k, v, ex, t);
			f->busy = true;
			f->applied = false;
			started++;
		} else if (!f->applied) {
			struct keel_lin_op *op = &h.ops[f->id];
			switch (op->kind) {
			case KEEL_LIN_GET:
				op->value = reg[op->key];
				break;
			case KEEL_LIN_PUT:
				reg[op->key] = op->arg;
				break;
			case KEEL_LIN_DEL:
				reg[op->key] = 0;
				break;
			case KEEL_LIN_CAS:
				op->ok = reg[op->key] == op->expect;
				if (op->ok)
					reg[op->key] = op->arg;
				break;
			default: /* lock kinds: not generated here */
				break;
			}
			f->applied = true;
		} else {
			struct keel_lin_op *op = &h.ops[f->id];
			/* Some ops never return (10%): still pending. */
			if (op->kind != KEEL_LIN_GET && rnd() % 10 == 0) {
				f->busy = false;
				continue;
			}
			keel_lin_return(&h, f->id, t, op->value, op->ok);
			f->busy = false;
		}
	}
}

Test(lin, random_linearizable_histories_pass)
{
	for (uint64_t seed = 1; seed <= 50; seed++) {
		keel_lin_history_free(&h);
		keel_lin_history_init(&h);
		gen_history(seed, 6, 3, 600);
		struct keel_lin_report r;
		enum keel_lin_verdict v = keel_lin_check(&h, 0, &r);
		cr_assert_eq(v, KEEL_LIN_LINEARIZABLE, "seed %llu: %s", (unsigned long long)seed,
			     r.text ? r.text : "");
		cr_expect_eq(r.keys, 3);
		keel_lin_report_free(&r);
	}
}

Test(lin, corrupted_read_in_random_history_fails)
{
	int caught = 0;
	for (uint64_t seed = 1; seed <= 50; seed++) {
		keel_lin_history_free(&h);
		keel_lin_history_init(&h);
		gen_history(seed, 6, 3, 600);
		/* A read of a value no one ever wrote. */
		size_t i;
		for (i = h.n / 2; i < h.n; i++)
			if (h.ops[i].kind == KEEL_LIN_GET && !h.ops[i].pending)
				break;
		cr_assert_lt(i, h.n);
		h.ops[i].value = 1000000 + seed;
		struct keel_lin_report r;
		enum keel_lin_verdict v = keel_lin_check(&h, 0, &r);
		cr_expect_eq(v, KEEL_LIN_VIOLATION, "seed %llu", (unsigned long long)seed);
		cr_expect_eq(r.key, h.ops[i].key);
		caught += v == KEEL_LIN_VIOLATION;
		keel_lin_report_free(&r);
	}
	cr_expect_eq(caught, 50);
}

Test(lin, budget_exhaustion_is_unknown_not_pass)
{
	/* Many concurrent writes and a read that matches none: proving it
	 * illegal needs a search; one step is not enough. */
	for (int c = 0; c < 12; c++)
		put(c, 1, (uint64_t)c + 1, 0, 100);
	get(20, 1, 99, 50, 60);
	struct keel_lin_report r;
	cr_expect_eq(keel_lin_check(&h, 5, &r), KEEL_LIN_UNKNOWN);
	cr_expect(r.text && strstr(r.text, "budget"));
	keel_lin_report_free(&r);
	cr_expect_eq(keel_lin_check(&h, 0, &r), KEEL_LIN_VIOLATION);
	keel_lin_report_free(&r);
}

/* ---- the lock model ---- */

enum { X = KEEL_LIN_EXCLUSIVE, S = KEEL_LIN_SHARED };

static void acq(int c, int mode, bool wait, bool granted, uint64_t token, uint64_t t0, uint64_t t1)
{
	keel_lin_add(&h, c, KEEL_LIN_ACQUIRE, 1, (uint64_t)mode, wait, token, granted, t0, t1);
}

static void rel(int c, uint64_t t0, uint64_t t1)
{
	keel_lin_add(&h, c, KEEL_LIN_RELEASE, 1, 0, 0, 0, true, t0, t1);
}

static enum keel_lin_verdict lock_check(void)
{
	struct keel_lin_report r;
	enum keel_lin_verdict v = keel_lin_check(&h, 0, &r);
	if (v != KEEL_LIN_LINEARIZABLE)
		cr_log_info("%s", r.text);
	keel_lin_report_free(&r);
	return v;
}

Test(lin, lock_handoff_passes)
{
	acq(1, X, true, true, 5, 0, 10);
	acq(2, X, true, true, 9, 2, 30); /* waits, granted at the release */
	rel(1, 20, 25);
	acq(3, X, false, false, 0, 26, 28); /* a try while c2 holds: busy */
	rel(2, 40, 41);
	cr_assert_eq(lock_check(), KEEL_LIN_LINEARIZABLE);
}

Test(lin, lock_double_grant_fails)
{
	acq(1, X, true, true, 5, 0, 10);
	acq(2, X, true, true, 9, 12, 15); /* granted while c1 still holds */
	rel(1, 20, 25);
	cr_assert_eq(lock_check(), KEEL_LIN_VIOLATION);
}

Test(lin, lock_readers_share_passes)
{
	acq(1, S, false, true, 3, 0, 5);
	acq(2, S, false, true, 4, 1, 6);
	acq(3, X, false, false, 0, 7, 8); /* busy beside two readers */
	rel(1, 9, 10);
	rel(2, 11, 12);
	acq(3, X, false, true, 13, 13, 14);
	cr_assert_eq(lock_check(), KEEL_LIN_LINEARIZABLE);
}

Test(lin, lock_shared_beside_exclusive_fails)
{
	acq(1, X, false, true, 3, 0, 5);
	acq(2, S, false, true, 4, 6, 7);
	cr_assert_eq(lock_check(), KEEL_LIN_VIOLATION);
}

Test(lin, lock_token_not_increasing_fails)
{
	acq(1, X, false, true, 7, 0, 5);
	rel(1, 6, 7);
	acq(2, X, false, true, 7, 8, 9); /* the same token again */
	cr_assert_eq(lock_check(), KEEL_LIN_VIOLATION);
}

Test(lin, lock_tokens_order_concurrent_grants)
{
	/* Overlapping acquires: the one with the lower token went first. */
	acq(1, X, true, true, 8, 0, 20);
	acq(2, X, true, true, 4, 0, 5);
	rel(2, 6, 7);
	cr_assert_eq(lock_check(), KEEL_LIN_LINEARIZABLE);
}

Test(lin, lock_busy_on_free_lock_fails)
{
	acq(1, X, false, true, 3, 0, 1);
	rel(1, 2, 3);
	acq(2, X, false, false, 0, 4, 5); /* busy, but nobody holds it */
	cr_assert_eq(lock_check(), KEEL_LIN_VIOLATION);
}

Test(lin, lock_release_by_non_holder_fails)
{
	rel(1, 0, 1);
	cr_assert_eq(lock_check(), KEEL_LIN_VIOLATION);
}

Test(lin, lock_expiry_releases)
{
	acq(1, X, false, true, 3, 0, 1);
	/* c1's session ends at an unknown time after 2 (it never learned) */
	keel_lin_invoke(&h, 1, KEEL_LIN_EXPIRE, 1, 0, 0, 2);
	acq(2, X, true, true, 9, 3, 8);
	acq(1, X, true, false, 0, 4, 6); /* timed out: c2 held it */
	cr_assert_eq(lock_check(), KEEL_LIN_LINEARIZABLE);
}

Test(lin, lock_grant_before_expiry_could_start_fails)
{
	acq(1, X, false, true, 3, 0, 1);
	keel_lin_invoke(&h, 1, KEEL_LIN_EXPIRE, 1, 0, 0, 10);
	acq(2, X, true, true, 9, 3, 8); /* granted before c1's session could end */
	cr_assert_eq(lock_check(), KEEL_LIN_VIOLATION);
}

Test(lin, lock_unknown_acquire_then_reask)
{
	/* c1's acquire got no answer (it may have been granted, token
	 * unknown); a later ask is answered with its hold; c2's try in
	 * between was busy, which only the unknown grant explains. */
	keel_lin_invoke(&h, 1, KEEL_LIN_ACQUIRE, 1, X, 1, 0);
	keel_lin_invoke(&h, 1, KEEL_LIN_EXPIRE, 1, 0, 0, 0);
	acq(2, X, false, false, 0, 5, 6);
	acq(1, X, true, true, 2, 7, 8);
	rel(1, 9, 10);
	acq(2, X, false, true, 11, 11, 12);
	cr_assert_eq(lock_check(), KEEL_LIN_LINEARIZABLE);
}
