/*
 * keel/runtime.h — the shard runtime: topology and placement (hwloc), shard
 * threads pinned to cores, a run-to-completion reactor per shard (io_uring,
 * or epoll where io_uring is refused), per-shard timers, cross-shard
 * messages, per-shard memory. No io_uring type appears here: the layers
 * above runtime/ see only the reactor calls below.
 *
 * Threads and ownership
 *   A runtime runs S shard threads. Shard i is pinned to the PU its placement
 *   names and allocates from memory bound to that PU's NUMA node. A shard owns
 *   its struct keel_shard, its reactor, its timers and its pools outright:
 *   every keel_shard_* call below must be made on that shard's own thread
 *   (keel_shard_self() == shard) unless it says "any thread".
 *
 * The reactor loop of a shard, run to completion, never blocking:
 *   1. pollers (keel_shard_add_poller: transport backends hook in here)
 *   2. cross-shard rings: run every message other shards sent this shard
 *   3. reactor: submit what was queued, run completions (keel_io_op)
 *   4. timers whose deadline has passed (checked every iteration when idle,
 *      every 16th while busy: reading the clock costs ~100 ns in a VM)
 *   5. flush: publish this shard's outgoing messages, wake sleeping targets
 *   then repeat. With nothing to do the shard busy-polls (KEEL_IDLE_BUSY_POLL)
 *   or sleeps (io_uring_enter or epoll_pwait2) until its next timer, an I/O
 *   completion or a wake-up through an eventfd its reactor reads
 *   (KEEL_IDLE_SLEEP, default).
 *   Nothing on this path takes a lock.
 *
 * Cross-shard messages
 *   One single-producer/single-consumer ring per ordered pair of shards
 *   (runtime/ring.h says why it is not ck_ring). A message is a function and
 *   an argument; it runs on the target shard's thread. Messages from one shard
 *   to another run in the order they were posted. A full ring never loses or
 *   refuses a message: it goes to the sender's per-target overflow queue and
 *   enters the ring, in order, as the target drains it (memory, not an error,
 *   is the backpressure; keel_shard_pending() lets a sender throttle itself).
 *   Messages still queued when the runtime stops are dropped without running;
 *   memory from keel_shard_alloc that they carry is reclaimed with the pools.
 */
#ifndef KEEL_RUNTIME_H
#define KEEL_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_runtime;
struct keel_shard;

/* ---- Topology and placement ------------------------------------------- */

/* A set of OS CPU numbers (as in /proc/cpuinfo, taskset -c, cpuset(7)). */
#define KEEL_CPUSET_MAX 1024
struct keel_cpuset {
	uint64_t bits[KEEL_CPUSET_MAX / 64];
};

/* Parses a cpuset(7) "list format" string: comma-separated decimal CPU
 * numbers and inclusive ranges ("0-3,8,10-11"), also with a stride
 * ("0-15:4" = 0,4,8,12, as the kernel's bitmap_parselist). Strict: no empty
 * items, no spaces, no signs, ranges low-high with low <= high, numbers below
 * KEEL_CPUSET_MAX. Returns 0, or KEEL_EBADINPUT with the offending item in
 * errmsg (may be NULL). */
int keel_cpuset_parse(const char *list, struct keel_cpuset *out, char *errmsg);
/* Writes the set in list format ("0-3,8") into buf; returns the length that
 * the full string needs (as snprintf). */
int keel_cpuset_format(const struct keel_cpuset *set, char *buf, size_t len);
void keel_cpuset_zero(struct keel_cpuset *set);
void keel_cpuset_set(struct keel_cpuset *set, unsigned cpu);
bool keel_cpuset_isset(const struct keel_cpuset *set, unsigned cpu);
unsigned keel_cpuset_count(const struct keel_cpuset *set);

/* The machine's topology (hwloc), or a synthetic one for tests
 * ("pack:2 numa:2 core:4 pu:2", hwloc_topology_set_synthetic syntax). The
 * caller owns it; keel_topo_free releases it. */
