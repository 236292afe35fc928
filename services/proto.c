/* The client protocol's codec: see keel/proto.h. */
#include "keel/proto.h"

#include <stddef.h>
#include <string.h>

#include "keel/kv.h"

enum kind { K_NONE = 0, K_U8, K_U32, K_I32, K_U64, K_BYTES, K_ITEM };

struct field {
	uint8_t kind;
	uint32_t max;   /* K_BYTES: longest */
	size_t off;     /* in struct keel_proto_msg */
};

#define F(tag, k, member) [tag] = {.kind = (k), .off = offsetof(struct keel_proto_msg, member)}
#define B(tag, member, mx) [tag] = {.kind = K_BYTES, .max = (mx), .off = offsetof(struct keel_proto_msg, member)}

static const struct field fields[KEEL_PT_TAG_COUNT] = {
	F(KEEL_PT_STATUS, K_I32, status),
	F(KEEL_PT_LEADER, K_U32, leader),
	F(KEEL_PT_GROUP, K_U32, group),
	F(KEEL_PT_CLIENT, K_U64, client),
	F(KEEL_PT_SEQ, K_U64, seq),
	/* KEY may be empty: a RANGE over every key has an empty prefix; the
	 * services check non-empty keys where a key is meant. */
	B(KEEL_PT_KEY, key, KEEL_KV_MAX_KEY),
	B(KEEL_PT_VALUE, value, KEEL_KV_MAX_VALUE),
	B(KEEL_PT_EXPECT, expect, KEEL_KV_MAX_VALUE),
	F(KEEL_PT_REV, K_U64, rev),
	F(KEEL_PT_MOD_REV, K_U64, mod_rev),
	F(KEEL_PT_CREATE_REV, K_U64, create_rev),
	F(KEEL_PT_VERSION, K_U64, version),
	F(KEEL_PT_CMP, K_U8, cmp),
	F(KEEL_PT_FLAGS, K_U32, flags),
	F(KEEL_PT_LIMIT, K_U32, limit),
	B(KEEL_PT_TOKEN, token, KEEL_PROTO_MAX_TOKEN),
	F(KEEL_PT_KV_STATUS, K_U8, kv_status),
	B(KEEL_PT_AFTER, after, KEEL_KV_MAX_KEY),
	F(KEEL_PT_WATCH_ID, K_U64, watch_id),
	F(KEEL_PT_NODE, K_U32, node),
	[KEEL_PT_ITEM] = {.kind = K_ITEM},
	B(KEEL_PT_MESSAGE, message, KEEL_PROTO_MAX_MESSAGE),
	F(KEEL_PT_GROUPS, K_U32, groups),
	F(KEEL_PT_INDEX, K_U64, index),
	F(KEEL_PT_APPLIED, K_U64, applied),
	F(KEEL_PT_TTL_MS, K_U32, ttl_ms),
	F(KEEL_PT_MODE, K_U8, mode),
	F(KEEL_PT_WAIT_MS, K_U32, wait_ms),
	F(KEEL_PT_DELAY_MS, K_U32, delay_ms),
	F(KEEL_PT_FENCE, K_U64, fence),
	F(KEEL_PT_LOCK_STATUS, K_U8, lock_status),
	F(KEEL_PT_EV_KIND, K_U8, ev_kind),
};

#define FIELD_HDR 5u /* tag u8, len u32 */

static uint32_t width(uint8_t kind)
{
	switch (kind) {
	case K_U8:
		return 1;
	case K_U32:
	case K_I32:
		return 4;
	case K_U64:
		return 8;
	default:
		return 0;
	}
}

/* ---- items ---------------------------------------------------------------- */

static size_t item_size(const struct keel_proto_item *it)
{
	return 2 * FIELD_HDR + it->key.len + it->value.len + 3 * (FIELD_HDR + 8);
}

static uint8_t *put_field(uint8_t *p, uint8_t tag, const void *v, uint32_t len)
{
	*p++ = tag;
	keel_put_le32(p, len);
	p += 4;
	if (len)
		memcpy(p, v, len);
	return p + len;
}

