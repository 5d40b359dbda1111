/*
 * c2s.c — client-to-server streams (RFC 6120 4-7): the client role of the
 * stream connection (conn.h) and the transport of the session it binds.
 *
 * The stream goes through the stages of RFC 6120 9.1 (client-to-server
 * example), each starting with a new stream header and its features:
 *
 *   [direct TLS handshake]                          (listener tls: true)
 *   header ─► features: STARTTLS (+ SASL unless starttls_required)
 *     <starttls/> ─► <proceed/> ─► TLS handshake ─► header ─► features: SASL
 *     <auth/> … <success/> ─► header ─► features: bind, session
 *     <iq><bind/></iq> ─► bound: the session manager takes every stanza
 *                          (xd_session_input, router/session.h), and
 *                          <active/> / <inactive/> (XEP-0352, xd_session_csi)
 *
 * What stays here is the wire: header checks, features, STARTTLS and SASL
 * (c2s_sasl.c), and the
 * session's transport: xd_c2s_ops delivers stanzas to the connection,
 * closes it and tells how idle it is.  Modules add stream features
 * (C2S_STREAM_FEATURES) and answer IQs before authentication
 * (C2S_UNAUTHENTICATED_IQ: in-band registration).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/c2s.h"
#include "stream/c2s_int.h"

#include "auth/authlimit.h"
#include "core/worker.h"
#include "router/preauth.h"
#include "router/session.h"
#include "stream/sasl.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/conds.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

static const xd_session_ops_t xd_c2s_ops;

/* ---- features ------------------------------------------------------------------------------- */

/* The features of modules (C2S_STREAM_FEATURES) appended to buf. */
static size_t
c2s_hook_features(xd_conn_t *c, bool authenticated, char *buf, size_t len, size_t cap)
{
    if (!xd_hook_active(XD_HOOK_C2S_STREAM_FEATURES))
        return len;
    bool secure = c2s_secure(c);
    xd_hook_features_t ev = {
        .host = c->host,
        .authenticated = authenticated,
        .secure = secure,
        .tls_required = c->listener->starttls_required && !secure,
        .features = xd_el_new("features", XD_NS_STREAMS),
    };
    xd_hook_run(XD_HOOK_C2S_STREAM_FEATURES, c->host, &ev);
    for (const xd_el_t *f = xd_el_first_child(ev.features); f; f = xd_el_next(f)) {
        size_t n;
        char *x = xd_el_serialize(f, XD_NS_CLIENT, &n);
        if (len + n < cap) {
            memcpy(buf + len, x, n);
            len += n;
        }
        xd_free(x);
    }
    xd_el_free(ev.features);
    return len;
}

void
c2s_send_features(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    char buf[4096];
    size_t len = 0;
#define ADD(...) \
    len += (size_t)snprintf(buf + len, len < sizeof buf ? sizeof buf - len : 0, __VA_ARGS__)
    ADD("<stream:features>");
    if (!s->authenticated) {
        bool secure = c2s_secure(c);
        if (!secure && c->listener->starttls)
            ADD("<starttls xmlns='" XD_NS_TLS "'>%s</starttls>",
                c->listener->starttls_required ? "<required/>" : "");
        if (secure || !c->listener->starttls_required) {
            c2s_sasl_setup(c);
            const char *const *mechs = xd_sasl_mechanisms(s->sasl);
            if (mechs[0]) {
                ADD("<mechanisms xmlns='" XD_NS_SASL "'>");
                for (size_t i = 0; mechs[i]; i++)
                    ADD("<mechanism>%s</mechanism>", mechs[i]);
                ADD("</mechanisms>");
                if (len < sizeof buf)
                    len = c2s_sasl2_feature(c, buf, len, sizeof buf); /* XEP-0388 */
            }
            unsigned cb = xd_sasl_cb_offered(s->sasl);
            if (cb) {
                /* XEP-0440 */
                ADD("<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>");
                for (int t = 0; t < XD_SASL_CB_COUNT; t++)
                    if (cb & XD_SASL_CB_BIT(t))
                        ADD("<channel-binding type='%s'/>", xd_sasl_cb_name((xd_sasl_cb)t));
                ADD("</sasl-channel-binding>");
            }
        }
        if (len < sizeof buf)
            len = c2s_hook_features(c, false, buf, len, sizeof buf);
    } else if (!s->session) {
        ADD("<bind xmlns='" XD_NS_BIND "'/>"
            "<session xmlns='" XD_NS_SESSION "'><optional/></session>"
            "<csi xmlns='" XD_NS_CSI "'/>"); /* XEP-0352 2 */
        if (c2s_sm_offered(c))
            ADD("<sm xmlns='" XD_NS_SM "'/>"); /* XEP-0198 2 */
        if (len < sizeof buf)
            len = c2s_hook_features(c, true, buf, len, sizeof buf);
    } else {
        /* Bound by Bind2 (XEP-0386) in SASL2, without a restart: what may
         * still be negotiated. */
        ADD("<csi xmlns='" XD_NS_CSI "'/>");
        if (c2s_sm_offered(c) && !s->sm)
            ADD("<sm xmlns='" XD_NS_SM "'/>");
    }
    ADD("</stream:features>");
#undef ADD
    XD_ASSERT(len < sizeof buf);
    c2s_write(c, buf, len);
}

