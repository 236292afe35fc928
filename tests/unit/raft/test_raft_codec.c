/*
 * The Raft message codec (consensus/raft/raft_codec.c) and the configuration
 * payload: round trips, and every truncation or bad length is an error.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "keel/raft.h"

static struct keel_raft_entry ents[3] = {
	{2, 3, KEEL_RAFT_ENTRY_NORMAL, 3, (const uint8_t *)"abc"},
	{2, 4, KEEL_RAFT_ENTRY_NOOP, 0, NULL},
	{3, 5, KEEL_RAFT_ENTRY_NORMAL, 2, (const uint8_t *)"xy"},
};

static struct keel_raft_msg sample(void)
{
	struct keel_raft_msg m = {
		.type = KEEL_RAFT_MSG_SNAPSHOT, .from = 7, .to = 9, .term = 11,
		.log_term = 12, .index = 13, .commit = 14, .reject = true,
		.force = true, .snap_done = true, .reject_hint = 15, .ctx = 16,
		.lease_tick = 17, .entries = ents, .n_entries = 3,
		.snap = {.index = 18, .term = 19,
			 .conf = {.n_voters = 2, .n_learners = 1, .voters = {1, 2}, .learners = {3},
				  .n_outgoing = 2, .outgoing = {1, 5}}},
		.snap_offset = 20, .snap_total = 30, .chunk = (const uint8_t *)"chunk!",
		.chunk_len = 6};
	return m;
}

static void same(const struct keel_raft_msg *a, const struct keel_raft_msg *b)
{
	cr_assert_eq(a->type, b->type);
	cr_assert_eq(a->from, b->from);
	cr_assert_eq(a->to, b->to);
	cr_assert_eq(a->term, b->term);
	cr_assert_eq(a->log_term, b->log_term);
	cr_assert_eq(a->index, b->index);
	cr_assert_eq(a->commit, b->commit);
	cr_assert_eq(a->reject, b->reject);
	cr_assert_eq(a->force, b->force);
	cr_assert_eq(a->snap_done, b->snap_done);
	cr_assert_eq(a->reject_hint, b->reject_hint);
	cr_assert_eq(a->ctx, b->ctx);
	cr_assert_eq(a->lease_tick, b->lease_tick);
	cr_assert_eq(a->n_entries, b->n_entries);
	for (size_t i = 0; i < a->n_entries; i++) {
		cr_assert_eq(a->entries[i].term, b->entries[i].term);
		cr_assert_eq(a->entries[i].index, b->entries[i].index);
		cr_assert_eq(a->entries[i].type, b->entries[i].type);
		cr_assert_eq(a->entries[i].len, b->entries[i].len);
		if (a->entries[i].len)
			cr_assert(!memcmp(a->entries[i].data, b->entries[i].data, a->entries[i].len));
	}
	cr_assert(!memcmp(&a->snap, &b->snap, sizeof(a->snap)));
	cr_assert_eq(a->snap_offset, b->snap_offset);
	cr_assert_eq(a->snap_total, b->snap_total);
	cr_assert_eq(a->chunk_len, b->chunk_len);
	if (a->chunk_len)
		cr_assert(!memcmp(a->chunk, b->chunk, a->chunk_len));
}

Test(raft_codec, round_trip_every_field)
{
	struct keel_raft_msg m = sample(), d;
	size_t n = keel_raft_msg_encoded_size(&m);
	uint8_t *buf = malloc(n);
	cr_assert_eq(keel_raft_msg_encode(&m, buf, n), (int)n);
	cr_assert_eq(keel_raft_msg_encode(&m, buf, n - 1), KEEL_ETOOBIG);
	cr_assert_eq(keel_raft_msg_decode(buf, n, &d), 0);
	same(&m, &d);
	/* The decoded copy owns its memory: the wire buffer may go. */
	memset(buf, 0xee, n);
	same(&m, &d);
	keel_raft_msg_free(&d);
	free(buf);
}

