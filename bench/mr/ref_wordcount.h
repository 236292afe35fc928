/* bench/mr/ref_wordcount.h — single-threaded reference wordcount. */
#ifndef KEEL_BENCH_MR_REF_WORDCOUNT_H
#define KEEL_BENCH_MR_REF_WORDCOUNT_H
#include <stdbool.h>
#include <stdint.h>

struct ref_wc_result {
	uint64_t words, distinct, top_count;
};

/* Counts the words of path; 0 or -errno. */
int ref_wordcount(const char *path, struct ref_wc_result *res);
#endif
