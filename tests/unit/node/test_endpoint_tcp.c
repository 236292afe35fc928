/* The endpoint's peer events (keel/node.h) on the TCP backend, in one
 * process: two nodes of one shard each on 127.0.0.1, node 2 dialling node 1
 * (the higher id dials). A dial that fails before its connection comes up
 * is reported through peer_down with its reason (refused while node 1 is
 * not running; KEEL_EAUTH when the secrets differ), the endpoint keeps
 * redialling with backoff, and the connection comes up on both sides once
 * node 1 runs with the right secret. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/node.h"

struct side {
	struct keel_node_config cfg;
	struct keel_node *node;
	atomic_int up, down, last_reason, first_reason, peer;
};

static char dir[64];
static unsigned base;

static void write_file(const char *name, const char *text)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/keel-ep-unit-XXXXXX");
	cr_assert(mkdtemp(dir));
	write_file("secret", "unit-test-cluster-secret-0123456789");
	write_file("other", "another-cluster-secret-9876543210xx");
	/* Below the ephemeral range (32768+): Linux hands connect() source
	 * ports out in order, so after a few thousand dials they reach the
	 * range tests listen in and an established connection can hold the
	 * port a node is about to bind (EADDRINUSE, seen in suite 'epoll'). */
	base = 18000 + (unsigned)(getpid() % 100) * 20;
}

static void teardown(void)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/other", dir);
	unlink(p);
	rmdir(dir);
}

static void load(struct side *s, unsigned id, const char *secret)
{
	char text[512], err[KEEL_ERRMSG_LEN];
	snprintf(text, sizeof(text),
		 "[node]\nid = %u\ncluster = 5\nlisten = 127.0.0.1:%u\nshards = 1\n"
		 "secret_file = %s\nhandshake_timeout_ms = 1000\n[peers]\n1 = 127.0.0.1:%u\n"
		 "2 = 127.0.0.1:%u\n",
		 id, base + id * 4, secret, base + 4, base + 8);
	cr_assert_eq(keel_node_config_parse(text, "unit.ini", dir, &s->cfg, err), 0, "%s", err);
}

static void on_up(void *arg, struct keel_endpoint *ep, uint32_t node)
{
	struct side *s = arg;
	(void)ep;
	atomic_store(&s->peer, (int)node);
	atomic_fetch_add(&s->up, 1);
}

static void on_down(void *arg, struct keel_endpoint *ep, uint32_t node, int reason)
{
	struct side *s = arg;
	(void)ep;
	(void)node;
	int zero = 0;
	atomic_compare_exchange_strong(&s->first_reason, &zero, reason);
	atomic_store(&s->last_reason, reason);
	atomic_fetch_add(&s->down, 1);
}

static int start_hook(void *arg, struct keel_node *n, struct keel_endpoint *ep, char *err)
{
	(void)n;
	(void)err;
	struct keel_endpoint_listener l = {.peer_up = on_up, .peer_down = on_down, .arg = arg};
	return keel_endpoint_listen(ep, &l) < 0 ? -ENOMEM : 0;
}

static void start(struct side *s)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_node_options o = {.overcommit = true};
	cr_assert_eq(keel_node_create(&s->cfg, &o, &s->node, err), 0, "%s", err);
	struct keel_node_hooks h = {.start = start_hook, .arg = s};
	cr_assert_eq(keel_node_start(s->node, &h, err), 0, "%s", err);
}

static void stop(struct side *s)
{
	if (!s->node)
		return;
	keel_node_stop(s->node);
	keel_node_wait(s->node);
	keel_node_destroy(s->node);
	s->node = NULL;
}

/* Polls *v >= want for up to ms. */
static bool wait_for(atomic_int *v, int want, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (atomic_load(v) >= want)
			return true;
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	}
	return atomic_load(v) >= want;
}

TestSuite(endpoint_tcp, .init = setup, .fini = teardown);

Test(endpoint_tcp, failed_dial_is_reported_then_redialled)
{
	static struct side a, b;
	load(&a, 1, "secret");
	load(&b, 2, "secret");
	start(&b); /* node 1 is not running: node 2's dials are refused */
	cr_assert(wait_for(&b.down, 2, 5000), "no peer_down for refused dials (%d)",
		  atomic_load(&b.down));
	cr_expect_eq(atomic_load(&b.first_reason), -ECONNREFUSED, "reason %d",
		     atomic_load(&b.first_reason));
	cr_expect_eq(atomic_load(&b.up), 0);
	start(&a); /* the next redial (at most 1 s of backoff) gets through */
	cr_assert(wait_for(&b.up, 1, 5000), "node 2 never connected after node 1 started");
	cr_assert(wait_for(&a.up, 1, 5000), "node 1 never saw node 2");
	cr_expect_eq(atomic_load(&b.peer), 1);
	cr_expect_eq(atomic_load(&a.peer), 2);
	/* node 1 goes away: the up connection breaks, reported once more */
	int downs = atomic_load(&b.down);
	stop(&a);
	cr_assert(wait_for(&b.down, downs + 1, 5000), "no peer_down when node 1 stopped");
	stop(&b);
	keel_node_config_free(&a.cfg);
	keel_node_config_free(&b.cfg);
}

Test(endpoint_tcp, wrong_secret_is_eauth_in_peer_down)
{
	static struct side a, b;
	load(&a, 1, "secret");
	load(&b, 2, "other");
	start(&a);
	start(&b);
	cr_assert(wait_for(&b.down, 1, 5000), "no peer_down for the refused handshake");
	cr_expect_eq(atomic_load(&b.first_reason), KEEL_EAUTH, "reason %d (%s)",
		     atomic_load(&b.first_reason), keel_strerror(atomic_load(&b.first_reason)));
	cr_expect_eq(atomic_load(&b.up), 0);
	cr_expect_eq(atomic_load(&a.up), 0);
	stop(&b);
	stop(&a);
	keel_node_config_free(&a.cfg);
	keel_node_config_free(&b.cfg);
}
