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

/* ---- rate-limited logging (issue 18) ------------------------------------ */

#include <unistd.h>

/* Runs fn with stderr sent to a temporary file; returns what it wrote
 * (malloc'd, NUL-terminated). */
static char *capture_stderr(void (*fn)(void))
{
	FILE *tmp = tmpfile();
	cr_assert(tmp);
	int saved = dup(STDERR_FILENO);
	cr_assert(saved >= 0);
	cr_assert(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	fn();
	cr_assert(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	long len = (long)lseek(fileno(tmp), 0, SEEK_END);
	char *out = calloc(1, (size_t)len + 1);
	cr_assert(out);
	cr_assert(pread(fileno(tmp), out, (size_t)len, 0) == len);
	fclose(tmp);
	return out;
}

static unsigned count_of(const char *hay, const char *needle)
{
	unsigned n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

static void flood_one_site(void)
{
	keel_log_set_level(KEEL_LOG_INFO);
	for (int i = 0; i < 1000; i++)
		keel_warn_limited("test: refused 127.0.0.2:%d: too many", i);
	/* The window is still open: nothing to report yet. */
	cr_expect_eq(keel_log_flush_suppressed(), 0);
	usleep(1100 * 1000);
	cr_expect_eq(keel_log_flush_suppressed(), 1);
	/* Reported once: a second flush has nothing to say. */
	cr_expect_eq(keel_log_flush_suppressed(), 0);
	keel_warn_limited("test: refused 127.0.0.2:%d: too many", 5000);
}

Test(base, log_site_limits_a_flood_and_reports_what_it_suppressed)
{
	char *out = capture_stderr(flood_one_site);
	/* The first KEEL_LOG_SITE_BURST lines of the second pass, then the
	 * summary of the other 995, then (a new window) the next line, alone:
	 * the count was reported already. */
	cr_expect_eq(count_of(out, "test: refused 127.0.0.2:"), KEEL_LOG_SITE_BURST + 1 + 1,
		     "%s", out);
	cr_expect(strstr(out, "test: refused 127.0.0.2:4: too many"), "%s", out);
	cr_expect(!strstr(out, "test: refused 127.0.0.2:5: too many"), "%s", out);
	cr_expect(strstr(out, "995 similar lines suppressed in the last 1."), "%s", out);
	cr_expect(strstr(out, "\"test: refused 127.0.0.2:%d: too many\""), "%s", out);
	cr_expect(strstr(out, "127.0.0.2:5000: too many\n"), "%s", out);
	cr_expect_eq(count_of(out, "\n"), KEEL_LOG_SITE_BURST + 2, "%s", out);
	free(out);
}

static void two_sites(void)
{
	keel_log_set_level(KEEL_LOG_INFO);
	for (int i = 0; i < 50; i++) {
		keel_warn_limited("test: site A %d", i);
		keel_info_limited("test: site B %d", i);
	}
}

Test(base, log_sites_are_limited_independently)
{
	char *out = capture_stderr(two_sites);
	cr_expect_eq(count_of(out, "test: site A"), KEEL_LOG_SITE_BURST, "%s", out);
	cr_expect_eq(count_of(out, "test: site B"), KEEL_LOG_SITE_BURST, "%s", out);
	free(out);
}

static struct keel_log_limit shared_lim;
static void limited_struct(void)
{
	keel_log_set_level(KEEL_LOG_INFO);
	for (int i = 0; i < 20; i++)
		keel_log_limited(&shared_lim, 3, KEEL_LOG_WARN, "test: struct %d", i);
	usleep(1100 * 1000);
	keel_log_limited(&shared_lim, 3, KEEL_LOG_WARN, "test: struct %d", 99);
	/* keel_log_limited's limiters are not call-site ones: never listed. */
	cr_expect_eq(keel_log_flush_suppressed(), 0);
}

Test(base, log_limited_appends_the_suppressed_count_to_the_next_line)
{
	char *out = capture_stderr(limited_struct);
	cr_expect_eq(count_of(out, "test: struct"), 4, "%s", out);
	cr_expect(strstr(out, "test: struct 99 (17 similar lines suppressed)\n"), "%s", out);
	free(out);
}

static void below_level(void)
{
	keel_log_set_level(KEEL_LOG_ERROR);
	for (int i = 0; i < 50; i++)
		keel_warn_limited("test: hidden %d", i);
	cr_expect_eq(keel_log_flush_suppressed(), 0);
	keel_log_set_level(KEEL_LOG_INFO);
}

Test(base, log_site_below_the_level_counts_nothing)
{
	char *out = capture_stderr(below_level);
	cr_expect_eq(out[0], 0, "%s", out);
	free(out);
}
