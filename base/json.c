/* JSON string literals (keel/base.h): the one escaper behind every --json
 * output. RFC 8259 §7: '"', '\\' and U+0000..U+001F must be escaped; we
 * also escape DEL. JSON text must be valid Unicode, and names, paths and job
 * output are arbitrary bytes, so a byte that does not start or continue a
 * valid UTF-8 sequence (overlong forms, surrogates and code points above
 * U+10FFFF included, as RFC 3629 forbids them) becomes U+FFFD. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "keel/base.h"

/* Length of the valid UTF-8 sequence at p (avail bytes), or 0. */
static size_t utf8_len(const uint8_t *p, size_t avail)
{
	uint8_t c = p[0];
	size_t n;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* The writer is the sink too: a FILE, or a buffer that counts what it
 * could not hold. */
static void put(struct keel_json *k, const char *s, size_t n)
{
	if (k->f) {
		if (!k->err && fwrite(s, 1, n, k->f) != n)
			k->err = true;
	} else if (k->len < k->cap) {
		size_t room = k->cap - k->len;
		memcpy(k->buf + k->len, s, n < room ? n : room);
	}
	k->len += n;
}

static void escape(struct keel_json *k, const void *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = s;
	put(k, "\"", 1);
	size_t i = 0;
	while (i < len) {
		/* the longest run that needs no escaping goes out in one piece */
		size_t j = i;
		while (j < len && p[j] >= 0x20 && p[j] < 0x7f && p[j] != '"' && p[j] != '\\')
			j++;
		if (j > i) {
			put(k, (const char *)p + i, j - i);
			i = j;
			continue;
		}
		uint8_t c = p[i];
		char e[6];
		switch (c) {
		case '"': put(k, "\\\"", 2); i++; continue;
		case '\\': put(k, "\\\\", 2); i++; continue;
		case '\n': put(k, "\\n", 2); i++; continue;
		case '\r': put(k, "\\r", 2); i++; continue;
		case '\t': put(k, "\\t", 2); i++; continue;
		case '\b': put(k, "\\b", 2); i++; continue;
		case '\f': put(k, "\\f", 2); i++; continue;
		default: break;
		}
		if (c < 0x20 || c == 0x7f) {
			memcpy(e, "\\u00", 4);
			e[4] = hex[c >> 4];
			e[5] = hex[c & 15];
			put(k, e, 6);
			i++;
			continue;
		}
		size_t n = utf8_len(p + i, len - i);
		if (n) {
			put(k, (const char *)p + i, n);
			i += n;
		} else {
			put(k, "\\ufffd", 6);
			i++;
		}
	}
	put(k, "\"", 1);
}

int keel_json_str(FILE *f, const void *s, size_t len)
{
	struct keel_json k = {.f = f};
	escape(&k, s, len);
	if (k.err)
		return -1;
	return k.len > (size_t)INT32_MAX ? INT32_MAX : (int)k.len;
}

int keel_json_cstr(FILE *f, const char *s)
{
	if (!s)
		return fputs("null", f) < 0 ? -1 : 4;
	return keel_json_str(f, s, strlen(s));
}

size_t keel_json_escape(char *buf, size_t cap, const void *s, size_t len)
{
	struct keel_json k = {.buf = buf, .cap = cap ? cap - 1 : 0};
	escape(&k, s, len);
	if (cap)
		buf[k.len < cap - 1 ? k.len : cap - 1] = 0;
	return k.len;
}

/* ---- the writer ---------------------------------------------------------- */

void keel_json_init_file(struct keel_json *j, FILE *f)
{
	memset(j, 0, sizeof(*j));
	j->f = f;
}

void keel_json_init_buf(struct keel_json *j, char *buf, size_t cap)
{
	memset(j, 0, sizeof(*j));
	j->buf = cap ? buf : NULL;
	j->cap = cap ? cap - 1 : 0; /* room for the NUL finish writes */
	if (cap)
		buf[0] = '\0';
}

/* Before a value: the comma and the member name; false (and the error
 * set) when the key does not fit where the value goes. */
static bool before(struct keel_json *j, const char *key)
{
	if (j->depth == 0) {
		if (key || j->members & 1u) { /* one top value only */
			j->err = true;
			return false;
		}
		j->members |= 1u;
		return true;
	}
	uint32_t bit = 1u << j->depth;
	bool in_arr = j->arr & bit;
	if (in_arr != !key) {
		j->err = true;
		return false;
	}
	if (j->members & bit)
		put(j, ",", 1);
	j->members |= bit;
	if (key) {
		escape(j, key, strlen(key));
		put(j, ":", 1);
	}
	return true;
}

static void open_c(struct keel_json *j, const char *key, bool arr)
{
	if (j->depth + 1 >= KEEL_JSON_MAX_DEPTH) {
		j->err = true;
		return;
	}
	if (!before(j, key))
		return;
	j->depth++;
	uint32_t bit = 1u << j->depth;
	j->members &= ~bit;
	if (arr)
		j->arr |= bit;
	else
		j->arr &= ~bit;
	put(j, arr ? "[" : "{", 1);
}

void keel_json_open_obj(struct keel_json *j, const char *key)
{
	open_c(j, key, false);
}

void keel_json_open_arr(struct keel_json *j, const char *key)
{
	open_c(j, key, true);
}

void keel_json_close(struct keel_json *j)
{
	if (j->depth == 0) {
		j->err = true;
		return;
	}
	put(j, j->arr & (1u << j->depth) ? "]" : "}", 1);
	j->depth--;
}

void keel_json_put_strn(struct keel_json *j, const char *key, const void *s, size_t len)
{
	if (before(j, key))
		escape(j, s, len);
}

void keel_json_put_str(struct keel_json *j, const char *key, const char *s)
{
	if (!s)
		keel_json_put_null(j, key);
	else
		keel_json_put_strn(j, key, s, strlen(s));
}

static void put_fmt(struct keel_json *j, const char *key, const char *fmt, ...) KEEL_PRINTF(3, 4);
static void put_fmt(struct keel_json *j, const char *key, const char *fmt, ...)
{
	char b[64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(b)) {
		j->err = true;
		return;
	}
	if (before(j, key))
		put(j, b, (size_t)n);
}

void keel_json_put_u64(struct keel_json *j, const char *key, uint64_t v)
{
	put_fmt(j, key, "%llu", (unsigned long long)v);
}

void keel_json_put_i64(struct keel_json *j, const char *key, int64_t v)
{
	put_fmt(j, key, "%lld", (long long)v);
}

void keel_json_put_double(struct keel_json *j, const char *key, double v, int decimals)
{
	if (!isfinite(v)) {
		keel_json_put_null(j, key);
		return;
	}
	if (decimals < 0 || decimals > 9)
		decimals = 3;
	/* %.*f of a huge value is long but finite: 64 bytes hold 1e53 */
	if (fabs(v) >= 1e50)
		put_fmt(j, key, "%.*e", decimals, v);
	else
		put_fmt(j, key, "%.*f", decimals, v);
}

void keel_json_put_bool(struct keel_json *j, const char *key, bool v)
{
	if (before(j, key))
		put(j, v ? "true" : "false", v ? 4 : 5);
}

void keel_json_put_null(struct keel_json *j, const char *key)
{
	if (before(j, key))
		put(j, "null", 4);
}

long keel_json_finish(struct keel_json *j, bool newline)
{
	if (j->depth || !(j->members & 1u))
		j->err = true;
	if (newline)
		put(j, "\n", 1);
	if (j->f) {
		if (fflush(j->f) != 0)
			j->err = true;
	} else {
		if (j->buf)
			j->buf[j->len < j->cap ? j->len : j->cap] = '\0';
		if (j->len > j->cap)
			j->err = true;
	}
	if (j->err)
		return -1;
	return j->len > (size_t)LONG_MAX ? LONG_MAX : (long)j->len;
}
