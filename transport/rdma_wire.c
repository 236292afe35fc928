/* The rdma backend's set-up record and slot header (rdma_wire.h). */
#include "transport/rdma_wire.h"

#include <string.h>

void keel_rdma_setup_encode(const struct keel_rdma_setup *s, uint8_t o[KEEL_RDMA_SETUP_LEN])
{
	memset(o, 0, KEEL_RDMA_SETUP_LEN);
	keel_put_le32(o + 0, KEEL_RDMA_WIRE_MAGIC);
	keel_put_le16(o + 4, KEEL_RDMA_WIRE_VERSION);
	keel_put_le16(o + 6, s->kind);
	keel_put_le32(o + 8, s->qpn);
	keel_put_le32(o + 12, s->psn);
	keel_put_le16(o + 16, s->lid);
	o[18] = s->mtu;
	memcpy(o + 20, s->gid, 16);
	keel_put_le64(o + 36, s->ring_addr);
	keel_put_le32(o + 44, s->ring_rkey);
	keel_put_le32(o + 48, s->slots);
	keel_put_le32(o + 52, s->slot_size);
	keel_put_le32(o + 56, s->max_frame);
}

int keel_rdma_setup_decode(const void *buf, size_t len, struct keel_rdma_setup *s, char *em)
{
	const uint8_t *p = buf;
	memset(s, 0, sizeof(*s));
	if (len != KEEL_RDMA_SETUP_LEN)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record of %zu bytes, not %d",
				       len, KEEL_RDMA_SETUP_LEN);
	if (keel_get_le32(p) != KEEL_RDMA_WIRE_MAGIC)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: bad magic");
	if (keel_get_le16(p + 4) != KEEL_RDMA_WIRE_VERSION)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: version %u, not %u",
				       keel_get_le16(p + 4), KEEL_RDMA_WIRE_VERSION);
	s->kind = keel_get_le16(p + 6);
	if (s->kind < KEEL_RDMA_CONNECT || s->kind > KEEL_RDMA_READY)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: unknown kind %u",
				       s->kind);
	if (s->kind == KEEL_RDMA_READY)
		return 0;
	s->qpn = keel_get_le32(p + 8);
	s->psn = keel_get_le32(p + 12);
	s->lid = keel_get_le16(p + 16);
	s->mtu = p[18];
	memcpy(s->gid, p + 20, 16);
	s->ring_addr = keel_get_le64(p + 36);
	s->ring_rkey = keel_get_le32(p + 44);
	s->slots = keel_get_le32(p + 48);
	s->slot_size = keel_get_le32(p + 52);
	s->max_frame = keel_get_le32(p + 56);
	if (s->qpn == 0 || s->qpn > 0xffffff || s->psn > 0xffffff)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: QPN %u / PSN %u out of range",
				       s->qpn, s->psn);
	if (s->mtu < 1 || s->mtu > 5)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: path MTU code %u", s->mtu);
	if (s->slots < KEEL_RDMA_SLOTS_MIN || s->slots > KEEL_RDMA_SLOTS_MAX ||
	    (s->slots & (s->slots - 1)))
		return keel_errmsg_set(em, KEEL_EPROTO,
				       "rdma set-up record: %u slots (a power of two in %u..%u)",
				       s->slots, KEEL_RDMA_SLOTS_MIN, KEEL_RDMA_SLOTS_MAX);
	if (s->slot_size < KEEL_RDMA_SLOT_SIZE_MIN || s->slot_size > KEEL_RDMA_SLOT_SIZE_MAX ||
	    s->slot_size % 64)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: slot size %u",
				       s->slot_size);
	if (s->ring_addr == 0 || s->ring_addr > UINT64_MAX - (uint64_t)s->slots * s->slot_size)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: ring address wraps");
	if (s->max_frame == 0 || s->max_frame > (1u << 30))
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma set-up record: max_frame %u",
				       s->max_frame);
	return 0;
}

void keel_rdma_slot_hdr_encode(const struct keel_rdma_slot_hdr *h, uint8_t o[KEEL_RDMA_SLOT_HDR])
{
	keel_put_le32(o + 0, h->chunk_len);
	keel_put_le32(o + 4, h->total_len);
	keel_put_le16(o + 8, h->type);
	keel_put_le16(o + 10, h->flags);
	keel_put_le32(o + 12, 0);
}

int keel_rdma_slot_hdr_decode(const void *buf, uint32_t slot_size, uint32_t max_frame,
			      struct keel_rdma_slot_hdr *h, char *em)
{
	const uint8_t *p = buf;
	h->chunk_len = keel_get_le32(p + 0);
	h->total_len = keel_get_le32(p + 4);
	h->type = keel_get_le16(p + 8);
	h->flags = keel_get_le16(p + 10);
	if (keel_get_le32(p + 12) != 0 || (h->flags & ~(KEEL_RDMA_FIRST | KEEL_RDMA_LAST)))
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma slot header: reserved bits set");
	if (slot_size < KEEL_RDMA_SLOT_HDR || h->chunk_len > slot_size - KEEL_RDMA_SLOT_HDR)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma slot header: chunk of %u bytes in a %u-byte slot",
				       h->chunk_len, slot_size);
	if (h->total_len > max_frame)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma slot header: message of %u bytes above max_frame %u",
				       h->total_len, max_frame);
	if (h->chunk_len > h->total_len)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma slot header: chunk %u above its message %u",
				       h->chunk_len, h->total_len);
	if ((h->flags & KEEL_RDMA_FIRST) && (h->flags & KEEL_RDMA_LAST) &&
	    h->chunk_len != h->total_len)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma slot header: single chunk %u of %u bytes",
				       h->chunk_len, h->total_len);
	if (h->chunk_len == 0 && h->total_len != 0)
		return keel_errmsg_set(em, KEEL_EPROTO, "rdma slot header: empty chunk");
	return 0;
}
