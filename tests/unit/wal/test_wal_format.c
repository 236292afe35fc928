/* WAL format: CRC32C and the segment scanner's torn-tail / corruption call. */
#include <criterion/criterion.h>
#include <string.h>

#include "keel/wal.h"
#include "walt.h"

Test(wal_format, crc32c_known_vectors_and_hw_matches_sw)
{
	cr_expect_eq(keel_crc32c(0, "123456789", 9), 0xE3069283u);
	cr_expect_eq(keel_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	uint8_t zeros[32] = {0};
	cr_expect_eq(keel_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
	uint8_t buf[1000];
	uint64_t s = 1;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)walt_rand(&s);
	for (size_t off = 0; off < 9; off++)
		for (size_t len = 0; len < 300; len += 7)
			cr_assert_eq(keel_crc32c(0, buf + off, len), keel_crc32c_sw(0, buf + off, len));
	/* chaining equals one pass */
	cr_expect_eq(keel_crc32c(keel_crc32c(0, buf, 100), buf + 100, 900), keel_crc32c(0, buf, 1000));
}

/* A segment image of n records starting at first; returns its data end. */
static size_t build(uint8_t *img, size_t size, uint64_t first, int n, uint32_t *offs)
{
	memset(img, 0, size);
	keel_wal_seg_header_encode(img, first);
	size_t off = KEEL_WAL_SEG_HDR;
	uint8_t pay[600];
	for (int i = 0; i < n; i++) {
		struct keel_wal_entry e = walt_entry(pay, first + (uint64_t)i, 0, 500);
		keel_wal_rec_encode(img + off, &e);
		if (offs)
			offs[i] = (uint32_t)off;
		off += keel_wal_rec_size(e.len);
	}
	return off;
}

static int count(void *arg, uint64_t off, const struct keel_wal_entry *e)
{
	(*(int *)arg)++;
	return walt_check(e, 0, 500);
}

Test(wal_format, scan_clean_segment)
{
	static uint8_t img[64 * 1024];
	size_t end = build(img, sizeof(img), 7, 40, NULL);
	struct keel_wal_scan s;
	int n = 0;
	cr_assert_eq(keel_wal_seg_scan(img, sizeof(img), &s, count, &n), 0);
	cr_expect_eq(n, 40);
	cr_expect_eq(s.first_index, 7);
	cr_expect_eq(s.last_index, 46);
	cr_expect_eq(s.end, end);
	cr_expect(!s.torn);
}

Test(wal_format, scan_torn_last_record_is_cut)
{
	static uint8_t img[64 * 1024];
	uint32_t offs[40];
	size_t end = build(img, sizeof(img), 1, 40, offs);
	/* lose the second half of the last record: a prefix-torn write */
	memset(img + offs[39] + (end - offs[39]) / 2, 0, (end - offs[39]) / 2 + 8);
	struct keel_wal_scan s;
	cr_assert_eq(keel_wal_seg_scan(img, sizeof(img), &s, NULL, NULL), 0);
	cr_expect(s.torn);
	cr_expect_eq(s.last_index, 39);
	cr_expect_eq(s.end, offs[39]);
}

Test(wal_format, scan_flipped_bit_mid_segment_is_corruption)
{
	static uint8_t img[64 * 1024];
	uint32_t offs[40];
	build(img, sizeof(img), 1, 40, offs);
	img[offs[10] + 40] ^= 4;
	struct keel_wal_scan s;
	cr_assert_eq(keel_wal_seg_scan(img, sizeof(img), &s, NULL, NULL), KEEL_ECORRUPT);
	cr_expect_eq(s.bad_off, offs[10]);
	cr_expect_str_eq(s.why, "CRC mismatch");
	/* a zeroed record with valid ones after it is corruption too */
	build(img, sizeof(img), 1, 40, offs);
	memset(img + offs[5], 0, KEEL_WAL_REC_HDR);
	cr_assert_eq(keel_wal_seg_scan(img, sizeof(img), &s, NULL, NULL), KEEL_ECORRUPT);
	cr_expect_eq(s.bad_off, offs[5]);
}

/* The tail after the last record is read in words, not bytes: a record, or
 * one stray byte, far into a long run of zeros, at every alignment, is
 * still found (mid-log corruption, or garbage after the end). */
Test(wal_format, scan_finds_what_lies_far_in_the_zero_tail)
{
	static uint8_t img[1 << 20], rec[1024];
	uint8_t pay[600];
	struct keel_wal_entry e = walt_entry(pay, 77, 0, 500);
	keel_wal_rec_encode(rec, &e);
	size_t rl = keel_wal_rec_size(e.len);
	struct keel_wal_scan s;
	size_t end = build(img, sizeof(img), 1, 3, NULL);
	cr_assert_eq(keel_wal_seg_scan(img, sizeof(img), &s, NULL, NULL), 0);
	cr_expect(!s.torn);
	cr_expect_eq(s.end, end);
	for (size_t at = 700000; at < 700000 + 72; at += 8) {
		build(img, sizeof(img), 1, 3, NULL);
		memcpy(img + at, rec, rl);
		cr_expect_eq(keel_wal_seg_scan(img, sizeof(img), &s, NULL, NULL), KEEL_ECORRUPT,
			     "a valid record at offset %zu after the end", at);
		cr_expect_eq(s.bad_off, end);
	}
	for (size_t at = sizeof(img) - 70; at < sizeof(img); at += 3) {
		build(img, sizeof(img), 1, 3, NULL);
		img[at] = 0x5a;
		cr_assert_eq(keel_wal_seg_scan(img, sizeof(img), &s, NULL, NULL), 0);
		cr_expect(s.torn, "a stray byte at offset %zu after the end", at);
		cr_expect_eq(s.end, end);
	}
}

Test(wal_format, scan_bad_header_and_short_buffers)
{
	static uint8_t img[16 * 1024];
	build(img, sizeof(img), 1, 3, NULL);
	struct keel_wal_scan s;
	cr_expect_eq(keel_wal_seg_scan(img, 100, &s, NULL, NULL), KEEL_ECORRUPT);
	img[3] ^= 1;
	cr_expect_eq(keel_wal_seg_scan(img, sizeof(img), &s, NULL, NULL), KEEL_ECORRUPT);
	img[3] ^= 1;
	/* every truncation of the image scans without reading past it */
	for (size_t len = KEEL_WAL_SEG_HDR; len < 6000; len += 13) {
		int rc = keel_wal_seg_scan(img, len, &s, NULL, NULL);
		cr_assert(rc == 0 || rc == KEEL_ECORRUPT);
	}
}
