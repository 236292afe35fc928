/* cli/node_resp.c — `keel node`'s [resp] section (cli/node_resp.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli/node_resp.h"

int node_resp_load(const struct keel_node_config *cfg, struct node_resp *r, char *errmsg)
{
	memset(r, 0, sizeof(*r));
	r->listen = keel_node_config_get(cfg, "resp", "listen");
	const char *pf = keel_node_config_get(cfg, "resp", "password_file");
	const char *auth = keel_node_config_get(cfg, "resp", "auth");
	const char *mc = keel_node_config_get(cfg, "resp", "max_conns");
	if (!r->listen) {
		if (pf || auth || mc)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "%s: [resp] needs listen = HOST:PORT",
					       cfg->path);
		return 0;
	}
	if (!keel_node_config_get(cfg, "client", "listen"))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "%s: [resp] runs on the services: it needs a [client] section too",
				       cfg->path);
	if (mc) {
		char *end = NULL;
		unsigned long v = strtoul(mc, &end, 10);
		if (!end || *end || v < 1 || v > 1000000)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "%s: [resp] max_conns: expected a number from 1 to 1000000",
					       cfg->path);
		r->max_conns = (uint32_t)v;
	}
	if (auth && strcmp(auth, "none") && strcmp(auth, "password"))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "%s: [resp] auth: expected none or password, not '%s'", cfg->path,
				       auth);
	bool none = auth && !strcmp(auth, "none");
	if (none && pf)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "%s: [resp] auth = none and a password_file: choose one",
				       cfg->path);
	if (none)
		return 0;
	if (!pf)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "%s: [resp] needs password_file (AUTH's password), or auth = none "
				       "to let every client in without one",
				       cfg->path);
	char path[1100];
	if (pf[0] == '/' || !cfg->base_dir[0])
		snprintf(path, sizeof(path), "%s", pf);
	else
		snprintf(path, sizeof(path), "%s/%s", cfg->base_dir, pf);
	FILE *f = fopen(path, "r");
	if (!f)
		return keel_errmsg_set(errmsg, -errno, "%s: [resp] password_file %s: %s", cfg->path,
				       path, strerror(errno));
	size_t n = fread(r->password, 1, sizeof(r->password), f);
	fclose(f);
	while (n && (r->password[n - 1] == '\n' || r->password[n - 1] == '\r'))
		n--;
	if (n < 1 || n >= sizeof(r->password))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "%s: [resp] password_file %s: a password is 1 to %zu bytes",
				       cfg->path, path, sizeof(r->password) - 1);
	r->password_len = n;
	return 0;
}

int node_resp_start(struct node_resp *r, struct keel_node *node, struct keel_endpoint *ep,
		    uint32_t groups, char *errmsg)
{
	if (!r->listen)
		return 0;
	int rc = keel_resp_shard_start(ep, groups, errmsg);
	if (rc < 0 || keel_endpoint_shard(ep) != 0)
		return rc;
	struct keel_resp_port_config pc = {.node = node, .listen = r->listen, .groups = groups,
					   .password = r->password_len ? r->password : NULL,
					   .password_len = r->password_len, .max_conns = r->max_conns};
	rc = keel_resp_port_start(&pc, ep, &r->port, errmsg);
	if (rc < 0)
		keel_resp_shard_stop(ep);
	return rc;
}

void node_resp_stop(struct node_resp *r, struct keel_endpoint *ep)
{
	if (!r->listen)
		return;
	if (keel_endpoint_shard(ep) == 0 && r->port) {
		keel_resp_port_stop(r->port);
		r->port = NULL;
	}
	keel_resp_shard_stop(ep);
}
