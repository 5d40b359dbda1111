/*
 * mod_presence.c — presence subscriptions, broadcast and probes (RFC 6121
 * 3 and 4): the presence side of mod_roster, on its roster.
 *
 * Active for the hosts where mod_roster runs (each instance starts it).
 * Three entry points, all hooks:
 *
 *   filter_packet   a subscribe / subscribed / unsubscribe / unsubscribed
 *                   from a local session: outbound processing for the user
 *                   and, when the contact is local too, inbound processing
 *                   for the contact (mod_roster_subscription, the Appendix A
 *                   machine), roster pushes, delivery to the contact's
 *                   available sessions (a subscribe waits as Pending In when
 *                   there are none), the server's own answer when the
 *                   contact pre-approved, and the contact's presence after
 *                   an approval (or unavailable after a cancellation);
 *   user_available  broadcast to the contacts with from/both and the user's
 *                   own sessions; on the initial presence also probes (the
 *                   current presence of contacts with to/both, and of the
 *                   user's other sessions, to the new session) and the
 *                   waiting subscription requests;
 *   user_unavailable  unavailable to the same audience.
 *
 * Roster reads and writes block, so each event is a job on the blocking
 * pool (xd_module_submit); its result is delivered from the worker that
 * asked.  A job holds the roster instances of the hosts it touches
 * (xd_module_instance), so their stores stay valid while it runs.
 * filter_packet is one global handler for every host (a subscription from
 * one local host to another is routed for the contact's host only), added
 * with the first instance and removed with the last; user_available,
 * user_unavailable and remove_user are each instance's own.  Presence this
 * code delivers itself passes the users' privacy rules
 * (PRIVACY_CHECK_PACKET), and subscription presence passes the
 * ROSTER_OUT_SUBSCRIPTION / ROSTER_IN_SUBSCRIPTION hooks first.
 *
 * Other servers' users (federation): our users' subscription presence to
 * them goes out after the outbound half of the machine; theirs to our
 * users runs the inbound half here (filter_packet on arrival); probes for
 * remote contacts go out as <presence type='probe'/> from the bare JID, and
 * probes arriving for our users are answered here (RFC 6121 4.3.2).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdatomic.h>

#include "mod_roster.h"
#include "roster_sub.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

#define PRES_MAX_RES 64
#define PRES_MAX_CONTACTS 10000

/* The roster instance of host, held, or NULL where none runs. */
static xd_module_ctx_t *
pres_instance(const char *host)
{
    return xd_module_instance("mod_roster", host);
}

static bool
pres_on(const char *host)
{
    xd_module_ctx_t *ctx = pres_instance(host);
    xd_module_release(ctx);
    return ctx != NULL;
}

/* May presence el pass `user`'s privacy rules: incoming from other
 * (outgoing false) or outgoing to it? */
static bool
pres_allowed(const xd_jid_t *user, const xd_jid_t *other, const xd_el_t *el, bool outgoing)
{
    if (!xd_hook_active(XD_HOOK_PRIVACY_CHECK_PACKET))
        return true;
    xd_str_t d = xd_jid_domain(user);
    char host[XD_JID_PART_MAX + 1];
    snprintf(host, sizeof host, "%.*s", (int)d.len, d.p);
    xd_hook_privacy_check_t ev = { .user = user, .other = other, .el = el,
                                   .outgoing = outgoing };
    xd_hook_run(XD_HOOK_PRIVACY_CHECK_PACKET, host, &ev);
    return !ev.deny;
}

typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist_t;

static int
sl_add(void *arg, const char *s)
{
    strlist_t *l = arg;
    if (l->n >= PRES_MAX_CONTACTS)
        return 1;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xd_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = xd_strdup(s);
    return 0;
}

static void
sl_free(strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        xd_free(l->v[i]);
    xd_free(l->v);
    *l = (strlist_t){ 0 };
}

/* A copy of st addressed from/to (either may be NULL: unchanged). */
static xd_stanza_t *
pres_addr(const xd_stanza_t *st, const char *from, const char *to)
{
    xd_el_t *e = xd_stanza_edit(st);
    if (from)
        xd_el_set_attr(e, "from", from);
    if (to)
        xd_el_set_attr(e, "to", to);
    return xd_el_freeze(e);
}

