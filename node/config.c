/* The node configuration file; the format is in keel/config.h.
 *
 * Three stages, so that every error names the file, the line and the reason:
 *  1. our line reader, which feeds libinih one line at a time: it counts the
 *     lines, strips comments and surrounding blanks, and refuses a NUL byte,
 *     a line longer than libinih's line buffer, a malformed or unknown
 *     [section] and a line that is not "key = value";
 *  2. libinih splits "key = value" and calls the handler;
 *  3. the handler checks each value, repeated keys and the peers table.
 * Nothing here touches the network: keel_node_config_validate resolves the
 * hosts, separately, so parsing stays pure (and fuzzable).
 *
 * Why the reader and not libinih's own options: Debian's libinih takes
 * inline comments only after ';' and fixes its line buffer at 200 bytes;
 * upstream sets both at build time. A line longer than the buffer used to
 * be split silently into two lines, so the error named the wrong line. We
 * keep the buffer and refuse longer lines with their number: real lines are
 * far shorter (the longest documented one, a [dpdk] eal line, has about
 * 120 characters), and a comment does not count towards the limit. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/runtime.h"

_Static_assert(KEEL_CONFIG_MAX_SHARDS == KEEL_MAX_SHARDS, "[node] shards: the runtime's limit");

/* Every section a node configuration may have, and the layer that reads
 * it. A layer that gets a section adds one line here: an unknown section
 * is an error (a "[peer]" typo must not start a node without peers).
 *   keys:   the keys it knows, space-separated; NULL: the layer checks its
 *           own keys when it reads them (keel_node_config_get / entries)
 *   repeat: keys that may be given more than once (every other key given
 *           twice is an error, not a silent override) */
struct section_rule {
	const char *name;
	const char *keys;
	const char *repeat;
};
static const struct section_rule sections[] = {
	{"node", NULL, NULL},      /* this file: node_key */
	{"peers", NULL, NULL},     /* this file: peer_key */
	{"dpdk", NULL, "peer"},    /* transport/dpdk/dpdk_config.c */
	{"mr", "data", NULL},      /* compute/mr_cluster.c */
	/* Sections of layers on their way (ARCHITECTURE.md); each owner
	 * replaces NULL with its keys when it lands. */
	{"log", "protocol groups dir voters join tick_ms election_ticks heartbeat_ticks "
		"request_timeout_ticks snapshot_every snapshot_keep segment_size wal_engine "
		"wal_buffered", NULL}, /* consensus/group/rlog_settings.c */
	{"raft", NULL, NULL},      /* consensus/raft */
	{"paxos", NULL, NULL},     /* consensus/paxos */
	{"kv", NULL, NULL},        /* services/kv */
	{"lock", NULL, NULL},      /* services/lock */
	{"client", "listen token_file max_conns", NULL}, /* services/client_port.c, cli/cmd_node.c */
	{"resp", "listen password_file auth max_conns", NULL}, /* services/resp_port.c, cli/node_resp.c */
	{"http", "listen port ready_lag refresh_ms", NULL}, /* node/http.c, cli/node_http.c */
	{"tls", "cert key ca", NULL}, /* transport/tls.c: certificates */
	{"rdma", "device port gid_index mtu slots slot_size", NULL}, /* transport/rdma.c */
};

/* [node] keys; node_line[] remembers where each was given. */
enum { K_ID, K_CLUSTER, K_LISTEN, K_SHARDS, K_TRANSPORT, K_MAX_FRAME, K_HS_TIMEOUT,
       K_PEER_TIMEOUT, K_SECRET_FILE, K_REACTOR, K_N };
static const char *const node_keys[K_N] = {
	"id", "cluster", "listen", "shards", "transport", "max_frame",
	"handshake_timeout_ms", "peer_timeout_ms", "secret_file", "reactor",
};

struct parse {
	struct keel_node_config *cfg;
	const char *name;
	const char *base_dir;
	const char *text; /* what the reader has not given libinih yet */
	size_t len, pos;
	uint32_t line;    /* the line the reader gave last: the one being handled */
	char err[KEEL_ERRMSG_LEN]; /* first error, without file and line */
	int err_code;
	uint32_t err_line; /* 0: not about one line */
	uint32_t node_line[K_N];
	bool saw_node;    /* a [node] header */
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
		p->err_line = p->line;
	}
	return 0; /* inih: error on this line */
}

