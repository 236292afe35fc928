/* libFuzzer: keel_node_config_parse, the INI loader (our line reader,
 * libinih, the handlers) on arbitrary bytes. Any input either parses into
 * a configuration that holds what a node needs, or fails with a message
 * that names the file (and a line that exists), leaving nothing to free;
 * ASan's leak check runs at exit. A secret file next to the "config" lets
 * inputs reach the end of a successful parse. Never touches the network
 * (keel_node_config_validate is not called). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"

static char dir[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	snprintf(dir, sizeof(dir), "/tmp/keel-fuzz-config-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", dir);
	FILE *f = fopen(p, "w");
	if (!f || fputs("a-cluster-secret-for-the-fuzzer\n", f) < 0 || fclose(f))
		abort();
	chmod(p, 0600);
	return 0;
}

static __attribute__((destructor)) void cleanup(void)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/secret", dir);
	unlink(p);
	rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	size_t lines = 1;
	for (const char *p = s; *p; p++)
		lines += *p == '\n';
	struct keel_node_config cfg;
	char em[KEEL_ERRMSG_LEN];
	em[0] = '\0';
	int rc = keel_node_config_parse(s, "fuzz.ini", dir, &cfg, em);
	if (rc == 0) {
		if (!cfg.node_id || !cfg.cluster_id || !cfg.listen_port || !cfg.secret ||
		    cfg.secret_len < 16 || cfg.max_frame < 64)
			abort();
		for (size_t i = 0; i < cfg.npeers; i++) {
			if (!cfg.peers[i].port || !cfg.peers[i].node || !cfg.peer_lines[i] ||
			    cfg.peer_lines[i] > lines)
				abort();
			for (size_t j = 0; j < i; j++)
				if (cfg.peers[j].node == cfg.peers[i].node)
					abort(); /* listed twice got through */
		}
		for (size_t i = 0; i < cfg.nentries; i++)
			if (!cfg.entries[i].line || cfg.entries[i].line > lines ||
			    keel_node_config_get(&cfg, cfg.entries[i].section, cfg.entries[i].key) == NULL)
				abort();
		keel_node_config_free(&cfg);
	} else {
		if (rc > 0 || strncmp(em, "fuzz.ini", 8) != 0)
			abort(); /* every error names the file */
		if (em[8] == ':' && em[9] >= '0' && em[9] <= '9') {
			unsigned long line = strtoul(em + 9, NULL, 10);
			if (line == 0 || line > lines)
				abort(); /* and a line the input has */
		}
		if (cfg.peers || cfg.entries || cfg.secret || cfg.peer_lines)
			abort(); /* nothing to free after a failure */
	}
	free(s);
	return 0;
}
