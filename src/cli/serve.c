/*
 * sbx serve: placeholder until the server lands.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "base/banned.h"

int cmd_serve(int argc, char **argv)
{
	fputs("sbx serve: not built yet\n", stderr);
	return 1;
}