struct keel_topo;
int keel_topo_load(const char *synthetic, struct keel_topo **out, char *errmsg);
void keel_topo_free(struct keel_topo *topo);
struct keel_topo_counts {
	unsigned packages, numa_nodes, cores, pus;
};
void keel_topo_get_counts(const struct keel_topo *topo, struct keel_topo_counts *out);
/* Prints packages, NUMA nodes, cores and PUs as an indented tree. */
void keel_topo_print(const struct keel_topo *topo, FILE *f);

/* Where shard `shard` runs: OS PU number, core and NUMA node (OS indexes,
 * as hwloc-ls -p and numactl print them). */
struct keel_placement {
	unsigned shard, pu, core, numa_node;
};

/* The most shards one runtime runs, overcommitted or not: every ordered
 * pair of shards has a ring, each at least a page once touched, so memory
 * grows with the square of the count (5000 shards reached 4.7 GB).
 * 256 shards is 64 K rings, 256 MiB at one page each. */
#define KEEL_MAX_SHARDS 256

/* Places nshards shards (0 = one per core of the cpuset) on the cores whose
 * PUs are in `allowed` (NULL = every PU of the topology), one shard per core,
 * spread evenly over the NUMA nodes, shard ids contiguous within a node.
 * More shards than cores is KEEL_ETOPO with a message naming both counts,
 * unless overcommit: then the extra shards go to the cores' other PUs
 * (hyperthreads) and then wrap around. More than KEEL_MAX_SHARDS (asked for,
 * or one per core of a bigger cpuset) is KEEL_ETOPO, overcommit or not. A
 * CPU in `allowed` that the topology lacks is KEEL_ETOPO. On success *out is a malloc'd array of *nout
 * placements (index = shard id) that the caller frees. */
int keel_topo_place(const struct keel_topo *topo, const struct keel_cpuset *allowed,
		    unsigned nshards, bool overcommit, struct keel_placement **out,
		    unsigned *nout, char *errmsg);

/* ---- Runtime ------------------------------------------------------------ */

/* Which backend a shard's reactor runs on. Chosen once per runtime, at
 * keel_runtime_create: the config field, else the environment variable
 * KEEL_REACTOR=io_uring|epoll, else io_uring when io_uring_setup works and
 * epoll when it fails with ENOSYS or EPERM (a container's seccomp profile,
 * io_uring_disabled), logged once with the reason. The two behave the same
 * to a caller; epoll does socket I/O with non-blocking calls on readiness
 * and file I/O (read, write, fdatasync) on a small pool of helper threads. */
enum keel_reactor_kind {
	KEEL_REACTOR_AUTO = 0,
	KEEL_REACTOR_IO_URING = 1,
	KEEL_REACTOR_EPOLL = 2,
};
/* "io_uring", "epoll" ("auto" for AUTO). */
const char *keel_reactor_name(enum keel_reactor_kind kind);
/* "io_uring" | "uring" | "epoll" | "auto" -> kind; KEEL_EBADINPUT otherwise. */
int keel_reactor_parse(const char *name, enum keel_reactor_kind *out);
/* Any thread: what AUTO resolves to in this process (the environment
 * variable, then a probe of io_uring_setup, once; later calls return the
 * cached answer). reason (KEEL_ERRMSG_LEN, may be NULL) says why: "forced
 * by KEEL_REACTOR=epoll", "io_uring refused: io_uring_setup: Operation not
 * permitted", ... */
enum keel_reactor_kind keel_reactor_default(char *reason);

enum keel_idle_policy {
	KEEL_IDLE_SLEEP = 0,     /* sleep in the reactor until timer/I/O/wake-up */
	KEEL_IDLE_BUSY_POLL = 1, /* never sleep: lowest latency, burns the core */
};

/* Zero-initialise and set what you need; every zero field has a default. */
struct keel_runtime_config {
	unsigned nshards;          /* 0 = one per core of the cpuset */
	const char *cpuset;        /* cpuset(7) list; NULL = every allowed PU */
	bool overcommit;           /* allow more shards than cores */
	enum keel_idle_policy idle;
	int node_id;               /* for the log prefix; -1 = none */
	const char *synthetic_topology; /* tests: place on this hwloc synthetic
					 * topology; threads are then not pinned */
	unsigned ring_capacity;    /* messages per ordered shard pair; 0 = 512;
				    * rounded up to a power of two */
	unsigned uring_entries;    /* io_uring SQ size per shard; 0 = 256 */
	enum keel_reactor_kind reactor; /* AUTO: keel_reactor_default() */
};

