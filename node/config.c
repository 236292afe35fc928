/* The node configuration file; the format is in keel/config.h. */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"

struct parse {
	struct keel_node_config *cfg;
	const char *name;
	const char *base_dir;
	char err[KEEL_ERRMSG_LEN]; /* first error, without the line */
	int err_code;
	bool have_id, have_cluster, have_listen, have_secret;
};

static int perr(struct parse *p, int code, const char *fmt, ...) KEEL_PRINTF(3, 4);
static int perr(struct parse *p, int code, const char *fmt, ...)
{
	if (!p->err_code) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err, sizeof(p->err), fmt, ap);
		va_end(ap);
		p->err_code = code;
	}
	return 0; /* inih: error on this line */
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	if (!*s || *s == '-')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!*s || *s == '-')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return false;
	unsigned shift = 0;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*end || v > (UINT64_MAX >> 31))
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

/* "host:port" or "[v6]:port". */
static bool parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon;
	const char *h = s;
	size_t hl;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return false;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return false;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen)
		return false;
	uint64_t p;
	if (!parse_u64(colon + 1, 65535, &p) || p == 0)
		return false;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)p;
	return true;
}

/* Reads the secret, refusing files others can read or we do not own. */
static int load_secret(struct parse *p, const char *value)
{
	struct keel_node_config *cfg = p->cfg;
	if (value[0] == '/' || !p->base_dir)
		snprintf(cfg->secret_file, sizeof(cfg->secret_file), "%s", value);
	else
		snprintf(cfg->secret_file, sizeof(cfg->secret_file), "%s/%s", p->base_dir, value);
	int fd = open(cfg->secret_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return perr(p, -errno, "[node] secret_file %s: %s", cfg->secret_file,
			    keel_strerror(-errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return perr(p, KEEL_ECONFIG, "[node] secret_file %s: not a regular file",
			    cfg->secret_file);
	}
	if (st.st_mode & 077) {
		close(fd);
		return perr(p, KEEL_ECONFIG,
			    "[node] secret_file %s: readable or writable by group or others (mode %04o); chmod 600 it",
			    cfg->secret_file, (unsigned)(st.st_mode & 07777));
	}
	if (st.st_uid != geteuid()) {
		close(fd);
		return perr(p, KEEL_ECONFIG,
			    "[node] secret_file %s: owned by uid %u, not by us (uid %u)",
			    cfg->secret_file, (unsigned)st.st_uid, (unsigned)geteuid());
	}
	if (st.st_size > 4096) {
		close(fd);
		return perr(p, KEEL_ECONFIG, "[node] secret_file %s: larger than 4096 bytes",
			    cfg->secret_file);
	}
	uint8_t buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n < 0)
		return perr(p, -errno, "[node] secret_file %s: %s", cfg->secret_file,
			    keel_strerror(-errno));
	/* A trailing newline from `echo ... > secret` is not part of it. */
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n < 16) {
		sodium_memzero(buf, sizeof(buf));
		return perr(p, KEEL_ECONFIG,
			    "[node] secret_file %s: secret shorter than 16 bytes",
			    cfg->secret_file);
	}
	if (cfg->secret) {
		sodium_memzero(cfg->secret, cfg->secret_len);
		free(cfg->secret);
	}
	cfg->secret = malloc((size_t)n);
	if (!cfg->secret)
		return perr(p, -ENOMEM, "out of memory");
	memcpy(cfg->secret, buf, (size_t)n);
	cfg->secret_len = (size_t)n;
	sodium_memzero(buf, sizeof(buf));
	p->have_secret = true;
	return 1;
}

