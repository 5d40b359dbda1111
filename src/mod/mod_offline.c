/*
 * mod_offline.c — offline messages (XEP-0160) with delay stamps (XEP-0203).
 *
 * mod_offline, on when listed under `modules` (per host).  A chat or
 * normal message to an account with no session that takes it (RFC 6121
 * 8.5.2.2.1) is stored, stamped with <delay from='host' stamp='…'/>, and the
 * store is committed before the router forgets the message, so a stored
 * message survives a crash of the server.  When a session of the account
 * sends its initial available presence with a non-negative priority, the
 * stored messages are taken out (read and deleted in one transaction) and
 * delivered to it in order.
 *
 * What is stored: messages with a <body> or <subject> (chat states alone
 * and receipts are not worth keeping, XEP-0160 3); messages to accounts that
 * do not exist get service-unavailable; beyond `max_user_messages` per
 * account, resource-constraint (the sender learns it was not kept).
 *
 * Threads: the router calls in on a worker loop; the database work runs on
 * the blocking pool (xd_db_async) and its answer comes back to that loop.
 * The instance is held (xd_module_hold) while a store or a delivery is in
 * flight.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

typedef struct off_conf {
    int max_user_messages; /* stored messages per account */
} off_conf_t;

#define O_ off_conf_t
static const xd_opt_t off_opts[] = {
    XD_OPT_INT("max_user_messages", O_, max_user_messages, "1000", 1, 1000000,
               "Messages kept per account; beyond it senders get resource-constraint."),
    XD_OPT_END,
};
#undef O_

static const char *const off_mig1[] = {
    "CREATE TABLE offline_msg ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " host TEXT NOT NULL,"
    " username TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " xml TEXT NOT NULL)",
    "CREATE INDEX offline_msg_user ON offline_msg (host, username, id)",
    NULL,
};

