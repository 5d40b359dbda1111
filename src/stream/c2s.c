/*
 * c2s.c — client-to-server streams (RFC 6120 4–7).
 *
 * One xd_conn_t per TCP connection, owned by the worker that accepted it.
 * The stream goes through the stages of RFC 6120 9.1 (client-to-server
 * example), each starting with a new stream header and its features:
 *
 *   [direct TLS handshake]                          (listener tls: true)
 *   header ─► features: STARTTLS (+ SASL unless starttls_required)
 *     <starttls/> ─► <proceed/> ─► TLS handshake ─► header ─► features: SASL
 *     <auth/> … <success/> ─► header ─► features: bind, session
 *     <iq><bind/></iq> ─► bound: stanzas flow (routing: the routing issue)
 *
 * Stream states (c->state):
 *
 *   HEADER ──valid header──► OPEN ──stream restart (TLS, SASL)──► HEADER
 *     │                        │
 *     │ bad header, bad XML,   │ bad XML, stanza before auth/bind, timeout,
 *     │ handshake timeout      │ kick, server stop, peer </stream>, TLS error
 *     ▼                        ▼
 *   CLOSING: our header (if not yet sent), <stream:error/>, </stream:stream>
 *            written (through TLS when on), close_notify, write side shut
 *            down; read and discard until the peer closes or the linger
 *            timer fires ──► uv_close ──► freed in c2s_on_close
 *
 * Input path: socket ─► [TLS] ─► c2s_input() ─► XML parser ─► handlers.
 * While an answer from the auth backend is outstanding, or a SASL failure
 * is being delayed, the stream is "blocked": the parser is paused after the
 * element being handled, unconsumed plaintext is kept in c->inbuf, TLS
 * delivery is paused and reading stops, so memory stays bounded.  Unblocking
 * feeds c->inbuf first, then the TLS engine's queue, then reads again.
 *
 * A connection is never freed inside its own callbacks: everything goes
 * through uv_close, whose callback frees it (libuv rule, STYLE.md 3.7 R5).
 * Asynchronous auth answers reach a connection through a c2s_op_t that the
 * connection detaches when it closes first.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "stream/c2s.h"
#include "core/secret.h"
#include "stream/c2s_int.h"

#include "mod/mod_basic.h"
#include "router/carbons.h"
#include "router/router.h"
#include "router/sm.h"
#include "stream/sasl.h"
#include "stream/tls.h"
#include "stream/wstate.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/auth.h"
#include "xmppd/caps.h"
#include "xmppd/cmd.h"
#include "xmppd/conds.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"
#include "xml/parse.h"

#define C2S_LINGER_MS 2000          /* wait for the peer's </stream:stream> */
#define C2S_SHUTDOWN_LINGER_MS 500  /* shorter while the server stops */
#define C2S_MAX_WRITE_QUEUE (4u << 20) /* bytes queued to a client that does not read */
#define C2S_SWEEP_MS 1000          /* how often idle connections are looked at */
#define C2S_TRIM_IDLE_MS 2000      /* silence after which a parser is trimmed */
#define C2S_TRIM_RELEASE 256       /* trimmed parsers in one sweep that call malloc_trim */
#define C2S_MAX_DIRECTED 128     /* directed-presence recipients remembered per session */
#define C2S_MAX_PROTO_FAILURES 10 /* SASL failures without a credential check per stream */
#define C2S_SASL_B64_MAX (((XD_SASL_MSG_MAX + 2) / 3) * 4) /* base64 of the longest message */

static _Atomic uint64_t c2s_next_id = 1;

static void c2s_directed_unavailable(xd_conn_t *c);



/* The certificate store for STARTTLS and direct TLS, replaced on reload. */
static uv_mutex_t c2s_tls_lock;
static uv_once_t c2s_tls_once = UV_ONCE_INIT;
static xd_tls_store_t *c2s_tls_store;

static int c2s_input(xd_conn_t *c, const char *p, size_t n);

/* ---- connections by id (per worker) ------------------------------------------------------- */

static size_t
byid_slot(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ULL) >> 20) & (cap - 1);
}

static void
byid_put(xd_wstate_t *ws, xd_conn_t *c)
{
    if ((ws->byid_n + 1) * 2 > ws->byid_cap) {
        size_t ncap = ws->byid_cap ? ws->byid_cap * 2 : 64;
        xd_conn_t **nt = xd_calloc(ncap, sizeof *nt);
        for (size_t i = 0; i < ws->byid_cap; i++) {
            xd_conn_t *o = ws->byid[i];
            if (!o)
                continue;
            size_t j = byid_slot(o->id, ncap);
            while (nt[j])
                j = (j + 1) & (ncap - 1);
            nt[j] = o;
        }
        xd_free(ws->byid);
        ws->byid = nt;
        ws->byid_cap = ncap;
    }
    size_t j = byid_slot(c->id, ws->byid_cap);
    while (ws->byid[j])
        j = (j + 1) & (ws->byid_cap - 1);
    ws->byid[j] = c;
    ws->byid_n++;
}

static xd_conn_t *
byid_get(xd_wstate_t *ws, uint64_t id)
{
    if (!ws->byid_cap)
        return NULL;
    for (size_t j = byid_slot(id, ws->byid_cap); ws->byid[j]; j = (j + 1) & (ws->byid_cap - 1))
        if (ws->byid[j]->id == id)
            return ws->byid[j];
    return NULL;
}

static void
byid_del(xd_wstate_t *ws, xd_conn_t *c)
{
    if (!ws->byid_cap)
        return;
    size_t mask = ws->byid_cap - 1, j = byid_slot(c->id, ws->byid_cap);
    while (ws->byid[j] && ws->byid[j] != c)
        j = (j + 1) & mask;
    if (!ws->byid[j])
        return;
    ws->byid[j] = NULL;
    ws->byid_n--;
    /* Re-insert the rest of the cluster (linear probing deletion). */
    for (size_t k = (j + 1) & mask; ws->byid[k]; k = (k + 1) & mask) {
        xd_conn_t *o = ws->byid[k];
        ws->byid[k] = NULL;
        size_t s = byid_slot(o->id, ws->byid_cap);
        while (ws->byid[s])
            s = (s + 1) & mask;
        ws->byid[s] = o;
    }
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct {
    uv_write_t req;
    size_t len;
    char data[]; /* a copy: the caller's buffer may go away */
} c2s_wreq_t;

static void
c2s_on_write(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows up as a read error or EOF */
    xd_free(req->data);
}

/* Bytes to the socket, copied. */
static int
c2s_write_raw(xd_conn_t *c, const void *data, size_t len)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp) || c->shut)
        return XD_ECLOSED;
    c2s_wreq_t *w = xd_malloc(sizeof *w + len);
    memcpy(w->data, data, len);
    w->len = len;
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, c2s_on_write);
    if (rc != 0) {
        xd_free(w);
        return rc;
    }
    return 0;
}

static int
c2s_tls_send(void *ud, const uint8_t *data, size_t len)
{
    return c2s_write_raw(ud, data, len);
}

/* Stream bytes to the client: through TLS once it is up. */
void
c2s_write(xd_conn_t *c, const char *data, size_t len)
{
    if (c->tls) {
        /* Nothing plaintext may cross a TLS connection; before the
         * handshake has finished there is nothing to say. */
        if (xd_tls_handshake_done(c->tls) && !c->shut && !uv_is_closing((uv_handle_t *)&c->tcp))
            xd_tls_send(c->tls, (const uint8_t *)data, len);
    } else {
        c2s_write_raw(c, data, len);
    }
    /* A client that does not read must not make us buffer without end. */
    if (c->state != C2S_CLOSING &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > C2S_MAX_WRITE_QUEUE) {
        XD_LOG(&c->log, XD_WARN, "write queue full", "bytes=%zu",
               uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp));
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "the client does not read its stream");
    }
}

static void
c2s_write_str(xd_conn_t *c, const char *s)
{
    c2s_write(c, s, strlen(s));
}

void
c2s_send_stanza(xd_conn_t *c, const xd_stanza_t *st)
{
    size_t len;
    const char *b = xd_stanza_bytes(st, &len);
    c2s_write(c, b, len);
}

/* ---- reading control ------------------------------------------------------------------------ */

static void c2s_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void c2s_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void
c2s_read_start(xd_conn_t *c)
{
    if (c->reading || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, c2s_alloc, c2s_on_read) == 0)
        c->reading = true;
}

static void
c2s_read_stop(xd_conn_t *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void
c2s_on_close(uv_handle_t *h)
{
    xd_conn_t *c = (xd_conn_t *)h;
    xd_wstate_t *ws = c->ws;
    if (c->prev)
        c->prev->next = c->next;
    else
        ws->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ws->nconns--;
    byid_del(ws, c);
    atomic_fetch_sub(&c->listener->connections, 1);
    if (c->bound) {
        /* Closed without passing c2s_finish (the peer went away). */
        xd_sm_unbind(c->jid, c->id);
        if (c->available) {
            xd_hook_presence_t pev = { .host = c->host, .jid = c->jid, .presence = NULL };
            xd_hook_run(XD_HOOK_USER_UNAVAILABLE, c->host, &pev);
        }
        c2s_directed_unavailable(c);
        xd_hook_session_t sev = { .host = c->host, .jid = c->jid, .reason = "disconnected" };
        xd_hook_run(XD_HOOK_SESSION_CLOSED, c->host, &sev);
    }
    c->bound = false;
    if (c->role && c->role->closed)
        c->role->closed(c);
    if (c->op)
        c->op->c = NULL; /* the answer will find nobody */
    if (c->parser)
        xd_xml_parser_free(c->parser);
    if (c->tls)
        xd_tls_free(c->tls);
    xd_sasl_free(c->sasl);
    if (c->jid)
        xd_jid_unref(c->jid);
    for (size_t i = 0; i < c->ndirected; i++)
        xd_free(c->directed[i]);
    xd_free(c->directed);
    xd_free(c->inbuf);
    xd_free(c->pending_failure);
    xd_free(c->host);
    XD_LOG(&c->log, XD_INFO, "connection closed", "");
    xd_free(c);
}

static void
c2s_destroy(xd_conn_t *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->timer) {
        xd_timer_free(c->timer);
        c->timer = NULL;
    }
    if (c->delay) {
        xd_timer_free(c->delay);
        c->delay = NULL;
    }
    c->reading = false;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, c2s_on_close);
}

