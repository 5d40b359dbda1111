/*
 * odbc.c — the ODBC driver ("odbc") over unixODBC (DESIGN.md 4).
 *
 * Its reason to exist is Microsoft SQL Server through FreeTDS's ODBC driver;
 * no SQL Server can run in our test environment, so it is tested against
 * PostgreSQL through psqlODBC (odbc-postgresql).  The connection string
 * given to SQLDriverConnect is params->conninfo when set, else built from
 * params->server (sql_server: a DSN name, or a DSN-less string such as
 * "Driver={PostgreSQL Unicode};Server=…;Port=…") completed with UID, PWD and
 * Database from username, password and database (odbc_conninfo).  The
 * engine behind the driver (SQLGetInfo SQL_DBMS_NAME) picks the SQL
 * dialect: PostgreSQL → pgsql, MariaDB/MySQL → mysql, Microsoft SQL Server
 * → mssql (T-SQL, dialect.c; untested against a real server); others are
 * refused at open with a clear message.
 * The SQL text reaches the server as written: `?` is ODBC's own marker; the
 * dialect of the server behind the driver is the dialect layer's concern.
 *
 * Values: INT64 binds as SQL_C_SBIGINT/SQL_BIGINT, TEXT as
 * SQL_C_CHAR/SQL_VARCHAR (UTF-8 bytes: the driver must be set up for UTF-8,
 * see docs/admin.md), BLOB as SQL_C_BINARY/SQL_VARBINARY.  On mssql TEXT
 * is SQL_WVARCHAR, so that FreeTDS converts the UTF-8 to UTF-16 and sends
 * NVARCHAR (as VARCHAR it would go through the server's code page), and a
 * NULL is a VARBINARY (SQL Server converts a varbinary NULL to any column
 * type, a varchar one not to VARBINARY).  Result columns of
 * integer SQL types (and NUMERIC/DECIMAL without a scale) come back as
 * INT64, binary ones as BLOB, everything else as TEXT.
 *
 * Statements are prepared once per SQL text per connection (the LRU cache
 * shared with sqlite.c and mysql.c, sqlconn.c).  Every result is read completely (SQLGetData in chunks) into a
 * buffer and the cursor closed before the first row is handed out: drivers
 * without multiple active result sets (FreeTDS without MARS) then still let
 * a row handler run other queries.  Row values point into that buffer.
 *
 * Transactions: begin turns autocommit off, commit/rollback end it with
 * SQLEndTran and turn autocommit back on.
 *
 * Lost connections: the connection keeper of sqlconn.c (shared with
 * mysql.c) decides what is retried and waits, reconnecting with backoff, up
 * to sql_fault_wait for a database that is away (sqlconn.h has the
 * policy).  This file tells it when a connection is lost (SQLSTATE class
 * 08, SQL_ATTR_CONNECTION_DEAD) and whether an idle one is still usable:
 * ODBC cannot see the socket, so a handle idle longer than
 * ODBC_PING_IDLE_MS is pinged ("SELECT 1") before it is used outside a
 * transaction; a database restart then costs no request.
 *
 * last_insert_id asks the dialect's query (dialect.c: lastval(),
 * LAST_INSERT_ID(), @@IDENTITY) after an INSERT, else 0.
 *
 * On mssql, transactions run SERIALIZABLE, for the reason pgsql.c gives
 * (the modules' read-check-write bodies); a deadlock victim (1205,
 * SQLSTATE 40001) is XD_EDB_BUSY and xd_db_tx runs the body again.
 */
#include <pthread.h>
#include <sql.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sqlext.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "storage/db_int.h"
#include "storage/sqlconn.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define ODBC_MAX_PARAMS 64         /* parameters of one statement */
#define ODBC_PING_IDLE_MS 2000     /* ping a handle idle longer than this */
#define ODBC_LOGIN_TIMEOUT_S 10    /* connect timeout */
#define ODBC_CHUNK 8192            /* SQLGetData chunk */

/* One connection.  Touched only by the thread that holds it. */
typedef struct odbc_conn {
    xd_sqlc_t k;                          /* first: the keeper (sqlconn.h); k.err */
    SQLHDBC dbc;                          /* NULL while disconnected */
    char *conninfo;                       /* owned: how to (re)connect */
    xd_stmt_cache_t cache;                /* statements of the current dbc */
    int64_t changes;                      /* SQLRowCount of the last statement */
    uint64_t last_used_ms;                /* monotonic time of the last success */
    char state[6];                        /* SQLSTATE of the last failure */
    const char *dialect;                  /* from SQL_DBMS_NAME at connect; NULL: unknown */
    char dbms[64];                        /* SQL_DBMS_NAME as the driver said it */
    bool last_insert;                     /* the last statement was an INSERT */
} odbc_conn_t;

