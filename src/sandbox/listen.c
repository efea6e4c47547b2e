/*
 * Sockets inside a sandbox's network namespace, made by the host: a TCP
 * socket created there belongs to that namespace for good. A listener
 * there takes connections only from processes of that sandbox, while the
 * host holds the only fd; a socket the host connects there reaches only
 * that sandbox's loopback. A short-lived thread enters the namespace, makes the
 * socket and ends, so no thread of the server ever stays in a sandbox's
 * network.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

struct listen_job {
	int ns_fd;
	uint16_t port; /* 0: a socket to connect with, not a listener */
	int fd;	       /* out: the socket, or -errno */
};

static void *listen_thread(void *arg)
{
	struct listen_job *j = arg;
	struct sockaddr_in addr;
	int fd;

	if (setns(j->ns_fd, CLONE_NEWNET) < 0) {
		j->fd = -errno;
		return NULL;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		j->fd = -errno;
		return NULL;
	}
	if (!j->port) {
		j->fd = fd;
		return NULL;
	}
	/* Any address: loopback may not be up yet, and it is the only
	 * interface the namespace has. */
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(j->port);
	addr.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(fd, 512) < 0) {
		j->fd = -errno;
		close(fd);
		return NULL;
	}
	j->fd = fd;
	return NULL;
}

int listen_in_sandbox(pid_t pid, int pidfd, uint16_t port)
{
	struct listen_job job = {.ns_fd = -1, .port = port, .fd = -EIO};
	char path[64];
	pthread_t t;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	job.ns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (job.ns_fd < 0)
		return -errno;
	/* The pid is still the sandbox's init only while its pidfd says it
	 * has not exited (the host reaps it, so the pid is not reused
	 * before). */
	if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0) {
		r = -ESRCH;
		goto out;
	}
	r = pthread_create(&t, NULL, listen_thread, &job);
	if (r) {
		r = -r;
		goto out;
	}
	pthread_join(t, NULL);
	r = job.fd;
out:
	fd_close(&job.ns_fd);
	return r;
}