static void
c2s_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    xd_free(req);
}

/* Our side is closed: shut down writing once the queue drains, then wait
 * up to linger_ms for the peer to close its side (RFC 6120 4.4). */
static void
c2s_finish(xd_conn_t *c, uint64_t linger_ms)
{
    c->state = C2S_CLOSING;
    if (c->bound) {
        /* The session ends now, not when the socket is finally closed. */
        xd_sm_unbind(c->jid, c->id);
        c->bound = false;
        if (c->available) {
            c->available = false;
            xd_hook_presence_t pev = { .host = c->host, .jid = c->jid, .presence = NULL };
            xd_hook_run(XD_HOOK_USER_UNAVAILABLE, c->host, &pev);
        }
        c2s_directed_unavailable(c);
        xd_hook_session_t sev = { .host = c->host, .jid = c->jid, .reason = "closed" };
        xd_hook_run(XD_HOOK_SESSION_CLOSED, c->host, &sev);
    }
    if (c->tls)
        xd_tls_shutdown(c->tls);
    uv_shutdown_t *sreq = xd_malloc(sizeof *sreq);
    if (uv_shutdown(sreq, (uv_stream_t *)&c->tcp, c2s_on_shutdown) == 0)
        c->shut = true;
    else
        xd_free(sreq);
    if (c->delay)
        xd_timer_stop(c->delay);
    /* Keep reading (and discarding) so the peer's close is seen. */
    c->blocked = false;
    c2s_read_start(c);
    if (c->timer)
        xd_timer_start(c->timer, linger_ms, 0);
    else
        c2s_destroy(c);
}

static void
c2s_on_timer(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_conn_t *c = arg;
    if (c->state == C2S_CLOSING) {
        c2s_destroy(c); /* the peer never closed its side */
        return;
    }
    if (!c->bound && !c->established)
        /* RFC 6120 4.9.3.4: no bound session within the handshake time. */
        c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "handshake timeout");
    else
        c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "idle timeout");
}

/* Input arrived: the idle timer starts over (once bound). */
static void
c2s_touch(xd_conn_t *c)
{
    if ((c->bound || c->established) && c->state != C2S_CLOSING &&
        c->listener->idle_timeout_ms && c->timer)
        xd_timer_start(c->timer, c->listener->idle_timeout_ms, 0);
}

/* ---- stream header and errors ----------------------------------------------------------------- */

static void
c2s_new_sid(xd_conn_t *c)
{
    unsigned char rnd[16];
    if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(c->sid + 2 * i, 3, "%02x", rnd[i]);
}

void
c2s_send_header_as(xd_conn_t *c, const char *from, const char *to_attr, bool no_version)
{
    if (!from)
        from = c->host;
    if (!from) {
        xd_config_t *cfg = xd_config_get();
        c->host = xd_strdup(xd_config_default_host(cfg));
        xd_config_unref(cfg);
        from = c->host;
    }
    const char *ns = c->role ? c->role->content_ns : XD_NS_CLIENT;
    bool db = c->role && c->role->dialback_ns;
    char buf[1400];
    int n = snprintf(buf, sizeof buf,
                     "<?xml version='1.0'?>"
                     "<stream:stream xmlns='%s' %s"
                     "xmlns:stream='http://etherx.jabber.org/streams' "
                     "id='%s' from='%s'%s%s%s%s xml:lang='%s'>",
                     ns, db ? "xmlns:db='" XD_NS_DIALBACK "' " : "", c->sid, from,
                     to_attr ? " to='" : "", to_attr ? to_attr : "", to_attr ? "'" : "",
                     no_version ? "" : " version='1.0'", c->lang[0] ? c->lang : "en");
    c2s_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    c->header_sent = true;
}

static void
c2s_send_header(xd_conn_t *c, const char *to_attr)
{
    c2s_send_header_as(c, NULL, to_attr, false);
}

void
c2s_established(xd_conn_t *c)
{
    c->established = true;
    if (c->timer) {
        if (c->listener->idle_timeout_ms)
            xd_timer_start(c->timer, c->listener->idle_timeout_ms, 0);
        else
            xd_timer_stop(c->timer);
    }
}

/* Sends the error and closes our side (RFC 6120 4.9.1.1); if no header went
 * out yet, one goes first (RFC 6120 4.9.1.2). */
void
c2s_close(xd_conn_t *c, xd_stream_cond cond, const char *text)
{
    if (c->state == C2S_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->tls && !xd_tls_handshake_done(c->tls)) {
        /* Nothing can be said inside an unfinished TLS handshake. */
        XD_LOG(&c->log, XD_INFO, "stream closed", "cond=%s text=\"%s\" stage=tls-handshake",
               xd_stream_cond_name(cond), text ? text : "");
        c->state = C2S_CLOSING;
        c2s_destroy(c);
        return;
    }
    if (!c->header_sent)
        c2s_send_header(c, NULL);
    char buf[1024];
    int n = xd_stream_error_format(buf, sizeof buf, cond, text);
    c->state = C2S_CLOSING; /* before the write: a full queue must not recurse */
    c2s_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    XD_LOG(&c->log, XD_INFO, "stream error sent", "cond=%s text=\"%s\"",
           xd_stream_cond_name(cond), text ? text : "");
    c2s_finish(c, c->ws->stopping ? C2S_SHUTDOWN_LINGER_MS : C2S_LINGER_MS);
}

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

/* ---- features ------------------------------------------------------------------------------- */

bool
c2s_secure(const xd_conn_t *c)
{
    return c->tls && xd_tls_handshake_done(c->tls);
}

static bool
c2s_mech_disabled(const xd_host_conf_t *hc, const char *name)
{
    for (size_t i = 0; i < hc->disable_sasl_mechanisms.count; i++)
        if (strcasecmp(hc->disable_sasl_mechanisms.items[i], name) == 0)
            return true;
    return false;
}

static bool
c2s_authz(void *arg, const xd_jid_t *user, const xd_jid_t *authzid)
{
    xd_conn_t *c = arg;
    (void)authzid;
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    bool ok = hc && xd_access_match(cfg, c->host, hc->sasl_authzid_access, user,
                                    (const struct sockaddr *)&c->peer) == XD_ACCESS_ALLOW;
    xd_config_unref(cfg);
    return ok;
}

static int
c2s_cb_data(void *arg, xd_sasl_cb type, uint8_t *out, size_t cap, size_t *out_len)
{
    xd_conn_t *c = arg;
    if (!c2s_secure(c))
        return XD_ENOTSUP;
    xd_tls_cb_type t = type == XD_SASL_CB_TLS_EXPORTER   ? XD_TLS_CB_EXPORTER
                       : type == XD_SASL_CB_TLS_UNIQUE ? XD_TLS_CB_UNIQUE
                                                       : XD_TLS_CB_SERVER_END_POINT;
    return xd_tls_channel_binding(c->tls, t, out, cap, out_len);
}

/* The client's certificate chain verifies against the trust store (the
 * identities are matched when the client authenticates). */
static bool
c2s_client_cert_ok(xd_conn_t *c)
{
    xd_tls_peer_result_t r;
    return c->tls && xd_tls_peer_verify(c->tls, NULL, &r) == 0 && r.status == XD_TLS_PEER_OK;
}

/* A fresh SASL engine for this stage, with the mechanisms the host, the
 * auth backend and the TLS state allow. */
static void
c2s_sasl_setup(xd_conn_t *c)
{
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    unsigned mechs = 0, need_tls = 0;
    bool secure = c2s_secure(c);
    if (hc) {
        if (hc->auth_method == XD_AUTH_ANONYMOUS) {
            mechs |= XD_SASL_BIT(XD_SASL_ANONYMOUS);
        } else {
            if (xd_auth_supports_scram(c->host))
                mechs |= XD_SASL_MECHS_SCRAM | (secure ? XD_SASL_MECHS_SCRAM_PLUS : 0);
            if (secure || hc->allow_unencrypted_plain_auth)
                mechs |= XD_SASL_BIT(XD_SASL_PLAIN);
            else
                need_tls |= XD_SASL_BIT(XD_SASL_PLAIN);
            if (secure && c->listener->tls_verify && c2s_client_cert_ok(c))
                mechs |= XD_SASL_BIT(XD_SASL_EXTERNAL); /* XEP-0178 */
        }
        for (int m = 0; m < XD_SASL_MECH_COUNT; m++)
            if ((mechs & XD_SASL_BIT(m)) && c2s_mech_disabled(hc, xd_sasl_mech_name(m)))
                mechs &= ~XD_SASL_BIT(m);
    }
    unsigned cb = 0;
    if (secure) {
        if (xd_tls_cb_available(c->tls, XD_TLS_CB_EXPORTER))
            cb |= XD_SASL_CB_BIT(XD_SASL_CB_TLS_EXPORTER);
        if (xd_tls_cb_available(c->tls, XD_TLS_CB_SERVER_END_POINT))
            cb |= XD_SASL_CB_BIT(XD_SASL_CB_TLS_SERVER_END_POINT);
        if (xd_tls_cb_available(c->tls, XD_TLS_CB_UNIQUE))
            cb |= XD_SASL_CB_BIT(XD_SASL_CB_TLS_UNIQUE);
    }
    xd_sasl_opts_t o = {
        .host = c->host,
        .mechs = mechs,
        .mechs_need_tls = need_tls,
        .cb_types = cb,
        .cb_data = c2s_cb_data,
        .authz = c2s_authz,
        .arg = c,
        .fake_iterations = hc ? (unsigned)hc->scram_iterations : 0,
        .secret = xd_node_secret(), /* stable fake salts for unknown users */
    };
    xd_sasl_free(c->sasl);
    c->sasl = xd_sasl_new(&o);
    xd_config_unref(cfg);
}