/* Builds a runtime (topology, placement, rings) without starting threads.
 * errmsg (KEEL_ERRMSG_LEN, may be NULL) says what was wrong: bad cpuset,
 * too many shards, ... The caller owns *out: keel_runtime_destroy. */
int keel_runtime_create(const struct keel_runtime_config *cfg, struct keel_runtime **out,
			char *errmsg);

/* Starts every shard thread, calls shard_init(shard, arg) on each shard's
 * thread (all inits finish before any shard's loop starts), runs the loops
 * until keel_runtime_stop, then calls shard_fini on each shard's thread (all
 * loops have ended before any fini starts, so fini may free what messages of
 * other shards pointed to). Blocks until all shard threads have exited.
 * Returns 0, or the error that kept a shard from starting (reactor setup,
 * pinning), with the message in keel_runtime_errmsg(). A runtime runs once. */
int keel_runtime_run(struct keel_runtime *rt, void (*shard_init)(struct keel_shard *, void *arg),
		     void (*shard_fini)(struct keel_shard *, void *arg), void *arg);
/* keel_runtime_run in two halves, for a caller that wants its thread back
 * (a test, the CLI): start returns once every shard_init has run (or a shard
 * failed to start: then the error, after the threads have exited); wait
 * blocks until the runtime has stopped and returns the run's result. */
int keel_runtime_start(struct keel_runtime *rt, void (*shard_init)(struct keel_shard *, void *arg),
		       void (*shard_fini)(struct keel_shard *, void *arg), void *arg);
int keel_runtime_wait(struct keel_runtime *rt);

/* Any thread, async-signal-safe: asks every shard to leave its loop. */
void keel_runtime_stop(struct keel_runtime *rt);
bool keel_runtime_stopping(const struct keel_runtime *rt);
/* Installs SIGINT and SIGTERM handlers that call keel_runtime_stop(rt)
 * (for the keel command); keel_runtime_destroy restores the old ones. */
int keel_runtime_stop_on_signals(struct keel_runtime *rt);
/* After keel_runtime_wait/run. Frees everything, pools included. */
void keel_runtime_destroy(struct keel_runtime *rt);

unsigned keel_runtime_shard_count(const struct keel_runtime *rt);
const struct keel_placement *keel_runtime_placement(const struct keel_runtime *rt, unsigned shard);
/* Shard i's struct, for reading its id or placement from outside; only its
 * "any thread" functions may be called off its thread. */
struct keel_shard *keel_runtime_shard(struct keel_runtime *rt, unsigned shard);
const char *keel_runtime_errmsg(const struct keel_runtime *rt);

/* ---- Shards ------------------------------------------------------------- */

unsigned keel_shard_id(const struct keel_shard *shard);        /* any thread */
unsigned keel_shard_count(const struct keel_shard *shard);     /* any thread */
struct keel_shard *keel_shard_self(void); /* this thread's shard; NULL off shard threads */
struct keel_runtime *keel_shard_runtime(struct keel_shard *shard); /* any thread */
const struct keel_placement *keel_shard_placement(const struct keel_shard *shard); /* any thread */
/* Any thread: wakes the shard if it sleeps (an eventfd write its reactor
 * reads); cheap when it is awake. */
void keel_shard_wake(struct keel_shard *shard);

/* Pollers run first in every loop iteration and return the amount of work
 * they did (0 = nothing; the shard may then sleep, so a poller that needs
 * to be called again must keep returning > 0 or arrange a wake-up). Returns
 * an id >= 0 for keel_shard_remove_poller, or -ENOMEM. A poller may remove
 * itself or others from its callback. */
int keel_shard_add_poller(struct keel_shard *shard, int (*poll)(void *arg), void *arg);
void keel_shard_remove_poller(struct keel_shard *shard, int id);

/* ---- Reactor: asynchronous I/O on the shard ------------------------------ */

