/*
 * mod_offline.c — offline messages (XEP-0160) with delay stamps (XEP-0203).
 *
 * mod_offline, on when listed under `modules` (per host).  A chat or
 * normal message to an account with no session that takes it (RFC 6121
 * 8.5.2.2.1) is stored, stamped with <delay from='host' stamp='…'/>, and the
 * store is committed before the sender's stream goes on to its next stanza
 * (xmppd/input.h; the batched writer of mod_batch.h), so a message the sender saw answered past survives a
 * crash of the server, and a graceful stop drains the stores first.  When a session of the account
 * sends its initial available presence with a non-negative priority, the
 * stored messages are taken out (read and deleted in one transaction) and
 * delivered to it in order.
 *
 * What is stored: messages with a <body> or <subject>, or an end-to-end
 * encrypted payload sent without a body (OMEMO, OpenPGP:
 * mod_msg_worth_keeping; chat states alone and receipts are not worth
 * keeping, XEP-0160 3), and any with the XEP-0334
 * <store/> hint; not one with <no-store/> (the sender gets service-
 * unavailable, as from a host that keeps no messages; off_store_hint);
 * messages to accounts that do not exist get service-unavailable; beyond
 * `max_user_messages` or `max_user_size` per account, resource-constraint
 * (the sender learns it was not kept).
 *
 * Threads: the router calls in on a worker loop; the database work runs on
 * the blocking pool (xd_db_async) and its answer comes back to that loop.
 * The instance is held (xd_module_hold) while a store or a delivery is in
 * flight.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mod_batch.h"
#include "mod_util.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

typedef struct off_conf {
    int max_user_messages; /* stored messages per account */
    size_t max_user_size;  /* stored bytes per account */
} off_conf_t;

#define O_ off_conf_t
static const xd_opt_t off_opts[] = {
    XD_OPT_INT("max_user_messages", O_, max_user_messages, "1000", 1, 1000000,
               "Messages kept per account; beyond it senders get resource-constraint."),
    XD_OPT_SIZE("max_user_size", O_, max_user_size, "2MiB",
                "Bytes of stored messages (their XML with the delay stamp) kept per account; a "
                "message that would go beyond is refused with resource-constraint.  They are "
                "sent in one go at login: keep it below the c2s listeners' max_queue."),
    XD_OPT_END,
};
#undef O_

static const char *const off_mig1[] = {
    "CREATE TABLE offline_msg ("
    " id {autoid},"
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " created_at {int} NOT NULL,"
    " xml {text} NOT NULL)",
    "CREATE INDEX offline_msg_user ON offline_msg (host, username, id)",
    NULL,
};

/* The byte quota: each row's size, and an index that answers count and
 * sum without reading the messages. */
static const char *const off_mig2[] = {
    "ALTER TABLE offline_msg ADD COLUMN size {int} NOT NULL DEFAULT 0",
    "UPDATE offline_msg SET size = {octets:xml}",
    "CREATE INDEX offline_msg_quota ON offline_msg (host, username, size)",
    NULL,
};

