/* Media damage after open: a log is written and acknowledged, then one bit
 * of one record flips on the disk while the WAL is open, and the record is
 * read back through every read path: keel_wal_iterate from the start, from
 * the damaged index and from the one after it, and recovery at the next
 * open. No path may hand out the damaged record; reads that do not touch it
 * still work; recovery refuses a damaged record that has records after it
 * (mid-segment in any segment, the newest included) and cuts only the very
 * last record of the log (indistinguishable from a torn write). Every
 * record is damaged once in its header and once in its payload. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "faultdisk.h"
#include "keel/wal.h"
#include "walt.h"

#define MAXLEN 600
#define N 90

static void quiet(void)
{
	keel_log_set_level(KEEL_LOG_OFF);
}
TestSuite(wal_corrupt, .init = quiet);

static struct keel_wal_config cfg(void)
{
	return (struct keel_wal_config){.segment_size = 16384, .max_batch = 4096};
}

static struct keel_wal *open_wal(struct keel_faultdisk *d, int *rc, char *err)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(d, &io), 0);
	struct keel_wal *w = NULL;
	struct keel_wal_config c = cfg();
	*rc = keel_wal_open(&w, io, &c, err);
	return *rc ? NULL : w;
}

/* Where each record is: segment name and offset. */
struct where {
	char seg[32];
	uint64_t off;
	uint32_t len;
	bool last_in_seg;
};
static struct where at[N + 2];
static char last_seg_name[32];

struct scan_ctx {
	const char *name;
};

static int note(void *arg, uint64_t off, const struct keel_wal_entry *e)
{
	struct scan_ctx *c = arg;
	cr_assert_leq(e->index, N);
	snprintf(at[e->index].seg, sizeof(at[e->index].seg), "%s", c->name);
	at[e->index].off = off;
	at[e->index].len = e->len;
	return 0;
}

static void locate(struct keel_faultdisk *d)
{
	static uint8_t img[16384];
	uint64_t first = 1;
	for (;;) {
		char name[32];
		snprintf(name, sizeof(name), "%016lx.seg", (unsigned long)first);
		int64_t n = keel_faultdisk_read(d, name, img, sizeof(img));
		if (n < 0)
			break;
		struct scan_ctx c = {name};
		struct keel_wal_scan s;
		cr_assert_eq(keel_wal_seg_scan(img, (size_t)n, &s, note, &c), 0);
		if (s.last_index < first)
			break;
		at[s.last_index].last_in_seg = true;
		snprintf(last_seg_name, sizeof(last_seg_name), "%s", name);
		first = s.last_index + 1;
	}
	cr_assert_eq(first, N + 1, "records found up to %lu", (unsigned long)first - 1);
}

static void ok_done(void *arg, uint64_t last, int status)
{
	cr_assert_eq(status, 0);
	*(uint64_t *)arg = last;
}

static struct keel_wal *write_log(struct keel_faultdisk *d)
{
	int rc;
	char err[KEEL_ERRMSG_LEN] = "";
	struct keel_wal *w = open_wal(d, &rc, err);
	cr_assert_eq(rc, 0, "%s", err);
	static uint8_t bufs[3][MAXLEN + 1];
	uint64_t acked = 0;
	for (uint64_t i = 1; i <= N;) {
		struct keel_wal_entry e[3];
		size_t n = 0;
		while (n < 3 && i <= N) {
			e[n] = walt_entry(bufs[n], i, 0, MAXLEN);
			n++;
			i++;
		}
		cr_assert_eq(keel_wal_append(w, e, n, ok_done, &acked), 0);
	}
	cr_assert_eq(keel_wal_flush(w), 0);
	cr_assert_eq(acked, N);
	return w;
}

/* What an iteration handed out. */
struct seen {
	uint64_t first, last, count;
	int bad; /* entries whose bytes differ from what was appended */
};

static int see(void *arg, const struct keel_wal_entry *e)
{
	struct seen *s = arg;
	if (!s->count)
		s->first = e->index;
	s->last = e->index;
	s->count++;
	if (walt_check(e, 0, MAXLEN))
		s->bad++;
	return 0;
}

