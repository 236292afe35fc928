/*
 * compute/mr_cluster.c — a map-reduce job across nodes: a coordinator that
 * tracks tasks and partitions, workers that run map tasks on their shards,
 * and a shuffle between nodes through the transport (include/keel/transport.h)
 * with its backpressure.
 *
 * Every node (the coordinator's own included) runs the same node agent on
 * its shard 0, which owns the node's one transport endpoint; node i dials
 * every node j < i, so each pair shares one authenticated connection.
 *
 * Job, in messages (coordinator C, node agents N):
 *   C→N JOB       spec, argument, inputs, temporary output dir, R, budget.
 *                 Every node lists and splits the input the same way (the
 *                 local cluster shares one filesystem) and samples it the
 *                 same way, so the range partitioner agrees everywhere.
 *   N→C READY     its split count, once connected to every other node.
 *   C→N TASKS     epoch + the map tasks given to that node. The node's
 *                 shards take them one at a time (keel_shard_call to shard
 *                 0), fold map output into their combining tables, and when
 *                 the node's queue is empty each shard seals its table as one
 *                 more immutable generation of sorted runs.
 *   N→C TASK_DONE per task (progress); SEALED(epoch) when the node is idle.
 *   C→N REDUCE    epoch, partition p, the live nodes. The node FETCHes p
 *                 from every other live node, which streams its local runs
 *                 of p merged (DATA ... DATA_END, paced by KEEL_EFULL and
 *                 on_writable), then shard p % S merges those with the
 *                 node's own runs, reduces, and writes part-p.e<epoch>.n<id>.
 *   N→C PART_DONE C renames that file to part-p if the epoch is current
 *                 (else deletes it). When every partition is renamed, C
 *                 writes _SUCCESS and renames the directory (as one node).
 *   C→N FINISH    the nodes free their state and exit.
 * Failure: when C's connection to a node breaks, the node is dead: the
 * epoch goes up, every task it ran or was running (its map outputs lived in
 * its memory) is handed to the live nodes in TASKS(epoch+1), partitions not
 * yet renamed are reduced again once every live node is SEALED in the new
 * epoch, and files of older epochs are ignored. A node that receives a newer
 * epoch drops the fetches and partial partitions of older ones. So the
 * answer is exact: each task's output is counted once, from a live node.
 * Not handled: the coordinator's own death; a broken link between two live
 * workers (the job then waits; C's links are the failure detector).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compute/mr_internal.h"
#include "keel/config.h"
#include "keel/runtime.h"
#include "keel/transport.h"

#define MAXN 64       /* node ids 1..63 */
#define MAX_GENS 64
#define DATA_CHUNK (256u << 10)
#define REDUCE_BATCH 4096

enum {
	M_JOB = 0x4d01, M_READY, M_TASKS, M_TASK_DONE, M_SEALED, M_REDUCE, M_FETCH, M_DATA,
	M_DATA_END, M_PART_DONE, M_FINISH, M_ERROR,
};

/* ---- little-endian message codec (bounds-checked) ------------------- */

struct wbuf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

static void w_put(struct wbuf *w, const void *d, size_t n)
{
	if (w->len + n > w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 256;
		while (nc < w->len + n)
			nc *= 2;
		uint8_t *p = realloc(w->p, nc);
		if (!p) {
			w->oom = true;
			return;
		}
		w->p = p;
		w->cap = nc;
	}
	memcpy(w->p + w->len, d, n);
	w->len += n;
}
static void w_u32(struct wbuf *w, uint32_t v) { w_put(w, &v, 4); }
static void w_u64(struct wbuf *w, uint64_t v) { w_put(w, &v, 8); }
static void w_str(struct wbuf *w, const char *s)
{
	uint32_t n = (uint32_t)strlen(s);
	w_u32(w, n);
	w_put(w, s, n);
}

struct rbuf {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};
static bool r_get(struct rbuf *r, void *d, size_t n)
{
	if (r->bad || r->len - r->pos < n) {
		r->bad = true;
		memset(d, 0, n);
		return false;
	}
	memcpy(d, r->p + r->pos, n);
	r->pos += n;
	return true;
}
static uint32_t r_u32(struct rbuf *r)
{
	uint32_t v;
	r_get(r, &v, 4);
	return v;
}
static uint64_t r_u64(struct rbuf *r)
{
	uint64_t v;
	r_get(r, &v, 8);
	return v;
}
/* A string copied into a malloc'd NUL-terminated buffer (NULL if bad). */
static char *r_str(struct rbuf *r)
{
	uint32_t n = r_u32(r);
	if (r->bad || n > 65536 || r->len - r->pos < n) {
		r->bad = true;
		return NULL;
	}
	char *s = malloc(n + 1);
	if (!s) {
		r->bad = true;
		return NULL;
	}
	memcpy(s, r->p + r->pos, n);
	s[n] = 0;
	r->pos += n;
	return s;
}

/* ---- state ------------------------------------------------------------ */

struct cnode;

struct cshard {
	struct cnode *n;
	unsigned id;
	struct keel_shard *sh;
	/* map */
	struct mr_table *cur;
	struct mr_table *gens[MAX_GENS];
	_Atomic unsigned ngens; /* sealed generations, published with release */
	struct keel_mr_emit emit;
	uint8_t *rbuf;
	size_t rcap;
	struct mr_scan scan;
	bool scanning;
	int task;
	struct keel_io_op rd;
	uint64_t records;
	/* reduce: a FIFO of attempts */
	struct attempt *rq_head, *rq_tail;
	struct attempt *ra;
	struct mr_source *src;
	size_t nsrc;
	struct mr_merge *merge;
	struct mr_merge_stats ms;
	struct keel_mr_out out;
	bool out_open;
	struct io_uring ring;
	bool ring_ok;
	char errmsg[KEEL_ERRMSG_LEN];
} KEEL_CACHE_ALIGNED;

/* A reduce of partition p in one epoch on this node. */
struct attempt {
	struct cnode *n;
	uint32_t epoch, p;
	unsigned pending;         /* remote streams not yet ended */
	struct wbuf remote[MAXN]; /* pairs received from each node */
	bool want[MAXN];
	char path[4600];
	struct attempt *next;
};

/* One partition this node streams to another. */
struct stream {
	uint32_t epoch, p, to;
	struct mr_source *src;
	size_t nsrc;
	struct mr_merge *merge;
	bool end_pending;
	struct stream *next;
};

struct coord {
	bool active;
	uint32_t ntasks, nparts;
	uint64_t total_bytes;
	char *data_dir[MAXN]; /* what each node holds (READY), "" if nothing */
	char **task_path;     /* absolute path of each task's file */
	uint64_t local_tasks; /* tasks done on a node holding their file */
	int32_t *task_node;  /* -1 unassigned */
	bool *task_done;
	uint64_t *task_bytes;
	uint8_t *part_state; /* 0 pending, 1 running, 2 committed */
	bool ready[MAXN], sealed[MAXN];
	uint32_t epoch;
	bool reducing;
	uint32_t committed;
	uint32_t rr;
};

struct cnode {
	struct keel_node_config cfg;
	struct keel_runtime *rt;
	struct keel_transport *t;
	struct keel_shard *sh0;
	unsigned S;
	uint32_t self;
	bool peer[MAXN];     /* configured nodes (self excluded) */
	struct keel_conn *conn[MAXN];
	bool live[MAXN];
	struct keel_timer dial_timer;
	uint64_t start_ns;
	uint32_t coord_node;
	bool is_coord;
	struct cshard *sh;
	/* job (every node) */
	bool have_job;
	struct keel_mr_jobref job;
	struct mr_plan plan;
	uint32_t R;
	uint64_t budget;
	bool no_fsync;
	char tmpdir[4200];
	char spilldir[4400];
	bool ready_sent;
	/* node-agent map state (shard 0) */
	uint32_t epoch;
	uint32_t *queue;
	size_t qhead, qlen, qcap;
	unsigned idle;
	bool *shard_idle;
	bool sealed_sent;
	struct attempt *waiting;
	struct stream *streams;
	struct io_uring ring0;
	bool ring0_ok;
	/* coordinator */
	struct coord c;
	const struct keel_mr_config *mcfg;
	/* results, read by the caller's thread */
	_Atomic int err;
	char errmsg[KEEL_ERRMSG_LEN];
	pthread_mutex_t errmu;
	_Atomic uint64_t tasks_done, bytes_done, parts_done;
	_Atomic int finished;
	uint64_t output_bytes;
	bool exit_ok;
	uint64_t agent_tasks;
	struct keel_timer stop_timer, start_timer;
	uint32_t npeers;
};

