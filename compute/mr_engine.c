/*
 * compute/mr_engine.c — running a job on this node: planning, the map phase
 * on every shard of a keel runtime, the reduce phase (R partitions spread
 * over the shards, each a k-way merge of that partition's runs from every
 * shard), and the atomic commit of the output directory.
 *
 * On the runtime (include/keel/runtime.h), everything is messages and I/O
 * completions on the shards' reactors, run to completion:
 *   map: a shard takes the next split (one atomic counter over the node's
 *        tasks, so a fast shard takes more), reads it through its own
 *        io_uring a chunk per completion, and folds what map emits into its
 *        own combining table (spilling sorted runs past the budget). When no
 *        split is left it sorts its table and tells shard 0 (map_done).
 *   barrier: shard 0 counts map_done messages, then sends reduce_start.
 *   shuffle: for each partition it owns (p % S == shard), a shard asks every
 *        shard for its run of p with keel_shard_call; the reply hands the
 *        sorted run over by reference (memory runs are read in place, spill
 *        files through a private ring), so no pair is copied between shards.
 *   reduce: the merge runs a batch of keys per message, re-posting itself,
 *        so a shard's loop keeps turning; then `release` goes back to every
 *        source shard, which frees its own table once all R partitions have
 *        released it (memory is freed by the shard that allocated it).
 *   end: shard 0 counts reduce_done messages and stops the runtime; the
 *        caller's thread commits the output.
 * Where a runtime cannot start (io_uring forbidden in a container), the same
 * phases run on plain threads with a barrier between them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compute/mr_internal.h"
#include "keel/runtime.h"

int keel_mr_emit(struct keel_mr_emit *e, const void *key, size_t klen, const void *val, size_t vlen)
{
	return mr_table_add(e->t, key, klen, val, vlen);
}

struct engine;

struct worker;

/* One outstanding run request of a reducer to a source shard. */
struct run_req {
	struct worker *w;
	unsigned from;
};

struct worker {
	struct engine *e;
	int id;
	pthread_t th;
	struct keel_shard *sh;
	struct mr_table t;
	bool table_ok;
	struct keel_mr_emit emit;
	uint8_t *rbuf;
	size_t rcap;
	uint64_t records;
	uint64_t reduce_keys, output_bytes;
	/* map on the runtime */
	struct mr_scan scan;
	bool scanning;
	struct keel_io_op rd;
	/* reduce on the runtime */
	uint32_t part;
	unsigned replies;
	struct run_req *req;
	const struct mr_table **peer;
	struct mr_source *src;
	size_t nsrc;
	struct mr_merge *merge;
	struct mr_merge_stats ms;
	struct keel_mr_out out;
	bool out_open;
	struct io_uring ring;
	bool ring_ok;
	uint32_t released;
	/* the table's counters, kept when the table is freed */
	struct {
		uint64_t emitted, shuffled, spills, spill_bytes;
	} tc;
	char errmsg[KEEL_ERRMSG_LEN];
} KEEL_CACHE_ALIGNED;

struct engine {
	const struct keel_mr_config *cfg;
	const struct keel_mr_job *job;
	void *state;
	struct mr_plan plan;
	uint32_t S, R;
	uint64_t budget;
	char tmpdir[4200];
	char spilldir[4400];
	_Atomic uint64_t next_task;
	_Atomic uint64_t tasks_done;
	_Atomic uint64_t bytes_done;
	_Atomic uint64_t reduce_done;
	_Atomic uint32_t running;
	_Atomic int err;
	pthread_mutex_t errmu;
	char errmsg[KEEL_ERRMSG_LEN];
	pthread_barrier_t barrier;
	struct worker *w;
	struct keel_runtime *rt;
	unsigned maps_done, reduces_done; /* shard 0 only */
	uint64_t t0, t_map_end;
};

static void engine_fail(struct engine *e, int rc, const char *msg)
{
	pthread_mutex_lock(&e->errmu);
	if (!atomic_load(&e->err)) {
		snprintf(e->errmsg, sizeof e->errmsg, "%s", msg);
		atomic_store(&e->err, rc);
	}
	pthread_mutex_unlock(&e->errmu);
}

