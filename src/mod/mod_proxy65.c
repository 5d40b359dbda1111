/*
 * mod_proxy65.c — a SOCKS5 bytestreams proxy (XEP-0065): file transfer
 * between two clients that cannot reach each other directly (both behind
 * NAT), relayed by the server.  The name and options follow ejabberd's
 * module of that name; clients find it in the server's disco#items.
 *
 * The service domain (`host`, default proxy.@HOST@) answers disco#info
 * (identity proxy/bytestreams), the streamhost request (IQ get <query
 * xmlns='http://jabber.org/protocol/bytestreams'/> → <streamhost jid host
 * port/>) and the activation (IQ set <query sid><activate>TARGET</activate>
 * </query> from the initiator).  Both parties connect to the proxy's TCP
 * port and speak SOCKS5 (RFC 1928, the subset of XEP-0065 5): no
 * authentication, CONNECT to the "domain" SHA1(SID + initiator JID +
 * target JID) in hex, port 0.  The proxy answers success at once and
 * holds the connection; when the initiator's activation names the pair's
 * hash (computed here from the IQ's from, sid and target), the bytes of
 * each are relayed to the other, both ways, until both have closed their
 * sending side (half-closes are passed on, so the receiver gets every byte
 * before its end of stream).
 *
 * The relay runs on a thread and libuv loop of its own per host instance:
 * the two connections of a transfer may be accepted by any worker, and
 * bytes never pass through the XMPP loops.  Workers hand activations to it
 * through a bounded queue (full: resource-constraint); the activating
 * stream is held until the proxy answered (input.h).
 *
 * Limits: `max_connections` in all and `max_connections_per_ip`; a
 * connection not activated within `pending_timeout` is closed, an active
 * transfer silent for `idle_timeout` too; at most 64 KiB sent before the
 * activation are kept (more: closed); a transfer's reading stops while the
 * other side has more than 1 MiB not yet written (back-pressure), and
 * `max_rate` bytes per second per connection when set.  Who may activate
 * (and ask for the streamhost): the host's accounts, or the `access` rule.
 */
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/route.h"
#include "xmppd/service.h"
#include "xmppd/stanza.h"

#define PX_NS "http://jabber.org/protocol/bytestreams"
#define PX_HASH_LEN 40                 /* SHA1 in hex (XEP-0065 5.3.2) */
#define PX_EARLY_MAX (64u << 10)       /* bytes kept before the activation */
#define PX_BACKLOG_HIGH (1u << 20)     /* the peer's unwritten bytes that stop reading */
#define PX_BACKLOG_LOW (256u << 10)    /* … and restart it */
#define PX_READ_CHUNK (64u << 10)
#define PX_CMD_MAX 1024                /* activations waiting for the proxy's loop */
#define PX_TICK_MS 100
#define PX_SID_MAX 1024

typedef struct px_conf {
    char *host;
    char *name;
    char *ip;
    int port;
    char *hostname;
    char *access;
    int max_connections;
    int max_per_ip;
    uint64_t pending_timeout_ms;
    uint64_t idle_timeout_ms;
    size_t max_rate;
} px_conf_t;

