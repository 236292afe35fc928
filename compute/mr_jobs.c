/*
 * compute/mr_jobs.c — the built-in jobs (wordcount, grep, index, sort) and
 * opening a job by name or from a shared object.
 *
 * Words are maximal runs of bytes other than ' ', '\t', '\n', '\v', '\f',
 * '\r' — the same definition `wc -w` uses in the C locale, so the benchmark
 * and tests can check counts against it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compute/mr_internal.h"

uint64_t keel_mr_hash(const void *key, size_t len)
{
	return mr_hash(key, len);
}

uint32_t keel_mr_partition_default(const void *key, size_t klen, uint32_t partitions)
{
	return mr_part_of(mr_hash(key, klen), partitions);
}

static const uint8_t is_space[256] = {
	[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\v'] = 1, ['\f'] = 1, ['\r'] = 1,
};

/* Calls fn for every word of rec; stops at the first error. */
#define FOR_EACH_WORD(rec, w, wl, body)                                       \
	do {                                                                  \
		const uint8_t *p_ = (rec)->data, *e_ = p_ + (rec)->len;       \
		while (p_ < e_) {                                             \
			while (p_ < e_ && is_space[*p_])                      \
				p_++;                                         \
			const uint8_t *s_ = p_;                               \
			while (p_ < e_ && !is_space[*p_])                     \
				p_++;                                         \
			if (p_ > s_) {                                        \
				const uint8_t *w = s_;                        \
				size_t wl = (size_t)(p_ - s_);                \
				body;                                         \
			}                                                     \
		}                                                             \
	} while (0)

/* ---- wordcount -------------------------------------------------------- */

static void wc_map(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit)
{
	(void)state;
	static const uint64_t one = 1;
	FOR_EACH_WORD(rec, w, wl, keel_mr_emit(emit, w, wl, &one, sizeof one));
}

static void sum_combine(void *state, void *acc, const void *val, size_t vsize)
{
	(void)state;
	(void)vsize;
	uint64_t a, b;
	memcpy(&a, acc, 8);
	memcpy(&b, val, 8);
	a += b;
	memcpy(acc, &a, 8);
}

static void wc_reduce(void *state, const void *key, size_t klen, struct keel_mr_values *vals,
		      struct keel_mr_out *out)
{
	(void)state;
	uint64_t sum = 0, v;
	const void *p;
	size_t n;
	while (keel_mr_values_next(vals, &p, &n)) {
		if (n == 8) {
			memcpy(&v, p, 8);
			sum += v;
		}
	}
	keel_mr_out_kv_u64(out, key, klen, sum);
}

static const struct keel_mr_job job_wordcount = {
	.abi = KEEL_MR_ABI,
	.name = "wordcount",
	.format = KEEL_MR_LINES,
	.value_size = 8,
	.map = wc_map,
	.combine = sum_combine,
	.reduce = wc_reduce,
};

/* ---- grep: lines containing a fixed string ---------------------------- */
/* Key: file path, NUL, 8-byte big-endian offset (so a partition's output is
 * in file and offset order); value: the line. Output "path:line". */

struct grep_state {
	size_t plen;
	char pat[];
};

static void *grep_create(const char *arg, char *errmsg)
{
	if (!arg || !*arg) {
		keel_errmsg_set(errmsg, KEEL_EBADJOB, "grep: needs a pattern (--arg TEXT)");
		return NULL;
	}
	size_t n = strlen(arg);
	struct grep_state *g = malloc(sizeof *g + n + 1);
	if (!g) {
		keel_errmsg_set(errmsg, -ENOMEM, "grep");
		return NULL;
	}
	g->plen = n;
	memcpy(g->pat, arg, n + 1);
	return g;
}

static void grep_map(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit)
{
	const struct grep_state *g = state;
	if (!memmem(rec->data, rec->len, g->pat, g->plen))
		return;
	size_t fl = strlen(rec->file);
	uint8_t key[4096 + 9];
	if (fl > 4096)
		fl = 4096;
	memcpy(key, rec->file, fl);
	key[fl] = 0;
	for (int i = 0; i < 8; i++)
		key[fl + 1 + i] = (uint8_t)(rec->offset >> (56 - 8 * i));
	keel_mr_emit(emit, key, fl + 9, rec->data, rec->len);
}

static void grep_reduce(void *state, const void *key, size_t klen, struct keel_mr_values *vals,
			struct keel_mr_out *out)
{
	(void)state;
	const void *p;
	size_t n;
	size_t fl = strnlen(key, klen);
	while (keel_mr_values_next(vals, &p, &n)) {
		keel_mr_out_write(out, key, fl);
		keel_mr_out_write(out, ":", 1);
		keel_mr_out_write(out, p, n);
		keel_mr_out_write(out, "\n", 1);
	}
}

static const struct keel_mr_job job_grep = {
	.abi = KEEL_MR_ABI,
	.name = "grep",
	.format = KEEL_MR_LINES,
	.create = grep_create,
	.destroy = free,
	.map = grep_map,
	.reduce = grep_reduce,
};

