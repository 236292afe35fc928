/* The lock frames of the client protocol: see keel/proto_lock.h. */
#include "keel/proto_lock.h"

#include <string.h>

#include "keel/services.h"

static int bad(const char **why, const char *what)
{
	*why = what;
	return KEEL_EBADINPUT;
}

int keel_proto_lock_request(const struct keel_proto_msg *m, uint32_t groups,
			    struct keel_lock_cmd *cmd, uint32_t *group, const char **why)
{
	memset(cmd, 0, sizeof(*cmd));
	*group = 0;
	*why = NULL;
	if (!keel_proto_is_lock(m->type))
		return bad(why, "not a lock request");
	if (!groups)
		return bad(why, "the node runs no groups");
	bool by_name = m->type == KEEL_PROTO_LOCK_ACQUIRE || m->type == KEEL_PROTO_LOCK_RELEASE ||
		       m->type == KEEL_PROTO_LOCK_CANCEL || m->type == KEEL_PROTO_LOCK_INSPECT;
	if (by_name) {
		if (!m->has[KEEL_PT_KEY] || m->key.len == 0)
			return bad(why, "a lock request needs a lock name");
		if (m->key.len > KEEL_LOCK_MAX_NAME)
			return bad(why, "a lock name over 512 bytes");
		cmd->name = m->key.p;
		cmd->name_len = m->key.len;
		*group = keel_service_group_of(m->key.p, m->key.len, groups);
	} else {
		if (!m->has[KEEL_PT_GROUP] || m->group >= groups)
			return bad(why, "a session request needs a group below the cluster's group count");
		*group = m->group;
	}
	if (m->type == KEEL_PROTO_LOCK_INSPECT)
		return 0;
	if (!m->client)
		return bad(why, "a lock request needs a session id (CLIENT, not 0)");
	cmd->session = m->client;
	if (m->type == KEEL_PROTO_LOCK_KEEPALIVE) {
		cmd->op = KEEL_LOCK_KEEPALIVE;
		return 0;
	}
	if (!m->has[KEEL_PT_SEQ] || m->seq == 0)
		return bad(why, "a lock request needs a sequence (not 0)");
	cmd->seq = m->seq;
	switch (m->type) {
	case KEEL_PROTO_LOCK_OPEN:
		cmd->op = KEEL_LOCK_OPEN;
		if (m->ttl_ms < KEEL_LOCK_MIN_TTL_MS || m->ttl_ms > KEEL_LOCK_MAX_TTL_MS)
			return bad(why, "a session TTL must be from 100 ms to one hour");
		cmd->ttl_ms = m->ttl_ms;
		return 0;
	case KEEL_PROTO_LOCK_CLOSE:
		cmd->op = KEEL_LOCK_CLOSE;
		return 0;
	case KEEL_PROTO_LOCK_ACQUIRE:
		cmd->op = KEEL_LOCK_ACQUIRE;
		if (m->mode != KEEL_LOCK_EXCLUSIVE && m->mode != KEEL_LOCK_SHARED)
			return bad(why, "an acquire needs a mode (exclusive 1, shared 2)");
		if (m->value.len > KEEL_LOCK_MAX_VALUE)
			return bad(why, "a holder value over 4096 bytes");
		if (m->wait_ms > KEEL_LOCK_MAX_TTL_MS || m->delay_ms > KEEL_LOCK_MAX_TTL_MS)
			return bad(why, "a wait or lock-delay over one hour");
		cmd->mode = m->mode;
		cmd->wait_ms = m->wait_ms;
		cmd->lock_delay_ms = m->delay_ms;
		cmd->value = m->value.p;
		cmd->value_len = m->value.len;
		return 0;
	case KEEL_PROTO_LOCK_RELEASE:
		cmd->op = KEEL_LOCK_RELEASE;
		if (!m->has[KEEL_PT_FENCE] || !m->fence)
			return bad(why, "a release needs the grant's fencing token");
		cmd->token = m->fence;
		return 0;
	case KEEL_PROTO_LOCK_CANCEL:
		cmd->op = KEEL_LOCK_CANCEL;
		return 0;
	default:
		return bad(why, "not a lock request");
	}
}

void keel_proto_lock_result(struct keel_proto_msg *out, uint64_t id, int status,
			    const struct keel_lock_result *res)
{
	memset(out, 0, sizeof(*out));
	out->type = KEEL_PROTO_RESULT;
	out->id = id;
	out->status = status;
	keel_proto_set(out, KEEL_PT_STATUS);
	if (status < 0 || !res)
		return;
	out->lock_status = res->status;
	out->fence = res->token;
	out->flags = res->duplicate ? KEEL_PF_DUPLICATE : 0;
	keel_proto_set(out, KEEL_PT_LOCK_STATUS);
	keel_proto_set(out, KEEL_PT_FENCE);
	keel_proto_set(out, KEEL_PT_FLAGS);
}

void keel_proto_lock_event(struct keel_proto_msg *out, uint32_t group,
			   const struct keel_lock_event *ev)
{
	memset(out, 0, sizeof(*out));
	out->type = KEEL_PROTO_LOCK_EVENT;
	out->client = ev->session;
	out->ev_kind = ev->kind;
	out->group = group;
	out->index = ev->index;
	keel_proto_set(out, KEEL_PT_CLIENT);
	keel_proto_set(out, KEEL_PT_EV_KIND);
	keel_proto_set(out, KEEL_PT_GROUP);
	keel_proto_set(out, KEEL_PT_INDEX);
	if (ev->name && ev->name_len && ev->name_len <= KEEL_LOCK_MAX_NAME) {
		out->key = (struct keel_proto_bytes){ev->name, ev->name_len};
		keel_proto_set(out, KEEL_PT_KEY);
	}
	if (ev->kind != KEEL_LOCK_EV_EXPIRED) {
		out->seq = ev->seq;
		out->fence = ev->token;
		keel_proto_set(out, KEEL_PT_SEQ);
		keel_proto_set(out, KEEL_PT_FENCE);
	}
}
