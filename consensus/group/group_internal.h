/* Private to the group host (group_host.c, group_net.c): the struct and the
 * calls between the two files. Everything here runs on the group's shard
 * thread. */
#ifndef KEEL_GROUP_INTERNAL_H
#define KEEL_GROUP_INTERNAL_H

#include "keel/group.h"
#include "keel/runtime.h"
#include "keel/transport.h"

/* A proposal: queued (not yet given to the core) or pending (appended at
 * index/term, waiting to commit). data is only used while queued. */
struct gprop {
	struct gprop *next;
	keel_group_done_fn *cb;
	void *arg;
	uint64_t index, term;
	uint64_t deadline; /* in ticks */
	size_t len;
	uint8_t data[];
};

struct gread {
	struct gread *next;
	keel_group_read_fn *cb;
	void *arg;
	uint64_t ctx, index, deadline;
	bool have_index;
};

/* A decoded message waiting for the core (owns its memory). */
struct gin {
	struct gin *next;
	struct keel_raft_msg m;
};

/* One other voter: the connection we dialled to its shard, and the redial. */
struct gpeer {
	struct keel_group *g;
	uint32_t node;
	struct keel_conn *conn; /* dialled by us; NULL while waiting to redial */
	bool up;
	bool ever_up;
	uint32_t attempt;
	struct keel_timer redial;
	uint64_t dials;
};

struct keel_group {
	struct keel_group_config cfg;
	uint64_t id;
	uint32_t tick_ms, req_timeout;
	uint32_t max_entry;
	struct keel_raft *r;
	struct keel_wal *w;
	struct keel_wal_reactor *wr;
	struct keel_transport *t;
	struct gpeer peers[KEEL_RAFT_MAX_NODES];
	uint32_t npeers;
	struct keel_timer tick, kick;
	uint64_t ticks;

	/* the batch in flight */
	struct keel_raft_ready rd;
	bool busy, pumping, in_start, wal_done;
	int wal_status;
	bool failed, closing;
	struct keel_wal_hard_state saved_hs;
	struct keel_wal_entry *wents;
	size_t wents_cap;

	/* inputs waiting for the core */
	struct gin *in_head, *in_tail;
	size_t in_n;
	uint32_t queued_ticks;
	struct gprop *q_head, *q_tail; /* proposals not yet given to the core */
	struct gread *rq_head;         /* reads not yet given to the core */
	/* waiting for an answer */
	struct gprop *p_head, *p_tail;
	struct gread *reads;
	uint64_t next_ctx;
	uint64_t applied;

	/* what on_role last reported */
	enum keel_raft_role role;
	uint64_t term, leader;
	bool role_changed, fail_reads;

	/* snapshots */
	char snap_dir[600];
	uint64_t snap_index; /* latest snapshot saved (0: none) */
	uint32_t snap_every, snap_keep;

	uint32_t log_budget; /* rate limit for logs about bad peer input */
	struct keel_group_stats st;
};

enum group_send_phase {
	GROUP_SEND_ALL,
	GROUP_SEND_EARLY, /* the leader's appends and heartbeats only */
	GROUP_SEND_LATE,  /* everything else */
};

/* group_host.c */
void group_pump(struct keel_group *g);
void group_queue_msg(struct keel_group *g, struct gin *in);

/* group_snapshot.c: the snapshot file (synchronous I/O). load returns 1
 * with *s pointing into *buf (the caller frees it), 0 when there is none,
 * or a negative code. */
int group_snap_dir(const char *wal_dir, char *out, size_t cap);
int group_snap_save(const char *dir, const struct keel_raft_snapshot *s, char *errmsg);
int group_snap_load(const char *dir, struct keel_raft_snapshot *s, uint8_t **buf, char *errmsg);

/* group_net.c */
int group_net_open(struct keel_group *g, char *errmsg);
void group_net_close(struct keel_group *g);
void group_send_msgs(struct keel_group *g, const struct keel_raft_ready *rd,
		     enum group_send_phase phase);

#endif
