/* The KV state machine (include/keel/kv.h): commands, revisions, CAS,
 * range scans, the exactly-once client table (through snapshot and
 * restore), replicated-time expiry, the watch history, limits, and the
 * codec's refusals. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/kv.h"

static struct keel_kv *kv;
static uint64_t next_index;

static void setup(void)
{
	struct keel_kv_config c = {.client_idle_ms = 10000, .watch_history = 8};
	cr_assert_eq(keel_kv_create(&c, &kv), 0);
	next_index = 1;
}

static void teardown(void)
{
	keel_kv_destroy(kv);
}

TestSuite(kv, .init = setup, .fini = teardown);

static struct keel_kv_result run(const struct keel_kv_cmd *c)
{
	uint8_t buf[8192];
	int n = keel_kv_cmd_encode(c, buf, sizeof(buf));
	cr_assert_gt(n, 0, "encode: %d", n);
	struct keel_kv_result r;
	keel_kv_apply(kv, next_index++, buf, (size_t)n, &r);
	return r;
}

static struct keel_kv_result put(uint64_t client, uint64_t seq, const char *k, const char *v)
{
	struct keel_kv_cmd c = {.op = KEEL_KV_PUT, .client = client, .seq = seq,
				.key = (const uint8_t *)k, .key_len = (uint32_t)strlen(k),
				.value = (const uint8_t *)v, .value_len = (uint32_t)strlen(v)};
	return run(&c);
}

static struct keel_kv_result del(uint64_t client, uint64_t seq, const char *k)
{
	struct keel_kv_cmd c = {.op = KEEL_KV_DEL, .client = client, .seq = seq,
				.key = (const uint8_t *)k, .key_len = (uint32_t)strlen(k)};
	return run(&c);
}

static const char *get(const char *k)
{
	static char buf[256];
	struct keel_kv_kv e;
	if (keel_kv_get(kv, k, strlen(k), &e) < 0)
		return NULL;
	snprintf(buf, sizeof(buf), "%.*s", (int)e.value_len, (const char *)e.value);
	return buf;
}

Test(kv, put_get_delete_move_the_revision)
{
	struct keel_kv_result r = put(1, 1, "a", "1");
	cr_expect_eq(r.status, KEEL_KV_OK);
	cr_expect_eq(r.rev, 1);
	cr_expect_eq(r.mod_rev, 1);
	r = put(1, 2, "b", "2");
	cr_expect_eq(r.rev, 2);
	r = put(1, 3, "a", "3");
	cr_expect_eq(r.rev, 3);
	cr_expect_str_eq(get("a"), "3");
	struct keel_kv_kv e;
	cr_assert_eq(keel_kv_get(kv, "a", 1, &e), 0);
	cr_expect_eq(e.create_rev, 1);
	cr_expect_eq(e.mod_rev, 3);
	cr_expect_eq(e.version, 2);
	r = del(1, 4, "a");
	cr_expect_eq(r.status, KEEL_KV_OK);
	cr_expect_eq(r.rev, 4);
	cr_expect_null(get("a"));
	r = del(1, 5, "a");
	cr_expect_eq(r.status, KEEL_KV_NOT_FOUND);
	cr_expect_eq(r.rev, 4, "a failed delete changes nothing");
	cr_expect_eq(keel_kv_revision(kv), 4);
	cr_expect_eq(keel_kv_count(kv), 1);
	/* a recreated key starts a new life */
	put(1, 6, "a", "x");
	cr_assert_eq(keel_kv_get(kv, "a", 1, &e), 0);
	cr_expect_eq(e.create_rev, 5);
	cr_expect_eq(e.version, 1);
}

