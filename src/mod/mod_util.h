/*
 * mod_util.h — small helpers shared by the built-in modules.
 */
#ifndef XMPPD_MOD_MOD_UTIL_H
#define XMPPD_MOD_MOD_UTIL_H

#include "xmppd/storage.h"

/* Runs `sql` (one statement with two parameters: host, then user) for an
 * account, for the user_removed hook: queued on the blocking pool when
 * called on a worker loop (the result is only logged), run at once
 * otherwise (xmppctl's thread, tests).  db NULL does nothing. */
void mod_user_rows_delete(xd_db_t *db, const char *sql, const char *host, const char *user);

#endif
