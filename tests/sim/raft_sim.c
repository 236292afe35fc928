/*
 * tests/sim/raft_sim.c — deterministic whole-cluster simulation of the Raft
 * core (keel/raft.h) on the sim transport (transport/sim.h) and a simulated
 * disk, driven by one seed.
 *
 * Each seed builds a cluster of 3, 5 or 7 servers in this process. Every
 * server is the application loop of raft.h's header comment: its ready
 * batches are persisted to a simulated disk whose fsync takes virtual time,
 * messages go out only once the batch is durable, committed entries are
 * applied to a small KV state machine, and a crash loses everything not yet
 * fsynced (the WAL's crash model: a batch is durable only when its fsync
 * completes; the disk here is an in-memory equivalent). Messages are
 * encoded with the core's codec and travel over the `sim` transport, so
 * the codec and the transport run in every seed too.
 *
 * One PRNG (from the seed) drives: the network's fault model (delay with a
 * long tail, loss, duplication, reordering), symmetric and one-way
 * partitions, crashes and restarts, leadership transfers, membership
 * changes (remove a voter, add it back as a learner, promote it, joint
 * changes to a random configuration; in 70% of the seeds), snapshots with
 * log compaction, and clients issuing get/put/cas. On top of that, the
 * nemesis:
 *   late messages   in most seeds a share of the messages (answers five
 *                   times as often) is also, or only, delivered 1 tick to
 *                   8 election timeouts later, past any partition, so a
 *                   message of an old term lands in a new one;
 *   replays         after a restart, old messages to and from the server
 *                   arrive again; when a server campaigns or leads, old
 *                   grants and acknowledgements addressed to it do, and
 *                   when it leads again, the highest acknowledgement each
 *                   follower ever sent it, spread over the next election
 *                   timeouts (its new term's log may have grown past it);
 *   leader cut-offs a new leader, a leader that just advanced its commit
 *                   index (always at its first commit if it won holding
 *                   uncommitted entries of older terms: the moment that
 *                   commits an old-term entry by counting, §3.6.2) or
 *                   completed a write, and a transfer's old leader
 *                   right after its TIMEOUT_NOW are isolated (they go on
 *                   believing they lead, with a lease);
 *   joint splits    right after C_old,new is proposed, the leader's side
 *                   gets a majority of C_new but not of C_old;
 *   lease clients   in about half the seeds clients send to any server that
 *                   believes it leads, with 15-80 ms deadlines and retries;
 *                   lease reads are on in 40% of the seeds.
 *
 * Checks (each violation names its check; --check matches that name):
 *   election safety      at most one leader per term (§3.6.3);
 *   vote ledger          one vote per server per term, in a ledger kept
 *                        outside the servers (it survives their restarts),
 *                        fed by every durable hard state and granted vote;
 *   durability           a message leaves only once what it promises is on
 *                        the simulated disk: its term, a granted vote, the
 *                        entries an acknowledgement names (§3.8);
 *   restart              a restarted core has the disk's term and vote;
 *   log matching         two logs with an entry of the same index and term
 *                        agree on every entry up to it (checked every few
 *                        steps, it costs a walk of the logs);
 *   leader completeness  a leader's log holds every committed entry;
 *   state machine safety no two servers commit or apply different entries
 *                        at one index, and a committed entry never changes;
 *   apply order          a server applies every index once, in order;
 *   linearizability      at the end every client history goes through the
 *                        checker (tests/lib/linearizability.h), key by key;
 *   liveness             (pre-vote seeds) every client operation finished
 *                        1.5 s after the faults stopped;
 *   convergence          after the calm and up to 3 s more, every member's
 *                        applied state is the leader's committed state
 *                        (seeds with pre-vote or check-quorum);
 *   watchdog             a ready loop that does not settle in 1,000
 *                        batches, 100,000 steps without virtual time
 *                        moving, or the step budget used up.
 *
 * Usage (exit codes below):
 *   raft-sim                          seeds 1..KEEL_SIM_SEEDS (default 100)
 *   raft-sim --seeds A:B              seeds A..B-1 (meson splits the range)
 *   KEEL_SIM_SEED=123 raft-sim        one seed, with the full trace
 *   raft-sim --expect-violation ...   for planted bugs: succeed iff some
 *                                     seed finds a violation
 *   raft-sim --determinism --seeds A:B  each seed twice: same traces, and
 *                                     consecutive seeds differ
 *   --nodes 3|5|7 (default: by seed), --steps N (per seed), -v (trace)
 *   --check NAME (with --expect-violation): only that check's finding
 *                                     counts (the mutation suite)
 *   KEEL_SIM_KEEP_GOING=1             every seed even after a violation
 * Exit: 0 all seeds passed (or, with --expect-violation, a violation was
 * found); 1 a violation (or, with --expect-violation, none was found);
 * 2 bad usage or setup failure. A violation prints the seed, what broke,
 * the trace tail, and the command that replays it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/raft.h"
#include "keel/transport.h"
#include "linearizability.h"
#include "transport/sim.h"

#define MAXN 7
#define NKEYS 3
#define NCLIENTS 4
#define MS 1000000ull
#define TICK (10 * MS)
#define MSG_RAFT 1

/* ---- PRNG of the simulator (the network has its own, seeded from ours) */

static uint64_t rng_s;
static uint64_t rnd(void)
{
	uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static uint64_t rnd_in(uint64_t lo, uint64_t hi) /* inclusive */
{
	return hi <= lo ? lo : lo + rnd() % (hi - lo + 1);
}
static bool coin(unsigned pct)
{
	return rnd() % 100 < pct;
}

static uint64_t fnv(const void *p, size_t len, uint64_t h)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

/* ---- trace: a ring of the last lines, printed on failure */

#define TRACE_LINES 400
static char trace_ring[TRACE_LINES][160];
static size_t trace_n;
static bool verbose;
static bool trace_msgs; /* KEEL_SIM_VERBOSE=2: every message stepped */
static uint64_t now_ns;
static uint64_t trace_hash;
static int leader_cache = -1; /* find_leader(), per step; -1 = not known */

static void KEEL_PRINTF(1, 2) trace(const char *fmt, ...)
{
	char *line = trace_ring[trace_n++ % TRACE_LINES];
	int off = snprintf(line, 160, "%8.3fms ", (double)now_ns / 1e6);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + off, (size_t)(160 - off), fmt, ap);
	va_end(ap);
	trace_hash = fnv(line, strlen(line), trace_hash);
	if (verbose)
		fprintf(stderr, "%s\n", line);
}

static void trace_dump(void)
{
	size_t from = trace_n > TRACE_LINES ? trace_n - TRACE_LINES : 0;
	fprintf(stderr, "---- trace (last %zu of %zu lines) ----\n", trace_n - from, trace_n);
	for (size_t i = from; i < trace_n; i++)
		fprintf(stderr, "%s\n", trace_ring[i % TRACE_LINES]);
	fprintf(stderr, "---- end of trace ----\n");
}

/* ---- violations */

static bool violated;
static char violation[1024];

static void KEEL_PRINTF(1, 2) violate(const char *fmt, ...)
{
	if (violated)
		return;
	violated = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(violation, sizeof(violation), fmt, ap);
	va_end(ap);
	trace("VIOLATION: %s", violation);
}

/* ---- the state machine: NKEYS registers, with a dedup table so a retried
 * write applies once (clients retry a write with the same sequence). */

enum { OP_GET = 0, OP_PUT = 1, OP_CAS = 2 };

struct cmd {
	uint32_t client;
	uint32_t kind;
	uint64_t seq, key, arg, expect;
};
#define CMD_LEN 40

static void cmd_encode(const struct cmd *c, uint8_t *b)
{
	memcpy(b, &c->client, 4);
	memcpy(b + 4, &c->kind, 4);
	memcpy(b + 8, &c->seq, 8);
	memcpy(b + 16, &c->key, 8);
	memcpy(b + 24, &c->arg, 8);
	memcpy(b + 32, &c->expect, 8);
}

static bool cmd_decode(const uint8_t *b, size_t len, struct cmd *c)
{
	if (len != CMD_LEN)
		return false;
	memcpy(&c->client, b, 4);
	memcpy(&c->kind, b + 4, 4);
	memcpy(&c->seq, b + 8, 8);
	memcpy(&c->key, b + 16, 8);
	memcpy(&c->arg, b + 24, 8);
	memcpy(&c->expect, b + 32, 8);
	return c->client < NCLIENTS && c->key < NKEYS && c->kind <= OP_CAS;
}

struct fsm {
	uint64_t kv[NKEYS];
	struct {
		uint64_t seq;
		bool ok;
	} last[NCLIENTS];
	uint64_t applied;
};

/* ---- the simulated disk: what survives a crash. A ready batch reaches it
 * only when its fsync completes; until then it is in the node's memory and
 * a crash loses it. */

struct dentry {
	uint64_t term, index;
	uint32_t type, len;
	uint8_t *data;
};

struct disk {
	struct keel_raft_hard_state hs;
	struct dentry *ents; /* contiguous, ascending, after the snapshot */
	size_t n, cap;
	bool has_snap;
	struct keel_raft_snapshot_meta snap;
	uint8_t *snap_data;
	size_t snap_len;
	uint64_t fsyncs;
};

static void disk_truncate(struct disk *d, uint64_t from)
{
	while (d->n && d->ents[d->n - 1].index >= from) {
		free(d->ents[d->n - 1].data);
		d->n--;
	}
}

static void disk_drop_prefix(struct disk *d, uint64_t upto)
{
	size_t k = 0;
	while (k < d->n && d->ents[k].index <= upto)
		free(d->ents[k++].data);
	memmove(d->ents, d->ents + k, (d->n - k) * sizeof(*d->ents));
	d->n -= k;
}

static void disk_append(struct disk *d, const struct keel_raft_entry *e)
{
	disk_truncate(d, e->index);
	if (d->n && d->ents[d->n - 1].index + 1 != e->index) {
		/* Not contiguous: only legal right after a snapshot. */
		if (!(d->has_snap && e->index == d->snap.index + 1 && d->n == 0))
			violate("disk: entry %llu does not follow %llu",
				(unsigned long long)e->index,
				(unsigned long long)d->ents[d->n - 1].index);
	}
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 64;
		d->ents = realloc(d->ents, d->cap * sizeof(*d->ents));
		if (!d->ents)
			abort();
	}
	struct dentry *x = &d->ents[d->n++];
	x->term = e->term;
	x->index = e->index;
	x->type = e->type;
	x->len = e->len;
	x->data = NULL;
	if (e->len) {
		x->data = malloc(e->len);
		if (!x->data)
			abort();
		memcpy(x->data, e->data, e->len);
	}
}

static void disk_set_snapshot(struct disk *d, const struct keel_raft_snapshot_meta *m,
			      const void *data, size_t len)
{
	free(d->snap_data);
	d->snap_data = malloc(len ? len : 1);
	if (!d->snap_data)
		abort();
	if (len)
		memcpy(d->snap_data, data, len);
	d->snap_len = len;
	d->snap = *m;
	d->has_snap = true;
}

