/* libFuzzer target: the RESP command parser (services/resp_parse.c). The
 * input is parsed as a listener would, as a stream of pipelined commands;
 * then again fed in two pieces (cut at its first byte), which must give
 * no command the whole does not: parsing is the same however the bytes
 * arrive. "Incomplete" must ask for more bytes than there are. Replies
 * are built from every argument (ASan checks each byte read). The input
 * also goes to the decoder of forwarded writes (keel_resp_fwd_decode), and
 * a request's command to the KV command decoder, as a leader does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/kv.h"
#include "keel/resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses data as a stream; returns a checksum of every command's args and
 * the count of bytes consumed before an error or the end. */
static uint64_t run(const uint8_t *data, size_t size, size_t *used, int *last)
{
	struct keel_resp_limits lim = {.max_bulk = 4096, .max_args = 64, .max_inline = 1024};
	struct keel_resp_parser p;
	keel_resp_parser_init(&p, &lim);
	uint64_t h = 1469598103934665603ull;
	size_t pos = 0;
	int rc = 0;
	while (pos < size) {
		rc = keel_resp_parse(&p, data + pos, size - pos);
		if (rc <= 0) {
			if (rc == 0 && p.need <= size - pos)
				abort(); /* "need more" must ask for more than there is */
			break;
		}
		struct keel_resp_buf b = {0};
		keel_resp_array(&b, p.argc);
		for (uint32_t i = 0; i < p.argc; i++) {
			for (size_t j = 0; j < p.argl[i]; j++)
				h = (h ^ p.argv[i][j]) * 1099511628211ull;
			h = (h ^ 0x100) * 1099511628211ull;
			keel_resp_bulk(&b, p.argv[i], p.argl[i]);
		}
		keel_resp_buf_free(&b);
		pos += (size_t)rc;
	}
	keel_resp_parser_free(&p);
	*used = pos;
	*last = rc;
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t used;
	int last;
	uint64_t h = run(data, size, &used, &last);
	/* the same bytes, arriving as a prefix first: a prefix never yields a
	 * command that the whole stream would not */
	if (size > 1) {
		size_t cut = data[0] % size;
		size_t u2;
		int l2;
		uint8_t *copy = malloc(cut ? cut : 1);
		if (!copy)
			return 0;
		memcpy(copy, data, cut);
		(void)run(copy, cut, &u2, &l2);
		/* a command complete in the prefix is complete in the whole */
		if (u2 > used)
			abort();
		(void)l2;
		free(copy);
	}
	(void)h;
	/* the same bytes as a forwarded write between nodes (keel/resp.h) */
	struct keel_resp_fwd f;
	if (keel_resp_fwd_decode(data, size, &f) == 0 && f.kind == 1) {
		struct keel_kv_cmd c;
		(void)keel_kv_cmd_decode(f.cmd, f.cmd_len, &c);
	} else if (keel_resp_fwd_decode(data, size, &f) == 0 && f.kind != 2) {
		abort();
	}
	return 0;
}
