/*
 * Agents: directories of agent code uploaded as tar and stored by digest
 * under the state directory (<state>/agents/<sha256>), to be bound
 * read-only at /app/agent into the sandboxes that run them.
 *
 *   POST   /v1/agents[?name=N&requirements=FILE]   body: a tar archive
 *   GET    /v1/agents                               list
 *   GET    /v1/agents/{id}                          one (id or digest)
 *   DELETE /v1/agents/{id}
 *
 * The digest is the SHA-256 of the archive (and the requirements file
 * named), so uploading the same directory again gives the same agent at
 * once. A new archive is unpacked by tar inside a one-shot sandbox whose
 * only writable host path is a fresh staging directory, so a hostile
 * archive (absolute names, "..", links out) can write nowhere else; with
 * a requirements file, pip installs it offline (--no-index, wheels found
 * in the agent's own directory) into the directory in the same sandbox.
 * The host then makes every file root's and read-only to others and
 * moves the directory into place.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/util.h"
#include "server/executions.h"
#include "server/internal.h"
#include "server/request.h"
#include "store/executions.h"
#include "base/banned.h"

#define OUT_KEEP 4096

char *agents_path(const char *digest)
{
	return xstrfmt("%s/%s", rollouts.agents_dir, digest);
}

struct upload {
	char digest[65];
	char id[32];
	char name[128];
	char req_file[256];
	char *staging;
	struct buf err; /* the tail of what tar and pip said */
};

static void remove_tree(const char *dir);

static void upload_free(void *arg)
{
	struct upload *u = arg;

	/* Gone once moved into place; else whatever the sandbox left. */
	if (u->staging)
		remove_tree(u->staging);
	free(u->staging);
	buf_release(&u->err);
	free(u);
}

static void on_output(void *ctx, size_t step, int stream, const char *data,
		      size_t len)
{
	struct upload *u = ctx;

	if (stream != 2 && stream != 1)
		return;
	buf_add(&u->err, data, len);
	if (u->err.len > OUT_KEEP) {
		size_t drop = u->err.len - OUT_KEEP;

		memmove(u->err.data, u->err.data + drop, OUT_KEEP);
		u->err.len = OUT_KEEP;
		u->err.data[u->err.len] = '\0';
	}
}

static uint64_t tree_size;

/* Makes what the sandbox user made root's, readable by all, writable by
 * none but root; counts the bytes. */
static int fix_entry(const char *path, const struct stat *st, int flag,
		     struct FTW *ftw)
{
	if (lchown(path, 0, 0) < 0)
		return -1;
	if (flag == FTW_SL)
		return 0;
	if (flag == FTW_D || flag == FTW_DP)
		return chmod(path, 0755);
	if (S_ISREG(st->st_mode)) {
		tree_size += (uint64_t)st->st_size;
		return chmod(path, (st->st_mode & 0100) ? 0755 : 0644);
	}
	/* Devices, fifos, sockets: nothing an agent needs. */
	return unlink(path);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	return remove(path);
}

