/*
 * raft_script.c — the scenario-script runner (see raft_script.h).
 * Owns a small cluster of real cores, their "disks" (what each ready batch
 * asked to persist) and their state machines; all of it lives for one
 * raft_script() call.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/raft.h"
#include "raft_script.h"

#define MAXN 16
#define MAXQ 8192
#define MAXTERMS 4096

struct tnode {
	uint64_t id;
	bool exists, up;
	struct keel_raft *r;
	struct keel_raft_config cfg;
	/* disk */
	struct keel_raft_hard_state hs;
	struct keel_raft_entry *log;
	size_t nlog, caplog;
	bool has_snap;
	struct keel_raft_snapshot snap;
	uint8_t *snap_data;
	/* state machine */
	char *sm;
	size_t smlen;
	uint64_t applied;
	/* delivered read states */
	uint64_t read_ctx[1024], read_idx[1024];
	size_t nreads;
};

struct net {
	struct tnode n[MAXN + 1];
	struct keel_raft_msg q[MAXQ];
	size_t nq;
	bool cut[MAXN + 1][MAXN + 1];
	uint64_t leader_of_term[MAXTERMS];
	struct keel_raft_config base;
	int line;
	uint64_t loss_every, loss_ctr;
	/* any-read: the highest commit index any server knew when read ctx
	 * was issued; a read state below it would miss a completed write. */
	uint64_t read_min[4096];
	uint64_t rng;
	uint64_t delivered[KEEL_RAFT_MSG_TYPE_MAX + 1];
};

static struct net *N;
static int cur_seed;
static const char *cur_script;

static void dump_script(void)
{
	if (cur_seed && cur_script)
		fprintf(stderr, "---- generated script, seed %d ----\n%s----\n", cur_seed, cur_script);
}

#define FAIL(...)                                                             \
	do {                                                                  \
		char m_[512];                                                 \
		snprintf(m_, sizeof(m_), __VA_ARGS__);                        \
		dump_script();                                                \
		if (cur_seed)                                                 \
			cr_assert_fail("seed %d script line %d: %s", cur_seed, N->line, m_); \
		cr_assert_fail("script line %d: %s", N->line, m_);            \
	} while (0)

/* ---- disk and state machine ---------------------------------------- */

static void disk_truncate(struct tnode *n, uint64_t from)
{
	while (n->nlog && n->log[n->nlog - 1].index >= from) {
		free((void *)n->log[n->nlog - 1].data);
		n->nlog--;
	}
}

static void disk_clear(struct tnode *n)
{
	disk_truncate(n, 0);
}

static void disk_append(struct tnode *n, const struct keel_raft_entry *e)
{
	if (n->nlog && n->log[n->nlog - 1].index + 1 != e->index)
		FAIL("node %llu: persisted log gap: %llu after %llu", (unsigned long long)n->id,
		     (unsigned long long)e->index, (unsigned long long)n->log[n->nlog - 1].index);
	if (n->nlog == n->caplog) {
		n->caplog = n->caplog ? n->caplog * 2 : 64;
		n->log = realloc(n->log, n->caplog * sizeof(*n->log));
	}
	struct keel_raft_entry c = *e;
	if (e->len) {
		uint8_t *d = malloc(e->len);
		memcpy(d, e->data, e->len);
		c.data = d;
	}
	n->log[n->nlog++] = c;
}

static void sm_set(struct tnode *n, const uint8_t *data, size_t len)
{
	free(n->sm);
	n->sm = malloc(len + 1);
	if (len)
		memcpy(n->sm, data, len);
	n->sm[len] = 0;
	n->smlen = len;
}

static void sm_apply(struct tnode *n, const struct keel_raft_entry *e)
{
	if (e->index != n->applied + 1)
		FAIL("node %llu applies %llu after %llu", (unsigned long long)n->id,
		     (unsigned long long)e->index, (unsigned long long)n->applied);
	n->applied = e->index;
	if (e->type != KEEL_RAFT_ENTRY_NORMAL)
		return;
	size_t add = e->len + (n->smlen ? 1 : 0);
	n->sm = realloc(n->sm, n->smlen + add + 1);
	if (n->smlen)
		n->sm[n->smlen++] = ',';
	if (e->len)
		memcpy(n->sm + n->smlen, e->data, e->len);
	n->smlen += e->len;
	n->sm[n->smlen] = 0;
}

static void snap_store(struct tnode *n, const struct keel_raft_snapshot *s)
{
	free(n->snap_data);
	n->snap_data = malloc(s->len + 1);
	if (s->len)
		memcpy(n->snap_data, s->data, s->len);
	n->snap = *s;
	n->snap.data = n->snap_data;
	n->has_snap = true;
}

/* ---- network --------------------------------------------------------- */

