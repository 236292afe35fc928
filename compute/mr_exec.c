/*
 * compute/mr_exec.c — the shard executor: what every shard of a node does
 * for a map-reduce job, on the runtime's reactor, run to completion.
 *
 *   map:    the shard asks the agent (shard 0, keel_shard_call) for the next
 *           task of the node's queue, reads its split through the shard's
 *           reactor a chunk per completion (keel_io_read), and folds what map emits
 *           into its combining table (which spills sorted runs past the
 *           memory budget). When the queue is empty it seals the table as
 *           one more immutable generation of sorted runs and tells the agent
 *           it is idle.
 *   reduce: an attempt of partition p runs on shard p % S: it merges p's runs
 *           from every local shard's generations (read in place: memory runs
 *           by reference, spills through this shard's file queue) with the pairs
 *           the other nodes streamed, calls reduce once per key, a batch of
 *           keys per loop iteration, and writes part-p.e<epoch>.n<node> in
 *           the job's temporary directory; the agent tells the coordinator,
 *           which commits the file by renaming it.
 * Threads and ownership: compute/mr_node.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "compute/mr_node.h"

#define REDUCE_BATCH 4096 /* keys per loop iteration of a reduce */

static void map_next(struct mr_shard *s);
static void reduce_next(struct mr_shard *s);

/* The job code this thread is in (keel_mr_running): two plain stores per
 * chunk of a split or batch of keys, not per record. */
static _Thread_local volatile sig_atomic_t running_kind;
static _Thread_local volatile uint32_t running_index;

static void enter(int kind, uint32_t index)
{
	running_index = index;
	running_kind = kind;
}

static void leave(void)
{
	running_kind = KEEL_MR_IN_NONE;
}

int keel_mr_running(uint32_t *index)
{
	int k = running_kind;
	if (k != KEEL_MR_IN_NONE && index)
		*index = running_index;
	return k;
}

/* ---- map ---------------------------------------------------------------- */

static int on_record(void *arg, const struct keel_mr_record *rec)
{
	struct mr_shard *s = arg;
	s->n->job->job->map(s->n->job->state, rec, &s->emit);
	s->records++;
	return s->cur->err;
}

/* To the agent on shard 0: task `task` ended with rc (MR_NO_TASK: not a
 * task, an error of the shard's own). */
static void report(struct mr_shard *s, uint32_t task, int rc, const char *err)
{
	struct mr_node *n = s->n;
	struct mr_task_msg *m = calloc(1, sizeof *m);
	if (m) {
		m->n = n;
		m->task = task;
		m->rc = rc;
		if (rc)
			snprintf(m->err, sizeof m->err, "%s", err);
		if (keel_shard_post(s->sh, 0, mr_agent_task_done, m) == 0)
			return;
		free(m);
	}
	/* The agent would wait for this task forever. */
	mr_node_fail(n, -ENOMEM, "mr: out of memory reporting a map task");
	keel_runtime_stop(n->rt);
}

static void table_gone(struct mr_shard *s, struct mr_table *t);

static void task_end(struct mr_shard *s, int rc, const char *err)
{
	if (s->scanning)
		mr_scan_close(&s->scan);
	s->scanning = false;
	report(s, (uint32_t)s->task, rc, err);
	s->task = -1;
	keel_shard_post(s->sh, s->id, mr_exec_map_next, s);
}

/* The shard's read loop: the next chunk of the split, or the task's end. */
static void read_next(struct mr_shard *s)
{
	void *dst;
	size_t len;
	uint64_t off;
	if (!mr_scan_next_read(&s->scan, &dst, &len, &off)) {
		task_end(s, 0, NULL);
		return;
	}
	keel_io_read(s->sh, &s->rd, s->scan.fd, dst, (uint32_t)len, off);
}

static void read_done(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	(void)flags;
	struct mr_shard *s = (struct mr_shard *)((char *)op - offsetof(struct mr_shard, rd));
	if (res == -EINTR || res == -EAGAIN) {
		read_next(s);
		return;
	}
	uint64_t bytes = 0; /* progress is counted per task by the coordinator */
	enter(KEEL_MR_IN_MAP, (uint32_t)s->task);
	int rc = mr_scan_complete(&s->scan, res, on_record, s, &bytes, s->errmsg);
	leave();
	if (rc) {
		task_end(s, rc, s->cur->err ? s->cur->errmsg : s->errmsg);
		return;
	}
	read_next(s);
}

/* No task left in the node's queue: this generation is immutable now. */
static void seal(struct mr_shard *s)
{
	if (s->cur) {
		int rc = mr_table_finish(s->cur);
		unsigned g = atomic_load(&s->ngens);
		if (rc || g >= MR_MAX_GENS) {
			report(s, MR_NO_TASK, rc ? rc : KEEL_EBADJOB,
			       rc ? s->cur->errmsg : "mr: too many map generations");
			table_gone(s, s->cur);
		} else {
			s->gens[g] = s->cur;
			atomic_store_explicit(&s->ngens, g + 1, memory_order_release);
		}
		s->cur = NULL;
	}
	keel_shard_post(s->sh, 0, mr_agent_shard_idle, s);
}

