/*
 * The network: a fresh namespace with only loopback, brought up so local
 * servers inside the sandbox work. Nothing routes out.
 */
#include <errno.h>
#include <net/if.h>
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
