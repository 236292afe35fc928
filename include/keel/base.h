/*
 * keel/base.h — what every layer shares (base/): error codes, error-message
 * buffers, logging, the clock, little-endian byte order, a seeded PRNG,
 * CRC32C, JSON string escaping, and a few compiler helpers.
 *
 * Error convention: a function returns 0 (or a non-negative count) on success
 * and a negative code on failure: -errno for system errors, or a KEEL_E* code
 * from the reserved range below -KEEL_ERR_BASE. keel_strerror() names both.
 * Objects that can fail in interesting ways keep a char[KEEL_ERRMSG_LEN]
 * buffer filled by keel_errmsg_set() with the context ("wal: segment
 * 00000001.log offset 4096: CRC mismatch"), so the caller can print one line
 * that says what went wrong and where.
 */
#ifndef KEEL_BASE_H
#define KEEL_BASE_H

#include <endian.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_CACHELINE 64
#define KEEL_CACHE_ALIGNED __attribute__((aligned(KEEL_CACHELINE)))
#define KEEL_LIKELY(x) __builtin_expect(!!(x), 1)
#define KEEL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define KEEL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KEEL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* keel's own codes live below -KEEL_ERR_BASE so they never collide with
 * -errno. Add a code by adding one line to the table: the enum and
 * keel_strerror() are both generated from it. */
#define KEEL_ERR_BASE 10000
#define KEEL_ERRORS(X)                                                        \
	X(KEEL_EFULL, 1, "queue or connection full, retry after the writable callback") \
	X(KEEL_ECLOSED, 2, "connection or object closed")                        \
	X(KEEL_EPROTO, 3, "malformed message")                                    \
	X(KEEL_ETOOBIG, 4, "message larger than the configured maximum")          \
	X(KEEL_EAUTH, 5, "peer authentication failed")                            \
	X(KEEL_ECONFIG, 6, "invalid configuration")                               \
	X(KEEL_ETOPO, 7, "placement does not fit the topology")                   \
	X(KEEL_ECORRUPT, 8, "corrupt data on disk")                               \
	X(KEEL_ENOTLEADER, 9, "not the leader")                                   \
	X(KEEL_ESTALE, 10, "stale term, epoch or version")                        \
	X(KEEL_ENOTSUP, 11, "not supported by this build or backend")             \
	X(KEEL_ENOTFOUND, 12, "not found")                                        \
	X(KEEL_EBADJOB, 13, "invalid map-reduce job")                             \
	X(KEEL_EBADINPUT, 14, "invalid input")                                    \
	X(KEEL_ESTOPPED, 15, "stopped")                                           \
	X(KEEL_EUNAVAIL, 16, "no quorum or peer unavailable")                     \
	X(KEEL_EDURABLE, 17, "durability lost: an fsync failed, data not acknowledged") \
	X(KEEL_ETIMEOUT, 18, "timed out")                                         \
	X(KEEL_EBUSY, 19, "busy: another operation is in progress")

enum keel_err {
#define KEEL_ERR_ENUM(name, n, text) name = -(KEEL_ERR_BASE + (n)),
	KEEL_ERRORS(KEEL_ERR_ENUM)
#undef KEEL_ERR_ENUM
};

/* Text for a code returned by any keel function: a KEEL_E* code, -errno, or
 * errno itself. Never NULL; the string is static. */
const char *keel_strerror(int err);

/* Context messages. */
#define KEEL_ERRMSG_LEN 256
/* Formats the message into buf (KEEL_ERRMSG_LEN bytes) and returns code, so
 * a failure path reads `return keel_errmsg_set(e, -EIO, "wal: %s", path);`.
 * buf may be NULL, then only the code is returned. */
int keel_errmsg_set(char *buf, int code, const char *fmt, ...) KEEL_PRINTF(3, 4);

/* Logging: levelled, to stderr, one line per event:
 *   2026-11-27T23:15:20.123456Z INFO  n1/s0 message
 * The prefix names the node (keel_log_set_node) and the calling thread's
 * shard (keel_log_set_shard, set by the runtime on each shard thread). */
enum keel_log_level {
	KEEL_LOG_DEBUG = 0,
	KEEL_LOG_INFO = 1,
	KEEL_LOG_WARN = 2,
	KEEL_LOG_ERROR = 3,
	KEEL_LOG_OFF = 4,
};

void keel_log_set_level(enum keel_log_level level);
enum keel_log_level keel_log_get_level(void);
/* Reads KEEL_LOG=debug|info|warn|error|off from the environment, if set. */
void keel_log_init_from_env(void);
/* node id for the prefix; -1 prints no node. */
void keel_log_set_node(int node_id);
/* this thread's shard for the prefix; -1 (the default) prints '-'. */
void keel_log_set_shard(int shard_id);
void keel_log(enum keel_log_level level, const char *fmt, ...) KEEL_PRINTF(2, 3);
void keel_vlog(enum keel_log_level level, const char *fmt, va_list ap);

