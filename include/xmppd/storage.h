/*
 * storage.h — the one storage interface: drivers, connections, queries,
 * transactions, migrations and the user-credential store (DESIGN.md 4).
 *
 * Layers, from the bottom:
 *
 *   xd_db_driver_t   a backend as a table of functions ("sqlite", "pgsql";
 *                    "mysql", "odbc").  Callers never touch a driver.
 *   xd_db_conn_t     one driver connection.  Used by one thread at a time: a
 *                    thread that holds a connection of a database gets the
 *                    same one back from every nested xd_db_acquire(), so
 *                    code inside xd_db_tx() that calls the users API takes
 *                    part in the same transaction.
 *   xd_db_t          a database: the open parameters and a pool of
 *                    connections, opened lazily, one per calling thread.
 *
 * Threading (DESIGN.md 2): every function that talks to the database blocks,
 * so each one asserts that it does not run on an event loop
 * (xd_assert_off_loop).  Loop code uses xd_db_async(), which runs the work
 * on the blocking pool.
 *
 * SQL: `?` placeholders, one per parameter (a network driver rewrites them,
 * e.g. to $n).  Keep SQL text in string literals: each connection caches a
 * prepared statement per distinct SQL text.
 *
 * Dialects (DESIGN.md 4.x): the SQL every module writes is portable, and
 * the few things SQL engines spell differently are written as `{token}`s
 * that xd_db_query/xd_db_exec (and migrations) expand per dialect in ONE
 * table (src/storage/dialect.c):
 *
 *   {int}      a 64-bit integer column type (sqlite INTEGER, pgsql BIGINT)
 *   {blob}     a bytes column type (BLOB, BYTEA, LONGBLOB)
 *   {text}     unbounded text that is not part of a key or index
 *   {key}      text that is part of a primary key or index (pgsql: bytewise
 *              COLLATE "C", as SQLite compares; mysql: a bounded VARCHAR)
 *   {autoid}   an auto-numbered 64-bit primary key column definition
 *   {octets:E} the length in bytes of the text expression E
 *
 * Upserts go through xd_db_upsert.  A failed statement inside a transaction
 * may end the transaction (PostgreSQL aborts it): inside xd_db_tx treat an
 * error as the end of the body, never as a test ("insert, and on a
 * constraint error update"); use xd_db_upsert for that.
 *
 * Ownership (STYLE.md 3.7 R6): parameter values are borrowed for the call;
 * row values passed to a handler are lent for that call only — copy what you
 * keep.
 *
 * Errors: 0 or a negative XD_E* code.  XD_EDB (any driver failure),
 * XD_EDB_BUSY (lock not obtained in time), XD_EDB_CONSTRAINT (a UNIQUE,
 * CHECK, NOT NULL or FOREIGN KEY constraint), XD_EDB_SCHEMA (the database
 * was migrated by a newer server).  The driver's message for the last
 * failure on a connection is xd_db_errmsg().
 */
#ifndef XMPPD_STORAGE_H
#define XMPPD_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/scram_cred.h"
#include "xmppd/str.h"

/* ---- values -------------------------------------------------------------- */

typedef enum xd_db_type {
    XD_DB_NULL = 0, /* SQL NULL */
    XD_DB_INT64,    /* 64-bit signed integer */
    XD_DB_TEXT,     /* UTF-8 text; need not be NUL-terminated */
    XD_DB_BLOB,     /* bytes; may contain NUL */
} xd_db_type;

/* A typed parameter or column value.  The bytes of TEXT and BLOB are
 * borrowed (parameters) or lent (row values); len may be 0 with p == NULL. */
typedef struct xd_db_val {
    xd_db_type type; /* which member holds the value */
    int64_t i;       /* XD_DB_INT64 */
    xd_str_t s;      /* XD_DB_TEXT, XD_DB_BLOB */
} xd_db_val_t;

#define XD_DB_V_NULL        ((xd_db_val_t){ .type = XD_DB_NULL })
#define XD_DB_V_INT(v)      ((xd_db_val_t){ .type = XD_DB_INT64, .i = (int64_t)(v) })
#define XD_DB_V_TEXT(str)   ((xd_db_val_t){ .type = XD_DB_TEXT, .s = (str) })
#define XD_DB_V_CSTR(cstr)  ((xd_db_val_t){ .type = XD_DB_TEXT, .s = xd_str_c(cstr) })
#define XD_DB_V_BLOB(ptr, n) \
    ((xd_db_val_t){ .type = XD_DB_BLOB, .s = { (const char *)(ptr), (n) } })

