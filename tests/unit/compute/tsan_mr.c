/*
 * The map-reduce engine under ThreadSanitizer (Criterion cannot start
 * there): wordcount with spills and sort with skewed keys on 4 shards of
 * the runtime (a cluster of one) — tasks handed out by shard 0, sealed
 * generations read by the shards reducing, attempts moving from shard 0 to
 * their shard, tables freed by their owners are what TSan watches. Checks
 * the answers against simple references. Exit 0 on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/mr.h"

#define CHECK(c, ...)                                                         \
	do {                                                                  \
		if (!(c)) {                                                   \
			fprintf(stderr, "tsan_mr: " __VA_ARGS__);             \
			fprintf(stderr, "\n");                                \
			exit(1);                                              \
		}                                                             \
	} while (0)

static char base[64];

static char *slurp_dir(const char *dir, size_t *n)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "cat %s/part-*", dir);
	FILE *p = popen(cmd, "r");
	CHECK(p, "popen");
	size_t cap = 1 << 20, len = 0;
	char *b = malloc(cap);
	size_t got;
	while ((got = fread(b + len, 1, cap - len, p)) > 0) {
		len += got;
		if (len == cap)
			b = realloc(b, cap *= 2);
	}
	pclose(p);
	*n = len;
	return b;
}

static void run(const char *job, const char *in, const char *out, uint32_t shards, uint64_t budget,
		struct keel_mr_stats *st)
{
	struct keel_mr_jobref ref;
	char err[KEEL_ERRMSG_LEN];
	CHECK(keel_mr_job_open(&ref, job, NULL, err) == 0, "%s", err);
	const char *inputs[] = {in};
	struct keel_mr_config cfg = {.job = &ref, .inputs = inputs, .n_inputs = 1, .output = out,
				     .shards = shards, .mem_budget = budget, .split_size = 64 << 10,
				     .no_fsync = true};
	CHECK(keel_mr_run(&cfg, st, err) == 0, "%s: %s", job, err);
	keel_mr_job_close(&ref);
}

int main(void)
{
	snprintf(base, sizeof base, "/tmp/keel-tsan-mr.XXXXXX");
	CHECK(mkdtemp(base), "mkdtemp");
	char in[128], out[128], sin[128], sout[128], err[KEEL_ERRMSG_LEN];
	snprintf(in, sizeof in, "%s/words.txt", base);
	snprintf(out, sizeof out, "%s/wc", base);
	snprintf(sin, sizeof sin, "%s/recs.dat", base);
	snprintf(sout, sizeof sout, "%s/sorted", base);
	CHECK(keel_mr_gen_words(in, 400 << 10, 3, 20000, err) == 0, "%s", err);
	CHECK(keel_mr_gen_sort(sin, 8000, 4, 7, err) == 0, "%s", err);

	struct keel_mr_stats st;
	run("wordcount", in, out, 4, 64 << 10, &st);
	CHECK(st.spills > 0, "expected spills");
	/* Reference: words in the input; the counts in the output sum to it. */
	size_t n;
	FILE *f = fopen(in, "r");
	uint64_t words = 0;
	int c, inw = 0;
	while ((c = fgetc(f)) != EOF) {
		int sp = c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
		if (!sp && !inw)
			words++;
		inw = !sp;
	}
	fclose(f);
	char *o = slurp_dir(out, &n);
	uint64_t sum = 0;
	for (char *p = o; p < o + n;) {
		char *tab = memchr(p, '\t', (size_t)(o + n - p));
		CHECK(tab, "malformed output");
		sum += strtoull(tab + 1, &p, 10);
		p++;
	}
	free(o);
	CHECK(sum == words && st.emitted == words, "counts %lu, emitted %lu, words %lu",
	      (unsigned long)sum, (unsigned long)st.emitted, (unsigned long)words);

	run("sort", sin, sout, 4, 128 << 10, &st);
	char *s = slurp_dir(sout, &n);
	CHECK(n == 8000 * 100, "sort wrote %zu bytes", n);
	for (size_t i = 100; i < n; i += 100)
		CHECK(memcmp(s + i - 100, s + i, 10) <= 0, "not ordered at %zu", i / 100);
	free(s);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", base);
	CHECK(system(cmd) == 0, "cleanup");
	printf("tsan_mr: ok\n");
	return 0;
}
