/*
 * session.c — sessions: delivery to them wherever their transport runs
 * (include/xmppd/session.h) and the session manager's side of each one
 * (src/router/session.h): binding, the client's stanzas, the end.
 *
 * Delivery: xd_session_send_take on the session's owner worker calls the
 * transport's deliver at once; from anywhere else it posts one message to
 * the owner's inbox that does the same there.  A transport that no longer
 * has the session answers XD_ENOTFOUND and the sender gets
 * service-unavailable (never an error for an error: xd_stanza_error).
 *
 * The session state of RFC 6121 (availability, priority, the presence kept
 * for probes) lives in the session table (sm.c) so that any worker can
 * route by it; what only the owner needs (directed presence, whether the
 * first non-negative presence was seen) lives in the xd_session_t.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "router/session.h"

#include "core/worker.h"
#include "router/carbons.h"
#include "router/router.h"
#include "router/sm.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/cmd.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

#define SESS_MAX_DIRECTED 128 /* directed-presence recipients remembered per session */

static _Thread_local xd_session_t *sess_local; /* the calling worker's sessions */
static void (*sess_slot_free[XD_SESSION_SLOTS])(void *); /* per slot; set once */
static _Atomic int sess_nslots;                            /* slots taken */
static _Thread_local size_t sess_inactive;      /* this worker's CSI-inactive sessions */

/* ---- delivery ----------------------------------------------------------------------------- */

/* A message that was on its way to a session that ended meanwhile (its
 * stream closed between the router's lookup and the delivery) is routed
 * again, as the router would route it now: to the account's other
 * sessions or to offline storage (RFC 6121 8.5.3.2.1), not bounced.  Only
 * when the session table no longer names that session (else it would
 * come back here).  True when st was taken. */
static bool
sess_route_again(xd_stanza_t *st, uint64_t id)
{
    const xd_el_t *el = xd_stanza_root(st);
    const char *type = xd_el_attr(el, "type");
    const xd_jid_t *to = xd_stanza_to(st);
    if (xd_stanza_kind_of(el) != XD_STANZA_MESSAGE || !to || xd_jid_is_bare(to) ||
        (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0))
        return false;
    xd_session_ref_t now;
    bool carbons;
    if (xd_sm_find_ref(to, &now, &carbons) == 0 && now.id == id)
        return false;
    xd_route_take(st);
    return true;
}

/* Writes st through the transport; a session that is gone hands st to
 * `gone`, or makes the sender an error.  Takes st. */
static void
sess_write(const xd_session_ops_t *ops, uint64_t id, xd_stanza_t *st, xd_session_gone_fn gone)
{
    if (ops->deliver(id, st) != 0) {
        if (gone) {
            gone(st);
            return;
        }
        if (sess_route_again(st, id))
            return;
        xd_stanza_t *err = xd_stanza_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        if (err)
            xd_route_take(err);
    }
    xd_stanza_unref(st);
}

static bool csi_hold(xd_session_t *s, xd_stanza_t *st);
static void csi_flush(xd_session_t *s);

/* On the owner worker: USER_RECEIVE_PACKET, the session's CSI queue (held,
 * or the queue flushed ahead of st), then the transport writes st.  Takes
 * st. */
static void
sess_deliver_here(const xd_session_ops_t *ops, uint64_t id, xd_stanza_t *st,
                  xd_session_gone_fn gone)
{
    xd_session_t *s = NULL;
    if (xd_hook_active(XD_HOOK_USER_RECEIVE_PACKET) || sess_inactive)
        s = ops->session(id);
    if (s && xd_hook_active(XD_HOOK_USER_RECEIVE_PACKET)) {
        xd_hook_packet_t ev = { .host = s->host, .jid = s->jid, .session = s, .st = st };
        xd_hook_run(XD_HOOK_USER_RECEIVE_PACKET, s->host, &ev);
        if (!ev.st)
            return; /* a handler took it */
        st = ev.st;
    }
    if (s && s->csi.inactive) {
        /* A stanza with a `gone` must not be lost with the session: never
         * held. */
        if (!gone && csi_hold(s, st))
            return;
        csi_flush(s);
    }
    sess_write(ops, id, st, gone);
}

/* A close for a session on another worker. */
typedef struct sess_msg {
    const xd_session_ops_t *ops; /* the transport */
    uint64_t id;                 /* its session */
    xd_stream_cond cond;         /* the stream error */
    char text[200];              /* its text ("" = none) */
} sess_msg_t;

/* A stanza for a session on another worker: one allocation, the inbox
 * node inside. */
typedef struct sess_delivery {
    xd_worker_msg_t node;        /* the inbox's until sess_deliver_msg runs */
    const xd_session_ops_t *ops; /* the transport */
    uint64_t id;                 /* its session */
    xd_stanza_t *st;             /* what to write */
    xd_session_gone_fn gone;     /* for st when the session is gone, or NULL */
} sess_delivery_t;

static void
sess_deliver_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    sess_delivery_t *m = arg;
    const xd_session_ops_t *ops = m->ops;
    uint64_t id = m->id;
    xd_stanza_t *st = m->st;
    xd_session_gone_fn gone = m->gone;
    xd_free(m);
    sess_deliver_here(ops, id, st, gone);
}

