/* The node configuration: a good file, the documented example, and errors
 * that name file, line and reason for every mistake issue 18 lists. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/keel-cfg-XXXXXX");
	cr_assert(mkdtemp(dir));
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", dir);
	int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "a-cluster-secret-of-some-length\n", 32), 32);
	close(fd);
	snprintf(p, sizeof(p), "%s/open-secret", dir);
	fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "a-cluster-secret-of-some-length\n", 32), 32);
	fchmod(fd, 0644);
	close(fd);
	snprintf(p, sizeof(p), "%s/short", dir);
	fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	cr_assert_eq(write(fd, "short\n", 6), 6);
	close(fd);
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(config, .init = setup, .fini = teardown);

static const char good[] =
	"[node]\n"
	"id = 2\n"
	"cluster = 42\n"
	"listen = 127.0.0.1:7200\n"
	"shards = 2\n"
	"max_frame = 1M\n"
	"peer_timeout_ms = 4500\n"
	"reactor = epoll\n"
	"secret_file = secret\n"
	"[peers]\n"
	"1 = 127.0.0.1:7100\n"
	"2 = 127.0.0.1:7200\n"
	"3 = [::1]:7300\n"
	"[dpdk]\n"
	"eal = --no-huge --in-memory\n";

Test(config, good_file)
{
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_node_config_parse(good, "n2.ini", dir, &cfg, err), 0, "%s", err);
	cr_expect_eq(cfg.node_id, 2);
	cr_expect_eq(cfg.cluster_id, 42);
	cr_expect_str_eq(cfg.listen_host, "127.0.0.1");
	cr_expect_eq(cfg.listen_port, 7200);
	cr_expect_eq(cfg.shards, 2);
	cr_expect_eq(cfg.max_frame, 1u << 20);
	cr_expect_eq(cfg.reactor, KEEL_REACTOR_EPOLL);
	cr_expect_str_eq(cfg.transport, "tcp");
	cr_expect_eq(cfg.secret_len, 31, "the trailing newline is not part of the secret");
	cr_expect_eq(memcmp(cfg.secret, "a-cluster-secret-of-some-length", 31), 0);
	cr_expect_eq(cfg.npeers, 3);
	cr_expect_str_eq(keel_node_config_peer(&cfg, 3)->host, "::1");
	cr_expect_eq(keel_node_config_peer(&cfg, 3)->port, 7300);
	cr_expect_null(keel_node_config_peer(&cfg, 4));
	cr_expect_str_eq(keel_node_config_get(&cfg, "dpdk", "eal"), "--no-huge --in-memory");
	struct keel_transport_config tc;
	keel_node_config_transport(&cfg, 1, &tc);
	cr_expect_eq(tc.self.node, 2);
	cr_expect_eq(tc.self.shard, 1);
	cr_expect_eq(tc.max_frame, 1u << 20);
	cr_expect_eq(tc.peer_timeout_ms, 4500);
	cr_expect_eq(tc.secret, cfg.secret);
	keel_node_config_free(&cfg);
}

static void expect_error(const char *text, const char *want)
{
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_node_config_parse(text, "bad.ini", dir, &cfg, err);
	cr_expect_lt(rc, 0, "accepted: %s", text);
	cr_expect(strstr(err, want), "error '%s' does not contain '%s'", err, want);
}

Test(config, errors_name_file_and_line)
{
	expect_error("[node]\nid = 1\ncluster = 1\nlisten = 127.0.0.1\n",
		     "bad.ini:4: [node] listen: '127.0.0.1' is not host:port");
	expect_error("[node]\nid = 0\n", "bad.ini:2: [node] id");
	expect_error("[node]\nid = 1\nbogus = 3\n", "bad.ini:3: [node] unknown key 'bogus'");
	expect_error("[node]\nid = 1\nlisten = 127.0.0.1:99999\n", "bad.ini:3:");
	expect_error("[node]\nid = 1\ntransport = carrier-pigeon\n",
		     "bad.ini:3: [node] transport: 'carrier-pigeon' is not in this build");
	expect_error("[node]\nid=1\nmax_frame = 2G\n", "bad.ini:3: [node] max_frame");
	expect_error("[node]\nid=1\npeer_timeout_ms = 999\n", "bad.ini:3: [node] peer_timeout_ms");
	expect_error("[node]\nid=1\nreactor = kqueue\n",
		     "bad.ini:3: [node] reactor: 'kqueue' is not auto, io_uring or epoll");
	expect_error("[node]\nid=1\nsecret = hunter2\n", "never in the config");
	expect_error("[peers]\nx = 127.0.0.1:1\n", "bad.ini:2: [peers] 'x' is not a node id");
	expect_error("[peers]\n1 = a:1\n1 = b:2\n",
		     "bad.ini:3: [peers] node 1 listed twice (first on line 2)");
	expect_error("[node\n", "bad.ini:1: '[node' is not a section header (no ']')");
}

Test(config, missing_keys)
{
	expect_error("[node]\ncluster = 1\n", "bad.ini: [node] id is missing");
	expect_error("[node]\nid = 1\ncluster = 1\nlisten = 127.0.0.1:1\n",
		     "secret_file is missing");
	expect_error("[node]\nid = 1\ncluster = 1\nlisten = 127.0.0.1:1\nsecret_file = secret\n"
		     "[peers]\n1 = 127.0.0.1:2\n",
		     "disagrees with [node] listen");
}

Test(config, secret_file_checks)
{
	expect_error("[node]\nid=1\nsecret_file = open-secret\n",
		     "bad.ini:3: [node] secret_file");
	expect_error("[node]\nid=1\nsecret_file = open-secret\n", "mode 0644");
	expect_error("[node]\nid=1\nsecret_file = short\n", "shorter than 16 bytes");
	expect_error("[node]\nid=1\nsecret_file = nope\n", "No such file");
}

Test(config, load_from_file_resolves_secret_next_to_it)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/n2.ini", dir);
	FILE *f = fopen(p, "w");
	cr_assert(f);
	fputs(good, f);
	fclose(f);
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_node_config_load(p, &cfg, err), 0, "%s", err);
	cr_expect_eq(cfg.node_id, 2);
	keel_node_config_free(&cfg);
	char err2[KEEL_ERRMSG_LEN] = "";
	cr_expect_lt(keel_node_config_load("/nonexistent/x.ini", &cfg, err2), 0);
	cr_expect(strstr(err2, "/nonexistent/x.ini"), "%s", err2);
}

/* The example at the top of include/keel/config.h, exactly as documented:
 * the comment block from " *   [node]" to the first line that is not part
 * of it, without the " *   " prefix. */
