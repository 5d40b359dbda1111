/*
 * mysql.c — the MariaDB/MySQL driver ("mysql") over libmariadb (DESIGN.md 4).
 *
 * Settings come from the open parameters (server, port, database, username,
 * password, ssl, ssl_cafile, connect_timeout_s: main.c fills them from
 * sql_*), or, when params->conninfo is set, from it instead: a libpq-style
 * string of key=value pairs separated by spaces (values with spaces in
 * single quotes, \' and \\ escaped), the same shape as the PostgreSQL
 * driver's:
 *
 *   host      server name or address; a value starting with '/' is a Unix
 *             socket path (default localhost)
 *   port      TCP port (default 3306)
 *   dbname    database;   user, password
 *   sslmode   disable (default) | require (TLS, no certificate check) |
 *             verify-full (TLS, certificate and host name checked against
 *             sslrootcert or the system CAs)
 *   sslrootcert  CA file for verify-full
 *   connect_timeout  seconds (default 10); also the read/write timeout is
 *             six times this, so a dead server cannot hang a pool thread
 *
 * Every connection runs with utf8mb4, sql_mode ANSI (double-quoted
 * identifiers, || concatenates) plus STRICT_ALL_TABLES and
 * NO_BACKSLASH_ESCAPES (string literals as in standard SQL and SQLite),
 * time_zone +00:00, and innodb_lock_wait_timeout from busy_timeout_ms.
 * CLIENT_FOUND_ROWS makes changes() count matched rows, as SQLite does, so
 * "UPDATE …; if no row changed, INSERT" works when the values are equal.
 *
 * Statements: MySQL takes `?` natively.  Each handle caches up to
 * XD_STMT_CACHE_SLOTS prepared statements keyed by SQL text in the LRU cache
 * shared with sqlite.c and odbc.c (sqlconn.c); a statement whose query is
 * running (a row handler that runs the same SQL) gets a temporary one.
 * Results are stored client-side (mysql_stmt_store_result) before the first
 * row is handed out, so a row handler may run other queries on the same
 * connection.
 *
 * Lost connections: the connection keeper of sqlconn.c (shared with
 * odbc.c) decides what is retried and waits, reconnecting with backoff, up
 * to sql_fault_wait for a database that is away (sqlconn.h has the
 * policy).  This file tells it when a connection is lost (client error
 * numbers, my_errno_lost) and, before an idle connection is used, whether
 * the server closed it: its socket is readable while nothing is expected
 * (restart, wait_timeout, KILL), so it is replaced before anything is sent.
 *
 * Ownership: the handle and everything in it belong to the thread that
 * holds the connection (db_int.h).  Row values point into the statement's
 * fetch buffers and are valid during the handler call only.
 */
#include <errno.h>
#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "storage/db_int.h"
#include "storage/sqlconn.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define MY_STACK_COLS 16           /* row arrays up to this size live on the stack */
#define MY_CONNECT_TIMEOUT_S 10    /* default connect_timeout */

/* Connection settings parsed from conninfo; strings owned. */
typedef struct my_opts {
    char *host, *user, *password, *dbname, *socket, *sslrootcert;
    unsigned port;
    unsigned connect_timeout; /* seconds */
    int sslmode;              /* 0 disable, 1 require, 2 verify-full */
    unsigned lock_wait_s;     /* innodb_lock_wait_timeout */
} my_opts_t;

/* One connection.  Touched only by the thread that holds it. */
typedef struct my_conn {
    xd_sqlc_t k;                     /* first: the keeper (sqlconn.h); k.err */
    MYSQL *m;                        /* NULL while disconnected */
    my_opts_t o;                     /* how to (re)connect */
    xd_stmt_cache_t cache;           /* MYSQL_STMTs of the current MYSQL */
    int64_t last_id;                 /* last AUTO_INCREMENT value generated */
    int64_t changes;                 /* rows matched by the last statement */
} my_conn_t;

/* ---- conninfo ------------------------------------------------------------ */

