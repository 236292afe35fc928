/*
 * tests/integration/kv_watch.c — a KV watch over the client port misses no
 * change and repeats none while the node it is on is SIGKILLed.
 *
 * A local cluster (`keel cluster up`: 3 nodes, 2 shards, 4 groups). A writer
 * thread puts w/1, w/2, ... (value: the number) one after another through
 * its own keel_client; a watcher thread watches the prefix "w/" from
 * revision 1 (keel_client_watch_*), connected first to the node that leads
 * group 0. The main thread SIGKILLs the node the watch is on, twice (the
 * first time the leader of group 0), restarting each a second later.
 *
 * Checks, per group: the events' revisions are 1, 2, 3, ... with no gap
 * (nothing but w/ keys is written, so a gap is a missed change) and no
 * repeat; every event's value is its key's number; every acknowledged put
 * is seen exactly once, a put without an answer (it may have been applied)
 * at most once; the watch moved to another node after each kill.
 * Exit 77 when the cluster cannot be started here.
 *
 * usage: kv-watch KEEL_BINARY [SECONDS]
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/base.h"
#include "keel/client.h"
#include "kv_util.h"

#define MAX_PUTS 200000
#define GROUPS 4

static const char *keel;
static char dir[256], endpoints[1024], token[128], watch_endpoints[1024];
static atomic_bool stop_writing;
static atomic_int stop_watching; /* 1: drain what was acknowledged, 2: stop now */
static atomic_uint puts_done;                    /* w/1 .. w/puts_done were tried */
static _Atomic unsigned char put_state[MAX_PUTS + 1]; /* 1 acknowledged, 2 no answer */
static atomic_uint watch_node;                   /* the node the watch is on */
static atomic_uint moves;                        /* times the watch changed node */
static unsigned char seen[MAX_PUTS + 1];
static uint64_t last_rev[GROUPS];
static unsigned events, errors;
static char first_error[256];

static void error(const char *fmt, ...) KEEL_PRINTF(1, 2);
static void error(const char *fmt, ...)
{
	if (!errors++) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(first_error, sizeof(first_error), fmt, ap);
		va_end(ap);
	}
}

static void *writer_main(void *p)
{
	(void)p;
	struct keel_client_config cc = {.endpoints = endpoints, .token = token, .timeout_ms = 4000};
	struct keel_client *c;
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, &c, err) < 0) {
		fprintf(stderr, "kv-watch: writer: %s\n", err);
		return NULL;
	}
	for (unsigned i = 1; i <= MAX_PUTS && !atomic_load(&stop_writing); i++) {
		char k[32], v[32];
		snprintf(k, sizeof(k), "w/%u", i);
		int vl = snprintf(v, sizeof(v), "%u", i);
		int rc = keel_client_put(c, k, strlen(k), v, (size_t)vl, NULL);
		atomic_store(&put_state[i], rc == 0 ? 1 : 2);
		atomic_store(&puts_done, i);
	}
	keel_client_close(c);
	return NULL;
}

/* Every acknowledged put has been seen (the watcher may stop). */
static bool caught_up(void)
{
	unsigned n = atomic_load(&puts_done);
	for (unsigned i = 1; i <= n; i++)
		if (atomic_load(&put_state[i]) == 1 && !seen[i])
			return false;
	return true;
}

static void *watcher_main(void *p)
{
	(void)p;
	struct keel_client_config cc = {.endpoints = watch_endpoints, .token = token,
					.timeout_ms = 4000};
	struct keel_client *c;
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, &c, err) < 0) {
		error("watcher: %s", err);
		return NULL;
	}
	struct keel_client_watch *w;
	if (keel_client_watch_open(c, "w/", 2, true, 1, &w) < 0) {
		error("watch open: %s", keel_client_errmsg(c));
		keel_client_close(c);
		return NULL;
	}
	while (!atomic_load(&stop_watching) || !caught_up()) {
		if (atomic_load(&stop_watching) == 2)
			break;
		struct keel_client_event ev;
		int r = keel_client_watch_next(w, 200, &ev);
		if (r < 0) {
			error("watch ended: %s", keel_client_errmsg(c));
			break;
		}
		if (r == 0)
			continue;
		events++;
		if (atomic_exchange(&watch_node, ev.node) != ev.node)
			atomic_fetch_add(&moves, 1);
		if (ev.group >= GROUPS) {
			error("an event of group %u", ev.group);
			continue;
		}
		if (ev.rev != last_rev[ev.group] + 1)
			error("group %u: revision %" PRIu64 " after %" PRIu64 " (%s)", ev.group, ev.rev,
			      last_rev[ev.group], ev.rev <= last_rev[ev.group] ? "repeated" : "missed changes");
		last_rev[ev.group] = ev.rev;
		char k[32];
		snprintf(k, sizeof(k), "%.*s", (int)(ev.key_len < 31 ? ev.key_len : 31), (const char *)ev.key);
		unsigned i = (unsigned)strtoul(k + 2, NULL, 10);
		if (ev.deleted || i == 0 || i > MAX_PUTS || strtoul(ev.value, NULL, 10) != i) {
			error("a strange event: %s = %.*s", k, (int)ev.value_len, (const char *)ev.value);
			continue;
		}
		if (seen[i]++)
			error("%s seen twice (revisions per group repeated, or a put applied twice)", k);
	}
	keel_client_watch_close(w);
	keel_client_close(c);
	return NULL;
}

struct lead {
	uint32_t leader0;
	unsigned led[4]; /* groups each node leads */
};

