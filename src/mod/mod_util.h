/*
 * mod_util.h — small helpers shared by the built-in modules, written on
 * the public module API only.
 */
#ifndef XMPPD_MOD_MOD_UTIL_H
#define XMPPD_MOD_MOD_UTIL_H

#include "xmppd/module.h"

/* Runs `sql` (one statement with two parameters: host, then user) for an
 * account on the instance's database: on the blocking pool when called on
 * a worker loop (the result is only logged), at once otherwise (xmppctl's
 * thread, the pool, tests).  No database: nothing. */
void mod_user_rows_delete(xd_module_ctx_t *ctx, const char *sql, const char *host,
                          const char *user);

/* A table of account data that goes with the account: a REMOVE_USER
 * handler on ctx that runs `sql` (static text, as for
 * mod_user_rows_delete) for the removed account. */
int mod_user_rows(xd_module_ctx_t *ctx, const char *sql);

#endif