static pthread_once_t odbc_once = PTHREAD_ONCE_INIT;
static SQLHENV odbc_env; /* shared environment, created once */

static void
odbc_env_init(void)
{
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_ENV, SQL_NULL_HANDLE, &odbc_env))) {
        odbc_env = NULL;
        return;
    }
    SQLSetEnvAttr(odbc_env, SQL_ATTR_ODBC_VERSION, (SQLPOINTER)SQL_OV_ODBC3, 0);
}

/* ---- errors -------------------------------------------------------------- */

/* Keeps the first diagnostic record of handle h and maps its SQLSTATE. */
static int
odbc_fail(odbc_conn_t *c, SQLSMALLINT type, SQLHANDLE h, const char *what)
{
    SQLCHAR state[6] = "", msg[400] = "";
    SQLINTEGER native = 0;
    SQLSMALLINT len = 0;
    if (h == NULL ||
        !SQL_SUCCEEDED(SQLGetDiagRec(type, h, 1, state, &native, msg, sizeof msg, &len))) {
        snprintf((char *)state, sizeof state, "HY000");
        snprintf((char *)msg, sizeof msg, "no diagnostic");
    }
    memcpy(c->state, state, sizeof c->state);
    c->state[5] = '\0';
    snprintf(c->k.err, sizeof c->k.err, "%s: [%s] %s", what, c->state, (const char *)msg);
    if (strncmp(c->state, "23", 2) == 0)
        return XD_EDB_CONSTRAINT;
    if (strcmp(c->state, "40001") == 0 || strcmp(c->state, "40P01") == 0 ||
        strcmp(c->state, "HYT00") == 0 || strcmp(c->state, "HYT01") == 0 ||
        strcmp(c->state, "55P03") == 0)
        return XD_EDB_BUSY;
    return XD_EDB;
}

/* The last failure was a lost or unusable connection: SQLSTATE class 08,
 * or the driver says the connection is dead (psqlODBC reports a server
 * that went away as HY000 "server closed the connection unexpectedly"). */
static bool
odbc_lost(const odbc_conn_t *c)
{
    if (strncmp(c->state, "08", 2) == 0 || strcmp(c->state, "57P01") == 0)
        return true;
    SQLUINTEGER dead = SQL_CD_FALSE;
    return c->dbc != NULL &&
           SQL_SUCCEEDED(SQLGetConnectAttr(c->dbc, SQL_ATTR_CONNECTION_DEAD, &dead, 0, NULL)) &&
           dead == SQL_CD_TRUE;
}

/* ---- connecting ---------------------------------------------------------- */

static void
odbc_stmt_finalize(void *st)
{
    SQLFreeHandle(SQL_HANDLE_STMT, (SQLHSTMT)st);
}

static void
odbc_disconnect(odbc_conn_t *c)
{
    xd_stmt_cache_clear(&c->cache);
    if (c->dbc != NULL) {
        SQLDisconnect(c->dbc);
        SQLFreeHandle(SQL_HANDLE_DBC, c->dbc);
    }
    c->dbc = NULL;
}

/* Asks the server which engine it is (SQL_DBMS_NAME) and names its SQL
 * dialect: PostgreSQL → pgsql, MySQL/MariaDB → mysql, Microsoft SQL Server
 * → mssql, anything else NULL (odbc_open refuses it). */
static void
odbc_probe_dialect(odbc_conn_t *c)
{
    SQLSMALLINT n = 0;
    c->dbms[0] = '\0';
    c->dialect = NULL;
    if (!SQL_SUCCEEDED(SQLGetInfo(c->dbc, SQL_DBMS_NAME, c->dbms, sizeof c->dbms, &n)))
        c->dbms[0] = '\0';
    if (strncasecmp(c->dbms, "PostgreSQL", 10) == 0)
        c->dialect = "pgsql";
    else if (strncasecmp(c->dbms, "MySQL", 5) == 0 || strncasecmp(c->dbms, "MariaDB", 7) == 0)
        c->dialect = "mysql";
    else if (strcasecmp(c->dbms, "Microsoft SQL Server") == 0)
        c->dialect = "mssql";
}

