/*
 * s2s_out.c — outgoing server-to-server streams (RFC 6120 4, 5, 6;
 * XEP-0178, XEP-0220, XEP-0368), one per route (local, remote).
 *
 *   resolve (resolve.h) ─► happy-eyeballs connect ─► [direct TLS]
 *   ─► header ─► features ─► STARTTLS ─► TLS ─► header ─► features
 *   ─► send the dialback verifications incoming streams asked for
 *   ─► SASL EXTERNAL (when offered) ─► restart ─► features ─► UP
 *      or <db:result/> with our key (XEP-0185) ─► type='valid' ─► UP
 *
 * Until the connection exists the attempt lives on its worker's list with
 * its own connect timer (s2s_connect_timeout); afterwards it is the role
 * state of an xd_conn_t, whose handshake timer is the same timeout.  A
 * failure before UP makes the route bounce what it queued: remote-server-
 * timeout when the time ran out, remote-server-not-found otherwise.
 *
 * Certificates: with s2s_verify_certificates the receiving server's
 * certificate must verify for the remote domain; otherwise it is checked
 * and logged, and dialback (which authenticates us, not them) is allowed.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "s2s/resolve.h"
#include "s2s/s2s_int.h"
#include "stream/wstate.h"
#include "xmppd/alloc.h"
#include "xmppd/base64.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"
#include "xml/parse.h"

typedef struct s2s_out {
    struct s2s_out *prev, *next;   /* the worker's attempts without a connection */
    xd_worker_t *w;                /* owner */
    char local[S2S_DOMAIN_MAX];    /* our domain */
    char remote[S2S_DOMAIN_MAX];   /* theirs */
    xd_resolve_req_t *req;         /* resolving */
    xd_connect_t *race;            /* connecting */
    xd_timer_t *timer;             /* the connect timeout before the connection exists */
    xd_conn_t *c;                  /* the connection, once there */
    uint64_t started_ms;           /* loop time of the start */
    bool direct_tls;               /* XEP-0368 connection */
    bool peer_v1;                  /* the peer's header says version 1.x */
    bool peer_dialback;            /* the peer offered dialback (feature, or no version) */
    bool ready;                    /* secure (or allowed plain) and features seen: may send */
    bool sasl_tried;               /* EXTERNAL was attempted */
    bool sasl_ok;                  /* ... and succeeded: the next features mean UP */
    bool dialback_sent;            /* our <db:result/> is out */
    bool up;                       /* authenticated: the route is UP */
    char peer_id[128];             /* the id of the peer's stream header */
    s2s_verify_t *sent;            /* verifications sent, waiting for their answers */
    struct out_mux *mux;           /* other local domains on this stream (multiplexing) */
    bool failed;                   /* fail is set */
    xd_cond fail;                  /* why it failed (else decided at close) */
} s2s_out_t;

/* Another local domain authenticated (or being so) on the stream. */
typedef struct out_mux {
    struct out_mux *next;
    struct s2s_out *o;     /* the stream it joined */
    char local[S2S_DOMAIN_MAX];
    bool up;               /* its <db:result/> came back valid */
    xd_timer_t *timer;     /* until then: the answer's deadline (s2s_connect_timeout) */
} out_mux_t;

typedef struct s2s_worker {
    xd_resolve_ctx_t *res;         /* created at the first attempt */
    xd_config_t *applied;          /* the configuration whose s2s_hosts are applied */
    s2s_out_t *pending;            /* attempts without a connection */
} s2s_worker_t;

static xd_listener_t out_listener = {
    .name = "s2s-out",
    .module = XD_LISTEN_S2S,
    .max_connections = 10000,
    .max_stanza_bytes = 131072,
    .max_queue_bytes = (size_t)4 << 20, /* as s2s listeners (listen: max_queue) */
    .handshake_timeout_ms = 20000,
    .idle_timeout_ms = 600000,
};

xd_listener_t *
s2s_out_listener(void)
{
    return &out_listener;
}

static s2s_worker_t *
out_sw(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    return ws ? ws->s2s : NULL;
}

