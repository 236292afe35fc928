/*
 * tests/sim/lock_sim.c — deterministic simulation of the lock service
 * (issue 13), driven by one seed.
 *
 * What runs is production code: every node is keel_services_start() (the
 * lock state machine, services/lock/lock_sm.c, inside the services layer
 * that proposes the lock clock's TICKs and batches KEEPALIVEs) on the
 * production replicated log (keel_rlog: Raft core, group host, WAL,
 * snapshots) over the `sim` transport, a fault-injecting in-memory disk
 * (tests/lib/faultdisk.h) and one virtual clock. Its clients are
 * simulated processes that speak the lock requests to a node of their
 * choice over a simulated client network (delay, loss, cuts), follow the
 * client library's protocol (client/lock_client.c: sessions per group,
 * keepalives every TTL/3, retries with the same sequence, leader hints,
 * asking again where a wait stands), and decide whether they may still use
 * a lock with the library's own lease view (client/lock_lease.c) on their
 * own clock, which runs a few percent fast or slow and keeps running while
 * the process is frozen. A lock protects a fenced store
 * (keel_lock_fence_check) that a holder writes to.
 *
 * The nemesis (one PRNG from the seed): leader and node kills with
 * restarts, power failures, partitions among nodes and between clients and
 * nodes, message delay with a long tail and loss, client GC pauses past
 * their TTL (a write checked before the pause goes out after it), client
 * crashes (the session is abandoned), and session-expiry races (clients
 * whose keepalives are starved). The last phase heals everything.
 *
 * Checks (a violation fails the seed, with its name and a replay line):
 *   mutual-exclusion  no two clients believe they hold a lock exclusively
 *                     at the same instant (each by its own lease view)
 *   readers-writers   no client believes it holds shared while another
 *                     believes it holds exclusive
 *   token-order       a client's grant carries a token above every token
 *                     believed before it (above every exclusive one, for a
 *                     shared grant): tokens strictly increase per lock
 *   fenced-store      the store never accepts a token lower than one it
 *                     accepted (it checks with keel_lock_fence_check)
 *   shared-exclusive  no replica's lock has an exclusive holder beside
 *                     another holder
 *   expiry-atomic     no replica has a holder or waiter whose session is
 *                     gone (expiry released all locks and waits at once)
 *   grant-to-expired  no replica grants a waiter whose session it expired
 *   fifo              a replica never grants a waiter while one queued
 *                     ahead of it still waits
 *   expiry-error      a blocked acquire whose session expired returns an
 *                     error (it neither succeeds nor hangs)
 *   liveness          after healing, no lock is held by a crashed client's
 *                     session, no blocked acquire hangs, grants go on
 *   linearizable      each lock's history as its clients saw it (acquire,
 *                     release, and the end of a hold it let go of unseen,
 *                     in real time) is linearizable against the lock model
 *                     of tests/lib/linearizability.h (run at the seed's end)
 *
 * Usage:
 *   lock-sim                          seeds 1..50
 *   lock-sim --seeds A:B              seeds A..B-1
 *   KEEL_SIM_SEED=123 lock-sim -v     one seed, with the trace
 *   lock-sim --expect-violation ...   succeed iff a seed finds a safety
 *                                     violation (for planted bugs); with
 *                                     --check A,B other checks' findings
 *                                     are traced and the seed runs on
 *   lock-sim --determinism --seeds A:B  each seed twice: the same trace hash
 *   --chaos-ms N (default 5000)
 * Exit: 0 every seed passed (or, with --expect-violation, one was caught);
 * 1 a violation; 2 bad usage or setup failure.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultdisk.h"
#include "linearizability.h"
#include "keel/base.h"
#include "keel/config.h"
#include "keel/lock.h"
#include "keel/lock_client.h"
#include "keel/node.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/services.h"
#include "transport/sim.h"

#define MAXN 5
#define MAXG 2
#define MAXC 6
#define NLOCKS 3
#define MS 1000000ull
#define CLIENT_TICK (2 * MS)   /* how often a running client looks at its timers */
#define REQ_TIMEOUT_MS 400     /* a request not answered by then is sent again */
#define NO_OP ((size_t)-1)
/* The linearizability search's budget per lock: the histories are short
 * and mostly sequential (seeds 1..340 take about 250 steps a seed), so it
 * is never reached here; past it the check has no verdict, which fails
 * nothing but is counted in the summary ("seeds out of budget"). */
#define LIN_STEPS 2000000

static const char *const lock_names[NLOCKS] = {"alpha", "beta", "gamma"};

/* ---- the world -------------------------------------------------------- */

struct simnode {
	uint32_t id;
	bool up, dying;
	uint64_t restart_at, next_disk;
	struct keel_endpoint *ep;
	struct keel_services *svc;
	struct keel_faultdisk *wal[MAXG], *snap[MAXG];
	/* checker: sessions this replica expired (since its last start) */
	uint64_t *expired[MAXG];
	size_t nexpired[MAXG], cexpired[MAXG];
	/* checker: the waiters of each lock at the last look (fifo) */
	struct keel_lock_waiter prev_w[NLOCKS][16];
	size_t prev_nw[NLOCKS];
	bool prev_valid[NLOCKS];
};

enum { OP_IDLE, OP_OPEN, OP_ACQ, OP_WAIT, OP_HOLD, OP_REL };
enum { M_OPEN = 1, M_KA, M_CLOSE, M_ACQ, M_REL, M_CANCEL };

struct cgroup {
	uint64_t session;
	uint32_t gen;
	struct keel_lock_lease lease;
	bool open;                 /* the OPEN was answered: the lease view runs */
	bool lost;
	uint32_t ka_req;
	uint64_t ka_sent, last_ka; /* client ms */
	uint32_t leader;
	uint64_t valid_real;       /* real ns its lease view was last seen valid */
};

struct client {
	uint32_t id, inc;          /* inc: its process incarnation */
	bool up;
	uint64_t restart_at, paused_until; /* real ns */
	int64_t ppm;               /* its clock's rate error */
	uint64_t offset_ms;
	uint64_t base, seq;
	uint32_t ttl;
	uint32_t cur;              /* the node it asks when no leader is known */
	uint32_t connected;        /* nodes it sent to (they push its events) */
	struct cgroup g[MAXG];
	/* the one operation in progress */
	int op;
	uint8_t lk, mode;
	uint32_t wait_ms;
	uint64_t op_seq, wait_seq; /* the request's sequence; the wait's first */
	uint32_t op_req;           /* its request id in flight (0: none) */
	uint32_t op_node;
	uint64_t op_sent, op_first, give_up, next_ask, retry_at; /* client ms */
	uint64_t wait_since_real;  /* real ns the wait began */
	/* the lock held */
	uint64_t token, hold_until, next_write;
	bool write_pending;        /* checked before a pause, sent after it */
	bool cut_at_thaw;          /* the nemesis cuts its links as it thaws */
	int force_lk;              /* the nemesis's next lock for it to wait on (-1: none) */
	uint64_t next_act;         /* client ms */
	/* linearizable: its operations in W.hist (NO_OP: none open) */
	size_t lin_acq, lin_rel;
};

struct cmsg {
	uint64_t at, order;
	uint8_t dir;               /* 0 to a node, 1 an answer, 2 a push, 3 to the store */
	bool inbox;                /* arrived at a frozen client: read when it thaws */
	uint32_t node, client, inc, req;
	uint8_t kind, lk, mode, ev_kind, lock_status;
	uint32_t group, wait_ms, leader;
	uint64_t session, seq, token;
	int32_t status;
};

/* a request at a node, until the service answers it */
struct nreq {
	uint32_t node, client, inc, req, group;
	uint8_t kind;
};

struct expiry {
	uint64_t session, index;
};

struct world {
	uint64_t seed;
	unsigned n, ngroups, nc;
	struct keel_prng rng;
	struct keel_sim_net *net;
	struct keel_clock *clock;
	uint64_t now;
	struct simnode nodes[MAXN];
	struct client cl[MAXC];
	bool cut[MAXC][MAXN];
	uint32_t drop_ppm, slow_ppm;
	struct cmsg *q;
	size_t nq, cq;
	uint64_t order, next_req;
	struct keel_rlog_settings log;
	uint32_t tick_ms, snapshot_every;
	/* checker */
	uint64_t max_any[NLOCKS], max_excl[NLOCKS];
	struct keel_lock_fence fence[NLOCKS];
	uint64_t store_max[NLOCKS];
	struct expiry *exp;
	size_t nexp, cexp;
	uint64_t *crashed;         /* sessions of crashed clients (group in low bits of the slot) */
	uint32_t *crashed_g;
	size_t ncrashed, ccrashed;
	bool healing;
	uint64_t heal_at, grants_after_heal, grants, writes, refused, pauses, crashes, expiries;
	uint64_t events_hash;
	char violation[600];
	bool liveness;
	const char *only;          /* --check with --expect-violation: the checks that count */
	struct keel_lin_history hist; /* every lock's history, by its clients */
	uint64_t holder_sess[KEEL_LIN_MAX_HOLDERS], holder_used[KEEL_LIN_MAX_HOLDERS];
	uint64_t lin_ops, lin_steps;
	bool lin_unknown;
};

