/*
 * builtin.h — the modules compiled into the server, in one place: what
 * main.c registers and what the configuration reference documents
 * (tools/gen-docs).
 */
#ifndef XMPPD_MOD_BUILTIN_H
#define XMPPD_MOD_BUILTIN_H

#include <stddef.h>

#include "xmppd/opt.h"

/* Makes every built-in module known to the module manager, with the
 * migrations of its tables.  Call before the configuration is checked
 * (xd_modules_check must know the names) and before xd_db_open (which
 * creates the tables).  Idempotent: 0 or an XD_E* code. */
int xd_builtin_register(void);

/* A module name with its documentation, for the configuration reference. */
typedef struct xd_builtin_doc {
    const char *name;     /* "mod_roster" */
    const char *doc;      /* one line */
    const xd_opt_t *opts; /* its option table, or NULL */
    unsigned flags;       /* its XD_MODULE_* flags */
} xd_builtin_doc_t;

/* Every built-in module, sorted by name, terminated by { NULL }.  After
 * xd_builtin_register.  The array is static (tools call it once). */
const xd_builtin_doc_t *xd_builtin_docs(void);

#endif
