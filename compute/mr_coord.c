/*
 * compute/mr_coord.c — the coordinator's bookkeeping (the protocol is in
 * compute/mr_coord.h). Pure: it only reads its arguments and its own state
 * and appends actions; compute/mr_cluster.c turns them into messages and
 * renames, and feeds what comes back in as events.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/mr_coord.h"

/* ---- actions ------------------------------------------------------------ */

/* Lists live in one pool; an action keeps its list's offset until
 * mr_coord_actions_view resolves it (the pool may move as it grows). */
#define NO_LIST ((uint32_t)-1)

static void fail_now(struct mr_coord *c, int rc, const char *msg);

/* Keeps one slot free, so a FAIL can always be recorded. */
static bool push(struct mr_coord *c, struct mr_coord_act a)
{
	if (c->nact + 1 >= c->act_cap) {
		size_t nc = c->act_cap * 2;
		struct mr_coord_act *p = realloc(c->act, nc * sizeof *p);
		if (!p) {
			if (a.kind == MR_ACT_FAIL && c->nact < c->act_cap) {
				c->act[c->nact++] = a;
				return true;
			}
			fail_now(c, -ENOMEM, "mr: coordinator: out of memory");
			return false;
		}
		c->act = p;
		c->act_cap = nc;
	}
	c->act[c->nact++] = a;
	return true;
}

/* Room for n more list entries; returns the offset of the first, or
 * NO_LIST (the job has failed). */
static uint32_t pool_reserve(struct mr_coord *c, uint32_t n)
{
	if (c->npool + n > c->pool_cap) {
		size_t nc = c->pool_cap ? c->pool_cap : 64;
		while (nc < c->npool + n)
			nc *= 2;
		uint32_t *p = realloc(c->pool, nc * sizeof *p);
		if (!p) {
			fail_now(c, -ENOMEM, "mr: coordinator: out of memory");
			return NO_LIST;
		}
		c->pool = p;
		c->pool_cap = nc;
	}
	uint32_t off = (uint32_t)c->npool;
	c->npool += n;
	return off;
}

size_t mr_coord_actions(struct mr_coord *c, const struct mr_coord_act **out)
{
	for (size_t i = 0; i < c->nact; i++)
		c->act[i].list = c->act[i].list_off == NO_LIST || !c->pool ? NULL : c->pool + c->act[i].list_off;
	*out = c->act;
	return c->nact;
}

void mr_coord_actions_clear(struct mr_coord *c)
{
	c->nact = 0;
	c->npool = 0;
}

static void fail_now(struct mr_coord *c, int rc, const char *msg)
{
	if (c->over)
		return;
	c->over = true;
	c->err = rc ? rc : KEEL_EBADJOB;
	snprintf(c->errmsg, sizeof c->errmsg, "%s", msg);
	push(c, (struct mr_coord_act){.kind = MR_ACT_FAIL, .list_off = NO_LIST});
}

void mr_coord_fail(struct mr_coord *c, int rc, const char *msg)
{
	fail_now(c, rc, msg);
}

static void finish(struct mr_coord *c)
{
	if (c->over)
		return;
	c->over = true;
	push(c, (struct mr_coord_act){.kind = MR_ACT_FINISH, .list_off = NO_LIST});
}

/* ---- set-up ------------------------------------------------------------- */

int mr_coord_init(struct mr_coord *c, const struct mr_coord_cfg *cfg, char *errmsg)
{
	memset(c, 0, sizeof *c);
	if (cfg->nparts == 0 || cfg->self >= MR_MAXN)
		return keel_errmsg_set(errmsg, -EINVAL, "mr: coordinator: %u partitions, node %u",
				       cfg->nparts, cfg->self);
	c->ntasks = cfg->ntasks;
	c->nparts = cfg->nparts;
	c->self = cfg->self;
	c->epoch = 1;
	for (uint32_t i = 0; i < cfg->nnodes; i++) {
		if (cfg->nodes[i] >= MR_MAXN)
			return keel_errmsg_set(errmsg, -EINVAL, "mr: coordinator: node id %u above %u",
					       cfg->nodes[i], MR_MAXN - 1);
		c->member[cfg->nodes[i]] = c->live[cfg->nodes[i]] = true;
	}
	c->member[c->self] = c->live[c->self] = true;
	size_t nt = (size_t)c->ntasks + 1;
	c->task_node = malloc(nt * sizeof *c->task_node);
	c->scratch = malloc(nt * sizeof *c->scratch);
	c->task_done = calloc(nt, sizeof *c->task_done);
	c->task_bytes = calloc(nt, sizeof *c->task_bytes);
	c->task_path = calloc(nt, sizeof *c->task_path);
	c->part_state = calloc(c->nparts, sizeof *c->part_state);
	c->part_node = malloc(c->nparts * sizeof *c->part_node);
	c->act_cap = 16;
	c->act = malloc(c->act_cap * sizeof *c->act);
	if (!c->task_node || !c->scratch || !c->task_done || !c->task_bytes || !c->task_path ||
	    !c->part_state || !c->part_node || !c->act) {
		mr_coord_free(c);
		return keel_errmsg_set(errmsg, -ENOMEM, "mr: coordinator (%u tasks, %u partitions)",
				       cfg->ntasks, cfg->nparts);
	}
	for (uint32_t t = 0; t < c->ntasks; t++) {
		c->task_node[t] = -1;
		if (cfg->task_bytes)
			c->task_bytes[t] = cfg->task_bytes[t];
		if (cfg->task_path && cfg->task_path[t] && !(c->task_path[t] = strdup(cfg->task_path[t]))) {
			mr_coord_free(c);
			return keel_errmsg_set(errmsg, -ENOMEM, "mr: coordinator");
		}
	}
	for (uint32_t p = 0; p < c->nparts; p++)
		c->part_node[p] = -1;
	return 0;
}

