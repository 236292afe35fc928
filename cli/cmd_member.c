/* keel member list|add NODE|remove NODE: a cluster's membership from the
 * command line, on keel_client_member (keel/client.h): every group in
 * turn, at its leader, one line (or JSON object) per group.
 *
 * A run that fails part-way (a group without a leader, a timeout while a
 * new node catches up) says which groups are done and which failed and
 * why; running the same command again resumes it (a group where the node
 * already votes, or is already gone, counts as done). Nodes are those of
 * the cluster's [peers]: add brings back a node removed before (the
 * configuration files name every node the cluster may have).
 *
 * Exit status: 0 every group done; 2 usage; 3 the cluster unreachable, or
 * some group failed (a Paxos cluster, whose engine has no reconfiguration,
 * included). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/client.h"

struct member_out {
	bool json;
	enum keel_client_member_op op;
	uint32_t node;
	unsigned done, failed, unsupported;
};

static const char *op_name(enum keel_client_member_op op)
{
	return op == KEEL_CLIENT_MEMBER_LIST ? "list" : op == KEEL_CLIENT_MEMBER_ADD ? "add" : "remove";
}

static void member_row(void *arg, const struct keel_client_member_row *r)
{
	struct member_out *o = arg;
	if (r->status < 0)
		o->failed++;
	if (r->status == KEEL_ENOTSUP)
		o->unsupported++;
	else
		o->done++;
	if (o->json) {
		struct keel_json j;
		keel_json_init_file(&j, stdout);
		keel_json_open_obj(&j, NULL);
		keel_json_put_str(&j, "op", op_name(o->op));
		keel_json_put_u64(&j, "group", r->group);
		keel_json_put_bool(&j, "ok", r->status == 0);
		if (r->status < 0) {
			keel_json_put_str(&j, "error", keel_strerror(r->status));
			keel_json_put_str(&j, "message", r->message);
		} else {
			keel_json_put_u64(&j, "leader", r->leader);
			keel_json_put_u64(&j, "index", r->index);
		}
		if (o->op != KEEL_CLIENT_MEMBER_LIST) {
			keel_json_put_u64(&j, "node", o->node);
			if (r->status == 0)
				keel_json_put_bool(&j, "already", r->already);
		} else if (r->status == 0) {
			keel_json_put_u64(&j, "term", r->term);
			keel_json_put_bool(&j, "changing", r->changing);
			keel_json_open_arr(&j, "voters");
			for (uint32_t i = 0; i < r->n_members; i++)
				if (r->members[i].voter)
					keel_json_put_u64(&j, NULL, r->members[i].node);
			keel_json_close(&j);
			keel_json_open_arr(&j, "learners");
			for (uint32_t i = 0; i < r->n_members; i++)
				if (!r->members[i].voter)
					keel_json_put_u64(&j, NULL, r->members[i].node);
			keel_json_close(&j);
		}
		keel_json_close(&j);
		keel_json_finish(&j, true);
		return;
	}
	if (r->status < 0) {
		printf("group %u: FAILED %s\n", r->group, r->message);
		return;
	}
	if (o->op != KEEL_CLIENT_MEMBER_LIST) {
		printf("group %u: %s node %u: %s (leader %u, index %llu)\n", r->group, op_name(o->op),
		       o->node, r->already ? "already done" : "done", r->leader,
		       (unsigned long long)r->index);
		return;
	}
	printf("group %u: leader %u term %llu voters", r->group, r->leader,
	       (unsigned long long)r->term);
	const char *sep = " ";
	for (uint32_t i = 0; i < r->n_members; i++)
		if (r->members[i].voter) {
			printf("%s%u", sep, r->members[i].node);
			sep = ",";
		}
	sep = " learners ";
	for (uint32_t i = 0; i < r->n_members; i++)
		if (!r->members[i].voter) {
			printf("%s%u", sep, r->members[i].node);
			sep = ",";
		}
	printf("%s\n", r->changing ? " (a change is in progress)" : "");
}

int keel_cmd_member(int argc, char **argv)
{
	const char *endpoints = NULL, *dir = NULL, *token_file = NULL;
	uint64_t timeout_ms = 15000;
	bool json = false;
	const struct keel_opt opts[] = {
		{"endpoints", 'e', KEEL_OPT_STR, &endpoints, .arg = "HOST:PORT,...",
		 .help = "the nodes' client ports"},
		{"dir", 'd', KEEL_OPT_STR, &dir, .arg = "DIR",
		 .help = "a local cluster's directory (keel cluster up)"},
		{"token-file", 0, KEEL_OPT_STR, &token_file, .arg = "FILE",
		 .help = "the client token, when the cluster asks for one"},
		{"timeout", 't', KEEL_OPT_MS, &timeout_ms, 1, 600000, "MS",
		 "per group (an add waits while the node catches up)"},
		{"json", 'j', KEEL_OPT_FLAG, &json, .help = "one JSON object per group"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"member", "list|add NODE|remove NODE [options]",
		"list every group's voters and learners (as its leader sees them), or add or\n"
		"remove a node in every group in turn. add makes the node a voter the safe\n"
		"way (a learner until it has caught up); the node must be in the cluster's\n"
		"[peers]. A run that failed part-way is resumed by running it again.",
		opts, 1, 2, "OP [NODE]",
		"The cluster: --endpoints, else $KEEL_ENDPOINTS, else --dir of `keel cluster up`.\n"
		"Exit status: 0 every group done, 2 usage, 3 the cluster unreachable or a\n"
		"group failed (the output says which; a Paxos cluster cannot change members)."};
	int nargs = 0;
	int st = keel_opt_parse(&spec, argc, argv, &nargs);
	if (st != KEEL_OPT_RUN)
		return st;
	const char *ops = argv[1];
	struct member_out o = {.json = json};
	if (!strcmp(ops, "list"))
		o.op = KEEL_CLIENT_MEMBER_LIST;
	else if (!strcmp(ops, "add"))
		o.op = KEEL_CLIENT_MEMBER_ADD;
	else if (!strcmp(ops, "remove"))
		o.op = KEEL_CLIENT_MEMBER_REMOVE;
	else
		return keel_opt_usage(&spec, "unknown operation '%s' (list, add, remove)", ops);
	if (o.op == KEEL_CLIENT_MEMBER_LIST && nargs != 1)
		return keel_opt_usage(&spec, "list takes no NODE");
	if (o.op != KEEL_CLIENT_MEMBER_LIST) {
		if (nargs != 2)
			return keel_opt_usage(&spec, "%s takes NODE (a node id)", ops);
		char *end;
		unsigned long v = strtoul(argv[2], &end, 10);
		if (!*argv[2] || *end || argv[2][0] == '-' || v == 0 || v > UINT32_MAX)
			return keel_opt_usage(&spec, "NODE: '%s' is not a node id (1..%u)", argv[2],
					      UINT32_MAX);
		o.node = (uint32_t)v;
	}
	const struct keel_cli_cluster where = {endpoints, dir, token_file, timeout_ms};
	struct keel_client *c;
	int rc = keel_cli_connect(&spec, &where, &c);
	if (rc)
		return rc;
	rc = keel_client_member(c, o.op, o.node, member_row, &o);
	if (o.failed)
		fprintf(stderr,
			"keel member %s: %u of %u groups done, %u failed (%s)%s\n", ops, o.done,
			o.done + o.failed, o.failed, keel_client_errmsg(c),
			o.op == KEEL_CLIENT_MEMBER_LIST || o.unsupported == o.failed
				? "" : "; run it again to resume");
	else if (rc < 0)
		fprintf(stderr, "keel member %s: %s\n", ops, keel_client_errmsg(c));
	keel_client_close(c);
	return rc < 0 || o.failed ? KEEL_CLI_UNREACHABLE : 0;
}
