/* Hostile peers on the TCP transport's port: raw sockets in the test
 * thread, speaking the wire format (transport/wire.h) and the handshake
 * (transport/handshake.h) by hand, against one keel endpoint (node 1) run
 * by a one-shard runtime. For every connection state the endpoint can be
 * in — inbound before HELLO, inbound waiting for AUTH, inbound up,
 * outbound (it dialled a raw server) waiting for WELCOME, outbound up —
 * every frame kind (HELLO, WELCOME, AUTH, DATA), unknown kinds, bad
 * headers, lengths just above the pre-authentication limit and far above
 * the frame limit, frames out of sequence and garbage are sent, each on its
 * own connection. Each case must:
 *  - close that connection (the raw side sees EOF or a reset),
 *  - log one line naming the connection and the reason,
 *  - deliver nothing of it to the layer above: no on_conn_up before the
 *    handshake ended, no on_recv of the bad frame or of the well-formed
 *    frames sent right behind it (a valid AUTH, a valid DATA); DATA sent
 *    before it on a connection that was up is delivered,
 *  - leave the endpoint serving: a well-behaved raw peer then completes the
 *    handshake and gets its DATA echoed, and a well-behaved connection
 *    opened before the first case still works after the last.
 * No sleeps: the raw side blocks on its socket (poll with a 10 s bound
 * that only a failing endpoint reaches); the endpoint's counters are final
 * when the raw side sees the close, because the endpoint updates them on
 * its thread before it closes. */
#include <criterion/criterion.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"
#include "transport/handshake.h"
#include "transport/wire.h"

#define SECRET "unit-test-cluster-secret-0123456789"
#define CLUSTER 5
#define MAX_FRAME (64u * 1024)
#define WAIT_MS 10000

/* ---- the endpoint under attack ----------------------------------------- */

static struct {
	char dir[64];
	unsigned port;    /* node 1 listens here */
	unsigned rawport; /* node 3 (a raw server in this thread) */
	int rawlfd;
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct keel_transport *t;
	/* counters, written on the endpoint's thread */
	atomic_uint up_in, up_out, recv_in, recv_out, down_out;
	/* log capture: fd 2 goes to a memfd */
	int logfd, saved_stderr;
	off_t logoff;
} E;

static void on_up(struct keel_transport *t, struct keel_conn *c)
{
	atomic_fetch_add(c->inbound ? &E.up_in : &E.up_out, 1);
}

/* Delivered messages are counted and echoed, so a raw peer can wait for
 * the endpoint to have taken its DATA by reading the echo. */
static void on_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	atomic_fetch_add(c->inbound ? &E.recv_in : &E.recv_out, 1);
	keel_transport_send(c, m->type, m->data, m->len);
}

static void on_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	if (!c->inbound)
		atomic_fetch_add(&E.down_out, 1);
}

static const struct keel_transport_handlers handlers = {
	.on_conn_up = on_up, .on_recv = on_recv, .on_conn_down = on_down};

static void shard_init(struct keel_shard *shard, void *arg)
{
	struct keel_transport_config tc;
	char err[KEEL_ERRMSG_LEN];
	keel_node_config_transport(&E.cfg, 0, &tc);
	tc.shards = 1;
	tc.handlers = &handlers;
	tc.shard = shard;
	/* long enough that only the endpoint's own checks close a case */
	tc.handshake_timeout_ms = 60000;
	tc.listen_port = 0; /* the kernel picks; found by listen_port_of_endpoint */
	cr_assert_eq(keel_transport_open("tcp", &tc, &E.t, err), 0, "%s", err);
	cr_assert_eq(keel_transport_listen(E.t), 0, "%s", E.t->errmsg);
}

static void shard_fini(struct keel_shard *shard, void *arg)
{
	keel_transport_close(E.t);
}

/* A listening socket on a port the kernel picked. */
static unsigned free_port(int *keep)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t al = sizeof(a);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	cr_assert_eq(listen(fd, 16), 0);
	*keep = fd;
	return ntohs(a.sin_port);
}

/* The endpoint's listening socket is the one listening socket of this
 * process besides the raw server's. */
static unsigned listen_port_of_endpoint(void)
{
	for (int fd = 3; fd < 1024; fd++) {
		int v = 0;
		socklen_t vl = sizeof(v);
		if (fd == E.rawlfd || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) < 0 || !v)
			continue;
		struct sockaddr_in a;
		socklen_t al = sizeof(a);
		if (getsockname(fd, (struct sockaddr *)&a, &al) == 0 && a.sin_family == AF_INET)
			return ntohs(a.sin_port);
	}
	cr_assert_fail("the endpoint is not listening");
	return 0;
}

static void setup(void)
{
	memset(&E, 0, sizeof(E));
	E.saved_stderr = E.logfd = E.rawlfd = -1;
	keel_log_set_level(KEEL_LOG_WARN);
	/* Every case checks its own log line: none may be rate-limited. */
	keel_log_set_site_burst(UINT_MAX);
	snprintf(E.dir, sizeof(E.dir), "/tmp/keel-tcp-hostile-XXXXXX");
	cr_assert(mkdtemp(E.dir));
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", E.dir);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, SECRET, strlen(SECRET)), (ssize_t)strlen(SECRET));
	close(fd);
	E.rawport = free_port(&E.rawlfd);
	char text[512], err[KEEL_ERRMSG_LEN];
	snprintf(text, sizeof(text),
		 "[node]\nid = 1\ncluster = %u\nlisten = 127.0.0.1:1\nshards = 1\n"
		 "secret_file = secret\nmax_frame = 64K\n[peers]\n1 = 127.0.0.1:1\n"
		 "2 = 127.0.0.1:2\n3 = 127.0.0.1:%u\n",
		 CLUSTER, E.rawport);
	cr_assert_eq(keel_node_config_parse(text, "hostile.ini", E.dir, &E.cfg, err), 0, "%s", err);
	/* the endpoint's log lines go where the test can read them */
	E.logfd = memfd_create("keel-log", MFD_CLOEXEC);
	cr_assert_geq(E.logfd, 0);
	fflush(stderr);
	E.saved_stderr = dup(2);
	dup2(E.logfd, 2);
	struct keel_runtime_config rc = {.nshards = 1, .synthetic_topology = "pack:1 core:1 pu:1",
					 .node_id = 1};
	cr_assert_eq(keel_runtime_create(&rc, &E.rt, err), 0, "%s", err);
	cr_assert_eq(keel_runtime_start(E.rt, shard_init, shard_fini, NULL), 0, "%s",
		     keel_runtime_errmsg(E.rt));
	E.port = listen_port_of_endpoint();
}