/* ---- inverted index: word -> sorted distinct files -------------------- */

static void index_map(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit)
{
	(void)state;
	size_t fl = strlen(rec->file);
	FOR_EACH_WORD(rec, w, wl, keel_mr_emit(emit, w, wl, rec->file, fl));
}

struct strv {
	const char **p;
	size_t *len;
	size_t n, cap;
	char *pool;
	size_t pool_len, pool_cap;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void index_reduce(void *state, const void *key, size_t klen, struct keel_mr_values *vals,
			 struct keel_mr_out *out)
{
	(void)state;
	/* Copy the file names (values are only valid until the next call). */
	size_t n = 0, cap = 16, plen = 0, pcap = 1024;
	size_t *offs = malloc(cap * sizeof *offs);
	char *pool = malloc(pcap);
	const void *p;
	size_t vl;
	if (!offs || !pool)
		goto oom;
	while (keel_mr_values_next(vals, &p, &vl)) {
		if (n == cap) {
			size_t *o2 = realloc(offs, 2 * cap * sizeof *offs);
			if (!o2)
				goto oom;
			offs = o2;
			cap *= 2;
		}
		while (plen + vl + 1 > pcap) {
			char *p2 = realloc(pool, 2 * pcap);
			if (!p2)
				goto oom;
			pool = p2;
			pcap *= 2;
		}
		offs[n++] = plen;
		memcpy(pool + plen, p, vl);
		pool[plen + vl] = 0;
		plen += vl + 1;
	}
	const char **names = malloc((n ? n : 1) * sizeof *names);
	if (!names)
		goto oom;
	for (size_t i = 0; i < n; i++)
		names[i] = pool + offs[i];
	qsort(names, n, sizeof *names, cmp_str);
	keel_mr_out_write(out, key, klen);
	keel_mr_out_write(out, "\t", 1);
	for (size_t i = 0; i < n; i++) {
		if (i && !strcmp(names[i], names[i - 1]))
			continue;
		if (i)
			keel_mr_out_write(out, " ", 1);
		keel_mr_out_write(out, names[i], strlen(names[i]));
	}
	keel_mr_out_write(out, "\n", 1);
	free(names);
	free(offs);
	free(pool);
	return;
oom:
	free(offs);
	free(pool);
	out->err = out->err ? out->err : -ENOMEM;
}

static const struct keel_mr_job job_index = {
	.abi = KEEL_MR_ABI,
	.name = "index",
	.format = KEEL_MR_LINES,
	.map = index_map,
	.reduce = index_reduce,
};

/* ---- sort: 100-byte records, 10-byte keys, sampled range partitioner -- */

#define SORT_REC 100
#define SORT_KEY 10

struct sort_state {
	uint32_t parts;
	uint8_t (*split)[SORT_KEY]; /* parts - 1 split points */
};

static void *sort_create(const char *arg, char *errmsg)
{
	(void)arg;
	struct sort_state *s = calloc(1, sizeof *s);
	if (!s)
		keel_errmsg_set(errmsg, -ENOMEM, "sort");
	return s;
}

static void sort_destroy(void *state)
{
	struct sort_state *s = state;
	if (s)
		free(s->split);
	free(s);
}

static int cmp_key10(const void *a, const void *b)
{
	return memcmp(a, b, SORT_KEY);
}

/* Split points at evenly spaced quantiles of the sorted sample: partition i
 * holds keys in [split[i-1], split[i]). */
static int sort_setup(void *state, const struct keel_mr_record *samples, size_t n, uint32_t parts,
		      char *errmsg)
{
	struct sort_state *s = state;
	s->parts = parts;
	free(s->split);
	s->split = NULL;
	if (parts <= 1)
		return 0;
	s->split = calloc(parts - 1, SORT_KEY);
	uint8_t (*keys)[SORT_KEY] = malloc((n ? n : 1) * SORT_KEY);
	if (!s->split || !keys) {
		free(keys);
		return keel_errmsg_set(errmsg, -ENOMEM, "sort: split points");
	}
	for (size_t i = 0; i < n; i++)
		memcpy(keys[i], samples[i].data, SORT_KEY);
	qsort(keys, n, SORT_KEY, cmp_key10);
	for (uint32_t i = 1; i < parts; i++) {
		if (n)
			memcpy(s->split[i - 1], keys[(size_t)i * n / parts], SORT_KEY);
		else
			memset(s->split[i - 1], 0xff, SORT_KEY);
	}
	free(keys);
	return 0;
}

static uint32_t sort_partition(void *state, const void *key, size_t klen, uint32_t parts)
{
	const struct sort_state *s = state;
	(void)klen;
	if (!s->split || s->parts != parts)
		return 0;
	/* First split point greater than the key. */
	uint32_t lo = 0, hi = parts - 1;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (memcmp(key, s->split[mid], SORT_KEY) < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void sort_map(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit)
{
	(void)state;
	const uint8_t *r = rec->data;
	keel_mr_emit(emit, r, SORT_KEY, r + SORT_KEY, SORT_REC - SORT_KEY);
}

static void sort_reduce(void *state, const void *key, size_t klen, struct keel_mr_values *vals,
			struct keel_mr_out *out)
{
	(void)state;
	const void *p;
	size_t n;
	while (keel_mr_values_next(vals, &p, &n)) {
		keel_mr_out_write(out, key, klen);
		keel_mr_out_write(out, p, n);
	}
}

static const struct keel_mr_job job_sort = {
	.abi = KEEL_MR_ABI,
	.name = "sort",
	.format = KEEL_MR_FIXED,
	.record_size = SORT_REC,
	.sample = 20000,
	.create = sort_create,
	.destroy = sort_destroy,
	.setup = sort_setup,
	.map = sort_map,
	.reduce = sort_reduce,
	.partition = sort_partition,
};

const struct keel_mr_job *const keel_mr_builtin_jobs[] = {
	&job_wordcount, &job_grep, &job_index, &job_sort, NULL,
};

const struct keel_mr_job *keel_mr_builtin_find(const char *name)
{
	for (size_t i = 0; keel_mr_builtin_jobs[i]; i++)
		if (!strcmp(keel_mr_builtin_jobs[i]->name, name))
			return keel_mr_builtin_jobs[i];
	return NULL;
}

/* ---- opening jobs ----------------------------------------------------- */

int keel_mr_job_validate(const struct keel_mr_job *job, char *errmsg)
{
	const char *n = job->name ? job->name : "(unnamed)";
	if (job->abi != KEEL_MR_ABI)
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "job %s: abi %u, this keel speaks %u",
				       n, job->abi, KEEL_MR_ABI);
	if (!job->map || !job->reduce)
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "job %s: map and reduce are required", n);
	if (job->format != KEEL_MR_LINES && job->format != KEEL_MR_FIXED)
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "job %s: unknown input format %d", n,
				       (int)job->format);
	if (job->format == KEEL_MR_FIXED && (job->record_size == 0 || job->record_size > (1u << 24)))
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "job %s: fixed records need a record_size in 1..16M",
				       n);
	if (job->combine && (job->value_size == 0 || job->value_size > 4096))
		return keel_errmsg_set(errmsg, KEEL_EBADJOB, "job %s: combine needs a value_size in 1..4096",
				       n);
	return 0;
}

