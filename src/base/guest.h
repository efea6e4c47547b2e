/*
 * What runs inside sandboxes and is not C (guest/), embedded in sbx at
 * build time by tools/embed.py (Makefile: gen/guest.c). NUL-terminated.
 */
#ifndef SBX_GUEST_H
#define SBX_GUEST_H

/* guest/repl.py: the REPL driver. */
extern const char guest_repl_py[];
extern const unsigned long guest_repl_py_len;
/* guest/zygote.py: the Python interpreter warm sandboxes start early. */
extern const char guest_zygote_py[];
extern const unsigned long guest_zygote_py_len;
/* guest/rpc.py: the interface server (runtime/rpc.c). */
extern const char guest_rpc_py[];
extern const unsigned long guest_rpc_py_len;
/* guest/sbx_guest.py: the helper sandboxes import (llm_batch,
 * call_tool), placed in each sandbox's view. */
extern const char guest_sbx_guest_py[];
extern const unsigned long guest_sbx_guest_py_len;

#endif
