/*
 * Map-reduce engine tests: every built-in job against a single-threaded
 * reference written here, on inputs of several shapes (empty file, one huge
 * line, many tiny files, heavily skewed keys), on 1 and several shards, with
 * and without spilling; bad input fails with a clear message and leaves no
 * result-looking output.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/mr.h"

/* ---- helpers ---------------------------------------------------------- */

static char tmpbase[256];

static void make_tmp(void)
{
	snprintf(tmpbase, sizeof tmpbase, "/tmp/keel-mr-test.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpbase));
}

static void rm_rf(const char *p)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
	cr_assert_eq(system(cmd), 0);
}

static void cleanup(void)
{
	rm_rf(tmpbase);
}

static char *path_in(const char *rel)
{
	static char buf[8][512];
	static int k;
	char *b = buf[k++ % 8];
	snprintf(b, 512, "%s/%s", tmpbase, rel);
	return b;
}

static void write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(data, 1, n, f), n);
	fclose(f);
}

static char *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)sz + 1);
	cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
	b[sz] = 0;
	fclose(f);
	*n = (size_t)sz;
	return b;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files of a directory, sorted, excluding names starting with '.'/'_'. */
static size_t list_dir(const char *dir, char ***out)
{
	DIR *d = opendir(dir);
	cr_assert_not_null(d, "%s", dir);
	size_t n = 0, cap = 16;
	char **v = malloc(cap * sizeof *v);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || de->d_name[0] == '_')
			continue;
		if (n == cap)
			v = realloc(v, (cap *= 2) * sizeof *v);
		v[n] = malloc(strlen(dir) + strlen(de->d_name) + 2);
		sprintf(v[n], "%s/%s", dir, de->d_name);
		n++;
	}
	closedir(d);
	qsort(v, n, sizeof *v, cmp_name);
	*out = v;
	return n;
}

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Concatenation of the part files in partition order. */
static char *read_output(const char *dir, size_t *n)
{
	char ok[600];
	snprintf(ok, sizeof ok, "%s/_SUCCESS", dir);
	cr_assert_eq(access(ok, F_OK), 0, "no _SUCCESS in %s", dir);
	char **files;
	size_t nf = list_dir(dir, &files), len = 0;
	char *all = malloc(1);
	for (size_t i = 0; i < nf; i++) {
		size_t fl;
		char *b = read_file(files[i], &fl);
		all = realloc(all, len + fl + 1);
		memcpy(all + len, b, fl);
		len += fl;
		free(b);
	}
	all[len] = 0;
	free_list(files, nf);
	*n = len;
	return all;
}

/* Lines of a buffer, sorted: a canonical form of unordered outputs. */
static char *sorted_lines(const char *buf, size_t n)
{
	size_t cnt = 0;
	for (size_t i = 0; i < n; i++)
		cnt += buf[i] == '\n';
	const char **lines = malloc((cnt + 1) * sizeof *lines);
	char *copy = malloc(n + 1);
	memcpy(copy, buf, n);
	copy[n] = 0;
	size_t k = 0;
	for (char *p = copy, *e; *p; p = e + 1) {
		e = strchr(p, '\n');
		if (!e)
			break;
		*e = 0;
		lines[k++] = p;
	}
	qsort(lines, k, sizeof *lines, cmp_name);
	char *out = malloc(n + 2);
	size_t o = 0;
	for (size_t i = 0; i < k; i++) {
		size_t l = strlen(lines[i]);
		memcpy(out + o, lines[i], l);
		o += l;
		out[o++] = '\n';
	}
	out[o] = 0;
	free(lines);
	free(copy);
	return out;
}

/* Runs a job over inputs; returns the rc, errmsg filled. */
static int run_job(const char *spec, const char *arg, const char *input, const char *output,
		   uint32_t shards, uint32_t parts, uint64_t budget, uint64_t split,
		   struct keel_mr_stats *st, char *err)
{
	struct keel_mr_jobref job;
	int rc = keel_mr_job_open(&job, spec, arg, err);
	if (rc)
		return rc;
	const char *inputs[] = {input};
	struct keel_mr_config cfg = {
		.job = &job, .inputs = inputs, .n_inputs = 1, .output = output,
		.shards = shards, .partitions = parts, .mem_budget = budget, .split_size = split,
	};
	struct keel_mr_stats local;
	rc = keel_mr_run(&cfg, st ? st : &local, err);
	keel_mr_job_close(&job);
	return rc;
}

