/*
 * pgsql.c — the PostgreSQL driver ("pgsql") over libpq (DESIGN.md 4).
 *
 * Blocking libpq calls on the blocking pool, like every driver: the pool
 * (storage.c) gives a handle to one thread at a time and xd_db_async runs
 * the work off the event loops.  (DESIGN.md 4.2 has the measurement behind
 * keeping this model instead of libpq's non-blocking API on the loops.)
 *
 * Statements: the `?` placeholders are rewritten to $1, $2, … outside
 * literals, quoted identifiers and comments (xd_pg_rewrite), and each
 * distinct (SQL text, parameter types) is prepared once per connection
 * and kept in an LRU cache of PG_CACHE_SLOTS named statements ("xd1",
 * "xd2", …).  Parameters are typed: INT64 as int8, BLOB as bytea, TEXT as
 * text, all in binary format (no escaping, NULs in bytea kept); NULL lets
 * the server infer the type (a statement prepared with a NULL there is
 * prepared again when a typed value comes).  Results come in text format
 * and are lent as the interface says: integer types (and integral numeric,
 * e.g. SUM) as INT64, bool as 0/1, bytea unescaped as BLOB, the rest TEXT.
 * Results are fetched whole before the row handler runs, so a handler may
 * run other queries on the same connection.
 *
 * Errors map from SQLSTATE: 40001 serialization_failure, 40P01 deadlock,
 * 55P03 lock_not_available → XD_EDB_BUSY (xd_db_tx retries); class 23
 * (unique, foreign key, not null, check) → XD_EDB_CONSTRAINT; the rest
 * XD_EDB.  A connection that went bad (PQstatus) is reported by alive()
 * and the pool replaces it.
 *
 * Transactions are SERIALIZABLE: the read-check-write bodies of the modules
 * (quota counts, MAX(seq) + 1) were written for SQLite, where writers are
 * serialised; PostgreSQL detects the conflicts and the retry in xd_db_tx
 * runs the body again.
 */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/db_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define PG_CACHE_SLOTS 128 /* prepared statements per connection */
#define PG_MAX_PARAMS 64   /* parameters of one statement */
#define PG_STACK_COLS 16   /* row arrays up to this size live on the stack */

/* Type OIDs (server/catalog/pg_type_d.h is not in libpq-dev). */
#define PG_OID_BOOL 16
#define PG_OID_BYTEA 17
#define PG_OID_INT8 20
#define PG_OID_INT2 21
#define PG_OID_INT4 23
#define PG_OID_TEXT 25
#define PG_OID_OID 26
#define PG_OID_NUMERIC 1700

typedef struct pg_stmt {
    char *sql;          /* owned key; NULL = free slot */
    uint64_t hash;      /* FNV-1a of sql */
    unsigned nparams;   /* placeholders */
    Oid types[PG_MAX_PARAMS]; /* declared parameter types (0 = inferred) */
    char name[16];      /* server-side name */
    uint64_t used;      /* LRU tick */
} pg_stmt_t;

typedef struct pg_conn {
    PGconn *pg;
    pg_stmt_t cache[PG_CACHE_SLOTS];
    uint64_t tick;      /* LRU clock */
    unsigned next_name; /* statement names */
    int64_t changes;    /* rows of the last statement */
    bool last_insert;   /* the last statement was an INSERT */
    char err[512];      /* last failure; "" when none */
} pg_conn_t;

static uint64_t
pg_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* ---- the placeholder rewriter ------------------------------------------- */

