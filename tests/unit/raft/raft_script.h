/*
 * raft_script.h — scenario scripts for the Raft core, in the style of
 * etcd's raft interaction tests: a small in-test network delivers messages
 * between real cores step by step, and a readable script of commands says
 * what happens and what must be true. Every message crosses the network
 * through keel_raft_msg_encode/decode, and after every step the harness
 * checks election safety, agreement of committed entries and of the state
 * machines.
 *
 * Commands (one per line, '#' starts a comment):
 *   nodes N [prevote] [checkquorum] [lease] [election=T] [heartbeat=T]
 *           [inflight=N] [inflight-bytes=B] [maxmsg=B] [chunk=B]
 *                        founding members 1..N
 *   join ID              a server that starts with an empty configuration
 *   campaign ID          start an election now
 *   tick ID [N]          tick one server N times (no delivery)
 *   run N                N rounds of: tick every live server, stabilize
 *   stabilize            process readies and deliver until quiet
 *   process ID           handle one server's ready batches
 *   deliver [ID]         deliver the queued messages (to ID) once
 *   drop [ID]            discard the queued messages (to ID)
 *   expect-queued TYPE N N queued messages of TYPE (e.g. append, vote)
 *   propose ID DATA [-> ERR]
 *   propose-n ID N       N proposals v1..vN (must succeed)
 *   read ID CTX [-> ERR]
 *   conf ID add-voter|add-learner|remove NODE [-> ERR]
 *   conf-joint ID voters=1,2,.. [learners=..] [-> ERR]   joint consensus
 *   transfer ID TO [-> ERR]
 *   snapshot ID KEEP     snapshot the state machine at its applied index
 *   crash ID / restart ID (restart from what was persisted)
 *   isolate ID / cut A B / heal
 *   expect ID key=value ... keys: role term leader vote commit applied last
 *                        first snap voters learners outgoing (lists: 1,2,3 or -)
 *                        key>N and key<N compare numbers
 *   expect-leader [ID]   one leader in the highest term, all others follow it
 *   eventually-leader N  run up to N rounds until a leader is followed by
 *                        every live voter of its configuration
 *   expect-sm ID STRING  the state machine (applied data joined by ',')
 *   expect-read ID CTX INDEX|*   a read state was delivered
 *   expect-no-read ID CTX
 *   loss K               drop every K-th message sent from now on (0: none)
 *   expect-delivered TYPE N|>N|<N   messages of TYPE delivered so far
 *   show                 print the queue and the servers (debugging)
 *   any-propose DATA / any-conf NODE / any-joint / any-transfer TO / any-snapshot ID /
 *   any-crash ID / any-restart ID / any-restart-all / any-read ID CTX
 *                        for generated scripts: act if possible, else
 *                        nothing (leader = the current one, the conf
 *                        operation is random). any-read with CTX >= 100000
 *                        also checks that the read's index covers every
 *                        commit any server knew when it was issued.
 * ID may be L: the live leader of the highest term.
 * ERR is OK or a KEEL_E* name without the prefix (ENOTLEADER, EBUSY, ...).
 */
#ifndef KEEL_TEST_RAFT_SCRIPT_H
#define KEEL_TEST_RAFT_SCRIPT_H

/* Runs a script; fails the current Criterion test at the first line that
 * does not hold, naming it. */
void raft_script(const char *script);
/* The same for a generated script: a failure prints the seed and script. */
void raft_script_named(const char *script, int seed);

#endif