/* ---- single-threaded references --------------------------------------- */

static bool is_sp(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

struct wc_ent {
	char *w;
	uint64_t n;
};

static int cmp_wc(const void *a, const void *b)
{
	return strcmp(((const struct wc_ent *)a)->w, ((const struct wc_ent *)b)->w);
}

/* Words of every file in dir, then (word, count) by sorting: no hashing to
 * share a bug with the engine. Returns "word\tcount\n" lines, sorted. */
static char *ref_wordcount(const char *dir)
{
	char **files;
	size_t nf = list_dir(dir, &files);
	size_t cap = 1024, n = 0;
	struct wc_ent *v = malloc(cap * sizeof *v);
	for (size_t f = 0; f < nf; f++) {
		size_t len;
		char *b = read_file(files[f], &len);
		for (size_t i = 0; i < len;) {
			while (i < len && is_sp(b[i]))
				i++;
			size_t s = i;
			while (i < len && !is_sp(b[i]))
				i++;
			if (i > s) {
				if (n == cap)
					v = realloc(v, (cap *= 2) * sizeof *v);
				v[n].w = strndup(b + s, i - s);
				v[n++].n = 1;
			}
		}
		free(b);
	}
	free_list(files, nf);
	qsort(v, n, sizeof *v, cmp_wc);
	size_t ocap = 1024, o = 0;
	char *out = malloc(ocap);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && !strcmp(v[j].w, v[i].w))
			j++;
		char line[64];
		int l = snprintf(line, sizeof line, "\t%zu\n", j - i);
		size_t wl = strlen(v[i].w);
		while (o + wl + (size_t)l + 1 > ocap)
			out = realloc(out, ocap *= 2);
		memcpy(out + o, v[i].w, wl);
		memcpy(out + o + wl, line, (size_t)l);
		o += wl + (size_t)l;
		i = j;
	}
	out[o] = 0;
	for (size_t i = 0; i < n; i++)
		free(v[i].w);
	free(v);
	char *s = sorted_lines(out, o);
	free(out);
	return s;
}

static void check_wordcount(const char *in, uint32_t shards, uint64_t budget, uint64_t split,
			    bool expect_spill)
{
	static int seq;
	char out[512];
	snprintf(out, sizeof out, "%s/wc-out-%d", tmpbase, seq++);
	char err[KEEL_ERRMSG_LEN];
	struct keel_mr_stats st;
	int rc = run_job("wordcount", NULL, in, out, shards, 0, budget, split, &st, err);
	cr_assert_eq(rc, 0, "wordcount failed: %s", err);
	if (expect_spill)
		cr_assert_gt(st.spills, 0, "expected spills with a %lu-byte budget", (unsigned long)budget);
	else
		cr_assert_eq(st.spills, 0);
	size_t n;
	char *got = read_output(out, &n);
	char *gs = sorted_lines(got, n);
	char *want = ref_wordcount(in);
	cr_assert_str_eq(gs, want, "wordcount output differs from the reference (shards %u)", shards);
	free(got);
	free(gs);
	free(want);
	rm_rf(out);
}

/* ---- wordcount --------------------------------------------------------- */

TestSuite(mr, .init = make_tmp, .fini = cleanup, .timeout = 120);

Test(mr, wordcount_zipf_matches_reference_1_and_4_shards_with_and_without_spill)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_mr_gen_words(path_in("in/a.txt"), 1 << 20, 7, 20000, err), 0, "%s", err);
	cr_assert_eq(keel_mr_gen_words(path_in("in/b.txt"), 512 << 10, 8, 5000, err), 0, "%s", err);
	const char *in = path_in("in");
	check_wordcount(in, 1, 16u << 20, 128 << 10, false);
	check_wordcount(in, 4, 16u << 20, 128 << 10, false);
	/* 64 KiB budget: a 20000-word vocabulary cannot fit, so runs spill. */
	check_wordcount(in, 1, 64 << 10, 128 << 10, true);
	check_wordcount(in, 4, 64 << 10, 150 << 10, true);
}

