/*
 * keel/node.h — the node layer (node/): one node per process, between the
 * transport and everything that talks to other nodes (consensus, services,
 * compute).
 *
 * ## Objects
 *
 * struct keel_node       the process: its configuration (keel/config.h), its
 *                        runtime (keel/runtime.h: S pinned shard threads) and
 *                        one endpoint per shard. keel_node_start runs the
 *                        shards and calls the layers' hooks on each.
 * struct keel_endpoint   one shard's view of the cluster: a transport
 *                        endpoint, the peer mesh and the message dispatch.
 *                        Owned by its shard; every call below runs on that
 *                        shard's thread (or, in a simulation, the one thread
 *                        that drives it), and every callback runs there.
 *
 * ## The peer mesh
 *
 * Shard s of a node talks to shard s of every peer over exactly one
 * authenticated, bidirectional connection (so every node must run the same
 * number of shards). Of two nodes, the one with the higher id dials; the
 * other accepts. One rule for both ends means no duplicate connections to
 * tie-break, and a node joining with a new, higher id needs no change on
 * the nodes already running beyond their [peers] entry for it. A dialled
 * connection that breaks, or a dial that fails, is retried with exponential
 * backoff (50 ms doubling to 1 s, jittered from the endpoint's seed). A
 * newly authenticated connection from a peer replaces an older one (the
 * peer restarted); the old one is closed. Messages to a peer without a
 * connection fail at once with KEEL_EUNAVAIL: the layers above resend what
 * matters (Raft's heartbeats and retries, map-reduce's epochs).
 *
 * ## Message types and the group envelope
 *
 * Every message carries a 16-bit type from one table (node/msgtypes.c),
 * which the layers claim by name ("raft", "mr", ...), never by a number of
 * their own. A type is either plain (the payload is the layer's) or
 * grouped: the payload starts with a 32-bit little-endian group id, so one
 * shard hosts many consensus groups on one connection per peer, and the
 * endpoint dispatches each frame to the group that joined under that id.
 * A frame of a type not in the table, of a type nobody on this shard
 * handles, for a group this shard does not host, or too short for its
 * envelope is dropped with a rate-limited log line and a counter; the
 * connection stays up (it is authenticated: a newer peer may speak a type we
 * do not know). Frames before the handshake never get here: the transport
 * drops them (keel/transport.h).
 *
 * ## Collaborators
 *
 * An endpoint takes its clock (timers: redial backoff) and its transport
 * backend (name plus backend argument) from its config, so the
 * deterministic simulation opens endpoints on a virtual clock and the sim
 * transport and runs this same mesh and dispatch code.
 */
#ifndef KEEL_NODE_H
#define KEEL_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keel/base.h"
#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Message types ------------------------------------------------------ */

struct keel_msg_type_info {
	const char *name;  /* "raft", "mr", ... */
	uint16_t id;       /* on the wire (keel_msg.type) */
	bool grouped;      /* payload starts with a u32 group id */
	const char *what;  /* one line, for `keel topo` and logs */
};

/* The wire id of the type called name, or KEEL_ENOTFOUND (a programming
 * error in the caller: the table is static). */
int keel_msg_type_id(const char *name);
/* The table entry for a wire id, or NULL. */
const struct keel_msg_type_info *keel_msg_type_by_id(uint16_t id);
/* The whole table, n entries. */
const struct keel_msg_type_info *keel_msg_types(size_t *n);

/* Bytes of the group envelope in front of a grouped payload. */
#define KEEL_GROUP_ENVELOPE 4u

/* ---- Endpoints ---------------------------------------------------------- */

struct keel_endpoint;

struct keel_endpoint_config {
	const struct keel_node_config *node; /* borrowed; outlives the endpoint */
	uint32_t shard;            /* which shard this endpoint is */
	uint32_t nshards;          /* shards per node (every node the same) */
	struct keel_clock *clock;  /* timers: a shard's clock, or a virtual one */
	/* The reactor shard, for backends driven by it (tcp: KEEL_TRANSPORT_REACTOR)
	 * and for attaching WALs; NULL for backends the owner polls (sim). */
	struct keel_shard *shard_rt;
	const char *transport;     /* backend name; NULL: node->transport */
	void *backend_arg;         /* backend-specific (sim: its network) */
	uint64_t seed;             /* redial jitter; 0: from the clock */
};

/* A received message, lent to the handler until it returns. For a grouped
 * type, data/len are the payload after the envelope. */
struct keel_node_msg {
	struct keel_addr from;
	uint16_t type;
	uint32_t group;            /* grouped types; 0 otherwise */
	const void *data;          /* byte-aligned: read with memcpy / keel_get_le* */
	uint32_t len;
};
typedef void keel_endpoint_recv_fn(void *arg, struct keel_endpoint *ep,
				   const struct keel_node_msg *m);

