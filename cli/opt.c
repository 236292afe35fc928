/* The option parser (cli/opt.h). Our own loop rather than getopt_long:
 * getopt keeps global state (optind, and glibc's hidden reset rule), takes
 * abbreviations of long names, and its messages differ from ours; a table
 * walk is shorter than the code that worked around those. */
#include "cli/opt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "KEEL_OPT_U32 writes unsigned fields");

#define MAX_OPTS 64 /* per command; keel_opt_parse asserts it */

static const struct keel_opt no_opts[] = {{0}};

static bool takes_value(const struct keel_opt *o)
{
	return o->kind != KEEL_OPT_FLAG;
}

static uint64_t kind_max(const struct keel_opt *o)
{
	if (o->max)
		return o->max;
	return o->kind == KEEL_OPT_U32 ? UINT32_MAX : UINT64_MAX;
}

/* ---- values -------------------------------------------------------------- */

/* errmsg gets the message alone (keel_errmsg_set would append the code's
 * text to a message that already says it all). */
static int say(char *errmsg, int code, const char *fmt, ...) KEEL_PRINTF(3, 4);
static int say(char *errmsg, int code, const char *fmt, ...)
{
	if (errmsg) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(errmsg, KEEL_ERRMSG_LEN, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* Leading decimal digits of s: 0 and *v, or -ERANGE past UINT64_MAX, or
 * -EINVAL when s does not start with a digit. *end is past the digits. */
static int digits(const char *s, const char **end, uint64_t *v)
{
	uint64_t x = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	bool over = false;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (x > (UINT64_MAX - d) / 10)
			over = true;
		else
			x = x * 10 + d;
	}
	*end = p;
	*v = x;
	return over ? -ERANGE : 0;
}

static void fmt_size(char *b, size_t n, uint64_t v)
{
	static const char units[] = "KMGT";
	int u = -1;
	while (u < 3 && v && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(b, n, "%llu", (unsigned long long)v);
	else
		snprintf(b, n, "%llu%c", (unsigned long long)v, units[u]);
}

static void fmt_ms(char *b, size_t n, uint64_t v)
{
	if (v == 0)
		snprintf(b, n, "0");
	else if (v % 3600000 == 0)
		snprintf(b, n, "%lluh", (unsigned long long)(v / 3600000));
	else if (v % 60000 == 0)
		snprintf(b, n, "%llum", (unsigned long long)(v / 60000));
	else if (v % 1000 == 0)
		snprintf(b, n, "%llus", (unsigned long long)(v / 1000));
	else
		snprintf(b, n, "%llums", (unsigned long long)v);
}

static void fmt_value(const struct keel_opt *o, char *b, size_t n, uint64_t v)
{
	if (o->kind == KEEL_OPT_SIZE)
		fmt_size(b, n, v);
	else if (o->kind == KEEL_OPT_MS)
		fmt_ms(b, n, v);
	else
		snprintf(b, n, "%llu", (unsigned long long)v);
}

static void fmt_range(const struct keel_opt *o, char *b, size_t n)
{
	char lo[32], hi[32];
	fmt_value(o, lo, sizeof(lo), o->min);
	fmt_value(o, hi, sizeof(hi), kind_max(o));
	snprintf(b, n, "%s..%s", lo, hi);
}

/* A unit suffix: its multiplier, or 0 if s is not one of ours. */
static uint64_t suffix(const struct keel_opt *o, const char *s)
{
	if (!*s)
		return 1;
	if (o->kind == KEEL_OPT_SIZE && !s[1]) {
		switch (*s) {
		case 'K': case 'k': return 1ull << 10;
		case 'M': case 'm': return 1ull << 20;
		case 'G': case 'g': return 1ull << 30;
		case 'T': case 't': return 1ull << 40;
		default: return 0;
		}
	}
	if (o->kind == KEEL_OPT_MS) {
		if (!strcmp(s, "ms"))
			return 1;
		if (!strcmp(s, "s"))
			return 1000;
		if (!strcmp(s, "m"))
			return 60000;
		if (!strcmp(s, "h"))
			return 3600000;
	}
	return 0;
}

static int number(const struct keel_opt *o, const char *value, uint64_t *out, char *errmsg)
{
	const char *what = o->kind == KEEL_OPT_SIZE ? "a size"
			   : o->kind == KEEL_OPT_MS ? "a duration"
						     : "a number";
	const char *hint = o->kind == KEEL_OPT_SIZE ? "; suffixes K, M, G, T"
			   : o->kind == KEEL_OPT_MS ? "; a bare number is ms, or use s, m, h"
						     : "";
	char range[80];
	fmt_range(o, range, sizeof(range));
	const char *s = value;
	bool negative = false;
	if (*s == '-' && s[1] >= '0' && s[1] <= '9') {
		negative = true; /* a number, but below any range we have */
		s++;
	}
	const char *end;
	uint64_t v;
	int rc = digits(s, &end, &v);
	uint64_t mul = rc == -EINVAL ? 0 : suffix(o, end);
	if (rc == -EINVAL || !mul)
		return say(errmsg, KEEL_EBADINPUT, "--%s: '%s' is not %s (expected %s%s)",
			   o->name, value, what, range, hint);
	if (rc == -ERANGE || negative || (mul > 1 && v > UINT64_MAX / mul) ||
	    v * mul < o->min || v * mul > kind_max(o))
		return say(errmsg, KEEL_EBADINPUT,
			   "--%s: '%s' is out of range (expected %s%s)", o->name, value,
			   range, hint);
	*out = v * mul;
	return 0;
}

int keel_opt_value(const struct keel_opt *o, const char *value, char *errmsg)
{
	uint64_t v;
	int rc;
	switch (o->kind) {
	case KEEL_OPT_FLAG:
		*(bool *)o->out = true;
		return 0;
	case KEEL_OPT_STR:
		*(const char **)o->out = value;
		return 0;
	case KEEL_OPT_LIST: {
		struct keel_opt_list *l = o->out;
		if (l->n == l->cap) {
			size_t cap = l->cap ? 2 * l->cap : 8;
			const char **nv = realloc(l->v, cap * sizeof(*nv));
			if (!nv)
				return say(errmsg, -ENOMEM, "--%s: out of memory", o->name);
			l->v = nv;
			l->cap = cap;
		}
		l->v[l->n++] = value;
		return 0;
	}
	case KEEL_OPT_U32:
		if ((rc = number(o, value, &v, errmsg)))
			return rc;
		*(uint32_t *)o->out = (uint32_t)v;
		return 0;
	case KEEL_OPT_U64:
	case KEEL_OPT_SIZE:
	case KEEL_OPT_MS:
		if ((rc = number(o, value, &v, errmsg)))
			return rc;
		*(uint64_t *)o->out = v;
		return 0;
	}
	return say(errmsg, -EINVAL, "--%s: unknown option kind", o->name);
}

void keel_opt_list_free(struct keel_opt_list *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* ---- help ---------------------------------------------------------------- */

static size_t left_col(const struct keel_opt *o, char *b, size_t n)
{
	int len;
	if (o->short_name)
		len = snprintf(b, n, "  -%c, --%s", o->short_name, o->name);
	else
		len = snprintf(b, n, "      --%s", o->name);
	if (takes_value(o) && len >= 0 && (size_t)len < n)
		len += snprintf(b + len, n - (size_t)len, " %s", o->arg ? o->arg : "VALUE");
	return len < 0 ? 0 : (size_t)len;
}

/* "(1..64, default 4)", "(required)", "(default: tcp)" or "". */
static void extras(const struct keel_opt *o, char *b, size_t n)
{
	char range[80] = "", def[160] = "";
	bool numeric = o->kind == KEEL_OPT_U32 || o->kind == KEEL_OPT_U64 ||
		       o->kind == KEEL_OPT_SIZE || o->kind == KEEL_OPT_MS;
	if (numeric && (o->min != 0 || o->max != 0))
		fmt_range(o, range, sizeof(range));
	if (o->def) {
		snprintf(def, sizeof(def), "%s", o->def);
	} else if (numeric && o->out) {
		uint64_t v = o->kind == KEEL_OPT_U32 ? *(const uint32_t *)o->out
						     : *(const uint64_t *)o->out;
		if (v >= o->min && v <= kind_max(o))
			fmt_value(o, def, sizeof(def), v);
	} else if (o->kind == KEEL_OPT_STR && o->out && *(const char *const *)o->out) {
		snprintf(def, sizeof(def), "%s", *(const char *const *)o->out);
	}
	const char *req = o->flags & KEEL_OPT_REQUIRED ? "required" : "";
	if (!range[0] && !def[0] && !req[0]) {
		b[0] = '\0';
		return;
	}
	snprintf(b, n, " (%s%s%s%s%s%s)", req, req[0] && (range[0] || def[0]) ? ", " : "", range,
		 range[0] && def[0] ? ", " : "", def[0] ? "default " : "", def);
}

static void print_wrapped(FILE *f, const char *text, size_t indent)
{
	for (const char *p = text; *p; p++) {
		fputc(*p, f);
		if (*p == '\n')
			fprintf(f, "%*s", (int)indent, "");
	}
}

void keel_opt_help(const struct keel_cmd_spec *cmd, FILE *f)
{
	const struct keel_opt *opts = cmd->opts ? cmd->opts : no_opts;
	fprintf(f, "usage: keel %s%s%s\n", cmd->name, cmd->synopsis ? " " : "",
		cmd->synopsis ? cmd->synopsis : "");
	if (cmd->about) {
		fputs(cmd->about, f);
		if (cmd->about[0] && cmd->about[strlen(cmd->about) - 1] != '\n')
			fputc('\n', f);
	}
	/* The help column starts after the longest option (at most 30 wide;
	 * a longer one puts its help on the next line). */
	size_t width = 12;
	char left[128];
	for (const struct keel_opt *o = opts; o->name; o++) {
		size_t len = left_col(o, left, sizeof(left));
		if (!(o->flags & KEEL_OPT_HIDDEN) && len > width && len <= 30)
			width = len;
	}
	fprintf(f, "\noptions:\n");
	for (const struct keel_opt *o = opts; o->name; o++) {
		if (o->flags & KEEL_OPT_HIDDEN)
			continue;
		size_t len = left_col(o, left, sizeof(left));
		fputs(left, f);
		if (len > width)
			fprintf(f, "\n%*s", (int)(width + 2), "");
		else
			fprintf(f, "%*s", (int)(width + 2 - len), "");
		const char *help = o->help ? o->help : "";
		print_wrapped(f, help, width + 2);
		/* the range and default go after the help, or on a line of their
		 * own when that would pass 79 columns */
		char ex[256];
		extras(o, ex, sizeof(ex));
		const char *last = strrchr(help, '\n');
		size_t col = width + 2 + strlen(last ? last + 1 : help);
		if (ex[0] && col + strlen(ex) > 79)
			fprintf(f, "\n%*s%s\n", (int)(width + 2), "", ex + 1);
		else
			fprintf(f, "%s\n", ex);
	}
	fprintf(f, "  -h, --help%*sprint this help and exit\n", (int)(width + 2 - 12), "");
	if (cmd->epilog) {
		fputc('\n', f);
		fputs(cmd->epilog, f);
		if (cmd->epilog[0] && cmd->epilog[strlen(cmd->epilog) - 1] != '\n')
			fputc('\n', f);
	}
}

/* ---- parsing ------------------------------------------------------------- */

static int usage_error(const struct keel_cmd_spec *cmd, const char *msg)
{
	fprintf(stderr, "keel %s: %s\ntry 'keel %s --help'\n", cmd->name, msg, cmd->name);
	return 2;
}

int keel_opt_usage(const struct keel_cmd_spec *cmd, const char *fmt, ...)
{
	char msg[KEEL_ERRMSG_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return usage_error(cmd, msg);
}

/* The option arg names ("--count", "--count=5", "-n", "-n5"), or NULL; *inl
 * is the value written in the same argument, or NULL. */
static const struct keel_opt *lookup(const struct keel_opt *opts, const char *arg,
				     const char **inl)
{
	*inl = NULL;
	if (arg[0] == '-' && arg[1] == '-') {
		const char *name = arg + 2;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		for (const struct keel_opt *o = opts; o->name; o++) {
			if (strlen(o->name) == len && !memcmp(o->name, name, len)) {
				*inl = eq ? eq + 1 : NULL;
				return o;
			}
		}
		return NULL;
	}
	for (const struct keel_opt *o = opts; o->name; o++) {
		if (o->short_name && o->short_name == arg[1]) {
			*inl = arg[2] ? arg + 2 : NULL;
			return o;
		}
	}
	return NULL;
}

static bool is_option(const char *a)
{
	return a[0] == '-' && a[1] != '\0'; /* "-" alone is an argument (stdin) */
}

/* A value cannot look like a long option: `--config --to 2` is a missing
 * value, not a file named "--to" (write --config=--to for that). */
static bool looks_like_long_option(const char *a)
{
	return a[0] == '-' && a[1] == '-' && a[2] != '\0';
}

int keel_opt_parse(const struct keel_cmd_spec *cmd, int argc, char **argv, int *nargs)
{
	const struct keel_opt *opts = cmd->opts ? cmd->opts : no_opts;
	size_t nopts = 0;
	while (opts[nopts].name)
		nopts++;
	if (nopts > MAX_OPTS) {
		fprintf(stderr, "keel %s: more than %d options in its table\n", cmd->name, MAX_OPTS);
		return 2;
	}
	if (nargs)
		*nargs = 0;
	/* --help first, wherever it is, so that the defaults it shows are the
	 * table's and not what earlier options changed. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *inl;
		if (!strcmp(a, "--"))
			break;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			keel_opt_help(cmd, stdout);
			return 0;
		}
		if (!is_option(a))
			continue;
		const struct keel_opt *o = lookup(opts, a, &inl);
		if (o && takes_value(o) && !inl && i + 1 < argc && !looks_like_long_option(argv[i + 1]))
			i++; /* its value */
	}
	bool given[MAX_OPTS] = {false};
	int npos = 0;
	bool only_args = false;
	char msg[KEEL_ERRMSG_LEN];
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *inl;
		if (only_args || !is_option(a)) {
			argv[1 + npos++] = argv[i]; /* never ahead of i: safe in place */
			continue;
		}
		if (!strcmp(a, "--")) {
			only_args = true;
			continue;
		}
		const struct keel_opt *o = lookup(opts, a, &inl);
		if (!o && !strncmp(a, "--help=", 7)) {
			snprintf(msg, sizeof(msg), "--help takes no value");
			return usage_error(cmd, msg);
		}
		if (!o) {
			char shown[64];
			size_t l = strcspn(a, "=");
			snprintf(shown, sizeof(shown), "%.*s", (int)(l < 60 ? l : 60), a);
			snprintf(msg, sizeof(msg), "unknown option '%s'", shown);
			return usage_error(cmd, msg);
		}
		const char *value = NULL;
		if (!takes_value(o)) {
			if (a[1] != '-' && a[2]) { /* "-fx": no clusters of flags */
				snprintf(msg, sizeof(msg), "unknown option '%.60s' (-%c takes no value)",
					 a, o->short_name);
				return usage_error(cmd, msg);
			}
			if (inl) {
				snprintf(msg, sizeof(msg), "--%s takes no value", o->name);
				return usage_error(cmd, msg);
			}
		} else if (inl) {
			value = inl;
		} else if (i + 1 < argc && !looks_like_long_option(argv[i + 1])) {
			value = argv[++i];
		} else {
			snprintf(msg, sizeof(msg), "--%s needs a value (%s)", o->name,
				 o->arg ? o->arg : "VALUE");
			return usage_error(cmd, msg);
		}
		if (keel_opt_value(o, value, msg) < 0)
			return usage_error(cmd, msg);
		given[o - opts] = true;
	}
	for (size_t k = 0; k < nopts; k++) {
		if ((opts[k].flags & KEEL_OPT_REQUIRED) && !given[k]) {
			if (takes_value(&opts[k]))
				snprintf(msg, sizeof(msg), "--%s %s is required", opts[k].name,
					 opts[k].arg ? opts[k].arg : "VALUE");
			else
				snprintf(msg, sizeof(msg), "--%s is required", opts[k].name);
			return usage_error(cmd, msg);
		}
	}
	if ((unsigned)npos < cmd->min_args) {
		snprintf(msg, sizeof(msg), "missing %s", cmd->args_name ? cmd->args_name : "argument");
		return usage_error(cmd, msg);
	}
	if ((unsigned)npos > cmd->max_args) {
		snprintf(msg, sizeof(msg), "unexpected argument '%.200s'", argv[1 + cmd->max_args]);
		return usage_error(cmd, msg);
	}
	if (nargs)
		*nargs = npos;
	return KEEL_OPT_RUN;
}