static bool
sess_here(const xd_session_ref_t *to)
{
    xd_worker_t *self = xd_worker_self();
    return self && xd_worker_index(self) == to->worker;
}

void
xd_session_send_take_or(const xd_session_ref_t *to, xd_stanza_t *st, xd_session_gone_fn gone)
{
    if (sess_here(to)) {
        sess_deliver_here(to->ops, to->id, st, gone);
        return;
    }
    xd_worker_t *w = xd_worker_get(to->worker);
    sess_delivery_t *m = xd_new(sess_delivery_t);
    m->ops = to->ops;
    m->id = to->id;
    m->st = st;
    m->gone = gone;
    if (!w || xd_worker_post_msg(w, &m->node, sess_deliver_msg, m) != 0) {
        xd_free(m);
        if (gone)
            gone(st); /* the server is stopping: the owner decides */
        else
            xd_stanza_unref(st);
    }
}

void
xd_session_send_take(const xd_session_ref_t *to, xd_stanza_t *st)
{
    xd_session_send_take_or(to, st, NULL);
}

void
xd_session_send(const xd_session_ref_t *to, const xd_stanza_t *st)
{
    xd_session_send_take(to, xd_stanza_ref(st));
}

static void
sess_close_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    sess_msg_t *m = arg;
    m->ops->close(m->id, m->cond, m->text[0] ? m->text : NULL);
    xd_free(m);
}

void
xd_session_close(const xd_session_ref_t *s, xd_stream_cond cond, const char *text)
{
    xd_worker_t *w = xd_worker_get(s->worker);
    if (!w)
        return;
    /* Always through the inbox, also on the owner: the caller may be inside
     * the session's own input or another session's delivery. */
    sess_msg_t *m = xd_new(sess_msg_t);
    m->ops = s->ops;
    m->id = s->id;
    m->cond = cond;
    snprintf(m->text, sizeof m->text, "%s", text ? text : "");
    if (xd_worker_post(w, sess_close_msg, m) != 0)
        xd_free(m);
}

int
xd_session_kick(const xd_jid_t *full, xd_stream_cond cond, const char *text)
{
    xd_session_info_t e = { 0 };
    int rc = xd_session_find(full, &e);
    if (rc != 0)
        return rc;
    xd_session_close(&e.ref, cond, text);
    xd_session_info_clear(&e);
    return 0;
}

size_t
xd_session_pick(const xd_session_info_t *s, size_t n, const xd_stanza_t *st, bool *take)
{
    const xd_el_t *el = xd_stanza_root(st);
    xd_stanza_kind kind = xd_stanza_kind_of(el);
    const char *type = xd_el_attr(el, "type");
    bool headline = type && !strcmp(type, "headline");
    /* RFC 6121 8.5.2.1.1: a groupchat message to a bare JID goes to no
     * session (the router answers the sender with an error), nor does an
     * error message (silently ignored). */
    bool none = kind == XD_STANZA_MESSAGE && type &&
                (!strcmp(type, "groupchat") || !strcmp(type, "error"));
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (s[i].available && s[i].priority > best)
            best = s[i].priority;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (kind == XD_STANZA_PRESENCE)
            take[i] = s[i].available;
        else if (none)
            take[i] = false;
        else if (headline)
            take[i] = s[i].available && s[i].priority >= 0;
        else
            take[i] = s[i].available && s[i].priority >= 0 && s[i].priority == best;
        k += take[i];
    }
    return k;
}

/* ---- binding (RFC 6120 7) ----------------------------------------------------------------- */

/* Parked sessions (their connection broke) go first, then the oldest. */
static int
sess_cmp_victim(const void *a, const void *b)
{
    const xd_session_info_t *x = a, *y = b;
    bool dx = x->flags & XD_SESSION_DETACHED, dy = y->flags & XD_SESSION_DETACHED;
    if (dx != dy)
        return dx ? -1 : 1;
    return x->since_ms < y->since_ms ? -1 : x->since_ms > y->since_ms;
}

/* max_user_sessions: the account of `full` just bound session `self`;
 * beyond `max` sessions (0: no limit) the others end, parked ones first,
 * then the oldest (as ejabberd does; a client that reconnects without
 * resuming should not be refused because its dead sessions linger). */
static void
sess_limit(const xd_jid_t *full, uint64_t self, int max)
{
    if (max <= 0)
        return;
    size_t cap = (size_t)max + 4;
    xd_session_info_t *v = xd_calloc(cap, sizeof *v);
    size_t n = xd_session_list(full, v, cap);
    if (n > cap) {
        for (size_t i = 0; i < cap; i++)
            xd_session_info_clear(&v[i]);
        v = xd_realloc(v, n * sizeof *v);
        memset(v, 0, n * sizeof *v);
        size_t m = xd_session_list(full, v, n);
        n = m < n ? m : n;
    }
    if (n > (size_t)max) {
        qsort(v, n, sizeof *v, sess_cmp_victim);
        size_t excess = n - (size_t)max;
        for (size_t i = 0; i < n && excess; i++) {
            if (v[i].ref.id == self)
                continue;
            XD_LOG(NULL, XD_INFO, "session closed: max_user_sessions", "jid=%s max=%d",
                   xd_jid_full_str(v[i].jid).p, max);
            xd_session_close(&v[i].ref, XD_STREAM_CONFLICT,
                             "too many sessions of this account");
            excess--;
        }
    }
    for (size_t i = 0; i < n; i++)
        xd_session_info_clear(&v[i]);
    xd_free(v);
}

