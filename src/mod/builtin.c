/*
 * builtin.c — the modules compiled into the server (see builtin.h).
 *
 * Adding a built-in module: its xd_module_t goes into xd_builtins[] below,
 * nowhere else; its tables come with it (xd_module_t.schemas).
 */
#include <stdlib.h>
#include <string.h>

#include "builtin.h"
#include "xmppd/err.h"
#include "xmppd/module.h"

extern const xd_module_t xd_mod_disco, xd_mod_ping, xd_mod_version, xd_mod_time, xd_mod_carbons,
    xd_mod_register, xd_mod_roster, xd_mod_offline, xd_mod_vcard, xd_mod_private,
    xd_mod_blocking, xd_mod_privacy, xd_mod_last, xd_mod_stanza_id, xd_mod_push,
    xd_mod_mam, xd_mod_muc, xd_mod_pep, xd_mod_pubsub, xd_mod_upload, xd_mod_stun_disco,
    xd_mod_proxy65, xd_mod_adhoc, xd_mod_announce, xd_mod_http_api;
extern const xd_module_t xd_mod_muc_log;

/* In dependency order (mod_roster before the modules that read rosters). */
static const xd_module_t *const xd_builtins[] = {
    &xd_mod_disco,   &xd_mod_ping,    &xd_mod_version,  &xd_mod_time,    &xd_mod_carbons,
    &xd_mod_register, &xd_mod_roster, &xd_mod_offline,  &xd_mod_vcard,   &xd_mod_private,
    &xd_mod_blocking, &xd_mod_privacy, &xd_mod_last,    &xd_mod_stanza_id, &xd_mod_push,
    &xd_mod_mam,     &xd_mod_muc,    &xd_mod_pep,      &xd_mod_pubsub,  &xd_mod_upload,
    &xd_mod_muc_log, &xd_mod_stun_disco, &xd_mod_proxy65,
    &xd_mod_adhoc, &xd_mod_announce, &xd_mod_http_api,
};

int
xd_builtin_register(void)
{
    for (size_t i = 0; i < sizeof xd_builtins / sizeof *xd_builtins; i++) {
        int rc = xd_module_register_builtin(xd_builtins[i]);
        if (rc != 0 && rc != XD_EEXIST)
            return rc;
    }
    return 0;
}

static int
builtin_cmp(const void *a, const void *b)
{
    return strcmp(((const xd_builtin_doc_t *)a)->name, ((const xd_builtin_doc_t *)b)->name);
}

const xd_builtin_doc_t *
xd_builtin_docs(void)
{
    static xd_builtin_doc_t all[64];
    size_t n = 0;
    const xd_module_t *mods[63];
    size_t nm = xd_module_builtins(mods, sizeof mods / sizeof *mods);
    if (nm > sizeof mods / sizeof *mods)
        nm = sizeof mods / sizeof *mods;
    for (size_t i = 0; i < nm && n + 1 < sizeof all / sizeof *all; i++)
        all[n++] = (xd_builtin_doc_t){ mods[i]->name, mods[i]->doc, mods[i]->opts,
                                       mods[i]->flags };
    qsort(all, n, sizeof *all, builtin_cmp);
    all[n] = (xd_builtin_doc_t){ 0 };
    return all;
}