static void
c2s_send_features(xd_conn_t *c)
{
    char buf[2048];
    size_t len = 0;
#define ADD(...) \
    len += (size_t)snprintf(buf + len, len < sizeof buf ? sizeof buf - len : 0, __VA_ARGS__)
    ADD("<stream:features>");
    if (!c->authenticated) {
        bool secure = c2s_secure(c);
        if (!secure && c->listener->starttls)
            ADD("<starttls xmlns='" XD_NS_TLS "'>%s</starttls>",
                c->listener->starttls_required ? "<required/>" : "");
        if (secure || !c->listener->starttls_required) {
            c2s_sasl_setup(c);
            const char *const *mechs = xd_sasl_mechanisms(c->sasl);
            if (mechs[0]) {
                ADD("<mechanisms xmlns='" XD_NS_SASL "'>");
                for (size_t i = 0; mechs[i]; i++)
                    ADD("<mechanism>%s</mechanism>", mechs[i]);
                ADD("</mechanisms>");
            }
            unsigned cb = xd_sasl_cb_offered(c->sasl);
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
    } else if (!c->bound) {
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

static void
c2s_stream_open(void *ud, const xd_el_t *hdr)
{
    xd_conn_t *c = ud;
    if (c->state != C2S_HEADER)
        return;
    const char *lang = xd_el_attr(hdr, "xml:lang");
    if (lang && strlen(lang) < sizeof c->lang && !strpbrk(lang, "'<&\""))
        strcpy(c->lang, lang);
    if (c->role && c->role->initiator) {
        c->role->stream_open(c, hdr); /* the answer to our header */
        return;
    }
    c2s_new_sid(c);
    c->header_sent = false;
    if (c->role) {
        c->role->stream_open(c, hdr);
        return;
    }

    /* The host comes first so that an error header carries the right 'from'. */
    const char *to = xd_el_attr(hdr, "to");
    char *host = NULL;
    xd_config_t *cfg = xd_config_get();
    bool served = to && xd_jid_prep_domain(xd_str_c(to), &host) == 0 &&
                  xd_config_is_host(cfg, host);
    xd_config_unref(cfg);
    if (served && c->host && strcmp(c->host, host) != 0 && (c2s_secure(c) || c->authenticated)) {
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
        c2s_send_header(c, xd_jid_full_str(fj).p);
        xd_jid_unref(fj);
    } else {
        c2s_send_header(c, NULL);
    }
    if (!c->authenticated)
        xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s host=%s", (unsigned long long)c->id, c->ip,
                   c->host);
    c->state = C2S_OPEN;
    /* RFC 6120 4.3.2: features follow the header. */
    c2s_send_features(c);
}

/* ---- STARTTLS (RFC 6120 5) --------------------------------------------------------------------- */

static int c2s_tls_plain(void *ud, const uint8_t *data, size_t len);
static void c2s_tls_handshake(void *ud);

static void
c2s_tls_lock_init(void)
{
    uv_mutex_init(&c2s_tls_lock);
}

xd_tls_store_t *
c2s_tls_store_get(void)
{
    uv_once(&c2s_tls_once, c2s_tls_lock_init);
    uv_mutex_lock(&c2s_tls_lock);
    xd_tls_store_t *st = c2s_tls_store ? xd_tls_store_ref(c2s_tls_store) : NULL;
    uv_mutex_unlock(&c2s_tls_lock);
    return st;
}

void
xd_c2s_set_tls_store(xd_tls_store_t *st)
{
    uv_once(&c2s_tls_once, c2s_tls_lock_init);
    uv_mutex_lock(&c2s_tls_lock);
    xd_tls_store_t *old = c2s_tls_store;
    c2s_tls_store = st;
    uv_mutex_unlock(&c2s_tls_lock);
    xd_tls_store_unref(old);
}

/* The TLS engine's callbacks for connection c. */
static xd_tls_io_t
c2s_tls_io(xd_conn_t *c)
{
    return (xd_tls_io_t){
        .ud = c,
        .send = c2s_tls_send,
        .plain = c2s_tls_plain,
        .handshake = c2s_tls_handshake,
    };
}

/* Starts the server side of TLS on c; false (and c closed) on failure. */
static bool
c2s_tls_begin(xd_conn_t *c, const char *default_host)
{
    xd_tls_store_t *st = c2s_tls_store_get();
    if (!st) {
        c2s_close(c, XD_STREAM_INTERNAL_SERVER_ERROR, "TLS is not available");
        return false;
    }
    xd_tls_io_t io = c2s_tls_io(c);
    int rc = xd_tls_server_new(st, default_host, &io, &c->tls);
    xd_tls_store_unref(st); /* the connection holds its own reference */
    if (rc == 0 && ((c->role && c->role->request_cert) || (!c->role && c->listener->tls_verify)))
        rc = xd_tls_request_cert(c->tls);
    if (rc == 0 && c->role && c->role->request_cert && c->listener->tls)
        rc = xd_tls_set_alpn(c->tls, "xmpp-server"); /* XEP-0368 */
    if (rc != 0) {
        c2s_close(c, XD_STREAM_INTERNAL_SERVER_ERROR, "TLS is not available");
        return false;
    }
    return true;
}

static void
c2s_tls_handshake(void *ud)
{
    xd_conn_t *c = ud;
    XD_LOG(&c->log, XD_INFO, "tls established", "version=%s cipher=%s sni=%s",
           xd_tls_version(c->tls), xd_tls_cipher(c->tls),
           xd_tls_sni(c->tls) ? xd_tls_sni(c->tls) : "-");
    if (c->role && c->role->tls_up)
        c->role->tls_up(c);
}

static int
c2s_tls_plain(void *ud, const uint8_t *data, size_t len)
{
    xd_conn_t *c = ud;
    return c2s_input(c, (const char *)data, len);
}

void
c2s_starttls(xd_conn_t *c, const xd_el_t *el)
{
    (void)el;
    if (c2s_secure(c) || c->tls || c->authenticated || !c->listener->starttls) {
        /* RFC 6120 5.4.2.2: STARTTLS where it was not offered. */
        c2s_write_str(c, "<failure xmlns='" XD_NS_TLS "'/>");
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "STARTTLS is not offered here");
        return;
    }
    if (!c2s_tls_begin(c, c->host))
        return;
    c2s_write_raw(c, "<proceed xmlns='" XD_NS_TLS "'/>", sizeof "<proceed xmlns='" XD_NS_TLS "'/>" - 1);
    /* RFC 6120 5.4.3.3: the old stream is gone; the next bytes are TLS. */
    xd_xml_parser_reset(c->parser);
    c->starttls_go = true;
    c->state = C2S_HEADER;
    c->header_sent = false;
}

/* ---- SASL (RFC 6120 6) -------------------------------------------------------------------------- */

static void c2s_sasl_result(xd_conn_t *c, const xd_sasl_result_t *r);
static void c2s_external(xd_conn_t *c, const xd_jid_t *authzid);

void
c2s_block(xd_conn_t *c)
{
    c->blocked = true;
    xd_xml_parser_pause(c->parser);
    c2s_read_stop(c);
}

c2s_op_t *
c2s_op_new(xd_conn_t *c)
{
    XD_ASSERT(!c->op);
    c2s_op_t *op = xd_new(c2s_op_t);
    op->c = c;
    c->op = op;
    return op;
}

/* Takes the connection back from an answered op; NULL when it is gone. */
xd_conn_t *
c2s_op_done(c2s_op_t *op)
{
    xd_conn_t *c = op->c;
    xd_free(op);
    if (c)
        c->op = NULL;
    return c;
}

static void
c2s_on_scram(void *arg, int status, const xd_scram_cred_t *cred)
{
    xd_conn_t *c = c2s_op_done(arg);
    if (!c || c->state == C2S_CLOSING)
        return;
    xd_sasl_result_t r;
    xd_sasl_provide_scram(c->sasl, status, cred, &r);
    c2s_sasl_result(c, &r);
}

static void
c2s_on_check(void *arg, int status, bool ok)
{
    xd_conn_t *c = c2s_op_done(arg);
    if (!c || c->state == C2S_CLOSING)
        return;
    xd_sasl_result_t r;
    xd_sasl_provide_check(c->sasl, status, ok, &r);
    c2s_sasl_result(c, &r);
}

static void
c2s_send_sasl(xd_conn_t *c, const char *name, const uint8_t *data, size_t len, bool has_data)
{
    size_t b64len = has_data ? 4 * ((len + 2) / 3) : 0;
    char *buf = xd_malloc(b64len + 128);
    int n = snprintf(buf, 128, "<%s xmlns='" XD_NS_SASL "'>", name);
    size_t off = (size_t)n;
    if (has_data && len == 0) {
        buf[off++] = '='; /* RFC 6120 6.4.2: empty data is "=" */
    } else if (has_data) {
        off += (size_t)EVP_EncodeBlock((unsigned char *)buf + off, data, (int)len);
    }
    off += (size_t)snprintf(buf + off, 64, "</%s>", name);
    c2s_write(c, buf, off);
    OPENSSL_cleanse(buf, off);
    xd_free(buf);
}

static void
c2s_on_delay(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_conn_t *c = arg;
    if (c->state == C2S_CLOSING || !c->pending_failure)
        return;
    c2s_write_str(c, c->pending_failure);
    xd_free(c->pending_failure);
    c->pending_failure = NULL;
    if (c->delayed_close) {
        /* RFC 6120 6.4.5: retries are limited; then the stream ends. */
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "too many authentication failures");
        return;
    }
    c2s_unblock(c);
}

