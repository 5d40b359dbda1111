/*
 * ws.c — XMPP over WebSocket (RFC 7395): the `websocket` handler and the
 * transport it leaves under a client stream.
 *
 * The upgrade (RFC 6455 4.2) needs the subprotocol `xmpp` and, with
 * websocket_origins, an allowed Origin.  The connection then becomes a
 * client stream like a TCP one (xd_c2s_role: SASL, bind, stream
 * management, everything): this transport only translates the framing.
 * WebSocket messages (wslay does the frames, masks, fragments, control
 * frames) go to the stream's XML parser with <open/> turned into a stream
 * header and <close/> into </stream:stream>; what the role writes is cut
 * into its top-level elements, one message each, with our stream header
 * turned into <open/>, </stream:stream> into <close/> and the namespaces
 * a standalone element needs declared on it (RFC 7395 3.3.3).
 *
 * Limits: a message (or a frame) above the listener's max_stanza_size is a
 * policy-violation stream error before its bytes are buffered; an idle
 * WebSocket gets a ping each websocket_ping_interval and is closed when
 * the next interval passes without a byte from it.
 */
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "http/http_int.h"

#include "stream/c2s.h"
#include "xmppd/alloc.h"
#include "xmppd/base64.h"
#include "xmppd/conds.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"
#define NS_STREAMS_DECL " xmlns:stream='http://etherx.jabber.org/streams'"

typedef struct ws_conn {
    xd_conn_t *c;
    const http_listener_t *hl;
    wslay_event_context_ptr ctx;
    const char *in;           /* input lent to wslay_event_recv */
    size_t in_n;
    int paused;               /* the stream paused while a message was fed */
    uint64_t msg_len;         /* bytes of the message being received */
    bool too_big;             /* it went beyond max_stanza_size */
    bool binary;              /* a binary message came */
    bool peer_closed;         /* the peer's close frame came */
    bool close_sent;          /* our close frame is queued */
    char *out;                /* role output not yet cut into elements, or NULL */
    size_t out_len;
    xd_timer_t *ping;         /* keepalive */
    uint64_t last_in_ms;      /* loop time of the last input */
    bool ping_out;            /* a ping went out since */
} ws_conn_t;

static const xd_conn_xport_t ws_xport;

/* ---- attributes of one tag (ours or the client's <open/>) ------------------------------------ */

/* Copies the value of attribute `name` of the start tag tag[0..len) into
 * out (as written, entities and all); false when absent or too long. */
static bool
tag_attr(const char *tag, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    size_t i = 1;
    while (i < len && tag[i] != ' ' && tag[i] != '\t' && tag[i] != '\n' && tag[i] != '\r' &&
           tag[i] != '/' && tag[i] != '>')
        i++; /* the element name */
    while (i < len) {
        while (i < len && (tag[i] == ' ' || tag[i] == '\t' || tag[i] == '\n' || tag[i] == '\r'))
            i++;
        size_t ns = i;
        while (i < len && tag[i] != '=' && tag[i] != ' ' && tag[i] != '>' && tag[i] != '/')
            i++;
        size_t ne = i;
        while (i < len && (tag[i] == ' ' || tag[i] == '\t' || tag[i] == '\n' || tag[i] == '\r'))
            i++;
        if (i >= len || tag[i] != '=')
            return false;
        i++;
        while (i < len && (tag[i] == ' ' || tag[i] == '\t' || tag[i] == '\n' || tag[i] == '\r'))
            i++;
        if (i >= len || (tag[i] != '\'' && tag[i] != '"'))
            return false;
        char q = tag[i++];
        size_t vs = i;
        while (i < len && tag[i] != q)
            i++;
        if (i >= len)
            return false;
        if (ne - ns == nl && !memcmp(tag + ns, name, nl)) {
            size_t vl = i - vs;
            if (vl + 1 > cap || memchr(tag + vs, '\'', vl))
                return false;
            memcpy(out, tag + vs, vl);
            out[vl] = '\0';
            return true;
        }
        i++;
    }
    return false;
}

/* True when the message is the element `name` in the framing namespace. */
static bool
is_framing(const char *m, size_t n, const char *name)
{
    size_t nl = strlen(name);
    if (n < nl + 2 || m[0] != '<' || memcmp(m + 1, name, nl) != 0 ||
        (m[nl + 1] != ' ' && m[nl + 1] != '/' && m[nl + 1] != '>' && m[nl + 1] != '\t' &&
         m[nl + 1] != '\n' && m[nl + 1] != '\r'))
        return false;
    char ns[64];
    return tag_attr(m, n, "xmlns", ns, sizeof ns) && !strcmp(ns, NS_FRAMING);
}

