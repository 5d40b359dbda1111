/*
 * mod_privacy.h — mod_privacy (XEP-0016 Privacy Lists, version 1.7,
 * mod_privacy.c): a built-in module enabled per host by listing it under
 * `modules:`.  The rules, their store and their enforcement are the
 * engine's (privacy.h), shared with mod_blocking: either module runs
 * without the other, and both together use one store.
 *
 * What main.c calls, in this order (as for mod_blocking; calling both
 * modules' functions is harmless, they share the engine's):
 *
 *   1. xd_privacy_register_builtin — before the configuration is checked;
 *   2. xd_privacy_register_migrations — before xd_db_open (components
 *      "privacy" and "mod_blocking", see privacy.h);
 *   3. xd_privacy_set_db(db) — after xd_db_open, before xd_modules_start;
 *      the database must stay open until after xd_modules_stop and
 *      xd_pool_stop;
 *   4. xd_privacy_set_db(NULL) — at shutdown, after xd_modules_stop.
 */
#ifndef XMPPD_MOD_MOD_PRIVACY_H
#define XMPPD_MOD_MOD_PRIVACY_H

#include "mod/privacy.h"
#include "xmppd/el.h"
#include "xmppd/opt.h"
#include "xmppd/storage.h"

/* Makes "mod_privacy" known to the module manager.  0, or XD_EEXIST when
 * it was already registered (harmless). */
int xd_privacy_register_builtin(void);

/* Registers the engine's migrations.  0 (also when already registered) or
 * an XD_E* code. */
int xd_privacy_register_migrations(void);

/* The database the engine uses (NULL: none; starts then fail).  Also
 * hooks account removal. */
void xd_privacy_set_db(xd_db_t *db);

/* Its option table (docs, tests). */
const xd_opt_t *xd_privacy_opts(void);

/* Parses <list name='…'>items</list> (XEP-0016 2.1) into *out, items
 * sorted by order, jid values normalised.  XD_EINVAL (bad-request) with
 * *why (static English text) for: no name or a name over
 * XD_PRIVACY_NAME_MAX bytes, a child that is not <item/>, an action other
 * than allow/deny, an order that is not an unsignedInt, an unknown type, a
 * type without a value, a jid value that is not a JID, a subscription
 * other than none/to/from/both, an unknown child of an item, two items
 * with one order.  An item without a type ignores its value.  On error
 * *out is zeroed. */
int xd_privacy_list_parse(const xd_el_t *list, xd_privacy_list_t *out, const char **why);

/* Appends <list name='…'> with l's items (as XEP-0016 2.3 shows them) to
 * parent; with_items false: the name only (pushes, names). */
void xd_privacy_list_to_el(xd_el_t *parent, const xd_privacy_list_t *l, bool with_items);

#endif
