/* libFuzzer target: the group host's snapshot file decoder
 * (consensus/group/group_snapshot.c, keel_group_snapshot_decode). Whatever the
 * bytes, it must not read outside them; what it accepts must re-encode to
 * the same bytes (the format has one encoding) and decode to the same
 * fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly size bytes, so reading past it is caught. */
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	struct keel_raft_snapshot s;
	const char *why = NULL;
	if (keel_group_snapshot_decode(buf, size, &s, &why) != 0) {
		if (!why)
			abort(); /* a refusal always says why */
		free(buf);
		return 0;
	}
	uint8_t x = 0;
	for (size_t i = 0; i < s.len; i++)
		x ^= s.data[i];
	sink = x;
	size_t need = keel_group_snapshot_encoded_size(&s);
	if (need != size)
		abort();
	uint8_t *out = malloc(need);
	if (!out) {
		free(buf);
		return 0;
	}
	int n = keel_group_snapshot_encode(&s, out, need);
	if (n < 0 || (size_t)n != size || memcmp(out, buf, size))
		abort();
	struct keel_raft_snapshot t;
	if (keel_group_snapshot_decode(out, need, &t, NULL) != 0 || t.meta.index != s.meta.index ||
	    t.meta.term != s.meta.term || t.len != s.len ||
	    memcmp(&t.meta.conf, &s.meta.conf, sizeof(t.meta.conf)))
		abort();
	free(out);
	free(buf);
	return 0;
}
