/*
 * compute/mr_cluster.c — running a map-reduce job: the public entry points
 * (keel_mr_run, keel_mr_cluster_run, keel_mr_worker_run), a node's life (its
 * runtime, its shards, its network), the routing of messages between the
 * network, the agent and the coordinator, and the coordinator's I/O around
 * its pure bookkeeping (compute/mr_coord.c): the JOB it sends, the actions
 * it carries out (TASKS, REDUCE, commit by rename, FINISH), the output's
 * atomic commit, progress and events.
 *
 * Every node runs the same agent (compute/mr_agent.c) and executor
 * (compute/mr_exec.c); the node that runs keel_mr_run or keel_mr_cluster_run
 * also coordinates, and works. keel_mr_run is a cluster of one: no network,
 * the coordinator's messages to its own agent go through shard 0's ring.
 *
 * Job, in messages (coordinator C, node agents N; compute/mr_msg.h):
 *   C→N JOB, N→C READY, C→N TASKS(epoch), N→C TASK_DONE per task and
 *   SEALED(epoch) when idle, C→N REDUCE(epoch, p, live nodes), N→N FETCH /
 *   DATA / DATA_END (the shuffle), N→C PART_DONE(epoch, p): C renames
 *   part-p.e<epoch>.n<node> to part-p if it is the current attempt (else
 *   deletes it); when every partition is renamed C writes _SUCCESS and
 *   renames the directory to the output; C→N FINISH.
 * Failure: when C's link to a node breaks, the node is dead: mr_coord.h says
 * what is undone and redone; a node that sees a newer epoch drops what it
 * was doing for older ones. So the answer stays exact: each task's output is
 * counted once, from a live node. Not handled: the coordinator's own death;
 * a broken link between two live workers (the job then waits: C's links are
 * the failure detector).
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compute/mr_node.h"
#include "keel/node.h"

#define START_TIMEOUT_NS (30ull * 1000000000ull)
#define FINISH_LINGER_NS (100 * 1000000ull)

static void coord_recv(struct mr_node *n, uint32_t from, uint16_t type, const void *d, size_t len);
static void coord_node_down(struct mr_node *n, uint32_t x);
static void coord_start(struct mr_node *n);

void mr_node_fail(struct mr_node *n, int rc, const char *msg)
{
	pthread_mutex_lock(&n->errmu);
	if (!atomic_load(&n->err)) {
		snprintf(n->errmsg, sizeof n->errmsg, "%s", msg);
		atomic_store(&n->err, rc ? rc : KEEL_EBADJOB);
	}
	pthread_mutex_unlock(&n->errmu);
}

/* ---- messages ------------------------------------------------------------ */

struct loopback {
	struct mr_node *n;
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
		coord_recv(l->n, l->n->self, l->type, l->data, l->len);
	else
		mr_agent_recv(l->n, l->n->self, l->type, l->data, l->len);
	free(l);
}

int mr_node_send(struct mr_node *n, uint32_t to, bool to_coord, uint16_t type, const void *d,
		 size_t len)
{
	if (to == n->self) {
		struct loopback *l = malloc(sizeof *l + len);
		if (!l)
			return -ENOMEM;
		*l = (struct loopback){.n = n, .type = type, .to_coord = to_coord, .len = len};
		if (len)
			memcpy(l->data, d, len);
		int rc = keel_shard_post(n->sh0, 0, loopback_run, l);
		if (rc)
			free(l);
		return rc;
	}
	if (!n->net)
		return KEEL_ECLOSED;
	int rc = mr_net_send(n->net, to, type, d, len);
	if (rc)
		keel_warn("mr: %s to node %u: %s", mr_msg_name(type), to, keel_strerror(rc));
	return rc;
}

/* ---- the network's callbacks (shard 0) ----------------------------------- */

static bool all_up(const struct mr_node *n)
{
	for (uint32_t x = 0; x < MR_MAXN; x++)
		if (n->peer[x] && !n->up[x])
			return false;
	return true;
}

