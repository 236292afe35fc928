/* keel send --config FILE --to NODE: runs as the node of FILE for a while
 * (keel/node.h: its shards, one endpoint per shard on the peer mesh) and
 * sends, from every shard, a verified stream (cli/stream.h) of --count
 * messages of random sizes in total to the same shard of NODE, then asks
 * the receiver for its report: exit 0 only if every message arrived once,
 * in order, intact.
 *
 * The endpoint does the connecting: the mesh has the higher id dial, so
 * NODE must have a lower id than FILE's node (a higher one would have to
 * dial us; we refuse it up front), and of FILE's [peers] only NODE is kept,
 * so no other peer is dialled. The endpoint redials with backoff whenever
 * a connection fails or breaks, and reports each failure in peer_down;
 * here that ends the run unless --retry-ms allows another try (the stream
 * restarts on the new connection, as the receiver's does). A peer that
 * refuses our secret (KEEL_EAUTH) or speaks nonsense is never retried. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/stream.h"
#include "keel/config.h"
#include "keel/node.h"
#include "keel/runtime.h"

/* Message types of the node layer's table (node/msgtypes.c). */
static uint16_t stream_t_data, stream_t_done;

struct send_run;

struct send_shard {
	struct send_run *run;
	struct keel_endpoint *ep;
	unsigned id;
	bool up;
	uint64_t count;   /* this shard's share */
	uint64_t next;    /* next seq to send on the current connection */
	bool done_sent, finished;
	uint64_t rng;
	struct keel_timer deadline;
	uint64_t bytes;
	uint64_t reconnects;
} KEEL_CACHE_ALIGNED;

struct send_run {
	struct keel_node_config cfg;
	struct keel_node *node;
	struct send_shard *shards;
	uint32_t to;
	uint64_t count;
	uint32_t max_size;
	uint64_t seed;
	uint64_t retry_deadline_ns;
	uint64_t deadline_ns;
	atomic_uint finished;
	atomic_int result; /* 0 ok, else a negative code */
	unsigned nshards;
};

static void send_fail(struct send_shard *s, int rc)
{
	struct send_run *r = s->run;
	int zero = 0;
	atomic_compare_exchange_strong(&r->result, &zero, rc);
	keel_node_stop(r->node);
}

static bool stopping(const struct send_run *r)
{
	return keel_runtime_stopping(keel_node_runtime(r->node));
}

static void pump(struct send_shard *s)
{
	struct send_run *r = s->run;
	while (s->up && s->next < s->count) {
		uint32_t span = r->max_size > STREAM_HDR ? r->max_size - STREAM_HDR + 1 : 1;
		uint32_t len = STREAM_HDR + (uint32_t)(stream_splitmix(&s->rng) % span);
		struct keel_endpoint_buf b;
		int rc = keel_endpoint_alloc(s->ep, r->to, stream_t_data, 0, len, &b);
		if (rc == KEEL_EFULL || rc == KEEL_EUNAVAIL)
			return; /* writable resumes; or peer_down follows */
		if (rc < 0) {
			keel_error("send: shard %u: %s", s->id, keel_strerror(rc));
			send_fail(s, rc);
			return;
		}
		stream_fill(b.data, len, r->seed, s->next);
		b.len = len;
		rc = keel_endpoint_send_buf(s->ep, &b);
		if (rc == KEEL_EUNAVAIL)
			return;
		if (rc < 0) {
			keel_error("send: shard %u: %s", s->id, keel_strerror(rc));
			send_fail(s, rc);
			return;
		}
		s->next++;
		s->bytes += len;
	}
	if (s->up && !s->done_sent && s->next == s->count) {
		uint8_t n[8];
		keel_put_le64(n, s->count);
		if (keel_endpoint_send(s->ep, r->to, stream_t_done, 0, n, sizeof(n)) == 0)
			s->done_sent = true; /* else: writable, or peer_down */
	}
}

static void on_up(void *arg, struct keel_endpoint *ep, uint32_t node)
{
	struct send_shard *s = arg;
	(void)ep;
	if (node != s->run->to || s->finished)
		return;
	/* A new connection: a new stream (the receiver restarts its count). */
	s->up = true;
	s->next = 0;
	s->done_sent = false;
	pump(s);
}

static void on_writable(void *arg, struct keel_endpoint *ep, uint32_t node)
{
	struct send_shard *s = arg;
	(void)ep;
	if (node == s->run->to)
		pump(s);
}

static void on_down(void *arg, struct keel_endpoint *ep, uint32_t node, int reason)
{
	struct send_shard *s = arg;
	struct send_run *r = s->run;
	(void)ep;
	if (node != r->to)
		return;
	bool was_up = s->up;
	s->up = false;
	if (s->finished || stopping(r))
		return;
	if (reason == KEEL_EAUTH || reason == KEEL_EPROTO) {
		keel_error("send: shard %u refused by node %u: %s (not retried)", s->id, r->to,
			   keel_strerror(reason));
		send_fail(s, reason);
		return;
	}
	const char *what = was_up ? "broke mid-stream" : "failed";
	uint64_t now = keel_now_ns();
	if (now >= r->retry_deadline_ns) {
		keel_error("send: shard %u: connection to node %u %s: %s", s->id, r->to, what,
			   keel_strerror(reason));
		send_fail(s, reason ? reason : KEEL_ECLOSED);
		return;
	}
	s->reconnects++;
	keel_info("send: shard %u: connection to node %u %s (%s); redialling with backoff "
		  "(%.1f s of --retry-ms left)",
		  s->id, r->to, what, keel_strerror(reason),
		  (double)(r->retry_deadline_ns - now) / 1e9);
}