static void teardown(void)
{
	if (E.rt) {
		keel_runtime_stop(E.rt);
		keel_runtime_wait(E.rt);
		keel_runtime_destroy(E.rt);
	}
	keel_node_config_free(&E.cfg);
	if (E.saved_stderr >= 0) {
		/* the endpoint's log, for whoever reads the test's output */
		dup2(E.saved_stderr, 2);
		char buf[4096];
		ssize_t n;
		off_t off = 0;
		while ((n = pread(E.logfd, buf, sizeof(buf), off)) > 0) {
			if (write(2, buf, (size_t)n) < 0)
				break;
			off += n;
		}
		close(E.saved_stderr);
	}
	if (E.logfd >= 0)
		close(E.logfd);
	if (E.rawlfd >= 0)
		close(E.rawlfd);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", E.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", E.dir);
}

TestSuite(tcp_hostile, .init = setup, .fini = teardown, .timeout = 120);

/* ---- raw sockets --------------------------------------------------------- */

/* Waits for fd to be readable; false after WAIT_MS. */
static bool wait_in(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int rc;
	do
		rc = poll(&p, 1, WAIT_MS);
	while (rc < 0 && errno == EINTR);
	return rc > 0;
}

static void send_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		/* the endpoint may have closed already: what it read decided */
		if (w <= 0)
			return;
		b += w;
		n -= (size_t)w;
	}
}

static bool read_exact(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n) {
		if (!wait_in(fd))
			return false;
		ssize_t r = recv(fd, b, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		b += r;
		n -= (size_t)r;
	}
	return true;
}

/* Reads one frame (payload into p, up to cap bytes). */
static bool read_frame(int fd, struct keel_wire_hdr *h, uint8_t *p, size_t cap)
{
	uint8_t hb[KEEL_WIRE_HDR_LEN];
	if (!read_exact(fd, hb, sizeof(hb)))
		return false;
	if (keel_wire_decode_hdr(hb, sizeof(hb), MAX_FRAME, h) != KEEL_WIRE_HDR_LEN)
		return false;
	return h->len <= cap && read_exact(fd, p, h->len);
}

/* What every case sends right behind its bad frame, well-formed: the
 * endpoint echoes DATA it delivers, so seeing it come back means the
 * endpoint took it, without waiting for a close that will not come. */
#define BEHIND "behind the bad frame"

enum verdict { CLOSED, STAYED_OPEN, TOOK_WHAT_FOLLOWED };

/* Reads fd until the peer closes it (EOF or reset). */
static enum verdict closed_by_peer(int fd)
{
	static uint8_t b[1 << 17];
	size_t n = 0;
	for (;;) {
		if (!wait_in(fd))
			return STAYED_OPEN;
		if (n == sizeof(b))
			n = 0;
		ssize_t r = recv(fd, b + n, sizeof(b) - n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return CLOSED;
		n += (size_t)r;
		if (memmem(b, n, BEHIND, strlen(BEHIND)))
			return TOOK_WHAT_FOLLOWED;
	}
}

static int dial(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s", strerror(errno));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static unsigned local_port(int fd)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	return ntohs(a.sin_port);
}

/* Bytes to send in one write: frames one after the other. */
struct out {
	uint8_t b[4 * MAX_FRAME];
	size_t n;
};

static void put(struct out *o, const void *p, size_t n)
{
	cr_assert_leq(o->n + n, sizeof(o->b));
	memcpy(o->b + o->n, p, n);
	o->n += n;
}

/* A header with these fields, then `body` (its len bytes; NULL: zeros; a
 * header-only frame when body_len is 0 and len is not). */
static void put_frame(struct out *o, uint8_t kind, uint16_t type, uint16_t flags, uint32_t seq,
		      uint32_t len, const void *body, size_t body_len)
{
	struct keel_wire_hdr h = {.version = KEEL_TRANSPORT_PROTO_VERSION, .kind = kind,
				  .type = type, .flags = flags, .len = len, .seq = seq};
	uint8_t hb[KEEL_WIRE_HDR_LEN];
	keel_wire_encode_hdr(hb, &h);
	put(o, hb, sizeof(hb));
	cr_assert_leq(o->n + body_len, sizeof(o->b));
	if (body)
		memcpy(o->b + o->n, body, body_len);
	else
		memset(o->b + o->n, 0, body_len);
	o->n += body_len;
}

static void put_data(struct out *o, uint32_t seq, const char *text)
{
	put_frame(o, KEEL_WIRE_DATA, 9, 0, seq, (uint32_t)strlen(text), text, strlen(text));
}

static const char garbage[] = "GET / HTTP/1.1\r\nHost: keel\r\n\r\n";

/* What follows every bad frame: a well-formed DATA (BEHIND, next in
 * sequence), then garbage, so that an endpoint that let the bad frame
 * through still ends the case at once instead of at WAIT_MS. */
static void put_tail(struct out *o, uint32_t seq)
{
	put_data(o, seq, BEHIND);
	put(o, garbage, sizeof(garbage) - 1);
}

/* ---- the client side of the handshake, by hand --------------------------- */

struct raw {
	int fd;
	struct keel_hs hs;
	uint8_t hello[KEEL_HS_HELLO_LEN];
	uint8_t welcome[KEEL_HS_WELCOME_LEN];
	uint8_t auth[KEEL_HS_AUTH_LEN];
	uint32_t tx_seq, rx_seq;
};

static void raw_hello_payload(struct raw *r, uint64_t cluster, uint32_t node)
{
	keel_hs_client_start(&r->hs, (const uint8_t *)SECRET, strlen(SECRET), cluster, node, 0, 1, 0,
			     r->hello);
}

/* HELLO sent, WELCOME read and checked, AUTH computed (not sent). */
static void raw_to_wait_auth(struct raw *r)
{
	r->fd = dial(E.port);
	raw_hello_payload(r, CLUSTER, 2);
	struct out o = {.n = 0};
	put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, r->hello, KEEL_HS_HELLO_LEN);
	send_all(r->fd, o.b, o.n);
	struct keel_wire_hdr h;
	cr_assert(read_frame(r->fd, &h, r->welcome, sizeof(r->welcome)), "no WELCOME");
	cr_assert(h.kind == KEEL_WIRE_WELCOME && h.seq == 0 && h.len == KEEL_HS_WELCOME_LEN);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_hs_client_on_welcome(&r->hs, r->welcome, h.len, r->auth, err), 0, "%s",
		     err);
	r->tx_seq = 1;
	r->rx_seq = 1;
}