int
xd_pg_rewrite(const char *sql, char **out, unsigned *nparams)
{
    size_t len = strlen(sql);
    /* Each `?` becomes at most "$NNNNN" (6 bytes, 5 more than the '?'). */
    size_t q = 0;
    for (const char *p = sql; *p; p++)
        q += *p == '?';
    char *buf = xd_malloc(len + q * 5 + 1);
    size_t o = 0;
    unsigned n = 0;
    bool done = false; /* a ';' ended the statement */
    const char *p = sql;
    while (*p) {
        char ch = *p;
        if (done && ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' && ch != ';') {
            xd_free(buf);
            return XD_EINVAL; /* a second statement */
        }
        if (ch == '\'' || ch == '"') {
            /* Literal or quoted identifier: copy to the closing quote (a
             * doubled quote stays inside). */
            buf[o++] = *p++;
            while (*p) {
                if (*p == ch && p[1] == ch) {
                    buf[o++] = *p++;
                    buf[o++] = *p++;
                    continue;
                }
                if (*p == ch) {
                    buf[o++] = *p++;
                    break;
                }
                buf[o++] = *p++;
            }
            continue;
        }
        if (ch == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                buf[o++] = *p++;
            continue;
        }
        if (ch == '/' && p[1] == '*') {
            buf[o++] = *p++;
            buf[o++] = *p++;
            while (*p && !(p[0] == '*' && p[1] == '/'))
                buf[o++] = *p++;
            if (*p) {
                buf[o++] = *p++;
                buf[o++] = *p++;
            }
            continue;
        }
        if (ch == ';') {
            done = true;
            p++;
            continue; /* a trailing ';' is dropped */
        }
        if (ch == '?') {
            if (n == PG_MAX_PARAMS) {
                xd_free(buf);
                return XD_EINVAL;
            }
            o += (size_t)sprintf(buf + o, "$%u", ++n);
            p++;
            continue;
        }
        buf[o++] = *p++;
    }
    buf[o] = '\0';
    *out = buf;
    *nparams = n;
    return 0;
}

/* ---- errors -------------------------------------------------------------- */

static void
pg_set_err(pg_conn_t *c, const char *msg)
{
    snprintf(c->err, sizeof c->err, "%s", msg != NULL ? msg : "");
    size_t n = strlen(c->err);
    while (n > 0 && (c->err[n - 1] == '\n' || c->err[n - 1] == ' '))
        c->err[--n] = '\0';
}

/* Keeps the message of a failed result (res may be NULL) and maps its
 * SQLSTATE.  Frees res. */
