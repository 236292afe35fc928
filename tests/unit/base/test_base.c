#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keel/base.h"

Test(base, strerror_names_keel_codes_and_errno)
{
	cr_expect_str_eq(keel_strerror(KEEL_EAUTH), "peer authentication failed");
	cr_expect_str_eq(keel_strerror(-ENOSPC), strerrordesc_np(ENOSPC));
	cr_expect_str_eq(keel_strerror(ENOSPC), strerrordesc_np(ENOSPC));
	cr_expect_str_eq(keel_strerror(0), "success");
	cr_expect_str_eq(keel_strerror(-KEEL_ERR_BASE - 9999), "unknown error");
	cr_expect(KEEL_EFULL < -KEEL_ERR_BASE);
}

Test(base, errmsg_appends_code_text_and_returns_code)
{
	char buf[KEEL_ERRMSG_LEN];
	int rc = keel_errmsg_set(buf, -EIO, "wal: segment %d", 3);
	cr_expect_eq(rc, -EIO);
	cr_expect_str_eq(buf, "wal: segment 3: Input/output error");
	cr_expect_eq(keel_errmsg_set(NULL, KEEL_EPROTO, "x"), KEEL_EPROTO);
}

Test(base, clock_is_monotonic)
{
	uint64_t a = keel_now_ns(), b = keel_now_ns();
	cr_expect_leq(a, b);
}

Test(base, little_endian_helpers_write_least_significant_byte_first)
{
	uint8_t b[8];
	keel_put_le32(b, 0x11223344u);
	cr_expect(b[0] == 0x44 && b[1] == 0x33 && b[2] == 0x22 && b[3] == 0x11);
	cr_expect_eq(keel_get_le32(b), 0x11223344u);
	keel_put_le64(b, 0x0102030405060708ull);
	cr_expect(b[0] == 8 && b[7] == 1);
	cr_expect_eq(keel_get_le64(b), 0x0102030405060708ull);
	keel_put_le16(b + 1, 0xabcd); /* unaligned */
	cr_expect(b[1] == 0xcd && b[2] == 0xab);
	cr_expect_eq(keel_get_le16(b + 1), 0xabcd);
}

Test(base, prng_is_deterministic_and_ranges_are_inclusive)
{
	struct keel_prng a, b;
	keel_prng_seed(&a, 42);
	keel_prng_seed(&b, 42);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(keel_prng_next(&a), keel_prng_next(&b));
	bool lo = false, hi = false;
	for (int i = 0; i < 10000; i++) {
		uint64_t v = keel_prng_range(&a, 3, 5);
		cr_assert(v >= 3 && v <= 5);
		lo |= v == 3;
		hi |= v == 5;
	}
	cr_expect(lo && hi);
	cr_expect_eq(keel_prng_range(&a, 7, 7), 7);
	cr_expect_eq(keel_prng_range(&a, 9, 2), 9);
	/* splitmix64's published first output for seed 0 */
	keel_prng_seed(&a, 0);
	cr_expect_eq(keel_prng_next(&a), 0xe220a8397b1dcdafull);
}

Test(base, crc32c_check_values)
{
	cr_expect_eq(keel_crc32c(0, "123456789", 9), 0xE3069283u);
	cr_expect_eq(keel_crc32c_sw(0, "123456789", 9), 0xE3069283u);
}

static const char *esc(const char *s, size_t len)
{
	static char buf[256];
	size_t n = keel_json_escape(buf, sizeof(buf), s, len);
	cr_assert_lt(n, sizeof(buf));
	cr_assert_eq(strlen(buf), n);
	return buf;
}

Test(base, json_escapes_quotes_backslashes_and_control_characters)
{
	cr_expect_str_eq(esc("q\"x", 3), "\"q\\\"x\"");
	cr_expect_str_eq(esc("a\\b", 3), "\"a\\\\b\"");
	cr_expect_str_eq(esc("l1\nl2\t\r\b\f", 9), "\"l1\\nl2\\t\\r\\b\\f\"");
	cr_expect_str_eq(esc("\x01\x1f\x7f", 3), "\"\\u0001\\u001f\\u007f\"");
	cr_expect_str_eq(esc("nul\0x", 5), "\"nul\\u0000x\"");
	cr_expect_str_eq(esc("", 0), "\"\"");
}

