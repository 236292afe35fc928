/* keel_fileq: a private io_uring for file I/O (include/keel/runtime.h), for
 * code that blocks for its own requests: the WAL's group commit
 * (consensus/wal/wal_io.c) and map-reduce's spills. It is its own ring, not
 * the shard's, so a blocking wait never reaps (and runs) the shard's
 * completions out of the loop.
 *
 * A write with datasync is two SQEs: the write carries IOSQE_IO_LINK, so
 * the IORING_FSYNC_DATASYNC after it runs only if the whole write
 * succeeded (a short write breaks the link and the fsync completes with
 * -ECANCELED, reported as "did not run").
 *
 * Mutants (tests/mutants, layer 'wal'): this file is rebuilt with the WAL's
 * sources, since the WAL's ordering guarantee lives here. */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

#include "keel/runtime.h"

struct keel_fileq {
	struct io_uring ring;
	unsigned depth, inflight;
};

#define TAG_SYNC 1ul

int keel_fileq_new(unsigned depth, int event_fd, struct keel_fileq **out, char *errmsg)
{
	*out = NULL;
	char why[KEEL_ERRMSG_LEN];
	if (keel_reactor_default(why) == KEEL_REACTOR_EPOLL)
		return keel_errmsg_set(errmsg, KEEL_ENOTSUP, "io_uring not used: %s", why);
	struct keel_fileq *q = calloc(1, sizeof(*q));
	if (!q)
		return keel_errmsg_set(errmsg, -ENOMEM, "fileq");
	q->depth = depth ? depth : 32;
	int rc = io_uring_queue_init(2 * q->depth, &q->ring, 0);
	if (rc < 0) {
		free(q);
		return keel_errmsg_set(errmsg, rc, "io_uring_queue_init");
	}
	if (event_fd >= 0 && (rc = io_uring_register_eventfd(&q->ring, event_fd)) < 0) {
		io_uring_queue_exit(&q->ring);
		free(q);
		return keel_errmsg_set(errmsg, rc, "io_uring_register_eventfd");
	}
	*out = q;
	return 0;
}

int keel_fileq_submit(struct keel_fileq *q, struct keel_fileq_req *req)
{
	bool sync = req->op == KEEL_FILEQ_WRITE && req->datasync;
	unsigned need = sync ? 2 : 1;
	if (q->inflight >= q->depth)
		return -EAGAIN;
	if (io_uring_sq_space_left(&q->ring) < need) {
		int rc = io_uring_submit(&q->ring);
		if (rc < 0)
			return rc;
		if (io_uring_sq_space_left(&q->ring) < need)
			return -EAGAIN;
	}
	req->res = 0;
	req->sync_res = 1;
	struct io_uring_sqe *sqe;
	if (req->op == KEEL_FILEQ_READ) {
		sqe = io_uring_get_sqe(&q->ring);
		io_uring_prep_read(sqe, req->fd, req->buf, req->len, req->off);
		io_uring_sqe_set_data(sqe, req);
	} else {
#ifdef KEEL_MUTANT_WAL_URING_SYNC_FIRST
		/* MUTANT: the fdatasync goes first, the write linked after it. */
		if (sync) {
			sqe = io_uring_get_sqe(&q->ring);
			io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
			io_uring_sqe_set_data(sqe, (void *)((uintptr_t)req | TAG_SYNC));
			sqe->flags |= IOSQE_IO_LINK;
		}
		sqe = io_uring_get_sqe(&q->ring);
		io_uring_prep_write(sqe, req->fd, req->buf, req->len, req->off);
		io_uring_sqe_set_data(sqe, req);
#else
		sqe = io_uring_get_sqe(&q->ring);
		io_uring_prep_write(sqe, req->fd, req->buf, req->len, req->off);
		io_uring_sqe_set_data(sqe, req);
		if (sync) {
#ifndef KEEL_MUTANT_WAL_URING_SYNC_UNLINKED /* MUTANT: the sync is not linked */
			sqe->flags |= IOSQE_IO_LINK;
#endif
			sqe = io_uring_get_sqe(&q->ring);
			io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
			io_uring_sqe_set_data(sqe, (void *)((uintptr_t)req | TAG_SYNC));
		}
#endif
	}
	req->left_ = need; /* CQEs still to come */
	q->inflight++;
	/* The SQEs are in the ring now; if the kernel refuses them for the
	 * moment (EAGAIN, EBUSY), keel_fileq_reap submits them again before
	 * waiting. */
	int rc = io_uring_submit(&q->ring);
	if (rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR)
		keel_warn("fileq: io_uring_submit: %s (will retry)", keel_strerror(rc));
	return 0;
}

int keel_fileq_reap(struct keel_fileq *q, unsigned min_complete)
{
	int done = 0;
	for (;;) {
		struct io_uring_cqe *cqe;
		int rc;
		if (io_uring_sq_ready(&q->ring))
			io_uring_submit(&q->ring);
		if ((unsigned)done < min_complete && q->inflight) {
			rc = io_uring_wait_cqe(&q->ring, &cqe);
			if (rc == -EINTR)
				continue;
		} else {
			rc = io_uring_peek_cqe(&q->ring, &cqe);
		}
		if (rc == -EAGAIN)
			break;
		if (rc < 0)
			return done ? done : rc;
		uintptr_t ud = (uintptr_t)io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(&q->ring, cqe);
		struct keel_fileq_req *req = (void *)(ud & ~TAG_SYNC);
		if (ud & TAG_SYNC) /* -ECANCELED: the write failed or was short */
			req->sync_res = res == -ECANCELED ? 1 : res;
		else
			req->res = res;
		if (--req->left_ == 0) {
			q->inflight--;
			done++;
			req->done(req);
		}
	}
	return done;
}

unsigned keel_fileq_inflight(const struct keel_fileq *q) { return q->inflight; }

void keel_fileq_free(struct keel_fileq *q)
{
	if (!q)
		return;
	while (q->inflight && keel_fileq_reap(q, 1) > 0) {
	}
	io_uring_queue_exit(&q->ring);
	free(q);
}
