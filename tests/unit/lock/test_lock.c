/* The lock service's state machine (include/keel/lock.h): every rule the
 * header states, each in a test: tokens, try, FIFO, shared/exclusive
 * without writer starvation, expiry releasing and never granting to an
 * expired waiter, keepalives, the new-term grace, lock-delay, wait
 * timeouts, release by holders only, retries, snapshots, the codec. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "keel/lock.h"

static struct keel_lock_sm *sm;
static uint64_t idx;
static uint64_t seqs[64];

#define MAXEV 64
static struct keel_lock_event evs[MAXEV];
static char evnames[MAXEV][32];
static int nev;

static void on_ev(void *arg, const struct keel_lock_event *ev)
{
	(void)arg;
	cr_assert_lt(nev, MAXEV);
	evs[nev] = *ev;
	snprintf(evnames[nev], 32, "%.*s", (int)ev->name_len, ev->name ? (const char *)ev->name : "");
	evs[nev].name = NULL;
	nev++;
}

static void setup(void)
{
	cr_assert_eq(keel_lock_sm_create(&sm), 0);
	keel_lock_sm_on_event(sm, on_ev, NULL);
	idx = 0;
	nev = 0;
	memset(seqs, 0, sizeof(seqs));
}

static void teardown(void)
{
	keel_lock_sm_destroy(sm);
}

TestSuite(lock, .init = setup, .fini = teardown);

static struct keel_lock_result apply(struct keel_lock_cmd *c)
{
	uint8_t buf[8192];
	if (c->op != KEEL_LOCK_TICK && c->op != KEEL_LOCK_KEEPALIVE && !c->seq)
		c->seq = ++seqs[c->session % 64];
	int n = keel_lock_cmd_encode(c, buf, sizeof(buf));
	cr_assert_gt(n, 0, "encode %d", n);
	struct keel_lock_result r;
	keel_lock_sm_apply(sm, ++idx, buf, (size_t)n, &r);
	return r;
}

static void open_s(uint64_t s, uint32_t ttl)
{
	struct keel_lock_cmd c = {.op = KEEL_LOCK_OPEN, .session = s, .ttl_ms = ttl};
	cr_assert_eq(apply(&c).status, KEEL_LOCK_OK);
}

static struct keel_lock_result acq(uint64_t s, const char *name, uint8_t mode, uint32_t wait)
{
	struct keel_lock_cmd c = {.op = KEEL_LOCK_ACQUIRE, .session = s, .name = (const uint8_t *)name,
				  .name_len = (uint32_t)strlen(name), .mode = mode, .wait_ms = wait};
	return apply(&c);
}

static struct keel_lock_result rel(uint64_t s, const char *name, uint64_t token)
{
	struct keel_lock_cmd c = {.op = KEEL_LOCK_RELEASE, .session = s, .name = (const uint8_t *)name,
				  .name_len = (uint32_t)strlen(name), .token = token};
	return apply(&c);
}

static void tick(uint64_t ms, uint64_t term)
{
	struct keel_lock_cmd c = {.op = KEEL_LOCK_TICK, .elapsed_ms = ms, .term = term};
	apply(&c);
}

static void keepalive(uint64_t s)
{
	uint8_t id[8];
	keel_put_le64(id, s);
	struct keel_lock_cmd c = {.op = KEEL_LOCK_KEEPALIVE, .sessions = id, .n_sessions = 1};
	apply(&c);
}

static int find_ev(uint8_t kind, uint64_t session)
{
	for (int i = 0; i < nev; i++)
		if (evs[i].kind == kind && evs[i].session == session)
			return i;
	return -1;
}

Test(lock, exclusive_grants_carry_increasing_tokens_and_try_fails_at_once)
{
	tick(0, 1);
	open_s(1, 5000);
	open_s(2, 5000);
	struct keel_lock_result a = acq(1, "x", KEEL_LOCK_EXCLUSIVE, 0);
	cr_assert_eq(a.status, KEEL_LOCK_OK);
	cr_expect_gt(a.token, 0);
	cr_expect_eq(acq(2, "x", KEEL_LOCK_EXCLUSIVE, 0).status, KEEL_LOCK_BUSY);
	cr_expect_eq(acq(2, "x", KEEL_LOCK_SHARED, 0).status, KEEL_LOCK_BUSY);
	struct keel_lock_result again = acq(1, "x", KEEL_LOCK_EXCLUSIVE, 0);
	cr_expect_eq(again.status, KEEL_LOCK_ALREADY);
	cr_expect_eq(again.token, a.token);
	cr_expect_eq(rel(1, "x", a.token).status, KEEL_LOCK_OK);
	struct keel_lock_result b = acq(2, "x", KEEL_LOCK_EXCLUSIVE, 0);
	cr_assert_eq(b.status, KEEL_LOCK_OK);
	cr_expect_gt(b.token, a.token);
}

Test(lock, waiters_are_granted_in_fifo_order_by_push)
{
	tick(0, 1);
	for (uint64_t s = 1; s <= 4; s++)
		open_s(s, 5000);
	struct keel_lock_result a = acq(1, "q", KEEL_LOCK_EXCLUSIVE, 0);
	cr_expect_eq(acq(2, "q", KEEL_LOCK_EXCLUSIVE, 1000).status, KEEL_LOCK_WAITING);
	cr_expect_eq(acq(3, "q", KEEL_LOCK_EXCLUSIVE, 1000).status, KEEL_LOCK_WAITING);
	cr_expect_eq(acq(4, "q", KEEL_LOCK_EXCLUSIVE, 1000).status, KEEL_LOCK_WAITING);
	nev = 0;
	rel(1, "q", a.token);
	int g = find_ev(KEEL_LOCK_EV_GRANTED, 2);
	cr_assert_geq(g, 0, "the first waiter is granted when the holder releases");
	cr_expect_gt(evs[g].token, a.token);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_GRANTED, 3), -1);
	uint64_t t2 = evs[g].token;
	nev = 0;
	rel(2, "q", t2);
	g = find_ev(KEEL_LOCK_EV_GRANTED, 3);
	cr_assert_geq(g, 0);
	cr_expect_gt(evs[g].token, t2);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_GRANTED, 4), -1);
}

Test(lock, readers_share_and_a_waiting_writer_is_not_starved)
{
	tick(0, 1);
	for (uint64_t s = 1; s <= 5; s++)
		open_s(s, 5000);
	struct keel_lock_result r1 = acq(1, "rw", KEEL_LOCK_SHARED, 0);
	struct keel_lock_result r2 = acq(2, "rw", KEEL_LOCK_SHARED, 0);
	cr_assert_eq(r1.status, KEEL_LOCK_OK);
	cr_assert_eq(r2.status, KEEL_LOCK_OK);
	cr_expect_eq(acq(3, "rw", KEEL_LOCK_EXCLUSIVE, 1000).status, KEEL_LOCK_WAITING);
	/* a reader arriving behind a waiting writer waits too */
	cr_expect_eq(acq(4, "rw", KEEL_LOCK_SHARED, 1000).status, KEEL_LOCK_WAITING);
	cr_expect_eq(acq(5, "rw", KEEL_LOCK_SHARED, 0).status, KEEL_LOCK_BUSY);
	nev = 0;
	rel(1, "rw", r1.token);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_GRANTED, 3), -1, "a reader still holds it");
	rel(2, "rw", r2.token);
	int g = find_ev(KEEL_LOCK_EV_GRANTED, 3);
	cr_assert_geq(g, 0);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_GRANTED, 4), -1, "readers and the writer never overlap");
	struct keel_lock_info info;
	cr_assert_eq(keel_lock_sm_inspect(sm, "rw", 2, &info, NULL, NULL, NULL), 0);
	cr_expect_eq(info.mode, KEEL_LOCK_EXCLUSIVE);
	cr_expect_eq(info.n_waiters, 1);
	nev = 0;
	rel(3, "rw", evs[g].token);
	cr_expect_geq(find_ev(KEEL_LOCK_EV_GRANTED, 4), 0);
}

