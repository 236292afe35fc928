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

void keel_log_limited(struct keel_log_limit *l, unsigned burst, enum keel_log_level level,
		      const char *fmt, ...)
{
	if (!KEEL_LOG_ENABLED(level))
		return;
	uint64_t now = keel_now_ns();
	if (now - l->window_start >= 1000000000ull) {
		l->window_start = now;
		l->count = 0;
	}
	if (l->count >= burst) {
		l->suppressed++;
		return;
	}
	l->count++;
	char line[768];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	(void)n;
	if (l->suppressed) {
		keel_log(level, "%s (%u similar lines suppressed)", line, l->suppressed);
		l->suppressed = 0;
	} else {
		keel_log(level, "%s", line);
	}
}
