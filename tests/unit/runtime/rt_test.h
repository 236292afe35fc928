/* Helpers for the runtime tests: build a runtime or fail with its message.
 * The reactor is the process default (keel_reactor_default): io_uring, or
 * epoll where it is refused or KEEL_REACTOR=epoll asks for it. */
#ifndef KEEL_TEST_RT_H
#define KEEL_TEST_RT_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "keel/runtime.h"

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