static void keep_counters(struct worker *w)
{
	w->tc.emitted = w->t.emitted;
	w->tc.shuffled = w->t.shuffled;
	w->tc.spills = w->t.n_spills;
	w->tc.spill_bytes = w->t.spill_bytes;
}

static int on_record(void *arg, const struct keel_mr_record *rec)
{
	struct worker *w = arg;
	w->e->job->map(w->e->state, rec, &w->emit);
	w->records++;
	return w->t.err;
}

static void map_phase(struct worker *w)
{
	struct engine *e = w->e;
	for (;;) {
		if (atomic_load_explicit(&e->err, memory_order_relaxed))
			return;
		uint64_t i = atomic_fetch_add(&e->next_task, 1);
		if (i >= e->plan.n_splits)
			break;
		int rc = mr_split_scan(&e->plan, &e->plan.splits[i], e->job, &w->rbuf, &w->rcap,
				       on_record, w, (uint64_t *)&e->bytes_done, w->errmsg);
		if (rc) {
			engine_fail(e, rc, w->t.err ? w->t.errmsg : w->errmsg);
			return;
		}
		atomic_fetch_add(&e->tasks_done, 1);
	}
	int rc = mr_table_finish(&w->t);
	if (rc)
		engine_fail(e, rc, w->t.errmsg);
	keep_counters(w);
}

static int reduce_partition(struct worker *w, uint32_t p, struct io_uring *ring)
{
	struct engine *e = w->e;
	size_t n = 0;
	for (uint32_t j = 0; j < e->S; j++)
		n += 1 + e->w[j].t.n_spills;
	struct mr_source *src = calloc(n ? n : 1, sizeof *src);
	if (!src)
		return keel_errmsg_set(w->errmsg, -ENOMEM, "mr: merge sources");
	size_t k = 0;
	int rc = 0;
	for (uint32_t j = 0; j < e->S && !rc; j++) {
		const struct mr_table *t = &e->w[j].t;
		rc = mr_source_mem(&src[k++], t->sorted + t->part_start[p],
				   t->part_start[p + 1] - t->part_start[p]);
		for (size_t s = 0; s < t->n_spills && !rc; s++) {
			const struct mr_spill *sp = &t->spills[s];
			if (sp->part_off[p] == sp->part_off[p + 1])
				continue;
			rc = mr_source_file(&src[k++], sp->path, sp->part_off[p], sp->part_off[p + 1],
					    ring, w->errmsg);
		}
	}
	char path[4500];
	snprintf(path, sizeof path, "%s/part-%05u", e->tmpdir, p);
	struct keel_mr_out out;
	if (!rc)
		rc = mr_out_open(&out, path, w->errmsg);
	if (!rc) {
		out.no_fsync = e->cfg->no_fsync;
		struct mr_merge_stats ms = {0};
		rc = mr_merge_reduce(src, k, e->job, e->state, &out, &ms, w->errmsg);
		w->reduce_keys += ms.keys;
		w->output_bytes += out.bytes;
		if (rc)
			mr_out_abort(&out);
		else
			rc = mr_out_close(&out, w->errmsg);
	}
	for (size_t i = 0; i < k; i++)
		mr_source_close(&src[i]);
	free(src);
	return rc;
}

static void reduce_phase(struct worker *w)
{
	struct engine *e = w->e;
	struct io_uring ring;
	bool ring_ok = io_uring_queue_init(4, &ring, 0) == 0;
	for (uint32_t p = (uint32_t)w->id; p < e->R; p += e->S) {
		if (atomic_load(&e->err))
			break;
		int rc = reduce_partition(w, p, ring_ok ? &ring : NULL);
		if (rc) {
			engine_fail(e, rc, w->errmsg);
			break;
		}
		atomic_fetch_add(&e->reduce_done, 1);
	}
	if (ring_ok)
		io_uring_queue_exit(&ring);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct engine *e = w->e;
	keel_log_set_shard(w->id);
	map_phase(w);
	pthread_barrier_wait(&e->barrier);
	if (w->id == 0)
		e->t_map_end = keel_now_ns();
	if (!atomic_load(&e->err))
		reduce_phase(w);
	/* Other shards may still be reading this shard's runs. */
	pthread_barrier_wait(&e->barrier);
	atomic_fetch_sub(&e->running, 1);
	return NULL;
}

