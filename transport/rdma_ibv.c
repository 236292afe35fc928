/* The production verbs table: one-line forwards to libibverbs (rdma-core).
 * The inline ibv_post_send/ibv_poll_cq dispatch through the device's own
 * ops, so the hot path costs one extra indirect call here. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>

#include "transport/rdma_verbs.h"

static struct ibv_device **get_device_list(int *num) { return ibv_get_device_list(num); }
static void free_device_list(struct ibv_device **l) { ibv_free_device_list(l); }
static const char *get_device_name(struct ibv_device *d) { return ibv_get_device_name(d); }
static struct ibv_context *open_device(struct ibv_device *d)
{
	struct ibv_context *ctx = ibv_open_device(d);
	/* poll_async must not block the shard: the async fd goes non-blocking. */
	if (ctx) {
		int fl = fcntl(ctx->async_fd, F_GETFL);
		if (fl >= 0)
			(void)fcntl(ctx->async_fd, F_SETFL, fl | O_NONBLOCK);
	}
	return ctx;
}
static int close_device(struct ibv_context *c) { return ibv_close_device(c); }
static int query_port(struct ibv_context *c, uint8_t p, struct ibv_port_attr *a)
{
	return ibv_query_port(c, p, a);
}
static int query_gid(struct ibv_context *c, uint8_t p, int i, union ibv_gid *g)
{
	return ibv_query_gid(c, p, i, g);
}
static struct ibv_pd *alloc_pd(struct ibv_context *c) { return ibv_alloc_pd(c); }
static int dealloc_pd(struct ibv_pd *pd) { return ibv_dealloc_pd(pd); }
static struct ibv_mr *reg_mr(struct ibv_pd *pd, void *a, size_t l, int acc)
{
	return ibv_reg_mr(pd, a, l, acc);
}
static int dereg_mr(struct ibv_mr *mr) { return ibv_dereg_mr(mr); }
static struct ibv_cq *create_cq(struct ibv_context *c, int cqe)
{
	return ibv_create_cq(c, cqe, NULL, NULL, 0);
}
static int destroy_cq(struct ibv_cq *cq) { return ibv_destroy_cq(cq); }
static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *a)
{
	return ibv_create_qp(pd, a);
}
static int destroy_qp(struct ibv_qp *qp) { return ibv_destroy_qp(qp); }
static int modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *a, int m) { return ibv_modify_qp(qp, a, m); }
static int post_send(struct ibv_qp *qp, struct ibv_send_wr *w, struct ibv_send_wr **b)
{
	return ibv_post_send(qp, w, b);
}
static int post_recv(struct ibv_qp *qp, struct ibv_recv_wr *w, struct ibv_recv_wr **b)
{
	return ibv_post_recv(qp, w, b);
}
static int poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc) { return ibv_poll_cq(cq, n, wc); }
static int poll_async(struct ibv_context *c, struct ibv_async_event *ev)
{
	struct pollfd p = {.fd = c->async_fd, .events = POLLIN};
	int n = poll(&p, 1, 0);
	if (n < 0)
		return -errno;
	if (n == 0)
		return 0;
	if (ibv_get_async_event(c, ev))
		return errno == EAGAIN ? 0 : -errno;
	ibv_ack_async_event(ev);
	return 1;
}

const struct keel_rdma_verbs keel_rdma_verbs_ibv = {
	.name = "libibverbs", .emulated = false,
	.get_device_list = get_device_list, .free_device_list = free_device_list,
	.get_device_name = get_device_name, .open_device = open_device,
	.close_device = close_device, .query_port = query_port, .query_gid = query_gid,
	.alloc_pd = alloc_pd, .dealloc_pd = dealloc_pd, .reg_mr = reg_mr,
	.dereg_mr = dereg_mr, .create_cq = create_cq, .destroy_cq = destroy_cq,
	.create_qp = create_qp, .destroy_qp = destroy_qp, .modify_qp = modify_qp,
	.post_send = post_send, .post_recv = post_recv, .poll_cq = poll_cq,
	.poll_async = poll_async,
};