static void enqueue(const struct keel_raft_msg *m)
{
	uint64_t f = m->from, t = m->to;
	if (t == 0 || t > MAXN || !N->n[t].exists || N->cut[f][t])
		return;
	if (N->loss_every && ++N->loss_ctr % N->loss_every == 0)
		return;
	if (N->nq == MAXQ)
		FAIL("message queue overflow");
	/* Every message crosses the wire format. */
	size_t sz = keel_raft_msg_encoded_size(m);
	uint8_t *buf = malloc(sz);
	int w = keel_raft_msg_encode(m, buf, sz);
	if (w != (int)sz)
		FAIL("encode returned %d, size %zu", w, sz);
	int rc = keel_raft_msg_decode(buf, sz, &N->q[N->nq]);
	free(buf);
	if (rc)
		FAIL("decode of own message failed: %s", keel_strerror(rc));
	N->nq++;
}

static void check_invariants(void)
{
	/* Election safety (§3.6.3): one leader per term. */
	for (int i = 1; i <= MAXN; i++) {
		struct tnode *n = &N->n[i];
		if (!n->up)
			continue;
		struct keel_raft_status st;
		keel_raft_status(n->r, &st);
		if (st.role == KEEL_RAFT_LEADER && st.term < MAXTERMS) {
			uint64_t *l = &N->leader_of_term[st.term];
			if (*l && *l != n->id)
				FAIL("two leaders in term %llu: %llu and %llu",
				     (unsigned long long)st.term, (unsigned long long)*l,
				     (unsigned long long)n->id);
			*l = n->id;
		}
	}
	/* Committed entries agree (state machine safety), and state
	 * machines are prefixes of one another. */
	for (int a = 1; a <= MAXN; a++) {
		for (int b = a + 1; b <= MAXN; b++) {
			struct tnode *x = &N->n[a], *y = &N->n[b];
			if (!x->up || !y->up)
				continue;
			struct keel_raft_status sx, sy;
			keel_raft_status(x->r, &sx);
			keel_raft_status(y->r, &sy);
			uint64_t c = sx.commit < sy.commit ? sx.commit : sy.commit;
			for (uint64_t i = 1; i <= c; i++) {
				const struct keel_raft_entry *ex = keel_raft_entry_at(x->r, i);
				const struct keel_raft_entry *ey = keel_raft_entry_at(y->r, i);
				if (!ex || !ey)
					continue;
				if (ex->term != ey->term || ex->len != ey->len ||
				    (ex->len && memcmp(ex->data, ey->data, ex->len)))
					FAIL("committed entry %llu differs on %d and %d",
					     (unsigned long long)i, a, b);
			}
			const char *s1 = x->sm ? x->sm : "", *s2 = y->sm ? y->sm : "";
			size_t l1 = strlen(s1), l2 = strlen(s2);
			const char *sh = l1 < l2 ? s1 : s2, *lo = l1 < l2 ? s2 : s1;
			size_t ls = l1 < l2 ? l1 : l2;
			if (strncmp(sh, lo, ls) || (ls && lo[ls] && lo[ls] != ','))
				FAIL("state machines diverge: %d='%s' %d='%s'", a, s1, b, s2);
		}
	}
}

static bool process(struct tnode *n)
{
	bool did = false;
	for (int guard = 0; n->up && keel_raft_has_ready(n->r); guard++) {
		if (guard > 1000)
			FAIL("node %llu: ready never drains", (unsigned long long)n->id);
		did = true;
		struct keel_raft_ready rd;
		keel_raft_ready(n->r, &rd);
		if (rd.snapshot) {
			snap_store(n, rd.snapshot);
			disk_clear(n);
			sm_set(n, rd.snapshot->data, rd.snapshot->len);
			n->applied = rd.snapshot->meta.index;
		}
		if (rd.n_entries) {
			disk_truncate(n, rd.entries[0].index);
			for (size_t i = 0; i < rd.n_entries; i++)
				disk_append(n, &rd.entries[i]);
		}
		if (rd.hard_state_changed)
			n->hs = rd.hard_state;
		for (size_t i = 0; i < rd.n_msgs; i++)
			enqueue(&rd.msgs[i]);
		for (size_t i = 0; i < rd.n_committed; i++)
			sm_apply(n, &rd.committed[i]);
		for (size_t i = 0; i < rd.n_reads; i++) {
			uint64_t ctx = rd.reads[i].ctx;
			if (ctx >= 100000 && ctx - 100000 < 4096 &&
			    rd.reads[i].index < N->read_min[ctx - 100000])
				FAIL("node %llu: read %llu at index %llu, but %llu was committed before it began",
				     (unsigned long long)n->id, (unsigned long long)ctx,
				     (unsigned long long)rd.reads[i].index,
				     (unsigned long long)N->read_min[ctx - 100000]);
		}
		for (size_t i = 0; i < rd.n_reads && n->nreads < 1024; i++) {
			n->read_ctx[n->nreads] = rd.reads[i].ctx;
			n->read_idx[n->nreads++] = rd.reads[i].index;
		}
		keel_raft_advance(n->r, &rd);
	}
	return did;
}

