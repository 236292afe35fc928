/* In-memory disk with fault injection and crash model: see faultdisk.h. */
#include "faultdisk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct img {
	uint8_t *p;
	size_t size, cap;
};

struct inode {
	struct img vol, dur;
};

struct dent {
	char name[64];
	size_t ino;
};

struct dir {
	struct dent *e;
	size_t n, cap;
};

struct comp {
	struct keel_wal_io_req *req;
	struct comp *next;
	bool deferred; /* not carried out yet: at reap (keel_faultdisk_defer_async) */
};

struct fdview {
	struct keel_wal_io io;
	struct keel_faultdisk *d;
	uint64_t gen;
	struct comp *head, *tail;
	size_t *fds; /* fd -> inode + 1, 0 = closed */
	size_t nfds;
};

struct keel_faultdisk {
	struct inode *inodes;
	size_t ninodes, icap;
	struct dir vol, dur;
	uint64_t gen; /* bumped by reboot: older views are dead */
	uint64_t ops;
	uint64_t crash_in; /* 0: no crash pending */
	bool off;
	/* last unsynced write */
	bool lw_valid;
	size_t lw_ino;
	uint64_t lw_off;
	uint8_t *lw_buf;
	size_t lw_len;
	/* faults */
	unsigned f_kinds;
	uint64_t f_in;
	int f_err;
	bool f_sticky, f_firing;
	uint64_t s_in;
	uint32_t s_bytes;
	bool defer_async;
};

static int img_resize(struct img *m, size_t size)
{
	if (size > m->cap) {
		size_t cap = m->cap ? m->cap : 4096;
		while (cap < size)
			cap *= 2;
		uint8_t *p = realloc(m->p, cap);
		if (!p)
			return -ENOMEM;
		m->p = p;
		m->cap = cap;
	}
	if (size > m->size)
		memset(m->p + m->size, 0, size - m->size);
	m->size = size;
	return 0;
}

static int img_copy(struct img *to, const struct img *from)
{
	int rc = img_resize(to, from->size);
	if (!rc && from->size)
		memcpy(to->p, from->p, from->size);
	to->size = from->size;
	return rc;
}

static int dir_copy(struct dir *to, const struct dir *from)
{
	if (to->cap < from->n) {
		struct dent *e = realloc(to->e, from->n * sizeof(*e));
		if (!e)
			return -ENOMEM;
		to->e = e;
		to->cap = from->n;
	}
	if (from->n)
		memcpy(to->e, from->e, from->n * sizeof(*to->e));
	to->n = from->n;
	return 0;
}

static struct dent *dir_find(const struct dir *dr, const char *name)
{
	for (size_t i = 0; i < dr->n; i++)
		if (!strcmp(dr->e[i].name, name))
			return &dr->e[i];
	return NULL;
}

