/* The group host's snapshot file: the latest snapshot of one group, in
 * <wal_dir>/snap/snapshot (a subdirectory: the WAL owns the files of its own
 * directory). Written to snapshot.tmp, fdatasync'd, renamed over the old
 * one, and the directory fsync'd, so a crash leaves the old snapshot or the
 * new one, never a mix. Synchronous: it blocks the shard for its fsyncs
 * (a snapshot is rare; the state machines here are small).
 *
 * Format, little-endian:
 *   "KEELSNP1"  u32 version (1)  u32 crc32c of everything after this field
 *   u64 index   u64 term   u32 conf_len   conf (keel_raft_conf_encode)
 *   u64 data_len   data
 * A file that fails any check is KEEL_ECORRUPT with the reason; the decoder
 * (keel_group_snapshot_decode, fuzzed by tests/fuzz/fuzz_group_snapshot.c)
 * never reads outside the buffer. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consensus/group/group_internal.h"

#define SNAP_MAGIC "KEELSNP1"
#define SNAP_VERSION 1u
#define SNAP_FIXED (8 + 4 + 4 + 8 + 8 + 4) /* up to the conf */
/* A snapshot larger than this is refused when read back (and never made:
 * the transport could not carry it in reasonable time either). */
#define SNAP_MAX_DATA (1ull << 32)

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int group_snap_dir(const char *wal_dir, char *out, size_t cap)
{
	if (snprintf(out, cap, "%s/snap", wal_dir) >= (int)cap)
		return -ENAMETOOLONG;
	if (mkdir(out, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

size_t keel_group_snapshot_encoded_size(const struct keel_raft_snapshot *s)
{
	uint8_t conf[KEEL_RAFT_CONF_ENCODED_MAX];
	int clen = keel_raft_conf_encode(&s->meta.conf, conf, sizeof(conf));
	if (clen < 0)
		return 0;
	return SNAP_FIXED + (size_t)clen + 8 + s->len;
}

int keel_group_snapshot_encode(const struct keel_raft_snapshot *s, uint8_t *buf, size_t cap)
{
	uint8_t conf[KEEL_RAFT_CONF_ENCODED_MAX];
	int clen = keel_raft_conf_encode(&s->meta.conf, conf, sizeof(conf));
	if (clen < 0)
		return clen;
	size_t hlen = SNAP_FIXED + (size_t)clen + 8;
	if (cap < hlen + s->len || hlen + s->len > INT32_MAX)
		return KEEL_ETOOBIG;
	memcpy(buf, SNAP_MAGIC, 8);
	keel_put_le32(buf + 8, SNAP_VERSION);
	keel_put_le64(buf + 16, s->meta.index);
	keel_put_le64(buf + 24, s->meta.term);
	keel_put_le32(buf + 32, (uint32_t)clen);
	memcpy(buf + SNAP_FIXED, conf, (size_t)clen);
	keel_put_le64(buf + SNAP_FIXED + clen, s->len);
	if (s->len)
		memcpy(buf + hlen, s->data, s->len);
	keel_put_le32(buf + 12, keel_crc32c(0, buf + 16, hlen + s->len - 16));
	return (int)(hlen + s->len);
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

int group_snap_save(const char *dir, const struct keel_raft_snapshot *s, char *errmsg)
{
	size_t size = keel_group_snapshot_encoded_size(s);
	uint8_t *buf = size ? malloc(size) : NULL;
	if (!buf)
		return keel_errmsg_set(errmsg, size ? -ENOMEM : KEEL_EBADINPUT,
				       "snapshot: cannot encode %zu bytes", s->len);
	int n = keel_group_snapshot_encode(s, buf, size);
	if (n < 0) {
		free(buf);
		return keel_errmsg_set(errmsg, n, "snapshot: encoding: %s", keel_strerror(n));
	}
	char tmp[600], final[600];
	snprintf(tmp, sizeof(tmp), "%s/snapshot.tmp", dir);
	snprintf(final, sizeof(final), "%s/snapshot", dir);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = -errno;
		free(buf);
		return keel_errmsg_set(errmsg, e, "snapshot: create %s: %s", tmp, keel_strerror(e));
	}
	int rc = write_all(fd, buf, (size_t)n);
	free(buf);
	if (!rc && fdatasync(fd) < 0)
		rc = -errno;
	close(fd);
	if (!rc && rename(tmp, final) < 0)
		rc = -errno;
	if (!rc) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) < 0)
			rc = -errno;
		if (dfd >= 0)
			close(dfd);
	}
	if (rc) {
		unlink(tmp);
		return keel_errmsg_set(errmsg, rc, "snapshot: writing %s: %s", final, keel_strerror(rc));
	}
	return 0;
}

int group_snap_load(const char *dir, struct keel_raft_snapshot *s, uint8_t **buf_out,
		    char *errmsg)
{
	*buf_out = NULL;
	memset(s, 0, sizeof(*s));
	char path[600];
	snprintf(path, sizeof(path), "%s/snapshot", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0; /* no snapshot yet */
		return keel_errmsg_set(errmsg, -errno, "snapshot: open %s: %s", path, strerror(errno));
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return keel_errmsg_set(errmsg, e, "snapshot: stat %s", path);
	}
	size_t size = (size_t)st.st_size;
	if ((uint64_t)st.st_size > SNAP_MAX_DATA + 4096) {
		close(fd);
		return keel_errmsg_set(errmsg, KEEL_ECORRUPT, "snapshot: %s: size %lld is impossible",
				       path, (long long)st.st_size);
	}
	uint8_t *b = malloc(size ? size : 1);
	if (!b) {
		close(fd);
		return keel_errmsg_set(errmsg, -ENOMEM, "snapshot: out of memory for %s", path);
	}
	size_t got = 0;
	while (got < size) {
		ssize_t n = read(fd, b + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	const char *why = "short read";
	if (got != size || keel_group_snapshot_decode(b, size, s, &why) < 0) {
		free(b);
		return keel_errmsg_set(errmsg, KEEL_ECORRUPT, "snapshot: %s: %s", path, why);
	}
	*buf_out = b;
	return 1;
}
