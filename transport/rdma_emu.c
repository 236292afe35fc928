/* An in-process EMULATION of reliable-connected verbs (transport/rdma_emu.h
 * says what it does and does not model). Nothing here touches a device:
 * "sending" is memcpy into the peer's registered memory under one
 * process-wide lock, so two shard threads of one test process can talk. */
#include "transport/rdma_emu.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "transport/rdma_verbs.h"

#define EMU_ASYNC_MAX 16

struct emu_ctx {
	struct ibv_context ctx;
	struct ibv_async_event ev[EMU_ASYNC_MAX];
	unsigned nev;
	struct emu_ctx *next;
};

struct emu_mr {
	struct ibv_mr mr;
	int access;
	struct emu_mr *next;
};

struct emu_cq {
	struct ibv_cq cq;
	struct ibv_wc *q;
	int cap, head, n;
};

struct emu_qp {
	struct ibv_qp qp;
	struct emu_ctx *ctx;
	struct emu_cq *scq, *rcq;
	uint32_t dest;          /* peer QPN, from RTR */
	bool sig_all;
	uint32_t max_send_wr;
	uint32_t sq_used;       /* send WRs whose completion is not yet polled */
	struct ibv_recv_wr *rq; /* posted receives: wr_id + sges, FIFO */
	struct ibv_sge *rq_sge; /* rq_cap * max_recv_sge */
	uint32_t rq_cap, rq_sges, rq_head, rq_n;
	struct emu_qp *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct emu_ctx *ctxs;
static struct emu_mr *mrs;
static struct emu_qp *qps;
static uint32_t next_qpn = 0x100, next_key = 0x1000;
static bool removed;
static unsigned fail_nth;
static enum ibv_wc_status fail_status;
static struct keel_rdma_emu_stats stats;
static struct ibv_device emu_dev = {
	.node_type = IBV_NODE_CA,
	.transport_type = IBV_TRANSPORT_IB,
	.name = "emu0",
	.dev_name = "uverbs-emu0",
};

/* ---- helpers, called with the lock held */

static void push_async(struct emu_ctx *c, enum ibv_event_type type, struct ibv_qp *qp)
{
	if (c->nev >= EMU_ASYNC_MAX)
		return;
	struct ibv_async_event *e = &c->ev[c->nev++];
	memset(e, 0, sizeof(*e));
	e->event_type = type;
	if (qp)
		e->element.qp = qp;
}

static void push_wc(struct emu_cq *cq, const struct ibv_wc *wc)
{
	if (cq->n >= cq->cap) {
		/* A real CQ overrun is fatal to the CQ; the backend sizes its
		 * CQ so this cannot happen, and an emulated overrun says so. */
		push_async((struct emu_ctx *)cq->cq.context, IBV_EVENT_CQ_ERR, NULL);
		return;
	}
	cq->q[(cq->head + cq->n) % cq->cap] = *wc;
	cq->n++;
}

static struct emu_qp *find_qp(uint32_t qpn)
{
	for (struct emu_qp *q = qps; q; q = q->next)
		if (q->qp.qp_num == qpn)
			return q;
	return NULL;
}

static struct emu_mr *find_mr_lkey(uint32_t lkey)
{
	for (struct emu_mr *m = mrs; m; m = m->next)
		if (m->mr.lkey == lkey)
			return m;
	return NULL;
}

static struct emu_mr *find_mr_rkey(uint32_t rkey)
{
	for (struct emu_mr *m = mrs; m; m = m->next)
		if (m->mr.rkey == rkey)
			return m;
	return NULL;
}

static bool in_mr(const struct emu_mr *m, uint64_t addr, uint64_t len)
{
	uint64_t base = (uint64_t)(uintptr_t)m->mr.addr;
	return addr >= base && len <= m->mr.length && addr - base <= m->mr.length - len;
}

/* The QP enters the error state: posted receives flush to its recv CQ. */
static void qp_to_error(struct emu_qp *q)
{
	if (q->qp.state == IBV_QPS_ERR)
		return;
	q->qp.state = IBV_QPS_ERR;
	while (q->rq_n) {
		struct ibv_wc wc = {.wr_id = q->rq[q->rq_head].wr_id,
				    .status = IBV_WC_WR_FLUSH_ERR, .opcode = IBV_WC_RECV,
				    .qp_num = q->qp.qp_num};
		push_wc(q->rcq, &wc);
		q->rq_head = (q->rq_head + 1) % q->rq_cap;
		q->rq_n--;
		stats.flushed++;
	}
}

static void send_wc(struct emu_qp *q, const struct ibv_send_wr *wr, enum ibv_wc_status st,
		    enum ibv_wc_opcode op, uint32_t len)
{
	if (st == IBV_WC_SUCCESS && !(wr->send_flags & IBV_SEND_SIGNALED) && !q->sig_all)
		return;
	struct ibv_wc wc = {.wr_id = wr->wr_id, .status = st, .opcode = op,
			    .byte_len = len, .qp_num = q->qp.qp_num};
	push_wc(q->scq, &wc);
	q->sq_used++;
}

/* Executes one WR of q against its peer; returns its completion status. */
static enum ibv_wc_status exec(struct emu_qp *q, const struct ibv_send_wr *wr, uint32_t *lenp)
{
	uint64_t len = 0;
	for (int i = 0; i < wr->num_sge; i++) {
		const struct ibv_sge *s = &wr->sg_list[i];
		if (!(wr->send_flags & IBV_SEND_INLINE)) {
			struct emu_mr *m = find_mr_lkey(s->lkey);
			if (!m || m->mr.pd != q->qp.pd || !in_mr(m, s->addr, s->length)) {
				stats.access_errors++;
				return IBV_WC_LOC_PROT_ERR;
			}
		}
		len += s->length;
	}
	if (len > (1u << 31))
		return IBV_WC_LOC_LEN_ERR;
	*lenp = (uint32_t)len;
	struct emu_qp *d = find_qp(q->dest);
	if (!d || d->qp.state == IBV_QPS_ERR ||
	    (d->qp.state != IBV_QPS_RTR && d->qp.state != IBV_QPS_RTS) ||
	    d->dest != q->qp.qp_num)
		return IBV_WC_RETRY_EXC_ERR;
	bool imm = wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM || wr->opcode == IBV_WR_SEND_WITH_IMM;
	bool is_send = wr->opcode == IBV_WR_SEND || wr->opcode == IBV_WR_SEND_WITH_IMM;
	bool is_write = wr->opcode == IBV_WR_RDMA_WRITE || wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
	if (!is_send && !is_write)
		return IBV_WC_LOC_QP_OP_ERR; /* READ and atomics are not emulated */
	if ((imm || is_send) && d->rq_n == 0) {
		stats.rnr_errors++;
		return IBV_WC_RNR_RETRY_EXC_ERR;
	}
	if (is_write && len) {
		struct emu_mr *rm = find_mr_rkey(wr->wr.rdma.rkey);
		if (!rm || rm->mr.pd != d->qp.pd || !(rm->access & IBV_ACCESS_REMOTE_WRITE) ||
		    !in_mr(rm, wr->wr.rdma.remote_addr, len)) {
			stats.access_errors++;
			qp_to_error(d); /* the responder's QP errors too */
			return IBV_WC_REM_ACCESS_ERR;
		}
		uint8_t *dst = (uint8_t *)(uintptr_t)wr->wr.rdma.remote_addr;
		for (int i = 0; i < wr->num_sge; i++) {
			memcpy(dst, (const void *)(uintptr_t)wr->sg_list[i].addr,
			       wr->sg_list[i].length);
			dst += wr->sg_list[i].length;
		}
	}
	struct ibv_wc rwc = {.status = IBV_WC_SUCCESS, .qp_num = d->qp.qp_num,
			     .src_qp = q->qp.qp_num, .byte_len = (uint32_t)len};
	if (imm || is_send) {
		struct ibv_recv_wr *r = &d->rq[d->rq_head];
		if (is_send) {
			uint64_t room = 0;
			for (int i = 0; i < r->num_sge; i++)
				room += r->sg_list[i].length;
			if (room < len) {
				qp_to_error(d);
				return IBV_WC_REM_INV_REQ_ERR;
			}
			uint32_t si = 0, so = 0;
			for (int i = 0; i < wr->num_sge; i++) {
				const uint8_t *src = (const void *)(uintptr_t)wr->sg_list[i].addr;
				uint32_t left = wr->sg_list[i].length;
				while (left) {
					uint32_t n = r->sg_list[si].length - so;
					if (n > left)
						n = left;
					memcpy((uint8_t *)(uintptr_t)r->sg_list[si].addr + so, src, n);
					src += n, left -= n, so += n;
					if (so == r->sg_list[si].length)
						si++, so = 0;
				}
			}
			stats.sends++;
		}
		rwc.wr_id = r->wr_id;
		rwc.opcode = is_write ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV;
		if (imm) {
			rwc.wc_flags = IBV_WC_WITH_IMM;
			rwc.imm_data = wr->imm_data;
		}
		d->rq_head = (d->rq_head + 1) % d->rq_cap;
		d->rq_n--;
		push_wc(d->rcq, &rwc);
	}
	if (is_write) {
		stats.writes++;
		stats.write_bytes += len;
	}
	return IBV_WC_SUCCESS;
}

/* ---- the table */

static struct ibv_device **get_device_list(int *num)
{
	struct ibv_device **l = calloc(2, sizeof(*l));
	if (!l) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&lock);
	l[0] = removed ? NULL : &emu_dev;
	if (num)
		*num = removed ? 0 : 1;
	pthread_mutex_unlock(&lock);
	return l;
}

