/* The node's services (include/keel/services.h) on real replicated logs:
 * three keel_node in one process, each one shard with a real TCP endpoint
 * on 127.0.0.1 and real WALs, two groups. KV writes go to the key's group
 * leader and answer from the state machine; linearizable reads on a
 * follower see them; CAS, delete and range behave; a retried (client,
 * sequence) is answered, not applied again, also after every node
 * restarted from its WAL; writes on a follower are refused with the
 * leader's hint; a watch on a follower receives the changes in order.
 * With each node's client port started: a watch through the client
 * library (keel/client.h) resumes on another node when its node stops,
 * without a change missed or repeated, and a watch from a revision older
 * than every node's history is refused as compacted. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/client.h"
#include "keel/config.h"
#include "keel/node.h"
#include "keel/proto.h"
#include "keel/rlog.h"
#include "keel/runtime.h"
#include "keel/services.h"

#define GROUPS 2

struct node {
	unsigned id;
	struct keel_node_config cfg;
	struct keel_rlog_settings ls;
	struct keel_node *node;
	struct keel_runtime *rt;
	struct keel_services *s;
	struct keel_client_port *port;
	atomic_int start_rc;
	atomic_uint leader[GROUPS]; /* as this node knows it */
	atomic_int self_leads[GROUPS];
	/* watch events seen on this node */
	atomic_int events;
	char event_log[1024];
};

static char dir[64];
static unsigned base;
static struct node nodes[4];
/* set by a test before it starts the nodes */
static bool with_port;           /* each node's client port on base + 4 * id + 2 */
static uint32_t watch_history;   /* the KV's; 0: its default */

static void on_leader(void *arg, uint32_t group, uint32_t leader, uint64_t epoch, bool self)
{
	struct node *n = arg;
	(void)epoch;
	if (group < GROUPS) {
		atomic_store(&n->leader[group], leader);
		atomic_store(&n->self_leads[group], self);
	}
}

static int init(void *arg, struct keel_node *kn, struct keel_endpoint *ep, char *errmsg)
{
	struct node *n = arg;
	(void)kn;
	int rc = keel_rlog_settings_load(&n->cfg, &n->ls, errmsg);
	if (rc == 0) {
		struct keel_services_config sc = {.ep = ep, .log = &n->ls, .groups = GROUPS,
						  .kv = {.watch_history = watch_history},
						  .on_leader = on_leader, .arg = n};
		rc = keel_services_start(&sc, &n->s, errmsg);
	}
	if (rc == 0 && with_port) {
		char listen[32];
		snprintf(listen, sizeof(listen), "127.0.0.1:%u", base + 4 * n->id + 2);
		struct keel_client_port_config pc = {.node = kn, .listen = listen, .groups = GROUPS};
		rc = keel_client_port_start(&pc, ep, &n->port, errmsg);
	}
	if (rc < 0)
		fprintf(stderr, "node %u: %s\n", n->id, errmsg);
	atomic_store(&n->start_rc, rc < 0 ? rc : 1);
	return 0; /* the test asserts on start_rc */
}

static void fini(void *arg, struct keel_node *kn, struct keel_endpoint *ep)
{
	struct node *n = arg;
	(void)kn;
	(void)ep;
	keel_client_port_stop(n->port);
	n->port = NULL;
	keel_services_stop(n->s);
	n->s = NULL;
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/keel-services-unit-XXXXXX");
	cr_assert(mkdtemp(dir));
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", dir);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "unit-test-cluster-secret-0123456789", 35), 35);
	close(fd);
	/* below the ephemeral range, away from test_group's ports */
	base = 12000 + (unsigned)(getpid() % 400) * 20;
	memset(nodes, 0, sizeof(nodes));
	with_port = false;
	watch_history = 0;
	for (unsigned id = 1; id <= 3; id++) {
		struct node *n = &nodes[id];
		char text[768], err[KEEL_ERRMSG_LEN];
		snprintf(text, sizeof(text),
			 "[node]\nid = %u\ncluster = 6\nlisten = 127.0.0.1:%u\nshards = 1\n"
			 "secret_file = secret\nhandshake_timeout_ms = 1000\n"
			 "[peers]\n1 = 127.0.0.1:%u\n2 = 127.0.0.1:%u\n3 = 127.0.0.1:%u\n"
			 "[log]\ngroups = %u\ndir = data-n%u\ntick_ms = 30\nsegment_size = 256K\n"
			 "snapshot_every = 8\nsnapshot_keep = 2\n",
			 id, base + id * 4, base + 4, base + 8, base + 12, GROUPS, id);
		n->id = id;
		cr_assert_eq(keel_node_config_parse(text, "unit.ini", dir, &n->cfg, err), 0, "%s", err);
	}
}

