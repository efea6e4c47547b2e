/*
 * Functions that are easy to misuse in a daemon that reads untrusted bytes.
 * Including this header after the system headers turns any use into a
 * compile error that names the safer replacement.
 */
#ifndef SBX_BANNED_H
#define SBX_BANNED_H

#define BANNED(func) sorry_##func##_is_banned_in_sbx

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef atoi
#define atoi(x) BANNED(atoi)
#undef atol
#define atol(x) BANNED(atol)
#undef system
#define system(x) BANNED(system)
#undef gets
#define gets(x) BANNED(gets)

#endif
