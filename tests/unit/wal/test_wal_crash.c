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

/* ---- process crash, then power cut ---------------------------------------
 * The process dies at step n: what it wrote stays in the page cache, synced
 * or not. A new process opens the log, and recovery reads those bytes and
 * reports a log (and a hard state) that the layer above acts on at once: a
 * Raft server answers votes and acknowledges appends from it. Then power
 * goes. Everything recovery reported must still be there: it must make
 * what it read durable before open returns, not trust bytes it found only
 * in the page cache. Variant 1 appends and acknowledges one more record
 * after the restart before the power cut, as a server would. */
static void crash_then_power_cut(bool buffered, uint64_t seed)
{
	struct keel_faultdisk *d = keel_faultdisk_new();
	struct run clean = {0};
	workload(d, buffered, seed, &clean);
	uint64_t steps = keel_faultdisk_ops(d);
	keel_faultdisk_free(d);
	for (uint64_t n = 1; n <= steps + 1; n++) {
		for (int variant = 0; variant < 2; variant++) {
			char what[80];
			snprintf(what, sizeof(what), "process crash at step %lu%s, then power cut",
				 (unsigned long)n, variant ? " (one more append)" : "");
			d = keel_faultdisk_new();
			keel_faultdisk_crash_at(d, n);
			struct run r = {0};
			workload(d, buffered, seed, &r);
			keel_faultdisk_restart(d);

			struct keel_wal_io *io;
			cr_assert_eq(keel_faultdisk_io(d, &io), 0);
			struct keel_wal *w;
			struct keel_wal_config c = cfg(buffered);
			char err[KEEL_ERRMSG_LEN] = "";
			cr_assert_eq(keel_wal_open(&w, io, &c, err), 0, "%s: restart: %s", what, err);
			struct walt_log l = {0};
			cr_assert_eq(walt_read(w, &l, MAXLEN), 0, "%s", what);
			cr_assert_eq(l.bad, 0, "%s", what);
			uint64_t last = l.first ? l.last : 0;
			cr_assert_geq(last, r.acked, "%s: the restart lost acknowledged records", what);
			cr_assert_eq(keel_wal_durable_index(w), last, "%s", what);
			struct keel_wal_hard_state hs;
			keel_wal_hard_state(w, &hs);
			struct run after = {.acked = last, .appended = r.appended,
					    .hs_acked = hs.term, .hs_tried = hs.term};
			if (variant) {
				uint8_t buf[MAXLEN + 1];
				struct keel_wal_entry e = walt_entry(buf, last + 1, 0, MAXLEN);
				cr_assert_eq(keel_wal_append(w, &e, 1, on_done, &after), 0, "%s", what);
				cr_assert_eq(keel_wal_flush(w), 0, "%s", what);
				cr_assert_eq(after.acked, last + 1, "%s", what);
				if (after.appended < last + 1)
					after.appended = last + 1;
			}
			free(l.gen);
			keel_faultdisk_reboot(d, 0); /* power cut: the WAL's backend dies */
			keel_wal_close(w);
			check_recovery(d, buffered, &after, what);
			keel_faultdisk_free(d);
		}
	}
}

Test(wal_crash, process_crash_then_power_cut_direct)
{
	crash_then_power_cut(false, 3);
}

Test(wal_crash, process_crash_then_power_cut_buffered)
{
	crash_then_power_cut(true, 4);
}

Test(wal_crash, every_step_and_byte_direct)
{
	sweep(false, 1);
}

Test(wal_crash, every_step_and_byte_buffered)
{
	sweep(true, 2);
}

/* ---- a hard-state save torn at every length ------------------------------
 * The save writes one 512-byte slot, then fdatasync. Power fails at that
 * fdatasync with the first `torn` bytes of the slot on the disk, for every
 * torn in 0..512, after 0 to 3 earlier saves (so the new state goes to
 * either slot, over an empty one or over an older state): recovery must
 * come back with the previous state or the new one, never anything else
 * (an older state, a mix, a damaged file); torn 0 leaves the previous one
 * and a whole slot the new one. And an acknowledged save survives a power
 * cut right after it. */

static struct keel_wal *hs_open(struct keel_faultdisk *d, const char *what)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w;
	struct keel_wal_config c = cfg(true);
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_wal_open(&w, io, &c, err), 0, "%s: %s", what, err);
	return w;
}

static struct keel_wal_hard_state hs_of(uint64_t i)
{
	return (struct keel_wal_hard_state){.term = 100 + i, .vote = 1 + i % 5};
}

static bool hs_eq(struct keel_wal_hard_state a, struct keel_wal_hard_state b)
{
	return a.term == b.term && a.vote == b.vote;
}

