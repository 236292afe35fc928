/*
 * libFuzzer target: the DPDK backend's packet decoder and the reliability
 * session behind it. The input is a sequence of packets, each prefixed by a
 * 16-bit length; every one that decodes is fed to one session (which also
 * has a multi-fragment message and small coalesced ones of its own to
 * send), with the clock moving so that retransmission and delayed acks run
 * too. Coalesced packets (BATCH: records of type, length, bytes) go through
 * the record checks in keel_drel_input; each input is also checked as a
 * bare record chain. Nothing a peer sends may crash, read out of bounds or
 * leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/dpdk/dpdk_rel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *f_emit(void *ctx, const struct keel_drel_hdr *h, struct keel_drel_msg *m)
{
	uint8_t *p = malloc(KEEL_DREL_HDR_LEN + h->len);
	if (!p)
		return NULL;
	keel_drel_hdr_encode(p, h);
	memcpy(p + KEEL_DREL_HDR_LEN, m->data + h->offset, h->len);
	return p;
}
static void *f_emit_batch(void *ctx, const struct keel_drel_hdr *h,
			  struct keel_drel_msg *const *msgs, uint32_t n)
{
	uint8_t *p = malloc(KEEL_DREL_HDR_LEN + h->len);
	if (!p)
		return NULL;
	keel_drel_hdr_encode(p, h);
	if (keel_drel_batch_write(p + KEEL_DREL_HDR_LEN, msgs, n) != h->len)
		abort();
	return p;
}
static int f_retransmit(void *ctx, void *pkt)
{
	return 0;
}
static void f_release(void *ctx, void *pkt)
{
	free(pkt);
}
static void f_msg_done(void *ctx, struct keel_drel_msg *m)
{
}
static void f_deliver(void *ctx, uint16_t type, const uint8_t *d, uint32_t len, bool view)
{
	/* touch every byte: ASan checks the view is in bounds */
	volatile uint8_t x = 0;
	for (uint32_t i = 0; i < len; i++)
		x ^= d[i];
	(void)x;
}
static int f_send_ack(void *ctx, const struct keel_drel_hdr *h)
{
	uint8_t b[KEEL_DREL_HDR_LEN];
	keel_drel_hdr_encode(b, h);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keel_drel_cfg cfg;
	keel_drel_cfg_default(&cfg);
	cfg.window = 16;
	cfg.mss = 64;
	cfg.max_msg = 1 << 16;
	struct keel_drel_io io = {
		.emit = f_emit, .emit_batch = f_emit_batch, .retransmit = f_retransmit, .release = f_release,
		.msg_done = f_msg_done, .deliver = f_deliver, .send_ack = f_send_ack,
	};
	static struct keel_drel s;
	if (keel_drel_init(&s, &cfg, &io, 1, 0, 2, 0, 77) != 0)
		return 0;
	static uint8_t out[1000];
	struct keel_drel_msg m = {.data = out, .len = sizeof(out)};
	keel_drel_send(&s, &m);
	static uint8_t small[8][20];
	struct keel_drel_msg sm[8];
	for (int i = 0; i < 8; i++) {
		sm[i] = (struct keel_drel_msg){.data = small[i], .len = (uint32_t)i * 2,
					       .type = (uint16_t)i};
		keel_drel_send(&s, &sm[i]);
	}
	if (size >= 2)
		keel_drel_batch_check(data + 2, (uint32_t)(size - 2), data[0] | (data[1] << 8), NULL);
	uint64_t now = 1;
	while (size >= 2) {
		size_t n = (size_t)data[0] | ((size_t)data[1] << 8);
		data += 2;
		size -= 2;
		if (n > size)
			n = size;
		struct keel_drel_hdr h;
		if (keel_drel_hdr_decode(&h, data, n, cfg.max_msg, NULL) == 0)
			keel_drel_input(&s, &h, data + KEEL_DREL_HDR_LEN, now);
		keel_drel_pump(&s, now);
		keel_drel_tick(&s, now);
		now += 1000000;
		data += n;
		size -= n;
	}
	keel_drel_fini(&s);
	return 0;
}
