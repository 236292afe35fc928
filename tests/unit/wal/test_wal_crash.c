/* Crash consistency over the fault-injecting disk: a workload of random-size
 * appends (and hard-state saves) is crashed at every I/O step, and at every
 * byte offset of the last unsynced write; recovery must return a prefix of
 * what was appended that holds every acknowledged record, and nothing else. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "faultdisk.h"
#include "keel/wal.h"
#include "walt.h"

#define MAXLEN 700

static void quiet(void)
{
	keel_log_set_level(KEEL_LOG_OFF); /* every crash logs; the asserts speak */
}
TestSuite(wal_crash, .init = quiet);

struct run {
	uint64_t acked;   /* every index <= acked is acknowledged durable */
	uint64_t appended;
	uint64_t hs_acked, hs_tried; /* terms saved: acknowledged, last attempted */
	int failures;
};

static void on_done(void *arg, uint64_t last, int status)
{
	struct run *r = arg;
	if (status == 0) {
		cr_assert_gt(last, r->acked, "acknowledged out of order");
		r->acked = last;
	} else {
		r->failures++;
	}
}

static struct keel_wal_config cfg(bool buffered)
{
	return (struct keel_wal_config){
		.segment_size = 16384, .max_batch = 5000, .buffered = buffered};
}

/* The workload; stops early when the disk loses power. */
static void workload(struct keel_faultdisk *d, bool buffered, uint64_t seed, struct run *r)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w;
	struct keel_wal_config c = cfg(buffered);
	char err[KEEL_ERRMSG_LEN];
	if (keel_wal_open(&w, io, &c, err))
		return; /* crashed during open */
	static uint8_t buf[MAXLEN + 1];
	uint64_t s = seed;
	for (int round = 0; round < 14 && !keel_faultdisk_is_off(d); round++) {
		int calls = 1 + (int)(walt_rand(&s) % 4);
		for (int c2 = 0; c2 < calls; c2++) {
			struct keel_wal_entry e[3];
			static uint8_t bufs[3][MAXLEN + 1];
			int n = 1 + (int)(walt_rand(&s) % 3);
			for (int i = 0; i < n; i++)
				e[i] = walt_entry(bufs[i], r->appended + 1 + (uint64_t)i, 0, MAXLEN);
			if (keel_wal_append(w, e, (size_t)n, on_done, r) == 0)
				r->appended += (uint64_t)n;
			else
				break;
		}
		if (walt_rand(&s) % 4 == 0) {
			struct keel_wal_hard_state hs = {.term = r->hs_tried + 1, .vote = 3};
			r->hs_tried = hs.term;
			if (keel_wal_save_hard_state(w, &hs) == 0)
				r->hs_acked = hs.term;
		}
		if (walt_rand(&s) % 2)
			keel_wal_poll(w);
		(void)buf;
	}
	keel_wal_flush(w);
	keel_wal_close(w);
}

static void check_recovery(struct keel_faultdisk *d, bool buffered, const struct run *r,
			   const char *what)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w;
	struct keel_wal_config c = cfg(buffered);
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_wal_open(&w, io, &c, err);
	cr_assert_eq(rc, 0, "%s: recovery failed: %s", what, err);
	struct walt_log l = {0};
	cr_assert_eq(walt_read(w, &l, MAXLEN), 0, "%s", what);
	cr_assert_eq(l.bad, 0, "%s: a recovered record differs from what was appended", what);
	cr_assert_eq(l.gap, 0, "%s", what);
	if (l.first)
		cr_assert_eq(l.first, 1, "%s", what);
	uint64_t last = l.first ? l.last : 0;
	cr_assert_geq(last, r->acked, "%s: lost acknowledged records (%lu < %lu)", what,
		      (unsigned long)last, (unsigned long)r->acked);
	cr_assert_leq(last, r->appended, "%s: records that were never appended", what);
	struct keel_wal_hard_state hs;
	keel_wal_hard_state(w, &hs);
	cr_assert(hs.term == r->hs_acked || hs.term == r->hs_tried, "%s: hard state term %lu",
		  what, (unsigned long)hs.term);
	/* and the log continues */
	uint8_t buf[MAXLEN + 1];
	struct keel_wal_entry e = walt_entry(buf, last + 1, 0, MAXLEN);
	struct run r2 = {.acked = last};
	cr_assert_eq(keel_wal_append(w, &e, 1, on_done, &r2), 0, "%s: %s", what, keel_wal_errmsg(w));
	cr_assert_eq(keel_wal_flush(w), 0, "%s", what);
	cr_assert_eq(r2.acked, last + 1, "%s", what);
	free(l.gen);
	keel_wal_close(w);
}

