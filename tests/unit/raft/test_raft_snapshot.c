/*
 * Snapshots, log compaction (§5.1) and InstallSnapshot in chunks (§5.3),
 * as scenario scripts (raft_script.h).
 */
#include <criterion/criterion.h>

#include "raft_script.h"

Test(raft_snapshot, compaction_and_restart_from_snapshot)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"propose-n 1 5\n"
		"stabilize\n"
		"snapshot 2 0\n"
		"expect 2 snap=7 first=8 last=7\n"
		"snapshot 3 3\n"
		"expect 3 snap=7 first=5\n"
		"crash 2\n"
		"restart 2\n"
		"expect 2 snap=7 first=8 applied=7 commit=7\n"
		"expect-sm 2 v1,v2,v3,v4,v5\n"
		"propose 1 a\n"
		"stabilize\n"
		"expect-sm 2 v1,v2,v3,v4,v5,a\n");
}

Test(raft_snapshot, lagging_follower_installs_snapshot_in_chunks)
{
	raft_script(
		"nodes 3 chunk=8\n"
		"campaign 1\n"
		"stabilize\n"
		"crash 3\n"
		"propose-n 1 20\n"
		"stabilize\n"
		"snapshot 1 0\n"
		"expect 1 first=23\n"
		"restart 3\n"
		"run 3\n"
		"# the state is 70 bytes: nine chunks of 8\n"
		"expect-delivered snapshot 9\n"
		"expect 3 snap=22 commit=22 applied=22 first=23\n"
		"expect-sm 3 v1,v2,v3,v4,v5,v6,v7,v8,v9,v10,v11,v12,v13,v14,v15,v16,v17,v18,v19,v20\n"
		"propose 1 z\n"
		"stabilize\n"
		"expect 3 commit=23\n"
		"crash 3\n"
		"restart 3\n"
		"expect-sm 3 v1,v2,v3,v4,v5,v6,v7,v8,v9,v10,v11,v12,v13,v14,v15,v16,v17,v18,v19,v20\n"
		"stabilize\n"
		"expect-sm 3 v1,v2,v3,v4,v5,v6,v7,v8,v9,v10,v11,v12,v13,v14,v15,v16,v17,v18,v19,v20,z\n");
}

Test(raft_snapshot, keep_entries_lets_follower_catch_up_from_log)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"isolate 3\n"
		"propose-n 1 10\n"
		"stabilize\n"
		"snapshot 1 20\n"
		"heal\n"
		"run 3\n"
		"expect-delivered snapshot 0\n"
		"expect 3 commit=12 snap=0\n");
}

Test(raft_snapshot, lost_chunks_are_resent)
{
	raft_script(
		"nodes 3 chunk=4\n"
		"campaign 1\n"
		"stabilize\n"
		"crash 3\n"
		"propose-n 1 20\n"
		"stabilize\n"
		"snapshot 1 0\n"
		"restart 3\n"
		"loss 3\n"
		"run 80\n"
		"loss 0\n"
		"run 5\n"
		"expect 3 snap=22 applied>21\n"
		"expect-sm 3 v1,v2,v3,v4,v5,v6,v7,v8,v9,v10,v11,v12,v13,v14,v15,v16,v17,v18,v19,v20\n");
}

Test(raft_snapshot, new_leader_sends_its_own_snapshot)
{
	raft_script(
		"nodes 3 chunk=16\n"
		"campaign 1\n"
		"stabilize\n"
		"crash 3\n"
		"propose-n 1 6\n"
		"stabilize\n"
		"snapshot 1 0\n"
		"snapshot 2 0\n"
		"restart 3\n"
		"tick 1\n"
		"process 1\n"
		"deliver\n"
		"# a first chunk from leader 1 reaches 3, then 2 takes over\n"
		"transfer 1 2\n"
		"stabilize\n"
		"run 5\n"
		"expect-leader\n"
		"expect 3 snap=8 applied=9  # 9: the new leader's no-op\n"
		"expect-sm 3 v1,v2,v3,v4,v5,v6\n");
}

Test(raft_snapshot, bad_snapshot_requests_rejected)
{
	raft_script(
		"nodes 3\n"
		"campaign 1\n"
		"stabilize\n"
		"propose-n 1 3\n"
		"stabilize\n"
		"snapshot 1 0\n"
		"expect 1 snap=5\n");
}