#define C_ px_conf_t
static const xd_opt_t px_opts[] = {
    XD_OPT_STRING("host", C_, host, "proxy.@HOST@",
                  "Domain of the proxy service; `@HOST@` is replaced by the served host."),
    XD_OPT_STRING("name", C_, name, "SOCKS5 Bytestreams",
                  "Name of the service in its disco#info identity."),
    XD_OPT_STRING("ip", C_, ip, "\"::\"",
                  "Address the proxy listens on (`\"::\"`, quoted in YAML, also takes IPv4 where the "
                  "system allows, "
                  "`0.0.0.0` IPv4 only)."),
    XD_OPT_INT("port", C_, port, "7777", 1, 65535, "TCP port of the proxy."),
    XD_OPT_STRING("hostname", C_, hostname, NULL,
                  "Host name or address clients are told to connect to.  Unset: `ip`, or the "
                  "served host's domain when `ip` is a wildcard."),
    XD_OPT_STRING("access", C_, access, NULL,
                  "Access rule: who may use the proxy (activate transfers, ask for its address). "
                  " Unset: the accounts of the served host."),
    XD_OPT_INT("max_connections", C_, max_connections, "1000", 2, 1000000,
               "Connections to the proxy at once; more are closed at accept."),
    XD_OPT_INT("max_connections_per_ip", C_, max_per_ip, "16", 1, 1000000,
               "Connections from one address at once."),
    XD_OPT_DURATION("pending_timeout", C_, pending_timeout_ms, "30s",
                    "A connection not activated within this is closed."),
    XD_OPT_DURATION("idle_timeout", C_, idle_timeout_ms, "5m",
                    "An active transfer with no bytes either way for this long is closed."),
    XD_OPT_SIZE("max_rate", C_, max_rate, "0",
                "Bytes per second each connection may send through the proxy; 0: no limit."),
    XD_OPT_END,
};
#undef C_

/* ---- the relay's state ---------------------------------------------------------------------- */

/* DONE: refused, waiting for the client to close (or the pending timeout). */
enum { PX_GREETING, PX_REQUEST, PX_WAIT, PX_ACTIVE, PX_DONE };

typedef struct px_conn px_conn_t;
typedef struct px_state px_state_t;

struct px_conn {
    uv_tcp_t tcp;          /* first: the handle's data is the conn */
    px_state_t *st;
    px_conn_t *prev, *next; /* every connection */
    px_conn_t *peer;        /* the other side once active */
    int phase;
    char ip[INET6_ADDRSTRLEN];
    char hash[PX_HASH_LEN + 1];
    unsigned char in[600];  /* the SOCKS5 messages being read */
    size_t in_len;
    char *early;            /* bytes before the activation */
    size_t early_len;
    uint64_t since_ms;      /* accepted, then last byte either way (active) */
    uint64_t bytes;         /* relayed from this side */
    double tokens;          /* max_rate bucket */
    bool reading, paused;   /* paused: by back-pressure or the rate */
    bool rd_eof;            /* its end of stream came */
    bool wr_shut, shut_done; /* ours to it: asked (after the queued bytes), done */
    bool closing;
};

/* An activation handed from a worker to the proxy's loop. */
typedef struct px_cmd {
    struct px_cmd *next;
    char hash[PX_HASH_LEN + 1];
    xd_stanza_t *iq;        /* the request (a reference) */
    xd_input_ref_t in;      /* the activating stream, held */
} px_cmd_t;

struct px_state {
    char *domain;           /* the service's JID */
    char *hostname;         /* advertised */
    px_conf_t conf;         /* a copy of the options' scalars */
    char *access;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_timer_t tick;
    uv_thread_t thread;
    bool running;
    pthread_mutex_t mu;     /* cmds, ncmds, stopping */
    px_cmd_t *cmds, **cmds_tail;
    size_t ncmds;
    bool stopping;
    px_conn_t *conns;       /* the loop's own from here */
    size_t nconns;
    uint64_t now_ms;
};

static uint64_t
px_now(px_state_t *s)
{
    return s->now_ms = uv_now(&s->loop);
}

/* ---- connections ---------------------------------------------------------------------------- */

static void
px_conn_freed(uv_handle_t *h)
{
    px_conn_t *c = h->data;
    xd_free(c->early);
    xd_free(c);
}

static void
px_close(px_conn_t *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    px_state_t *s = c->st;
    if (c->phase == PX_ACTIVE && c->peer && !c->peer->closing)
        XD_LOG(NULL, XD_INFO, "proxy65 transfer closed", "service=%s hash=%.8s bytes=%llu/%llu",
               s->domain, c->hash, (unsigned long long)c->bytes,
               (unsigned long long)c->peer->bytes);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    px_conn_t *peer = c->peer;
    c->peer = NULL;
    if (peer) {
        peer->peer = NULL;
        px_close(peer);
    }
    uv_close((uv_handle_t *)&c->tcp, px_conn_freed);
}