static void
c2s_sasl_failure(xd_conn_t *c, const xd_sasl_result_t *r)
{
    char buf[512];
    if (r->text)
        snprintf(buf, sizeof buf,
                 "<failure xmlns='" XD_NS_SASL "'><%s/><text xml:lang='en'>%s</text></failure>",
                 xd_sasl_cond_name(r->cond), r->text);
    else
        snprintf(buf, sizeof buf, "<failure xmlns='" XD_NS_SASL "'><%s/></failure>",
                 xd_sasl_cond_name(r->cond));
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    uint64_t delay = hc ? hc->auth_failure_delay_ms : 0;
    unsigned max = hc ? (unsigned)hc->max_auth_failures : 3;
    xd_config_unref(cfg);
    /* Only attempts that tested credentials count against
     * max_auth_failures and are delayed: those are what password guessing
     * costs.  A client walking down the mechanism list (a channel-binding
     * type it cannot use, the 'y' flag, PLAIN as the last resort, as
     * slixmpp does) must not lose its connection on the way; such
     * failures have their own, looser cap. */
    bool counts = r->cond != XD_SASL_COND_ABORTED && c->sasl_checked;
    if (counts)
        c->auth_failures++;
    else if (r->cond != XD_SASL_COND_ABORTED)
        c->proto_failures++;
    c->sasl_checked = false;
    XD_LOG(&c->log, XD_NOTICE, "authentication failed",
           "mech=%s cond=%s user=%s failures=%u other_failures=%u",
           xd_sasl_mech_name(r->mech) ? xd_sasl_mech_name(r->mech) : "-",
           xd_sasl_cond_name(r->cond), r->user ? r->user : "-", c->auth_failures,
           c->proto_failures);
    c->delayed_close = c->auth_failures >= max || c->proto_failures >= C2S_MAX_PROTO_FAILURES;
    if (!counts || delay == 0) {
        c2s_write_str(c, buf);
        if (c->delayed_close)
            c2s_close(c, XD_STREAM_POLICY_VIOLATION, "too many authentication failures");
        return;
    }
    /* Slow down guessing: answer after the delay, reading nothing meanwhile. */
    c2s_block(c);
    xd_free(c->pending_failure);
    c->pending_failure = xd_strdup(buf);
    xd_timer_start(c->delay, delay, 0);
}

static void
c2s_sasl_success(xd_conn_t *c, const xd_sasl_result_t *r)
{
    xd_jid_t *jid = NULL;
    if (r->anonymous) {
        unsigned char rnd[12];
        char local[25];
        if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
            memset(rnd, 7, sizeof rnd);
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(local + 2 * i, 3, "%02x", rnd[i]);
        xd_jid_make(xd_str_c(local), xd_str_c(c->host), xd_str_c(""), &jid);
    } else if (r->jid) {
        jid = xd_jid_ref((xd_jid_t *)r->jid);
    }
    if (!jid) {
        xd_sasl_result_t f = *r;
        f.kind = XD_SASL_FAILURE;
        f.cond = XD_SASL_COND_TEMPORARY_AUTH_FAILURE;
        f.text = NULL;
        c2s_sasl_failure(c, &f);
        return;
    }
    /* The listener's access rule: who may log in here at all. */
    xd_config_t *cfg = xd_config_get();
    xd_access_t acc = xd_access_match(cfg, c->host, c->listener->access, jid,
                                      (const struct sockaddr *)&c->peer);
    xd_config_unref(cfg);
    if (acc != XD_ACCESS_ALLOW) {
        xd_jid_unref(jid);
        xd_sasl_result_t f = *r;
        f.kind = XD_SASL_FAILURE;
        f.cond = XD_SASL_COND_NOT_AUTHORIZED;
        f.text = "access denied by service policy";
        c2s_sasl_failure(c, &f);
        return;
    }
    c2s_send_sasl(c, "success", r->out, r->out_len, r->out != NULL);
    c->authenticated = true;
    c->anonymous = r->anonymous;
    c->jid = jid;
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s jid=%s", (unsigned long long)c->id, c->ip,
               xd_jid_full_str(jid).p);
    XD_LOG(&c->log, XD_NOTICE, "authenticated", "mech=%s cb=%s",
           xd_sasl_mech_name(r->mech),
           r->cb >= 0 ? xd_sasl_cb_name((xd_sasl_cb)r->cb) : "-");
    xd_sasl_free(c->sasl);
    c->sasl = NULL;
    /* RFC 6120 6.4.6: the client restarts the stream. */
    xd_xml_parser_reset(c->parser);
    c->restart = true;
    c->state = C2S_HEADER;
    c->header_sent = false;
}

static void
c2s_sasl_result(xd_conn_t *c, const xd_sasl_result_t *r)
{
    bool was_blocked = c->blocked;
    switch (r->kind) {
    case XD_SASL_CHALLENGE:
        c2s_send_sasl(c, "challenge", r->out, r->out_len, true);
        break;
    case XD_SASL_SUCCESS:
        c2s_sasl_success(c, r);
        break;
    case XD_SASL_FAILURE:
        c2s_sasl_failure(c, r);
        break;
    case XD_SASL_NEED_SCRAM: {
        c->sasl_checked = true;
        c2s_op_t *op = c2s_op_new(c);
        int rc = xd_auth_get_scram(c->host, r->user, r->hash, c2s_on_scram, op);
        if (rc != 0) {
            c2s_op_done(op);
            xd_sasl_result_t nr;
            xd_sasl_provide_scram(c->sasl, rc, NULL, &nr);
            c2s_sasl_result(c, &nr);
            return;
        }
        c2s_block(c);
        return;
    }
    case XD_SASL_NEED_CHECK: {
        c->sasl_checked = true;
        c2s_op_t *op = c2s_op_new(c);
        int rc = xd_auth_check_password(c->host, r->user, r->password, c2s_on_check, op);
        if (rc != 0) {
            c2s_op_done(op);
            xd_sasl_result_t nr;
            xd_sasl_provide_check(c->sasl, rc, false, &nr);
            c2s_sasl_result(c, &nr);
            return;
        }
        c2s_block(c);
        return;
    }
    case XD_SASL_NEED_EXTERNAL:
        c->sasl_checked = true;
        c2s_external(c, r->authzid); /* answers now, or blocks until the account check */
        return;
    case XD_SASL_NONE:
        break;
    }
    /* An answer from the backend ends the block it caused (unless a
     * failure delay or a close took over). */
    if (was_blocked && c->blocked && !c->pending_failure && c->state != C2S_CLOSING)
        c2s_unblock(c);
}

/* ---- SASL EXTERNAL with client certificates (XEP-0178) -------------------------------------- */

typedef struct c2s_ext_op {
    c2s_op_t op;   /* first: the connection's token */
    char jid[3100]; /* the one candidate whose account is being looked up */
} c2s_ext_op_t;

static void
c2s_on_external_exists(void *arg, int status, bool exists)
{
    c2s_ext_op_t *eo = arg;
    char jid[sizeof eo->jid];
    memcpy(jid, eo->jid, sizeof jid);
    xd_conn_t *c = c2s_op_done(&eo->op); /* frees eo */
    if (!c || c->state == C2S_CLOSING)
        return;
    xd_str_t id = xd_str_c(jid);
    xd_sasl_result_t nr;
    if (status != 0)
        xd_sasl_provide_external(c->sasl, status, NULL, 0, &nr);
    else if (!exists)
        xd_sasl_provide_external(c->sasl, XD_ENOTFOUND, NULL, 0, &nr);
    else
        xd_sasl_provide_external(c->sasl, 0, &id, 1, &nr);
    c2s_sasl_result(c, &nr);
}

/* NEED_EXTERNAL: the verified certificate's XmppAddr identities that are
 * accounts of this host (XEP-0178 3); with one candidate its account is
 * looked up (input is blocked meanwhile), several go to the engine as
 * they are (it asks for an authzid), none is not-authorized. */
static void
c2s_external(xd_conn_t *c, const xd_jid_t *authzid)
{
    xd_tls_id_t *ids = NULL;
    size_t n = 0;
    enum { MAXC = 8 };
    xd_str_t cand[MAXC];
    char store[MAXC][3100];
    size_t nc = 0;
    if (c2s_client_cert_ok(c) && xd_tls_peer_identities(c->tls, &ids, &n) == 0) {
        for (size_t i = 0; i < n && nc < MAXC; i++) {
            xd_jid_t *j = NULL;
            if (ids[i].type != XD_TLS_ID_XMPPADDR ||
                xd_jid_parse(xd_str_c(ids[i].value), &j) != 0)
                continue;
            bool ours = xd_jid_local(j).len && xd_jid_is_bare(j) &&
                        xd_str_eq_c(xd_jid_domain(j), c->host) &&
                        (!authzid || xd_jid_eq_bare(j, authzid));
            if (ours) {
                snprintf(store[nc], sizeof store[nc], "%s", xd_jid_bare_str(j).p);
                cand[nc] = xd_str_c(store[nc]);
                nc++;
            }
            xd_jid_unref(j);
        }
        xd_tls_ids_free(ids, n);
    }
    xd_sasl_result_t nr;
    if (nc != 1) {
        xd_sasl_provide_external(c->sasl, nc ? 0 : XD_ENOTFOUND, nc ? cand : NULL, nc, &nr);
        c2s_sasl_result(c, &nr);
        return;
    }
    xd_jid_t *j = NULL;
    xd_jid_parse(cand[0], &j);
    xd_str_t l = xd_jid_local(j);
    char user[1100];
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    xd_jid_unref(j);
    c2s_ext_op_t *eo = xd_new(c2s_ext_op_t);
    XD_ASSERT(!c->op);
    eo->op.c = c;
    c->op = &eo->op;
    snprintf(eo->jid, sizeof eo->jid, "%s", store[0]);
    if (xd_auth_user_exists(c->host, user, c2s_on_external_exists, eo) != 0) {
        c->op = NULL;
        xd_free(eo);
        xd_sasl_provide_external(c->sasl, XD_EINTERNAL, NULL, 0, &nr);
        c2s_sasl_result(c, &nr);
        return;
    }
    c2s_block(c);
}

/* Decodes base64 element text (RFC 6120 6.4.2: "=" is empty, nothing is
 * "no data").  Returns the length, or -1 for bad base64. */
