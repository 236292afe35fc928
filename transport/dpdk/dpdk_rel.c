/* DPDK backend reliability layer: sequence numbers, acks, retransmission,
 * credits, fragmentation. Pure (no I/O, no clock); see dpdk_rel.h. */
#include "transport/dpdk/dpdk_rel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A standalone ACK caused by a duplicate or out-of-order DATA packet: the
 * peer counts these toward fast retransmission (periodic acks don't). */
#define F_DUPACK 0x4u

static inline bool seq_lt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}
static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

void keel_drel_hdr_encode(uint8_t *p, const struct keel_drel_hdr *h)
{
	p[0] = KEEL_DREL_MAGIC;
	p[1] = KEEL_DREL_VERSION;
	p[2] = h->type;
	p[3] = h->flags;
	put16(p + 4, h->src_shard);
	put16(p + 6, h->dst_shard);
	put16(p + 8, h->len);
	put16(p + 10, h->msg_type);
	put32(p + 12, h->src_node);
	put32(p + 16, h->epoch);
	put32(p + 20, h->dst_epoch);
	put32(p + 24, h->seq);
	put32(p + 28, h->ack);
	put32(p + 32, h->credit);
	put32(p + 36, h->msg_len);
	put32(p + 40, h->offset);
}

int keel_drel_hdr_decode(struct keel_drel_hdr *h, const uint8_t *p, size_t n,
			 uint32_t max_msg, char *errmsg)
{
	if (n < KEEL_DREL_HDR_LEN)
		return keel_errmsg_set(errmsg, KEEL_EPROTO,
				       "dpdk: packet of %zu bytes, shorter than the header", n);
	if (p[0] != KEEL_DREL_MAGIC || p[1] != KEEL_DREL_VERSION)
		return keel_errmsg_set(errmsg, KEEL_EPROTO,
				       "dpdk: bad magic/version %#x/%u", p[0], p[1]);
	h->type = p[2];
	h->flags = p[3];
	h->src_shard = get16(p + 4);
	h->dst_shard = get16(p + 6);
	h->len = get16(p + 8);
	h->msg_type = get16(p + 10);
	h->src_node = get32(p + 12);
	h->epoch = get32(p + 16);
	h->dst_epoch = get32(p + 20);
	h->seq = get32(p + 24);
	h->ack = get32(p + 28);
	h->credit = get32(p + 32);
	h->msg_len = get32(p + 36);
	h->offset = get32(p + 40);
	if (h->epoch == 0)
		return keel_errmsg_set(errmsg, KEEL_EPROTO, "dpdk: zero epoch");
	if ((size_t)h->len > n - KEEL_DREL_HDR_LEN)
		return keel_errmsg_set(errmsg, KEEL_EPROTO,
				       "dpdk: payload length %u past the packet's %zu bytes",
				       h->len, n - KEEL_DREL_HDR_LEN);
	switch (h->type) {
	case KEEL_DREL_ACK:
		if (h->flags & ~(F_DUPACK | KEEL_DREL_F_INIT))
			return keel_errmsg_set(errmsg, KEEL_EPROTO, "dpdk: bad ACK flags %#x", h->flags);
		if (h->len != 0)
			return keel_errmsg_set(errmsg, KEEL_EPROTO, "dpdk: ACK with payload");
		return 0;
	case KEEL_DREL_DATA: {
		if (h->flags & ~(KEEL_DREL_F_FIRST | KEEL_DREL_F_LAST | KEEL_DREL_F_INIT |
				 KEEL_DREL_F_BATCH))
			return keel_errmsg_set(errmsg, KEEL_EPROTO, "dpdk: bad DATA flags %#x", h->flags);
		if (h->flags & KEEL_DREL_F_BATCH) {
			uint32_t fl = KEEL_DREL_F_FIRST | KEEL_DREL_F_LAST;
			if ((h->flags & fl) != fl || h->offset != 0 || h->msg_len != h->len ||
			    h->msg_type == 0 || (uint32_t)h->msg_type * KEEL_DREL_REC_LEN > h->len)
				return keel_errmsg_set(errmsg, KEEL_EPROTO,
						       "dpdk: coalesced packet with flags %#x, %u records in [%u,+%u) of %u",
						       h->flags, h->msg_type, h->offset, h->len,
						       h->msg_len);
			return 0;
		}
		if (h->msg_len > max_msg)
			return keel_errmsg_set(errmsg, KEEL_ETOOBIG,
					       "dpdk: message of %u bytes, limit %u", h->msg_len, max_msg);
		uint64_t end = (uint64_t)h->offset + h->len;
		bool first = h->flags & KEEL_DREL_F_FIRST, last = h->flags & KEEL_DREL_F_LAST;
		if (end > h->msg_len)
			return keel_errmsg_set(errmsg, KEEL_EPROTO,
					       "dpdk: fragment [%u,+%u) past message length %u",
					       h->offset, h->len, h->msg_len);
		if (first != (h->offset == 0) || last != (end == h->msg_len) ||
		    (!last && h->len == 0))
			return keel_errmsg_set(errmsg, KEEL_EPROTO,
					       "dpdk: fragment flags %#x disagree with [%u,+%u) of %u",
					       h->flags, h->offset, h->len, h->msg_len);
		return 0;
	}
	default:
		return keel_errmsg_set(errmsg, KEEL_EPROTO, "dpdk: unknown packet type %u", h->type);
	}
}

