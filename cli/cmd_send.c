/* keel send --config FILE --to NODE: dials every shard of NODE from the
 * same shard here and sends a verified stream (cli/stream.h) of --count
 * messages of random sizes in total, then asks the receiver for its report:
 * exit 0 only if every message arrived once, in order, intact. With
 * --retry-ms, a connection that cannot be made or breaks is dialled again
 * with exponential backoff (the stream restarts on the new connection)
 * until the deadline; a peer that fails authentication is never retried. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/stream.h"
#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"

struct send_run;

struct send_shard {
	struct send_run *run;
	struct keel_shard *shard;
	struct keel_transport *t;
	struct keel_conn *c;
	bool up;
	uint64_t count;   /* this shard's share */
	uint64_t next;    /* next seq to send on the current connection */
	bool done_sent, finished;
	uint32_t attempt;
	uint64_t rng;
	struct keel_timer retry;
	uint64_t bytes;
	uint64_t reconnects;
} KEEL_CACHE_ALIGNED;

struct send_run {
	struct keel_node_config cfg;
	struct keel_runtime *rt;
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
	keel_runtime_stop(r->rt);
}

static void pump(struct send_shard *s)
{
	struct send_run *r = s->run;
	while (s->up && s->next < s->count) {
		uint32_t span = r->max_size > STREAM_HDR ? r->max_size - STREAM_HDR + 1 : 1;
		uint32_t len = STREAM_HDR + (uint32_t)(stream_splitmix(&s->rng) % span);
		struct keel_send_buf *b;
		int rc = keel_transport_alloc(s->c, len, &b);
		if (rc == KEEL_EFULL)
			return; /* on_writable resumes */
		if (rc < 0) {
			keel_error("send: %s", keel_strerror(rc));
			send_fail(s, rc);
			return;
		}
		stream_fill(b->data, len, r->seed, s->next);
		b->len = len;
		b->type = STREAM_DATA;
		keel_transport_send_buf(s->c, b);
		s->next++;
		s->bytes += len;
	}
	if (s->up && !s->done_sent && s->next == s->count) {
		int rc = keel_transport_send(s->c, STREAM_DONE, &s->count, sizeof(s->count));
		if (rc == 0)
			s->done_sent = true;
	}
}

static void dial(struct send_shard *s)
{
	struct send_run *r = s->run;
	struct keel_addr to = {.node = r->to, .shard = keel_shard_id(s->shard)};
	s->up = false;
	s->next = 0;
	s->done_sent = false;
	int rc = keel_transport_connect(s->t, to, &s->c);
	if (rc < 0) {
		keel_error("send: %s", s->t->errmsg);
		send_fail(s, rc);
	}
}

static void retry_fire(struct keel_timer *tm)
{
	dial(tm->arg);
}

static void s_up(struct keel_transport *t, struct keel_conn *c)
{
	struct send_shard *s = t->user;
	s->up = true;
	s->attempt = 0;
	pump(s);
}

static void s_writable(struct keel_transport *t, struct keel_conn *c)
{
	pump(t->user);
}

static void s_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct send_shard *s = t->user;
	struct send_run *r = s->run;
	bool was_up = s->up;
	s->up = false;
	s->c = NULL;
	if (s->finished || keel_runtime_stopping(r->rt))
		return;
	if (reason == KEEL_EAUTH || reason == KEEL_EPROTO) {
		keel_error("send: shard %u refused by node %u: %s", keel_shard_id(s->shard), r->to,
			   t->errmsg[0] ? t->errmsg : keel_strerror(reason));
		send_fail(s, reason);
		return;
	}
	uint64_t now = keel_now_ns();
	if (now >= r->retry_deadline_ns) {
		keel_error("send: shard %u: connection to node %u %s: %s", keel_shard_id(s->shard),
			   r->to, was_up ? "broke mid-stream" : "failed", keel_strerror(reason));
		send_fail(s, reason ? reason : KEEL_ECLOSED);
		return;
	}
	uint32_t ms = keel_transport_backoff_ms(s->attempt++, 50, 1000, stream_splitmix(&s->rng));
	keel_info("send: shard %u: connection to node %u %s (%s); redialling in %u ms",
		  keel_shard_id(s->shard), r->to, was_up ? "broke mid-stream" : "failed",
		  keel_strerror(reason), ms);
	s->reconnects++;
	keel_timer_arm(s->shard, &s->retry, (uint64_t)ms * 1000000u);
}

static void s_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct send_shard *s = t->user;
	struct send_run *r = s->run;
	if (m->type != STREAM_REPORT || m->len < 16)
		return;
	uint64_t rep[2];
	memcpy(rep, m->data, sizeof(rep));
	if (rep[0] != s->count || rep[1] != 0) {
		keel_error("send: node %u shard %u received %llu of %llu messages, %llu errors",
			   r->to, keel_shard_id(s->shard), (unsigned long long)rep[0],
			   (unsigned long long)s->count, (unsigned long long)rep[1]);
		send_fail(s, KEEL_ECORRUPT);
		return;
	}
	s->finished = true;
	keel_transport_close_conn(c);
	if (atomic_fetch_add(&r->finished, 1) + 1 == r->nshards)
		keel_runtime_stop(r->rt);
}