static int
odbc_connect(odbc_conn_t *c)
{
    XD_ASSERT(c->dbc == NULL);
    SQLHDBC dbc = NULL;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_DBC, odbc_env, &dbc)))
        return odbc_fail(c, SQL_HANDLE_ENV, odbc_env, "SQLAllocHandle");
    SQLSetConnectAttr(dbc, SQL_ATTR_LOGIN_TIMEOUT, (SQLPOINTER)(uintptr_t)ODBC_LOGIN_TIMEOUT_S,
                      0);
    SQLCHAR out[1024];
    SQLSMALLINT outlen = 0;
    SQLRETURN r = SQLDriverConnect(dbc, NULL, (SQLCHAR *)c->conninfo, SQL_NTS, out, sizeof out,
                                   &outlen, SQL_DRIVER_NOPROMPT);
    if (!SQL_SUCCEEDED(r)) {
        odbc_fail(c, SQL_HANDLE_DBC, dbc, "connect");
        SQLFreeHandle(SQL_HANDLE_DBC, dbc);
        return XD_EDB; /* whatever the SQLSTATE: the caller reports it */
    }
    SQLSetConnectAttr(dbc, SQL_ATTR_AUTOCOMMIT, (SQLPOINTER)SQL_AUTOCOMMIT_ON, 0);
    c->dbc = dbc;
    c->last_used_ms = xd_sql_now_ms();
    odbc_probe_dialect(c);
    if (c->dialect != NULL && strcmp(c->dialect, "mssql") == 0)
        SQLSetConnectAttr(dbc, SQL_ATTR_TXN_ISOLATION, (SQLPOINTER)SQL_TXN_SERIALIZABLE, 0);
    return 0;
}

/* Runs SQL text directly, consuming every result. */
static int
odbc_direct(odbc_conn_t *c, const char *sql)
{
    SQLHSTMT st = NULL;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &st)))
        return odbc_fail(c, SQL_HANDLE_DBC, c->dbc, "SQLAllocHandle");
    SQLRETURN r = SQLExecDirect(st, (SQLCHAR *)sql, SQL_NTS);
    int rc = 0;
    while (rc == 0) {
        if (r == SQL_NO_DATA)
            break;
        if (!SQL_SUCCEEDED(r)) {
            rc = odbc_fail(c, SQL_HANDLE_STMT, st, "exec");
            break;
        }
        SQLLEN n = 0;
        if (SQL_SUCCEEDED(SQLRowCount(st, &n)))
            c->changes = n;
        r = SQLMoreResults(st);
    }
    SQLFreeHandle(SQL_HANDLE_STMT, st);
    if (rc == 0)
        c->last_used_ms = xd_sql_now_ms();
    return rc;
}

/* ---- statements ---------------------------------------------------------- */

/* Finds or prepares the statement for sql.  *slot is the cache entry, or
 * NULL for a temporary statement the caller frees. */
static int
odbc_prepare(odbc_conn_t *c, const char *sql, SQLHSTMT *out, xd_stmt_ent_t **slot)
{
    bool nested = false;
    xd_stmt_ent_t *hit = xd_stmt_cache_find(&c->cache, sql, &nested);
    if (hit != NULL) {
        *out = hit->stmt;
        *slot = hit;
        return 0;
    }
    SQLHSTMT st = NULL;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &st)))
        return odbc_fail(c, SQL_HANDLE_DBC, c->dbc, "SQLAllocHandle");
    if (!SQL_SUCCEEDED(SQLPrepare(st, (SQLCHAR *)sql, SQL_NTS))) {
        int rc = odbc_fail(c, SQL_HANDLE_STMT, st, "prepare");
        SQLFreeHandle(SQL_HANDLE_STMT, st);
        return rc;
    }
    *slot = nested ? NULL : xd_stmt_cache_add(&c->cache, sql, st);
    *out = st;
    return 0;
}

