/*
 * The server's state directory (--state-dir): where sbx.db and the
 * uploaded agents live. One function, so that every part of the server
 * agrees on the path.
 */
#include <stdlib.h>
#include <unistd.h>

#include "base/util.h"
#include "server/internal.h"
#include "base/banned.h"

char *server_state_dir(const struct server_config *cfg)
{
	const char *x = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");

	if (cfg->state_dir && *cfg->state_dir)
		return xstrdup(cfg->state_dir);
	if (geteuid() == 0)
		return xstrdup("/var/lib/sbx");
	if (x && *x)
		return xstrfmt("%s/sbx", x);
	return xstrfmt("%s/.local/state/sbx", home && *home ? home : "/tmp");
}
