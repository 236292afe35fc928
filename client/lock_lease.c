/*
 * client/lock_lease.c — the lock client's conservative lease view
 * (keel/lock_client.h, "the lease view"): shared by client/lock_client.c
 * and the lock simulation, so the simulation decides "may I still use this
 * lock" with the production rule.
 *
 * Planted bugs (tests/sim/meson.build builds this file again with one):
 *   KEEL_LOCK_BUG_VIEW_NO_MARGIN   the view is sent + TTL, no drift margin
 *   KEEL_LOCK_BUG_VIEW_RECV_TIME   a renewal counts from its answer's
 *                                  arrival instead of its send time
 */
#include "keel/lock_client.h"

uint32_t keel_lock_lease_margin(uint32_t ttl_ms)
{
#ifdef KEEL_LOCK_BUG_VIEW_NO_MARGIN
	(void)ttl_ms;
	return 0;
#else
	/* a 10% slower client clock is covered; 20 ms for short TTLs */
	return ttl_ms / 10 > 20 ? ttl_ms / 10 : 20;
#endif
}

void keel_lock_lease_open(struct keel_lock_lease *l, uint32_t ttl_ms, uint64_t sent_ms)
{
	l->ttl_ms = ttl_ms;
	l->margin_ms = keel_lock_lease_margin(ttl_ms);
	l->lost = false;
	l->until = sent_ms + ttl_ms > l->margin_ms ? sent_ms + ttl_ms - l->margin_ms : 0;
}

void keel_lock_lease_renewed(struct keel_lock_lease *l, uint64_t sent_ms, uint64_t ack_ms)
{
#ifdef KEEL_LOCK_BUG_VIEW_RECV_TIME
	sent_ms = ack_ms;
#else
	(void)ack_ms; /* the answer's arrival says nothing about the cluster's deadline */
#endif
	uint64_t until = sent_ms + l->ttl_ms - l->margin_ms;
	if (!l->lost && until > l->until)
		l->until = until;
}

void keel_lock_lease_lose(struct keel_lock_lease *l)
{
	l->lost = true;
	l->until = 0;
}

bool keel_lock_lease_check(struct keel_lock_lease *l, uint64_t now_ms)
{
	if (l->lost || now_ms < l->until)
		return false;
	l->lost = true;
	return true;
}

bool keel_lock_lease_valid(const struct keel_lock_lease *l, uint64_t now_ms, uint64_t *left_ms)
{
	bool ok = !l->lost && now_ms < l->until;
	if (left_ms)
		*left_ms = ok ? l->until - now_ms : 0;
	return ok;
}