static struct world W;
static int verbose;
static unsigned chaos_ms = 5000;
static struct keel_node_config node_cfg[MAXN + 1];

static void trace(const char *fmt, ...) KEEL_PRINTF(1, 2);
static void trace(const char *fmt, ...)
{
	if (!verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[%9.3f ms] ", (double)W.now / 1e6);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void violate(bool liveness, const char *fmt, ...) KEEL_PRINTF(2, 3);
static bool check_named(const char *list, const char *msg);

static void violate(bool liveness, const char *fmt, ...)
{
	if (W.violation[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(W.violation, sizeof(W.violation), fmt, ap);
	va_end(ap);
	if (W.only && !check_named(W.only, W.violation)) {
		/* a planted bug's test waits for its named check */
		trace("violation (not a named check, the seed runs on): %s", W.violation);
		W.violation[0] = 0;
		return;
	}
	W.liveness = liveness;
	trace("VIOLATION: %s", W.violation);
}

static void note(uint64_t a, uint64_t b)
{
	W.events_hash = keel_mix64(W.events_hash ^ keel_mix64(a * 0x100000001b3ull + b + W.now));
}

static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return p;
	size_t c = *cap ? *cap * 2 : 64;
	void *q = realloc(p, c * size);
	if (!q) {
		fprintf(stderr, "lock-sim: out of memory\n");
		exit(2);
	}
	*cap = c;
	return q;
}

static uint32_t group_of_lock(unsigned lk)
{
	return keel_service_group_of(lock_names[lk], strlen(lock_names[lk]), W.ngroups);
}

/* A client's clock: a few percent off the real one, from its own origin;
 * it runs on while the process is frozen (a pause stops the process, not
 * time). */
static uint64_t cnow(const struct client *c)
{
	uint64_t us = W.now / 1000;
	return c->offset_ms + us / 1000 + (uint64_t)((int64_t)us * c->ppm / 1000000000);
}

/* ---- the lock history (the linearizable check) ------------------------------ */

/* An acquire begins when the client first sends it; its retries and re-asks
 * are the same operation. */
/* The history's holder for the client's session of its lock's group. The
 * model has KEEL_LIN_MAX_HOLDERS of them; a session that lost its lease
 * (or whose process crashed) must stay apart from the next ones, since its
 * holds live on at the cluster until it expires there (which waits for
 * the lock clock: long without a leader). So a new session takes the
 * number used least recently; two would mix only if that many sessions
 * acquired within one expiry. */
static int lin_holder(const struct client *c)
{
	uint64_t s = c->g[group_of_lock(c->lk)].session;
	int pick = 0;
	for (int i = 0; i < KEEL_LIN_MAX_HOLDERS; i++) {
		if (W.holder_sess[i] == s) {
			pick = i;
			goto used;
		}
		if (W.holder_used[i] < W.holder_used[pick])
			pick = i;
	}
	W.holder_sess[pick] = s;
	trace("linearizable: c%u's session %016llx is c%d in the history", c->id,
	      (unsigned long long)s, pick);
used:
	W.holder_used[pick] = W.now + 1;
	return pick;
}

static void lin_acquire(struct client *c)
{
	c->lin_acq = keel_lin_invoke(&W.hist, lin_holder(c), KEEL_LIN_ACQUIRE, c->lk,
				     c->mode == KEEL_LOCK_SHARED ? KEEL_LIN_SHARED : KEEL_LIN_EXCLUSIVE,
				     c->wait_ms != 0, W.now);
	W.lin_ops++;
}

/* The client lets go of a hold (or of an acquire whose outcome it never
 * learned) without a release answered: the cluster ends it by an expiry
 * or a cancel it may never see, at an unknown time, but not before `from`
 * (for a hold: the last moment its lease view was valid; the service
 * expires a session only after that, or the lease view is wrong). */
static void lin_let_go(struct client *c, uint64_t from)
{
	(void)keel_lin_invoke(&W.hist, lin_holder(c), KEEL_LIN_EXPIRE, c->lk, 0, 0, from);
	W.lin_ops++;
}

/* An acquire that ends without the client knowing whether it was granted
 * (no answer, cancelled, session gone, crash): pending, with a let-go. */
static void lin_acquire_unknown(struct client *c)
{
	if (c->lin_acq == NO_OP)
		return;
	lin_let_go(c, W.hist.ops[c->lin_acq].call);
	c->lin_acq = NO_OP;
}

static void lin_acquire_done(struct client *c, bool granted, uint64_t token)
{
	if (c->lin_acq == NO_OP)
		return;
	keel_lin_return(&W.hist, c->lin_acq, W.now, token, granted);
	c->lin_acq = NO_OP;
}

/* The hold the client has ends unseen (lease ran out, session lost, crash). */
static void lin_hold_lost(struct client *c)
{
	uint64_t from = c->g[group_of_lock(c->lk)].valid_real;
	if (c->lin_rel != NO_OP) {
		/* a release in flight: its outcome unknown, left pending */
		uint64_t call = W.hist.ops[c->lin_rel].call;
		from = call < from ? call : from;
		c->lin_rel = NO_OP;
	}
	lin_let_go(c, from);
}

static void check_linearizable(void)
{
	struct keel_lin_report rep;
	enum keel_lin_verdict v = keel_lin_check(&W.hist, LIN_STEPS, &rep);
	W.lin_steps = rep.steps;
	if (v == KEEL_LIN_VIOLATION) {
		if (verbose || W.only)
			fprintf(stderr, "lock-sim: seed %llu: lock %s:\n%s", (unsigned long long)W.seed,
				lock_names[rep.key], rep.text);
		violate(false, "linearizable: lock %s's history (%zu ops) has no linearization against "
			"the lock model (cN: a session, -v names it): %.280s", lock_names[rep.key], W.hist.n, rep.text);
	} else if (v == KEEL_LIN_UNKNOWN) {
		W.lin_unknown = true;
		trace("linearizable: lock %s: search budget ran out", lock_names[rep.key]);
	}
	keel_lin_report_free(&rep);
}

/* ---- the client network ------------------------------------------------ */

static uint64_t delay(void)
{
	uint64_t d = keel_prng_range(&W.rng, 50, 500) * 1000;
	if (keel_prng_range(&W.rng, 0, 999999) < W.slow_ppm)
		d += keel_prng_range(&W.rng, 1, 60) * MS;
	return d;
}

static void post(struct cmsg m)
{
	if (m.dir != 3 && keel_prng_range(&W.rng, 0, 999999) < W.drop_ppm) {
		note(0xd0, m.req);
		return;
	}
	m.at = W.now + delay();
	m.order = ++W.order;
	W.q = grow(W.q, &W.cq, W.nq, sizeof(*W.q));
	W.q[W.nq++] = m;
}

/* ---- nodes: the production services on the production log --------------- */

static void svc_log_config(void *arg, uint32_t group, struct keel_rlog_config *lc)
{
	struct simnode *n = arg;
	struct keel_wal_io *wio = NULL, *sio = NULL;
	if (keel_faultdisk_io(n->wal[group], &wio) < 0 || keel_faultdisk_io(n->snap[group], &sio) < 0) {
		fprintf(stderr, "lock-sim: faultdisk backend failed\n");
		exit(2);
	}
	lc->wal_io = wio;
	lc->snap_io = sio;
	lc->seed = keel_mix64(W.seed * 131 + n->id * 7 + group) | 1;
}

static void expired_add(struct simnode *n, uint32_t g, uint64_t s)
{
	n->expired[g] = grow(n->expired[g], &n->cexpired[g], n->nexpired[g], sizeof(uint64_t));
	n->expired[g][n->nexpired[g]++] = s;
}

static bool expired_has(const struct simnode *n, uint32_t g, uint64_t s)
{
	for (size_t i = 0; i < n->nexpired[g]; i++)
		if (n->expired[g][i] == s)
			return true;
	return false;
}

static uint64_t expired_at(uint64_t s)
{
	for (size_t i = 0; i < W.nexp; i++)
		if (W.exp[i].session == s)
			return W.exp[i].index;
	return 0;
}

static int lock_of_name(const uint8_t *name, uint32_t len)
{
	for (int i = 0; i < NLOCKS; i++)
		if (name && len == strlen(lock_names[i]) && !memcmp(name, lock_names[i], len))
			return i;
	return -1;
}

/* Every replica's lock events: the checker's view of what each applied,
 * and the pushes to the clients that talked to that node. */
static void svc_lock_event(void *arg, uint32_t group, const struct keel_lock_event *ev)
{
	struct simnode *n = arg;
	trace("n%u g%u event %u session %016llx seq %llu %.*s token %llu at %llu", n->id, group,
	      ev->kind, (unsigned long long)ev->session, (unsigned long long)ev->seq,
	      (int)ev->name_len, ev->name ? (const char *)ev->name : "", (unsigned long long)ev->token,
	      (unsigned long long)ev->index);
	if (ev->kind == KEEL_LOCK_EV_EXPIRED) {
		expired_add(n, group, ev->session);
		if (!expired_at(ev->session)) {
			W.exp = grow(W.exp, &W.cexp, W.nexp, sizeof(*W.exp));
			W.exp[W.nexp++] = (struct expiry){ev->session, ev->index};
		}
	} else if (ev->kind == KEEL_LOCK_EV_GRANTED && expired_has(n, group, ev->session)) {
		violate(false, "grant-to-expired: node %u group %u granted %.*s (token %llu) at index "
			"%llu to session %016llx, which it had expired", n->id, group, (int)ev->name_len,
			(const char *)ev->name, (unsigned long long)ev->token,
			(unsigned long long)ev->index, (unsigned long long)ev->session);
	}
	if (n->dying)
		return;
	for (unsigned i = 0; i < W.nc; i++) {
		struct client *c = &W.cl[i];
		if (!c->up || c->g[group].session != ev->session || !(c->connected & (1u << n->id)))
			continue;
		int lk = lock_of_name(ev->name, ev->name_len);
		post((struct cmsg){.dir = 2, .node = n->id, .client = c->id, .inc = c->inc,
				   .ev_kind = ev->kind, .group = group, .session = ev->session,
				   .seq = ev->seq, .token = ev->token, .lk = (uint8_t)(lk < 0 ? 0xff : lk)});
	}
}

static uint64_t disk_latency(void)
{
	return W.now + keel_prng_range(&W.rng, 500, 8000) * 1000;
}

static void start_node(struct simnode *n)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_endpoint_config ec = {.node = &node_cfg[n->id], .shard = 0, .nshards = 1,
					  .clock = W.clock, .transport = "sim",
					  .backend_arg = W.net, .seed = keel_mix64(W.seed + n->id)};
	keel_sim_net_restart(W.net, n->id);
	if (keel_endpoint_open(&ec, &n->ep, err) < 0) {
		fprintf(stderr, "lock-sim: seed %llu: endpoint of node %u: %s\n",
			(unsigned long long)W.seed, n->id, err);
		exit(2);
	}
	for (unsigned g = 0; g < W.ngroups; g++)
		n->nexpired[g] = 0; /* it applies its log again: expiries again */
	memset(n->prev_valid, 0, sizeof(n->prev_valid));
	struct keel_services_config sc = {.ep = n->ep, .log = &W.log, .groups = W.ngroups,
					  .lock_tick_ms = W.tick_ms, .on_lock_event = svc_lock_event,
					  .log_config = svc_log_config, .arg = n};
	if (keel_services_start(&sc, &n->svc, err) < 0) {
		violate(false, "recovery: node %u does not start after a crash: %s", n->id, err);
		keel_endpoint_close(n->ep);
		n->ep = NULL;
		return;
	}
	n->up = true;
	n->dying = false;
	n->next_disk = disk_latency();
	trace("n%u up", n->id);
}

static void crash_node(struct simnode *n, bool power)
{
	if (!n->up)
		return;
	keel_sim_net_crash(W.net, n->id);
	for (unsigned g = 0; g < W.ngroups; g++) {
		if (power) {
			keel_faultdisk_reboot(n->wal[g], keel_prng_range(&W.rng, 0, keel_faultdisk_unsynced_len(n->wal[g])));
			keel_faultdisk_reboot(n->snap[g], keel_prng_range(&W.rng, 0, keel_faultdisk_unsynced_len(n->snap[g])));
		} else {
			keel_faultdisk_restart(n->wal[g]);
			keel_faultdisk_restart(n->snap[g]);
		}
	}
	n->dying = true; /* the answers its pending calls get go nowhere */
	keel_services_stop(n->svc);
	n->svc = NULL;
	keel_endpoint_close(n->ep);
	n->ep = NULL;
	n->up = false;
	n->restart_at = W.now + keel_prng_range(&W.rng, 50, 1500) * MS;
	note(n->id, power ? 0x90 : 0x91);
	trace("n%u %s", n->id, power ? "power failure" : "killed");
}

static struct simnode *leader_of(uint32_t g)
{
	for (unsigned i = 0; i < W.n; i++) {
		struct simnode *n = &W.nodes[i];
		if (!n->up)
			continue;
		struct keel_rlog_status st;
		keel_rlog_status(keel_services_log(n->svc, g), &st);
		if (st.role == KEEL_RLOG_LEADER)
			return n;
	}
	return NULL;
}

/* The service answered a request: back to its client. */
static void answer(struct nreq *r, int status, const struct keel_lock_result *res)
{
	struct simnode *n = &W.nodes[r->node - 1];
	if (!n->dying && n->up) {
		struct cmsg m = {.dir = 1, .node = r->node, .client = r->client, .inc = r->inc,
				 .req = r->req, .kind = r->kind, .group = r->group, .status = status};
		if (res) {
			m.lock_status = res->status;
			m.token = res->token;
		}
		if (status == KEEL_ENOTLEADER) {
			struct keel_rlog_status st;
			keel_rlog_status(keel_services_log(n->svc, r->group), &st);
			m.leader = st.leader;
		}
		post(m);
	}
	free(r);
}

static void on_lock_done(void *arg, int status, const struct keel_lock_result *res)
{
	answer(arg, status, res);
}

static void node_receive(struct simnode *n, const struct cmsg *m)
{
	struct nreq *r = malloc(sizeof(*r));
	if (!r)
		exit(2);
	*r = (struct nreq){m->node, m->client, m->inc, m->req, m->group, m->kind};
	int rc;
	if (m->kind == M_KA) {
		rc = keel_lock_keepalive(n->svc, m->group, m->session, on_lock_done, r);
	} else {
		static const uint8_t ops[] = {[M_OPEN] = KEEL_LOCK_OPEN, [M_CLOSE] = KEEL_LOCK_CLOSE,
					      [M_ACQ] = KEEL_LOCK_ACQUIRE, [M_REL] = KEEL_LOCK_RELEASE,
					      [M_CANCEL] = KEEL_LOCK_CANCEL};
		const char *name = m->kind == M_OPEN || m->kind == M_CLOSE ? NULL : lock_names[m->lk];
		struct keel_lock_cmd c = {.op = ops[m->kind], .session = m->session, .seq = m->seq,
					  .ttl_ms = m->kind == M_OPEN ? m->wait_ms : 0,
					  .name = (const uint8_t *)name,
					  .name_len = name ? (uint32_t)strlen(name) : 0,
					  .mode = m->kind == M_ACQ ? m->mode : 0,
					  .wait_ms = m->kind == M_ACQ ? m->wait_ms : 0,
					  .token = m->kind == M_REL ? m->token : 0};
		rc = keel_lock_call(n->svc, m->group, &c, on_lock_done, r);
	}
	if (rc < 0)
		answer(r, rc, NULL);
}

/* ---- clients --------------------------------------------------------------- */

static uint32_t route(struct client *c, uint32_t g)
{
	return c->g[g].leader ? c->g[g].leader : c->cur;
}

static uint32_t send_req(struct client *c, uint32_t node, uint8_t kind, uint32_t g,
			 uint64_t session, uint64_t seq)
{
	uint32_t id = (uint32_t)++W.next_req;
	c->connected |= 1u << node;
	struct cmsg m = {.dir = 0, .node = node, .client = c->id, .inc = c->inc, .req = id,
			 .kind = kind, .group = g, .session = session, .seq = seq, .lk = c->lk,
			 .mode = c->mode, .token = c->token};
	if (kind == M_OPEN)
		m.wait_ms = c->ttl;
	else if (kind == M_ACQ)
		m.wait_ms = c->wait_ms;
	post(m);
	return id;
}

static void op_send(struct client *c)
{
	uint32_t g = group_of_lock(c->lk);
	uint8_t kind = c->op == OP_OPEN ? M_OPEN : c->op == OP_REL ? M_REL : M_ACQ;
	c->op_node = route(c, g);
	c->op_sent = cnow(c);
	c->op_req = send_req(c, c->op_node, kind, g, c->g[g].session, c->op_seq);
}

/* The client gave the lock up (released, lost, or crashed). */
/* The history's side of the client leaving its operation: a hold ends
 * unseen, an acquire without a definite answer stays unknown (an answered
 * release or acquire has been recorded and closed before). */
static void lin_end(struct client *c)
{
	if (c->op == OP_HOLD || c->op == OP_REL)
		lin_hold_lost(c);
	else if (c->op == OP_ACQ || c->op == OP_WAIT)
		lin_acquire_unknown(c);
}

static void drop_hold(struct client *c)
{
	lin_end(c);
	c->op = OP_IDLE;
	c->write_pending = false;
	c->next_act = cnow(c) + keel_prng_range(&W.rng, 0, 300);
}

static bool believes(const struct client *c)
{
	if (!c->up || c->op != OP_HOLD)
		return false;
	const struct cgroup *cg = &c->g[group_of_lock(c->lk)];
	return !cg->lost && keel_lock_lease_valid(&cg->lease, cnow(c), NULL);
}

/* A grant reached the client: it holds the lock if its view says so. */
static void granted(struct client *c, uint64_t token)
{
	struct cgroup *cg = &c->g[group_of_lock(c->lk)];
	uint64_t t = cnow(c);
	/* the service granted it, whatever the client makes of it */
	lin_acquire_done(c, true, token);
	if (cg->lost || !keel_lock_lease_valid(&cg->lease, t, NULL)) {
		trace("c%u grant of %s (token %llu) came after its view ran out", c->id,
		      lock_names[c->lk], (unsigned long long)token);
		c->op = OP_HOLD; /* a hold let go of unseen */
		drop_hold(c);
		return;
	}
	cg->valid_real = W.now;
	unsigned lk = c->lk;
	if (c->mode == KEEL_LOCK_EXCLUSIVE ? token <= W.max_any[lk] : token <= W.max_excl[lk])
		violate(false, "token-order: client %u got %s %s with token %llu after tokens up to "
			"%llu (exclusive %llu) were held", c->id, lock_names[lk],
			c->mode == KEEL_LOCK_EXCLUSIVE ? "exclusively" : "shared",
			(unsigned long long)token, (unsigned long long)W.max_any[lk],
			(unsigned long long)W.max_excl[lk]);
	/* a token is its grant's log index: a grant at or after the index
	 * that expired the session is a grant to an expired session */
	uint64_t exp = expired_at(cg->session);
	if (exp && exp <= token)
		violate(false, "expiry-error: client %u's acquire of %s succeeded with token %llu, but "
			"its session %016llx expired at index %llu", c->id, lock_names[c->lk],
			(unsigned long long)token, (unsigned long long)cg->session,
			(unsigned long long)exp);
	if (token > W.max_any[lk])
		W.max_any[lk] = token;
	if (c->mode == KEEL_LOCK_EXCLUSIVE && token > W.max_excl[lk])
		W.max_excl[lk] = token;
	c->op = OP_HOLD;
	c->op_req = 0;
	c->token = token;
	c->hold_until = t + keel_prng_range(&W.rng, 20, 400);
	c->next_write = t;
	W.grants++;
	if (W.healing)
		W.grants_after_heal++;
	note(0x6a + c->id, token);
	trace("c%u holds %s %s token %llu (view %llu ms left)", c->id, lock_names[lk],
	      c->mode == KEEL_LOCK_EXCLUSIVE ? "x" : "s", (unsigned long long)token,
	      (unsigned long long)(cg->lease.until - t));
}

static void acquire_failed(struct client *c, const char *why)
{
	trace("c%u acquire of %s: %s", c->id, lock_names[c->lk], why);
	drop_hold(c);
}

static void session_lost(struct client *c, uint32_t g)
{
	struct cgroup *cg = &c->g[g];
	if (!cg->lost)
		trace("c%u group %u session %016llx lost", c->id, g, (unsigned long long)cg->session);
	cg->lost = true;
	keel_lock_lease_lose(&cg->lease);
	if ((c->op == OP_WAIT || c->op == OP_ACQ || c->op == OP_HOLD) && group_of_lock(c->lk) == g)
		acquire_failed(c, "the session expired");
}

static void client_answer(struct client *c, const struct cmsg *m)
{
	struct cgroup *cg = &c->g[m->group];
	if (m->kind == M_KA) {
		if (m->req != cg->ka_req)
			return;
		cg->ka_req = 0;
		if (m->status == KEEL_ENOTLEADER) {
			cg->leader = m->leader && m->leader != cg->leader ? m->leader : 0;
			if (!cg->leader)
				c->cur = c->cur % W.n + 1;
			cg->last_ka = 0;
			return;
		}
		if (m->status < 0)
			return;
		if (m->lock_status == KEEL_LOCK_NO_SESSION)
			session_lost(c, m->group);
		else if (!cg->lost)
			keel_lock_lease_renewed(&cg->lease, cg->ka_sent, cnow(c));
		return;
	}
	if (m->req != c->op_req)
		return; /* an answer to a request given up on */
	c->op_req = 0;
	if (m->status == KEEL_ENOTLEADER || m->status == KEEL_EBUSY || m->status == KEEL_ETIMEOUT ||
	    m->status == KEEL_ESTOPPED) {
		if (m->leader && m->leader != cg->leader) {
			cg->leader = m->leader;
			c->retry_at = cnow(c);
		} else {
			cg->leader = 0;
			c->cur = c->cur % W.n + 1;
			c->retry_at = cnow(c) + 20;
		}
		return;
	}
	if (m->status < 0) {
		c->retry_at = cnow(c) + 20;
		return;
	}
	cg->leader = m->node;
	switch (c->op) {
	case OP_OPEN:
		/* the view counts from the first send: a retry's answer may be
		 * the first one's */
		keel_lock_lease_open(&cg->lease, c->ttl, c->op_first);
		cg->open = true;
		cg->lost = false;
		cg->last_ka = cg->ka_sent = c->op_sent;
		c->op = OP_ACQ;
		c->op_seq = c->wait_seq = ++c->seq;
		c->give_up = cnow(c) + c->wait_ms + 1000;
		c->wait_since_real = W.now;
		lin_acquire(c);
		op_send(c);
		break;
	case OP_ACQ:
	case OP_WAIT:
		switch (m->lock_status) {
		case KEEL_LOCK_OK:
			granted(c, m->token);
			break;
		case KEEL_LOCK_ALREADY:
			if (m->token) {
				granted(c, m->token); /* a re-ask after a lost push */
				break;
			}
			__attribute__((fallthrough)); /* still waiting */
		case KEEL_LOCK_WAITING:
			if (c->op == OP_ACQ)
				c->next_ask = cnow(c) + 2000;
			c->op = OP_WAIT;
			break;
		case KEEL_LOCK_BUSY:
			lin_acquire_done(c, false, 0);
			acquire_failed(c, "busy");
			break;
		case KEEL_LOCK_NO_SESSION:
			session_lost(c, m->group);
			break;
		default:
			violate(false, "client %u: acquire answered %u", c->id, m->lock_status);
		}
		break;
	case OP_REL:
		/* not held: its session ended unseen (the model drops the hold) */
		if (c->lin_rel != NO_OP)
			keel_lin_return(&W.hist, c->lin_rel, W.now, 0, m->lock_status == KEEL_LOCK_OK);
		c->lin_rel = NO_OP;
		c->op = OP_IDLE;
		drop_hold(c);
		break;
	}
}

static void client_push(struct client *c, const struct cmsg *m)
{
	struct cgroup *cg = &c->g[m->group];
	if (m->session != cg->session)
		return;
	if (m->ev_kind == KEEL_LOCK_EV_EXPIRED) {
		session_lost(c, m->group);
		return;
	}
	if ((c->op != OP_WAIT && c->op != OP_ACQ) || m->lk != c->lk || m->seq < c->wait_seq)
		return;
	if (m->ev_kind == KEEL_LOCK_EV_GRANTED)
		granted(c, m->token);
	else if (m->ev_kind == KEEL_LOCK_EV_WAIT_TIMEOUT) {
		lin_acquire_done(c, false, 0);
		acquire_failed(c, "the wait ran out");
	}
}

static void start_client(struct client *c)
{
	c->up = true;
	c->inc++;
	c->base = keel_prng_next(&W.rng) | 1;
	c->ppm = (int64_t)keel_prng_range(&W.rng, 0, 80000) - 40000; /* within 4% */
	c->offset_ms = keel_prng_range(&W.rng, 0, 1u << 30);
	c->cur = (uint32_t)keel_prng_range(&W.rng, 1, W.n);
	c->connected = 0;
	memset(c->g, 0, sizeof(c->g));
	c->op = OP_IDLE;
	c->op_req = 0;
	c->paused_until = 0;
	c->force_lk = -1;
	c->lin_acq = c->lin_rel = NO_OP;
	c->next_act = cnow(c) + keel_prng_range(&W.rng, 0, 200);
	trace("c%u up (ttl %u, clock %+lld ppm)", c->id, c->ttl, (long long)c->ppm);
}

static void crash_client(struct client *c)
{
	if (!c->up)
		return;
	for (unsigned g = 0; g < W.ngroups; g++) {
		if (!c->g[g].open || c->g[g].lost)
			continue;
		W.crashed = grow(W.crashed, &W.ccrashed, W.ncrashed, sizeof(*W.crashed));
		W.crashed_g = realloc(W.crashed_g, W.ccrashed * sizeof(*W.crashed_g));
		if (!W.crashed_g)
			exit(2);
		W.crashed_g[W.ncrashed] = g;
		W.crashed[W.ncrashed++] = c->g[g].session;
	}
	lin_end(c); /* its hold or acquire ends unseen */
	c->up = false;
	c->restart_at = W.now + keel_prng_range(&W.rng, 100, 3000) * MS;
	W.crashes++;
	note(0xc0, c->id);
	trace("c%u crashed%s", c->id, c->op == OP_HOLD ? " holding a lock" : "");
}

static void store_write(struct client *c)
{
	post((struct cmsg){.dir = 3, .client = c->id, .inc = c->inc, .lk = c->lk, .token = c->token});
	W.writes++;
}

static void store_receive(const struct cmsg *m)
{
	unsigned lk = m->lk;
	int rc = keel_lock_fence_check(&W.fence[lk], m->token);
	if (rc == 0) {
		if (m->token < W.store_max[lk])
			violate(false, "fenced-store: %s accepted token %llu after token %llu",
				lock_names[lk], (unsigned long long)m->token,
				(unsigned long long)W.store_max[lk]);
		W.store_max[lk] = m->token;
	} else {
		W.refused++;
		trace("store: %s refused c%u's stale token %llu (highest %llu)", lock_names[lk],
		      m->client, (unsigned long long)m->token, (unsigned long long)W.fence[lk].highest);
	}
}

static void keepalives(struct client *c, uint64_t t)
{
	uint32_t every = c->ttl / 3;
	for (unsigned g = 0; g < W.ngroups; g++) {
		struct cgroup *cg = &c->g[g];
		if (!cg->open || cg->lost)
			continue;
		if (cg->ka_req && t - cg->ka_sent < every)
			continue;
		if (!cg->ka_req && cg->last_ka && t - cg->last_ka < every)
			continue;
		cg->ka_sent = cg->last_ka = t;
		cg->ka_req = send_req(c, route(c, g), M_KA, g, cg->session, 0);
	}
}

/* What a running client does now: its timers and its workload. */
static void client_run(struct client *c)
{
	uint64_t t = cnow(c);
	for (unsigned g = 0; g < W.ngroups; g++)
		if (c->g[g].open && !c->g[g].lost && keel_lock_lease_check(&c->g[g].lease, t))
			session_lost(c, g);
	keepalives(c, t);
	switch (c->op) {
	case OP_IDLE: {
		if (t < c->next_act)
			break;
		c->lk = (uint8_t)keel_prng_range(&W.rng, 0, NLOCKS - 1);
		c->mode = keel_prng_range(&W.rng, 0, 3) ? KEEL_LOCK_EXCLUSIVE : KEEL_LOCK_SHARED;
		c->wait_ms = W.healing || keel_prng_range(&W.rng, 0, 4) ? (uint32_t)keel_prng_range(&W.rng, 300, 4000) : 0;
		if (c->force_lk >= 0) {
			c->lk = (uint8_t)c->force_lk;
			c->mode = KEEL_LOCK_EXCLUSIVE;
			c->wait_ms = 4000;
			c->force_lk = -1;
		}
		uint32_t g = group_of_lock(c->lk);
		struct cgroup *cg = &c->g[g];
		if (cg->session && cg->lost) {
			/* the real client closes a lost group and opens a new id */
			send_req(c, route(c, g), M_CLOSE, g, cg->session, ++c->seq);
			cg->session = 0;
		}
		c->retry_at = 0;
		if (!cg->session) {
			cg->gen++;
			cg->session = keel_mix64(c->base ^ ((uint64_t)g << 40) ^
						 ((uint64_t)cg->gen * 0x9e3779b97f4a7c15ull)) | 1;
			cg->lost = false;
			cg->open = false;
			cg->ka_req = 0;
			c->op = OP_OPEN;
			c->op_seq = ++c->seq;
			c->op_first = t;
		} else {
			c->op = OP_ACQ;
			c->op_seq = c->wait_seq = ++c->seq;
			c->give_up = t + c->wait_ms + 1000;
			c->wait_since_real = W.now;
			lin_acquire(c);
		}
		note(0xac + c->id, c->lk);
		op_send(c);
		break;
	}
	case OP_OPEN:
	case OP_ACQ:
	case OP_REL:
		if ((c->op_req && t - c->op_sent >= REQ_TIMEOUT_MS) || (!c->op_req && t >= c->retry_at)) {
			if (c->op_req) {
				c->g[group_of_lock(c->lk)].leader = 0;
				c->cur = c->cur % W.n + 1;
			}
			if (c->op == OP_ACQ && t >= c->give_up) {
				acquire_failed(c, "no answer in time");
				break;
			}
			if (c->op == OP_OPEN && t - c->op_first > c->ttl / 2) {
				/* An OPEN retried after its first copy was applied and
				 * the session expired would open that id again (the
				 * state machine keeps no tombstones): past half the
				 * TTL, give the id up and open a new one. */
				struct cgroup *cg = &c->g[group_of_lock(c->lk)];
				cg->gen++;
				cg->session = keel_mix64(c->base ^ ((uint64_t)group_of_lock(c->lk) << 40) ^
							 ((uint64_t)cg->gen * 0x9e3779b97f4a7c15ull)) | 1;
				c->op_seq = ++c->seq;
				c->op_first = t;
			}
			op_send(c); /* the same sequence: applied once */
		}
		break;
	case OP_WAIT:
		if (t >= c->give_up) {
			uint32_t g = group_of_lock(c->lk);
			send_req(c, route(c, g), M_CANCEL, g, c->g[g].session, ++c->seq);
			acquire_failed(c, "not granted in time (cancelled)");
		} else if (t >= c->next_ask && !c->op_req) {
			/* a push may have been lost: ask where the wait stands */
			c->next_ask = t + 2000;
			c->op_seq = ++c->seq;
			op_send(c);
		} else if (c->op_req && t - c->op_sent >= REQ_TIMEOUT_MS) {
			c->op_req = 0;
		}
		break;
	case OP_HOLD:
		if (c->write_pending) {
			/* checked before the pause: it goes out now */
			c->write_pending = false;
			store_write(c);
		}
		if (!believes(c)) {
			drop_hold(c);
			break;
		}
		if (t >= c->next_write) {
			store_write(c);
			c->next_write = t + keel_prng_range(&W.rng, 5, 60);
		}
		if (t >= c->hold_until) {
			c->op = OP_REL;
			c->op_seq = ++c->seq;
			c->lin_rel = keel_lin_invoke(&W.hist, lin_holder(c), KEEL_LIN_RELEASE, c->lk, 0, 0,
						     W.now);
			W.lin_ops++;
			op_send(c);
		}
		break;
	}
}

/* ---- the checks on state ---------------------------------------------------- */

struct look {
	struct keel_lock_holder h[16];
	struct keel_lock_waiter w[16];
	size_t nh, nw;
};

static void look_holder(void *arg, const struct keel_lock_holder *h)
{
	struct look *l = arg;
	if (l->nh < 16)
		l->h[l->nh++] = *h;
}

static void look_waiter(void *arg, const struct keel_lock_waiter *w)
{
	struct look *l = arg;
	if (l->nw < 16)
		l->w[l->nw++] = *w;
}

struct replica_look {
	struct simnode *n;
	uint32_t g;
};

static void check_replica(void *arg, int status, const struct keel_lock_sm *sm)
{
	struct replica_look *rl = arg;
	struct simnode *n = rl->n;
	if (status != 0)
		return;
	for (unsigned lk = 0; lk < NLOCKS; lk++) {
		if (group_of_lock(lk) != rl->g)
			continue;
		struct keel_lock_info info;
		struct look l = {0};
		const char *name = lock_names[lk];
		if (keel_lock_sm_inspect(sm, name, strlen(name), &info, look_holder, look_waiter, &l) < 0) {
			n->prev_nw[lk] = 0;
			n->prev_valid[lk] = true;
			continue;
		}
		if (info.mode == KEEL_LOCK_EXCLUSIVE && info.n_holders > 1)
			violate(false, "shared-exclusive: node %u: %s has an exclusive holder among %zu holders",
				n->id, name, info.n_holders);
		for (size_t i = 0; i < l.nh; i++)
			if (keel_lock_sm_session(sm, l.h[i].session, NULL, NULL) < 0)
				violate(false, "expiry-atomic: node %u: %s is held (token %llu) by session "
					"%016llx, which no longer exists", n->id, name,
					(unsigned long long)l.h[i].token, (unsigned long long)l.h[i].session);
		for (size_t i = 0; i < l.nw; i++)
			if (keel_lock_sm_session(sm, l.w[i].session, NULL, NULL) < 0)
				violate(false, "expiry-atomic: node %u: session %016llx waits for %s but no "
					"longer exists", n->id, (unsigned long long)l.w[i].session, name);
		/* fifo: a waiter of the last look now holding, while one ahead
		 * of it still waits */
		if (n->prev_valid[lk]) {
			for (size_t j = 0; j < n->prev_nw[lk]; j++) {
				const struct keel_lock_waiter *pj = &n->prev_w[lk][j];
				bool holds = false;
				for (size_t k = 0; k < l.nh; k++)
					holds |= l.h[k].session == pj->session;
				if (!holds)
					continue;
				for (size_t i = 0; i < j; i++) {
					const struct keel_lock_waiter *pi = &n->prev_w[lk][i];
					for (size_t k = 0; k < l.nw; k++)
						if (l.w[k].session == pi->session &&
						    l.w[k].deadline_ms == pi->deadline_ms)
							violate(false, "fifo: node %u: %s granted to session %016llx "
								"while %016llx, queued ahead of it, still waits",
								n->id, name, (unsigned long long)pj->session,
								(unsigned long long)pi->session);
				}
			}
		}
		memcpy(n->prev_w[lk], l.w, l.nw * sizeof(l.w[0]));
		n->prev_nw[lk] = l.nw;
		n->prev_valid[lk] = true;
	}
}

static void check_beliefs(void)
{
	/* the lower bound of when the cluster may end a session's holds */
	for (unsigned i = 0; i < W.nc; i++) {
		struct client *c = &W.cl[i];
		for (unsigned g = 0; c->up && g < W.ngroups; g++)
			if (c->g[g].open && !c->g[g].lost &&
			    keel_lock_lease_valid(&c->g[g].lease, cnow(c), NULL))
				c->g[g].valid_real = W.now;
	}
	for (unsigned lk = 0; lk < NLOCKS; lk++) {
		const struct client *x = NULL, *s = NULL;
		for (unsigned i = 0; i < W.nc; i++) {
			const struct client *c = &W.cl[i];
			if (c->lk != lk || !believes(c))
				continue;
			if (c->mode == KEEL_LOCK_EXCLUSIVE) {
				if (x)
					violate(false, "mutual-exclusion: clients %u (token %llu) and %u (token "
						"%llu) both believe they hold %s exclusively", x->id,
						(unsigned long long)x->token, c->id,
						(unsigned long long)c->token, lock_names[lk]);
				x = c;
			} else {
				s = c;
			}
		}
		if (x && s)
			violate(false, "readers-writers: client %u holds %s exclusively (token %llu) while "
				"client %u holds it shared (token %llu)", x->id, lock_names[lk],
				(unsigned long long)x->token, s->id, (unsigned long long)s->token);
	}
}

static void check_state(void)
{
	for (unsigned i = 0; i < W.n; i++) {
		struct simnode *n = &W.nodes[i];
		if (!n->up)
			continue;
		for (uint32_t g = 0; g < W.ngroups; g++) {
			struct replica_look rl = {n, g};
			(void)keel_lock_read(n->svc, g, false, check_replica, &rl);
		}
	}
	/* a blocked acquire whose session expired must end, with an error */
	for (unsigned i = 0; i < W.nc; i++) {
		const struct client *c = &W.cl[i];
		if (!c->up || c->op != OP_WAIT || c->paused_until > W.now)
			continue;
		uint64_t sess = c->g[group_of_lock(c->lk)].session;
		if (expired_at(sess) && W.now - c->wait_since_real > (uint64_t)(c->ttl * 2 + c->wait_ms + 3000) * MS)
			violate(false, "expiry-error: client %u still waits for %s although its session "
				"%016llx expired", c->id, lock_names[c->lk], (unsigned long long)sess);
	}
}

static void check_liveness(void)
{
	for (unsigned i = 0; i < W.n; i++) {
		struct simnode *n = &W.nodes[i];
		if (!n->up) {
			violate(true, "liveness: node %u is not serving after healing", n->id);
			return;
		}
	}
	for (unsigned i = 0; i < W.nc; i++) {
		const struct client *c = &W.cl[i];
		if (c->up && (c->op == OP_WAIT || c->op == OP_ACQ) && cnow(c) > c->give_up + 2000)
			violate(true, "liveness: client %u's acquire of %s hangs after healing", c->id,
				lock_names[c->lk]);
	}
	if (!W.grants_after_heal)
		violate(true, "liveness: no lock was granted after every fault was healed");
}

struct held_look {
	uint64_t session;
	bool found;
	unsigned lk;
};

static void find_holder(void *arg, const struct keel_lock_holder *h)
{
	struct held_look *hl = arg;
	if (h->session == hl->session)
		hl->found = true;
}

static void crashed_check(void *arg, int status, const struct keel_lock_sm *sm)
{
	struct held_look *hl = arg;
	if (status != 0)
		return;
	for (unsigned lk = 0; lk < NLOCKS; lk++) {
		struct keel_lock_info info;
		const char *name = lock_names[lk];
		hl->found = false;
		if (keel_lock_sm_inspect(sm, name, strlen(name), &info, find_holder, NULL, hl) == 0 &&
		    hl->found) {
			hl->lk = lk;
			return;
		}
	}
}

static void check_crashed_released(void)
{
	for (size_t i = 0; i < W.ncrashed && !W.violation[0]; i++) {
		struct simnode *ld = leader_of(W.crashed_g[i]);
		if (!ld)
			continue;
		struct held_look hl = {.session = W.crashed[i]};
		(void)keel_lock_read(ld->svc, W.crashed_g[i], false, crashed_check, &hl);
		if (hl.found)
			violate(true, "liveness: %s is still held by session %016llx of a crashed client "
				"after healing", lock_names[hl.lk], (unsigned long long)W.crashed[i]);
	}
}

/* ---- the nemesis ------------------------------------------------------------- */

static void fault_act(void)
{
	uint64_t d = keel_prng_range(&W.rng, 0, 99);
	struct simnode *n = &W.nodes[keel_prng_range(&W.rng, 0, W.n - 1)];
	struct client *c = &W.cl[keel_prng_range(&W.rng, 0, W.nc - 1)];
	uint32_t g = (uint32_t)keel_prng_range(&W.rng, 0, W.ngroups - 1);
	note(d, n->id);
	if (d < 12) {
		struct simnode *ld = leader_of(g);
		crash_node(ld ? ld : n, keel_prng_range(&W.rng, 0, 2) == 0);
	} else if (d < 18) {
		crash_node(n, keel_prng_range(&W.rng, 0, 1));
	} else if (d < 32) {
		if (keel_prng_range(&W.rng, 0, 1)) {
			for (unsigned i = 0; i < W.n; i++)
				if (W.nodes[i].id != n->id)
					keel_sim_net_partition(W.net, n->id, W.nodes[i].id, true);
			trace("partition: n%u cut off", n->id);
		} else {
			uint32_t side = (uint32_t)keel_prng_next(&W.rng);
			for (unsigned i = 0; i < W.n; i++)
				for (unsigned j = i + 1; j < W.n; j++)
					if (((side >> i) ^ (side >> j)) & 1)
						keel_sim_net_partition(W.net, W.nodes[i].id, W.nodes[j].id, true);
			trace("partition: split %x", side & ((1u << W.n) - 1));
		}
	} else if (d < 44) {
		keel_sim_net_heal(W.net);
		memset(W.cut, 0, sizeof(W.cut));
		trace("heal");
	} else if (d < 54) {
		/* a client cut from some nodes (its keepalives starve: an
		 * expiry race when the cut holds past its TTL) */
		for (unsigned i = 0; i < W.n; i++)
			W.cut[c->id - 1][i] = keel_prng_range(&W.rng, 0, 2) != 0;
		trace("c%u cut from some nodes", c->id);
	} else if (d < 70) {
		/* a GC pause, of a holder if there is one; a write already
		 * checked goes out after it. Sometimes the network fails as
		 * it thaws (its keepalives starve: the cluster expires it
		 * while it still reads what came in during the pause). */
		for (unsigned i = 0; i < W.nc; i++)
			if (W.cl[i].op == OP_HOLD && W.cl[i].up && keel_prng_range(&W.rng, 0, 1))
				c = &W.cl[i];
		if (c->up && c->paused_until <= W.now) {
			uint64_t ms = c->ttl * keel_prng_range(&W.rng, 3, 30) / 10;
			c->cut_at_thaw = keel_prng_range(&W.rng, 0, 1);
			/* the expiry race: someone waits for what it holds */
			if (c->op == OP_HOLD) {
				struct client *o = &W.cl[keel_prng_range(&W.rng, 0, W.nc - 1)];
				if (o != c && o->up) {
					o->force_lk = c->lk;
					if (o->op == OP_IDLE)
						o->next_act = cnow(o);
				}
			}
			c->hold_until += ms; /* its work resumes where it stopped */
			c->paused_until = W.now + ms * MS;
			if (c->op == OP_HOLD && believes(c))
				c->write_pending = true;
			W.pauses++;
			trace("c%u paused for %llu ms%s", c->id, (unsigned long long)ms,
			      c->write_pending ? " with a write checked" : "");
		}
	} else if (d < 78) {
		crash_client(c);
	} else if (d < 86) {
		/* the leader hands over, or someone campaigns */
		struct simnode *ld = leader_of(g);
		if (ld) {
			uint32_t to = (uint32_t)keel_prng_range(&W.rng, 1, W.n);
			(void)keel_rlog_transfer_leader(keel_services_log(ld->svc, g), to);
			trace("n%u g%u transfer to n%u", ld->id, g, to);
		}
	} else if (d < 92) {
		if (n->up)
			(void)keel_rlog_campaign(keel_services_log(n->svc, g));
	} else {
		/* the whole cluster loses power */
		for (unsigned i = 0; i < W.n; i++)
			crash_node(&W.nodes[i], true);
		trace("cluster power failure");
	}
}

static void heal_all(void)
{
	W.healing = true;
	W.heal_at = W.now;
	keel_sim_net_heal(W.net);
	memset(W.cut, 0, sizeof(W.cut));
	struct keel_sim_faults f = {.delay_min_ns = 50000, .delay_max_ns = 500000};
	keel_sim_net_set_faults(W.net, &f);
	W.drop_ppm = 0;
	W.slow_ppm = 0;
	for (unsigned i = 0; i < W.n; i++)
		if (!W.nodes[i].up)
			W.nodes[i].restart_at = W.now + MS;
	for (unsigned i = 0; i < W.nc; i++)
		if (!W.cl[i].up)
			W.cl[i].restart_at = W.now + MS;
	trace("healing: every fault cleared");
}

/* ---- the run ------------------------------------------------------------------- */

static void deliver(const struct cmsg *m)
{
	if (m->dir == 3) {
		store_receive(m);
		return;
	}
	if (m->dir == 0) {
		struct simnode *n = &W.nodes[m->node - 1];
		if (!n->up || W.cut[m->client - 1][m->node - 1])
			return;
		note(0x10 + m->kind, m->req);
		trace("n%u <- c%u req %u kind %u session %016llx seq %llu", n->id, m->client, m->req,
		      m->kind, (unsigned long long)m->session, (unsigned long long)m->seq);
		node_receive(n, m);
		return;
	}
	struct client *c = &W.cl[m->client - 1];
	if (!c->up || c->inc != m->inc || (!m->inbox && W.cut[m->client - 1][m->node - 1]))
		return;
	note(0x20 + m->dir, m->req);
	if (m->dir == 1)
		client_answer(c, m);
	else
		client_push(c, m);
}

static void deliver_due(void)
{
	for (;;) {
		size_t best = SIZE_MAX;
		for (size_t i = 0; i < W.nq; i++) {
			struct cmsg *m = &W.q[i];
			if (m->at > W.now)
				continue;
			/* a frozen client reads its socket when it thaws; what
			 * reached the socket is not lost to a later cut */
			if ((m->dir == 1 || m->dir == 2) && W.cl[m->client - 1].paused_until > W.now) {
				if (!m->inbox && W.cut[m->client - 1][m->node - 1])
					m->at = UINT64_MAX; /* lost on the way */
				m->inbox = true;
				continue;
			}
			if (best == SIZE_MAX || m->at < W.q[best].at ||
			    (m->at == W.q[best].at && m->order < W.q[best].order))
				best = i;
		}
		if (best == SIZE_MAX)
			return;
		struct cmsg m = W.q[best];
		W.q[best] = W.q[--W.nq];
		deliver(&m);
	}
}

static uint64_t next_time(uint64_t t)
{
	uint64_t e = keel_sim_net_next_event(W.net);
	if (e < t)
		t = e;
	e = keel_clock_next_deadline(W.clock);
	if (e < t)
		t = e;
	for (unsigned i = 0; i < W.n; i++) {
		e = W.nodes[i].up ? W.nodes[i].next_disk : W.nodes[i].restart_at;
		if (e < t)
			t = e;
	}
	for (size_t i = 0; i < W.nq; i++) {
		e = W.q[i].at;
		if (e == UINT64_MAX)
			continue;
		if (W.q[i].dir == 1 || W.q[i].dir == 2) {
			uint64_t p = W.cl[W.q[i].client - 1].paused_until;
			if (p > e)
				e = p; /* read when the client thaws */
		}
		if (e < t)
			t = e;
	}
	return t <= W.now ? W.now : t;
}

static void step_nodes(void)
{
	for (unsigned i = 0; i < W.n; i++) {
		struct simnode *n = &W.nodes[i];
		if (!n->up) {
			if (W.now >= n->restart_at)
				start_node(n);
			continue;
		}
		keel_endpoint_poll(n->ep, 256);
		if (W.now >= n->next_disk) {
			for (unsigned g = 0; g < W.ngroups; g++)
				keel_rlog_poll(keel_services_log(n->svc, g));
			n->next_disk = disk_latency();
		}
	}
}

struct result {
	bool violated, liveness, lin_unknown;
	uint64_t lin_ops, lin_steps;
	uint64_t trace_hash, grants, writes, refused, pauses, crashes, expiries;
	char msg[600];
};

static void free_world(void)
{
	for (unsigned i = 0; i < W.n; i++) {
		struct simnode *n = &W.nodes[i];
		if (n->up) {
			n->dying = true;
			keel_services_stop(n->svc);
			keel_endpoint_close(n->ep);
		}
		for (unsigned g = 0; g < W.ngroups; g++) {
			keel_faultdisk_free(n->wal[g]);
			keel_faultdisk_free(n->snap[g]);
			free(n->expired[g]);
		}
	}
	keel_sim_net_destroy(W.net);
	keel_clock_virtual_free(W.clock);
	free(W.q);
	free(W.exp);
	free(W.crashed);
	free(W.crashed_g);
	keel_lin_history_free(&W.hist);
}

static const char *count_only; /* --check, with --expect-violation */

static void run_seed(uint64_t seed, struct result *res)
{
	memset(&W, 0, sizeof(W));
	W.seed = seed;
	W.only = count_only;
	keel_lin_history_init(&W.hist);
	keel_prng_seed(&W.rng, keel_mix64(seed ^ 0x10c4));
	W.n = keel_prng_range(&W.rng, 0, 3) == 0 ? 5 : 3;
	W.ngroups = keel_prng_range(&W.rng, 0, 1) ? 2 : 1;
	W.nc = (unsigned)keel_prng_range(&W.rng, 3, MAXC);
	W.tick_ms = (uint32_t)keel_prng_range(&W.rng, 20, 100);
	W.snapshot_every = (uint32_t)keel_prng_range(&W.rng, 16, 128);
	W.drop_ppm = (uint32_t)keel_prng_range(&W.rng, 0, 30000);
	W.slow_ppm = (uint32_t)keel_prng_range(&W.rng, 0, 40000);
	snprintf(W.log.protocol, sizeof(W.log.protocol), "raft");
	snprintf(W.log.dir, sizeof(W.log.dir), "sim");
	W.log.groups = W.ngroups;
	W.log.tick_ms = 10;
	W.log.election_ticks = 10;
	W.log.heartbeat_ticks = 1;
	W.log.request_timeout_ticks = 40;
	W.log.snapshot_every = W.snapshot_every;
	W.log.snapshot_keep = 8;
	W.log.wal.segment_size = 16384;
	W.log.wal.max_batch = 8192;
	struct keel_sim_faults f = {
		.delay_min_ns = 50000, .delay_max_ns = 500000,
		.slow_ppm = 20000, .slow_max_ns = 40 * MS,
		.drop_ppm = W.drop_ppm,
	};
	if (keel_sim_net_create(keel_mix64(seed ^ 0x5eed), &f, &W.net) < 0 ||
	    keel_clock_virtual_new(0, &W.clock) < 0) {
		fprintf(stderr, "lock-sim: cannot create the network or the clock\n");
		exit(2);
	}
	for (unsigned i = 0; i < W.n; i++) {
		struct simnode *n = &W.nodes[i];
		n->id = i + 1;
		for (unsigned g = 0; g < W.ngroups; g++) {
			n->wal[g] = keel_faultdisk_new();
			n->snap[g] = keel_faultdisk_new();
			if (!n->wal[g] || !n->snap[g])
				exit(2);
			keel_faultdisk_defer_async(n->wal[g], true);
		}
	}
	static const uint32_t ttls[] = {300, 500, 800, 1000, 1500, 2000};
	for (unsigned i = 0; i < W.nc; i++) {
		W.cl[i].id = i + 1;
		W.cl[i].ttl = ttls[keel_prng_range(&W.rng, 0, 5)];
	}
	trace("seed %llu: %u nodes, %u groups, %u clients, lock tick %u ms, snapshot every %u",
	      (unsigned long long)seed, W.n, W.ngroups, W.nc, W.tick_ms, W.snapshot_every);
	for (unsigned i = 0; i < W.n; i++)
		start_node(&W.nodes[i]);
	for (unsigned i = 0; i < W.nc; i++)
		start_client(&W.cl[i]);

	uint64_t chaos_end = (uint64_t)chaos_ms * MS;
	uint64_t end = chaos_end + 3000 * MS + 3 * 2000 * MS;
	uint64_t next_fault = 300 * MS, next_client = MS;
	while (!W.violation[0]) {
		uint64_t t = next_time(next_fault < next_client ? next_fault : next_client);
		if (t > end)
			break;
		if (!W.healing && t >= chaos_end) {
			W.now = chaos_end;
			heal_all();
			t = chaos_end;
		}
		W.now = t;
		keel_sim_net_advance_to(W.net, t);
		keel_clock_advance_to(W.clock, t);
		step_nodes();
		deliver_due();
		if (t >= next_client) {
			for (unsigned i = 0; i < W.nc; i++) {
				struct client *c = &W.cl[i];
				if (!c->up) {
					if (t >= c->restart_at)
						start_client(c);
					continue;
				}
				if (c->paused_until > t)
					continue;
				if (c->cut_at_thaw && !W.healing) {
					for (unsigned j = 0; j < W.n; j++)
						W.cut[i][j] = true;
				}
				c->cut_at_thaw = false;
				client_run(c);
			}
			next_client = t + CLIENT_TICK;
		}
		if (t >= next_fault) {
			if (!W.healing)
				fault_act();
			next_fault = t + keel_prng_range(&W.rng, 100, 700) * MS;
		}
		check_beliefs();
		check_state();
	}
	if (!W.violation[0])
		check_linearizable();
	if (!W.violation[0])
		check_liveness();
	if (!W.violation[0])
		check_crashed_released();
	res->violated = W.violation[0] != 0;
	res->liveness = W.liveness;
	snprintf(res->msg, sizeof(res->msg), "%s", W.violation);
	res->trace_hash = keel_sim_net_trace_hash(W.net) ^ W.events_hash;
	res->grants = W.grants;
	res->writes = W.writes;
	res->refused = W.refused;
	res->pauses = W.pauses;
	res->crashes = W.crashes;
	res->expiries = W.nexp;
	res->lin_unknown = W.lin_unknown;
	res->lin_ops = W.lin_ops;
	res->lin_steps = W.lin_steps;
	free_world();
}

static void make_configs(void)
{
	char path[] = "/tmp/keel-lock-sim-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, "lock-sim-secret-0123456789abcdef", 32) != 32) {
		fprintf(stderr, "lock-sim: cannot write a secret file in /tmp\n");
		exit(2);
	}
	close(fd);
	for (unsigned id = 1; id <= MAXN; id++) {
		char text[1024];
		int k = snprintf(text, sizeof(text),
				 "[node]\nid = %u\ncluster = 1\nlisten = 127.0.0.%u:7000\nshards = 1\n"
				 "secret_file = %s\n[peers]\n", id, id, path);
		for (unsigned p = 1; p <= MAXN; p++)
			k += snprintf(text + k, sizeof(text) - (size_t)k, "%u = 127.0.0.%u:7000\n", p, p);
		char err[KEEL_ERRMSG_LEN];
		if (keel_node_config_parse(text, "lock-sim.ini", "/", &node_cfg[id], err) < 0) {
			fprintf(stderr, "lock-sim: %s\n", err);
			unlink(path);
			exit(2);
		}
	}
	unlink(path);
}

/* Whether msg is the finding of one of the comma-separated checks. */
static bool check_named(const char *list, const char *msg)
{
	if (!list)
		return true;
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, ",");
		if (n && !strncmp(msg, p, n) && msg[n] == ':')
			return true;
		p += n + (p[n] == ',');
	}
	return false;
}

