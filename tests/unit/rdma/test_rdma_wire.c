/* The rdma backend's set-up record and slot header (transport/rdma_wire.h):
 * round trips and every refusal. Pure C: runs in every build. */
#include <criterion/criterion.h>
#include <string.h>

#include "transport/rdma_wire.h"

static struct keel_rdma_setup good(void)
{
	struct keel_rdma_setup s = {.kind = KEEL_RDMA_CONNECT, .qpn = 0x1234, .psn = 0xabcdef,
				    .lid = 3, .mtu = 3, .ring_addr = 0x7f0000001000,
				    .ring_rkey = 0x55, .slots = 256, .slot_size = 4096,
				    .max_frame = 1 << 20};
	for (int i = 0; i < 16; i++)
		s.gid[i] = (uint8_t)i;
	return s;
}

Test(rdma_wire, setup_round_trip)
{
	struct keel_rdma_setup s = good(), d;
	uint8_t b[KEEL_RDMA_SETUP_LEN];
	keel_rdma_setup_encode(&s, b);
	cr_assert_eq(keel_rdma_setup_decode(b, sizeof(b), &d, NULL), 0);
	cr_expect_eq(memcmp(&s, &d, sizeof(s)), 0);
	struct keel_rdma_setup r = {.kind = KEEL_RDMA_READY};
	keel_rdma_setup_encode(&r, b);
	cr_expect_eq(keel_rdma_setup_decode(b, sizeof(b), &d, NULL), 0);
	cr_expect_eq(d.kind, KEEL_RDMA_READY);
}

static int mutate_and_decode(int which, char *em)
{
	struct keel_rdma_setup s = good(), d;
	uint8_t b[KEEL_RDMA_SETUP_LEN];
	switch (which) {
	case 0: s.qpn = 0; break;
	case 1: s.qpn = 1u << 24; break;
	case 2: s.psn = 1u << 24; break;
	case 3: s.mtu = 0; break;
	case 4: s.mtu = 6; break;
	case 5: s.slots = 4; break;
	case 6: s.slots = 100; break;
	case 7: s.slots = 1u << 17; break;
	case 8: s.slot_size = 32; break;
	case 9: s.slot_size = 4000; break;
	case 10: s.ring_addr = 0; break;
	case 11: s.ring_addr = UINT64_MAX - 10; break;
	case 12: s.max_frame = 0; break;
	case 13: s.kind = 9; break;
	}
	keel_rdma_setup_encode(&s, b);
	return keel_rdma_setup_decode(b, sizeof(b), &d, em);
}

Test(rdma_wire, setup_refusals)
{
	char em[KEEL_ERRMSG_LEN];
	for (int i = 0; i <= 13; i++) {
		em[0] = 0;
		cr_expect_eq(mutate_and_decode(i, em), KEEL_EPROTO, "case %d", i);
		cr_expect(strstr(em, "rdma set-up record"), "case %d: %s", i, em);
	}
	uint8_t b[KEEL_RDMA_SETUP_LEN];
	struct keel_rdma_setup s = good(), d;
	keel_rdma_setup_encode(&s, b);
	cr_expect_eq(keel_rdma_setup_decode(b, sizeof(b) - 1, &d, em), KEEL_EPROTO);
	b[0] ^= 1;
	cr_expect_eq(keel_rdma_setup_decode(b, sizeof(b), &d, em), KEEL_EPROTO);
	b[0] ^= 1;
	b[4] = 2; /* version */
	cr_expect_eq(keel_rdma_setup_decode(b, sizeof(b), &d, em), KEEL_EPROTO);
	cr_expect(strstr(em, "version"), "%s", em);
}

Test(rdma_wire, slot_header_checks)
{
	uint8_t b[KEEL_RDMA_SLOT_HDR];
	struct keel_rdma_slot_hdr h = {.chunk_len = 240, .total_len = 1000, .type = 7,
				       .flags = KEEL_RDMA_FIRST}, d;
	keel_rdma_slot_hdr_encode(&h, b);
	cr_assert_eq(keel_rdma_slot_hdr_decode(b, 256, 1 << 16, &d, NULL), 0);
	cr_expect_eq(d.chunk_len, 240);
	cr_expect_eq(d.total_len, 1000);
	cr_expect_eq(d.type, 7);
	cr_expect_eq(d.flags, KEEL_RDMA_FIRST);
	char em[KEEL_ERRMSG_LEN];
	/* a chunk larger than the slot's payload */
	cr_expect_eq(keel_rdma_slot_hdr_decode(b, 128, 1 << 16, &d, em), KEEL_EPROTO);
	/* a message above max_frame */
	cr_expect_eq(keel_rdma_slot_hdr_decode(b, 256, 999, &d, em), KEEL_EPROTO);
	/* a single chunk that is not the whole message */
	h.flags = KEEL_RDMA_FIRST | KEEL_RDMA_LAST;
	keel_rdma_slot_hdr_encode(&h, b);
	cr_expect_eq(keel_rdma_slot_hdr_decode(b, 256, 1 << 16, &d, em), KEEL_EPROTO);
	/* a chunk above its message */
	h = (struct keel_rdma_slot_hdr){.chunk_len = 20, .total_len = 10, .flags = KEEL_RDMA_LAST};
	keel_rdma_slot_hdr_encode(&h, b);
	cr_expect_eq(keel_rdma_slot_hdr_decode(b, 256, 1 << 16, &d, em), KEEL_EPROTO);
	/* reserved flag bits and bytes */
	h = (struct keel_rdma_slot_hdr){.chunk_len = 10, .total_len = 10, .flags = 4};
	keel_rdma_slot_hdr_encode(&h, b);
	cr_expect_eq(keel_rdma_slot_hdr_decode(b, 256, 1 << 16, &d, em), KEEL_EPROTO);
	h.flags = KEEL_RDMA_FIRST | KEEL_RDMA_LAST;
	keel_rdma_slot_hdr_encode(&h, b);
	b[13] = 1;
	cr_expect_eq(keel_rdma_slot_hdr_decode(b, 256, 1 << 16, &d, em), KEEL_EPROTO);
	/* an empty message is one empty chunk */
	h = (struct keel_rdma_slot_hdr){.flags = KEEL_RDMA_FIRST | KEEL_RDMA_LAST};
	keel_rdma_slot_hdr_encode(&h, b);
	cr_expect_eq(keel_rdma_slot_hdr_decode(b, 256, 1 << 16, &d, em), 0);
}