static const struct section_rule *find_section(const char *name)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(sections); i++)
		if (!strcmp(sections[i].name, name))
			return &sections[i];
	return NULL;
}

/* Is word one of the space-separated words of list? */
static bool word_in(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; p && *p;) {
		size_t l = strcspn(p, " ");
		if (l == n && !memcmp(p, word, n))
			return true;
		p += l;
		p += strspn(p, " ");
	}
	return false;
}

/* Edit distance, for "did you mean"; names here are short. */
static unsigned distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 32 || lb > 32)
		return 99;
	unsigned d[33][33];
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			unsigned sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			unsigned del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
			d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
	}
	return d[la][lb];
}

/* A "[name]" line: well formed, and a section some layer reads. */
static void check_section(struct parse *p, const char *line)
{
	const char *close = strchr(line, ']');
	if (!close) {
		perr(p, KEEL_ECONFIG, "'%.60s' is not a section header (no ']')", line);
		return;
	}
	if (close[1]) {
		perr(p, KEEL_ECONFIG, "text after the section header: '%.60s'", close + 1);
		return;
	}
	size_t n = (size_t)(close - line - 1);
	char name[40];
	if (n == 0 || n >= sizeof(name)) {
		perr(p, KEEL_ECONFIG, "'%.60s' is not a section name", line);
		return;
	}
	memcpy(name, line + 1, n);
	name[n] = '\0';
	if (find_section(name)) {
		p->saw_node |= !strcmp(name, "node");
		return;
	}
	/* the closest known name, when it is close (at most 2 edits, and
	 * fewer than the name has letters: "[x]" suggests nothing) */
	const char *best = NULL;
	unsigned bd = 3;
	for (size_t i = 0; i < KEEL_ARRAY_LEN(sections); i++) {
		unsigned d = distance(name, sections[i].name);
		if (d < bd && d < n) {
			bd = d;
			best = sections[i].name;
		}
	}
	if (best) {
		perr(p, KEEL_ECONFIG, "unknown section [%s] (did you mean [%s]?)", name, best);
		return;
	}
	char known[160] = "";
	size_t k = 0;
	for (size_t i = 0; i < KEEL_ARRAY_LEN(sections) && k < sizeof(known); i++)
		k += (size_t)snprintf(known + k, sizeof(known) - k, "%s%s", i ? ", " : "",
				      sections[i].name);
	perr(p, KEEL_ECONFIG, "unknown section [%s] (known: %s)", name, known);
}

/* libinih's reader: the next line without its comment and surrounding
 * blanks. Stops (NULL: end of input) at the first error, so nothing after
 * it runs (a later secret_file is not even opened). */
static char *reader(char *str, int num, void *stream)
{
	struct parse *p = stream;
	if (p->err_code || p->pos >= p->len)
		return NULL;
	const char *s = p->text + p->pos;
	size_t rest = p->len - p->pos;
	const char *nl = memchr(s, '\n', rest);
	size_t raw = nl ? (size_t)(nl - s) : rest;
	p->pos += raw + (nl ? 1 : 0);
	p->line++;
	str[0] = '\0';
	if (memchr(s, '\0', raw)) {
		perr(p, KEEL_ECONFIG, "a NUL byte (this is not a text file)");
		return str;
	}
	if (p->line == 1 && raw >= 3 && !memcmp(s, "\xef\xbb\xbf", 3)) { /* UTF-8 BOM */
		s += 3;
		raw -= 3;
	}
	size_t b = 0, e = raw;
	while (b < e && isspace((unsigned char)s[b]))
		b++;
	if (b < e && (s[b] == '#' || s[b] == ';')) {
		e = b; /* a comment line */
	} else {
		/* '#' or ';' after a blank starts a comment ("id = 1  # me"); one
		 * inside a word ("a#b") does not. */
		for (size_t i = b + 1; i < e; i++) {
			if ((s[i] == '#' || s[i] == ';') && isspace((unsigned char)s[i - 1])) {
				e = i;
				break;
			}
		}
	}
	while (e > b && isspace((unsigned char)s[e - 1]))
		e--;
	size_t n = e - b;
	if (num < 2 || n > (size_t)num - 1) {
		perr(p, KEEL_ECONFIG, "line too long: %zu characters without comments and blanks, "
			 "at most %d", n, num - 1);
		return str;
	}
	memcpy(str, s + b, n);
	str[n] = '\0';
	if (str[0] == '[')
		check_section(p, str);
	else if (n && !strpbrk(str, "=:"))
		perr(p, KEEL_ECONFIG, "'%.60s' is not 'key = value' or a [section] header", str);
	else if (n && (str[0] == '=' || str[0] == ':'))
		perr(p, KEEL_ECONFIG, "'%.60s': a value without a key", str);
	return str;
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
	/* O_NONBLOCK: a FIFO named here must not hang the load (it is then
	 * refused as not a regular file). */
	int fd = open(cfg->secret_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
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
	return 1;
}


/* An error message as it is (keel_errmsg_set would append the code's
 * text, "...: invalid configuration", to a message that already says it). */
static int say(char *errmsg, int code, const char *fmt, ...) KEEL_PRINTF(3, 4);
static int say(char *errmsg, int code, const char *fmt, ...)
{
	if (errmsg) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(errmsg, KEEL_ERRMSG_LEN, fmt, ap);
		va_end(ap);
	}
	return code;
}

