/*
 * keel/kv.h — the replicated key-value store's state machine (services/kv):
 * one per replicated-log group (keel/rlog.h), on that group's shard.
 *
 * Data: byte-string keys (1..KEEL_KV_MAX_KEY bytes) and values (0..
 * KEEL_KV_MAX_VALUE bytes), ordered by key (memcmp order, shorter first on
 * a common prefix). Every write that changes the store moves the group's
 * revision up by one; each key records the revision that created it, the
 * one that last modified it, and its version (modifications since
 * creation). keel's revision is per group, not cluster-wide as etcd's:
 * keys hash over groups, so a range over several groups is several
 * snapshots, one per group.
 *
 * Commands (writes) are encoded by keel_kv_cmd_encode, proposed to the
 * group's log and applied here in log order. Every command carries
 * (client id, sequence): the store keeps, per client, the highest sequence
 * applied and its result, in snapshots too, so a retry after a leader
 * change or a timeout is answered from the table instead of applied twice.
 * A client's entry is dropped once the client has been idle for
 * client_idle_ms of replicated time (every command carries its proposer's
 * wall clock in ms; the store's time is the highest seen, so every replica
 * expires the same entries at the same index).
 *
 * Reads (get, range) are not replicated: the service serves them from here
 * after a read barrier (linearizable) or at once (serializable).
 *
 * Watch: every change is also an event (revision, key, value or delete)
 * kept in a bounded history (watch_history events), so a watcher can
 * resume from a revision it saw; a revision older than the history is
 * KEEL_ESTALE (compacted), as etcd answers.
 *
 * Threads and ownership: a struct keel_kv belongs to its group's shard
 * thread. Keys, values and results handed out point into the store and are
 * valid until the next call that modifies it (apply, restore, expire).
 */
#ifndef KEEL_KV_H
#define KEEL_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"
#include "keel/rlog.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_KV_MAX_KEY 4096u
#define KEEL_KV_MAX_VALUE (1u << 20)

enum keel_kv_op {
	KEEL_KV_PUT = 1,
	KEEL_KV_DEL = 2,
	KEEL_KV_CAS = 3,     /* compare, then put (or delete) */
	KEEL_KV_NOOP = 4,    /* registers a client, changes nothing */
};

/* What a CAS compares. */
enum keel_kv_cmp {
	KEEL_KV_CMP_VALUE = 1,   /* the current value equals `expect` */
	KEEL_KV_CMP_MOD_REV = 2, /* the key's mod revision equals `rev` (0: absent) */
	KEEL_KV_CMP_VERSION = 3, /* the key's version equals `rev` (0: absent) */
	KEEL_KV_CMP_ABSENT = 4,  /* the key does not exist */
};

/* A decoded command; pointers borrow from the encoded bytes. */
struct keel_kv_cmd {
	uint8_t op;               /* enum keel_kv_op */
	uint64_t client, seq;     /* client != 0 */
	uint64_t time_ms;         /* the proposer's wall clock */
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *value;     /* PUT, CAS (new value) */
	uint32_t value_len;
	/* CAS */
	uint8_t cmp;              /* enum keel_kv_cmp */
	bool cas_delete;          /* on success delete instead of put */
	uint64_t rev;             /* CMP_MOD_REV, CMP_VERSION */
	const uint8_t *expect;    /* CMP_VALUE */
	uint32_t expect_len;
};

/* Bytes keel_kv_cmd_encode needs (exact). */
size_t keel_kv_cmd_size(const struct keel_kv_cmd *c);
/* Encodes into buf (cap bytes); returns bytes written, KEEL_ETOOBIG (cap,
 * or a key/value over the limits) or KEEL_EBADINPUT (empty key, op or cmp
 * out of range, client 0). */
int keel_kv_cmd_encode(const struct keel_kv_cmd *c, uint8_t *buf, size_t cap);
/* Checks every length against len and the limits; 0 with *c borrowing
 * from buf, or KEEL_EPROTO. Never reads outside buf. */
int keel_kv_cmd_decode(const uint8_t *buf, size_t len, struct keel_kv_cmd *c);

/* The outcome of a command. */
enum keel_kv_status {
	KEEL_KV_OK = 0,
	KEEL_KV_NOT_FOUND = 1,    /* DEL of an absent key */
	KEEL_KV_CAS_FAILED = 2,   /* the comparison did not hold */
	KEEL_KV_STALE_SEQ = 3,    /* an older sequence of this client: superseded */
};
struct keel_kv_result {
	uint8_t status;           /* enum keel_kv_status */
	uint64_t rev;             /* the group's revision after the command */
	uint64_t mod_rev;         /* the key's mod revision after it (0: absent) */
	bool duplicate;           /* answered from the client table, not applied */
};

