/*
 * Log replication (§3.5), the commit rule (§3.6.2), batching, pipelining
 * and flow control, as scenario scripts (raft_script.h)
 * and, where one batch must be looked into, on the core directly.
 */
#include <criterion/criterion.h>

#include "keel/raft.h"
#include "raft_script.h"

Test(raft_replication, proposals_commit_and_apply_in_order)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"propose 1 a\n"
		"propose 1 b\n"
		"propose 2 x -> ENOTLEADER\n"
		"stabilize\n"
		"expect 1 commit=4 applied=4\n"
		"expect 2 commit=4 applied=4\n"
		"expect-sm 1 a,b\n"
		"expect-sm 2 a,b\n"
		"expect-sm 3 a,b\n");
}

Test(raft_replication, batching_one_append_per_follower)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"propose-n 1 10\n"
		"process 1\n"
		"# ten proposals between two ready batches travel together\n"
		"expect-queued append 2\n"
		"stabilize\n"
		"expect 3 commit=12\n"
		"expect-sm 3 v1,v2,v3,v4,v5,v6,v7,v8,v9,v10\n");
}

Test(raft_replication, flow_control_limits_inflight_messages)
{
	raft_script(
		"nodes 3 inflight=2 maxmsg=1\n"
		"campaign 1\n"
		"stabilize\n"
		"propose-n 1 10\n"
		"process 1\n"
		"# one entry per message (maxmsg), two messages in flight each\n"
		"expect-queued append 4\n"
		"deliver\n"
		"process 2\n"
		"process 3\n"
		"deliver\n"
		"process 1\n"
		"# two acknowledgements free two slots per follower\n"
		"expect-queued append 4\n"
		"stabilize\n"
		"expect 2 commit=12 applied=12\n"
		"expect-sm 2 v1,v2,v3,v4,v5,v6,v7,v8,v9,v10\n");
}

Test(raft_replication, flow_control_limits_inflight_bytes)
{
	raft_script(
		"nodes 2 maxmsg=1 inflight-bytes=4\n"
		"campaign 1\n"
		"stabilize\n"
		"propose-n 1 9\n"
		"process 1\n"
		"# entries of 2 bytes: the window closes at 4 bytes\n"
		"expect-queued append 2\n"
		"stabilize\n"
		"expect-sm 2 v1,v2,v3,v4,v5,v6,v7,v8,v9\n");
}

Test(raft_replication, follower_conflicting_suffix_is_replaced)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 1\n"
		"propose 1 lost1\n"
		"propose 1 lost2\n"
		"stabilize\n"
		"expect 1 last=4 commit=2\n"
		"campaign 2\n"
		"stabilize\n"
		"propose 2 won\n"
		"stabilize\n"
		"expect 2 role=leader term=3 commit=4\n"
		"heal\n"
		"run 3\n"
		"# §3.5: 1's uncommitted entries of term 2 are overwritten\n"
		"expect 1 role=follower leader=2 term=3 commit=4 last=4\n"
		"expect-sm 1 won\n");
}

Test(raft_replication, lagging_follower_catches_up)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"crash 3\n"
		"propose-n 1 50\n"
		"stabilize\n"
		"expect 1 commit=52\n"
		"restart 3\n"
		"run 3\n"
		"expect 3 commit=52 applied=52\n");
}

Test(raft_replication, leader_counts_itself_only_when_durable)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"cut 1 3\n"
		"propose 1 a\n"
		"# 2 acknowledges before the leader's own write is acknowledged\n"
		"process 1\n"
		"deliver\n"
		"process 2\n"
		"deliver\n"
		"# the leader processed its write in the same batch: counted now\n"
		"process 1\n"
		"expect 1 commit=3\n");
}

/* Figure 3.7 of the dissertation: an entry of an earlier term stored on a
 * majority is not committed by counting replicas (§3.6.2). */
