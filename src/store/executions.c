/*
 * The execution store: the tables agents, pools, executions and
 * rllm_results in the server's SQLite database, beside the trace store's
 * tables, through one connection of its own behind one mutex. JSON values
 * are kept as compact text; a row is turned back into the API's JSON
 * here, so callers never see SQL. Transitions are guarded by the row's
 * state in the UPDATE itself (WHERE status IN ...), which is what keeps a
 * terminal row from ever changing.
 */
#include "store/executions.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "base/banned.h"

struct exec_store {
	sqlite3 *db;
	pthread_mutex_t lock;
	uint64_t rllm_duplicates;
};

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS executions ("
	" id TEXT PRIMARY KEY,"
	" idem_key TEXT UNIQUE,"
	" agent TEXT NOT NULL,"
	" entry TEXT NOT NULL,"
	" pool TEXT NOT NULL,"
	" task TEXT NOT NULL,"
	" agent_config TEXT NOT NULL,"
	" labels TEXT NOT NULL,"
	" timeout_ms INTEGER NOT NULL,"
	" retries INTEGER NOT NULL,"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" status TEXT NOT NULL,"
	" session_uid TEXT,"
	" sandbox TEXT,"
	" result TEXT,"
	" error_code TEXT,"
	" created_at REAL NOT NULL,"
	" started_at REAL,"
	" finished_at REAL,"
	" seq INTEGER);"
	"CREATE INDEX IF NOT EXISTS executions_status"
	" ON executions(status, created_at);"
	"CREATE INDEX IF NOT EXISTS executions_seq ON executions(seq);"
	"CREATE TABLE IF NOT EXISTS agents ("
	" id TEXT PRIMARY KEY,"
	" digest TEXT UNIQUE NOT NULL,"
	" name TEXT,"
	" size INTEGER NOT NULL,"
	" requirements TEXT,"
	" created_at REAL NOT NULL);"
	"CREATE TABLE IF NOT EXISTS pools ("
	" name TEXT PRIMARY KEY,"
	" def TEXT NOT NULL,"
	" created_at REAL NOT NULL);"
	"CREATE TABLE IF NOT EXISTS rllm_results ("
	" execution_id TEXT PRIMARY KEY,"
	" result TEXT NOT NULL,"
	" created_at REAL NOT NULL);";

#define EXEC_COLS                                                            \
	"SELECT id, status, agent, entry, pool, labels, task, agent_config," \
	" timeout_ms, retries, attempts, session_uid, sandbox, created_at,"  \
	" started_at, finished_at, seq, error_code, result FROM executions"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "cannot open 'path': why" into err. */
static void set_err(char *err, size_t n, const char *path, const char *why)
{
	if (err && n)
		snprintf(err, n, "cannot open '%s': %s", path, why);
}

struct exec_store *exec_store_open(const char *path, char *err, size_t errlen)
{
	struct exec_store *s;
	sqlite3 *db = NULL;
	int fd, rc;

	/* The file holds prompts and results: the owner's alone. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		set_err(err, errlen, path, strerror(errno));
		return NULL;
	}
	close(fd);
	rc = sqlite3_open_v2(path, &db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, 5000);
		rc = sqlite3_exec(db,
				  "PRAGMA journal_mode=WAL;"
				  "PRAGMA synchronous=NORMAL;"
				  "BEGIN IMMEDIATE;",
				  NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK) {
		set_err(err, errlen, path,
			db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return NULL;
	}
	s = xcalloc(1, sizeof(*s));
	s->db = db;
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

void exec_store_close(struct exec_store *s)
{
	if (!s)
		return;
	sqlite3_close(s->db);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- helpers (called with the lock held) ---- */

static sqlite3_stmt *prep(struct exec_store *s, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_err("execution store: cannot prepare a statement: %s",
			sqlite3_errmsg(s->db));
		return NULL;
	}
	return st;
}

static void bind_str(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i);
}

