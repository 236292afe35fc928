/* libFuzzer target: the node layer's dispatch of received frames
 * (node/endpoint.c, keel_endpoint_dispatch): the type table, the group
 * envelope, handler lookup. The input is a sequence of frames, each
 * u16 type, u16 length, payload; the endpoint (on the sim transport and a
 * virtual clock, as the simulation opens it) has handlers for a plain type
 * and for groups 0..3 of a grouped one. Every frame must be counted exactly
 * once: delivered to a handler or dropped under one of the drop counters,
 * and a delivered grouped frame must name the group it was addressed to. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/node.h"
#include "transport/sim.h"

static struct keel_endpoint *ep;
static uint64_t delivered;
static uint32_t want_group;
static uint16_t raft_id;

static void on_msg(void *arg, struct keel_endpoint *e, const struct keel_node_msg *m)
{
	(void)e;
	uintptr_t g = (uintptr_t)arg;
	if (m->type == raft_id && (m->group != g || m->group != want_group))
		abort(); /* delivered to the wrong group's handler */
	delivered++;
}

static void setup(void)
{
	static struct keel_node_config cfg;
	static struct keel_clock *clock;
	static struct keel_sim_net *net;
	char err[KEEL_ERRMSG_LEN];
	/* the secret file must be a regular private file: make one */
	char path[] = "/tmp/keel-fuzz-envelope-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, "fuzz-secret-0123456789abcdef0123", 32) != 32)
		abort();
	close(fd);
	char text[512];
	snprintf(text, sizeof(text),
		 "[node]\nid = 1\ncluster = 1\nlisten = 127.0.0.1:1\nshards = 1\nsecret_file = %s\n"
		 "[peers]\n1 = 127.0.0.1:1\n2 = 127.0.0.2:1\n",
		 path);
	int rc = keel_node_config_parse(text, "fuzz.ini", "/", &cfg, err);
	unlink(path);
	if (rc < 0)
		abort();
	if (keel_clock_virtual_new(0, &clock) < 0 || keel_sim_net_create(1, NULL, &net) < 0)
		abort();
	struct keel_endpoint_config ec = {.node = &cfg, .shard = 0, .nshards = 1, .clock = clock,
					  .transport = "sim", .backend_arg = net, .seed = 1};
	if (keel_endpoint_open(&ec, &ep, err) < 0)
		abort();
	raft_id = (uint16_t)keel_msg_type_id("raft");
	for (uintptr_t g = 0; g < 4; g++)
		if (keel_endpoint_join(ep, "raft", (uint32_t)g, on_msg, (void *)g) < 0)
			abort();
	if (keel_endpoint_handle(ep, "mr", on_msg, NULL) < 0)
		abort();
	keel_log_set_level(KEEL_LOG_ERROR);
}

static uint64_t total(const struct keel_endpoint_stats *s)
{
	return s->received + s->unknown_type + s->unhandled + s->unknown_group + s->malformed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ep)
		setup();
	size_t pos = 0;
	while (size - pos >= 4) {
		uint16_t type = keel_get_le16(data + pos);
		uint16_t len = keel_get_le16(data + pos + 2);
		pos += 4;
		if (len > size - pos)
			len = (uint16_t)(size - pos);
		struct keel_endpoint_stats before, after;
		keel_endpoint_get_stats(ep, &before);
		uint64_t d0 = delivered;
		want_group = len >= 4 ? keel_get_le32(data + pos) : UINT32_MAX;
		/* a copy, so reading past len is caught by ASan */
		uint8_t *frame = malloc(len ? len : 1);
		if (!frame)
			return 0;
		memcpy(frame, data + pos, len);
		struct keel_msg m = {.data = frame, .len = len, .type = type, .from = {2, 0}};
		keel_endpoint_dispatch(ep, (struct keel_addr){2, 0}, &m);
		free(frame);
		keel_endpoint_get_stats(ep, &after);
		if (total(&after) != total(&before) + 1)
			abort(); /* a frame counted twice or not at all */
		if ((after.received - before.received) != delivered - d0)
			abort(); /* counted as delivered without reaching a handler */
		pos += len;
	}
	return 0;
}