static int dir_add(struct dir *dr, const char *name, size_t ino)
{
	if (strlen(name) >= sizeof(dr->e[0].name))
		return -ENAMETOOLONG;
	if (dr->n == dr->cap) {
		size_t cap = dr->cap ? dr->cap * 2 : 16;
		struct dent *e = realloc(dr->e, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		dr->e = e;
		dr->cap = cap;
	}
	strcpy(dr->e[dr->n].name, name);
	dr->e[dr->n].ino = ino;
	dr->n++;
	return 0;
}

static void dir_del(struct dir *dr, struct dent *e)
{
	*e = dr->e[--dr->n];
}

/* Every operation passes here first: power, crash countdown, faults.
 * Returns 0 to go ahead or the error to return. */
static int gate(struct keel_faultdisk *d, unsigned kind)
{
	if (d->off)
		return -EIO;
	if (kind & KEEL_FD_MUTATING) {
		d->ops++;
		if (d->crash_in && --d->crash_in == 0) {
			d->off = true;
			return -EIO;
		}
	}
	if (kind & d->f_kinds) {
		if (d->f_firing)
			return d->f_err;
		if (d->f_in && --d->f_in == 0) {
			int err = d->f_err;
			if (d->f_sticky)
				d->f_firing = true;
			else
				d->f_kinds = 0;
			return err;
		}
	}
	return 0;
}

static struct fdview *V(struct keel_wal_io *io) { return io->impl; }

static struct inode *ino_of(struct fdview *v, int fd)
{
	if (v->gen != v->d->gen || fd < 0 || (size_t)fd >= v->nfds || !v->fds[fd])
		return NULL;
	return &v->d->inodes[v->fds[fd] - 1];
}

static int fdv_open(struct keel_wal_io *io, const char *name, int *flags)
{
	struct fdview *v = V(io);
	struct keel_faultdisk *d = v->d;
	if (v->gen != d->gen)
		return -EIO;
	struct dent *e = dir_find(&d->vol, name);
	int rc = gate(d, e || !(*flags & KEEL_WAL_IO_CREATE) ? KEEL_FD_READ : KEEL_FD_META);
	if (rc)
		return rc;
	size_t ino;
	if (e) {
		ino = e->ino;
	} else {
		if (!(*flags & KEEL_WAL_IO_CREATE))
			return -ENOENT;
		if (d->ninodes == d->icap) {
			size_t cap = d->icap ? d->icap * 2 : 16;
			struct inode *in = realloc(d->inodes, cap * sizeof(*in));
			if (!in)
				return -ENOMEM;
			d->inodes = in;
			d->icap = cap;
		}
		ino = d->ninodes;
		memset(&d->inodes[ino], 0, sizeof(d->inodes[ino]));
		d->ninodes++;
		rc = dir_add(&d->vol, name, ino);
		if (rc)
			return rc;
	}
	size_t fd = 0;
	while (fd < v->nfds && v->fds[fd])
		fd++;
	if (fd == v->nfds) {
		size_t n = v->nfds ? v->nfds * 2 : 8;
		size_t *f = realloc(v->fds, n * sizeof(*f));
		if (!f)
			return -ENOMEM;
		memset(f + v->nfds, 0, (n - v->nfds) * sizeof(*f));
		v->fds = f;
		v->nfds = n;
	}
	v->fds[fd] = ino + 1;
	return (int)fd;
}

static int fdv_close(struct keel_wal_io *io, int fd)
{
	struct fdview *v = V(io);
	if (fd >= 0 && (size_t)fd < v->nfds)
		v->fds[fd] = 0;
	return 0;
}

static int64_t fdv_pread(struct keel_wal_io *io, int fd, void *buf, size_t len, uint64_t off)
{
	struct inode *in = ino_of(V(io), fd);
	if (!in)
		return -EBADF;
	int rc = gate(V(io)->d, KEEL_FD_READ);
	if (rc)
		return rc;
	if (off >= in->vol.size)
		return 0;
	size_t n = in->vol.size - off < len ? in->vol.size - off : len;
	memcpy(buf, in->vol.p + off, n);
	return (int64_t)n;
}

static int64_t do_write(struct fdview *v, int fd, const void *buf, size_t len, uint64_t off)
{
	struct keel_faultdisk *d = v->d;
	struct inode *in = ino_of(v, fd);
	if (!in)
		return -EBADF;
	int rc = gate(d, KEEL_FD_WRITE);
	if (rc)
		return rc;
	if (d->s_in && --d->s_in == 0 && d->s_bytes < len)
		len = d->s_bytes;
	if (off + len > in->vol.size) {
		rc = img_resize(&in->vol, off + len);
		if (rc)
			return rc;
	}
	memcpy(in->vol.p + off, buf, len);
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, buf, len);
	free(d->lw_buf);
	d->lw_valid = true;
	d->lw_ino = v->fds[fd] - 1;
	d->lw_off = off;
	d->lw_buf = copy;
	d->lw_len = len;
	return (int64_t)len;
}

static int64_t fdv_pwrite(struct keel_wal_io *io, int fd, const void *buf, size_t len,
			  uint64_t off)
{
	return do_write(V(io), fd, buf, len, off);
}

static int do_sync(struct fdview *v, int fd)
{
	struct keel_faultdisk *d = v->d;
	struct inode *in = ino_of(v, fd);
	if (!in)
		return -EBADF;
	int rc = gate(d, KEEL_FD_SYNC);
	if (rc)
		return rc;
	rc = img_copy(&in->dur, &in->vol);
	if (rc)
		return rc;
	if (d->lw_valid && d->lw_ino == v->fds[fd] - 1)
		d->lw_valid = false;
	return 0;
}

static int fdv_fdatasync(struct keel_wal_io *io, int fd)
{
	return do_sync(V(io), fd);
}

static int fdv_fallocate(struct keel_wal_io *io, int fd, uint64_t len)
{
	struct inode *in = ino_of(V(io), fd);
	if (!in)
		return -EBADF;
	int rc = gate(V(io)->d, KEEL_FD_ALLOC);
	if (rc)
		return rc;
	return len > in->vol.size ? img_resize(&in->vol, len) : 0;
}

