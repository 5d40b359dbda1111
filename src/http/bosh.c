/*
 * bosh.c — XMPP over BOSH (XEP-0124, XEP-0206): the `bosh` handler and the
 * transport it puts under a client stream.
 *
 * A BOSH session is a c2s stream like a TCP or WebSocket one (SASL, bind,
 * stream management, everything): a connection without a socket
 * (c2s_conn_open_detached) whose transport takes the stanzas out of the
 * <body/> wrappers the client POSTs and puts what the role writes into the
 * responses of the requests it holds.  The router and the modules see a
 * client stream and nothing else.
 *
 * Ownership: a session belongs to the worker whose HTTP connection created
 * it; the sid table (process-wide, under a lock) names that worker.  A
 * request that arrives on another worker is parsed there and posted to the
 * owner, which answers it by handle: xd_http_respond on its own worker, or
 * a message to the worker of the request (docs/design.md "BOSH").
 *
 * Request ids: the session has processed every rid up to `hi`.  rid hi+1
 * is processed; hi+2 … hi+requests wait until the gap fills; an rid at or
 * below hi within the window gets its cached response again (a lost
 * response); anything else is item-not-found.  Held requests (at most
 * `hold`) are answered when output is ready, when a newer request makes
 * them too many, or empty after `wait`.  With no request held the stream's
 * timer is set to `inactivity` (or the pause asked for): when it fires the
 * stream ends as an idle TCP stream does (connection-timeout; stream
 * management may keep the session for a resume).  Output for a session
 * with no request held is queued up to bosh_max_queue bytes, then the
 * stream is closed with policy-violation as for a TCP client that does not
 * read.
 *
 * A held request whose client goes away (its connection closes: the HTTP
 * server's `aborted`) leaves the session: it no longer counts against
 * `hold` and nothing is answered into it; a request waiting for a gap is
 * forgotten as if it never came.  The client repeats what it got no answer
 * to (XEP-0124 14.1): a repeated rid whose request was dropped is held
 * again.  The request's udata is the sid it belongs to (a copy), so the
 * owner can be told.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_int.h"

#include "core/worker.h"
#include "stream/c2s.h"
#include "stream/wstate.h"
#include "xml/tree.h"
#include "xmppd/alloc.h"
#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"

#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define NS_XBOSH "urn:xmpp:xbosh"
#define NS_STREAMS "http://etherx.jabber.org/streams"
#define BOSH_MAX_HOLD 16
#define BOSH_MAX_WINDOW 17
#define BOSH_BUCKETS 1024
#define BOSH_POLLING_MS 2000 /* shortest interval between empty requests (`polling`) */

typedef struct bosh_held {
    xd_http_handle_t h;
    uint64_t rid;
    uint64_t since_ms; /* loop time it was held from */
} bosh_held_t;

typedef struct bosh_pend {
    xd_http_handle_t h;
    uint64_t rid;
    xd_el_t *body;
} bosh_pend_t;

typedef struct bosh_cached {
    uint64_t rid;
    char *resp; /* NULL: not answered yet (held) */
    size_t len;
} bosh_cached_t;

typedef struct bosh_sess {
    struct bosh_sess *next; /* sid table bucket */
    char sid[33];
    unsigned worker;
    xd_conn_t *c; /* NULL once the stream is gone */
    const http_listener_t *hl;
    uint64_t wait_ms, inactivity_ms, pause_ms;
    unsigned hold, requests;
    uint64_t hi; /* every rid up to here was processed */
    bool created; /* the creation response went out */
    bosh_held_t held[BOSH_MAX_HOLD + 1];
    unsigned nheld;
    bosh_pend_t pend[BOSH_MAX_WINDOW];
    unsigned npend;
    bosh_cached_t cache[BOSH_MAX_WINDOW]; /* rid % requests */
    char *out; /* complete elements for the next response */
    size_t out_len, out_cap;
    char *raw; /* the role's output not yet cut into elements */
    size_t raw_len;
    bool closed_stream; /* the role wrote </stream:stream> */
    bool stream_error;  /* ... after a stream error */
    bool client_term;   /* the client terminated */
    bool overflow;      /* the queue bound was hit */
    uint64_t last_empty_ms; /* loop time of the last empty request */
    char to[256];
    char lang[36];
    char ver[16];
    xd_timer_t *wait_timer;
    xd_timer_t *flush_timer;
} bosh_sess_t;

