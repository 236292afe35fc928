/* Cross-shard messages: post, call/reply, batching, overflow, wake-up.
 *
 * A message is written straight into the ring slot (visible to the target
 * at once); what is batched is the rest: the target publishes its head once
 * per drained batch, and the sender checks whether the target sleeps (a
 * full fence, then a load of its `sleeping` flag) once per target per flush,
 * not per message. The wake-up is a Dekker pair: the target stores
 * sleeping=1, fences, re-checks its rings; the sender commits, fences,
 * loads sleeping. One of the two always sees the other.
 *
 * A full ring moves the message to the sender's overflow queue for that
 * target (FIFO; once non-empty, later messages queue behind it so order
 * holds); flush moves it on as the target frees slots. Never an error,
 * because a shard running a CALL must be able to send its REPLY whatever
 * the ring state, and dropping it would leave the caller waiting forever. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "runtime/runtime_internal.h"

static int ovf_push(struct keel_ovf *q, uint32_t kind, union keel_msg_fn fn, void *arg, void *extra)
{
	if (q->len == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		struct keel_ovf_item *items = malloc(cap * sizeof(*items));
		if (!items)
			return -ENOMEM;
		for (size_t i = 0; i < q->len; i++)
			items[i] = q->items[(q->head + i) & (q->cap - 1)];
		free(q->items);
		q->items = items;
		q->cap = cap;
		q->head = 0;
	}
	q->items[(q->head + q->len) & (q->cap - 1)] =
		(struct keel_ovf_item){.kind = kind, .fn = fn, .arg = arg, .extra = extra};
	q->len++;
	return 0;
}

static void mark_dirty(struct keel_shard *s, unsigned to)
{
	if (!s->is_dirty[to]) {
		s->is_dirty[to] = 1;
		s->dirty[s->ndirty++] = to;
	}
}

/* Sends one message from s to `to`, through the ring or the overflow. */
static int send_msg(struct keel_shard *s, unsigned to, uint32_t kind, union keel_msg_fn fn,
		    void *arg, void *extra)
{
	struct keel_ovf *q = &s->ovf[to];
	struct keel_ring_slot *slot;
	if (KEEL_LIKELY(q->len == 0 && (slot = keel_ring_reserve(s->out[to])))) {
		slot->kind = kind;
		slot->fn = fn;
		slot->arg = arg;
		slot->extra = extra;
		keel_ring_commit(s->out[to], slot);
	} else {
		if (q->len == 0)
			s->novf++;
		int rc = ovf_push(q, kind, fn, arg, extra);
		if (rc) {
			if (q->len == 0)
				s->novf--;
			return rc;
		}
	}
	s->msgs_out++;
	mark_dirty(s, to);
	return 0;
}

/* The rings are single-producer: a post from any thread but from's own
 * would race with it. Cheap to check (a TLS load), fatal to miss. */
static int check_caller(struct keel_shard *from)
{
	if (KEEL_LIKELY(keel_tls_shard == from))
		return 0;
	keel_error("keel_shard_post/call for shard %u from another thread (use "
		   "keel_shard_post_external off shard threads)", from->id);
	return -EPERM;
}

int keel_shard_post(struct keel_shard *from, unsigned to,
		    void (*fn)(struct keel_shard *on, void *arg), void *arg)
{
	if (to >= from->n || !fn)
		return -EINVAL;
	if (KEEL_UNLIKELY(atomic_load_explicit(&from->rt->stop, memory_order_relaxed)))
		return KEEL_ESTOPPED;
	if (KEEL_UNLIKELY(check_caller(from)))
		return -EPERM;
	return send_msg(from, to, KEEL_MSG_POST, (union keel_msg_fn){.post = fn}, arg, NULL);
}

int keel_shard_call(struct keel_shard *from, unsigned to,
		    void *(*fn)(struct keel_shard *on, void *arg),
		    void (*reply)(struct keel_shard *from, void *result, void *arg), void *arg)
{
	if (to >= from->n || !fn || !reply)
		return -EINVAL;
	if (KEEL_UNLIKELY(atomic_load_explicit(&from->rt->stop, memory_order_relaxed)))
		return KEEL_ESTOPPED;
	if (KEEL_UNLIKELY(check_caller(from)))
		return -EPERM;
	return send_msg(from, to, KEEL_MSG_CALL, (union keel_msg_fn){.call = fn}, arg,
			(void *)(uintptr_t)reply);
}

