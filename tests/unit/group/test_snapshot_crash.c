/* The order a group host follows when a snapshot is taken (issue 12's "no
 * stalls": the same with the file written by the snapshot writer's thread,
 * which runs the same calls): the new snapshot file is saved
 * (snapstore_save: snapshot.tmp, its header then its data, fdatasync,
 * rename, directory fsync) and only then is the WAL compacted to it. The
 * power fails at every mutating step of that sequence, over the fault disk
 * (tests/lib/faultdisk.h), with the last unsynced write lost, torn or
 * whole; after the reboot the snapshot file must load and be the old one
 * or the new one, and the WAL must hold every entry after it (the log
 * needed to rebuild the state), to the end. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/group/group_internal.h"
#include "faultdisk.h"
#include "keel/wal.h"

#define LAST 400    /* entries in the WAL */
#define OLD_SNAP 60 /* the snapshot already on disk */
#define NEW_SNAP 350
#define SNAP_LEN 3000 /* bytes of state in a snapshot */

static void quiet(void)
{
	keel_log_set_level(KEEL_LOG_OFF); /* every crash logs; the asserts speak */
}
TestSuite(snapshot_crash, .init = quiet);

static const struct keel_wal_config wcfg = {.segment_size = 16384, .buffered = true};

/* A snapshot's state: SNAP_LEN bytes derived from its index. */
static void state_of(uint64_t index, uint8_t *b)
{
	for (size_t i = 0; i < SNAP_LEN; i++)
		b[i] = (uint8_t)(index * 131 + i * 7);
}

static int save(struct keel_faultdisk *sd, uint64_t index)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(sd, &io), 0);
	struct snapstore st = {.io = io};
	static uint8_t data[SNAP_LEN];
	state_of(index, data);
	struct keel_raft_snapshot s = {.meta = {.index = index, .term = 1}, .data = data,
				       .len = SNAP_LEN};
	s.meta.conf.n_voters = 1;
	s.meta.conf.voters[0] = 1;
	uint8_t hdr[KEEL_GROUP_SNAPSHOT_HDR_MAX];
	int n = keel_group_snapshot_encode_header(&s, hdr, sizeof(hdr));
	cr_assert_gt(n, 0);
	char err[KEEL_ERRMSG_LEN];
	int rc = snapstore_save(&st, hdr, (size_t)n, data, SNAP_LEN, err);
	io->ops->destroy(io);
	return rc;
}

/* The WAL with entries 1..LAST and the snapshot at OLD_SNAP, all durable. */
static void setup(struct keel_faultdisk *wd, struct keel_faultdisk *sd)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(wd, &io), 0);
	struct keel_wal *w;
	char err[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_wal_open(&w, io, &wcfg, err), 0, "%s", err);
	static uint8_t buf[200];
	for (uint64_t i = 1; i <= LAST; i++) {
		memset(buf, (int)i, sizeof(buf));
		struct keel_wal_entry e = {.index = i, .term = 1, .len = sizeof(buf), .data = buf};
		cr_assert_eq(keel_wal_append(w, &e, 1, NULL, NULL), 0);
	}
	cr_assert_eq(keel_wal_flush(w), 0);
	keel_wal_close(w);
	cr_assert_eq(save(sd, OLD_SNAP), 0);
}

/* The sequence under test: save the new snapshot, then (only if that
 * worked, as the hosts do) compact the WAL to it. */
static void sequence(struct keel_faultdisk *wd, struct keel_faultdisk *sd)
{
	if (save(sd, NEW_SNAP) < 0)
		return;
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(wd, &io), 0);
	struct keel_wal *w;
	char err[KEEL_ERRMSG_LEN];
	if (keel_wal_open(&w, io, &wcfg, err) < 0)
		return;
	keel_wal_compact(w, NEW_SNAP);
	keel_wal_close(w);
}

static int count_entry(void *arg, const struct keel_wal_entry *e)
{
	uint64_t *n = arg;
	(void)e;
	(*n)++;
	return 0;
}

