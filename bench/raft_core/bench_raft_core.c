/*
 * bench/raft_core — the Raft core alone: three replicas in one process and
 * one thread, no I/O, no encoding. Messages from one core's ready batch are
 * stepped straight into their destination (step copies what it keeps), so
 * what is measured is the core's own work: proposing, batching, replicating,
 * acknowledging, committing and handing out entries to apply.
 *
 * Cases: committed entries per second with 1 proposer (one proposal in
 * flight: each waits for its commit, so this is the cost of a full round
 * through three cores) and with 64 proposers (64 in flight: batching and
 * pipelining amortise the rounds); and nanoseconds of CPU (all three cores
 * together) per committed entry. There is no peer program doing the same job
 * in-process, so the JSON lines carry no ratio (BENCH.md).
 *
 * Usage: bench-raft_core [--quick] [--payload BYTES]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/raft.h"

#define NODES 3

struct node {
	struct keel_raft *r;
	uint64_t applied;
	uint64_t since_compact;
};

static struct node nodes[NODES + 1];
static uint64_t committed_normal; /* normal entries applied by the leader */

static double now_s(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench-raft_core: %s: %s\n", what, keel_strerror(rc));
	exit(1);
}

static void setup(void)
{
	for (int i = 1; i <= NODES; i++) {
		struct keel_raft_config cfg = {
			.id = (uint64_t)i, .election_tick = 10, .heartbeat_tick = 1,
			.pre_vote = true, .check_quorum = true, .seed = 42,
			.max_inflight_msgs = 256,
			.initial = {.n_voters = NODES, .voters = {1, 2, 3}}};
		char err[KEEL_ERRMSG_LEN];
		int rc = keel_raft_create(&cfg, NULL, &nodes[i].r, err);
		if (rc)
			die(err, rc);
		nodes[i].applied = 0;
		nodes[i].since_compact = 0;
	}
}

static void teardown(void)
{
	for (int i = 1; i <= NODES; i++)
		keel_raft_destroy(nodes[i].r);
}

/* Drains every core's ready batches once; returns whether any had one. */
static int pump(void)
{
	int did = 0;
	for (int i = 1; i <= NODES; i++) {
		struct node *n = &nodes[i];
		while (keel_raft_has_ready(n->r)) {
			did = 1;
			struct keel_raft_ready rd;
			keel_raft_ready(n->r, &rd);
			for (size_t j = 0; j < rd.n_msgs; j++) {
				uint64_t to = rd.msgs[j].to;
				if (to >= 1 && to <= NODES)
					keel_raft_step(nodes[to].r, &rd.msgs[j]);
			}
			for (size_t j = 0; j < rd.n_committed; j++)
				if (i == 1 && rd.committed[j].type == KEEL_RAFT_ENTRY_NORMAL)
					committed_normal++;
			if (rd.n_committed) {
				uint64_t a = rd.committed[rd.n_committed - 1].index;
				n->since_compact += a - n->applied;
				n->applied = a;
			}
			keel_raft_advance(n->r, &rd);
			/* Keep memory flat: an empty snapshot every 8192
			 * entries lets the log be compacted (keeping a tail). */
			if (n->since_compact >= 8192) {
				keel_raft_snapshot_taken(n->r, n->applied, NULL, 0, 1024);
				n->since_compact = 0;
			}
		}
	}
	return did;
}

static void elect(void)
{
	for (int i = 0; i < 10; i++)
		for (int j = 1; j <= NODES; j++)
			keel_raft_tick(nodes[j].r);
	int rc = keel_raft_campaign(nodes[1].r);
	if (rc)
		die("campaign", rc);
	while (pump())
		;
	struct keel_raft_status st;
	keel_raft_status(nodes[1].r, &st);
	if (st.role != KEEL_RAFT_LEADER) {
		fprintf(stderr, "bench-raft_core: node 1 did not win the election\n");
		exit(1);
	}
}

struct result {
	double entries_per_s;
	double cpu_ns_per_entry;
	uint64_t entries;
};

static struct result run(int proposers, double seconds, size_t payload)
{
	setup();
	elect();
	committed_normal = 0;
	uint8_t *data = calloc(1, payload ? payload : 1);
	uint64_t proposed = 0;
	double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
	double w1 = w0;
	uint64_t ticks_at = 0;
	for (uint64_t iter = 0;; iter++) {
		/* Keep `proposers` proposals outstanding. */
		while (proposed - committed_normal < (uint64_t)proposers) {
			int rc = keel_raft_propose(nodes[1].r, data, payload, NULL, NULL);
			if (rc)
				die("propose", rc);
			proposed++;
		}
		pump();
		/* A heartbeat now and then, as a real clock would give. */
		if (committed_normal - ticks_at >= 10000) {
			ticks_at = committed_normal;
			for (int j = 1; j <= NODES; j++)
				keel_raft_tick(nodes[j].r);
		}
		if ((iter & 255) == 0) {
			w1 = now_s(CLOCK_MONOTONIC);
			if (w1 - w0 >= seconds)
				break;
		}
	}
	double c1 = now_s(CLOCK_THREAD_CPUTIME_ID);
	struct result res = {
		.entries = committed_normal,
		.entries_per_s = (double)committed_normal / (w1 - w0),
		.cpu_ns_per_entry = (c1 - c0) * 1e9 / (double)(committed_normal ? committed_normal : 1)};
	free(data);
	teardown();
	return res;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int quick = 0;
	size_t payload = 128;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--payload") && i + 1 < argc)
			payload = (size_t)strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: %s [--quick] [--payload BYTES]\n", argv[0]);
			return 2;
		}
	}
	double seconds = quick ? 0.2 : 2.0;
	int reps = quick ? 1 : 5;
	int props[2] = {1, 64};
	double eps[2][5], cpu[2][5];
	uint64_t total[2] = {0, 0};
	/* alternate the two cases so drift on a shared machine hits both */
	for (int r = 0; r < reps; r++)
		for (int k = 0; k < 2; k++) {
			struct result res = run(props[k], seconds, payload);
			eps[k][r] = res.entries_per_s;
			cpu[k][r] = res.cpu_ns_per_entry;
			total[k] += res.entries;
		}
	double med_eps[2], med_cpu[2];
	for (int k = 0; k < 2; k++) {
		qsort(eps[k], (size_t)reps, sizeof(double), cmp_double);
		qsort(cpu[k], (size_t)reps, sizeof(double), cmp_double);
		med_eps[k] = eps[k][reps / 2];
		med_cpu[k] = cpu[k][reps / 2];
	}
	printf("raft_core: 3 replicas in one thread, no I/O, %zu-byte entries, median of %d run(s) of %.1f s\n",
	       payload, reps, seconds);
	printf("%-12s %16s %20s %14s\n", "proposers", "entries/s", "CPU ns/entry (3 cores)", "entries");
	for (int k = 0; k < 2; k++)
		printf("%-12d %16.0f %20.1f %14llu\n", props[k], med_eps[k], med_cpu[k],
		       (unsigned long long)total[k]);
	for (int k = 0; k < 2; k++) {
		printf("{\"bench\":\"raft_core\",\"case\":\"entries_per_s_%dp\",\"unit\":\"entries/s\","
		       "\"keel\":%.1f,\"better\":\"higher\"}\n", props[k], med_eps[k]);
		printf("{\"bench\":\"raft_core\",\"case\":\"cpu_ns_per_entry_%dp\",\"unit\":\"ns\","
		       "\"keel\":%.1f,\"better\":\"lower\"}\n", props[k], med_cpu[k]);
	}
	return 0;
}
