/*
 * mod_hooktest.c — a test module that makes every typed hook of
 * include/xmppd/hooks.def visible on the wire (tests/integration/test_hooks.py).
 *
 * Built as a loadable .so against the public headers alone
 * (tests/modules/meson.build: include/ is its only include directory), and
 * loaded through module_dir like any third-party module:
 *
 *   module_dir: <build>/tests/modules
 *   modules: { mod_hooktest: {} }
 *
 * Every handler records what it got as one event in the instance's log
 * (per served host): an <ev hook='…' seq='…' …/> element whose attributes
 * are the payload's fields, plus a count per hook.  Clients read the log
 * with an IQ get to the host:
 *
 *   <iq type='get' to='localhost'><query xmlns='urn:xmppd:hooktest' since='N' hook='…'/></iq>
 *
 * answered with <query seq='last'> holding <hook name='…' count='…'/> for
 * every hook and the events numbered above `since` (optionally only those of
 * one hook), oldest first.  Stanzas that carry a urn:xmppd:hooktest
 * payload (those IQs and their answers) are not recorded by the packet
 * hooks, so reading the log does not change it.
 *
 * Handlers that act, so that the contracts of hooks.h are tested too:
 *
 *   USER_SEND_PACKET     drops a message whose body is `drop_body`
 *   USER_RECEIVE_PACKET  drops a message whose body is `receive_drop_body`;
 *                        adds <hooktest xmlns='urn:xmppd:hooktest' jid='…'/>
 *                        (the receiving session) to every other message
 *   FILTER_PACKET        drops a message whose body is `filter_drop_body`
 *   S2S_RECEIVE_PACKET   drops a message whose body is `s2s_drop_body`
 *   OFFLINE_MESSAGE      with `offline_keep`, keeps the message (STOP)
 *   PRIVACY_CHECK_PACKET denies a stanza whose <status/> is `deny_status`
 *   PRESENCE_EDIT        adds <hooktest edit='jid'/> to available presence
 *   C2S_STREAM_FEATURES  offers <hooktest authenticated=… secure=…/>
 *   C2S_UNAUTHENTICATED_IQ answers a urn:xmppd:hooktest IQ before
 *                        authentication (at once, or from the pool with
 *                        async='true')
 *   DISCO_*              add a feature or an item
 *
 * A second namespace, urn:xmppd:hooktest:roster (PARALLEL: it blocks),
 * reads a roster through ROSTER_GET as a consumer module would:
 * <query xmlns='urn:xmppd:hooktest:roster' user='alice' [contact='bob@h']/>.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/module.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

#define NS_HT "urn:xmppd:hooktest"
#define NS_HT_ROSTER "urn:xmppd:hooktest:roster"
#define HT_RING 1024 /* events kept per host */

typedef struct ht_conf {
    char *drop_body;         /* USER_SEND_PACKET drops messages with this body */
    char *receive_drop_body; /* USER_RECEIVE_PACKET drops these */
    char *filter_drop_body;  /* FILTER_PACKET drops these */
    char *s2s_drop_body;     /* S2S_RECEIVE_PACKET drops these */
    char *deny_status;       /* PRIVACY_CHECK_PACKET denies stanzas with this <status/> */
    bool offline_keep;       /* OFFLINE_MESSAGE keeps messages (else the sender gets an error) */
} ht_conf_t;

#define C_ ht_conf_t
static const xd_opt_t ht_opts[] = {
    XD_OPT_STRING("drop_body", C_, drop_body, "'hooktest:drop'",
                  "USER_SEND_PACKET drops a message whose body is exactly this."),
    XD_OPT_STRING("receive_drop_body", C_, receive_drop_body, "'hooktest:drop-receive'",
                  "USER_RECEIVE_PACKET drops a message whose body is exactly this."),
    XD_OPT_STRING("filter_drop_body", C_, filter_drop_body, "'hooktest:drop-filter'",
                  "FILTER_PACKET drops a message whose body is exactly this."),
    XD_OPT_STRING("s2s_drop_body", C_, s2s_drop_body, "'hooktest:drop-s2s'",
                  "S2S_RECEIVE_PACKET drops a message whose body is exactly this."),
    XD_OPT_STRING("deny_status", C_, deny_status, "'hooktest:deny'",
                  "PRIVACY_CHECK_PACKET denies a stanza whose <status/> is exactly this."),
    XD_OPT_BOOL("offline_keep", C_, offline_keep, "false",
                "OFFLINE_MESSAGE keeps messages nobody takes (returns XD_HOOK_STOP)."),
    XD_OPT_END,
};
#undef C_