static void teardown(void)
{
	for (unsigned id = 1; id <= 3; id++)
		keel_node_config_free(&nodes[id].cfg);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static void start(struct node *n)
{
	for (int g = 0; g < GROUPS; g++) {
		atomic_store(&n->leader[g], 0);
		atomic_store(&n->self_leads[g], 0);
	}
	atomic_store(&n->start_rc, 0);
	static const struct keel_node_options o = {.synthetic_topology = "pack:1 core:1 pu:1"};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_node_create(&n->cfg, &o, &n->node, err), 0, "%s", err);
	const struct keel_node_hooks h = {.start = init, .stop = fini, .arg = n};
	cr_assert_eq(keel_node_start(n->node, &h, err), 0, "%s", err);
	n->rt = keel_node_runtime(n->node);
	cr_assert_eq(atomic_load(&n->start_rc), 1, "node %u: services did not start", n->id);
}

static void stop(struct node *n)
{
	keel_node_stop(n->node);
	keel_node_wait(n->node);
	keel_node_destroy(n->node);
	n->node = NULL;
	n->rt = NULL;
}

/* The node all three agree leads group g; 0 after 20 s. */
static unsigned wait_leader(uint32_t g)
{
	for (int i = 0; i < 2000; i++) {
		unsigned lead = 0;
		for (unsigned id = 1; id <= 3; id++)
			if (atomic_load(&nodes[id].self_leads[g]))
				lead = id;
		bool agree = lead != 0;
		for (unsigned id = 1; id <= 3 && agree; id++)
			agree = atomic_load(&nodes[id].leader[g]) == lead;
		if (agree)
			return lead;
		usleep(10000);
	}
	return 0;
}

/* ---- calls made on a node's shard from the test thread ------------------ */

enum op { OP_WRITE, OP_GET, OP_RANGE, OP_WATCH };

struct call {
	struct node *n;
	enum op op;
	uint32_t group;
	struct keel_kv_cmd cmd;
	char key[64];
	bool linearizable;
	atomic_int done;
	int status;
	struct keel_kv_result res;
	char value[256];
	bool found;
	int nkeys;
	char keys[256];
};

static void write_done(void *arg, int status, const struct keel_kv_result *res)
{
	struct call *c = arg;
	c->status = status;
	if (res)
		c->res = *res;
	atomic_store(&c->done, 1);
}

static int collect(void *arg, const struct keel_kv_kv *kv)
{
	struct call *c = arg;
	size_t l = strlen(c->keys);
	snprintf(c->keys + l, sizeof(c->keys) - l, "%s%.*s=%.*s", l ? "," : "", (int)kv->key_len,
		 (const char *)kv->key, (int)kv->value_len, (const char *)kv->value);
	c->nkeys++;
	return 0;
}

static void read_done(void *arg, int status, const struct keel_kv *kv)
{
	struct call *c = arg;
	c->status = status;
	if (status == 0 && c->op == OP_GET) {
		struct keel_kv_kv out;
		c->found = keel_kv_get(kv, c->key, strlen(c->key), &out) == 0;
		if (c->found)
			snprintf(c->value, sizeof(c->value), "%.*s", (int)out.value_len,
				 (const char *)out.value);
	} else if (status == 0) {
		keel_kv_range(kv, c->key, strlen(c->key), NULL, 0, 0, collect, c, NULL);
	}
	atomic_store(&c->done, 1);
}

static void on_event(void *arg, const struct keel_kv_event *ev)
{
	struct node *n = arg;
	size_t l = strlen(n->event_log);
	snprintf(n->event_log + l, sizeof(n->event_log) - l, "%s%s:%.*s", l ? "," : "",
		 ev->deleted ? "del" : "put", (int)ev->key_len, (const char *)ev->key);
	atomic_fetch_add(&n->events, 1);
}

static void run_call(struct keel_shard *on, void *arg)
{
	(void)on;
	struct call *c = arg;
	int rc;
	switch (c->op) {
	case OP_WRITE:
		rc = keel_kv_write(c->n->s, c->group, &c->cmd, write_done, c);
		break;
	case OP_GET:
	case OP_RANGE:
		rc = keel_kv_read(c->n->s, c->group, c->linearizable, read_done, c);
		break;
	default: {
		uint64_t id;
		rc = keel_kv_watch(c->n->s, c->group, c->key, strlen(c->key), true, 0, on_event, c->n,
				   &id);
		if (rc == 0) {
			c->status = 0;
			atomic_store(&c->done, 1);
		}
		break;
	}
	}
	if (rc < 0) {
		c->status = rc;
		atomic_store(&c->done, 1);
	}
}

