/*
 * services/resp_parse.c — the RESP command parser and reply encoder
 * (keel/resp.h). Pure: no I/O, no clock; the fuzz target drives it.
 *
 * Why it restarts from the first byte of the buffer on every call instead
 * of keeping a state machine: a command's header lines are short and the
 * listener keeps unparsed bytes in one buffer anyway, so a restart costs a
 * scan of the headers only; the body of a big bulk string is never
 * rescanned, because `need` tells the caller to wait until all of it is
 * there. The error texts are Redis's own (networking.c), so a client sees
 * the same words from keel as from redis-server.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/base.h"
#include "keel/resp.h"

#define DEF_MAX_BULK (4u << 20)
#define DEF_MAX_ARGS 65536u
#define DEF_MAX_INLINE (64u << 10)

void keel_resp_parser_init(struct keel_resp_parser *p, const struct keel_resp_limits *lim)
{
	memset(p, 0, sizeof(*p));
	if (lim)
		p->lim = *lim;
	if (!p->lim.max_bulk)
		p->lim.max_bulk = DEF_MAX_BULK;
	if (!p->lim.max_args)
		p->lim.max_args = DEF_MAX_ARGS;
	if (!p->lim.max_inline)
		p->lim.max_inline = DEF_MAX_INLINE;
}

void keel_resp_parser_free(struct keel_resp_parser *p)
{
	free(p->argv);
	free(p->argl);
	free(p->scratch);
	memset(p, 0, sizeof(*p));
}

static int perr(struct keel_resp_parser *p, const char *msg)
{
	snprintf(p->error, sizeof(p->error), "Protocol error: %s", msg);
	return KEEL_EPROTO;
}

static int reserve_args(struct keel_resp_parser *p, uint32_t n)
{
	if (n <= p->cap)
		return 0;
	uint32_t nc = p->cap ? p->cap : 8;
	while (nc < n)
		nc *= 2;
	const uint8_t **av = realloc(p->argv, nc * sizeof(*av));
	if (!av)
		return -ENOMEM;
	p->argv = av;
	size_t *al = realloc(p->argl, nc * sizeof(*al));
	if (!al)
		return -ENOMEM;
	p->argl = al;
	p->cap = nc;
	return 0;
}

/* A decimal as Redis's string2ll takes it: optional '-', digits, no
 * leading zeros (but "0"), no sign on zero, within int64. */