static void disk_free(struct disk *d)
{
	disk_truncate(d, 0);
	free(d->ents);
	free(d->snap_data);
	memset(d, 0, sizeof(*d));
}

/* ---- servers */

struct node {
	uint64_t id;
	bool up;
	struct keel_raft *r;
	struct keel_transport *t;
	struct keel_conn *conn[MAXN + 1]; /* dialled, by peer id */
	uint64_t redial_at[MAXN + 1];
	struct disk disk;
	struct fsm fsm;
	/* Blocked between ready() and advance() while the fsync runs. */
	bool waiting;
	uint64_t fsync_at;
	struct keel_raft_ready rd;
	/* Messages received while busy, stepped in arrival order. */
	struct keel_raft_msg *inbox;
	size_t nin, capin;
	uint64_t next_tick;
	uint32_t missed_ticks;
	/* Confirmed reads waiting for the state machine to catch up. */
	struct keel_raft_read_state reads[64];
	size_t nreads;
	uint64_t restart_at; /* when down: when it comes back */
	/* Nemesis aimed at leaders: cut this server off from everyone at
	 * isolate_at (soon after it won an election), reconnect it at
	 * rejoin_at. This is what makes stale leaders and divergent logs of
	 * several terms common enough to find the planted bugs. */
	uint64_t isolate_at, rejoin_at;
	uint64_t first_commit_term; /* term of its first commit as leader */
	/* it won its term holding entries of older terms past its commit
	 * index (Figure 8 of the Raft paper, §3.6.2) */
	bool old_uncommitted;
	uint64_t snap_every;
	enum keel_raft_role last_role;
	uint64_t last_term;
	uint64_t checked_commit; /* committed entries compared up to here */
	/* The vote ledger, kept outside the server so a restart cannot lose
	 * it: votes[t] = whom this server voted for in term t (0: nobody
	 * yet). Fed by its status and by every vote it grants on the wire. */
	uint64_t *votes;
	size_t n_votes;
	bool started_once;
};

/* The late-message nemesis: copies of messages taken off the wire and
 * delivered up to several election timeouts later, past partitions, and
 * old messages replayed to and from a server after it restarts. They enter
 * the receiver's inbox directly (decoded from the bytes that were sent), as
 * a message that sat in a queue somewhere would. */
struct late {
	uint64_t at;
	uint64_t seq; /* ties: the order they were taken */
	int to;
	uint8_t *buf;
	size_t len;
};
#define OLD_RING 256
#define OLD_ANS 64
struct old_msg {
	int from, to;
	uint8_t *buf;
	size_t len;
};

struct client {
	int id;
	bool busy;
	uint64_t seq;
	struct cmd cmd;
	size_t hist;
	int node;          /* server the request is at */
	bool submitted;    /* accepted by that server (proposed / read issued) */
	uint64_t read_ctx; /* pending read's ctx */
	uint64_t deadline; /* give up on that server and retry elsewhere */
	uint64_t next_at;  /* next action */
};

static struct sim {
	uint64_t seed;
	int n;
	uint64_t steps, max_steps;
	uint64_t end_faults_at, end_at;
	struct keel_sim_net *net;
	struct node nodes[MAXN + 1];
	struct client clients[NCLIENTS];
	struct keel_lin_history hist;
	uint64_t next_fault;
	unsigned isolate_pct;
	bool small_batches; /* appends carry one client entry at a time */
	bool pre_vote, check_quorum, lease_reads;
	uint64_t read_ctx_seq;
	uint64_t next_value;
	/* Nemesis knobs of this seed. */
	uint32_t late_ppm;      /* share of messages also delivered late */
	uint64_t late_max_ns;   /* how late: up to several election timeouts */
	bool late_only;         /* the late copy is the only one, half the time */
	unsigned replay_max;    /* old messages replayed around a restart */
	bool lease_clients;     /* clients aim at any server that thinks it leads */
	bool membership;        /* conf changes in this seed */
	struct late *late;
	size_t n_late, cap_late;
	uint64_t late_seq;
	struct old_msg old[OLD_RING];
	uint64_t n_old;
	/* Old answers (vote grants, append acknowledgements), kept longer:
	 * replayed to a server when it next campaigns or leads. */
	struct old_msg old_ans[MAXN + 1][OLD_ANS];
	uint64_t n_old_ans[MAXN + 1]; /* by receiver */
	/* hi_ack[to][from]: the append acknowledgement with the highest index
	 * `from` ever sent `to`, replayed when `to` leads again */
	struct hi_ack {
		uint64_t index;
		struct old_msg m;
	} hi_ack[MAXN + 1][MAXN + 1];
	uint64_t same_time_steps;
	/* Invariant state. */
	uint64_t *leader_of; /* by term */
	size_t n_leader_of;
	struct committed {
		uint64_t term;        /* of the entry */
		uint64_t commit_term; /* >= the term it was committed in */
		uint64_t hash;
		bool set;
	} * committed; /* by index */
	size_t n_committed;
	uint64_t max_commit;
	/* Statistics. */
	uint64_t ops_done, ops_pending, crashes, partitions, transfers, conf_changes,
		snapshots, leaders, elections_terms, late_sent, late_delivered, replayed;
} S;

static int node_index(uint64_t id)
{
	return id >= 1 && id <= (uint64_t)S.n ? (int)id : 0;
}

/* ---- invariant bookkeeping */

static struct committed *committed_at(uint64_t index)
{
	if (index >= S.n_committed) {
		size_t nc = S.n_committed ? S.n_committed : 256;
		while (nc <= index)
			nc *= 2;
		S.committed = realloc(S.committed, nc * sizeof(*S.committed));
		if (!S.committed)
			abort();
		memset(S.committed + S.n_committed, 0, (nc - S.n_committed) * sizeof(*S.committed));
		S.n_committed = nc;
	}
	return &S.committed[index];
}

/* A fast hash of an entry's type and data (8 bytes a step): the checks
 * below hash every entry of every log often. */