/* Called once per result row with ncols lent values.  Return 0 to go on,
 * > 0 to stop early (the query then returns 0), < 0 to stop and make the
 * query return that code. */
typedef int (*xd_db_row_handler)(void *arg, const xd_db_val_t *cols, size_t ncols);

/* ---- drivers ------------------------------------------------------------- */

/* Open parameters.  Fields a driver does not use are ignored; 0 / NULL
 * selects the default. */
typedef struct xd_db_params {
    const char *driver;       /* "sqlite" (default), "pgsql", … */
    const char *path;         /* sqlite: the database file; missing directories
                                 are created with mode 0700 */
    const char *conninfo;     /* network drivers: connection string */
    bool sync_full;           /* sqlite: synchronous=FULL instead of NORMAL */
    unsigned busy_timeout_ms; /* wait this long for a lock (default 5000) */
    unsigned cache_kib;       /* sqlite page cache per connection (default 8192) */
    unsigned max_conns;       /* pool size cap (default 32); beyond it callers wait */
    /* Network drivers (conninfo, when set, is used instead). */
    const char *server;       /* host name, address or socket directory */
    unsigned port;            /* 0: the driver's default */
    const char *database;     /* database name */
    const char *username;
    const char *password;     /* never logged */
    const char *ssl;          /* pgsql sslmode: disable, prefer, require, verify-ca,
                                 verify-full; NULL: the driver's default */
    const char *ssl_cafile;   /* CA certificates for verify-ca / verify-full */
    unsigned connect_timeout_s; /* per connection attempt (default 5) */
    unsigned fault_wait_ms;   /* how long a request waits for an unreachable
                                 database before it fails (default 5000) */
} xd_db_params_t;

/* A backend.  `h` is the driver's own connection handle.  Every function but
 * open/close/last_insert_id/changes/errmsg returns 0 or an XD_E* code and
 * keeps the driver's message for errmsg.  Not thread-safe per handle: the
 * pool gives a handle to one thread at a time. */
typedef struct xd_db_driver {
    const char *name; /* "sqlite": the value of db_type */
    /* Opens a connection (applying per-connection settings). */
    int (*open)(const xd_db_params_t *params, void **h);
    void (*close)(void *h);
    /* Runs SQL without parameters or results; may hold several statements. */
    int (*exec)(void *h, const char *sql);
    /* Runs one statement with typed parameters; fn may be NULL. */
    int (*query)(void *h, const char *sql, const xd_db_val_t *params, size_t nparams,
                 xd_db_row_handler fn, void *arg);
    int (*begin)(void *h); /* a write transaction (sqlite: BEGIN IMMEDIATE) */
    int (*commit)(void *h);
    int (*rollback)(void *h);
    int64_t (*last_insert_id)(void *h);
    int64_t (*changes)(void *h); /* rows changed by the last statement */
    const char *(*errmsg)(void *h);
    /* Optional (NULL: the driver's name).  The SQL dialect this handle
     * speaks: "sqlite", "pgsql", "mysql", "mssql"; ODBC asks the server. */
    const char *(*dialect)(void *h);
    /* Optional (NULL: always).  False once the connection is lost (server
     * restarted, network cut): the pool then opens a new one and retries. */
    bool (*alive)(void *h);
} xd_db_driver_t;

/* The driver called `name`, or NULL. */
const xd_db_driver_t *xd_db_driver_find(const char *name);

/* Adds a driver (a loadable backend).  XD_EEXIST when the name is taken.
 * `drv` must outlive the process. */
int xd_db_driver_register(const xd_db_driver_t *drv);

/* ---- databases and connections ------------------------------------------ */

typedef struct xd_db xd_db_t;
typedef struct xd_db_conn xd_db_conn_t;

/* Opens a database: finds the driver, opens a first connection (sqlite:
 * creates the file and its directory, checks the library version) and
 * applies every registered migration (xd_db_migrate).  On success *out is
 * the caller's, freed with xd_db_close().  XD_ENOTFOUND: unknown driver;
 * XD_EDB_SCHEMA: the database is newer than this server. */
int xd_db_open(const xd_db_params_t *params, xd_db_t **out);

/* Closes every connection and frees db.  No connection may be held. */
void xd_db_close(xd_db_t *db);

/* The driver name ("sqlite"). */
const char *xd_db_driver_name(const xd_db_t *db);