static void px_read_cb(uv_stream_t *h, ssize_t n, const uv_buf_t *buf);

static void
px_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    px_conn_t *c = h->data;
    if (c->phase < PX_WAIT) {
        buf->base = (char *)c->in + c->in_len;
        buf->len = sizeof c->in - c->in_len;
        return;
    }
    buf->base = xd_malloc(PX_READ_CHUNK);
    buf->len = PX_READ_CHUNK;
}

static void
px_read_start(px_conn_t *c)
{
    if (!c->reading && !c->closing && !c->rd_eof) {
        uv_read_start((uv_stream_t *)&c->tcp, px_alloc_cb, px_read_cb);
        c->reading = true;
    }
}

static void
px_read_stop(px_conn_t *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

typedef struct px_write {
    uv_write_t req;
    px_conn_t *from; /* whose bytes (NULL: the proxy's own reply) */
    char *data;      /* xd_free after the write, or NULL (static) */
} px_write_t;

static void
px_write_cb(uv_write_t *req, int status)
{
    px_write_t *w = (px_write_t *)req;
    px_conn_t *to = req->handle->data;
    xd_free(w->data);
    px_conn_t *from = w->from;
    xd_free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            px_close(to);
        return;
    }
    /* bytes going out count as activity too (a transfer's tail draining to
     * a slow receiver after the sender ended) */
    to->since_ms = px_now(to->st);
    if (to->peer)
        to->peer->since_ms = to->since_ms;
    /* Back-pressure off: the side that fills `to` reads again. */
    if (from && from == to->peer && from->paused && !from->closing
        && uv_stream_get_write_queue_size((uv_stream_t *)&to->tcp) < PX_BACKLOG_LOW
        && (!from->st->conf.max_rate || from->tokens > 0)) {
        from->paused = false;
        px_read_start(from);
    }
}

/* Writes len bytes of data (taken: xd_free'd after the write; or static
 * when own is false) to `to`. */
static int
px_send(px_conn_t *to, px_conn_t *from, char *data, size_t len, bool own)
{
    px_write_t *w = xd_new(px_write_t);
    w->from = from;
    w->data = own ? data : NULL;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&to->tcp, &b, 1, px_write_cb);
    if (rc < 0) {
        xd_free(w->data);
        xd_free(w);
        px_close(to);
        return -1;
    }
    return 0;
}

static void
px_reply(px_conn_t *c, const unsigned char *msg, size_t len)
{
    char *d = xd_malloc(len);
    memcpy(d, msg, len);
    px_send(c, NULL, d, len, true);
}

static void px_maybe_close(px_conn_t *c);

static void
px_shutdown_cb(uv_shutdown_t *req, int status)
{
    px_conn_t *c = req->handle->data;
    xd_free(req);
    if (status == UV_ECANCELED || c->closing)
        return; /* closed meanwhile */
    c->shut_done = true;
    px_maybe_close(c);
}

/* No more bytes to c after what is queued (its end of stream). */
static void
px_shutdown(px_conn_t *c)
{
    uv_shutdown_t *sh = xd_new(uv_shutdown_t);
    if (uv_shutdown(sh, (uv_stream_t *)&c->tcp, px_shutdown_cb) < 0)
        xd_free(sh);
}

/* The SOCKS5 answer `rep` (a failure), then the end: the client closes,
 * or the pending timeout does. */
static void
px_refuse(px_conn_t *c, unsigned char rep)
{
    const unsigned char r[] = { 5, rep, 0, 1, 0, 0, 0, 0, 0, 0 };
    px_reply(c, r, sizeof r);
    c->phase = PX_DONE;
    px_shutdown(c);
}

static size_t
px_count_hash(px_state_t *s, const char *hash)
{
    size_t n = 0;
    for (px_conn_t *c = s->conns; c; c = c->next)
        if ((c->phase == PX_WAIT || c->phase == PX_ACTIVE) && !c->closing && !strcmp(c->hash, hash))
            n++;
    return n;
}

