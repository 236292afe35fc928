/* A Redis client library (hiredis) against a RESP server, for resp.sh.
 *
 *   resp-hiredis session HOST PORT
 *     a scripted session (a pipeline of 200 SETs and GETs, binary values
 *     with NUL and CRLF, a 600 KB value, NX/XX/GET, MSET/MGET on one hash
 *     tag, DEL of several keys, errors) printing every reply in one
 *     canonical line, so resp.sh diffs keel's replies against
 *     redis-server's.
 *   resp-hiredis acks HOST:PORT[,HOST:PORT...] SECONDS OUT
 *     SETs distinct keys (ack-0, ack-1, ...) for SECONDS, reconnecting
 *     (to the next address) after an error, and appends each key whose
 *     SET was acknowledged with +OK to OUT, one a line, as it comes: the
 *     kill -9 test reads every one back afterwards.
 */
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void show(const redisReply *r, int depth)
{
	if (!r) {
		printf("(connection error)\n");
		return;
	}
	printf("%*s", depth * 2, "");
	switch (r->type) {
	case REDIS_REPLY_STATUS:
		printf("+%s\n", r->str);
		break;
	case REDIS_REPLY_ERROR:
		printf("-%s\n", r->str);
		break;
	case REDIS_REPLY_INTEGER:
		printf(":%lld\n", r->integer);
		break;
	case REDIS_REPLY_NIL:
		printf("(nil)\n");
		break;
	case REDIS_REPLY_STRING:
		printf("$%zu ", r->len);
		for (size_t i = 0; i < r->len && i < 64; i++) {
			unsigned char c = (unsigned char)r->str[i];
			if (c >= 32 && c < 127 && c != '\\')
				putchar(c);
			else
				printf("\\x%02x", c);
		}
		printf("%s\n", r->len > 64 ? "..." : "");
		break;
	case REDIS_REPLY_ARRAY:
		printf("*%zu\n", r->elements);
		for (size_t i = 0; i < r->elements; i++)
			show(r->element[i], depth + 1);
		break;
	default:
		printf("?type %d\n", r->type);
	}
}

static void run(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	show(r, 0);
	if (r)
		freeReplyObject(r);
}

static int session(const char *host, int port)
{
	redisContext *c = redisConnect(host, port);
	if (!c || c->err) {
		fprintf(stderr, "resp-hiredis: connect %s:%d: %s\n", host, port, c ? c->errstr : "?");
		return 1;
	}
	run(c, "PING");
	run(c, "SET hk:a %s", "alpha");
	run(c, "GET hk:a");
	run(c, "SET hk:bin %b", "a\0b\r\nc", (size_t)7);
	run(c, "GET hk:bin");
	run(c, "STRLEN hk:bin");
	/* pipelined: 200 SETs then 200 GETs, sent before any reply is read */
	for (int i = 0; i < 200; i++)
		redisAppendCommand(c, "SET hk:p%d v%d", i, i * 7);
	for (int i = 0; i < 200; i++)
		redisAppendCommand(c, "GET hk:p%d", i);
	int bad = 0;
	for (int i = 0; i < 400; i++) {
		redisReply *r;
		if (redisGetReply(c, (void **)&r) != REDIS_OK) {
			printf("pipeline: connection error at %d\n", i);
			return 1;
		}
		char want[32];
		snprintf(want, sizeof(want), "v%d", (i - 200) * 7);
		if (i < 200)
			bad += !(r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "OK"));
		else
			bad += !(r->type == REDIS_REPLY_STRING && !strcmp(r->str, want));
		freeReplyObject(r);
	}
	printf("pipeline of 400: %d wrong\n", bad);
	size_t big = 600 * 1024;
	char *v = malloc(big);
	for (size_t i = 0; i < big; i++)
		v[i] = (char)('a' + i % 26);
	run(c, "SET hk:big %b", v, big);
	redisReply *r = redisCommand(c, "GET hk:big");
	printf("big value back: %s\n", r && r->type == REDIS_REPLY_STRING && r->len == big &&
						 !memcmp(r->str, v, big)
						 ? "same"
						 : "different");
	if (r)
		freeReplyObject(r);
	free(v);
	run(c, "SET hk:lock tok1 NX");
	run(c, "SET hk:lock tok2 NX");
	run(c, "SET hk:lock tok3 XX GET");
	run(c, "SET hk:none v XX");
	run(c, "GETSET hk:lock tok4");
	run(c, "MSET {hk}x 1 {hk}y 2 {hk}z 3");
	run(c, "MGET {hk}x {hk}y {hk}nope {hk}z");
	run(c, "EXISTS {hk}x {hk}y {hk}nope");
	run(c, "DEL {hk}x {hk}y {hk}nope");
	run(c, "MGET {hk}x {hk}z");
	run(c, "GET");
	run(c, "SET k v BOGUS");
	run(c, "NOSUCH a b");
	run(c, "ECHO %s", "hi there");
	redisFree(c);
	return 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int acks(char *addrs, double secs, const char *out)
{
	char *list[16];
	int n = 0;
	for (char *t = strtok(addrs, ","); t && n < 16; t = strtok(NULL, ","))
		list[n++] = t;
	FILE *f = fopen(out, "w");
	if (!f || !n)
		return 1;
	setvbuf(f, NULL, _IOLBF, 0);
	double end = now() + secs;
	long key = 0, errors = 0;
	int at = 0;
	redisContext *c = NULL;
	while (now() < end) {
		if (!c) {
			char host[64];
			int port = 0;
			if (sscanf(list[at], "%63[^:]:%d", host, &port) != 2)
				return 1;
			struct timeval tv = {1, 0};
			c = redisConnectWithTimeout(host, port, tv);
			if (!c || c->err) {
				if (c)
					redisFree(c);
				c = NULL;
				at = (at + 1) % n;
				struct timespec ts = {0, 50000000};
				nanosleep(&ts, NULL);
				continue;
			}
			struct timeval rt = {12, 0};
			redisSetTimeout(c, rt);
		}
		redisReply *r = redisCommand(c, "SET ack-%ld v%ld", key, key);
		if (r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "OK")) {
			fprintf(f, "ack-%ld\n", key);
			key++;
		} else {
			errors++;
			/* an unknown outcome: the key is not counted, and the next
			 * write uses a new key; a broken connection moves on */
			key++;
			if (!r) {
				redisFree(c);
				c = NULL;
				at = (at + 1) % n;
			}
		}
		if (r)
			freeReplyObject(r);
	}
	if (c)
		redisFree(c);
	fclose(f);
	fprintf(stderr, "resp-hiredis: %ld writes, %ld errors\n", key, errors);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "session"))
		return session(argv[2], atoi(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "acks"))
		return acks(argv[2], atof(argv[3]), argv[4]);
	fprintf(stderr, "usage: resp-hiredis session HOST PORT | acks ADDRS SECONDS OUT\n");
	return 2;
}