/* Peer events: any pointer may be NULL. peer_up: a connection to shard s
 * of node came up (a new one after a restart, too: the peer's state may be
 * fresh). peer_down: it broke, or a dial of ours failed before it came up
 * (once per failed attempt, so a peer_down need not follow a peer_up);
 * reason as keel_transport_handlers' on_conn_down (-ECONNREFUSED,
 * -ETIMEDOUT, KEEL_EAUTH: the peer refused our secret or we its). The
 * endpoint redials with backoff whatever the reason; a listener that must
 * not retry (keel send on KEEL_EAUTH) gives up by itself.
 * writable: after KEEL_EFULL on a send to node, there is room again. */
struct keel_endpoint_listener {
	void (*peer_up)(void *arg, struct keel_endpoint *ep, uint32_t node);
	void (*peer_down)(void *arg, struct keel_endpoint *ep, uint32_t node, int reason);
	void (*writable)(void *arg, struct keel_endpoint *ep, uint32_t node);
	void *arg;
};

/* Opens the transport endpoint for cfg->shard, listens, and starts dialling
 * the peers of lower id. Returns 0, or a negative code with errmsg. */
int keel_endpoint_open(const struct keel_endpoint_config *cfg, struct keel_endpoint **out,
		       char *errmsg);
/* Closes every connection and the transport; no callback runs from inside
 * or after it. Handlers and groups still registered are forgotten. */
void keel_endpoint_close(struct keel_endpoint *ep);
/* For backends the owner polls (sim): delivers due events; returns the
 * work done (>= 0) or a negative code. A no-op (0) for reactor backends. */
int keel_endpoint_poll(struct keel_endpoint *ep, int budget);

uint32_t keel_endpoint_node_id(const struct keel_endpoint *ep);
uint32_t keel_endpoint_shard(const struct keel_endpoint *ep);
uint32_t keel_endpoint_nshards(const struct keel_endpoint *ep);
struct keel_clock *keel_endpoint_clock(struct keel_endpoint *ep);
/* NULL in a simulation. */
struct keel_shard *keel_endpoint_reactor(struct keel_endpoint *ep);
const struct keel_node_config *keel_endpoint_node_config(const struct keel_endpoint *ep);
/* Largest payload a send may carry (the transport's max frame, less the
 * envelope). */
uint32_t keel_endpoint_max_payload(const struct keel_endpoint *ep);
/* A connection to node is up. */
bool keel_endpoint_peer_up(const struct keel_endpoint *ep, uint32_t node);

/* Handlers. A plain type has at most one handler per endpoint; a grouped
 * type one per group. Registering again replaces; KEEL_EBADINPUT for a name
 * not in the table or of the other kind. Unregister is a no-op when absent.
 * The arg must stay valid until unregistered or the endpoint closes. */
int keel_endpoint_handle(struct keel_endpoint *ep, const char *type, keel_endpoint_recv_fn *fn,
			 void *arg);
void keel_endpoint_unhandle(struct keel_endpoint *ep, const char *type);
int keel_endpoint_join(struct keel_endpoint *ep, const char *type, uint32_t group,
		       keel_endpoint_recv_fn *fn, void *arg);
void keel_endpoint_leave(struct keel_endpoint *ep, const char *type, uint32_t group);

/* Listeners for peer events, called in registration order. Returns an id
 * >= 0 for keel_endpoint_unlisten, or -ENOMEM. l is copied. */
int keel_endpoint_listen(struct keel_endpoint *ep, const struct keel_endpoint_listener *l);
void keel_endpoint_unlisten(struct keel_endpoint *ep, int id);

/* Sending. `type` is a wire id from keel_msg_type_id (resolve it once);
 * group is ignored for plain types. The copying send takes data for the
 * duration of the call. Returns 0, KEEL_EUNAVAIL (no connection to node:
 * dropped), KEEL_EFULL (node's queue is full: a writable event follows),
 * KEEL_ETOOBIG, KEEL_EBADINPUT (unknown type, node is us). */
int keel_endpoint_send(struct keel_endpoint *ep, uint32_t node, uint16_t type, uint32_t group,
		       const void *data, size_t len);

/* Zero-copy sending: alloc lends a buffer of at least len payload bytes at
 * b->data (the envelope is written in front of it) until send_buf (which
 * takes it back whatever it returns) or discard. Set b->len first. */
struct keel_endpoint_buf {
	void *data;
	uint32_t cap;
	uint32_t len;
	/* private */
	struct keel_send_buf *sb;
	struct keel_conn *conn;
	uint32_t hdr;
};
int keel_endpoint_alloc(struct keel_endpoint *ep, uint32_t node, uint16_t type, uint32_t group,
			uint32_t len, struct keel_endpoint_buf *b);
int keel_endpoint_send_buf(struct keel_endpoint *ep, struct keel_endpoint_buf *b);
void keel_endpoint_discard(struct keel_endpoint *ep, struct keel_endpoint_buf *b);

/* Per-shard state of the layers above, kept on the shard's endpoint so a
 * layer can find its own objects from any callback on that shard (the
 * replicated logs a shard hosts, a service's tables). One slot per layer,
 * named here so two layers never share one. The endpoint never touches
 * what a slot points to. */