static void net_up(void *user, uint32_t x)
{
	struct mr_node *n = user;
	n->up[x] = true;
	if (!all_up(n))
		return;
	if (n->is_coord && !n->coord_active)
		coord_start(n);
	mr_agent_peers_up(n);
}

static void net_down(void *user, uint32_t x, int reason)
{
	struct mr_node *n = user;
	n->up[x] = false;
	keel_info("mr: node %u: lost node %u (%s)", n->self, x, keel_strerror(reason));
	if (n->is_coord) {
		coord_node_down(n, x);
	} else if (x == n->coord_node && n->have_job && !atomic_load(&n->finished)) {
		mr_node_fail(n, KEEL_EUNAVAIL, "mr: lost the coordinator");
		keel_runtime_stop(n->rt);
	}
}

static void net_recv(void *user, uint32_t from, uint16_t type, const void *d, size_t len)
{
	struct mr_node *n = user;
	switch (type) {
	case MR_MSG_READY:
	case MR_MSG_TASK_DONE:
	case MR_MSG_SEALED:
	case MR_MSG_PART_DONE:
	case MR_MSG_ERROR:
		if (n->is_coord)
			coord_recv(n, from, type, d, len);
		break;
	default:
		mr_agent_recv(n, from, type, d, len);
	}
}

static void net_writable(void *user, uint32_t x)
{
	mr_agent_writable(user, x);
}

static const struct mr_net_handlers net_handlers = {
	.up = net_up,
	.down = net_down,
	.recv = net_recv,
	.writable = net_writable,
};

/* ---- the coordinator's I/O ------------------------------------------------ */

static void event(struct mr_node *n, struct keel_mr_event ev)
{
	const struct keel_mr_config *mc = n->mcfg;
	if (!mc->on_event)
		return;
	const struct mr_coord *c = &n->coord;
	uint32_t live[MR_MAXN];
	ev.epoch = c->epoch;
	ev.nodes = mr_coord_live_nodes(c, live);
	ev.map_tasks_done = c->tasks_done;
	ev.map_tasks_total = c->ntasks;
	ev.reduce_tasks_done = c->committed;
	ev.reduce_tasks_total = c->nparts;
	mc->on_event(mc->event_arg, &ev);
}

static void stop_fire(struct keel_timer *t)
{
	struct mr_node *n = t->arg;
	keel_runtime_stop(n->rt);
}

/* The job is over (either way): FINISH to every live peer, then stop. */
static void coord_stop(struct mr_node *n)
{
	if (atomic_exchange(&n->finished, 1))
		return;
	bool sent = false;
	for (uint32_t x = 0; x < MR_MAXN; x++)
		if (n->peer[x] && n->up[x] && (!n->coord_active || n->coord.live[x])) {
			mr_node_send(n, x, false, MR_MSG_FINISH, "", 0);
			sent = true;
		}
	if (!sent) {
		keel_runtime_stop(n->rt);
		return;
	}
	/* Let the FINISH frames leave before the reactors stop. */
	keel_timer_arm(n->sh0, &n->stop_timer, FINISH_LINGER_NS);
}

static void attempt_path(const struct mr_node *n, char *buf, size_t len, uint32_t p, uint32_t e,
			 uint32_t node)
{
	snprintf(buf, len, "%s/part-%05u.e%u.n%u", n->tmpdir, p, e, node);
}

static void commit(struct mr_node *n, const struct mr_coord_act *a)
{
	char from[MR_PATH_MAX], to[MR_PATH_MAX];
	attempt_path(n, from, sizeof from, a->part, a->epoch, a->node);
	snprintf(to, sizeof to, "%s/part-%05u", n->tmpdir, a->part);
	struct stat st;
	uint64_t size = stat(from, &st) == 0 ? (uint64_t)st.st_size : 0;
	int rc = rename(from, to) < 0 ? -errno : 0;
	mr_coord_commit_done(&n->coord, a->part, rc);
	if (rc)
		return;
	n->output_bytes += size;
	atomic_fetch_add(&n->parts_done, 1);
	event(n, (struct keel_mr_event){.kind = KEEL_MR_EV_PART_DONE, .node = a->node,
					.partition = a->part});
}

