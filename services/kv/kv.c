/* The KV state machine (keel/kv.h): the ordered map with revisions, the
 * exactly-once client table, the watch history, and snapshots. Everything
 * a command does depends only on the store and the command, so every
 * replica that applies the same log holds the same bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "services/kv/kv_internal.h"

#define SNAP_MAGIC "KEELKV01"
#define HISTORY_BYTES (64u << 20)

/* One client's latest command and its answer. */
struct kv_client {
	uint64_t id;  /* 0: empty slot */
	uint64_t seq;
	uint64_t last_ms;
	struct keel_kv_result res;
};

/* A change kept for resuming watches: key and value copied. */
struct kv_hist {
	uint64_t rev;
	bool deleted;
	uint32_t key_len, value_len;
	uint8_t *bytes; /* key, then value */
};

struct keel_kv {
	struct keel_kv_config cfg;
	struct kv_map map;
	uint64_t rev;
	uint64_t index;      /* last applied log index */
	uint64_t now_ms;     /* replicated time: highest command time seen */
	uint64_t last_sweep_ms;
	/* client table: open addressing, linear probing, power-of-two size */
	struct kv_client *clients;
	size_t nclients, cap;
	/* history ring */
	struct kv_hist *hist;
	size_t hist_cap, hist_head, hist_n;
	size_t hist_bytes;
	uint64_t hist_start; /* oldest revision replayable (rev + 1 when empty) */
	keel_kv_event_fn *on_event;
	void *event_arg;
};

/* ---- client table ------------------------------------------------------- */

static size_t slot_of(const struct keel_kv *kv, uint64_t id)
{
	return (size_t)keel_mix64(id) & (kv->cap - 1);
}

static struct kv_client *client_find(const struct keel_kv *kv, uint64_t id)
{
	if (!kv->cap)
		return NULL;
	for (size_t i = slot_of(kv, id);; i = (i + 1) & (kv->cap - 1)) {
		struct kv_client *c = &kv->clients[i];
		if (c->id == id)
			return c;
		if (!c->id)
			return NULL;
	}
}

static int client_grow(struct keel_kv *kv)
{
	size_t cap = kv->cap ? kv->cap * 2 : 64;
	struct kv_client *n = calloc(cap, sizeof(*n));
	if (!n)
		return -ENOMEM;
	struct kv_client *old = kv->clients;
	size_t ocap = kv->cap;
	kv->clients = n;
	kv->cap = cap;
	for (size_t i = 0; i < ocap; i++) {
		if (!old[i].id)
			continue;
		size_t j = slot_of(kv, old[i].id);
		while (n[j].id)
			j = (j + 1) & (cap - 1);
		n[j] = old[i];
	}
	free(old);
	return 0;
}

static struct kv_client *client_add(struct keel_kv *kv, uint64_t id)
{
	if ((kv->nclients + 1) * 4 > kv->cap * 3 && client_grow(kv) < 0)
		return NULL;
	size_t i = slot_of(kv, id);
	while (kv->clients[i].id)
		i = (i + 1) & (kv->cap - 1);
	kv->clients[i] = (struct kv_client){.id = id};
	kv->nclients++;
	return &kv->clients[i];
}

/* Removes the entry at slot i, shifting later entries of its probe run
 * back (no tombstones). */
static void client_remove_at(struct keel_kv *kv, size_t i)
{
	size_t mask = kv->cap - 1;
	kv->clients[i].id = 0;
	kv->nclients--;
	for (size_t j = (i + 1) & mask; kv->clients[j].id; j = (j + 1) & mask) {
		size_t home = slot_of(kv, kv->clients[j].id);
		/* j's entry may move to i if i lies cyclically in [home, j) */
		bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
		if (movable) {
			kv->clients[i] = kv->clients[j];
			kv->clients[j].id = 0;
			i = j;
		}
	}
}

/* Drops clients idle for client_idle_ms of replicated time; and, over
 * max_clients, the idlest. Run rarely: it walks the table. */