static void call(struct call *c)
{
	atomic_store(&c->done, 0);
	cr_assert_eq(keel_shard_post_external(keel_runtime_shard(c->n->rt, 0), run_call, c), 0);
	for (int i = 0; i < 1000 && !atomic_load(&c->done); i++)
		usleep(10000);
	cr_assert(atomic_load(&c->done), "call on node %u did not complete in 10 s", c->n->id);
}

static struct call put(struct node *n, const char *key, const char *value, uint64_t client,
		       uint64_t seq)
{
	struct call c = {.n = n, .op = OP_WRITE,
			 .group = keel_service_group_of(key, strlen(key), GROUPS)};
	snprintf(c.key, sizeof(c.key), "%s", key);
	snprintf(c.value, sizeof(c.value), "%s", value);
	c.cmd = (struct keel_kv_cmd){.op = KEEL_KV_PUT, .client = client, .seq = seq,
				     .key = (const uint8_t *)c.key, .key_len = (uint32_t)strlen(key),
				     .value = (const uint8_t *)c.value,
				     .value_len = (uint32_t)strlen(value)};
	call(&c);
	return c;
}

static struct call get(struct node *n, const char *key, bool linearizable)
{
	struct call c = {.n = n, .op = OP_GET, .linearizable = linearizable,
			 .group = keel_service_group_of(key, strlen(key), GROUPS)};
	snprintf(c.key, sizeof(c.key), "%s", key);
	call(&c);
	return c;
}

static unsigned leader_of(const char *key)
{
	unsigned l = wait_leader(keel_service_group_of(key, strlen(key), GROUPS));
	cr_assert_neq(l, 0, "no leader for %s's group", key);
	return l;
}

static unsigned follower_of(const char *key)
{
	return leader_of(key) % 3 + 1;
}

TestSuite(services, .init = setup, .fini = teardown, .timeout = 120);

Test(services, kv_writes_reads_cas_range_exactly_once)
{
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	const char *k = "alpha";
	struct node *L = &nodes[leader_of(k)], *F = &nodes[follower_of(k)];

	struct call c = put(L, k, "one", 77, 1);
	cr_assert_eq(c.status, 0, "%s", keel_strerror(c.status));
	cr_expect_eq(c.res.status, KEEL_KV_OK);
	cr_expect(!c.res.duplicate);
	uint64_t rev1 = c.res.rev;
	cr_expect_gt(rev1, 0);

	/* a follower's linearizable read sees it (read barrier via the leader) */
	c = get(F, k, true);
	cr_assert_eq(c.status, 0, "%s", keel_strerror(c.status));
	cr_expect(c.found);
	cr_expect_str_eq(c.value, "one");

	/* the same (client, seq) again: answered, not applied */
	c = put(L, k, "ignored", 77, 1);
	cr_assert_eq(c.status, 0);
	cr_expect(c.res.duplicate, "a retry must be answered from the client table");
	cr_expect_eq(c.res.rev, rev1);
	c = get(L, k, true);
	cr_expect_str_eq(c.value, "one");

	/* a write on a follower: refused, nothing applied */
	c = put(F, k, "no", 78, 1);
	cr_expect_eq(c.status, KEEL_ENOTLEADER, "%s", keel_strerror(c.status));

	/* CAS on the value: wrong expectation fails, the right one succeeds */
	struct call cas = {.n = L, .op = OP_WRITE, .group = keel_service_group_of(k, 5, GROUPS)};
	cas.cmd = (struct keel_kv_cmd){.op = KEEL_KV_CAS, .client = 77, .seq = 2,
				       .key = (const uint8_t *)k, .key_len = 5,
				       .value = (const uint8_t *)"two", .value_len = 3,
				       .cmp = KEEL_KV_CMP_VALUE,
				       .expect = (const uint8_t *)"zero", .expect_len = 4};
	call(&cas);
	cr_assert_eq(cas.status, 0);
	cr_expect_eq(cas.res.status, KEEL_KV_CAS_FAILED);
	cas.cmd.seq = 3;
	cas.cmd.expect = (const uint8_t *)"one";
	cas.cmd.expect_len = 3;
	call(&cas);
	cr_expect_eq(cas.res.status, KEEL_KV_OK);
	cr_expect_gt(cas.res.rev, rev1);
	c = get(F, k, true);
	cr_expect_str_eq(c.value, "two");

	/* delete, then delete again */
	struct call del = {.n = L, .op = OP_WRITE, .group = cas.group};
	del.cmd = (struct keel_kv_cmd){.op = KEEL_KV_DEL, .client = 77, .seq = 4,
				       .key = (const uint8_t *)k, .key_len = 5};
	call(&del);
	cr_expect_eq(del.res.status, KEEL_KV_OK);
	del.cmd.seq = 5;
	call(&del);
	cr_expect_eq(del.res.status, KEEL_KV_NOT_FOUND);
	c = get(F, k, true);
	cr_expect(!c.found);

	/* a range by prefix within one group */
	const char *keys[] = {"p/a", "p/b", "p/c", "q/a"};
	uint32_t gp = keel_service_group_of("p/a", 3, GROUPS);
	int in_group = 0;
	for (int i = 0; i < 4; i++) {
		struct node *l = &nodes[leader_of(keys[i])];
		c = put(l, keys[i], keys[i], 90, (uint64_t)i + 1);
		cr_assert_eq(c.status, 0);
		if (keel_service_group_of(keys[i], 3, GROUPS) == gp && keys[i][0] == 'p')
			in_group++;
	}
	struct call r = {.n = F, .op = OP_RANGE, .linearizable = true, .group = gp};
	snprintf(r.key, sizeof(r.key), "p/");
	call(&r);
	cr_assert_eq(r.status, 0);
	cr_expect_eq(r.nkeys, in_group, "range gave %s", r.keys);
	for (unsigned id = 1; id <= 3; id++)
		stop(&nodes[id]);
}

