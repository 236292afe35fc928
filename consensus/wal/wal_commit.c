/* The write-ahead log: recovery, group commit, truncation, compaction and
 * hard state over a struct keel_wal_io backend. Format and contract in
 * include/keel/wal.h.
 *
 * Group commit: appends are encoded into the newest unsubmitted batch
 * buffer. At most one batch is in flight (one write + its linked
 * fdatasync); whatever arrives meanwhile accumulates in the next batch, so
 * under load each fdatasync covers every append that waited for it. One in
 * flight also keeps durability in index order: a batch is durable only when
 * all before it are, which is what lets a torn write exist only at the end
 * of the log.
 *
 * With O_DIRECT, writes must start and end on 4096-byte boundaries: a batch
 * starts at the block holding the current end and begins with a copy of
 * that block's bytes (tailblk), so each write rewrites the partial block
 * with identical bytes followed by the new records. */
#include "consensus/wal/wal_internal.h"

/* ---- batches ------------------------------------------------------------ */

static void batch_done(struct keel_wal_io_req *req);

static size_t std_cap(const struct keel_wal *w)
{
	return ((size_t)w->cfg.max_batch + 2 * ALIGN + ALIGN - 1) / ALIGN * ALIGN;
}

static void batch_free(struct keel_wal *w, struct batch *b)
{
	if (b->cap == std_cap(w)) {
		b->next = w->freeb;
		w->freeb = b;
		return;
	}
	free(b->buf);
	free(b->cbs);
	free(b);
}

static struct batch *batch_new(struct keel_wal *w, size_t need)
{
	struct batch *b = NULL;
	size_t cap = std_cap(w);
	if (need + 2 * ALIGN > cap)
		cap = (need + 3 * ALIGN) / ALIGN * ALIGN;
	if (cap == std_cap(w) && w->freeb) {
		b = w->freeb;
		w->freeb = b->next;
	} else {
		b = calloc(1, sizeof(*b));
		if (!b)
			return NULL;
		b->buf = aligned_alloc(ALIGN, cap);
		if (!b->buf) {
			free(b);
			return NULL;
		}
		b->cap = cap;
	}
	b->w = w;
	b->ncb = 0;
	b->written = 0;
	b->submitted = false;
	b->next = NULL;
	b->first_index = b->last_index = 0;
	return b;
}

static int submit_head(struct keel_wal *w)
{
	struct batch *b = w->qhead;
	if (!b || w->inflight)
		return 0;
	struct seg *s = NULL;
	for (size_t i = w->nsegs; i-- > 0;)
		if (w->segs[i].first == b->seg_first) {
			s = &w->segs[i];
			break;
		}
	if (!s || s->fd < 0)
		return -EBADF;
	uint64_t used = b->end - b->start;
	uint64_t padded = (used + w->align - 1) / w->align * w->align;
	if (!b->submitted) {
		memset(b->buf + used, 0, padded - used);
		b->submit_ns = keel_now_ns();
	}
	b->submitted = true;
	b->req = (struct keel_wal_io_req){
		.fd = s->fd,
		.datasync = true,
		.buf = b->buf + b->written,
		.len = (uint32_t)(padded - b->written),
		.off = b->start + b->written,
		.done = batch_done,
	};
	w->inflight = true;
	w->stats.writes++;
	w->stats.bytes_written += b->req.len;
	int rc = w->io->ops->submit(w->io, &b->req);
	if (rc < 0)
		w->inflight = false;
	return rc;
}

void wal_fire(struct keel_wal *w, struct batch *b, int status)
{
	for (size_t i = 0; i < b->ncb; i++) {
		w->completed++;
		if (b->cbs[i].cb)
			b->cbs[i].cb(b->cbs[i].arg, b->cbs[i].last, status);
	}
}

/* Fails every queued append: nothing after the durable end is kept. */
static void fail_all(struct keel_wal *w, int err)
{
	struct batch *list = w->qhead;
	w->qhead = w->qtail = NULL;
	w->inflight = false;
	w->need_repair = true;
	if (!w->fail_err)
		w->fail_err = err;
	/* back to before the first failed append (wal_repair() makes the disk
	 * agree) */
	uint64_t keep = w->dur_index;
	for (struct batch *b = list; b; b = b->next)
		for (size_t i = 0; i < b->ncb; i++)
			if (b->cbs[i].first - 1 < keep)
				keep = b->cbs[i].first - 1;
	if (w->nsegs && keep < w->segs[0].first - 1)
		keep = w->segs[0].first - 1;
	w->repair_to = keep;
	w->next_index = keep + 1;
	keel_debug("wal: fail_all: durable %" PRIu64 ", keep %" PRIu64, w->dur_index, keep);
	keel_error("wal: write failed (%s); %s", keel_strerror(err),
		   "queued appends fail, log continues from the last durable record");
	while (list) {
		struct batch *b = list;
		list = b->next;
		wal_fire(w, b, err);
		batch_free(w, b);
	}
}

