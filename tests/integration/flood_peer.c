/*
 * flood_peer: what an unauthenticated stranger can do to keel's peer ports
 * (issue 18), for tests/integration/node_flood.sh. It keeps CONNS TCP
 * connections open from one source address to the given ports, spread
 * round-robin: every other one idle (it connects and sends nothing), the
 * rest half-open handshakes (the first 7 bytes of a frame header, then
 * silence). A connection the server closes is re-opened after REDIAL_MS,
 * so the pressure never lets up. It reads (and counts) whatever the server
 * sends, REFUSE frames included, and never completes a handshake.
 *
 * usage: flood_peer FROM_ADDR CONNS SECONDS REDIAL_MS PORT... (PORT on
 *        127.0.0.1)
 * Prints one summary line on exit: opened, closed by the server, bytes
 * received. Exit 0, or 2 on a bad argument / when FROM_ADDR cannot be bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096

struct slot {
	int fd;
	int port;
	int kind;            /* 0 idle, 1 half-open HELLO */
	int connected;
	uint64_t redial_at;  /* ms, when fd < 0 */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct in_addr from;
static unsigned long opened, closed, rx_bytes, bind_fail;

static int dial(struct slot *s)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = from};
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
		int e = -errno;
		close(fd);
		bind_fail++;
		return e;
	}
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		int e = -errno;
		close(fd);
		return e;
	}
	s->fd = fd;
	s->connected = 0;
	opened++;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: flood_peer FROM_ADDR CONNS SECONDS REDIAL_MS PORT...\n");
		return 2;
	}
	if (inet_pton(AF_INET, argv[1], &from) != 1) {
		fprintf(stderr, "flood_peer: '%s' is not an IPv4 address\n", argv[1]);
		return 2;
	}
	int n = atoi(argv[2]);
	double seconds = atof(argv[3]);
	int redial = atoi(argv[4]);
	int nports = argc - 5;
	if (n < 1 || n > MAX_CONNS || seconds <= 0 || redial < 0) {
		fprintf(stderr, "flood_peer: CONNS 1..%d, SECONDS > 0, REDIAL_MS >= 0\n", MAX_CONNS);
		return 2;
	}
	static struct slot slots[MAX_CONNS];
	static struct pollfd pfd[MAX_CONNS];
	for (int i = 0; i < n; i++) {
		slots[i].fd = -1;
		slots[i].port = atoi(argv[5 + i % nports]);
		slots[i].kind = (i / nports) % 2;
		slots[i].redial_at = 0;
	}
	/* One bind must work, or the test cannot mean anything. */
	{
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = from};
		if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
			fprintf(stderr, "flood_peer: cannot bind %s: %s\n", argv[1], strerror(errno));
			return 2;
		}
		close(fd);
	}
	uint64_t end = now_ms() + (uint64_t)(seconds * 1000);
	/* A partial header: magic, version 1, kind HELLO, then nothing. */
	static const uint8_t partial[7] = {0x4b, 0x4c, 1, 1, 52, 0, 0};
	char buf[4096];
	while (now_ms() < end) {
		uint64_t t = now_ms();
		int np = 0;
		for (int i = 0; i < n; i++) {
			struct slot *s = &slots[i];
			if (s->fd < 0 && t >= s->redial_at && dial(s) < 0)
				s->redial_at = t + (uint64_t)(redial ? redial : 1);
			if (s->fd < 0)
				continue;
			pfd[np].fd = s->fd;
			pfd[np].events = POLLIN | (s->connected ? 0 : POLLOUT);
			pfd[np].revents = 0;
			np++;
		}
		int r = poll(pfd, (nfds_t)np, 20);
		if (r <= 0)
			continue;
		for (int i = 0, k = 0; i < n && k < np; i++) {
			struct slot *s = &slots[i];
			if (s->fd < 0 || pfd[k].fd != s->fd)
				continue;
			short ev = pfd[k++].revents;
			if (!ev)
				continue;
			int gone = 0;
			if ((ev & POLLOUT) && !s->connected) {
				int err = 0;
				socklen_t l = sizeof(err);
				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
				if (err) {
					gone = 1;
				} else {
					s->connected = 1;
					if (s->kind == 1 &&
					    send(s->fd, partial, sizeof(partial), MSG_NOSIGNAL) < 0)
						gone = 1;
				}
			}
			if (!gone && (ev & (POLLIN | POLLHUP | POLLERR))) {
				ssize_t m = recv(s->fd, buf, sizeof(buf), 0);
				if (m > 0)
					rx_bytes += (unsigned long)m;
				else if (m == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
					gone = 1;
			}
			if (gone) {
				close(s->fd);
				s->fd = -1;
				closed++;
				s->redial_at = now_ms() + (uint64_t)redial;
			}
		}
	}
	int open_now = 0;
	for (int i = 0; i < n; i++)
		if (slots[i].fd >= 0) {
			open_now++;
			close(slots[i].fd);
		}
	printf("flood_peer: from %s to %d port(s): %lu connections opened, %lu closed by the "
	       "server, %d open at the end, %lu bytes received, %lu binds failed\n",
	       argv[1], nports, opened, closed, open_now, rx_bytes, bind_fail);
	return 0;
}
