/*
 * compute/mr_node.h — one map-reduce node: its shards' executor state
 * (compute/mr_exec.c), its node agent (compute/mr_agent.c) and, on the node
 * that runs keel_mr_run or keel_mr_cluster_run, the coordinator
 * (compute/mr_coord.c, driven from compute/mr_cluster.c). Not a public API.
 *
 * A node is a keel runtime of S shards. Shard 0 runs the agent, the
 * coordinator and the network (compute/mr_net.h); every shard, shard 0
 * included, runs map tasks and reduces partitions. A single process is a
 * cluster of one: the same coordinator, agent and executor, no network, the
 * coordinator's messages to its own agent looped back through shard 0's
 * ring.
 *
 * Ownership and threads:
 *   - struct mr_node is created and freed by the caller's thread
 *     (mr_cluster.c) around the runtime's life; what the agent and the
 *     coordinator keep in it is touched only on shard 0, except the
 *     atomics (progress, the error) and what the text below says.
 *   - struct mr_shard j belongs to shard j. Its sealed generations (gens,
 *     published by ngens with release) are read-only once published and
 *     are read by other shards (a reduce, a stream to another node); shard j
 *     frees them in its fini, when no loop runs any more.
 *   - An attempt (a reduce of partition p in one epoch) is built on shard 0,
 *     waits there for the other nodes' streams, then moves to shard p % S,
 *     which frees it. A stream (partition p sent to another node) lives on
 *     shard 0.
 */
#ifndef KEEL_COMPUTE_MR_NODE_H
#define KEEL_COMPUTE_MR_NODE_H

#include <pthread.h>

#include "compute/mr_coord.h"
#include "compute/mr_internal.h"
#include "compute/mr_msg.h"
#include "compute/mr_net.h"
#include "keel/config.h"
#include "keel/runtime.h"

#define MR_MAX_GENS 64
#define MR_PATH_MAX 4600

struct mr_node;

/* The pairs received from one node for an attempt. */
struct mr_attempt {
	struct mr_node *n;
	uint32_t epoch, p;
	unsigned pending;           /* remote streams not yet ended */
	struct mr_wbuf remote[MR_MAXN];
	bool want[MR_MAXN], ended[MR_MAXN];
	char path[MR_PATH_MAX];
	struct mr_attempt *next;
};
void mr_attempt_free(struct mr_attempt *a);

/* Partition p of this node's output, streamed to node `to`. */
struct mr_stream {
	uint32_t epoch, p, to;
	struct mr_source *src;
	size_t nsrc;
	struct mr_merge *merge;
	struct mr_wbuf buf; /* the DATA message being sent */
	bool built;         /* buf holds one the network refused (KEEL_EFULL) */
	struct mr_stream *next;
};

struct mr_shard {
	struct mr_node *n;
	unsigned id;
	struct keel_shard *sh;
	/* map: the table being filled, then sealed generations */
	struct mr_table *cur;
	struct mr_table *gens[MR_MAX_GENS];
	_Atomic unsigned ngens;
	struct keel_mr_emit emit;
	uint8_t *rbuf;
	size_t rcap;
	struct mr_scan scan;
	bool scanning;
	int task;
	struct keel_io_op rd;
	/* reduce: a FIFO of attempts, one running */
	struct mr_attempt *rq_head, *rq_tail;
	struct mr_attempt *ra;
	struct mr_source *src;
	size_t nsrc;
	struct mr_merge *merge;
	struct mr_merge_stats ms;
	struct keel_mr_out out;
	bool out_open;
	struct keel_fileq *q; /* spill reads; NULL: pread */
	/* this shard's counters, read once the runtime has stopped */
	uint64_t records, reduce_keys;
	uint64_t emitted, shuffled, spills, spill_bytes;
	char errmsg[KEEL_ERRMSG_LEN];
} KEEL_CACHE_ALIGNED;

/* Shard j → shard 0: a map task ended (task MR_NO_TASK: the shard failed
 * outside a task). */
#define MR_NO_TASK UINT32_MAX
struct mr_task_msg {
	struct mr_node *n;
	uint32_t task;
	int rc;
	char err[KEEL_ERRMSG_LEN];
};

/* Shard p % S → shard 0: a partition's attempt ended. */
struct mr_part_msg {
	struct mr_node *n;
	uint32_t epoch, p;
	int rc;
	char err[KEEL_ERRMSG_LEN];
	char path[MR_PATH_MAX];
};

