/* keel node's HTTP port (cli/node_http.h): /livez, /readyz and /metrics.
 *
 * Threads: every shard owns its groups, endpoint and client port, so the
 * HTTP thread never reads them. Instead each shard, on a timer of its own
 * loop (every [http] refresh_ms), copies what the pages need into a
 * staging snapshot it alone writes, then swaps it in under its mutex; the
 * HTTP thread copies the published one under the same mutex. A page is at
 * most refresh_ms old, a shard pays one small copy per period whether or
 * not anyone scrapes, and nothing on a shard ever waits for HTTP. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/node_http.h"
#include "keel/proto.h"
#include "keel_config.h"

struct nh_group {
	uint32_t id;
	struct keel_rlog_status st;
	struct keel_rlog_stats ls;
};

struct nh_snap {
	uint64_t at_ns;            /* 0: never posted */
	unsigned ngroups;
	struct nh_group *groups;   /* cap: the shard's group count */
	struct keel_endpoint_stats es;
	unsigned peers_up;
	bool has_port;
	struct keel_client_port_stats ps;
};

struct nh_shard {
	pthread_mutex_t mu;
	struct nh_snap pub;        /* guarded by mu */
	struct nh_snap stage;      /* the shard's own, between begin and end */
} KEEL_CACHE_ALIGNED;

struct node_http {
	const struct keel_node_config *cfg;
	char host[64];
	uint16_t port;
	uint64_t ready_lag;
	uint32_t refresh_ms;
	unsigned nshards, groups_cap;
	struct nh_shard *sh;
	const char *reactor;
	atomic_bool serving;
	struct keel_http *srv;
};

/* ---- configuration ------------------------------------------------------ */

static int parse_u64(const struct keel_node_config *cfg, const char *key, uint64_t lo, uint64_t hi,
		     uint64_t *out, char *err)
{
	const char *v = keel_node_config_get(cfg, "http", key);
	if (!v)
		return 0;
	char *end = NULL;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || !end || end == v || *end || x < lo || x > hi)
		return keel_errmsg_set(err, KEEL_ECONFIG,
				       "%s: [http] %s: expected a number from %" PRIu64 " to %" PRIu64
				       " (got '%s')",
				       cfg->path, key, lo, hi, v);
	*out = x;
	return 1;
}

int node_http_open(const struct keel_node_config *cfg, int port_flag, unsigned nshards,
		   unsigned ngroups, struct node_http **out, char *err)
{
	*out = NULL;
	uint64_t port = 0, lag = 1000, refresh = 250;
	const char *listen = keel_node_config_get(cfg, "http", "listen");
	int have = parse_u64(cfg, "port", 0, 65535, &port, err);
	if (have < 0)
		return have;
	char host[64];
	snprintf(host, sizeof(host), "%s", cfg->listen_host);
	if (listen) {
		const char *colon = strrchr(listen, ':');
		char *end = NULL;
		unsigned long p = colon ? strtoul(colon + 1, &end, 10) : 0;
		size_t hl = colon ? (size_t)(colon - listen) : 0;
		if (!colon || !end || end == colon + 1 || *end || p > 65535 || hl >= sizeof(host))
			return keel_errmsg_set(err, KEEL_ECONFIG,
					       "%s: [http] listen: expected HOST:PORT (got '%s')",
					       cfg->path, listen);
		memcpy(host, listen, hl);
		host[hl] = 0;
		/* [::1]:80 */
		if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
			memmove(host, host + 1, hl - 2);
			host[hl - 2] = 0;
		}
		port = p;
		have = 1;
	}
	if (port_flag >= 0) {
		port = (uint64_t)port_flag;
		have = 1;
	}
	if (!have)
		return 0; /* no HTTP port asked for */
	if (parse_u64(cfg, "ready_lag", 0, UINT64_MAX / 2, &lag, err) < 0 ||
	    parse_u64(cfg, "refresh_ms", 10, 60000, &refresh, err) < 0)
		return KEEL_ECONFIG;
	struct node_http *h = calloc(1, sizeof(*h));
	if (!h)
		return keel_errmsg_set(err, -ENOMEM, "http: out of memory");
	h->cfg = cfg;
	snprintf(h->host, sizeof(h->host), "%s", host);
	h->port = (uint16_t)port;
	h->ready_lag = lag;
	h->refresh_ms = (uint32_t)refresh;
	h->nshards = nshards;
	h->groups_cap = ngroups / nshards + 1;
	h->sh = aligned_alloc(KEEL_CACHELINE, sizeof(*h->sh) * nshards);
	if (!h->sh) {
		free(h);
		return keel_errmsg_set(err, -ENOMEM, "http: out of memory");
	}
	memset(h->sh, 0, sizeof(*h->sh) * nshards);
	for (unsigned s = 0; s < nshards; s++) {
		pthread_mutex_init(&h->sh[s].mu, NULL);
		h->sh[s].pub.groups = calloc(h->groups_cap, sizeof(struct nh_group));
		h->sh[s].stage.groups = calloc(h->groups_cap, sizeof(struct nh_group));
		if (!h->sh[s].pub.groups || !h->sh[s].stage.groups) {
			h->nshards = s + 1;
			node_http_close(h);
			return keel_errmsg_set(err, -ENOMEM, "http: out of memory");
		}
	}
	*out = h;
	return 0;
}

