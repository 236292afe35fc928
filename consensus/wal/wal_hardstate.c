/* WAL hard state (include/keel/wal.h): (term, vote) in two alternating
 * 512-byte slots with a sequence number and a CRC, so a torn write leaves
 * the previous state readable. */
#include "consensus/wal/wal_internal.h"

/* ---- hard state --------------------------------------------------------- */


/* 1 valid, 0 all zero (never written), -1 damaged */
static int hs_slot_parse(const uint8_t *p, uint64_t *seq, struct keel_wal_hard_state *hs)
{
	uint32_t crc;
	memcpy(&crc, p + 32, 4);
#ifdef KEEL_MUTANT_WAL_HS_NO_CRC
	crc = keel_crc32c(0, p, 32); /* MUTANT: the magic is taken as proof enough */
#endif
	if (keel_get_le64(p) == HS_MAGIC && keel_crc32c(0, p, 32) == crc) {
		*seq = keel_get_le64(p + 8);
		hs->term = keel_get_le64(p + 16);
		hs->vote = keel_get_le64(p + 24);
		return 1;
	}
	for (unsigned i = 0; i < HS_SLOT; i++)
		if (p[i])
			return -1;
	return 0;
}

int wal_hs_open(struct keel_wal *w)
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
	int64_t n = wal_full_pread(io, fd, buf, sizeof(buf), 0);
	if (n < 0)
		return keel_errmsg_set(w->errmsg, (int)n, "wal: read %s", HS_NAME);
	/* After a process crash the newer slot may be in the page cache only
	 * (written, its fdatasync never ran). What we read is what the layer
	 * above will act on (a Raft server's term and vote), so it is made
	 * durable before anyone sees it: otherwise a power cut later brings
	 * back the older state, and the server votes twice in a term. */
#ifdef KEEL_MUTANT_WAL_HS_OPEN_NO_SYNC
	int src = 0; /* MUTANT: the hard state read is trusted unsynced */
#else
	int src = io->ops->fdatasync(io, fd);
#endif
	if (src)
		return keel_errmsg_set(w->errmsg, src, "wal: sync %s", HS_NAME);
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
#ifdef KEEL_MUTANT_WAL_HS_PICK_OLDER
	int pick = (v1 > 0 && (v0 <= 0 || seq[1] < seq[0])) ? 1 : 0; /* MUTANT: < */
#else
	int pick = (v1 > 0 && (v0 <= 0 || seq[1] > seq[0])) ? 1 : 0;
#endif
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
	keel_put_le64(slot, HS_MAGIC);
	keel_put_le64(slot + 8, seq);
	keel_put_le64(slot + 16, hs->term);
	keel_put_le64(slot + 24, hs->vote);
	uint32_t crc = keel_crc32c(0, slot, 32);
	memcpy(slot + 32, &crc, 4);
#if defined(KEEL_MUTANT_WAL_HS_SAME_SLOT)
	/* MUTANT: every save overwrites the first slot, in place */
	int rc = wal_full_pwrite(w->io, w->hs_fd, slot, HS_SLOT, 0);
#elif defined(KEEL_MUTANT_WAL_HS_SYNC_FIRST)
	/* MUTANT: fdatasync before the slot is written */
	int rc = w->io->ops->fdatasync(w->io, w->hs_fd);
	if (!rc)
		rc = wal_full_pwrite(w->io, w->hs_fd, slot, HS_SLOT, (seq & 1) * HS_SLOT);
#else
	int rc = wal_full_pwrite(w->io, w->hs_fd, slot, HS_SLOT, (seq & 1) * HS_SLOT);
#endif
#ifndef KEEL_MUTANT_WAL_HS_SYNC_FIRST
	if (!rc)
		rc = w->io->ops->fdatasync(w->io, w->hs_fd);
#endif
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
