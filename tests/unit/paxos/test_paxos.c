/*
 * The Multi-Paxos core (consensus/paxos/): its codec, and scenarios on a
 * small in-test cluster whose messages go through the codec (encode, then
 * decode) so that what a peer sees is what the wire carries. Each scenario
 * names the rule of keel/paxos.h it checks.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "keel/paxos.h"

/* ---- codec ----------------------------------------------------------------- */

static const struct keel_paxos_value vals[2] = {
	{.slot = 5, .ballot = 0x30002, .type = KEEL_PAXOS_VALUE_NORMAL, .len = 3,
	 .data = (const uint8_t *)"abc", .chosen = true},
	{.slot = 9, .ballot = 0x10001, .type = KEEL_PAXOS_VALUE_NOOP},
};

static struct keel_paxos_msg sample(void)
{
	return (struct keel_paxos_msg){
		.type = KEEL_PAXOS_MSG_PROMISE, .from = 2, .to = 3, .ballot = 0x50003,
		.promised = 0x60001, .index = 4, .last = 11, .commit = 3, .base = 2, .ctx = 17,
		.reject = true, .force = true, .values = vals, .n_values = 2, .snap_index = 8,
		.snap = (const uint8_t *)"snapshot", .snap_len = 8};
}

Test(paxos_codec, round_trip_every_field)
{
	struct keel_paxos_msg m = sample(), d;
	size_t n = keel_paxos_msg_encoded_size(&m);
	uint8_t *buf = malloc(n);
	cr_assert_eq(keel_paxos_msg_encode(&m, buf, n), (int)n);
	cr_assert_eq(keel_paxos_msg_encode(&m, buf, n - 1), KEEL_ETOOBIG);
	cr_assert_eq(keel_paxos_msg_decode(buf, n, &d), 0);
	memset(buf, 0xee, n); /* the decoded copy owns its memory */
	cr_assert_eq(d.type, m.type);
	cr_assert_eq(d.from, 2);
	cr_assert_eq(d.to, 3);
	cr_assert_eq(d.ballot, m.ballot);
	cr_assert_eq(d.promised, m.promised);
	cr_assert_eq(d.index, 4);
	cr_assert_eq(d.last, 11);
	cr_assert_eq(d.commit, 3);
	cr_assert_eq(d.base, 2);
	cr_assert_eq(d.ctx, 17);
	cr_assert(d.reject && d.force);
	cr_assert_eq(d.n_values, 2);
	cr_assert_eq(d.values[0].slot, 5);
	cr_assert_eq(d.values[0].ballot, 0x30002);
	cr_assert(d.values[0].chosen);
	cr_assert_eq(d.values[0].len, 3);
	cr_assert(!memcmp(d.values[0].data, "abc", 3));
	cr_assert_eq(d.values[1].type, KEEL_PAXOS_VALUE_NOOP);
	cr_assert(!d.values[1].chosen);
	cr_assert_eq(d.snap_index, 8);
	cr_assert_eq(d.snap_len, 8);
	cr_assert(!memcmp(d.snap, "snapshot", 8));
	keel_paxos_msg_free(&d);
	free(buf);
}

Test(paxos_codec, every_truncation_and_bad_field_is_refused)
{
	struct keel_paxos_msg m = sample(), d;
	size_t n = keel_paxos_msg_encoded_size(&m);
	uint8_t *buf = malloc(n);
	cr_assert_eq(keel_paxos_msg_encode(&m, buf, n), (int)n);
	for (size_t k = 0; k < n; k++)
		cr_assert_eq(keel_paxos_msg_decode(buf, k, &d), KEEL_EPROTO, "prefix %zu", k);
	uint8_t *bad = malloc(n + 1);
	memcpy(bad, buf, n);
	bad[n] = 0;
	cr_assert_eq(keel_paxos_msg_decode(bad, n + 1, &d), KEEL_EPROTO, "a trailing byte");
	memcpy(bad, buf, n);
	bad[2] = KEEL_PAXOS_MSG_TYPE_MAX + 1;
	cr_assert_eq(keel_paxos_msg_decode(bad, n, &d), KEEL_EPROTO, "type out of range");
	memcpy(bad, buf, n);
	bad[0] = 'R';
	cr_assert_eq(keel_paxos_msg_decode(bad, n, &d), KEEL_EPROTO, "magic");
	memcpy(bad, buf, n);
	keel_put_le32(bad + 4 + 80, 0xffffffffu);
	cr_assert_eq(keel_paxos_msg_decode(bad, n, &d), KEEL_EPROTO, "a huge value count");
	free(bad);
	free(buf);
}

