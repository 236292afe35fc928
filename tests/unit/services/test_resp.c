/* The RESP parser and reply encoder (keel/resp.h): commands as arrays and
 * inline, pipelined, split at every byte; the limits and malformed input
 * answered with Redis's protocol errors; every reply shape in RESP2 and
 * RESP3, byte for byte. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "keel/base.h"
#include "keel/resp.h"
#include "keel/services.h"

static int parse_str(struct keel_resp_parser *p, const char *s)
{
	return keel_resp_parse(p, (const uint8_t *)s, strlen(s));
}

static void expect_arg(const struct keel_resp_parser *p, uint32_t i, const char *want)
{
	cr_assert_lt(i, p->argc);
	cr_assert_eq(p->argl[i], strlen(want), "arg %u: length %zu, want %zu", i, p->argl[i],
		     strlen(want));
	cr_assert(!memcmp(p->argv[i], want, strlen(want)), "arg %u differs", i);
}

Test(resp, array_command)
{
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, NULL);
	const char *s = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
	cr_assert_eq(parse_str(&p, s), (int)strlen(s));
	cr_assert_eq(p.argc, 3);
	expect_arg(&p, 0, "SET");
	expect_arg(&p, 1, "k");
	expect_arg(&p, 2, "");
	keel_resp_parser_free(&p);
}

Test(resp, split_at_every_byte)
{
	/* a pipeline of two commands, one with a binary bulk holding CRLF */
	static const char s[] = "*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n*1\r\n$4\r\nPING\r\n";
	size_t n = sizeof(s) - 1, first = 23; /* the GET */
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, NULL);
	for (size_t cut = 0; cut < first; cut++) {
		int rc = keel_resp_parse(&p, (const uint8_t *)s, cut);
		cr_assert_eq(rc, 0, "cut %zu: %d", cut, rc);
		cr_assert_gt(p.need, cut, "cut %zu: need %zu", cut, p.need);
		cr_assert_leq(p.need, first, "cut %zu: need %zu", cut, p.need);
	}
	cr_assert_eq(keel_resp_parse(&p, (const uint8_t *)s, n), (int)first);
	expect_arg(&p, 0, "GET");
	expect_arg(&p, 1, "a\r\nb");
	cr_assert_eq(keel_resp_parse(&p, (const uint8_t *)s + first, n - first), (int)(n - first));
	cr_assert_eq(p.argc, 1);
	expect_arg(&p, 0, "PING");
	keel_resp_parser_free(&p);
}

Test(resp, big_bulk_need)
{
	/* a 1 MiB bulk announced by its header: need names the whole command,
	 * so the listener does not parse again until it is all there */
	size_t bl = 1u << 20;
	char hdr[64];
	int h = snprintf(hdr, sizeof(hdr), "*2\r\n$3\r\nSET\r\n$%zu\r\n", bl);
	size_t n = (size_t)h + bl + 2;
	uint8_t *b = malloc(n);
	memcpy(b, hdr, (size_t)h);
	memset(b + h, 'x', bl);
	memcpy(b + h + bl, "\r\n", 2);
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, NULL);
	cr_assert_eq(keel_resp_parse(&p, b, (size_t)h + 10), 0);
	cr_assert_eq(p.need, n);
	cr_assert_eq(keel_resp_parse(&p, b, n), (int)n);
	cr_assert_eq(p.argl[1], bl);
	keel_resp_parser_free(&p);
	free(b);
}

Test(resp, inline_commands)
{
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, NULL);
	const char *s = "set  k \"a b\\n\\x41\" 'it\\'s'\r\n";
	cr_assert_eq(parse_str(&p, s), (int)strlen(s));
	cr_assert_eq(p.argc, 4);
	expect_arg(&p, 0, "set");
	expect_arg(&p, 1, "k");
	expect_arg(&p, 2, "a b\nA");
	expect_arg(&p, 3, "it's");
	/* LF alone ends a line too, and an empty line is no command */
	cr_assert_eq(parse_str(&p, "PING\n"), 5);
	expect_arg(&p, 0, "PING");
	cr_assert_eq(parse_str(&p, "\r\n"), 2);
	cr_assert_eq(p.argc, 0);
	cr_assert_eq(parse_str(&p, "GET k"), 0);
	cr_assert_eq(p.need, 6);
	cr_assert_eq(parse_str(&p, "GET \"k\r\n"), KEEL_EPROTO);
	cr_assert_str_eq(p.error, "Protocol error: unbalanced quotes in request");
	cr_assert_eq(parse_str(&p, "GET \"k\"x\r\n"), KEEL_EPROTO);
	keel_resp_parser_free(&p);
}

