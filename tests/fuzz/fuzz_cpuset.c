/* libFuzzer: keel_cpuset_parse (the --cpuset option and the node config's
 * cpuset). Any input either parses or returns KEEL_EBADINPUT with a
 * message; a parsed set formats back to a list that parses to the same set. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	struct keel_cpuset set, again;
	char em[KEEL_ERRMSG_LEN];
	em[0] = '\0';
	int rc = keel_cpuset_parse(s, &set, em);
	if (rc == 0) {
		char buf[8192];
		int n = keel_cpuset_format(&set, buf, sizeof(buf));
		if (n < 0 || (size_t)n >= sizeof(buf))
			abort(); /* 1024 CPUs never need 8 KiB */
		if (keel_cpuset_parse(buf, &again, NULL) != 0 || memcmp(&set, &again, sizeof(set)) != 0)
			abort();
	} else if (rc != KEEL_EBADINPUT || em[0] == '\0') {
		abort();
	}
	free(s);
	return 0;
}