Test(mr, wordcount_empty_file_and_empty_dir)
{
	mkdir(path_in("in"), 0755);
	write_file(path_in("in/empty.txt"), "", 0);
	check_wordcount(path_in("in"), 3, 1 << 20, 1 << 20, false);
	mkdir(path_in("none"), 0755);
	check_wordcount(path_in("none"), 2, 1 << 20, 1 << 20, false);
}

Test(mr, wordcount_one_huge_line_across_many_splits)
{
	mkdir(path_in("in"), 0755);
	/* 1 MiB with no newline at all, and a second file whose huge line is
	 * followed by short ones: splits of 64 KiB all fall inside it. */
	size_t n = 1 << 20;
	char *b = malloc(n);
	for (size_t i = 0; i < n; i++)
		b[i] = i % 7 == 6 ? ' ' : (char)('a' + (i / 7) % 5);
	write_file(path_in("in/huge.txt"), b, n);
	memcpy(b + n - 19, "\nshort line\nlast\n\n\n", 19);
	write_file(path_in("in/huge2.txt"), b, n);
	free(b);
	check_wordcount(path_in("in"), 4, 1 << 20, 32 << 10, false);
	check_wordcount(path_in("in"), 1, 1 << 20, 32 << 10, false);
}

Test(mr, wordcount_many_tiny_files)
{
	mkdir(path_in("in"), 0755);
	for (int i = 0; i < 300; i++) {
		char name[64], body[64];
		snprintf(name, sizeof name, "in/f%03d.txt", i);
		int l = snprintf(body, sizeof body, "w%d common\tx%d%s", i % 17, i % 3, i % 2 ? "\n" : "");
		write_file(path_in(name), body, (size_t)l);
	}
	check_wordcount(path_in("in"), 4, 1 << 20, 1 << 20, false);
}

Test(mr, wordcount_skewed_keys_with_spill)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	/* Three words only: every shard's table holds the same hot keys. */
	cr_assert_eq(keel_mr_gen_words(path_in("in/skew.txt"), 1 << 20, 3, 3, err), 0, "%s", err);
	check_wordcount(path_in("in"), 4, 1 << 20, 128 << 10, false);
	/* Skew plus spills: many distinct cold words and a tiny budget. */
	cr_assert_eq(keel_mr_gen_words(path_in("in/cold.txt"), 512 << 10, 4, 50000, err), 0, "%s", err);
	check_wordcount(path_in("in"), 3, 64 << 10, 128 << 10, true);
}

/* ---- grep -------------------------------------------------------------- */

Test(mr, grep_matches_reference)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_mr_gen_words(path_in("in/a.txt"), 1 << 20, 11, 3000, err), 0, "%s", err);
	write_file(path_in("in/b.txt"), "xx zz\nnothing\nzzz end", 21);
	const char *pat = "zz";
	/* Reference: every line containing pat, as "path:line". */
	char **files;
	size_t nf = list_dir(path_in("in"), &files), o = 0, cap = 1 << 16;
	char *ref = malloc(cap);
	for (size_t f = 0; f < nf; f++) {
		size_t len;
		char *b = read_file(files[f], &len);
		for (char *p = b, *e; p < b + len; p = e + 1) {
			e = memchr(p, '\n', (size_t)(b + len - p));
			if (!e)
				e = b + len;
			*e = 0;
			if (strstr(p, pat)) {
				size_t need = strlen(files[f]) + strlen(p) + 3;
				while (o + need > cap)
					ref = realloc(ref, cap *= 2);
				o += (size_t)sprintf(ref + o, "%s:%s\n", files[f], p);
			}
		}
		free(b);
	}
	free_list(files, nf);
	char *want = sorted_lines(ref, o);
	for (uint32_t shards = 1; shards <= 3; shards += 2) {
		char out[512];
		snprintf(out, sizeof out, "%s/grep-%u", tmpbase, shards);
		cr_assert_eq(run_job("grep", pat, path_in("in"), out, shards, 0, 64 << 10, 100 << 10,
				     NULL, err), 0, "%s", err);
		size_t n;
		char *got = read_output(out, &n);
		char *gs = sorted_lines(got, n);
		cr_assert_str_eq(gs, want);
		free(got);
		free(gs);
	}
	free(want);
	free(ref);
	cr_assert_eq(run_job("grep", NULL, path_in("in"), path_in("g2"), 1, 0, 0, 0, NULL, err),
		     KEEL_EBADJOB);
	cr_assert(strstr(err, "needs a pattern"), "%s", err);
}

