/*
 * The map-reduce coordinator's bookkeeping (compute/mr_coord.c) driven
 * directly, event by event, with the actions it produces checked: who gets
 * which map task, what a node's death undoes (exactly the tasks it was
 * given, done or in flight: their output lived in its memory; nothing of
 * anyone else's), which partitions are reduced again, which files are
 * committed or discarded, when the job finishes or fails.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "compute/mr_coord.h"

#define MAXT 64
#define MAXP 32

struct file_act {
	uint32_t node, epoch, part;
};

/* What one batch of actions said, copied out of the coordinator. */
struct batch {
	uint32_t ntasks_msgs, nreduce, ncommit, ndiscard, nfinish, nfail;
	/* TASKS: per node, how many messages, their epoch, and the tasks */
	uint32_t tasks_msgs[MR_MAXN], tasks_epoch[MR_MAXN];
	bool gets[MR_MAXN][MAXT];
	uint32_t given[MAXT]; /* how many times each task was handed out */
	/* REDUCE: per partition, to whom, in which epoch, with which nodes */
	int32_t reduce_to[MAXP];
	uint32_t reduce_epoch[MAXP], reduce_n[MAXP], reduce_nodes[MAXP][MR_MAXN];
	/* COMMIT / DISCARD: (node, epoch, part) */
	struct file_act commit[MAXP], discard[MAXP];
};

static struct mr_coord C;

static void take(struct batch *b)
{
	memset(b, 0, sizeof *b);
	for (int p = 0; p < MAXP; p++)
		b->reduce_to[p] = -1;
	const struct mr_coord_act *a;
	size_t n = mr_coord_actions(&C, &a);
	for (size_t i = 0; i < n; i++) {
		switch (a[i].kind) {
		case MR_ACT_TASKS:
			b->ntasks_msgs++;
			b->tasks_msgs[a[i].node]++;
			b->tasks_epoch[a[i].node] = a[i].epoch;
			for (uint32_t k = 0; k < a[i].n; k++) {
				cr_assert_lt(a[i].list[k], MAXT);
				b->gets[a[i].node][a[i].list[k]] = true;
				b->given[a[i].list[k]]++;
			}
			break;
		case MR_ACT_REDUCE:
			cr_assert_lt(a[i].part, MAXP);
			cr_assert_eq(b->reduce_to[a[i].part], -1, "partition %u reduced twice in one batch",
				     a[i].part);
			b->nreduce++;
			b->reduce_to[a[i].part] = (int32_t)a[i].node;
			b->reduce_epoch[a[i].part] = a[i].epoch;
			b->reduce_n[a[i].part] = a[i].n;
			memcpy(b->reduce_nodes[a[i].part], a[i].list, a[i].n * sizeof *a[i].list);
			break;
		case MR_ACT_COMMIT:
			b->commit[b->ncommit++] = (struct file_act){a[i].node, a[i].epoch, a[i].part};
			break;
		case MR_ACT_DISCARD:
			b->discard[b->ndiscard++] = (struct file_act){a[i].node, a[i].epoch, a[i].part};
			break;
		case MR_ACT_FINISH:
			b->nfinish++;
			break;
		case MR_ACT_FAIL:
			b->nfail++;
			break;
		}
	}
	mr_coord_actions_clear(&C);
}

/* Nothing came out of the last events. */
static void none(void)
{
	struct batch b;
	take(&b);
	cr_assert_eq(b.ntasks_msgs + b.nreduce + b.ncommit + b.ndiscard + b.nfinish + b.nfail, 0,
		     "unexpected actions");
}

static const struct mr_str nodir = {"", 0};

static void init(uint32_t nnodes, uint32_t ntasks, uint32_t nparts, const char *const *paths)
{
	uint32_t nodes[MR_MAXN];
	for (uint32_t i = 0; i < nnodes; i++)
		nodes[i] = i + 1;
	uint64_t bytes[MAXT];
	for (uint32_t t = 0; t < ntasks; t++)
		bytes[t] = 1000 + t;
	struct mr_coord_cfg cfg = {.ntasks = ntasks, .nparts = nparts, .task_bytes = bytes,
				   .task_path = paths, .self = 1, .nodes = nodes, .nnodes = nnodes};
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(mr_coord_init(&C, &cfg, err), 0, "%s", err);
}