Test(lock, expiry_releases_and_grants_the_next_live_waiter)
{
	tick(0, 1);
	open_s(1, 1000);
	open_s(2, 5000);
	struct keel_lock_result a = acq(1, "e", KEEL_LOCK_EXCLUSIVE, 0);
	cr_expect_eq(acq(2, "e", KEEL_LOCK_EXCLUSIVE, 4000).status, KEEL_LOCK_WAITING);
	nev = 0;
	tick(999, 1);
	cr_expect_eq(nev, 0, "not yet: 999 ms of a 1000 ms lease");
	tick(1, 1);
	int x = find_ev(KEEL_LOCK_EV_EXPIRED, 1);
	int g = find_ev(KEEL_LOCK_EV_GRANTED, 2);
	cr_assert_geq(x, 0);
	cr_assert_geq(g, 0);
	cr_expect_lt(x, g, "the owner is told before the next holder is granted");
	cr_expect_gt(evs[g].token, a.token);
	/* the expired session can do nothing any more */
	cr_expect_eq(acq(1, "e", KEEL_LOCK_EXCLUSIVE, 0).status, KEEL_LOCK_NO_SESSION);
	cr_expect_eq(rel(1, "e", a.token).status, KEEL_LOCK_NO_SESSION);
}

Test(lock, a_waiter_whose_session_expired_is_never_granted)
{
	tick(0, 1);
	open_s(1, 10000);
	open_s(2, 1000);
	open_s(3, 10000);
	struct keel_lock_result a = acq(1, "w", KEEL_LOCK_EXCLUSIVE, 0);
	cr_expect_eq(acq(2, "w", KEEL_LOCK_EXCLUSIVE, 9000).status, KEEL_LOCK_WAITING);
	cr_expect_eq(acq(3, "w", KEEL_LOCK_EXCLUSIVE, 9000).status, KEEL_LOCK_WAITING);
	keepalive(1);
	keepalive(3);
	tick(1500, 1); /* 2's lease ran out while it waited */
	cr_assert_geq(find_ev(KEEL_LOCK_EV_EXPIRED, 2), 0);
	nev = 0;
	rel(1, "w", a.token);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_GRANTED, 2), -1, "etcd#11456: no grant to an expired waiter");
	cr_expect_geq(find_ev(KEEL_LOCK_EV_GRANTED, 3), 0);
}