/* Carries out what the coordinator decided, in order; carrying out a
 * commit feeds its outcome back, which may add actions. */
static void run_actions(struct mr_node *n)
{
	struct mr_coord *c = &n->coord;
	bool reduce_event = false;
	for (size_t i = 0;; i++) {
		const struct mr_coord_act *acts;
		if (i >= mr_coord_actions(c, &acts))
			break;
		struct mr_coord_act a = acts[i];
		struct mr_wbuf w = {0};
		char path[MR_PATH_MAX];
		switch (a.kind) {
		case MR_ACT_TASKS:
			if (mr_msg_tasks_encode(&w, a.epoch, a.list, a.n) == 0)
				mr_node_send(n, a.node, false, MR_MSG_TASKS, w.p, w.len);
			else
				mr_coord_fail(c, -ENOMEM, "mr: coordinator: out of memory");
			break;
		case MR_ACT_REDUCE:
			if (!reduce_event) {
				reduce_event = true;
				if (!n->t_map_end)
					n->t_map_end = keel_now_ns();
				event(n, (struct keel_mr_event){.kind = KEEL_MR_EV_REDUCE});
			}
			if (mr_msg_reduce_encode(&w, a.epoch, a.part, a.list, a.n) == 0)
				mr_node_send(n, a.node, false, MR_MSG_REDUCE, w.p, w.len);
			else
				mr_coord_fail(c, -ENOMEM, "mr: coordinator: out of memory");
			break;
		case MR_ACT_COMMIT:
			commit(n, &a);
			break;
		case MR_ACT_DISCARD:
			attempt_path(n, path, sizeof path, a.part, a.epoch, a.node);
			unlink(path);
			break;
		case MR_ACT_FINISH:
			if (!n->t_map_end)
				n->t_map_end = keel_now_ns();
			event(n, (struct keel_mr_event){.kind = KEEL_MR_EV_END});
			coord_stop(n);
			break;
		case MR_ACT_FAIL:
			mr_node_fail(n, c->err, c->errmsg);
			event(n, (struct keel_mr_event){.kind = KEEL_MR_EV_END, .error = c->err,
							.errmsg = c->errmsg});
			coord_stop(n);
			break;
		}
		mr_wbuf_free(&w);
	}
	mr_coord_actions_clear(c);
	atomic_store(&n->tasks_done, c->tasks_done);
	atomic_store(&n->bytes_done, c->bytes_done);
}

static void coord_start(struct mr_node *n)
{
	if (n->coord_active || atomic_load(&n->finished))
		return;
	n->coord_active = true;
	keel_timer_cancel(n->sh0, &n->start_timer);
	const struct keel_mr_config *mc = n->mcfg;
	struct mr_job_msg m = {
		.R = n->nparts, .budget = n->budget, .split = mc->split_size, .no_fsync = mc->no_fsync,
		.spec = (char *)mc->job->spec, .arg = (char *)mc->job->arg, .tmpdir = n->tmpdir,
		.n_inputs = (uint32_t)mc->n_inputs,
	};
	char **abs = calloc(mc->n_inputs ? mc->n_inputs : 1, sizeof *abs);
	bool oom = !abs;
	for (size_t i = 0; !oom && i < mc->n_inputs; i++) {
		/* Across nodes, absolute paths: every node resolves them the same
		 * way. On one node, the paths as given (records name them). */
		char rp[4096];
		if (!n->npeers || !realpath(mc->inputs[i], rp))
			snprintf(rp, sizeof rp, "%s", mc->inputs[i]);
		oom = !(abs[i] = strdup(rp));
	}
	m.inputs = abs;
	struct mr_wbuf w = {0};
	if (oom || mr_msg_job_encode(&w, &m)) {
		mr_coord_fail(&n->coord, -ENOMEM, "mr: coordinator: out of memory");
	} else {
		for (uint32_t x = 0; x < MR_MAXN; x++)
			if (x == n->self || (n->peer[x] && n->up[x]))
				mr_node_send(n, x, false, MR_MSG_JOB, w.p, w.len);
		event(n, (struct keel_mr_event){.kind = KEEL_MR_EV_START});
	}
	for (size_t i = 0; abs && i < mc->n_inputs; i++)
		free(abs[i]);
	free(abs);
	mr_wbuf_free(&w);
	run_actions(n);
}