Test(kv, cas_on_value_revision_version_and_absence)
{
	put(1, 1, "k", "old");
	struct keel_kv_cmd c = {.op = KEEL_KV_CAS, .client = 1, .seq = 2, .key = (const uint8_t *)"k",
				.key_len = 1, .cmp = KEEL_KV_CMP_VALUE, .expect = (const uint8_t *)"nope",
				.expect_len = 4, .value = (const uint8_t *)"new", .value_len = 3};
	struct keel_kv_result r = run(&c);
	cr_expect_eq(r.status, KEEL_KV_CAS_FAILED);
	cr_expect_eq(r.mod_rev, 1);
	cr_expect_str_eq(get("k"), "old");
	c.seq = 3;
	c.expect = (const uint8_t *)"old";
	c.expect_len = 3;
	r = run(&c);
	cr_expect_eq(r.status, KEEL_KV_OK);
	cr_expect_str_eq(get("k"), "new");
	/* on the mod revision */
	c = (struct keel_kv_cmd){.op = KEEL_KV_CAS, .client = 1, .seq = 4,
				 .key = (const uint8_t *)"k", .key_len = 1,
				 .cmp = KEEL_KV_CMP_MOD_REV, .rev = 1,
				 .value = (const uint8_t *)"r", .value_len = 1};
	cr_expect_eq(run(&c).status, KEEL_KV_CAS_FAILED);
	c.seq = 5;
	c.rev = 2;
	cr_expect_eq(run(&c).status, KEEL_KV_OK);
	/* on the version, then delete on success */
	c = (struct keel_kv_cmd){.op = KEEL_KV_CAS, .client = 1, .seq = 6,
				 .key = (const uint8_t *)"k", .key_len = 1,
				 .cmp = KEEL_KV_CMP_VERSION, .rev = 3, .cas_delete = true};
	cr_expect_eq(run(&c).status, KEEL_KV_OK);
	cr_expect_null(get("k"));
	/* create only if absent (a lock's first step) */
	c = (struct keel_kv_cmd){.op = KEEL_KV_CAS, .client = 1, .seq = 7,
				 .key = (const uint8_t *)"k", .key_len = 1,
				 .cmp = KEEL_KV_CMP_ABSENT, .value = (const uint8_t *)"1",
				 .value_len = 1};
	cr_expect_eq(run(&c).status, KEEL_KV_OK);
	c.seq = 8;
	cr_expect_eq(run(&c).status, KEEL_KV_CAS_FAILED);
	/* mod_rev 0 means "absent" */
	c = (struct keel_kv_cmd){.op = KEEL_KV_CAS, .client = 1, .seq = 9,
				 .key = (const uint8_t *)"z", .key_len = 1,
				 .cmp = KEEL_KV_CMP_MOD_REV, .rev = 0,
				 .value = (const uint8_t *)"1", .value_len = 1};
	cr_expect_eq(run(&c).status, KEEL_KV_OK);
}

struct collect {
	char keys[64][16];
	int n;
};

static int collect_one(void *arg, const struct keel_kv_kv *e)
{
	struct collect *c = arg;
	snprintf(c->keys[c->n++], 16, "%.*s", (int)e->key_len, (const char *)e->key);
	return 0;
}

Test(kv, range_by_prefix_in_key_order_with_limit_and_paging)
{
	const char *keys[] = {"b/2", "a", "b/10", "b", "b/1", "c", "b/3", "ba"};
	for (int i = 0; i < 8; i++)
		put(1, (uint64_t)i + 1, keys[i], "v");
	struct collect c = {0};
	bool more;
	int n = keel_kv_range(kv, "b/", 2, NULL, 0, 0, collect_one, &c, &more);
	cr_assert_eq(n, 4);
	cr_expect_str_eq(c.keys[0], "b/1");
	cr_expect_str_eq(c.keys[1], "b/10");
	cr_expect_str_eq(c.keys[2], "b/2");
	cr_expect_str_eq(c.keys[3], "b/3");
	cr_expect(!more);
	memset(&c, 0, sizeof(c));
	n = keel_kv_range(kv, "b/", 2, NULL, 0, 2, collect_one, &c, &more);
	cr_assert_eq(n, 2);
	cr_expect(more);
	memset(&c, 0, sizeof(c));
	n = keel_kv_range(kv, "b/", 2, "b/10", 4, 2, collect_one, &c, &more);
	cr_assert_eq(n, 2);
	cr_expect_str_eq(c.keys[0], "b/2");
	cr_expect_str_eq(c.keys[1], "b/3");
	cr_expect(!more);
	memset(&c, 0, sizeof(c));
	n = keel_kv_range(kv, "", 0, NULL, 0, 0, collect_one, &c, NULL);
	cr_assert_eq(n, 8);
	cr_expect_str_eq(c.keys[0], "a");
	cr_expect_str_eq(c.keys[1], "b");
	cr_expect_str_eq(c.keys[7], "c");
	memset(&c, 0, sizeof(c));
	cr_expect_eq(keel_kv_range(kv, "x", 1, NULL, 0, 0, collect_one, &c, &more), 0);
}

Test(kv, many_keys_stay_ordered_through_deletes)
{
	char k[16];
	uint64_t seq = 1;
	for (int i = 0; i < 2000; i++) {
		snprintf(k, sizeof(k), "%05d", (i * 7919) % 2000);
		put(1, seq++, k, "v");
	}
	for (int i = 0; i < 2000; i += 3) {
		snprintf(k, sizeof(k), "%05d", i);
		del(1, seq++, k);
	}
	cr_assert_eq(keel_kv_count(kv), 2000 - 667);
	struct collect c;
	char last[16] = "";
	int seen = 0;
	for (;;) {
		memset(&c, 0, sizeof(c));
		bool more;
		int n = keel_kv_range(kv, "", 0, last, strlen(last), 64, collect_one, &c, &more);
		for (int i = 0; i < n; i++) {
			cr_assert_gt(strcmp(c.keys[i], last), 0);
			cr_assert_neq(atoi(c.keys[i]) % 3, 0);
			snprintf(last, sizeof(last), "%s", c.keys[i]);
			seen++;
		}
		if (!more)
			break;
	}
	cr_expect_eq(seen, 2000 - 667);
}

