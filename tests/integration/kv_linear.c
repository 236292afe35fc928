/*
 * tests/integration/kv_linear.c — the replicated KV's client history is
 * linearizable while nodes are SIGKILLed and restarted.
 *
 * A local cluster (`keel cluster up`: 3 nodes, 2 shards, 4 groups) serves
 * CLIENTS threads, each with its own keel_client (include/keel/client.h),
 * issuing linearizable gets, puts of unique values and CASes (expecting
 * the value it last read) on KEYS keys for SECONDS. A nemesis thread
 * SIGKILLs a random node by its PID every 0.8 to 1.6 s and restarts it a
 * second later (`keel cluster restart`), except in the last 8 s. Every call is recorded with its
 * invocation and response times: a call that returned an error other than
 * a definite answer (not found, comparison failed) is "pending": it may or
 * may not have taken effect. The history then goes through the
 * linearizability checker (tests/lib/linearizability.h), key by key.
 *
 * Passes when the history is linearizable, at least MIN_OK calls succeeded
 * and writes succeeded after every kill (the cluster stayed available).
 * Exit 77 when the cluster cannot be started here.
 *
 * With --endpoints the cluster is someone else's (tests/integration/
 * kv_partition.sh runs one on three network-namespace hosts and partitions
 * it while this runs): no cluster up, no nemesis, only the clients and the
 * checker, and writes must have succeeded in the last quarter of the run.
 *
 * usage: kv-linear KEEL_BINARY [SECONDS] [CLIENTS]
 *        kv-linear --endpoints HOST:PORT,... --token-file FILE SECONDS CLIENTS
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel/base.h"
#include "keel/client.h"
#include "kv_util.h"
#include "linearizability.h"

#define KEYS 4
#define MAX_CLIENTS 32
#define MIN_OK 200

static const char *keel;
static char dir[256];
static char endpoints[1024], token[128];
static unsigned seconds = 8, nclients = 8;
static atomic_bool stop;
static pthread_mutex_t hmu = PTHREAD_MUTEX_INITIALIZER;
static struct keel_lin_history hist;
static atomic_uint kills;
static atomic_ullong last_kill_ns;
static atomic_ullong write_after_kill; /* writes acknowledged after the latest kill */
static atomic_ullong last_write_ns;    /* the latest acknowledged write */

/* Keys of this run only: the checker starts every key absent, and an
 * --endpoints cluster may hold an earlier run's keys. */
static uint64_t run_id;

static void key_name(uint64_t k, char *buf, size_t cap)
{
	snprintf(buf, cap, "lin-key-%016" PRIx64 "-%" PRIu64, run_id, k);
}

static uint64_t parse_value(const void *v, size_t len)
{
	char b[32];
	if (len == 0 || len >= sizeof(b))
		return UINT64_MAX; /* not ours: the checker will refuse it */
	memcpy(b, v, len);
	b[len] = '\0';
	return strtoull(b, NULL, 10);
}

static size_t invoke(int client, enum keel_lin_kind kind, uint64_t key, uint64_t arg,
		     uint64_t expect)
{
	pthread_mutex_lock(&hmu);
	size_t id = keel_lin_invoke(&hist, client, kind, key, arg, expect, now_ns());
	pthread_mutex_unlock(&hmu);
	return id;
}

static void returned(size_t id, uint64_t value, bool ok)
{
	pthread_mutex_lock(&hmu);
	keel_lin_return(&hist, id, now_ns(), value, ok);
	pthread_mutex_unlock(&hmu);
}

struct client_arg {
	int id;
	unsigned ok, pending;
};