uint32_t node_http_refresh_ms(const struct node_http *h) { return h->refresh_ms; }

/* ---- the shards' side --------------------------------------------------- */

void node_http_begin(struct node_http *h, unsigned shard)
{
	struct nh_snap *s = &h->sh[shard].stage;
	s->ngroups = 0;
	s->has_port = false;
	s->peers_up = 0;
}

void node_http_group(struct node_http *h, unsigned shard, uint32_t id, const struct keel_rlog *log)
{
	struct nh_snap *s = &h->sh[shard].stage;
	if (!log || s->ngroups >= h->groups_cap)
		return;
	struct nh_group *g = &s->groups[s->ngroups++];
	g->id = id;
	keel_rlog_status(log, &g->st);
	keel_rlog_get_stats(log, &g->ls);
}

void node_http_end(struct node_http *h, unsigned shard, struct keel_endpoint *ep,
		   const struct keel_client_port *port)
{
	struct nh_shard *sh = &h->sh[shard];
	struct nh_snap *s = &sh->stage;
	keel_endpoint_get_stats(ep, &s->es);
	for (size_t i = 0; i < h->cfg->npeers; i++) {
		uint32_t n = h->cfg->peers[i].node;
		if (n != h->cfg->node_id && keel_endpoint_peer_up(ep, n))
			s->peers_up++;
	}
	if (port) {
		s->has_port = true;
		keel_client_port_get_stats(port, &s->ps);
	}
	s->at_ns = keel_now_ns();
	pthread_mutex_lock(&sh->mu);
	struct nh_snap t = sh->pub; /* swap: the old published one is the next stage */
	sh->pub = *s;
	*s = t;
	pthread_mutex_unlock(&sh->mu);
}

/* ---- the HTTP thread ---------------------------------------------------- */

/* Copies of every shard's published snapshot, taken one shard at a time. */
struct view {
	unsigned n;
	struct nh_snap *s;
	struct nh_group *gbuf;
};

static int view_take(struct node_http *h, struct view *v)
{
	v->n = h->nshards;
	v->s = calloc(h->nshards, sizeof(*v->s));
	v->gbuf = calloc((size_t)h->nshards * h->groups_cap, sizeof(*v->gbuf));
	if (!v->s || !v->gbuf) {
		free(v->s);
		free(v->gbuf);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < h->nshards; i++) {
		struct nh_shard *sh = &h->sh[i];
		struct nh_group *g = v->gbuf + (size_t)i * h->groups_cap;
		pthread_mutex_lock(&sh->mu);
		v->s[i] = sh->pub;
		memcpy(g, sh->pub.groups, sizeof(*g) * sh->pub.ngroups);
		pthread_mutex_unlock(&sh->mu);
		v->s[i].groups = g;
	}
	return 0;
}

static void view_free(struct view *v)
{
	free(v->s);
	free(v->gbuf);
}

/* A shard whose snapshot is older than this has not run its loop for that
 * long: it is wedged (or the machine is badly overloaded). */
static uint64_t stale_ns(const struct node_http *h)
{
	uint64_t ms = 10u * h->refresh_ms;
	return (ms < 5000 ? 5000 : ms) * 1000000ull;
}

