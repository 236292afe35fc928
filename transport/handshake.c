/* Peer authentication; the protocol is described in handshake.h. */
#include <sodium.h>
#include <string.h>

#include "keel/transport.h"
#include "transport/handshake.h"
#include "transport/wire.h"

static const char server_label[] = "keel-hs-server";
static const char client_label[] = "keel-hs-client";

void keel_hs_encode_ident(uint8_t *out, const struct keel_hs_ident *id)
{
	keel_put_le16(out, id->version);
	keel_put_le16(out + 2, 0);
	keel_put_le64(out + 4, id->cluster_id);
	keel_put_le32(out + 12, id->node);
	keel_put_le32(out + 16, id->shard);
	memcpy(out + 20, id->nonce, KEEL_HS_NONCE_LEN);
}

int keel_hs_decode_ident(const void *p, size_t len, struct keel_hs_ident *out)
{
	const uint8_t *b = p;
	if (len < KEEL_HS_HELLO_LEN)
		return KEEL_EPROTO;
	out->version = keel_get_le16(b);
	if (keel_get_le16(b + 2) != 0)
		return KEEL_EPROTO;
	out->cluster_id = keel_get_le64(b + 4);
	out->node = keel_get_le32(b + 12);
	out->shard = keel_get_le32(b + 16);
	memcpy(out->nonce, b + 20, KEEL_HS_NONCE_LEN);
	return 0;
}

static int sodium_ready(void)
{
	/* sodium_init is thread-safe and idempotent (returns 1 when already
	 * done). */
	return sodium_init() < 0 ? -1 : 0;
}

static void mac(const struct keel_hs *hs, const char *label, uint8_t *out)
{
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, hs->secret, hs->secret_len);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label) + 1);
	crypto_auth_hmacsha256_update(&st, hs->transcript, sizeof(hs->transcript));
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

static void init_self(struct keel_hs *hs, const uint8_t *secret, size_t secret_len,
		      uint64_t cluster_id, uint32_t node, uint32_t shard)
{
	memset(hs, 0, sizeof(*hs));
	hs->secret = secret;
	hs->secret_len = secret_len;
	hs->self.version = KEEL_TRANSPORT_PROTO_VERSION;
	hs->self.cluster_id = cluster_id;
	hs->self.node = node;
	hs->self.shard = shard;
	(void)sodium_ready();
	randombytes_buf(hs->self.nonce, KEEL_HS_NONCE_LEN);
}

void keel_hs_client_start(struct keel_hs *hs, const uint8_t *secret, size_t secret_len,
			  uint64_t cluster_id, uint32_t node, uint32_t shard,
			  uint32_t want_node, uint32_t want_shard, uint8_t *hello_out)
{
	init_self(hs, secret, secret_len, cluster_id, node, shard);
	hs->want_node = want_node;
	hs->want_shard = want_shard;
	keel_hs_encode_ident(hs->transcript, &hs->self);
	memcpy(hello_out, hs->transcript, KEEL_HS_HELLO_LEN);
	hs->state = KEEL_HS_CLIENT_WAIT_WELCOME;
}

void keel_hs_server_start(struct keel_hs *hs, const uint8_t *secret, size_t secret_len,
			  uint64_t cluster_id, uint32_t node, uint32_t shard)
{
	init_self(hs, secret, secret_len, cluster_id, node, shard);
	hs->state = KEEL_HS_SERVER_WAIT_HELLO;
}

static int fail(struct keel_hs *hs, char *errmsg, int code, const char *why)
{
	hs->state = KEEL_HS_FAILED;
	return keel_errmsg_set(errmsg, code, "handshake: %s", why);
}

/* Checks what both sides must agree on; the caller says who sent it. */
static int check_ident(struct keel_hs *hs, const struct keel_hs_ident *id, char *errmsg)
{
	if (id->version != KEEL_TRANSPORT_PROTO_VERSION) {
		hs->state = KEEL_HS_FAILED;
		return keel_errmsg_set(errmsg, KEEL_EPROTO,
				       "handshake: peer speaks protocol version %u, we speak %u",
				       id->version, KEEL_TRANSPORT_PROTO_VERSION);
	}
	if (id->cluster_id != hs->self.cluster_id) {
		hs->state = KEEL_HS_FAILED;
		return keel_errmsg_set(errmsg, KEEL_EAUTH,
				       "handshake: peer node %u is in cluster %llu, we are in %llu",
				       id->node, (unsigned long long)id->cluster_id,
				       (unsigned long long)hs->self.cluster_id);
	}
	return 0;
}