/* The backend this runtime's shards run (never AUTO). */
enum keel_reactor_kind keel_runtime_reactor(const struct keel_runtime *rt);

/* An I/O request: embed it in your own struct (container_of) and set
 * complete. complete() runs on the shard's thread, from the loop, never
 * from inside the submitting call. Multishot requests (the *_multi calls)
 * complete many times, with KEEL_IO_MORE in flags while more will come;
 * every request ends with exactly one completion without KEEL_IO_MORE. The
 * op is owned by the caller and must stay valid, and not be submitted
 * again, until that last completion (or until the runtime has stopped:
 * after the loops end nothing completes any more, so shard_fini may free
 * ops still in flight). Results are as the syscall's: >= 0, or -errno;
 * a cancelled request ends with -ECANCELED (or its own result if it had
 * already finished). Submission never fails: errors come as completions. */
enum keel_io_flags {
	KEEL_IO_MORE = 1u << 0, /* completion flag: the request stays armed */
};
struct keel_io_op {
	void (*complete)(struct keel_io_op *op, int32_t res, uint32_t flags);
	/* keel_io_recv_multi: where the res received bytes are, in memory the
	 * reactor owns; valid during complete() only. */
	const void *data;
	/* private to the reactor backend */
	struct keel_shard *shard_;
	struct keel_io_op *next_, *prev_;
	void *buf_;
	uint64_t off_;
	uint32_t len_, kind_, state_, aux_;
	int fd_;
	int32_t res_;
};

struct msghdr;
struct sockaddr;

/* Sockets. fd must stay open until the last completion. */
/* One recv into buf (len bytes): res = bytes, 0 at end of stream. */
void keel_io_recv(struct keel_shard *shard, struct keel_io_op *op, int fd, void *buf,
		  uint32_t len);
/* Receives until end of stream, an error or a cancel, into buffers the
 * reactor owns (io_uring: a provided-buffer ring per shard, 16 x 64 KiB;
 * epoll or an old kernel: one shard buffer filled on readiness). Each
 * completion with res > 0 has the bytes at op->data, for the duration of
 * the call (copy what you keep); res = 0 is the end of the stream, -ENOBUFS
 * means the shard ran out of buffers (submit again). */
void keel_io_recv_multi(struct keel_shard *shard, struct keel_io_op *op, int fd);
/* One sendmsg (MSG_NOSIGNAL added), completed once some bytes went (res may
 * be short: send the rest yourself). msg and what it points to must stay
 * valid and unchanged until completion. */
void keel_io_sendmsg(struct keel_shard *shard, struct keel_io_op *op, int fd,
		     const struct msghdr *msg);
/* Connects the socket fd to sa, which must stay valid until completion
 * (io_uring reads it from the kernel's worker). res = 0 or -errno. On
 * epoll fd is made non-blocking. */
void keel_io_connect(struct keel_shard *shard, struct keel_io_op *op, int fd,
		     const struct sockaddr *sa, uint32_t salen);
/* Accepts connections on the listening socket fd until cancelled: each
 * completion's res is a new socket (SOCK_CLOEXEC; the caller owns it) or
 * -errno. */
void keel_io_accept_multi(struct keel_shard *shard, struct keel_io_op *op, int fd);
/* Readiness: completes with res = the poll(2) revents each time fd is
 * ready for `events` (POLLIN, POLLOUT), until cancelled. Level-triggered on
 * epoll: consume what made fd ready, or it completes again. */
void keel_io_poll_multi(struct keel_shard *shard, struct keel_io_op *op, int fd,
			uint32_t events);

/* Files: res = bytes read or written (may be short), or -errno. On epoll
 * they run on a helper thread; buf must stay valid until completion. */
void keel_io_read(struct keel_shard *shard, struct keel_io_op *op, int fd, void *buf,
		  uint32_t len, uint64_t off);
void keel_io_write(struct keel_shard *shard, struct keel_io_op *op, int fd, const void *buf,
		   uint32_t len, uint64_t off);
void keel_io_fdatasync(struct keel_shard *shard, struct keel_io_op *op, int fd);

/* Cancels op (if still in flight: its last completion follows, from the
 * loop) or every request on fd. File I/O already running is not stopped:
 * it completes with its own result. */