static int usage(void)
{
	fprintf(stderr, "usage: lock-sim [--seeds A:B] [--chaos-ms N] [--expect-violation "
			"[--check NAME]] [--determinism] [-v]\n");
	return 2;
}

int main(int argc, char **argv)
{
	uint64_t from = 1, to = 51;
	bool expect = false, determinism = false;
	const char *check = NULL; /* --check A,B: only these checks' findings count */
	const char *one = getenv("KEEL_SIM_SEED");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
			if (sscanf(argv[++i], "%lu:%lu", &from, &to) != 2 || to <= from)
				return usage();
		} else if (!strcmp(argv[i], "--chaos-ms") && i + 1 < argc) {
			chaos_ms = (unsigned)atoi(argv[++i]);
			if (!chaos_ms)
				return usage();
		} else if (!strcmp(argv[i], "--expect-violation")) {
			expect = true;
		} else if (!strcmp(argv[i], "--check") && i + 1 < argc) {
			check = argv[++i];
		} else if (!strcmp(argv[i], "--determinism")) {
			determinism = true;
		} else if (!strcmp(argv[i], "-v")) {
			verbose = 1;
		} else {
			return usage();
		}
	}
	if (one) {
		from = strtoull(one, NULL, 10);
		to = from + 1;
	}
	keel_log_set_level(verbose ? KEEL_LOG_INFO : KEEL_LOG_OFF);
	keel_log_init_from_env();
	make_configs();
	if (expect)
		count_only = check;

	unsigned failed = 0, live_failed = 0;
	uint64_t grants = 0, writes = 0, refused = 0, pauses = 0, crashes = 0, expiries = 0;
	uint64_t lin_ops = 0, lin_steps = 0, lin_unknown = 0;
	uint64_t prev_hash = 0;
	for (uint64_t s = from; s < to; s++) {
		struct result r = {0};
		run_seed(s, &r);
		grants += r.grants;
		writes += r.writes;
		refused += r.refused;
		pauses += r.pauses;
		crashes += r.crashes;
		expiries += r.expiries;
		lin_ops += r.lin_ops;
		lin_steps += r.lin_steps;
		lin_unknown += r.lin_unknown;
		if (determinism) {
			struct result again = {0};
			run_seed(s, &again);
			if (again.trace_hash != r.trace_hash || again.violated != r.violated) {
				fprintf(stderr, "lock-sim: seed %llu is not deterministic (%016llx vs %016llx)\n",
					(unsigned long long)s, (unsigned long long)r.trace_hash,
					(unsigned long long)again.trace_hash);
				return 1;
			}
			if (s > from && r.trace_hash == prev_hash) {
				fprintf(stderr, "lock-sim: seeds %llu and %llu ran the same trace\n",
					(unsigned long long)s - 1, (unsigned long long)s);
				return 1;
			}
			prev_hash = r.trace_hash;
		}
		if (!r.violated)
			continue;
		if (expect && !r.liveness && check_named(check, r.msg)) {
			printf("lock-sim: seed %llu found the planted bug: %s\n", (unsigned long long)s,
			       r.msg);
			return 0;
		}
		fprintf(stderr, "lock-sim: seed %llu: %s\n  replay: KEEL_SIM_SEED=%llu %s -v\n",
			(unsigned long long)s, r.msg, (unsigned long long)s, argv[0]);
		if (r.liveness)
			live_failed++;
		else
			failed++;
	}
	printf("lock-sim: seeds %llu..%llu: %u safety violations, %u liveness failures; %llu grants, "
	       "%llu fenced writes (%llu refused), %llu pauses, %llu client crashes, %llu expiries; "
	       "linearizable: %llu lock ops, %llu search steps, %llu seeds out of budget\n",
	       (unsigned long long)from, (unsigned long long)to - 1, failed, live_failed,
	       (unsigned long long)grants, (unsigned long long)writes, (unsigned long long)refused,
	       (unsigned long long)pauses, (unsigned long long)crashes, (unsigned long long)expiries,
	       (unsigned long long)lin_ops, (unsigned long long)lin_steps,
	       (unsigned long long)lin_unknown);
	if (expect) {
		fprintf(stderr, "lock-sim: expected a violation (planted bug)%s%s, none found\n",
			check ? " by check " : "", check ? check : "");
		return 1;
	}
	return failed || live_failed ? 1 : 0;
}
