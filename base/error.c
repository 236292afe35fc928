/* keel_strerror and context messages; the table lives in keel/base.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "keel/base.h"

const char *keel_strerror(int err)
{
	switch (err) {
#define KEEL_ERR_CASE(name, n, text)                                          \
	case name:                                                            \
		return text;
		KEEL_ERRORS(KEEL_ERR_CASE)
#undef KEEL_ERR_CASE
	default:
		break;
	}
	if (err == 0)
		return "success";
	if (err < 0 && err > -KEEL_ERR_BASE)
		err = -err;
	if (err > 0 && err < KEEL_ERR_BASE) {
		/* strerror() is not thread-safe in general, but glibc returns a
		 * pointer into a static table for every known errno; unknown
		 * ones are caught below. */
		const char *s = strerrordesc_np(err);
		if (s)
			return s;
	}
	return "unknown error";
}

int keel_errmsg_set(char *buf, int code, const char *fmt, ...)
{
	if (!buf)
		return code;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, KEEL_ERRMSG_LEN, fmt, ap);
	va_end(ap);
	if (n >= 0 && n < KEEL_ERRMSG_LEN && code < 0)
		snprintf(buf + n, (size_t)(KEEL_ERRMSG_LEN - n), ": %s",
			 keel_strerror(code));
	return code;
}