/* ---- execution on the runtime's shards ------------------------------- */

#define REDUCE_BATCH 4096 /* keys per reduce message */

static void rt_map_next(struct keel_shard *sh, void *arg);
static void rt_reduce_begin(struct worker *w);
static void rt_reduce_start(struct keel_shard *sh, void *arg);

static void rt_fail(struct worker *w, int rc, const char *msg)
{
	engine_fail(w->e, rc, msg);
}

static void rt_map_done(struct keel_shard *sh, void *arg)
{
	struct engine *e = arg;
	if (++e->maps_done < e->S)
		return;
	e->t_map_end = keel_now_ns();
	for (uint32_t i = 0; i < e->S; i++)
		keel_shard_post(sh, i, rt_reduce_start, &e->w[i]);
}

static void rt_map_finish(struct worker *w)
{
	struct engine *e = w->e;
	if (w->table_ok && !atomic_load(&e->err)) {
		int rc = mr_table_finish(&w->t);
		if (rc)
			rt_fail(w, rc, w->t.errmsg);
	}
	if (w->table_ok)
		keep_counters(w);
	keel_shard_post(w->sh, 0, rt_map_done, e);
}

/* Issues the read of the split's next chunk, or finishes the task. */
static void rt_read_next(struct worker *w)
{
	void *dst;
	size_t len;
	uint64_t off;
	if (!mr_scan_next_read(&w->scan, &dst, &len, &off)) {
		mr_scan_close(&w->scan);
		w->scanning = false;
		atomic_fetch_add(&w->e->tasks_done, 1);
		keel_shard_post(w->sh, (unsigned)w->id, rt_map_next, w);
		return;
	}
	struct io_uring_sqe *sqe = keel_shard_get_sqe(w->sh, &w->rd);
	io_uring_prep_read(sqe, w->scan.fd, dst, (unsigned)len, off);
}

static void rt_read_done(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	(void)flags;
	struct worker *w = (struct worker *)((char *)op - offsetof(struct worker, rd));
	struct engine *e = w->e;
	if (res == -EINTR || res == -EAGAIN) {
		rt_read_next(w);
		return;
	}
	int rc = mr_scan_complete(&w->scan, res, on_record, w, (uint64_t *)&e->bytes_done,
				  w->errmsg);
	if (rc) {
		rt_fail(w, rc, w->t.err ? w->t.errmsg : w->errmsg);
		mr_scan_close(&w->scan);
		w->scanning = false;
		rt_map_finish(w);
		return;
	}
	rt_read_next(w);
}

static void rt_map_next(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct worker *w = arg;
	struct engine *e = w->e;
	if (!w->table_ok || atomic_load_explicit(&e->err, memory_order_relaxed)) {
		rt_map_finish(w);
		return;
	}
	uint64_t i = atomic_fetch_add(&e->next_task, 1);
	if (i >= e->plan.n_splits) {
		rt_map_finish(w);
		return;
	}
	int rc = mr_scan_open(&w->scan, &e->plan, &e->plan.splits[i], e->job, &w->rbuf, &w->rcap,
			      w->errmsg);
	if (rc) {
		mr_scan_close(&w->scan);
		rt_fail(w, rc, w->errmsg);
		rt_map_finish(w);
		return;
	}
	w->scanning = true;
	rt_read_next(w);
}

static void rt_release(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct worker *w = arg;
	if (++w->released == w->e->R && w->table_ok) {
		mr_table_free(&w->t);
		w->table_ok = false;
	}
}

static void rt_reduce_done(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct engine *e = arg;
	if (++e->reduces_done < e->S)
		return;
	atomic_store(&e->running, 0);
	keel_runtime_stop(e->rt);
}