static bool process_all(void)
{
	bool did = false;
	for (int i = 1; i <= MAXN; i++)
		if (N->n[i].up)
			did |= process(&N->n[i]);
	check_invariants();
	return did;
}

/* Delivers the messages queued now (to `to`, or all); those they cause wait
 * for the next pass. */
static bool deliver(uint64_t to)
{
	size_t n = N->nq, keep = 0;
	struct keel_raft_msg *batch = malloc((n ? n : 1) * sizeof(*batch));
	memcpy(batch, N->q, n * sizeof(*batch));
	N->nq = 0;
	bool did = false;
	for (size_t i = 0; i < n; i++) {
		struct keel_raft_msg *m = &batch[i];
		if (to && m->to != to) {
			N->q[N->nq++] = *m;
			keep++;
			continue;
		}
		struct tnode *d = &N->n[m->to];
		if (d->up && !N->cut[m->from][m->to]) {
			N->delivered[m->type]++;
			int rc = keel_raft_step(d->r, m);
			if (rc)
				FAIL("step %s %llu->%llu: %s", keel_raft_msg_type_name(m->type),
				     (unsigned long long)m->from, (unsigned long long)m->to,
				     keel_strerror(rc));
			did = true;
		}
		keel_raft_msg_free(m);
	}
	(void)keep;
	free(batch);
	return did;
}

static void stabilize(void)
{
	for (int round = 0;; round++) {
		if (round > 10000)
			FAIL("stabilize does not converge");
		bool did = process_all();
		if (!N->nq && !did)
			return;
		deliver(0);
	}
}

static void drop(uint64_t to)
{
	size_t j = 0;
	for (size_t i = 0; i < N->nq; i++) {
		if (!to || N->q[i].to == to)
			keel_raft_msg_free(&N->q[i]);
		else
			N->q[j++] = N->q[i];
	}
	N->nq = j;
}

/* ---- nodes ----------------------------------------------------------- */

static void start(struct tnode *n, bool boot_from_disk)
{
	char err[KEEL_ERRMSG_LEN] = "";
	struct keel_raft_boot boot = {0};
	if (boot_from_disk) {
		boot.hard_state = n->hs;
		boot.snapshot = n->has_snap ? &n->snap : NULL;
		uint64_t after = n->has_snap ? n->snap.meta.index : 0;
		size_t k = 0;
		while (k < n->nlog && n->log[k].index <= after)
			k++;
		boot.entries = n->log ? n->log + k : NULL;
		boot.n_entries = n->nlog - k;
		if (n->has_snap)
			sm_set(n, n->snap.data, n->snap.len);
		else
			sm_set(n, (const uint8_t *)"", 0);
		n->applied = after;
	}
	int rc = keel_raft_create(&n->cfg, &boot, &n->r, err);
	if (rc)
		FAIL("create %llu: %s %s", (unsigned long long)n->id, keel_strerror(rc), err);
	n->up = true;
}

static void node_free(struct tnode *n)
{
	keel_raft_destroy(n->r);
	n->r = NULL;
	disk_clear(n);
	free(n->log);
	free(n->snap_data);
	free(n->sm);
	memset(n, 0, sizeof(*n));
}

static uint64_t current_leader(void)
{
	uint64_t lead = 0, term = 0;
	for (int j = 1; j <= MAXN; j++) {
		if (!N->n[j].up)
			continue;
		struct keel_raft_status st;
		keel_raft_status(N->n[j].r, &st);
		if (st.role == KEEL_RAFT_LEADER && st.term >= term) {
			lead = st.id;
			term = st.term;
		}
	}
	return lead;
}

static struct tnode *node(const char *tok)
{
	long id = tok ? strtol(tok, NULL, 10) : 0;
	if (tok && !strcmp(tok, "L"))
		id = (long)current_leader();
	if (id < 1 || id > MAXN || !N->n[id].exists)
		FAIL("no node '%s'", tok ? tok : "(missing)");
	return &N->n[id];
}

static struct tnode *live(const char *tok)
{
	struct tnode *n = node(tok);
	if (!n->up)
		FAIL("node %s is down", tok);
	return n;
}

static void add_node(uint64_t id, const struct keel_raft_conf *initial)
{
	struct tnode *n = &N->n[id];
	memset(n, 0, sizeof(*n));
	n->id = id;
	n->exists = true;
	n->cfg = N->base;
	n->cfg.id = id;
	n->cfg.seed = 1000 + id;
	if (initial)
		n->cfg.initial = *initial;
	n->sm = calloc(1, 1);
	start(n, false);
}

