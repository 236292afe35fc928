/*
 * keel/proto.h — the client protocol: what travels on a node's client port
 * between the client library (keel/client.h) and the node's services
 * (keel/services.h). The codec (services/proto.c) is pure: no I/O, no
 * allocation; fuzzed by tests/fuzz/fuzz_proto.c.
 *
 * A frame, all integers little-endian:
 *
 *   len      u32   bytes after this field (KEEL_PROTO_HDR - 4 .. KEEL_PROTO_MAX_FRAME)
 *   magic    u16   0x4b4c ("KL" read as bytes 4c 4b)
 *   version  u8    KEEL_PROTO_VERSION
 *   type     u8    enum keel_proto_type
 *   id       u64   request id, chosen by the client and echoed in the
 *                  answer (many requests may be in flight on one
 *                  connection, answered in any order); 0 on a frame the
 *                  server pushes (a watch event, a lock grant)
 *   fields   ...   tag u8, len u32, value[len], in any order
 *
 * Fields: integers are exactly their width (a u64 field has len 8); a
 * field appears at most once, except ITEM (a range's results, each a
 * nested field list); byte strings are bounded (key 1..KEEL_KV_MAX_KEY
 * bytes, value KEEL_KV_MAX_VALUE, token 256, message 1024). A decoder
 * skips a field whose tag it does not know (a newer peer's optional
 * field), so adding a field needs no version change; a changed meaning
 * does. A frame of another version is refused with KEEL_EPROTO, and the
 * server answers it with an ERROR naming the versions it speaks.
 *
 * Which fields each type carries is the client library's and the port's
 * contract (keel/client.h), not the codec's: the codec checks the frame,
 * the field bounds and the duplicates, and leaves absent fields zero
 * (has[] says which were present).
 */
#ifndef KEEL_PROTO_H
#define KEEL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_PROTO_MAGIC 0x4b4cu
#define KEEL_PROTO_VERSION 1u
#define KEEL_PROTO_HDR 16u                     /* len .. id */
#define KEEL_PROTO_MAX_FRAME ((1u << 20) + 65536u) /* a largest value and its key, with room */
#define KEEL_PROTO_MAX_TOKEN 256u
#define KEEL_PROTO_MAX_MESSAGE 1024u

enum keel_proto_type {
	/* client -> server */
	KEEL_PROTO_HELLO = 1,    /* TOKEN (client port secret), CLIENT */
	KEEL_PROTO_PUT = 2,      /* CLIENT SEQ KEY VALUE */
	KEEL_PROTO_DEL = 3,      /* CLIENT SEQ KEY */
	KEEL_PROTO_CAS = 4,      /* CLIENT SEQ KEY VALUE CMP [EXPECT|REV] [FLAGS: CAS_DELETE] */
	KEEL_PROTO_GET = 5,      /* KEY [FLAGS: SERIALIZABLE] */
	KEEL_PROTO_RANGE = 6,    /* KEY (the prefix; may be empty) [AFTER] [LIMIT] [FLAGS] GROUP */
	KEEL_PROTO_WATCH = 7,    /* KEY [FLAGS: PREFIX] [REV: from] GROUP */
	KEEL_PROTO_UNWATCH = 8,  /* WATCH_ID */
	KEEL_PROTO_STATUS = 9,   /* [GROUP] */
	KEEL_PROTO_PING = 10,
	/* a group's membership (keel member): MODE (enum keel_proto_member_op)
	 * GROUP [NODE]; answered by the group's leader only. Its RESULT: STATUS
	 * [LEADER] [INDEX: the change's, or the commit index] [FLAGS:
	 * DUPLICATE (add of a voter / remove of a non-member: nothing to do),
	 * MORE (list: a change is in progress)] [MESSAGE]; a list's also REV
	 * (term) and an ITEM per member: KEY "v" (voter) or "l" (learner),
	 * CREATE_REV the node, MOD_REV its match index, VERSION 1 if active */
	KEEL_PROTO_MEMBER = 11,
	/* the lock service (keel/lock_client.h); SESSION is CLIENT, names
	 * are KEY, GROUP is the name's group (KEEPALIVE, OPEN, CLOSE: the
	 * group to renew, open or close the session in) */
	KEEL_PROTO_LOCK_OPEN = 32,      /* CLIENT SEQ TTL_MS GROUP */
	KEEL_PROTO_LOCK_KEEPALIVE = 33, /* CLIENT GROUP */
	KEEL_PROTO_LOCK_CLOSE = 34,     /* CLIENT SEQ GROUP */
	KEEL_PROTO_LOCK_ACQUIRE = 35,   /* CLIENT SEQ KEY MODE [WAIT_MS] [DELAY_MS] [VALUE] */
	KEEL_PROTO_LOCK_RELEASE = 36,   /* CLIENT SEQ KEY FENCE */
	KEEL_PROTO_LOCK_CANCEL = 37,    /* CLIENT SEQ KEY */
	KEEL_PROTO_LOCK_INSPECT = 38,   /* KEY [FLAGS: SERIALIZABLE] */
	/* server -> client */
	KEEL_PROTO_HELLO_OK = 64, /* NODE GROUPS */
	KEEL_PROTO_RESULT = 65,   /* STATUS [LEADER] [KV_STATUS REV MOD_REV] [VALUE CREATE_REV VERSION]
				   * [ITEM...] [FLAGS: MORE] [WATCH_ID] [MESSAGE] */
	KEEL_PROTO_EVENT = 66,    /* pushed: WATCH_ID REV KEY [VALUE] [FLAGS: DELETED] */
	KEEL_PROTO_GROUP = 67,    /* a STATUS answer per group: GROUP LEADER REV(term) INDEX... */
	KEEL_PROTO_ERROR = 68,    /* STATUS MESSAGE: the connection closes after it */
	KEEL_PROTO_PONG = 69,
	/* pushed to the connection a session's lock requests came on:
	 * LOCK_EVENT CLIENT EV_KIND GROUP [SEQ KEY FENCE] INDEX */
	KEEL_PROTO_LOCK_EVENT = 72,
	/* a lock request's RESULT: STATUS LOCK_STATUS [FENCE] [FLAGS: DUPLICATE];
	 * INSPECT's: STATUS MODE DELAY_MS(until, replicated ms) REV(now) and an
	 * ITEM per holder then waiter: KEY "h" or "w", VALUE the holder's
	 * value, CREATE_REV the session, MOD_REV the token (holders) or the
	 * wait deadline (waiters), VERSION the mode */
};

