/* keel node --config FILE: runs one node (include/keel/node.h): its shards,
 * one endpoint per shard on the peer mesh, and the [log] section's G
 * replicated-log groups (include/keel/rlog.h), group g on shard g mod S.
 *
 * With a [client] section (listen = HOST:PORT, token_file, max_conns) the
 * groups run the services (include/keel/services.h: KV and locks) and
 * shard 0 serves the client port (keel kv, include/keel/client.h).
 * Without one, each group's state machine is a test counter: a replicated
 * log of strings kept as (count, FNV-1a sum, last index), with snapshots,
 * so that nodes can be compared for agreement (the consensus tests and
 * --propose); count and sum are 0 in services mode.
 * The node also answers the verified message streams `keel send` produces
 * (order and checksums per peer), for the transport tests and the demo.
 *
 * Machine-readable status: with --status-file PATH the node rewrites PATH
 * (atomically: PATH.tmp, then rename) every --status-ms with one line for
 * the node and one per group, key=value separated by spaces:
 *
 *   node=1 shards=2 groups=8 pid=4242 up=1
 *   group=3 node=1 shard=1 role=leader term=5 leader=1 commit=120 applied=120
 *     last=120 snapshot=0 count=117 sum=8a3f0c... voters=1,2,3 learners= failed=0
 *     committed=40 recovered_term=4 recovered_last=96 recovered_snapshot=0
 *     snapshots_taken=0 snapshots_installed=0
 *
 * (one line per group; committed counts this node's own --propose entries;
 * recovered_* is what the log found on disk when it opened: the term, the
 * last index of the WAL and the snapshot's index; snapshots_* count this
 * process's own snapshots and those installed from a leader). The tests
 * read these by key, never by position: keys may be added, never renamed.
 * On exit the file's first line says up=0. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/node_env.h"
#include "cli/node_http.h"
#include "cli/node_resp.h"
#include "cli/stream.h"
#include "keel/config.h"
#include "keel/node.h"
#include "keel/rlog.h"
#include "keel/proto.h"
#include "keel/services.h"

#define INFLIGHT 4

struct app;

/* One group: touched only by its shard's thread. */
struct ngroup {
	struct app *a;
	uint32_t id;
	char dir[600];
	struct keel_rlog *log;
	uint64_t count, sum, last_index;
	unsigned committed, inflight, seq;
	bool leader;
	uint64_t term;
	uint64_t rec_term, rec_last, rec_snapshot; /* as opened: what the disk held */
};

/* Stream state for one sending peer. */
struct speer {
	uint32_t node;
	uint64_t expect, received, errors;
};

struct nshard {
	struct app *a;
	struct keel_endpoint *ep;
	struct ngroup **groups;
	unsigned ngroups;
	struct speer *streams;
	size_t nstreams;
	uint16_t t_report, t_ping;
	uint64_t msgs, bytes, errors;
	struct keel_services *svc;        /* services mode: this shard's */
	struct keel_client_port *port;    /* services mode, shard 0 */
	struct keel_timer status_timer;
	struct keel_timer http_timer;     /* [http]: posts the metrics snapshot */
	pthread_mutex_t mu;   /* guards status (read by the writer thread) */
	char *status;
	size_t status_len;
} KEEL_CACHE_ALIGNED;

struct app {
	struct keel_node_config cfg;
	struct keel_rlog_settings log;
	struct keel_node *node;
	struct nshard *shards;
	unsigned nshards, ngroups;
	struct ngroup *groups;
	uint32_t target;         /* --propose N */
	/* services mode ([client] listen): the KV and lock services on the
	 * groups and the client port, instead of the test counter */
	const char *client_listen;
	uint8_t token[KEEL_PROTO_MAX_TOKEN];
	size_t token_len;
	uint32_t max_conns;
	struct node_resp resp;   /* [resp]: the Redis protocol listener */
	const char *status_path;
	uint64_t status_ms;
	struct node_http *http;  /* [http] or --http-port; NULL: none */
	atomic_int failed;
	atomic_bool done;
};

