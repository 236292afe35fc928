/*
 * Tests of the `sim` transport backend (transport/sim.h): determinism (the
 * same seed gives the same delivery trace, different seeds differ), the
 * reliable contract with faults off, and each fault: drop, duplicate,
 * reorder, one-way and symmetric partitions, crash and restart,
 * backpressure.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "keel/transport.h"
#include "transport/sim.h"

#define NODES 3
#define MAXMSG 4096

struct node {
	struct keel_transport *t;
	struct keel_conn *out[NODES + 1]; /* dialled, by peer node */
	/* Per sender: the sequence numbers received, in arrival order. */
	uint32_t got[NODES + 1][4096];
	size_t ngot[NODES + 1];
	int ups, downs, last_down_reason, writable;
	uint64_t bytes_ok, bytes_bad;
};

static struct node nodes[NODES + 1];
static struct keel_sim_net *net;

static void on_up(struct keel_transport *t, struct keel_conn *c)
{
	(void)c;
	((struct node *)t->user)->ups++;
}

static void on_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct node *n = t->user;
	n->downs++;
	n->last_down_reason = reason;
	for (int i = 1; i <= NODES; i++)
		if (n->out[i] == c)
			n->out[i] = NULL;
}

static void on_writable(struct keel_transport *t, struct keel_conn *c)
{
	(void)c;
	((struct node *)t->user)->writable++;
}

/* Payload: u32 seq, then bytes (seq * 31 + i) & 0xff. */
static void on_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct node *n = t->user;
	uint32_t seq;
	cr_assert_geq(m->len, 4);
	memcpy(&seq, m->data, 4);
	const uint8_t *b = m->data;
	bool ok = m->type == 7;
	for (uint32_t i = 4; i < m->len; i++)
		ok &= b[i] == (uint8_t)(seq * 31 + i);
	if (ok)
		n->bytes_ok += m->len;
	else
		n->bytes_bad += m->len;
	uint32_t from = m->from.node;
	cr_assert(from >= 1 && from <= NODES);
	cr_assert_eq(c->peer.node, from);
	if (n->ngot[from] < 4096)
		n->got[from][n->ngot[from]++] = seq;
}

static const struct keel_transport_handlers handlers = {
	.on_conn_up = on_up,
	.on_recv = on_recv,
	.on_conn_down = on_down,
	.on_writable = on_writable,
};

