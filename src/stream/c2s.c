/*
 * c2s.c — client-to-server stream skeleton (RFC 6120 4).
 *
 * States of a connection (owner worker only):
 *
 *   HEADER ──valid <stream:stream>──► OPEN ──(TLS, SASL, bind: next issue)
 *     │                                │
 *     │ bad header, bad XML,           │ bad XML, stanza before auth,
 *     │ handshake timeout              │ timeout, server stop, peer </stream>
 *     ▼                                ▼
 *   CLOSING: our header (if not yet sent), <stream:error/>, </stream:stream>
 *            written; write side shut down; read and discard until the peer
 *            closes or the linger timer fires ──► uv_close ──► freed in c2s_on_close
 *
 * A connection is never freed inside its own callbacks: everything goes
 * through uv_close, whose callback frees it (libuv rule, STYLE.md 3.7 R5).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/c2s.h"

#include "stream/wstate.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/conds.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xml/parse.h"

#define C2S_LINGER_MS 2000          /* wait for the peer's </stream:stream> */
#define C2S_SHUTDOWN_LINGER_MS 500  /* shorter while the server stops */

typedef enum { C2S_HEADER, C2S_OPEN, C2S_CLOSING } c2s_state;

typedef struct xd_conn {
    uv_tcp_t tcp;                /* first member: the handle is the connection */
    struct xd_conn *prev, *next; /* ws->conns list */
    xd_wstate_t *ws;             /* owner worker's state */
    xd_listener_t *listener;     /* where it was accepted; counter decremented on free */
    xd_xml_parser_t *parser;     /* the current stream's parser */
    xd_timer_t *timer;           /* handshake timeout, then linger */
    xd_log_t log;                /* conn= ip= [host=] */
    c2s_state state;             /* see the diagram */
    bool header_sent;            /* our <stream:stream> is out */
    bool shut;                   /* uv_shutdown requested */
    char *host;                  /* the served domain the client asked for */
    char lang[36];               /* xml:lang of the stream */
    char id[33];                 /* stream id, 128 random bits in hex */
} xd_conn_t;

static void c2s_close(xd_conn_t *c, xd_stream_cond cond, const char *text);

/* ---- writing ----------------------------------------------------------- */

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

static void
c2s_write(xd_conn_t *c, const char *data, size_t len)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp) || c->shut)
        return;
    c2s_wreq_t *w = xd_malloc(sizeof *w + len);
    memcpy(w->data, data, len);
    w->len = len;
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, c2s_on_write) != 0)
        xd_free(w);
}

static void
c2s_write_str(xd_conn_t *c, const char *s)
{
    c2s_write(c, s, strlen(s));
}

/* ---- lifetime ---------------------------------------------------------- */

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
    atomic_fetch_sub(&c->listener->connections, 1);
    if (c->parser)
        xd_xml_parser_free(c->parser);
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
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, c2s_on_close);
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
    /* RFC6120 4.9.3.4: no authenticated stream within the handshake time. */
    c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "handshake timeout");
}

static void
c2s_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    xd_free(req);
}

/* Our side is closed: shut down writing once the queue drains, then wait
 * up to linger_ms for the peer to close its side (RFC6120 4.4). */
static void
c2s_finish(xd_conn_t *c, uint64_t linger_ms)
{
    c->state = C2S_CLOSING;
    uv_shutdown_t *sreq = xd_malloc(sizeof *sreq);
    if (uv_shutdown(sreq, (uv_stream_t *)&c->tcp, c2s_on_shutdown) == 0)
        c->shut = true;
    else
        xd_free(sreq);
    if (c->timer)
        xd_timer_start(c->timer, linger_ms, 0);
    else
        c2s_destroy(c);
}

/* ---- stream header ----------------------------------------------------- */

