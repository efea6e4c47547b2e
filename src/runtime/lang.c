/*
 * Language recipes. A language is offered when its runtime exists in the
 * host directories that every sandbox sees; availability is probed once.
 * The names, file names and commands follow SandboxFusion's runners
 * (main.<ext> stands for its random temporary names), with the changes a
 * sandbox needs: caches under /tmp, bounded thread counts, JVM options
 * that fit the default memory and process limits.
 */
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "runtime/lang.h"
#include "base/banned.h"

/* A JVM in a sandbox: one GC thread, and the quick compiler only (fewer
 * threads and less memory; these programs are short). */
#define JVM_OPTS "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
/* Go: caches in /tmp, Debian's Go packages (testify, ...) importable in
 * GOPATH mode as no module cache can be downloaded, at most two build
 * jobs so a many-core host does not exhaust the process limit. */
#define GO_ENV                                                               \
	{                                                                    \
		"GOCACHE=/tmp/go-cache", "GOPATH=/tmp/go:/usr/share/gocode", \
			"GO111MODULE=off", "GOFLAGS=-p=2", NULL              \
	}
#define NODE_ENV                                                             \
	{                                                                    \
		"PATH=" LANG_NODE_MOUNT "/node_modules/.bin:/usr/local/bin:" \
		"/usr/bin:/bin",                                             \
			"NODE_PATH=" LANG_NODE_MOUNT "/node_modules",        \
			"FORCE_COLOR=0", NULL                                \
	}
#define JUNIT_CP "/usr/share/java/junit-platform-console-standalone.jar"