void
s2s_out_worker_start(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    if (ws && !ws->s2s)
        ws->s2s = xd_new(s2s_worker_t);
}

static void out_fail_early(s2s_out_t *o, xd_cond cond);

void
s2s_out_worker_stop(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    s2s_worker_t *sw = ws ? ws->s2s : NULL;
    if (!sw)
        return;
    while (sw->pending)
        out_fail_early(sw->pending, XD_COND_REMOTE_SERVER_NOT_FOUND);
    if (sw->res)
        xd_resolve_free(sw->res);
    if (sw->applied)
        xd_config_unref(sw->applied);
    xd_free(sw);
    ws->s2s = NULL;
}

/* The worker's resolver, with the static routes of the configuration in
 * force (re-applied when it changed). */
static xd_resolve_ctx_t *
out_resolver(xd_worker_t *w)
{
    s2s_worker_t *sw = out_sw(w);
    if (!sw)
        return NULL;
    xd_config_t *cfg = xd_config_get();
    if (!cfg)
        return NULL;
    if (!sw->res) {
        xd_resolve_opts_t ro = { .servers = cfg->s2s_dns_servers };
        int rc = xd_resolve_new(xd_worker_loop(w), &ro, &sw->res);
        if (rc != 0) {
            XD_LOG(NULL, XD_ERROR, "s2s resolver failed", "err=%s", xd_strerror(rc));
            xd_config_unref(cfg);
            return NULL;
        }
    }
    if (sw->applied != cfg) {
        xd_resolve_clear_static(sw->res);
        const xd_conf_node_t *h = cfg->s2s_hosts;
        for (size_t i = 0; h && h->kind == XD_CONF_MAP && i < h->count; i++)
            if (h->items[i]->kind == XD_CONF_SCALAR)
                xd_resolve_set_static(sw->res, h->keys[i]->value, h->items[i]->value);
        if (sw->applied)
            xd_config_unref(sw->applied);
        sw->applied = xd_config_ref(cfg);
    }
    xd_config_unref(cfg);
    return sw->res;
}

/* ---- before the connection ----------------------------------------------------------------- */

static void
out_unlink(s2s_out_t *o)
{
    s2s_worker_t *sw = out_sw(o->w);
    if (o->prev)
        o->prev->next = o->next;
    else if (sw && sw->pending == o)
        sw->pending = o->next;
    if (o->next)
        o->next->prev = o->prev;
    o->prev = o->next = NULL;
}

static void
out_free(s2s_out_t *o)
{
    for (out_mux_t *m = o->mux, *n; m; m = n) {
        n = m->next;
        if (m->timer)
            xd_timer_free(m->timer);
        xd_free(m);
    }
    for (s2s_verify_t *v = o->sent, *n; v; v = n) {
        n = v->next;
        s2s_verify_answer(v, o->local, o->remote, XD_DIALBACK_ERROR);
        xd_free(v);
    }
    xd_free(o);
}

static void
out_fail_early(s2s_out_t *o, xd_cond cond)
{
    out_unlink(o);
    if (o->req)
        xd_resolve_cancel(o->req);
    if (o->race)
        xd_connect_cancel(o->race);
    if (o->timer)
        xd_timer_free(o->timer);
    XD_LOG(NULL, XD_NOTICE, "s2s connect failed", "local=%s remote=%s cond=%s", o->local,
           o->remote, xd_cond_name(cond));
    s2s_route_down(o->local, o->remote, 0, cond);
    out_free(o);
}

/* A resolve or connect step failed with status: a timeout is
 * remote-server-timeout, anything else remote-server-not-found. */
static void
out_fail_status(s2s_out_t *o, const char *step, int status)
{
    XD_LOG(NULL, XD_INFO, "s2s step failed", "step=%s remote=%s err=%s", step, o->remote,
           xd_strerror(status));
    out_fail_early(o, status == XD_ETIMEDOUT ? XD_COND_REMOTE_SERVER_TIMEOUT
                                             : XD_COND_REMOTE_SERVER_NOT_FOUND);
}

