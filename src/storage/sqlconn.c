/*
 * sqlconn.c — what the SQL drivers share (sqlconn.h): the prepared
 * statement LRU cache, the connection keeper of the drivers that reconnect
 * themselves (mysql, odbc), and small helpers.
 *
 * Why the keeper lives in the drivers and not in the pool (storage.c):
 * the pool re-runs a statement, or a whole transaction, whose connection
 * was lost; that is right for PostgreSQL's reads and rolled-back
 * transactions but may apply a write or a COMMIT twice.  The keeper knows
 * the transaction state on its connection, so it re-runs only what cannot
 * have been applied, and still waits (bounded by sql_fault_wait) for a
 * database that is restarting, as the pool does for pgsql.
 */
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

#define SQLC_FAULT_WAIT_MS_DEFAULT 5000
#define SQLC_RECONNECT_MIN_MS 50   /* first pause between connection attempts */
#define SQLC_RECONNECT_MAX_MS 1000 /* longest pause */

/* ---- helpers ------------------------------------------------------------- */

uint64_t
xd_sql_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

uint64_t
xd_sql_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
sql_sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

bool
xd_sql_is_read(const char *sql)
{
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '(')
        sql++;
    return strncasecmp(sql, "SELECT", 6) == 0 || strncasecmp(sql, "SHOW", 4) == 0;
}

int
xd_sql_next_pair(const char **pp, char **key, char **val)
{
    const char *p = *pp;
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    if (*p == '\0')
        return 0;
    const char *k = p;
    while (*p != '\0' && *p != '=' && *p != ' ')
        p++;
    if (*p != '=' || p == k)
        return XD_EINVAL;
    size_t klen = (size_t)(p - k);
    p++;
    size_t cap = strlen(p) + 1, n = 0;
    char *v = xd_malloc(cap);
    if (*p == '\'') {
        for (p++; *p != '\'' && *p != '\0'; p++) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            v[n++] = *p;
        }
        if (*p != '\'') {
            xd_free(v);
            return XD_EINVAL;
        }
        p++;
    } else {
        for (; *p != ' ' && *p != '\t' && *p != '\0'; p++) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            v[n++] = *p;
        }
    }
    v[n] = '\0';
    *key = xd_strndup(k, klen);
    *val = v;
    *pp = p;
    return 1;
}

/* ---- statement cache ----------------------------------------------------- */

void
xd_stmt_cache_init(xd_stmt_cache_t *c, void (*finalize)(void *stmt))
{
    memset(c, 0, sizeof *c);
    c->finalize = finalize;
}

xd_stmt_ent_t *
xd_stmt_cache_find(xd_stmt_cache_t *c, const char *sql, bool *nested)
{
    uint64_t h = xd_sql_hash(sql);
    *nested = false;
    c->tick++;
    for (unsigned i = 0; i < XD_STMT_CACHE_SLOTS; i++) {
        xd_stmt_ent_t *e = &c->slot[i];
        if (e->sql != NULL && e->hash == h && strcmp(e->sql, sql) == 0) {
            if (e->busy) {
                *nested = true; /* the same SQL inside its own row handler */
                return NULL;
            }
            e->used = c->tick;
            e->busy = true;
            return e;
        }
    }
    return NULL;
}

xd_stmt_ent_t *
xd_stmt_cache_add(xd_stmt_cache_t *c, const char *sql, void *stmt)
{
    xd_stmt_ent_t *victim = NULL;
    for (unsigned i = 0; i < XD_STMT_CACHE_SLOTS; i++) {
        xd_stmt_ent_t *e = &c->slot[i];
        if (e->busy)
            continue;
        if (e->sql == NULL) {
            victim = e;
            break;
        }
        if (victim == NULL || e->used < victim->used)
            victim = e;
    }
    if (victim == NULL)
        return NULL;
    if (victim->sql != NULL) {
        c->finalize(victim->stmt);
        xd_free(victim->sql);
    }
    victim->sql = xd_strdup(sql);
    victim->hash = xd_sql_hash(sql);
    victim->stmt = stmt;
    victim->used = c->tick;
    victim->busy = true;
    return victim;
}

void
xd_stmt_cache_drop(xd_stmt_cache_t *c, xd_stmt_ent_t *e)
{
    if (e->sql != NULL) {
        c->finalize(e->stmt);
        xd_free(e->sql);
    }
    memset(e, 0, sizeof *e);
}

void
xd_stmt_cache_clear(xd_stmt_cache_t *c)
{
    for (unsigned i = 0; i < XD_STMT_CACHE_SLOTS; i++) {
        XD_DEBUG_ASSERT(!c->slot[i].busy);
        xd_stmt_cache_drop(c, &c->slot[i]);
    }
}

