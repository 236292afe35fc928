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
	const char *endpoints, *dir, *token_file, *expect, *prefix;
	uint64_t timeout_ms, limit, rev, count;
	bool json, serializable, absent;
};

static const char *const about =
	"put KEY VALUE, get KEY, del KEY, cas KEY VALUE (--expect OLD or --absent),\n"
	"range PREFIX, watch KEY|--prefix P: the cluster's replicated KV store. Writes go to the key's\n"
	"group leader and are applied exactly once (a retry after a timeout reuses\n"
	"the request's sequence); reads are linearizable unless --serializable.\n"
	"watch prints every change of KEY (or of the keys with --prefix P) from\n"
	"--rev R in each group (revisions are per group), one line each, until\n"
	"--count N changes or interrupted; it resumes on another node when its\n"
	"node goes away, without a change missed or repeated.";

static const char *const epilog =
	"The cluster: --endpoints, else $KEEL_ENDPOINTS, else --dir of `keel cluster up`.\n"
	"Exit status: 0 done, 1 not found or the comparison failed, 2 usage,\n"
	"3 the cluster unreachable or an error (a timed-out write may have been applied).";

struct range_out {
	bool json;
	int n;
	struct keel_json *j; /* the array being written, with json */
};

static int range_row(void *arg, const void *key, size_t key_len, const void *value,
		     size_t value_len, uint64_t mod_rev)
{
	struct range_out *o = arg;
	if (o->json) {
		keel_json_open_obj(o->j, NULL);
		keel_json_put_strn(o->j, "key", key, key_len);
		keel_json_put_strn(o->j, "value", value, value_len);
		keel_json_put_u64(o->j, "mod_rev", mod_rev);
		keel_json_close(o->j);
	} else {
		fwrite(key, 1, key_len, stdout);
		fputc('\t', stdout);
		fwrite(value, 1, value_len, stdout);
		fputc('\n', stdout);
	}
	o->n++;
	return 0;
}

