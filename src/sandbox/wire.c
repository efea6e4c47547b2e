/*
 * The spec as init receives it: a flat, length-prefixed encoding written
 * into a memfd by the host side. Only what init needs travels: the command,
 * its environment, the filesystem view, the files to place and fetch, and
 * the limits init applies itself.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

#define WIRE_MAGIC 0x53425831u /* "SBX1" */
#define WIRE_MAX_ITEMS 65536u

static void put_u64(struct buf *b, uint64_t v)
{
	buf_add(b, &v, sizeof(v));
}

static void put_bytes(struct buf *b, const void *p, size_t n)
{
	put_u64(b, n);
	buf_add(b, p, n);
}

static void put_str(struct buf *b, const char *s)
{
	put_bytes(b, s ? s : "", s ? strlen(s) : 0);
	buf_add(b, s ? "\1" : "\0", 1);
}

static void put_strv(struct buf *b, char **v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	put_u64(b, n);
	for (size_t i = 0; i < n; i++)
		put_str(b, v[i]);
}

void wire_encode_spec(struct buf *out, const struct sandbox_spec *spec,
		      const struct init_mode *mode)
{
	const struct sandbox_limits *l = &spec->limits;
	size_t i;

	put_u64(out, WIRE_MAGIC);
	put_u64(out, (mode->userns ? 1u : 0u) | (mode->no_reuse ? 2u : 0u));
	put_u64(out, mode->uid_base);
	put_bytes(out, mode->seccomp.data, mode->seccomp.len);
	put_u64(out, spec->serve);
	put_u64(out, spec->standby);
	put_u64(out, spec->zygote);
	if (spec->serve || (spec->standby && !spec->nsteps)) {
		put_u64(out, 0);
	} else if (spec->nsteps == 0) {
		put_u64(out, 1);
		put_strv(out, spec->argv);
		put_u64(out, 0);
		put_u64(out, 0);
		put_u64(out, l->cpu_ms);
		put_u64(out, 0);
	} else {
		put_u64(out, spec->nsteps);
		for (i = 0; i < spec->nsteps; i++) {
			const struct sandbox_step *st = &spec->steps[i];

			put_strv(out, st->argv);
			put_u64(out, st->stdin_data != NULL);
			if (st->stdin_data)
				put_bytes(out, st->stdin_data, st->stdin_len);
			put_u64(out, st->wall_ms);
			put_u64(out, st->cpu_ms);
			put_u64(out, st->stop_unless_ok);
		}
	}
	put_strv(out, spec->env);
	put_str(out, spec->cwd);
	put_u64(out, l->wall_ms);
	put_u64(out, l->cpu_ms);
	put_u64(out, l->memory_bytes);
	put_u64(out, l->pids);
	put_u64(out, l->fsize_bytes);
	put_u64(out, l->nofile);
	put_u64(out, l->output_bytes);
	put_u64(out, l->disk_bytes);
	put_u64(out, spec->nbinds);
	for (i = 0; i < spec->nbinds; i++) {
		put_str(out, spec->binds[i].src);
		put_str(out, spec->binds[i].dst);
		put_u64(out, spec->binds[i].writable |
				     (uint64_t)spec->binds[i].device << 1);
	}
	put_u64(out, spec->nfiles);
	for (i = 0; i < spec->nfiles; i++) {
		put_str(out, spec->files[i].path);
		put_bytes(out, spec->files[i].data, spec->files[i].len);
		put_u64(out, spec->files[i].executable);
	}
	put_u64(out, spec->nfetch);
	for (i = 0; i < spec->nfetch; i++)
		put_str(out, spec->fetch[i]);
}

struct reader {
	const char *p;
	size_t left;
	int err;
};

static uint64_t get_u64(struct reader *r)
{
	uint64_t v = 0;

	if (r->err || r->left < sizeof(v)) {
		r->err = -EINVAL;
		return 0;
	}
	memcpy(&v, r->p, sizeof(v));
	r->p += sizeof(v);
	r->left -= sizeof(v);
	return v;
}

/* Returns a malloc'd copy of the next byte string, NUL-terminated. */
static char *get_bytes(struct reader *r, size_t *len)
{
	uint64_t n = get_u64(r);
	char *s;

	if (r->err || n > r->left) {
		r->err = -EINVAL;
		return NULL;
	}
	s = xmalloc(n + 1);
	memcpy(s, r->p, n);
	s[n] = '\0';
	r->p += n;
	r->left -= n;
	if (len)
		*len = n;
	return s;
}