/* Parses what is in c->in: the greeting, then the CONNECT request. */
static void
px_handshake(px_conn_t *c)
{
    px_state_t *s = c->st;
    if (c->phase == PX_GREETING) {
        if (c->in_len < 2)
            return;
        size_t need = 2 + (size_t)c->in[1];
        if (c->in[0] != 5) {
            px_close(c);
            return;
        }
        if (c->in_len < need)
            return;
        bool noauth = memchr(c->in + 2, 0, c->in[1]) != NULL;
        const unsigned char r[] = { 5, noauth ? 0 : 0xff };
        px_reply(c, r, sizeof r);
        if (!noauth) {
            c->phase = PX_DONE;
            px_shutdown(c);
            return;
        }
        memmove(c->in, c->in + need, c->in_len - need);
        c->in_len -= need;
        c->phase = PX_REQUEST;
    }
    if (c->phase != PX_REQUEST || c->in_len < 5)
        return;
    if (c->in[0] != 5 || c->in[2] != 0) {
        px_close(c);
        return;
    }
    if (c->in[1] != 1) {
        px_refuse(c, 7); /* command not supported */
        return;
    }
    if (c->in[3] != 3) {
        px_refuse(c, 8); /* address type not supported */
        return;
    }
    size_t alen = c->in[4], need = 5 + alen + 2;
    if (c->in_len < need)
        return;
    bool hex = alen == PX_HASH_LEN;
    for (size_t i = 0; hex && i < alen; i++) {
        unsigned char ch = c->in[5 + i];
        hex = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
    }
    if (!hex) {
        px_refuse(c, 2); /* not allowed: not a XEP-0065 address */
        return;
    }
    memcpy(c->hash, c->in + 5, PX_HASH_LEN);
    c->hash[PX_HASH_LEN] = '\0';
    if (px_count_hash(s, c->hash) >= 2) {
        px_refuse(c, 2); /* a third party for one stream */
        return;
    }
    unsigned char r[5 + PX_HASH_LEN + 2] = { 5, 0, 0, 3, PX_HASH_LEN };
    memcpy(r + 5, c->hash, PX_HASH_LEN);
    px_reply(c, r, sizeof r);
    c->phase = PX_WAIT;
    /* What came after the request is early data. */
    if (c->in_len > need) {
        c->early = xd_malloc(PX_EARLY_MAX);
        c->early_len = c->in_len - need;
        memcpy(c->early, c->in + need, c->early_len);
    }
    c->in_len = 0;
}

/* A relayed chunk (taken) from c to its peer, with the rate and the
 * back-pressure applied to c. */
static void
px_relay(px_conn_t *c, char *data, size_t n)
{
    px_conn_t *p = c->peer;
    c->bytes += n;
    c->since_ms = p->since_ms = c->st->now_ms;
    if (px_send(p, c, data, n, true) != 0)
        return;
    if (c->st->conf.max_rate)
        c->tokens -= (double)n;
    bool full = uv_stream_get_write_queue_size((uv_stream_t *)&p->tcp) > PX_BACKLOG_HIGH;
    if (full || (c->st->conf.max_rate && c->tokens <= 0)) {
        c->paused = true;
        px_read_stop(c);
    }
}

/* A transfer closes once both sides ended theirs and each end of stream
 * was passed on after every byte queued before it (the shutdown of the
 * other side completed): closing earlier would drop what is queued. */
static void
px_maybe_close(px_conn_t *c)
{
    px_conn_t *p = c->peer;
    if (c->phase != PX_ACTIVE || !p)
        return;
    if (c->rd_eof && p->rd_eof && c->shut_done && p->shut_done)
        px_close(c);
}

/* c has sent its last byte: its peer's sending side is shut after what
 * is queued. */
static void
px_eof(px_conn_t *c)
{
    c->rd_eof = true;
    px_read_stop(c);
    px_conn_t *p = c->peer;
    if (!p) {
        px_close(c);
        return;
    }
    if (!p->wr_shut) {
        p->wr_shut = true;
        px_shutdown(p);
    }
    px_maybe_close(c);
}