Test(wal_crash, hard_state_save_torn_at_every_length)
{
	for (uint64_t before = 0; before <= 3; before++) {
		for (uint64_t torn = 0; torn <= 512; torn++) {
			char what[80];
			snprintf(what, sizeof(what), "save %lu torn at %lu bytes",
				 (unsigned long)before + 1, (unsigned long)torn);
			struct keel_faultdisk *d = keel_faultdisk_new();
			struct keel_wal *w = hs_open(d, what);
			struct keel_wal_hard_state prev = {0, 0}, next = hs_of(before + 1), got;
			for (uint64_t i = 1; i <= before; i++) {
				prev = hs_of(i);
				cr_assert_eq(keel_wal_save_hard_state(w, &prev), 0, "%s", what);
			}
			/* what was acknowledged survives a power cut */
			keel_faultdisk_reboot(d, 0);
			keel_wal_close(w);
			w = hs_open(d, what);
			keel_wal_hard_state(w, &got);
			cr_assert(hs_eq(got, prev),
				  "%s: an acknowledged save was lost in a power cut (term %lu, saved %lu)",
				  what, (unsigned long)got.term, (unsigned long)prev.term);
			/* the slot write happens, the power fails at its sync */
			keel_faultdisk_crash_at(d, 2);
			cr_assert_neq(keel_wal_save_hard_state(w, &next), 0, "%s", what);
			size_t unsynced = keel_faultdisk_unsynced_len(d);
			keel_faultdisk_reboot(d, torn);
			keel_wal_close(w);
			w = hs_open(d, what);
			keel_wal_hard_state(w, &got);
			cr_assert(hs_eq(got, prev) || hs_eq(got, next),
				  "%s: recovered term %lu vote %lu; previous %lu/%lu, new %lu/%lu", what,
				  (unsigned long)got.term, (unsigned long)got.vote,
				  (unsigned long)prev.term, (unsigned long)prev.vote,
				  (unsigned long)next.term, (unsigned long)next.vote);
			if (torn == 0)
				cr_assert(hs_eq(got, prev), "%s: a save that wrote nothing took effect",
					  what);
			if (torn == 512)
				cr_assert(hs_eq(got, next), "%s: a whole slot on disk was not read",
					  what);
			/* the hard state goes on from there, and survives a power cut */
			struct keel_wal_hard_state after = hs_of(before + 7);
			cr_assert_eq(keel_wal_save_hard_state(w, &after), 0, "%s", what);
			keel_faultdisk_reboot(d, 0);
			keel_wal_close(w);
			w = hs_open(d, what);
			keel_wal_hard_state(w, &got);
			cr_assert(hs_eq(got, after),
				  "%s: an acknowledged save was lost in a power cut (term %lu)", what,
				  (unsigned long)got.term);
			/* and the sweep did tear the slot's write */
			cr_assert_eq(unsynced, 512, "%s: the crash was not at the slot's fdatasync",
				     what);
			keel_wal_close(w);
			keel_faultdisk_free(d);
		}
	}
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

/* The same workload, the process crashing at every step and the power
 * going after the restart: the log the restart found is the log after the
 * power cut, entry for entry. */
static void t_crash_then_power_cut(bool buffered)
{
	static struct trun t;
	struct keel_faultdisk *d = keel_faultdisk_new();
	t_workload(d, buffered, &t);
	uint64_t steps = keel_faultdisk_ops(d);
	keel_faultdisk_free(d);
	for (uint64_t n = 1; n <= steps + 1; n++) {
		char what[80];
		snprintf(what, sizeof(what), "truncate/compact: process crash at step %lu",
			 (unsigned long)n);
		d = keel_faultdisk_new();
		keel_faultdisk_crash_at(d, n);
		t_workload(d, buffered, &t);
		keel_faultdisk_restart(d);
		t_check(d, buffered, &t, what);
		struct keel_wal_io *io;
		cr_assert_eq(keel_faultdisk_io(d, &io), 0);
		struct keel_wal *w;
		struct keel_wal_config c = cfg(buffered);
		char err[KEEL_ERRMSG_LEN] = "";
		cr_assert_eq(keel_wal_open(&w, io, &c, err), 0, "%s: %s", what, err);
		struct walt_log before = {0}, after = {0};
		cr_assert_eq(walt_read(w, &before, MAXLEN), 0, "%s", what);
		keel_faultdisk_reboot(d, 0);
		keel_wal_close(w);
		cr_assert_eq(keel_faultdisk_io(d, &io), 0);
		cr_assert_eq(keel_wal_open(&w, io, &c, err), 0, "%s: after the power cut: %s", what,
			     err);
		cr_assert_eq(walt_read(w, &after, MAXLEN), 0, "%s", what);
		cr_assert(before.first == after.first && before.last == after.last,
			  "%s: the restart saw entries %lu..%lu, after the power cut %lu..%lu", what,
			  (unsigned long)before.first, (unsigned long)before.last,
			  (unsigned long)after.first, (unsigned long)after.last);
		for (uint64_t i = before.first; before.first && i <= before.last; i++)
			cr_assert_eq(before.gen[i - before.first], after.gen[i - after.first],
				     "%s: index %lu changed generation", what, (unsigned long)i);
		free(before.gen);
		free(after.gen);
		keel_wal_close(w);
		keel_faultdisk_free(d);
	}
}

Test(wal_crash, truncate_and_compact_process_crash_then_power_cut)
{
	t_crash_then_power_cut(false);
}

Test(wal_crash, truncate_and_compact_at_every_step_direct)
{
	t_sweep(false);
}

Test(wal_crash, truncate_and_compact_at_every_step_buffered)
{
	t_sweep(true);
}