static void agent_recv(struct cnode *n, uint32_t from, uint16_t type, const void *d, size_t len);
static void coord_recv(struct cnode *n, uint32_t from, uint16_t type, const void *d, size_t len);
static void cs_map_next(struct keel_shard *sh, void *arg);
static void cs_reduce_next(struct cshard *s);

static void node_fail(struct cnode *n, int rc, const char *msg)
{
	pthread_mutex_lock(&n->errmu);
	if (!atomic_load(&n->err)) {
		snprintf(n->errmsg, sizeof n->errmsg, "%s", msg);
		atomic_store(&n->err, rc ? rc : KEEL_EBADJOB);
	}
	pthread_mutex_unlock(&n->errmu);
}

/* Test hook: KEEL_MR_TEST_CRASH="node:tasks" makes that node's process die
 * (_exit, as a kill would) after finishing that many map tasks;
 * "node:reduce" dies on its first REDUCE. */
static void maybe_crash(struct cnode *n, bool at_reduce, uint64_t tasks)
{
	const char *h = getenv("KEEL_MR_TEST_CRASH");
	if (!h)
		return;
	unsigned node = 0;
	char what[32] = "";
	if (sscanf(h, "%u:%31s", &node, what) != 2 || node != n->self)
		return;
	if (at_reduce ? !strcmp(what, "reduce") : (strcmp(what, "reduce") && tasks >= strtoull(what, NULL, 10))) {
		fprintf(stderr, "keel mr: test hook: node %u crashes now\n", n->self);
		_exit(137);
	}
}

/* ---- sending ---------------------------------------------------------- */

struct loopback {
	struct cnode *n;
	uint32_t from;
	uint16_t type;
	bool to_coord;
	size_t len;
	uint8_t data[];
};

static void loopback_run(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct loopback *l = arg;
	if (l->to_coord)
		coord_recv(l->n, l->from, l->type, l->data, l->len);
	else
		agent_recv(l->n, l->from, l->type, l->data, l->len);
	free(l);
}

/* A control message to node `to`'s agent (or, to_coord, its coordinator).
 * To this node it goes through shard 0's own ring, so handlers never
 * re-enter each other. */
static int send_ctl(struct cnode *n, uint32_t to, bool to_coord, uint16_t type, const void *d,
		    size_t len)
{
	if (to == n->self) {
		struct loopback *l = malloc(sizeof *l + len);
		if (!l)
			return -ENOMEM;
		*l = (struct loopback){.n = n, .from = n->self, .type = type, .to_coord = to_coord, .len = len};
		memcpy(l->data, d, len);
		return keel_shard_post(n->sh0, 0, loopback_run, l);
	}
	if (to >= MAXN || !n->conn[to])
		return KEEL_ECLOSED;
	int rc = keel_transport_send(n->conn[to], type, d, (uint32_t)len);
	if (rc)
		keel_warn("mr: message %u to node %u: %s", type, to, keel_strerror(rc));
	return rc;
}

/* Tells the coordinator this node failed the job. The message gets the
 * node's id unless it already names one: the coordinator prints it as the
 * job's error, and "which node" is the first question. */
static void send_error(struct cnode *n, const char *msg)
{
	char named[KEEL_ERRMSG_LEN + 32];
	if (strncmp(msg, "mr: ", 4) == 0 && strncmp(msg, "mr: node ", 9) != 0) {
		snprintf(named, sizeof named, "mr: node %u: %s", n->self, msg + 4);
		msg = named;
	}
	struct wbuf w = {0};
	w_str(&w, msg);
	if (!w.oom)
		send_ctl(n, n->coord_node, true, M_ERROR, w.p, w.len);
	free(w.p);
}

/* ---- map on the shards ------------------------------------------------ */

static int cs_on_record(void *arg, const struct keel_mr_record *rec)
{
	struct cshard *s = arg;
	s->n->job.job->map(s->n->job.state, rec, &s->emit);
	s->records++;
	return s->cur->err;
}

static void agent_task_done(struct keel_shard *sh, void *arg);
static void agent_shard_idle(struct keel_shard *sh, void *arg);

struct task_msg {
	struct cnode *n;
	uint32_t task;
	int rc;
	char err[KEEL_ERRMSG_LEN];
};

static void cs_task_end(struct cshard *s, int rc, const char *err)
{
	mr_scan_close(&s->scan);
	s->scanning = false;
	struct task_msg *m = calloc(1, sizeof *m);
	if (m) {
		m->n = s->n;
		m->task = (uint32_t)s->task;
		m->rc = rc;
		if (rc)
			snprintf(m->err, sizeof m->err, "%s", err);
		keel_shard_post(s->sh, 0, agent_task_done, m);
	}
	s->task = -1;
	keel_shard_post(s->sh, s->id, cs_map_next, s);
}

static void cs_read_next(struct cshard *s)
{
	void *dst;
	size_t len;
	uint64_t off;
	if (!mr_scan_next_read(&s->scan, &dst, &len, &off)) {
		cs_task_end(s, 0, NULL);
		return;
	}
	struct io_uring_sqe *sqe = keel_shard_get_sqe(s->sh, &s->rd);
	io_uring_prep_read(sqe, s->scan.fd, dst, (unsigned)len, off);
}

static void cs_read_done(struct keel_io_op *op, int32_t res, uint32_t flags)
{
	(void)flags;
	struct cshard *s = (struct cshard *)((char *)op - offsetof(struct cshard, rd));
	if (res == -EINTR || res == -EAGAIN) {
		cs_read_next(s);
		return;
	}
	uint64_t dummy = 0;
	int rc = mr_scan_complete(&s->scan, res, cs_on_record, s, &dummy, s->errmsg);
	if (rc) {
		cs_task_end(s, rc, s->cur->err ? s->cur->errmsg : s->errmsg);
		return;
	}
	cs_read_next(s);
}

/* Runs on shard 0: the next task of the node's queue, or none. */
static void *agent_give_task(struct keel_shard *on, void *arg)
{
	(void)on;
	struct cshard *s = arg;
	struct cnode *n = s->n;
	if (atomic_load(&n->err) || n->qhead == n->qlen)
		return NULL;
	return (void *)(uintptr_t)(n->queue[n->qhead++] + 1);
}

static void cs_got_task(struct keel_shard *sh, void *result, void *arg)
{
	struct cshard *s = arg;
	struct cnode *n = s->n;
	if (!result) {
		/* No task left: seal this generation (immutable from now on). */
		if (s->cur) {
			int rc = mr_table_finish(s->cur);
			unsigned g = atomic_load(&s->ngens);
			if (rc || g >= MAX_GENS) {
				send_error(n, rc ? s->cur->errmsg : "mr: too many map generations");
			} else {
				s->gens[g] = s->cur;
				atomic_store_explicit(&s->ngens, g + 1, memory_order_release);
			}
			s->cur = NULL;
		}
		keel_shard_post(sh, 0, agent_shard_idle, s);
		return;
	}
	s->task = (int)((uintptr_t)result - 1);
	if (!s->cur) {
		s->cur = calloc(1, sizeof *s->cur);
		int rc = s->cur ? mr_table_init(s->cur, n->job.job, n->job.state, n->R, n->budget,
						n->spilldir, (int)(s->id * 1000 + atomic_load(&s->ngens)),
						s->errmsg)
				: -ENOMEM;
		if (rc) {
			free(s->cur);
			s->cur = NULL;
			cs_task_end(s, rc, s->errmsg);
			return;
		}
		s->emit.t = s->cur;
	}
	int rc = mr_scan_open(&s->scan, &n->plan, &n->plan.splits[s->task], n->job.job, &s->rbuf,
			      &s->rcap, s->errmsg);
	s->scanning = true;
	if (rc) {
		cs_task_end(s, rc, s->errmsg);
		return;
	}
	cs_read_next(s);
}