static void fini(void)
{
	mr_coord_free(&C);
}

TestSuite(mr_coord, .fini = fini);

/* Every node READY; returns the first assignment. */
static void ready_all(uint32_t nnodes, struct batch *b)
{
	for (uint32_t x = 1; x <= nnodes; x++) {
		cr_assert(mr_coord_ready(&C, x, C.ntasks, nodir));
		if (x < nnodes)
			none();
	}
	take(b);
}

static void done(uint32_t node, uint32_t task)
{
	cr_assert(mr_coord_task_done(&C, node, task), "TASK_DONE %u from node %u refused", task, node);
}

/* Every task of the dead node, and only those, went out again: to live
 * nodes, once each, in one TASKS per live node in the new epoch. */
static void assert_reassigned(const struct batch *b, const bool *was_of_dead, uint32_t ntasks,
			      uint32_t dead, uint32_t epoch)
{
	uint32_t live[MR_MAXN];
	uint32_t nl = mr_coord_live_nodes(&C, live);
	cr_assert_eq(b->ntasks_msgs, nl, "%u TASKS messages for %u live nodes", b->ntasks_msgs, nl);
	for (uint32_t i = 0; i < nl; i++) {
		cr_assert_eq(b->tasks_msgs[live[i]], 1);
		cr_assert_eq(b->tasks_epoch[live[i]], epoch);
	}
	cr_assert_eq(b->tasks_msgs[dead], 0, "the dead node was given tasks");
	for (uint32_t t = 0; t < ntasks; t++) {
		if (was_of_dead[t])
			cr_assert_eq(b->given[t], 1, "task %u of the dead node handed out %u times", t,
				     b->given[t]);
		else
			cr_assert_eq(b->given[t], 0, "task %u of a live node was handed out again", t);
	}
}

Test(mr_coord, tasks_go_out_round_robin_once_every_node_is_ready)
{
	init(3, 9, 3, NULL);
	struct batch b;
	ready_all(3, &b);
	cr_assert_eq(b.ntasks_msgs, 3);
	for (uint32_t t = 0; t < 9; t++) {
		cr_assert_eq(b.given[t], 1);
		cr_assert(b.gets[1 + t % 3][t], "task %u not on node %u", t, 1 + t % 3);
		cr_assert_eq(C.task_node[t], (int32_t)(1 + t % 3));
	}
	/* A second READY changes nothing. */
	cr_assert(!mr_coord_ready(&C, 2, 9, nodir));
	none();
}

Test(mr_coord, a_node_dead_mid_map_gives_back_exactly_its_tasks)
{
	init(3, 12, 3, NULL);
	struct batch b;
	ready_all(3, &b);
	/* Node 2 holds 1, 4, 7, 10: it finished 1 and 4 (their output is in
	 * its memory), 7 and 10 are queued or running. Nodes 1 and 3 finished
	 * some of theirs. */
	done(1, 0);
	done(2, 1);
	done(3, 2);
	done(2, 4);
	done(3, 5);
	cr_assert_eq(C.tasks_done, 5);
	uint64_t bytes_before = C.bytes_done;
	none();
	bool of2[12] = {0};
	for (uint32_t t = 1; t < 12; t += 3)
		of2[t] = true;
	cr_assert(mr_coord_node_down(&C, 2));
	cr_assert_eq(C.epoch, 2);
	take(&b);
	assert_reassigned(&b, of2, 12, 2, 2);
	cr_assert_eq(b.nreduce + b.ncommit + b.nfinish + b.nfail, 0);
	/* Its finished tasks no longer count; nobody else's changed. */
	cr_assert_eq(C.tasks_done, 3);
	cr_assert_eq(C.bytes_done, bytes_before - (1000 + 1) - (1000 + 4));
	for (uint32_t t = 0; t < 12; t++) {
		cr_assert_eq(C.task_done[t], t == 0 || t == 2 || t == 5, "task %u", t);
		cr_assert_neq(C.task_node[t], 2);
		if (!of2[t])
			cr_assert_eq(C.task_node[t], (int32_t)(1 + t % 3), "task %u moved", t);
	}
	/* The dead node's late TASK_DONE, and one from a node not given the
	 * task, are ignored. */
	cr_assert(!mr_coord_task_done(&C, 2, 7));
	cr_assert(!mr_coord_task_done(&C, 3, 3));
	/* The new owner's counts. */
	uint32_t owner7 = (uint32_t)C.task_node[7];
	cr_assert(owner7 == 1 || owner7 == 3);
	done(owner7, 7);
	/* SEALED of the old epoch does not count. */
	cr_assert(!mr_coord_sealed(&C, 1, 1));
	none();
}

