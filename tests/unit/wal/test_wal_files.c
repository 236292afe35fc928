/* The WAL on real files, through both engines of the posix backend
 * (io_uring; pwrite+fdatasync on a helper thread): append/recover,
 * truncate/compact, hard state, corruption found at start-up, the event fd.
 * Runs in the build directory (a real filesystem). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "keel/wal.h"
#include "walt.h"

#define MAXLEN 1500

static char dir[64];

static void setup(void)
{
	keel_log_set_level(KEEL_LOG_WARN);
	snprintf(dir, sizeof(dir), "wal-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d))) {
			char p[512];
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			if (de->d_name[0] != '.')
				unlink(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

TestSuite(wal_files, .init = setup, .fini = teardown);

static struct keel_wal *open_real(enum keel_wal_engine eng, int *rc_out)
{
	struct keel_wal_io *io;
	char err[KEEL_ERRMSG_LEN] = "";
	int rc = keel_wal_io_posix_new(&io, dir, eng, err);
	if (rc == -EPERM || rc == -ENOSYS || rc == KEEL_ENOTSUP) /* KEEL_REACTOR=epoll */
		cr_skip_test("needs io_uring (refused here: %s)", err);
	cr_assert_eq(rc, 0, "%s", err);
	struct keel_wal *w;
	struct keel_wal_config c = {.segment_size = 64 * 1024, .max_batch = 16 * 1024};
	rc = keel_wal_open(&w, io, &c, err);
	if (rc_out) {
		*rc_out = rc;
		if (rc)
			cr_log_info("open: %s", err);
		return rc ? NULL : w;
	}
	cr_assert_eq(rc, 0, "%s", err);
	return w;
}

static void count_ok(void *arg, uint64_t last, int status)
{
	cr_assert_eq(status, 0, "append failed: %s", keel_strerror(status));
	*(uint64_t *)arg = last;
}

static uint64_t append_range(struct keel_wal *w, uint64_t from, uint64_t to, uint32_t gen)
{
	static uint8_t bufs[4][MAXLEN + 1];
	uint64_t acked = 0;
	for (uint64_t i = from; i <= to;) {
		struct keel_wal_entry e[4];
		size_t n = 0;
		while (n < 4 && i <= to) {
			e[n] = walt_entry(bufs[n], i, gen, MAXLEN);
			n++;
			i++;
		}
		cr_assert_eq(keel_wal_append(w, e, n, count_ok, &acked), 0, "%s",
			     keel_wal_errmsg(w));
		if (i % 16 == 0)
			keel_wal_poll(w);
	}
	cr_assert_eq(keel_wal_flush(w), 0);
	cr_assert_eq(acked, to);
	return acked;
}

static void expect_log(struct keel_wal *w, uint64_t first_max, uint64_t last)
{
	struct walt_log l = {0};
	cr_assert_eq(walt_read(w, &l, MAXLEN), 0, "%s", keel_wal_errmsg(w));
	cr_assert_eq(l.bad, 0);
	cr_assert_eq(l.gap, 0);
	cr_assert_leq(l.first, first_max);
	cr_assert_eq(l.last, last);
	free(l.gen);
}

static void lifecycle(enum keel_wal_engine eng, const char *name)
{
	struct keel_wal *w = open_real(eng, NULL);
	cr_expect_str_eq(keel_wal_engine_name(w), name);
	append_range(w, 1, 300, 0);
	cr_expect_eq(keel_wal_durable_index(w), 300);
	struct keel_wal_hard_state hs = {.term = 9, .vote = 2}, got;
	cr_assert_eq(keel_wal_save_hard_state(w, &hs), 0);
	keel_wal_close(w);

	w = open_real(eng, NULL);
	expect_log(w, 1, 300);
	keel_wal_hard_state(w, &got);
	cr_expect(got.term == 9 && got.vote == 2);
	/* a conflict: drop 251.. and write a new generation there */
	cr_assert_eq(keel_wal_truncate(w, 250), 0);
	cr_expect_eq(keel_wal_last_index(w), 250);
	append_range(w, 251, 400, 1);
	cr_assert_eq(keel_wal_compact(w, 150), 0);
	uint64_t first = keel_wal_first_index(w);
	cr_expect(first > 1 && first <= 151, "first %lu", (unsigned long)first);
	keel_wal_close(w);

	w = open_real(eng, NULL);
	expect_log(w, 151, 400);
	/* compacting past the end empties the log; it continues after */
	cr_assert_eq(keel_wal_compact(w, 1000), 0);
	cr_expect_eq(keel_wal_first_index(w), 0);
	append_range(w, 1001, 1010, 2);
	keel_wal_close(w);
	w = open_real(eng, NULL);
	expect_log(w, 1001, 1010);
	keel_wal_close(w);
}

