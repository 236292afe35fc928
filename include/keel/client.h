/*
 * keel/client.h — the C client library of a keel cluster's services
 * (client/client.c), over the client protocol (keel/proto.h) on the nodes'
 * client ports.
 *
 * A client is given some or all of the cluster's client endpoints
 * ("host:port,host:port,..."). It connects to them as it needs them, learns
 * from each node's HELLO_OK which node it is and how many groups the
 * cluster runs, and hashes keys to groups as the nodes do
 * (keel_service_group_of). Writes go to the group's leader: a node that
 * does not lead answers KEEL_ENOTLEADER with a hint, which the client
 * caches and follows; with no hint it tries the next endpoint, with
 * backoff, until the call's deadline. Reads are linearizable (the node
 * runs a read barrier through the leader) unless `serializable` is asked,
 * and may be served by any node.
 *
 * Exactly once: every write carries (client id, sequence). A retry after a
 * timeout or a lost connection reuses the sequence, so the cluster applies
 * it once and answers the retry from its table (KEEL_CLIENT_DUPLICATE in
 * the result's flags). When the deadline passes without an answer the call
 * returns KEEL_ETIMEOUT: the write may or may not have been applied.
 *
 * Errors: 0 or a negative code (keel/base.h) with a message in
 * keel_client_errmsg(): KEEL_ENOTFOUND (get/del of an absent key),
 * KEEL_ETIMEOUT (deadline passed; a write's outcome unknown),
 * KEEL_EUNAVAIL (no endpoint answered), KEEL_ETOOBIG (key or value over
 * the limits), KEEL_EAUTH (the node refused the token), KEEL_EPROTO (a
 * node sent something that does not decode: that connection is closed).
 *
 * Threads and ownership: a struct keel_client is used by one thread at a
 * time (with its watches); calls block until answered or the deadline. Results that carry
 * bytes are malloc'd for the caller (keel_client_free_value).
 */
#ifndef KEEL_CLIENT_H
#define KEEL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_client;

struct keel_client_config {
	const char *endpoints;  /* "host:port,..." (required) */
	const char *token;      /* the client port's token, if it asks for one */
	uint32_t timeout_ms;    /* each call's deadline; 0: 5000 */
	uint64_t client_id;     /* 0: random (a new client to the cluster) */
	uint32_t max_inflight;  /* pipelined calls in flight at once; 0: 256 */
};

/* Parses the endpoints and connects to the first that answers. 0, or
 * KEEL_ECONFIG (a bad endpoint list), KEEL_EUNAVAIL, KEEL_EAUTH, with
 * errmsg. */
int keel_client_open(const struct keel_client_config *cfg, struct keel_client **out, char *errmsg);
void keel_client_close(struct keel_client *c);
/* The last call's error message ("" after success). */
const char *keel_client_errmsg(const struct keel_client *c);

enum { KEEL_CLIENT_DUPLICATE = 1u << 0 };

struct keel_client_result {
	uint32_t group;     /* the key's group */
	uint32_t node;      /* the node that answered (its leader, for writes) */
	uint64_t rev;       /* the group's revision after the write, or at the read */
	uint64_t mod_rev;   /* the key's last modification */
	uint64_t create_rev, version; /* get */
	uint32_t flags;     /* KEEL_CLIENT_DUPLICATE */
};

int keel_client_put(struct keel_client *c, const void *key, size_t key_len, const void *value,
		    size_t value_len, struct keel_client_result *res);
/* KEEL_ENOTFOUND when the key is absent. */
int keel_client_del(struct keel_client *c, const void *key, size_t key_len,
		    struct keel_client_result *res);
/* Compare-and-swap: put value if the current value equals expect (expect
 * NULL: if the key is absent). 0 when swapped, KEEL_ESTALE when the
 * comparison failed (res->mod_rev: the key's current mod revision). */
int keel_client_cas(struct keel_client *c, const void *key, size_t key_len, const void *expect,
		    size_t expect_len, const void *value, size_t value_len,
		    struct keel_client_result *res);