static void cs_map_next(struct keel_shard *sh, void *arg)
{
	struct cshard *s = arg;
	keel_shard_call(sh, 0, agent_give_task, cs_got_task, s);
}

/* ---- node agent (shard 0) --------------------------------------------- */

static void agent_check_sealed(struct cnode *n)
{
	if (n->idle == n->S && n->qhead == n->qlen && !n->sealed_sent) {
		n->sealed_sent = true;
		uint32_t e = n->epoch;
		send_ctl(n, n->coord_node, true, M_SEALED, &e, 4);
	}
}

static void agent_task_done(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct task_msg *m = arg;
	struct cnode *n = m->n;
	if (m->rc) {
		send_error(n, m->err);
	} else {
		uint32_t t = m->task;
		send_ctl(n, n->coord_node, true, M_TASK_DONE, &t, 4);
		maybe_crash(n, false, ++n->agent_tasks);
	}
	free(m);
}

static void agent_shard_idle(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct cshard *s = arg;
	struct cnode *n = s->n;
	if (!n->shard_idle[s->id]) {
		n->shard_idle[s->id] = true;
		n->idle++;
	}
	agent_check_sealed(n);
}

static void drop_attempt(struct attempt *a)
{
	for (int i = 0; i < MAXN; i++)
		free(a->remote[i].p);
	free(a);
}

static void stream_free(struct stream *st)
{
	mr_merge_end(st->merge);
	for (size_t i = 0; i < st->nsrc; i++)
		mr_source_close(&st->src[i]);
	free(st->src);
	free(st);
}

/* A newer epoch: partial reduces and streams of older ones are void. */
static void agent_new_epoch(struct cnode *n, uint32_t e)
{
	n->epoch = e;
	struct attempt **pa = &n->waiting;
	while (*pa) {
		if ((*pa)->epoch < e) {
			struct attempt *a = *pa;
			*pa = a->next;
			drop_attempt(a);
		} else {
			pa = &(*pa)->next;
		}
	}
	struct stream **ps = &n->streams;
	while (*ps) {
		if ((*ps)->epoch < e) {
			struct stream *st = *ps;
			*ps = st->next;
			stream_free(st);
		} else {
			ps = &(*ps)->next;
		}
	}
}

/* Sources for partition p from every local shard's sealed generations. */
static int local_sources(struct cnode *n, uint32_t p, struct io_uring *ring, struct mr_source **out,
			 size_t *nout, size_t extra, char *errmsg)
{
	size_t cnt = extra;
	unsigned ng[64];
	for (unsigned j = 0; j < n->S; j++) {
		ng[j] = atomic_load_explicit(&n->sh[j].ngens, memory_order_acquire);
		for (unsigned g = 0; g < ng[j]; g++)
			cnt += 1 + n->sh[j].gens[g]->n_spills;
	}
	struct mr_source *src = calloc(cnt ? cnt : 1, sizeof *src);
	if (!src)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: sources");
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
						    ring, errmsg);
			}
		}
	*out = src;
	*nout = k;
	return rc;
}

static void stream_pump(struct cnode *n, struct stream *st);

static void agent_pump_conn(struct cnode *n, uint32_t to)
{
	for (struct stream *st = n->streams, *nx; st; st = nx) {
		nx = st->next;
		if (st->to == to)
			stream_pump(n, st);
	}
}

/* Sends as much of the stream as the connection takes; resumes from
 * on_writable after KEEL_EFULL. */
static void stream_pump(struct cnode *n, struct stream *st)
{
	struct keel_conn *c = n->conn[st->to];
	if (!c)
		return;
	for (;;) {
		const uint8_t *k, *v;
		uint32_t kl, vl;
		if (!mr_merge_peek(st->merge, &k, &kl, &v, &vl)) {
			uint32_t hdr[2] = {st->epoch, st->p};
			int rc = keel_transport_send(c, M_DATA_END, hdr, sizeof hdr);
			if (rc == KEEL_EFULL)
				return;
			/* Done (or the link broke: the coordinator handles it). */
			struct stream **pp = &n->streams;
			while (*pp != st)
				pp = &(*pp)->next;
			*pp = st->next;
			stream_free(st);
			return;
		}
		uint32_t need = 8 + 8 + kl + vl;
		uint32_t want = need > DATA_CHUNK ? need : DATA_CHUNK;
		struct keel_send_buf *b;
		int rc = keel_transport_alloc(c, want, &b);
		if (rc == KEEL_EFULL)
			return;
		if (rc) {
			send_error(n, "mr: shuffle: cannot send a partition to a node");
			return;
		}
		uint8_t *o = b->data;
		uint32_t hdr[2] = {st->epoch, st->p};
		memcpy(o, hdr, 8);
		size_t len = 8;
		while (mr_merge_peek(st->merge, &k, &kl, &v, &vl) && len + 8 + kl + vl <= b->cap) {
			uint32_t h[2] = {kl, vl};
			memcpy(o + len, h, 8);
			memcpy(o + len + 8, k, kl);
			memcpy(o + len + 8 + kl, v, vl);
			len += 8 + (size_t)kl + vl;
			if (mr_merge_pop(st->merge)) {
				keel_transport_discard(c, b);
				send_error(n, "mr: shuffle: reading a local run failed");
				return;
			}
		}
		b->len = (uint32_t)len;
		b->type = M_DATA;
		keel_transport_send_buf(c, b);
	}
}

static void agent_fetch(struct cnode *n, uint32_t from, uint32_t e, uint32_t p)
{
	if (e != n->epoch || p >= n->R || from >= MAXN)
		return;
	struct stream *st = calloc(1, sizeof *st);
	if (!st)
		return;
	*st = (struct stream){.epoch = e, .p = p, .to = from};
	char em[KEEL_ERRMSG_LEN];
	int rc = local_sources(n, p, n->ring0_ok ? &n->ring0 : NULL, &st->src, &st->nsrc, 0, em);
	if (!rc)
		rc = mr_merge_begin(&st->merge, st->src, st->nsrc, NULL, NULL, NULL, em);
	if (rc) {
		stream_free(st);
		send_error(n, em);
		return;
	}
	st->next = n->streams;
	n->streams = st;
	stream_pump(n, st);
}

static void cs_reduce_enqueue(struct keel_shard *sh, void *arg);

static void attempt_dispatch(struct cnode *n, struct attempt *a)
{
	keel_shard_post(n->sh0, a->p % n->S, cs_reduce_enqueue, a);
}

static void agent_reduce(struct cnode *n, uint32_t e, uint32_t p, const uint32_t *nodes, uint32_t nn)
{
	if (e != n->epoch || p >= n->R)
		return;
	maybe_crash(n, true, 0);
	struct attempt *a = calloc(1, sizeof *a);
	if (!a)
		return;
	a->n = n;
	a->epoch = e;
	a->p = p;
	for (uint32_t i = 0; i < nn; i++) {
		uint32_t x = nodes[i];
		if (x >= MAXN || x == n->self || a->want[x])
			continue;
		a->want[x] = true;
		a->pending++;
		uint32_t hdr[2] = {e, p};
		send_ctl(n, x, false, M_FETCH, hdr, sizeof hdr);
	}
	if (a->pending == 0) {
		attempt_dispatch(n, a);
		return;
	}
	a->next = n->waiting;
	n->waiting = a;
}

