/*
 * compute/mr_agent.c — the node agent: what a node does for a job on its
 * shard 0, driven by the coordinator's messages (compute/mr_msg.h).
 *
 *   JOB      open the job, list and split the input the same way every node
 *            does, sample it the same way (so a range partitioner agrees
 *            everywhere), run the job's setup; READY once every peer is up.
 *   TASKS    queue the map tasks; the shards take them one at a time
 *            (mr_agent_next_task); TASK_DONE per task; SEALED(epoch) once
 *            every shard is idle and the queue is empty.
 *   REDUCE   FETCH partition p from every other node named, collect their
 *            DATA until DATA_END, then hand the attempt to shard p % S; its
 *            result becomes PART_DONE (or ERROR).
 *   FETCH    stream this node's runs of p, merged, to the asking node
 *            (DATA ... DATA_END), paced by the network's backpressure.
 *   FINISH   the job is over: stop.
 * A message of a newer epoch drops the attempts and streams of older ones.
 * Threads and ownership: compute/mr_node.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compute/mr_node.h"

#define DATA_CHUNK (256u << 10)

void mr_attempt_free(struct mr_attempt *a)
{
	for (int i = 0; i < MR_MAXN; i++)
		mr_wbuf_free(&a->remote[i]);
	free(a);
}

static void stream_free(struct mr_stream *st)
{
	mr_merge_end(st->merge);
	for (size_t i = 0; i < st->nsrc; i++)
		mr_source_close(&st->src[i]);
	free(st->src);
	mr_wbuf_free(&st->buf);
	free(st);
}

static void stream_remove(struct mr_node *n, struct mr_stream *st)
{
	struct mr_stream **pp = &n->streams;
	while (*pp != st)
		pp = &(*pp)->next;
	*pp = st->next;
	stream_free(st);
}

void mr_agent_error(struct mr_node *n, const char *msg)
{
	/* The coordinator prints it as the job's error, and on a cluster
	 * "which node" is the first question. */
	char named[KEEL_ERRMSG_LEN + 32];
	if (n->npeers > 0 && strncmp(msg, "mr: node ", 9) != 0) {
		snprintf(named, sizeof named, "mr: node %u: %s", n->self,
			 strncmp(msg, "mr: ", 4) == 0 ? msg + 4 : msg);
		msg = named;
	}
	struct mr_wbuf w = {0};
	if (mr_msg_error_encode(&w, msg) == 0)
		mr_node_send(n, n->coord_node, true, MR_MSG_ERROR, w.p, w.len);
	mr_wbuf_free(&w);
}

static void malformed(struct mr_node *n, uint16_t type, uint32_t from)
{
	char m[KEEL_ERRMSG_LEN];
	snprintf(m, sizeof m, "mr: malformed %s message from node %u", mr_msg_name(type), from);
	mr_agent_error(n, m);
}

/* ---- map ---------------------------------------------------------------- */

static void check_sealed(struct mr_node *n)
{
	if (n->idle == n->S && n->qhead == n->qlen && !n->sealed_sent) {
		n->sealed_sent = true;
		uint8_t b[4];
		mr_msg_u32_encode(b, n->epoch);
		mr_node_send(n, n->coord_node, true, MR_MSG_SEALED, b, sizeof b);
	}
}

void *mr_agent_next_task(struct keel_shard *on, void *arg)
{
	(void)on;
	struct mr_shard *s = arg;
	struct mr_node *n = s->n;
	if (atomic_load(&n->err) || n->qhead == n->qlen)
		return NULL;
	return (void *)(uintptr_t)(n->queue[n->qhead++] + 1);
}

void mr_agent_task_done(struct keel_shard *on, void *arg)
{
	(void)on;
	struct mr_task_msg *m = arg;
	struct mr_node *n = m->n;
	if (m->rc) {
		mr_agent_error(n, m->err);
	} else if (m->task != MR_NO_TASK) {
		uint8_t b[4];
		mr_msg_u32_encode(b, m->task);
		mr_node_send(n, n->coord_node, true, MR_MSG_TASK_DONE, b, sizeof b);
	}
	free(m);
}