void keel_io_cancel(struct keel_shard *shard, struct keel_io_op *op);
void keel_io_cancel_fd(struct keel_shard *shard, int fd);

/* A private queue of file I/O on its own io_uring, for code that must
 * block for its own requests without reaping the shard's (the WAL's group
 * commit, map-reduce spills): owned by one thread at a time, any thread.
 * keel_fileq_new fails (-ENOSYS, -EPERM, or KEEL_ENOTSUP when the process
 * runs the epoll reactor: keel_reactor_default) where io_uring is refused;
 * callers then use plain syscalls or a helper thread of their own. */
struct keel_fileq;
enum keel_fileq_op { KEEL_FILEQ_READ = 0, KEEL_FILEQ_WRITE = 1 };
struct keel_fileq_req {
	/* set by the caller; buf stays the caller's and must stay valid (and,
	 * for a write, unchanged) until done() */
	int fd;
	enum keel_fileq_op op;
	bool datasync; /* write: then fdatasync, only if the whole write succeeded */
	void *buf;
	uint32_t len;
	uint64_t off;
	void (*done)(struct keel_fileq_req *req); /* runs in keel_fileq_reap */
	void *arg;
	/* set before done(): res = bytes (may be short) or -errno; sync_res =
	 * 0 or -errno of the fdatasync, 1 when it did not run */
	int res;
	int sync_res;
	unsigned left_; /* private */
};
/* depth: requests in flight at most. event_fd >= 0: signalled whenever a
 * completion is ready (for a reactor's keel_io_poll_multi). */
int keel_fileq_new(unsigned depth, int event_fd, struct keel_fileq **out, char *errmsg);
/* Queues and submits req: 0, or -EAGAIN when depth requests are in flight. */
int keel_fileq_submit(struct keel_fileq *q, struct keel_fileq_req *req);
/* Runs done() of finished requests, blocking until at least min_complete
 * have finished (fewer if fewer are in flight); returns how many, or
 * -errno. */
int keel_fileq_reap(struct keel_fileq *q, unsigned min_complete);
unsigned keel_fileq_inflight(const struct keel_fileq *q);
/* Waits for requests still in flight, then frees q. NULL is a no-op. */
void keel_fileq_free(struct keel_fileq *q);

/* ---- Timers and clocks -------------------------------------------------- */

/* A one-shot timer owned by the caller; armed on one clock at a time (a
 * shard's, or a virtual one) and must not be freed while armed. fn runs on
 * the clock's thread, with the timer already disarmed, so it may re-arm or
 * free it; a callback may also cancel any other timer of its clock. Timers
 * with equal deadlines fire in the order they were armed. */
struct keel_clock;
struct keel_timer {
	uint64_t deadline_ns; /* private */
	uint64_t seq;         /* private: tie-break, arm order */
	uint32_t heap_idx;    /* private: 0 = not armed */
	struct keel_clock *clock; /* private */
	void (*fn)(struct keel_timer *t);
	void *arg;
};
void keel_timer_init(struct keel_timer *t, void (*fn)(struct keel_timer *t), void *arg);
/* Arms (or re-arms) t to fire delay_ns from now on `shard` (this thread's):
 * keel_clock_arm(keel_shard_clock(shard), ...). */
void keel_timer_arm(struct keel_shard *shard, struct keel_timer *t, uint64_t delay_ns);
/* Disarms t if armed; a no-op otherwise. */
void keel_timer_cancel(struct keel_shard *shard, struct keel_timer *t);
bool keel_timer_armed(const struct keel_timer *t);
/* Monotonic clock (ns), as keel_now_ns; kept for callers that think in
 * shard time. */
uint64_t keel_shard_now_ns(const struct keel_shard *shard);

/* A clock is a time source with timers. Layers above the runtime (node/,
 * consensus/) take a struct keel_clock * instead of a shard, so that a
 * deterministic simulation can run them on a virtual clock: the same code,
 * with time moved by the simulator. A shard's clock reads CLOCK_MONOTONIC
 * and its timers fire from the shard's reactor loop; it belongs to the
 * shard (valid until the runtime is destroyed, used on its thread only). */