static void
my_opts_free(my_opts_t *o)
{
    xd_free(o->host);
    xd_free(o->user);
    xd_free(o->password);
    xd_free(o->dbname);
    xd_free(o->socket);
    xd_free(o->sslrootcert);
    memset(o, 0, sizeof *o);
}

/* Parses conninfo into o; unknown keys are an error (a typo must not go
 * unnoticed).  The message goes to err. */
static int
my_opts_parse(const char *conninfo, my_opts_t *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->port = 3306;
    o->connect_timeout = MY_CONNECT_TIMEOUT_S;
    const char *p = conninfo != NULL ? conninfo : "";
    char *k, *v;
    int r;
    while ((r = xd_sql_next_pair(&p, &k, &v)) == 1) {
        char **dst = NULL;
        int bad = 0;
        if (strcmp(k, "host") == 0) {
            dst = v[0] == '/' ? &o->socket : &o->host;
        } else if (strcmp(k, "user") == 0) {
            dst = &o->user;
        } else if (strcmp(k, "password") == 0) {
            dst = &o->password;
        } else if (strcmp(k, "dbname") == 0) {
            dst = &o->dbname;
        } else if (strcmp(k, "sslrootcert") == 0) {
            dst = &o->sslrootcert;
        } else if (strcmp(k, "port") == 0 || strcmp(k, "connect_timeout") == 0) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            bad = *v == '\0' || *end != '\0' || n == 0 || n > 65535;
            if (!bad && k[0] == 'p')
                o->port = (unsigned)n;
            else if (!bad)
                o->connect_timeout = (unsigned)n;
        } else if (strcmp(k, "sslmode") == 0) {
            if (strcmp(v, "disable") == 0)
                o->sslmode = 0;
            else if (strcmp(v, "require") == 0)
                o->sslmode = 1;
            else if (strcmp(v, "verify-full") == 0 || strcmp(v, "verify-ca") == 0)
                o->sslmode = 2;
            else
                bad = 1;
        } else {
            snprintf(err, errlen, "unknown conninfo key \"%s\"", k);
            bad = 2;
        }
        if (bad == 1)
            snprintf(err, errlen, "bad conninfo value for %s", k);
        if (dst != NULL) {
            xd_free(*dst);
            *dst = v;
            v = NULL;
        }
        xd_free(k);
        xd_free(v);
        if (bad) {
            my_opts_free(o);
            return XD_EINVAL;
        }
    }
    if (r < 0) {
        snprintf(err, errlen, "malformed conninfo (key=value pairs expected)");
        my_opts_free(o);
        return XD_EINVAL;
    }
    return 0;
}

/* Fills o from the open parameters (sql_* options) when there is no
 * conninfo.  sslmode names are libpq's; MySQL has no `prefer` (TLS when
 * offered, unverified, would look safer than it is): refused. */
static int
my_opts_params(const xd_db_params_t *p, my_opts_t *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->port = p->port != 0 ? p->port : 3306;
    o->connect_timeout = p->connect_timeout_s != 0 ? p->connect_timeout_s : MY_CONNECT_TIMEOUT_S;
    if (p->ssl == NULL || strcmp(p->ssl, "disable") == 0) {
        o->sslmode = 0;
    } else if (strcmp(p->ssl, "require") == 0) {
        o->sslmode = 1;
    } else if (strcmp(p->ssl, "verify-full") == 0 || strcmp(p->ssl, "verify-ca") == 0) {
        o->sslmode = 2;
    } else {
        snprintf(err, errlen,
                 "sql_ssl \"%s\" not supported by mysql (disable, require, verify-ca, "
                 "verify-full)",
                 p->ssl);
        return XD_EINVAL;
    }
    const char *srv = p->server != NULL && p->server[0] != '\0' ? p->server : NULL;
    if (srv != NULL)
        *(srv[0] == '/' ? &o->socket : &o->host) = xd_strdup(srv);
    if (p->username != NULL && p->username[0] != '\0')
        o->user = xd_strdup(p->username);
    if (p->password != NULL)
        o->password = xd_strdup(p->password);
    if (p->database != NULL && p->database[0] != '\0')
        o->dbname = xd_strdup(p->database);
    if (p->ssl_cafile != NULL)
        o->sslrootcert = xd_strdup(p->ssl_cafile);
    return 0;
}

