/*
 * storage.c — the driver-independent half of the storage interface
 * (include/xmppd/storage.h): the driver table, the per-database connection
 * pool, query and transaction wrappers, and the async bridge to the
 * blocking pool (DESIGN.md 2, 4).
 *
 * Connection pool.  An xd_db_t owns every connection it opened.  A thread
 * acquires a connection and holds it until its last matching release; while
 * held it sits on the thread-local list db_tl_held (so nested acquires in
 * the same thread return it, and a transaction spans everything the thread
 * does with that database).  Released connections go back to db->idle for
 * any thread.  Connections are opened lazily, at most params.max_conns;
 * beyond that acquire waits on db->cv.
 *
 *   opened ──► held (refs ≥ 1, one thread) ◄──► idle (db->idle, under db->mu)
 *                                                  │ xd_db_close
 *                                                  ▼ closed
 *
 * Invariants: db->nconns == idle + held + being opened; a held connection is
 * used only by its holder; xd_db_close runs with nothing held.
 *
 * Transactions (xd_db_tx).  Outermost: driver begin (BEGIN IMMEDIATE), fn,
 * commit; BUSY anywhere → rollback, backoff, retry (DB_TX_ATTEMPTS in all).
 * Nested: SAVEPOINT xd_sp … RELEASE SAVEPOINT xd_sp, or ROLLBACK TO SAVEPOINT on
 * failure (the standard spelling: MySQL requires the SAVEPOINT keyword).
 *
 * Faults (network drivers).  A connection the driver reports lost
 * (alive() false: the server restarted, the network broke) is marked dead.
 * Outside a transaction the statement is retried once on a new connection;
 * a transaction is rolled back and run again from the start on a new one
 * (its body has no effects outside the database).  Opening a connection is
 * retried with backoff (DB_RECONNECT_*_MS) until fault_wait_ms has passed,
 * then the request fails with XD_EDB and a log line, and modules answer
 * internal-server-error.  Nothing acknowledged is lost: a write is
 * acknowledged only after its COMMIT returned.  A COMMIT whose connection
 * breaks before the answer has an unknown outcome; it is retried, so such a
 * write may be applied twice (never lost).  Drivers without alive() (mysql,
 * odbc) handle lost connections themselves and are never retried here but
 * for XD_EDB_BUSY: they fail a write whose outcome is unknown instead.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/pool.h"
#include "core/worker.h"
#include "storage/db_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define DB_MAX_CONNS_DEFAULT 32
#define DB_TX_ATTEMPTS 6          /* tries of a busy transaction, in all */
#define DB_TX_BACKOFF_MS 10       /* first pause; doubles each time */
#define DB_TX_BACKOFF_MAX_MS 320  /* longest pause */
#define DB_MAX_DRIVERS 8
#define DB_FAULT_WAIT_MS_DEFAULT 5000 /* how long a request waits for the database */
#define DB_RECONNECT_MIN_MS 50        /* first pause between connection attempts */
#define DB_RECONNECT_MAX_MS 1000      /* longest pause */

_Thread_local char xd_db_open_err[160];

/* A database: parameters, driver, connection pool.  The immutable fields
 * are set by xd_db_open; the pool fields only under mu. */
struct xd_db {
    const xd_db_driver_t *drv; /* immutable */
    xd_db_params_t params;     /* immutable; strings point at the copies below */
    char *path;                /* owned copy of params.path */
    char *conninfo;            /* owned copy of params.conninfo */
    char *driver;              /* owned copy of the driver name */
    char *server, *database, *username, *password, *ssl, *ssl_cafile; /* owned copies */
    unsigned max_conns;        /* immutable pool cap */
    pthread_mutex_t mu;        /* guards the fields below */
    pthread_cond_t cv;         /* signalled when a connection goes idle or a slot frees */
    xd_db_conn_t *idle;        /* idle connections (LIFO: warm caches first) */
    unsigned nconns;           /* connections open or being opened */
    unsigned nheld;            /* connections held by some thread */
    const xd_db_dialect_def_t *dialect; /* set by the first open; then immutable */
    uint64_t failures;         /* connections lost or refused */
    uint64_t reconnects;       /* connections re-opened after a loss */
    bool up;                   /* the last connection attempt succeeded */
    char last_error[160];      /* the last connection failure */
};

/* Connections this thread holds, linked through conn->next. */
static _Thread_local xd_db_conn_t *db_tl_held;