static int
pg_fail(pg_conn_t *c, PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    pg_set_err(c, res != NULL && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res)
                                                              : PQerrorMessage(c->pg));
    if (state != NULL) {
        char tail[16];
        snprintf(tail, sizeof tail, " [%s]", state);
        if (strlen(c->err) + strlen(tail) < sizeof c->err)
            strcat(c->err, tail);
    }
    int rc = XD_EDB;
    if (state != NULL &&
        (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03")))
        rc = XD_EDB_BUSY;
    else if (state != NULL && state[0] == '2' && state[1] == '3')
        rc = XD_EDB_CONSTRAINT;
    PQclear(res); /* state points into res */
    return rc;
}

/* ---- statements ---------------------------------------------------------- */

static Oid
pg_type_of(const xd_db_val_t *v)
{
    switch (v->type) {
    case XD_DB_INT64: return PG_OID_INT8;
    case XD_DB_TEXT: return PG_OID_TEXT;
    case XD_DB_BLOB: return PG_OID_BYTEA;
    default: return 0;
    }
}

/* A cached statement can run these parameters: same types, or NULL where
 * the statement has any type. */
static bool
pg_types_fit(const pg_stmt_t *e, const xd_db_val_t *params, size_t n)
{
    if (e->nparams != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (params[i].type != XD_DB_NULL && e->types[i] != pg_type_of(&params[i]))
            return false;
    return true;
}

static int
pg_prepare(pg_conn_t *c, const char *sql, const xd_db_val_t *params, size_t n, pg_stmt_t **out)
{
    uint64_t h = pg_hash(sql);
    pg_stmt_t *victim = NULL;
    c->tick++;
    for (unsigned i = 0; i < PG_CACHE_SLOTS; i++) {
        pg_stmt_t *e = &c->cache[i];
        if (e->sql != NULL && e->hash == h && strcmp(e->sql, sql) == 0 &&
            pg_types_fit(e, params, n)) {
            e->used = c->tick;
            *out = e;
            return 0;
        }
        if (victim == NULL || e->sql == NULL || (victim->sql != NULL && e->used < victim->used))
            victim = e;
    }

    char *text = NULL;
    unsigned np = 0;
    if (xd_pg_rewrite(sql, &text, &np) < 0) {
        pg_set_err(c, "more than one statement, or too many parameters");
        return XD_EINVAL;
    }
    if (np != n) {
        snprintf(c->err, sizeof c->err, "statement has %u parameters, %zu given", np, n);
        xd_free(text);
        return XD_EINVAL;
    }
    if (victim->sql != NULL) {
        char dealloc[40];
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", victim->name);
        PQclear(PQexec(c->pg, dealloc));
        xd_free(victim->sql);
        victim->sql = NULL;
    }
    pg_stmt_t *e = victim;
    for (size_t i = 0; i < n; i++)
        e->types[i] = pg_type_of(&params[i]);
    snprintf(e->name, sizeof e->name, "xd%u", ++c->next_name);
    PGresult *res = PQprepare(c->pg, e->name, text, (int)n, e->types);
    xd_free(text);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return pg_fail(c, res);
    PQclear(res);
    e->sql = xd_strdup(sql);
    e->hash = h;
    e->nparams = (unsigned)n;
    e->used = c->tick;
    *out = e;
    return 0;
}

/* Lends row r of res as values; bytea is unescaped into *blobs (freed by
 * the caller after the handler). */
static void
pg_row(PGresult *res, int r, xd_db_val_t *cols, size_t n, unsigned char **blobs)
{
    for (size_t i = 0; i < n; i++) {
        int k = (int)i;
        xd_db_val_t *v = &cols[i];
        blobs[i] = NULL;
        if (PQgetisnull(res, r, k)) {
            *v = XD_DB_V_NULL;
            continue;
        }
        const char *s = PQgetvalue(res, r, k);
        size_t len = (size_t)PQgetlength(res, r, k);
        switch (PQftype(res, k)) {
        case PG_OID_INT8:
        case PG_OID_INT4:
        case PG_OID_INT2:
        case PG_OID_OID:
            *v = XD_DB_V_INT(strtoll(s, NULL, 10));
            break;
        case PG_OID_BOOL:
            *v = XD_DB_V_INT(s[0] == 't');
            break;
        case PG_OID_NUMERIC:
            if (strpbrk(s, ".eEN") == NULL) { /* integral (SUM of BIGINT) */
                *v = XD_DB_V_INT(strtoll(s, NULL, 10));
                break;
            }
            *v = XD_DB_V_TEXT(((xd_str_t){ s, len }));
            break;
        case PG_OID_BYTEA: {
            size_t bl = 0;
            blobs[i] = PQunescapeBytea((const unsigned char *)s, &bl);
            *v = XD_DB_V_BLOB(blobs[i] != NULL ? (const char *)blobs[i] : "", bl);
            break;
        }
        default:
            *v = XD_DB_V_TEXT(((xd_str_t){ s, len }));
            break;
        }
    }
}

static int
pg_query(void *h, const char *sql, const xd_db_val_t *params, size_t nparams,
         xd_db_row_handler fn, void *arg)
{
    pg_conn_t *c = h;
    c->err[0] = '\0';
    c->changes = 0;
    c->last_insert = false;
    if (nparams > PG_MAX_PARAMS) {
        pg_set_err(c, "too many parameters");
        return XD_EINVAL;
    }
    pg_stmt_t *st = NULL;
    int rc = pg_prepare(c, sql, params, nparams, &st);
    if (rc < 0)
        return rc;

    const char *vals[PG_MAX_PARAMS];
    int lens[PG_MAX_PARAMS], fmts[PG_MAX_PARAMS];
    uint64_t ints[PG_MAX_PARAMS];
    for (size_t i = 0; i < nparams; i++) {
        const xd_db_val_t *v = &params[i];
        fmts[i] = 1; /* binary */
        switch (v->type) {
        case XD_DB_NULL:
            vals[i] = NULL;
            lens[i] = 0;
            break;
        case XD_DB_INT64: {
            uint64_t u = (uint64_t)v->i;
            uint32_t hi = htonl((uint32_t)(u >> 32)), lo = htonl((uint32_t)u);
            memcpy((char *)&ints[i], &hi, 4);
            memcpy((char *)&ints[i] + 4, &lo, 4);
            vals[i] = (const char *)&ints[i];
            lens[i] = 8;
            break;
        }
        case XD_DB_TEXT:
        case XD_DB_BLOB:
            vals[i] = v->s.p != NULL ? v->s.p : "";
            lens[i] = (int)v->s.len;
            break;
        default:
            snprintf(c->err, sizeof c->err, "parameter %zu has bad type %d", i + 1, (int)v->type);
            return XD_EINVAL;
        }
    }

    PGresult *res = PQexecPrepared(c->pg, st->name, (int)nparams, vals, lens, fmts, 0);
    ExecStatusType s = PQresultStatus(res);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        rc = pg_fail(c, res);
        /* A failed statement may have been prepared against a dropped
         * table; drop it from the cache so that the next call prepares it
         * again (cheap, and never wrong). */
        if (rc == XD_EDB && PQstatus(c->pg) == CONNECTION_OK) {
            char dealloc[40];
            snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", st->name);
            PQclear(PQexec(c->pg, dealloc));
            xd_free(st->sql);
            st->sql = NULL;
        }
        return rc;
    }
    const char *ct = PQcmdTuples(res);
    c->changes = ct[0] ? strtoll(ct, NULL, 10) : 0;
    c->last_insert = strncmp(PQcmdStatus(res), "INSERT", 6) == 0;

    if (fn != NULL && s == PGRES_TUPLES_OK) {
        int nrows = PQntuples(res);
        size_t ncols = (size_t)PQnfields(res);
        xd_db_val_t stack_cols[PG_STACK_COLS];
        unsigned char *stack_blobs[PG_STACK_COLS];
        xd_db_val_t *cols = stack_cols;
        unsigned char **blobs = stack_blobs;
        if (ncols > PG_STACK_COLS) {
            cols = xd_malloc(ncols * sizeof *cols);
            blobs = xd_malloc(ncols * sizeof *blobs);
        }
        for (int r = 0; r < nrows; r++) {
            pg_row(res, r, cols, ncols, blobs);
            int hr = fn(arg, cols, ncols);
            for (size_t i = 0; i < ncols; i++)
                PQfreemem(blobs[i]);
            if (hr != 0) {
                rc = hr < 0 ? hr : 0;
                break;
            }
        }
        if (cols != stack_cols) {
            xd_free(cols);
            xd_free(blobs);
        }
    }
    PQclear(res);
    return rc;
}

static int
pg_exec(void *h, const char *sql)
{
    pg_conn_t *c = h;
    c->err[0] = '\0';
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType s = PQresultStatus(res);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_EMPTY_QUERY)
        return pg_fail(c, res);
    const char *ct = PQcmdTuples(res);
    c->changes = ct[0] ? strtoll(ct, NULL, 10) : 0;
    PQclear(res);
    return 0;
}