static void bind_json(sqlite3_stmt *st, int i, const json_t *v)
{
	char *text;

	if (!v) {
		sqlite3_bind_null(st, i);
		return;
	}
	text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (text)
		sqlite3_bind_text(st, i, text, -1, free);
	else
		sqlite3_bind_null(st, i);
}

static json_t *col_json(sqlite3_stmt *st, int i)
{
	const char *t = (const char *)sqlite3_column_text(st, i);
	json_t *v;

	if (!t)
		return json_null();
	v = json_loads(t, JSON_DECODE_ANY, NULL);
	return v ? v : json_null();
}

static json_t *col_str(sqlite3_stmt *st, int i)
{
	const char *t = (const char *)sqlite3_column_text(st, i);

	return t ? json_string(t) : json_null();
}

static json_t *col_real(sqlite3_stmt *st, int i)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return json_null();
	return json_real(sqlite3_column_double(st, i));
}

/* Runs a statement that returns no rows; its changes, or -EIO. */
static int step_done(struct exec_store *s, sqlite3_stmt *st)
{
	int rc;

	if (!st)
		return -EIO;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		log_err("execution store: %s", sqlite3_errmsg(s->db));
		return -EIO;
	}
	return sqlite3_changes(s->db);
}

static json_t *exec_row(sqlite3_stmt *st, bool brief)
{
	json_t *o = json_object();

	json_object_set_new(o, "id", col_str(st, 0));
	json_object_set_new(o, "status", col_str(st, 1));
	json_object_set_new(o, "agent", col_str(st, 2));
	json_object_set_new(o, "entry", col_str(st, 3));
	json_object_set_new(o, "pool", col_json(st, 4));
	json_object_set_new(o, "labels", col_json(st, 5));
	if (!brief) {
		json_object_set_new(o, "task", col_json(st, 6));
		json_object_set_new(o, "agent_config", col_json(st, 7));
	}
	json_object_set_new(
		o, "timeout_s",
		json_real((double)sqlite3_column_int64(st, 8) / 1000.0));
	json_object_set_new(o, "retries",
			    json_integer(sqlite3_column_int64(st, 9)));
	json_object_set_new(o, "attempts",
			    json_integer(sqlite3_column_int64(st, 10)));
	json_object_set_new(o, "session_uid", col_str(st, 11));
	json_object_set_new(o, "sandbox", col_str(st, 12));
	json_object_set_new(o, "created_at", col_real(st, 13));
	json_object_set_new(o, "started_at", col_real(st, 14));
	json_object_set_new(o, "finished_at", col_real(st, 15));
	json_object_set_new(
		o, "seq",
		sqlite3_column_type(st, 16) == SQLITE_NULL
			? json_null()
			: json_integer(sqlite3_column_int64(st, 16)));
	json_object_set_new(o, "error_code", col_str(st, 17));
	json_object_set_new(o, "result", col_json(st, 18));
	return o;
}

/* ---- executions ---- */

int exec_store_add(struct exec_store *s, const struct exec_new *e,
		   char *existing, size_t n)
{
	sqlite3_stmt *st;
	int r = -EIO, rc;

	pthread_mutex_lock(&s->lock);
	if (e->idem_key) {
		st = prep(s, "SELECT id FROM executions WHERE idem_key = ?");
		if (!st)
			goto out;
		bind_str(st, 1, e->idem_key);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			str_copy(existing, n,
				 (const char *)sqlite3_column_text(st, 0));
			sqlite3_finalize(st);
			r = 1;
			goto out;
		}
		sqlite3_finalize(st);
	}
	st = prep(s, "INSERT INTO executions (id, idem_key, agent, entry,"
		     " pool, task, agent_config, labels, timeout_ms, retries,"
		     " status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,"
		     "'queued',?)");
	if (!st)
		goto out;
	bind_str(st, 1, e->id);
	bind_str(st, 2, e->idem_key);
	bind_str(st, 3, e->agent);
	bind_str(st, 4, e->entry);
	bind_json(st, 5, e->pool);
	bind_json(st, 6, e->task);
	bind_json(st, 7, e->agent_config);
	bind_json(st, 8, e->labels);
	sqlite3_bind_int64(st, 9, (sqlite3_int64)e->timeout_ms);
	sqlite3_bind_int64(st, 10, e->retries);
	sqlite3_bind_double(st, 11, now_s());
	r = step_done(s, st) < 0 ? -EIO : 0;
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

