/*
 * services/client_port_int.h — what the client port (client_port.c) lends
 * the lock service's part of it (client_port_lock.c), so that each
 * service's requests live in their own file. Private to services/.
 *
 * Threads: every function here runs on shard 0 (the port's shard), except
 * cport_encode, which any shard may call (it only allocates).
 * Ownership: an outbuf from cport_encode is the caller's until handed to
 * cport_queue (which takes it, also when the connection is closing).
 */
#ifndef KEEL_SERVICES_CLIENT_PORT_INT_H
#define KEEL_SERVICES_CLIENT_PORT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "keel/proto.h"

struct keel_client_port;
struct keel_node;
struct keel_shard;
struct cconn;
struct outbuf;
struct cport_lock;

struct cport_view {
	struct keel_node *node;
	struct keel_shard *sh;  /* shard 0 */
	unsigned nshards;
	uint32_t groups;
};

/* ---- lent by client_port.c ---- */
struct keel_client_port *cport_of(struct cconn *c);
struct cport_view cport_view(const struct keel_client_port *p);
/* The lock part's state of the port (set by cport_lock_start). */
struct cport_lock **cport_lock_slot(struct keel_client_port *p);
bool cport_closing(const struct cconn *c);
/* A frame encoded into a new outbuf, or NULL (out of memory, over the
 * protocol's bounds). */
struct outbuf *cport_encode(const struct keel_proto_msg *m);
void cport_outbuf_free(struct outbuf *b);
void cport_queue(struct cconn *c, struct outbuf *b);
/* Encodes and queues m (closes c if it cannot be encoded). */
void cport_answer(struct cconn *c, const struct keel_proto_msg *m);
/* A request of c is out on a shard: c stays allocated until the matching
 * cport_unhold, which frees it if it closed meanwhile. */
void cport_hold(struct cconn *c);
void cport_unhold(struct cconn *c);
/* Refuses a request and closes c (an ERROR frame first). */
void cport_refuse(struct cconn *c, uint64_t id, int code, const char *why);
void cport_count_request(struct keel_client_port *p);
/* On shard 0, as an answer goes out: counts it by type and result. */
void cport_count_answer(struct keel_client_port *p, uint8_t type, int status);

/* ---- given by client_port_lock.c ---- */
/* 0 or a negative code: the port does not start without it. */
int cport_lock_start(struct keel_client_port *p);
void cport_lock_stop(struct keel_client_port *p);
/* A lock request (keel_proto_is_lock) from c, after HELLO. */
void cport_lock_handle(struct cconn *c, const struct keel_proto_msg *m);
/* c is being freed: forget it as the home of any session. */
void cport_lock_conn_gone(struct keel_client_port *p, struct cconn *c);

/* ---- given by client_port_member.c ---- */
/* A MEMBER request from c, after HELLO. */
void cport_member_handle(struct cconn *c, const struct keel_proto_msg *m);

#endif
