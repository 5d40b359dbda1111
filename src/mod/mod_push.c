/*
 * mod_push.c — push notifications (XEP-0357, urn:xmpp:push:0).
 *
 * On for a host when `mod_push` is listed under `modules`.
 *
 * Protocol (IQ-set to one's own bare JID, PARALLEL: they write storage):
 *   <enable jid='APP' node='N'>[<x xmlns='jabber:x:data'/>]</enable>
 *       → registration (APP, N) stored for the account, with the
 *         publish-options form as given; enabling the same (APP, N) again
 *         replaces its form (XEP-0357 5);
 *   <disable jid='APP' [node='N']/>
 *       → that registration, or every one for APP, removed.
 *   Errors: to another account → forbidden; a get, another element, no
 *   'jid', no 'node' on enable → bad-request; a 'jid' that is not a JID →
 *   jid-malformed; a node or a form larger than PS_NODE_MAX / PS_FORM_MAX
 *   → not-acceptable; more than `max_registrations` → policy-violation.
 * The account's disco#info lists urn:xmpp:push:0 (the IQ handler).
 *
 * Triggers: XD_HOOK_OFFLINE_MESSAGE (a chat or normal message with a
 * <body> that no session takes), at PS_PRIO, before mod_offline stores it;
 * and XD_HOOK_USER_RECEIVE_PACKET for such a message delivered to a
 * session that stream management keeps detached (its connection broke,
 * xd_session_detached): it waits there for a resume, unread.  Neither
 * handler ends its chain.
 *
 * Notification: for each registration of the account, an IQ-set from the
 * account's bare JID to APP:
 *   <pubsub xmlns='http://jabber.org/protocol/pubsub'>
 *     <publish node='N'><item><notification xmlns='urn:xmpp:push:0'>
 *       <x xmlns='jabber:x:data' type='submit'>
 *         FORM_TYPE urn:xmpp:push:summary, message-count, last-message-sender,
 *         last-message-body (only with `include_body`)</x>
 *     </notification></item></publish>
 *     [<publish-options>the stored form</publish-options>]</pubsub>
 * message-count counts the messages notified for the account since a
 * session of it last became available (kept in memory, per host).  At most
 * one notification per `min_interval` per registration: the messages in
 * between are counted into the next one's message-count.
 *
 * Answers: the IQs carry ids of ours, kept (`max_unanswered` at most, for
 * `answer_timeout`) with the registration they were for.  The answer
 * comes back to the account's bare JID; a FILTER_PACKET handler (any
 * thread) takes it out before the router sees it: a result forgets the id,
 * an error (not of type 'wait') from the JID the IQ went to disables the
 * registration (XEP-0357 8: the row is deleted).  No answer in time:
 * forgotten, nothing disabled.
 *
 * Threads: the in-memory tables (pending ids, rate limits, counts) are
 * under the instance's mutex; storage runs on the blocking pool.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "mod_util.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

#define PS_NS "urn:xmpp:push:0"
#define PS_NS_SUMMARY "urn:xmpp:push:summary"
#define PS_PRIO 40                   /* OFFLINE_MESSAGE: before mod_offline (50) */
#define PS_FILTER_PRIO 10            /* FILTER_PACKET: answers before any other filter */
#define PS_NODE_MAX 1024             /* bytes of a node name */
#define PS_FORM_MAX 8192             /* bytes of a stored publish-options form */
#define PS_ID_PREFIX "push-"

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct ps_conf {
    bool include_body;       /* last-message-body in notifications */
    uint64_t min_interval;   /* ms between two notifications of one registration */
    int max_registrations;   /* per account */
    int max_unanswered;      /* notifications awaiting an answer, per host */
    uint64_t answer_timeout; /* ms an answer is waited for */
} ps_conf_t;