static void raw_up(struct raw *r)
{
	raw_to_wait_auth(r);
	struct out o = {.n = 0};
	put_frame(&o, KEEL_WIRE_AUTH, 0, 0, r->tx_seq++, KEEL_HS_AUTH_LEN, r->auth,
		  KEEL_HS_AUTH_LEN);
	send_all(r->fd, o.b, o.n);
}

/* Sends DATA and reads its echo: the endpoint took it. */
static void raw_echo(struct raw *r, const char *text, const char *what)
{
	struct out o = {.n = 0};
	put_data(&o, r->tx_seq++, text);
	send_all(r->fd, o.b, o.n);
	struct keel_wire_hdr h;
	static uint8_t p[MAX_FRAME];
	cr_assert(read_frame(r->fd, &h, p, sizeof(p)), "%s: no echo of '%s'", what, text);
	cr_assert(h.kind == KEEL_WIRE_DATA && h.type == 9 && h.seq == r->rx_seq &&
			  h.len == strlen(text) && !memcmp(p, text, h.len),
		  "%s: a wrong echo (kind %u seq %u len %u)", what, h.kind, h.seq, h.len);
	r->rx_seq++;
}

/* ---- what each case must leave behind ------------------------------------ */

struct counts {
	unsigned up_in, up_out, recv_in, recv_out;
};

static struct counts counts_now(void)
{
	return (struct counts){atomic_load(&E.up_in), atomic_load(&E.up_out),
			       atomic_load(&E.recv_in), atomic_load(&E.recv_out)};
}

/* The log written since the last call. */
static char *log_since(void)
{
	static char buf[1 << 16];
	ssize_t n = pread(E.logfd, buf, sizeof(buf) - 1, E.logoff);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	E.logoff += n;
	return buf;
}

/* A line of text holding all of a, b (b may be NULL). */
static bool line_with(const char *text, const char *a, const char *b)
{
	for (const char *l = text; *l;) {
		const char *e = strchr(l, '\n');
		size_t n = e ? (size_t)(e - l) : strlen(l);
		char line[1024];
		snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) - 1 ? n : sizeof(line) - 1),
			 l);
		if (strstr(line, a) && (!b || strstr(line, b)))
			return true;
		l += n + (e ? 1 : 0);
	}
	return false;
}

/* After a hostile case on fd: closed, logged with `why` (on the line that
 * names port `port`, when given), nothing delivered beyond `delivered`,
 * `ups` handshakes completed. */
static void expect_refused(int fd, unsigned port, const struct counts *before,
			   unsigned delivered, unsigned ups, bool inbound, const char *why,
			   const char *what)
{
	enum verdict v = closed_by_peer(fd);
	cr_assert_neq(v, TOOK_WHAT_FOLLOWED,
		      "%s: the endpoint delivered (and echoed) the frame sent behind the bad one",
		      what);
	cr_assert_eq(v, CLOSED, "%s: the endpoint kept the connection open", what);
	close(fd);
	struct counts now = counts_now();
	unsigned recv = inbound ? now.recv_in - before->recv_in : now.recv_out - before->recv_out;
	unsigned up = inbound ? now.up_in - before->up_in : now.up_out - before->up_out;
	cr_assert_eq(recv, delivered, "%s: %u messages reached the layer above, expected %u", what,
		     recv, delivered);
	cr_assert_eq(up, ups, "%s: %u connections announced up, expected %u", what, up, ups);
	const char *log = log_since();
	char ps[16];
	snprintf(ps, sizeof(ps), ":%u", port);
	cr_assert(line_with(log, why, port ? ps : NULL),
		  "%s: no log line%s%s with '%s'; the log said:\n%s", what, port ? " naming " : "",
		  port ? ps : "", why, log);
}

/* ---- inbound: a raw client dials the endpoint ---------------------------- */

static const char *EPROTO_TEXT = "malformed message";
static const char *ETOOBIG_TEXT = "message larger than the configured maximum";

/* A well-behaved client completes the handshake and is echoed. */
static void good_client(const char *after)
{
	struct counts b = counts_now();
	struct raw r = {0};
	raw_up(&r);
	raw_echo(&r, "well-behaved", after);
	close(r.fd);
	struct counts a = counts_now();
	cr_assert(a.up_in == b.up_in + 1 && a.recv_in == b.recv_in + 1,
		  "after %s: a well-behaved peer was not served", after);
}

/* A connection held open from the start of a test to its end. */
static struct raw keeper;

static void keeper_open(void)
{
	memset(&keeper, 0, sizeof(keeper));
	raw_up(&keeper);
	raw_echo(&keeper, "first", "the connection kept open");
	log_since();
}

static void keeper_check(void)
{
	raw_echo(&keeper, "last", "the connection kept open through every case");
	close(keeper.fd);
}

enum fresh_case {
	F_GARBAGE,
	F_BAD_VERSION,
	F_KIND_ZERO,
	F_KIND_UNKNOWN,
	F_FLAGS,
	F_TYPE_ON_HELLO,
	F_HELLO_JUST_ABOVE,
	F_HELLO_CLAIMS_60000,
	F_HELLO_64MIB,
	F_HELLO_4GIB,
	F_HELLO_SEQ_1,
	F_HELLO_SHORT,
	F_HELLO_RESERVED,
	F_HELLO_UNKNOWN_NODE,
	F_HELLO_OUR_NODE,
	F_HELLO_OTHER_CLUSTER,
	F_HELLO_OTHER_VERSION,
	F_HELLO_REPLAYED,
	F_WELCOME,
	F_AUTH,
	F_DATA,
	F_HALF_HEADER_THEN_EOF,
	F_COUNT
};

