/*
 * keel/proto_lock.h — the lock service's frames of the client protocol
 * (keel/proto.h types KEEL_PROTO_LOCK_*): turning a decoded request into
 * a lock command (keel/lock.h) with its checks, and a lock result or
 * event into a frame. Pure (services/proto_lock.c): no I/O, no
 * allocation; fuzzed by tests/fuzz/fuzz_lock_proto.c.
 *
 * What each request carries is listed with its type in keel/proto.h. The
 * checks here are the port's whole validation of a lock request: a frame
 * that passes them becomes a command the state machine's encoder accepts,
 * so a client's bad input is answered with KEEL_EBADINPUT and a reason,
 * and never reaches the log.
 */
#ifndef KEEL_PROTO_LOCK_H
#define KEEL_PROTO_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "keel/lock.h"
#include "keel/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True for the request types this header handles. */
static inline bool keel_proto_is_lock(uint8_t type)
{
	return type >= KEEL_PROTO_LOCK_OPEN && type <= KEEL_PROTO_LOCK_INSPECT;
}

/* Checks a decoded lock request against groups (the cluster's group
 * count) and fills *cmd (borrowing m's bytes; for KEEPALIVE and INSPECT
 * only session, name and the group matter) and *group (the name's group,
 * or GROUP for the session requests). 0, or KEEL_EBADINPUT with *why
 * (static text). */
int keel_proto_lock_request(const struct keel_proto_msg *m, uint32_t groups,
			    struct keel_lock_cmd *cmd, uint32_t *group, const char **why);

/* A lock request's RESULT: status 0 with the lock result, or an error. */
void keel_proto_lock_result(struct keel_proto_msg *out, uint64_t id, int status,
			    const struct keel_lock_result *res);

/* A LOCK_EVENT frame for ev of group (borrows ev's name). */
void keel_proto_lock_event(struct keel_proto_msg *out, uint32_t group,
			   const struct keel_lock_event *ev);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_PROTO_LOCK_H */
