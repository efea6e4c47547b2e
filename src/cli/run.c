/*
 * sbx run: one command in a fresh sandbox, from the shell. Output streams
 * through as it comes; the exit status is the command's (128+N for signal
 * N, 125 when the sandbox could not be made).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"
#include "cli/cli.h"
#include "runtime/limits.h"
#include "runtime/result.h"
#include "sandbox/sandbox.h"
#include "base/banned.h"

static const char usage[] =
	"usage: sbx run [options] -- CMD [ARGS...]\n"
	"\n"
	"  -t, --time=DURATION   wall-clock limit (default 10s; 0: none)\n"
	"      --cpu=DURATION    CPU time limit of all processes (default "
	"none)\n"
	"      --cpus=N          CPU cores, fractions allowed (e.g. 0.5; "
	"default\n"
	"                        none)\n"
	"      --cpu-weight=N    CPU share under contention, 1-10000 "
	"(default 100)\n"
	"  -m, --memory=SIZE     memory limit, swap included (default 512M)\n"
	"      --pids=N          processes and threads (default 128)\n"
	"      --fsize=SIZE      largest file a process may write (default "
	"64M)\n"
	"      --nofile=N        open files per process (default 256)\n"
	"      --output=SIZE     stdout and stderr cap, each (default 16M)\n"
	"      --disk=SIZE       size of /tmp, /work, $HOME, /dev/shm "
	"together\n"
	"                        (default 256M)\n"
	"  -i, --stdin=FILE      read stdin from FILE (default: empty)\n"
	"  -e, --env=NAME=VALUE  set an environment variable (repeatable)\n"
	"      --bind=SRC[:DST]  bind a host directory read-write\n"
	"      --ro-bind=SRC[:DST]  bind a host directory read-only\n"
	"  -C, --cwd=DIR         working directory inside (default /work)\n"
	"      --json=FILE       write the result as JSON to FILE ('-': "
	"stderr)\n"
	"      --uid-base=UID    first host uid of the sandbox uid slots\n"
	"                        (SBX_UID_BASE, default 1879048192)\n"
	"      --uid-slots=N     host uid ranges of 65536 ids to pick from\n"
	"                        (SBX_UID_SLOTS, default 4096)\n"
	"\n"
	"DURATION: 10, 2.5s, 500ms, 1m. SIZE: 4096, 64K, 512M, 2G.\n";

enum {
	OPT_CPU = 256,
	OPT_PIDS,
	OPT_FSIZE,
	OPT_NOFILE,
	OPT_OUTPUT,
	OPT_DISK,
	OPT_BIND,
	OPT_RO_BIND,
	OPT_JSON,
	OPT_UID_BASE,
	OPT_UID_SLOTS,
	OPT_CPUS,
	OPT_CPU_WEIGHT,
};

static const struct option options[] = {
	{"time", required_argument, NULL, 't'},
	{"cpu", required_argument, NULL, OPT_CPU},
	{"cpus", required_argument, NULL, OPT_CPUS},
	{"cpu-weight", required_argument, NULL, OPT_CPU_WEIGHT},
	{"memory", required_argument, NULL, 'm'},
	{"pids", required_argument, NULL, OPT_PIDS},
	{"fsize", required_argument, NULL, OPT_FSIZE},
	{"nofile", required_argument, NULL, OPT_NOFILE},
	{"output", required_argument, NULL, OPT_OUTPUT},
	{"disk", required_argument, NULL, OPT_DISK},
	{"stdin", required_argument, NULL, 'i'},
	{"env", required_argument, NULL, 'e'},
	{"bind", required_argument, NULL, OPT_BIND},
	{"ro-bind", required_argument, NULL, OPT_RO_BIND},
	{"cwd", required_argument, NULL, 'C'},
	{"json", required_argument, NULL, OPT_JSON},
	{"uid-base", required_argument, NULL, OPT_UID_BASE},
	{"uid-slots", required_argument, NULL, OPT_UID_SLOTS},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int __attribute__((format(printf, 1, 2))) bad(const char *fmt, ...)
{
	va_list ap;

	fputs("sbx run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

static int opt_size(const char *arg, const char *name, uint64_t min,
		    uint64_t *out)
{
	if (parse_size(arg, out) || *out < min) {
		fprintf(stderr, "sbx run: bad %s '%s'\n", name, arg);
		return -1;
	}
	return 0;
}

static int opt_count(const char *arg, const char *name, uint64_t min,
		     uint64_t max, uint64_t *out)
{
	if (parse_u64(arg, out) || *out < min || *out > max) {
		fprintf(stderr, "sbx run: bad %s '%s' (%llu to %llu)\n", name,
			arg, (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	return 0;
}

static int opt_bind(struct sandbox_spec *spec, const char *arg, bool writable)
{
	char *src = xstrdup(arg), *dst, real[PATH_MAX];
	int r = 0;

	dst = strchr(src, ':');
	if (dst)
		*dst++ = '\0';
	if (!realpath(src, real)) {
		fprintf(stderr, "sbx run: cannot bind '%s': %s\n", src,
			strerror(errno));
		r = -1;
	} else if (dst &&
		   (dst[0] != '/' || strstr(dst, "/..") || !strcmp(dst, "/"))) {
		fprintf(stderr,
			"sbx run: bad bind target '%s' (an absolute path, "
			"not '/', without '..')\n",
			dst);
		r = -1;
	} else {
		sandbox_spec_add_bind(spec, real, dst ? dst : real, writable);
	}
	free(src);
	return r;
}

static void pass_output(void *ctx, size_t step, int stream, const char *data,
			size_t len)
{
	/* A closed stdout must not stop the sandbox's supervision. */
	if (write_full(stream, data, len) < 0) {
	}
}

