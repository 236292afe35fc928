/*
 * tests/lib/linearizability.c — Wing & Gong's search with Lowe's
 * memoization, as in Porcupine's checkSingle, for the register model of
 * linearizability.h.
 *
 * For one key, the history becomes a doubly linked list of call and return
 * entries sorted by time. The search walks the list: at a call entry it
 * tries to linearize that operation now (the model must accept the
 * operation's recorded output); if that works and the pair (set of
 * linearized operations, model state) was not seen before, the operation is
 * lifted out of the list and the walk restarts from the head. Reaching a
 * return entry means an operation that has already returned was not
 * linearized yet, so the last choice was wrong: pop it, put it back and try
 * the next call after it. An empty stack at that point means no order
 * exists. The memo is what makes this practical: two search paths that
 * linearized the same set and reached the same value have the same future.
 */
#include "linearizability.h"

#include <stdlib.h>
#include <string.h>

#define NIL ((size_t)-1)

void keel_lin_history_init(struct keel_lin_history *h)
{
	memset(h, 0, sizeof(*h));
}

void keel_lin_history_free(struct keel_lin_history *h)
{
	free(h->ops);
	memset(h, 0, sizeof(*h));
}

size_t keel_lin_invoke(struct keel_lin_history *h, int client, enum keel_lin_kind kind,
		       uint64_t key, uint64_t arg, uint64_t expect, uint64_t time)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 64;
		h->ops = realloc(h->ops, h->cap * sizeof(*h->ops));
		if (!h->ops)
			abort();
	}
	struct keel_lin_op *op = &h->ops[h->n];
	memset(op, 0, sizeof(*op));
	op->client = client;
	op->kind = kind;
	op->key = key;
	op->arg = kind == KEEL_LIN_DEL ? 0 : arg;
	op->expect = expect;
	op->call = time;
	op->pending = true;
	return h->n++;
}

void keel_lin_return(struct keel_lin_history *h, size_t id, uint64_t time, uint64_t value,
		     bool ok)
{
	struct keel_lin_op *op = &h->ops[id];
	op->ret = time;
	op->value = value;
	op->ok = ok;
	op->pending = false;
}

size_t keel_lin_add(struct keel_lin_history *h, int client, enum keel_lin_kind kind, uint64_t key,
		    uint64_t arg, uint64_t expect, uint64_t value, bool ok, uint64_t call,
		    uint64_t ret)
{
	size_t id = keel_lin_invoke(h, client, kind, key, arg, expect, call);
	keel_lin_return(h, id, ret, value, ok);
	return id;
}

void keel_lin_op_format(const struct keel_lin_op *op, char *buf, size_t len)
{
	char res[48], when[64];
	if (op->pending)
		snprintf(when, sizeof(when), "[%llu,never returned]", (unsigned long long)op->call);
	else
		snprintf(when, sizeof(when), "[%llu,%llu]", (unsigned long long)op->call,
			 (unsigned long long)op->ret);
	switch (op->kind) {
	case KEEL_LIN_GET:
		if (op->pending)
			snprintf(res, sizeof(res), "?");
		else
			snprintf(res, sizeof(res), "%llu", (unsigned long long)op->value);
		snprintf(buf, len, "c%d get(k%llu)=%s %s", op->client,
			 (unsigned long long)op->key, res, when);
		break;
	case KEEL_LIN_PUT:
		snprintf(buf, len, "c%d put(k%llu, %llu) %s", op->client,
			 (unsigned long long)op->key, (unsigned long long)op->arg, when);
		break;
	case KEEL_LIN_DEL:
		snprintf(buf, len, "c%d del(k%llu) %s", op->client, (unsigned long long)op->key,
			 when);
		break;
	case KEEL_LIN_CAS:
		snprintf(buf, len, "c%d cas(k%llu, %llu->%llu)=%s %s", op->client,
			 (unsigned long long)op->key, (unsigned long long)op->expect,
			 (unsigned long long)op->arg,
			 op->pending ? "?" : (op->ok ? "ok" : "fail"), when);
		break;
	case KEEL_LIN_ACQUIRE:
		if (op->pending)
			snprintf(res, sizeof(res), "?");
		else if (op->ok)
			snprintf(res, sizeof(res), "token %llu", (unsigned long long)op->value);
		else
			snprintf(res, sizeof(res), "%s", op->expect ? "timed out" : "busy");
		snprintf(buf, len, "c%d acquire(k%llu, %s%s)=%s %s", op->client,
			 (unsigned long long)op->key, op->arg == KEEL_LIN_SHARED ? "shared" : "exclusive",
			 op->expect ? ", wait" : ", try", res, when);
		break;
	case KEEL_LIN_RELEASE:
		snprintf(buf, len, "c%d release(k%llu)=%s %s", op->client, (unsigned long long)op->key,
			 op->pending ? "?" : (op->ok ? "ok" : "not held"), when);
		break;
	case KEEL_LIN_EXPIRE:
		snprintf(buf, len, "c%d expire(k%llu) %s", op->client, (unsigned long long)op->key,
			 when);
		break;
	}
}