static void coord_node_down(struct mr_node *n, uint32_t x)
{
	if (!n->coord_active || !mr_coord_node_down(&n->coord, x))
		return;
	keel_warn("mr: node %u is gone: its map tasks run again elsewhere (epoch %u)", x,
		  n->coord.epoch);
	event(n, (struct keel_mr_event){.kind = KEEL_MR_EV_NODE_LOST, .node = x});
	run_actions(n);
}

static void coord_recv(struct mr_node *n, uint32_t from, uint16_t type, const void *d, size_t len)
{
	struct mr_coord *c = &n->coord;
	if (!n->coord_active || from >= MR_MAXN)
		return;
	int bad = 0;
	uint32_t v;
	switch (type) {
	case MR_MSG_READY: {
		struct mr_ready_msg m;
		if (!(bad = mr_msg_ready_decode(d, len, &m)))
			mr_coord_ready(c, from, m.splits, m.data_dir);
		break;
	}
	case MR_MSG_TASK_DONE:
		if (!(bad = mr_msg_u32_decode(d, len, &v)) && mr_coord_task_done(c, from, v))
			event(n, (struct keel_mr_event){.kind = KEEL_MR_EV_MAP_DONE, .node = from,
							.task = v, .node_tasks = c->node_tasks[from]});
		break;
	case MR_MSG_SEALED:
		if (!(bad = mr_msg_u32_decode(d, len, &v)))
			mr_coord_sealed(c, from, v);
		break;
	case MR_MSG_PART_DONE: {
		struct mr_part_done_msg m;
		if ((bad = mr_msg_part_done_decode(d, len, &m)))
			break;
		/* A peer names a file: only its own attempt, in the job's directory. */
		char want[MR_PATH_MAX];
		attempt_path(n, want, sizeof want, m.p, m.epoch, from);
		if (mr_str_eq(m.path, want))
			mr_coord_part_done(c, from, m.epoch, m.p);
		else
			keel_warn("mr: node %u: PART_DONE names %.*s, not its file %s: ignored", from,
				  (int)(m.path.len > 300 ? 300 : m.path.len), m.path.p, want);
		break;
	}
	case MR_MSG_ERROR: {
		struct mr_str msg;
		char m[KEEL_ERRMSG_LEN];
		if (mr_msg_error_decode(d, len, &msg))
			snprintf(m, sizeof m, "mr: node %u failed (its error message was malformed)", from);
		else
			snprintf(m, sizeof m, "%.*s", (int)(msg.len < sizeof m ? msg.len : sizeof m - 1),
				 msg.p);
		mr_coord_fail(c, KEEL_EBADJOB, m);
		break;
	}
	default:
		break;
	}
	if (bad) {
		char m[KEEL_ERRMSG_LEN];
		snprintf(m, sizeof m, "mr: malformed %s message from node %u", mr_msg_name(type), from);
		mr_coord_fail(c, KEEL_EPROTO, m);
	}
	run_actions(n);
}

static void start_timeout(struct keel_timer *tm)
{
	struct mr_node *n = tm->arg;
	if (n->coord_active)
		return;
	char m[KEEL_ERRMSG_LEN] = "mr: nodes not reachable within 30 s:";
	for (uint32_t x = 0; x < MR_MAXN; x++)
		if (n->peer[x] && !n->up[x]) {
			size_t l = strlen(m);
			snprintf(m + l, sizeof m - l, " %u", x);
		}
	mr_node_fail(n, KEEL_EUNAVAIL, m);
	coord_stop(n);
}