static int node_key(struct parse *p, const char *key, const char *value)
{
	struct keel_node_config *cfg = p->cfg;
	uint64_t v;
	if (!strcmp(key, "id")) {
		if (!parse_u64(value, UINT32_MAX, &v) || v == 0)
			return perr(p, KEEL_ECONFIG, "[node] id: '%s' is not a node id (1..%u)",
				    value, UINT32_MAX);
		cfg->node_id = (uint32_t)v;
		p->have_id = true;
	} else if (!strcmp(key, "cluster")) {
		if (!parse_u64(value, UINT64_MAX, &v) || v == 0)
			return perr(p, KEEL_ECONFIG, "[node] cluster: '%s' is not a cluster id (a positive integer)",
				    value);
		cfg->cluster_id = v;
		p->have_cluster = true;
	} else if (!strcmp(key, "listen")) {
		if (!parse_hostport(value, cfg->listen_host, sizeof(cfg->listen_host),
				    &cfg->listen_port))
			return perr(p, KEEL_ECONFIG, "[node] listen: '%s' is not host:port", value);
		p->have_listen = true;
	} else if (!strcmp(key, "shards")) {
		if (!parse_u64(value, 1024, &v))
			return perr(p, KEEL_ECONFIG, "[node] shards: '%s' is not 0..1024", value);
		cfg->shards = (uint32_t)v;
	} else if (!strcmp(key, "transport")) {
		if (!keel_transport_find(value))
			return perr(p, KEEL_ECONFIG, "[node] transport: '%s' is not in this build (see keel --version)",
				    value);
		snprintf(cfg->transport, sizeof(cfg->transport), "%s", value);
	} else if (!strcmp(key, "max_frame")) {
		if (!parse_size(value, &v) || v < 64 || v > KEEL_TRANSPORT_MAX_FRAME_LIMIT)
			return perr(p, KEEL_ECONFIG, "[node] max_frame: '%s' is not a size from 64 to 1G",
				    value);
		cfg->max_frame = (uint32_t)v;
	} else if (!strcmp(key, "handshake_timeout_ms")) {
		if (!parse_u64(value, 3600000, &v) || v == 0)
			return perr(p, KEEL_ECONFIG,
				    "[node] handshake_timeout_ms: '%s' is not 1..3600000", value);
		cfg->handshake_timeout_ms = (uint32_t)v;
	} else if (!strcmp(key, "peer_timeout_ms")) {
		if (!parse_u64(value, 3600000, &v) || v < 1000)
			return perr(p, KEEL_ECONFIG,
				    "[node] peer_timeout_ms: '%s' is not 1000..3600000", value);
		cfg->peer_timeout_ms = (uint32_t)v;
	} else if (!strcmp(key, "secret_file")) {
		return load_secret(p, value);
	} else if (!strcmp(key, "secret")) {
		return perr(p, KEEL_ECONFIG,
			    "[node] secret: the secret goes in a file named by secret_file, never in the config");
	} else {
		return perr(p, KEEL_ECONFIG, "[node] unknown key '%s'", key);
	}
	return 1;
}

static int peer_key(struct parse *p, const char *key, const char *value)
{
	struct keel_node_config *cfg = p->cfg;
	uint64_t id;
	if (!parse_u64(key, UINT32_MAX, &id) || id == 0)
		return perr(p, KEEL_ECONFIG, "[peers] '%s' is not a node id", key);
	if (keel_node_config_peer(cfg, (uint32_t)id))
		return perr(p, KEEL_ECONFIG, "[peers] node %s listed twice", key);
	struct keel_transport_peer peer = {.node = (uint32_t)id};
	if (!parse_hostport(value, peer.host, sizeof(peer.host), &peer.port))
		return perr(p, KEEL_ECONFIG, "[peers] %s: '%s' is not host:port", key, value);
	struct keel_transport_peer *np = realloc(cfg->peers, (cfg->npeers + 1) * sizeof(*np));
	if (!np)
		return perr(p, -ENOMEM, "out of memory");
	cfg->peers = np;
	cfg->peers[cfg->npeers++] = peer;
	return 1;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse *p = user;
	if (!key)
		return 1; /* a section header alone */
	if (!strcmp(section, "node"))
		return node_key(p, key, value);
	if (!strcmp(section, "peers"))
		return peer_key(p, key, value);
	if (!section[0])
		return perr(p, KEEL_ECONFIG, "'%s' outside any [section]", key);
	struct keel_node_config *cfg = p->cfg;
	struct keel_config_entry *ne = realloc(cfg->entries, (cfg->nentries + 1) * sizeof(*ne));
	if (!ne)
		return perr(p, -ENOMEM, "out of memory");
	cfg->entries = ne;
	struct keel_config_entry *e = &cfg->entries[cfg->nentries];
	e->section = strdup(section);
	e->key = strdup(key);
	e->value = strdup(value);
	if (!e->section || !e->key || !e->value) {
		free(e->section);
		free(e->key);
		free(e->value);
		return perr(p, -ENOMEM, "out of memory");
	}
	cfg->nentries++;
	return 1;
}