static void
out_on_timeout(xd_timer_t *t, void *arg)
{
    (void)t;
    out_fail_early(arg, XD_COND_REMOTE_SERVER_TIMEOUT);
}

static void out_header(s2s_out_t *o);

static void
out_connected(void *arg, int status, uv_tcp_t *tcp, const xd_resolve_cand_t *won, size_t index)
{
    (void)index;
    s2s_out_t *o = arg;
    o->race = NULL;
    if (status != 0) {
        out_fail_status(o, "connect", status);
        return;
    }
    /* The connection embeds its own handle: adopt a duplicate of the fd. */
    uv_os_fd_t fd = -1;
    int nfd = uv_fileno((uv_handle_t *)tcp, &fd) == 0 ? dup(fd) : -1;
    xd_connect_tcp_close(tcp);
    char where[96];
    xd_resolve_cand_str(won, where, sizeof where);
    out_unlink(o);
    xd_timer_free(o->timer);
    o->timer = NULL;
    xd_conn_t *c = nfd >= 0 ? c2s_conn_open(o->w, nfd, &out_listener, &s2s_out_role, o) : NULL;
    if (!c) {
        s2s_route_down(o->local, o->remote, 0, XD_COND_REMOTE_SERVER_NOT_FOUND);
        out_free(o);
        return;
    }
    o->c = c;
    o->direct_tls = won->direct_tls;
    c->host = xd_strdup(o->local);
    xd_log_ctx(&c->log, NULL, "conn=%llu s2s-out local=%s remote=%s", (unsigned long long)c->id,
               o->local, o->remote);
    XD_LOG(&c->log, XD_INFO, "s2s connected", "to=%s host=%s tls=%s", where, won->host,
           won->direct_tls ? "direct" : "starttls");
    s2s_route_attach(o->local, o->remote, c->id);
    if (o->direct_tls)
        c2s_tls_client(c, o->local, o->remote, "xmpp-server"); /* header on tls_up */
    else
        out_header(o);
}

static void
out_resolved(void *arg, int status, const xd_resolve_cand_t *cands, size_t count)
{
    s2s_out_t *o = arg;
    o->req = NULL;
    if (status != 0) {
        out_fail_status(o, "resolve", status);
        return;
    }
    s2s_conf_t conf;
    s2s_conf(&conf);
    xd_connect_opts_t co = { .timeout_ms = conf.connect_timeout_ms };
    int rc = xd_connect_start(xd_worker_loop(o->w), cands, count, &co, out_connected, o,
                              &o->race);
    if (rc != 0)
        out_fail_early(o, XD_COND_REMOTE_SERVER_NOT_FOUND);
}

void
s2s_out_begin(xd_worker_t *w, const char *local, const char *remote)
{
    s2s_worker_t *sw = out_sw(w);
    xd_resolve_ctx_t *res = out_resolver(w);
    s2s_out_t *o = xd_new(s2s_out_t);
    o->w = w;
    snprintf(o->local, sizeof o->local, "%s", local);
    snprintf(o->remote, sizeof o->remote, "%s", remote);
    o->started_ms = uv_now(xd_worker_loop(w));
    if (!sw || !res) {
        s2s_route_down(local, remote, 0, XD_COND_REMOTE_SERVER_NOT_FOUND);
        xd_free(o);
        return;
    }
    o->next = sw->pending;
    if (sw->pending)
        sw->pending->prev = o;
    sw->pending = o;
    s2s_conf_t conf;
    s2s_conf(&conf);
    o->timer = xd_timer_new(w, out_on_timeout, o);
    xd_timer_start(o->timer, conf.connect_timeout_ms, 0);
    XD_LOG(NULL, XD_INFO, "s2s connecting", "local=%s remote=%s", local, remote);
    if (xd_resolve_domain(res, remote, out_resolved, o, &o->req) != 0)
        out_fail_early(o, XD_COND_REMOTE_SERVER_NOT_FOUND);
}

/* ---- the stream ---------------------------------------------------------------------------- */