/* ---- the test counter --------------------------------------------------- */

static uint64_t fnv64(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static void sm_apply(void *arg, uint64_t index, const void *data, size_t len)
{
	struct ngroup *g = arg;
	g->count++;
	g->sum = fnv64(g->sum ^ index, data, len);
	g->last_index = index;
	keel_debug("node: group %u applied index %" PRIu64 ": %.*s", g->id, index,
		   len > 64 ? 64 : (int)len, (const char *)data);
}

static int sm_snapshot(void *arg, void **data, size_t *len)
{
	struct ngroup *g = arg;
	uint8_t *b = malloc(24);
	if (!b)
		return -ENOMEM;
	keel_put_le64(b, g->count);
	keel_put_le64(b + 8, g->sum);
	keel_put_le64(b + 16, g->last_index);
	*data = b;
	*len = 24;
	return 0;
}

static int sm_restore(void *arg, uint64_t index, const void *data, size_t len)
{
	struct ngroup *g = arg;
	if (len != 24)
		return KEEL_ECORRUPT;
	g->count = keel_get_le64(data);
	g->sum = keel_get_le64((const uint8_t *)data + 8);
	g->last_index = index;
	keel_info("node: group %u restored a snapshot at index %" PRIu64 " (count %" PRIu64 ")",
		  g->id, index, g->count);
	return 0;
}

static void propose_more(struct ngroup *g);

static void proposal_done(void *arg, int status, uint64_t index)
{
	struct ngroup *g = arg;
	g->inflight--;
	if (status == 0) {
		if (++g->committed == g->a->target)
			keel_info("node: group %u: %u proposals committed (last index %" PRIu64 ")",
				  g->id, g->committed, index);
	} else if (status != KEEL_ESTOPPED) {
		keel_info("node: group %u: proposal at index %" PRIu64 ": %s", g->id, index,
			  keel_strerror(status));
	}
	propose_more(g);
}

static void propose_more(struct ngroup *g)
{
	if (!g->log || !g->leader)
		return;
	while (g->committed + g->inflight < g->a->target && g->inflight < INFLIGHT) {
		char buf[64];
		int n = snprintf(buf, sizeof(buf), "n%u-g%u-t%" PRIu64 "-%u", g->a->cfg.node_id, g->id,
				 g->term, g->seq);
		int rc = keel_rlog_propose(g->log, buf, (size_t)n, proposal_done, g);
		if (rc < 0) {
			if (rc != KEEL_ENOTLEADER && rc != KEEL_EBUSY)
				keel_info("node: group %u: propose: %s", g->id, keel_strerror(rc));
			return;
		}
		g->seq++;
		g->inflight++;
	}
}

static void sm_leader(void *arg, uint32_t leader, uint64_t epoch, bool self)
{
	struct ngroup *g = arg;
	g->leader = self;
	g->term = epoch;
	if (self)
		keel_info("node: group %u: leader, term %" PRIu64, g->id, epoch);
	else if (leader)
		keel_info("node: group %u: follower of node %u, term %" PRIu64, g->id, leader, epoch);
	if (self)
		propose_more(g);
}

static void sm_error(void *arg, int code, const char *why)
{
	struct ngroup *g = arg;
	fprintf(stderr, "keel node: group %u failed: %s (%s)\n", g->id, why, keel_strerror(code));
	atomic_store(&g->a->failed, 1);
	keel_node_stop(g->a->node);
}

/* ---- verified streams (cli/stream.h) ------------------------------------ */

static struct speer *speer_of(struct nshard *ns, uint32_t node)
{
	for (size_t i = 0; i < ns->nstreams; i++)
		if (ns->streams[i].node == node)
			return &ns->streams[i];
	struct speer *n = realloc(ns->streams, (ns->nstreams + 1) * sizeof(*n));
	if (!n)
		return NULL;
	ns->streams = n;
	n[ns->nstreams] = (struct speer){.node = node};
	return &n[ns->nstreams++];
}

static void on_peer_up(void *arg, struct keel_endpoint *ep, uint32_t node)
{
	struct nshard *ns = arg;
	(void)ep;
	struct speer *s = speer_of(ns, node);
	if (s)
		*s = (struct speer){.node = node}; /* a new connection: a new stream */
}

static void on_data(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	struct nshard *ns = arg;
	(void)ep;
	struct speer *s = speer_of(ns, m->from.node);
	ns->msgs++;
	ns->bytes += m->len;
	if (!s)
		return;
	uint64_t seq = 0;
	bool corrupt = stream_check(m->data, m->len, &seq) < 0;
	if (corrupt || seq != s->expect) {
		if (s->errors++ < 5)
			keel_warn("node: stream from n%u/s%u: message %llu %s", m->from.node,
				  m->from.shard, (unsigned long long)s->expect,
				  corrupt ? "corrupt" : "out of order");
		ns->errors++;
	}
	s->expect = corrupt ? s->expect + 1 : seq + 1;
	s->received++;
}

static void on_done(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	struct nshard *ns = arg;
	struct speer *s = speer_of(ns, m->from.node);
	if (!s)
		return;
	uint64_t count = m->len >= 8 ? keel_get_le64(m->data) : 0;
	uint8_t rep[16];
	keel_put_le64(rep, s->received);
	keel_put_le64(rep + 8, s->errors);
	if (count == s->received && s->errors == 0)
		keel_info("node: stream of %llu messages from n%u/s%u verified: in order, checksums match",
			  (unsigned long long)count, m->from.node, m->from.shard);
	else
		keel_warn("node: stream from n%u/s%u: sender says %llu, received %llu, %llu errors",
			  m->from.node, m->from.shard, (unsigned long long)count,
			  (unsigned long long)s->received, (unsigned long long)s->errors);
	int rc = keel_endpoint_send(ep, m->from.node, ns->t_report, 0, rep, sizeof(rep));
	if (rc < 0)
		keel_warn("node: report to n%u: %s", m->from.node, keel_strerror(rc));
	s->received = s->errors = s->expect = 0;
}

static void on_ping(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	struct nshard *ns = arg;
	keel_endpoint_send(ep, m->from.node, ns->t_ping, 0, m->data, m->len);
}

/* ---- status ------------------------------------------------------------- */

static void fmt_members(char *buf, size_t cap, const struct keel_rlog_status *st, bool voters)
{
	size_t k = 0;
	buf[0] = 0;
	for (uint32_t i = 0; i < st->n_members && k < cap; i++)
		if (st->members[i].voter == voters)
			k += (size_t)snprintf(buf + k, cap - k, "%s%u", k ? "," : "",
					      st->members[i].node);
}

static void status_tick(struct keel_timer *t)
{
	struct nshard *ns = t->arg;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f) {
		for (unsigned i = 0; i < ns->ngroups; i++) {
			struct ngroup *g = ns->groups[i];
			struct keel_rlog_status st;
			keel_rlog_status(g->log, &st);
			struct keel_rlog_stats ls;
			keel_rlog_get_stats(g->log, &ls);
			char v[128], l[128];
			fmt_members(v, sizeof(v), &st, true);
			fmt_members(l, sizeof(l), &st, false);
			fprintf(f,
				"group=%u node=%u shard=%u role=%s term=%" PRIu64 " leader=%u "
				"commit=%" PRIu64 " applied=%" PRIu64 " last=%" PRIu64
				" snapshot=%" PRIu64 " count=%" PRIu64 " sum=%016" PRIx64
				" voters=%s learners=%s failed=%d committed=%u recovered_term=%" PRIu64
				" recovered_last=%" PRIu64 " recovered_snapshot=%" PRIu64
				" snapshots_taken=%" PRIu64 " snapshots_installed=%" PRIu64 "\n",
				g->id, st.self, keel_endpoint_shard(ns->ep), keel_rlog_role_name(st.role),
				st.epoch, st.leader, st.commit, st.applied, st.last_index,
				st.snapshot_index, g->count, g->sum, v, l, st.failed ? 1 : 0,
				g->committed, g->rec_term, g->rec_last, g->rec_snapshot,
				ls.snapshots_taken, ls.snapshots_installed);
		}
		fclose(f);
	}
	pthread_mutex_lock(&ns->mu);
	free(ns->status);
	ns->status = buf;
	ns->status_len = buf ? len : 0;
	pthread_mutex_unlock(&ns->mu);
	keel_clock_arm(keel_endpoint_clock(ns->ep), &ns->status_timer, ns->a->status_ms * 1000000u);
}