Test(lock, keepalives_extend_and_a_new_leader_waits_out_old_leases)
{
	tick(0, 1);
	open_s(1, 1000);
	for (int i = 0; i < 10; i++) {
		tick(500, 1);
		keepalive(1);
	}
	cr_expect_eq(find_ev(KEEL_LOCK_EV_EXPIRED, 1), -1);
	tick(600, 1);
	/* a new leader: its first tick counts nothing and grants a full TTL */
	tick(999999, 2);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_EXPIRED, 1), -1);
	uint64_t dl;
	cr_assert_eq(keel_lock_sm_session(sm, 1, &dl, NULL), 0);
	cr_expect_eq(dl, keel_lock_sm_now(sm) + 1000);
	tick(1000, 2);
	cr_expect_geq(find_ev(KEEL_LOCK_EV_EXPIRED, 1), 0);
}

Test(lock, lock_delay_keeps_an_expired_holders_lock_ungranted)
{
	tick(0, 1);
	open_s(1, 1000);
	open_s(2, 60000);
	struct keel_lock_cmd c = {.op = KEEL_LOCK_ACQUIRE, .session = 1, .name = (const uint8_t *)"d",
				  .name_len = 1, .mode = KEEL_LOCK_EXCLUSIVE, .lock_delay_ms = 3000};
	cr_assert_eq(apply(&c).status, KEEL_LOCK_OK);
	cr_expect_eq(acq(2, "d", KEEL_LOCK_EXCLUSIVE, 50000).status, KEEL_LOCK_WAITING);
	nev = 0;
	tick(1000, 1);
	cr_assert_geq(find_ev(KEEL_LOCK_EV_EXPIRED, 1), 0);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_GRANTED, 2), -1, "held back by the lock-delay");
	keepalive(2);
	tick(2999, 1);
	cr_expect_eq(find_ev(KEEL_LOCK_EV_GRANTED, 2), -1);
	tick(1, 1);
	cr_expect_geq(find_ev(KEEL_LOCK_EV_GRANTED, 2), 0);
}