static uint8_t *put_u64(uint8_t *p, uint8_t tag, uint64_t v)
{
	uint8_t b[8];
	keel_put_le64(b, v);
	return put_field(p, tag, b, 8);
}

static uint8_t *put_item(uint8_t *p, const struct keel_proto_item *it)
{
	p = put_field(p, KEEL_PT_KEY, it->key.p, it->key.len);
	p = put_field(p, KEEL_PT_VALUE, it->value.p, it->value.len);
	p = put_u64(p, KEEL_PT_CREATE_REV, it->create_rev);
	p = put_u64(p, KEEL_PT_MOD_REV, it->mod_rev);
	return put_u64(p, KEEL_PT_VERSION, it->version);
}

/* Decodes one item's nested fields. */
static int item_decode(const uint8_t *p, size_t len, struct keel_proto_item *it)
{
	memset(it, 0, sizeof(*it));
	bool seen[KEEL_PT_TAG_COUNT] = {0};
	size_t pos = 0;
	while (pos < len) {
		if (len - pos < FIELD_HDR)
			return KEEL_EPROTO;
		uint8_t tag = p[pos];
		uint32_t flen = keel_get_le32(p + pos + 1);
		pos += FIELD_HDR;
		if (flen > len - pos)
			return KEEL_EPROTO;
		const uint8_t *v = p + pos;
		pos += flen;
		if (tag >= KEEL_PT_TAG_COUNT)
			continue;
		if (seen[tag])
			return KEEL_EPROTO;
		seen[tag] = true;
		switch (tag) {
		case KEEL_PT_KEY:
			if (flen == 0 || flen > KEEL_KV_MAX_KEY)
				return KEEL_EPROTO;
			it->key = (struct keel_proto_bytes){v, flen};
			break;
		case KEEL_PT_VALUE:
			if (flen > KEEL_KV_MAX_VALUE)
				return KEEL_EPROTO;
			it->value = (struct keel_proto_bytes){v, flen};
			break;
		case KEEL_PT_CREATE_REV:
		case KEEL_PT_MOD_REV:
		case KEEL_PT_VERSION: {
			if (flen != 8)
				return KEEL_EPROTO;
			uint64_t x = keel_get_le64(v);
			if (tag == KEEL_PT_CREATE_REV)
				it->create_rev = x;
			else if (tag == KEEL_PT_MOD_REV)
				it->mod_rev = x;
			else
				it->version = x;
			break;
		}
		default:
			break; /* a field items do not use: skipped, as unknown ones */
		}
	}
	return seen[KEEL_PT_KEY] ? 0 : KEEL_EPROTO;
}

/* ---- encode ----------------------------------------------------------- */

size_t keel_proto_size(const struct keel_proto_msg *m)
{
	size_t n = KEEL_PROTO_HDR;
	for (unsigned tag = 1; tag < KEEL_PT_TAG_COUNT; tag++) {
		if (!m->has[tag] || tag == KEEL_PT_ITEM || fields[tag].kind == K_NONE)
			continue;
		const struct field *f = &fields[tag];
		if (f->kind == K_BYTES) {
			const struct keel_proto_bytes *b = (const void *)((const char *)m + f->off);
			if (b->len > f->max)
				return 0;
			n += FIELD_HDR + b->len;
		} else {
			n += FIELD_HDR + width(f->kind);
		}
	}
	for (uint32_t i = 0; i < m->n_items; i++) {
		const struct keel_proto_item *it = &m->item[i];
		if (it->key.len == 0 || it->key.len > KEEL_KV_MAX_KEY || it->value.len > KEEL_KV_MAX_VALUE)
			return 0;
		n += FIELD_HDR + item_size(it);
		if (n > KEEL_PROTO_MAX_FRAME + 4)
			return 0;
	}
	return n > KEEL_PROTO_MAX_FRAME + 4 ? 0 : n;
}

