/*
 * The trace store: the tables traces and trace_sessions in the server's
 * SQLite database, which other stores share (each creates only its own
 * tables). Two connections: a writer for traces_add() and
 * traces_delete(), and a reader for traces_each(), traces_get() and
 * traces_count(), each behind its own mutex with its prepared statements
 * cached, so that in WAL mode a long read never holds up a write. JSON
 * values are kept as compact text in key order; trace_sessions links a
 * trace to each of its session uids and to its session name, so that one
 * session filter matches either.
 */
#include "store/traces.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "base/banned.h"

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS traces ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" created_at REAL NOT NULL,"
	" sandbox TEXT,"
	" session_name TEXT,"
	" upstream TEXT,"
	" model TEXT,"
	" stream INTEGER NOT NULL DEFAULT 0,"
	" status INTEGER,"
	" latency_ms REAL,"
	" error TEXT,"
	" session_uids TEXT,"
	" metadata TEXT,"
	" labels TEXT,"
	" request TEXT,"
	" response TEXT,"
	" prompt_token_ids TEXT,"
	" completion_token_ids TEXT,"
	" logprobs TEXT,"
	" usage TEXT);"
	"CREATE TABLE IF NOT EXISTS trace_sessions ("
	" trace_id INTEGER NOT NULL REFERENCES traces(id) ON DELETE CASCADE,"
	" session TEXT NOT NULL,"
	" PRIMARY KEY (session, trace_id)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS traces_sandbox_id ON traces(sandbox, id);"
	"CREATE INDEX IF NOT EXISTS traces_created_at ON traces(created_at);"
	/* The cascade looks rows up by trace_id: without this index every
	 * deleted trace would scan the whole table. */
	"CREATE INDEX IF NOT EXISTS trace_sessions_trace_id"
	" ON trace_sessions(trace_id);";

/* What every read selects, in the order of enum col. */
#define SELECT_COLS                                                      \
	"SELECT id, created_at, sandbox, session_uids, session_name,"    \
	" metadata, labels, upstream, model, stream, request, response," \
	" prompt_token_ids, completion_token_ids, logprobs, usage,"      \
	" latency_ms, status, error FROM traces"

enum col {
	COL_ID,
	COL_CREATED_AT,
	COL_SANDBOX,
	COL_SESSION_UIDS,
	COL_SESSION_NAME,
	COL_METADATA,
	COL_LABELS,
	COL_UPSTREAM,
	COL_MODEL,
	COL_STREAM,
	COL_REQUEST,
	COL_RESPONSE,
	COL_PROMPT_TOKEN_IDS,
	COL_COMPLETION_TOKEN_IDS,
	COL_LOGPROBS,
	COL_USAGE,
	COL_LATENCY_MS,
	COL_STATUS,
	COL_ERROR,
};

static const char insert_sql[] =
	"INSERT INTO traces (created_at, sandbox, session_name, upstream,"
	" model, stream, status, latency_ms, error, session_uids, metadata,"
	" labels, request, response, prompt_token_ids, completion_token_ids,"
	" logprobs, usage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
	" ?, ?, ?, ?)";
/* Parameter 10 onwards: the JSON values, in this order. */
#define INSERT_FIRST_JSON 10
enum rec_json {
	J_SESSION_UIDS,
	J_METADATA,
	J_LABELS,
	J_REQUEST,
	J_RESPONSE,
	J_PROMPT_TOKEN_IDS,
	J_COMPLETION_TOKEN_IDS,
	J_LOGPROBS,
	J_USAGE,
	J_COUNT,
};

static const char insert_session_sql[] =
	"INSERT OR IGNORE INTO trace_sessions (trace_id, session)"
	" VALUES (?, ?)";

/* traces_each() keeps one statement per set of filters given. */
enum {
	EACH_SESSION = 1,
	EACH_SANDBOX = 2,
	EACH_SINCE = 4,
	EACH_AFTER = 8,
	EACH_VARIANTS = 16,
};

#define SESSION_IDS "SELECT trace_id FROM trace_sessions WHERE session = ?"

/* traces_delete(): by session, by sandbox, by both. */
static const char *const delete_sql[] = {
	"DELETE FROM traces WHERE id IN (" SESSION_IDS ")",
	"DELETE FROM traces WHERE sandbox = ?",
	"DELETE FROM traces WHERE id IN (" SESSION_IDS ") AND sandbox = ?",
};

