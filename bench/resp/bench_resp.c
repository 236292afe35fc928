/* bench/resp: redis-benchmark (Debian redis-tools), with the same flags,
 * against keel's RESP port and against redis-server, in the same run.
 *
 * keel: `keel cluster up` (3 nodes, 2 shards, 4 groups, fsync on): every
 * SET is replicated to a quorum and fsync'd before its reply, every GET is
 * linearizable (a read barrier). redis-benchmark talks to node 1's port
 * (writes of groups node 1 does not lead are forwarded to their leader).
 * Redis: one redis-server with appendonly yes, appendfsync always (the
 * peer: durable on one machine, no replication), and one without
 * persistence (an upper bound, not a peer in safety).
 *
 * Cases: SET and GET, 50 clients, 256-byte values, keys drawn from 100,000
 * (-r: they spread over the groups), pipeline 1 (targets:
 * SET >= 0.5x Redis with appendfsync always; GET reported) and pipeline 16
 * (reported, no target). Rounds alternate keel, Redis, keel, Redis...; the
 * JSON lines report medians (BENCH.md).
 *
 * usage: bench-resp [--quick] --keel PATH
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	return ntohs(sa.sin_port);
}

static int run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static pid_t redis_start(const char *dir, uint16_t port, bool durable)
{
	char p[16];
	snprintf(p, sizeof(p), "%u", port);
	pid_t pid = fork();
	if (pid == 0) {
		if (!freopen("/dev/null", "w", stdout))
			_exit(127);
		if (durable)
			execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--dir",
			       dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
			       (char *)NULL);
		else
			execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--dir",
			       dir, "--save", "", "--appendonly", "no", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		if (run("redis-cli -p %u ping >/dev/null 2>&1", port) == 0)
			return pid;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* requests/s of one redis-benchmark run, or -1 */
static double bench(uint16_t port, const char *test, int pipeline, int n)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
		 "redis-benchmark -h 127.0.0.1 -p %u -t %s -n %d -r 100000 -c 50 -d 256 -P %d --csv -q "
		 "2>/dev/null",
		 port, test, n, pipeline);
	FILE *f = popen(cmd, "r");
	if (!f)
		return -1;
	char line[512];
	double rps = -1;
	while (fgets(line, sizeof(line), f)) {
		char name[32];
		double v;
		if (sscanf(line, "\"%31[^\"]\",\"%lf\"", name, &v) == 2)
			rps = v;
	}
	pclose(f);
	return rps;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmpd);
	return n ? (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) : -1;
}

