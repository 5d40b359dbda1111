/*
 * builtin.c — the built-in modules (see builtin.h).
 */
#include <stdlib.h>
#include <string.h>

#include "mod/builtin.h"
#include "mod/mod_basic.h"
#include "mod/mod_blocking.h"
#include "mod/mod_last.h"
#include "mod/mod_offline.h"
#include "mod/mod_privacy.h"
#include "mod/mod_roster.h"
#include "mod/mod_stanza_id.h"
#include "mod/mod_vcard.h"
#include "stream/register.h"
#include "xmppd/module.h"

void
xd_builtin_register(void)
{
    mod_roster_register(); /* the module and its migrations */
    xd_vcard_register_builtin();
    xd_private_register_builtin();
    xd_blocking_register_builtin();
    xd_privacy_register_builtin();
    xd_last_register_builtin();
    xd_stanza_id_register_builtin();

    xd_offline_register_migrations(); /* served by the core, stores in its own table */
    xd_vcard_register_migrations();
    xd_private_register_migrations();
    xd_blocking_register_migrations(); /* the privacy engine's tables, once for both */
    xd_privacy_register_migrations();
    xd_last_register_migrations();
}

void
xd_builtin_set_db(xd_db_t *db)
{
    mod_roster_set_db(db);
    xd_vcard_set_db(db);
    xd_private_set_db(db);
    xd_blocking_set_db(db);
    xd_privacy_set_db(db);
    xd_last_set_db(db);
}

/* Modules the core serves itself (xd_modules_check accepts their names):
 * their options are parsed where they run. */
static const xd_builtin_doc_t builtin_core[] = {
    { "mod_offline", "Offline messages (XEP-0160) with delay stamps (XEP-0203)", NULL },
    { "mod_register", "In-band registration (XEP-0077); see the admin guide", NULL },
    { "mod_disco", "Service discovery (XEP-0030) is always on; the options add XEP-0157 "
                   "contact addresses to the server's disco#info", NULL },
    { "mod_ping", "Answering pings (XEP-0199) is always on; the options make the server "
                  "ping silent clients", NULL },
    { "mod_version", "Software version (XEP-0092), always on", NULL },
    { "mod_time", "Entity time (XEP-0202), always on", NULL },
};

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
    const xd_module_t *mods[48];
    size_t nm = xd_module_builtins(mods, sizeof mods / sizeof *mods);
    for (size_t i = 0; i < nm && n + 1 < sizeof all / sizeof *all; i++)
        all[n++] = (xd_builtin_doc_t){ mods[i]->name, mods[i]->doc, mods[i]->opts };
    for (size_t i = 0; i < sizeof builtin_core / sizeof *builtin_core; i++) {
        xd_builtin_doc_t d = builtin_core[i];
        if (!strcmp(d.name, "mod_offline"))
            d.opts = xd_offline_opts();
        else if (!strcmp(d.name, "mod_register"))
            d.opts = xd_register_opts();
        else if (!strcmp(d.name, "mod_disco"))
            d.opts = xd_disco_opts();
        else if (!strcmp(d.name, "mod_ping"))
            d.opts = xd_ping_opts();
        if (n + 1 < sizeof all / sizeof *all)
            all[n++] = d;
    }
    qsort(all, n, sizeof *all, builtin_cmp);
    all[n] = (xd_builtin_doc_t){ 0 };
    return all;
}