void mr_coord_free(struct mr_coord *c)
{
	for (uint32_t t = 0; c->task_path && t < c->ntasks; t++)
		free(c->task_path[t]);
	for (uint32_t x = 0; x < MR_MAXN; x++)
		free(c->data_dir[x]);
	free(c->task_path);
	free(c->task_node);
	free(c->scratch);
	free(c->task_done);
	free(c->task_bytes);
	free(c->part_state);
	free(c->part_node);
	free(c->act);
	free(c->pool);
	memset(c, 0, sizeof *c);
}

/* ---- helpers ------------------------------------------------------------ */

uint32_t mr_coord_live_nodes(const struct mr_coord *c, uint32_t *out)
{
	uint32_t k = 0;
	for (uint32_t x = 0; x < MR_MAXN; x++)
		if (c->live[x])
			out[k++] = x;
	return k;
}

/* Whether node x holds the file of task t: its path is under the data
 * directory x announced in READY. */
static bool holds(const struct mr_coord *c, uint32_t x, uint32_t t)
{
	const char *d = c->data_dir[x];
	if (!d || !d[0])
		return false;
	size_t l = strlen(d);
	const char *f = c->task_path[t];
	return f && !strncmp(f, d, l) && f[l] == '/';
}

static bool all_live_ready(const struct mr_coord *c)
{
	for (uint32_t x = 0; x < MR_MAXN; x++)
		if (c->live[x] && !c->ready[x])
			return false;
	return true;
}

/* Hands every unassigned task to the live nodes in this epoch: to a live
 * node holding its file if there is one, else round robin. Every live node
 * gets a TASKS (maybe empty), so each reports SEALED in this epoch. */
static void assign(struct mr_coord *c)
{
	uint32_t nodes[MR_MAXN];
	uint32_t nl = mr_coord_live_nodes(c, nodes);
	uint32_t rr = 0;
	for (uint32_t t = 0; t < c->ntasks; t++) {
		c->scratch[t] = -1;
		if (c->task_node[t] >= 0)
			continue;
		for (uint32_t i = 0; i < nl && c->scratch[t] < 0; i++)
			if (holds(c, nodes[i], t))
				c->scratch[t] = (int32_t)nodes[i];
		if (c->scratch[t] < 0)
			c->scratch[t] = (int32_t)nodes[rr++ % nl];
	}
	for (uint32_t i = 0; i < nl; i++) {
		uint32_t cnt = 0;
		for (uint32_t t = 0; t < c->ntasks; t++)
			cnt += c->scratch[t] == (int32_t)nodes[i];
		uint32_t off = pool_reserve(c, cnt);
		if (off == NO_LIST)
			return;
		uint32_t k = 0;
		for (uint32_t t = 0; t < c->ntasks; t++)
			if (c->scratch[t] == (int32_t)nodes[i]) {
				c->pool[off + k++] = t;
				c->task_node[t] = (int32_t)nodes[i];
			}
		if (!push(c, (struct mr_coord_act){.kind = MR_ACT_TASKS, .node = nodes[i],
						   .epoch = c->epoch, .list_off = off, .n = cnt}))
			return;
	}
}

/* Every task done and every live node sealed in this epoch: reduce every
 * partition not committed, one live node each, round robin. */
static void maybe_reduce(struct mr_coord *c)
{
	if (c->reducing || c->over)
		return;
	for (uint32_t t = 0; t < c->ntasks; t++)
		if (!c->task_done[t])
			return;
	uint32_t nodes[MR_MAXN];
	uint32_t nl = mr_coord_live_nodes(c, nodes);
	for (uint32_t i = 0; i < nl; i++)
		if (!c->sealed[nodes[i]])
			return;
	c->reducing = true;
	uint32_t off = pool_reserve(c, nl);
	if (off == NO_LIST)
		return;
	memcpy(c->pool + off, nodes, nl * sizeof *nodes);
	for (uint32_t p = 0; p < c->nparts; p++) {
		if (c->part_state[p] != MR_PART_PENDING)
			continue;
		uint32_t to = nodes[c->rr++ % nl];
		c->part_state[p] = MR_PART_RUNNING;
		c->part_node[p] = (int32_t)to;
		if (!push(c, (struct mr_coord_act){.kind = MR_ACT_REDUCE, .node = to, .epoch = c->epoch,
						   .part = p, .list_off = off, .n = nl}))
			return;
	}
	if (c->committed == c->nparts)
		finish(c);
}

