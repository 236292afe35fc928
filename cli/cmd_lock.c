/* keel lock acquire|status|elect: the cluster's lock service from the
 * command line, on the lock client library (include/keel/lock_client.h).
 *
 *   keel lock acquire NAME [--shared] [--ttl-ms T] [--wait-ms W | --try] [-- CMD ARGS...]
 *
 * holds NAME while CMD runs, with KEEL_LOCK_NAME and KEEL_LOCK_TOKEN (the
 * fencing token) in its environment, releases it when CMD exits and
 * returns CMD's exit status, as `etcdctl lock NAME CMD` does. Without CMD
 * it prints the token and holds the lock until SIGINT or SIGTERM. If the
 * lock is lost while CMD runs (this process could not renew its session
 * within the TTL: paused, cut off), CMD is killed at once — its lease has
 * run out by the client's conservative view, before the cluster can grant
 * the lock to anyone else — and keel exits 4 with a message saying so.
 * CMD should still pass the token to what it writes, so that a resource
 * can refuse a superseded holder (keel_lock_fence_check).
 *
 *   keel lock elect NAME -- CMD ARGS...
 *
 * campaigns for leadership of NAME (the exclusive lock "elect/NAME"),
 * waiting as long as it takes, and runs CMD while leader (KEEL_LOCK_TOKEN
 * is the leader's term token); `keel lock status elect/NAME` observes the
 * leader's session and token.
 *
 *   keel lock status NAME [--json]
 *
 * prints the holders (session, token), the FIFO waiters and the mode.
 *
 * There is no `keel lock release`: only the holder's session may release a
 * lock (the service refuses anyone else), and the holder here is the
 * acquire process, which releases when CMD ends or on SIGINT/SIGTERM; kill
 * it to give the lock up.
 *
 * Exit status: CMD's, or 0 done; 1 not acquired (held: --try; or the wait
 * ran out); 2 usage; 3 the cluster unreachable or an error; 4 the lock was
 * lost while held. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keel/lock_client.h"

#define EXIT_NOT_ACQUIRED 1
#define EXIT_LOST 4

struct lockopts {
	const char *endpoints, *dir, *token_file;
	uint64_t timeout_ms, ttl_ms, wait_ms;
	bool shared, try_only, json;
};

static volatile sig_atomic_t stop_sig;

static void on_stop(int sig)
{
	stop_sig = sig;
}

static const char *const about =
	"acquire NAME [-- CMD ARGS...]: hold a lock while CMD runs (KEEL_LOCK_TOKEN in its\n"
	"environment), release it after; without CMD, print the token and hold until\n"
	"SIGINT/SIGTERM. elect NAME -- CMD: run CMD while leader of NAME.\n"
	"status NAME: the lock's holders, waiters and mode.";

static const char *const epilog =
	"The cluster: --endpoints, else $KEEL_ENDPOINTS, else --dir of `keel cluster up`.\n"
	"Exit status: CMD's, or 0 done; 1 not acquired (busy, or the wait ran out); 2 usage;\n"
	"3 the cluster unreachable or an error; 4 the lock was lost while held (CMD killed).";

struct status_out {
	bool json;
	int n;
	struct keel_json *j; /* the rows array being written, with json */
};

static void status_row(void *arg, bool waiter, uint64_t session, uint64_t v, uint8_t mode)
{
	struct status_out *o = arg;
	const char *m = mode == KEEL_LOCK_SHARED ? "shared" : "exclusive";
	if (o->json) {
		char sid[17];
		snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)session);
		keel_json_open_obj(o->j, NULL);
		keel_json_put_bool(o->j, waiter ? "waiter" : "holder", true);
		keel_json_put_str(o->j, "session", sid);
		keel_json_put_u64(o->j, waiter ? "deadline_ms" : "token", v);
		keel_json_put_str(o->j, "mode", m);
		keel_json_close(o->j);
	} else
		printf("%s\tsession=%016llx\t%s=%llu\t%s\n", waiter ? "waiter" : "holder",
		       (unsigned long long)session, waiter ? "deadline_ms" : "token",
		       (unsigned long long)v, m);
	o->n++;
}

/* Runs argv with the lock's name and token in its environment; returns
 * its pid, or -1. */