/* The SQL dialect ("sqlite", "pgsql", "mysql", "mssql"): what a module
 * that needs a dialect's own SQL (full-text search) switches on. */
const char *xd_db_dialect(const xd_db_t *db);

/* The pool's health, for `xmppctl status`. */
typedef struct xd_db_status {
    const char *driver;     /* driver name */
    unsigned open;          /* connections open (or being opened) */
    unsigned idle;          /* of which idle */
    unsigned busy;          /* of which held by a thread */
    unsigned max;           /* the pool's cap */
    uint64_t failures;      /* connections lost or refused since start */
    uint64_t reconnects;    /* connections re-opened after a loss */
    bool up;                /* the last connection attempt succeeded */
    char last_error[160];   /* the last connection failure ("" when none) */
} xd_db_status_t;

void xd_db_status(xd_db_t *db, xd_db_status_t *out);

/* The calling thread's connection to db: the one it already holds (counted),
 * else an idle one, else a new one (waits when max_conns are in use).
 * Release with xd_db_release() in the same thread. */
int xd_db_acquire(xd_db_t *db, xd_db_conn_t **out);
void xd_db_release(xd_db_conn_t *c);

/* Runs SQL text without parameters (may hold several statements). */
int xd_db_exec(xd_db_conn_t *c, const char *sql);

/* Runs one statement: params[0..nparams) bind the `?`s in order; fn (may be
 * NULL) gets each row.  XD_EINVAL when nparams does not match the SQL or the
 * text holds no statement or more than one. */
int xd_db_query(xd_db_conn_t *c, const char *sql, const xd_db_val_t *params, size_t nparams,
                xd_db_row_handler fn, void *arg);

/* Runs a query whose first row's first column is an integer into *out.
 * XD_ENOTFOUND when there is no row, XD_EINVAL when it is not an integer. */
int xd_db_query_int64(xd_db_conn_t *c, const char *sql, const xd_db_val_t *params,
                      size_t nparams, int64_t *out);

int64_t xd_db_last_insert_id(xd_db_conn_t *c);
int64_t xd_db_changes(xd_db_conn_t *c);

/* The driver's message for the last failure on c ("" when none); valid until
 * the next call on c.  For logging only: it may quote data. */
const char *xd_db_errmsg(const xd_db_conn_t *c);

/* An insert that, when a row with the same key exists, leaves it (IGNORE),
 * replaces its other columns (REPLACE) or adds the new values to them
 * (ADD, e.g. a counter).  The dialect table spells it (ON CONFLICT,
 * ON DUPLICATE KEY).  cols[0..ncols) are the columns bound in order, the
 * first nkey of them the conflict key (a primary key or unique index). */
typedef enum xd_db_upsert_mode {
    XD_DB_UPSERT_IGNORE,
    XD_DB_UPSERT_REPLACE,
    XD_DB_UPSERT_ADD,
} xd_db_upsert_mode;

typedef struct xd_db_upsert {
    const char *table;
    const char *const *cols; /* column names */
    size_t ncols;
    size_t nkey;             /* 1 ≤ nkey ≤ ncols; REPLACE/ADD need nkey < ncols */
    xd_db_upsert_mode mode;
} xd_db_upsert_t;

/* Runs the upsert u with params[0..u->ncols).  xd_db_changes() is 0 when
 * IGNORE kept an existing row. */
int xd_db_upsert(xd_db_conn_t *c, const xd_db_upsert_t *u, const xd_db_val_t *params);

/* ---- transactions -------------------------------------------------------- */

/* Body of a transaction.  Returns >= 0 to commit, < 0 to roll back.  It may
 * run more than once (after a busy rollback), so it must not have effects
 * outside the database. */
typedef int (*xd_db_tx_fn)(xd_db_conn_t *c, void *arg);

/* Runs fn inside a write transaction on the calling thread's connection
 * (sqlite: BEGIN IMMEDIATE … COMMIT).  When the lock cannot be had, or fn or
 * the commit fail with XD_EDB_BUSY, the whole transaction is retried after a
 * bounded, jittered backoff (a few attempts; then XD_EDB_BUSY).  When fn
 * returns < 0 everything it did is rolled back and that code returned.
 * Called inside another xd_db_tx on the same thread, it nests as a
 * SAVEPOINT.  Returns fn's result (>= 0) or an error. */
int xd_db_tx(xd_db_t *db, xd_db_tx_fn fn, void *arg);

/* ---- async (from an event loop) ----------------------------------------- */