static long
c2s_b64_decode(const char *in, size_t inlen, uint8_t *out, bool *present)
{
    *present = inlen > 0;
    if (inlen == 0)
        return 0;
    if (inlen == 1 && in[0] == '=')
        return 0;
    if (inlen % 4 != 0)
        return -1;
    for (size_t i = 0; i < inlen; i++) {
        char ch = in[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '+' || ch == '/' ||
                  (ch == '=' && i >= inlen - 2);
        if (!ok || (i == inlen - 2 && ch == '=' && in[inlen - 1] != '='))
            return -1;
    }
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)inlen);
    if (n < 0)
        return -1;
    if (in[inlen - 1] == '=')
        n--;
    if (in[inlen - 2] == '=')
        n--;
    return n;
}

static void
c2s_sasl_element(xd_conn_t *c, const xd_el_t *el)
{
    const char *name = xd_el_name(el);
    if (c->authenticated) {
        /* RFC 6120 6.4.6: no second authentication on a stream. */
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "the stream is already authenticated");
        return;
    }
    if (!c->sasl || (!c2s_secure(c) && c->listener->starttls_required)) {
        if (!strcmp(name, "auth")) {
            c2s_write_str(c, "<failure xmlns='" XD_NS_SASL "'><encryption-required/>"
                             "<text xml:lang='en'>use STARTTLS first</text></failure>");
            c2s_close(c, XD_STREAM_POLICY_VIOLATION, "TLS is required before authentication");
        } else {
            c2s_close(c, XD_STREAM_POLICY_VIOLATION, "no SASL exchange is in progress");
        }
        return;
    }
    xd_sasl_result_t r;
    if (!strcmp(name, "abort")) {
        xd_sasl_abort(c->sasl, &r);
        c2s_sasl_result(c, &r);
        return;
    }
    const char *text = xd_el_text(el);
    size_t tlen = text ? xd_el_text_len(el) : 0;
    uint8_t *data = NULL;
    long dlen = 0;
    bool present = false, bad = tlen > C2S_SASL_B64_MAX;
    if (!bad) {
        data = xd_malloc(tlen + 4);
        dlen = c2s_b64_decode(text ? text : "", tlen, data, &present);
        bad = dlen < 0;
    }
    if (bad) {
        xd_free(data);
        r = (xd_sasl_result_t){ .kind = XD_SASL_FAILURE, .cond = XD_SASL_COND_INCORRECT_ENCODING };
        xd_sasl_abort(c->sasl, NULL); /* the exchange is over */
        c2s_sasl_result(c, &r);
        return;
    }
    if (!strcmp(name, "auth")) {
        const char *mech = xd_el_attr(el, "mechanism");
        xd_sasl_start(c->sasl, xd_str_c(mech ? mech : ""), present ? data : NULL, (size_t)dlen,
                      &r);
    } else if (!strcmp(name, "response")) {
        xd_sasl_step(c->sasl, data, (size_t)dlen, &r);
    } else {
        xd_free(data);
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
        return;
    }
    OPENSSL_cleanse(data, (size_t)dlen);
    xd_free(data);
    c2s_sasl_result(c, &r);
}

/* ---- resource binding and session (RFC 6120 7, RFC 3921 3) -------------------------------------- */

void
c2s_send_iq_error(xd_conn_t *c, const xd_stanza_t *st, xd_cond cond, const char *text)
{
    xd_stanza_t *e = xd_stanza_error(st, cond, text);
    if (e) {
        c2s_send_stanza(c, e);
        xd_stanza_unref(e);
    }
}

/* Sends kick text to conn id on worker w (the replaced session). */


