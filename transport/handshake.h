/*
 * transport/handshake.h — peer authentication at the start of every
 * connection, as a pure state machine (no I/O), so every backend that
 * crosses a real network (tcp, dpdk, rdma) runs the same code.
 *
 *   client → server  HELLO   version, cluster id, node, shard, nonce_c
 *   server → client  WELCOME version, cluster id, node, shard, nonce_s,
 *                            mac_s = HMAC-SHA256(secret, "keel-hs-server" ‖ T)
 *   client → server  AUTH    mac_c = HMAC-SHA256(secret, "keel-hs-client" ‖ T)
 *
 * where T is the HELLO payload followed by the WELCOME payload without its
 * mac. Each side draws a fresh 32-byte nonce (randombytes_buf) per
 * connection, so a recorded transcript replayed to a server fails at AUTH
 * (its nonce_s differs) and one replayed to a client fails at WELCOME (its
 * nonce_c differs); the server also refuses a client nonce it has seen
 * recently (keel_hs_nonce_cache). The labels differ per direction, so one
 * side's mac is never valid as the other's. Macs are compared in constant
 * time. Payloads are fixed-size and little-endian; the decoders check the
 * exact length before reading and are fuzzed (tests/fuzz/fuzz_wire.c).
 *
 * Ownership: struct keel_hs borrows the secret (it must outlive the
 * handshake) and is wiped by keel_hs_wipe. Everything else is by value.
 */
#ifndef KEEL_TRANSPORT_HANDSHAKE_H
#define KEEL_TRANSPORT_HANDSHAKE_H

#include "keel/base.h"

#define KEEL_HS_NONCE_LEN 32
#define KEEL_HS_MAC_LEN 32
/* version u16, reserved u16, cluster u64, node u32, shard u32, nonce */
#define KEEL_HS_HELLO_LEN (2 + 2 + 8 + 4 + 4 + KEEL_HS_NONCE_LEN)
#define KEEL_HS_WELCOME_LEN (KEEL_HS_HELLO_LEN + KEEL_HS_MAC_LEN)
#define KEEL_HS_AUTH_LEN KEEL_HS_MAC_LEN
/* The shortest secret accepted: 128 bits. */
#define KEEL_HS_SECRET_MIN 16

/* One side's identity, as sent in HELLO or WELCOME. */
struct keel_hs_ident {
	uint16_t version;
	uint64_t cluster_id;
	uint32_t node;
	uint32_t shard;
	uint8_t nonce[KEEL_HS_NONCE_LEN];
};

enum keel_hs_state {
	KEEL_HS_CLIENT_WAIT_WELCOME = 1,
	KEEL_HS_SERVER_WAIT_HELLO,
	KEEL_HS_SERVER_WAIT_AUTH,
	KEEL_HS_DONE,
	KEEL_HS_FAILED,
};

struct keel_hs {
	enum keel_hs_state state;
	const uint8_t *secret; /* borrowed */
	size_t secret_len;
	struct keel_hs_ident self;
	struct keel_hs_ident peer; /* valid from WELCOME (client) / HELLO (server) */
	/* client: the node/shard it dialled; the WELCOME must name them */
	uint32_t want_node, want_shard;
	uint8_t transcript[2 * KEEL_HS_HELLO_LEN];
};

/* Recently seen client nonces, per server endpoint. */
#define KEEL_HS_NONCE_CACHE 256
struct keel_hs_nonce_cache {
	uint32_t next;
	uint32_t used;
	uint8_t nonce[KEEL_HS_NONCE_CACHE][KEEL_HS_NONCE_LEN];
};

/* Client side: fills hello_out (KEEL_HS_HELLO_LEN bytes) with a fresh
 * nonce. want_node/want_shard: the peer it means to reach. */
void keel_hs_client_start(struct keel_hs *hs, const uint8_t *secret, size_t secret_len,
			  uint64_t cluster_id, uint32_t node, uint32_t shard,
			  uint32_t want_node, uint32_t want_shard, uint8_t *hello_out);
/* Client: checks the WELCOME (len bytes at p) and fills auth_out
 * (KEEL_HS_AUTH_LEN). 0 or KEEL_EPROTO / KEEL_EAUTH with the reason in
 * errmsg. On success the handshake is done on the client's side. */
int keel_hs_client_on_welcome(struct keel_hs *hs, const void *p, size_t len,
			      uint8_t *auth_out, char *errmsg);

/* Server side. */
void keel_hs_server_start(struct keel_hs *hs, const uint8_t *secret, size_t secret_len,
			  uint64_t cluster_id, uint32_t node, uint32_t shard);
/* Checks the HELLO and fills welcome_out (KEEL_HS_WELCOME_LEN). cache may
 * be NULL. The caller then checks hs->peer.node is a configured peer. */
int keel_hs_server_on_hello(struct keel_hs *hs, const void *p, size_t len,
			    struct keel_hs_nonce_cache *cache, uint8_t *welcome_out,
			    char *errmsg);
/* Checks the AUTH; on 0 the peer is authenticated. */
int keel_hs_server_on_auth(struct keel_hs *hs, const void *p, size_t len, char *errmsg);

/* Decodes a HELLO/WELCOME identity (exactly KEEL_HS_HELLO_LEN bytes used). */
int keel_hs_decode_ident(const void *p, size_t len, struct keel_hs_ident *out);
void keel_hs_encode_ident(uint8_t *out, const struct keel_hs_ident *id);

void keel_hs_wipe(struct keel_hs *hs);

#endif