/* Runs on a pool thread with the pool thread's connection; returns a status. */
typedef int (*xd_db_work_fn)(xd_db_conn_t *c, void *arg);
/* Runs on the submitting loop, exactly once: status is work's result, the
 * acquire error (work not called), or XD_ECANCELED (pool shut down). */
typedef void (*xd_db_done_cb)(void *arg, int status);

/* Queues work on the blocking pool (xd_pool_submit).  Must be called on a
 * worker loop.  XD_EFULL / XD_ECLOSED as xd_pool_submit; on error neither
 * work nor done is called. */
int xd_db_async(xd_db_t *db, xd_db_work_fn work, xd_db_done_cb done, void *arg);

/* ---- migrations ---------------------------------------------------------- */

/* One step of a component's schema.  Versions start at 1 and increase by 1.
 * A version may appear several times: once with driver == NULL (portable
 * SQL, with {tokens}) and once per dialect ("pgsql") or driver that needs
 * its own SQL (full-text indexes); a driver's entry wins over its
 * dialect's, which wins over the portable one. */
typedef struct xd_db_migration {
    unsigned version;        /* 1, 2, … ; 0 ends the list */
    const char *driver;      /* NULL = every driver, else a dialect or driver name */
    const char *const *sql;  /* NULL-terminated statements, run in order */
} xd_db_migration_t;

/* Registers the migrations of `component` ("core" is built in; modules use
 * their name).  `list` ends with a {0} entry; both must outlive the process.
 * XD_EEXIST: already registered; XD_EINVAL: versions not 1, 2, … */
int xd_db_register_migrations(const char *component, const xd_db_migration_t *list);

/* Forgets a component's migrations (its tables stay).  XD_ENOTFOUND. */
int xd_db_unregister_migrations(const char *component);

/* Brings every registered component up to date, "core" first, then in
 * registration order; each component in one transaction.  The version is
 * kept in the table schema_version(component, version, updated_at).
 * XD_EDB_SCHEMA (logged with both versions) when the database holds a
 * newer version of a component than the code. */
int xd_db_migrate(xd_db_t *db);

/* The recorded version of component (0 when none). */
int xd_db_schema_version(xd_db_t *db, const char *component, unsigned *out);

/* ---- users and SCRAM credentials (src/storage/users.c) ------------------- */

/* Host and username are stored as given: pass them prepared (domain and
 * localpart of a normalised JID).  Storage never sees a password: the caller
 * (the internal auth backend) derives the SCRAM credentials
 * (xd_scram_creds_make) and checks passwords against the stored ones
 * (xd_scram_cred_check); storage keeps at most one credential per hash. */

/* Creates a user with creds[0..ncreds) (ncreds may be 0: no credentials),
 * in one transaction.  XD_EEXIST when the user exists; XD_EINVAL for an
 * empty host or user, or a credential with an unknown or repeated hash or
 * sizes out of range. */
int xd_user_create(xd_db_t *db, xd_str_t host, xd_str_t user, const xd_scram_cred_t *creds,
                   size_t ncreds);

/* 1 when the user exists, 0 when not, or an error. */
int xd_user_exists(xd_db_t *db, xd_str_t host, xd_str_t user);

/* Replaces all of the user's credentials with creds[0..ncreds) in one
 * transaction.  XD_ENOTFOUND; XD_EINVAL as xd_user_create. */
int xd_user_set_scram(xd_db_t *db, xd_str_t host, xd_str_t user, const xd_scram_cred_t *creds,
                      size_t ncreds);

/* The user's credentials for `hash`.  XD_ENOTFOUND when the user or that
 * credential does not exist. */
int xd_user_get_scram(xd_db_t *db, xd_str_t host, xd_str_t user, xd_scram_hash hash,
                      xd_scram_cred_t *out);

/* Removes the user and (ON DELETE CASCADE) its credentials.  XD_ENOTFOUND. */
int xd_user_remove(xd_db_t *db, xd_str_t host, xd_str_t user);

/* Called per user in username order; the name is lent.  Return 0 to go on,
 * > 0 to stop, < 0 to stop with that error. */
typedef int (*xd_user_handler)(void *arg, xd_str_t user);

/* Lists the users of host ordered by username (bytewise). */
int xd_user_list(xd_db_t *db, xd_str_t host, xd_user_handler fn, void *arg);

/* Number of users of host. */
int xd_user_count(xd_db_t *db, xd_str_t host, int64_t *out);

#endif