Test(base, json_passes_valid_utf8_and_replaces_invalid_bytes)
{
	cr_expect_str_eq(esc("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14),
			 "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	cr_expect_str_eq(esc("\xff", 1), "\"\\ufffd\"");
	cr_expect_str_eq(esc("\xc3", 1), "\"\\ufffd\"");           /* truncated */
	cr_expect_str_eq(esc("\xc0\xaf", 2), "\"\\ufffd\\ufffd\""); /* overlong '/' */
	cr_expect_str_eq(esc("\xed\xa0\x80", 3), "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate */
	cr_expect_str_eq(esc("\xf4\x90\x80\x80", 4), "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
	cr_expect_str_eq(esc("a\x80z", 3), "\"a\\ufffdz\"");
}

Test(base, json_escape_truncates_and_reports_the_full_length)
{
	char buf[4];
	size_t n = keel_json_escape(buf, sizeof(buf), "abcdef", 6);
	cr_expect_eq(n, 8);
	cr_expect_str_eq(buf, "\"ab");
	char *mem = NULL;
	size_t sz = 0;
	FILE *f = open_memstream(&mem, &sz);
	cr_assert(f);
	cr_expect_eq(keel_json_cstr(f, "x\"y"), 6);
	cr_expect_eq(keel_json_cstr(f, NULL), 4);
	fclose(f);
	cr_expect_str_eq(mem, "\"x\\\"y\"null");
	free(mem);
}

/* The writer (keel_json_*): exact bytes for nesting, commas, every value
 * kind and hostile strings, and errors for calls out of order. */
Test(base, json_writer_builds_exact_text)
{
	char buf[512];
	struct keel_json j;
	keel_json_init_buf(&j, buf, sizeof(buf));
	keel_json_open_obj(&j, NULL);
	keel_json_put_str(&j, "q\"k", "a\"b\\c\n\x01\x7f\xff\xc3\xa9");
	keel_json_put_strn(&j, "nul", "x\0y", 3);
	keel_json_put_str(&j, "none", NULL);
	keel_json_put_u64(&j, "u", UINT64_MAX);
	keel_json_put_i64(&j, "i", INT64_MIN);
	keel_json_put_double(&j, "d", 1.5, 2);
	keel_json_put_double(&j, "nan", 0.0 / 0.0, 2);
	keel_json_put_bool(&j, "t", true);
	keel_json_open_arr(&j, "a");
	keel_json_put_bool(&j, NULL, false);
	keel_json_open_obj(&j, NULL);
	keel_json_close(&j);
	keel_json_open_arr(&j, NULL);
	keel_json_close(&j);
	keel_json_put_null(&j, NULL);
	keel_json_close(&j);
	keel_json_close(&j);
	long n = keel_json_finish(&j, true);
	const char *want = "{\"q\\\"k\":\"a\\\"b\\\\c\\n\\u0001\\u007f\\ufffd\xc3\xa9\","
			   "\"nul\":\"x\\u0000y\",\"none\":null,\"u\":18446744073709551615,"
			   "\"i\":-9223372036854775808,\"d\":1.50,\"nan\":null,\"t\":true,"
			   "\"a\":[false,{},[],null]}\n";
	cr_expect_str_eq(buf, want);
	cr_expect_eq(n, (long)strlen(want));
}

Test(base, json_writer_reports_misuse_and_short_buffers)
{
	char buf[8];
	struct keel_json j;
	keel_json_init_buf(&j, buf, sizeof(buf));
	keel_json_open_obj(&j, NULL);
	keel_json_put_str(&j, "key", "a longer value than fits");
	keel_json_close(&j);
	cr_expect_eq(keel_json_finish(&j, false), -1);
	cr_expect_eq(strlen(buf), 7); /* truncated, still terminated */
	cr_expect_eq(j.len, strlen("{\"key\":\"a longer value than fits\"}"));

	char big[64];
	keel_json_init_buf(&j, big, sizeof(big));
	keel_json_open_arr(&j, NULL);
	keel_json_put_u64(&j, "key-in-array", 1);
	keel_json_close(&j);
	cr_expect_eq(keel_json_finish(&j, false), -1);

	keel_json_init_buf(&j, big, sizeof(big));
	keel_json_open_obj(&j, NULL);
	keel_json_put_u64(&j, NULL, 1); /* a member needs a name */
	keel_json_close(&j);
	cr_expect_eq(keel_json_finish(&j, false), -1);

	keel_json_init_buf(&j, big, sizeof(big));
	keel_json_open_obj(&j, NULL); /* left open */
	cr_expect_eq(keel_json_finish(&j, false), -1);

	keel_json_init_buf(&j, big, sizeof(big));
	keel_json_close(&j); /* nothing to close */
	cr_expect_eq(keel_json_finish(&j, false), -1);

	keel_json_init_buf(&j, big, sizeof(big));
	keel_json_put_u64(&j, NULL, 1);
	keel_json_put_u64(&j, NULL, 2); /* two top values */
	cr_expect_eq(keel_json_finish(&j, false), -1);

	/* a FILE sink */
	char *mem = NULL;
	size_t sz = 0;
	FILE *f = open_memstream(&mem, &sz);
	cr_assert(f);
	keel_json_init_file(&j, f);
	keel_json_open_obj(&j, NULL);
	keel_json_put_str(&j, "p", "q\"x");
	keel_json_close(&j);
	cr_expect_eq(keel_json_finish(&j, true), 13);
	fclose(f);
	cr_expect_str_eq(mem, "{\"p\":\"q\\\"x\"}\n");
	free(mem);
}