/* ---- stream open ------------------------------------------------------------------------------ */

static bool
c2s_version_ok(const char *v)
{
    /* RFC 6120 4.7.5: "major.minor"; we speak 1.x. */
    if (!v)
        return false;
    char *end;
    long major = strtol(v, &end, 10);
    return end != v && *end == '.' && major >= 1;
}

static void
c2s_stream_open(xd_conn_t *c, const xd_el_t *hdr)
{
    c2s_t *s = c2s_of(c);
    /* The host comes first so that an error header carries the right 'from'. */
    const char *to = xd_el_attr(hdr, "to");
    char *host = NULL;
    xd_config_t *cfg = xd_config_get();
    bool served = to && xd_jid_prep_domain(xd_str_c(to), &host) == 0 &&
                  xd_config_is_host(cfg, host);
    xd_config_unref(cfg);
    if (served && c->host && strcmp(c->host, host) != 0 && (c2s_secure(c) || s->authenticated)) {
        /* A restarted stream must stay with the host it began with. */
        xd_free(host);
        c2s_close(c, XD_STREAM_HOST_UNKNOWN, "the stream restarted for another host");
        return;
    }
    if (served) {
        xd_free(c->host);
        c->host = host;
    } else {
        xd_free(host);
    }

    /* auth_limits: an address banned for failed authentications. */
    char why[XD_AUTHLIMIT_TEXT_MAX];
    if (!s->authenticated && xd_authlimit_banned((const struct sockaddr *)&c->peer, why,
                                                 sizeof why)) {
        XD_LOG(&c->log, XD_INFO, "stream refused", "reason=auth-ban");
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, why);
        return;
    }

    /* RFC 6120 4.8.1: the stream element in the streams namespace. */
    if (!xd_str_eq_c(xd_str_c(xd_el_name(hdr)), "stream") || !xd_el_ns(hdr) ||
        strcmp(xd_el_ns(hdr), XD_NS_STREAMS) != 0) {
        c2s_close(c, XD_STREAM_INVALID_NAMESPACE,
                  "the stream element must be <stream xmlns='http://etherx.jabber.org/streams'>");
        return;
    }
    /* RFC 6120 4.8.2: the content namespace of a client stream. */
    const char *dns = xd_xml_parser_stream_ns(c->parser);
    if (!dns || strcmp(dns, XD_NS_CLIENT) != 0) {
        c2s_close(c, XD_STREAM_INVALID_NAMESPACE, "the default namespace must be jabber:client");
        return;
    }
    if (!to) {
        c2s_close(c, XD_STREAM_HOST_UNKNOWN, "the stream header has no 'to' attribute");
        return;
    }
    if (!served) {
        /* RFC 6120 4.9.3.6 */
        c2s_close(c, XD_STREAM_HOST_UNKNOWN, "this server does not serve that domain");
        return;
    }
    if (!c2s_version_ok(xd_el_attr(hdr, "version"))) {
        /* RFC 6120 4.7.5: no version means 0.9, which we do not speak. */
        c2s_close(c, XD_STREAM_UNSUPPORTED_VERSION, "version='1.0' is required");
        return;
    }

    /* RFC 6120 4.7.2: echo the initiating entity's 'from' as our 'to'. */
    const char *from = xd_el_attr(hdr, "from");
    xd_jid_t *fj = NULL;
    if (from && xd_jid_parse(xd_str_c(from), &fj) == 0) {
        c2s_send_header_as(c, NULL, xd_jid_full_str(fj).p, false);
        xd_jid_unref(fj);
    } else {
        c2s_send_header_as(c, NULL, NULL, false);
    }
    if (!s->authenticated)
        xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s host=%s", (unsigned long long)c->id, c->ip,
                   c->host);
    c->state = C2S_OPEN;
    /* RFC 6120 4.3.2: features follow the header. */
    c2s_send_features(c);
}