/* Per host: the event log.  Hooks run on worker loops, the pool and the
 * control thread at once, so everything is under the lock. */
typedef struct ht_state {
    pthread_mutex_t lock;
    unsigned long seq;                    /* the last event's number (0: none yet) */
    unsigned long count[XD_HOOK_COUNT_];  /* runs per hook */
    xd_stanza_t *ring[HT_RING];           /* event n at ring[n % HT_RING] */
    xd_stanza_t *kept;                    /* the last message OFFLINE_MESSAGE kept */
} ht_state_t;

/* ---- the event log ------------------------------------------------------------------------- */

/* A new event of hook id; the caller sets attributes and hands it to ht_record. */
static xd_el_t *
ht_event(xd_hook_id id)
{
    xd_el_t *e = xd_el_new("ev", NS_HT);
    xd_el_set_attr(e, "hook", xd_hook_name(id));
    return e;
}

static void
ht_attr(xd_el_t *e, const char *name, const char *value)
{
    if (value)
        xd_el_set_attr(e, name, value);
}

static void
ht_attr_jid(xd_el_t *e, const char *name, const xd_jid_t *jid)
{
    if (jid)
        xd_el_set_attr(e, name, xd_jid_full_str(jid).p);
}

static void
ht_attr_bool(xd_el_t *e, const char *name, bool v)
{
    xd_el_set_attr(e, name, v ? "true" : "false");
}

static void
ht_attr_ulong(xd_el_t *e, const char *name, unsigned long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", v);
    xd_el_set_attr(e, name, buf);
}

static void
ht_attr_int(xd_el_t *e, const char *name, int v)
{
    char buf[16];
    snprintf(buf, sizeof buf, "%d", v);
    xd_el_set_attr(e, name, buf);
}

/* The stanza's name and addressing, onto an event. */
static void
ht_attr_stanza(xd_el_t *e, const xd_el_t *st)
{
    xd_el_set_attr(e, "stanza", xd_el_name(st));
    ht_attr(e, "id", xd_el_attr(st, "id"));
    ht_attr(e, "type", xd_el_attr(st, "type"));
    ht_attr(e, "from", xd_el_attr(st, "from"));
    ht_attr(e, "to", xd_el_attr(st, "to"));
    ht_attr(e, "body", xd_el_child_text(st, "body", NULL));
}

/* Appends event e (consumed) to the log of ctx's host; returns its number. */
static unsigned long
ht_record(xd_module_ctx_t *ctx, xd_hook_id id, xd_el_t *e)
{
    ht_state_t *s = xd_module_state(ctx);
    pthread_mutex_lock(&s->lock);
    unsigned long seq = ++s->seq;
    s->count[id]++;
    ht_attr_ulong(e, "seq", seq);
    xd_stanza_t **slot = &s->ring[seq % HT_RING];
    xd_stanza_unref(*slot);
    *slot = xd_el_freeze(e);
    pthread_mutex_unlock(&s->lock);
    return seq;
}

/* True for a stanza about this module's log (the IQs that read it and
 * their answers): the packet hooks leave them out. */
static bool
ht_ours(const xd_el_t *st)
{
    const xd_el_t *p = xd_el_first_child(st);
    const char *ns = p ? xd_el_ns(p) : NULL;
    return ns && strncmp(ns, NS_HT, strlen(NS_HT)) == 0;
}

/* A message whose body is exactly `body` (NULL: never). */
static bool
ht_body_is(const xd_el_t *st, const char *body)
{
    if (!body || xd_stanza_kind_of(st) != XD_STANZA_MESSAGE)
        return false;
    const char *b = xd_el_child_text(st, "body", NULL);
    return b && strcmp(b, body) == 0;
}