/* Map done everywhere, every node sealed in `epoch`: the REDUCE batch. */
static void finish_map(uint32_t ntasks, uint32_t epoch, struct batch *b)
{
	for (uint32_t t = 0; t < ntasks; t++)
		if (!C.task_done[t])
			done((uint32_t)C.task_node[t], t);
	uint32_t live[MR_MAXN];
	uint32_t nl = mr_coord_live_nodes(&C, live);
	for (uint32_t i = 0; i < nl; i++) {
		cr_assert(mr_coord_sealed(&C, live[i], epoch));
		if (i + 1 < nl)
			none();
	}
	take(b);
}

static void part_done(uint32_t node, uint32_t epoch, uint32_t p)
{
	struct batch b;
	cr_assert(mr_coord_part_done(&C, node, epoch, p), "PART_DONE(%u, %u) from %u refused", epoch, p,
		  node);
	take(&b);
	cr_assert_eq(b.ncommit, 1);
	cr_assert(b.commit[0].node == node && b.commit[0].epoch == epoch && b.commit[0].part == p);
	mr_coord_commit_done(&C, p, 0);
}

Test(mr_coord, a_node_dead_mid_reduce_runs_its_tasks_again_and_reduces_what_is_not_committed)
{
	init(3, 6, 6, NULL);
	struct batch b;
	ready_all(3, &b);
	finish_map(6, 1, &b);
	/* Every partition, round robin over the live nodes, each told all of them. */
	cr_assert_eq(b.nreduce, 6);
	for (uint32_t p = 0; p < 6; p++) {
		cr_assert_eq(b.reduce_to[p], (int32_t)(1 + p % 3));
		cr_assert_eq(b.reduce_epoch[p], 1);
		cr_assert_eq(b.reduce_n[p], 3);
	}
	part_done(1, 1, 0);
	part_done(2, 1, 1);
	none();
	cr_assert_eq(C.committed, 2);
	/* Node 3 dies while p2 (its own), p3, p4 and p5 are running. */
	bool of3[6] = {0};
	of3[2] = of3[5] = true;
	cr_assert(mr_coord_node_down(&C, 3));
	take(&b);
	assert_reassigned(&b, of3, 6, 3, 2);
	cr_assert_eq(b.nreduce, 0, "reduce before the new epoch's map is sealed");
	cr_assert_eq(C.part_state[0], MR_PART_COMMITTED);
	cr_assert_eq(C.part_state[1], MR_PART_COMMITTED);
	for (uint32_t p = 2; p < 6; p++)
		cr_assert_eq(C.part_state[p], MR_PART_PENDING, "partition %u", p);
	/* Attempts of epoch 1 that finish now are deleted, not committed. */
	cr_assert(!mr_coord_part_done(&C, 1, 1, 3));
	take(&b);
	cr_assert_eq(b.ncommit, 0);
	cr_assert(b.ndiscard == 1 && b.discard[0].part == 3 && b.discard[0].epoch == 1);
	cr_assert_eq(C.part_state[3], MR_PART_PENDING);
	/* The new epoch: exactly the 4 partitions not committed, on nodes 1
	 * and 2, each told only the live nodes. */
	finish_map(6, 2, &b);
	cr_assert_eq(b.nreduce, 4);
	for (uint32_t p = 0; p < 6; p++) {
		if (p < 2) {
			cr_assert_eq(b.reduce_to[p], -1, "committed partition %u reduced again", p);
			continue;
		}
		cr_assert(b.reduce_to[p] == 1 || b.reduce_to[p] == 2);
		cr_assert_eq(b.reduce_epoch[p], 2);
		cr_assert_eq(b.reduce_n[p], 2);
		cr_assert(b.reduce_nodes[p][0] == 1 && b.reduce_nodes[p][1] == 2);
	}
	for (uint32_t p = 2; p < 6; p++) {
		part_done((uint32_t)C.part_node[p], 2, p);
		take(&b);
		cr_assert_eq(b.nfinish, p == 5, "FINISH after partition %u", p);
	}
	cr_assert(C.over);
	cr_assert_eq(C.err, 0);
}