int keel_drel_batch_check(const uint8_t *p, uint32_t len, uint32_t count, char *errmsg)
{
	uint32_t off = 0, i = 0;
	for (; i < count; i++) {
		if (len - off < KEEL_DREL_REC_LEN)
			return keel_errmsg_set(errmsg, KEEL_EPROTO,
					       "dpdk: coalesced packet: record %u of %u header past the %u-byte payload",
					       i, count, len);
		uint32_t rl = get16(p + off + 2);
		off += KEEL_DREL_REC_LEN;
		if (rl > len - off)
			return keel_errmsg_set(errmsg, KEEL_EPROTO,
					       "dpdk: coalesced packet: record %u of %u bytes overruns the payload (%u left)",
					       i, rl, len - off);
		off += rl;
	}
	if (off != len)
		return keel_errmsg_set(errmsg, KEEL_EPROTO,
				       "dpdk: coalesced packet: %u bytes after its %u records",
				       len - off, count);
	return 0;
}

uint32_t keel_drel_batch_write(uint8_t *dst, struct keel_drel_msg *const *msgs, uint32_t n)
{
	uint32_t off = 0;
	for (uint32_t i = 0; i < n; i++) {
		keel_drel_rec_put(dst + off, msgs[i]->type, (uint16_t)msgs[i]->len);
		off += KEEL_DREL_REC_LEN;
		if (msgs[i]->len)
			memcpy(dst + off, msgs[i]->data, msgs[i]->len);
		off += msgs[i]->len;
	}
	return off;
}

uint16_t keel_drel_first_type(const struct keel_drel_hdr *h, const uint8_t *payload)
{
	return h->flags & KEEL_DREL_F_BATCH ? get16(payload) : h->msg_type;
}

void keel_drel_cfg_default(struct keel_drel_cfg *cfg)
{
	*cfg = (struct keel_drel_cfg){
		/* Enough to keep a 10 GbE link busy at tens of µs of RTT; more
		 * only queues in the NIC ring, and a queue longer than the
		 * retransmission timeout makes timeouts spurious. */
		.window = 256,
		.rx_window = 256,
		/* 1500 MTU - IPv4 20 - UDP 8 - our header */
		.mss = 1500 - 20 - 8 - KEEL_DREL_HDR_LEN,
		.max_msg = 16u << 20,
		.ack_every = 32,
		.ack_delay_ns = 20000,
		/* Shared or overloaded hosts stall a process for milliseconds;
		 * fast retransmission covers ordinary loss well before this. */
		.rto_ns = 5000000,
		.rto_max_ns = 500000000,
		.queue_msgs = 4096,
		.queue_bytes = 8u << 20,
		.max_timeouts = 16,
	};
}