static const xd_db_migration_t off_migrations[] = {
    { 1, NULL, off_mig1 },
    { 2, NULL, off_mig2 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t off_schemas[] = {
    { "mod_offline", off_migrations },
    { NULL, NULL },
};

/* ---- storing ----------------------------------------------------------------------------------- *
 *
 * Order and durability (RFC 6120 10.1, xmppd/input.h): a message to store
 * holds the stream it came from until its row is committed, so the
 * sender's next stanza (an IQ whose answer says "done", an SM ack) is
 * handled only after the message is durable, and one sender's messages are
 * stored in the order sent.  Stores wait in a per-worker FIFO and are
 * written in batches, one transaction each (the quota is checked per
 * message inside it), so many senders share the commit.  The FIFO is
 * bounded (OFF_Q_MAX messages, OFF_Q_MAX_BYTES): beyond, resource-
 * constraint at once.  A held stream adds at most one message, so the bound
 * is hit only by stanzas that come from no stream. */

#define OFF_Q_MAX 10000                  /* messages waiting on one worker */
#define OFF_Q_MAX_BYTES (64u << 20)      /* their XML */
#define OFF_BATCH_MAX 256                /* messages per transaction */
#define OFF_BATCH_MAX_BYTES (4u << 20)   /* their XML */

typedef struct off_store {
    mod_batch_item_t b;     /* first: the FIFO (mod_batch.h); b.bytes is xml_len */
    xd_stanza_t *orig;      /* the message as routed (for the error reply) */
    char *host;             /* the account's host */
    char *user;             /* its localpart */
    char *xml;              /* what is stored: the message with its delay stamp */
    size_t xml_len;         /* its length */
    int64_t max;            /* quota: messages */
    int64_t max_bytes;      /* quota: bytes */
    int64_t now;            /* seconds since the epoch */
    bool queued;            /* in the FIFO (finish: a store was tried) */
} off_store_t;

static bool
off_same_account(const off_store_t *a, const off_store_t *b)
{
    return !strcmp(a->host, b->host) && !strcmp(a->user, b->user);
}

/* The quota check and insert of every message, in one write transaction
 * (so that batches on several pool threads cannot all pass the quota).
 * Counts are carried along for runs of one account. */
static int
off_batch_tx(xd_db_conn_t *c, void *arg)
{
    int64_t n = 0, bytes = 0;
    const off_store_t *counted = NULL; /* the account n and bytes are for */
    for (mod_batch_item_t *it = arg; it; it = it->next) {
        off_store_t *s = (off_store_t *)it;
        if (s->b.status == XD_ENOTFOUND)
            continue; /* no such account (known before the transaction) */
        s->b.status = 0; /* a retried transaction starts again */
        if (!counted || !off_same_account(counted, s)) {
            xd_db_val_t key[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user) };
            int rc = xd_db_query_int64(c,
                                       "SELECT COUNT(*) FROM offline_msg"
                                       " WHERE host = ? AND username = ?",
                                       key, 2, &n);
            if (rc == 0)
                rc = xd_db_query_int64(c,
                                       "SELECT COALESCE(SUM(size), 0) FROM offline_msg"
                                       " WHERE host = ? AND username = ?",
                                       key, 2, &bytes);
            if (rc != 0)
                return rc;
            counted = s;
        }
        if (n >= s->max || bytes + (int64_t)s->xml_len > s->max_bytes) {
            s->b.status = XD_ELIMIT;
            continue;
        }
        xd_db_val_t row[] = {
            XD_DB_V_CSTR(s->host),
            XD_DB_V_CSTR(s->user),
            XD_DB_V_INT(s->now),
            XD_DB_V_TEXT(((xd_str_t){ s->xml, s->xml_len })),
            XD_DB_V_INT((int64_t)s->xml_len),
        };
        int rc = xd_db_query(c,
                             "INSERT INTO offline_msg (host, username, created_at, xml, size)"
                             " VALUES (?, ?, ?, ?, ?)",
                             row, 5, NULL, NULL);
        if (rc != 0)
            return rc;
        n++;
        bytes += (int64_t)s->xml_len;
    }
    return 0;
}

/* mod_batch write: existence first, outside the transaction (the auth
 * backend may be elsewhere), asked once per account of a run. */
static int
off_batch_write(xd_db_t *db, mod_batch_item_t *head)
{
    const off_store_t *asked = NULL;
    int known = 0;
    for (mod_batch_item_t *it = head; it; it = it->next) {
        off_store_t *s = (off_store_t *)it;
        if (!asked || !off_same_account(asked, s)) {
            bool exists = false;
            int rc = xd_auth_user_exists_sync(s->host, s->user, &exists);
            if (rc == XD_ENOTSUP)
                exists = true; /* anonymous hosts: the session table is the truth */
            else if (rc != 0)
                return rc;
            known = exists ? 0 : XD_ENOTFOUND;
            asked = s;
        }
        s->b.status = known;
    }
    return xd_db_tx(db, off_batch_tx, head);
}

/* mod_batch finish: an error to the sender when the message was not
 * stored. */
static void off_repop(xd_module_ctx_t *ctx, const char *host, const char *user);

/* Whether routing would hand `msg` to a session of its account now
 * (RFC 6121 8.5.2: the picking rule of xd_session_pick). */
static bool
off_account_takes(const xd_stanza_t *msg, const xd_jid_t *to)
{
    enum { MAX = 16 };
    xd_session_info_t e[MAX];
    bool take[MAX];
    size_t n = xd_session_list(to, e, MAX), got = n < MAX ? n : MAX;
    size_t k = xd_session_pick(e, got, msg, take);
    for (size_t i = 0; i < got; i++)
        xd_session_info_clear(&e[i]);
    return k > 0;
}

static void
off_store_finish(mod_batch_item_t *it, int status)
{
    off_store_t *s = (off_store_t *)it;
    if (status == 0 && s->queued) {
        /* Stored.  A session of the account that became available while
         * the row was on its way took out what was stored before it (its
         * pop ran first: another pool thread, or a store queued on
         * another worker): this row would wait for the next login.  Take
         * it out for that session now (a mass disconnect's messages
         * stored while their accounts log in again). */
        const xd_jid_t *to = xd_stanza_to(s->orig);
        if (to && off_account_takes(s->orig, to))
            off_repop(it->ctx, s->host, s->user);
    } else if (status == XD_ENOTFOUND) {
        /* RFC 6121 8.5.2.2.1 for an account that does not exist. */
        xd_route_error(s->orig, XD_COND_SERVICE_UNAVAILABLE, NULL);
    } else if (status == XD_ELIMIT) {
        xd_route_error(s->orig, XD_COND_RESOURCE_CONSTRAINT,
                       "the recipient's offline storage is full");
    } else if (status != 0) {
        XD_LOG(NULL, XD_ERROR, "offline store failed", "host=%s user=%s err=%s", s->host,
               s->user, xd_strerror(status));
        xd_route_error(s->orig, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    xd_stanza_unref(s->orig);
    xd_free(s->host);
    xd_free(s->user);
    xd_free(s->xml);
    xd_free(s);
}

static const mod_batch_ops_t off_batch_ops = {
    .what = "offline store",
    .write = off_batch_write,
    .finish = off_store_finish,
    .q_max = OFF_Q_MAX,
    .q_max_bytes = OFF_Q_MAX_BYTES,
    .batch_max = OFF_BATCH_MAX,
    .batch_max_bytes = OFF_BATCH_MAX_BYTES,
};

/* The FIFO belongs to the worker thread (mod_batch.h). */
static _Thread_local mod_batch_q_t off_q;

/* XEP-0334 (Message Processing Hints, urn:xmpp:hints) as offline storage
 * reads them.  <no-store/>: not kept "temporarily, e.g. for later delivery
 * to an offline client"; it wins over a <store/> next to it (keeping
 * nothing is the safe side of a contradiction).  <store/>: kept even with
 * nothing XEP-0160 thinks worth keeping.  <no-permanent-store/> is about
 * archives and logs (MAM), not this temporary store: ignored here.  Hints
 * in an error SHOULD be ignored (XEP-0334 5): errors never get here. */
typedef enum { OFF_HINT_NONE, OFF_HINT_STORE, OFF_HINT_NO_STORE } off_hint;

static off_hint
off_store_hint(const xd_el_t *el)
{
    if (xd_el_child(el, "no-store", XD_NS_HINTS))
        return OFF_HINT_NO_STORE;
    if (xd_el_child(el, "store", XD_NS_HINTS))
        return OFF_HINT_STORE;
    return OFF_HINT_NONE;
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
    off_hint hint = off_store_hint(el);
    if (hint != OFF_HINT_STORE && !mod_msg_worth_keeping(el))
        return XD_HOOK_STOP; /* XEP-0160 3: nothing to keep, and no error */
    if (hint == OFF_HINT_NO_STORE)
        return XD_HOOK_OK; /* not kept: service-unavailable, as with no storage */
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
    s->orig = xd_stanza_ref(st);
    xd_str_t l = xd_jid_local(to);
    s->host = xd_strdup(host);
    s->user = xd_strndup(l.p, l.len);
    s->xml = xd_strndup(bytes, len);
    s->xml_len = len;
    s->b.bytes = len;
    s->max = oc->max_user_messages;
    s->max_bytes = oc->max_user_size > (size_t)INT64_MAX ? INT64_MAX : (int64_t)oc->max_user_size;
    s->now = (int64_t)ts.tv_sec;
    xd_stanza_unref(stamped);
    s->queued = true;
    if (mod_batch_push(&off_q, &off_batch_ops, ctx, &s->b) != 0) {
        s->queued = false;
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT,
                       "the server cannot store more messages now");
        off_store_finish(&s->b, 0); /* nothing routed for 0: frees it */
    }
    return XD_HOOK_STOP;
}

/* ---- delivering ------------------------------------------------------------------------------- */

typedef struct off_pop {
    xd_module_ctx_t *ctx;  /* the instance (held until done) */
    char host[1024];       /* the account */
    char user[1024];
    xd_session_ref_t to;   /* the session to deliver to (unless route) */
    bool route;            /* a pop after a late store: routed to the account */
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

static void off_pop_done(void *arg, int status);

/* Takes the account's stored messages out on the pool: for the session
 * `to`, or (to NULL) routed to the account.  false when the pool refused:
 * they stay stored for the next login. */
static bool
off_pop_start(xd_module_ctx_t *ctx, const char *host, xd_str_t user, const xd_session_ref_t *to)
{
    off_pop_t *p = xd_new(off_pop_t);
    p->ctx = ctx;
    if (to)
        p->to = *to;
    p->route = !to;
    snprintf(p->host, sizeof p->host, "%s", host);
    snprintf(p->user, sizeof p->user, "%.*s", (int)user.len, user.p);
    xd_module_hold(ctx);
    if (xd_db_async(xd_module_db(ctx), off_pop_work, off_pop_done, p) == 0)
        return true;
    xd_module_release(ctx);
    xd_free(p);
    return false;
}

/* Pops after late stores, one at a time per account on this worker: a
 * batch of 256 rows for one account starts one pop, not 256; rows stored
 * while it runs start one more after it (OFF_REPOP_AGAIN). */
#define OFF_REPOP_RUNNING ((void *)1)
#define OFF_REPOP_AGAIN ((void *)2)
static _Thread_local xd_map_t off_repops;

/* The account's entry: "host/user" into buf. */
static xd_str_t
off_repop_key(char *buf, size_t cap, const char *host, const char *user)
{
    int n = snprintf(buf, cap, "%s/%s", host, user);
    return (xd_str_t){ buf, n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1 };
}

/* A pop for the account (state RUNNING), or the entry goes. */
static void
off_repop_run(xd_module_ctx_t *ctx, const char *host, const char *user, xd_str_t k)
{
    xd_map_put(&off_repops, k, OFF_REPOP_RUNNING);
    if (off_pop_start(ctx, host, (xd_str_t){ user, strlen(user) }, NULL))
        return;
    xd_map_del(&off_repops, k);
    if (xd_map_count(&off_repops) == 0)
        xd_map_free(&off_repops, NULL); /* nothing left behind at the thread's end */
}

static void
off_repop(xd_module_ctx_t *ctx, const char *host, const char *user)
{
    char kb[2100];
    xd_str_t k = off_repop_key(kb, sizeof kb, host, user);
    if (xd_map_get(&off_repops, k))
        xd_map_put(&off_repops, k, OFF_REPOP_AGAIN);
    else
        off_repop_run(ctx, host, user, k);
}

static void
off_repop_done(xd_module_ctx_t *ctx, const char *host, const char *user)
{
    char kb[2100];
    xd_str_t k = off_repop_key(kb, sizeof kb, host, user);
    if (xd_map_get(&off_repops, k) == OFF_REPOP_AGAIN) {
        off_repop_run(ctx, host, user, k);
        return;
    }
    xd_map_del(&off_repops, k);
    if (xd_map_count(&off_repops) == 0)
        xd_map_free(&off_repops, NULL);
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
            xd_stanza_parse(p->msgs[i], strlen(p->msgs[i]), XD_NS_CLIENT, &st) == 0) {
            /* A session that ended before the message reached it: routed
             * again to the account (stored once more when no other session
             * takes it; it left the store when it was taken out). */
            if (p->route)
                xd_route_take(st);
            else
                xd_session_send_take_or(&p->to, st, xd_route_take);
        }
        xd_free(p->msgs[i]);
    }
    if (p->n)
        XD_LOG(NULL, XD_INFO, "offline messages delivered", "host=%s user=%s count=%zu", p->host,
               p->user, p->n);
    if (p->route)
        off_repop_done(p->ctx, p->host, p->user);
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
    xd_session_ref_t to = e.ref;
    xd_session_info_clear(&e);
    (void)off_pop_start(ctx, ev->host, xd_jid_local(full), &to);
    return XD_HOOK_OK;
}

/* ---- module ------------------------------------------------------------------------------------ */

/* ---- XEP-0227 export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ---------------------------- */

static int
off_pie_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    xd_el_t *om = arg;
    if (ncols < 1 || cols[0].type != XD_DB_TEXT)
        return 0;
    xd_stanza_t *st = NULL;
    if (xd_stanza_parse(cols[0].s.p, cols[0].s.len, XD_NS_CLIENT, &st) != 0)
        return 0; /* unreadable rows are not delivered either */
    xd_el_t *m = xd_stanza_edit(st);
    xd_stanza_unref(st);
    xd_el_set_attr(m, "xmlns", XD_NS_CLIENT); /* in <offline-messages/> of urn:xmpp:pie:0 */
    xd_el_append(om, m);
    return 0;
}

