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
 *                          (xd_session_input, router/session.h)
 *
 * What stays here is the wire: header checks, features, STARTTLS and SASL
 * (c2s_sasl.c), registration before authentication (register.c), and the
 * session's transport: xd_c2s_ops delivers stanzas to the connection,
 * closes it and tells how idle it is.  Server pings (XEP-0199 4.2) run from
 * the connection sweep.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/c2s.h"
#include "stream/c2s_int.h"

#include "mod/mod_basic.h"
#include "router/session.h"
#include "stream/sasl.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/caps.h"
#include "xmppd/conds.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

static const xd_session_ops_t xd_c2s_ops;

/* ---- features ------------------------------------------------------------------------------- */

static void
c2s_send_features(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    char buf[2048];
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
            if (c2s_register_offered(c))
                ADD("<register xmlns='" XD_NS_REGISTER_FEAT "'/>");
        }
    } else if (!s->session) {
        ADD("<bind xmlns='" XD_NS_BIND "'/>"
            "<session xmlns='" XD_NS_SESSION "'><optional/></session>");
        char ver[29];
        if (xd_disco_host_caps(c->host, ver) == 0)
            /* XEP-0115 6.3: the server's capabilities, so the client need
             * not ask each time. */
            ADD("<c xmlns='" XD_NS_CAPS "' hash='sha-1' node='" XD_CAPS_NODE "' ver='%s'/>", ver);
        xd_config_t *cfg = xd_config_get();
        if (xd_config_module(cfg, c->host, "mod_roster"))
            /* XEP-0237 and RFC 6121 3.4 */
            ADD("<ver xmlns='" XD_NS_ROSTERVER "'/><sub xmlns='" XD_NS_PRE_APPROVAL "'/>");
        xd_config_unref(cfg);
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

static void
c2s_bind(xd_conn_t *c, const xd_stanza_t *st)
{
    c2s_t *s = c2s_of(c);
    xd_session_bind_req_t req = {
        .ref = { .ops = &xd_c2s_ops, .worker = xd_worker_index(c->ws->worker), .id = c->id },
        .user = s->jid,
        .host = c->host,
        .ip = c->ip,
        .log = &c->log,
        .now_ms = uv_now(c->tcp.loop),
    };
    xd_stanza_t *reply = xd_session_bind_iq(&req, st, &s->session);
    if (s->session) {
        xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s jid=%s", (unsigned long long)c->id, c->ip,
                   xd_jid_full_str(s->session->jid).p);
        XD_LOG(&c->log, XD_NOTICE, "session bound", "worker=%u",
               xd_worker_index(c->ws->worker));
        c2s_established(c); /* the handshake timer becomes the idle timer */
    }
    c2s_send_stanza(c, reply);
    xd_stanza_unref(reply);
}

/* ---- elements --------------------------------------------------------------------------------- */

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
    } else if (xd_stanza_kind_of(el) == XD_STANZA_OTHER) {
        /* RFC 6120 4.9.3.24: a first-level element we do not understand. */
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
    } else if (!s->authenticated) {
        const xd_el_t *payload = xd_el_first_child(el);
        const char *to = xd_el_attr(el, "to");
        if (xd_stanza_kind_of(el) == XD_STANZA_IQ && (!to || !strcmp(to, c->host)) && payload &&
            xd_el_is(payload, "query", XD_NS_REGISTER))
            /* XEP-0077 3.1: registration before authentication. */
            c2s_register_iq(c, st, payload);
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
        const xd_el_t *payload = xd_el_first_child(el);
        const char *to = xd_el_attr(el, "to");
        bool to_server = !to || !strcmp(to, c->host) ||
                         xd_str_eq_c(xd_jid_bare_str(s->session->jid), to);
        if (xd_iq_is_request(el) && to_server && payload &&
            xd_el_is(payload, "query", XD_NS_REGISTER))
            c2s_register_iq(c, st, payload); /* XEP-0077 3.2, 3.3 */
        else if (xd_session_input(s->session, st) == XD_EINVAL)
            c2s_close(c, XD_STREAM_INVALID_FROM, "'from' does not match the bound JID");
    }
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
    if (!c || c->state != C2S_OPEN || !c2s_of(c)->session)
        return XD_ENOTFOUND;
    c2s_send_stanza(c, st);
    return 0;
}