static int
odbc_bind(odbc_conn_t *c, SQLHSTMT st, const xd_db_val_t *params, size_t n, SQLLEN *ind)
{
    SQLSMALLINT np = 0;
    if (!SQL_SUCCEEDED(SQLNumParams(st, &np)))
        return odbc_fail(c, SQL_HANDLE_STMT, st, "SQLNumParams");
    if ((size_t)np != n || n > ODBC_MAX_PARAMS) {
        snprintf(c->k.err, sizeof c->k.err, "statement has %d parameters, %zu given", (int)np, n);
        return XD_EINVAL;
    }
    bool mssql = c->dialect != NULL && strcmp(c->dialect, "mssql") == 0;
    for (size_t i = 0; i < n; i++) {
        const xd_db_val_t *v = &params[i];
        SQLUSMALLINT idx = (SQLUSMALLINT)(i + 1);
        SQLRETURN r;
        switch (v->type) {
        case XD_DB_NULL:
            ind[i] = SQL_NULL_DATA;
            r = mssql ? SQLBindParameter(st, idx, SQL_PARAM_INPUT, SQL_C_BINARY, SQL_VARBINARY,
                                         1, 0, NULL, 0, &ind[i])
                      : SQLBindParameter(st, idx, SQL_PARAM_INPUT, SQL_C_CHAR, SQL_VARCHAR, 1,
                                         0, NULL, 0, &ind[i]);
            break;
        case XD_DB_INT64:
            ind[i] = 0;
            r = SQLBindParameter(st, idx, SQL_PARAM_INPUT, SQL_C_SBIGINT, SQL_BIGINT, 0, 0,
                                 (SQLPOINTER)&v->i, 0, &ind[i]);
            break;
        case XD_DB_TEXT:
        case XD_DB_BLOB: {
            bool text = v->type == XD_DB_TEXT;
            ind[i] = (SQLLEN)v->s.len;
            r = SQLBindParameter(st, idx, SQL_PARAM_INPUT, text ? SQL_C_CHAR : SQL_C_BINARY,
                                 text ? (mssql ? SQL_WVARCHAR : SQL_VARCHAR) : SQL_VARBINARY,
                                 v->s.len > 0 ? v->s.len : 1, 0,
                                 (SQLPOINTER)(v->s.p != NULL ? v->s.p : ""), (SQLLEN)v->s.len,
                                 &ind[i]);
            break;
        }
        default:
            snprintf(c->k.err, sizeof c->k.err, "parameter %zu has bad type %d", i + 1,
                     (int)v->type);
            return XD_EINVAL;
        }
        if (!SQL_SUCCEEDED(r))
            return odbc_fail(c, SQL_HANDLE_STMT, st, "bind");
    }
    return 0;
}

/* A whole result: cells in row order; text/blob bytes in buf. */
typedef struct odbc_cell {
    xd_db_type type; /* value type */
    int64_t i;       /* INT64 */
    size_t off, len; /* TEXT/BLOB bytes in buf */
} odbc_cell_t;

typedef struct odbc_res {
    size_t ncols;       /* columns */
    xd_db_type *ctypes; /* ncols: what each column is read as */
    odbc_cell_t *cells; /* nrows * ncols */
    size_t ncells, cap; /* used / allocated cells */
    char *buf;          /* bytes */
    size_t len, bcap;   /* used / allocated bytes */
} odbc_res_t;

static void
odbc_res_free(odbc_res_t *r)
{
    xd_free(r->ctypes);
    xd_free(r->cells);
    xd_free(r->buf);
}

