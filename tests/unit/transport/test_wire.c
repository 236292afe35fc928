/* The frame codec: round trips, every truncation of valid frames, every
 * single-bit flip of the header, oversized lengths. The decoder must never
 * read outside the buffer it is given; the buffers here are heap copies of
 * exactly the bytes under test so ASan catches a one-byte overread. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "keel/transport.h"
#include "transport/wire.h"

static uint8_t *frame(uint8_t kind, uint16_t type, uint32_t seq, const void *payload,
		      uint32_t len, size_t *out_len)
{
	struct keel_wire_hdr h = {.version = KEEL_TRANSPORT_PROTO_VERSION, .kind = kind,
				  .type = type, .len = len, .seq = seq};
	size_t n = KEEL_WIRE_HDR_LEN + len;
	uint8_t *buf = malloc(n);
	cr_assert(buf);
	cr_assert_eq(keel_wire_encode(buf, n, &h, payload), (int)n);
	*out_len = n;
	return buf;
}

/* Decodes a heap copy of exactly `len` bytes of buf. */
static int decode_exact(const uint8_t *buf, size_t len, uint32_t max,
			struct keel_wire_hdr *h, const void **payload)
{
	uint8_t *copy = malloc(len ? len : 1);
	cr_assert(copy);
	if (len)
		memcpy(copy, buf, len);
	const void *pl = NULL;
	int rc = keel_wire_decode(len ? copy : NULL, len, max, h, &pl);
	if (rc > 0) {
		/* The payload must lie inside the buffer. */
		cr_assert((const uint8_t *)pl >= copy);
		cr_assert((const uint8_t *)pl + h->len <= copy + len);
		*payload = buf + ((const uint8_t *)pl - copy);
	}
	free(copy);
	return rc;
}

Test(wire, round_trip)
{
	const char msg[] = "hello, shard";
	size_t n;
	uint8_t *f = frame(KEEL_WIRE_DATA, 7, 42, msg, sizeof(msg), &n);
	struct keel_wire_hdr h;
	const void *pl;
	cr_assert_eq(decode_exact(f, n, 1024, &h, &pl), (int)n);
	cr_expect_eq(h.kind, KEEL_WIRE_DATA);
	cr_expect_eq(h.type, 7);
	cr_expect_eq(h.seq, 42);
	cr_expect_eq(h.len, sizeof(msg));
	cr_expect_eq(memcmp(pl, msg, sizeof(msg)), 0);
	free(f);
}

Test(wire, empty_payload_and_layout_is_little_endian)
{
	size_t n;
	uint8_t *f = frame(KEEL_WIRE_DATA, 0x0102, 0x03040506, NULL, 0, &n);
	cr_assert_eq(n, KEEL_WIRE_HDR_LEN);
	const uint8_t want[KEEL_WIRE_HDR_LEN] = {0x4b, 0x4c, 1, KEEL_WIRE_DATA, 0, 0, 0, 0,
						 0x02, 0x01, 0, 0, 0x06, 0x05, 0x04, 0x03};
	cr_expect_eq(memcmp(f, want, n), 0);
	struct keel_wire_hdr h;
	const void *pl;
	cr_expect_eq(decode_exact(f, n, 0, &h, &pl), KEEL_WIRE_HDR_LEN);
	free(f);
}

Test(wire, every_truncation_needs_more)
{
	uint8_t payload[300];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7);
	size_t n;
	uint8_t *f = frame(KEEL_WIRE_DATA, 1, 0, payload, sizeof(payload), &n);
	for (size_t cut = 0; cut < n; cut++) {
		struct keel_wire_hdr h;
		const void *pl;
		cr_assert_eq(decode_exact(f, cut, 1 << 20, &h, &pl), 0, "cut at %zu", cut);
	}
	free(f);
}