static void
c2s_ops_close(uint64_t id, xd_stream_cond cond, const char *text)
{
    xd_conn_t *c = c2s_find(id);
    if (c)
        c2s_close(c, cond, text);
}

static int
c2s_ops_info(uint64_t id, xd_session_stats_t *out)
{
    xd_conn_t *c = c2s_find(id);
    if (!c)
        return XD_ENOTFOUND;
    out->idle_ms = uv_now(c->tcp.loop) - c->last_input_ms;
    out->secure = c2s_secure(c);
    return 0;
}

static const xd_session_ops_t xd_c2s_ops = {
    .name = "c2s",
    .deliver = c2s_ops_deliver,
    .close = c2s_ops_close,
    .info = c2s_ops_info,
};

/* ---- server pings (XEP-0199 4.2) -------------------------------------------------------------- */

/* mod_ping's options of one host, cached per worker for one configuration. */
static _Thread_local struct {
    const xd_config_t *cfg;  /* the configuration they were read from (not a reference) */
    unsigned gen;            /* bumped when cfg changes */
    char host[XD_JID_PART_MAX + 1];
    xd_ping_conf_t conf;
} c2s_ping_cache[8];

static void
c2s_ping_conf(const char *host, xd_ping_conf_t *out)
{
    xd_config_t *cfg = xd_config_get();
    size_t slot = 0;
    for (size_t i = 0; i < 8; i++) {
        if (c2s_ping_cache[i].cfg == cfg && !strcmp(c2s_ping_cache[i].host, host)) {
            *out = c2s_ping_cache[i].conf;
            xd_config_unref(cfg);
            return;
        }
        if (c2s_ping_cache[i].cfg != cfg)
            slot = i;
    }
    xd_mod_ping_conf(cfg, host, out);
    c2s_ping_cache[slot].cfg = cfg;
    snprintf(c2s_ping_cache[slot].host, sizeof c2s_ping_cache[slot].host, "%s", host);
    c2s_ping_cache[slot].conf = *out;
    xd_config_unref(cfg);
}

/* Clients silent for ping_interval get a ping; any input answers it; no
 * input within ping_ack_timeout closes the stream when the host says
 * timeout_action: kill. */
static void
c2s_sweep(xd_conn_t *c, uint64_t now)
{
    c2s_t *s = c2s_of(c);
    if (!s->session)
        return;
    xd_ping_conf_t p;
    c2s_ping_conf(c->host, &p);
    if (!p.send_pings)
        return;
    if (s->ping_sent_ms && c->last_input_ms >= s->ping_sent_ms) {
        s->ping_sent_ms = 0; /* it said something: alive */
    } else if (s->ping_sent_ms) {
        if (p.kill && now - s->ping_sent_ms >= p.ack_timeout_ms)
            c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "no answer to ping");
        return;
    }
    if (now - c->last_input_ms >= p.interval_ms) {
        /* Built, not printed: a resource may hold quotes. */
        char id[40];
        snprintf(id, sizeof id, "xd-ping-%llu", (unsigned long long)now);
        xd_el_t *iq = xd_el_new("iq", NULL);
        xd_el_set_attr(iq, "type", "get");
        xd_el_set_attr(iq, "id", id);
        xd_el_set_attr(iq, "from", c->host);
        xd_el_set_attr(iq, "to", xd_jid_full_str(s->session->jid).p);
        xd_el_add_child(iq, "ping", XD_NS_PING);
        xd_stanza_t *st = xd_el_freeze(iq);
        c2s_send_stanza(c, st);
        xd_stanza_unref(st);
        s->ping_sent_ms = now;
    }
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
    /* The session ends now, not when the socket is finally closed. */
    xd_session_end(s->session, "closed");
    s->session = NULL;
}

static void
c2s_closed(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    if (!s)
        return;
    xd_session_end(s->session, "disconnected"); /* the peer went away first */
    if (s->delay)
        xd_timer_free(s->delay);
    xd_sasl_free(s->sasl);
    if (s->jid)
        xd_jid_unref(s->jid);
    xd_free(s->pending_failure);
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
    .sweep = c2s_sweep,
};
