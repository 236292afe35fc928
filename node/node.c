/* The node process (keel/node.h): the runtime, one endpoint per shard, and
 * the layers' start/stop hooks on each shard's thread. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "keel/node.h"

struct node_shard {
	struct keel_endpoint *ep;
	bool started; /* hooks->start returned 0 */
} KEEL_CACHE_ALIGNED;

struct keel_node {
	const struct keel_node_config *cfg;
	struct keel_runtime *rt;
	struct keel_node_hooks hooks;
	struct node_shard *shards;
	unsigned nshards;
	atomic_int failed;
	char errmsg[KEEL_ERRMSG_LEN];
	bool running;
};

int keel_node_create(const struct keel_node_config *cfg, const struct keel_node_options *o,
		     struct keel_node **out, char *errmsg)
{
	*out = NULL;
	struct keel_node *n = calloc(1, sizeof(*n));
	if (!n)
		return keel_errmsg_set(errmsg, -ENOMEM, "node: out of memory");
	n->cfg = cfg;
	struct keel_runtime_config rc = {
		.nshards = cfg->shards,
		.cpuset = o ? o->cpuset : NULL,
		.overcommit = o && o->overcommit,
		.idle = o && o->busy_poll ? KEEL_IDLE_BUSY_POLL : KEEL_IDLE_SLEEP,
		.node_id = (int)cfg->node_id,
		.synthetic_topology = o ? o->synthetic_topology : NULL,
		/* keel node --reactor, else [node] reactor, else AUTO */
		.reactor = o && o->reactor != KEEL_REACTOR_AUTO ? o->reactor : cfg->reactor,
	};
	int r = keel_runtime_create(&rc, &n->rt, errmsg);
	if (r < 0) {
		free(n);
		return r;
	}
	n->nshards = keel_runtime_shard_count(n->rt);
	n->shards = aligned_alloc(KEEL_CACHELINE, sizeof(*n->shards) * n->nshards);
	if (!n->shards) {
		keel_runtime_destroy(n->rt);
		free(n);
		return keel_errmsg_set(errmsg, -ENOMEM, "node: out of memory");
	}
	memset(n->shards, 0, sizeof(*n->shards) * n->nshards);
	*out = n;
	return 0;
}

static void fail(struct keel_node *n, int rc, const char *msg)
{
	int expected = 0;
	if (atomic_compare_exchange_strong(&n->failed, &expected, rc ? rc : -EIO))
		snprintf(n->errmsg, sizeof(n->errmsg), "%s", msg);
	keel_runtime_stop(n->rt);
}

static void shard_init(struct keel_shard *sh, void *arg)
{
	struct keel_node *n = arg;
	unsigned i = keel_shard_id(sh);
	struct node_shard *ns = &n->shards[i];
	char err[KEEL_ERRMSG_LEN] = "";
	struct keel_endpoint_config ec = {
		.node = n->cfg,
		.shard = i,
		.nshards = n->nshards,
		.clock = keel_shard_clock(sh),
		.shard_rt = sh,
	};
	int rc = keel_endpoint_open(&ec, &ns->ep, err);
	if (rc < 0) {
		fail(n, rc, err);
		return;
	}
	if (n->hooks.start) {
		rc = n->hooks.start(n->hooks.arg, n, ns->ep, err);
		if (rc < 0) {
			fail(n, rc, err[0] ? err : keel_strerror(rc));
			return;
		}
	}
	ns->started = true;
}

static void shard_fini(struct keel_shard *sh, void *arg)
{
	struct keel_node *n = arg;
	struct node_shard *ns = &n->shards[keel_shard_id(sh)];
	if (ns->started && n->hooks.stop)
		n->hooks.stop(n->hooks.arg, n, ns->ep);
	ns->started = false;
	keel_endpoint_close(ns->ep);
	ns->ep = NULL;
}

int keel_node_start(struct keel_node *n, const struct keel_node_hooks *hooks, char *errmsg)
{
	if (hooks)
		n->hooks = *hooks;
	n->running = true;
	int rc = keel_runtime_start(n->rt, shard_init, shard_fini, n);
	if (rc < 0) {
		n->running = false;
		return keel_errmsg_set(errmsg, rc, "%s", keel_runtime_errmsg(n->rt));
	}
	if (atomic_load(&n->failed)) {
		keel_runtime_wait(n->rt);
		n->running = false;
		rc = atomic_load(&n->failed);
		if (errmsg)
			snprintf(errmsg, KEEL_ERRMSG_LEN, "%s", n->errmsg);
		return rc;
	}
	return 0;
}

void keel_node_stop(struct keel_node *n)
{
	keel_runtime_stop(n->rt);
}

int keel_node_stop_on_signals(struct keel_node *n)
{
	return keel_runtime_stop_on_signals(n->rt);
}

int keel_node_wait(struct keel_node *n)
{
	if (!n->running)
		return atomic_load(&n->failed);
	int rc = keel_runtime_wait(n->rt);
	n->running = false;
	int f = atomic_load(&n->failed);
	return f ? f : rc;
}

void keel_node_destroy(struct keel_node *n)
{
	if (!n)
		return;
	if (n->running)
		keel_node_wait(n);
	keel_runtime_destroy(n->rt);
	free(n->shards);
	free(n);
}

const struct keel_node_config *keel_node_config(const struct keel_node *n) { return n->cfg; }
struct keel_runtime *keel_node_runtime(struct keel_node *n) { return n->rt; }
unsigned keel_node_shard_count(const struct keel_node *n) { return n->nshards; }

struct keel_endpoint *keel_node_endpoint(struct keel_node *n, unsigned shard)
{
	return shard < n->nshards ? n->shards[shard].ep : NULL;
}