/* Writes why the node is not ready (one line each) to f; returns their count.
 * live_only: only what /livez checks (no wedged shard: a node still
 * recovering its groups is alive, only not ready). */
static int not_ready(struct node_http *h, const struct view *v, FILE *f, bool live_only)
{
	int bad = 0;
	if (!live_only && !atomic_load(&h->serving)) {
		fprintf(f, "not serving: the node is starting or stopping\n");
		bad++;
	}
	uint64_t now = keel_now_ns();
	for (unsigned i = 0; i < v->n; i++) {
		const struct nh_snap *s = &v->s[i];
		if (!s->at_ns) {
			if (!live_only) {
				fprintf(f, "shard %u: no snapshot yet\n", i);
				bad++;
			}
		} else if (now - s->at_ns > stale_ns(h)) {
			fprintf(f, "shard %u: its loop has not run for %" PRIu64 " ms\n", i,
				(now - s->at_ns) / 1000000);
			bad++;
		}
		if (live_only)
			continue;
		for (unsigned j = 0; j < s->ngroups; j++) {
			const struct nh_group *g = &s->groups[j];
			if (g->st.failed) {
				fprintf(f, "group %u: failed (%s)\n", g->id, keel_strerror(g->st.fail_code));
				bad++;
			} else if (!g->st.leader) {
				fprintf(f, "group %u: no known leader\n", g->id);
				bad++;
			} else if (g->st.commit > g->st.applied + h->ready_lag) {
				fprintf(f, "group %u: applied %" PRIu64 " is %" PRIu64
					   " behind commit %" PRIu64 " (ready_lag %" PRIu64 ")\n",
					g->id, g->st.applied, g->st.commit - g->st.applied, g->st.commit,
					h->ready_lag);
				bad++;
			}
		}
	}
	return bad;
}

