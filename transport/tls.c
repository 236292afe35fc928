/* TLS 1.3 for the TCP backend over memory BIOs; see tls.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "keel/config.h"
#include "transport/tls.h"

struct keel_tls_ctx {
	SSL_CTX *ssl;
	char what[1400];
};

struct keel_tls {
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
};

/* OpenSSL's queued errors, joined, after `what`. */
static int ssl_err(char *errmsg, int code, const char *what)
{
	char all[400] = "";
	size_t k = 0;
	unsigned long e;
	while ((e = ERR_get_error()) != 0 && k + 2 < sizeof(all)) {
		char one[200];
		ERR_error_string_n(e, one, sizeof(one));
		/* "error:0A000086:SSL routines::certificate verify failed":
		 * the reason is after the last ':' */
		const char *r = strrchr(one, ':');
		r = r ? r + 1 : one;
		/* "system lib" says only that errno said it; repeats add nothing */
		if (!strcmp(r, "system lib") || strstr(all, r))
			continue;
		k += (size_t)snprintf(all + k, sizeof(all) - k, "%s%s", k ? "; " : "", r);
	}
	ERR_clear_error();
	return keel_errmsg_set(errmsg, code, "%s%s%s", what, all[0] ? ": " : "", all);
}

/* v relative to the config's directory; false when it does not fit. */
static bool resolve_path(const struct keel_node_config *cfg, const char *v, char *out, size_t len)
{
	int n = (v[0] == '/' || !cfg->base_dir[0]) ? snprintf(out, len, "%s", v)
						   : snprintf(out, len, "%s/%s", cfg->base_dir, v);
	return n >= 0 && (size_t)n < len;
}

int keel_tls_ctx_new(const struct keel_node_config *cfg, struct keel_tls_ctx **out,
		     char *errmsg)
{
	*out = NULL;
	if (!cfg)
		return 0;
	const char *cert = keel_node_config_get(cfg, "tls", "cert");
	const char *key = keel_node_config_get(cfg, "tls", "key");
	const char *ca = keel_node_config_get(cfg, "tls", "ca");
	if (!cert && !key && !ca)
		return 0;
	if (!cert || !key || !ca)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "[tls]: cert, key and ca are all needed (missing: %s%s%s)",
				       cert ? "" : "cert ", key ? "" : "key ", ca ? "" : "ca");
	char pc[512], pk[512], pa[512];
	if (!resolve_path(cfg, cert, pc, sizeof(pc)) || !resolve_path(cfg, key, pk, sizeof(pk)) ||
	    !resolve_path(cfg, ca, pa, sizeof(pa)))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "[tls]: a path longer than %zu bytes",
				       sizeof(pc) - 1);
	struct keel_tls_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	ERR_clear_error();
	c->ssl = SSL_CTX_new(TLS_method());
	int rc = 0;
	char what[1200];
	if (!c->ssl) {
		rc = ssl_err(errmsg, -ENOMEM, "[tls]: SSL_CTX_new");
		goto fail;
	}
	SSL_CTX_set_min_proto_version(c->ssl, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(c->ssl, TLS1_3_VERSION);
	/* No session tickets: peers keep their connections, and a ticket
	 * would be one more secret in memory. */
	SSL_CTX_set_num_tickets(c->ssl, 0);
	SSL_CTX_set_options(c->ssl, SSL_OP_NO_TICKET);
	/* Not SSL_MODE_RELEASE_BUFFERS: it frees and re-allocates the record
	 * buffers between messages; without it one bench-transport --quick
	 * run's 65000 B ping-pong went from 2.8 ms to 0.6 ms (p50, io_uring,
	 * on a machine at load ~15: one pair of runs, not a clean A/B).
	 * Peers keep few connections, so the buffers' memory is cheap. */
	/* Each step that reads a file, and what to say when it fails. */
	const char *bad = NULL, *path = NULL;
	if (SSL_CTX_use_certificate_chain_file(c->ssl, pc) != 1)
		bad = "cert", path = pc;
	else if (SSL_CTX_use_PrivateKey_file(c->ssl, pk, SSL_FILETYPE_PEM) != 1)
		bad = "key", path = pk;
	else if (SSL_CTX_check_private_key(c->ssl) != 1)
		bad = "key (it does not match cert)", path = pk;
	else if (SSL_CTX_load_verify_locations(c->ssl, pa, NULL) != 1)
		bad = "ca", path = pa;
	if (bad) {
		snprintf(what, sizeof(what), "[tls] %s %s", bad, path);
		rc = ssl_err(errmsg, KEEL_ECONFIG, what);
		goto fail;
	}
	/* Mutual: each side sends its certificate and refuses a peer without
	 * one that chains to ca. */
	SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	char subj[256] = "?";
	X509 *x = SSL_CTX_get0_certificate(c->ssl);
	if (x)
		X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
	snprintf(c->what, sizeof(c->what), "cert %s (%s), ca %s", pc, subj, pa);
	*out = c;
	return 0;
fail:
	keel_tls_ctx_free(c);
	return rc;
}