static const xd_db_migration_t off_migrations[] = {
    { 1, NULL, off_mig1 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t off_schemas[] = {
    { "mod_offline", off_migrations },
    { NULL, NULL },
};

/* ---- storing ----------------------------------------------------------------------------------- */

typedef struct off_store {
    struct off_store *next; /* the worker's queue of stores */
    xd_module_ctx_t *ctx; /* the instance (held until done) */
    xd_stanza_t *orig;   /* the message as routed (for the error reply) */
    char host[1024];     /* the account's host */
    char user[1024];     /* its localpart */
    char *xml;           /* what is stored: the message with its delay stamp */
    size_t xml_len;      /* its length */
    int64_t max;         /* quota */
    int64_t now;         /* seconds since the epoch */
} off_store_t;

/* Count and insert in one write transaction, so that messages stored at
 * the same time on several pool threads cannot all pass the quota. */
static int
off_store_tx(xd_db_conn_t *c, void *arg)
{
    off_store_t *s = arg;
    int rc;
    xd_db_val_t key[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user) };
    int64_t n = 0;
    rc = xd_db_query_int64(c, "SELECT COUNT(*) FROM offline_msg WHERE host = ? AND username = ?",
                           key, 2, &n);
    if (rc != 0)
        return rc;
    if (n >= s->max)
        return XD_ELIMIT;
    xd_db_val_t row[] = {
        XD_DB_V_CSTR(s->host),
        XD_DB_V_CSTR(s->user),
        XD_DB_V_INT(s->now),
        XD_DB_V_TEXT(((xd_str_t){ s->xml, s->xml_len })),
    };
    return xd_db_query(c,
                       "INSERT INTO offline_msg (host, username, created_at, xml)"
                       " VALUES (?, ?, ?, ?)",
                       row, 4, NULL, NULL);
}

static int
off_store_work(xd_db_conn_t *c, void *arg)
{
    (void)c;
    off_store_t *s = arg;
    bool exists = false;
    int rc = xd_auth_user_exists_sync(s->host, s->user, &exists);
    if (rc == XD_ENOTSUP)
        exists = true; /* anonymous hosts: the session table is the truth */
    else if (rc != 0)
        return rc;
    if (!exists)
        return XD_ENOTFOUND;
    return xd_db_tx(xd_module_db(s->ctx), off_store_tx, s);
}

/* Stores run one at a time per worker, in the order the router handed
 * them over: messages from one sender keep their order (RFC 6120 10.1)
 * although the pool has several threads.  The queue belongs to the worker
 * thread: xd_db_async brings each answer back to the thread that asked. */
static _Thread_local off_store_t *off_q_head, *off_q_tail;

static void off_store_done(void *arg, int status);

static void
off_q_run(void)
{
    while (off_q_head) {
        int rc = xd_db_async(xd_module_db(off_q_head->ctx), off_store_work, off_store_done,
                             off_q_head);
        if (rc == 0)
            return;
        /* Cannot queue: fail this one now and try the next. */
        off_store_t *s = off_q_head;
        off_q_head = s->next;
        if (!off_q_head)
            off_q_tail = NULL;
        s->next = NULL;
        off_store_done(s, rc == XD_EFULL ? XD_EINTERNAL : rc);
    }
}

static void
off_store_done(void *arg, int status)
{
    off_store_t *s = arg;
    if (off_q_head == s) {
        off_q_head = s->next;
        if (!off_q_head)
            off_q_tail = NULL;
        if (off_q_head)
            off_q_run();
    }
    if (status == XD_ENOTFOUND) {
        /* RFC 6121 8.5.2.2.1 for an account that does not exist. */
        xd_stanza_t *e = xd_stanza_error(s->orig, XD_COND_SERVICE_UNAVAILABLE, NULL);
        if (e)
            xd_route_take(e);
    } else if (status == XD_ELIMIT) {
        xd_stanza_t *e = xd_stanza_error(s->orig, XD_COND_RESOURCE_CONSTRAINT,
                                         "the recipient's offline storage is full");
        if (e)
            xd_route_take(e);
    } else if (status != 0) {
        XD_LOG(NULL, XD_ERROR, "offline store failed", "host=%s user=%s err=%s", s->host,
               s->user, xd_strerror(status));
        xd_stanza_t *e = xd_stanza_error(s->orig, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        if (e)
            xd_route_take(e);
    }
    xd_module_release(s->ctx);
    xd_stanza_unref(s->orig);
    xd_free(s->xml);
    xd_free(s);
}

static bool
off_worth_keeping(const xd_el_t *el)
{
    return xd_el_child(el, "body", NULL) || xd_el_child(el, "subject", NULL);
}

/* XD_HOOK_OFFLINE_MESSAGE: keeps the message (returns XD_HOOK_STOP) when
 * the host stores messages. */
static int
off_store(xd_module_ctx_t *ctx, xd_hook_stanza_t *ev, void *arg)
{
    (void)arg;
    const xd_stanza_t *st = ev->st;
    const xd_jid_t *to = ev->to;
    const char *host = ev->host;
    const off_conf_t *oc = xd_module_opts(ctx);
    if (!xd_module_db(ctx))
        return XD_HOOK_OK;
    const xd_el_t *el = xd_stanza_root(st);
    if (!off_worth_keeping(el))
        return XD_HOOK_STOP; /* XEP-0160 3: nothing to keep, and no error */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96];
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    /* The stamp is ours alone: a <delay/> in our host's name that is there
     * already was forged by the sender, or is an earlier stamp of a stored
     * message coming back from a session that ended before it got it. */
    xd_el_t *e = xd_stanza_edit(st);
    for (xd_el_t *c = xd_el_first_child_mut(e), *next; c; c = next) {
        next = xd_el_next_mut(c);
        const char *df = xd_el_attr(c, "from");
        if (xd_el_is(c, "delay", XD_NS_DELAY) && df && !strcmp(df, host))
            xd_el_remove_child(e, c);
    }
    xd_el_t *d = xd_el_add_child(e, "delay", XD_NS_DELAY);
    xd_el_set_attr(d, "from", host);
    xd_el_set_attr(d, "stamp", stamp);
    xd_el_add_text(d, "Offline Storage");
    xd_stanza_t *stamped = xd_el_freeze(e);
    size_t len;
    const char *bytes = xd_stanza_bytes(stamped, &len);

    off_store_t *s = xd_new(off_store_t);
    s->ctx = ctx;
    xd_module_hold(ctx);
    s->orig = xd_stanza_ref(st);
    xd_str_t l = xd_jid_local(to);
    snprintf(s->host, sizeof s->host, "%s", host);
    snprintf(s->user, sizeof s->user, "%.*s", (int)l.len, l.p);
    s->xml = xd_strndup(bytes, len);
    s->xml_len = len;
    s->max = oc->max_user_messages;
    s->now = (int64_t)ts.tv_sec;
    xd_stanza_unref(stamped);
    bool idle = off_q_head == NULL;
    if (off_q_tail)
        off_q_tail->next = s;
    else
        off_q_head = s;
    off_q_tail = s;
    if (idle)
        off_q_run();
    return XD_HOOK_STOP;
}

/* ---- delivering ------------------------------------------------------------------------------- */

typedef struct off_pop {
    xd_module_ctx_t *ctx;  /* the instance (held until done) */
    char host[1024];       /* the account */
    char user[1024];
    xd_session_ref_t to;   /* the session to deliver to */
    char **msgs;           /* popped XML, in order */
    size_t n, cap;
} off_pop_t;

static int
off_pop_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    off_pop_t *p = arg;
    if (ncols < 1 || cols[0].type != XD_DB_TEXT)
        return 0;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->msgs = xd_realloc(p->msgs, p->cap * sizeof *p->msgs);
    }
    p->msgs[p->n++] = xd_strndup(cols[0].s.p, cols[0].s.len);
    return 0;
}