/* ---- errors -------------------------------------------------------------- */

static bool
my_errno_lost(unsigned e)
{
    return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == CR_SERVER_LOST_EXTENDED ||
           e == ER_CONNECTION_KILLED || e == CR_ERR_NET_READ || e == CR_ERR_NET_WRITE ||
           e == 4031 /* ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8) */ ||
           e == 1053 /* ER_SERVER_SHUTDOWN */;
}

/* Maps a server or client error number to XD_E*. */
static int
my_map(unsigned e)
{
    switch (e) {
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
        return XD_EDB_BUSY;
    case ER_DUP_ENTRY:
    case ER_DUP_ENTRY_WITH_KEY_NAME:
    case ER_ROW_IS_REFERENCED_2:
    case ER_NO_REFERENCED_ROW_2:
    case 1216: /* ER_NO_REFERENCED_ROW */
    case 1217: /* ER_ROW_IS_REFERENCED */
    case ER_BAD_NULL_ERROR:
    case ER_CONSTRAINT_FAILED:
    case 3819: /* ER_CHECK_CONSTRAINT_VIOLATED (MySQL 8) */
        return XD_EDB_CONSTRAINT;
    default:
        return XD_EDB;
    }
}

static void
my_stmt_finalize(void *st)
{
    mysql_stmt_close(st);
}

static void
my_disconnect(my_conn_t *c)
{
    xd_stmt_cache_clear(&c->cache);
    if (c->m != NULL)
        mysql_close(c->m);
    c->m = NULL;
}

/* Keeps the message of error number e (message msg) and maps it. */
static int
my_fail(my_conn_t *c, unsigned e, const char *msg)
{
    snprintf(c->k.err, sizeof c->k.err, "%s (%u)", msg, e);
    return my_map(e);
}

/* ---- connecting ---------------------------------------------------------- */

/* Runs session setup SQL on a fresh connection. */
static int
my_setup(my_conn_t *c)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SET SESSION sql_mode = 'ANSI,STRICT_ALL_TABLES,NO_BACKSLASH_ESCAPES,"
             "NO_ENGINE_SUBSTITUTION', time_zone = '+00:00', innodb_lock_wait_timeout = %u",
             c->o.lock_wait_s);
    if (mysql_real_query(c->m, sql, strlen(sql)) != 0)
        return my_fail(c, mysql_errno(c->m), mysql_error(c->m));
    return 0;
}

/* Opens c->m.  XD_EDB with the reason in c->k.err. */
static int
my_connect(my_conn_t *c)
{
    XD_ASSERT(c->m == NULL);
    MYSQL *m = mysql_init(NULL);
    if (m == NULL) {
        snprintf(c->k.err, sizeof c->k.err, "mysql_init failed");
        return XD_EDB;
    }
    unsigned to = c->o.connect_timeout, rw = to * 6;
    my_bool no = 0, yes = 1;
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &to);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rw);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &rw);
    mysql_options(m, MYSQL_OPT_RECONNECT, &no); /* we reconnect, knowing the tx state */
    if (c->o.sslmode > 0) {
        mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &yes);
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, c->o.sslmode == 2 ? &yes : &no);
        if (c->o.sslrootcert != NULL)
            mysql_options(m, MYSQL_OPT_SSL_CA, c->o.sslrootcert);
    } else {
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &no);
    }
    const char *host = c->o.socket != NULL ? "localhost" : c->o.host ? c->o.host : "localhost";
    if (mysql_real_connect(m, host, c->o.user, c->o.password, c->o.dbname, c->o.port,
                           c->o.socket, CLIENT_FOUND_ROWS | CLIENT_MULTI_STATEMENTS) == NULL) {
        snprintf(c->k.err, sizeof c->k.err, "connect to %s:%u failed: %s (%u)",
                 c->o.socket ? c->o.socket : host, c->o.port, mysql_error(m), mysql_errno(m));
        mysql_close(m);
        return XD_EDB;
    }
    c->m = m;
    int rc = my_setup(c);
    if (rc < 0) {
        my_disconnect(c);
        return XD_EDB;
    }
    return 0;
}

