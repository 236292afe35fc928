/* The transport backends this build has. A backend is one file (or folder)
 * plus one line here, under its meson feature flag. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "keel/transport.h"
#include "keel_config.h"

extern const struct keel_transport_ops keel_transport_tcp_ops; /* transport/tcp.c */
extern const struct keel_transport_ops keel_transport_sim_ops; /* transport/sim.c */
#if KEEL_HAVE_DPDK
extern const struct keel_transport_ops keel_transport_dpdk_ops; /* transport/dpdk/ */
#endif
#if KEEL_HAVE_RDMA
extern const struct keel_transport_ops keel_transport_rdma_ops; /* transport/rdma.c */
void keel_transport_rdma_devices_print(FILE *f);                 /* transport/rdma.c */
#endif

/* One line per backend, in preference order. */
static const struct keel_transport_ops *const backends[] = {
	&keel_transport_tcp_ops,
	&keel_transport_sim_ops,
#if KEEL_HAVE_DPDK
	&keel_transport_dpdk_ops,
#endif
#if KEEL_HAVE_RDMA
	&keel_transport_rdma_ops,
#endif
	NULL,
};

const struct keel_transport_ops *const *keel_transport_registry(void)
{
	return backends;
}

const struct keel_transport_ops *keel_transport_find(const char *name)
{
	if (!name)
		return NULL;
	for (const struct keel_transport_ops *const *b = backends; *b; b++)
		if (!strcmp((*b)->name, name))
			return *b;
	return NULL;
}

const char *keel_transport_caps_str(uint32_t caps, char *buf, size_t len)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} names[] = {
		{KEEL_TRANSPORT_RELIABLE, "reliable"},
		{KEEL_TRANSPORT_ZERO_COPY_SEND, "zc-send"},
		{KEEL_TRANSPORT_ZERO_COPY_RECV, "zc-recv"},
		{KEEL_TRANSPORT_BUSY_POLL, "busy-poll"},
		{KEEL_TRANSPORT_AUTH, "auth"},
		{KEEL_TRANSPORT_SIMULATED, "simulated"},
		{KEEL_TRANSPORT_REACTOR, "reactor"},
	};
	size_t off = 0;
	if (len == 0)
		return buf;
	buf[0] = '\0';
	for (size_t i = 0; i < KEEL_ARRAY_LEN(names); i++) {
		if (!(caps & names[i].bit))
			continue;
		int n = snprintf(buf + off, len - off, "%s%s", off ? "," : "", names[i].name);
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
	return buf;
}

void keel_transport_registry_print(FILE *f)
{
	for (const struct keel_transport_ops *const *b = backends; *b; b++) {
		char caps[128];
		char maxmsg[32] = "config";
		if ((*b)->max_msg)
			snprintf(maxmsg, sizeof(maxmsg), "%u", (*b)->max_msg);
		fprintf(f, "  %-5s %-40s max msg %-8s %s\n", (*b)->name,
			keel_transport_caps_str((*b)->caps, caps, sizeof(caps)), maxmsg,
			(*b)->description);
	}
}

void keel_transport_devices_print(FILE *f)
{
#if KEEL_HAVE_RDMA
	keel_transport_rdma_devices_print(f);
#else
	fprintf(f, "rdma devices: not looked for (this build has no rdma backend: "
		   "-Drdma=disabled or libibverbs not found)\n");
#endif
}