static void free_device_list(struct ibv_device **l) { free(l); }
static const char *get_device_name(struct ibv_device *d) { return d->name; }

static struct ibv_context *open_device(struct ibv_device *d)
{
	pthread_mutex_lock(&lock);
	struct emu_ctx *c = NULL;
	if (removed || d != &emu_dev) {
		errno = ENODEV;
	} else if ((c = calloc(1, sizeof(*c)))) {
		c->ctx.device = d;
		c->ctx.async_fd = -1;
		c->ctx.cmd_fd = -1;
		c->next = ctxs;
		ctxs = c;
	} else {
		errno = ENOMEM;
	}
	pthread_mutex_unlock(&lock);
	return c ? &c->ctx : NULL;
}

static int close_device(struct ibv_context *ctx)
{
	pthread_mutex_lock(&lock);
	for (struct emu_ctx **p = &ctxs; *p; p = &(*p)->next)
		if (&(*p)->ctx == ctx) {
			struct emu_ctx *c = *p;
			*p = c->next;
			free(c);
			break;
		}
	pthread_mutex_unlock(&lock);
	return 0;
}

static int query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *a)
{
	(void)ctx;
	if (port != 1)
		return EINVAL;
	memset(a, 0, sizeof(*a));
	pthread_mutex_lock(&lock);
	a->state = removed ? IBV_PORT_DOWN : IBV_PORT_ACTIVE;
	pthread_mutex_unlock(&lock);
	a->max_mtu = IBV_MTU_4096;
	a->active_mtu = IBV_MTU_4096;
	a->gid_tbl_len = 1;
	a->lid = 0;
	a->link_layer = IBV_LINK_LAYER_ETHERNET;
	return 0;
}