Test(config, documented_example_parses)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/include/keel/config.h", KEEL_SRC_ROOT);
	FILE *f = fopen(path, "r");
	cr_assert(f, "%s", path);
	char text[4096] = "", line[256];
	bool in = false;
	while (fgets(line, sizeof(line), f)) {
		if (!in && !strcmp(line, " *   [node]\n"))
			in = true;
		if (!in)
			continue;
		if (strncmp(line, " *   ", 5))
			break;
		strcat(text, line + 5);
	}
	fclose(f);
	cr_assert(strstr(text, "secret_file = secret") && strstr(text, "# this node's id"),
		  "example not found in %s:\n%s", path, text);
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_node_config_parse(text, "config.h-example", dir, &cfg, err), 0,
		     "%s\n--- text:\n%s", err, text);
	cr_expect_eq(cfg.node_id, 1);
	cr_expect_eq(cfg.cluster_id, 42);
	cr_expect_str_eq(cfg.listen_host, "127.0.0.1");
	cr_expect_eq(cfg.listen_port, 7100);
	cr_expect_eq(cfg.shards, 2);
	cr_expect_str_eq(cfg.transport, "tcp");
	cr_expect_eq(cfg.max_frame, 16u << 20);
	cr_expect_eq(cfg.handshake_timeout_ms, 5000);
	cr_expect_eq(cfg.peer_timeout_ms, 30000);
	cr_expect_eq(cfg.reactor, KEEL_REACTOR_AUTO);
	cr_expect_eq(cfg.npeers, 2);
	cr_expect_eq(cfg.peer_lines[1], 18, "peer 2 is on line 18 of the example");
	keel_node_config_free(&cfg);
}