/* ---- a cluster in the test -------------------------------------------------- */

#define N 3
#define MAXQ 4096

struct applied {
	uint64_t slot[256];
	char data[256][16];
	size_t n;
};

static struct keel_paxos *P[N + 1];
static struct applied A[N + 1];
static bool down[N + 1];
static bool cut[N + 1][N + 1]; /* cut[a][b]: a's messages to b are lost */
static struct keel_paxos_msg Q[MAXQ];
static size_t nq;
static struct keel_paxos_read_state reads[N + 1][16];
static size_t nreads[N + 1];
static uint64_t snap_installed[N + 1];

static void make(uint64_t id, const struct keel_paxos_boot *boot)
{
	struct keel_paxos_config c = {.id = id, .n_voters = N, .voters = {1, 2, 3},
				      .election_tick = 10, .heartbeat_tick = 1, .seed = 42};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_paxos_create(&c, boot, &P[id], err), 0, "%s", err);
}

static void setup(void)
{
	memset(A, 0, sizeof(A));
	memset(down, 0, sizeof(down));
	memset(cut, 0, sizeof(cut));
	memset(nreads, 0, sizeof(nreads));
	memset(snap_installed, 0, sizeof(snap_installed));
	nq = 0;
	for (uint64_t i = 1; i <= N; i++)
		make(i, NULL);
}

static void teardown(void)
{
	for (size_t i = 0; i < nq; i++)
		keel_paxos_msg_free(&Q[i]);
	for (int i = 1; i <= N; i++)
		keel_paxos_destroy(P[i]);
}

/* Drains node i's ready batches: messages onto the wire (encoded and
 * decoded), chosen values into its applied list. */
static void drain(int i)
{
	while (keel_paxos_has_ready(P[i])) {
		struct keel_paxos_ready rd;
		keel_paxos_ready(P[i], &rd);
		for (size_t k = 0; k < rd.n_msgs; k++) {
			size_t n = keel_paxos_msg_encoded_size(&rd.msgs[k]);
			uint8_t *b = malloc(n);
			cr_assert_eq(keel_paxos_msg_encode(&rd.msgs[k], b, n), (int)n);
			cr_assert(nq < MAXQ);
			cr_assert_eq(keel_paxos_msg_decode(b, n, &Q[nq]), 0);
			nq++;
			free(b);
		}
		if (rd.snapshot)
			snap_installed[i] = rd.snapshot->index;
		for (size_t k = 0; k < rd.n_chosen; k++) {
			const struct keel_paxos_value *v = &rd.chosen[k];
			if (v->type != KEEL_PAXOS_VALUE_NORMAL)
				continue;
			struct applied *a = &A[i];
			cr_assert(!a->n || a->slot[a->n - 1] < v->slot, "node %d applies in order", i);
			a->slot[a->n] = v->slot;
			snprintf(a->data[a->n], 16, "%.*s", (int)v->len, (const char *)v->data);
			a->n++;
		}
		for (size_t k = 0; k < rd.n_reads; k++)
			reads[i][nreads[i]++] = rd.reads[k];
		keel_paxos_advance(P[i], &rd);
	}
}

/* Delivers until the network is quiet. */
static void settle(void)
{
	for (int round = 0; round < 100; round++) {
		for (int i = 1; i <= N; i++)
			if (!down[i])
				drain(i);
		if (!nq)
			return;
		struct keel_paxos_msg batch[MAXQ];
		size_t n = nq;
		memcpy(batch, Q, n * sizeof(*Q));
		nq = 0;
		for (size_t k = 0; k < n; k++) {
			struct keel_paxos_msg *m = &batch[k];
			if (!down[m->to] && !down[m->from] && !cut[m->from][m->to])
				keel_paxos_step(P[m->to], m);
			keel_paxos_msg_free(m);
		}
	}
	cr_assert_fail("the network never went quiet");
}

