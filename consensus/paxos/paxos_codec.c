/*
 * paxos_codec.c — binary encoding of Multi-Paxos messages for the transport.
 *
 * Layout, little-endian:
 *   u8 magic 'P', u8 version 1, u8 type, u8 flags (1 reject, 2 force),
 *   u64 from, to, ballot, promised, index, last, commit, base, ctx,
 *   snap_index, u32 n_values, u32 snap_len,
 *   values: u64 slot, u64 ballot, u32 type, u32 len, u32 flags (1 chosen),
 *   len bytes; then snap_len bytes of snapshot.
 * The decoder checks every count and length against the bytes that remain
 * before it uses it, so a hostile length can neither read out of bounds nor
 * make it allocate more than a small multiple of the message's own size.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

#define MAGIC 'P'
#define VERSION 1
#define FIXED (4 + 10 * 8 + 2 * 4)
#define VALUE_HDR 28
#define F_REJECT 1
#define F_FORCE 2
#define F_CHOSEN 1

size_t keel_paxos_msg_encoded_size(const struct keel_paxos_msg *m)
{
	size_t n = FIXED + m->snap_len;
	for (size_t i = 0; i < m->n_values; i++)
		n += VALUE_HDR + m->values[i].len;
	return n;
}

int keel_paxos_msg_encode(const struct keel_paxos_msg *m, uint8_t *buf, size_t cap)
{
	if (m->n_values > UINT32_MAX || m->snap_len > UINT32_MAX)
		return KEEL_EBADINPUT;
	size_t need = keel_paxos_msg_encoded_size(m);
	if (need > cap || need > INT32_MAX)
		return KEEL_ETOOBIG;
	uint8_t *p = buf;
	p[0] = MAGIC;
	p[1] = VERSION;
	p[2] = (uint8_t)m->type;
	p[3] = (uint8_t)((m->reject ? F_REJECT : 0) | (m->force ? F_FORCE : 0));
	p += 4;
	uint64_t f[10] = {m->from,   m->to,     m->ballot, m->promised, m->index,
			  m->last,   m->commit, m->base,   m->ctx,      m->snap_index};
	for (int i = 0; i < 10; i++, p += 8)
		keel_put_le64(p, f[i]);
	keel_put_le32(p, (uint32_t)m->n_values);
	keel_put_le32(p + 4, (uint32_t)m->snap_len);
	p += 8;
	for (size_t i = 0; i < m->n_values; i++) {
		const struct keel_paxos_value *v = &m->values[i];
		keel_put_le64(p, v->slot);
		keel_put_le64(p + 8, v->ballot);
		keel_put_le32(p + 16, v->type);
		keel_put_le32(p + 20, v->len);
		keel_put_le32(p + 24, v->chosen ? F_CHOSEN : 0);
		p += VALUE_HDR;
		if (v->len)
			memcpy(p, v->data, v->len);
		p += v->len;
	}
	if (m->snap_len)
		memcpy(p, m->snap, m->snap_len);
	p += m->snap_len;
	return (int)(p - buf);
}

int px_msg_own(struct keel_paxos_msg *out, const struct keel_paxos_msg *m)
{
	size_t data = m->snap_len;
	for (size_t i = 0; i < m->n_values; i++)
		data += m->values[i].len;
	size_t arr = m->n_values * sizeof(struct keel_paxos_value);
	*out = *m;
	out->owned = NULL;
	if (!arr && !data) {
		out->values = NULL;
		out->snap = NULL;
		return 0;
	}
	uint8_t *mem = malloc(arr + data);
	if (!mem) {
		memset(out, 0, sizeof(*out));
		return -ENOMEM;
	}
	struct keel_paxos_value *vals = (struct keel_paxos_value *)mem;
	uint8_t *d = mem + arr;
	for (size_t i = 0; i < m->n_values; i++) {
		vals[i] = m->values[i];
		vals[i].data = NULL;
		if (vals[i].len) {
			memcpy(d, m->values[i].data, vals[i].len);
			vals[i].data = d;
			d += vals[i].len;
		}
	}
	out->values = m->n_values ? vals : NULL;
	out->snap = NULL;
	if (m->snap_len) {
		memcpy(d, m->snap, m->snap_len);
		out->snap = d;
	}
	out->owned = mem;
	return 0;
}

int keel_paxos_msg_decode(const uint8_t *buf, size_t len, struct keel_paxos_msg *out)
{
	memset(out, 0, sizeof(*out));
	if (len < FIXED || buf[0] != MAGIC || buf[1] != VERSION || buf[2] < 1 ||
	    buf[2] > KEEL_PAXOS_MSG_TYPE_MAX || (buf[3] & ~(F_REJECT | F_FORCE)))
		return KEEL_EPROTO;
	struct keel_paxos_msg m = {.type = buf[2], .reject = buf[3] & F_REJECT,
				   .force = buf[3] & F_FORCE};
	const uint8_t *p = buf + 4;
	uint64_t *f[10] = {&m.from, &m.to,     &m.ballot, &m.promised, &m.index,
			   &m.last, &m.commit, &m.base,   &m.ctx,      &m.snap_index};
	for (int i = 0; i < 10; i++, p += 8)
		*f[i] = keel_get_le64(p);
	uint32_t nv = keel_get_le32(p), sl = keel_get_le32(p + 4);
	p += 8;
	size_t left = len - FIXED;
	/* every value needs at least its header: bounds the array below */
	if (nv > left / VALUE_HDR)
		return KEEL_EPROTO;
	struct keel_paxos_value *vals = NULL;
	if (nv) {
		vals = malloc(nv * sizeof(*vals));
		if (!vals)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < nv; i++) {
		if (left < VALUE_HDR)
			goto bad;
		struct keel_paxos_value *v = &vals[i];
		v->slot = keel_get_le64(p);
		v->ballot = keel_get_le64(p + 8);
		v->type = keel_get_le32(p + 16);
		v->len = keel_get_le32(p + 20);
		uint32_t fl = keel_get_le32(p + 24);
		p += VALUE_HDR;
		left -= VALUE_HDR;
		if ((fl & ~F_CHOSEN) || v->len > left ||
		    (v->type != KEEL_PAXOS_VALUE_NORMAL && v->type != KEEL_PAXOS_VALUE_NOOP))
			goto bad;
		v->chosen = fl & F_CHOSEN;
		v->data = v->len ? p : NULL;
		p += v->len;
		left -= v->len;
	}
	if (sl != left)
		goto bad;
	m.values = vals;
	m.n_values = nv;
	m.snap = sl ? p : NULL;
	m.snap_len = sl;
	int rc = px_msg_own(out, &m);
	free(vals);
	return rc;
bad:
	free(vals);
	return KEEL_EPROTO;
}

void keel_paxos_msg_free(struct keel_paxos_msg *m)
{
	if (!m)
		return;
	free(m->owned);
	memset(m, 0, sizeof(*m));
}

const char *keel_paxos_msg_type_name(uint32_t type)
{
	static const char *const names[] = {
		"?",         "PREPARE", "PROMISE", "ACCEPT",   "ACCEPTED",  "HEARTBEAT",
		"HEARTBEAT_RESP", "LEARN", "SNAPSHOT", "READ", "READ_RESP"};
	return type <= KEEL_PAXOS_MSG_TYPE_MAX ? names[type] : "?";
}

const char *keel_paxos_role_name(enum keel_paxos_role role)
{
	switch (role) {
	case KEEL_PAXOS_FOLLOWER: return "follower";
	case KEEL_PAXOS_CANDIDATE: return "candidate";
	case KEEL_PAXOS_LEADER: return "leader";
	}
	return "?";
}
