/* keel node without --config: the configuration from environment variables
 * (cli/node_env.h), for containers, where an image is configured by its
 * environment and a StatefulSet's pods differ only in their host name.
 *
 * The variables are turned into the INI text a file would hold and parsed
 * by the one parser (keel_node_config_parse), so every check and message
 * of the file applies to them too; the text is named "environment" in
 * messages, and each line says which variable it came from. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/node_env.h"
#include "keel/base.h"

static const char *env(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

/* KEEL_NODE_ID=ordinal: a StatefulSet pod's host name ends in -N (keel-0,
 * keel-1, ...): node N+1, so the ids start at 1 as keel's do. */
static int node_id(char *out, size_t cap, char *err)
{
	const char *v = env("KEEL_NODE_ID", NULL);
	if (!v)
		return keel_errmsg_set(err, KEEL_ECONFIG,
				       "environment: KEEL_NODE_ID is missing (a node id >= 1, or "
				       "'ordinal': the host name's -N suffix plus 1); or use --config FILE");
	if (strcmp(v, "ordinal")) {
		snprintf(out, cap, "%s", v); /* the parser checks it */
		return 0;
	}
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) < 0)
		return keel_errmsg_set(err, -errno, "environment: KEEL_NODE_ID=ordinal: gethostname");
	const char *dash = strrchr(host, '-');
	char *end = NULL;
	unsigned long n = dash ? strtoul(dash + 1, &end, 10) : 0;
	if (!dash || !end || end == dash + 1 || *end || n >= 1000000)
		return keel_errmsg_set(err, KEEL_ECONFIG,
				       "environment: KEEL_NODE_ID=ordinal: host name '%s' does not end "
				       "in -N (a StatefulSet pod's does)", host);
	snprintf(out, cap, "%lu", n + 1);
	return 0;
}

static const char *const names[] = {
	"KEEL_NODE_ID", "KEEL_CLUSTER_ID", "KEEL_LISTEN", "KEEL_SECRET_FILE", "KEEL_SHARDS",
	"KEEL_PEERS", "KEEL_DATA_DIR", "KEEL_GROUPS", "KEEL_PROTOCOL", "KEEL_CLIENT_LISTEN",
	"KEEL_TOKEN_FILE", "KEEL_HTTP_LISTEN", "KEEL_READY_LAG",
};