static xd_stanza_t *
pres_make(const char *type, const char *from, const char *to)
{
    xd_el_t *e = xd_el_new("presence", NULL);
    xd_el_set_attr(e, "from", from);
    xd_el_set_attr(e, "to", to);
    if (type)
        xd_el_set_attr(e, "type", type);
    return xd_el_freeze(e);
}

/* Delivers st (reference taken over) to every available session of the
 * bare JID `bare`, each copy addressed to that session, as privacy lists
 * and blocks (XEP-0016, XEP-0191) let it: the sender's outgoing rules, each
 * session's incoming rules.  Returns how many. */
static size_t
pres_to_sessions(xd_stanza_t *st, const char *bare)
{
    xd_jid_t *j = NULL;
    size_t sent = 0;
    if (xd_jid_parse(xd_str_c(bare), &j) != 0) {
        xd_stanza_unref(st);
        return 0;
    }
    /* Privacy lists (privacy.h): the sender's outgoing rules here, each
     * session's incoming rules below.  'from' is the stanza's parsed one
     * (lent while we hold st). */
    const xd_el_t *root = xd_stanza_root(st);
    const xd_jid_t *from = xd_stanza_from(st);
    bool blocked = from && !pres_allowed(from, j, root, true);
    if (!blocked) {
        xd_session_info_t res[PRES_MAX_RES];
        size_t n = xd_session_list(j, res, PRES_MAX_RES);
        if (n > PRES_MAX_RES)
            n = PRES_MAX_RES;
        for (size_t i = 0; i < n; i++) {
            if (res[i].available && (!from || pres_allowed(res[i].jid, from, root, false))) {
                xd_session_send_take(&res[i].ref,
                                 pres_addr(st, NULL, xd_jid_full_str(res[i].jid).p));
                sent++;
            }
            xd_session_info_clear(&res[i]);
        }
    }
    xd_jid_unref(j);
    xd_stanza_unref(st);
    return sent;
}

/* True when jid is an account of a host where presence handling runs. */
static bool
pres_user_here(const xd_jid_t *jid)
{
    if (!xd_jid_local(jid).len)
        return false;
    xd_str_t d = xd_jid_domain(jid);
    char host[1024];
    snprintf(host, sizeof host, "%.*s", (int)d.len, d.p);
    return pres_on(host);
}

/* True when `host` is one of the served hosts (any module). */
static bool
pres_served(xd_str_t host)
{
    char h[1024];
    snprintf(h, sizeof h, "%.*s", (int)host.len, host.p);
    xd_config_t *cfg = xd_config_get();
    bool served = cfg && xd_config_is_host(cfg, h);
    if (cfg)
        xd_config_unref(cfg);
    return served;
}

/* The current presence of every available session of `of_bare` but
 * `to_full` itself, to the session `to_full` (worker/conn), or unavailable
 * from each when `unavail`. */
static void
pres_current_to(const char *of_bare, const char *to_full, bool unavail)
{
    xd_jid_t *of = NULL, *to = NULL;
    if (xd_jid_parse(xd_str_c(of_bare), &of) != 0)
        return;
    if (xd_jid_parse(xd_str_c(to_full), &to) != 0) {
        xd_jid_unref(of);
        return;
    }
    xd_session_info_t res[PRES_MAX_RES];
    size_t n = xd_session_list(of, res, PRES_MAX_RES);
    if (n > PRES_MAX_RES)
        n = PRES_MAX_RES;
    for (size_t i = 0; i < n; i++) {
        /* A session's own presence reached it with the broadcast
         * (RFC 6121 4.2.2): only its other resources' here. */
        if (res[i].available && res[i].presence && !xd_jid_eq(res[i].jid, to)) {
            xd_stanza_t *p = unavail ? pres_make("unavailable", xd_jid_full_str(res[i].jid).p,
                                                 to_full)
                                     : pres_addr(res[i].presence, xd_jid_full_str(res[i].jid).p,
                                                 to_full);
            if (xd_jid_is_bare(to) && pres_user_here(to))
                pres_to_sessions(p, to_full);
            else
                xd_route_take(p); /* a session, or another server's user */
        }
        xd_session_info_clear(&res[i]);
    }
    xd_jid_unref(of);
    xd_jid_unref(to);
}

