/* Randomized append / truncate / compact / crash / recover cycles on the
 * fault disk, checked against an in-memory model of what the log may hold:
 *  - after a clean reopen: exactly the model;
 *  - after a crash: a contiguous log whose every entry is one that was
 *    written at that index since the last completed truncation, holding
 *    every acknowledged entry above the compaction point. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>

#include "faultdisk.h"
#include "keel/wal.h"
#include "walt.h"

#define MAXLEN 800
#define MAXI 20000
#define NALLOW 8

static void quiet(void)
{
	keel_log_set_level(getenv("WALT_LOG") ? KEEL_LOG_DEBUG : KEEL_LOG_OFF);
}
TestSuite(wal_model, .init = quiet);

struct model {
	uint64_t last;       /* model's last index (0: empty) */
	uint64_t acked;      /* every index in (compact_lo, acked] is durable */
	uint64_t compact_lo; /* entries <= this may be gone */
	uint32_t gen[MAXI];
	uint32_t allow[MAXI][NALLOW];
	uint8_t nallow[MAXI];
	uint32_t next_gen;
};

static struct model M;

static void allow(uint64_t i, uint32_t g)
{
	for (int k = 0; k < M.nallow[i]; k++)
		if (M.allow[i][k] == g)
			return;
	cr_assert_lt(M.nallow[i], NALLOW);
	M.allow[i][M.nallow[i]++] = g;
}

static void on_done(void *arg, uint64_t last, int status)
{
	if (status == 0 && last > M.acked)
		M.acked = last;
}

static struct keel_wal *open_wal(struct keel_faultdisk *d, bool buffered)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w;
	struct keel_wal_config c = {.segment_size = 16384, .max_batch = 5000, .buffered = buffered};
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_wal_open(&w, io, &c, err), 0, "recovery failed: %s", err);
	return w;
}

/* Checks the recovered log and makes the model equal to it. */
static void check_and_reset(struct keel_wal *w, bool exact, uint64_t step)
{
	struct walt_log l = {0};
	cr_assert_eq(walt_read(w, &l, MAXLEN), 0, "step %lu: %s", (unsigned long)step,
		     keel_wal_errmsg(w));
	cr_assert_eq(l.bad, 0, "step %lu", (unsigned long)step);
	cr_assert_eq(l.gap, 0, "step %lu", (unsigned long)step);
	uint64_t last = l.first ? l.last : 0;
	for (uint64_t i = M.compact_lo + 1; i <= M.acked; i++) {
		cr_assert(l.first && i >= l.first && i <= l.last,
			  "step %lu: acknowledged index %lu missing (log %lu..%lu)", (unsigned long)step,
			  (unsigned long)i, (unsigned long)l.first, (unsigned long)l.last);
		cr_assert_eq(l.gen[i - l.first], M.gen[i], "step %lu: index %lu", (unsigned long)step,
			     (unsigned long)i);
	}
	for (uint64_t i = l.first; l.first && i <= l.last; i++) {
		bool ok = false;
		for (int k = 0; k < M.nallow[i]; k++)
			ok |= M.allow[i][k] == l.gen[i - l.first];
		cr_assert(ok, "step %lu: index %lu holds generation %u, never written there",
			  (unsigned long)step, (unsigned long)i, l.gen[i - l.first]);
	}
	if (exact && M.last <= M.compact_lo)
		cr_assert(last == 0 || last == M.last, "step %lu: compacted log ends at %lu",
			  (unsigned long)step, (unsigned long)last);
	else if (exact)
		cr_assert_eq(last, M.last, "step %lu: clean reopen ends at %lu, model %lu",
			     (unsigned long)step, (unsigned long)last, (unsigned long)M.last);
	/* the model becomes what is on disk */
	for (uint64_t i = 0; i < MAXI; i++)
		M.nallow[i] = 0;
	for (uint64_t i = l.first; l.first && i <= l.last; i++) {
		M.gen[i] = l.gen[i - l.first];
		allow(i, M.gen[i]);
	}
	if (!l.first) /* empty: it may still say where it continues */
		last = keel_wal_last_index(w);
	M.last = last;
	M.acked = last;
	M.compact_lo = l.first ? l.first - 1 : last;
	cr_assert_eq(keel_wal_last_index(w), last);
	free(l.gen);
}