static void
odbc_buf_add(odbc_res_t *r, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (r->len + n > r->bcap) {
        size_t cap = r->bcap ? r->bcap : 1024;
        while (cap < r->len + n)
            cap *= 2;
        r->buf = xd_realloc(r->buf, cap);
        r->bcap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
}

static odbc_cell_t *
odbc_cell_add(odbc_res_t *r)
{
    if (r->ncells == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->cells = xd_realloc(r->cells, r->cap * sizeof *r->cells);
    }
    odbc_cell_t *cell = &r->cells[r->ncells++];
    memset(cell, 0, sizeof *cell);
    return cell;
}

static int
odbc_describe(odbc_conn_t *c, SQLHSTMT st, odbc_res_t *r)
{
    r->ctypes = xd_calloc(r->ncols, sizeof *r->ctypes);
    for (size_t k = 0; k < r->ncols; k++) {
        SQLSMALLINT type = 0, digits = 0, nullable = 0, nlen = 0;
        SQLULEN size = 0;
        SQLCHAR name[64];
        if (!SQL_SUCCEEDED(SQLDescribeCol(st, (SQLUSMALLINT)(k + 1), name, sizeof name, &nlen,
                                          &type, &size, &digits, &nullable)))
            return odbc_fail(c, SQL_HANDLE_STMT, st, "SQLDescribeCol");
        switch (type) {
        case SQL_BIGINT:
        case SQL_INTEGER:
        case SQL_SMALLINT:
        case SQL_TINYINT:
        case SQL_BIT:
            r->ctypes[k] = XD_DB_INT64;
            break;
        case SQL_NUMERIC:
        case SQL_DECIMAL:
            r->ctypes[k] = digits == 0 ? XD_DB_INT64 : XD_DB_TEXT;
            break;
        case SQL_BINARY:
        case SQL_VARBINARY:
        case SQL_LONGVARBINARY:
            r->ctypes[k] = XD_DB_BLOB;
            break;
        default:
            r->ctypes[k] = XD_DB_TEXT;
            break;
        }
    }
    return 0;
}

/* Reads column k of the current row into a new cell. */
static int
odbc_get(odbc_conn_t *c, SQLHSTMT st, odbc_res_t *r, size_t k)
{
    odbc_cell_t *cell = odbc_cell_add(r);
    SQLUSMALLINT col = (SQLUSMALLINT)(k + 1);
    SQLLEN ind = 0;
    if (r->ctypes[k] == XD_DB_INT64) {
        SQLBIGINT v = 0;
        SQLRETURN rr = SQLGetData(st, col, SQL_C_SBIGINT, &v, sizeof v, &ind);
        if (!SQL_SUCCEEDED(rr))
            return odbc_fail(c, SQL_HANDLE_STMT, st, "SQLGetData");
        cell->type = ind == SQL_NULL_DATA ? XD_DB_NULL : XD_DB_INT64;
        cell->i = (int64_t)v;
        return 0;
    }
    bool text = r->ctypes[k] == XD_DB_TEXT;
    char chunk[ODBC_CHUNK];
    size_t avail = sizeof chunk - (text ? 1 : 0); /* SQL_C_CHAR ends with NUL */
    cell->type = r->ctypes[k];
    cell->off = r->len;
    for (;;) {
        SQLRETURN rr = SQLGetData(st, col, text ? SQL_C_CHAR : SQL_C_BINARY, chunk,
                                  (SQLLEN)sizeof chunk, &ind);
        if (rr == SQL_NO_DATA)
            break;
        if (!SQL_SUCCEEDED(rr))
            return odbc_fail(c, SQL_HANDLE_STMT, st, "SQLGetData");
        if (ind == SQL_NULL_DATA) {
            cell->type = XD_DB_NULL;
            break;
        }
        size_t got = (ind == SQL_NO_TOTAL || (size_t)ind > avail) ? avail : (size_t)ind;
        odbc_buf_add(r, chunk, got);
        if (rr == SQL_SUCCESS)
            break;
    }
    cell->len = r->len - cell->off;
    return 0;
}

/* Executes st and reads every row into r; then closes the cursor. */
static int
odbc_run(odbc_conn_t *c, SQLHSTMT st, odbc_res_t *r)
{
    SQLRETURN x = SQLExecute(st);
    if (x != SQL_NO_DATA && !SQL_SUCCEEDED(x))
        return odbc_fail(c, SQL_HANDLE_STMT, st, "execute");
    SQLLEN n = 0;
    c->changes = SQL_SUCCEEDED(SQLRowCount(st, &n)) && n > 0 ? n : 0;
    SQLSMALLINT ncols = 0;
    if (!SQL_SUCCEEDED(SQLNumResultCols(st, &ncols)))
        return odbc_fail(c, SQL_HANDLE_STMT, st, "SQLNumResultCols");
    int rc = 0;
    r->ncols = (size_t)(ncols > 0 ? ncols : 0);
    if (r->ncols > 0) {
        rc = odbc_describe(c, st, r);
        while (rc == 0) {
            SQLRETURN f = SQLFetch(st);
            if (f == SQL_NO_DATA)
                break;
            if (!SQL_SUCCEEDED(f)) {
                rc = odbc_fail(c, SQL_HANDLE_STMT, st, "fetch");
                break;
            }
            for (size_t k = 0; rc == 0 && k < r->ncols; k++)
                rc = odbc_get(c, st, r, k);
        }
    }
    SQLFreeStmt(st, SQL_CLOSE);
    SQLFreeStmt(st, SQL_RESET_PARAMS);
    return rc;
}

/* Runs one statement once (the keeper's query). */
static int
odbc_query_once(xd_sqlc_t *k, const char *sql, const xd_db_val_t *params, size_t nparams,
                xd_db_row_handler fn, void *arg, bool *lost)
{
    odbc_conn_t *c = (odbc_conn_t *)k;
    c->state[0] = '\0';
    c->changes = 0;
    const char *w = sql;
    while (*w == ' ' || *w == '\n' || *w == '\t')
        w++;
    c->last_insert = strncasecmp(w, "INSERT", 6) == 0 || strncasecmp(w, "MERGE", 5) == 0;
    SQLHSTMT st = NULL;
    xd_stmt_ent_t *slot = NULL;
    int rc = odbc_prepare(c, sql, &st, &slot);
    if (rc < 0) {
        *lost = odbc_lost(c);
        return rc;
    }
    SQLLEN ind[ODBC_MAX_PARAMS];
    odbc_res_t res = { 0 };
    rc = odbc_bind(c, st, params, nparams, ind);
    if (rc == 0)
        rc = odbc_run(c, st, &res);
    else
        SQLFreeStmt(st, SQL_RESET_PARAMS);
    if (slot != NULL)
        xd_stmt_cache_done(slot);
    else
        SQLFreeHandle(SQL_HANDLE_STMT, st);
    if (rc == 0)
        c->last_used_ms = xd_sql_now_ms();
    else
        *lost = odbc_lost(c);

    /* Rows are handed out after the cursor is closed. */
    if (rc == 0 && fn != NULL && res.ncols > 0) {
        xd_db_val_t *cols = xd_calloc(res.ncols, sizeof *cols);
        for (size_t row = 0; row * res.ncols < res.ncells; row++) {
            for (size_t j = 0; j < res.ncols; j++) {
                const odbc_cell_t *cell = &res.cells[row * res.ncols + j];
                const char *p = res.buf != NULL ? res.buf + cell->off : "";
                if (cell->type == XD_DB_NULL)
                    cols[j] = XD_DB_V_NULL;
                else if (cell->type == XD_DB_INT64)
                    cols[j] = XD_DB_V_INT(cell->i);
                else if (cell->type == XD_DB_BLOB)
                    cols[j] = XD_DB_V_BLOB(p, cell->len);
                else
                    cols[j] = XD_DB_V_TEXT(((xd_str_t){ p, cell->len }));
            }
            int hr = fn(arg, cols, res.ncols);
            if (hr != 0) {
                rc = hr < 0 ? hr : 0;
                break;
            }
        }
        xd_free(cols);
    }
    odbc_res_free(&res);
    return rc;
}

/* Ends the transaction with `how` and returns to autocommit. */
static int
odbc_end(odbc_conn_t *c, SQLSMALLINT how)
{
    int rc = 0;
    if (!SQL_SUCCEEDED(SQLEndTran(SQL_HANDLE_DBC, c->dbc, how)))
        rc = odbc_fail(c, SQL_HANDLE_DBC, c->dbc, how == SQL_COMMIT ? "commit" : "rollback");
    if (rc == 0 || how == SQL_ROLLBACK)
        SQLSetConnectAttr(c->dbc, SQL_ATTR_AUTOCOMMIT, (SQLPOINTER)SQL_AUTOCOMMIT_ON, 0);
    return rc;
}

static int
odbc_end_once(xd_sqlc_t *k, bool commit, bool *lost)
{
    odbc_conn_t *c = (odbc_conn_t *)k;
    c->state[0] = '\0';
    int rc = odbc_end(c, commit ? SQL_COMMIT : SQL_ROLLBACK);
    if (rc < 0)
        *lost = odbc_lost(c);
    else
        c->last_used_ms = xd_sql_now_ms();
    return rc;
}

/* BEGIN: autocommit off (ODBC has no BEGIN statement). */
static int
odbc_begin_once(xd_sqlc_t *k, bool *lost)
{
    odbc_conn_t *c = (odbc_conn_t *)k;
    c->state[0] = '\0';
    if (SQL_SUCCEEDED(SQLSetConnectAttr(c->dbc, SQL_ATTR_AUTOCOMMIT,
                                        (SQLPOINTER)SQL_AUTOCOMMIT_OFF, 0)))
        return 0;
    int rc = odbc_fail(c, SQL_HANDLE_DBC, c->dbc, "begin");
    *lost = odbc_lost(c);
    return rc;
}

static int
odbc_exec_once(xd_sqlc_t *k, const char *sql, bool *lost)
{
    odbc_conn_t *c = (odbc_conn_t *)k;
    c->state[0] = '\0';
    int rc = odbc_direct(c, sql);
    if (rc < 0)
        *lost = odbc_lost(c);
    return rc;
}

/* Before a statement outside a transaction: a dead handle is not usable;
 * one idle for a while is pinged first (a restarted server is found before
 * anything that writes is sent). */
static bool
odbc_usable(xd_sqlc_t *k)
{
    odbc_conn_t *c = (odbc_conn_t *)k;
    SQLUINTEGER dead = SQL_CD_FALSE;
    if (SQL_SUCCEEDED(SQLGetConnectAttr(c->dbc, SQL_ATTR_CONNECTION_DEAD, &dead, 0, NULL)) &&
        dead == SQL_CD_TRUE)
        return false;
    if (xd_sql_now_ms() - c->last_used_ms < ODBC_PING_IDLE_MS)
        return true;
    if (odbc_direct(c, "SELECT 1") == 0)
        return true;
    XD_LOG(NULL, XD_INFO, "db ping failed", "driver=odbc err=\"%s\"", c->k.err);
    return false;
}

static int
odbc_connect_k(xd_sqlc_t *k)
{
    return odbc_connect((odbc_conn_t *)k);
}

static void
odbc_disconnect_k(xd_sqlc_t *k)
{
    odbc_disconnect((odbc_conn_t *)k);
}

static const xd_sqlc_ops_t odbc_ops = {
    .driver = "odbc",
    .connect = odbc_connect_k,
    .disconnect = odbc_disconnect_k,
    .usable = odbc_usable,
    .query = odbc_query_once,
    .exec = odbc_exec_once,
    .begin = odbc_begin_once,
    .end = odbc_end_once,
};

/* The id the last INSERT generated, from the dialect's query; 0 when the
 * last statement was no INSERT (pgsql's lastval() fails in a session that
 * used no sequence, and would end the transaction). */
static int64_t
odbc_last_insert_id(void *h)
{
    odbc_conn_t *c = h;
    const xd_db_dialect_def_t *d = c->dialect != NULL ? xd_db_dialect_find(c->dialect) : NULL;
    if (!c->last_insert || c->dbc == NULL || d == NULL || d->last_id == NULL)
        return 0;
    SQLHSTMT st = NULL;
    SQLBIGINT id = 0;
    SQLLEN ind = 0;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, c->dbc, &st)))
        return 0;
    if (!SQL_SUCCEEDED(SQLExecDirect(st, (SQLCHAR *)d->last_id, SQL_NTS)) ||
        !SQL_SUCCEEDED(SQLFetch(st)) ||
        !SQL_SUCCEEDED(SQLGetData(st, 1, SQL_C_SBIGINT, &id, sizeof id, &ind)) ||
        ind == SQL_NULL_DATA)
        id = 0;
    SQLFreeHandle(SQL_HANDLE_STMT, st);
    return (int64_t)id;
}