/* The next segment is prepared by the WAL's helper while the current one
 * fills: a roll with the spare ready takes it (the stats say so), the
 * helper makes the next one, and the log reads back whole after a
 * reopen, a leftover spare in the directory included. */
Test(wal_files, rolls_take_the_segment_prepared_ahead)
{
	struct keel_wal *w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	char spare[128];
	snprintf(spare, sizeof(spare), "%s/spare.tmp", dir);
	uint64_t last = 0;
	struct keel_wal_stats st;
	for (int round = 0; round < 6; round++) {
		/* past half the segment the helper is asked for the next one */
		for (int i = 0; i < 200 && access(spare, F_OK) != 0; i++) {
			append_range(w, last + 1, last + 1, 0);
			last++;
		}
		cr_assert_eq(access(spare, F_OK), 0, "no segment prepared ahead");
		usleep(100000); /* time to fill and sync it */
		keel_wal_get_stats(w, &st);
		uint64_t before = st.segs_prepared;
		/* the roll takes it */
		for (int i = 0; i < 200 && st.segs_prepared == before; i++) {
			append_range(w, last + 1, last + 1, 0);
			last++;
			keel_wal_get_stats(w, &st);
		}
		cr_assert_eq(st.segs_prepared, before + 1, "round %d: the roll did not take it", round);
	}
	keel_wal_close(w);
	w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	expect_log(w, 1, last);
	append_range(w, last + 1, last + 60, 0);
	keel_wal_close(w);
	w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	expect_log(w, 1, last + 60);
	keel_wal_close(w);
}

/* The sync histogram (the /metrics page's WAL fdatasync durations): every
 * durable batch lands in exactly one bucket or past the last bound, the
 * buckets never count more than the syncs, and real fdatasyncs take time. */
static void sync_histogram(enum keel_wal_engine eng)
{
	struct keel_wal *w = open_real(eng, NULL);
	for (uint64_t i = 1; i <= 40; i++)
		append_range(w, i, i, 0); /* one batch each: flushed before the next */
	struct keel_wal_stats st;
	keel_wal_get_stats(w, &st);
	uint64_t in_buckets = 0;
	for (int b = 0; b < KEEL_WAL_SYNC_BUCKETS; b++)
		in_buckets += st.sync_le[b];
	cr_assert_geq(st.syncs, 40, "syncs %" PRIu64, st.syncs);
	cr_assert_leq(in_buckets, st.syncs);
	/* a sync past the last bound (1 s) is possible on a loaded machine,
	 * forty of them are not */
	cr_assert_gt(in_buckets, 0);
	cr_assert_gt(st.sync_ns_sum, 0, "write+fdatasync pairs took no time");
	for (int b = 1; b < KEEL_WAL_SYNC_BUCKETS; b++)
		cr_assert_gt(keel_wal_sync_bounds_us[b], keel_wal_sync_bounds_us[b - 1]);
	keel_wal_close(w);
}
Test(wal_files, sync_histogram_io_uring) { sync_histogram(KEEL_WAL_ENGINE_URING); }
Test(wal_files, sync_histogram_helper_thread) { sync_histogram(KEEL_WAL_ENGINE_THREAD); }

Test(wal_files, lifecycle_io_uring)
{
	lifecycle(KEEL_WAL_ENGINE_URING, "io_uring");
}

Test(wal_files, lifecycle_helper_thread)
{
	lifecycle(KEEL_WAL_ENGINE_THREAD, "thread");
}

