/* keel node's HTTP port: /livez, /readyz, /metrics (Prometheus text
 * format 0.0.4) for `keel node` (cli/node_http.c).
 *
 *   [http]
 *   port = 9100          # or listen = HOST:PORT; keel node --http-port N
 *                        # overrides either (0: any free port). Without
 *                        # any of them the node serves no HTTP.
 *   ready_lag = 1000     # /readyz fails while a group here has applied
 *                        # more than this many entries fewer than it
 *                        # knows committed
 *   refresh_ms = 250     # how often each shard posts its snapshot
 *
 * Ownership: the node_http is the caller's, from node_http_open to
 * node_http_close; cfg is borrowed and must outlive it. begin/group/end
 * run on shard `shard`'s thread only (they write that shard's staging
 * snapshot, which only that thread touches); the pages are rendered on
 * the HTTP thread from the published snapshots. */
#ifndef KEEL_CLI_NODE_HTTP_H
#define KEEL_CLI_NODE_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "keel/config.h"
#include "keel/node.h"
#include "keel/rlog.h"
#include "keel/services.h"

struct node_http;

/* Reads [http]; port_flag >= 0 is --http-port. *out stays NULL (and 0 is
 * returned) when no HTTP port is configured. KEEL_ECONFIG with err on a
 * bad value. */
int node_http_open(const struct keel_node_config *cfg, int port_flag, unsigned nshards,
		   unsigned ngroups, struct node_http **out, char *err);
uint32_t node_http_refresh_ms(const struct node_http *h);
/* Binds and starts the HTTP thread; reactor (static) is reported. */
int node_http_start(struct node_http *h, const char *reactor, char *err);
/* The node serves (set after start, cleared when a stop begins). */
void node_http_serving(struct node_http *h, bool on);

void node_http_begin(struct node_http *h, unsigned shard);
void node_http_group(struct node_http *h, unsigned shard, uint32_t id, const struct keel_rlog *log);
/* port: this shard's client port, or NULL. Publishes the snapshot. */
void node_http_end(struct node_http *h, unsigned shard, struct keel_endpoint *ep,
		   const struct keel_client_port *port);

/* Stops the HTTP thread and frees h; NULL is a no-op. */
void node_http_close(struct node_http *h);

#endif