/* Rate limiting for lines a peer or a client can make repeat: at most
 * `burst` lines per second pass through one struct keel_log_limit (zero it
 * to start); the rest are counted, and the first line let through after
 * them ends with "(N similar lines suppressed)".
 *
 * keel_log_every / keel_warn_limited / keel_info_limited do the same per
 * call site (and per thread: a static _Thread_local limiter each, so shard
 * threads never share one), KEEL_LOG_SITE_BURST lines per second. A
 * call-site limiter that suppressed lines is also remembered by its thread,
 * so that keel_log_flush_suppressed (called by a thread's periodic work:
 * the TCP transport calls it every second) reports a flood that stopped
 * as `N similar lines suppressed in the last S s: "FORMAT"`: without it the
 * count would wait for the next occurrence, perhaps forever. */
struct keel_log_limit {
	uint64_t window_start;
	uint32_t count;
	uint32_t suppressed;
	/* call-site limiters only (keel_log_site): */
	const char *key;             /* the format string, static */
	int level;
	bool listed;                 /* in this thread's list of suppressors */
	struct keel_log_limit *next;
};
void keel_log_limited(struct keel_log_limit *l, unsigned burst, enum keel_log_level level,
		      const char *fmt, ...) KEEL_PRINTF(4, 5);
/* l must have static (or thread) storage duration and fmt be a literal:
 * the thread's list keeps pointers to both. Use the macros below. */
void keel_log_site(struct keel_log_limit *l, enum keel_log_level level, const char *fmt, ...)
	KEEL_PRINTF(3, 4);
/* Reports and clears this thread's call-site limiters whose window has
 * ended with lines suppressed; returns how many summary lines it wrote.
 * Cheap when nothing was suppressed (one thread-local load). */
unsigned keel_log_flush_suppressed(void);
#define KEEL_LOG_SITE_BURST 5
/* Lines per second per call site (default KEEL_LOG_SITE_BURST), for tests
 * that check every line of a fast sequence of bad inputs. */
void keel_log_set_site_burst(unsigned burst);
#define keel_log_every(lvl, ...)                                              \
	do {                                                                  \
		static _Thread_local struct keel_log_limit keel_site_lim_;    \
		keel_log_site(&keel_site_lim_, (lvl), __VA_ARGS__);           \
	} while (0)
#define keel_warn_limited(...) keel_log_every(KEEL_LOG_WARN, __VA_ARGS__)
#define keel_info_limited(...) keel_log_every(KEEL_LOG_INFO, __VA_ARGS__)

#define KEEL_LOG_ENABLED(lvl) ((lvl) >= keel_log_get_level())
#define keel_debug(...)                                                       \
	do {                                                                  \
		if (KEEL_LOG_ENABLED(KEEL_LOG_DEBUG))                         \
			keel_log(KEEL_LOG_DEBUG, __VA_ARGS__);                \
	} while (0)
#define keel_info(...) keel_log(KEEL_LOG_INFO, __VA_ARGS__)
#define keel_warn(...) keel_log(KEEL_LOG_WARN, __VA_ARGS__)
#define keel_error(...) keel_log(KEEL_LOG_ERROR, __VA_ARGS__)

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
uint64_t keel_now_ns(void);


/* ---- Byte order ----------------------------------------------------------
 * Every keel format on disk and on the wire is little-endian. These read and
 * write at any alignment (memcpy) and swap only on a big-endian host. */
static inline void keel_put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}
static inline void keel_put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}
static inline void keel_put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}
static inline uint16_t keel_get_le16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return le16toh(v);
}
static inline uint32_t keel_get_le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}
static inline uint64_t keel_get_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

/* ---- PRNG ----------------------------------------------------------------
 * splitmix64 (Steele, Lea, Flood 2014): one 64-bit state word, full period,
 * passes BigCrush; cheap enough for election jitter and backoff, and the
 * generator every seeded simulation uses, so one seed replays one run. Not
 * for secrets (libsodium's randombytes is). */