enum keel_endpoint_slot {
	KEEL_SLOT_RLOG = 0,   /* consensus/: the logs of this shard */
	KEEL_SLOT_CLIENT = 1, /* the client port's server */
	KEEL_SLOT_KV = 2,     /* services/kv */
	KEEL_SLOT_LOCK = 3,   /* services/lock */
	KEEL_SLOT_MR = 4,     /* compute/mr */
	KEEL_SLOT_DF = 5,     /* compute/df */
	KEEL_SLOT_APP = 6,    /* the program that runs the node (cli/) */
	KEEL_SLOT_RESP = 7,   /* services/resp_port.c: forwarded writes */
	KEEL_SLOT_COUNT = 8,
};
void *keel_endpoint_slot(const struct keel_endpoint *ep, enum keel_endpoint_slot slot);
void keel_endpoint_set_slot(struct keel_endpoint *ep, enum keel_endpoint_slot slot, void *v);

/* What the transport's receive callback does with every authenticated
 * frame: checks its type (and group envelope) and hands it to the handler,
 * or drops and counts it (keel_endpoint_stats). Exposed for the fuzz target
 * of the envelope and for transports that deliver through other paths;
 * `from` must be an authenticated peer. */
void keel_endpoint_dispatch(struct keel_endpoint *ep, struct keel_addr from,
			    const struct keel_msg *m);

struct keel_endpoint_stats {
	uint64_t sent, received;
	uint64_t unavailable;      /* sends with no connection */
	uint64_t full;             /* sends refused with KEEL_EFULL */
	uint64_t unknown_type;     /* frames of a type not in the table */
	uint64_t unhandled;        /* frames of a type nobody here handles */
	uint64_t unknown_group;    /* grouped frames for a group not here */
	uint64_t malformed;        /* too short for the envelope */
	uint64_t conns_up, conns_down, dials, replaced;
};
void keel_endpoint_get_stats(const struct keel_endpoint *ep, struct keel_endpoint_stats *st);

/* ---- The node process --------------------------------------------------- */

struct keel_node;

struct keel_node_options {
	const char *cpuset;          /* NULL: every allowed PU */
	bool overcommit;
	bool busy_poll;              /* KEEL_IDLE_BUSY_POLL */
	const char *synthetic_topology; /* tests */
	enum keel_reactor_kind reactor; /* AUTO: keel_reactor_default() */
};

/* The layers' part of a node: called on each shard's thread. start runs
 * after the shard's endpoint is open, before any shard's loop starts; a
 * negative return stops the node with errmsg. stop runs when the node
 * stops, before the endpoint closes. */
struct keel_node_hooks {
	int (*start)(void *arg, struct keel_node *n, struct keel_endpoint *ep, char *errmsg);
	void (*stop)(void *arg, struct keel_node *n, struct keel_endpoint *ep);
	void *arg;
};

/* Builds the runtime for cfg (cfg->shards shards, 0 = one per core) without
 * starting it. cfg is borrowed and must outlive the node. */
int keel_node_create(const struct keel_node_config *cfg, const struct keel_node_options *o,
		     struct keel_node **out, char *errmsg);
/* Starts the shards: opens each endpoint and calls hooks->start on it.
 * Returns once every shard started, or the first error (errmsg) after
 * everything started was stopped again. */
int keel_node_start(struct keel_node *n, const struct keel_node_hooks *hooks, char *errmsg);
/* Any thread, async-signal-safe. */
void keel_node_stop(struct keel_node *n);
/* SIGINT and SIGTERM stop the node (keel_runtime_stop_on_signals). */
int keel_node_stop_on_signals(struct keel_node *n);
/* Blocks until the node has stopped (hooks->stop has run on every shard,
 * the endpoints are closed); returns the run's result. */
int keel_node_wait(struct keel_node *n);
void keel_node_destroy(struct keel_node *n);

const struct keel_node_config *keel_node_config(const struct keel_node *n);
struct keel_runtime *keel_node_runtime(struct keel_node *n);
unsigned keel_node_shard_count(const struct keel_node *n);
/* Shard i's endpoint: use it only on shard i's thread. */
struct keel_endpoint *keel_node_endpoint(struct keel_node *n, unsigned shard);

/* ---- HTTP: health and metrics (node/http.c) -----------------------------
 *
 * A small HTTP/1.1 server (libmicrohttpd) on a thread of its own, off the
 * shards: the page handler runs on that thread, so it must read what the
 * shards own only through something safe across threads (atomics, or a
 * snapshot each shard posts under a lock: cli/node_http.c). GET and HEAD
 * only; anything else is answered 405 without calling the handler. */
struct keel_http;
/* Writes the page for path into body, may set *ctype (a static string),
 * returns the HTTP status. body and path are lent for the call. */
typedef int keel_http_fn(void *arg, const char *path, FILE *body, const char **ctype);
struct keel_http_config {
	const char *host;    /* address or name to bind; NULL or "": every address */
	uint16_t port;       /* 0: any free port (keel_http_port says which) */
	keel_http_fn *fn;
	void *arg;           /* outlives the server */
};
int keel_http_start(const struct keel_http_config *c, struct keel_http **out, char *errmsg);
uint16_t keel_http_port(const struct keel_http *h);
/* Waits for a page being rendered, closes every connection; NULL is a no-op. */
void keel_http_stop(struct keel_http *h);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_NODE_H */
