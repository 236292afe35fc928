/* Two one-shard runtimes in one process talking over the rdma backend:
 * node 1 listens, node 2 dials. Shared by the emulated-verbs tests
 * (test_rdma_emu.c: backend_arg = the EMULATED table, no device involved)
 * and the device test (test_rdma_device.c: libibverbs, a real device).
 * The sender writes a 4-byte sequence number, a 4-byte length and a
 * pattern derived from both; the receiver checks all of it. */
#ifndef KEEL_TEST_RDMA_HARNESS_H
#define KEEL_TEST_RDMA_HARNESS_H

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"

struct side {
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct keel_transport *t;
	struct keel_conn *c;
	const void *verbs;      /* backend_arg: NULL = libibverbs */
	uint32_t sendq;
	bool dial, redial, echo;
	/* messages the sender sends: total, of these lengths (cycled) */
	uint32_t total;
	const uint32_t *lens;
	unsigned nlens;
	uint32_t next;
	/* results, read by the test thread */
	atomic_int up, down, down_reason, writable, efull, toobig, open_rc, redials, redial_rc;
	atomic_uint received, bad, echoed, last_type;
	atomic_uint total_rx; /* every message, across reconnects */
	atomic_uint peer_node, inbound;
	atomic_int r1, r2, r3;
	/* replaces h_up's default (record + pump) when set */
	void (*up_hook)(struct side *s, struct keel_conn *c);
	char open_err[KEEL_ERRMSG_LEN];
};

static char hdir[64];
static unsigned hbase;

static void h_write_secret(void)
{
	snprintf(hdir, sizeof(hdir), "/tmp/keel-rdma-unit-XXXXXX");
	if (!mkdtemp(hdir))
		abort();
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", hdir);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "unit-test-cluster-secret-0123456789", 35) != 35)
		abort();
	close(fd);
	/* 26000-27999: this backend's range, below the ephemeral ports (see
	 * tests/unit/transport/test_tcp.c for why). */
	hbase = 26000 + (unsigned)(getpid() % 190) * 10;
}

static void h_cleanup(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", hdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", hdir);
}

/* extra: more [rdma] lines. */
static int h_load(struct side *s, unsigned node, const char *extra, char *err)
{
	char text[1024];
	snprintf(text, sizeof(text),
		 "[node]\nid = %u\ncluster = 5\nlisten = 127.0.0.1:%u\nshards = 1\n"
		 "transport = rdma\nsecret_file = secret\nmax_frame = 64K\n[peers]\n"
		 "1 = 127.0.0.1:%u\n2 = 127.0.0.1:%u\n[rdma]\n%s",
		 node, hbase + node * 4, hbase + 4, hbase + 8, extra ? extra : "");
	return keel_node_config_parse(text, "unit.ini", hdir, &s->cfg, err);
}

static uint8_t h_pat(uint32_t seq, uint32_t i)
{
	return (uint8_t)(seq * 31u + i * 7u + 1u);
}

static void h_pump(struct side *s)
{
	while (s->c && s->next < s->total) {
		uint32_t len = s->lens[s->next % s->nlens];
		struct keel_send_buf *b;
		int rc = keel_transport_alloc(s->c, len, &b);
		if (rc == KEEL_EFULL) {
			atomic_fetch_add(&s->efull, 1);
			return;
		}
		if (rc) {
			atomic_fetch_add(&s->bad, 1);
			return;
		}
		uint8_t *p = b->data;
		for (uint32_t i = 8; i < len; i++)
			p[i] = h_pat(s->next, i);
		if (len >= 8) {
			memcpy(p, &s->next, 4);
			memcpy(p + 4, &len, 4);
		}
		b->len = len;
		b->type = (uint16_t)(s->next % 7 + 1);
		if (keel_transport_send_buf(s->c, b)) {
			atomic_fetch_add(&s->bad, 1);
			return;
		}
		s->next++;
	}
}

static void h_up(struct keel_transport *t, struct keel_conn *c)
{
	struct side *s = t->user;
	s->c = c;
	atomic_store(&s->peer_node, c->peer.node);
	atomic_store(&s->inbound, c->inbound);
	atomic_fetch_add(&s->up, 1);
	if (s->up_hook)
		s->up_hook(s, c);
	else
		h_pump(s);
}

static void h_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct side *s = t->user;
	atomic_store(&s->down_reason, reason);
	atomic_fetch_add(&s->down, 1);
	if (s->c == c)
		s->c = NULL;
	if (s->redial && reason) {
		/* What node/'s peer mesh does (after a backoff): dial again. The
		 * messages not yet acknowledged are the sender's to resend;
		 * here the count restarts. */
		atomic_fetch_add(&s->redials, 1);
		s->next = 0;
		int rc = keel_transport_connect(t, (struct keel_addr){.node = 1, .shard = 0}, &s->c);
		atomic_store(&s->redial_rc, rc);
		if (rc)
			s->c = NULL;
	}
}

