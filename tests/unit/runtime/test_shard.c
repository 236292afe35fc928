/* Shards on this machine: pinning to the placed PU, reactor operations
 * through the loop (each backend), pollers, stop by signal within a second, and shutdown
 * with messages in flight (run under ASan by scripts/test). */
#include <criterion/criterion.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <stdatomic.h>
#include <unistd.h>

#include "rt_test.h"

#define MAXSH 64
static struct {
	int cpu[MAXSH];
	int affinity_count[MAXSH];
	bool affinity_has_pu[MAXSH];
	bool self_ok[MAXSH];
} PIN;

static void pin_init(struct keel_shard *s, void *arg)
{
	unsigned id = keel_shard_id(s);
	cpu_set_t set;
	CPU_ZERO(&set);
	sched_getaffinity(0, sizeof(set), &set);
	PIN.affinity_count[id] = CPU_COUNT(&set);
	PIN.affinity_has_pu[id] = CPU_ISSET(keel_shard_placement(s)->pu, &set);
	PIN.cpu[id] = sched_getcpu();
	PIN.self_ok[id] = keel_shard_self() == s && keel_shard_count(s) == keel_runtime_shard_count(keel_shard_runtime(s));
}

Test(shard, each_thread_runs_on_the_pu_its_placement_names, .timeout = 30)
{
	/* Default config: one shard per core of this machine, as keel topo
	 * prints it. */
	struct keel_runtime_config cfg = {.node_id = -1};
	struct keel_runtime *rt;
	char em[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_runtime_create(&cfg, &rt, em), 0, "%s", em);
	unsigned n = keel_runtime_shard_count(rt);
	cr_assert(n >= 1 && n <= MAXSH);
	/* the same placement keel topo computes */
	struct keel_topo *topo;
	struct keel_placement *pl;
	unsigned m;
	cr_assert_eq(keel_topo_load(NULL, &topo, em), 0);
	cr_assert_eq(keel_topo_place(topo, NULL, 0, false, &pl, &m, em), 0);
	cr_assert_eq(m, n);
	cr_assert_eq(keel_runtime_start(rt, pin_init, NULL, NULL), 0, "%s", keel_runtime_errmsg(rt));
	keel_runtime_stop(rt);
	cr_assert_eq(keel_runtime_wait(rt), 0);
	for (unsigned i = 0; i < n; i++) {
		cr_expect_eq(keel_runtime_placement(rt, i)->pu, pl[i].pu);
		cr_expect_eq(PIN.affinity_count[i], 1, "shard %u may run on %d CPUs", i, PIN.affinity_count[i]);
		cr_expect(PIN.affinity_has_pu[i], "shard %u not bound to its PU", i);
		cr_expect_eq(PIN.cpu[i], (int)pl[i].pu, "shard %u ran on CPU %d, placed on PU %u", i,
			     PIN.cpu[i], pl[i].pu);
		cr_expect(PIN.self_ok[i]);
	}
	cr_expect_null(keel_shard_self(), "keel_shard_self off shard threads");
	free(pl);
	keel_topo_free(topo);
	keel_runtime_destroy(rt);
}

Test(shard, cpuset_and_too_many_shards_errors, .timeout = 30)
{
	struct keel_runtime *rt = NULL;
	char em[KEEL_ERRMSG_LEN] = "";
	struct keel_runtime_config cfg = {.node_id = -1, .nshards = 64};
	cr_expect_eq(keel_runtime_create(&cfg, &rt, em), KEEL_ETOPO);
	cr_expect(strstr(em, "--overcommit") != NULL, "%s", em);
	cr_expect_null(rt);
	cfg = (struct keel_runtime_config){.node_id = -1, .cpuset = "0-1,,"};
	cr_expect_eq(keel_runtime_create(&cfg, &rt, em), KEEL_EBADINPUT);
	cr_expect(strstr(em, "cpuset") != NULL, "%s", em);
	cfg = (struct keel_runtime_config){.node_id = -1, .cpuset = "0", .nshards = 1};
	cr_expect_eq(keel_runtime_create(&cfg, &rt, em), 0, "%s", em);
	cr_expect_eq(keel_runtime_shard_count(rt), 1);
	cr_expect_eq(keel_runtime_placement(rt, 0)->pu, 0);
	keel_runtime_destroy(rt);
}

/* The reactor through the loop: a file write, fdatasync and read, then a
 * sendmsg over a socketpair received by a multishot receive that is
 * cancelled, all completing on the shard, in order, never inside the
 * submitting call; and pollers. */