/* Binds `want` (NULL or "": server-generated); -1 and *out, or the error
 * condition (*text: its text or NULL). */
static int
sess_bind(const xd_session_bind_req_t *req, const char *want, xd_session_t **out,
          const char **text)
{
    *out = NULL;
    *text = NULL;
    char *res = NULL;
    xd_sm_account_t *acct = NULL; /* the bound account's shared object (sm.h) */
    if (want && *want && xd_jid_prep_resource(xd_str_c(want), &res) != 0) {
        /* RFC 6120 7.7.2.1 */
        *text = "the resource is not allowed";
        return XD_COND_BAD_REQUEST;
    }
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, req->host);
    int policy = hc ? hc->resource_conflict : XD_RESOURCE_REPLACE;
    int max_sessions = hc ? hc->max_user_sessions : 0;
    xd_config_unref(cfg);

    xd_str_t local = xd_jid_local(req->user), domain = xd_jid_domain(req->user);
    xd_jid_t *full = NULL;
    for (int attempt = 0; attempt < 8; attempt++) {
        char gen[40];
        const char *r = res;
        if (!r) {
            /* RFC 6120 7.6.2.1: a server-generated resource, unique and
             * unguessable. */
            unsigned char rnd[8];
            if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
                memset(rnd, attempt, sizeof rnd);
            snprintf(gen, sizeof gen, "xmppd-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                     rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
            r = gen;
        }
        if (xd_jid_make(local, domain, xd_str_c(r), &full) != 0) {
            xd_free(res);
            *text = "the resource is not allowed";
            return XD_COND_BAD_REQUEST;
        }
        xd_session_info_t e = { .jid = full, .ref = req->ref, .since_ms = req->now_ms,
                                .flags = req->secure ? XD_SESSION_SECURE : 0 };
        snprintf(e.ip, sizeof e.ip, "%s", req->ip ? req->ip : "");
        xd_session_info_t old = { 0 };
        int rc;
        if (res && policy == XD_RESOURCE_REPLACE) {
            if (xd_sm_bind_account(&e, true, &old, &acct) == 1) {
                /* RFC 6120 7.7.2.2 and 4.9.3.3: the old session ends. */
                xd_session_close(&old.ref, XD_STREAM_CONFLICT, "replaced by a new connection");
                xd_session_info_clear(&old);
            }
            rc = 0;
        } else {
            rc = xd_sm_bind_account(&e, false, NULL, &acct);
        }
        if (rc == 0)
            break;
        xd_jid_unref(full);
        full = NULL;
        if (rc != XD_EEXIST) {
            xd_free(res);
            return XD_COND_INTERNAL_SERVER_ERROR;
        }
        if (res && policy == XD_RESOURCE_REFUSE) {
            xd_free(res);
            *text = "the resource is in use";
            return XD_COND_CONFLICT;
        }
        /* rename, or a generated resource that collided: try a new one. */
        xd_free(res);
        res = NULL;
    }
    xd_free(res);
    if (!full)
        return XD_COND_INTERNAL_SERVER_ERROR;

    xd_session_t *s = xd_new(xd_session_t);
    s->ref = req->ref;
    s->jid = full;
    s->host = xd_strdup(req->host);
    s->log = req->log;
    s->acct = acct;
    s->next = sess_local;
    if (sess_local)
        sess_local->prev = s;
    sess_local = s;
    xd_hook_session_t sev = { .host = s->host, .jid = s->jid, .reason = NULL };
    xd_hook_run(XD_HOOK_SM_REGISTER_CONNECTION, s->host, &sev);
    sess_limit(full, req->ref.id, max_sessions);
    *out = s;
    return -1;
}

int
xd_session_bind(const xd_session_bind_req_t *req, const char *resource, xd_session_t **out)
{
    const char *text;
    int cond = sess_bind(req, resource, out, &text);
    return cond < 0 ? 0 : cond == XD_COND_CONFLICT ? XD_EEXIST : XD_EINVAL;
}

xd_stanza_t *
xd_session_bind_iq(const xd_session_bind_req_t *req, const xd_stanza_t *iq, xd_session_t **out)
{
    const xd_el_t *bind = xd_el_first_child(xd_stanza_root(iq));
    const char *text;
    int cond = sess_bind(req, xd_el_child_text(bind, "resource", XD_NS_BIND), out, &text);
    if (cond >= 0)
        return xd_stanza_error(iq, (xd_cond)cond, text);
    xd_el_t *reply = xd_iq_result_builder(iq);
    xd_el_t *b = xd_el_add_child(reply, "bind", XD_NS_BIND);
    xd_el_add_text(xd_el_add_child(b, "jid", NULL), xd_jid_full_str((*out)->jid).p);
    return xd_el_freeze(reply);
}

