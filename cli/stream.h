/* The verified message stream `keel send` sends and `keel node` checks:
 * message types of the node layer's table, used by the demo and the
 * integration tests.
 *
 *   STREAM_DATA    u64 seq, u64 hash, then filler bytes derived from
 *                  (seed, seq); hash = FNV-1a over the filler. The
 *                  receiver checks seq counts up from 0 per connection and
 *                  the hash matches: order and integrity.
 *   STREAM_DONE    u64 count: "I sent count messages on this connection".
 *   STREAM_REPORT  u64 received, u64 errors: the receiver's answer.
 *   STREAM_PING    echoed back unchanged (ping-pong).
 */
#ifndef KEEL_CLI_STREAM_H
#define KEEL_CLI_STREAM_H

#include <stdint.h>
#include <string.h>

/* The message types are the node layer's "stream.data", "stream.done",
 * "stream.report" and "stream.ping" (node/msgtypes.c): resolve them with
 * keel_msg_type_id. */
#define STREAM_HDR 16

static inline uint64_t stream_splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t stream_hash(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* Fills a DATA message of len >= STREAM_HDR bytes for seq. */
static inline void stream_fill(uint8_t *p, uint32_t len, uint64_t seed, uint64_t seq)
{
	uint64_t s = seed ^ (seq * 0x2545f4914f6cdd1dull);
	uint8_t *f = p + STREAM_HDR;
	size_t n = len - STREAM_HDR;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t r = stream_splitmix(&s);
		memcpy(f + i, &r, 8);
	}
	if (i < n) {
		uint64_t r = stream_splitmix(&s);
		memcpy(f + i, &r, n - i);
	}
	uint64_t h = stream_hash(f, n);
	memcpy(p, &seq, 8);
	memcpy(p + 8, &h, 8);
}

/* Checks a DATA message: 0 ok, -1 bad. *seq gets its sequence number. */
static inline int stream_check(const uint8_t *p, uint32_t len, uint64_t *seq)
{
	if (len < STREAM_HDR)
		return -1;
	uint64_t h;
	memcpy(seq, p, 8);
	memcpy(&h, p + 8, 8);
	return stream_hash(p + STREAM_HDR, len - STREAM_HDR) == h ? 0 : -1;
}

#endif
