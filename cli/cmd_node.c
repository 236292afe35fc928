/* keel node --config FILE: runs a node: one shard thread per configured
 * shard, each with its own transport endpoint listening on the configured
 * address (port + shard). What it does with messages, for now: checks the
 * verified streams `keel send` produces (order and checksums), answers
 * their reports, echoes pings. Stops on SIGINT/SIGTERM. */
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/stream.h"
#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"

struct node_conn {
	struct node_conn *prev, *next; /* the shard's open connections */
	uint64_t expect; /* next DATA seq */
	uint64_t received;
	uint64_t errors;
};

struct node_shard {
	struct keel_transport *t;
	struct node_conn *open; /* freed at close: no on_conn_down then */
	uint64_t msgs, bytes, errors, conns;
} KEEL_CACHE_ALIGNED;

struct node {
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct node_shard *shards;
	atomic_int failed;
};

static void node_up(struct keel_transport *t, struct keel_conn *c)
{
	struct node_shard *ns = t->user;
	struct node_conn *nc = calloc(1, sizeof(*nc));
	if (!nc) {
		keel_transport_close_conn(c);
		return;
	}
	nc->next = ns->open;
	if (ns->open)
		ns->open->prev = nc;
	ns->open = nc;
	c->user = nc;
	ns->conns++;
}

static void node_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct node_shard *ns = t->user;
	struct node_conn *nc = c->user;
	if (!nc)
		return;
	if (nc->prev)
		nc->prev->next = nc->next;
	else
		ns->open = nc->next;
	if (nc->next)
		nc->next->prev = nc->prev;
	if (nc->received)
		keel_info("node: connection from n%u/s%u ended after %llu messages (%s)", c->peer.node,
			  c->peer.shard, (unsigned long long)nc->received,
			  reason ? keel_strerror(reason) : "closed");
	free(nc);
	c->user = NULL;
}

static void node_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct node_shard *ns = t->user;
	struct node_conn *nc = c->user;
	if (!nc)
		return;
	ns->msgs++;
	ns->bytes += m->len;
	switch (m->type) {
	case STREAM_DATA: {
		uint64_t seq = 0;
		bool corrupt = stream_check(m->data, m->len, &seq) < 0;
		if (corrupt || seq != nc->expect) {
			if (nc->errors++ < 5)
				keel_warn("node: stream from n%u/s%u: message %llu %s", c->peer.node,
					  c->peer.shard, (unsigned long long)nc->expect,
					  corrupt ? "corrupt" : "out of order");
			ns->errors++;
		}
		nc->expect = corrupt ? nc->expect + 1 : seq + 1;
		nc->received++;
		break;
	}
	case STREAM_DONE: {
		uint64_t count = 0;
		if (m->len >= 8)
			memcpy(&count, m->data, 8);
		uint64_t rep[2] = {nc->received, nc->errors};
		if (count == nc->received && nc->errors == 0)
			keel_info("node: stream of %llu messages from n%u/s%u verified: in order, checksums match",
				  (unsigned long long)count, c->peer.node, c->peer.shard);
		else
			keel_warn("node: stream from n%u/s%u: sender says %llu, received %llu, %llu errors",
				  c->peer.node, c->peer.shard, (unsigned long long)count,
				  (unsigned long long)nc->received, (unsigned long long)nc->errors);
		int rc = keel_transport_send(c, STREAM_REPORT, rep, sizeof(rep));
		if (rc < 0)
			keel_warn("node: report to n%u: %s", c->peer.node, keel_strerror(rc));
		nc->received = nc->errors = nc->expect = 0;
		break;
	}
	case STREAM_PING: {
		struct keel_send_buf *b;
		if (keel_transport_alloc(c, m->len, &b) == 0) {
			memcpy(b->data, m->data, m->len);
			b->len = m->len;
			b->type = STREAM_PING;
			keel_transport_send_buf(c, b);
		}
		break;
	}
	default:
		break;
	}
}

static const struct keel_transport_handlers node_handlers = {
	.on_conn_up = node_up,
	.on_recv = node_recv,
	.on_conn_down = node_down,
};