static void
px_read_cb(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    px_conn_t *c = h->data;
    px_state_t *s = c->st;
    bool chunk = c->phase >= PX_WAIT && buf && buf->base && buf->base != (char *)c->in;
    if (n == 0 || c->closing) {
        if (chunk)
            xd_free(buf->base);
        return;
    }
    if (n < 0) {
        if (chunk)
            xd_free(buf->base);
        if (n == UV_EOF && c->phase == PX_ACTIVE)
            px_eof(c);
        else
            px_close(c);
        return;
    }
    px_now(s);
    if (c->phase == PX_DONE) {
        xd_free(buf->base);
        return;
    }
    if (c->phase < PX_WAIT) {
        c->in_len += (size_t)n;
        px_handshake(c);
        return;
    }
    if (c->phase == PX_WAIT) {
        /* Before the activation: kept, up to PX_EARLY_MAX. */
        if (!c->early)
            c->early = xd_malloc(PX_EARLY_MAX);
        if (c->early_len + (size_t)n > PX_EARLY_MAX) {
            xd_free(buf->base);
            px_close(c);
            return;
        }
        memcpy(c->early + c->early_len, buf->base, (size_t)n);
        c->early_len += (size_t)n;
        xd_free(buf->base);
        return;
    }
    px_relay(c, buf->base, (size_t)n);
}

/* The pair of `hash`, both waiting, relays from now on. */
static bool
px_activate(px_state_t *s, const char *hash)
{
    px_conn_t *a = NULL, *b = NULL;
    for (px_conn_t *c = s->conns; c; c = c->next) {
        if (c->closing || c->phase != PX_WAIT || strcmp(c->hash, hash))
            continue;
        if (!a)
            a = c;
        else if (!b)
            b = c;
    }
    if (!a || !b)
        return false;
    a->peer = b;
    b->peer = a;
    a->phase = b->phase = PX_ACTIVE;
    a->since_ms = b->since_ms = px_now(s);
    a->tokens = b->tokens = (double)s->conf.max_rate;
    px_conn_t *sides[2] = { a, b };
    for (int i = 0; i < 2; i++) {
        px_conn_t *c = sides[i];
        if (c->early_len) {
            char *d = c->early;
            size_t n = c->early_len;
            c->early = NULL;
            c->early_len = 0;
            px_relay(c, d, n);
        }
    }
    for (int i = 0; i < 2; i++)
        if (!sides[i]->paused)
            px_read_start(sides[i]);
    XD_LOG(NULL, XD_INFO, "proxy65 transfer activated", "service=%s hash=%.8s from=%s to=%s",
           s->domain, hash, a->ip, b->ip);
    return true;
}

static void
px_on_connection(uv_stream_t *server, int status)
{
    px_state_t *s = server->data;
    if (status < 0)
        return;
    px_conn_t *c = xd_new(px_conn_t);
    c->st = s;
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, px_conn_freed);
        return;
    }
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) == 0) {
        if (sa.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&sa;
            if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr))
                inet_ntop(AF_INET, &a6->sin6_addr.s6_addr[12], c->ip, sizeof c->ip);
            else
                inet_ntop(AF_INET6, &a6->sin6_addr, c->ip, sizeof c->ip);
        } else {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)&sa)->sin_addr, c->ip, sizeof c->ip);
        }
    }
    size_t same_ip = 0;
    for (px_conn_t *o = s->conns; o; o = o->next)
        if (!strcmp(o->ip, c->ip))
            same_ip++;
    if (s->nconns >= (size_t)s->conf.max_connections || same_ip >= (size_t)s->conf.max_per_ip) {
        XD_LOG(NULL, XD_WARN, "proxy65 connection refused", "service=%s ip=%s reason=%s",
               s->domain, c->ip, s->nconns >= (size_t)s->conf.max_connections ? "max_connections"
                                                                             : "per ip");
        uv_close((uv_handle_t *)&c->tcp, px_conn_freed);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    c->since_ms = px_now(s);
    uv_tcp_nodelay(&c->tcp, 1);
    px_read_start(c);
}

