/*
 * tests/integration/lock_cluster.c — the lock service with real
 * processes: a local cluster (`keel cluster up`: 3 nodes, 2 shards, 4
 * groups) and client processes, each with its own keel_lock_client
 * (include/keel/lock_client.h), first connected to different nodes.
 *
 * Phase 1, contention and crashes: CLIENTS processes take turns on one
 * exclusive lock (blocking acquire, hold ~100 ms writing to a fenced
 * resource, release) for PHASE1 s. After 3 s the node leading the lock's
 * group and a client holding the lock are SIGKILLed together. Checked:
 * grants keep coming after the kills, and the dead client's lock went to
 * another no sooner than its session could have lapsed (2/3 of the TTL
 * after the kill: keepalives go every TTL/3) and within its TTL plus an
 * election and the new leader's lease wait.
 *
 * Phase 2, a paused holder: client P takes a second lock (TTL 1 s) and
 * writes to its fenced resource in a loop; P is SIGSTOPped for 3 s, in
 * which client Q is granted the lock and writes with its (higher) token;
 * then P is SIGCONTed. P must be told it lost the lock (poll returns
 * KEEL_ESTALE), and its write with the old token must be refused by the
 * resource.
 *
 * Every run: each holder logs its grant (token, time), then before each
 * write the time it still held the lock by its own conservative view, and
 * its release; no two holders' intervals of one lock overlap (no double
 * grant), and tokens grow in grant order. The fenced resource is a file
 * (flock'd) holding the highest token accepted, checked with
 * keel_lock_fence_check.
 *
 * Exit 77 when the cluster cannot be started here.
 * usage: lock-cluster KEEL_BINARY [CLIENTS] [PHASE1_SECONDS]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel/base.h"
#include "keel/client.h"
#include "keel/lock.h"
#include "keel/lock_client.h"
#include "keel/services.h"

#define MAX_CLIENTS 16
#define TTL_MS 2000
#define GROUPS 4

static const char *keel;
static char dir[256], endpoints[1024], token[128];
static const char *lock1 = "it/contend", *lock2 = "it/pause";

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int run(const char *fmt, ...) KEEL_PRINTF(1, 2);
static int run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	return (int)n;
}

/* ---- the fenced resource: a file with the highest token accepted ---------- */

/* 0 accepted, KEEL_ESTALE refused. */
static int fenced_write(const char *res, uint64_t tok)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", dir, res);
	int fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0)
		return -errno;
	flock(fd, LOCK_EX);
	char b[32] = {0};
	ssize_t n = pread(fd, b, sizeof(b) - 1, 0);
	struct keel_lock_fence f = {.highest = n > 0 ? strtoull(b, NULL, 10) : 0};
	int rc = keel_lock_fence_check(&f, tok);
	if (rc == 0) {
		int l = snprintf(b, sizeof(b), "%020" PRIu64, f.highest);
		if (pwrite(fd, b, (size_t)l, 0) != l)
			rc = -EIO;
	}
	flock(fd, LOCK_UN);
	close(fd);
	return rc;
}

/* ---- a client process ------------------------------------------------------- */

static FILE *logf_open(const char *who)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/log.%s", dir, who);
	FILE *f = fopen(path, "a");
	if (f)
		setvbuf(f, NULL, _IOLBF, 0);
	return f;
}

/* Endpoints rotated by i, so clients start on different nodes. */
static void rotated(unsigned i, char *out, size_t cap)
{
	char *parts[8];
	char tmp[1024];
	snprintf(tmp, sizeof(tmp), "%s", endpoints);
	unsigned n = 0;
	for (char *s = strtok(tmp, ","); s && n < 8; s = strtok(NULL, ","))
		parts[n++] = s;
	out[0] = '\0';
	for (unsigned k = 0; k < n; k++) {
		strncat(out, parts[(i + k) % n], cap - strlen(out) - 2);
		if (k + 1 < n)
			strncat(out, ",", cap - strlen(out) - 1);
	}
}

