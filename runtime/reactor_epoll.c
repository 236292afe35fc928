/* The epoll backend of the reactor, for where io_uring is refused
 * (container seccomp profiles answer ENOSYS or EPERM) or KEEL_REACTOR=epoll
 * asks for it. The same calls, the same completion rules as the io_uring
 * backend (include/keel/runtime.h): nothing completes inside the
 * submitting call, every request ends with one completion without
 * KEEL_IO_MORE, a cancel ends it with -ECANCELED.
 *
 * Sockets: readiness plus non-blocking calls. A request first goes to the
 * run list; the next reap tries its syscall (MSG_DONTWAIT, or a
 * non-blocking fd); EAGAIN parks it on its fd's waiters for that direction
 * and the fd's epoll interest follows the waiters. epoll is level-triggered,
 * so a parked multishot request sees data that was left behind. The
 * interest is brought up to date at the end of each reap, not per request,
 * so a receive that is re-parked in the same pass costs no epoll_ctl; when
 * a request ends, its fd leaves the epoll set at once, since the caller may
 * close the fd in the completion and a new fd of the same number must not
 * inherit a registration the kernel already dropped.
 *
 * Files: regular files are always "ready" to epoll (it refuses them), so
 * read, write and fdatasync run on a small pool of helper threads shared by
 * every shard of the process (two threads: file I/O is the WAL's fallback
 * path and map-reduce's input; the WAL keeps a helper thread of its own).
 * A finished request goes to its shard's done list and the shard's eventfd
 * is written, so a sleeping shard wakes.
 *
 * Ownership: all of it belongs to the shard's thread except the done list
 * (under the pool's mutex) and the pool itself: process-wide, started at
 * the first file request and kept until the process exits (two idle
 * threads cost nothing, and a pool that stops and restarts would race a
 * second runtime starting in the same process). fini drops the shard's
 * queued pool jobs and waits for its running ones, so no pool thread
 * touches a shard after its fini.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/reactor.h"
#include "runtime/runtime_internal.h"

enum kind { K_RECV = 1, K_RECV_MULTI, K_SENDMSG, K_CONNECT, K_ACCEPT, K_POLL, K_READ, K_WRITE,
	    K_SYNC };
enum state { S_IDLE = 0, S_RUN, S_WAIT_IN, S_WAIT_OUT, S_POOL, S_ACTIVE };
/* op->aux_ bits */
#define F_FINAL 1u      /* deliver res_ as the last completion */
#define F_CANCELED 2u   /* cancelled during its own callback */
#define F_STARTED 4u    /* connect: connect() returned EINPROGRESS */
#define F_EVSHIFT 8     /* poll: the events asked for, shifted */

#define BATCH 16 /* multishot syscalls per request per pass: fairness */

struct fdent {
	uint32_t registered; /* epoll events in the set; 0 = not in it */
	bool dirty;
	struct keel_io_op *in, *out; /* waiters, doubly linked */
};

struct ep {
	struct keel_shard *s;
	int epfd;
	struct fdent *fds;
	unsigned nfds;
	int *dirty;
	unsigned ndirty, dirty_cap;
	struct keel_io_op *run_head, *run_tail;
	struct keel_io_op *pending; /* the rest of the run list this reap runs */
	struct keel_io_op *active; /* in its (multishot) callback */
	bool just_waited;
	uint8_t *rbuf; /* recv_multi: KEEL_REACTOR_RECV_BUF, filled per completion */
	/* pool side, under pool.mu */
	struct keel_io_op *done_head, *done_tail;
	unsigned pool_running;
	bool pool_used;
	_Atomic int done_pending;
};

static struct ep *E(struct keel_shard *s) { return s->reactor; }

/* ---- the process-wide pool for file I/O ---- */

#define POOL_THREADS 2

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv, idle;
	struct keel_io_op *head, *tail;
	unsigned nth;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
	  .idle = PTHREAD_COND_INITIALIZER};