static int node_key(struct parse *p, const char *key, const char *value)
{
	struct keel_node_config *cfg = p->cfg;
	if (!strcmp(key, "secret"))
		return perr(p, KEEL_ECONFIG,
			    "[node] secret: the secret goes in a file named by secret_file, never in the config");
	int k = 0;
	while (k < K_N && strcmp(key, node_keys[k]))
		k++;
	if (k == K_N)
		return perr(p, KEEL_ECONFIG, "[node] unknown key '%s'", key);
	if (p->node_line[k])
		return perr(p, KEEL_ECONFIG, "[node] %s given twice (first on line %u)", key,
			    p->node_line[k]);
	p->node_line[k] = p->line;
	uint64_t v;
	switch (k) {
	case K_ID:
		if (!parse_u64(value, UINT32_MAX, &v) || v == 0)
			return perr(p, KEEL_ECONFIG, "[node] id: '%s' is not a node id (1..%u)",
				    value, UINT32_MAX);
		cfg->node_id = (uint32_t)v;
		break;
	case K_CLUSTER:
		if (!parse_u64(value, UINT64_MAX, &v) || v == 0)
			return perr(p, KEEL_ECONFIG, "[node] cluster: '%s' is not a cluster id (a positive integer)",
				    value);
		cfg->cluster_id = v;
		break;
	case K_LISTEN:
		if (!parse_hostport(value, cfg->listen_host, sizeof(cfg->listen_host),
				    &cfg->listen_port))
			return perr(p, KEEL_ECONFIG, "[node] listen: '%s' is not host:port", value);
		cfg->listen_line = p->line;
		break;
	case K_SHARDS:
		if (!parse_u64(value, KEEL_CONFIG_MAX_SHARDS, &v))
			return perr(p, KEEL_ECONFIG, "[node] shards: '%s' is not 0..%u", value,
				    KEEL_CONFIG_MAX_SHARDS);
		cfg->shards = (uint32_t)v;
		break;
	case K_TRANSPORT:
		if (!keel_transport_find(value))
			return perr(p, KEEL_ECONFIG, "[node] transport: '%s' is not in this build (see keel --version)",
				    value);
		snprintf(cfg->transport, sizeof(cfg->transport), "%s", value);
		break;
	case K_MAX_FRAME:
		if (!parse_size(value, &v) || v < 64 || v > KEEL_TRANSPORT_MAX_FRAME_LIMIT)
			return perr(p, KEEL_ECONFIG, "[node] max_frame: '%s' is not a size from 64 to 1G",
				    value);
		cfg->max_frame = (uint32_t)v;
		break;
	case K_HS_TIMEOUT:
		if (!parse_u64(value, 3600000, &v) || v == 0)
			return perr(p, KEEL_ECONFIG,
				    "[node] handshake_timeout_ms: '%s' is not 1..3600000", value);
		cfg->handshake_timeout_ms = (uint32_t)v;
		break;
	case K_PEER_TIMEOUT:
		if (!parse_u64(value, 3600000, &v) || v < 1000)
			return perr(p, KEEL_ECONFIG,
				    "[node] peer_timeout_ms: '%s' is not 1000..3600000", value);
		cfg->peer_timeout_ms = (uint32_t)v;
		break;
	case K_SECRET_FILE:
		return load_secret(p, value);
	case K_REACTOR:
		if (keel_reactor_parse(value, &cfg->reactor))
			return perr(p, KEEL_ECONFIG, "[node] reactor: '%s' is not auto, io_uring or epoll",
				    value);
		break;
	}
	return 1;
}

