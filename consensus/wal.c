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
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/wal.h"

#define ALIGN 4096u
#define HS_SLOT 512u
#define HS_MAGIC 0x313053484c45454bull /* "KEELHS01" */
#define HS_NAME "hardstate"
#define HS_TMP "hardstate.tmp"
#define SEG_TMP "new.tmp"

struct cbent {
	keel_wal_done_fn *cb;
	void *arg;
	uint64_t first, last;
};

struct seg {
	uint64_t first, last; /* last = first - 1 when empty */
	uint64_t size;        /* file size: the segment's capacity */
	uint64_t end;         /* past the last record; w->tail for the last segment */
	int fd;               /* write fd, -1 when closed */
	uint32_t *offs;       /* offs[i]: offset of record first + i */
	size_t cap;
};

struct batch {
	struct keel_wal_io_req req;
	struct keel_wal *w;
	uint8_t *buf;
	size_t cap;
	uint64_t seg_first;
	uint64_t start, end; /* file offsets of buf[0] and past the last record */
	uint64_t first_index, last_index;
	uint64_t written; /* bytes written so far, after short writes */
	bool submitted;
	struct cbent *cbs;
	size_t ncb, cbcap;
	struct batch *next;
};

struct keel_wal {
	struct keel_wal_io *io;
	struct keel_wal_config cfg;
	uint32_t align; /* ALIGN with O_DIRECT, 1 buffered */
	bool direct;
	struct seg *segs;
	size_t nsegs, segcap;
	uint64_t tail;       /* offset past the last queued record, last segment */
	uint64_t next_index; /* 0: empty log, any index may come next */
	uint64_t dur_index;
	uint8_t *tailblk;
	uint8_t *scratch; /* a segment header being written */
	struct batch *qhead, *qtail, *freeb;
	bool inflight;
	bool in_cb; /* completion callbacks running: appends do not submit */
	struct keel_wal_stats stats;
	bool need_repair;
	uint64_t repair_to; /* after a failure: keep entries <= this */
	int fail_err; /* first failure seen by the current flush */
	uint64_t completed;
	int hs_fd;
	uint64_t hs_seq;
	struct keel_wal_hard_state hs;
	char errmsg[KEEL_ERRMSG_LEN];
};

static void seg_name(char *buf, uint64_t first)
{
	snprintf(buf, 32, "%016" PRIx64 ".seg", first);
}

static struct seg *last_seg(struct keel_wal *w)
{
	return w->nsegs ? &w->segs[w->nsegs - 1] : NULL;
}

static size_t seg_count(const struct seg *s)
{
	return (size_t)(s->last + 1 - s->first);
}

static int seg_push_off(struct seg *s, uint32_t off)
{
	size_t n = seg_count(s);
	if (n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		uint32_t *o = realloc(s->offs, cap * sizeof(*o));
		if (!o)
			return -ENOMEM;
		s->offs = o;
		s->cap = cap;
	}
	s->offs[n] = off;
	s->last++;
	return 0;
}

static int64_t full_pread(struct keel_wal_io *io, int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		int64_t n = io->ops->pread(io, fd, (uint8_t *)buf + done, len - done, off + done);
		if (n < 0)
			return n;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (int64_t)done;
}

static int full_pwrite(struct keel_wal_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		int64_t n = io->ops->pwrite(io, fd, (const uint8_t *)buf + done, len - done,
					    off + done);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* ---- segment files -------------------------------------------------------- */

static int open_seg_fd(struct keel_wal *w, struct seg *s)
{
	if (s->fd >= 0)
		return 0;
	char name[32];
	seg_name(name, s->first);
	int flags = w->cfg.buffered ? 0 : KEEL_WAL_IO_DIRECT;
	int fd = w->io->ops->open(w->io, name, &flags);
	if (fd < 0)
		return keel_errmsg_set(w->errmsg, fd, "wal: open %s", name);
	s->fd = fd;
	w->direct = (flags & KEEL_WAL_IO_DIRECT) != 0;
	w->align = w->direct ? ALIGN : 1;
	return 0;
}

static void close_seg_fd(struct keel_wal *w, struct seg *s)
{
	if (s->fd >= 0)
		w->io->ops->close(w->io, s->fd);
	s->fd = -1;
}

static int zero_fill(struct keel_wal *w, int fd, uint64_t size)
{
	size_t chunk = 1u << 20;
	if (chunk > size)
		chunk = (size_t)size;
	uint8_t *z = calloc(1, chunk);
	if (!z)
		return -ENOMEM;
	int rc = 0;
	for (uint64_t off = KEEL_WAL_SEG_HDR; off < size && !rc; off += chunk) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
		rc = full_pwrite(w->io, fd, z, n, off);
	}
	free(z);
	return rc;
}