int keel_proto_encode(const struct keel_proto_msg *m, uint8_t *buf, size_t cap)
{
	if (m->type == 0)
		return KEEL_EBADINPUT;
	size_t n = keel_proto_size(m);
	if (n == 0 || n > cap)
		return KEEL_ETOOBIG;
	keel_put_le32(buf, (uint32_t)(n - 4));
	keel_put_le16(buf + 4, KEEL_PROTO_MAGIC);
	buf[6] = KEEL_PROTO_VERSION;
	buf[7] = m->type;
	keel_put_le64(buf + 8, m->id);
	uint8_t *p = buf + KEEL_PROTO_HDR;
	for (unsigned tag = 1; tag < KEEL_PT_TAG_COUNT; tag++) {
		if (!m->has[tag] || tag == KEEL_PT_ITEM || fields[tag].kind == K_NONE)
			continue;
		const struct field *f = &fields[tag];
		const char *at = (const char *)m + f->off;
		uint8_t b[8];
		switch (f->kind) {
		case K_U8:
			p = put_field(p, (uint8_t)tag, at, 1);
			break;
		case K_U32:
		case K_I32: {
			uint32_t v;
			memcpy(&v, at, 4);
			keel_put_le32(b, v);
			p = put_field(p, (uint8_t)tag, b, 4);
			break;
		}
		case K_U64: {
			uint64_t v;
			memcpy(&v, at, 8);
			keel_put_le64(b, v);
			p = put_field(p, (uint8_t)tag, b, 8);
			break;
		}
		case K_BYTES: {
			const struct keel_proto_bytes *bs = (const void *)at;
			p = put_field(p, (uint8_t)tag, bs->p, bs->len);
			break;
		}
		default:
			break;
		}
	}
	for (uint32_t i = 0; i < m->n_items; i++) {
		*p++ = KEEL_PT_ITEM;
		keel_put_le32(p, (uint32_t)item_size(&m->item[i]));
		p = put_item(p + 4, &m->item[i]);
	}
	return (int)(p - buf);
}

/* ---- decode ----------------------------------------------------------- */

int keel_proto_frame_len(const uint8_t *buf, size_t avail)
{
	if (avail < 6)
		return 0;
	uint32_t len = keel_get_le32(buf);
	if (keel_get_le16(buf + 4) != KEEL_PROTO_MAGIC || len < KEEL_PROTO_HDR - 4)
		return KEEL_EPROTO;
	if (len > KEEL_PROTO_MAX_FRAME)
		return KEEL_ETOOBIG;
	return (int)(len + 4);
}

static int bad(const char **why, const char *what)
{
	if (why)
		*why = what;
	return KEEL_EPROTO;
}

int keel_proto_decode(const uint8_t *buf, size_t len, struct keel_proto_msg *m, const char **why)
{
	memset(m, 0, sizeof(*m));
	if (len < KEEL_PROTO_HDR)
		return bad(why, "frame shorter than its header");
	if (keel_get_le32(buf) != len - 4)
		return bad(why, "frame length does not match");
	if (len - 4 > KEEL_PROTO_MAX_FRAME)
		return bad(why, "frame over the maximum size");
	if (keel_get_le16(buf + 4) != KEEL_PROTO_MAGIC)
		return bad(why, "not a keel client frame (bad magic)");
	if (buf[6] != KEEL_PROTO_VERSION)
		return bad(why, "protocol version not spoken here (this node speaks version 1)");
	m->type = buf[7];
	if (m->type == 0)
		return bad(why, "message type 0");
	m->id = keel_get_le64(buf + 8);
	size_t pos = KEEL_PROTO_HDR;
	while (pos < len) {
		if (len - pos < FIELD_HDR)
			return bad(why, "truncated field header");
		uint8_t tag = buf[pos];
		uint32_t flen = keel_get_le32(buf + pos + 1);
		size_t start = pos;
		pos += FIELD_HDR;
		if (flen > len - pos)
			return bad(why, "field runs past the end of the frame");
		const uint8_t *v = buf + pos;
		pos += flen;
		if (tag == 0 || tag >= KEEL_PT_TAG_COUNT || fields[tag].kind == K_NONE)
			continue; /* a newer peer's field (the table has gaps) */
		const struct field *f = &fields[tag];
		if (f->kind == K_ITEM) {
			struct keel_proto_item it;
			if (item_decode(v, flen, &it) < 0)
				return bad(why, "malformed range item");
			if (!m->n_items)
				m->items = (struct keel_proto_bytes){buf + start, (uint32_t)(len - start)};
			m->n_items++;
			m->has[tag] = true;
			continue;
		}
		if (m->has[tag])
			return bad(why, "duplicate field");
		m->has[tag] = true;
		char *at = (char *)m + f->off;
		if (f->kind == K_BYTES) {
			if (flen > f->max)
				return bad(why, "field longer than its limit");
			struct keel_proto_bytes b = {flen ? v : NULL, flen};
			memcpy(at, &b, sizeof(b));
			continue;
		}
		if (flen != width(f->kind))
			return bad(why, "integer field of the wrong width");
		switch (f->kind) {
		case K_U8:
			*(uint8_t *)at = v[0];
			break;
		case K_U32:
		case K_I32: {
			uint32_t x = keel_get_le32(v);
			memcpy(at, &x, 4);
			break;
		}
		case K_U64: {
			uint64_t x = keel_get_le64(v);
			memcpy(at, &x, 8);
			break;
		}
		default:
			break;
		}
	}
	return 0;
}

