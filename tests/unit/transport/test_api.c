/* The backend-independent API: registry, capability names, opening by name,
 * reconnect backoff. */
#include <criterion/criterion.h>
#include <string.h>

#include "keel/transport.h"

Test(api, registry_has_tcp_first_and_finds_by_name)
{
	const struct keel_transport_ops *const *r = keel_transport_registry();
	cr_assert_not_null(r[0]);
	cr_expect_str_eq(r[0]->name, "tcp");
	cr_expect_eq(keel_transport_find("tcp"), r[0]);
	cr_expect_null(keel_transport_find("carrier-pigeon"));
	cr_expect_null(keel_transport_find(NULL));
	for (; *r; r++) {
		cr_expect_not_null((*r)->open, "%s", (*r)->name);
		cr_expect_not_null((*r)->send, "%s", (*r)->name);
		cr_expect_not_null((*r)->description, "%s", (*r)->name);
	}
	const struct keel_transport_ops *tcp = keel_transport_find("tcp");
	cr_expect(tcp->caps & KEEL_TRANSPORT_RELIABLE);
	cr_expect(tcp->caps & KEEL_TRANSPORT_AUTH);
}

Test(api, caps_string)
{
	char buf[128];
	cr_expect_str_eq(keel_transport_caps_str(KEEL_TRANSPORT_RELIABLE | KEEL_TRANSPORT_BUSY_POLL,
						 buf, sizeof(buf)),
			 "reliable,busy-poll");
	cr_expect_str_eq(keel_transport_caps_str(0, buf, sizeof(buf)), "");
	char tiny[4];
	keel_transport_caps_str(KEEL_TRANSPORT_RELIABLE, tiny, sizeof(tiny));
	cr_expect_lt(strlen(tiny), sizeof(tiny));
}

static void on_recv(struct keel_transport *t, struct keel_conn *c, const struct keel_msg *m)
{
}

Test(api, open_refuses_unknown_backend_and_bad_config)
{
	struct keel_transport_handlers h = {.on_recv = on_recv};
	struct keel_transport_config cfg = {.handlers = &h};
	struct keel_transport *t;
	char err[KEEL_ERRMSG_LEN];
	cr_expect_eq(keel_transport_open("carrier-pigeon", &cfg, &t, err), KEEL_ENOTSUP);
	cr_expect(strstr(err, "it has: tcp"), "%s", err);
	cr_expect_null(t);
	cfg.max_frame = KEEL_TRANSPORT_MAX_FRAME_LIMIT + 1;
	cr_expect_eq(keel_transport_open("tcp", &cfg, &t, err), KEEL_ECONFIG);
	cfg.max_frame = 0;
	/* tcp needs a shard reactor */
	cr_expect_lt(keel_transport_open("tcp", &cfg, &t, err), 0);
	cr_expect(strstr(err, "reactor"), "%s", err);
	struct keel_transport_config nohandlers = {0};
	cr_expect_lt(keel_transport_open("tcp", &nohandlers, &t, err), 0);
}

Test(api, backoff_doubles_within_jitter_and_caps)
{
	for (uint64_t rnd = 0; rnd < 1000; rnd += 37) {
		for (uint32_t a = 0; a < 20; a++) {
			uint32_t d = keel_transport_backoff_ms(a, 50, 1000, rnd);
			uint32_t nominal = 50u << (a < 5 ? a : 5);
			if (nominal > 1000)
				nominal = 1000;
			cr_expect_geq(d, nominal - nominal / 4, "attempt %u: %u", a, d);
			cr_expect_leq(d, nominal + nominal / 4 + 1, "attempt %u: %u", a, d);
		}
	}
	cr_expect_geq(keel_transport_backoff_ms(0, 0, 0, 0), 1);
	cr_expect_leq(keel_transport_backoff_ms(UINT32_MAX, 10, 100, 12345), 126);
}
