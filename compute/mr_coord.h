/*
 * compute/mr_coord.h — the map-reduce coordinator's bookkeeping as a pure
 * state machine (compute/mr_coord.c): which node runs which map task, which
 * partition is being reduced where and which are committed, the epoch, and
 * what a node's death undoes. No I/O, no clock, no threads: events go in
 * (a node is ready, a task is done, a node sealed its output, a partition
 * file is written, a node is gone) and actions come out (send these tasks,
 * reduce this partition there, commit or discard this file, finish, fail),
 * which the caller (compute/mr_cluster.c) carries out and drains. Not a
 * public API; tests/unit/compute/test_mr_coord.c drives it directly.
 *
 * The protocol it keeps (messages in compute/mr_msg.h):
 *   - Once every live node is READY (with the same task count as ours), the
 *     unassigned tasks go out in one TASKS(epoch) per live node (possibly
 *     empty): a live node that holds the task's file (its READY named a data
 *     directory above the file) gets it, else round robin.
 *   - TASK_DONE counts only from the node the task is assigned to.
 *   - When every task is done and every live node has SEALED in the current
 *     epoch, each partition not committed gets REDUCE(epoch, p, live nodes)
 *     on one live node (round robin over the whole job).
 *   - PART_DONE(epoch, p) from the node reducing p in the current epoch is
 *     committed (the caller renames the file, then reports back with
 *     mr_coord_commit_done); any other is discarded (an older epoch's file).
 *   - A node dies: the epoch goes up, exactly the tasks assigned to it (done
 *     or not: their output lived in its memory) are unassigned again, every
 *     partition being reduced (not committed) goes back to pending, the
 *     others' SEALED no longer counts; once every live node is ready the
 *     freed tasks are handed out in TASKS(new epoch), every live node again
 *     gets one, and the reduce starts over for the partitions not committed.
 * The coordinator's own node never dies (its death ends the job).
 *
 * Ownership: the coordinator copies what mr_coord_init is given. The
 * actions (and the lists they point to) belong to the coordinator and stay
 * valid until mr_coord_actions_clear or the next event.
 */
#ifndef KEEL_COMPUTE_MR_COORD_H
#define KEEL_COMPUTE_MR_COORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/mr_msg.h"
#include "keel/base.h"

enum mr_part_state {
	MR_PART_PENDING = 0,
	MR_PART_RUNNING = 1,    /* REDUCE sent in the current epoch */
	MR_PART_COMMITTING = 2, /* its file is being renamed by the caller */
	MR_PART_COMMITTED = 3,
};

enum mr_coord_act_kind {
	MR_ACT_TASKS,   /* send TASKS(epoch, list[0..n)) to node */
	MR_ACT_REDUCE,  /* send REDUCE(epoch, part, list[0..n) = the live nodes) to node */
	MR_ACT_COMMIT,  /* rename node's file of (epoch, part) to the partition's
			 * final name, then call mr_coord_commit_done */
	MR_ACT_DISCARD, /* delete node's file of (epoch, part): not the current attempt */
	MR_ACT_FINISH,  /* every partition committed: the job succeeded */
	MR_ACT_FAIL,    /* the job failed: mr_coord_error() says why */
};

struct mr_coord_act {
	enum mr_coord_act_kind kind;
	uint32_t node, epoch, part;
	const uint32_t *list; /* set by mr_coord_actions */
	uint32_t n;
	uint32_t list_off;    /* private */
};

struct mr_coord_cfg {
	uint32_t ntasks, nparts; /* nparts >= 1 */
	const uint64_t *task_bytes; /* ntasks entries: input bytes of each task (may be NULL) */
	/* ntasks entries: absolute path of each task's file, for locality
	 * (may be NULL, or have NULL entries) */
	const char *const *task_path;
	uint32_t self; /* the coordinator's node (< MR_MAXN) */
	const uint32_t *nodes; /* every node of the job, self included (< MR_MAXN) */
	uint32_t nnodes;
};

struct mr_coord {
	uint32_t ntasks, nparts, self;
	uint32_t epoch;      /* 1 from the start */
	bool reducing;       /* REDUCE sent in this epoch */
	bool over;           /* FINISH or FAIL was produced: later events are ignored */
	bool member[MR_MAXN], live[MR_MAXN], ready[MR_MAXN], sealed[MR_MAXN];
	char *data_dir[MR_MAXN];
	int32_t *task_node; /* -1 unassigned */
	int32_t *scratch;   /* assign(): where each task goes */
	bool *task_done;
	uint64_t *task_bytes;
	char **task_path;
	uint8_t *part_state; /* enum mr_part_state */
	int32_t *part_node;  /* who reduces it in this epoch (or committed it) */
	uint32_t committed;
	uint32_t rr;         /* round robin of REDUCE over the job */
	/* progress */
	uint64_t tasks_done, bytes_done, local_tasks;
	uint32_t node_tasks[MR_MAXN]; /* tasks done by each node (accepted TASK_DONEs) */
	uint32_t deaths;
	/* the result */
	int err;
	char errmsg[KEEL_ERRMSG_LEN];
	/* actions not yet drained, and the pool their lists live in */
	struct mr_coord_act *act;
	size_t nact, act_cap;
	uint32_t *pool;
	size_t npool, pool_cap;
};

/* 0, or -ENOMEM / -EINVAL (a node id out of range, nparts 0) with errmsg. */
int mr_coord_init(struct mr_coord *c, const struct mr_coord_cfg *cfg, char *errmsg);
void mr_coord_free(struct mr_coord *c);

/* The events. Each returns true when it changed the coordinator's state
 * (false: ignored as stale, duplicate, from a dead node, or after the end). */
bool mr_coord_ready(struct mr_coord *c, uint32_t node, uint32_t splits, struct mr_str data_dir);
bool mr_coord_task_done(struct mr_coord *c, uint32_t node, uint32_t task);
bool mr_coord_sealed(struct mr_coord *c, uint32_t node, uint32_t epoch);
/* The caller has checked that the file named is that node's attempt of
 * (epoch, part) in the job's directory. */
bool mr_coord_part_done(struct mr_coord *c, uint32_t node, uint32_t epoch, uint32_t part);
/* The outcome of an MR_ACT_COMMIT (0, or the rename's negative errno). */
void mr_coord_commit_done(struct mr_coord *c, uint32_t part, int rc);
bool mr_coord_node_down(struct mr_coord *c, uint32_t node);
/* A node reported an error, or the caller failed (rc < 0): the job fails. */
void mr_coord_fail(struct mr_coord *c, int rc, const char *msg);

/* The actions produced since the last clear, in order (valid until the
 * next event or clear). */
size_t mr_coord_actions(struct mr_coord *c, const struct mr_coord_act **out);
void mr_coord_actions_clear(struct mr_coord *c);

/* Live nodes, ascending, into out (MR_MAXN entries); returns how many. */
uint32_t mr_coord_live_nodes(const struct mr_coord *c, uint32_t *out);

#endif