static const struct lang langs[] = {
	{.name = "python",
	 .source = "main.py",
	 .run = "python3 main.py",
	 .runtime = "python3"},
	{.name = "pytest",
	 .source = "main.py",
	 .run = "pytest main.py",
	 .runtime = "pytest",
	 .absent = "Debian's python3-pytest"},
	{.name = "bash",
	 .source = "main.sh",
	 .run = "bash main.sh",
	 .runtime = "bash"},
	{.name = "c",
	 .source = "main.c",
	 .compile = "gcc -O2 -std=gnu17 -o main main.c -lm",
	 .run = "./main",
	 .runtime = "gcc"},
	{.name = "cpp",
	 .source = "main.cpp",
	 .compile = "g++ -O2 -std=c++17 -o main main.cpp",
	 .run = "./main",
	 .runtime = "g++"},
	{.name = "nodejs",
	 .source = "main.js",
	 .run = "node main.js",
	 .runtime = "node"},
	{.name = "typescript",
	 .source = "main.ts",
	 .run = "tsx main.ts",
	 .runtime = "tsx",
	 .env = NODE_ENV,
	 .flags = LANG_NODE,
	 .absent = "npm's tsx (make deps LANGS=typescript)"},
	{.name = "jest",
	 .source = "main.test.ts",
	 .run = "jest --config " LANG_NODE_MOUNT "/jest.config.js",
	 .runtime = "jest",
	 .env = NODE_ENV,
	 .flags = LANG_NODE,
	 .absent = "npm's jest (make deps LANGS=jest)"},
	{.name = "java",
	 .source = "Main.java",
	 .compile = "javac -encoding UTF-8 Main.java",
	 .run = "java -cp . -ea -XX:+UseSerialGC Main",
	 .runtime = "javac"},
	{.name = "junit",
	 .source = "{name}.java",
	 .compile = "javac -J-XX:+UseSerialGC -encoding UTF-8 -cp .:" JUNIT_CP
		    " {name}.java",
	 .run = "java " JVM_OPTS " -jar " JUNIT_CP
		" --disable-banner --disable-ansi-colors --class-path . "
		"--scan-class-path",
	 .runtime = JUNIT_CP,
	 .name_rule = LANG_NAME_JAVA_PUBLIC_CLASS,
	 .absent = "Debian's junit5"},
	{.name = "go",
	 .source = "main.go",
	 .compile = "go build -o out main.go",
	 .run = "./out",
	 .runtime = "go",
	 .env = GO_ENV},
	/* Without go vet: its checks need export data that Debian's
	 * precompiled standard library lacks, so every run would compile
	 * the library again (net/http for testify: 20 s instead of 4). */
	{.name = "go_test",
	 .source = "main_test.go",
	 .run = "go test -vet=off main_test.go",
	 .runtime = "go",
	 .env = GO_ENV},
	{.name = "rust",
	 .source = "main.rs",
	 .compile = "rustc main.rs -o test",
	 .run = "./test",
	 .runtime = "rustc"},
	{.name = "perl",
	 .source = "main.pl",
	 .run = "perl main.pl",
	 .runtime = "perl"},
	{.name = "ruby",
	 .source = "main.rb",
	 .run = "ruby main.rb",
	 .runtime = "ruby"},
	{.name = "php",
	 .source = "main.php",
	 .run = "php -f main.php",
	 .runtime = "php",
	 .prefix = "<?php"},
	{.name = "lua",
	 .source = "main.lua",
	 .run = "lua main.lua",
	 .runtime = "lua"},
	{.name = "R",
	 .source = "main.R",
	 .run = "Rscript main.R",
	 .runtime = "Rscript",
	 .absent = "Debian's r-base-core"},
	{.name = "D_ut",
	 .source = "main.d",
	 .compile = "ldmd2 main.d -unittest -of=test",
	 .run = "./test",
	 .runtime = "ldmd2",
	 .absent = "Debian's ldc"},
	{.name = "scala",
	 .source = "main.scala",
	 .compile = "scalac main.scala",
	 .run = "scala -nc -cp . {name}",
	 .runtime = "scalac",
	 .env = {"JAVA_OPTS=" JVM_OPTS, NULL},
	 .name_rule = LANG_NAME_SCALA_OBJECT},
	{.name = "kotlin_script",
	 .source = "main.kts",
	 .run = "kotlinc -script main.kts",
	 .runtime = "kotlinc",
	 .env = {"JAVA_OPTS=" JVM_OPTS, NULL},
	 .absent = "Debian's kotlin"},
	{.name = "csharp",
	 .source = "Program.cs",
	 .compile = "mcs -out:Program.exe Program.cs",
	 .run = "mono Program.exe",
	 .runtime = "mcs",
	 .absent = "Debian's mono-mcs and mono-runtime"},
	{.name = "racket",
	 .source = "main.rkt",
	 .run = "racket main.rkt",
	 .runtime = "racket"},
	{.name = "verilog",
	 .source = "main.sv",
	 .compile = "iverilog -Wall -Winfloop -Wno-timescale -g2012 -s tb "
		    "-o test.vvp main.sv",
	 .run = "vvp -n test.vvp",
	 .runtime = "iverilog",
	 .absent = "Debian's iverilog"},
	{.name = "julia",
	 .source = "main.jl",
	 .run = "julia main.jl",
	 .runtime = "julia",
	 .absent = "Debian 12 does not package Julia; install it under "
		   "/usr/local"},
	{.name = "swift",
	 .source = "main.swift",
	 .compile = "swiftc main.swift -o test.out",
	 .run = "./test.out",
	 .runtime = "swiftc",
	 .absent = "Debian 12 does not package Swift; install it under "
		   "/usr/local"},
	{.name = "lean",
	 .source = "Main.lean",
	 .run = "lean Main.lean",
	 .runtime = "lean",
	 .absent = "Debian 12 packages neither Lean 4 nor Mathlib; install "
		   "lean under /usr/local"},
	{.name = "cuda",
	 .source = "main.cu",
	 .runtime = "nvcc",
	 .flags = LANG_GPU},
	{.name = "python_gpu",
	 .source = "main.py",
	 .runtime = "python3",
	 .flags = LANG_GPU},
	{.name = "sql", .source = "main.sql", .flags = LANG_NO_RUNNER},
};

/* Where a sandbox finds programs (the read-only host view). */
static const char *const bin_dirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool available[ARRAY_SIZE(langs)];
static char node_dir[PATH_MAX];

/* Sets node_dir to dir's canonical path (bind sources must have no ".."
 * or symlinks) when it holds node_modules. */
static bool use_node_dir(const char *dir)
{
	char p[PATH_MAX + 16], real[PATH_MAX];

	snprintf(p, sizeof(p), "%s/node_modules", dir);
	if (access(p, X_OK) < 0 || !realpath(dir, real))
		return false;
	memcpy(node_dir, real, sizeof(node_dir));
	return true;
}

