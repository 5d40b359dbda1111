/*
 * mod_util.h — small helpers shared by the built-in modules.
 */
#ifndef XMPPD_MOD_MOD_UTIL_H
#define XMPPD_MOD_MOD_UTIL_H

#include <stdatomic.h>

#include "xmppd/storage.h"

/* Runs `sql` (one statement with two parameters: host, then user) for an
 * account, for the user_removed hook: queued on the blocking pool when
 * called on a worker loop (the result is only logged), run at once
 * otherwise (xmppctl's thread, tests).  db NULL does nothing. */
void mod_user_rows_delete(xd_db_t *db, const char *sql, const char *host, const char *user);

/* A table of account data that goes with the account: while attached, the
 * user_removed hook runs `sql` (as mod_user_rows_delete) for the removed
 * account.  One static object per table. */
typedef struct mod_user_rows {
    const char *sql;       /* DELETE … WHERE host = ? AND username = ? */
    _Atomic(xd_db_t *) db; /* the database while attached, else NULL */
} mod_user_rows_t;

/* Attaches r with db, or detaches it (db NULL).  Idempotent. */
void mod_user_rows_attach(mod_user_rows_t *r, xd_db_t *db);

#endif
