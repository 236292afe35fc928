/*
 * keel/wal.h — the durable log of one consensus group (consensus/wal/).
 *
 * A WAL is a directory of preallocated segment files plus a hard-state file:
 *
 *   <dir>/<first index, 16 hex digits>.seg   segments, contiguous indices
 *   <dir>/hardstate                           (term, vote) in two CRC'd slots
 *
 * Segment: a 4096-byte header block (magic "KEELWAL1", version, first index,
 * CRC32C) then records, each 8-byte aligned:
 *
 *   u32 crc32c   over bytes 4..32 of this header and the payload
 *   u32 len      payload bytes
 *   u64 index    u64 term    u32 type    u32 reserved (0)
 *   payload, zero padding to 8 bytes
 *
 * The rest of a segment is zero (fallocate), so an all-zero record header
 * marks the end of the data. Integers are little-endian.
 *
 * Threads and ownership: a struct keel_wal belongs to one thread (the shard
 * that owns the consensus group); no function may be called concurrently on
 * the same WAL. Completion callbacks run on that thread, inside
 * keel_wal_poll / keel_wal_wait / keel_wal_flush; a callback may append
 * (that is how group commit fills the next write) but must not close,
 * flush, truncate, compact or iterate the WAL. The WAL owns the I/O
 * backend passed to keel_wal_open and destroys it in keel_wal_close.
 *
 * Durability: an append's callback reports status 0 only after the write
 * and an fdatasync that covers it both succeeded, and only after every
 * earlier append is durable too (callbacks fire in index order). After a
 * failed write or fdatasync the data is never reported durable: the failed
 * appends and every append queued behind them complete with the error, the
 * log's end goes back to the last durable record, and the next append must
 * continue from there (keel_wal_last_index). The region after the durable end
 * is cut (ftruncate + fallocate) before the next write, so bytes of a failed
 * write can never resurface after a crash; if that cut itself fails (ENOSPC),
 * appends keep failing with that error and are retried once space returns.
 */
#ifndef KEEL_WAL_H
#define KEEL_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * I/O backend under the WAL: an ops struct (STYLE.md). Every file name is
 * relative to the backend's directory. Synchronous calls return 0 / a byte
 * count, or -errno. The asynchronous part is submit + reap: one request is
 * "write buf at off, then (if datasync) fdatasync the file", linked so that
 * the sync runs only after the whole write succeeded.
 *
 * Backends: keel_wal_io_posix_new (real files; io_uring through a keel_fileq,
 * or pwrite/fdatasync on a helper thread where io_uring is refused or the
 * process runs the epoll reactor), and the fault-injecting
 * in-memory disk in tests/lib/faultdisk.h.
 * ------------------------------------------------------------------------- */

struct keel_wal_io;

struct keel_wal_io_req {
	/* set by the caller; buf stays owned by the caller and must stay
	 * valid and unchanged until done() runs */
	int fd;
	bool datasync;
	const void *buf;
	uint32_t len;
	uint64_t off;
	void (*done)(struct keel_wal_io_req *req);
	/* set by the backend before done(): res = bytes written (may be short)
	 * or -errno; sync_res = 0 or -errno of the fdatasync, or 1 when it did
	 * not run (not requested, or the write failed or was short). */
	int res;
	int sync_res;
	/* backend's use while the request is in flight */
	struct keel_wal_io_req *next;
	void *priv;
};

enum keel_wal_open_flags {
	KEEL_WAL_IO_CREATE = 1, /* create if missing */
	KEEL_WAL_IO_DIRECT = 2, /* O_DIRECT; cleared on return if unsupported */
};