/* ---- presence ------------------------------------------------------------------------------- */

/* XD_HOOK_PRESENCE_EDIT on an available presence being sent. */
static void
sess_presence_edit(xd_session_t *s, xd_el_t *presence)
{
    xd_hook_presence_edit_t ev = { .host = s->host, .jid = s->jid, .presence = presence };
    xd_hook_run(XD_HOOK_PRESENCE_EDIT, s->host, &ev);
}

/* Unavailable presence to everyone who got directed presence, and forgets
 * them (the session went unavailable or is ending). */
static void
sess_directed_unavailable(xd_session_t *s)
{
    for (size_t i = 0; i < s->ndirected; i++) {
        xd_el_t *e = xd_el_new("presence", NULL);
        xd_el_set_attr(e, "from", xd_jid_full_str(s->jid).p);
        xd_el_set_attr(e, "to", s->directed[i]);
        xd_el_set_attr(e, "type", "unavailable");
        xd_route_take(xd_el_freeze(e));
        xd_free(s->directed[i]);
    }
    xd_free(s->directed);
    s->directed = NULL;
    s->ndirected = 0;
}

/* Presence without 'to' is the session's own (RFC 6121 4.2, 4.5): it makes
 * the session available or unavailable and sets its priority.  Broadcast
 * to contacts is the roster's (USER_AVAILABLE / USER_UNAVAILABLE). */
static void
sess_own_presence(xd_session_t *s, const xd_stanza_t *stamped)
{
    const xd_el_t *el = xd_stanza_root(stamped);
    const char *type = xd_el_attr(el, "type");
    if (type && strcmp(type, "unavailable") != 0)
        return; /* subscriptions and probes without 'to': the roster's, and meaningless */
    int prio = 0;
    const char *p = xd_el_child_text(el, "priority", NULL);
    if (p) {
        long v = strtol(p, NULL, 10);
        prio = v < -128 ? -128 : v > 127 ? 127 : (int)v;
    }
    bool was = s->available;
    s->available = !type;
    bool first_nonneg = s->available && prio >= 0 && !(was && s->nonneg_seen);
    s->nonneg_seen = s->available && (first_nonneg || (was && s->nonneg_seen));
    /* What contacts and probes see: the presence from the full JID. */
    xd_sm_set_presence(s->jid, s->ref.id, !type, prio, stamped);
    xd_hook_presence_t ev = { .host = s->host, .jid = s->jid, .presence = stamped,
                              .initial = !was, .first_nonneg = first_nonneg };
    if (s->available) {
        xd_hook_run(XD_HOOK_USER_AVAILABLE, s->host, &ev);
    } else if (was) {
        xd_hook_run(XD_HOOK_USER_UNAVAILABLE, s->host, &ev);
        sess_directed_unavailable(s);
    }
}

/* RFC 6121 4.6: remembers whom the session sent directed available
 * presence to (forgets on directed unavailable), so that they learn when it
 * goes away.  Subscription presence is not directed presence. */
static void
sess_track_directed(xd_session_t *s, const xd_el_t *el, const char *to)
{
    const char *type = xd_el_attr(el, "type");
    if (type && strcmp(type, "unavailable") != 0)
        return;
    size_t i = 0;
    while (i < s->ndirected && strcmp(s->directed[i], to) != 0)
        i++;
    if (type) { /* unavailable: forget */
        if (i < s->ndirected) {
            xd_free(s->directed[i]);
            s->directed[i] = s->directed[--s->ndirected];
        }
        return;
    }
    if (i < s->ndirected || s->ndirected >= SESS_MAX_DIRECTED)
        return;
    s->directed = xd_realloc(s->directed, (s->ndirected + 1) * sizeof *s->directed);
    s->directed[s->ndirected++] = xd_strdup(to);
}

/* ---- the client's stanzas ----------------------------------------------------------------- */

/* Writes a reply of the session manager to the client (takes st). */
static void
sess_reply(xd_session_t *s, xd_stanza_t *st)
{
    if (st)
        sess_deliver_here(s->ref.ops, s->ref.id, st, NULL);
}

