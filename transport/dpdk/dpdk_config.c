/* The [dpdk] configuration section; see dpdk_config.h. */
#include "transport/dpdk/dpdk_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_dpdk_config_default(struct keel_dpdk_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->eal, sizeof(c->eal), "--no-huge -m 256 --no-pci --no-telemetry");
	snprintf(c->port, sizeof(c->port), "0");
	c->udp_port = 7400;
	c->mbufs = 16384;
	c->mtu = 1500;
	c->loss_seed = 1;
}

int keel_dpdk_parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char tail;
	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6)
		return KEEL_ECONFIG;
	for (int i = 0; i < 6; i++) {
		if (v[i] > 0xff)
			return KEEL_ECONFIG;
		mac[i] = (uint8_t)v[i];
	}
	return 0;
}

int keel_dpdk_parse_ip(const char *s, uint32_t *ip)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		return KEEL_ECONFIG;
	*ip = ntohl(a.s_addr);
	return 0;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return KEEL_ECONFIG;
	*out = v;
	return 0;
}

static int parse_peer(struct keel_dpdk_config *c, const char *value, char *errmsg)
{
	char node[32], mac[64], ip[64], port[32] = "";
	int n = sscanf(value, "%31s %63s %63s %31s", node, mac, ip, port);
	if (n < 3)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "dpdk: peer '%s': want 'node mac ip [udp_port]'", value);
	if (c->npeers == KEEL_DPDK_MAX_PEERS)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: more than %d peers",
				       KEEL_DPDK_MAX_PEERS);
	struct keel_dpdk_peer p = {0};
	uint64_t v;
	if (parse_u64(node, UINT32_MAX, &v))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: peer node '%s'", node);
	p.node = (uint32_t)v;
	if (keel_dpdk_parse_mac(mac, p.mac))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: peer mac '%s'", mac);
	if (keel_dpdk_parse_ip(ip, &p.ip))
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: peer ip '%s'", ip);
	if (n == 4) {
		if (parse_u64(port, 65535, &v) || v == 0)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: peer port '%s'", port);
		p.udp_port = (uint16_t)v;
	}
	for (uint32_t i = 0; i < c->npeers; i++)
		if (c->peers[i].node == p.node)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: peer %u listed twice",
					       p.node);
	c->peers[c->npeers++] = p;
	return 0;
}

int keel_dpdk_config_set(struct keel_dpdk_config *c, const char *key,
			 const char *value, char *errmsg)
{
	uint64_t v;
	if (!strcmp(key, "eal")) {
		if (strlen(value) >= sizeof(c->eal))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: eal too long");
		snprintf(c->eal, sizeof(c->eal), "%s", value);
	} else if (!strcmp(key, "port")) {
		if (!value[0] || strlen(value) >= sizeof(c->port))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: bad port '%s'", value);
		snprintf(c->port, sizeof(c->port), "%s", value);
	} else if (!strcmp(key, "ip")) {
		if (keel_dpdk_parse_ip(value, &c->ip))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: bad ip '%s'", value);
	} else if (!strcmp(key, "udp_port")) {
		if (parse_u64(value, 65535, &v) || v == 0)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: bad udp_port '%s'", value);
		c->udp_port = (uint16_t)v;
	} else if (!strcmp(key, "mac")) {
		if (keel_dpdk_parse_mac(value, c->mac))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: bad mac '%s'", value);
		c->has_mac = true;
	} else if (!strcmp(key, "peer")) {
		return parse_peer(c, value, errmsg);
	} else if (!strcmp(key, "loss")) {
		char *end;
		double d = strtod(value, &end);
		if (end == value || *end || !(d >= 0.0 && d < 1.0))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "dpdk: loss '%s': want a fraction in [0, 1)", value);
		c->loss_ppm = (uint32_t)(d * 1e6 + 0.5);
	} else if (!strcmp(key, "loss_seed")) {
		if (parse_u64(value, UINT64_MAX, &c->loss_seed))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: bad loss_seed '%s'", value);
	} else if (!strcmp(key, "mbufs")) {
		if (parse_u64(value, 1u << 24, &v) || v < 1024)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: mbufs '%s': 1024..2^24", value);
		c->mbufs = (uint32_t)v;
	} else if (!strcmp(key, "mtu")) {
		if (parse_u64(value, 9000, &v) || v < 576)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: mtu '%s': 576..9000", value);
		c->mtu = (uint32_t)v;
	} else if (!strcmp(key, "rto_us")) {
		if (parse_u64(value, 10000000, &v) || v == 0)
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: bad rto_us '%s'", value);
		c->rto_us = (uint32_t)v;
	} else {
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: unknown key '%s'", key);
	}
	return 0;
}

struct parse_ctx {
	struct keel_dpdk_config *c;
	char *errmsg;
	int rc;
};

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *p = user;
	if (strcmp(section, "dpdk") || p->rc)
		return 1;
	p->rc = keel_dpdk_config_set(p->c, name, value, p->errmsg);
	return p->rc == 0;
}

int keel_dpdk_config_parse(struct keel_dpdk_config *c, const char *ini_text, char *errmsg)
{
	struct parse_ctx p = {c, errmsg, 0};
	int line = ini_parse_string(ini_text, on_ini, &p);
	if (p.rc)
		return p.rc;
	if (line != 0)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG, "dpdk: config syntax error on line %d",
				       line);
	return 0;
}

const struct keel_dpdk_peer *keel_dpdk_config_peer(const struct keel_dpdk_config *c,
						   uint32_t node)
{
	for (uint32_t i = 0; i < c->npeers; i++)
		if (c->peers[i].node == node)
			return &c->peers[i];
	return NULL;
}