Test(resp, empty_arrays_ignored)
{
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, NULL);
	cr_assert_eq(parse_str(&p, "*0\r\n"), 4);
	cr_assert_eq(p.argc, 0);
	cr_assert_eq(parse_str(&p, "*-1\r\n"), 5);
	cr_assert_eq(p.argc, 0);
	keel_resp_parser_free(&p);
}

Test(resp, limits_and_garbage)
{
	struct keel_resp_limits lim = {.max_bulk = 100, .max_args = 4, .max_inline = 64};
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, &lim);
	cr_assert_eq(parse_str(&p, "*5\r\n"), KEEL_EPROTO);
	cr_assert_str_eq(p.error, "Protocol error: invalid multibulk length");
	cr_assert_eq(parse_str(&p, "*x\r\n"), KEEL_EPROTO);
	cr_assert_str_eq(p.error, "Protocol error: invalid multibulk length");
	cr_assert_eq(parse_str(&p, "*1\r\n$101\r\n"), KEEL_EPROTO);
	cr_assert_str_eq(p.error, "Protocol error: invalid bulk length");
	cr_assert_eq(parse_str(&p, "*1\r\n$-1\r\n"), KEEL_EPROTO);
	cr_assert_eq(parse_str(&p, "*1\r\n$01\r\nx\r\n"), KEEL_EPROTO);
	cr_assert_eq(parse_str(&p, "*1\r\n:1\r\n"), KEEL_EPROTO);
	cr_assert_str_eq(p.error, "Protocol error: expected '$', got ':'");
	cr_assert_eq(parse_str(&p, "*1\r\n$1\r\nxyz"), KEEL_EPROTO);
	cr_assert_eq(parse_str(&p, "*99999999999999999999\r\n"), KEEL_EPROTO);
	char longline[200];
	memset(longline, 'a', sizeof(longline));
	cr_assert_eq(keel_resp_parse(&p, (const uint8_t *)longline, sizeof(longline)), KEEL_EPROTO);
	cr_assert_str_eq(p.error, "Protocol error: too big inline request");
	longline[0] = '*';
	cr_assert_eq(keel_resp_parse(&p, (const uint8_t *)longline, sizeof(longline)), KEEL_EPROTO);
	cr_assert_str_eq(p.error, "Protocol error: too big mbulk count string");
	cr_assert_eq(parse_str(&p, "a b c d e\r\n"), KEEL_EPROTO);
	keel_resp_parser_free(&p);
}

static void expect_reply(struct keel_resp_buf *b, const char *want)
{
	cr_assert(!b->oom);
	cr_assert_eq(b->len, strlen(want), "got %.*s, want %s", (int)b->len, (char *)b->p, want);
	cr_assert(!memcmp(b->p, want, b->len), "got %.*s, want %s", (int)b->len, (char *)b->p, want);
	keel_resp_buf_free(b);
}

Test(resp, reply_shapes_both_protocols)
{
	struct keel_resp_buf b = {0};
	for (int proto = 2; proto <= 3; proto++) {
		keel_resp_simple(&b, "OK");
		expect_reply(&b, "+OK\r\n");
		keel_resp_error(&b, "ERR bad\r\nthing");
		expect_reply(&b, "-ERR bad  thing\r\n");
		keel_resp_errorf(&b, "ERR unknown command '%s'", "foo");
		expect_reply(&b, "-ERR unknown command 'foo'\r\n");
		keel_resp_int(&b, -42);
		expect_reply(&b, ":-42\r\n");
		keel_resp_int(&b, INT64_MIN);
		expect_reply(&b, ":-9223372036854775808\r\n");
		keel_resp_bulk(&b, "a\r\nb", 4);
		expect_reply(&b, "$4\r\na\r\nb\r\n");
		keel_resp_bulk(&b, "", 0);
		expect_reply(&b, "$0\r\n\r\n");
		keel_resp_array(&b, 2);
		keel_resp_bulk_str(&b, "x");
		keel_resp_null(&b, proto);
		expect_reply(&b, proto == 3 ? "*2\r\n$1\r\nx\r\n_\r\n" : "*2\r\n$1\r\nx\r\n$-1\r\n");
		keel_resp_null(&b, proto);
		expect_reply(&b, proto == 3 ? "_\r\n" : "$-1\r\n");
		keel_resp_null_array(&b, proto);
		expect_reply(&b, proto == 3 ? "_\r\n" : "*-1\r\n");
		keel_resp_map(&b, proto, 1);
		keel_resp_bulk_str(&b, "server");
		keel_resp_bulk_str(&b, "keel");
		expect_reply(&b, proto == 3 ? "%1\r\n$6\r\nserver\r\n$4\r\nkeel\r\n"
					    : "*2\r\n$6\r\nserver\r\n$4\r\nkeel\r\n");
		keel_resp_set(&b, proto, 0);
		expect_reply(&b, proto == 3 ? "~0\r\n" : "*0\r\n");
		keel_resp_verbatim(&b, proto, "a:1\r\n", 5);
		expect_reply(&b, proto == 3 ? "=9\r\ntxt:a:1\r\n\r\n" : "$5\r\na:1\r\n\r\n");
	}
}

