/* WAL on-disk format: CRC32C, record and segment header encoding, and the
 * segment scanner that recovery and the fuzzer share. Pure functions: no
 * I/O, no allocation. The format is described in include/keel/wal.h. */
#include <string.h>

#include "keel/wal.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the WAL format is little-endian");

#define SEG_MAGIC "KEELWAL1"
#define SEG_VERSION 1u


/* ---- encoding ------------------------------------------------------------ */


void keel_wal_rec_encode(void *dst, const struct keel_wal_entry *e)
{
	uint8_t *p = dst;
	uint32_t size = keel_wal_rec_size(e->len);
	keel_put_le32(p + 4, e->len);
	keel_put_le64(p + 8, e->index);
	keel_put_le64(p + 16, e->term);
	keel_put_le32(p + 24, e->type);
	keel_put_le32(p + 28, 0);
	if (e->len)
		memcpy(p + KEEL_WAL_REC_HDR, e->data, e->len);
	memset(p + KEEL_WAL_REC_HDR + e->len, 0, size - KEEL_WAL_REC_HDR - e->len);
	keel_put_le32(p, keel_crc32c(0, p + 4, KEEL_WAL_REC_HDR - 4 + e->len));
}

void keel_wal_seg_header_encode(void *dst, uint64_t first_index)
{
	uint8_t *p = dst;
	memset(p, 0, KEEL_WAL_SEG_HDR);
	memcpy(p, SEG_MAGIC, 8);
	keel_put_le32(p + 8, SEG_VERSION);
	keel_put_le32(p + 12, KEEL_WAL_SEG_HDR);
	keel_put_le64(p + 16, first_index);
	keel_put_le32(p + 24, keel_crc32c(0, p, 24));
}

/* ---- scanning ------------------------------------------------------------ */

/* The offset of the first non-zero byte in p[from, len), or len. Recovery
 * reads a whole preallocated segment, most of it zeros after the last
 * record, and must look at all of it (a valid record after the end means
 * mid-log corruption): a byte at a time that took about 0.5 s per 64 MiB
 * segment here, per group, on every restart; eight words at a time it is
 * memory speed. */
static size_t next_nonzero(const uint8_t *p, size_t from, size_t len)
{
	size_t i = from;
	for (; i < len && (i & 7); i++)
		if (p[i])
			return i;
	for (; len - i >= 64; i += 64) {
		uint64_t w[8];
		memcpy(w, p + i, sizeof(w));
		if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
			break;
	}
	for (; len - i >= 8; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w)
			break;
	}
	for (; i < len; i++)
		if (p[i])
			return i;
	return len;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return next_nonzero(p, 0, n) == n;
}

/* A record at off that decodes and checks: what "valid" means. */
static const char *check_record(const uint8_t *b, size_t len, uint64_t off, uint64_t want_index,
				bool any_index)
{
	if (len - off < KEEL_WAL_REC_HDR)
		return "record header cut short";
	const uint8_t *p = b + off;
	uint32_t n = keel_get_le32(p + 4);
	if (n > KEEL_WAL_MAX_RECORD || keel_wal_rec_size(n) > len - off)
		return "record length runs past the end of the segment";
	if (keel_get_le32(p + 28) != 0)
		return "reserved field not zero";
	if (!any_index && keel_get_le64(p + 8) != want_index)
		return "record index out of sequence";
	if (any_index && keel_get_le64(p + 8) == 0)
		return "record index zero";
	if (keel_crc32c(0, p + 4, KEEL_WAL_REC_HDR - 4 + n) != keel_get_le32(p))
		return "CRC mismatch";
	return NULL;
}

int keel_wal_seg_scan(const void *buf, size_t len, struct keel_wal_scan *s,
		      int (*fn)(void *arg, uint64_t off, const struct keel_wal_entry *e), void *arg)
{
	const uint8_t *b = buf;
	memset(s, 0, sizeof(*s));
	if (len < KEEL_WAL_SEG_HDR) {
		s->why = "segment shorter than its header";
		return KEEL_ECORRUPT;
	}
	if (memcmp(b, SEG_MAGIC, 8) != 0 || keel_crc32c(0, b, 24) != keel_get_le32(b + 24)) {
		s->why = "bad segment header (magic or CRC)";
		return KEEL_ECORRUPT;
	}
	if (keel_get_le32(b + 8) != SEG_VERSION || keel_get_le32(b + 12) != KEEL_WAL_SEG_HDR) {
		s->why = "unsupported segment version";
		return KEEL_ECORRUPT;
	}
	s->first_index = keel_get_le64(b + 16);
	if (s->first_index == 0) {
		s->why = "segment first index is zero";
		return KEEL_ECORRUPT;
	}
	uint64_t off = KEEL_WAL_SEG_HDR, next = s->first_index;
	const char *bad = NULL;
	while (len - off >= KEEL_WAL_REC_HDR) {
		if (all_zero(b + off, KEEL_WAL_REC_HDR))
			break; /* end of data, unless something valid follows */
		bad = check_record(b, len, off, next, false);
		if (bad)
			break;
		const uint8_t *p = b + off;
		struct keel_wal_entry e = {
			.index = next,
			.term = keel_get_le64(p + 16),
			.type = keel_get_le32(p + 24),
			.len = keel_get_le32(p + 4),
			.data = p + KEEL_WAL_REC_HDR,
		};
		if (fn) {
			int rc = fn(arg, off, &e);
			if (rc)
				return rc;
		}
		off += keel_wal_rec_size(e.len);
		next++;
	}
	s->end = off;
	s->last_index = next - 1;
	/* Only the last write can be torn, and it is written front to back,
	 * so after the end there must be nothing that checks as a record: a
	 * valid record after a bad one means data in the middle went bad. */
	for (uint64_t q = off + (bad ? 8 : 0); len - q >= KEEL_WAL_REC_HDR; q += 8) {
		/* to the 8-byte step holding the next non-zero byte */
		size_t z = next_nonzero(b, (size_t)q, len);
		if (z == len)
			break;
		q += (z - q) / 8 * 8;
		if (len - q < KEEL_WAL_REC_HDR)
			break;
		if (!check_record(b, len, q, 0, true)) {
			s->bad_off = off;
			s->why = bad ? bad : "zeroed record followed by valid records";
			return KEEL_ECORRUPT;
		}
	}
	if (bad || !all_zero(b + off, len - off)) {
		s->torn = true;
		s->why = bad ? bad : "garbage after the last record";
	}
	return 0;
}