struct keel_wal_io_ops {
	/* open returns an fd >= 0; *flags may lose KEEL_WAL_IO_DIRECT */
	int (*open)(struct keel_wal_io *io, const char *name, int *flags);
	int (*close)(struct keel_wal_io *io, int fd);
	int64_t (*pread)(struct keel_wal_io *io, int fd, void *buf, size_t len, uint64_t off);
	int64_t (*pwrite)(struct keel_wal_io *io, int fd, const void *buf, size_t len,
			  uint64_t off);
	int (*fdatasync)(struct keel_wal_io *io, int fd);
	/* make [0, len) allocated, new bytes zero; the size becomes >= len */
	int (*fallocate)(struct keel_wal_io *io, int fd, uint64_t len);
	int (*ftruncate)(struct keel_wal_io *io, int fd, uint64_t len);
	int64_t (*size)(struct keel_wal_io *io, int fd);
	int (*rename)(struct keel_wal_io *io, const char *from, const char *to);
	int (*unlink)(struct keel_wal_io *io, const char *name);
	/* fsync of the directory: makes creates, renames and unlinks durable */
	int (*sync_dir)(struct keel_wal_io *io);
	/* calls fn for every regular file name; stops at fn's non-zero return */
	int (*list)(struct keel_wal_io *io, int (*fn)(void *arg, const char *name), void *arg);
	int (*submit)(struct keel_wal_io *io, struct keel_wal_io_req *req);
	/* completes finished requests (calls their done()); blocks until at
	 * least min_complete finished when min_complete > 0. Returns the
	 * number completed or -errno. */
	int (*reap)(struct keel_wal_io *io, unsigned min_complete);
	/* an fd that becomes readable when reap has work (for a reactor), or -1 */
	int (*event_fd)(struct keel_wal_io *io);
	void (*destroy)(struct keel_wal_io *io);
};

struct keel_wal_io {
	const struct keel_wal_io_ops *ops;
	void *impl;
	const char *engine; /* "io_uring", "thread", "faultdisk": for logs */
	/* the file operations (open .. list) may run on a helper thread of
	 * the WAL's, concurrently with the owner's calls: true for the real
	 * files' backend, whose operations are plain syscalls; a backend that
	 * must see every call in order (the simulations' fault disk) leaves
	 * it false, and the WAL then prepares no segment ahead */
	bool background;
	char errmsg[KEEL_ERRMSG_LEN];
};

enum keel_wal_engine {
	KEEL_WAL_ENGINE_AUTO = 0,  /* io_uring, else the helper thread */
	KEEL_WAL_ENGINE_URING = 1, /* io_uring or fail */
	KEEL_WAL_ENGINE_THREAD = 2,
	/* synchronous calls only (submit fails with -EOPNOTSUPP): for stores
	 * that never append, such as a group's snapshot directory */
	KEEL_WAL_ENGINE_SYNC = 3,
};

/* Real files under dir (created if missing). AUTO tries io_uring and falls
 * back to pwrite/fdatasync on a helper thread when io_uring_queue_init is
 * refused (EPERM, ENOSYS) or keel_reactor_default() is epoll
 * (KEEL_REACTOR=epoll); it logs one line naming the path taken. The
 * environment variable KEEL_WAL_ENGINE=thread|uring overrides AUTO. */
int keel_wal_io_posix_new(struct keel_wal_io **out, const char *dir, enum keel_wal_engine engine,
			  char *errmsg);

/* ---------------------------------------------------------------------------
 * The log.
 * ------------------------------------------------------------------------- */

struct keel_wal;

struct keel_wal_config {
	uint64_t segment_size; /* bytes, multiple of 4096, >= 16 KiB; default 64 MiB */
	uint32_t max_batch;    /* most bytes in one write; default 1 MiB */
	bool buffered;         /* false (default): O_DIRECT where the filesystem
				* supports it; true: buffered writes + fdatasync */
	bool prealloc_fallocate; /* false (default): new segments are written with
				  * zeros once, so appends overwrite allocated
				  * blocks and fdatasync flushes data only (costs
				  * one segment of writes at each roll); true:
				  * fallocate only (cheap roll, slower fdatasync) */
};

struct keel_wal_entry {
	uint64_t index;
	uint64_t term;
	uint32_t type;
	uint32_t len;
	const void *data;
};