#define C_ ps_conf_t
static const xd_opt_t ps_opts[] = {
    XD_OPT_BOOL("include_body", C_, include_body, "false",
                "Put the message's body (last-message-body) in notifications.  Off: the app "
                "server (a third party) learns only the count and the sender."),
    XD_OPT_DURATION("min_interval", C_, min_interval, "10s",
                    "At most one notification per registration (device) in this time; the "
                    "messages in between are counted into the next one's message-count.  0: "
                    "no limit."),
    XD_OPT_INT("max_registrations", C_, max_registrations, "10", 1, 1000,
               "Push registrations (app server and node) one account may have; one more is "
               "refused with policy-violation."),
    XD_OPT_INT("max_unanswered", C_, max_unanswered, "4096", 1, 1000000,
               "Notifications of the host waiting for the app server's answer; beyond, new "
               "ones are dropped (and logged) until answers come or time out."),
    XD_OPT_DURATION("answer_timeout", C_, answer_timeout, "60s",
                    "How long the answer to a notification is waited for; an error within it "
                    "disables the registration, no answer is forgotten."),
    XD_OPT_END,
};
#undef C_

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const ps_mig1[] = {
    "CREATE TABLE push_registration ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " node {key} NOT NULL,"
    " options {text},"
    " created_at {int} NOT NULL,"
    " PRIMARY KEY (host, username, jid, node))",
    NULL,
};