/* ---- the sid table ------------------------------------------------------------------------ */

static uv_mutex_t bosh_lock;
static uv_once_t bosh_once = UV_ONCE_INIT;
static bosh_sess_t *bosh_table[BOSH_BUCKETS];

static void
bosh_init_lock(void)
{
    uv_mutex_init(&bosh_lock);
}

static unsigned
bosh_bucket(const char *sid)
{
    unsigned h = 5381;
    for (; *sid; sid++)
        h = h * 33 + (unsigned char)*sid;
    return h % BOSH_BUCKETS;
}

static void
bosh_table_put(bosh_sess_t *s)
{
    unsigned b = bosh_bucket(s->sid);
    uv_mutex_lock(&bosh_lock);
    s->next = bosh_table[b];
    bosh_table[b] = s;
    uv_mutex_unlock(&bosh_lock);
}

static void
bosh_table_del(bosh_sess_t *s)
{
    unsigned b = bosh_bucket(s->sid);
    uv_mutex_lock(&bosh_lock);
    for (bosh_sess_t **p = &bosh_table[b]; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    uv_mutex_unlock(&bosh_lock);
}

/* The owner worker of sid, and the session when the caller is that owner;
 * false when there is no such session. */
static bool
bosh_table_find(const char *sid, unsigned self, unsigned *worker, bosh_sess_t **sess)
{
    unsigned b = bosh_bucket(sid);
    bool found = false;
    *sess = NULL;
    uv_mutex_lock(&bosh_lock);
    for (bosh_sess_t *s = bosh_table[b]; s; s = s->next)
        if (!strcmp(s->sid, sid)) {
            found = true;
            *worker = s->worker;
            if (s->worker == self)
                *sess = s; /* only its owner frees it */
            break;
        }
    uv_mutex_unlock(&bosh_lock);
    return found;
}

/* ---- answering requests by handle ----------------------------------------------------------- */

typedef struct bosh_answer {
    xd_http_handle_t h;
    size_t len;
    char body[];
} bosh_answer_t;

static void
bosh_answer_here(xd_http_handle_t h, const char *body, size_t len)
{
    xd_http_req_t *r = xd_http_req_find(h);
    if (!r)
        return;
    xd_free(xd_http_req_data(r)); /* the sid (bosh_tag) */
    xd_http_req_set_data(r, NULL);
    xd_http_respond(r, 200, "text/xml; charset=utf-8", body, len);
}

/* Request r belongs to session sid: its `aborted` tells the owner. */
static void
bosh_tag(xd_http_req_t *r, const char *sid)
{
    xd_free(xd_http_req_data(r));
    xd_http_req_set_data(r, xd_strdup(sid));
}

static bool
handle_eq(xd_http_handle_t a, xd_http_handle_t b)
{
    return a.worker == b.worker && a.conn_id == b.conn_id && a.seq == b.seq;
}

static void
bosh_answer_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    bosh_answer_t *a = arg;
    bosh_answer_here(a->h, a->body, a->len);
    xd_free(a);
}

/* Answers the request h, on whatever worker it lives. */
static void
bosh_answer(xd_http_handle_t h, const char *body, size_t len)
{
    xd_worker_t *self = xd_worker_self();
    if (self && xd_worker_index(self) == h.worker) {
        bosh_answer_here(h, body, len);
        return;
    }
    bosh_answer_t *a = xd_malloc(sizeof *a + len + 1);
    a->h = h;
    a->len = len;
    memcpy(a->body, body, len);
    a->body[len] = '\0';
    if (xd_worker_post(xd_worker_get(h.worker), bosh_answer_msg, a) != 0)
        xd_free(a);
}

static void
bosh_answer_term(xd_http_handle_t h, const char *cond)
{
    char b[200];
    int n = snprintf(b, sizeof b, "<body xmlns='" NS_HTTPBIND "' type='terminate' condition='%s'/>",
                     cond);
    bosh_answer(h, b, (size_t)n);
}

/* ---- the output: the role's bytes cut into elements ---------------------------------------- */

static void
out_append(bosh_sess_t *s, const char *p, size_t n)
{
    if (s->out_len + n > s->out_cap) {
        s->out_cap = (s->out_len + n) * 2;
        s->out = xd_realloc(s->out, s->out_cap);
    }
    memcpy(s->out + s->out_len, p, n);
    s->out_len += n;
}