static void cycles(uint64_t seed, bool buffered, int steps)
{
	memset(&M, 0, sizeof(M));
	struct keel_faultdisk *d = keel_faultdisk_new();
	struct keel_wal *w = open_wal(d, buffered);
	uint64_t s = seed;
	int crashes = 0, truncs = 0, compacts = 0;
	for (int step = 0; step < steps; step++) {
		unsigned op = (unsigned)(walt_rand(&s) % 100);
		if (getenv("WALT_LOG"))
			keel_debug("step %d op %u last %lu", step, op, (unsigned long)M.last);
		if (keel_faultdisk_is_off(d) || op < 4) {
			/* crash (now, or the power already went) and recover */
			size_t ul = keel_faultdisk_unsynced_len(d);
			uint64_t torn = ul ? walt_rand(&s) % (ul + 1) : 0;
			keel_wal_close(w);
			keel_faultdisk_reboot(d, torn);
			w = open_wal(d, buffered);
			check_and_reset(w, false, (uint64_t)step);
			crashes++;
		} else if (op < 8) {
			/* power fails within the next few operations */
			keel_faultdisk_crash_at(d, 1 + walt_rand(&s) % 12);
		} else if (op < 10) {
			/* the disk fills up within a few writes, for a while */
			keel_faultdisk_fail(d, KEEL_FD_WRITE | KEEL_FD_ALLOC, 1 + walt_rand(&s) % 5,
					    walt_rand(&s) % 2 ? -ENOSPC : -EIO, true);
		} else if (op < 12) {
			keel_faultdisk_clear(d); /* space returns */
		} else if (op < 14) {
			keel_faultdisk_crash_at(d, 0);
			keel_faultdisk_clear(d);
			keel_wal_flush(w);
			/* appends found failed by the flush are not in the log */
			if (keel_wal_last_index(w) < M.last)
				M.last = keel_wal_last_index(w);
			keel_wal_close(w);
			w = open_wal(d, buffered);
			check_and_reset(w, true, (uint64_t)step);
		} else if (op < 18 && M.last > M.compact_lo) {
			uint64_t lo = M.compact_lo;
			uint64_t after = lo + walt_rand(&s) % (M.last - lo + 1);
			/* asked to drop them: even if a crash interrupts, the
			 * entries after `after` are no longer owed */
			int rc = keel_wal_truncate(w, after);
			if (M.acked > after)
				M.acked = after;
			if (rc == 0) {
				truncs++;
				for (uint64_t i = after + 1; i <= M.last; i++)
					M.nallow[i] = 0;
				if (after < M.last)
					M.last = after;
			}
		} else if (op < 22 && M.last > M.compact_lo) {
			uint64_t upto = M.compact_lo + walt_rand(&s) % (M.last - M.compact_lo + 3);
			int rc = keel_wal_compact(w, upto);
			if (upto > M.compact_lo)
				M.compact_lo = upto;
			if (rc == 0) {
				compacts++;
				if (upto >= M.last) {
					/* log emptied: it continues at upto + 1 */
					M.last = upto;
					M.acked = upto;
				}
			}
		} else if (op < 30) {
			keel_wal_poll(w);
		} else {
			uint64_t first = keel_wal_last_index(w) + 1;
			if (first == 1 && M.last)
				first = M.last + 1; /* empty after compaction */
			cr_assert_lt(first + 4, MAXI);
			int n = 1 + (int)(walt_rand(&s) % 3);
			static uint8_t bufs[3][MAXLEN + 1];
			struct keel_wal_entry e[3];
			uint32_t g = ++M.next_gen;
			for (int i = 0; i < n; i++)
				e[i] = walt_entry(bufs[i], first + (uint64_t)i, g, MAXLEN);
			if (keel_wal_append(w, e, (size_t)n, on_done, NULL) == 0) {
				for (int i = 0; i < n; i++) {
					M.gen[first + (uint64_t)i] = g;
					allow(first + (uint64_t)i, g);
				}
				M.last = first + (uint64_t)n - 1;
			}
		}
		/* after a failed append the log goes back to before it */
		if (!keel_faultdisk_is_off(d) && keel_wal_last_index(w) < M.last)
			M.last = keel_wal_last_index(w);
	}
	keel_wal_flush(w);
	keel_wal_close(w);
	keel_faultdisk_reboot(d, 0);
	w = open_wal(d, buffered);
	check_and_reset(w, false, (uint64_t)steps);
	keel_wal_close(w);
	keel_faultdisk_free(d);
	cr_log_info("seed %lu: %d crashes, %d truncations, %d compactions, last index %lu",
		    (unsigned long)seed, crashes, truncs, compacts, (unsigned long)M.last);
	cr_expect_gt(crashes, 0);
	cr_expect_gt(truncs, 0);
	cr_expect_gt(compacts, 0);
}

/* WALT_SEEDS=N runs more seeds */
static uint64_t nseeds(void)
{
	const char *e = getenv("WALT_SEEDS");
	return e ? strtoull(e, NULL, 10) : 6;
}

Test(wal_model, random_cycles_direct)
{
	for (uint64_t seed = 1; seed <= nseeds(); seed++)
		cycles(seed, false, 1500);
}

Test(wal_model, random_cycles_buffered)
{
	for (uint64_t seed = 1000; seed < 1000 + nseeds(); seed++)
		cycles(seed, true, 1500);
}
