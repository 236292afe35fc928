/*
 * keel/lock_client.h — the lock service's client library
 * (client/lock_client.c): sessions, exclusive and shared locks with
 * fencing tokens, over the client protocol (keel/proto.h,
 * KEEL_PROTO_LOCK_*) on the nodes' client ports. The KV client is
 * keel/client.h; this one keeps its own connections, because lock calls
 * block on pushed grants and keepalives run while they do.
 *
 * One logical session: the client opens it (with its TTL) in each group
 * where it first holds or waits for a lock — a lock name's group is
 * keel_service_group_of(name) — and keeps every group's registration
 * alive with one keepalive stream (every TTL/3, one small frame per group,
 * batched by the leader into one log entry per tick). Expiry is decided by
 * each group's state machine on its leader's replicated clock.
 *
 * The client's view of a lock is conservative (keel/lock.h): a lock of
 * group g is held until (the time the last acknowledged keepalive or open
 * of g was SENT) + TTL - margin on the client's own clock; the cluster can
 * expire the session only after that. keel_lock_client_poll runs the
 * stream and returns KEEL_ESTALE once a held lock's view ran out or the
 * cluster said the session expired: the caller must stop using what the
 * lock protects. A lock lost that way is dropped; the group's session is
 * closed and a new one opened for the next acquire (reopening the old one
 * could revive a hold the client has given up).
 *
 * A protected resource checks tokens itself (keel_lock_fence_check in
 * keel/lock.h): a write carrying a token lower than one it has seen comes
 * from a superseded holder (a client paused past its lease) and is
 * refused.
 *
 * Errors: 0 or a negative code, with keel_lock_client_errmsg: KEEL_EBUSY
 * (try: held by another), KEEL_ETIMEOUT (the wait ran out; or no answer
 * in time), KEEL_ESTALE (the session expired: locks lost; a release of a
 * lock not held), KEEL_EUNAVAIL (no node answered), KEEL_EBADINPUT (a name
 * over KEEL_LOCK_MAX_NAME, a TTL out of range), KEEL_EAUTH.
 *
 * Threads and ownership: one thread at a time uses a client (calls block
 * up to their deadline, running keepalives meanwhile). Names are copied.
 * The clock is injectable (cfg.now_ms) so a simulation pauses a client
 * without sleeping.
 */
#ifndef KEEL_LOCK_CLIENT_H
#define KEEL_LOCK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"
#include "keel/lock.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_lock_client;

struct keel_lock_client_config {
	const char *endpoints;   /* "host:port,..." (required) */
	const char *token;       /* the client port's token, if asked */
	uint32_t ttl_ms;         /* the session's TTL; 0: 10000 */
	uint32_t timeout_ms;     /* each request's deadline; 0: 5000 */
	uint64_t session;        /* 0: random */
	/* The client's monotonic clock in ms; NULL: CLOCK_MONOTONIC. */
	uint64_t (*now_ms)(void *arg);
	void *clock_arg;
};

int keel_lock_client_open(const struct keel_lock_client_config *cfg,
			  struct keel_lock_client **out, char *errmsg);
/* Closes the session in every group it was opened in (its locks are
 * released at once, its waits dropped), then the connections. */
void keel_lock_client_close(struct keel_lock_client *lc);
/* Like close, but without telling the cluster (a crash, as seen from it):
 * the locks stay held until the session's TTL runs out. For tests. */
void keel_lock_client_abandon(struct keel_lock_client *lc);
const char *keel_lock_client_errmsg(const struct keel_lock_client *lc);

/* Acquires name. wait_ms 0: try once (KEEL_EBUSY when held); else wait
 * up to wait_ms for a FIFO grant (KEEL_ETIMEOUT). 0 with *token, the
 * fencing token, which only grows for the lock. lock_delay_ms: after
 * this holder's session expires, nobody gets the lock for that long. */
int keel_lock_acquire(struct keel_lock_client *lc, const void *name, size_t len,
		      enum keel_lock_mode mode, uint32_t wait_ms, uint32_t lock_delay_ms,
		      uint64_t *token);