/* ---- the loop: activations, timeouts, stop --------------------------------------------------- */

static void
px_answer(px_cmd_t *cmd, bool ok)
{
    if (ok)
        xd_route_take(xd_iq_result(cmd->iq));
    else
        xd_route_error(cmd->iq, XD_COND_ITEM_NOT_FOUND,
                       "no such bytestream: both parties must be connected to the proxy first");
    xd_stanza_unref(cmd->iq);
    xd_input_release(cmd->in);
    xd_free(cmd);
}

static void
px_close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    if (h->type == UV_TCP && h->data && h->data != h->loop->data) {
        px_close(h->data);
        return;
    }
    uv_close(h, NULL);
}

static void
px_wake_cb(uv_async_t *a)
{
    px_state_t *s = a->data;
    pthread_mutex_lock(&s->mu);
    px_cmd_t *cmds = s->cmds;
    s->cmds = NULL;
    s->cmds_tail = &s->cmds;
    s->ncmds = 0;
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    while (cmds) {
        px_cmd_t *cmd = cmds;
        cmds = cmd->next;
        px_answer(cmd, !stopping && px_activate(s, cmd->hash));
    }
    if (stopping)
        uv_walk(&s->loop, px_close_handle, NULL);
}

static void
px_tick_cb(uv_timer_t *t)
{
    px_state_t *s = t->data;
    uint64_t now = px_now(s);
    for (px_conn_t *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing)
            continue;
        if (c->phase != PX_ACTIVE) {
            if (now - c->since_ms >= s->conf.pending_timeout_ms)
                px_close(c);
            continue;
        }
        if (now - c->since_ms >= s->conf.idle_timeout_ms) {
            px_close(c);
            continue;
        }
        if (s->conf.max_rate) {
            double cap = (double)s->conf.max_rate;
            c->tokens += cap * PX_TICK_MS / 1000.0;
            if (c->tokens > cap)
                c->tokens = cap;
            if (c->paused && c->tokens > 0 && c->peer
                && uv_stream_get_write_queue_size((uv_stream_t *)&c->peer->tcp) < PX_BACKLOG_LOW) {
                c->paused = false;
                px_read_start(c);
            }
        }
    }
}