/* ---- subscriptions ----------------------------------------------------------------------------- */

typedef struct sub_job {
    xd_module_ctx_t *uctx; /* the user's roster instance (held), or NULL: a remote user */
    xd_module_ctx_t *cctx; /* the contact's roster instance (held), or NULL: not local */
    xd_stanza_t *st;      /* the presence as sent (for the status text) */
    char type[16];        /* subscribe, subscribed, unsubscribe, unsubscribed */
    char uhost[XD_JID_PART_MAX + 1]; /* the user (sender) */
    char uuser[XD_JID_PART_MAX + 1];
    char ubare[XD_JID_MAX + 1];
    char contact[XD_JID_MAX + 1]; /* the contact's bare JID */
    char chost[XD_JID_PART_MAX + 1]; /* the contact's domain */
    char cuser[XD_JID_PART_MAX + 1]; /* its localpart ("" for a domain) */
    bool clocal;          /* the contact is an account here with presence on (cctx) */
    bool in_taken;        /* ROSTER_IN_SUBSCRIPTION took the inbound half */
    int out_rc, in_rc;    /* mod_roster_subscription results */
    mod_roster_sub_outcome_t out, in;
} sub_job_t;

static void sub_start(xd_stanza_t *st, const xd_jid_t *from, const xd_jid_t *to);

static void
sub_job_free(sub_job_t *j)
{
    xd_module_release(j->uctx);
    xd_module_release(j->cctx);
    xd_stanza_unref(j->st);
    xd_free(j);
}

/* ROSTER_IN/OUT_SUBSCRIPTION for j: true when a handler dealt with it. */
static bool
sub_hook(sub_job_t *j, bool inbound)
{
    xd_hook_id id = inbound ? XD_HOOK_ROSTER_IN_SUBSCRIPTION : XD_HOOK_ROSTER_OUT_SUBSCRIPTION;
    if (!xd_hook_active(id))
        return false;
    xd_jid_t *u = NULL, *c = NULL;
    bool taken = false;
    const char *ub = inbound ? j->contact : j->ubare, *cb = inbound ? j->ubare : j->contact;
    if (xd_jid_parse(xd_str_c(ub), &u) == 0 && xd_jid_parse(xd_str_c(cb), &c) == 0) {
        xd_hook_subscription_t ev = { .host = inbound ? j->chost : j->uhost, .user = u,
                                      .contact = c, .type = j->type, .st = j->st };
        taken = inbound ? xd_hook_run(XD_HOOK_ROSTER_IN_SUBSCRIPTION, ev.host, &ev) ==
                              XD_HOOK_STOP
                        : xd_hook_run(XD_HOOK_ROSTER_OUT_SUBSCRIPTION, ev.host, &ev) ==
                              XD_HOOK_STOP;
    }
    if (u)
        xd_jid_unref(u);
    if (c)
        xd_jid_unref(c);
    return taken;
}

/* The inbound half for the contact (chost, cuser) from ubare: state,
 * roster push.  On the pool. */
static void
sub_inbound(sub_job_t *j)
{
    if (sub_hook(j, true)) {
        j->in_taken = true;
        return;
    }
    mod_roster_store_t rs = mod_roster_store_of(j->cctx);
    const char *status = xd_el_child_text(xd_stanza_root(j->st), "status", NULL);
    j->in_rc = mod_roster_subscription(&rs, j->chost, j->cuser, j->ubare,
                                       (mod_roster_event)mod_roster_event_of(j->type, true),
                                       status, &j->in);
    if (j->in_rc == 0 && j->in.r.push)
        mod_roster_push(j->chost, j->cuser, &j->in.item, j->in.version);
}