/* ---- drivers ------------------------------------------------------------- */

static pthread_mutex_t db_drv_mu = PTHREAD_MUTEX_INITIALIZER;
static const xd_db_driver_t *db_drivers[DB_MAX_DRIVERS] = { &xd_db_driver_sqlite,
                                                             &xd_db_driver_pgsql,
                                                             &xd_db_driver_mysql,
                                                             &xd_db_driver_odbc };
static unsigned db_ndrivers = 4;

const xd_db_driver_t *
xd_db_driver_find(const char *name)
{
    const xd_db_driver_t *found = NULL;
    pthread_mutex_lock(&db_drv_mu);
    for (unsigned i = 0; i < db_ndrivers && found == NULL; i++)
        if (strcmp(db_drivers[i]->name, name) == 0)
            found = db_drivers[i];
    pthread_mutex_unlock(&db_drv_mu);
    return found;
}

int
xd_db_driver_register(const xd_db_driver_t *drv)
{
    int rc = 0;
    XD_ASSERT(drv != NULL && drv->name != NULL && drv->open != NULL && drv->close != NULL &&
              drv->exec != NULL && drv->query != NULL && drv->begin != NULL &&
              drv->commit != NULL && drv->rollback != NULL && drv->last_insert_id != NULL &&
              drv->changes != NULL && drv->errmsg != NULL);
    if (xd_db_driver_find(drv->name) != NULL)
        return XD_EEXIST;
    pthread_mutex_lock(&db_drv_mu);
    if (db_ndrivers == DB_MAX_DRIVERS)
        rc = XD_ELIMIT;
    else
        db_drivers[db_ndrivers++] = drv;
    pthread_mutex_unlock(&db_drv_mu);
    return rc;
}

/* ---- pool ---------------------------------------------------------------- */