static void *pool_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pool.mu);
	for (;;) {
		while (!pool.head)
			pthread_cond_wait(&pool.cv, &pool.mu);
		struct keel_io_op *op = pool.head;
		pool.head = op->next_;
		if (!pool.head)
			pool.tail = NULL;
		struct ep *e = E(op->shard_);
		e->pool_running++;
		pthread_mutex_unlock(&pool.mu);

		ssize_t n;
		if (op->kind_ == K_READ)
			n = pread(op->fd_, op->buf_, op->len_, (off_t)op->off_);
		else if (op->kind_ == K_WRITE)
			n = pwrite(op->fd_, op->buf_, op->len_, (off_t)op->off_);
		else
			n = fdatasync(op->fd_);
		op->res_ = n >= 0 ? (int32_t)n : -errno;

		pthread_mutex_lock(&pool.mu);
		op->next_ = NULL;
		if (e->done_tail)
			e->done_tail->next_ = op;
		else
			e->done_head = op;
		e->done_tail = op;
		e->pool_running--;
		atomic_store_explicit(&e->done_pending, 1, memory_order_release);
		pthread_cond_broadcast(&pool.idle);
		/* Always written, not through keel_shard_wake: the shard may be
		 * between its re-check and its epoll wait. */
		uint64_t one = 1;
		ssize_t w = write(op->shard_->efd, &one, sizeof(one));
		(void)w;
	}
	pthread_mutex_unlock(&pool.mu);
	return NULL;
}

/* Under pool.mu: starts the threads once per process. */
static int pool_start(char *em)
{
	while (pool.nth < POOL_THREADS) {
		pthread_t th;
		int rc = pthread_create(&th, NULL, pool_main, NULL);
		if (rc) {
			if (pool.nth > 0)
				break; /* fewer threads still work */
			return keel_errmsg_set(em, -rc, "reactor: file I/O thread");
		}
		pthread_detach(th);
		pool.nth++;
	}
	return 0;
}

static void to_pool(struct keel_shard *s, struct keel_io_op *op)
{
	struct ep *e = E(s);
	op->state_ = S_POOL;
	op->next_ = NULL;
	pthread_mutex_lock(&pool.mu);
	if (!pool.nth) {
		char em[KEEL_ERRMSG_LEN];
		int rc = pool_start(em);
		if (rc) {
			pthread_mutex_unlock(&pool.mu);
			keel_warn("shard %u: %s", s->id, em);
			op->state_ = S_IDLE;
			op->aux_ |= F_FINAL;
			op->res_ = rc;
			op->next_ = NULL;
			if (e->run_tail)
				e->run_tail->next_ = op;
			else
				e->run_head = op;
			e->run_tail = op;
			op->state_ = S_RUN;
			return;
		}
	}
	e->pool_used = true;
	if (pool.tail)
		pool.tail->next_ = op;
	else
		pool.head = op;
	pool.tail = op;
	pthread_cond_signal(&pool.cv);
	pthread_mutex_unlock(&pool.mu);
}

/* ---- fd table and interest ---- */

static struct fdent *fdent(struct ep *e, int fd)
{
	if (fd < 0)
		return NULL;
	if ((unsigned)fd >= e->nfds) {
		unsigned n = e->nfds ? e->nfds : 64;
		while (n <= (unsigned)fd)
			n *= 2;
		struct fdent *f = realloc(e->fds, n * sizeof(*f));
		if (!f)
			return NULL;
		memset(f + e->nfds, 0, (n - e->nfds) * sizeof(*f));
		e->fds = f;
		e->nfds = n;
	}
	return &e->fds[fd];
}

static void mark_dirty(struct ep *e, int fd, struct fdent *f)
{
	if (f->dirty)
		return;
	if (e->ndirty == e->dirty_cap) {
		unsigned cap = e->dirty_cap ? e->dirty_cap * 2 : 64;
		int *d = realloc(e->dirty, cap * sizeof(*d));
		if (!d)
			return; /* the next sync of this fd catches up */
		e->dirty = d;
		e->dirty_cap = cap;
	}
	f->dirty = true;
	e->dirty[e->ndirty++] = fd;
}

static void run_push(struct ep *e, struct keel_io_op *op)
{
	op->state_ = S_RUN;
	op->next_ = NULL;
	if (e->run_tail)
		e->run_tail->next_ = op;
	else
		e->run_head = op;
	e->run_tail = op;
}

/* Queues op's last completion with res. */
static void finish_later(struct ep *e, struct keel_io_op *op, int32_t res)
{
	op->aux_ |= F_FINAL;
	op->res_ = res;
	run_push(e, op);
}