static int64_t
odbc_changes(void *h)
{
    return ((odbc_conn_t *)h)->changes;
}

static void
odbc_close(void *h)
{
    odbc_conn_t *c = h;
    if (c == NULL)
        return;
    xd_sqlc_close(&c->k);
    xd_free(c->conninfo);
    xd_free(c);
}

/* ---- connection string ----------------------------------------------- */

/* A connection string being built; len == sizeof buf marks an overflow. */
typedef struct odbc_ci {
    char buf[2048];
    size_t len;
} odbc_ci_t;

static void
ci_put(odbc_ci_t *c, const char *fmt, ...)
{
    if (c->len >= sizeof c->buf)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->buf + c->len, sizeof c->buf - c->len, fmt, ap);
    va_end(ap);
    c->len = n < 0 || (size_t)n >= sizeof c->buf - c->len ? sizeof c->buf : c->len + (size_t)n;
}

/* Appends "key=value;"; a value holding ';', braces or spaces at its ends
 * is braced ("}" doubled), which not every driver accepts for every key,
 * so plain values stay plain. */
static void
ci_odbc(odbc_ci_t *c, const char *key, const char *val)
{
    size_t n = strlen(val);
    if (strpbrk(val, ";{}") == NULL && (n == 0 || (val[0] != ' ' && val[n - 1] != ' '))) {
        ci_put(c, "%s=%s;", key, val);
        return;
    }
    ci_put(c, "%s={", key);
    for (const char *p = val; *p; p++)
        ci_put(c, *p == '}' ? "}}" : "%c", *p);
    ci_put(c, "};");
}

