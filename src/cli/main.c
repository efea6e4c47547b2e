/*
 * sbx: git-style subcommands. The sandbox's init is this same binary,
 * re-executed with a private argument, so it is checked first.
 */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/cli.h"
#include "sandbox/sandbox.h"
#include "base/banned.h"

#define SBX_VERSION "0.1.0"

static const char usage[] =
	"usage: sbx <command> [options]\n"
	"\n"
	"  run [options] -- CMD [ARGS...]   run one command in a fresh "
	"sandbox\n"
	"  check                            what this host supports\n"
	"  serve [options]                  the HTTP server\n"
	"  mcp --url U --sandbox ID --interface NAME\n"
	"                                   a stdio MCP server for an "
	"interface\n"
	"  version                          print the version\n"
	"\n"
	"'sbx <command> --help' describes each command's options.\n";

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "__sandbox_init"))
		sandbox_init_main();
	if (argc < 2) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "check"))
		return cmd_check(argc - 1, argv + 1);
	if (!strcmp(argv[1], "serve"))
		return cmd_serve(argc - 1, argv + 1);
	if (!strcmp(argv[1], "mcp"))
		return cmd_mcp(argc - 1, argv + 1);
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("sbx %s\n", SBX_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "-h")) {
		fputs(usage, stdout);
		return 0;
	}
	fprintf(stderr, "sbx: unknown command '%s'\n", argv[1]);
	fputs(usage, stderr);
	return EXIT_USAGE;
}