static int finish(struct parse *p, int line, char *errmsg)
{
	struct keel_node_config *cfg = p->cfg;
	const struct keel_transport_peer *self = keel_node_config_peer(cfg, cfg->node_id);
	int rc = 0;
	if (line < 0) {
		rc = keel_errmsg_set(errmsg, line == -2 ? -ENOMEM : -EIO, "%s", p->name);
	} else if (line > 0) {
		rc = p->err_code ? p->err_code : KEEL_ECONFIG;
		keel_errmsg_set(errmsg, 0, "%s:%d: %s", p->name, line,
				p->err_code ? p->err : "syntax error");
	} else if (!p->have_id) {
		rc = KEEL_ECONFIG;
		snprintf(errmsg ? errmsg : p->err, KEEL_ERRMSG_LEN, "%s: [node] id is missing", p->name);
	} else if (!p->have_cluster) {
		rc = KEEL_ECONFIG;
		snprintf(errmsg ? errmsg : p->err, KEEL_ERRMSG_LEN, "%s: [node] cluster is missing", p->name);
	} else if (!p->have_listen) {
		rc = KEEL_ECONFIG;
		snprintf(errmsg ? errmsg : p->err, KEEL_ERRMSG_LEN, "%s: [node] listen is missing", p->name);
	} else if (!p->have_secret) {
		rc = KEEL_ECONFIG;
		snprintf(errmsg ? errmsg : p->err, KEEL_ERRMSG_LEN,
			 "%s: [node] secret_file is missing (peers authenticate with a cluster secret)",
			 p->name);
	} else if (self && (self->port != cfg->listen_port || strcmp(self->host, cfg->listen_host))) {
		rc = KEEL_ECONFIG;
		snprintf(errmsg ? errmsg : p->err, KEEL_ERRMSG_LEN,
			 "%s: [peers] %u = %s:%u disagrees with [node] listen = %s:%u", p->name,
			 cfg->node_id, self->host, self->port, cfg->listen_host, cfg->listen_port);
	}
	if (rc < 0)
		keel_node_config_free(cfg);
	return rc;
}

static void defaults(struct keel_node_config *cfg, const char *name)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->path, sizeof(cfg->path), "%s", name);
	snprintf(cfg->transport, sizeof(cfg->transport), "tcp");
	cfg->max_frame = KEEL_TRANSPORT_MAX_FRAME_DEFAULT;
	if (sodium_init() < 0)
		keel_warn("config: libsodium failed to initialise");
}

int keel_node_config_parse(const char *text, const char *name, const char *base_dir,
			   struct keel_node_config *cfg, char *errmsg)
{
	defaults(cfg, name);
	struct parse p = {.cfg = cfg, .name = name, .base_dir = base_dir};
	int line = ini_parse_string(text, handler, &p);
	return finish(&p, line, errmsg);
}

int keel_node_config_load(const char *path, struct keel_node_config *cfg, char *errmsg)
{
	defaults(cfg, path);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	FILE *f = fopen(path, "re");
	if (!f) {
		int e = -errno;
		return keel_errmsg_set(errmsg, e, "%s", path);
	}
	struct parse p = {.cfg = cfg, .name = path, .base_dir = dir};
	int line = ini_parse_file(f, handler, &p);
	fclose(f);
	return finish(&p, line, errmsg);
}

void keel_node_config_free(struct keel_node_config *cfg)
{
	if (cfg->secret) {
		sodium_memzero(cfg->secret, cfg->secret_len);
		free(cfg->secret);
	}
	for (size_t i = 0; i < cfg->nentries; i++) {
		free(cfg->entries[i].section);
		free(cfg->entries[i].key);
		free(cfg->entries[i].value);
	}
	free(cfg->entries);
	free(cfg->peers);
	memset(cfg, 0, sizeof(*cfg));
}

const char *keel_node_config_get(const struct keel_node_config *cfg, const char *section,
				 const char *key)
{
	for (size_t i = cfg->nentries; i-- > 0;)
		if (!strcmp(cfg->entries[i].section, section) && !strcmp(cfg->entries[i].key, key))
			return cfg->entries[i].value;
	return NULL;
}

const struct keel_transport_peer *keel_node_config_peer(const struct keel_node_config *cfg,
							uint32_t node)
{
	for (size_t i = 0; i < cfg->npeers; i++)
		if (cfg->peers[i].node == node)
			return &cfg->peers[i];
	return NULL;
}

void keel_node_config_transport(const struct keel_node_config *cfg, uint32_t shard,
				struct keel_transport_config *out)
{
	memset(out, 0, sizeof(*out));
	out->cluster_id = cfg->cluster_id;
	out->self.node = cfg->node_id;
	out->self.shard = shard;
	out->shards = cfg->shards;
	out->listen_host = cfg->listen_host;
	out->listen_port = cfg->listen_port;
	out->peers = cfg->peers;
	out->npeers = cfg->npeers;
	out->secret = cfg->secret;
	out->secret_len = cfg->secret_len;
	out->max_frame = cfg->max_frame;
	out->handshake_timeout_ms = cfg->handshake_timeout_ms;
	out->peer_timeout_ms = cfg->peer_timeout_ms;
	out->node = cfg;
}