static void damage(uint64_t k, bool header)
{
	static bool located;
	struct keel_faultdisk *d = keel_faultdisk_new();
	struct keel_wal *w = write_log(d); /* the same log every time */
	if (!located) {
		locate(d);
		located = true;
	}
	/* header: the crc, len, index, term, type and reserved fields in
	 * turn; payload: its middle byte (an empty payload: the crc) */
	static const unsigned hdr_byte[] = {1, 4, 9, 17, 24, 30};
	uint64_t byte = header || !at[k].len
				? hdr_byte[k % KEEL_ARRAY_LEN(hdr_byte)]
				: KEEL_WAL_REC_HDR + at[k].len / 2;
	unsigned bit = (unsigned)(k % 8);
	char what[128];
	snprintf(what, sizeof(what), "record %lu (%s offset %lu) byte %lu bit %u", (unsigned long)k,
		 at[k].seg, (unsigned long)at[k].off, (unsigned long)byte, bit);
	cr_assert_eq(keel_faultdisk_flip_bit(d, at[k].seg, at[k].off + byte, bit), 0, "%s", what);

	/* iterate from the start: everything before k, intact, then refused */
	struct seen s = {0};
	cr_assert_eq(keel_wal_iterate(w, 0, see, &s), KEEL_ECORRUPT,
		     "%s: iterate from 0 handed out %lu entries up to %lu", what,
		     (unsigned long)s.count, (unsigned long)s.last);
	cr_assert_eq(s.bad, 0, "%s: a damaged entry was handed out", what);
	cr_assert_eq(s.count, k - 1, "%s: %lu entries before the refusal", what,
		     (unsigned long)s.count);
	cr_assert(strstr(keel_wal_errmsg(w), at[k].seg), "%s: %s", what, keel_wal_errmsg(w));
	/* from the damaged index: nothing */
	memset(&s, 0, sizeof(s));
	cr_assert_eq(keel_wal_iterate(w, k, see, &s), KEEL_ECORRUPT, "%s: from %lu", what,
		     (unsigned long)k);
	cr_assert_eq(s.count, 0, "%s", what);
	/* after it: the rest, intact */
	if (k < N) {
		memset(&s, 0, sizeof(s));
		cr_assert_eq(keel_wal_iterate(w, k + 1, see, &s), 0, "%s: from %lu: %s", what,
			     (unsigned long)k + 1, keel_wal_errmsg(w));
		cr_assert(s.count == N - k && s.first == k + 1 && s.bad == 0, "%s", what);
	}
	keel_wal_close(w);

	/* recovery at the next open */
	int rc;
	char err[KEEL_ERRMSG_LEN] = "";
	w = open_wal(d, &rc, err);
	if (k == N) {
		/* the log's last record: a torn write as far as anyone can
		 * tell; it is cut and the log continues before it */
		cr_assert_eq(rc, 0, "%s: %s", what, err);
		memset(&s, 0, sizeof(s));
		cr_assert_eq(keel_wal_iterate(w, 0, see, &s), 0, "%s", what);
		cr_assert(s.count == N - 1 && s.last == N - 1 && s.bad == 0, "%s", what);
		keel_wal_close(w);
	} else {
		cr_assert_eq(rc, KEEL_ECORRUPT, "%s: open returned %d (%s)", what, rc, err);
		cr_assert_null(w);
		char want[96];
		snprintf(want, sizeof(want), "%s offset %lu", at[k].seg, (unsigned long)at[k].off);
		cr_assert(strstr(err, want), "%s: open said '%s', not '%s'", what, err, want);
	}
	keel_faultdisk_free(d);
}

Test(wal_corrupt, bit_flips_after_open_refused_by_every_read_path)
{
	damage(1, true); /* the first run also finds where the records are */
	cr_assert_gt(strcmp(last_seg_name, "0000000000000001.seg"), 0, "one segment only");
	unsigned in_last_mid = 0;
	for (uint64_t k = 1; k <= N; k++) {
		for (int h = 0; h < 2; h++)
			damage(k, h);
		in_last_mid += !strcmp(at[k].seg, last_seg_name) && k < N;
	}
	/* the newest segment's middle was covered, not only older segments */
	cr_assert_gt(in_last_mid, 3);
}

/* The hard state read back at open after a bit flipped in a slot: damage
 * to the older slot changes nothing; damage to the newer one looks exactly
 * like a torn save of it, so the previous state comes back (never a mix of
 * the two, never garbage); damage to both is refused. */
Test(wal_corrupt, hard_state_bit_flips_read_back_at_open)
{
	const struct keel_wal_hard_state a = {.term = 7, .vote = 2}, b = {.term = 8, .vote = 3};
	for (unsigned slot = 0; slot <= 2; slot++) {
		for (unsigned byte = 0; byte < 36; byte++) {
			char what[64];
			snprintf(what, sizeof(what), "slot %s byte %u",
				 slot == 2 ? "both" : slot ? "1 (older)" : "0 (newer)", byte);
			struct keel_faultdisk *d = keel_faultdisk_new();
			int rc;
			char err[KEEL_ERRMSG_LEN] = "";
			struct keel_wal *w = open_wal(d, &rc, err);
			cr_assert_eq(rc, 0, "%s", err);
			/* seq 1 goes to slot 1, seq 2 to slot 0 */
			cr_assert_eq(keel_wal_save_hard_state(w, &a), 0);
			cr_assert_eq(keel_wal_save_hard_state(w, &b), 0);
			for (unsigned s = 0; s < 2; s++)
				if (slot == 2 || slot == s)
					cr_assert_eq(keel_faultdisk_flip_bit(d, "hardstate",
									     s * 512 + byte, byte % 8),
						     0);
			keel_wal_close(w);
			w = open_wal(d, &rc, err);
			if (slot == 2) {
				cr_assert_eq(rc, KEEL_ECORRUPT, "%s: open returned %d", what, rc);
				cr_assert(strstr(err, "both slots damaged"), "%s: %s", what, err);
			} else {
				cr_assert_eq(rc, 0, "%s: %s", what, err);
				struct keel_wal_hard_state got;
				keel_wal_hard_state(w, &got);
				const struct keel_wal_hard_state *want = slot ? &b : &a;
				cr_assert(got.term == want->term && got.vote == want->vote,
					  "%s: read term %lu vote %lu, expected %lu/%lu", what,
					  (unsigned long)got.term, (unsigned long)got.vote,
					  (unsigned long)want->term, (unsigned long)want->vote);
				keel_wal_close(w);
			}
			keel_faultdisk_free(d);
		}
	}
}
