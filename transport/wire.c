/* The frame codec; the format is described in wire.h. */
#include <string.h>

#include "keel/transport.h"
#include "transport/wire.h"

void keel_wire_encode_hdr(void *out, const struct keel_wire_hdr *h)
{
	uint8_t *p = out;
	p[0] = KEEL_WIRE_MAGIC0;
	p[1] = KEEL_WIRE_MAGIC1;
	p[2] = h->version;
	p[3] = h->kind;
	keel_put_le32(p + 4, h->len);
	keel_put_le16(p + 8, h->type);
	keel_put_le16(p + 10, h->flags);
	keel_put_le32(p + 12, h->seq);
}

int keel_wire_decode_hdr(const void *buf, size_t avail, uint32_t max_payload,
			 struct keel_wire_hdr *h)
{
	const uint8_t *p = buf;
	/* Reject a bad magic as soon as its bytes are there, so garbage from
	 * a confused peer is refused without waiting for 16 bytes. */
	if (avail >= 1 && p[0] != KEEL_WIRE_MAGIC0)
		return KEEL_EPROTO;
	if (avail >= 2 && p[1] != KEEL_WIRE_MAGIC1)
		return KEEL_EPROTO;
	if (avail >= 3 && p[2] != KEEL_TRANSPORT_PROTO_VERSION)
		return KEEL_EPROTO;
	if (avail < KEEL_WIRE_HDR_LEN)
		return 0;
	h->version = p[2];
	h->kind = p[3];
	h->len = keel_get_le32(p + 4);
	h->type = keel_get_le16(p + 8);
	h->flags = keel_get_le16(p + 10);
	h->seq = keel_get_le32(p + 12);
	if (h->kind < KEEL_WIRE_HELLO || h->kind > KEEL_WIRE_KIND_MAX || h->flags != 0)
		return KEEL_EPROTO;
	if (h->kind != KEEL_WIRE_DATA && h->type != 0)
		return KEEL_EPROTO;
	if (h->len > max_payload || h->len > KEEL_TRANSPORT_MAX_FRAME_LIMIT)
		return KEEL_ETOOBIG;
	return KEEL_WIRE_HDR_LEN;
}

int keel_wire_decode(const void *buf, size_t avail, uint32_t max_payload,
		     struct keel_wire_hdr *h, const void **payload)
{
	int rc = keel_wire_decode_hdr(buf, avail, max_payload, h);
	if (rc <= 0)
		return rc;
	/* h->len <= 1 GiB (checked above), so the sum fits in an int. */
	size_t total = (size_t)KEEL_WIRE_HDR_LEN + h->len;
	if (avail < total)
		return 0;
	*payload = (const uint8_t *)buf + KEEL_WIRE_HDR_LEN;
	return (int)total;
}

int keel_wire_encode(void *out, size_t cap, const struct keel_wire_hdr *h,
		     const void *payload)
{
	if (h->len > KEEL_TRANSPORT_MAX_FRAME_LIMIT ||
	    cap < (size_t)KEEL_WIRE_HDR_LEN + h->len)
		return KEEL_ETOOBIG;
	keel_wire_encode_hdr(out, h);
	if (h->len)
		memcpy((uint8_t *)out + KEEL_WIRE_HDR_LEN, payload, h->len);
	return (int)(KEEL_WIRE_HDR_LEN + h->len);
}

const char *keel_wire_refuse_text(uint32_t reason)
{
	switch (reason) {
	case KEEL_REFUSE_ADDR_BUSY:
		return "too many unauthenticated connections from our address (admission limit)";
	case KEEL_REFUSE_FULL:
		return "its pending-handshake table is full (admission limit)";
	case KEEL_REFUSE_EVICTED:
		return "evicted from its pending-handshake table to make room (admission)";
	case KEEL_REFUSE_TIMEOUT:
		return "our handshake took longer than its deadline";
	case KEEL_REFUSE_HELLO:
		return "it refused our HELLO (wrong cluster id, protocol version, or a replayed nonce)";
	case KEEL_REFUSE_NOT_PEER:
		return "our node id is not in its peers table";
	case KEEL_REFUSE_PROOF:
		return "our proof of the cluster secret is wrong (different secret)";
	case KEEL_REFUSE_PROTO:
		return "a handshake protocol error";
	}
	return "unknown reason";
}

int keel_wire_decode_refuse(const void *p, size_t len, uint32_t *reason)
{
	if (len != KEEL_WIRE_REFUSE_LEN)
		return KEEL_EPROTO;
	*reason = keel_get_le32(p);
	return 0;
}

void keel_wire_encode_refuse(void *out, uint32_t seq, uint32_t reason)
{
	struct keel_wire_hdr h = {.version = KEEL_TRANSPORT_PROTO_VERSION,
				  .kind = KEEL_WIRE_REFUSE, .len = KEEL_WIRE_REFUSE_LEN, .seq = seq};
	keel_wire_encode_hdr(out, &h);
	keel_put_le32((uint8_t *)out + KEEL_WIRE_HDR_LEN, reason);
}