static int fdv_ftruncate(struct keel_wal_io *io, int fd, uint64_t len)
{
	struct inode *in = ino_of(V(io), fd);
	if (!in)
		return -EBADF;
	int rc = gate(V(io)->d, KEEL_FD_META);
	if (rc)
		return rc;
	if (len < in->vol.size) {
		in->vol.size = len;
		return 0;
	}
	return img_resize(&in->vol, len);
}

static int64_t fdv_size(struct keel_wal_io *io, int fd)
{
	struct inode *in = ino_of(V(io), fd);
	if (!in)
		return -EBADF;
	int rc = gate(V(io)->d, KEEL_FD_READ);
	return rc ? rc : (int64_t)in->vol.size;
}

static int fdv_rename(struct keel_wal_io *io, const char *from, const char *to)
{
	struct fdview *v = V(io);
	if (v->gen != v->d->gen)
		return -EIO;
	int rc = gate(v->d, KEEL_FD_META);
	if (rc)
		return rc;
	struct dent *e = dir_find(&v->d->vol, from);
	if (!e)
		return -ENOENT;
	size_t ino = e->ino;
	struct dent *t = dir_find(&v->d->vol, to);
	if (t)
		dir_del(&v->d->vol, t);
	e = dir_find(&v->d->vol, from);
	dir_del(&v->d->vol, e);
	return dir_add(&v->d->vol, to, ino);
}

static int fdv_unlink(struct keel_wal_io *io, const char *name)
{
	struct fdview *v = V(io);
	if (v->gen != v->d->gen)
		return -EIO;
	int rc = gate(v->d, KEEL_FD_META);
	if (rc)
		return rc;
	struct dent *e = dir_find(&v->d->vol, name);
	if (!e)
		return -ENOENT;
	dir_del(&v->d->vol, e);
	return 0;
}

static int fdv_sync_dir(struct keel_wal_io *io)
{
	struct fdview *v = V(io);
	if (v->gen != v->d->gen)
		return -EIO;
	int rc = gate(v->d, KEEL_FD_SYNC);
	return rc ? rc : dir_copy(&v->d->dur, &v->d->vol);
}

static int fdv_list(struct keel_wal_io *io, int (*fn)(void *arg, const char *name), void *arg)
{
	struct fdview *v = V(io);
	if (v->gen != v->d->gen)
		return -EIO;
	int rc = gate(v->d, KEEL_FD_READ);
	if (rc)
		return rc;
	/* fn may unlink: walk a copy */
	struct dir snap = {0};
	rc = dir_copy(&snap, &v->d->vol);
	for (size_t i = 0; !rc && i < snap.n; i++)
		rc = fn(arg, snap.e[i].name);
	free(snap.e);
	return rc;
}

/* The write, then (if asked and the write was whole) the fdatasync. */
static void carry_out(struct fdview *v, struct keel_wal_io_req *req)
{
	int64_t n = do_write(v, req->fd, req->buf, req->len, req->off);
	req->res = (int)n;
	req->sync_res = 1;
	if (req->datasync && n == (int64_t)req->len)
		req->sync_res = do_sync(v, req->fd);
}

static int fdv_submit(struct keel_wal_io *io, struct keel_wal_io_req *req)
{
	struct fdview *v = V(io);
	struct comp *c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->req = req;
	c->next = NULL;
	c->deferred = v->d->defer_async;
	if (!c->deferred)
		carry_out(v, req);
	if (v->tail)
		v->tail->next = c;
	else
		v->head = c;
	v->tail = c;
	return 0;
}

static int fdv_reap(struct keel_wal_io *io, unsigned min_complete)
{
	struct fdview *v = V(io);
	struct comp *list = v->head;
	v->head = v->tail = NULL;
	int n = 0;
	while (list) {
		struct comp *c = list;
		list = c->next;
		struct keel_wal_io_req *req = c->req;
		if (c->deferred)
			carry_out(v, req);
		free(c);
		n++;
		req->done(req);
	}
	return n;
}

static int fdv_event_fd(struct keel_wal_io *io)
{
	return -1;
}

static void fdv_destroy(struct keel_wal_io *io)
{
	struct fdview *v = V(io);
	while (v->head) {
		struct comp *c = v->head;
		v->head = c->next;
		free(c);
	}
	free(v->fds);
	free(v);
}

static const struct keel_wal_io_ops fdv_ops = {
	.open = fdv_open,
	.close = fdv_close,
	.pread = fdv_pread,
	.pwrite = fdv_pwrite,
	.fdatasync = fdv_fdatasync,
	.fallocate = fdv_fallocate,
	.ftruncate = fdv_ftruncate,
	.size = fdv_size,
	.rename = fdv_rename,
	.unlink = fdv_unlink,
	.sync_dir = fdv_sync_dir,
	.list = fdv_list,
	.submit = fdv_submit,
	.reap = fdv_reap,
	.event_fd = fdv_event_fd,
	.destroy = fdv_destroy,
};