/* Pre-approval (RFC 6121 3.4): the contact's server answers `subscribed`
 * for the contact, which runs the outbound half for the contact. */
static void
sub_preapproved(const char *contact, const char *user)
{
    xd_jid_t *f = NULL, *t = NULL;
    xd_stanza_t *ans = pres_make("subscribed", contact, user);
    if (xd_jid_parse(xd_str_c(contact), &f) == 0 && xd_jid_parse(xd_str_c(user), &t) == 0)
        sub_start(ans, f, t);
    else
        xd_stanza_unref(ans);
    if (f)
        xd_jid_unref(f);
    if (t)
        xd_jid_unref(t);
}

static void
sub_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    sub_job_t *j = arg;
    mod_roster_store_t rs = mod_roster_store_of(j->uctx);
    int ev = mod_roster_event_of(j->type, false);
    j->out_rc = mod_roster_subscription(&rs, j->uhost, j->uuser, j->contact,
                                        (mod_roster_event)ev, NULL, &j->out);
    if (j->out_rc == 0 && j->out.r.push)
        mod_roster_push(j->uhost, j->uuser, &j->out.item, j->out.version);
    if (j->out_rc != 0 || !j->out.r.forward || !j->clocal)
        return;
    sub_inbound(j);
}

static void
sub_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    sub_job_t *j = arg;
    if (status == 0 && j->out_rc == 0 && j->out.r.forward) {
        if (!j->clocal) {
            xd_route_take(pres_make(j->type, j->ubare, j->contact)); /* remote: the router's */
            /* RFC 6121 3.1.5, 3.2.2: as for a local contact, below. */
            if (!strcmp(j->type, "subscribed"))
                pres_current_to(j->ubare, j->contact, false);
            else if (!strcmp(j->type, "unsubscribed"))
                pres_current_to(j->ubare, j->contact, true);
        } else if (!j->in_taken && j->in_rc == 0 && j->in.r.forward) {
            xd_stanza_t *fw = pres_addr(j->st, j->ubare, j->contact);
            pres_to_sessions(fw, j->contact); /* none: a subscribe waits as Pending In */
            if (!strcmp(j->type, "subscribed"))
                /* RFC 6121 3.1.5: the approver (the sender) sends its
                 * current presence to the new subscriber. */
                pres_current_to(j->ubare, j->contact, false);
            else if (!strcmp(j->type, "unsubscribed"))
                /* RFC 6121 3.2.2: and unavailable when it cancels. */
                pres_current_to(j->ubare, j->contact, true);
        }
        if (j->clocal && j->in_rc == 0 && j->in.r.reply == MOD_ROSTER_REPLY_SUBSCRIBED)
            sub_preapproved(j->contact, j->ubare);
        /* RFC 6121 3.2.2, 3.3.2: after unsubscribe the contact's presence
         * is gone for the user. */
        if (j->clocal && !strcmp(j->type, "unsubscribe"))
            pres_current_to(j->contact, j->ubare, true);
    }
    if (status == 0 && j->out_rc == XD_EFULL) {
        /* mod_roster's max_items: the subscription would add an item to a
         * full roster; it goes back to the sender instead. */
        xd_stanza_t *err = xd_stanza_error(j->st, XD_COND_RESOURCE_CONSTRAINT,
                                           "your roster is full");
        if (err)
            xd_route_take(err);
    }
    if (j->out_rc == 0)
        mod_roster_item_clear(&j->out.item);
    if (j->in_rc == 0 && j->clocal && j->out.r.forward)
        mod_roster_item_clear(&j->in.item);
    sub_job_free(j);
}