struct keel_kv_config {
	uint64_t client_idle_ms;  /* 0: 1 hour */
	uint32_t max_clients;     /* 0: 1 << 20; beyond, the idlest are dropped */
	uint32_t watch_history;   /* events kept for resuming watches; 0: 10000 */
};

struct keel_kv;

int keel_kv_create(const struct keel_kv_config *cfg, struct keel_kv **out);
void keel_kv_destroy(struct keel_kv *kv);

/* Applies one encoded command at log index (apply() of the log's state
 * machine). A command that does not decode is skipped (logged): every
 * replica skips it alike. *res (may be NULL) gets the outcome. */
void keel_kv_apply(struct keel_kv *kv, uint64_t index, const void *data, size_t len,
		   struct keel_kv_result *res);
/* The result the store recorded for (client, seq), if seq is the client's
 * latest: 0, KEEL_ENOTFOUND (no entry, or another sequence). */
int keel_kv_client_result(const struct keel_kv *kv, uint64_t client, uint64_t seq,
			  struct keel_kv_result *res);

/* Snapshot (malloc'd bytes the caller frees) and restore (replaces
 * everything; KEEL_ECORRUPT for bytes that do not decode, leaving the store
 * as it was). Both include revisions, the client table and the index. */
int keel_kv_snapshot(const struct keel_kv *kv, void **data, size_t *len);
int keel_kv_restore(struct keel_kv *kv, uint64_t index, const void *data, size_t len);

/* A state machine for keel_rlog_config.sm, bound to kv. on_leader and
 * on_error are left NULL for the caller. */
struct keel_rlog_sm keel_kv_rlog_sm(struct keel_kv *kv);

/* ---- reads ------------------------------------------------------------ */

struct keel_kv_kv {
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *value;
	uint32_t value_len;
	uint64_t create_rev, mod_rev, version;
};

uint64_t keel_kv_revision(const struct keel_kv *kv);
uint64_t keel_kv_applied_index(const struct keel_kv *kv);
size_t keel_kv_count(const struct keel_kv *kv);
/* 0 with *out, or KEEL_ENOTFOUND. */
int keel_kv_get(const struct keel_kv *kv, const void *key, size_t key_len, struct keel_kv_kv *out);
/* Calls fn for keys with the prefix (every key for an empty prefix) in key
 * order, starting after `after` when after_len > 0 (for paging), at most
 * limit of them (0: no limit). fn's non-zero return stops the walk. Returns
 * the number of keys visited, or fn's negative return. *more (may be NULL)
 * says whether keys with the prefix remain after the last one visited. */
int keel_kv_range(const struct keel_kv *kv, const void *prefix, size_t prefix_len,
		  const void *after, size_t after_len, size_t limit,
		  int (*fn)(void *arg, const struct keel_kv_kv *kv), void *arg, bool *more);

/* ---- watch ------------------------------------------------------------ */

struct keel_kv_event {
	uint64_t rev;
	bool deleted;
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *value;     /* NULL when deleted */
	uint32_t value_len;
	/* Set only by the service (keel_kv_watch), never by the store: this
	 * replica replaced its state by a snapshot and jumped to revision
	 * rev without the events in between, so the watch has ended (no key;
	 * resume from the last revision seen on a replica that has them). */
	bool compacted;
};
/* Called for every change, in revision order, right after the command is
 * applied (the service pushes them to its watchers). */
typedef void keel_kv_event_fn(void *arg, const struct keel_kv_event *ev);
void keel_kv_on_event(struct keel_kv *kv, keel_kv_event_fn *fn, void *arg);
/* Replays the history from revision from_rev (inclusive) for keys matching
 * (key, prefix: key is a prefix when prefix is true): 0, or KEEL_ESTALE
 * when from_rev is older than the history keeps (the caller must read the
 * current state instead). fn's non-zero return stops it. */
int keel_kv_history(const struct keel_kv *kv, uint64_t from_rev, const void *key, size_t key_len,
		    bool prefix, int (*fn)(void *arg, const struct keel_kv_event *ev), void *arg);
/* The oldest revision the history can replay from. */
uint64_t keel_kv_history_start(const struct keel_kv *kv);

/* The service around this state machine (groups, writes, reads, watches)
 * is in keel/services.h. */

#ifdef __cplusplus
}
#endif
#endif /* KEEL_KV_H */
