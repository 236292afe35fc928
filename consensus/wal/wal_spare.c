/* consensus/wal/wal_spare.c — the next segment, prepared in the background.
 *
 * A segment roll used to create its segment inside the append that rolls:
 * fallocate, zero-fill the whole segment (so later appends are overwrites
 * whose fdatasync flushes only data) and fdatasync it, on the shard thread:
 * about half a second for 8 MiB here, during which every group of the
 * shard, and the client port on shard 0, waited. Now a helper thread keeps
 * one spare, SEG_SPARE: created, allocated, zero-filled and synced while
 * the current segment fills, asked for once the current segment is half
 * full (so an idle log, and a node opening many groups at once, write no
 * spare segments they may never need). The roll takes it if it is ready: writes the
 * header with its first index, fdatasyncs that block, renames it into
 * place and syncs the directory (about what one append costs). If it is
 * not ready (the first roll after
 * an open, a disk that could not make one, a burst of rolls), the roll
 * creates its segment itself as before, and a full disk is reported there
 * as before (the helper's own failure is only logged).
 *
 * Crash safety is the create path's: until the rename the spare is no
 * part of the log (recovery ignores the name; the helper makes it again
 * from nothing), and the rename comes after its header is durable, so a
 * segment exists whole or not at all.
 *
 * Only for the real-file I/O (keel_wal_io.background): the helper calls
 * the file operations from its own thread, which the posix backend's
 * stateless syscalls allow, and which the deterministic fault disk of the
 * simulations must not see. The helper touches only SEG_SPARE and its own
 * fields below, under mu; never w's other state or w->errmsg. */
#include <pthread.h>

#include "wal_internal.h"

struct wal_spare {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool want;  /* prepare one (the shard asks, the helper takes) */
	bool ready; /* SEG_SPARE is whole and synced (the helper sets, the shard takes) */
	bool busy;  /* the helper is working on SEG_SPARE */
	bool stop;
	int err;    /* the last preparation's, for the log */
	struct keel_wal_io *io;
	uint64_t size;
	bool fill;  /* zero-fill (not cfg.prealloc_fallocate) */
};

/* In the helper: SEG_SPARE made from nothing; 0 or -errno. */
static int prepare(struct wal_spare *sp)
{
	struct keel_wal_io *io = sp->io;
	int flags = KEEL_WAL_IO_CREATE;
	int fd = io->ops->open(io, SEG_SPARE, &flags);
	if (fd < 0)
		return fd;
	int rc = io->ops->ftruncate(io, fd, 0);
	if (!rc)
		rc = io->ops->fallocate(io, fd, sp->size);
	if (!rc && sp->fill) {
		size_t chunk = 1u << 20;
		uint8_t *z = calloc(1, chunk);
		if (!z)
			rc = -ENOMEM;
		for (uint64_t off = 0; z && off < sp->size && !rc; off += chunk) {
			pthread_mutex_lock(&sp->mu);
			bool stop = sp->stop;
			pthread_mutex_unlock(&sp->mu);
			if (stop) {
				rc = -ECANCELED;
				break;
			}
			size_t n = sp->size - off < chunk ? (size_t)(sp->size - off) : chunk;
			rc = wal_full_pwrite(io, fd, z, n, off);
		}
		free(z);
	}
	if (!rc)
		rc = io->ops->fdatasync(io, fd);
	io->ops->close(io, fd);
	if (rc)
		io->ops->unlink(io, SEG_SPARE);
	return rc;
}

static void *helper(void *arg)
{
	struct wal_spare *sp = arg;
	pthread_mutex_lock(&sp->mu);
	for (;;) {
		while (!sp->want && !sp->stop)
			pthread_cond_wait(&sp->cv, &sp->mu);
		if (sp->stop)
			break;
		sp->want = false;
		sp->busy = true;
		pthread_mutex_unlock(&sp->mu);
		int rc = prepare(sp);
		pthread_mutex_lock(&sp->mu);
		sp->busy = false;
		sp->ready = rc == 0;
		if (rc && rc != -ECANCELED && rc != sp->err)
			keel_warn("wal: preparing the next segment: %s (the roll will create it)",
				  keel_strerror(rc));
		sp->err = rc;
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

void wal_spare_start(struct keel_wal *w)
{
	if (!w->io->background || w->spare)
		return;
	struct wal_spare *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return; /* rolls create their segments themselves */
	sp->io = w->io;
	sp->size = w->cfg.segment_size;
	sp->fill = !w->cfg.prealloc_fallocate;
	pthread_mutex_init(&sp->mu, NULL);
	pthread_cond_init(&sp->cv, NULL);
	if (pthread_create(&sp->th, NULL, helper, sp)) {
		pthread_cond_destroy(&sp->cv);
		pthread_mutex_destroy(&sp->mu);
		free(sp);
		return;
	}
	w->spare = sp;
}

void wal_spare_stop(struct keel_wal *w)
{
	struct wal_spare *sp = w->spare;
	if (!sp)
		return;
	pthread_mutex_lock(&sp->mu);
	sp->stop = true;
	pthread_cond_signal(&sp->cv);
	pthread_mutex_unlock(&sp->mu);
	pthread_join(sp->th, NULL);
	pthread_cond_destroy(&sp->cv);
	pthread_mutex_destroy(&sp->mu);
	free(sp);
	w->spare = NULL;
}

/* The current segment is half full: the helper makes the next one (once
 * per segment; the flag is the owner thread's, so an append pays no lock). */
void wal_spare_ask(struct keel_wal *w)
{
	struct wal_spare *sp = w->spare;
	if (!sp || w->spare_asked)
		return;
	w->spare_asked = true;
	pthread_mutex_lock(&sp->mu);
	if (!sp->ready && !sp->busy) {
		sp->want = true;
		pthread_cond_signal(&sp->cv);
	}
	pthread_mutex_unlock(&sp->mu);
}

/* The roll: 1 when the spare became segment `name` (first index first),
 * 0 when there was none ready (create it the old way), or a negative code
 * when taking it failed part-way (the create path runs then too: the
 * spare is gone either way). */
int wal_spare_take(struct keel_wal *w, uint64_t first, const char *name)
{
	struct wal_spare *sp = w->spare;
	if (!sp)
		return 0;
	w->spare_asked = false; /* the new segment asks again at its half */
	pthread_mutex_lock(&sp->mu);
	bool ready = sp->ready && !sp->busy;
	sp->ready = false;
	pthread_mutex_unlock(&sp->mu);
	if (!ready)
		return 0;
	struct keel_wal_io *io = w->io;
	int flags = 0;
	int fd = io->ops->open(io, SEG_SPARE, &flags);
	int rc = fd < 0 ? fd : 0;
	if (!rc) {
		keel_wal_seg_header_encode(w->scratch, first);
		rc = wal_full_pwrite(io, fd, w->scratch, KEEL_WAL_SEG_HDR, 0);
		if (!rc)
			rc = io->ops->fdatasync(io, fd);
		io->ops->close(io, fd);
	}
	if (!rc)
		rc = io->ops->rename(io, SEG_SPARE, name);
	if (!rc)
		rc = io->ops->sync_dir(io);
	if (rc) {
		io->ops->unlink(io, SEG_SPARE);
		io->ops->unlink(io, name);
	}
	return rc ? rc : 1;
}