/* One complete top-level element of ours: stanzas get their namespace
 * (the body's default is httpbind); stream:* elements use the prefix the
 * body declares. */
static void
bosh_emit(bosh_sess_t *s, const char *e, size_t n)
{
    size_t name_end = 1;
    while (name_end < n && e[name_end] != ' ' && e[name_end] != '>' && e[name_end] != '/')
        name_end++;
    if (!strncmp(e, "<stream:error", 13))
        s->stream_error = true;
    bool stanza = (name_end == 8 && !memcmp(e, "<message", 8)) ||
                  (name_end == 9 && !memcmp(e, "<presence", 9)) ||
                  (name_end == 3 && !memcmp(e, "<iq", 3));
    const char *tag_end = memchr(e, '>', n);
    size_t tl = tag_end ? (size_t)(tag_end - e) : n;
    bool has = false;
    if (stanza || strncmp(e, "<stream:", 8) != 0)
        for (size_t i = 0; i + 7 <= tl; i++)
            if (!memcmp(e + i, " xmlns=", 7))
                has = true;
    if (has || !strncmp(e, "<stream:", 8)) {
        out_append(s, e, n);
        return;
    }
    static const char add[] = " xmlns='" XD_NS_CLIENT "'";
    out_append(s, e, name_end);
    out_append(s, add, sizeof add - 1);
    out_append(s, e + name_end, n - name_end);
}

/* As ws_cut (ws.c): our own serializer's text, tags found by '<' and '>'
 * outside quotes; returns where the uncut rest starts. */