int exec_store_start(struct exec_store *s, const char *id, const char *sandbox,
		     const char *session_uid)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "UPDATE executions SET status = 'running',"
		     " attempts = attempts + 1, sandbox = ?, session_uid = ?,"
		     " started_at = ? WHERE id = ? AND status = 'queued'");
	if (st) {
		bind_str(st, 1, sandbox);
		bind_str(st, 2, session_uid);
		sqlite3_bind_double(st, 3, now_s());
		bind_str(st, 4, id);
	}
	r = step_done(s, st);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : r > 0;
}

int exec_store_finish(struct exec_store *s, const char *id, const char *status,
		      json_t *result, const char *code)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "UPDATE executions SET status = ?, result = ?,"
		     " error_code = ?, finished_at = ?,"
		     " seq = (SELECT coalesce(max(seq), 0) + 1 FROM executions)"
		     " WHERE id = ? AND status IN ('queued', 'running')");
	if (st) {
		bind_str(st, 1, status);
		bind_json(st, 2, result);
		bind_str(st, 3, code);
		sqlite3_bind_double(st, 4, now_s());
		bind_str(st, 5, id);
	}
	r = step_done(s, st);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : r > 0;
}

int exec_store_requeue(struct exec_store *s, const char *id)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "UPDATE executions SET status = 'queued',"
		     " retries = retries - 1 WHERE id = ? AND"
		     " status = 'running' AND retries > 0");
	if (st)
		bind_str(st, 1, id);
	r = step_done(s, st);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : r > 0;
}