static struct attempt *find_attempt(struct cnode *n, uint32_t e, uint32_t p, bool unlink)
{
	for (struct attempt **pa = &n->waiting; *pa; pa = &(*pa)->next)
		if ((*pa)->epoch == e && (*pa)->p == p) {
			struct attempt *a = *pa;
			if (unlink)
				*pa = a->next;
			return a;
		}
	return NULL;
}

/* ---- reduce on the shards --------------------------------------------- */

struct part_msg {
	struct cnode *n;
	uint32_t epoch, p;
	int rc;
	char err[KEEL_ERRMSG_LEN];
	char path[4600];
};

static void agent_part_result(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct part_msg *m = arg;
	struct cnode *n = m->n;
	if (m->rc) {
		if (m->epoch == n->epoch)
			send_error(n, m->err);
	} else {
		struct wbuf w = {0};
		w_u32(&w, m->epoch);
		w_u32(&w, m->p);
		w_str(&w, m->path);
		if (!w.oom)
			send_ctl(n, n->coord_node, true, M_PART_DONE, w.p, w.len);
		free(w.p);
	}
	free(m);
}

static void cs_part_end(struct cshard *s, int rc)
{
	struct cnode *n = s->n;
	struct attempt *a = s->ra;
	mr_merge_end(s->merge);
	s->merge = NULL;
	if (s->out_open) {
		if (rc)
			mr_out_abort(&s->out);
		else
			rc = mr_out_close(&s->out, s->errmsg);
		s->out_open = false;
	}
	for (size_t i = 0; i < s->nsrc; i++)
		mr_source_close(&s->src[i]);
	free(s->src);
	s->src = NULL;
	s->nsrc = 0;
	struct part_msg *m = calloc(1, sizeof *m);
	if (m) {
		m->n = n;
		m->epoch = a->epoch;
		m->p = a->p;
		m->rc = rc;
		snprintf(m->path, sizeof m->path, "%s", a->path);
		if (rc)
			snprintf(m->err, sizeof m->err, "%s", s->errmsg);
		keel_shard_post(s->sh, 0, agent_part_result, m);
	}
	drop_attempt(a);
	s->ra = NULL;
	cs_reduce_next(s);
}

static void cs_reduce_step(struct keel_shard *sh, void *arg)
{
	struct cshard *s = arg;
	int rc = mr_merge_step(s->merge, REDUCE_BATCH, &s->ms);
	if (rc == 1) {
		keel_shard_post(sh, s->id, cs_reduce_step, s);
		return;
	}
	cs_part_end(s, rc < 0 ? rc : 0);
}

static void cs_reduce_next(struct cshard *s)
{
	struct cnode *n = s->n;
	if (s->ra || !s->rq_head)
		return;
	struct attempt *a = s->rq_head;
	s->rq_head = a->next;
	if (!s->rq_head)
		s->rq_tail = NULL;
	s->ra = a;
	size_t nremote = 0;
	for (int x = 0; x < MAXN; x++)
		nremote += a->want[x];
	int rc = local_sources(n, a->p, s->ring_ok ? &s->ring : NULL, &s->src, &s->nsrc, nremote,
			       s->errmsg);
	for (int x = 0; x < MAXN && !rc; x++)
		if (a->want[x])
			rc = mr_source_buf(&s->src[s->nsrc++], a->remote[x].p, a->remote[x].len);
	if (rc && !s->errmsg[0])
		keel_errmsg_set(s->errmsg, rc, "mr: partition %u: data from a peer", a->p);
	snprintf(a->path, sizeof a->path, "%s/part-%05u.e%u.n%u", n->tmpdir, a->p, a->epoch, n->self);
	if (!rc && (rc = mr_out_open(&s->out, a->path, s->errmsg)) == 0) {
		s->out_open = true;
		s->out.no_fsync = n->no_fsync;
		memset(&s->ms, 0, sizeof s->ms);
		rc = mr_merge_begin(&s->merge, s->src, s->nsrc, n->job.job, n->job.state, &s->out,
				    s->errmsg);
	}
	if (rc) {
		cs_part_end(s, rc);
		return;
	}
	cs_reduce_step(s->sh, s);
}

static void cs_reduce_enqueue(struct keel_shard *sh, void *arg)
{
	struct attempt *a = arg;
	struct cshard *s = &a->n->sh[keel_shard_id(sh)];
	a->next = NULL;
	if (s->rq_tail)
		s->rq_tail->next = a;
	else
		s->rq_head = a;
	s->rq_tail = a;
	cs_reduce_next(s);
}

/* ---- node agent: messages --------------------------------------------- */

static void maybe_ready(struct cnode *n)
{
	if (!n->have_job || n->ready_sent)
		return;
	for (uint32_t x = 0; x < MAXN; x++)
		if (n->peer[x] && !n->conn[x])
			return;
	n->ready_sent = true;
	/* READY carries the split count and the directory whose files this
	 * node holds ([mr] data = DIR in its configuration), for locality. */
	struct wbuf w = {0};
	w_u32(&w, (uint32_t)n->plan.n_splits);
	char abs[4096] = "";
	const char *data = keel_node_config_get(&n->cfg, "mr", "data");
	if (data && !realpath(data, abs))
		abs[0] = 0;
	w_str(&w, abs);
	if (!w.oom)
		send_ctl(n, n->coord_node, true, M_READY, w.p, w.len);
	free(w.p);
}

void mr_job_msg_free(struct mr_job_msg *m)
{
	free(m->spec);
	free(m->arg);
	free(m->tmpdir);
	for (uint32_t i = 0; m->inputs && i < m->n_inputs; i++)
		free(m->inputs[i]);
	free(m->inputs);
	memset(m, 0, sizeof *m);
}

int mr_job_msg_decode(const void *d, size_t len, struct mr_job_msg *m)
{
	memset(m, 0, sizeof *m);
	struct rbuf r = {.p = d, .len = len};
	m->R = r_u32(&r);
	m->budget = r_u64(&r);
	m->split = r_u64(&r);
	m->no_fsync = r_u32(&r) != 0;
	m->spec = r_str(&r);
	m->arg = r_str(&r);
	m->tmpdir = r_str(&r);
	uint32_t ni = r_u32(&r);
	if (r.bad || ni > 4096 || m->R == 0 || m->R > (1u << 20))
		goto bad;
	m->inputs = calloc(ni ? ni : 1, sizeof *m->inputs);
	if (!m->inputs)
		goto bad;
	m->n_inputs = ni;
	for (uint32_t i = 0; i < ni; i++)
		m->inputs[i] = r_str(&r);
	if (r.bad || r.pos != r.len)
		goto bad;
	return 0;
bad:
	mr_job_msg_free(m);
	return KEEL_EPROTO;
}

static void agent_job(struct cnode *n, uint32_t from, const void *d, size_t len)
{
	if (n->have_job)
		return;
	n->coord_node = from;
	struct mr_job_msg m;
	char em[KEEL_ERRMSG_LEN] = "mr: malformed JOB message";
	int rc = mr_job_msg_decode(d, len, &m);
	if (rc)
		goto out;
	n->R = m.R;
	n->budget = m.budget;
	n->no_fsync = m.no_fsync;
	snprintf(n->tmpdir, sizeof n->tmpdir, "%s", m.tmpdir);
	snprintf(n->spilldir, sizeof n->spilldir, "%s/.spill-n%u", n->tmpdir, n->self);
	if ((rc = keel_mr_job_open(&n->job, m.spec, m.arg[0] ? m.arg : NULL, em)))
		goto out;
	if ((rc = mr_plan_build(&n->plan, (const char *const *)m.inputs, m.n_inputs, n->job.job,
				m.split, em)))
		goto out;
	if (n->job.job->setup) {
		struct keel_mr_record *samples = NULL;
		size_t ns = 0;
		if (n->job.job->sample &&
		    (rc = mr_plan_sample(&n->plan, n->job.job, n->job.job->sample, &samples, &ns, em)))
			goto out;
		char e2[KEEL_ERRMSG_LEN] = "";
		rc = n->job.job->setup(n->job.state, samples, ns, n->R, e2);
		mr_samples_free(samples, ns);
		if (rc) {
			snprintf(em, sizeof em, "mr: job setup: %.200s", e2);
			goto out;
		}
	}
	if (mkdir(n->spilldir, 0700) < 0 && errno != EEXIST) {
		rc = keel_errmsg_set(em, -errno, "mr: spill directory %s", n->spilldir);
		goto out;
	}
	n->have_job = true;
	rc = 0;
out:
	if (rc) {
		char msg[KEEL_ERRMSG_LEN];
		snprintf(msg, sizeof msg, "node %u: %.220s", n->self, em);
		send_error(n, msg);
	}
	mr_job_msg_free(&m);
	if (!rc)
		maybe_ready(n);
}