/* The model: can op take effect in state s with its recorded output, and
 * what state follows. A pending operation's output is unknown, so any
 * outcome is accepted (a pending cas swaps iff the value matches: had it
 * run at a point where it did not, that is a different point). */
/* The lock model's state in one word, so the memo keys on it as on a KV
 * value: bits 0..31 the holders, bit 32 set if they hold exclusively, bits
 * 33..63 the highest token granted (tokens are log indexes: a test's stay
 * far below 2^31). 0 is a free lock that never granted. */
#define LK_MASK ((1ull << KEEL_LIN_MAX_HOLDERS) - 1)
#define LK_EXCL (1ull << KEEL_LIN_MAX_HOLDERS)
#define LK_TOKEN_SHIFT (KEEL_LIN_MAX_HOLDERS + 1)

static uint64_t lk_pack(uint64_t mask, bool excl, uint64_t token)
{
	return (mask & LK_MASK) | (mask && excl ? LK_EXCL : 0) | (token << LK_TOKEN_SHIFT);
}

static bool lock_step(uint64_t s, const struct keel_lin_op *op, uint64_t *out)
{
	uint64_t mask = s & LK_MASK, last = s >> LK_TOKEN_SHIFT;
	bool excl = (s & LK_EXCL) != 0;
	uint64_t me = 1ull << ((unsigned)op->client % KEEL_LIN_MAX_HOLDERS);
	*out = s;
	switch (op->kind) {
	case KEEL_LIN_ACQUIRE: {
		bool shared = op->arg == KEEL_LIN_SHARED;
		bool compatible = !mask || (!excl && shared);
		if (mask & me) /* a re-ask: the hold it has, whatever the token */
			return op->pending || op->ok;
		if (op->pending) {
			/* granted where compatible (token unknown: the bound
			 * stays), else it had no effect */
			if (compatible)
				*out = lk_pack(mask | me, !shared, last);
			return true;
		}
		if (!op->ok)
			return mask != 0; /* busy or timed out: someone else held it */
		if (op->value >> (64 - LK_TOKEN_SHIFT)) {
			fprintf(stderr, "linearizability: lock token %llu is beyond the model's %d bits\n",
				(unsigned long long)op->value, 64 - LK_TOKEN_SHIFT);
			abort();
		}
		/* One command can grant several shared waiters: they share its
		 * index as their token. */
		bool fresh = op->value > last || (shared && mask && op->value == last);
		if (!compatible || !fresh)
			return false;
		*out = lk_pack(mask | me, !shared, op->value);
		return true;
	}
	case KEEL_LIN_RELEASE:
		if (!op->pending && op->ok && !(mask & me))
			return false;
		*out = lk_pack(mask & ~me, excl, last);
		return true;
	case KEEL_LIN_EXPIRE:
		*out = lk_pack(mask & ~me, excl, last);
		return true;
	default:
		return false;
	}
}