static void waiter_unlink(struct ep *e, struct keel_io_op *op)
{
	struct fdent *f = &e->fds[op->fd_];
	struct keel_io_op **head = op->state_ == S_WAIT_IN ? &f->in : &f->out;
	if (op->prev_)
		op->prev_->next_ = op->next_;
	else
		*head = op->next_;
	if (op->next_)
		op->next_->prev_ = op->prev_;
	op->next_ = op->prev_ = NULL;
	op->state_ = S_IDLE;
	mark_dirty(e, op->fd_, f);
}

/* Makes fd's epoll interest match its waiters. */
static void sync_fd(struct ep *e, int fd)
{
	struct fdent *f = &e->fds[fd];
	f->dirty = false;
	uint32_t want = (f->in ? EPOLLIN | EPOLLRDHUP : 0) | (f->out ? EPOLLOUT : 0);
	if (want == f->registered)
		return;
	struct epoll_event ev = {.events = want, .data.fd = fd};
	int rc = 0;
	if (!want) {
		epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL); /* ENOENT, EBADF: closed already */
	} else if (!f->registered) {
		rc = epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev);
		if (rc < 0 && errno == EEXIST)
			rc = epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev);
	} else {
		rc = epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev);
		if (rc < 0 && errno == ENOENT)
			rc = epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev);
	}
	if (rc < 0) {
		/* EPERM (a regular file), EBADF, ENOMEM: nothing will ever
		 * wake these waiters, so they end with the error. */
		int err = -errno;
		f->registered = 0;
		while (f->in || f->out) {
			struct keel_io_op *op = f->in ? f->in : f->out;
			waiter_unlink(e, op);
			finish_later(e, op, err);
		}
		f->dirty = false;
		return;
	}
	f->registered = want;
}

static void sync_dirty(struct ep *e)
{
	for (unsigned i = 0; i < e->ndirty; i++)
		sync_fd(e, e->dirty[i]);
	e->ndirty = 0;
}

static void park(struct ep *e, struct keel_io_op *op, bool out)
{
	struct fdent *f = fdent(e, op->fd_);
	if (!f) {
		finish_later(e, op, op->fd_ < 0 ? -EBADF : -ENOMEM);
		return;
	}
	struct keel_io_op **head = out ? &f->out : &f->in;
	op->prev_ = NULL;
	op->next_ = *head;
	if (*head)
		(*head)->prev_ = op;
	*head = op;
	op->state_ = out ? S_WAIT_OUT : S_WAIT_IN;
	mark_dirty(e, op->fd_, f);
}

/* The last completion of op. Its fd leaves the epoll set first if nothing
 * else waits on it (see the top of the file). */
static void complete_final(struct ep *e, struct keel_io_op *op, int32_t res)
{
	op->state_ = S_IDLE;
	op->aux_ = 0;
	if (op->kind_ < K_READ && op->fd_ >= 0 && (unsigned)op->fd_ < e->nfds) {
		struct fdent *f = &e->fds[op->fd_];
		if (!f->in && !f->out && f->registered)
			sync_fd(e, op->fd_);
	}
	op->complete(op, res, 0);
}

/* A MORE completion; returns false when the request ended in it (a
 * cancel from its own callback: the final completion has been made). */
static bool complete_more(struct ep *e, struct keel_io_op *op, int32_t res)
{
	op->state_ = S_ACTIVE;
	e->active = op;
	op->complete(op, res, KEEL_IO_MORE);
	e->active = NULL;
	if (op->aux_ & F_CANCELED) {
		complete_final(e, op, -ECANCELED);
		return false;
	}
	op->state_ = S_IDLE;
	return true;
}

