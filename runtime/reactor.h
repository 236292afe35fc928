/*
 * runtime/reactor.h — the reactor's backends behind the calls of
 * include/keel/runtime.h (keel_io_*): an ops struct per backend
 * (STYLE.md), one file each (reactor_uring.c, reactor_epoll.c), and one
 * line per backend in the registry of runtime/reactor.c. As Redis's ae.c
 * over ae_epoll.c: nothing outside runtime/ sees a backend's types.
 *
 * Every op runs on the shard's own thread. A backend keeps its state behind
 * shard->reactor; init runs on the shard's thread before shard_init, fini
 * after shard_fini (nothing completes after the loop has ended).
 */
#ifndef KEEL_RUNTIME_REACTOR_H
#define KEEL_RUNTIME_REACTOR_H

#include <stdint.h>

#include "keel/runtime.h"

struct msghdr;
struct sockaddr;

struct keel_reactor_ops {
	const char *name;
	enum keel_reactor_kind kind;
	/* Sets up shard->reactor (entries: io_uring SQ size) and watches
	 * shard->efd, the wake-up eventfd. */
	int (*init)(struct keel_shard *s, unsigned entries, char *errmsg);
	void (*fini)(struct keel_shard *s);
	/* The loop has ended, shard_fini is next: after this returns nothing
	 * touches the memory of requests still in flight (NULL: nothing to
	 * do). */
	void (*quiesce)(struct keel_shard *s);
	/* Submits what was queued and runs the completions that are ready,
	 * without blocking; returns how many ran. */
	unsigned (*reap)(struct keel_shard *s);
	/* Sleeps until something completes, the eventfd is written, or
	 * timeout_ns passes (UINT64_MAX: no timeout; 0: do not sleep). The
	 * completions are run by the next reap. */
	void (*wait)(struct keel_shard *s, uint64_t timeout_ns);

	void (*recv)(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len);
	void (*recv_multi)(struct keel_shard *s, struct keel_io_op *op, int fd);
	void (*sendmsg)(struct keel_shard *s, struct keel_io_op *op, int fd,
			const struct msghdr *msg);
	void (*connect)(struct keel_shard *s, struct keel_io_op *op, int fd,
			const struct sockaddr *sa, uint32_t salen);
	void (*accept_multi)(struct keel_shard *s, struct keel_io_op *op, int fd);
	void (*poll_multi)(struct keel_shard *s, struct keel_io_op *op, int fd, uint32_t events);
	void (*read)(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len,
		     uint64_t off);
	void (*write)(struct keel_shard *s, struct keel_io_op *op, int fd, const void *buf,
		      uint32_t len, uint64_t off);
	void (*fdatasync)(struct keel_shard *s, struct keel_io_op *op, int fd);
	void (*cancel)(struct keel_shard *s, struct keel_io_op *op);
	void (*cancel_fd)(struct keel_shard *s, int fd);
};

extern const struct keel_reactor_ops keel_reactor_uring_ops;
extern const struct keel_reactor_ops keel_reactor_epoll_ops;

/* The registry: the backend of that kind (never AUTO), or NULL. */
const struct keel_reactor_ops *keel_reactor_ops_of(enum keel_reactor_kind kind);

/* Size of the reactor-owned buffers keel_io_recv_multi fills. */
#define KEEL_REACTOR_RECV_BUF (64u << 10)

#endif