/* Internal: return a pool block to its owner through the ring. */
int keel_msg_send_free(struct keel_shard *from, unsigned owner, void *block);
int keel_msg_send_free(struct keel_shard *from, unsigned owner, void *block)
{
	return send_msg(from, owner, KEEL_MSG_FREE, (union keel_msg_fn){.raw = 0}, block, NULL);
}

static void wake_target(struct keel_shard *t)
{
	if (atomic_load_explicit(&t->sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&t->sleeping, 0, memory_order_relaxed)) {
		uint64_t one = 1;
		ssize_t w = write(t->efd, &one, sizeof(one));
		(void)w; /* EAGAIN: the counter is already non-zero, t will wake */
	}
}

void keel_shard_flush(struct keel_shard *s)
{
	if (!s->ndirty)
		return;
	struct keel_runtime *rt = s->rt;
	unsigned keep = 0;
	for (unsigned i = 0; i < s->ndirty; i++) {
		unsigned to = s->dirty[i];
		struct keel_ovf *q = &s->ovf[to];
		struct keel_ring *r = s->out[to];
		while (q->len) {
			struct keel_ring_slot *slot = keel_ring_reserve(r);
			if (!slot)
				break;
			struct keel_ovf_item *it = &q->items[q->head];
			slot->kind = it->kind;
			slot->fn = it->fn;
			slot->arg = it->arg;
			slot->extra = it->extra;
			keel_ring_commit(r, slot);
			q->head = (q->head + 1) & (q->cap - 1);
			if (--q->len == 0)
				s->novf--;
		}
	}
	/* Targets never sleep when busy-polling: skip the fence. */
	bool may_sleep = rt->cfg.idle == KEEL_IDLE_SLEEP;
	if (may_sleep)
		atomic_thread_fence(memory_order_seq_cst);
	for (unsigned i = 0; i < s->ndirty; i++) {
		unsigned to = s->dirty[i];
		if (may_sleep && to != s->id)
			wake_target(rt->shards[to]);
		if (s->ovf[to].len)
			s->dirty[keep++] = to; /* retry on the next flush */
		else
			s->is_dirty[to] = 0;
	}
	s->ndirty = keep;
}

size_t keel_shard_pending(const struct keel_shard *s, unsigned to)
{
	if (to >= s->n)
		return 0;
	return keel_ring_used(s->out[to]) + s->ovf[to].len;
}

/* Runs the messages of one incoming ring, at most `budget` of them, then
 * publishes the freed slots once. */
static unsigned drain_ring(struct keel_shard *s, unsigned from, unsigned budget)
{
	struct keel_ring *r = s->in[from];
	unsigned done = 0;
	struct keel_ring_slot *slot;
	while (done < budget && (slot = keel_ring_peek(r))) {
		uint32_t kind = slot->kind;
		union keel_msg_fn fn = slot->fn;
		void *arg = slot->arg, *extra = slot->extra;
		keel_ring_advance(r);
		done++;
		switch (kind) {
		case KEEL_MSG_POST:
			fn.post(s, arg);
			break;
		case KEEL_MSG_CALL: {
			void *res = fn.call(s, arg);
			union keel_msg_fn rf = {.reply = (void (*)(struct keel_shard *, void *, void *))(uintptr_t)extra};
			/* Only a failed overflow allocation can fail here. */
			if (send_msg(s, from, KEEL_MSG_REPLY, rf, arg, res))
				keel_error("shard %u: reply to shard %u lost: out of memory", s->id, from);
			break;
		}
		case KEEL_MSG_REPLY:
			fn.reply(s, extra, arg);
			break;
		case KEEL_MSG_FREE:
			keel_pool_free_local(s, arg);
			break;
		default:
			break;
		}
	}
	if (done)
		keel_ring_release(r);
	return done;
}

unsigned keel_msgs_drain(struct keel_shard *s)
{
	unsigned total = 0;
	for (unsigned f = 0; f < s->n; f++)
		total += drain_ring(s, f, 256);
	s->msgs_in += total;
	return total;
}

bool keel_msgs_incoming(struct keel_shard *s)
{
	for (unsigned f = 0; f < s->n; f++)
		if (keel_ring_nonempty(s->in[f]))
			return true;
	return false;
}

void keel_msgs_free(struct keel_shard *s)
{
	if (!s->ovf)
		return;
	for (unsigned i = 0; i < s->n; i++)
		free(s->ovf[i].items);
}