static void on_report(void *arg, struct keel_endpoint *ep, const struct keel_node_msg *m)
{
	struct send_shard *s = arg;
	struct send_run *r = s->run;
	(void)ep;
	if (m->from.node != r->to || m->len < 16 || s->finished)
		return;
	uint64_t received = keel_get_le64(m->data);
	uint64_t errors = keel_get_le64((const uint8_t *)m->data + 8);
	if (received != s->count || errors != 0) {
		keel_error("send: node %u shard %u received %llu of %llu messages, %llu errors",
			   r->to, s->id, (unsigned long long)received,
			   (unsigned long long)s->count, (unsigned long long)errors);
		send_fail(s, KEEL_ECORRUPT);
		return;
	}
	s->finished = true;
	if (atomic_fetch_add(&r->finished, 1) + 1 == r->nshards)
		keel_node_stop(r->node);
}

static void deadline_fire(struct keel_timer *tm)
{
	struct send_shard *s = tm->arg;
	keel_error("send: shard %u: deadline passed (%llu of %llu messages sent on this connection)",
		   s->id, (unsigned long long)s->next, (unsigned long long)s->count);
	send_fail(s, KEEL_ETIMEOUT);
}

static int shard_start(void *arg, struct keel_node *n, struct keel_endpoint *ep, char *err)
{
	struct send_run *r = arg;
	(void)n;
	unsigned id = keel_endpoint_shard(ep);
	struct send_shard *s = &r->shards[id];
	s->run = r;
	s->ep = ep;
	s->id = id;
	s->count = r->count / r->nshards + (id < r->count % r->nshards ? 1 : 0);
	s->rng = r->seed * 0x9e3779b97f4a7c15ull + id + 1;
	struct keel_endpoint_listener l = {
		.peer_up = on_up, .peer_down = on_down, .writable = on_writable, .arg = s};
	int rc = keel_endpoint_listen(ep, &l);
	if (rc >= 0)
		rc = keel_endpoint_handle(ep, "stream.report", on_report, s);
	if (rc < 0)
		return keel_errmsg_set(err, rc, "send: shard %u: handlers", id);
	keel_timer_init(&s->deadline, deadline_fire, s);
	uint64_t now = keel_now_ns();
	keel_clock_arm(keel_endpoint_clock(ep), &s->deadline,
		       r->deadline_ns > now ? r->deadline_ns - now : 0);
	return 0;
}

static void shard_stop(void *arg, struct keel_node *n, struct keel_endpoint *ep)
{
	struct send_run *r = arg;
	(void)n;
	keel_clock_cancel(keel_endpoint_clock(ep), &r->shards[keel_endpoint_shard(ep)].deadline);
}

/* Keeps only this node and `to` in cfg's [peers]: the endpoint then dials
 * `to` alone, and accepts nobody else. */
static void keep_peers(struct keel_node_config *cfg, uint32_t to)
{
	size_t k = 0;
	for (size_t i = 0; i < cfg->npeers; i++) {
		if (cfg->peers[i].node != to && cfg->peers[i].node != cfg->node_id)
			continue;
		cfg->peers[k] = cfg->peers[i];
		cfg->peer_lines[k] = cfg->peer_lines[i];
		k++;
	}
	cfg->npeers = k;
}

