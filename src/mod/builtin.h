/*
 * builtin.h — the modules compiled into the server, in one place: what
 * main.c registers, which get the database, and what the configuration
 * reference documents (tools/gen-docs).
 *
 * Adding a built-in module: its register/migrations/set_db calls go into
 * builtin.c, nowhere else.
 */
#ifndef XMPPD_MOD_BUILTIN_H
#define XMPPD_MOD_BUILTIN_H

#include <stddef.h>

#include "xmppd/opt.h"
#include "xmppd/storage.h"

/* Makes every built-in module known to the module manager and registers
 * the migrations of their tables.  Call before the configuration is
 * checked (xd_modules_check must know the names) and before xd_db_open
 * (which creates the tables).  Idempotent. */
void xd_builtin_register(void);

/* Hands the database to every module that stores (after xd_db_open and
 * before xd_modules_start), or takes it back (NULL, after
 * xd_modules_stop). */
void xd_builtin_set_db(xd_db_t *db);

/* A module name with its documentation, for the configuration reference:
 * the registered built-ins and the ones the core serves itself. */
typedef struct xd_builtin_doc {
    const char *name;     /* "mod_roster" */
    const char *doc;      /* one line */
    const xd_opt_t *opts; /* its option table, or NULL */
} xd_builtin_doc_t;

/* Every module documented, sorted by name, terminated by { NULL }.  After
 * xd_builtin_register.  The array is static (not thread-safe to build
 * concurrently; tools call it once). */
const xd_builtin_doc_t *xd_builtin_docs(void);

#endif
