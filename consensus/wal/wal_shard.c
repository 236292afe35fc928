/* Driving a WAL from a shard's reactor (include/keel/runtime.h).
 *
 * The WAL keeps its own I/O queue (one per WAL, so a blocking flush for
 * truncate/compact never reaps the shard's completions); what ties it to the
 * shard is a multishot readiness request (keel_io_poll_multi) in the
 * shard's reactor on the eventfd that the WAL's queue (or its helper
 * thread) signals when a completion is ready. When
 * it fires, keel_wal_poll runs on the shard thread from the loop, so a
 * sleeping shard wakes for WAL completions and durability callbacks run
 * run-to-completion like every other event.
 *
 * Ownership: the reactor struct belongs to the shard thread that attached
 * it. After keel_wal_detach it frees itself when the poll's last CQE
 * arrives, or at once when the runtime is stopping (detach from shard_fini:
 * the loop has ended and will reap nothing more); from detach on it never
 * touches the WAL again, so the WAL may be closed right after detach. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>

#include "keel/runtime.h"
#include "keel/wal.h"

struct keel_wal_reactor {
	struct keel_io_op op;
	struct keel_wal *w;
	struct keel_shard *shard;
	int efd;
	bool armed, detached, in_cb;
};

static void arm(struct keel_wal_reactor *r)
{
	keel_io_poll_multi(r->shard, &r->op, r->efd, POLLIN);
	r->armed = true;
}

static void on_ready(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	struct keel_wal_reactor *r =
		(struct keel_wal_reactor *)((char *)op - offsetof(struct keel_wal_reactor, op));
	if (!(flags & KEEL_IO_MORE))
		r->armed = false;
	if (r->detached) {
		if (!r->armed)
			free(r);
		return;
	}
	if (res < 0 && res != -ECANCELED)
		keel_warn("wal: reactor poll on the WAL event fd: %s", keel_strerror(res));
	r->in_cb = true;
	keel_wal_poll(r->w); /* callbacks may detach */
	r->in_cb = false;
	if (r->detached) {
		if (!r->armed)
			free(r);
		return;
	}
	if (!r->armed)
		arm(r); /* a multishot poll can end (io_uring's CQ overflow): re-arm */
}

int keel_wal_attach(struct keel_wal *w, struct keel_shard *shard, struct keel_wal_reactor **out)
{
	*out = NULL;
	int efd = keel_wal_event_fd(w);
	if (efd < 0)
		return KEEL_ENOTSUP;
	struct keel_wal_reactor *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->op.complete = on_ready;
	r->w = w;
	r->shard = shard;
	r->efd = efd;
	arm(r);
	keel_wal_poll(w); /* anything that completed before the poll was armed */
	*out = r;
	return 0;
}

void keel_wal_detach(struct keel_wal_reactor *r)
{
	if (!r)
		return;
	r->detached = true;
	if (r->armed && !r->in_cb && keel_runtime_stopping(keel_shard_runtime(r->shard))) {
		/* The loop has ended (shard_fini, as transport/tcp.c assumes
		 * too): the poll's last completion will never be reaped, the
		 * ring is torn down next. */
		free(r);
		return;
	}
	if (!r->armed) {
		if (!r->in_cb)
			free(r); /* else on_ready frees it on the way out */
		return;
	}
	keel_io_cancel(r->shard, &r->op);
}