int
xd_db_open(const xd_db_params_t *params, xd_db_t **out)
{
    xd_assert_off_loop();
    const char *name = params->driver != NULL ? params->driver : "sqlite";
    const xd_db_driver_t *drv = xd_db_driver_find(name);
    if (drv == NULL) {
        XD_LOG(NULL, XD_ERROR, "unknown db driver", "driver=%s", name);
        return XD_ENOTFOUND;
    }

    xd_db_t *db = xd_new(xd_db_t);
    db->drv = drv;
    db->params = *params;
    db->driver = xd_strdup(name);
    db->params.driver = db->driver;
    db->path = params->path != NULL ? xd_strdup(params->path) : NULL;
    db->params.path = db->path;
    db->conninfo = params->conninfo != NULL ? xd_strdup(params->conninfo) : NULL;
    db->params.conninfo = db->conninfo;
    db->max_conns = params->max_conns ? params->max_conns : DB_MAX_CONNS_DEFAULT;
    if (db->params.fault_wait_ms == 0)
        db->params.fault_wait_ms = DB_FAULT_WAIT_MS_DEFAULT;
    /* Network drivers: owned copies of the connection fields. */
    db->server = params->server ? xd_strdup(params->server) : NULL;
    db->params.server = db->server;
    db->database = params->database ? xd_strdup(params->database) : NULL;
    db->params.database = db->database;
    db->username = params->username ? xd_strdup(params->username) : NULL;
    db->params.username = db->username;
    db->password = params->password ? xd_strdup(params->password) : NULL;
    db->params.password = db->password;
    db->ssl = params->ssl ? xd_strdup(params->ssl) : NULL;
    db->params.ssl = db->ssl;
    db->ssl_cafile = params->ssl_cafile ? xd_strdup(params->ssl_cafile) : NULL;
    db->params.ssl_cafile = db->ssl_cafile;
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);

    /* Open one connection now, so a bad path or library fails here. */
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        xd_db_release(c);
        rc = xd_db_migrate(db);
    }
    if (rc < 0) {
        xd_db_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

void
xd_db_close(xd_db_t *db)
{
    xd_assert_off_loop(); /* closing may checkpoint the WAL */
    if (db == NULL)
        return;
    pthread_mutex_lock(&db->mu);
    XD_ASSERT(db->nheld == 0);
    xd_db_conn_t *c = db->idle;
    db->idle = NULL;
    pthread_mutex_unlock(&db->mu);
    while (c != NULL) {
        xd_db_conn_t *next = c->next;
        if (c->h != NULL)
            db->drv->close(c->h);
        xd_free(c);
        c = next;
    }
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    xd_free(db->path);
    xd_free(db->conninfo);
    xd_free(db->driver);
    xd_free(db->server);
    xd_free(db->database);
    xd_free(db->username);
    if (db->password != NULL)
        explicit_bzero(db->password, strlen(db->password));
    xd_free(db->password);
    xd_free(db->ssl);
    xd_free(db->ssl_cafile);
    xd_free(db);
}

const char *
xd_db_driver_name(const xd_db_t *db)
{
    return db->drv->name;
}

const char *
xd_db_dialect(const xd_db_t *db)
{
    return db->dialect != NULL ? db->dialect->name : db->drv->name;
}

void
xd_db_status(xd_db_t *db, xd_db_status_t *out)
{
    pthread_mutex_lock(&db->mu);
    unsigned idle = 0;
    for (xd_db_conn_t *c = db->idle; c != NULL; c = c->next)
        idle++;
    *out = (xd_db_status_t){ .driver = db->drv->name,
                             .open = db->nconns,
                             .idle = idle,
                             .busy = db->nheld,
                             .max = db->max_conns,
                             .failures = db->failures,
                             .reconnects = db->reconnects,
                             .up = db->up };
    memcpy(out->last_error, db->last_error, sizeof out->last_error);
    pthread_mutex_unlock(&db->mu);
}

static uint64_t
db_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
db_sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

/* Records a lost or refused connection for xd_db_status. */
static void
db_note_failure(xd_db_t *db, const char *why)
{
    pthread_mutex_lock(&db->mu);
    db->failures++;
    db->up = false;
    snprintf(db->last_error, sizeof db->last_error, "%s", why != NULL ? why : "");
    pthread_mutex_unlock(&db->mu);
}

/* Adds what a driver that reconnects by itself saw on this thread
 * (db_int.h: xd_db_drv_events) to the pool's health. */
static void
db_take_drv_events(xd_db_t *db)
{
    xd_db_drv_events_t *e = &xd_db_drv_events;
    if (e->failures == 0 && e->reconnects == 0 && e->up < 0)
        return;
    pthread_mutex_lock(&db->mu);
    db->failures += e->failures;
    db->reconnects += e->reconnects;
    if (e->up >= 0)
        db->up = e->up == 1;
    if (e->failures > 0)
        snprintf(db->last_error, sizeof db->last_error, "%s", e->last_error);
    pthread_mutex_unlock(&db->mu);
    *e = (xd_db_drv_events_t){ .up = -1 };
}

/* Opens a driver connection, retrying with backoff until the database's
 * fault wait has passed (the first connection of xd_db_open does not wait:
 * a wrong address fails the start at once). */
static int
db_open_handle(xd_db_t *db, void **h, bool wait)
{
    uint64_t deadline = db_now_ms() + db->params.fault_wait_ms;
    unsigned pause = DB_RECONNECT_MIN_MS;
    for (unsigned attempt = 1;; attempt++) {
        xd_db_open_err[0] = '\0';
        int rc = db->drv->open(&db->params, h);
        if (rc == 0) {
            const char *dn = db->drv->dialect != NULL ? db->drv->dialect(*h) : db->drv->name;
            pthread_mutex_lock(&db->mu);
            if (db->dialect == NULL)
                db->dialect = xd_db_dialect_find(dn);
            db->up = true;
            pthread_mutex_unlock(&db->mu);
            if (db->dialect == NULL) {
                XD_LOG(NULL, XD_ERROR, "db dialect unknown", "driver=%s dialect=%s",
                       db->drv->name, dn);
                db->drv->close(*h);
                *h = NULL;
                return XD_ENOTSUP;
            }
            return 0;
        }
        db_note_failure(db, xd_db_open_err[0] ? xd_db_open_err : xd_strerror(rc));
        uint64_t now = db_now_ms();
        if (!wait || rc == XD_EINVAL || rc == XD_ENOTSUP || now >= deadline) {
            if (wait)
                XD_LOG(NULL, XD_ERROR, "db unavailable",
                       "driver=%s attempts=%u waited_ms=%u err=\"%s\"", db->drv->name, attempt,
                       db->params.fault_wait_ms, xd_db_open_err);
            return rc == XD_EINVAL || rc == XD_ENOTSUP ? rc : XD_EDB;
        }
        unsigned ms = pause;
        if (now + ms > deadline)
            ms = (unsigned)(deadline - now);
        db_sleep_ms(ms);
        pause = pause * 2 > DB_RECONNECT_MAX_MS ? DB_RECONNECT_MAX_MS : pause * 2;
    }
}

/* Replaces a dead connection's handle with a new one (waiting, bounded).
 * On failure c->h is NULL: the pool frees c on its release. */
static int
db_reopen(xd_db_conn_t *c)
{
    xd_db_t *db = c->db;
    if (c->h != NULL)
        db->drv->close(c->h);
    c->h = NULL;
    c->dead = true;
    int rc = db_open_handle(db, &c->h, true);
    if (rc < 0) {
        c->h = NULL;
        return rc;
    }
    c->dead = false;
    pthread_mutex_lock(&db->mu);
    db->reconnects++;
    pthread_mutex_unlock(&db->mu);
    XD_LOG(NULL, XD_NOTICE, "db reconnected", "driver=%s", db->drv->name);
    return 0;
}

int
xd_db_acquire(xd_db_t *db, xd_db_conn_t **out)
{
    xd_assert_off_loop();
    for (xd_db_conn_t *c = db_tl_held; c != NULL; c = c->next) {
        if (c->db == db) {
            c->refs++;
            *out = c;
            return 0;
        }
    }

    xd_db_conn_t *c = NULL;
    pthread_mutex_lock(&db->mu);
    while (db->idle == NULL && db->nconns >= db->max_conns)
        pthread_cond_wait(&db->cv, &db->mu);
    if (db->idle != NULL) {
        c = db->idle;
        db->idle = c->next;
    } else {
        db->nconns++; /* reserve the slot; open outside the lock */
    }
    db->nheld++;
    pthread_mutex_unlock(&db->mu);

    if (c == NULL) {
        void *h = NULL;
        int rc = db_open_handle(db, &h, db->dialect != NULL);
        if (rc < 0) {
            pthread_mutex_lock(&db->mu);
            db->nconns--;
            db->nheld--;
            pthread_cond_signal(&db->cv);
            pthread_mutex_unlock(&db->mu);
            return rc;
        }
        c = xd_new(xd_db_conn_t);
        c->db = db;
        c->h = h;
    }
    c->refs = 1;
    c->tx_depth = 0;
    c->next = db_tl_held;
    db_tl_held = c;
    *out = c;
    return 0;
}

void
xd_db_release(xd_db_conn_t *c)
{
    XD_ASSERT(c->refs > 0);
    if (--c->refs > 0)
        return;
    XD_ASSERT(c->tx_depth == 0);

    xd_db_conn_t **pp = &db_tl_held;
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->next;
    XD_ASSERT(*pp == c); /* released by the thread that acquired it */
    *pp = c->next;

    xd_db_t *db = c->db;
    if (c->h == NULL) {
        /* Lost and not re-opened: free the slot for a new connection. */
        pthread_mutex_lock(&db->mu);
        db->nconns--;
        db->nheld--;
        pthread_cond_signal(&db->cv);
        pthread_mutex_unlock(&db->mu);
        xd_free(c);
        return;
    }
    pthread_mutex_lock(&db->mu);
    c->next = db->idle;
    db->idle = c;
    db->nheld--;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

/* ---- statements ---------------------------------------------------------- */

/* Logs driver failures (not handler codes, busy or constraint results,
 * which callers expect and handle). */
static int
db_check(xd_db_conn_t *c, int rc, const char *sql)
{
    db_take_drv_events(c->db);
    if (rc == XD_EDB || rc == XD_ENOTSUP)
        XD_LOG(NULL, XD_WARN, "db statement failed", "driver=%s err=\"%s\" sql=\"%.80s\"",
               c->db->drv->name, c->db->drv->errmsg(c->h), sql);
    return rc;
}

/* After a failed statement: was the connection lost?  Marks c dead (and
 * counts it) when so. */
static bool
db_lost(xd_db_conn_t *c)
{
    const xd_db_driver_t *drv = c->db->drv;
    if (c->h == NULL)
        return true;
    if (drv->alive == NULL || drv->alive(c->h))
        return false;
    if (!c->dead) {
        c->dead = true;
        db_note_failure(c->db, drv->errmsg(c->h));
        XD_LOG(NULL, XD_WARN, "db connection lost", "driver=%s err=\"%s\"", drv->name,
               drv->errmsg(c->h));
    }
    return true;
}

/* Runs one statement (sql already expanded); outside a transaction, a
 * statement whose connection was lost runs again on a new one. */
static int
db_run(xd_db_conn_t *c, const char *sql, const xd_db_val_t *params, size_t nparams,
       xd_db_row_handler fn, void *arg, bool is_exec)
{
    const xd_db_driver_t *drv = c->db->drv;
    for (int attempt = 0;; attempt++) {
        if (c->h == NULL || c->dead) {
            if (c->tx_depth > 0)
                return XD_EDB; /* the transaction is gone: db_tx_outer re-runs it */
            int rc = db_reopen(c);
            if (rc < 0)
                return rc;
        }
        int rc = is_exec ? drv->exec(c->h, sql) : drv->query(c->h, sql, params, nparams, fn, arg);
        if (rc != XD_EDB || attempt > 0 || !db_lost(c) || c->tx_depth > 0)
            return db_check(c, rc, sql);
    }
}

int
xd_db_exec(xd_db_conn_t *c, const char *sql)
{
    xd_assert_off_loop();
    XD_DEBUG_ASSERT(c->refs > 0);
    char *x = NULL;
    int rc = xd_db_expand(c->db->dialect, sql, &x);
    if (rc < 0)
        return rc;
    rc = db_run(c, x != NULL ? x : sql, NULL, 0, NULL, NULL, true);
    xd_free(x);
    return rc;
}

int
xd_db_query(xd_db_conn_t *c, const char *sql, const xd_db_val_t *params, size_t nparams,
            xd_db_row_handler fn, void *arg)
{
    xd_assert_off_loop();
    XD_DEBUG_ASSERT(c->refs > 0);
    char *x = NULL;
    int rc = xd_db_expand(c->db->dialect, sql, &x);
    if (rc < 0)
        return rc;
    rc = db_run(c, x != NULL ? x : sql, params, nparams, fn, arg, false);
    xd_free(x);
    return rc;
}

int
xd_db_upsert(xd_db_conn_t *c, const xd_db_upsert_t *u, const xd_db_val_t *params)
{
    char *sql = NULL;
    int rc = xd_db_upsert_sql(c->db->dialect, u, &sql);
    if (rc == 0)
        rc = xd_db_query(c, sql, params, u->ncols, NULL, NULL);
    xd_free(sql);
    return rc;
}

typedef struct db_int_res {
    bool found;  /* a row came */
    int rc;      /* 0 or XD_EINVAL for a non-integer */
    int64_t val; /* first column of the first row */
} db_int_res_t;

static int
db_int_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    db_int_res_t *r = arg;
    r->found = true;
    if (ncols < 1 || cols[0].type != XD_DB_INT64)
        r->rc = XD_EINVAL;
    else
        r->val = cols[0].i;
    return 1;
}

int
xd_db_query_int64(xd_db_conn_t *c, const char *sql, const xd_db_val_t *params, size_t nparams,
                  int64_t *out)
{
    db_int_res_t r = { false, 0, 0 };
    int rc = xd_db_query(c, sql, params, nparams, db_int_row, &r);
    if (rc < 0)
        return rc;
    if (!r.found)
        return XD_ENOTFOUND;
    if (r.rc == 0)
        *out = r.val;
    return r.rc;
}

int64_t
xd_db_last_insert_id(xd_db_conn_t *c)
{
    return c->h != NULL ? c->db->drv->last_insert_id(c->h) : 0;
}

int64_t
xd_db_changes(xd_db_conn_t *c)
{
    return c->h != NULL ? c->db->drv->changes(c->h) : 0;
}

const char *
xd_db_errmsg(const xd_db_conn_t *c)
{
    const char *m = c->h != NULL ? c->db->drv->errmsg(c->h) : c->db->last_error;
    return m != NULL ? m : "";
}

/* ---- transactions -------------------------------------------------------- */

/* Sleeps before retry `attempt` (1, 2, …): exponential with ±25% jitter so
 * that competing threads do not retry in step. */
static void
db_backoff(unsigned attempt)
{
    static _Thread_local uint32_t seed;
    if (seed == 0)
        seed = (uint32_t)(uintptr_t)&seed ^ (uint32_t)time(NULL) ^ 0x9e3779b9u;
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;

    unsigned ms = DB_TX_BACKOFF_MS << (attempt - 1);
    if (ms > DB_TX_BACKOFF_MAX_MS || attempt > 16)
        ms = DB_TX_BACKOFF_MAX_MS;
    unsigned us = ms * 750 + seed % (ms * 500 + 1); /* 0.75 … 1.25 × ms */
    struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

static int
db_tx_nested(xd_db_conn_t *c, xd_db_tx_fn fn, void *arg)
{
    int rc = xd_db_exec(c, "SAVEPOINT xd_sp");
    if (rc < 0)
        return rc;
    c->tx_depth++;
    rc = fn(c, arg);
    c->tx_depth--;
    if (rc < 0) {
        /* ROLLBACK TO keeps the savepoint; RELEASE drops it. */
        if (xd_db_exec(c, "ROLLBACK TO SAVEPOINT xd_sp") == 0)
            xd_db_exec(c, "RELEASE SAVEPOINT xd_sp");
        return rc;
    }
    int r2 = xd_db_exec(c, "RELEASE SAVEPOINT xd_sp");
    return r2 < 0 ? r2 : rc;
}

static int
db_tx_outer(xd_db_conn_t *c, xd_db_tx_fn fn, void *arg)
{
    const xd_db_driver_t *drv = c->db->drv;
    int rc = XD_EDB_BUSY;
    unsigned lost = 0; /* re-runs after a lost connection */
    for (unsigned attempt = 1; attempt <= DB_TX_ATTEMPTS; attempt++) {
        if (attempt > 1)
            db_backoff(attempt - 1);
        if (c->h == NULL || c->dead) {
            /* A new connection, waiting (bounded) for the database. */
            rc = db_reopen(c);
            if (rc < 0)
                return rc;
        }
        rc = db_check(c, drv->begin(c->h), "BEGIN");
        if (rc == XD_EDB && db_lost(c) && lost++ < DB_TX_ATTEMPTS) {
            attempt--;
            continue;
        }
        if (rc == XD_EDB_BUSY)
            continue;
        if (rc < 0)
            return rc;

        c->tx_depth = 1;
        rc = fn(c, arg);
        c->tx_depth = 0;
        if (rc >= 0 && !c->dead) {
            int crc = db_check(c, drv->commit(c->h), "COMMIT");
            if (crc == 0)
                return rc;
            rc = crc;
        }
        if (c->h != NULL && !c->dead)
            drv->rollback(c->h);
        if ((rc == XD_EDB || rc >= 0) && db_lost(c) && lost++ < DB_TX_ATTEMPTS) {
            attempt--; /* not busy: run it again on a new connection */
            continue;
        }
        if (rc != XD_EDB_BUSY)
            return rc;
    }
    XD_LOG(NULL, XD_WARN, "db busy", "driver=%s attempts=%d err=\"%s\"", drv->name,
           DB_TX_ATTEMPTS, drv->errmsg(c->h));
    return rc;
}

int
xd_db_tx(xd_db_t *db, xd_db_tx_fn fn, void *arg)
{
    xd_assert_off_loop();
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    if (c->tx_depth > 0)
        rc = db_tx_nested(c, fn, arg);
    else
        rc = db_tx_outer(c, fn, arg);
    xd_db_release(c);
    return rc;
}

/* ---- async --------------------------------------------------------------- */

typedef struct db_job {
    xd_db_t *db;        /* database to use */
    xd_db_work_fn work; /* runs on the pool thread */
    xd_db_done_cb done; /* runs on the submitting loop */
    void *arg;          /* caller's */
    int status;         /* work's result or the acquire error */
} db_job_t;

static void
db_async_work(void *arg)
{
    db_job_t *job = arg;
    xd_db_conn_t *c;
    job->status = xd_db_acquire(job->db, &c);
    if (job->status == 0) {
        job->status = job->work(c, job->arg);
        xd_db_release(c);
    }
}

static void
db_async_done(void *arg, int status)
{
    db_job_t *job = arg;
    job->done(job->arg, status == XD_ECANCELED ? status : job->status);
    xd_free(job);
}

int
xd_db_async(xd_db_t *db, xd_db_work_fn work, xd_db_done_cb done, void *arg)
{
    XD_ASSERT(work != NULL && done != NULL);
    db_job_t *job = xd_new(db_job_t);
    *job = (db_job_t){ db, work, done, arg, 0 };
    int rc = xd_pool_submit(db_async_work, db_async_done, job);
    if (rc < 0)
        xd_free(job);
    return rc;
}