/* ---- binding ---------------------------------------------------------------------------------- */

xd_session_bind_req_t
c2s_bind_req(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    return (xd_session_bind_req_t){
        .ref = { .ops = &xd_c2s_ops, .worker = xd_worker_index(c->ws->worker), .id = c->id },
        .user = s->jid,
        .host = c->host,
        .ip = c->ip,
        .log = &c->log,
        .now_ms = uv_now(c->tcp.loop),
        .secure = c2s_secure(c),
    };
}

void
c2s_bound(xd_conn_t *c, const char *how)
{
    c2s_t *s = c2s_of(c);
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s jid=%s", (unsigned long long)c->id, c->ip,
               xd_jid_full_str(s->session->jid).p);
    XD_LOG(&c->log, XD_NOTICE, "session bound", "worker=%u by=%s",
           xd_worker_index(c->ws->worker), how);
    c2s_established(c); /* the handshake timer becomes the idle timer */
}

static void
c2s_bind(xd_conn_t *c, const xd_stanza_t *st)
{
    c2s_t *s = c2s_of(c);
    xd_session_bind_req_t req = c2s_bind_req(c);
    xd_stanza_t *reply = xd_session_bind_iq(&req, st, &s->session);
    if (s->session)
        c2s_bound(c, "bind");
    c2s_send_stanza(c, reply);
    xd_stanza_unref(reply);
}

/* ---- before authentication (C2S_UNAUTHENTICATED_IQ) ------------------------------------------- */

/* A request a module took; the stream waits for its answer.  Owner worker
 * only, except `base`, which modules hold until they answer. */
typedef struct c2s_preauth {
    xd_conn_op_t op;    /* first: the connection's token */
    xd_preauth_t base;  /* what modules get; answer = c2s_preauth_answer */
    unsigned worker;    /* the connection's owner */
    bool waiting;       /* the stream is blocked for it */
} c2s_preauth_t;

static c2s_preauth_t *
c2s_preauth_of(xd_preauth_t *base)
{
    return (c2s_preauth_t *)((char *)base - offsetof(c2s_preauth_t, base));
}

typedef struct c2s_preauth_msg {
    c2s_preauth_t *req;  /* the request */
    xd_stanza_t *reply;  /* what to write (a reference), or NULL */
    unsigned flags;      /* XD_PREAUTH_* */
} c2s_preauth_msg_t;

/* On the owner worker. */
static void
c2s_preauth_finish(c2s_preauth_t *req, const xd_stanza_t *reply, unsigned flags)
{
    bool waiting = req->waiting;
    xd_conn_t *c = c2s_op_done(&req->op); /* frees req */
    if (!c || c->state == C2S_CLOSING)
        return;
    if (reply)
        c2s_send_stanza(c, reply);
    if (flags & XD_PREAUTH_REGISTERED)
        c2s_of(c)->registered = true;
    if (waiting)
        c2s_unblock(c);
}

static void
c2s_preauth_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    c2s_preauth_msg_t *m = arg;
    c2s_preauth_finish(m->req, m->reply, m->flags);
    xd_stanza_unref(m->reply);
    xd_free(m);
}

/* xd_preauth_answer of a c2s token (any thread). */
static void
c2s_preauth_answer(xd_preauth_t *base, const xd_stanza_t *reply, unsigned flags)
{
    c2s_preauth_t *req = c2s_preauth_of(base);
    xd_worker_t *self = xd_worker_self();
    if (self && xd_worker_index(self) == req->worker) {
        c2s_preauth_finish(req, reply, flags);
        return;
    }
    c2s_preauth_msg_t *m = xd_new(c2s_preauth_msg_t);
    m->req = req;
    m->reply = reply ? xd_stanza_ref(reply) : NULL;
    m->flags = flags;
    if (xd_worker_post(xd_worker_get(req->worker), c2s_preauth_msg, m) != 0) {
        /* The server stops; the connection goes with it.  req stays with
         * its connection, which frees what it holds when it closes. */
        xd_stanza_unref(m->reply);
        xd_free(m);
    }
}

