/* Helpers shared by the WAL tests: a deterministic PRNG, payloads derived
 * from (index, generation) so any entry can be re-checked byte for byte,
 * and reading a whole log back. */
#ifndef KEEL_TESTS_WALT_H
#define KEEL_TESTS_WALT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/wal.h"

static inline uint64_t walt_rand(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Payload of entry (index, gen): length and bytes are functions of both. */
static inline uint32_t walt_len(uint64_t index, uint32_t gen, uint32_t maxlen)
{
	uint64_t s = index * 1000003u + gen;
	return maxlen ? (uint32_t)(walt_rand(&s) % (maxlen + 1)) : 0;
}

static inline void walt_fill(uint8_t *buf, uint32_t len, uint64_t index, uint32_t gen)
{
	uint64_t s = index * 7919u + gen * 104729u + 1;
	for (uint32_t i = 0; i < len; i++) {
		if ((i & 7) == 0)
			s = walt_rand(&s);
		buf[i] = (uint8_t)(s >> ((i & 7) * 8));
	}
}

static inline struct keel_wal_entry walt_entry(uint8_t *buf, uint64_t index, uint32_t gen,
					       uint32_t maxlen)
{
	uint32_t len = walt_len(index, gen, maxlen);
	walt_fill(buf, len, index, gen);
	return (struct keel_wal_entry){
		.index = index, .term = gen + 1, .type = gen & 3, .len = len, .data = buf};
}

/* Matches e against (index, gen); 0 when equal. */
static inline int walt_check(const struct keel_wal_entry *e, uint32_t gen, uint32_t maxlen)
{
	static uint8_t buf[1 << 16];
	uint32_t len = walt_len(e->index, gen, maxlen);
	if (e->len != len || e->term != gen + 1u || e->type != (gen & 3))
		return 1;
	walt_fill(buf, len, e->index, gen);
	return memcmp(buf, e->data, len) ? 2 : 0;
}

/* The log read back: terms give the generation (term = gen + 1). */
struct walt_log {
	uint64_t first, last;
	uint32_t *gen; /* gen[i - first] */
	size_t cap;
	int bad; /* entries whose payload does not match their term's payload */
	uint32_t maxlen;
	int gap;
};

static inline int walt_collect(void *arg, const struct keel_wal_entry *e)
{
	struct walt_log *l = arg;
	if (!l->first) {
		l->first = e->index;
		l->last = e->index - 1;
	}
	if (e->index != l->last + 1)
		l->gap++;
	size_t i = (size_t)(e->index - l->first);
	if (i >= l->cap) {
		l->cap = (i + 1) * 2;
		l->gen = realloc(l->gen, l->cap * sizeof(*l->gen));
	}
	l->gen[i] = (uint32_t)(e->term - 1);
	if (walt_check(e, (uint32_t)(e->term - 1), l->maxlen))
		l->bad++;
	l->last = e->index;
	return 0;
}

static inline int walt_read(struct keel_wal *w, struct walt_log *l, uint32_t maxlen)
{
	free(l->gen);
	memset(l, 0, sizeof(*l));
	l->maxlen = maxlen;
	return keel_wal_iterate(w, 0, walt_collect, l);
}

#endif
