/* The snapshot writer (group_internal.h): one helper thread per process
 * (a process is one node) that writes and fsyncs the snapshot files of
 * every group of every shard, so that a group's snapshot costs its shard
 * the state machine's copy and not the file's write, fdatasync, rename and
 * directory fsync (tens to hundreds of milliseconds on this VM's disk
 * under load: docs/perf/kv.md). The group learns the outcome by a runtime
 * message to its shard (keel_shard_post_external), so its completion runs
 * on the shard's thread like everything else of the group.
 *
 * Why one thread and not one per group: a node runs tens of groups, and
 * their snapshots are rare and sequential work for one disk; one thread
 * keeps the count of threads flat. Jobs run in submission order.
 *
 * Lifetime of a job (the delicate part): the group allocates it from its
 * shard's pool and owns it until it is queued; then the helper writes the
 * file, frees the data, and (under mu) posts the completion message and
 * marks the job io_done. From then on exactly one of two things frees it:
 *   - the message, on the shard: calls done() unless the group detached the
 *     job meanwhile, then frees it;
 *   - snapjob_detach(), when the message could not be posted (the runtime
 *     was stopping). A message that was posted but never ran (the runtime
 *     stopped first: external messages left then are dropped) leaves a pool
 *     block that keel_runtime_destroy reclaims, which is why the job comes
 *     from keel_shard_alloc and not malloc.
 * snapjob_detach() blocks until the job's I/O is over, so the group may
 * destroy its snapshot store's I/O right after (close) or write the store
 * itself (a leader's snapshot) without racing the helper on snapshot.tmp. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"

struct snapjob {
	struct snapjob *next; /* the writer's queue */
	struct snapstore *st;
	struct keel_shard *shard;
	snapjob_done_fn *done;
	void *arg;
	struct keel_raft_snapshot_meta meta;
	void *data; /* owned; freed by the helper once written */
	size_t len;
	int rc;
	bool io_done, posted, detached; /* io_done and posted under w.mu */
	char errmsg[KEEL_ERRMSG_LEN];
};

/* A writer thread. Its own stop flag: a thread told to stop may still be
 * waking up when the next group's reference starts a new one. */
struct writer_thread {
	pthread_t th;
	bool stop; /* under w.mu */
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	struct snapjob *head, *tail;
	unsigned refs;
	struct writer_thread *cur; /* running while refs > 0 */
} w = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .work = PTHREAD_COND_INITIALIZER,
       .done = PTHREAD_COND_INITIALIZER};

/* On the shard: the helper is done with j. */
static void job_complete(struct keel_shard *on, void *arg)
{
	(void)on;
	struct snapjob *j = arg;
	/* the helper may still be inside its critical section (it posts
	 * under mu): wait for it to leave before j is freed */
	pthread_mutex_lock(&w.mu);
	pthread_mutex_unlock(&w.mu);
	if (!j->detached)
		j->done(j->arg, j->meta.index, j->rc, j->errmsg);
	keel_shard_free(j);
}

static void *writer_main(void *arg)
{
	struct writer_thread *t = arg;
	pthread_setname_np(pthread_self(), "keel-snapw");
	pthread_mutex_lock(&w.mu);
	for (;;) {
		while (!w.head && !t->stop)
			pthread_cond_wait(&w.work, &w.mu);
		if (t->stop)
			break; /* the last reference went: the queue is empty (every
				* group detached its job before letting go) */
		struct snapjob *j = w.head;
		w.head = j->next;
		if (!w.head)
			w.tail = NULL;
		pthread_mutex_unlock(&w.mu);
		/* the header (with the CRC over the data) is made here too: the
		 * shard paid only for the state machine's copy */
		uint8_t hdr[KEEL_GROUP_SNAPSHOT_HDR_MAX];
		struct keel_raft_snapshot s = {.meta = j->meta, .data = j->data, .len = j->len};
		int rc = keel_group_snapshot_encode_header(&s, hdr, sizeof(hdr));
		if (rc < 0)
			keel_errmsg_set(j->errmsg, rc, "snapshot: encoding its header");
		else
			rc = snapstore_save(j->st, hdr, (size_t)rc, j->data, j->len, j->errmsg);
		free(j->data);
		j->data = NULL;
		pthread_mutex_lock(&w.mu);
		j->rc = rc;
		j->posted = keel_shard_post_external(j->shard, job_complete, j) == 0;
		j->io_done = true;
		pthread_cond_broadcast(&w.done);
	}
	pthread_mutex_unlock(&w.mu);
	return NULL;
}

/* KEEL_SNAPSHOT_WRITER=inline writes on the shard as before the writer
 * existed: for benchmarking the two in the same build (docs/perf/kv.md). */
static bool writer_wanted(void)
{
	static _Atomic int wanted = -1; /* every thread finds the same answer */
	if (wanted < 0) {
		const char *v = getenv("KEEL_SNAPSHOT_WRITER");
		wanted = !(v && !strcmp(v, "inline"));
		if (!wanted)
			keel_info("snapshots: written on the shard threads (KEEL_SNAPSHOT_WRITER=inline)");
	}
	return wanted;
}

bool snapwriter_usable(const struct snapstore *st, struct keel_shard *shard)
{
	return shard && st->io && st->io->background && writer_wanted();
}

int snapwriter_ref(char *errmsg)
{
	int rc = 0;
	pthread_mutex_lock(&w.mu);
	if (!w.cur) {
		struct writer_thread *t = calloc(1, sizeof(*t));
		rc = t ? -pthread_create(&t->th, NULL, writer_main, t) : -ENOMEM;
		if (rc) {
			free(t);
			keel_errmsg_set(errmsg, rc, "snapshot writer: starting its thread");
		} else {
			w.cur = t;
		}
	}
	if (!rc)
		w.refs++;
	pthread_mutex_unlock(&w.mu);
	return rc;
}

void snapwriter_unref(void)
{
	pthread_mutex_lock(&w.mu);
	struct writer_thread *t = NULL;
	if (w.refs && --w.refs == 0) {
		t = w.cur;
		w.cur = NULL;
		t->stop = true;
		pthread_cond_broadcast(&w.work);
	}
	pthread_mutex_unlock(&w.mu);
	if (t) {
		pthread_join(t->th, NULL);
		free(t);
	}
}

int snapwriter_submit(struct snapstore *st, struct keel_shard *shard,
		      const struct keel_raft_snapshot_meta *meta, void *data, size_t len,
		      snapjob_done_fn *done, void *arg, struct snapjob **out, char *errmsg)
{
	*out = NULL;
	struct snapjob *j = keel_shard_alloc(shard, sizeof(*j));
	if (!j) {
		free(data);
		return keel_errmsg_set(errmsg, -ENOMEM, "snapshot: out of memory for a write");
	}
	*j = (struct snapjob){.st = st, .shard = shard, .done = done, .arg = arg, .meta = *meta,
			      .data = data, .len = len};
	pthread_mutex_lock(&w.mu);
	if (w.tail)
		w.tail->next = j;
	else
		w.head = j;
	w.tail = j;
	pthread_cond_broadcast(&w.work); /* a stopping thread may wait there too */
	pthread_mutex_unlock(&w.mu);
	*out = j;
	return 0;
}

void snapjob_detach(struct snapjob *j)
{
	pthread_mutex_lock(&w.mu);
	while (!j->io_done)
		pthread_cond_wait(&w.done, &w.mu);
	bool posted = j->posted;
	j->detached = true;
	pthread_mutex_unlock(&w.mu);
	if (!posted)
		keel_shard_free(j);
}