static void rt_part_end(struct worker *w, int rc)
{
	struct engine *e = w->e;
	if (w->merge) {
		mr_merge_end(w->merge);
		w->merge = NULL;
	}
	if (w->out_open) {
		w->reduce_keys += w->ms.keys;
		w->output_bytes += w->out.bytes;
		if (rc)
			mr_out_abort(&w->out);
		else
			rc = mr_out_close(&w->out, w->errmsg);
		w->out_open = false;
	}
	for (size_t i = 0; i < w->nsrc; i++)
		mr_source_close(&w->src[i]);
	free(w->src);
	w->src = NULL;
	w->nsrc = 0;
	if (rc)
		rt_fail(w, rc, w->errmsg);
	else
		atomic_fetch_add(&e->reduce_done, 1);
	/* Every source shard may now drop its run of this partition. */
	for (uint32_t j = 0; j < e->S; j++)
		keel_shard_post(w->sh, j, rt_release, &e->w[j]);
	w->part += e->S;
	rt_reduce_begin(w);
}

static void rt_reduce_step(struct keel_shard *sh, void *arg)
{
	struct worker *w = arg;
	int rc = atomic_load(&w->e->err) ? KEEL_ESTOPPED : mr_merge_step(w->merge, REDUCE_BATCH, &w->ms);
	if (rc == 1) {
		keel_shard_post(sh, (unsigned)w->id, rt_reduce_step, w);
		return;
	}
	rt_part_end(w, rc < 0 ? rc : 0);
}

/* All source shards have handed over their runs of w->part: merge them. */
static void rt_reduce_merge(struct worker *w)
{
	struct engine *e = w->e;
	uint32_t p = w->part;
	size_t n = 0;
	for (uint32_t j = 0; j < e->S; j++)
		n += w->peer[j] ? 1 + w->peer[j]->n_spills : 0;
	w->src = calloc(n ? n : 1, sizeof *w->src);
	int rc = w->src ? 0 : keel_errmsg_set(w->errmsg, -ENOMEM, "mr: merge sources");
	w->nsrc = 0;
	memset(&w->ms, 0, sizeof w->ms);
	for (uint32_t j = 0; j < e->S && !rc; j++) {
		const struct mr_table *t = w->peer[j];
		if (!t)
			continue;
		rc = mr_source_mem(&w->src[w->nsrc++], t->sorted + t->part_start[p],
				   t->part_start[p + 1] - t->part_start[p]);
		for (size_t k = 0; k < t->n_spills && !rc; k++) {
			const struct mr_spill *sp = &t->spills[k];
			if (sp->part_off[p] == sp->part_off[p + 1])
				continue;
			rc = mr_source_file(&w->src[w->nsrc++], sp->path, sp->part_off[p],
					    sp->part_off[p + 1], w->ring_ok ? &w->ring : NULL, w->errmsg);
		}
	}
	char path[4500];
	snprintf(path, sizeof path, "%s/part-%05u", e->tmpdir, p);
	if (!rc && (rc = mr_out_open(&w->out, path, w->errmsg)) == 0) {
		w->out_open = true;
		w->out.no_fsync = e->cfg->no_fsync;
		rc = mr_merge_begin(&w->merge, w->src, w->nsrc, e->job, e->state, &w->out, w->errmsg);
	}
	if (rc) {
		rt_part_end(w, rc);
		return;
	}
	rt_reduce_step(w->sh, w);
}

/* Runs on the source shard: hands over its (finished, now read-only) table. */
static void *rt_give_run(struct keel_shard *on, void *arg)
{
	(void)on;
	struct run_req *r = arg;
	struct worker *src = &r->w->e->w[r->from];
	return src->table_ok ? &src->t : NULL;
}

static void rt_got_run(struct keel_shard *from, void *result, void *arg)
{
	(void)from;
	struct run_req *r = arg;
	struct worker *w = r->w;
	w->peer[r->from] = result;
	if (!result && !atomic_load(&w->e->err))
		rt_fail(w, KEEL_ESTOPPED, "mr: a shard lost its map output");
	if (++w->replies == w->e->S)
		rt_reduce_merge(w);
}