/* ---- parsing --------------------------------------------------------- */

static int err_code(const char *name)
{
	static const struct {
		const char *n;
		int c;
	} t[] = {{"OK", 0},
		 {"ENOTLEADER", KEEL_ENOTLEADER},
		 {"EBUSY", KEEL_EBUSY},
		 {"ENOTFOUND", KEEL_ENOTFOUND},
		 {"EBADINPUT", KEEL_EBADINPUT},
		 {"ETOOBIG", KEEL_ETOOBIG}};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(t[i].n, name))
			return t[i].c;
	FAIL("unknown error name %s", name);
	return 0;
}

static void check_rc(int rc, char **tok, int ntok, int at, const char *what)
{
	int want = 0;
	if (at < ntok) {
		if (strcmp(tok[at], "->") || at + 1 >= ntok)
			FAIL("expected '-> ERR'");
		want = err_code(tok[at + 1]);
	}
	if (rc != want)
		FAIL("%s returned %s, expected %s", what, rc ? keel_strerror(rc) : "OK",
		     want ? keel_strerror(want) : "OK");
}

static const char *role_name(enum keel_raft_role r)
{
	return keel_raft_role_name(r);
}

static void list_str(char *out, size_t cap, const uint64_t *ids, uint32_t n)
{
	out[0] = 0;
	if (!n) {
		snprintf(out, cap, "-");
		return;
	}
	/* sorted */
	uint64_t s[KEEL_RAFT_MAX_NODES];
	memcpy(s, ids, n * sizeof(*s));
	for (uint32_t i = 1; i < n; i++)
		for (uint32_t j = i; j && s[j - 1] > s[j]; j--) {
			uint64_t t = s[j];
			s[j] = s[j - 1];
			s[j - 1] = t;
		}
	size_t off = 0;
	for (uint32_t i = 0; i < n; i++)
		off += (size_t)snprintf(out + off, cap - off, "%s%llu", i ? "," : "",
					(unsigned long long)s[i]);
}

static void expect(struct tnode *n, char **tok, int ntok)
{
	struct keel_raft_status st;
	keel_raft_status(n->r, &st);
	for (int i = 2; i < ntok; i++) {
		char key[64], val[128], got[256];
		const char *eq = strpbrk(tok[i], "=><");
		if (!eq || (size_t)(eq - tok[i]) >= sizeof(key))
			FAIL("bad expectation '%s'", tok[i]);
		memcpy(key, tok[i], (size_t)(eq - tok[i]));
		key[eq - tok[i]] = 0;
		snprintf(val, sizeof(val), "%s", eq + 1);
#define U(x) snprintf(got, sizeof(got), "%llu", (unsigned long long)(x))
		if (!strcmp(key, "role"))
			snprintf(got, sizeof(got), "%s", role_name(st.role));
		else if (!strcmp(key, "term")) U(st.term);
		else if (!strcmp(key, "leader")) U(st.leader);
		else if (!strcmp(key, "vote")) U(st.vote);
		else if (!strcmp(key, "commit")) U(st.commit);
		else if (!strcmp(key, "applied")) U(n->applied);
		else if (!strcmp(key, "last")) U(st.last_index);
		else if (!strcmp(key, "first")) U(st.first_index);
		else if (!strcmp(key, "snap")) U(st.snapshot_index);
		else if (!strcmp(key, "voters"))
			list_str(got, sizeof(got), st.conf.voters, st.conf.n_voters);
		else if (!strcmp(key, "learners"))
			list_str(got, sizeof(got), st.conf.learners, st.conf.n_learners);
		else if (!strcmp(key, "outgoing"))
			list_str(got, sizeof(got), st.conf.outgoing, st.conf.n_outgoing);
		else
			FAIL("unknown key %s", key);
#undef U
		if (*eq == '>' || *eq == '<') {
			unsigned long long g = strtoull(got, NULL, 10), v = strtoull(val, NULL, 10);
			if (*eq == '>' ? !(g > v) : !(g < v))
				FAIL("node %llu: %s is %s, expected %c%s", (unsigned long long)n->id,
				     key, got, *eq, val);
		} else if (strcmp(got, val)) {
			FAIL("node %llu: %s is %s, expected %s", (unsigned long long)n->id, key, got, val);
		}
	}
}

static uint64_t num(const char *s)
{
	if (!s)
		FAIL("missing number");
	return strtoull(s, NULL, 10);
}

