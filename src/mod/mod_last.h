/*
 * mod_last.h — mod_last (XEP-0012 Last Activity, mod_last.c): a built-in
 * module enabled per host by listing it under `modules:`.
 *
 * What main.c calls, in the order of the other storing modules:
 * xd_last_register_builtin (before the configuration is checked; also
 * marks the server's start for uptime), xd_last_register_migrations
 * (before xd_db_open), xd_last_set_db(db) (after it, before the modules
 * start) and xd_last_set_db(NULL) at shutdown after the modules stop.
 */
#ifndef XMPPD_MOD_MOD_LAST_H
#define XMPPD_MOD_MOD_LAST_H

#include "xmppd/storage.h"

/* Makes "mod_last" known; 0 or XD_EEXIST (harmless). */
int xd_last_register_builtin(void);

/* The `last_activity` table (component "mod_last"); 0 or an XD_E* code. */
int xd_last_register_migrations(void);

/* The database (NULL: none; starts then fail).  Also attaches the account
 * removal of the table's rows. */
void xd_last_set_db(xd_db_t *db);

#endif
