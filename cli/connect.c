/* How client commands (keel kv, keel status) find and reach a cluster:
 * --endpoints, else $KEEL_ENDPOINTS, else DIR/endpoints of `keel cluster
 * up --dir DIR`; the token from --token-file, else DIR/client-token. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keel/client.h"

/* The first line of path into buf, trailing blanks cut; its length, or
 * -errno. */
static int read_first_line(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = '\0';
	n = strlen(buf);
	while (n && (buf[n - 1] == ' ' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return (int)n;
}

int keel_cli_connect(const struct keel_cmd_spec *spec, const struct keel_cli_cluster *cl,
		     struct keel_client **out)
{
	char eps[4096], token[300];
	int rc = keel_cli_find_cluster(spec, cl, eps, sizeof(eps), token, sizeof(token));
	if (rc)
		return rc;
	struct keel_client_config cc = {.endpoints = eps, .token = token[0] ? token : NULL,
					.timeout_ms = (uint32_t)cl->timeout_ms};
	char err[KEEL_ERRMSG_LEN];
	if (keel_client_open(&cc, out, err) < 0) {
		fprintf(stderr, "keel %s: %s\n", spec->name, err);
		return KEEL_CLI_UNREACHABLE;
	}
	return 0;
}

int keel_cli_find_cluster(const struct keel_cmd_spec *spec, const struct keel_cli_cluster *cl,
			  char *eps_out, size_t eps_cap, char *token, size_t token_cap)
{
	char eps[4096], path[1100];
	token[0] = '\0';
	const char *endpoints = cl->endpoints;
	if (!endpoints || !endpoints[0])
		endpoints = getenv("KEEL_ENDPOINTS");
	if ((!endpoints || !endpoints[0]) && cl->dir) {
		snprintf(path, sizeof(path), "%s/endpoints", cl->dir);
		int rc = read_first_line(path, eps, sizeof(eps));
		if (rc <= 0) {
			fprintf(stderr, "keel %s: %s: %s\n", spec->name, path,
				rc < 0 ? keel_strerror(rc) : "empty");
			return KEEL_CLI_UNREACHABLE;
		}
		endpoints = eps;
	}
	if (!endpoints || !endpoints[0])
		return keel_opt_usage(spec, "no cluster: give --endpoints, KEEL_ENDPOINTS or --dir");
	if (cl->token_file) {
		int rc = read_first_line(cl->token_file, token, token_cap);
		if (rc < 0) {
			fprintf(stderr, "keel %s: token file %s: %s\n", spec->name, cl->token_file,
				keel_strerror(rc));
			return KEEL_CLI_UNREACHABLE;
		}
	} else if (cl->dir) {
		snprintf(path, sizeof(path), "%s/client-token", cl->dir);
		if (read_first_line(path, token, token_cap) < 0)
			token[0] = '\0'; /* a cluster without a token */
	}
	snprintf(eps_out, eps_cap, "%s", endpoints);
	return 0;
}
