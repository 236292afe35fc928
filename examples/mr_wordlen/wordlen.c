/*
 * examples/mr_wordlen — a map-reduce job as a shared object: a histogram of
 * word lengths. Build it, then run it on any text:
 *
 *   cc -shared -fPIC -I include -o libwordlen.so examples/mr_wordlen/wordlen.c
 *   keel mr run --job ./libwordlen.so --input DIR --output OUT
 *
 * The engine dlopen()s the object and looks up one data symbol,
 * `keel_mr_job` (KEEL_MR_JOB_SYMBOL); nothing else needs exporting. The
 * callbacks run on several shards at once, so they keep no mutable global
 * state. Keys are 4-digit zero-padded lengths, so the byte order the engine
 * reduces in is numeric order.
 */
#include <stdio.h>
#include <string.h>

#include <keel/mr.h>

static void wl_map(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit)
{
	(void)state;
	static const uint64_t one = 1;
	const char *p = rec->data, *e = p + rec->len;
	while (p < e) {
		while (p < e && (*p == ' ' || *p == '\t' || *p == '\r'))
			p++;
		const char *s = p;
		while (p < e && *p != ' ' && *p != '\t' && *p != '\r')
			p++;
		if (p > s) {
			char key[8];
			size_t n = (size_t)(p - s);
			snprintf(key, sizeof key, "%04zu", n > 9999 ? (size_t)9999 : n);
			keel_mr_emit(emit, key, 4, &one, sizeof one);
		}
	}
}

static void wl_combine(void *state, void *acc, const void *val, size_t vsize)
{
	(void)state;
	(void)vsize;
	uint64_t a, b;
	memcpy(&a, acc, 8);
	memcpy(&b, val, 8);
	a += b;
	memcpy(acc, &a, 8);
}

static void wl_reduce(void *state, const void *key, size_t klen, struct keel_mr_values *vals,
		      struct keel_mr_out *out)
{
	(void)state;
	uint64_t sum = 0, v;
	const void *p;
	size_t n;
	while (keel_mr_values_next(vals, &p, &n)) {
		memcpy(&v, p, 8);
		sum += v;
	}
	keel_mr_out_kv_u64(out, key, klen, sum);
}

const struct keel_mr_job keel_mr_job = {
	.abi = KEEL_MR_ABI,
	.name = "wordlen",
	.format = KEEL_MR_LINES,
	.value_size = 8,
	.map = wl_map,
	.combine = wl_combine,
	.reduce = wl_reduce,
};