static void h_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct side *s = t->user;
	uint32_t want = atomic_load(&s->received);
	atomic_fetch_add(&s->total_rx, 1);
	if (m->type == 99) {
		/* an echo: the first 8 bytes of message seq, in order */
		uint32_t seq = UINT32_MAX;
		if (m->len == 8)
			memcpy(&seq, m->data, 4);
		if (seq != want)
			atomic_fetch_add(&s->bad, 1);
	} else if (m->len >= 8) {
		uint32_t seq, len;
		memcpy(&seq, m->data, 4);
		memcpy(&len, (const uint8_t *)m->data + 4, 4);
		const uint8_t *p = m->data;
		bool ok = len == m->len && m->type == seq % 7 + 1;
		if (seq != want) {
			/* after a reconnect the sender starts again at 0 */
			if (seq == 0)
				atomic_store(&s->received, 0);
			else
				ok = false;
		}
		for (uint32_t i = 8; ok && i < m->len; i++)
			ok = p[i] == h_pat(seq, i);
		if (!ok)
			atomic_fetch_add(&s->bad, 1);
	}
	atomic_store(&s->last_type, m->type);
	atomic_fetch_add(&s->received, 1);
	if (s->echo && keel_transport_send(c, 99, m->data, m->len < 8 ? m->len : 8) == 0)
		atomic_fetch_add(&s->echoed, 1);
}

static void h_writable(struct keel_transport *t, struct keel_conn *c)
{
	struct side *s = t->user;
	atomic_fetch_add(&s->writable, 1);
	h_pump(s);
}

static const struct keel_transport_handlers h_handlers = {
	.on_conn_up = h_up, .on_recv = h_recv, .on_conn_down = h_down,
	.on_writable = h_writable};

static void h_init(struct keel_shard *shard, void *arg)
{
	struct side *s = arg;
	struct keel_transport_config tc;
	keel_node_config_transport(&s->cfg, 0, &tc);
	tc.shards = 1;
	tc.handlers = &h_handlers;
	tc.user = s;
	tc.shard = shard;
	tc.sendq_bytes = s->sendq;
	tc.backend_arg = (void *)s->verbs;
	int rc = keel_transport_open("rdma", &tc, &s->t, s->open_err);
	atomic_store(&s->open_rc, rc ? rc : 1);
	if (rc)
		return;
	if (s->dial) {
		rc = keel_transport_connect(s->t, (struct keel_addr){.node = 1, .shard = 0}, &s->c);
		if (rc)
			snprintf(s->open_err, sizeof(s->open_err), "%s", s->t->errmsg);
		/* before the set-up ends: held, then sent once up, in order */
		h_pump(s);
	} else {
		rc = keel_transport_listen(s->t);
		if (rc)
			snprintf(s->open_err, sizeof(s->open_err), "%s", s->t->errmsg);
	}
	if (rc)
		atomic_store(&s->open_rc, rc);
}

static void h_fini(struct keel_shard *shard, void *arg)
{
	struct side *s = arg;
	keel_transport_close(s->t);
}

static int h_start(struct side *s, char *err)
{
	struct keel_runtime_config rc = {.nshards = 1, .synthetic_topology = "pack:1 core:1 pu:1",
					 .node_id = (int)s->cfg.node_id};
	int r = keel_runtime_create(&rc, &s->rt, err);
	if (r)
		return r;
	r = keel_runtime_start(s->rt, h_init, h_fini, s);
	if (r)
		snprintf(err, KEEL_ERRMSG_LEN, "%s", keel_runtime_errmsg(s->rt));
	return r;
}

static void h_stop(struct side *s)
{
	keel_runtime_stop(s->rt);
	keel_runtime_wait(s->rt);
	keel_runtime_destroy(s->rt);
	keel_node_config_free(&s->cfg);
}

/* Waits up to ms for *v >= want (a loaded machine: generous). */
static bool h_wait_u(atomic_uint *v, unsigned want, int ms)
{
	for (int i = 0; i < ms / 5; i++) {
		if (atomic_load(v) >= want)
			return true;
		usleep(5000);
	}
	return atomic_load(v) >= want;
}

static bool h_wait_i(atomic_int *v, int want, int ms)
{
	for (int i = 0; i < ms / 5; i++) {
		if (atomic_load(v) >= want)
			return true;
		usleep(5000);
	}
	return atomic_load(v) >= want;
}

#endif