static void
out_header(s2s_out_t *o)
{
    char buf[2 * S2S_DOMAIN_MAX + 256];
    /* RFC 6120 4.7: the initiating entity sends from and to, no id. */
    int n = snprintf(buf, sizeof buf,
                     "<?xml version='1.0'?><stream:stream xmlns='" XD_NS_SERVER "' "
                     "xmlns:db='" XD_NS_DIALBACK "' xmlns:stream='" XD_NS_STREAMS "' "
                     "from='%s' to='%s' version='1.0'>",
                     o->local, o->remote);
    c2s_write(o->c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    o->c->header_sent = true;
}

/* Closes the stream; the route fails with cond. */
static void
out_close(s2s_out_t *o, xd_cond cond, xd_stream_cond scond, const char *text)
{
    if (!o->failed) {
        o->failed = true;
        o->fail = cond;
    }
    XD_LOG(&o->c->log, XD_NOTICE, "s2s failed", "reason=\"%s\"", text ? text : "");
    c2s_close(o->c, scond, text);
}

/* Sends the verifications waiting on the route (local, remote). */
static void
out_send_verifies_of(s2s_out_t *o, const char *local)
{
    for (s2s_verify_t *v = s2s_route_take_verifies(local, o->remote), *n; v; v = n) {
        n = v->next;
        xd_dialback_t d = { .kind = XD_DIALBACK_VERIFY, .type = XD_DIALBACK_REQUEST,
                            .from = local, .to = o->remote, .id = v->id,
                            .key = xd_str_c(v->key) };
        s2s_send_el(o->c, xd_dialback_build(&d));
        v->next = o->sent;
        o->sent = v;
    }
}

/* ... of the stream's own route and of the domains that joined it. */
static void
out_send_verifies(s2s_out_t *o)
{
    if (!o->ready)
        return;
    out_send_verifies_of(o, o->local);
    for (out_mux_t *m = o->mux; m; m = m->next)
        out_send_verifies_of(o, m->local);
}

void
s2s_out_kick(xd_worker_t *w, uint64_t conn_id)
{
    xd_conn_t *c = c2s_conn_find(w, conn_id);
    if (c && c->role == &s2s_out_role && c->state == C2S_OPEN)
        out_send_verifies(c->rs);
}

/* A joining domain's <db:result/> was not answered in time: it gets a
 * stream of its own. */
static void
out_mux_timeout(xd_timer_t *t, void *arg)
{
    (void)t;
    out_mux_t *m = arg;
    s2s_out_t *o = m->o;
    for (out_mux_t **pp = &o->mux; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    char local[S2S_DOMAIN_MAX];
    snprintf(local, sizeof local, "%s", m->local);
    xd_timer_free(m->timer);
    xd_free(m);
    XD_LOG(&o->c->log, XD_INFO, "s2s multiplexing unanswered", "local=%s", local);
    s2s_route_unmux(o->w, local, o->remote);
}

void
s2s_out_mux(xd_worker_t *w, uint64_t conn_id, const char *local, const char *remote)
{
    xd_conn_t *c = c2s_conn_find(w, conn_id);
    s2s_out_t *o = c && c->role == &s2s_out_role && c->state == C2S_OPEN ? c->rs : NULL;
    char key[XD_DIALBACK_KEY_LEN + 1];
    if (!o || !o->up || !o->peer_dialback || strcmp(o->remote, remote) != 0 ||
        s2s_key(o->remote, local, o->peer_id, key) != 0) {
        s2s_route_unmux(w, local, remote); /* no stream to join after all */
        return;
    }
    out_mux_t *m = xd_new(out_mux_t);
    snprintf(m->local, sizeof m->local, "%s", local);
    m->o = o;
    s2s_conf_t conf;
    s2s_conf(&conf);
    m->timer = xd_timer_new(w, out_mux_timeout, m);
    xd_timer_start(m->timer, conf.connect_timeout_ms, 0);
    m->next = o->mux;
    o->mux = m;
    xd_dialback_t d = { .kind = XD_DIALBACK_RESULT, .type = XD_DIALBACK_REQUEST,
                        .from = local, .to = o->remote, .key = xd_str_c(key) };
    s2s_send_el(c, xd_dialback_build(&d));
    XD_LOG(&c->log, XD_INFO, "s2s domain joining", "local=%s", local);
    out_send_verifies_of(o, local); /* any that waited on the new route */
}

static void
out_up(s2s_out_t *o, const char *auth)
{
    o->up = true;
    c2s_established(o->c);
    XD_LOG(&o->c->log, XD_NOTICE, "s2s established", "auth=%s", auth);
    s2s_route_up(o->local, o->remote, o->c, auth, o->peer_dialback);
    out_send_verifies(o);
}

static void
out_dialback(s2s_out_t *o)
{
    char key[XD_DIALBACK_KEY_LEN + 1];
    if (s2s_key(o->remote, o->local, o->peer_id, key) != 0) {
        out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_UNDEFINED_CONDITION,
                  "no stream id to build a dialback key from");
        return;
    }
    xd_dialback_t d = { .kind = XD_DIALBACK_RESULT, .type = XD_DIALBACK_REQUEST,
                        .from = o->local, .to = o->remote, .key = xd_str_c(key) };
    s2s_send_el(o->c, xd_dialback_build(&d));
    o->dialback_sent = true;
}

/* How we authenticate: SASL EXTERNAL when offered (and not yet tried),
 * else dialback when the peer and the policy allow it. */
static void
out_authenticate(s2s_out_t *o, bool external_offered)
{
    s2s_conf_t conf;
    s2s_conf(&conf);
    if (external_offered && o->c->tls && !o->sasl_tried) {
        o->sasl_tried = true;
        char b64[2 * S2S_DOMAIN_MAX];
        xd_base64_encode(o->local, strlen(o->local), b64, 0);
        char buf[sizeof b64 + 128];
        int n = snprintf(buf, sizeof buf,
                         "<auth xmlns='" XD_NS_SASL "' mechanism='EXTERNAL'>%s</auth>", b64);
        c2s_write(o->c, buf, (size_t)n);
        return;
    }
    if (conf.dialback && o->peer_dialback && !o->dialback_sent) {
        out_dialback(o);
        return;
    }
    out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_POLICY_VIOLATION,
              "no authentication method both servers accept");
}