static int query_gid(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid)
{
	(void)ctx;
	if (port != 1 || index != 0)
		return EINVAL;
	memset(gid, 0, sizeof(*gid));
	/* ::ffff:127.0.0.1, the RoCE v2 form of a loopback address */
	gid->raw[10] = gid->raw[11] = 0xff;
	gid->raw[12] = 127;
	gid->raw[15] = 1;
	return 0;
}

static struct ibv_pd *alloc_pd(struct ibv_context *ctx)
{
	struct ibv_pd *pd = calloc(1, sizeof(*pd));
	if (!pd) {
		errno = ENOMEM;
		return NULL;
	}
	pd->context = ctx;
	return pd;
}

static int dealloc_pd(struct ibv_pd *pd)
{
	pthread_mutex_lock(&lock);
	for (struct emu_mr *m = mrs; m; m = m->next)
		if (m->mr.pd == pd) {
			pthread_mutex_unlock(&lock);
			return EBUSY;
		}
	pthread_mutex_unlock(&lock);
	free(pd);
	return 0;
}

static struct ibv_mr *reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access)
{
	pthread_mutex_lock(&lock);
	struct emu_mr *m = NULL;
	if (removed) {
		errno = ENODEV;
	} else if (!addr || !len) {
		errno = EINVAL;
	} else if ((m = calloc(1, sizeof(*m)))) {
		m->mr.context = pd->context;
		m->mr.pd = pd;
		m->mr.addr = addr;
		m->mr.length = len;
		m->mr.lkey = next_key++;
		m->mr.rkey = next_key++;
		m->access = access;
		m->next = mrs;
		mrs = m;
		stats.mrs_live++;
		stats.mrs_registered++;
	} else {
		errno = ENOMEM;
	}
	pthread_mutex_unlock(&lock);
	return m ? &m->mr : NULL;
}