static void client_sweep(struct keel_kv *kv)
{
	uint64_t idle = kv->cfg.client_idle_ms;
	if (kv->now_ms < kv->last_sweep_ms + idle / 8 && kv->nclients <= kv->cfg.max_clients)
		return;
	kv->last_sweep_ms = kv->now_ms;
	for (size_t i = 0; i < kv->cap;) {
		struct kv_client *c = &kv->clients[i];
		if (c->id && c->last_ms + idle < kv->now_ms) {
			client_remove_at(kv, i); /* i now holds a shifted entry: look again */
			continue;
		}
		i++;
	}
	while (kv->nclients > kv->cfg.max_clients) {
		size_t oldest = SIZE_MAX;
		for (size_t i = 0; i < kv->cap; i++)
			if (kv->clients[i].id &&
			    (oldest == SIZE_MAX || kv->clients[i].last_ms < kv->clients[oldest].last_ms ||
			     (kv->clients[i].last_ms == kv->clients[oldest].last_ms &&
			      kv->clients[i].id < kv->clients[oldest].id)))
				oldest = i;
		client_remove_at(kv, oldest);
	}
}

/* ---- history ------------------------------------------------------------ */

static void hist_drop_oldest(struct keel_kv *kv)
{
	struct kv_hist *h = &kv->hist[kv->hist_head];
	kv->hist_bytes -= h->key_len + h->value_len;
	free(h->bytes);
	h->bytes = NULL;
	kv->hist_head = (kv->hist_head + 1) % kv->hist_cap;
	kv->hist_n--;
	kv->hist_start = kv->hist_n ? kv->hist[kv->hist_head].rev : kv->rev + 1;
}

static void hist_clear(struct keel_kv *kv)
{
	while (kv->hist_n)
		hist_drop_oldest(kv);
	kv->hist_start = kv->rev + 1;
}

static void emit(struct keel_kv *kv, bool deleted, const uint8_t *key, uint32_t klen,
		 const uint8_t *val, uint32_t vlen)
{
	struct keel_kv_event ev = {.rev = kv->rev, .deleted = deleted, .key = key, .key_len = klen,
				   .value = deleted ? NULL : val, .value_len = deleted ? 0 : vlen};
	if (kv->hist_cap) {
		uint8_t *b = malloc((size_t)klen + vlen + 1);
		if (!b) {
			/* Out of memory for history: a watcher resuming from
			 * before here must re-read, as after a compaction. */
			hist_clear(kv);
			kv->hist_start = kv->rev + 1;
		} else {
			while (kv->hist_n && (kv->hist_n == kv->hist_cap ||
					      kv->hist_bytes + klen + vlen > HISTORY_BYTES))
				hist_drop_oldest(kv);
			memcpy(b, key, klen);
			if (!deleted && vlen)
				memcpy(b + klen, val, vlen);
			size_t at = (kv->hist_head + kv->hist_n) % kv->hist_cap;
			kv->hist[at] = (struct kv_hist){.rev = kv->rev, .deleted = deleted,
							.key_len = klen,
							.value_len = deleted ? 0 : vlen, .bytes = b};
			if (!kv->hist_n)
				kv->hist_start = kv->rev;
			kv->hist_n++;
			kv->hist_bytes += klen + (deleted ? 0 : vlen);
		}
	}
	if (kv->on_event)
		kv->on_event(kv->event_arg, &ev);
}

/* ---- create / destroy --------------------------------------------------- */

int keel_kv_create(const struct keel_kv_config *cfg, struct keel_kv **out)
{
	struct keel_kv *kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	if (cfg)
		kv->cfg = *cfg;
	if (!kv->cfg.client_idle_ms)
		kv->cfg.client_idle_ms = 3600ull * 1000;
	if (!kv->cfg.max_clients)
		kv->cfg.max_clients = 1u << 20;
	if (!kv->cfg.watch_history)
		kv->cfg.watch_history = 10000;
	kv->hist_cap = kv->cfg.watch_history;
	kv->hist = calloc(kv->hist_cap, sizeof(*kv->hist));
	if (!kv->hist) {
		free(kv);
		return -ENOMEM;
	}
	kv->hist_start = 1;
	*out = kv;
	return 0;
}

void keel_kv_destroy(struct keel_kv *kv)
{
	if (!kv)
		return;
	hist_clear(kv);
	free(kv->hist);
	kv_map_clear(&kv->map);
	free(kv->clients);
	free(kv);
}