struct traces {
	pthread_mutex_t wlock; /* guards wdb and its statements */
	sqlite3 *wdb;
	sqlite3_stmt *begin, *commit, *rollback, *insert, *insert_session;
	sqlite3_stmt *del[ARRAY_SIZE(delete_sql)];

	pthread_mutex_t rlock; /* guards rdb and its statements */
	sqlite3 *rdb;
	sqlite3_stmt *get, *count;
	sqlite3_stmt *each[EACH_VARIANTS];
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Creates the directories above path that are missing, mode 0700. */
static int make_parents(const char *path)
{
	char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	int ret = 0;

	if (!slash || slash == dir)
		goto out;
	*slash = '\0';
	for (char *p = dir + 1;; p++) {
		char c = *p;

		if (c != '/' && c != '\0')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			ret = -errno;
			goto out;
		}
		*p = c;
		if (!c)
			break;
	}
out:
	free(dir);
	return ret;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
				  NULL);
}

/* Opens one connection with the settings every one needs. */
static sqlite3 *open_conn(const char *path, const char *pragmas, char *err,
			  size_t errlen)
{
	sqlite3 *db = NULL;
	int rc;

	rc = sqlite3_open_v2(path, &db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc == SQLITE_OK) {
		/* Before anything that takes a lock, so that a database
		 * another process holds is waited for. */
		sqlite3_busy_timeout(db, 5000);
		rc = sqlite3_exec(db, pragmas, NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK) {
		set_err(err, errlen, "cannot open '%s': %s", path,
			db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

/* The journal mode is the database's, not the connection's: check that
 * WAL took (it cannot on some file systems). */
static bool is_wal(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	bool wal = false;

	if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) ==
		    SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(st, 0);

		wal = mode && !strcmp(mode, "wal");
	}
	sqlite3_finalize(st);
	return wal;
}

struct traces *traces_open(const char *path, char *err, size_t errlen)
{
	struct traces *t = NULL;
	sqlite3 *db;
	int r, fd;

	if (!path || !*path) {
		set_err(err, errlen, "no database path");
		return NULL;
	}
	r = make_parents(path);
	if (r < 0) {
		set_err(err, errlen, "cannot create the directory of '%s': %s",
			path, strerror(-r));
		return NULL;
	}
	/* Traces hold prompts: the file (and the -wal and -shm files
	 * SQLite gives its mode) is the owner's alone when we make it. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		set_err(err, errlen, "cannot open '%s': %s", path,
			strerror(errno));
		return NULL;
	}
	close(fd);
	t = xcalloc(1, sizeof(*t));
	pthread_mutex_init(&t->wlock, NULL);
	pthread_mutex_init(&t->rlock, NULL);

	t->wdb = open_conn(path,
			   "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
			   /* A WAL that a long read let grow is cut back to
			    * 64 MiB once checkpointed. */
			   "PRAGMA journal_size_limit=67108864;",
			   err, errlen);
	if (!t->wdb)
		goto fail;
	db = t->wdb;
	if (!is_wal(db)) {
		set_err(err, errlen, "cannot open '%s': %s", path,
			sqlite3_errcode(db) != SQLITE_OK
				? sqlite3_errmsg(db)
				: "the database cannot use WAL journaling");
		goto fail;
	}
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
		    SQLITE_OK ||
	    sqlite3_exec(db, schema_sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		set_err(err, errlen,
			"cannot create the trace tables in '%s': %s", path,
			sqlite3_errmsg(db));
		goto fail;
	}
	if (prepare(db, "BEGIN IMMEDIATE", &t->begin) != SQLITE_OK ||
	    prepare(db, "COMMIT", &t->commit) != SQLITE_OK ||
	    prepare(db, "ROLLBACK", &t->rollback) != SQLITE_OK ||
	    prepare(db, insert_sql, &t->insert) != SQLITE_OK ||
	    prepare(db, insert_session_sql, &t->insert_session) != SQLITE_OK)
		goto fail_prepare;
	for (size_t i = 0; i < ARRAY_SIZE(delete_sql); i++)
		if (prepare(db, delete_sql[i], &t->del[i]) != SQLITE_OK)
			goto fail_prepare;

	/* The reader never writes; query_only makes sure of it. */
	t->rdb =
		open_conn(path, "PRAGMA foreign_keys=ON; PRAGMA query_only=ON;",
			  err, errlen);
	if (!t->rdb)
		goto fail;
	db = t->rdb;
	if (prepare(db, SELECT_COLS " WHERE id = ?", &t->get) != SQLITE_OK ||
	    prepare(db, "SELECT count(*) FROM traces", &t->count) != SQLITE_OK)
		goto fail_prepare;
	return t;

fail_prepare:
	set_err(err, errlen, "cannot prepare the trace statements of '%s': %s",
		path, sqlite3_errmsg(db));
fail:
	if (t->wdb && !sqlite3_get_autocommit(t->wdb))
		sqlite3_exec(t->wdb, "ROLLBACK", NULL, NULL, NULL);
	traces_close(t);
	return NULL;
}

void traces_close(struct traces *t)
{
	if (!t)
		return;
	sqlite3_finalize(t->get);
	sqlite3_finalize(t->count);
	for (size_t i = 0; i < ARRAY_SIZE(t->each); i++)
		sqlite3_finalize(t->each[i]);
	sqlite3_close(t->rdb);

	sqlite3_finalize(t->begin);
	sqlite3_finalize(t->commit);
	sqlite3_finalize(t->rollback);
	sqlite3_finalize(t->insert);
	sqlite3_finalize(t->insert_session);
	for (size_t i = 0; i < ARRAY_SIZE(t->del); i++)
		sqlite3_finalize(t->del[i]);
	if (t->wdb)
		sqlite3_exec(t->wdb, "PRAGMA optimize", NULL, NULL, NULL);
	sqlite3_close(t->wdb);

	pthread_mutex_destroy(&t->wlock);
	pthread_mutex_destroy(&t->rlock);
	free(t);
}

/* Steps a statement that returns no rows and resets it. */
static int run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
	return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC)
		 : sqlite3_bind_null(st, i);
}

