/* The WAL's real-file I/O backend (struct keel_wal_io_ops over a directory).
 *
 * Synchronous calls are plain syscalls on files opened relative to the
 * directory fd. The asynchronous write+fdatasync has two engines:
 *  - io_uring: a keel_fileq (include/keel/runtime.h), a private ring per
 *    backend (so per WAL, owned by the WAL's thread) whose write+datasync
 *    is linked so that the fdatasync runs only if the whole write
 *    succeeded (runtime/fileq.c). An eventfd is registered with it for
 *    reactors.
 *  - thread: where io_uring_queue_init is refused (EPERM under seccomp or
 *    io_uring_disabled, ENOSYS on old kernels) or the process runs the
 *    epoll reactor (KEEL_REACTOR=epoll), one helper thread runs
 *    pwrite then fdatasync per request and signals an eventfd.
 * Ownership: the backend belongs to the WAL that opened it; requests and
 * their buffers belong to the caller until done() runs on the reaping
 * thread. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/runtime.h"
#include "keel/wal.h"

enum engine_kind { ENG_URING, ENG_THREAD, ENG_SYNC };

struct posix_io {
	struct keel_wal_io io;
	int dirfd;
	int efd;
	enum engine_kind kind;
	/* io_uring: a private file queue, and one of its requests per WAL
	 * request in flight */
	struct keel_fileq *q;
	struct fq_slot *slots, *free_slots;
	unsigned inflight;
	/* thread */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done;
	struct keel_wal_io_req *todo_head, *todo_tail, *done_head, *done_tail;
	bool stop;
};

#define FQ_DEPTH 32

struct fq_slot {
	struct keel_fileq_req fq;
	struct keel_wal_io_req *req;
	struct posix_io *p;
	struct fq_slot *next;
};

static struct posix_io *P(struct keel_wal_io *io) { return io->impl; }

static int px_open(struct keel_wal_io *io, const char *name, int *flags)
{
	int f = O_RDWR | O_CLOEXEC;
	if (*flags & KEEL_WAL_IO_CREATE)
		f |= O_CREAT;
	if (*flags & KEEL_WAL_IO_DIRECT) {
		int fd = openat(P(io)->dirfd, name, f | O_DIRECT, 0644);
		if (fd >= 0)
			return fd;
		if (errno != EINVAL)
			return -errno;
		*flags &= ~KEEL_WAL_IO_DIRECT; /* filesystem without O_DIRECT (tmpfs) */
	}
	int fd = openat(P(io)->dirfd, name, f, 0644);
	return fd >= 0 ? fd : -errno;
}

static int px_close(struct keel_wal_io *io, int fd)
{
	return close(fd) ? -errno : 0;
}

static int64_t px_pread(struct keel_wal_io *io, int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread(fd, buf, len, (off_t)off);
	return n >= 0 ? n : -errno;
}

static int64_t px_pwrite(struct keel_wal_io *io, int fd, const void *buf, size_t len,
			 uint64_t off)
{
	ssize_t n = pwrite(fd, buf, len, (off_t)off);
	return n >= 0 ? n : -errno;
}

static int px_fdatasync(struct keel_wal_io *io, int fd)
{
	return fdatasync(fd) ? -errno : 0;
}

static int px_fallocate(struct keel_wal_io *io, int fd, uint64_t len)
{
	/* posix_fallocate emulates on filesystems without fallocate(2) */
	int rc = posix_fallocate(fd, 0, (off_t)len);
	return -rc;
}

static int px_ftruncate(struct keel_wal_io *io, int fd, uint64_t len)
{
	return ftruncate(fd, (off_t)len) ? -errno : 0;
}

static int64_t px_size(struct keel_wal_io *io, int fd)
{
	struct stat st;
	return fstat(fd, &st) ? -errno : st.st_size;
}

static int px_rename(struct keel_wal_io *io, const char *from, const char *to)
{
	return renameat(P(io)->dirfd, from, P(io)->dirfd, to) ? -errno : 0;
}

static int px_unlink(struct keel_wal_io *io, const char *name)
{
	return unlinkat(P(io)->dirfd, name, 0) ? -errno : 0;
}

static int px_sync_dir(struct keel_wal_io *io)
{
	return fsync(P(io)->dirfd) ? -errno : 0;
}

static int px_list(struct keel_wal_io *io, int (*fn)(void *arg, const char *name), void *arg)
{
	int fd = openat(P(io)->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = -errno;
		close(fd);
		return e;
	}
	int rc = 0;
	struct dirent *de;
	while (!rc && (de = readdir(d))) {
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		rc = fn(arg, de->d_name);
	}
	closedir(d);
	return rc;
}

static void drain_efd(int efd)
{
	uint64_t v;
	if (efd >= 0)
		while (read(efd, &v, sizeof(v)) == sizeof(v)) {
		}
}

/* ---- io_uring engine ------------------------------------------------------ */

