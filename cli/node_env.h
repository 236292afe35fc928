/* keel node's configuration from the environment (cli/node_env.c), used
 * when --config is not given:
 *
 *   KEEL_NODE_ID        this node's id, or "ordinal": the host name's -N
 *                       suffix plus 1 (a StatefulSet's keel-0 is node 1)
 *   KEEL_PEERS          ID=HOST:PORT,... every node, this one included;
 *                       hosts may be DNS names (keel-0.keel)
 *   KEEL_CLUSTER_ID     default 1
 *   KEEL_LISTEN         the peer port; default (and it must agree): this
 *                       node's own KEEL_PEERS entry
 *   KEEL_SECRET_FILE    default /etc/keel/secret
 *   KEEL_DATA_DIR       [log] dir, default /var/lib/keel
 *   KEEL_SHARDS, KEEL_GROUPS, KEEL_PROTOCOL     optional
 *   KEEL_CLIENT_LISTEN, KEEL_TOKEN_FILE         the client port ([client])
 *   KEEL_HTTP_LISTEN, KEEL_READY_LAG            the HTTP port ([http])
 *   KEEL_REACTOR        (read by the runtime) auto's answer
 *
 * Returns 0 with *text the INI text (malloc'd, the caller frees it), or
 * KEEL_ECONFIG with err naming the variable. */
#ifndef KEEL_CLI_NODE_ENV_H
#define KEEL_CLI_NODE_ENV_H

int node_env_config(char **text, char *err);

#endif
