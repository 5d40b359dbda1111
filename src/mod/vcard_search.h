/*
 * vcard_search.h — the user directory of mod_vcard (XEP-0055, jabber:iq:search):
 * a search service (vjud.@HOST@) over the fields of the stored vCards, kept
 * in the table vcard_search beside the vCards (src/mod only).
 */
#ifndef XMPPD_MOD_VCARD_SEARCH_H
#define XMPPD_MOD_VCARD_SEARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "xmppd/module.h"
#include "xmppd/storage.h"

/* The search's options, part of mod_vcard's. */
typedef struct vcs_conf {
    bool search;           /* the service is on */
    char *host;            /* its domain pattern ("vjud.@HOST@") */
    char *name;            /* its disco#info name */
    char *access;          /* who may search (NULL: the host's accounts) */
    int matches;           /* most results of one search */
    bool allow_return_all; /* a search with no field lists everyone */
} vcs_conf_t;

/* mod_vcard's schema step that creates the table (its migration 3). */
extern const char *const vcs_migration[];

/* Inside the vCard's storing transaction: the account's directory row
 * follows its vCard (xml NULL: the vCard is gone). */
int vcs_index_tx(xd_db_conn_t *c, const char *host, const char *user, const char *xml,
                 size_t len);

/* Start: rows for the vCards stored before the directory existed. */
int vcs_backfill(xd_db_t *db, const char *host, size_t *added);

/* The service on conf->host: its route and the host's disco#items entry.
 * *out: its state (vcs_free after the module's registrations are gone),
 * set even on failure.  0 or an error after xd_module_fail. */
int vcs_start(xd_module_ctx_t *ctx, const vcs_conf_t *conf, void **out);
void vcs_free(void *svc);

#endif