struct io_ctx {
	struct keel_io_op wr, sync, rd, snd, rcv, pol;
	int fd, sv[2];
	char rbuf[16], got[16];
	size_t ngot;
	int wr_res, sync_res, rd_res, snd_res, rcv_final, pol_res;
	bool on_shard, inline_completion, submitting;
	int polls;
	int poller_id;
	struct iovec iov;
	struct msghdr msg;
	struct keel_runtime *rt;
};
static struct io_ctx IO;

static void check_ctx(void)
{
	if (keel_shard_self() == NULL)
		IO.on_shard = false;
	if (IO.submitting)
		IO.inline_completion = true;
}

static void rcv_done(struct keel_io_op *op, int32_t res, uint32_t fl)
{
	check_ctx();
	if (fl & KEEL_IO_MORE) {
		if (res > 0 && IO.ngot + (size_t)res <= sizeof(IO.got)) {
			memcpy(IO.got + IO.ngot, op->data, (size_t)res);
			IO.ngot += (size_t)res;
		}
		if (IO.ngot == 4)
			keel_io_cancel(op->shard_, op);
		return;
	}
	IO.rcv_final = res;
	keel_runtime_stop(IO.rt);
}

static void snd_done(struct keel_io_op *op, int32_t res, uint32_t fl)
{
	check_ctx();
	IO.snd_res = res;
}

static void pol_done(struct keel_io_op *op, int32_t res, uint32_t fl)
{
	check_ctx();
	if (!(fl & KEEL_IO_MORE))
		return; /* the end after the cancel */
	IO.pol_res = res;
	keel_io_cancel(op->shard_, op);
}

static void rd_done(struct keel_io_op *op, int32_t res, uint32_t fl)
{
	check_ctx();
	IO.rd_res = res;
	struct keel_shard *s = op->shard_;
	IO.submitting = true;
	keel_io_recv_multi(s, &IO.rcv, IO.sv[0]);
	IO.iov = (struct iovec){.iov_base = "ping", .iov_len = 4};
	IO.msg = (struct msghdr){.msg_iov = &IO.iov, .msg_iovlen = 1};
	keel_io_sendmsg(s, &IO.snd, IO.sv[1], &IO.msg);
	IO.submitting = false;
}

static void sync_done(struct keel_io_op *op, int32_t res, uint32_t fl)
{
	check_ctx();
	IO.sync_res = res;
	IO.submitting = true;
	keel_io_read(op->shard_, &IO.rd, IO.fd, IO.rbuf, sizeof(IO.rbuf), 0);
	IO.submitting = false;
}

static void wr_done(struct keel_io_op *op, int32_t res, uint32_t fl)
{
	check_ctx();
	IO.wr_res = res;
	IO.submitting = true;
	keel_io_fdatasync(op->shard_, &IO.sync, IO.fd);
	IO.submitting = false;
}

static int poller(void *arg)
{
	struct keel_shard *s = arg;
	if (++IO.polls == 3)
		keel_shard_remove_poller(s, IO.poller_id);
	return 1;
}

static void io_init(struct keel_shard *s, void *arg)
{
	IO.wr.complete = wr_done;
	IO.sync.complete = sync_done;
	IO.rd.complete = rd_done;
	IO.snd.complete = snd_done;
	IO.rcv.complete = rcv_done;
	IO.pol.complete = pol_done;
	IO.submitting = true;
	keel_io_write(s, &IO.wr, IO.fd, "hello", 5, 0);
	keel_io_poll_multi(s, &IO.pol, IO.sv[1], POLLOUT);
	IO.submitting = false;
	IO.poller_id = keel_shard_add_poller(s, poller, s);
}

