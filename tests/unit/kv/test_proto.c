/* The client protocol's codec (keel/proto.h): round trips of every field
 * kind, items, and the refusals a hostile or broken peer gets. */
#include <criterion/criterion.h>
#include <string.h>

#include "keel/kv.h"
#include "keel/proto.h"

static uint8_t buf[KEEL_PROTO_MAX_FRAME + 4];

static struct keel_proto_bytes B(const char *s)
{
	return (struct keel_proto_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

Test(proto, put_round_trip)
{
	struct keel_proto_msg m = {.type = KEEL_PROTO_PUT, .id = 0x1122334455667788ull,
				   .client = 42, .seq = 7, .key = B("k1"), .value = B("hello")};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	keel_proto_set(&m, KEEL_PT_SEQ);
	keel_proto_set(&m, KEEL_PT_KEY);
	keel_proto_set(&m, KEEL_PT_VALUE);
	int n = keel_proto_encode(&m, buf, sizeof(buf));
	cr_assert_eq(n, (int)keel_proto_size(&m));
	cr_assert_eq(keel_proto_frame_len(buf, (size_t)n), n);
	cr_assert_eq(keel_proto_frame_len(buf, 3), 0, "a partial header waits for more");
	struct keel_proto_msg d;
	const char *why = NULL;
	cr_assert_eq(keel_proto_decode(buf, (size_t)n, &d, &why), 0, "%s", why);
	cr_expect_eq(d.type, KEEL_PROTO_PUT);
	cr_expect_eq(d.id, 0x1122334455667788ull);
	cr_expect_eq(d.client, 42);
	cr_expect_eq(d.seq, 7);
	cr_expect(d.has[KEEL_PT_KEY] && d.has[KEEL_PT_VALUE] && !d.has[KEEL_PT_REV]);
	cr_expect_eq(d.key.len, 2);
	cr_expect_arr_eq(d.key.p, "k1", 2);
	cr_expect_arr_eq(d.value.p, "hello", 5);
}

Test(proto, zero_values_are_sent_when_marked)
{
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .id = 1, .status = KEEL_ENOTLEADER,
				   .leader = 0};
	keel_proto_set(&m, KEEL_PT_STATUS);
	keel_proto_set(&m, KEEL_PT_LEADER);
	keel_proto_set(&m, KEEL_PT_VALUE); /* an empty value is a value */
	int n = keel_proto_encode(&m, buf, sizeof(buf));
	struct keel_proto_msg d;
	cr_assert_eq(keel_proto_decode(buf, (size_t)n, &d, NULL), 0);
	cr_expect_eq(d.status, KEEL_ENOTLEADER);
	cr_expect(d.has[KEEL_PT_LEADER] && d.leader == 0);
	cr_expect(d.has[KEEL_PT_VALUE] && d.value.len == 0);
}

Test(proto, range_items)
{
	struct keel_proto_item items[3] = {
		{.key = B("a"), .value = B("1"), .create_rev = 1, .mod_rev = 2, .version = 3},
		{.key = B("ab"), .value = B(""), .create_rev = 4, .mod_rev = 4, .version = 1},
		{.key = B("abc"), .value = B("three"), .create_rev = 5, .mod_rev = 9, .version = 2},
	};
	struct keel_proto_msg m = {.type = KEEL_PROTO_RESULT, .id = 9, .flags = KEEL_PF_MORE,
				   .n_items = 3, .item = items};
	keel_proto_set(&m, KEEL_PT_STATUS);
	keel_proto_set(&m, KEEL_PT_FLAGS);
	int n = keel_proto_encode(&m, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	struct keel_proto_msg d;
	cr_assert_eq(keel_proto_decode(buf, (size_t)n, &d, NULL), 0);
	cr_assert_eq(d.n_items, 3);
	cr_expect_eq(d.flags, KEEL_PF_MORE);
	size_t pos = 0;
	struct keel_proto_item it;
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(keel_proto_item_next(&d, &pos, &it), 1);
		cr_expect_eq(it.key.len, items[i].key.len);
		cr_expect_arr_eq(it.key.p, items[i].key.p, it.key.len);
		cr_expect_eq(it.value.len, items[i].value.len);
		cr_expect_eq(it.create_rev, items[i].create_rev);
		cr_expect_eq(it.mod_rev, items[i].mod_rev);
		cr_expect_eq(it.version, items[i].version);
	}
	cr_expect_eq(keel_proto_item_next(&d, &pos, &it), 0);
}

/* A frame by hand: header, then the given fields. */
static size_t frame(uint8_t *out, uint8_t version, uint8_t type, const uint8_t *fields, size_t n)
{
	keel_put_le32(out, (uint32_t)(KEEL_PROTO_HDR - 4 + n));
	keel_put_le16(out + 4, KEEL_PROTO_MAGIC);
	out[6] = version;
	out[7] = type;
	keel_put_le64(out + 8, 5);
	if (n)
		memcpy(out + KEEL_PROTO_HDR, fields, n);
	return KEEL_PROTO_HDR + n;
}

static void refused(const uint8_t *f, size_t n, const char *expect)
{
	struct keel_proto_msg d;
	const char *why = NULL;
	cr_assert_eq(keel_proto_decode(f, n, &d, &why), KEEL_EPROTO);
	cr_assert_not_null(why);
	cr_expect(strstr(why, expect), "'%s' does not say '%s'", why, expect);
}

Test(proto, hostile_frames_are_refused_with_a_reason)
{
	uint8_t f[256];
	/* another version */
	size_t n = frame(f, 2, KEEL_PROTO_GET, NULL, 0);
	refused(f, n, "version");
	/* a field running past the end */
	uint8_t past[] = {KEEL_PT_KEY, 200, 0, 0, 0, 'k'};
	refused(f, frame(f, 1, KEEL_PROTO_GET, past, sizeof(past)), "past the end");
	/* a duplicate */
	uint8_t dup[] = {KEEL_PT_KEY, 1, 0, 0, 0, 'a', KEEL_PT_KEY, 1, 0, 0, 0, 'b'};
	refused(f, frame(f, 1, KEEL_PROTO_GET, dup, sizeof(dup)), "duplicate");
	/* a u64 of 4 bytes */
	uint8_t narrow[] = {KEEL_PT_SEQ, 4, 0, 0, 0, 1, 2, 3, 4};
	refused(f, frame(f, 1, KEEL_PROTO_PUT, narrow, sizeof(narrow)), "width");
	/* a truncated field header */
	uint8_t trunc[] = {KEEL_PT_KEY, 1, 0};
	refused(f, frame(f, 1, KEEL_PROTO_GET, trunc, sizeof(trunc)), "truncated");
	/* type 0 */
	refused(f, frame(f, 1, 0, NULL, 0), "type 0");
	/* the length field disagrees with the bytes given */
	n = frame(f, 1, KEEL_PROTO_PING, NULL, 0);
	refused(f, n - 1, "shorter");
	/* an item without a key */
	uint8_t item[] = {KEEL_PT_ITEM, 5, 0, 0, 0, KEEL_PT_VALUE, 0, 0, 0, 0};
	refused(f, frame(f, 1, KEEL_PROTO_RESULT, item, sizeof(item)), "item");
}

Test(proto, unknown_fields_are_skipped)
{
	uint8_t f[64];
	uint8_t fields[] = {200, 3, 0, 0, 0, 'x', 'y', 'z', KEEL_PT_KEY, 1, 0, 0, 0, 'k'};
	size_t n = frame(f, 1, KEEL_PROTO_GET, fields, sizeof(fields));
	struct keel_proto_msg d;
	cr_assert_eq(keel_proto_decode(f, n, &d, NULL), 0);
	cr_expect_eq(d.key.len, 1);
}

Test(proto, stream_length_checks)
{
	uint8_t h[8] = {0};
	keel_put_le32(h, KEEL_PROTO_MAX_FRAME + 1);
	keel_put_le16(h + 4, KEEL_PROTO_MAGIC);
	cr_expect_eq(keel_proto_frame_len(h, sizeof(h)), KEEL_ETOOBIG);
	keel_put_le32(h, 3);
	cr_expect_eq(keel_proto_frame_len(h, sizeof(h)), KEEL_EPROTO, "shorter than a header");
	keel_put_le32(h, 12);
	keel_put_le16(h + 4, 0x1234);
	cr_expect_eq(keel_proto_frame_len(h, sizeof(h)), KEEL_EPROTO, "bad magic");
}

Test(proto, bounds_on_encode)
{
	static uint8_t big[KEEL_KV_MAX_KEY + 1];
	struct keel_proto_msg m = {.type = KEEL_PROTO_GET,
				   .key = {big, KEEL_KV_MAX_KEY + 1}};
	keel_proto_set(&m, KEEL_PT_KEY);
	cr_expect_eq(keel_proto_size(&m), 0);
	cr_expect_eq(keel_proto_encode(&m, buf, sizeof(buf)), KEEL_ETOOBIG);
	m.key.len = KEEL_KV_MAX_KEY;
	cr_expect_gt(keel_proto_encode(&m, buf, sizeof(buf)), 0);
	cr_expect_eq(keel_proto_encode(&m, buf, 10), KEEL_ETOOBIG, "no room");
	m.type = 0;
	cr_expect_eq(keel_proto_encode(&m, buf, sizeof(buf)), KEEL_EBADINPUT);
}

Test(proto, largest_value_fits_a_frame)
{
	static uint8_t key[KEEL_KV_MAX_KEY], val[KEEL_KV_MAX_VALUE];
	struct keel_proto_msg m = {.type = KEEL_PROTO_PUT, .client = 1, .seq = 1,
				   .key = {key, sizeof(key)}, .value = {val, sizeof(val)}};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	keel_proto_set(&m, KEEL_PT_SEQ);
	keel_proto_set(&m, KEEL_PT_KEY);
	keel_proto_set(&m, KEEL_PT_VALUE);
	int n = keel_proto_encode(&m, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_expect_eq(keel_proto_frame_len(buf, (size_t)n), n);
}
