/* Helpers for the runtime tests: build a runtime or fail with its message,
 * and skip the whole program (exit 77, before Criterion starts) where the
 * kernel refuses io_uring, which every shard needs. */
#ifndef KEEL_TEST_RT_H
#define KEEL_TEST_RT_H

#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>

#include "keel/runtime.h"

__attribute__((constructor)) static void rt_test_need_io_uring(void)
{
	struct io_uring r;
	int rc = io_uring_queue_init(4, &r, 0);
	if (rc < 0) {
		fprintf(stderr, "SKIP: needs io_uring (io_uring_queue_init: %s)\n", keel_strerror(rc));
		exit(77);
	}
	io_uring_queue_exit(&r);
}

static inline struct keel_runtime *rt_make(unsigned nshards, enum keel_idle_policy idle,
					   unsigned ring_capacity)
{
	struct keel_runtime_config cfg = {
		.nshards = nshards,
		.overcommit = true, /* this machine has 2 cores; tests use more shards */
		.idle = idle,
		.node_id = -1,
		.ring_capacity = ring_capacity,
	};
	struct keel_runtime *rt = NULL;
	char em[KEEL_ERRMSG_LEN] = "";
	int rc = keel_runtime_create(&cfg, &rt, em);
	if (rc) {
		fprintf(stderr, "keel_runtime_create: %s\n", em);
		abort();
	}
	return rt;
}

#endif
