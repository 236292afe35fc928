/* WAL on-disk format: CRC32C, record and segment header encoding, and the
 * segment scanner that recovery and the fuzzer share. Pure functions: no
 * I/O, no allocation. The format is described in include/keel/wal.h. */
#include <string.h>

#include "keel/wal.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the WAL format is little-endian");

#define SEG_MAGIC "KEELWAL1"
#define SEG_VERSION 1u

/* ---- CRC32C ------------------------------------------------------------ */

static uint32_t crc_table[256];

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t keel_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	static int ready;
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		/* idempotent: racing initialisers write the same values */
		crc_table_init();
		__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	}
	const uint8_t *p = buf;
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf,
							      size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;
	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

uint32_t keel_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__)
	static int have_hw = -1;
	int h = __atomic_load_n(&have_hw, __ATOMIC_RELAXED);
	if (h < 0) {
		h = __builtin_cpu_supports("sse4.2") ? 1 : 0;
		__atomic_store_n(&have_hw, h, __ATOMIC_RELAXED);
	}
	if (h)
		return crc32c_hw(crc, buf, len);
#endif
	return keel_crc32c_sw(crc, buf, len);
}

/* ---- encoding ------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}
static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

void keel_wal_rec_encode(void *dst, const struct keel_wal_entry *e)
{
	uint8_t *p = dst;
	uint32_t size = keel_wal_rec_size(e->len);
	put32(p + 4, e->len);
	put64(p + 8, e->index);
	put64(p + 16, e->term);
	put32(p + 24, e->type);
	put32(p + 28, 0);
	if (e->len)
		memcpy(p + KEEL_WAL_REC_HDR, e->data, e->len);
	memset(p + KEEL_WAL_REC_HDR + e->len, 0, size - KEEL_WAL_REC_HDR - e->len);
	put32(p, keel_crc32c(0, p + 4, KEEL_WAL_REC_HDR - 4 + e->len));
}

void keel_wal_seg_header_encode(void *dst, uint64_t first_index)
{
	uint8_t *p = dst;
	memset(p, 0, KEEL_WAL_SEG_HDR);
	memcpy(p, SEG_MAGIC, 8);
	put32(p + 8, SEG_VERSION);
	put32(p + 12, KEEL_WAL_SEG_HDR);
	put64(p + 16, first_index);
	put32(p + 24, keel_crc32c(0, p, 24));
}

/* ---- scanning ------------------------------------------------------------ */

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* A record at off that decodes and checks: what "valid" means. */
static const char *check_record(const uint8_t *b, size_t len, uint64_t off, uint64_t want_index,
				bool any_index)
{
	if (len - off < KEEL_WAL_REC_HDR)
		return "record header cut short";
	const uint8_t *p = b + off;
	uint32_t n = get32(p + 4);
	if (n > KEEL_WAL_MAX_RECORD || keel_wal_rec_size(n) > len - off)
		return "record length runs past the end of the segment";
	if (get32(p + 28) != 0)
		return "reserved field not zero";
	if (!any_index && get64(p + 8) != want_index)
		return "record index out of sequence";
	if (any_index && get64(p + 8) == 0)
		return "record index zero";
	if (keel_crc32c(0, p + 4, KEEL_WAL_REC_HDR - 4 + n) != get32(p))
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
	if (memcmp(b, SEG_MAGIC, 8) != 0 || keel_crc32c(0, b, 24) != get32(b + 24)) {
		s->why = "bad segment header (magic or CRC)";
		return KEEL_ECORRUPT;
	}
	if (get32(b + 8) != SEG_VERSION || get32(b + 12) != KEEL_WAL_SEG_HDR) {
		s->why = "unsupported segment version";
		return KEEL_ECORRUPT;
	}
	s->first_index = get64(b + 16);
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
			.term = get64(p + 16),
			.type = get32(p + 24),
			.len = get32(p + 4),
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
		if (all_zero(b + q, 8))
			continue;
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