static void kick(struct keel_wal *w)
{
	int rc = submit_head(w);
	if (rc < 0)
		fail_all(w, rc);
}

const uint32_t keel_wal_sync_bounds_us[KEEL_WAL_SYNC_BUCKETS] = {
	50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 1000000,
};

/* Read by the metrics page from another thread only through a copy the
 * shard makes (keel_wal_get_stats on the shard), so plain counters do. */
static void count_sync(struct keel_wal_stats *st, uint64_t ns)
{
	st->sync_ns_sum += ns;
	for (int i = 0; i < KEEL_WAL_SYNC_BUCKETS; i++)
		if (ns <= (uint64_t)keel_wal_sync_bounds_us[i] * 1000u) {
			st->sync_le[i]++;
			return;
		}
}

static void batch_done(struct keel_wal_io_req *req)
{
	struct batch *b = (struct batch *)req; /* req is the first member */
	struct keel_wal *w = b->w;
	w->inflight = false;
	int err = 0;
	if (req->res < 0) {
		err = req->res;
	} else if ((uint32_t)req->res < req->len) {
		if (req->res == 0) {
			err = -EIO;
		} else {
			/* short write: the rest goes out, then the fdatasync */
			b->written += (uint64_t)req->res;
			kick(w);
			return;
		}
	} else if (req->sync_res != 0) {
		err = req->sync_res < 0 ? req->sync_res : -EIO;
	}
	if (err) {
		fail_all(w, err);
		return;
	}
	w->qhead = b->next;
	if (!w->qhead)
		w->qtail = NULL;
	w->dur_index = b->last_index;
	w->stats.syncs++;
	w->stats.records_durable += b->last_index - b->first_index + 1;
	count_sync(&w->stats, keel_now_ns() - b->submit_ns);
	if (!w->qhead && w->align > 1) {
		uint64_t blk = b->end / ALIGN * ALIGN;
		memcpy(w->tailblk, b->buf + (blk - b->start), b->end - blk);
	}
	/* writes to older segments are all done: their fds can go */
	for (size_t i = 0; i + 1 < w->nsegs && w->segs[i].first < b->seg_first; i++)
		wal_close_seg_fd(w, &w->segs[i]);
	/* Callbacks first, then the next write: what the callbacks append
	 * joins the batch that goes out now instead of waiting a round trip
	 * (appends made here do not kick on their own). */
	w->in_cb = true;
	wal_fire(w, b, 0);
	w->in_cb = false;
	batch_free(w, b);
	kick(w);
}

/* ---- append ------------------------------------------------------------ */

struct undo {
	struct batch *qtail;
	uint64_t qtail_end, qtail_last, qtail_first;
	size_t nsegs;
	uint64_t seg_last, tail, next_index;
};

static void rollback(struct keel_wal *w, const struct undo *u)
{
	/* batches created by this call are after u->qtail and unsubmitted */
	struct batch *b = u->qtail ? u->qtail->next : w->qhead;
	while (b) {
		struct batch *n = b->next;
		batch_free(w, b);
		b = n;
	}
	if (u->qtail) {
		u->qtail->next = NULL;
		u->qtail->end = u->qtail_end;
		u->qtail->last_index = u->qtail_last;
		u->qtail->first_index = u->qtail_first;
	} else {
		w->qhead = NULL;
	}
	w->qtail = u->qtail;
	while (w->nsegs > u->nsegs) {
		struct seg *s = last_seg(w);
		char name[32];
		seg_name(name, s->first);
		wal_close_seg_fd(w, s);
		w->io->ops->unlink(w->io, name);
		free(s->offs);
		w->nsegs--;
	}
	if (w->nsegs)
		last_seg(w)->last = u->seg_last;
	w->tail = u->tail;
	w->next_index = u->next_index;
	wal_load_tailblk(w);
}

