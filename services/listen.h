/* services/listen.h: the listening socket of a client-facing port (the
 * client port, the RESP port), internal to services/.
 *
 * Ownership: on success *fd is the caller's (a bound, listening,
 * close-on-exec TCP socket); on failure nothing is left open. */
#ifndef KEEL_SERVICES_LISTEN_H
#define KEEL_SERVICES_LISTEN_H

/* Parses `addr` as HOST:PORT (numeric port 0..65535, HOST a name or an
 * address, IPv6 without brackets: the last ':' splits), binds it with
 * SO_REUSEADDR and listens with `backlog`. Errors say "WHAT: ...". */
int keel_services_listen(const char *what, const char *addr, int backlog, int *fd, char *errmsg);

#endif