static void status_row(void *arg, const struct keel_client_group_status *st)
{
	struct lead *l = arg;
	if (st->status || st->group >= GROUPS || st->leader < 1 || st->leader > 3 ||
	    st->node != st->leader)
		return;
	l->led[st->leader]++;
	if (st->group == 0)
		l->leader0 = st->leader;
}

static struct lead leaders(void)
{
	struct lead l = {0};
	struct keel_client_config cc = {.endpoints = endpoints, .token = token, .timeout_ms = 2000};
	struct keel_client *c;
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, &c, err) == 0) {
		keel_client_status(c, status_row, &l);
		keel_client_close(c);
	}
	return l;
}

static void kill_node(unsigned n, const struct lead *l)
{
	char path[400], pid[32];
	snprintf(path, sizeof(path), "%s/n%u.pid", dir, n);
	if (read_file(path, pid, sizeof(pid)) <= 0)
		return;
	kill((pid_t)atoi(pid), SIGKILL);
	fprintf(stderr, "kv-watch: SIGKILL node %u (the watch's node; it led %u of %u groups)\n", n,
		l->led[n], GROUPS);
	sleep(1);
	if (run("'%s' cluster restart --node %u --dir '%s' >/dev/null 2>&1", keel, n, dir))
		fprintf(stderr, "kv-watch: restart of node %u failed\n", n);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: kv-watch KEEL_BINARY [SECONDS]\n");
		return 2;
	}
	keel = argv[1];
	unsigned seconds = argc > 2 ? (unsigned)atoi(argv[2]) : 10;
	if (seconds < 8) {
		fprintf(stderr, "kv-watch: SECONDS >= 8\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "/tmp/keel-kv-watch.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 77;
	}
	strcat(dir, "/c");
	if (run("'%s' cluster up --nodes 3 --shards 2 --groups %d --dir '%s' >/dev/null 2>&1", keel,
		GROUPS, dir)) {
		fprintf(stderr, "kv-watch: keel cluster up failed here: skipped\n");
		return 77;
	}
	char path[400];
	snprintf(path, sizeof(path), "%s/endpoints", dir);
	read_file(path, endpoints, sizeof(endpoints));
	snprintf(path, sizeof(path), "%s/client-token", dir);
	read_file(path, token, sizeof(token));
	/* the watch connects to the first endpoint: group 0's leader's */
	struct lead l = leaders();
	char ep[3][300] = {{0}};
	sscanf(endpoints, "%299[^,],%299[^,],%299s", ep[0], ep[1], ep[2]);
	unsigned first = l.leader0 ? l.leader0 : 1;
	snprintf(watch_endpoints, sizeof(watch_endpoints), "%s,%s,%s", ep[first - 1],
		 ep[first % 3], ep[(first + 1) % 3]);

	pthread_t wr, wa;
	pthread_create(&wa, NULL, watcher_main, NULL);
	pthread_create(&wr, NULL, writer_main, NULL);
	uint64_t end = now_ns() + (uint64_t)seconds * 1000000000ull;
	unsigned kills = 0;
	sleep(2);
	for (int k = 0; k < 2; k++) {
		unsigned n = atomic_load(&watch_node);
		if (!n)
			continue;
		l = leaders();
		unsigned before = atomic_load(&moves);
		kill_node(n, &l);
		kills++;
		/* the next kill once the watch has moved and the writes go on */
		for (int i = 0; i < 100 && atomic_load(&moves) == before; i++)
			usleep(50000);
		sleep(1);
	}
	while (now_ns() < end)
		usleep(100000);
	atomic_store(&stop_writing, true);
	pthread_join(wr, NULL);
	atomic_store(&stop_watching, 1);
	/* the watcher drains what was acknowledged, for at most 20 s */
	for (int i = 0; i < 200 && !caught_up(); i++)
		usleep(100000);
	atomic_store(&stop_watching, 2);
	pthread_join(wa, NULL);
	run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel, dir);

	unsigned n = atomic_load(&puts_done), acked = 0, unknown = 0, missed = 0, extra = 0;
	for (unsigned i = 1; i <= n; i++) {
		unsigned char st = atomic_load(&put_state[i]);
		acked += st == 1;
		unknown += st == 2;
		if (st == 1 && !seen[i])
			missed++;
		if (st == 2 && seen[i])
			extra++;
	}
	for (unsigned i = n + 1; i <= MAX_PUTS; i++)
		if (seen[i])
			error("w/%u seen but never written", i);
	printf("kv-watch: %u puts (%u acknowledged, %u without an answer, %u of those applied), "
	       "%u events, %u kills, the watch moved %u times; per group last revisions %" PRIu64
	       " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
	       n, acked, unknown, extra, events, kills, atomic_load(&moves) - 1, last_rev[0],
	       last_rev[1], last_rev[2], last_rev[3]);
	int rc = 0;
	if (missed) {
		printf("kv-watch: %u acknowledged puts never seen by the watch\n", missed);
		rc = 1;
	}
	if (errors) {
		printf("kv-watch: %u errors; the first: %s\n", errors, first_error);
		rc = 1;
	}
	if (kills < 2 || atomic_load(&moves) < 1 + kills) {
		printf("kv-watch: the watch did not move after each kill\n");
		rc = 1;
	}
	if (acked < 50) {
		printf("kv-watch: only %u puts acknowledged\n", acked);
		rc = 1;
	}
	if (rc == 0) {
		char *slash = strrchr(dir, '/');
		*slash = '\0';
		run("rm -rf '%s'", dir);
	} else {
		printf("kv-watch: kept %s\n", dir);
	}
	return rc;
}
