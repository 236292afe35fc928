/*
 * Membership changes one server at a time (§4.1), learners (§4.2.1), the
 * removed leader (§4.2.2), two-server clusters and a change racing a
 * leader change, as scenario scripts (raft_script.h).
 */
#include <criterion/criterion.h>

#include "raft_script.h"

Test(raft_membership, learner_catches_up_then_is_promoted)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"propose-n 1 3\n"
		"stabilize\n"
		"join 4\n"
		"expect 4 voters=- learners=-\n"
		"conf 1 add-learner 4\n"
		"expect 1 voters=1,2,3 learners=4  # in effect once appended\n"
		"stabilize\n"
		"expect 4 voters=1,2,3 learners=4 commit=6\n"
		"expect-sm 4 v1,v2,v3\n"
		"campaign 4 -> EBUSY  # a learner never campaigns\n"
		"conf 1 add-voter 4\n"
		"stabilize\n"
		"expect 1 voters=1,2,3,4 learners=- commit=7\n"
		"expect 4 voters=1,2,3,4 learners=-\n"
		"propose 1 a\n"
		"stabilize\n"
		"expect-sm 4 v1,v2,v3,a\n");
}

Test(raft_membership, lagging_learner_not_promoted)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"join 4\n"
		"isolate 4\n"
		"conf 1 add-learner 4\n"
		"stabilize\n"
		"expect 1 commit=3\n"
		"conf 1 add-voter 4 -> EBUSY\n"
		"heal\n"
		"run 3\n"
		"conf 1 add-voter 4\n");
}

Test(raft_membership, one_change_at_a_time)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"join 4\n"
		"join 5\n"
		"conf 1 add-learner 4\n"
		"conf 1 add-learner 5 -> EBUSY\n"
		"conf 2 add-learner 5 -> ENOTLEADER\n"
		"conf 1 remove 9 -> EBUSY\n"
		"stabilize\n"
		"conf 1 remove 9 -> ENOTFOUND\n"
		"conf 1 add-learner 4 -> EBADINPUT\n"
		"conf 1 add-learner 5\n"
		"stabilize\n"
		"expect 5 learners=4,5\n");
}

Test(raft_membership, new_leader_commits_before_changing)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"process 1\n"
		"deliver\n"
		"process 2\n"
		"process 3\n"
		"deliver 1\n"
		"expect 1 role=leader commit=1\n"
		"conf 1 remove 3 -> EBUSY\n"
		"stabilize\n"
		"conf 1 remove 3\n"
		"stabilize\n"
		"expect 2 voters=1,2\n");
}

Test(raft_membership, removed_follower_cannot_campaign)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"conf 1 remove 3\n"
		"stabilize\n"
		"expect 1 voters=1,2 commit=3\n"
		"expect 3 voters=1,2\n"
		"campaign 3 -> EBUSY\n"
		"propose 1 a\n"
		"stabilize\n"
		"expect-sm 2 a\n"
		"run 50\n"
		"expect 1 role=leader term=2\n");
}

Test(raft_membership, removed_leader_steps_down_after_commit)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"conf 1 remove 1\n"
		"expect 1 role=leader voters=2,3\n"
		"stabilize\n"
		"# §4.2.2: it led until the entry committed without counting itself\n"
		"expect 1 role=follower voters=2,3 commit=3\n"
		"expect 2 commit>2\n"
		"crash 1\n"
		"run 40\n"
		"expect-leader\n"
		"propose L b\n"
		"stabilize\n"
		"expect-sm 2 b\n"
		"expect-sm 3 b\n");
}

Test(raft_membership, removed_server_cannot_disrupt)
{
	raft_script(
		"nodes 3 prevote checkquorum\n"
		"tick-all 10\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 3\n"
		"conf 1 remove 3\n"
		"stabilize\n"
		"run 12\n"
		"# 3 never heard of its removal and keeps trying to be elected\n"
		"expect 3 voters=1,2,3\n"
		"heal\n"
		"run 60\n"
		"expect 1 role=leader term=2 voters=1,2\n"
		"expect 2 role=follower term=2 leader=1\n");
}

Test(raft_membership, two_nodes_remove_follower)
{
	raft_script(
		"nodes 2\n"
		"campaign 1\n"
		"stabilize\n"
		"conf 1 remove 2\n"
		"stabilize\n"
		"expect 1 role=leader voters=1\n"
		"propose 1 a\n"
		"stabilize\n"
		"expect 1 commit=4 applied=4\n");
}

Test(raft_membership, two_nodes_removed_leader_crash_before_commit)
{
	raft_script(
		"nodes 2\n"
		"campaign 1\n"
		"stabilize\n"
		"conf 1 remove 1\n"
		"process 1\n"
		"drop\n"
		"crash 1\n"
		"restart 1\n"
		"expect 1 voters=2 last=3 commit=2\n"
		"expect 2 voters=1,2 last=2\n"
		"# 2 cannot win: 1 holds a longer log. 1 is not in its latest\n"
		"# configuration, but that one is uncommitted and the previous one\n"
		"# has it, so it may still campaign and finish the change\n"
		"campaign 2\n"
		"stabilize\n"
		"expect 2 role=follower  # 1 of 2 refused: it cannot win\n"
		"campaign 1\n"
		"stabilize\n"
		"# it led, committed its removal, stepped down and handed over\n"
		"expect 1 role=follower voters=2\n"
		"expect 2 role=leader voters=2 commit>3\n"
		"propose 2 a\n"
		"stabilize\n"
		"expect-sm 2 a\n");
}

