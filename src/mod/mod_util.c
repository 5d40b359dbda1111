/*
 * mod_util.c — helpers shared by the built-in modules (see mod_util.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "mod_util.h"
#include "xmppd/alloc.h"
#include "xmppd/base64.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"

typedef struct rows_del {
    const char *sql; /* static text */
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    int rc;          /* the result */
} rows_del_t;

static void
rows_del_work(xd_module_ctx_t *ctx, void *arg)
{
    rows_del_t *r = arg;
    xd_db_conn_t *c;
    r->rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (r->rc != 0)
        return;
    xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user) };
    r->rc = xd_db_query(c, r->sql, key, 2, NULL, NULL);
    xd_db_release(c);
}

static void
rows_del_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    rows_del_t *r = arg;
    int rc = status ? status : r->rc;
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "account data not removed", "host=%s user=%s err=%s", r->host,
               r->user, xd_strerror(rc));
    xd_free(r);
}

void
mod_user_rows_delete(xd_module_ctx_t *ctx, const char *sql, const char *host, const char *user)
{
    if (!xd_module_db(ctx))
        return;
    rows_del_t *r = xd_new(rows_del_t);
    r->sql = sql;
    snprintf(r->host, sizeof r->host, "%s", host);
    snprintf(r->user, sizeof r->user, "%s", user);
    int rc = xd_module_submit(ctx, rows_del_work, rows_del_done, r);
    if (rc != 0)
        rows_del_done(ctx, r, rc);
}

static int
rows_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    mod_user_rows_delete(ctx, arg, ev->host, ev->user);
    return XD_HOOK_OK;
}

int
mod_user_rows(xd_module_ctx_t *ctx, const char *sql)
{
    return xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, rows_removed,
                          (void *)sql);
}

bool
mod_msg_worth_keeping(const xd_el_t *msg)
{
    return xd_el_child(msg, "body", NULL) || xd_el_child(msg, "subject", NULL) ||
           xd_el_child(msg, "encrypted", "eu.siacs.conversations.axolotl") ||
           xd_el_child(msg, "encrypted", "urn:xmpp:omemo:2") ||
           xd_el_child(msg, "openpgp", "urn:xmpp:openpgp:0") ||
           xd_el_child(msg, "x", "jabber:x:encrypted");
}

#define RANDOM_BATCH 4080 /* random bytes fetched at once per thread (a multiple of 15) */

int
mod_random_id(char out[21])
{
    static _Thread_local unsigned char pool[RANDOM_BATCH];
    static _Thread_local size_t used = RANDOM_BATCH;
    if (used + 15 > RANDOM_BATCH) {
        if (RAND_bytes(pool, sizeof pool) != 1)
            return XD_EINTERNAL;
        used = 0;
    }
    xd_base64_encode(pool + used, 15, out, XD_BASE64_URL); /* 15 bytes: 20 characters */
    used += 15;
    return 0;
}

int
mod_sortable_id(char out[21])
{
    static const char abc[] = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    char rnd[21];
    if (mod_random_id(rnd) != 0)
        return XD_EINTERNAL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (int i = 7; i >= 0; i--, ms >>= 6)
        out[i] = abc[ms & 63];
    memcpy(out + 8, rnd, 12);
    out[20] = 0;
    return 0;
}