static const char head[] = "[node]\nid = 1\ncluster = 1\nlisten = 127.0.0.1:7100\n"
			   "secret_file = secret\n"; /* lines 1-5 */

static void expect_ok(const char *text)
{
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_expect_eq(keel_node_config_parse(text, "ok.ini", dir, &cfg, err), 0, "%s\n--- text:\n%s",
		     err, text);
	keel_node_config_free(&cfg);
}

static char *cat(const char *a, const char *b)
{
	static char buf[8192];
	snprintf(buf, sizeof(buf), "%s%s", a, b);
	return buf;
}

Test(config, inline_comments)
{
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	const char *text = "[node]   # the node\n"
			   "id = 3 # three\n"
			   "cluster = 9 ; nine\n"
			   "listen = 127.0.0.1:7300\t# tab before\n"
			   "   # an indented comment line\n"
			   "\t; another\n"
			   "secret_file = secret\n"
			   "[mr]\n"
			   "data = /d#1;x   # '#' and ';' inside a word are kept\n";
	cr_assert_eq(keel_node_config_parse(text, "c.ini", dir, &cfg, err), 0, "%s", err);
	cr_expect_eq(cfg.node_id, 3);
	cr_expect_eq(cfg.cluster_id, 9);
	cr_expect_eq(cfg.listen_port, 7300);
	cr_expect_str_eq(keel_node_config_get(&cfg, "mr", "data"), "/d#1;x");
	cr_expect_eq(cfg.entries[0].line, 9);
	keel_node_config_free(&cfg);
}

Test(config, long_lines)
{
	char text[4096], pad[400];
	memset(pad, 'x', 250);
	pad[250] = '\0';
	/* a long comment is fine, and the lines after it keep their numbers */
	snprintf(text, sizeof(text), "%s# %s\n[mr]\ndata = a\nbogus = 1\n", head, pad);
	expect_error(text, "bad.ini:9: [mr] unknown key 'bogus' (known: data)");
	snprintf(text, sizeof(text), "%s[mr]\ndata = /a   # %s\n", head, pad);
	expect_ok(text);
	/* a long value is refused with its line number and the limit */
	snprintf(text, sizeof(text), "%s[mr]\ndata = /%s\n", head, pad);
	expect_error(text, "bad.ini:7: line too long: 258 characters without comments and blanks, "
			   "at most 199");
	/* 199 is the limit exactly */
	pad[199 - 8] = '\0';
	snprintf(text, sizeof(text), "%s[mr]\ndata = /%s\n", head, pad);
	expect_ok(text);
	pad[199 - 8] = 'x';
	pad[200 - 8] = '\0';
	snprintf(text, sizeof(text), "%s[mr]\ndata = /%s\n", head, pad);
	expect_error(text, "bad.ini:7: line too long: 200 characters");
}

Test(config, unknown_sections)
{
	expect_error(cat(head, "[peer]\n1 = 127.0.0.1:7100\n"),
		     "bad.ini:6: unknown section [peer] (did you mean [peers]?)");
	expect_error(cat(head, "[peer]\n"), "bad.ini:6: unknown section [peer]");
	expect_error(cat(head, "[zzzzzzzz]\n"),
		     "bad.ini:6: unknown section [zzzzzzzz] (known: node, peers, dpdk, mr, log,");
	expect_error(cat(head, "[x]\n"), "bad.ini:6: unknown section [x] (known: node,");
	expect_error(cat(head, "[Node]\n"), "bad.ini:6: unknown section [Node] (did you mean [node]?)");
	expect_error(cat(head, "[peers] 1 = 127.0.0.1:7100\n"),
		     "bad.ini:6: text after the section header: ' 1 = 127.0.0.1:7100'");
	expect_error(cat(head, "[]\n"), "bad.ini:6: '[]' is not a section name");
	/* the sections of other layers pass */
	expect_ok(cat(head, "[dpdk]\neal = --no-huge\n[raft]\n[log]\nprotocol = raft\n[http]\n"));
}