static int
pg_begin(void *h)
{
    return pg_exec(h, "BEGIN ISOLATION LEVEL SERIALIZABLE");
}

static int
pg_commit(void *h)
{
    return pg_exec(h, "COMMIT");
}

static int
pg_rollback(void *h)
{
    pg_conn_t *c = h;
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return 0;
    return pg_exec(h, "ROLLBACK");
}

static int64_t
pg_last_insert_id(void *h)
{
    /* lastval(): the sequence value the last INSERT into an {autoid}
     * table took in this session.  Only asked after an INSERT: it fails
     * (and would abort a transaction) in a session that used no sequence. */
    pg_conn_t *c = h;
    if (!c->last_insert)
        return 0;
    PGresult *res = PQexec(c->pg, "SELECT lastval()");
    int64_t id = 0;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return id;
}

static int64_t
pg_changes(void *h)
{
    return ((pg_conn_t *)h)->changes;
}

static const char *
pg_errmsg(void *h)
{
    return ((pg_conn_t *)h)->err;
}

static bool
pg_alive(void *h)
{
    return PQstatus(((pg_conn_t *)h)->pg) == CONNECTION_OK;
}

static void
pg_close(void *h)
{
    pg_conn_t *c = h;
    if (c == NULL)
        return;
    for (unsigned i = 0; i < PG_CACHE_SLOTS; i++)
        xd_free(c->cache[i].sql);
    PQfinish(c->pg);
    xd_free(c);
}