static int peer_key(struct parse *p, const char *key, const char *value)
{
	struct keel_node_config *cfg = p->cfg;
	uint64_t id;
	if (!parse_u64(key, UINT32_MAX, &id) || id == 0)
		return perr(p, KEEL_ECONFIG, "[peers] '%s' is not a node id", key);
	for (size_t i = 0; i < cfg->npeers; i++)
		if (cfg->peers[i].node == id)
			return perr(p, KEEL_ECONFIG, "[peers] node %s listed twice (first on line %u)",
				    key, cfg->peer_lines[i]);
	struct keel_transport_peer peer = {.node = (uint32_t)id};
	if (!parse_hostport(value, peer.host, sizeof(peer.host), &peer.port))
		return perr(p, KEEL_ECONFIG, "[peers] %s: '%s' is not host:port", key, value);
	for (size_t i = 0; i < cfg->npeers; i++)
		if (cfg->peers[i].port == peer.port && !strcasecmp(cfg->peers[i].host, peer.host))
			return perr(p, KEEL_ECONFIG,
				    "[peers] %s = %s: the same address as node %u (line %u)", key,
				    value, cfg->peers[i].node, cfg->peer_lines[i]);
	struct keel_transport_peer *np = realloc(cfg->peers, (cfg->npeers + 1) * sizeof(*np));
	if (!np)
		return perr(p, -ENOMEM, "out of memory");
	cfg->peers = np;
	uint32_t *nl = realloc(cfg->peer_lines, (cfg->npeers + 1) * sizeof(*nl));
	if (!nl)
		return perr(p, -ENOMEM, "out of memory");
	cfg->peer_lines = nl;
	cfg->peers[cfg->npeers] = peer;
	cfg->peer_lines[cfg->npeers++] = p->line;
	return 1;
}

/* A key of a section another layer reads: kept as a raw entry. */
static int other_key(struct parse *p, const struct section_rule *r, const char *key,
		     const char *value)
{
	struct keel_node_config *cfg = p->cfg;
	if (r->keys && !word_in(r->keys, key))
		return perr(p, KEEL_ECONFIG, "[%s] unknown key '%s' (known: %s)", r->name, key,
			    r->keys);
	if (!word_in(r->repeat, key))
		for (size_t i = 0; i < cfg->nentries; i++)
			if (!strcmp(cfg->entries[i].section, r->name) &&
			    !strcmp(cfg->entries[i].key, key))
				return perr(p, KEEL_ECONFIG, "[%s] %s given twice (first on line %u)",
					    r->name, key, cfg->entries[i].line);
	struct keel_config_entry *ne = realloc(cfg->entries, (cfg->nentries + 1) * sizeof(*ne));
	if (!ne)
		return perr(p, -ENOMEM, "out of memory");
	cfg->entries = ne;
	struct keel_config_entry *e = &cfg->entries[cfg->nentries];
	e->section = strdup(r->name);
	e->key = strdup(key);
	e->value = strdup(value);
	e->line = p->line;
	if (!e->section || !e->key || !e->value) {
		free(e->section);
		free(e->key);
		free(e->value);
		return perr(p, -ENOMEM, "out of memory");
	}
	cfg->nentries++;
	return 1;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse *p = user;
	if (p->err_code || !key)
		return 1; /* past the first error (the reader stops next line) */
	if (!section[0])
		return perr(p, KEEL_ECONFIG, "'%s' outside any [section]", key);
	if (!key[0])
		return perr(p, KEEL_ECONFIG, "a value without a key");
	const struct section_rule *r = find_section(section);
	if (!r) /* the reader refused the header already; this is a backstop */
		return perr(p, KEEL_ECONFIG, "unknown section [%s]", section);
	if (r == &sections[0])
		return node_key(p, key, value);
	if (r == &sections[1])
		return peer_key(p, key, value);
	return other_key(p, r, key, value);
}