static void
out_features(s2s_out_t *o, const xd_el_t *feats)
{
    xd_conn_t *c = o->c;
    s2s_conf_t conf;
    s2s_conf(&conf);
    if (o->sasl_ok) {
        out_up(o, "sasl"); /* the features after the SASL restart */
        return;
    }
    if (xd_el_child(feats, "dialback", XD_NS_DIALBACK_FEAT))
        o->peer_dialback = true;
    if (!c->tls) {
        if (xd_el_child(feats, "starttls", XD_NS_TLS)) {
            c2s_write(c, "<starttls xmlns='" XD_NS_TLS "'/>",
                      sizeof "<starttls xmlns='" XD_NS_TLS "'/>" - 1);
            return;
        }
        if (conf.require_encryption) {
            out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_POLICY_VIOLATION,
                      "the remote server does not offer TLS");
            return;
        }
    } else {
        xd_tls_peer_result_t pr;
        bool ok = xd_tls_peer_verify(c->tls, o->remote, &pr) == 0 && pr.status == XD_TLS_PEER_OK;
        XD_LOG(&c->log, ok ? XD_INFO : XD_NOTICE, "s2s peer certificate", "status=%s reason=\"%s\"",
               ok ? "ok" : xd_tls_peer_status_name(pr.status), ok ? "ok" : pr.reason);
        if (conf.verify_certificates && !ok) {
            out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_POLICY_VIOLATION,
                      "the remote server's certificate does not verify");
            return;
        }
    }
    o->ready = true;
    out_send_verifies(o);
    bool external = false;
    const xd_el_t *mechs = xd_el_child(feats, "mechanisms", XD_NS_SASL);
    for (const xd_el_t *m = mechs ? xd_el_first_child(mechs) : NULL; m; m = xd_el_next(m))
        if (xd_el_is(m, "mechanism", XD_NS_SASL) && xd_el_text(m) &&
            !strcmp(xd_el_text(m), "EXTERNAL"))
            external = true;
    out_authenticate(o, external);
}

