/*
 * tests/lib/linearizability.h — a linearizability checker for a key/value
 * register model, in the style of Porcupine (Athalye): the Wing & Gong search
 * with Lowe's memoization of (set of linearized operations, model state),
 * run separately for each key (a KV store is linearizable iff each key is,
 * since keys do not interact: Herlihy & Wing's locality).
 *
 * Model, per key: one 64-bit value; 0 means "absent" (never written or
 * deleted), so puts should write non-zero values.
 *   get(k)            -> the current value (0 if absent)
 *   put(k, v)         -> sets v
 *   del(k)            -> sets 0
 *   cas(k, old, new)  -> ok and sets new if the value is old, else fails
 *
 * Lock model, per key (a lock name), with the lock service's semantics
 * (docs/design/lock.md): holders are "clients" 0..31, each standing for a
 * session (a caller whose clients open several sessions in turn gives each
 * its own number: an old session may still hold what a new one asks for);
 * the lock is free, held exclusively by one, or shared by several; every
 * grant's fencing token is its log index, so it exceeds every token
 * granted before it (shared grants by one command share its index).
 *   acquire(k, mode, wait) -> granted with a token (ok, value = token):
 *                     the lock was compatible (free, or shared and a
 *                     shared request) and the token is above every
 *                     earlier grant's; or the client already holds it (a
 *                     re-ask answered ALREADY: its hold is reported again);
 *                     not granted (busy for a try, wait = 0; timed out for
 *                     a wait): another client held it (FIFO: a shared
 *                     request can be refused beside shared holders while
 *                     an exclusive waiter is queued, so any other holder
 *                     justifies it)
 *   release(k)        -> ok: the client held it, and no longer does
 *   expire(k)         -> the client's session ended (expiry, crash, lost
 *                     lease): its hold of k, if any, is gone
 * A pending acquire grants iff the lock is compatible where it is placed
 * (its token unknown: the token bound is kept); a pending release or
 * expire drops the client's hold if it has one. A caller that does not
 * know whether a pending acquire was granted records a pending expire
 * beside it (the server lets go of it by a release, a cancel or an expiry
 * the client may not see).
 *
 * History: each operation has an invocation time and, if it returned, a
 * response time (any monotonic clock; equal times count as concurrent).
 * An operation that never returned (client timed out, node crashed) is
 * "pending": it may have taken effect at any point after its invocation, or
 * never. The checker models that by giving it a response at +infinity and
 * accepting any outcome for it.
 *
 * Ownership: a keel_lin_history owns its operations; keel_lin_check only
 * reads it. A keel_lin_report's text is malloc'ed by keel_lin_check and
 * freed by keel_lin_report_free.
 */
#ifndef KEEL_TESTS_LINEARIZABILITY_H
#define KEEL_TESTS_LINEARIZABILITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum keel_lin_kind {
	KEEL_LIN_GET = 0,
	KEEL_LIN_PUT = 1,
	KEEL_LIN_DEL = 2,
	KEEL_LIN_CAS = 3,
	KEEL_LIN_ACQUIRE = 4, /* arg: KEEL_LIN_EXCLUSIVE/SHARED; expect: wait (0 = try) */
	KEEL_LIN_RELEASE = 5,
	KEEL_LIN_EXPIRE = 6,
};

enum { KEEL_LIN_EXCLUSIVE = 0, KEEL_LIN_SHARED = 1 };
#define KEEL_LIN_MAX_HOLDERS 32 /* lock model: holders 0..31; tokens below 2^31 */

struct keel_lin_op {
	int client;
	enum keel_lin_kind kind;
	uint64_t key;
	uint64_t arg;    /* put: the value; cas: the new value */
	uint64_t expect; /* cas: the expected value (0 = absent) */
	uint64_t call;   /* invocation time */
	uint64_t ret;    /* response time, valid when !pending */
	bool pending;    /* never returned: outcome unknown */
	/* Output, valid when !pending. */
	uint64_t value; /* get: the value read (0 = absent); acquire: the token */
	bool ok;        /* cas: whether it swapped; acquire: granted; release: ok */
};

struct keel_lin_history {
	struct keel_lin_op *ops;
	size_t n, cap;
};

void keel_lin_history_init(struct keel_lin_history *h);
void keel_lin_history_free(struct keel_lin_history *h);
/* Records an invocation; returns the operation's id for keel_lin_return.
 * The operation is pending until it returns. */
size_t keel_lin_invoke(struct keel_lin_history *h, int client, enum keel_lin_kind kind,
		       uint64_t key, uint64_t arg, uint64_t expect, uint64_t time);
/* Records the response of operation id: value is what a get read, ok is
 * whether a cas swapped (ignored for other kinds). */
void keel_lin_return(struct keel_lin_history *h, size_t id, uint64_t time, uint64_t value,
		     bool ok);
/* Convenience for tests: a complete operation in one call. */
size_t keel_lin_add(struct keel_lin_history *h, int client, enum keel_lin_kind kind, uint64_t key,
		    uint64_t arg, uint64_t expect, uint64_t value, bool ok, uint64_t call,
		    uint64_t ret);

enum keel_lin_verdict {
	KEEL_LIN_LINEARIZABLE = 0,
	KEEL_LIN_VIOLATION = 1,
	KEEL_LIN_UNKNOWN = 2, /* the search budget ran out before an answer */
};

struct keel_lin_report {
	enum keel_lin_verdict verdict;
	uint64_t key;       /* the failing key (VIOLATION or UNKNOWN) */
	size_t keys;        /* keys checked */
	uint64_t steps;     /* search steps taken in total */
	char *text;         /* explanation (VIOLATION/UNKNOWN), else NULL */
};

/* Checks h key by key. max_steps bounds the search per key (0 = no bound).
 * Returns the verdict, also stored in *rep (rep may be NULL). */
enum keel_lin_verdict keel_lin_check(const struct keel_lin_history *h, uint64_t max_steps,
				     struct keel_lin_report *rep);
void keel_lin_report_free(struct keel_lin_report *rep);

/* Formats one operation, e.g. "c2 cas(k3, 5->7)=ok [10,14]". */
void keel_lin_op_format(const struct keel_lin_op *op, char *buf, size_t len);

#endif
