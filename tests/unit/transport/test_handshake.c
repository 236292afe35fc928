/* The handshake state machine: success, wrong secret (either side), wrong
 * cluster id, wrong version, replayed transcripts and nonces, wrong peer,
 * malformed messages. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <string.h>

#include "keel/transport.h"
#include "transport/handshake.h"
#include "transport/wire.h"

static const uint8_t secret[] = "0123456789abcdef-cluster-secret";
static const uint8_t other[] = "0123456789abcdef-another-secret";

struct run {
	struct keel_hs c, s;
	uint8_t hello[KEEL_HS_HELLO_LEN], welcome[KEEL_HS_WELCOME_LEN], auth[KEEL_HS_AUTH_LEN];
	char err[KEEL_ERRMSG_LEN];
};

static void start(struct run *r, const uint8_t *csec, const uint8_t *ssec, uint64_t ccl,
		  uint64_t scl)
{
	memset(r, 0, sizeof(*r));
	keel_hs_client_start(&r->c, csec, sizeof(secret) - 1, ccl, 1, 0, 2, 0, r->hello);
	keel_hs_server_start(&r->s, ssec, sizeof(secret) - 1, scl, 2, 0);
}

Test(handshake, success_both_sides_learn_each_other)
{
	struct run r;
	struct keel_hs_nonce_cache cache = {0};
	start(&r, secret, secret, 7, 7);
	cr_assert_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), &cache, r.welcome, r.err), 0, "%s", r.err);
	cr_assert_eq(keel_hs_client_on_welcome(&r.c, r.welcome, sizeof(r.welcome), r.auth, r.err), 0, "%s", r.err);
	cr_assert_eq(keel_hs_server_on_auth(&r.s, r.auth, sizeof(r.auth), r.err), 0, "%s", r.err);
	cr_expect_eq(r.c.state, KEEL_HS_DONE);
	cr_expect_eq(r.s.state, KEEL_HS_DONE);
	cr_expect_eq(r.s.peer.node, 1);
	cr_expect_eq(r.c.peer.node, 2);
	cr_expect_neq(memcmp(r.c.self.nonce, r.s.self.nonce, KEEL_HS_NONCE_LEN), 0);
}

Test(handshake, client_with_wrong_secret_is_refused_by_server)
{
	/* A client that does not check the server's proof and answers anyway
	 * with a mac from the wrong secret. */
	struct run r;
	start(&r, other, secret, 7, 7);
	cr_assert_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), NULL, r.welcome, r.err), 0);
	int rc = keel_hs_client_on_welcome(&r.c, r.welcome, sizeof(r.welcome), r.auth, r.err);
	cr_expect_eq(rc, KEEL_EAUTH, "an honest client with the wrong secret refuses the server");
	cr_expect(strstr(r.err, "proof of the cluster secret"), "%s", r.err);
	/* Force an AUTH made with the wrong secret. */
	r.c.state = KEEL_HS_CLIENT_WAIT_WELCOME;
	struct keel_hs forged = r.c;
	forged.state = KEEL_HS_CLIENT_WAIT_WELCOME;
	memcpy(forged.transcript + KEEL_HS_HELLO_LEN, r.welcome, KEEL_HS_HELLO_LEN);
	/* compute the mac the wrong-secret client would send */
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, other, sizeof(other) - 1);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)"keel-hs-client", 15);
	crypto_auth_hmacsha256_update(&st, forged.transcript, sizeof(forged.transcript));
	crypto_auth_hmacsha256_final(&st, r.auth);
	cr_expect_eq(keel_hs_server_on_auth(&r.s, r.auth, sizeof(r.auth), r.err), KEEL_EAUTH);
	cr_expect_eq(r.s.state, KEEL_HS_FAILED);
}

Test(handshake, wrong_cluster_id)
{
	struct run r;
	start(&r, secret, secret, 7, 8);
	int rc = keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), NULL, r.welcome, r.err);
	cr_expect_eq(rc, KEEL_EAUTH);
	cr_expect(strstr(r.err, "cluster 7, we are in 8"), "%s", r.err);
}

Test(handshake, wrong_version)
{
	struct run r;
	start(&r, secret, secret, 7, 7);
	r.hello[0] = 99;
	cr_expect_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), NULL, r.welcome, r.err), KEEL_EPROTO);
	cr_expect(strstr(r.err, "version 99"), "%s", r.err);
}