void mr_agent_shard_idle(struct keel_shard *on, void *arg)
{
	(void)on;
	struct mr_shard *s = arg;
	struct mr_node *n = s->n;
	if (!n->shard_idle[s->id]) {
		n->shard_idle[s->id] = true;
		n->idle++;
	}
	check_sealed(n);
}

/* A newer epoch: partial reduces and streams of older ones are void. */
static void new_epoch(struct mr_node *n, uint32_t e)
{
	n->epoch = e;
	struct mr_attempt **pa = &n->waiting;
	while (*pa) {
		if ((*pa)->epoch < e) {
			struct mr_attempt *a = *pa;
			*pa = a->next;
			mr_attempt_free(a);
		} else {
			pa = &(*pa)->next;
		}
	}
	struct mr_stream **ps = &n->streams;
	while (*ps) {
		if ((*ps)->epoch < e) {
			struct mr_stream *st = *ps;
			*ps = st->next;
			stream_free(st);
		} else {
			ps = &(*ps)->next;
		}
	}
}

static void on_tasks(struct mr_node *n, uint32_t from, const void *d, size_t len)
{
	struct mr_tasks_msg m;
	if (mr_msg_tasks_decode(d, len, &m)) {
		malformed(n, MR_MSG_TASKS, from);
		return;
	}
	if (!n->have_job || from != n->coord_node || m.epoch < n->epoch)
		return;
	for (uint32_t i = 0; i < m.n; i++)
		if (mr_tasks_msg_at(&m, i) >= n->plan.n_splits) {
			char e[KEEL_ERRMSG_LEN];
			snprintf(e, sizeof e, "mr: TASKS names task %u of %zu", mr_tasks_msg_at(&m, i),
				 n->plan.n_splits);
			mr_agent_error(n, e);
			return;
		}
	if (m.epoch > n->epoch)
		new_epoch(n, m.epoch);
	if (n->qlen + m.n > n->qcap) {
		size_t nc = n->qlen + m.n + 64;
		uint32_t *q = realloc(n->queue, nc * sizeof *q);
		if (!q) {
			mr_agent_error(n, "mr: task queue: out of memory");
			return;
		}
		n->queue = q;
		n->qcap = nc;
	}
	for (uint32_t i = 0; i < m.n; i++)
		n->queue[n->qlen++] = mr_tasks_msg_at(&m, i);
	n->sealed_sent = false;
	for (unsigned j = 0; j < n->S; j++)
		if (n->shard_idle[j] && n->qhead < n->qlen) {
			n->shard_idle[j] = false;
			n->idle--;
			keel_shard_post(n->sh0, j, mr_exec_map_next, &n->sh[j]);
		}
	check_sealed(n);
}

/* ---- streams to other nodes -------------------------------------------- */

/* Sends as much of the stream as the network takes; resumes from
 * mr_agent_writable after KEEL_EFULL. A message built but refused stays in
 * st->buf (its pairs are already popped from the merge). */
