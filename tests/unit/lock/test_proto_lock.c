/* The lock frames of the client protocol (include/keel/proto_lock.h):
 * every request type becomes its command; bad client input (no name, an
 * over-long name, a TTL out of range, session or sequence 0, no mode, a
 * release without a token, a group out of range) is refused with a
 * reason and never reaches the log; results and events survive the
 * codec. */
#include <criterion/criterion.h>
#include <string.h>

#include "keel/proto_lock.h"
#include "keel/services.h"

static struct keel_proto_msg req(uint8_t type)
{
	struct keel_proto_msg m = {.type = type, .id = 9, .client = 77, .seq = 3,
				   .key = {(const uint8_t *)"jobs/a", 6}, .mode = KEEL_LOCK_EXCLUSIVE,
				   .ttl_ms = 5000, .fence = 41, .group = 1};
	keel_proto_set(&m, KEEL_PT_CLIENT);
	keel_proto_set(&m, KEEL_PT_SEQ);
	keel_proto_set(&m, KEEL_PT_KEY);
	keel_proto_set(&m, KEEL_PT_MODE);
	keel_proto_set(&m, KEEL_PT_TTL_MS);
	keel_proto_set(&m, KEEL_PT_FENCE);
	keel_proto_set(&m, KEEL_PT_GROUP);
	return m;
}

static void refused(struct keel_proto_msg m, const char *reason_part)
{
	struct keel_lock_cmd c;
	uint32_t g;
	const char *why = NULL;
	cr_assert_eq(keel_proto_lock_request(&m, 4, &c, &g, &why), KEEL_EBADINPUT);
	cr_assert(why && strstr(why, reason_part), "reason '%s' lacks '%s'", why ? why : "",
		  reason_part);
}

Test(proto_lock, each_request_becomes_its_command)
{
	static const struct {
		uint8_t type, op;
	} t[] = {{KEEL_PROTO_LOCK_OPEN, KEEL_LOCK_OPEN},
		 {KEEL_PROTO_LOCK_KEEPALIVE, KEEL_LOCK_KEEPALIVE},
		 {KEEL_PROTO_LOCK_CLOSE, KEEL_LOCK_CLOSE},
		 {KEEL_PROTO_LOCK_ACQUIRE, KEEL_LOCK_ACQUIRE},
		 {KEEL_PROTO_LOCK_RELEASE, KEEL_LOCK_RELEASE},
		 {KEEL_PROTO_LOCK_CANCEL, KEEL_LOCK_CANCEL}};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct keel_proto_msg m = req(t[i].type);
		struct keel_lock_cmd c;
		uint32_t g;
		const char *why = NULL;
		cr_assert_eq(keel_proto_lock_request(&m, 4, &c, &g, &why), 0, "%s: %s",
			     keel_proto_type_name(t[i].type), why);
		cr_assert_eq(c.op, t[i].op);
		cr_assert_eq(c.session, 77);
		bool by_name = t[i].type != KEEL_PROTO_LOCK_OPEN && t[i].type != KEEL_PROTO_LOCK_CLOSE &&
			       t[i].type != KEEL_PROTO_LOCK_KEEPALIVE;
		cr_assert_eq(g, by_name ? keel_service_group_of("jobs/a", 6, 4) : 1u);
		if (t[i].type == KEEL_PROTO_LOCK_RELEASE)
			cr_assert_eq(c.token, 41);
		if (t[i].op != KEEL_LOCK_KEEPALIVE) {
			/* what the port accepts, the log's encoder takes */
			uint8_t buf[1024];
			cr_assert_gt(keel_lock_cmd_encode(&c, buf, sizeof(buf)), 0);
		}
	}
}

Test(proto_lock, bad_input_refused_with_a_reason)
{
	struct keel_proto_msg m = req(KEEL_PROTO_LOCK_ACQUIRE);
	m.has[KEEL_PT_KEY] = false;
	refused(m, "lock name");
	static uint8_t longname[KEEL_LOCK_MAX_NAME + 1];
	memset(longname, 'x', sizeof(longname));
	m = req(KEEL_PROTO_LOCK_ACQUIRE);
	m.key = (struct keel_proto_bytes){longname, sizeof(longname)};
	refused(m, "over 512");
	m = req(KEEL_PROTO_LOCK_OPEN);
	m.ttl_ms = 0;
	refused(m, "TTL");
	m = req(KEEL_PROTO_LOCK_OPEN);
	m.ttl_ms = KEEL_LOCK_MAX_TTL_MS + 1;
	refused(m, "TTL");
	m = req(KEEL_PROTO_LOCK_ACQUIRE);
	m.client = 0;
	refused(m, "session");
	m = req(KEEL_PROTO_LOCK_ACQUIRE);
	m.seq = 0;
	refused(m, "sequence");
	m = req(KEEL_PROTO_LOCK_ACQUIRE);
	m.mode = 3;
	refused(m, "mode");
	m = req(KEEL_PROTO_LOCK_RELEASE);
	m.has[KEEL_PT_FENCE] = false;
	refused(m, "token");
	m = req(KEEL_PROTO_LOCK_OPEN);
	m.group = 4;
	refused(m, "group");
	m = req(KEEL_PROTO_PUT);
	refused(m, "not a lock request");
}

Test(proto_lock, result_and_event_frames_roundtrip)
{
	struct keel_lock_result r = {.status = KEEL_LOCK_OK, .token = 1234, .duplicate = true};
	struct keel_proto_msg m, d;
	keel_proto_lock_result(&m, 5, 0, &r);
	uint8_t buf[4096];
	int n = keel_proto_encode(&m, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	const char *why = NULL;
	cr_assert_eq(keel_proto_decode(buf, (size_t)n, &d, &why), 0);
	cr_assert_eq(d.lock_status, KEEL_LOCK_OK);
	cr_assert_eq(d.fence, 1234);
	cr_assert(d.flags & KEEL_PF_DUPLICATE);
	struct keel_lock_event ev = {.kind = KEEL_LOCK_EV_GRANTED, .session = 77, .seq = 3,
				     .name = (const uint8_t *)"jobs/a", .name_len = 6, .token = 99,
				     .index = 99};
	keel_proto_lock_event(&m, 2, &ev);
	n = keel_proto_encode(&m, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_assert_eq(keel_proto_decode(buf, (size_t)n, &d, &why), 0);
	cr_assert_eq(d.type, KEEL_PROTO_LOCK_EVENT);
	cr_assert_eq(d.ev_kind, KEEL_LOCK_EV_GRANTED);
	cr_assert_eq(d.client, 77);
	cr_assert_eq(d.seq, 3);
	cr_assert_eq(d.fence, 99);
	cr_assert_eq(d.group, 2);
	cr_assert_eq(d.key.len, 6);
	/* a tag in the table's gap below the lock fields (a newer peer's
	 * field; 39 is the gap's last, the least likely to be given out) */
	buf[n] = 39;
	keel_put_le32(buf + n + 1, 3);
	memcpy(buf + n + 5, "abc", 3);
	keel_put_le32(buf, (uint32_t)(n + 8 - 4));
	cr_assert_eq(keel_proto_decode(buf, (size_t)n + 8, &d, &why), 0, "%s", why);
	cr_assert_eq(d.fence, 99);
}