static void
c2s_bind(xd_conn_t *c, const xd_stanza_t *st, const xd_el_t *bind)
{
    if (c->bound) {
        /* RFC 6120 7.7.2.1 is silent on rebinding; one resource per stream. */
        c2s_send_iq_error(c, st, XD_COND_NOT_ALLOWED, "a resource is already bound");
        return;
    }
    const char *want = xd_el_child_text(bind, "resource", XD_NS_BIND);
    char *res = NULL;
    if (want && *want) {
        if (xd_jid_prep_resource(xd_str_c(want), &res) != 0) {
            /* RFC 6120 7.7.2.1 */
            c2s_send_iq_error(c, st, XD_COND_BAD_REQUEST, "the resource is not allowed");
            return;
        }
    }
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    int policy = hc ? hc->resource_conflict : XD_RESOURCE_REPLACE;
    xd_config_unref(cfg);

    xd_str_t local = xd_jid_local(c->jid), domain = xd_jid_domain(c->jid);
    xd_jid_t *full = NULL;
    for (int attempt = 0; attempt < 8; attempt++) {
        char gen[40];
        const char *r = res;
        if (!r) {
            /* RFC 6120 7.6.2.1: a server-generated resource, unique and
             * unguessable. */
            unsigned char rnd[8];
            if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
                memset(rnd, (int)attempt, sizeof rnd);
            snprintf(gen, sizeof gen, "xmppd-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                     rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
            r = gen;
        }
        if (xd_jid_make(local, domain, xd_str_c(r), &full) != 0) {
            xd_free(res);
            c2s_send_iq_error(c, st, XD_COND_BAD_REQUEST, "the resource is not allowed");
            return;
        }
        xd_sm_entry_t e = {
            .jid = full,
            .worker = xd_worker_index(c->ws->worker),
            .conn_id = c->id,
            .since_ms = uv_now(c->tcp.loop),
        };
        snprintf(e.ip, sizeof e.ip, "%s", c->ip);
        xd_sm_entry_t old = { 0 };
        int rc;
        if (res && policy == XD_RESOURCE_REPLACE) {
            rc = xd_sm_bind_replace(&e, &old);
            if (rc == 1) {
                /* RFC 6120 7.7.2.2 and 4.9.3.3: the old session ends. */
                c2s_post_close(old.worker, old.conn_id, XD_STREAM_CONFLICT,
                               "replaced by a new connection");
                xd_sm_entry_clear(&old);
            }
            rc = 0;
        } else {
            rc = xd_sm_bind(&e, &old);
            xd_sm_entry_clear(&old);
        }
        if (rc == 0)
            break;
        xd_jid_unref(full);
        full = NULL;
        if (rc != XD_EEXIST) {
            xd_free(res);
            c2s_send_iq_error(c, st, XD_COND_INTERNAL_SERVER_ERROR, NULL);
            return;
        }
        if (res && policy == XD_RESOURCE_REFUSE) {
            xd_free(res);
            c2s_send_iq_error(c, st, XD_COND_CONFLICT, "the resource is in use");
            return;
        }
        /* rename, or a generated resource that collided: try a new one. */
        xd_free(res);
        res = NULL;
    }
    xd_free(res);
    if (!full) {
        c2s_send_iq_error(c, st, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        return;
    }
    xd_jid_unref(c->jid);
    c->jid = full;
    c->bound = true;
    xd_el_t *reply = xd_iq_result_builder(st);
    xd_el_t *b = xd_el_add_child(reply, "bind", XD_NS_BIND);
    xd_el_add_text(xd_el_add_child(b, "jid", NULL), xd_jid_full_str(full).p);
    xd_stanza_t *rs = xd_el_freeze(reply);
    c2s_send_stanza(c, rs);
    xd_stanza_unref(rs);
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s jid=%s", (unsigned long long)c->id, c->ip,
               xd_jid_full_str(full).p);
    XD_LOG(&c->log, XD_NOTICE, "session bound", "worker=%u", xd_worker_index(c->ws->worker));
    xd_hook_session_t sev = { .host = c->host, .jid = c->jid, .reason = NULL };
    xd_hook_run(XD_HOOK_SESSION_BOUND, c->host, &sev);
    /* The handshake timer becomes the idle timer. */
    if (c->listener->idle_timeout_ms)
        xd_timer_start(c->timer, c->listener->idle_timeout_ms, 0);
    else
        xd_timer_stop(c->timer);
}

/* ---- stanzas ------------------------------------------------------------------------------------ */

/* XD_HOOK_PRESENCE_EDIT on an available presence being sent. */
static void
c2s_presence_edit(xd_conn_t *c, xd_el_t *presence)
{
    xd_hook_presence_edit_t ev = { .host = c->host, .jid = c->jid, .presence = presence };
    xd_hook_run(XD_HOOK_PRESENCE_EDIT, c->host, &ev);
}

/* Presence without 'to' is the session's own (RFC 6121 4.2, 4.5): it makes
 * the session available or unavailable and sets its priority.  Broadcast
 * to contacts comes with the roster. */
static void
c2s_own_presence(xd_conn_t *c, const xd_stanza_t *st, const xd_el_t *el)
{
    const char *type = xd_el_attr(el, "type");
    if (type && strcmp(type, "unavailable") != 0)
        return; /* subscriptions and probes: the roster's */
    int prio = 0;
    const char *p = xd_el_child_text(el, "priority", NULL);
    if (p) {
        long v = strtol(p, NULL, 10);
        prio = v < -128 ? -128 : v > 127 ? 127 : (int)v;
    }
    bool was = c->available;
    c->available = !type;
    bool first_nonneg = c->available && prio >= 0 && !(was && c->nonneg_seen);
    c->nonneg_seen = c->available && (first_nonneg || (was && c->nonneg_seen));
    /* What contacts and probes see: the presence from the full JID. */
    xd_el_t *e = xd_stanza_edit(st);
    xd_el_set_attr(e, "from", xd_jid_full_str(c->jid).p);
    if (!type)
        c2s_presence_edit(c, e);
    xd_stanza_t *stamped = xd_el_freeze(e);
    xd_sm_set_presence(c->jid, c->id, !type, prio, stamped);
    xd_hook_presence_t ev = { .host = c->host, .jid = c->jid, .presence = stamped,
                              .initial = !was, .first_nonneg = first_nonneg };
    if (c->available) {
        xd_hook_run(XD_HOOK_USER_AVAILABLE, c->host, &ev);
    } else if (was) {
        xd_hook_run(XD_HOOK_USER_UNAVAILABLE, c->host, &ev);
        c2s_directed_unavailable(c);
    }
    xd_stanza_unref(stamped);
}

/* RFC 6121 4.6: remembers whom the session sent directed available
 * presence to (forgets on directed unavailable), so that they learn when it
 * goes away.  Subscription presence is not directed presence. */
static void
c2s_track_directed(xd_conn_t *c, const xd_el_t *el, const char *to)
{
    const char *type = xd_el_attr(el, "type");
    if (type && strcmp(type, "unavailable") != 0)
        return;
    size_t i = 0;
    while (i < c->ndirected && strcmp(c->directed[i], to) != 0)
        i++;
    if (type) { /* unavailable: forget */
        if (i < c->ndirected) {
            xd_free(c->directed[i]);
            c->directed[i] = c->directed[--c->ndirected];
        }
        return;
    }
    if (i < c->ndirected || c->ndirected >= C2S_MAX_DIRECTED)
        return;
    c->directed = xd_realloc(c->directed, (c->ndirected + 1) * sizeof *c->directed);
    c->directed[c->ndirected++] = xd_strdup(to);
}

/* Unavailable presence to everyone who got directed presence, and forgets
 * them (the session went unavailable or is ending). */
static void
c2s_directed_unavailable(xd_conn_t *c)
{
    for (size_t i = 0; i < c->ndirected; i++) {
        xd_el_t *e = xd_el_new("presence", NULL);
        xd_el_set_attr(e, "from", xd_jid_full_str(c->jid).p);
        xd_el_set_attr(e, "to", c->directed[i]);
        xd_el_set_attr(e, "type", "unavailable");
        xd_route(xd_el_freeze(e));
        xd_free(c->directed[i]);
    }
    xd_free(c->directed);
    c->directed = NULL;
    c->ndirected = 0;
}

/* Stamps 'from' with the session's full JID when the client left it out,
 * resolves a missing 'to' (RFC 6120 10.3) and hands the stanza to the
 * router. */
static void
c2s_route_own(xd_conn_t *c, const xd_stanza_t *st, xd_stanza_kind kind)
{
    const xd_el_t *el = xd_stanza_root(st);
    const char *to = xd_el_attr(el, "to");
    if (!to && kind == XD_STANZA_PRESENCE) {
        c2s_own_presence(c, st, el);
        return;
    }
    if (to && kind == XD_STANZA_PRESENCE)
        c2s_track_directed(c, el, to);
    xd_el_t *e = xd_stanza_edit(st);
    xd_el_set_attr(e, "from", xd_jid_full_str(c->jid).p);
    if (kind == XD_STANZA_PRESENCE && !xd_el_attr(el, "type"))
        c2s_presence_edit(c, e);
    if (!to) {
        /* RFC 6120 10.3.1, 10.3.3: a message or IQ without 'to' is for the
         * sender's bare JID (an IQ is then answered by the server on the
         * account's behalf). */
        xd_str_t bare = xd_jid_bare_str(c->jid);
        char buf[3072];
        snprintf(buf, sizeof buf, "%.*s", (int)bare.len, bare.p);
        xd_el_set_attr(e, "to", buf);
    }
    xd_stanza_t *out = xd_el_freeze(e);
    if (kind == XD_STANZA_MESSAGE)
        xd_carbons_sent(out, c->jid);
    xd_route(out);
}

/* A stanza of a bound session: what the stream itself answers (binding,
 * session, ping, registration) and the rest to the router. */
static void
c2s_session_stanza(xd_conn_t *c, xd_stanza_t *st)
{
    const xd_el_t *el = xd_stanza_root(st);
    xd_stanza_kind kind = xd_stanza_kind_of(el);

    /* RFC 6120 8.1.2.1: 'from' is ours to stamp; a different one is spoofing. */
    const char *from = xd_el_attr(el, "from");
    if (from) {
        xd_jid_t *fj = NULL;
        bool ok = xd_jid_parse(xd_str_c(from), &fj) == 0 &&
                  (xd_jid_eq(fj, c->jid) || (xd_jid_is_bare(fj) && xd_jid_eq_bare(fj, c->jid)));
        if (fj)
            xd_jid_unref(fj);
        if (!ok) {
            c2s_close(c, XD_STREAM_INVALID_FROM, "'from' does not match the bound JID");
            return;
        }
    }
    if (kind == XD_STANZA_IQ) {
        const xd_el_t *payload = xd_el_first_child(el);
        const char *to = xd_el_attr(el, "to");
        bool to_server = !to || !strcmp(to, c->host) || xd_str_eq_c(xd_jid_bare_str(c->jid), to);
        if (xd_iq_is_request(el) && to_server && payload &&
            xd_el_is(payload, "session", XD_NS_SESSION)) {
            xd_stanza_t *r = xd_iq_result(st);
            c2s_send_stanza(c, r);
            xd_stanza_unref(r);
            return;
        }
        if (xd_iq_is_request(el) && to_server && payload && xd_el_is(payload, "bind", XD_NS_BIND)) {
            c2s_bind(c, st, payload);
            return;
        }
        if (xd_iq_is_request(el) && to_server && payload &&
            xd_el_is(payload, "query", XD_NS_REGISTER)) {
            c2s_register_iq(c, st, payload);
            return;
        }
        if (!xd_el_attr(el, "id") || !xd_el_attr(el, "type")) {
            /* RFC 6120 8.1.3, 8.2.3: an IQ needs both. */
            c2s_send_iq_error(c, st, XD_COND_BAD_REQUEST, "an IQ needs 'id' and 'type'");
            return;
        }
    }
    c2s_route_own(c, st, kind);
}

static void
c2s_stanza(void *ud, xd_stanza_t *st)
{
    xd_conn_t *c = ud;
    const xd_el_t *el = xd_stanza_root(st);
    if (c->state != C2S_OPEN) {
        xd_stanza_unref(st);
        return;
    }
    if (c->role) {
        c->role->element(c, st);
        xd_stanza_unref(st);
        return;
    }
    const char *ns = xd_el_ns(el);
    if (ns && !strcmp(ns, XD_NS_TLS) && !strcmp(xd_el_name(el), "starttls")) {
        c2s_starttls(c, el);
    } else if (ns && !strcmp(ns, XD_NS_SASL)) {
        c2s_sasl_element(c, el);
    } else if (xd_stanza_kind_of(el) == XD_STANZA_OTHER) {
        /* RFC 6120 4.9.3.24: a first-level element we do not understand. */
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
    } else if (!c->authenticated) {
        const xd_el_t *payload = xd_el_first_child(el);
        const char *to = xd_el_attr(el, "to");
        if (xd_stanza_kind_of(el) == XD_STANZA_IQ && (!to || !strcmp(to, c->host)) && payload &&
            xd_el_is(payload, "query", XD_NS_REGISTER))
            /* XEP-0077 3.1: registration before authentication. */
            c2s_register_iq(c, st, payload);
        else
            /* RFC 6120 6.4.1 / 4.9.3.12: stanzas before authentication. */
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "authenticate first");
    } else if (!c->bound) {
        const xd_el_t *payload = xd_el_first_child(el);
        if (xd_iq_is_request(el) && payload && xd_el_is(payload, "bind", XD_NS_BIND))
            c2s_bind(c, st, payload);
        else
            /* RFC 6120 7.1: nothing but binding before a resource is bound. */
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "bind a resource first");
    } else {
        c2s_session_stanza(c, st);
    }
    xd_stanza_unref(st);
}

static void
c2s_stream_close(void *ud)
{
    xd_conn_t *c = ud;
    if (c->state == C2S_CLOSING) {
        c2s_destroy(c); /* we had already closed ours: done */
        return;
    }
    /* RFC 6120 4.4: the peer closed; close ours and end the connection. */
    if (!c->header_sent)
        c2s_send_header(c, NULL);
    c2s_write_str(c, "</stream:stream>");
    c2s_finish(c, C2S_SHUTDOWN_LINGER_MS);
}

static void
c2s_parse_error(void *ud, int code, const char *detail)
{
    xd_conn_t *c = ud;
    XD_LOG(&c->log, XD_INFO, "xml error", "err=%s detail=\"%s\"", xd_err_name(code),
           detail ? detail : "");
    char text[160];
    switch (code) {
    case XD_EXML_RESTRICTED:
        /* RFC 6120 11.1: DTDs, comments, PIs, entity declarations. */
        c2s_close(c, XD_STREAM_RESTRICTED_XML, detail);
        break;
    case XD_EXML_TOO_BIG:
        snprintf(text, sizeof text, "stanza too big (limit %zu bytes)",
                 c->listener->max_stanza_bytes);
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, text);
        break;
    case XD_EXML_TOO_DEEP:
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "elements nested too deeply");
        break;
    case XD_EXML_TOO_MANY_ATTRS:
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "too many attributes");
        break;
    case XD_EXML_BAD_NS:
        c2s_close(c, XD_STREAM_BAD_NAMESPACE_PREFIX, detail);
        break;
    case XD_EXML_ENCODING:
        /* RFC 6120 11.6: UTF-8 only. */
        c2s_close(c, XD_STREAM_UNSUPPORTED_ENCODING, detail);
        break;
    default:
        /* Syntax errors and invalid UTF-8 byte sequences: XML 1.0 4.3.3
         * makes bad UTF-8 a well-formedness error. */
        c2s_close(c, XD_STREAM_NOT_WELL_FORMED, detail);
        break;
    }
}

static const xd_xml_handlers_t c2s_xml_handlers = {
    .stream_open = c2s_stream_open,
    .stanza = c2s_stanza,
    .stream_close = c2s_stream_close,
    .error = c2s_parse_error,
};

/* ---- input path ------------------------------------------------------------------------------ */

static void
c2s_inbuf_append(xd_conn_t *c, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (c->inbuf_len + n > c->inbuf_cap) {
        size_t cap = c->inbuf_cap ? c->inbuf_cap : 1024;
        while (cap < c->inbuf_len + n)
            cap *= 2;
        c->inbuf = xd_realloc(c->inbuf, cap);
        c->inbuf_cap = cap;
    }
    memcpy(c->inbuf + c->inbuf_len, p, n);
    c->inbuf_len += n;
}

/* Plaintext of the stream, from the socket or from TLS.  Returns 0, or
 * XD_TLS_PAUSE when the stream is blocked (the bytes were kept). */
