/*
 * compute/mr_engine.c — running a job on this node: planning, the map phase
 * on every shard, the reduce phase (R partitions spread over the shards,
 * each a k-way merge of that partition's runs from every shard), and the
 * atomic commit of the output directory.
 *
 * Each shard owns its combining table and spill files outright during the
 * map phase (no locks on the emit path; map tasks are handed out through
 * one atomic counter, so a fast shard takes more of them). The phase
 * barrier publishes the sorted runs; in the reduce phase shards only read
 * each other's runs (by pointer for memory runs, through their own io_uring
 * for spill files), and a second barrier keeps every run alive until all
 * partitions are reduced, after which each shard frees its own.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compute/mr_internal.h"

struct keel_mr_emit {
	struct mr_table *t;
};

int keel_mr_emit(struct keel_mr_emit *e, const void *key, size_t klen, const void *val, size_t vlen)
{
	return mr_table_add(e->t, key, klen, val, vlen);
}

struct engine;

struct worker {
	struct engine *e;
	int id;
	pthread_t th;
	struct mr_table t;
	struct keel_mr_emit emit;
	uint8_t *rbuf;
	size_t rcap;
	uint64_t records;
	uint64_t reduce_keys, output_bytes;
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
		struct worker *w = &e->w[i];
		w->e = e;
		w->id = (int)i;
		if ((rc = mr_table_init(&w->t, e->job, e->state, e->R, e->budget, e->spilldir, (int)i,
					errmsg)))
			goto out;
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
	unsigned iv = cfg->progress_interval_ms ? cfg->progress_interval_ms : 200;
	while (atomic_load(&e->running)) {
		/* Ten naps per report, so a short job ends promptly. */
		for (int k = 0; k < 10 && atomic_load(&e->running); k++) {
			struct timespec sl = {0, (long)iv * 100000L};
			nanosleep(&sl, NULL);
		}
		report(e);
	}
	for (uint32_t i = 0; i < e->S; i++)
		pthread_join(e->w[i].th, NULL);
	pthread_barrier_destroy(&e->barrier);
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
	for (uint32_t i = 0; i < e->S; i++) {
		struct worker *w = &e->w[i];
		stats->input_records += w->records;
		stats->emitted += w->t.emitted;
		stats->shuffled += w->t.shuffled;
		stats->spills += w->t.n_spills;
		stats->spill_bytes += w->t.spill_bytes;
		stats->reduce_keys += w->reduce_keys;
		stats->output_bytes += w->output_bytes;
	}
	stats->map_ns = e->t_map_end - e->t0;
	stats->reduce_ns = now - e->t_map_end;
	stats->total_ns = now - e->t0;
out:
	if (e->w) {
		for (uint32_t i = 0; i < e->S; i++) {
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
