/* The reactor's front: the registry of backends, the choice between them
 * (once per process for AUTO), and the keel_io_* calls, which only
 * dispatch to the shard's backend (runtime/reactor.h). */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/reactor.h"
#include "runtime/runtime_internal.h"

/* The registry, one line per backend. */
static const struct keel_reactor_ops *const reactors[] = {
	&keel_reactor_uring_ops,
	&keel_reactor_epoll_ops,
};

const struct keel_reactor_ops *keel_reactor_ops_of(enum keel_reactor_kind kind)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(reactors); i++)
		if (reactors[i]->kind == kind)
			return reactors[i];
	return NULL;
}

const char *keel_reactor_name(enum keel_reactor_kind kind)
{
	const struct keel_reactor_ops *o = keel_reactor_ops_of(kind);
	return o ? o->name : "auto";
}

int keel_reactor_parse(const char *name, enum keel_reactor_kind *out)
{
	if (!strcmp(name, "io_uring") || !strcmp(name, "uring"))
		*out = KEEL_REACTOR_IO_URING;
	else if (!strcmp(name, "epoll"))
		*out = KEEL_REACTOR_EPOLL;
	else if (!strcmp(name, "auto"))
		*out = KEEL_REACTOR_AUTO;
	else
		return KEEL_EBADINPUT;
	return 0;
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static enum keel_reactor_kind default_kind;
static char default_reason[KEEL_ERRMSG_LEN];

/* Runs once per process. The probe is what every shard would do next: an
 * io_uring_setup. Only ENOSYS (no io_uring in this kernel, or podman's
 * seccomp profile) and EPERM (Docker >= 25, containerd 2.0,
 * kernel.io_uring_disabled) mean "refused"; anything else (ENOMEM under a
 * small RLIMIT_MEMLOCK, ...) stays io_uring so the shard reports it. */
static void resolve_default(void)
{
	const char *env = getenv("KEEL_REACTOR");
	if (env && *env) {
		enum keel_reactor_kind k;
		if (keel_reactor_parse(env, &k) == 0 && k != KEEL_REACTOR_AUTO) {
			default_kind = k;
			snprintf(default_reason, sizeof(default_reason), "forced by KEEL_REACTOR=%s",
				 env);
			return;
		}
		if (keel_reactor_parse(env, &k) != 0)
			keel_warn("reactor: KEEL_REACTOR=%s is not io_uring, epoll or auto: ignored",
				  env);
	}
	struct io_uring r;
	int rc = io_uring_queue_init(2, &r, 0);
	if (rc == 0) {
		io_uring_queue_exit(&r);
		default_kind = KEEL_REACTOR_IO_URING;
		snprintf(default_reason, sizeof(default_reason), "io_uring_setup works");
	} else if (rc == -ENOSYS || rc == -EPERM) {
		default_kind = KEEL_REACTOR_EPOLL;
		snprintf(default_reason, sizeof(default_reason), "io_uring refused: io_uring_setup: %s",
			 keel_strerror(rc));
		keel_warn("reactor: %s; running on epoll, file I/O on helper threads",
			  default_reason);
	} else {
		default_kind = KEEL_REACTOR_IO_URING;
		snprintf(default_reason, sizeof(default_reason),
			 "io_uring_setup failed with '%s', which is not a refusal", keel_strerror(rc));
	}
}

enum keel_reactor_kind keel_reactor_default(char *reason)
{
	pthread_once(&default_once, resolve_default);
	if (reason)
		snprintf(reason, KEEL_ERRMSG_LEN, "%s", default_reason);
	return default_kind;
}

enum keel_reactor_kind keel_runtime_reactor(const struct keel_runtime *rt)
{
	return rt->reactor->kind;
}

/* ---- the calls: dispatch to the shard's backend ---- */

void keel_io_recv(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len)
{
	op->shard_ = s;
	s->rops->recv(s, op, fd, buf, len);
}

void keel_io_recv_multi(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	op->shard_ = s;
	s->rops->recv_multi(s, op, fd);
}

void keel_io_sendmsg(struct keel_shard *s, struct keel_io_op *op, int fd, const struct msghdr *msg)
{
	op->shard_ = s;
	s->rops->sendmsg(s, op, fd, msg);
}

void keel_io_connect(struct keel_shard *s, struct keel_io_op *op, int fd,
		     const struct sockaddr *sa, uint32_t salen)
{
	op->shard_ = s;
	s->rops->connect(s, op, fd, sa, salen);
}

void keel_io_accept_multi(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	op->shard_ = s;
	s->rops->accept_multi(s, op, fd);
}

void keel_io_poll_multi(struct keel_shard *s, struct keel_io_op *op, int fd, uint32_t events)
{
	op->shard_ = s;
	s->rops->poll_multi(s, op, fd, events);
}

void keel_io_read(struct keel_shard *s, struct keel_io_op *op, int fd, void *buf, uint32_t len,
		  uint64_t off)
{
	op->shard_ = s;
	s->rops->read(s, op, fd, buf, len, off);
}

void keel_io_write(struct keel_shard *s, struct keel_io_op *op, int fd, const void *buf,
		   uint32_t len, uint64_t off)
{
	op->shard_ = s;
	s->rops->write(s, op, fd, buf, len, off);
}

void keel_io_fdatasync(struct keel_shard *s, struct keel_io_op *op, int fd)
{
	op->shard_ = s;
	s->rops->fdatasync(s, op, fd);
}

void keel_io_cancel(struct keel_shard *s, struct keel_io_op *op) { s->rops->cancel(s, op); }

void keel_io_cancel_fd(struct keel_shard *s, int fd) { s->rops->cancel_fd(s, fd); }