Test(wire, two_frames_back_to_back_decode_one_at_a_time)
{
	size_t n1, n2;
	uint8_t *a = frame(KEEL_WIRE_DATA, 1, 0, "abc", 3, &n1);
	uint8_t *b = frame(KEEL_WIRE_DATA, 2, 1, "defgh", 5, &n2);
	uint8_t buf[64];
	memcpy(buf, a, n1);
	memcpy(buf + n1, b, n2);
	struct keel_wire_hdr h;
	const void *pl;
	cr_assert_eq(decode_exact(buf, n1 + n2, 100, &h, &pl), (int)n1);
	cr_expect_eq(h.type, 1);
	cr_assert_eq(decode_exact(buf + n1, n2, 100, &h, &pl), (int)n2);
	cr_expect_eq(h.type, 2);
	cr_expect_eq(memcmp(pl, "defgh", 5), 0);
	free(a);
	free(b);
}

Test(wire, every_header_bit_flip_is_rejected_or_stays_in_bounds)
{
	uint8_t payload[40];
	memset(payload, 0xa5, sizeof(payload));
	size_t n;
	uint8_t *f = frame(KEEL_WIRE_DATA, 3, 9, payload, sizeof(payload), &n);
	int rejected = 0;
	for (size_t bit = 0; bit < n * 8; bit++) {
		uint8_t *g = malloc(n);
		memcpy(g, f, n);
		g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		struct keel_wire_hdr h;
		const void *pl;
		int rc = decode_exact(g, n, 64, &h, &pl);
		cr_assert(rc <= (int)n);
		if (rc < 0) {
			cr_expect(rc == KEEL_EPROTO || rc == KEEL_ETOOBIG);
			rejected++;
		}
		/* magic, version, kind and flags bits are all checked */
		if (bit < 32 || (bit >= 80 && bit < 96))
			cr_expect(rc < 0, "flip of bit %zu accepted", bit);
		free(g);
	}
	cr_expect_geq(rejected, 48);
	free(f);
}

Test(wire, oversized_lengths)
{
	uint8_t hdr[KEEL_WIRE_HDR_LEN];
	struct keel_wire_hdr h = {.version = 1, .kind = KEEL_WIRE_DATA, .len = 1025};
	keel_wire_encode_hdr(hdr, &h);
	struct keel_wire_hdr out;
	const void *pl;
	/* Refused from the header alone: no waiting for a GiB to arrive. */
	cr_expect_eq(decode_exact(hdr, sizeof(hdr), 1024, &out, &pl), KEEL_ETOOBIG);
	h.len = UINT32_MAX;
	keel_wire_encode_hdr(hdr, &h);
	cr_expect_eq(decode_exact(hdr, sizeof(hdr), UINT32_MAX, &out, &pl), KEEL_ETOOBIG);
	h.len = 1024;
	keel_wire_encode_hdr(hdr, &h);
	cr_expect_eq(decode_exact(hdr, sizeof(hdr), 1024, &out, &pl), 0);
	uint8_t small[8];
	cr_expect_eq(keel_wire_encode(small, sizeof(small), &h, NULL), KEEL_ETOOBIG);
}

Test(wire, garbage_is_refused_early)
{
	const uint8_t http[] = "GET / HTTP/1.1\r\n";
	struct keel_wire_hdr h;
	const void *pl;
	cr_expect_eq(decode_exact(http, 1, 100, &h, &pl), KEEL_EPROTO);
	cr_expect_eq(decode_exact(http, sizeof(http) - 1, 100, &h, &pl), KEEL_EPROTO);
	const uint8_t badver[3] = {0x4b, 0x4c, 2};
	cr_expect_eq(decode_exact(badver, 3, 100, &h, &pl), KEEL_EPROTO);
	uint8_t hdr[KEEL_WIRE_HDR_LEN];
	struct keel_wire_hdr bad = {.version = 1, .kind = KEEL_WIRE_HELLO, .type = 5};
	keel_wire_encode_hdr(hdr, &bad);
	cr_expect_eq(decode_exact(hdr, sizeof(hdr), 100, &h, &pl), KEEL_EPROTO);
	bad.kind = 0;
	bad.type = 0;
	keel_wire_encode_hdr(hdr, &bad);
	cr_expect_eq(decode_exact(hdr, sizeof(hdr), 100, &h, &pl), KEEL_EPROTO);
}
