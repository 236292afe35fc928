/* tests/integration/kv_util.h — small helpers of the C programs that drive
 * a local keel cluster (kv_linear.c, kv_watch.c): a monotonic clock, a
 * shell command, a one-line file. Header-only: each program is one file. */
#ifndef KEEL_TEST_KV_UTIL_H
#define KEEL_TEST_KV_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "keel/base.h"

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Runs a shell command (printf-style); its exit status, 128 if signalled. */
static inline int run(const char *fmt, ...) KEEL_PRINTF(1, 2);
static inline int run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* A file's contents without trailing newlines or spaces; its length, or -1. */
static inline int read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	return (int)n;
}

#endif