static void *client_main(void *p)
{
	struct client_arg *ca = p;
	struct keel_client_config cc = {.endpoints = endpoints, .token = token, .timeout_ms = 3000};
	struct keel_client *c;
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, &c, err) < 0) {
		fprintf(stderr, "client %d: %s\n", ca->id, err);
		return NULL;
	}
	struct keel_prng rng;
	keel_prng_seed(&rng, 0x11u + (uint64_t)ca->id * 7919u);
	uint64_t seen[KEYS] = {0};
	uint64_t counter = 0;
	while (!atomic_load(&stop)) {
		uint64_t k = keel_prng_range(&rng, 0, KEYS - 1);
		char kn[32];
		key_name(k, kn, sizeof(kn));
		uint64_t d = keel_prng_range(&rng, 0, 9);
		if (d < 4) {
			size_t id = invoke(ca->id, KEEL_LIN_GET, k, 0, 0);
			void *v;
			size_t vl;
			int rc = keel_client_get(c, kn, strlen(kn), false, &v, &vl, NULL);
			if (rc == 0) {
				uint64_t x = parse_value(v, vl);
				keel_client_free_value(v);
				seen[k] = x;
				returned(id, x, true);
				ca->ok++;
			} else if (rc == KEEL_ENOTFOUND) {
				seen[k] = 0;
				returned(id, 0, true);
				ca->ok++;
			} else {
				ca->pending++; /* a read without an answer has no effect */
			}
		} else {
			uint64_t val = ((uint64_t)(ca->id + 1) << 32) | ++counter;
			char vs[32];
			int vl = snprintf(vs, sizeof(vs), "%" PRIu64, val);
			bool cas = d >= 7;
			size_t id = cas ? invoke(ca->id, KEEL_LIN_CAS, k, val, seen[k])
					: invoke(ca->id, KEEL_LIN_PUT, k, val, 0);
			int rc;
			if (cas) {
				char es[32];
				int el = snprintf(es, sizeof(es), "%" PRIu64, seen[k]);
				rc = keel_client_cas(c, kn, strlen(kn), seen[k] ? es : NULL,
						     seen[k] ? (size_t)el : 0, vs, (size_t)vl, NULL);
			} else {
				rc = keel_client_put(c, kn, strlen(kn), vs, (size_t)vl, NULL);
			}
			if (rc == 0) {
				seen[k] = val;
				returned(id, 0, true);
				ca->ok++;
				atomic_fetch_add(&write_after_kill, 1);
				atomic_store(&last_write_ns, now_ns());
			} else if (cas && rc == KEEL_ESTALE) {
				returned(id, 0, false); /* definite: it did not swap */
				ca->ok++;
			} else {
				ca->pending++; /* timeout or unavailable: may have happened */
			}
		}
	}
	keel_client_close(c);
	return NULL;
}

static void *nemesis_main(void *p)
{
	(void)p;
	struct keel_prng rng;
	keel_prng_seed(&rng, keel_mix64((uint64_t)getpid() ^ now_ns()));
	uint64_t end = now_ns() + (uint64_t)seconds * 1000000000ull;
	/* the last 8 s are quiet: the cluster must serve writes again after
	 * the last kill (a restart under a sanitizer takes seconds: WAL
	 * recovery of every group, then an election timeout) */
	while (!atomic_load(&stop) && now_ns() + 8000000000ull < end) {
		usleep((useconds_t)keel_prng_range(&rng, 800, 1600) * 1000);
		unsigned n = (unsigned)keel_prng_range(&rng, 1, 3);
		char path[400], pid[32];
		snprintf(path, sizeof(path), "%s/n%u.pid", dir, n);
		if (read_file(path, pid, sizeof(pid)) <= 0)
			continue;
		if (atomic_load(&kills) && atomic_load(&write_after_kill) == 0) {
			fprintf(stderr, "kv-linear: no write succeeded since the last kill\n");
			continue;
		}
		kill((pid_t)atoi(pid), SIGKILL);
		atomic_store(&write_after_kill, 0);
		atomic_store(&last_kill_ns, now_ns());
		atomic_fetch_add(&kills, 1);
		fprintf(stderr, "kv-linear: SIGKILL node %u (pid %s)\n", n, pid);
		usleep(1000000);
		if (run("'%s' cluster restart --node %u --dir '%s' >/dev/null 2>&1", keel, n, dir))
			fprintf(stderr, "kv-linear: restart of node %u failed\n", n);
	}
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: kv-linear KEEL_BINARY [SECONDS] [CLIENTS]\n"
			"       kv-linear --endpoints HOST:PORT,... --token-file FILE SECONDS CLIENTS\n");
	return 2;
}

