/*
 * mod_last.c — Last Activity (XEP-0012, version 2.0).
 *
 * On for a host when `mod_last` is listed under `modules`.
 *
 *   get to an account's bare JID (§3, "offline user query"), answered by
 *   the server on the account's behalf:
 *     - the requester is the account itself or has a subscription to its
 *       presence (the account's roster item for the requester has
 *       subscription from or both); anyone else gets forbidden (§3 MUST);
 *     - the account has an available resource → seconds='0' (§3 MUST);
 *     - else seconds since it last went unavailable, with the <status/>
 *       of that unavailable presence as text;
 *     - nothing recorded (never logged out here) → item-not-found.
 *   get to the server's JID (§4 "server query") → seconds since the server
 *   started.
 *   set → not-allowed.  An IQ to a full JID goes to the client (router).
 *
 * Recording: each time a resource goes unavailable (the user_unavailable
 * hook, by presence or by the end of the session) the time and status are
 * written, one row per account (table last_activity), off the loop with
 * xd_db_async.  Account removal deletes the row.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

#define LAST_STATUS_MAX 1024 /* bytes of <status/> kept */
#define LAST_MAX_RES 64      /* sessions looked at for "is anyone available" */

static struct timespec last_boot; /* CLOCK_MONOTONIC at the first start (server start) */

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const last_mig1[] = {
    "CREATE TABLE last_activity ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " seconds {int} NOT NULL," /* when it went unavailable, seconds since the epoch */
    " status {text} NOT NULL,"
    " PRIMARY KEY (host, username))",
    NULL,
};

static const xd_db_migration_t last_migrations[] = {
    { 1, NULL, last_mig1 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t last_schemas[] = {
    { "mod_last", last_migrations },
    { NULL, NULL },
};

typedef struct last_rec {
    char host[1024], user[1024];
    int64_t when;                   /* seconds since the epoch */
    char status[LAST_STATUS_MAX + 1];
    int rc;                         /* the transaction's result */
} last_rec_t;

static int
last_store_tx(xd_db_conn_t *c, void *arg)
{
    const last_rec_t *r = arg;
    xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user) };
    int rc = xd_db_query(c, "DELETE FROM last_activity WHERE host = ? AND username = ?", key, 2,
                         NULL, NULL);
    if (rc != 0)
        return rc;
    xd_db_val_t row[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user), XD_DB_V_INT(r->when),
                          XD_DB_V_CSTR(r->status) };
    return xd_db_query(c,
                       "INSERT INTO last_activity (host, username, seconds, status)"
                       " VALUES (?, ?, ?, ?)",
                       row, 4, NULL, NULL);
}

/* On the pool: the delete and insert as one transaction. */
static void
last_store_work(xd_module_ctx_t *ctx, void *arg)
{
    last_rec_t *r = arg;
    xd_db_t *db = xd_module_db(ctx);
    int rc = db ? xd_db_tx(db, last_store_tx, r) : XD_ECLOSED;
    r->rc = rc < 0 ? rc : 0;
}

static void
last_store_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    last_rec_t *r = arg;
    if (!status)
        status = r->rc;
    if (status != 0)
        XD_LOG(NULL, XD_ERROR, "last activity not stored", "host=%s user=%s err=%s", r->host,
               r->user, xd_strerror(status));
    xd_free(r);
}

/* user_unavailable: remember when and with which status. */
static int
last_unavailable(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    last_rec_t *r = xd_new(last_rec_t);
    xd_str_t l = xd_jid_local(ev->jid);
    snprintf(r->host, sizeof r->host, "%s", ev->host);
    snprintf(r->user, sizeof r->user, "%.*s", (int)l.len, l.p);
    r->when = (int64_t)time(NULL);
    const char *status =
        ev->presence ? xd_el_child_text(xd_stanza_root(ev->presence), "status", NULL) : NULL;
    snprintf(r->status, sizeof r->status, "%s", status ? status : "");
    int rc = xd_module_submit(ctx, last_store_work, last_store_done, r);
    if (rc != 0)
        last_store_done(ctx, r, rc);
    return XD_HOOK_OK;
}

/* ---- queries ----------------------------------------------------------------------------------- */

typedef struct last_row {
    bool found;
    int64_t when;
    char *status; /* owned */
} last_row_t;

static int
last_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    last_row_t *r = arg;
    if (ncols < 2 || cols[0].type != XD_DB_INT64)
        return 0;
    r->found = true;
    r->when = cols[0].i;
    r->status = cols[1].type == XD_DB_TEXT ? xd_strndup(cols[1].s.p, cols[1].s.len) : NULL;
    return 1;
}