static int link_session(struct traces *t, int64_t id, const char *session)
{
	int rc;

	rc = sqlite3_bind_int64(t->insert_session, 1, id);
	if (rc == SQLITE_OK)
		rc = bind_text(t->insert_session, 2, session);
	if (rc == SQLITE_OK)
		rc = run(t->insert_session);
	sqlite3_clear_bindings(t->insert_session);
	return rc;
}

/* Inserts the row and its session links; wlock held, inside BEGIN. */
static int insert_locked(struct traces *t, const struct trace_rec *rec,
			 double created_at, char *const js[J_COUNT],
			 int64_t *id)
{
	sqlite3_stmt *st = t->insert;
	int rc = SQLITE_OK;
	size_t i;
	json_t *uid;

	rc |= sqlite3_bind_double(st, 1, created_at);
	rc |= bind_text(st, 2, rec->sandbox);
	rc |= bind_text(st, 3, rec->session_name);
	rc |= bind_text(st, 4, rec->upstream);
	rc |= bind_text(st, 5, rec->model);
	rc |= sqlite3_bind_int(st, 6, rec->stream);
	rc |= sqlite3_bind_int(st, 7, rec->status);
	rc |= sqlite3_bind_double(st, 8, rec->latency_ms);
	rc |= bind_text(st, 9, rec->error);
	for (i = 0; i < J_COUNT; i++)
		rc |= bind_text(st, INSERT_FIRST_JSON + (int)i, js[i]);
	if (rc == SQLITE_OK)
		rc = run(st);
	else
		rc = SQLITE_ERROR;
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_OK)
		return rc;
	*id = sqlite3_last_insert_rowid(t->wdb);

	json_array_foreach(rec->session_uids, i, uid)
	{
		if (!json_is_string(uid))
			continue;
		rc = link_session(t, *id, json_string_value(uid));
		if (rc != SQLITE_OK)
			return rc;
	}
	if (rec->session_name)
		rc = link_session(t, *id, rec->session_name);
	return rc;
}

