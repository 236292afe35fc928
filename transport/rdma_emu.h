/*
 * transport/rdma_emu.h — controls of the EMULATED verbs table
 * (keel_rdma_verbs_emu, transport/rdma_emu.c), for tests.
 *
 * The emulation is a process-wide fabric with one device, "emu0", port 1,
 * RoCE-style (LID 0, one GID). Queue pairs of any context in the process
 * reach each other by QP number once in RTR/RTS. It implements reliable-
 * connected semantics: WRs of one QP execute in order and completely, at
 * once inside post_send (so the responder's completion is queued before
 * post_send returns); RDMA WRITE (with or without immediate) lands in the
 * remote MR named by rkey only when the rkey exists, grants remote write and
 * covers [remote_addr, +len) (else IBV_WC_REM_ACCESS_ERR, both QPs to
 * error); a WRITE with immediate or a SEND consumes a posted receive (none:
 * IBV_WC_RNR_RETRY_EXC_ERR); an unreachable or errored peer QP gives
 * IBV_WC_RETRY_EXC_ERR; a QP in error flushes every WR (IBV_WC_WR_FLUSH_ERR),
 * receives included. Below are the faults a test can ask for.
 *
 * It is an emulation: nothing here involves an RDMA device, and a test on
 * it proves the backend's logic, never that RDMA hardware works.
 * All functions are thread-safe (one process-wide lock).
 */
#ifndef KEEL_TRANSPORT_RDMA_EMU_H
#define KEEL_TRANSPORT_RDMA_EMU_H

#include <infiniband/verbs.h>
#include <stdint.h>

struct keel_rdma_emu_stats {
	uint64_t writes;        /* RDMA WRITE / WRITE_WITH_IMM executed */
	uint64_t write_bytes;
	uint64_t sends;         /* SEND executed */
	uint64_t access_errors; /* rkey/bounds/lkey refusals */
	uint64_t rnr_errors;    /* WRITE_WITH_IMM/SEND without a posted receive */
	uint64_t flushed;       /* WRs completed with IBV_WC_WR_FLUSH_ERR */
	uint64_t qps_live;      /* QPs created and not yet destroyed */
	uint64_t mrs_live;
	uint64_t mrs_registered; /* reg_mr calls that succeeded, ever */
};

/* The nth data WR posted from now on (1 = the next one; any QP of the
 * process) completes with status (e.g. IBV_WC_REM_ACCESS_ERR) and moves
 * its QP to the error state. 0 cancels. */
void keel_rdma_emu_fail_nth_send(unsigned nth, enum ibv_wc_status status);
/* Every live QP moves to the error state (its WRs flush) and its context
 * gets IBV_EVENT_QP_FATAL. Returns how many QPs it moved. */
unsigned keel_rdma_emu_fail_all_qps(void);
/* Device removal: every QP to error, IBV_EVENT_DEVICE_FATAL on every open
 * context, and until restore the device list is empty and open_device,
 * reg_mr and create_qp fail with ENODEV. */
void keel_rdma_emu_remove_device(void);
void keel_rdma_emu_restore_device(void);
void keel_rdma_emu_get_stats(struct keel_rdma_emu_stats *out);

#endif
