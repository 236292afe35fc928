/* The [log] section of a node configuration (keel/rlog.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/config.h"
#include "keel/rlog.h"

static int bad(char *errmsg, const struct keel_node_config *nc, const struct keel_config_entry *e,
	       const char *why)
{
	return keel_errmsg_set(errmsg, KEEL_ECONFIG, "%s:%u: [log] %s = %s: %s", nc->path, e->line,
			       e->key, e->value, why);
}

static bool parse_u32(const char *v, uint32_t min, uint32_t max, uint32_t *out)
{
	char *end;
	if (!*v || *v < '0' || *v > '9')
		return false;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || x < min || x > max)
		return false;
	*out = (uint32_t)x;
	return true;
}

static bool parse_size(const char *v, uint64_t *out)
{
	char *end;
	if (!*v || *v < '0' || *v > '9')
		return false;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno)
		return false;
	unsigned shift = 0;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*end || x > (UINT64_MAX >> shift))
		return false;
	*out = (uint64_t)x << shift;
	return true;
}

static bool parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
		*out = true;
	else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
		*out = false;
	else
		return false;
	return true;
}

int keel_rlog_settings_load(const struct keel_node_config *nc, struct keel_rlog_settings *s,
			    char *errmsg)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->protocol, sizeof(s->protocol), "raft");
	s->tick_ms = 100;
	s->election_ticks = 10;
	s->heartbeat_ticks = 1;
	s->request_timeout_ticks = 50;
	s->snapshot_every = 10000;
	s->snapshot_keep = 64;
	const char *dir = NULL;
	char dirtmp[64];
	for (size_t i = 0; i < nc->nentries; i++) {
		const struct keel_config_entry *e = &nc->entries[i];
		if (strcmp(e->section, "log"))
			continue;
		const char *k = e->key, *v = e->value;
		uint32_t *u = NULL, min = 0, max = UINT32_MAX;
		if (!strcmp(k, "protocol")) {
			bool known = false;
			for (const char *const *p = keel_rlog_protocols(); *p; p++)
				known |= !strcmp(*p, v);
			if (!known)
				return bad(errmsg, nc, e, "unknown protocol (raft, paxos)");
			snprintf(s->protocol, sizeof(s->protocol), "%s", v);
		} else if (!strcmp(k, "groups")) {
			u = &s->groups, max = 1u << 20;
		} else if (!strcmp(k, "dir")) {
			if (!*v || strlen(v) >= 400)
				return bad(errmsg, nc, e, "empty or longer than 400 characters");
			dir = v;
		} else if (!strcmp(k, "voters")) {
			s->n_voters = 0;
			const char *p = v;
			while (*p) {
				char item[16];
				size_t n = strcspn(p, ",");
				if (!n || n >= sizeof(item))
					return bad(errmsg, nc, e, "not a list of node ids (1,2,3)");
				memcpy(item, p, n);
				item[n] = 0;
				uint32_t id;
				if (!parse_u32(item, 1, UINT32_MAX, &id))
					return bad(errmsg, nc, e, "not a list of node ids (1,2,3)");
				if (!keel_node_config_peer(nc, id))
					return bad(errmsg, nc, e, "a voter that is not in [peers]");
				for (size_t j = 0; j < s->n_voters; j++)
					if (s->voters[j] == id)
						return bad(errmsg, nc, e, "a voter given twice");
				if (s->n_voters == KEEL_RLOG_MAX_MEMBERS)
					return bad(errmsg, nc, e, "more than 16 voters");
				s->voters[s->n_voters++] = id;
				p += n;
				if (*p == ',' && !*++p)
					return bad(errmsg, nc, e, "not a list of node ids (1,2,3)");
			}
		} else if (!strcmp(k, "join")) {
			if (!parse_bool(v, &s->join))
				return bad(errmsg, nc, e, "expected true or false");
		} else if (!strcmp(k, "tick_ms")) {
			u = &s->tick_ms, min = 1, max = 60000;
		} else if (!strcmp(k, "election_ticks")) {
			u = &s->election_ticks, min = 2, max = 10000;
		} else if (!strcmp(k, "heartbeat_ticks")) {
			u = &s->heartbeat_ticks, min = 1, max = 10000;
		} else if (!strcmp(k, "request_timeout_ticks")) {
			u = &s->request_timeout_ticks, min = 1, max = 1000000;
		} else if (!strcmp(k, "snapshot_every")) {
			u = &s->snapshot_every, max = 1u << 30;
		} else if (!strcmp(k, "snapshot_keep")) {
			u = &s->snapshot_keep, min = 1, max = 1u << 30;
		} else if (!strcmp(k, "segment_size")) {
			uint64_t sz;
			if (!parse_size(v, &sz) || sz < 16384 || sz % 4096 || sz > (1ull << 34))
				return bad(errmsg, nc, e,
					   "expected a size, a multiple of 4K from 16K to 16G");
			s->wal.segment_size = sz;
		} else if (!strcmp(k, "wal_engine")) {
			if (!strcmp(v, "auto"))
				s->wal_engine = KEEL_WAL_ENGINE_AUTO;
			else if (!strcmp(v, "uring"))
				s->wal_engine = KEEL_WAL_ENGINE_URING;
			else if (!strcmp(v, "thread"))
				s->wal_engine = KEEL_WAL_ENGINE_THREAD;
			else
				return bad(errmsg, nc, e, "expected auto, uring or thread");
		} else if (!strcmp(k, "wal_buffered")) {
			if (!parse_bool(v, &s->wal.buffered))
				return bad(errmsg, nc, e, "expected true or false");
		} else {
			return keel_errmsg_set(errmsg, KEEL_ECONFIG, "%s:%u: [log] unknown key '%s'",
					       nc->path, e->line, k);
		}
		if (u && !parse_u32(v, min, max, u)) {
			char why[80];
			snprintf(why, sizeof(why), "expected a number from %u to %u", min, max);
			return bad(errmsg, nc, e, why);
		}
	}
	if (s->heartbeat_ticks >= s->election_ticks)
		return keel_errmsg_set(errmsg, KEEL_ECONFIG,
				       "%s: [log] heartbeat_ticks (%u) must be below election_ticks (%u)",
				       nc->path, s->heartbeat_ticks, s->election_ticks);
	if (!dir) {
		snprintf(dirtmp, sizeof(dirtmp), "data-n%u", nc->node_id);
		dir = dirtmp;
	}
	if (dir[0] == '/') {
		snprintf(s->dir, sizeof(s->dir), "%s", dir);
	} else {
		/* relative to the config file's directory, as secret_file is */
		size_t need = strlen(nc->base_dir) + 1 + strlen(dir);
		if (need >= sizeof(s->dir))
			return keel_errmsg_set(errmsg, KEEL_ECONFIG,
					       "%s: [log] dir: %s/%s is longer than %zu bytes",
					       nc->path, nc->base_dir, dir, sizeof(s->dir) - 1);
		size_t bl = strlen(nc->base_dir);
		if (bl) {
			memcpy(s->dir, nc->base_dir, bl);
			s->dir[bl++] = '/';
		}
		memcpy(s->dir + bl, dir, strlen(dir) + 1);
	}
	return 0;
}

void keel_rlog_settings_config(const struct keel_rlog_settings *s, uint32_t group, char *dirbuf,
			       size_t cap, struct keel_rlog_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(dirbuf, cap, "%s/g%u", s->dir, group);
	cfg->protocol = s->protocol;
	cfg->group = group;
	cfg->dir = dirbuf;
	cfg->wal_engine = s->wal_engine;
	cfg->wal = &s->wal;
	cfg->voters = s->n_voters ? s->voters : NULL;
	cfg->n_voters = s->n_voters;
	cfg->join = s->join;
	cfg->tick_ms = s->tick_ms;
	cfg->election_ticks = s->election_ticks;
	cfg->heartbeat_ticks = s->heartbeat_ticks;
	cfg->request_timeout_ticks = s->request_timeout_ticks;
	cfg->snapshot_every = s->snapshot_every;
	cfg->snapshot_keep = s->snapshot_keep;
}
