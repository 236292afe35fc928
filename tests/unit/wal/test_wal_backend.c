/* The contract of the real-file WAL backend (consensus/wal/wal_io.c), for
 * each engine, checked at the backend itself rather than through the WAL:
 * one request is "write, then (if asked) fdatasync", and the fdatasync
 * runs only after the whole write succeeded, never before it and never
 * after a failed or short write (sync_res stays 1: "did not run").
 *
 * Every crash test of the WAL runs on the fault-injecting disk, so these
 * are what ties that model to the engines that run in production:
 *  - the write fails (a read-only fd: EBADF; past RLIMIT_FSIZE with
 *    SIGXFSZ ignored: EFBIG) or is cut short (a write across the limit):
 *    the linked fdatasync must not have run;
 *  - the write succeeds: the fdatasync ran after it, seen through
 *    cachestat(2) (Linux 6.5): once the request completed, none of the
 *    pages it wrote may still be dirty. A sync issued before its write
 *    leaves every one of them dirty;
 *  - end to end: a WAL whose segment write hits the file size limit fails
 *    those appends, loses nothing acknowledged, never brings the failed
 *    bytes back, and continues once the limit is lifted.
 * Runs in the build directory (a real filesystem). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "keel/wal.h"
#include "walt.h"

static char dir[64];

static void setup(void)
{
	keel_log_set_level(KEEL_LOG_ERROR);
	snprintf(dir, sizeof(dir), "wal-backend-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	/* a write past RLIMIT_FSIZE raises SIGXFSZ; ignored, it fails with
	 * EFBIG instead of killing the test */
	signal(SIGXFSZ, SIG_IGN);
}