Test(services, state_and_client_table_survive_a_restart)
{
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	const char *k = "durable";
	/* enough writes that snapshots are taken (snapshot_every = 8) */
	for (uint64_t i = 1; i <= 20; i++) {
		char v[16];
		snprintf(v, sizeof(v), "v%llu", (unsigned long long)i);
		struct call c = put(&nodes[leader_of(k)], k, v, 5, i);
		cr_assert_eq(c.status, 0, "write %llu: %s", (unsigned long long)i,
			     keel_strerror(c.status));
	}
	for (unsigned id = 1; id <= 3; id++)
		stop(&nodes[id]);
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	struct call c = get(&nodes[follower_of(k)], k, true);
	cr_assert_eq(c.status, 0, "%s", keel_strerror(c.status));
	cr_expect_str_eq(c.value, "v20");
	/* the last sequence is still known after the restart */
	c = put(&nodes[leader_of(k)], k, "again", 5, 20);
	cr_assert_eq(c.status, 0);
	cr_expect(c.res.duplicate, "the client table must survive snapshot + restart");
	c = get(&nodes[leader_of(k)], k, true);
	cr_expect_str_eq(c.value, "v20");
	for (unsigned id = 1; id <= 3; id++)
		stop(&nodes[id]);
}

Test(services, watch_on_a_follower_sees_changes_in_order)
{
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	/* two keys of one group under one prefix */
	const char *a = "w/1";
	uint32_t g = keel_service_group_of(a, 3, GROUPS);
	char b[8] = "";
	for (int i = 2; i < 100 && !b[0]; i++) {
		char t[8];
		snprintf(t, sizeof(t), "w/%d", i);
		if (keel_service_group_of(t, strlen(t), GROUPS) == g)
			snprintf(b, sizeof(b), "%s", t);
	}
	cr_assert(b[0]);
	struct node *F = &nodes[follower_of(a)];
	struct call w = {.n = F, .op = OP_WATCH, .group = g};
	snprintf(w.key, sizeof(w.key), "w/");
	call(&w);
	cr_assert_eq(w.status, 0, "%s", keel_strerror(w.status));
	struct node *L = &nodes[leader_of(a)];
	cr_assert_eq(put(L, a, "x", 9, 1).status, 0);
	cr_assert_eq(put(L, b, "y", 9, 2).status, 0);
	struct call del = {.n = L, .op = OP_WRITE, .group = g};
	del.cmd = (struct keel_kv_cmd){.op = KEEL_KV_DEL, .client = 9, .seq = 3,
				       .key = (const uint8_t *)a, .key_len = 3};
	call(&del);
	cr_assert_eq(del.status, 0);
	for (int i = 0; i < 500 && atomic_load(&F->events) < 3; i++)
		usleep(10000);
	char want[64];
	snprintf(want, sizeof(want), "put:%s,put:%s,del:%s", a, b, a);
	cr_expect_eq(atomic_load(&F->events), 3);
	cr_expect_str_eq(F->event_log, want);
	for (unsigned id = 1; id <= 3; id++)
		stop(&nodes[id]);
}