static void agent_tasks(struct cnode *n, struct rbuf *r)
{
	uint32_t e = r_u32(r), cnt = r_u32(r);
	if (r->bad || !n->have_job || e < n->epoch || cnt > n->plan.n_splits)
		return;
	if (e > n->epoch)
		agent_new_epoch(n, e);
	if (n->qlen + cnt > n->qcap) {
		size_t nc = n->qlen + cnt + 64;
		uint32_t *q = realloc(n->queue, nc * sizeof *q);
		if (!q) {
			send_error(n, "mr: task queue: out of memory");
			return;
		}
		n->queue = q;
		n->qcap = nc;
	}
	for (uint32_t i = 0; i < cnt; i++) {
		uint32_t t = r_u32(r);
		if (r->bad || t >= n->plan.n_splits)
			return;
		n->queue[n->qlen++] = t;
	}
	n->sealed_sent = false;
	for (unsigned j = 0; j < n->S; j++)
		if (n->shard_idle[j] && n->qhead < n->qlen) {
			n->shard_idle[j] = false;
			n->idle--;
			keel_shard_post(n->sh0, j, cs_map_next, &n->sh[j]);
		}
	agent_check_sealed(n);
}

static void agent_stop(struct keel_timer *t)
{
	struct cnode *n = t->arg;
	keel_runtime_stop(n->rt);
}

static void agent_recv(struct cnode *n, uint32_t from, uint16_t type, const void *d, size_t len)
{
	struct rbuf r = {.p = d, .len = len};
	switch (type) {
	case M_JOB:
		agent_job(n, from, d, len);
		break;
	case M_TASKS:
		agent_tasks(n, &r);
		break;
	case M_REDUCE: {
		uint32_t e = r_u32(&r), p = r_u32(&r), nn = r_u32(&r);
		uint32_t nodes[MAXN];
		if (r.bad || nn > MAXN || !n->have_job)
			break;
		for (uint32_t i = 0; i < nn; i++)
			nodes[i] = r_u32(&r);
		if (!r.bad)
			agent_reduce(n, e, p, nodes, nn);
		break;
	}
	case M_FETCH: {
		uint32_t e = r_u32(&r), p = r_u32(&r);
		if (!r.bad && n->have_job)
			agent_fetch(n, from, e, p);
		break;
	}
	case M_DATA: {
		uint32_t e = r_u32(&r), p = r_u32(&r);
		struct attempt *a = r.bad ? NULL : find_attempt(n, e, p, false);
		if (a && from < MAXN && a->want[from]) {
			w_put(&a->remote[from], (const uint8_t *)d + 8, len - 8);
			if (a->remote[from].oom)
				send_error(n, "mr: shuffle: out of memory");
		}
		break;
	}
	case M_DATA_END: {
		uint32_t e = r_u32(&r), p = r_u32(&r);
		struct attempt *a = r.bad ? NULL : find_attempt(n, e, p, false);
		if (a && from < MAXN && a->want[from] && a->pending > 0 && --a->pending == 0) {
			find_attempt(n, e, p, true);
			attempt_dispatch(n, a);
		}
		break;
	}
	case M_FINISH:
		n->exit_ok = true;
		atomic_store(&n->finished, 1);
		if (!n->is_coord)
			keel_runtime_stop(n->rt);
		break;
	default:
		keel_warn("mr: node %u: unknown message type %u from node %u", n->self, type, from);
	}
}

/* ---- coordinator ------------------------------------------------------ */

static uint32_t live_nodes(struct cnode *n, uint32_t *out)
{
	uint32_t k = 0;
	for (uint32_t x = 0; x < MAXN; x++)
		if (x == n->self || (n->peer[x] && n->live[x]))
			out[k++] = x;
	return k;
}

static void coord_finish(struct cnode *n)
{
	for (uint32_t x = 0; x < MAXN; x++)
		if (n->peer[x] && n->live[x])
			send_ctl(n, x, false, M_FINISH, "", 0);
	atomic_store(&n->finished, 1);
	/* Let the FINISH frames leave before the reactors stop. */
	keel_timer_init(&n->stop_timer, agent_stop, n);
	keel_timer_arm(n->sh0, &n->stop_timer, 100 * 1000000ull);
}

static void coord_fail(struct cnode *n, int rc, const char *msg)
{
	node_fail(n, rc, msg);
	if (!atomic_load(&n->finished))
		coord_finish(n);
}

/* Hands every unassigned task to the live nodes, round robin, in epoch
 * c.epoch; every live node gets a TASKS message (maybe empty) so each
 * reports SEALED in this epoch. */
/* Whether node x holds the file of task t: its path is under the data
 * directory x announced in READY. */
static bool holds(const struct coord *c, uint32_t x, uint32_t t)
{
	const char *d = c->data_dir[x];
	if (!d || !d[0] || !c->task_path)
		return false;
	size_t l = strlen(d);
	const char *f = c->task_path[t];
	return f && !strncmp(f, d, l) && f[l] == '/';
}

static void coord_assign(struct cnode *n)
{
	struct coord *c = &n->c;
	uint32_t nodes[MAXN];
	uint32_t nl = live_nodes(n, nodes);
	/* Where each unassigned task goes: a live node holding its file if
	 * there is one, else round robin. */
	int32_t *dest = malloc((c->ntasks + 1) * sizeof *dest);
	if (!dest) {
		coord_fail(n, -ENOMEM, "mr: coordinator: out of memory");
		return;
	}
	uint32_t rr = 0;
	for (uint32_t t = 0; t < c->ntasks; t++) {
		dest[t] = -1;
		if (c->task_node[t] >= 0)
			continue;
		for (uint32_t i = 0; i < nl && dest[t] < 0; i++)
			if (holds(c, nodes[i], t))
				dest[t] = (int32_t)nodes[i];
		if (dest[t] < 0)
			dest[t] = (int32_t)nodes[rr++ % nl];
	}
	for (uint32_t i = 0; i < nl; i++) {
		struct wbuf w = {0};
		w_u32(&w, c->epoch);
		w_u32(&w, 0);
		uint32_t cnt = 0;
		for (uint32_t t = 0; t < c->ntasks; t++)
			if (dest[t] == (int32_t)nodes[i]) {
				w_u32(&w, t);
				cnt++;
				c->task_node[t] = (int32_t)nodes[i];
			}
		if (w.oom) {
			free(w.p);
			free(dest);
			coord_fail(n, -ENOMEM, "mr: coordinator: out of memory");
			return;
		}
		memcpy(w.p + 4, &cnt, 4);
		send_ctl(n, nodes[i], false, M_TASKS, w.p, w.len);
		free(w.p);
	}
	free(dest);
}