int main(int argc, char **argv)
{
	bool quick = false;
	const char *keel = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = true;
		else if (!strcmp(argv[i], "--keel") && i + 1 < argc)
			keel = argv[++i];
		else {
			fprintf(stderr, "usage: bench-resp [--quick] --keel PATH\n");
			return 2;
		}
	}
	if (!keel) {
		fprintf(stderr, "bench-resp: --keel PATH (the keel binary) is required\n");
		return 2;
	}
	if (run("command -v redis-benchmark >/dev/null && command -v redis-server >/dev/null") != 0) {
		printf("{\"bench\":\"resp\",\"case\":\"set_p1_rps\",\"unit\":\"req/s\",\"keel\":null,"
		       "\"peer\":\"redis-7-appendfsync-always\",\"peer_value\":null,\"note\":"
		       "\"redis-benchmark or redis-server not installed (scripts/deps bench)\"}\n");
		return 77;
	}
	int rounds = quick ? 1 : 3, n = quick ? 2000 : 10000;
	char dir[] = "/tmp/keel-bench-resp.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char cdir[256], rdir[256], udir[256];
	snprintf(cdir, sizeof(cdir), "%s/c", dir);
	snprintf(rdir, sizeof(rdir), "%s/redis", dir);
	snprintf(udir, sizeof(udir), "%s/redis-nop", dir);
	run("mkdir -p '%s' '%s'", rdir, udir);
	if (run("'%s' cluster up --nodes 3 --shards 2 --groups 4 --dir '%s' >/dev/null 2>&1", keel,
		cdir) != 0) {
		fprintf(stderr, "bench-resp: keel cluster up failed (see %s)\n", cdir);
		return 1;
	}
	char rp[64] = "";
	char path[300];
	snprintf(path, sizeof(path), "%s/resp", cdir);
	FILE *f = fopen(path, "r");
	if (!f || !fgets(rp, sizeof(rp), f)) {
		fprintf(stderr, "bench-resp: no %s\n", path);
		return 1;
	}
	fclose(f);
	uint16_t kport = (uint16_t)atoi(strchr(rp, ':') + 1);
	uint16_t rport = free_port(), uport = free_port();
	pid_t rpid = redis_start(rdir, rport, true), upid = redis_start(udir, uport, false);
	if (rpid < 0 || upid < 0) {
		fprintf(stderr, "bench-resp: redis-server did not start\n");
		run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel, cdir);
		return 1;
	}
	struct {
		const char *test, *name;
		int pipeline;
		double target; /* 0: none */
	} cases[] = {
		{"set", "set_p1_rps", 1, 0.5},
		{"get", "get_p1_rps", 1, 0},
		{"set", "set_p16_rps", 16, 0},
		{"get", "get_p16_rps", 16, 0},
	};
	enum { NC = 4 };
	double kv[NC][5], rv[NC][5], uv[NC][5];
	for (int c = 0; c < NC; c++) {
		for (int r = 0; r < rounds; r++) {
			kv[c][r] = bench(kport, cases[c].test, cases[c].pipeline, n);
			rv[c][r] = bench(rport, cases[c].test, cases[c].pipeline, n);
			uv[c][r] = bench(uport, cases[c].test, cases[c].pipeline, n);
		}
	}
	printf("%-12s %14s %22s %20s %8s\n", "case", "keel req/s", "redis fsync-always", "redis no-persist",
	       "ratio");
	double km[NC], rm[NC], um[NC];
	for (int c = 0; c < NC; c++) {
		km[c] = median(kv[c], rounds);
		rm[c] = median(rv[c], rounds);
		um[c] = median(uv[c], rounds);
		printf("%-12s %14.0f %22.0f %20.0f %8.2f\n", cases[c].name, km[c], rm[c], um[c],
		       rm[c] > 0 ? km[c] / rm[c] : 0);
	}
	for (int c = 0; c < NC; c++) {
		double ratio = rm[c] > 0 ? km[c] / rm[c] : 0;
		printf("{\"bench\":\"resp\",\"case\":\"%s\",\"unit\":\"req/s\",\"keel\":%.1f,"
		       "\"peer\":\"redis-7-appendfsync-always\",\"peer_value\":%.1f,\"ratio\":%.3f,"
		       "\"better\":\"higher\"",
		       cases[c].name, km[c], rm[c], ratio);
		if (cases[c].target > 0)
			printf(",\"target\":%.1f,\"meets\":%s}\n", cases[c].target,
			       ratio >= cases[c].target ? "true" : "false");
		else
			printf(",\"note\":\"reported, no target\"}\n");
		printf("{\"bench\":\"resp\",\"case\":\"%s_vs_nopersist\",\"unit\":\"req/s\",\"keel\":%.1f,"
		       "\"peer\":\"redis-7-no-persistence\",\"peer_value\":%.1f,\"ratio\":%.3f,"
		       "\"better\":\"higher\",\"note\":\"an upper bound, not a peer in safety\"}\n",
		       cases[c].name, km[c], um[c], um[c] > 0 ? km[c] / um[c] : 0);
	}
	kill(rpid, SIGTERM);
	kill(upid, SIGTERM);
	waitpid(rpid, NULL, 0);
	waitpid(upid, NULL, 0);
	run("'%s' cluster down --dir '%s' >/dev/null 2>&1", keel, cdir);
	run("rm -rf '%s'", dir);
	return 0;
}