static xd_stanza_t *
last_result(const xd_stanza_t *iq, int64_t seconds, const char *status)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)(seconds < 0 ? 0 : seconds));
    xd_el_t *r = xd_iq_result_builder(iq);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_LAST);
    xd_el_set_attr(q, "seconds", buf);
    if (status && *status)
        xd_el_add_text(q, status);
    return xd_el_freeze(r);
}

static bool
last_is_get(const xd_stanza_t *iq)
{
    const char *type = xd_el_attr(xd_stanza_root(iq), "type");
    return type && !strcmp(type, "get");
}

static int
last_item(void *arg, const xd_roster_view_t *it)
{
    *(bool *)arg = it->sub & XD_ROSTER_SUB_FROM;
    return 1;
}

/* The account's own sessions, or a contact it shares its presence with
 * (the roster, through ROSTER_GET: this runs on the pool). */
static bool
last_may_see(const xd_iq_req_t *req, const char *user)
{
    if (xd_jid_eq_bare(req->from, req->to))
        return true;
    xd_str_t b = xd_jid_bare_str(req->from);
    char contact[XD_JID_MAX + 1];
    snprintf(contact, sizeof contact, "%.*s", (int)b.len, b.p);
    bool from = false;
    xd_hook_roster_get_t ev = { .host = req->host, .user = user, .contact = contact,
                                .fn = last_item, .arg = &from };
    xd_hook_run(XD_HOOK_ROSTER_GET, req->host, &ev);
    return ev.served && ev.rc == 0 && from;
}

/* To an account's bare JID (PARALLEL: roster and storage reads). */
static xd_stanza_t *
last_user_iq(const xd_iq_req_t *req)
{
    if (!last_is_get(req->iq))
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    xd_str_t l = xd_jid_local(req->to);
    char user[1024];
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    if (!last_may_see(req, user))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, NULL); /* §3 */

    xd_session_info_t res[LAST_MAX_RES];
    size_t n = xd_session_list(req->to, res, LAST_MAX_RES);
    if (n > LAST_MAX_RES)
        n = LAST_MAX_RES;
    bool online = false;
    for (size_t i = 0; i < n; i++) {
        online = online || res[i].available;
        xd_session_info_clear(&res[i]);
    }
    if (online)
        return last_result(req->iq, 0, NULL);

    xd_db_t *db = xd_module_db(req->ctx);
    xd_db_conn_t *c;
    int rc = db ? xd_db_acquire(db, &c) : XD_ECLOSED;
    last_row_t row = { 0 };
    if (rc == 0) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(req->host), XD_DB_V_CSTR(user) };
        rc = xd_db_query(c, "SELECT seconds, status FROM last_activity"
                            " WHERE host = ? AND username = ?",
                         key, 2, last_row, &row);
        xd_db_release(c);
    }
    if (rc != 0) {
        xd_free(row.status);
        XD_LOG(NULL, XD_ERROR, "last activity load failed", "host=%s user=%s err=%s", req->host,
               user, xd_strerror(rc));
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    xd_stanza_t *reply = row.found
                             ? last_result(req->iq, (int64_t)time(NULL) - row.when, row.status)
                             : xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, NULL);
    xd_free(row.status);
    return reply;
}

/* To the server's JID (INLINE): its uptime (§4). */
static xd_stanza_t *
last_host_iq(const xd_iq_req_t *req)
{
    if (!last_is_get(req->iq))
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return last_result(req->iq, (int64_t)(now.tv_sec - last_boot.tv_sec), NULL);
}

/* ---- module ------------------------------------------------------------------------------------ */

static int
last_start(xd_module_ctx_t *ctx)
{
    if (!xd_module_db(ctx))
        return xd_module_fail(ctx, XD_ECLOSED, "no database");
    if (!last_boot.tv_sec) /* start runs on one thread at a time */
        clock_gettime(CLOCK_MONOTONIC, &last_boot);
    int rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_LAST, XD_IQ_PARALLEL, last_user_iq, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_LAST, XD_IQ_INLINE, last_host_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_UNAVAILABLE, XD_HOOK_PRIO_DEFAULT,
                            last_unavailable, NULL);
    if (rc == 0) /* the account's row goes with it */
        rc = mod_user_rows(ctx, "DELETE FROM last_activity WHERE host = ? AND username = ?");
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    return 0;
}

const xd_module_t xd_mod_last = {
    .abi = XD_MODULE_ABI,
    .name = "mod_last",
    .doc = "Last activity (XEP-0012): when an account was last seen, the server's uptime",
    .schemas = last_schemas,
    .start = last_start,
};