static void coord_maybe_reduce(struct cnode *n)
{
	struct coord *c = &n->c;
	if (c->reducing || atomic_load(&n->finished))
		return;
	for (uint32_t t = 0; t < c->ntasks; t++)
		if (!c->task_done[t])
			return;
	uint32_t nodes[MAXN];
	uint32_t nl = live_nodes(n, nodes);
	for (uint32_t i = 0; i < nl; i++)
		if (!c->sealed[nodes[i]])
			return;
	c->reducing = true;
	struct wbuf w = {0};
	for (uint32_t p = 0; p < c->nparts; p++) {
		if (c->part_state[p] == 2)
			continue;
		w.len = 0;
		w_u32(&w, c->epoch);
		w_u32(&w, p);
		w_u32(&w, nl);
		for (uint32_t i = 0; i < nl; i++)
			w_u32(&w, nodes[i]);
		if (w.oom)
			break;
		c->part_state[p] = 1;
		send_ctl(n, nodes[c->rr++ % nl], false, M_REDUCE, w.p, w.len);
	}
	free(w.p);
	if (w.oom)
		coord_fail(n, -ENOMEM, "mr: coordinator: out of memory");
	if (c->committed == c->nparts)
		coord_finish(n);
}

static void coord_node_down(struct cnode *n, uint32_t x)
{
	struct coord *c = &n->c;
	if (!c->active || atomic_load(&n->finished))
		return;
	keel_warn("mr: node %u is gone: its map tasks run again elsewhere (epoch %u)", x,
		  c->epoch + 1);
	c->epoch++;
	c->reducing = false;
	memset(c->sealed, 0, sizeof c->sealed);
	for (uint32_t t = 0; t < c->ntasks; t++)
		if (c->task_node[t] == (int32_t)x) {
			c->task_node[t] = -1;
			if (c->task_done[t]) {
				c->task_done[t] = false;
				atomic_fetch_sub(&n->tasks_done, 1);
				atomic_fetch_sub(&n->bytes_done, c->task_bytes[t]);
			}
		}
	for (uint32_t p = 0; p < c->nparts; p++)
		if (c->part_state[p] == 1)
			c->part_state[p] = 0;
	bool all_ready = true;
	for (uint32_t y = 0; y < MAXN; y++)
		if (n->peer[y] && n->live[y] && !c->ready[y])
			all_ready = false;
	if (all_ready && c->ready[n->self])
		coord_assign(n);
}

static void coord_start(struct cnode *n)
{
	struct coord *c = &n->c;
	if (c->active)
		return;
	c->active = true;
	c->epoch = 1;
	const struct keel_mr_config *mc = n->mcfg;
	struct wbuf w = {0};
	w_u32(&w, c->nparts);
	w_u64(&w, n->budget);
	w_u64(&w, mc->split_size);
	w_u32(&w, mc->no_fsync ? 1 : 0);
	w_str(&w, mc->job->spec);
	w_str(&w, mc->job->arg);
	w_str(&w, n->tmpdir);
	w_u32(&w, (uint32_t)mc->n_inputs);
	for (size_t i = 0; i < mc->n_inputs; i++) {
		/* Absolute paths: every node resolves them the same way. */
		char abs[4096];
		if (!realpath(mc->inputs[i], abs))
			snprintf(abs, sizeof abs, "%s", mc->inputs[i]);
		w_str(&w, abs);
	}
	if (w.oom) {
		free(w.p);
		coord_fail(n, -ENOMEM, "mr: coordinator: out of memory");
		return;
	}
	for (uint32_t x = 0; x < MAXN; x++)
		if (x == n->self || (n->peer[x] && n->live[x]))
			send_ctl(n, x, false, M_JOB, w.p, w.len);
	free(w.p);
}

static void coord_recv(struct cnode *n, uint32_t from, uint16_t type, const void *d, size_t len)
{
	struct coord *c = &n->c;
	struct rbuf r = {.p = d, .len = len};
	if (!c->active || from >= MAXN)
		return;
	switch (type) {
	case M_READY: {
		uint32_t ns = r_u32(&r);
		char *data = r_str(&r);
		if (r.bad || !data) {
			free(data);
			break;
		}
		free(c->data_dir[from]);
		c->data_dir[from] = data;
		if (ns != c->ntasks) {
			char m[KEEL_ERRMSG_LEN];
			snprintf(m, sizeof m, "mr: node %u sees %u map tasks in the input, the coordinator %u "
				 "(do all nodes see the same files?)", from, ns, c->ntasks);
			coord_fail(n, KEEL_EBADINPUT, m);
			break;
		}
		c->ready[from] = true;
		for (uint32_t x = 0; x < MAXN; x++)
			if ((x == n->self || (n->peer[x] && n->live[x])) && !c->ready[x])
				return;
		coord_assign(n);
		break;
	}
	case M_TASK_DONE: {
		uint32_t t = r_u32(&r);
		if (r.bad || t >= c->ntasks || c->task_node[t] != (int32_t)from || c->task_done[t])
			break;
		c->task_done[t] = true;
		if (holds(c, from, t))
			c->local_tasks++;
		atomic_fetch_add(&n->tasks_done, 1);
		atomic_fetch_add(&n->bytes_done, c->task_bytes[t]);
		break;
	}
	case M_SEALED: {
		uint32_t e = r_u32(&r);
		if (r.bad || e != c->epoch)
			break;
		c->sealed[from] = true;
		coord_maybe_reduce(n);
		break;
	}
	case M_PART_DONE: {
		uint32_t e = r_u32(&r), p = r_u32(&r);
		char *path = r_str(&r);
		if (r.bad || !path)
			break;
		/* A peer names a file: only one of ours, in the job's directory. */
		char want[4700];
		int wl = snprintf(want, sizeof want, "%s/part-%05u.e%u.n%u", n->tmpdir, p, e, from);
		bool ok_path = wl > 0 && !strcmp(path, want);
		if (ok_path && e == c->epoch && p < c->nparts && c->part_state[p] == 1 && c->reducing) {
			char final[4700];
			snprintf(final, sizeof final, "%s/part-%05u", n->tmpdir, p);
			struct stat st;
			if (stat(path, &st) == 0)
				n->output_bytes += (uint64_t)st.st_size;
			if (rename(path, final) < 0) {
				char m[KEEL_ERRMSG_LEN];
				keel_errmsg_set(m, -errno, "mr: commit partition %u", p);
				coord_fail(n, -errno, m);
			} else {
				c->part_state[p] = 2;
				c->committed++;
				atomic_fetch_add(&n->parts_done, 1);
				if (c->committed == c->nparts)
					coord_finish(n);
			}
		} else if (ok_path) {
			unlink(path); /* an attempt of an older epoch */
		}
		free(path);
		break;
	}
	case M_ERROR: {
		char *msg = r_str(&r);
		coord_fail(n, KEEL_EBADJOB, msg ? msg : "mr: a node failed");
		free(msg);
		break;
	}
	default:
		break;
	}
}

/* ---- transport -------------------------------------------------------- */

static struct cnode *node_of(struct keel_transport *t)
{
	return t->user;
}

static uint32_t conn_node(struct cnode *n, struct keel_conn *c)
{
	for (uint32_t x = 0; x < MAXN; x++)
		if (n->conn[x] == c)
			return x;
	return MAXN;
}

static bool all_connected(struct cnode *n)
{
	for (uint32_t x = 0; x < MAXN; x++)
		if (n->peer[x] && !n->conn[x])
			return false;
	return true;
}

static void t_up(struct keel_transport *t, struct keel_conn *c)
{
	struct cnode *n = node_of(t);
	uint32_t x = c->peer.node;
	if (x >= MAXN || !n->peer[x] || (n->conn[x] && n->conn[x] != c)) {
		keel_transport_close_conn(c);
		return;
	}
	n->conn[x] = c;
	n->live[x] = true;
	if (n->is_coord && !n->c.active && all_connected(n))
		coord_start(n);
	maybe_ready(n);
}

