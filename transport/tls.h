/*
 * transport/tls.h — TLS 1.3 with mutual certificate authentication for the
 * TCP backend (OpenSSL 3), over memory BIOs: the shard's reactor keeps the
 * socket (multishot receive into its own buffers, batched sendmsg), and
 * this module only turns ciphertext into plaintext and back. The keel
 * handshake (handshake.h: cluster secret, node id) runs inside TLS
 * unchanged, so cluster membership has one code path with or without
 * certificates.
 *
 * Configured by the node config's [tls] section: cert (this node's
 * certificate chain, PEM), key (its private key, PEM), ca (the CA
 * certificates a peer's certificate must chain to, PEM); paths relative to
 * the config file. All three or none: without [tls] the port is plain TCP.
 * Both sides present a certificate and both verify the other's against
 * ca; any certificate the cluster CA signed is accepted (peers are dialled
 * by address, and which node it is the keel handshake proves).
 *
 * kTLS (the kernel doing the record layer, so sends stay zero-copy) needs
 * the tls ULP; keel_tls_ktls_status says whether this kernel has it. This
 * module always runs TLS in user space: with memory BIOs OpenSSL cannot
 * hand the keys to the kernel, and the VM this was built on has no
 * CONFIG_TLS to test an offload path against.
 *
 * Ownership: a keel_tls_ctx belongs to one transport (one shard thread)
 * and outlives its connections; a keel_tls belongs to one connection.
 * Nothing here is shared between threads.
 */
#ifndef KEEL_TRANSPORT_TLS_H
#define KEEL_TRANSPORT_TLS_H

#include "keel/base.h"

struct keel_node_config;
struct keel_tls_ctx;
struct keel_tls;

/* Reads [tls] from cfg (may be NULL). 0 with *out NULL when there is no
 * [tls] section; 0 with a context; or KEEL_ECONFIG (a key missing, an
 * unknown key, a file that does not load, a key that does not match its
 * certificate) with the reason in errmsg. */
int keel_tls_ctx_new(const struct keel_node_config *cfg, struct keel_tls_ctx **out,
		     char *errmsg);
void keel_tls_ctx_free(struct keel_tls_ctx *ctx);
/* "cert FILE (subject), ca FILE" for the log. */
const char *keel_tls_ctx_describe(const struct keel_tls_ctx *ctx);

/* What this kernel offers, for the log: "kTLS: not available (...)" or
 * "kTLS: the kernel has the tls ULP, not used (...)". */
const char *keel_tls_ktls_status(void);

/* A connection's TLS state; NULL when out of memory. */
struct keel_tls *keel_tls_new(struct keel_tls_ctx *ctx, bool server);
void keel_tls_free(struct keel_tls *tls);

/* Ciphertext received from the socket (copied). */
int keel_tls_feed(struct keel_tls *tls, const void *p, size_t n);
/* Advances the handshake: 1 once it is done (and the peer's certificate
 * verified), 0 while it needs more bytes, KEEL_EAUTH with the reason
 * (OpenSSL's and the verification error) in errmsg. */
int keel_tls_handshake(struct keel_tls *tls, char *errmsg);
/* Plaintext: bytes read (> 0), 0 when none is available now, or a negative
 * code: -ECONNRESET when the peer closed TLS, KEEL_EPROTO/KEEL_EAUTH
 * (an alert, a bad record) with the reason in errmsg. */
int keel_tls_read(struct keel_tls *tls, void *buf, size_t cap, char *errmsg);
/* Encrypts n bytes (all of them, or an error). */
int keel_tls_write(struct keel_tls *tls, const void *p, size_t n, char *errmsg);
/* Ciphertext waiting to be sent, and taking up to cap bytes of it. */
size_t keel_tls_pending_out(const struct keel_tls *tls);
size_t keel_tls_take_out(struct keel_tls *tls, void *buf, size_t cap);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384, peer CN=..." into buf. */
const char *keel_tls_describe(const struct keel_tls *tls, char *buf, size_t len);

#endif