static void cmd_nodes(char **tok, int ntok)
{
	int cnt = (int)num(tok[1]);
	struct keel_raft_config *b = &N->base;
	memset(b, 0, sizeof(*b));
	b->election_tick = 10;
	b->heartbeat_tick = 1;
	for (int i = 2; i < ntok; i++) {
		const char *t = tok[i];
		if (!strcmp(t, "prevote")) b->pre_vote = true;
		else if (!strcmp(t, "checkquorum")) b->check_quorum = true;
		else if (!strcmp(t, "lease")) b->read_mode = KEEL_RAFT_READ_LEASE;
		else if (!strncmp(t, "election=", 9)) b->election_tick = (uint32_t)num(t + 9);
		else if (!strncmp(t, "heartbeat=", 10)) b->heartbeat_tick = (uint32_t)num(t + 10);
		else if (!strncmp(t, "inflight=", 9)) b->max_inflight_msgs = (uint32_t)num(t + 9);
		else if (!strncmp(t, "inflight-bytes=", 15)) b->max_inflight_bytes = num(t + 15);
		else if (!strncmp(t, "maxmsg=", 7)) b->max_msg_bytes = num(t + 7);
		else if (!strncmp(t, "chunk=", 6)) b->max_snapshot_chunk = num(t + 6);
		else FAIL("unknown option %s", t);
	}
	struct keel_raft_conf c = {0};
	for (int i = 1; i <= cnt; i++)
		c.voters[c.n_voters++] = (uint64_t)i;
	for (int i = 1; i <= cnt; i++)
		add_node((uint64_t)i, &c);
}

static int count_queued(const char *type)
{
	int c = 0;
	for (size_t i = 0; i < N->nq; i++)
		if (!strcmp(keel_raft_msg_type_name(N->q[i].type), type))
			c++;
	return c;
}

static const char *leader_followed(void)
{
	static char why[256];
	uint64_t lead = current_leader();
	if (!lead)
		return "no leader";
	struct keel_raft_status ls;
	keel_raft_status(N->n[lead].r, &ls);
	for (uint32_t v = 0; v < ls.conf.n_voters; v++) {
		uint64_t id = ls.conf.voters[v];
		if (id > MAXN || !N->n[id].up || id == lead)
			continue;
		struct keel_raft_status st;
		keel_raft_status(N->n[id].r, &st);
		if (st.term != ls.term || st.leader != lead) {
			snprintf(why, sizeof(why), "voter %llu: term %llu leader %llu, but %llu leads term %llu",
				 (unsigned long long)id, (unsigned long long)st.term,
				 (unsigned long long)st.leader, (unsigned long long)lead,
				 (unsigned long long)ls.term);
			return why;
		}
	}
	return NULL;
}