/* keel kv watch: one line per change until --count or a signal. */
static int kv_watch(const struct keel_cmd_spec *spec, const struct kvopts *o, int nargs,
		    char **argv)
{
	if ((nargs == 2) == (o->prefix != NULL))
		return keel_opt_usage(spec, "watch takes exactly one of KEY and --prefix P");
	const char *key = o->prefix ? o->prefix : argv[2];
	const struct keel_cli_cluster where = {o->endpoints, o->dir, o->token_file, o->timeout_ms};
	struct keel_client *c;
	int rc = keel_cli_connect(spec, &where, &c);
	if (rc)
		return rc;
	struct keel_client_watch *w;
	rc = keel_client_watch_open(c, key, strlen(key), o->prefix != NULL, o->rev, &w);
	uint64_t seen = 0;
	while (rc == 0 && (!o->count || seen < o->count)) {
		struct keel_client_event ev;
		int r = keel_client_watch_next(w, 1000, &ev);
		if (r < 0) {
			rc = r;
			break;
		}
		if (r == 0)
			continue;
		seen++;
		if (o->json) {
			struct keel_json j;
			keel_json_init_file(&j, stdout);
			keel_json_open_obj(&j, NULL);
			keel_json_put_str(&j, "type", ev.deleted ? "delete" : "put");
			keel_json_put_strn(&j, "key", ev.key, ev.key_len);
			if (!ev.deleted)
				keel_json_put_strn(&j, "value", ev.value, ev.value_len);
			keel_json_put_u64(&j, "rev", ev.rev);
			keel_json_put_u64(&j, "group", ev.group);
			keel_json_put_u64(&j, "node", ev.node);
			keel_json_close(&j);
			keel_json_finish(&j, true);
		} else {
			printf("%s ", ev.deleted ? "DELETE" : "PUT");
			fwrite(ev.key, 1, ev.key_len, stdout);
			if (!ev.deleted) {
				fputc('\t', stdout);
				fwrite(ev.value, 1, ev.value_len, stdout);
			}
			printf("\trev=%llu group=%u\n", (unsigned long long)ev.rev, ev.group);
		}
		fflush(stdout);
	}
	if (rc < 0)
		fprintf(stderr, "keel kv watch: %s\n", keel_client_errmsg(c));
	keel_client_watch_close(w);
	keel_client_close(c);
	return rc < 0 ? EXIT_CLUSTER : 0;
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
		{"prefix", 'p', KEEL_OPT_STR, &o.prefix, .arg = "P",
		 .help = "watch: every key starting with P (\"\": every key)"},
		{"rev", 'r', KEEL_OPT_U64, &o.rev, 0, UINT64_MAX, "R",
		 "watch: from revision R of each group (0: changes from now on)"},
		{"count", 'c', KEEL_OPT_U64, &o.count, 0, UINT64_MAX, "N",
		 "watch: stop after N changes (0: run until interrupted)"},
		{0},
	};
	const struct keel_cmd_spec spec = {"kv", "put|get|del|cas|range|watch ARGS... [options]",
					   about, opts, 1, 3, "ARGS", epilog};
	int nargs = 0;
	int st = keel_opt_parse(&spec, argc, argv, &nargs);
	if (st != KEEL_OPT_RUN)
		return st;
	const char *op = argv[1];
	if (!strcmp(op, "watch"))
		return kv_watch(&spec, &o, nargs, argv);
	if (o.prefix || o.rev || o.count)
		return keel_opt_usage(&spec, "--prefix, --rev and --count are for watch");
	int want = !strcmp(op, "put") || !strcmp(op, "cas") ? 3 : 2;
	if (strcmp(op, "put") && strcmp(op, "get") && strcmp(op, "del") && strcmp(op, "cas") &&
	    strcmp(op, "range"))
		return keel_opt_usage(&spec, "unknown operation '%s' (put, get, del, cas, range, watch)",
				      op);
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
				struct keel_json j;
				keel_json_init_file(&j, stdout);
				keel_json_open_obj(&j, NULL);
				keel_json_put_strn(&j, "key", key, klen);
				keel_json_put_strn(&j, "value", v, vlen);
				keel_json_put_u64(&j, "rev", res.rev);
				keel_json_put_u64(&j, "mod_rev", res.mod_rev);
				keel_json_put_u64(&j, "create_rev", res.create_rev);
				keel_json_put_u64(&j, "version", res.version);
				keel_json_put_u64(&j, "group", res.group);
				keel_json_put_u64(&j, "node", res.node);
				keel_json_close(&j);
				keel_json_finish(&j, true);
			} else {
				fwrite(v, 1, vlen, stdout);
				fputc('\n', stdout);
			}
			keel_client_free_value(v);
		}
	} else {
		struct keel_json j;
		struct range_out ro = {.json = o.json, .j = &j};
		if (o.json) {
			keel_json_init_file(&j, stdout);
			keel_json_open_arr(&j, NULL);
		}
		rc = keel_client_range(c, key, klen, o.limit, o.serializable, range_row, &ro);
		if (o.json) {
			keel_json_close(&j);
			keel_json_finish(&j, true);
		}
		if (rc >= 0)
			rc = 0;
	}
	if (rc == 0 && strcmp(op, "get") && strcmp(op, "range")) {
		if (o.json) {
			struct keel_json j;
			keel_json_init_file(&j, stdout);
			keel_json_open_obj(&j, NULL);
			keel_json_put_str(&j, "op", op);
			keel_json_put_bool(&j, "ok", true);
			keel_json_put_u64(&j, "rev", res.rev);
			keel_json_put_u64(&j, "mod_rev", res.mod_rev);
			keel_json_put_u64(&j, "group", res.group);
			keel_json_put_u64(&j, "node", res.node);
			keel_json_put_bool(&j, "duplicate", res.flags & KEEL_CLIENT_DUPLICATE);
			keel_json_close(&j);
			keel_json_finish(&j, true);
		} else
			printf("OK rev=%llu\n", (unsigned long long)res.rev);
	} else if (rc == KEEL_ENOTFOUND || rc == KEEL_ESTALE) {
		exit_code = EXIT_NOTFOUND;
		if (o.json) {
			struct keel_json j;
			keel_json_init_file(&j, stdout);
			keel_json_open_obj(&j, NULL);
			keel_json_put_str(&j, "op", op);
			keel_json_put_bool(&j, "ok", false);
			keel_json_put_str(&j, "error",
					  rc == KEEL_ENOTFOUND ? "not found" : "comparison failed");
			keel_json_close(&j);
			keel_json_finish(&j, true);
		} else
			fprintf(stderr, "keel kv %s: %s\n", op, keel_client_errmsg(c));
	} else if (rc < 0) {
		exit_code = EXIT_CLUSTER;
		fprintf(stderr, "keel kv %s: %s\n", op, keel_client_errmsg(c));
	}
	keel_client_close(c);
	return exit_code;
}
