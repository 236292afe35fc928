/*
 * Generated scenario scripts: random proposals, reads, membership changes,
 * transfers, snapshots, crashes, partitions and message loss, for a few
 * hundred seeds. The harness checks election safety, agreement of committed
 * entries and state machines, and that every read covers the writes
 * committed before it began, after every step; at the end the cluster
 * heals and must elect a leader and commit. (The whole-cluster simulator in
 * tests/sim goes much further; this keeps the core's own tests honest.)
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft_script.h"

static uint64_t next(uint64_t *s)
{
	uint64_t x = *s += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

#define APPEND(...) off += (size_t)snprintf(buf + off, cap - off, __VA_ARGS__)

static char *generate(uint64_t seed, int steps)
{
	size_t cap = 64 * 1024 + (size_t)steps * 64, off = 0;
	char *buf = malloc(cap);
	uint64_t s = seed;
	int n = 3 + 2 * (int)(next(&s) % 2);
	int mode = (int)(next(&s) % 4);
	APPEND("nodes %d%s%s%s chunk=%d maxmsg=%d inflight=%d\n", n,
	       mode >= 1 ? " prevote" : "", mode >= 2 ? " checkquorum" : "",
	       mode == 3 ? " lease" : "", 4 + (int)(next(&s) % 32), 1 + (int)(next(&s) % 64),
	       1 + (int)(next(&s) % 8));
	APPEND("join %d\njoin %d\n", n + 1, n + 2);
	int reads = 0;
	for (int i = 0; i < steps && off < cap - 256; i++) {
		uint64_t r = next(&s) % 100;
		int node = 1 + (int)(next(&s) % (uint64_t)(n + 2));
		if (r < 30)
			APPEND("any-propose p%d\n", i);
		else if (r < 40)
			APPEND("any-read %d %d\n", node, 100000 + reads++);
		else if (r < 55)
			APPEND("run %d\n", 1 + (int)(next(&s) % 6));
		else if (r < 60)
			APPEND("any-conf %d\n", node);
		else if (r < 62)
			APPEND("any-transfer %d\n", node);
		else if (r < 63)
			APPEND("any-joint\n");
		else if (r < 67)
			APPEND("any-snapshot %d\n", node);
		else if (r < 71)
			APPEND("any-crash %d\n", node);
		else if (r < 76)
			APPEND("any-restart %d\n", node);
		else if (r < 80) {
			int other = 1 + (int)(next(&s) % (uint64_t)(n + 2));
			if (other != node)
				APPEND("cut %d %d\n", node, other);
		}
		else if (r < 84)
			APPEND("heal\n");
		else if (r < 87)
			APPEND("loss %d\n", (int)(next(&s) % 5));
		else
			APPEND("stabilize\n");
	}
	APPEND("heal\nloss 0\nany-restart-all\neventually-leader 300\n");
	return buf;
}

Test(raft_random, generated_scenarios, .timeout = 300)
{
	int seeds = 300, first = 1;
	const char *env = getenv("KEEL_RAFT_RANDOM_SEEDS");
	if (env)
		seeds = atoi(env);
	if ((env = getenv("KEEL_RAFT_RANDOM_FIRST")))
		first = atoi(env);
	if (getenv("KEEL_RAFT_SCRIPT"))
		return;
	for (int seed = first; seed < first + seeds; seed++) {
		int steps = getenv("KEEL_RAFT_RANDOM_STEPS") ? atoi(getenv("KEEL_RAFT_RANDOM_STEPS")) : 150;
		char *script = generate((uint64_t)seed, steps);
		cr_log_info("seed %d", seed);
		raft_script_named(script, seed);
		free(script);
	}
}

/* Replays a script from a file (KEEL_RAFT_SCRIPT=path), e.g. one a failing
 * seed printed; does nothing without it. */
Test(raft_random, replay_file)
{
	const char *path = getenv("KEEL_RAFT_SCRIPT");
	if (!path)
		return;
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "cannot open %s", path);
	char *buf = calloc(1, 1 << 20);
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	fclose(f);
	buf[n] = 0;
	raft_script_named(buf, -1);
	free(buf);
}