/* ---- sessions ------------------------------------------------------------------------------ */

static int
ht_session(xd_module_ctx_t *ctx, xd_hook_id id, const xd_hook_session_t *ev)
{
    xd_el_t *e = ht_event(id);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "jid", ev->jid);
    ht_attr(e, "reason", ev->reason);
    ht_record(ctx, id, e);
    return XD_HOOK_OK;
}

static int
ht_register(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    (void)arg;
    return ht_session(ctx, XD_HOOK_SM_REGISTER_CONNECTION, ev);
}

static int
ht_remove(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    (void)arg;
    return ht_session(ctx, XD_HOOK_SM_REMOVE_CONNECTION, ev);
}

static int
ht_presence(xd_module_ctx_t *ctx, xd_hook_id id, const xd_hook_presence_t *ev)
{
    xd_el_t *e = ht_event(id);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "jid", ev->jid);
    ht_attr_bool(e, "has_presence", ev->presence != NULL);
    if (ev->presence) {
        const xd_el_t *p = xd_stanza_root(ev->presence);
        ht_attr(e, "from", xd_el_attr(p, "from"));
        ht_attr(e, "type", xd_el_attr(p, "type"));
        ht_attr(e, "priority", xd_el_child_text(p, "priority", NULL));
    }
    if (id == XD_HOOK_USER_AVAILABLE) {
        ht_attr_bool(e, "initial", ev->initial);
        ht_attr_bool(e, "first_nonneg", ev->first_nonneg);
    }
    ht_record(ctx, id, e);
    return XD_HOOK_OK;
}

static int
ht_available(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    return ht_presence(ctx, XD_HOOK_USER_AVAILABLE, ev);
}

static int
ht_unavailable(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    return ht_presence(ctx, XD_HOOK_USER_UNAVAILABLE, ev);
}

/* PRESENCE_EDIT: a child the receivers see. */
static int
ht_presence_edit(xd_module_ctx_t *ctx, xd_hook_presence_edit_t *ev, void *arg)
{
    (void)arg;
    xd_el_t *e = ht_event(XD_HOOK_PRESENCE_EDIT);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "jid", ev->jid);
    ht_attr_stanza(e, ev->presence);
    unsigned long seq = ht_record(ctx, XD_HOOK_PRESENCE_EDIT, e);
    xd_el_t *h = xd_el_add_child(ev->presence, "hooktest", NS_HT);
    ht_attr_jid(h, "edit", ev->jid);
    ht_attr_ulong(h, "seq", seq);
    return XD_HOOK_OK;
}

/* The packet hooks' common record. */
static unsigned long
ht_packet(xd_module_ctx_t *ctx, xd_hook_id id, const xd_hook_packet_t *ev, const char *action)
{
    xd_el_t *e = ht_event(id);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "jid", ev->jid);
    /* The session handle is the caller's own (owner worker): read it here. */
    ht_attr_jid(e, "session", xd_session_jid(ev->session));
    ht_attr(e, "session_host", xd_session_host(ev->session));
    ht_attr_stanza(e, xd_stanza_root(ev->st));
    ht_attr(e, "action", action);
    return ht_record(ctx, id, e);
}

