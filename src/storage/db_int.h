/*
 * db_int.h — internals shared by the files of src/storage: the built-in
 * drivers, the connection object and the migration runner's entry point.
 * Nothing outside src/storage includes this; callers use xmppd/storage.h.
 *
 * A connection (xd_db_conn_t) is in exactly one of two states:
 *
 *   idle  — on db->idle, touched only under db->mu;
 *   held  — on the holding thread's thread-local list (refs >= 1), touched
 *           only by that thread.  Nested acquires in that thread bump refs.
 */
#ifndef XMPPD_STORAGE_DB_INT_H
#define XMPPD_STORAGE_DB_INT_H

#include "xmppd/storage.h"

struct xd_db_conn {
    xd_db_t *db;                 /* owning database; immutable */
    void *h;                     /* driver handle; immutable */
    unsigned refs;               /* nested acquires by the holder; 0 when idle */
    unsigned tx_depth;           /* 0 outside xd_db_tx, 1 in it, >1 in savepoints */
    bool dead;                   /* the driver lost the connection (alive() false) */
    struct xd_db_conn *next;     /* db->idle list (idle) or thread list (held) */
};

/* The SQLite driver (src/storage/sqlite.c). */
extern const xd_db_driver_t xd_db_driver_sqlite;
/* The PostgreSQL driver over libpq (src/storage/pgsql.c). */
extern const xd_db_driver_t xd_db_driver_pgsql;

/* A driver's open() that fails writes why here (the pool shows it in
 * xd_db_status: there is no handle to ask errmsg). */
extern _Thread_local char xd_db_open_err[160];

/* Connection events of a driver that reconnects by itself (sqlconn.c), on
 * the calling thread, for xd_db_status: storage.c adds them to the pool's
 * counters after each driver call and clears them.  up: 1 a connection
 * attempt succeeded last, 0 one failed, -1 no attempt. */
typedef struct xd_db_drv_events {
    unsigned failures;     /* connections lost or refused */
    unsigned reconnects;   /* connections re-opened after a loss */
    int up;
    char last_error[160];  /* the last failure */
} xd_db_drv_events_t;
extern _Thread_local xd_db_drv_events_t xd_db_drv_events;

/* ---- dialects (src/storage/dialect.c) ------------------------------------ */

typedef enum xd_db_ups_style {
    XD_DB_UPS_ON_CONFLICT,   /* INSERT … ON CONFLICT (key) DO … (SQLite, PostgreSQL) */
    XD_DB_UPS_DUPLICATE_KEY, /* INSERT … ON DUPLICATE KEY UPDATE (MySQL, MariaDB) */
    XD_DB_UPS_MERGE,         /* MERGE … WITH (HOLDLOCK) (Microsoft SQL Server) */
} xd_db_ups_style;

/* How one SQL engine spells what storage.h's {tokens} stand for. */
typedef struct xd_db_dialect_def {
    const char *name;   /* "sqlite", "pgsql", "mysql", "mssql" */
    const char *t_int;  /* {int} */
    const char *t_blob; /* {blob} */
    const char *t_text; /* {text} */
    const char *t_key;  /* {key} */
    const char *autoid; /* {autoid} */
    const char *octets; /* {octets:E}: a format with one %.*s for E */
    xd_db_ups_style upsert;
    const char *last_id; /* a query of the id the last INSERT generated (ODBC) */
    bool tsql;          /* T-SQL: LIMIT/OFFSET, ADD COLUMN, CREATE TABLE IF NOT
                           EXISTS and savepoints rewritten (xd_db_expand) */
} xd_db_dialect_def_t;

/* The dialect called name, or NULL. */
const xd_db_dialect_def_t *xd_db_dialect_find(const char *name);

/* Expands the {tokens} of sql (and, for a T-SQL dialect, rewrites what
 * T-SQL spells otherwise: dialect.c).  *out is NULL when there is nothing
 * to change (use sql as it is), else a new string the caller frees.
 * XD_EINVAL: an unknown or unterminated token, or a LIMIT that T-SQL
 * cannot express. */
int xd_db_expand(const xd_db_dialect_def_t *d, const char *sql, char **out);

/* The SQL text of upsert u in dialect d, a new string (XD_EINVAL: bad u). */
int xd_db_upsert_sql(const xd_db_dialect_def_t *d, const xd_db_upsert_t *u, char **out);

/* pgsql: rewrites the `?` placeholders of sql outside literals, quoted
 * identifiers and comments to $1, $2, …  *out is a new string, *nparams
 * the count.  XD_EINVAL when sql holds more than one statement. */
int xd_pg_rewrite(const char *sql, char **out, unsigned *nparams);
/* The MariaDB/MySQL driver (src/storage/mysql.c). */
extern const xd_db_driver_t xd_db_driver_mysql;
/* The ODBC driver (src/storage/odbc.c). */
extern const xd_db_driver_t xd_db_driver_odbc;

#endif
