/* keel node's configuration from the environment (cli/node_env.c): the
 * variables become INI text the one parser accepts, KEEL_LISTEN defaults
 * to this node's own KEEL_PEERS entry, KEEL_NODE_ID=ordinal reads the host
 * name, and bad values are refused naming the variable. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/node_env.h"
#include "keel/config.h"

static const char *const vars[] = {
	"KEEL_NODE_ID", "KEEL_CLUSTER_ID", "KEEL_LISTEN", "KEEL_SECRET_FILE", "KEEL_SHARDS",
	"KEEL_PEERS", "KEEL_DATA_DIR", "KEEL_GROUPS", "KEEL_PROTOCOL", "KEEL_CLIENT_LISTEN",
	"KEEL_TOKEN_FILE", "KEEL_HTTP_LISTEN", "KEEL_READY_LAG",
};
static char secret[64];

static void setup(void)
{
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	snprintf(secret, sizeof(secret), "/tmp/keel-env-test-%d", (int)getpid());
	FILE *f = fopen(secret, "w");
	cr_assert(f);
	fputs("0123456789abcdef0123456789abcdef\n", f);
	fclose(f);
	chmod(secret, 0600);
	setenv("KEEL_SECRET_FILE", secret, 1);
}
static void teardown(void) { unlink(secret); }

static int load(struct keel_node_config *cfg, char *err)
{
	char *text = NULL;
	int rc = node_env_config(&text, err);
	if (rc < 0)
		return rc;
	rc = keel_node_config_parse(text, "environment", "/", cfg, err);
	free(text);
	return rc;
}

Test(node_env, peers_by_name_and_listen_from_own_entry, .init = setup, .fini = teardown)
{
	setenv("KEEL_NODE_ID", "2", 1);
	setenv("KEEL_PEERS", "1=keel-0.keel:7000,2=localhost:7010,3=keel-2.keel:7000", 1);
	setenv("KEEL_HTTP_LISTEN", "0.0.0.0:7200", 1);
	setenv("KEEL_READY_LAG", "50", 1);
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(load(&cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.node_id, 2);
	cr_assert_eq(cfg.npeers, 3);
	cr_assert_str_eq(cfg.listen_host, "localhost");
	cr_assert_eq(cfg.listen_port, 7010);
	cr_assert_str_eq(cfg.peers[0].host, "keel-0.keel");
	cr_assert_str_eq(keel_node_config_get(&cfg, "http", "listen"), "0.0.0.0:7200");
	cr_assert_str_eq(keel_node_config_get(&cfg, "http", "ready_lag"), "50");
	cr_assert_str_eq(keel_node_config_get(&cfg, "log", "dir"), "/var/lib/keel");
	keel_node_config_free(&cfg);
}

Test(node_env, ordinal_from_the_host_name, .init = setup, .fini = teardown)
{
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	const char *dash = strrchr(host, '-');
	setenv("KEEL_NODE_ID", "ordinal", 1);
	setenv("KEEL_PEERS", "1=localhost:7000", 1);
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = load(&cfg, err);
	if (!dash || !dash[1] || strspn(dash + 1, "0123456789") != strlen(dash + 1)) {
		/* this machine's name has no -N: refused, saying so */
		cr_assert_eq(rc, KEEL_ECONFIG);
		cr_assert(strstr(err, "does not end in -N"), "%s", err);
	} else {
		cr_assert_eq(rc, 0, "%s", err);
		cr_assert_eq(cfg.node_id, (uint32_t)atoi(dash + 1) + 1);
		keel_node_config_free(&cfg);
	}
}

Test(node_env, bad_values_name_the_variable, .init = setup, .fini = teardown)
{
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(load(&cfg, err), KEEL_ECONFIG);
	cr_assert(strstr(err, "KEEL_NODE_ID is missing"), "%s", err);
	setenv("KEEL_NODE_ID", "1", 1);
	cr_assert_eq(load(&cfg, err), KEEL_ECONFIG);
	cr_assert(strstr(err, "KEEL_PEERS is missing"), "%s", err);
	setenv("KEEL_PEERS", "1=localhost:7000\n[http]\nport=1", 1);
	cr_assert_eq(load(&cfg, err), KEEL_ECONFIG);
	cr_assert(strstr(err, "KEEL_PEERS: a line break"), "%s", err);
	setenv("KEEL_PEERS", "localhost:7000", 1);
	cr_assert_eq(load(&cfg, err), KEEL_ECONFIG);
	cr_assert(strstr(err, "not ID=HOST:PORT"), "%s", err);
	setenv("KEEL_PEERS", "2=localhost:7000", 1);
	cr_assert_eq(load(&cfg, err), KEEL_ECONFIG);
	cr_assert(strstr(err, "no entry for this node"), "%s", err);
	setenv("KEEL_PEERS", "1=localhost:7000", 1);
	setenv("KEEL_SHARDS", "x", 1);
	cr_assert_eq(load(&cfg, err), KEEL_ECONFIG);
	cr_assert(strstr(err, "shards"), "%s", err);
	keel_node_config_free(&cfg);
}