static void io_run(enum keel_reactor_kind kind)
{
	memset(&IO, 0, sizeof(IO));
	IO.on_shard = true;
	IO.rcv_final = 1;
	char path[] = "/tmp/keel-test-io-XXXXXX";
	IO.fd = mkstemp(path);
	cr_assert_geq(IO.fd, 0);
	unlink(path);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, IO.sv), 0);
	struct keel_runtime_config cfg = {.nshards = 1, .overcommit = true, .node_id = -1,
					  .reactor = kind};
	char em[KEEL_ERRMSG_LEN] = "";
	cr_assert_eq(keel_runtime_create(&cfg, &IO.rt, em), 0, "%s", em);
	cr_assert_eq(keel_runtime_reactor(IO.rt), kind);
	int rc = keel_runtime_run(IO.rt, io_init, NULL, NULL);
	if (rc && kind == KEEL_REACTOR_IO_URING && (rc == -EPERM || rc == -ENOSYS))
		cr_skip_test("io_uring refused here: %s", keel_runtime_errmsg(IO.rt));
	cr_assert_eq(rc, 0, "%s", keel_runtime_errmsg(IO.rt));
	cr_expect_eq(IO.wr_res, 5);
	cr_expect_eq(IO.sync_res, 0);
	cr_expect_eq(IO.rd_res, 5);
	cr_expect_eq(memcmp(IO.rbuf, "hello", 5), 0);
	cr_expect_eq(IO.snd_res, 4);
	cr_expect_eq(IO.ngot, 4);
	cr_expect_eq(memcmp(IO.got, "ping", 4), 0);
	cr_expect_eq(IO.rcv_final, -ECANCELED, "final receive: %d", IO.rcv_final);
	cr_expect(IO.pol_res & POLLOUT, "poll revents %#x", IO.pol_res);
	cr_expect(IO.on_shard);
	cr_expect(!IO.inline_completion, "a completion ran inside its submitting call");
	cr_expect_eq(IO.polls, 3, "poller ran %d times after removing itself at 3", IO.polls);
	keel_runtime_destroy(IO.rt);
	close(IO.fd);
	close(IO.sv[0]);
	close(IO.sv[1]);
}

Test(shard, io_uring_reactor_ops_and_pollers_run_on_the_shard, .timeout = 30)
{
	io_run(KEEL_REACTOR_IO_URING);
}

Test(shard, epoll_reactor_ops_and_pollers_run_on_the_shard, .timeout = 30)
{
	io_run(KEEL_REACTOR_EPOLL);
}

/* KEEL_REACTOR decides AUTO (suite 'epoll' sets it), and a runtime says
 * which backend it runs. */
Test(shard, reactor_default_follows_the_environment)
{
	const char *env = getenv("KEEL_REACTOR");
	char why[KEEL_ERRMSG_LEN];
	enum keel_reactor_kind k = keel_reactor_default(why);
	if (env && !strcmp(env, "epoll"))
		cr_expect_eq(k, KEEL_REACTOR_EPOLL, "%s", why);
	else if (env && !strcmp(env, "io_uring"))
		cr_expect_eq(k, KEEL_REACTOR_IO_URING, "%s", why);
	cr_expect_neq(k, KEEL_REACTOR_AUTO);
	struct keel_runtime *rt = rt_make(1, KEEL_IDLE_SLEEP, 0);
	cr_expect_eq(keel_runtime_reactor(rt), k);
	cr_expect_str_eq(keel_reactor_name(keel_runtime_reactor(rt)),
			 k == KEEL_REACTOR_EPOLL ? "epoll" : "io_uring");
	keel_runtime_destroy(rt);
	enum keel_reactor_kind p;
	cr_expect_eq(keel_reactor_parse("uring", &p), 0);
	cr_expect_eq(p, KEEL_REACTOR_IO_URING);
	cr_expect_eq(keel_reactor_parse("kqueue", &p), KEEL_EBADINPUT);
}

static void run_signal(enum keel_idle_policy idle, int sig)
{
	struct keel_runtime *rt = rt_make(3, idle, 0);
	cr_assert_eq(keel_runtime_stop_on_signals(rt), 0);
	cr_assert_eq(keel_runtime_start(rt, NULL, NULL, NULL), 0);
	usleep(50 * 1000);
	uint64_t t0 = keel_now_ns();
	kill(getpid(), sig);
	cr_assert_eq(keel_runtime_wait(rt), 0);
	uint64_t dt = keel_now_ns() - t0;
	cr_expect_lt(dt, 1000000000ull, "stopping took %llu ns", (unsigned long long)dt);
	keel_runtime_destroy(rt);
	/* destroy restored the default action; SIGINT would now kill us */
	struct sigaction sa;
	sigaction(sig, NULL, &sa);
	cr_expect_eq(sa.sa_handler, SIG_DFL);
}

Test(shard, sigterm_stops_sleeping_shards_within_a_second, .timeout = 30)
{
	run_signal(KEEL_IDLE_SLEEP, SIGTERM);
}
Test(shard, sigint_stops_busy_polling_shards_within_a_second, .timeout = 30)
{
	run_signal(KEEL_IDLE_BUSY_POLL, SIGINT);
}

/* Shutdown with messages in flight: every shard floods every other with
 * pool buffers and calls, rings are small so overflow queues fill too, and
 * a timer stops the runtime mid-flood. Every message posted before the
 * stop still runs (and every call's reply) before any shard_fini, so
 * nothing is pending there; ASan checks nothing leaks or is touched after
 * free. */