static void
c2s_send_header(xd_conn_t *c, const char *to_attr)
{
    const char *from = c->host;
    if (!from) {
        xd_config_t *cfg = xd_config_get();
        from = xd_config_default_host(cfg);
        c->host = xd_strdup(from);
        xd_config_unref(cfg);
        from = c->host;
    }
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "<?xml version='1.0'?>"
                     "<stream:stream xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' "
                     "id='%s' from='%s'%s%s%s version='1.0' xml:lang='%s'>",
                     c->id, from, to_attr ? " to='" : "", to_attr ? to_attr : "",
                     to_attr ? "'" : "", c->lang[0] ? c->lang : "en");
    c2s_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    c->header_sent = true;
}

/* Sends the error and closes our side (RFC6120 4.9.1.1); if no header went
 * out yet, one goes first (RFC6120 4.9.1.2). */
static void
c2s_close(xd_conn_t *c, xd_stream_cond cond, const char *text)
{
    if (c->state == C2S_CLOSING)
        return;
    if (!c->header_sent)
        c2s_send_header(c, NULL);
    char buf[1024];
    int n = xd_stream_error_format(buf, sizeof buf, cond, text);
    c2s_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    XD_LOG(&c->log, XD_INFO, "stream error sent", "cond=%s text=\"%s\"",
           xd_stream_cond_name(cond), text ? text : "");
    c2s_finish(c, c->ws->stopping ? C2S_SHUTDOWN_LINGER_MS : C2S_LINGER_MS);
}

static bool
c2s_version_ok(const char *v)
{
    /* RFC6120 4.7.5: "major.minor"; we speak 1.x. */
    if (!v)
        return false;
    char *end;
    long major = strtol(v, &end, 10);
    return end != v && *end == '.' && major >= 1;
}

static void
c2s_stream_open(void *ud, const xd_el_t *hdr)
{
    xd_conn_t *c = ud;
    if (c->state != C2S_HEADER)
        return;
    const char *lang = xd_el_attr(hdr, "xml:lang");
    if (lang && strlen(lang) < sizeof c->lang && !strpbrk(lang, "'<&\""))
        strcpy(c->lang, lang);

    /* The host comes first so that an error header carries the right 'from'. */
    const char *to = xd_el_attr(hdr, "to");
    char *host = NULL;
    xd_config_t *cfg = xd_config_get();
    bool served = to && xd_jid_prep_domain(xd_str_c(to), &host) == 0 &&
                  xd_config_is_host(cfg, host);
    xd_config_unref(cfg);
    if (served)
        c->host = host;
    else
        xd_free(host);

    /* RFC6120 4.8.1: the stream element in the streams namespace. */
    if (!xd_str_eq_c(xd_str_c(xd_el_name(hdr)), "stream") ||
        !xd_el_ns(hdr) || strcmp(xd_el_ns(hdr), XD_NS_STREAMS) != 0) {
        c2s_close(c, XD_STREAM_INVALID_NAMESPACE, "the stream element must be "
                  "<stream xmlns='http://etherx.jabber.org/streams'>");
        return;
    }
    /* RFC6120 4.8.2: the content namespace of a client stream. */
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
        /* RFC6120 4.9.3.6 */
        c2s_close(c, XD_STREAM_HOST_UNKNOWN, "this server does not serve that domain");
        return;
    }
    if (!c2s_version_ok(xd_el_attr(hdr, "version"))) {
        /* RFC6120 4.7.5: no version means 0.9, which we do not speak. */
        c2s_close(c, XD_STREAM_UNSUPPORTED_VERSION, "version='1.0' is required");
        return;
    }

    /* RFC6120 4.7.2: echo the initiating entity's 'from' as our 'to'. */
    const char *from = xd_el_attr(hdr, "from");
    xd_jid_t *fj = NULL;
    if (from && xd_jid_parse(xd_str_c(from), &fj) == 0) {
        c2s_send_header(c, xd_jid_full_str(fj).p);
        xd_jid_unref(fj);
    } else {
        c2s_send_header(c, NULL);
    }
    xd_log_ctx(&c->log, NULL, "conn=%s host=%s", c->id, c->host);
    /* RFC6120 4.3.2: features follow the header.  STARTTLS and SASL are
     * offered here once the client-connections issue lands. */
    c2s_write_str(c, "<stream:features/>");
    c->state = C2S_OPEN;
}