/* USER_SEND_PACKET: records; drops drop_body (unref, NULL, STOP: hooks.h). */
static int
ht_send(xd_module_ctx_t *ctx, xd_hook_packet_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *st = xd_stanza_root(ev->st);
    if (ht_ours(st))
        return XD_HOOK_OK;
    const ht_conf_t *conf = xd_module_opts(ctx);
    bool drop = ht_body_is(st, conf->drop_body);
    ht_packet(ctx, XD_HOOK_USER_SEND_PACKET, ev, drop ? "dropped" : NULL);
    if (drop) {
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* USER_RECEIVE_PACKET: records; drops receive_drop_body; marks every other
 * message with the receiving session (a replaced stanza: hooks.h). */
static int
ht_receive(xd_module_ctx_t *ctx, xd_hook_packet_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *st = xd_stanza_root(ev->st);
    if (ht_ours(st))
        return XD_HOOK_OK;
    const ht_conf_t *conf = xd_module_opts(ctx);
    bool drop = ht_body_is(st, conf->receive_drop_body);
    bool mark = !drop && xd_stanza_kind_of(st) == XD_STANZA_MESSAGE;
    unsigned long seq = ht_packet(ctx, XD_HOOK_USER_RECEIVE_PACKET, ev,
                                  drop ? "dropped" : mark ? "marked" : NULL);
    if (drop) {
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    if (mark) {
        /* The stanza may be shared (a message to the bare JID goes to every
         * resource): thaw copies it then, and takes our reference. */
        xd_stanza_keep_t keep;
        xd_el_t *b = xd_stanza_thaw_keep(ev->st, &keep);
        xd_el_t *h = xd_el_add_child(b, "hooktest", NS_HT);
        ht_attr_jid(h, "jid", ev->jid);
        ht_attr_ulong(h, "seq", seq);
        ev->st = xd_stanza_freeze_keep(b, &keep);
    }
    return XD_HOOK_OK;
}

static int
ht_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    xd_el_t *e = ht_event(XD_HOOK_TICK);
    ht_attr_ulong(e, "worker", ev->worker);
    ht_attr_ulong(e, "now_ms", ev->now_ms);
    ht_attr(e, "host", xd_module_host(ctx));
    ht_record(ctx, XD_HOOK_TICK, e);
    return XD_HOOK_OK;
}

/* ---- routing ------------------------------------------------------------------------------- */

static int
ht_filter(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *st = xd_stanza_root(ev->st);
    if (ht_ours(st))
        return XD_HOOK_OK;
    const ht_conf_t *conf = xd_module_opts(ctx);
    bool drop = ht_body_is(st, conf->filter_drop_body);
    xd_el_t *e = ht_event(XD_HOOK_FILTER_PACKET);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "parsed_to", ev->to);
    ht_attr_stanza(e, st);
    ht_attr(e, "action", drop ? "dropped" : NULL);
    ht_record(ctx, XD_HOOK_FILTER_PACKET, e);
    if (drop) {
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

static int
ht_privacy(xd_module_ctx_t *ctx, xd_hook_privacy_check_t *ev, void *arg)
{
    (void)arg;
    const ht_conf_t *conf = xd_module_opts(ctx);
    const char *status = xd_el_child_text(ev->el, "status", NULL);
    bool deny = conf->deny_status && status && strcmp(status, conf->deny_status) == 0;
    xd_el_t *e = ht_event(XD_HOOK_PRIVACY_CHECK_PACKET);
    ht_attr_jid(e, "user", ev->user);
    ht_attr_jid(e, "other", ev->other);
    ht_attr_bool(e, "outgoing", ev->outgoing);
    ht_attr_stanza(e, ev->el);
    ht_attr(e, "action", deny ? "denied" : NULL);
    ht_record(ctx, XD_HOOK_PRIVACY_CHECK_PACKET, e);
    if (deny) {
        ev->deny = true;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* OFFLINE_MESSAGE: records; with offline_keep takes a reference and stops. */
static int
ht_offline(xd_module_ctx_t *ctx, xd_hook_stanza_t *ev, void *arg)
{
    (void)arg;
    const ht_conf_t *conf = xd_module_opts(ctx);
    xd_el_t *e = ht_event(XD_HOOK_OFFLINE_MESSAGE);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "rcpt", ev->to);
    ht_attr_stanza(e, xd_stanza_root(ev->st));
    ht_attr(e, "action", conf->offline_keep ? "kept" : NULL);
    ht_record(ctx, XD_HOOK_OFFLINE_MESSAGE, e);
    if (!conf->offline_keep)
        return XD_HOOK_OK;
    ht_state_t *s = xd_module_state(ctx);
    xd_stanza_t *st = xd_stanza_ref(ev->st), *old;
    pthread_mutex_lock(&s->lock);
    old = s->kept;
    s->kept = st;
    pthread_mutex_unlock(&s->lock);
    xd_stanza_unref(old);
    return XD_HOOK_STOP;
}

static int
ht_s2s(xd_module_ctx_t *ctx, xd_hook_s2s_packet_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *st = xd_stanza_root(ev->st);
    const ht_conf_t *conf = xd_module_opts(ctx);
    bool drop = ht_body_is(st, conf->s2s_drop_body);
    xd_el_t *e = ht_event(XD_HOOK_S2S_RECEIVE_PACKET);
    ht_attr(e, "local", ev->local);
    ht_attr(e, "remote", ev->remote);
    ht_attr_stanza(e, st);
    ht_attr(e, "action", drop ? "dropped" : NULL);
    ht_record(ctx, XD_HOOK_S2S_RECEIVE_PACKET, e);
    if (drop) {
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* ---- client streams ------------------------------------------------------------------------ */

static int
ht_features(xd_module_ctx_t *ctx, xd_hook_features_t *ev, void *arg)
{
    (void)arg;
    xd_el_t *e = ht_event(XD_HOOK_C2S_STREAM_FEATURES);
    ht_attr(e, "host", ev->host);
    ht_attr_bool(e, "authenticated", ev->authenticated);
    ht_attr_bool(e, "secure", ev->secure);
    ht_attr_bool(e, "tls_required", ev->tls_required);
    unsigned long seq = ht_record(ctx, XD_HOOK_C2S_STREAM_FEATURES, e);
    xd_el_t *f = xd_el_add_child(ev->features, "hooktest", NS_HT);
    ht_attr(f, "host", ev->host);
    ht_attr_bool(f, "authenticated", ev->authenticated);
    ht_attr_bool(f, "secure", ev->secure);
    ht_attr_bool(f, "tls_required", ev->tls_required);
    ht_attr_ulong(f, "seq", seq);
    return XD_HOOK_OK;
}

/* A pre-authentication answer given later, from the pool's completion. */
typedef struct ht_later {
    xd_preauth_t *req;   /* the stream's token */
    xd_stanza_t *reply;  /* what to answer (one reference) */
} ht_later_t;

static void
ht_later_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg; /* nothing to do: the point is answering after the hook returned */
}

static void
ht_later_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status; /* also on XD_ECANCELED: the token must be answered once */
    ht_later_t *l = arg;
    xd_preauth_answer(l->req, l->reply, 0);
    xd_stanza_unref(l->reply);
    xd_free(l);
}

/* C2S_UNAUTHENTICATED_IQ: takes IQs of our namespace only. */
static int
ht_preauth(xd_module_ctx_t *ctx, xd_hook_preauth_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *iq = xd_stanza_root(ev->iq);
    const xd_el_t *q = xd_el_first_child(iq);
    if (!q || !xd_el_is(q, "query", NS_HT))
        return XD_HOOK_OK; /* not ours: mod_register's, or the stream closes */
    bool async = xd_el_attr(q, "async") && strcmp(xd_el_attr(q, "async"), "true") == 0;
    xd_el_t *e = ht_event(XD_HOOK_C2S_UNAUTHENTICATED_IQ);
    ht_attr(e, "host", ev->host);
    ht_attr(e, "ip", ev->ip);
    ht_attr_bool(e, "has_peer", ev->peer != NULL);
    ht_attr_bool(e, "secure", ev->secure);
    ht_attr_bool(e, "tls_required", ev->tls_required);
    ht_attr_bool(e, "registered", ev->registered);
    ht_attr_stanza(e, iq);
    ht_attr(e, "action", async ? "answered-later" : "answered");
    unsigned long seq = ht_record(ctx, XD_HOOK_C2S_UNAUTHENTICATED_IQ, e);

    xd_el_t *r = xd_iq_result_builder(ev->iq);
    xd_el_t *p = xd_el_add_child(xd_el_add_child(r, "query", NS_HT), "preauth", NULL);
    ht_attr(p, "host", ev->host);
    ht_attr(p, "ip", ev->ip);
    ht_attr_bool(p, "secure", ev->secure);
    ht_attr_bool(p, "tls_required", ev->tls_required);
    ht_attr_bool(p, "registered", ev->registered);
    ht_attr_ulong(p, "seq", seq);
    xd_stanza_t *reply = xd_el_freeze(r);
    if (async) {
        ht_later_t *l = xd_new(ht_later_t);
        l->req = ev->req;
        l->reply = reply;
        if (xd_module_submit(ctx, ht_later_work, ht_later_done, l) == 0)
            return XD_HOOK_STOP;
        xd_free(l); /* not submitted: answer now */
    }
    xd_preauth_answer(ev->req, reply, 0);
    xd_stanza_unref(reply);
    return XD_HOOK_STOP;
}

/* ---- accounts and rosters ------------------------------------------------------------------ */

static int
ht_remove_user(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    xd_el_t *e = ht_event(XD_HOOK_REMOVE_USER);
    ht_attr(e, "host", ev->host);
    ht_attr(e, "user", ev->user);
    ht_record(ctx, XD_HOOK_REMOVE_USER, e);
    return XD_HOOK_OK;
}

/* ROSTER_GET, as an observer ahead of mod_roster (which answers it). */
static int
ht_roster_get(xd_module_ctx_t *ctx, xd_hook_roster_get_t *ev, void *arg)
{
    (void)arg;
    xd_el_t *e = ht_event(XD_HOOK_ROSTER_GET);
    ht_attr(e, "host", ev->host);
    ht_attr(e, "user", ev->user);
    ht_attr(e, "contact", ev->contact);
    ht_record(ctx, XD_HOOK_ROSTER_GET, e);
    return XD_HOOK_OK;
}

/* A roster item onto an element. */
static void
ht_attr_item(xd_el_t *e, const xd_roster_view_t *it)
{
    ht_attr(e, "jid", it->jid);
    ht_attr(e, "name", it->name);
    ht_attr(e, "subscription", xd_roster_sub_name(it->sub));
    ht_attr_bool(e, "ask", it->ask);
    ht_attr_bool(e, "pending_in", it->pending_in);
    ht_attr_bool(e, "in_roster", it->in_roster);
    for (size_t i = 0; i < it->ngroups; i++)
        xd_el_add_text(xd_el_add_child(e, "group", NULL), it->groups[i]);
}

static int
ht_roster_changed(xd_module_ctx_t *ctx, xd_hook_roster_changed_t *ev, void *arg)
{
    (void)arg;
    xd_el_t *e = ht_event(XD_HOOK_ROSTER_CHANGED);
    ht_attr(e, "host", ev->host);
    ht_attr(e, "user", ev->user);
    ht_attr_item(e, ev->item);
    ht_record(ctx, XD_HOOK_ROSTER_CHANGED, e);
    return XD_HOOK_OK;
}

static int
ht_subscription(xd_module_ctx_t *ctx, xd_hook_id id, const xd_hook_subscription_t *ev)
{
    xd_el_t *e = ht_event(id);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "user", ev->user);
    ht_attr_jid(e, "contact", ev->contact);
    ht_attr(e, "sub", ev->type);
    const xd_el_t *p = xd_stanza_root(ev->st);
    ht_attr(e, "stanza", xd_el_name(p));
    ht_attr(e, "type", xd_el_attr(p, "type"));
    ht_attr(e, "from", xd_el_attr(p, "from"));
    ht_attr(e, "to", xd_el_attr(p, "to"));
    ht_record(ctx, id, e);
    return XD_HOOK_OK;
}

static int
ht_in_subscription(xd_module_ctx_t *ctx, xd_hook_subscription_t *ev, void *arg)
{
    (void)arg;
    return ht_subscription(ctx, XD_HOOK_ROSTER_IN_SUBSCRIPTION, ev);
}

static int
ht_out_subscription(xd_module_ctx_t *ctx, xd_hook_subscription_t *ev, void *arg)
{
    (void)arg;
    return ht_subscription(ctx, XD_HOOK_ROSTER_OUT_SUBSCRIPTION, ev);
}

/* ---- service discovery --------------------------------------------------------------------- */

static void
ht_disco(xd_module_ctx_t *ctx, xd_hook_id id, const xd_hook_disco_t *ev)
{
    xd_el_t *e = ht_event(id);
    ht_attr(e, "host", ev->host);
    ht_attr_jid(e, "from", ev->from);
    ht_attr_jid(e, "to", ev->to);
    ht_attr(e, "node", ev->node);
    ht_record(ctx, id, e);
}

static int
ht_disco_local_features(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)arg;
    ht_disco(ctx, XD_HOOK_DISCO_LOCAL_FEATURES, ev);
    xd_el_set_attr(xd_el_add_child(ev->query, "feature", NULL), "var", NS_HT ":local");
    return XD_HOOK_OK;
}

static int
ht_disco_sm_features(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)arg;
    ht_disco(ctx, XD_HOOK_DISCO_SM_FEATURES, ev);
    xd_el_set_attr(xd_el_add_child(ev->query, "feature", NULL), "var", NS_HT ":sm");
    return XD_HOOK_OK;
}

static void
ht_disco_item(const xd_hook_disco_t *ev, const char *node)
{
    xd_el_t *it = xd_el_add_child(ev->query, "item", NULL);
    ht_attr_jid(it, "jid", ev->to);
    xd_el_set_attr(it, "node", node);
    /* The node asked for, so that a test sees it arrived. */
    xd_el_set_attr(it, "name", ev->node ? ev->node : "hooktest");
}

static int
ht_disco_local_items(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)arg;
    ht_disco(ctx, XD_HOOK_DISCO_LOCAL_ITEMS, ev);
    ht_disco_item(ev, NS_HT ":local");
    return XD_HOOK_OK;
}