static bool is_path(const char *spec)
{
	size_t n = strlen(spec);
	return strchr(spec, '/') || (n > 3 && !strcmp(spec + n - 3, ".so"));
}

int keel_mr_job_open(struct keel_mr_jobref *ref, const char *spec, const char *arg, char *errmsg)
{
	memset(ref, 0, sizeof *ref);
	snprintf(ref->spec, sizeof ref->spec, "%s", spec);
	snprintf(ref->arg, sizeof ref->arg, "%s", arg ? arg : "");
	const struct keel_mr_job *job;
	if (is_path(spec)) {
		dlerror();
		void *dl = dlopen(spec, RTLD_NOW | RTLD_LOCAL);
		if (!dl) {
			const char *why = dlerror();
			return keel_errmsg_set(errmsg, KEEL_EBADJOB, "job %s: cannot load: %s", spec,
					       why ? why : "dlopen failed");
		}
		job = dlsym(dl, KEEL_MR_JOB_SYMBOL);
		if (!job) {
			dlclose(dl);
			return keel_errmsg_set(errmsg, KEEL_EBADJOB,
					       "job %s: no symbol '%s' (a job object exports "
					       "`const struct keel_mr_job %s`, see examples/)",
					       spec, KEEL_MR_JOB_SYMBOL, KEEL_MR_JOB_SYMBOL);
		}
		ref->dl = dl;
	} else {
		job = keel_mr_builtin_find(spec);
		if (!job)
			return keel_errmsg_set(errmsg, KEEL_ENOTFOUND,
					       "no built-in job '%s' (wordcount, grep, index, sort; "
					       "or a path to a job .so)", spec);
	}
	int rc = keel_mr_job_validate(job, errmsg);
	if (rc)
		goto fail;
	ref->job = job;
	if (job->create) {
		char em[KEEL_ERRMSG_LEN] = "";
		ref->state = job->create(arg, em);
		if (!ref->state) {
			rc = KEEL_EBADJOB;
			if (errmsg)
				snprintf(errmsg, KEEL_ERRMSG_LEN, "job %s: %s", spec,
					 em[0] ? em : "create failed");
			goto fail;
		}
	}
	return 0;
fail:
	if (ref->dl)
		dlclose(ref->dl);
	memset(ref, 0, sizeof *ref);
	return rc;
}

void keel_mr_job_close(struct keel_mr_jobref *ref)
{
	if (ref->job && ref->job->destroy && ref->state)
		ref->job->destroy(ref->state);
	if (ref->dl)
		dlclose(ref->dl);
	memset(ref, 0, sizeof *ref);
}
