/* JSON string literals (keel/base.h): the one escaper behind every --json
 * output. RFC 8259 §7: '"', '\\' and U+0000..U+001F must be escaped; we
 * also escape DEL. JSON text must be valid Unicode, and names, paths and job
 * output are arbitrary bytes, so a byte that does not start or continue a
 * valid UTF-8 sequence (overlong forms, surrogates and code points above
 * U+10FFFF included, as RFC 3629 forbids them) becomes U+FFFD. */
#include <errno.h>
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

/* A sink: either a FILE or a buffer that counts what it could not hold. */
struct sink {
	FILE *f;
	char *buf;
	size_t cap, len;
	bool err;
};

static void put(struct sink *k, const char *s, size_t n)
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

static void escape(struct sink *k, const void *s, size_t len)
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
	struct sink k = {.f = f};
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
	struct sink k = {.buf = buf, .cap = cap ? cap - 1 : 0};
	escape(&k, s, len);
	if (cap)
		buf[k.len < cap - 1 ? k.len : cap - 1] = 0;
	return k.len;
}