static void stream_pump(struct mr_node *n, struct mr_stream *st)
{
	for (;;) {
		const uint8_t *k, *v;
		uint32_t kl, vl;
		if (!st->built) {
			if (!mr_merge_peek(st->merge, &k, &kl, &v, &vl)) {
				uint8_t hdr[8];
				mr_msg_ep_encode(hdr, st->epoch, st->p);
				int rc = mr_net_send(n->net, st->to, MR_MSG_DATA_END, hdr, sizeof hdr);
				if (rc == KEEL_EFULL)
					return;
				/* Done (or the link broke: the coordinator handles it). */
				stream_remove(n, st);
				return;
			}
			size_t first = MR_MSG_PAIR_HDR + (size_t)kl + vl;
			size_t cap = MR_MSG_DATA_HDR + (first > DATA_CHUNK ? first : DATA_CHUNK);
			st->buf.len = 0;
			uint8_t hdr[8];
			mr_msg_ep_encode(hdr, st->epoch, st->p);
			mr_wbuf_put(&st->buf, hdr, sizeof hdr);
			while (mr_merge_peek(st->merge, &k, &kl, &v, &vl) &&
			       st->buf.len + MR_MSG_PAIR_HDR + kl + vl <= cap) {
				uint8_t *at = mr_wbuf_grow(&st->buf, MR_MSG_PAIR_HDR + (size_t)kl + vl);
				if (!at)
					break;
				mr_msg_pair_put(at, k, kl, v, vl);
				if (mr_merge_pop(st->merge)) {
					mr_agent_error(n, "mr: shuffle: reading a local run failed");
					stream_remove(n, st);
					return;
				}
			}
			if (st->buf.oom) {
				mr_agent_error(n, "mr: shuffle: out of memory");
				stream_remove(n, st);
				return;
			}
			st->built = true;
		}
		int rc = mr_net_send(n->net, st->to, MR_MSG_DATA, st->buf.p, st->buf.len);
		if (rc == KEEL_EFULL)
			return;
		st->built = false;
		if (rc) {
			if (rc != KEEL_ECLOSED)
				mr_agent_error(n, "mr: shuffle: cannot send a partition to a node");
			stream_remove(n, st);
			return;
		}
	}
}

void mr_agent_writable(struct mr_node *n, uint32_t to)
{
	for (struct mr_stream *st = n->streams, *nx; st; st = nx) {
		nx = st->next;
		if (st->to == to)
			stream_pump(n, st);
	}
}

static void on_fetch(struct mr_node *n, uint32_t from, uint32_t e, uint32_t p)
{
	if (e != n->epoch || p >= n->R || from >= MR_MAXN || !n->peer[from] || !n->net)
		return;
	struct mr_stream *st = calloc(1, sizeof *st);
	if (!st) {
		mr_agent_error(n, "mr: shuffle: out of memory");
		return;
	}
	*st = (struct mr_stream){.epoch = e, .p = p, .to = from};
	char em[KEEL_ERRMSG_LEN] = "mr: shuffle";
	int rc = mr_exec_local_sources(n, p, n->q0, &st->src, &st->nsrc, 0, em);
	if (!rc)
		rc = mr_merge_begin(&st->merge, st->src, st->nsrc, NULL, NULL, NULL, em);
	if (rc) {
		stream_free(st);
		mr_agent_error(n, em);
		return;
	}
	st->next = n->streams;
	n->streams = st;
	stream_pump(n, st);
}

/* ---- reduce ------------------------------------------------------------- */

static struct mr_attempt *find_attempt(struct mr_node *n, uint32_t e, uint32_t p, bool unlink)
{
	for (struct mr_attempt **pa = &n->waiting; *pa; pa = &(*pa)->next)
		if ((*pa)->epoch == e && (*pa)->p == p) {
			struct mr_attempt *a = *pa;
			if (unlink)
				*pa = a->next;
			return a;
		}
	return NULL;
}

static void on_reduce(struct mr_node *n, uint32_t from, const struct mr_reduce_msg *m)
{
	if (from != n->coord_node || m->epoch != n->epoch || m->p >= n->R || find_attempt(n, m->epoch, m->p, false))
		return;
	for (uint32_t i = 0; i < m->n; i++)
		if (m->nodes[i] >= MR_MAXN || (m->nodes[i] != n->self && !n->peer[m->nodes[i]])) {
			char e[KEEL_ERRMSG_LEN];
			snprintf(e, sizeof e, "mr: REDUCE names node %u, not in this node's configuration",
				 m->nodes[i]);
			mr_agent_error(n, e);
			return;
		}
	struct mr_attempt *a = calloc(1, sizeof *a);
	if (!a) {
		mr_agent_error(n, "mr: reduce: out of memory");
		return;
	}
	a->n = n;
	a->epoch = m->epoch;
	a->p = m->p;
	uint8_t hdr[8];
	mr_msg_ep_encode(hdr, m->epoch, m->p);
	for (uint32_t i = 0; i < m->n; i++) {
		uint32_t x = m->nodes[i];
		if (x == n->self || a->want[x])
			continue;
		a->want[x] = true;
		a->pending++;
		mr_node_send(n, x, false, MR_MSG_FETCH, hdr, sizeof hdr);
	}
	if (a->pending == 0) {
		mr_exec_reduce(n, a);
		return;
	}
	a->next = n->waiting;
	n->waiting = a;
}

