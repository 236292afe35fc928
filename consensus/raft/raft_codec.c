/*
 * raft_codec.c — binary encoding of Raft messages for the transport.
 *
 * Layout, little-endian:
 *   u8 magic 'R', u8 version 1, u8 type, u8 flags (1 reject, 2 force,
 *   4 snap_done), u64 from, to, term, log_term, index, commit, reject_hint,
 *   ctx, lease_tick, snap.index, snap.term, snap_offset, snap_total,
 *   u32 n_voters, n_learners, n_entries, chunk_len, n_outgoing,
 *   u64 voter ids, u64 learner ids, u64 outgoing ids,
 *   entries: u64 term, u64 index, u32 type, u32 len, len bytes,
 *   chunk_len bytes of snapshot chunk.
 * The decoder checks every count and length against the bytes that remain
 * before using it, so a hostile length can neither read out of bounds nor
 * make it allocate more than the message's own size (plus one array of
 * entry headers no larger than the message).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keel/raft.h"

#define MAGIC 'R'
#define VERSION 1
#define FIXED (4 + 13 * 8 + 5 * 4)
#define ENTRY_HDR 24
#define F_REJECT 1
#define F_FORCE 2
#define F_DONE 4


size_t keel_raft_msg_encoded_size(const struct keel_raft_msg *m)
{
	size_t n = FIXED + 8 * ((size_t)m->snap.conf.n_voters + m->snap.conf.n_learners +
				 m->snap.conf.n_outgoing);
	for (size_t i = 0; i < m->n_entries; i++)
		n += ENTRY_HDR + m->entries[i].len;
	return n + m->chunk_len;
}

int keel_raft_msg_encode(const struct keel_raft_msg *m, uint8_t *buf, size_t cap)
{
	const struct keel_raft_conf *c = &m->snap.conf;
	if (c->n_voters > KEEL_RAFT_MAX_NODES || c->n_learners > KEEL_RAFT_MAX_NODES ||
	    c->n_outgoing > KEEL_RAFT_MAX_NODES || m->n_entries > UINT32_MAX || m->chunk_len > UINT32_MAX)
		return KEEL_EBADINPUT;
	size_t need = keel_raft_msg_encoded_size(m);
	if (need > cap || need > INT32_MAX)
		return KEEL_ETOOBIG;
	uint8_t *p = buf;
	p[0] = MAGIC;
	p[1] = VERSION;
	p[2] = (uint8_t)m->type;
	p[3] = (uint8_t)((m->reject ? F_REJECT : 0) | (m->force ? F_FORCE : 0) |
			 (m->snap_done ? F_DONE : 0));
	p += 4;
	uint64_t f[13] = {m->from, m->to, m->term, m->log_term, m->index, m->commit,
			  m->reject_hint, m->ctx, m->lease_tick, m->snap.index,
			  m->snap.term, m->snap_offset, m->snap_total};
	for (int i = 0; i < 13; i++, p += 8)
		keel_put_le64(p, f[i]);
	keel_put_le32(p, c->n_voters);
	keel_put_le32(p + 4, c->n_learners);
	keel_put_le32(p + 8, (uint32_t)m->n_entries);
	keel_put_le32(p + 12, (uint32_t)m->chunk_len);
	keel_put_le32(p + 16, c->n_outgoing);
	p += 20;
	for (uint32_t i = 0; i < c->n_voters; i++, p += 8)
		keel_put_le64(p, c->voters[i]);
	for (uint32_t i = 0; i < c->n_learners; i++, p += 8)
		keel_put_le64(p, c->learners[i]);
	for (uint32_t i = 0; i < c->n_outgoing; i++, p += 8)
		keel_put_le64(p, c->outgoing[i]);
	for (size_t i = 0; i < m->n_entries; i++) {
		const struct keel_raft_entry *e = &m->entries[i];
		keel_put_le64(p, e->term);
		keel_put_le64(p + 8, e->index);
		keel_put_le32(p + 16, e->type);
		keel_put_le32(p + 20, e->len);
		p += ENTRY_HDR;
		if (e->len)
			memcpy(p, e->data, e->len);
		p += e->len;
	}
	if (m->chunk_len)
		memcpy(p, m->chunk, m->chunk_len);
	p += m->chunk_len;
	return (int)(p - buf);
}

/* Copies m's variable parts into one allocation: entry array, entry data,
 * chunk. Used by decode (m's pointers into the wire buffer) and clone. */