/* ---- inverted index --------------------------------------------------- */

Test(mr, index_matches_reference)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	for (int i = 0; i < 12; i++) {
		char name[64];
		snprintf(name, sizeof name, "in/doc%02d.txt", i);
		cr_assert_eq(keel_mr_gen_words(path_in(name), 20000 + 5000 * (size_t)i, (uint64_t)i, 400, err),
			     0, "%s", err);
	}
	/* Reference: for each word the sorted set of files it occurs in,
	 * by brute force over (word, file) pairs. */
	char **files;
	size_t nf = list_dir(path_in("in"), &files);
	size_t cap = 1024, n = 0;
	struct wc_ent *v = malloc(cap * sizeof *v);
	for (size_t f = 0; f < nf; f++) {
		size_t len;
		char *b = read_file(files[f], &len);
		for (size_t i = 0; i < len;) {
			while (i < len && is_sp(b[i]))
				i++;
			size_t s = i;
			while (i < len && !is_sp(b[i]))
				i++;
			if (i > s) {
				if (n == cap)
					v = realloc(v, (cap *= 2) * sizeof *v);
				v[n].w = strndup(b + s, i - s);
				v[n++].n = f;
			}
		}
		free(b);
	}
	qsort(v, n, sizeof *v, cmp_wc);
	size_t ocap = 1 << 20, o = 0;
	char *ref = malloc(ocap);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		bool in_file[64] = {0};
		while (j < n && !strcmp(v[j].w, v[i].w))
			in_file[v[j++].n] = true;
		while (o + strlen(v[i].w) + 64 * 600 > ocap)
			ref = realloc(ref, ocap *= 2);
		o += (size_t)sprintf(ref + o, "%s\t", v[i].w);
		bool first = true;
		for (size_t f = 0; f < nf; f++)
			if (in_file[f]) {
				o += (size_t)sprintf(ref + o, "%s%s", first ? "" : " ", files[f]);
				first = false;
			}
		ref[o++] = '\n';
		i = j;
	}
	for (size_t i = 0; i < n; i++)
		free(v[i].w);
	free(v);
	free_list(files, nf);
	char *want = sorted_lines(ref, o);
	free(ref);
	struct { uint32_t shards; uint64_t budget; bool spill; } cases[] = {
		{1, 64u << 20, false}, {4, 64u << 20, false}, {2, 64 << 10, true},
	};
	for (size_t c = 0; c < KEEL_ARRAY_LEN(cases); c++) {
		char out[512];
		snprintf(out, sizeof out, "%s/idx-%zu", tmpbase, c);
		struct keel_mr_stats st;
		cr_assert_eq(run_job("index", NULL, path_in("in"), out, cases[c].shards, 0, cases[c].budget,
				     16 << 10, &st, err), 0, "%s", err);
		cr_assert_eq(st.spills > 0, cases[c].spill);
		size_t len;
		char *got = read_output(out, &len);
		char *gs = sorted_lines(got, len);
		cr_assert_str_eq(gs, want, "index case %zu", c);
		free(got);
		free(gs);
	}
	free(want);
}

/* ---- sort -------------------------------------------------------------- */

static uint64_t rec_hash(const unsigned char *r)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < 100; i++)
		h = (h ^ r[i]) * 1099511628211ull;
	return h;
}

