/* libFuzzer target: the KV command decoder (services/kv/kv_cmd.c) and the
 * state machine that applies whatever decodes. A command that decodes
 * must re-encode to the same bytes; applying any bytes (decodable or
 * not) must never crash; the snapshot of the result must restore to a
 * store that snapshots to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/kv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keel_kv_cmd c;
	if (keel_kv_cmd_decode(data, size, &c) == 0) {
		uint8_t *buf = malloc(size ? size : 1);
		if (!buf)
			return 0;
		int n = keel_kv_cmd_encode(&c, buf, size);
		if (n != (int)size || memcmp(buf, data, size))
			abort();
		free(buf);
	}
	struct keel_kv *kv;
	if (keel_kv_create(NULL, &kv) < 0)
		return 0;
	/* the input as one command, then split in two at its first byte */
	keel_kv_apply(kv, 1, data, size, NULL);
	if (size > 1) {
		size_t cut = data[0] % size;
		keel_kv_apply(kv, 2, data, cut, NULL);
		keel_kv_apply(kv, 3, data + cut, size - cut, NULL);
	}
	void *snap;
	size_t len;
	if (keel_kv_snapshot(kv, &snap, &len) == 0) {
		struct keel_kv *kv2;
		if (keel_kv_create(NULL, &kv2) == 0) {
			if (keel_kv_restore(kv2, keel_kv_applied_index(kv), snap, len) != 0)
				abort();
			void *snap2;
			size_t len2;
			if (keel_kv_snapshot(kv2, &snap2, &len2) == 0) {
				if (len2 != len || memcmp(snap, snap2, len))
					abort();
				free(snap2);
			}
			keel_kv_destroy(kv2);
		}
		/* a restore of damaged bytes must fail cleanly */
		if (len > 9) {
			((uint8_t *)snap)[data[size ? size - 1 : 0] % len] ^= 0x40;
			struct keel_kv *kv3;
			if (keel_kv_create(NULL, &kv3) == 0) {
				keel_kv_restore(kv3, 3, snap, len);
				keel_kv_destroy(kv3);
			}
		}
		free(snap);
	}
	keel_kv_destroy(kv);
	return 0;
}