/* Takes st (reference) from the user `from` to `to`. */
static void
sub_start(xd_stanza_t *st, const xd_jid_t *from, const xd_jid_t *to)
{
    sub_job_t *j = xd_new(sub_job_t);
    j->st = st;
    j->in_rc = -1;
    snprintf(j->type, sizeof j->type, "%s", xd_el_attr(xd_stanza_root(st), "type"));
    xd_str_t d = xd_jid_domain(from), l = xd_jid_local(from), b = xd_jid_bare_str(from);
    snprintf(j->uhost, sizeof j->uhost, "%.*s", (int)d.len, d.p);
    snprintf(j->uuser, sizeof j->uuser, "%.*s", (int)l.len, l.p);
    snprintf(j->ubare, sizeof j->ubare, "%.*s", (int)b.len, b.p);
    d = xd_jid_domain(to);
    l = xd_jid_local(to);
    b = xd_jid_bare_str(to);
    snprintf(j->contact, sizeof j->contact, "%.*s", (int)b.len, b.p);
    snprintf(j->chost, sizeof j->chost, "%.*s", (int)d.len, d.p);
    snprintf(j->cuser, sizeof j->cuser, "%.*s", (int)l.len, l.p);
    j->uctx = pres_instance(j->uhost);
    j->cctx = l.len ? pres_instance(j->chost) : NULL;
    j->clocal = j->cctx != NULL;
    if (!j->uctx || sub_hook(j, false)) {
        sub_job_free(j); /* the user's roster is gone, or a handler dealt with it */
        return;
    }
    /* Off the loops already (a roster remove on the pool): runs inline. */
    if (xd_module_submit(j->uctx, sub_work, sub_done, j) != 0)
        sub_job_free(j);
}

void
mod_presence_roster_removed(xd_module_ctx_t *ctx, const char *host, const char *user,
                            const char *contact, mod_roster_remove_actions_t actions)
{
    (void)ctx;
    char bare[XD_JID_MAX + 1];
    snprintf(bare, sizeof bare, "%s@%s", user, host);
    xd_jid_t *from = NULL, *to = NULL;
    if (xd_jid_parse(xd_str_c(bare), &from) != 0 || xd_jid_parse(xd_str_c(contact), &to) != 0) {
        if (from)
            xd_jid_unref(from);
        return;
    }
    if (actions.unsubscribe)
        sub_start(pres_make("unsubscribe", bare, contact), from, to);
    if (actions.unsubscribed)
        sub_start(pres_make("unsubscribed", bare, contact), from, to);
    xd_jid_unref(from);
    xd_jid_unref(to);
}

/* remove_user: the roster goes with the account. */
typedef struct pres_rm {
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    int rc;
} pres_rm_t;

static void
pres_rm_work(xd_module_ctx_t *ctx, void *arg)
{
    pres_rm_t *r = arg;
    mod_roster_store_t rs = mod_roster_store_of(ctx);
    r->rc = mod_roster_remove_user(&rs, r->host, r->user);
}

static void
pres_rm_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    pres_rm_t *r = arg;
    int rc = status ? status : r->rc;
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "roster not removed", "host=%s user=%s err=%s", r->host, r->user,
               xd_strerror(rc));
    xd_free(r);
}

static int
pres_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    pres_rm_t *r = xd_new(pres_rm_t);
    snprintf(r->host, sizeof r->host, "%s", ev->host);
    snprintf(r->user, sizeof r->user, "%s", ev->user);
    if (xd_module_submit(ctx, pres_rm_work, pres_rm_done, r) != 0)
        xd_free(r);
    return XD_HOOK_OK;
}

static bool
pres_is_sub(const char *type)
{
    return type && (!strcmp(type, "subscribe") || !strcmp(type, "subscribed") ||
                    !strcmp(type, "unsubscribe") || !strcmp(type, "unsubscribed"));
}

/* ---- from other servers ---------------------------------------------------------------------- */

/* A subscription presence from another server's user to one of ours: the
 * inbound half of the machine (RFC 6121 3.1.3, 3.1.6, 3.2.3, 3.3.3). */
static void
subin_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    sub_inbound(arg);
}

static void
subin_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    sub_job_t *j = arg;
    if (status == 0 && !j->in_taken && j->in_rc == 0) {
        if (j->in.r.forward) {
            pres_to_sessions(pres_addr(j->st, j->ubare, j->contact), j->contact);
            if (!strcmp(j->type, "unsubscribe"))
                /* RFC 6121 3.3.3: our user's presence is gone for them. */
                pres_current_to(j->contact, j->ubare, true);
        }
        if (j->in.r.reply == MOD_ROSTER_REPLY_SUBSCRIBED)
            sub_preapproved(j->contact, j->ubare);
        mod_roster_item_clear(&j->in.item);
    }
    sub_job_free(j);
}

