/*
 * transport/dpdk/dpdk_rel.h — the DPDK backend's reliability layer, pure:
 * no I/O, no clock, no DPDK types. It turns a lossy, duplicating,
 * reordering datagram link into the transport's delivery contract (whole,
 * in order, at most once) for one session, i.e. one (peer node, shard) pair,
 * the way eRPC does over UDP:
 *
 *   - every DATA packet carries a 32-bit sequence number; the receiver takes
 *     only the next one in order (go-back-N: no reordering buffer, a hole is
 *     refilled by retransmitting everything after it);
 *   - every packet carries a cumulative ack (the next sequence number the
 *     sender of the ack expects) and a credit (the first sequence number it
 *     will NOT accept yet): acks ride on data; a standalone ACK goes out when
 *     ack_every packets or ack_delay_ns have passed without one, or at once
 *     on a duplicate or out-of-order packet (so the peer fast-retransmits);
 *   - retransmission on timeout (exponential backoff up to rto_max_ns) and
 *     fast retransmission after three duplicate acks;
 *   - credit-based flow control: the sender never has more than `window`
 *     packets unacknowledged, and never sends a sequence number at or past
 *     the peer's credit;
 *   - messages longer than one packet's payload (mss) are cut into
 *     fragments (FIRST/LAST flags, message length and offset in every one)
 *     and reassembled in order;
 *   - small messages are coalesced: the messages queued when the session is
 *     pumped go out several per packet (flag BATCH: the payload is a chain
 *     of records, each a 4-byte record header, type and length, then the
 *     message). A coalesced packet is one sequence number: acknowledged,
 *     retransmitted and delivered as a unit, its messages in order. Nothing
 *     waits for more messages to arrive (no Nagle timer): what is queued at
 *     the pump goes, so a lone message leaves at once;
 *   - each side has a random epoch; a packet from a new epoch of a known
 *     peer means the peer restarted: the session resets (report it broken).
 *
 * Because the module never touches a packet buffer itself, the caller (the
 * DPDK backend, or a unit test's simulated link) owns packets: `emit` builds
 * and sends one and returns an opaque handle the module keeps until the
 * fragment is acknowledged (`release`) or has to be sent again
 * (`retransmit`). Messages queued with keel_drel_send stay owned by the
 * caller until `msg_done` gives them back (all fragments emitted; the
 * retained packets hold their own copies, or the message's own mbuf when
 * the caller sends it zero-copy).
 *
 * Threading: a session belongs to one shard thread; nothing here is shared.
 */
#ifndef KEEL_TRANSPORT_DPDK_REL_H
#define KEEL_TRANSPORT_DPDK_REL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- packet header (inside the UDP payload), little-endian ------------ */

#define KEEL_DREL_MAGIC 0x4b /* 'K' */
/* 2: coalesced packets (KEEL_DREL_F_BATCH). A version-1 peer's packets
 * fail the version check and are dropped. */
#define KEEL_DREL_VERSION 2
#define KEEL_DREL_HDR_LEN 44

enum keel_drel_type {
	KEEL_DREL_DATA = 1, /* a message fragment */
	KEEL_DREL_ACK = 2,  /* ack + credit only, no payload */
};

#define KEEL_DREL_F_FIRST 0x1u /* first fragment of a message */
#define KEEL_DREL_F_LAST 0x2u  /* last fragment of a message */
/* The sender dialled this session (connect); the receiver keys sessions by
 * (node, shard, who dialled), so A->B and B->A are two connections. */
#define KEEL_DREL_F_INIT 0x8u
/* A coalesced packet (DATA): FIRST and LAST set, offset 0, msg_len equal to
 * len, msg_type the number of records (1..); the payload is exactly that
 * many records: u16 type, u16 length (little-endian), then the bytes. */
#define KEEL_DREL_F_BATCH 0x10u
#define KEEL_DREL_REC_LEN 4
/* Records per coalesced packet at most (bounds the sender's gather). */
#define KEEL_DREL_BATCH_MAX 128

struct keel_drel_msg;

