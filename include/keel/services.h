/*
 * keel/services.h — a node's replicated services on one shard
 * (services/service.c): the KV store (keel/kv.h) and the lock service
 * (keel/lock.h), both on the same replicated-log groups (keel/rlog.h).
 *
 * A node runs G groups; group g lives on shard g mod S of every node and
 * elects its own leader, so writes spread over shards and leaders over
 * nodes. Keys and lock names hash to groups (keel_service_group_of, the
 * same function in every node and client). Each group's log carries both
 * services' commands, each entry tagged with its service, so one group has
 * one WAL and one leader for both; its snapshot holds both states.
 *
 * What the services object adds around the state machines:
 *   - writes become proposals and are answered from the state machine's
 *     exactly-once table (a retry is answered, not applied again);
 *   - reads run after a read barrier (linearizable) or at once
 *     (serializable);
 *   - KV watches: the history replayed, then every change live;
 *   - the lock service's clock: while this node leads a group that has
 *     sessions, it proposes a TICK every lock tick (the elapsed time on its
 *     monotonic clock), preceded by one KEEPALIVE command carrying every
 *     session that asked for a keepalive since the last tick (cheap:
 *     thousands of keepalives are one log entry);
 *   - the lock service's events (grants, wait timeouts, expiries) are
 *     handed to the config's on_lock_event, on every replica (the client
 *     port pushes those of its own clients).
 *
 * Threads and ownership: one struct keel_services per shard, on that
 * shard's thread; found again with keel_services_of(endpoint). Callbacks
 * run on that thread; pointers they get are valid during the call.
 */
#ifndef KEEL_SERVICES_H
#define KEEL_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/kv.h"
#include "keel/lock.h"
#include "keel/rlog.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_endpoint;
struct keel_services;

/* The group of a key or lock name, out of ngroups. */
uint32_t keel_service_group_of(const void *key, size_t len, uint32_t ngroups);

/* Service tags: the first byte of every log entry of a services group. */
enum keel_service_tag {
	KEEL_SERVICE_KV = 1,
	KEEL_SERVICE_LOCK = 2,
};

struct keel_services_config {
	struct keel_endpoint *ep;                 /* this shard's */
	const struct keel_rlog_settings *log;     /* [log]: groups, dir, timing */
	uint32_t groups;                          /* G >= 1 */
	struct keel_kv_config kv;
	uint32_t lock_tick_ms;                    /* 0: 100 */
	/* optional callbacks, with arg */
	void (*on_leader)(void *arg, uint32_t group, uint32_t leader, uint64_t epoch, bool self);
	void (*on_error)(void *arg, uint32_t group, int code, const char *why);
	void (*on_lock_event)(void *arg, uint32_t group, const struct keel_lock_event *ev);
	/* Optional: adjusts each group's log config from [log] just before it
	 * opens (the lock simulation injects its disk, the election seed and
	 * the snapshot cadence this way, so it runs this production code). */
	void (*log_config)(void *arg, uint32_t group, struct keel_rlog_config *lc);
	void *arg;
};

/* Opens every group g < groups with g mod S == this shard. 0, or a
 * negative code with errmsg (whatever opened is closed again). */
int keel_services_start(const struct keel_services_config *cfg, struct keel_services **out,
			char *errmsg);
/* Closes the groups: pending calls complete with KEEL_ESTOPPED. */
void keel_services_stop(struct keel_services *s);
struct keel_services *keel_services_of(struct keel_endpoint *ep);
/* The group's log on this shard, or NULL. */
struct keel_rlog *keel_services_log(struct keel_services *s, uint32_t group);
uint32_t keel_services_groups(const struct keel_services *s); /* G */

/* ---- KV ----------------------------------------------------------------- */

/* status 0 with *res (the command's outcome), or a log error:
 * KEEL_ENOTLEADER (nothing applied), KEEL_ETIMEOUT (outcome unknown),
 * KEEL_EDURABLE, KEEL_ESTOPPED. */
typedef void keel_kv_write_fn(void *arg, int status, const struct keel_kv_result *res);
/* Proposes c (time_ms is set here). 0: cb runs exactly once later.
 * KEEL_ENOTFOUND (group not on this shard), KEEL_ENOTLEADER, KEEL_ETOOBIG,
 * KEEL_EBADINPUT, ... */
int keel_kv_write(struct keel_services *s, uint32_t group, const struct keel_kv_cmd *c,
		  keel_kv_write_fn *cb, void *arg);
/* status 0 and the store to read inside the callback, or an error. */
typedef void keel_kv_read_fn(void *arg, int status, const struct keel_kv *kv);
int keel_kv_read(struct keel_services *s, uint32_t group, bool linearizable,
		 keel_kv_read_fn *cb, void *arg);