/* A presence probe to one of our users (RFC 6121 4.3.2): the current
 * presence of each available session when the prober has a subscription,
 * unavailable when there is none; nothing for others. */
typedef struct probe_job {
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1], bare[XD_JID_MAX + 1];
    char prober[XD_JID_MAX + 1]; /* as it came ('from' of the probe) */
    char prober_bare[XD_JID_MAX + 1];
    bool allowed;
} probe_job_t;

static void
probe_work(xd_module_ctx_t *ctx, void *arg)
{
    probe_job_t *j = arg;
    mod_roster_store_t rs = mod_roster_store_of(ctx);
    mod_roster_item_t it = { 0 };
    if (mod_roster_get_item(&rs, j->host, j->user, j->prober_bare, &it) == 0) {
        j->allowed = it.state.sub & MOD_ROSTER_SUB_FROM;
        mod_roster_item_clear(&it);
    }
}

static void
probe_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    probe_job_t *j = arg;
    if (status == 0 && j->allowed) {
        xd_jid_t *u = NULL;
        bool any = false;
        if (xd_jid_parse(xd_str_c(j->bare), &u) == 0) {
            xd_session_info_t res[PRES_MAX_RES];
            size_t n = xd_session_list(u, res, PRES_MAX_RES);
            for (size_t i = 0; i < n && i < PRES_MAX_RES; i++) {
                any = any || res[i].available;
                xd_session_info_clear(&res[i]);
            }
            xd_jid_unref(u);
        }
        if (any)
            pres_current_to(j->bare, j->prober, false);
        else
            xd_route_take(pres_make("unavailable", j->bare, j->prober));
    }
    xd_free(j);
}

/* The prober `from` asks for the presence of `to`, an account of the
 * roster instance ctx. */
static void
probe_start(xd_module_ctx_t *ctx, const xd_jid_t *from, const xd_jid_t *to)
{
    probe_job_t *j = xd_new(probe_job_t);
    xd_str_t d = xd_jid_domain(to), l = xd_jid_local(to), b = xd_jid_bare_str(to);
    snprintf(j->host, sizeof j->host, "%.*s", (int)d.len, d.p);
    snprintf(j->user, sizeof j->user, "%.*s", (int)l.len, l.p);
    snprintf(j->bare, sizeof j->bare, "%.*s", (int)b.len, b.p);
    xd_str_t f = xd_jid_full_str(from), fb = xd_jid_bare_str(from);
    snprintf(j->prober, sizeof j->prober, "%.*s", (int)f.len, f.p);
    snprintf(j->prober_bare, sizeof j->prober_bare, "%.*s", (int)fb.len, fb.p);
    if (xd_module_submit(ctx, probe_work, probe_done, j) != 0)
        xd_free(j);
}

/* filter_packet: subscription presence from a local user; subscriptions
 * and probes from other servers' users to ours. */
