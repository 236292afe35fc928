/*
 * cli/node_resp.h — `keel node`'s [resp] section: the RESP (Redis
 * protocol) listener (keel/resp.h) of a node in services mode.
 *
 *   [resp]
 *   listen        = 127.0.0.1:6379   # absent: no RESP listener
 *   password_file = resp-password    # AUTH's password (relative to the config)
 *   auth          = none             # or this: no password (trusted network only)
 *   max_conns     = 1024
 *
 * A listener needs one of password_file and `auth = none`: the default is
 * to require a password, and running without one is written down.
 * Ownership: struct node_resp is the app's; listen borrows from the
 * config, which outlives it.
 */
#ifndef KEEL_CLI_NODE_RESP_H
#define KEEL_CLI_NODE_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "keel/config.h"
#include "keel/node.h"
#include "keel/resp.h"

struct node_resp {
	const char *listen;        /* NULL: off */
	uint8_t password[256];
	size_t password_len;
	uint32_t max_conns;
	struct keel_resp_port *port; /* shard 0's */
};

/* Reads [resp]; 0 (r->listen NULL when absent) or KEEL_ECONFIG with errmsg. */
int node_resp_load(const struct keel_node_config *cfg, struct node_resp *r, char *errmsg);
/* On every shard after its services started (shard 0 also starts the port). */
int node_resp_start(struct node_resp *r, struct keel_node *node, struct keel_endpoint *ep,
		    uint32_t groups, char *errmsg);
/* On every shard, before its services stop. */
void node_resp_stop(struct node_resp *r, struct keel_endpoint *ep);

#endif
