/*
 * mod_blocking.h — mod_blocking (XEP-0191 Blocking Command, version 1.3,
 * mod_blocking.c): a built-in module enabled per host by listing it under
 * `modules:`.  The block list is a view of the default privacy list of
 * the privacy engine (privacy.h), which also enforces it; mod_privacy
 * (XEP-0016) may run beside it on the same store, or not at all.
 *
 * What main.c calls, in this order:
 *
 *   1. xd_blocking_register_builtin — before the configuration is checked
 *      (xd_modules_check must know the name);
 *   2. xd_blocking_register_migrations — before xd_db_open: the engine's
 *      tables (component "privacy") and component "mod_blocking", whose
 *      version 2 moves the rows of its old `blocklist` table into them;
 *   3. xd_blocking_set_db(db) — after xd_db_open and before
 *      xd_modules_start; the database must stay open until after
 *      xd_modules_stop and xd_pool_stop;
 *   4. xd_blocking_set_db(NULL) — at shutdown, after xd_modules_stop.
 *
 * A start without a database fails (XD_ECLOSED, with a message naming the
 * host).  The first of the two modules to start on a host loads every
 * list of the host into memory, so that the filter never touches storage;
 * the last to stop forgets them (storage keeps them).
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

/* Registers the engine's migrations (xd_privacy_store_register_migrations).
 * 0 (also when already registered) or an XD_E* code. */
int xd_blocking_register_migrations(void);

/* The database the engine uses (NULL: none; starts then fail).  Setting
 * one also hooks account removal (the account's lists are deleted). */
void xd_blocking_set_db(xd_db_t *db);

/* Its option table (docs, tests). */
const xd_opt_t *xd_blocking_opts(void);

/* True when the account of `user` (a bare or full JID of a host where the
 * engine runs) blocks `other`: the rules that apply to user — its active
 * privacy list when user is a full JID with one, else the default list —
 * refuse a stanza of no particular kind with other (an item without
 * kinds decides deny: every XEP-0191 block, matched as in XEP-0191 5).  A
 * user never blocks his own resources or server.  Reads memory only: any
 * thread, never blocks.  For code that delivers without the router
 * (presence broadcast, probes answered by the server).  The same as
 * xd_privacy_blocks. */
bool xd_blocking_blocks(const xd_jid_t *user, const xd_jid_t *other);

#endif