bool keel_resp_ll(const uint8_t *s, size_t n, long long *out)
{
	if (n == 0 || n > 20)
		return false;
	size_t i = 0;
	bool neg = false;
	if (s[0] == '-') {
		neg = true;
		i = 1;
		if (n == 1)
			return false;
	}
	if (s[i] == '0' && n - i > 1)
		return false;
	unsigned long long v = 0;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (9223372036854775808ull - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (!neg && v > 9223372036854775807ull)
		return false;
	if (neg && v == 0)
		return false;
	*out = neg ? -(long long)(v - 1) - 1 : (long long)v;
	return true;
}

/* The end of the line starting at pos ('\r' of "\r\n"), or NULL. */
static const uint8_t *line_end(const uint8_t *buf, size_t len, size_t pos)
{
	const uint8_t *q = pos < len ? memchr(buf + pos, '\r', len - pos) : NULL;
	while (q && (size_t)(q - buf) + 1 < len && q[1] != '\n')
		q = memchr(q + 1, '\r', len - (size_t)(q + 1 - buf));
	if (q && (size_t)(q - buf) + 1 >= len)
		return NULL; /* "\r" last: the "\n" is not here yet */
	return q;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Splits line[0..n) as Redis's sdssplitargs does: words separated by
 * spaces; "double quotes" with \n \r \t \b \a \\ \" and \xHH escapes;
 * 'single quotes' with \'; a closing quote must be followed by a space or
 * the end. */
static int split_inline(struct keel_resp_parser *p, const uint8_t *line, size_t n)
{
	if (n + 1 > p->scratch_cap) {
		uint8_t *s = realloc(p->scratch, n + 1);
		if (!s)
			return -ENOMEM;
		p->scratch = s;
		p->scratch_cap = n + 1;
	}
	uint8_t *out = p->scratch;
	size_t i = 0, o = 0;
	p->argc = 0;
	for (;;) {
		while (i < n && is_space(line[i]))
			i++;
		if (i >= n)
			return 0;
		if (p->argc >= p->lim.max_args)
			return perr(p, "invalid multibulk length");
		int rc = reserve_args(p, p->argc + 1);
		if (rc < 0)
			return rc;
		size_t start = o;
		bool inq = false, insq = false, done = false;
		while (!done) {
			if (inq) {
				if (i >= n)
					return perr(p, "unbalanced quotes in request");
				if (line[i] == '\\' && i + 3 < n && line[i + 1] == 'x' &&
				    hexval(line[i + 2]) >= 0 && hexval(line[i + 3]) >= 0) {
					out[o++] = (uint8_t)(hexval(line[i + 2]) * 16 + hexval(line[i + 3]));
					i += 4;
				} else if (line[i] == '\\' && i + 1 < n) {
					uint8_t c;
					switch (line[++i]) {
					case 'n': c = '\n'; break;
					case 'r': c = '\r'; break;
					case 't': c = '\t'; break;
					case 'b': c = '\b'; break;
					case 'a': c = '\a'; break;
					default: c = line[i]; break;
					}
					out[o++] = c;
					i++;
				} else if (line[i] == '"') {
					if (i + 1 < n && !is_space(line[i + 1]))
						return perr(p, "unbalanced quotes in request");
					done = true;
					i++;
				} else {
					out[o++] = line[i++];
				}
			} else if (insq) {
				if (i >= n)
					return perr(p, "unbalanced quotes in request");
				if (line[i] == '\\' && i + 1 < n && line[i + 1] == '\'') {
					out[o++] = '\'';
					i += 2;
				} else if (line[i] == '\'') {
					if (i + 1 < n && !is_space(line[i + 1]))
						return perr(p, "unbalanced quotes in request");
					done = true;
					i++;
				} else {
					out[o++] = line[i++];
				}
			} else {
				if (i >= n || is_space(line[i])) {
					done = true;
				} else if (line[i] == '"') {
					inq = true;
					i++;
				} else if (line[i] == '\'') {
					insq = true;
					i++;
				} else {
					out[o++] = line[i++];
				}
			}
		}
		p->argv[p->argc] = out + start;
		p->argl[p->argc] = o - start;
		p->argc++;
	}
}

static int parse_inline(struct keel_resp_parser *p, const uint8_t *buf, size_t len)
{
	const uint8_t *nl = memchr(buf, '\n', len);
	if (!nl) {
		if (len > p->lim.max_inline)
			return perr(p, "too big inline request");
		p->need = len + 1;
		return 0;
	}
	size_t n = (size_t)(nl - buf);
	if (n > p->lim.max_inline)
		return perr(p, "too big inline request");
	size_t body = n && buf[n - 1] == '\r' ? n - 1 : n;
	int rc = split_inline(p, buf, body);
	if (rc < 0)
		return rc;
	return (int)(n + 1);
}

/* A "<c><decimal>\r\n" header at *pos: 1 with *v and *pos past it, 0 when
 * incomplete, KEEL_EPROTO. */
static int header(struct keel_resp_parser *p, const uint8_t *buf, size_t len, size_t *pos,
		  long long *v, const char *toolong, const char *invalid)
{
	const uint8_t *e = line_end(buf, len, *pos + 1);
	if (!e) {
		if (len - *pos > p->lim.max_inline)
			return perr(p, toolong);
		p->need = len + 1;
		return 0;
	}
	size_t s = *pos + 1, n = (size_t)(e - buf) - s;
	if (n > p->lim.max_inline)
		return perr(p, toolong);
	if (!keel_resp_ll(buf + s, n, v))
		return perr(p, invalid);
	*pos = (size_t)(e - buf) + 2;
	return 1;
}

int keel_resp_parse(struct keel_resp_parser *p, const uint8_t *buf, size_t len)
{
	p->argc = 0;
	p->need = 0;
	p->error[0] = '\0';
	if (len == 0) {
		p->need = 1;
		return 0;
	}
	/* a command is bounded by what an int can count (the return value) */
	if (len > (size_t)INT32_MAX)
		len = (size_t)INT32_MAX;
	if (buf[0] != '*')
		return parse_inline(p, buf, len);
	size_t pos = 0;
	long long count;
	int rc = header(p, buf, len, &pos, &count, "too big mbulk count string",
			"invalid multibulk length");
	if (rc <= 0)
		return rc;
	if (count > (long long)p->lim.max_args)
		return perr(p, "invalid multibulk length");
	if (count <= 0)
		return (int)pos; /* Redis ignores *0 and *-1 */
	rc = reserve_args(p, (uint32_t)count);
	if (rc < 0)
		return rc;
	for (long long i = 0; i < count; i++) {
		if (pos >= len) {
			p->need = pos + 1;
			p->argc = 0;
			return 0;
		}
		if (buf[pos] != '$') {
			char m[48];
			uint8_t c = buf[pos];
			snprintf(m, sizeof(m), "expected '$', got '%c'", c >= 32 && c < 127 ? c : '?');
			p->argc = 0;
			return perr(p, m);
		}
		long long bl;
		rc = header(p, buf, len, &pos, &bl, "too big bulk count string", "invalid bulk length");
		if (rc <= 0) {
			p->argc = 0;
			return rc;
		}
		if (bl < 0 || (unsigned long long)bl > p->lim.max_bulk) {
			p->argc = 0;
			return perr(p, "invalid bulk length");
		}
		size_t end = pos + (size_t)bl + 2;
		if (end > (size_t)INT32_MAX) {
			p->argc = 0;
			return perr(p, "invalid bulk length");
		}
		if (end > len) {
			p->need = end;
			p->argc = 0;
			return 0;
		}
		if (buf[end - 2] != '\r' || buf[end - 1] != '\n') {
			p->argc = 0;
			return perr(p, "expected CRLF after a bulk string");
		}
		p->argv[i] = buf + pos;
		p->argl[i] = (size_t)bl;
		pos = end;
	}
	p->argc = (uint32_t)count;
	return (int)pos;
}

/* ---- replies ------------------------------------------------------------ */

void keel_resp_buf_free(struct keel_resp_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

void keel_resp_raw(struct keel_resp_buf *b, const void *p, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t nc = b->cap ? b->cap : 256;
		while (nc < b->len + n)
			nc *= 2;
		uint8_t *q = realloc(b->p, nc);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void line(struct keel_resp_buf *b, char type, const char *s, size_t n)
{
	keel_resp_raw(b, &type, 1);
	keel_resp_raw(b, s, n);
	keel_resp_raw(b, "\r\n", 2);
}

static void numline(struct keel_resp_buf *b, char type, long long v)
{
	char t[32];
	int n = snprintf(t, sizeof(t), "%lld", v);
	line(b, type, t, (size_t)n);
}

/* A simple string or error may not hold CR or LF (Redis replaces them
 * too, in addReplyErrorLength), or the reply would split in two. */
static void safe_line(struct keel_resp_buf *b, char type, const char *s)
{
	size_t n = strlen(s);
	if (!memchr(s, '\r', n) && !memchr(s, '\n', n)) {
		line(b, type, s, n);
		return;
	}
	keel_resp_raw(b, &type, 1);
	for (size_t i = 0; i < n; i++)
		keel_resp_raw(b, s[i] == '\r' || s[i] == '\n' ? " " : &s[i], 1);
	keel_resp_raw(b, "\r\n", 2);
}

void keel_resp_simple(struct keel_resp_buf *b, const char *s)
{
	safe_line(b, '+', s);
}

void keel_resp_error(struct keel_resp_buf *b, const char *msg)
{
	safe_line(b, '-', msg);
}

void keel_resp_errorf(struct keel_resp_buf *b, const char *fmt, ...)
{
	char m[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	keel_resp_error(b, m);
}

void keel_resp_int(struct keel_resp_buf *b, int64_t v)
{
	numline(b, ':', (long long)v);
}

void keel_resp_bulk(struct keel_resp_buf *b, const void *p, size_t n)
{
	numline(b, '$', (long long)n);
	keel_resp_raw(b, p, n);
	keel_resp_raw(b, "\r\n", 2);
}

void keel_resp_bulk_str(struct keel_resp_buf *b, const char *s)
{
	keel_resp_bulk(b, s, strlen(s));
}

void keel_resp_null(struct keel_resp_buf *b, int proto)
{
	if (proto >= 3)
		keel_resp_raw(b, "_\r\n", 3);
	else
		keel_resp_raw(b, "$-1\r\n", 5);
}

void keel_resp_null_array(struct keel_resp_buf *b, int proto)
{
	if (proto >= 3)
		keel_resp_raw(b, "_\r\n", 3);
	else
		keel_resp_raw(b, "*-1\r\n", 5);
}

void keel_resp_array(struct keel_resp_buf *b, size_t n)
{
	numline(b, '*', (long long)n);
}

void keel_resp_map(struct keel_resp_buf *b, int proto, size_t n)
{
	if (proto >= 3)
		numline(b, '%', (long long)n);
	else
		numline(b, '*', (long long)(2 * n));
}

void keel_resp_set(struct keel_resp_buf *b, int proto, size_t n)
{
	numline(b, proto >= 3 ? '~' : '*', (long long)n);
}

void keel_resp_verbatim(struct keel_resp_buf *b, int proto, const char *s, size_t n)
{
	if (proto < 3) {
		keel_resp_bulk(b, s, n);
		return;
	}
	numline(b, '=', (long long)(n + 4));
	keel_resp_raw(b, "txt:", 4);
	keel_resp_raw(b, s, n);
	keel_resp_raw(b, "\r\n", 2);
}

/* ---- forwarded writes ------------------------------------------------------ */

int keel_resp_fwd_decode(const uint8_t *buf, size_t len, struct keel_resp_fwd *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 9)
		return KEEL_EPROTO;
	out->kind = buf[0];
	out->id = keel_get_le64(buf + 1);
	if (out->kind == 1) {
		if (len == 9)
			return KEEL_EPROTO;
		out->cmd = buf + 9;
		out->cmd_len = len - 9;
		return 0;
	}
	if (out->kind != 2 || len != 30)
		return KEEL_EPROTO;
	out->status = (int32_t)keel_get_le32(buf + 9);
	out->kv_status = buf[13];
	out->rev = keel_get_le64(buf + 14);
	out->mod_rev = keel_get_le64(buf + 22);
	if (out->status > 0)
		return KEEL_EPROTO;
	return 0;
}