static void
c2s_stanza(void *ud, xd_stanza_t *st)
{
    xd_conn_t *c = ud;
    const xd_el_t *el = xd_stanza_root(st);
    if (c->state == C2S_OPEN) {
        const char *name = xd_el_name(el);
        bool content = xd_el_ns(el) == NULL || *xd_el_ns(el) == '\0';
        if (content && (!strcmp(name, "message") || !strcmp(name, "presence") ||
                        !strcmp(name, "iq")))
            /* RFC6120 6.4.1 / 4.9.3.12: stanzas before authentication. */
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "authenticate first");
        else
            /* RFC6120 4.9.3.24: a first-level element we do not understand. */
            c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
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
    /* RFC6120 4.4: the peer closed; close ours and end the connection. */
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
        /* RFC6120 11.1: DTDs, comments, PIs, entity declarations. */
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
        /* RFC6120 11.6: UTF-8 only. */
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

/* ---- reading ----------------------------------------------------------- */

static void
c2s_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    xd_conn_t *c = (xd_conn_t *)h;
    /* One buffer per worker: read_cb consumes it before the next alloc. */
    *buf = uv_buf_init(c->ws->rbuf, sizeof c->ws->rbuf);
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
    if (c->state == C2S_CLOSING)
        return; /* discard until the peer closes */
    size_t used = 0;
    int rc = xd_xml_parser_feed(c->parser, buf->base, (size_t)nread, &used);
    (void)rc; /* errors arrive through c2s_parse_error */
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
    /* Count first, so c2s_on_close can always decrement. */
    unsigned n = atomic_fetch_add(&l->connections, 1) + 1;
    c->next = ws->conns;
    if (ws->conns)
        ws->conns->prev = c;
    ws->conns = c;
    ws->nconns++;

    unsigned char rnd[16];
    if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(c->id + 2 * i, 3, "%02x", rnd[i]);

    struct sockaddr_storage peer;
    int plen = sizeof peer;
    char ip[64] = "?";
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) == 0) {
        if (peer.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&peer, ip, sizeof ip);
        else
            uv_ip6_name((struct sockaddr_in6 *)&peer, ip, sizeof ip);
    }
    xd_log_ctx(&c->log, NULL, "conn=%s ip=%s", c->id, ip);
    c->timer = xd_timer_new(w, c2s_on_timer, c);

    if (ws->stopping || n > l->max_connections) {
        XD_LOG(&c->log, XD_WARN, "connection refused", "listener=%s reason=%s", l->name,
               ws->stopping ? "stopping" : "max_connections");
        c2s_close(c, ws->stopping ? XD_STREAM_SYSTEM_SHUTDOWN : XD_STREAM_RESOURCE_CONSTRAINT,
                  "too many connections");
        return;
    }

    xd_xml_limits_t lim = XD_XML_LIMITS_DEFAULT;
    lim.max_stanza_bytes = l->max_stanza_bytes;
    c->parser = xd_xml_parser_new(&c2s_xml_handlers, c, &lim);
    xd_timer_start(c->timer, l->handshake_timeout_ms, 0);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, c2s_alloc, c2s_on_read);
    XD_LOG(&c->log, XD_INFO, "connection accepted", "listener=%s worker=%u", l->name,
           xd_worker_index(w));
}

void
xd_c2s_shutdown_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    for (xd_conn_t *c = ws->conns, *next; c; c = next) {
        next = c->next;
        /* RFC6120 4.9.3.20 */
        c2s_close(c, XD_STREAM_SYSTEM_SHUTDOWN, "the server is stopping");
    }
}