static void
out_stream_open(xd_conn_t *c, const xd_el_t *hdr)
{
    s2s_out_t *o = c->rs;
    const char *dns = xd_xml_parser_stream_ns(c->parser);
    if (strcmp(xd_el_name(hdr), "stream") != 0 || !xd_el_ns(hdr) ||
        strcmp(xd_el_ns(hdr), XD_NS_STREAMS) != 0 || !dns || strcmp(dns, XD_NS_SERVER) != 0) {
        out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_INVALID_NAMESPACE,
                  "expected a jabber:server stream");
        return;
    }
    const char *id = xd_el_attr(hdr, "id");
    snprintf(o->peer_id, sizeof o->peer_id, "%s", id ? id : "");
    const char *v = xd_el_attr(hdr, "version");
    o->peer_v1 = v && v[0] == '1' && v[1] == '.';
    c->state = C2S_OPEN;
    if (!o->peer_v1) {
        /* A server older than RFC 6120: no features, dialback only. */
        s2s_conf_t conf;
        s2s_conf(&conf);
        o->peer_dialback = true;
        if (conf.require_encryption) {
            out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_POLICY_VIOLATION,
                      "the remote server does not offer TLS");
            return;
        }
        o->ready = true;
        out_send_verifies(o);
        out_authenticate(o, false);
    }
}

static void
out_tls_up(xd_conn_t *c)
{
    out_header(c->rs);
}

/* <db:result/> and <db:verify/> answers. */
static void
out_dialback_answer(s2s_out_t *o, const xd_el_t *el)
{
    xd_dialback_t d;
    if (xd_dialback_parse(el, &d) != 0 || d.type == XD_DIALBACK_REQUEST) {
        out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_INVALID_XML,
                  "unexpected dialback element");
        return;
    }
    if (d.kind == XD_DIALBACK_VERIFY) {
        for (s2s_verify_t **pp = &o->sent; *pp; pp = &(*pp)->next) {
            s2s_verify_t *v = *pp;
            if (d.id && !strcmp(v->id, d.id)) {
                *pp = v->next;
                s2s_verify_answer(v, o->local, o->remote, d.type);
                xd_free(v);
                return;
            }
        }
        XD_LOG(&o->c->log, XD_INFO, "unexpected db:verify answer", "id=%s", d.id ? d.id : "");
        return;
    }
    if (strcmp(d.from, o->remote) == 0 && strcmp(d.to, o->local) != 0) {
        /* For a domain that joined the stream (multiplexing). */
        for (out_mux_t **pp = &o->mux; *pp; pp = &(*pp)->next) {
            out_mux_t *m = *pp;
            if (m->up || strcmp(m->local, d.to) != 0)
                continue;
            if (m->timer) {
                xd_timer_free(m->timer);
                m->timer = NULL;
            }
            if (d.type == XD_DIALBACK_VALID) {
                m->up = true;
                XD_LOG(&o->c->log, XD_NOTICE, "s2s domain added", "local=%s auth=dialback",
                       m->local);
                s2s_route_up(m->local, o->remote, o->c, "dialback-mux", false);
            } else {
                char local[S2S_DOMAIN_MAX];
                snprintf(local, sizeof local, "%s", m->local);
                *pp = m->next;
                xd_free(m);
                XD_LOG(&o->c->log, XD_INFO, "s2s multiplexing refused", "local=%s", local);
                s2s_route_unmux(o->w, local, o->remote);
            }
            return;
        }
    }
    if (!o->dialback_sent || strcmp(d.from, o->remote) != 0 || strcmp(d.to, o->local) != 0) {
        XD_LOG(&o->c->log, XD_INFO, "unexpected db:result answer", "from=%s to=%s", d.from, d.to);
        return;
    }
    if (d.type == XD_DIALBACK_VALID)
        out_up(o, "dialback");
    else
        out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_NOT_AUTHORIZED,
                  "the remote server refused our dialback key");
}