static void coord_kick(struct keel_shard *sh, void *arg)
{
	(void)sh;
	struct mr_node *n = arg;
	if (all_up(n))
		coord_start(n);
}

/* ---- a node's life ---------------------------------------------------------- */

/* A shard starts: its executor state and, on shard 0, the agent's timers
 * and (in a cluster) the network on the node's endpoint. */
static int shard_start(struct mr_node *n, struct keel_shard *sh, struct keel_endpoint *ep,
		       char *errmsg)
{
	mr_exec_shard_init(n, sh);
	if (keel_shard_id(sh) != 0)
		return 0;
	n->sh0 = sh;
	/* Containers often forbid io_uring: then spills are read with pread. */
	if (keel_fileq_new(4, -1, &n->q0, NULL))
		n->q0 = NULL;
	keel_timer_init(&n->start_timer, start_timeout, n);
	keel_timer_init(&n->stop_timer, stop_fire, n);
	if (ep) {
		int rc = mr_net_node_open(ep, &net_handlers, n, &n->net, errmsg);
		if (rc < 0) {
			mr_node_fail(n, rc, errmsg);
			atomic_store(&n->finished, 1);
			return rc;
		}
	}
	if (n->is_coord) {
		if (n->npeers)
			keel_timer_arm(sh, &n->start_timer, START_TIMEOUT_NS);
		keel_shard_post(sh, 0, coord_kick, n);
	}
	return 0;
}

static void shard_stop(struct mr_node *n, struct keel_shard *sh)
{
	mr_exec_shard_fini(n, sh);
	if (keel_shard_id(sh) != 0)
		return;
	mr_agent_fini(n);
	keel_timer_cancel(sh, &n->start_timer);
	keel_timer_cancel(sh, &n->stop_timer);
	mr_net_close(n->net);
	n->net = NULL;
	keel_fileq_free(n->q0);
	n->q0 = NULL;
}

/* A single process: a runtime of its own, no network. */
static void local_shard_init(struct keel_shard *sh, void *arg)
{
	char err[KEEL_ERRMSG_LEN];
	if (shard_start(arg, sh, NULL, err) < 0)
		keel_runtime_stop(((struct mr_node *)arg)->rt);
}

static void local_shard_fini(struct keel_shard *sh, void *arg)
{
	shard_stop(arg, sh);
}

/* A cluster: the node layer's shards and mesh (keel/node.h). */
static int node_hook_start(void *arg, struct keel_node *kn, struct keel_endpoint *ep, char *errmsg)
{
	(void)kn;
	return shard_start(arg, keel_endpoint_reactor(ep), keel_endpoint_shard(ep) == 0 ? ep : NULL,
			   errmsg);
}

static void node_hook_stop(void *arg, struct keel_node *kn, struct keel_endpoint *ep)
{
	(void)kn;
	shard_stop(arg, keel_endpoint_reactor(ep));
}

static void report_progress(struct mr_node *n)
{
	const struct keel_mr_config *mc = n->mcfg;
	struct keel_mr_progress p = {
		.map_tasks_total = n->ntasks,
		.map_tasks_done = atomic_load(&n->tasks_done),
		.reduce_tasks_total = n->nparts,
		.reduce_tasks_done = atomic_load(&n->parts_done),
		.input_bytes_total = n->total_bytes,
		.input_bytes_done = atomic_load(&n->bytes_done),
		.elapsed_ns = keel_now_ns() - n->start_ns,
	};
	mc->progress(mc->progress_arg, &p);
}