static int dereg_mr(struct ibv_mr *mr)
{
	pthread_mutex_lock(&lock);
	for (struct emu_mr **p = &mrs; *p; p = &(*p)->next)
		if (&(*p)->mr == mr) {
			struct emu_mr *m = *p;
			*p = m->next;
			free(m);
			stats.mrs_live--;
			break;
		}
	pthread_mutex_unlock(&lock);
	return 0;
}

static struct ibv_cq *create_cq(struct ibv_context *ctx, int cqe)
{
	if (cqe <= 0) {
		errno = EINVAL;
		return NULL;
	}
	struct emu_cq *cq = calloc(1, sizeof(*cq));
	if (cq)
		cq->q = calloc((size_t)cqe, sizeof(*cq->q));
	if (!cq || !cq->q) {
		free(cq);
		errno = ENOMEM;
		return NULL;
	}
	cq->cap = cqe;
	cq->cq.context = ctx;
	cq->cq.cqe = cqe;
	return &cq->cq;
}

static int destroy_cq(struct ibv_cq *ibcq)
{
	struct emu_cq *cq = (struct emu_cq *)ibcq;
	pthread_mutex_lock(&lock);
	for (struct emu_qp *q = qps; q; q = q->next)
		if (q->scq == cq || q->rcq == cq) {
			pthread_mutex_unlock(&lock);
			return EBUSY;
		}
	pthread_mutex_unlock(&lock);
	free(cq->q);
	free(cq);
	return 0;
}

static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *a)
{
	if (a->qp_type != IBV_QPT_RC || !a->send_cq || !a->recv_cq || a->srq ||
	    !a->cap.max_recv_wr || !a->cap.max_send_wr) {
		errno = EINVAL;
		return NULL;
	}
	struct emu_qp *q = calloc(1, sizeof(*q));
	uint32_t sges = a->cap.max_recv_sge ? a->cap.max_recv_sge : 1;
	if (q) {
		q->rq = calloc(a->cap.max_recv_wr, sizeof(*q->rq));
		q->rq_sge = calloc((size_t)a->cap.max_recv_wr * sges, sizeof(*q->rq_sge));
	}
	if (!q || !q->rq || !q->rq_sge) {
		if (q) {
			free(q->rq);
			free(q->rq_sge);
		}
		free(q);
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&lock);
	if (removed) {
		pthread_mutex_unlock(&lock);
		free(q->rq);
		free(q->rq_sge);
		free(q);
		errno = ENODEV;
		return NULL;
	}
	for (struct emu_ctx *c = ctxs; c; c = c->next)
		if (&c->ctx == pd->context)
			q->ctx = c;
	q->qp.context = pd->context;
	q->qp.qp_context = a->qp_context;
	q->qp.pd = pd;
	q->qp.send_cq = a->send_cq;
	q->qp.recv_cq = a->recv_cq;
	q->qp.qp_type = IBV_QPT_RC;
	q->qp.state = IBV_QPS_RESET;
	q->qp.qp_num = next_qpn++ & 0xffffff;
	q->scq = (struct emu_cq *)a->send_cq;
	q->rcq = (struct emu_cq *)a->recv_cq;
	q->sig_all = a->sq_sig_all;
	q->max_send_wr = a->cap.max_send_wr;
	q->rq_cap = a->cap.max_recv_wr;
	q->rq_sges = sges;
	q->next = qps;
	qps = q;
	stats.qps_live++;
	pthread_mutex_unlock(&lock);
	return &q->qp;
}