static void ur_done(struct keel_fileq_req *fq)
{
	struct fq_slot *sl = (struct fq_slot *)(void *)fq;
	struct keel_wal_io_req *req = sl->req;
	struct posix_io *p = sl->p;
	req->res = fq->res;
	req->sync_res = fq->sync_res;
	sl->next = p->free_slots;
	p->free_slots = sl;
	p->inflight--;
	req->done(req); /* may submit again: the slot is free already */
}

static int ur_submit(struct keel_wal_io *io, struct keel_wal_io_req *req)
{
	struct posix_io *p = P(io);
	struct fq_slot *sl = p->free_slots;
	if (!sl)
		return -EAGAIN;
	req->res = 0;
	req->sync_res = 1;
	sl->req = req;
	sl->fq = (struct keel_fileq_req){.fd = req->fd, .op = KEEL_FILEQ_WRITE,
					 .datasync = req->datasync, .buf = (void *)req->buf,
					 .len = req->len, .off = req->off, .done = ur_done};
	int rc = keel_fileq_submit(p->q, &sl->fq);
	if (rc < 0)
		return rc;
	p->free_slots = sl->next;
	p->inflight++;
	return 0;
}

static int ur_reap(struct keel_wal_io *io, unsigned min_complete)
{
	struct posix_io *p = P(io);
	drain_efd(p->efd);
	return keel_fileq_reap(p->q, min_complete);
}

/* ---- helper-thread engine ------------------------------------------------- */

static void *th_main(void *arg)
{
	struct posix_io *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->todo_head && !p->stop)
			pthread_cond_wait(&p->cv_work, &p->mu);
		if (!p->todo_head)
			break;
		struct keel_wal_io_req *req = p->todo_head;
		p->todo_head = req->next;
		if (!p->todo_head)
			p->todo_tail = NULL;
		pthread_mutex_unlock(&p->mu);

#ifdef KEEL_MUTANT_WAL_THREAD_SYNC_FIRST
		/* MUTANT: fdatasync before the write (its result is reported
		 * only for a whole write, so only the order is wrong). */
		int srs = req->datasync ? (fdatasync(req->fd) ? -errno : 0) : 1;
#endif
		ssize_t n = pwrite(req->fd, req->buf, req->len, (off_t)req->off);
		req->res = n >= 0 ? (int)n : -errno;
		req->sync_res = 1;
#if defined(KEEL_MUTANT_WAL_THREAD_SYNC_FIRST)
		if (n == (ssize_t)req->len)
			req->sync_res = srs;
#elif defined(KEEL_MUTANT_WAL_THREAD_SYNC_ALWAYS)
		/* MUTANT: the sync runs after a failed or short write too. */
		if (req->datasync)
			req->sync_res = fdatasync(req->fd) ? -errno : 0;
#else
		if (req->datasync && n == (ssize_t)req->len)
			req->sync_res = fdatasync(req->fd) ? -errno : 0;
#endif

		pthread_mutex_lock(&p->mu);
		req->next = NULL;
		if (p->done_tail)
			p->done_tail->next = req;
		else
			p->done_head = req;
		p->done_tail = req;
		pthread_cond_broadcast(&p->cv_done);
		uint64_t one = 1;
		if (write(p->efd, &one, sizeof(one)) < 0) {
			/* counter saturated: the reader is behind, it will still wake */
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static int th_submit(struct keel_wal_io *io, struct keel_wal_io_req *req)
{
	struct posix_io *p = P(io);
	req->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->todo_tail)
		p->todo_tail->next = req;
	else
		p->todo_head = req;
	p->todo_tail = req;
	p->inflight++;
	pthread_cond_signal(&p->cv_work);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

static int th_reap(struct keel_wal_io *io, unsigned min_complete)
{
	struct posix_io *p = P(io);
	int done = 0;
	drain_efd(p->efd);
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->done_head && (unsigned)done < min_complete && p->inflight)
			pthread_cond_wait(&p->cv_done, &p->mu);
		struct keel_wal_io_req *list = p->done_head;
		p->done_head = p->done_tail = NULL;
		pthread_mutex_unlock(&p->mu);
		if (!list)
			break;
		while (list) {
			struct keel_wal_io_req *req = list;
			list = req->next;
			pthread_mutex_lock(&p->mu);
			p->inflight--;
			pthread_mutex_unlock(&p->mu);
			done++;
			req->done(req); /* may submit again */
		}
	}
	return done;
}

/* ---- common ----------------------------------------------------------------- */

static int px_submit(struct keel_wal_io *io, struct keel_wal_io_req *req)
{
	if (P(io)->kind == ENG_SYNC)
		return -EOPNOTSUPP;
	return P(io)->kind == ENG_URING ? ur_submit(io, req) : th_submit(io, req);
}

static int px_reap(struct keel_wal_io *io, unsigned min_complete)
{
	if (P(io)->kind == ENG_SYNC)
		return 0;
	return P(io)->kind == ENG_URING ? ur_reap(io, min_complete) : th_reap(io, min_complete);
}

static int px_event_fd(struct keel_wal_io *io)
{
	return P(io)->efd;
}

