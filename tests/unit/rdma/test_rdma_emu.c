/* The rdma backend on the EMULATED verbs table (transport/rdma_emu.c): its
 * ring, credits, chunking, error and reconnect logic, in one process, two
 * shards on two threads, set-up over a real loopback TCP control channel.
 * No RDMA device is involved: these tests say nothing about hardware
 * (tests/unit/rdma/test_rdma_device.c is the one that does, where a device
 * exists). */
#include <arpa/inet.h>
#include <criterion/criterion.h>

#include "rdma_harness.h"
#include "transport/rdma_emu.h"
#include "transport/rdma_verbs.h"
#include "transport/rdma_wire.h"

TestSuite(rdma_emu, .init = h_write_secret, .fini = h_cleanup, .timeout = 120);

/* 16 slots of 256 bytes: the ring wraps every 16 chunks, credits come back
 * every 4, and anything above 240 bytes is chunked. */
#define SMALL_RING "slots = 16\nslot_size = 256\n"

static void pair(struct side *srv, struct side *cli, const char *extra)
{
	char err[KEEL_ERRMSG_LEN];
	srv->verbs = cli->verbs = &keel_rdma_verbs_emu;
	cr_assert_eq(h_load(srv, 1, extra, err), 0, "%s", err);
	cr_assert_eq(h_load(cli, 2, extra, err), 0, "%s", err);
	cli->dial = true;
	cr_assert_eq(h_start(srv, err), 0, "%s", err);
	cr_assert(h_wait_i(&srv->open_rc, 1, 10000));
	cr_assert_eq(atomic_load(&srv->open_rc), 1, "%s", srv->open_err);
	cr_assert_eq(h_start(cli, err), 0, "%s", err);
	cr_assert(h_wait_i(&cli->open_rc, 1, 10000));
	cr_assert_eq(atomic_load(&cli->open_rc), 1, "%s", cli->open_err);
}

Test(rdma_emu, ring_wraps_and_credits_return_in_order)
{
	static struct side srv, cli;
	static const uint32_t lens[] = {100};
	cli.total = 2000;
	cli.lens = lens;
	cli.nlens = 1;
	srv.echo = true; /* traffic both ways: credits return in both directions */
	pair(&srv, &cli, SMALL_RING);
	cr_expect(h_wait_u(&srv.received, 2000, 30000), "server got %u", atomic_load(&srv.received));
	cr_expect(h_wait_u(&cli.received, 2000, 30000), "client got %u echoes",
		  atomic_load(&cli.received));
	cr_expect_eq(atomic_load(&srv.bad), 0);
	cr_expect_eq(atomic_load(&cli.bad), 0);
	cr_expect_eq(atomic_load(&srv.up), 1);
	cr_expect_eq(atomic_load(&srv.inbound), 1);
	cr_expect_eq(atomic_load(&srv.peer_node), 2, "the listener learns the dialler's node");
	cr_expect_eq(atomic_load(&cli.peer_node), 1);
	cr_expect_eq(atomic_load(&cli.last_type), 99);
	struct keel_rdma_emu_stats st;
	keel_rdma_emu_get_stats(&st);
	/* every message was an RDMA WRITE with immediate (plus credit returns),
	 * and memory was registered per connection, not per message */
	cr_expect_geq(st.writes, 4000, "%llu writes", (unsigned long long)st.writes);
	cr_expect_eq(st.mrs_registered, 6, "3 MRs per connection end, %llu",
		     (unsigned long long)st.mrs_registered);
	cr_expect_eq(st.access_errors + st.rnr_errors, 0);
	h_stop(&cli);
	/* the dialler is gone: the listener's connection breaks */
	cr_expect(h_wait_i(&srv.down, 1, 10000));
	cr_expect_lt(atomic_load(&srv.down_reason), 0);
	h_stop(&srv);
	keel_rdma_emu_get_stats(&st);
	cr_expect_eq(st.qps_live, 0, "every QP destroyed");
	cr_expect_eq(st.mrs_live, 0, "every MR deregistered");
}

Test(rdma_emu, chunked_messages_of_every_size_arrive_whole)
{
	static struct side srv, cli;
	/* around the 240-byte slot payload, many slots, a whole ring (16 x
	 * 240 = 3840) and more, up to max_frame, and empty */
	static const uint32_t lens[] = {8, 239, 240, 241, 480, 481, 3840, 3841, 10000, 65536, 0, 9};
	cli.total = 240;
	cli.lens = lens;
	cli.nlens = KEEL_ARRAY_LEN(lens);
	pair(&srv, &cli, SMALL_RING);
	cr_expect(h_wait_u(&srv.received, 240, 30000), "server got %u", atomic_load(&srv.received));
	cr_expect_eq(atomic_load(&srv.bad), 0);
	cr_expect_eq(atomic_load(&cli.bad), 0);
	h_stop(&cli);
	h_stop(&srv);
}

