/* The runtime: shard threads, their start/stop choreography, and the
 * reactor loop each of them runs.
 *
 * Start: every shard thread pins itself, binds its memory policy to its NUMA
 * node, sets up its reactor (on its own thread: io_uring wants
 * IORING_SETUP_SINGLE_ISSUER),
 * and waits at a gate until all shards are set up; then each runs
 * shard_init, waits until all inits are done, and enters its loop. Stop sets
 * one flag and writes every shard's eventfd; each loop leaves at its next
 * iteration, waits at a gate until all loops have ended, runs shard_fini and
 * exits. Gates use a mutex: they are crossed three times per run, never on
 * the hot path. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "runtime/runtime_internal.h"

_Thread_local struct keel_shard *keel_tls_shard;

/* ---- gates ---- */

static void gate_init(struct keel_gate *g, unsigned target)
{
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->count = 0;
	g->target = target;
	g->abort = false;
}

static void gate_destroy(struct keel_gate *g)
{
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
}

/* Arrive and wait for everyone (or an abort). */
static void gate_arrive(struct keel_gate *g)
{
	pthread_mutex_lock(&g->mu);
	if (++g->count >= g->target)
		pthread_cond_broadcast(&g->cv);
	while (g->count < g->target && !g->abort)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

/* Wait without arriving (the starting thread). */
static void gate_wait(struct keel_gate *g)
{
	pthread_mutex_lock(&g->mu);
	while (g->count < g->target && !g->abort)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static void gate_abort(struct keel_gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->abort = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static void set_run_err(struct keel_runtime *rt, int err, const char *msg)
{
	pthread_mutex_lock(&rt->err_mu);
	if (!rt->run_err) {
		rt->run_err = err;
		snprintf(rt->errmsg, sizeof(rt->errmsg), "%s", msg);
	}
	pthread_mutex_unlock(&rt->err_mu);
}

/* ---- create / destroy ---- */

static uint32_t pow2_at_least(uint32_t v)
{
	uint32_t p = 2;
	while (p < v && p < (1u << 30))
		p <<= 1;
	return p;
}

int keel_runtime_create(const struct keel_runtime_config *cfg, struct keel_runtime **out,
			char *errmsg)
{
	*out = NULL;
	struct keel_runtime *rt = aligned_alloc(KEEL_CACHELINE,
						(sizeof(*rt) + KEEL_CACHELINE - 1) & ~(size_t)(KEEL_CACHELINE - 1));
	if (!rt)
		return keel_errmsg_set(errmsg, -ENOMEM, "runtime");
	memset(rt, 0, sizeof(*rt));
	rt->cfg = *cfg;
	rt->cfg.cpuset = NULL;
	rt->cfg.synthetic_topology = NULL;
	atomic_init(&rt->stop, 0);
	pthread_mutex_init(&rt->err_mu, NULL);
	int rc;
	char em[KEEL_ERRMSG_LEN];
	struct keel_cpuset set;
	if (cfg->cpuset && (rc = keel_cpuset_parse(cfg->cpuset, &set, errmsg)))
		goto fail;
	if ((rc = keel_topo_load(cfg->synthetic_topology, &rt->topo, errmsg)))
		goto fail;
	if ((rc = keel_topo_place(rt->topo, cfg->cpuset ? &set : NULL, cfg->nshards, cfg->overcommit,
				  &rt->pl, &rt->n, errmsg)))
		goto fail;
	if (cfg->node_id >= 0)
		keel_log_set_node(cfg->node_id);
	/* The backend, once for the whole run: every shard runs the same. */
	enum keel_reactor_kind rk = cfg->reactor;
	if (rk == KEEL_REACTOR_AUTO)
		rk = keel_reactor_default(NULL);
	if (!(rt->reactor = keel_reactor_ops_of(rk))) {
		rc = keel_errmsg_set(errmsg, KEEL_EBADINPUT, "runtime: unknown reactor %d", (int)rk);
		goto fail;
	}
	for (unsigned i = 0; i < rt->n && !rt->shared_pus; i++)
		for (unsigned j = 0; j < i; j++)
			if (rt->pl[i].pu == rt->pl[j].pu)
				rt->shared_pus = true;
	rt->ring_cap = pow2_at_least(cfg->ring_capacity ? cfg->ring_capacity : 512);
	unsigned n = rt->n;
	rt->shards = calloc(n, sizeof(*rt->shards));
	rt->rings = calloc((size_t)n * n, sizeof(*rt->rings));
	if (!rt->shards || !rt->rings) {
		rc = keel_errmsg_set(errmsg, -ENOMEM, "runtime: %u shards", n);
		goto fail;
	}
	/* Each shard's state lives on its own NUMA node, page-aligned (so
	 * cache-aligned), with its per-target arrays in the same allocation. */
	for (unsigned i = 0; i < n; i++) {
		size_t base = (sizeof(struct keel_shard) + 63) & ~(size_t)63;
		size_t len = base + n * (2 * sizeof(struct keel_ring *) + sizeof(struct keel_ovf) +
					 sizeof(unsigned) + 1);
		struct keel_shard *s = keel_topo_alloc_on_node(rt->topo, rt->pl[i].numa_node, len);
		if (!s) {
			rc = keel_errmsg_set(errmsg, -ENOMEM, "runtime: shard %u state", i);
			goto fail;
		}
		s->alloc_len = len;
		s->efd = -1;
		rt->shards[i] = s;
		char *p = (char *)s + base;
		s->out = (struct keel_ring **)p;
		p += n * sizeof(struct keel_ring *);
		s->in = (struct keel_ring **)p;
		p += n * sizeof(struct keel_ring *);
		s->ovf = (struct keel_ovf *)p;
		p += n * sizeof(struct keel_ovf);
		s->dirty = (unsigned *)p;
		p += n * sizeof(unsigned);
		s->is_dirty = (uint8_t *)p;
		s->rt = rt;
		s->id = i;
		s->n = n;
		s->pl = rt->pl[i];
		atomic_init(&s->sleeping, 0);
		atomic_init(&s->remote_free, NULL);
		atomic_init(&s->ext_pending, 0);
		pthread_mutex_init(&s->ext_mu, NULL);
		s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (s->efd < 0) {
			rc = keel_errmsg_set(errmsg, -errno, "runtime: eventfd for shard %u", i);
			goto fail;
		}
	}
	/* Ring from -> to lives on the consumer's node: the consumer polls its
	 * slots, the producer writes each line once. */
	rt->ring_bytes = keel_ring_bytes(rt->ring_cap);
	for (unsigned f = 0; f < n; f++) {
		for (unsigned t = 0; t < n; t++) {
			void *mem = keel_topo_alloc_on_node(rt->topo, rt->pl[t].numa_node, rt->ring_bytes);
			if (!mem) {
				rc = keel_errmsg_set(errmsg, -ENOMEM, "runtime: ring %u->%u", f, t);
				goto fail;
			}
			struct keel_ring *r = keel_ring_init(mem, rt->ring_cap);
			rt->rings[(size_t)f * n + t] = r;
			rt->shards[f]->out[t] = r;
			rt->shards[t]->in[f] = r;
		}
	}
	(void)em;
	*out = rt;
	return 0;
fail:
	keel_runtime_destroy(rt);
	return rc;
}

static struct keel_runtime *_Atomic sig_rt;
static struct sigaction old_int, old_term;
static bool sig_installed;

void keel_runtime_destroy(struct keel_runtime *rt)
{
	if (!rt)
		return;
	if (rt->started && !rt->waited) {
		keel_runtime_stop(rt);
		keel_runtime_wait(rt);
	}
	if (sig_installed && atomic_load(&sig_rt) == rt) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGTERM, &old_term, NULL);
		atomic_store(&sig_rt, NULL);
		sig_installed = false;
	}
	if (rt->rings) {
		for (size_t i = 0; i < (size_t)rt->n * rt->n; i++)
			keel_topo_free_on_node(rt->topo, rt->rings[i], rt->ring_bytes);
		free(rt->rings);
	}
	if (rt->shards) {
		for (unsigned i = 0; i < rt->n; i++) {
			struct keel_shard *s = rt->shards[i];
			if (!s)
				continue;
			keel_pool_destroy(s);
			keel_msgs_free(s);
			keel_timers_free(s);
			free(s->pollers);
			while (s->ext_head) {
				struct keel_ext_msg *m = s->ext_head;
				s->ext_head = m->next;
				free(m);
			}
			pthread_mutex_destroy(&s->ext_mu);
			if (s->efd >= 0)
				close(s->efd);
			keel_topo_free_on_node(rt->topo, s, s->alloc_len);
		}
		free(rt->shards);
	}
	if (rt->started) {
		gate_destroy(&rt->g_setup);
		gate_destroy(&rt->g_init);
		gate_destroy(&rt->g_loop);
	}
	pthread_mutex_destroy(&rt->err_mu);
	free(rt->pl);
	keel_topo_free(rt->topo);
	free(rt);
}

/* ---- the reactor ---- */

static unsigned run_pollers(struct keel_shard *s)
{
	unsigned work = 0;
	for (unsigned i = 0; i < s->npollers; i++) {
		struct keel_poller *p = &s->pollers[i];
		if (p->poll) {
			int w = p->poll(p->arg);
			if (w > 0)
				work += (unsigned)w;
		}
	}
	return work;
}

static unsigned run_external(struct keel_shard *s)
{
	if (KEEL_LIKELY(!atomic_load_explicit(&s->ext_pending, memory_order_relaxed)))
		return 0;
	atomic_store_explicit(&s->ext_pending, 0, memory_order_relaxed);
	pthread_mutex_lock(&s->ext_mu);
	struct keel_ext_msg *m = s->ext_head;
	s->ext_head = s->ext_tail = NULL;
	pthread_mutex_unlock(&s->ext_mu);
	unsigned n = 0;
	while (m) {
		struct keel_ext_msg *next = m->next;
		m->fn(s, m->arg);
		free(m);
		m = next;
		n++;
	}
	return n;
}

int keel_shard_post_external(struct keel_shard *to, void (*fn)(struct keel_shard *on, void *arg),
			     void *arg)
{
	if (!fn)
		return -EINVAL;
	if (atomic_load(&to->rt->stop))
		return KEEL_ESTOPPED;
	struct keel_ext_msg *m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->next = NULL;
	m->fn = fn;
	m->arg = arg;
	pthread_mutex_lock(&to->ext_mu);
	if (to->ext_tail)
		to->ext_tail->next = m;
	else
		to->ext_head = m;
	to->ext_tail = m;
	pthread_mutex_unlock(&to->ext_mu);
	atomic_store_explicit(&to->ext_pending, 1, memory_order_release);
	keel_shard_wake(to);
	return 0;
}

static void sleep_until_work(struct keel_shard *s)
{
	struct keel_runtime *rt = s->rt;
	atomic_store_explicit(&s->sleeping, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	/* Re-check everything a waker may have published before it saw
	 * sleeping == 0: pollers' sources, rings, remote frees, stop. */
	if ((s->npollers && run_pollers(s)) || keel_msgs_incoming(s) ||
	    atomic_load_explicit(&s->ext_pending, memory_order_relaxed) ||
	    atomic_load_explicit(&rt->stop, memory_order_relaxed) ||
	    atomic_load_explicit(&s->remote_free, memory_order_relaxed)) {
		atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
		return;
	}
	uint64_t d = keel_timers_next_delay(s);
	/* Messages stuck in overflow need this shard to retry: nap briefly. */
	if (s->novf && d > 50000)
		d = 50000;
	s->rops->wait(s, d);
	atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
}

static void shard_loop(struct keel_shard *s)
{
	struct keel_runtime *rt = s->rt;
	bool busy = rt->cfg.idle == KEEL_IDLE_BUSY_POLL;
	while (!atomic_load_explicit(&rt->stop, memory_order_relaxed)) {
		unsigned work = 0;
		s->loops++;
		if (s->npollers)
			work += run_pollers(s);
		work += keel_msgs_drain(s);
		work += run_external(s);
		keel_pool_drain_remote(s);
		work += s->rops->reap(s);
		/* Reading the clock costs ~100 ns in a VM, so while the loop is
		 * busy the timers are checked every 16th iteration (a few
		 * microseconds late at worst), and always before idling. */
		if (!work || ++s->timer_skip >= 16) {
			s->timer_skip = 0;
			keel_timers_fire(s);
		}
		keel_shard_flush(s);
		if (work)
			continue;
		if (busy && rt->shared_pus)
			sched_yield(); /* overcommitted: let the PU's other shard run */
		else if (busy)
			__builtin_ia32_pause();
		else
			sleep_until_work(s);
	}
}

static int shard_setup(struct keel_shard *s, char *em)
{
	struct keel_runtime *rt = s->rt;
	int rc;
	if (!rt->topo->synthetic) {
		if ((rc = keel_topo_bind_thread(rt->topo, s->pl.pu, em)))
			return rc;
		keel_topo_bind_thread_memory(rt->topo, s->pl.numa_node);
	}
	unsigned entries = rt->cfg.uring_entries ? rt->cfg.uring_entries : 256;
	s->rops = rt->reactor;
	if ((rc = s->rops->init(s, entries, em)))
		return rc;
	s->now = keel_now_ns();
	return 0;
}

static bool has_outgoing(struct keel_shard *s)
{
	for (unsigned to = 0; to < s->n; to++)
		if (keel_shard_pending(s, to))
			return true;
	return false;
}

/* Messages published before the stop still run, on their target and
 * before any shard's fini: a request's answer between shards is delivered
 * (and freed by its protocol) instead of being left in a ring or an
 * overflow queue. New posts fail with KEEL_ESTOPPED by now, as in
 * shard_fini; only the replies of keel_shard_calls run here still go out.
 * Every shard loops until no shard has a message in or out: rt->draining
 * counts the shards that have; a shard counts itself in when it sees an
 * incoming message *before* running it, so its sender's count can only
 * drop after it is in, and the count never reads 0 while a message
 * (or the reply it will produce) is still on its way. */
static void drain_after_stop(struct keel_shard *s)
{
	struct keel_runtime *rt = s->rt;
	bool in = true; /* counted in rt->draining (it starts at n) */
	for (;;) {
		bool busy = keel_msgs_incoming(s) || has_outgoing(s);
		if (busy && !in) {
			atomic_fetch_add(&rt->draining, 1);
			in = true;
		}
		keel_msgs_drain(s);
		keel_shard_flush(s);
		busy = keel_msgs_incoming(s) || has_outgoing(s);
		if (!busy && in) {
			atomic_fetch_sub(&rt->draining, 1);
			in = false;
		}
		if (!in && atomic_load(&rt->draining) == 0)
			return;
		sched_yield();
	}
}

static void *shard_main(void *p)
{
	struct keel_shard *s = p;
	struct keel_runtime *rt = s->rt;
	char name[16];
	snprintf(name, sizeof(name), "keel-s%u", s->id);
	pthread_setname_np(pthread_self(), name);
	keel_tls_shard = s;
	keel_log_set_shard((int)s->id);
	char em[KEEL_ERRMSG_LEN];
	int rc = shard_setup(s, em);
	if (rc)
		set_run_err(rt, rc, em);
	gate_arrive(&rt->g_setup);
	if (!rt->run_err) {
		keel_debug("shard %u on PU %u (core %u, NUMA node %u)", s->id, s->pl.pu, s->pl.core,
			   s->pl.numa_node);
		if (rt->init)
			rt->init(s, rt->arg);
		gate_arrive(&rt->g_init);
		shard_loop(s);
		if (s->rops->quiesce)
			s->rops->quiesce(s);
		gate_arrive(&rt->g_loop);
		drain_after_stop(s);
		if (rt->fini)
			rt->fini(s, rt->arg);
	}
	if (s->reactor)
		s->rops->fini(s);
	keel_tls_shard = NULL;
	keel_log_set_shard(-1);
	return NULL;
}

int keel_runtime_start(struct keel_runtime *rt, void (*shard_init)(struct keel_shard *, void *),
		       void (*shard_fini)(struct keel_shard *, void *), void *arg)
{
	if (rt->started)
		return keel_errmsg_set(rt->errmsg, KEEL_EBUSY, "runtime: already started");
	rt->started = true;
	rt->init = shard_init;
	rt->fini = shard_fini;
	rt->arg = arg;
	gate_init(&rt->g_setup, rt->n);
	gate_init(&rt->g_init, rt->n);
	gate_init(&rt->g_loop, rt->n);
	atomic_store(&rt->draining, rt->n);
	/* Shard threads leave SIGINT/SIGTERM to the process's other threads,
	 * so a signal never interrupts a loop mid-iteration. */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (unsigned i = 0; i < rt->n; i++) {
		struct keel_shard *s = rt->shards[i];
		int rc = pthread_create(&s->thread, NULL, shard_main, s);
		if (rc) {
			char em[KEEL_ERRMSG_LEN];
			keel_errmsg_set(em, -rc, "runtime: starting thread for shard %u", i);
			set_run_err(rt, -rc, em);
			gate_abort(&rt->g_setup);
			break;
		}
		s->thread_started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	gate_wait(&rt->g_setup);
	if (rt->run_err) {
		gate_abort(&rt->g_init);
		gate_abort(&rt->g_loop);
		atomic_store(&rt->stop, 1);
		return keel_runtime_wait(rt);
	}
	gate_wait(&rt->g_init);
	keel_info("runtime: %u shard%s running (%s reactor, %s)", rt->n, rt->n == 1 ? "" : "s",
		  rt->reactor->name,
		  rt->cfg.idle == KEEL_IDLE_BUSY_POLL ? "busy-poll" : "sleep when idle");
	return 0;
}

int keel_runtime_wait(struct keel_runtime *rt)
{
	if (!rt->started)
		return keel_errmsg_set(rt->errmsg, KEEL_EBADINPUT, "runtime: not started");
	if (!rt->waited) {
		for (unsigned i = 0; i < rt->n; i++) {
			if (rt->shards[i]->thread_started) {
				pthread_join(rt->shards[i]->thread, NULL);
				rt->shards[i]->thread_started = false;
			}
		}
		rt->waited = true;
	}
	return rt->run_err;
}

int keel_runtime_run(struct keel_runtime *rt, void (*shard_init)(struct keel_shard *, void *),
		     void (*shard_fini)(struct keel_shard *, void *), void *arg)
{
	int rc = keel_runtime_start(rt, shard_init, shard_fini, arg);
	if (rc)
		return rc;
	return keel_runtime_wait(rt);
}

void keel_runtime_stop(struct keel_runtime *rt)
{
	atomic_store(&rt->stop, 1);
	uint64_t one = 1;
	for (unsigned i = 0; i < rt->n; i++) {
		ssize_t w = write(rt->shards[i]->efd, &one, sizeof(one));
		(void)w;
	}
}

bool keel_runtime_stopping(const struct keel_runtime *rt)
{
	return atomic_load_explicit(&rt->stop, memory_order_relaxed) != 0;
}

static void on_signal(int sig)
{
	(void)sig;
	struct keel_runtime *rt = atomic_load(&sig_rt);
	if (rt)
		keel_runtime_stop(rt);
}

int keel_runtime_stop_on_signals(struct keel_runtime *rt)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	atomic_store(&sig_rt, rt);
	if (sigaction(SIGINT, &sa, &old_int) || sigaction(SIGTERM, &sa, &old_term))
		return keel_errmsg_set(rt->errmsg, -errno, "runtime: sigaction");
	sig_installed = true;
	return 0;
}

/* ---- accessors ---- */

unsigned keel_runtime_shard_count(const struct keel_runtime *rt) { return rt->n; }
const struct keel_placement *keel_runtime_placement(const struct keel_runtime *rt, unsigned i)
{
	return i < rt->n ? &rt->pl[i] : NULL;
}
struct keel_shard *keel_runtime_shard(struct keel_runtime *rt, unsigned i)
{
	return i < rt->n ? rt->shards[i] : NULL;
}
const char *keel_runtime_errmsg(const struct keel_runtime *rt) { return rt->errmsg; }

unsigned keel_shard_id(const struct keel_shard *s) { return s->id; }
unsigned keel_shard_count(const struct keel_shard *s) { return s->n; }
struct keel_shard *keel_shard_self(void) { return keel_tls_shard; }
struct keel_runtime *keel_shard_runtime(struct keel_shard *s) { return s->rt; }
const struct keel_placement *keel_shard_placement(const struct keel_shard *s) { return &s->pl; }

void keel_shard_wake(struct keel_shard *s)
{
	/* Pairs with the fence in sleep_until_work: whatever the caller
	 * published before this call is seen by the shard's re-check, or the
	 * shard's sleeping flag is seen here. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&s->sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&s->sleeping, 0, memory_order_relaxed)) {
		uint64_t one = 1;
		ssize_t w = write(s->efd, &one, sizeof(one));
		(void)w;
	}
}

int keel_shard_add_poller(struct keel_shard *s, int (*poll)(void *arg), void *arg)
{
	for (unsigned i = 0; i < s->npollers; i++) {
		if (!s->pollers[i].poll) {
			s->pollers[i] = (struct keel_poller){poll, arg};
			return (int)i;
		}
	}
	if (s->npollers == s->pollers_cap) {
		unsigned cap = s->pollers_cap ? s->pollers_cap * 2 : 4;
		struct keel_poller *p = realloc(s->pollers, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->pollers = p;
		s->pollers_cap = cap;
	}
	s->pollers[s->npollers] = (struct keel_poller){poll, arg};
	return (int)s->npollers++;
}

void keel_shard_remove_poller(struct keel_shard *s, int id)
{
	if (id >= 0 && (unsigned)id < s->npollers)
		s->pollers[id].poll = NULL;
}