static void got_task(struct keel_shard *sh, void *result, void *arg)
{
	(void)sh;
	struct mr_shard *s = arg;
	struct mr_node *n = s->n;
	if (!result) {
		seal(s);
		return;
	}
	s->task = (int)((uintptr_t)result - 1);
	s->errmsg[0] = 0;
	if (!s->cur) {
		unsigned g = atomic_load(&s->ngens);
		s->cur = calloc(1, sizeof *s->cur);
		int rc = s->cur ? mr_table_init(s->cur, n->job->job, n->job->state, n->R, n->budget,
						n->spilldir, (int)s->id, s->errmsg)
				: keel_errmsg_set(s->errmsg, -ENOMEM, "mr: shard %u: table", s->id);
		if (rc) {
			if (s->cur)
				mr_table_free(s->cur);
			free(s->cur);
			s->cur = NULL;
			task_end(s, rc, s->errmsg);
			return;
		}
		s->cur->gen = g;
		s->emit.t = s->cur;
	}
	int rc = mr_scan_open(&s->scan, &n->plan, &n->plan.splits[s->task], n->job->job, &s->rbuf,
			      &s->rcap, s->errmsg);
	s->scanning = true;
	if (rc) {
		task_end(s, rc, s->errmsg);
		return;
	}
	read_next(s);
}

static void map_next(struct mr_shard *s)
{
	if (keel_shard_call(s->sh, 0, mr_agent_next_task, got_task, s))
		seal(s);
}

void mr_exec_map_next(struct keel_shard *sh, void *arg)
{
	(void)sh;
	map_next(arg);
}

/* ---- sources ------------------------------------------------------------ */

int mr_exec_local_sources(struct mr_node *n, uint32_t p, struct keel_fileq *fq,
			  struct mr_source **out, size_t *nout, size_t extra, char *errmsg)
{
	*out = NULL;
	*nout = 0;
	unsigned *ng = calloc(n->S, sizeof *ng);
	if (!ng)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: sources");
	size_t cnt = extra;
	for (unsigned j = 0; j < n->S; j++) {
		ng[j] = atomic_load_explicit(&n->sh[j].ngens, memory_order_acquire);
		for (unsigned g = 0; g < ng[j]; g++)
			cnt += 1 + n->sh[j].gens[g]->n_spills;
	}
	struct mr_source *src = calloc(cnt ? cnt : 1, sizeof *src);
	if (!src) {
		free(ng);
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: sources");
	}
	size_t k = 0;
	int rc = 0;
	for (unsigned j = 0; j < n->S && !rc; j++)
		for (unsigned g = 0; g < ng[j] && !rc; g++) {
			const struct mr_table *t = n->sh[j].gens[g];
			rc = mr_source_mem(&src[k++], t->sorted + t->part_start[p],
					   t->part_start[p + 1] - t->part_start[p]);
			for (size_t q = 0; q < t->n_spills && !rc; q++) {
				const struct mr_spill *sp = &t->spills[q];
				if (sp->part_off[p] == sp->part_off[p + 1])
					continue;
				rc = mr_source_file(&src[k++], sp->path, sp->part_off[p], sp->part_off[p + 1],
						    fq, errmsg);
			}
		}
	free(ng);
	*out = src;
	*nout = k;
	return rc;
}

/* ---- reduce ------------------------------------------------------------- */

/* The end of an attempt, whatever happened: the one place a partition's
 * output, merge and sources are closed and the agent is told. */
static void part_end(struct mr_shard *s, int rc)
{
	struct mr_node *n = s->n;
	struct mr_attempt *a = s->ra;
	mr_merge_end(s->merge);
	s->merge = NULL;
	if (s->out_open) {
		if (rc)
			mr_out_abort(&s->out);
		else
			rc = mr_out_close(&s->out, s->errmsg);
		s->out_open = false;
	}
	if (!rc)
		s->reduce_keys += s->ms.keys;
	for (size_t i = 0; i < s->nsrc; i++)
		mr_source_close(&s->src[i]);
	free(s->src);
	s->src = NULL;
	s->nsrc = 0;
	struct mr_part_msg *m = calloc(1, sizeof *m);
	if (m) {
		m->n = n;
		m->epoch = a->epoch;
		m->p = a->p;
		m->rc = rc;
		snprintf(m->path, sizeof m->path, "%s", a->path);
		if (rc)
			snprintf(m->err, sizeof m->err, "%s", s->errmsg);
		if (keel_shard_post(s->sh, 0, mr_agent_part_result, m)) {
			free(m);
			m = NULL;
		}
	}
	if (!m) {
		/* The coordinator would wait for this partition forever. */
		mr_node_fail(n, -ENOMEM, "mr: out of memory reporting a partition");
		keel_runtime_stop(n->rt);
	}
	mr_attempt_free(a);
	s->ra = NULL;
	reduce_next(s);
}