/* The stored messages, oldest first, with their delay stamps, in
 * <offline-messages/> (XEP-0227 4.3). */
static int
off_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)arg;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (rc == 0) {
        xd_el_t *om = xd_el_new("offline-messages", NULL);
        xd_db_val_t key[] = { XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user) };
        rc = xd_db_query(c,
                         "SELECT xml FROM offline_msg WHERE host = ? AND username = ? ORDER BY id",
                         key, 2, off_pie_row, om);
        xd_db_release(c);
        if (rc == 0 && xd_el_first_child(om))
            xd_el_append(ev->user_el, om);
        else
            xd_el_free(om);
    }
    if (rc != 0) {
        ev->rc = rc;
        ev->module = "mod_offline";
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

static int
off_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)arg;
    const off_conf_t *conf = xd_module_opts(ctx);
    xd_db_conn_t *c;
    int rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (rc != 0) {
        ev->rc = rc;
        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "offline: %s", xd_strerror(rc));
        return XD_HOOK_STOP;
    }
    int64_t n = 0, bytes = 0, now = (int64_t)time(NULL);
    size_t i = 0;
    for (const xd_el_t *om = xd_el_first_child(ev->user_el); om && rc == 0;
         om = xd_el_next(om), i++) {
        if (!xd_el_is(om, "offline-messages", NULL) || xd_el_ns(om))
            continue;
        ev->taken[i] = true;
        for (const xd_el_t *m = xd_el_first_child(om); m && rc == 0; m = xd_el_next(m)) {
            if (!xd_el_is(m, "message", XD_NS_CLIENT))
                continue;
            /* Through the parser once more: stored as routed stanzas are. */
            size_t len;
            char *raw = xd_el_serialize(m, XD_NS_CLIENT, &len);
            xd_stanza_t *st = NULL;
            rc = xd_stanza_parse(raw, len, XD_NS_CLIENT, &st);
            xd_free(raw);
            if (rc != 0) {
                snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "offline: a message is not a stanza");
                break;
            }
            const char *xml = xd_stanza_bytes(st, &len);
            if (++n > conf->max_user_messages ||
                (bytes += (int64_t)len) > (int64_t)conf->max_user_size) {
                snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX,
                         "offline: more than max_user_messages or max_user_size");
                rc = XD_ELIMIT;
            } else {
                xd_db_val_t row[] = {
                    XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user), XD_DB_V_INT(now),
                    XD_DB_V_TEXT(((xd_str_t){ xml, len })), XD_DB_V_INT((int64_t)len),
                };
                rc = xd_db_query(c,
                                 "INSERT INTO offline_msg (host, username, created_at, xml, size)"
                                 " VALUES (?, ?, ?, ?, ?)",
                                 row, 5, NULL, NULL);
                if (rc != 0)
                    snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "offline: %s", xd_strerror(rc));
            }
            xd_stanza_unref(st);
        }
    }
    xd_db_release(c);
    if (rc != 0) {
        ev->rc = rc;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

static int
off_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_hook(ctx, XD_HOOK_OFFLINE_MESSAGE, XD_HOOK_PRIO_DEFAULT, off_store, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_AVAILABLE, XD_HOOK_PRIO_DEFAULT, off_available,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, off_pie_export,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, XD_HOOK_PRIO_DEFAULT, off_pie_import,
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