/* Tries op's syscall: completes it, or parks it on its fd. */
static void try_op(struct ep *e, struct keel_io_op *op)
{
	op->state_ = S_IDLE;
	if (op->aux_ & F_FINAL) {
		complete_final(e, op, op->res_);
		return;
	}
	ssize_t n;
	switch (op->kind_) {
	case K_RECV:
		n = recv(op->fd_, op->buf_, op->len_, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			park(e, op, false);
		else
			complete_final(e, op, n >= 0 ? (int32_t)n : -errno);
		return;
	case K_SENDMSG:
		n = sendmsg(op->fd_, op->buf_, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			park(e, op, true);
		else
			complete_final(e, op, n >= 0 ? (int32_t)n : -errno);
		return;
	case K_CONNECT:
		if (op->aux_ & F_STARTED) {
			int err = 0;
			socklen_t len = sizeof(err);
			if (getsockopt(op->fd_, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				err = errno;
			complete_final(e, op, -err);
			return;
		}
		if (connect(op->fd_, op->buf_, op->len_) == 0) {
			complete_final(e, op, 0);
		} else if (errno == EINPROGRESS || errno == EINTR) {
			op->aux_ |= F_STARTED;
			park(e, op, true);
		} else {
			complete_final(e, op, -errno);
		}
		return;
	case K_ACCEPT:
		for (int i = 0; i < BATCH; i++) {
			int fd = accept4(op->fd_, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				if (!complete_more(e, op, fd))
					return;
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			complete_final(e, op, -errno);
			return;
		}
		park(e, op, false);
		return;
	case K_RECV_MULTI:
		for (int i = 0; i < BATCH; i++) {
			n = recv(op->fd_, e->rbuf, KEEL_REACTOR_RECV_BUF, MSG_DONTWAIT);
			if (n > 0) {
				op->data = e->rbuf;
				if (!complete_more(e, op, (int32_t)n))
					return;
				/* A short read drained the socket (as far as we
				 * know): park without the recv that would say
				 * EAGAIN; level-triggered epoll reports whatever
				 * came since. Saves a syscall per message. */
				if ((size_t)n < KEEL_REACTOR_RECV_BUF)
					break;
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n < 0 && errno == EINTR)
				continue;
			op->data = NULL;
			complete_final(e, op, n == 0 ? 0 : -errno);
			return;
		}
		park(e, op, false);
		return;
	case K_POLL: {
		uint32_t want = op->aux_ >> F_EVSHIFT;
		if (op->res_) { /* woken with these revents */
			int32_t rev = op->res_;
			op->res_ = 0;
			if (!complete_more(e, op, rev))
				return;
		}
		park(e, op, !(want & POLLIN));
		return;
	}
	default:
		complete_final(e, op, -EINVAL);
	}
}

/* Readiness from epoll: the waiters go to the run list. */
static void on_event(struct ep *e, const struct epoll_event *ev)
{
	int fd = ev->data.fd;
	if (fd == e->s->efd) {
		uint64_t v;
		while (read(fd, &v, sizeof(v)) == sizeof(v)) {
		}
		return;
	}
	if (fd < 0 || (unsigned)fd >= e->nfds)
		return;
	struct fdent *f = &e->fds[fd];
	uint32_t in = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
	uint32_t out = EPOLLOUT | EPOLLHUP | EPOLLERR;
	int16_t rev = (int16_t)(((ev->events & EPOLLIN) ? POLLIN : 0) |
				((ev->events & EPOLLOUT) ? POLLOUT : 0) |
				((ev->events & EPOLLHUP) ? POLLHUP : 0) |
				((ev->events & EPOLLERR) ? POLLERR : 0) |
				((ev->events & EPOLLRDHUP) ? POLLRDHUP : 0));
	for (int dir = 0; dir < 2; dir++) {
		if (!(ev->events & (dir ? out : in)))
			continue;
		struct keel_io_op **head = dir ? &f->out : &f->in;
		while (*head) {
			struct keel_io_op *op = *head;
			waiter_unlink(e, op);
			if (op->kind_ == K_POLL)
				op->res_ = rev & (int16_t)((op->aux_ >> F_EVSHIFT) | POLLHUP | POLLERR);
			run_push(e, op);
		}
	}
}

static unsigned collect(struct ep *e, int timeout_ms, const struct timespec *ts, bool use_ts)
{
	struct epoll_event evs[64];
	int n = use_ts ? epoll_pwait2(e->epfd, evs, 64, ts, NULL)
		       : epoll_wait(e->epfd, evs, 64, timeout_ms);
	if (n < 0 && errno == ENOSYS && use_ts) {
		/* kernel < 5.11: millisecond timeouts, rounded up */
		int ms = ts ? (int)(ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000) : -1;
		n = epoll_wait(e->epfd, evs, 64, ms);
	}
	for (int i = 0; i < n; i++)
		on_event(e, &evs[i]);
	return n > 0 ? (unsigned)n : 0;
}

static unsigned ep_reap(struct keel_shard *s)
{
	struct ep *e = E(s);
	unsigned done = 0;
	if (!e->just_waited)
		collect(e, 0, NULL, false);
	e->just_waited = false;
	if (atomic_load_explicit(&e->done_pending, memory_order_acquire)) {
		atomic_store_explicit(&e->done_pending, 0, memory_order_relaxed);
		pthread_mutex_lock(&pool.mu);
		struct keel_io_op *list = e->done_head;
		e->done_head = e->done_tail = NULL;
		pthread_mutex_unlock(&pool.mu);
		while (list) {
			struct keel_io_op *op = list;
			list = op->next_;
			complete_final(e, op, op->res_);
			done++;
		}
	}
	/* What callbacks queue now runs in the next pass: a request that is
	 * re-armed from its completion must not spin here. */
	e->pending = e->run_head;
	e->run_head = e->run_tail = NULL;
	struct keel_io_op *op;
	while ((op = e->pending)) {
		e->pending = op->next_;
		try_op(e, op);
		done++;
	}
	sync_dirty(e);
	return done;
}

static void ep_wait(struct keel_shard *s, uint64_t d)
{
	struct ep *e = E(s);
	sync_dirty(e);
	if (e->run_head || atomic_load_explicit(&e->done_pending, memory_order_acquire))
		d = 0;
	if (d == 0)
		return;
	if (d == UINT64_MAX) {
		collect(e, -1, NULL, true);
	} else {
		struct timespec ts = {.tv_sec = (time_t)(d / 1000000000u),
				      .tv_nsec = (long)(d % 1000000000u)};
		collect(e, 0, &ts, true);
	}
	e->just_waited = true;
}

static int ep_init(struct keel_shard *s, unsigned entries, char *em)
{
	(void)entries;
	struct ep *e = calloc(1, sizeof(*e));
	if (!e)
		return keel_errmsg_set(em, -ENOMEM, "shard %u: reactor", s->id);
	e->s = s;
	e->rbuf = malloc(KEEL_REACTOR_RECV_BUF);
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!e->rbuf || e->epfd < 0) {
		int rc = e->epfd < 0 ? -errno : -ENOMEM;
		if (e->epfd >= 0)
			close(e->epfd);
		free(e->rbuf);
		free(e);
		return keel_errmsg_set(em, rc, "shard %u: epoll_create1", s->id);
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = s->efd};
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, s->efd, &ev) < 0) {
		int rc = -errno;
		close(e->epfd);
		free(e->rbuf);
		free(e);
		return keel_errmsg_set(em, rc, "shard %u: epoll_ctl(eventfd)", s->id);
	}
	atomic_init(&e->done_pending, 0);
	s->reactor = e;
	return 0;
}

/* Drops this shard's queued pool jobs and waits for its running ones, so
 * that shard_fini may free their buffers (runtime.h: nothing completes
 * after the loop has ended). */
static void ep_quiesce(struct keel_shard *s)
{
	struct ep *e = E(s);
	if (e && e->pool_used) {
		/* Drop this shard's queued jobs, wait for its running ones. */
		pthread_mutex_lock(&pool.mu);
		struct keel_io_op **pp = &pool.head;
		pool.tail = NULL;
		while (*pp) {
			if ((*pp)->shard_ == s) {
				*pp = (*pp)->next_;
			} else {
				pool.tail = *pp;
				pp = &(*pp)->next_;
			}
		}
		while (e->pool_running)
			pthread_cond_wait(&pool.idle, &pool.mu);
		pthread_mutex_unlock(&pool.mu);
		e->pool_used = false;
	}
}

static void ep_fini(struct keel_shard *s)
{
	struct ep *e = E(s);
	if (!e)
		return;
	ep_quiesce(s); /* jobs submitted from shard_fini */
	close(e->epfd);
	free(e->fds);
	free(e->dirty);
	free(e->rbuf);
	free(e);
	s->reactor = NULL;
}

/* ---- submissions ---- */

static void prep(struct keel_io_op *op, unsigned kind, int fd)
{
	op->kind_ = kind;
	op->aux_ = 0;
	op->res_ = 0;
	op->fd_ = fd;
	op->data = NULL;
	op->next_ = op->prev_ = NULL;
}

static void ep_recv(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len)
{
	prep(op, K_RECV, fd);
	op->buf_ = buf;
	op->len_ = len;
	run_push(E(s), op);
}

static void ep_recv_multi(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	prep(op, K_RECV_MULTI, fd);
	run_push(E(s), op);
}

static void ep_sendmsg(struct keel_shard *s, struct keel_io_op *op, int fd,
		       const struct msghdr *msg)
{
	prep(op, K_SENDMSG, fd);
	op->buf_ = (void *)(uintptr_t)msg;
	run_push(E(s), op);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void ep_connect(struct keel_shard *s, struct keel_io_op *op, int fd,
		       const struct sockaddr *sa, uint32_t salen)
{
	prep(op, K_CONNECT, fd);
	set_nonblock(fd); /* connect() must return EINPROGRESS, not block */
	op->buf_ = (void *)(uintptr_t)sa;
	op->len_ = salen;
	run_push(E(s), op);
}

static void ep_accept_multi(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	prep(op, K_ACCEPT, fd);
	/* A connection can vanish between readiness and accept4: on a
	 * blocking socket that would block the shard. */
	set_nonblock(fd);
	run_push(E(s), op);
}

static void ep_poll_multi(struct keel_shard *s, struct keel_io_op *op, int fd, uint32_t events)
{
	prep(op, K_POLL, fd);
	op->aux_ = (events & (POLLIN | POLLOUT)) << F_EVSHIFT;
	run_push(E(s), op);
}

static void ep_read(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len,
		    uint64_t off)
{
	prep(op, K_READ, fd);
	op->buf_ = buf;
	op->len_ = len;
	op->off_ = off;
	to_pool(s, op);
}

static void ep_write(struct keel_shard *s, struct keel_io_op *op, int fd, const void *buf,
		     uint32_t len, uint64_t off)
{
	prep(op, K_WRITE, fd);
	op->buf_ = (void *)(uintptr_t)buf;
	op->len_ = len;
	op->off_ = off;
	to_pool(s, op);
}

static void ep_fdatasync(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	prep(op, K_SYNC, fd);
	to_pool(s, op);
}

static void cancel_op(struct ep *e, struct keel_io_op *op)
{
	switch (op->state_) {
	case S_RUN:
		/* still in the run list: its turn delivers the cancel (or
		 * the result it already has) */
		if (!(op->aux_ & F_FINAL)) {
			op->aux_ |= F_FINAL;
			op->res_ = -ECANCELED;
		}
		break;
	case S_WAIT_IN:
	case S_WAIT_OUT:
		waiter_unlink(e, op);
		finish_later(e, op, -ECANCELED);
		break;
	case S_ACTIVE:
		op->aux_ |= F_CANCELED;
		break;
	default:
		break; /* done, or file I/O already on the pool: it finishes */
	}
}

static void ep_cancel(struct keel_shard *s, struct keel_io_op *op) { cancel_op(E(s), op); }

static void ep_cancel_fd(struct keel_shard *s, int fd)
{
	struct ep *e = E(s);
	if (fd >= 0 && (unsigned)fd < e->nfds) {
		struct fdent *f = &e->fds[fd];
		while (f->in)
			cancel_op(e, f->in);
		while (f->out)
			cancel_op(e, f->out);
	}
	for (int l = 0; l < 2; l++)
		for (struct keel_io_op *op = l ? e->pending : e->run_head; op; op = op->next_)
			if (op->fd_ == fd && op->kind_ < K_READ)
				cancel_op(e, op);
	if (e->active && e->active->fd_ == fd)
		cancel_op(e, e->active);
}

const struct keel_reactor_ops keel_reactor_epoll_ops = {
	.name = "epoll",
	.kind = KEEL_REACTOR_EPOLL,
	.init = ep_init,
	.fini = ep_fini,
	.quiesce = ep_quiesce,
	.reap = ep_reap,
	.wait = ep_wait,
	.recv = ep_recv,
	.recv_multi = ep_recv_multi,
	.sendmsg = ep_sendmsg,
	.connect = ep_connect,
	.accept_multi = ep_accept_multi,
	.poll_multi = ep_poll_multi,
	.read = ep_read,
	.write = ep_write,
	.fdatasync = ep_fdatasync,
	.cancel = ep_cancel,
	.cancel_fd = ep_cancel_fd,
};
