/*
 * raft_log.c — the in-memory log of the Raft core (§3.5, §5.1).
 *
 * Entries base+1 .. base+n_ents live in one array so a ready batch can hand
 * out contiguous slices without copying. Each entry owns a malloc'd copy of
 * its data. (base, base_term) stands for the last compacted entry, which is
 * what the consistency check of AppendEntries needs at the log's start.
 * Compaction shifts the array down; it is amortised because the application
 * compacts in large steps.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

uint64_t raft_last_index(const struct keel_raft *r)
{
	return r->base + r->n_ents;
}

uint64_t raft_last_term(const struct keel_raft *r)
{
	return r->n_ents ? r->ents[r->n_ents - 1].term : r->base_term;
}

bool raft_term_at(const struct keel_raft *r, uint64_t index, uint64_t *term)
{
	if (index == r->base) {
		*term = r->base_term;
		return true;
	}
	if (index < r->base || index > raft_last_index(r))
		return false;
	*term = r->ents[index - r->base - 1].term;
	return true;
}

const struct keel_raft_entry *raft_entry(const struct keel_raft *r, uint64_t index)
{
	if (index <= r->base || index > raft_last_index(r))
		return NULL;
	return &r->ents[index - r->base - 1];
}

int raft_log_append(struct keel_raft *r, uint64_t term, uint32_t type,
		    const void *data, size_t len)
{
	if (r->n_ents == r->cap_ents) {
		size_t cap = r->cap_ents ? r->cap_ents * 2 : 64;
		struct keel_raft_entry *e = realloc(r->ents, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		r->ents = e;
		r->cap_ents = cap;
	}
	uint8_t *copy = NULL;
	if (len) {
		copy = malloc(len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, data, len);
	}
	struct keel_raft_entry *e = &r->ents[r->n_ents++];
	e->term = term;
	e->index = r->base + r->n_ents;
	e->type = type;
	e->len = (uint32_t)len;
	e->data = copy;
	return 0;
}

/* Drops entries from index `from` on (a follower's conflicting suffix,
 * §3.5). The app learns through the next ready, whose entries start at
 * `from`: everything it persisted from there on is obsolete. */
void raft_log_truncate(struct keel_raft *r, uint64_t from)
{
	uint64_t last = raft_last_index(r);
	if (from > last)
		return;
	if (from <= r->base)
		from = r->base + 1;
	for (uint64_t i = from; i <= last; i++)
		free((void *)r->ents[i - r->base - 1].data);
	r->n_ents = from - r->base - 1;
	if (r->stabled >= from)
		r->stabled = from - 1;
	raft_drop_acks_above(r, from - 1);
}

/* Discards entries up to and including `upto` (§5.1). */
void raft_log_compact(struct keel_raft *r, uint64_t upto)
{
	if (upto <= r->base)
		return;
	if (upto > raft_last_index(r))
		upto = raft_last_index(r);
	size_t drop = upto - r->base;
	uint64_t t = r->ents[drop - 1].term;
	for (size_t i = 0; i < drop; i++)
		free((void *)r->ents[i].data);
	memmove(r->ents, r->ents + drop, (r->n_ents - drop) * sizeof(*r->ents));
	r->n_ents -= drop;
	r->base = upto;
	r->base_term = t;
}

/* Empties the log so it continues after (index, term): installing a
 * snapshot that the log does not contain (§5.3 step 7/8). */
void raft_log_reset(struct keel_raft *r, uint64_t index, uint64_t term)
{
	for (size_t i = 0; i < r->n_ents; i++)
		free((void *)r->ents[i].data);
	r->n_ents = 0;
	r->base = index;
	r->base_term = term;
	raft_drop_acks_above(r, index);
}

void raft_log_free(struct keel_raft *r)
{
	for (size_t i = 0; i < r->n_ents; i++)
		free((void *)r->ents[i].data);
	free(r->ents);
	r->ents = NULL;
	r->n_ents = r->cap_ents = 0;
}
