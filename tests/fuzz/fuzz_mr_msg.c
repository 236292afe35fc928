/* Fuzz target: what one map-reduce node decodes from another — the JOB
 * message and the stream of serialized pairs a node sends for a partition
 * (merged as a reducer would). First byte picks the decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compute/mr_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
	if (data[0] & 1) {
		struct mr_job_msg m;
		if (mr_job_msg_decode(d, n, &m) == 0) {
			for (uint32_t i = 0; i < m.n_inputs; i++)
				if (!m.inputs[i])
					abort();
			mr_job_msg_free(&m);
		}
		return 0;
	}
	/* Two sources from the same bytes, merged without reduce. */
	struct mr_source src[2];
	size_t half = n / 2;
	char err[KEEL_ERRMSG_LEN];
	if (mr_source_buf(&src[0], d, half) || mr_source_buf(&src[1], d + half, n - half))
		return 0;
	struct mr_merge *m;
	if (mr_merge_begin(&m, src, 2, NULL, NULL, NULL, err))
		return 0;
	const uint8_t *k, *v;
	uint32_t kl, vl;
	uint64_t sum = 0;
	while (mr_merge_peek(m, &k, &kl, &v, &vl)) {
		if (kl)
			sum += k[kl - 1];
		if (vl)
			sum += v[vl - 1];
		if (mr_merge_pop(m))
			break;
	}
	mr_merge_end(m);
	(void)sum;
	return 0;
}
