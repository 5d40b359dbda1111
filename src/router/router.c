/*
 * router.c — routing by destination (see router.h).
 *
 * Delivery rules implemented here (RFC 6121 8.5), for a stanza to a local
 * user:
 *
 *   to            message (normal, chat)          message headline   message groupchat   iq          presence
 *   full, online  that session                    that session       that session        that one    that one
 *   full, gone    as to the bare JID              dropped            service-unavail.    service-u.  dropped
 *   bare          available sessions of the       all available      service-unavail.    (server     every available
 *                 highest non-negative priority   with priority >= 0                     answers)    session
 *                 (all of them on a tie); none:
 *                 service-unavailable (offline
 *                 storage: the routing issue)
 *
 * An IQ to a bare JID is answered by the server on the user's behalf
 * (RFC 6121 8.5.1), and one to a host's JID by the local router: both go
 * to the IQ handlers registered by namespace (include/xmppd/iq.h).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/router.h"

#include "core/worker.h"
#include "router/carbons.h"
#include "router/sm.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/config.h"
#include "xmppd/hooks.h"
#include "xmppd/iq.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/service.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

#define ROUTE_MAX_RESOURCES 64 /* sessions of one user considered */

static _Atomic(xd_router_remote_fn) route_remote;

void
xd_router_set_remote(xd_router_remote_fn fn)
{
    atomic_store(&route_remote, fn);
}

/* Sends an error for st back to its sender (nothing for errors and
 * results), then drops st. */
static void
route_bounce(xd_stanza_t *st, xd_cond cond, const char *text)
{
    xd_route_error(st, cond, text);
    xd_stanza_unref(st);
}

void
xd_route_error(const xd_stanza_t *req, xd_cond cond, const char *text)
{
    xd_stanza_t *err = xd_stanza_error(req, cond, text);
    if (err)
        xd_route_take(err);
}

static bool
route_is(const char *type, const char *what)
{
    return type && !strcmp(type, what);
}

static bool
route_iq_type_ok(const char *type)
{
    return type && (!strcmp(type, "get") || !strcmp(type, "set") || !strcmp(type, "result") ||
                    !strcmp(type, "error"));
}

static void
route_clear(xd_session_info_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xd_session_info_clear(&res[i]);
}

/* To a local user's bare JID (or a full JID whose resource is gone and
 * the rules say "as to the bare JID"); res[0..n) are the user's sessions. */
