/* The [dpdk] configuration section (transport/dpdk/dpdk_config.c). */
#include <criterion/criterion.h>

#include "transport/dpdk/dpdk_config.h"

Test(dpdk_config, parses_a_full_section)
{
	struct keel_dpdk_config c;
	keel_dpdk_config_default(&c);
	char err[KEEL_ERRMSG_LEN] = "";
	const char *ini = "[node]\nid = 1\n[dpdk]\n"
			  "eal = --no-huge -m 128 --vdev=net_memif0,role=server\n"
			  "port = net_memif0\nip = 10.1.2.3\nudp_port = 9000\n"
			  "mac = 02:00:00:00:00:aa\n"
			  "peer = 2 02:00:00:00:00:02 10.1.2.4\n"
			  "peer = 3 02:00:00:00:00:03 10.1.2.5 9100\n"
			  "loss = 0.05\nloss_seed = 9\nmbufs = 4096\nmtu = 1400\n";
	cr_assert_eq(keel_dpdk_config_parse(&c, ini, err), 0, "%s", err);
	cr_expect_str_eq(c.eal, "--no-huge -m 128 --vdev=net_memif0,role=server");
	cr_expect_str_eq(c.port, "net_memif0");
	cr_expect_eq(c.ip, 0x0a010203);
	cr_expect_eq(c.udp_port, 9000);
	cr_expect(c.has_mac);
	cr_expect_eq(c.mac[5], 0xaa);
	cr_expect_eq(c.npeers, 2);
	const struct keel_dpdk_peer *p = keel_dpdk_config_peer(&c, 3);
	cr_assert(p);
	cr_expect_eq(p->ip, 0x0a010205);
	cr_expect_eq(p->udp_port, 9100);
	cr_expect_eq(p->mac[5], 3);
	cr_expect_eq(keel_dpdk_config_peer(&c, 2)->udp_port, 0);
	cr_expect_null(keel_dpdk_config_peer(&c, 4));
	cr_expect_eq(c.loss_ppm, 50000);
	cr_expect_eq(c.loss_seed, 9);
	cr_expect_eq(c.mbufs, 4096);
	cr_expect_eq(c.mtu, 1400);
}

Test(dpdk_config, rejects_bad_values_with_a_reason)
{
	static const char *bad[][2] = {
		{"ip", "10.1.2"},         {"ip", "::1"},          {"udp_port", "0"},
		{"udp_port", "70000"},    {"mac", "02:00:00:00:00"}, {"mac", "02:00:00:00:00:100"},
		{"peer", "2 02:00:00:00:00:02"}, {"peer", "x 02:00:00:00:00:02 10.0.0.1"},
		{"peer", "2 zz 10.0.0.1"}, {"loss", "1.5"},       {"loss", "-0.1"},
		{"mbufs", "10"},          {"mtu", "100000"},      {"nonsense", "1"},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(bad); i++) {
		struct keel_dpdk_config c;
		keel_dpdk_config_default(&c);
		char err[KEEL_ERRMSG_LEN] = "";
		cr_expect_eq(keel_dpdk_config_set(&c, bad[i][0], bad[i][1], err), KEEL_ECONFIG,
			     "%s = %s accepted", bad[i][0], bad[i][1]);
		cr_expect_neq(err[0], '\0');
	}
	struct keel_dpdk_config c;
	keel_dpdk_config_default(&c);
	cr_expect_eq(keel_dpdk_config_set(&c, "peer", "2 02:00:00:00:00:02 10.0.0.2", NULL), 0);
	cr_expect_eq(keel_dpdk_config_set(&c, "peer", "2 02:00:00:00:00:03 10.0.0.3", NULL),
		     KEEL_ECONFIG); /* listed twice */
	cr_expect_eq(keel_dpdk_config_parse(&c, "[dpdk]\nthis is not ini\n", NULL), KEEL_ECONFIG);
}
