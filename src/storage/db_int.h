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
    struct xd_db_conn *next;     /* db->idle list (idle) or thread list (held) */
};

/* The SQLite driver (src/storage/sqlite.c). */
extern const xd_db_driver_t xd_db_driver_sqlite;
/* The MariaDB/MySQL driver (src/storage/mysql.c). */
extern const xd_db_driver_t xd_db_driver_mysql;
/* The ODBC driver (src/storage/odbc.c). */
extern const xd_db_driver_t xd_db_driver_odbc;

#endif