/* ---- statements ---------------------------------------------------------- */

/* Finds or prepares the statement for sql.  *slot is the cache entry, or
 * NULL for a temporary statement the caller closes.  On a lost connection
 * returns XD_EDB with *lost set. */
static int
my_prepare(my_conn_t *c, const char *sql, MYSQL_STMT **out, xd_stmt_ent_t **slot, bool *lost)
{
    bool nested = false;
    xd_stmt_ent_t *hit = xd_stmt_cache_find(&c->cache, sql, &nested);
    if (hit != NULL) {
        *out = hit->stmt;
        *slot = hit;
        return 0;
    }
    MYSQL_STMT *st = mysql_stmt_init(c->m);
    if (st == NULL)
        return my_fail(c, mysql_errno(c->m), "mysql_stmt_init failed");
    if (mysql_stmt_prepare(st, sql, strlen(sql)) != 0) {
        unsigned e = mysql_stmt_errno(st);
        int rc = my_fail(c, e, mysql_stmt_error(st));
        *lost = my_errno_lost(e);
        if (e == 1064 /* ER_PARSE_ERROR */ && strchr(sql, ';') != NULL)
            rc = XD_EINVAL; /* more than one statement: xd_db_exec runs those */
        mysql_stmt_close(st);
        return rc;
    }
    my_bool upd = 1;
    mysql_stmt_attr_set(st, STMT_ATTR_UPDATE_MAX_LENGTH, &upd);
    *slot = nested ? NULL : xd_stmt_cache_add(&c->cache, sql, st);
    *out = st;
    return 0;
}

static int
my_bind(my_conn_t *c, MYSQL_STMT *st, const xd_db_val_t *params, size_t n, MYSQL_BIND *b,
        unsigned long *lens)
{
    if (mysql_stmt_param_count(st) != n) {
        snprintf(c->k.err, sizeof c->k.err, "statement has %lu parameters, %zu given",
                 mysql_stmt_param_count(st), n);
        return XD_EINVAL;
    }
    if (n == 0)
        return 0;
    memset(b, 0, n * sizeof *b);
    for (size_t i = 0; i < n; i++) {
        const xd_db_val_t *v = &params[i];
        switch (v->type) {
        case XD_DB_NULL:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        case XD_DB_INT64:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&v->i;
            break;
        case XD_DB_TEXT:
        case XD_DB_BLOB:
            b[i].buffer_type = v->type == XD_DB_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            b[i].buffer = (void *)(v->s.p != NULL ? v->s.p : "");
            lens[i] = (unsigned long)v->s.len;
            b[i].buffer_length = lens[i];
            b[i].length = &lens[i];
            break;
        default:
            snprintf(c->k.err, sizeof c->k.err, "parameter %zu has bad type %d", i + 1,
                     (int)v->type);
            return XD_EINVAL;
        }
    }
    if (mysql_stmt_bind_param(st, b) != 0)
        return my_fail(c, mysql_stmt_errno(st), mysql_stmt_error(st));
    return 0;
}

/* Result column buffers of one query. */
typedef struct my_res {
    size_t n;           /* columns */
    MYSQL_BIND *b;      /* n binds */
    unsigned long *len; /* n lengths */
    my_bool *null;      /* n null flags */
    int64_t *ints;      /* n integer slots */
    char **bufs;        /* n buffers for text/blob (NULL for integers) */
    xd_db_type *types;  /* n value types handed out */
} my_res_t;

static void
my_res_free(my_res_t *r)
{
    for (size_t i = 0; i < r->n && r->bufs != NULL; i++)
        xd_free(r->bufs[i]);
    xd_free(r->b);
    xd_free(r->len);
    xd_free(r->null);
    xd_free(r->ints);
    xd_free(r->bufs);
    xd_free(r->types);
}

/* Sets up result buffers from the metadata (after store_result, so
 * max_length is known).  Integer columns (and DECIMAL without a fraction,
 * e.g. SUM of integers) come as INT64; binary strings as BLOB; the rest
 * (text, dates, floating point) as TEXT. */