/* ---- output: the role's bytes, one element per message ------------------------------------ */

static void
ws_send_msg(ws_conn_t *w, const char *p, size_t n)
{
    if (w->close_sent)
        return;
    struct wslay_event_msg m = { WSLAY_TEXT_FRAME, (const uint8_t *)p, n };
    if (wslay_event_queue_msg(w->ctx, &m) == 0)
        wslay_event_send(w->ctx);
}

static void
ws_send_close(ws_conn_t *w, uint16_t code)
{
    if (w->close_sent)
        return;
    w->close_sent = true;
    if (wslay_event_queue_close(w->ctx, code, NULL, 0) == 0)
        wslay_event_send(w->ctx);
}

/* One complete top-level element of ours, fixed up to stand alone. */
static void
ws_emit(ws_conn_t *w, const char *e, size_t n)
{
    size_t name_end = 1;
    while (name_end < n && e[name_end] != ' ' && e[name_end] != '>' && e[name_end] != '/')
        name_end++;
    const char *tag_end = memchr(e, '>', n);
    size_t tl = tag_end ? (size_t)(tag_end - e) : n;
    const char *add = NULL;
    if (!strncmp(e, "<stream:", 8)) {
        add = NS_STREAMS_DECL; /* stream:features, stream:error */
    } else if ((name_end == 8 && !memcmp(e, "<message", 8)) ||
               (name_end == 9 && !memcmp(e, "<presence", 9)) ||
               (name_end == 3 && !memcmp(e, "<iq", 3))) {
        /* stanzas inherit jabber:client from the stream: say it */
        bool has = false;
        for (size_t i = 0; i + 7 <= tl; i++)
            if (!memcmp(e + i, " xmlns=", 7) || !memcmp(e + i, "\txmlns=", 7))
                has = true;
        if (!has)
            add = " xmlns='" XD_NS_CLIENT "'";
    }
    if (!add) {
        ws_send_msg(w, e, n);
        return;
    }
    size_t al = strlen(add);
    char *buf = xd_malloc(n + al);
    memcpy(buf, e, name_end);
    memcpy(buf + name_end, add, al);
    memcpy(buf + name_end + al, e + name_end, n - name_end);
    ws_send_msg(w, buf, n + al);
    xd_free(buf);
}

/* Our stream header as <open/>. */
static void
ws_emit_open(ws_conn_t *w, const char *tag, size_t n)
{
    char id[80] = "", from[1100] = "", to[1100] = "", lang[40] = "en", version[16] = "1.0";
    tag_attr(tag, n, "id", id, sizeof id);
    tag_attr(tag, n, "from", from, sizeof from);
    tag_attr(tag, n, "to", to, sizeof to);
    tag_attr(tag, n, "xml:lang", lang, sizeof lang);
    tag_attr(tag, n, "version", version, sizeof version);
    char *o = xd_asprintf("<open xmlns='" NS_FRAMING "' id='%s' from='%s'%s%s%s version='%s' "
                          "xml:lang='%s'/>",
                          id, from, to[0] ? " to='" : "", to, to[0] ? "'" : "", version, lang);
    ws_send_msg(w, o, strlen(o));
    xd_free(o);
}

/* Cuts buf[0..len) into top-level elements and sends them; returns where
 * the uncut rest starts (an open element or a partial tag).  The text is
 * our own serializer's (well-formed; no comments or CDATA), so tags are
 * found by '<' and their ends by '>' outside quotes.  The scan starts at
 * depth 0: what is kept between writes holds no complete element. */