/* ---- apply -------------------------------------------------------------- */

static uint8_t do_put(struct keel_kv *kv, const uint8_t *k, uint32_t kl, const uint8_t *v,
		      uint32_t vl, struct keel_kv_result *r)
{
	struct kv_node *n = kv_map_find(&kv->map, k, kl);
	if (n) {
		if (kv_map_set_value(&kv->map, n, v, vl) < 0)
			abort(); /* replicas must not diverge: no way to skip a write */
		n->version++;
	} else {
		n = kv_map_insert(&kv->map, k, kl, v, vl);
		if (!n)
			abort();
		n->create_rev = kv->rev + 1;
		n->version = 1;
	}
	n->mod_rev = ++kv->rev;
	r->mod_rev = n->mod_rev;
	emit(kv, false, k, kl, v, vl);
	return KEEL_KV_OK;
}

static uint8_t do_del(struct keel_kv *kv, const uint8_t *k, uint32_t kl, struct keel_kv_result *r)
{
	if (!kv_map_find(&kv->map, k, kl))
		return KEEL_KV_NOT_FOUND;
	kv_map_delete(&kv->map, k, kl);
	kv->rev++;
	r->mod_rev = 0;
	emit(kv, true, k, kl, NULL, 0);
	return KEEL_KV_OK;
}

static bool cas_holds(const struct kv_node *n, const struct keel_kv_cmd *c)
{
	switch (c->cmp) {
	case KEEL_KV_CMP_VALUE:
		return n && n->value_len == c->expect_len &&
		       (!c->expect_len || !memcmp(n->value, c->expect, c->expect_len));
	case KEEL_KV_CMP_MOD_REV:
		return n ? n->mod_rev == c->rev : c->rev == 0;
	case KEEL_KV_CMP_VERSION:
		return n ? n->version == c->rev : c->rev == 0;
	case KEEL_KV_CMP_ABSENT:
		return !n;
	}
	return false;
}

/* (An abort above is deliberate: malloc failing for a few KB of a key in
 * the middle of applying the log leaves no correct way on — skipping the
 * write would make this replica differ from the others forever.) */

void keel_kv_apply(struct keel_kv *kv, uint64_t index, const void *data, size_t len,
		   struct keel_kv_result *res)
{
	struct keel_kv_result r = {0};
	struct keel_kv_cmd c;
	kv->index = index;
	if (keel_kv_cmd_decode(data, len, &c) < 0) {
		keel_warn("kv: log index %llu does not hold a KV command (%zu bytes): skipped",
			  (unsigned long long)index, len);
		r.status = KEEL_KV_OK;
		r.rev = kv->rev;
		if (res)
			*res = r;
		return;
	}
	if (c.time_ms > kv->now_ms)
		kv->now_ms = c.time_ms;
	struct kv_client *cl = client_find(kv, c.client);
	if (cl && c.seq <= cl->seq) {
		/* A retry of the latest (answer it again) or an older one,
		 * which the client already moved past. */
		if (c.seq == cl->seq) {
			r = cl->res;
			r.duplicate = true;
		} else {
			r = (struct keel_kv_result){.status = KEEL_KV_STALE_SEQ, .rev = kv->rev,
						    .duplicate = true};
		}
		cl->last_ms = kv->now_ms;
		if (res)
			*res = r;
		return;
	}
	switch (c.op) {
	case KEEL_KV_PUT:
		r.status = do_put(kv, c.key, c.key_len, c.value, c.value_len, &r);
		break;
	case KEEL_KV_DEL:
		r.status = do_del(kv, c.key, c.key_len, &r);
		break;
	case KEEL_KV_CAS: {
		struct kv_node *n = kv_map_find(&kv->map, c.key, c.key_len);
		if (!cas_holds(n, &c)) {
			r.status = KEEL_KV_CAS_FAILED;
			r.mod_rev = n ? n->mod_rev : 0;
		} else if (c.cas_delete) {
			r.status = n ? do_del(kv, c.key, c.key_len, &r) : KEEL_KV_OK;
		} else {
			r.status = do_put(kv, c.key, c.key_len, c.value, c.value_len, &r);
		}
		break;
	}
	case KEEL_KV_NOOP:
		break;
	}
	r.rev = kv->rev;
	if (!cl)
		cl = client_add(kv, c.client);
	if (!cl)
		abort(); /* see above: the table is replicated state */
	cl->seq = c.seq;
	cl->res = r;
	cl->last_ms = kv->now_ms;
	client_sweep(kv);
	if (res)
		*res = r;
}

