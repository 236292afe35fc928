/* The snapshot store and the Raft snapshot file (group_internal.h): the
 * latest snapshot of one group, in <group dir>/snap/snapshot (a
 * subdirectory: the WAL owns the files of its own directory). Written to
 * snapshot.tmp, fdatasync'd, renamed over the old one, and the directory
 * fsync'd, so a crash leaves the old snapshot or the new one, never a mix.
 * All through a struct keel_wal_io, so the simulation runs it on the
 * fault-injecting disk. Synchronous: the group hosts call it from the
 * snapshot writer's thread (group_snapwriter.c) when their I/O allows it,
 * and on the shard otherwise (the simulations' disk, a leader's snapshot).
 *
 * Format, little-endian:
 *   "KEELSNP1"  u32 version (1)  u32 crc32c of everything after this field
 *   u64 index   u64 term   u32 conf_len   conf (keel_raft_conf_encode)
 *   u64 data_len   data
 * A file that fails any check is KEEL_ECORRUPT with the reason; the decoder
 * (keel_group_snapshot_decode, fuzzed by tests/fuzz/fuzz_group_snapshot.c)
 * never reads outside the buffer. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"

#define SNAP_MAGIC "KEELSNP1"
#define SNAP_VERSION 1u
#define SNAP_FIXED (8 + 4 + 4 + 8 + 8 + 4) /* up to the conf */
/* A snapshot larger than this is refused when read back (and never made:
 * the transport could not carry it in reasonable time either). */
#define SNAP_MAX_DATA (1ull << 32)



size_t keel_group_snapshot_encoded_size(const struct keel_raft_snapshot *s)
{
	uint8_t conf[KEEL_RAFT_CONF_ENCODED_MAX];
	int clen = keel_raft_conf_encode(&s->meta.conf, conf, sizeof(conf));
	if (clen < 0)
		return 0;
	return SNAP_FIXED + (size_t)clen + 8 + s->len;
}

int keel_group_snapshot_encode_header(const struct keel_raft_snapshot *s, uint8_t *buf, size_t cap)
{
	uint8_t conf[KEEL_RAFT_CONF_ENCODED_MAX];
	int clen = keel_raft_conf_encode(&s->meta.conf, conf, sizeof(conf));
	if (clen < 0)
		return clen;
	size_t hlen = SNAP_FIXED + (size_t)clen + 8;
	if (cap < hlen || hlen + s->len > INT32_MAX)
		return KEEL_ETOOBIG;
	memcpy(buf, SNAP_MAGIC, 8);
	keel_put_le32(buf + 8, SNAP_VERSION);
	keel_put_le64(buf + 16, s->meta.index);
	keel_put_le64(buf + 24, s->meta.term);
	keel_put_le32(buf + 32, (uint32_t)clen);
	memcpy(buf + SNAP_FIXED, conf, (size_t)clen);
	keel_put_le64(buf + SNAP_FIXED + clen, s->len);
	uint32_t crc = keel_crc32c(0, buf + 16, hlen - 16);
	if (s->len)
		crc = keel_crc32c(crc, s->data, s->len);
	keel_put_le32(buf + 12, crc);
	return (int)hlen;
}

int keel_group_snapshot_encode(const struct keel_raft_snapshot *s, uint8_t *buf, size_t cap)
{
	int hlen = keel_group_snapshot_encode_header(s, buf, cap);
	if (hlen < 0)
		return hlen;
	if (cap < (size_t)hlen + s->len)
		return KEEL_ETOOBIG;
	if (s->len)
		memcpy(buf + hlen, s->data, s->len);
	return (int)((size_t)hlen + s->len);
}

int keel_group_snapshot_decode(const uint8_t *b, size_t size, struct keel_raft_snapshot *s,
			       const char **why_out)
{
	memset(s, 0, sizeof(*s));
	const char *why = NULL;
	uint32_t clen = 0;
	if (size < SNAP_FIXED + 8)
		why = "shorter than a header";
	else if (memcmp(b, SNAP_MAGIC, 8))
		why = "bad magic";
	else if (keel_get_le32(b + 8) != SNAP_VERSION)
		why = "unknown version";
	else if ((clen = keel_get_le32(b + 32)) > KEEL_RAFT_CONF_ENCODED_MAX ||
		 SNAP_FIXED + (size_t)clen + 8 > size)
		why = "configuration length out of range";
	else if (keel_get_le64(b + SNAP_FIXED + clen) != size - (SNAP_FIXED + clen + 8))
		why = "data length does not match the size";
	else if (keel_crc32c(0, b + 16, size - 16) != keel_get_le32(b + 12))
		why = "checksum mismatch";
	else if (keel_raft_conf_decode(b + SNAP_FIXED, clen, &s->meta.conf) < 0)
		why = "bad configuration";
	if (why) {
		memset(s, 0, sizeof(*s));
		if (why_out)
			*why_out = why;
		return KEEL_ECORRUPT;
	}
	s->meta.index = keel_get_le64(b + 16);
	s->meta.term = keel_get_le64(b + 24);
	s->len = size - (SNAP_FIXED + clen + 8);
	s->data = s->len ? b + SNAP_FIXED + clen + 8 : NULL;
	return 0;
}