static int
off_pop_tx(xd_db_conn_t *c, void *arg)
{
    off_pop_t *p = arg;
    /* A retried transaction starts again from nothing. */
    for (size_t i = 0; i < p->n; i++)
        xd_free(p->msgs[i]);
    p->n = 0;
    xd_db_val_t key[] = { XD_DB_V_CSTR(p->host), XD_DB_V_CSTR(p->user) };
    int rc = xd_db_query(c, "SELECT xml FROM offline_msg WHERE host = ? AND username = ? ORDER BY id",
                         key, 2, off_pop_row, p);
    if (rc == 0 && p->n)
        rc = xd_db_query(c, "DELETE FROM offline_msg WHERE host = ? AND username = ?", key, 2,
                         NULL, NULL);
    return rc;
}

static int
off_pop_work(xd_db_conn_t *c, void *arg)
{
    (void)c;
    off_pop_t *p = arg;
    return xd_db_tx(xd_module_db(p->ctx), off_pop_tx, p);
}

static void
off_pop_done(void *arg, int status)
{
    off_pop_t *p = arg;
    if (status < 0)
        XD_LOG(NULL, XD_ERROR, "offline delivery failed", "host=%s user=%s err=%s", p->host,
               p->user, xd_strerror(status));
    for (size_t i = 0; i < p->n; i++) {
        xd_stanza_t *st = NULL;
        if (status >= 0 &&
            xd_stanza_parse(p->msgs[i], strlen(p->msgs[i]), XD_NS_CLIENT, &st) == 0)
            /* A session that ended before the message reached it: routed
             * again to the account (stored once more when no other session
             * takes it; it left the store when it was taken out). */
            xd_session_send_take_or(&p->to, st, xd_route_take);
        xd_free(p->msgs[i]);
    }
    if (p->n)
        XD_LOG(NULL, XD_INFO, "offline messages delivered", "host=%s user=%s count=%zu", p->host,
               p->user, p->n);
    xd_free(p->msgs);
    xd_module_release(p->ctx);
    xd_free(p);
}

/* XD_HOOK_USER_AVAILABLE: the first available presence with a
 * non-negative priority (at login, or later when a session that started
 * negative raises it, RFC 6121 8.5.2.1.1) takes the stored messages out
 * for that session. */
static int
off_available(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    const xd_jid_t *full = ev->jid;
    if (!ev->presence || !ev->first_nonneg || !xd_module_db(ctx))
        return XD_HOOK_OK;
    xd_session_info_t e;
    if (xd_session_find(full, &e) != 0)
        return XD_HOOK_OK;
    off_pop_t *p = xd_new(off_pop_t);
    p->ctx = ctx;
    p->to = e.ref;
    xd_session_info_clear(&e);
    xd_str_t l = xd_jid_local(full);
    snprintf(p->host, sizeof p->host, "%s", ev->host);
    snprintf(p->user, sizeof p->user, "%.*s", (int)l.len, l.p);
    xd_module_hold(ctx);
    if (xd_db_async(xd_module_db(ctx), off_pop_work, off_pop_done, p) != 0) {
        xd_module_release(ctx);
        xd_free(p); /* stays stored: delivered at the next login */
    }
    return XD_HOOK_OK;
}

/* ---- module ------------------------------------------------------------------------------------ */

static int
off_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_hook(ctx, XD_HOOK_OFFLINE_MESSAGE, XD_HOOK_PRIO_DEFAULT, off_store, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_AVAILABLE, XD_HOOK_PRIO_DEFAULT, off_available,
                            NULL);
    if (rc == 0) /* the account's stored messages go with it */
        rc = mod_user_rows(ctx, "DELETE FROM offline_msg WHERE host = ? AND username = ?");
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

const xd_module_t xd_mod_offline = {
    .abi = XD_MODULE_ABI,
    .name = "mod_offline",
    .doc = "Offline messages (XEP-0160) with delay stamps (XEP-0203)",
    .opts = off_opts,
    .opts_size = sizeof(off_conf_t),
    .schemas = off_schemas,
    .start = off_start,
};