/* After the last line: what is missing, what disagrees. */
static int finish(struct parse *p, int inih_line, char *errmsg)
{
	struct keel_node_config *cfg = p->cfg;
	const char *name = p->name;
	int rc = 0;
	if (inih_line < 0) {
		rc = say(errmsg, -ENOMEM, "%s: out of memory", name);
	} else if (inih_line > 0 && (!p->err_line || (uint32_t)inih_line < p->err_line)) {
		/* libinih refused a line the reader passed: a backstop */
		rc = say(errmsg, KEEL_ECONFIG, "%s:%d: syntax error", name, inih_line);
	} else if (p->err_code) {
		if (p->err_line)
			rc = say(errmsg, p->err_code, "%s:%u: %s", name, p->err_line, p->err);
		else
			rc = say(errmsg, p->err_code, "%s: %s", name, p->err);
	} else if (!p->saw_node) {
		rc = say(errmsg, KEEL_ECONFIG,
			 "%s: no [node] section (is this a keel node configuration?)", name);
	} else if (!p->node_line[K_ID]) {
		rc = say(errmsg, KEEL_ECONFIG, "%s: [node] id is missing", name);
	} else if (!p->node_line[K_CLUSTER]) {
		rc = say(errmsg, KEEL_ECONFIG, "%s: [node] cluster is missing", name);
	} else if (!p->node_line[K_LISTEN]) {
		rc = say(errmsg, KEEL_ECONFIG, "%s: [node] listen is missing", name);
	} else if (!p->node_line[K_SECRET_FILE]) {
		rc = say(errmsg, KEEL_ECONFIG,
			 "%s: [node] secret_file is missing (peers authenticate with a cluster secret)",
			 name);
	} else {
		for (size_t i = 0; i < cfg->npeers && !rc; i++) {
			const struct keel_transport_peer *pe = &cfg->peers[i];
			bool same = pe->port == cfg->listen_port && !strcasecmp(pe->host, cfg->listen_host);
			if (pe->node == cfg->node_id && !same)
				rc = say(errmsg, KEEL_ECONFIG,
					 "%s:%u: [peers] %u = %s:%u disagrees with [node] listen = %s:%u (line %u)",
					 name, cfg->peer_lines[i], cfg->node_id, pe->host,
					 pe->port, cfg->listen_host, cfg->listen_port,
					 cfg->listen_line);
			else if (pe->node != cfg->node_id && same)
				rc = say(errmsg, KEEL_ECONFIG,
					 "%s:%u: [peers] %u = %s:%u is this node's own listen address (line %u)",
					 name, cfg->peer_lines[i], pe->node, pe->host, pe->port,
					 cfg->listen_line);
		}
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

static int parse_text(const char *text, size_t len, const char *name, const char *base_dir,
		      struct keel_node_config *cfg, char *errmsg)
{
	struct parse p = {.cfg = cfg, .name = name, .base_dir = base_dir, .text = text, .len = len};
	snprintf(cfg->base_dir, sizeof(cfg->base_dir), "%s", base_dir ? base_dir : "");
	int line = ini_parse_stream(reader, &p, handler, &p);
	return finish(&p, line, errmsg);
}

int keel_node_config_parse(const char *text, const char *name, const char *base_dir,
			   struct keel_node_config *cfg, char *errmsg)
{
	defaults(cfg, name);
	return parse_text(text, strlen(text), name, base_dir, cfg, errmsg);
}

int keel_node_config_load(const char *path, struct keel_node_config *cfg, char *errmsg)
{
	defaults(cfg, path);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = '\0'; /* "/n1.ini": the root */
	else if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int e = -errno;
		return say(errmsg, e, "%s: %s", path, keel_strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return say(errmsg, e, "%s: %s", path, keel_strerror(e));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return say(errmsg, KEEL_ECONFIG,
			   "%s: is a directory, not a configuration file", path);
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return say(errmsg, KEEL_ECONFIG, "%s: not a regular file", path);
	}
	if (st.st_size > KEEL_CONFIG_MAX_BYTES) {
		close(fd);
		return say(errmsg, KEEL_ECONFIG,
			   "%s: %lld bytes, larger than a configuration can be (%d)", path,
			   (long long)st.st_size, KEEL_CONFIG_MAX_BYTES);
	}
	char *text = malloc((size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return say(errmsg, -ENOMEM, "%s: out of memory", path);
	}
	size_t len = 0;
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, text + len, (size_t)st.st_size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = -errno;
			close(fd);
			free(text);
			return say(errmsg, e, "%s: %s", path, keel_strerror(e));
		}
		if (n == 0)
			break; /* shrank under us: parse what is there */
		len += (size_t)n;
	}
	close(fd);
	text[len] = '\0';
	int rc = parse_text(text, len, path, dir, cfg, errmsg);
	free(text);
	return rc;
}

/* The first address host resolves to (as the TCP transport dials it), or
 * a getaddrinfo error. */
static int resolve(const char *host, struct sockaddr_storage *ss)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	int rc = getaddrinfo(host, NULL, &hints, &ai);
	if (rc)
		return rc;
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, ai->ai_addr, ai->ai_addrlen < sizeof(*ss) ? ai->ai_addrlen : sizeof(*ss));
	freeaddrinfo(ai);
	return 0;
}

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return !memcmp(&((const struct sockaddr_in *)a)->sin_addr,
			       &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr));
	if (a->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
	return false;
}

