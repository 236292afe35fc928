/* The KV store's ordered map: a treap (kv_internal.h). Chosen over a
 * B-tree for its size (a hundred lines, no rebalancing cases) and over a
 * hash map because range scans by prefix need key order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "services/kv/kv_internal.h"

int kv_key_cmp(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl)
{
	uint32_t n = al < bl ? al : bl;
	int c = n ? memcmp(a, b, n) : 0;
	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static uint64_t key_prio(const uint8_t *k, uint32_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint32_t i = 0; i < len; i++)
		h = (h ^ k[i]) * 0x100000001b3ull;
	return keel_mix64(h);
}

struct kv_node *kv_map_find(const struct kv_map *m, const uint8_t *key, uint32_t len)
{
	struct kv_node *n = m->root;
	while (n) {
		int c = kv_key_cmp(key, len, n->key, n->key_len);
		if (!c)
			return n;
		n = c < 0 ? n->l : n->r;
	}
	return NULL;
}

/* Splits t into keys < key (*l) and keys >= key (*r). */
static void split(struct kv_node *t, const uint8_t *key, uint32_t len, struct kv_node **l,
		  struct kv_node **r)
{
	if (!t) {
		*l = *r = NULL;
		return;
	}
	if (kv_key_cmp(t->key, t->key_len, key, len) < 0) {
		split(t->r, key, len, &t->r, r);
		*l = t;
	} else {
		split(t->l, key, len, l, &t->l);
		*r = t;
	}
}

/* Joins l and r, every key of l below every key of r. */
static struct kv_node *join(struct kv_node *l, struct kv_node *r)
{
	if (!l)
		return r;
	if (!r)
		return l;
	if (l->prio > r->prio) {
		l->r = join(l->r, r);
		return l;
	}
	r->l = join(l, r->l);
	return r;
}

static struct kv_node *insert(struct kv_node *t, struct kv_node *n)
{
	if (!t)
		return n;
	if (n->prio > t->prio) {
		split(t, n->key, n->key_len, &n->l, &n->r);
		return n;
	}
	if (kv_key_cmp(n->key, n->key_len, t->key, t->key_len) < 0)
		t->l = insert(t->l, n);
	else
		t->r = insert(t->r, n);
	return t;
}

struct kv_node *kv_map_insert(struct kv_map *m, const uint8_t *key, uint32_t len,
			      const uint8_t *value, uint32_t vlen)
{
	struct kv_node *n = calloc(1, sizeof(*n) + len);
	if (!n)
		return NULL;
	n->value = malloc(vlen ? vlen : 1);
	if (!n->value) {
		free(n);
		return NULL;
	}
	if (vlen)
		memcpy(n->value, value, vlen);
	n->value_len = vlen;
	memcpy(n->key, key, len);
	n->key_len = len;
	n->prio = key_prio(key, len);
	m->root = insert(m->root, n);
	m->n++;
	m->bytes += len + vlen;
	return n;
}

int kv_map_set_value(struct kv_map *m, struct kv_node *n, const uint8_t *value, uint32_t vlen)
{
	uint8_t *v = malloc(vlen ? vlen : 1);
	if (!v)
		return -ENOMEM;
	if (vlen)
		memcpy(v, value, vlen);
	m->bytes += vlen;
	m->bytes -= n->value_len;
	free(n->value);
	n->value = v;
	n->value_len = vlen;
	return 0;
}

static struct kv_node *erase(struct kv_map *m, struct kv_node *t, const uint8_t *key, uint32_t len)
{
	if (!t)
		return NULL;
	int c = kv_key_cmp(key, len, t->key, t->key_len);
	if (c < 0) {
		t->l = erase(m, t->l, key, len);
		return t;
	}
	if (c > 0) {
		t->r = erase(m, t->r, key, len);
		return t;
	}
	struct kv_node *j = join(t->l, t->r);
	m->n--;
	m->bytes -= t->key_len + t->value_len;
	free(t->value);
	free(t);
	return j;
}

void kv_map_delete(struct kv_map *m, const uint8_t *key, uint32_t len)
{
	m->root = erase(m, m->root, key, len);
}

static void free_tree(struct kv_node *t)
{
	while (t) {
		/* rotate the left child up so the walk needs no stack */
		if (t->l) {
			struct kv_node *l = t->l;
			t->l = l->r;
			l->r = t;
			t = l;
			continue;
		}
		struct kv_node *r = t->r;
		free(t->value);
		free(t);
		t = r;
	}
}

void kv_map_clear(struct kv_map *m)
{
	free_tree(m->root);
	*m = (struct kv_map){0};
}

static bool has_prefix(const struct kv_node *n, const uint8_t *p, uint32_t plen)
{
	return n->key_len >= plen && (!plen || !memcmp(n->key, p, plen));
}

/* In-order walk of t's keys above the lower bound (lo: keys >= lo, or >
 * lo when strict), stopping at the first key past the prefix. */
struct walk {
	const uint8_t *lo;
	uint32_t lo_len;
	bool strict;
	const uint8_t *prefix;
	uint32_t plen;
	int (*fn)(void *arg, const struct kv_node *n);
	void *arg;
	bool done;
};

static bool above(const struct walk *w, const struct kv_node *n)
{
	if (!w->lo)
		return true;
	int c = kv_key_cmp(n->key, n->key_len, w->lo, w->lo_len);
	return w->strict ? c > 0 : c >= 0;
}

static int walk(struct walk *w, const struct kv_node *t)
{
	/* Depth is O(log n) expected for a treap, so recursion is fine. */
	while (t && !w->done) {
		if (!above(w, t)) {
			t = t->r;
			continue;
		}
		int rc = walk(w, t->l);
		if (rc || w->done)
			return rc;
		if (!has_prefix(t, w->prefix, w->plen)) {
			w->done = true; /* keys only grow from here */
			return 0;
		}
		rc = w->fn(w->arg, t);
		if (rc) {
			w->done = true;
			return rc;
		}
		t = t->r;
	}
	return 0;
}

int kv_map_walk(const struct kv_map *m, const uint8_t *prefix, uint32_t plen,
		const uint8_t *after, uint32_t alen,
		int (*fn)(void *arg, const struct kv_node *n), void *arg)
{
	struct walk w = {.prefix = prefix, .plen = plen, .fn = fn, .arg = arg};
	/* Start at the later of the prefix itself and just past `after`. */
	if (after && kv_key_cmp(after, alen, prefix, plen) >= 0) {
		w.lo = after;
		w.lo_len = alen;
		w.strict = true;
	} else if (plen) {
		w.lo = prefix;
		w.lo_len = plen;
	}
	return walk(&w, m->root);
}