int node_env_config(char **text, char *err)
{
	*text = NULL;
	/* a value is one INI value: no line breaks or comment marks that
	 * would smuggle in other keys */
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = env(names[i], "");
		if (strpbrk(v, "\n\r#;[]") && strcmp(names[i], "KEEL_PEERS") &&
		    strcmp(names[i], "KEEL_LISTEN") && strcmp(names[i], "KEEL_CLIENT_LISTEN") &&
		    strcmp(names[i], "KEEL_HTTP_LISTEN"))
			return keel_errmsg_set(err, KEEL_ECONFIG,
					       "environment: %s: a line break, '#', ';' or a bracket "
					       "has no place in it", names[i]);
		if (strpbrk(v, "\n\r#;"))
			return keel_errmsg_set(err, KEEL_ECONFIG,
					       "environment: %s: a line break, '#' or ';' has no place "
					       "in it", names[i]);
	}
	char id[32];
	int rc = node_id(id, sizeof(id), err);
	if (rc < 0)
		return rc;
	const char *peers = env("KEEL_PEERS", NULL);
	if (!peers)
		return keel_errmsg_set(err, KEEL_ECONFIG,
				       "environment: KEEL_PEERS is missing (ID=HOST:PORT,... for every "
				       "node, this one included, e.g. 1=keel-0.keel:7000,2=keel-1.keel:7000)");
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return keel_errmsg_set(err, -ENOMEM, "environment: out of memory");
	fprintf(f, "[node]\nid = %s # KEEL_NODE_ID\n", id);
	fprintf(f, "cluster = %s # KEEL_CLUSTER_ID\n", env("KEEL_CLUSTER_ID", "1"));
	/* the listen address must be this node's own [peers] entry (the
	 * parser checks they agree): by default it is that entry, a name that
	 * resolves to this container's own address (keel-0.keel) */
	char self[300] = "";
	size_t idl = strlen(id);
	for (const char *q = peers; q && *q;) {
		const char *comma = strchr(q, ',');
		size_t n = comma ? (size_t)(comma - q) : strlen(q);
		const char *eq = memchr(q, '=', n);
		if (!eq || eq == q) {
			fclose(f);
			free(buf);
			return keel_errmsg_set(err, KEEL_ECONFIG,
					       "environment: KEEL_PEERS: '%.*s' is not ID=HOST:PORT",
					       (int)n, q);
		}
		if (n > idl && !strncmp(q, id, idl) && q[idl] == '=' && n - idl - 1 < sizeof(self))
			snprintf(self, sizeof(self), "%.*s", (int)(n - idl - 1), q + idl + 1);
		q = comma ? comma + 1 : NULL;
	}
	const char *listen = env("KEEL_LISTEN", self);
	if (!*listen) {
		fclose(f);
		free(buf);
		return keel_errmsg_set(err, KEEL_ECONFIG,
				       "environment: KEEL_PEERS has no entry for this node (%s), and "
				       "KEEL_LISTEN is not set", id);
	}
	fprintf(f, "listen = %s # KEEL_LISTEN, else this node's KEEL_PEERS entry\n", listen);
	fprintf(f, "secret_file = %s # KEEL_SECRET_FILE\n",
		env("KEEL_SECRET_FILE", "/etc/keel/secret"));
	if (env("KEEL_SHARDS", NULL))
		fprintf(f, "shards = %s # KEEL_SHARDS\n", env("KEEL_SHARDS", NULL));
	fprintf(f, "# KEEL_PEERS\n[peers]\n");
	/* ID=HOST:PORT, comma-separated: one line each */
	const char *p = peers;
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		if (!eq || eq == p) {
			fclose(f);
			free(buf);
			return keel_errmsg_set(err, KEEL_ECONFIG,
					       "environment: KEEL_PEERS: '%.*s' is not ID=HOST:PORT",
					       (int)n, p);
		}
		fprintf(f, "%.*s = %.*s\n", (int)(eq - p), p, (int)(n - (size_t)(eq - p) - 1), eq + 1);
		p += n;
		if (*p == ',')
			p++;
	}
	fprintf(f, "[log]\ndir = %s # KEEL_DATA_DIR\n", env("KEEL_DATA_DIR", "/var/lib/keel"));
	if (env("KEEL_GROUPS", NULL))
		fprintf(f, "groups = %s # KEEL_GROUPS\n", env("KEEL_GROUPS", NULL));
	if (env("KEEL_PROTOCOL", NULL))
		fprintf(f, "protocol = %s # KEEL_PROTOCOL\n", env("KEEL_PROTOCOL", NULL));
	if (env("KEEL_CLIENT_LISTEN", NULL)) {
		fprintf(f, "[client]\nlisten = %s # KEEL_CLIENT_LISTEN\n", env("KEEL_CLIENT_LISTEN", NULL));
		if (env("KEEL_TOKEN_FILE", NULL))
			fprintf(f, "token_file = %s # KEEL_TOKEN_FILE\n", env("KEEL_TOKEN_FILE", NULL));
	}
	if (env("KEEL_HTTP_LISTEN", NULL)) {
		fprintf(f, "[http]\nlisten = %s # KEEL_HTTP_LISTEN\n", env("KEEL_HTTP_LISTEN", NULL));
		if (env("KEEL_READY_LAG", NULL))
			fprintf(f, "ready_lag = %s # KEEL_READY_LAG\n", env("KEEL_READY_LAG", NULL));
	}
	if (fclose(f) != 0) {
		free(buf);
		return keel_errmsg_set(err, -ENOMEM, "environment: out of memory");
	}
	*text = buf;
	return 0;
}