int keel_kv_client_result(const struct keel_kv *kv, uint64_t client, uint64_t seq,
			  struct keel_kv_result *res)
{
	const struct kv_client *c = client_find(kv, client);
	if (!c || c->seq != seq)
		return KEEL_ENOTFOUND;
	*res = c->res;
	return 0;
}

/* ---- reads -------------------------------------------------------------- */

uint64_t keel_kv_revision(const struct keel_kv *kv) { return kv->rev; }
uint64_t keel_kv_applied_index(const struct keel_kv *kv) { return kv->index; }
size_t keel_kv_count(const struct keel_kv *kv) { return kv->map.n; }

static void fill(struct keel_kv_kv *out, const struct kv_node *n)
{
	*out = (struct keel_kv_kv){.key = n->key, .key_len = n->key_len, .value = n->value,
				   .value_len = n->value_len, .create_rev = n->create_rev,
				   .mod_rev = n->mod_rev, .version = n->version};
}

int keel_kv_get(const struct keel_kv *kv, const void *key, size_t key_len, struct keel_kv_kv *out)
{
	if (!key_len || key_len > KEEL_KV_MAX_KEY)
		return KEEL_ENOTFOUND;
	const struct kv_node *n = kv_map_find(&kv->map, key, (uint32_t)key_len);
	if (!n)
		return KEEL_ENOTFOUND;
	fill(out, n);
	return 0;
}

struct range_ctx {
	size_t limit, visited;
	bool more;
	int (*fn)(void *arg, const struct keel_kv_kv *kv);
	void *arg;
};

#define RANGE_FULL 1 /* internal: the limit was reached and one more key exists */

static int range_one(void *arg, const struct kv_node *n)
{
	struct range_ctx *r = arg;
	if (r->limit && r->visited == r->limit) {
		r->more = true;
		return RANGE_FULL;
	}
	struct keel_kv_kv e;
	fill(&e, n);
	r->visited++;
	return r->fn(r->arg, &e);
}

int keel_kv_range(const struct keel_kv *kv, const void *prefix, size_t prefix_len,
		  const void *after, size_t after_len, size_t limit,
		  int (*fn)(void *arg, const struct keel_kv_kv *kv), void *arg, bool *more)
{
	struct range_ctx r = {.limit = limit, .fn = fn, .arg = arg};
	if (prefix_len > KEEL_KV_MAX_KEY || after_len > KEEL_KV_MAX_KEY)
		return KEEL_EBADINPUT;
	int rc = kv_map_walk(&kv->map, prefix, (uint32_t)prefix_len,
			     after_len ? after : NULL, (uint32_t)after_len, range_one, &r);
	if (more)
		*more = r.more;
	if (rc < 0)
		return rc;
	return (int)r.visited;
}

/* ---- watch -------------------------------------------------------------- */

void keel_kv_on_event(struct keel_kv *kv, keel_kv_event_fn *fn, void *arg)
{
	kv->on_event = fn;
	kv->event_arg = arg;
}

uint64_t keel_kv_history_start(const struct keel_kv *kv)
{
	return kv->hist_start;
}

