/* The io_uring backend of the reactor: one ring per shard, created on the
 * shard's thread (IORING_SETUP_SINGLE_ISSUER). Requests are SQEs whose
 * user_data is the keel_io_op; the loop submits them once per iteration
 * and runs one completion per CQE. The wake-up eventfd is read by an SQE
 * of our own, re-armed after each wake-up.
 *
 * keel_io_recv_multi is a multishot recv taking buffers from one ring of
 * provided buffers per shard (kernel >= 5.19), registered at the first
 * such request. The kernel takes provided buffers in ring order (FIFO), so
 * a buffer is reused only after every other one: the ring's whole size is
 * the memory receives cycle through. 128 x 64 KiB (8 MiB, the TCP
 * backend's first version) made every large receive land in memory that
 * had left the caches; 16 x 64 KiB (1 MiB) stays within a core's L2.
 * Buffers go back to the ring as soon as the completion returns. Where the
 * kernel refuses the ring, each such request gets a 64 KiB buffer of its
 * own and a single-shot recv that this file re-arms after each completion,
 * which the caller sees as the same multishot stream. */
#include <errno.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime/reactor.h"
#include "runtime/runtime_internal.h"

#define BUFRING_ENTRIES 16 /* power of two */
#define BUFRING_BGID 0     /* one buffer group per shard ring */

enum { K_PLAIN = 0, K_RECV_BUF, K_RECV_EMU, K_EFD, K_ERR };

struct uring {
	struct io_uring ring;
	struct keel_io_op efd_op;
	uint64_t efd_buf;
	bool efd_armed;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	bool br_tried, br_ok;
};

static struct uring *U(struct keel_shard *s) { return s->reactor; }

/* An SQE whose user_data points at op. Never NULL: a full SQ is submitted
 * first. op == NULL: no completion wanted. */
static struct io_uring_sqe *get_sqe(struct keel_shard *s, struct keel_io_op *op)
{
	struct uring *u = U(s);
	struct io_uring_sqe *sqe;
	while (!(sqe = io_uring_get_sqe(&u->ring))) {
		int rc = io_uring_submit(&u->ring);
		if (rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR) {
			keel_error("shard %u: io_uring_submit: %s", s->id, keel_strerror(rc));
			abort();
		}
		if (rc <= 0) {
			/* CQ overflowing: make room by reaping. */
			io_uring_get_events(&u->ring);
		}
	}
	io_uring_sqe_set_data(sqe, op);
	return sqe;
}

static void arm_efd(struct keel_shard *s)
{
	struct uring *u = U(s);
	u->efd_op.kind_ = K_EFD;
	u->efd_op.shard_ = s;
	struct io_uring_sqe *sqe = get_sqe(s, &u->efd_op);
	io_uring_prep_read(sqe, s->efd, &u->efd_buf, sizeof(u->efd_buf), 0);
	u->efd_armed = true;
}

static void efd_complete(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	(void)flags;
	struct keel_shard *s = op->shard_;
	U(s)->efd_armed = false;
	if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
		keel_warn("shard %u: eventfd read failed: %s", s->id, keel_strerror(res));
		return;
	}
	if (!atomic_load_explicit(&s->rt->stop, memory_order_relaxed))
		arm_efd(s);
}

static int ur_init(struct keel_shard *s, unsigned entries, char *em)
{
	struct uring *u = calloc(1, sizeof(*u));
	if (!u)
		return keel_errmsg_set(em, -ENOMEM, "shard %u: reactor", s->id);
	int rc = io_uring_queue_init(entries, &u->ring, IORING_SETUP_SINGLE_ISSUER);
	if (rc == -EINVAL)
		rc = io_uring_queue_init(entries, &u->ring, 0);
	if (rc < 0) {
		free(u);
		return keel_errmsg_set(em, rc, "shard %u: io_uring_queue_init(%u)", s->id, entries);
	}
	s->reactor = u;
	u->efd_op.complete = efd_complete;
	arm_efd(s);
	return 0;
}

static void ur_fini(struct keel_shard *s)
{
	struct uring *u = U(s);
	if (!u)
		return;
	if (u->br_ok) {
		io_uring_unregister_buf_ring(&u->ring, BUFRING_BGID);
		munmap(u->br, BUFRING_ENTRIES * sizeof(struct io_uring_buf));
		munmap(u->bufs, (size_t)BUFRING_ENTRIES * KEEL_REACTOR_RECV_BUF);
	}
	io_uring_queue_exit(&u->ring);
	free(u);
	s->reactor = NULL;
}