static void t_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
	struct cnode *n = node_of(t);
	uint32_t x = conn_node(n, c);
	if (x == MAXN)
		return;
	switch (m->type) {
	case M_READY:
	case M_TASK_DONE:
	case M_SEALED:
	case M_PART_DONE:
	case M_ERROR:
		if (n->is_coord)
			coord_recv(n, x, m->type, m->data, m->len);
		break;
	default:
		agent_recv(n, x, m->type, m->data, m->len);
	}
}

static void dial_missing(struct cnode *n);

static void dial_fire(struct keel_timer *tm)
{
	dial_missing(tm->arg);
}

static void t_down(struct keel_transport *t, struct keel_conn *c, int reason)
{
	struct cnode *n = node_of(t);
	uint32_t x = conn_node(n, c);
	if (x == MAXN)
		return;
	n->conn[x] = NULL;
	bool was_live = n->live[x];
	n->live[x] = false;
	if (keel_runtime_stopping(n->rt))
		return;
	if (!was_live) {
		/* Not up yet (peer not started): dial again shortly. */
		if (!keel_timer_armed(&n->dial_timer))
			keel_timer_arm(n->sh0, &n->dial_timer, 200 * 1000000ull);
		return;
	}
	keel_info("mr: node %u: lost node %u (%s)", n->self, x, keel_strerror(reason));
	if (n->is_coord) {
		coord_node_down(n, x);
	} else if (x == n->coord_node && n->have_job && !atomic_load(&n->finished)) {
		node_fail(n, KEEL_EUNAVAIL, "mr: lost the coordinator");
		keel_runtime_stop(n->rt);
	}
}

static void t_writable(struct keel_transport *t, struct keel_conn *c)
{
	struct cnode *n = node_of(t);
	uint32_t x = conn_node(n, c);
	if (x < MAXN)
		agent_pump_conn(n, x);
}

static const struct keel_transport_handlers handlers = {
	.on_conn_up = t_up,
	.on_recv = t_recv,
	.on_conn_down = t_down,
	.on_writable = t_writable,
};

/* Node i dials every node j < i; the others dial us. */
static void dial_missing(struct cnode *n)
{
	for (uint32_t x = 1; x < n->self && x < MAXN; x++) {
		if (!n->peer[x] || n->conn[x])
			continue;
		struct keel_conn *c;
		if (keel_transport_connect(n->t, (struct keel_addr){.node = x, .shard = 0}, &c) == 0)
			n->conn[x] = c;
	}
}

static void start_timeout(struct keel_timer *tm)
{
	struct cnode *n = tm->arg;
	if (n->c.active)
		return;
	char m[KEEL_ERRMSG_LEN] = "mr: nodes not reachable within 30 s:";
	for (uint32_t x = 0; x < MAXN; x++)
		if (n->peer[x] && !n->live[x]) {
			size_t l = strlen(m);
			snprintf(m + l, sizeof m - l, " %u", x);
		}
	coord_fail(n, KEEL_EUNAVAIL, m);
}

static void coord_kick(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct cnode *n = arg;
	if (all_connected(n))
		coord_start(n);
}

static void node_shard_init(struct keel_shard *sh, void *arg)
{
	struct cnode *n = arg;
	unsigned id = keel_shard_id(sh);
	struct cshard *s = &n->sh[id];
	s->n = n;
	s->id = id;
	s->sh = sh;
	s->task = -1;
	s->rd.complete = cs_read_done;
	s->ring_ok = io_uring_queue_init(4, &s->ring, 0) == 0;
	if (id != 0)
		return;
	n->sh0 = sh;
	n->ring0_ok = io_uring_queue_init(4, &n->ring0, 0) == 0;
	struct keel_transport_config tc;
	keel_node_config_transport(&n->cfg, 0, &tc);
	tc.shards = n->S;
	tc.handlers = &handlers;
	tc.user = n;
	tc.shard = sh;
	char err[KEEL_ERRMSG_LEN];
	int rc = keel_transport_open(n->cfg.transport, &tc, &n->t, err);
	if (rc == 0 && (rc = keel_transport_listen(n->t)) < 0)
		snprintf(err, sizeof err, "%s", n->t->errmsg);
	if (rc < 0) {
		char m[KEEL_ERRMSG_LEN];
		snprintf(m, sizeof m, "mr: node %u: transport: %.200s", n->self, err);
		node_fail(n, rc, m);
		atomic_store(&n->finished, 1);
		keel_runtime_stop(n->rt);
		return;
	}
	keel_timer_init(&n->dial_timer, dial_fire, n);
	dial_missing(n);
	if (n->is_coord) {
		keel_timer_init(&n->start_timer, start_timeout, n);
		keel_timer_arm(sh, &n->start_timer, 30ull * 1000000000ull);
		keel_shard_post(sh, 0, coord_kick, n);
	}
}

static void node_shard_fini(struct keel_shard *sh, void *arg)
{
	struct cnode *n = arg;
	unsigned id = keel_shard_id(sh);
	struct cshard *s = &n->sh[id];
	if (s->scanning)
		mr_scan_close(&s->scan);
	mr_merge_end(s->merge);
	s->merge = NULL;
	if (s->out_open)
		mr_out_abort(&s->out);
	for (size_t i = 0; i < s->nsrc; i++)
		mr_source_close(&s->src[i]);
	free(s->src);
	if (s->ra)
		drop_attempt(s->ra);
	for (struct attempt *a = s->rq_head, *nx; a; a = nx) {
		nx = a->next;
		drop_attempt(a);
	}
	if (s->cur) {
		mr_table_free(s->cur);
		free(s->cur);
	}
	free(s->rbuf);
	if (s->ring_ok)
		io_uring_queue_exit(&s->ring);
	if (id != 0)
		return;
	for (struct attempt *a = n->waiting, *nx; a; a = nx) {
		nx = a->next;
		drop_attempt(a);
	}
	n->waiting = NULL;
	for (struct stream *st = n->streams, *nx; st; st = nx) {
		nx = st->next;
		stream_free(st);
	}
	n->streams = NULL;
	keel_timer_cancel(sh, &n->dial_timer);
	keel_timer_cancel(sh, &n->start_timer);
	keel_timer_cancel(sh, &n->stop_timer);
	keel_transport_close(n->t);
	n->t = NULL;
	if (n->ring0_ok)
		io_uring_queue_exit(&n->ring0);
}

/* Frees the sealed generations (after every shard's fini: a stream or a
 * reduce on one shard may read another's). */
static void node_free_tables(struct cnode *n)
{
	for (unsigned j = 0; j < n->S; j++)
		for (unsigned g = 0; g < n->sh[j].ngens; g++) {
			mr_table_free(n->sh[j].gens[g]);
			free(n->sh[j].gens[g]);
		}
}

