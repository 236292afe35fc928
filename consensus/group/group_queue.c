/* Proposal and read queues with deadlines: what every engine's host keeps
 * between a caller's request and the engine's answer (group_internal.h).
 * Lists, not heaps: a shard's group has tens of requests in flight, and the
 * order they were made in is the order they complete in. */
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"

struct gprop *gprop_new(const void *data, size_t len, keel_rlog_done_fn *cb, void *arg,
			uint64_t deadline)
{
	struct gprop *p = malloc(sizeof(*p) + len);
	if (!p)
		return NULL;
	*p = (struct gprop){.cb = cb, .arg = arg, .len = len, .deadline = deadline};
	if (len)
		memcpy(p->data, data, len);
	return p;
}

void gprop_push(struct gprop_list *l, struct gprop *p)
{
	p->next = NULL;
	if (l->tail)
		l->tail->next = p;
	else
		l->head = p;
	l->tail = p;
}

struct gprop *gprop_pop(struct gprop_list *l)
{
	struct gprop *p = l->head;
	if (!p)
		return NULL;
	l->head = p->next;
	if (!l->head)
		l->tail = NULL;
	p->next = NULL;
	return p;
}

static void finish(struct gprop *p, int code, uint64_t index)
{
	if (p->cb)
		p->cb(p->arg, code, index);
	free(p);
}

void gprop_fail_all(struct gprop_list *l, int code)
{
	struct gprop *p = l->head;
	l->head = l->tail = NULL;
	while (p) {
		struct gprop *next = p->next;
		finish(p, code, p->index);
		p = next;
	}
}

/* Removes from l every proposal for which pred holds, completing each with
 * the code pred returns. Callbacks run after the list is consistent. */
static unsigned take_if(struct gprop_list *l, int (*pred)(const struct gprop *p, uint64_t a,
						      uint64_t b),
		    uint64_t a, uint64_t b)
{
	struct gprop *done = NULL, **dtail = &done;
	struct gprop **pp = &l->head, *prev = NULL;
	while (*pp) {
		struct gprop *p = *pp;
		int code = pred(p, a, b);
		if (code > 0) {
			prev = p;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		if (l->tail == p)
			l->tail = prev;
		p->next = NULL;
		p->status = code;
		*dtail = p;
		dtail = &p->next;
	}
	unsigned ok = 0;
	while (done) {
		struct gprop *next = done->next;
		ok += done->status == 0;
		finish(done, done->status, done->index);
		done = next;
	}
	return ok;
}

static int upto(const struct gprop *p, uint64_t index, uint64_t code)
{
	return p->index <= index ? (int)(int64_t)code : 1;
}

void gprop_fail_upto(struct gprop_list *l, uint64_t index, int code)
{
	take_if(l, upto, index, (uint64_t)(int64_t)code);
}

static int at(const struct gprop *p, uint64_t index, uint64_t term)
{
	/* Same index and term: our entry (Log Matching, §3.5). Another term:
	 * another leader's entry took the index; ours is gone. */
	if (p->index != index)
		return 1;
#ifdef KEEL_MUTANT_GROUP_COMPLETE_ANY_TERM
	/* MUTANT: "the index is what we were told": a proposal completes
	 * when anything is applied at its index. */
	(void)term;
	return 0;
#endif
	return p->term == term ? 0 : KEEL_ESTALE;
}

unsigned gprop_complete_at(struct gprop_list *l, uint64_t index, uint64_t term)
{
	return take_if(l, at, index, term);
}

static int expired(const struct gprop *p, uint64_t now, uint64_t unused)
{
	(void)unused;
	return p->deadline <= now ? KEEL_ETIMEOUT : 1;
}

void gprop_expire(struct gprop_list *l, uint64_t now)
{
	take_if(l, expired, now, 0);
}

void gread_fail_all(struct gread **head, int code)
{
	struct gread *r = *head;
	*head = NULL;
	while (r) {
		struct gread *next = r->next;
		r->cb(r->arg, code, r->index);
		free(r);
		r = next;
	}
}

void gread_complete(struct gread **head, uint64_t applied)
{
	struct gread **rp = head;
	while (*rp) {
		struct gread *r = *rp;
#ifdef KEEL_MUTANT_GROUP_READ_BEFORE_APPLIED
		/* MUTANT: "the leader confirmed the read index, so reads may
		 * go": a barrier completes before this replica applied up to
		 * its index. */
		(void)applied;
		if (r->have_index) {
#else
		if (r->have_index && applied >= r->index) {
#endif
			*rp = r->next;
			r->cb(r->arg, 0, r->index);
			free(r);
			continue;
		}
		rp = &r->next;
	}
}

void gread_expire(struct gread **head, uint64_t now)
{
	struct gread **rp = head;
	while (*rp) {
		struct gread *r = *rp;
		if (r->deadline > now) {
			rp = &r->next;
			continue;
		}
		*rp = r->next;
		r->cb(r->arg, KEEL_ETIMEOUT, 0);
		free(r);
	}
}