static void node_shard_init(struct keel_shard *shard, void *arg)
{
	struct node *n = arg;
	unsigned id = keel_shard_id(shard);
	struct node_shard *ns = &n->shards[id];
	struct keel_transport_config tc;
	keel_node_config_transport(&n->cfg, id, &tc);
	tc.shards = keel_shard_count(shard);
	tc.handlers = &node_handlers;
	tc.user = ns;
	tc.shard = shard;
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_transport_open(n->cfg.transport, &tc, &ns->t, err);
	if (rc == 0)
		rc = keel_transport_listen(ns->t);
	if (rc < 0) {
		keel_error("node: shard %u: %s", id, ns->t ? ns->t->errmsg : err);
		atomic_store(&n->failed, 1);
		keel_runtime_stop(keel_shard_runtime(shard));
	}
}

static void node_shard_fini(struct keel_shard *shard, void *arg)
{
	struct node *n = arg;
	struct node_shard *ns = &n->shards[keel_shard_id(shard)];
	keel_transport_close(ns->t);
	ns->t = NULL;
	while (ns->open) {
		struct node_conn *nc = ns->open;
		ns->open = nc->next;
		free(nc);
	}
}

static void node_usage(FILE *f)
{
	fprintf(f, "usage: keel node --config FILE [--poll]\n"
		   "  runs a node: its shards listen on the configured address (port + shard),\n"
		   "  authenticate peers with the cluster secret, and check the message streams\n"
		   "  that `keel send` produces. SIGINT/SIGTERM stop it.\n"
		   "  --poll   busy-poll instead of sleeping in io_uring (lowest latency)\n");
}

int keel_cmd_node(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"poll", no_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	bool poll = false;
	int o;
	while ((o = getopt_long(argc, argv, "c:ph", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			path = optarg;
			break;
		case 'p':
			poll = true;
			break;
		case 'h':
			node_usage(stdout);
			return 0;
		default:
			node_usage(stderr);
			return 2;
		}
	}
	if (!path) {
		node_usage(stderr);
		return 2;
	}
	struct node n = {0};
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_node_config_load(path, &n.cfg, err);
	if (rc < 0) {
		fprintf(stderr, "keel node: %s\n", err);
		return 1;
	}
	keel_log_set_node((int)n.cfg.node_id);
	struct keel_runtime_config rc_cfg = {
		.nshards = n.cfg.shards,
		.idle = poll ? KEEL_IDLE_BUSY_POLL : KEEL_IDLE_SLEEP,
		.node_id = (int)n.cfg.node_id,
		.overcommit = true,
	};
	rc = keel_runtime_create(&rc_cfg, &n.rt, err);
	if (rc < 0) {
		fprintf(stderr, "keel node: %s\n", err);
		keel_node_config_free(&n.cfg);
		return 1;
	}
	unsigned shards = keel_runtime_shard_count(n.rt);
	/* struct node_shard is cache-line aligned: calloc only promises 16 B
	 * (UBSan reported the misaligned access under ASan's allocator). */
	n.shards = aligned_alloc(KEEL_CACHELINE, (size_t)shards * sizeof(*n.shards));
	if (n.shards)
		memset(n.shards, 0, (size_t)shards * sizeof(*n.shards));
	keel_runtime_stop_on_signals(n.rt);
	keel_info("node %u of cluster %llu: %u shards, transport %s, listening on %s:%u+shard",
		  n.cfg.node_id, (unsigned long long)n.cfg.cluster_id, shards, n.cfg.transport,
		  n.cfg.listen_host, n.cfg.listen_port);
	rc = keel_runtime_run(n.rt, node_shard_init, node_shard_fini, &n);
	if (rc < 0)
		fprintf(stderr, "keel node: %s\n", keel_runtime_errmsg(n.rt));
	uint64_t msgs = 0, bytes = 0, errors = 0;
	for (unsigned i = 0; i < shards; i++) {
		msgs += n.shards[i].msgs;
		bytes += n.shards[i].bytes;
		errors += n.shards[i].errors;
	}
	keel_info("node %u stopped: %llu messages, %llu bytes received, %llu stream errors",
		  n.cfg.node_id, (unsigned long long)msgs, (unsigned long long)bytes,
		  (unsigned long long)errors);
	keel_runtime_destroy(n.rt);
	free(n.shards);
	keel_node_config_free(&n.cfg);
	return rc < 0 || atomic_load(&n.failed) ? 1 : 0;
}