static bool is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

int keel_drel_init(struct keel_drel *s, const struct keel_drel_cfg *cfg,
		   const struct keel_drel_io *io, uint32_t my_node,
		   uint16_t my_shard, uint32_t peer_node, uint16_t peer_shard,
		   uint32_t my_epoch)
{
	memset(s, 0, sizeof(*s));
	if (!is_pow2(cfg->window) || cfg->rx_window == 0 || cfg->mss == 0 ||
	    cfg->mss > UINT16_MAX || !is_pow2(cfg->queue_msgs) || my_epoch == 0 ||
	    cfg->rto_ns == 0 || cfg->ack_every == 0)
		return keel_errmsg_set(s->errmsg, KEEL_ECONFIG,
				       "dpdk: bad reliability settings (window and queue_msgs powers of two, mss 1..65535, epoch non-zero)");
	s->cfg = *cfg;
	s->io = *io;
	s->my_node = my_node;
	s->my_shard = my_shard;
	s->peer_node = peer_node;
	s->peer_shard = peer_shard;
	s->my_epoch = my_epoch;
	s->mask = cfg->window - 1;
	s->inflight = calloc(cfg->window, sizeof(*s->inflight));
	s->q = calloc(cfg->queue_msgs, sizeof(*s->q));
	s->q_cap = cfg->queue_msgs;
	if (!s->inflight || !s->q) {
		free(s->inflight);
		free(s->q);
		s->inflight = NULL;
		s->q = NULL;
		return -ENOMEM;
	}
	s->tx_credit = cfg->rx_window;
	s->rto_cur = cfg->rto_ns;
	return 0;
}

static void drop_state(struct keel_drel *s)
{
	for (uint32_t q = s->tx_una; q != s->tx_next; q++) {
		s->io.release(s->io.ctx, s->inflight[q & s->mask]);
		s->inflight[q & s->mask] = NULL;
	}
	while (s->q_count) {
		struct keel_drel_msg *m = s->q[s->q_head];
		s->q_head = (s->q_head + 1) & (s->q_cap - 1);
		s->q_count--;
		s->io.msg_done(s->io.ctx, m);
	}
	s->q_bytes = 0;
	s->q_off = 0;
}

void keel_drel_fini(struct keel_drel *s)
{
	if (!s->inflight)
		return;
	drop_state(s);
	free(s->inflight);
	free(s->q);
	free(s->ra_buf);
	s->inflight = NULL;
	s->q = NULL;
	s->ra_buf = NULL;
}

void keel_drel_reset(struct keel_drel *s)
{
	drop_state(s);
	s->tx_next = s->tx_una = 0;
	s->tx_credit = s->cfg.rx_window;
	s->rt_deadline = 0;
	s->rto_cur = s->cfg.rto_ns;
	s->dupacks = 0;
	s->timeouts_in_row = 0;
	s->fr_armed = false;
	s->rec_active = false;
	s->q_was_full = true; /* the layer above hears "writable" again */
#ifndef KEEL_MUTANT_DREL_RESET_KEEPS_RX /* MUTANT: the receive side is not reset */
	s->rx_next = 0;
#endif
	s->rx_unacked = 0;
	s->ack_deadline = 0;
	s->ack_now = false;
	s->ack_hole = false;
	s->ra_active = false;
	s->peer_epoch = 0;
	s->st.resets++;
}

