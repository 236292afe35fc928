/* keel status: every group's leader, term, commit and applied index as
 * each node reports it over its client port (keel/client.h), each node's
 * health, and how far each replica lags its group's leader.
 *
 * The cluster is found as keel kv finds it (--endpoints, KEEL_ENDPOINTS,
 * --dir). Exit status: 0 every node answered and every group has a leader
 * all its answering replicas agree on; 1 otherwise (the output says what
 * is missing); 2 usage; 3 no node answered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/client.h"

#define MAX_ROWS 65536

struct rows {
	struct keel_client_group_status *r;
	size_t n, cap;
};

static void add_row(void *arg, const struct keel_client_group_status *st)
{
	struct rows *rs = arg;
	if (rs->n == rs->cap) {
		size_t nc = rs->cap ? rs->cap * 2 : 64;
		if (nc > MAX_ROWS)
			return;
		struct keel_client_group_status *p = realloc(rs->r, nc * sizeof(*p));
		if (!p)
			return;
		rs->r = p;
		rs->cap = nc;
	}
	rs->r[rs->n++] = *st;
}

static int row_cmp(const void *a, const void *b)
{
	const struct keel_client_group_status *x = a, *y = b;
	if (x->group != y->group)
		return x->group < y->group ? -1 : 1;
	return x->node < y->node ? -1 : x->node > y->node;
}

int keel_cmd_status(int argc, char **argv)
{
	const char *endpoints = NULL, *dir = NULL, *token_file = NULL;
	uint64_t timeout_ms = 3000;
	bool json = false;
	const struct keel_opt opts[] = {
		{"endpoints", 'e', KEEL_OPT_STR, &endpoints, .arg = "HOST:PORT,...",
		 .help = "the nodes' client ports"},
		{"dir", 'd', KEEL_OPT_STR, &dir, .arg = "DIR",
		 .help = "a local cluster's directory (keel cluster up)"},
		{"token-file", 0, KEEL_OPT_STR, &token_file, .arg = "FILE",
		 .help = "the client token, when the cluster asks for one"},
		{"timeout", 't', KEEL_OPT_MS, &timeout_ms, 1, 600000, "MS", "per node"},
		{"json", 'j', KEEL_OPT_FLAG, &json, .help = "one JSON object per line"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"status", "[options]",
		"every group's leader, term, commit and applied index on each node, and\n"
		"each replica's lag behind its leader's commit index",
		opts, 0, 0, NULL,
		"Exit status: 0 every node answered and every group has an agreed leader,\n"
		"1 otherwise, 2 usage, 3 no node answered."};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	const struct keel_cli_cluster where = {endpoints, dir, token_file, timeout_ms};
	struct keel_client *c;
	int rc = keel_cli_connect(&spec, &where, &c);
	if (rc)
		return rc;
	struct rows rs = {0};
	keel_client_status(c, add_row, &rs);
	keel_client_close(c);
	qsort(rs.r, rs.n, sizeof(*rs.r), row_cmp);
	int bad = 0;
	if (!json)
		printf("%-6s %-5s %-7s %-6s %-10s %-10s %-6s %s\n", "group", "node", "leader", "term",
		       "commit", "applied", "lag", "health");
	for (size_t i = 0; i < rs.n; i++) {
		const struct keel_client_group_status *r = &rs.r[i];
		if (r->group == UINT32_MAX) {
			bad = 1;
			if (json) {
				struct keel_json w;
				keel_json_init_file(&w, stdout);
				keel_json_open_obj(&w, NULL);
				keel_json_put_u64(&w, "node", r->node);
				keel_json_put_bool(&w, "ok", false);
				keel_json_put_str(&w, "error", keel_strerror(r->status));
				keel_json_close(&w);
				keel_json_finish(&w, true);
			} else
				printf("%-6s %-5u %-7s %-6s %-10s %-10s %-6s down: %s\n", "-", r->node, "-",
				       "-", "-", "-", "-", keel_strerror(r->status));
			continue;
		}
		/* the group's leader commit: the highest commit any replica of it
		 * reports (the leader's is the highest known) */
		uint64_t lead_commit = 0;
		uint32_t leader = 0;
		bool agree = true;
		for (size_t j = 0; j < rs.n; j++) {
			if (rs.r[j].group != r->group)
				continue;
			if (rs.r[j].commit > lead_commit)
				lead_commit = rs.r[j].commit;
			if (!leader)
				leader = rs.r[j].leader;
			else if (rs.r[j].leader && rs.r[j].leader != leader)
				agree = false;
		}
		uint64_t lag = lead_commit > r->applied ? lead_commit - r->applied : 0;
		const char *health = r->status ? keel_strerror(r->status)
				     : !r->leader	? "no leader"
				     : !agree		? "leaders disagree"
							: "ok";
		if (r->status || !r->leader || !agree)
			bad = 1;
		if (json) {
			struct keel_json w;
			keel_json_init_file(&w, stdout);
			keel_json_open_obj(&w, NULL);
			keel_json_put_u64(&w, "group", r->group);
			keel_json_put_u64(&w, "node", r->node);
			keel_json_put_u64(&w, "leader", r->leader);
			keel_json_put_u64(&w, "term", r->term);
			keel_json_put_u64(&w, "commit", r->commit);
			keel_json_put_u64(&w, "applied", r->applied);
			keel_json_put_u64(&w, "lag", lag);
			keel_json_put_bool(&w, "ok", !strcmp(health, "ok"));
			keel_json_put_str(&w, "health", health);
			keel_json_close(&w);
			keel_json_finish(&w, true);
		} else
			printf("%-6u %-5u %-7u %-6llu %-10llu %-10llu %-6llu %s\n", r->group, r->node,
			       r->leader, (unsigned long long)r->term, (unsigned long long)r->commit,
			       (unsigned long long)r->applied, (unsigned long long)lag, health);
	}
	free(rs.r);
	return bad;
}
