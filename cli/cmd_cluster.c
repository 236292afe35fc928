/* keel cluster up|down|status|restart: a local cluster on 127.0.0.1, for
 * a laptop, the demo and the tests.
 *
 *   keel cluster up [--nodes N] [--shards S] [--groups G] [--transport T]
 *                   [--protocol P] [--dir DIR]
 *     writes DIR/nI.ini for every node (ports free on 127.0.0.1, a fresh
 *     cluster secret in DIR/secret and client token in DIR/client-token,
 *     mode 0600; the client ports in DIR/endpoints, the Redis-protocol
 *     ports, open without AUTH on loopback, in DIR/resp, the HTTP ports of
 *     /livez, /readyz and /metrics in DIR/http-endpoints), starts `keel node` for
 *     each (own session: it outlives this command; log in DIR/nI.log, PID
 *     in DIR/nI.pid, status in DIR/nI.status), waits until every group has
 *     a leader that every node agrees on, and prints the endpoints. DIR
 *     defaults to a fresh /tmp/keel-cluster-XXXXXX; the last one is
 *     remembered, so `down` and `status` need no --dir.
 *   keel cluster status [--dir DIR] [--json]
 *     every node (running or not) and every group (leader, term, commit,
 *     applied) from the nodes' status files.
 *   keel cluster down [--dir DIR]
 *     SIGTERM to every node, SIGKILL after 10 s; the data stays.
 *   keel cluster restart --node I [--dir DIR]
 *     starts node I again if it is not running (after a kill -9, say).
 *
 * Exit: 0 done, 1 failed (a node did not start, no leader in time), 2 usage. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keel/base.h"

#define MAX_NODES 16

static int last_file(char *buf, size_t cap)
{
	const char *state = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	if (state && *state)
		return snprintf(buf, cap, "%s/keel", state) >= (int)cap ? -1 : 0;
	if (!home || !*home)
		home = "/tmp";
	return snprintf(buf, cap, "%s/.local/state/keel", home) >= (int)cap ? -1 : 0;
}

static void remember(const char *dir)
{
	char d[PATH_MAX - 32], p[PATH_MAX];
	if (last_file(d, sizeof(d)) < 0)
		return;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "%s", d);
	/* mkdir -p */
	for (char *s = cmd + 1; *s; s++) {
		if (*s == '/') {
			*s = 0;
			mkdir(cmd, 0700);
			*s = '/';
		}
	}
	mkdir(cmd, 0700);
	snprintf(p, sizeof(p), "%s/last-cluster", d);
	FILE *f = fopen(p, "w");
	if (f) {
		fprintf(f, "%s\n", dir);
		fclose(f);
	}
}

/* The cluster directory: --dir, KEEL_CLUSTER_DIR, or the last `up`. */
static int find_dir(const char *given, char *out, size_t cap)
{
	if (given)
		return snprintf(out, cap, "%s", given) >= (int)cap ? -1 : 0;
	const char *env = getenv("KEEL_CLUSTER_DIR");
	if (env && *env)
		return snprintf(out, cap, "%s", env) >= (int)cap ? -1 : 0;
	char d[PATH_MAX - 32], p[PATH_MAX];
	if (last_file(d, sizeof(d)) < 0)
		return -1;
	snprintf(p, sizeof(p), "%s/last-cluster", d);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	char *ok = fgets(out, (int)cap, f);
	fclose(f);
	if (!ok)
		return -1;
	out[strcspn(out, "\n")] = 0;
	return *out ? 0 : -1;
}

/* Ports: a run of free ones on 127.0.0.1, checked by binding each. */
static bool port_free(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static unsigned find_ports(unsigned count)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct keel_prng r;
	keel_prng_seed(&r, (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32));
	for (int attempt = 0; attempt < 200; attempt++) {
		/* below the ephemeral range: no outgoing connection holds them */
		unsigned base = (unsigned)keel_prng_range(&r, 20000, 32000 - count);
		bool ok = true;
		for (unsigned i = 0; i < count && ok; i++)
			ok = port_free(base + i);
		if (ok)
			return base;
	}
	return 0;
}

/* pid runs: it exists and is not a zombie (a node killed with -9 whose
 * parent has not reaped it yet still answers kill(pid, 0)). */