static void buf_recycle(struct uring *u, unsigned bid)
{
	io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * KEEL_REACTOR_RECV_BUF,
			      KEEL_REACTOR_RECV_BUF, (unsigned short)bid,
			      io_uring_buf_ring_mask(BUFRING_ENTRIES), 0);
	io_uring_buf_ring_advance(u->br, 1);
}

static void emu_arm(struct keel_shard *s, struct keel_io_op *op);

/* One CQE. op may be freed by its completion: read what we need first. */
static void dispatch(struct keel_shard *s, struct keel_io_op *op, int32_t res, uint32_t fl)
{
	struct uring *u = U(s);
	uint32_t kf = (fl & IORING_CQE_F_MORE) ? KEEL_IO_MORE : 0;
	switch (op->kind_) {
	case K_RECV_BUF:
		if (fl & IORING_CQE_F_BUFFER) {
			unsigned bid = fl >> IORING_CQE_BUFFER_SHIFT;
			op->data = u->bufs + (size_t)bid * KEEL_REACTOR_RECV_BUF;
			op->complete(op, res, kf);
			buf_recycle(u, bid);
		} else {
			op->data = NULL;
			op->complete(op, res, kf);
		}
		break;
	case K_RECV_EMU: {
		uint8_t *buf = op->buf_;
		op->data = buf;
		if (res > 0) {
			/* more to come: the caller sees a multishot stream */
			op->complete(op, res, KEEL_IO_MORE);
			if (!op->state_) {
				emu_arm(s, op);
				break;
			}
			res = -ECANCELED; /* cancelled while its data was delivered */
		}
		op->buf_ = NULL;
		op->complete(op, res, 0);
		free(buf);
		break;
	}
	case K_ERR:
		op->complete(op, op->res_, 0);
		break;
	default:
		op->complete(op, res, kf);
	}
}

static unsigned ur_reap(struct keel_shard *s)
{
	struct uring *u = U(s);
	if (io_uring_sq_ready(&u->ring))
		io_uring_submit(&u->ring);
	unsigned total = 0;
	struct io_uring_cqe *cqes[64];
	for (;;) {
		unsigned n = io_uring_peek_batch_cqe(&u->ring, cqes, KEEL_ARRAY_LEN(cqes));
		if (!n)
			break;
		for (unsigned i = 0; i < n; i++) {
			struct keel_io_op *op = io_uring_cqe_get_data(cqes[i]);
			if (op)
				dispatch(s, op, cqes[i]->res, cqes[i]->flags);
		}
		io_uring_cq_advance(&u->ring, n);
		total += n;
		if (n < KEEL_ARRAY_LEN(cqes))
			break;
	}
	return total;
}

static void ur_wait(struct keel_shard *s, uint64_t d)
{
	struct uring *u = U(s);
	if (!u->efd_armed)
		arm_efd(s);
	struct io_uring_cqe *cqe;
	if (d == UINT64_MAX) {
		io_uring_submit_and_wait(&u->ring, 1);
	} else if (d > 0) {
		struct __kernel_timespec ts = {.tv_sec = (long long)(d / 1000000000u),
					       .tv_nsec = (long long)(d % 1000000000u)};
		/* -ETIME: the timer is due */
		io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
	}
}

static void prep(struct keel_io_op *op, unsigned kind)
{
	op->kind_ = kind;
	op->state_ = 0;
	op->data = NULL;
}

static void ur_recv(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len)
{
	prep(op, K_PLAIN);
	io_uring_prep_recv(get_sqe(s, op), fd, buf, len, 0);
}

/* Registered at the first keel_io_recv_multi of the shard. */
static bool setup_bufring(struct keel_shard *s)
{
	struct uring *u = U(s);
	if (u->br_tried)
		return u->br_ok;
	u->br_tried = true;
	size_t ring_bytes = BUFRING_ENTRIES * sizeof(struct io_uring_buf);
	void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
			  -1, 0);
	if (ring == MAP_FAILED)
		return false;
	size_t bytes = (size_t)BUFRING_ENTRIES * KEEL_REACTOR_RECV_BUF;
	/* Populated now: a first touch would otherwise fault inside receives. */
	void *bufs = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			  MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, -1, 0);
	if (bufs == MAP_FAILED) {
		munmap(ring, ring_bytes);
		return false;
	}
	struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)ring,
				       .ring_entries = BUFRING_ENTRIES, .bgid = BUFRING_BGID};
	int rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
	if (rc < 0) {
		keel_info("shard %u: no io_uring buffer ring (%s): single-shot receives", s->id,
			  keel_strerror(rc));
		munmap(ring, ring_bytes);
		munmap(bufs, bytes);
		return false;
	}
	u->br = ring;
	u->bufs = bufs;
	io_uring_buf_ring_init(u->br);
	for (unsigned i = 0; i < BUFRING_ENTRIES; i++)
		io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * KEEL_REACTOR_RECV_BUF,
				      KEEL_REACTOR_RECV_BUF, (unsigned short)i,
				      io_uring_buf_ring_mask(BUFRING_ENTRIES), (int)i);
	io_uring_buf_ring_advance(u->br, BUFRING_ENTRIES);
	u->br_ok = true;
	return true;
}