static size_t
ws_cut(ws_conn_t *w, const char *buf, size_t len)
{
    size_t i = 0, done = 0, elem_start = 0;
    int depth = 0;
    while (i < len) {
        if (buf[i] != '<') {
            if (depth == 0)
                done = i + 1; /* whitespace between elements */
            i++;
            continue;
        }
        /* find the end of this tag */
        size_t j = i + 1;
        char q = 0;
        while (j < len && (q || buf[j] != '>')) {
            if (q && buf[j] == q)
                q = 0;
            else if (!q && (buf[j] == '\'' || buf[j] == '"'))
                q = buf[j];
            j++;
        }
        if (j >= len)
            break; /* the rest of the tag comes with the next write */
        const char *t = buf + i;
        size_t tl = j + 1 - i;
        if (t[1] == '?') {
            if (depth == 0)
                done = j + 1; /* <?xml?> */
        } else if (t[1] == '/') {
            if (depth == 0) {
                /* </stream:stream> */
                ws_send_msg(w, "<close xmlns='" NS_FRAMING "'/>",
                            sizeof("<close xmlns='" NS_FRAMING "'/>") - 1);
                ws_send_close(w, w->too_big ? WSLAY_CODE_MESSAGE_TOO_BIG
                                            : WSLAY_CODE_NORMAL_CLOSURE);
                done = j + 1;
            } else if (--depth == 0) {
                ws_emit(w, buf + elem_start, j + 1 - elem_start);
                done = j + 1;
            }
        } else if (depth == 0 && tl > 15 && !memcmp(t, "<stream:stream", 14)) {
            ws_emit_open(w, t, tl);
            done = j + 1;
        } else if (t[tl - 2] == '/') {
            if (depth == 0) {
                ws_emit(w, t, tl);
                done = j + 1;
            }
        } else {
            if (depth++ == 0)
                elem_start = i;
        }
        i = j + 1;
    }
    return depth > 0 ? elem_start : done;
}

/* What the role writes: scanned in place; only an unfinished rest is
 * copied, and kept until the write that completes it. */
static void
ws_write(xd_conn_t *c, const char *p, size_t n)
{
    ws_conn_t *w = c->xs;
    if (w->close_sent)
        return;
    if (w->out_len == 0) {
        size_t used = ws_cut(w, p, n);
        if (used < n) {
            w->out = xd_malloc(n - used);
            memcpy(w->out, p + used, n - used);
            w->out_len = n - used;
        }
        return;
    }
    w->out = xd_realloc(w->out, w->out_len + n);
    memcpy(w->out + w->out_len, p, n);
    w->out_len += n;
    size_t used = ws_cut(w, w->out, w->out_len);
    if (used == w->out_len) {
        xd_free(w->out);
        w->out = NULL;
        w->out_len = 0;
        return;
    }
    memmove(w->out, w->out + used, w->out_len - used);
    w->out_len -= used;
}

/* ---- input: messages to the stream -------------------------------------------------------- */

static ssize_t
ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    ws_conn_t *w = ud;
    if (!w->in_n) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < w->in_n ? len : w->in_n;
    memcpy(buf, w->in, n);
    w->in += n;
    w->in_n -= n;
    return (ssize_t)n;
}

static ssize_t
ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ctx;
    (void)flags;
    ws_conn_t *w = ud;
    c2s_write_wire(w->c, data, len);
    return (ssize_t)len;
}

static void
ws_frame_start(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *a,
               void *ud)
{
    ws_conn_t *w = ud;
    if (a->opcode >= 0x8)
        return; /* control frames are small and never part of the message */
    if (a->opcode == WSLAY_BINARY_FRAME)
        w->binary = true;
    w->msg_len += a->payload_length;
    if (w->msg_len > w->c->listener->max_stanza_bytes || w->binary) {
        if (w->msg_len > w->c->listener->max_stanza_bytes)
            w->too_big = true;
        wslay_event_shutdown_read(ctx); /* not a byte more of it */
    }
}

static void
ws_feed(ws_conn_t *w, const char *p, size_t n)
{
    if (c2s_feed(w->c, p, n) == XD_TLS_PAUSE)
        w->paused = 1;
}