static const char *type_name(unsigned t)
{
	switch (t) {
	case KEEL_PROTO_PUT: return "put";
	case KEEL_PROTO_DEL: return "delete";
	case KEEL_PROTO_CAS: return "cas";
	case KEEL_PROTO_GET: return "get";
	case KEEL_PROTO_RANGE: return "range";
	case KEEL_PROTO_MEMBER: return "member";
	case KEEL_PROTO_LOCK_OPEN: return "lock_open";
	case KEEL_PROTO_LOCK_KEEPALIVE: return "lock_keepalive";
	case KEEL_PROTO_LOCK_CLOSE: return "lock_close";
	case KEEL_PROTO_LOCK_ACQUIRE: return "lock_acquire";
	case KEEL_PROTO_LOCK_RELEASE: return "lock_release";
	case KEEL_PROTO_LOCK_CANCEL: return "lock_cancel";
	case KEEL_PROTO_LOCK_INSPECT: return "lock_inspect";
	}
	return NULL;
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One gauge or counter family with a sample per group. */
#define PER_GROUP(name, type, help, expr)                                                   \
	do {                                                                                \
		family(f, name, type, help);                                                \
		for (unsigned i_ = 0; i_ < v->n; i_++)                                      \
			for (unsigned j_ = 0; j_ < v->s[i_].ngroups; j_++) {                \
				const struct nh_group *g = &v->s[i_].groups[j_];            \
				fprintf(f, "%s{group=\"%u\"} %" PRIu64 "\n", name, g->id,   \
					(uint64_t)(expr));                                  \
			}                                                                   \
	} while (0)

static void metrics(struct node_http *h, const struct view *v, FILE *f)
{
	family(f, "keel_info", "gauge", "This node: its id and the reactor backend its shards run.");
	fprintf(f, "keel_info{node=\"%u\",reactor=\"%s\",version=\"%s\"} 1\n", h->cfg->node_id,
		h->reactor, KEEL_VERSION);
	family(f, "keel_shards", "gauge", "Shard threads of this node.");
	fprintf(f, "keel_shards %u\n", v->n);
	char scratch[1];
	FILE *nul = fmemopen(scratch, sizeof(scratch), "w");
	int bad = nul ? not_ready(h, v, nul, false) : 1;
	if (nul)
		fclose(nul);
	family(f, "keel_ready", "gauge", "1 when /readyz answers 200.");
	fprintf(f, "keel_ready %d\n", bad ? 0 : 1);

	PER_GROUP("keel_group_has_leader", "gauge", "1 when the group has a known leader.",
		  g->st.leader != 0);
	PER_GROUP("keel_group_leader", "gauge", "The node id of the group's leader (0: none known).",
		  g->st.leader);
	PER_GROUP("keel_group_is_leader", "gauge", "1 when this node leads the group.",
		  g->st.role == KEEL_RLOG_LEADER);
	PER_GROUP("keel_group_term", "gauge", "The group's term (Raft) or ballot round (Paxos).",
		  g->st.epoch);
	PER_GROUP("keel_group_leader_changes_total", "counter",
		  "Leader changes this node has seen in the group since it started.",
		  g->ls.leader_changes);
	PER_GROUP("keel_group_proposals_committed_total", "counter",
		  "Proposals made on this node that committed.", g->ls.proposals_ok);
	PER_GROUP("keel_group_proposals_failed_total", "counter",
		  "Proposals made on this node that failed (lost leadership, timeout, error).",
		  g->ls.proposals_failed);
	PER_GROUP("keel_group_applied_total", "counter",
		  "Commands this node applied to the group's state machine since it started.",
		  g->ls.applied);
	PER_GROUP("keel_group_commit_index", "gauge", "Highest log index known committed.",
		  g->st.commit);
	PER_GROUP("keel_group_apply_index", "gauge", "Highest log index applied on this node.",
		  g->st.applied);
	PER_GROUP("keel_group_last_index", "gauge", "Last index in this node's log.",
		  g->st.last_index);
	PER_GROUP("keel_group_snapshot_index", "gauge", "Index of the newest snapshot.",
		  g->st.snapshot_index);
	PER_GROUP("keel_group_messages_sent_total", "counter", "Consensus messages sent.",
		  g->ls.msgs_sent);
	PER_GROUP("keel_group_messages_received_total", "counter", "Consensus messages received.",
		  g->ls.msgs_received);

	/* the WAL's write+fdatasync durations, every group of the node summed */
	uint64_t le[KEEL_WAL_SYNC_BUCKETS] = {0}, count = 0, sum_ns = 0;
	for (unsigned i = 0; i < v->n; i++)
		for (unsigned j = 0; j < v->s[i].ngroups; j++) {
			const struct keel_wal_stats *w = &v->s[i].groups[j].ls.wal;
			for (int b = 0; b < KEEL_WAL_SYNC_BUCKETS; b++)
				le[b] += w->sync_le[b];
			count += w->syncs;
			sum_ns += w->sync_ns_sum;
		}
	family(f, "keel_wal_fdatasync_duration_seconds", "histogram",
	       "WAL batch write plus its fdatasync, submission to completion, every group.");
	uint64_t cum = 0;
	for (int b = 0; b < KEEL_WAL_SYNC_BUCKETS; b++) {
		cum += le[b];
		fprintf(f, "keel_wal_fdatasync_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
			keel_wal_sync_bounds_us[b] / 1e6, cum);
	}
	fprintf(f, "keel_wal_fdatasync_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", count);
	fprintf(f, "keel_wal_fdatasync_duration_seconds_sum %.9f\n", (double)sum_ns / 1e9);
	fprintf(f, "keel_wal_fdatasync_duration_seconds_count %" PRIu64 "\n", count);

	/* client port (shard 0 serves it) */
	const struct nh_snap *p = NULL;
	for (unsigned i = 0; i < v->n; i++)
		if (v->s[i].has_port)
			p = &v->s[i];
	if (p) {
		static const char *const res[KEEL_CLIENT_RESULTS] = {"ok", "not_leader", "error"};
		family(f, "keel_client_requests_total", "counter",
		       "Client requests answered from a group, by type and result.");
		for (unsigned t = 0; t < KEEL_CLIENT_PORT_TYPES; t++) {
			const char *tn = type_name(t);
			if (!tn)
				continue;
			for (int k = 0; k < KEEL_CLIENT_RESULTS; k++)
				fprintf(f, "keel_client_requests_total{type=\"%s\",result=\"%s\"} %" PRIu64
					   "\n", tn, res[k], p->ps.answers[t][k]);
		}
		family(f, "keel_client_connections", "gauge", "Client connections open now.");
		fprintf(f, "keel_client_connections %" PRIu64 "\n", p->ps.conns);
		family(f, "keel_client_connections_accepted_total", "counter",
		       "Client connections accepted.");
		fprintf(f, "keel_client_connections_accepted_total %" PRIu64 "\n", p->ps.accepted);
		family(f, "keel_client_connections_refused_total", "counter",
		       "Client connections refused (limits, bad token, timeouts, bad frames).");
		fprintf(f, "keel_client_connections_refused_total{reason=\"limit\"} %" PRIu64 "\n",
			p->ps.refused);
		fprintf(f, "keel_client_connections_refused_total{reason=\"auth\"} %" PRIu64 "\n",
			p->ps.auth_failed);
		fprintf(f, "keel_client_connections_refused_total{reason=\"hello_timeout\"} %" PRIu64
			   "\n", p->ps.hello_timeouts);
		fprintf(f, "keel_client_connections_refused_total{reason=\"bad_frame\"} %" PRIu64 "\n",
			p->ps.bad_frames);
	}

	/* the peer mesh: one connection per peer per shard */
	family(f, "keel_peer_connections", "gauge", "Peer connections up now, per shard.");
	for (unsigned i = 0; i < v->n; i++)
		fprintf(f, "keel_peer_connections{shard=\"%u\"} %u\n", i, v->s[i].peers_up);
	family(f, "keel_peer_connection_events_total", "counter",
	       "Peer connections that came up or went down, every shard.");
	uint64_t up = 0, down = 0, sent = 0, recv = 0, dropped = 0;
	for (unsigned i = 0; i < v->n; i++) {
		up += v->s[i].es.conns_up;
		down += v->s[i].es.conns_down;
		sent += v->s[i].es.sent;
		recv += v->s[i].es.received;
		dropped += v->s[i].es.unknown_type + v->s[i].es.unhandled +
			   v->s[i].es.unknown_group + v->s[i].es.malformed;
	}
	fprintf(f, "keel_peer_connection_events_total{event=\"up\"} %" PRIu64 "\n", up);
	fprintf(f, "keel_peer_connection_events_total{event=\"down\"} %" PRIu64 "\n", down);
	family(f, "keel_peer_messages_total", "counter", "Peer messages, every shard.");
	fprintf(f, "keel_peer_messages_total{direction=\"sent\"} %" PRIu64 "\n", sent);
	fprintf(f, "keel_peer_messages_total{direction=\"received\"} %" PRIu64 "\n", recv);
	fprintf(f, "keel_peer_messages_total{direction=\"dropped\"} %" PRIu64 "\n", dropped);
}

static int page(void *arg, const char *path, FILE *body, const char **ctype)
{
	struct node_http *h = arg;
	struct view v;
	if (view_take(h, &v) < 0) {
		fprintf(body, "out of memory\n");
		return 500;
	}
	int status = 200;
	if (!strcmp(path, "/livez")) {
		if (not_ready(h, &v, body, true))
			status = 503;
		else
			fprintf(body, "ok\n");
	} else if (!strcmp(path, "/readyz")) {
		if (not_ready(h, &v, body, false))
			status = 503;
		else
			fprintf(body, "ok\n");
	} else if (!strcmp(path, "/metrics")) {
		*ctype = "text/plain; version=0.0.4; charset=utf-8";
		metrics(h, &v, body);
	} else {
		fprintf(body, "not found: this port serves /livez, /readyz and /metrics\n");
		status = 404;
	}
	view_free(&v);
	return status;
}

int node_http_start(struct node_http *h, const char *reactor, char *err)
{
	h->reactor = reactor;
	struct keel_http_config c = {.host = h->host, .port = h->port, .fn = page, .arg = h};
	int rc = keel_http_start(&c, &h->srv, err);
	if (rc == 0)
		keel_info("node %u: HTTP on %s:%u (/livez /readyz /metrics)", h->cfg->node_id,
			  h->host[0] ? h->host : "*", keel_http_port(h->srv));
	return rc;
}

void node_http_serving(struct node_http *h, bool on)
{
	atomic_store(&h->serving, on);
}

void node_http_close(struct node_http *h)
{
	if (!h)
		return;
	keel_http_stop(h->srv);
	for (unsigned s = 0; s < h->nshards; s++) {
		pthread_mutex_destroy(&h->sh[s].mu);
		free(h->sh[s].pub.groups);
		free(h->sh[s].stage.groups);
	}
	free(h->sh);
	free(h);
}