static void px_destroy(struct keel_wal_io *io)
{
	struct posix_io *p = P(io);
	/* the WAL reaps everything before destroying; wait anyway */
	while (p->inflight && px_reap(io, 1) > 0) {
	}
	if (p->kind == ENG_URING) {
		keel_fileq_free(p->q);
		free(p->slots);
	} else if (p->kind == ENG_THREAD) {
		pthread_mutex_lock(&p->mu);
		p->stop = true;
		pthread_cond_signal(&p->cv_work);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->thread, NULL);
		pthread_mutex_destroy(&p->mu);
		pthread_cond_destroy(&p->cv_work);
		pthread_cond_destroy(&p->cv_done);
	}
	if (p->efd >= 0)
		close(p->efd);
	close(p->dirfd);
	free(p);
}

static const struct keel_wal_io_ops posix_ops = {
	.open = px_open,
	.close = px_close,
	.pread = px_pread,
	.pwrite = px_pwrite,
	.fdatasync = px_fdatasync,
	.fallocate = px_fallocate,
	.ftruncate = px_ftruncate,
	.size = px_size,
	.rename = px_rename,
	.unlink = px_unlink,
	.sync_dir = px_sync_dir,
	.list = px_list,
	.submit = px_submit,
	.reap = px_reap,
	.event_fd = px_event_fd,
	.destroy = px_destroy,
};

int keel_wal_io_posix_new(struct keel_wal_io **out, const char *dir, enum keel_wal_engine engine,
			  char *errmsg)
{
	*out = NULL;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return keel_errmsg_set(errmsg, -errno, "wal: mkdir %s", dir);
	struct posix_io *p = calloc(1, sizeof(*p));
	if (!p)
		return keel_errmsg_set(errmsg, -ENOMEM, "wal: %s", dir);
	p->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->dirfd < 0) {
		int e = -errno;
		free(p);
		return keel_errmsg_set(errmsg, e, "wal: open %s", dir);
	}
	if (engine == KEEL_WAL_ENGINE_SYNC) {
		/* synchronous calls only: no ring, no thread, no eventfd */
		p->kind = ENG_SYNC;
		p->efd = -1;
		p->io.ops = &posix_ops;
	p->io.background = true;
		p->io.impl = p;
		p->io.engine = "sync";
		*out = &p->io;
		return 0;
	}
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		int e = -errno;
		close(p->dirfd);
		free(p);
		return keel_errmsg_set(errmsg, e, "wal: eventfd");
	}
	const char *env = getenv("KEEL_WAL_ENGINE");
	if (engine == KEEL_WAL_ENGINE_AUTO && env) {
		if (!strcmp(env, "thread"))
			engine = KEEL_WAL_ENGINE_THREAD;
		else if (!strcmp(env, "uring"))
			engine = KEEL_WAL_ENGINE_URING;
	}
	int urc = -1;
	char qem[KEEL_ERRMSG_LEN] = "";
	if (engine != KEEL_WAL_ENGINE_THREAD) {
		p->slots = calloc(FQ_DEPTH, sizeof(*p->slots));
		urc = p->slots ? keel_fileq_new(FQ_DEPTH, p->efd, &p->q, qem)
			       : keel_errmsg_set(qem, -ENOMEM, "slots");
		if (urc == 0) {
			p->kind = ENG_URING;
			for (unsigned i = 0; i < FQ_DEPTH; i++) {
				p->slots[i].p = p;
				p->slots[i].next = p->free_slots;
				p->free_slots = &p->slots[i];
			}
			keel_info("wal: %s: I/O path io_uring (write + linked fdatasync)", dir);
		} else if (engine == KEEL_WAL_ENGINE_URING ||
			   (urc != -EPERM && urc != -ENOSYS && urc != KEEL_ENOTSUP)) {
			free(p->slots);
			close(p->efd);
			close(p->dirfd);
			free(p);
			return keel_errmsg_set(errmsg, urc, "wal: %s: %s", dir, qem);
		} else {
			free(p->slots);
			p->slots = NULL;
		}
	}
	if (urc != 0) {
		p->kind = ENG_THREAD;
		pthread_mutex_init(&p->mu, NULL);
		pthread_cond_init(&p->cv_work, NULL);
		pthread_cond_init(&p->cv_done, NULL);
		int rc = pthread_create(&p->thread, NULL, th_main, p);
		if (rc) {
			close(p->efd);
			close(p->dirfd);
			free(p);
			return keel_errmsg_set(errmsg, -rc, "wal: helper thread");
		}
		if (engine == KEEL_WAL_ENGINE_THREAD)
			keel_info("wal: %s: I/O path pwrite+fdatasync on a helper thread (asked for)",
				  dir);
		else
			keel_warn("wal: %s: io_uring refused (%s); I/O path pwrite+fdatasync on a "
				  "helper thread",
				  dir, qem);
	}
	p->io.ops = &posix_ops;
	p->io.background = true;
	p->io.impl = p;
	p->io.engine = p->kind == ENG_URING ? "io_uring" : "thread";
	*out = &p->io;
	return 0;
}