static void
ws_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a, void *ud)
{
    (void)ctx;
    ws_conn_t *w = ud;
    xd_conn_t *c = w->c;
    if (a->opcode >= 0x8) {
        if (a->opcode == WSLAY_CONNECTION_CLOSE)
            w->peer_closed = true;
        return; /* pings are answered by wslay */
    }
    w->msg_len = 0;
    if (w->too_big || w->binary || c->state == C2S_CLOSING)
        return;
    const char *m = (const char *)a->msg;
    size_t n = a->msg_length;
    while (n && (*m == ' ' || *m == '\t' || *m == '\r' || *m == '\n')) {
        m++;
        n--;
    }
    if (is_framing(m, n, "open")) {
        if (w->hl->ws_see_other) {
            /* RFC 7395 3.6.1: this server sends every client elsewhere. */
            char from[1100] = "";
            tag_attr(m, n, "to", from, sizeof from);
            c2s_new_sid(c);
            char *o = xd_asprintf("<open xmlns='" NS_FRAMING "' id='%s' from='%s' version='1.0' "
                                  "xml:lang='en'/>",
                                  c->sid, from);
            ws_send_msg(w, o, strlen(o));
            xd_free(o);
            char *cl = xd_asprintf("<close xmlns='" NS_FRAMING "' see-other-uri='%s'/>",
                                   w->hl->ws_see_other);
            ws_send_msg(w, cl, strlen(cl));
            xd_free(cl);
            ws_send_close(w, WSLAY_CODE_NORMAL_CLOSURE);
            XD_LOG(&c->log, XD_INFO, "websocket redirected", "uri=\"%s\"", w->hl->ws_see_other);
            c2s_end(c);
            return;
        }
        char to[1100] = "", lang[40] = "", version[16] = "", from[1100] = "";
        bool has_to = tag_attr(m, n, "to", to, sizeof to);
        tag_attr(m, n, "xml:lang", lang, sizeof lang);
        bool has_version = tag_attr(m, n, "version", version, sizeof version);
        bool has_from = tag_attr(m, n, "from", from, sizeof from);
        char *h = xd_asprintf(
            "<stream:stream xmlns='" XD_NS_CLIENT "' xmlns:stream='http://etherx.jabber.org/"
            "streams'%s%s%s%s%s%s%s%s%s%s%s%s>",
            has_to ? " to='" : "", to, has_to ? "'" : "", has_from ? " from='" : "", from,
            has_from ? "'" : "", has_version ? " version='" : "", version,
            has_version ? "'" : "", lang[0] ? " xml:lang='" : "", lang, lang[0] ? "'" : "");
        ws_feed(w, h, strlen(h));
        xd_free(h);
        return;
    }
    if (is_framing(m, n, "close")) {
        ws_feed(w, "</stream:stream>", 16);
        return;
    }
    ws_feed(w, m, n);
}

/* After wslay took the input: what it found that the stream must hear. */
static void
ws_after(ws_conn_t *w)
{
    xd_conn_t *c = w->c;
    if (c->state == C2S_CLOSING)
        return;
    if (w->too_big) {
        char text[96];
        snprintf(text, sizeof text, "stanza too big (limit %zu bytes)",
                 c->listener->max_stanza_bytes);
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, text);
    } else if (w->binary) {
        c2s_close(c, XD_STREAM_BAD_FORMAT, "binary WebSocket messages carry no XMPP");
    } else if (w->peer_closed) {
        /* a close frame without <close/>: the stream ends with it */
        if (c->header_sent && c->state == C2S_OPEN)
            ws_feed(w, "</stream:stream>", 16);
        else
            c2s_end(c);
    }
}

static int
ws_input(xd_conn_t *c, const char *p, size_t n)
{
    ws_conn_t *w = c->xs;
    w->last_in_ms = uv_now(c->tcp.loop);
    w->ping_out = false;
    w->in = p;
    w->in_n = n;
    w->paused = 0;
    wslay_event_recv(w->ctx);
    w->in_n = 0;
    if (c->xport != &ws_xport)
        return 0;
    wslay_event_send(w->ctx); /* pongs, and the reply to a close */
    ws_after(w);
    return w->paused ? XD_TLS_PAUSE : 0;
}

static void
ws_closing(xd_conn_t *c)
{
    ws_conn_t *w = c->xs;
    if (w->ping)
        xd_timer_stop(w->ping);
    ws_send_close(w, w->too_big ? WSLAY_CODE_MESSAGE_TOO_BIG : WSLAY_CODE_NORMAL_CLOSURE);
}

static void
ws_xfree(xd_conn_t *c)
{
    ws_conn_t *w = c->xs;
    if (!w)
        return;
    if (w->ping)
        xd_timer_free(w->ping);
    wslay_event_context_free(w->ctx);
    xd_free(w->out);
    xd_free(w);
}

static const xd_conn_xport_t ws_xport = {
    .name = "websocket",
    .input = ws_input,
    .write = ws_write,
    .closing = ws_closing,
    .free = ws_xfree,
};

/* Keepalive: a ping after an idle interval, the close after a second. */
static void
ws_ping_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    ws_conn_t *w = arg;
    xd_conn_t *c = w->c;
    if (c->state == C2S_CLOSING)
        return;
    uint64_t now = uv_now(c->tcp.loop);
    if (now - w->last_in_ms < w->hl->ws_ping_ms)
        return;
    if (w->ping_out) {
        c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "no answer to the WebSocket ping");
        return;
    }
    w->ping_out = true;
    struct wslay_event_msg m = { WSLAY_PING, (const uint8_t *)"xmppd", 5 };
    if (wslay_event_queue_msg(w->ctx, &m) == 0)
        wslay_event_send(w->ctx);
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_frame_recv_start_callback = ws_frame_start,
    .on_msg_recv_callback = ws_msg,
};