static bool alive(pid_t pid)
{
	if (pid <= 0 || kill(pid, 0) != 0)
		return false;
	char p[64], buf[256];
	snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return true; /* no /proc: trust kill() */
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *paren = strrchr(buf, ')'); /* the name may hold spaces */
	return !(paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'));
}

static pid_t read_pid(const char *dir, unsigned n)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/n%u.pid", dir, n);
	FILE *f = fopen(p, "r");
	if (!f)
		return 0;
	long v = 0;
	if (fscanf(f, "%ld", &v) != 1)
		v = 0;
	fclose(f);
	return v > 0 && alive((pid_t)v) ? (pid_t)v : 0;
}

static unsigned count_nodes(const char *dir)
{
	unsigned n = 0;
	char p[PATH_MAX];
	for (unsigned i = 1; i <= MAX_NODES; i++) {
		snprintf(p, sizeof(p), "%s/n%u.ini", dir, i);
		if (access(p, R_OK) == 0)
			n = i;
	}
	return n;
}

static int start_node(const char *dir, unsigned n)
{
	char exe[PATH_MAX];
	ssize_t k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (k <= 0)
		return -errno;
	exe[k] = 0;
	char ini[PATH_MAX], st[PATH_MAX], log[PATH_MAX], pidf[PATH_MAX];
	snprintf(ini, sizeof(ini), "%s/n%u.ini", dir, n);
	snprintf(st, sizeof(st), "%s/n%u.status", dir, n);
	snprintf(log, sizeof(log), "%s/n%u.log", dir, n);
	snprintf(pidf, sizeof(pidf), "%s/n%u.pid", dir, n);
	unlink(st);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		setsid();
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0 || nul < 0)
			_exit(127);
		dup2(nul, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(exe, exe, "node", "--config", ini, "--status-file", st, (char *)NULL);
		_exit(127);
	}
	FILE *f = fopen(pidf, "w");
	if (f) {
		fprintf(f, "%d\n", (int)pid);
		fclose(f);
	}
	return 0;
}

/* One node's status file, parsed into the fields we show. */
struct gstat {
	unsigned group;
	char role[16];
	uint64_t term, commit, applied;
	unsigned leader;
	int failed;
};

static uint64_t field(const char *line, const char *key)
{
	char pat[32];
	snprintf(pat, sizeof(pat), " %s=", key);
	const char *p = strstr(line, pat);
	if (!p && !strncmp(line, pat + 1, strlen(pat) - 1))
		p = line - 1;
	return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

static int cmp_gstat(const void *a, const void *b)
{
	unsigned x = ((const struct gstat *)a)->group, y = ((const struct gstat *)b)->group;
	return x < y ? -1 : x > y;
}

static int read_status(const char *dir, unsigned n, struct gstat *g, unsigned cap, bool *up)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/n%u.status", dir, n);
	FILE *f = fopen(p, "r");
	*up = false;
	if (!f)
		return 0;
	char line[1024];
	unsigned k = 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "node=", 5)) {
			*up = field(line, "up") == 1;
			continue;
		}
		if (strncmp(line, "group=", 6) || k == cap)
			continue;
		struct gstat *s = &g[k++];
		memset(s, 0, sizeof(*s));
		s->group = (unsigned)strtoul(line + 6, NULL, 10);
		const char *r = strstr(line, " role=");
		if (r)
			sscanf(r + 6, "%15[a-z]", s->role);
		s->term = field(line, "term");
		s->leader = (unsigned)field(line, "leader");
		s->commit = field(line, "commit");
		s->applied = field(line, "applied");
		s->failed = (int)field(line, "failed");
	}
	fclose(f);
	qsort(g, k, sizeof(*g), cmp_gstat);
	return (int)k;
}

/* Every node runs, and for every group all running nodes know the same
 * leader, which is itself running. */
static bool all_led(const char *dir, unsigned nodes, unsigned groups)
{
	static struct gstat st[MAX_NODES][1024];
	int cnt[MAX_NODES];
	for (unsigned n = 1; n <= nodes; n++) {
		bool up;
		cnt[n - 1] = read_status(dir, n, st[n - 1], 1024, &up);
		if (!up || cnt[n - 1] < (int)groups)
			return false;
	}
	for (unsigned g = 0; g < groups; g++) {
		unsigned leader = 0;
		for (unsigned n = 0; n < nodes; n++) {
			const struct gstat *s = NULL;
			for (int i = 0; i < cnt[n]; i++)
				if (st[n][i].group == g)
					s = &st[n][i];
			if (!s || !s->leader || (leader && s->leader != leader))
				return false;
			leader = s->leader;
		}
	}
	return true;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static int write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	ssize_t w = write(fd, text, len);
	int rc = w == (ssize_t)len ? 0 : -EIO;
	if (close(fd) < 0 && !rc)
		rc = -errno;
	return rc;
}

