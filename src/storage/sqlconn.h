/*
 * sqlconn.h — what the SQL drivers of src/storage share (sqlconn.c):
 *
 *   xd_stmt_cache_t  the per-connection LRU cache of prepared statements
 *                    keyed by SQL text (sqlite.c, mysql.c, odbc.c);
 *   xd_sqlc_t        the connection keeper of the network drivers that
 *                    reconnect themselves (mysql.c, odbc.c): waiting for an
 *                    unreachable database with backoff up to fault_wait_ms,
 *                    and what may be re-run after a lost connection.
 *
 * Internal to src/storage, like db_int.h.  Everything here is used by the
 * one thread that holds the connection (db_int.h): no locking.
 */
#ifndef XMPPD_STORAGE_SQLCONN_H
#define XMPPD_STORAGE_SQLCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/storage.h"

/* ---- small helpers ------------------------------------------------------- */

/* FNV-1a of the NUL-terminated s. */
uint64_t xd_sql_hash(const char *s);

/* Monotonic milliseconds. */
uint64_t xd_sql_now_ms(void);

/* A statement that only reads (SELECT, SHOW): safe to send again after a
 * lost connection. */
bool xd_sql_is_read(const char *sql);

/* Reads the next key=value pair of a libpq-style connection string at *pp
 * (pairs separated by blanks; a value in single quotes may hold blanks;
 * \ escapes the next character) into *key and *val (the caller frees
 * both).  0 at the end, 1 for a pair, XD_EINVAL for a malformed string. */
int xd_sql_next_pair(const char **pp, char **key, char **val);

/* ---- statement cache ----------------------------------------------------- */

#define XD_STMT_CACHE_SLOTS 64 /* prepared statements per connection */

typedef struct xd_stmt_ent {
    char *sql;     /* owned copy of the key; NULL = free slot */
    uint64_t hash; /* xd_sql_hash(sql) */
    void *stmt;    /* the driver's prepared statement */
    uint64_t used; /* LRU tick of the last use */
    bool busy;     /* a query on it is running */
} xd_stmt_ent_t;

/* An LRU cache of prepared statements.  A cached statement is "busy" while
 * its query runs; a nested query with the same SQL (from a row handler)
 * gets a temporary statement that the driver frees itself. */
typedef struct xd_stmt_cache {
    xd_stmt_ent_t slot[XD_STMT_CACHE_SLOTS];
    uint64_t tick;              /* LRU clock */
    void (*finalize)(void *stmt); /* frees a driver statement */
} xd_stmt_cache_t;

void xd_stmt_cache_init(xd_stmt_cache_t *c, void (*finalize)(void *stmt));

/* The cached statement for sql, marked busy (xd_stmt_cache_done ends
 * that), or NULL.  On NULL *nested tells that a busy entry for sql exists:
 * prepare a temporary statement and do not add it. */
xd_stmt_ent_t *xd_stmt_cache_find(xd_stmt_cache_t *c, const char *sql, bool *nested);

/* Caches the newly prepared stmt for sql in a free slot or in place of the
 * least recently used idle one (finalized); the entry is busy.  NULL when
 * every slot is busy: the statement stays the caller's (temporary). */
xd_stmt_ent_t *xd_stmt_cache_add(xd_stmt_cache_t *c, const char *sql, void *stmt);

static inline void
xd_stmt_cache_done(xd_stmt_ent_t *e)
{
    e->busy = false;
}

/* Finalizes and forgets one entry (a statement that must be prepared again). */
void xd_stmt_cache_drop(xd_stmt_cache_t *c, xd_stmt_ent_t *e);

/* Finalizes and forgets every entry (none may be busy). */
void xd_stmt_cache_clear(xd_stmt_cache_t *c);

/* ---- connection keeper --------------------------------------------------- */

typedef struct xd_sqlc xd_sqlc_t;

/* What a driver does for the keeper.  Each gets the keeper, the first
 * member of the driver's handle.  Failures put their message in k->err.
 * `*lost` is set when the connection broke (the driver cannot tell whether
 * the server ran the statement). */
typedef struct xd_sqlc_ops {
    const char *driver; /* "mysql": the driver's name in log lines */
    /* Opens the connection.  XD_EDB (retried), XD_EINVAL / XD_ENOTSUP (not). */
    int (*connect)(xd_sqlc_t *k);
    /* Closes the connection and drops its statements; safe when closed. */
    void (*disconnect)(xd_sqlc_t *k);
    /* An open connection about to be used outside a transaction: false
     * when it is found dead (closed by the server while idle). */
    bool (*usable)(xd_sqlc_t *k);
    int (*query)(xd_sqlc_t *k, const char *sql, const xd_db_val_t *params, size_t nparams,
                 xd_db_row_handler fn, void *arg, bool *lost);
    int (*exec)(xd_sqlc_t *k, const char *sql, bool *lost);
    int (*begin)(xd_sqlc_t *k, bool *lost);
    /* Ends the transaction: commit when `commit`, else roll back. */
    int (*end)(xd_sqlc_t *k, bool commit, bool *lost);
} xd_sqlc_ops_t;

/* The state of one driver connection.  The policy (DESIGN.md 4.3):
 *   - outside a transaction, before a statement or BEGIN, a connection that
 *     is down or found dead (ops->usable) is opened again, waiting for the
 *     database with backoff (50 ms doubling to 1 s) up to fault_wait_ms;
 *     then XD_EDB with a `db unavailable` log line;
 *   - a read that loses its connection outside a transaction runs once more
 *     on a new one; a write fails with "outcome unknown" (XD_EDB): it may
 *     have been applied, and running it again could apply it twice;
 *   - a loss inside a transaction is XD_EDB_BUSY: the server rolled the
 *     transaction back, and xd_db_tx runs the body again from BEGIN, which
 *     waits for the database as above;
 *   - a lost COMMIT is XD_EDB ("outcome unknown"), never re-run.
 * So an acknowledged write is one whose COMMIT (or autocommit statement)
 * returned: none is lost, and none is applied twice. */
struct xd_sqlc {
    const xd_sqlc_ops_t *ops;
    unsigned fault_wait_ms; /* how long a request waits for the database */
    bool up;                /* the driver has an open connection */
    bool in_tx;             /* between begin and commit/rollback */
    bool tx_lost;           /* the connection died inside the transaction */
    bool was_down;          /* a connection was lost or refused since the last success */
    char err[512];          /* last failure; "" when none */
};

/* Sets k up (not connected).  fault_wait_ms 0: 5000. */
void xd_sqlc_init(xd_sqlc_t *k, const xd_sqlc_ops_t *ops, unsigned fault_wait_ms);

/* The first connection of a handle: one attempt, no waiting (the pool
 * waits between attempts at opening a handle). */
int xd_sqlc_open(xd_sqlc_t *k);

/* Closes the connection (the handle itself is the driver's). */
void xd_sqlc_close(xd_sqlc_t *k);

/* Appends text to k->err (truncated). */
void xd_sqlc_err_append(xd_sqlc_t *k, const char *text);

/* The xd_db_driver_t functions, for a handle whose first member is an
 * xd_sqlc_t. */
int xd_sqlc_query(void *h, const char *sql, const xd_db_val_t *params, size_t nparams,
                  xd_db_row_handler fn, void *arg);
int xd_sqlc_exec(void *h, const char *sql);
int xd_sqlc_begin(void *h);
int xd_sqlc_commit(void *h);
int xd_sqlc_rollback(void *h);
const char *xd_sqlc_errmsg(void *h);

#endif
