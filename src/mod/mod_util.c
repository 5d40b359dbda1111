/*
 * mod_util.c — helpers shared by the built-in modules (see mod_util.h).
 */
#include <stdio.h>

#include "core/worker.h"
#include "mod/mod_util.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"

typedef struct rows_del {
    const char *sql;        /* static text */
    char host[1024], user[1024];
} rows_del_t;

static int
rows_del_work(xd_db_conn_t *c, void *arg)
{
    rows_del_t *r = arg;
    xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user) };
    return xd_db_query(c, r->sql, key, 2, NULL, NULL);
}

static void
rows_del_done(void *arg, int status)
{
    rows_del_t *r = arg;
    if (status != 0)
        XD_LOG(NULL, XD_ERROR, "account data not removed", "host=%s user=%s err=%s", r->host,
               r->user, xd_strerror(status));
    xd_free(r);
}

void
mod_user_rows_delete(xd_db_t *db, const char *sql, const char *host, const char *user)
{
    if (!db)
        return;
    rows_del_t *r = xd_new(rows_del_t);
    r->sql = sql;
    snprintf(r->host, sizeof r->host, "%s", host);
    snprintf(r->user, sizeof r->user, "%s", user);
    if (xd_on_loop()) {
        int rc = xd_db_async(db, rows_del_work, rows_del_done, r);
        if (rc != 0)
            rows_del_done(r, rc);
        return;
    }
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        rc = rows_del_work(c, r);
        xd_db_release(c);
    }
    rows_del_done(r, rc);
}

static int
rows_removed(xd_module_ctx_t *hctx, xd_hook_user_t *evp, void *arg)
{
    (void)hctx;
    mod_user_rows_t *r = arg;
    const xd_hook_user_t *ev = evp;
    mod_user_rows_delete(atomic_load(&r->db), r->sql, ev->host, ev->user);
    return XD_HOOK_OK;
}

void
mod_user_rows_attach(mod_user_rows_t *r, xd_db_t *db)
{
    xd_db_t *old = atomic_exchange(&r->db, db);
    if (db && !old)
        xd_hook_add(XD_HOOK_REMOVE_USER, NULL, XD_HOOK_PRIO_DEFAULT, rows_removed, r);
    else if (!db && old)
        xd_hook_remove(XD_HOOK_REMOVE_USER, NULL, rows_removed, r);
}