/* A client of the three nodes' client ports. */
static struct keel_client *port_client(void)
{
	char eps[128], err[KEEL_ERRMSG_LEN];
	snprintf(eps, sizeof(eps), "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u", base + 6, base + 10,
		 base + 14);
	struct keel_client_config cc = {.endpoints = eps, .timeout_ms = 5000};
	struct keel_client *c;
	cr_assert_eq(keel_client_open(&cc, &c, err), 0, "%s", err);
	return c;
}

static void client_put(struct keel_client *c, const char *k, const char *v)
{
	cr_assert_eq(keel_client_put(c, k, strlen(k), v, strlen(v), NULL), 0, "put %s: %s", k,
		     keel_client_errmsg(c));
}

/* The next event within 10 s, checked against the group's last revision
 * (no gap: only w/ keys are written in these tests). */
static struct keel_client_event next_event(struct keel_client_watch *w, struct keel_client *c,
					   uint64_t last[GROUPS])
{
	struct keel_client_event ev = {0};
	int r = 0;
	for (int i = 0; i < 50 && r == 0; i++)
		r = keel_client_watch_next(w, 200, &ev);
	cr_assert_eq(r, 1, "no event in 10 s (%d: %s)", r, keel_client_errmsg(c));
	cr_assert_lt(ev.group, GROUPS);
	cr_expect_eq(ev.rev, last[ev.group] + 1, "group %u: revision %llu after %llu", ev.group,
		     (unsigned long long)ev.rev, (unsigned long long)last[ev.group]);
	last[ev.group] = ev.rev;
	return ev;
}

Test(services, watch_over_the_client_port_resumes_after_its_node_stops)
{
	with_port = true;
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	for (uint32_t g = 0; g < GROUPS; g++)
		cr_assert_neq(wait_leader(g), 0);
	struct keel_client *c = port_client();
	char k[16], v[16];
	for (int i = 1; i <= 6; i++) {
		snprintf(k, sizeof(k), "w/%d", i);
		snprintf(v, sizeof(v), "v%d", i);
		client_put(c, k, v);
	}
	/* a key outside the prefix: its revision is a step the watch skips */
	struct keel_client_result other;
	cr_assert_eq(keel_client_put(c, "other", 5, "x", 1, &other), 0);
	/* from revision 1: the history first, in order per group */
	struct keel_client_watch *w;
	cr_assert_eq(keel_client_watch_open(c, "w/", 2, true, 1, &w), 0, "%s", keel_client_errmsg(c));
	uint64_t last[GROUPS] = {0};
	bool seen[13] = {0};
	unsigned on = 0;
	for (int n = 0; n < 6; n++) {
		struct keel_client_event ev = next_event(w, c, last);
		int i = atoi((const char *)ev.key + 2);
		cr_assert(i >= 1 && i <= 6 && !seen[i], "event %.*s", (int)ev.key_len, (const char *)ev.key);
		seen[i] = true;
		snprintf(v, sizeof(v), "v%d", i);
		cr_expect_str_eq((const char *)ev.value, v);
		on = ev.node;
	}
	/* the watch's node stops; the next changes come from another */
	stop(&nodes[on]);
	for (int i = 7; i <= 12; i++) {
		snprintf(k, sizeof(k), "w/%d", i);
		snprintf(v, sizeof(v), "v%d", i);
		client_put(c, k, v);
	}
	struct keel_client_result res;
	cr_assert_eq(keel_client_del(c, "w/3", 3, &res), 0, "%s", keel_client_errmsg(c));
	bool deleted = false;
	for (int n = 0; n < 7; n++) {
		struct keel_client_event ev = {0};
		int r = 0;
		for (int t = 0; t < 50 && r == 0; t++)
			r = keel_client_watch_next(w, 200, &ev);
		cr_assert_eq(r, 1, "no event in 10 s after the stop (%d: %s)", r, keel_client_errmsg(c));
		cr_expect_neq(ev.node, on, "an event from the stopped node");
		uint64_t want = last[ev.group] + 1;
		if (ev.group == other.group && want == other.rev)
			want++;
		cr_expect_eq(ev.rev, want, "group %u: revision %llu after %llu", ev.group,
			     (unsigned long long)ev.rev, (unsigned long long)last[ev.group]);
		last[ev.group] = ev.rev;
		if (ev.deleted) {
			cr_expect(!deleted);
			cr_expect_eq(ev.key_len, 3);
			cr_expect_eq(memcmp(ev.key, "w/3", 3), 0);
			cr_expect_eq(ev.rev, res.rev);
			deleted = true;
			continue;
		}
		int i = atoi((const char *)ev.key + 2);
		cr_assert(i >= 7 && i <= 12 && !seen[i], "event %.*s (repeated or not written)",
			  (int)ev.key_len, (const char *)ev.key);
		seen[i] = true;
	}
	cr_expect(deleted);
	/* nothing more: no repeats after the move */
	struct keel_client_event ev;
	cr_expect_eq(keel_client_watch_next(w, 500, &ev), 0, "an extra event: %.*s rev %llu",
		     (int)ev.key_len, (const char *)ev.key, (unsigned long long)ev.rev);
	cr_expect_eq(keel_client_watch_revision(w, res.group), res.rev + 1);
	keel_client_watch_close(w);
	keel_client_close(c);
	for (unsigned id = 1; id <= 3; id++)
		if (nodes[id].node)
			stop(&nodes[id]);
}