/* ---- connection keeper --------------------------------------------------- */

_Thread_local xd_db_drv_events_t xd_db_drv_events = { .up = -1 };

/* A connection lost or refused, for xmppctl status (db_int.h). */
static void
sqlc_note_failure(const xd_sqlc_t *k)
{
    xd_db_drv_events.failures++;
    xd_db_drv_events.up = 0;
    snprintf(xd_db_drv_events.last_error, sizeof xd_db_drv_events.last_error, "%.159s",
             k->err);
}

void
xd_sqlc_init(xd_sqlc_t *k, const xd_sqlc_ops_t *ops, unsigned fault_wait_ms)
{
    memset(k, 0, sizeof *k);
    k->ops = ops;
    k->fault_wait_ms = fault_wait_ms != 0 ? fault_wait_ms : SQLC_FAULT_WAIT_MS_DEFAULT;
}

void
xd_sqlc_err_append(xd_sqlc_t *k, const char *text)
{
    size_t len = strlen(k->err);
    if (len + 1 < sizeof k->err)
        snprintf(k->err + len, sizeof k->err - len, "%s", text);
}

int
xd_sqlc_open(xd_sqlc_t *k)
{
    k->err[0] = '\0';
    int rc = k->ops->connect(k);
    k->up = rc == 0;
    return rc;
}

void
xd_sqlc_close(xd_sqlc_t *k)
{
    k->ops->disconnect(k);
    k->up = false;
}

/* The connection is gone (or about to be replaced): close it. */
static void
sqlc_down(xd_sqlc_t *k)
{
    if (k->up)
        sqlc_note_failure(k);
    k->ops->disconnect(k);
    k->up = false;
    k->was_down = true;
}

/* Opens a new connection, waiting for the database: attempts with backoff
 * until fault_wait_ms has passed.  XD_EDB then, with a log line. */
static int
sqlc_connect_wait(xd_sqlc_t *k)
{
    sqlc_down(k);
    uint64_t start = xd_sql_now_ms(), deadline = start + k->fault_wait_ms;
    unsigned pause = SQLC_RECONNECT_MIN_MS;
    for (unsigned attempt = 1;; attempt++) {
        k->err[0] = '\0';
        int rc = k->ops->connect(k);
        if (rc == 0) {
            k->up = true;
            k->was_down = false;
            xd_db_drv_events.reconnects++;
            xd_db_drv_events.up = 1;
            XD_LOG(NULL, XD_NOTICE, "db reconnected", "driver=%s attempts=%u waited_ms=%llu",
                   k->ops->driver, attempt, (unsigned long long)(xd_sql_now_ms() - start));
            return 0;
        }
        sqlc_note_failure(k);
        uint64_t now = xd_sql_now_ms();
        if (rc == XD_EINVAL || rc == XD_ENOTSUP || now >= deadline) {
            char why[sizeof k->err];
            memcpy(why, k->err, sizeof why);
            XD_LOG(NULL, XD_ERROR, "db unavailable", "driver=%s attempts=%u waited_ms=%llu err=\"%s\"",
                   k->ops->driver, attempt, (unsigned long long)(now - start), why);
            int n = snprintf(k->err, sizeof k->err, "database unavailable for %llu ms: ",
                             (unsigned long long)(now - start));
            if (n > 0 && (size_t)n < sizeof k->err)
                snprintf(k->err + n, sizeof k->err - (size_t)n, "%.*s",
                         (int)(sizeof k->err - (size_t)n - 1), why);
            return rc == XD_EINVAL || rc == XD_ENOTSUP ? rc : XD_EDB;
        }
        if (attempt == 1)
            XD_LOG(NULL, XD_WARN, "db reconnect failed", "driver=%s err=\"%s\" wait_ms=%u",
                   k->ops->driver, k->err, k->fault_wait_ms);
        unsigned ms = pause;
        if (now + ms > deadline)
            ms = (unsigned)(deadline - now);
        sql_sleep_ms(ms);
        pause = pause * 2 > SQLC_RECONNECT_MAX_MS ? SQLC_RECONNECT_MAX_MS : pause * 2;
    }
}

/* Before a statement or BEGIN outside a transaction: a usable connection,
 * or a new one (waiting). */
static int
sqlc_ensure(xd_sqlc_t *k)
{
    if (k->up) {
        if (k->ops->usable(k))
            return 0;
        XD_LOG(NULL, XD_INFO, "db connection closed by the server", "driver=%s",
               k->ops->driver);
        if (k->err[0] == '\0')
            snprintf(k->err, sizeof k->err, "connection closed by the server");
    }
    return sqlc_connect_wait(k);
}