static const xd_db_migration_t ps_migrations[] = {
    { 1, NULL, ps_mig1 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t ps_schemas[] = {
    { "mod_push", ps_migrations },
    { NULL, NULL },
};

/* ---- in-memory state --------------------------------------------------------------------------- */

/* A notification awaiting its answer (under the state's mutex). */
typedef struct ps_pending {
    char *user;        /* the account's localpart */
    char *jid;         /* the registration: app server */
    char *node;        /* and node */
    uint64_t deadline; /* monotonic ms */
} ps_pending_t;

typedef struct ps_rate {
    uint64_t last; /* monotonic ms of the last notification sent */
} ps_rate_t;

typedef struct ps_count {
    uint64_t n; /* messages since the account was last available */
} ps_count_t;

/* One per instance (host); any thread, every field under mu. */
typedef struct ps_state {
    pthread_mutex_t mu; /* guards the rest */
    xd_map_t pending;   /* id → ps_pending_t: notifications awaiting an answer */
    xd_map_t rate;      /* "user\njid\nnode" → ps_rate_t (swept once they limit nothing) */
    xd_map_t count;     /* user → ps_count_t, for accounts with registrations */
    uint64_t seq;       /* the last id's number */
} ps_state_t;

static uint64_t
ps_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
ps_pending_free(void *v)
{
    ps_pending_t *p = v;
    if (!p)
        return;
    xd_free(p->user);
    xd_free(p->jid);
    xd_free(p->node);
    xd_free(p);
}

static char *
ps_rate_key(const char *user, const char *jid, const char *node)
{
    size_t n = strlen(user) + strlen(jid) + strlen(node) + 3;
    char *k = xd_malloc(n);
    snprintf(k, n, "%s\n%s\n%s", user, jid, node);
    return k;
}

/* ---- the IQ handler ---------------------------------------------------------------------------- */

/* An enable, lent from the request for the transaction. */
typedef struct ps_enable {
    const char *host, *user; /* the account */
    const char *jid, *node;  /* the registration (jid normalised) */
    const char *form;        /* serialized publish-options form, or NULL */
    size_t form_len;         /* its length */
    int max;                 /* registrations per account */
    int64_t now;             /* seconds since the epoch */
} ps_enable_t;

static int
ps_enable_tx(xd_db_conn_t *c, void *arg)
{
    const ps_enable_t *e = arg;
    xd_db_val_t key[] = { XD_DB_V_CSTR(e->host), XD_DB_V_CSTR(e->user), XD_DB_V_CSTR(e->jid),
                          XD_DB_V_CSTR(e->node) };
    int rc = xd_db_query(c,
                         "DELETE FROM push_registration"
                         " WHERE host = ? AND username = ? AND jid = ? AND node = ?",
                         key, 4, NULL, NULL);
    int64_t n = 0;
    if (rc == 0)
        rc = xd_db_query_int64(c,
                               "SELECT COUNT(*) FROM push_registration"
                               " WHERE host = ? AND username = ?",
                               key, 2, &n);
    if (rc != 0)
        return rc;
    if (n >= e->max)
        return XD_ELIMIT;
    xd_db_val_t row[] = {
        XD_DB_V_CSTR(e->host),
        XD_DB_V_CSTR(e->user),
        XD_DB_V_CSTR(e->jid),
        XD_DB_V_CSTR(e->node),
        e->form ? XD_DB_V_TEXT(((xd_str_t){ e->form, e->form_len })) : XD_DB_V_NULL,
        XD_DB_V_INT(e->now),
    };
    return xd_db_query(c,
                       "INSERT INTO push_registration"
                       " (host, username, jid, node, options, created_at)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       row, 6, NULL, NULL);
}

static xd_stanza_t *
ps_db_error(const xd_iq_req_t *req, int rc)
{
    XD_LOG(NULL, XD_ERROR, "push registration change failed", "host=%s err=%s", req->host,
           xd_strerror(rc));
    return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
}

static xd_stanza_t *
ps_iq(const xd_iq_req_t *req)
{
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    bool enable = xd_el_is(req->payload, "enable", PS_NS);
    if (!enable && !xd_el_is(req->payload, "disable", PS_NS))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <enable/> or <disable/>");
    if (!xd_jid_eq_bare(req->from, req->to))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN,
                               "push registrations belong to their account");
    if (!type || strcmp(type, "set") != 0)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "push is enabled with an IQ-set");
    const char *j = xd_el_attr(req->payload, "jid");
    if (!j)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "the app server's jid is missing");
    xd_jid_t *app = NULL;
    if (xd_jid_parse(xd_str_c(j), &app) != 0)
        return xd_stanza_error(req->iq, XD_COND_JID_MALFORMED, "the jid is not a JID");
    const char *node = xd_el_attr(req->payload, "node");
    xd_db_t *db = xd_module_db(req->ctx);
    xd_str_t l = xd_jid_local(req->to);
    char user[XD_JID_PART_MAX + 1];
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    const char *ajid = xd_jid_full_str(app).p;
    xd_stanza_t *reply = NULL;

    if (!enable) {
        xd_db_conn_t *c = NULL;
        int rc = db ? xd_db_acquire(db, &c) : XD_ECLOSED;
        if (rc == 0) {
            xd_db_val_t key[] = { XD_DB_V_CSTR(req->host), XD_DB_V_CSTR(user),
                                  XD_DB_V_CSTR(ajid), XD_DB_V_CSTR(node ? node : "") };
            rc = node ? xd_db_query(c,
                                    "DELETE FROM push_registration WHERE host = ? AND"
                                    " username = ? AND jid = ? AND node = ?",
                                    key, 4, NULL, NULL)
                      : xd_db_query(c,
                                    "DELETE FROM push_registration WHERE host = ? AND"
                                    " username = ? AND jid = ?",
                                    key, 3, NULL, NULL);
            xd_db_release(c);
        }
        reply = rc == 0 ? xd_iq_result(req->iq) : ps_db_error(req, rc);
        xd_jid_unref(app);
        return reply;
    }

    if (!node || !*node) {
        xd_jid_unref(app);
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "enable needs the app server's node");
    }
    if (strlen(node) > PS_NODE_MAX) {
        xd_jid_unref(app);
        return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE, "the node name is too long");
    }
    const xd_el_t *x = xd_el_child(req->payload, "x", XD_NS_DATA);
    char *form = NULL;
    size_t form_len = 0;
    if (x) {
        form = xd_el_serialize(x, NULL, &form_len);
        if (form_len > PS_FORM_MAX) {
            xd_free(form);
            xd_jid_unref(app);
            return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE,
                                   "the publish-options form is too large");
        }
    }
    const ps_conf_t *conf = xd_module_opts(req->ctx);
    ps_enable_t e = { .host = req->host, .user = user, .jid = ajid, .node = node, .form = form,
                      .form_len = form_len, .max = conf->max_registrations,
                      .now = (int64_t)time(NULL) };
    int rc = db ? xd_db_tx(db, ps_enable_tx, &e) : XD_ECLOSED;
    if (rc == 0)
        reply = xd_iq_result(req->iq);
    else if (rc == XD_ELIMIT)
        reply = xd_stanza_error(req->iq, XD_COND_POLICY_VIOLATION,
                                "too many push registrations for this account");
    else
        reply = ps_db_error(req, rc);
    xd_free(form);
    xd_jid_unref(app);
    return reply;
}