Test(rdma_emu, backpressure_efull_then_writable)
{
	static struct side srv, cli;
	static const uint32_t lens[] = {1024};
	cli.total = 2000;
	cli.lens = lens;
	cli.nlens = 1;
	cli.sendq = 16 * 1024;
	pair(&srv, &cli, SMALL_RING);
	cr_expect(h_wait_u(&srv.received, 2000, 60000), "server got %u", atomic_load(&srv.received));
	cr_expect_eq(atomic_load(&srv.bad), 0);
	cr_expect_gt(atomic_load(&cli.efull), 0, "a 16 KiB queue fills");
	cr_expect_gt(atomic_load(&cli.writable), 0);
	h_stop(&cli);
	h_stop(&srv);
}

/* A completion error mid-stream: both ends report the connection broken
 * (the dialler with -EIO from its CQ, the listener through the control
 * channel), the dialler redials and traffic flows on the new QP. */
Test(rdma_emu, completion_error_breaks_then_redial_works)
{
	static struct side srv, cli;
	static const uint32_t lens[] = {300};
	cli.total = 1000;
	cli.lens = lens;
	cli.nlens = 1;
	cli.redial = true;
	keel_rdma_emu_fail_nth_send(500, IBV_WC_REM_ACCESS_ERR);
	pair(&srv, &cli, SMALL_RING);
	cr_expect(h_wait_i(&cli.down, 1, 30000));
	cr_expect_eq(atomic_load(&cli.redials), 1);
	cr_expect_eq(atomic_load(&cli.redial_rc), 0);
	cr_expect(h_wait_i(&srv.down, 1, 30000));
	cr_expect(h_wait_i(&cli.up, 2, 30000), "redialled: up %d", atomic_load(&cli.up));
	cr_expect(h_wait_i(&srv.up, 2, 30000));
	/* the second connection carries all 1000 from seq 0 */
	cr_expect(h_wait_u(&srv.received, 1000, 30000), "server got %u", atomic_load(&srv.received));
	cr_expect_eq(atomic_load(&srv.bad), 0);
	h_stop(&cli);
	h_stop(&srv);
}

/* QPs in the error state (async QP-fatal + flushed receives). */
Test(rdma_emu, qp_error_breaks_both_ends_and_redial_works)
{
	static struct side srv, cli;
	static const uint32_t lens[] = {64};
	cli.total = 10;
	cli.lens = lens;
	cli.nlens = 1;
	cli.redial = true;
	pair(&srv, &cli, SMALL_RING);
	cr_assert(h_wait_u(&srv.received, 10, 20000));
	cr_expect_eq(keel_rdma_emu_fail_all_qps(), 2);
	cr_expect(h_wait_i(&cli.down, 1, 20000));
	cr_expect_eq(atomic_load(&cli.down_reason), -EIO, "%d", atomic_load(&cli.down_reason));
	cr_expect(h_wait_i(&srv.down, 1, 20000));
	cr_expect(h_wait_i(&cli.up, 2, 20000));
	cr_expect(h_wait_u(&srv.total_rx, 20, 20000), "server got %u", atomic_load(&srv.total_rx));
	cr_expect_eq(atomic_load(&srv.bad), 0);
	h_stop(&cli);
	h_stop(&srv);
}

/* Device removal: every connection breaks with -ENODEV, and the redial is
 * refused with -ENODEV (the device is gone, the endpoint says so). */