int
xd_session_input(xd_session_t *s, xd_stanza_t *st)
{
    const xd_el_t *el = xd_stanza_root(st);
    xd_stanza_kind kind = xd_stanza_kind_of(el);

    /* RFC 6120 8.1.2.1: 'from' is ours to stamp; a different one is spoofing. */
    const char *from = xd_el_attr(el, "from");
    if (from) {
        xd_jid_t *fj = NULL;
        bool ok = xd_jid_parse(xd_str_c(from), &fj) == 0 &&
                  (xd_jid_eq(fj, s->jid) || (xd_jid_is_bare(fj) && xd_jid_eq_bare(fj, s->jid)));
        if (fj)
            xd_jid_unref(fj);
        if (!ok) {
            xd_stanza_unref(st);
            return XD_EINVAL;
        }
    }
    /* RFC 7622: 'to' is parsed here once (the stanza carries the JID on to
     * the router) and goes on in its canonical form; one that is not a JID
     * is answered from the served host, never from itself (RFC 6120
     * 8.3.3.8). */
    const char *to = xd_el_attr(el, "to");
    xd_jid_t *tj = NULL;
    if (to && xd_jid_parse(xd_str_c(to), &tj) != 0) {
        sess_reply(s, xd_stanza_error_from(st, XD_COND_JID_MALFORMED, "'to' is not a JID",
                                           s->host));
        xd_stanza_unref(st);
        return 0;
    }
    xd_str_t to_canon = tj ? xd_jid_full_str(tj) : (xd_str_t){ NULL, 0 };
    if (kind == XD_STANZA_IQ) {
        const xd_el_t *payload = xd_el_first_child(el);
        bool to_server = !tj || xd_str_eq_c(to_canon, s->host) ||
                         xd_str_eq(xd_jid_bare_str(s->jid), to_canon);
        xd_stanza_t *reply = NULL;
        if (xd_iq_is_request(el) && to_server && payload) {
            if (xd_el_is(payload, "session", XD_NS_SESSION))
                /* RFC 3921 3: establishment is a no-op once bound. */
                reply = xd_iq_result(st);
            else if (xd_el_is(payload, "bind", XD_NS_BIND))
                /* RFC 6120 7.7.2.1 is silent on rebinding; one resource per stream. */
                reply = xd_stanza_error(st, XD_COND_NOT_ALLOWED, "a resource is already bound");
        }
        if (!reply && (!xd_el_attr(el, "id") || !xd_el_attr(el, "type")))
            /* RFC 6120 8.1.3, 8.2.3: an IQ needs both. */
            reply = xd_stanza_error(st, XD_COND_BAD_REQUEST, "an IQ needs 'id' and 'type'");
        if (reply) {
            sess_reply(s, reply);
            xd_stanza_unref(st);
            xd_jid_unref(tj);
            return 0;
        }
    }
    bool own_presence = !to && kind == XD_STANZA_PRESENCE;
    bool available = kind == XD_STANZA_PRESENCE && !xd_el_attr(el, "type");
    /* Stamped in place: the parser's stanza is ours alone (a copy only
     * when someone else holds it).  The stanza then carries the parsed 'to'
     * and the bound JID as its parsed 'from': the router parses neither. */
    bool to_canonical = !tj || !strcmp(to, to_canon.p);
    xd_el_t *e = xd_stanza_thaw(st);
    if (!to_canonical)
        xd_el_set_attr(e, "to", to_canon.p);
    xd_str_t full = xd_jid_full_str(s->jid);
    xd_el_set_attr(e, "from", full.p);
    if (available)
        sess_presence_edit(s, e);
    if (!to && !own_presence) {
        /* RFC 6120 10.3.1, 10.3.3: a message or IQ without 'to' is for the
         * sender's bare JID (an IQ is then answered by the server on the
         * account's behalf). */
        xd_str_t bare = xd_jid_bare_str(s->jid);
        char buf[XD_JID_MAX + 1];
        snprintf(buf, sizeof buf, "%.*s", (int)bare.len, bare.p);
        xd_el_set_attr(e, "to", buf);
    }
    xd_stanza_keep_t keep = { .to = tj, .from = xd_jid_ref(s->jid) };
    xd_stanza_t *out = xd_stanza_freeze_keep(e, &keep);
    if (xd_hook_active(XD_HOOK_USER_SEND_PACKET)) {
        xd_hook_packet_t ev = { .host = s->host, .jid = s->jid, .session = s, .st = out };
        xd_hook_run(XD_HOOK_USER_SEND_PACKET, s->host, &ev);
        if (!ev.st)
            return 0; /* a handler took it */
        out = ev.st;
    }
    if (own_presence) {
        sess_own_presence(s, out);
        xd_stanza_unref(out);
        return 0;
    }
    if (kind == XD_STANZA_PRESENCE)
        sess_track_directed(s, xd_stanza_root(out), xd_el_attr(xd_stanza_root(out), "to"));
    if (kind == XD_STANZA_MESSAGE && xd_sm_account_carbons(s->acct))
        xd_carbons_sent(out, s->jid, s->ref.id); /* only when a resource wants copies */
    xd_route_take(out);
    return 0;
}

