/* The node configuration: a good file, and errors that name file and line. */
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
	expect_error("[node]\nid=1\nsecret = hunter2\n", "never in the config");
	expect_error("[peers]\nx = 127.0.0.1:1\n", "bad.ini:2: [peers] 'x' is not a node id");
	expect_error("[peers]\n1 = a:1\n1 = b:2\n", "bad.ini:3: [peers] node 1 listed twice");
	expect_error("[node\n", "bad.ini:1: syntax error");
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