Test(rdma_emu, device_removal_breaks_and_refuses_redial)
{
	static struct side srv, cli;
	static const uint32_t lens[] = {64};
	cli.total = 10;
	cli.lens = lens;
	cli.nlens = 1;
	cli.redial = true;
	pair(&srv, &cli, SMALL_RING);
	cr_assert(h_wait_u(&srv.received, 10, 20000));
	keel_rdma_emu_remove_device();
	cr_expect(h_wait_i(&cli.down, 1, 20000));
	cr_expect_eq(atomic_load(&cli.down_reason), -ENODEV, "%d", atomic_load(&cli.down_reason));
	cr_expect(h_wait_i(&cli.redials, 1, 20000));
	cr_expect_eq(atomic_load(&cli.redial_rc), -ENODEV);
	cr_expect(h_wait_i(&srv.down, 1, 20000));
	h_stop(&cli);
	h_stop(&srv);
	/* a new endpoint now finds no device and says what it needs */
	struct side n3 = {0};
	char err[KEEL_ERRMSG_LEN];
	n3.verbs = &keel_rdma_verbs_emu;
	cr_assert_eq(h_load(&n3, 1, NULL, err), 0, "%s", err);
	cr_assert_eq(h_start(&n3, err), 0, "%s", err);
	for (int k = 0; k < 2000 && atomic_load(&n3.open_rc) == 0; k++)
		usleep(5000);
	cr_expect_eq(atomic_load(&n3.open_rc), -ENODEV);
	cr_expect(strstr(n3.open_err, "no RDMA device"), "%s", n3.open_err);
	h_stop(&n3);
	keel_rdma_emu_restore_device();
}

/* Config keys with clear errors. */
Test(rdma_emu, config_errors_are_clear)
{
	static const struct {
		const char *extra, *want;
	} cases[] = {
		{"device = mlx5_9\n", "not found (devices: emu0)"},
		{"port = 2\n", "has no port 2"},
		{"gid_index = 5\n", "no GID at index 5"},
		{"gid_index = none\n", "needs a gid_index"},
		{"mtu = 1500\n", "want 256, 512"},
		{"slots = 12\n", "power of two"},
		{"slot_size = 4\n", "slot_size"},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(cases); i++) {
		struct side s = {0};
		char err[KEEL_ERRMSG_LEN];
		s.verbs = &keel_rdma_verbs_emu;
		cr_assert_eq(h_load(&s, 1, cases[i].extra, err), 0, "%s", err);
		cr_assert_eq(h_start(&s, err), 0, "%s", err);
		for (int k = 0; k < 2000 && atomic_load(&s.open_rc) == 0; k++)
			usleep(5000);
		cr_expect_lt(atomic_load(&s.open_rc), 0, "%s", cases[i].extra);
		cr_expect(strstr(s.open_err, cases[i].want), "%s: %s", cases[i].extra, s.open_err);
		h_stop(&s);
	}
	/* an unknown key is refused by the node config itself */
	struct side s = {0};
	char err[KEEL_ERRMSG_LEN];
	cr_expect_neq(h_load(&s, 1, "gid = 1\n", err), 0);
}

/* Size limits and a local close through the API, on a live connection. */
static void close_on_up(struct side *s, struct keel_conn *c)
{
	struct keel_send_buf *b;
	atomic_store(&s->r1, keel_transport_alloc(c, 64 * 1024 + 1, &b));
	int rc = keel_transport_alloc(c, 100, &b);
	if (rc == 0) {
		b->len = 101; /* above cap */
		rc = keel_transport_send_buf(c, b);
	}
	atomic_store(&s->r2, rc);
	keel_transport_close_conn(c);
	atomic_store(&s->r3, keel_transport_alloc(c, 10, &b));
}

Test(rdma_emu, local_close_and_limits)
{
	static struct side srv, cli;
	cli.up_hook = close_on_up;
	pair(&srv, &cli, SMALL_RING);
	cr_assert(h_wait_i(&cli.down, 1, 20000));
	cr_expect_eq(atomic_load(&cli.down_reason), 0, "a local close reports 0");
	cr_expect_eq(atomic_load(&cli.r1), KEEL_ETOOBIG);
	cr_expect_eq(atomic_load(&cli.r2), KEEL_ETOOBIG);
	cr_expect_eq(atomic_load(&cli.r3), KEEL_ECLOSED);
	cr_expect(h_wait_i(&srv.down, 1, 20000), "the peer sees it end");
	h_stop(&cli);
	h_stop(&srv);
}

/* The emulation itself: an rkey outside its MR is refused, the QP errors
 * and later WRs flush; nothing lands in memory. */
