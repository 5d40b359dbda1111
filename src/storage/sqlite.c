/*
 * sqlite.c — the SQLite driver ("sqlite"), the embedded default backend
 * (DESIGN.md 4): one database file under the data directory, WAL mode,
 * nothing to install or start.
 *
 * Each handle is one sqlite3 connection opened with SQLITE_OPEN_NOMUTEX
 * ("multi-thread" mode): the pool in storage.c hands a connection to one
 * thread at a time, so SQLite's per-connection mutex (FULLMUTEX, "serialized")
 * would only cost a lock per call.  Different connections run in parallel;
 * WAL lets readers proceed while one writer writes.
 *
 * Statement cache: each handle keeps up to XD_STMT_CACHE_SLOTS prepared
 * statements keyed by SQL text (hash + strcmp), evicting the least recently
 * used (the LRU cache shared with mysql.c and odbc.c, sqlconn.c).  A cached statement is "busy" while its query runs; a nested query
 * with the same text (from a row handler) prepares a temporary statement.
 * Invariant: between calls every cached statement is reset and has no
 * bindings, so no borrowed parameter bytes are referenced after a query.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "storage/db_int.h"
#include "storage/sqlconn.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define SQ_MIN_VERSION 3024000 /* 3.24.0: UPSERT, used by modules' SQL */
#if SQLITE_VERSION_NUMBER < SQ_MIN_VERSION
#error "SQLite 3.24.0 or newer is required"
#endif
#define SQ_STACK_COLS 16       /* row arrays up to this size live on the stack */

/* One connection.  Touched only by the thread that holds it (db_int.h). */
typedef struct sq_conn {
    sqlite3 *db;                       /* the connection */
    xd_stmt_cache_t cache;             /* statement cache (sqlite3_stmt) */
    char err[256];                     /* last failure; "" when none */
} sq_conn_t;

static void
sq_stmt_finalize(void *st)
{
    sqlite3_finalize(st);
}

/* Keeps SQLite's message and maps its result code to XD_E*. */
static int
sq_fail(sq_conn_t *c, int rc)
{
    snprintf(c->err, sizeof c->err, "%s (%s)", sqlite3_errmsg(c->db), sqlite3_errstr(rc));
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return XD_EDB_BUSY;
    case SQLITE_CONSTRAINT:
        return XD_EDB_CONSTRAINT;
    default:
        return XD_EDB;
    }
}

/* Finds or prepares the statement for sql.  *slot is the cache entry, or
 * NULL for a temporary statement the caller finalises. */
static int
sq_prepare(sq_conn_t *c, const char *sql, sqlite3_stmt **out, xd_stmt_ent_t **slot)
{
    bool nested = false;
    xd_stmt_ent_t *hit = xd_stmt_cache_find(&c->cache, sql, &nested);
    if (hit != NULL) {
        *out = hit->stmt;
        *slot = hit;
        return 0;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, nested ? 0 : SQLITE_PREPARE_PERSISTENT, &st,
                                &tail);
    if (rc != SQLITE_OK)
        return sq_fail(c, rc);
    while (tail != NULL && (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == ';'))
        tail++;
    if (st == NULL || (tail != NULL && *tail != '\0')) {
        /* Empty, or more than one statement: xd_db_exec runs those. */
        snprintf(c->err, sizeof c->err, "%s", st == NULL ? "empty statement" : "trailing SQL");
        sqlite3_finalize(st);
        return XD_EINVAL;
    }
    *slot = nested ? NULL : xd_stmt_cache_add(&c->cache, sql, st);
    *out = st;
    return 0;
}

static int
sq_bind(sq_conn_t *c, sqlite3_stmt *st, const xd_db_val_t *params, size_t n)
{
    if ((size_t)sqlite3_bind_parameter_count(st) != n) {
        snprintf(c->err, sizeof c->err, "statement has %d parameters, %zu given",
                 sqlite3_bind_parameter_count(st), n);
        return XD_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const xd_db_val_t *v = &params[i];
        int idx = (int)i + 1, rc;
        /* A NULL pointer would bind SQL NULL: an empty value needs "". */
        const char *p = v->s.p != NULL ? v->s.p : "";
        switch (v->type) {
        case XD_DB_NULL:
            rc = sqlite3_bind_null(st, idx);
            break;
        case XD_DB_INT64:
            rc = sqlite3_bind_int64(st, idx, v->i);
            break;
        case XD_DB_TEXT:
            rc = sqlite3_bind_text64(st, idx, p, v->s.len, SQLITE_STATIC, SQLITE_UTF8);
            break;
        case XD_DB_BLOB:
            rc = sqlite3_bind_blob64(st, idx, p, v->s.len, SQLITE_STATIC);
            break;
        default:
            snprintf(c->err, sizeof c->err, "parameter %zu has bad type %d", i + 1,
                     (int)v->type);
            return XD_EINVAL;
        }
        if (rc != SQLITE_OK)
            return sq_fail(c, rc);
    }
    return 0;
}