static void find_node_dir(void)
{
	const char *env = getenv("SBX_NODE_DIR");
	char exe[PATH_MAX], dir[PATH_MAX + 32], *slash;
	ssize_t n;

	if (env && *env) {
		use_node_dir(env);
		return;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return;
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return;
	*slash = '\0';
	snprintf(dir, sizeof(dir), "%s/npm", exe);
	if (use_node_dir(dir))
		return;
	snprintf(dir, sizeof(dir), "%s/../lib/sbx/npm", exe);
	use_node_dir(dir);
}

static bool runtime_found(const struct lang *l)
{
	char path[PATH_MAX + 64];
	size_t j;

	if (!l->runtime || (l->flags & (LANG_GPU | LANG_NO_RUNNER)))
		return false;
	if (l->runtime[0] == '/')
		return access(l->runtime, R_OK) == 0;
	if (l->flags & LANG_NODE) {
		if (!node_dir[0])
			return false;
		snprintf(path, sizeof(path), "%s/node_modules/.bin/%s",
			 node_dir, l->runtime);
		return access(path, X_OK) == 0;
	}
	for (j = 0; j < ARRAY_SIZE(bin_dirs); j++) {
		snprintf(path, sizeof(path), "%s/%s", bin_dirs[j], l->runtime);
		if (access(path, X_OK) == 0)
			return true;
	}
	return false;
}

static void probe(void)
{
	size_t i;

	find_node_dir();
	for (i = 0; i < ARRAY_SIZE(langs); i++)
		available[i] = runtime_found(&langs[i]);
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

void lang_why_unavailable(const struct lang *lang, char *out, size_t n)
{
	if (lang->flags & LANG_GPU)
		snprintf(out, n,
			 "language '%s' needs a GPU host: sbx passes no GPU "
			 "devices into its sandboxes",
			 lang->name);
	else if (lang->flags & LANG_NO_RUNNER)
		snprintf(out, n, "language '%s' has no runner", lang->name);
	else
		snprintf(out, n,
			 "language '%s' is not available on this server: "
			 "'%s' is not installed%s%s%s",
			 lang->name, lang->runtime, lang->absent ? " (" : "",
			 lang->absent ? lang->absent : "",
			 lang->absent ? ")" : "");
}

const char *lang_node_dir(void)
{
	pthread_once(&probe_once, probe);
	return node_dir[0] ? node_dir : NULL;
}

static bool is_word(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

static const char *skip_space(const char *p, const char *end)
{
	while (p < end && isspace((unsigned char)*p))
		p++;
	return p;
}

/* Matches the keyword kw at p as a whole word followed by blanks; returns
 * the end of the blanks or NULL. */
static const char *keyword(const char *start, const char *p, const char *end,
			   const char *kw)
{
	size_t k = strlen(kw);
	const char *q;

	if ((size_t)(end - p) <= k || memcmp(p, kw, k) ||
	    (p > start && is_word(p[-1])))
		return NULL;
	q = skip_space(p + k, end);
	return q > p + k ? q : NULL;
}

/* The identifier at p, copied out (at most 128 bytes), or NULL. */
static char *identifier(const char *p, const char *end)
{
	const char *q = p;

	while (q < end && is_word(*q))
		q++;
	if (q == p || q - p > 128)
		return NULL;
	return xstrndup(p, (size_t)(q - p));
}

/* SandboxFusion's find_java_public_class_name:
 * \bpublic\s+(abstract\s+|final\s+)?class\s+(\w+) */
static char *java_public_class(const char *code, size_t len)
{
	const char *end = code + len, *p, *q, *r;

	for (p = code; p < end; p++) {
		q = keyword(code, p, end, "public");
		if (!q)
			continue;
		r = keyword(code, q, end, "abstract");
		if (!r)
			r = keyword(code, q, end, "final");
		r = keyword(code, r ? r : q, end, "class");
		if (r)
			return identifier(r, end);
	}
	return NULL;
}

/* SandboxFusion's find_scala_classname: the first `object\s+(\w+)`. */
static char *scala_object(const char *code, size_t len)
{
	const char *end = code + len, *p, *q;

	for (p = code; p < end; p++) {
		q = keyword(code, p, end, "object");
		if (q)
			return identifier(q, end);
	}
	return NULL;
}

/* s with every "{name}" replaced by name (caller frees). */
static char *subst(const char *s, const char *name)
{
	struct {
		char *p;
		size_t len, cap;
	} b = {xmalloc(64), 0, 64};
	const char *hit;

	for (;;) {
		size_t take, add;

		hit = name ? strstr(s, "{name}") : NULL;
		take = hit ? (size_t)(hit - s) : strlen(s);
		add = take + (hit ? strlen(name) : 0) + 1;
		if (b.len + add > b.cap) {
			b.cap = (b.len + add) * 2;
			b.p = xrealloc(b.p, b.cap);
		}
		memcpy(b.p + b.len, s, take);
		b.len += take;
		if (!hit)
			break;
		memcpy(b.p + b.len, name, strlen(name));
		b.len += strlen(name);
		s = hit + strlen("{name}");
	}
	b.p[b.len] = '\0';
	return b.p;
}

static char **recipe_argv(const char *recipe, const char *name,
			  char *const *extra)
{
	char *text = subst(recipe, name);
	char **argv = lang_argv(text, extra);

	free(text);
	return argv;
}

void lang_job_init(struct lang_job *job, const struct lang *lang,
		   const char *code, size_t len, char *const *extra)
{
	static const char *const not_found[] = {
		"bash", "-c", "printf 'Object name not found.' >&2; exit 1",
		NULL};
	char *name = NULL;
	size_t plen, i;
	const char *p;

	memset(job, 0, sizeof(*job));
	if (lang->name_rule == LANG_NAME_JAVA_PUBLIC_CLASS) {
		name = java_public_class(code, len);
		if (!name)
			name = xstrdup("Main");
	} else if (lang->name_rule == LANG_NAME_SCALA_OBJECT) {
		name = scala_object(code, len);
	}
	job->source = subst(lang->source, name ? name : "Main");

	/* SandboxFusion strips leading blanks and adds "<?php\n" unless
	 * the code starts with it. */
	p = lang->prefix ? skip_space(code, code + len) : code;
	plen = lang->prefix ? strlen(lang->prefix) : 0;
	if (lang->prefix && ((size_t)(code + len - p) < plen ||
			     memcmp(p, lang->prefix, plen))) {
		job->code_len = plen + 1 + (size_t)(code + len - p);
		job->code = xmalloc(job->code_len + 1);
		memcpy(job->code, lang->prefix, plen);
		job->code[plen] = '\n';
		memcpy(job->code + plen + 1, p, (size_t)(code + len - p));
	} else {
		job->code_len = (size_t)(code + len - p);
		job->code = xmalloc(job->code_len + 1);
		memcpy(job->code, p, job->code_len);
	}
	job->code[job->code_len] = '\0';

	if (lang->name_rule == LANG_NAME_SCALA_OBJECT && !name) {
		job->compile = xcalloc(ARRAY_SIZE(not_found), sizeof(char *));
		for (i = 0; not_found[i]; i++)
			job->compile[i] = xstrdup(not_found[i]);
	} else if (lang->compile) {
		job->compile = recipe_argv(lang->compile, name, NULL);
	}
	job->run = recipe_argv(lang->run ? lang->run : "false", name, extra);
	if ((lang->flags & LANG_NODE) && lang_node_dir()) {
		job->bind_src = lang_node_dir();
		job->bind_dst = LANG_NODE_MOUNT;
	}
	free(name);
}

void lang_job_release(struct lang_job *job)
{
	free(job->source);
	free(job->code);
	lang_argv_free(job->compile);
	lang_argv_free(job->run);
	memset(job, 0, sizeof(*job));
}

const struct lang *lang_at(unsigned i)
{
	return i < ARRAY_SIZE(langs) ? &langs[i] : NULL;
}

void lang_list(char *out, size_t n)
{
	static const char more[] = ", ...";
	size_t used = 0, i;

	if (!n)
		return;
	out[0] = '\0';
	if (n < sizeof(more))
		return;
	/* Room is kept for saying the list goes on. */
	n -= sizeof(more) - 1;
	for (i = 0; i < ARRAY_SIZE(langs); i++) {
		int w = snprintf(out + used, n - used, "%s%s", used ? ", " : "",
				 langs[i].name);

		if (w < 0 || (size_t)w >= n - used) {
			out[used] = '\0';
			memcpy(out + used, more, sizeof(more));
			break;
		}
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