static void reduce_step(struct keel_shard *sh, void *arg)
{
	struct mr_shard *s = arg;
	enter(KEEL_MR_IN_REDUCE, s->ra->p);
	int rc = atomic_load_explicit(&s->n->err, memory_order_relaxed)
			 ? KEEL_ESTOPPED
			 : mr_merge_step(s->merge, REDUCE_BATCH, &s->ms);
	leave();
	if (rc == 1) {
		keel_shard_post(sh, s->id, reduce_step, s);
		return;
	}
	part_end(s, rc < 0 ? rc : 0);
}

static void reduce_next(struct mr_shard *s)
{
	struct mr_node *n = s->n;
	if (s->ra || !s->rq_head)
		return;
	struct mr_attempt *a = s->rq_head;
	s->rq_head = a->next;
	if (!s->rq_head)
		s->rq_tail = NULL;
	s->ra = a;
	s->errmsg[0] = 0;
	memset(&s->ms, 0, sizeof s->ms);
	size_t nremote = 0;
	for (int x = 0; x < MR_MAXN; x++)
		nremote += a->want[x];
	int rc = mr_exec_local_sources(n, a->p, s->q, &s->src, &s->nsrc,
				       nremote, s->errmsg);
	for (int x = 0; x < MR_MAXN && !rc; x++)
		if (a->want[x])
			rc = mr_source_buf(&s->src[s->nsrc++], a->remote[x].p, a->remote[x].len);
	if (rc && !s->errmsg[0])
		keel_errmsg_set(s->errmsg, rc, "mr: partition %u: data from a peer", a->p);
	snprintf(a->path, sizeof a->path, "%s/part-%05u.e%u.n%u", n->tmpdir, a->p, a->epoch, n->self);
	if (!rc && (rc = mr_out_open(&s->out, a->path, s->errmsg)) == 0) {
		s->out_open = true;
		s->out.no_fsync = n->no_fsync;
		enter(KEEL_MR_IN_REDUCE, a->p);
		rc = mr_merge_begin(&s->merge, s->src, s->nsrc, n->job->job, n->job->state, &s->out,
				    s->errmsg);
		leave();
	}
	if (rc) {
		part_end(s, rc);
		return;
	}
	reduce_step(s->sh, s);
}

static void reduce_enqueue(struct keel_shard *sh, void *arg)
{
	struct mr_attempt *a = arg;
	struct mr_shard *s = &a->n->sh[keel_shard_id(sh)];
	a->next = NULL;
	if (s->rq_tail)
		s->rq_tail->next = a;
	else
		s->rq_head = a;
	s->rq_tail = a;
	reduce_next(s);
}

void mr_exec_reduce(struct mr_node *n, struct mr_attempt *a)
{
	if (keel_shard_post(n->sh0, a->p % n->S, reduce_enqueue, a))
		mr_attempt_free(a); /* stopping */
}

/* ---- shard life --------------------------------------------------------- */

void mr_exec_shard_init(struct mr_node *n, struct keel_shard *sh)
{
	unsigned id = keel_shard_id(sh);
	struct mr_shard *s = &n->sh[id];
	s->n = n;
	s->id = id;
	s->sh = sh;
	s->task = -1;
	s->rd.complete = read_done;
	if (keel_fileq_new(4, -1, &s->q, NULL))
		s->q = NULL; /* io_uring refused: spills are read with pread */
}

static void table_gone(struct mr_shard *s, struct mr_table *t)
{
	s->emitted += t->emitted;
	s->shuffled += t->shuffled;
	s->spills += t->n_spills;
	s->spill_bytes += t->spill_bytes;
	mr_table_free(t);
	free(t);
}

/* No loop runs any more: other shards' sources may still point into this
 * shard's generations, but nothing reads through them. */
void mr_exec_shard_fini(struct mr_node *n, struct keel_shard *sh)
{
	struct mr_shard *s = &n->sh[keel_shard_id(sh)];
	if (s->scanning)
		mr_scan_close(&s->scan);
	s->scanning = false;
	mr_merge_end(s->merge);
	s->merge = NULL;
	if (s->out_open)
		mr_out_abort(&s->out);
	s->out_open = false;
	for (size_t i = 0; i < s->nsrc; i++)
		mr_source_close(&s->src[i]);
	free(s->src);
	s->src = NULL;
	s->nsrc = 0;
	if (s->ra)
		mr_attempt_free(s->ra);
	s->ra = NULL;
	for (struct mr_attempt *a = s->rq_head, *nx; a; a = nx) {
		nx = a->next;
		mr_attempt_free(a);
	}
	s->rq_head = s->rq_tail = NULL;
	if (s->cur)
		table_gone(s, s->cur);
	s->cur = NULL;
	unsigned ng = atomic_load(&s->ngens);
	for (unsigned g = 0; g < ng; g++)
		table_gone(s, s->gens[g]);
	atomic_store(&s->ngens, 0);
	free(s->rbuf);
	s->rbuf = NULL;
	keel_fileq_free(s->q);
	s->q = NULL;
}