/* Whether the ODBC connection string s sets key (case-insensitive, at the
 * start or after ';'). */
static bool
odbc_has(const char *s, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = s; *p; p++)
        if ((p == s || p[-1] == ';') && strncasecmp(p, key, n) == 0 && p[n] == '=')
            return true;
    return false;
}

/* The connection string from the open parameters: server (sql_server) is
 * an ODBC connection string ("Driver=…;Server=…") or a DSN name, completed
 * with UID, PWD and Database (a DSN names its own) when it does not set
 * them.  NULL when there is no server or the result is too long; the
 * caller frees. */
static char *
odbc_conninfo(const xd_db_params_t *p)
{
    const char *s = p->server;
    if (s == NULL || s[0] == '\0')
        return NULL;
    odbc_ci_t c = { .len = 0 };
    c.buf[0] = '\0';
    ci_put(&c, strchr(s, '=') == NULL ? "DSN=%s" : "%s", s);
    if (c.len > 0 && c.len < sizeof c.buf && c.buf[c.len - 1] != ';')
        ci_put(&c, ";");
    if (!odbc_has(s, "UID") && p->username != NULL && p->username[0] != '\0')
        ci_odbc(&c, "UID", p->username);
    if (!odbc_has(s, "PWD") && p->password != NULL && p->password[0] != '\0')
        ci_odbc(&c, "PWD", p->password);
    if (!odbc_has(s, "Database") && strchr(s, '=') != NULL && p->database != NULL &&
        p->database[0] != '\0')
        ci_odbc(&c, "Database", p->database);
    if (c.len >= sizeof c.buf)
        return NULL;
    return xd_strdup(c.buf);
}