/* New segment: written and synced under a temporary name, then renamed and
 * the directory synced, so after a crash it either exists whole (header
 * durable, rest zero) or not at all. */
static int create_seg(struct keel_wal *w, uint64_t first)
{
	struct keel_wal_io *io = w->io;
	char name[32];
	seg_name(name, first);
	if (w->nsegs == w->segcap) {
		size_t cap = w->segcap ? w->segcap * 2 : 16;
		struct seg *s = realloc(w->segs, cap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		w->segs = s;
		w->segcap = cap;
	}
	int flags = KEEL_WAL_IO_CREATE;
	int fd = io->ops->open(io, SEG_TMP, &flags);
	if (fd < 0)
		return keel_errmsg_set(w->errmsg, fd, "wal: create %s", SEG_TMP);
	uint8_t *hdr = w->scratch;
	int rc = io->ops->ftruncate(io, fd, 0);
	if (!rc)
		rc = io->ops->fallocate(io, fd, w->cfg.segment_size);
	/* Zero-fill: fallocate leaves unwritten extents, and the first write
	 * into each one makes the next fdatasync commit an extent change to
	 * the journal as well (measured: several times the latency). Writing
	 * the zeros once, here, makes every later append an overwrite whose
	 * fdatasync flushes only data. */
	if (!rc && !w->cfg.prealloc_fallocate)
		rc = zero_fill(w, fd, w->cfg.segment_size);
	if (!rc) {
		keel_wal_seg_header_encode(hdr, first);
		rc = full_pwrite(io, fd, hdr, KEEL_WAL_SEG_HDR, 0);
	}
	if (!rc)
		rc = io->ops->fdatasync(io, fd);
	io->ops->close(io, fd);
	if (!rc)
		rc = io->ops->rename(io, SEG_TMP, name);
	if (!rc)
		rc = io->ops->sync_dir(io);
	if (rc) {
		/* best effort; recovery drops an empty segment left behind */
		io->ops->unlink(io, SEG_TMP);
		io->ops->unlink(io, name);
		return keel_errmsg_set(w->errmsg, rc, "wal: create segment %s", name);
	}
	if (w->nsegs)
		last_seg(w)->end = w->tail;
	struct seg *s = &w->segs[w->nsegs++];
	*s = (struct seg){.first = first, .last = first - 1, .size = w->cfg.segment_size, .fd = -1};
	rc = open_seg_fd(w, s);
	if (rc) {
		w->nsegs--;
		return rc;
	}
	memset(w->tailblk, 0, ALIGN);
	w->tail = KEEL_WAL_SEG_HDR;
	return 0;
}

/* Loads the bytes of the block holding the end of the last segment into
 * tailblk (O_DIRECT writes rewrite that block). */
static int load_tailblk(struct keel_wal *w)
{
	memset(w->tailblk, 0, ALIGN);
	struct seg *s = last_seg(w);
	if (!s || w->align == 1)
		return 0;
	uint64_t start = w->tail / ALIGN * ALIGN;
	if (start == w->tail)
		return 0;
	int flags = 0;
	char name[32];
	seg_name(name, s->first);
	int fd = w->io->ops->open(w->io, name, &flags);
	if (fd < 0)
		return keel_errmsg_set(w->errmsg, fd, "wal: open %s", name);
	int64_t n = full_pread(w->io, fd, w->tailblk, w->tail - start, start);
	w->io->ops->close(w->io, fd);
	if (n < 0)
		return keel_errmsg_set(w->errmsg, (int)n, "wal: read %s", name);
	return 0;
}

/* Removes segments [from, nsegs) newest first, then syncs the directory. */
static int drop_segs_from(struct keel_wal *w, size_t from)
{
	if (from >= w->nsegs)
		return 0;
	while (w->nsegs > from) {
		struct seg *s = last_seg(w);
		char name[32];
		seg_name(name, s->first);
		close_seg_fd(w, s);
		int rc = w->io->ops->unlink(w->io, name);
		if (rc && rc != -ENOENT)
			return keel_errmsg_set(w->errmsg, rc, "wal: unlink %s", name);
		free(s->offs);
		w->nsegs--;
		if (w->nsegs)
			w->tail = last_seg(w)->end;
	}
	int rc = w->io->ops->sync_dir(w->io);
	return rc ? keel_errmsg_set(w->errmsg, rc, "wal: sync directory") : 0;
}

/* Cuts the log at offset off of segment di: later segments are removed,
 * then the file is truncated there and reallocated (the freed range reads
 * as zeros again) and synced. Until that sync a crash leaves the longer,
 * older log, which is what the caller had before asking. */
static int cut(struct keel_wal *w, size_t di, uint64_t off)
{
	struct seg *s = &w->segs[di];
	/* Until the cut is done, nothing may be written: a failure part-way
	 * leaves the log marked for repair to this same point. */
	size_t keep_n = seg_count(s);
	while (keep_n && s->offs[keep_n - 1] >= off)
		keep_n--;
	w->need_repair = true;
	w->repair_to = s->first + keep_n - 1;
	w->next_index = w->repair_to + 1;
	int rc = drop_segs_from(w, di + 1);
	if (rc)
		return rc;
	s = &w->segs[di];
	rc = open_seg_fd(w, s);
	if (rc)
		return rc;
	char name[32];
	seg_name(name, s->first);
	struct keel_wal_io *io = w->io;
	rc = io->ops->ftruncate(io, s->fd, off);
	if (!rc)
		rc = io->ops->fallocate(io, s->fd, s->size);
	if (!rc)
		rc = io->ops->fdatasync(io, s->fd);
	if (rc)
		return keel_errmsg_set(w->errmsg, rc, "wal: cut %s at offset %" PRIu64, name, off);
	size_t n = seg_count(s);
	while (n && s->offs[n - 1] >= off)
		n--;
	s->last = s->first + n - 1;
	w->tail = off;
	w->next_index = s->last + 1;
	w->dur_index = s->last;
	w->need_repair = false;
	return load_tailblk(w);
}

/* Drops every segment; the log is empty and continues at next (0: any). */
static int drop_all(struct keel_wal *w, uint64_t next)
{
	w->need_repair = true; /* until every segment is gone */
	w->repair_to = next ? next - 1 : 0;
	w->next_index = next;
	int rc = drop_segs_from(w, 0);
	if (rc)
		return rc;
	w->tail = 0;
	w->next_index = next;
	w->dur_index = next ? next - 1 : 0;
	w->need_repair = false;
	memset(w->tailblk, 0, ALIGN);
	return 0;
}

/* Offset just past entry `after` in segment di (after >= its first - 1). */
static uint64_t end_of(struct keel_wal *w, size_t di, uint64_t after)
{
	struct seg *s = &w->segs[di];
	if (after < s->first)
		return KEEL_WAL_SEG_HDR;
	if (after < s->last)
		return s->offs[after + 1 - s->first];
	return di + 1 == w->nsegs ? w->tail : s->end;
}

/* After a failed write or fdatasync: everything after repair_to goes, on
 * disk too, before anything new is written. repair_to is the entry before
 * the first failed append, which may be below the durable end when one
 * append spanned two writes and only the first succeeded: a failed append
 * leaves none of its entries behind. */
static int repair(struct keel_wal *w)
{
	if (!w->nsegs || w->repair_to + 1 < w->segs[0].first)
		return drop_all(w, w->repair_to + 1);
	size_t di = w->nsegs;
	while (di > 1 && w->segs[di - 1].first > w->repair_to)
		di--;
	di--;
	keel_debug("wal: repair to %" PRIu64 ": segment %zu/%zu first %" PRIu64 " last %" PRIu64
		   " end %" PRIu64 " tail %" PRIu64 " -> offset %" PRIu64,
		   w->repair_to, di, w->nsegs, w->segs[di].first, w->segs[di].last,
		   w->segs[di].end, w->tail, end_of(w, di, w->repair_to));
	int rc = cut(w, di, end_of(w, di, w->repair_to));
	if (!rc)
		keel_info("wal: continuing after a failed write; log ends at index %" PRIu64,
			  w->dur_index);
	return rc;
}

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
	if (!b->submitted)
		memset(b->buf + used, 0, padded - used);
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

static void fire(struct keel_wal *w, struct batch *b, int status)
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
	/* back to before the first failed append (repair() makes the disk
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
		fire(w, b, err);
		batch_free(w, b);
	}
}

static void kick(struct keel_wal *w)
{
	int rc = submit_head(w);
	if (rc < 0)
		fail_all(w, rc);
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
	if (!w->qhead && w->align > 1) {
		uint64_t blk = b->end / ALIGN * ALIGN;
		memcpy(w->tailblk, b->buf + (blk - b->start), b->end - blk);
	}
	/* writes to older segments are all done: their fds can go */
	for (size_t i = 0; i + 1 < w->nsegs && w->segs[i].first < b->seg_first; i++)
		close_seg_fd(w, &w->segs[i]);
	/* Callbacks first, then the next write: what the callbacks append
	 * joins the batch that goes out now instead of waiting a round trip
	 * (appends made here do not kick on their own). */
	w->in_cb = true;
	fire(w, b, 0);
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
		close_seg_fd(w, s);
		w->io->ops->unlink(w->io, name);
		free(s->offs);
		w->nsegs--;
	}
	if (w->nsegs)
		last_seg(w)->last = u->seg_last;
	w->tail = u->tail;
	w->next_index = u->next_index;
	load_tailblk(w);
}

