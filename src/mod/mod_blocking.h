/*
 * mod_blocking.h — mod_blocking (XEP-0191 Blocking Command, version 1.3,
 * mod_blocking.c): a built-in module enabled per host by listing it under
 * `modules:`.
 *
 * What main.c calls, in this order:
 *
 *   1. xd_blocking_register_builtin — before the configuration is checked
 *      (xd_modules_check must know the name);
 *   2. xd_blocking_register_migrations — before xd_db_open, which creates
 *      the `blocklist` table (component "mod_blocking");
 *   3. xd_blocking_set_db(db) — after xd_db_open and before
 *      xd_modules_start; the database must stay open until after
 *      xd_modules_stop and xd_pool_stop;
 *   4. xd_blocking_set_db(NULL) — at shutdown, after xd_modules_stop.
 *
 * A start without a database fails (XD_ECLOSED, with a message naming the
 * host).  A start loads every block list of its host into memory (one
 * query), so that the filter that enforces them never touches storage; a
 * stop forgets that host's lists (storage keeps them).
 */
#ifndef XMPPD_MOD_MOD_BLOCKING_H
#define XMPPD_MOD_MOD_BLOCKING_H

#include <stdbool.h>

#include "xmppd/jid.h"
#include "xmppd/opt.h"
#include "xmppd/storage.h"

/* Makes "mod_blocking" known to the module manager.  0, or XD_EEXIST when
 * it was already registered (harmless). */
int xd_blocking_register_builtin(void);

/* Registers the `blocklist` table's migrations (component "mod_blocking").
 * 0 (also when already registered) or an XD_E* code. */
int xd_blocking_register_migrations(void);

/* The database the module uses (NULL: none; starts then fail).  Setting one
 * also hooks account removal (the removed account's list is deleted). */
void xd_blocking_set_db(xd_db_t *db);

/* Its option table (docs, tests). */
const xd_opt_t *xd_blocking_opts(void);

/* True when the account of `user` (a bare or full JID of a host where the
 * module runs) blocks `other` under the matching rules of XEP-0191 §5
 * (full JID, bare JID, domain/resource, domain).  A user never blocks his
 * own resources.  Reads memory only: any thread, never blocks.  For code
 * that delivers without the router (presence broadcast, probes answered
 * by the server) and for privacy lists later. */
bool xd_blocking_blocks(const xd_jid_t *user, const xd_jid_t *other);

#endif
