/*
 * libFuzzer target: the rdma backend's two untrusted formats
 * (transport/rdma_wire.h). The set-up record comes from the peer over the
 * control channel (after its handshake, but a peer may be buggy or
 * hostile); the slot header is read from ring memory the peer wrote with
 * RDMA. Input: one byte picks the decoder, then the bytes (for a slot
 * header, 8 bytes of slot size and max_frame first). Whatever decodes must
 * re-encode to the same fields, and satisfy the bounds the receive path
 * relies on.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/rdma_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char em[KEEL_ERRMSG_LEN];
	if (data[0] & 1) {
		struct keel_rdma_setup s, d;
		if (keel_rdma_setup_decode(data + 1, size - 1, &s, em))
			return 0;
		if (s.kind == KEEL_RDMA_READY)
			return 0;
		if (s.slots & (s.slots - 1) || s.slot_size % 64 || !s.qpn || s.qpn > 0xffffff)
			abort();
		uint8_t b[KEEL_RDMA_SETUP_LEN];
		keel_rdma_setup_encode(&s, b);
		if (keel_rdma_setup_decode(b, sizeof(b), &d, em) || memcmp(&s, &d, sizeof(s)))
			abort();
		return 0;
	}
	if (size < 1 + 8 + KEEL_RDMA_SLOT_HDR)
		return 0;
	uint32_t slot_size = keel_get_le32(data + 1), max_frame = keel_get_le32(data + 5);
	struct keel_rdma_slot_hdr h, d;
	if (keel_rdma_slot_hdr_decode(data + 9, slot_size, max_frame, &h, em))
		return 0;
	if (h.chunk_len + (uint64_t)KEEL_RDMA_SLOT_HDR > slot_size || h.total_len > max_frame ||
	    h.chunk_len > h.total_len)
		abort();
	uint8_t b[KEEL_RDMA_SLOT_HDR];
	keel_rdma_slot_hdr_encode(&h, b);
	if (keel_rdma_slot_hdr_decode(b, slot_size, max_frame, &d, em) || memcmp(&h, &d, sizeof(h)))
		abort();
	return 0;
}
