/*
 * The subcommands. Each returns the process exit status.
 */
#ifndef SBX_CLI_H
#define SBX_CLI_H

int cmd_run(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_mcp(int argc, char **argv);

/* Exit status for a usage error, after printing one line. */
#define EXIT_USAGE 2
/* Exit status when sbx itself failed (the sandbox could not be made). */
#define EXIT_SANDBOX 125

#endif