/* Node configuration (if any) → the node's fields. */
static int node_setup(struct mr_node *n, const char *config_path, uint32_t shards, char *errmsg)
{
	pthread_mutex_init(&n->errmu, NULL);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	n->self = 1;
	n->S = shards ? shards : (unsigned)(ncpu > 0 ? ncpu : 1);
	if (!config_path)
		return 0;
	int rc = keel_node_config_load(config_path, &n->cfg, errmsg);
	if (rc)
		return rc;
	n->have_cfg = true;
	n->self = n->cfg.node_id;
	if (n->self >= MR_MAXN)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "mr: node id %u above %u", n->self,
				       MR_MAXN - 1);
	keel_log_set_node((int)n->self);
	for (size_t i = 0; i < n->cfg.npeers; i++) {
		uint32_t x = n->cfg.peers[i].node;
		if (x < MR_MAXN && x != n->self && !n->peer[x]) {
			n->peer[x] = true;
			n->npeers++;
		}
	}
	n->S = n->cfg.shards ? n->cfg.shards : (unsigned)(ncpu > 0 ? ncpu : 1);
	return 0;
}

/* Runs this node until the job ends; the caller's thread reports progress
 * meanwhile. */
static int node_run(struct mr_node *n, char *errmsg)
{
	int rc;
	if (n->npeers) {
		struct keel_node_options o = {.overcommit = true};
		rc = keel_node_create(&n->cfg, &o, &n->knode, errmsg);
		if (rc)
			return rc;
		n->rt = keel_node_runtime(n->knode);
		n->S = keel_node_shard_count(n->knode);
	} else {
		struct keel_runtime_config rcfg = {
			.nshards = n->S, .overcommit = true, .node_id = n->have_cfg ? (int)n->self : -1,
		};
		rc = keel_runtime_create(&rcfg, &n->rt, errmsg);
		if (rc)
			return rc;
	}
	n->sh = calloc(n->S, sizeof *n->sh);
	n->shard_idle = calloc(n->S, sizeof *n->shard_idle);
	if (!n->sh || !n->shard_idle)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: node state for %u shards", n->S);
	for (unsigned j = 0; j < n->S; j++)
		n->shard_idle[j] = true;
	n->idle = n->S;
	if (n->knode) {
		const struct keel_node_hooks hooks = {.start = node_hook_start,
						      .stop = node_hook_stop, .arg = n};
		rc = keel_node_start(n->knode, &hooks, errmsg);
		if (rc) {
			int e = atomic_load(&n->err);
			if (e)
				snprintf(errmsg, KEEL_ERRMSG_LEN, "%s", n->errmsg);
			return e ? e : rc;
		}
	} else {
		rc = keel_runtime_start(n->rt, local_shard_init, local_shard_fini, n);
		if (rc) {
			snprintf(errmsg, KEEL_ERRMSG_LEN, "mr: runtime: %s", keel_runtime_errmsg(n->rt));
			return rc;
		}
	}
	bool progress = n->is_coord && n->mcfg->progress;
	unsigned iv = progress && n->mcfg->progress_interval_ms ? n->mcfg->progress_interval_ms : 200;
	while (progress && !keel_runtime_stopping(n->rt) && !atomic_load(&n->finished)) {
		/* Ten naps per report, so a short job ends promptly. */
		for (int k = 0; k < 10 && !keel_runtime_stopping(n->rt) && !atomic_load(&n->finished); k++) {
			struct timespec sl = {0, (long)iv * 100000L};
			nanosleep(&sl, NULL);
		}
		report_progress(n);
	}
	if (n->knode)
		keel_node_wait(n->knode);
	else
		keel_runtime_wait(n->rt);
	if (progress)
		report_progress(n);
	rc = atomic_load(&n->err);
	if (rc)
		snprintf(errmsg, KEEL_ERRMSG_LEN, "%s", n->errmsg);
	return rc;
}