void keel_drel_hdr_fill(const struct keel_drel *s, struct keel_drel_hdr *h)
{
	h->src_shard = s->my_shard;
	h->dst_shard = s->peer_shard;
	h->src_node = s->my_node;
	h->epoch = s->my_epoch;
	h->dst_epoch = s->peer_epoch;
	h->ack = s->rx_next;
	h->credit = s->rx_next + s->cfg.rx_window;
	h->flags = s->hdr_flags;
}

int keel_drel_send(struct keel_drel *s, struct keel_drel_msg *m)
{
	if (m->len > s->cfg.max_msg)
		return keel_errmsg_set(s->errmsg, KEEL_ETOOBIG,
				       "dpdk: message of %u bytes, limit %u", m->len, s->cfg.max_msg);
	if (s->q_count == s->q_cap ||
	    (s->q_count && s->q_bytes + m->len > s->cfg.queue_bytes)) {
		s->q_was_full = true;
		return KEEL_EFULL;
	}
	s->q[(s->q_head + s->q_count) & (s->q_cap - 1)] = m;
	s->q_count++;
	s->q_bytes += m->len;
	return 0;
}

bool keel_drel_writable(struct keel_drel *s)
{
	if (!s->q_was_full || s->q_count > s->q_cap / 2 ||
	    s->q_bytes > s->cfg.queue_bytes / 2)
		return false;
	s->q_was_full = false;
	return true;
}

static void ack_sent(struct keel_drel *s)
{
	s->rx_unacked = 0;
	s->ack_deadline = 0;
}

/* Bookkeeping after a DATA packet went out. */
static void data_emitted(struct keel_drel *s, void *pkt, uint64_t now_ns)
{
	s->inflight[s->tx_next & s->mask] = pkt;
	s->tx_next++;
	s->st.data_sent++;
	if (!s->rt_deadline)
		s->rt_deadline = now_ns + s->rto_cur;
	ack_sent(s); /* the ack rode along */
	if (!s->ack_hole)
		s->ack_now = false; /* a dupack must go alone to count */
}

/* Coalesces the small messages at the head of the queue (as many as fit in
 * one packet) into one packet. Returns 0, or -1 when emit_batch could not
 * send now. */
static int pump_batch(struct keel_drel *s, uint64_t now_ns)
{
	struct keel_drel_msg *msgs[KEEL_DREL_BATCH_MAX];
	uint32_t n = 0, bytes = 0, mask = s->q_cap - 1;
	while (n < s->q_count && n < KEEL_DREL_BATCH_MAX) {
		struct keel_drel_msg *m = s->q[(s->q_head + n) & mask];
		if (bytes + KEEL_DREL_REC_LEN + m->len > s->cfg.mss)
			break;
		bytes += KEEL_DREL_REC_LEN + m->len;
		msgs[n++] = m;
	}
	struct keel_drel_hdr h;
	keel_drel_hdr_fill(s, &h);
	h.type = KEEL_DREL_DATA;
	h.flags |= KEEL_DREL_F_FIRST | KEEL_DREL_F_LAST | KEEL_DREL_F_BATCH;
	h.len = (uint16_t)bytes;
	h.seq = s->tx_next;
	h.msg_len = bytes;
	h.msg_type = (uint16_t)n;
	h.offset = 0;
	void *pkt = s->io.emit_batch(s->io.ctx, &h, msgs, n);
	if (!pkt)
		return -1;
	data_emitted(s, pkt, now_ns);
	s->st.batches_sent++;
	s->q_head = (s->q_head + n) & mask;
	s->q_count -= n;
	s->q_bytes -= bytes - n * KEEL_DREL_REC_LEN;
	s->st.msgs_sent += n;
	for (uint32_t i = 0; i < n; i++)
		s->io.msg_done(s->io.ctx, msgs[i]);
	return 0;
}

