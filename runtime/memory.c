/* Per-shard memory pools for message buffers.
 *
 * Size classes are powers of two from 64 B to 64 KiB; each class has a free
 * list owned by the shard, refilled from slabs bound to the shard's NUMA
 * node. A block's 16-byte header names its owner, so keel_shard_free from
 * any thread can send it home: from another shard through the ring (one
 * message, batched like any other), from a non-shard thread through the
 * owner's lock-free `remote_free` stack (a CAS push; the owner takes the
 * whole stack with one exchange, so there is no ABA problem). Blocks are
 * only ever put back on a free list by their owner, so the lists need no
 * synchronisation. Slabs are returned when the runtime is destroyed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime_internal.h"

#define SLAB_BYTES (256u * 1024u)
#define HDR sizeof(struct keel_block_hdr)

_Static_assert(sizeof(struct keel_block_hdr) == 16, "block header keeps 16-byte alignment");

int keel_msg_send_free(struct keel_shard *from, unsigned owner, void *block);

static unsigned size_class(size_t size)
{
	size_t need = size + HDR;
	unsigned shift = KEEL_POOL_MIN_SHIFT;
	while (((size_t)1 << shift) < need)
		shift++;
	return shift - KEEL_POOL_MIN_SHIFT;
}

static int refill(struct keel_shard *s, unsigned cls)
{
	size_t bsize = (size_t)1 << (cls + KEEL_POOL_MIN_SHIFT);
	size_t len = SLAB_BYTES;
	if (len < 4 * bsize)
		len = 4 * bsize;
	struct keel_slab *slab = keel_topo_alloc_on_node(s->rt->topo, s->pl.numa_node, len);
	if (!slab)
		return -ENOMEM;
	slab->next = s->slabs;
	slab->len = len;
	s->slabs = slab;
	/* The first block starts one block in, keeping the slab header apart
	 * and every block aligned to its own size (cache-line at least). */
	for (size_t off = bsize; off + bsize <= len; off += bsize) {
		struct keel_block_hdr *h = (struct keel_block_hdr *)((char *)slab + off);
		h->owner = s;
		h->cls = cls;
		h->magic = KEEL_POOL_MAGIC;
		struct keel_free_block *b = (struct keel_free_block *)(h + 1);
		b->next = s->pool_free[cls];
		s->pool_free[cls] = b;
	}
	return 0;
}

void *keel_shard_alloc(struct keel_shard *s, size_t size)
{
	if (size + HDR > ((size_t)1 << KEEL_POOL_MAX_SHIFT) || size + HDR < size) {
		if (size > SIZE_MAX - HDR)
			return NULL;
		struct keel_block_hdr *h = malloc(HDR + size);
		if (!h)
			return NULL;
		h->owner = NULL;
		h->cls = KEEL_POOL_LARGE;
		h->magic = KEEL_POOL_MAGIC;
		return h + 1;
	}
	unsigned cls = size_class(size);
	if (!s->pool_free[cls]) {
		keel_pool_drain_remote(s);
		if (!s->pool_free[cls] && refill(s, cls))
			return NULL;
	}
	struct keel_free_block *b = s->pool_free[cls];
	s->pool_free[cls] = b->next;
	return b;
}

size_t keel_shard_alloc_size(const void *p)
{
	const struct keel_block_hdr *h = (const struct keel_block_hdr *)p - 1;
	if (h->cls == KEEL_POOL_LARGE)
		return 0;
	return ((size_t)1 << (h->cls + KEEL_POOL_MIN_SHIFT)) - HDR;
}

void keel_pool_free_local(struct keel_shard *s, void *p)
{
	struct keel_block_hdr *h = (struct keel_block_hdr *)p - 1;
	struct keel_free_block *b = p;
	b->next = s->pool_free[h->cls];
	s->pool_free[h->cls] = b;
}

void keel_shard_free(void *p)
{
	if (!p)
		return;
	struct keel_block_hdr *h = (struct keel_block_hdr *)p - 1;
	if (h->magic != KEEL_POOL_MAGIC) {
		keel_error("keel_shard_free: %p was not allocated by keel_shard_alloc", p);
		abort();
	}
	if (h->cls == KEEL_POOL_LARGE) {
		free(h);
		return;
	}
	struct keel_shard *owner = h->owner;
	struct keel_shard *self = keel_tls_shard;
	if (self == owner) {
		keel_pool_free_local(owner, p);
		return;
	}
	if (self && self->rt == owner->rt &&
	    !atomic_load_explicit(&self->rt->stop, memory_order_relaxed) &&
	    keel_msg_send_free(self, owner->id, p) == 0)
		return;
	struct keel_free_block *b = p;
	struct keel_free_block *top = atomic_load_explicit(&owner->remote_free, memory_order_relaxed);
	do {
		b->next = top;
	} while (!atomic_compare_exchange_weak_explicit(&owner->remote_free, &top, b,
							memory_order_release, memory_order_relaxed));
}

void keel_pool_drain_remote(struct keel_shard *s)
{
	if (!atomic_load_explicit(&s->remote_free, memory_order_relaxed))
		return;
	struct keel_free_block *b = atomic_exchange_explicit(&s->remote_free, NULL, memory_order_acquire);
	while (b) {
		struct keel_free_block *next = b->next;
		keel_pool_free_local(s, b);
		b = next;
	}
}

void keel_pool_destroy(struct keel_shard *s)
{
	struct keel_slab *slab = s->slabs;
	while (slab) {
		struct keel_slab *next = slab->next;
		keel_topo_free_on_node(s->rt->topo, slab, slab->len);
		slab = next;
	}
	s->slabs = NULL;
	memset(s->pool_free, 0, sizeof(s->pool_free));
}