struct keel_wal_hard_state {
	uint64_t term;
	uint64_t vote;
};

/* status 0: every entry up to last_index is durable. Otherwise a negative
 * code (-EIO, -ENOSPC, ...) and these entries are not in the log. */
typedef void keel_wal_done_fn(void *arg, uint64_t last_index, int status);
/* called per entry by keel_wal_iterate; e->data valid during the call */
typedef int keel_wal_entry_fn(void *arg, const struct keel_wal_entry *e);

/* Opens (creating if empty) the log in io's directory and recovers it: cuts
 * a torn tail, removes leftovers of interrupted operations, and makes what
 * it found durable (the last segment, the hard state, the directory): after
 * a process crash those may have been in the page cache only, and what open
 * reports must survive a later power cut. Corruption that
 * is not a torn tail returns KEEL_ECORRUPT with file and offset in errmsg,
 * and io is destroyed. cfg may be NULL for defaults. */
int keel_wal_open(struct keel_wal **out, struct keel_wal_io *io, const struct keel_wal_config *cfg,
		  char *errmsg);
/* Waits for writes in flight, fails appends not yet written with
 * KEEL_ESTOPPED, closes files, destroys the backend. */
void keel_wal_close(struct keel_wal *w);

/* first index present (0 when empty), last appended (durable or not),
 * last durable */
uint64_t keel_wal_first_index(const struct keel_wal *w);
uint64_t keel_wal_last_index(const struct keel_wal *w);
uint64_t keel_wal_durable_index(const struct keel_wal *w);
const char *keel_wal_errmsg(const struct keel_wal *w);
const char *keel_wal_engine_name(const struct keel_wal *w);
bool keel_wal_is_direct(const struct keel_wal *w);

/* Counters since open: writes submitted (each with its fdatasync), bytes
 * written (with O_DIRECT this includes the rewritten partial block and the
 * padding), successful write+fdatasync pairs, records made durable. */
struct keel_wal_stats {
	uint64_t writes, bytes_written, syncs, records_durable;
	uint64_t segs_prepared; /* rolls onto a segment the helper had prepared ahead */
	/* How long each successful batch took from its submission to its
	 * completion: the write and its linked fdatasync together (io_uring
	 * links them, so the sync alone cannot be timed apart), on the
	 * process's monotonic clock. sync_le[i] counts the batches that took
	 * at most keel_wal_sync_bounds_us[i] (not cumulative: a Prometheus
	 * exporter sums them); the rest took longer. sync_ns_sum is the total. */
#define KEEL_WAL_SYNC_BUCKETS 12
	uint64_t sync_le[KEEL_WAL_SYNC_BUCKETS];
	uint64_t sync_ns_sum;
};
/* The upper bounds of the sync duration buckets, in microseconds. */
extern const uint32_t keel_wal_sync_bounds_us[KEEL_WAL_SYNC_BUCKETS];
void keel_wal_get_stats(const struct keel_wal *w, struct keel_wal_stats *st);

/* Queues n entries with contiguous indices starting at last_index + 1 (any
 * index >= 1 when the log is empty). Payloads are copied before return.
 * cb (may be NULL) runs once, when all n are durable or have failed.
 * Returns 0, or an error without queueing anything (bad index, too big,
 * segment creation failed: ENOSPC...). */
int keel_wal_append(struct keel_wal *w, const struct keel_wal_entry *e, size_t n,
		    keel_wal_done_fn *cb, void *arg);
/* Event-driven use: runs completed I/O's callbacks without blocking;
 * returns how many appends completed, or a negative error. */
int keel_wal_poll(struct keel_wal *w);
/* Blocks until some I/O completes (returns at once when none is in flight),
 * then as keel_wal_poll. */
int keel_wal_wait(struct keel_wal *w);
/* Blocks until every queued append completed; 0 or the first failure. */
int keel_wal_flush(struct keel_wal *w);
/* Readable when keel_wal_poll has work; -1 if the backend has none. */
int keel_wal_event_fd(const struct keel_wal *w);

