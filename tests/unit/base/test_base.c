#include <criterion/criterion.h>
#include <errno.h>
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