Test(rdma_emu, emulation_checks_rkey_bounds_and_flushes)
{
	const struct keel_rdma_verbs *v = &keel_rdma_verbs_emu;
	cr_assert(v->emulated);
	int n;
	struct ibv_device **l = v->get_device_list(&n);
	cr_assert_eq(n, 1);
	struct ibv_context *ctx = v->open_device(l[0]);
	v->free_device_list(l);
	struct ibv_pd *pd = v->alloc_pd(ctx);
	static uint8_t src[64], dst[64];
	memset(src, 0xab, sizeof(src));
	struct ibv_mr *smr = v->reg_mr(pd, src, sizeof(src), IBV_ACCESS_LOCAL_WRITE);
	struct ibv_mr *dmr = v->reg_mr(pd, dst, sizeof(dst), IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	struct ibv_cq *cq = v->create_cq(ctx, 64);
	struct ibv_qp_init_attr qa = {.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
				      .cap = {.max_send_wr = 8, .max_recv_wr = 8, .max_send_sge = 2,
					      .max_recv_sge = 1}};
	struct ibv_qp *a = v->create_qp(pd, &qa), *b = v->create_qp(pd, &qa);
	struct ibv_qp *qp[2] = {a, b};
	for (int i = 0; i < 2; i++) {
		struct ibv_qp_attr at = {.qp_state = IBV_QPS_INIT, .port_num = 1,
					 .qp_access_flags = IBV_ACCESS_REMOTE_WRITE};
		cr_assert_eq(v->modify_qp(qp[i], &at, IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS), 0);
		struct ibv_recv_wr rw = {.wr_id = 7}, *bad;
		cr_assert_eq(v->post_recv(qp[i], &rw, &bad), 0);
		struct ibv_qp_attr rtr = {.qp_state = IBV_QPS_RTR, .dest_qp_num = qp[1 - i]->qp_num,
					  .path_mtu = IBV_MTU_1024};
		cr_assert_eq(v->modify_qp(qp[i], &rtr, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
						      IBV_QP_DEST_QPN | IBV_QP_RQ_PSN), 0);
		struct ibv_qp_attr rts = {.qp_state = IBV_QPS_RTS};
		cr_assert_eq(v->modify_qp(qp[i], &rts, IBV_QP_STATE | IBV_QP_SQ_PSN), 0);
	}
	struct ibv_sge sge = {.addr = (uintptr_t)src, .length = 32, .lkey = smr->lkey};
	struct ibv_send_wr wr = {.wr_id = 1, .sg_list = &sge, .num_sge = 1,
				 .opcode = IBV_WR_RDMA_WRITE_WITH_IMM, .send_flags = IBV_SEND_SIGNALED,
				 .imm_data = htonl(5),
				 .wr.rdma = {.remote_addr = (uintptr_t)dst + 16, .rkey = dmr->rkey}}, *bad;
	cr_assert_eq(v->post_send(a, &wr, &bad), 0);
	struct ibv_wc wc[8];
	cr_assert_eq(v->poll_cq(cq, 8, wc), 2);
	cr_expect_eq(wc[0].status, IBV_WC_SUCCESS);
	cr_expect_eq(wc[0].opcode, IBV_WC_RECV_RDMA_WITH_IMM, "responder first");
	cr_expect_eq(ntohl(wc[0].imm_data), 5);
	cr_expect_eq(wc[1].opcode, IBV_WC_RDMA_WRITE);
	cr_expect_eq(dst[16], 0xab);
	cr_expect_eq(dst[48], 0, "nothing past the 32 bytes");
	/* 32 bytes at offset 40 of a 64-byte MR: out of bounds */
	memset(dst, 0, sizeof(dst));
	wr.wr.rdma.remote_addr = (uintptr_t)dst + 40;
	wr.opcode = IBV_WR_RDMA_WRITE;
	cr_assert_eq(v->post_send(a, &wr, &bad), 0);
	cr_assert_eq(v->poll_cq(cq, 8, wc), 2, "a's error, then its own receive flushed");
	cr_expect_eq(wc[0].status, IBV_WC_REM_ACCESS_ERR);
	cr_expect_eq(wc[1].status, IBV_WC_WR_FLUSH_ERR);
	cr_expect_eq(wc[1].wr_id, 7);
	for (size_t i = 0; i < sizeof(dst); i++)
		cr_expect_eq(dst[i], 0);
	/* the QP is in error now: the next WR flushes */
	wr.wr.rdma.remote_addr = (uintptr_t)dst;
	cr_assert_eq(v->post_send(a, &wr, &bad), 0);
	cr_assert_eq(v->poll_cq(cq, 8, wc), 1, "the WR flushed");
	cr_expect_eq(wc[0].status, IBV_WC_WR_FLUSH_ERR);
	struct ibv_async_event ev;
	cr_expect_eq(v->poll_async(ctx, &ev), 1);
	cr_expect_eq(ev.event_type, IBV_EVENT_QP_FATAL);
	v->destroy_qp(a);
	v->destroy_qp(b);
	v->destroy_cq(cq);
	v->dereg_mr(smr);
	v->dereg_mr(dmr);
	cr_expect_eq(v->dealloc_pd(pd), 0);
	v->close_device(ctx);
}