static int leader_of(void)
{
	for (int i = 1; i <= N; i++) {
		struct keel_paxos_status st;
		keel_paxos_status(P[i], &st);
		if (!down[i] && st.role == KEEL_PAXOS_LEADER)
			return i;
	}
	return 0;
}

static void propose(int i, const char *s)
{
	cr_assert_eq(keel_paxos_propose(P[i], s, strlen(s), NULL, NULL), 0);
}

TestSuite(paxos, .init = setup, .fini = teardown);

Test(paxos, phase_one_elects_and_values_are_applied_in_slot_order_everywhere)
{
	cr_assert_eq(keel_paxos_campaign(P[1]), 0);
	settle();
	cr_assert_eq(leader_of(), 1);
	cr_assert_eq(keel_paxos_propose(P[2], "x", 1, NULL, NULL), KEEL_ENOTLEADER);
	propose(1, "a");
	propose(1, "b");
	propose(1, "c");
	settle();
	/* followers learn the last slots from the next heartbeat's commit */
	keel_paxos_tick(P[1]);
	settle();
	for (int i = 1; i <= N; i++) {
		cr_assert_eq(A[i].n, 3, "node %d applied %zu", i, A[i].n);
		cr_assert_str_eq(A[i].data[0], "a");
		cr_assert_str_eq(A[i].data[2], "c");
		cr_assert_eq(A[i].slot[0] + 2, A[i].slot[2]);
	}
}

Test(paxos, a_new_leader_reproposes_the_accepted_value_of_an_open_slot)
{
	keel_paxos_campaign(P[1]);
	settle();
	/* "x" reaches acceptor 2 only, and 2's answer is lost: accepted by
	 * 1 and 2, not known chosen by anyone */
	cut[1][3] = cut[2][1] = true;
	uint64_t slot;
	cr_assert_eq(keel_paxos_propose(P[1], "x", 1, &slot, NULL), 0);
	settle();
	const struct keel_paxos_value *v = keel_paxos_value_at(P[2], slot);
	cr_assert(v && v->len == 1 && !v->chosen);
	down[1] = true;
	memset(cut, 0, sizeof(cut));
	keel_paxos_campaign(P[3]);
	settle();
	cr_assert_eq(leader_of(), 3);
	keel_paxos_tick(P[3]);
	settle();
	v = keel_paxos_value_at(P[3], slot);
	cr_assert(v && v->chosen && v->len == 1 && v->data[0] == 'x',
		  "node 3 re-proposed what acceptor 2 accepted");
	cr_assert_eq(A[3].n, 1);
	cr_assert_str_eq(A[3].data[0], "x");
	cr_assert_eq(A[2].n, 1);
}

Test(paxos, holes_below_the_new_leaders_slots_become_noops)
{
	keel_paxos_campaign(P[1]);
	settle();
	/* slot s accepted by nobody but the leader; s+1 by the leader and 2 */
	cut[1][2] = cut[1][3] = true;
	propose(1, "lost");
	settle();
	cut[1][2] = false;
	cut[2][1] = true;
	propose(1, "kept");
	settle();
	down[1] = true;
	memset(cut, 0, sizeof(cut));
	keel_paxos_campaign(P[2]);
	settle();
	keel_paxos_tick(P[2]);
	settle();
	cr_assert_eq(A[2].n, 1, "the hole is a no-op, not applied");
	cr_assert_str_eq(A[2].data[0], "kept");
	cr_assert_eq(A[3].n, 1);
	cr_assert_str_eq(A[3].data[0], "kept");
}