int keel_cmd_send(int argc, char **argv)
{
	const char *path = NULL;
	struct send_run r = {.count = 100000, .seed = 1};
	uint64_t max_size = 512, retry_ms = 0, timeout_ms = 120000;
	const struct keel_opt opts[] = {
		{"config", 'c', KEEL_OPT_STR, &path, .arg = "FILE",
		 .help = "this node's configuration file", .flags = KEEL_OPT_REQUIRED},
		{"to", 't', KEEL_OPT_U32, &r.to, 1, UINT32_MAX, "NODE",
		 "the node to send to: one of [peers] with a lower id than\n"
		 "this node's (on the mesh the higher id dials)",
		 .flags = KEEL_OPT_REQUIRED},
		{"count", 'n', KEEL_OPT_U64, &r.count, 1, 1000000000, "N", "messages in total"},
		{"max-size", 's', KEEL_OPT_SIZE, &max_size, STREAM_HDR, KEEL_TRANSPORT_MAX_FRAME_LIMIT,
		 "BYTES", "largest message, at most [node] max_frame"},
		{"seed", 'S', KEEL_OPT_U64, &r.seed, .arg = "S", .help = "seed of the sizes and contents"},
		{"retry-ms", 'r', KEEL_OPT_MS, &retry_ms, 0, 86400000, "MS",
		 "redial with backoff for MS when a connection fails\n"
		 "or breaks (the stream restarts)"},
		{"timeout-ms", 'T', KEEL_OPT_MS, &timeout_ms, 1, 86400000, "MS",
		 "give up when not done after MS"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		.name = "send",
		.synopsis = "--config FILE --to NODE [options]",
		.about = "  sends a verified stream of N messages of random sizes from every shard\n"
			 "  here to the same shard of NODE, which checks order and checksums; exits\n"
			 "  0 when NODE confirms all of them, 3 when NODE refuses us (peer\n"
			 "  authentication), 1 on any other failure.\n"
			 "  It runs as FILE's node for the duration, on the peer mesh: it listens\n"
			 "  on that node's address (so that node must not be running) and dials\n"
			 "  NODE alone. On the mesh the higher id dials, so NODE must have a lower\n"
			 "  id than FILE's node; to reach a higher id, send from its configuration.\n",
		.opts = opts,
	};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	stream_t_data = (uint16_t)keel_msg_type_id("stream.data");
	stream_t_done = (uint16_t)keel_msg_type_id("stream.done");
	if (st != KEEL_OPT_RUN)
		return st;
	r.max_size = (uint32_t)max_size;
	char err[KEEL_ERRMSG_LEN];
	if (keel_node_config_load(path, &r.cfg, err) < 0 || keel_node_config_validate(&r.cfg, err) < 0) {
		fprintf(stderr, "keel send: %s\n", err);
		keel_node_config_free(&r.cfg);
		return 1;
	}
	const char *bad = NULL;
	char why[160];
	if (r.to == r.cfg.node_id) {
		bad = "that is this node";
	} else if (!keel_node_config_peer(&r.cfg, r.to)) {
		bad = "not a node of the configuration's [peers]";
	} else if (r.to > r.cfg.node_id) {
		snprintf(why, sizeof(why),
			 "a higher id than this node's (%u): on the mesh node %u dials us, not we it; "
			 "send from node %u's configuration instead",
			 r.cfg.node_id, r.to, r.to);
		bad = why;
	}
	if (bad) {
		st = keel_opt_usage(&spec, "--to %u: %s", r.to, bad);
		keel_node_config_free(&r.cfg);
		return st;
	}
	keep_peers(&r.cfg, r.to);
	if (r.max_size > r.cfg.max_frame)
		r.max_size = r.cfg.max_frame;
	keel_log_set_node((int)r.cfg.node_id);
	struct keel_node_options o = {.overcommit = true};
	if (keel_node_create(&r.cfg, &o, &r.node, err) < 0) {
		fprintf(stderr, "keel send: %s\n", err);
		keel_node_config_free(&r.cfg);
		return 1;
	}
	r.nshards = keel_node_shard_count(r.node);
	r.shards = aligned_alloc(KEEL_CACHELINE, sizeof(*r.shards) * r.nshards);
	if (!r.shards) {
		keel_node_destroy(r.node);
		keel_node_config_free(&r.cfg);
		return 1;
	}
	memset(r.shards, 0, sizeof(*r.shards) * r.nshards);
	keel_node_stop_on_signals(r.node);
	uint64_t t0 = keel_now_ns();
	r.retry_deadline_ns = t0 + retry_ms * 1000000u;
	r.deadline_ns = t0 + timeout_ms * 1000000u;
	struct keel_node_hooks h = {.start = shard_start, .stop = shard_stop, .arg = &r};
	int rc = keel_node_start(r.node, &h, err);
	if (rc == 0)
		rc = keel_node_wait(r.node);
	else
		fprintf(stderr, "keel send: %s\n", err);
	double secs = (double)(keel_now_ns() - t0) / 1e9;
	int result = atomic_load(&r.result);
	uint64_t bytes = 0, reconnects = 0;
	for (unsigned i = 0; i < r.nshards; i++) {
		bytes += r.shards[i].bytes;
		reconnects += r.shards[i].reconnects;
	}
	int status = 0;
	if (result == KEEL_EAUTH) {
		fprintf(stderr, "keel send: refused by node %u: peer authentication failed\n", r.to);
		status = 3;
	} else if (result < 0) {
		fprintf(stderr, "keel send: failed: %s\n", keel_strerror(result));
		status = 1;
	} else if (rc < 0) {
		status = 1;
	} else if (atomic_load(&r.finished) != r.nshards) {
		fprintf(stderr, "keel send: interrupted\n");
		status = 1;
	} else {
		printf("sent %llu messages (%.1f MB) to node %u over %u shards in %.2f s "
		       "(%.0f msgs/s, %llu reconnects); node %u verified order and checksums\n",
		       (unsigned long long)r.count, (double)bytes / 1e6, r.to, r.nshards, secs,
		       (double)r.count / secs, (unsigned long long)reconnects, r.to);
	}
	keel_node_destroy(r.node);
	free(r.shards);
	keel_node_config_free(&r.cfg);
	return status;
}