struct keel_prng {
	uint64_t s;
};
static inline void keel_prng_seed(struct keel_prng *r, uint64_t seed)
{
	r->s = seed;
}
static inline uint64_t keel_prng_next(struct keel_prng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
/* Uniform in [lo, hi] (inclusive; lo when hi <= lo). The modulo bias is
 * below 2^-32 for ranges under 2^32, which is all keel draws. */
static inline uint64_t keel_prng_range(struct keel_prng *r, uint64_t lo, uint64_t hi)
{
	return hi <= lo ? lo : lo + keel_prng_next(r) % (hi - lo + 1);
}
/* A well-mixed 64-bit value of x (splitmix64's finaliser), for deriving
 * independent seeds from one seed. */
static inline uint64_t keel_mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* ---- CRC32C --------------------------------------------------------------
 * Castagnoli (iSCSI) CRC, as WAL records, snapshots and hard state use it:
 * the SSE4.2 crc32 instruction where the CPU has it. crc is the previous
 * value (0 to start), so a CRC can be computed in pieces. */
uint32_t keel_crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable table implementation (tests compare the two). */
uint32_t keel_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* ---- JSON strings --------------------------------------------------------
 * The one escaper every --json output goes through (base/json.c): writes
 * len bytes of s as a JSON string literal, quotes included. '"', '\\' and
 * control characters are escaped (\n, \t, \u00XX...), valid UTF-8 passes
 * through, and each byte of an invalid UTF-8 sequence becomes U+FFFD, so the
 * output is always valid JSON whatever the input (file names, job output).
 * Returns the bytes written, or -1 on a write error (errno set). */
int keel_json_str(FILE *f, const void *s, size_t len);
/* keel_json_str of a NUL-terminated string (NULL writes null). */
int keel_json_cstr(FILE *f, const char *s);
/* The same into buf (cap bytes, always NUL-terminated when cap > 0);
 * returns the length the whole literal needs, as snprintf does. */
size_t keel_json_escape(char *buf, size_t cap, const void *s, size_t len);

/* ---- JSON writer ---------------------------------------------------------
 * Objects and arrays on top of the escaper, so a --json output is built
 * from calls, never from a printf format with quotes in it: commas, quotes
 * and escaping are the writer's, and every string goes through
 * keel_json_str's rules. Into a FILE or into a caller's buffer:
 *
 *   struct keel_json j;
 *   keel_json_init_file(&j, stdout);
 *   keel_json_open_obj(&j, NULL);
 *   keel_json_put_str(&j, "output", path);     // any bytes
 *   keel_json_put_u64(&j, "map_tasks", n);
 *   keel_json_open_arr(&j, "nodes"); ... keel_json_close(&j);
 *   keel_json_close(&j);
 *   if (keel_json_finish(&j, true) < 0) ...    // '\n' after the value
 *
 * key is the member name inside an object and must be NULL inside an array
 * or for the top value. At most KEEL_JSON_MAX_DEPTH containers nest; misuse
 * (a key in an array, closing too often) sets the error, not an assert, so
 * a bug gives a failed write rather than a crash. The struct owns nothing:
 * the FILE and the buffer stay the caller's. */
#define KEEL_JSON_MAX_DEPTH 32
struct keel_json {
	FILE *f;            /* the FILE, or NULL: buf */
	char *buf;          /* cap bytes, NUL-terminated when cap > 0 */
	size_t cap, len;    /* len: bytes the whole text needs (may pass cap) */
	unsigned depth;
	uint32_t arr;       /* bit d: the container at depth d is an array */
	uint32_t members;   /* bit d: the container at depth d has a member */
	bool err;           /* a write failed or the calls were out of order */
};
void keel_json_init_file(struct keel_json *j, FILE *f);
void keel_json_init_buf(struct keel_json *j, char *buf, size_t cap);
void keel_json_open_obj(struct keel_json *j, const char *key);
void keel_json_open_arr(struct keel_json *j, const char *key);
void keel_json_close(struct keel_json *j);
/* s: NUL-terminated, NULL writes null; strn: len bytes, any values. */
void keel_json_put_str(struct keel_json *j, const char *key, const char *s);
void keel_json_put_strn(struct keel_json *j, const char *key, const void *s, size_t len);
void keel_json_put_u64(struct keel_json *j, const char *key, uint64_t v);
void keel_json_put_i64(struct keel_json *j, const char *key, int64_t v);
/* decimals after the point (0..9); NaN and infinities write null (JSON
 * has no number for them). */
void keel_json_put_double(struct keel_json *j, const char *key, double v, int decimals);
void keel_json_put_bool(struct keel_json *j, const char *key, bool v);
void keel_json_put_null(struct keel_json *j, const char *key);
/* Ends the text (every container must be closed), with a '\n' if newline.
 * Returns the length of the text (a buffer's: what it needs, as
 * snprintf does), or -1: a write error, calls out of order, containers
 * left open, or a buffer too small (j->len says how big it must be). */
long keel_json_finish(struct keel_json *j, bool newline);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_BASE_H */