struct offs {
	uint64_t off[4096];
	size_t n;
};

static int note_off(void *arg, uint64_t off, const struct keel_wal_entry *e)
{
	struct offs *o = arg;
	o->off[o->n++] = off;
	return 0;
}

/* Record offsets of a segment file, and its data end. */
static uint64_t seg_offsets(const char *path, struct offs *o)
{
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0, "%s", path);
	static uint8_t buf[64 * 1024];
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	close(fd);
	cr_assert_gt(n, 0);
	struct keel_wal_scan s;
	o->n = 0;
	cr_assert_eq(keel_wal_seg_scan(buf, (size_t)n, &s, note_off, o), 0);
	return s.end;
}

static void flip(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	uint8_t b;
	cr_assert_eq(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x10;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
	fsync(fd);
	close(fd);
}

/* Two snapshots in a row: compacting an already empty log still moves the
 * next index to upto + 1 (found by raft-netns: a follower installing
 * snapshots at 6 and then 10 was told "append index 11, expected 7"). */
Test(wal_files, compact_of_an_empty_log_moves_the_next_index)
{
	struct keel_wal *w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	append_range(w, 1, 1, 1);
	cr_assert_eq(keel_wal_compact(w, 6), 0, "%s", keel_wal_errmsg(w));
	cr_assert_eq(keel_wal_compact(w, 10), 0, "%s", keel_wal_errmsg(w));
	static uint8_t buf[MAXLEN + 1];
	struct keel_wal_entry e = walt_entry(buf, 7, 1, MAXLEN);
	cr_assert_eq(keel_wal_append(w, &e, 1, NULL, NULL), KEEL_EBADINPUT);
	append_range(w, 11, 12, 1);
	cr_assert_eq(keel_wal_last_index(w), 12);
	keel_wal_close(w);
}

Test(wal_files, flipped_bit_mid_segment_stops_startup)
{
	struct keel_wal *w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	append_range(w, 1, 200, 0);
	keel_wal_close(w);
	char path[128];
	snprintf(path, sizeof(path), "%s/0000000000000001.seg", dir);
	struct offs o;
	seg_offsets(path, &o);
	cr_assert_gt(o.n, 20);
	flip(path, o.off[10] + 40);
	int rc;
	char want[96];
	snprintf(want, sizeof(want), "0000000000000001.seg offset %lu", (unsigned long)o.off[10]);
	w = open_real(KEEL_WAL_ENGINE_AUTO, &rc);
	cr_assert_null(w);
	cr_assert_eq(rc, KEEL_ECORRUPT);
	/* the message names file and offset: checked through a second open
	 * that keeps the text */
	struct keel_wal_io *io;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_wal_io_posix_new(&io, dir, KEEL_WAL_ENGINE_AUTO, err), 0);
	cr_assert_eq(keel_wal_open(&w, io, NULL, err), KEEL_ECORRUPT);
	cr_assert(strstr(err, want), "message '%s' lacks '%s'", err, want);
}

Test(wal_files, flipped_bit_in_tail_is_cut_and_log_continues)
{
	struct keel_wal *w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	append_range(w, 1, 200, 0);
	uint64_t first = 0;
	keel_wal_close(w);
	/* the newest segment's last record */
	DIR *d = opendir(dir);
	struct dirent *de;
	char newest[32] = "";
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".seg") && strcmp(de->d_name, newest) > 0)
			snprintf(newest, sizeof(newest), "%.31s", de->d_name);
	closedir(d);
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, newest);
	struct offs o;
	seg_offsets(path, &o);
	flip(path, o.off[o.n - 1] + 35);
	w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	cr_assert_eq(keel_wal_last_index(w), 199);
	append_range(w, 200, 210, 3);
	keel_wal_close(w);
	w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	expect_log(w, 1, 210);
	keel_wal_close(w);
	(void)first;
}

static void newest_segment(char *path, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char newest[32] = "";
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".seg") && strcmp(de->d_name, newest) > 0)
			snprintf(newest, sizeof(newest), "%.31s", de->d_name);
	closedir(d);
	cr_assert(newest[0]);
	snprintf(path, len, "%s/%s", dir, newest);
}

