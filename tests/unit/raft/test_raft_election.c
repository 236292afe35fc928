/*
 * Leader election (§3.4), the voting rule (§3.6.1), pre-vote (§9.6) and
 * check-quorum (§6.2), as scenario scripts (raft_script.h).
 */
#include <criterion/criterion.h>

#include "raft_script.h"

Test(raft_election, campaign_wins_and_replicates_noop)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"expect 1 role=candidate term=2 vote=1\n"
		"process 1\n"
		"expect-queued vote 2\n"
		"stabilize\n"
		"# the new leader's no-op (index 2, term 2) commits everywhere\n"
		"expect 1 role=leader term=2 leader=1 commit=2 last=2\n"
		"expect 2 role=follower term=2 leader=1 vote=1 commit=2 applied=2\n"
		"expect 3 role=follower term=2 leader=1 commit=2 applied=2\n"
		"expect-leader 1\n");
}

Test(raft_election, randomized_timeouts_elect_one_leader)
{
	raft_script(
		"nodes 5\n"
		"run 40\n"
		"expect-leader\n"
		"run 40\n"
		"expect-leader\n");
}

Test(raft_election, one_vote_per_term)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"campaign 2\n"
		"process 1\n"
		"process 2\n"
		"# 3 sees 1's request first and votes for it; 2 gets nothing\n"
		"deliver 3\n"
		"expect 3 term=2 vote=1\n"
		"stabilize\n"
		"expect 1 role=leader term=2\n"
		"expect 2 role=follower term=2 leader=1 vote=2\n");
}

Test(raft_election, stale_log_cannot_win)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 3\n"
		"propose 1 a\n"
		"stabilize\n"
		"heal\n"
		"expect 3 last=2\n"
		"# 3's log lacks 'a': 1 and 2 refuse (§3.6.1) and 3 gives up; without\n"
		"# pre-vote the higher term still deposes 1\n"
		"campaign 3\n"
		"stabilize\n"
		"expect 3 role=follower term=3 vote=3\n"
		"expect 1 role=follower term=3 vote=0\n"
		"expect 2 role=follower term=3 vote=0\n"
		"campaign 2\n"
		"stabilize\n"
		"expect-leader 2\n"
		"expect 2 term=4\n"
		"expect-sm 3 a\n");
}

Test(raft_election, prevote_keeps_partitioned_node_from_disrupting)
{
	raft_script(
		"nodes 3 prevote\n"
		"campaign 1\n"
		"expect 1 role=pre-candidate term=1\n"
		"stabilize\n"
		"expect-leader 1\n"
		"expect 1 term=2\n"
		"isolate 3\n"
		"run 60\n"
		"# §9.6: 3 keeps polling but never raises its term\n"
		"expect 3 term=2 role=pre-candidate\n"
		"heal\n"
		"run 3\n"
		"expect-leader 1\n"
		"expect 1 term=2\n"
		"expect 3 role=follower leader=1\n");
}

Test(raft_election, without_prevote_partitioned_node_disrupts)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 3\n"
		"run 60\n"
		"expect 3 role=candidate term>3\n"
		"heal\n"
		"run 40\n"
		"expect-leader\n"
		"expect 1 term>3\n");
}

Test(raft_election, prevote_rejected_by_up_to_date_log)
{
	raft_script(
		"nodes 3 prevote\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 3\n"
		"propose 1 a\n"
		"stabilize\n"
		"heal\n"
		"campaign 3\n"
		"stabilize\n"
		"# pre-vote fails on the log check and nobody's term moves\n"
		"expect 3 role=follower term=2\n"
		"expect 1 role=leader term=2\n");
}

Test(raft_election, check_quorum_leader_steps_down)
{
	raft_script(
		"nodes 3 checkquorum\n"
		"tick-all 10  # servers refuse votes for one timeout after start\n"
		"campaign 1\n"
		"stabilize\n"
		"expect-leader 1\n"
		"isolate 1\n"
		"run 25\n"
		"# §6.2: no quorum heard in an election timeout -> step down\n"
		"expect 1 role=follower leader=0 term=2\n"
		"heal\n"
		"run 40\n"
		"expect-leader\n");
}

Test(raft_election, without_check_quorum_isolated_leader_stays)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 1\n"
		"run 25\n"
		"expect 1 role=leader term=2\n");
}

Test(raft_election, check_quorum_followers_ignore_votes_in_lease)
{
	raft_script(
		"nodes 3 checkquorum\n"
		"tick-all 10\n"
		"campaign 1\n"
		"stabilize\n"
		"# 2 starts an election while 1 is healthy: 3 heard from 1 within\n"
		"# the election timeout and ignores it (§4.2.3); so does 1\n"
		"campaign 2\n"
		"stabilize\n"
		"expect 1 role=leader term=2\n"
		"expect 3 role=follower term=2 leader=1\n"
		"expect 2 role=candidate term=3\n");
}

Test(raft_election, single_node_elects_itself)
{
	raft_script(
		"nodes 1\n"
		"run 25\n"
		"expect 1 role=leader term=2 commit=2\n"
		"propose 1 a\n"
		"stabilize\n"
		"expect-sm 1 a\n"
		"expect 1 commit=3 applied=3\n");
}

Test(raft_election, restart_keeps_term_and_vote)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"propose 1 a\n"
		"stabilize\n"
		"crash 2\n"
		"restart 2\n"
		"expect 2 term=2 vote=1 commit=3 last=3 applied=0\n"
		"stabilize\n"
		"# committed entries are applied again after the restart\n"
		"expect 2 applied=3\n"
		"expect-sm 2 a\n");
}