static void
out_element_lent(xd_conn_t *c, xd_stanza_t *st)
{
    s2s_out_t *o = c->rs;
    const xd_el_t *el = xd_stanza_root(st);
    const char *name = xd_el_name(el), *ns = xd_el_ns(el);
    if (ns && !strcmp(ns, XD_NS_STREAMS) && !strcmp(name, "features")) {
        out_features(o, el);
    } else if (ns && !strcmp(ns, XD_NS_STREAMS) && !strcmp(name, "error")) {
        const xd_el_t *first = xd_el_first_child(el);
        if (!o->failed) {
            o->failed = true;
            o->fail = XD_COND_REMOTE_SERVER_NOT_FOUND;
        }
        XD_LOG(&c->log, XD_NOTICE, "s2s stream error received", "cond=%s",
               first ? xd_el_name(first) : "?");
    } else if (ns && !strcmp(ns, XD_NS_TLS) && !strcmp(name, "proceed")) {
        /* RFC 6120 5.4.3.3: the next bytes are TLS, then a new stream. */
        if (!c2s_tls_client(c, o->local, o->remote, NULL))
            return;
        xd_xml_parser_reset(c->parser);
        c->starttls_go = true;
        c->state = C2S_HEADER;
        c->header_sent = false;
    } else if (ns && !strcmp(ns, XD_NS_TLS)) {
        out_close(o, XD_COND_REMOTE_SERVER_NOT_FOUND, XD_STREAM_UNDEFINED_CONDITION,
                  "STARTTLS failed");
    } else if (ns && !strcmp(ns, XD_NS_SASL) && !strcmp(name, "success")) {
        o->sasl_ok = true;
        xd_xml_parser_reset(c->parser);
        c->restart = true;
        c->state = C2S_HEADER;
        out_header(o);
    } else if (ns && !strcmp(ns, XD_NS_SASL) && !strcmp(name, "failure")) {
        XD_LOG(&c->log, XD_INFO, "sasl external refused", "");
        out_authenticate(o, false);
    } else if (ns && !strcmp(ns, XD_NS_DIALBACK)) {
        out_dialback_answer(o, el);
    } else {
        /* Stanzas on our outgoing stream: not without XEP-0288. */
        XD_LOG(&c->log, XD_INFO, "element ignored on an outgoing stream", "name=%s", name);
    }
}

static void
out_closed(xd_conn_t *c)
{
    s2s_out_t *o = c->rs;
    if (!o)
        return;
    xd_cond cond = o->fail;
    if (!o->failed) {
        uint64_t now = uv_now(xd_worker_loop(o->w));
        s2s_conf_t conf;
        s2s_conf(&conf);
        cond = !o->up && now - o->started_ms + 100 >= conf.connect_timeout_ms
                   ? XD_COND_REMOTE_SERVER_TIMEOUT
                   : XD_COND_REMOTE_SERVER_NOT_FOUND;
    }
    XD_LOG(&c->log, XD_INFO, "s2s stream ended", "was_up=%s", o->up ? "yes" : "no");
    s2s_route_down(o->local, o->remote, c->id, cond);
    for (out_mux_t *m = o->mux; m; m = m->next)
        s2s_route_down(m->local, o->remote, c->id, cond);
    c->rs = NULL;
    out_free(o);
}

/* An outgoing stream only negotiates; its elements are not passed on. */
static void
out_element(xd_conn_t *c, xd_stanza_t *st)
{
    out_element_lent(c, st);
    xd_stanza_unref(st);
}

const xd_conn_role_t s2s_out_role = {
    .name = "s2s-out",
    .content_ns = XD_NS_SERVER,
    .dialback_ns = true,
    .initiator = true,
    .stream_open = out_stream_open,
    .element = out_element,
    .tls_up = out_tls_up,
    .closed = out_closed,
};
