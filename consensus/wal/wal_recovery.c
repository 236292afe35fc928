/* WAL open, recovery and close (include/keel/wal.h): list the segments,
 * scan each, cut a torn tail, refuse mid-log corruption, remove leftovers of
 * interrupted operations; accessors. */
#include "consensus/wal/wal_internal.h"

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
	return wal_seg_push_off(arg, (uint32_t)off);
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
				   : wal_full_pread(io, fd, buf, (size_t)size, 0);
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
#ifdef KEEL_MUTANT_WAL_RECOVERY_CUTS_LAST_SEG
		/* MUTANT: only the newest segment is written, so any bad record
		 * in it is taken for a torn write and cut. */
		if (rc == KEEL_ECORRUPT && i + 1 == ns.n && scans[i].end >= KEEL_WAL_SEG_HDR) {
			rc = 0;
			scans[i].torn = true;
		}
#endif
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
		rc = wal_drop_segs_from(w, keep + 1); /* empty, after the last record */
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
		keel_warn("wal: %s: torn tail wal_cut at offset %" PRIu64 " (%s)", name, sc.end,
			  sc.why);
		rc = wal_cut(w, w->nsegs - 1, sc.end);
		if (rc)
			return rc;
	}
	rc = wal_open_seg_fd(w, s);
	if (rc)
		return rc;
	/* What recovery read may have been only in the page cache (a process
	 * crash, not a power cut): sync it before anyone treats it as durable.
	 * Older segments were synced before writing moved past them. */
#ifdef KEEL_MUTANT_WAL_RECOVERY_NO_SYNC
	rc = 0; /* MUTANT: the records read are trusted unsynced */
#else
	rc = io->ops->fdatasync(io, s->fd);
#endif
	if (rc)
		return keel_errmsg_set(w->errmsg, rc, "wal: sync last segment");
	w->next_index = s->last + 1;
	w->dur_index = s->last;
	return wal_load_tailblk(w);
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
		rc = wal_hs_open(w);
	/* Recovery read the names in the directory as the page cache has
	 * them. After a process crash (not a power cut) some may not be
	 * durable yet: a segment renamed into place just before the crash,
	 * whose directory sync never ran. The layer above acts on the log
	 * open reports (and appends to that segment), so the names are made
	 * durable first, as the last segment's bytes are in recover(). */
#ifndef KEEL_MUTANT_WAL_OPEN_NO_DIR_SYNC /* MUTANT: names trusted unsynced */
	if (!rc && (rc = io->ops->sync_dir(io)))
		rc = keel_errmsg_set(w->errmsg, rc, "wal: sync directory");
#endif
	if (rc) {
		if (errmsg)
			snprintf(errmsg, KEEL_ERRMSG_LEN, "%s", w->errmsg);
		keel_wal_close(w);
		return rc;
	}
	wal_spare_start(w);
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
	wal_spare_stop(w);
	/* let the write in flight finish (its buffer is ours); later queued
	 * batches were never written: they fail */
	while (w->inflight && w->io->ops->reap(w->io, 1) >= 0) {
	}
	struct batch *b = w->qhead;
	w->qhead = w->qtail = NULL;
	/* appends that failed must not reappear at the next open */
	if (w->need_repair && wal_repair(w))
		keel_warn("wal: close: %s", w->errmsg);
	while (b) {
		struct batch *n = b->next;
		wal_fire(w, b, KEEL_ESTOPPED);
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
		wal_close_seg_fd(w, &w->segs[i]);
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