int keel_drel_pump(struct keel_drel *s, uint64_t now_ns)
{
	int n = 0;
	while (s->q_count) {
		if (s->tx_next - s->tx_una >= s->cfg.window || !seq_lt(s->tx_next, s->tx_credit))
			break;
		struct keel_drel_msg *m = s->q[s->q_head];
		if (s->io.emit_batch && s->q_off == 0 && m->len + KEEL_DREL_REC_LEN <= s->cfg.mss) {
			if (pump_batch(s, now_ns) != 0)
				break;
			n++;
			continue;
		}
		uint32_t left = m->len - s->q_off;
		uint32_t len = left < s->cfg.mss ? left : s->cfg.mss;
		struct keel_drel_hdr h;
		keel_drel_hdr_fill(s, &h);
		h.type = KEEL_DREL_DATA;
		h.flags |= (uint8_t)((s->q_off == 0 ? KEEL_DREL_F_FIRST : 0) |
				    (len == left ? KEEL_DREL_F_LAST : 0));
		h.len = (uint16_t)len;
		h.seq = s->tx_next;
		h.msg_len = m->len;
		h.msg_type = m->type;
		h.offset = s->q_off;
		void *pkt = s->io.emit(s->io.ctx, &h, m);
		if (!pkt)
			break;
		data_emitted(s, pkt, now_ns);
		n++;
		s->q_off += len;
		if (len == left) {
			s->q_head = (s->q_head + 1) & (s->q_cap - 1);
			s->q_count--;
			s->q_bytes -= m->len;
			s->q_off = 0;
			s->st.msgs_sent++;
			s->io.msg_done(s->io.ctx, m);
		}
	}
	return n;
}

/* Go-back-N: the receiver dropped everything after the hole. Resends
 * [from, from + max) within what is in flight; returns the next seq. */
static uint32_t resend(struct keel_drel *s, uint32_t from, uint32_t max)
{
	uint32_t q = from;
	for (; q != s->tx_next && max; q++, max--) {
		if (s->io.retransmit(s->io.ctx, s->inflight[q & s->mask]) < 0)
			break;
		s->st.retransmits++;
	}
	return q;
}

static void resend_all(struct keel_drel *s)
{
	resend(s, s->tx_una, UINT32_MAX);
}

/* After a timeout we resend only a burst: the timeout may be spurious (a
 * stalled peer process has everything and its ack is merely late). The
 * next burst goes when an ack lands exactly at the end of the last one,
 * which (acks being cumulative and the receiver in-order only) means the
 * receiver has nothing beyond it. */
#define RECOVERY_BURST 64

static int proto_reset(struct keel_drel *s, const char *why, uint32_t a, uint32_t b)
{
	s->st.proto_errors++;
	keel_errmsg_set(s->errmsg, KEEL_EPROTO, "dpdk: session with %u/%u: %s (%u, %u)",
			s->peer_node, s->peer_shard, why, a, b);
	uint32_t pe = s->peer_epoch;
	keel_drel_reset(s);
	s->peer_epoch = pe;
	/* The peer still thinks the old session runs: a new epoch of ours
	 * makes it reset too (its next packets are stale to us, and our ack
	 * to them carries the new epoch). */
	if (++s->my_epoch == 0)
		s->my_epoch = 1;
	s->ack_now = true;
	return KEEL_EPROTO;
}