static bool model_step(uint64_t s, const struct keel_lin_op *op, uint64_t *out)
{
	switch (op->kind) {
	case KEEL_LIN_ACQUIRE:
	case KEEL_LIN_RELEASE:
	case KEEL_LIN_EXPIRE:
		return lock_step(s, op, out);
	case KEEL_LIN_GET:
		*out = s;
		return op->pending || op->value == s;
	case KEEL_LIN_PUT:
		*out = op->arg;
		return true;
	case KEEL_LIN_DEL:
		*out = 0;
		return true;
	case KEEL_LIN_CAS:
		if (op->pending) {
			*out = s == op->expect ? op->arg : s;
			return true;
		}
		if (op->ok) {
			*out = op->arg;
			return s == op->expect;
		}
		*out = s;
		return s != op->expect;
	}
	return false;
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Memo of visited (bitset, state): open addressing; bitsets live in an
 * arena of words, each entry points at its copy. */
struct memo_slot {
	uint64_t hash;
	uint64_t state;
	size_t off; /* into arena; NIL = empty slot */
};

struct memo {
	struct memo_slot *slots;
	size_t cap, used;
	uint64_t *arena;
	size_t arena_len, arena_cap;
	size_t words;
};

static void memo_init(struct memo *m, size_t words)
{
	memset(m, 0, sizeof(*m));
	m->words = words;
	m->cap = 1024;
	m->slots = malloc(m->cap * sizeof(*m->slots));
	if (!m->slots)
		abort();
	for (size_t i = 0; i < m->cap; i++)
		m->slots[i].off = NIL;
}

static void memo_free(struct memo *m)
{
	free(m->slots);
	free(m->arena);
}

static void memo_grow(struct memo *m)
{
	size_t ncap = m->cap * 2;
	struct memo_slot *ns = malloc(ncap * sizeof(*ns));
	if (!ns)
		abort();
	for (size_t i = 0; i < ncap; i++)
		ns[i].off = NIL;
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].off == NIL)
			continue;
		size_t j = m->slots[i].hash & (ncap - 1);
		while (ns[j].off != NIL)
			j = (j + 1) & (ncap - 1);
		ns[j] = m->slots[i];
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
}

/* Inserts (bits, state); returns false if it was already there. */
static bool memo_insert(struct memo *m, uint64_t hash, const uint64_t *bits, uint64_t state)
{
	if ((m->used + 1) * 2 > m->cap)
		memo_grow(m);
	size_t j = hash & (m->cap - 1);
	while (m->slots[j].off != NIL) {
		struct memo_slot *s = &m->slots[j];
		if (s->hash == hash && s->state == state &&
		    memcmp(m->arena + s->off, bits, m->words * sizeof(uint64_t)) == 0)
			return false;
		j = (j + 1) & (m->cap - 1);
	}
	if (m->arena_len + m->words > m->arena_cap) {
		m->arena_cap = m->arena_cap ? m->arena_cap * 2 : 4096;
		while (m->arena_cap < m->arena_len + m->words)
			m->arena_cap *= 2;
		m->arena = realloc(m->arena, m->arena_cap * sizeof(uint64_t));
		if (!m->arena)
			abort();
	}
	memcpy(m->arena + m->arena_len, bits, m->words * sizeof(uint64_t));
	m->slots[j].hash = hash;
	m->slots[j].state = state;
	m->slots[j].off = m->arena_len;
	m->arena_len += m->words;
	m->used++;
	return true;
}

struct entry {
	uint64_t time;
	size_t op;    /* index into the partition's op list */
	bool is_call;
	size_t match; /* the call's return entry */
	size_t prev, next;
};

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	/* Equal times: calls first, so touching operations count as
	 * concurrent (the permissive reading, as Porcupine does). */
	if (x->is_call != y->is_call)
		return x->is_call ? -1 : 1;
	return x->op < y->op ? -1 : x->op > y->op;
}

struct frame {
	size_t call; /* entry index */
	uint64_t state;
};

struct partition_result {
	enum keel_lin_verdict verdict;
	uint64_t steps;
	/* Deepest partial linearization (op indexes into the partition). */
	size_t *best;
	size_t best_len;
	uint64_t best_state;
	size_t stuck; /* op whose return was reached unlinearized, or NIL */
};

static void lift(struct entry *e, size_t i)
{
	struct entry *c = &e[i], *r = &e[c->match];
	e[c->prev].next = c->next;
	if (c->next != NIL)
		e[c->next].prev = c->prev;
	e[r->prev].next = r->next;
	if (r->next != NIL)
		e[r->next].prev = r->prev;
}

static void unlift(struct entry *e, size_t i)
{
	struct entry *c = &e[i], *r = &e[c->match];
	e[r->prev].next = c->match;
	if (r->next != NIL)
		e[r->next].prev = c->match;
	e[c->prev].next = i;
	if (c->next != NIL)
		e[c->next].prev = i;
}