static int
pres_filter(xd_module_ctx_t *hctx, xd_hook_filter_t *ev, void *arg)
{
    (void)hctx; /* global: NULL */
    (void)arg;
    const xd_el_t *el = xd_stanza_root(ev->st);
    if (xd_stanza_kind_of(el) != XD_STANZA_PRESENCE)
        return XD_HOOK_OK;
    const char *ptype = xd_el_attr(el, "type");
    bool probe = ptype && !strcmp(ptype, "probe");
    if (!probe && !pres_is_sub(ptype))
        return XD_HOOK_OK;
    /* Parsed once with the stanza; our references, as the stanza may go. */
    const xd_jid_t *from_l = xd_stanza_from(ev->st), *to_l = ev->to ? ev->to : xd_stanza_to(ev->st);
    if (!from_l || !to_l)
        return XD_HOOK_OK;
    xd_jid_t *from = xd_jid_ref((xd_jid_t *)from_l), *to = xd_jid_ref((xd_jid_t *)to_l);
    char fhost[XD_JID_PART_MAX + 1];
    xd_str_t d = xd_jid_domain(from);
    snprintf(fhost, sizeof fhost, "%.*s", (int)d.len, d.p);
    bool mine = xd_jid_local(from).len && !xd_jid_is_bare(from) && pres_on(fhost);
    if (mine) {
        /* Only a session's own stanza carries its full JID as 'from'. */
        xd_session_info_t e;
        mine = xd_session_find(from, &e) == 0;
        if (mine)
            xd_session_info_clear(&e);
    }
    /* The roster instance of the recipient's host, for an account here. */
    xd_module_ctx_t *tctx = xd_jid_local(to).len && xd_str_eq_c(xd_jid_domain(to), ev->host)
                                ? pres_instance(ev->host)
                                : NULL;
    bool taken = false;
    if (probe) {
        /* Ours answers for our users, whoever asks (local or remote). */
        if (tctx) {
            probe_start(tctx, from, to);
            xd_stanza_unref(ev->st);
            ev->st = NULL;
            taken = true;
        }
    } else if (mine) {
        sub_start(ev->st, from, to);
        ev->st = NULL;
        taken = true;
    } else if (tctx && !pres_served(xd_jid_domain(from))) {
        /* From another server (or a component) to one of our users. */
        sub_job_t *j = xd_new(sub_job_t);
        j->st = ev->st;
        ev->st = NULL;
        taken = true;
        snprintf(j->type, sizeof j->type, "%s", ptype);
        xd_str_t fb = xd_jid_bare_str(from), tb = xd_jid_bare_str(to);
        xd_str_t td = xd_jid_domain(to), tl = xd_jid_local(to);
        snprintf(j->ubare, sizeof j->ubare, "%.*s", (int)fb.len, fb.p);
        snprintf(j->contact, sizeof j->contact, "%.*s", (int)tb.len, tb.p);
        snprintf(j->chost, sizeof j->chost, "%.*s", (int)td.len, td.p);
        snprintf(j->cuser, sizeof j->cuser, "%.*s", (int)tl.len, tl.p);
        j->in_rc = -1;
        j->cctx = tctx; /* the job's hold now */
        tctx = NULL;
        if (xd_module_submit(j->cctx, subin_work, subin_done, j) != 0)
            sub_job_free(j);
    }
    xd_module_release(tctx);
    xd_jid_unref(from);
    xd_jid_unref(to);
    return taken ? XD_HOOK_STOP : XD_HOOK_OK;
}

/* ---- broadcast and probes ---------------------------------------------------------------------- */

typedef struct bc_job {
    xd_stanza_t *pres;    /* what to broadcast (from the full JID) */
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    char bare[XD_JID_MAX + 1], full[XD_JID_MAX + 1];
    bool initial;         /* also probes and pending requests */
    strlist_t from, to, pending;
    xd_input_ref_t in;    /* the sender's stream: billed for the copies (xmppd/input.h) */
} bc_job_t;

static void
bc_work(xd_module_ctx_t *ctx, void *arg)
{
    bc_job_t *j = arg;
    mod_roster_store_t rs = mod_roster_store_of(ctx);
    mod_roster_contacts(&rs, j->host, j->user, MOD_ROSTER_FROM, sl_add, &j->from);
    if (j->initial) {
        mod_roster_contacts(&rs, j->host, j->user, MOD_ROSTER_TO, sl_add, &j->to);
        mod_roster_pending_in(&rs, j->host, j->user, sl_add, &j->pending);
    }
}

