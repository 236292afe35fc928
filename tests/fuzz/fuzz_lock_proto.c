/* libFuzzer target: the lock service's frames of the client protocol
 * (services/proto_lock.c, on services/proto.c's decoder). Whatever the
 * bytes: a frame that decodes re-encodes with the same lock fields; a lock
 * request the port accepts becomes a command the state machine's encoder
 * takes and its decoder gives back unchanged (bad client input is refused
 * at the port, never in the log); the result and event frames the port
 * builds from what it decoded encode and decode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/proto_lock.h"

static void same_lock_fields(const struct keel_proto_msg *a, const struct keel_proto_msg *b)
{
	if (a->ttl_ms != b->ttl_ms || a->wait_ms != b->wait_ms || a->delay_ms != b->delay_ms ||
	    a->fence != b->fence || a->mode != b->mode || a->lock_status != b->lock_status ||
	    a->ev_kind != b->ev_kind || a->client != b->client || a->seq != b->seq ||
	    a->group != b->group || a->key.len != b->key.len ||
	    (a->key.len && memcmp(a->key.p, b->key.p, a->key.len)) ||
	    memcmp(a->has, b->has, sizeof(a->has)))
		abort();
}

/* Encodes m, decodes it again, checks the lock fields survived. */
static void roundtrip(const struct keel_proto_msg *m)
{
	size_t need = keel_proto_size(m);
	if (!need)
		return;
	uint8_t *out = malloc(need);
	if (!out)
		return;
	if (keel_proto_encode(m, out, need) != (int)need)
		abort();
	struct keel_proto_msg m2;
	const char *why = NULL;
	if (keel_proto_decode(out, need, &m2, &why) != 0)
		abort();
	same_lock_fields(m, &m2);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < KEEL_PROTO_HDR)
		return 0;
	uint8_t *f = malloc(size);
	if (!f)
		return 0;
	memcpy(f, data, size);
	keel_put_le32(f, (uint32_t)(size - 4));
	keel_put_le16(f + 4, KEEL_PROTO_MAGIC);
	f[6] = KEEL_PROTO_VERSION;
	/* steer most inputs to the lock types */
	if (f[7] < KEEL_PROTO_LOCK_OPEN || f[7] > KEEL_PROTO_LOCK_INSPECT)
		f[7] = (uint8_t)(KEEL_PROTO_LOCK_OPEN + f[7] % 8);
	struct keel_proto_msg m;
	const char *why = NULL;
	if (keel_proto_decode(f, size, &m, &why) != 0) {
		free(f);
		return 0;
	}
	m.n_items = 0; /* the lock requests carry none */
	m.has[KEEL_PT_ITEM] = false;
	roundtrip(&m);
	uint32_t groups = 1 + (uint32_t)(m.id % 64);
	struct keel_lock_cmd cmd;
	uint32_t group;
	int rc = keel_proto_lock_request(&m, groups, &cmd, &group, &why);
	if (rc != 0 && (rc != KEEL_EBADINPUT || !why))
		abort(); /* every refusal says why */
	if (rc == 0) {
		if (group >= groups)
			abort();
		if (m.type != KEEL_PROTO_LOCK_INSPECT && m.type != KEEL_PROTO_LOCK_KEEPALIVE) {
			size_t n = keel_lock_cmd_size(&cmd);
			uint8_t *b = malloc(n ? n : 1);
			if (!b)
				abort();
			if (keel_lock_cmd_encode(&cmd, b, n) < 0)
				abort(); /* the port let through what the log refuses */
			struct keel_lock_cmd back;
			if (keel_lock_cmd_decode(b, n, &back) != 0 || back.op != cmd.op ||
			    back.session != cmd.session || back.seq != cmd.seq ||
			    back.name_len != cmd.name_len ||
			    (cmd.name_len && memcmp(back.name, cmd.name, cmd.name_len)))
				abort();
			free(b);
		}
		/* what the port would answer and push for it */
		struct keel_lock_result res = {.status = (uint8_t)(m.seq % 8), .token = m.fence,
					       .duplicate = m.flags & 1};
		struct keel_proto_msg a;
		keel_proto_lock_result(&a, m.id, 0, &res);
		roundtrip(&a);
		struct keel_lock_event ev = {.kind = (uint8_t)(1 + m.seq % 4), .session = cmd.session,
					     .seq = cmd.seq, .name = cmd.name,
					     .name_len = cmd.name_len, .token = m.fence,
					     .index = m.rev};
		keel_proto_lock_event(&a, group, &ev);
		roundtrip(&a);
	}
	free(f);
	return 0;
}