static const struct keel_transport_handlers send_handlers = {
	.on_conn_up = s_up,
	.on_recv = s_recv,
	.on_conn_down = s_down,
	.on_writable = s_writable,
};

static void deadline_fire(struct keel_timer *tm)
{
	struct send_shard *s = tm->arg;
	keel_error("send: shard %u: deadline passed (%llu of %llu messages sent on this connection)",
		   keel_shard_id(s->shard), (unsigned long long)s->next,
		   (unsigned long long)s->count);
	send_fail(s, KEEL_ETIMEOUT);
}

static struct keel_timer *deadline_timers;

static void send_shard_init(struct keel_shard *shard, void *arg)
{
	struct send_run *r = arg;
	unsigned id = keel_shard_id(shard);
	struct send_shard *s = &r->shards[id];
	s->run = r;
	s->shard = shard;
	s->count = r->count / r->nshards + (id < r->count % r->nshards ? 1 : 0);
	s->rng = r->seed * 0x9e3779b97f4a7c15ull + id + 1;
	keel_timer_init(&s->retry, retry_fire, s);
	keel_timer_init(&deadline_timers[id], deadline_fire, s);
	keel_timer_arm(shard, &deadline_timers[id], r->deadline_ns - keel_now_ns());
	struct keel_transport_config tc;
	keel_node_config_transport(&r->cfg, id, &tc);
	tc.shards = r->nshards;
	tc.handlers = &send_handlers;
	tc.user = s;
	tc.shard = shard;
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_transport_open(r->cfg.transport, &tc, &s->t, err);
	if (rc < 0) {
		keel_error("send: shard %u: %s", id, err);
		send_fail(s, rc);
		return;
	}
	dial(s);
}

static void send_shard_fini(struct keel_shard *shard, void *arg)
{
	struct send_run *r = arg;
	struct send_shard *s = &r->shards[keel_shard_id(shard)];
	keel_timer_cancel(shard, &s->retry);
	keel_timer_cancel(shard, &deadline_timers[keel_shard_id(shard)]);
	keel_transport_close(s->t);
	s->t = NULL;
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
		 "the node to send to, one of [peers]", .flags = KEEL_OPT_REQUIRED},
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
			 "  authentication), 1 on any other failure.\n",
		.opts = opts,
	};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	r.max_size = (uint32_t)max_size;
	char err[KEEL_ERRMSG_LEN];
	if (keel_node_config_load(path, &r.cfg, err) < 0 || keel_node_config_validate(&r.cfg, err) < 0) {
		fprintf(stderr, "keel send: %s\n", err);
		keel_node_config_free(&r.cfg);
		return 1;
	}
	if (r.to == r.cfg.node_id || !keel_node_config_peer(&r.cfg, r.to)) {
		st = keel_opt_usage(&spec, "--to %u: %s", r.to,
				    r.to == r.cfg.node_id ? "that is this node"
							  : "not a node of the configuration's [peers]");
		keel_node_config_free(&r.cfg);
		return st;
	}
	if (r.max_size > r.cfg.max_frame)
		r.max_size = r.cfg.max_frame;
	keel_log_set_node((int)r.cfg.node_id);
	struct keel_runtime_config rcfg = {
		.nshards = r.cfg.shards,
		.node_id = (int)r.cfg.node_id,
		.overcommit = true,
	};
	if (keel_runtime_create(&rcfg, &r.rt, err) < 0) {
		fprintf(stderr, "keel send: %s\n", err);
		keel_node_config_free(&r.cfg);
		return 1;
	}
	r.nshards = keel_runtime_shard_count(r.rt);
	r.shards = calloc(r.nshards, sizeof(*r.shards));
	deadline_timers = calloc(r.nshards, sizeof(*deadline_timers));
	keel_runtime_stop_on_signals(r.rt);
	uint64_t t0 = keel_now_ns();
	r.retry_deadline_ns = t0 + retry_ms * 1000000u;
	r.deadline_ns = t0 + timeout_ms * 1000000u;
	int rc = keel_runtime_run(r.rt, send_shard_init, send_shard_fini, &r);
	double secs = (double)(keel_now_ns() - t0) / 1e9;
	if (rc < 0)
		fprintf(stderr, "keel send: %s\n", keel_runtime_errmsg(r.rt));
	int result = atomic_load(&r.result);
	uint64_t bytes = 0, reconnects = 0;
	for (unsigned i = 0; i < r.nshards; i++) {
		bytes += r.shards[i].bytes;
		reconnects += r.shards[i].reconnects;
	}
	int status = 0;
	if (rc < 0) {
		status = 1;
	} else if (result == KEEL_EAUTH) {
		fprintf(stderr, "keel send: refused by node %u: peer authentication failed\n", r.to);
		status = 3;
	} else if (result < 0) {
		fprintf(stderr, "keel send: failed: %s\n", keel_strerror(result));
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
	keel_runtime_destroy(r.rt);
	free(r.shards);
	free(deadline_timers);
	keel_node_config_free(&r.cfg);
	return status;
}
