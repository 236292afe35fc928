/*
 * keel/lock.h — the distributed lock service's state machine
 * (services/lock): sessions with leases, exclusive and shared locks, FIFO
 * waiters, fencing tokens, lock-delay and leader election, one per
 * replicated-log group (keel/rlog.h). Lock names hash over groups.
 *
 * The rules that make it safe, and where each is enforced:
 *
 *  - Time is the state machine's, never a client's: it moves only when a
 *    TICK command is applied, by the milliseconds its leader measured on
 *    its monotonic clock since its previous tick (a new leader's first tick
 *    counts 0). Every replica applies the same ticks, so every replica
 *    expires the same sessions at the same log index.
 *  - A session expires when a TICK finds its deadline (last keepalive +
 *    TTL) passed. Expiry releases its locks and drops its waits in the same
 *    command (atomically), and the owner is told (an EXPIRED event).
 *  - When a tick arrives from a new term (a new leader), every session's
 *    deadline is pushed to at least now + its TTL: the new leader waits out
 *    the longest lease the old one could have granted (a keepalive the old
 *    leader acknowledged but did not commit cannot expire a live client).
 *  - A grant is decided here, in log order, never from a client's clock; a
 *    waiter whose session has expired is removed with it and can never be
 *    granted (etcd#11456).
 *  - Waiters are granted in FIFO order: an exclusive waiter blocks every
 *    later request, shared or not, so writers are not starved; consecutive
 *    shared waiters at the head are granted together.
 *  - A grant's fencing token is the log index of the command that granted
 *    it: it increases with every grant of every lock of the group, across
 *    leader changes, restarts and snapshots, with no counter to lose.
 *  - Only a holder releases (by session and token). After an expiry, the
 *    lock stays ungranted for its lock-delay (Chubby), if it has one.
 *  - Every command carries (session, sequence); a retry is answered from
 *    the session's last result.
 *
 * Clients keep their own conservative view: a lock is theirs until (the
 * time they SENT the keepalive that was acknowledged) + TTL on their own
 * clock, less a drift margin. Since the state machine's time moves no
 * faster than the leader's clock and a keepalive applies after it was
 * sent, the state machine can only expire a session after the client's
 * view has already run out. A protected resource checks fencing tokens
 * (keel_lock_fence_check) so that even a client paused past its lease is
 * refused.
 *
 * Threads and ownership: one struct keel_lock_sm per group, on its shard's
 * thread. Names and values handed to callbacks are valid during the call.
 */
#ifndef KEEL_LOCK_H
#define KEEL_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"
#include "keel/rlog.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_LOCK_MAX_NAME 512u
#define KEEL_LOCK_MAX_VALUE 4096u    /* an election candidate's value */
#define KEEL_LOCK_MAX_TTL_MS (3600u * 1000)
#define KEEL_LOCK_MIN_TTL_MS 100u

enum keel_lock_op {
	KEEL_LOCK_OPEN = 1,       /* open (or renew the TTL of) session */
	KEEL_LOCK_KEEPALIVE = 2,  /* sessions[]: each one's deadline = now + TTL */
	KEEL_LOCK_CLOSE = 3,      /* close session: releases and drops like expiry */
	KEEL_LOCK_ACQUIRE = 4,    /* name, mode, wait_ms (0: try), value */
	KEEL_LOCK_RELEASE = 5,    /* name, token */
	KEEL_LOCK_CANCEL = 6,     /* stop waiting for name */
	KEEL_LOCK_TICK = 7,       /* elapsed_ms, term (leader only) */
};

enum keel_lock_mode {
	KEEL_LOCK_EXCLUSIVE = 1,
	KEEL_LOCK_SHARED = 2,
};

/* A decoded command; pointers borrow from the encoded bytes. */
struct keel_lock_cmd {
	uint8_t op;
	uint64_t session;          /* all but TICK, KEEPALIVE */
	uint64_t seq;              /* all but TICK, KEEPALIVE */
	/* OPEN */
	uint32_t ttl_ms;
	/* ACQUIRE, RELEASE, CANCEL */
	const uint8_t *name;
	uint32_t name_len;
	uint8_t mode;              /* ACQUIRE */
	uint32_t wait_ms;          /* ACQUIRE: 0 = try only */
	uint32_t lock_delay_ms;    /* ACQUIRE: the lock's delay after an expiry */
	const uint8_t *value;      /* ACQUIRE: stored with the holder (elections) */
	uint32_t value_len;
	uint64_t token;            /* RELEASE */
	/* TICK */
	uint64_t elapsed_ms;
	uint64_t term;
	/* KEEPALIVE: n little-endian u64 session ids at `sessions` */
	const uint8_t *sessions;
	uint32_t n_sessions;
};

size_t keel_lock_cmd_size(const struct keel_lock_cmd *c);
/* Returns bytes written, KEEL_ETOOBIG or KEEL_EBADINPUT (a name over the
 * limit or empty, a TTL out of range, session 0, an unknown op or mode). */
int keel_lock_cmd_encode(const struct keel_lock_cmd *c, uint8_t *buf, size_t cap);
/* 0, or KEEL_EPROTO; never reads outside buf. */
int keel_lock_cmd_decode(const uint8_t *buf, size_t len, struct keel_lock_cmd *c);