struct keel_drel_hdr {
	uint8_t type;       /* enum keel_drel_type */
	uint8_t flags;      /* KEEL_DREL_F_* (DATA only) */
	uint16_t src_shard; /* sender's shard */
	uint16_t dst_shard; /* receiver's shard (also chosen by UDP port) */
	uint16_t len;       /* payload bytes following the header */
	uint16_t msg_type;  /* DATA: the layer above's message type; BATCH:
			       the number of records */
	uint32_t src_node;  /* sender's node id */
	uint32_t epoch;     /* sender's epoch (random per process start) */
	uint32_t dst_epoch; /* receiver's epoch as the sender knows it; 0 unknown */
	uint32_t seq;       /* DATA: this packet's sequence number */
	uint32_t ack;       /* next sequence number the sender expects */
	uint32_t credit;    /* the receiver of this packet may send seq < credit */
	uint32_t msg_len;   /* DATA: whole message length */
	uint32_t offset;    /* DATA: this fragment's offset in the message */
};

/* Writes KEEL_DREL_HDR_LEN bytes at p. */
void keel_drel_hdr_encode(uint8_t *p, const struct keel_drel_hdr *h);

/* Parses and validates a header from the n bytes at p (the UDP payload).
 * Checks magic, version, type, flags, that the payload fits in n, and that
 * the fragment lies inside a message of at most max_msg bytes. Never reads
 * past p + n. Returns 0, or KEEL_EPROTO / KEEL_ETOOBIG with the reason in
 * errmsg (may be NULL). The records of a coalesced packet are checked by
 * keel_drel_batch_check (keel_drel_input does, and resets the session when
 * they are malformed: the packet passed the checksum, so the peer is
 * broken or hostile). */
int keel_drel_hdr_decode(struct keel_drel_hdr *h, const uint8_t *p, size_t n,
			 uint32_t max_msg, char *errmsg);

/* Checks that the len bytes at p are exactly `count` well-formed records
 * (lengths inside the payload, nothing left over). Never reads past p + len.
 * Returns 0 or KEEL_EPROTO with the reason in errmsg (may be NULL). */
int keel_drel_batch_check(const uint8_t *p, uint32_t len, uint32_t count, char *errmsg);

/* Writes one record header (type, length) at p. */
static inline void keel_drel_rec_put(uint8_t *p, uint16_t type, uint16_t len)
{
	p[0] = (uint8_t)type;
	p[1] = (uint8_t)(type >> 8);
	p[2] = (uint8_t)len;
	p[3] = (uint8_t)(len >> 8);
}

/* Writes the n messages as records at dst (the coalesced packet's payload:
 * h->len bytes as emit_batch's header says). Returns the bytes written. */
uint32_t keel_drel_batch_write(uint8_t *dst, struct keel_drel_msg *const *msgs, uint32_t n);

/* The type of the first message a DATA packet carries (a coalesced packet's
 * first record). h and payload must have passed keel_drel_hdr_decode. */
uint16_t keel_drel_first_type(const struct keel_drel_hdr *h, const uint8_t *payload);

/* ---- one session --------------------------------------------------------- */

struct keel_drel_cfg {
	uint32_t window;       /* packets in flight per session; power of two */
	uint32_t rx_window;    /* credit advertised beyond the next expected seq */
	uint32_t mss;          /* payload bytes per packet (after this header) */
	uint32_t max_msg;      /* largest message accepted (reassembly bound) */
	uint32_t ack_every;    /* standalone ack after this many unacked packets */
	uint64_t ack_delay_ns; /* ... or this long after the first one */
	uint64_t rto_ns;       /* first retransmission timeout */
	uint64_t rto_max_ns;   /* backoff cap */
	uint32_t queue_msgs;   /* messages queued before send says KEEL_EFULL */
	uint32_t max_timeouts; /* timeouts in a row before the peer is dead */
	uint64_t queue_bytes;  /* bytes queued before send says KEEL_EFULL */
};

/* Defaults for a 1500-byte MTU Ethernet + IPv4 + UDP link. */
void keel_drel_cfg_default(struct keel_drel_cfg *cfg);