static int cluster_up(int argc, char **argv)
{
	uint32_t nodes = 3, shards = 2, groups = 0;
	const char *transport = "tcp", *dirarg = NULL, *protocol = "raft";
	uint64_t wait_ms = 30000;
	const struct keel_opt opts[] = {
		{"nodes", 'n', KEEL_OPT_U32, &nodes, 1, MAX_NODES, "N", "nodes"},
		{"shards", 's', KEEL_OPT_U32, &shards, 1, 64, "S", "shards per node"},
		{"groups", 'g', KEEL_OPT_U32, &groups, 0, 4096, "G",
		 "replicated-log groups (default: 4 per shard)", .def = "4 x shards"},
		{"transport", 't', KEEL_OPT_STR, &transport, .arg = "NAME",
		 .help = "transport backend (tcp)", .def = "tcp"},
		{"protocol", 0, KEEL_OPT_STR, &protocol, .arg = "NAME",
		 .help = "replication protocol ([log] protocol)", .def = "raft"},
		{"dir", 'd', KEEL_OPT_STR, &dirarg, .arg = "DIR",
		 .help = "configs and data here (default: a fresh /tmp/keel-cluster-XXXXXX)"},
		{"wait-ms", 0, KEEL_OPT_MS, &wait_ms, 100, 600000, "MS",
		 "how long to wait for every group's leader"},
		{0},
	};
	const struct keel_cmd_spec spec = {
		"cluster up", "[options]",
		"  starts a local cluster on 127.0.0.1 and waits until every group has a\n"
		"  leader; prints the directory and the endpoints.",
		opts};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	if (strcmp(transport, "tcp"))
		return keel_opt_usage(&spec, "--transport %s: a local cluster runs on tcp (dpdk needs "
					     "devices per node: see docs/design/dpdk.md)", transport);
	if (!groups)
		groups = 4 * shards;
	char dir[PATH_MAX - 64];
	if (dirarg) {
		snprintf(dir, sizeof(dir), "%s", dirarg);
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "keel cluster up: %s: %s\n", dir, strerror(errno));
			return 1;
		}
		if (count_nodes(dir)) {
			fprintf(stderr, "keel cluster up: %s already holds a cluster (use keel cluster "
					"restart, or another --dir)\n", dir);
			return 1;
		}
	} else {
		snprintf(dir, sizeof(dir), "/tmp/keel-cluster-XXXXXX");
		if (!mkdtemp(dir)) {
			fprintf(stderr, "keel cluster up: mkdtemp: %s\n", strerror(errno));
			return 1;
		}
	}
	if (dir[0] != '/') {
		char *abs = realpath(dir, NULL);
		if (!abs || strlen(abs) >= sizeof(dir)) {
			fprintf(stderr, "keel cluster up: %s: %s\n", dir, strerror(errno ? errno : ENAMETOOLONG));
			free(abs);
			return 1;
		}
		snprintf(dir, sizeof(dir), "%s", abs);
		free(abs);
	}
	/* per node: S peer ports, one client port, one RESP (Redis) port, one
	 * HTTP port */
	unsigned per = shards + 3;
	unsigned base = find_ports(nodes * per);
	if (!base) {
		fprintf(stderr, "keel cluster up: no run of %u free ports on 127.0.0.1\n", nodes * per);
		return 1;
	}
	uint8_t rnd[32];
	int ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (ufd < 0 || read(ufd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd)) {
		fprintf(stderr, "keel cluster up: /dev/urandom: %s\n", strerror(errno));
		return 1;
	}
	close(ufd);
	char secret[80], path[PATH_MAX];
	for (int i = 0; i < 32; i++)
		snprintf(secret + 2 * i, 3, "%02x", rnd[i]);
	secret[64] = '\n';
	secret[65] = 0;
	snprintf(path, sizeof(path), "%s/secret", dir);
	if (write_file(path, secret, 0600) < 0) {
		fprintf(stderr, "keel cluster up: %s: cannot write\n", path);
		return 1;
	}
	/* the client port's token: clients read it from DIR/client-token */
	uint8_t trnd[24];
	ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (ufd < 0 || read(ufd, trnd, sizeof(trnd)) != (ssize_t)sizeof(trnd)) {
		fprintf(stderr, "keel cluster up: /dev/urandom: %s\n", strerror(errno));
		return 1;
	}
	close(ufd);
	char token[64];
	for (int i = 0; i < 24; i++)
		snprintf(token + 2 * i, 3, "%02x", trnd[i]);
	token[48] = '\n';
	token[49] = 0;
	snprintf(path, sizeof(path), "%s/client-token", dir);
	if (write_file(path, token, 0600) < 0) {
		fprintf(stderr, "keel cluster up: %s: cannot write\n", path);
		return 1;
	}
	uint64_t cluster_id = 1 + (keel_get_le64(rnd) >> 12);
	char endpoints[1024] = "", resp_eps[1024] = "", http_eps[1024] = "";
	size_t ek = 0, rk = 0, hk = 0;
	for (unsigned n = 1; n <= nodes; n++) {
		char *ini = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&ini, &len);
		if (!f)
			return 1;
		unsigned mine = base + (n - 1) * per;
		fprintf(f,
			"# keel cluster up: node %u of %u\n[node]\nid = %u\ncluster = %" PRIu64
			"\nlisten = 127.0.0.1:%u\nshards = %u\ntransport = %s\nsecret_file = secret\n"
			"[peers]\n",
			n, nodes, n, cluster_id, mine, shards, transport);
		for (unsigned p = 1; p <= nodes; p++)
			fprintf(f, "%u = 127.0.0.1:%u\n", p, base + (p - 1) * per);
		/* requests a node cannot finish (a read barrier whose leader
		 * died) fail in 2 s, well inside a client's 5 s deadline, so
		 * the client retries elsewhere; 8 MiB segments, not 64: a
		 * laptop cluster's WALs stay small, and a restarted node
		 * opens each group's preallocated segment in a fraction of
		 * the time (64 MiB took seconds per group here) */
		fprintf(f, "[log]\nprotocol = %s\ngroups = %u\ndir = data-n%u\nrequest_timeout_ticks = 20\n"
			   "segment_size = 8M\n",
			protocol, groups, n);
		fprintf(f, "[client]\nlisten = 127.0.0.1:%u\ntoken_file = client-token\n", mine + shards);
		/* a laptop cluster on loopback: the Redis port lets redis-cli in
		 * without AUTH (a node's own config needs a password_file or
		 * this line written out; docs/design/resp.md) */
		fprintf(f, "[resp]\nlisten = 127.0.0.1:%u\nauth = none\n", mine + shards + 1);
		fprintf(f, "[http]\nlisten = 127.0.0.1:%u\n", mine + shards + 2);
		hk += (size_t)snprintf(http_eps + hk, sizeof(http_eps) - hk, "%s127.0.0.1:%u",
				       n > 1 ? "," : "", mine + shards + 2);
		fclose(f);
		snprintf(path, sizeof(path), "%s/n%u.ini", dir, n);
		int rc = write_file(path, ini, 0600);
		free(ini);
		if (rc < 0) {
			fprintf(stderr, "keel cluster up: %s: cannot write\n", path);
			return 1;
		}
		ek += (size_t)snprintf(endpoints + ek, sizeof(endpoints) - ek, "%s127.0.0.1:%u",
				       n > 1 ? "," : "", mine + shards);
		rk += (size_t)snprintf(resp_eps + rk, sizeof(resp_eps) - rk, "%s127.0.0.1:%u",
				       n > 1 ? "," : "", mine + shards + 1);
	}
	snprintf(path, sizeof(path), "%s/resp", dir);
	char resp_line[1100];
	snprintf(resp_line, sizeof(resp_line), "%s\n", resp_eps);
	write_file(path, resp_line, 0644);
	snprintf(path, sizeof(path), "%s/endpoints", dir);
	char ep_line[1100];
	snprintf(ep_line, sizeof(ep_line), "%s\n", endpoints);
	write_file(path, ep_line, 0644);
	snprintf(path, sizeof(path), "%s/http-endpoints", dir);
	snprintf(ep_line, sizeof(ep_line), "%s\n", http_eps);
	write_file(path, ep_line, 0644);
	remember(dir);
	for (unsigned n = 1; n <= nodes; n++) {
		int rc = start_node(dir, n);
		if (rc < 0) {
			fprintf(stderr, "keel cluster up: starting node %u: %s\n", n, keel_strerror(rc));
			return 1;
		}
	}
	uint64_t deadline = keel_now_ns() + wait_ms * 1000000;
	while (!all_led(dir, nodes, groups)) {
		for (unsigned n = 1; n <= nodes; n++) {
			if (!read_pid(dir, n)) {
				fprintf(stderr, "keel cluster up: node %u exited; its log, %s/n%u.log:\n",
					n, dir, n);
				char cmd[PATH_MAX + 32];
				snprintf(cmd, sizeof(cmd), "tail -n 20 '%s/n%u.log' >&2", dir, n);
				if (system(cmd) != 0)
					fprintf(stderr, "(could not show it)\n");
				return 1;
			}
		}
		if (keel_now_ns() > deadline) {
			fprintf(stderr, "keel cluster up: not every group has a leader after %" PRIu64
					" ms (see %s/n*.log)\n", wait_ms, dir);
			return 1;
		}
		sleep_ms(50);
	}
	printf("cluster up: %u nodes, %u shards each, %u %s groups, in %s\n", nodes, shards, groups,
	       protocol, dir);
	printf("endpoints: %s\n", endpoints);
	printf("export KEEL_ENDPOINTS=%s\n", endpoints);
	printf("export KEEL_RESP=%s\n", resp_eps);
	return 0;
}