int keel_node_config_validate(const struct keel_node_config *cfg, char *errmsg)
{
	const char *name = cfg->path;
	struct sockaddr_storage self;
	int g = resolve(cfg->listen_host, &self);
	if (g)
		return say(errmsg, KEEL_ECONFIG,
			   "%s:%u: [node] listen = %s:%u: host '%s' does not resolve (%s)",
			   name, cfg->listen_line, cfg->listen_host, cfg->listen_port,
			   cfg->listen_host, gai_strerror(g));
	struct sockaddr_storage *addr = calloc(cfg->npeers ? cfg->npeers : 1, sizeof(*addr));
	if (!addr)
		return say(errmsg, -ENOMEM, "%s: out of memory", name);
	/* a node's shards listen on port .. port + shards - 1 */
	unsigned span = cfg->shards ? cfg->shards : 1;
	int rc = 0;
	for (size_t i = 0; i < cfg->npeers && !rc; i++) {
		const struct keel_transport_peer *pe = &cfg->peers[i];
		uint32_t line = cfg->peer_lines ? cfg->peer_lines[i] : 0;
		g = resolve(pe->host, &addr[i]);
		if (g) {
			rc = say(errmsg, KEEL_ECONFIG,
				 "%s:%u: [peers] %u = %s:%u: host '%s' does not resolve (%s)",
				 name, line, pe->node, pe->host, pe->port, pe->host,
				 gai_strerror(g));
			break;
		}
		for (size_t j = 0; j < i; j++) {
			const struct keel_transport_peer *q = &cfg->peers[j];
			unsigned d = pe->port > q->port ? pe->port - q->port : q->port - pe->port;
			if (!same_host(&addr[i], &addr[j]) || d >= span)
				continue;
			if (d == 0)
				rc = say(errmsg, KEEL_ECONFIG,
					 "%s:%u: [peers] %u = %s:%u is the same address as node %u = %s:%u (line %u)",
					 name, line, pe->node, pe->host, pe->port, q->node,
					 q->host, q->port,
					 cfg->peer_lines ? cfg->peer_lines[j] : 0);
			else
				rc = say(errmsg, KEEL_ECONFIG,
					 "%s:%u: [peers] %u = %s:%u overlaps node %u = %s:%u (line %u): "
					 "with [node] shards = %u a node listens on port..port+%u",
					 name, line, pe->node, pe->host, pe->port, q->node,
					 q->host, q->port,
					 cfg->peer_lines ? cfg->peer_lines[j] : 0, span, span - 1);
			break;
		}
	}
	free(addr);
	return rc;
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
	free(cfg->peer_lines);
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