static void teardown(void)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d))) {
			char p[512];
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			if (de->d_name[0] != '.')
				unlink(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

TestSuite(wal_backend, .init = setup, .fini = teardown, .timeout = 60);

static struct keel_wal_io *backend(enum keel_wal_engine eng)
{
	struct keel_wal_io *io;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_wal_io_posix_new(&io, dir, eng, err);
	if (rc == -EPERM || rc == -ENOSYS || rc == KEEL_ENOTSUP) /* KEEL_REACTOR=epoll */
		cr_skip_test("needs io_uring (refused here: %s)", err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_str_eq(io->engine, eng == KEEL_WAL_ENGINE_URING ? "io_uring" : "thread");
	return io;
}

struct waiter {
	struct keel_wal_io_req req; /* first: done() gets it back */
	bool done;
};

static void req_done(struct keel_wal_io_req *req)
{
	((struct waiter *)req)->done = true;
}

/* One request through the backend, waited for; returns it completed. */
static struct keel_wal_io_req run(struct keel_wal_io *io, int fd, const void *buf, uint32_t len,
				  uint64_t off, bool datasync)
{
	struct waiter w = {.req = {.fd = fd, .datasync = datasync, .buf = buf, .len = len,
				   .off = off, .done = req_done,
				   /* values no backend may leave in place */
				   .res = 12345, .sync_res = 12345}};
	cr_assert_eq(io->ops->submit(io, &w.req), 0);
	while (!w.done)
		cr_assert_geq(io->ops->reap(io, 1), 0);
	return w.req;
}

static int open_file(const char *name, int flags)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, flags | O_CREAT | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
	return fd;
}

static uint8_t buf[64 * 1024];

/* ---- a failed write: the fdatasync linked to it does not run ------------- */

static void failed_write(enum keel_wal_engine eng)
{
	struct keel_wal_io *io = backend(eng);
	memset(buf, 0xa5, sizeof(buf));
	int fd = open_file("readonly", O_RDONLY);
	struct keel_wal_io_req r = run(io, fd, buf, 4096, 0, true);
	cr_expect_eq(r.res, -EBADF, "write on a read-only fd: %d", r.res);
	cr_expect_eq(r.sync_res, 1, "%s: the fdatasync ran although its write failed (%d)",
		     io->engine, r.sync_res);
	close(fd);
	io->ops->destroy(io);
}

Test(wal_backend, failed_write_skips_its_sync_io_uring)
{
	failed_write(KEEL_WAL_ENGINE_URING);
}

Test(wal_backend, failed_write_skips_its_sync_thread)
{
	failed_write(KEEL_WAL_ENGINE_THREAD);
}

/* ---- past and across RLIMIT_FSIZE: EFBIG, and a short write ------------- */

#define LIMIT (256u * 1024 + 100)

static void set_fsize_limit(rlim_t lim)
{
	struct rlimit rl;
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = lim;
	if (rl.rlim_max != RLIM_INFINITY && lim > rl.rlim_max)
		rl.rlim_cur = rl.rlim_max;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0, "%s", strerror(errno));
}

static void file_size_limit(enum keel_wal_engine eng)
{
	struct keel_wal_io *io = backend(eng);
	memset(buf, 0x5a, sizeof(buf));
	int fd = open_file("limited", O_RDWR);
	set_fsize_limit(LIMIT);
	struct keel_wal_io_req r = run(io, fd, buf, 4096, LIMIT, true);
	cr_expect_eq(r.res, -EFBIG, "%s: write at the limit: %d", io->engine, r.res);
	cr_expect_eq(r.sync_res, 1, "%s: the fdatasync ran after a failed write (%d)",
		     io->engine, r.sync_res);
	r = run(io, fd, buf, 4096, LIMIT - 100, true);
	cr_expect_eq(r.res, 100, "%s: write across the limit: %d", io->engine, r.res);
	cr_expect_eq(r.sync_res, 1, "%s: the fdatasync ran after a short write (%d)", io->engine,
		     r.sync_res);
	/* below the limit all is well, and the sync reports */
	r = run(io, fd, buf, 4096, 0, true);
	cr_expect_eq(r.res, 4096);
	cr_expect_eq(r.sync_res, 0, "%s: %d", io->engine, r.sync_res);
	/* no sync asked for: none reported */
	r = run(io, fd, buf, 4096, 8192, false);
	cr_expect_eq(r.res, 4096);
	cr_expect_eq(r.sync_res, 1);
	close(fd);
	io->ops->destroy(io);
}

Test(wal_backend, write_past_or_across_the_file_size_limit_skips_its_sync_io_uring)
{
	file_size_limit(KEEL_WAL_ENGINE_URING);
}

Test(wal_backend, write_past_or_across_the_file_size_limit_skips_its_sync_thread)
{
	file_size_limit(KEEL_WAL_ENGINE_THREAD);
}

/* ---- a completed request: its fdatasync ran after its write -------------- */

#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct cs_range {
	uint64_t off, len;
};
struct cs {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* Dirty (or under writeback) pages of fd in [off, off + len). */
static uint64_t dirty_pages(int fd, uint64_t off, uint64_t len)
{
	struct cs_range r = {off, len};
	struct cs st;
	memset(&st, 0, sizeof(st));
	if (syscall(__NR_cachestat, fd, &r, &st, 0) != 0)
		cr_skip_test("needs cachestat(2) (Linux >= 6.5): %s", strerror(errno));
	return st.nr_dirty + st.nr_writeback;
}

static void sync_after_write(enum keel_wal_engine eng)
{
	struct keel_wal_io *io = backend(eng);
	int fd = open_file("ordered", O_RDWR);
	/* the probe sees dirty pages here at all (not on tmpfs, say) */
	memset(buf, 1, sizeof(buf));
	cr_assert_eq(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	if (dirty_pages(fd, 0, sizeof(buf)) == 0)
		cr_skip_test("cachestat shows no dirty pages after a write on this filesystem");
	cr_assert_eq(fdatasync(fd), 0);
	cr_assert_eq(dirty_pages(fd, 0, sizeof(buf)), 0);

	for (int round = 0; round < 8; round++) {
		uint64_t off = (uint64_t)round * sizeof(buf);
		memset(buf, round + 2, sizeof(buf));
		struct keel_wal_io_req r = run(io, fd, buf, sizeof(buf), off, true);
		cr_assert_eq(r.res, (int)sizeof(buf));
		cr_assert_eq(r.sync_res, 0);
		uint64_t d = dirty_pages(fd, off, sizeof(buf));
		cr_assert_eq(d, 0,
			     "%s: %lu pages of a completed write+fdatasync are still dirty: "
			     "the sync ran before the write",
			     io->engine, (unsigned long)d);
	}
	/* and a write without sync leaves its pages dirty: the probe works */
	struct keel_wal_io_req r = run(io, fd, buf, sizeof(buf), 0, false);
	cr_assert_eq(r.res, (int)sizeof(buf));
	cr_expect_gt(dirty_pages(fd, 0, sizeof(buf)), 0);
	close(fd);
	io->ops->destroy(io);
}

Test(wal_backend, completed_request_synced_after_its_write_io_uring)
{
	sync_after_write(KEEL_WAL_ENGINE_URING);
}

Test(wal_backend, completed_request_synced_after_its_write_thread)
{
	sync_after_write(KEEL_WAL_ENGINE_THREAD);
}

/* ---- the helper thread's system calls, in the order it makes them --------
 * An order-recording shim: these definitions take precedence over libc's
 * for libkeel too (an executable's symbols come first in the lookup), and
 * record the calls on one watched fd before passing them on. That makes the
 * thread engine's order visible on every kernel; io_uring's writes and
 * syncs are not system calls of ours, so cachestat above is its check. */

static atomic_int watch_fd = -1;
static char calls[64];
static atomic_uint ncalls;

static void record(int fd, char what)
{
	if (fd != atomic_load(&watch_fd))
		return;
	unsigned i = atomic_fetch_add(&ncalls, 1);
	if (i + 1 < sizeof(calls))
		calls[i] = what;
}

ssize_t pwrite64(int fd, const void *b, size_t n, __off64_t off)
{
	static ssize_t (*real)(int, const void *, size_t, __off64_t);
	if (!real)
		real = (ssize_t(*)(int, const void *, size_t, __off64_t))dlsym(RTLD_NEXT, "pwrite64");
	record(fd, 'W');
	return real(fd, b, n, off);
}

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	record(fd, 'S');
	return real(fd);
}

static const char *calls_on(struct keel_wal_io *io, int fd, const void *b, uint32_t len,
			    uint64_t off, bool datasync)
{
	memset(calls, 0, sizeof(calls));
	atomic_store(&ncalls, 0);
	atomic_store(&watch_fd, fd);
	run(io, fd, b, len, off, datasync);
	atomic_store(&watch_fd, -1);
	return calls;
}

Test(wal_backend, helper_thread_syncs_after_its_write)
{
	struct keel_wal_io *io = backend(KEEL_WAL_ENGINE_THREAD);
	int fd = open_file("calls", O_RDWR);
	memset(buf, 7, sizeof(buf));
	/* the shim is in effect */
	atomic_store(&watch_fd, fd);
	cr_assert_eq(pwrite(fd, buf, 10, 0), 10);
	cr_assert_eq(atomic_load(&ncalls), 1, "the pwrite shim is not in effect");
	atomic_store(&watch_fd, -1);

	cr_expect_str_eq(calls_on(io, fd, buf, 4096, 0, true), "WS",
			 "write+fdatasync made the calls %s", calls);
	cr_expect_str_eq(calls_on(io, fd, buf, 4096, 4096, false), "W",
			 "a write without sync made the calls %s", calls);
	int ro = open_file("calls", O_RDONLY);
	cr_expect_str_eq(calls_on(io, ro, buf, 4096, 0, true), "W",
			 "a failed write with sync made the calls %s", calls);
	close(ro);
	close(fd);
	io->ops->destroy(io);
}

/* ---- the WAL on a real engine whose writes hit the file size limit ------- */

#define MAXLEN 1500

struct acks {
	uint32_t gen[256]; /* acknowledged generation + 1 per index */
	int failures;
	int last_err;
};

struct call {
	struct acks *a;
	uint64_t first, last;
	uint32_t gen;
};

static void on_done(void *arg, uint64_t last, int status)
{
	struct call *c = arg;
	if (status == 0) {
		for (uint64_t i = c->first; i <= c->last; i++)
			c->a->gen[i] = c->gen + 1;
	} else {
		c->a->failures++;
		c->a->last_err = status;
	}
	free(c);
}

static int append(struct keel_wal *w, struct acks *a, uint64_t idx, uint32_t gen)
{
	static uint8_t b[MAXLEN + 1];
	struct keel_wal_entry e = walt_entry(b, idx, gen, MAXLEN);
	struct call *c = malloc(sizeof(*c));
	*c = (struct call){a, idx, idx, gen};
	int rc = keel_wal_append(w, &e, 1, on_done, c);
	if (rc)
		free(c);
	return rc;
}

static struct keel_wal *open_wal(enum keel_wal_engine eng)
{
	struct keel_wal_io *io = backend(eng);
	struct keel_wal *w;
	struct keel_wal_config cfg = {.segment_size = 64 * 1024, .max_batch = 8192, .buffered = true};
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_wal_open(&w, io, &cfg, err), 0, "%s", err);
	return w;
}

