/* A WAL driven from a shard's reactor: appends chained from durability
 * callbacks, with no one calling keel_wal_poll/wait — only the shard loop,
 * woken by the WAL's event fd through the multishot poll. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "keel/runtime.h"
#include "keel/wal.h"

#define N 300

static char dir[64];
static struct keel_runtime *rt;

struct ctx {
	struct keel_wal *w;
	struct keel_wal_reactor *r;
	uint64_t done;
	bool on_shard;
	int err;
	uint8_t payload[100];
};
static struct ctx C;

static void next(struct ctx *c);

static void durable(void *arg, uint64_t last, int status)
{
	struct ctx *c = arg;
	if (status) {
		c->err = status;
		keel_runtime_stop(rt);
		return;
	}
	c->on_shard &= keel_shard_self() != NULL;
	c->done = last;
	if (last == N) {
		/* never close a WAL from its own callback: shard_fini does */
		keel_wal_detach(c->r);
		keel_runtime_stop(rt);
		return;
	}
	next(c);
}

static void next(struct ctx *c)
{
	struct keel_wal_entry e = {
		.index = c->done + 1, .term = 1, .len = sizeof(c->payload), .data = c->payload};
	int rc = keel_wal_append(c->w, &e, 1, durable, c);
	if (rc) {
		c->err = rc;
		keel_runtime_stop(rt);
	}
}

static void shard_init(struct keel_shard *shard, void *arg)
{
	struct ctx *c = arg;
	struct keel_wal_io *io;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_wal_io_posix_new(&io, dir, KEEL_WAL_ENGINE_AUTO, err);
	if (!rc)
		rc = keel_wal_open(&c->w, io, &(struct keel_wal_config){.segment_size = 1 << 20}, err);
	if (!rc)
		rc = keel_wal_attach(c->w, shard, &c->r);
	if (rc) {
		c->err = rc;
		keel_runtime_stop(rt);
		return;
	}
	c->on_shard = true;
	next(c);
}

static void shard_fini(struct keel_shard *shard, void *arg)
{
	struct ctx *c = arg;
	keel_wal_close(c->w);
	c->w = NULL;
}

Test(wal_shard, appends_driven_by_the_reactor, .timeout = 120)
{
	keel_log_set_level(KEEL_LOG_WARN);
	snprintf(dir, sizeof(dir), "wal-shard-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	char err[KEEL_ERRMSG_LEN] = "";
	struct keel_runtime_config cfg = {.nshards = 1, .overcommit = true, .node_id = -1};
	int rc = keel_runtime_create(&cfg, &rt, err);
	cr_assert_eq(rc, 0, "%s", err);
	rc = keel_runtime_start(rt, shard_init, shard_fini, &C);
	if (rc == -EPERM || rc == -ENOSYS)
		cr_skip_test("needs io_uring for the shard runtime (%s)", keel_strerror(rc));
	cr_assert_eq(rc, 0);
	cr_assert_eq(keel_runtime_wait(rt), 0);
	keel_runtime_destroy(rt);
	cr_assert_eq(C.err, 0, "%s", keel_strerror(C.err));
	cr_assert_eq(C.done, N);
	cr_assert(C.on_shard, "callbacks ran off the shard thread");
	/* what the shard wrote is all there */
	struct keel_wal_io *io;
	cr_assert_eq(keel_wal_io_posix_new(&io, dir, KEEL_WAL_ENGINE_AUTO, err), 0);
	struct keel_wal *w;
	cr_assert_eq(keel_wal_open(&w, io, &(struct keel_wal_config){.segment_size = 1 << 20}, err), 0);
	cr_assert_eq(keel_wal_last_index(w), N);
	keel_wal_close(w);
	DIR *d = opendir(dir);
	struct dirent *de;
	while ((de = readdir(d))) {
		char p[512];
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (de->d_name[0] != '.')
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}