Test(paxos, an_acceptor_refuses_a_ballot_below_its_promise)
{
	keel_paxos_campaign(P[1]);
	settle();
	struct keel_paxos_status st1;
	keel_paxos_status(P[1], &st1);
	keel_paxos_campaign(P[3]); /* forced: 2 promises the higher ballot */
	drain(3);
	for (size_t k = 0; k < nq; k++)
		if (Q[k].to == 2)
			keel_paxos_step(P[2], &Q[k]);
	for (size_t k = 0; k < nq; k++)
		keel_paxos_msg_free(&Q[k]);
	nq = 0;
	struct keel_paxos_value v = {.slot = 7, .len = 1, .data = (const uint8_t *)"z"};
	struct keel_paxos_msg acc = {.type = KEEL_PAXOS_MSG_ACCEPT, .from = 1, .to = 2,
				     .ballot = st1.ballot, .values = &v, .n_values = 1};
	cr_assert_eq(keel_paxos_step(P[2], &acc), 0);
	struct keel_paxos_ready rd;
	keel_paxos_ready(P[2], &rd);
	bool rejected = false;
	for (size_t k = 0; k < rd.n_msgs; k++)
		if (rd.msgs[k].type == KEEL_PAXOS_MSG_ACCEPTED) {
			cr_assert(rd.msgs[k].reject);
			cr_assert_gt(rd.msgs[k].promised, st1.ballot);
			rejected = true;
		}
	for (size_t k = 0; k < rd.n_accepted; k++)
		cr_assert_neq(rd.accepted[k].slot, 7, "nothing accepted at the lower ballot");
	keel_paxos_advance(P[2], &rd);
	cr_assert(rejected);
	cr_assert_null(keel_paxos_value_at(P[2], 7));
}

Test(paxos, the_learner_buffers_chosen_slots_above_a_hole)
{
	keel_paxos_campaign(P[1]);
	settle();
	cut[1][3] = true;
	propose(1, "one"); /* 3 misses it */
	settle();
	cut[1][3] = false;
	propose(1, "two");
	settle();
	keel_paxos_tick(P[1]); /* commit covers both; 3 holds only "two" */
	cut[1][3] = true;       /* and the LEARN for "one" is lost */
	settle();
	cut[1][3] = false;
	/* the heartbeat's commit covers both; 3 holds only "two" */
	struct keel_paxos_status st;
	keel_paxos_status(P[1], &st);
	struct keel_paxos_msg hb = {.type = KEEL_PAXOS_MSG_HEARTBEAT, .from = 1, .to = 3,
				    .ballot = st.ballot, .commit = st.commit};
	keel_paxos_step(P[3], &hb);
	drain(3);
	cr_assert_eq(A[3].n, 0, "slot 'two' waits for 'one'");
	for (size_t k = 0; k < nq; k++)
		keel_paxos_msg_free(&Q[k]);
	nq = 0;
	keel_paxos_tick(P[1]);
	settle();
	cr_assert_eq(A[3].n, 2);
	cr_assert_str_eq(A[3].data[0], "one");
	cr_assert_str_eq(A[3].data[1], "two");
}

Test(paxos, a_read_barrier_needs_a_quorum_round)
{
	keel_paxos_campaign(P[1]);
	settle();
	propose(1, "w");
	settle();
	cut[2][1] = cut[3][1] = true;
	cr_assert_eq(keel_paxos_read(P[1], 77), 0);
	settle();
	cr_assert_eq(nreads[1], 0, "no quorum answered: no read");
	cut[2][1] = false;
	cr_assert_eq(keel_paxos_read(P[1], 78), 0);
	settle();
	bool seen = false;
	for (size_t k = 0; k < nreads[1]; k++)
		if (reads[1][k].ctx == 78) {
			seen = true;
			cr_assert_geq(reads[1][k].index, A[1].slot[0]);
		}
	cr_assert(seen);
	/* a follower's barrier goes through the leader */
	cr_assert_eq(keel_paxos_read(P[2], 79), 0);
	settle();
	cr_assert_eq(nreads[2], 1);
	cr_assert_eq(reads[2][0].ctx, 79);
}

Test(paxos, a_peer_behind_the_compaction_point_catches_up_by_snapshot)
{
	keel_paxos_campaign(P[1]);
	settle();
	down[3] = true;
	for (int i = 0; i < 10; i++)
		propose(1, "v");
	settle();
	keel_paxos_tick(P[1]);
	settle();
	struct keel_paxos_status st;
	keel_paxos_status(P[1], &st);
	cr_assert_eq(keel_paxos_snapshot_taken(P[1], st.applied, "SNAP", 4, 0), 0);
	keel_paxos_status(P[1], &st);
	cr_assert_eq(st.base, st.applied);
	down[3] = false;
	keel_paxos_tick(P[1]);
	settle();
	cr_assert_eq(snap_installed[3], st.applied);
	propose(1, "after");
	settle();
	keel_paxos_tick(P[1]);
	settle();
	cr_assert_eq(A[3].n, 1);
	cr_assert_str_eq(A[3].data[0], "after");
}