static int write_json(const char *dest, const struct sandbox_result *res)
{
	json_t *j = result_to_json(res);
	char *text = json_dumps(j, JSON_COMPACT);
	int r = 0;

	json_decref(j);
	if (!text)
		return -ENOMEM;
	if (!strcmp(dest, "-")) {
		fprintf(stderr, "%s\n", text);
	} else {
		FILE *f = fopen(dest, "we");

		if (!f || fprintf(f, "%s\n", text) < 0)
			r = -errno;
		if (f && fclose(f) != 0 && !r)
			r = -errno;
		if (r)
			fprintf(stderr, "sbx run: cannot write '%s': %s\n",
				dest, strerror(-r));
	}
	free(text);
	return r;
}

int cmd_run(int argc, char **argv)
{
	struct sandbox_spec spec;
	struct sandbox_result res;
	struct sandbox_limits *l;
	const char *json = NULL;
	char err[256];
	int c, stdin_fd = -1, rc = EXIT_USAGE;

	sandbox_spec_init(&spec);
	l = &spec.limits;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+t:m:i:e:C:h", options, NULL)) !=
	       -1) {
		int r = 0;

		switch (c) {
		case 't':
			if (parse_duration_ms(optarg, &l->wall_ms))
				r = bad("bad time limit '%s'", optarg);
			break;
		case OPT_CPU:
			if (parse_duration_ms(optarg, &l->cpu_ms))
				r = bad("bad cpu limit '%s'", optarg);
			break;
		case OPT_CPUS:
			if (limits_parse_cpus(optarg, &l->cpu_quota_milli) ||
			    (l->cpu_quota_milli && l->cpu_quota_milli < 10))
				r = bad("bad CPU count '%s' (cores, at least "
					"0.01)",
					optarg);
			break;
		case OPT_CPU_WEIGHT:
			r = opt_count(optarg, "CPU weight", 1, 10000,
				      &l->cpu_weight);
			break;
		case 'm':
			r = opt_size(optarg, "memory limit", 4 << 20,
				     &l->memory_bytes);
			break;
		case OPT_PIDS:
			r = opt_count(optarg, "process limit", 1, 1 << 22,
				      &l->pids);
			break;
		case OPT_FSIZE:
			r = opt_size(optarg, "file size limit", 1,
				     &l->fsize_bytes);
			break;
		case OPT_NOFILE:
			r = opt_count(optarg, "open files limit", 8, 1 << 20,
				      &l->nofile);
			break;
		case OPT_OUTPUT:
			r = opt_size(optarg, "output limit", 1,
				     &l->output_bytes);
			break;
		case OPT_DISK:
			r = opt_size(optarg, "disk size", 1 << 20,
				     &l->disk_bytes);
			break;
		case 'i':
			fd_close(&stdin_fd);
			stdin_fd = open(optarg, O_RDONLY | O_CLOEXEC);
			if (stdin_fd < 0) {
				fprintf(stderr,
					"sbx run: cannot open '%s': %s\n",
					optarg, strerror(errno));
				r = -1;
			}
			break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				r = bad("bad environment variable '%s' "
					"(NAME=VALUE)",
					optarg);
			else
				sandbox_spec_add_env(&spec, optarg);
			break;
		case OPT_BIND:
		case OPT_RO_BIND:
			r = opt_bind(&spec, optarg, c == OPT_BIND);
			break;
		case 'C':
			if (optarg[0] != '/')
				r = bad("bad working directory '%s' (an "
					"absolute path inside the sandbox)",
					optarg);
			else {
				free(spec.cwd);
				spec.cwd = xstrdup(optarg);
			}
			break;
		case OPT_JSON:
			json = optarg;
			break;
		case OPT_UID_BASE: /* read and checked by the sandbox layer */
			setenv("SBX_UID_BASE", optarg, 1);
			break;
		case OPT_UID_SLOTS:
			setenv("SBX_UID_SLOTS", optarg, 1);
			break;
		case 'h':
			fputs(usage, stdout);
			rc = 0;
			goto out;
		default:
			if (optopt && optopt < 256)
				fprintf(stderr,
					"sbx run: bad option '-%c' (see sbx "
					"run --help)\n",
					optopt);
			else
				fprintf(stderr,
					"sbx run: bad option '%s' (see sbx run "
					"--help)\n",
					argv[optind - 1]);
			r = -1;
			break;
		}
		if (r)
			goto out;
	}
	if (optind >= argc) {
		bad("%s", "no command given (sbx run [options] -- CMD)");
		goto out;
	}
	sandbox_spec_set_argv(&spec, argv + optind);
	spec.stdin_fd = stdin_fd;
	if (sandbox_host_init(err, sizeof(err))) {
		fprintf(stderr, "sbx run: %s\n", err);
		rc = EXIT_SANDBOX;
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	sandbox_run(&spec, pass_output, NULL, &res);
	if (res.status == SANDBOX_ERROR)
		fprintf(stderr, "sbx run: %s\n", res.error);
	else if (res.status == SANDBOX_TIME_LIMIT ||
		 res.status == SANDBOX_MEMORY_LIMIT ||
		 res.status == SANDBOX_OUTPUT_LIMIT)
		fprintf(stderr, "sbx run: %s\n",
			sandbox_status_name(res.status));
	if (json && write_json(json, &res) < 0 && res.status != SANDBOX_ERROR) {
		rc = EXIT_SANDBOX;
	} else if (res.status == SANDBOX_ERROR) {
		rc = EXIT_SANDBOX;
	} else if (res.signal) {
		rc = 128 + res.signal;
	} else {
		rc = res.exit_code;
	}
	sandbox_result_release(&res);
	sandbox_host_release();
out:
	fd_close(&stdin_fd);
	sandbox_spec_release(&spec);
	return rc;
}
