/* libFuzzer target: the Raft message decoder (consensus/raft/raft_codec.c), then
 * the core itself. A decoded message must re-encode to a message that
 * decodes to the same fields; then it is stepped into a live core (as
 * server 1 of 3, whatever `to` said) and the ready batch drained, so a
 * hostile peer's message is shown to neither crash the core nor make it
 * read out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/raft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;
static struct keel_raft *core;
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
	for (int i = 0; i < 4 && keel_raft_has_ready(core); i++) {
		struct keel_raft_ready rd;
		keel_raft_ready(core, &rd);
		for (size_t j = 0; j < rd.n_msgs; j++)
			for (size_t k = 0; k < rd.msgs[j].n_entries; k++)
				touch(rd.msgs[j].entries[k].data, rd.msgs[j].entries[k].len);
		for (size_t j = 0; j < rd.n_committed; j++)
			touch(rd.committed[j].data, rd.committed[j].len);
		if (rd.snapshot)
			touch(rd.snapshot->data, rd.snapshot->len);
		keel_raft_advance(core, &rd);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keel_raft_msg m;
	if (keel_raft_msg_decode(data, size, &m) != 0)
		return 0;
	for (size_t i = 0; i < m.n_entries; i++)
		touch(m.entries[i].data, m.entries[i].len);
	touch(m.chunk, m.chunk_len);

	size_t n = keel_raft_msg_encoded_size(&m);
	uint8_t *buf = malloc(n ? n : 1);
	if (keel_raft_msg_encode(&m, buf, n) != (int)n)
		abort();
	struct keel_raft_msg m2;
	if (keel_raft_msg_decode(buf, n, &m2) != 0 || m2.type != m.type || m2.term != m.term ||
	    m2.n_entries != m.n_entries || m2.chunk_len != m.chunk_len ||
	    (m.chunk_len && memcmp(m.chunk, m2.chunk, m.chunk_len)))
		abort();
	keel_raft_msg_free(&m2);
	free(buf);

	if (!core || ++uses > 2000) {
		keel_raft_destroy(core);
		struct keel_raft_config cfg = {
			.id = 1, .election_tick = 10, .heartbeat_tick = 1, .pre_vote = true,
			.check_quorum = true, .max_snapshot_chunk = 64,
			.initial = {.n_voters = 3, .voters = {1, 2, 3}}};
		if (keel_raft_create(&cfg, NULL, &core, NULL))
			abort();
		uses = 0;
		drain();
	}
	m.to = 1;
	keel_raft_step(core, &m);
	drain();
	if (m.type == 1 && m.term & 1) /* sometimes also run the clock */
		for (int i = 0; i < 25; i++)
			keel_raft_tick(core);
	drain();
	keel_raft_msg_free(&m);
	return 0;
}