/* The 101 is out and the request read: the connection is a client stream
 * from here, and rest its first WebSocket bytes. */
static void
ws_start(xd_conn_t *c, const http_listener_t *hl, const char *rest, size_t n)
{
    ws_conn_t *w = xd_new(ws_conn_t);
    w->c = c;
    w->hl = hl;
    if (wslay_event_context_server_init(&w->ctx, &ws_callbacks, w) != 0) {
        xd_free(w);
        c2s_end(c);
        return;
    }
    /* ws_frame_start refuses a message above max_stanza_size at the header
     * of the frame that makes it so, with a stream error; wslay's own check
     * (a bare close frame) stays at its default far above. */
    w->last_in_ms = uv_now(c->tcp.loop);
    c->xport = &ws_xport;
    c->xs = w;
    if (hl->ws_ping_ms) {
        w->ping = xd_timer_new(c->ws->worker, ws_ping_fired, w);
        xd_timer_start(w->ping, hl->ws_ping_ms, hl->ws_ping_ms);
    }
    c->role = &xd_c2s_role;
    c->role->accepted(c);
    c2s_set_timeout(c, hl->handshake_ms);
    XD_LOG(&c->log, XD_INFO, "websocket open", "");
    if (n)
        ws_input(c, rest, n);
}

/* Token `tok` in a comma-separated header value (case-insensitive). */
static bool
has_token(const char *v, const char *tok)
{
    size_t tl = strlen(tok);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == tl && !strncasecmp(v, tok, tl))
            return true;
        v = e;
    }
    return false;
}

static void
ws_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    const http_listener_t *hl = http_req_listener(r);
    const char *up = xd_http_req_header(r, "Upgrade");
    const char *conn = xd_http_req_header(r, "Connection");
    if (!up || !has_token(up, "websocket") || !conn || !has_token(conn, "upgrade")) {
        xd_http_add_header(r, "Upgrade", "websocket");
        xd_http_error(r, 426, "this is an XMPP WebSocket endpoint (RFC 7395)");
        return;
    }
    const char *ver = xd_http_req_header(r, "Sec-WebSocket-Version");
    if (!ver || strcmp(ver, "13") != 0) {
        xd_http_add_header(r, "Sec-WebSocket-Version", "13");
        xd_http_error(r, 426, "WebSocket version 13 only");
        return;
    }
    const char *key = xd_http_req_header(r, "Sec-WebSocket-Key");
    unsigned char raw[32];
    size_t rawlen = 0;
    if (!key || strlen(key) != 24 ||
        xd_base64_decode(key, 24, raw, sizeof raw, &rawlen, 0) != 0 || rawlen != 16) {
        xd_http_error(r, 400, "bad Sec-WebSocket-Key");
        return;
    }
    const char *proto = xd_http_req_header(r, "Sec-WebSocket-Protocol");
    if (!proto || !has_token(proto, "xmpp")) {
        /* RFC 7395 3.2: the subprotocol is what makes it XMPP */
        xd_http_error(r, 400, "the WebSocket subprotocol must be xmpp");
        return;
    }
    if (hl->nws_origins) {
        const char *origin = xd_http_req_header(r, "Origin");
        bool ok = false;
        for (size_t i = 0; origin && i < hl->nws_origins; i++)
            if (!strcasecmp(hl->ws_origins[i], origin))
                ok = true;
        if (!ok) {
            xd_http_error(r, 403, "this origin may not open XMPP sessions here");
            return;
        }
    }
    char cat[24 + sizeof WS_GUID];
    memcpy(cat, key, 24);
    memcpy(cat + 24, WS_GUID, sizeof WS_GUID);
    unsigned char dig[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, strlen(cat), dig);
    char acc[64];
    xd_base64_encode(dig, sizeof dig, acc, 0);
    char hdr[256];
    snprintf(hdr, sizeof hdr,
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
             "Sec-WebSocket-Protocol: xmpp\r\n",
             acc);
    http_upgrade(r, hdr, ws_start);
}

static const xd_http_handler_t ws_handler = {
    .request = ws_request,
    .methods = "GET",
};

void
http_ws_setup(void)
{
    xd_http_register("websocket", "/ws", &ws_handler, NULL);
    xd_http_hostmeta_link("urn:xmpp:alt-connections:websocket", "websocket");
}