/* An IQ before authentication: a module's (XEP-0077 registration), or the
 * end of the stream. */
static void
c2s_preauth_iq(xd_conn_t *c, const xd_stanza_t *st)
{
    c2s_t *s = c2s_of(c);
    c2s_preauth_t *req = (c2s_preauth_t *)c2s_op_new(c, sizeof *req);
    req->base.answer = c2s_preauth_answer;
    req->worker = xd_worker_index(c->ws->worker);
    bool secure = c2s_secure(c);
    xd_hook_preauth_t ev = {
        .host = c->host,
        .iq = st,
        .ip = c->ip,
        .peer = (const struct sockaddr *)&c->peer,
        .secure = secure,
        .tls_required = c->listener->starttls_required && !secure,
        .registered = s->registered,
        .req = &req->base,
    };
    if (xd_hook_run(XD_HOOK_C2S_UNAUTHENTICATED_IQ, c->host, &ev) != XD_HOOK_STOP) {
        c2s_op_done(&req->op);
        const xd_el_t *payload = xd_el_first_child(xd_stanza_root(st));
        if (payload && xd_el_is(payload, "query", XD_NS_REGISTER))
            /* XEP-0077 3.1: registration is not offered here. */
            c2s_send_iq_error(c, st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        else
            /* RFC 6120 6.4.1 / 4.9.3.12: stanzas before authentication. */
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "authenticate first");
        return;
    }
    if (c->op) {
        /* Not answered yet: later input waits for the answer. */
        req->waiting = true;
        c2s_block(c);
    }
}

/* ---- elements --------------------------------------------------------------------------------- */

/* Takes st. */
static void
c2s_element(xd_conn_t *c, xd_stanza_t *st)
{
    c2s_t *s = c2s_of(c);
    const xd_el_t *el = xd_stanza_root(st);
    const char *ns = xd_el_ns(el);
    if (ns && !strcmp(ns, XD_NS_TLS) && !strcmp(xd_el_name(el), "starttls")) {
        c2s_starttls(c, el, !s->authenticated);
    } else if (ns && !strcmp(ns, XD_NS_SASL)) {
        c2s_sasl_element(c, el);
    } else if (ns && !strcmp(ns, XD_NS_SASL2)) {
        c2s_sasl2_element(c, el); /* XEP-0388 */
    } else if (s->authenticated && c2s_sm_element(c, el)) {
        ; /* XEP-0198: enable, r, a, resume */
    } else if (ns && !strcmp(ns, XD_NS_CSI) && s->session &&
               (!strcmp(xd_el_name(el), "active") || !strcmp(xd_el_name(el), "inactive"))) {
        /* XEP-0352: not a stanza; it changes what the session's delivery
         * holds back (router/session.h), before the next element is read. */
        xd_session_csi(s->session, !strcmp(xd_el_name(el), "active"));
    } else if (xd_stanza_kind_of(el) == XD_STANZA_OTHER) {
        /* RFC 6120 4.9.3.24: a first-level element we do not understand. */
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
    } else if (!s->authenticated) {
        const char *to = xd_el_attr(el, "to");
        if (xd_stanza_kind_of(el) == XD_STANZA_IQ && (!to || !strcmp(to, c->host)))
            c2s_preauth_iq(c, st); /* XEP-0077 3.1: registration before authentication */
        else
            /* RFC 6120 6.4.1 / 4.9.3.12: stanzas before authentication. */
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "authenticate first");
    } else if (!s->session) {
        const xd_el_t *payload = xd_el_first_child(el);
        if (xd_iq_is_request(el) && payload && xd_el_is(payload, "bind", XD_NS_BIND))
            c2s_bind(c, st);
        else
            /* RFC 6120 7.1: nothing but binding before a resource is bound. */
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "bind a resource first");
    } else {
        if (xd_session_input(s->session, st) == XD_EINVAL) /* takes st */
            c2s_close(c, XD_STREAM_INVALID_FROM, "'from' does not match the bound JID");
        else
            c2s_sm_handled(c);
        return;
    }
    xd_stanza_unref(st);
}