static int with_dir(const char *name, int argc, char **argv, bool want_json, bool want_node,
		    char *dir, size_t cap, bool *json, uint32_t *node)
{
	const char *dirarg = NULL;
	const struct keel_opt opts[] = {
		{"dir", 'd', KEEL_OPT_STR, &dirarg, .arg = "DIR",
		 .help = "the cluster's directory (default: KEEL_CLUSTER_DIR, or the last one up)"},
		{"json", 0, KEEL_OPT_FLAG, json, .help = "one JSON object",
		 .flags = want_json ? 0 : KEEL_OPT_HIDDEN},
		{"node", 'n', KEEL_OPT_U32, node, 1, MAX_NODES, "I", "the node",
		 .flags = want_node ? KEEL_OPT_REQUIRED : KEEL_OPT_HIDDEN},
		{0},
	};
	char full[64];
	snprintf(full, sizeof(full), "cluster %s", name);
	const struct keel_cmd_spec spec = {full, "[--dir DIR]", NULL, opts};
	int st = keel_opt_parse(&spec, argc, argv, NULL);
	if (st != KEEL_OPT_RUN)
		return st;
	if (find_dir(dirarg, dir, cap) < 0 || !count_nodes(dir)) {
		fprintf(stderr, "keel cluster %s: no cluster found%s%s (give --dir)\n", name,
			dirarg ? " in " : "", dirarg ? dirarg : "");
		return 1;
	}
	return KEEL_OPT_RUN;
}