/* A message queued for sending; the caller embeds it or points at it and
 * keeps it alive until msg_done. `data` may be NULL when the caller's emit
 * knows where the bytes are (zero-copy send from an mbuf). */
struct keel_drel_msg {
	const uint8_t *data;
	uint32_t len;
	uint16_t type;
	void *user;
};

struct keel_drel_io {
	void *ctx;
	/* Build a DATA packet with header h (fully filled: encode it) and the
	 * payload m->data[h->offset, h->offset + h->len), and put it on the
	 * wire. Return a handle the module keeps until release, or NULL when
	 * nothing can be sent now (the module retries on the next pump). */
	void *(*emit)(void *ctx, const struct keel_drel_hdr *h,
		      struct keel_drel_msg *m);
	/* Build a coalesced DATA packet with header h (flags include BATCH,
	 * h->len the payload bytes) whose payload is the n messages as records
	 * (keel_drel_batch_write), and put it on the wire; like emit. NULL
	 * here: the session never coalesces (one packet per message). */
	void *(*emit_batch)(void *ctx, const struct keel_drel_hdr *h,
			    struct keel_drel_msg *const *msgs, uint32_t n);
	/* Send a kept packet again. Return 0, or <0 when the wire is full now
	 * (the rest waits for the next timeout). */
	int (*retransmit)(void *ctx, void *pkt);
	/* The packet was acknowledged (or the session reset): free it. */
	void (*release)(void *ctx, void *pkt);
	/* Every fragment of m was emitted; the caller may reuse m. */
	void (*msg_done)(void *ctx, struct keel_drel_msg *m);
	/* A whole message arrived, in order. data is valid only during the
	 * call. `pkt_view` is true when data points into the received packet
	 * itself (no copy was made). */
	void (*deliver)(void *ctx, uint16_t type, const uint8_t *data,
			uint32_t len, bool pkt_view);
	/* Send a standalone ACK with header h (type ACK, fully filled).
	 * Return 0, or <0 if it could not be sent (retried later). */
	int (*send_ack)(void *ctx, const struct keel_drel_hdr *h);
};

struct keel_drel_stats {
	uint64_t data_sent, data_recv, acks_sent, acks_recv;
	uint64_t retransmits, timeouts, fast_retransmits;
	uint64_t dups, out_of_order, stale, proto_errors, resets;
	uint64_t msgs_sent, msgs_delivered;
	uint64_t batches_sent; /* coalesced packets (each also in data_sent) */
};

struct keel_drel {
	struct keel_drel_cfg cfg;
	struct keel_drel_io io;
	uint32_t my_node, peer_node;
	uint16_t my_shard, peer_shard;
	uint8_t hdr_flags; /* KEEL_DREL_F_INIT on a session we dialled */
	uint32_t my_epoch, peer_epoch; /* peer_epoch 0: not heard from yet */
	uint32_t prev_peer_epoch;      /* the peer's run before its restart */

	/* tx: [una, next) in flight, kept in inflight[seq & mask] */
	uint32_t tx_next, tx_una, tx_credit, mask;
	void **inflight;
	uint64_t rt_deadline; /* 0 when nothing is in flight */
	uint64_t rto_cur;
	uint32_t dupacks;
	uint32_t timeouts_in_row;
	bool rec_active;   /* resending in bursts after a timeout */
	uint32_t rec_next; /* next seq that recovery resends */
	uint32_t fr_block; /* no fast retransmit until una passes this */
	bool fr_armed;

	/* tx message queue: ring of pointers, head is being fragmented */
	struct keel_drel_msg **q;
	uint32_t q_cap, q_head, q_count;
	uint64_t q_bytes;
	uint32_t q_off; /* bytes of the head message already emitted */
	bool q_was_full; /* send said KEEL_EFULL since the last drain */

	/* rx */
	uint32_t rx_next;      /* next expected seq */
	uint32_t rx_unacked;   /* accepted since we last sent an ack */
	uint64_t ack_deadline; /* 0: no ack owed */
	bool ack_now;          /* a dup/out-of-order packet asks for one now */
	bool ack_hole;         /* ... and it was past a hole (a "dupack") */

