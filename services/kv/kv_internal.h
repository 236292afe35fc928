/* Private to services/kv: the ordered map (kv_map.c) and the store's
 * struct (kv.c). Single-threaded: the group's shard. */
#ifndef KEEL_KV_INTERNAL_H
#define KEEL_KV_INTERNAL_H

#include "keel/kv.h"

/* One key. The key bytes follow the struct; the value is its own block so
 * a put replaces it without moving the node. */
struct kv_node {
	struct kv_node *l, *r;
	uint64_t prio;
	uint64_t create_rev, mod_rev, version;
	uint8_t *value;
	uint32_t value_len;
	uint32_t key_len;
	uint8_t key[];
};

/* A treap ordered by key (memcmp, then length), priorities from a hash of
 * the key so every replica builds the same shape. O(log n) expected for
 * find, insert, delete and a range's first step. */
struct kv_map {
	struct kv_node *root;
	size_t n;
	size_t bytes; /* keys + values */
};

int kv_key_cmp(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl);
struct kv_node *kv_map_find(const struct kv_map *m, const uint8_t *key, uint32_t len);
/* Inserts a new key (absent: check first) with a copy of value; NULL on
 * ENOMEM. */
struct kv_node *kv_map_insert(struct kv_map *m, const uint8_t *key, uint32_t len,
			      const uint8_t *value, uint32_t vlen);
/* Replaces n's value with a copy; -ENOMEM leaves it as it was. */
int kv_map_set_value(struct kv_map *m, struct kv_node *n, const uint8_t *value, uint32_t vlen);
void kv_map_delete(struct kv_map *m, const uint8_t *key, uint32_t len);
void kv_map_clear(struct kv_map *m);
/* In-order walk of keys > after (after NULL: from the first) that start
 * with prefix; fn's non-zero return stops it and is returned. */
int kv_map_walk(const struct kv_map *m, const uint8_t *prefix, uint32_t plen,
		const uint8_t *after, uint32_t alen,
		int (*fn)(void *arg, const struct kv_node *n), void *arg);

#endif