/* Takes s off the calling worker's list. */
static void
sess_unlink(xd_session_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        sess_local = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

void
xd_session_end(xd_session_t *s, const char *reason)
{
    if (!s)
        return;
    /* The binding is gone already only when a new session took the
     * resource (xd_sm_bind_replace): whatever closed the stream, this
     * session was replaced (hooks.def, SM_REMOVE_CONNECTION). */
    if (!xd_sm_unbind(s->jid, s->ref.id))
        reason = "replaced";
    if (s->available) {
        s->available = false;
        xd_hook_presence_t pev = { .host = s->host, .jid = s->jid, .presence = NULL };
        xd_hook_run(XD_HOOK_USER_UNAVAILABLE, s->host, &pev);
    }
    sess_directed_unavailable(s);
    xd_hook_session_t sev = { .host = s->host, .jid = s->jid, .reason = reason };
    xd_hook_run(XD_HOOK_SM_REMOVE_CONNECTION, s->host, &sev);
    sess_unlink(s);
    /* What CSI held goes with the session: presence and chat states are
     * stale by the next session's time. */
    if (s->csi.inactive)
        sess_inactive--;
    for (size_t i = 0; i < s->csi_n; i++)
        xd_stanza_unref(s->csi_q[i]);
    xd_free(s->csi_q);
    for (int i = 0; i < XD_SESSION_SLOTS; i++)
        if (s->slots[i] && sess_slot_free[i])
            sess_slot_free[i](s->slots[i]);
    xd_sm_account_unref(s->acct);
    xd_jid_unref(s->jid);
    xd_free(s->host);
    xd_free(s);
}

/* ---- resumption (XEP-0198 5) -------------------------------------------------------------- */

void
xd_session_detach(xd_session_t *s, const xd_log_t *log)
{
    s->detached = true;
    s->log = log;
    xd_sm_rebind(s->jid, s->ref.id, &s->ref, NULL, true); /* the flag, for status commands */
}

void
xd_session_release(xd_session_t *s)
{
    XD_ASSERT(!s->csi.inactive);
    sess_unlink(s);
}

int
xd_session_adopt(xd_session_t *s, const xd_session_ref_t *ref, const char *ip,
                 const xd_log_t *log)
{
    s->next = sess_local;
    if (sess_local)
        sess_local->prev = s;
    sess_local = s;
    uint64_t old = s->ref.id;
    s->ref = *ref;
    s->log = log;
    s->detached = false;
    return xd_sm_rebind(s->jid, old, ref, ip, false);
}

bool
xd_session_detached(const xd_session_t *s)
{
    return s->detached;
}

/* ---- client state indication (XEP-0352) --------------------------------------------------- */

typedef enum { CSI_FLUSH, CSI_PRESENCE, CSI_HOLD } csi_class;

/* What an inactive session does with st: a presence that is only
 * availability (not a subscription, probe or error) is coalesced; a
 * message whose payload is only chat states or a PEP event (besides
 * thread, delay, stanza-id and hints other than <store/>) is held;
 * anything else (a body, a subject, an encrypted payload, <store/>, an
 * IQ, an error) is urgent. */
static csi_class
csi_classify(const xd_el_t *el)
{
    xd_stanza_kind kind = xd_stanza_kind_of(el);
    const char *type = xd_el_attr(el, "type");
    if (kind == XD_STANZA_PRESENCE)
        return !type || !strcmp(type, "unavailable") ? CSI_PRESENCE : CSI_FLUSH;
    if (kind != XD_STANZA_MESSAGE || (type && !strcmp(type, "error")))
        return CSI_FLUSH;
    bool payload = false;
    for (const xd_el_t *c = xd_el_first_child(el); c; c = xd_el_next(c)) {
        const char *ns = xd_el_ns(c), *name = xd_el_name(c);
        if (!ns) {
            if (strcmp(name, "thread") != 0)
                return CSI_FLUSH; /* body, subject, anything unknown */
        } else if (!strcmp(ns, XD_NS_CHATSTATES) ||
                   (!strcmp(ns, XD_NS_PUBSUB_EVENT) && !strcmp(name, "event"))) {
            payload = true;
        } else if (!strcmp(ns, XD_NS_HINTS)) {
            if (!strcmp(name, "store"))
                return CSI_FLUSH; /* XEP-0334: the sender says it matters */
        } else if (strcmp(ns, XD_NS_DELAY) != 0 && strcmp(ns, XD_NS_SID) != 0) {
            return CSI_FLUSH;
        }
    }
    return payload ? CSI_HOLD : CSI_FLUSH;
}

static size_t
csi_size(const xd_stanza_t *st)
{
    size_t n = 0;
    xd_stanza_bytes(st, &n);
    return n;
}

/* Tells the table (status commands) the session's state and counters. */
static void
csi_publish(xd_session_t *s)
{
    s->csi.queued = (uint32_t)s->csi_n;
    xd_sm_set_csi(s->jid, s->ref.id, &s->csi);
}

/* Writes what is held, in order. */
static void
csi_flush(xd_session_t *s)
{
    if (!s->csi_n)
        return;
    /* Detached first: a write that fails routes an error, which may come
     * back to this session and must find an empty queue. */
    xd_stanza_t **q = s->csi_q;
    size_t n = s->csi_n;
    s->csi_q = NULL;
    s->csi_n = s->csi_cap = s->csi_bytes = 0;
    s->csi.flushed += n;
    csi_publish(s);
    for (size_t i = 0; i < n; i++)
        sess_write(s->ref.ops, s->ref.id, q[i], NULL);
    xd_free(q);
}

/* Removes entry i of the queue (its reference released). */
static void
csi_remove(xd_session_t *s, size_t i)
{
    s->csi_bytes -= csi_size(s->csi_q[i]);
    xd_stanza_unref(s->csi_q[i]);
    memmove(s->csi_q + i, s->csi_q + i + 1, (s->csi_n - i - 1) * sizeof *s->csi_q);
    s->csi_n--;
}

static bool
csi_is_presence(const xd_stanza_t *st)
{
    return xd_stanza_kind_of(xd_stanza_root(st)) == XD_STANZA_PRESENCE;
}

/* An inactive session's stanza: true when it was taken (held, or written
 * with the queue when the bound left nothing else to do); false when it
 * is urgent or does not fit: the caller flushes and writes it. */
static bool
csi_hold(xd_session_t *s, xd_stanza_t *st)
{
    csi_class k = csi_classify(xd_stanza_root(st));
    size_t len = csi_size(st);
    if (k == CSI_FLUSH || len > XD_SESSION_CSI_MAX_BYTES)
        return false;
    bool placed = false;
    if (k == CSI_PRESENCE) {
        /* Coalesced: the newest presence of a full JID, in the place of
         * its first. */
        const char *from = xd_el_attr(xd_stanza_root(st), "from");
        for (size_t i = 0; from && i < s->csi_n; i++) {
            const char *f = xd_el_attr(xd_stanza_root(s->csi_q[i]), "from");
            if (csi_is_presence(s->csi_q[i]) && f && !strcmp(f, from)) {
                s->csi_bytes -= csi_size(s->csi_q[i]);
                xd_stanza_unref(s->csi_q[i]);
                s->csi_q[i] = st;
                s->csi_bytes += len;
                s->csi.coalesced++;
                placed = true;
                break;
            }
        }
    }
    /* The bound: the oldest presences go first; a queue with none left
     * to drop is flushed. */
    while (s->csi_n + !placed > XD_SESSION_CSI_MAX ||
           s->csi_bytes + (placed ? 0 : len) > XD_SESSION_CSI_MAX_BYTES) {
        size_t i = 0;
        while (i < s->csi_n && (!csi_is_presence(s->csi_q[i]) || s->csi_q[i] == st))
            i++;
        if (i == s->csi_n) {
            if (!placed)
                return false;
            s->csi.held++;
            csi_flush(s); /* st is in it */
            return true;
        }
        csi_remove(s, i);
        s->csi.dropped++;
    }
    if (!placed) {
        if (s->csi_n == s->csi_cap) {
            s->csi_cap = s->csi_cap ? s->csi_cap * 2 : 16;
            s->csi_q = xd_realloc(s->csi_q, s->csi_cap * sizeof *s->csi_q);
        }
        s->csi_q[s->csi_n++] = st;
        s->csi_bytes += len;
    }
    s->csi.held++;
    csi_publish(s);
    return true;
}

void
xd_session_csi(xd_session_t *s, bool active)
{
    if (active) {
        if (s->csi.inactive) {
            s->csi.inactive = false;
            sess_inactive--;
        }
        csi_flush(s);
    } else if (!s->csi.inactive) {
        s->csi.inactive = true;
        sess_inactive++;
    }
    csi_publish(s);
}

/* ---- the calling worker's own sessions ---------------------------------------------------- */

size_t
xd_session_foreach_local(const char *host, void (*fn)(void *arg, xd_session_t *s), void *arg)
{
    size_t n = 0;
    for (xd_session_t *s = sess_local, *next; s; s = next) {
        next = s->next; /* fn may not end s, but be safe against a relink */
        if (host && strcmp(host, s->host) != 0)
            continue;
        fn(arg, s);
        n++;
    }
    return n;
}

const xd_jid_t *
xd_session_jid(const xd_session_t *s)
{
    return s->jid;
}

const char *
xd_session_host(const xd_session_t *s)
{
    return s->host;
}

xd_session_ref_t
xd_session_ref(const xd_session_t *s)
{
    return s->ref;
}

uint64_t
xd_session_idle_ms(const xd_session_t *s)
{
    xd_session_stats_t st = { 0 };
    return s->ref.ops->info(s->ref.id, &st) == 0 ? st.idle_ms : 0;
}

int
xd_session_slot_new(void (*free_fn)(void *value))
{
    int slot = atomic_fetch_add(&sess_nslots, 1);
    if (slot >= XD_SESSION_SLOTS) {
        atomic_fetch_sub(&sess_nslots, 1);
        return XD_ELIMIT;
    }
    sess_slot_free[slot] = free_fn;
    return slot;
}

void *
xd_session_slot_get(const xd_session_t *s, int slot)
{
    return slot >= 0 && slot < XD_SESSION_SLOTS ? s->slots[slot] : NULL;
}

void
xd_session_slot_set(xd_session_t *s, int slot, void *value)
{
    if (slot >= 0 && slot < XD_SESSION_SLOTS)
        s->slots[slot] = value;
}

/* ---- commands ------------------------------------------------------------------------------ */

static void
list_session(void *arg, const xd_session_info_t *e)
{
    xd_cmd_add(arg, "%s", xd_jid_full_str(e->jid).p);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
cmd_connected_users(xd_cmd_call_t *call)
{
    xd_session_foreach(call->args[0].text, list_session, call);
    /* Stable output: sorted (qsort: a server may have many sessions).
     * No sessions: no list at all, and qsort must not see its NULL. */
    if (call->res.n > 1)
        qsort(call->res.items, call->res.n, sizeof *call->res.items, cmp_str);
    return 0;
}

static int
cmd_connected_users_number(xd_cmd_call_t *call)
{
    call->res.i = (int64_t)xd_session_count(call->args[0].text);
    return 0;
}

static int
cmp_info(const void *a, const void *b)
{
    return strcmp(xd_jid_full_str(((const xd_session_info_t *)a)->jid).p,
                  xd_jid_full_str(((const xd_session_info_t *)b)->jid).p);
}

#define SESS_INFO_MAX 256 /* sessions one user_sessions_info shows */

static int
cmd_user_sessions_info(xd_cmd_call_t *call)
{
    xd_jid_t *bare = NULL;
    int rc = xd_jid_make(xd_str_c(call->args[0].text), xd_str_c(call->args[1].text),
                         (xd_str_t){ NULL, 0 }, &bare);
    if (rc != 0)
        return xd_cmd_errorf(call, XD_EINVAL, "not a valid JID: %s", xd_strerror(rc));
    xd_session_info_t *v = xd_calloc(SESS_INFO_MAX, sizeof *v);
    size_t n = xd_session_list(bare, v, SESS_INFO_MAX);
    if (n > SESS_INFO_MAX)
        n = SESS_INFO_MAX;
    qsort(v, n, sizeof *v, cmp_info);
    for (size_t i = 0; i < n; i++) {
        const xd_session_csi_t *c = &v[i].csi;
        xd_cmd_add(call,
                   "%s ip=%s state=%s available=%s priority=%d csi=%s queued=%u held=%llu "
                   "flushed=%llu coalesced=%llu dropped=%llu",
                   xd_jid_full_str(v[i].jid).p, v[i].ip,
                   v[i].flags & XD_SESSION_DETACHED ? "detached" : "connected",
                   v[i].available ? "yes" : "no",
                   v[i].priority, c->inactive ? "inactive" : "active", (unsigned)c->queued,
                   (unsigned long long)c->held, (unsigned long long)c->flushed,
                   (unsigned long long)c->coalesced, (unsigned long long)c->dropped);
        xd_session_info_clear(&v[i]);
    }
    xd_free(v);
    xd_jid_unref(bare);
    return 0;
}

static int
cmd_kick_session(xd_cmd_call_t *call)
{
    xd_jid_t *full = NULL;
    int rc = xd_jid_make(xd_str_c(call->args[0].text), xd_str_c(call->args[1].text),
                         xd_str_c(call->args[2].text), &full);
    if (rc != 0)
        return xd_cmd_errorf(call, XD_EINVAL, "not a valid JID: %s", xd_strerror(rc));
    const char *reason = call->args[3].text ? call->args[3].text : "kicked by an administrator";
    rc = xd_session_kick(full, XD_STREAM_POLICY_VIOLATION, reason);
    if (rc == XD_ENOTFOUND)
        rc = xd_cmd_errorf(call, rc, "%s is not connected", xd_jid_full_str(full).p);
    else if (rc == 0)
        xd_cmd_printf(call, "%s kicked\n", xd_jid_full_str(full).p);
    xd_jid_unref(full);
    return rc;
}

static const xd_cmd_arg_t args_opt_host[] = {
    { "host", XD_CMD_HOST, "only the sessions of this virtual host" },
};

static const xd_cmd_arg_t args_user[] = {
    { "user", XD_CMD_USER, "the localpart" },
    { "host", XD_CMD_HOST, "the virtual host" },
};

static const xd_cmd_arg_t args_kick[] = {
    { "user", XD_CMD_USER, "the localpart" },
    { "host", XD_CMD_HOST, "the virtual host" },
    { "resource", XD_CMD_RESOURCE, "the resource of the session" },
    { "reason", XD_CMD_STRING, "text sent to the client in the stream error" },
};

static const xd_cmd_t sess_cmds[] = {
    { .name = "connected_users", .doc = "list the bound sessions (full JIDs), one per line",
      .args = args_opt_host, .nargs = 1, .nopt = 1, .result = XD_CMD_RES_LIST,
      .flags = XD_CMD_ON_LOOP, .fn = cmd_connected_users },
    { .name = "connected_users_number", .doc = "how many sessions are bound",
      .args = args_opt_host, .nargs = 1, .nopt = 1, .result = XD_CMD_RES_INT,
      .flags = XD_CMD_ON_LOOP, .fn = cmd_connected_users_number },
    { .name = "user_sessions_info",
      .doc = "the sessions of an account, one per line: full JID, address, presence, and "
             "client state (XEP-0352) with what was held back",
      .args = args_user, .nargs = 2, .result = XD_CMD_RES_LIST, .flags = XD_CMD_ON_LOOP,
      .fn = cmd_user_sessions_info },
    { .name = "kick_session", .doc = "close a session with a policy-violation stream error",
      .args = args_kick, .nargs = 4, .nopt = 1, .result = XD_CMD_RES_NONE,
      .flags = XD_CMD_ON_LOOP, .fn = cmd_kick_session },
};

void
xd_session_register_commands(void)
{
    for (size_t i = 0; i < sizeof sess_cmds / sizeof sess_cmds[0]; i++)
        xd_cmd_register(&sess_cmds[i]);
}
