/*
 * Language recipes. A language is offered when its runtime exists in the
 * host directories that every sandbox sees; availability is probed once.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "runtime/lang.h"
#include "base/banned.h"

static const struct lang langs[] = {
	{"python", "main.py", NULL, "python3 main.py", "python3", {NULL}},
	{"bash", "main.sh", NULL, "bash main.sh", "bash", {NULL}},
	{"c",
	 "main.c",
	 "gcc -O2 -std=gnu17 -o main main.c -lm",
	 "./main",
	 "gcc",
	 {NULL}},
	{"cpp",
	 "main.cpp",
	 "g++ -O2 -std=c++17 -o main main.cpp",
	 "./main",
	 "g++",
	 {NULL}},
	{"nodejs", "main.js", NULL, "node main.js", "node", {NULL}},
	{"java",
	 "Main.java",
	 "javac -encoding UTF-8 Main.java",
	 "java -cp . -ea -XX:+UseSerialGC Main",
	 "javac",
	 {NULL}},
	{"go",
	 "main.go",
	 "go build -o main main.go",
	 "./main",
	 "go",
	 {"GOCACHE=/tmp/go-cache", "GOPATH=/tmp/go", NULL}},
	{"rust",
	 "main.rs",
	 "rustc -O -o main main.rs",
	 "./main",
	 "rustc",
	 {NULL}},
	{"perl", "main.pl", NULL, "perl main.pl", "perl", {NULL}},
	{"ruby", "main.rb", NULL, "ruby main.rb", "ruby", {NULL}},
	{"php", "main.php", NULL, "php -f main.php", "php", {NULL}},
	{"lua", "main.lua", NULL, "lua main.lua", "lua", {NULL}},
};

/* Where a sandbox finds programs (the read-only host view). */
static const char *const bin_dirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool available[ARRAY_SIZE(langs)];

static void probe(void)
{
	char path[256];
	size_t i, j;

	for (i = 0; i < ARRAY_SIZE(langs); i++)
		for (j = 0; j < ARRAY_SIZE(bin_dirs); j++) {
			snprintf(path, sizeof(path), "%s/%s", bin_dirs[j],
				 langs[i].runtime);
			if (access(path, X_OK) == 0) {
				available[i] = true;
				break;
			}
		}
}

const struct lang *lang_find(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(langs); i++)
		if (!strcmp(langs[i].name, name))
			return &langs[i];
	return NULL;
}

bool lang_available(const struct lang *lang)
{
	pthread_once(&probe_once, probe);
	return available[lang - langs];
}

const struct lang *lang_at(unsigned i)
{
	return i < ARRAY_SIZE(langs) ? &langs[i] : NULL;
}

void lang_list(char *out, size_t n)
{
	size_t used = 0, i;

	if (!n)
		return;
	out[0] = '\0';
	for (i = 0; i < ARRAY_SIZE(langs); i++) {
		int w = snprintf(out + used, n - used, "%s%s", used ? ", " : "",
				 langs[i].name);

		if (w < 0 || (size_t)w >= n - used)
			break;
		used += (size_t)w;
	}
}

char **lang_argv(const char *recipe, char *const *extra)
{
	size_t n = 0, cap = 8;
	char **argv = xmalloc(cap * sizeof(*argv));
	const char *p = recipe;

	for (;;) {
		size_t len;

		while (*p == ' ')
			p++;
		if (!*p)
			break;
		len = strcspn(p, " ");
		if (n + 2 > cap)
			argv = xrealloc(argv, (cap *= 2) * sizeof(*argv));
		argv[n++] = xstrndup(p, len);
		p += len;
	}
	for (size_t i = 0; extra && extra[i]; i++) {
		if (n + 2 > cap)
			argv = xrealloc(argv, (cap *= 2) * sizeof(*argv));
		argv[n++] = xstrdup(extra[i]);
	}
	argv[n] = NULL;
	return argv;
}

void lang_argv_free(char **argv)
{
	size_t i;

	if (!argv)
		return;
	for (i = 0; argv[i]; i++)
		free(argv[i]);
	free(argv);
}
