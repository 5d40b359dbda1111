/*
 * mod_vcard.h — mod_vcard (XEP-0054 vcard-temp, mod_vcard.c) and mod_private
 * (XEP-0049 private XML storage, mod_private.c): built-in modules enabled
 * per host by listing them under `modules:`.
 *
 * What main.c calls, in this order (each pair of calls is independent):
 *
 *   1. xd_vcard_register_builtin / xd_private_register_builtin — before the
 *      configuration is checked (xd_modules_check must know the names);
 *   2. xd_vcard_register_migrations / xd_private_register_migrations —
 *      before xd_db_open, which creates the tables;
 *   3. xd_vcard_set_db(db) / xd_private_set_db(db) — after xd_db_open and
 *      before xd_modules_start; the database must stay open until after
 *      xd_modules_stop and xd_pool_stop;
 *   4. xd_vcard_set_db(NULL) / xd_private_set_db(NULL) — at shutdown, after
 *      xd_modules_stop.
 *
 * A module whose database was not set fails to start (XD_ECLOSED, with a
 * message naming the host).
 */
#ifndef XMPPD_MOD_MOD_VCARD_H
#define XMPPD_MOD_MOD_VCARD_H

#include "xmppd/opt.h"
#include "xmppd/storage.h"

/* ---- mod_vcard ------------------------------------------------------------------------------- */

/* Makes "mod_vcard" known to the module manager.  0, or XD_EEXIST when it
 * was already registered (harmless). */
int xd_vcard_register_builtin(void);

/* Registers the `vcard` table's migrations (component "mod_vcard").  0 (also
 * when already registered) or an XD_E* code. */
int xd_vcard_register_migrations(void);

/* The database the module's handlers use (NULL: none; starts then fail). */
void xd_vcard_set_db(xd_db_t *db);

/* Its option table (docs, tests). */
const xd_opt_t *xd_vcard_opts(void);

/* ---- mod_private ----------------------------------------------------------------------------- */

/* Makes "mod_private" known to the module manager; as xd_vcard_register_builtin. */
int xd_private_register_builtin(void);

/* Registers the `private_storage` table's migrations (component "mod_private"). */
int xd_private_register_migrations(void);

/* The database the module's handlers use (NULL: none). */
void xd_private_set_db(xd_db_t *db);

/* Its option table (docs, tests). */
const xd_opt_t *xd_private_opts(void);

#endif
