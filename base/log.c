/* Levelled logging to stderr, one line per event with a node/shard prefix.
 * Each line is formatted into a local buffer and written with one write(2),
 * so lines from different shard threads never interleave mid-line. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "keel/base.h"

static _Atomic int log_level = KEEL_LOG_INFO;
static _Atomic int log_node = -1;
static _Thread_local int log_shard = -1;

void keel_log_set_level(enum keel_log_level level) { log_level = (int)level; }
enum keel_log_level keel_log_get_level(void) { return (enum keel_log_level)log_level; }
void keel_log_set_node(int node_id) { log_node = node_id; }
void keel_log_set_shard(int shard_id) { log_shard = shard_id; }

void keel_log_init_from_env(void)
{
	const char *v = getenv("KEEL_LOG");
	if (!v)
		return;
	static const char *names[] = {"debug", "info", "warn", "error", "off"};
	for (int i = 0; i < (int)KEEL_ARRAY_LEN(names); i++)
		if (strcasecmp(v, names[i]) == 0)
			log_level = i;
}

uint64_t keel_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void keel_vlog(enum keel_log_level level, const char *fmt, va_list ap)
{
	if ((int)level < log_level)
		return;
	static const char *tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	char who[32];
	int node = log_node;
	if (node >= 0 && log_shard >= 0)
		snprintf(who, sizeof(who), "n%d/s%d", node, log_shard);
	else if (node >= 0)
		snprintf(who, sizeof(who), "n%d/-", node);
	else if (log_shard >= 0)
		snprintf(who, sizeof(who), "-/s%d", log_shard);
	else
		snprintf(who, sizeof(who), "-");
	n += snprintf(line + n, sizeof(line) - (size_t)n, ".%06ldZ %s %s ",
		      ts.tv_nsec / 1000, tags[level > KEEL_LOG_ERROR ? KEEL_LOG_ERROR : level], who);
	if (n < (int)sizeof(line) - 1) {
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		n = (m < 0) ? n : (n + m >= (int)sizeof(line) - 1 ? (int)sizeof(line) - 2 : n + m);
	}
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

void keel_log(enum keel_log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	keel_vlog(level, fmt, ap);
	va_end(ap);
}

/* One window of one second per limiter. Returns true when the line may
 * pass; *suppressed is then the count to report with it (and is cleared). */
static bool limit_pass(struct keel_log_limit *l, unsigned burst, uint32_t *suppressed)
{
	uint64_t now = keel_now_ns();
	if (now - l->window_start >= 1000000000ull) {
		l->window_start = now;
		l->count = 0;
	}
	if (l->count >= burst) {
		l->suppressed++;
		return false;
	}
	l->count++;
	*suppressed = l->suppressed;
	l->suppressed = 0;
	return true;
}

static void emit(enum keel_log_level level, uint32_t suppressed, const char *fmt, va_list ap)
{
	char line[768];
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	(void)n;
	if (suppressed)
		keel_log(level, "%s (%u similar lines suppressed)", line, suppressed);
	else
		keel_log(level, "%s", line);
}

void keel_log_limited(struct keel_log_limit *l, unsigned burst, enum keel_log_level level,
		      const char *fmt, ...)
{
	if (!KEEL_LOG_ENABLED(level))
		return;
	uint32_t sup;
	if (!limit_pass(l, burst, &sup))
		return;
	va_list ap;
	va_start(ap, fmt);
	emit(level, sup, fmt, ap);
	va_end(ap);
}

/* This thread's call-site limiters that have suppressed lines since their
 * last report; each points to thread-local storage of this same thread. */
static _Thread_local struct keel_log_limit *suppressors;
static _Atomic unsigned site_burst = KEEL_LOG_SITE_BURST;

void keel_log_set_site_burst(unsigned burst) { site_burst = burst; }

void keel_log_site(struct keel_log_limit *l, enum keel_log_level level, const char *fmt, ...)
{
	if (!KEEL_LOG_ENABLED(level))
		return;
	uint32_t sup;
	if (!limit_pass(l, site_burst, &sup)) {
		if (!l->listed) {
			l->key = fmt;
			l->level = (int)level;
			l->listed = true;
			l->next = suppressors;
			suppressors = l;
		}
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	emit(level, sup, fmt, ap);
	va_end(ap);
}

unsigned keel_log_flush_suppressed(void)
{
	if (!suppressors)
		return 0;
	uint64_t now = keel_now_ns();
	unsigned n = 0;
	struct keel_log_limit **pp = &suppressors;
	while (*pp) {
		struct keel_log_limit *l = *pp;
		uint64_t age = now - l->window_start;
		if (l->suppressed && age < 1000000000ull) {
			pp = &l->next; /* its window is still open: later */
			continue;
		}
		if (l->suppressed) {
			keel_log((enum keel_log_level)l->level,
				 "%u similar lines suppressed in the last %.1f s: \"%s\"",
				 l->suppressed, (double)age / 1e9, l->key);
			n++;
			l->suppressed = 0;
			/* A new window: the next occurrence passes, without a
			 * count already reported here. */
			l->window_start = now;
			l->count = 0;
		}
		*pp = l->next;
		l->listed = false;
		l->next = NULL;
	}
	return n;
}