/* ---- notifying --------------------------------------------------------------------------------- */

/* A stored registration (owned strings). */
typedef struct ps_reg {
    char *jid;  /* the app server */
    char *node; /* its node */
    char *form; /* the publish-options form, or NULL */
} ps_reg_t;

/* One message's notifications: built on the loop, filled on the pool,
 * sent back on the loop (one thread at a time). */
typedef struct ps_job {
    char host[XD_JID_PART_MAX + 1]; /* the account */
    char user[XD_JID_PART_MAX + 1];
    char *sender;    /* last-message-sender, or NULL */
    char *body;      /* last-message-body, or NULL (include_body off) */
    ps_reg_t *regs;  /* the account's registrations, loaded */
    size_t n, cap;   /* how many, room for */
    int rc;          /* the load's result */
} ps_job_t;

static int
ps_load_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_job_t *j = arg;
    if (ncols < 3 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    if (j->n == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 4;
        j->regs = xd_realloc(j->regs, j->cap * sizeof *j->regs);
    }
    ps_reg_t *r = &j->regs[j->n++];
    r->jid = xd_strndup(cols[0].s.p, cols[0].s.len);
    r->node = xd_strndup(cols[1].s.p, cols[1].s.len);
    r->form = cols[2].type == XD_DB_TEXT ? xd_strndup(cols[2].s.p, cols[2].s.len) : NULL;
    return 0;
}

static void
ps_load_work(xd_module_ctx_t *ctx, void *arg)
{
    ps_job_t *j = arg;
    xd_db_conn_t *c = NULL;
    j->rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (j->rc != 0)
        return;
    xd_db_val_t key[] = { XD_DB_V_CSTR(j->host), XD_DB_V_CSTR(j->user) };
    j->rc = xd_db_query(c,
                        "SELECT jid, node, options FROM push_registration"
                        " WHERE host = ? AND username = ? ORDER BY created_at, jid, node",
                        key, 2, ps_load_row, j);
    xd_db_release(c);
}

static void
ps_field(xd_el_t *x, const char *var, const char *value)
{
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", var);
    xd_el_add_text(xd_el_add_child(f, "value", NULL), value);
}

/* The id of a new notification: unique and not guessable (an error with it
 * disables the registration). */
static void
ps_new_id(ps_state_t *s, char *buf, size_t cap)
{
    unsigned char r[8] = { 0 };
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, 0, sizeof r);
    snprintf(buf, cap, PS_ID_PREFIX "%llx-%02x%02x%02x%02x%02x%02x%02x%02x",
             (unsigned long long)++s->seq, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
}

/* Sends the notification for one registration (or counts it under the rate
 * limit). */
