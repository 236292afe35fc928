/*
 * keel/transport.h — moving messages between shards of different nodes.
 *
 * One API, several backends (tcp, sim, dpdk, rdma), chosen by name
 * in the node configuration (`transport = tcp`). Consensus, services and
 * compute see only this header, never a backend's.
 *
 * ## Objects
 *
 * struct keel_transport   one endpoint: one shard of one node on one backend.
 *                         Opened by that shard, used only by that shard's
 *                         thread, closed by it. Shard s of node A talks to
 *                         shard s of node B over its own connection; no
 *                         transport and no connection is shared between
 *                         threads, so nothing here takes a lock.
 * struct keel_conn        one authenticated connection to one peer shard,
 *                         addressed by (node id, shard). Owned by the
 *                         transport; the layer above holds a borrowed
 *                         pointer from on_conn_up until on_conn_down returns.
 * struct keel_send_buf    a send buffer handed out by the transport (so
 *                         DPDK can hand out mbuf data and RDMA registered
 *                         memory, and nothing is copied on the hot path).
 * struct keel_msg         a received message, lent to on_recv for the
 *                         duration of the call.
 *
 * Backends embed struct keel_transport and struct keel_conn as the FIRST
 * member of their own structs and fill the public fields; everything after
 * is private to the backend.
 *
 * ## Delivery contract (every backend with KEEL_TRANSPORT_RELIABLE)
 *
 * Messages sent on one connection arrive whole, in the order sent, at most
 * once. A connection that breaks (peer closed or crashed, malformed frame,
 * timeout, failed handshake, local close) is reported exactly once through
 * on_conn_down; messages still queued on it are lost, and the layer above
 * cannot know which of the last ones arrived. Reconnecting (with backoff) is
 * the job of the layer above: call connect() again. Nothing a peer sends
 * before it has authenticated (see the handshake below) ever reaches the
 * layer above; such a peer never produces on_conn_up.
 *
 * ## Backpressure
 *
 * Each connection has a bounded send queue (bytes). When it is full,
 * alloc_send_buf (and keel_transport_send) return KEEL_EFULL, and
 * on_writable is called later, once, when there is room again; nothing is
 * dropped silently. send() of a buffer already allocated never fails for
 * lack of room: the room was reserved by the allocation.
 *
 * ## Buffers and ownership
 *
 * Send:    alloc_send_buf(c, len, &b) → the caller owns b and writes up to
 *          b->cap bytes at b->data, sets b->len and b->type → send(c, b)
 *          gives b back to the transport, whatever send returns. A buffer
 *          the caller decides not to send goes back with discard_send_buf.
 *          A buffer belongs to the connection it was allocated on. Several
 *          buffers may be outstanding at once; they go out in the order of
 *          the send() calls, not of allocation.
 * Receive: on_recv(t, c, m) lends m and m->data until the handler returns.
 *          A handler that needs the bytes later copies them. For TCP the
 *          view points into the reactor's receive buffer (or the
 *          connection's reassembly buffer for a frame that straddles
 *          buffers); for DPDK into the mbuf; for RDMA into the pre-posted
 *          receive buffer, which is re-posted after the handler returns.
 *          Message data is only byte-aligned: read with memcpy.
 *
 * ## Threads, reentrancy
 *
 * All functions on a transport and its connections run on the thread of
 * the shard that opened it (the shard's reactor drives it; for backends
 * with KEEL_TRANSPORT_BUSY_POLL, or without a reactor like sim, the owner
 * also calls poll()). Callbacks run on that thread, from inside the
 * reactor or poll(). A callback may send, allocate, connect and close
 * connections (a close from inside a callback takes effect after the
 * callback returns: the lent message stays valid); it may not close the
 * transport itself.
 *
 * ## Handshake (backends that cross a real network)
 *
 * Every connection starts with: HELLO (client → server: protocol version,
 * cluster id, node id, shard, 32-byte random nonce), WELCOME (server →
 * client: the same fields for the server, its own fresh nonce, and
 * HMAC-SHA256(secret, transcript) proving the server knows the cluster
 * secret), AUTH (client → server: HMAC-SHA256 over the same transcript with
 * a different label). Both nonces are fresh per connection, so a recorded
 * transcript replayed to either side fails. The secret comes from a file
 * named in the node configuration, never from the command line. A failure
 * closes the connection with a logged reason (on the client, on_conn_down
 * with KEEL_EAUTH (KEEL_* codes are negative already); the server logs and drops it without telling the layer
 * above). transport/handshake.h has the codec.
 */