static void on_data(struct mr_node *n, uint32_t from, const void *d, size_t len)
{
	uint32_t e, p;
	const uint8_t *pairs;
	size_t plen;
	if (mr_msg_data_decode(d, len, &e, &p, &pairs, &plen)) {
		malformed(n, MR_MSG_DATA, from);
		return;
	}
	struct mr_attempt *a = find_attempt(n, e, p, false);
	if (!a || from >= MR_MAXN || !a->want[from] || a->ended[from])
		return;
	mr_wbuf_put(&a->remote[from], pairs, plen);
	if (a->remote[from].oom)
		mr_agent_error(n, "mr: shuffle: out of memory");
}

static void on_data_end(struct mr_node *n, uint32_t from, uint32_t e, uint32_t p)
{
	struct mr_attempt *a = find_attempt(n, e, p, false);
	if (!a || from >= MR_MAXN || !a->want[from] || a->ended[from])
		return;
	a->ended[from] = true;
	if (--a->pending == 0) {
		find_attempt(n, e, p, true);
		mr_exec_reduce(n, a);
	}
}

void mr_agent_part_result(struct keel_shard *on, void *arg)
{
	(void)on;
	struct mr_part_msg *m = arg;
	struct mr_node *n = m->n;
	if (m->rc) {
		if (m->epoch == n->epoch)
			mr_agent_error(n, m->err);
	} else {
		struct mr_wbuf w = {0};
		if (mr_msg_part_done_encode(&w, m->epoch, m->p, m->path) == 0)
			mr_node_send(n, n->coord_node, true, MR_MSG_PART_DONE, w.p, w.len);
		mr_wbuf_free(&w);
	}
	free(m);
}

/* ---- the job ------------------------------------------------------------ */

static void maybe_ready(struct mr_node *n)
{
	if (!n->have_job || n->ready_sent)
		return;
	for (uint32_t x = 0; x < MR_MAXN; x++)
		if (n->peer[x] && !n->up[x])
			return;
	n->ready_sent = true;
	/* READY carries the split count and the directory whose files this
	 * node holds ([mr] data = DIR in its configuration), for locality. */
	char abs[4096] = "";
	const char *data = n->have_cfg ? keel_node_config_get(&n->cfg, "mr", "data") : NULL;
	if (data && !realpath(data, abs))
		abs[0] = 0;
	struct mr_wbuf w = {0};
	if (mr_msg_ready_encode(&w, (uint32_t)n->plan.n_splits, abs) == 0)
		mr_node_send(n, n->coord_node, true, MR_MSG_READY, w.p, w.len);
	mr_wbuf_free(&w);
}

void mr_agent_peers_up(struct mr_node *n)
{
	maybe_ready(n);
}