static uint64_t entry_hash(const struct keel_raft_entry *e)
{
	uint64_t h = 0x9e3779b97f4a7c15ull * (e->type + 1) ^ e->len;
	uint32_t i = 0;
	for (; i + 8 <= e->len; i += 8) {
		uint64_t w;
		memcpy(&w, e->data + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	for (; i < e->len; i++)
		h = (h ^ e->data[i]) * 0x100000001b3ull;
	return h;
}

static bool entries_equal(const struct keel_raft_entry *a, const struct keel_raft_entry *b)
{
	return a->term == b->term && a->type == b->type && a->len == b->len &&
	       (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* An entry known committed (a server committed or applied it): it must be
 * the same everywhere, forever (state machine safety, §3.6.3). */
static void note_committed(struct node *n, const struct keel_raft_entry *e, const char *how,
			   uint64_t cur_term)
{
	struct committed *c = committed_at(e->index);
	uint64_t h = entry_hash(e);
	if (!c->set) {
		c->set = true;
		c->term = e->term;
		/* The server's current term bounds the term the entry was
		 * committed in from above: leaders of later terms must hold it. */
		c->commit_term = cur_term;
		c->hash = h;
	} else if (c->term != e->term || c->hash != h) {
		violate("state machine safety: n%llu %s index %llu term %llu, but index %llu was "
			"committed with term %llu (different entry)",
			(unsigned long long)n->id, how, (unsigned long long)e->index,
			(unsigned long long)e->term, (unsigned long long)e->index,
			(unsigned long long)c->term);
	}
	if (e->index > S.max_commit)
		S.max_commit = e->index;
}

static void check_election_safety(struct node *n, const struct keel_raft_status *st)
{
	if (st->role != KEEL_RAFT_LEADER)
		return;
	if (st->term >= S.n_leader_of) {
		size_t nc = S.n_leader_of ? S.n_leader_of : 64;
		while (nc <= st->term)
			nc *= 2;
		S.leader_of = realloc(S.leader_of, nc * sizeof(*S.leader_of));
		if (!S.leader_of)
			abort();
		memset(S.leader_of + S.n_leader_of, 0, (nc - S.n_leader_of) * sizeof(uint64_t));
		S.n_leader_of = nc;
	}
	uint64_t *l = &S.leader_of[st->term];
	if (*l == 0) {
		*l = n->id;
		S.leaders++;
	} else if (*l != n->id) {
		violate("election safety: n%llu and n%llu are both leaders of term %llu",
			(unsigned long long)*l, (unsigned long long)n->id,
			(unsigned long long)st->term);
	}
}

/* Leader completeness (§3.6.3): an entry committed in term T is in the log
 * of every leader of a term > T. Compacted entries are in the leader's
 * snapshot and are covered by state machine safety instead. */
static void check_leader_completeness(struct node *n, const struct keel_raft_status *st)
{
	if (st->role != KEEL_RAFT_LEADER)
		return;
	uint64_t lo = st->first_index ? st->first_index : 1;
	for (uint64_t i = lo; i <= S.max_commit && !violated; i++) {
		const struct committed *c = &S.committed[i];
		if (!c->set || c->commit_term >= st->term)
			continue;
		const struct keel_raft_entry *e = keel_raft_entry_at(n->r, i);
		if (!e && i > st->last_index)
			violate("leader completeness: leader n%llu (term %llu) has log up to %llu, "
				"but index %llu (term %llu) was committed by term %llu",
				(unsigned long long)n->id, (unsigned long long)st->term,
				(unsigned long long)st->last_index, (unsigned long long)i,
				(unsigned long long)c->term, (unsigned long long)c->commit_term);
		else if (e && (e->term != c->term || entry_hash(e) != c->hash))
			violate("leader completeness: leader n%llu (term %llu) has term %llu at "
				"index %llu, committed with term %llu",
				(unsigned long long)n->id, (unsigned long long)st->term,
				(unsigned long long)e->term, (unsigned long long)i,
				(unsigned long long)c->term);
	}
}

static void check_log_matching(void)
{
	for (int a = 1; a <= S.n; a++)
		for (int b = a + 1; b <= S.n; b++) {
			struct node *x = &S.nodes[a], *y = &S.nodes[b];
			if (!x->up || !y->up || violated)
				continue;
			struct keel_raft_status sx, sy;
			keel_raft_status(x->r, &sx);
			keel_raft_status(y->r, &sy);
			uint64_t lo = sx.first_index > sy.first_index ? sx.first_index : sy.first_index;
			uint64_t hi = sx.last_index < sy.last_index ? sx.last_index : sy.last_index;
			if (lo == 0)
				lo = 1;
			bool match = false; /* below a matching (index, term): all equal */
			for (uint64_t i = hi; i >= lo && i > 0; i--) {
				const struct keel_raft_entry *ex = keel_raft_entry_at(x->r, i);
				const struct keel_raft_entry *ey = keel_raft_entry_at(y->r, i);
				if (!ex || !ey)
					break;
				if (ex->term == ey->term) {
					if (!entries_equal(ex, ey))
						violate("log matching: n%d and n%d differ at index %llu "
							"term %llu (same term, different entry)",
							a, b, (unsigned long long)i,
							(unsigned long long)ex->term);
					match = true;
				} else if (match) {
					violate("log matching: n%d and n%d agree on a later entry but "
						"differ at index %llu (terms %llu vs %llu)",
						a, b, (unsigned long long)i,
						(unsigned long long)ex->term,
						(unsigned long long)ey->term);
				}
				if (violated)
					break;
			}
		}
}

/* ---- clients (declared early: servers answer them) */

static void client_reply(struct client *c, uint64_t value, bool ok)
{
	keel_lin_return(&S.hist, c->hist, now_ns, value, ok);
	c->busy = false;
	c->next_at = now_ns + rnd_in(0, 20 * MS);
	S.ops_done++;
	trace("c%d done seq %llu kind %u k%llu -> %llu%s", c->id, (unsigned long long)c->seq,
	      c->cmd.kind, (unsigned long long)c->cmd.key, (unsigned long long)value,
	      c->cmd.kind == OP_CAS ? (ok ? " ok" : " fail") : "");
}

/* ---- the state machine */

static void fsm_apply(struct node *n, const struct keel_raft_entry *e, uint64_t cur_term)
{
	note_committed(n, e, "applied", cur_term);
	if (e->index != n->fsm.applied + 1)
		violate("apply order: n%llu applied index %llu after %llu (gap or repeat)",
			(unsigned long long)n->id, (unsigned long long)e->index,
			(unsigned long long)n->fsm.applied);
	n->fsm.applied = e->index;
	if (e->type != KEEL_RAFT_ENTRY_NORMAL)
		return;
	struct cmd c;
	if (!cmd_decode(e->data, e->len, &c)) {
		violate("n%llu: entry %llu is not a command", (unsigned long long)n->id,
			(unsigned long long)e->index);
		return;
	}
	struct fsm *f = &n->fsm;
	bool ok = false;
	if (f->last[c.client].seq >= c.seq) {
		ok = f->last[c.client].ok; /* a retry: applied once already */
	} else {
		if (c.kind == OP_PUT) {
			f->kv[c.key] = c.arg;
		} else if (c.kind == OP_CAS) {
			ok = f->kv[c.key] == c.expect;
			if (ok)
				f->kv[c.key] = c.arg;
		}
		f->last[c.client].seq = c.seq;
		f->last[c.client].ok = ok;
	}
	struct client *cl = &S.clients[c.client];
	if (cl->busy && cl->submitted && cl->node == (int)n->id && cl->seq == c.seq) {
		client_reply(cl, 0, ok);
		/* A write just completed here: now and then cut this leader
		 * off at once, so that it goes on believing it leads (with a
		 * fresh lease) while the others elect a new leader and write. */
		if (S.lease_clients && now_ns < S.end_faults_at && n->rejoin_at == UINT64_MAX &&
		    n->isolate_at == UINT64_MAX && S.isolate_pct && coin(40))
			n->isolate_at = now_ns;
	}
}

static void fsm_serve_reads(struct node *n)
{
	size_t k = 0;
	for (size_t i = 0; i < n->nreads; i++) {
		struct keel_raft_read_state *rs = &n->reads[i];
		if (rs->index > n->fsm.applied) {
			n->reads[k++] = *rs;
			continue;
		}
		for (int c = 0; c < NCLIENTS; c++) {
			struct client *cl = &S.clients[c];
			if (cl->busy && cl->submitted && cl->node == (int)n->id &&
			    cl->cmd.kind == OP_GET && cl->read_ctx == rs->ctx)
				client_reply(cl, n->fsm.kv[cl->cmd.key], false);
		}
	}
	n->nreads = k;
}

#define SNAP_LEN (8 * NKEYS + 16 * NCLIENTS)
static void fsm_encode(const struct fsm *f, uint8_t *b)
{
	memcpy(b, f->kv, 8 * NKEYS);
	for (int c = 0; c < NCLIENTS; c++) {
		uint64_t ok = f->last[c].ok;
		memcpy(b + 8 * NKEYS + 16 * c, &f->last[c].seq, 8);
		memcpy(b + 8 * NKEYS + 16 * c + 8, &ok, 8);
	}
}

static void fsm_restore(struct node *n, const struct keel_raft_snapshot_meta *m,
			const uint8_t *b, size_t len)
{
	struct fsm *f = &n->fsm;
	memset(f, 0, sizeof(*f));
	if (len != SNAP_LEN) {
		violate("n%llu: snapshot at %llu has %zu bytes, want %d", (unsigned long long)n->id,
			(unsigned long long)m->index, len, SNAP_LEN);
		return;
	}
	memcpy(f->kv, b, 8 * NKEYS);
	for (int c = 0; c < NCLIENTS; c++) {
		uint64_t ok;
		memcpy(&f->last[c].seq, b + 8 * NKEYS + 16 * c, 8);
		memcpy(&ok, b + 8 * NKEYS + 16 * c + 8, 8);
		f->last[c].ok = ok != 0;
	}
	f->applied = m->index;
}

/* ---- messages */

static uint8_t *dup_bytes(const void *p, size_t len)
{
	uint8_t *b = malloc(len ? len : 1);
	if (!b)
		abort();
	memcpy(b, p, len);
	return b;
}

/* The vote ledger (outside the servers, so it survives their restarts):
 * one vote per server per term (§3.4), whatever the server remembers. */
static void ledger_vote(struct node *n, uint64_t term, uint64_t cand, const char *how)
{
	if (term >= n->n_votes) {
		size_t nc = n->n_votes ? n->n_votes : 64;
		while (nc <= term)
			nc *= 2;
		n->votes = realloc(n->votes, nc * sizeof(*n->votes));
		if (!n->votes)
			abort();
		memset(n->votes + n->n_votes, 0, (nc - n->n_votes) * sizeof(*n->votes));
		n->n_votes = nc;
	}
	uint64_t *v = &n->votes[term];
	if (*v == 0)
		*v = cand;
	else if (*v != cand)
		violate("vote ledger: n%llu voted for n%llu in term %llu, and now %s n%llu",
			(unsigned long long)n->id, (unsigned long long)*v,
			(unsigned long long)term, how, (unsigned long long)cand);
}

static uint64_t disk_term_at(const struct disk *d, uint64_t index, bool *found)
{
	*found = true;
	if (d->has_snap && index == d->snap.index)
		return d->snap.term;
	if (d->n && index >= d->ents[0].index && index <= d->ents[d->n - 1].index)
		return d->ents[index - d->ents[0].index].term;
	if (d->has_snap && index < d->snap.index)
		return 0; /* compacted: covered by the snapshot */
	*found = false;
	return 0;
}

/* A message about to leave: what it promises must already be on the
 * simulated disk (§3.8). A granted vote, and the term of any answer, must
 * be in the durable hard state; an append acknowledgement's entries must be
 * in the durable log (or under the durable snapshot). */
static void check_durable_before_send(struct node *n, const struct keel_raft_msg *m)
{
	const struct disk *d = &n->disk;
	bool resp = m->type == KEEL_RAFT_MSG_VOTE_RESP || m->type == KEEL_RAFT_MSG_APPEND_RESP ||
		    m->type == KEEL_RAFT_MSG_HEARTBEAT_RESP || m->type == KEEL_RAFT_MSG_SNAPSHOT_RESP;
	if (resp && d->hs.term < m->term) {
		violate("durability: n%llu sends %s of term %llu to n%llu, its disk holds term %llu",
			(unsigned long long)n->id, keel_raft_msg_type_name(m->type),
			(unsigned long long)m->term, (unsigned long long)m->to,
			(unsigned long long)d->hs.term);
		return;
	}
	if (m->type == KEEL_RAFT_MSG_VOTE_RESP && !m->reject) {
		ledger_vote(n, m->term, m->to, "grants a vote to");
		if (d->hs.term == m->term && d->hs.vote != m->to)
			violate("durability: n%llu grants its vote of term %llu to n%llu before it is "
				"on disk (disk: term %llu vote %llu)",
				(unsigned long long)n->id, (unsigned long long)m->term,
				(unsigned long long)m->to, (unsigned long long)d->hs.term,
				(unsigned long long)d->hs.vote);
	}
	if (m->type == KEEL_RAFT_MSG_APPEND_RESP && !m->reject && m->index) {
		bool found;
		uint64_t dt = disk_term_at(d, m->index, &found);
		uint64_t ct = 0;
		const struct keel_raft_entry *e = keel_raft_entry_at(n->r, m->index);
		if (e)
			ct = e->term;
		if (!found || (e && dt && dt != ct))
			violate("durability: n%llu acknowledges index %llu to n%llu before it is on disk "
				"(disk: %zu entries up to %llu, snapshot %llu)",
				(unsigned long long)n->id, (unsigned long long)m->index,
				(unsigned long long)m->to, d->n,
				(unsigned long long)(d->n ? d->ents[d->n - 1].index : 0),
				(unsigned long long)(d->has_snap ? d->snap.index : 0));
	}
}

static void late_add(int to, const uint8_t *buf, size_t len, uint64_t at)
{
	if (S.n_late == S.cap_late) {
		S.cap_late = S.cap_late ? S.cap_late * 2 : 64;
		S.late = realloc(S.late, S.cap_late * sizeof(*S.late));
		if (!S.late)
			abort();
	}
	S.late[S.n_late++] = (struct late){ .at = at, .seq = ++S.late_seq, .to = to,
					    .buf = dup_bytes(buf, len), .len = len };
}

static void node_send(struct node *n, const struct keel_raft_msg *m)
{
	check_durable_before_send(n, m);
	int to = node_index(m->to);
	if (!to)
		return;
	size_t len = keel_raft_msg_encoded_size(m);
	uint8_t stack[512], *bytes = len <= sizeof(stack) ? stack : malloc(len);
	if (!bytes)
		abort();
	int rc = keel_raft_msg_encode(m, bytes, len);
	if (rc < 0) {
		violate("codec: encode of %s failed: %s", keel_raft_msg_type_name(m->type),
			keel_strerror(rc));
		goto out;
	}
	len = (size_t)rc;
	/* Every message is remembered for replays after a restart. */
	if (S.replay_max) {
		struct old_msg *o = &S.old[S.n_old++ % OLD_RING];
		free(o->buf);
		*o = (struct old_msg){ .from = (int)n->id, .to = to, .buf = dup_bytes(bytes, len),
				       .len = len };
		if ((m->type == KEEL_RAFT_MSG_VOTE_RESP || m->type == KEEL_RAFT_MSG_APPEND_RESP) &&
		    !m->reject) {
			o = &S.old_ans[to][S.n_old_ans[to]++ % OLD_ANS];
			free(o->buf);
			*o = (struct old_msg){ .from = (int)n->id, .to = to,
					       .buf = dup_bytes(bytes, len), .len = len };
		}
		struct hi_ack *h = &S.hi_ack[to][n->id];
		if (m->type == KEEL_RAFT_MSG_APPEND_RESP && !m->reject && m->index > h->index) {
			free(h->m.buf);
			h->index = m->index;
			h->m = (struct old_msg){ .from = (int)n->id, .to = to,
						 .buf = dup_bytes(bytes, len), .len = len };
		}
	}
	if (m->type == KEEL_RAFT_MSG_TIMEOUT_NOW && S.lease_clients && n->rejoin_at == UINT64_MAX &&
	    n->isolate_at == UINT64_MAX && now_ns < S.end_faults_at && coin(90)) {
		/* The nemesis aimed at leases and transfers: the transfer's
		 * TIMEOUT_NOW gets through, then the old leader is cut off at
		 * once, still a leader in its own eyes while the transferee
		 * wins an election that ignored its lease (§3.10, §6.4.1). */
		late_add(to, bytes, len, now_ns + rnd_in(MS / 10, MS));
		n->isolate_at = now_ns;
		trace("n%llu sent TIMEOUT_NOW to n%d: cut it off", (unsigned long long)n->id, to);
		goto out;
	}
	/* Answers are late five times as often: a grant or an acknowledgement
	 * of an old term arriving in a new one is what tests term checks. */
	bool answer = m->type == KEEL_RAFT_MSG_VOTE_RESP || m->type == KEEL_RAFT_MSG_APPEND_RESP ||
		      m->type == KEEL_RAFT_MSG_PREVOTE_RESP;
	bool late = S.late_ppm && rnd() % 1000000 < S.late_ppm * (answer ? 5 : 1);
	if (late) {
		/* Held somewhere on the way: arrives up to several election
		 * timeouts later, whatever partition has come up meanwhile. */
		late_add(to, bytes, len, now_ns + rnd_in(TICK, S.late_max_ns));
		S.late_sent++;
		if (S.late_only && coin(50))
			goto out; /* and the prompt copy is lost */
	}
	if (!n->conn[to])
		goto out; /* no connection (yet): lost, Raft retries */
	struct keel_send_buf *b;
	if (keel_transport_alloc(n->conn[to], (uint32_t)len, &b) < 0)
		goto out;
	memcpy(b->data, bytes, len);
	b->len = (uint32_t)len;
	b->type = MSG_RAFT;
	keel_transport_send_buf(n->conn[to], b);
out:
	if (bytes != stack)
		free(bytes);
}

static void inbox_push(struct node *n, const uint8_t *data, size_t len, uint32_t from)
{
	struct keel_raft_msg msg;
	int rc = keel_raft_msg_decode(data, len, &msg);
	if (rc < 0) {
		violate("codec: n%llu could not decode a message from n%u: %s",
			(unsigned long long)n->id, from, keel_strerror(rc));
		return;
	}
	if (n->nin == 4096) { /* a server that cannot keep up sheds load */
		keel_raft_msg_free(&msg);
		return;
	}
	if (n->nin == n->capin) {
		n->capin = n->capin ? n->capin * 2 : 64;
		n->inbox = realloc(n->inbox, n->capin * sizeof(*n->inbox));
		if (!n->inbox)
			abort();
	}
	n->inbox[n->nin++] = msg;
}

/* Delivers the late messages that are due to servers that are up (one
 * that is down loses them, as it would lose anything sent to it). */
static void late_deliver(void)
{
	size_t k = 0;
	for (size_t i = 0; i < S.n_late; i++) {
		struct late *l = &S.late[i];
		if (l->at > now_ns) {
			S.late[k++] = *l;
			continue;
		}
		struct node *n = &S.nodes[l->to];
		if (n->up && !violated) {
			inbox_push(n, l->buf, l->len, 0);
			S.late_delivered++;
		}
		free(l->buf);
	}
	S.n_late = k;
}

static uint64_t late_next(void)
{
	uint64_t t = UINT64_MAX;
	for (size_t i = 0; i < S.n_late; i++)
		if (S.late[i].at < t)
			t = S.late[i].at;
	return t;
}

/* A server starts campaigning or leading: old answers addressed to it, of
 * earlier terms, arrive in the middle of it (reordering across terms). */
static void replay_answers(int who)
{
	uint64_t have = S.n_old_ans[who] < OLD_ANS ? S.n_old_ans[who] : OLD_ANS;
	if (!have || !S.replay_max || !coin(60))
		return;
	for (unsigned k = (unsigned)rnd_in(1, 4); k; k--) {
		const struct old_msg *o = &S.old_ans[who][rnd() % have];
		late_add(o->to, o->buf, o->len, now_ns + rnd_in(0, 20 * MS));
		S.replayed++;
	}
}

/* A server leads again: the highest append acknowledgement each follower
 * ever sent it (of an earlier term, mostly) arrives spread over the next
 * election timeouts, by when its log of the new term may have grown past
 * that index. An acknowledgement taken without its term then counts a
 * follower that no longer holds those entries (§3.5): the situation an
 * acknowledgement picked at random from the ring rarely makes. */
static void replay_high_acks(int who)
{
	if (!S.replay_max || !coin(50))
		return;
	for (int f = 1; f <= S.n; f++) {
		const struct old_msg *o = &S.hi_ack[who][f].m;
		if (!o->buf || coin(40))
			continue;
		late_add(who, o->buf, o->len, now_ns + rnd_in(TICK, S.late_max_ns));
		S.replayed++;
	}
}

/* A server restarts: some old messages, to its previous life and from it,
 * arrive again (duplicates that sat in queues, retransmissions). */
static void replay_old(int who)
{
	uint64_t have = S.n_old < OLD_RING ? S.n_old : OLD_RING;
	if (!have || !S.replay_max)
		return;
	unsigned k = (unsigned)rnd_in(0, S.replay_max);
	for (unsigned i = 0; i < k * 4 && k; i++) {
		const struct old_msg *o = &S.old[rnd() % have];
		if (o->to != who && o->from != who)
			continue;
		late_add(o->to, o->buf, o->len, now_ns + rnd_in(0, 300 * MS));
		S.replayed++;
		if (!--k)
			break;
	}
}

static void on_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct node *n = t->user;
	(void)c;
	if (m->type != MSG_RAFT)
		return;
	inbox_push(n, m->data, m->len, m->from.node);
}

static void on_conn_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct node *n = t->user;
	(void)reason;
	for (int i = 1; i <= MAXN; i++)
		if (n->conn[i] == c) {
			n->conn[i] = NULL;
			n->redial_at[i] = now_ns + rnd_in(5 * MS, 50 * MS);
		}
}

static const struct keel_transport_handlers handlers = {
	.on_recv = on_recv,
	.on_conn_down = on_conn_down,
};

/* ---- servers: start, crash, the ready loop */

static struct keel_raft_conf initial_conf(void)
{
	struct keel_raft_conf c = { 0 };
	for (int i = 1; i <= S.n; i++)
		c.voters[c.n_voters++] = (uint64_t)i;
	return c;
}

static void node_start(struct node *n)
{
	struct keel_raft_config cfg = {
		.id = n->id,
		.initial = initial_conf(),
		.election_tick = 10,
		.heartbeat_tick = 1,
		.max_inflight_msgs = (uint32_t)rnd_in(1, 8),
		.max_msg_bytes = S.small_batches ? rnd_in(1, 39) : rnd_in(40, 400),
		.max_snapshot_chunk = rnd_in(16, 200),
		.check_quorum = S.check_quorum || S.lease_reads,
		.pre_vote = S.pre_vote,
		.read_mode = S.lease_reads ? KEEL_RAFT_READ_LEASE : KEEL_RAFT_READ_INDEX,
		.lease_margin_ticks = 2,
		.seed = rnd(),
	};
	struct keel_raft_entry *ents = calloc(n->disk.n + 1, sizeof(*ents));
	if (!ents)
		abort();
	for (size_t i = 0; i < n->disk.n; i++) {
		const struct dentry *d = &n->disk.ents[i];
		ents[i] = (struct keel_raft_entry){ .term = d->term, .index = d->index,
						    .type = d->type, .len = d->len,
						    .data = d->data };
	}
	struct keel_raft_snapshot snap = { 0 };
	struct keel_raft_boot boot = {
		.hard_state = n->disk.hs,
		.entries = ents,
		.n_entries = n->disk.n,
	};
	memset(&n->fsm, 0, sizeof(n->fsm));
	if (n->disk.has_snap) {
		snap.meta = n->disk.snap;
		snap.data = n->disk.snap_data;
		snap.len = n->disk.snap_len;
		boot.snapshot = &snap;
		fsm_restore(n, &snap.meta, snap.data, snap.len);
	}
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_raft_create(&cfg, &boot, &n->r, err);
	free(ents);
	if (rc < 0) {
		violate("n%llu: keel_raft_create from its disk failed: %s (%s)",
			(unsigned long long)n->id, keel_strerror(rc), err);
		return;
	}
	/* After a restart the core starts from what the disk holds: the
	 * same term and vote (a vote forgotten here is a second vote later). */
	if (n->disk.hs.term) {
		struct keel_raft_status rst;
		keel_raft_status(n->r, &rst);
		if (rst.term != n->disk.hs.term || rst.vote != n->disk.hs.vote)
			violate("restart: n%llu came back with term %llu vote %llu, its disk holds "
				"term %llu vote %llu",
				(unsigned long long)n->id, (unsigned long long)rst.term,
				(unsigned long long)rst.vote, (unsigned long long)n->disk.hs.term,
				(unsigned long long)n->disk.hs.vote);
	}
	struct keel_transport_config tc = {
		.cluster_id = 1,
		.self = { (uint32_t)n->id, 0 },
		.shards = 1,
		.handlers = &handlers,
		.user = n,
		.handshake_timeout_ms = 200,
		.backend_arg = S.net,
	};
	rc = keel_transport_open("sim", &tc, &n->t, err);
	if (rc < 0) {
		violate("n%llu: transport open: %s", (unsigned long long)n->id, err);
		return;
	}
	keel_transport_listen(n->t);
	for (int i = 1; i <= S.n; i++)
		n->redial_at[i] = now_ns;
	n->up = true;
	n->waiting = false;
	n->nreads = 0;
	n->missed_ticks = 0;
	n->next_tick = now_ns + rnd_in(0, TICK);
	n->checked_commit = 0;
	n->last_role = KEEL_RAFT_FOLLOWER;
	n->snap_every = rnd_in(5, 40);
	if (n->started_once)
		replay_old((int)n->id);
	n->started_once = true;
	trace("n%llu start (hs term %llu vote %llu commit %llu, %zu entries, snapshot %llu)",
	      (unsigned long long)n->id, (unsigned long long)n->disk.hs.term,
	      (unsigned long long)n->disk.hs.vote, (unsigned long long)n->disk.hs.commit,
	      n->disk.n, (unsigned long long)(n->disk.has_snap ? n->disk.snap.index : 0));
}

static void node_crash(struct node *n)
{
	trace("n%llu CRASH%s", (unsigned long long)n->id,
	      n->waiting ? " (an unsynced batch is lost)" : "");
	keel_sim_net_crash(S.net, (uint32_t)n->id);
	keel_transport_close(n->t);
	n->t = NULL;
	memset(n->conn, 0, sizeof(n->conn));
	keel_raft_destroy(n->r);
	n->r = NULL;
	for (size_t i = 0; i < n->nin; i++)
		keel_raft_msg_free(&n->inbox[i]);
	n->nin = 0;
	n->up = false;
	n->waiting = false;
	S.crashes++;
	leader_cache = -1;
}

/* Step 1-5 of the application loop in raft.h, once the batch is durable. */
static void node_finish_ready(struct node *n)
{
	struct keel_raft_ready *rd = &n->rd;
	struct disk *d = &n->disk;
	bool synced = rd->snapshot || rd->n_entries || rd->hard_state_changed;
	if (rd->snapshot) {
		const struct keel_raft_snapshot *s = rd->snapshot;
		disk_set_snapshot(d, &s->meta, s->data, s->len);
		disk_truncate(d, 0); /* the log before and around it is obsolete */
		fsm_restore(n, &s->meta, s->data, s->len);
		trace("n%llu installs snapshot at %llu term %llu", (unsigned long long)n->id,
		      (unsigned long long)s->meta.index, (unsigned long long)s->meta.term);
	}
	for (size_t i = 0; i < rd->n_entries; i++)
		disk_append(d, &rd->entries[i]);
	if (rd->hard_state_changed) {
		d->hs = rd->hard_state;
		/* A vote is cast once it is durable (or sent, node_send):
		 * one only in memory, lost in a crash, bound nobody. */
		if (d->hs.vote)
			ledger_vote(n, d->hs.term, d->hs.vote, "persists a vote for");
	}
	if (synced)
		d->fsyncs++;
	for (size_t i = 0; i < rd->n_msgs; i++)
		node_send(n, &rd->msgs[i]);
	if (rd->n_committed) {
		struct keel_raft_status cst;
		keel_raft_status(n->r, &cst);
		for (size_t i = 0; i < rd->n_committed && !violated; i++)
			fsm_apply(n, &rd->committed[i], cst.term);
	}
	for (size_t i = 0; i < rd->n_reads; i++) {
		if (n->nreads < KEEL_ARRAY_LEN(n->reads))
			n->reads[n->nreads++] = rd->reads[i];
	}
	keel_raft_advance(n->r, rd);
	fsm_serve_reads(n);
	n->waiting = false;
	/* Snapshot now and then (§5.1), keeping a random tail of the log. */
	struct keel_raft_status st;
	keel_raft_status(n->r, &st);
	if (n->fsm.applied >= st.snapshot_index + n->snap_every &&
	    n->fsm.applied <= st.applied) {
		uint8_t buf[SNAP_LEN];
		fsm_encode(&n->fsm, buf);
		uint64_t keep = rnd_in(0, 8);
		int rc = keel_raft_snapshot_taken(n->r, n->fsm.applied, buf, sizeof(buf), keep);
		if (rc == 0) {
			const struct keel_raft_snapshot *s = keel_raft_snapshot_get(n->r);
			if (s) {
				/* Written and fsynced before anything relies on it. */
				disk_set_snapshot(d, &s->meta, s->data, s->len);
				disk_drop_prefix(d, s->meta.index);
			}
			S.snapshots++;
			trace("n%llu snapshot at %llu (keep %llu)", (unsigned long long)n->id,
			      (unsigned long long)n->fsm.applied, (unsigned long long)keep);
		}
	}
}

/* The watchdog's bound: a ready loop that has not settled after this many
 * batches without waiting on the disk is stuck (a core that always has
 * something ready would otherwise spin forever). A healthy one settles in a
 * handful. */
#define READY_ROUNDS_MAX 1000

static void node_drive(struct node *n)
{
	unsigned rounds = 0;
	while (n->up && !n->waiting && !violated) {
		if (++rounds > READY_ROUNDS_MAX) {
			struct keel_raft_status wst;
			keel_raft_status(n->r, &wst);
			violate("watchdog: n%llu's ready loop did not settle in %u batches (%s term "
				"%llu commit %llu last %llu)",
				(unsigned long long)n->id, READY_ROUNDS_MAX,
				keel_raft_role_name(wst.role), (unsigned long long)wst.term,
				(unsigned long long)wst.commit, (unsigned long long)wst.last_index);
			return;
		}
		while (n->missed_ticks) {
			n->missed_ticks--;
			keel_raft_tick(n->r);
		}
		for (size_t i = 0; i < n->nin; i++) {
			const struct keel_raft_msg *m = &n->inbox[i];
			if (trace_msgs)
				trace("  n%llu <- n%llu %s term %llu idx %llu logterm %llu commit %llu "
				      "ents %zu%s%s",
				      (unsigned long long)m->to, (unsigned long long)m->from,
				      keel_raft_msg_type_name(m->type), (unsigned long long)m->term,
				      (unsigned long long)m->index, (unsigned long long)m->log_term,
				      (unsigned long long)m->commit, m->n_entries,
				      m->reject ? " REJECT" : "", m->snap_done ? " snap-done" : "");
			keel_raft_step(n->r, &n->inbox[i]);
			keel_raft_msg_free(&n->inbox[i]);
		}
		n->nin = 0;
		if (!keel_raft_has_ready(n->r))
			break;
		keel_raft_ready(n->r, &n->rd);
		if (n->rd.snapshot || n->rd.n_entries || n->rd.hard_state_changed) {
			/* The write is issued; it is durable when the fsync
			 * completes. Until then the server waits. */
			n->waiting = true;
			n->fsync_at = now_ns + rnd_in(MS / 4, 4 * MS);
			return;
		}
		node_finish_ready(n);
	}
}

/* ---- per-step invariant checks on one server */

static void node_check(struct node *n)
{
	struct keel_raft_status st;
	keel_raft_status(n->r, &st);
	check_election_safety(n, &st);
	if (st.role != n->last_role || st.term != n->last_term) {
		if (st.role == KEEL_RAFT_CANDIDATE || st.role == KEEL_RAFT_LEADER)
			replay_answers((int)n->id);
		if (st.role == KEEL_RAFT_LEADER)
			replay_high_acks((int)n->id);
		if (st.role != KEEL_RAFT_LEADER)
			trace("n%llu %s term %llu (vote %llu, last %llu)", (unsigned long long)n->id,
			      keel_raft_role_name(st.role), (unsigned long long)st.term,
			      (unsigned long long)st.vote, (unsigned long long)st.last_index);
		if (st.role == KEEL_RAFT_LEADER) {
			trace("n%llu LEADER term %llu (last %llu, commit %llu)",
			      (unsigned long long)n->id, (unsigned long long)st.term,
			      (unsigned long long)st.last_index, (unsigned long long)st.commit);
			check_leader_completeness(n, &st);
			const struct keel_raft_entry *e = keel_raft_entry_at(n->r, st.commit + 1);
			n->old_uncommitted = e && e->term < st.term;
			if (now_ns < S.end_faults_at && n->rejoin_at == UINT64_MAX &&
			    coin(S.isolate_pct))
				n->isolate_at = now_ns + (coin(50) ? 0 : rnd_in(0, 10 * MS));
		}
		n->last_role = st.role;
		n->last_term = st.term;
	}
	/* Newly committed entries must agree with what is known committed. */
	uint64_t from = n->checked_commit + 1;
	if (from < st.first_index)
		from = st.first_index;
	for (uint64_t i = from; i <= st.commit && !violated; i++) {
		const struct keel_raft_entry *e = keel_raft_entry_at(n->r, i);
		if (e)
			note_committed(n, e, "committed", st.term);
	}
	if (st.commit > n->checked_commit) {
		/* A leader that just advanced its commit index: cut it off
		 * before the followers hear of it, now and then. */
		bool first = n->first_commit_term != st.term;
		if (st.role == KEEL_RAFT_LEADER)
			n->first_commit_term = st.term;
		if (st.role == KEEL_RAFT_LEADER && now_ns < S.end_faults_at &&
		    n->rejoin_at == UINT64_MAX && n->isolate_at == UINT64_MAX &&
		    S.isolate_pct &&
		    coin(first ? (n->old_uncommitted ? 100 : 70) : S.isolate_pct / 2))
			n->isolate_at = now_ns;
		n->checked_commit = st.commit;
	}
	if (S.steps % 16 == 0)
		check_leader_completeness(n, &st);
}

/* ---- faults */

/* The nemesis aimed at joint consensus (§4.3): right after the leader
 * proposes C_old,new, split the cluster so that the leader's side holds a
 * majority of C_new but not of C_old (when such a split exists). Only the
 * joint rule (both majorities) keeps that side from committing, or from
 * electing a leader, on its own; the other side may hold a majority of
 * C_old that never saw the change. */
static void joint_split(int l, const struct keel_raft_conf *old, const struct keel_raft_conf *neu)
{
	bool side[MAXN + 1] = { false };
	side[l] = true;
	uint32_t in_new = keel_raft_conf_is_voter(neu, (uint64_t)l);
	for (uint32_t k = 0; k < neu->n_voters && in_new < neu->n_voters / 2 + 1; k++) {
		int id = (int)neu->voters[k];
		if (!side[id]) {
			side[id] = true;
			in_new++;
		}
	}
	uint32_t in_old = 0;
	for (uint32_t k = 0; k < old->n_voters; k++)
		in_old += side[old->voters[k]];
	if (in_new < neu->n_voters / 2 + 1 || in_old >= old->n_voters / 2 + 1)
		return; /* no such split for this change */
	keel_sim_net_heal(S.net);
	char desc[64] = "";
	for (int a = 1; a <= S.n; a++) {
		if (side[a]) {
			size_t len = strlen(desc);
			snprintf(desc + len, sizeof(desc) - len, " n%d", a);
		}
		for (int b = a + 1; b <= S.n; b++)
			if (side[a] != side[b])
				keel_sim_net_partition(S.net, (uint32_t)a, (uint32_t)b, true);
	}
	S.partitions++;
	trace("joint split: C_new majority without C_old's on one side:%s", desc);
}

static int random_up_node(void)
{
	int ups[MAXN], k = 0;
	for (int i = 1; i <= S.n; i++)
		if (S.nodes[i].up)
			ups[k++] = i;
	return k ? ups[rnd() % (uint64_t)k] : 0;
}

/* The leader of the highest term among the servers up, or 0; computed
 * once per step (clients and faults ask often; leader_cache). */
static int find_leader_now(void);
static int find_leader(void)
{
	if (leader_cache < 0)
		leader_cache = find_leader_now();
	return leader_cache;
}

/* The status of server i if it is up. */
static bool up_status(int i, struct keel_raft_status *st)
{
	if (!S.nodes[i].up)
		return false;
	keel_raft_status(S.nodes[i].r, st);
	return true;
}

static int find_leader_now(void)
{
	int best = 0;
	uint64_t term = 0;
	for (int i = 1; i <= S.n; i++) {
		struct keel_raft_status st;
		if (!up_status(i, &st))
			continue;
		if (st.role == KEEL_RAFT_LEADER && st.term >= term) {
			best = i;
			term = st.term;
		}
	}
	return best;
}

static void set_network_profile(bool calm)
{
	struct keel_sim_faults f = {
		.delay_min_ns = MS / 10,
		.delay_max_ns = rnd_in(MS / 2, 5 * MS),
		.slow_ppm = calm ? 0 : (uint32_t)rnd_in(0, 30000),
		.slow_max_ns = rnd_in(20 * MS, 80 * MS),
		.drop_ppm = calm ? 0 : (uint32_t)(coin(50) ? rnd_in(0, 150000) : 0),
		.dup_ppm = calm ? 0 : (uint32_t)rnd_in(0, 50000),
		.reorder_ppm = calm ? 0 : (uint32_t)rnd_in(0, 100000),
	};
	keel_sim_net_set_faults(S.net, &f);
	trace("network: delay %.1f-%.1fms, slow %u ppm to %.0fms, drop %u dup %u reorder %u ppm",
	      (double)f.delay_min_ns / 1e6, (double)f.delay_max_ns / 1e6, f.slow_ppm,
	      (double)f.slow_max_ns / 1e6, f.drop_ppm, f.dup_ppm, f.reorder_ppm);
}

static int count_down(void)
{
	int k = 0;
	for (int i = 1; i <= S.n; i++)
		k += !S.nodes[i].up;
	return k;
}

static void fault(void)
{
	int kind = (int)(rnd() % 100);
	/* Aimed seeds draw more of what they aim at: leadership transfers
	 * where clients chase leases, joint changes where membership moves. */
	if (S.lease_clients && coin(40))
		kind = 62 + (int)(rnd() % 10);
	else if (S.membership && coin(15))
		kind = 72 + (int)(rnd() % 7);
	if (kind < 15) { /* symmetric partition into two sides */
		keel_sim_net_heal(S.net);
		uint64_t side = rnd();
		char desc[64] = "";
		for (int a = 1; a <= S.n; a++) {
			size_t l = strlen(desc);
			snprintf(desc + l, sizeof(desc) - l, "%s%d", (side >> a) & 1 ? "|" : " ", a);
			for (int b = a + 1; b <= S.n; b++)
				if (((side >> a) & 1) != ((side >> b) & 1))
					keel_sim_net_partition(S.net, (uint32_t)a, (uint32_t)b, true);
		}
		S.partitions++;
		trace("partition: sides by mark:%s", desc);
	} else if (kind < 25) { /* one-way link cut */
		int a = (int)rnd_in(1, (uint64_t)S.n), b = (int)rnd_in(1, (uint64_t)S.n);
		if (a != b) {
			keel_sim_net_block(S.net, (uint32_t)a, (uint32_t)b, true);
			S.partitions++;
			trace("block one way n%d -> n%d", a, b);
		}
	} else if (kind < 40) {
		keel_sim_net_heal(S.net);
		trace("heal");
	} else if (kind < 52) {
		if (count_down() < (S.n - 1) / 2 || coin(10)) {
			int i = random_up_node();
			if (i) {
				node_crash(&S.nodes[i]);
				S.nodes[i].restart_at = now_ns + rnd_in(20 * MS, 600 * MS);
			}
		}
	} else if (kind < 62) {
		set_network_profile(false);
	} else if (kind < 72) {
		int l = find_leader();
		if (l && !S.nodes[l].waiting) {
			uint64_t to = rnd_in(1, (uint64_t)S.n);
			int rc = keel_raft_transfer_leadership(S.nodes[l].r, to);
			S.transfers += rc == 0;
			/* Cut the old leader off once the transfer is under way: it
			 * stays a leader in its own eyes while the transferee wins
			 * an election that ignored its lease. */
			if (rc == 0 && S.lease_clients && S.nodes[l].rejoin_at == UINT64_MAX &&
			    S.nodes[l].isolate_at == UINT64_MAX && coin(50))
				S.nodes[l].isolate_at = now_ns + rnd_in(0, 3 * MS);
			trace("transfer leadership n%d -> n%llu: %s", l, (unsigned long long)to,
			      rc ? keel_strerror(rc) : "started");
			node_drive(&S.nodes[l]);
		}
	} else if (kind < 79) {
		/* Joint consensus (§4.3) to a random configuration. */
		int l = find_leader();
		if (l && !S.nodes[l].waiting && S.membership) {
			struct keel_raft_conf target = { 0 };
			uint32_t min_voters = S.n == 3 ? 2 : S.n == 5 ? 3 : 4;
			while (target.n_voters < min_voters) {
				memset(&target, 0, sizeof(target));
				for (int i = 1; i <= S.n; i++) {
					uint64_t r = rnd() % 4;
					if (r < 2)
						target.voters[target.n_voters++] = (uint64_t)i;
					else if (r == 2)
						target.learners[target.n_learners++] = (uint64_t)i;
				}
			}
			char desc[64] = "";
			for (uint32_t k = 0; k < target.n_voters; k++) {
				size_t len = strlen(desc);
				snprintf(desc + len, sizeof(desc) - len, " n%llu",
					 (unsigned long long)target.voters[k]);
			}
			struct keel_raft_status old;
			keel_raft_status(S.nodes[l].r, &old);
			int rc = keel_raft_propose_conf_joint(S.nodes[l].r, &target, NULL, NULL);
			S.conf_changes += rc == 0;
			trace("joint conf change at n%d: voters%s, %u learners: %s", l, desc,
			      target.n_learners, rc ? keel_strerror(rc) : "proposed");
			if (rc == 0 && coin(75))
				joint_split(l, &old.conf, &target);
			node_drive(&S.nodes[l]);
		}
	} else if (kind < 88) {
		int l = find_leader();
		if (l && !S.nodes[l].waiting && S.membership) {
			struct keel_raft_status st;
			keel_raft_status(S.nodes[l].r, &st);
			uint64_t who = rnd_in(1, (uint64_t)S.n);
			enum keel_raft_conf_op op;
			if (keel_raft_conf_is_voter(&st.conf, who))
				op = st.conf.n_voters > (S.n == 3 ? 2u : S.n == 5 ? 3u : 4u)
					     ? KEEL_RAFT_CONF_REMOVE
					     : 0;
			else if (keel_raft_conf_is_learner(&st.conf, who))
				op = KEEL_RAFT_CONF_ADD_VOTER;
			else
				op = KEEL_RAFT_CONF_ADD_LEARNER;
			if (op) {
				int rc = keel_raft_propose_conf_change(S.nodes[l].r, op, who, NULL, NULL);
				S.conf_changes += rc == 0;
				trace("conf change at n%d: %s n%llu: %s", l,
				      op == KEEL_RAFT_CONF_REMOVE     ? "remove"
				      : op == KEEL_RAFT_CONF_ADD_VOTER ? "add voter"
								       : "add learner",
				      (unsigned long long)who, rc ? keel_strerror(rc) : "proposed");
				node_drive(&S.nodes[l]);
			}
		}
	} else {
		/* Quiet for a while. */
	}
}

/* ---- clients */

static int pick_node(void)
{
	if (S.lease_clients && coin(85)) {
		/* Any server that believes it leads, stale or not: what a
		 * client with an old leader hint does, and what a lease read
		 * at a deposed leader needs to happen. */
		int ls[MAXN], k = 0;
		for (int i = 1; i <= S.n; i++) {
			struct keel_raft_status st;
			if (up_status(i, &st) && st.role == KEEL_RAFT_LEADER)
				ls[k++] = i;
		}
		if (k)
			return ls[rnd() % (uint64_t)k];
	}
	int l = find_leader();
	if (l && coin(80))
		return l;
	return (int)rnd_in(1, (uint64_t)S.n);
}

static void client_submit(struct client *c)
{
	struct node *n = &S.nodes[c->node];
	c->submitted = false;
	if (!n->up || n->waiting) {
		c->next_at = now_ns + rnd_in(MS, 5 * MS);
		if (!n->up)
			c->node = pick_node();
		return;
	}
	int rc;
	if (c->cmd.kind == OP_GET) {
		c->read_ctx = ++S.read_ctx_seq;
		rc = keel_raft_read_index(n->r, c->read_ctx);
	} else {
		uint8_t buf[CMD_LEN];
		cmd_encode(&c->cmd, buf);
		rc = keel_raft_propose(n->r, buf, sizeof(buf), NULL, NULL);
	}
	if (rc < 0) {
		c->node = pick_node();
		c->next_at = now_ns + rnd_in(MS, 10 * MS);
		return;
	}
	c->submitted = true;
	/* Lease-aimed clients give up soon and retry elsewhere. */
	c->deadline = now_ns + (S.lease_clients ? rnd_in(15 * MS, 80 * MS)
						: rnd_in(200 * MS, 500 * MS));
	c->next_at = c->deadline;
	node_drive(n);
}

static void client_act(struct client *c)
{
	if (!c->busy) {
		if (now_ns >= S.end_faults_at)
			return; /* no new operations in the final calm */
		c->busy = true;
		c->seq++;
		c->cmd = (struct cmd){ .client = (uint32_t)c->id, .seq = c->seq,
				       .key = rnd() % NKEYS };
		int k = (int)(rnd() % 10);
		c->cmd.kind = k < 4 ? OP_GET : k < 8 ? OP_PUT : OP_CAS;
		c->cmd.arg = ++S.next_value;
		if (c->cmd.kind == OP_CAS)
			c->cmd.expect = coin(50) ? S.next_value - rnd_in(1, 6) : 0;
		enum keel_lin_kind lk = c->cmd.kind == OP_GET   ? KEEL_LIN_GET
					: c->cmd.kind == OP_PUT ? KEEL_LIN_PUT
								: KEEL_LIN_CAS;
		c->hist = keel_lin_invoke(&S.hist, c->id, lk, c->cmd.key, c->cmd.arg, c->cmd.expect,
					  now_ns);
		c->node = pick_node();
		trace("c%d invoke seq %llu kind %u k%llu arg %llu expect %llu at n%d", c->id,
		      (unsigned long long)c->seq, c->cmd.kind, (unsigned long long)c->cmd.key,
		      (unsigned long long)c->cmd.arg, (unsigned long long)c->cmd.expect, c->node);
		client_submit(c);
		return;
	}
	/* Timed out (or waiting to retry): the same operation elsewhere. */
	if (c->submitted) {
		trace("c%d timeout at n%d, retry", c->id, c->node);
		c->node = pick_node();
	}
	client_submit(c);
}

/* ---- the event loop */

static uint64_t next_event_time(void)
{
	uint64_t t = keel_sim_net_next_event(S.net);
	uint64_t lt = late_next();
	if (lt < t)
		t = lt;
	if (S.next_fault < t && S.next_fault < S.end_faults_at)
		t = S.next_fault;
	for (int i = 1; i <= S.n; i++) {
		struct node *n = &S.nodes[i];
		if (n->isolate_at < t)
			t = n->isolate_at;
		if (n->rejoin_at < t)
			t = n->rejoin_at;
		if (!n->up) {
			if (n->restart_at < t)
				t = n->restart_at;
			continue;
		}
		if (n->waiting && n->fsync_at < t)
			t = n->fsync_at;
		if (n->next_tick < t)
			t = n->next_tick;
		for (int j = 1; j <= S.n; j++)
			if (j != i && !n->conn[j] && n->redial_at[j] < t)
				t = n->redial_at[j];
	}
	for (int c = 0; c < NCLIENTS; c++) {
		struct client *cl = &S.clients[c];
		if ((cl->busy || now_ns < S.end_faults_at) && cl->next_at < t)
			t = cl->next_at;
	}
	return t;
}

static void step(void)
{
	uint64_t t = next_event_time();
	if (t == UINT64_MAX || t > S.end_at)
		t = S.end_at;
	if (t > now_ns) {
		now_ns = t;
		S.same_time_steps = 0;
	} else if (++S.same_time_steps > 100000) {
		/* Virtual time stands still: something re-arms itself at
		 * once, forever (the watchdog, at the level of the cluster). */
		violate("watchdog: %llu steps without virtual time advancing at %.3fms",
			(unsigned long long)S.same_time_steps, (double)now_ns / 1e6);
		return;
	}
	keel_sim_net_advance_to(S.net, now_ns);
	S.steps++;
	leader_cache = -1;
	late_deliver();

	if (now_ns >= S.next_fault && now_ns < S.end_faults_at) {
		fault();
		S.next_fault = now_ns + rnd_in(20 * MS, 250 * MS);
	}
	if (now_ns >= S.end_faults_at && S.next_fault != UINT64_MAX) {
		/* The final calm: heal, restart everyone, let clients finish. */
		S.next_fault = UINT64_MAX;
		keel_sim_net_heal(S.net);
		set_network_profile(true);
		for (int i = 1; i <= S.n; i++) {
			if (!S.nodes[i].up)
				S.nodes[i].restart_at = now_ns;
			S.nodes[i].isolate_at = S.nodes[i].rejoin_at = UINT64_MAX;
		}
		trace("calm: faults stop");
	}
	for (int i = 1; i <= S.n; i++) {
		struct node *n = &S.nodes[i];
		if (n->isolate_at <= now_ns) {
			n->isolate_at = UINT64_MAX;
			for (int j = 1; j <= S.n; j++)
				if (j != i)
					keel_sim_net_partition(S.net, (uint32_t)i, (uint32_t)j, true);
			n->rejoin_at = now_ns + rnd_in(30 * MS, 400 * MS);
			S.partitions++;
			trace("isolate n%d (leader nemesis)", i);
		}
		if (n->rejoin_at <= now_ns) {
			n->rejoin_at = UINT64_MAX;
			for (int j = 1; j <= S.n; j++)
				if (j != i)
					keel_sim_net_partition(S.net, (uint32_t)i, (uint32_t)j, false);
			trace("rejoin n%d", i);
		}
	}
	for (int i = 1; i <= S.n && !violated; i++) {
		struct node *n = &S.nodes[i];
		if (!n->up) {
			if (n->restart_at <= now_ns) {
				keel_sim_net_restart(S.net, (uint32_t)n->id);
				node_start(n);
			}
			continue;
		}
		if (n->waiting && n->fsync_at <= now_ns)
			node_finish_ready(n);
		keel_transport_poll(n->t, 1 << 20);
		for (int j = 1; j <= S.n; j++)
			if (j != i && !n->conn[j] && n->redial_at[j] <= now_ns) {
				n->redial_at[j] = UINT64_MAX;
				keel_transport_connect(n->t, (struct keel_addr){ (uint32_t)j, 0 },
						       &n->conn[j]);
			}
		while (n->next_tick <= now_ns) {
			n->missed_ticks++;
			n->next_tick += TICK;
		}
		node_drive(n);
	}
	for (int c = 0; c < NCLIENTS && !violated; c++) {
		struct client *cl = &S.clients[c];
		if (cl->next_at <= now_ns)
			client_act(cl);
	}
	for (int i = 1; i <= S.n && !violated; i++)
		if (S.nodes[i].up)
			node_check(&S.nodes[i]);
	if (S.steps % 8 == 0 && !violated)
		check_log_matching();
}

/* 3, 5 and 7 servers, a third of the seeds each. */
static int default_nodes(uint64_t seed)
{
	return seed % 3 == 0 ? 5 : seed % 3 == 1 ? 3 : 7;
}

/* Has the cluster converged? A leader of the highest term, and every
 * member of its configuration up, applied exactly what it committed, into
 * the same state as the leader's. Returns the server that lags, or 0. */
static int lagging(int *leader_out)
{
	int l = find_leader_now();
	*leader_out = l;
	if (!l)
		return -1;
	struct keel_raft_status ls;
	keel_raft_status(S.nodes[l].r, &ls);
	const struct fsm *lf = &S.nodes[l].fsm;
	if (lf->applied != ls.commit || S.nodes[l].waiting)
		return l;
	for (int i = 1; i <= S.n; i++) {
		struct node *n = &S.nodes[i];
		if (i == l || !(keel_raft_conf_is_voter(&ls.conf, (uint64_t)i) ||
				keel_raft_conf_is_learner(&ls.conf, (uint64_t)i)))
			continue;
		if (!n->up || n->fsm.applied != lf->applied ||
		    memcmp(n->fsm.kv, lf->kv, sizeof(lf->kv)) ||
		    memcmp(n->fsm.last, lf->last, sizeof(lf->last)))
			return i;
	}
	return 0;
}

/* The end state (after healing and the calm): every member's applied state
 * is the leader's committed state. A quiet period of up to 3 s more lets
 * the last heartbeats carry the commit index; a member still behind then
 * is stuck (a follower that never catches up is not seen by any safety
 * check). Without pre-vote and check-quorum a removed server may disrupt
 * elections for as long as it likes (§4.2.3), so those seeds are exempt. */
static void check_convergence(void)
{
	uint64_t until = now_ns + 3000 * MS;
	S.end_at = until; /* step() runs the clock up to end_at */
	int l = 0, who;
	while ((who = lagging(&l)) != 0 && now_ns < until && !violated && S.steps < S.max_steps)
		step();
	if (violated || who == 0 || !(S.pre_vote || S.check_quorum))
		return;
	if (who < 0) {
		violate("convergence: no leader %.0fms after the faults stopped",
			(double)(now_ns - S.end_faults_at) / 1e6);
		return;
	}
	struct keel_raft_status ls;
	keel_raft_status(S.nodes[l].r, &ls);
	struct node *n = &S.nodes[who];
	violate("convergence: leader n%d (term %llu) committed %llu and applied %llu, but n%d %s "
		"applied %llu%s",
		l, (unsigned long long)ls.term, (unsigned long long)ls.commit,
		(unsigned long long)S.nodes[l].fsm.applied, who, n->up ? "has" : "is down, has",
		(unsigned long long)n->fsm.applied,
		n->fsm.applied == S.nodes[l].fsm.applied ? " (in a different state)" : "");
}

struct opts {
	uint64_t from, to;
	int nodes; /* 0: by seed */
	uint64_t steps;
	bool expect_violation;
	const char *check; /* --check: the violation must be of this check */
	bool single;
	bool determinism; /* run each seed twice, compare the traces */
};

static uint64_t last_hash[2]; /* network trace, simulator trace of the last run */

static void sim_free(void)
{
	for (int i = 1; i <= S.n; i++) {
		struct node *n = &S.nodes[i];
		if (n->up) {
			keel_transport_close(n->t);
			keel_raft_destroy(n->r);
			for (size_t k = 0; k < n->nin; k++)
				keel_raft_msg_free(&n->inbox[k]);
		}
		free(n->inbox);
		disk_free(&n->disk);
	}
	keel_sim_net_destroy(S.net);
	keel_lin_history_free(&S.hist);
	free(S.leader_of);
	free(S.committed);
	for (size_t i = 0; i < S.n_late; i++)
		free(S.late[i].buf);
	free(S.late);
	for (int i = 0; i < OLD_RING; i++)
		free(S.old[i].buf);
	for (int i = 0; i <= MAXN; i++)
		for (int k = 0; k < OLD_ANS; k++)
			free(S.old_ans[i][k].buf);
	for (int i = 0; i <= MAXN; i++)
		for (int k = 0; k <= MAXN; k++)
			free(S.hi_ack[i][k].m.buf);
	for (int i = 1; i <= MAXN; i++)
		free(S.nodes[i].votes);
	memset(&S, 0, sizeof(S));
}

/* Runs one seed; returns true if it passed. */
static bool run_seed(uint64_t seed, const struct opts *o)
{
	memset(&S, 0, sizeof(S));
	rng_s = seed * 0x2545f4914f6cdd1dull + 0x1234567;
	now_ns = 0;
	trace_n = 0;
	trace_hash = 0;
	violated = false;
	violation[0] = '\0';
	S.seed = seed;
	S.n = o->nodes ? o->nodes : default_nodes(seed);
	S.max_steps = o->steps;
	S.end_faults_at = rnd_in(2000, 5000) * MS;
	S.end_at = S.end_faults_at + 1500 * MS;
	S.next_fault = rnd_in(100 * MS, 400 * MS);
	keel_lin_history_init(&S.hist);
	if (keel_sim_net_create(rnd(), NULL, &S.net) < 0)
		abort();
	set_network_profile(coin(30));
	S.small_batches = coin(60);
	S.pre_vote = coin(60);
	S.check_quorum = coin(80);
	S.lease_reads = coin(40);
	S.isolate_pct = coin(80) ? (unsigned)rnd_in(20, 70) : 0;
	/* The nemesis of late and replayed messages, in most seeds. The
	 * election timeout is 10-20 ticks of 10ms: late means up to 2-8 of
	 * them, so a message of an old term often lands in a new one. */
	S.late_ppm = coin(75) ? (uint32_t)rnd_in(2000, 40000) : 0;
	S.late_max_ns = rnd_in(2, 8) * 10 * TICK;
	S.late_only = coin(50);
	S.replay_max = coin(70) ? (unsigned)rnd_in(1, 12) : 0;
	S.lease_clients = coin(S.lease_reads ? 80 : 40);
	S.membership = coin(70);
	trace("seed %llu: %d servers, faults until %.0fms, end at %.0fms; pre-vote %d, "
	      "check-quorum %d, lease reads %d, small batches %d, leader nemesis %u%%, "
	      "late %u ppm up to %.0fms%s, replay %u, lease clients %d, membership %d",
	      (unsigned long long)seed, S.n, (double)S.end_faults_at / 1e6,
	      (double)S.end_at / 1e6, S.pre_vote, S.check_quorum, S.lease_reads, S.small_batches,
	      S.isolate_pct, S.late_ppm, (double)S.late_max_ns / 1e6,
	      S.late_only ? " (sometimes the only copy)" : "", S.replay_max, S.lease_clients,
	      S.membership);
	for (int i = 1; i <= S.n; i++) {
		S.nodes[i].id = (uint64_t)i;
		S.nodes[i].isolate_at = S.nodes[i].rejoin_at = UINT64_MAX;
		node_start(&S.nodes[i]);
	}
	for (int c = 0; c < NCLIENTS; c++) {
		S.clients[c].id = c;
		S.clients[c].next_at = rnd_in(50 * MS, 300 * MS);
	}
	while (!violated && now_ns < S.end_at && S.steps < S.max_steps)
		step();
	if (!violated && S.steps >= S.max_steps)
		violate("watchdog: %llu steps at %.0fms of %.0fms virtual: the run does not settle",
			(unsigned long long)S.steps, (double)now_ns / 1e6, (double)S.end_at / 1e6);
	if (!violated)
		check_log_matching();
	if (!violated)
		check_convergence();
	for (int c = 0; c < NCLIENTS; c++)
		S.ops_pending += S.clients[c].busy;
	/* Liveness: after the faults stop, with every server up and the
	 * network healed for 1.5 s, every client operation must finish.
	 * Only with pre-vote: without it a removed or stale server may keep
	 * disrupting elections for a long time (§4.2.3, §9.6), which is
	 * Raft's known behaviour rather than a bug. */
	if (!violated && S.pre_vote && S.ops_pending)
		violate("liveness: %llu client operations still pending %.0fms after the faults "
			"stopped (pre-vote on, all servers up, network healed)",
			(unsigned long long)S.ops_pending,
			(double)(S.end_at - S.end_faults_at) / 1e6);
	struct keel_lin_report rep = { 0 };
	if (!violated) {
		enum keel_lin_verdict v = keel_lin_check(&S.hist, 2000000, &rep);
		if (v == KEEL_LIN_VIOLATION) {
			violate("linearizability of the client history, key k%llu (details below)",
				(unsigned long long)rep.key);
			fprintf(stderr, "seed %llu: %s", (unsigned long long)seed, rep.text);
		}
		else if (v == KEEL_LIN_UNKNOWN)
			fprintf(stderr, "seed %llu: linearizability search budget exhausted (%s)\n",
				(unsigned long long)seed, rep.text);
	}
	struct keel_sim_stats ns;
	keel_sim_net_stats(S.net, &ns);
	uint64_t net_hash = keel_sim_net_trace_hash(S.net);
	if (S.ops_pending && getenv("KEEL_SIM_SHOW_STUCK"))
		fprintf(stderr, "seed %llu: %llu ops still pending after the calm\n",
			(unsigned long long)seed, (unsigned long long)S.ops_pending);
	if (o->single || verbose || violated) {
		fprintf(stderr,
			"seed %llu: %s; %d servers, %llu steps, %.0fms virtual; ops %llu done, "
			"%llu pending; leaders %llu; crashes %llu, partitions %llu, transfers %llu, "
			"conf changes %llu, snapshots %llu; late %llu sent, %llu delivered, %llu "
			"replayed; net: %llu delivered, %llu dropped, "
			"%llu dup, %llu reordered, %llu cut; trace %016llx/%016llx\n",
			(unsigned long long)seed, violated ? "VIOLATION" : "ok", S.n,
			(unsigned long long)S.steps, (double)now_ns / 1e6,
			(unsigned long long)S.ops_done, (unsigned long long)S.ops_pending,
			(unsigned long long)S.leaders, (unsigned long long)S.crashes,
			(unsigned long long)S.partitions, (unsigned long long)S.transfers,
			(unsigned long long)S.conf_changes, (unsigned long long)S.snapshots,
			(unsigned long long)S.late_sent, (unsigned long long)S.late_delivered,
			(unsigned long long)S.replayed, (unsigned long long)ns.delivered, (unsigned long long)ns.dropped,
			(unsigned long long)ns.duplicated, (unsigned long long)ns.reordered,
			(unsigned long long)ns.partitioned, (unsigned long long)net_hash,
			(unsigned long long)trace_hash);
	}
	if (o->single || violated) {
		for (int i = 1; i <= S.n; i++) {
			struct node *n = &S.nodes[i];
			if (!n->up) {
				fprintf(stderr, "  n%d: down\n", i);
				continue;
			}
			struct keel_raft_status st;
			keel_raft_status(n->r, &st);
			fprintf(stderr,
				"  n%d: %s term %llu vote %llu leader %llu commit %llu applied %llu "
				"log %llu..%llu snap %llu voters %u learners %u%s conns",
				i, keel_raft_role_name(st.role), (unsigned long long)st.term,
				(unsigned long long)st.vote, (unsigned long long)st.leader,
				(unsigned long long)st.commit, (unsigned long long)n->fsm.applied,
				(unsigned long long)st.first_index, (unsigned long long)st.last_index,
				(unsigned long long)st.snapshot_index, st.conf.n_voters,
				st.conf.n_learners, n->waiting ? " (fsync)" : "");
			for (int j = 1; j <= S.n; j++)
				if (j != i)
					fprintf(stderr, " %d:%s", j, n->conn[j] ? "y" : "n");
			fprintf(stderr, "; voters");
			for (uint32_t k = 0; k < st.conf.n_voters; k++)
				fprintf(stderr, " n%llu", (unsigned long long)st.conf.voters[k]);
			fprintf(stderr, ", learners");
			for (uint32_t k = 0; k < st.conf.n_learners; k++)
				fprintf(stderr, " n%llu", (unsigned long long)st.conf.learners[k]);
			fprintf(stderr, "\n");
		}
	}
	if (violated) {
		fprintf(stderr, "seed %llu: VIOLATION: %s\n", (unsigned long long)seed, violation);
		if (!o->expect_violation || o->single)
			trace_dump();
		fprintf(stderr, "replay: KEEL_SIM_SEED=%llu %s%s\n", (unsigned long long)seed,
			"build/tests/sim/raft-sim", "");
		if (S.n != default_nodes(seed))
			fprintf(stderr, "  (with --nodes %d)\n", S.n);
	}
	keel_lin_report_free(&rep);
	last_hash[0] = net_hash;
	last_hash[1] = trace_hash;
	bool ok = !violated;
	/* Accumulate the stats before freeing for the summary. */
	sim_free();
	return ok;
}

static void usage(void)
{
	fprintf(stderr, "usage: raft-sim [--seeds A:B] [--nodes 3|5|7] [--steps N] "
			"[--expect-violation [--check NAME]] [-v]\n"
			"  env KEEL_SIM_SEED=N replays one seed; KEEL_SIM_SEEDS=N runs seeds 1..N\n");
}

int main(int argc, char **argv)
{
	struct opts o = { .from = 1, .to = 101, .steps = 200000 };
	const char *env = getenv("KEEL_SIM_SEEDS");
	if (env)
		o.to = 1 + strtoull(env, NULL, 10);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
			char *colon;
			o.from = strtoull(argv[++i], &colon, 10);
			if (*colon != ':') {
				usage();
				return 2;
			}
			o.to = strtoull(colon + 1, NULL, 10);
			/* KEEL_SIM_SEEDS=N scales every range: N/2000 times
			 * the seeds (meson's ranges cover 2,000). */
			if (env) {
				uint64_t n = strtoull(env, NULL, 10), span = o.to - o.from;
				if (n > 2000)
					o.to = o.from + span * n / 2000;
			}
		} else if (!strcmp(argv[i], "--nodes") && i + 1 < argc) {
			o.nodes = atoi(argv[++i]);
			if (o.nodes != 3 && o.nodes != 5 && o.nodes != 7) {
				usage();
				return 2;
			}
		} else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
			o.steps = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--expect-violation")) {
			o.expect_violation = true;
		} else if (!strcmp(argv[i], "--check") && i + 1 < argc) {
			o.check = argv[++i];
		} else if (!strcmp(argv[i], "--determinism")) {
			o.determinism = true;
		} else if (!strcmp(argv[i], "-v")) {
			verbose = true;
		} else {
			usage();
			return 2;
		}
	}
	const char *one = getenv("KEEL_SIM_SEED");
	if (one) {
		o.from = strtoull(one, NULL, 10);
		o.to = o.from + 1;
		o.single = true;
		const char *v = getenv("KEEL_SIM_VERBOSE");
		if (v) {
			verbose = true;
			trace_msgs = atoi(v) >= 2;
		}
	}
	keel_log_set_level(KEEL_LOG_WARN);
	uint64_t passed = 0, failed = 0, first_bad = 0, prev_hash = 0, other = 0;
	/* KEEL_SIM_KEEP_GOING=1: run every seed even after a failure (to
	 * measure how often a planted bug is found). */
	bool keep_going = getenv("KEEL_SIM_KEEP_GOING") != NULL;
	for (uint64_t s = o.from; s < o.to; s++) {
		bool ok;
		if (o.determinism) {
			bool ok1 = run_seed(s, &o);
			ok = ok1;
			uint64_t h0 = last_hash[0], h1 = last_hash[1];
			bool ok2 = run_seed(s, &o);
			if (ok1 != ok2 || h0 != last_hash[0] || h1 != last_hash[1]) {
				printf("raft-sim: seed %llu is not deterministic: traces %016llx/%016llx "
				       "then %016llx/%016llx\n",
				       (unsigned long long)s, (unsigned long long)h0,
				       (unsigned long long)h1, (unsigned long long)last_hash[0],
				       (unsigned long long)last_hash[1]);
				return 1;
			}
			if (s > o.from && h0 == prev_hash) {
				printf("raft-sim: seeds %llu and %llu gave the same trace\n",
				       (unsigned long long)(s - 1), (unsigned long long)s);
				return 1;
			}
			prev_hash = h0;
		} else {
			ok = run_seed(s, &o);
		}
		if (ok) {
			passed++;
		} else if (o.check && strncmp(violation, o.check, strlen(o.check)) != 0) {
			/* Found, but by another check than the one this
			 * mutant is meant for: not the catch we test for. */
			other++;
		} else {
			if (!failed)
				first_bad = s;
			failed++;
			if (!keep_going)
				break; /* one failing seed is enough to act on */
		}
	}
	if (o.check)
		printf("raft-sim: check '%s': caught in %llu seeds, other checks in %llu, clean %llu\n",
		       o.check, (unsigned long long)failed, (unsigned long long)other,
		       (unsigned long long)passed);
	if (o.expect_violation) {
		if (failed) {
			printf("raft-sim: planted bug FOUND at seed %llu (after %llu clean seeds)\n",
			       (unsigned long long)first_bad, (unsigned long long)passed);
			return 0;
		}
		printf("raft-sim: planted bug NOT found%s%s in seeds %llu..%llu\n",
		       o.check ? " by check " : "", o.check ? o.check : "",
		       (unsigned long long)o.from, (unsigned long long)(o.to - 1));
		return 1;
	}
	printf("raft-sim: seeds %llu..%llu: %llu passed, %llu failed\n", (unsigned long long)o.from,
	       (unsigned long long)(o.to - 1), (unsigned long long)passed,
	       (unsigned long long)failed);
	return failed ? 1 : 0;
}