#ifndef KEEL_TRANSPORT_H
#define KEEL_TRANSPORT_H

#include <stdio.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_shard; /* keel/runtime.h */
struct keel_node_config; /* keel/config.h */

/* Version of the wire format and handshake; peers must match exactly. */
#define KEEL_TRANSPORT_PROTO_VERSION 1
/* Largest message payload unless the configuration says otherwise. */
#define KEEL_TRANSPORT_MAX_FRAME_DEFAULT (16u << 20)
/* The configuration may not go above this (frame lengths stay in an int). */
#define KEEL_TRANSPORT_MAX_FRAME_LIMIT (1u << 30)
/* Default bound on one connection's queued, unsent bytes (backpressure). */
#define KEEL_TRANSPORT_SENDQ_DEFAULT (8u << 20)

/* A shard of a node: the unit of addressing. */
struct keel_addr {
	uint32_t node;
	uint32_t shard;
};

/* Capability flags of a backend (keel_transport_ops.caps). */
enum keel_transport_cap {
	/* Whole, in order, at most once per connection; breaks reported. */
	KEEL_TRANSPORT_RELIABLE = 1u << 0,
	/* alloc_send_buf hands out memory the NIC sends from directly. */
	KEEL_TRANSPORT_ZERO_COPY_SEND = 1u << 1,
	/* on_recv's view points at the memory the data arrived in. */
	KEEL_TRANSPORT_ZERO_COPY_RECV = 1u << 2,
	/* Nothing happens unless poll() is called; the reactor busy-polls. */
	KEEL_TRANSPORT_BUSY_POLL = 1u << 3,
	/* Peers authenticate with the cluster secret (handshake above). */
	KEEL_TRANSPORT_AUTH = 1u << 4,
	/* In-process, deterministic from a seed (tests only). */
	KEEL_TRANSPORT_SIMULATED = 1u << 5,
	/* Driven by the shard's reactor, io_uring or epoll (needs cfg->shard). */
	KEEL_TRANSPORT_REACTOR = 1u << 6,
};

/* Public head of an endpoint; a backend's struct starts with it. The layer
 * above reads these fields and may set `user` after open. */
struct keel_transport {
	const struct keel_transport_ops *ops;
	const struct keel_transport_handlers *handlers; /* borrowed from cfg */
	void *user;              /* passed to every handler */
	struct keel_addr self;   /* this endpoint's (node, shard) */
	uint64_t cluster_id;
	uint32_t max_frame;      /* largest payload, bytes */
	char errmsg[KEEL_ERRMSG_LEN]; /* context of the last failure */
};

/* Public head of a connection; a backend's struct starts with it. */
struct keel_conn {
	struct keel_transport *t;
	struct keel_addr peer;   /* valid once up (inbound: from the handshake) */
	bool inbound;            /* accepted (true) or dialled by us (false) */
	void *user;              /* free for the layer above */
};

/* A received message, lent to on_recv until it returns. */
struct keel_msg {
	const void *data;        /* len bytes, byte-aligned */
	uint32_t len;
	uint16_t type;           /* the sender's keel_send_buf.type */
	struct keel_addr from;
};

/* A send buffer lent to the caller by alloc_send_buf until send() or
 * discard_send_buf(). The caller fills data[0..len) and type; the rest of
 * the struct it embeds in is the backend's. */
struct keel_send_buf {
	void *data;              /* cap writable bytes */
	uint32_t cap;            /* >= the len asked for */
	uint32_t len;            /* set by the caller before send(); <= cap */
	uint16_t type;           /* message type for the layer above's demux */
};

/* Callbacks of the layer above; all run on the transport's shard thread.
 * Any may be NULL except on_recv. */
struct keel_transport_handlers {
	/* A connection finished its handshake: c->peer is authenticated.
	 * For a dialled connection, c is what connect() returned. */
	void (*on_conn_up)(struct keel_transport *t, struct keel_conn *c);
	/* A message arrived on c. m and m->data are valid until return. */
	void (*on_recv)(struct keel_transport *t, struct keel_conn *c,
			const struct keel_msg *m);
	/* c is broken or closed (reason: 0 for a local close, else a negative
	 * code, e.g. -ECONNRESET, KEEL_EPROTO, KEEL_EAUTH, KEEL_ETIMEOUT).
	 * Called once per connection that connect() returned or on_conn_up
	 * announced; c is freed when this returns. */
	void (*on_conn_down)(struct keel_transport *t, struct keel_conn *c, int reason);
	/* After KEEL_EFULL on c: there is room again. */
	void (*on_writable)(struct keel_transport *t, struct keel_conn *c);
};