Test(resp, replies_parse_back)
{
	/* a command encoded with the reply encoder's array and bulk shapes is
	 * what clients send: it parses back to the same arguments */
	struct keel_resp_buf b = {0};
	keel_resp_array(&b, 3);
	keel_resp_bulk_str(&b, "MSET");
	keel_resp_bulk(&b, "\0\1", 2);
	keel_resp_bulk_str(&b, "v");
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, NULL);
	cr_assert_eq(keel_resp_parse(&p, b.p, b.len), (int)b.len);
	cr_assert_eq(p.argc, 3);
	cr_assert_eq(p.argl[1], 2);
	cr_assert(!memcmp(p.argv[1], "\0\1", 2));
	keel_resp_parser_free(&p);
	keel_resp_buf_free(&b);
}

Test(resp, integers_as_redis_reads_them)
{
	long long v;
	cr_assert(keel_resp_ll((const uint8_t *)"0", 1, &v) && v == 0);
	cr_assert(keel_resp_ll((const uint8_t *)"-42", 3, &v) && v == -42);
	cr_assert(keel_resp_ll((const uint8_t *)"9223372036854775807", 19, &v) && v == INT64_MAX);
	cr_assert(keel_resp_ll((const uint8_t *)"-9223372036854775808", 20, &v) && v == INT64_MIN);
	const char *bad[] = {"", "-", "01", "-0", "+1", " 1", "1 ", "9223372036854775808",
			     "-9223372036854775809", "1x", "0x10"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert(!keel_resp_ll((const uint8_t *)bad[i], strlen(bad[i]), &v), "'%s'", bad[i]);
}

Test(resp, hash_tags_choose_the_group)
{
	/* Redis Cluster's rule: the first {...} with something inside */
	uint32_t g = keel_resp_group_of((const uint8_t *)"user1", 5, 64);
	cr_assert_eq(keel_resp_group_of((const uint8_t *)"{user1}.a", 9, 64), g);
	cr_assert_eq(keel_resp_group_of((const uint8_t *)"x{user1}y{z}", 12, 64), g);
	/* "{}" is no tag: the whole key counts */
	cr_assert_eq(keel_resp_group_of((const uint8_t *)"{}a", 3, 64),
		     keel_service_group_of("{}a", 3, 64));
	cr_assert_eq(keel_resp_group_of((const uint8_t *)"a{b", 3, 64),
		     keel_service_group_of("a{b", 3, 64));
}

Test(resp, forwarded_write_frames)
{
	struct keel_resp_fwd f;
	uint8_t req[12] = {1, 7, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc};
	cr_assert_eq(keel_resp_fwd_decode(req, sizeof(req), &f), 0);
	cr_assert_eq(f.kind, 1);
	cr_assert_eq(f.id, 7);
	cr_assert_eq(f.cmd_len, 3);
	cr_assert_eq(f.cmd, req + 9);
	cr_assert_eq(keel_resp_fwd_decode(req, 9, &f), KEEL_EPROTO); /* no command */
	uint8_t res[30] = {2};
	keel_put_le64(res + 1, 9);
	keel_put_le32(res + 9, (uint32_t)KEEL_ENOTLEADER);
	res[13] = 2;
	keel_put_le64(res + 14, 100);
	keel_put_le64(res + 22, 99);
	cr_assert_eq(keel_resp_fwd_decode(res, sizeof(res), &f), 0);
	cr_assert_eq(f.status, KEEL_ENOTLEADER);
	cr_assert_eq(f.kv_status, 2);
	cr_assert_eq(f.rev, 100);
	cr_assert_eq(f.mod_rev, 99);
	cr_assert_eq(keel_resp_fwd_decode(res, 29, &f), KEEL_EPROTO);
	keel_put_le32(res + 9, 5); /* a status is 0 or negative */
	cr_assert_eq(keel_resp_fwd_decode(res, sizeof(res), &f), KEEL_EPROTO);
	res[0] = 3;
	cr_assert_eq(keel_resp_fwd_decode(res, sizeof(res), &f), KEEL_EPROTO);
}