static int
ht_disco_sm_items(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)arg;
    ht_disco(ctx, XD_HOOK_DISCO_SM_ITEMS, ev);
    ht_disco_item(ev, NS_HT ":sm");
    return XD_HOOK_OK;
}

/* ---- the IQs ------------------------------------------------------------------------------- */

/* <query xmlns='urn:xmppd:hooktest' since='N' hook='name'/>: the log (INLINE). */
static xd_stanza_t *
ht_iq(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    const char *since_s = xd_el_attr(req->payload, "since");
    const char *only = xd_el_attr(req->payload, "hook");
    unsigned long since = since_s ? strtoul(since_s, NULL, 10) : 0;
    ht_state_t *s = xd_module_state(req->ctx);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", NS_HT);
    xd_el_set_attr(q, "host", req->host);
    pthread_mutex_lock(&s->lock);
    ht_attr_ulong(q, "seq", s->seq);
    for (int id = 0; id < XD_HOOK_COUNT_; id++) {
        xd_el_t *h = xd_el_add_child(q, "hook", NULL);
        xd_el_set_attr(h, "name", xd_hook_name((xd_hook_id)id));
        ht_attr_ulong(h, "count", s->count[id]);
    }
    unsigned long first = s->seq >= HT_RING ? s->seq - HT_RING + 1 : 1;
    if (first <= since)
        first = since + 1;
    for (unsigned long n = first; n <= s->seq; n++) {
        const xd_stanza_t *ev = s->ring[n % HT_RING];
        if (!ev || (only && strcmp(xd_el_attr(xd_stanza_root(ev), "hook"), only) != 0))
            continue;
        xd_el_append(q, xd_stanza_edit(ev));
    }
    pthread_mutex_unlock(&s->lock);
    return xd_el_freeze(r);
}