static int cluster_down(int argc, char **argv)
{
	char dir[PATH_MAX - 64];
	bool json = false;
	uint32_t node = 0;
	int st = with_dir("down", argc, argv, false, false, dir, sizeof(dir), &json, &node);
	if (st != KEEL_OPT_RUN)
		return st;
	unsigned nodes = count_nodes(dir);
	pid_t pids[MAX_NODES + 1] = {0};
	for (unsigned n = 1; n <= nodes; n++) {
		pids[n] = read_pid(dir, n);
		if (pids[n])
			kill(pids[n], SIGTERM);
	}
	uint64_t deadline = keel_now_ns() + 10000000000ull;
	for (;;) {
		bool any = false;
		for (unsigned n = 1; n <= nodes; n++)
			if (pids[n] && alive(pids[n]))
				any = true;
		if (!any)
			break;
		if (keel_now_ns() > deadline) {
			for (unsigned n = 1; n <= nodes; n++)
				if (pids[n] && alive(pids[n])) {
					fprintf(stderr, "keel cluster down: node %u did not stop in 10 s: "
							"SIGKILL\n", n);
					kill(pids[n], SIGKILL);
				}
			break;
		}
		sleep_ms(20);
	}
	char p[PATH_MAX];
	for (unsigned n = 1; n <= nodes; n++) {
		snprintf(p, sizeof(p), "%s/n%u.pid", dir, n);
		unlink(p);
	}
	printf("cluster down: %u nodes stopped; data kept in %s\n", nodes, dir);
	return 0;
}

