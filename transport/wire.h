/*
 * transport/wire.h — the frame format every byte-stream or datagram backend
 * puts on the wire: a versioned, fixed 16-byte header, then the payload.
 *
 *   off size field
 *    0   2   magic   0x4b 0x4c ("KL")
 *    2   1   version KEEL_TRANSPORT_PROTO_VERSION
 *    3   1   kind    enum keel_wire_kind
 *    4   4   len     payload bytes, little-endian, <= the configured max
 *    8   2   type    message type of the layer above (DATA), 0 otherwise
 *   10   2   flags   must be 0 in version 1 (reserved, rejected if set)
 *   12   4   seq     per-connection, per-direction frame counter from 0;
 *                    a gap or repeat means a bug or tampering: EPROTO
 *
 * All integers little-endian. The codec is pure (no allocation, no I/O) and
 * the decoder reads only the bytes it was given: it is fuzzed
 * (tests/fuzz/fuzz_wire.c).
 */
#ifndef KEEL_TRANSPORT_WIRE_H
#define KEEL_TRANSPORT_WIRE_H

#include "keel/base.h"

#define KEEL_WIRE_HDR_LEN 16
#define KEEL_WIRE_MAGIC0 0x4b
#define KEEL_WIRE_MAGIC1 0x4c

enum keel_wire_kind {
	KEEL_WIRE_HELLO = 1,   /* handshake: client → server */
	KEEL_WIRE_WELCOME = 2, /* handshake: server → client */
	KEEL_WIRE_AUTH = 3,    /* handshake: client → server */
	KEEL_WIRE_DATA = 4,    /* a message of the layer above */
	KEEL_WIRE_REFUSE = 5,  /* handshake: server → client, then it closes */
	KEEL_WIRE_KIND_MAX = 5,
};

/* REFUSE: why a server turns a connection away before authenticating it,
 * so the dialler logs the real cause instead of guessing from a bare close.
 * Payload: the reason as a u32, little-endian (KEEL_WIRE_REFUSE_LEN bytes);
 * an unknown reason is reported as a number. It says nothing a client
 * could not learn by trying: no secret, no peer table. */
#define KEEL_WIRE_REFUSE_LEN 4
enum keel_wire_refuse {
	KEEL_REFUSE_ADDR_BUSY = 1,  /* too many unauthenticated connections from its address */
	KEEL_REFUSE_FULL = 2,       /* the pending-handshake table is full */
	KEEL_REFUSE_EVICTED = 3,    /* made room for a newer connection */
	KEEL_REFUSE_TIMEOUT = 4,    /* the handshake took longer than the deadline */
	KEEL_REFUSE_HELLO = 5,      /* HELLO refused: cluster, version, replay or malformed */
	KEEL_REFUSE_NOT_PEER = 6,   /* its node id is not in the server's peers table */
	KEEL_REFUSE_PROOF = 7,      /* its AUTH did not prove the cluster secret */
	KEEL_REFUSE_PROTO = 8,      /* a frame the handshake does not allow */
};
/* Decodes a REFUSE payload (len bytes at p): 0 and *reason, or KEEL_EPROTO
 * when len is not KEEL_WIRE_REFUSE_LEN. Fuzzed (tests/fuzz/fuzz_wire.c). */
int keel_wire_decode_refuse(const void *p, size_t len, uint32_t *reason);
/* Writes a whole REFUSE frame (KEEL_WIRE_HDR_LEN + KEEL_WIRE_REFUSE_LEN
 * bytes) with sequence number seq into out. */
void keel_wire_encode_refuse(void *out, uint32_t seq, uint32_t reason);
/* Text for a reason; "unknown reason" for any other value. */
const char *keel_wire_refuse_text(uint32_t reason);

struct keel_wire_hdr {
	uint8_t version;
	uint8_t kind;
	uint16_t type;
	uint16_t flags;
	uint32_t len;
	uint32_t seq;
};

/* Writes the 16-byte header for h into out (KEEL_WIRE_HDR_LEN bytes). */
void keel_wire_encode_hdr(void *out, const struct keel_wire_hdr *h);

/* Parses the header at buf (avail bytes, buf may be NULL when avail is 0).
 * Returns 0 when fewer than KEEL_WIRE_HDR_LEN bytes are there (need more),
 * KEEL_WIRE_HDR_LEN when *h is filled and valid, -KEEL_EPROTO for a bad
 * magic, version, kind or flags, -KEEL_ETOOBIG when h->len > max_payload. */
int keel_wire_decode_hdr(const void *buf, size_t avail, uint32_t max_payload,
			 struct keel_wire_hdr *h);

/* Parses one whole frame at buf. Returns its total length (header +
 * payload, > 0) and sets *h and *payload (pointing into buf) when the whole
 * frame is within avail; 0 when more bytes are needed; or a negative code
 * as keel_wire_decode_hdr. Never reads beyond buf[avail). */
int keel_wire_decode(const void *buf, size_t avail, uint32_t max_payload,
		     struct keel_wire_hdr *h, const void **payload);

/* Encodes header + payload into out (cap bytes); returns the frame length
 * or -KEEL_ETOOBIG if it does not fit in cap. */
int keel_wire_encode(void *out, size_t cap, const struct keel_wire_hdr *h,
		     const void *payload);

/* keel_put_le16/32/64 and keel_get_le16/32/64 are in keel/base.h. */

#endif