int keel_wal_append(struct keel_wal *w, const struct keel_wal_entry *e, size_t n,
		    keel_wal_done_fn *cb, void *arg)
{
	if (!n)
		return keel_errmsg_set(w->errmsg, KEEL_EBADINPUT, "wal: empty append");
	if (w->need_repair) {
		int rc = wal_repair(w);
		if (rc)
			return rc;
	}
	uint64_t want = w->next_index;
	for (size_t i = 0; i < n; i++) {
		if ((want && e[i].index != want) || e[i].index == 0)
			return keel_errmsg_set(w->errmsg, KEEL_EBADINPUT,
					       "wal: append index %" PRIu64 ", expected %" PRIu64,
					       e[i].index, want);
		if (e[i].len > KEEL_WAL_MAX_RECORD ||
		    keel_wal_rec_size(e[i].len) > w->cfg.segment_size - KEEL_WAL_SEG_HDR)
			return keel_errmsg_set(w->errmsg, KEEL_ETOOBIG,
					       "wal: record of %" PRIu32 " bytes", e[i].len);
		want = e[i].index + 1;
	}
	struct undo u = {
		.qtail = w->qtail,
		.qtail_end = w->qtail ? w->qtail->end : 0,
		.qtail_last = w->qtail ? w->qtail->last_index : 0,
		.qtail_first = w->qtail ? w->qtail->first_index : 0,
		.nsegs = w->nsegs,
		.seg_last = w->nsegs ? last_seg(w)->last : 0,
		.tail = w->tail,
		.next_index = w->next_index,
	};
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		uint32_t size = keel_wal_rec_size(e[i].len);
		struct seg *s = last_seg(w);
		if (!s || w->tail + size > s->size) {
			rc = wal_create_seg(w, e[i].index);
			if (rc)
				break;
			s = last_seg(w);
		}
		struct batch *b = w->qtail;
		if (!b || b->submitted || b->seg_first != s->first ||
		    (b->end - b->start) + size + ALIGN > b->cap) {
			uint64_t start = w->tail / w->align * w->align;
			uint64_t pre = w->tail - start;
			b = batch_new(w, pre + size);
			if (!b) {
				rc = -ENOMEM;
				break;
			}
			struct batch *prev = w->qtail;
			if (pre) {
				if (prev && prev->seg_first == s->first)
					memcpy(b->buf, prev->buf + (start - prev->start), pre);
				else
					memcpy(b->buf, w->tailblk, pre);
			}
			b->seg_first = s->first;
			b->start = start;
			b->end = w->tail;
			if (prev)
				prev->next = b;
			else
				w->qhead = b;
			w->qtail = b;
		}
		keel_wal_rec_encode(b->buf + (w->tail - b->start), &e[i]);
		rc = wal_seg_push_off(s, (uint32_t)w->tail);
		if (rc)
			break;
		if (!b->first_index)
			b->first_index = e[i].index;
		b->last_index = e[i].index;
		w->tail += size;
		b->end = w->tail;
		w->next_index = e[i].index + 1;
	}
	if (!rc) {
		struct batch *b = w->qtail;
		if (b->ncb == b->cbcap) {
			size_t cap = b->cbcap ? b->cbcap * 2 : 64;
			struct cbent *c = realloc(b->cbs, cap * sizeof(*c));
			if (!c)
				rc = -ENOMEM;
			else {
				b->cbs = c;
				b->cbcap = cap;
			}
		}
		if (!rc)
			b->cbs[b->ncb++] = (struct cbent){cb, arg, e[0].index, e[n - 1].index};
	}
	if (rc) {
		rollback(w, &u);
		return rc;
	}
	if (w->spare && w->tail > last_seg(w)->size / 2)
		wal_spare_ask(w);
	if (!w->in_cb)
		kick(w);
	return 0;
}

int keel_wal_poll(struct keel_wal *w)
{
	uint64_t before = w->completed;
	int rc = w->io->ops->reap(w->io, 0);
	if (rc < 0)
		return rc;
	if (!w->inflight && w->qhead)
		kick(w);
	return (int)(w->completed - before);
}

int keel_wal_wait(struct keel_wal *w)
{
	uint64_t before = w->completed;
	if (!w->inflight && w->qhead)
		kick(w);
	int rc = w->io->ops->reap(w->io, w->inflight ? 1 : 0);
	if (rc < 0)
		return rc;
	return (int)(w->completed - before);
}

int keel_wal_flush(struct keel_wal *w)
{
	w->fail_err = 0;
	while (w->qhead) {
		if (!w->inflight)
			kick(w);
		if (!w->inflight)
			continue; /* kick failed: fail_all emptied the queue */
		int rc = w->io->ops->reap(w->io, 1);
		if (rc < 0)
			return rc;
	}
	int err = w->fail_err;
	w->fail_err = 0;
	return err;
}

int keel_wal_event_fd(const struct keel_wal *w)
{
	return w->io->ops->event_fd(w->io);
}