enum keel_lock_status {
	KEEL_LOCK_OK = 0,           /* done (ACQUIRE: granted now; token set) */
	KEEL_LOCK_WAITING = 1,      /* ACQUIRE: queued; a GRANTED event follows, or
				     * a WAIT_TIMEOUT / EXPIRED one */
	KEEL_LOCK_BUSY = 2,         /* ACQUIRE with wait_ms 0: held or waited for */
	KEEL_LOCK_NO_SESSION = 3,   /* unknown or expired session */
	KEEL_LOCK_NOT_HOLDER = 4,   /* RELEASE by a non-holder or a stale token */
	KEEL_LOCK_NOT_WAITING = 5,  /* CANCEL with nothing to cancel */
	KEEL_LOCK_ALREADY = 6,      /* ACQUIRE of a lock this session holds or waits for */
	KEEL_LOCK_STALE_SEQ = 7,    /* an older sequence of this session */
};

struct keel_lock_result {
	uint8_t status;
	uint64_t token;             /* ACQUIRE granted, RELEASE's token */
	bool duplicate;             /* answered from the session's last result */
};

/* Pushed events: the service delivers them to the sessions' owners. */
enum keel_lock_event_kind {
	KEEL_LOCK_EV_GRANTED = 1,      /* a waiter got the lock (token) */
	KEEL_LOCK_EV_WAIT_TIMEOUT = 2, /* a waiter's wait_ms ran out */
	KEEL_LOCK_EV_EXPIRED = 3,      /* the session expired (or was closed) */
	KEEL_LOCK_EV_RELEASED = 4,     /* a holder let go (for watchers) */
};
struct keel_lock_event {
	uint8_t kind;
	uint64_t session;
	uint64_t seq;                  /* GRANTED, WAIT_TIMEOUT: the ACQUIRE's */
	const uint8_t *name;           /* NULL for EXPIRED */
	uint32_t name_len;
	uint64_t token;
	uint64_t index;                /* the log index that caused it */
};
typedef void keel_lock_event_fn(void *arg, const struct keel_lock_event *ev);

struct keel_lock_sm;

int keel_lock_sm_create(struct keel_lock_sm **out);
void keel_lock_sm_destroy(struct keel_lock_sm *sm);
void keel_lock_sm_on_event(struct keel_lock_sm *sm, keel_lock_event_fn *fn, void *arg);

/* Applies one encoded command at index; a command that does not decode is
 * skipped (every replica alike). *res may be NULL. */
void keel_lock_sm_apply(struct keel_lock_sm *sm, uint64_t index, const void *data, size_t len,
			struct keel_lock_result *res);
/* The last result of session for seq, if seq is its latest: 0 or
 * KEEL_ENOTFOUND. */
int keel_lock_sm_result(const struct keel_lock_sm *sm, uint64_t session, uint64_t seq,
			struct keel_lock_result *res);

int keel_lock_sm_snapshot(const struct keel_lock_sm *sm, void **data, size_t *len);
/* KEEL_ECORRUPT leaves sm as it was. */
int keel_lock_sm_restore(struct keel_lock_sm *sm, uint64_t index, const void *data, size_t len);

/* ---- reads ------------------------------------------------------------ */

uint64_t keel_lock_sm_now(const struct keel_lock_sm *sm);   /* replicated ms */
uint64_t keel_lock_sm_index(const struct keel_lock_sm *sm); /* last applied */
/* 0 with the session's deadline in replicated ms, or KEEL_ENOTFOUND. */
int keel_lock_sm_session(const struct keel_lock_sm *sm, uint64_t session, uint64_t *deadline_ms,
			 uint32_t *ttl_ms);
size_t keel_lock_sm_sessions(const struct keel_lock_sm *sm);

struct keel_lock_holder {
	uint64_t session;
	uint64_t token;
	const uint8_t *value;
	uint32_t value_len;
};
struct keel_lock_waiter {
	uint64_t session;
	uint8_t mode;
	uint64_t deadline_ms;
};
struct keel_lock_info {
	uint8_t mode;                       /* of the holders; 0: free */
	size_t n_holders, n_waiters;
	uint64_t delay_until_ms;            /* lock-delay after an expiry */
};
/* Fills *info and calls the functions (either may be NULL) for each holder
 * (grant order) and waiter (FIFO order). KEEL_ENOTFOUND for a lock nobody
 * holds or waits for. */
int keel_lock_sm_inspect(const struct keel_lock_sm *sm, const void *name, size_t len,
			 struct keel_lock_info *info,
			 void (*holder)(void *arg, const struct keel_lock_holder *h),
			 void (*waiter)(void *arg, const struct keel_lock_waiter *w), void *arg);

/* ---- fencing ------------------------------------------------------------
 * What a protected resource keeps per lock name: the highest token it has
 * accepted. A write with a lower token comes from a holder that has been
 * superseded (it paused past its lease, or lost its session) and is
 * refused. */
struct keel_lock_fence {
	uint64_t highest;
};
/* 0 (accepted: highest moves up to token) or KEEL_ESTALE. */
int keel_lock_fence_check(struct keel_lock_fence *f, uint64_t token);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_LOCK_H */
