/* The node's HTTP port (keel/node.h, "HTTP"): libmicrohttpd on its own
 * thread, so a scrape never runs on a shard and a slow or hostile HTTP
 * client never stalls the reactor. The handler the owner gives renders
 * each page into a memory stream; this file only binds, routes GETs and
 * sends what the handler wrote. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "keel/node.h"

struct keel_http {
	struct MHD_Daemon *d;
	keel_http_fn *fn;
	void *arg;
	uint16_t port;
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct keel_http *h = cls;
	(void)version;
	(void)upload_data;
	/* the first call per request only announces its headers; answer on
	 * the second, once any body (ignored: GET and HEAD only) is read */
	if (!*con_cls) {
		*con_cls = h;
		return MHD_YES;
	}
	*upload_data_size = 0;
	int status = 405;
	char *body = NULL;
	size_t len = 0;
	const char *ctype = "text/plain; charset=utf-8";
	FILE *f = open_memstream(&body, &len);
	if (!f)
		return MHD_NO;
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		fprintf(f, "only GET and HEAD are served here\n");
	else
		status = h->fn(h->arg, url, f, &ctype);
	if (fclose(f) != 0) {
		free(body);
		return MHD_NO;
	}
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", ctype);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, r);
	MHD_destroy_response(r);
	return ok;
}

int keel_http_start(const struct keel_http_config *c, struct keel_http **out, char *errmsg)
{
	*out = NULL;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	char port[8];
	snprintf(port, sizeof(port), "%u", c->port);
	struct addrinfo *ai = NULL;
	const char *host = c->host && c->host[0] ? c->host : NULL;
	int g = getaddrinfo(host, port, &hints, &ai);
	if (g)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "http: %s:%u: %s", host ? host : "*",
				       c->port, gai_strerror(g));
	struct keel_http *h = calloc(1, sizeof(*h));
	if (!h) {
		freeaddrinfo(ai);
		return keel_errmsg_set(errmsg, -ENOMEM, "http: out of memory");
	}
	h->fn = c->fn;
	h->arg = c->arg;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* A few connections and a short timeout: this port is for probes and
	 * a scraper, and a client that holds connections open must not grow
	 * the thread's work without bound. */
	h->d = MHD_start_daemon(flags, c->port, NULL, NULL, on_request, h,
				MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				MHD_OPTION_END);
	int err = errno;
	freeaddrinfo(ai);
	if (!h->d) {
		free(h);
		return keel_errmsg_set(errmsg, err ? -err : -EADDRINUSE,
				       "http: cannot listen on %s:%u", host ? host : "*", c->port);
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = di ? di->port : c->port;
	*out = h;
	return 0;
}

uint16_t keel_http_port(const struct keel_http *h)
{
	return h->port;
}

void keel_http_stop(struct keel_http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	free(h);
}