/* The value in *value (malloc'd, NUL-terminated for convenience; free with
 * keel_client_free_value) and its length; KEEL_ENOTFOUND when absent. */
int keel_client_get(struct keel_client *c, const void *key, size_t key_len, bool serializable,
		    void **value, size_t *value_len, struct keel_client_result *res);
void keel_client_free_value(void *value);

/* Keys with the prefix, in key order, in every group (a range is one
 * snapshot per group, not one of the cluster: keel's revisions are per
 * group). fn gets each key and value (valid during the call); its
 * non-zero return stops the walk. limit 0: no limit. Returns the number of
 * keys given to fn, or a negative code. */
int keel_client_range(struct keel_client *c, const void *prefix, size_t prefix_len, size_t limit,
		      bool serializable,
		      int (*fn)(void *arg, const void *key, size_t key_len, const void *value,
				size_t value_len, uint64_t mod_rev),
		      void *arg);

/* One group's state as a node reports it. */
struct keel_client_group_status {
	uint32_t group;
	uint32_t node;       /* who reported it */
	uint32_t leader;     /* 0: none known */
	uint64_t term;
	uint64_t commit, applied;
	int status;          /* 0, or the error that node gave for it */
};
/* Asks every endpoint for the status of every group it hosts: fn gets one
 * row per (node, group); nodes that do not answer are reported with
 * status KEEL_EUNAVAIL and group UINT32_MAX. Returns the rows given. */
int keel_client_status(struct keel_client *c,
		       void (*fn)(void *arg, const struct keel_client_group_status *st),
		       void *arg);

/* ---- membership ------------------------------------------------------------
 * keel_client_member lists, adds or removes a node in every group's
 * configuration, one group after the other, each at its leader (followed
 * through KEEL_ENOTLEADER hints as writes are). fn gets one row per group:
 * its status (0, or the error that group answered, with message), and for
 * a list the group's members as its leader sees them. Add makes the node a
 * voter by the engine's safe path (a learner first, promoted once it has
 * the leader's commit index: the row comes when it votes). A group where
 * there is nothing to do (add of a voter, remove of a non-member) is done,
 * with `already` set, so a run that failed part-way is resumed by running
 * the same call again. A group busy with another change is retried until
 * the call's deadline (timeout_ms per group). KEEL_ENOTSUP: the engine has
 * no reconfiguration (Paxos). Returns the number of groups that failed (0:
 * all done), or KEEL_EUNAVAIL when no group's leader could be reached (fn
 * has the rows either way). */
enum keel_client_member_op {
	KEEL_CLIENT_MEMBER_LIST = 1,
	KEEL_CLIENT_MEMBER_ADD = 2,
	KEEL_CLIENT_MEMBER_REMOVE = 3,
};

struct keel_client_member {
	uint32_t node;
	bool voter;          /* else a learner */
	uint64_t match;      /* how far its log matches the leader's */
	bool active;         /* answered the leader recently */
};

struct keel_client_member_row {
	uint32_t group;
	int status;          /* 0, or the group's error */
	const char *message; /* why, with status (valid during fn); "" otherwise */
	uint32_t leader;     /* the node that answered as the group's leader, 0: none */
	bool already;        /* add/remove: nothing to do */
	uint64_t index;      /* the change's index (list: the commit index) */
	uint64_t term;       /* list */
	bool changing;       /* list: a membership change is in progress */
	uint32_t n_members;  /* list */
	struct keel_client_member members[16];
};

int keel_client_member(struct keel_client *c, enum keel_client_member_op op, uint32_t node,
		       void (*fn)(void *arg, const struct keel_client_member_row *row), void *arg);