struct mr_node {
	/* ---- set before the runtime starts, read-only after ---- */
	struct keel_node_config cfg;
	bool have_cfg;
	uint32_t self;
	unsigned S;
	bool peer[MR_MAXN]; /* the other nodes of the job */
	uint32_t npeers;
	bool is_coord;
	const struct keel_mr_config *mcfg; /* the coordinator's job */
	struct keel_node *knode; /* a cluster's node (keel/node.h); NULL alone */
	struct keel_runtime *rt; /* knode's runtime, or a lone process's own */
	struct mr_shard *sh;
	uint64_t start_ns;

	/* ---- shard 0 ---- */
	struct keel_shard *sh0;
	struct mr_net *net; /* NULL in a cluster of one */
	bool up[MR_MAXN];
	struct keel_fileq *q0; /* shard 0's spill reads; NULL: pread */
	struct keel_timer stop_timer, start_timer;

	/* the agent (mr_agent.c) */
	uint32_t coord_node;
	bool have_job;
	struct keel_mr_jobref own_job;
	const struct keel_mr_jobref *job; /* own_job, or the coordinator's */
	struct mr_plan plan;
	uint32_t R;
	uint64_t budget;
	bool no_fsync;
	char tmpdir[4200];
	char spilldir[4400];
	bool ready_sent;
	uint32_t epoch;
	uint32_t *queue;
	size_t qhead, qlen, qcap;
	unsigned idle;
	bool *shard_idle;
	bool sealed_sent;
	struct mr_attempt *waiting;
	struct mr_stream *streams;
	bool exit_ok;

	/* the coordinator (mr_cluster.c, around mr_coord.c) */
	bool coord_active;
	struct mr_coord coord;
	uint32_t ntasks, nparts; /* set before start (the monitor reads them) */
	uint64_t total_bytes, input_files;
	uint64_t output_bytes;
	uint64_t t_map_end;

	/* ---- any thread ---- */
	_Atomic int err;
	char errmsg[KEEL_ERRMSG_LEN];
	pthread_mutex_t errmu;
	_Atomic uint64_t tasks_done, bytes_done, parts_done;
	_Atomic int finished;
};

/* ---- mr_cluster.c: the node ---- */
/* Records the job's first error (any thread). */
void mr_node_fail(struct mr_node *n, int rc, const char *msg);
/* A message to node `to`'s agent (or, to_coord, its coordinator), on shard
 * 0. To this node itself it goes through shard 0's own ring, so handlers
 * never re-enter each other. 0 or a negative code (logged). */
int mr_node_send(struct mr_node *n, uint32_t to, bool to_coord, uint16_t type, const void *d,
		 size_t len);

/* ---- mr_agent.c: the node agent, on shard 0 ---- */
void mr_agent_recv(struct mr_node *n, uint32_t from, uint16_t type, const void *d, size_t len);
/* Every peer is up: READY once the job is known. */
void mr_agent_peers_up(struct mr_node *n);
/* Room again towards node x: resume the streams to it. */
void mr_agent_writable(struct mr_node *n, uint32_t x);
/* Tells the coordinator this node failed the job (message named by node). */
void mr_agent_error(struct mr_node *n, const char *msg);
/* Shard 0's fini: drops waiting attempts and streams. */
void mr_agent_fini(struct mr_node *n);
/* Posted or called by the shards (keel_shard_post/call to shard 0). */
void *mr_agent_next_task(struct keel_shard *on, void *shard);
void mr_agent_task_done(struct keel_shard *on, void *task_msg);
void mr_agent_shard_idle(struct keel_shard *on, void *shard);
void mr_agent_part_result(struct keel_shard *on, void *part_msg);

/* ---- mr_exec.c: the shard executor ---- */
void mr_exec_shard_init(struct mr_node *n, struct keel_shard *sh);
void mr_exec_shard_fini(struct mr_node *n, struct keel_shard *sh);
/* Posted to shard j: take map tasks from the agent until none is left,
 * then seal this shard's table as one more generation. */
void mr_exec_map_next(struct keel_shard *sh, void *shard);
/* From shard 0: reduce attempt a on shard a->p % S (which frees it). */
void mr_exec_reduce(struct mr_node *n, struct mr_attempt *a);
/* Merge sources for partition p from every local shard's sealed
 * generations, plus `extra` free slots at the end (*out malloc'd). */
int mr_exec_local_sources(struct mr_node *n, uint32_t p, struct keel_fileq *q,
			  struct mr_source **out, size_t *nout, size_t extra, char *errmsg);

#endif
