/* no_io_uring PROGRAM ARGS...: runs PROGRAM the way a container's seccomp
 * profile would (podman answers ENOSYS to io_uring_setup; Docker >= 25 and
 * containerd 2.0 answer EPERM): installs a libseccomp filter in this
 * process that fails io_uring_setup, io_uring_enter and io_uring_register
 * with KEEL_NO_IO_URING_ERRNO (ENOSYS, or EPERM), then execs PROGRAM,
 * which inherits the filter before it starts anything. Exits 77 (a
 * skip) when the kernel takes no seccomp filter, naming why. */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: no_io_uring PROGRAM [ARGS...]\n");
		return 2;
	}
	const char *e = getenv("KEEL_NO_IO_URING_ERRNO");
	int err = e && !strcmp(e, "EPERM") ? EPERM : ENOSYS;
	/* Everything else allowed; seccomp_load sets no_new_privs first, so
	 * no privilege is needed. */
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) {
		fprintf(stderr, "SKIP: seccomp_init failed\n");
		return 77;
	}
	int rc = 0;
	const int calls[] = {SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter),
			     SCMP_SYS(io_uring_register)};
	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]) && !rc; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), calls[i], 0);
	if (!rc)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc) {
		fprintf(stderr, "SKIP: cannot install a seccomp filter here: %s\n", strerror(-rc));
		return 77;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "no_io_uring: exec %s: %s\n", argv[1], strerror(errno));
	return 127;
}