struct keel_faultdisk *keel_faultdisk_new(void)
{
	return calloc(1, sizeof(struct keel_faultdisk));
}

void keel_faultdisk_defer_async(struct keel_faultdisk *d, bool on)
{
	d->defer_async = on;
}

void keel_faultdisk_free(struct keel_faultdisk *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->ninodes; i++) {
		free(d->inodes[i].vol.p);
		free(d->inodes[i].dur.p);
	}
	free(d->inodes);
	free(d->vol.e);
	free(d->dur.e);
	free(d->lw_buf);
	free(d);
}

int keel_faultdisk_io(struct keel_faultdisk *d, struct keel_wal_io **out)
{
	struct fdview *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->d = d;
	v->gen = d->gen;
	v->io.ops = &fdv_ops;
	v->io.impl = v;
	v->io.engine = "faultdisk";
	*out = &v->io;
	return 0;
}

uint64_t keel_faultdisk_ops(const struct keel_faultdisk *d) { return d->ops; }

void keel_faultdisk_crash_at(struct keel_faultdisk *d, uint64_t n) { d->crash_in = n; }

bool keel_faultdisk_is_off(const struct keel_faultdisk *d) { return d->off; }

size_t keel_faultdisk_unsynced_len(const struct keel_faultdisk *d)
{
	return d->lw_valid ? d->lw_len : 0;
}

void keel_faultdisk_reboot(struct keel_faultdisk *d, uint64_t torn)
{
	if (d->lw_valid && torn) {
		struct img *m = &d->inodes[d->lw_ino].dur;
		size_t n = torn < d->lw_len ? (size_t)torn : d->lw_len;
		if (d->lw_off + n > m->size)
			img_resize(m, d->lw_off + n);
		memcpy(m->p + d->lw_off, d->lw_buf, n);
	}
	for (size_t i = 0; i < d->ninodes; i++)
		img_copy(&d->inodes[i].vol, &d->inodes[i].dur);
	dir_copy(&d->vol, &d->dur);
	d->lw_valid = false;
	d->gen++;
	d->off = false;
	d->crash_in = 0;
	keel_faultdisk_clear(d);
}

void keel_faultdisk_restart(struct keel_faultdisk *d)
{
	/* the old process's views die with it (their fds and ops go stale);
	 * images, names and the last unsynced write are the page cache's */
	d->gen++;
	d->off = false;
	d->crash_in = 0;
	keel_faultdisk_clear(d);
}

void keel_faultdisk_fail(struct keel_faultdisk *d, unsigned kinds, uint64_t nth, int err,
			 bool sticky)
{
	d->f_kinds = kinds;
	d->f_in = nth;
	d->f_err = err;
	d->f_sticky = sticky;
	d->f_firing = false;
}

void keel_faultdisk_short_write(struct keel_faultdisk *d, uint64_t nth, uint32_t bytes)
{
	d->s_in = nth;
	d->s_bytes = bytes;
}

void keel_faultdisk_clear(struct keel_faultdisk *d)
{
	d->f_kinds = 0;
	d->f_firing = false;
	d->s_in = 0;
}

int keel_faultdisk_flip_bit(struct keel_faultdisk *d, const char *name, uint64_t byte,
			    unsigned bit)
{
	struct dent *e = dir_find(&d->vol, name);
	if (!e)
		return -ENOENT;
	struct inode *in = &d->inodes[e->ino];
	if (byte >= in->vol.size)
		return -EINVAL;
	in->vol.p[byte] ^= (uint8_t)(1u << (bit & 7));
	if (byte < in->dur.size)
		in->dur.p[byte] ^= (uint8_t)(1u << (bit & 7));
	return 0;
}

int64_t keel_faultdisk_size(const struct keel_faultdisk *d, const char *name)
{
	struct dent *e = dir_find(&d->vol, name);
	return e ? (int64_t)d->inodes[e->ino].vol.size : -ENOENT;
}

int64_t keel_faultdisk_read(const struct keel_faultdisk *d, const char *name, void *buf,
			    size_t cap)
{
	struct dent *e = dir_find(&d->vol, name);
	if (!e)
		return -ENOENT;
	const struct img *m = &d->inodes[e->ino].vol;
	size_t n = m->size < cap ? m->size : cap;
	memcpy(buf, m->p, n);
	return (int64_t)n;
}