static void
route_bare(xd_stanza_t *st, const xd_jid_t *to, xd_stanza_kind kind, const char *type,
           const xd_session_info_t *res, size_t n)
{
    bool take[ROUTE_MAX_RESOURCES];
    size_t sent = xd_session_pick(res, n, st, take);
    for (size_t i = 0; i < n; i++)
        if (take[i])
            xd_session_send(&res[i].ref, st);
    if (sent && kind == XD_STANZA_MESSAGE)
        xd_carbons_received(st, res, n, take);

    if (sent || kind == XD_STANZA_PRESENCE || route_is(type, "headline") ||
        route_is(type, "error")) {
        xd_stanza_unref(st);
        return;
    }
    /* RFC 6121 8.5.2.2.1: nobody to take it now: offline storage if the
     * host keeps messages, else service-unavailable.  A groupchat message
     * gets here always (xd_session_pick takes no session for it, RFC 6121
     * 8.5.2.1.1) and is never stored. */
    if (kind == XD_STANZA_MESSAGE && !route_is(type, "groupchat")) {
        char host[XD_JID_PART_MAX + 1];
        xd_str_t d = xd_jid_domain(to);
        snprintf(host, sizeof host, "%.*s", (int)d.len, d.p);
        xd_hook_stanza_t ev = { .host = host, .to = to, .st = st };
        if (xd_hook_run(XD_HOOK_OFFLINE_MESSAGE, host, &ev) == XD_HOOK_STOP) {
            xd_stanza_unref(st); /* a handler kept its own reference */
            return;
        }
    }
    route_bounce(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
}

/* An IQ request to an account whose existence is being looked up. */
typedef struct route_acct_iq {
    xd_stanza_t *st;
    xd_jid_t *to;
    char host[XD_JID_PART_MAX + 1];
} route_acct_iq_t;

static void
route_account_known(void *arg, int status, bool exists)
{
    route_acct_iq_t *q = arg;
    if (status == 0 && exists)
        xd_iq_dispatch(q->st, q->to, q->host, XD_IQ_USER);
    else /* RFC 6121 8.5.1: no such account */
        route_bounce(q->st, status == 0 ? XD_COND_SERVICE_UNAVAILABLE
                                        : XD_COND_INTERNAL_SERVER_ERROR, NULL);
    xd_jid_unref(q->to);
    xd_free(q);
}

/* An IQ to a local bare JID: answered for the account when it exists (it
 * does while it has a session, or when it sends the IQ itself; otherwise
 * the auth backend is asked, off the loop), else service-unavailable. */
static void
route_account_iq(xd_stanza_t *st, const xd_jid_t *to, const char *host)
{
    const xd_jid_t *from = xd_stanza_from(st);
    bool known = !xd_iq_is_request(xd_stanza_root(st)) || (from && xd_jid_eq_bare(from, to)) ||
                 xd_session_list(to, NULL, 0) != 0 /* it has a session */ ||
                 !xd_worker_self(); /* the auth backend answers on a loop only: as before */
    if (known) {
        xd_iq_dispatch(st, to, host, XD_IQ_USER);
        return;
    }
    route_acct_iq_t *q = xd_new(route_acct_iq_t);
    q->st = st;
    q->to = xd_jid_ref((xd_jid_t *)to);
    snprintf(q->host, sizeof q->host, "%s", host);
    char user[XD_JID_PART_MAX + 1];
    xd_str_t l = xd_jid_local(to);
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    if (xd_auth_user_exists(host, user, route_account_known, q) != 0) {
        /* No auth for the host (unit tests): as before. */
        xd_jid_unref(q->to);
        xd_free(q);
        xd_iq_dispatch(st, to, host, XD_IQ_USER);
    }
}

static void
route_local(xd_stanza_t *st, const xd_jid_t *to, const char *host)
{
    const xd_el_t *el = xd_stanza_root(st);
    xd_stanza_kind kind = xd_stanza_kind_of(el);
    const char *type = xd_el_attr(el, "type");

    if (xd_jid_local(to).len == 0) {
        /* The host itself: the local router. */
        if (kind == XD_STANZA_IQ)
            xd_iq_dispatch(st, to, host, XD_IQ_HOST);
        else if (kind == XD_STANZA_PRESENCE || route_is(type, "error"))
            xd_stanza_unref(st);
        else
            route_bounce(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (xd_jid_is_bare(to) && kind == XD_STANZA_IQ) {
        /* RFC 6121 8.5.1: the server answers for the account, if there is
         * one. */
        route_account_iq(st, to, host);
        return;
    }
    if (!xd_jid_is_bare(to)) {
        /* The common case, a bound resource and no carbons to make: one
         * lookup that copies a handle and touches no shared reference. */
        xd_session_ref_t ref;
        bool carbons = false;
        if (xd_sm_find_ref(to, &ref, &carbons) == 0 &&
            !(carbons && kind == XD_STANZA_MESSAGE && xd_carbons_eligible(st))) {
            xd_session_send_take(&ref, st);
            return;
        }
    }
    /* One look at the account's sessions serves the resource, the bare JID
     * rules and the carbons. */
    xd_session_info_t res[ROUTE_MAX_RESOURCES];
    size_t n = xd_session_list(to, res, ROUTE_MAX_RESOURCES);
    if (n > ROUTE_MAX_RESOURCES)
        n = ROUTE_MAX_RESOURCES;
    if (xd_jid_is_bare(to)) {
        route_bare(st, to, kind, type, res, n);
        route_clear(res, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!xd_jid_eq(res[i].jid, to))
            continue;
        if (kind == XD_STANZA_MESSAGE) {
            bool take[ROUTE_MAX_RESOURCES] = { false };
            take[i] = true;
            xd_carbons_received(st, res, n, take);
        }
        xd_session_send_take(&res[i].ref, st);
        route_clear(res, n);
        return;
    }
    /* RFC 6121 8.5.3.2: no such resource. */
    if (kind == XD_STANZA_MESSAGE && (!type || route_is(type, "normal") || route_is(type, "chat"))) {
        route_bare(st, to, kind, type, res, n);
    } else if (kind == XD_STANZA_IQ ||
               (kind == XD_STANZA_MESSAGE && route_is(type, "groupchat"))) {
        route_bounce(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    } else {
        xd_stanza_unref(st); /* presence, headline, error: dropped */
    }
    route_clear(res, n);
}

/* The served host in the stanza's 'from', into buf; false when there is
 * none (a remote sender, a service, a malformed 'from'). */
static bool
route_from_host(const xd_stanza_t *st, char *buf, size_t cap)
{
    const xd_jid_t *fj = xd_stanza_from(st);
    if (!fj)
        return false;
    xd_str_t d = xd_jid_domain(fj);
    if (d.len >= cap)
        return false;
    memcpy(buf, d.p, d.len);
    buf[d.len] = '\0';
    xd_config_t *cfg = xd_config_get();
    bool ok = cfg && xd_config_is_host(cfg, buf);
    if (cfg)
        xd_config_unref(cfg);
    return ok;
}

void
xd_route(const xd_stanza_t *st)
{
    xd_route_take(xd_stanza_ref(st));
}

void
xd_route_take(xd_stanza_t *st)
{
    /* Parsed once for the stanza's life; our own reference, since a
     * filter may replace the stanza that lends it. */
    const xd_jid_t *to_lent = xd_stanza_to(st);
    if (!to_lent) {
        /* RFC 6120 8.3.3.8: a 'to' that is not a JID. */
        route_bounce(st, XD_COND_JID_MALFORMED, NULL);
        return;
    }
    xd_jid_t *to = xd_jid_ref((xd_jid_t *)to_lent);
    const xd_el_t *root = xd_stanza_root(st);
    if (xd_stanza_kind_of(root) == XD_STANZA_IQ && !route_iq_type_ok(xd_el_attr(root, "type"))) {
        /* RFC 6120 8.3.3.1: an unknown (or missing) IQ type. */
        route_bounce(st, XD_COND_BAD_REQUEST, "an IQ's type is get, set, result or error");
        xd_jid_unref(to);
        return;
    }
    xd_config_t *cfg = xd_config_get();
    xd_str_t dom = xd_jid_domain(to);
    char host[XD_JID_PART_MAX + 1];
    bool local = false;
    host[0] = '\0';
    if (dom.len < sizeof host) {
        memcpy(host, dom.p, dom.len);
        host[dom.len] = '\0';
        local = xd_config_is_host(cfg, host);
    }
    xd_config_unref(cfg);
    if (local) {
        xd_hook_filter_t ev = { .host = host, .st = st, .to = to };
        xd_hook_run(XD_HOOK_FILTER_PACKET, host, &ev);
        st = ev.st;
        if (!st) {
            xd_jid_unref(to);
            return; /* dropped by a filter */
        }
    }
    if (local) {
        route_local(st, to, host);
    } else if (dom.len < sizeof host) {
        /* A service of this process (include/xmppd/service.h) or another
         * server's domain.  Stanzas our users send there pass the filters of
         * their own host first (blocking and privacy rules on outgoing
         * stanzas, subscription state). */
        char fhost[XD_JID_PART_MAX + 1];
        if (route_from_host(st, fhost, sizeof fhost)) {
            xd_hook_filter_t ev = { .host = fhost, .st = st, .to = to };
            xd_hook_run(XD_HOOK_FILTER_PACKET, fhost, &ev);
            st = ev.st;
        }
        xd_router_remote_fn remote = atomic_load(&route_remote);
        if (!st)
            ; /* dropped by a filter */
        else if (xd_service_deliver(host, st))
            ; /* a service took it */
        else if (remote)
            remote(st, host); /* federation */
        else
            route_bounce(st, XD_COND_REMOTE_SERVER_NOT_FOUND, NULL);
    } else {
        route_bounce(st, XD_COND_REMOTE_SERVER_NOT_FOUND, NULL);
    }
    xd_jid_unref(to);
}