/* [http]: this shard's groups, endpoint and client port for the pages
 * (cli/node_http.h), every refresh_ms. */
static void http_tick(struct keel_timer *t)
{
	struct nshard *ns = t->arg;
	struct node_http *h = ns->a->http;
	unsigned s = keel_endpoint_shard(ns->ep);
	node_http_begin(h, s);
	for (unsigned i = 0; i < ns->ngroups; i++)
		node_http_group(h, s, ns->groups[i]->id, ns->groups[i]->log);
	node_http_end(h, s, ns->ep, ns->port);
	keel_clock_arm(keel_endpoint_clock(ns->ep), &ns->http_timer,
		       (uint64_t)node_http_refresh_ms(h) * 1000000u);
}

static void write_status(struct app *a, bool up)
{
	if (!a->status_path)
		return;
	char tmp[600];
	snprintf(tmp, sizeof(tmp), "%s.tmp", a->status_path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "node=%u shards=%u groups=%u reactor=%s pid=%d up=%d\n", a->cfg.node_id,
		a->nshards, a->ngroups,
		keel_reactor_name(keel_runtime_reactor(keel_node_runtime(a->node))), (int)getpid(),
		up ? 1 : 0);
	for (unsigned s = 0; s < a->nshards; s++) {
		struct nshard *ns = &a->shards[s];
		pthread_mutex_lock(&ns->mu);
		if (ns->status)
			fwrite(ns->status, 1, ns->status_len, f);
		pthread_mutex_unlock(&ns->mu);
	}
	if (fclose(f) == 0)
		rename(tmp, a->status_path);
}

