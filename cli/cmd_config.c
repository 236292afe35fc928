/* keel config FILE: loads and validates a node configuration (the checks
 * `keel node` makes before it creates anything: syntax, keys, the secret
 * file, peers, and that every host resolves) and prints what it found, or
 * the error with file and line. Exit 0 valid, 1 not. --json prints one
 * object on stdout either way (built with the keel_json writer, so any
 * path or value gives valid JSON). */
#include <inttypes.h>
#include <stdio.h>

#include "cli/cli.h"
#include "keel/config.h"

static void print_json(const char *path, const struct keel_node_config *c, const char *err)
{
	struct keel_json j;
	keel_json_init_file(&j, stdout);
	keel_json_open_obj(&j, NULL);
	keel_json_put_str(&j, "path", path);
	if (err) {
		keel_json_put_bool(&j, "ok", false);
		keel_json_put_str(&j, "error", err);
		keel_json_close(&j);
		keel_json_finish(&j, true);
		return;
	}
	keel_json_put_bool(&j, "ok", true);
	keel_json_put_u64(&j, "node", c->node_id);
	keel_json_put_u64(&j, "cluster", c->cluster_id);
	keel_json_put_str(&j, "listen_host", c->listen_host);
	keel_json_put_u64(&j, "listen_port", c->listen_port);
	keel_json_put_u64(&j, "shards", c->shards);
	keel_json_put_str(&j, "transport", c->transport);
	keel_json_put_u64(&j, "max_frame", c->max_frame);
	keel_json_put_str(&j, "reactor", keel_reactor_name(c->reactor));
	keel_json_open_arr(&j, "peers");
	for (size_t i = 0; i < c->npeers; i++) {
		keel_json_open_obj(&j, NULL);
		keel_json_put_u64(&j, "node", c->peers[i].node);
		keel_json_put_str(&j, "host", c->peers[i].host);
		keel_json_put_u64(&j, "port", c->peers[i].port);
		keel_json_put_u64(&j, "line", c->peer_lines[i]);
		keel_json_close(&j);
	}
	keel_json_close(&j);
	keel_json_open_arr(&j, "entries");
	for (size_t i = 0; i < c->nentries; i++) {
		const struct keel_config_entry *e = &c->entries[i];
		keel_json_open_obj(&j, NULL);
		keel_json_put_str(&j, "section", e->section);
		keel_json_put_str(&j, "key", e->key);
		keel_json_put_str(&j, "value", e->value);
		keel_json_put_u64(&j, "line", e->line);
		keel_json_close(&j);
	}
	keel_json_close(&j);
	keel_json_close(&j);
	keel_json_finish(&j, true);
}

static void print_text(const char *path, const struct keel_node_config *c, bool resolved)
{
	printf("%s: ok%s: node %" PRIu32 " of cluster %" PRIu64 ", listen %s:%u (+ shard), ", path,
	       resolved ? "" : " (hosts not resolved)", c->node_id, c->cluster_id, c->listen_host,
	       c->listen_port);
	if (c->shards)
		printf("%" PRIu32 " shard%s", c->shards, c->shards == 1 ? "" : "s");
	else
		printf("one shard per core");
	printf(", transport %s", c->transport);
	if (c->reactor != KEEL_REACTOR_AUTO)
		printf(", reactor %s", keel_reactor_name(c->reactor));
	printf("\n");
	for (size_t i = 0; i < c->npeers; i++)
		printf("  peer %" PRIu32 " = %s:%u%s\n", c->peers[i].node, c->peers[i].host,
		       c->peers[i].port, c->peers[i].node == c->node_id ? " (this node)" : "");
	for (size_t i = 0; i < c->nentries; i++)
		printf("  [%s] %s = %s\n", c->entries[i].section, c->entries[i].key,
		       c->entries[i].value);
}

int keel_cmd_config(int argc, char **argv)
{
	bool json = false, no_resolve = false;
	const struct keel_opt opts[] = {
		{"json", 0, KEEL_OPT_FLAG, &json, .help = "print one JSON object"},
		{"no-resolve", 0, KEEL_OPT_FLAG, &no_resolve,
		 .help = "do not resolve the hosts (a config for another network)"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		.name = "config",
		.synopsis = "FILE [--json] [--no-resolve]",
		.about = "  checks a node configuration as keel node does before it starts (syntax,\n"
			 "  sections, keys, the secret file, the peers, that every host resolves)\n"
			 "  and prints what it holds, or the first error with its file and line.\n"
			 "  Exit 0 when valid, 1 when not.\n",
		.opts = opts,
		.min_args = 1,
		.max_args = 1,
		.args_name = "FILE",
	};
	int nargs;
	int st = keel_opt_parse(&spec, argc, argv, &nargs);
	if (st != KEEL_OPT_RUN)
		return st;
	const char *path = argv[1];
	struct keel_node_config cfg;
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_node_config_load(path, &cfg, err);
	if (rc == 0 && !no_resolve)
		rc = keel_node_config_validate(&cfg, err);
	if (rc < 0) {
		if (json)
			print_json(path, NULL, err);
		fprintf(stderr, "keel config: %s\n", err);
		keel_node_config_free(&cfg);
		return 1;
	}
	if (json)
		print_json(path, &cfg, NULL);
	else
		print_text(path, &cfg, !no_resolve);
	keel_node_config_free(&cfg);
	return 0;
}