static void node_free(struct mr_node *n)
{
	if (n->knode)
		keel_node_destroy(n->knode); /* and its runtime */
	else if (n->rt)
		keel_runtime_destroy(n->rt);
	if (n->have_job)
		mr_rmtree(n->spilldir);
	if (n->job == &n->own_job)
		keel_mr_job_close(&n->own_job);
	mr_plan_free(&n->plan);
	free(n->sh);
	free(n->shard_idle);
	free(n->queue);
	if (n->have_cfg)
		keel_node_config_free(&n->cfg);
	mr_coord_free(&n->coord);
	pthread_mutex_destroy(&n->errmu);
	free(n);
}

int keel_mr_worker_run(const char *config_path, char *errmsg)
{
	struct mr_node *n = calloc(1, sizeof *n);
	if (!n)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: worker");
	int rc = node_setup(n, config_path, 0, errmsg);
	if (!rc && !n->npeers)
		rc = keel_errmsg_set(errmsg, KEEL_ECONFIG, "mr: %s lists no other node", config_path);
	if (!rc)
		rc = node_run(n, errmsg);
	if (!rc && !n->exit_ok)
		rc = keel_errmsg_set(errmsg, KEEL_ESTOPPED, "mr: worker stopped before the job finished");
	node_free(n);
	return rc;
}

/* ---- the coordinator's job --------------------------------------------------- */

/* The output must not exist, or be an empty directory (kept if we fail). */
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
		if (mkdir(out, 0755) == 0)
			*empty_dir = true;
		return 0;
	}
	return keel_errmsg_set(errmsg, -EEXIST, "mr: output %s already exists (remove it or choose another)",
			       out);
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
		char path[MR_PATH_MAX];
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		mr_rmtree(path);
	}
	closedir(d);
}

/* The coordinator's view of the input: task count, sizes and files. */
static int coord_plan(struct mr_node *n, const struct keel_mr_config *cfg, char *errmsg)
{
	struct mr_plan plan;
	int rc = mr_plan_build(&plan, cfg->inputs, cfg->n_inputs, cfg->job->job, cfg->split_size,
			       errmsg);
	if (rc)
		return rc;
	n->ntasks = (uint32_t)plan.n_splits;
	n->total_bytes = plan.total_bytes;
	n->input_files = plan.n_files;
	n->nparts = cfg->partitions ? cfg->partitions : n->S * (n->npeers + 1);
	if (n->nparts > MR_MSG_MAX_PARTS || cfg->n_inputs > MR_MSG_MAX_INPUTS) {
		mr_plan_free(&plan);
		return keel_errmsg_set(errmsg, -EINVAL, "mr: %u partitions and %zu inputs: at most %u and %u",
				       n->nparts, cfg->n_inputs, MR_MSG_MAX_PARTS, MR_MSG_MAX_INPUTS);
	}
	uint64_t *bytes = calloc((size_t)n->ntasks + 1, sizeof *bytes);
	char **path = calloc((size_t)n->ntasks + 1, sizeof *path);
	uint32_t nodes[MR_MAXN], nn = 0;
	for (uint32_t x = 0; x < MR_MAXN; x++)
		if (x == n->self || n->peer[x])
			nodes[nn++] = x;
	if (!bytes || !path) {
		rc = keel_errmsg_set(errmsg, -ENOMEM, "mr: coordinator (%u tasks)", n->ntasks);
	} else {
		for (uint32_t t = 0; t < n->ntasks; t++) {
			bytes[t] = plan.splits[t].end - plan.splits[t].start;
			char abs[4096];
			if (n->npeers && realpath(plan.files[plan.splits[t].file].path, abs))
				path[t] = strdup(abs);
		}
		struct mr_coord_cfg cc = {
			.ntasks = n->ntasks, .nparts = n->nparts, .task_bytes = bytes,
			.task_path = (const char *const *)path, .self = n->self, .nodes = nodes, .nnodes = nn,
		};
		rc = mr_coord_init(&n->coord, &cc, errmsg);
	}
	for (uint32_t t = 0; path && t < n->ntasks; t++)
		free(path[t]);
	free(path);
	free(bytes);
	mr_plan_free(&plan);
	return rc;
}

