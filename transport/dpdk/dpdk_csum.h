/*
 * transport/dpdk/dpdk_csum.h — the Internet checksum (RFC 1071) summed
 * eight bytes at a time, for the DPDK backend's UDP checksums when the PMD
 * does not offload them (memif, af_packet). DPDK's rte_raw_cksum adds two
 * bytes at a time; on a 1500-byte coalesced packet that loop was a third
 * of the receiver's time. The one's-complement sum does not depend on the
 * word size it is added in, as long as carries wrap around (RFC 1071
 * §2(B)), so the folded result is the same as rte_raw_cksum's. Pure
 * functions, no state; tests/unit/dpdk/test_dpdk_csum.c checks them
 * against a two-byte reference.
 */
#ifndef KEEL_TRANSPORT_DPDK_CSUM_H
#define KEEL_TRANSPORT_DPDK_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Adds the len bytes at buf (any alignment) to the one's-complement sum s
 * (native byte order, like rte_raw_cksum; an odd last byte counts as the
 * first byte of a zero-padded 16-bit word). */
static inline uint64_t keel_dpdk_csum_add(const void *buf, size_t len, uint64_t s)
{
	const uint8_t *p = buf;
	while (len >= 32) {
		uint64_t v[4];
		memcpy(v, p, 32);
		for (int i = 0; i < 4; i++) {
			s += v[i];
			s += s < v[i]; /* end-around carry */
		}
		p += 32;
		len -= 32;
	}
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		s += v;
		s += s < v;
		p += 8;
		len -= 8;
	}
	uint64_t tail = 0;
	memcpy(&tail, p, len); /* the rest, zero-padded: same word positions */
	s += tail;
	s += s < tail;
	return s;
}

/* Folds a 64-bit one's-complement sum to 16 bits (not complemented). */
static inline uint16_t keel_dpdk_csum_fold(uint64_t s)
{
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffffu) + (s >> 16);
	s = (s & 0xffffu) + (s >> 16);
	return (uint16_t)s;
}

#endif /* KEEL_TRANSPORT_DPDK_CSUM_H */
