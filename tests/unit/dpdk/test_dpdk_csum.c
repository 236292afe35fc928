/*
 * Unit tests of transport/dpdk/dpdk_csum.h: the eight-bytes-at-a-time
 * Internet checksum must equal the plain RFC 1071 two-byte sum for every
 * length and alignment, and a packet checksummed with it must verify.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "transport/dpdk/dpdk_csum.h"

/* The reference: 16-bit native words, odd byte zero-padded, 32-bit
 * accumulator folded (what rte_raw_cksum does). */
static uint16_t ref_csum(const uint8_t *p, size_t len, uint32_t s)
{
	size_t i = 0;
	for (; i + 1 < len; i += 2) {
		uint16_t v;
		memcpy(&v, p + i, 2);
		s += v;
	}
	if (len & 1) {
		uint16_t left = 0;
		memcpy(&left, p + i, 1);
		s += left;
	}
	s = (s >> 16) + (s & 0xffff);
	s = (s >> 16) + (s & 0xffff);
	return (uint16_t)s;
}

Test(dpdk_csum, equals_the_two_byte_reference_for_every_length_and_alignment)
{
	uint8_t buf[2100];
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	for (size_t off = 0; off < 8; off++)
		for (size_t len = 0; len <= 2048; len += (len < 80 ? 1 : 37)) {
			uint16_t want = ref_csum(buf + off, len, 0x1234);
			uint16_t got = keel_dpdk_csum_fold(keel_dpdk_csum_add(buf + off, len, 0x1234));
			cr_assert_eq(got, want, "offset %zu length %zu: %#x, want %#x", off, len, got,
				     want);
		}
	/* all ones: the carries wrap around many times */
	memset(buf, 0xff, sizeof(buf));
	cr_expect_eq(keel_dpdk_csum_fold(keel_dpdk_csum_add(buf, 1501, 0xffff)),
		     ref_csum(buf, 1501, 0xffff));
}

Test(dpdk_csum, a_checksummed_buffer_verifies_and_a_flipped_bit_does_not)
{
	uint8_t pkt[1000];
	for (size_t i = 0; i < sizeof(pkt); i++)
		pkt[i] = (uint8_t)(i * 31 + 7);
	pkt[6] = pkt[7] = 0; /* the checksum field, as in a UDP header */
	uint16_t ck = (uint16_t)~keel_dpdk_csum_fold(keel_dpdk_csum_add(pkt, sizeof(pkt), 0));
	memcpy(pkt + 6, &ck, 2);
	cr_expect_eq(keel_dpdk_csum_fold(keel_dpdk_csum_add(pkt, sizeof(pkt), 0)), 0xffff);
	pkt[500] ^= 0x10;
	cr_expect_neq(keel_dpdk_csum_fold(keel_dpdk_csum_add(pkt, sizeof(pkt), 0)), 0xffff);
}