int keel_proto_item_next(const struct keel_proto_msg *m, size_t *pos, struct keel_proto_item *it)
{
	const uint8_t *p = m->items.p;
	size_t len = m->items.len;
	while (p && *pos < len) {
		if (len - *pos < FIELD_HDR)
			return KEEL_EPROTO;
		uint8_t tag = p[*pos];
		uint32_t flen = keel_get_le32(p + *pos + 1);
		if (flen > len - *pos - FIELD_HDR)
			return KEEL_EPROTO;
		const uint8_t *v = p + *pos + FIELD_HDR;
		*pos += FIELD_HDR + flen;
		if (tag != KEEL_PT_ITEM)
			continue;
		return item_decode(v, flen, it) < 0 ? KEEL_EPROTO : 1;
	}
	return 0;
}

const char *keel_proto_type_name(uint8_t type)
{
	switch (type) {
	case KEEL_PROTO_HELLO: return "HELLO";
	case KEEL_PROTO_PUT: return "PUT";
	case KEEL_PROTO_DEL: return "DEL";
	case KEEL_PROTO_CAS: return "CAS";
	case KEEL_PROTO_GET: return "GET";
	case KEEL_PROTO_RANGE: return "RANGE";
	case KEEL_PROTO_WATCH: return "WATCH";
	case KEEL_PROTO_UNWATCH: return "UNWATCH";
	case KEEL_PROTO_STATUS: return "STATUS";
	case KEEL_PROTO_PING: return "PING";
	case KEEL_PROTO_MEMBER: return "MEMBER";
	case KEEL_PROTO_HELLO_OK: return "HELLO_OK";
	case KEEL_PROTO_RESULT: return "RESULT";
	case KEEL_PROTO_EVENT: return "EVENT";
	case KEEL_PROTO_GROUP: return "GROUP";
	case KEEL_PROTO_ERROR: return "ERROR";
	case KEEL_PROTO_PONG: return "PONG";
	case KEEL_PROTO_LOCK_OPEN: return "LOCK_OPEN";
	case KEEL_PROTO_LOCK_KEEPALIVE: return "LOCK_KEEPALIVE";
	case KEEL_PROTO_LOCK_CLOSE: return "LOCK_CLOSE";
	case KEEL_PROTO_LOCK_ACQUIRE: return "LOCK_ACQUIRE";
	case KEEL_PROTO_LOCK_RELEASE: return "LOCK_RELEASE";
	case KEEL_PROTO_LOCK_CANCEL: return "LOCK_CANCEL";
	case KEEL_PROTO_LOCK_INSPECT: return "LOCK_INSPECT";
	case KEEL_PROTO_LOCK_EVENT: return "LOCK_EVENT";
	default: return "unknown";
	}
}
