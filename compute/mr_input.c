/*
 * compute/mr_input.c — listing the input, cutting it into splits on record
 * boundaries, reading a split's records, and sampling.
 *
 * A line belongs to the split that holds its first byte: a split that does
 * not start at 0 begins after the first '\n' at or after start-1, and a
 * split reads past its end to finish its last line. So every line is read
 * exactly once however the byte ranges fall, even a line longer than a
 * split. Fixed records never straddle a split: split sizes are whole
 * records, and a file whose size is not a whole number of records is
 * refused before any task runs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compute/mr_internal.h"

static int add_file(struct mr_plan *p, size_t *cap, const char *path, uint64_t size, char *errmsg)
{
	if (p->n_files == *cap) {
		size_t nc = *cap ? 2 * *cap : 64;
		struct mr_file *f = realloc(p->files, nc * sizeof *f);
		if (!f)
			return keel_errmsg_set(errmsg, -ENOMEM, "mr: input list");
		p->files = f;
		*cap = nc;
	}
	char *dup = strdup(path);
	if (!dup)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: input list");
	p->files[p->n_files++] = (struct mr_file){.path = dup, .size = size};
	return 0;
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct mr_file *)a)->path, ((const struct mr_file *)b)->path);
}

void mr_plan_free(struct mr_plan *p)
{
	for (size_t i = 0; i < p->n_files; i++)
		free(p->files[i].path);
	free(p->files);
	free(p->splits);
	memset(p, 0, sizeof *p);
}

static int check_readable(const char *path, char *errmsg)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return keel_errmsg_set(errmsg, -errno, "mr: input %s", path);
	close(fd);
	return 0;
}

int mr_plan_build(struct mr_plan *p, const char *const *inputs, size_t n_inputs,
		  const struct keel_mr_job *job, uint64_t split_size, char *errmsg)
{
	memset(p, 0, sizeof *p);
	size_t cap = 0;
	int rc = 0;
	if (n_inputs == 0)
		return keel_errmsg_set(errmsg, KEEL_EBADINPUT, "mr: no input given");
	for (size_t i = 0; i < n_inputs; i++) {
		struct stat st;
		if (stat(inputs[i], &st) < 0) {
			rc = keel_errmsg_set(errmsg, -errno, "mr: input %s", inputs[i]);
			goto fail;
		}
		if (S_ISREG(st.st_mode)) {
			if ((rc = add_file(p, &cap, inputs[i], (uint64_t)st.st_size, errmsg)))
				goto fail;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			rc = keel_errmsg_set(errmsg, KEEL_EBADINPUT, "mr: input %s is not a file or directory",
					     inputs[i]);
			goto fail;
		}
		DIR *d = opendir(inputs[i]);
		if (!d) {
			rc = keel_errmsg_set(errmsg, -errno, "mr: input directory %s", inputs[i]);
			goto fail;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			if (de->d_name[0] == '.' || de->d_name[0] == '_')
				continue;
			char path[4096];
			int n = snprintf(path, sizeof path, "%s/%s", inputs[i], de->d_name);
			if (n < 0 || (size_t)n >= sizeof path)
				continue;
			struct stat fs;
			if (stat(path, &fs) < 0) {
				rc = keel_errmsg_set(errmsg, -errno, "mr: input %s", path);
				closedir(d);
				goto fail;
			}
			if (!S_ISREG(fs.st_mode))
				continue;
			if ((rc = add_file(p, &cap, path, (uint64_t)fs.st_size, errmsg))) {
				closedir(d);
				goto fail;
			}
		}
		closedir(d);
	}
	if (p->n_files)
		qsort(p->files, p->n_files, sizeof *p->files, cmp_file);

	uint64_t rs = job->format == KEEL_MR_FIXED ? job->record_size : 1;
	uint64_t ss = split_size ? split_size : 32ull << 20;
	ss = ss / rs * rs;
	if (ss < rs)
		ss = rs;
	size_t nsplits = 0;
	for (size_t i = 0; i < p->n_files; i++) {
		struct mr_file *f = &p->files[i];
		if ((rc = check_readable(f->path, errmsg)))
			goto fail;
		if (f->size % rs) {
			rc = keel_errmsg_set(errmsg, KEEL_EBADINPUT,
					     "mr: input %s: size %llu is not a whole number of "
					     "%llu-byte records (job %s)",
					     f->path, (unsigned long long)f->size,
					     (unsigned long long)rs, job->name ? job->name : "?");
			goto fail;
		}
		p->total_bytes += f->size;
		nsplits += (f->size + ss - 1) / ss;
	}
	p->splits = calloc(nsplits ? nsplits : 1, sizeof *p->splits);
	if (!p->splits) {
		rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: splits");
		goto fail;
	}
	for (size_t i = 0; i < p->n_files; i++)
		for (uint64_t off = 0; off < p->files[i].size; off += ss) {
			uint64_t end = off + ss < p->files[i].size ? off + ss : p->files[i].size;
			p->splits[p->n_splits++] = (struct mr_split){.file = (uint32_t)i, .start = off, .end = end};
		}
	return 0;
fail:
	mr_plan_free(p);
	return rc;
}

/* Grows *buf to at least need bytes, keeping its contents. */
static int grow(uint8_t **buf, size_t *cap, size_t need)
{
	if (*cap >= need)
		return 0;
	size_t nc = *cap ? *cap : 1 << 20;
	while (nc < need)
		nc *= 2;
	uint8_t *b = realloc(*buf, nc);
	if (!b)
		return -ENOMEM;
	*buf = b;
	*cap = nc;
	return 0;
}