static const char *fresh_why(int k)
{
	switch (k) {
	case F_HELLO_JUST_ABOVE:
	case F_HELLO_CLAIMS_60000:
	case F_HELLO_64MIB:
	case F_HELLO_4GIB: return ETOOBIG_TEXT;
	case F_HELLO_SEQ_1: return "frame out of sequence";
	case F_HELLO_SHORT: return "HELLO has the wrong length";
	case F_HELLO_RESERVED: return "malformed HELLO";
	case F_HELLO_UNKNOWN_NODE: return "node 9 is not a peer in our configuration";
	case F_HELLO_OUR_NODE: return "node 1 is not a peer in our configuration";
	case F_HELLO_OTHER_CLUSTER: return "is in cluster 6";
	case F_HELLO_OTHER_VERSION: return "peer speaks protocol version 2";
	case F_HELLO_REPLAYED: return "replayed HELLO";
	case F_WELCOME: return "unexpected frame kind 2";
	case F_AUTH: return "AUTH out of order";
	case F_DATA: return "unexpected frame kind 4";
	case F_HALF_HEADER_THEN_EOF: return "it left during the handshake";
	default: return EPROTO_TEXT;
	}
}

Test(tcp_hostile, inbound_before_hello)
{
	keeper_open();
	uint8_t replay[KEEL_HS_HELLO_LEN];
	{
		/* a HELLO the endpoint has seen, for the replay case */
		struct raw r = {0};
		raw_to_wait_auth(&r);
		memcpy(replay, r.hello, sizeof(replay));
		close(r.fd);
		log_since();
	}
	for (int k = 0; k < F_COUNT; k++) {
		char what[64];
		snprintf(what, sizeof(what), "before HELLO, case %d", k);
		struct counts before = counts_now();
		struct raw r = {0};
		int fd = dial(E.port);
		struct out o = {.n = 0};
		uint8_t hello[KEEL_HS_HELLO_LEN];
		raw_hello_payload(&r, CLUSTER, 2);
		memcpy(hello, r.hello, sizeof(hello));
		switch (k) {
		case F_GARBAGE: put(&o, garbage, sizeof(garbage) - 1); break;
		case F_BAD_VERSION:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, hello, sizeof(hello));
			o.b[2] = KEEL_TRANSPORT_PROTO_VERSION + 1;
			break;
		case F_KIND_ZERO: put_frame(&o, 0, 0, 0, 0, 4, NULL, 4); break;
		case F_KIND_UNKNOWN: put_frame(&o, KEEL_WIRE_KIND_MAX + 1, 0, 0, 0, 4, NULL, 4); break;
		case F_FLAGS:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 1, 0, KEEL_HS_HELLO_LEN, hello, sizeof(hello));
			break;
		case F_TYPE_ON_HELLO:
			put_frame(&o, KEEL_WIRE_HELLO, 5, 0, 0, KEEL_HS_HELLO_LEN, hello, sizeof(hello));
			break;
		case F_HELLO_JUST_ABOVE:
			/* one byte over the largest handshake message */
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_WELCOME_LEN + 1, NULL,
				  KEEL_HS_WELCOME_LEN + 1);
			break;
		case F_HELLO_CLAIMS_60000:
			/* within the frame limit, far above the handshake's, and
			 * the bytes never come: waiting for them is the bug */
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, 60000, NULL, 0);
			break;
		case F_HELLO_64MIB: put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, 64u << 20, NULL, 0); break;
		case F_HELLO_4GIB: put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, UINT32_MAX, NULL, 0); break;
		case F_HELLO_SEQ_1:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 1, KEEL_HS_HELLO_LEN, hello, sizeof(hello));
			break;
		case F_HELLO_SHORT:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN - 1, hello,
				  KEEL_HS_HELLO_LEN - 1);
			break;
		case F_HELLO_RESERVED:
			hello[2] = 1;
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, hello, sizeof(hello));
			break;
		case F_HELLO_UNKNOWN_NODE:
		case F_HELLO_OUR_NODE:
		case F_HELLO_OTHER_CLUSTER:
			raw_hello_payload(&r, k == F_HELLO_OTHER_CLUSTER ? 6 : CLUSTER,
					  k == F_HELLO_UNKNOWN_NODE ? 9 : k == F_HELLO_OUR_NODE ? 1 : 2);
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, r.hello,
				  KEEL_HS_HELLO_LEN);
			break;
		case F_HELLO_OTHER_VERSION:
			keel_put_le16(hello, KEEL_TRANSPORT_PROTO_VERSION + 1);
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, hello, sizeof(hello));
			break;
		case F_HELLO_REPLAYED:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, replay, sizeof(replay));
			break;
		case F_WELCOME:
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 0, KEEL_HS_WELCOME_LEN, NULL,
				  KEEL_HS_WELCOME_LEN);
			break;
		case F_AUTH:
			put_frame(&o, KEEL_WIRE_AUTH, 0, 0, 0, KEEL_HS_AUTH_LEN, NULL, KEEL_HS_AUTH_LEN);
			break;
		case F_DATA: put_data(&o, 0, "data before anything"); break;
		case F_HALF_HEADER_THEN_EOF:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, NULL, 0);
			o.n = KEEL_WIRE_HDR_LEN / 2;
			break;
		}
		/* what a client that got away with it would send next */
		if (k != F_HALF_HEADER_THEN_EOF && k != F_HELLO_CLAIMS_60000)
			put_tail(&o, 1);
		send_all(fd, o.b, o.n);
		if (k == F_HALF_HEADER_THEN_EOF)
			shutdown(fd, SHUT_WR);
		expect_refused(fd, local_port(fd), &before, 0, 0, true, fresh_why(k), what);
		good_client(what);
	}
	keeper_check();
}