static void *status_writer(void *arg)
{
	struct app *a = arg;
	while (!atomic_load(&a->done)) {
		write_status(a, true);
		struct timespec ts = {(time_t)(a->status_ms / 1000),
				      (long)(a->status_ms % 1000) * 1000000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* ---- services mode ------------------------------------------------------ */

static void svc_leader(void *arg, uint32_t group, uint32_t leader, uint64_t epoch, bool self)
{
	struct app *a = arg;
	if (self)
		keel_info("node: group %u: leader, term %" PRIu64, group, epoch);
	else if (leader)
		keel_info("node: group %u: follower of node %u, term %" PRIu64, group, leader, epoch);
	(void)a;
}

static void svc_error(void *arg, uint32_t group, int code, const char *why)
{
	struct app *a = arg;
	fprintf(stderr, "keel node: group %u failed: %s (%s)\n", group, why, keel_strerror(code));
	atomic_store(&a->failed, 1);
	keel_node_stop(a->node);
}

/* The shard's services on its groups (their logs are the services'; the
 * status lines read them through g->log) and, on shard 0, the client port. */
static int services_start(struct app *a, struct nshard *ns, struct keel_node *node,
			  struct keel_endpoint *ep, char *err)
{
	struct keel_services_config sc = {.ep = ep, .log = &a->log, .groups = a->ngroups,
					  .on_leader = svc_leader, .on_error = svc_error, .arg = a};
	int rc = keel_services_start(&sc, &ns->svc, err);
	if (rc < 0)
		return rc;
	for (unsigned i = 0; i < ns->ngroups; i++) {
		struct ngroup *g = ns->groups[i];
		g->log = keel_services_log(ns->svc, g->id);
		struct keel_rlog_status st;
		keel_rlog_status(g->log, &st);
		g->rec_term = st.epoch;
		g->rec_last = st.last_index;
		g->rec_snapshot = st.snapshot_index;
	}
	if (keel_endpoint_shard(ep) != 0) {
		rc = node_resp_start(&a->resp, node, ep, a->ngroups, err);
		if (rc < 0) {
			for (unsigned i = 0; i < ns->ngroups; i++)
				ns->groups[i]->log = NULL;
			keel_services_stop(ns->svc);
			ns->svc = NULL;
		}
		return rc;
	}
	struct keel_client_port_config pc = {.node = node, .listen = a->client_listen,
					     .groups = a->ngroups, .token = a->token,
					     .token_len = a->token_len, .max_conns = a->max_conns};
	rc = keel_client_port_start(&pc, ep, &ns->port, err);
	if (rc >= 0) {
		rc = node_resp_start(&a->resp, node, ep, a->ngroups, err);
		if (rc < 0) {
			keel_client_port_stop(ns->port);
			ns->port = NULL;
		}
	}
	if (rc < 0) {
		for (unsigned i = 0; i < ns->ngroups; i++)
			ns->groups[i]->log = NULL;
		keel_services_stop(ns->svc);
		ns->svc = NULL;
	}
	return rc;
}

/* [client] token_file (relative to the config's directory) and max_conns. */
static int load_client(struct app *a, char *err)
{
	a->client_listen = keel_node_config_get(&a->cfg, "client", "listen");
	if (!a->client_listen)
		return 0;
	const char *mc = keel_node_config_get(&a->cfg, "client", "max_conns");
	if (mc) {
		char *end = NULL;
		unsigned long v = strtoul(mc, &end, 10);
		if (!end || *end || v < 1 || v > 1000000)
			return keel_errmsg_set(err, KEEL_ECONFIG,
					       "%s: [client] max_conns: expected a number from 1 to 1000000",
					       a->cfg.path);
		a->max_conns = (uint32_t)v;
	}
	const char *tf = keel_node_config_get(&a->cfg, "client", "token_file");
	if (!tf)
		return 0;
	char path[1100];
	if (tf[0] == '/' || !a->cfg.base_dir[0])
		snprintf(path, sizeof(path), "%s", tf);
	else
		snprintf(path, sizeof(path), "%s/%s", a->cfg.base_dir, tf);
	FILE *f = fopen(path, "r");
	if (!f)
		return keel_errmsg_set(err, -errno, "%s: [client] token_file %s", a->cfg.path, path);
	uint8_t buf[KEEL_PROTO_MAX_TOKEN + 2];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	if (n < 16 || n > KEEL_PROTO_MAX_TOKEN)
		return keel_errmsg_set(err, KEEL_ECONFIG,
				       "%s: [client] token_file %s: a token is 16 to %u bytes (got %zu)",
				       a->cfg.path, path, KEEL_PROTO_MAX_TOKEN, n);
	memcpy(a->token, buf, n);
	a->token_len = n;
	return 0;
}

/* ---- shards ------------------------------------------------------------- */

static int shard_start(void *arg, struct keel_node *node, struct keel_endpoint *ep, char *err)
{
	struct app *a = arg;
	(void)node;
	unsigned s = keel_endpoint_shard(ep);
	struct nshard *ns = &a->shards[s];
	ns->ep = ep;
	ns->t_report = (uint16_t)keel_msg_type_id("stream.report");
	ns->t_ping = (uint16_t)keel_msg_type_id("stream.ping");
	struct keel_endpoint_listener l = {.peer_up = on_peer_up, .arg = ns};
	int rc = keel_endpoint_listen(ep, &l);
	if (rc >= 0)
		rc = keel_endpoint_handle(ep, "stream.data", on_data, ns);
	if (rc >= 0)
		rc = keel_endpoint_handle(ep, "stream.done", on_done, ns);
	if (rc >= 0)
		rc = keel_endpoint_handle(ep, "stream.ping", on_ping, ns);
	if (rc < 0)
		return keel_errmsg_set(err, rc, "node: shard %u: handlers", s);
	if (a->client_listen) {
		rc = services_start(a, ns, node, ep, err);
		if (rc < 0)
			return rc;
	}
	for (unsigned i = 0; i < ns->ngroups && !a->client_listen; i++) {
		struct ngroup *g = ns->groups[i];
		struct keel_rlog_config lc;
		keel_rlog_settings_config(&a->log, g->id, g->dir, sizeof(g->dir), &lc);
		lc.ep = ep;
		lc.sm = (struct keel_rlog_sm){.apply = sm_apply, .snapshot = sm_snapshot,
					      .restore = sm_restore, .on_leader = sm_leader,
					      .on_error = sm_error, .arg = g};
		char e2[KEEL_ERRMSG_LEN];
		rc = keel_rlog_open(&lc, &g->log, e2);
		if (rc < 0) {
			/* the hooks' stop will not run for this shard: undo */
			for (unsigned j = 0; j < i; j++) {
				keel_rlog_close(ns->groups[j]->log);
				ns->groups[j]->log = NULL;
			}
			return keel_errmsg_set(err, rc, "group %u: %s", g->id, e2);
		}
		/* Before the shard's loop runs: nothing learnt from a peer yet. */
		struct keel_rlog_status st;
		keel_rlog_status(g->log, &st);
		g->rec_term = st.epoch;
		g->rec_last = st.last_index;
		g->rec_snapshot = st.snapshot_index;
	}
	if (a->status_path) {
		keel_timer_init(&ns->status_timer, status_tick, ns);
		keel_clock_arm(keel_endpoint_clock(ep), &ns->status_timer, 0);
	}
	if (a->http) {
		keel_timer_init(&ns->http_timer, http_tick, ns);
		keel_clock_arm(keel_endpoint_clock(ep), &ns->http_timer, 0);
	}
	return 0;
}

static void shard_stop(void *arg, struct keel_node *node, struct keel_endpoint *ep)
{
	struct app *a = arg;
	(void)node;
	struct nshard *ns = &a->shards[keel_endpoint_shard(ep)];
	if (a->status_path) { /* else the timer was never set up */
		keel_clock_cancel(keel_endpoint_clock(ep), &ns->status_timer);
		status_tick(&ns->status_timer); /* the last state, for the final file */
		keel_clock_cancel(keel_endpoint_clock(ep), &ns->status_timer);
	}
	if (a->http)
		keel_clock_cancel(keel_endpoint_clock(ep), &ns->http_timer);
	if (ns->port) {
		keel_client_port_stop(ns->port);
		ns->port = NULL;
	}
	if (ns->svc)
		node_resp_stop(&a->resp, ep);
	for (unsigned i = 0; i < ns->ngroups; i++) {
		struct ngroup *g = ns->groups[i];
		if (!g->log)
			continue;
		struct keel_rlog_stats st;
		keel_rlog_get_stats(g->log, &st);
		keel_info("node: group %u: sent %" PRIu64 ", received %" PRIu64 ", dropped %" PRIu64
			  ", bad %" PRIu64 ", WAL batches %" PRIu64 ", snapshots taken %" PRIu64
			  ", installed %" PRIu64,
			  g->id, st.msgs_sent, st.msgs_received, st.msgs_dropped, st.bad_msgs,
			  st.wal_batches, st.snapshots_taken, st.snapshots_installed);
		if (!ns->svc)
			keel_rlog_close(g->log); /* else the services' */
		g->log = NULL;
	}
	keel_services_stop(ns->svc);
	ns->svc = NULL;
	free(ns->streams);
	ns->streams = NULL;
	ns->nstreams = 0;
}

int keel_cmd_node(int argc, char **argv)
{
	const char *path = NULL, *status_path = NULL, *cpuset = NULL, *reactor = "auto";
	bool busy = false, overcommit = false;
	uint32_t target = 0;
	uint64_t status_ms = 200;
	uint32_t http_port = UINT32_MAX;
	const struct keel_opt opts[] = {
		{"config", 'c', KEEL_OPT_STR, &path, .arg = "FILE",
		 .help = "this node's configuration file (without it: from the\n"
			 "environment, KEEL_NODE_ID, KEEL_PEERS, ...: docs/design/deploy.md)"},
		{"status-file", 0, KEEL_OPT_STR, &status_path, .arg = "PATH",
		 .help = "rewrite PATH with a key=value line per group every --status-ms"},
		{"status-ms", 0, KEEL_OPT_MS, &status_ms, 10, 60000, "MS",
		 "how often the status file is rewritten"},
		{"http-port", 0, KEEL_OPT_U32, &http_port, 0, 65535, "PORT",
		 "serve /livez, /readyz and /metrics on PORT (overrides [http];\n"
		 "0: any free port)"},
		{"propose", 0, KEEL_OPT_U32, &target, 0, 100000000, "N",
		 "while leading a group, propose test entries until N of this\n"
		 "node's own have committed in it (a load for tests and the demo)"},
		{"cpuset", 0, KEEL_OPT_STR, &cpuset, .arg = "LIST",
		 .help = "run the shards on these CPUs (cpuset(7) list)"},
		{"overcommit", 0, KEEL_OPT_FLAG, &overcommit,
		 .help = "allow more shards than cores"},
		{"busy-poll", 0, KEEL_OPT_FLAG, &busy,
		 .help = "busy-poll instead of sleeping in the reactor (lowest latency)"},
		{"poll", 0, KEEL_OPT_FLAG, &busy, .flags = KEEL_OPT_HIDDEN},
		{"reactor", 0, KEEL_OPT_STR, &reactor, .arg = "NAME",
		 .help = "auto, io_uring or epoll (auto: io_uring unless refused;\n"
			 "KEEL_REACTOR sets auto's answer)"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"node", "--config FILE [options]",
		"  runs a node: its shards (one per core, or [node] shards), the peer mesh on\n"
		"  the configured transport, and the [log] section's replicated-log groups\n"
		"  (group g on shard g mod S). With a [client] section the groups run the KV\n"
		"  and lock services and [client] listen is the client port (keel kv);\n"
		"  without one, a test counter (for the consensus tests, --propose).\n"
		"  Answers `keel send` streams. SIGINT/SIGTERM stop it.",
		opts};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	enum keel_reactor_kind rk;
	if (keel_reactor_parse(reactor, &rk))
		return keel_opt_usage(&spec, "--reactor: '%s' is not auto, io_uring or epoll", reactor);
	struct app *a = calloc(1, sizeof(*a));
	if (!a)
		return 1;
	a->target = target;
	a->status_path = status_path;
	a->status_ms = status_ms;
	char err[KEEL_ERRMSG_LEN];
	int ret = 1;
	char *envtext = NULL;
	int lrc = 0;
	if (path) {
		lrc = keel_node_config_load(path, &a->cfg, err);
	} else {
		lrc = node_env_config(&envtext, err);
		if (lrc == 0)
			lrc = keel_node_config_parse(envtext, "environment", "/", &a->cfg, err);
		free(envtext);
	}
	if (lrc < 0 ||
	    keel_node_config_validate(&a->cfg, err) < 0 ||
	    keel_rlog_settings_load(&a->cfg, &a->log, err) < 0 || load_client(a, err) < 0 ||
	    node_resp_load(&a->cfg, &a->resp, err) < 0) {
		fprintf(stderr, "keel node: %s\n", err);
		keel_node_config_free(&a->cfg);
		free(a);
		return 1;
	}
	keel_log_set_node((int)a->cfg.node_id);
	if (a->client_listen && target) {
		keel_node_config_free(&a->cfg);
		free(a);
		return keel_opt_usage(&spec, "--propose is for the test counter; with a [client] "
				      "section the node runs the KV service (use keel kv)");
	}
	struct keel_node_options o = {.cpuset = cpuset, .overcommit = overcommit, .busy_poll = busy,
				      .reactor = rk};
	if (keel_node_create(&a->cfg, &o, &a->node, err) < 0) {
		fprintf(stderr, "keel node: %s\n", err);
		keel_node_config_free(&a->cfg);
		free(a);
		return 1;
	}
	a->nshards = keel_node_shard_count(a->node);
	a->ngroups = a->log.groups ? a->log.groups : a->nshards;
	/* before the shards start, so that a bad [http] or a taken port stops
	 * the node at once, and probes are answered (503) while groups recover */
	if (node_http_open(&a->cfg, http_port == UINT32_MAX ? -1 : (int)http_port, a->nshards,
			   a->ngroups, &a->http, err) < 0 ||
	    (a->http && node_http_start(a->http, keel_reactor_name(keel_runtime_reactor(
							  keel_node_runtime(a->node))),
					err) < 0)) {
		fprintf(stderr, "keel node: %s\n", err);
		goto out;
	}
	a->shards = aligned_alloc(KEEL_CACHELINE, sizeof(*a->shards) * a->nshards);
	a->groups = calloc(a->ngroups, sizeof(*a->groups));
	if (!a->shards || !a->groups)
		goto out;
	memset(a->shards, 0, sizeof(*a->shards) * a->nshards);
	for (unsigned s = 0; s < a->nshards; s++) {
		a->shards[s].a = a;
		pthread_mutex_init(&a->shards[s].mu, NULL);
		a->shards[s].groups = calloc(a->ngroups / a->nshards + 1, sizeof(struct ngroup *));
		if (!a->shards[s].groups)
			goto out;
	}
	for (unsigned g = 0; g < a->ngroups; g++) {
		struct ngroup *gr = &a->groups[g];
		gr->a = a;
		gr->id = g;
		struct nshard *ns = &a->shards[g % a->nshards];
		ns->groups[ns->ngroups++] = gr;
	}
	keel_info("node %u of cluster %llu: %u shards, %u %s groups, transport %s, data %s",
		  a->cfg.node_id, (unsigned long long)a->cfg.cluster_id, a->nshards, a->ngroups,
		  a->log.protocol, a->cfg.transport, a->log.dir);
	keel_node_stop_on_signals(a->node);
	struct keel_node_hooks h = {.start = shard_start, .stop = shard_stop, .arg = a};
	pthread_t writer;
	bool have_writer = false;
	int rc = keel_node_start(a->node, &h, err);
	if (rc < 0) {
		fprintf(stderr, "keel node: %s\n", err);
		goto out;
	}
	keel_info("node %u listening on %s:%u+shard", a->cfg.node_id, a->cfg.listen_host,
		  a->cfg.listen_port);
	if (a->status_path && pthread_create(&writer, NULL, status_writer, a) == 0)
		have_writer = true;
	if (a->http)
		node_http_serving(a->http, true);
	rc = keel_node_wait(a->node);
	if (a->http)
		node_http_serving(a->http, false);
	atomic_store(&a->done, true);
	if (have_writer)
		pthread_join(writer, NULL);
	write_status(a, false);
	uint64_t msgs = 0, errors = 0;
	for (unsigned s = 0; s < a->nshards; s++) {
		msgs += a->shards[s].msgs;
		errors += a->shards[s].errors;
	}
	keel_info("node %u stopped: %llu stream messages, %llu stream errors", a->cfg.node_id,
		  (unsigned long long)msgs, (unsigned long long)errors);
	ret = rc < 0 || atomic_load(&a->failed) ? 1 : 0;
out:
	node_http_close(a->http); /* first: its pages read a->cfg */
	keel_node_destroy(a->node);
	if (a->shards) {
		for (unsigned s = 0; s < a->nshards; s++) {
			free(a->shards[s].groups);
			free(a->shards[s].status);
			pthread_mutex_destroy(&a->shards[s].mu);
		}
	}
	free(a->shards);
	free(a->groups);
	keel_node_config_free(&a->cfg);
	free(a);
	return ret;
}