static int
odbc_open(const xd_db_params_t *p, void **out)
{
    pthread_once(&odbc_once, odbc_env_init);
    if (odbc_env == NULL) {
        XD_LOG(NULL, XD_ERROR, "db open failed", "driver=odbc err=\"no ODBC environment\"");
        return XD_EDB;
    }
    if (p->ssl != NULL || p->ssl_cafile != NULL) {
        snprintf(xd_db_open_err, sizeof xd_db_open_err,
                 "sql_ssl and sql_ssl_cafile are not used by odbc: set TLS in the "
                 "connection string");
        XD_LOG(NULL, XD_ERROR, "db open failed", "driver=odbc err=\"%s\"", xd_db_open_err);
        return XD_EINVAL;
    }
    char *ci = p->conninfo != NULL && p->conninfo[0] != '\0' ? xd_strdup(p->conninfo)
                                                              : odbc_conninfo(p);
    if (ci == NULL) {
        snprintf(xd_db_open_err, sizeof xd_db_open_err,
                 "no ODBC connection string (sql_server: a DSN or Driver=…), or too long");
        XD_LOG(NULL, XD_ERROR, "db open failed", "driver=odbc err=\"%s\"", xd_db_open_err);
        return XD_EINVAL;
    }
    odbc_conn_t *c = xd_new(odbc_conn_t);
    xd_sqlc_init(&c->k, &odbc_ops, p->fault_wait_ms);
    xd_stmt_cache_init(&c->cache, odbc_stmt_finalize);
    c->conninfo = ci;
    int rc = xd_sqlc_open(&c->k);
    if (rc == 0 && c->dialect == NULL) {
        snprintf(c->k.err, sizeof c->k.err,
                 "the database behind ODBC is \"%s\": not supported (PostgreSQL, MariaDB, "
                 "MySQL or Microsoft SQL Server)",
                 c->dbms);
        rc = XD_ENOTSUP;
    }
    if (rc < 0) {
        /* The message may quote the connection string's driver, never PWD. */
        XD_LOG(NULL, XD_ERROR, "db open failed", "driver=odbc err=\"%s\"", c->k.err);
        snprintf(xd_db_open_err, sizeof xd_db_open_err, "%.159s", c->k.err);
        odbc_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

static const char *
odbc_dialect(void *h)
{
    const odbc_conn_t *c = h;
    return c->dialect != NULL ? c->dialect : "odbc";
}

const xd_db_driver_t xd_db_driver_odbc = {
    .name = "odbc",
    .open = odbc_open,
    .close = odbc_close,
    .exec = xd_sqlc_exec,
    .query = xd_sqlc_query,
    .begin = xd_sqlc_begin,
    .commit = xd_sqlc_commit,
    .rollback = xd_sqlc_rollback,
    .last_insert_id = odbc_last_insert_id,
    .changes = odbc_changes,
    .errmsg = xd_sqlc_errmsg,
    .dialect = odbc_dialect,
    /* .alive stays NULL: the keeper (sqlconn.c) reconnects and decides what
     * may be retried, so the pool never re-runs a write of unknown outcome. */
};