static void take_ack(struct keel_drel *s, const struct keel_drel_hdr *h, uint64_t now_ns)
{
	if (seq_lt(s->tx_una, h->ack)) {
		for (uint32_t q = s->tx_una; q != h->ack; q++) {
			s->io.release(s->io.ctx, s->inflight[q & s->mask]);
			s->inflight[q & s->mask] = NULL;
		}
		s->tx_una = h->ack;
		s->dupacks = 0;
		s->timeouts_in_row = 0;
		if (s->rec_active) {
			if (s->tx_una == s->rec_next && s->tx_una != s->tx_next)
				s->rec_next = resend(s, s->tx_una, RECOVERY_BURST);
			else if (!seq_lt(s->tx_una, s->rec_next) || s->tx_una == s->tx_next)
				s->rec_active = false;
		}
		s->rto_cur = s->cfg.rto_ns;
		s->rt_deadline = s->tx_una == s->tx_next ? 0 : now_ns + s->rto_cur;
	} else if (h->ack == s->tx_una && s->tx_una != s->tx_next &&
		   h->type == KEEL_DREL_ACK && (h->flags & F_DUPACK)) {
		if (++s->dupacks >= 3 && (!s->fr_armed || !seq_lt(s->tx_una, s->fr_block))) {
			s->st.fast_retransmits++;
			s->dupacks = 0;
			s->fr_armed = true;
			s->fr_block = s->tx_next;
			s->rec_active = false;
			resend_all(s);
			s->rt_deadline = now_ns + s->rto_cur;
		}
	}
	if (seq_lt(s->tx_credit, h->credit))
		s->tx_credit = h->credit;
}