Test(paxos, boot_keeps_the_highest_ballot_of_each_slot_and_the_promise)
{
	keel_paxos_destroy(P[2]);
	struct keel_paxos_value j[3] = {
		{.slot = 4, .ballot = keel_paxos_ballot(3, 1), .len = 3, .data = (const uint8_t *)"old"},
		{.slot = 4, .ballot = keel_paxos_ballot(5, 3), .len = 3, .data = (const uint8_t *)"new"},
		{.slot = 6, .ballot = keel_paxos_ballot(3, 1), .len = 1, .data = (const uint8_t *)"z"},
	};
	struct keel_paxos_snapshot snap = {.index = 2, .data = (const uint8_t *)"s", .len = 1};
	struct keel_paxos_boot b = {.promised = keel_paxos_ballot(6, 2), .snapshot = &snap,
				    .accepted = j, .n_accepted = 3};
	make(2, &b);
	const struct keel_paxos_value *v = keel_paxos_value_at(P[2], 4);
	cr_assert(v && !memcmp(v->data, "new", 3));
	struct keel_paxos_status st;
	keel_paxos_status(P[2], &st);
	cr_assert_eq(st.promised, keel_paxos_ballot(6, 2));
	cr_assert_eq(st.commit, 2);
	cr_assert_eq(st.last, 6);
	/* a value above the promise is corrupt state, refused */
	struct keel_paxos *bad;
	j[2].ballot = keel_paxos_ballot(9, 1);
	struct keel_paxos_config c = {.id = 2, .n_voters = N, .voters = {1, 2, 3},
				      .election_tick = 10, .heartbeat_tick = 1};
	cr_assert_eq(keel_paxos_create(&c, &b, &bad, NULL), KEEL_ECONFIG);
	/* and a server that is not a voter */
	c.id = 9;
	cr_assert_eq(keel_paxos_create(&c, NULL, &bad, NULL), KEEL_ECONFIG);
}

Test(paxos, a_silent_leader_is_replaced_by_the_failure_detector)
{
	keel_paxos_campaign(P[1]);
	settle();
	down[1] = true;
	for (int t = 0; t < 200 && !leader_of(); t++) {
		for (int i = 2; i <= N; i++)
			keel_paxos_tick(P[i]);
		settle();
	}
	int l = leader_of();
	cr_assert(l == 2 || l == 3, "a follower took over (leader %d)", l);
	struct keel_paxos_status st;
	keel_paxos_status(P[l], &st);
	cr_assert_eq(keel_paxos_ballot_round(st.ballot) % N, (uint64_t)(l - 1),
		     "rounds are dealt out by voter index");
}

Test(paxos, a_peers_slot_far_past_the_window_is_refused_not_allocated)
{
	/* found by fuzz-paxos-msg: a LEARN at slot 2^40 made the core try to
	 * allocate a window of 2^40 slots */
	struct keel_paxos_value v = {.slot = 1ull << 40, .len = 1, .data = (const uint8_t *)"x",
				     .chosen = true};
	struct keel_paxos_msg m = {.type = KEEL_PAXOS_MSG_LEARN, .from = 2, .to = 1,
				   .values = &v, .n_values = 1};
	cr_assert_eq(keel_paxos_step(P[1], &m), 0);
	cr_assert_null(keel_paxos_value_at(P[1], v.slot));
	m.type = KEEL_PAXOS_MSG_ACCEPT;
	m.ballot = keel_paxos_ballot(1, 2);
	cr_assert_eq(keel_paxos_step(P[1], &m), 0);
	cr_assert_null(keel_paxos_value_at(P[1], v.slot));
	/* and the core still works */
	keel_paxos_campaign(P[1]);
	settle();
	cr_assert_eq(leader_of(), 1);
	propose(1, "ok");
	settle();
	cr_assert_eq(A[1].n, 1);
}