static int cluster_restart(int argc, char **argv)
{
	char dir[PATH_MAX - 64];
	bool json = false;
	uint32_t node = 0;
	int st = with_dir("restart", argc, argv, false, true, dir, sizeof(dir), &json, &node);
	if (st != KEEL_OPT_RUN)
		return st;
	if (node > count_nodes(dir)) {
		fprintf(stderr, "keel cluster restart: %s has no node %u\n", dir, node);
		return 1;
	}
	if (read_pid(dir, node)) {
		printf("node %u is running\n", node);
		return 0;
	}
	int rc = start_node(dir, node);
	if (rc < 0) {
		fprintf(stderr, "keel cluster restart: %s\n", keel_strerror(rc));
		return 1;
	}
	printf("node %u started (pid %d)\n", node, (int)read_pid(dir, node));
	return 0;
}

static int cluster_status(int argc, char **argv)
{
	char dir[PATH_MAX - 64];
	bool json = false;
	uint32_t node = 0;
	int st = with_dir("status", argc, argv, true, false, dir, sizeof(dir), &json, &node);
	if (st != KEEL_OPT_RUN)
		return st;
	unsigned nodes = count_nodes(dir);
	static struct gstat gs[1024];
	struct keel_json j;
	keel_json_init_file(&j, stdout);
	if (json) {
		keel_json_open_obj(&j, NULL);
		keel_json_put_str(&j, "dir", dir);
		keel_json_open_arr(&j, "nodes");
	} else {
		printf("cluster in %s: %u nodes\n", dir, nodes);
	}
	for (unsigned n = 1; n <= nodes; n++) {
		bool up;
		pid_t pid = read_pid(dir, n);
		int k = read_status(dir, n, gs, 1024, &up);
		if (json) {
			keel_json_open_obj(&j, NULL);
			keel_json_put_u64(&j, "node", n);
			keel_json_put_bool(&j, "running", pid != 0);
			keel_json_put_i64(&j, "pid", (int64_t)pid);
			keel_json_open_arr(&j, "groups");
		} else {
			printf("node %u: %s", n, pid ? "running" : "not running");
			if (pid)
				printf(" (pid %d)", (int)pid);
			printf("\n");
		}
		for (int i = 0; pid && i < k; i++) {
			const struct gstat *g = &gs[i];
			if (json) {
				keel_json_open_obj(&j, NULL);
				keel_json_put_u64(&j, "group", g->group);
				keel_json_put_str(&j, "role", g->role);
				keel_json_put_u64(&j, "term", g->term);
				keel_json_put_u64(&j, "leader", g->leader);
				keel_json_put_u64(&j, "commit", g->commit);
				keel_json_put_u64(&j, "applied", g->applied);
				keel_json_put_bool(&j, "failed", g->failed);
				keel_json_close(&j);
			} else {
				printf("  group %-4u %-9s term %-5" PRIu64 " leader %-3u commit %-8" PRIu64
				       " applied %-8" PRIu64 "%s\n",
				       g->group, g->role, g->term, g->leader, g->commit, g->applied,
				       g->failed ? " FAILED" : "");
			}
		}
		if (json) {
			keel_json_close(&j); /* groups */
			keel_json_close(&j); /* the node */
		}
	}
	if (json) {
		keel_json_close(&j);
		keel_json_close(&j);
		if (keel_json_finish(&j, true) < 0)
			return 1;
	}
	return 0;
}

int keel_cmd_cluster(int argc, char **argv)
{
	static const char *usage =
		"usage: keel cluster up|down|status|restart [options]\n"
		"  up       start a local cluster on 127.0.0.1 (keel cluster up --help)\n"
		"  status   its nodes and groups [--json]\n"
		"  down     stop it (SIGTERM, then SIGKILL after 10 s); the data stays\n"
		"  restart  start one stopped node again: --node I\n";
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(sub, "up"))
		return cluster_up(argc - 1, argv + 1);
	if (!strcmp(sub, "down"))
		return cluster_down(argc - 1, argv + 1);
	if (!strcmp(sub, "status"))
		return cluster_status(argc - 1, argv + 1);
	if (!strcmp(sub, "restart"))
		return cluster_restart(argc - 1, argv + 1);
	fprintf(stderr, "keel cluster: unknown subcommand '%s'\n%s", sub, usage);
	return 2;
}