/* fn gets every change of key (or keys with the prefix) from from_rev
 * (0: the next change), the history first, then live; KEEL_ESTALE when
 * from_rev is older than the history. fn may unwatch only itself. When
 * this replica installs a snapshot that skips revisions the watch wanted,
 * fn gets one last event with `compacted` set (rev: the new revision) and
 * the watch is gone (do not unwatch it). */
int keel_kv_watch(struct keel_services *s, uint32_t group, const void *key, size_t key_len,
		  bool prefix, uint64_t from_rev, keel_kv_event_fn *fn, void *arg, uint64_t *id);
void keel_kv_unwatch(struct keel_services *s, uint64_t id);

/* ---- locks -------------------------------------------------------------- */

/* status 0 with *res (the command's outcome: OK, WAITING, BUSY,
 * NO_SESSION...), or a log error as for KV writes. */
typedef void keel_lock_done_fn(void *arg, int status, const struct keel_lock_result *res);
/* Proposes a session-bearing lock command (OPEN, CLOSE, ACQUIRE, RELEASE,
 * CANCEL). 0: cb runs exactly once later. */
int keel_lock_call(struct keel_services *s, uint32_t group, const struct keel_lock_cmd *c,
		   keel_lock_done_fn *cb, void *arg);
/* Renews session in the group's next KEEPALIVE command (batched with
 * every other keepalive until the next lock tick). cb (may be NULL) runs
 * when that command is applied (status 0; res->status KEEL_LOCK_NO_SESSION
 * when the session no longer exists there, so a client that missed its
 * expiry learns of it) or failed. Leader only: KEEL_ENOTLEADER otherwise. */
int keel_lock_keepalive(struct keel_services *s, uint32_t group, uint64_t session,
			keel_lock_done_fn *cb, void *arg);
/* A second receiver of this shard's lock events, besides the config's
 * on_lock_event: the client port sets it on every shard to push grants
 * and expiries to its clients. Set before the shard's loop runs (a
 * node's start hooks), or on the shard's thread; fn NULL removes it. */
void keel_services_lock_listener(struct keel_services *s,
				 void (*fn)(void *arg, uint32_t group, const struct keel_lock_event *ev),
				 void *arg);
typedef void keel_lock_read_fn(void *arg, int status, const struct keel_lock_sm *sm);
int keel_lock_read(struct keel_services *s, uint32_t group, bool linearizable,
		   keel_lock_read_fn *cb, void *arg);

/* ---- the client port ------------------------------------------------------
 * A node's client port (services/client_port.c): the client protocol
 * (keel/proto.h) over TCP on shard 0's reactor, each request run on the
 * services of its group's shard. Started on shard 0's endpoint once every
 * shard's services are started (a node's start hooks run before any loop);
 * stopped from shard 0's stop hook. */
struct keel_node;
struct keel_client_port;
struct keel_client_port_config {
	struct keel_node *node;    /* to reach every shard's endpoint */
	const char *listen;        /* HOST:PORT */
	uint32_t groups;           /* G, as the services run */
	const uint8_t *token;      /* NULL/0: no token asked; borrowed, outlives the port */
	size_t token_len;
	uint32_t max_conns;        /* 0: 1024 */
	uint32_t hello_timeout_ms; /* 0: 5000 */
	uint32_t max_pending;      /* connections waiting for HELLO at once; 0: 128 */
};
#define KEEL_CLIENT_PORT_TYPES 64
#define KEEL_CLIENT_RESULTS 3
struct keel_client_port_stats {
	uint64_t accepted, refused, auth_failed, hello_timeouts, bad_frames, slow_closed;
	uint64_t evicted;          /* waiting for HELLO, closed to admit another address */
	uint64_t requests;
	uint64_t conns;            /* open now (keel_client_port_get_stats fills it) */
	/* Answers sent, by request type (enum keel_proto_type, < 64) and
	 * result class: for /metrics' client requests by type and result. */
	uint64_t answers[KEEL_CLIENT_PORT_TYPES][KEEL_CLIENT_RESULTS];
};
/* The result classes of answers[][]: 0 ok, KEEL_ENOTLEADER (a redirect),
 * anything else. */
enum { KEEL_CLIENT_OK = 0, KEEL_CLIENT_REDIRECT = 1, KEEL_CLIENT_ERROR = 2 };
int keel_client_port_start(const struct keel_client_port_config *cfg, struct keel_endpoint *ep,
			   struct keel_client_port **out, char *errmsg);
void keel_client_port_stop(struct keel_client_port *p);
void keel_client_port_get_stats(const struct keel_client_port *p,
				struct keel_client_port_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_SERVICES_H */