Test(lock, waits_time_out_and_only_holders_release)
{
	tick(0, 1);
	open_s(1, 60000);
	open_s(2, 60000);
	struct keel_lock_result a = acq(1, "t", KEEL_LOCK_EXCLUSIVE, 0);
	cr_expect_eq(acq(2, "t", KEEL_LOCK_EXCLUSIVE, 200).status, KEEL_LOCK_WAITING);
	tick(200, 1);
	cr_expect_geq(find_ev(KEEL_LOCK_EV_WAIT_TIMEOUT, 2), 0);
	cr_expect_eq(rel(2, "t", a.token).status, KEEL_LOCK_NOT_HOLDER);
	cr_expect_eq(rel(1, "t", a.token + 1).status, KEEL_LOCK_NOT_HOLDER, "a stale token");
	cr_expect_eq(rel(1, "nope", a.token).status, KEEL_LOCK_NOT_HOLDER);
	struct keel_lock_cmd c = {.op = KEEL_LOCK_CANCEL, .session = 2, .name = (const uint8_t *)"t",
				  .name_len = 1};
	cr_expect_eq(apply(&c).status, KEEL_LOCK_NOT_WAITING);
	cr_expect_eq(rel(1, "t", a.token).status, KEEL_LOCK_OK);
	cr_expect_eq(keel_lock_sm_inspect(sm, "t", 1, &(struct keel_lock_info){0}, NULL, NULL, NULL),
		     KEEL_ENOTFOUND, "a free lock is forgotten");
}

Test(lock, retries_are_answered_once)
{
	tick(0, 1);
	open_s(1, 60000);
	struct keel_lock_cmd c = {.op = KEEL_LOCK_ACQUIRE, .session = 1, .seq = 50,
				  .name = (const uint8_t *)"r", .name_len = 1,
				  .mode = KEEL_LOCK_EXCLUSIVE};
	struct keel_lock_result a = apply(&c);
	cr_assert_eq(a.status, KEEL_LOCK_OK);
	struct keel_lock_result b = apply(&c);
	cr_expect(b.duplicate);
	cr_expect_eq(b.status, KEEL_LOCK_OK);
	cr_expect_eq(b.token, a.token, "the same grant, not a second one");
	c.seq = 49;
	cr_expect_eq(apply(&c).status, KEEL_LOCK_STALE_SEQ);
	struct keel_lock_result q;
	cr_expect_eq(keel_lock_sm_result(sm, 1, 50, &q), 0);
	cr_expect_eq(q.token, a.token);
}