static void check_sort(const char *in, uint32_t shards, uint32_t parts, uint64_t budget, bool spill)
{
	static int seq;
	char out[512], err[KEEL_ERRMSG_LEN];
	snprintf(out, sizeof out, "%s/sort-out-%d", tmpbase, seq++);
	struct keel_mr_stats st;
	cr_assert_eq(run_job("sort", NULL, in, out, shards, parts, budget, 256 << 10, &st, err), 0, "%s",
		     err);
	cr_assert_eq(st.spills > 0, spill, "spills %lu", (unsigned long)st.spills);
	/* Input checksums: count, sum and xor of record hashes. */
	char **files;
	size_t nf = list_dir(in, &files);
	uint64_t icount = 0, isum = 0, ixor = 0;
	for (size_t f = 0; f < nf; f++) {
		size_t len;
		unsigned char *b = (unsigned char *)read_file(files[f], &len);
		for (size_t i = 0; i + 100 <= len; i += 100) {
			uint64_t h = rec_hash(b + i);
			icount++;
			isum += h;
			ixor ^= h;
		}
		free(b);
	}
	free_list(files, nf);
	size_t len;
	unsigned char *o = (unsigned char *)read_output(out, &len);
	cr_assert_eq(len % 100, 0);
	uint64_t ocount = 0, osum = 0, oxor = 0;
	for (size_t i = 0; i < len; i += 100) {
		if (i)
			cr_assert_leq(memcmp(o + i - 100, o + i, 10), 0, "not globally sorted at record %zu",
				      i / 100);
		uint64_t h = rec_hash(o + i);
		ocount++;
		osum += h;
		oxor ^= h;
	}
	cr_assert_eq(ocount, icount);
	cr_assert_eq(osum, isum, "output is not a permutation of the input");
	cr_assert_eq(oxor, ixor, "output is not a permutation of the input");
	free(o);
	rm_rf(out);
}

Test(mr, sort_globally_ordered_permutation)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_mr_gen_sort(path_in("in/a.dat"), 12000, 1, 0, err), 0, "%s", err);
	cr_assert_eq(keel_mr_gen_sort(path_in("in/b.dat"), 4321, 2, 0, err), 0, "%s", err);
	write_file(path_in("in/empty.dat"), "", 0);
	check_sort(path_in("in"), 1, 1, 64u << 20, false);
	check_sort(path_in("in"), 4, 7, 64u << 20, false);
	check_sort(path_in("in"), 3, 5, 256 << 10, true);
}

Test(mr, sort_heavily_skewed_keys)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	/* Five distinct keys over 40000 records: one partition gets most. */
	cr_assert_eq(keel_mr_gen_sort(path_in("in/skew.dat"), 15000, 5, 5, err), 0, "%s", err);
	check_sort(path_in("in"), 4, 4, 64u << 20, false);
	check_sort(path_in("in"), 2, 4, 128 << 10, true);
}

/* ---- user jobs and bad input ----------------------------------------- */

static bool exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

/* Nothing named like the output, nor any temporary, is left behind. */
static void assert_no_output(const char *out)
{
	cr_assert(!exists(out), "%s exists after a failed job", out);
	char **files;
	size_t n = list_dir(tmpbase, &files);
	for (size_t i = 0; i < n; i++)
		cr_assert(!strstr(files[i], ".keel-tmp"), "temporary %s left behind", files[i]);
	free_list(files, n);
}

Test(mr, user_job_from_shared_object)
{
	mkdir(path_in("in"), 0755);
	write_file(path_in("in/t.txt"), "a bb ccc bb\ndddd a\n", 19);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(run_job(KEEL_TEST_EXAMPLE_JOB, NULL, path_in("in"), path_in("out"), 2, 3, 0, 0,
			     NULL, err), 0, "%s", err);
	size_t n;
	char *got = read_output(path_in("out"), &n);
	char *gs = sorted_lines(got, n);
	cr_assert_str_eq(gs, "0001\t2\n0002\t2\n0003\t1\n0004\t1\n");
	free(got);
	free(gs);
}