static double now_unix(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Compact text in key order, or NULL for nothing or a JSON null. */
static int dump(json_t *v, char **out)
{
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	*out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	return *out ? 0 : -EINVAL;
}

int64_t traces_add(struct traces *t, const struct trace_rec *rec)
{
	json_t *const vals[J_COUNT] = {
		[J_SESSION_UIDS] = rec ? rec->session_uids : NULL,
		[J_METADATA] = rec ? rec->metadata : NULL,
		[J_LABELS] = rec ? rec->labels : NULL,
		[J_REQUEST] = rec ? rec->request : NULL,
		[J_RESPONSE] = rec ? rec->response : NULL,
		[J_PROMPT_TOKEN_IDS] = rec ? rec->prompt_token_ids : NULL,
		[J_COMPLETION_TOKEN_IDS] =
			rec ? rec->completion_token_ids : NULL,
		[J_LOGPROBS] = rec ? rec->logprobs : NULL,
		[J_USAGE] = rec ? rec->usage : NULL,
	};
	char *js[J_COUNT] = {NULL};
	char msg[256] = "";
	int64_t id = 0, ret = -EIO;
	int rc;

	if (!t || !rec)
		return -EINVAL;
	/* Serialised before the lock: the writer is held only for SQL. */
	for (size_t i = 0; i < J_COUNT; i++) {
		if (dump(vals[i], &js[i]) < 0) {
			log_warn("cannot store a trace of sandbox '%s': a JSON "
				 "value cannot be serialised",
				 rec->sandbox ? rec->sandbox : "(host)");
			ret = -EINVAL;
			goto out;
		}
	}

	pthread_mutex_lock(&t->wlock);
	rc = run(t->begin);
	if (rc == SQLITE_OK)
		rc = insert_locked(t, rec,
				   rec->created_at > 0 ? rec->created_at
						       : now_unix(),
				   js, &id);
	if (rc == SQLITE_OK)
		rc = run(t->commit);
	if (rc == SQLITE_OK) {
		ret = id;
	} else {
		str_copy(msg, sizeof(msg), sqlite3_errmsg(t->wdb));
		/* A failed COMMIT (a full disk) can leave the transaction
		 * open. */
		if (!sqlite3_get_autocommit(t->wdb))
			run(t->rollback);
	}
	pthread_mutex_unlock(&t->wlock);
	if (ret < 0)
		log_warn("cannot store a trace of sandbox '%s': %s",
			 rec->sandbox ? rec->sandbox : "(host)", msg);
out:
	for (size_t i = 0; i < J_COUNT; i++)
		free(js[i]);
	return ret;
}

int traces_add_many(struct traces *t, const struct trace_rec *const *recs,
		    size_t n, int64_t *ids)
{
	char *(*js)[J_COUNT] = xcalloc(n ? n : 1, sizeof(*js));
	char msg[256] = "";
	int rc = SQLITE_OK, ret = 0;
	size_t k, i;

	if (!t)
		return -EINVAL;
	/* Serialised before the lock: the writer is held only for SQL. */
	for (k = 0; k < n; k++) {
		const struct trace_rec *rec = recs[k];
		json_t *const vals[J_COUNT] = {
			[J_SESSION_UIDS] = rec->session_uids,
			[J_METADATA] = rec->metadata,
			[J_LABELS] = rec->labels,
			[J_REQUEST] = rec->request,
			[J_RESPONSE] = rec->response,
			[J_PROMPT_TOKEN_IDS] = rec->prompt_token_ids,
			[J_COMPLETION_TOKEN_IDS] = rec->completion_token_ids,
			[J_LOGPROBS] = rec->logprobs,
			[J_USAGE] = rec->usage,
		};

		ids[k] = 0;
		for (i = 0; i < J_COUNT; i++)
			if (dump(vals[i], &js[k][i]) < 0)
				ids[k] = -EINVAL;
	}
	pthread_mutex_lock(&t->wlock);
	rc = run(t->begin);
	for (k = 0; rc == SQLITE_OK && k < n; k++)
		if (ids[k] == 0)
			rc = insert_locked(t, recs[k],
					   recs[k]->created_at > 0
						   ? recs[k]->created_at
						   : now_unix(),
					   js[k], &ids[k]);
	if (rc == SQLITE_OK)
		rc = run(t->commit);
	if (rc != SQLITE_OK) {
		str_copy(msg, sizeof(msg), sqlite3_errmsg(t->wdb));
		if (!sqlite3_get_autocommit(t->wdb))
			run(t->rollback);
		for (k = 0; k < n; k++)
			ids[k] = -EIO;
		ret = -EIO;
	}
	pthread_mutex_unlock(&t->wlock);
	if (ret < 0)
		log_warn("cannot store %zu traces: %s", n, msg);
	for (k = 0; k < n; k++) {
		if (ids[k] == -EINVAL)
			log_warn("cannot store a trace of sandbox '%s': a "
				 "JSON value cannot be serialised",
				 recs[k]->sandbox ? recs[k]->sandbox
						  : "(host)");
		for (i = 0; i < J_COUNT; i++)
			free(js[k][i]);
	}
	free(js);
	return ret;
}

static json_t *col_text(sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);
	json_t *v = s ? json_string(s) : NULL;

	return v ? v : json_null();
}

