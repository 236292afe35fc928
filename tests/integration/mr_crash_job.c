/*
 * A map-reduce job that crashes, for tests/integration/mr_crash.sh (issue
 * 18): the user code a supervisor must survive. --arg picks how:
 *
 *   map-always      map dereferences NULL on every record with "boom" in it
 *   reduce-always   reduce dereferences NULL on the key "boom"
 *   map-once:PATH   the first attempt crashes in map (it creates PATH
 *                   first); later attempts, seeing PATH, count words
 *   slow:MS         map sleeps MS ms per record (a job to interrupt)
 *
 * Otherwise it counts words like wordcount.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <keel/mr.h>

struct cj {
	int mode; /* 0 count, 1 map-always, 2 reduce-always, 3 map-once, 4 slow */
	char path[256];
	long ms;
};

static void *cj_create(const char *arg, char *errmsg)
{
	(void)errmsg;
	struct cj *c = calloc(1, sizeof *c);
	if (!c || !arg)
		return c;
	if (!strcmp(arg, "map-always"))
		c->mode = 1;
	else if (!strcmp(arg, "reduce-always"))
		c->mode = 2;
	else if (!strncmp(arg, "map-once:", 9)) {
		c->mode = access(arg + 9, F_OK) == 0 ? 0 : 3;
		strncpy(c->path, arg + 9, sizeof c->path - 1);
	} else if (!strncmp(arg, "slow:", 5)) {
		c->mode = 4;
		c->ms = atol(arg + 5);
	}
	return c;
}

static void cj_destroy(void *state)
{
	free(state);
}

static void crash(void)
{
	volatile int *volatile p = NULL;
	*p = 1; /* SIGSEGV, on purpose */
}

static void cj_map(void *state, const struct keel_mr_record *rec, struct keel_mr_emit *emit)
{
	struct cj *c = state;
	static const unsigned long long one = 1;
	const char *p = rec->data, *e = p + rec->len;
	if (c->mode == 4) {
		struct timespec ts = {c->ms / 1000, (c->ms % 1000) * 1000000};
		nanosleep(&ts, NULL);
	}
	while (p < e) {
		while (p < e && *p == ' ')
			p++;
		const char *s = p;
		while (p < e && *p != ' ')
			p++;
		if (p == s)
			continue;
		if ((c->mode == 1 || c->mode == 3) && p - s == 4 && !memcmp(s, "boom", 4)) {
			if (c->mode == 3) {
				int fd = open(c->path, O_WRONLY | O_CREAT, 0644);
				if (fd >= 0)
					close(fd);
			}
			crash();
		}
		keel_mr_emit(emit, s, (size_t)(p - s), &one, sizeof one);
	}
}

static void cj_combine(void *state, void *acc, const void *val, size_t vsize)
{
	(void)state;
	(void)vsize;
	unsigned long long a, b;
	memcpy(&a, acc, 8);
	memcpy(&b, val, 8);
	a += b;
	memcpy(acc, &a, 8);
}

static void cj_reduce(void *state, const void *key, size_t klen, struct keel_mr_values *vals,
		      struct keel_mr_out *out)
{
	struct cj *c = state;
	if (c->mode == 2 && klen == 4 && !memcmp(key, "boom", 4))
		crash();
	unsigned long long sum = 0, v;
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
	.name = "crashy",
	.format = KEEL_MR_LINES,
	.value_size = 8,
	.create = cj_create,
	.destroy = cj_destroy,
	.map = cj_map,
	.combine = cj_combine,
	.reduce = cj_reduce,
};