static void fill_stats(const struct mr_node *n, struct keel_mr_stats *st)
{
	const struct mr_coord *c = &n->coord;
	uint64_t now = keel_now_ns();
	st->map_tasks = c->ntasks;
	st->reduce_tasks = c->nparts;
	st->input_bytes = n->total_bytes;
	st->input_files = n->input_files;
	st->output_bytes = n->output_bytes;
	st->shards = n->S;
	st->partitions = c->nparts;
	st->nodes = n->npeers + 1;
	st->epochs = c->epoch;
	st->local_tasks = n->npeers ? c->local_tasks : c->ntasks;
	st->total_ns = now - n->start_ns;
	if (n->t_map_end) {
		st->map_ns = n->t_map_end - n->start_ns;
		st->reduce_ns = now - n->t_map_end;
	}
	if (n->npeers)
		return; /* the other counters are only this node's: not the job's */
	for (unsigned j = 0; j < n->S; j++) {
		const struct mr_shard *s = &n->sh[j];
		st->input_records += s->records;
		st->emitted += s->emitted;
		st->shuffled += s->shuffled;
		st->spills += s->spills;
		st->spill_bytes += s->spill_bytes;
		st->reduce_keys += s->reduce_keys;
	}
}

static int coordinate(const struct keel_mr_config *cfg, const char *config_path,
		      struct keel_mr_stats *stats, char *errmsg)
{
	memset(stats, 0, sizeof *stats);
	if (!cfg->job || !cfg->job->job || !cfg->output)
		return keel_errmsg_set(errmsg, -EINVAL, "mr: config needs a job and an output");
	int rc = keel_mr_job_validate(cfg->job->job, errmsg);
	if (rc)
		return rc;
	struct mr_node *n = calloc(1, sizeof *n);
	if (!n)
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: coordinator");
	n->is_coord = true;
	n->mcfg = cfg;
	n->start_ns = keel_now_ns();
	n->budget = cfg->mem_budget ? cfg->mem_budget : 256ull << 20;
	bool empty_dir = false, made_tmp = false;
	if ((rc = node_setup(n, config_path, cfg->shards, errmsg)))
		goto out;
	if ((rc = check_output(cfg->output, &empty_dir, errmsg)))
		goto out;
	if ((rc = coord_plan(n, cfg, errmsg)))
		goto out;
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
	made_tmp = true;
	rc = node_run(n, errmsg);
	if (!rc && n->coord.committed != n->coord.nparts)
		rc = keel_errmsg_set(errmsg, KEEL_ESTOPPED, "mr: stopped before every partition was written");
	if (rc)
		goto out;
	/* Commit: every partition file is fsynced; mark success, then make
	 * the whole directory visible under the output name at once. */
	clean_tmpdir(n->tmpdir);
	char path[MR_PATH_MAX];
	snprintf(path, sizeof path, "%s/_SUCCESS", n->tmpdir);
	struct keel_mr_out ok;
	if ((rc = mr_out_open(&ok, path, errmsg)) || (rc = mr_out_close(&ok, errmsg)))
		goto out;
	if (empty_dir)
		rmdir(cfg->output);
	if (rename(n->tmpdir, cfg->output) < 0) {
		rc = keel_errmsg_set(errmsg, -errno, "mr: rename %s to %s", n->tmpdir, cfg->output);
		if (empty_dir)
			mkdir(cfg->output, 0755);
		goto out;
	}
	made_tmp = false;
	fill_stats(n, stats);
out:
	if (made_tmp)
		mr_rmtree(n->tmpdir);
	node_free(n);
	return rc;
}

int keel_mr_run(const struct keel_mr_config *cfg, struct keel_mr_stats *stats, char *errmsg)
{
	return coordinate(cfg, NULL, stats, errmsg);
}

int keel_mr_cluster_run(const struct keel_mr_config *cfg, const char *config_path,
			struct keel_mr_stats *stats, char *errmsg)
{
	return coordinate(cfg, config_path, stats, errmsg);
}