/* ---- pipelined calls ---------------------------------------------------------
 * Many requests in flight on each connection: a *_async call encodes the
 * request, queues it and returns at once (0, or KEEL_EFULL when
 * max_inflight calls are in flight: poll some to completion first,
 * KEEL_ETOOBIG, ...); keel_client_poll sends, receives and runs each
 * call's callback when its answer arrives, routed, redirected and retried
 * as the blocking calls are (each within timeout_ms of its submission:
 * then KEEL_ETIMEOUT, a write's outcome unknown). Writes stay exactly
 * once: each write in flight holds a lane (a client id of its own with its
 * own sequence), so a resend is answered from the cluster's table like a
 * blocking call's retry. Calls in flight at once are not ordered among
 * themselves (a resend may overtake a later call); wait for a call's
 * callback before one that must follow it.
 *
 * The callback gets the status (0, or an error as the blocking call
 * returns it: KEEL_ENOTFOUND, KEEL_ESTALE for a failed comparison,
 * KEEL_ETIMEOUT...), the result (NULL on timeout), and for a get the value
 * (valid during the call). It may submit more calls; it must not poll.
 * Blocking calls return KEEL_EBUSY while pipelined calls are pending. */
typedef void keel_client_done_fn(void *arg, int status, const struct keel_client_result *res,
				 const void *value, size_t value_len);
int keel_client_put_async(struct keel_client *c, const void *key, size_t key_len, const void *value,
			  size_t value_len, keel_client_done_fn *cb, void *arg);
int keel_client_del_async(struct keel_client *c, const void *key, size_t key_len,
			  keel_client_done_fn *cb, void *arg);
int keel_client_get_async(struct keel_client *c, const void *key, size_t key_len, bool serializable,
			  keel_client_done_fn *cb, void *arg);
/* Runs the pipeline for at most timeout_ms, returning as soon as some calls
 * completed: their number (0: none in time, or none pending), or a
 * negative code (poll failed). */
int keel_client_poll(struct keel_client *c, uint32_t timeout_ms);
/* Pipelined calls submitted and not completed. */
size_t keel_client_pending(const struct keel_client *c);

/* ---- watch -----------------------------------------------------------------
 * A watch receives every change of a key, or of the keys with a prefix (an
 * empty prefix: every key), from a revision, in order within each group,
 * as etcd's watch does. keel's revisions are per group: a key's changes are
 * one sequence of its group's revisions; a prefix watch covers every group,
 * and its events interleave groups (each group's in order). from_rev is the
 * first revision wanted in each group (0: the changes after the watch
 * starts); a revision older than a node's history is compacted
 * (KEEL_ESTALE, when no endpoint has it).
 *
 * The watch uses a connection of its own to one node at a time (any node:
 * every replica applies every change). When that node dies, or installs a
 * snapshot that skips revisions, the watch moves to another endpoint and
 * resumes each group from the revision after the last event it returned,
 * so no change is returned twice or skipped. It is used by the thread that
 * uses its client, and closed before the client. */

struct keel_client_watch;

struct keel_client_event {
	uint32_t group;
	uint32_t node;        /* the node that pushed it */
	uint64_t rev;         /* the change's revision in its group */
	bool deleted;
	const void *key;      /* key and value: valid until the next call on the watch */
	size_t key_len;
	const void *value;    /* NUL-terminated for convenience; empty when deleted */
	size_t value_len;
};

/* A watch (it connects at the first keel_client_watch_next). 0 with *out,
 * KEEL_ETOOBIG (key), -ENOMEM, with errmsg. */
int keel_client_watch_open(struct keel_client *c, const void *key, size_t key_len, bool prefix,
			   uint64_t from_rev, struct keel_client_watch **out);
/* Waits up to timeout_ms for the next change: 1 with *ev, 0 when none came
 * in time (the watch goes on: call again; it may have moved to another node
 * meanwhile), or a negative code that ends it: KEEL_ESTALE (from_rev older
 * than every reachable node's history), KEEL_EAUTH, KEEL_EBADINPUT, -ENOMEM. */
int keel_client_watch_next(struct keel_client_watch *w, uint32_t timeout_ms,
			   struct keel_client_event *ev);
/* The revision the watch resumes group from (the one after the last event
 * returned; 0 before its first answer when started "from now"): what an
 * application saves to resume after its own restart. */
uint64_t keel_client_watch_revision(const struct keel_client_watch *w, uint32_t group);
void keel_client_watch_close(struct keel_client_watch *w);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_CLIENT_H */