enum json_default { DEFAULT_NULL, DEFAULT_ARRAY, DEFAULT_OBJECT };

static json_t *col_json(sqlite3_stmt *st, int col, enum json_default dflt)
{
	const char *s = (const char *)sqlite3_column_text(st, col);
	json_t *v = NULL;

	if (s)
		v = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (v)
		return v;
	switch (dflt) {
	case DEFAULT_ARRAY:
		return json_array();
	case DEFAULT_OBJECT:
		return json_object();
	default:
		return json_null();
	}
}

/* "2026-12-02T10:00:00.123Z" from unix seconds, cut to the ms below: a
 * trace's own created_at, given back as "since", finds it. */
static json_t *iso8601(double secs)
{
	/* A hair above: 0.001 s is stored as 0.000999...; never a whole
	 * millisecond more. */
	double x = secs * 1000.0 + 1e-3;
	long long ms = (long long)x;
	time_t s;
	struct tm tm;
	char buf[64];

	if ((double)ms > x) /* truncation went up: a negative time */
		ms--;
	s = (time_t)(ms / 1000);
	ms %= 1000;
	if (ms < 0) {
		ms += 1000;
		s--;
	}
	if (!gmtime_r(&s, &tm))
		return json_null();
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, ms);
	return json_string(buf);
}