Test(config, repeated_keys)
{
	expect_error("[node]\nid = 1\ncluster = 1\nid = 2\n",
		     "bad.ini:4: [node] id given twice (first on line 2)");
	expect_error(cat(head, "listen = 127.0.0.1:7101\n"),
		     "bad.ini:6: [node] listen given twice (first on line 4)");
	expect_error(cat(head, "[mr]\ndata = /a\n[peers]\n[mr]\ndata = /b\n"),
		     "bad.ini:10: [mr] data given twice (first on line 7)");
	expect_error(cat(head, "[dpdk]\neal = a\neal = b\n"),
		     "bad.ini:8: [dpdk] eal given twice (first on line 7)");
	/* keys a layer declares repeatable */
	expect_ok(cat(head, "[dpdk]\npeer = 2 02:00:00:00:00:02 10.0.0.2\n"
			    "peer = 3 02:00:00:00:00:03 10.0.0.3\n"));
}

Test(config, duplicate_peer_addresses)
{
	expect_error(cat(head, "[peers]\n1 = 127.0.0.1:7100\n2 = 127.0.0.1:7200\n"
			       "3 = 127.0.0.1:7200\n"),
		     "bad.ini:9: [peers] 3 = 127.0.0.1:7200: the same address as node 2 (line 8)");
	expect_error(cat(head, "[peers]\n2 = 127.0.0.1:7100\n"),
		     "bad.ini:7: [peers] 2 = 127.0.0.1:7100 is this node's own listen address (line 4)");
	expect_error(cat(head, "[peers]\n1 = 127.0.0.1:7101\n"),
		     "bad.ini:7: [peers] 1 = 127.0.0.1:7101 disagrees with [node] listen");
}

Test(config, syntax)
{
	expect_error(cat(head, "listen 127.0.0.1\n"),
		     "bad.ini:6: 'listen 127.0.0.1' is not 'key = value' or a [section] header");
	expect_error(cat(head, "= 5\n"), "bad.ini:6: '= 5': a value without a key");
	expect_error("id = 1\n", "bad.ini:1: 'id' outside any [section]");
	expect_error("", "bad.ini: no [node] section");
	expect_error("# only a comment\n", "bad.ini: no [node] section");
	/* the first error is the one reported, with its own line */
	expect_error("[node]\nid = x\n[peer]\n", "bad.ini:2: [node] id: 'x' is not a node id");
	expect_error("[node]\nid = 1\n[peer]\nid = x\n", "bad.ini:3: unknown section [peer]");
	/* CRLF line ends and a UTF-8 BOM */
	expect_ok("\xef\xbb\xbf[node]\r\nid = 1\r\ncluster = 1\r\nlisten = 127.0.0.1:7100\r\n"
		  "secret_file = secret\r\n");
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "w");
	cr_assert(f, "%s", path);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