/* ---- the session's transport ------------------------------------------------------------------ */

/* The client connection with `id` on the calling worker, or NULL. */
static xd_conn_t *
c2s_find(uint64_t id)
{
    xd_conn_t *c = c2s_conn_find(xd_worker_self(), id);
    return c && c->role == &xd_c2s_role ? c : NULL;
}

static int
c2s_ops_deliver(uint64_t id, const xd_stanza_t *st)
{
    xd_conn_t *c = c2s_find(id);
    if (!c)
        return c2s_sm_parked_deliver(id, st);
    if (c->state != C2S_OPEN || !c2s_of(c)->session)
        return XD_ENOTFOUND;
    c2s_send_stanza(c, st);
    c2s_sm_sent(c, st);
    return 0;
}

static void
c2s_ops_close(uint64_t id, xd_stream_cond cond, const char *text)
{
    xd_conn_t *c = c2s_find(id);
    if (c)
        c2s_close(c, cond, text);
    else
        c2s_sm_parked_close(id, cond, text);
}

static int
c2s_ops_info(uint64_t id, xd_session_stats_t *out)
{
    xd_conn_t *c = c2s_find(id);
    if (!c) {
        xd_worker_t *w = xd_worker_self();
        return w && c2s_sm_parked_info(id, uv_now(xd_worker_loop(w)), out) ? 0 : XD_ENOTFOUND;
    }
    out->idle_ms = uv_now(c->tcp.loop) - c->last_input_ms;
    out->secure = c2s_secure(c);
    return 0;
}

static xd_session_t *
c2s_ops_session(uint64_t id)
{
    xd_conn_t *c = c2s_find(id);
    return c ? c2s_of(c)->session : c2s_sm_parked_session(id);
}

static const xd_session_ops_t xd_c2s_ops = {
    .name = "c2s",
    .deliver = c2s_ops_deliver,
    .close = c2s_ops_close,
    .info = c2s_ops_info,
    .session = c2s_ops_session,
};

const xd_session_ops_t *
xd_c2s_session_ops(void)
{
    return &xd_c2s_ops;
}

/* ---- lifetime --------------------------------------------------------------------------------- */

static void
c2s_delay_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    c2s_sasl_delay_done(arg);
}

static void
c2s_accepted(xd_conn_t *c)
{
    c2s_t *s = xd_new(c2s_t);
    s->conn = c;
    s->delay = xd_timer_new(c->ws->worker, c2s_delay_fired, c);
    c->rs = s;
}

static void
c2s_closing(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    if (s->delay)
        xd_timer_stop(s->delay);
    /* A client that stopped answering (idle or ping timeout) may come back
     * and resume (XEP-0198 5); any other close ends the session. */
    if (c->error_sent && c->close_cond == XD_STREAM_CONNECTION_TIMEOUT && c2s_sm_detach(c))
        return;
    /* The session ends now, not when the socket is finally closed. */
    xd_session_end(s->session, "closed");
    s->session = NULL;
    c2s_sm_end(c); /* after: what the client did not acknowledge finds another way */
}

static void
c2s_closed(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    if (!s)
        return;
    /* The peer went away without closing its stream: with resumption
     * enabled the session waits for it (XEP-0198 5), else it ends. */
    if (!c2s_sm_detach(c))
        xd_session_end(s->session, "disconnected");
    s->session = NULL;
    c2s_sm_end(c);
    if (s->delay)
        xd_timer_free(s->delay);
    xd_sasl_free(s->sasl);
    c2s_sasl2_free(c);
    if (s->jid)
        xd_jid_unref(s->jid);
    xd_free(s->pending_failure);
    xd_free(s->tried_user);
    xd_free(s);
    c->rs = NULL;
}

const xd_conn_role_t xd_c2s_role = {
    .name = "c2s",
    .content_ns = XD_NS_CLIENT,
    .accepted = c2s_accepted,
    .stream_open = c2s_stream_open,
    .element = c2s_element,
    .closing = c2s_closing,
    .closed = c2s_closed,
};
