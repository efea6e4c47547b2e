/*
 * sbx-init: the first process of every sandbox, as a small static binary.
 * sbx embeds it and executes it from a sealed memfd, so a sandbox starts
 * without loading sbx's own shared libraries.
 */
#include "sandbox/sandbox.h"

int main(void)
{
	sandbox_init_main();
}