struct keel_clock *keel_shard_clock(struct keel_shard *shard);
uint64_t keel_clock_now(const struct keel_clock *c);
void keel_clock_arm(struct keel_clock *c, struct keel_timer *t, uint64_t delay_ns);
void keel_clock_cancel(struct keel_clock *c, struct keel_timer *t);
/* The earliest armed deadline, UINT64_MAX when none is armed. */
uint64_t keel_clock_next_deadline(const struct keel_clock *c);

/* A virtual clock, owned by the caller (keel_clock_virtual_free; timers
 * still armed are simply forgotten). Time starts at start_ns and moves only
 * through keel_clock_set / keel_clock_advance_to; nothing fires on its
 * own. Single-threaded. */
int keel_clock_virtual_new(uint64_t start_ns, struct keel_clock **out);
void keel_clock_virtual_free(struct keel_clock *c);
/* Sets the time to t (never backwards) and fires every timer due by then,
 * in (deadline, arm order), including those the callbacks arm for now.
 * Returns how many fired. */
unsigned keel_clock_advance_to(struct keel_clock *c, uint64_t t);
/* Sets the time to t (never backwards) without firing anything. */
void keel_clock_set(struct keel_clock *c, uint64_t t);

/* ---- Cross-shard messages ----------------------------------------------- */

/* From `from` (this thread's shard) to shard `to` (may be from itself): runs
 * fn(on = shard `to`, arg) on shard to's thread. arg is passed as is; who
 * owns what it points to is the caller's protocol. Returns 0, -EINVAL for a
 * bad shard id, KEEL_ESTOPPED once the runtime stops, -EPERM when called
 * off from's thread, or -ENOMEM if the overflow queue could not grow. Messages are published at the end of the
 * current loop phase (batched); keel_shard_flush publishes now. A message
 * posted before the stop still runs: after every shard has left its loop
 * and before any shard_fini (and a keel_shard_call's reply too). */
int keel_shard_post(struct keel_shard *from, unsigned to,
		    void (*fn)(struct keel_shard *on, void *arg), void *arg);
/* As Seastar's submit_to: runs result = fn(on = shard to, arg) on shard to,
 * then reply(from, result, arg) back on the calling shard. Same returns. */
int keel_shard_call(struct keel_shard *from, unsigned to,
		    void *(*fn)(struct keel_shard *on, void *arg),
		    void (*reply)(struct keel_shard *from, void *result, void *arg), void *arg);
/* Any thread that is not a shard (a test, a CLI thread, a library's own
 * thread): runs fn(on = to, arg) on shard `to`. Slower than keel_shard_post
 * (a malloc and a mutex, taken only when such messages exist; the shard's
 * loop pays one atomic load per iteration) and for control, not data.
 * Messages from one thread run in order. Returns 0, KEEL_ESTOPPED once the
 * runtime stops (fn will not run), or -ENOMEM. */
int keel_shard_post_external(struct keel_shard *to, void (*fn)(struct keel_shard *on, void *arg),
			     void *arg);
/* Publishes this shard's outgoing messages now and wakes sleeping targets
 * (the loop does this once per phase; call it to cut latency or in tests). */
void keel_shard_flush(struct keel_shard *shard);
/* Messages this shard has posted to `to` that the target has not taken
 * yet, overflow included (for senders that throttle themselves). */
size_t keel_shard_pending(const struct keel_shard *shard, unsigned to);

/* ---- Per-shard memory --------------------------------------------------- */

/* Allocates from this shard's pools (memory bound to its NUMA node), 16-byte
 * aligned. Size classes up to 64 KiB; larger sizes come from malloc. Returns
 * NULL when out of memory. */
void *keel_shard_alloc(struct keel_shard *shard, size_t size);
/* Any thread: frees p (from keel_shard_alloc; NULL is a no-op). A block
 * freed off its owner shard goes back to the owner (through the ring from
 * this shard, or a lock-free list from a non-shard thread) and is reused
 * there. Valid until keel_runtime_destroy, which frees all pools. */
void keel_shard_free(void *p);
/* Bytes the block was allocated with (its size class). */
size_t keel_shard_alloc_size(const void *p);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_RUNTIME_H */
