/*
 * tests/lib/faultdisk.h — an in-memory disk with fault injection and a
 * precise crash model, usable as the WAL's I/O backend (struct keel_wal_io)
 * and as the simulated disk of whole-cluster simulations.
 *
 * CRASH MODEL (what survives keel_faultdisk_reboot):
 *  - File contents: each file has a volatile image (what reads see) and a
 *    durable image. fdatasync(fd) copies the volatile image, size included,
 *    to the durable one. A crash replaces every volatile image by its
 *    durable image: every byte written since the file's last fdatasync is
 *    lost, and so are ftruncate and fallocate since then.
 *  - Torn write: the one exception is the most recent write if its file was
 *    not synced after it (the "last unsynced write"): reboot(torn) keeps its
 *    first `torn` bytes (0 = none, >= its length = all of it), as a disk
 *    that was part-way through the write when power went.
 *  - Names: creating, renaming and unlinking change a volatile directory;
 *    sync_dir copies it to the durable directory, all at once. A crash
 *    restores the durable directory: a file created but not yet made
 *    durable by sync_dir vanishes, an unlink not yet synced is undone.
 *  - Crash point: keel_faultdisk_crash_at(d, n) lets n - 1 more mutating
 *    operations (write, fdatasync, fallocate, ftruncate, create, rename,
 *    unlink, sync_dir; an async write+fdatasync counts as two) happen; the
 *    nth does not, and from then on every operation fails with -EIO (power
 *    is off) until reboot. Sweeping n from 1 to keel_faultdisk_ops() of a
 *    clean run crashes at every I/O step.
 *  - Process crash: crash_at followed by keel_faultdisk_restart instead of
 *    reboot is the process dying at that step while the machine keeps
 *    running. Nothing is lost: the page cache (the volatile images and
 *    directory) stays as it was, synced or not, and the next process reads
 *    it. A reboot later cuts the power on it, with the rules above (what
 *    the new process did not sync is lost then).
 *  - Faults without a crash: keel_faultdisk_fail makes the nth operation of
 *    the chosen kinds fail with an error (ENOSPC, EIO...), once or until
 *    cleared; keel_faultdisk_short_write makes the nth write write fewer
 *    bytes. A failed write changes nothing; a failed fdatasync makes
 *    nothing durable (and, like Linux after an fsync error, a later
 *    fdatasync does not bring the lost data back: the volatile image keeps
 *    it, but nothing is claimed).
 *
 * Asynchronous requests (submit) are carried out at once, in order, and
 * their completions delivered by the next reap, so runs are deterministic.
 * With keel_faultdisk_defer_async(d, true) they are carried out at the
 * reap instead, as a disk that takes time would: a crash between submit
 * and reap loses the request entirely (what a host that acknowledges
 * before its write completes gets wrong).
 *
 * Ownership: the disk outlives the backends made from it; a backend
 * (keel_faultdisk_io) is destroyed by its owner (the WAL, on close), which
 * closes its files. Single-threaded: one thread uses a disk at a time.
 */
#ifndef KEEL_TESTS_FAULTDISK_H
#define KEEL_TESTS_FAULTDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/wal.h"

struct keel_faultdisk;

enum keel_faultdisk_kind {
	KEEL_FD_WRITE = 1, /* pwrite, the write of an async request */
	KEEL_FD_SYNC = 2,  /* fdatasync (also async), sync_dir */
	KEEL_FD_ALLOC = 4, /* fallocate */
	KEEL_FD_META = 8,  /* create, rename, unlink, ftruncate */
	KEEL_FD_READ = 16, /* open, pread, size, list */
	KEEL_FD_MUTATING = KEEL_FD_WRITE | KEEL_FD_SYNC | KEEL_FD_ALLOC | KEEL_FD_META,
	KEEL_FD_ALL = 31,
};

struct keel_faultdisk *keel_faultdisk_new(void);
void keel_faultdisk_free(struct keel_faultdisk *d);
/* A WAL backend over the disk; destroyed by ops->destroy (keel_wal_close). */
int keel_faultdisk_io(struct keel_faultdisk *d, struct keel_wal_io **out);

/* Requests submitted from now on are carried out at reap (see above). */
void keel_faultdisk_defer_async(struct keel_faultdisk *d, bool on);

/* Mutating operations attempted so far (successful or not). */
uint64_t keel_faultdisk_ops(const struct keel_faultdisk *d);
/* Power fails at the nth mutating operation from now (n >= 1; 0 cancels). */
void keel_faultdisk_crash_at(struct keel_faultdisk *d, uint64_t n);
/* True from the crash point on (power off, or the process dead) until
 * reboot or restart. */
bool keel_faultdisk_is_off(const struct keel_faultdisk *d);
/* Crash now (if not already) and come back up: see CRASH MODEL. Closes
 * every open file; backends made before are dead (their ops fail). */
void keel_faultdisk_reboot(struct keel_faultdisk *d, uint64_t torn);
/* The process died (now, or at its crash point) and a new one starts: see
 * CRASH MODEL. Closes every open file; backends made before are dead; the
 * volatile state is kept, unsynced writes stay unsynced. */
void keel_faultdisk_restart(struct keel_faultdisk *d);
/* Length of the last unsynced write (0 when there is none). */
size_t keel_faultdisk_unsynced_len(const struct keel_faultdisk *d);

/* The nth operation (from now) of the given kinds fails with err (negative);
 * sticky: every later one of those kinds fails too, until cleared. */
void keel_faultdisk_fail(struct keel_faultdisk *d, unsigned kinds, uint64_t nth, int err,
			 bool sticky);
/* The nth write from now writes only its first `bytes` bytes. */
void keel_faultdisk_short_write(struct keel_faultdisk *d, uint64_t nth, uint32_t bytes);
/* Cancels pending faults (not a crash). */
void keel_faultdisk_clear(struct keel_faultdisk *d);

/* Media damage for corruption tests: flips one bit in both images. */
int keel_faultdisk_flip_bit(struct keel_faultdisk *d, const char *name, uint64_t byte,
			    unsigned bit);
/* Current (volatile) size of a file, or -ENOENT. */
int64_t keel_faultdisk_size(const struct keel_faultdisk *d, const char *name);
/* Copies up to cap bytes of a file's volatile image; returns bytes or -ENOENT. */
int64_t keel_faultdisk_read(const struct keel_faultdisk *d, const char *name, void *buf,
			    size_t cap);

#endif