Test(raft_replication, no_commit_of_old_term_by_counting)
{
	raft_script(
		"nodes 5 maxmsg=1\n"
		"campaign 1\n"
		"stabilize\n"
		"# (a) S1 leads term 2; xx (index 3) reaches only S2\n"
		"cut 1 3\n"
		"cut 1 4\n"
		"cut 1 5\n"
		"propose 1 xx  # 2 bytes: with maxmsg=1 it travels alone\n"
		"stabilize\n"
		"expect 2 last=3 commit=2\n"
		"# (b) S1 crashes; S5 wins term 3 with S3, S4; its entry stays local\n"
		"crash 1\n"
		"heal\n"
		"campaign 5\n"
		"process 5\n"
		"deliver\n"
		"process 2\n"
		"process 3\n"
		"process 4\n"
		"deliver 5\n"
		"expect 5 role=leader term=3\n"
		"process 5\n"
		"crash 5\n"
		"drop\n"
		"# (c) S1 restarts and wins term 4 with S2, S3 (its first try, term 3,\n"
		"# cannot: S3 voted for S5 in term 3)\n"
		"restart 1\n"
		"cut 1 4\n"
		"campaign 1\n"
		"campaign 1\n"
		"process 1\n"
		"deliver\n"
		"process 2\n"
		"process 3\n"
		"deliver 1\n"
		"expect 1 role=leader term=4\n"
		"process 1\n"
		"deliver\n"
		"process 2\n"
		"process 3\n"
		"deliver 1\n"
		"process 1\n"
		"deliver\n"
		"process 3\n"
		"deliver 1\n"
		"process 1\n"
		"# xx (term 2) is now on S1, S2, S3 -- a majority -- yet uncommitted\n"
		"expect 3 last=3\n"
		"expect 1 commit=2\n"
		"stabilize\n"
		"# once the term-4 no-op reaches a majority, both commit\n"
		"expect 1 commit=4\n"
		"expect-sm 3 xx\n");
}

/* Found by tests/sim/raft_sim.c's durability check (seed 333): a follower
 * steps appends of leader 2 (term 2) and then, before its next ready, one of
 * leader 1 (term 3) that truncates what leader 2 sent. The acknowledgement
 * to leader 2 of the truncated entries must not leave: they were never
 * persisted and are gone, and leader 2 would count them towards a commit. */
Test(raft_replication, acks_of_truncated_entries_are_not_sent)
{
	struct keel_raft_config cfg = {
		.id = 3,
		.initial = { .n_voters = 3, .voters = { 1, 2, 3 } },
		.election_tick = 10,
		.heartbeat_tick = 1,
		.seed = 7,
	};
	struct keel_raft *r;
	cr_assert_eq(keel_raft_create(&cfg, NULL, &r, NULL), 0);
	struct keel_raft_ready rd;
	keel_raft_ready(r, &rd); /* the bootstrap entry */
	keel_raft_advance(r, &rd);

	const struct keel_raft_entry old[2] = {
		{ .term = 2, .index = 2, .len = 1, .data = (const uint8_t *)"a" },
		{ .term = 2, .index = 3, .len = 1, .data = (const uint8_t *)"b" },
	};
	struct keel_raft_msg a2 = { .type = KEEL_RAFT_MSG_APPEND, .from = 2, .to = 3,
				    .term = 2, .index = 1, .log_term = 1, .commit = 1,
				    .entries = old, .n_entries = 2 };
	cr_assert_eq(keel_raft_step(r, &a2), 0);
	const struct keel_raft_entry neu = { .term = 3, .index = 2, .len = 1,
					     .data = (const uint8_t *)"x" };
	struct keel_raft_msg a1 = { .type = KEEL_RAFT_MSG_APPEND, .from = 1, .to = 3,
				    .term = 3, .index = 1, .log_term = 1, .commit = 1,
				    .entries = &neu, .n_entries = 1 };
	cr_assert_eq(keel_raft_step(r, &a1), 0);

	cr_assert(keel_raft_has_ready(r));
	keel_raft_ready(r, &rd);
	cr_assert_eq(rd.n_entries, 1, "only leader 1's entry is left to persist");
	cr_assert_eq(rd.entries[0].term, 3);
	bool ack1 = false;
	for (size_t i = 0; i < rd.n_msgs; i++) {
		const struct keel_raft_msg *m = &rd.msgs[i];
		if (m->type != KEEL_RAFT_MSG_APPEND_RESP || m->reject)
			continue;
		cr_assert(m->index <= 2, "an acknowledgement of index %llu to n%llu (term %llu) "
			  "names an entry the log no longer holds",
			  (unsigned long long)m->index, (unsigned long long)m->to,
			  (unsigned long long)m->term);
		if (m->to == 1 && m->index == 2)
			ack1 = true;
	}
	cr_assert(ack1, "leader 1 is told its entry is held");
	keel_raft_advance(r, &rd);
	keel_raft_destroy(r);
}