static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

#define CHUNK (1u << 20)

int mr_scan_open(struct mr_scan *sc, const struct mr_plan *plan, const struct mr_split *sp,
		 const struct keel_mr_job *job, uint8_t **bufp, size_t *capp, char *errmsg)
{
	memset(sc, 0, sizeof *sc);
	sc->plan = plan;
	sc->sp = sp;
	sc->job = job;
	sc->bufp = bufp;
	sc->capp = capp;
	const struct mr_file *f = &plan->files[sp->file];
	sc->rec.file = f->path;
	sc->rec.file_index = sp->file;
	size_t want = CHUNK;
	if (job->format == KEEL_MR_FIXED)
		want = CHUNK / job->record_size ? CHUNK / job->record_size * job->record_size
						: job->record_size;
	if (grow(bufp, capp, want))
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: read buffer");
	sc->fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (sc->fd < 0)
		return keel_errmsg_set(errmsg, -errno, "mr: input %s", f->path);
	if (job->format == KEEL_MR_FIXED) {
		sc->base = sp->start;
	} else {
		sc->base = sp->start ? sp->start - 1 : 0;
		sc->skipping = sp->start > 0;
	}
	sc->done = sp->start >= sp->end;
	return 0;
}

void mr_scan_close(struct mr_scan *sc)
{
	if (sc->fd > 0)
		close(sc->fd);
	sc->fd = -1;
}

bool mr_scan_next_read(struct mr_scan *sc, void **dst, size_t *len, uint64_t *off)
{
	if (sc->done)
		return false;
	if (sc->job->format == KEEL_MR_FIXED) {
		size_t rs = sc->job->record_size;
		size_t per = *sc->capp / rs * rs;
		uint64_t left = sc->sp->end - sc->base;
		*dst = *sc->bufp;
		*len = left < per ? (size_t)left : per;
		*off = sc->base;
		sc->len = *len;
		return true;
	}
	*dst = *sc->bufp + sc->len;
	*len = *sc->capp - sc->len;
	*off = sc->base + sc->len;
	return true;
}

static void report_bytes(struct mr_scan *sc, uint64_t upto, uint64_t *bytes_done)
{
	const struct mr_split *sp = sc->sp;
	if (upto > sp->end)
		upto = sp->end;
	if (upto > sp->start + sc->reported) {
		atomic_fetch_add_explicit((_Atomic uint64_t *)bytes_done, upto - sp->start - sc->reported,
					  memory_order_relaxed);
		sc->reported = upto - sp->start;
	}
}

int mr_scan_complete(struct mr_scan *sc, int32_t res, mr_record_fn fn, void *arg,
		     uint64_t *bytes_done, char *errmsg)
{
	const char *path = sc->plan->files[sc->sp->file].path;
	if (res < 0)
		return keel_errmsg_set(errmsg, res, "mr: read %s", path);
	size_t got = (size_t)res;
	if (sc->job->format == KEEL_MR_FIXED && got > 0 && got < sc->len) {
		ssize_t more = pread(sc->fd, *sc->bufp + got, sc->len - got, (off_t)(sc->base + got));
		if (more > 0)
			got += (size_t)more;
	}
	return mr_scan_feed(sc, got, fn, arg, bytes_done, errmsg);
}