int keel_hs_server_on_hello(struct keel_hs *hs, const void *p, size_t len,
			    struct keel_hs_nonce_cache *cache, uint8_t *welcome_out,
			    char *errmsg)
{
#ifndef KEEL_MUTANT_HS_HELLO_ANY_STATE /* MUTANT: a second HELLO restarts the handshake */
	if (hs->state != KEEL_HS_SERVER_WAIT_HELLO)
		return fail(hs, errmsg, KEEL_EPROTO, "HELLO out of order");
#endif
	if (len != KEEL_HS_HELLO_LEN)
		return fail(hs, errmsg, KEEL_EPROTO, "HELLO has the wrong length");
	if (keel_hs_decode_ident(p, len, &hs->peer) < 0)
		return fail(hs, errmsg, KEEL_EPROTO, "malformed HELLO");
	int rc = check_ident(hs, &hs->peer, errmsg);
	if (rc < 0)
		return rc;
	if (cache) {
		uint32_t n = cache->used < KEEL_HS_NONCE_CACHE ? cache->used : KEEL_HS_NONCE_CACHE;
		for (uint32_t i = 0; i < n; i++)
			if (sodium_memcmp(cache->nonce[i], hs->peer.nonce, KEEL_HS_NONCE_LEN) == 0)
				return fail(hs, errmsg, KEEL_EAUTH,
					    "replayed HELLO (client nonce seen before)");
		memcpy(cache->nonce[cache->next], hs->peer.nonce, KEEL_HS_NONCE_LEN);
		cache->next = (cache->next + 1) % KEEL_HS_NONCE_CACHE;
		cache->used++;
	}
	memcpy(hs->transcript, p, KEEL_HS_HELLO_LEN);
	keel_hs_encode_ident(hs->transcript + KEEL_HS_HELLO_LEN, &hs->self);
	memcpy(welcome_out, hs->transcript + KEEL_HS_HELLO_LEN, KEEL_HS_HELLO_LEN);
	mac(hs, server_label, welcome_out + KEEL_HS_HELLO_LEN);
	hs->state = KEEL_HS_SERVER_WAIT_AUTH;
	return 0;
}

int keel_hs_client_on_welcome(struct keel_hs *hs, const void *p, size_t len,
			      uint8_t *auth_out, char *errmsg)
{
	if (hs->state != KEEL_HS_CLIENT_WAIT_WELCOME)
		return fail(hs, errmsg, KEEL_EPROTO, "WELCOME out of order");
	if (len != KEEL_HS_WELCOME_LEN)
		return fail(hs, errmsg, KEEL_EPROTO, "WELCOME has the wrong length");
	if (keel_hs_decode_ident(p, len, &hs->peer) < 0)
		return fail(hs, errmsg, KEEL_EPROTO, "malformed WELCOME");
	int rc = check_ident(hs, &hs->peer, errmsg);
	if (rc < 0)
		return rc;
	memcpy(hs->transcript + KEEL_HS_HELLO_LEN, p, KEEL_HS_HELLO_LEN);
	uint8_t want[KEEL_HS_MAC_LEN];
	mac(hs, server_label, want);
	int bad = sodium_memcmp(want, (const uint8_t *)p + KEEL_HS_HELLO_LEN, KEEL_HS_MAC_LEN);
	sodium_memzero(want, sizeof(want));
	if (bad)
		return fail(hs, errmsg, KEEL_EAUTH,
			    "server's proof of the cluster secret is wrong (different secret or replayed WELCOME)");
#ifdef KEEL_MUTANT_HS_CLIENT_NO_PEER_CHECK
	hs->want_node = hs->peer.node; /* MUTANT: whoever knows the secret will do */
#endif
	if (hs->peer.node != hs->want_node || hs->peer.shard != hs->want_shard) {
		hs->state = KEEL_HS_FAILED;
		return keel_errmsg_set(errmsg, KEEL_EAUTH,
				       "handshake: dialled node %u shard %u but reached node %u shard %u",
				       hs->want_node, hs->want_shard, hs->peer.node,
				       hs->peer.shard);
	}
	mac(hs, client_label, auth_out);
	hs->state = KEEL_HS_DONE;
	return 0;
}

int keel_hs_server_on_auth(struct keel_hs *hs, const void *p, size_t len, char *errmsg)
{
	if (hs->state != KEEL_HS_SERVER_WAIT_AUTH)
		return fail(hs, errmsg, KEEL_EPROTO, "AUTH out of order");
	if (len != KEEL_HS_AUTH_LEN)
		return fail(hs, errmsg, KEEL_EPROTO, "AUTH has the wrong length");
	uint8_t want[KEEL_HS_MAC_LEN];
	mac(hs, client_label, want);
	int bad = sodium_memcmp(want, p, KEEL_HS_MAC_LEN);
#ifdef KEEL_MUTANT_HS_AUTH_ANY_LABEL
	/* MUTANT: a proof under the server's label passes too */
	mac(hs, server_label, want);
	bad = bad && sodium_memcmp(want, p, KEEL_HS_MAC_LEN);
#endif
	sodium_memzero(want, sizeof(want));
	if (bad)
		return fail(hs, errmsg, KEEL_EAUTH,
			    "client's proof of the cluster secret is wrong (different secret or replayed AUTH)");
	hs->state = KEEL_HS_DONE;
	return 0;
}

void keel_hs_wipe(struct keel_hs *hs)
{
	sodium_memzero(hs, sizeof(*hs));
}