static void remove_tree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void upload_done(struct request *req, struct sandbox_result *res,
			void *ctx)
{
	struct upload *u = ctx;
	char *final = NULL, *tail, *tree = NULL;
	json_t *reqs = NULL, *a;
	size_t i;
	int r;

	tail = u->err.data ? u->err.data : "";
	for (i = 0; i < res->nsteps; i++)
		if (!res->steps[i].ran || res->steps[i].status != SANDBOX_OK)
			break;
	if (res->status == SANDBOX_ERROR && i == res->nsteps)
		i = 0;
	if (i < res->nsteps || res->status != SANDBOX_OK) {
		if (i == 0)
			request_error(
				req, 422, "bad_archive",
				"the body is not a tar archive that "
				"unpacks (%s): %s",
				res->error[0]
					? res->error
					: sandbox_status_name(
						  res->steps
							  ? res->steps[0].status
							  : res->status),
				tail);
		else
			request_error(req, 422, "requirements_failed",
				      "installing '%s' failed: pip installs "
				      "offline here (no index: put the wheels "
				      "it needs in the agent's directory): "
				      "%s",
				      u->req_file, tail);
		remove_tree(u->staging);
		return;
	}
	tree_size = 0;
	tree = xstrfmt("%s/a", u->staging);
	if (nftw(tree, fix_entry, 16, FTW_PHYS) < 0) {
		request_error(req, 500, "store_error",
			      "cannot settle the agent's files: %s",
			      strerror(errno));
		free(tree);
		return;
	}
	final = agents_path(u->digest);
	if (rename(tree, final) < 0 && errno != EEXIST && errno != ENOTEMPTY) {
		request_error(req, 500, "store_error",
			      "cannot store the agent: %s", strerror(errno));
		free(final);
		free(tree);
		return;
	}
	free(tree);
	if (u->req_file[0])
		reqs = json_string(u->req_file);
	r = exec_store_agent_add(rollouts.store, u->id, u->digest,
				 u->name[0] ? u->name : NULL, tree_size, reqs);
	json_decref(reqs);
	free(final);
	a = exec_store_agent_get(rollouts.store, u->digest);
	if (r < 0 && r != -EEXIST) {
		json_decref(a);
		request_error(req, 500, "store_error",
			      "cannot record the agent");
		return;
	}
	log_info("agent %s: stored (%llu bytes)", u->id,
		 (unsigned long long)tree_size);
	request_reply(req, 201, a);
}

static bool name_ok(const char *s, size_t max, bool path)
{
	size_t n = strlen(s);

	if (!n || n >= max || s[0] == '/' || s[0] == '-')
		return false;
	if (path && (strstr(s, "..") || s[n - 1] == '/'))
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f ||
		    (!path && *s == '/'))
			return false;
	return true;
}

static void upload(struct request *req)
{
	const char *name = request_arg(req, "name");
	const char *reqf = request_arg(req, "requirements");
	const struct server_config *cfg = rollouts.cfg;
	struct sandbox_spec spec;
	struct sha256 h;
	struct upload *u;
	const char *body;
	json_t *existing;
	size_t len;
	/* Into a directory the sandbox user makes, so that tar may set
	 * its modes and times as the archive says. */
	char *argv_tar[] = {"sh", "-c",
			    "mkdir /app/stage/a && exec tar -x "
			    "--no-same-owner --no-same-permissions "
			    "-C /app/stage/a -f -",
			    NULL};

	body = request_body(req, &len);
	if (!len) {
		request_error(req, 400, "bad_request",
			      "the body must be a tar archive of the agent's "
			      "directory");
		return;
	}
	if (name && !name_ok(name, 128, false)) {
		request_error(req, 422, "unprocessable",
			      "'name' must be 1 to 127 printable bytes with "
			      "no '/'");
		return;
	}
	if (reqf && !name_ok(reqf, 256, true)) {
		request_error(req, 422, "unprocessable",
			      "'requirements' must be a relative path inside "
			      "the agent's directory");
		return;
	}
	sha256_init(&h);
	sha256_update(&h, body, len);
	if (reqf) {
		sha256_update(&h, "\0requirements=", 14);
		sha256_update(&h, reqf, strlen(reqf));
	}
	u = xcalloc(1, sizeof(*u));
	sha256_final_hex(&h, u->digest);
	snprintf(u->id, sizeof(u->id), "ag-%.16s", u->digest);
	str_copy(u->name, sizeof(u->name), name ? name : "");
	str_copy(u->req_file, sizeof(u->req_file), reqf ? reqf : "");
	existing = exec_store_agent_get(rollouts.store, u->digest);
	if (existing) {
		char *dir = agents_path(u->digest);
		bool there = access(dir, F_OK) == 0;

		free(dir);
		if (there) {
			request_reply(req, 200, existing);
			upload_free(u);
			return;
		}
		/* Its files are gone: unpack again. */
		exec_store_agent_delete(rollouts.store, u->id);
		json_decref(existing);
	}
	{
		unsigned char r[8];
		size_t i;
		struct buf b;

		if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
			memset(r, 0, sizeof(r));
		buf_init(&b);
		buf_addf(&b, "%s/.staging-", rollouts.agents_dir);
		for (i = 0; i < sizeof(r); i++)
			buf_addf(&b, "%02x", r[i]);
		u->staging = xstrdup(b.data);
		buf_release(&b);
	}
	/* The sandbox user writes here; only this directory is bound. */
	if (mkdir(u->staging, 0700) < 0 || chmod(u->staging, 0777) < 0) {
		request_error(req, 500, "store_error",
			      "cannot make a directory under '%s': %s",
			      rollouts.agents_dir, strerror(errno));
		upload_free(u);
		return;
	}
	sandbox_spec_init(&spec);
	spec.limits = cfg->limits;
	spec.limits.wall_ms = 300000;
	spec.limits.output_bytes = 1 << 20;
	if (spec.limits.fsize_bytes < cfg->max_body)
		spec.limits.fsize_bytes = cfg->max_body;
	sandbox_spec_add_bind(&spec, u->staging, "/app/stage", true);
	sandbox_spec_add_step(&spec, argv_tar, body, len)->stop_unless_ok =
		true;
	if (reqf) {
		char *req_path = xstrfmt("/app/stage/a/%s", reqf);
		char *argv_pip[] = {"python3",
				    "-m",
				    "pip",
				    "install",
				    "--no-index",
				    "--no-cache-dir",
				    "--disable-pip-version-check",
				    "--no-warn-script-location",
				    "--find-links",
				    "/app/stage/a",
				    "--target",
				    "/app/stage/a",
				    "-r",
				    req_path,
				    NULL};

		sandbox_spec_add_env(&spec, "HOME=/tmp");
		sandbox_spec_add_step(&spec, argv_pip, NULL, 0);
		free(req_path);
	}
	{
		static const struct run_hooks hooks = {.output = on_output,
						       .done = upload_done,
						       .free_ctx = upload_free};

		request_run(req, &spec, &hooks, u);
	}
	sandbox_spec_release(&spec);
}