static int
my_res_bind(my_conn_t *c, MYSQL_STMT *st, MYSQL_RES *meta, my_res_t *r)
{
    r->n = mysql_num_fields(meta);
    MYSQL_FIELD *f = mysql_fetch_fields(meta);
    r->b = xd_calloc(r->n, sizeof *r->b);
    r->len = xd_calloc(r->n, sizeof *r->len);
    r->null = xd_calloc(r->n, sizeof *r->null);
    r->ints = xd_calloc(r->n, sizeof *r->ints);
    r->bufs = xd_calloc(r->n, sizeof *r->bufs);
    r->types = xd_calloc(r->n, sizeof *r->types);
    for (size_t i = 0; i < r->n; i++) {
        MYSQL_BIND *b = &r->b[i];
        b->length = &r->len[i];
        b->is_null = &r->null[i];
        switch (f[i].type) {
        case MYSQL_TYPE_TINY:
        case MYSQL_TYPE_SHORT:
        case MYSQL_TYPE_INT24:
        case MYSQL_TYPE_LONG:
        case MYSQL_TYPE_LONGLONG:
        case MYSQL_TYPE_YEAR:
        case MYSQL_TYPE_BIT:
            r->types[i] = XD_DB_INT64;
            break;
        case MYSQL_TYPE_NEWDECIMAL:
        case MYSQL_TYPE_DECIMAL:
            r->types[i] = f[i].decimals == 0 ? XD_DB_INT64 : XD_DB_TEXT;
            break;
        case MYSQL_TYPE_TINY_BLOB:
        case MYSQL_TYPE_MEDIUM_BLOB:
        case MYSQL_TYPE_LONG_BLOB:
        case MYSQL_TYPE_BLOB:
        case MYSQL_TYPE_STRING:
        case MYSQL_TYPE_VAR_STRING:
        case MYSQL_TYPE_VARCHAR:
            r->types[i] = f[i].charsetnr == 63 /* binary */ ? XD_DB_BLOB : XD_DB_TEXT;
            break;
        default:
            r->types[i] = XD_DB_TEXT;
            break;
        }
        if (r->types[i] == XD_DB_INT64) {
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &r->ints[i];
            b->is_unsigned = 0;
        } else {
            size_t cap = (size_t)f[i].max_length + 1;
            r->bufs[i] = xd_malloc(cap);
            b->buffer_type = r->types[i] == XD_DB_BLOB ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING;
            b->buffer = r->bufs[i];
            b->buffer_length = (unsigned long)cap;
        }
    }
    if (mysql_stmt_bind_result(st, r->b) != 0)
        return my_fail(c, mysql_stmt_errno(st), mysql_stmt_error(st));
    return 0;
}

static void
my_row(const my_res_t *r, xd_db_val_t *cols)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->null[i])
            cols[i] = XD_DB_V_NULL;
        else if (r->types[i] == XD_DB_INT64)
            cols[i] = XD_DB_V_INT(r->ints[i]);
        else if (r->types[i] == XD_DB_BLOB)
            cols[i] = XD_DB_V_BLOB(r->bufs[i], r->len[i]);
        else
            cols[i] = XD_DB_V_TEXT(((xd_str_t){ r->bufs[i], r->len[i] }));
    }
}

/* Runs one statement once (the keeper's query).  *lost tells a lost
 * connection. */