enum auth_case {
	A_HELLO_AGAIN,
	A_WELCOME,
	A_DATA,
	A_DATA_JUST_ABOVE,
	A_AUTH_WRONG_MAC,
	A_AUTH_REFLECTED,
	A_AUTH_LONG,
	A_AUTH_SEQ_GAP,
	A_AUTH_FLAGS,
	A_KIND_UNKNOWN,
	A_GARBAGE,
	A_COUNT
};

static const char *auth_why(int k)
{
	switch (k) {
	case A_HELLO_AGAIN: return "HELLO out of order";
	case A_WELCOME: return "unexpected frame kind 2";
	case A_DATA: return "unexpected frame kind 4";
	case A_DATA_JUST_ABOVE: return ETOOBIG_TEXT;
	case A_AUTH_WRONG_MAC:
	case A_AUTH_REFLECTED: return "client's proof of the cluster secret is wrong";
	case A_AUTH_LONG: return "AUTH has the wrong length";
	case A_AUTH_SEQ_GAP: return "frame out of sequence";
	default: return EPROTO_TEXT;
	}
}

Test(tcp_hostile, inbound_waiting_for_auth)
{
	keeper_open();
	for (int k = 0; k < A_COUNT; k++) {
		char what[64];
		snprintf(what, sizeof(what), "waiting for AUTH, case %d", k);
		struct counts before = counts_now();
		struct raw r = {0};
		raw_to_wait_auth(&r);
		log_since();
		struct out o = {.n = 0};
		uint8_t buf[KEEL_HS_WELCOME_LEN + 1];
		switch (k) {
		case A_HELLO_AGAIN: {
			struct raw r2;
			raw_hello_payload(&r2, CLUSTER, 2); /* a fresh nonce */
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 1, KEEL_HS_HELLO_LEN, r2.hello,
				  KEEL_HS_HELLO_LEN);
			break;
		}
		case A_WELCOME:
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 1, KEEL_HS_WELCOME_LEN, r.welcome,
				  KEEL_HS_WELCOME_LEN);
			break;
		case A_DATA: put_data(&o, 1, "data before AUTH"); break;
		case A_DATA_JUST_ABOVE:
			put_frame(&o, KEEL_WIRE_DATA, 9, 0, 1, KEEL_HS_WELCOME_LEN + 1, NULL,
				  KEEL_HS_WELCOME_LEN + 1);
			break;
		case A_AUTH_WRONG_MAC:
			memcpy(buf, r.auth, KEEL_HS_AUTH_LEN);
			buf[7] ^= 0x40;
			put_frame(&o, KEEL_WIRE_AUTH, 0, 0, 1, KEEL_HS_AUTH_LEN, buf, KEEL_HS_AUTH_LEN);
			break;
		case A_AUTH_REFLECTED:
			/* the server's own proof sent back: the right secret, the
			 * wrong label */
			put_frame(&o, KEEL_WIRE_AUTH, 0, 0, 1, KEEL_HS_AUTH_LEN,
				  r.welcome + KEEL_HS_HELLO_LEN, KEEL_HS_AUTH_LEN);
			break;
		case A_AUTH_LONG:
			memcpy(buf, r.auth, KEEL_HS_AUTH_LEN);
			buf[KEEL_HS_AUTH_LEN] = 0;
			put_frame(&o, KEEL_WIRE_AUTH, 0, 0, 1, KEEL_HS_AUTH_LEN + 1, buf,
				  KEEL_HS_AUTH_LEN + 1);
			break;
		case A_AUTH_SEQ_GAP:
			put_frame(&o, KEEL_WIRE_AUTH, 0, 0, 2, KEEL_HS_AUTH_LEN, r.auth, KEEL_HS_AUTH_LEN);
			break;
		case A_AUTH_FLAGS:
			put_frame(&o, KEEL_WIRE_AUTH, 0, 2, 1, KEEL_HS_AUTH_LEN, r.auth, KEEL_HS_AUTH_LEN);
			break;
		case A_KIND_UNKNOWN: put_frame(&o, 200, 0, 0, 1, 0, NULL, 0); break;
		case A_GARBAGE: put(&o, garbage, sizeof(garbage) - 1); break;
		}
		/* then the right AUTH and DATA: too late */
		uint32_t s = k == A_AUTH_SEQ_GAP ? 3 : 2;
		put_frame(&o, KEEL_WIRE_AUTH, 0, 0, s, KEEL_HS_AUTH_LEN, r.auth, KEEL_HS_AUTH_LEN);
		put_tail(&o, s + 1);
		send_all(r.fd, o.b, o.n);
		expect_refused(r.fd, local_port(r.fd), &before, 0, 0, true, auth_why(k), what);
		good_client(what);
	}
	keeper_check();
}

enum up_case {
	U_HELLO,
	U_WELCOME,
	U_AUTH,
	U_DATA_SEQ_SKIPPED,
	U_DATA_SEQ_REPEATED,
	U_DATA_OVER_LIMIT,
	U_DATA_4GIB,
	U_DATA_FLAGS,
	U_KIND_UNKNOWN,
	U_GARBAGE,
	U_COUNT
};

static const char *up_why(int k)
{
	switch (k) {
	case U_HELLO:
	case U_WELCOME:
	case U_AUTH: return "handshake frame after the handshake";
	case U_DATA_SEQ_SKIPPED:
	case U_DATA_SEQ_REPEATED: return "frame out of sequence";
	case U_DATA_OVER_LIMIT:
	case U_DATA_4GIB: return ETOOBIG_TEXT;
	default: return EPROTO_TEXT;
	}
}