static int
c2s_input(xd_conn_t *c, const char *p, size_t n)
{
    while (n > 0) {
        if (c->state == C2S_CLOSING && !c->parser)
            return 0;
        if (uv_is_closing((uv_handle_t *)&c->tcp))
            return 0;
        if (c->blocked || c->inbuf_len) {
            c2s_inbuf_append(c, p, n);
            return XD_TLS_PAUSE;
        }
        size_t used = n;
        c->restart = false;
        int rc = xd_xml_parser_feed(c->parser, p, n, &used);
        if (rc != 0 || uv_is_closing((uv_handle_t *)&c->tcp))
            return 0; /* errors arrive through c2s_parse_error */
        p += used;
        n -= used;
        if (c->starttls_go) {
            /* Bytes after <starttls/> are the client's first TLS records. */
            c->starttls_go = false;
            if (n)
                xd_tls_input(c->tls, (const uint8_t *)p, n);
            return 0;
        }
        if (c->blocked) {
            c2s_inbuf_append(c, p, n);
            return XD_TLS_PAUSE;
        }
        if (c->state == C2S_CLOSING && n) {
            /* After our close, input is discarded. */
            return 0;
        }
        /* After a stream restart the rest starts the new stream. */
        if (!c->restart && used == 0)
            break;
    }
    return 0;
}

/* Ends a block: parses what was kept, then the TLS engine's queue, then
 * reads again. */
void
c2s_unblock(xd_conn_t *c)
{
    if (!c->blocked || c->state == C2S_CLOSING)
        return;
    c->blocked = false;
    xd_xml_parser_resume(c->parser);
    if (c->inbuf_len) {
        char *buf = c->inbuf;
        size_t len = c->inbuf_len;
        c->inbuf = NULL;
        c->inbuf_len = c->inbuf_cap = 0;
        c2s_input(c, buf, len);
        xd_free(buf);
        if (c->blocked || c->state == C2S_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
    if (c->tls && xd_tls_paused(c->tls)) {
        int rc = xd_tls_resume(c->tls);
        if (rc == XD_ETLS || rc == XD_ECLOSED) {
            c2s_destroy(c);
            return;
        }
        if (c->blocked || uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
    c2s_read_start(c);
}

static void
c2s_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    xd_conn_t *c = (xd_conn_t *)h;
    /* One buffer per worker: read_cb consumes it before the next alloc. */
    *buf = uv_buf_init(c->ws->rbuf, sizeof c->ws->rbuf);
}

/* The per-connection shaper (token bucket): after n bytes, pause reading
 * until the bucket has refilled. */
static void
c2s_shape(xd_conn_t *c, size_t n)
{
    const xd_listener_t *l = c->listener;
    if (!l->shaper_rate || c->state == C2S_CLOSING)
        return;
    uint64_t now = uv_now(c->tcp.loop);
    c->tokens += (double)(now - c->tokens_ms) * (double)l->shaper_rate / 1000.0;
    if (c->tokens > (double)l->shaper_burst)
        c->tokens = (double)l->shaper_burst;
    c->tokens_ms = now;
    c->tokens -= (double)n;
    if (c->tokens >= 0 || c->blocked)
        return;
    uint64_t wait = (uint64_t)(-c->tokens * 1000.0 / (double)l->shaper_rate) + 1;
    c2s_read_stop(c);
    xd_timer_start(c->delay, wait, 0);
}

static void
c2s_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    xd_conn_t *c = (xd_conn_t *)s;
    if (nread < 0) {
        if (nread != UV_EOF)
            XD_LOG(&c->log, XD_INFO, "read error", "err=%s", xd_strerror((int)nread));
        c2s_destroy(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->state == C2S_CLOSING && (!c->tls || !xd_tls_handshake_done(c->tls)))
        return; /* discard until the peer closes */
    c2s_touch(c);
    c->last_input_ms = uv_now(c->tcp.loop);
    c->trimmed = false;
    if (c->tls) {
        int rc = xd_tls_input(c->tls, (const uint8_t *)buf->base, (size_t)nread);
        if (rc == XD_ETLS) {
            XD_LOG(&c->log, XD_INFO, "tls failure", "reason=\"%s\"",
                   xd_tls_error(c->tls) ? xd_tls_error(c->tls) : "?");
            c->state = C2S_CLOSING;
            c2s_destroy(c);
            return;
        }
        if (rc == XD_ECLOSED) {
            /* The peer's close_notify: the stream is over. */
            if (c->state != C2S_CLOSING)
                XD_LOG(&c->log, XD_INFO, "tls closed by peer", "");
            xd_tls_shutdown(c->tls);
            c2s_destroy(c);
            return;
        }
        if (c->tls && xd_tls_paused(c->tls))
            c2s_read_stop(c);
    } else {
        c2s_input(c, buf->base, (size_t)nread);
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        c2s_shape(c, (size_t)nread);
}

/* The delay timer serves the SASL failure delay and the shaper pause. */
static void
c2s_on_delay_timer(xd_timer_t *t, void *arg)
{
    xd_conn_t *c = arg;
    if (c->pending_failure) {
        c2s_on_delay(t, arg);
        return;
    }
    if (!c->blocked && c->state != C2S_CLOSING)
        c2s_read_start(c);
}

/* Everything a new connection needs once its socket is in c->tcp: the
 * worker's lists, ids, addresses, timers, parser and role.  Returns the
 * listener's connection count including this one. */
static unsigned
c2s_conn_init(xd_conn_t *c, xd_worker_t *w, xd_listener_t *l, const xd_conn_role_t *role,
              void *rs)
{
    xd_wstate_t *ws = xd_wstate(w);
    /* Count first, so c2s_on_close can always decrement. */
    unsigned n = atomic_fetch_add(&l->connections, 1) + 1;
    c->id = atomic_fetch_add(&c2s_next_id, 1);
    c->next = ws->conns;
    if (ws->conns)
        ws->conns->prev = c;
    ws->conns = c;
    ws->nconns++;
    byid_put(ws, c);
    c2s_new_sid(c);

    int plen = sizeof c->peer;
    snprintf(c->ip, sizeof c->ip, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &plen) == 0) {
        if (c->peer.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&c->peer, c->ip, sizeof c->ip);
        else
            uv_ip6_name((struct sockaddr_in6 *)&c->peer, c->ip, sizeof c->ip);
    }
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s", (unsigned long long)c->id, c->ip);
    c->timer = xd_timer_new(w, c2s_on_timer, c);
    c->delay = xd_timer_new(w, c2s_on_delay_timer, c);
    c->tokens = (double)l->shaper_burst;
    c->tokens_ms = uv_now(xd_worker_loop(w));
    c->last_input_ms = c->tokens_ms;

    xd_xml_limits_t lim = XD_XML_LIMITS_DEFAULT;
    lim.max_stanza_bytes = l->max_stanza_bytes;
    c->parser = xd_xml_parser_new(&c2s_xml_handlers, c, &lim);
    c->role = role;
    c->rs = rs;
    return n;
}

void
xd_c2s_accept(xd_worker_t *w, uv_stream_t *server, xd_listener_t *l)
{
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = xd_new(xd_conn_t);
    c->ws = ws;
    c->listener = l;
    uv_tcp_init(xd_worker_loop(w), &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        xd_free(c);
        return;
    }
    unsigned n = c2s_conn_init(c, w, l, l->role, NULL);
    if (c->role && c->role->accepted)
        c->role->accepted(c);

    if (ws->stopping || n > l->max_connections) {
        XD_LOG(&c->log, XD_WARN, "connection refused", "listener=%s reason=%s", l->name,
               ws->stopping ? "stopping" : "max_connections");
        c2s_close(c, ws->stopping ? XD_STREAM_SYSTEM_SHUTDOWN : XD_STREAM_RESOURCE_CONSTRAINT,
                  "too many connections");
        return;
    }
    if (l->tls) {
        /* XEP-0368: TLS from the first byte; SNI picks the certificate. */
        xd_config_t *cfg = xd_config_get();
        bool ok = c2s_tls_begin(c, xd_config_default_host(cfg));
        xd_config_unref(cfg);
        if (!ok)
            return;
    }
    xd_timer_start(c->timer, l->handshake_timeout_ms, 0);
    uv_tcp_nodelay(&c->tcp, 1);
    c2s_read_start(c);
    XD_LOG(&c->log, XD_INFO, "connection accepted", "listener=%s worker=%u tls=%s", l->name,
           xd_worker_index(w), l->tls ? "direct" : "no");
}

static void
c2s_free_handle(uv_handle_t *h)
{
    xd_free(h); /* the tcp handle is the connection's first member */
}

xd_conn_t *
c2s_conn_open(xd_worker_t *w, int fd, xd_listener_t *l, const xd_conn_role_t *role, void *rs)
{
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = xd_new(xd_conn_t);
    c->ws = ws;
    c->listener = l;
    uv_tcp_init(xd_worker_loop(w), &c->tcp);
    if (uv_tcp_open(&c->tcp, (uv_os_sock_t)fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, c2s_free_handle);
        return NULL;
    }
    if (c2s_conn_init(c, w, l, role, rs) > l->max_connections) {
        XD_LOG(&c->log, XD_WARN, "connection refused", "role=%s reason=max_connections",
               role->name);
        c->rs = NULL; /* stays the caller's */
        c->state = C2S_CLOSING;
        c2s_destroy(c);
        return NULL;
    }
    xd_timer_start(c->timer, l->handshake_timeout_ms, 0);
    uv_tcp_nodelay(&c->tcp, 1);
    c2s_read_start(c);
    XD_LOG(&c->log, XD_INFO, "connection opened", "role=%s worker=%u", role->name,
           xd_worker_index(w));
    return c;
}

bool
c2s_tls_client(xd_conn_t *c, const char *local, const char *remote, const char *alpn)
{
    xd_tls_store_t *st = c2s_tls_store_get();
    if (!st) {
        c2s_close(c, XD_STREAM_INTERNAL_SERVER_ERROR, "TLS is not available");
        return false;
    }
    xd_tls_io_t io = c2s_tls_io(c);
    int rc = xd_tls_client_new(st, local, remote, alpn, &io, &c->tls);
    xd_tls_store_unref(st);
    if (rc == 0)
        rc = xd_tls_start(c->tls);
    if (rc != 0) {
        XD_LOG(&c->log, XD_WARN, "tls client failed", "err=%s", xd_strerror(rc));
        c->state = C2S_CLOSING;
        c2s_destroy(c);
        return false;
    }
    return true;
}

/* XEP-0199 4.2: clients silent for ping_interval get a ping; any input
 * answers it; no input within ping_ack_timeout closes the stream when the
 * host says timeout_action: kill.  Runs from the sweep; the options of each
 * host are read once per sweep. */
static void
c2s_ping_sweep(xd_wstate_t *ws, uint64_t now)
{
    xd_config_t *cfg = xd_config_get();
    if (!cfg)
        return;
    enum { HOSTS = 16 };
    const char *hosts[HOSTS];
    xd_ping_conf_t confs[HOSTS];
    size_t nh = 0;
    for (xd_conn_t *c = ws->conns; c; c = c->next) {
        if (!c->bound || c->state != C2S_OPEN || c->blocked)
            continue;
        xd_ping_conf_t pc, *p = NULL;
        for (size_t i = 0; i < nh && !p; i++)
            if (!strcmp(hosts[i], c->host))
                p = &confs[i];
        if (!p) {
            xd_mod_ping_conf(cfg, c->host, &pc);
            if (nh < HOSTS) {
                hosts[nh] = c->host;
                confs[nh] = pc;
                p = &confs[nh++];
            } else {
                p = &pc;
            }
        }
        if (!p->send_pings)
            continue;
        if (c->ping_sent_ms && c->last_input_ms >= c->ping_sent_ms) {
            c->ping_sent_ms = 0; /* it said something: alive */
        } else if (c->ping_sent_ms) {
            if (p->kill && now - c->ping_sent_ms >= p->ack_timeout_ms)
                c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "no answer to ping");
            continue;
        }
        if (now - c->last_input_ms >= p->interval_ms) {
            /* Built, not printed: a resource may hold quotes. */
            char id[40];
            snprintf(id, sizeof id, "xd-ping-%llu", (unsigned long long)now);
            xd_el_t *iq = xd_el_new("iq", NULL);
            xd_el_set_attr(iq, "type", "get");
            xd_el_set_attr(iq, "id", id);
            xd_el_set_attr(iq, "from", c->host);
            xd_el_set_attr(iq, "to", xd_jid_full_str(c->jid).p);
            xd_el_add_child(iq, "ping", XD_NS_PING);
            xd_stanza_t *st = xd_el_freeze(iq);
            c2s_send_stanza(c, st);
            xd_stanza_unref(st);
            c->ping_sent_ms = now;
        }
    }
    xd_config_unref(cfg);
}

/* Every C2S_SWEEP_MS: connections silent for C2S_TRIM_IDLE_MS give their
 * parser's buffers back (OpenSSL releases its own by itself), which is most
 * of what an idle connection costs beyond the TLS state. */
static void
c2s_sweep(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_wstate_t *ws = arg;
    uint64_t now = uv_now(xd_worker_loop(ws->worker));
    unsigned n = 0;
    c2s_ping_sweep(ws, now);
    for (xd_conn_t *c = ws->conns; c; c = c->next) {
        if (c->trimmed || c->state != C2S_OPEN || c->blocked || !c->parser ||
            now - c->last_input_ms < C2S_TRIM_IDLE_MS)
            continue;
        n += xd_xml_parser_trim(c->parser);
        c->trimmed = true;
    }
    /* Many connections went quiet (the end of a login wave): hand the pages
     * their handshakes and parsers left free back to the system, or the
     * process keeps the peak's size. */
    if (n)
        XD_LOG(NULL, XD_DEBUG, "idle parsers trimmed", "worker=%u count=%u",
               xd_worker_index(ws->worker), n);
    if (n >= C2S_TRIM_RELEASE)
        malloc_trim(64 * 1024);
}

void
xd_c2s_start_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    ws->sweep = xd_timer_new(w, c2s_sweep, ws);
    xd_timer_start(ws->sweep, C2S_SWEEP_MS, C2S_SWEEP_MS);
}

void
xd_c2s_shutdown_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    if (ws->sweep) {
        xd_timer_free(ws->sweep);
        ws->sweep = NULL;
    }
    for (xd_conn_t *c = ws->conns, *next; c; c = next) {
        next = c->next;
        /* RFC 6120 4.9.3.20 */
        c2s_close(c, XD_STREAM_SYSTEM_SHUTDOWN, "the server is stopping");
    }
}