	/* reassembly of the current multi-fragment message */
	uint8_t *ra_buf;
	uint32_t ra_cap, ra_len, ra_got;
	uint16_t ra_type;
	bool ra_active;

	struct keel_drel_stats st;
	char errmsg[KEEL_ERRMSG_LEN];
};

/* Initializes s for the (peer_node, peer_shard) session of (my_node,
 * my_shard); my_epoch must be non-zero. Returns 0 or -ENOMEM / KEEL_ECONFIG. */
int keel_drel_init(struct keel_drel *s, const struct keel_drel_cfg *cfg,
		   const struct keel_drel_io *io, uint32_t my_node,
		   uint16_t my_shard, uint32_t peer_node, uint16_t peer_shard,
		   uint32_t my_epoch);
/* Releases every kept packet (io.release), hands back every queued message
 * (io.msg_done) and frees the session's memory. */
void keel_drel_fini(struct keel_drel *s);

/* Starts a new session with the same peer: everything in flight is
 * released, queued messages handed back, sequence numbers restart at 0. */
void keel_drel_reset(struct keel_drel *s);

/* Queues m for sending (the caller owns m until msg_done). Returns 0,
 * KEEL_ETOOBIG (m->len > max_msg), or KEEL_EFULL when the queue is full:
 * keel_drel_writable() says when to try again. Sends nothing by itself:
 * call keel_drel_pump (the backend does, once per poll). */
int keel_drel_send(struct keel_drel *s, struct keel_drel_msg *m);
/* True once a send that said KEEL_EFULL can succeed again (the queue has
 * drained below half); clears the flag. */
bool keel_drel_writable(struct keel_drel *s);

/* Emits as many queued fragments as window and credit allow, coalescing
 * consecutive small messages (when io.emit_batch is set). Returns the
 * number of packets emitted. */
int keel_drel_pump(struct keel_drel *s, uint64_t now_ns);

/* Handles one received packet whose header decoded into h and whose
 * payload is the h->len bytes at payload. Returns
 *   0                 accepted (data delivered or buffered, or ack taken),
 *   1                 dropped harmlessly (duplicate, out of order, stale),
 *   KEEL_ECLOSED      the peer restarted (new epoch): the session was reset
 *                     and this packet then taken as the new session's; the
 *                     caller reports the old connection broken,
 *   KEEL_EPROTO       the packet contradicts the session (bad ack,
 *                     fragment out of place): the session was reset; the
 *                     caller reports it broken. */
int keel_drel_input(struct keel_drel *s, const struct keel_drel_hdr *h,
		    const uint8_t *payload, uint64_t now_ns);

/* Timers: retransmission on timeout and the delayed standalone ack. Call
 * once per poll (it is cheap when nothing is due). Returns 0, or
 * KEEL_ETIMEOUT when max_timeouts retransmissions in a row went
 * unanswered: the peer is gone (the caller reports the connection broken). */
int keel_drel_tick(struct keel_drel *s, uint64_t now_ns);

/* Fills a header with this session's addressing, ack and credit (type and
 * the DATA fields left to the caller). */
void keel_drel_hdr_fill(const struct keel_drel *s, struct keel_drel_hdr *h);

/* Packets in flight / messages queued (for tests and stats). */
static inline uint32_t keel_drel_inflight(const struct keel_drel *s)
{
	return s->tx_next - s->tx_una;
}
static inline bool keel_drel_idle(const struct keel_drel *s)
{
	return s->tx_next == s->tx_una && s->q_count == 0;
}
/* True when what is queued fills at least one packet: worth pumping now
 * rather than at the end of the poll. */
static inline bool keel_drel_packet_ready(const struct keel_drel *s)
{
	return s->q_bytes - s->q_off + (uint64_t)s->q_count * KEEL_DREL_REC_LEN >= s->cfg.mss;
}

#ifdef __cplusplus
}
#endif
#endif /* KEEL_TRANSPORT_DPDK_REL_H */