/* Loads the configuration and runs this node until the job ends. */
static int node_run(struct cnode *n, const char *config_path, char *errmsg)
{
	int rc = keel_node_config_load(config_path, &n->cfg, errmsg);
	if (rc)
		return rc;
	pthread_mutex_init(&n->errmu, NULL);
	n->self = n->cfg.node_id;
	if (n->self >= MAXN) {
		keel_node_config_free(&n->cfg);
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "mr: node id %u above %u", n->self, MAXN - 1);
	}
	keel_log_set_node((int)n->self);
	for (size_t i = 0; i < n->cfg.npeers; i++) {
		uint32_t x = n->cfg.peers[i].node;
		if (x < MAXN && x != n->self && !n->peer[x]) {
			n->peer[x] = true;
			n->npeers++;
		}
	}
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	n->S = n->cfg.shards ? n->cfg.shards : (unsigned)(ncpu > 0 ? ncpu : 1);
	struct keel_runtime_config rcfg = {.nshards = n->S, .overcommit = true, .node_id = (int)n->self};
	rc = keel_runtime_create(&rcfg, &n->rt, errmsg);
	if (rc)
		goto out;
	n->sh = calloc(n->S, sizeof *n->sh);
	n->shard_idle = calloc(n->S, sizeof *n->shard_idle);
	if (!n->sh || !n->shard_idle) {
		rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: node state");
		goto out;
	}
	for (unsigned j = 0; j < n->S; j++)
		n->shard_idle[j] = true;
	n->idle = n->S;
	if (n->is_coord) {
		n->c.nparts = n->mcfg->partitions ? n->mcfg->partitions : n->S * (n->npeers + 1);
		n->c.part_state = calloc(n->c.nparts, 1);
		if (!n->c.part_state) {
			rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: partitions");
			goto out;
		}
	}
	rc = keel_runtime_start(n->rt, node_shard_init, node_shard_fini, n);
	if (rc) {
		snprintf(errmsg, KEEL_ERRMSG_LEN, "mr: runtime: %s", keel_runtime_errmsg(n->rt));
		goto out;
	}
	if (n->is_coord && n->mcfg->progress) {
		unsigned iv = n->mcfg->progress_interval_ms ? n->mcfg->progress_interval_ms : 200;
		while (!keel_runtime_stopping(n->rt) && !atomic_load(&n->finished)) {
			struct timespec sl = {0, (long)iv * 1000000L};
			nanosleep(&sl, NULL);
			struct keel_mr_progress p = {
				.map_tasks_total = n->c.ntasks,
				.map_tasks_done = atomic_load(&n->tasks_done),
				.reduce_tasks_total = n->c.nparts,
				.reduce_tasks_done = atomic_load(&n->parts_done),
				.input_bytes_total = n->c.total_bytes,
				.input_bytes_done = atomic_load(&n->bytes_done),
				.elapsed_ns = keel_now_ns() - n->start_ns,
			};
			n->mcfg->progress(n->mcfg->progress_arg, &p);
		}
	}
	keel_runtime_wait(n->rt);
	rc = atomic_load(&n->err);
	if (rc)
		snprintf(errmsg, KEEL_ERRMSG_LEN, "%s", n->errmsg);
out:
	if (n->sh)
		node_free_tables(n);
	if (n->rt)
		keel_runtime_destroy(n->rt);
	if (n->have_job) {
		mr_rmtree(n->spilldir);
		keel_mr_job_close(&n->job);
	}
	mr_plan_free(&n->plan);
	free(n->sh);
	free(n->shard_idle);
	free(n->queue);
	keel_node_config_free(&n->cfg);
	pthread_mutex_destroy(&n->errmu);
	return rc;
}

int keel_mr_worker_run(const char *config_path, char *errmsg)
{
	struct cnode *n = calloc(1, sizeof *n);
	if (!n)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: worker");
	int rc = node_run(n, config_path, errmsg);
	if (!rc && !n->exit_ok)
		rc = keel_errmsg_set(errmsg, KEEL_ESTOPPED, "mr: worker stopped before the job finished");
	free(n);
	return rc;
}

/* Removes what is not a result (attempts of old epochs, spill dirs). */
static void clean_tmpdir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		unsigned p;
		char tail;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (sscanf(de->d_name, "part-%5u%c", &p, &tail) == 1 && strlen(de->d_name) == 10)
			continue;
		char path[4600];
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		mr_rmtree(path);
	}
	closedir(d);
}

int keel_mr_cluster_run(const struct keel_mr_config *cfg, const char *config_path,
			struct keel_mr_stats *stats, char *errmsg)
{
	memset(stats, 0, sizeof *stats);
	if (!cfg->job || !cfg->job->job || !cfg->output)
		return keel_errmsg_set(errmsg, -EINVAL, "mr: config needs a job and an output");
	struct cnode *n = calloc(1, sizeof *n);
	if (!n)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: coordinator");
	n->is_coord = true;
	n->mcfg = cfg;
	n->start_ns = keel_now_ns();
	n->budget = cfg->mem_budget ? cfg->mem_budget : 256ull << 20;
	int rc = 0;
	struct stat st;
	if (stat(cfg->output, &st) == 0) {
		if (!S_ISDIR(st.st_mode) || rmdir(cfg->output) < 0) {
			free(n);
			return keel_errmsg_set(errmsg, -EEXIST,
					       "mr: output %s already exists (remove it or choose another)",
					       cfg->output);
		}
	}
	/* The coordinator's own view of the input: task count and sizes (each
	 * node's agent lists the input again from the JOB message). */
	struct mr_plan plan;
	if ((rc = mr_plan_build(&plan, cfg->inputs, cfg->n_inputs, cfg->job->job, cfg->split_size,
				errmsg))) {
		free(n);
		return rc;
	}
	struct coord *c = &n->c;
	c->ntasks = (uint32_t)plan.n_splits;
	c->total_bytes = plan.total_bytes;
	uint64_t n_files = plan.n_files;
	c->task_node = malloc((c->ntasks + 1) * sizeof *c->task_node);
	c->task_done = calloc(c->ntasks + 1, sizeof *c->task_done);
	c->task_bytes = calloc(c->ntasks + 1, sizeof *c->task_bytes);
	if (!c->task_node || !c->task_done || !c->task_bytes) {
		mr_plan_free(&plan);
		rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: coordinator");
		goto out;
	}
	c->task_path = calloc(c->ntasks + 1, sizeof *c->task_path);
	for (uint32_t t = 0; t < c->ntasks; t++) {
		c->task_node[t] = -1;
		c->task_bytes[t] = plan.splits[t].end - plan.splits[t].start;
		char abs[4096];
		if (c->task_path && realpath(plan.files[plan.splits[t].file].path, abs))
			c->task_path[t] = strdup(abs);
	}
	mr_plan_free(&plan);
	char absout[4096];
	snprintf(absout, sizeof absout, "%s", cfg->output);
	if (cfg->output[0] != '/') {
		char cwd[2048];
		if (getcwd(cwd, sizeof cwd))
			snprintf(absout, sizeof absout, "%s/%s", cwd, cfg->output);
	}
	snprintf(n->tmpdir, sizeof n->tmpdir, "%s.keel-tmp.%d", absout, (int)getpid());
	if (mkdir(n->tmpdir, 0755) < 0) {
		rc = keel_errmsg_set(errmsg, -errno, "mr: temporary output %s", n->tmpdir);
		goto out;
	}
	rc = node_run(n, config_path, errmsg);
	if (!rc && c->committed != c->nparts)
		rc = keel_errmsg_set(errmsg, KEEL_ESTOPPED, "mr: stopped before every partition was written");
	if (!rc) {
		clean_tmpdir(n->tmpdir);
		char path[4400];
		snprintf(path, sizeof path, "%s/_SUCCESS", n->tmpdir);
		struct keel_mr_out ok;
		if ((rc = mr_out_open(&ok, path, errmsg)) == 0)
			rc = mr_out_close(&ok, errmsg);
		if (!rc && rename(n->tmpdir, cfg->output) < 0)
			rc = keel_errmsg_set(errmsg, -errno, "mr: rename %s to %s", n->tmpdir, cfg->output);
	}
	if (!rc) {
		uint64_t now = keel_now_ns();
		stats->map_tasks = c->ntasks;
		stats->reduce_tasks = c->nparts;
		stats->input_bytes = c->total_bytes;
		stats->input_files = n_files;
		stats->output_bytes = n->output_bytes;
		stats->shards = n->S;
		stats->partitions = c->nparts;
		stats->nodes = n->npeers + 1;
		stats->epochs = c->epoch;
		stats->local_tasks = c->local_tasks;
		stats->total_ns = now - n->start_ns;
	}
out:
	if (rc)
		mr_rmtree(n->tmpdir);
	for (uint32_t t = 0; c->task_path && t < c->ntasks; t++)
		free(c->task_path[t]);
	free(c->task_path);
	for (uint32_t x = 0; x < MAXN; x++)
		free(c->data_dir[x]);
	free(c->task_node);
	free(c->task_done);
	free(c->task_bytes);
	free(c->part_state);
	free(n);
	return rc;
}