static void emu_arm(struct keel_shard *s, struct keel_io_op *op)
{
	io_uring_prep_recv(get_sqe(s, op), op->fd_, op->buf_, KEEL_REACTOR_RECV_BUF, 0);
}

static void ur_recv_multi(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	if (setup_bufring(s)) {
		prep(op, K_RECV_BUF);
		struct io_uring_sqe *sqe = get_sqe(s, op);
		io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = BUFRING_BGID;
		return;
	}
	prep(op, K_RECV_EMU);
	op->fd_ = fd;
	op->buf_ = malloc(KEEL_REACTOR_RECV_BUF);
	if (!op->buf_) {
		/* a NOP carries the error back through the loop */
		op->kind_ = K_ERR;
		op->res_ = -ENOMEM;
		io_uring_prep_nop(get_sqe(s, op));
		return;
	}
	emu_arm(s, op);
}

static void ur_sendmsg(struct keel_shard *s, struct keel_io_op *op, int fd,
		       const struct msghdr *msg)
{
	prep(op, K_PLAIN);
	io_uring_prep_sendmsg(get_sqe(s, op), fd, msg, MSG_NOSIGNAL);
}

static void ur_connect(struct keel_shard *s, struct keel_io_op *op, int fd,
		       const struct sockaddr *sa, uint32_t salen)
{
	prep(op, K_PLAIN);
	io_uring_prep_connect(get_sqe(s, op), fd, sa, salen);
}

static void ur_accept_multi(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	prep(op, K_PLAIN);
	io_uring_prep_multishot_accept(get_sqe(s, op), fd, NULL, NULL, SOCK_CLOEXEC);
}

static void ur_poll_multi(struct keel_shard *s, struct keel_io_op *op, int fd, uint32_t events)
{
	prep(op, K_PLAIN);
	io_uring_prep_poll_multishot(get_sqe(s, op), fd, events);
}

static void ur_read(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len,
		    uint64_t off)
{
	prep(op, K_PLAIN);
	io_uring_prep_read(get_sqe(s, op), fd, buf, len, off);
}

static void ur_write(struct keel_shard *s, struct keel_io_op *op, int fd, const void *buf,
		     uint32_t len, uint64_t off)
{
	prep(op, K_PLAIN);
	io_uring_prep_write(get_sqe(s, op), fd, buf, len, off);
}

static void ur_fdatasync(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	prep(op, K_PLAIN);
	io_uring_prep_fsync(get_sqe(s, op), fd, IORING_FSYNC_DATASYNC);
}

static void ur_cancel(struct keel_shard *s, struct keel_io_op *op)
{
	if (op->kind_ == K_RECV_EMU)
		op->state_ = 1; /* do not re-arm after the next completion */
	io_uring_prep_cancel(get_sqe(s, NULL), op, 0);
}

static void ur_cancel_fd(struct keel_shard *s, int fd)
{
	io_uring_prep_cancel_fd(get_sqe(s, NULL), fd, IORING_ASYNC_CANCEL_ALL);
}

const struct keel_reactor_ops keel_reactor_uring_ops = {
	.name = "io_uring",
	.kind = KEEL_REACTOR_IO_URING,
	.init = ur_init,
	.fini = ur_fini,
	.reap = ur_reap,
	.wait = ur_wait,
	.recv = ur_recv,
	.recv_multi = ur_recv_multi,
	.sendmsg = ur_sendmsg,
	.connect = ur_connect,
	.accept_multi = ur_accept_multi,
	.poll_multi = ur_poll_multi,
	.read = ur_read,
	.write = ur_write,
	.fdatasync = ur_fdatasync,
	.cancel = ur_cancel,
	.cancel_fd = ur_cancel_fd,
};
