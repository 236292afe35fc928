/*
 * Linearizable reads: ReadIndex (§6.4) and the leader lease (§6.4.1), as
 * scenario scripts (raft_script.h).
 */
#include <criterion/criterion.h>

#include "raft_script.h"

Test(raft_read, read_index_waits_for_heartbeat_quorum)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"propose 1 a\n"
		"stabilize\n"
		"read 1 7\n"
		"process 1\n"
		"# one heartbeat round confirms leadership before the answer\n"
		"expect-queued heartbeat 2\n"
		"expect-no-read 1 7\n"
		"deliver\n"
		"process 2\n"
		"deliver 1\n"
		"process 1\n"
		"# one acknowledgement plus the leader is a quorum of 3\n"
		"expect-read 1 7 3\n");
}

Test(raft_read, reads_batch_into_one_round)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"read 1 1\n"
		"read 1 2\n"
		"read 1 3\n"
		"process 1\n"
		"expect-queued heartbeat 2\n"
		"stabilize\n"
		"expect-read 1 1 2\n"
		"expect-read 1 2 2\n"
		"expect-read 1 3 2\n");
}

Test(raft_read, new_leader_reads_after_its_first_commit)
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
		"# the no-op of term 2 is not committed yet: the read is parked\n"
		"read 1 5\n"
		"process 1\n"
		"expect-no-read 1 5\n"
		"stabilize\n"
		"expect-read 1 5 2\n");
}

Test(raft_read, follower_read_goes_through_leader)
{
	raft_script(
		"nodes 3\n"
		"read 2 1 -> ENOTLEADER\n"
		"campaign 1\n"
		"stabilize\n"
		"propose 1 a\n"
		"stabilize\n"
		"read 2 9\n"
		"stabilize\n"
		"expect-read 2 9 3\n"
		"expect-no-read 1 9\n");
}

Test(raft_read, deposed_leader_never_answers)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 1\n"
		"read 1 4\n"
		"run 5\n"
		"expect-no-read 1 4\n"
		"campaign 2\n"
		"stabilize\n"
		"propose 2 b\n"
		"stabilize\n"
		"expect-no-read 1 4\n"
		"heal\n"
		"run 3\n"
		"expect 1 role=follower leader=2\n"
		"expect-no-read 1 4\n");
}

Test(raft_read, single_voter_reads_at_once)
{
	raft_script(
		"nodes 1\n"
		"campaign 1\n"
		"stabilize\n"
		"read 1 3\n"
		"process 1\n"
		"expect-read 1 3 2\n");
}

Test(raft_read, lease_read_answers_without_round_trip)
{
	raft_script(
		"nodes 3 checkquorum lease\n"
		"tick-all 10\n"
		"campaign 1\n"
		"stabilize\n"
		"run 2\n"
		"read 1 5\n"
		"process 1\n"
		"expect-queued heartbeat 0\n"
		"expect-read 1 5 2\n"
		"isolate 1\n"
		"run 8\n"
		"read 1 6\n"
		"process 1\n"
		"expect-read 1 6 2\n"
		"# the lease of the last acknowledged heartbeat (tick 12) ends at 21\n"
		"run 1\n"
		"expect 1 role=leader\n"
		"read 1 7\n"
		"stabilize\n"
		"expect-no-read 1 7\n");
}

Test(raft_read, lease_given_up_by_transfer)
{
	raft_script(
		"nodes 3 checkquorum lease\n"
		"tick-all 10\n"
		"campaign 1\n"
		"stabilize\n"
		"run 2\n"
		"cut 1 3\n"
		"transfer 1 2\n"
		"process 1\n"
		"drop\n"
		"# TIMEOUT_NOW went out (and was lost): 2's voters will ignore the\n"
		"# lease, so the leader must stop trusting it\n"
		"read 1 8\n"
		"process 1\n"
		"expect-no-read 1 8\n"
		"expect-queued heartbeat 1  # a ReadIndex round instead (3 is cut off)\n");
}