/* The JSON shape of the row st is on (a new reference), or NULL on OOM. */
static json_t *row_json(sqlite3_stmt *st)
{
	json_t *o = json_object();
	int bad = 0;

	if (!o)
		return NULL;
#define SET(key, value) (bad |= json_object_set_new(o, key, value))
	SET("id", json_integer(sqlite3_column_int64(st, COL_ID)));
	SET("created_at", iso8601(sqlite3_column_double(st, COL_CREATED_AT)));
	SET("sandbox", col_text(st, COL_SANDBOX));
	SET("session_uids", col_json(st, COL_SESSION_UIDS, DEFAULT_ARRAY));
	SET("session_name", col_text(st, COL_SESSION_NAME));
	SET("metadata", col_json(st, COL_METADATA, DEFAULT_OBJECT));
	SET("labels", col_json(st, COL_LABELS, DEFAULT_OBJECT));
	SET("upstream", col_text(st, COL_UPSTREAM));
	SET("model", col_text(st, COL_MODEL));
	SET("stream", json_boolean(sqlite3_column_int(st, COL_STREAM)));
	SET("request", col_json(st, COL_REQUEST, DEFAULT_NULL));
	SET("response", col_json(st, COL_RESPONSE, DEFAULT_NULL));
	SET("prompt_token_ids",
	    col_json(st, COL_PROMPT_TOKEN_IDS, DEFAULT_NULL));
	SET("completion_token_ids",
	    col_json(st, COL_COMPLETION_TOKEN_IDS, DEFAULT_NULL));
	SET("logprobs", col_json(st, COL_LOGPROBS, DEFAULT_NULL));
	SET("usage", col_json(st, COL_USAGE, DEFAULT_NULL));
	SET("latency_ms", json_real(sqlite3_column_double(st, COL_LATENCY_MS)));
	/* 0: no answer came (a row without one reads as 0 too). */
	SET("status", json_integer(sqlite3_column_int64(st, COL_STATUS)));
	SET("error", col_text(st, COL_ERROR));
#undef SET
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The statement for one set of filters, prepared on first use; rlock
 * held. */
static sqlite3_stmt *each_stmt(struct traces *t, unsigned mask)
{
	char sql[512];

	if (t->each[mask])
		return t->each[mask];
	snprintf(sql, sizeof(sql), "%s WHERE 1%s%s%s%s ORDER BY id LIMIT ?",
		 SELECT_COLS,
		 mask & EACH_SESSION ? " AND id IN (" SESSION_IDS ")" : "",
		 mask & EACH_SANDBOX ? " AND sandbox = ?" : "",
		 mask & EACH_SINCE ? " AND created_at >= ?" : "",
		 mask & EACH_AFTER ? " AND id > ?" : "");
	if (prepare(t->rdb, sql, &t->each[mask]) != SQLITE_OK)
		return NULL;
	return t->each[mask];
}

int traces_each(struct traces *t, const struct traces_query *q,
		int (*fn)(void *arg, json_t *trace), void *arg, char *err,
		size_t errlen)
{
	static const struct traces_query any;
	sqlite3_stmt *st;
	unsigned mask = 0;
	int rc = SQLITE_OK, i = 1, ret = 0;

	if (!t || !fn) {
		set_err(err, errlen, "no store or no callback");
		return -EINVAL;
	}
	if (!q)
		q = &any;
	mask |= q->session ? EACH_SESSION : 0;
	mask |= q->sandbox ? EACH_SANDBOX : 0;
	mask |= q->since > 0 ? EACH_SINCE : 0;
	mask |= q->after > 0 ? EACH_AFTER : 0;

	pthread_mutex_lock(&t->rlock);
	st = each_stmt(t, mask);
	if (!st) {
		set_err(err, errlen, "cannot read traces: %s",
			sqlite3_errmsg(t->rdb));
		ret = -EIO;
		goto out;
	}
	if (mask & EACH_SESSION)
		rc |= bind_text(st, i++, q->session);
	if (mask & EACH_SANDBOX)
		rc |= bind_text(st, i++, q->sandbox);
	if (mask & EACH_SINCE)
		rc |= sqlite3_bind_double(st, i++, q->since);
	if (mask & EACH_AFTER)
		rc |= sqlite3_bind_int64(st, i++, q->after);
	rc |= sqlite3_bind_int64(st, i,
				 q->limit ? (sqlite3_int64)q->limit : -1);
	if (rc == SQLITE_OK) {
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			json_t *row = row_json(st);
			int stop;

			if (!row) {
				set_err(err, errlen, "out of memory");
				ret = -ENOMEM;
				break;
			}
			stop = fn(arg, row);
			json_decref(row);
			if (stop)
				break;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE && !ret) {
		set_err(err, errlen, "cannot read traces: %s",
			sqlite3_errmsg(t->rdb));
		ret = -EIO;
	}
	/* Ends the read transaction, which would otherwise pin the WAL. */
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
out:
	pthread_mutex_unlock(&t->rlock);
	return ret;
}

json_t *traces_get(struct traces *t, int64_t id)
{
	json_t *trace = NULL;
	int rc;

	if (!t)
		return NULL;
	pthread_mutex_lock(&t->rlock);
	rc = sqlite3_bind_int64(t->get, 1, id);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(t->get);
	if (rc == SQLITE_ROW)
		trace = row_json(t->get);
	else if (rc != SQLITE_DONE)
		log_warn("cannot read trace %lld: %s", (long long)id,
			 sqlite3_errmsg(t->rdb));
	sqlite3_reset(t->get);
	pthread_mutex_unlock(&t->rlock);
	return trace;
}

int64_t traces_delete(struct traces *t, const char *session,
		      const char *sandbox)
{
	sqlite3_stmt *st;
	int64_t ret;
	int rc = SQLITE_OK, i = 1;

	if (!t || (!session && !sandbox))
		return -EINVAL;
	st = t->del[(session ? 1 : 0) + (sandbox ? 2 : 0) - 1];
	pthread_mutex_lock(&t->wlock);
	if (session)
		rc |= bind_text(st, i++, session);
	if (sandbox)
		rc |= bind_text(st, i++, sandbox);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		/* Rows the cascade removed from trace_sessions are not
		 * counted. */
		ret = sqlite3_changes64(t->wdb);
	} else {
		log_warn("cannot delete traces: %s", sqlite3_errmsg(t->wdb));
		ret = -EIO;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	pthread_mutex_unlock(&t->wlock);
	return ret;
}

int64_t traces_count(struct traces *t)
{
	int64_t n = -EIO;

	if (!t)
		return -EINVAL;
	pthread_mutex_lock(&t->rlock);
	if (sqlite3_step(t->count) == SQLITE_ROW)
		n = sqlite3_column_int64(t->count, 0);
	else
		log_warn("cannot count traces: %s", sqlite3_errmsg(t->rdb));
	sqlite3_reset(t->count);
	pthread_mutex_unlock(&t->rlock);
	return n;
}