/* ---- reaching a connection from another thread ------------------------------------------------- */

xd_conn_t *
c2s_conn_find(xd_worker_t *w, uint64_t id)
{
    xd_wstate_t *ws = w ? xd_wstate(w) : NULL;
    return ws ? byid_get(ws, id) : NULL;
}

typedef struct {
    uint64_t id;           /* the connection */
    xd_stream_cond cond;   /* stream error to close it with */
    char text[200];        /* its text */
} c2s_close_msg_t;

static void
c2s_close_msg(xd_worker_t *w, void *arg)
{
    c2s_close_msg_t *m = arg;
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = ws ? byid_get(ws, m->id) : NULL;
    if (c)
        c2s_close(c, m->cond, m->text[0] ? m->text : NULL);
    xd_free(m);
}

void
c2s_post_close(unsigned worker, uint64_t id, xd_stream_cond cond, const char *text)
{
    xd_worker_t *w = xd_worker_get(worker);
    if (!w)
        return;
    c2s_close_msg_t *m = xd_new(c2s_close_msg_t);
    m->id = id;
    m->cond = cond;
    snprintf(m->text, sizeof m->text, "%s", text ? text : "");
    if (xd_worker_post(w, c2s_close_msg, m) != 0)
        xd_free(m);
}

typedef struct {
    uint64_t id;      /* the session's connection */
    xd_stanza_t *st;  /* what to write */
} c2s_deliver_msg_t;

static void
c2s_deliver_msg(xd_worker_t *w, void *arg)
{
    c2s_deliver_msg_t *m = arg;
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = ws ? byid_get(ws, m->id) : NULL;
    if (c && (c->bound || c->established) && c->state == C2S_OPEN) {
        c2s_send_stanza(c, m->st);
        xd_stanza_unref(m->st);
    } else {
        xd_stanza_t *err = xd_stanza_error(m->st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        xd_stanza_unref(m->st);
        if (err)
            xd_route(err);
    }
    xd_free(m);
}

void
xd_c2s_deliver(unsigned worker, uint64_t conn_id, xd_stanza_t *st)
{
    c2s_deliver(worker, conn_id, st);
}

void
c2s_deliver(unsigned worker, uint64_t conn_id, xd_stanza_t *st)
{
    xd_worker_t *w = xd_worker_get(worker);
    c2s_deliver_msg_t *m = xd_new(c2s_deliver_msg_t);
    m->id = conn_id;
    m->st = st;
    if (!w || xd_worker_post(w, c2s_deliver_msg, m) != 0) {
        xd_stanza_unref(st); /* the server is stopping */
        xd_free(m);
    }
}

int
xd_c2s_kick(const xd_jid_t *full, xd_stream_cond cond, const char *text)
{
    xd_sm_entry_t e = { 0 };
    int rc = xd_sm_find(full, &e);
    if (rc != 0)
        return rc;
    c2s_post_close(e.worker, e.conn_id, cond, text);
    xd_sm_entry_clear(&e);
    return 0;
}

/* ---- commands -------------------------------------------------------------------------------- */

static void
list_session(void *arg, const xd_sm_entry_t *e)
{
    xd_cmd_add(arg, "%s", xd_jid_full_str(e->jid).p);
}

static int
cmd_connected_users(xd_cmd_call_t *call)
{
    xd_sm_foreach(call->args[0].text, list_session, call);
    if (call->res.n > 1) {
        /* Stable output: sorted. */
        for (size_t i = 1; i < call->res.n; i++)
            for (size_t j = i; j > 0 && strcmp(call->res.items[j - 1], call->res.items[j]) > 0; j--) {
                char *t = call->res.items[j];
                call->res.items[j] = call->res.items[j - 1];
                call->res.items[j - 1] = t;
            }
    }
    return 0;
}

static int
cmd_connected_users_number(xd_cmd_call_t *call)
{
    call->res.i = (int64_t)xd_sm_count(call->args[0].text);
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
    rc = xd_c2s_kick(full, XD_STREAM_POLICY_VIOLATION, reason);
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

static const xd_cmd_arg_t args_kick[] = {
    { "user", XD_CMD_USER, "the localpart" },
    { "host", XD_CMD_HOST, "the virtual host" },
    { "resource", XD_CMD_RESOURCE, "the resource of the session" },
    { "reason", XD_CMD_STRING, "text sent to the client in the stream error" },
};

static const xd_cmd_t c2s_cmds[] = {
    { .name = "connected_users", .doc = "list the bound sessions (full JIDs), one per line",
      .args = args_opt_host, .nargs = 1, .nopt = 1, .result = XD_CMD_RES_LIST,
      .flags = XD_CMD_ON_LOOP, .fn = cmd_connected_users },
    { .name = "connected_users_number", .doc = "how many sessions are bound",
      .args = args_opt_host, .nargs = 1, .nopt = 1, .result = XD_CMD_RES_INT,
      .flags = XD_CMD_ON_LOOP, .fn = cmd_connected_users_number },
    { .name = "kick_session", .doc = "close a session with a policy-violation stream error",
      .args = args_kick, .nargs = 4, .nopt = 1, .result = XD_CMD_RES_NONE,
      .flags = XD_CMD_ON_LOOP, .fn = cmd_kick_session },
};

void
xd_c2s_register_commands(void)
{
    for (size_t i = 0; i < sizeof c2s_cmds / sizeof c2s_cmds[0]; i++)
        xd_cmd_register(&c2s_cmds[i]);
}