Test(lock, snapshot_restore_keeps_everything_and_tokens_keep_growing)
{
	tick(0, 7);
	open_s(1, 60000);
	open_s(2, 60000);
	struct keel_lock_cmd c = {.op = KEEL_LOCK_ACQUIRE, .session = 1, .name = (const uint8_t *)"el",
				  .name_len = 2, .mode = KEEL_LOCK_EXCLUSIVE,
				  .value = (const uint8_t *)"node-a", .value_len = 6};
	struct keel_lock_result a = apply(&c);
	cr_expect_eq(acq(2, "el", KEEL_LOCK_EXCLUSIVE, 30000).status, KEEL_LOCK_WAITING);
	acq(2, "s", KEEL_LOCK_SHARED, 0);
	void *snap;
	size_t len;
	cr_assert_eq(keel_lock_sm_snapshot(sm, &snap, &len), 0);
	struct keel_lock_sm *b;
	cr_assert_eq(keel_lock_sm_create(&b), 0);
	cr_assert_eq(keel_lock_sm_restore(b, idx, snap, len), 0);
	void *snap2;
	size_t len2;
	cr_assert_eq(keel_lock_sm_snapshot(b, &snap2, &len2), 0);
	cr_expect_eq(len2, len);
	cr_expect_eq(memcmp(snap, snap2, len), 0);
	free(snap2);
	struct keel_lock_info info;
	cr_assert_eq(keel_lock_sm_inspect(b, "el", 2, &info, NULL, NULL, NULL), 0);
	cr_expect_eq(info.n_holders, 1);
	cr_expect_eq(info.n_waiters, 1);
	/* continue on the restored copy: the next grant's token is higher */
	keel_lock_sm_destroy(sm);
	sm = b;
	keel_lock_sm_on_event(sm, on_ev, NULL);
	nev = 0;
	cr_expect_eq(rel(1, "el", a.token).status, KEEL_LOCK_OK);
	int g = find_ev(KEEL_LOCK_EV_GRANTED, 2);
	cr_assert_geq(g, 0);
	cr_expect_gt(evs[g].token, a.token);
	for (size_t i = 0; i < len; i += 3) {
		((uint8_t *)snap)[i] ^= 1;
		cr_assert_eq(keel_lock_sm_restore(b, 1, snap, len), KEEL_ECORRUPT, "byte %zu", i);
		((uint8_t *)snap)[i] ^= 1;
	}
	free(snap);
}

Test(lock, bad_commands_are_refused_by_the_codec)
{
	uint8_t buf[4096];
	static uint8_t name[KEEL_LOCK_MAX_NAME + 1];
	memset(name, 'n', sizeof(name));
	struct keel_lock_cmd c = {.op = KEEL_LOCK_ACQUIRE, .session = 1, .seq = 1, .name = name,
				  .name_len = KEEL_LOCK_MAX_NAME + 1, .mode = KEEL_LOCK_EXCLUSIVE};
	cr_expect_eq(keel_lock_cmd_encode(&c, buf, sizeof(buf)), KEEL_EBADINPUT, "name too long");
	c.name_len = 0;
	cr_expect_eq(keel_lock_cmd_encode(&c, buf, sizeof(buf)), KEEL_EBADINPUT, "empty name");
	c.name_len = 3;
	c.session = 0;
	cr_expect_eq(keel_lock_cmd_encode(&c, buf, sizeof(buf)), KEEL_EBADINPUT, "no session");
	struct keel_lock_cmd o = {.op = KEEL_LOCK_OPEN, .session = 1, .seq = 1, .ttl_ms = 0};
	cr_expect_eq(keel_lock_cmd_encode(&o, buf, sizeof(buf)), KEEL_EBADINPUT, "zero TTL");
	o.ttl_ms = 5000;
	int n = keel_lock_cmd_encode(&o, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	struct keel_lock_cmd d;
	for (int i = 0; i < n; i++)
		cr_assert_eq(keel_lock_cmd_decode(buf, (size_t)i, &d), KEEL_EPROTO);
	cr_expect_eq(keel_lock_cmd_decode(buf, (size_t)n, &d), 0);
	buf[1] = 99;
	cr_expect_eq(keel_lock_cmd_decode(buf, (size_t)n, &d), KEEL_EPROTO);
	/* an unknown session gets no grant */
	tick(0, 1);
	cr_expect_eq(acq(42, "x", KEEL_LOCK_EXCLUSIVE, 0).status, KEEL_LOCK_NO_SESSION);
	struct keel_lock_fence f = {0};
	cr_expect_eq(keel_lock_fence_check(&f, 10), 0);
	cr_expect_eq(keel_lock_fence_check(&f, 10), 0);
	cr_expect_eq(keel_lock_fence_check(&f, 9), KEEL_ESTALE);
	cr_expect_eq(keel_lock_fence_check(&f, 11), 0);
}