enum keel_proto_member_op {
	KEEL_PROTO_MEMBER_LIST = 1,
	KEEL_PROTO_MEMBER_ADD = 2,    /* as a voter: learner, catch-up, promotion */
	KEEL_PROTO_MEMBER_REMOVE = 3,
};

enum keel_proto_tag {
	KEEL_PT_STATUS = 1,      /* i32: 0 or a keel error code */
	KEEL_PT_LEADER = 2,      /* u32: the node that leads the group, 0: unknown */
	KEEL_PT_GROUP = 3,       /* u32 */
	KEEL_PT_CLIENT = 4,      /* u64 */
	KEEL_PT_SEQ = 5,         /* u64 */
	KEEL_PT_KEY = 6,         /* bytes */
	KEEL_PT_VALUE = 7,       /* bytes */
	KEEL_PT_EXPECT = 8,      /* bytes */
	KEEL_PT_REV = 9,         /* u64 */
	KEEL_PT_MOD_REV = 10,    /* u64 */
	KEEL_PT_CREATE_REV = 11, /* u64 */
	KEEL_PT_VERSION = 12,    /* u64 */
	KEEL_PT_CMP = 13,        /* u8: enum keel_kv_cmp */
	KEEL_PT_FLAGS = 14,      /* u32: KEEL_PF_* */
	KEEL_PT_LIMIT = 15,      /* u32 */
	KEEL_PT_TOKEN = 16,      /* bytes */
	KEEL_PT_KV_STATUS = 17,  /* u8: enum keel_kv_status */
	KEEL_PT_AFTER = 18,      /* bytes: a key */
	KEEL_PT_WATCH_ID = 19,   /* u64 */
	KEEL_PT_NODE = 20,       /* u32 */
	KEEL_PT_ITEM = 21,       /* nested fields (KEY VALUE CREATE_REV MOD_REV VERSION) */
	KEEL_PT_MESSAGE = 22,    /* bytes: text for a person */
	KEEL_PT_GROUPS = 23,     /* u32 */
	KEEL_PT_INDEX = 24,      /* u64: a commit or applied index */
	KEEL_PT_APPLIED = 25,    /* u64 */
	/* the lock service's fields (a gap below them for the KV's) */
	KEEL_PT_TTL_MS = 40,     /* u32: a session's TTL */
	KEEL_PT_MODE = 41,       /* u8: enum keel_lock_mode */
	KEEL_PT_WAIT_MS = 42,    /* u32: 0 (or absent): try only */
	KEEL_PT_DELAY_MS = 43,   /* u32: lock-delay */
	KEEL_PT_FENCE = 44,      /* u64: a fencing token */
	KEEL_PT_LOCK_STATUS = 45, /* u8: enum keel_lock_status */
	KEEL_PT_EV_KIND = 46,    /* u8: enum keel_lock_event_kind */
	KEEL_PT_TAG_COUNT = 47,
};