/* Releases a held lock: 0, or KEEL_ESTALE when this client no longer
 * holds it with that token (it was lost). */
int keel_lock_release(struct keel_lock_client *lc, const void *name, size_t len, uint64_t token);

/* Runs the keepalive stream and reads pushed events for up to wait_ms.
 * 0, or KEEL_ESTALE when a held lock was lost (since the last call that
 * reported it): see keel_lock_held for which. */
int keel_lock_client_poll(struct keel_lock_client *lc, uint32_t wait_ms);
/* Renews the session in every group it is open in now, without waiting
 * for the stream's next round, and waits for the answers: 0, KEEL_ESTALE
 * (the session is gone in some group), KEEL_ETIMEOUT. For a caller about
 * to do something long, and for benchmarks. */
int keel_lock_client_renew(struct keel_lock_client *lc);
/* Whether the client still holds name by its conservative view, and the
 * ms left of that view (0 when not held). */
bool keel_lock_held(struct keel_lock_client *lc, const void *name, size_t len, uint64_t *left_ms);

/* A lock's state as its group's state machine has it (linearizable). */
struct keel_lock_state {
	uint8_t mode;            /* enum keel_lock_mode of the holders; 0: free */
	uint32_t group;
	uint64_t now_ms;         /* the group's replicated clock */
	uint32_t delay_left_ms;  /* lock-delay still running */
	bool more;               /* holders or waiters beyond those reported */
};
/* fn gets each holder (waiter false: session, token) then each waiter
 * (waiter true: session, deadline_ms on the group's clock, mode). */
int keel_lock_inspect(struct keel_lock_client *lc, const void *name, size_t len,
		      struct keel_lock_state *st,
		      void (*fn)(void *arg, bool waiter, uint64_t session, uint64_t token_or_deadline,
				 uint8_t mode),
		      void *arg);
uint64_t keel_lock_client_session(const struct keel_lock_client *lc, uint32_t group);

/* ---- the lease view (client/lock_lease.c) --------------------------------
 * The client's conservative view of one group's session, on the client's
 * own clock: the decision of how long a held lock may be used. The client
 * above keeps one per group; the lock simulation (tests/sim/lock_sim.c)
 * runs the same code on its simulated clients' clocks. A renewal (an OPEN
 * or a KEEPALIVE) counts from when it was SENT, not when its answer came:
 * the cluster applied it after it was sent, and its time runs no faster
 * than the leader's clock, so its deadline is at least sent + TTL there.
 * The margin (a tenth of the TTL, at least 20 ms) covers the client's
 * clock running slower than the leader's. A view that ran out, or that the
 * cluster said expired, stays lost. Plain data: no allocation, no I/O. */
struct keel_lock_lease {
	uint32_t ttl_ms, margin_ms;
	uint64_t until;      /* client clock: held locks are good before this */
	bool lost;
};
uint32_t keel_lock_lease_margin(uint32_t ttl_ms);
/* A session opened (or reopened) by an OPEN sent at sent_ms, answered. */
void keel_lock_lease_open(struct keel_lock_lease *l, uint32_t ttl_ms, uint64_t sent_ms);
/* A keepalive sent at sent_ms was answered (applied) at ack_ms. */
void keel_lock_lease_renewed(struct keel_lock_lease *l, uint64_t sent_ms, uint64_t ack_ms);
/* The cluster said the session expired (an EXPIRED push, NO_SESSION). */
void keel_lock_lease_lose(struct keel_lock_lease *l);
/* true when the view ran out at now_ms and was not lost before (it is
 * lost from now on). */
bool keel_lock_lease_check(struct keel_lock_lease *l, uint64_t now_ms);
/* Whether locks under this view may be used at now_ms, and for how long. */
bool keel_lock_lease_valid(const struct keel_lock_lease *l, uint64_t now_ms, uint64_t *left_ms);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_LOCK_CLIENT_H */