/* ops: the partition's operations (pointers into the history), n of them. */
static void check_partition(const struct keel_lin_op *const *ops, size_t n, uint64_t max_steps,
			    struct partition_result *res)
{
	memset(res, 0, sizeof(*res));
	res->stuck = NIL;
	res->best = calloc(n + 1, sizeof(size_t));
	size_t ne = 2 * n;
	struct entry *e = calloc(ne + 1, sizeof(*e)); /* + head sentinel */
	uint64_t *zob = malloc((n + 1) * sizeof(uint64_t));
	size_t words = (n + 63) / 64 + 1;
	uint64_t *bits = calloc(words, sizeof(uint64_t));
	struct frame *stack = malloc((n + 1) * sizeof(*stack));
	if (!res->best || !e || !zob || !bits || !stack)
		abort();

	for (size_t i = 0; i < n; i++) {
		e[2 * i] = (struct entry){ .time = ops[i]->call, .op = i, .is_call = true };
		e[2 * i + 1] = (struct entry){
			.time = ops[i]->pending ? UINT64_MAX : ops[i]->ret, .op = i, .is_call = false
		};
		zob[i] = mix64(i * 2654435761u + 12345);
	}
	qsort(e, ne, sizeof(*e), entry_cmp);
	/* Link, and point each call at its return. */
	size_t *ret_of = malloc((n + 1) * sizeof(size_t));
	if (!ret_of)
		abort();
	for (size_t i = 0; i < ne; i++)
		if (!e[i].is_call)
			ret_of[e[i].op] = i;
	size_t head = ne;
	e[head] = (struct entry){ .prev = NIL, .next = ne ? 0 : NIL };
	for (size_t i = 0; i < ne; i++) {
		e[i].prev = i == 0 ? head : i - 1;
		e[i].next = i + 1 < ne ? i + 1 : NIL;
		if (e[i].is_call)
			e[i].match = ret_of[e[i].op];
	}
	free(ret_of);

	struct memo memo;
	memo_init(&memo, words);
	uint64_t state = 0, zhash = 0;
	size_t depth = 0;
	size_t cur = e[head].next;
	res->verdict = KEEL_LIN_LINEARIZABLE;
	while (e[head].next != NIL) {
		if (max_steps && res->steps >= max_steps) {
			res->verdict = KEEL_LIN_UNKNOWN;
			break;
		}
		res->steps++;
		struct entry *en = &e[cur];
		if (en->is_call) {
			const struct keel_lin_op *op = ops[en->op];
			uint64_t next_state;
			if (model_step(state, op, &next_state)) {
				size_t w = en->op / 64;
				uint64_t bit = 1ull << (en->op % 64);
				bits[w] |= bit;
				uint64_t h = (zhash ^ zob[en->op]) ^ mix64(next_state);
				if (memo_insert(&memo, h, bits, next_state)) {
					stack[depth++] = (struct frame){ .call = cur, .state = state };
					state = next_state;
					zhash ^= zob[en->op];
					lift(e, cur);
					if (depth > res->best_len) {
						for (size_t k = 0; k < depth; k++)
							res->best[k] = e[stack[k].call].op;
						res->best_len = depth;
						res->best_state = state;
						/* The op that will block this prefix, if any:
						 * the first return left in the list. */
						res->stuck = NIL;
						for (size_t k = e[head].next; k != NIL; k = e[k].next)
							if (!e[k].is_call) {
								res->stuck = e[k].op;
								break;
							}
					}
					cur = e[head].next;
					continue;
				}
				bits[w] &= ~bit;
			}
			cur = en->next;
		} else {
			/* A returned operation is not linearized yet: backtrack. */
			if (depth == 0) {
				res->verdict = KEEL_LIN_VIOLATION;
				if (res->best_len == 0)
					res->stuck = en->op;
				break;
			}
			struct frame f = stack[--depth];
			size_t op = e[f.call].op;
			bits[op / 64] &= ~(1ull << (op % 64));
			zhash ^= zob[op];
			state = f.state;
			unlift(e, f.call);
			cur = e[f.call].next;
		}
	}
	memo_free(&memo);
	free(e);
	free(zob);
	free(bits);
	free(stack);
}

static int op_key_cmp(const void *a, const void *b)
{
	const struct keel_lin_op *x = *(const struct keel_lin_op *const *)a;
	const struct keel_lin_op *y = *(const struct keel_lin_op *const *)b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->call != y->call)
		return x->call < y->call ? -1 : 1;
	return x < y ? -1 : x > y;
}

