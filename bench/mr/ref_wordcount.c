/*
 * bench/mr/ref_wordcount.c — the single-threaded reference the map-reduce
 * wordcount is compared with: read the file in 4 MiB chunks, split words
 * (same definition as `wc -w` and the engine: runs of non-space bytes), count
 * them in one open-addressing hash table (linear probing, grown at half
 * full, words copied into an arena). No map-reduce machinery: this is what a
 * careful C programmer writes for one core.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/mr/ref_wordcount.h"

struct slot {
	uint64_t hash;
	uint64_t count;
	uint32_t off, len;
};

struct table {
	struct slot *s;
	size_t n, used;
	char *arena;
	size_t alen, acap;
};

static inline uint64_t hash_word(const uint8_t *p, size_t len)
{
	uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)len * 0xff51afd7ed558ccdull);
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 29;
		p += 8;
		len -= 8;
	}
	uint64_t t = 0;
	if (len)
		memcpy(&t, p, len);
	h = (h ^ t) * 0x94d049bb133111ebull;
	return h ^ (h >> 31);
}

static int grow(struct table *t)
{
	size_t n = t->n * 2;
	struct slot *s = calloc(n, sizeof *s);
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++) {
		if (!t->s[i].count)
			continue;
		size_t j = t->s[i].hash & (n - 1);
		while (s[j].count)
			j = (j + 1) & (n - 1);
		s[j] = t->s[i];
	}
	free(t->s);
	t->s = s;
	t->n = n;
	return 0;
}

static inline int add(struct table *t, const uint8_t *w, size_t len)
{
	uint64_t h = hash_word(w, len);
	size_t i = h & (t->n - 1);
	while (t->s[i].count) {
		struct slot *s = &t->s[i];
		if (s->hash == h && s->len == len && !memcmp(t->arena + s->off, w, len)) {
			s->count++;
			return 0;
		}
		i = (i + 1) & (t->n - 1);
	}
	if (t->alen + len > t->acap) {
		size_t nc = t->acap * 2 + len;
		char *a = realloc(t->arena, nc);
		if (!a)
			return -ENOMEM;
		t->arena = a;
		t->acap = nc;
	}
	memcpy(t->arena + t->alen, w, len);
	t->s[i] = (struct slot){h, 1, (uint32_t)t->alen, (uint32_t)len};
	t->alen += len;
	if (++t->used * 2 > t->n)
		return grow(t);
	return 0;
}

static const uint8_t space[256] = {
	[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\v'] = 1, ['\f'] = 1, ['\r'] = 1,
};

int ref_wordcount(const char *path, struct ref_wc_result *res)
{
	memset(res, 0, sizeof *res);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct table t = {.n = 1 << 16};
	t.s = calloc(t.n, sizeof *t.s);
	t.acap = 1 << 20;
	t.arena = malloc(t.acap);
	size_t cap = 4 << 20, carry = 0;
	uint8_t *buf = malloc(cap + 4096);
	int rc = 0;
	if (!t.s || !t.arena || !buf) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t got = read(fd, buf + carry, cap - carry);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		size_t len = carry + (size_t)got;
		bool eof = got == 0;
		size_t i = 0, last = 0;
		while (i < len) {
			while (i < len && space[buf[i]])
				i++;
			size_t s = i;
			while (i < len && !space[buf[i]])
				i++;
			if (i == len && !eof) {
				last = s; /* a word may continue in the next chunk */
				break;
			}
			if (i > s) {
				if ((rc = add(&t, buf + s, i - s)))
					goto out;
				res->words++;
			}
			last = i;
		}
		if (eof)
			break;
		carry = len - last;
		if (carry == cap) { /* one word fills the buffer: grow it */
			uint8_t *b = realloc(buf, cap * 2 + 4096);
			if (!b) {
				rc = -ENOMEM;
				break;
			}
			buf = b;
			cap *= 2;
		} else {
			memmove(buf, buf + last, carry);
		}
	}
	res->distinct = t.used;
	for (size_t i = 0; i < t.n; i++)
		if (t.s[i].count > res->top_count)
			res->top_count = t.s[i].count;
out:
	close(fd);
	free(t.s);
	free(t.arena);
	free(buf);
	return rc;
}
