/* libFuzzer target: the lock command decoder (services/lock/lock_sm.c) and the
 * state machine that applies whatever decodes. A command that decodes
 * must re-encode to the same bytes; applying any bytes (decodable or
 * not) must never crash; the snapshot of the result must restore to a
 * store that snapshots to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/lock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keel_lock_cmd c;
	if (keel_lock_cmd_decode(data, size, &c) == 0) {
		uint8_t *buf = malloc(size ? size : 1);
		if (!buf)
			return 0;
		int n = keel_lock_cmd_encode(&c, buf, size);
		if (n != (int)size || memcmp(buf, data, size))
			abort();
		free(buf);
	}
	struct keel_lock_sm *sm;
	if (keel_lock_sm_create(&sm) < 0)
		return 0;
	/* the input as one command, then split in two at its first byte */
	keel_lock_sm_apply(sm, 1, data, size, NULL);
	if (size > 1) {
		size_t cut = data[0] % size;
		keel_lock_sm_apply(sm, 2, data, cut, NULL);
		keel_lock_sm_apply(sm, 3, data + cut, size - cut, NULL);
	}
	void *snap;
	size_t len;
	if (keel_lock_sm_snapshot(sm, &snap, &len) == 0) {
		struct keel_lock_sm *sm2;
		if (keel_lock_sm_create(&sm2) == 0) {
			if (keel_lock_sm_restore(sm2, keel_lock_sm_index(sm), snap, len) != 0)
				abort();
			void *snap2;
			size_t len2;
			if (keel_lock_sm_snapshot(sm2, &snap2, &len2) == 0) {
				if (len2 != len || memcmp(snap, snap2, len))
					abort();
				free(snap2);
			}
			keel_lock_sm_destroy(sm2);
		}
		/* a restore of damaged bytes must fail cleanly */
		if (len > 9) {
			((uint8_t *)snap)[data[size ? size - 1 : 0] % len] ^= 0x40;
			struct keel_lock_sm *sm3;
			if (keel_lock_sm_create(&sm3) == 0) {
				keel_lock_sm_restore(sm3, 3, snap, len);
				keel_lock_sm_destroy(sm3);
			}
		}
		free(snap);
	}
	keel_lock_sm_destroy(sm);
	return 0;
}