static void
bc_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    bc_job_t *j = arg;
    if (status == 0) {
        /* RFC 6121 4.2.2, 4.5.2: to the contacts, and to all the user's
         * available sessions (this one included for available presence). */
        size_t len = 0, copies = 0;
        xd_stanza_bytes(j->pres, &len);
        for (size_t i = 0; i < j->from.n; i++) {
            xd_route_take(pres_addr(j->pres, NULL, j->from.v[i]));
            copies += len + strlen(j->from.v[i]) + sizeof " to=''" - 1;
        }
        /* One update, N copies: the sender's shaper pays for all of them,
         * so a client that floods presence updates is paused by its own
         * listener's shaper (docs/design.md "Fan-out is charged"). */
        xd_input_charge(j->in, copies);
        pres_to_sessions(xd_stanza_ref(j->pres), j->bare);
        if (j->initial) {
            /* RFC 6121 4.3: probes, answered here for local contacts. */
            for (size_t i = 0; i < j->to.n; i++) {
                xd_jid_t *cj = NULL;
                if (xd_jid_parse(xd_str_c(j->to.v[i]), &cj) != 0)
                    continue;
                if (pres_user_here(cj))
                    pres_current_to(j->to.v[i], j->full, false);
                else /* another server answers for its users (RFC 6121 4.3.1) */
                    xd_route_take(pres_make("probe", j->bare, j->to.v[i]));
                xd_jid_unref(cj);
            }
            pres_current_to(j->bare, j->full, false);
            /* RFC 6121 3.1.3: requests that waited. */
            for (size_t i = 0; i < j->pending.n; i++)
                xd_route_take(pres_make("subscribe", j->pending.v[i], j->full));
        }
    }
    sl_free(&j->from);
    sl_free(&j->to);
    sl_free(&j->pending);
    xd_stanza_unref(j->pres);
    xd_free(j);
}

static void
bc_start(xd_module_ctx_t *ctx, const char *host, const xd_jid_t *jid, xd_stanza_t *pres,
         bool initial)
{
    bc_job_t *j = xd_new(bc_job_t);
    j->pres = pres;
    j->initial = initial;
    j->in = xd_input_current(); /* held by the pool job until bc_done has run */
    xd_str_t l = xd_jid_local(jid), b = xd_jid_bare_str(jid), f = xd_jid_full_str(jid);
    snprintf(j->host, sizeof j->host, "%s", host);
    snprintf(j->user, sizeof j->user, "%.*s", (int)l.len, l.p);
    snprintf(j->bare, sizeof j->bare, "%.*s", (int)b.len, b.p);
    snprintf(j->full, sizeof j->full, "%.*s", (int)f.len, f.p);
    if (xd_module_submit(ctx, bc_work, bc_done, j) != 0) {
        xd_stanza_unref(j->pres);
        xd_free(j);
    }
}

static int
pres_available(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    if (ev->presence)
        bc_start(ctx, ev->host, ev->jid, xd_stanza_ref(ev->presence), ev->initial);
    return XD_HOOK_OK;
}

static int
pres_unavailable(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    xd_str_t f = xd_jid_full_str(ev->jid);
    char full[XD_JID_MAX + 1];
    snprintf(full, sizeof full, "%.*s", (int)f.len, f.p);
    xd_stanza_t *p = ev->presence ? xd_stanza_ref(ev->presence) : NULL;
    if (!p) {
        xd_el_t *e = xd_el_new("presence", NULL);
        xd_el_set_attr(e, "from", full);
        xd_el_set_attr(e, "type", "unavailable");
        p = xd_el_freeze(e);
    }
    bc_start(ctx, ev->host, ev->jid, p, false);
    return XD_HOOK_OK;
}

/* Instances running: the global filter is added by the first, removed by
 * the last.  Starts and stops run on one thread at a time. */
static unsigned pres_instances;

int
mod_presence_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, pres_removed, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_AVAILABLE, 60, pres_available, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_UNAVAILABLE, 60, pres_unavailable, NULL);
    if (rc != 0)
        return rc;
    /* 40: after the privacy engine (30), before stanza ids (60). */
    if (pres_instances++ == 0)
        rc = xd_hook_add(XD_HOOK_FILTER_PACKET, NULL, 40, pres_filter, NULL);
    return rc;
}

void
mod_presence_stop(xd_module_ctx_t *ctx)
{
    (void)ctx;
    if (pres_instances && --pres_instances == 0) {
        xd_hook_remove(XD_HOOK_FILTER_PACKET, NULL, pres_filter, NULL);
        xd_hook_sync();
    }
}
