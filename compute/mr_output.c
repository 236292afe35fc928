/*
 * compute/mr_output.c — the output writer of a reduce partition (buffered,
 * fsynced on close) and removal of a job's temporary directory.
 *
 * Partition files are written inside the job's temporary directory; the
 * coordinator renames that directory to the output path only after every
 * partition file is closed and fsynced (mr_cluster.c), so a reader never
 * sees a half-written result under the output name.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "compute/mr_internal.h"

#define OBUF (1u << 20)

int mr_out_open(struct keel_mr_out *o, const char *path, char *errmsg)
{
	memset(o, 0, sizeof *o);
	o->path = strdup(path);
	o->buf = malloc(OBUF);
	o->cap = OBUF;
	if (!o->path || !o->buf) {
		free(o->path);
		free(o->buf);
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: output %s", path);
	}
	o->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (o->fd < 0) {
		int rc = -errno;
		free(o->path);
		free(o->buf);
		return keel_errmsg_set(errmsg, rc, "mr: output %s", path);
	}
	return 0;
}

static int flush(struct keel_mr_out *o)
{
	size_t off = 0;
	while (off < o->len) {
		ssize_t w = write(o->fd, o->buf + off, o->len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			o->err = -errno;
			return o->err;
		}
		off += (size_t)w;
	}
	o->len = 0;
	return 0;
}

int keel_mr_out_write(struct keel_mr_out *o, const void *buf, size_t len)
{
	if (o->err)
		return o->err;
	o->bytes += len;
	if (o->len + len > o->cap) {
		if (flush(o))
			return o->err;
		if (len > o->cap) {
			size_t off = 0;
			while (off < len) {
				ssize_t w = write(o->fd, (const uint8_t *)buf + off, len - off);
				if (w < 0) {
					if (errno == EINTR)
						continue;
					return o->err = -errno;
				}
				off += (size_t)w;
			}
			return 0;
		}
	}
	memcpy(o->buf + o->len, buf, len);
	o->len += len;
	return 0;
}

int keel_mr_out_printf(struct keel_mr_out *o, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return o->err = -EINVAL;
	if ((size_t)n < sizeof small)
		return keel_mr_out_write(o, small, (size_t)n);
	char *big = malloc((size_t)n + 1);
	if (!big)
		return o->err = -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	int rc = keel_mr_out_write(o, big, (size_t)n);
	free(big);
	return rc;
}

int keel_mr_out_kv_u64(struct keel_mr_out *o, const void *key, size_t klen, uint64_t v)
{
	char num[24];
	int i = (int)sizeof num;
	num[--i] = '\n';
	do {
		num[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	num[--i] = '\t';
	keel_mr_out_write(o, key, klen);
	return keel_mr_out_write(o, num + i, sizeof num - (size_t)i);
}

int mr_out_close(struct keel_mr_out *o, char *errmsg)
{
	int rc = o->err;
	if (!rc)
		rc = flush(o);
	if (!rc && !o->no_fsync && fsync(o->fd) < 0)
		rc = -errno;
	if (close(o->fd) < 0 && !rc)
		rc = -errno;
	if (rc)
		keel_errmsg_set(errmsg, rc, "mr: output %s", o->path);
	free(o->buf);
	free(o->path);
	memset(o, 0, sizeof *o);
	o->fd = -1;
	return rc;
}

void mr_out_abort(struct keel_mr_out *o)
{
	if (o->fd >= 0 && o->path) {
		close(o->fd);
		unlink(o->path);
	}
	free(o->buf);
	free(o->path);
	memset(o, 0, sizeof *o);
	o->fd = -1;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void mr_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
