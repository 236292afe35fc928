/*
 * transport/rdma_verbs.h — the verbs boundary of the rdma backend.
 *
 * The backend (transport/rdma.c) never calls libibverbs directly: every
 * verbs call it makes goes through one of these function tables, so that
 * the same backend code runs on
 *   - keel_rdma_verbs_ibv (transport/rdma_ibv.c): libibverbs, a real device;
 *   - keel_rdma_verbs_emu (transport/rdma_emu.c): an in-process EMULATION
 *     of reliable-connected semantics for tests. It moves bytes with memcpy
 *     inside one process; a test that passes on it says nothing about RDMA
 *     hardware, and every test and report that uses it says "emulated".
 *
 * The types are libibverbs' own (struct ibv_qp_attr, ibv_send_wr, ibv_wc…),
 * so the production table is a list of one-line forwards and the backend
 * reads like ordinary verbs code. Objects a table returns belong to that
 * table: pass them back only to the same table's functions.
 *
 * Ownership: the caller owns every object it creates until it destroys it
 * (destroy_qp before destroy_cq, dereg_mr before dealloc_pd, all of them
 * before close_device). Memory given to reg_mr stays the caller's and must
 * outlive the MR. Threads: the same as libibverbs (an object is used by one
 * thread at a time; the emulation locks internally, so two shards in one
 * process may each drive their own objects).
 */
#ifndef KEEL_TRANSPORT_RDMA_VERBS_H
#define KEEL_TRANSPORT_RDMA_VERBS_H

#include <infiniband/verbs.h>
#include <stdbool.h>

struct keel_rdma_verbs {
	const char *name; /* "libibverbs" or "emulated" */
	bool emulated;    /* true: no hardware is involved */

	struct ibv_device **(*get_device_list)(int *num);
	void (*free_device_list)(struct ibv_device **list);
	const char *(*get_device_name)(struct ibv_device *dev);
	struct ibv_context *(*open_device)(struct ibv_device *dev);
	int (*close_device)(struct ibv_context *ctx);
	int (*query_port)(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr);
	int (*query_gid)(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid);
	struct ibv_pd *(*alloc_pd)(struct ibv_context *ctx);
	int (*dealloc_pd)(struct ibv_pd *pd);
	struct ibv_mr *(*reg_mr)(struct ibv_pd *pd, void *addr, size_t len, int access);
	int (*dereg_mr)(struct ibv_mr *mr);
	struct ibv_cq *(*create_cq)(struct ibv_context *ctx, int cqe);
	int (*destroy_cq)(struct ibv_cq *cq);
	struct ibv_qp *(*create_qp)(struct ibv_pd *pd, struct ibv_qp_init_attr *attr);
	int (*destroy_qp)(struct ibv_qp *qp);
	int (*modify_qp)(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask);
	/* 0 or an errno (as ibv_post_send); *bad the first WR not posted. */
	int (*post_send)(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad);
	int (*post_recv)(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad);
	/* Completions polled, >= 0, or < 0 on failure (as ibv_poll_cq). */
	int (*poll_cq)(struct ibv_cq *cq, int n, struct ibv_wc *wc);
	/* Non-blocking: 1 and *ev filled (acknowledged already) when an async
	 * event (QP fatal, device fatal…) is pending, 0 when none, < 0 on
	 * failure. */
	int (*poll_async)(struct ibv_context *ctx, struct ibv_async_event *ev);
};

extern const struct keel_rdma_verbs keel_rdma_verbs_ibv; /* transport/rdma_ibv.c */
extern const struct keel_rdma_verbs keel_rdma_verbs_emu; /* transport/rdma_emu.c */

#endif
