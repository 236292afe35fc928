/* libFuzzer target: the frame decoder (transport/wire.c) and the handshake
 * message decoders (transport/handshake.c). The input is treated as a byte
 * stream that arrives in pieces, as a TCP connection would deliver it: the
 * first byte picks the piece size. Every decoded payload is read in full so
 * ASan sees any out-of-bounds view. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/transport.h"
#include "transport/handshake.h"
#include "transport/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t x = 0;
	for (size_t i = 0; i < n; i++)
		x ^= b[i];
	sink = x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] + 1;
	data++;
	size--;
	const uint32_t max = 4096;
	/* Reassemble like a connection: accumulate into a bounded buffer,
	 * decode whole frames, stop at the first error. */
	uint8_t *acc = malloc(KEEL_WIRE_HDR_LEN + max);
	/* Handshake frames go to a server and a client state machine. */
	static const uint8_t secret[] = "fuzz-secret-0123456789";
	struct keel_hs srv, cli;
	uint8_t out[KEEL_HS_WELCOME_LEN];
	char err[KEEL_ERRMSG_LEN];
	keel_hs_server_start(&srv, secret, sizeof(secret) - 1, 1, 2, 0);
	keel_hs_client_start(&cli, secret, sizeof(secret) - 1, 1, 1, 0, 2, 0, out);
	size_t have = 0;
	size_t off = 0;
	while (off < size) {
		size_t n = size - off < piece ? size - off : piece;
		size_t room = KEEL_WIRE_HDR_LEN + max - have;
		if (n > room)
			n = room;
		memcpy(acc + have, data + off, n);
		have += n;
		off += n;
		for (;;) {
			struct keel_wire_hdr h;
			const void *pl = NULL;
			/* An exact-size heap copy, so reads past `have` trap. */
			uint8_t *exact = malloc(have ? have : 1);
			memcpy(exact, acc, have);
			int rc = keel_wire_decode(exact, have, max, &h, &pl);
			if (rc > 0) {
				if ((size_t)rc > have || h.len + KEEL_WIRE_HDR_LEN != (size_t)rc)
					abort();
				touch(pl, h.len);
				if (h.kind == KEEL_WIRE_HELLO)
					(void)keel_hs_server_on_hello(&srv, pl, h.len, NULL, out, err);
				else if (h.kind == KEEL_WIRE_WELCOME)
					(void)keel_hs_client_on_welcome(&cli, pl, h.len, out, err);
				else if (h.kind == KEEL_WIRE_AUTH)
					(void)keel_hs_server_on_auth(&srv, pl, h.len, err);
				else if (h.kind == KEEL_WIRE_REFUSE) {
					uint32_t why;
					if (keel_wire_decode_refuse(pl, h.len, &why) == 0 &&
					    !keel_wire_refuse_text(why)[0])
						abort();
				}
				memmove(acc, acc + rc, have - (size_t)rc);
				have -= (size_t)rc;
			}
			free(exact);
			if (rc < 0) {
				free(acc);
				return 0;
			}
			if (rc == 0)
				break;
		}
	}
	free(acc);
	return 0;
}
