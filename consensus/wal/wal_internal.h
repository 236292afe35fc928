/* Private to the WAL (consensus/wal/): the struct and the calls between its
 * files. wal_segment.c (segment files, cut, truncate, compact, reading),
 * wal_commit.c (batches, group commit, append, poll), wal_hardstate.c (the
 * two-slot hard state) and wal_recovery.c (open, recovery, close). */
#ifndef KEEL_WAL_INTERNAL_H
#define KEEL_WAL_INTERNAL_H

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
#define SEG_SPARE "spare.tmp" /* the next segment, prepared ahead (wal_spare.c) */

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
	uint64_t submit_ns; /* keel_now_ns at the first submission: the sync histogram */
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
	struct wal_spare *spare; /* the helper preparing the next segment, or NULL */
	bool spare_asked;        /* asked for the current segment's successor */
	char errmsg[KEEL_ERRMSG_LEN];
};

static inline void seg_name(char *buf, uint64_t first)
{
	snprintf(buf, 32, "%016" PRIx64 ".seg", first);
}

static inline struct seg *last_seg(struct keel_wal *w)
{
	return w->nsegs ? &w->segs[w->nsegs - 1] : NULL;
}

static inline size_t seg_count(const struct seg *s)
{
	return (size_t)(s->last + 1 - s->first);
}

/* wal_spare.c: the next segment prepared by a helper thread (real files only) */
struct wal_spare;
void wal_spare_start(struct keel_wal *w);
void wal_spare_stop(struct keel_wal *w);
int wal_spare_take(struct keel_wal *w, uint64_t first, const char *name);
void wal_spare_ask(struct keel_wal *w);

/* wal_segment.c: segment files, truncation, compaction, reading */
int wal_seg_push_off(struct seg *s, uint32_t off);
int64_t wal_full_pread(struct keel_wal_io *io, int fd, void *buf, size_t len, uint64_t off);
int wal_full_pwrite(struct keel_wal_io *io, int fd, const void *buf, size_t len, uint64_t off);
int wal_open_seg_fd(struct keel_wal *w, struct seg *s);
int wal_add_created_seg(struct keel_wal *w, uint64_t first);
void wal_close_seg_fd(struct keel_wal *w, struct seg *s);
int wal_create_seg(struct keel_wal *w, uint64_t first);
int wal_load_tailblk(struct keel_wal *w);
int wal_drop_segs_from(struct keel_wal *w, size_t from);
int wal_cut(struct keel_wal *w, size_t di, uint64_t off);
int wal_repair(struct keel_wal *w);
/* wal_commit.c: batches, group commit, append */
void wal_fire(struct keel_wal *w, struct batch *b, int status);
/* wal_hardstate.c */
int wal_hs_open(struct keel_wal *w);

#endif
