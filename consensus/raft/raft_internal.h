/*
 * raft_internal.h — the Raft core's private state, shared by consensus/raft_*.c.
 * Everything here is owned by one struct keel_raft and touched by one thread
 * (the one that calls the public API). No locks, no I/O, no clock.
 */
#ifndef KEEL_RAFT_INTERNAL_H
#define KEEL_RAFT_INTERNAL_H

#include "keel/raft.h"

enum progress_state {
	PR_PROBE = 0,     /* one append at a time until the match is found */
	PR_REPLICATE = 1, /* pipelined appends within the in-flight window */
	PR_SNAPSHOT = 2,  /* InstallSnapshot chunks in progress (§5.3) */
};

/* The leader's view of one member (§3.5 nextIndex/matchIndex, plus the flow
 * control etcd calls Progress). Entry 0 of the array is this server. */
struct progress {
	uint64_t id;
	uint64_t match;
	uint64_t next;
	int state;
	bool probe_sent;    /* PR_PROBE: an append is out, wait */
	bool recent_active; /* heard from it since the last check-quorum */
	/* In-flight appends (PR_REPLICATE): ring of (last index, bytes). */
	uint64_t *infl_idx;
	uint64_t *infl_bytes;
	uint32_t infl_start, infl_count, infl_cap;
	uint64_t infl_total;
	/* PR_SNAPSHOT: which snapshot, and the next byte it wants. */
	uint64_t snap_index;
	uint64_t snap_offset;
	/* Read and lease rounds (§6.4): highest round it acknowledged, and
	 * the leader tick that round was sent at (+1; 0 = none this term). */
	uint64_t ack_seq;
	uint64_t ack_tick1;
};

/* A read waiting for its heartbeat round (§6.4). */
struct pending_read {
	uint64_t ctx;
	uint64_t index;
	uint64_t seq; /* 0 = waiting for the first commit of this term */
	uint64_t from; /* 0 = local; else a follower that forwarded it */
};

/* Private sidecar of an outbox message: entries and snapshot chunks are
 * resolved against the log at keel_raft_ready() time, because the log
 * array may move (propose reallocates) between queueing and ready. */
struct out_aux {
	uint64_t ent_lo;
	size_t ent_n;
	bool chunk;
};

struct keel_raft {
	struct keel_raft_config cfg;
	uint64_t id;
	uint64_t rng;

	/* Hard state (§3.8): persisted through ready batches. */
	uint64_t term;
	uint64_t vote;
	uint64_t commit;
	struct keel_raft_hard_state prev_hs; /* last handed to the app */

	/* Soft state. */
	enum keel_raft_role role;
	uint64_t leader;
	enum keel_raft_role prev_role;
	uint64_t prev_leader;
	uint64_t ticks; /* total ticks, the leader's lease clock */
	uint32_t election_elapsed;
	uint32_t heartbeat_elapsed;
	uint32_t randomized_timeout;
	uint64_t transferee;
	bool committed_in_term; /* leader: an entry of its term is committed */
	bool lease_disabled;    /* leader sent TIMEOUT_NOW in this term */
	bool repl_dirty;        /* leader: appends may be sendable */
	bool commit_bcast;      /* leader: tell followers the new commit */
	bool read_round;        /* leader: reads wait for round read_seq + 1 */

	/* Votes of the current (pre-)election: ids that granted / rejected. */
	uint64_t granted[KEEL_RAFT_MAX_NODES * 2];
	uint32_t n_granted;
	uint64_t rejected[KEEL_RAFT_MAX_NODES * 2];
	uint32_t n_rejected;

	/* The log (raft_log.c): entries base+1 .. base+n, each owning its
	 * data. (base, base_term) is the last compacted entry. */
	struct keel_raft_entry *ents;
	size_t n_ents, cap_ents;
	uint64_t base, base_term;
	uint64_t stabled; /* last index the app made durable */
	uint64_t applied; /* last index handed out to apply and acknowledged */

	/* Configuration (raft_membership.c): the latest appended (§4.1) and
	 * the one before it (to undo on truncation and for the removed-leader
	 * trap). conf_index is the entry that set conf (or the snapshot /
	 * base index when it came from there). */
	struct keel_raft_conf conf;
	struct keel_raft_conf prev_conf;
	uint64_t conf_index;

	/* Leader state (raft_replication.c). */
	struct progress prs[KEEL_RAFT_MAX_NODES * 6 + 1];
	uint32_t n_prs;

	/* Reads (raft_read.c). */
	uint64_t read_seq;
	struct pending_read *preads;
	size_t n_preads, cap_preads;
	struct keel_raft_read_state *reads;
	size_t n_reads, cap_reads;