static void check(struct keel_faultdisk *wd, struct keel_faultdisk *sd, const char *what)
{
	struct keel_wal_io *io;
	cr_assert_eq(keel_faultdisk_io(sd, &io), 0);
	struct snapstore st = {.io = io};
	uint8_t *b = NULL;
	size_t len = 0;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = snapstore_load(&st, &b, &len, err);
	io->ops->destroy(io);
	cr_assert_eq(rc, 1, "%s: no snapshot file after the crash (%d: %s)", what, rc, err);
	struct keel_raft_snapshot s;
	const char *why = NULL;
	cr_assert_eq(keel_group_snapshot_decode(b, len, &s, &why), 0, "%s: snapshot %s", what,
		     why ? why : "");
	cr_assert(s.meta.index == OLD_SNAP || s.meta.index == NEW_SNAP,
		  "%s: a snapshot at %llu, neither the old nor the new", what,
		  (unsigned long long)s.meta.index);
	uint8_t want[SNAP_LEN];
	state_of(s.meta.index, want);
	cr_assert_eq(s.len, SNAP_LEN, "%s", what);
	cr_assert_eq(memcmp(s.data, want, SNAP_LEN), 0, "%s: the snapshot's state is a mix", what);
	uint64_t snap = s.meta.index;
	free(b);

	cr_assert_eq(keel_faultdisk_io(wd, &io), 0);
	struct keel_wal *w;
	cr_assert_eq(keel_wal_open(&w, io, &wcfg, err), 0, "%s: WAL: %s", what, err);
	uint64_t first = keel_wal_first_index(w), last = keel_wal_last_index(w);
	cr_assert_leq(first, snap + 1, "%s: the WAL starts at %llu, past the snapshot at %llu: "
		      "entries lost", what, (unsigned long long)first, (unsigned long long)snap);
	cr_assert_eq(last, LAST, "%s: the WAL ends at %llu", what, (unsigned long long)last);
	uint64_t n = 0;
	cr_assert_eq(keel_wal_iterate(w, snap + 1, count_entry, &n), 0, "%s", what);
	cr_assert_eq(n, LAST - snap, "%s: %llu entries after the snapshot, not %llu", what,
		     (unsigned long long)n, (unsigned long long)(LAST - snap));
	keel_wal_close(w);
}

Test(snapshot_crash, power_fails_at_every_step_of_save_then_compact)
{
	/* a clean run counts each disk's steps */
	struct keel_faultdisk *wd = keel_faultdisk_new(), *sd = keel_faultdisk_new();
	setup(wd, sd);
	uint64_t w0 = keel_faultdisk_ops(wd), s0 = keel_faultdisk_ops(sd);
	sequence(wd, sd);
	uint64_t snap_steps = keel_faultdisk_ops(sd) - s0, wal_steps = keel_faultdisk_ops(wd) - w0;
	check(wd, sd, "clean run");
	keel_faultdisk_free(wd);
	keel_faultdisk_free(sd);
	cr_assert_geq(snap_steps, 5, "the save took %llu steps", (unsigned long long)snap_steps);
	cr_assert_geq(wal_steps, 2, "the compaction took %llu steps: nothing dropped?",
		      (unsigned long long)wal_steps);

	unsigned runs = 0;
	for (uint64_t n = 1; n <= snap_steps + wal_steps; n++) {
		for (int t = 0; t < 3; t++) {
			wd = keel_faultdisk_new();
			sd = keel_faultdisk_new();
			setup(wd, sd);
			/* the snapshot's steps come first, then the WAL's */
			if (n <= snap_steps)
				keel_faultdisk_crash_at(sd, n);
			else
				keel_faultdisk_crash_at(wd, n - snap_steps);
			sequence(wd, sd);
			struct keel_faultdisk *hit = n <= snap_steps ? sd : wd;
			size_t ul = keel_faultdisk_unsynced_len(hit);
			uint64_t torn = t == 0 ? 0 : t == 1 ? ul : ul / 2;
			keel_faultdisk_reboot(hit, torn);
			keel_faultdisk_reboot(hit == sd ? wd : sd, 0);
			char what[80];
			snprintf(what, sizeof(what), "power off at step %llu (%s), torn %llu",
				 (unsigned long long)n, n <= snap_steps ? "snapshot" : "WAL",
				 (unsigned long long)torn);
			check(wd, sd, what);
			keel_faultdisk_free(wd);
			keel_faultdisk_free(sd);
			runs++;
			if (!ul)
				break; /* torn makes no difference */
		}
	}
	cr_log_info("snapshot crash sweep: %llu + %llu steps, %u runs",
		    (unsigned long long)snap_steps, (unsigned long long)wal_steps, runs);
}