/* A peer node as the configuration lists it. Shard s of that node listens
 * on port + s (each shard has its own listening socket on its own thread). */
struct keel_transport_peer {
	uint32_t node;
	char host[64];           /* numeric IPv4/IPv6 address or host name */
	uint16_t port;           /* base port */
};

/* What open() needs. The transport copies what it keeps (the secret, the
 * peers table, the host strings) except `handlers`, `shard`,
 * `backend_arg` and `node`, which must outlive it. */
struct keel_transport_config {
	uint64_t cluster_id;
	struct keel_addr self;
	uint32_t shards;                 /* shards per node */
	const char *listen_host;         /* our address (never a wildcard by default) */
	uint16_t listen_port;            /* base port: shard s listens on +s */
	const struct keel_transport_peer *peers;
	size_t npeers;
	const uint8_t *secret;           /* cluster secret, copied, wiped on close */
	size_t secret_len;
	uint32_t max_frame;              /* 0: KEEL_TRANSPORT_MAX_FRAME_DEFAULT */
	uint32_t sendq_bytes;            /* 0: KEEL_TRANSPORT_SENDQ_DEFAULT */
	uint32_t handshake_timeout_ms;   /* 0: 5000 (TCP: 1000 for an inbound
					  * connection admitted under pressure) */
	const struct keel_transport_handlers *handlers;
	void *user;                      /* initial t->user */
	struct keel_shard *shard;        /* reactor (KEEL_TRANSPORT_REACTOR backends) */
	const struct keel_node_config *node; /* whole node config, for backend
					      * sections like [dpdk]; may be NULL */
	void *backend_arg;               /* backend-specific (sim: its network) */
	/* Added after the first version (0 keeps the old behaviour). A peer
	 * that stays silent this long while we wait for it (data of ours
	 * unacknowledged, keepalive probes unanswered) breaks its connection
	 * (on_conn_down with -ETIMEDOUT). 0: 30000. TCP: TCP_USER_TIMEOUT,
	 * with keepalive probes from a third of it on. */
	uint32_t peer_timeout_ms;
};

/* Admission counters of one endpoint (one shard), since it opened: what
 * unauthenticated connections cost it. The TCP backend also logs them every
 * 10 s while they change. */
struct keel_transport_stats {
	uint64_t accepted;      /* inbound connections accepted */
	uint64_t refused_addr;  /* refused at accept: its address's pending cap */
	uint64_t refused_full;  /* refused at accept: the pending table full */
	uint64_t evicted;       /* pending connections closed to make room */
	uint64_t hs_timed_out;  /* inbound handshakes past the deadline */
	uint64_t hs_failed;     /* inbound handshakes refused (HELLO, not a peer,
				 * proof, protocol) or abandoned by the client */
	uint64_t authenticated; /* inbound handshakes that succeeded */
	uint32_t pending;       /* unauthenticated connections now */
};

/* A backend. One static const instance per backend, listed in the registry
 * (transport/registry.c) under the build's feature flags. */
struct keel_transport_ops {
	const char *name;                /* "tcp", "sim", "dpdk", "rdma" */
	const char *description;         /* one line for `keel topo` */
	uint32_t caps;                   /* enum keel_transport_cap */
	uint32_t max_msg;                /* backend's own payload limit; 0: none
					  * beyond the configured max_frame */