int keel_kv_history(const struct keel_kv *kv, uint64_t from_rev, const void *key, size_t key_len,
		    bool prefix, int (*fn)(void *arg, const struct keel_kv_event *ev), void *arg)
{
	if (from_rev < kv->hist_start && from_rev <= kv->rev)
		return KEEL_ESTALE;
	for (size_t i = 0; i < kv->hist_n; i++) {
		const struct kv_hist *h = &kv->hist[(kv->hist_head + i) % kv->hist_cap];
		if (h->rev < from_rev)
			continue;
		bool match = prefix ? h->key_len >= key_len &&
					      (!key_len || !memcmp(h->bytes, key, key_len))
				    : h->key_len == key_len && !memcmp(h->bytes, key, key_len);
		if (!match)
			continue;
		struct keel_kv_event ev = {.rev = h->rev, .deleted = h->deleted, .key = h->bytes,
					   .key_len = h->key_len,
					   .value = h->deleted ? NULL : h->bytes + h->key_len,
					   .value_len = h->value_len};
		int rc = fn(arg, &ev);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- snapshots ---------------------------------------------------------- *
 * "KEELKV01" u64 index u64 rev u64 now_ms u64 nkeys
 *   nkeys x (u32 key_len u32 value_len u64 create u64 mod u64 version key value)
 * u64 nclients
 *   nclients x (u64 id u64 seq u64 last_ms u8 status u64 rev u64 mod_rev)
 * u32 crc32c of everything before it. The watch history is not kept: after
 * a restore it starts at rev + 1. */

struct wbuf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

static void put(struct wbuf *w, const void *d, size_t n)
{
	if (w->oom)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *p = realloc(w->p, cap);
		if (!p) {
			w->oom = true;
			return;
		}
		w->p = p;
		w->cap = cap;
	}
	memcpy(w->p + w->len, d, n);
	w->len += n;
}

static void put64(struct wbuf *w, uint64_t v)
{
	uint8_t b[8];
	keel_put_le64(b, v);
	put(w, b, 8);
}

static void put32(struct wbuf *w, uint32_t v)
{
	uint8_t b[4];
	keel_put_le32(b, v);
	put(w, b, 4);
}

static int snap_key(void *arg, const struct kv_node *n)
{
	struct wbuf *w = arg;
	put32(w, n->key_len);
	put32(w, n->value_len);
	put64(w, n->create_rev);
	put64(w, n->mod_rev);
	put64(w, n->version);
	put(w, n->key, n->key_len);
	put(w, n->value, n->value_len);
	return w->oom ? -ENOMEM : 0;
}

static int cmp_client(const void *a, const void *b)
{
	uint64_t x = (*(const struct kv_client *const *)a)->id;
	uint64_t y = (*(const struct kv_client *const *)b)->id;
	return x < y ? -1 : x > y;
}

int keel_kv_snapshot(const struct keel_kv *kv, void **data, size_t *len)
{
	struct wbuf w = {0};
	put(&w, SNAP_MAGIC, 8);
	put64(&w, kv->index);
	put64(&w, kv->rev);
	put64(&w, kv->now_ms);
	put64(&w, kv->map.n);
	kv_map_walk(&kv->map, NULL, 0, NULL, 0, snap_key, &w);
	/* clients in id order: the same store gives the same bytes whatever
	 * the table's history */
	const struct kv_client **cl = malloc((kv->nclients ? kv->nclients : 1) * sizeof(*cl));
	if (!cl) {
		free(w.p);
		return -ENOMEM;
	}
	size_t ncl = 0;
	for (size_t i = 0; i < kv->cap; i++)
		if (kv->clients[i].id)
			cl[ncl++] = &kv->clients[i];
	qsort(cl, ncl, sizeof(*cl), cmp_client);
	put64(&w, ncl);
	for (size_t i = 0; i < ncl; i++) {
		const struct kv_client *c = cl[i];
		put64(&w, c->id);
		put64(&w, c->seq);
		put64(&w, c->last_ms);
		uint8_t st = c->res.status;
		put(&w, &st, 1);
		put64(&w, c->res.rev);
		put64(&w, c->res.mod_rev);
	}
	free(cl);
	put32(&w, keel_crc32c(0, w.p, w.len));
	if (w.oom) {
		free(w.p);
		return -ENOMEM;
	}
	*data = w.p;
	*len = w.len;
	return 0;
}

struct rbuf {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};

static const uint8_t *take(struct rbuf *r, size_t n)
{
	if (r->bad || r->len - r->pos < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->p + r->pos;
	r->pos += n;
	return p;
}

static uint64_t get64(struct rbuf *r)
{
	const uint8_t *p = take(r, 8);
	return p ? keel_get_le64(p) : 0;
}

static uint32_t get32(struct rbuf *r)
{
	const uint8_t *p = take(r, 4);
	return p ? keel_get_le32(p) : 0;
}

int keel_kv_restore(struct keel_kv *kv, uint64_t index, const void *data, size_t len)
{
	const uint8_t *b = data;
	if (len < 8 + 32 + 8 + 4 || memcmp(b, SNAP_MAGIC, 8) ||
	    keel_crc32c(0, b, len - 4) != keel_get_le32(b + len - 4))
		return KEEL_ECORRUPT;
	struct rbuf r = {.p = b, .len = len - 4, .pos = 8};
	struct keel_kv *n;
	if (keel_kv_create(&kv->cfg, &n) < 0)
		return -ENOMEM;
	get64(&r); /* the index the snapshot was taken at: the log's own wins */
	n->rev = get64(&r);
	n->now_ms = get64(&r);
	uint64_t nkeys = get64(&r);
	const uint8_t *last = NULL;
	uint32_t last_len = 0;
	for (uint64_t i = 0; i < nkeys && !r.bad; i++) {
		uint32_t kl = get32(&r), vl = get32(&r);
		uint64_t cr = get64(&r), mr = get64(&r), ver = get64(&r);
		if (!kl || kl > KEEL_KV_MAX_KEY || vl > KEEL_KV_MAX_VALUE || !ver || mr > n->rev ||
		    cr > mr) {
			r.bad = true;
			break;
		}
		const uint8_t *k = take(&r, kl), *v = take(&r, vl);
		/* keys come in order: a duplicate or a disorder is corruption */
		if (!k || !v || (last && kv_key_cmp(last, last_len, k, kl) >= 0)) {
			r.bad = true;
			break;
		}
		struct kv_node *node = kv_map_insert(&n->map, k, kl, v, vl);
		if (!node) {
			keel_kv_destroy(n);
			return -ENOMEM;
		}
		node->create_rev = cr;
		node->mod_rev = mr;
		node->version = ver;
		last = k;
		last_len = kl;
	}
	uint64_t ncl = r.bad ? 0 : get64(&r);
	for (uint64_t i = 0; i < ncl && !r.bad; i++) {
		uint64_t id = get64(&r), seq = get64(&r), ms = get64(&r);
		const uint8_t *st = take(&r, 1);
		uint64_t rev = get64(&r), mrev = get64(&r);
		if (r.bad || !id || !st || *st > KEEL_KV_STALE_SEQ || client_find(n, id)) {
			r.bad = true;
			break;
		}
		struct kv_client *c = client_add(n, id);
		if (!c) {
			keel_kv_destroy(n);
			return -ENOMEM;
		}
		c->seq = seq;
		c->last_ms = ms;
		c->res = (struct keel_kv_result){.status = *st, .rev = rev, .mod_rev = mrev};
	}
	if (r.bad || r.pos != r.len) {
		keel_kv_destroy(n);
		return KEEL_ECORRUPT;
	}
	/* Swap the new contents in, keeping kv's identity and watch callback. */
	kv_map_clear(&kv->map);
	hist_clear(kv);
	free(kv->hist);
	free(kv->clients);
	kv->map = n->map;
	kv->rev = n->rev;
	kv->now_ms = n->now_ms;
	kv->last_sweep_ms = n->now_ms;
	kv->clients = n->clients;
	kv->nclients = n->nclients;
	kv->cap = n->cap;
	kv->hist = n->hist;
	kv->hist_cap = n->hist_cap;
	kv->hist_head = kv->hist_n = kv->hist_bytes = 0;
	kv->hist_start = kv->rev + 1;
	kv->index = index;
	free(n);
	return 0;
}

/* ---- the log's state machine -------------------------------------------- */

static void sm_apply(void *arg, uint64_t index, const void *data, size_t len)
{
	keel_kv_apply(arg, index, data, len, NULL);
}

static int sm_snapshot(void *arg, void **data, size_t *len)
{
	return keel_kv_snapshot(arg, data, len);
}

static int sm_restore(void *arg, uint64_t index, const void *data, size_t len)
{
	return keel_kv_restore(arg, index, data, len);
}

struct keel_rlog_sm keel_kv_rlog_sm(struct keel_kv *kv)
{
	return (struct keel_rlog_sm){.apply = sm_apply, .snapshot = sm_snapshot,
				     .restore = sm_restore, .arg = kv};
}