static void
ps_send(xd_module_ctx_t *ctx, ps_state_t *s, const ps_job_t *j, const ps_reg_t *r,
        uint64_t count)
{
    const ps_conf_t *conf = xd_module_opts(ctx);
    uint64_t now = ps_now_ms();
    char id[64];
    char *rk = ps_rate_key(j->user, r->jid, r->node);
    pthread_mutex_lock(&s->mu);
    ps_rate_t *rt = xd_map_get(&s->rate, xd_str_c(rk));
    bool limited = conf->min_interval && rt && now - rt->last < conf->min_interval;
    bool full = xd_map_count(&s->pending) >= (size_t)conf->max_unanswered;
    if (!limited && !full) {
        if (!rt) {
            rt = xd_new(ps_rate_t);
            xd_map_put(&s->rate, xd_str_c(rk), rt);
        }
        rt->last = now;
        ps_new_id(s, id, sizeof id);
        ps_pending_t *p = xd_new(ps_pending_t);
        p->user = xd_strdup(j->user);
        p->jid = xd_strdup(r->jid);
        p->node = xd_strdup(r->node);
        p->deadline = now + conf->answer_timeout;
        xd_map_put(&s->pending, xd_str_c(id), p);
    }
    pthread_mutex_unlock(&s->mu);
    xd_free(rk);
    if (limited || full) {
        XD_LOG(NULL, full ? XD_WARN : XD_DEBUG,
               full ? "push notification dropped: too many unanswered"
                    : "push notification rate-limited",
               "host=%s user=%s jid=%s count=%llu", j->host, j->user, r->jid,
               (unsigned long long)count);
        return;
    }

    char from[2 * XD_JID_PART_MAX + 2], num[24];
    snprintf(from, sizeof from, "%s@%s", j->user, j->host);
    snprintf(num, sizeof num, "%llu", (unsigned long long)count);
    xd_el_t *iq = xd_el_new("iq", NULL);
    xd_el_set_attr(iq, "type", "set");
    xd_el_set_attr(iq, "id", id);
    xd_el_set_attr(iq, "from", from);
    xd_el_set_attr(iq, "to", r->jid);
    xd_el_t *ps = xd_el_add_child(iq, "pubsub", XD_NS_PUBSUB);
    xd_el_t *pub = xd_el_add_child(ps, "publish", NULL);
    xd_el_set_attr(pub, "node", r->node);
    xd_el_t *n = xd_el_add_child(xd_el_add_child(pub, "item", NULL), "notification", PS_NS);
    xd_el_t *x = xd_el_add_child(n, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "submit");
    ps_field(x, "FORM_TYPE", PS_NS_SUMMARY);
    ps_field(x, "message-count", num);
    if (j->sender)
        ps_field(x, "last-message-sender", j->sender);
    if (j->body)
        ps_field(x, "last-message-body", j->body);
    xd_el_t *opts = NULL;
    if (r->form && xd_el_parse(r->form, strlen(r->form), &opts) == 0)
        xd_el_append(xd_el_add_child(ps, "publish-options", NULL), opts);
    XD_LOG(NULL, XD_DEBUG, "push notification sent", "host=%s user=%s jid=%s id=%s", j->host,
           j->user, r->jid, id);
    xd_route_take(xd_el_freeze(iq));
}

static void
ps_job_free(ps_job_t *j)
{
    for (size_t i = 0; i < j->n; i++) {
        xd_free(j->regs[i].jid);
        xd_free(j->regs[i].node);
        xd_free(j->regs[i].form);
    }
    xd_free(j->regs);
    xd_free(j->sender);
    xd_free(j->body);
    xd_free(j);
}

static void
ps_load_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    ps_job_t *j = arg;
    int rc = status ? status : j->rc;
    ps_state_t *s = xd_module_state(ctx);
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "push registrations not read", "host=%s user=%s err=%s", j->host,
               j->user, xd_strerror(rc));
    } else if (j->n) {
        pthread_mutex_lock(&s->mu);
        ps_count_t *c = xd_map_get(&s->count, xd_str_c(j->user));
        if (!c) {
            c = xd_new(ps_count_t);
            xd_map_put(&s->count, xd_str_c(j->user), c);
        }
        uint64_t count = ++c->n;
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < j->n; i++)
            ps_send(ctx, s, j, &j->regs[i], count);
    }
    ps_job_free(j);
}