static int take_data(struct keel_drel *s, const struct keel_drel_hdr *h,
		     const uint8_t *payload, uint64_t now_ns)
{
#ifdef KEEL_MUTANT_DREL_REPLAY_REDELIVERED
	if (seq_lt(s->rx_next, h->seq)) { /* MUTANT: only a packet past a hole is refused */
#else
	if (h->seq != s->rx_next) {
#endif
		/* Tell the sender where we are, at once. Only a packet past a
		 * hole counts toward its fast retransmission; a duplicate
		 * means it resent what we have (its ack was lost or late). */
		if (seq_lt(h->seq, s->rx_next)) {
			s->st.dups++;
		} else {
			s->st.out_of_order++;
			s->ack_hole = true;
		}
		s->ack_now = true;
		return 1;
	}
	bool first = h->flags & KEEL_DREL_F_FIRST, last = h->flags & KEEL_DREL_F_LAST;
	if (h->flags & KEEL_DREL_F_BATCH) {
		if (s->ra_active)
			return proto_reset(s, "coalesced packet inside a fragmented message",
					   h->seq, s->ra_got);
		/* Check every record before delivering any: a malformed packet
		 * delivers nothing. */
		char why[KEEL_ERRMSG_LEN];
		if (keel_drel_batch_check(payload, h->len, h->msg_type, why) != 0)
			return proto_reset(s, why, h->seq, h->len);
		s->rx_next++;
		s->st.data_recv++;
		if (!s->ack_deadline)
			s->ack_deadline = now_ns + s->cfg.ack_delay_ns;
		s->rx_unacked++;
		const uint8_t *p = payload;
		for (uint32_t i = 0; i < h->msg_type; i++) {
			uint16_t type = get16(p), len = get16(p + 2);
			s->st.msgs_delivered++;
			s->io.deliver(s->io.ctx, type, p + KEEL_DREL_REC_LEN, len, true);
			p += KEEL_DREL_REC_LEN + len;
		}
		return 0;
	}
	if (first && s->ra_active)
		return proto_reset(s, "new message before the last one ended", h->seq, s->ra_got);
	if (!first && (!s->ra_active || h->offset != s->ra_got || h->msg_len != s->ra_len))
		return proto_reset(s, "fragment out of place", h->offset, s->ra_got);
	s->rx_next++;
	s->st.data_recv++;
	if (!s->ack_deadline)
		s->ack_deadline = now_ns + s->cfg.ack_delay_ns;
	s->rx_unacked++;
	if (first && last) {
		s->st.msgs_delivered++;
		s->io.deliver(s->io.ctx, h->msg_type, payload, h->len, true);
		return 0;
	}
	if (first) {
		if (s->ra_cap < h->msg_len) {
			uint8_t *nb = realloc(s->ra_buf, h->msg_len);
			if (!nb) {
				/* Can't take it now: un-accept, the sender retransmits. */
				s->rx_next--;
				s->rx_unacked--;
				return 1;
			}
			s->ra_buf = nb;
			s->ra_cap = h->msg_len;
		}
		s->ra_active = true;
		s->ra_len = h->msg_len;
		s->ra_type = h->msg_type;
		s->ra_got = 0;
	}
	memcpy(s->ra_buf + s->ra_got, payload, h->len);
	s->ra_got += h->len;
	if (last) {
		s->ra_active = false;
		s->st.msgs_delivered++;
		s->io.deliver(s->io.ctx, s->ra_type, s->ra_buf, s->ra_len, false);
		/* Don't pin a huge buffer for a session that sent one big message. */
		if (s->ra_cap > (4u << 20)) {
			free(s->ra_buf);
			s->ra_buf = NULL;
			s->ra_cap = 0;
		}
	}
	return 0;
}

int keel_drel_input(struct keel_drel *s, const struct keel_drel_hdr *h,
		    const uint8_t *payload, uint64_t now_ns)
{
	int rc = 0;
#ifndef KEEL_MUTANT_DREL_NO_DST_EPOCH /* MUTANT: the receiver's epoch is not checked */
	if (h->dst_epoch != 0 && h->dst_epoch != s->my_epoch) {
		/* Meant for an earlier run of this process; answering with an
		 * ack tells the peer our new epoch, so it resets. */
		s->st.stale++;
		s->ack_now = true;
		return 1;
	}
#endif
	if (s->peer_epoch != h->epoch) {
#ifndef KEEL_MUTANT_DREL_ACCEPT_OLD_EPOCH /* MUTANT: any other epoch is a restart */
		if (h->epoch == s->prev_peer_epoch) {
			s->st.stale++; /* late packet from the peer's previous run */
			return 1;
		}
#endif
		if (s->peer_epoch != 0) {
			uint32_t old = s->peer_epoch;
			keel_drel_reset(s);
			s->prev_peer_epoch = old;
			rc = KEEL_ECLOSED;
		}
		s->peer_epoch = h->epoch;
	}
	if (h->type == KEEL_DREL_ACK)
		s->st.acks_recv++;
	if (seq_lt(s->tx_next, h->ack)) {
		s->st.proto_errors++;
		return rc ? rc : 1; /* acks what we never sent: ignore it */
	}
	take_ack(s, h, now_ns);
	if (h->type == KEEL_DREL_DATA) {
		int r = take_data(s, h, payload, now_ns);
		if (r < 0 || !rc)
			rc = r;
	}
	return rc;
}

int keel_drel_tick(struct keel_drel *s, uint64_t now_ns)
{
	if (s->rt_deadline && now_ns >= s->rt_deadline) {
		s->st.timeouts++;
		if (++s->timeouts_in_row > s->cfg.max_timeouts && s->cfg.max_timeouts)
			return keel_errmsg_set(s->errmsg, KEEL_ETIMEOUT,
					       "dpdk: peer %u/%u: %u retransmissions unanswered",
					       s->peer_node, s->peer_shard, s->timeouts_in_row - 1);
		s->rec_active = true;
		s->rec_next = resend(s, s->tx_una, RECOVERY_BURST);
		s->rto_cur *= 2;
		if (s->rto_cur > s->cfg.rto_max_ns)
			s->rto_cur = s->cfg.rto_max_ns;
		s->rt_deadline = now_ns + s->rto_cur;
	}
	if (s->ack_now || (s->ack_deadline && (now_ns >= s->ack_deadline ||
					       s->rx_unacked >= s->cfg.ack_every))) {
		struct keel_drel_hdr h = {.type = KEEL_DREL_ACK};
		keel_drel_hdr_fill(s, &h);
		h.flags |= s->ack_hole ? F_DUPACK : 0;
		h.seq = s->tx_next;
		if (s->io.send_ack(s->io.ctx, &h) == 0) {
			s->st.acks_sent++;
			s->ack_now = false;
			s->ack_hole = false;
			ack_sent(s);
		}
	}
	return 0;
}