Test(tcp_hostile, inbound_up)
{
	keeper_open();
	for (int k = 0; k < U_COUNT; k++) {
		char what[64];
		snprintf(what, sizeof(what), "up, case %d", k);
		struct counts before = counts_now();
		struct raw r = {0};
		raw_up(&r);
		raw_echo(&r, "before", what); /* up, and taking DATA */
		log_since();
		struct out o = {.n = 0};
		put_data(&o, r.tx_seq++, "just before the bad frame"); /* delivered */
		uint32_t s = r.tx_seq;
		switch (k) {
		case U_HELLO:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, s, KEEL_HS_HELLO_LEN, r.hello,
				  KEEL_HS_HELLO_LEN);
			break;
		case U_WELCOME:
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, s, KEEL_HS_WELCOME_LEN, r.welcome,
				  KEEL_HS_WELCOME_LEN);
			break;
		case U_AUTH:
			put_frame(&o, KEEL_WIRE_AUTH, 0, 0, s, KEEL_HS_AUTH_LEN, r.auth, KEEL_HS_AUTH_LEN);
			break;
		case U_DATA_SEQ_SKIPPED: put_data(&o, s + 1, "a frame went missing"); break;
		case U_DATA_SEQ_REPEATED: put_data(&o, s - 1, "a frame again"); break;
		case U_DATA_OVER_LIMIT:
			put_frame(&o, KEEL_WIRE_DATA, 9, 0, s, MAX_FRAME + 1, NULL, MAX_FRAME + 1);
			break;
		case U_DATA_4GIB: put_frame(&o, KEEL_WIRE_DATA, 9, 0, s, UINT32_MAX, NULL, 0); break;
		case U_DATA_FLAGS:
			put_frame(&o, KEEL_WIRE_DATA, 9, 0x8000, s, 4, "abcd", 4);
			break;
		case U_KIND_UNKNOWN: put_frame(&o, 5, 0, 0, s, 4, "abcd", 4); break;
		case U_GARBAGE: put(&o, garbage, sizeof(garbage) - 1); break;
		}
		put_tail(&o, s + 1); /* must not be delivered */
		send_all(r.fd, o.b, o.n);
		expect_refused(r.fd, local_port(r.fd), &before, 2, 1, true, up_why(k), what);
		good_client(what);
	}
	keeper_check();
}

/* ---- outbound: the endpoint dials node 3, a raw server here -------------- */

static void dial_node3(struct keel_shard *on, void *arg)
{
	struct keel_conn *c;
	int rc = keel_transport_connect(E.t, (struct keel_addr){.node = 3, .shard = 0}, &c);
	if (rc < 0)
		keel_error("test: dialling node 3: %s", keel_strerror(rc));
}

struct raw_srv {
	int fd;
	struct keel_hs hs;
	uint8_t hello[KEEL_HS_HELLO_LEN];
	uint8_t welcome[KEEL_HS_WELCOME_LEN];
	uint32_t tx_seq, rx_seq;
};

/* The endpoint dials; the raw server accepts and reads the HELLO. */
static void srv_accept(struct raw_srv *s)
{
	cr_assert_eq(keel_shard_post_external(keel_runtime_shard(E.rt, 0), dial_node3, NULL), 0);
	cr_assert(wait_in(E.rawlfd), "the endpoint did not dial");
	s->fd = accept4(E.rawlfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(s->fd, 0);
	struct keel_wire_hdr h;
	cr_assert(read_frame(s->fd, &h, s->hello, sizeof(s->hello)), "no HELLO");
	cr_assert(h.kind == KEEL_WIRE_HELLO && h.seq == 0 && h.len == KEEL_HS_HELLO_LEN);
	s->rx_seq = 1;
}

/* A WELCOME for that HELLO from (cluster, node 3 or another). */
static void srv_welcome(struct raw_srv *s, uint64_t cluster, uint32_t node)
{
	keel_hs_server_start(&s->hs, (const uint8_t *)SECRET, strlen(SECRET), cluster, node, 0);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_hs_server_on_hello(&s->hs, s->hello, KEEL_HS_HELLO_LEN, NULL, s->welcome,
					     err),
		     0, "%s", err);
}

/* Handshake done: WELCOME sent, the endpoint's AUTH read and checked. */
static void srv_up(struct raw_srv *s)
{
	srv_accept(s);
	srv_welcome(s, CLUSTER, 3);
	struct out o = {.n = 0};
	put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, s->tx_seq++, KEEL_HS_WELCOME_LEN, s->welcome,
		  KEEL_HS_WELCOME_LEN);
	send_all(s->fd, o.b, o.n);
	struct keel_wire_hdr h;
	uint8_t auth[KEEL_HS_AUTH_LEN];
	cr_assert(read_frame(s->fd, &h, auth, sizeof(auth)), "no AUTH");
	cr_assert(h.kind == KEEL_WIRE_AUTH && h.seq == 1);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_hs_server_on_auth(&s->hs, auth, h.len, err), 0, "%s", err);
	s->rx_seq = 2;
}

static void good_server(const char *after)
{
	struct counts b = counts_now();
	struct raw_srv s = {0};
	srv_up(&s);
	struct out o = {.n = 0};
	put_data(&o, s.tx_seq++, "well-behaved server");
	send_all(s.fd, o.b, o.n);
	struct keel_wire_hdr h;
	uint8_t p[64];
	cr_assert(read_frame(s.fd, &h, p, sizeof(p)), "after %s: no echo from the endpoint", after);
	cr_assert(h.kind == KEEL_WIRE_DATA && h.seq == s.rx_seq && h.len == 19);
	close(s.fd);
	struct counts a = counts_now();
	cr_assert(a.up_out == b.up_out + 1 && a.recv_out == b.recv_out + 1,
		  "after %s: a well-behaved server was not served", after);
}

enum welcome_case {
	W_HELLO,
	W_AUTH,
	W_DATA,
	W_WELCOME_WRONG_MAC,
	W_WELCOME_SHORT,
	W_WELCOME_JUST_ABOVE,
	W_WELCOME_OTHER_NODE,
	W_WELCOME_OTHER_CLUSTER,
	W_WELCOME_SEQ_1,
	W_WELCOME_REPLAYED,
	W_KIND_UNKNOWN,
	W_GARBAGE,
	W_COUNT
};

static const char *welcome_why(int k)
{
	switch (k) {
	case W_HELLO: return "unexpected frame kind 1";
	case W_AUTH: return "unexpected frame kind 3";
	case W_DATA: return "unexpected frame kind 4";
	case W_WELCOME_WRONG_MAC:
	case W_WELCOME_REPLAYED: return "server's proof of the cluster secret is wrong";
	case W_WELCOME_SHORT: return "WELCOME has the wrong length";
	case W_WELCOME_JUST_ABOVE: return ETOOBIG_TEXT;
	case W_WELCOME_OTHER_NODE: return "dialled node 3 shard 0 but reached node 4";
	case W_WELCOME_OTHER_CLUSTER: return "is in cluster 6";
	case W_WELCOME_SEQ_1: return "frame out of sequence";
	default: return EPROTO_TEXT;
	}
}