/* Starts the notifications for a message to an account none of whose
 * sessions takes it: the registrations are read on the pool (the sender's
 * stream is held meanwhile, so the notification is routed before its next
 * stanza is handled). */
static void
ps_notify(xd_module_ctx_t *ctx, const char *host, const xd_jid_t *to, const xd_stanza_t *st)
{
    const ps_conf_t *conf = xd_module_opts(ctx);
    const xd_el_t *el = xd_stanza_root(st);
    const char *body = xd_el_child_text(el, "body", NULL);
    if (!body)
        return; /* chat states, receipts: nothing to tell the user about */
    if (xd_el_child(el, "no-store", XD_NS_HINTS))
        return; /* refused, not kept: nothing is waiting */
    ps_job_t *j = xd_new(ps_job_t);
    snprintf(j->host, sizeof j->host, "%s", host);
    xd_str_t l = xd_jid_local(to);
    snprintf(j->user, sizeof j->user, "%.*s", (int)l.len, l.p);
    const xd_jid_t *from = xd_stanza_from(st);
    if (from)
        j->sender = xd_strdup(xd_jid_full_str(from).p);
    if (conf->include_body)
        j->body = xd_strdup(body);
    int rc = xd_module_submit(ctx, ps_load_work, ps_load_done, j);
    if (rc != 0) {
        XD_LOG(NULL, XD_WARN, "push notification not sent", "host=%s user=%s err=%s", host,
               j->user, xd_strerror(rc));
        ps_job_free(j);
    }
}

/* XD_HOOK_OFFLINE_MESSAGE: notifies, and lets the chain go on (mod_offline
 * stores the message). */
static int
ps_offline(xd_module_ctx_t *ctx, xd_hook_stanza_t *ev, void *arg)
{
    (void)arg;
    if (xd_module_db(ctx) && xd_jid_local(ev->to).len)
        ps_notify(ctx, ev->host, ev->to, ev->st);
    return XD_HOOK_OK;
}

/* XD_HOOK_USER_RECEIVE_PACKET: a message for a session whose connection
 * broke and that stream management keeps for a resume waits there, unread:
 * the device is told as for an offline message. */
static int
ps_receive(xd_module_ctx_t *ctx, xd_hook_packet_t *ev, void *arg)
{
    (void)arg;
    if (!ev->session || !xd_session_detached(ev->session) || !xd_module_db(ctx))
        return XD_HOOK_OK;
    const xd_el_t *el = xd_stanza_root(ev->st);
    const char *type = xd_el_attr(el, "type");
    if (xd_stanza_kind_of(el) != XD_STANZA_MESSAGE ||
        (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0))
        return XD_HOOK_OK; /* what would not be stored offline is not notified either */
    ps_notify(ctx, ev->host, ev->jid, ev->st);
    return XD_HOOK_OK;
}

/* ---- answers from app servers ------------------------------------------------------------------ */

/* A registration to delete after an error answer (one thread at a time). */
typedef struct ps_disable {
    char host[XD_JID_PART_MAX + 1]; /* the account's host */
    ps_pending_t *p;                /* the notification answered (owned) */
    int rc;                         /* the delete's result */
} ps_disable_t;

static void
ps_disable_work(xd_module_ctx_t *ctx, void *arg)
{
    ps_disable_t *d = arg;
    xd_db_conn_t *c = NULL;
    d->rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (d->rc != 0)
        return;
    xd_db_val_t key[] = { XD_DB_V_CSTR(d->host), XD_DB_V_CSTR(d->p->user),
                          XD_DB_V_CSTR(d->p->jid), XD_DB_V_CSTR(d->p->node) };
    d->rc = xd_db_query(c,
                        "DELETE FROM push_registration"
                        " WHERE host = ? AND username = ? AND jid = ? AND node = ?",
                        key, 4, NULL, NULL);
    xd_db_release(c);
}