static void explain(FILE *f, enum keel_lin_verdict v, const struct keel_lin_op *const *ops,
		    size_t n, const struct partition_result *r)
{
	char buf[160];
	uint64_t key = ops[0]->key;
	if (v == KEEL_LIN_UNKNOWN) {
		fprintf(f, "key k%llu: search budget exhausted after %llu steps (%zu ops); no verdict\n",
			(unsigned long long)key, (unsigned long long)r->steps, n);
		return;
	}
	fprintf(f, "key k%llu: NOT linearizable (%zu ops, %llu search steps)\n",
		(unsigned long long)key, n, (unsigned long long)r->steps);
	fprintf(f, "  longest linearizable prefix: %zu ops, ending in state %llu", r->best_len,
		(unsigned long long)r->best_state);
	if (ops[0]->kind >= KEEL_LIN_ACQUIRE)
		fprintf(f, " (lock: holders %#llx %s, last token %llu)",
			(unsigned long long)(r->best_state & LK_MASK),
			r->best_state & LK_EXCL ? "exclusive" : "shared/free",
			(unsigned long long)(r->best_state >> LK_TOKEN_SHIFT));
	fputc('\n', f);
	size_t from = r->best_len > 12 ? r->best_len - 12 : 0;
	if (from)
		fprintf(f, "    ... %zu earlier ops\n", from);
	for (size_t k = from; k < r->best_len; k++) {
		keel_lin_op_format(ops[r->best[k]], buf, sizeof(buf));
		fprintf(f, "    %2zu. %s\n", k + 1, buf);
	}
	if (r->stuck != NIL) {
		keel_lin_op_format(ops[r->stuck], buf, sizeof(buf));
		fprintf(f,
			"  then no operation can take effect before this one returns, and it cannot "
			"take effect in state %llu (nor in any other reachable order):\n    %s\n",
			(unsigned long long)r->best_state, buf);
	}
	fprintf(f, "  history of k%llu (by invocation; * = in the prefix above, ! = stuck):\n",
		(unsigned long long)key);
	bool *in = calloc(n + 1, sizeof(bool));
	if (!in)
		abort();
	for (size_t k = 0; k < r->best_len; k++)
		in[r->best[k]] = true;
	size_t shown = 0;
	for (size_t i = 0; i < n; i++) {
		if (shown == 60) {
			fprintf(f, "    ... %zu more\n", n - i);
			break;
		}
		keel_lin_op_format(ops[i], buf, sizeof(buf));
		fprintf(f, "   %c %s\n", i == r->stuck ? '!' : in[i] ? '*' : ' ', buf);
		shown++;
	}
	free(in);
}

enum keel_lin_verdict keel_lin_check(const struct keel_lin_history *h, uint64_t max_steps,
				     struct keel_lin_report *rep)
{
	struct keel_lin_report local;
	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	rep->verdict = KEEL_LIN_LINEARIZABLE;
	const struct keel_lin_op **all = malloc((h->n + 1) * sizeof(*all));
	if (!all)
		abort();
	size_t m = 0;
	for (size_t i = 0; i < h->n; i++) {
		/* A pending get changes nothing and may take effect anywhere. */
		if (h->ops[i].pending && h->ops[i].kind == KEEL_LIN_GET)
			continue;
		all[m++] = &h->ops[i];
	}
	qsort(all, m, sizeof(*all), op_key_cmp);
	for (size_t i = 0; i < m;) {
		size_t j = i;
		while (j < m && all[j]->key == all[i]->key)
			j++;
		struct partition_result r;
		check_partition(all + i, j - i, max_steps, &r);
		rep->keys++;
		rep->steps += r.steps;
		if (r.verdict != KEEL_LIN_LINEARIZABLE &&
		    (rep->verdict == KEEL_LIN_LINEARIZABLE ||
		     (rep->verdict == KEEL_LIN_UNKNOWN && r.verdict == KEEL_LIN_VIOLATION))) {
			/* Report the first violation; an UNKNOWN only if no key
			 * is a definite violation. */
			rep->verdict = r.verdict;
			rep->key = all[i]->key;
			free(rep->text);
			size_t len = 0;
			FILE *f = open_memstream(&rep->text, &len);
			if (!f)
				abort();
			explain(f, r.verdict, all + i, j - i, &r);
			fclose(f);
		}
		free(r.best);
		if (rep->verdict == KEEL_LIN_VIOLATION)
			break;
		i = j;
	}
	free(all);
	enum keel_lin_verdict v = rep->verdict;
	if (rep == &local)
		keel_lin_report_free(&local);
	return v;
}

void keel_lin_report_free(struct keel_lin_report *rep)
{
	free(rep->text);
	rep->text = NULL;
}