static int own(struct keel_raft_msg *out, const struct keel_raft_msg *m)
{
	size_t data = m->chunk_len;
	for (size_t i = 0; i < m->n_entries; i++)
		data += m->entries[i].len;
	size_t arr = m->n_entries * sizeof(struct keel_raft_entry);
	*out = *m;
	out->owned = NULL;
	if (!arr && !data) {
		out->entries = NULL;
		out->chunk = NULL;
		return 0;
	}
	uint8_t *mem = malloc(arr + data);
	if (!mem) {
		memset(out, 0, sizeof(*out));
		return -ENOMEM;
	}
	struct keel_raft_entry *ents = (struct keel_raft_entry *)mem;
	uint8_t *d = mem + arr;
	for (size_t i = 0; i < m->n_entries; i++) {
		ents[i] = m->entries[i];
		if (ents[i].len) {
			memcpy(d, m->entries[i].data, ents[i].len);
			ents[i].data = d;
			d += ents[i].len;
		} else {
			ents[i].data = NULL;
		}
	}
	out->entries = m->n_entries ? ents : NULL;
	if (m->chunk_len) {
		memcpy(d, m->chunk, m->chunk_len);
		out->chunk = d;
	} else {
		out->chunk = NULL;
	}
	out->owned = mem;
	return 0;
}

int keel_raft_msg_clone(const struct keel_raft_msg *m, struct keel_raft_msg *out)
{
	return own(out, m);
}

void keel_raft_msg_free(struct keel_raft_msg *m)
{
	if (!m)
		return;
	free(m->owned);
	memset(m, 0, sizeof(*m));
}

int keel_raft_msg_decode(const uint8_t *buf, size_t len, struct keel_raft_msg *out)
{
	memset(out, 0, sizeof(*out));
	if (len < FIXED || buf[0] != MAGIC || buf[1] != VERSION)
		return KEEL_EPROTO;
	struct keel_raft_msg m = {0};
	m.type = buf[2];
	if (m.type < 1 || m.type > KEEL_RAFT_MSG_TYPE_MAX || (buf[3] & ~7u))
		return KEEL_EPROTO;
	m.reject = buf[3] & F_REJECT;
	m.force = buf[3] & F_FORCE;
	m.snap_done = buf[3] & F_DONE;
	const uint8_t *p = buf + 4;
	uint64_t *f[13] = {&m.from, &m.to, &m.term, &m.log_term, &m.index, &m.commit,
			   &m.reject_hint, &m.ctx, &m.lease_tick, &m.snap.index,
			   &m.snap.term, &m.snap_offset, &m.snap_total};
	for (int i = 0; i < 13; i++, p += 8)
		*f[i] = keel_get_le64(p);
	uint32_t nv = keel_get_le32(p), nl = keel_get_le32(p + 4), ne = keel_get_le32(p + 8), cl = keel_get_le32(p + 12);
	uint32_t no = keel_get_le32(p + 16);
	p += 20;
	size_t left = len - FIXED;
	if (nv > KEEL_RAFT_MAX_NODES || nl > KEEL_RAFT_MAX_NODES || no > KEEL_RAFT_MAX_NODES ||
	    8 * (size_t)(nv + nl + no) > left)
		return KEEL_EPROTO;
	m.snap.conf.n_voters = nv;
	m.snap.conf.n_learners = nl;
	m.snap.conf.n_outgoing = no;
	for (uint32_t i = 0; i < nv; i++, p += 8)
		m.snap.conf.voters[i] = keel_get_le64(p);
	for (uint32_t i = 0; i < nl; i++, p += 8)
		m.snap.conf.learners[i] = keel_get_le64(p);
	for (uint32_t i = 0; i < no; i++, p += 8)
		m.snap.conf.outgoing[i] = keel_get_le64(p);
	left -= 8 * (size_t)(nv + nl + no);
	/* Each entry takes at least its header: bounds the array. */
	if (ne > left / ENTRY_HDR)
		return KEEL_EPROTO;
	struct keel_raft_entry *ents = NULL;
	if (ne) {
		ents = malloc(ne * sizeof(*ents));
		if (!ents)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < ne; i++) {
		if (left < ENTRY_HDR)
			goto bad;
		ents[i].term = keel_get_le64(p);
		ents[i].index = keel_get_le64(p + 8);
		ents[i].type = keel_get_le32(p + 16);
		ents[i].len = keel_get_le32(p + 20);
		p += ENTRY_HDR;
		left -= ENTRY_HDR;
		if (ents[i].type > KEEL_RAFT_ENTRY_NOOP || ents[i].len > left)
			goto bad;
		ents[i].data = ents[i].len ? p : NULL;
		p += ents[i].len;
		left -= ents[i].len;
	}
	if (cl != left)
		goto bad;
	m.entries = ents;
	m.n_entries = ne;
	m.chunk = cl ? p : NULL;
	m.chunk_len = cl;
	int rc = own(out, &m);
	free(ents);
	return rc;
bad:
	free(ents);
	return KEEL_EPROTO;
}

const char *keel_raft_msg_type_name(uint32_t type)
{
	static const char *const names[] = {
		"?", "vote", "vote-resp", "prevote", "prevote-resp", "append",
		"append-resp", "heartbeat", "heartbeat-resp", "snapshot",
		"snapshot-resp", "timeout-now", "read-index", "read-index-resp"};
	return type < KEEL_ARRAY_LEN(names) ? names[type] : "?";
}
