/*
 * compute/mr_gen.c — deterministic inputs for tests, the benchmark and the
 * demo: Zipf-distributed words and gensort-style 100-byte records.
 *
 * Zipf sampling is exact: a uniform draw finds its rank by binary search in
 * the cumulative distribution, started from a 64K-entry table of bucket
 * bounds so most searches touch a handful of entries.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "compute/mr_internal.h"

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

struct gen_out {
	int fd;
	uint8_t *buf;
	size_t len;
	int err;
	char tmp[4200];
};

static int gout_open(struct gen_out *g, const char *path, char *errmsg)
{
	memset(g, 0, sizeof *g);
	snprintf(g->tmp, sizeof g->tmp, "%s.tmp.%d", path, (int)getpid());
	g->buf = malloc(1 << 20);
	if (!g->buf)
		return keel_errmsg_set(errmsg, -ENOMEM, "gen");
	g->fd = open(g->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (g->fd < 0) {
		free(g->buf);
		return keel_errmsg_set(errmsg, -errno, "gen: %s", g->tmp);
	}
	return 0;
}

static void gout_flush(struct gen_out *g)
{
	size_t off = 0;
	while (off < g->len && !g->err) {
		ssize_t w = write(g->fd, g->buf + off, g->len - off);
		if (w < 0 && errno != EINTR)
			g->err = -errno;
		else if (w > 0)
			off += (size_t)w;
	}
	g->len = 0;
}

static inline void gout_put(struct gen_out *g, const void *p, size_t n)
{
	if (g->len + n > (1 << 20))
		gout_flush(g);
	memcpy(g->buf + g->len, p, n);
	g->len += n;
}

static int gout_close(struct gen_out *g, const char *path, char *errmsg)
{
	gout_flush(g);
	int rc = g->err;
	if (close(g->fd) < 0 && !rc)
		rc = -errno;
	free(g->buf);
	if (!rc && rename(g->tmp, path) < 0)
		rc = -errno;
	if (rc) {
		unlink(g->tmp);
		return keel_errmsg_set(errmsg, rc, "gen: %s", path);
	}
	return 0;
}

int keel_mr_gen_words(const char *path, uint64_t bytes, uint64_t seed, uint32_t vocab, char *errmsg)
{
	if (vocab == 0)
		vocab = 1;
	uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
	/* Vocabulary: distinct-ish lowercase words of 2..12 letters. */
	char (*words)[16] = malloc((size_t)vocab * 16);
	uint8_t *wl = malloc(vocab);
	double *cdf = malloc((size_t)vocab * sizeof *cdf);
	enum { TB = 1 << 16 };
	uint32_t *tab = malloc((TB + 1) * sizeof *tab);
	if (!words || !wl || !cdf || !tab) {
		free(words);
		free(wl);
		free(cdf);
		free(tab);
		return keel_errmsg_set(errmsg, -ENOMEM, "gen: vocabulary");
	}
	for (uint32_t i = 0; i < vocab; i++) {
		uint64_t r = splitmix(&s);
		int n = 2 + (int)(r % 11);
		for (int k = 0; k < n; k++) {
			r = k % 8 == 7 ? splitmix(&s) : r;
			words[i][k] = (char)('a' + (r >> (8 * (k % 8))) % 26);
		}
		/* Rank in base 26 as a suffix keeps words distinct. */
		uint32_t x = i;
		int k = n;
		do {
			words[i][k++] = (char)('a' + x % 26);
			x /= 26;
		} while (x && k < 15);
		wl[i] = (uint8_t)k;
	}
	double sum = 0;
	for (uint32_t i = 0; i < vocab; i++)
		cdf[i] = (sum += 1.0 / (double)(i + 1));
	for (uint32_t i = 0; i < vocab; i++)
		cdf[i] /= sum;
	for (uint32_t b = 0, r = 0; b <= TB; b++) {
		double u = (double)b / TB;
		while (r < vocab - 1 && cdf[r] < u)
			r++;
		tab[b] = r;
	}
	struct gen_out g;
	int rc = gout_open(&g, path, errmsg);
	if (rc)
		goto out;
	uint64_t written = 0;
	int col = 0;
	while (written < bytes) {
		double u = (double)(splitmix(&s) >> 11) * (1.0 / 9007199254740992.0);
		uint32_t b = (uint32_t)(u * TB);
		uint32_t lo = tab[b], hi = tab[b + 1 <= TB ? b + 1 : TB];
		while (lo < hi) { /* first rank with cdf >= u */
			uint32_t mid = (lo + hi) / 2;
			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		gout_put(&g, words[lo], wl[lo]);
		col += wl[lo] + 1;
		char sep = ' ';
		if (col > 72 || written + wl[lo] + 1 >= bytes) {
			sep = '\n';
			col = 0;
		}
		gout_put(&g, &sep, 1);
		written += wl[lo] + 1u;
	}
	rc = gout_close(&g, path, errmsg);
out:
	free(words);
	free(wl);
	free(cdf);
	free(tab);
	return rc;
}

int keel_mr_gen_sort(const char *path, uint64_t records, uint64_t seed, uint32_t distinct_keys,
		     char *errmsg)
{
	uint64_t s = seed * 0x2545F4914F6CDD1Dull + 7;
	struct gen_out g;
	int rc = gout_open(&g, path, errmsg);
	if (rc)
		return rc;
	static const char hex[] = "0123456789ABCDEF";
	for (uint64_t i = 0; i < records; i++) {
		char r[100];
		uint64_t ks = distinct_keys ? splitmix(&s) % distinct_keys * 0x9E3779B97F4A7C15ull + seed
					    : splitmix(&s);
		uint64_t k2 = distinct_keys ? ks * 31 : splitmix(&s);
		for (int k = 0; k < 10; k++) {
			uint64_t v = k < 8 ? ks >> (8 * k) : k2 >> (8 * (k - 8));
			r[k] = (char)(33 + (v & 0xff) % 94); /* printable, no space */
		}
		r[10] = r[11] = ' ';
		for (int k = 0; k < 32; k++)
			r[12 + k] = k < 16 ? '0' : hex[(i >> (4 * (31 - k))) & 15];
		r[44] = r[45] = ' ';
		uint64_t f = splitmix(&s);
		for (int k = 0; k < 52; k++)
			r[46 + k] = (char)('A' + (f >> (k % 60)) % 26);
		r[98] = '\r';
		r[99] = '\n';
		gout_put(&g, r, sizeof r);
	}
	return gout_close(&g, path, errmsg);
}