int main(int argc, char **argv)
{
	bool external = argc > 1 && !strcmp(argv[1], "--endpoints");
	if (argc < 2 || (external && (argc != 7 || strcmp(argv[3], "--token-file"))))
		return usage();
	if (external) {
		snprintf(endpoints, sizeof(endpoints), "%s", argv[2]);
		if (read_file(argv[4], token, sizeof(token)) < 0) {
			fprintf(stderr, "kv-linear: %s: cannot read the token\n", argv[4]);
			return 2;
		}
		argv += 3;
		argc -= 3;
	} else {
		keel = argv[1];
	}
	if (argc > 2)
		seconds = (unsigned)atoi(argv[2]);
	if (argc > 3)
		nclients = (unsigned)atoi(argv[3]);
	if (seconds < 12 || nclients < 1 || nclients > MAX_CLIENTS) {
		fprintf(stderr, "kv-linear: SECONDS >= 12, CLIENTS 1..%u\n", MAX_CLIENTS);
		return 2;
	}
	char path[400];
	if (!external) {
		snprintf(dir, sizeof(dir), "/tmp/keel-kv-linear.XXXXXX");
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			return 77;
		}
		strcat(dir, "/c");
		if (run("'%s' cluster up --nodes 3 --shards 2 --groups 4 --dir '%s' >/dev/null 2>&1",
			keel, dir)) {
			fprintf(stderr, "kv-linear: keel cluster up failed here: skipped\n");
			return 77;
		}
		snprintf(path, sizeof(path), "%s/endpoints", dir);
		read_file(path, endpoints, sizeof(endpoints));
		snprintf(path, sizeof(path), "%s/client-token", dir);
		read_file(path, token, sizeof(token));
	}
	run_id = keel_mix64(now_ns() ^ ((uint64_t)getpid() << 32));
	keel_lin_history_init(&hist);

	pthread_t th[MAX_CLIENTS], nem;
	struct client_arg ca[MAX_CLIENTS];
	for (unsigned i = 0; i < nclients; i++) {
		ca[i] = (struct client_arg){.id = (int)i};
		pthread_create(&th[i], NULL, client_main, &ca[i]);
	}
	uint64_t t0 = now_ns();
	if (!external)
		pthread_create(&nem, NULL, nemesis_main, NULL);
	sleep(seconds);
	atomic_store(&stop, true);
	if (!external)
		pthread_join(nem, NULL);
	unsigned ok = 0, pending = 0;
	for (unsigned i = 0; i < nclients; i++) {
		pthread_join(th[i], NULL);
		ok += ca[i].ok;
		pending += ca[i].pending;
	}
	/* external: the partition heals before the last quarter of the run */
	bool writes_after_last_kill =
		external ? atomic_load(&last_write_ns) > t0 + (uint64_t)seconds * 750000000ull
			 : atomic_load(&write_after_kill) > 0;
	if (!external)
		run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel, dir);

	struct keel_lin_report rep;
	enum keel_lin_verdict v = keel_lin_check(&hist, 20000000, &rep);
	printf("kv-linear: %u clients, %u s, %u kills: %zu calls, %u answered, %u without an answer; "
	       "checker: %s (%zu keys, %" PRIu64 " steps)\n",
	       nclients, seconds, atomic_load(&kills), hist.n, ok, pending,
	       v == KEEL_LIN_LINEARIZABLE ? "linearizable" : v == KEEL_LIN_VIOLATION ? "VIOLATION" : "unknown",
	       rep.keys, rep.steps);
	int rc = 0;
	if (v != KEEL_LIN_LINEARIZABLE) {
		printf("%s\n", rep.text ? rep.text : "");
		rc = 1;
	}
	if (ok < MIN_OK) {
		printf("kv-linear: only %u calls answered (want %u)\n", ok, MIN_OK);
		rc = 1;
	}
	if (!writes_after_last_kill) {
		printf("kv-linear: no write succeeded %s\n",
		       external ? "in the last quarter of the run" : "after the last kill");
		rc = 1;
	}
	keel_lin_report_free(&rep);
	keel_lin_history_free(&hist);
	if (external) {
		/* the cluster and its directory are the caller's */
	} else if (rc == 0) {
		char *slash = strrchr(dir, '/');
		*slash = '\0';
		run("rm -rf '%s'", dir);
	} else {
		printf("kv-linear: kept %s\n", dir);
	}
	return rc;
}