json_t *exec_store_get(struct exec_store *s, const char *id)
{
	sqlite3_stmt *st;
	json_t *o = NULL;

	pthread_mutex_lock(&s->lock);
	st = prep(s, EXEC_COLS " WHERE id = ?");
	if (st) {
		bind_str(st, 1, id);
		if (sqlite3_step(st) == SQLITE_ROW)
			o = exec_row(st, false);
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return o;
}

json_t *exec_store_list(struct exec_store *s, const struct exec_query *q)
{
	char sql[1024];
	sqlite3_stmt *st;
	json_t *arr = NULL;
	char *path = NULL;
	int i = 1, rc;

	snprintf(sql, sizeof(sql), "%s WHERE 1%s%s%s ORDER BY %s LIMIT ?",
		 EXEC_COLS,
		 !q->status ? ""
		 : !strcmp(q->status, "done")
			 ? " AND status IN ('completed','failed','cancelled',"
			   "'lost')"
			 : " AND status = ?",
		 q->label_key ? " AND json_extract(labels, ?) = ?" : "",
		 q->by_seq ? " AND seq > ?" : "",
		 q->by_seq ? "seq" : "created_at, rowid");
	pthread_mutex_lock(&s->lock);
	st = prep(s, sql);
	if (!st)
		goto out;
	if (q->status && strcmp(q->status, "done"))
		bind_str(st, i++, q->status);
	if (q->label_key) {
		/* A quoted JSON path, so that any key is one member. */
		json_t *k = json_string(q->label_key);
		char *quoted = json_dumps(k, JSON_ENCODE_ANY);

		json_decref(k);
		path = xstrfmt("$.%s", quoted ? quoted : "\"\"");
		free(quoted);
		bind_str(st, i++, path);
		bind_str(st, i++, q->label_value);
	}
	if (q->by_seq)
		sqlite3_bind_int64(st, i++, q->done_after);
	sqlite3_bind_int64(st, i, q->limit ? q->limit : 1000);
	arr = json_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		json_array_append_new(arr, exec_row(st, q->brief));
	if (rc != SQLITE_DONE) {
		log_err("execution store: %s", sqlite3_errmsg(s->db));
		json_decref(arr);
		arr = NULL;
	}
	sqlite3_finalize(st);
out:
	pthread_mutex_unlock(&s->lock);
	free(path);
	return arr;
}

int64_t exec_store_last_seq(struct exec_store *s)
{
	sqlite3_stmt *st;
	int64_t v = 0;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "SELECT coalesce(max(seq), 0) FROM executions");
	if (st) {
		if (sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return v;
}

int exec_store_recover(struct exec_store *s, const char *why,
		       void (*fn)(void *arg, json_t *exec), void *arg,
		       unsigned *requeued)
{
	sqlite3_stmt *st;
	json_t *result, *all = NULL;
	int lost, r;
	size_t i;

	*requeued = 0;
	result = json_pack("{s:b,s:n,s:s,s:n,s:s,s:f}", "success", 0,
			   "trajectories", "session_uid", "", "reward", "error",
			   why, "elapsed", 0.0);
	pthread_mutex_lock(&s->lock);
	st = prep(s, "UPDATE executions SET status = 'queued',"
		     " retries = retries - 1 WHERE status = 'running' AND"
		     " retries > 0");
	r = step_done(s, st);
	if (r >= 0)
		*requeued = (unsigned)r;
	/* One row at a time, so that each lost row gets its own seq. */
	lost = 0;
	for (;;) {
		sqlite3_stmt *one = prep(
			s, "UPDATE executions SET status = 'lost', result = ?,"
			   " error_code = 'lost', finished_at = ?,"
			   " seq = (SELECT coalesce(max(seq), 0) + 1 FROM"
			   " executions) WHERE rowid = (SELECT rowid FROM"
			   " executions WHERE status = 'running' LIMIT 1)");

		if (one) {
			bind_json(one, 1, result);
			sqlite3_bind_double(one, 2, now_s());
		}
		r = step_done(s, one);
		if (r < 0) {
			lost = -EIO;
			break;
		}
		if (!r)
			break;
		lost++;
	}
	if (lost >= 0) {
		st = prep(
			s, EXEC_COLS
			" WHERE status = 'queued' ORDER BY created_at, rowid");
		if (st) {
			all = json_array();
			while (sqlite3_step(st) == SQLITE_ROW)
				json_array_append_new(all, exec_row(st, false));
			sqlite3_finalize(st);
		}
	}
	pthread_mutex_unlock(&s->lock);
	json_decref(result);
	for (i = 0; all && i < json_array_size(all); i++)
		fn(arg, json_array_get(all, i));
	json_decref(all);
	return lost;
}

json_t *exec_store_counts(struct exec_store *s)
{
	sqlite3_stmt *st;
	json_t *o = json_object();

	pthread_mutex_lock(&s->lock);
	st = prep(s, "SELECT status, count(*) FROM executions GROUP BY status");
	if (st) {
		while (sqlite3_step(st) == SQLITE_ROW)
			json_object_set_new(
				o, (const char *)sqlite3_column_text(st, 0),
				json_integer(sqlite3_column_int64(st, 1)));
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return o;
}

/* ---- agents ---- */

static json_t *agent_row(sqlite3_stmt *st)
{
	return json_pack("{s:o,s:o,s:o,s:I,s:o,s:o}", "id", col_str(st, 0),
			 "digest", col_str(st, 1), "name", col_str(st, 2),
			 "size", (json_int_t)sqlite3_column_int64(st, 3),
			 "requirements", col_json(st, 4), "created_at",
			 col_real(st, 5));
}

int exec_store_agent_add(struct exec_store *s, const char *id,
			 const char *digest, const char *name, uint64_t size,
			 json_t *requirements)
{
	sqlite3_stmt *st;
	int r = -EIO, rc;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "INSERT INTO agents (id, digest, name, size,"
		     " requirements, created_at) VALUES (?,?,?,?,?,?)");
	if (st) {
		bind_str(st, 1, id);
		bind_str(st, 2, digest);
		bind_str(st, 3, name);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)size);
		bind_json(st, 5, requirements);
		sqlite3_bind_double(st, 6, now_s());
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc == SQLITE_DONE)
			r = 0;
		else if (rc == SQLITE_CONSTRAINT)
			r = -EEXIST;
		else
			log_err("execution store: %s", sqlite3_errmsg(s->db));
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

json_t *exec_store_agent_get(struct exec_store *s, const char *id_or_digest)
{
	sqlite3_stmt *st;
	json_t *o = NULL;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "SELECT id, digest, name, size, requirements, created_at"
		     " FROM agents WHERE id = ?1 OR digest = ?1");
	if (st) {
		bind_str(st, 1, id_or_digest);
		if (sqlite3_step(st) == SQLITE_ROW)
			o = agent_row(st);
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return o;
}

json_t *exec_store_agent_list(struct exec_store *s)
{
	sqlite3_stmt *st;
	json_t *arr = json_array();

	pthread_mutex_lock(&s->lock);
	st = prep(s, "SELECT id, digest, name, size, requirements, created_at"
		     " FROM agents ORDER BY created_at");
	if (st) {
		while (sqlite3_step(st) == SQLITE_ROW)
			json_array_append_new(arr, agent_row(st));
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return arr;
}

int exec_store_agent_delete(struct exec_store *s, const char *id)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "DELETE FROM agents WHERE id = ?");
	if (st)
		bind_str(st, 1, id);
	r = step_done(s, st);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : r > 0;
}

