/* Faults without a crash: ENOSPC at the Nth write or allocation (for a sweep
 * of N), EIO from the Nth fdatasync, short writes. The appends caught by a
 * fault fail, nothing acknowledged is lost, failed data never comes back
 * (not even after a later power cut), and the log continues once the fault
 * clears. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>

#include "faultdisk.h"
#include "keel/wal.h"
#include "walt.h"

#define MAXLEN 900
#define STEPS 40

static void quiet(void)
{
	keel_log_set_level(getenv("WALT_LOG") ? KEEL_LOG_DEBUG : KEEL_LOG_OFF);
}
TestSuite(wal_faults, .init = quiet);

struct model {
	uint32_t gen[4 * STEPS + 8]; /* acknowledged generation per index, 0 = none */
	int failures, oks;
	int last_err;
};

struct call {
	struct model *m;
	uint64_t first, last;
	uint32_t gen;
};

static void on_done(void *arg, uint64_t last, int status)
{
	struct call *c = arg;
	if (status == 0) {
		for (uint64_t i = c->first; i <= c->last; i++)
			c->m->gen[i] = c->gen;
		c->m->oks++;
	} else {
		c->m->failures++;
		c->m->last_err = status;
	}
	free(c);
}

static struct keel_wal *open_wal(struct keel_faultdisk *d)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w;
	struct keel_wal_config c = {.segment_size = 16384, .max_batch = 6000};
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_wal_open(&w, io, &c, err), 0, "%s", err);
	return w;
}

/* Expects the log to be exactly the acknowledged entries. */
static void verify(struct keel_wal *w, const struct model *m, uint64_t last, const char *what)
{
	struct walt_log l = {0};
	cr_assert_eq(walt_read(w, &l, MAXLEN), 0, "%s: %s", what, keel_wal_errmsg(w));
	cr_assert_eq(l.bad, 0, "%s", what);
	cr_assert_eq(l.gap, 0, "%s", what);
	cr_assert_eq(l.first ? l.last : 0, last, "%s: log ends at %lu, expected %lu", what,
		     (unsigned long)l.last, (unsigned long)last);
	for (uint64_t i = 1; i <= last; i++)
		cr_assert_eq(l.gen[i - l.first] + 1, m->gen[i],
			     "%s: index %lu holds generation %u, acknowledged %u", what,
			     (unsigned long)i, l.gen[i - l.first] + 1, m->gen[i]);
	free(l.gen);
}

/* Appends STEPS times; fault() arms the fault before step `at`; the fault
 * is cleared `clear_after` steps after the first failure. */
static void run(unsigned kinds, uint64_t nth, int err, bool sticky, uint32_t short_bytes,
		const char *what)
{
	struct keel_faultdisk *d = keel_faultdisk_new();
	struct keel_wal *w = open_wal(d);
	static struct model m;
	memset(&m, 0, sizeof(m));
	if (short_bytes)
		keel_faultdisk_short_write(d, nth, short_bytes);
	else
		keel_faultdisk_fail(d, kinds, nth, err, sticky);
	int failed_at = -1, rejected = 0;
	for (int step = 0; step < STEPS; step++) {
		if (failed_at >= 0 && step == failed_at + 3)
			keel_faultdisk_clear(d); /* space returns */
		uint64_t first = keel_wal_last_index(w) + 1;
		int n = 1 + step % 3;
		static uint8_t bufs[3][MAXLEN + 1];
		struct keel_wal_entry e[3];
		for (int i = 0; i < n; i++) {
			/* generation step + 1 (term = gen + 1): each attempt is
			 * distinguishable from a retry of the same index */
			e[i] = walt_entry(bufs[i], first + (uint64_t)i, (uint32_t)step + 1, MAXLEN);
		}
		struct call *c = malloc(sizeof(*c));
		*c = (struct call){&m, first, first + (uint64_t)n - 1, (uint32_t)step + 2};
		int rc = keel_wal_append(w, e, (size_t)n, on_done, c);
		if (rc) {
			free(c);
			rejected++;
			cr_assert(rc == err || rc == -EIO, "%s: append returned %s (%s)", what,
				  keel_strerror(rc), keel_wal_errmsg(w));
		}
		if (step % 2)
			keel_wal_poll(w);
		if ((rc || m.failures) && failed_at < 0)
			failed_at = step;
	}
	keel_faultdisk_clear(d);
	keel_wal_flush(w);
	if (short_bytes)
		cr_assert_eq(m.failures + rejected, 0, "%s: a short write is not a failure", what);
	else if (nth <= 20)
		cr_assert_gt(m.failures + rejected, 0, "%s: the fault never hit", what);
	/* it continued: the last appends succeeded */
	uint64_t last = keel_wal_last_index(w);
	cr_assert_eq(keel_wal_durable_index(w), last, "%s", what);
	cr_assert_gt(m.gen[last], 0, "%s: last append not acknowledged", what);
	verify(w, &m, last, what);
	keel_wal_close(w);
	/* reopen, and power-cut: still exactly the acknowledged entries */
	w = open_wal(d);
	verify(w, &m, last, what);
	keel_wal_close(w);
	keel_faultdisk_reboot(d, 0);
	w = open_wal(d);
	verify(w, &m, last, what);
	keel_wal_close(w);
	keel_faultdisk_free(d);
}