uint32_t snap_phase(uint64_t node, uint32_t group, uint32_t every)
{
	const char *v = getenv("KEEL_SNAPSHOT_STAGGER");
	if (every < 4 || (v && !strcmp(v, "0")))
		return 0;
	return (uint32_t)(keel_mix64(node << 32 | group) % (every / 4 + 1));
}

#define SNAP_FILE "snapshot"
#define SNAP_TMP "snapshot.tmp"

static int full_write(struct keel_wal_io *io, int fd, const uint8_t *buf, size_t len,
		      uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		int64_t n = io->ops->pwrite(io, fd, buf + done, len - done, off + done);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

int snapstore_save(struct snapstore *st, const void *hdr, size_t hlen, const void *data,
		   size_t len, char *errmsg)
{
	struct keel_wal_io *io = st->io;
	int flags = KEEL_WAL_IO_CREATE;
	int fd = io->ops->open(io, SNAP_TMP, &flags);
	if (fd < 0)
		return keel_errmsg_set(errmsg, fd, "snapshot: create %s", SNAP_TMP);
	int rc = io->ops->ftruncate(io, fd, 0);
	if (!rc)
		rc = full_write(io, fd, hdr, hlen, 0);
	if (!rc && len)
		rc = full_write(io, fd, data, len, hlen);
	if (!rc)
		rc = io->ops->fdatasync(io, fd);
	io->ops->close(io, fd);
	if (!rc)
		rc = io->ops->rename(io, SNAP_TMP, SNAP_FILE);
	if (!rc)
		rc = io->ops->sync_dir(io);
	if (rc) {
		io->ops->unlink(io, SNAP_TMP);
		return keel_errmsg_set(errmsg, rc, "snapshot: writing %s (%zu bytes)", SNAP_FILE,
				       hlen + len);
	}
	return 0;
}

int snapstore_load(struct snapstore *st, uint8_t **buf_out, size_t *len_out, char *errmsg)
{
	struct keel_wal_io *io = st->io;
	*buf_out = NULL;
	*len_out = 0;
	int flags = 0;
	int fd = io->ops->open(io, SNAP_FILE, &flags);
	if (fd == -ENOENT)
		return 0; /* no snapshot yet */
	if (fd < 0)
		return keel_errmsg_set(errmsg, fd, "snapshot: open %s", SNAP_FILE);
	int64_t size = io->ops->size(io, fd);
	if (size < 0) {
		io->ops->close(io, fd);
		return keel_errmsg_set(errmsg, (int)size, "snapshot: size of %s", SNAP_FILE);
	}
	if ((uint64_t)size > SNAP_MAX_DATA + 4096) {
		io->ops->close(io, fd);
		return keel_errmsg_set(errmsg, KEEL_ECORRUPT, "snapshot: %s: size %lld is impossible",
				       SNAP_FILE, (long long)size);
	}
	uint8_t *b = malloc(size ? (size_t)size : 1);
	if (!b) {
		io->ops->close(io, fd);
		return keel_errmsg_set(errmsg, -ENOMEM, "snapshot: out of memory for %s", SNAP_FILE);
	}
	size_t got = 0;
	while (got < (size_t)size) {
		int64_t n = io->ops->pread(io, fd, b + got, (size_t)size - got, got);
		if (n <= 0) {
			io->ops->close(io, fd);
			free(b);
			return keel_errmsg_set(errmsg, n < 0 ? (int)n : KEEL_ECORRUPT,
					       "snapshot: reading %s", SNAP_FILE);
		}
		got += (size_t)n;
	}
	io->ops->close(io, fd);
	*buf_out = b;
	*len_out = got;
	return 1;
}