static int
my_query_once(xd_sqlc_t *k, const char *sql, const xd_db_val_t *params, size_t nparams,
              xd_db_row_handler fn, void *arg, bool *lost)
{
    my_conn_t *c = (my_conn_t *)k;
    c->changes = 0;
    MYSQL_STMT *st = NULL;
    xd_stmt_ent_t *slot = NULL;
    int rc = my_prepare(c, sql, &st, &slot, lost);
    if (rc < 0)
        return rc;

    MYSQL_BIND pstack[MY_STACK_COLS];
    unsigned long lstack[MY_STACK_COLS];
    MYSQL_BIND *pb = nparams > MY_STACK_COLS ? xd_calloc(nparams, sizeof *pb) : pstack;
    unsigned long *pl = nparams > MY_STACK_COLS ? xd_calloc(nparams, sizeof *pl) : lstack;
    my_res_t res = { 0 };
    MYSQL_RES *meta = NULL;
    bool stored = false;

    rc = my_bind(c, st, params, nparams, pb, pl);
    if (rc == 0 && mysql_stmt_execute(st) != 0) {
        unsigned e = mysql_stmt_errno(st);
        rc = my_fail(c, e, mysql_stmt_error(st));
        *lost = my_errno_lost(e);
    }
    if (rc == 0) {
        c->changes = (int64_t)mysql_stmt_affected_rows(st);
        uint64_t id = mysql_stmt_insert_id(st);
        if (id != 0)
            c->last_id = (int64_t)id;
        meta = mysql_stmt_result_metadata(st);
    }
    if (rc == 0 && meta != NULL) {
        if (mysql_stmt_store_result(st) != 0) {
            unsigned e = mysql_stmt_errno(st);
            rc = my_fail(c, e, mysql_stmt_error(st));
            *lost = my_errno_lost(e);
        } else {
            stored = true;
            rc = my_res_bind(c, st, meta, &res);
        }
    }
    if (rc == 0 && stored) {
        xd_db_val_t cstack[MY_STACK_COLS];
        xd_db_val_t *cols = res.n > MY_STACK_COLS ? xd_calloc(res.n, sizeof *cols) : cstack;
        for (;;) {
            int f = mysql_stmt_fetch(st);
            if (f == MYSQL_NO_DATA)
                break;
            if (f == 1) {
                rc = my_fail(c, mysql_stmt_errno(st), mysql_stmt_error(st));
                break;
            }
            /* MYSQL_DATA_TRUNCATED cannot happen: buffers are max_length + 1,
             * and integers fit int64. */
            if (fn == NULL)
                continue;
            my_row(&res, cols);
            int r = fn(arg, cols, res.n);
            if (r != 0) {
                rc = r < 0 ? r : 0;
                break;
            }
        }
        if (cols != cstack)
            xd_free(cols);
    }

    if (meta != NULL)
        mysql_free_result(meta);
    my_res_free(&res);
    if (pb != pstack)
        xd_free(pb);
    if (pl != lstack)
        xd_free(pl);
    if (stored)
        mysql_stmt_free_result(st);
    if (slot != NULL) {
        xd_stmt_cache_done(slot);
    } else {
        mysql_stmt_close(st);
    }
    return rc;
}

/* The keeper's exec: SQL text, maybe several statements. */
static int
my_exec_once(xd_sqlc_t *k, const char *sql, bool *lost)
{
    my_conn_t *c = (my_conn_t *)k;
    int rc = 0;
    unsigned e = 0;
    if (mysql_real_query(c->m, sql, strlen(sql)) != 0) {
        e = mysql_errno(c->m);
        rc = my_fail(c, e, mysql_error(c->m));
    }
    /* Every result of a multi-statement text must be consumed; the first
     * failing statement ends the batch. */
    while (rc == 0) {
        MYSQL_RES *res = mysql_store_result(c->m);
        if (res != NULL)
            mysql_free_result(res);
        else if (mysql_field_count(c->m) != 0) {
            e = mysql_errno(c->m);
            rc = my_fail(c, e, mysql_error(c->m));
            break;
        }
        c->changes = (int64_t)mysql_affected_rows(c->m);
        int n = mysql_next_result(c->m);
        if (n == -1)
            break;
        if (n > 0) {
            e = mysql_errno(c->m);
            rc = my_fail(c, e, mysql_error(c->m));
        }
    }
    *lost = rc < 0 && my_errno_lost(e);
    return rc;
}

/* One statement of transaction control. */
static int
my_simple(my_conn_t *c, const char *sql, bool *lost)
{
    if (mysql_real_query(c->m, sql, strlen(sql)) == 0)
        return 0;
    unsigned e = mysql_errno(c->m);
    *lost = my_errno_lost(e);
    return my_fail(c, e, mysql_error(c->m));
}