static int job_setup(struct mr_node *n, const struct mr_job_msg *m, char *em)
{
	n->R = m->R;
	n->budget = m->budget;
	n->no_fsync = m->no_fsync;
	snprintf(n->tmpdir, sizeof n->tmpdir, "%s", m->tmpdir);
	static _Atomic unsigned spill_seq;
	if (n->is_coord && n->mcfg->spill_dir)
		snprintf(n->spilldir, sizeof n->spilldir, "%s/keel-spill.%d.%u", n->mcfg->spill_dir,
			 (int)getpid(), atomic_fetch_add(&spill_seq, 1));
	else
		snprintf(n->spilldir, sizeof n->spilldir, "%s/.spill-n%u", n->tmpdir, n->self);
	int rc;
	if (n->is_coord) {
		/* This process's own job (a job struct need not be openable by
		 * name: a test's, or a program's). */
		n->job = n->mcfg->job;
	} else {
		if ((rc = keel_mr_job_open(&n->own_job, m->spec, m->arg[0] ? m->arg : NULL, em)))
			return rc;
		n->job = &n->own_job;
	}
	const struct keel_mr_job *job = n->job->job;
	if ((rc = mr_plan_build(&n->plan, (const char *const *)m->inputs, m->n_inputs, job, m->split,
				em)))
		return rc;
	if (job->setup) {
		struct keel_mr_record *samples = NULL;
		size_t ns = 0;
		if (job->sample && (rc = mr_plan_sample(&n->plan, job, job->sample, &samples, &ns, em)))
			return rc;
		char e2[KEEL_ERRMSG_LEN] = "";
		rc = job->setup(n->job->state, samples, ns, n->R, e2);
		mr_samples_free(samples, ns);
		if (rc) {
			snprintf(em, KEEL_ERRMSG_LEN, "mr: job %.40s setup: %.180s", job->name, e2);
			return rc;
		}
	}
	if (mkdir(n->spilldir, 0700) < 0 && errno != EEXIST)
		return keel_errmsg_set(em, -errno, "mr: spill directory %s", n->spilldir);
	return 0;
}

static void on_job(struct mr_node *n, uint32_t from, const void *d, size_t len)
{
	if (n->have_job)
		return;
	n->coord_node = from;
	struct mr_job_msg m;
	char em[KEEL_ERRMSG_LEN] = "mr: malformed JOB message";
	int rc = mr_job_msg_decode(d, len, &m);
	if (!rc)
		rc = job_setup(n, &m, em);
	mr_job_msg_free(&m);
	if (rc) {
		mr_agent_error(n, em);
		return;
	}
	n->have_job = true;
	maybe_ready(n);
}

void mr_agent_recv(struct mr_node *n, uint32_t from, uint16_t type, const void *d, size_t len)
{
	uint32_t e, p;
	switch (type) {
	case MR_MSG_JOB:
		on_job(n, from, d, len);
		break;
	case MR_MSG_TASKS:
		on_tasks(n, from, d, len);
		break;
	case MR_MSG_REDUCE: {
		struct mr_reduce_msg m;
		if (mr_msg_reduce_decode(d, len, &m))
			malformed(n, type, from);
		else if (n->have_job)
			on_reduce(n, from, &m);
		break;
	}
	case MR_MSG_FETCH:
		if (mr_msg_ep_decode(d, len, &e, &p))
			malformed(n, type, from);
		else if (n->have_job)
			on_fetch(n, from, e, p);
		break;
	case MR_MSG_DATA:
		on_data(n, from, d, len);
		break;
	case MR_MSG_DATA_END:
		if (mr_msg_ep_decode(d, len, &e, &p))
			malformed(n, type, from);
		else
			on_data_end(n, from, e, p);
		break;
	case MR_MSG_FINISH:
		if (from != n->coord_node && n->have_job)
			break;
		n->exit_ok = true;
		atomic_store(&n->finished, 1);
		if (!n->is_coord)
			keel_runtime_stop(n->rt);
		break;
	default:
		keel_warn("mr: node %u: unexpected message type %u (%s) from node %u", n->self, type,
			  mr_msg_name(type), from);
	}
}

void mr_agent_fini(struct mr_node *n)
{
	for (struct mr_attempt *a = n->waiting, *nx; a; a = nx) {
		nx = a->next;
		mr_attempt_free(a);
	}
	n->waiting = NULL;
	for (struct mr_stream *st = n->streams, *nx; st; st = nx) {
		nx = st->next;
		stream_free(st);
	}
	n->streams = NULL;
}