Test(mr_coord, two_deaths_each_give_back_what_the_node_held_then)
{
	init(4, 8, 4, NULL);
	struct batch b;
	ready_all(4, &b);
	/* Node 2 (tasks 1, 5) finished 1, then died. */
	done(2, 1);
	done(4, 3);
	bool of2[8] = {0};
	of2[1] = of2[5] = true;
	cr_assert(mr_coord_node_down(&C, 2));
	take(&b);
	assert_reassigned(&b, of2, 8, 2, 2);
	/* Node 3 now holds its own (2, 6) and whatever it got from node 2; it
	 * finishes one of them and dies too. */
	bool of3[8] = {0};
	uint32_t n3 = 0;
	for (uint32_t t = 0; t < 8; t++)
		if (C.task_node[t] == 3) {
			of3[t] = true;
			n3++;
		}
	cr_assert(of3[2] && of3[6] && n3 >= 2);
	done(3, 2);
	cr_assert(mr_coord_node_down(&C, 3));
	cr_assert_eq(C.epoch, 3);
	take(&b);
	assert_reassigned(&b, of3, 8, 3, 3);
	cr_assert_eq(C.deaths, 2);
	for (uint32_t t = 0; t < 8; t++)
		cr_assert(C.task_node[t] == 1 || C.task_node[t] == 4, "task %u on node %d", t, C.task_node[t]);
	cr_assert(C.task_done[3], "node 4's finished task was undone");
	/* And the job completes on nodes 1 and 4. */
	finish_map(8, 3, &b);
	cr_assert_eq(b.nreduce, 4);
	for (uint32_t p = 0; p < 4; p++)
		part_done((uint32_t)C.part_node[p], 3, p);
	take(&b);
	cr_assert_eq(b.nfinish, 1);
}

Test(mr_coord, stale_or_foreign_part_done_is_discarded)
{
	init(2, 2, 2, NULL);
	struct batch b;
	ready_all(2, &b);
	finish_map(2, 1, &b);
	/* p0 is node 1's, p1 node 2's. */
	cr_assert(!mr_coord_part_done(&C, 2, 1, 0)); /* not the node asked */
	cr_assert(!mr_coord_part_done(&C, 1, 7, 0)); /* an epoch that never was */
	cr_assert(!mr_coord_part_done(&C, 1, 1, 9)); /* no such partition: nothing */
	take(&b);
	cr_assert_eq(b.ncommit, 0);
	cr_assert_eq(b.ndiscard, 2);
	cr_assert_eq(C.committed, 0);
	cr_assert_eq(C.part_state[0], MR_PART_RUNNING);
	part_done(1, 1, 0);
	/* A duplicate of a committed attempt is discarded, not counted again. */
	cr_assert(!mr_coord_part_done(&C, 1, 1, 0));
	take(&b);
	cr_assert(b.ncommit == 0 && b.ndiscard == 1);
	cr_assert_eq(C.committed, 1);
}

Test(mr_coord, a_death_before_every_node_is_ready_waits_for_the_others)
{
	init(3, 6, 3, NULL);
	cr_assert(mr_coord_ready(&C, 1, 6, nodir));
	cr_assert(mr_coord_node_down(&C, 3));
	none(); /* node 2 is not ready yet */
	cr_assert(!mr_coord_ready(&C, 3, 6, nodir)); /* a dead node's READY */
	cr_assert(mr_coord_ready(&C, 2, 6, nodir));
	struct batch b;
	take(&b);
	cr_assert_eq(b.ntasks_msgs, 2);
	cr_assert_eq(b.tasks_epoch[1], 2);
	for (uint32_t t = 0; t < 6; t++)
		cr_assert_eq(b.given[t], 1);
	cr_assert_eq(b.tasks_msgs[3], 0);
}