Test(wal_faults, enospc_at_nth_write_or_allocation)
{
	for (uint64_t n = 1; n <= 30; n++) {
		char what[64];
		snprintf(what, sizeof(what), "ENOSPC at write/alloc %lu", (unsigned long)n);
		if (getenv("WALT_N") && n != strtoul(getenv("WALT_N"), 0, 10))
			continue;
		run(KEEL_FD_WRITE | KEEL_FD_ALLOC, n, -ENOSPC, true, 0, what);
	}
}

Test(wal_faults, eio_on_nth_fdatasync)
{
	for (uint64_t n = 1; n <= 30; n++) {
		char what[64];
		snprintf(what, sizeof(what), "EIO at sync %lu", (unsigned long)n);
		if (getenv("WALT_N") && n != strtoul(getenv("WALT_N"), 0, 10))
			continue;
		run(KEEL_FD_SYNC, n, -EIO, false, 0, what);
	}
}

Test(wal_faults, eio_on_nth_write_sticky)
{
	for (uint64_t n = 1; n <= 20; n += 3) {
		char what[64];
		snprintf(what, sizeof(what), "EIO at write %lu", (unsigned long)n);
		run(KEEL_FD_WRITE, n, -EIO, true, 0, what);
	}
}

Test(wal_faults, short_writes_complete)
{
	for (uint64_t n = 1; n <= 20; n++) {
		char what[64];
		snprintf(what, sizeof(what), "short write %lu", (unsigned long)n);
		run(0, n, 0, false, (uint32_t)(n * 37 % 200 + 1), what);
	}
}

Test(wal_faults, hard_state_survives_failed_save)
{
	struct keel_faultdisk *d = keel_faultdisk_new();
	struct keel_wal *w = open_wal(d);
	struct keel_wal_hard_state hs = {.term = 5, .vote = 2}, got;
	cr_assert_eq(keel_wal_save_hard_state(w, &hs), 0);
	keel_faultdisk_fail(d, KEEL_FD_SYNC, 1, -EIO, false);
	struct keel_wal_hard_state hs2 = {.term = 6, .vote = 3};
	cr_assert_eq(keel_wal_save_hard_state(w, &hs2), -EIO);
	keel_wal_hard_state(w, &got);
	cr_expect_eq(got.term, 5);
	keel_wal_close(w);
	/* the failed slot write is torn by a crash: the old state remains */
	keel_faultdisk_reboot(d, 0);
	w = open_wal(d);
	keel_wal_hard_state(w, &got);
	cr_expect(got.term == 5 && got.vote == 2);
	cr_assert_eq(keel_wal_save_hard_state(w, &hs2), 0);
	keel_wal_close(w);
	w = open_wal(d);
	keel_wal_hard_state(w, &got);
	cr_expect(got.term == 6 && got.vote == 3);
	keel_wal_close(w);
	keel_faultdisk_free(d);
}