#define FSH 4
struct flood {
	struct keel_runtime *rt;
	struct keel_timer stop;
	_Atomic uint64_t handled, replied, posted;
	_Atomic uint64_t pending_at_fini;
};
static struct flood F;

static void eat(struct keel_shard *on, void *arg)
{
	memset(arg, 0x5a, 200);
	keel_shard_free(arg);
	atomic_fetch_add_explicit(&F.handled, 1, memory_order_relaxed);
}

static void *echo(struct keel_shard *on, void *arg) { return arg; }

static void echoed(struct keel_shard *from, void *result, void *arg)
{
	keel_shard_free(result);
	atomic_fetch_add_explicit(&F.replied, 1, memory_order_relaxed);
}

static int flood_poller(void *arg)
{
	struct keel_shard *s = arg;
	unsigned me = keel_shard_id(s);
	for (unsigned to = 0; to < FSH; to++) {
		if (to == me || keel_shard_pending(s, to) > 2000)
			continue;
		for (int k = 0; k < 32; k++) {
			void *b = keel_shard_alloc(s, 200);
			if (!b)
				return 1;
			int rc = (k & 1) ? keel_shard_post(s, to, eat, b)
					 : keel_shard_call(s, to, echo, echoed, b);
			if (rc) {
				keel_shard_free(b);
				return 1;
			}
			atomic_fetch_add_explicit(&F.posted, 1, memory_order_relaxed);
		}
	}
	return 1;
}

static void stop_now(struct keel_timer *t) { keel_runtime_stop(F.rt); }

static void flood_init(struct keel_shard *s, void *arg)
{
	keel_shard_add_poller(s, flood_poller, s);
	if (keel_shard_id(s) == 0) {
		keel_timer_init(&F.stop, stop_now, NULL);
		keel_timer_arm(s, &F.stop, 100 * 1000 * 1000);
	}
}

static void flood_fini(struct keel_shard *s, void *arg)
{
	uint64_t p = 0;
	for (unsigned to = 0; to < FSH; to++)
		p += keel_shard_pending(s, to);
	atomic_fetch_add(&F.pending_at_fini, p);
	keel_timer_cancel(s, &F.stop);
}

Test(shard, shutdown_with_messages_in_flight, .timeout = 60)
{
	memset(&F, 0, sizeof(F));
	F.rt = rt_make(FSH, KEEL_IDLE_SLEEP, 64);
	cr_assert_eq(keel_runtime_run(F.rt, flood_init, flood_fini, NULL), 0);
	cr_expect_gt(atomic_load(&F.handled), 0);
	cr_expect_eq(atomic_load(&F.pending_at_fini), 0, "messages left in flight at a shard_fini");
	cr_expect_eq(atomic_load(&F.handled) + atomic_load(&F.replied), atomic_load(&F.posted),
		     "a message posted before the stop did not run");
	keel_runtime_destroy(F.rt);
}

/* keel_shard_post_external: a non-shard thread drives shards. */
static struct {
	_Atomic unsigned ran;
	unsigned order_bad;
	unsigned last[8];
	bool wrong_shard;
} EXT;

static void ext_fn(struct keel_shard *on, void *arg)
{
	uintptr_t v = (uintptr_t)arg;
	unsigned id = keel_shard_id(on);
	if (keel_shard_self() != on || v % 8 != id)
		EXT.wrong_shard = true;
	if (v / 8 != EXT.last[id]++)
		EXT.order_bad++;
	atomic_fetch_add(&EXT.ran, 1);
}

Test(shard, post_external_from_a_non_shard_thread, .timeout = 30)
{
	memset(&EXT, 0, sizeof(EXT));
	struct keel_runtime *rt = rt_make(3, KEEL_IDLE_SLEEP, 0);
	cr_assert_eq(keel_runtime_start(rt, NULL, NULL, NULL), 0);
	for (uintptr_t i = 0; i < 3000; i++) {
		unsigned to = (unsigned)(i % 3);
		uintptr_t v = (i / 3) * 8 + to;
		cr_assert_eq(keel_shard_post_external(keel_runtime_shard(rt, to), ext_fn, (void *)v), 0);
	}
	while (atomic_load(&EXT.ran) < 3000)
		usleep(1000);
	keel_runtime_stop(rt);
	cr_assert_eq(keel_runtime_wait(rt), 0);
	cr_expect_not(EXT.wrong_shard);
	cr_expect_eq(EXT.order_bad, 0);
	cr_expect_eq(keel_shard_post_external(keel_runtime_shard(rt, 0), ext_fn, NULL), KEEL_ESTOPPED);
	keel_runtime_destroy(rt);
}