static void
px_thread(void *arg)
{
    px_state_t *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* ---- the service ---------------------------------------------------------------------------- */

static void
px_disco_info(const px_conf_t *c, const xd_stanza_t *st)
{
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(b, "query", XD_NS_DISCO_INFO);
    xd_el_t *id = xd_el_add_child(q, "identity", NULL);
    xd_el_set_attr(id, "category", "proxy");
    xd_el_set_attr(id, "type", "bytestreams");
    xd_el_set_attr(id, "name", c->name);
    static const char *const feats[] = { XD_NS_DISCO_INFO, XD_NS_DISCO_ITEMS, PX_NS, XD_NS_PING,
                                         NULL };
    for (size_t i = 0; feats[i]; i++)
        xd_el_set_attr(xd_el_add_child(q, "feature", NULL), "var", feats[i]);
    xd_route_take(xd_el_freeze(b));
}

static void
px_streamhost(px_state_t *s, const xd_stanza_t *st)
{
    char port[8];
    snprintf(port, sizeof port, "%d", s->conf.port);
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(b, "query", PX_NS);
    xd_el_t *h = xd_el_add_child(q, "streamhost", NULL);
    xd_el_set_attr(h, "jid", s->domain);
    xd_el_set_attr(h, "host", s->hostname);
    xd_el_set_attr(h, "port", port);
    xd_route_take(xd_el_freeze(b));
}

/* XEP-0065 6.3.2: SHA1(SID + initiator + target) in hex, the JIDs as
 * the parties write them (the initiator's: the IQ's from). */
static void
px_hash(const char *sid, xd_str_t initiator, const char *target, char out[PX_HASH_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    bool ok = h && EVP_DigestInit_ex(h, EVP_sha1(), NULL) && EVP_DigestUpdate(h, sid, strlen(sid))
        && EVP_DigestUpdate(h, initiator.p, initiator.len)
        && EVP_DigestUpdate(h, target, strlen(target)) && EVP_DigestFinal_ex(h, md, &mdlen);
    EVP_MD_CTX_free(h);
    out[0] = '\0';
    for (unsigned i = 0; ok && i < mdlen && i < PX_HASH_LEN / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void
px_activate_request(px_state_t *s, const xd_stanza_t *st, const xd_el_t *q)
{
    const char *sid = xd_el_attr(q, "sid");
    const xd_el_t *act = xd_el_child(q, "activate", PX_NS);
    const char *target = act ? xd_el_text(act) : NULL;
    xd_jid_t *tj = NULL;
    if (!sid || !*sid || strlen(sid) > PX_SID_MAX || !target || !*target
        || xd_jid_parse(xd_str_c(target), &tj) != 0) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "a sid and an <activate/> with a JID");
        return;
    }
    xd_jid_unref(tj);
    px_cmd_t *cmd = xd_new(px_cmd_t);
    px_hash(sid, xd_jid_full_str(xd_stanza_from(st)), target, cmd->hash);
    cmd->iq = xd_stanza_ref(st);
    pthread_mutex_lock(&s->mu);
    bool ok = !s->stopping && s->ncmds < PX_CMD_MAX;
    if (ok) {
        cmd->in = xd_input_hold();
        *s->cmds_tail = cmd;
        s->cmds_tail = &cmd->next;
        s->ncmds++;
    }
    pthread_mutex_unlock(&s->mu);
    if (!ok) {
        xd_stanza_unref(cmd->iq);
        xd_free(cmd);
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "the proxy is busy; try again");
        return;
    }
    uv_async_send(&s->wake);
}

static void
px_route(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)arg;
    px_state_t *s = xd_module_state(ctx);
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    const xd_el_t *q = xd_el_first_child(root);
    bool get = type && !strcmp(type, "get"), set = type && !strcmp(type, "set");
    const xd_jid_t *from = xd_stanza_from(st);
    if (xd_service_answer_common(st)) {
        ; /* not for the service itself */
    } else if (get && q && xd_el_is(q, "query", XD_NS_DISCO_INFO) && !xd_el_attr(q, "node")) {
        px_disco_info(&s->conf, st);
    } else if ((get || set) && q && xd_el_is(q, "query", PX_NS)) {
        if (!xd_access_allowed(xd_module_host(ctx), s->access, from))
            xd_route_error(st, XD_COND_FORBIDDEN, "you may not use this proxy");
        else if (get)
            px_streamhost(s, st);
        else
            px_activate_request(s, st, q);
    } else if (xd_iq_is_request(root)) {
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    xd_stanza_unref(st);
}

/* disco#items of the served host lists the proxy. */
static int
px_disco_items(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)arg;
    if (ev->node)
        return XD_HOOK_OK;
    px_state_t *s = xd_module_state(ctx);
    xd_el_t *it = xd_el_add_child(ev->query, "item", NULL);
    xd_el_set_attr(it, "jid", s->domain);
    xd_el_set_attr(it, "name", s->conf.name);
    return XD_HOOK_OK;
}

/* ---- module ----------------------------------------------------------------------------------- */

static void
px_state_free(px_state_t *s)
{
    xd_free(s->domain);
    xd_free(s->hostname);
    xd_free(s->access);
    xd_free(s->conf.name);
    pthread_mutex_destroy(&s->mu);
    xd_free(s);
}

static void
px_stop(xd_module_ctx_t *ctx)
{
    px_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    xd_module_set_state(ctx, NULL);
    if (s->running) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_mutex_unlock(&s->mu);
        uv_async_send(&s->wake);
        uv_thread_join(&s->thread);
        /* Activations that came after the last wake. */
        while (s->cmds) {
            px_cmd_t *cmd = s->cmds;
            s->cmds = cmd->next;
            px_answer(cmd, false);
        }
        uv_loop_close(&s->loop);
    }
    px_state_free(s);
}