Test(kv, retries_are_answered_from_the_client_table)
{
	struct keel_kv_result r = put(7, 1, "x", "1");
	cr_expect_eq(r.rev, 1);
	r = put(7, 1, "x", "1"); /* the same request again: a retry */
	cr_expect(r.duplicate);
	cr_expect_eq(r.rev, 1);
	cr_expect_eq(keel_kv_revision(kv), 1, "applied once");
	r = put(7, 2, "x", "2");
	cr_expect(!r.duplicate);
	cr_expect_eq(r.rev, 2);
	r = put(7, 1, "x", "old"); /* superseded */
	cr_expect_eq(r.status, KEEL_KV_STALE_SEQ);
	cr_expect_str_eq(get("x"), "2");
	struct keel_kv_result q;
	cr_assert_eq(keel_kv_client_result(kv, 7, 2, &q), 0);
	cr_expect_eq(q.rev, 2);
	cr_expect_eq(keel_kv_client_result(kv, 7, 1, &q), KEEL_ENOTFOUND);
	cr_expect_eq(keel_kv_client_result(kv, 8, 1, &q), KEEL_ENOTFOUND);
	/* another client's sequence numbers are its own */
	r = put(8, 1, "y", "1");
	cr_expect(!r.duplicate);
}

Test(kv, idle_clients_expire_on_replicated_time)
{
	struct keel_kv_cmd c = {.op = KEEL_KV_PUT, .client = 1, .seq = 5, .time_ms = 1000,
				.key = (const uint8_t *)"a", .key_len = 1,
				.value = (const uint8_t *)"1", .value_len = 1};
	run(&c);
	/* client 2 keeps writing; time moves past client 1's idle limit */
	for (uint64_t i = 1; i <= 20; i++) {
		struct keel_kv_cmd d = {.op = KEEL_KV_NOOP, .client = 2, .seq = i,
					.time_ms = 1000 + i * 1000};
		run(&d);
	}
	struct keel_kv_result q;
	cr_expect_eq(keel_kv_client_result(kv, 1, 5, &q), KEEL_ENOTFOUND,
		     "client 1 was idle 20 s, the limit is 10 s");
	cr_expect_eq(keel_kv_client_result(kv, 2, 20, &q), 0);
	/* a clock that goes back (a new leader behind) does not move time back */
	struct keel_kv_cmd d = {.op = KEEL_KV_NOOP, .client = 2, .seq = 21, .time_ms = 5};
	run(&d);
	cr_expect_eq(keel_kv_client_result(kv, 2, 21, &q), 0);
}

Test(kv, snapshot_restore_keeps_data_revisions_and_the_client_table)
{
	put(1, 1, "a", "1");
	put(2, 1, "b", "2");
	put(1, 2, "a", "3");
	del(2, 2, "b");
	void *snap;
	size_t len;
	cr_assert_eq(keel_kv_snapshot(kv, &snap, &len), 0);
	struct keel_kv *k2;
	cr_assert_eq(keel_kv_create(NULL, &k2), 0);
	cr_assert_eq(keel_kv_restore(k2, 4, snap, len), 0);
	cr_expect_eq(keel_kv_revision(k2), 4);
	cr_expect_eq(keel_kv_applied_index(k2), 4);
	struct keel_kv_kv e;
	cr_assert_eq(keel_kv_get(k2, "a", 1, &e), 0);
	cr_expect_eq(e.mod_rev, 3);
	cr_expect_eq(e.version, 2);
	cr_expect_eq(keel_kv_get(k2, "b", 1, &e), KEEL_ENOTFOUND);
	/* same store, same bytes */
	void *snap2;
	size_t len2;
	cr_assert_eq(keel_kv_snapshot(k2, &snap2, &len2), 0);
	cr_expect_eq(len2, len);
	cr_expect_eq(memcmp(snap, snap2, len), 0);
	free(snap2);
	/* the retry of client 1's last write, after a restart from the
	 * snapshot, is still answered once */
	struct keel_kv *saved = kv;
	kv = k2;
	struct keel_kv_result r = put(1, 2, "a", "3");
	cr_expect(r.duplicate);
	cr_expect_eq(keel_kv_revision(k2), 4);
	kv = saved;
	keel_kv_destroy(k2);
	/* every flipped byte is refused, and the store keeps what it had */
	for (size_t i = 0; i < len; i++) {
		((uint8_t *)snap)[i] ^= 0x10;
		cr_assert_eq(keel_kv_restore(kv, 9, snap, len), KEEL_ECORRUPT, "byte %zu", i);
		((uint8_t *)snap)[i] ^= 0x10;
	}
	cr_expect_eq(keel_kv_restore(kv, 9, snap, len - 1), KEEL_ECORRUPT);
	cr_expect_str_eq(get("a"), "3");
	free(snap);
}

