/* WAL segment files (include/keel/wal.h): create, open, cut, drop; truncate
 * and compact; reading entries back. */
#include "consensus/wal/wal_internal.h"

int wal_seg_push_off(struct seg *s, uint32_t off)
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


int64_t wal_full_pread(struct keel_wal_io *io, int fd, void *buf, size_t len, uint64_t off)
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


int wal_full_pwrite(struct keel_wal_io *io, int fd, const void *buf, size_t len, uint64_t off)
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

int wal_open_seg_fd(struct keel_wal *w, struct seg *s)
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

void wal_close_seg_fd(struct keel_wal *w, struct seg *s)
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
		rc = wal_full_pwrite(w->io, fd, z, n, off);
	}
	free(z);
	return rc;
}

/* New segment: written and synced under a temporary name, then renamed and
 * the directory synced, so after a crash it either exists whole (header
 * durable, rest zero) or not at all. */
int wal_create_seg(struct keel_wal *w, uint64_t first)
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
	/* the spare, if the helper has one ready; else as below */
	if (wal_spare_take(w, first, name) == 1) {
		w->stats.segs_prepared++;
		return wal_add_created_seg(w, first);
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
		rc = wal_full_pwrite(io, fd, hdr, KEEL_WAL_SEG_HDR, 0);
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
	return wal_add_created_seg(w, first);
}

/* Segment `first`, just created whole on disk, becomes the last one. */
int wal_add_created_seg(struct keel_wal *w, uint64_t first)
{
	if (w->nsegs)
		last_seg(w)->end = w->tail;
	struct seg *s = &w->segs[w->nsegs++];
	*s = (struct seg){.first = first, .last = first - 1, .size = w->cfg.segment_size, .fd = -1};
	int rc = wal_open_seg_fd(w, s);
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
int wal_load_tailblk(struct keel_wal *w)
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
	int64_t n = wal_full_pread(w->io, fd, w->tailblk, w->tail - start, start);
	w->io->ops->close(w->io, fd);
	if (n < 0)
		return keel_errmsg_set(w->errmsg, (int)n, "wal: read %s", name);
	return 0;
}

/* Removes segments [from, nsegs) newest first, then syncs the directory. */
int wal_drop_segs_from(struct keel_wal *w, size_t from)
{
	if (from >= w->nsegs)
		return 0;
	while (w->nsegs > from) {
		struct seg *s = last_seg(w);
		char name[32];
		seg_name(name, s->first);
		wal_close_seg_fd(w, s);
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
int wal_cut(struct keel_wal *w, size_t di, uint64_t off)
{
	struct seg *s = &w->segs[di];
	/* Until the wal_cut is done, nothing may be written: a failure part-way
	 * leaves the log marked for wal_repair to this same point. */
	size_t keep_n = seg_count(s);
	while (keep_n && s->offs[keep_n - 1] >= off)
		keep_n--;
	w->need_repair = true;
	w->repair_to = s->first + keep_n - 1;
	w->next_index = w->repair_to + 1;
	int rc = wal_drop_segs_from(w, di + 1);
	if (rc)
		return rc;
	s = &w->segs[di];
	rc = wal_open_seg_fd(w, s);
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
		return keel_errmsg_set(w->errmsg, rc, "wal: wal_cut %s at offset %" PRIu64, name, off);
	size_t n = seg_count(s);
	while (n && s->offs[n - 1] >= off)
		n--;
	s->last = s->first + n - 1;
	w->tail = off;
	w->next_index = s->last + 1;
	w->dur_index = s->last;
	w->need_repair = false;
	return wal_load_tailblk(w);
}

/* Drops every segment; the log is empty and continues at next (0: any). */
static int drop_all(struct keel_wal *w, uint64_t next)
{
	w->need_repair = true; /* until every segment is gone */
	w->repair_to = next ? next - 1 : 0;
	w->next_index = next;
	int rc = wal_drop_segs_from(w, 0);
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
int wal_repair(struct keel_wal *w)
{
	if (!w->nsegs || w->repair_to + 1 < w->segs[0].first)
		return drop_all(w, w->repair_to + 1);
	size_t di = w->nsegs;
	while (di > 1 && w->segs[di - 1].first > w->repair_to)
		di--;
	di--;
	keel_debug("wal: wal_repair to %" PRIu64 ": segment %zu/%zu first %" PRIu64 " last %" PRIu64
		   " end %" PRIu64 " tail %" PRIu64 " -> offset %" PRIu64,
		   w->repair_to, di, w->nsegs, w->segs[di].first, w->segs[di].last,
		   w->segs[di].end, w->tail, end_of(w, di, w->repair_to));
	int rc = wal_cut(w, di, end_of(w, di, w->repair_to));
	if (!rc)
		keel_info("wal: continuing after a failed write; log ends at index %" PRIu64,
			  w->dur_index);
	return rc;
}

/* ---- truncate / compact ------------------------------------------------- */

int keel_wal_truncate(struct keel_wal *w, uint64_t after)
{
	keel_wal_flush(w);
	if (w->need_repair) {
		int rc = wal_repair(w);
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
	return wal_cut(w, di, end_of(w, di, after));
}

int keel_wal_compact(struct keel_wal *w, uint64_t upto)
{
	keel_wal_flush(w);
	if (w->need_repair) {
		int rc = wal_repair(w);
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
		wal_close_seg_fd(w, &w->segs[gone]);
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
	/* after a failed write, wal_cut what was not durable before reading */
	int rc = w->need_repair ? wal_repair(w) : 0;
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
		int64_t got = buf ? wal_full_pread(w->io, fd, buf, end - off, off) : -ENOMEM;
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
			bool fits = e.len <= (uint64_t)got - ro - KEEL_WAL_REC_HDR;
#ifdef KEEL_MUTANT_WAL_ITERATE_NO_CRC
			bool crc_ok = true; /* MUTANT: recovery checked it once, trust it */
#else
			bool crc_ok = fits && keel_crc32c(0, buf + ro + 4,
							  KEEL_WAL_REC_HDR - 4 + e.len) == crc;
#endif
			if (!fits || e.index != idx || !crc_ok) {
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