static void check_log(struct keel_wal *w, const struct acks *a, uint64_t last, const char *what)
{
	struct walt_log l = {0};
	cr_assert_eq(walt_read(w, &l, MAXLEN), 0, "%s: %s", what, keel_wal_errmsg(w));
	cr_assert_eq(l.bad, 0, "%s", what);
	cr_assert_eq(l.gap, 0, "%s", what);
	cr_assert_eq(l.first, 1, "%s", what);
	cr_assert_eq(l.last, last, "%s: log ends at %lu, expected %lu", what, (unsigned long)l.last,
		     (unsigned long)last);
	for (uint64_t i = 1; i <= last; i++)
		cr_assert_eq(l.gen[i - 1] + 1, a->gen[i],
			     "%s: index %lu holds generation %u, acknowledged %u", what,
			     (unsigned long)i, l.gen[i - 1], a->gen[i] - 1);
	free(l.gen);
}

static void limit_then_continue(enum keel_wal_engine eng)
{
	static struct acks a;
	memset(&a, 0, sizeof(a));
	struct keel_wal *w = open_wal(eng);
	for (uint64_t i = 1; i <= 40; i++)
		cr_assert_eq(append(w, &a, i, 0), 0, "%s", keel_wal_errmsg(w));
	cr_assert_eq(keel_wal_flush(w), 0);
	cr_assert_eq(keel_wal_durable_index(w), 40);
	/* the next segment write crosses the limit: first a short write,
	 * then EFBIG for the rest */
	struct dirent *de;
	DIR *d = opendir(dir);
	char newest[32] = "";
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".seg") && strcmp(de->d_name, newest) > 0)
			snprintf(newest, sizeof(newest), "%.31s", de->d_name);
	closedir(d);
	char p[128];
	snprintf(p, sizeof(p), "%s/%s", dir, newest);
	int fd = open(p, O_RDONLY);
	static uint8_t img[64 * 1024];
	ssize_t n = pread(fd, img, sizeof(img), 0);
	close(fd);
	struct keel_wal_scan s;
	cr_assert_eq(keel_wal_seg_scan(img, (size_t)n, &s, NULL, NULL), 0);
	cr_assert_lt(s.end + 1000, sizeof(img), "no room left in %s", newest);
	set_fsize_limit(s.end + 20); /* less than a record header */
	uint64_t next = 41;
	for (int k = 0; k < 6; k++)
		if (append(w, &a, next, 1) == 0)
			next++;
	int rc = keel_wal_flush(w);
	cr_assert(rc == -EFBIG, "flush: %s (%s)", keel_strerror(rc), keel_wal_errmsg(w));
	cr_assert_gt(a.failures, 0);
	cr_assert_eq(a.last_err, -EFBIG);
	for (uint64_t i = 41; i < next; i++)
		cr_assert_eq(a.gen[i], 0, "index %lu acknowledged past the limit", (unsigned long)i);
	cr_assert_eq(keel_wal_last_index(w), 40, "the log goes back to its durable end");
	/* while the limit holds, appends keep failing (the cut of the failed
	 * region cannot reallocate past it) or fail at write time */
	rc = append(w, &a, 41, 2);
	if (rc == 0)
		cr_assert_eq(keel_wal_flush(w), -EFBIG);
	else
		cr_assert_eq(rc, -EFBIG, "%s", keel_strerror(rc));
	/* the limit goes: the log continues from its durable end */
	set_fsize_limit(RLIM_INFINITY);
	for (uint64_t i = 41; i <= 60; i++)
		cr_assert_eq(append(w, &a, i, 3), 0, "%s", keel_wal_errmsg(w));
	cr_assert_eq(keel_wal_flush(w), 0, "%s", keel_wal_errmsg(w));
	check_log(w, &a, 60, "after the limit");
	keel_wal_close(w);
	w = open_wal(eng);
	check_log(w, &a, 60, "reopened");
	keel_wal_close(w);
}

Test(wal_backend, file_size_limit_fails_appends_then_the_log_continues_io_uring)
{
	limit_then_continue(KEEL_WAL_ENGINE_URING);
}

Test(wal_backend, file_size_limit_fails_appends_then_the_log_continues_thread)
{
	limit_then_continue(KEEL_WAL_ENGINE_THREAD);
}
