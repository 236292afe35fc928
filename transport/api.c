/* The backend-independent part of the transport API (keel/transport.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "keel/transport.h"

int keel_transport_open(const char *name, const struct keel_transport_config *cfg,
			struct keel_transport **out, char *errmsg)
{
	const struct keel_transport_ops *ops = keel_transport_find(name);
	*out = NULL;
	if (!ops) {
		char have[256] = "";
		size_t off = 0;
		for (const struct keel_transport_ops *const *b = keel_transport_registry(); *b; b++) {
			int n = snprintf(have + off, sizeof(have) - off, "%s%s",
					 off ? ", " : "", (*b)->name);
			if (n < 0 || (size_t)n >= sizeof(have) - off)
				break;
			off += (size_t)n;
		}
		return keel_errmsg_set(errmsg, KEEL_ENOTSUP,
				       "transport '%s' is not in this build (it has: %s)",
				       name ? name : "(null)", have);
	}
	if (!cfg->handlers || !cfg->handlers->on_recv)
		return keel_errmsg_set(errmsg, -EINVAL, "transport %s: no on_recv handler",
				       ops->name);
	if (cfg->max_frame > KEEL_TRANSPORT_MAX_FRAME_LIMIT)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "transport %s: max_frame %u above the limit %u",
				       ops->name, cfg->max_frame, KEEL_TRANSPORT_MAX_FRAME_LIMIT);
	if ((ops->caps & KEEL_TRANSPORT_REACTOR) && !cfg->shard)
		return keel_errmsg_set(errmsg, -EINVAL,
				       "transport %s needs a shard reactor", ops->name);
	return ops->open(cfg, out, errmsg);
}

int keel_transport_send(struct keel_conn *c, uint16_t type, const void *data,
			uint32_t len)
{
	if (c->t->ops->send_copy)
		return c->t->ops->send_copy(c, type, data, len);
	struct keel_send_buf *b;
	int rc = keel_transport_alloc(c, len, &b);
	if (rc < 0)
		return rc;
	if (len)
		memcpy(b->data, data, len);
	b->len = len;
	b->type = type;
	return keel_transport_send_buf(c, b);
}

uint32_t keel_transport_backoff_ms(uint32_t attempt, uint32_t base_ms,
				   uint32_t max_ms, uint64_t rnd)
{
	uint64_t d = base_ms ? base_ms : 1;
	for (uint32_t i = 0; i < attempt && d < max_ms; i++)
		d *= 2;
	if (d > max_ms)
		d = max_ms;
	/* +-25% jitter so peers that lost each other at the same moment do
	 * not redial in lockstep. */
	uint64_t span = d / 2;
	if (span)
		d = d - d / 4 + rnd % (span + 1);
	return (uint32_t)(d ? d : 1);
}

int keel_transport_get_stats(const struct keel_transport *t, struct keel_transport_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!t->ops->get_stats)
		return KEEL_ENOTSUP;
	t->ops->get_stats(t, out);
	return 0;
}