static struct keel_lock_client *open_client(unsigned i, uint32_t ttl)
{
	char eps[1024];
	rotated(i, eps, sizeof(eps));
	struct keel_lock_client_config cc = {.endpoints = eps, .token = token[0] ? token : NULL,
					     .ttl_ms = ttl, .timeout_ms = 5000};
	struct keel_lock_client *lc;
	char err[KEEL_ERRMSG_LEN];
	for (int tries = 0; tries < 50; tries++) {
		if (keel_lock_client_open(&cc, &lc, err) == 0)
			return lc;
		usleep(100000);
	}
	fprintf(stderr, "lock-cluster: client %u: %s\n", i, err);
	return NULL;
}

/* Holds name for hold_ms, logging validity before each fenced write. */
static int hold_and_write(struct keel_lock_client *lc, FILE *lg, const char *name,
			  const char *res, uint64_t tok, unsigned hold_ms)
{
	uint64_t end = now_ns() + (uint64_t)hold_ms * 1000000;
	while (now_ns() < end) {
		uint64_t t = now_ns();
		if (!keel_lock_held(lc, name, strlen(name), NULL))
			return KEEL_ESTALE;
		fprintf(lg, "V %" PRIu64 " %" PRIu64 "\n", tok, t);
		if (fenced_write(res, tok) != 0) {
			fprintf(lg, "X %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
			return KEEL_ESTALE;
		}
		if (keel_lock_client_poll(lc, 20) == KEEL_ESTALE)
			return KEEL_ESTALE;
	}
	return 0;
}

static int contender(unsigned i, unsigned seconds)
{
	char who[16], hold_path[400];
	snprintf(who, sizeof(who), "c%u", i);
	snprintf(hold_path, sizeof(hold_path), "%s/holding.%u", dir, i);
	FILE *lg = logf_open(who);
	struct keel_lock_client *lc = open_client(i, TTL_MS);
	if (!lg || !lc)
		return 1;
	uint64_t end = now_ns() + (uint64_t)seconds * 1000000000ull;
	while (now_ns() < end) {
		uint64_t tok;
		int rc = keel_lock_acquire(lc, lock1, strlen(lock1), KEEL_LOCK_EXCLUSIVE, 4000, 0, &tok);
		if (rc == KEEL_ETIMEOUT || rc == KEEL_EUNAVAIL || rc == KEEL_ESTALE) {
			(void)keel_lock_client_poll(lc, 10);
			continue; /* a leader change, or a long queue */
		}
		if (rc < 0) {
			fprintf(stderr, "lock-cluster: %s: acquire: %s\n", who, keel_lock_client_errmsg(lc));
			continue;
		}
		fprintf(lg, "G %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
		FILE *h = fopen(hold_path, "w");
		if (h)
			fclose(h);
		rc = hold_and_write(lc, lg, lock1, "res1", tok, 100);
		unlink(hold_path);
		if (rc == 0) {
			fprintf(lg, "R %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
			(void)keel_lock_release(lc, lock1, strlen(lock1), tok);
		} else {
			fprintf(lg, "L %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
		}
	}
	keel_lock_client_close(lc);
	fclose(lg);
	return 0;
}

/* P of phase 2: exit 0 when told of the loss and its stale write refused. */
static int paused_holder(void)
{
	FILE *lg = logf_open("p");
	struct keel_lock_client *lc = open_client(0, 1000);
	if (!lg || !lc)
		return 1;
	uint64_t tok;
	if (keel_lock_acquire(lc, lock2, strlen(lock2), KEEL_LOCK_EXCLUSIVE, 5000, 0, &tok) < 0) {
		fprintf(stderr, "lock-cluster: P: acquire: %s\n", keel_lock_client_errmsg(lc));
		return 1;
	}
	fprintf(lg, "G %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
	char ready[400];
	snprintf(ready, sizeof(ready), "%s/p.ready", dir);
	FILE *r = fopen(ready, "w");
	if (r)
		fclose(r);
	bool told = false;
	for (int i = 0; i < 1000 && !told; i++) {
		uint64_t t = now_ns();
		if (!keel_lock_held(lc, lock2, strlen(lock2), NULL)) {
			told = true;
			break;
		}
		fprintf(lg, "V %" PRIu64 " %" PRIu64 "\n", tok, t);
		if (fenced_write("res2", tok) != 0) {
			fprintf(stderr, "lock-cluster: P: a write refused while it held the lock\n");
			return 1;
		}
		if (keel_lock_client_poll(lc, 20) == KEEL_ESTALE)
			told = true;
	}
	fprintf(lg, "L %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
	if (!told) {
		fprintf(stderr, "lock-cluster: P: never told it lost the lock\n");
		return 1;
	}
	/* the write a paused process had in flight: the resource refuses it */
	int rc = fenced_write("res2", tok);
	printf("lock-cluster: P told it lost the lock (token %" PRIu64 "): %s; its fenced write: %s\n",
	       tok, keel_lock_client_errmsg(lc), rc == KEEL_ESTALE ? "refused" : "ACCEPTED");
	int rr = keel_lock_release(lc, lock2, strlen(lock2), tok);
	keel_lock_client_close(lc);
	fclose(lg);
	return rc == KEEL_ESTALE && rr == KEEL_ESTALE ? 0 : 1;
}

/* Q of phase 2: waits for the lock, writes with its token, holds 1.5 s. */
static int second_holder(void)
{
	FILE *lg = logf_open("q");
	struct keel_lock_client *lc = open_client(1, 2000);
	if (!lg || !lc)
		return 1;
	uint64_t tok;
	if (keel_lock_acquire(lc, lock2, strlen(lock2), KEEL_LOCK_EXCLUSIVE, 15000, 0, &tok) < 0) {
		fprintf(stderr, "lock-cluster: Q: acquire: %s\n", keel_lock_client_errmsg(lc));
		return 1;
	}
	fprintf(lg, "G %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
	int rc = hold_and_write(lc, lg, lock2, "res2", tok, 1500);
	fprintf(lg, "R %" PRIu64 " %" PRIu64 "\n", tok, now_ns());
	(void)keel_lock_release(lc, lock2, strlen(lock2), tok);
	keel_lock_client_close(lc);
	fclose(lg);
	return rc == 0 ? 0 : 1;
}

/* ---- checking the logs --------------------------------------------------------- */

struct interval {
	uint64_t token, start, end;
	char who[8];
};

static int iv_cmp(const void *a, const void *b)
{
	const struct interval *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Loads every grant of the logs named (NULL-terminated) as intervals
 * [grant, last time valid]; checks them. Returns the grant count, or -1. */
static int check(const char *lock, const char *const *who, uint64_t *grant_after, uint64_t after)
{
	struct interval *iv = NULL;
	size_t n = 0, cap = 0;
	for (; *who; who++) {
		char path[400];
		snprintf(path, sizeof(path), "%s/log.%s", dir, *who);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		char kind;
		uint64_t tok, t;
		while (fscanf(f, " %c %" SCNu64 " %" SCNu64, &kind, &tok, &t) == 3) {
			if (kind == 'G') {
				if (n == cap) {
					cap = cap ? cap * 2 : 256;
					iv = realloc(iv, cap * sizeof(*iv));
				}
				iv[n] = (struct interval){tok, t, t};
				snprintf(iv[n].who, sizeof(iv[n].who), "%s", *who);
				n++;
			} else if (kind == 'V' && n && iv[n - 1].token == tok) {
				iv[n - 1].end = t;
			}
		}
		fclose(f);
	}
	qsort(iv, n, sizeof(*iv), iv_cmp);
	int bad = 0;
	for (size_t i = 1; i < n; i++) {
		if (iv[i].token <= iv[i - 1].token) {
			printf("lock-cluster: %s: token %" PRIu64 " (%s) granted after %" PRIu64 " (%s)\n",
			       lock, iv[i].token, iv[i].who, iv[i - 1].token, iv[i - 1].who);
			bad = 1;
		}
		for (size_t j = 0; j < i; j++) {
			if (iv[j].end >= iv[i].start && iv[j].token != iv[i].token) {
				printf("lock-cluster: %s: DOUBLE GRANT: %s held token %" PRIu64
				       " until %.3f s while %s got %" PRIu64 " at %.3f s\n",
				       lock, iv[j].who, iv[j].token, iv[j].end / 1e9, iv[i].who,
				       iv[i].token, iv[i].start / 1e9);
				bad = 1;
			}
		}
	}
	if (grant_after) {
		*grant_after = 0;
		for (size_t i = 0; i < n; i++)
			if (iv[i].start > after && (!*grant_after || iv[i].start < *grant_after))
				*grant_after = iv[i].start;
	}
	free(iv);
	return bad ? -1 : (int)n;
}

static void find_leader(void *arg, const struct keel_client_group_status *st)
{
	uint32_t *want = arg; /* [0] group in, [1] leader out */
	if (st->status == 0 && st->group == want[0] && st->leader)
		want[1] = st->leader;
}

static uint32_t leader_of(uint32_t group)
{
	struct keel_client_config cc = {.endpoints = endpoints, .token = token[0] ? token : NULL,
					.timeout_ms = 3000};
	struct keel_client *c;
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, &c, err) < 0)
		return 0;
	uint32_t want[2] = {group, 0};
	keel_client_status(c, find_leader, want);
	keel_client_close(c);
	return want[1];
}

static pid_t pid_file(const char *name)
{
	char path[400], b[32];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return read_file(path, b, sizeof(b)) > 0 ? (pid_t)atoi(b) : 0;
}

static pid_t start(int (*fn)(unsigned, unsigned), unsigned a, unsigned b)
{
	fflush(stdout);
	pid_t p = fork();
	if (p == 0) {
		int st = fn(a, b);
		fflush(stdout);
		_exit(st);
	}
	return p;
}

static int p_main(unsigned a, unsigned b)
{
	(void)a;
	(void)b;
	return paused_holder();
}

static int q_main(unsigned a, unsigned b)
{
	(void)a;
	(void)b;
	return second_holder();
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: lock-cluster KEEL_BINARY [CLIENTS] [PHASE1_SECONDS]\n");
		return 2;
	}
	keel = argv[1];
	unsigned nclients = argc > 2 ? (unsigned)atoi(argv[2]) : 6;
	unsigned phase1 = argc > 3 ? (unsigned)atoi(argv[3]) : 10;
	if (nclients < 2 || nclients > MAX_CLIENTS || phase1 < 8) {
		fprintf(stderr, "lock-cluster: CLIENTS 2..%u, PHASE1_SECONDS >= 8\n", MAX_CLIENTS);
		return 2;
	}
	snprintf(dir, sizeof(dir), "/tmp/keel-lock-cluster.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 77;
	}
	strcat(dir, "/c");
	if (run("'%s' cluster up --nodes 3 --shards 2 --groups %u --dir '%s' >/dev/null 2>&1", keel,
		GROUPS, dir)) {
		fprintf(stderr, "lock-cluster: keel cluster up failed here: skipped\n");
		return 77;
	}
	char path[400];
	snprintf(path, sizeof(path), "%s/endpoints", dir);
	read_file(path, endpoints, sizeof(endpoints));
	snprintf(path, sizeof(path), "%s/client-token", dir);
	read_file(path, token, sizeof(token));
	int rc = 0;

	/* ---- phase 1 ---- */
	pid_t cl[MAX_CLIENTS];
	for (unsigned i = 0; i < nclients; i++)
		cl[i] = start(contender, i, phase1);
	sleep(3);
	uint32_t g = keel_service_group_of(lock1, strlen(lock1), GROUPS);
	uint32_t leader = leader_of(g);
	char name[32];
	snprintf(name, sizeof(name), "n%u.pid", leader);
	pid_t lpid = leader ? pid_file(name) : 0;
	/* a client that holds the lock right now */
	int victim = -1;
	for (int tries = 0; tries < 200 && victim < 0; tries++) {
		for (unsigned i = 0; i < nclients && victim < 0; i++) {
			snprintf(path, sizeof(path), "%s/holding.%u", dir, i);
			if (access(path, F_OK) == 0)
				victim = (int)i;
		}
		if (victim < 0)
			usleep(5000);
	}
	uint64_t t_kill = now_ns();
	if (lpid > 0)
		kill(lpid, SIGKILL);
	if (victim >= 0)
		kill(cl[victim], SIGKILL);
	printf("lock-cluster: SIGKILL node %u (leader of group %u) and client c%d (holding)\n",
	       leader, g, victim);
	if (!lpid || victim < 0) {
		printf("lock-cluster: no leader (%u) or no holder found to kill\n", leader);
		rc = 1;
	}
	for (unsigned i = 0; i < nclients; i++) {
		int st;
		waitpid(cl[i], &st, 0);
		if ((int)i != victim && (!WIFEXITED(st) || WEXITSTATUS(st))) {
			printf("lock-cluster: client c%u failed\n", i);
			rc = 1;
		}
	}
	const char *names1[MAX_CLIENTS + 1];
	char nm[MAX_CLIENTS][8];
	for (unsigned i = 0; i < nclients; i++) {
		snprintf(nm[i], sizeof(nm[i]), "c%u", i);
		names1[i] = nm[i];
	}
	names1[nclients] = NULL;
	uint64_t next_grant = 0;
	int grants = check(lock1, names1, &next_grant, t_kill);
	double gap = next_grant ? (double)(next_grant - t_kill) / 1e9 : -1;
	printf("lock-cluster: phase 1: %d grants to %u clients; after the kills the next grant came "
	       "in %.2f s (TTL %.1f s)\n",
	       grants, nclients, gap, TTL_MS / 1000.0);
	if (grants < 10)
		rc = 1;
	/* the dead client's lease plus an election and the new leader's wait
	 * of one TTL: within 3 TTLs and 4 s of elections under sanitizers */
	if (!next_grant || gap > 3.0 * TTL_MS / 1000.0 + 4.0) {
		printf("lock-cluster: the dead client's lock was not released in time\n");
		rc = 1;
	}
	/* and not before its TTL: its last keepalive went out at most TTL/3
	 * before the kill, and the session lives TTL past that (the new
	 * leader even waits a whole TTL) */
	if (next_grant && victim >= 0 && gap < 2.0 * TTL_MS / 3000.0 - 0.05) {
		printf("lock-cluster: the dead client's lock went after %.2f s, before its TTL\n", gap);
		rc = 1;
	}

	/* ---- phase 2 ---- */
	pid_t p = start(p_main, 0, 0);
	snprintf(path, sizeof(path), "%s/p.ready", dir);
	for (int i = 0; i < 400 && access(path, F_OK) != 0; i++)
		usleep(25000);
	usleep(300000);
	kill(p, SIGSTOP);
	pid_t q = start(q_main, 0, 0);
	sleep(3);
	kill(p, SIGCONT);
	int pst, qst;
	waitpid(p, &pst, 0);
	waitpid(q, &qst, 0);
	if (!WIFEXITED(pst) || WEXITSTATUS(pst)) {
		printf("lock-cluster: P was not told of its loss, or its stale write was accepted\n");
		rc = 1;
	}
	if (!WIFEXITED(qst) || WEXITSTATUS(qst)) {
		printf("lock-cluster: Q did not get and keep the lock\n");
		rc = 1;
	}
	const char *names2[] = {"p", "q", NULL};
	int g2 = check(lock2, names2, NULL, 0);
	printf("lock-cluster: phase 2: %d grants (P, then Q while P was stopped)\n", g2);
	if (g2 != 2)
		rc = 1;

	run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel, dir);
	if (rc == 0) {
		char *slash = strrchr(dir, '/');
		*slash = '\0';
		run("rm -rf '%s'", dir);
		printf("lock-cluster: passed\n");
	} else {
		printf("lock-cluster: FAILED; kept %s\n", dir);
	}
	return rc;
}