/* Shard integration (consensus/wal/wal_shard.c): drives the WAL from the
 * reactor loop of `shard` (include/keel/runtime.h) with a multishot
 * readiness request (keel_io_poll_multi) on the WAL's event fd, so
 * completions wake a sleeping shard and callbacks run from its loop. Call on the shard's
 * thread; keel_wal_flush/truncate/compact/iterate still block that thread
 * until their I/O is done. Detach before keel_wal_close. */
struct keel_shard;
struct keel_wal_reactor;
int keel_wal_attach(struct keel_wal *w, struct keel_shard *shard, struct keel_wal_reactor **out);
void keel_wal_detach(struct keel_wal_reactor *r);

/* Removes every entry with index > after (a Raft conflict). Synchronous:
 * flushes queued appends first, then deletes later segments newest first
 * and cuts the segment holding `after`; a crash at any point leaves either
 * the old log or a log whose end is between `after` and the old end. */
int keel_wal_truncate(struct keel_wal *w, uint64_t after);
/* Drops whole segments whose entries are all <= upto (after a snapshot);
 * entries > upto are kept. When upto >= last index the log becomes empty and
 * the next append must have index upto + 1. Synchronous; a crash leaves a
 * contiguous suffix of the old log. */
int keel_wal_compact(struct keel_wal *w, uint64_t upto);

/* Reads entries [from, last durable or queued] in order (synchronous). */
int keel_wal_iterate(struct keel_wal *w, uint64_t from, keel_wal_entry_fn *fn, void *arg);

/* Hard state: two alternating 512-byte slots, each with a sequence number
 * and CRC; a write goes to the older slot then fdatasync, so a torn write
 * leaves the previous state readable. Synchronous: durable on return 0. */
int keel_wal_save_hard_state(struct keel_wal *w, const struct keel_wal_hard_state *hs);
void keel_wal_hard_state(const struct keel_wal *w, struct keel_wal_hard_state *hs);

/* ---------------------------------------------------------------------------
 * Format helpers (pure; consensus/wal/wal_format.c). Also what the fuzzer drives.
 * ------------------------------------------------------------------------- */

#define KEEL_WAL_SEG_HDR 4096u
#define KEEL_WAL_REC_HDR 32u
#define KEEL_WAL_MAX_RECORD (64u << 20)

/* Records are checksummed with keel_crc32c (keel/base.h). */

static inline uint32_t keel_wal_rec_size(uint32_t len)
{
	return (KEEL_WAL_REC_HDR + len + 7u) & ~7u;
}
/* Encodes one record at dst (keel_wal_rec_size(e->len) bytes). */
void keel_wal_rec_encode(void *dst, const struct keel_wal_entry *e);
/* Encodes a segment header block (KEEL_WAL_SEG_HDR bytes). */
void keel_wal_seg_header_encode(void *dst, uint64_t first_index);

struct keel_wal_scan {
	uint64_t first_index; /* from the header */
	uint64_t last_index;  /* of the last valid record; first_index - 1 if none */
	uint64_t end;         /* offset just past the last valid record */
	bool torn;            /* a bad record at `end` with nothing valid after it */
	uint64_t bad_off;     /* KEEL_ECORRUPT: where */
	const char *why;      /* KEEL_ECORRUPT / torn: what */
};
/* Scans a segment image. fn (may be NULL) gets each valid record with its
 * offset. Returns 0 (clean end or torn tail, see s->torn), KEEL_ECORRUPT for
 * a bad header or a bad record followed by a valid one (s->bad_off, s->why),
 * or fn's non-zero return. Never reads outside buf. */
int keel_wal_seg_scan(const void *buf, size_t len, struct keel_wal_scan *s,
		      int (*fn)(void *arg, uint64_t off, const struct keel_wal_entry *e), void *arg);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_WAL_H */