static size_t
bosh_cut(bosh_sess_t *s, const char *buf, size_t len)
{
    size_t i = 0, done = 0, elem_start = 0;
    int depth = 0;
    while (i < len) {
        if (buf[i] != '<') {
            if (depth == 0)
                done = i + 1;
            i++;
            continue;
        }
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
            break;
        const char *t = buf + i;
        size_t tl = j + 1 - i;
        if (t[1] == '?') {
            if (depth == 0)
                done = j + 1;
        } else if (t[1] == '/') {
            if (depth == 0) {
                s->closed_stream = true; /* </stream:stream> */
                done = j + 1;
            } else if (--depth == 0) {
                bosh_emit(s, buf + elem_start, j + 1 - elem_start);
                done = j + 1;
            }
        } else if (depth == 0 && tl > 15 && !memcmp(t, "<stream:stream", 14)) {
            done = j + 1; /* our header: the body is the stream */
        } else if (t[tl - 2] == '/') {
            if (depth == 0) {
                bosh_emit(s, t, tl);
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

static void bosh_flush(bosh_sess_t *s, bool force);

static void
bosh_write(xd_conn_t *c, const char *p, size_t n)
{
    bosh_sess_t *s = c->xs;
    s->raw = xd_realloc(s->raw, s->raw_len + n);
    memcpy(s->raw + s->raw_len, p, n);
    s->raw_len += n;
    size_t used = bosh_cut(s, s->raw, s->raw_len);
    memmove(s->raw, s->raw + used, s->raw_len - used);
    s->raw_len -= used;
    if (s->out_len > s->hl->bosh_queue && !s->overflow && c->state != C2S_CLOSING) {
        /* Nobody collects it: as a TCP client that does not read. */
        s->overflow = true;
        XD_LOG(&c->log, XD_WARN, "bosh queue full", "bytes=%zu max_queue=%zu", s->out_len,
               s->hl->bosh_queue);
        s->out_len = 0;
        c2s_post_close(s->worker, c->id, XD_STREAM_POLICY_VIOLATION,
                       "the BOSH client does not collect its stanzas");
        return;
    }
    if ((s->out_len || s->closed_stream) && s->nheld)
        xd_timer_start(s->flush_timer, 0, 0); /* what this event writes goes in one response */
}

/* ---- responses ------------------------------------------------------------------------------ */

static bosh_cached_t *
cache_slot(bosh_sess_t *s, uint64_t rid)
{
    return &s->cache[rid % s->requests];
}

/* The stream's timer: inactivity (or the pause) while no request is held. */
static void
bosh_timers(bosh_sess_t *s)
{
    if (!s->c || s->c->state == C2S_CLOSING)
        return;
    if (s->nheld) {
        c2s_set_timeout(s->c, 0);
        uint64_t now = uv_now(s->c->tcp.loop);
        uint64_t due = s->held[0].since_ms + s->wait_ms;
        xd_timer_start(s->wait_timer, due > now ? due - now : 0, 0);
    } else {
        xd_timer_stop(s->wait_timer);
        c2s_set_timeout(s->c, s->pause_ms ? s->pause_ms : s->inactivity_ms);
    }
}

/* Answers the oldest held request with what is queued. */
static void
bosh_answer_oldest(bosh_sess_t *s)
{
    bosh_held_t h = s->held[0];
    memmove(&s->held[0], &s->held[1], (s->nheld - 1) * sizeof s->held[0]);
    s->nheld--;
    char attrs[600] = "";
    if (!s->created) {
        s->created = true;
        snprintf(attrs, sizeof attrs,
                 " sid='%s' wait='%llu' requests='%u' inactivity='%llu' polling='%llu'"
                 " hold='%u' maxpause='%llu' ver='1.11' from='%s' authid='%s'"
                 " xmpp:version='1.0' xmpp:restartlogic='true' xmlns:xmpp='" NS_XBOSH "'",
                 s->sid, (unsigned long long)(s->wait_ms / 1000), s->requests,
                 (unsigned long long)(s->inactivity_ms / 1000),
                 (unsigned long long)(BOSH_POLLING_MS / 1000), s->hold,
                 (unsigned long long)(s->hl->bosh_pause_ms / 1000), s->to,
                 s->c ? s->c->sid : "");
    }
    bool term = s->closed_stream || s->client_term;
    const char *cond = s->stream_error ? " condition='remote-stream-error'" : "";
    size_t cap = s->out_len + strlen(attrs) + 300;
    char *b = xd_malloc(cap);
    int n = snprintf(b, cap, "<body xmlns='" NS_HTTPBIND "' xmlns:stream='" NS_STREAMS "'%s%s%s",
                     attrs, term ? " type='terminate'" : "", term ? cond : "");
    size_t len = (size_t)n;
    if (s->out_len) {
        b[len++] = '>';
        memcpy(b + len, s->out, s->out_len);
        len += s->out_len;
        memcpy(b + len, "</body>", 7);
        len += 7;
    } else {
        memcpy(b + len, "/>", 2);
        len += 2;
    }
    b[len] = '\0';
    s->out_len = 0;
    bosh_cached_t *slot = cache_slot(s, h.rid);
    xd_free(slot->resp);
    slot->rid = h.rid;
    slot->resp = b;
    slot->len = len;
    bosh_answer(h.h, b, len);
}

/* Answers held requests: the oldest when there is output (or force),
 * and any beyond `hold`. */
static void
bosh_flush(bosh_sess_t *s, bool force)
{
    bool term = s->closed_stream || s->client_term;
    while (s->nheld > s->hold)
        bosh_answer_oldest(s);
    if (s->nheld && (s->out_len || force || term || !s->created))
        bosh_answer_oldest(s);
    while (term && s->nheld)
        bosh_answer_oldest(s);
    bosh_timers(s);
}

static void
bosh_flush_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    bosh_flush(arg, false);
}

static void
bosh_wait_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    bosh_sess_t *s = arg;
    if (s->nheld)
        bosh_answer_oldest(s); /* empty, or what there is */
    bosh_timers(s);
}

/* ---- the transport --------------------------------------------------------------------------- */

static int
bosh_input(xd_conn_t *c, const char *p, size_t n)
{
    (void)c;
    (void)p;
    (void)n;
    return 0; /* no socket: input comes through bosh_feed */
}

static void
bosh_closing(xd_conn_t *c)
{
    bosh_sess_t *s = c->xs;
    s->closed_stream = true;
    bosh_flush(s, true);
}

static void
bosh_xfree(xd_conn_t *c)
{
    bosh_sess_t *s = c->xs;
    if (!s)
        return;
    s->closed_stream = true;
    bosh_table_del(s);
    s->c = NULL;
    while (s->nheld)
        bosh_answer_oldest(s);
    for (unsigned i = 0; i < s->npend; i++) {
        bosh_answer_term(s->pend[i].h, "item-not-found");
        xd_el_free(s->pend[i].body);
    }
    for (unsigned i = 0; i < BOSH_MAX_WINDOW; i++)
        xd_free(s->cache[i].resp);
    xd_timer_free(s->wait_timer);
    xd_timer_free(s->flush_timer);
    xd_free(s->out);
    xd_free(s->raw);
    xd_free(s);
    c->xs = NULL;
}

static const xd_conn_xport_t bosh_xport = {
    .name = "bosh",
    .input = bosh_input,
    .write = bosh_write,
    .closing = bosh_closing,
    .free = bosh_xfree,
};

/* Ends the session with a binding error: the request gets it, held ones
 * are answered, the stream ends as a client that went away. */
static void
bosh_fail(bosh_sess_t *s, xd_http_handle_t h, const char *cond)
{
    XD_LOG(s->c ? &s->c->log : NULL, XD_INFO, "bosh session terminated", "condition=%s", cond);
    bosh_answer_term(h, cond);
    if (s->c && s->c->state != C2S_CLOSING)
        c2s_close(s->c, XD_STREAM_POLICY_VIOLATION, cond);
}

static void
bosh_feed(bosh_sess_t *s, const char *p, size_t n)
{
    if (s->c && s->c->state != C2S_CLOSING)
        c2s_feed(s->c, p, n);
}

static void
bosh_feed_header(bosh_sess_t *s)
{
    char h[512];
    snprintf(h, sizeof h,
             "<stream:stream xmlns='" XD_NS_CLIENT "' xmlns:stream='" NS_STREAMS "' to='%s'"
             " version='1.0' xml:lang='%s'>",
             s->to, s->lang[0] ? s->lang : "en");
    bosh_feed(s, h, strlen(h));
}

/* The request h went away unanswered (its client closed the connection):
 * no longer held, no longer waiting for a gap. */
static void
bosh_drop(bosh_sess_t *s, xd_http_handle_t h)
{
    for (unsigned i = 0; i < s->nheld; i++)
        if (handle_eq(s->held[i].h, h)) {
            XD_LOG(s->c ? &s->c->log : NULL, XD_INFO, "bosh request gone", "sid=%s rid=%llu",
                   s->sid, (unsigned long long)s->held[i].rid);
            memmove(&s->held[i], &s->held[i + 1], (s->nheld - i - 1) * sizeof s->held[0]);
            s->nheld--;
            bosh_timers(s);
            return;
        }
    for (unsigned i = 0; i < s->npend; i++)
        if (handle_eq(s->pend[i].h, h)) {
            XD_LOG(s->c ? &s->c->log : NULL, XD_INFO, "bosh request gone", "sid=%s rid=%llu",
                   s->sid, (unsigned long long)s->pend[i].rid);
            xd_el_free(s->pend[i].body);
            s->pend[i] = s->pend[--s->npend];
            return;
        }
}

/* Overactivity (XEP-0124 11) in rid order: an empty request while `hold`
 * requests are held, within `polling` of the last empty one. */
static bool
bosh_too_fast(bosh_sess_t *s, const xd_el_t *body)
{
    uint64_t now = uv_now(s->c->tcp.loop);
    bool empty = !xd_el_first_child(body) && xd_el_attr_count(body) <= 4 &&
                 !xd_el_attr(body, "type") && !xd_el_attr(body, "pause") &&
                 !xd_el_attr_ns(body, "restart", NS_XBOSH);
    bool too_fast = empty && s->hold && s->nheld >= s->hold && s->last_empty_ms &&
                    now - s->last_empty_ms < BOSH_POLLING_MS;
    if (empty)
        s->last_empty_ms = now ? now : 1;
    return too_fast;
}

/* One request in rid order: its stanzas to the stream, then held. False
 * when it ended the session. */
static bool
bosh_process(bosh_sess_t *s, const xd_el_t *body, xd_http_handle_t h, uint64_t rid)
{
    s->hi = rid;
    if (!s->c || s->c->state == C2S_CLOSING) {
        bosh_answer_term(h, "item-not-found");
        return false;
    }
    if (bosh_too_fast(s, body)) {
        bosh_fail(s, h, "policy-violation");
        return false;
    }
    bosh_cached_t *slot = cache_slot(s, rid);
    xd_free(slot->resp);
    slot->resp = NULL;
    slot->rid = rid;
    s->held[s->nheld++] = (bosh_held_t){ h, rid, s->c ? uv_now(s->c->tcp.loop) : 0 };
    const char *pause = xd_el_attr(body, "pause");
    const char *type = xd_el_attr(body, "type");
    const char *restart = xd_el_attr_ns(body, "restart", NS_XBOSH);
    if (restart && !strcmp(restart, "true"))
        bosh_feed_header(s);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (const xd_el_t *ch = xd_el_first_child(body); ch; ch = xd_el_next(ch)) {
        len = 0;
        xd_tree_serialize(ch, XD_NS_CLIENT, &buf, &len, &cap);
        bosh_feed(s, buf, len);
    }
    xd_free(buf);
    s->pause_ms = 0;
    if (type && !strcmp(type, "terminate")) {
        s->client_term = true;
        bosh_feed(s, "</stream:stream>", 16);
        bosh_flush(s, true);
        return false;
    }
    if (pause) {
        uint64_t p = strtoull(pause, NULL, 10) * 1000;
        if (p > s->hl->bosh_pause_ms) {
            s->nheld--;
            bosh_fail(s, h, "policy-violation");
            return false;
        }
        s->pause_ms = p;
        while (s->nheld)
            bosh_answer_oldest(s);
    }
    bosh_flush(s, false);
    return true;
}

/* A request for session s (on its owner): rid order, window, retransmission. */
static void
bosh_request_sess(bosh_sess_t *s, xd_el_t *body, xd_http_handle_t h)
{
    const char *ridv = xd_el_attr(body, "rid");
    char *end = NULL;
    uint64_t rid = ridv ? strtoull(ridv, &end, 10) : 0;
    if (!ridv || !*ridv || *end || !s->c || s->c->state == C2S_CLOSING) {
        bosh_fail(s, h, s->c && s->c->state != C2S_CLOSING ? "bad-request" : "item-not-found");
        xd_el_free(body);
        return;
    }
    if (rid <= s->hi) {
        /* a repeat: the response again, if still in the window */
        bosh_cached_t *slot = cache_slot(s, rid);
        if (s->hi - rid < s->requests && slot->rid == rid) {
            if (slot->resp) {
                XD_LOG(&s->c->log, XD_DEBUG, "bosh retransmission", "rid=%llu",
                       (unsigned long long)rid);
                bosh_answer(h, slot->resp, slot->len);
            } else {
                unsigned i = 0;
                while (i < s->nheld && s->held[i].rid != rid)
                    i++;
                if (i < s->nheld) {
                    s->held[i].h = h; /* the old request is gone */
                } else if (s->nheld <= BOSH_MAX_HOLD) {
                    /* its request was dropped (bosh_drop): held again, in rid order */
                    i = 0;
                    while (i < s->nheld && s->held[i].rid < rid)
                        i++;
                    memmove(&s->held[i + 1], &s->held[i], (s->nheld - i) * sizeof s->held[0]);
                    s->held[i] = (bosh_held_t){ h, rid, uv_now(s->c->tcp.loop) };
                    s->nheld++;
                    bosh_flush(s, false);
                } else {
                    bosh_fail(s, h, "policy-violation");
                }
            }
        } else {
            bosh_fail(s, h, "item-not-found");
        }
        xd_el_free(body);
        return;
    }
    if (rid - s->hi > s->requests) {
        bosh_fail(s, h, "item-not-found");
        xd_el_free(body);
        return;
    }
    /* XEP-0124 11, overactivity: more requests at once than `requests`.
     * The other kind (empty requests too fast) is judged in rid order, in
     * bosh_process: requests may reach the owner out of order. */
    if (rid != s->hi + 1 && s->nheld + s->npend + 1 > s->requests) {
        bosh_fail(s, h, "policy-violation");
        xd_el_free(body);
        return;
    }
    if (rid != s->hi + 1) {
        for (unsigned i = 0; i < s->npend; i++)
            if (s->pend[i].rid == rid) {
                bosh_answer_term(s->pend[i].h, "item-not-found");
                xd_el_free(s->pend[i].body);
                s->pend[i].h = h;
                s->pend[i].body = body;
                return;
            }
        s->pend[s->npend++] = (bosh_pend_t){ h, rid, body };
        return;
    }
    bool alive = bosh_process(s, body, h, rid);
    xd_el_free(body);
    /* the gap filled: what waited goes in order */
    for (bool more = alive; more && s->c;) {
        more = false;
        for (unsigned i = 0; i < s->npend; i++)
            if (s->pend[i].rid == s->hi + 1) {
                bosh_pend_t p = s->pend[i];
                s->pend[i] = s->pend[--s->npend];
                more = bosh_process(s, p.body, p.h, p.rid);
                xd_el_free(p.body);
                break;
            }
    }
}

/* ---- session creation ------------------------------------------------------------------------- */

static bool
attr_safe(const char *v, size_t max)
{
    return strlen(v) < max && !strpbrk(v, "'\"<>&");
}

static uint64_t
attr_u64(const xd_el_t *el, const char *name, uint64_t dflt)
{
    const char *v = xd_el_attr(el, name);
    char *end = NULL;
    if (!v || !*v)
        return dflt;
    uint64_t n = strtoull(v, &end, 10);
    return *end ? dflt : n;
}

static void
bosh_create(xd_http_req_t *r, xd_el_t *body)
{
    xd_http_handle_t h = xd_http_req_handle(r);
    const http_listener_t *hl = http_req_listener(r);
    xd_conn_t *hc = http_req_conn(r);
    const char *to = xd_el_attr(body, "to");
    const char *ridv = xd_el_attr(body, "rid");
    const char *lang = xd_el_attr(body, "xml:lang");
    const char *ver = xd_el_attr(body, "ver");
    char *end = NULL;
    uint64_t rid = ridv ? strtoull(ridv, &end, 10) : 0;
    if (!to || !attr_safe(to, 256) || !ridv || !*ridv || *end ||
        (lang && !attr_safe(lang, 36)) || (ver && !attr_safe(ver, 16)) ||
        !xd_el_attr(body, "wait") || !xd_el_attr(body, "hold")) {
        bosh_answer_term(h, "bad-request");
        xd_el_free(body);
        return;
    }
    xd_worker_t *w = xd_worker_self();
    xd_conn_t *c = c2s_conn_open_detached(w, hc->listener, &xd_c2s_role, xd_http_req_ip(r));
    if (!c) {
        bosh_answer_term(h, "remote-connection-failed");
        xd_el_free(body);
        return;
    }
    bosh_sess_t *s = xd_new(bosh_sess_t);
    s->worker = xd_worker_index(w);
    s->c = c;
    s->hl = hl;
    uint64_t wait = attr_u64(body, "wait", 60) * 1000;
    s->wait_ms = wait < hl->bosh_wait_ms ? wait : hl->bosh_wait_ms;
    uint64_t hold = attr_u64(body, "hold", 1);
    s->hold = hold < hl->bosh_hold ? (unsigned)hold : hl->bosh_hold;
    s->requests = hl->bosh_requests > s->hold + 1 ? hl->bosh_requests : s->hold + 1;
    if (s->requests > BOSH_MAX_WINDOW)
        s->requests = BOSH_MAX_WINDOW;
    s->inactivity_ms = hl->bosh_inactivity_ms;
    s->hi = rid - 1;
    snprintf(s->to, sizeof s->to, "%s", to);
    snprintf(s->lang, sizeof s->lang, "%s", lang ? lang : "en");
    snprintf(s->ver, sizeof s->ver, "%s", ver ? ver : "1.6");
    /* the sid: 128 random bits, as stream ids */
    unsigned char rnd[16];
    if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(s->sid + 2 * i, 3, "%02x", rnd[i]);
    s->wait_timer = xd_timer_new(w, bosh_wait_fired, s);
    s->flush_timer = xd_timer_new(w, bosh_flush_fired, s);
    c->xport = &bosh_xport;
    c->xs = s;
    /* XEP-0206 Security: over HTTPS the stream is as secure as TLS c2s;
     * channel binding cannot reach it (the TLS is the HTTP connection's). */
    c->secure_carrier = xd_http_req_secure(r);
    c->role->accepted(c);
    bosh_table_put(s);
    XD_LOG(&c->log, XD_INFO, "bosh session", "sid=%s wait=%llu hold=%u", s->sid,
           (unsigned long long)(s->wait_ms / 1000), s->hold);
    /* the creation request is held like any other and carries the attributes */
    bosh_tag(r, s->sid);
    s->hi = rid;
    s->held[s->nheld++] = (bosh_held_t){ h, rid, uv_now(c->tcp.loop) };
    bosh_cached_t *slot = cache_slot(s, rid);
    slot->rid = rid;
    bosh_feed_header(s);
    for (const xd_el_t *ch = xd_el_first_child(body); ch; ch = xd_el_next(ch)) {
        char *buf = NULL;
        size_t len = 0, cap = 0;
        xd_tree_serialize(ch, XD_NS_CLIENT, &buf, &len, &cap);
        bosh_feed(s, buf, len);
        xd_free(buf);
    }
    xd_el_free(body);
    bosh_flush(s, true);
}

/* ---- the handler ------------------------------------------------------------------------------ */

typedef struct bosh_handoff {
    xd_http_handle_t h;
    xd_el_t *body;
    char sid[33];
} bosh_handoff_t;

static void
bosh_handoff_msg(xd_worker_t *w, void *arg)
{
    bosh_handoff_t *m = arg;
    unsigned owner;
    bosh_sess_t *s;
    if (bosh_table_find(m->sid, xd_worker_index(w), &owner, &s) && s) {
        bosh_request_sess(s, m->body, m->h);
    } else {
        bosh_answer_term(m->h, "item-not-found");
        xd_el_free(m->body);
    }
    xd_free(m);
}

static void
bosh_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    xd_http_handle_t h = xd_http_req_handle(r);
    size_t len = 0;
    const char *data = xd_http_req_body(r, &len);
    xd_conn_t *hc = http_req_conn(r);
    /* a body carries stanzas: the stream's stanza limit and room for the wrapper */
    if (len > hc->listener->max_stanza_bytes + 8192) {
        xd_http_error(r, 413, "BOSH body above the stanza size limit");
        return;
    }
    xd_el_t *body = NULL;
    if (!data || !len || xd_el_parse(data, len, &body) != 0) {
        bosh_answer_term(h, "bad-request");
        return;
    }
    if (strcmp(xd_el_name(body), "body") != 0 || !xd_el_ns(body) ||
        strcmp(xd_el_ns(body), NS_HTTPBIND) != 0) {
        xd_el_free(body);
        bosh_answer_term(h, "bad-request");
        return;
    }
    const char *sid = xd_el_attr(body, "sid");
    if (!sid) {
        bosh_create(r, body);
        return;
    }
    unsigned self = xd_worker_index(xd_worker_self());
    unsigned owner = 0;
    bosh_sess_t *s = NULL;
    if (strlen(sid) >= 33 || !bosh_table_find(sid, self, &owner, &s)) {
        xd_el_free(body);
        bosh_answer_term(h, "item-not-found");
        return;
    }
    bosh_tag(r, sid);
    if (s) {
        bosh_request_sess(s, body, h);
        return;
    }
    /* another worker owns the session: the request goes there */
    bosh_handoff_t *m = xd_new(bosh_handoff_t);
    m->h = h;
    m->body = body;
    snprintf(m->sid, sizeof m->sid, "%s", sid);
    if (xd_worker_post(xd_worker_get(owner), bosh_handoff_msg, m) != 0) {
        xd_el_free(body);
        xd_free(m);
        bosh_answer_term(h, "item-not-found");
    }
}

typedef struct bosh_gone {
    xd_http_handle_t h;
    char sid[33];
} bosh_gone_t;

static void
bosh_gone_msg(xd_worker_t *w, void *arg)
{
    bosh_gone_t *m = arg;
    unsigned owner;
    bosh_sess_t *s;
    if (bosh_table_find(m->sid, xd_worker_index(w), &owner, &s) && s)
        bosh_drop(s, m->h);
    xd_free(m);
}

/* The client of a request closed its connection: its session (on its
 * owner) forgets the request. */
static void
bosh_aborted(xd_http_req_t *r, void *ud)
{
    (void)ud;
    char *sid = xd_http_req_data(r);
    if (!sid)
        return;
    xd_http_req_set_data(r, NULL);
    bosh_gone_t *m = xd_new(bosh_gone_t);
    m->h = xd_http_req_handle(r);
    snprintf(m->sid, sizeof m->sid, "%s", sid);
    xd_free(sid);
    unsigned self = xd_worker_index(xd_worker_self()), owner = 0;
    bosh_sess_t *s = NULL;
    if (!bosh_table_find(m->sid, self, &owner, &s)) {
        xd_free(m);
    } else if (s) {
        bosh_drop(s, m->h);
        xd_free(m);
    } else if (xd_worker_post(xd_worker_get(owner), bosh_gone_msg, m) != 0) {
        xd_free(m);
    }
}

static const xd_http_handler_t bosh_handler = {
    .request = bosh_request,
    .aborted = bosh_aborted,
    .methods = "POST",
};

void
http_bosh_setup(void)
{
    uv_once(&bosh_once, bosh_init_lock);
    xd_http_register("bosh", "/bosh", &bosh_handler, NULL);
    xd_http_hostmeta_link("urn:xmpp:alt-connections:xbosh", "bosh");
}
