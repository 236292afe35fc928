/*
 * Leadership transfer (§3.10), as scenario scripts (raft_script.h).
 */
#include <criterion/criterion.h>

#include "raft_script.h"

Test(raft_transfer, transfer_to_up_to_date_follower)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"transfer 1 2\n"
		"process 1\n"
		"expect-queued timeout-now 1\n"
		"stabilize\n"
		"expect-leader 2\n"
		"expect 2 term=3\n");
}

Test(raft_transfer, transfer_catches_target_up_first)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"crash 3\n"
		"propose-n 1 5\n"
		"stabilize\n"
		"restart 3\n"
		"transfer 1 3\n"
		"propose 1 x -> EBUSY\n"
		"run 2\n"
		"expect-leader 3\n"
		"expect-sm 3 v1,v2,v3,v4,v5\n"
		"propose 3 y\n"
		"stabilize\n"
		"expect-sm 1 v1,v2,v3,v4,v5,y\n");
}

Test(raft_transfer, transfer_overrides_follower_lease)
{
	raft_script(
		"nodes 3 checkquorum prevote\n"
		"tick-all 10\n"
		"campaign 1\n"
		"stabilize\n"
		"run 2\n"
		"transfer 1 3\n"
		"stabilize\n"
		"expect-leader 3\n");
}

Test(raft_transfer, transfer_times_out)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 2\n"
		"propose 1 a\n"
		"stabilize\n"
		"transfer 1 2\n"
		"propose 1 x -> EBUSY\n"
		"run 11\n"
		"expect 1 role=leader\n"
		"propose 1 x\n"
		"transfer 1 9 -> ENOTFOUND\n"
		"transfer 2 1 -> ENOTLEADER\n");
}