void keel_tls_ctx_free(struct keel_tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl);
	free(ctx);
}

const char *keel_tls_ctx_describe(const struct keel_tls_ctx *ctx)
{
	return ctx->what;
}

const char *keel_tls_ktls_status(void)
{
	static char msg[200];
	char ulp[256] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
	if (f) {
		if (!fgets(ulp, sizeof(ulp), f))
			ulp[0] = 0;
		fclose(f);
		ulp[strcspn(ulp, "\n")] = 0;
	}
	bool has = false;
	for (char *p = strstr(ulp, "tls"); p; p = strstr(p + 1, "tls"))
		if ((p == ulp || p[-1] == ' ') && (p[3] == 0 || p[3] == ' '))
			has = true;
	if (has)
		snprintf(msg, sizeof(msg),
			 "kTLS: the kernel has the tls ULP, not used: TLS runs in user space "
			 "(memory BIOs on the shard's reactor)");
	else
		snprintf(msg, sizeof(msg),
			 "kTLS: not available (no tls in tcp_available_ulp: '%s'): TLS runs in user "
			 "space",
			 ulp);
	return msg;
}

struct keel_tls *keel_tls_new(struct keel_tls_ctx *ctx, bool server)
{
	struct keel_tls *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ssl = SSL_new(ctx->ssl);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	/* An empty read BIO means "no data yet", not end of file. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	if (server)
		SSL_set_accept_state(t->ssl);
	else
		SSL_set_connect_state(t->ssl);
	return t;
}

void keel_tls_free(struct keel_tls *tls)
{
	if (!tls)
		return;
	SSL_free(tls->ssl); /* frees both BIOs */
	free(tls);
}

int keel_tls_feed(struct keel_tls *tls, const void *p, size_t n)
{
	while (n > 0) {
		int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
		int w = BIO_write(tls->rbio, p, chunk);
		if (w <= 0)
			return -ENOMEM;
		p = (const uint8_t *)p + w;
		n -= (size_t)w;
	}
	return 0;
}

/* The reason for a failed handshake or read: the verification result when
 * the peer's certificate was the problem, then OpenSSL's errors. */
static int tls_fail(struct keel_tls *tls, char *errmsg, int code, const char *what)
{
	long v = SSL_get_verify_result(tls->ssl);
	char w[300];
	if (v != X509_V_OK)
		snprintf(w, sizeof(w), "%s (peer certificate: %s)", what,
			 X509_verify_cert_error_string(v));
	else
		snprintf(w, sizeof(w), "%s", what);
	return ssl_err(errmsg, code, w);
}

int keel_tls_handshake(struct keel_tls *tls, char *errmsg)
{
	if (SSL_is_init_finished(tls->ssl))
		return 1;
	ERR_clear_error();
	int r = SSL_do_handshake(tls->ssl);
	if (r == 1)
		return 1;
	int e = SSL_get_error(tls->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	return tls_fail(tls, errmsg, KEEL_EAUTH, "TLS handshake failed");
}

int keel_tls_read(struct keel_tls *tls, void *buf, size_t cap, char *errmsg)
{
	ERR_clear_error();
	int r = SSL_read(tls->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
	if (r > 0)
		return r;
	int e = SSL_get_error(tls->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	if (e == SSL_ERROR_ZERO_RETURN)
		return keel_errmsg_set(errmsg, -ECONNRESET, "TLS: the peer closed the session");
	/* In TLS 1.3 the client finishes before the server has checked its
	 * certificate: a refusal arrives here, as an alert. */
	return tls_fail(tls, errmsg, KEEL_EAUTH, "TLS");
}

int keel_tls_write(struct keel_tls *tls, const void *p, size_t n, char *errmsg)
{
	while (n > 0) {
		ERR_clear_error();
		int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
		int w = SSL_write(tls->ssl, p, chunk);
		if (w <= 0)
			return tls_fail(tls, errmsg, KEEL_EPROTO, "TLS write");
		p = (const uint8_t *)p + w;
		n -= (size_t)w;
	}
	return 0;
}

size_t keel_tls_pending_out(const struct keel_tls *tls)
{
	return BIO_ctrl_pending(tls->wbio);
}

size_t keel_tls_take_out(struct keel_tls *tls, void *buf, size_t cap)
{
	int r = BIO_read(tls->wbio, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
	return r > 0 ? (size_t)r : 0;
}

const char *keel_tls_describe(const struct keel_tls *tls, char *buf, size_t len)
{
	char subj[200] = "no certificate";
	X509 *x = SSL_get0_peer_certificate(tls->ssl);
	if (x)
		X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
	snprintf(buf, len, "%s %s, peer %s", SSL_get_version(tls->ssl),
		 SSL_get_cipher_name(tls->ssl), subj);
	return buf;
}