struct events {
	uint64_t revs[32];
	bool del[32];
	int n;
};

static void on_ev(void *arg, const struct keel_kv_event *ev)
{
	struct events *e = arg;
	e->revs[e->n] = ev->rev;
	e->del[e->n++] = ev->deleted;
}

static int hist_ev(void *arg, const struct keel_kv_event *ev)
{
	on_ev(arg, ev);
	return 0;
}

Test(kv, every_change_is_an_event_and_the_history_replays_from_a_revision)
{
	struct events live = {0};
	keel_kv_on_event(kv, on_ev, &live);
	put(1, 1, "w/a", "1");
	put(1, 2, "other", "1");
	put(1, 3, "w/b", "1");
	del(1, 4, "w/a");
	del(1, 5, "w/a"); /* no change, no event */
	cr_assert_eq(live.n, 4);
	cr_expect(live.revs[3] == 4 && live.del[3]);
	struct events h = {0};
	cr_assert_eq(keel_kv_history(kv, 2, "w/", 2, true, hist_ev, &h), 0);
	cr_assert_eq(h.n, 2);
	cr_expect_eq(h.revs[0], 3);
	cr_expect_eq(h.revs[1], 4);
	memset(&h, 0, sizeof(h));
	cr_assert_eq(keel_kv_history(kv, 1, "w/a", 3, false, hist_ev, &h), 0);
	cr_expect_eq(h.n, 2);
	/* the history holds 8 events: older revisions are compacted */
	for (uint64_t i = 0; i < 10; i++)
		put(1, 6 + i, "x", "y");
	cr_expect_eq(keel_kv_history_start(kv), 7);
	cr_expect_eq(keel_kv_history(kv, 3, "", 0, true, hist_ev, &h), KEEL_ESTALE);
	memset(&h, 0, sizeof(h));
	cr_expect_eq(keel_kv_history(kv, 7, "", 0, true, hist_ev, &h), 0);
	cr_expect_eq(h.n, 8);
	/* from the future: nothing yet, not an error */
	cr_expect_eq(keel_kv_history(kv, 100, "", 0, true, hist_ev, &h), 0);
}

Test(kv, limits_and_malformed_commands)
{
	static uint8_t big[KEEL_KV_MAX_VALUE + 1];
	static uint8_t buf[KEEL_KV_MAX_VALUE + 8192];
	struct keel_kv_cmd c = {.op = KEEL_KV_PUT, .client = 1, .seq = 1, .key = big,
				.key_len = KEEL_KV_MAX_KEY + 1, .value = big, .value_len = 1};
	cr_expect_eq(keel_kv_cmd_encode(&c, buf, sizeof(buf)), KEEL_ETOOBIG);
	c.key_len = KEEL_KV_MAX_KEY;
	c.value_len = KEEL_KV_MAX_VALUE + 1;
	cr_expect_eq(keel_kv_cmd_encode(&c, buf, sizeof(buf)), KEEL_ETOOBIG);
	c.value_len = KEEL_KV_MAX_VALUE;
	int n = keel_kv_cmd_encode(&c, buf, sizeof(buf));
	cr_assert_gt(n, 0, "the largest key and value fit");
	struct keel_kv_cmd d;
	cr_expect_eq(keel_kv_cmd_decode(buf, (size_t)n, &d), 0);
	cr_expect_eq(keel_kv_cmd_decode(buf, (size_t)n - 1, &d), KEEL_EPROTO);
	c.key_len = 0;
	cr_expect_eq(keel_kv_cmd_encode(&c, buf, sizeof(buf)), KEEL_EBADINPUT);
	c.key_len = 1;
	c.client = 0;
	cr_expect_eq(keel_kv_cmd_encode(&c, buf, sizeof(buf)), KEEL_EBADINPUT);
	/* every truncation of a valid command is refused */
	struct keel_kv_cmd e = {.op = KEEL_KV_CAS, .client = 3, .seq = 9, .key = big,
				.key_len = 5, .cmp = KEEL_KV_CMP_VALUE, .expect = big,
				.expect_len = 4, .value = big, .value_len = 6};
	n = keel_kv_cmd_encode(&e, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	for (int i = 0; i < n; i++)
		cr_assert_eq(keel_kv_cmd_decode(buf, (size_t)i, &d), KEEL_EPROTO, "len %d", i);
	/* an entry that is not a KV command is skipped, changing nothing */
	keel_kv_apply(kv, 1, "garbage", 7, NULL);
	cr_expect_eq(keel_kv_revision(kv), 0);
	cr_expect_eq(keel_kv_applied_index(kv), 1);
}