static void rt_reduce_begin(struct worker *w)
{
	struct engine *e = w->e;
	if (w->part >= e->R || atomic_load(&e->err)) {
		keel_shard_post(w->sh, 0, rt_reduce_done, e);
		return;
	}
	w->replies = 0;
	for (uint32_t j = 0; j < e->S; j++) {
		w->peer[j] = NULL;
		w->req[j] = (struct run_req){.w = w, .from = j};
		int rc = keel_shard_call(w->sh, j, rt_give_run, rt_got_run, &w->req[j]);
		if (rc) {
			rt_fail(w, rc, "mr: shuffle request failed");
			if (++w->replies == e->S)
				rt_reduce_merge(w);
		}
	}
}

static void rt_reduce_start(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct worker *w = arg;
	w->part = (uint32_t)w->id;
	rt_reduce_begin(w);
}

static void rt_shard_init(struct keel_shard *sh, void *arg)
{
	struct engine *e = arg;
	struct worker *w = &e->w[keel_shard_id(sh)];
	w->sh = sh;
	w->rd.complete = rt_read_done;
	/* The table and buffers are allocated on the shard's own thread, so
	 * they come from its NUMA node. */
	int rc = mr_table_init(&w->t, e->job, e->state, e->R, e->budget, e->spilldir, w->id,
			       w->errmsg);
	w->table_ok = rc == 0;
	if (rc)
		rt_fail(w, rc, w->errmsg);
	w->emit.t = &w->t;
	w->req = calloc(e->S, sizeof *w->req);
	w->peer = calloc(e->S, sizeof *w->peer);
	if (!w->req || !w->peer) {
		rt_fail(w, -ENOMEM, "mr: shard state");
		w->table_ok = false;
	}
	w->ring_ok = io_uring_queue_init(4, &w->ring, 0) == 0;
	keel_shard_post(sh, (unsigned)w->id, rt_map_next, w);
}

static void rt_shard_fini(struct keel_shard *sh, void *arg)
{
	struct engine *e = arg;
	struct worker *w = &e->w[keel_shard_id(sh)];
	if (w->scanning)
		mr_scan_close(&w->scan);
	/* Stopped mid-partition (only after a failure): drop its pieces. */
	mr_merge_end(w->merge);
	w->merge = NULL;
	if (w->out_open)
		mr_out_abort(&w->out);
	w->out_open = false;
	for (size_t i = 0; i < w->nsrc; i++)
		mr_source_close(&w->src[i]);
	free(w->src);
	w->src = NULL;
	if (w->table_ok)
		mr_table_free(&w->t);
	w->table_ok = false;
	if (w->ring_ok)
		io_uring_queue_exit(&w->ring);
	w->ring_ok = false;
	free(w->req);
	free(w->peer);
	free(w->rbuf);
	w->req = NULL;
	w->peer = NULL;
	w->rbuf = NULL;
}

static void report(struct engine *e)
{
	const struct keel_mr_config *c = e->cfg;
	if (!c->progress)
		return;
	struct keel_mr_progress p = {
		.map_tasks_total = e->plan.n_splits,
		.map_tasks_done = atomic_load(&e->tasks_done),
		.reduce_tasks_total = e->R,
		.reduce_tasks_done = atomic_load(&e->reduce_done),
		.input_bytes_total = e->plan.total_bytes,
		.input_bytes_done = atomic_load(&e->bytes_done),
		.elapsed_ns = keel_now_ns() - e->t0,
	};
	c->progress(c->progress_arg, &p);
}