enum keel_proto_flag {
	KEEL_PF_SERIALIZABLE = 1u << 0, /* read locally, no read barrier */
	KEEL_PF_PREFIX = 1u << 1,       /* WATCH: KEY is a prefix */
	KEEL_PF_CAS_DELETE = 1u << 2,   /* CAS: delete on success */
	KEEL_PF_MORE = 1u << 3,         /* RESULT of RANGE: keys remain after the last */
	KEEL_PF_DELETED = 1u << 4,      /* EVENT: the key was deleted */
	KEEL_PF_DUPLICATE = 1u << 5,    /* RESULT: answered from the exactly-once table */
};

struct keel_proto_bytes {
	const uint8_t *p; /* borrows from the decoded buffer, or the caller's */
	uint32_t len;
};

/* A decoded frame (or one to encode). Absent fields are 0; has[tag] says
 * which were present (the encoder writes exactly the fields marked in
 * has[], so a zero value can be sent). */
struct keel_proto_msg {
	uint8_t type;
	uint64_t id;
	bool has[KEEL_PT_TAG_COUNT];
	int32_t status;
	uint32_t leader, group, flags, limit, node, groups;
	uint64_t client, seq, rev, mod_rev, create_rev, version, watch_id, index, applied;
	uint8_t cmp, kv_status;
	uint32_t ttl_ms, wait_ms, delay_ms;     /* lock */
	uint64_t fence;                         /* lock */
	uint8_t mode, lock_status, ev_kind;     /* lock */
	struct keel_proto_bytes key, value, expect, token, after, message;
	/* ITEMs: n_items nested field lists, the first at items (encoded
	 * form: read with keel_proto_item_next). To encode, fill item[] */
	uint32_t n_items;
	struct keel_proto_bytes items; /* decode: the span from the first ITEM field */
	const struct keel_proto_item *item; /* encode: n_items entries */
};

/* One range result. */
struct keel_proto_item {
	struct keel_proto_bytes key, value;
	uint64_t create_rev, mod_rev, version;
};

/* Marks tag present (for building a message to encode). */
static inline void keel_proto_set(struct keel_proto_msg *m, enum keel_proto_tag tag)
{
	m->has[tag] = true;
}

/* Bytes keel_proto_encode will write (exact), or 0 if m cannot be encoded
 * (a field over its bound, a frame over KEEL_PROTO_MAX_FRAME). */
size_t keel_proto_size(const struct keel_proto_msg *m);
/* Encodes m into buf; returns the frame's length, KEEL_ETOOBIG (cap, or
 * over the bounds), KEEL_EBADINPUT (type 0). */
int keel_proto_encode(const struct keel_proto_msg *m, uint8_t *buf, size_t cap);

/* For a stream reader: given avail bytes at buf, 0 when fewer than a
 * header's length field are there, else the whole frame's length (4 +
 * len) once it is checked: KEEL_EPROTO (bad magic, len below the header),
 * KEEL_ETOOBIG (len over KEEL_PROTO_MAX_FRAME) — either closes the
 * connection. The frame may not be complete yet (compare with avail). */
int keel_proto_frame_len(const uint8_t *buf, size_t avail);
/* Decodes one whole frame of len bytes (from keel_proto_frame_len). 0 with
 * *m borrowing from buf, or KEEL_EPROTO with *why (static text: what is
 * wrong) — a bad version, a field over its bound or past the end, a
 * duplicate, an integer of the wrong width. Never reads outside buf. */
int keel_proto_decode(const uint8_t *buf, size_t len, struct keel_proto_msg *m, const char **why);
/* Walks a decoded message's ITEMs: *pos starts at 0; returns 1 with *it,
 * 0 at the end, KEEL_EPROTO for a malformed item (the decoder checked
 * their framing, not their content). */
int keel_proto_item_next(const struct keel_proto_msg *m, size_t *pos, struct keel_proto_item *it);

const char *keel_proto_type_name(uint8_t type);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_PROTO_H */