int keel_wal_append(struct keel_wal *w, const struct keel_wal_entry *e, size_t n,
		    keel_wal_done_fn *cb, void *arg)
{
	if (!n)
		return keel_errmsg_set(w->errmsg, KEEL_EBADINPUT, "wal: empty append");
	if (w->need_repair) {
		int rc = repair(w);
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
			rc = create_seg(w, e[i].index);
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
		rc = seg_push_off(s, (uint32_t)w->tail);
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

/* ---- truncate / compact ------------------------------------------------- */

int keel_wal_truncate(struct keel_wal *w, uint64_t after)
{
	keel_wal_flush(w);
	if (w->need_repair) {
		int rc = repair(w);
		if (rc)
			return rc;
	}
	if (!w->nsegs || after >= last_seg(w)->last)
		return 0;
	size_t di = w->nsegs;
	while (di > 0 && w->segs[di - 1].first > after)
		di--;
	if (di == 0)
		return drop_all(w, after + 1);
	di--;
	return cut(w, di, end_of(w, di, after));
}

int keel_wal_compact(struct keel_wal *w, uint64_t upto)
{
	keel_wal_flush(w);
	if (w->need_repair) {
		int rc = repair(w);
		if (rc)
			return rc;
	}
	if (!w->nsegs) {
		/* Already empty (an earlier compact, or a fresh log): the
		 * contract still holds — the next append is upto + 1. A group
		 * host installing two snapshots in a row relies on it. */
		if (upto + 1 > w->next_index) {
			w->next_index = upto + 1;
			w->dur_index = upto;
		}
		return 0;
	}
	if (upto >= last_seg(w)->last)
		return drop_all(w, upto + 1);
	/* oldest first: a crash leaves a contiguous suffix */
	size_t k = 0;
	while (k + 1 < w->nsegs && w->segs[k + 1].first <= upto + 1)
		k++;
	if (!k)
		return 0;
	int rc = 0;
	size_t gone = 0;
	for (; gone < k; gone++) {
		char name[32];
		seg_name(name, w->segs[gone].first);
		close_seg_fd(w, &w->segs[gone]);
		rc = w->io->ops->unlink(w->io, name);
		if (rc && rc != -ENOENT) {
			rc = keel_errmsg_set(w->errmsg, rc, "wal: unlink %s", name);
			break;
		}
		rc = 0;
	}
	/* keep the list true to the disk: drop what went */
	for (size_t i = 0; i < gone; i++)
		free(w->segs[i].offs);
	memmove(w->segs, w->segs + gone, (w->nsegs - gone) * sizeof(*w->segs));
	w->nsegs -= gone;
	if (rc)
		return rc;
	rc = w->io->ops->sync_dir(w->io);
	return rc ? keel_errmsg_set(w->errmsg, rc, "wal: sync directory") : 0;
}

/* ---- reading ------------------------------------------------------------ */

int keel_wal_iterate(struct keel_wal *w, uint64_t from, keel_wal_entry_fn *fn, void *arg)
{
	keel_wal_flush(w);
	/* after a failed write, cut what was not durable before reading */
	int rc = w->need_repair ? repair(w) : 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < w->nsegs; i++) {
		struct seg *s = &w->segs[i];
		if (s->last < s->first || s->last < from)
			continue;
		uint64_t lo = from > s->first ? from : s->first;
		uint64_t off = s->offs[lo - s->first];
		uint64_t end = i + 1 == w->nsegs ? w->tail : s->end;
		char name[32];
		seg_name(name, s->first);
		int flags = 0;
		int fd = w->io->ops->open(w->io, name, &flags);
		if (fd < 0)
			return keel_errmsg_set(w->errmsg, fd, "wal: open %s", name);
		uint8_t *buf = malloc(end - off + 1);
		int64_t got = buf ? full_pread(w->io, fd, buf, end - off, off) : -ENOMEM;
		w->io->ops->close(w->io, fd);
		if (got < 0) {
			free(buf);
			return keel_errmsg_set(w->errmsg, (int)got, "wal: read %s", name);
		}
		for (uint64_t idx = lo; idx <= s->last && !rc; idx++) {
			uint64_t ro = s->offs[idx - s->first] - off;
			struct keel_wal_entry e;
			uint32_t crc;
			if (ro + KEEL_WAL_REC_HDR > (uint64_t)got) {
				rc = keel_errmsg_set(w->errmsg, KEEL_ECORRUPT,
						     "wal: %s offset %" PRIu64 ": short read", name,
						     ro + off);
				break;
			}
			memcpy(&crc, buf + ro, 4);
			memcpy(&e.len, buf + ro + 4, 4);
			memcpy(&e.index, buf + ro + 8, 8);
			memcpy(&e.term, buf + ro + 16, 8);
			memcpy(&e.type, buf + ro + 24, 4);
			e.data = buf + ro + KEEL_WAL_REC_HDR;
			if (e.len > (uint64_t)got - ro - KEEL_WAL_REC_HDR || e.index != idx ||
			    keel_crc32c(0, buf + ro + 4, KEEL_WAL_REC_HDR - 4 + e.len) != crc) {
				rc = keel_errmsg_set(w->errmsg, KEEL_ECORRUPT,
						     "wal: %s offset %" PRIu64 ": bad record on read",
						     name, ro + off);
				break;
			}
			rc = fn(arg, &e);
		}
		free(buf);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- hard state --------------------------------------------------------- */

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* 1 valid, 0 all zero (never written), -1 damaged */
static int hs_slot_parse(const uint8_t *p, uint64_t *seq, struct keel_wal_hard_state *hs)
{
	uint32_t crc;
	memcpy(&crc, p + 32, 4);
	if (get64(p) == HS_MAGIC && keel_crc32c(0, p, 32) == crc) {
		*seq = get64(p + 8);
		hs->term = get64(p + 16);
		hs->vote = get64(p + 24);
		return 1;
	}
	for (unsigned i = 0; i < HS_SLOT; i++)
		if (p[i])
			return -1;
	return 0;
}

static int hs_open(struct keel_wal *w)
{
	struct keel_wal_io *io = w->io;
	int flags = 0;
	int fd = io->ops->open(io, HS_NAME, &flags);
	if (fd == -ENOENT) {
		/* created whole under a temporary name so that a crash never
		 * leaves a half-made file under the real one */
		flags = KEEL_WAL_IO_CREATE;
		fd = io->ops->open(io, HS_TMP, &flags);
		if (fd < 0)
			return keel_errmsg_set(w->errmsg, fd, "wal: create %s", HS_TMP);
		int rc = io->ops->ftruncate(io, fd, 0);
		if (!rc)
			rc = io->ops->fallocate(io, fd, 2 * HS_SLOT);
		if (!rc)
			rc = io->ops->fdatasync(io, fd);
		io->ops->close(io, fd);
		if (!rc)
			rc = io->ops->rename(io, HS_TMP, HS_NAME);
		if (!rc)
			rc = io->ops->sync_dir(io);
		if (rc)
			return keel_errmsg_set(w->errmsg, rc, "wal: create %s", HS_NAME);
		flags = 0;
		fd = io->ops->open(io, HS_NAME, &flags);
	}
	if (fd < 0)
		return keel_errmsg_set(w->errmsg, fd, "wal: open %s", HS_NAME);
	w->hs_fd = fd;
	uint8_t buf[2 * HS_SLOT];
	memset(buf, 0, sizeof(buf));
	int64_t n = full_pread(io, fd, buf, sizeof(buf), 0);
	if (n < 0)
		return keel_errmsg_set(w->errmsg, (int)n, "wal: read %s", HS_NAME);
	uint64_t seq[2] = {0, 0};
	struct keel_wal_hard_state hs[2] = {{0, 0}, {0, 0}};
	int v0 = hs_slot_parse(buf, &seq[0], &hs[0]);
	int v1 = hs_slot_parse(buf + HS_SLOT, &seq[1], &hs[1]);
	if (v0 < 0 && v1 < 0)
		return keel_errmsg_set(w->errmsg, KEEL_ECORRUPT,
				       "wal: %s offsets 0 and %u: both slots damaged", HS_NAME,
				       HS_SLOT);
	/* a damaged slot is a torn write of the newer state: the other holds
	 * the last state that was acknowledged */
	int pick = (v1 > 0 && (v0 <= 0 || seq[1] > seq[0])) ? 1 : 0;
	if ((pick == 0 && v0 > 0) || (pick == 1 && v1 > 0)) {
		w->hs_seq = seq[pick];
		w->hs = hs[pick];
	}
	return 0;
}

int keel_wal_save_hard_state(struct keel_wal *w, const struct keel_wal_hard_state *hs)
{
	uint8_t slot[HS_SLOT];
	memset(slot, 0, sizeof(slot));
	uint64_t seq = w->hs_seq + 1;
	put64(slot, HS_MAGIC);
	put64(slot + 8, seq);
	put64(slot + 16, hs->term);
	put64(slot + 24, hs->vote);
	uint32_t crc = keel_crc32c(0, slot, 32);
	memcpy(slot + 32, &crc, 4);
	int rc = full_pwrite(w->io, w->hs_fd, slot, HS_SLOT, (seq & 1) * HS_SLOT);
	if (!rc)
		rc = w->io->ops->fdatasync(w->io, w->hs_fd);
	if (rc)
		return keel_errmsg_set(w->errmsg, rc, "wal: save hard state");
	w->hs_seq = seq;
	w->hs = *hs;
	return 0;
}

void keel_wal_hard_state(const struct keel_wal *w, struct keel_wal_hard_state *hs)
{
	*hs = w->hs;
}

/* ---- open / recover / close --------------------------------------------- */

struct names {
	uint64_t *firsts;
	size_t n, cap;
	struct keel_wal *w;
};

static int collect(void *arg, const char *name)
{
	struct names *ns = arg;
	if (!strcmp(name, SEG_TMP) || !strcmp(name, HS_TMP)) {
		/* an interrupted create: never renamed, so never part of the log */
		ns->w->io->ops->unlink(ns->w->io, name);
		return 0;
	}
	size_t len = strlen(name);
	if (len != 20 || strcmp(name + 16, ".seg"))
		return 0;
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return 0;
		v = v << 4 | (uint64_t)d;
	}
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 16;
		uint64_t *f = realloc(ns->firsts, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		ns->firsts = f;
		ns->cap = cap;
	}
	ns->firsts[ns->n++] = v;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int scan_rec(void *arg, uint64_t off, const struct keel_wal_entry *e)
{
	return seg_push_off(arg, (uint32_t)off);
}

static int recover(struct keel_wal *w)
{
	struct keel_wal_io *io = w->io;
	struct names ns = {.w = w};
	int rc = io->ops->list(io, collect, &ns);
	if (rc) {
		free(ns.firsts);
		return keel_errmsg_set(w->errmsg, rc, "wal: list directory");
	}
	if (ns.n)
		qsort(ns.firsts, ns.n, sizeof(uint64_t), cmp_u64);
	struct keel_wal_scan *scans = calloc(ns.n ? ns.n : 1, sizeof(*scans));
	w->segs = calloc(ns.n ? ns.n : 1, sizeof(*w->segs));
	if (!scans || !w->segs) {
		free(scans);
		free(ns.firsts);
		return -ENOMEM;
	}
	w->segcap = ns.n ? ns.n : 1;
	for (size_t i = 0; i < ns.n && !rc; i++) {
		char name[32];
		seg_name(name, ns.firsts[i]);
		struct seg *s = &w->segs[w->nsegs++];
		*s = (struct seg){.first = ns.firsts[i], .last = ns.firsts[i] - 1, .fd = -1};
		int flags = 0;
		int fd = io->ops->open(io, name, &flags);
		if (fd < 0) {
			rc = keel_errmsg_set(w->errmsg, fd, "wal: open %s", name);
			break;
		}
		int64_t size = io->ops->size(io, fd);
		uint8_t *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
		int64_t got = !buf ? (size < 0 ? size : -ENOMEM)
				   : full_pread(io, fd, buf, (size_t)size, 0);
		io->ops->close(io, fd);
		if (got < 0) {
			free(buf);
			rc = keel_errmsg_set(w->errmsg, (int)got, "wal: read %s", name);
			break;
		}
		s->size = (uint64_t)got;
		rc = keel_wal_seg_scan(buf, (size_t)got, &scans[i], scan_rec, s);
		s->end = scans[i].end;
		free(buf);
		if (rc == KEEL_ECORRUPT)
			rc = keel_errmsg_set(w->errmsg, rc, "wal: %s offset %" PRIu64 ": %s", name,
					     scans[i].bad_off, scans[i].why);
		else if (!rc && scans[i].first_index != s->first)
			rc = keel_errmsg_set(w->errmsg, KEEL_ECORRUPT,
					     "wal: %s offset 0: header says first index %" PRIu64,
					     name, scans[i].first_index);
		else if (rc)
			rc = keel_errmsg_set(w->errmsg, rc, "wal: scan %s", name);
	}
	free(ns.firsts);
	if (rc) {
		free(scans);
		return rc;
	}
	/* An empty segment before one that holds records was created but never
	 * written (its creation failed after the rename, or the append that
	 * made it was rolled back): it holds nothing, so it goes. */
	bool dropped = false;
	for (size_t i = w->nsegs; i-- > 0;) {
		bool later_records = false;
		for (size_t j = i + 1; j < w->nsegs; j++)
			later_records |= w->segs[j].last >= w->segs[j].first;
		struct seg *s = &w->segs[i];
		if (s->last >= s->first || scans[i].torn || !later_records)
			continue;
		char name[32];
		seg_name(name, s->first);
		keel_warn("wal: %s: removing an empty segment left by a failed create", name);
		rc = io->ops->unlink(io, name);
		if (rc) {
			free(scans);
			return keel_errmsg_set(w->errmsg, rc, "wal: unlink %s", name);
		}
		free(s->offs);
		memmove(s, s + 1, (w->nsegs - i - 1) * sizeof(*s));
		memmove(&scans[i], &scans[i + 1], (w->nsegs - i - 1) * sizeof(*scans));
		w->nsegs--;
		dropped = true;
	}
	if (dropped && (rc = io->ops->sync_dir(io))) {
		free(scans);
		return keel_errmsg_set(w->errmsg, rc, "wal: sync directory");
	}
	/* k: the last segment holding records */
	size_t k = w->nsegs;
	for (size_t i = w->nsegs; i-- > 0;)
		if (w->segs[i].last >= w->segs[i].first) {
			k = i;
			break;
		}
	for (size_t i = 0; k < w->nsegs && i <= k && !rc; i++) {
		char name[32];
		seg_name(name, w->segs[i].first);
		if (i < k && scans[i].torn)
			rc = keel_errmsg_set(w->errmsg, KEEL_ECORRUPT,
					     "wal: %s offset %" PRIu64
					     ": %s, and later segments hold records",
					     name, scans[i].end, scans[i].why);
		else if (i > 0 && w->segs[i].first != w->segs[i - 1].last + 1)
			rc = keel_errmsg_set(w->errmsg, KEEL_ECORRUPT,
					     "wal: %s offset 0: starts at index %" PRIu64
					     ", expected %" PRIu64 " (records missing)",
					     name, w->segs[i].first, w->segs[i - 1].last + 1);
	}
	if (rc) {
		free(scans);
		return rc;
	}
	size_t keep = k < w->nsegs ? k : (w->nsegs ? w->nsegs - 1 : 0);
	if (k == w->nsegs && w->nsegs > 1) {
		/* only empty segments: keep the newest, it says where the log
		 * continues; drop the rest oldest first */
		for (size_t i = 0; i + 1 < w->nsegs; i++) {
			char name[32];
			seg_name(name, w->segs[i].first);
			io->ops->unlink(io, name);
			free(w->segs[i].offs);
		}
		w->segs[0] = w->segs[w->nsegs - 1];
		scans[0] = scans[w->nsegs - 1];
		w->nsegs = 1;
		keep = 0;
		rc = io->ops->sync_dir(io);
	}
	if (!rc && w->nsegs)
		rc = drop_segs_from(w, keep + 1); /* empty, after the last record */
	if (rc) {
		free(scans);
		return rc;
	}
	if (!w->nsegs) {
		free(scans);
		w->next_index = 0;
		w->dur_index = 0;
		return 0;
	}
	struct seg *s = last_seg(w);
	struct keel_wal_scan sc = scans[keep];
	free(scans);
	w->tail = sc.end;
	if (sc.torn) {
		char name[32];
		seg_name(name, s->first);
		keel_warn("wal: %s: torn tail cut at offset %" PRIu64 " (%s)", name, sc.end,
			  sc.why);
		rc = cut(w, w->nsegs - 1, sc.end);
		if (rc)
			return rc;
	}
	rc = open_seg_fd(w, s);
	if (rc)
		return rc;
	/* What recovery read may have been only in the page cache (a process
	 * crash, not a power cut): sync it before anyone treats it as durable.
	 * Older segments were synced before writing moved past them. */
	rc = io->ops->fdatasync(io, s->fd);
	if (rc)
		return keel_errmsg_set(w->errmsg, rc, "wal: sync last segment");
	w->next_index = s->last + 1;
	w->dur_index = s->last;
	return load_tailblk(w);
}

int keel_wal_open(struct keel_wal **out, struct keel_wal_io *io, const struct keel_wal_config *cfg,
		  char *errmsg)
{
	*out = NULL;
	struct keel_wal *w = calloc(1, sizeof(*w));
	if (!w) {
		io->ops->destroy(io);
		return keel_errmsg_set(errmsg, -ENOMEM, "wal: open");
	}
	w->io = io;
	w->hs_fd = -1;
	w->cfg = cfg ? *cfg : (struct keel_wal_config){0};
	if (!w->cfg.segment_size)
		w->cfg.segment_size = 64u << 20;
	if (!w->cfg.max_batch)
		w->cfg.max_batch = 1u << 20;
	w->align = 1;
	int rc = 0;
	if (w->cfg.segment_size % ALIGN || w->cfg.segment_size < 4 * ALIGN ||
	    w->cfg.segment_size > UINT32_MAX)
		rc = keel_errmsg_set(w->errmsg, KEEL_ECONFIG,
				     "wal: segment_size must be a multiple of 4096, 16 KiB..4 GiB");
	w->tailblk = aligned_alloc(ALIGN, ALIGN);
	w->scratch = aligned_alloc(ALIGN, KEEL_WAL_SEG_HDR);
	if (!rc && (!w->tailblk || !w->scratch))
		rc = -ENOMEM;
	if (!rc)
		rc = recover(w);
	if (!rc)
		rc = hs_open(w);
	if (rc) {
		if (errmsg)
			snprintf(errmsg, KEEL_ERRMSG_LEN, "%s", w->errmsg);
		keel_wal_close(w);
		return rc;
	}
	keel_info("wal: opened via %s, %s: entries %" PRIu64 "..%" PRIu64 ", %zu segment(s)",
		  io->engine,
		  w->cfg.buffered ? "buffered"
		  : !w->nsegs	  ? "O_DIRECT where supported"
		  : w->direct	  ? "O_DIRECT"
				  : "buffered (no O_DIRECT on this filesystem)",
		  keel_wal_first_index(w), keel_wal_last_index(w), w->nsegs);
	*out = w;
	return 0;
}

void keel_wal_close(struct keel_wal *w)
{
	if (!w)
		return;
	/* let the write in flight finish (its buffer is ours); later queued
	 * batches were never written: they fail */
	while (w->inflight && w->io->ops->reap(w->io, 1) >= 0) {
	}
	struct batch *b = w->qhead;
	w->qhead = w->qtail = NULL;
	/* appends that failed must not reappear at the next open */
	if (w->need_repair && repair(w))
		keel_warn("wal: close: %s", w->errmsg);
	while (b) {
		struct batch *n = b->next;
		fire(w, b, KEEL_ESTOPPED);
		free(b->buf);
		free(b->cbs);
		free(b);
		b = n;
	}
	while (w->freeb) {
		b = w->freeb;
		w->freeb = b->next;
		free(b->buf);
		free(b->cbs);
		free(b);
	}
	for (size_t i = 0; i < w->nsegs; i++) {
		close_seg_fd(w, &w->segs[i]);
		free(w->segs[i].offs);
	}
	free(w->segs);
	if (w->hs_fd >= 0)
		w->io->ops->close(w->io, w->hs_fd);
	w->io->ops->destroy(w->io);
	free(w->tailblk);
	free(w->scratch);
	free(w);
}

uint64_t keel_wal_first_index(const struct keel_wal *w)
{
	for (size_t i = 0; i < w->nsegs; i++)
		if (w->segs[i].last >= w->segs[i].first)
			return w->segs[i].first;
	return 0;
}

uint64_t keel_wal_last_index(const struct keel_wal *w)
{
	return w->next_index ? w->next_index - 1 : 0;
}

uint64_t keel_wal_durable_index(const struct keel_wal *w)
{
	return w->dur_index;
}

const char *keel_wal_errmsg(const struct keel_wal *w)
{
	return w->errmsg;
}

const char *keel_wal_engine_name(const struct keel_wal *w)
{
	return w->io->engine;
}

void keel_wal_get_stats(const struct keel_wal *w, struct keel_wal_stats *st)
{
	*st = w->stats;
}

bool keel_wal_is_direct(const struct keel_wal *w)
{
	return w->direct;
}