static int destroy_qp(struct ibv_qp *qp)
{
	pthread_mutex_lock(&lock);
	for (struct emu_qp **p = &qps; *p; p = &(*p)->next)
		if (&(*p)->qp == qp) {
			struct emu_qp *q = *p;
			*p = q->next;
			free(q->rq);
			free(q->rq_sge);
			free(q);
			stats.qps_live--;
			break;
		}
	pthread_mutex_unlock(&lock);
	return 0;
}

static int modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *a, int mask)
{
	struct emu_qp *q = (struct emu_qp *)qp;
	int rc = 0;
	pthread_mutex_lock(&lock);
	if (!(mask & IBV_QP_STATE)) {
		rc = EINVAL;
		goto out;
	}
	enum ibv_qp_state from = q->qp.state, to = a->qp_state;
	/* The transitions of the RC state diagram the backend uses, with the
	 * attributes real drivers insist on. */
	switch (to) {
	case IBV_QPS_INIT:
		if (from != IBV_QPS_RESET || !(mask & IBV_QP_PORT) || a->port_num != 1 ||
		    !(mask & IBV_QP_ACCESS_FLAGS))
			rc = EINVAL;
		break;
	case IBV_QPS_RTR:
		if (from != IBV_QPS_INIT || !(mask & IBV_QP_DEST_QPN) || !(mask & IBV_QP_AV) ||
		    !(mask & IBV_QP_PATH_MTU) || !(mask & IBV_QP_RQ_PSN))
			rc = EINVAL;
		else
			q->dest = a->dest_qp_num;
		break;
	case IBV_QPS_RTS:
		if (from != IBV_QPS_RTR || !(mask & IBV_QP_SQ_PSN))
			rc = EINVAL;
		break;
	case IBV_QPS_ERR:
		qp_to_error(q);
		goto out;
	case IBV_QPS_RESET:
		break;
	default:
		rc = EINVAL;
	}
	if (!rc)
		q->qp.state = to;
out:
	pthread_mutex_unlock(&lock);
	return rc;
}

static int post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	struct emu_qp *q = (struct emu_qp *)qp;
	int rc = 0;
	pthread_mutex_lock(&lock);
	for (; wr; wr = wr->next) {
		if (q->qp.state != IBV_QPS_RTS && q->qp.state != IBV_QPS_ERR) {
			rc = EINVAL;
			break;
		}
		if (q->sq_used >= q->max_send_wr) {
			rc = ENOMEM;
			break;
		}
		enum ibv_wc_opcode op = wr->opcode == IBV_WR_SEND || wr->opcode == IBV_WR_SEND_WITH_IMM
						? IBV_WC_SEND : IBV_WC_RDMA_WRITE;
		if (q->qp.state == IBV_QPS_ERR) {
			struct ibv_wc wc = {.wr_id = wr->wr_id, .status = IBV_WC_WR_FLUSH_ERR,
					    .opcode = op, .qp_num = q->qp.qp_num};
			push_wc(q->scq, &wc);
			q->sq_used++;
			stats.flushed++;
			continue;
		}
		uint32_t len = 0;
		enum ibv_wc_status st;
		if (fail_nth && --fail_nth == 0)
			st = fail_status;
		else
			st = exec(q, wr, &len);
		send_wc(q, wr, st, op, len);
		if (st != IBV_WC_SUCCESS) {
			qp_to_error(q);
			if (q->ctx)
				push_async(q->ctx, IBV_EVENT_QP_FATAL, &q->qp);
		}
	}
	pthread_mutex_unlock(&lock);
	if (rc && bad)
		*bad = wr;
	return rc;
}

static int post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	struct emu_qp *q = (struct emu_qp *)qp;
	int rc = 0;
	pthread_mutex_lock(&lock);
	for (; wr; wr = wr->next) {
		if (q->qp.state == IBV_QPS_RESET || q->rq_n >= q->rq_cap ||
		    (uint32_t)wr->num_sge > q->rq_sges || wr->num_sge < 0) {
			rc = q->rq_n >= q->rq_cap ? ENOMEM : EINVAL;
			break;
		}
		if (q->qp.state == IBV_QPS_ERR) {
			struct ibv_wc wc = {.wr_id = wr->wr_id, .status = IBV_WC_WR_FLUSH_ERR,
					    .opcode = IBV_WC_RECV, .qp_num = q->qp.qp_num};
			push_wc(q->rcq, &wc);
			stats.flushed++;
			continue;
		}
		uint32_t slot = (q->rq_head + q->rq_n) % q->rq_cap;
		struct ibv_sge *sg = &q->rq_sge[(size_t)slot * q->rq_sges];
		for (int i = 0; i < wr->num_sge; i++)
			sg[i] = wr->sg_list[i];
		q->rq[slot] = (struct ibv_recv_wr){.wr_id = wr->wr_id, .sg_list = sg,
						   .num_sge = wr->num_sge};
		q->rq_n++;
	}
	pthread_mutex_unlock(&lock);
	if (rc && bad)
		*bad = wr;
	return rc;
}