static void sweep(bool buffered, uint64_t seed)
{
	/* a clean run counts the steps */
	struct keel_faultdisk *d = keel_faultdisk_new();
	struct run clean = {0};
	workload(d, buffered, seed, &clean);
	uint64_t steps = keel_faultdisk_ops(d);
	cr_assert_eq(clean.failures, 0);
	cr_assert_eq(clean.acked, clean.appended);
	check_recovery(d, buffered, &clean, "clean run");
	keel_faultdisk_free(d);
	cr_log_info("crash sweep: %lu steps, %lu records", (unsigned long)steps,
		    (unsigned long)clean.appended);

	uint64_t s = seed * 31 + 7;
	size_t longest = 0;
	uint64_t longest_at = 0;
	for (uint64_t n = 1; n <= steps + 1; n++) {
		for (int t = 0; t < 3; t++) {
			d = keel_faultdisk_new();
			keel_faultdisk_crash_at(d, n);
			struct run r = {0};
			workload(d, buffered, seed, &r);
			size_t ul = keel_faultdisk_unsynced_len(d);
			if (t == 0 && ul > longest) {
				longest = ul;
				longest_at = n;
			}
			uint64_t torn = t == 0 ? 0 : t == 1 ? ul : (ul ? walt_rand(&s) % ul : 0);
			keel_faultdisk_reboot(d, torn);
			char what[64];
			snprintf(what, sizeof(what), "crash at step %lu torn %lu", (unsigned long)n,
				 (unsigned long)torn);
			check_recovery(d, buffered, &r, what);
			keel_faultdisk_free(d);
			if (!ul)
				break; /* torn makes no difference */
		}
	}
	/* the longest unsynced write: crash with every prefix of it on disk */
	cr_assert_gt(longest, 0);
	for (uint64_t torn = 0; torn <= longest; torn++) {
		d = keel_faultdisk_new();
		keel_faultdisk_crash_at(d, longest_at);
		struct run r = {0};
		workload(d, buffered, seed, &r);
		keel_faultdisk_reboot(d, torn);
		char what[64];
		snprintf(what, sizeof(what), "crash at step %lu torn %lu", (unsigned long)longest_at,
			 (unsigned long)torn);
		check_recovery(d, buffered, &r, what);
		keel_faultdisk_free(d);
	}
}

Test(wal_crash, every_step_and_byte_direct)
{
	sweep(false, 1);
}

Test(wal_crash, every_step_and_byte_buffered)
{
	sweep(true, 2);
}

/* ---- truncation and compaction, crashed at every step ------------------ */

struct trun {
	uint8_t allowed[128]; /* bit g: generation g was written at index i */
	int8_t required[128]; /* generation that must be there, -1: none */
	uint64_t compact_lo;
};

struct tcall {
	struct trun *t;
	uint64_t first, last;
	int gen;
};

static void t_done(void *arg, uint64_t last, int status)
{
	struct tcall *c = arg;
	if (status == 0)
		for (uint64_t i = c->first; i <= c->last; i++)
			c->t->required[i] = (int8_t)c->gen;
	free(c);
}

static void t_append(struct keel_wal *w, struct trun *t, uint64_t from, uint64_t to, int gen)
{
	static uint8_t bufs[3][MAXLEN + 1];
	for (uint64_t i = from; i <= to;) {
		struct keel_wal_entry e[3];
		size_t n = 0;
		uint64_t first = i;
		while (n < 3 && i <= to) {
			e[n] = walt_entry(bufs[n], i, (uint32_t)gen, MAXLEN);
			t->allowed[i] |= (uint8_t)(1u << gen);
			n++;
			i++;
		}
		struct tcall *c = malloc(sizeof(*c));
		*c = (struct tcall){t, first, i - 1, gen};
		if (keel_wal_append(w, e, n, t_done, c)) {
			free(c);
			return;
		}
	}
	keel_wal_flush(w);
}