Test(tcp_hostile, outbound_waiting_for_welcome)
{
	uint8_t old_welcome[KEEL_HS_WELCOME_LEN];
	{
		/* a WELCOME from an earlier connection, for the replay case */
		struct raw_srv s = {0};
		srv_accept(&s);
		srv_welcome(&s, CLUSTER, 3);
		memcpy(old_welcome, s.welcome, sizeof(old_welcome));
		close(s.fd);
		log_since();
	}
	for (int k = 0; k < W_COUNT; k++) {
		char what[64];
		snprintf(what, sizeof(what), "waiting for WELCOME, case %d", k);
		struct raw_srv s = {0};
		srv_accept(&s);
		log_since();
		struct counts before = counts_now();
		struct out o = {.n = 0};
		switch (k) {
		case W_HELLO:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, 0, KEEL_HS_HELLO_LEN, s.hello,
				  KEEL_HS_HELLO_LEN);
			break;
		case W_AUTH: put_frame(&o, KEEL_WIRE_AUTH, 0, 0, 0, KEEL_HS_AUTH_LEN, NULL, 32); break;
		case W_DATA: put_data(&o, 0, "data before WELCOME"); break;
		case W_WELCOME_WRONG_MAC:
			srv_welcome(&s, CLUSTER, 3);
			s.welcome[KEEL_HS_HELLO_LEN + 3] ^= 1;
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 0, KEEL_HS_WELCOME_LEN, s.welcome,
				  KEEL_HS_WELCOME_LEN);
			break;
		case W_WELCOME_SHORT:
			srv_welcome(&s, CLUSTER, 3);
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 0, KEEL_HS_WELCOME_LEN - 1, s.welcome,
				  KEEL_HS_WELCOME_LEN - 1);
			break;
		case W_WELCOME_JUST_ABOVE:
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 0, KEEL_HS_WELCOME_LEN + 1, NULL,
				  KEEL_HS_WELCOME_LEN + 1);
			break;
		case W_WELCOME_OTHER_NODE:
		case W_WELCOME_OTHER_CLUSTER:
			/* node 4 knows the secret but is not who was dialled;
			 * the other cluster's identity is patched in (its mac
			 * is never reached) */
			srv_welcome(&s, CLUSTER, k == W_WELCOME_OTHER_NODE ? 4 : 3);
			if (k == W_WELCOME_OTHER_CLUSTER)
				keel_put_le64(s.welcome + 4, 6);
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 0, KEEL_HS_WELCOME_LEN, s.welcome,
				  KEEL_HS_WELCOME_LEN);
			break;
		case W_WELCOME_SEQ_1:
			srv_welcome(&s, CLUSTER, 3);
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 1, KEEL_HS_WELCOME_LEN, s.welcome,
				  KEEL_HS_WELCOME_LEN);
			break;
		case W_WELCOME_REPLAYED:
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, 0, KEEL_HS_WELCOME_LEN, old_welcome,
				  KEEL_HS_WELCOME_LEN);
			break;
		case W_KIND_UNKNOWN: put_frame(&o, 77, 0, 0, 0, 0, NULL, 0); break;
		case W_GARBAGE: put(&o, garbage, sizeof(garbage) - 1); break;
		}
		put_tail(&o, 1);
		send_all(s.fd, o.b, o.n);
		expect_refused(s.fd, 0, &before, 0, 0, false, welcome_why(k), what);
		good_server(what);
	}
}

Test(tcp_hostile, outbound_up)
{
	for (int k = 0; k < U_COUNT; k++) {
		char what[64];
		snprintf(what, sizeof(what), "outbound up, case %d", k);
		struct counts before = counts_now();
		struct raw_srv s = {0};
		srv_up(&s);
		log_since();
		struct out o = {.n = 0};
		put_data(&o, s.tx_seq++, "just before the bad frame"); /* delivered */
		uint32_t q = s.tx_seq;
		switch (k) {
		case U_HELLO:
			put_frame(&o, KEEL_WIRE_HELLO, 0, 0, q, KEEL_HS_HELLO_LEN, s.hello,
				  KEEL_HS_HELLO_LEN);
			break;
		case U_WELCOME:
			put_frame(&o, KEEL_WIRE_WELCOME, 0, 0, q, KEEL_HS_WELCOME_LEN, s.welcome,
				  KEEL_HS_WELCOME_LEN);
			break;
		case U_AUTH: put_frame(&o, KEEL_WIRE_AUTH, 0, 0, q, KEEL_HS_AUTH_LEN, NULL, 32); break;
		case U_DATA_SEQ_SKIPPED: put_data(&o, q + 1, "a frame went missing"); break;
		case U_DATA_SEQ_REPEATED: put_data(&o, q - 1, "a frame again"); break;
		case U_DATA_OVER_LIMIT:
			put_frame(&o, KEEL_WIRE_DATA, 9, 0, q, MAX_FRAME + 1, NULL, MAX_FRAME + 1);
			break;
		case U_DATA_4GIB: put_frame(&o, KEEL_WIRE_DATA, 9, 0, q, UINT32_MAX, NULL, 0); break;
		case U_DATA_FLAGS: put_frame(&o, KEEL_WIRE_DATA, 9, 0x8000, q, 4, "abcd", 4); break;
		case U_KIND_UNKNOWN: put_frame(&o, 5, 0, 0, q, 4, "abcd", 4); break;
		case U_GARBAGE: put(&o, garbage, sizeof(garbage) - 1); break;
		}
		put_tail(&o, q + 1);
		send_all(s.fd, o.b, o.n);
		expect_refused(s.fd, 0, &before, 1, 1, false, up_why(k), what);
		good_server(what);
	}
}

/* ---- admission (issue 18): strangers' connections before the handshake --- */

/* A connection to the endpoint from the source address src (127.0.0.0/8
 * is all loopback on Linux), sending nothing. */
