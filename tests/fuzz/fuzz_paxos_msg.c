/* libFuzzer target: the Multi-Paxos message decoder
 * (consensus/paxos/paxos_codec.c), then the core itself. A decoded message
 * must re-encode to the same bytes; then it is stepped into a live core (as
 * server 1 of 3, whatever `to` said; `from` is mapped onto 2 or 3 so the
 * core does not drop it as a stranger's) and the ready batch drained, so a
 * hostile peer's message is shown to neither crash the core nor make it
 * read out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/paxos.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;
static struct keel_paxos *core;
static unsigned uses;

static void touch(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t x = 0;
	for (size_t i = 0; i < n; i++)
		x ^= b[i];
	sink = x;
}

static void drain(void)
{
	for (int i = 0; i < 4 && keel_paxos_has_ready(core); i++) {
		struct keel_paxos_ready rd;
		keel_paxos_ready(core, &rd);
		for (size_t j = 0; j < rd.n_msgs; j++) {
			for (size_t k = 0; k < rd.msgs[j].n_values; k++)
				touch(rd.msgs[j].values[k].data, rd.msgs[j].values[k].len);
			touch(rd.msgs[j].snap, rd.msgs[j].snap_len);
		}
		for (size_t j = 0; j < rd.n_accepted; j++)
			touch(rd.accepted[j].data, rd.accepted[j].len);
		for (size_t j = 0; j < rd.n_chosen; j++)
			touch(rd.chosen[j].data, rd.chosen[j].len);
		if (rd.snapshot)
			touch(rd.snapshot->data, rd.snapshot->len);
		keel_paxos_advance(core, &rd);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keel_paxos_msg m;
	if (keel_paxos_msg_decode(data, size, &m) != 0)
		return 0;
	for (size_t i = 0; i < m.n_values; i++)
		touch(m.values[i].data, m.values[i].len);
	touch(m.snap, m.snap_len);

	size_t n = keel_paxos_msg_encoded_size(&m);
	uint8_t *buf = malloc(n ? n : 1);
	if (keel_paxos_msg_encode(&m, buf, n) != (int)n || n != size || memcmp(buf, data, n))
		abort();
	free(buf);

	if (!core || ++uses > 2000) {
		keel_paxos_destroy(core);
		struct keel_paxos_config cfg = {.id = 1, .n_voters = 3, .voters = {1, 2, 3},
						.election_tick = 10, .heartbeat_tick = 1,
						.max_msg_bytes = 256};
		if (keel_paxos_create(&cfg, NULL, &core, NULL))
			abort();
		uses = 0;
		/* half the time as the leader, so answers reach the proposer */
		if (size & 1) {
			keel_paxos_campaign(core);
			drain();
		}
	}
	m.to = 1;
	m.from = 2 + (m.from & 1);
	/* proposers' own messages carry their ballot: keep it theirs */
	if (m.type == KEEL_PAXOS_MSG_PREPARE || m.type == KEEL_PAXOS_MSG_ACCEPT ||
	    m.type == KEEL_PAXOS_MSG_HEARTBEAT)
		m.ballot = keel_paxos_ballot_round(m.ballot) << 16 | m.from;
	keel_paxos_step(core, &m);
	drain();
	if (m.ctx & 1) /* sometimes also run the clock */
		for (int i = 0; i < 25; i++)
			keel_paxos_tick(core);
	if (m.ctx & 2)
		keel_paxos_propose(core, "fuzz", 4, NULL, NULL);
	if (m.ctx & 4)
		keel_paxos_read(core, m.ctx);
	drain();
	keel_paxos_msg_free(&m);
	return 0;
}