	/* Snapshots (raft_snapshot.c). snap is the latest one this server
	 * holds; pending_install says the app has not installed it yet. */
	struct keel_raft_snapshot snap;
	uint8_t *snap_buf;
	bool have_snap;
	bool pending_install;
	/* Chunks being received. */
	uint64_t rcv_index, rcv_term, rcv_total;
	struct keel_raft_conf rcv_conf;
	uint8_t *rcv_buf;
	size_t rcv_len, rcv_cap;

	/* Outbox: messages queued since the last ready. */
	struct keel_raft_msg *out;
	struct out_aux *aux;
	size_t n_out, cap_out;
};

/* raft_core.c */
struct keel_raft_msg *raft_send(struct keel_raft *r, uint32_t type, uint64_t to);
void raft_drop_acks_above(struct keel_raft *r, uint64_t last);
void raft_become_follower(struct keel_raft *r, uint64_t term, uint64_t leader);
void raft_become_pre_candidate(struct keel_raft *r);
void raft_become_candidate(struct keel_raft *r);
void raft_become_leader(struct keel_raft *r);
void raft_reset_timeout(struct keel_raft *r);
uint32_t raft_quorum(uint32_t n);

/* raft_log.c */
uint64_t raft_last_index(const struct keel_raft *r);
uint64_t raft_last_term(const struct keel_raft *r);
bool raft_term_at(const struct keel_raft *r, uint64_t index, uint64_t *term);
const struct keel_raft_entry *raft_entry(const struct keel_raft *r, uint64_t index);
int raft_log_append(struct keel_raft *r, uint64_t term, uint32_t type,
		    const void *data, size_t len);
void raft_log_truncate(struct keel_raft *r, uint64_t from);
void raft_log_compact(struct keel_raft *r, uint64_t upto);
void raft_log_reset(struct keel_raft *r, uint64_t index, uint64_t term);
void raft_log_free(struct keel_raft *r);

/* raft_election.c */
void raft_campaign(struct keel_raft *r, bool pre, bool force);
void raft_handle_vote(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_handle_vote_resp(struct keel_raft *r, const struct keel_raft_msg *m);

/* raft_replication.c */
struct progress *raft_progress(struct keel_raft *r, uint64_t id);
void raft_progress_reset(struct keel_raft *r, struct progress *p, uint64_t next);
void raft_progress_probe(struct progress *p, uint64_t next);
void raft_progress_free(struct progress *p);
void raft_flush_appends(struct keel_raft *r);
void raft_bcast_heartbeat(struct keel_raft *r);
bool raft_maybe_commit(struct keel_raft *r);
void raft_handle_append(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_handle_append_resp(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_handle_heartbeat(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_handle_heartbeat_resp(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_commit_to(struct keel_raft *r, uint64_t index);
typedef uint64_t (*raft_voter_value_fn)(struct keel_raft *r, uint64_t id);
uint64_t raft_quorum_value(struct keel_raft *r, raft_voter_value_fn fn);
bool raft_quorum_active(struct keel_raft *r);

/* raft_read.c */
void raft_reads_on_commit(struct keel_raft *r);
void raft_reads_check(struct keel_raft *r);
void raft_reads_drop(struct keel_raft *r);
void raft_reads_flush(struct keel_raft *r);
bool raft_in_lease(const struct keel_raft *r);
void raft_handle_read_index(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_handle_read_index_resp(struct keel_raft *r, const struct keel_raft_msg *m);
int raft_push_read(struct keel_raft *r, uint64_t ctx, uint64_t index);

/* raft_snapshot.c */
bool raft_send_snapshot(struct keel_raft *r, struct progress *p);
void raft_handle_snapshot(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_handle_snapshot_resp(struct keel_raft *r, const struct keel_raft_msg *m);
int raft_snapshot_store(struct keel_raft *r, const struct keel_raft_snapshot_meta *meta,
			const void *data, size_t len);
void raft_snapshot_free(struct keel_raft *r);

/* raft_membership.c */
void raft_conf_apply(struct keel_raft *r, const struct keel_raft_conf *c, uint64_t index);
void raft_conf_recompute(struct keel_raft *r);
bool raft_promotable(const struct keel_raft *r);
bool raft_conf_at(const struct keel_raft *r, uint64_t index, struct keel_raft_conf *out);
void raft_sync_progress(struct keel_raft *r);
void raft_after_commit(struct keel_raft *r);
int raft_append_conf(struct keel_raft *r, const struct keel_raft_conf *c,
		     uint64_t *index, uint64_t *term);
void raft_handle_timeout_now(struct keel_raft *r, const struct keel_raft_msg *m);
void raft_maybe_send_timeout_now(struct keel_raft *r, struct progress *p);

#endif