/* libpq prints notices (e.g. "table exists, skipping") on stderr by
 * default; they go to the log at debug level instead. */
static void
pg_notice(void *arg, const char *msg)
{
    (void)arg;
    int n = (int)strcspn(msg, "\n");
    XD_LOG(NULL, XD_DEBUG, "pgsql notice", "msg=\"%.*s\"", n < 200 ? n : 200, msg);
}

static int
pg_open(const xd_db_params_t *p, void **out)
{
    const char *keys[12], *vals[12];
    char port[12], timeout[12];
    int n = 0;
    if (p->conninfo != NULL && p->conninfo[0] != '\0') {
        keys[n] = "dbname"; /* a conninfo string or URI given whole */
        vals[n++] = p->conninfo;
    } else {
#define KV(k, v)                  \
    if ((v) != NULL && (v)[0]) {  \
        keys[n] = (k);            \
        vals[n++] = (v);          \
    }
        KV("host", p->server);
        if (p->port) {
            snprintf(port, sizeof port, "%u", p->port);
            KV("port", port);
        }
        KV("dbname", p->database);
        KV("user", p->username);
        KV("password", p->password);
        KV("sslmode", p->ssl);
        KV("sslrootcert", p->ssl_cafile);
    }
    snprintf(timeout, sizeof timeout, "%u", p->connect_timeout_s ? p->connect_timeout_s : 5);
    KV("connect_timeout", timeout);
    KV("application_name", "xmppd");
#undef KV
    keys[n] = NULL;
    vals[n] = NULL;

    PGconn *pg = PQconnectdbParams(keys, vals, p->conninfo != NULL && p->conninfo[0] != '\0');
    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        snprintf(xd_db_open_err, sizeof xd_db_open_err, "%s",
                 pg != NULL ? PQerrorMessage(pg) : "out of memory");
        size_t l = strlen(xd_db_open_err);
        while (l > 0 && (xd_db_open_err[l - 1] == '\n' || xd_db_open_err[l - 1] == ' '))
            xd_db_open_err[--l] = '\0';
        XD_LOG(NULL, XD_WARN, "pgsql connect failed", "server=%s port=%u db=%s err=\"%s\"",
               p->server ? p->server : "", p->port, p->database ? p->database : "",
               xd_db_open_err);
        PQfinish(pg);
        return XD_EDB;
    }
    PQsetNoticeProcessor(pg, pg_notice, NULL);
    pg_conn_t *c = xd_new(pg_conn_t);
    c->pg = pg;
    /* UTF-8 on the wire whatever the server's default; UTC for now(). */
    int rc = pg_exec(c, "SET client_encoding = 'UTF8'; SET TIME ZONE 'UTC'");
    if (rc < 0) {
        snprintf(xd_db_open_err, sizeof xd_db_open_err, "%.159s", c->err);
        pg_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

const xd_db_driver_t xd_db_driver_pgsql = {
    .name = "pgsql",
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .query = pg_query,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .last_insert_id = pg_last_insert_id,
    .changes = pg_changes,
    .errmsg = pg_errmsg,
    .dialect = NULL, /* "pgsql" */
    .alive = pg_alive,
};