Test(services, watch_from_a_compacted_revision_is_refused_by_every_node)
{
	with_port = true;
	watch_history = 8;
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	struct keel_client *c = port_client();
	for (int i = 1; i <= 20; i++)
		client_put(c, "w/hot", "x");
	/* every node has applied all 20 (a linearizable read on each comes
	 * after them), so none of them keeps revision 2 */
	for (unsigned id = 1; id <= 3; id++)
		cr_assert_eq(get(&nodes[id], "w/hot", true).status, 0);
	struct keel_client_watch *w;
	cr_assert_eq(keel_client_watch_open(c, "w/hot", 5, false, 2, &w), 0);
	struct keel_client_event ev;
	int r = 0;
	for (int i = 0; i < 50 && r == 0; i++)
		r = keel_client_watch_next(w, 200, &ev);
	cr_expect_eq(r, KEEL_ESTALE, "%d: %s", r, keel_client_errmsg(c));
	cr_expect(strstr(keel_client_errmsg(c), "compacted"), "%s", keel_client_errmsg(c));
	keel_client_watch_close(w);
	/* from a revision the history keeps: the last 8 changes, then live */
	cr_assert_eq(keel_client_watch_open(c, "w/hot", 5, false, 13, &w), 0);
	uint64_t rev = 12;
	for (int n = 0; n < 8; n++) {
		r = 0;
		for (int i = 0; i < 50 && r == 0; i++)
			r = keel_client_watch_next(w, 200, &ev);
		cr_assert_eq(r, 1, "%d: %s", r, keel_client_errmsg(c));
		cr_expect_eq(ev.rev, ++rev);
	}
	client_put(c, "w/hot", "live");
	r = 0;
	for (int i = 0; i < 50 && r == 0; i++)
		r = keel_client_watch_next(w, 200, &ev);
	cr_assert_eq(r, 1, "%d: %s", r, keel_client_errmsg(c));
	cr_expect_eq(ev.rev, 21);
	cr_expect_str_eq((const char *)ev.value, "live");
	keel_client_watch_close(w);
	keel_client_close(c);
	for (unsigned id = 1; id <= 3; id++)
		stop(&nodes[id]);
}

/* ---- the protocol's watch frames, by hand ---------------------------------- */

static void send_msg(int fd, struct keel_proto_msg *m)
{
	static uint8_t b[4096];
	int n = keel_proto_encode(m, b, sizeof(b));
	cr_assert_gt(n, 0);
	cr_assert_eq(send(fd, b, (size_t)n, MSG_NOSIGNAL), n);
}

/* The next frame (within 5 s) into rb; decoded into *m. */
static void recv_msg(int fd, uint8_t *rb, size_t cap, struct keel_proto_msg *m)
{
	size_t have = 0;
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		int fl = keel_proto_frame_len(rb, have);
		cr_assert_geq(fl, 0);
		if (fl > 0 && (size_t)fl <= have) {
			const char *why = NULL;
			cr_assert_eq(keel_proto_decode(rb, (size_t)fl, m, &why), 0, "%s", why);
			return;
		}
		/* one byte at a time: the next frame stays in the socket */
		ssize_t r = recv(fd, rb + have, 1, 0);
		cr_assert_eq(r, 1, "no frame from the client port within 5 s");
		have++;
		cr_assert_lt(have, cap);
	}
}

