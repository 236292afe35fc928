/*
 * keel/config.h — a node's configuration file (INI, parsed with libinih).
 *
 *   [node]
 *   id          = 1                 # this node's id (>= 1)
 *   cluster     = 42                # cluster id; peers must match (>= 1)
 *   listen      = 127.0.0.1:7100    # base address; shard s listens on port+s
 *   shards      = 2                 # shards per node; 0 or absent: one per core
 *   transport   = tcp               # a backend of keel_transport_registry()
 *   max_frame   = 16M               # largest message payload (K/M/G suffixes)
 *   secret_file = secret            # cluster secret; relative to this file's
 *                                   # directory; mode 0600/0400, owned by us
 *   handshake_timeout_ms = 5000     # a peer that takes longer is dropped
 *   peer_timeout_ms = 30000         # a peer silent this long (our data not
 *                                   # acknowledged, keepalive probes not
 *                                   # answered) is dropped as broken
 *   reactor     = auto              # auto | io_uring | epoll (auto: io_uring
 *                                   # unless refused, or KEEL_REACTOR)
 *   [peers]
 *   1 = 127.0.0.1:7100              # node id = host:port ([v6addr]:port)
 *   2 = 127.0.0.1:7200
 *
 * Syntax: "[section]" headers and "key = value" lines. '#' or ';' starts a
 * comment at the start of a line or after a blank ("id = 1  # me"; a '#'
 * inside a word, "a#b", is not one). Blanks around keys and values do not
 * count. A line may have up to 199 characters without its comment (the
 * parser's line buffer, libinih's; a longer one is an error naming it).
 *
 * Errors name the file, the line and the reason,
 * "n1.ini:4: [node] listen: '127.0.0.1:99999' is not host:port", for every mistake
 * found: a malformed line, an unknown [section] ("did you mean [peers]?"),
 * an unknown key, a key given twice (only keys a layer declares repeatable,
 * like [dpdk] peer, may be), two [peers] with one id or one host:port, a
 * path that is a directory. Sections other than [node] and [peers] belong
 * to other layers ([dpdk], [mr], ...; the table in node/config.c, which a
 * layer extends with one line) and are kept as raw entries for them
 * (keel_node_config_get, entries[] with their line numbers).
 *
 * Loading never touches the network; keel_node_config_validate resolves
 * the hosts. Call it after loading and before creating anything (a data
 * directory, a WAL, a listening socket), so that a config naming a host
 * that does not resolve is refused with its file and line and leaves
 * nothing behind.
 *
 * Ownership: keel_node_config_load fills *cfg, which owns every string,
 * the peers table and its peer_lines, the entries and the secret (in
 * sodium-guarded, wiped memory) until keel_node_config_free. Pointers
 * returned by keel_node_config_get/_peer borrow from cfg.
 */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include "keel/base.h"
#include "keel/runtime.h"
#include "keel/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits of a configuration file. */
#define KEEL_CONFIG_MAX_BYTES (1 << 20)
#define KEEL_CONFIG_MAX_SHARDS 256 /* = KEEL_MAX_SHARDS (keel/runtime.h) */

struct keel_config_entry {
	char *section;
	char *key;
	char *value;
	uint32_t line;  /* where it was given, for the owner's messages */
};

struct keel_node_config {
	char path[512];
	uint32_t node_id;
	uint64_t cluster_id;
	char listen_host[64];
	uint16_t listen_port;
	uint32_t listen_line;             /* line of [node] listen */
	uint32_t shards;                  /* 0: one per core */
	char transport[32];               /* default "tcp" */
	uint32_t max_frame;               /* default KEEL_TRANSPORT_MAX_FRAME_DEFAULT */
	uint32_t handshake_timeout_ms;    /* 0: the transport's default (5 s) */
	uint32_t peer_timeout_ms;         /* 0: the transport's default (30 s) */
	enum keel_reactor_kind reactor;   /* AUTO unless given; keel node --reactor
					   * overrides it */
	char secret_file[512];            /* resolved path */
	/* where relative paths of this config resolve (secret_file, [log]
	 * dir): the file's directory, or parse()'s base_dir; "" = the working
	 * directory */
	char base_dir[512];
	uint8_t *secret;
	size_t secret_len;
	struct keel_transport_peer *peers; /* every [peers] line, self included */
	uint32_t *peer_lines;              /* peer_lines[i]: the line of peers[i] */
	size_t npeers;
	struct keel_config_entry *entries; /* every line of other sections */
	size_t nentries;
};

/* Reads and checks path (a regular file of at most KEEL_CONFIG_MAX_BYTES).
 * On error returns KEEL_ECONFIG (or -errno) with "path:line: what" in
 * errmsg, and *cfg holds nothing to free (freeing it again is harmless).
 * Reads the secret file; touches nothing else. */
int keel_node_config_load(const char *path, struct keel_node_config *cfg, char *errmsg);
/* The same from a string; name is used in messages, base_dir resolves a
 * relative secret_file (NULL: the working directory). For tests and the
 * fuzzer. */
int keel_node_config_parse(const char *text, const char *name, const char *base_dir,
			   struct keel_node_config *cfg, char *errmsg);
/* The checks that need the network, for a loaded cfg: the listen host and
 * every peer host resolve (with getaddrinfo, as the transport will), and
 * no two peers resolve to one address (or to overlapping port ranges, a
 * node listening on port..port+shards-1). 0, or KEEL_ECONFIG with
 * "path:line: [peers] 2 = db2.invalid:7200: host 'db2.invalid' does not
 * resolve (Name or service not known)". Blocks for as long as DNS takes.
 * Changes nothing in cfg. */
int keel_node_config_validate(const struct keel_node_config *cfg, char *errmsg);
void keel_node_config_free(struct keel_node_config *cfg);

/* Raw value of key in a section other than [node]/[peers], or NULL (for a
 * repeatable key, the last one; walk entries[] for all of them). */
const char *keel_node_config_get(const struct keel_node_config *cfg,
				 const char *section, const char *key);
/* The [peers] entry for node, or NULL. */
const struct keel_transport_peer *keel_node_config_peer(const struct keel_node_config *cfg,
							uint32_t node);

/* Fills the transport configuration of one shard from the node config.
 * Pointers in *out borrow from cfg; handlers/user/shard are left for the
 * caller. */
void keel_node_config_transport(const struct keel_node_config *cfg, uint32_t shard,
				struct keel_transport_config *out);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_CONFIG_H */