static int count_entry(void *arg, const struct keel_wal_entry *e)
{
	(*(uint64_t *)arg)++;
	return walt_check(e, 0, MAXLEN);
}

/* Mid-segment damage in the newest segment, the one being written: not a
 * torn tail (valid records follow it), so start-up refuses it like damage
 * anywhere else, and iteration over the open log refuses it too. */
Test(wal_files, flipped_bit_mid_last_segment_stops_startup)
{
	struct keel_wal *w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	append_range(w, 1, 200, 0);
	char path[128];
	newest_segment(path, sizeof(path));
	cr_assert_null(strstr(path, "0000000000000001.seg"), "one segment only");
	struct offs o;
	seg_offsets(path, &o);
	cr_assert_gt(o.n, 6, "%zu records in the newest segment", o.n);
	size_t k = o.n / 2;
	flip(path, o.off[k] + 36);
	/* while open */
	uint64_t n = 0;
	cr_assert_eq(keel_wal_iterate(w, 0, count_entry, &n), KEEL_ECORRUPT);
	cr_assert_eq(n, 200 - (o.n - k), "handed out %lu entries", (unsigned long)n);
	keel_wal_close(w);
	/* at start-up, naming the file and offset */
	struct keel_wal_io *io;
	char err[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_wal_io_posix_new(&io, dir, KEEL_WAL_ENGINE_AUTO, err), 0);
	cr_assert_eq(keel_wal_open(&w, io, NULL, err), KEEL_ECORRUPT,
		     "damage mid-way through the newest segment was not refused (%s)", err);
	char want[96];
	snprintf(want, sizeof(want), "%s offset %lu", strrchr(path, '/') + 1,
		 (unsigned long)o.off[k]);
	cr_assert(strstr(err, want), "message '%s' lacks '%s'", err, want);
}

static void mark(void *arg, uint64_t last, int status)
{
	*(int *)arg = status == 0 ? 1 : -1;
}

Test(wal_files, event_fd_wakes_a_reactor)
{
	struct keel_wal *w = open_real(KEEL_WAL_ENGINE_URING, NULL);
	int efd = keel_wal_event_fd(w);
	cr_assert_geq(efd, 0);
	uint8_t buf[64];
	struct keel_wal_entry e = walt_entry(buf, 1, 0, 60);
	int done = 0;
	cr_assert_eq(keel_wal_append(w, &e, 1, mark, &done), 0);
	for (int i = 0; i < 100 && !done; i++) {
		struct pollfd p = {.fd = efd, .events = POLLIN};
		cr_assert_geq(poll(&p, 1, 5000), 0);
		keel_wal_poll(w);
	}
	cr_assert_eq(done, 1);
	keel_wal_close(w);
}

/* io_uring refused (as under a container's seccomp profile): a seccomp
 * filter in this test's process makes io_uring_setup fail with EPERM; AUTO
 * must take the helper-thread path, say so in the log, and work. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static void refuse_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		cr_skip_test("needs seccomp filters to simulate a refused io_uring");
}

Test(wal_files, io_uring_refused_falls_back_to_helper_thread)
{
	refuse_io_uring();
	int pipefd[2];
	cr_assert_eq(pipe(pipefd), 0);
	int saved = dup(2);
	dup2(pipefd[1], 2); /* catch the log line */
	struct keel_wal *w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	dup2(saved, 2);
	close(pipefd[1]);
	char logbuf[4096] = "";
	ssize_t n = read(pipefd[0], logbuf, sizeof(logbuf) - 1);
	close(pipefd[0]);
	cr_assert_gt(n, 0);
	cr_expect(strstr(logbuf, "io_uring refused") && strstr(logbuf, "helper thread"),
		  "log said: %s", logbuf);
	cr_expect_str_eq(keel_wal_engine_name(w), "thread");
	append_range(w, 1, 50, 0);
	keel_wal_close(w);
	w = open_real(KEEL_WAL_ENGINE_AUTO, NULL);
	expect_log(w, 1, 50);
	keel_wal_close(w);
}