Test(services, watch_and_unwatch_frames_on_the_port)
{
	with_port = true;
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	const char *k = "w/raw";
	uint32_t g = keel_service_group_of(k, strlen(k), GROUPS);
	cr_assert_neq(wait_leader(g), 0);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(base + 6)),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	static uint8_t rb[8192];
	struct keel_proto_msg m = {.type = KEEL_PROTO_HELLO, .id = 1, .client = 5};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	send_msg(fd, &m);
	struct keel_proto_msg a;
	recv_msg(fd, rb, sizeof(rb), &a);
	cr_assert_eq(a.type, KEEL_PROTO_HELLO_OK);

	/* a key in another group than the one named: refused, with why */
	m = (struct keel_proto_msg){.type = KEEL_PROTO_WATCH, .id = 2, .group = (g + 1) % GROUPS,
				    .key = {(const uint8_t *)k, (uint32_t)strlen(k)}};
	keel_proto_set(&m, KEEL_PT_GROUP);
	keel_proto_set(&m, KEEL_PT_KEY);
	send_msg(fd, &m);
	recv_msg(fd, rb, sizeof(rb), &a);
	cr_expect_eq(a.id, 2);
	cr_expect_eq(a.status, KEEL_EBADINPUT);
	cr_expect(a.message.len > 0);

	/* a watch: RESULT with its id, then an EVENT per change */
	m.id = 3;
	m.group = g;
	send_msg(fd, &m);
	recv_msg(fd, rb, sizeof(rb), &a);
	cr_assert_eq(a.type, KEEL_PROTO_RESULT);
	cr_assert_eq(a.id, 3);
	cr_assert_eq(a.status, 0, "%s", keel_strerror(a.status));
	cr_expect_eq(a.watch_id, 3);
	uint64_t rev0 = a.rev;
	/* a second watch with the same id on the connection: refused */
	send_msg(fd, &m);
	recv_msg(fd, rb, sizeof(rb), &a);
	cr_expect_eq(a.status, KEEL_EBADINPUT);
	struct call c = put(&nodes[leader_of(k)], k, "one", 31, 1);
	cr_assert_eq(c.status, 0);
	recv_msg(fd, rb, sizeof(rb), &a);
	cr_assert_eq(a.type, KEEL_PROTO_EVENT);
	cr_expect_eq(a.id, 0);
	cr_expect_eq(a.watch_id, 3);
	cr_expect_eq(a.group, g);
	cr_expect_eq(a.rev, rev0 + 1);
	cr_expect(a.value.len == 3 && !memcmp(a.value.p, "one", 3));

	/* unwatch: answered; then no more events; a second unwatch: not found */
	m = (struct keel_proto_msg){.type = KEEL_PROTO_UNWATCH, .id = 4, .watch_id = 3};
	keel_proto_set(&m, KEEL_PT_WATCH_ID);
	send_msg(fd, &m);
	recv_msg(fd, rb, sizeof(rb), &a);
	cr_assert_eq(a.type, KEEL_PROTO_RESULT);
	cr_expect_eq(a.id, 4);
	cr_expect_eq(a.status, 0);
	c = put(&nodes[leader_of(k)], k, "two", 31, 2);
	cr_assert_eq(c.status, 0);
	/* node 1 has applied "two" (its linearizable read comes after it):
	 * an event for it would be on the connection before the next answer */
	cr_assert_eq(get(&nodes[1], k, true).status, 0);
	m.id = 5;
	send_msg(fd, &m);
	recv_msg(fd, rb, sizeof(rb), &a); /* the next frame is this answer, not an event */
	cr_expect_eq(a.type, KEEL_PROTO_RESULT);
	cr_expect_eq(a.id, 5);
	cr_expect_eq(a.status, KEEL_ENOTFOUND);
	close(fd);
	for (unsigned id = 1; id <= 3; id++)
		stop(&nodes[id]);
}

/* ---- pipelined calls through the client library ---------------------------- */

struct pstate {
	struct keel_client *c;
	int next, done, ok, failed;
	int total;
	int status_of[401];
};

struct pone {
	struct pstate *ps;
	int i;
	char key[16];
};

static struct pone pones[401];