static char *get_str(struct reader *r)
{
	size_t n;
	char *s = get_bytes(r, &n);

	if (!s)
		return NULL;
	if (r->left < 1 || memchr(s, '\0', n)) {
		r->err = -EINVAL;
		free(s);
		return NULL;
	}
	r->left--;
	if (*r->p++ == '\0') {
		free(s);
		return NULL;
	}
	return s;
}

static uint64_t get_count(struct reader *r)
{
	uint64_t n = get_u64(r);

	if (n > WIRE_MAX_ITEMS || n > r->left) {
		r->err = -EINVAL;
		return 0;
	}
	return n;
}

static char **get_strv(struct reader *r)
{
	uint64_t n = get_count(r);
	char **v;

	if (r->err)
		return NULL;
	v = xcalloc(n + 1, sizeof(*v));
	for (uint64_t i = 0; i < n && !r->err; i++) {
		v[i] = get_str(r);
		if (!v[i])
			r->err = -EINVAL;
	}
	return v;
}

int wire_decode_spec(const char *data, size_t len, struct sandbox_spec *spec,
		     struct init_mode *mode)
{
	struct reader r = {.p = data, .left = len};
	struct sandbox_limits *l = &spec->limits;
	uint64_t n, i, flags;

	sandbox_spec_init(spec);
	if (get_u64(&r) != WIRE_MAGIC)
		return -EINVAL;
	{
		uint64_t bits = get_u64(&r);

		mode->userns = (bits & 1) != 0;
		mode->no_reuse = (bits & 2) != 0;
	}
	mode->uid_base = (uint32_t)get_u64(&r);
	mode->seccomp.data = get_bytes(&r, &mode->seccomp.len);
	spec->serve = get_u64(&r) != 0;
	spec->standby = get_u64(&r) != 0;
	spec->zygote = get_u64(&r) != 0;
	n = get_count(&r);
	if (!r.err && n) {
		spec->steps = xcalloc(n, sizeof(*spec->steps));
		for (i = 0; i < n && !r.err; i++) {
			struct sandbox_step *st = &spec->steps[i];

			spec->nsteps++;
			st->argv = get_strv(&r);
			if (!r.err && (!st->argv || !st->argv[0]))
				r.err = -EINVAL;
			if (get_u64(&r))
				st->stdin_data = get_bytes(&r, &st->stdin_len);
			st->wall_ms = get_u64(&r);
			st->cpu_ms = get_u64(&r);
			st->stop_unless_ok = get_u64(&r) != 0;
		}
	}
	spec->env = get_strv(&r);
	spec->cwd = get_str(&r);
	l->wall_ms = get_u64(&r);
	l->cpu_ms = get_u64(&r);
	l->memory_bytes = get_u64(&r);
	l->pids = get_u64(&r);
	l->fsize_bytes = get_u64(&r);
	l->nofile = get_u64(&r);
	l->output_bytes = get_u64(&r);
	l->disk_bytes = get_u64(&r);
	n = get_count(&r);
	if (!r.err && n) {
		spec->binds = xcalloc(n, sizeof(*spec->binds));
		for (i = 0; i < n && !r.err; i++) {
			struct sandbox_bind *b = &spec->binds[i];

			spec->nbinds++;
			b->src = get_str(&r);
			b->dst = get_str(&r);
			flags = get_u64(&r);
			b->writable = flags & 1;
			b->device = (flags >> 1) & 1;
			if (!b->src || !b->dst)
				r.err = -EINVAL;
		}
	}
	n = get_count(&r);
	if (!r.err && n) {
		spec->files = xcalloc(n, sizeof(*spec->files));
		for (i = 0; i < n && !r.err; i++) {
			struct sandbox_file *f = &spec->files[i];

			spec->nfiles++;
			f->path = get_str(&r);
			f->data = get_bytes(&r, &f->len);
			f->executable = get_u64(&r) != 0;
			if (!f->path || !f->data)
				r.err = -EINVAL;
		}
	}
	n = get_count(&r);
	if (!r.err && n) {
		spec->fetch = xcalloc(n, sizeof(*spec->fetch));
		for (i = 0; i < n && !r.err; i++) {
			spec->fetch[spec->nfetch++] = get_str(&r);
			if (!spec->fetch[i])
				r.err = -EINVAL;
		}
	}
	if (!r.err &&
	    ((spec->nsteps == 0 && !spec->serve && !spec->standby) || r.left))
		r.err = -EINVAL;
	if (!r.err && mode->seccomp.len % 8)
		r.err = -EINVAL;
	if (r.err) {
		sandbox_spec_release(spec);
		seccomp_prog_release(&mode->seccomp);
		return r.err;
	}
	return 0;
}