Test(config, load_errors)
{
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "", want[256];
	cr_expect_eq(keel_node_config_load(dir, &cfg, err), KEEL_ECONFIG);
	snprintf(want, sizeof(want), "%s: is a directory, not a configuration file", dir);
	cr_expect_str_eq(err, want);
	char p[128];
	snprintf(p, sizeof(p), "%s/nul.ini", dir);
	write_file(p, "[node]\nid = 1\0\n", 15);
	cr_expect_eq(keel_node_config_load(p, &cfg, err), KEEL_ECONFIG);
	snprintf(want, sizeof(want), "%s:2: a NUL byte (this is not a text file)", p);
	cr_expect_str_eq(err, want);
	cr_expect_lt(keel_node_config_load("/dev/null", &cfg, err), 0);
	cr_expect(strstr(err, "/dev/null: not a regular file"), "%s", err);
	snprintf(p, sizeof(p), "%s/fifo", dir);
	cr_assert_eq(mkfifo(p, 0600), 0);
	snprintf(want, sizeof(want), "%s/fifo.ini", dir);
	char text[256];
	snprintf(text, sizeof(text), "[node]\nid = 1\nsecret_file = fifo\n");
	write_file(want, text, strlen(text));
	/* a secret_file that is a FIFO is refused, not waited on */
	cr_expect_eq(keel_node_config_load(want, &cfg, err), KEEL_ECONFIG);
	cr_expect(strstr(err, ":3: [node] secret_file") && strstr(err, "not a regular file"), "%s",
		  err);
	keel_node_config_free(&cfg); /* harmless after a failed load */
}

static int validate(const char *peers, unsigned shards, char *err)
{
	char text[1024];
	snprintf(text, sizeof(text), "%sshards = %u\n[peers]\n%s", head, shards, peers);
	struct keel_node_config cfg;
	int rc = keel_node_config_parse(text, "v.ini", dir, &cfg, err);
	cr_assert_eq(rc, 0, "%s", err);
	rc = keel_node_config_validate(&cfg, err);
	keel_node_config_free(&cfg);
	return rc;
}

Test(config, validate_resolves_hosts)
{
	char err[KEEL_ERRMSG_LEN] = "";
	cr_expect_eq(validate("1 = 127.0.0.1:7100\n2 = localhost:7200\n3 = [::1]:7300\n", 2, err), 0,
		     "%s", err);
	/* RFC 6761: .invalid never resolves */
	cr_expect_eq(validate("1 = 127.0.0.1:7100\n2 = nosuch.invalid:7200\n", 1, err), KEEL_ECONFIG);
	cr_expect(strstr(err, "v.ini:9: [peers] 2 = nosuch.invalid:7200: host 'nosuch.invalid' does "
			      "not resolve ("),
		  "%s", err);
	/* two names for one address */
	cr_expect_eq(validate("1 = 127.0.0.1:7100\n2 = 127.0.0.1:7200\n3 = localhost:7200\n", 1, err),
		     KEEL_ECONFIG);
	cr_expect(strstr(err, "v.ini:10: [peers] 3 = localhost:7200 is the same address as node 2 = "
			      "127.0.0.1:7200 (line 9)"),
		  "%s", err);
	/* with 4 shards, node 2's ports 7200..7203 include node 3's 7202 */
	cr_expect_eq(validate("2 = 127.0.0.1:7200\n3 = 127.0.0.1:7202\n", 4, err), KEEL_ECONFIG);
	cr_expect(strstr(err, "v.ini:9: [peers] 3 = 127.0.0.1:7202 overlaps node 2 = 127.0.0.1:7200 "
			      "(line 8): with [node] shards = 4"),
		  "%s", err);
	cr_expect_eq(validate("2 = 127.0.0.1:7200\n3 = 127.0.0.1:7204\n", 4, err), 0, "%s", err);
	struct keel_node_config cfg;
	cr_assert_eq(keel_node_config_parse("[node]\nid = 1\ncluster = 1\nlisten = no.such.invalid:1\n"
					    "secret_file = secret\n",
					    "l.ini", dir, &cfg, err),
		     0, "%s", err);
	cr_expect_eq(keel_node_config_validate(&cfg, err), KEEL_ECONFIG);
	cr_expect(strstr(err, "l.ini:4: [node] listen = no.such.invalid:1: host 'no.such.invalid' does "
			      "not resolve"),
		  "%s", err);
	keel_node_config_free(&cfg);
}