static void
ps_disable_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    ps_disable_t *d = arg;
    int rc = status ? status : d->rc;
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "push registration not disabled", "host=%s user=%s jid=%s err=%s",
               d->host, d->p->user, d->p->jid, xd_strerror(rc));
    else
        XD_LOG(NULL, XD_INFO, "push registration disabled: the app server answered an error",
               "host=%s user=%s jid=%s", d->host, d->p->user, d->p->jid);
    ps_pending_free(d->p);
    xd_free(d);
}

/* XD_HOOK_FILTER_PACKET: the answer to a notification of ours (to an
 * account's bare JID, with an id we gave, from the JID we sent it to) is
 * taken out; an error disables the registration. */
static int
ps_filter(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *el = xd_stanza_root(ev->st);
    if (xd_stanza_kind_of(el) != XD_STANZA_IQ || !xd_jid_is_bare(ev->to) ||
        !xd_jid_local(ev->to).len)
        return XD_HOOK_OK;
    const char *id = xd_el_attr(el, "id");
    const char *type = xd_el_attr(el, "type");
    if (!id || strncmp(id, PS_ID_PREFIX, sizeof PS_ID_PREFIX - 1) != 0 || !type ||
        (strcmp(type, "result") != 0 && strcmp(type, "error") != 0))
        return XD_HOOK_OK;
    ps_state_t *s = xd_module_state(ctx);
    const xd_jid_t *from = xd_stanza_from(ev->st);
    xd_str_t l = xd_jid_local(ev->to);
    pthread_mutex_lock(&s->mu);
    ps_pending_t *p = xd_map_get(&s->pending, xd_str_c(id));
    bool ours = p && from && strcmp(xd_jid_full_str(from).p, p->jid) == 0 &&
                strlen(p->user) == l.len && memcmp(p->user, l.p, l.len) == 0;
    if (ours)
        xd_map_del(&s->pending, xd_str_c(id));
    pthread_mutex_unlock(&s->mu);
    if (!ours)
        return XD_HOOK_OK;
    /* An error that says "later" (type='wait': the app server is busy or
     * rate-limits) is no reason to forget the device (XEP-0357 8 is about
     * errors that say the registration is bad). */
    const xd_el_t *err = xd_el_child(el, "error", NULL);
    const char *etype = err ? xd_el_attr(err, "type") : NULL;
    if (strcmp(type, "error") == 0 && !(etype && strcmp(etype, "wait") == 0)) {
        ps_disable_t *d = xd_new(ps_disable_t);
        snprintf(d->host, sizeof d->host, "%s", ev->host);
        d->p = p;
        int rc = xd_module_submit(ctx, ps_disable_work, ps_disable_done, d);
        if (rc != 0)
            ps_disable_done(ctx, d, rc);
    } else {
        ps_pending_free(p);
    }
    xd_stanza_unref(ev->st);
    ev->st = NULL;
    return XD_HOOK_STOP;
}

/* ---- housekeeping ------------------------------------------------------------------------------ */

/* One TICK's sweep, under the state's mutex. */
typedef struct ps_sweep {
    uint64_t now;          /* monotonic ms */
    uint64_t min_interval; /* the option, ms */
    char **keys;           /* keys to delete (owned) */
    size_t n, cap;         /* how many, room for */
    bool rate;             /* sweeping the rate table (else pending) */
} ps_sweep_t;

static int
ps_sweep_one(void *arg, const char *key, void *val)
{
    ps_sweep_t *w = arg;
    bool old = w->rate ? w->now - ((ps_rate_t *)val)->last >= w->min_interval
                       : w->now >= ((ps_pending_t *)val)->deadline;
    if (!old)
        return 0;
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->keys = xd_realloc(w->keys, w->cap * sizeof *w->keys);
    }
    w->keys[w->n++] = xd_strdup(key);
    return 0;
}