typedef struct ht_items {
    xd_el_t *query; /* where the items go */
} ht_items_t;

static int
ht_roster_item(void *arg, const xd_roster_view_t *item)
{
    ht_items_t *it = arg;
    ht_attr_item(xd_el_add_child(it->query, "item", NULL), item);
    return 0;
}

/* <query xmlns='urn:xmppd:hooktest:roster' user='alice' contact='…'/>: a
 * roster read through ROSTER_GET, as a consumer module does (PARALLEL: the
 * hook runs on the blocking pool). */
static xd_stanza_t *
ht_roster_iq(const xd_iq_req_t *req)
{
    const char *user = xd_el_attr(req->payload, "user");
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0 || !user)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", NS_HT_ROSTER);
    ht_items_t it = { q };
    xd_hook_roster_get_t ev = { .host = req->host, .user = user,
                                .contact = xd_el_attr(req->payload, "contact"),
                                .fn = ht_roster_item, .arg = &it };
    int stop = xd_hook_run(XD_HOOK_ROSTER_GET, req->host, &ev);
    ht_attr_bool(q, "served", ev.served);
    ht_attr_bool(q, "stopped", stop == XD_HOOK_STOP);
    ht_attr_int(q, "rc", ev.rc);
    return xd_el_freeze(r);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void