static bool
px_wildcard(const char *ip)
{
    return !strcmp(ip, "::") || !strcmp(ip, "0.0.0.0");
}

/* Undoes px_listen's handles and loop before its thread ran. */
static void
px_unwind(px_state_t *s)
{
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->wake, NULL);
    uv_close((uv_handle_t *)&s->tick, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
}

/* The loop, its handles and the listening socket; the thread starts last. */
static int
px_listen(xd_module_ctx_t *ctx, px_state_t *s, const px_conf_t *c)
{
    struct sockaddr_storage sa;
    if (uv_ip6_addr(c->ip, c->port, (struct sockaddr_in6 *)&sa) != 0
        && uv_ip4_addr(c->ip, c->port, (struct sockaddr_in *)&sa) != 0)
        return xd_module_fail(ctx, XD_EINVAL, "ip %s is not an IPv4 or IPv6 address", c->ip);
    int rc = uv_loop_init(&s->loop);
    if (rc != 0)
        return xd_module_fail(ctx, XD_EINTERNAL, "cannot start the proxy's loop: %s", uv_strerror(rc));
    s->loop.data = s;
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    uv_async_init(&s->loop, &s->wake, px_wake_cb);
    s->wake.data = s;
    uv_timer_init(&s->loop, &s->tick);
    s->tick.data = s;
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 128, px_on_connection);
    if (rc != 0) {
        px_unwind(s);
        return xd_module_fail(ctx, XD_EINTERNAL, "cannot listen on [%s]:%d: %s", c->ip, c->port,
                              uv_strerror(rc));
    }
    uv_timer_start(&s->tick, px_tick_cb, PX_TICK_MS, PX_TICK_MS);
    rc = uv_thread_create(&s->thread, px_thread, s);
    if (rc != 0) {
        px_unwind(s);
        return xd_module_fail(ctx, XD_EINTERNAL, "cannot start the proxy's thread: %s",
                              uv_strerror(rc));
    }
    s->running = true;
    return 0;
}

static int
px_start(xd_module_ctx_t *ctx)
{
    const px_conf_t *c = xd_module_opts(ctx);
    char *domain = xd_module_service_domain(ctx, c->host);
    if (!domain)
        return XD_EINVAL;
    px_state_t *s = xd_new(px_state_t);
    s->domain = domain;
    s->conf = *c;
    s->conf.host = s->conf.ip = s->conf.hostname = s->conf.access = NULL;
    s->conf.name = xd_strdup(c->name);
    s->access = c->access ? xd_strdup(c->access) : NULL;
    s->hostname = c->hostname ? xd_module_expand(ctx, c->hostname)
                  : px_wildcard(c->ip) ? xd_strdup(xd_module_host(ctx))
                                       : xd_strdup(c->ip);
    pthread_mutex_init(&s->mu, NULL);
    s->cmds_tail = &s->cmds;
    xd_module_set_state(ctx, s);
    int rc = px_listen(ctx, s, c);
    if (rc != 0)
        return rc;
    rc = xd_module_service(ctx, s->domain, px_route, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_DISCO_LOCAL_ITEMS, XD_HOOK_PRIO_DEFAULT, px_disco_items,
                            NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot serve %s: %s", s->domain, xd_strerror(rc));
    XD_LOG(NULL, XD_INFO, "proxy65 listening", "service=%s ip=%s port=%d hostname=%s", s->domain,
           c->ip, c->port, s->hostname);
    return 0;
}

const xd_module_t xd_mod_proxy65 = {
    .abi = XD_MODULE_ABI,
    .name = "mod_proxy65",
    .doc = "SOCKS5 Bytestreams proxy (XEP-0065): file transfers relayed for clients that "
           "cannot connect to each other",
    .opts = px_opts,
    .opts_size = sizeof(px_conf_t),
    .start = px_start,
    .stop = px_stop,
};