static void pdone(void *arg, int status, const struct keel_client_result *res, const void *v,
		  size_t vl)
{
	(void)res;
	(void)v;
	(void)vl;
	struct pone *po = arg;
	struct pstate *ps = po->ps;
	ps->done++;
	ps->status_of[po->i] = status == 0 ? 1 : status;
	if (status == 0)
		ps->ok++;
	else
		ps->failed++;
	/* keep the pipeline full: the next key from the callback */
	if (ps->next <= ps->total) {
		struct pone *n = &pones[ps->next];
		n->ps = ps;
		n->i = ps->next++;
		snprintf(n->key, sizeof(n->key), "p/%d", n->i);
		char val[16];
		snprintf(val, sizeof(val), "v%d", n->i);
		cr_assert_eq(keel_client_put_async(ps->c, n->key, strlen(n->key), val, strlen(val), pdone, n),
			     0, "%s", keel_client_errmsg(ps->c));
	}
}

Test(services, pipelined_puts_complete_exactly_once_across_a_node_stop)
{
	with_port = true;
	for (unsigned id = 1; id <= 3; id++)
		start(&nodes[id]);
	for (uint32_t g = 0; g < GROUPS; g++)
		cr_assert_neq(wait_leader(g), 0);
	char eps[128], err[KEEL_ERRMSG_LEN];
	snprintf(eps, sizeof(eps), "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u", base + 6, base + 10,
		 base + 14);
	struct keel_client_config cc = {.endpoints = eps, .timeout_ms = 8000, .max_inflight = 32};
	struct keel_client *c;
	cr_assert_eq(keel_client_open(&cc, &c, err), 0, "%s", err);
	static struct pstate ps;
	memset(&ps, 0, sizeof(ps));
	ps.c = c;
	ps.total = 400;
	ps.next = 1;
	for (int k = 0; k < 32; k++) {
		struct pone *n = &pones[ps.next];
		n->ps = &ps;
		n->i = ps.next++;
		snprintf(n->key, sizeof(n->key), "p/%d", n->i);
		char val[16];
		snprintf(val, sizeof(val), "v%d", n->i);
		cr_assert_eq(keel_client_put_async(c, n->key, strlen(n->key), val, strlen(val), pdone, n), 0);
	}
	cr_expect_eq(keel_client_pending(c), 32);
	/* 32 in flight is the most: one more is refused until some complete */
	cr_expect_eq(keel_client_put_async(c, "x", 1, "y", 1, pdone, &pones[0]), KEEL_EFULL);
	/* a blocking call waits for the pipeline to drain */
	cr_expect_eq(keel_client_put(c, "x", 1, "y", 1, NULL), KEEL_EBUSY);
	bool stopped = false;
	unsigned victim = wait_leader(0);
	for (int t = 0; t < 3000 && keel_client_pending(c); t++) {
		cr_assert_geq(keel_client_poll(c, 100), 0, "%s", keel_client_errmsg(c));
		if (!stopped && ps.done >= 100) {
			/* group 0's leader goes away with calls in flight */
			stop(&nodes[victim]);
			stopped = true;
		}
	}
	cr_assert(stopped);
	cr_assert_eq(keel_client_pending(c), 0);
	cr_expect_eq(ps.done, 400);
	cr_expect_eq(ps.ok, 400, "%d failed, the last: %s", ps.failed, keel_client_errmsg(c));
	/* each key written once, each put applied once: a group's revision
	 * is the number of its keys (a write applied twice would add one) */
	unsigned per_group[GROUPS] = {0};
	for (int i = 1; i <= 400; i++) {
		char k[16], want[16];
		snprintf(k, sizeof(k), "p/%d", i);
		snprintf(want, sizeof(want), "v%d", i);
		per_group[keel_service_group_of(k, strlen(k), GROUPS)]++;
		void *v;
		size_t vl;
		struct keel_client_result res;
		cr_assert_eq(keel_client_get(c, k, strlen(k), false, &v, &vl, &res), 0, "%s: %s", k,
			     keel_client_errmsg(c));
		cr_expect_str_eq((const char *)v, want);
		keel_client_free_value(v);
	}
	for (uint32_t g = 0; g < GROUPS; g++) {
		/* the revision of the group, read through one of its keys */
		for (int i = 1; i <= 400; i++) {
			char k[16];
			snprintf(k, sizeof(k), "p/%d", i);
			if (keel_service_group_of(k, strlen(k), GROUPS) != g)
				continue;
			void *v;
			size_t vl;
			struct keel_client_result res;
			cr_assert_eq(keel_client_get(c, k, strlen(k), false, &v, &vl, &res), 0);
			keel_client_free_value(v);
			cr_expect_eq(res.rev, per_group[g], "group %u: revision %llu for %u keys written once",
				     g, (unsigned long long)res.rev, per_group[g]);
			break;
		}
	}
	keel_client_close(c);
	for (unsigned id = 1; id <= 3; id++)
		if (nodes[id].node)
			stop(&nodes[id]);
}
