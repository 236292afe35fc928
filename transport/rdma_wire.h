/*
 * transport/rdma_wire.h — the rdma backend's two formats, pure C (no verbs
 * types, built and fuzzed in every build).
 *
 * 1. The set-up record, sent over the authenticated TCP control connection
 *    (after the cluster-secret handshake of transport/handshake.h) as one
 *    message: CONNECT (dialler → listener), ACCEPT (listener → dialler),
 *    READY (dialler → listener, once its QP is in RTS). CONNECT and ACCEPT
 *    carry the sender's QP number, PSN, LID, GID, path MTU and its receive
 *    ring (address, rkey, slot count and size) the peer will RDMA WRITE into.
 *
 * 2. The slot header, the first KEEL_RDMA_SLOT_HDR bytes of each ring slot,
 *    written by the peer together with its chunk of payload in one RDMA
 *    WRITE with immediate (the immediate is the slot's sequence number, or
 *    a credit return). The receiver decodes it from memory the peer wrote:
 *    it is untrusted input, checked against the slot size and max_frame.
 *
 * Little-endian, fixed size. Decoders never read past len and return
 * KEEL_EPROTO with a reason for anything malformed.
 */
#ifndef KEEL_TRANSPORT_RDMA_WIRE_H
#define KEEL_TRANSPORT_RDMA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#define KEEL_RDMA_WIRE_MAGIC 0x4d44524bu /* "KRDM" */
#define KEEL_RDMA_WIRE_VERSION 1
#define KEEL_RDMA_SETUP_LEN 64
#define KEEL_RDMA_SLOT_HDR 16
#define KEEL_RDMA_SLOTS_MIN 8
#define KEEL_RDMA_SLOTS_MAX 65536
#define KEEL_RDMA_SLOT_SIZE_MIN 64
#define KEEL_RDMA_SLOT_SIZE_MAX (1u << 20)
/* Immediate data: bit 31 set = credit return of the low bits' slot count;
 * clear = data in slot (seq mod slots), seq counted mod 2^31. */
#define KEEL_RDMA_IMM_CREDIT 0x80000000u
#define KEEL_RDMA_SEQ_MASK 0x7fffffffu

enum keel_rdma_setup_kind {
	KEEL_RDMA_CONNECT = 1,
	KEEL_RDMA_ACCEPT = 2,
	KEEL_RDMA_READY = 3,
};

struct keel_rdma_setup {
	uint16_t kind;       /* enum keel_rdma_setup_kind */
	uint32_t qpn;        /* 24 bits */
	uint32_t psn;        /* 24 bits */
	uint16_t lid;        /* 0 on RoCE */
	uint8_t mtu;         /* enum ibv_mtu value, 1..5 */
	uint8_t gid[16];
	uint64_t ring_addr;
	uint32_t ring_rkey;
	uint32_t slots;      /* power of two */
	uint32_t slot_size;  /* bytes, header included; multiple of 64 */
	uint32_t max_frame;  /* the sender's largest message */
};

/* Flags of a slot header. */
#define KEEL_RDMA_FIRST 1u /* first chunk of a message */
#define KEEL_RDMA_LAST 2u  /* last chunk */

struct keel_rdma_slot_hdr {
	uint32_t chunk_len;  /* payload bytes in this slot */
	uint32_t total_len;  /* the whole message's length */
	uint16_t type;
	uint16_t flags;
};

void keel_rdma_setup_encode(const struct keel_rdma_setup *s, uint8_t out[KEEL_RDMA_SETUP_LEN]);
/* 0, or KEEL_EPROTO with the reason in errmsg (may be NULL). READY needs
 * only the kind; every other field is checked for CONNECT and ACCEPT. */
int keel_rdma_setup_decode(const void *buf, size_t len, struct keel_rdma_setup *out,
			   char *errmsg);

void keel_rdma_slot_hdr_encode(const struct keel_rdma_slot_hdr *h, uint8_t out[KEEL_RDMA_SLOT_HDR]);
/* Checks chunk_len <= slot_size - header, total_len <= max_frame, a first
 * chunk's flags, and chunk_len == total_len for a single-slot message. */
int keel_rdma_slot_hdr_decode(const void *buf, uint32_t slot_size, uint32_t max_frame,
			      struct keel_rdma_slot_hdr *out, char *errmsg);

#endif