static int dial_from(const char *src)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in s = {.sin_family = AF_INET};
	cr_assert_eq(inet_pton(AF_INET, src, &s.sin_addr), 1);
	cr_assert_eq(bind(fd, (struct sockaddr *)&s, sizeof(s)), 0, "bind %s: %s", src,
		     strerror(errno));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)E.port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s", strerror(errno));
	return fd;
}

/* The endpoint sent REFUSE with `reason`, then closed fd. */
static void expect_refuse(int fd, uint32_t reason, const char *what)
{
	struct keel_wire_hdr h;
	uint8_t p[64];
	cr_assert(read_frame(fd, &h, p, sizeof(p)), "%s: no REFUSE frame", what);
	uint32_t got = 0;
	cr_assert(h.kind == KEEL_WIRE_REFUSE && keel_wire_decode_refuse(p, h.len, &got) == 0,
		  "%s: kind %u len %u instead of a REFUSE", what, h.kind, h.len);
	cr_assert_eq(got, reason, "%s: REFUSE reason %u (%s), expected %u (%s)", what, got,
		     keel_wire_refuse_text(got), reason, keel_wire_refuse_text(reason));
	cr_assert_eq(closed_by_peer(fd), CLOSED, "%s: not closed after the REFUSE", what);
}

/* fd is still open and the endpoint has said nothing on it. */
static void expect_pending(int fd, const char *what)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 0), 0, "%s: the endpoint answered or closed it", what);
}

Test(tcp_hostile, one_address_cannot_hold_more_than_its_share_of_handshakes)
{
	keeper_open();
	int fd[8];
	for (int i = 0; i < 8; i++)
		fd[i] = dial_from("127.0.0.2");
	int extra = dial_from("127.0.0.2");
	expect_refuse(extra, KEEL_REFUSE_ADDR_BUSY, "the 9th connection from 127.0.0.2");
	close(extra);
	for (int i = 0; i < 8; i++)
		expect_pending(fd[i], "one of the first 8 from 127.0.0.2");
	const char *log = log_since();
	cr_assert(line_with(log, "refused 127.0.0.2:", "8 unauthenticated connections from that address"),
		  "no log line for the refused connection; the log said:\n%s", log);
	/* Another address, and a peer's, are not affected. */
	int other = dial_from("127.0.0.3");
	good_client("8 pending connections from 127.0.0.2");
	expect_pending(other, "a connection from 127.0.0.3");
	close(other);
	for (int i = 0; i < 8; i++)
		close(fd[i]);
	keeper_check();
}

Test(tcp_hostile, a_full_table_makes_room_for_a_peer_and_shares_among_strangers)
{
	keeper_open();
	/* 16 stranger addresses x 8: the whole pending table (128). */
	enum { NADDR = 16, PER = 8 };
	int fd[NADDR][PER];
	char a[32];
	for (int k = 0; k < NADDR; k++)
		for (int i = 0; i < PER; i++) {
			snprintf(a, sizeof(a), "127.0.1.%d", 10 + k);
			fd[k][i] = dial_from(a);
		}
	/* A connection from a peer's address (127.0.0.1: the peers table)
	 * evicts the oldest connection of the address holding the most. */
	good_client("a full pending table");
	expect_refuse(fd[0][0], KEEL_REFUSE_EVICTED, "the oldest stranger's connection");
	fd[0][0] = -1;
	/* 127 pending: a stranger from a new address gets the free slot... */
	int n1 = dial_from("127.0.1.40");
	/* ...and with the table full, one from another new address takes the
	 * oldest slot of an address holding the most (8 > its 0 + 1)... */
	int n2 = dial_from("127.0.1.41");
	expect_refuse(fd[1][0], KEEL_REFUSE_EVICTED, "the oldest of an address with 8");
	fd[1][0] = -1;
	/* ...while an address at its cap is refused. */
	snprintf(a, sizeof(a), "127.0.1.%d", 10 + 2);
	int capped = dial_from(a);
	expect_refuse(capped, KEEL_REFUSE_ADDR_BUSY, "a 9th connection from a full address");
	close(capped);
	expect_pending(n1, "the stranger admitted into the free slot");
	expect_pending(n2, "the stranger admitted by eviction");
	const char *log = log_since();
	cr_assert(line_with(log, "evicted unauthenticated 127.0.1.10:", "to admit 127.0.0.1:"),
		  "no log line for the eviction; the log said:\n%s", log);
	close(n1);
	close(n2);
	for (int k = 0; k < NADDR; k++)
		for (int i = 0; i < PER; i++)
			if (fd[k][i] >= 0)
				close(fd[k][i]);
	keeper_check();
}

Test(tcp_hostile, a_refused_dial_names_the_real_cause)
{
	/* The endpoint dials node 3 (the raw server), which refuses with each
	 * reason in turn: the endpoint's log line names it. */
	static const struct {
		uint32_t reason;
		const char *text;
	} cases[] = {
		{KEEL_REFUSE_ADDR_BUSY, "too many unauthenticated connections from our address"},
		{KEEL_REFUSE_FULL, "pending-handshake table is full"},
		{KEEL_REFUSE_TIMEOUT, "longer than its deadline"},
		{KEEL_REFUSE_NOT_PEER, "not in its peers table"},
		{999, "unknown reason (reason 999)"},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(cases); i++) {
		struct raw_srv s;
		memset(&s, 0, sizeof(s));
		srv_accept(&s);
		uint8_t f[KEEL_WIRE_HDR_LEN + KEEL_WIRE_REFUSE_LEN];
		keel_wire_encode_refuse(f, 0, cases[i].reason);
		send_all(s.fd, f, sizeof(f));
		cr_assert_eq(closed_by_peer(s.fd), CLOSED, "case %zu: the dial stayed open", i);
		close(s.fd);
		char *log = NULL;
		for (int w = 0; w < 200; w++) {
			log = log_since();
			if (line_with(log, "node 3 refused the handshake", cases[i].text))
				break;
			usleep(10000);
			log = NULL;
		}
		cr_assert(log, "case %zu: no log line naming '%s'", i, cases[i].text);
	}
}
