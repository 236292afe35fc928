/* services/listen.c: see listen.h. */
#include "listen.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/base.h"

int keel_services_listen(const char *what, const char *addr, int backlog, int *out, char *errmsg)
{
	*out = -1;
	char host[256];
	const char *colon = strrchr(addr, ':');
	char *end = NULL;
	long port = colon ? strtol(colon + 1, &end, 10) : -1;
	if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host) || !end || *end ||
	    port < 0 || port > 65535)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "%s: listen '%s': expected HOST:PORT", what,
				       addr);
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
			*ai;
	char ps[8];
	snprintf(ps, sizeof(ps), "%ld", port);
	int g = getaddrinfo(host, ps, &hints, &ai);
	if (g)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "%s: %s: %s", what, addr, gai_strerror(g));
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
		int e = -errno;
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return keel_errmsg_set(errmsg, e, "%s: cannot listen on %s: %s", what, addr,
				       keel_strerror(e));
	}
	freeaddrinfo(ai);
	*out = fd;
	return 0;
}
