/* libFuzzer target: the client protocol's decoder (services/proto.c).
 * Whatever the bytes, the stream-length check and the decoder must stay
 * inside them; a frame that decodes must re-encode to a frame that decodes
 * to the same message (fields in the encoder's order, unknown ones
 * dropped, so the bytes may differ), items included. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/proto.h"

#define MAX_ITEMS 4096

static int bytes_eq(struct keel_proto_bytes a, struct keel_proto_bytes b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void same(const struct keel_proto_msg *a, const struct keel_proto_msg *b)
{
	if (a->type != b->type || a->id != b->id || memcmp(a->has, b->has, sizeof(a->has)) ||
	    a->status != b->status || a->leader != b->leader || a->group != b->group ||
	    a->flags != b->flags || a->limit != b->limit || a->node != b->node ||
	    a->groups != b->groups || a->client != b->client || a->seq != b->seq ||
	    a->rev != b->rev || a->mod_rev != b->mod_rev || a->create_rev != b->create_rev ||
	    a->version != b->version || a->watch_id != b->watch_id || a->index != b->index ||
	    a->applied != b->applied || a->cmp != b->cmp || a->kv_status != b->kv_status ||
	    !bytes_eq(a->key, b->key) || !bytes_eq(a->value, b->value) ||
	    !bytes_eq(a->expect, b->expect) || !bytes_eq(a->token, b->token) ||
	    !bytes_eq(a->after, b->after) || !bytes_eq(a->message, b->message) ||
	    a->n_items != b->n_items)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* as a stream reader sees it */
	int fl = keel_proto_frame_len(data, size);
	if (fl > 0 && (size_t)fl <= size) {
		struct keel_proto_msg m;
		(void)keel_proto_decode(data, (size_t)fl, &m, NULL);
	}
	/* the whole input as one frame, with a correct length field */
	if (size < 7)
		return 0;
	uint8_t *f = malloc(size);
	if (!f)
		return 0;
	memcpy(f, data, size);
	keel_put_le32(f, (uint32_t)(size - 4));
	keel_put_le16(f + 4, KEEL_PROTO_MAGIC);
	f[6] = KEEL_PROTO_VERSION;
	struct keel_proto_msg m;
	const char *why = NULL;
	if (keel_proto_decode(f, size, &m, &why) == 0) {
		static struct keel_proto_item items[MAX_ITEMS];
		size_t pos = 0;
		uint32_t n = 0;
		int rc;
		while (n < MAX_ITEMS && (rc = keel_proto_item_next(&m, &pos, &items[n])) == 1)
			n++;
		if (n != m.n_items && n < MAX_ITEMS)
			abort(); /* the decoder counted items the walk does not find */
		if (n == m.n_items) {
			m.item = items;
			size_t need = keel_proto_size(&m);
			uint8_t *out = need ? malloc(need) : NULL;
			if (out) {
				if (keel_proto_encode(&m, out, need) != (int)need)
					abort();
				struct keel_proto_msg m2;
				if (keel_proto_decode(out, need, &m2, NULL) != 0)
					abort();
				same(&m, &m2);
				size_t p2 = 0;
				struct keel_proto_item it;
				for (uint32_t i = 0; i < n; i++) {
					if (keel_proto_item_next(&m2, &p2, &it) != 1 ||
					    !bytes_eq(it.key, items[i].key) ||
					    !bytes_eq(it.value, items[i].value) ||
					    it.create_rev != items[i].create_rev ||
					    it.mod_rev != items[i].mod_rev || it.version != items[i].version)
						abort();
				}
				free(out);
			}
		}
	} else if (!why) {
		abort(); /* every refusal says why */
	}
	free(f);
	return 0;
}