ht_stop(xd_module_ctx_t *ctx)
{
    ht_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    for (size_t i = 0; i < HT_RING; i++)
        xd_stanza_unref(s->ring[i]);
    xd_stanza_unref(s->kept);
    pthread_mutex_destroy(&s->lock);
    xd_free(s);
    xd_module_set_state(ctx, NULL);
}

static int
ht_start(xd_module_ctx_t *ctx)
{
    ht_state_t *s = xd_new(ht_state_t);
    pthread_mutex_init(&s->lock, NULL);
    xd_module_set_state(ctx, s); /* stop frees it, also after a failed start */
    const int P = XD_HOOK_PRIO_DEFAULT;
    int rc = 0;
#define HT_HOOK(ID, prio, fn)                               \
    do {                                                    \
        if (rc == 0)                                        \
            rc = xd_module_hook(ctx, ID, (prio), (fn), NULL); \
    } while (0)
    HT_HOOK(XD_HOOK_SM_REGISTER_CONNECTION, P, ht_register);
    HT_HOOK(XD_HOOK_SM_REMOVE_CONNECTION, P, ht_remove);
    HT_HOOK(XD_HOOK_USER_AVAILABLE, P, ht_available);
    HT_HOOK(XD_HOOK_USER_UNAVAILABLE, P, ht_unavailable);
    HT_HOOK(XD_HOOK_PRESENCE_EDIT, P, ht_presence_edit);
    HT_HOOK(XD_HOOK_USER_SEND_PACKET, P, ht_send);
    HT_HOOK(XD_HOOK_USER_RECEIVE_PACKET, P, ht_receive);
    HT_HOOK(XD_HOOK_TICK, P, ht_tick);
    /* Ahead of the built-in handlers (mod_presence's filter, mod_offline,
     * mod_roster), which may stop the chain. */
    HT_HOOK(XD_HOOK_FILTER_PACKET, 10, ht_filter);
    HT_HOOK(XD_HOOK_PRIVACY_CHECK_PACKET, 10, ht_privacy);
    HT_HOOK(XD_HOOK_OFFLINE_MESSAGE, 10, ht_offline);
    HT_HOOK(XD_HOOK_S2S_RECEIVE_PACKET, P, ht_s2s);
    HT_HOOK(XD_HOOK_C2S_STREAM_FEATURES, P, ht_features);
    HT_HOOK(XD_HOOK_C2S_UNAUTHENTICATED_IQ, 10, ht_preauth);
    HT_HOOK(XD_HOOK_REMOVE_USER, 10, ht_remove_user);
    HT_HOOK(XD_HOOK_ROSTER_GET, 10, ht_roster_get);
    HT_HOOK(XD_HOOK_ROSTER_CHANGED, 10, ht_roster_changed);
    HT_HOOK(XD_HOOK_ROSTER_IN_SUBSCRIPTION, 10, ht_in_subscription);
    HT_HOOK(XD_HOOK_ROSTER_OUT_SUBSCRIPTION, 10, ht_out_subscription);
    HT_HOOK(XD_HOOK_DISCO_LOCAL_FEATURES, P, ht_disco_local_features);
    HT_HOOK(XD_HOOK_DISCO_LOCAL_ITEMS, P, ht_disco_local_items);
    HT_HOOK(XD_HOOK_DISCO_SM_FEATURES, P, ht_disco_sm_features);
    HT_HOOK(XD_HOOK_DISCO_SM_ITEMS, P, ht_disco_sm_items);
#undef HT_HOOK
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_HOST, NS_HT, XD_IQ_INLINE, ht_iq, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_HOST, NS_HT_ROSTER, XD_IQ_PARALLEL, ht_roster_iq, NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    return 0;
}

XD_MODULE_EXPORT = {
    .abi = XD_MODULE_ABI,
    .name = "mod_hooktest",
    .doc = "Test module: records every hook's payload and shows it to clients",
    .opts = ht_opts,
    .opts_size = sizeof(ht_conf_t),
    .start = ht_start,
    .stop = ht_stop,
};