Test(raft_codec, empty_message_round_trip)
{
	struct keel_raft_msg m = {.type = KEEL_RAFT_MSG_VOTE, .from = 1, .to = 2, .term = 3}, d;
	uint8_t buf[256];
	int n = keel_raft_msg_encode(&m, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_assert_eq(keel_raft_msg_decode(buf, (size_t)n, &d), 0);
	same(&m, &d);
	cr_assert_null(d.owned);
	keel_raft_msg_free(&d);
}

Test(raft_codec, every_truncation_and_extension_fails)
{
	struct keel_raft_msg m = sample(), d;
	size_t n = keel_raft_msg_encoded_size(&m);
	uint8_t *buf = malloc(n + 1);
	keel_raft_msg_encode(&m, buf, n);
	for (size_t cut = 0; cut < n; cut++) {
		cr_assert_eq(keel_raft_msg_decode(buf, cut, &d), KEEL_EPROTO, "cut at %zu", cut);
		cr_assert_null(d.owned);
	}
	buf[n] = 0;
	cr_assert_eq(keel_raft_msg_decode(buf, n + 1, &d), KEEL_EPROTO);
	free(buf);
}

Test(raft_codec, hostile_counts_rejected)
{
	struct keel_raft_msg m = {.type = KEEL_RAFT_MSG_APPEND, .from = 1, .to = 2}, d;
	uint8_t buf[512];
	int n = keel_raft_msg_encode(&m, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	/* counts follow the 4-byte header and 13 u64 fields */
	size_t counts = 4 + 13 * 8;
	uint8_t b2[512];
	memcpy(b2, buf, (size_t)n);
	b2[counts + 8] = 0xff; /* n_entries huge */
	b2[counts + 9] = 0xff;
	cr_assert_eq(keel_raft_msg_decode(b2, (size_t)n, &d), KEEL_EPROTO);
	memcpy(b2, buf, (size_t)n);
	b2[counts] = 17; /* n_voters above the maximum */
	cr_assert_eq(keel_raft_msg_decode(b2, (size_t)n, &d), KEEL_EPROTO);
	memcpy(b2, buf, (size_t)n);
	b2[counts + 12] = 1; /* chunk_len beyond the buffer */
	cr_assert_eq(keel_raft_msg_decode(b2, (size_t)n, &d), KEEL_EPROTO);
	memcpy(b2, buf, (size_t)n);
	b2[counts + 16] = 1; /* an outgoing id that is not there */
	cr_assert_eq(keel_raft_msg_decode(b2, (size_t)n, &d), KEEL_EPROTO);
	memcpy(b2, buf, (size_t)n);
	b2[2] = 0; /* type */
	cr_assert_eq(keel_raft_msg_decode(b2, (size_t)n, &d), KEEL_EPROTO);
	b2[2] = KEEL_RAFT_MSG_TYPE_MAX + 1;
	cr_assert_eq(keel_raft_msg_decode(b2, (size_t)n, &d), KEEL_EPROTO);
	memcpy(b2, buf, (size_t)n);
	b2[1] = 2; /* version */
	cr_assert_eq(keel_raft_msg_decode(b2, (size_t)n, &d), KEEL_EPROTO);
}

Test(raft_codec, entry_length_beyond_buffer_rejected)
{
	struct keel_raft_entry e = {1, 1, 0, 4, (const uint8_t *)"abcd"};
	struct keel_raft_msg m = {.type = KEEL_RAFT_MSG_APPEND, .from = 1, .to = 2,
				  .entries = &e, .n_entries = 1}, d;
	uint8_t buf[512];
	int n = keel_raft_msg_encode(&m, buf, sizeof(buf));
	size_t len_at = 4 + 13 * 8 + 20 + 20;
	cr_assert_eq(buf[len_at], 4);
	buf[len_at] = 5;
	cr_assert_eq(keel_raft_msg_decode(buf, (size_t)n, &d), KEEL_EPROTO);
	buf[len_at] = 3; /* shorter: the extra byte is then a stray chunk */
	cr_assert_eq(keel_raft_msg_decode(buf, (size_t)n, &d), KEEL_EPROTO);
}

Test(raft_codec, clone_is_deep)
{
	struct keel_raft_msg m = sample(), c;
	cr_assert_eq(keel_raft_msg_clone(&m, &c), 0);
	cr_assert_neq((const void *)c.entries, (const void *)m.entries);
	cr_assert_neq((const void *)c.chunk, (const void *)m.chunk);
	same(&m, &c);
	keel_raft_msg_free(&c);
}

Test(raft_codec, conf_payload)
{
	struct keel_raft_conf c = {.n_voters = 3, .n_learners = 1, .voters = {1, 2, 3}, .learners = {4}}, d;
	uint8_t buf[KEEL_RAFT_CONF_ENCODED_MAX];
	int n = keel_raft_conf_encode(&c, buf, sizeof(buf));
	cr_assert_eq(n, 12 + 4 * 8);
	cr_assert_eq(keel_raft_conf_decode(buf, (size_t)n, &d), 0);
	cr_assert(!memcmp(&c, &d, sizeof(c)));
	cr_assert(keel_raft_conf_is_voter(&d, 2));
	cr_assert(!keel_raft_conf_is_voter(&d, 4));
	cr_assert(keel_raft_conf_is_learner(&d, 4));
	for (int cut = 0; cut < n; cut++)
		cr_assert_eq(keel_raft_conf_decode(buf, (size_t)cut, &d), KEEL_EPROTO);
	cr_assert_eq(keel_raft_conf_encode(&c, buf, 10), KEEL_ETOOBIG);
	buf[0] = 17;
	cr_assert_eq(keel_raft_conf_decode(buf, (size_t)n, &d), KEEL_EPROTO);
}

Test(raft_codec, step_rejects_inconsistent_messages)
{
	struct keel_raft_config cfg = {.id = 1, .election_tick = 10, .heartbeat_tick = 1,
				       .initial = {.n_voters = 3, .voters = {1, 2, 3}}};
	struct keel_raft *r;
	cr_assert_eq(keel_raft_create(&cfg, NULL, &r, NULL), 0);
	/* entries whose indexes do not follow the previous index */
	struct keel_raft_entry e[2] = {{2, 5, 0, 0, NULL}, {2, 7, 0, 0, NULL}};
	struct keel_raft_msg m = {.type = KEEL_RAFT_MSG_APPEND, .from = 2, .to = 1, .term = 2,
				  .index = 4, .log_term = 1, .entries = e, .n_entries = 2};
	cr_assert_eq(keel_raft_step(r, &m), KEEL_EPROTO);
	/* an entry from a later term than the message */
	e[1].index = 6;
	e[1].term = 3;
	cr_assert_eq(keel_raft_step(r, &m), KEEL_EPROTO);
	m.type = 99;
	cr_assert_eq(keel_raft_step(r, &m), KEEL_EPROTO);
	/* messages to someone else are ignored */
	m.type = KEEL_RAFT_MSG_HEARTBEAT;
	m.n_entries = 0;
	m.to = 5;
	cr_assert_eq(keel_raft_step(r, &m), 0);
	struct keel_raft_status st;
	keel_raft_status(r, &st);
	cr_assert_eq(st.term, 1);
	keel_raft_destroy(r);
}

Test(raft_codec, create_rejects_bad_config)
{
	struct keel_raft *r;
	char err[KEEL_ERRMSG_LEN];
	struct keel_raft_config cfg = {.id = 0, .election_tick = 10, .heartbeat_tick = 1};
	cr_assert_eq(keel_raft_create(&cfg, NULL, &r, err), KEEL_ECONFIG);
	cfg.id = 1;
	cfg.heartbeat_tick = 10;
	cr_assert_eq(keel_raft_create(&cfg, NULL, &r, err), KEEL_ECONFIG);
	cfg.heartbeat_tick = 1;
	cfg.read_mode = KEEL_RAFT_READ_LEASE;
	cr_assert_eq(keel_raft_create(&cfg, NULL, &r, err), KEEL_ECONFIG);
	cr_assert(strstr(err, "check_quorum"));
	cfg.read_mode = KEEL_RAFT_READ_INDEX;
	cfg.initial = (struct keel_raft_conf){.n_voters = 2, .voters = {1, 1}};
	cr_assert_eq(keel_raft_create(&cfg, NULL, &r, err), KEEL_ECONFIG);
	struct keel_raft_entry e = {5, 2, 0, 0, NULL};
	struct keel_raft_boot boot = {.hard_state = {.term = 3}, .entries = &e, .n_entries = 1};
	cfg.initial.n_voters = 0;
	cr_assert_eq(keel_raft_create(&cfg, &boot, &r, err), KEEL_ECONFIG);
}