static void t_truncate(struct keel_wal *w, struct trun *t, uint64_t after)
{
	for (uint64_t i = after + 1; i < 128; i++)
		t->required[i] = -1; /* asked to drop: no longer owed */
	if (keel_wal_truncate(w, after) == 0)
		for (uint64_t i = after + 1; i < 128; i++)
			t->allowed[i] = 0;
}

static void t_workload(struct keel_faultdisk *d, bool buffered, struct trun *t)
{
	memset(t->allowed, 0, sizeof(t->allowed));
	memset(t->required, -1, sizeof(t->required));
	t->compact_lo = 0;
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w;
	struct keel_wal_config c = cfg(buffered);
	char err[KEEL_ERRMSG_LEN];
	if (keel_wal_open(&w, io, &c, err))
		return;
	t_append(w, t, 1, 40, 0);
	t_truncate(w, t, 25);
	t_append(w, t, 26, 45, 1);
	t->compact_lo = 20;
	keel_wal_compact(w, 20);
	t_truncate(w, t, 38);
	t_append(w, t, 39, 60, 2);
	t->compact_lo = 50;
	keel_wal_compact(w, 50);
	t_append(w, t, 61, 70, 3);
	t->compact_lo = 80;
	keel_wal_compact(w, 80); /* past the end: empties the log */
	t_append(w, t, 81, 90, 4);
	keel_wal_close(w);
}

static void t_check(struct keel_faultdisk *d, bool buffered, const struct trun *t, const char *what)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w;
	struct keel_wal_config c = cfg(buffered);
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_wal_open(&w, io, &c, err), 0, "%s: recovery failed: %s", what, err);
	struct walt_log l = {0};
	cr_assert_eq(walt_read(w, &l, MAXLEN), 0, "%s", what);
	cr_assert_eq(l.bad, 0, "%s", what);
	cr_assert_eq(l.gap, 0, "%s", what);
	for (uint64_t i = l.first; l.first && i <= l.last; i++)
		cr_assert(t->allowed[i] & (1u << l.gen[i - l.first]),
			  "%s: index %lu holds generation %u, never written there", what,
			  (unsigned long)i, l.gen[i - l.first]);
	for (uint64_t i = t->compact_lo + 1; i < 128; i++)
		if (t->required[i] >= 0) {
			cr_assert(l.first && l.first <= i && i <= l.last,
				  "%s: acknowledged index %lu lost (log %lu..%lu)", what,
				  (unsigned long)i, (unsigned long)l.first, (unsigned long)l.last);
			cr_assert_eq(l.gen[i - l.first], (uint32_t)t->required[i], "%s: index %lu",
				     what, (unsigned long)i);
		}
	free(l.gen);
	keel_wal_close(w);
}

static void t_sweep(bool buffered)
{
	static struct trun t;
	struct keel_faultdisk *d = keel_faultdisk_new();
	t_workload(d, buffered, &t);
	uint64_t steps = keel_faultdisk_ops(d);
	t_check(d, buffered, &t, "clean run");
	cr_assert(t.required[90] == 4 && t.required[81] == 4);
	keel_faultdisk_free(d);
	for (uint64_t n = 1; n <= steps + 1; n++) {
		for (int full = 0; full < 2; full++) {
			d = keel_faultdisk_new();
			keel_faultdisk_crash_at(d, n);
			t_workload(d, buffered, &t);
			size_t ul = keel_faultdisk_unsynced_len(d);
			keel_faultdisk_reboot(d, full ? ul : 0);
			char what[64];
			snprintf(what, sizeof(what), "truncate/compact crash at step %lu%s",
				 (unsigned long)n, full ? " (last write whole)" : "");
			t_check(d, buffered, &t, what);
			keel_faultdisk_free(d);
			if (!ul)
				break;
		}
	}
}

Test(wal_crash, truncate_and_compact_at_every_step_direct)
{
	t_sweep(false);
}

Test(wal_crash, truncate_and_compact_at_every_step_buffered)
{
	t_sweep(true);
}