/* A lost connection inside a transaction: the server has rolled it back;
 * xd_db_tx runs the whole body again after our BUSY. */
static int
sqlc_lost_in_tx(xd_sqlc_t *k)
{
    k->tx_lost = true;
    sqlc_down(k);
    xd_sqlc_err_append(k, "; connection lost in a transaction, retried");
    return XD_EDB_BUSY;
}

/* Before a statement: a transaction whose connection went is lost
 * (XD_EDB_BUSY: xd_db_tx runs it again); outside one, a connection that is
 * down is reopened (bounded by sql_fault_wait).  0, or the error. */
static int
sqlc_usable(xd_sqlc_t *k)
{
    k->err[0] = '\0';
    if (k->in_tx)
        return k->tx_lost || !k->up ? sqlc_lost_in_tx(k) : 0;
    int rc = sqlc_ensure(k);
    return rc < 0 ? rc : 0;
}

int
xd_sqlc_query(void *h, const char *sql, const xd_db_val_t *params, size_t nparams,
              xd_db_row_handler fn, void *arg)
{
    xd_sqlc_t *k = h;
    int rc0 = sqlc_usable(k);
    if (rc0 < 0)
        return rc0;
    bool lost = false;
    int rc = k->ops->query(k, sql, params, nparams, fn, arg, &lost);
    if (!lost)
        return rc;
    if (k->in_tx)
        return sqlc_lost_in_tx(k);
    sqlc_down(k);
    if (!xd_sql_is_read(sql)) {
        xd_sqlc_err_append(k, "; connection lost during a write, not retried (outcome unknown)");
        XD_LOG(NULL, XD_WARN, "db connection lost", "driver=%s err=\"%s\"", k->ops->driver,
               k->err);
        return XD_EDB;
    }
    rc = sqlc_connect_wait(k);
    if (rc == 0) {
        lost = false;
        rc = k->ops->query(k, sql, params, nparams, fn, arg, &lost);
        if (lost)
            sqlc_down(k);
    }
    return rc;
}

int
xd_sqlc_exec(void *h, const char *sql)
{
    xd_sqlc_t *k = h;
    int rc0 = sqlc_usable(k);
    if (rc0 < 0)
        return rc0;
    bool lost = false;
    int rc = k->ops->exec(k, sql, &lost);
    if (lost) {
        if (k->in_tx)
            return sqlc_lost_in_tx(k);
        sqlc_down(k); /* not retried: the text may have written */
        xd_sqlc_err_append(k, "; connection lost, not retried (outcome unknown)");
    }
    return rc;
}

int
xd_sqlc_begin(void *h)
{
    xd_sqlc_t *k = h;
    k->err[0] = '\0';
    k->tx_lost = false;
    int rc = sqlc_ensure(k);
    if (rc < 0)
        return rc;
    bool lost = false;
    rc = k->ops->begin(k, &lost);
    if (lost) {
        sqlc_down(k);
        return XD_EDB_BUSY; /* nothing ran: xd_db_tx begins again (waiting) */
    }
    if (rc == 0)
        k->in_tx = true;
    return rc;
}

int
xd_sqlc_commit(void *h)
{
    xd_sqlc_t *k = h;
    if (k->tx_lost || !k->up) {
        /* The body saw BUSY; xd_db_tx never commits then.  Defensive. */
        k->in_tx = false;
        return XD_EDB_BUSY;
    }
    bool lost = false;
    int rc = k->ops->end(k, true, &lost);
    if (lost) {
        xd_sqlc_err_append(k, "; connection lost during COMMIT (outcome unknown)");
        XD_LOG(NULL, XD_WARN, "db connection lost", "driver=%s err=\"%s\"", k->ops->driver,
               k->err);
        sqlc_down(k);
        k->in_tx = false;
        return XD_EDB;
    }
    if (rc == 0)
        k->in_tx = false;
    return rc; /* on failure in_tx stays: xd_db_tx rolls back */
}

int
xd_sqlc_rollback(void *h)
{
    xd_sqlc_t *k = h;
    k->in_tx = false;
    if (k->tx_lost || !k->up) {
        k->tx_lost = false;
        return 0; /* the server rolled back when the connection died */
    }
    bool lost = false;
    int rc = k->ops->end(k, false, &lost);
    if (lost) {
        sqlc_down(k);
        return 0;
    }
    return rc;
}

const char *
xd_sqlc_errmsg(void *h)
{
    return ((xd_sqlc_t *)h)->err;
}