Test(handshake, replayed_client_transcript_fails)
{
	/* Record a good handshake, then replay the client's HELLO and AUTH to
	 * a fresh server (without the nonce cache: the mac alone must fail,
	 * because the server's nonce is new). */
	struct run r;
	start(&r, secret, secret, 7, 7);
	cr_assert_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), NULL, r.welcome, r.err), 0);
	cr_assert_eq(keel_hs_client_on_welcome(&r.c, r.welcome, sizeof(r.welcome), r.auth, r.err), 0);
	cr_assert_eq(keel_hs_server_on_auth(&r.s, r.auth, sizeof(r.auth), r.err), 0);

	struct keel_hs s2;
	uint8_t w2[KEEL_HS_WELCOME_LEN];
	keel_hs_server_start(&s2, secret, sizeof(secret) - 1, 7, 2, 0);
	cr_assert_eq(keel_hs_server_on_hello(&s2, r.hello, sizeof(r.hello), NULL, w2, r.err), 0);
	cr_expect_eq(keel_hs_server_on_auth(&s2, r.auth, sizeof(r.auth), r.err), KEEL_EAUTH);
	cr_expect(strstr(r.err, "replayed AUTH"), "%s", r.err);
}

Test(handshake, replayed_nonce_is_refused_by_the_cache)
{
	struct run r;
	struct keel_hs_nonce_cache cache = {0};
	start(&r, secret, secret, 7, 7);
	cr_assert_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), &cache, r.welcome, r.err), 0);
	struct keel_hs s2;
	uint8_t w2[KEEL_HS_WELCOME_LEN];
	keel_hs_server_start(&s2, secret, sizeof(secret) - 1, 7, 2, 0);
	cr_expect_eq(keel_hs_server_on_hello(&s2, r.hello, sizeof(r.hello), &cache, w2, r.err), KEEL_EAUTH);
	cr_expect(strstr(r.err, "replayed HELLO"), "%s", r.err);
}

Test(handshake, replayed_welcome_fails_at_the_client)
{
	struct run r;
	start(&r, secret, secret, 7, 7);
	cr_assert_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), NULL, r.welcome, r.err), 0);
	/* A new client connection gets the old WELCOME. */
	struct keel_hs c2;
	uint8_t h2[KEEL_HS_HELLO_LEN], a2[KEEL_HS_AUTH_LEN];
	keel_hs_client_start(&c2, secret, sizeof(secret) - 1, 7, 1, 0, 2, 0, h2);
	cr_expect_eq(keel_hs_client_on_welcome(&c2, r.welcome, sizeof(r.welcome), a2, r.err), KEEL_EAUTH);
}

Test(handshake, client_refuses_the_wrong_peer)
{
	struct run r;
	memset(&r, 0, sizeof(r));
	/* dials node 3, but node 2 answers (with the right secret) */
	keel_hs_client_start(&r.c, secret, sizeof(secret) - 1, 7, 1, 0, 3, 0, r.hello);
	keel_hs_server_start(&r.s, secret, sizeof(secret) - 1, 7, 2, 0);
	cr_assert_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), NULL, r.welcome, r.err), 0);
	cr_expect_eq(keel_hs_client_on_welcome(&r.c, r.welcome, sizeof(r.welcome), r.auth, r.err), KEEL_EAUTH);
	cr_expect(strstr(r.err, "reached node 2"), "%s", r.err);
}

Test(handshake, malformed_and_out_of_order)
{
	struct run r;
	start(&r, secret, secret, 7, 7);
	cr_expect_eq(keel_hs_server_on_auth(&r.s, r.auth, sizeof(r.auth), r.err), KEEL_EPROTO);
	start(&r, secret, secret, 7, 7);
	cr_expect_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello) - 1, NULL, r.welcome, r.err), KEEL_EPROTO);
	start(&r, secret, secret, 7, 7);
	r.hello[2] = 1; /* reserved field */
	cr_expect_eq(keel_hs_server_on_hello(&r.s, r.hello, sizeof(r.hello), NULL, r.welcome, r.err), KEEL_EPROTO);
	start(&r, secret, secret, 7, 7);
	cr_expect_eq(keel_hs_client_on_welcome(&r.c, r.welcome, 3, r.auth, r.err), KEEL_EPROTO);
}