static int
my_begin_once(xd_sqlc_t *k, bool *lost)
{
    return my_simple((my_conn_t *)k, "START TRANSACTION", lost);
}

static int
my_end_once(xd_sqlc_t *k, bool commit, bool *lost)
{
    return my_simple((my_conn_t *)k, commit ? "COMMIT" : "ROLLBACK", lost);
}

/* Before using an idle connection: a socket that is readable while nothing
 * is expected means the server closed it (restart, wait_timeout, KILL). */
static bool
my_usable(xd_sqlc_t *k)
{
    my_conn_t *c = (my_conn_t *)k;
    struct pollfd pfd = { .fd = (int)mysql_get_socket(c->m), .events = POLLIN };
    return pfd.fd >= 0 && poll(&pfd, 1, 0) == 0;
}

static int
my_connect_k(xd_sqlc_t *k)
{
    return my_connect((my_conn_t *)k);
}

static void
my_disconnect_k(xd_sqlc_t *k)
{
    my_disconnect((my_conn_t *)k);
}

static const xd_sqlc_ops_t my_ops = {
    .driver = "mysql",
    .connect = my_connect_k,
    .disconnect = my_disconnect_k,
    .usable = my_usable,
    .query = my_query_once,
    .exec = my_exec_once,
    .begin = my_begin_once,
    .end = my_end_once,
};

static int64_t
my_last_insert_id(void *h)
{
    return ((my_conn_t *)h)->last_id;
}

static int64_t
my_changes(void *h)
{
    return ((my_conn_t *)h)->changes;
}

static void
my_close(void *h)
{
    my_conn_t *c = h;
    if (c == NULL)
        return;
    xd_sqlc_close(&c->k);
    my_opts_free(&c->o);
    xd_free(c);
}

static pthread_once_t my_lib_once = PTHREAD_ONCE_INIT;
static int my_lib_rc;

/* mysql_init() would initialise the library on first use, but not safely
 * when two threads do it at once. */
static void
my_lib_init(void)
{
    my_lib_rc = mysql_library_init(0, NULL, NULL);
}

static int
my_open(const xd_db_params_t *p, void **out)
{
    pthread_once(&my_lib_once, my_lib_init);
    if (my_lib_rc != 0) {
        XD_LOG(NULL, XD_ERROR, "db open failed", "driver=mysql err=\"library init failed\"");
        return XD_EDB;
    }
    my_conn_t *c = xd_new(my_conn_t);
    xd_sqlc_init(&c->k, &my_ops, p->fault_wait_ms);
    xd_stmt_cache_init(&c->cache, my_stmt_finalize);
    int rc = p->conninfo != NULL ? my_opts_parse(p->conninfo, &c->o, c->k.err, sizeof c->k.err)
                                 : my_opts_params(p, &c->o, c->k.err, sizeof c->k.err);
    if (rc == 0) {
        unsigned ms = p->busy_timeout_ms ? p->busy_timeout_ms : 5000;
        c->o.lock_wait_s = ms < 1000 ? 1 : ms / 1000;
        rc = xd_sqlc_open(&c->k);
    }
    if (rc < 0) {
        XD_LOG(NULL, XD_ERROR, "db open failed", "driver=mysql err=\"%s\"", c->k.err);
        snprintf(xd_db_open_err, sizeof xd_db_open_err, "%.159s", c->k.err);
        my_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

static const char *
my_dialect(void *h)
{
    (void)h;
    return "mysql";
}

const xd_db_driver_t xd_db_driver_mysql = {
    .name = "mysql",
    .open = my_open,
    .close = my_close,
    .exec = xd_sqlc_exec,
    .query = xd_sqlc_query,
    .begin = xd_sqlc_begin,
    .commit = xd_sqlc_commit,
    .rollback = xd_sqlc_rollback,
    .last_insert_id = my_last_insert_id,
    .changes = my_changes,
    .errmsg = xd_sqlc_errmsg,
    .dialect = my_dialect,
    /* .alive stays NULL: the keeper (sqlconn.c) reconnects and decides what
     * may be retried, so the pool never re-runs a write of unknown outcome. */
};