/* TICK: forgets notifications nobody answered in time, and rate-limit
 * entries that no longer limit anything. */
static int
ps_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    ps_state_t *s = xd_module_state(ctx);
    const ps_conf_t *conf = xd_module_opts(ctx);
    if (ev->worker != 0)
        return XD_HOOK_OK; /* once a second is enough */
    ps_sweep_t w = { .now = ps_now_ms(), .min_interval = conf->min_interval };
    pthread_mutex_lock(&s->mu);
    for (int pass = 0; pass < 2; pass++) {
        w.rate = pass == 1;
        w.n = 0;
        xd_map_t *m = w.rate ? &s->rate : &s->pending;
        xd_map_foreach(m, ps_sweep_one, &w);
        for (size_t i = 0; i < w.n; i++) {
            void *v = xd_map_del(m, xd_str_c(w.keys[i]));
            if (w.rate)
                xd_free(v);
            else
                ps_pending_free(v);
            xd_free(w.keys[i]);
        }
    }
    pthread_mutex_unlock(&s->mu);
    xd_free(w.keys);
    return XD_HOOK_OK;
}

/* USER_AVAILABLE: the account reads its messages now; the count starts
 * again. */
static int
ps_available(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    if (!ev->presence || !ev->first_nonneg)
        return XD_HOOK_OK;
    ps_state_t *s = xd_module_state(ctx);
    xd_str_t l = xd_jid_local(ev->jid);
    pthread_mutex_lock(&s->mu);
    xd_free(xd_map_del(&s->count, l));
    pthread_mutex_unlock(&s->mu);
    return XD_HOOK_OK;
}

/* REMOVE_USER: the registrations go with the account (and its count). */
static int
ps_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    ps_state_t *s = xd_module_state(ctx);
    pthread_mutex_lock(&s->mu);
    xd_free(xd_map_del(&s->count, xd_str_c(ev->user)));
    pthread_mutex_unlock(&s->mu);
    mod_user_rows_delete(ctx, "DELETE FROM push_registration WHERE host = ? AND username = ?",
                         ev->host, ev->user);
    return XD_HOOK_OK;
}

/* ---- module ------------------------------------------------------------------------------------ */

static int
ps_start(xd_module_ctx_t *ctx)
{
    if (!xd_module_db(ctx))
        return xd_module_fail(ctx, XD_ECLOSED, "no database");
    ps_state_t *s = xd_new(ps_state_t);
    pthread_mutex_init(&s->mu, NULL);
    xd_module_set_state(ctx, s);
    int rc = xd_module_iq(ctx, XD_IQ_USER, PS_NS, XD_IQ_PARALLEL, ps_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_OFFLINE_MESSAGE, PS_PRIO, ps_offline, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_RECEIVE_PACKET, XD_HOOK_PRIO_DEFAULT, ps_receive,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_FILTER_PACKET, PS_FILTER_PRIO, ps_filter, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_TICK, XD_HOOK_PRIO_DEFAULT, ps_tick, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_AVAILABLE, XD_HOOK_PRIO_DEFAULT, ps_available,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, ps_removed, NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    return 0;
}

static void
ps_stop(xd_module_ctx_t *ctx)
{
    ps_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    xd_map_free(&s->pending, ps_pending_free);
    xd_map_free(&s->rate, xd_free);
    xd_map_free(&s->count, xd_free);
    pthread_mutex_destroy(&s->mu);
    xd_free(s);
}

const xd_module_t xd_mod_push = {
    .abi = XD_MODULE_ABI,
    .name = "mod_push",
    .doc = "Push notifications (XEP-0357) to app servers for messages to offline accounts",
    .opts = ps_opts,
    .opts_size = sizeof(ps_conf_t),
    .schemas = ps_schemas,
    .start = ps_start,
    .stop = ps_stop,
};