/* ---- events ------------------------------------------------------------- */

bool mr_coord_ready(struct mr_coord *c, uint32_t x, uint32_t splits, struct mr_str data_dir)
{
	if (c->over || x >= MR_MAXN || !c->live[x] || c->ready[x])
		return false;
	char *d = malloc((size_t)data_dir.len + 1);
	if (!d) {
		fail_now(c, -ENOMEM, "mr: coordinator: out of memory");
		return false;
	}
	memcpy(d, data_dir.p, data_dir.len);
	d[data_dir.len] = 0;
	free(c->data_dir[x]);
	c->data_dir[x] = d;
	if (splits != c->ntasks) {
		char m[KEEL_ERRMSG_LEN];
		snprintf(m, sizeof m, "mr: node %u sees %u map tasks in the input, the coordinator %u "
			 "(do all nodes see the same files?)", x, splits, c->ntasks);
		fail_now(c, KEEL_EBADINPUT, m);
		return true;
	}
	c->ready[x] = true;
	if (all_live_ready(c))
		assign(c);
	return true;
}

bool mr_coord_task_done(struct mr_coord *c, uint32_t x, uint32_t t)
{
	if (c->over || x >= MR_MAXN || t >= c->ntasks || c->task_node[t] != (int32_t)x ||
	    c->task_done[t])
		return false;
	c->task_done[t] = true;
	if (holds(c, x, t))
		c->local_tasks++;
	c->tasks_done++;
	c->bytes_done += c->task_bytes[t];
	c->node_tasks[x]++;
	return true;
}

bool mr_coord_sealed(struct mr_coord *c, uint32_t x, uint32_t e)
{
	if (c->over || x >= MR_MAXN || !c->live[x] || e != c->epoch || c->sealed[x])
		return false;
	c->sealed[x] = true;
	maybe_reduce(c);
	return true;
}

bool mr_coord_part_done(struct mr_coord *c, uint32_t x, uint32_t e, uint32_t p)
{
	if (x >= MR_MAXN || p >= c->nparts)
		return false;
	if (!c->over && e == c->epoch && c->reducing && c->part_state[p] == MR_PART_RUNNING &&
	    c->part_node[p] == (int32_t)x) {
		c->part_state[p] = MR_PART_COMMITTING;
		push(c, (struct mr_coord_act){.kind = MR_ACT_COMMIT, .node = x, .epoch = e, .part = p,
					      .list_off = NO_LIST});
		return true;
	}
	/* An attempt of an older epoch, or one nobody asked for. */
	push(c, (struct mr_coord_act){.kind = MR_ACT_DISCARD, .node = x, .epoch = e, .part = p,
				      .list_off = NO_LIST});
	return false;
}

void mr_coord_commit_done(struct mr_coord *c, uint32_t p, int rc)
{
	if (p >= c->nparts || c->part_state[p] != MR_PART_COMMITTING)
		return;
	if (rc) {
		c->part_state[p] = MR_PART_PENDING;
		char m[KEEL_ERRMSG_LEN];
		keel_errmsg_set(m, rc, "mr: commit partition %u", p);
		fail_now(c, rc, m);
		return;
	}
	c->part_state[p] = MR_PART_COMMITTED;
	c->committed++;
	if (c->committed == c->nparts)
		finish(c);
}

bool mr_coord_node_down(struct mr_coord *c, uint32_t x)
{
	if (c->over || x >= MR_MAXN || !c->live[x] || x == c->self)
		return false;
	c->live[x] = false;
	c->deaths++;
	c->epoch++;
	c->reducing = false;
	memset(c->sealed, 0, sizeof c->sealed);
	/* Its map output lived in its memory: every task it ran or was
	 * running runs again; nobody else's. */
	for (uint32_t t = 0; t < c->ntasks; t++) {
		if (c->task_node[t] != (int32_t)x)
			continue;
		if (c->task_done[t]) {
			c->task_done[t] = false;
			c->tasks_done--;
			c->bytes_done -= c->task_bytes[t];
			if (holds(c, x, t))
				c->local_tasks--;
		}
		c->task_node[t] = -1;
	}
	/* Every reduce in flight read from every live node, it among them. */
	for (uint32_t p = 0; p < c->nparts; p++)
		if (c->part_state[p] == MR_PART_RUNNING) {
			c->part_state[p] = MR_PART_PENDING;
			c->part_node[p] = -1;
		}
	if (all_live_ready(c))
		assign(c);
	return true;
}