void agents_route(struct request *req)
{
	const char *method = request_method(req);
	const char *path = request_path(req);
	const char *id;

	if (!rollouts.store) {
		request_error(req, 503, "unavailable",
			      "the execution store is not open");
		return;
	}
	if (!strcmp(path, "/v1/agents")) {
		if (!strcmp(method, "POST"))
			upload(req);
		else if (!strcmp(method, "GET"))
			request_reply(req, 200,
				      json_pack("{s:o}", "agents",
						exec_store_agent_list(
							rollouts.store)));
		else
			request_error(req, 405, "method_not_allowed",
				      "'%s' is not allowed on /v1/agents",
				      method);
		return;
	}
	id = path + strlen("/v1/agents/");
	if (!*id || strchr(id, '/')) {
		request_error(req, 404, "not_found", "no such route");
		return;
	}
	if (!strcmp(method, "GET")) {
		json_t *a = exec_store_agent_get(rollouts.store, id);

		if (a)
			request_reply(req, 200, a);
		else
			request_error(req, 404, "not_found", "no agent '%.80s'",
				      id);
	} else if (!strcmp(method, "DELETE")) {
		json_t *a = exec_store_agent_get(rollouts.store, id);
		char *dir;

		if (!a) {
			request_error(req, 404, "not_found", "no agent '%.80s'",
				      id);
			return;
		}
		exec_store_agent_delete(
			rollouts.store,
			json_string_value(json_object_get(a, "id")));
		dir = agents_path(
			json_string_value(json_object_get(a, "digest")));
		remove_tree(dir);
		free(dir);
		request_reply(req, 200,
			      json_pack("{s:b,s:O}", "deleted", 1, "id",
					json_object_get(a, "id")));
		json_decref(a);
	} else {
		request_error(req, 405, "method_not_allowed",
			      "'%s' is not allowed on an agent", method);
	}
}