	/* Creates the endpoint for cfg->self. On failure returns a negative
	 * code and explains in errmsg (KEEL_ERRMSG_LEN, may be NULL). */
	int (*open)(const struct keel_transport_config *cfg,
		    struct keel_transport **out, char *errmsg);
	/* Starts accepting peers (on listen_host:listen_port+shard for TCP). */
	int (*listen)(struct keel_transport *t);
	/* Starts dialling peer; *out is valid at once (sends queue until the
	 * handshake is done) and ends with on_conn_down, or is announced by
	 * on_conn_up first when the handshake succeeds. */
	int (*connect)(struct keel_transport *t, struct keel_addr peer,
		       struct keel_conn **out);
	/* Lends a buffer of at least len bytes for c; KEEL_EFULL when c's
	 * send queue is full, KEEL_ETOOBIG above max_frame, KEEL_ECLOSED on
	 * a closing connection. */
	int (*alloc_send_buf)(struct keel_conn *c, uint32_t len,
			      struct keel_send_buf **out);
	/* Queues b (taken back in every case). 0, or KEEL_ECLOSED when c is
	 * closing (b is freed, nothing sent), KEEL_ETOOBIG if b->len > cap. */
	int (*send)(struct keel_conn *c, struct keel_send_buf *b);
	/* Gives b back unsent. */
	void (*discard_send_buf)(struct keel_conn *c, struct keel_send_buf *b);
	/* Does up to `budget` units of work (received messages, completions);
	 * returns how many it did (>= 0) or a negative code. Reactor-driven
	 * backends may do nothing here beyond flushing batched sends. */
	int (*poll)(struct keel_transport *t, int budget);
	/* Closes c: queued sends are dropped, on_conn_down(c, 0) follows (not
	 * from inside this call). */
	void (*close_conn)(struct keel_conn *c);
	/* Closes every connection and the listener and frees t. No handlers
	 * run from inside it or after it: connections still open get no
	 * on_conn_down (the caller drops its per-connection state itself). For reactor backends call it from the shard
	 * thread while the reactor still runs or before it is destroyed;
	 * in-flight kernel operations are cancelled and drained. */
	void (*close)(struct keel_transport *t);
	/* Optional, added after the first version (NULL: keel_transport_send
	 * does alloc_send_buf + memcpy + send). Same contract as
	 * keel_transport_send; lets a backend hand the caller's bytes to the
	 * kernel or the NIC without first copying them into a send buffer. */
	int (*send_copy)(struct keel_conn *c, uint16_t type, const void *data, uint32_t len);
	/* Optional (NULL: KEEL_ENOTSUP from keel_transport_get_stats): this
	 * endpoint's admission counters. Same thread as every other call. */
	void (*get_stats)(const struct keel_transport *t, struct keel_transport_stats *out);
};

/* ---- The registry: the backends this build has. */

/* NULL-terminated array in preference order (tcp first). */
const struct keel_transport_ops *const *keel_transport_registry(void);
/* The backend called name, or NULL. */
const struct keel_transport_ops *keel_transport_find(const char *name);
/* One line per backend: name, capabilities, description (for `keel topo`
 * and `keel --version`). */
void keel_transport_registry_print(FILE *f);
/* The devices the build's device backends see here, one line each, or why
 * there are none (rdma: ibv_get_device_list), for `keel topo`. */
void keel_transport_devices_print(FILE *f);
/* "reliable,auth,reactor" for caps, into buf of len bytes; returns buf. */
const char *keel_transport_caps_str(uint32_t caps, char *buf, size_t len);

/* ---- Thin wrappers over the ops, so callers read naturally. */

/* Fills *out; KEEL_ENOTSUP for a backend without admission counters. */
int keel_transport_get_stats(const struct keel_transport *t, struct keel_transport_stats *out);

/* Opens the backend called name (see keel_transport_find). */
int keel_transport_open(const char *name, const struct keel_transport_config *cfg,
			struct keel_transport **out, char *errmsg);

static inline int keel_transport_listen(struct keel_transport *t)
{
	return t->ops->listen(t);
}
static inline int keel_transport_connect(struct keel_transport *t,
					 struct keel_addr peer, struct keel_conn **out)
{
	return t->ops->connect(t, peer, out);
}
static inline int keel_transport_alloc(struct keel_conn *c, uint32_t len,
				       struct keel_send_buf **out)
{
	return c->t->ops->alloc_send_buf(c, len, out);
}
static inline int keel_transport_send_buf(struct keel_conn *c, struct keel_send_buf *b)
{
	return c->t->ops->send(c, b);
}
static inline void keel_transport_discard(struct keel_conn *c, struct keel_send_buf *b)
{
	c->t->ops->discard_send_buf(c, b);
}
static inline int keel_transport_poll(struct keel_transport *t, int budget)
{
	return t->ops->poll(t, budget);
}
static inline void keel_transport_close_conn(struct keel_conn *c)
{
	c->t->ops->close_conn(c);
}
static inline void keel_transport_close(struct keel_transport *t)
{
	if (t)
		t->ops->close(t);
}

/* Copying send: alloc + memcpy + send, or the backend's send_copy, which
 * may give the bytes to the kernel without the intermediate copy (TCP does
 * when the message can leave at once). The data stays the caller's and may
 * be reused as soon as this returns. KEEL_EFULL when c is full
 * (on_writable follows). */
int keel_transport_send(struct keel_conn *c, uint16_t type, const void *data,
			uint32_t len);

/* Reconnect backoff for the layer above: delay before attempt n (0-based),
 * doubling from base_ms up to max_ms, with +-25% jitter from `rnd`. */
uint32_t keel_transport_backoff_ms(uint32_t attempt, uint32_t base_ms,
				   uint32_t max_ms, uint64_t rnd);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_TRANSPORT_H */