/* The output must not exist, or be an empty directory. */
static int check_output(const char *out, bool *empty_dir, char *errmsg)
{
	struct stat st;
	*empty_dir = false;
	if (stat(out, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return keel_errmsg_set(errmsg, -errno, "mr: output %s", out);
	}
	if (S_ISDIR(st.st_mode) && rmdir(out) == 0) {
		/* Empty: recreated by the final rename. */
		if (mkdir(out, 0755) == 0)
			*empty_dir = true;
		return 0;
	}
	return keel_errmsg_set(errmsg, -EEXIST, "mr: output %s already exists (remove it or choose another)",
			       out);
}

int keel_mr_run(const struct keel_mr_config *cfg, struct keel_mr_stats *stats, char *errmsg)
{
	memset(stats, 0, sizeof *stats);
	if (!cfg->job || !cfg->job->job || !cfg->output)
		return keel_errmsg_set(errmsg, -EINVAL, "mr: config needs a job and an output");
	struct engine *e = calloc(1, sizeof *e);
	if (!e)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: engine");
	e->cfg = cfg;
	e->job = cfg->job->job;
	e->state = cfg->job->state;
	e->t0 = keel_now_ns();
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	e->S = cfg->shards ? cfg->shards : (uint32_t)(ncpu > 0 ? ncpu : 1);
	e->R = cfg->partitions ? cfg->partitions : e->S;
	e->budget = cfg->mem_budget ? cfg->mem_budget : 256ull << 20;
	pthread_mutex_init(&e->errmu, NULL);
	int rc = keel_mr_job_validate(e->job, errmsg);
	bool empty_dir = false, made_tmp = false;
	struct keel_mr_record *samples = NULL;
	size_t n_samples = 0;
	if (rc)
		goto out;
	if ((rc = check_output(cfg->output, &empty_dir, errmsg)))
		goto out;
	if ((rc = mr_plan_build(&e->plan, cfg->inputs, cfg->n_inputs, e->job, cfg->split_size, errmsg)))
		goto out;
	if (e->job->setup) {
		if (e->job->sample &&
		    (rc = mr_plan_sample(&e->plan, e->job, e->job->sample, &samples, &n_samples, errmsg)))
			goto out;
		char em[KEEL_ERRMSG_LEN] = "";
		rc = e->job->setup(e->state, samples, n_samples, e->R, em);
		mr_samples_free(samples, n_samples);
		if (rc) {
			snprintf(errmsg, KEEL_ERRMSG_LEN, "mr: job %s setup: %s", e->job->name, em);
			goto out;
		}
	}
	snprintf(e->tmpdir, sizeof e->tmpdir, "%s.keel-tmp.%d", cfg->output, (int)getpid());
	if (mkdir(e->tmpdir, 0755) < 0) {
		rc = keel_errmsg_set(errmsg, -errno, "mr: temporary output %s", e->tmpdir);
		goto out;
	}
	made_tmp = true;
	static _Atomic unsigned spill_seq;
	if (cfg->spill_dir)
		snprintf(e->spilldir, sizeof e->spilldir, "%s/keel-spill.%d.%u", cfg->spill_dir,
			 (int)getpid(), atomic_fetch_add(&spill_seq, 1));
	else
		snprintf(e->spilldir, sizeof e->spilldir, "%s/.spill", e->tmpdir);
	if (mkdir(e->spilldir, 0700) < 0) {
		rc = keel_errmsg_set(errmsg, -errno, "mr: spill directory %s", e->spilldir);
		goto out;
	}

	e->w = calloc(e->S, sizeof *e->w);
	if (!e->w) {
		rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: shards");
		goto out;
	}
	for (uint32_t i = 0; i < e->S; i++) {
		e->w[i].e = e;
		e->w[i].id = (int)i;
	}
	/* KEEL_MR_EXECUTOR=threads runs on plain threads (tests of the
	 * fallback); otherwise a runtime with one shard per requested core. */
	const char *ex = getenv("KEEL_MR_EXECUTOR");
	bool on_rt = false;
	if (!ex || strcmp(ex, "threads")) {
		struct keel_runtime_config rcfg = {.nshards = e->S, .overcommit = true, .node_id = -1};
		char rterr[KEEL_ERRMSG_LEN] = "";
		int r = keel_runtime_create(&rcfg, &e->rt, rterr);
		if (r == 0) {
			atomic_store(&e->running, 1);
			r = keel_runtime_start(e->rt, rt_shard_init, rt_shard_fini, e);
			if (r == 0) {
				on_rt = true;
			} else {
				snprintf(rterr, sizeof rterr, "%s", keel_runtime_errmsg(e->rt));
				keel_runtime_destroy(e->rt);
				e->rt = NULL;
			}
		}
		if (!on_rt) {
			keel_warn("mr: no runtime (%s): running on plain threads", rterr);
			for (uint32_t i = 0; i < e->S; i++) {
				struct worker *w = &e->w[i];
				if (w->table_ok)
					mr_table_free(&w->t);
				memset(w, 0, sizeof *w);
				w->e = e;
				w->id = (int)i;
			}
			atomic_store(&e->err, 0);
		}
	}
	if (!on_rt) {
		for (uint32_t i = 0; i < e->S; i++) {
			struct worker *w = &e->w[i];
			if ((rc = mr_table_init(&w->t, e->job, e->state, e->R, e->budget, e->spilldir,
						(int)i, errmsg)))
				goto out;
			w->table_ok = true;
			w->emit.t = &w->t;
		}
		pthread_barrier_init(&e->barrier, NULL, e->S);
		atomic_store(&e->running, e->S);
		uint32_t started = 0;
		for (; started < e->S; started++)
			if (pthread_create(&e->w[started].th, NULL, worker_main, &e->w[started]))
				break;
		if (started < e->S) {
			/* Threads already started wait at the barrier forever: not
			 * recoverable; this is resource exhaustion at start-up. */
			keel_error("mr: could not start %u shard threads", e->S);
			abort();
		}
	}
	unsigned iv = cfg->progress_interval_ms ? cfg->progress_interval_ms : 200;
	while (atomic_load(&e->running)) {
		/* Ten naps per report, so a short job ends promptly. */
		for (int k = 0; k < 10 && atomic_load(&e->running); k++) {
			struct timespec sl = {0, (long)iv * 100000L};
			nanosleep(&sl, NULL);
		}
		report(e);
	}
	if (on_rt) {
		keel_runtime_wait(e->rt);
		keel_runtime_destroy(e->rt);
		e->rt = NULL;
	} else {
		for (uint32_t i = 0; i < e->S; i++)
			pthread_join(e->w[i].th, NULL);
		pthread_barrier_destroy(&e->barrier);
	}
	report(e);
	rc = atomic_load(&e->err);
	if (rc) {
		snprintf(errmsg, KEEL_ERRMSG_LEN, "%s", e->errmsg);
		goto out;
	}

	/* Commit: every partition file is fsynced; mark success, then make
	 * the whole directory visible under the output name at once. */
	mr_rmtree(e->spilldir);
	char path[4500];
	snprintf(path, sizeof path, "%s/_SUCCESS", e->tmpdir);
	struct keel_mr_out ok;
	if ((rc = mr_out_open(&ok, path, errmsg)) || (rc = mr_out_close(&ok, errmsg)))
		goto out;
	if (empty_dir)
		rmdir(cfg->output);
	if (rename(e->tmpdir, cfg->output) < 0) {
		rc = keel_errmsg_set(errmsg, -errno, "mr: rename %s to %s", e->tmpdir, cfg->output);
		goto out;
	}
	made_tmp = false;

	uint64_t now = keel_now_ns();
	stats->map_tasks = e->plan.n_splits;
	stats->reduce_tasks = e->R;
	stats->input_files = e->plan.n_files;
	stats->input_bytes = e->plan.total_bytes;
	stats->shards = e->S;
	stats->partitions = e->R;
	stats->nodes = 1;
	stats->epochs = 1;
	stats->local_tasks = e->plan.n_splits;
	for (uint32_t i = 0; i < e->S; i++) {
		struct worker *w = &e->w[i];
		stats->input_records += w->records;
		stats->emitted += w->tc.emitted;
		stats->shuffled += w->tc.shuffled;
		stats->spills += w->tc.spills;
		stats->spill_bytes += w->tc.spill_bytes;
		stats->reduce_keys += w->reduce_keys;
		stats->output_bytes += w->output_bytes;
	}
	stats->map_ns = e->t_map_end - e->t0;
	stats->reduce_ns = now - e->t_map_end;
	stats->total_ns = now - e->t0;
out:
	if (e->w) {
		for (uint32_t i = 0; i < e->S; i++) {
			if (e->w[i].table_ok)
				mr_table_free(&e->w[i].t);
			free(e->w[i].rbuf);
		}
		free(e->w);
	}
	if (made_tmp) {
		mr_rmtree(e->tmpdir);
		if (cfg->spill_dir)
			mr_rmtree(e->spilldir);
	}
	if (rc && empty_dir)
		(void)0; /* the empty output directory the caller gave stays */
	mr_plan_free(&e->plan);
	pthread_mutex_destroy(&e->errmu);
	free(e);
	return rc;
}