int mr_scan_feed(struct mr_scan *sc, size_t got, mr_record_fn fn, void *arg, uint64_t *bytes_done,
		 char *errmsg)
{
	const struct mr_split *sp = sc->sp;
	const struct mr_file *f = &sc->plan->files[sp->file];
	int rc = 0;
	if (sc->job->format == KEEL_MR_FIXED) {
		size_t rs = sc->job->record_size;
		if (got != sc->len)
			return keel_errmsg_set(errmsg, KEEL_EBADINPUT, "mr: %s shrank while reading", f->path);
		for (size_t i = 0; i < got; i += rs) {
			sc->rec.data = *sc->bufp + i;
			sc->rec.len = rs;
			sc->rec.offset = sc->base + i;
			if ((rc = fn(arg, &sc->rec)))
				return rc;
		}
		sc->base += got;
		report_bytes(sc, sc->base, bytes_done);
		if (sc->base >= sp->end)
			sc->done = true;
		return 0;
	}
	if (got == 0)
		sc->eof = true;
	sc->len += got;
	uint8_t *buf = *sc->bufp;
	/* Records fully in the buffer. */
	while (sc->pos < sc->len) {
		uint8_t *s = buf + sc->pos;
		uint8_t *nl = memchr(s, '\n', sc->len - sc->pos);
		if (!nl && !sc->eof)
			break;
		size_t rl = nl ? (size_t)(nl - s) : sc->len - sc->pos;
		if (sc->skipping) {
			sc->skipping = false;
			if (!nl) {
				sc->pos = sc->len; /* no line starts in this split */
				break;
			}
			sc->pos += rl + 1;
			continue;
		}
		if (sc->base + sc->pos >= sp->end) {
			sc->done = true;
			break;
		}
		sc->rec.data = s;
		sc->rec.len = rl;
		sc->rec.offset = sc->base + sc->pos;
		if ((rc = fn(arg, &sc->rec)))
			return rc;
		sc->pos += rl + (nl ? 1 : 0);
	}
	report_bytes(sc, sc->base + sc->len, bytes_done);
	if (sc->eof || (!sc->skipping && sc->base + sc->pos >= sp->end))
		sc->done = true;
	if (sc->done) {
		report_bytes(sc, sp->end, bytes_done);
		return 0;
	}
	/* Keep the partial line, read more behind it. */
	if (sc->pos > 0) {
		memmove(buf, buf + sc->pos, sc->len - sc->pos);
		sc->base += sc->pos;
		sc->len -= sc->pos;
		sc->pos = 0;
	}
	if (*sc->capp - sc->len < CHUNK / 2 && (rc = grow(sc->bufp, sc->capp, 2 * *sc->capp)) < 0)
		return keel_errmsg_set(errmsg, rc, "mr: line buffer (a line of %zu bytes)", sc->len);
	return 0;
}

/* ---- sampling --------------------------------------------------------- */

void mr_samples_free(struct keel_mr_record *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((void *)s[i].data);
	free(s);
}

int mr_plan_sample(const struct mr_plan *plan, const struct keel_mr_job *job, size_t n,
		   struct keel_mr_record **out, size_t *n_out, char *errmsg)
{
	*out = NULL;
	*n_out = 0;
	if (plan->total_bytes == 0 || n == 0)
		return 0;
	struct keel_mr_record *s = calloc(n, sizeof *s);
	if (!s)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: samples");
	size_t got = 0;
	uint64_t rs = job->format == KEEL_MR_FIXED ? job->record_size : 1;
	uint64_t units = plan->total_bytes / rs;
	size_t fi = 0;
	uint64_t fbase = 0; /* units before file fi */
	int fd = -1, rc = 0;
	size_t open_fi = (size_t)-1;
	uint8_t tmp[4096];
	for (size_t i = 0; i < n; i++) {
		uint64_t u = (uint64_t)((unsigned __int128)i * units / n);
		while (fi < plan->n_files && u >= fbase + plan->files[fi].size / rs) {
			fbase += plan->files[fi].size / rs;
			fi++;
		}
		if (fi >= plan->n_files)
			break;
		if (open_fi != fi) {
			if (fd >= 0)
				close(fd);
			fd = open(plan->files[fi].path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				rc = keel_errmsg_set(errmsg, -errno, "mr: input %s", plan->files[fi].path);
				goto fail;
			}
			open_fi = fi;
		}
		uint64_t off = (u - fbase) * rs;
		size_t want = job->format == KEEL_MR_FIXED ? (size_t)rs : sizeof tmp;
		uint8_t *b = job->format == KEEL_MR_FIXED ? malloc(want) : tmp;
		if (!b) {
			rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: samples");
			goto fail;
		}
		ssize_t r = pread_full(fd, b, want, off);
		if (r < 0) {
			if (b != tmp)
				free(b);
			rc = keel_errmsg_set(errmsg, (int)r, "mr: read %s", plan->files[fi].path);
			goto fail;
		}
		if (job->format == KEEL_MR_FIXED) {
			if ((size_t)r != want) {
				free(b);
				continue;
			}
			s[got++] = (struct keel_mr_record){.data = b, .len = want, .file = plan->files[fi].path,
							    .offset = off, .file_index = (uint32_t)fi};
			continue;
		}
		/* A line: the one starting after the first '\n' past off (or at 0). */
		size_t st = 0;
		if (off > 0) {
			uint8_t *nl = memchr(tmp, '\n', (size_t)r);
			if (!nl)
				continue;
			st = (size_t)(nl - tmp) + 1;
		}
		uint8_t *e = memchr(tmp + st, '\n', (size_t)r - st);
		size_t ll = e ? (size_t)(e - tmp) - st : (size_t)r - st;
		uint8_t *c = malloc(ll ? ll : 1);
		if (!c) {
			rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: samples");
			goto fail;
		}
		memcpy(c, tmp + st, ll);
		s[got++] = (struct keel_mr_record){.data = c, .len = ll, .file = plan->files[fi].path,
						    .offset = off + st, .file_index = (uint32_t)fi};
	}
	if (fd >= 0)
		close(fd);
	*out = s;
	*n_out = got;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	mr_samples_free(s, got);
	return rc;
}