Test(mr, job_object_without_symbol_fails_clearly)
{
	char err[KEEL_ERRMSG_LEN];
	struct keel_mr_jobref job;
	cr_assert_eq(keel_mr_job_open(&job, KEEL_TEST_NOSYM_JOB, NULL, err), KEEL_EBADJOB);
	cr_assert(strstr(err, "no symbol 'keel_mr_job'"), "%s", err);
	cr_assert_eq(keel_mr_job_open(&job, "/nonexistent/libjob.so", NULL, err), KEEL_EBADJOB);
	cr_assert(strstr(err, "cannot load"), "%s", err);
	cr_assert_eq(keel_mr_job_open(&job, "nosuchjob", NULL, err), KEEL_ENOTFOUND);
	cr_assert(strstr(err, "no built-in job 'nosuchjob'"), "%s", err);
}

Test(mr, wrong_record_size_fails_and_leaves_no_output)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_mr_gen_sort(path_in("in/a.dat"), 100, 1, 0, err), 0, "%s", err);
	write_file(path_in("in/bad.dat"), "0123456789", 10);
	int rc = run_job("sort", NULL, path_in("in"), path_in("out"), 2, 0, 0, 0, NULL, err);
	cr_assert_eq(rc, KEEL_EBADINPUT, "%s", err);
	cr_assert(strstr(err, "bad.dat") && strstr(err, "100-byte records"), "%s", err);
	assert_no_output(path_in("out"));
}

Test(mr, unreadable_input_fails_and_leaves_no_output)
{
	mkdir(path_in("in"), 0755);
	write_file(path_in("in/ok.txt"), "a b\n", 4);
	cr_assert_eq(symlink(path_in("missing-target"), path_in("in/dangling.txt")), 0);
	char err[KEEL_ERRMSG_LEN];
	int rc = run_job("wordcount", NULL, path_in("in"), path_in("out"), 2, 0, 0, 0, NULL, err);
	cr_assert_eq(rc, -ENOENT, "%s", err);
	cr_assert(strstr(err, "dangling.txt"), "%s", err);
	assert_no_output(path_in("out"));
	rc = run_job("wordcount", NULL, path_in("nope"), path_in("out"), 2, 0, 0, 0, NULL, err);
	cr_assert_eq(rc, -ENOENT, "%s", err);
	cr_assert(strstr(err, "nope"), "%s", err);
	assert_no_output(path_in("out"));
}

Test(mr, existing_output_is_refused_and_kept)
{
	mkdir(path_in("in"), 0755);
	write_file(path_in("in/ok.txt"), "a b\n", 4);
	mkdir(path_in("out"), 0755);
	write_file(path_in("out/keep"), "x", 1);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(run_job("wordcount", NULL, path_in("in"), path_in("out"), 1, 0, 0, 0, NULL, err),
		     -EEXIST);
	cr_assert(exists(path_in("out/keep")));
}

/* A map that fails mid-job (a key over the limit) leaves nothing behind. */
static void bad_map(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit)
{
	(void)state;
	static char big[KEEL_MR_MAX_KEY + 1];
	if (rec->offset > 5000)
		keel_mr_emit(emit, big, sizeof big, "", 0);
	else
		keel_mr_emit(emit, rec->data, rec->len, "", 0);
}

static void nop_reduce(void *s, const void *k, size_t kl, struct keel_mr_values *v,
		       struct keel_mr_out *o)
{
	(void)s;
	(void)v;
	keel_mr_out_write(o, k, kl);
}

Test(mr, failing_map_midway_leaves_no_output)
{
	mkdir(path_in("in"), 0755);
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_mr_gen_words(path_in("in/a.txt"), 1 << 20, 1, 100, err), 0, "%s", err);
	static const struct keel_mr_job bad = {
		.abi = KEEL_MR_ABI, .name = "bad", .format = KEEL_MR_LINES,
		.map = bad_map, .reduce = nop_reduce,
	};
	struct keel_mr_jobref ref = {.job = &bad};
	const char *inputs[] = {path_in("in")};
	struct keel_mr_config cfg = {.job = &ref, .inputs = inputs, .n_inputs = 1,
				     .output = path_in("out"), .shards = 3, .split_size = 64 << 10,
				     .mem_budget = 1 << 16};
	struct keel_mr_stats st;
	cr_assert_eq(keel_mr_run(&cfg, &st, err), KEEL_EBADJOB);
	cr_assert(strstr(err, "key over"), "%s", err);
	assert_no_output(path_in("out"));
}
