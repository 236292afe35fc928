/* libFuzzer target: the WAL segment scanner (recovery's decoder). Input is
 * taken raw, and also behind a valid segment header so the fuzzer reaches
 * the record decoder without having to find the header CRC. The scanner
 * must never read outside the buffer, and what it accepts must re-check. */
#include <stdlib.h>
#include <string.h>

#include "keel/wal.h"

static int recheck(void *arg, uint64_t off, const struct keel_wal_entry *e)
{
	const uint8_t *base = arg;
	const uint8_t *p = base + off;
	uint32_t crc;
	memcpy(&crc, p, 4);
	if (keel_crc32c(0, p + 4, KEEL_WAL_REC_HDR - 4 + e->len) != crc)
		abort();
	if (e->data != p + KEEL_WAL_REC_HDR)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keel_wal_scan s;
	int rc = keel_wal_seg_scan(data, size, &s, recheck, (void *)data);
	if (rc != 0 && rc != KEEL_ECORRUPT)
		abort();
	uint8_t *img = malloc(KEEL_WAL_SEG_HDR + size);
	if (!img)
		return 0;
	/* first index: the index field of the first record, so a run of
	 * valid records (the seed corpus) scans as valid */
	uint64_t first = 1;
	if (size >= 16)
		memcpy(&first, data + 8, 8);
	keel_wal_seg_header_encode(img, first ? first : 1);
	memcpy(img + KEEL_WAL_SEG_HDR, data, size);
	rc = keel_wal_seg_scan(img, KEEL_WAL_SEG_HDR + size, &s, recheck, img);
	if (rc != 0 && rc != KEEL_ECORRUPT)
		abort();
	if (rc == 0 && (s.end > KEEL_WAL_SEG_HDR + size || s.end < KEEL_WAL_SEG_HDR))
		abort();
	free(img);
	return 0;
}