static void open_node(int i, uint32_t sendq)
{
	struct keel_transport_config cfg = {
		.cluster_id = 42,
		.self = { (uint32_t)i, 0 },
		.shards = 1,
		.handlers = &handlers,
		.user = &nodes[i],
		.backend_arg = net,
		.sendq_bytes = sendq,
	};
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_transport_open("sim", &cfg, &nodes[i].t, err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(keel_transport_listen(nodes[i].t), 0);
}

static void start(uint64_t seed, const struct keel_sim_faults *f, uint32_t sendq)
{
	memset(nodes, 0, sizeof(nodes));
	cr_assert_eq(keel_sim_net_create(seed, f, &net), 0);
	for (int i = 1; i <= NODES; i++)
		open_node(i, sendq);
}

static void dial_all(void)
{
	for (int i = 1; i <= NODES; i++)
		for (int j = 1; j <= NODES; j++)
			if (i != j && !nodes[i].out[j])
				cr_assert_eq(keel_transport_connect(nodes[i].t,
								    (struct keel_addr){ (uint32_t)j, 0 },
								    &nodes[i].out[j]),
					     0);
}

/* Runs the network until nothing is due (or until `until`). */
static void run(uint64_t until)
{
	for (;;) {
		uint64_t t = keel_sim_net_next_event(net);
		if (t == UINT64_MAX || t > until)
			break;
		keel_sim_net_advance_to(net, t);
		for (int i = 1; i <= NODES; i++)
			if (nodes[i].t)
				keel_transport_poll(nodes[i].t, 1000);
	}
	keel_sim_net_advance_to(net, until == UINT64_MAX ? keel_sim_net_now(net) : until);
}

static int send_seq(int from, int to, uint32_t seq, uint32_t len)
{
	struct keel_send_buf *b;
	int rc = keel_transport_alloc(nodes[from].out[to], len, &b);
	if (rc < 0)
		return rc;
	memcpy(b->data, &seq, 4);
	uint8_t *p = b->data;
	for (uint32_t i = 4; i < len; i++)
		p[i] = (uint8_t)(seq * 31 + i);
	b->len = len;
	b->type = 7;
	return keel_transport_send_buf(nodes[from].out[to], b);
}

static void stop(void)
{
	for (int i = 1; i <= NODES; i++)
		keel_transport_close(nodes[i].t);
	keel_sim_net_destroy(net);
	net = NULL;
}

/* A fixed workload: every node sends n messages of pseudo-random sizes to
 * every other, interleaved with clock steps. Returns the trace hash. */
static uint64_t workload(uint64_t seed, const struct keel_sim_faults *f, int n)
{
	start(seed, f, 0);
	dial_all();
	uint64_t x = 7;
	for (int k = 0; k < n; k++) {
		for (int i = 1; i <= NODES; i++)
			for (int j = 1; j <= NODES; j++) {
				if (i == j || !nodes[i].out[j])
					continue;
				x = x * 6364136223846793005ull + 1442695040888963407ull;
				cr_assert_eq(send_seq(i, j, (uint32_t)k, 4 + (uint32_t)(x >> 33) % 300), 0);
			}
		run(keel_sim_net_now(net) + 200000);
	}
	run(UINT64_MAX);
	return keel_sim_net_trace_hash(net);
}

static const struct keel_sim_faults lossy = {
	.delay_min_ns = 100000,
	.delay_max_ns = 2000000,
	.slow_ppm = 20000,
	.slow_max_ns = 50000000,
	.drop_ppm = 50000,
	.dup_ppm = 30000,
	.reorder_ppm = 50000,
};

Test(sim_transport, registered_under_its_name)
{
	const struct keel_transport_ops *ops = keel_transport_find("sim");
	cr_assert_not_null(ops);
	cr_expect_str_eq(ops->name, "sim");
	cr_expect(ops->caps & KEEL_TRANSPORT_SIMULATED);
	/* Faults break the reliable contract on purpose: not advertised. */
	cr_expect_not(ops->caps & KEEL_TRANSPORT_RELIABLE);
}

Test(sim_transport, same_seed_same_trace_different_seeds_differ)
{
	uint64_t h1 = workload(1234, &lossy, 200);
	struct keel_sim_stats st;
	keel_sim_net_stats(net, &st);
	cr_expect_gt(st.delivered, 500);
	cr_expect_gt(st.dropped, 0);
	cr_expect_gt(st.duplicated, 0);
	cr_expect_gt(st.reordered, 0);
	stop();
	uint64_t h2 = workload(1234, &lossy, 200);
	struct keel_sim_stats st2;
	keel_sim_net_stats(net, &st2);
	stop();
	cr_expect_eq(h1, h2, "same seed, different traces: %llx vs %llx", (unsigned long long)h1,
		     (unsigned long long)h2);
	cr_expect_eq(memcmp(&st, &st2, sizeof(st)), 0);
	uint64_t seen[16];
	for (uint64_t s = 0; s < 16; s++) {
		seen[s] = workload(5000 + s, &lossy, 50);
		stop();
		for (uint64_t k = 0; k < s; k++)
			cr_expect_neq(seen[s], seen[k], "seeds %llu and %llu gave one trace",
				      (unsigned long long)(5000 + s), (unsigned long long)(5000 + k));
	}
}

Test(sim_transport, without_faults_delivery_is_whole_in_order_exactly_once)
{
	struct keel_sim_faults f = { .delay_min_ns = 1000, .delay_max_ns = 5000000 };
	workload(99, &f, 300);
	for (int i = 1; i <= NODES; i++) {
		cr_expect_eq(nodes[i].bytes_bad, 0);
		for (int j = 1; j <= NODES; j++) {
			if (i == j)
				continue;
			cr_assert_eq(nodes[i].ngot[j], 300, "%d from %d: %zu", i, j,
				     nodes[i].ngot[j]);
			for (uint32_t k = 0; k < 300; k++)
				cr_assert_eq(nodes[i].got[j][k], k);
		}
	}
	stop();
}

Test(sim_transport, faults_drop_duplicate_and_reorder)
{
	workload(77, &lossy, 300);
	size_t total = 0, dups = 0, inversions = 0;
	for (int i = 1; i <= NODES; i++)
		for (int j = 1; j <= NODES; j++) {
			if (i == j)
				continue;
			uint8_t count[300] = { 0 };
			for (size_t k = 0; k < nodes[i].ngot[j]; k++) {
				uint32_t s = nodes[i].got[j][k];
				cr_assert_lt(s, 300);
				dups += count[s]++ > 0;
				inversions += k > 0 && s < nodes[i].got[j][k - 1];
			}
			total += nodes[i].ngot[j];
		}
	cr_expect_eq(nodes[1].bytes_bad + nodes[2].bytes_bad + nodes[3].bytes_bad, 0);
	cr_expect_lt(total, 6 * 300 + dups, "some messages must be lost");
	cr_expect_gt(dups, 0);
	cr_expect_gt(inversions, 0);
	stop();
}

Test(sim_transport, one_way_and_symmetric_partitions)
{
	struct keel_sim_faults f = { .delay_min_ns = 1000, .delay_max_ns = 10000 };
	start(5, &f, 0);
	dial_all();
	run(UINT64_MAX);
	keel_sim_net_block(net, 1, 2, true); /* 1 -> 2 cut, 2 -> 1 open */
	cr_expect(keel_sim_net_blocked(net, 1, 2));
	cr_expect_not(keel_sim_net_blocked(net, 2, 1));
	for (uint32_t k = 0; k < 10; k++) {
		send_seq(1, 2, k, 16);
		send_seq(2, 1, k, 16);
		send_seq(1, 3, k, 16);
	}
	run(UINT64_MAX);
	cr_expect_eq(nodes[2].ngot[1], 0);
	cr_expect_eq(nodes[1].ngot[2], 10);
	cr_expect_eq(nodes[3].ngot[1], 10);
	keel_sim_net_heal(net);
	keel_sim_net_partition(net, 3, 1, true);
	for (uint32_t k = 10; k < 20; k++) {
		send_seq(1, 3, k, 16);
		send_seq(3, 1, k, 16);
		send_seq(1, 2, k, 16);
	}
	run(UINT64_MAX);
	cr_expect_eq(nodes[3].ngot[1], 10);
	cr_expect_eq(nodes[1].ngot[3], 0);
	cr_expect_eq(nodes[2].ngot[1], 10);
	/* A dial across the cut fails with a timeout. */
	struct keel_conn *c;
	int downs = nodes[3].downs;
	cr_assert_eq(keel_transport_connect(nodes[3].t, (struct keel_addr){ 1, 0 }, &c), 0);
	run(UINT64_MAX);
	cr_expect_eq(nodes[3].downs, downs + 1);
	cr_expect_eq(nodes[3].last_down_reason, -ETIMEDOUT);
	stop();
}

Test(sim_transport, crash_and_restart)
{
	struct keel_sim_faults f = { .delay_min_ns = 1000, .delay_max_ns = 10000 };
	start(6, &f, 0);
	dial_all();
	run(UINT64_MAX);
	cr_expect_eq(nodes[1].ups, 4); /* two dialled, two accepted */
	send_seq(1, 2, 0, 8);
	keel_sim_net_crash(net, 2); /* in flight to 2: lost */
	cr_expect_not(keel_sim_net_is_up(net, 2));
	run(UINT64_MAX);
	cr_expect_eq(nodes[2].ngot[1], 0);
	cr_expect_eq(nodes[1].downs, 2); /* its dialled and accepted conns to 2 */
	cr_expect_eq(nodes[1].last_down_reason, -ECONNRESET);
	cr_expect_eq(nodes[3].downs, 2);
	/* The process is gone: close its endpoint; it cannot reopen yet. */
	keel_transport_close(nodes[2].t);
	memset(&nodes[2], 0, sizeof(nodes[2]));
	struct keel_transport *t;
	struct keel_transport_config cfg = { .self = { 2, 0 }, .handlers = &handlers,
					     .backend_arg = net };
	cr_expect_eq(keel_transport_open("sim", &cfg, &t, NULL), KEEL_EUNAVAIL);
	/* A dial to a crashed node is refused. */
	struct keel_conn *c;
	cr_assert_eq(keel_transport_connect(nodes[1].t, (struct keel_addr){ 2, 0 }, &c), 0);
	run(UINT64_MAX);
	cr_expect_eq(nodes[1].last_down_reason, -ECONNREFUSED);
	nodes[1].out[2] = NULL;
	keel_sim_net_restart(net, 2);
	open_node(2, 0);
	dial_all();
	run(UINT64_MAX);
	send_seq(1, 2, 5, 8);
	run(UINT64_MAX);
	cr_expect_eq(nodes[2].ngot[1], 1);
	stop();
}

Test(sim_transport, backpressure_then_writable)
{
	struct keel_sim_faults f = { .delay_min_ns = 1000, .delay_max_ns = 1000 };
	start(8, &f, 1000);
	dial_all();
	run(UINT64_MAX);
	int sent = 0, rc;
	while ((rc = send_seq(1, 2, (uint32_t)sent, 100)) == 0)
		sent++;
	cr_expect_eq(rc, KEEL_EFULL);
	cr_expect_eq(sent, 10);
	run(UINT64_MAX);
	cr_expect_eq(nodes[1].writable, 1);
	cr_expect_eq(nodes[2].ngot[1], 10);
	cr_expect_eq(send_seq(1, 2, 10, 100), 0);
	run(UINT64_MAX);
	/* With the queue empty, one message larger than the queue still goes. */
	struct keel_send_buf *b;
	cr_expect_eq(keel_transport_alloc(nodes[1].out[2], 2u << 20, &b), 0);
	keel_transport_discard(nodes[1].out[2], b);
	cr_expect_eq(keel_transport_alloc(nodes[1].out[2], KEEL_TRANSPORT_MAX_FRAME_DEFAULT + 1, &b),
		     KEEL_ETOOBIG);
	stop();
}

Test(sim_transport, local_close_reports_zero_and_peer_reset)
{
	struct keel_sim_faults f = { .delay_min_ns = 1000, .delay_max_ns = 1000 };
	start(9, &f, 0);
	dial_all();
	run(UINT64_MAX);
	int d1 = nodes[1].downs, d2 = nodes[2].downs;
	keel_transport_close_conn(nodes[1].out[2]);
	run(UINT64_MAX);
	cr_expect_eq(nodes[1].downs, d1 + 1);
	cr_expect_eq(nodes[1].last_down_reason, 0);
	cr_expect_eq(nodes[2].downs, d2 + 1);
	cr_expect_eq(nodes[2].last_down_reason, -ECONNRESET);
	stop();
}

Test(sim_transport, dial_lost_in_a_crash_fails_instead_of_hanging)
{
	struct keel_sim_faults f = { .delay_min_ns = 1000000, .delay_max_ns = 1000000 };
	start(10, &f, 0);
	struct keel_conn *c;
	cr_assert_eq(keel_transport_connect(nodes[1].t, (struct keel_addr){ 2, 0 }, &c), 0);
	nodes[1].out[2] = c;
	/* The request is queued at node 2 when it crashes. */
	keel_sim_net_crash(net, 2);
	keel_transport_close(nodes[2].t);
	nodes[2].t = NULL;
	run(UINT64_MAX);
	cr_expect_eq(nodes[1].downs, 1);
	cr_expect_eq(nodes[1].last_down_reason, -ECONNREFUSED);
	cr_expect_null(nodes[1].out[2]);
	/* And a dial whose answer never comes times out. */
	keel_sim_net_restart(net, 2);
	open_node(2, 0);
	keel_sim_net_block(net, 2, 1, true); /* the accept cannot come back */
	cr_assert_eq(keel_transport_connect(nodes[1].t, (struct keel_addr){ 2, 0 }, &c), 0);
	run(UINT64_MAX);
	cr_expect_eq(nodes[1].downs, 2);
	cr_expect_eq(nodes[1].last_down_reason, -ETIMEDOUT);
	stop();
}