/* ---- pools ---- */

int exec_store_pool_put(struct exec_store *s, const char *name, json_t *def)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "INSERT OR REPLACE INTO pools (name, def, created_at)"
		     " VALUES (?,?,?)");
	if (st) {
		bind_str(st, 1, name);
		bind_json(st, 2, def);
		sqlite3_bind_double(st, 3, now_s());
	}
	r = step_done(s, st);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : 0;
}

json_t *exec_store_pool_list(struct exec_store *s)
{
	sqlite3_stmt *st;
	json_t *arr = json_array();

	pthread_mutex_lock(&s->lock);
	st = prep(s, "SELECT def FROM pools ORDER BY created_at");
	if (st) {
		while (sqlite3_step(st) == SQLITE_ROW)
			json_array_append_new(arr, col_json(st, 0));
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return arr;
}

int exec_store_pool_delete(struct exec_store *s, const char *name)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "DELETE FROM pools WHERE name = ?");
	if (st)
		bind_str(st, 1, name);
	r = step_done(s, st);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : r > 0;
}

/* ---- rLLM's pushed results ---- */

int exec_store_rllm_put(struct exec_store *s, const char *id, json_t *result)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "INSERT OR IGNORE INTO rllm_results (execution_id,"
		     " result, created_at) VALUES (?,?,?)");
	if (st) {
		bind_str(st, 1, id);
		bind_json(st, 2, result);
		sqlite3_bind_double(st, 3, now_s());
	}
	r = step_done(s, st);
	if (r == 0)
		s->rllm_duplicates++;
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : r > 0;
}

json_t *exec_store_rllm_get(struct exec_store *s, const char *id)
{
	sqlite3_stmt *st;
	json_t *o = NULL;

	pthread_mutex_lock(&s->lock);
	st = prep(s, "SELECT result FROM rllm_results WHERE execution_id = ?");
	if (st) {
		bind_str(st, 1, id);
		if (sqlite3_step(st) == SQLITE_ROW)
			o = col_json(st, 0);
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return o;
}

uint64_t exec_store_rllm_duplicates(struct exec_store *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = s->rllm_duplicates;
	pthread_mutex_unlock(&s->lock);
	return n;
}