Test(raft_membership, change_racing_leader_change_is_undone)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 1\n"
		"conf 1 remove 3\n"
		"stabilize\n"
		"expect 1 voters=1,2 commit=2\n"
		"campaign 2\n"
		"stabilize\n"
		"expect 2 role=leader voters=1,2,3\n"
		"propose 2 b\n"
		"stabilize\n"
		"heal\n"
		"run 3\n"
		"# the uncommitted entry was truncated, and its configuration with it\n"
		"expect 1 role=follower leader=2 voters=1,2,3\n"
		"expect-sm 1 b\n"
		"conf 2 remove 3\n"
		"stabilize\n"
		"expect 1 voters=1,2\n");
}

Test(raft_membership, add_voter_directly_and_remove_learner)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"join 4\n"
		"conf 1 add-voter 4\n"
		"stabilize\n"
		"expect 4 voters=1,2,3,4 commit=3\n"
		"join 5\n"
		"conf 1 add-learner 5\n"
		"stabilize\n"
		"conf 1 remove 5\n"
		"stabilize\n"
		"expect 1 voters=1,2,3,4 learners=-\n"
		"crash 2\n"
		"crash 3\n"
		"propose 1 a\n"
		"run 5\n"
		"# 2 of 4 voters: no quorum\n"
		"expect 1 commit=5\n"
		"restart 2\n"
		"run 5\n"
		"expect 1 commit=6\n");
}

/* Joint consensus (§4.3). */

Test(raft_membership, joint_replaces_two_of_three_voters)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"join 4\n"
		"join 5\n"
		"conf 1 add-learner 4\n"
		"stabilize\n"
		"conf 1 add-learner 5\n"
		"stabilize\n"
		"conf-joint 1 voters=1,4,5\n"
		"expect 1 voters=1,4,5 outgoing=1,2,3 learners=-\n"
		"conf-joint 1 voters=1,2 -> EBUSY\n"
		"conf 1 remove 2 -> EBUSY\n"
		"stabilize\n"
		"# C_old,new committed, so the leader appended C_new, which committed\n"
		"expect 1 voters=1,4,5 outgoing=- commit=6\n"
		"expect 4 voters=1,4,5 outgoing=- commit=6\n"
		"crash 2\n"
		"crash 3\n"
		"propose 1 a\n"
		"stabilize\n"
		"expect-sm 4 a\n"
		"expect 1 commit=7\n");
}

Test(raft_membership, joint_needs_both_majorities)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"join 4\n"
		"join 5\n"
		"conf 1 add-learner 4\n"
		"stabilize\n"
		"conf 1 add-learner 5\n"
		"stabilize\n"
		"isolate 2\n"
		"isolate 3\n"
		"conf-joint 1 voters=1,4,5\n"
		"stabilize\n"
		"# 1, 4 and 5 hold it: a majority of C_new but not of C_old\n"
		"expect 4 last=5\n"
		"expect 1 commit=4 outgoing=1,2,3\n"
		"heal\n"
		"run 3\n"
		"expect 1 commit=6 voters=1,4,5 outgoing=-\n");
}

Test(raft_membership, joint_leader_outside_new_config_steps_down)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"join 4\n"
		"conf 1 add-learner 4\n"
		"stabilize\n"
		"conf-joint 1 voters=2,3,4\n"
		"conf-joint 1 voters=2,3 -> EBUSY\n"
		"stabilize\n"
		"expect 1 role=follower voters=2,3,4 outgoing=-\n"
		"expect 2 commit>4  # C_new is index 5\n"
		"crash 1\n"
		"eventually-leader 60\n"
		"propose L b\n"
		"stabilize\n"
		"expect-sm 4 b\n");
}

Test(raft_membership, joint_finished_by_next_leader)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"join 4\n"
		"join 5\n"
		"conf 1 add-learner 4\n"
		"stabilize\n"
		"conf 1 add-learner 5\n"
		"stabilize\n"
		"conf-joint 1 voters=3,4,5\n"
		"process 1\n"
		"deliver\n"
		"process 2\n"
		"process 3\n"
		"process 4\n"
		"process 5\n"
		"deliver 1\n"
		"# C_old,new commits at the leader, which appends C_new and dies\n"
		"expect 1 commit=5 last=6\n"
		"crash 1\n"
		"drop\n"
		"# the next leader needs 2 of {1,2,3} and 2 of {3,4,5}, then leaves\n"
		"# the joint configuration itself\n"
		"eventually-leader 100\n"
		"run 5\n"
		"expect L voters=3,4,5 outgoing=-\n"
		"expect 3 voters=3,4,5 outgoing=-\n");
}

Test(raft_membership, joint_bad_targets)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"conf-joint 2 voters=1,2 -> ENOTLEADER\n"
		"conf-joint 1 learners=2 -> EBADINPUT\n"
		"conf-joint 1 voters=1,1 -> EBADINPUT\n"
		"conf-joint 1 voters=1,2 learners=2 -> EBADINPUT\n"
		"conf-joint 1 voters=1,2 learners=3\n"
		"stabilize\n"
		"expect 3 voters=1,2 learners=3 outgoing=-\n");
}
