/* keel kv put|get|del|cas|range: the replicated KV store from the command
 * line, on the client library (include/keel/client.h).
 *
 * The cluster is found from --endpoints HOST:PORT,..., else the
 * KEEL_ENDPOINTS environment variable, else --dir DIR of a local cluster
 * (`keel cluster up` writes DIR/endpoints), as etcdctl uses --endpoints and
 * ETCDCTL_ENDPOINTS. A token: --token-file, else DIR/client-token when
 * --dir is given.
 *
 * Exit status: 0 done; 1 not found (get, del) or the comparison failed
 * (cas); 2 usage; 3 the cluster was unreachable or answered an error (a
 * timeout included: a write's outcome is then unknown, and the message
 * says so). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/client.h"

#define EXIT_NOTFOUND 1
#define EXIT_CLUSTER KEEL_CLI_UNREACHABLE

struct kvopts {
	const char *endpoints, *dir, *token_file, *expect;
	uint64_t timeout_ms, limit;
	bool json, serializable, absent;
};

static const char *const about =
	"put KEY VALUE, get KEY, del KEY, cas KEY VALUE (--expect OLD or --absent),\n"
	"range PREFIX: the cluster's replicated KV store. Writes go to the key's\n"
	"group leader and are applied exactly once (a retry after a timeout reuses\n"
	"the request's sequence); reads are linearizable unless --serializable.";

static const char *const epilog =
	"The cluster: --endpoints, else $KEEL_ENDPOINTS, else --dir of `keel cluster up`.\n"
	"Exit status: 0 done, 1 not found or the comparison failed, 2 usage,\n"
	"3 the cluster unreachable or an error (a timed-out write may have been applied).";

static void print_bytes_json(const void *p, size_t n)
{
	keel_json_str(stdout, p, n);
}

struct range_out {
	bool json;
	int n;
};

static int range_row(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len, uint64_t mod_rev)
{
	struct range_out *o = arg;
	if (o->json) {
		fputs(o->n ? ",{\"key\":" : "{\"key\":", stdout);
		print_bytes_json(key, key_len);
		fputs(",\"value\":", stdout);
		print_bytes_json(value, value_len);
		printf(",\"mod_rev\":%llu}", (unsigned long long)mod_rev);
	} else {
		fwrite(key, 1, key_len, stdout);
		fputc('\t', stdout);
		fwrite(value, 1, value_len, stdout);
		fputc('\n', stdout);
	}
	o->n++;
	return 0;
}

int keel_cmd_kv(int argc, char **argv)
{
	struct kvopts o = {.timeout_ms = 5000};
	const struct keel_opt opts[] = {
		{"endpoints", 'e', KEEL_OPT_STR, &o.endpoints, .arg = "HOST:PORT,...",
		 .help = "the nodes' client ports"},
		{"dir", 'd', KEEL_OPT_STR, &o.dir, .arg = "DIR",
		 .help = "a local cluster's directory (keel cluster up)"},
		{"token-file", 0, KEEL_OPT_STR, &o.token_file, .arg = "FILE",
		 .help = "the client token, when the cluster asks for one"},
		{"timeout", 't', KEEL_OPT_MS, &o.timeout_ms, 1, 3600000, "MS",
		 "give up on a call after MS (a write's outcome is then unknown)"},
		{"expect", 0, KEEL_OPT_STR, &o.expect, .arg = "OLD",
		 .help = "cas: swap only if the value is OLD"},
		{"absent", 0, KEEL_OPT_FLAG, &o.absent, .help = "cas: swap only if the key is absent"},
		{"limit", 'n', KEEL_OPT_U64, &o.limit, 0, 100000000, "N",
		 "range: at most N keys (0: all)"},
		{"serializable", 's', KEEL_OPT_FLAG, &o.serializable,
		 .help = "reads: answer from the node's own copy (may be stale)"},
		{"json", 'j', KEEL_OPT_FLAG, &o.json, .help = "machine-readable output"},
		{0},
	};
	const struct keel_cmd_spec spec = {"kv", "put|get|del|cas|range ARGS... [options]", about,
					   opts, 2, 3, "ARGS", epilog};
	int nargs = 0;
	int st = keel_opt_parse(&spec, argc, argv, &nargs);
	if (st != KEEL_OPT_RUN)
		return st;
	const char *op = argv[1];
	int want = !strcmp(op, "put") || !strcmp(op, "cas") ? 3 : 2;
	if (strcmp(op, "put") && strcmp(op, "get") && strcmp(op, "del") && strcmp(op, "cas") &&
	    strcmp(op, "range"))
		return keel_opt_usage(&spec, "unknown operation '%s' (put, get, del, cas, range)", op);
	if (nargs != want)
		return keel_opt_usage(&spec, "%s takes %s", op,
				      want == 3 ? "KEY VALUE" : !strcmp(op, "range") ? "PREFIX" : "KEY");
	if (!strcmp(op, "cas") && !o.expect == !o.absent)
		return keel_opt_usage(&spec, "cas needs exactly one of --expect OLD and --absent");
	if (strcmp(op, "cas") && (o.expect || o.absent))
		return keel_opt_usage(&spec, "--expect and --absent are for cas");

	const struct keel_cli_cluster where = {o.endpoints, o.dir, o.token_file, o.timeout_ms};
	struct keel_client *c;
	int rc = keel_cli_connect(&spec, &where, &c);
	if (rc)
		return rc;
	const char *key = argv[2];
	size_t klen = strlen(key);
	struct keel_client_result res = {0};
	int exit_code = 0;
	if (!strcmp(op, "put")) {
		rc = keel_client_put(c, key, klen, argv[3], strlen(argv[3]), &res);
	} else if (!strcmp(op, "del")) {
		rc = keel_client_del(c, key, klen, &res);
	} else if (!strcmp(op, "cas")) {
		rc = keel_client_cas(c, key, klen, o.expect, o.expect ? strlen(o.expect) : 0, argv[3],
				     strlen(argv[3]), &res);
	} else if (!strcmp(op, "get")) {
		void *v;
		size_t vlen;
		rc = keel_client_get(c, key, klen, o.serializable, &v, &vlen, &res);
		if (rc == 0) {
			if (o.json) {
				fputs("{\"key\":", stdout);
				print_bytes_json(key, klen);
				fputs(",\"value\":", stdout);
				print_bytes_json(v, vlen);
				printf(",\"rev\":%llu,\"mod_rev\":%llu,\"create_rev\":%llu,\"version\":%llu,"
				       "\"group\":%u,\"node\":%u}\n",
				       (unsigned long long)res.rev, (unsigned long long)res.mod_rev,
				       (unsigned long long)res.create_rev, (unsigned long long)res.version,
				       res.group, res.node);
			} else {
				fwrite(v, 1, vlen, stdout);
				fputc('\n', stdout);
			}
			keel_client_free_value(v);
		}
	} else {
		struct range_out ro = {.json = o.json};
		if (o.json)
			fputs("[", stdout);
		rc = keel_client_range(c, key, klen, o.limit, o.serializable, range_row, &ro);
		if (o.json)
			fputs("]\n", stdout);
		if (rc >= 0)
			rc = 0;
	}
	if (rc == 0 && strcmp(op, "get") && strcmp(op, "range")) {
		if (o.json)
			printf("{\"op\":\"%s\",\"ok\":true,\"rev\":%llu,\"mod_rev\":%llu,\"group\":%u,"
			       "\"node\":%u,\"duplicate\":%s}\n",
			       op, (unsigned long long)res.rev, (unsigned long long)res.mod_rev, res.group,
			       res.node, res.flags & KEEL_CLIENT_DUPLICATE ? "true" : "false");
		else
			printf("OK rev=%llu\n", (unsigned long long)res.rev);
	} else if (rc == KEEL_ENOTFOUND || rc == KEEL_ESTALE) {
		exit_code = EXIT_NOTFOUND;
		if (o.json)
			printf("{\"op\":\"%s\",\"ok\":false,\"error\":\"%s\"}\n", op,
			       rc == KEEL_ENOTFOUND ? "not found" : "comparison failed");
		else
			fprintf(stderr, "keel kv %s: %s\n", op, keel_client_errmsg(c));
	} else if (rc < 0) {
		exit_code = EXIT_CLUSTER;
		fprintf(stderr, "keel kv %s: %s\n", op, keel_client_errmsg(c));
	}
	keel_client_close(c);
	return exit_code;
}