static pid_t spawn(char **argv, const char *name, uint64_t token)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	char tok[32];
	snprintf(tok, sizeof(tok), "%llu", (unsigned long long)token);
	setenv("KEEL_LOCK_NAME", name, 1);
	setenv("KEEL_LOCK_TOKEN", tok, 1);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	execvp(argv[0], argv);
	fprintf(stderr, "keel lock: %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Holds the lock while pid runs (or, pid 0, until a signal). */
static int hold(struct keel_lock_client *lc, const char *verb, const char *name, uint64_t token,
		pid_t pid)
{
	size_t len = strlen(name);
	for (;;) {
		if (pid > 0) {
			int wst;
			pid_t r = waitpid(pid, &wst, WNOHANG);
			if (r == pid) {
				int rc = keel_lock_release(lc, name, len, token);
				if (rc == KEEL_ESTALE) {
					fprintf(stderr, "keel lock %s: %s: %s\n", verb, name,
						keel_lock_client_errmsg(lc));
					return EXIT_LOST;
				}
				if (rc < 0)
					fprintf(stderr, "keel lock %s: %s: release: %s (the lock goes "
						"when the session's TTL runs out)\n", verb, name,
						keel_lock_client_errmsg(lc));
				return WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
			}
		}
		if (stop_sig) {
			if (pid > 0) {
				kill(pid, SIGTERM);
				(void)waitpid(pid, NULL, 0);
			}
			(void)keel_lock_release(lc, name, len, token);
			return 128 + stop_sig;
		}
		if (keel_lock_client_poll(lc, 100) == KEEL_ESTALE || !keel_lock_held(lc, name, len, NULL)) {
			/* the lease ran out by our own clock: the cluster may
			 * grant the lock to another after its TTL, so CMD stops
			 * now, not then */
			if (pid > 0) {
				kill(pid, SIGKILL);
				(void)waitpid(pid, NULL, 0);
			}
			fprintf(stderr,
				"keel lock %s: %s: the lock was lost (token %llu): the session could "
				"not be renewed within its TTL%s\n",
				verb, name, (unsigned long long)token, pid > 0 ? "; the command was killed" : "");
			return EXIT_LOST;
		}
	}
}

int keel_cmd_lock(int argc, char **argv)
{
	struct lockopts o = {.timeout_ms = 5000, .ttl_ms = 10000, .wait_ms = 3600000};
	const struct keel_opt opts[] = {
		{"endpoints", 'e', KEEL_OPT_STR, &o.endpoints, .arg = "HOST:PORT,...",
		 .help = "the nodes' client ports"},
		{"dir", 'd', KEEL_OPT_STR, &o.dir, .arg = "DIR",
		 .help = "a local cluster's directory (keel cluster up)"},
		{"token-file", 0, KEEL_OPT_STR, &o.token_file, .arg = "FILE",
		 .help = "the client token, when the cluster asks for one"},
		{"timeout", 't', KEEL_OPT_MS, &o.timeout_ms, 1, 3600000, "MS",
		 "give up on one request after MS"},
		{"ttl-ms", 0, KEEL_OPT_MS, &o.ttl_ms, KEEL_LOCK_MIN_TTL_MS, KEEL_LOCK_MAX_TTL_MS, "MS",
		 "the session's TTL: the lock goes this long after this process stops"},
		{"wait-ms", 'w', KEEL_OPT_MS, &o.wait_ms, 1, KEEL_LOCK_MAX_TTL_MS, "MS",
		 "acquire: wait up to MS for the lock (FIFO)"},
		{"try", 0, KEEL_OPT_FLAG, &o.try_only, .help = "acquire: fail at once if it is held"},
		{"shared", 's', KEEL_OPT_FLAG, &o.shared, .help = "acquire: a shared (read) lock"},
		{"json", 'j', KEEL_OPT_FLAG, &o.json, .help = "status: machine-readable output"},
		{0},
	};
	const struct keel_cmd_spec spec = {"lock", "acquire|elect|status NAME [options] [-- CMD ARGS...]",
					   about, opts, 2, 2, "NAME", epilog};
	/* what follows "--" is the command, not ours to parse */
	int cut = argc;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			cut = i;
			break;
		}
	char **cmd = cut < argc ? argv + cut + 1 : NULL;
	if (cmd && !cmd[0])
		cmd = NULL;
	argv[cut < argc ? cut : argc] = NULL;
	int nargs = 0;
	int st = keel_opt_parse(&spec, cut, argv, &nargs);
	if (st != KEEL_OPT_RUN)
		return st;
	const char *op = argv[1], *name = argv[2];
	bool acquire = !strcmp(op, "acquire"), elect = !strcmp(op, "elect");
	if (!acquire && !elect && strcmp(op, "status"))
		return keel_opt_usage(&spec, "unknown operation '%s' (acquire, elect, status)", op);
	if (strlen(name) == 0 || strlen(name) > KEEL_LOCK_MAX_NAME - 6)
		return keel_opt_usage(&spec, "a lock name of 1 to %u bytes", KEEL_LOCK_MAX_NAME - 6);
	if (elect && !cmd)
		return keel_opt_usage(&spec, "elect needs a command: keel lock elect NAME -- CMD ...");
	if (!acquire && !elect && cmd)
		return keel_opt_usage(&spec, "status takes no command");

	const struct keel_cli_cluster where = {o.endpoints, o.dir, o.token_file, o.timeout_ms};
	char eps[4096], token[300];
	int rc = keel_cli_find_cluster(&spec, &where, eps, sizeof(eps), token, sizeof(token));
	if (rc)
		return rc;
	struct keel_lock_client_config cc = {.endpoints = eps, .token = token[0] ? token : NULL,
					     .ttl_ms = (uint32_t)o.ttl_ms,
					     .timeout_ms = (uint32_t)o.timeout_ms};
	struct keel_lock_client *lc;
	char err[KEEL_ERRMSG_LEN];
	if (keel_lock_client_open(&cc, &lc, err) < 0) {
		fprintf(stderr, "keel lock %s: %s\n", op, err);
		return KEEL_CLI_UNREACHABLE;
	}
	if (!acquire && !elect) {
		struct keel_lock_state ls;
		struct keel_json j;
		struct status_out so = {.json = o.json, .j = &j};
		if (o.json) {
			keel_json_init_file(&j, stdout);
			keel_json_open_obj(&j, NULL);
			keel_json_put_str(&j, "name", name);
			keel_json_open_arr(&j, "rows");
		}
		rc = keel_lock_inspect(lc, name, strlen(name), &ls, status_row, &so);
		if (o.json) {
			keel_json_close(&j);
			if (rc == 0) {
				keel_json_put_str(&j, "mode", ls.mode == KEEL_LOCK_SHARED ? "shared"
							      : ls.mode		 ? "exclusive"
										 : "free");
				keel_json_put_u64(&j, "group", ls.group);
				keel_json_put_u64(&j, "delay_left_ms", ls.delay_left_ms);
			}
			keel_json_close(&j);
			keel_json_finish(&j, true);
		} else if (rc == 0 && !so.n) {
			printf("%s: free (group %u)\n", name, ls.group);
		}
		if (rc < 0)
			fprintf(stderr, "keel lock status: %s\n", keel_lock_client_errmsg(lc));
		keel_lock_client_abandon(lc); /* no session was opened */
		return rc < 0 ? KEEL_CLI_UNREACHABLE : 0;
	}
	struct sigaction sa = {.sa_handler = on_stop};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	char lname[KEEL_LOCK_MAX_NAME + 1];
	snprintf(lname, sizeof(lname), "%s%s", elect ? "elect/" : "", name);
	uint64_t tok = 0;
	for (;;) {
		rc = keel_lock_acquire(lc, lname, strlen(lname),
				       o.shared ? KEEL_LOCK_SHARED : KEEL_LOCK_EXCLUSIVE,
				       o.try_only ? 0 : (uint32_t)o.wait_ms, 0, &tok);
		/* a candidate campaigns until it wins or is stopped */
		if (!(elect && rc == KEEL_ETIMEOUT) || stop_sig)
			break;
	}
	if (rc < 0) {
		fprintf(stderr, "keel lock %s: %s: %s\n", op, name, keel_lock_client_errmsg(lc));
		keel_lock_client_close(lc);
		return rc == KEEL_EBUSY || rc == KEEL_ETIMEOUT ? EXIT_NOT_ACQUIRED
							       : KEEL_CLI_UNREACHABLE;
	}
	pid_t pid = 0;
	if (cmd) {
		fflush(stdout);
		pid = spawn(cmd, lname, tok);
		if (pid < 0) {
			fprintf(stderr, "keel lock %s: fork: %s\n", op, strerror(errno));
			keel_lock_client_close(lc);
			return KEEL_CLI_UNREACHABLE;
		}
	} else {
		printf("%s token=%llu\n", lname, (unsigned long long)tok);
		fflush(stdout);
	}
	int ex = hold(lc, op, lname, tok, pid);
	keel_lock_client_close(lc);
	return ex;
}
