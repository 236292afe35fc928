/* The KV command codec (keel/kv.h): what one log entry of a KV group
 * holds. Little-endian, versioned, every length checked against the
 * buffer and the limits; fuzzed by tests/fuzz/fuzz_kv_cmd.c.
 *
 *   u8 version (1)  u8 op  u8 cmp  u8 flags (bit 0: CAS deletes)
 *   u64 client  u64 seq  u64 time_ms
 *   u32 key_len  u32 value_len  u64 rev  u32 expect_len
 *   key  value  expect
 */
#include <string.h>

#include "keel/kv.h"

#define CMD_VERSION 1
#define CMD_HDR 48u
#define FLAG_CAS_DELETE 1u

static bool valid(const struct keel_kv_cmd *c)
{
	if (!c->client || c->op < KEEL_KV_PUT || c->op > KEEL_KV_NOOP)
		return false;
	if (c->op == KEEL_KV_NOOP)
		return c->key_len == 0 && c->value_len == 0 && c->expect_len == 0;
	if (!c->key_len || c->key_len > KEEL_KV_MAX_KEY)
		return false;
	if (c->value_len > KEEL_KV_MAX_VALUE || c->expect_len > KEEL_KV_MAX_VALUE)
		return false;
	if (c->op == KEEL_KV_DEL && (c->value_len || c->expect_len))
		return false;
	if (c->op == KEEL_KV_CAS) {
		if (c->cmp < KEEL_KV_CMP_VALUE || c->cmp > KEEL_KV_CMP_ABSENT)
			return false;
		if (c->cmp != KEEL_KV_CMP_VALUE && c->expect_len)
			return false;
		if (c->cas_delete && c->value_len)
			return false;
	} else if (c->cmp || c->cas_delete || c->expect_len) {
		return false;
	}
	return true;
}

size_t keel_kv_cmd_size(const struct keel_kv_cmd *c)
{
	return CMD_HDR + (size_t)c->key_len + c->value_len + c->expect_len;
}

int keel_kv_cmd_encode(const struct keel_kv_cmd *c, uint8_t *buf, size_t cap)
{
	if (c->key_len > KEEL_KV_MAX_KEY || c->value_len > KEEL_KV_MAX_VALUE ||
	    c->expect_len > KEEL_KV_MAX_VALUE)
		return KEEL_ETOOBIG;
	if (!valid(c))
		return KEEL_EBADINPUT;
	size_t n = keel_kv_cmd_size(c);
	if (n > cap)
		return KEEL_ETOOBIG;
	buf[0] = CMD_VERSION;
	buf[1] = c->op;
	buf[2] = c->cmp;
	buf[3] = c->cas_delete ? FLAG_CAS_DELETE : 0;
	keel_put_le64(buf + 4, c->client);
	keel_put_le64(buf + 12, c->seq);
	keel_put_le64(buf + 20, c->time_ms);
	keel_put_le32(buf + 28, c->key_len);
	keel_put_le32(buf + 32, c->value_len);
	keel_put_le64(buf + 36, c->rev);
	keel_put_le32(buf + 44, c->expect_len);
	uint8_t *p = buf + CMD_HDR;
	if (c->key_len)
		memcpy(p, c->key, c->key_len);
	p += c->key_len;
	if (c->value_len)
		memcpy(p, c->value, c->value_len);
	p += c->value_len;
	if (c->expect_len)
		memcpy(p, c->expect, c->expect_len);
	return (int)n;
}

int keel_kv_cmd_decode(const uint8_t *buf, size_t len, struct keel_kv_cmd *c)
{
	memset(c, 0, sizeof(*c));
	if (len < CMD_HDR || buf[0] != CMD_VERSION || (buf[3] & ~FLAG_CAS_DELETE))
		return KEEL_EPROTO;
	c->op = buf[1];
	c->cmp = buf[2];
	c->cas_delete = buf[3] & FLAG_CAS_DELETE;
	c->client = keel_get_le64(buf + 4);
	c->seq = keel_get_le64(buf + 12);
	c->time_ms = keel_get_le64(buf + 20);
	c->key_len = keel_get_le32(buf + 28);
	c->value_len = keel_get_le32(buf + 32);
	c->rev = keel_get_le64(buf + 36);
	c->expect_len = keel_get_le32(buf + 44);
	/* each length is below 2^21 once valid() passed, so the sum cannot wrap */
	if (!valid(c) || keel_kv_cmd_size(c) != len) {
		memset(c, 0, sizeof(*c));
		return KEEL_EPROTO;
	}
	const uint8_t *p = buf + CMD_HDR;
	c->key = c->key_len ? p : NULL;
	p += c->key_len;
	c->value = c->value_len ? p : NULL;
	p += c->value_len;
	c->expect = c->expect_len ? p : NULL;
	return 0;
}