/* Lends the current row as values.  FLOAT columns come back as TEXT (the
 * interface has no floating type). */
static void
sq_row(sqlite3_stmt *st, xd_db_val_t *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int k = (int)i;
        xd_db_val_t *v = &cols[i];
        switch (sqlite3_column_type(st, k)) {
        case SQLITE_INTEGER:
            *v = XD_DB_V_INT(sqlite3_column_int64(st, k));
            break;
        case SQLITE_BLOB: {
            const void *p = sqlite3_column_blob(st, k);
            size_t len = (size_t)sqlite3_column_bytes(st, k);
            *v = XD_DB_V_BLOB(p != NULL ? p : "", len);
            break;
        }
        case SQLITE_NULL:
            *v = XD_DB_V_NULL;
            break;
        default: { /* TEXT, FLOAT */
            const unsigned char *p = sqlite3_column_text(st, k);
            size_t len = (size_t)sqlite3_column_bytes(st, k);
            *v = XD_DB_V_TEXT(((xd_str_t){ p != NULL ? (const char *)p : "", len }));
            break;
        }
        }
    }
}

static int
sq_query(void *h, const char *sql, const xd_db_val_t *params, size_t nparams,
         xd_db_row_handler fn, void *arg)
{
    sq_conn_t *c = h;
    sqlite3_stmt *st = NULL;
    xd_stmt_ent_t *slot = NULL;
    c->err[0] = '\0';
    int rc = sq_prepare(c, sql, &st, &slot);
    if (rc < 0)
        return rc;

    rc = sq_bind(c, st, params, nparams);
    xd_db_val_t stack_cols[SQ_STACK_COLS];
    xd_db_val_t *cols = stack_cols;
    size_t ncols = (size_t)sqlite3_column_count(st);
    if (ncols > SQ_STACK_COLS)
        cols = xd_malloc(ncols * sizeof *cols);

    while (rc == 0) {
        int s = sqlite3_step(st);
        if (s == SQLITE_DONE)
            break;
        if (s != SQLITE_ROW) {
            rc = sq_fail(c, s);
            break;
        }
        if (fn == NULL)
            continue;
        sq_row(st, cols, ncols);
        int r = fn(arg, cols, ncols);
        if (r != 0) {
            rc = r < 0 ? r : 0;
            break;
        }
    }

    if (cols != stack_cols)
        xd_free(cols);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (slot != NULL)
        xd_stmt_cache_done(slot);
    else
        sqlite3_finalize(st);
    return rc;
}

static int
sq_exec(void *h, const char *sql)
{
    sq_conn_t *c = h;
    char *msg = NULL;
    c->err[0] = '\0';
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    sqlite3_free(msg);
    return rc == SQLITE_OK ? 0 : sq_fail(c, rc);
}

static int
sq_begin(void *h)
{
    /* IMMEDIATE takes the write lock now, so a transaction never fails
     * half-way with BUSY when it upgrades from reading to writing. */
    return sq_query(h, "BEGIN IMMEDIATE", NULL, 0, NULL, NULL);
}

static int
sq_commit(void *h)
{
    return sq_query(h, "COMMIT", NULL, 0, NULL, NULL);
}

static int
sq_rollback(void *h)
{
    sq_conn_t *c = h;
    /* SQLite rolls back by itself after some errors (SQLITE_FULL, IOERR,
     * BUSY in some cases); a second ROLLBACK would fail. */
    if (sqlite3_get_autocommit(c->db))
        return 0;
    return sq_query(h, "ROLLBACK", NULL, 0, NULL, NULL);
}

static int64_t
sq_last_insert_id(void *h)
{
    return sqlite3_last_insert_rowid(((sq_conn_t *)h)->db);
}

static int64_t
sq_changes(void *h)
{
    return sqlite3_changes(((sq_conn_t *)h)->db);
}

static const char *
sq_errmsg(void *h)
{
    return ((sq_conn_t *)h)->err;
}

static void
sq_close(void *h)
{
    sq_conn_t *c = h;
    if (c == NULL)
        return;
    xd_stmt_cache_clear(&c->cache);
    sqlite3_close(c->db); /* every statement is finalised: cannot be BUSY */
    xd_free(c);
}