static uint64_t rnd(void)
{
	uint64_t x = N->rng += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

/* Commands for generated scripts: they act if they can and never fail by
 * themselves (the invariants still do). */
static void any_cmd(const char *c, char **tok, int ntok)
{
	uint64_t lead = current_leader();
	struct tnode *n = ntok > 1 ? &N->n[num(tok[1]) % (MAXN + 1)] : NULL;
	if (!strcmp(c, "propose")) {
		if (lead)
			keel_raft_propose(N->n[lead].r, tok[1], strlen(tok[1]), NULL, NULL);
	} else if (!strcmp(c, "conf")) {
		if (lead) {
			enum keel_raft_conf_op op = (enum keel_raft_conf_op)(1 + rnd() % 3);
			keel_raft_propose_conf_change(N->n[lead].r, op, num(tok[1]), NULL, NULL);
		}
	} else if (!strcmp(c, "joint")) {
		/* a random target: each of ids 1..MAXN present is a voter,
		 * a learner or absent; at least one voter */
		if (lead) {
			struct keel_raft_conf t = {0};
			for (int j = 1; j <= MAXN; j++) {
				if (!N->n[j].exists)
					continue;
				uint64_t x = rnd() % 3;
				if (x == 0)
					t.voters[t.n_voters++] = (uint64_t)j;
				else if (x == 1)
					t.learners[t.n_learners++] = (uint64_t)j;
			}
			if (!t.n_voters)
				t.voters[t.n_voters++] = lead;
			keel_raft_propose_conf_joint(N->n[lead].r, &t, NULL, NULL);
		}
	} else if (!strcmp(c, "transfer")) {
		if (lead)
			keel_raft_transfer_leadership(N->n[lead].r, num(tok[1]));
	} else if (!strcmp(c, "snapshot")) {
		if (n && n->exists && n->up && n->applied) {
			if (keel_raft_snapshot_taken(n->r, n->applied, n->sm, n->smlen, rnd() % 8) == 0)
				snap_store(n, keel_raft_snapshot_get(n->r));
		}
	} else if (!strcmp(c, "crash")) {
		int down = 0;
		for (int j = 1; j <= MAXN; j++)
			down += N->n[j].exists && !N->n[j].up;
		if (n && n->exists && n->up && down < 2) {
			keel_raft_destroy(n->r);
			n->r = NULL;
			n->up = false;
			drop(n->id);
		}
	} else if (!strcmp(c, "restart")) {
		if (n && n->exists && !n->up)
			start(n, true);
	} else if (!strcmp(c, "read")) {
		uint64_t ctx = num(tok[2]);
		if (n && n->exists && n->up && ctx >= 100000 && ctx - 100000 < 4096) {
			uint64_t mx = 0;
			for (int j = 1; j <= MAXN; j++) {
				if (!N->n[j].up)
					continue;
				struct keel_raft_status st;
				keel_raft_status(N->n[j].r, &st);
				if (st.commit > mx)
					mx = st.commit;
			}
			N->read_min[ctx - 100000] = mx;
			keel_raft_read_index(n->r, ctx);
		}
	} else if (!strcmp(c, "restart-all")) {
		for (int j = 1; j <= MAXN; j++)
			if (N->n[j].exists && !N->n[j].up)
				start(&N->n[j], true);
	} else {
		FAIL("unknown command any-%s", c);
	}
}

static void exec(char **tok, int ntok)
{
	const char *c = tok[0];
	if (!strcmp(c, "nodes")) {
		cmd_nodes(tok, ntok);
	} else if (!strcmp(c, "join")) {
		uint64_t id = num(tok[1]);
		if (id < 1 || id > MAXN)
			FAIL("bad id");
		add_node(id, NULL);
	} else if (!strcmp(c, "campaign")) {
		int rc = keel_raft_campaign(live(tok[1])->r);
		check_rc(rc, tok, ntok, 2, "campaign");
	} else if (!strcmp(c, "tick")) {
		struct tnode *n = live(tok[1]);
		uint64_t k = ntok > 2 ? num(tok[2]) : 1;
		for (uint64_t i = 0; i < k; i++)
			keel_raft_tick(n->r);
	} else if (!strcmp(c, "tick-all")) {
		uint64_t k = ntok > 1 ? num(tok[1]) : 1;
		for (uint64_t i = 0; i < k; i++)
			for (int j = 1; j <= MAXN; j++)
				if (N->n[j].up)
					keel_raft_tick(N->n[j].r);
	} else if (!strcmp(c, "run")) {
		uint64_t k = num(tok[1]);
		for (uint64_t i = 0; i < k; i++) {
			for (int j = 1; j <= MAXN; j++)
				if (N->n[j].up)
					keel_raft_tick(N->n[j].r);
			stabilize();
		}
	} else if (!strcmp(c, "stabilize")) {
		stabilize();
	} else if (!strcmp(c, "process")) {
		process(live(tok[1]));
		check_invariants();
	} else if (!strcmp(c, "deliver")) {
		deliver(ntok > 1 ? node(tok[1])->id : 0);
	} else if (!strcmp(c, "drop")) {
		drop(ntok > 1 ? node(tok[1])->id : 0);
	} else if (!strcmp(c, "expect-queued")) {
		int got = count_queued(tok[1]);
		if (got != (int)num(tok[2]))
			FAIL("%d queued %s messages, expected %s", got, tok[1], tok[2]);
	} else if (!strcmp(c, "propose")) {
		struct tnode *n = live(tok[1]);
		if (ntok < 3)
			FAIL("propose needs data");
		int rc = keel_raft_propose(n->r, tok[2], strlen(tok[2]), NULL, NULL);
		check_rc(rc, tok, ntok, 3, "propose");
	} else if (!strcmp(c, "propose-n")) {
		struct tnode *n = live(tok[1]);
		uint64_t k = num(tok[2]);
		for (uint64_t i = 1; i <= k; i++) {
			char d[32];
			int l = snprintf(d, sizeof(d), "v%llu", (unsigned long long)i);
			int rc = keel_raft_propose(n->r, d, (size_t)l, NULL, NULL);
			if (rc)
				FAIL("propose %s: %s", d, keel_strerror(rc));
		}
	} else if (!strcmp(c, "read")) {
		int rc = keel_raft_read_index(live(tok[1])->r, num(tok[2]));
		check_rc(rc, tok, ntok, 3, "read");
	} else if (!strcmp(c, "conf")) {
		struct tnode *n = live(tok[1]);
		enum keel_raft_conf_op op = KEEL_RAFT_CONF_ADD_VOTER;
		if (!strcmp(tok[2], "add-voter")) op = KEEL_RAFT_CONF_ADD_VOTER;
		else if (!strcmp(tok[2], "add-learner")) op = KEEL_RAFT_CONF_ADD_LEARNER;
		else if (!strcmp(tok[2], "remove")) op = KEEL_RAFT_CONF_REMOVE;
		else FAIL("bad conf op %s", tok[2]);
		int rc = keel_raft_propose_conf_change(n->r, op, num(tok[3]), NULL, NULL);
		check_rc(rc, tok, ntok, 4, "conf");
	} else if (!strcmp(c, "conf-joint")) {
		struct tnode *n = live(tok[1]);
		struct keel_raft_conf t = {0};
		int at = 2;
		for (; at < ntok && strcmp(tok[at], "->"); at++) {
			bool v = !strncmp(tok[at], "voters=", 7);
			if (!v && strncmp(tok[at], "learners=", 9))
				FAIL("conf-joint takes voters=a,b,.. learners=..");
			char *p = strchr(tok[at], '=') + 1;
			while (*p && *p != '-') {
				uint64_t id = strtoull(p, &p, 10);
				if (v)
					t.voters[t.n_voters++] = id;
				else
					t.learners[t.n_learners++] = id;
				if (*p == ',')
					p++;
			}
		}
		int rc = keel_raft_propose_conf_joint(n->r, &t, NULL, NULL);
		check_rc(rc, tok, ntok, at, "conf-joint");
	} else if (!strcmp(c, "transfer")) {
		int rc = keel_raft_transfer_leadership(live(tok[1])->r, num(tok[2]));
		check_rc(rc, tok, ntok, 3, "transfer");
	} else if (!strcmp(c, "snapshot")) {
		struct tnode *n = live(tok[1]);
		int rc = keel_raft_snapshot_taken(n->r, n->applied, n->sm, n->smlen, num(tok[2]));
		if (rc)
			FAIL("snapshot: %s", keel_strerror(rc));
		snap_store(n, keel_raft_snapshot_get(n->r));
		check_rc(rc, tok, ntok, 3, "snapshot");
	} else if (!strcmp(c, "crash")) {
		struct tnode *n = live(tok[1]);
		keel_raft_destroy(n->r);
		n->r = NULL;
		n->up = false;
		drop(n->id);
	} else if (!strcmp(c, "restart")) {
		struct tnode *n = node(tok[1]);
		if (n->up)
			FAIL("node %s is up", tok[1]);
		start(n, true);
	} else if (!strcmp(c, "isolate")) {
		uint64_t id = node(tok[1])->id;
		for (int j = 0; j <= MAXN; j++)
			N->cut[id][j] = N->cut[j][id] = true;
		N->cut[id][id] = false;
	} else if (!strcmp(c, "cut")) {
		uint64_t a = node(tok[1])->id, b = node(tok[2])->id;
		N->cut[a][b] = N->cut[b][a] = true;
	} else if (!strcmp(c, "heal")) {
		memset(N->cut, 0, sizeof(N->cut));
	} else if (!strcmp(c, "expect")) {
		expect(live(tok[1]), tok, ntok);
	} else if (!strncmp(c, "any-", 4)) {
		any_cmd(c + 4, tok, ntok);
	} else if (!strcmp(c, "loss")) {
		N->loss_every = num(tok[1]);
	} else if (!strcmp(c, "expect-delivered")) {
		/* expect-delivered TYPE >N | <N | N */
		uint64_t got = 0;
		for (uint32_t t = 1; t <= KEEL_RAFT_MSG_TYPE_MAX; t++)
			if (!strcmp(keel_raft_msg_type_name(t), tok[1]))
				got = N->delivered[t];
		const char *v = tok[2];
		bool ok = v[0] == '>' ? got > num(v + 1) : v[0] == '<' ? got < num(v + 1) : got == num(v);
		if (!ok)
			FAIL("%llu %s messages delivered, expected %s", (unsigned long long)got, tok[1], v);
	} else if (!strcmp(c, "show")) {
		/* debugging aid: the queue and every live server, on stderr */
		for (size_t i = 0; i < N->nq; i++) {
			const struct keel_raft_msg *m = &N->q[i];
			fprintf(stderr, "  %llu->%llu %s term=%llu index=%llu logterm=%llu commit=%llu n=%zu rej=%d\n",
				(unsigned long long)m->from, (unsigned long long)m->to,
				keel_raft_msg_type_name(m->type), (unsigned long long)m->term,
				(unsigned long long)m->index, (unsigned long long)m->log_term,
				(unsigned long long)m->commit, m->n_entries, m->reject);
		}
		for (int j = 1; j <= MAXN; j++) {
			if (!N->n[j].up)
				continue;
			struct keel_raft_status st;
			keel_raft_status(N->n[j].r, &st);
			char v[128], l[128], o[128];
			list_str(v, sizeof(v), st.conf.voters, st.conf.n_voters);
			list_str(l, sizeof(l), st.conf.learners, st.conf.n_learners);
			list_str(o, sizeof(o), st.conf.outgoing, st.conf.n_outgoing);
			fprintf(stderr, "  node %d %s term=%llu vote=%llu leader=%llu commit=%llu last=%llu applied=%llu voters=%s learners=%s outgoing=%s\n",
				j, keel_raft_role_name(st.role), (unsigned long long)st.term,
				(unsigned long long)st.vote,
				(unsigned long long)st.leader, (unsigned long long)st.commit,
				(unsigned long long)st.last_index, (unsigned long long)N->n[j].applied, v, l, o);
		}
	} else if (!strcmp(c, "eventually-leader")) {
		/* run rounds until a leader is followed by every live voter of
		 * its configuration (a removed server that never heard of its
		 * removal may keep deposing leaders without pre-vote; this
		 * only needs a moment of stability) */
		uint64_t k = num(tok[1]), i;
		const char *why = "no leader";
		for (i = 0; i < k; i++) {
			why = leader_followed();
			if (!why)
				break;
			for (int j = 1; j <= MAXN; j++)
				if (N->n[j].up)
					keel_raft_tick(N->n[j].r);
			stabilize();
		}
		if (i == k)
			FAIL("after %llu rounds: %s", (unsigned long long)k, why);
	} else if (!strcmp(c, "expect-leader")) {
		/* exactly one live leader in the highest term, and every live
		 * server of that term follows it */
		uint64_t lead = current_leader(), term = 0;
		if (lead) {
			struct keel_raft_status st;
			keel_raft_status(N->n[lead].r, &st);
			term = st.term;
		}
		if (!lead)
			FAIL("no leader");
		for (int j = 1; j <= MAXN; j++) {
			if (!N->n[j].up)
				continue;
			struct keel_raft_status st;
			keel_raft_status(N->n[j].r, &st);
			if (st.id != lead && (st.term != term || st.leader != lead))
				FAIL("node %llu: term %llu leader %llu, but %llu leads term %llu",
				     (unsigned long long)st.id, (unsigned long long)st.term,
				     (unsigned long long)st.leader, (unsigned long long)lead,
				     (unsigned long long)term);
		}
		if (ntok > 1 && num(tok[1]) != lead)
			FAIL("leader is %llu, expected %s", (unsigned long long)lead, tok[1]);
	} else if (!strcmp(c, "expect-sm")) {
		struct tnode *n = live(tok[1]);
		const char *want = ntok > 2 ? tok[2] : "";
		if (!strcmp(want, "-"))
			want = "";
		if (strcmp(n->sm ? n->sm : "", want))
			FAIL("node %llu: state machine '%s', expected '%s'",
			     (unsigned long long)n->id, n->sm, want);
	} else if (!strcmp(c, "expect-read") || !strcmp(c, "expect-no-read")) {
		struct tnode *n = live(tok[1]);
		uint64_t ctx = num(tok[2]);
		bool found = false;
		uint64_t idx = 0;
		for (size_t i = 0; i < n->nreads; i++)
			if (n->read_ctx[i] == ctx) {
				found = true;
				idx = n->read_idx[i];
			}
		if (!strcmp(c, "expect-no-read")) {
			if (found)
				FAIL("node %llu: unexpected read %llu at %llu",
				     (unsigned long long)n->id, (unsigned long long)ctx,
				     (unsigned long long)idx);
		} else {
			if (!found)
				FAIL("node %llu: no read state for ctx %llu",
				     (unsigned long long)n->id, (unsigned long long)ctx);
			if (ntok > 3 && strcmp(tok[3], "*") && idx != num(tok[3]))
				FAIL("node %llu: read %llu at index %llu, expected %s",
				     (unsigned long long)n->id, (unsigned long long)ctx,
				     (unsigned long long)idx, tok[3]);
		}
	} else {
		FAIL("unknown command %s", c);
	}
}

void raft_script_named(const char *script, int seed)
{
	cur_seed = seed;
	cur_script = script;
	raft_script(script);
	cur_seed = 0;
	cur_script = NULL;
}

void raft_script(const char *script)
{
	N = calloc(1, sizeof(*N));
	char *copy = strdup(script), *next = NULL;
	int line = 0;
	for (char *l = copy; l; l = next) {
		next = strchr(l, '\n');
		if (next)
			*next++ = 0;
		line++;
		N->line = line;
		char *hash = strchr(l, '#');
		if (hash)
			*hash = 0;
		char *tok[32], *s2 = NULL;
		int ntok = 0;
		for (char *t = strtok_r(l, " \t", &s2); t && ntok < 32; t = strtok_r(NULL, " \t", &s2))
			tok[ntok++] = t;
		if (ntok)
			exec(tok, ntok);
	}
	free(copy);
	drop(0);
	for (int i = 0; i <= MAXN; i++)
		if (N->n[i].exists)
			node_free(&N->n[i]);
	free(N);
	N = NULL;
}