static int poll_cq(struct ibv_cq *ibcq, int n, struct ibv_wc *wc)
{
	struct emu_cq *cq = (struct emu_cq *)ibcq;
	int got = 0;
	pthread_mutex_lock(&lock);
	while (got < n && cq->n) {
		wc[got] = cq->q[cq->head];
		cq->head = (cq->head + 1) % cq->cap;
		cq->n--;
		if (wc[got].opcode == IBV_WC_SEND || wc[got].opcode == IBV_WC_RDMA_WRITE) {
			struct emu_qp *q = find_qp(wc[got].qp_num);
			if (q && q->sq_used)
				q->sq_used--;
		}
		got++;
	}
	pthread_mutex_unlock(&lock);
	return got;
}

static int poll_async(struct ibv_context *ctx, struct ibv_async_event *ev)
{
	struct emu_ctx *c = (struct emu_ctx *)ctx;
	int rc = 0;
	pthread_mutex_lock(&lock);
	if (c->nev) {
		*ev = c->ev[0];
		memmove(&c->ev[0], &c->ev[1], (c->nev - 1) * sizeof(c->ev[0]));
		c->nev--;
		rc = 1;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

const struct keel_rdma_verbs keel_rdma_verbs_emu = {
	.name = "emulated", .emulated = true,
	.get_device_list = get_device_list, .free_device_list = free_device_list,
	.get_device_name = get_device_name, .open_device = open_device,
	.close_device = close_device, .query_port = query_port, .query_gid = query_gid,
	.alloc_pd = alloc_pd, .dealloc_pd = dealloc_pd, .reg_mr = reg_mr,
	.dereg_mr = dereg_mr, .create_cq = create_cq, .destroy_cq = destroy_cq,
	.create_qp = create_qp, .destroy_qp = destroy_qp, .modify_qp = modify_qp,
	.post_send = post_send, .post_recv = post_recv, .poll_cq = poll_cq,
	.poll_async = poll_async,
};

/* ---- fault injection */

void keel_rdma_emu_fail_nth_send(unsigned nth, enum ibv_wc_status status)
{
	pthread_mutex_lock(&lock);
	fail_nth = nth;
	fail_status = status;
	pthread_mutex_unlock(&lock);
}

unsigned keel_rdma_emu_fail_all_qps(void)
{
	unsigned n = 0;
	pthread_mutex_lock(&lock);
	for (struct emu_qp *q = qps; q; q = q->next) {
		if (q->qp.state == IBV_QPS_ERR || q->qp.state == IBV_QPS_RESET)
			continue;
		qp_to_error(q);
		if (q->ctx)
			push_async(q->ctx, IBV_EVENT_QP_FATAL, &q->qp);
		n++;
	}
	pthread_mutex_unlock(&lock);
	return n;
}

void keel_rdma_emu_remove_device(void)
{
	pthread_mutex_lock(&lock);
	removed = true;
	for (struct emu_qp *q = qps; q; q = q->next)
		qp_to_error(q);
	for (struct emu_ctx *c = ctxs; c; c = c->next)
		push_async(c, IBV_EVENT_DEVICE_FATAL, NULL);
	pthread_mutex_unlock(&lock);
}

void keel_rdma_emu_restore_device(void)
{
	pthread_mutex_lock(&lock);
	removed = false;
	pthread_mutex_unlock(&lock);
}

void keel_rdma_emu_get_stats(struct keel_rdma_emu_stats *out)
{
	pthread_mutex_lock(&lock);
	*out = stats;
	pthread_mutex_unlock(&lock);
}