/* mkdir -p of the directory part of path, new directories mode 0700. */
static int
sq_mkdirs(const char *path)
{
    char *dir = xd_strdup(path);
    char *slash = strrchr(dir, '/');
    int rc = 0;
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1;; p++) {
            if (*p != '/' && *p != '\0')
                continue;
            char saved = *p;
            *p = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                rc = -errno;
                break;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    xd_free(dir);
    return rc;
}

/* Runs a PRAGMA that returns one text row and copies it into buf. */
static int
sq_pragma_cb(void *arg, const xd_db_val_t *cols, size_t n)
{
    char *buf = arg;
    if (n >= 1 && cols[0].type != XD_DB_NULL) {
        char num[24];
        xd_str_t s = cols[0].s;
        if (cols[0].type == XD_DB_INT64) {
            snprintf(num, sizeof num, "%lld", (long long)cols[0].i);
            s = xd_str_c(num);
        }
        size_t len = s.len < 31 ? s.len : 31;
        memcpy(buf, s.p, len);
        buf[len] = '\0';
    }
    return 1;
}

static int
sq_pragma(sq_conn_t *c, const char *sql, char out[32])
{
    out[0] = '\0';
    return sq_query(c, sql, NULL, 0, sq_pragma_cb, out);
}

static int
sq_open(const xd_db_params_t *p, void **out)
{
    if (sqlite3_libversion_number() < SQ_MIN_VERSION || !sqlite3_threadsafe()) {
        XD_LOG(NULL, XD_ERROR, "sqlite unusable", "version=%s threadsafe=%d need=3.24.0",
               sqlite3_libversion(), sqlite3_threadsafe());
        return XD_ENOTSUP;
    }
    if (p->path == NULL || p->path[0] == '\0')
        return XD_EINVAL;
    int rc = sq_mkdirs(p->path);
    if (rc < 0) {
        XD_LOG(NULL, XD_ERROR, "db directory not created", "path=%s errno=%d", p->path, -rc);
        return rc;
    }

    sq_conn_t *c = xd_new(sq_conn_t);
    xd_stmt_cache_init(&c->cache, sq_stmt_finalize);
    int s = sqlite3_open_v2(p->path, &c->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL);
    if (s != SQLITE_OK) {
        XD_LOG(NULL, XD_ERROR, "db open failed", "path=%s err=\"%s\"", p->path,
               c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(s));
        sqlite3_close(c->db);
        xd_free(c);
        return XD_EDB;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, p->busy_timeout_ms ? (int)p->busy_timeout_ms : 5000);

    char val[32], sql[96];
    rc = sq_pragma(c, "PRAGMA journal_mode=WAL", val);
    if (rc == 0 && strcmp(val, "wal") != 0) {
        snprintf(c->err, sizeof c->err, "journal_mode is %s, not wal", val);
        rc = XD_EDB;
    }
    /* With WAL, synchronous=NORMAL never corrupts the database and loses
     * nothing when the process crashes: a commit is in the WAL file (the OS
     * has it) before COMMIT returns.  Only a power loss or OS crash can undo
     * the last commits before a checkpoint.  FULL syncs the WAL on every
     * commit and survives that too, at a cost per write. */
    if (rc == 0)
        rc = sq_exec(c, p->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    if (rc == 0)
        rc = sq_exec(c, "PRAGMA foreign_keys=ON");
    if (rc == 0) {
        rc = sq_pragma(c, "PRAGMA foreign_keys", val);
        if (rc == 0 && strcmp(val, "1") != 0) {
            snprintf(c->err, sizeof c->err, "foreign keys not supported by this SQLite");
            rc = XD_ENOTSUP;
        }
    }
    if (rc == 0) {
        /* A negative cache_size is in KiB. */
        snprintf(sql, sizeof sql, "PRAGMA cache_size=-%u", p->cache_kib ? p->cache_kib : 8192);
        rc = sq_exec(c, sql);
    }
    if (rc == 0)
        rc = sq_exec(c, "PRAGMA temp_store=MEMORY");
    if (rc < 0) {
        XD_LOG(NULL, XD_ERROR, "db setup failed", "path=%s err=\"%s\"", p->path, c->err);
        sq_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

const xd_db_driver_t xd_db_driver_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .exec = sq_exec,
    .query = sq_query,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .last_insert_id = sq_last_insert_id,
    .changes = sq_changes,
    .errmsg = sq_errmsg,
};
