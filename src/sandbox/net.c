/*
 * The network: a fresh namespace with only loopback, brought up so local
 * servers inside the sandbox work. Nothing routes out.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

int net_setup_child(struct child_err *ce)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int r = 0;

	if (fd < 0) {
		str_copy(ce->what, sizeof(ce->what), "cannot open a socket");
		return -errno;
	}
	memset(&ifr, 0, sizeof(ifr));
	str_copy(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		r = -errno;
		goto out;
	}
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		r = -errno;
out:
	if (r)
		str_copy(ce->what, sizeof(ce->what), "cannot bring up 'lo'");
	fd_close(&fd);
	return r;
}

/* Whether the table at path lists nothing but its header line. */
static bool table_empty(const char *path)
{
	char buf[512];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	char *nl;

	if (fd < 0)
		return errno == ENOENT; /* no such protocol here */
	n = read(fd, buf, sizeof(buf) - 1);
	fd_close(&fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	nl = strchr(buf, '\n');
	return nl && nl[1] == '\0';
}

/* Whether every unix socket listed is unnamed: an entry's path (or
 * abstract name) is its eighth field. */
static bool unix_unnamed(void)
{
	FILE *f = fopen("/proc/net/unix", "re");
	char line[512];
	bool ok = f != NULL;

	if (!f || !fgets(line, sizeof(line), f)) {
		if (f)
			fclose(f);
		return false;
	}
	while (ok && fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok = strtok_r(line, " \n", &save);
		int fields = 0;

		while (tok) {
			fields++;
			tok = strtok_r(NULL, " \n", &save);
		}
		ok = fields < 8;
	}
	fclose(f);
	return ok;
}

bool net_is_empty(void)
{
	static const char *const tables[] = {
		"/proc/net/tcp",  "/proc/net/tcp6", "/proc/net/udp",
		"/proc/net/udp6", "/proc/net/raw",  "/proc/net/raw6",
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(tables); i++)
		if (!table_empty(tables[i]))
			return false;
	return unix_unnamed();
}
