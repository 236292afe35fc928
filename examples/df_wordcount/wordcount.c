/*
 * A dataflow job as a shared object: word count over the text files named
 * by its argument (comma-separated), written as "word<TAB>count" lines,
 * words in byte order within each partition.
 *
 *   keel df run --job build/examples/libkeeldf_wordcount.so --arg corpus/
 *
 * The engine (libkeel, in the keel process) provides keel_df_* when it
 * dlopen()s this file, so it links against nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "keel/dataflow.h"

static void words(void *arg, const struct keel_df_rec *r, struct keel_df_emit *out)
{
	(void)arg;
	const char *s = r->val;
	uint64_t one = 1;
	for (size_t i = 0; i < r->vlen;) {
		while (i < r->vlen && (s[i] == ' ' || s[i] == '\t'))
			i++;
		size_t b = i;
		while (i < r->vlen && s[i] != ' ' && s[i] != '\t')
			i++;
		if (i > b && keel_df_emit(out, s + b, i - b, &one, sizeof one))
			return;
	}
}

static void add(void *arg, void *acc, const void *val, size_t vsize)
{
	(void)arg, (void)vsize;
	uint64_t a, b;
	memcpy(&a, acc, 8);
	memcpy(&b, val, 8);
	a += b;
	memcpy(acc, &a, 8);
}

static int print(void *arg, uint32_t part, const struct keel_df_rec *r)
{
	(void)part;
	uint64_t n;
	memcpy(&n, r->val, 8);
	fprintf(arg, "%.*s\t%" PRIu64 "\n", (int)r->klen, (const char *)r->key, n);
	return 0;
}

static int run(struct keel_df_ctx *ctx, const char *arg, FILE *out, char *errmsg)
{
	if (!arg || !*arg)
		return keel_errmsg_set(errmsg, KEEL_EBADINPUT,
				       "wordcount: --arg names the input files (comma-separated)");
	char *copy = strdup(arg);
	if (!copy)
		return keel_errmsg_set(errmsg, -ENOMEM, "wordcount: argument");
	const char *paths[64];
	size_t n = 0;
	for (char *save = NULL, *p = strtok_r(copy, ",", &save); p && n < 64;
	     p = strtok_r(NULL, ",", &save))
		paths[n++] = p;
	struct keel_df *text = keel_df_text(ctx, paths, n, 0, errmsg);
	int rc = KEEL_EBADINPUT;
	if (text) {
		struct keel_df *counts =
			keel_df_reduce_by_key(keel_df_flat_map(text, words, NULL), 8, add, NULL, 0);
		rc = keel_df_collect(counts, print, out, errmsg);
	}
	free(copy);
	return rc;
}

const struct keel_df_job keel_df_job = {
	.abi = KEEL_DF_ABI,
	.name = "wordcount",
	.run = run,
};