Test(mr_coord, tasks_go_where_their_files_are_and_elsewhere_when_that_node_dies)
{
	const char *paths[4] = {"/d/a/f0", "/d/b/f1", "/d/a/f2", "/d/ab/f3"};
	init(3, 4, 3, paths);
	cr_assert(mr_coord_ready(&C, 1, 4, nodir));
	cr_assert(mr_coord_ready(&C, 2, 4, (struct mr_str){"/d/a", 4}));
	cr_assert(mr_coord_ready(&C, 3, 4, (struct mr_str){"/d/b", 4}));
	struct batch b;
	take(&b);
	cr_assert(b.gets[2][0] && b.gets[2][2], "node 2 holds /d/a");
	cr_assert(b.gets[3][1], "node 3 holds /d/b");
	cr_assert(!b.gets[2][3], "/d/ab is not under /d/a");
	done(2, 0);
	cr_assert_eq(C.local_tasks, 1);
	cr_assert(mr_coord_node_down(&C, 2));
	cr_assert_eq(C.local_tasks, 0);
	take(&b);
	cr_assert(b.given[0] == 1 && b.given[2] == 1 && b.tasks_msgs[2] == 0);
}

Test(mr_coord, a_node_seeing_other_files_fails_the_job_naming_it)
{
	init(2, 5, 2, NULL);
	cr_assert(mr_coord_ready(&C, 1, 5, nodir));
	mr_coord_ready(&C, 2, 4, nodir);
	struct batch b;
	take(&b);
	cr_assert_eq(b.nfail, 1);
	cr_assert_eq(b.ntasks_msgs, 0);
	cr_assert_eq(C.err, KEEL_EBADINPUT);
	cr_assert(strstr(C.errmsg, "node 2 sees 4 map tasks"), "%s", C.errmsg);
}

Test(mr_coord, an_error_fails_once_and_ends_everything)
{
	init(2, 2, 2, NULL);
	struct batch b;
	ready_all(2, &b);
	mr_coord_fail(&C, KEEL_EBADJOB, "mr: node 2: map: key over the limit");
	mr_coord_fail(&C, -EIO, "a second error");
	take(&b);
	cr_assert_eq(b.nfail, 1);
	cr_assert_eq(C.err, KEEL_EBADJOB);
	cr_assert(strstr(C.errmsg, "key over"));
	cr_assert(!mr_coord_task_done(&C, 1, 0));
	cr_assert(!mr_coord_node_down(&C, 2));
	cr_assert(!mr_coord_sealed(&C, 1, 1));
	none();
}

Test(mr_coord, a_failed_commit_fails_the_job)
{
	init(1, 1, 1, NULL);
	struct batch b;
	ready_all(1, &b);
	finish_map(1, 1, &b);
	cr_assert_eq(b.nreduce, 1);
	cr_assert(mr_coord_part_done(&C, 1, 1, 0));
	take(&b);
	mr_coord_commit_done(&C, 0, -EXDEV);
	take(&b);
	cr_assert(b.nfail == 1 && b.nfinish == 0);
	cr_assert(strstr(C.errmsg, "commit partition 0"), "%s", C.errmsg);
}

Test(mr_coord, only_a_live_member_other_than_itself_can_die)
{
	init(3, 3, 3, NULL);
	struct batch b;
	ready_all(3, &b);
	cr_assert(!mr_coord_node_down(&C, 1)); /* itself */
	cr_assert(!mr_coord_node_down(&C, 9)); /* not in the job */
	cr_assert(!mr_coord_node_down(&C, 200));
	cr_assert_eq(C.epoch, 1);
	cr_assert(mr_coord_node_down(&C, 2));
	take(&b);
	cr_assert(!mr_coord_node_down(&C, 2)); /* once */
	cr_assert_eq(C.epoch, 2);
	none();
}

Test(mr_coord, an_empty_input_reduces_every_partition_once_sealed)
{
	init(2, 0, 3, NULL);
	struct batch b;
	ready_all(2, &b);
	cr_assert_eq(b.ntasks_msgs, 2); /* empty, but each node seals */
	finish_map(0, 1, &b);
	cr_assert_eq(b.nreduce, 3);
}
