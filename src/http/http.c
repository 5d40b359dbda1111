/*
 * http.c — the HTTP/1.1 server of `module: http` listeners (xmppd/http.h).
 *
 * An HTTP connection is a stream connection (stream/conn.h) whose
 * transport is this file: conn.c does the socket, TLS, the write queue and
 * its bound, the connection's timer and the closing; the plaintext goes to
 * Node's http-parser (libhttp-parser, docs/design.md "HTTP") and the
 * requests to the handlers modules registered.  A WebSocket upgrade
 * (ws.c) replaces this transport and makes the connection a client stream.
 *
 * One request at a time per connection: while a handler holds a request,
 * input stops at the first pipelined bytes (they wait here, at most one
 * read), so a connection costs what one request costs; until such bytes
 * come the socket is still read, so a client that goes away is seen and
 * the handler learns it (`aborted`) while it holds the request.  Limits: the header bytes
 * (431), the collected body (413), requests per second (429), and the
 * connection's timer: header_timeout from the connection or the previous
 * response until the headers are in, and between two pieces of a body of
 * at least HTTP_MIN_BODY_PIECE bytes; it stops while a handler holds the
 * request.
 *
 * Expect: 100-continue (RFC 9110 10.1.1): the interim 100 goes out when
 * the request is accepted and its body is about to be read (the headers
 * in, a streamed body's handler not having answered or paused; else when
 * it resumes); a refusal decided before (413, 404, 405, a handler's 403)
 * is sent instead, without reading the body, and the connection closes.
 * An expectation other than 100-continue is 417.
 */
#include <ctype.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/http_int.h"

#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/str.h"

#define HTTP_MAX_HEADERS 100 /* header lines in one request (431 beyond) */
#define HTTP_MIN_BODY_PIECE 1024 /* body bytes that restart the timer (slow POST) */

/* ---- the handler registry ------------------------------------------------------------------ */

typedef struct http_reg {
    char *name;
    char *default_path;
    const xd_http_handler_t *h;
    void *ud;
} http_reg_t;

static uv_mutex_t reg_lock;
static uv_once_t reg_once = UV_ONCE_INIT;
static http_reg_t *regs;
static size_t nregs;

static void
reg_init(void)
{
    uv_mutex_init(&reg_lock);
}

int
xd_http_register(const char *name, const char *default_path, const xd_http_handler_t *h,
                 void *ud)
{
    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nregs; i++) {
        if (!strcmp(regs[i].name, name)) {
            uv_mutex_unlock(&reg_lock);
            return XD_EEXIST;
        }
    }
    regs = xd_realloc(regs, (nregs + 1) * sizeof *regs);
    regs[nregs++] = (http_reg_t){ xd_strdup(name), default_path ? xd_strdup(default_path) : NULL,
                                  h, ud };
    uv_mutex_unlock(&reg_lock);
    return 0;
}

void
xd_http_unregister(const char *name)
{
    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nregs; i++) {
        if (!strcmp(regs[i].name, name)) {
            xd_free(regs[i].name);
            xd_free(regs[i].default_path);
            regs[i] = regs[--nregs];
            break;
        }
    }
    uv_mutex_unlock(&reg_lock);
}

/* True when path lies under prefix ("/a" covers "/a" and "/a/…"). */
static bool
path_under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    while (n > 1 && prefix[n - 1] == '/')
        n--;
    if (strncmp(path, prefix, n) != 0)
        return false;
    return path[n] == '\0' || path[n] == '/' || (n == 1 && prefix[0] == '/');
}

typedef struct {
    const xd_http_handler_t *h;
    void *ud;
    size_t prefix_len;
    char name[48];
} http_route_t;

/* The handler for path on listener hl: the longest prefix that matches. */
static bool
route_find(const http_listener_t *hl, const char *path, http_route_t *out)
{
    bool found = false;
    size_t best = 0;
    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nregs; i++) {
        const char *prefix = NULL;
        if (hl->nroutes) {
            for (size_t j = 0; j < hl->nroutes; j++) {
                if (strcmp(hl->route_handler[j], regs[i].name) != 0)
                    continue;
                if (path_under(path, hl->route_path[j]) &&
                    (!prefix || strlen(hl->route_path[j]) > strlen(prefix)))
                    prefix = hl->route_path[j];
            }
        } else if (regs[i].default_path && path_under(path, regs[i].default_path)) {
            prefix = regs[i].default_path;
        }
        if (prefix && (!found || strlen(prefix) > best)) {
            found = true;
            best = strlen(prefix);
            out->h = regs[i].h;
            out->ud = regs[i].ud;
            out->prefix_len = best;
            snprintf(out->name, sizeof out->name, "%s", regs[i].name);
        }
    }
    uv_mutex_unlock(&reg_lock);
    if (found)
        while (out->prefix_len > 1 && path[out->prefix_len - 1] == '/')
            out->prefix_len--;
    return found;
}

/* ---- connection and request state ------------------------------------------------------------ */

typedef struct http_conn http_conn_t;

struct xd_http_req {
    http_conn_t *hc;
    uint64_t seq;             /* the request's number on the connection */
    char method[16];
    char *url;                /* as received */
    size_t url_len;
    char *path, *query;       /* split from url */
    char **hname, **hvalue;   /* headers as received */
    size_t nhdr;
    bool in_value;            /* the parser is in a header value */
    http_route_t route;       /* the handler, when found */
    bool routed;
    int early;                /* an answer decided at the headers (404, 405), sent at the end */
    const char *early_text;
    bool head;                /* a HEAD request: no body in the answer */
    bool keep_alive;          /* the client keeps the connection */
    bool complete;            /* the whole request was read */
    bool answered;            /* response written (or started) */
    bool started;             /* a piecewise response is on */
    bool ended;               /* ... and complete */
    bool close_after;         /* close the connection after the response */
    bool upgraded;            /* 101 sent: the connection changes hands */
    bool upgrade_asked;       /* Upgrade: the bytes after it may be no HTTP */
    bool expect;              /* Expect: 100-continue, with a body to come */
    bool continued;           /* ... 100 sent (or the body came without it) */
    http_upgrade_fn upgrade;
    int64_t length;           /* Content-Length or -1 */
    xd_buf_t body;            /* collected body */
    char *extra;              /* added response headers */
    size_t extra_len;
    int status;               /* for the access log */
    uint64_t sent;            /* body bytes written */
    int64_t resp_length;      /* piecewise: the announced length, or -1 */
    uint64_t start_ms;
    void *udata;              /* the handler's (xd_http_req_set_data) */
};

struct http_conn {
    http_parser p;
    xd_conn_t *c;
    const http_listener_t *hl;
    xd_http_req_t *req;       /* the request being read or answered */
    char *pend;               /* input not parsed yet (while waiting) */
    size_t pend_len, pend_cap;
    bool waiting;             /* input stopped: a handler holds the request or paused it */
    bool body_paused;         /* xd_http_req_pause */
    bool in_run;              /* inside http_run */
    bool pumping;             /* inside http_pump */
    bool dead;                /* answered with close: ignore further input */
    size_t head_bytes;        /* of the request being read */
    size_t body_progress;     /* body bytes since its timer last restarted */
    double tokens;            /* request rate bucket */
    uint64_t tokens_ms;
    uint64_t seq;
};

static const xd_conn_xport_t http_xport;
static void http_finish(xd_http_req_t *r);
static void http_run(http_conn_t *hc);
static void http_pump(http_conn_t *hc, xd_http_req_t *r);

static http_conn_t *
hc_of(xd_conn_t *c)
{
    return c->xport == &http_xport ? c->xs : NULL;
}

const http_listener_t *
http_req_listener(const xd_http_req_t *r)
{
    return r->hc->hl;
}

xd_conn_t *
http_req_conn(const xd_http_req_t *r)
{
    return r->hc->c;
}

static void
req_free(xd_http_req_t *r)
{
    for (size_t i = 0; i < r->nhdr; i++) {
        xd_free(r->hname[i]);
        xd_free(r->hvalue[i]);
    }
    xd_free(r->hname);
    xd_free(r->hvalue);
    xd_free(r->url);
    xd_free(r->path);
    xd_buf_free(&r->body);
    xd_free(r->extra);
    xd_free(r);
}

/* ---- the request accessors --------------------------------------------------------------------- */

const char *
xd_http_req_method(const xd_http_req_t *r)
{
    return r->method;
}

const char *
xd_http_req_path(const xd_http_req_t *r)
{
    return r->path ? r->path : "/";
}

const char *
xd_http_req_query(const xd_http_req_t *r)
{
    return r->query ? r->query : "";
}

const char *
xd_http_req_subpath(const xd_http_req_t *r)
{
    const char *p = xd_http_req_path(r);
    return r->routed && strlen(p) >= r->route.prefix_len ? p + r->route.prefix_len : "";
}

const char *
xd_http_req_header(const xd_http_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++)
        if (!strcasecmp(r->hname[i], name))
            return r->hvalue[i];
    return NULL;
}

const char *
xd_http_req_body(const xd_http_req_t *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return xd_buf_cstr(&r->body);
}

int64_t
xd_http_req_length(const xd_http_req_t *r)
{
    return r->length;
}

const char *
xd_http_req_ip(const xd_http_req_t *r)
{
    return r->hc->c->ip;
}

bool
xd_http_req_secure(const xd_http_req_t *r)
{
    return c2s_secure(r->hc->c);
}

unsigned
xd_http_req_worker(const xd_http_req_t *r)
{
    return xd_worker_index(r->hc->c->ws->worker);
}

void
xd_http_req_set_data(xd_http_req_t *r, void *data)
{
    r->udata = data;
}

void *
xd_http_req_data(const xd_http_req_t *r)
{
    return r->udata;
}

xd_http_handle_t
xd_http_req_handle(const xd_http_req_t *r)
{
    return (xd_http_handle_t){ xd_http_req_worker(r), r->hc->c->id, r->seq };
}

xd_http_req_t *
xd_http_req_find(xd_http_handle_t h)
{
    xd_worker_t *w = xd_worker_self();
    if (!w || xd_worker_index(w) != h.worker)
        return NULL;
    xd_conn_t *c = c2s_conn_find(w, h.conn_id);
    http_conn_t *hc = c ? hc_of(c) : NULL;
    /* A started response still waits for its pieces (a file read on the pool). */
    if (!hc || !hc->req || hc->req->seq != h.seq ||
        (hc->req->answered && !(hc->req->started && !hc->req->ended)) ||
        c->state == C2S_CLOSING)
        return NULL;
    return hc->req;
}

size_t
xd_http_queued(const xd_http_req_t *r)
{
    return c2s_queued(r->hc->c);
}

/* ---- responses ------------------------------------------------------------------------------- */

static const char *
status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    }
    return "Unknown";
}

static bool
header_ok(const char *s)
{
    return !strpbrk(s, "\r\n");
}

void
xd_http_add_header(xd_http_req_t *r, const char *name, const char *value)
{
    if (r->answered || !header_ok(name) || !header_ok(value))
        return;
    size_t n = strlen(name) + strlen(value) + 4;
    r->extra = xd_realloc(r->extra, r->extra_len + n + 1);
    snprintf(r->extra + r->extra_len, n + 1, "%s: %s\r\n", name, value);
    r->extra_len += n;
}

/* The CORS headers for r's Origin (cors_origins), into buf. */
static size_t
cors_headers(const xd_http_req_t *r, char *buf, size_t cap)
{
    const http_listener_t *hl = r->hc->hl;
    const char *origin = xd_http_req_header(r, "Origin");
    if (!hl->ncors || !origin || !header_ok(origin))
        return 0;
    for (size_t i = 0; i < hl->ncors; i++) {
        if (!strcmp(hl->cors[i], "*")) {
            int n = snprintf(buf, cap, "Access-Control-Allow-Origin: *\r\n");
            return n > 0 && (size_t)n < cap ? (size_t)n : 0;
        }
        if (!strcasecmp(hl->cors[i], origin)) {
            int n = snprintf(buf, cap, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n",
                             origin);
            return n > 0 && (size_t)n < cap ? (size_t)n : 0;
        }
    }
    return 0;
}

/* Writes the status line and headers; length -1: none (the connection
 * closes at the end). */
static void
write_head(xd_http_req_t *r, int status, const char *ctype, int64_t length)
{
    http_conn_t *hc = r->hc;
    r->status = status;
    r->answered = true;
    if (length < 0 && status != 101 && status != 204)
        r->close_after = true;
    if (!r->keep_alive || hc->c->ws->stopping)
        r->close_after = true;
    if (!r->complete && status != 101)
        r->close_after = true; /* answered before the body was read: http_finish closes */
    if (r->upgrade_asked && status != 101)
        /* A refused upgrade: what follows may be the new protocol's bytes
         * (a proxy that took the upgrade for done forwards anything), never
         * read as requests (WebSocket smuggling). */
        r->close_after = true;
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    char cors[512];
    size_t ncors = cors_headers(r, cors, sizeof cors);
    char lenbuf[64] = "";
    if (length >= 0 && status != 101 && status != 204 && status != 304)
        snprintf(lenbuf, sizeof lenbuf, "Content-Length: %lld\r\n", (long long)length);
    char *head = xd_asprintf("HTTP/1.1 %d %s\r\nDate: %s\r\nServer: xmppd\r\n%s%s%s%s%.*s%s%s\r\n",
                             status, status_text(status), date, lenbuf,
                             ctype ? "Content-Type: " : "", ctype ? ctype : "",
                             ctype ? "\r\n" : "", (int)ncors, cors,
                             r->extra ? r->extra : "",
                             status == 101 ? ""
                             : r->close_after ? "Connection: close\r\n"
                                              : "Connection: keep-alive\r\n");
    c2s_write_wire(hc->c, head, strlen(head));
    xd_free(head);
}

void
xd_http_respond(xd_http_req_t *r, int status, const char *content_type, const void *body,
                size_t len)
{
    if (r->answered)
        return;
    write_head(r, status, content_type, (int64_t)len);
    if (!r->head && len && status != 204 && status != 304) {
        c2s_write_wire(r->hc->c, body, len);
        r->sent = len;
    }
    http_finish(r);
}

void
xd_http_error(xd_http_req_t *r, int status, const char *text)
{
    char body[256];
    int n = snprintf(body, sizeof body, "%d %s%s%s\n", status, status_text(status),
                     text ? ": " : "", text ? text : "");
    xd_http_respond(r, status, "text/plain; charset=utf-8", body,
                    n > 0 && (size_t)n < sizeof body ? (size_t)n : 0);
}

void
xd_http_response_start(xd_http_req_t *r, int status, const char *content_type, int64_t length)
{
    if (r->answered)
        return;
    r->started = true;
    r->resp_length = length;
    write_head(r, status, content_type, length);
}

/* A piece the socket took at once leaves no write to complete, so no
 * `writable` would follow: it is asked for from the loop instead (never
 * from inside the handler's own call). */
typedef struct {
    uint64_t conn_id;
    uint64_t seq;
} http_pump_msg_t;

static void
http_pump_fired(xd_worker_t *w, void *arg)
{
    http_pump_msg_t *m = arg;
    xd_conn_t *c = c2s_conn_find(w, m->conn_id);
    http_conn_t *hc = c ? hc_of(c) : NULL;
    xd_http_req_t *r = hc ? hc->req : NULL;
    if (hc)
        hc->pumping = false;
    if (r && r->seq == m->seq && r->started && !r->ended && c->state != C2S_CLOSING &&
        c2s_queued(c) == 0 && r->route.h->writable)
        r->route.h->writable(r, r->route.ud);
    xd_free(m);
}

static void
http_pump(http_conn_t *hc, xd_http_req_t *r)
{
    if (hc->pumping || !r->route.h || !r->route.h->writable || c2s_queued(hc->c) != 0)
        return;
    http_pump_msg_t *m = xd_new(http_pump_msg_t);
    m->conn_id = hc->c->id;
    m->seq = r->seq;
    if (xd_worker_post(hc->c->ws->worker, http_pump_fired, m) == 0)
        hc->pumping = true;
    else
        xd_free(m);
}

void
xd_http_response_write(xd_http_req_t *r, const void *data, size_t len)
{
    if (!r->started || r->head || !len)
        return;
    if (r->resp_length >= 0 && r->sent + len > (uint64_t)r->resp_length)
        len = (size_t)((uint64_t)r->resp_length - r->sent); /* never more than announced */
    c2s_write_wire(r->hc->c, data, len);
    r->sent += len;
    http_pump(r->hc, r);
}

void
xd_http_response_end(xd_http_req_t *r)
{
    if (!r->started || r->ended)
        return;
    r->ended = true;
    if (r->resp_length >= 0 && r->sent != (uint64_t)r->resp_length && !r->head)
        r->close_after = true; /* a short body: the client must not wait for the rest */
    http_finish(r);
}

/* The access log line of r, once answered. */
/* s for a quoted log value: at most cap-1 bytes, quotes, backslashes and
 * control bytes as '_'. */
static const char *
log_safe(const char *s, char *buf, size_t cap)
{
    size_t j = 0;
    for (const char *p = s ? s : "-"; *p && j + 1 < cap; p++)
        buf[j++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '_' : *p;
    buf[j] = '\0';
    return buf;
}

static void
access_log(const xd_http_req_t *r)
{
    char uab[96], pathb[201];
    const char *ua = log_safe(xd_http_req_header(r, "User-Agent"), uab, sizeof uab);
    const char *path = log_safe(r->path, pathb, sizeof pathb);
    uint64_t ms = uv_now(r->hc->c->tcp.loop) - r->start_ms;
    XD_LOG(&r->hc->c->log, XD_INFO, "http request",
           "method=%s path=\"%s\" status=%d bytes=%llu ms=%llu ua=\"%s\"", r->method, path,
           r->status, (unsigned long long)r->sent, (unsigned long long)ms, ua);
}

/* r is answered: log, free, and go on with the connection (the next
 * request, the upgrade or the close). */
static void
http_finish(xd_http_req_t *r)
{
    http_conn_t *hc = r->hc;
    xd_conn_t *c = hc->c;
    access_log(r);
    if (r->upgraded)
        return; /* http_run hands the connection over once the request is read */
    if (r->close_after || !r->complete) {
        /* A request answered before its body was read (413) ends the
         * connection: the rest of it is not parsed. */
        hc->dead = true;
        hc->req = NULL;
        req_free(r);
        c2s_end(c);
        return;
    }
    hc->req = NULL;
    req_free(r);
    c2s_set_timeout(c, hc->hl->header_ms);
    if (hc->waiting && !hc->in_run) {
        hc->waiting = false;
        c2s_unblock(c); /* resumes: http_resume parses what waited */
    }
}

/* The interim 100 Continue, once, when the client waits for it before
 * sending the body (RFC 9110 10.1.1). */
static void
send_continue(xd_http_req_t *r)
{
    if (!r->expect || r->continued || r->answered || r->complete)
        return;
    r->continued = true;
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    c2s_write_wire(r->hc->c, line, sizeof line - 1);
}

/* ---- parser callbacks ---------------------------------------------------------------------- */

/* The request fails with status (431, 413, 400, 429) and the connection closes. */
static int
req_fail(http_conn_t *hc, int status, const char *text)
{
    xd_http_req_t *r = hc->req;
    if (!r) {
        r = xd_new(xd_http_req_t);
        r->hc = hc;
        r->seq = ++hc->seq;
        r->start_ms = uv_now(hc->c->tcp.loop);
        hc->req = r;
    }
    if (!r->method[0])
        snprintf(r->method, sizeof r->method, "-");
    r->close_after = true;
    XD_LOG(&hc->c->log, XD_INFO, "http request refused", "status=%d reason=\"%s\"", status,
           text);
    if (r->answered)
        return -1;
    xd_http_error(r, status, text);
    return -1;
}

static bool
rate_ok(http_conn_t *hc)
{
    uint64_t now = uv_now(hc->c->tcp.loop);
    double rate = hc->hl->rate;
    hc->tokens += (double)(now - hc->tokens_ms) * rate / 1000.0;
    if (hc->tokens > rate)
        hc->tokens = rate;
    hc->tokens_ms = now;
    if (hc->tokens < 1.0)
        return false;
    hc->tokens -= 1.0;
    return true;
}

static int
on_message_begin(http_parser *p)
{
    http_conn_t *hc = p->data;
    xd_http_req_t *r = xd_new(xd_http_req_t);
    r->hc = hc;
    r->seq = ++hc->seq;
    r->length = -1;
    r->start_ms = uv_now(hc->c->tcp.loop);
    hc->req = r;
    hc->head_bytes = 0;
    hc->body_progress = 0;
    if (!rate_ok(hc))
        return req_fail(hc, 429, "too many requests on this connection");
    return 0;
}

static int
head_count(http_conn_t *hc, size_t n)
{
    hc->head_bytes += n;
    if (hc->head_bytes > hc->hl->max_header)
        return req_fail(hc, 431, "request headers too large");
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t n)
{
    http_conn_t *hc = p->data;
    if (!hc->req || hc->dead)
        return -1; /* answered and closing: nothing more is parsed */
    xd_http_req_t *r = hc->req;
    if (head_count(hc, n))
        return -1;
    r->url = xd_realloc(r->url, r->url_len + n + 1);
    memcpy(r->url + r->url_len, at, n);
    r->url_len += n;
    r->url[r->url_len] = '\0';
    return 0;
}

static void
append(char **s, const char *at, size_t n)
{
    size_t old = *s ? strlen(*s) : 0;
    *s = xd_realloc(*s, old + n + 1);
    memcpy(*s + old, at, n);
    (*s)[old + n] = '\0';
}

static int
on_header_field(http_parser *p, const char *at, size_t n)
{
    http_conn_t *hc = p->data;
    if (!hc->req || hc->dead)
        return -1; /* answered and closing: nothing more is parsed */
    xd_http_req_t *r = hc->req;
    if (head_count(hc, n + 4))
        return -1;
    if (memchr(at, ' ', n) || memchr(at, '\t', n))
        /* RFC 9112 5.1: "Name : v" may be Name to one reader, "Name " to another. */
        return req_fail(hc, 400, "white space in a header name");
    if (r->in_value || r->nhdr == 0) {
        if (r->nhdr >= HTTP_MAX_HEADERS)
            return req_fail(hc, 431, "too many header lines");
        r->hname = xd_realloc(r->hname, (r->nhdr + 1) * sizeof *r->hname);
        r->hvalue = xd_realloc(r->hvalue, (r->nhdr + 1) * sizeof *r->hvalue);
        r->hname[r->nhdr] = NULL;
        r->hvalue[r->nhdr] = xd_strdup("");
        r->nhdr++;
        r->in_value = false;
    }
    append(&r->hname[r->nhdr - 1], at, n);
    return 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t n)
{
    http_conn_t *hc = p->data;
    if (!hc->req || hc->dead)
        return -1; /* answered and closing: nothing more is parsed */
    xd_http_req_t *r = hc->req;
    if (head_count(hc, n))
        return -1;
    r->in_value = true;
    append(&r->hvalue[r->nhdr - 1], at, n);
    return 0;
}

/* The methods of a handler, with HEAD where GET is. */
static bool
method_allowed(const xd_http_handler_t *h, const char *m)
{
    if (!h->methods || !strcmp(m, "OPTIONS"))
        return true;
    const char *look = !strcmp(m, "HEAD") && !strstr(h->methods, "HEAD") ? "GET" : m;
    size_t n = strlen(look);
    for (const char *s = h->methods; (s = strstr(s, look)); s += n)
        if ((s == h->methods || s[-1] == ' ' || s[-1] == ',') &&
            (s[n] == '\0' || s[n] == ',' || s[n] == ' '))
            return true;
    return false;
}

static const char *
allow_of(const xd_http_handler_t *h)
{
    return h->methods ? h->methods : "GET, HEAD, POST, PUT, DELETE, OPTIONS";
}

/* The answer to a preflight (or any OPTIONS). */
static void
answer_options(xd_http_req_t *r)
{
    char allow[160];
    snprintf(allow, sizeof allow, "%s%s", r->routed ? allow_of(r->route.h) : "GET, HEAD, OPTIONS",
             r->routed && r->route.h->methods && !strstr(r->route.h->methods, "OPTIONS")
                 ? ", OPTIONS"
                 : "");
    xd_http_add_header(r, "Allow", allow);
    if (xd_http_req_header(r, "Origin") && r->hc->hl->ncors) {
        xd_http_add_header(r, "Access-Control-Allow-Methods", allow);
        const char *rh = xd_http_req_header(r, "Access-Control-Request-Headers");
        xd_http_add_header(r, "Access-Control-Allow-Headers",
                           rh ? rh : "Content-Type, Authorization");
        xd_http_add_header(r, "Access-Control-Max-Age", "86400");
    }
    xd_http_respond(r, 204, NULL, NULL, 0);
}

static int
on_headers_complete(http_parser *p)
{
    http_conn_t *hc = p->data;
    if (!hc->req || hc->dead)
        return -1; /* answered and closing: nothing more is parsed */
    xd_http_req_t *r = hc->req;
    snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)p->method));
    r->head = p->method == HTTP_HEAD;
    r->keep_alive = http_should_keep_alive(p);
    if ((p->flags & F_CONTENTLENGTH) || p->content_length != ULLONG_MAX)
        r->length = p->content_length <= INT64_MAX ? (int64_t)p->content_length : -1;
    /* The body's pieces (and the handler) get the timer from now. */
    c2s_set_timeout(hc->c, hc->hl->header_ms);
    if (p->http_major == 1 && p->http_minor >= 1) {
        /* RFC 9112 3.2: exactly one Host (two could name two hosts to two readers). */
        size_t hosts = 0;
        for (size_t i = 0; i < r->nhdr; i++)
            hosts += r->hname[i] && !strcasecmp(r->hname[i], "Host");
        if (hosts != 1)
            return req_fail(hc, 400, hosts ? "more than one Host" : "no Host");
    }
    const char *expect = xd_http_req_header(r, "Expect");
    if (expect && (p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1))) {
        /* HTTP/1.0 knows no 100: there the field is ignored. */
        size_t n = strlen(expect);
        while (n && (expect[n - 1] == ' ' || expect[n - 1] == '\t'))
            n--;
        if (n != 12 || strncasecmp(expect, "100-continue", 12) != 0)
            return req_fail(hc, 417, "only 100-continue is expected here");
        r->expect = r->length != 0;
    }

    const char *url = r->url ? r->url : "";
    if (p->method == HTTP_OPTIONS && !strcmp(url, "*")) {
        r->path = xd_strdup("*");
        r->early = 204;
        return 0;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (url[0] != '/' || http_parser_parse_url(url, r->url_len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        r->path = xd_strdup("-");
        return req_fail(hc, 400, "bad request target");
    }
    /* path and query in one allocation: "path\0query". */
    size_t plen = u.field_data[UF_PATH].len;
    size_t qlen = (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0;
    r->path = xd_malloc(plen + qlen + 2);
    memcpy(r->path, url + u.field_data[UF_PATH].off, plen);
    r->path[plen] = '\0';
    r->query = r->path + plen + 1;
    if (qlen)
        memcpy(r->query, url + u.field_data[UF_QUERY].off, qlen);
    r->query[qlen] = '\0';

    r->routed = route_find(hc->hl, r->path, &r->route);
    if (!r->routed) {
        r->early = 404;
        r->early_text = "no handler for this path";
    } else if (!method_allowed(r->route.h, r->method)) {
        r->early = 405;
        r->early_text = "method not allowed here";
        xd_http_add_header(r, "Allow", allow_of(r->route.h));
    } else if (p->method == HTTP_OPTIONS) {
        r->early = 204;
    } else if (!r->route.h->body && r->length > 0 && (uint64_t)r->length > hc->hl->max_body) {
        /* Announced too big: refused before a byte of it is read. */
        return req_fail(hc, 413, "request body too large");
    }
    r->upgrade_asked = p->upgrade;
    if (r->early && r->expect) {
        /* The client waits before sending the body: the answer now, and
         * the connection ends (the body may come or not). */
        r->close_after = true;
        if (r->early == 204)
            answer_options(r);
        else
            xd_http_error(r, r->early, r->early_text);
        return -1;
    }
    if (!r->early && r->route.h->body) {
        r->route.h->request(r, r->route.ud); /* streamed: the handler sees the headers now */
        if (hc->req != r)
            return 0; /* answered and gone */
    }
    if (!r->early && !hc->body_paused)
        send_continue(r); /* else when the handler resumes the body */
    return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
    http_conn_t *hc = p->data;
    if (!hc->req || hc->dead)
        return -1; /* answered and closing: nothing more is parsed */
    xd_http_req_t *r = hc->req;
    r->continued = true; /* the body comes: no 100 any more */
    if (r->early || r->answered)
        return 0; /* discarded: the answer does not depend on it */
    if (r->route.h->body) {
        r->route.h->body(r, at, n, r->route.ud);
        return 0;
    }
    if (n > hc->hl->max_body - r->body.len || xd_buf_add(&r->body, at, n) != 0)
        return req_fail(hc, 413, "request body too large");
    return 0;
}

/* A chunk of a chunked body announces its size: a collected body that
 * it would take past max_body_size is refused before the chunk is read. */
static int
on_chunk_header(http_parser *p)
{
    http_conn_t *hc = p->data;
    if (!hc->req || hc->dead)
        return -1; /* answered and closing: nothing more is parsed */
    xd_http_req_t *r = hc->req;
    if (r->early || r->answered || !r->routed || r->route.h->body)
        return 0;
    if (p->content_length > hc->hl->max_body - r->body.len)
        return req_fail(hc, 413, "request body too large");
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    http_conn_t *hc = p->data;
    if (!hc->req || hc->dead)
        return -1; /* answered and closing: nothing more is parsed */
    xd_http_req_t *r = hc->req;
    r->complete = true;
    /* No timer while the handler holds the request (BOSH holds it on purpose). */
    c2s_set_timeout(hc->c, 0);
    if (r->answered) {
        /* answered early (a streamed body's handler, an error) */
    } else if (r->early == 204) {
        answer_options(r);
    } else if (r->early) {
        xd_http_error(r, r->early, r->early_text);
    } else if (r->route.h->body) {
        r->route.h->body(r, NULL, 0, r->route.ud);
    } else {
        r->route.h->request(r, r->route.ud);
    }
    /* The next request waits until this one is answered. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings http_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- the transport ---------------------------------------------------------------------------- */

static void
pend_set(http_conn_t *hc, const char *p, size_t n)
{
    if (n > hc->pend_cap) {
        hc->pend = xd_realloc(hc->pend, n);
        hc->pend_cap = n;
    }
    memmove(hc->pend, p, n);
    hc->pend_len = n;
}

static void
pend_add(http_conn_t *hc, const char *p, size_t n)
{
    if (hc->pend_len + n > hc->pend_cap) {
        size_t cap = hc->pend_cap ? hc->pend_cap : 1024;
        while (cap < hc->pend_len + n)
            cap *= 2;
        hc->pend = xd_realloc(hc->pend, cap);
        hc->pend_cap = cap;
    }
    memcpy(hc->pend + hc->pend_len, p, n);
    hc->pend_len += n;
}

/* Parses what is pending, request after request, until it is all used or
 * a request waits for its answer (input then stops). */
static void
http_run(http_conn_t *hc)
{
    xd_conn_t *c = hc->c;
    hc->in_run = true;
    while (hc->pend_len && !hc->dead && !hc->waiting && c->state != C2S_CLOSING) {
        size_t used = http_parser_execute(&hc->p, &http_settings, hc->pend, hc->pend_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&hc->p);
        if (hc->dead || c->state == C2S_CLOSING)
            break;
        if (e == HPE_PAUSED) {
            http_parser_pause(&hc->p, 0);
        } else if (e != HPE_OK) {
            if (!hc->req || !hc->req->answered)
                req_fail(hc, 400, http_errno_description(e));
            break;
        }
        pend_set(hc, hc->pend + used, hc->pend_len - used);
        xd_http_req_t *r = hc->req;
        if (r && r->upgraded && r->complete) {
            /* The rest belongs to the new protocol. */
            http_upgrade_fn start = r->upgrade;
            hc->req = NULL;
            req_free(r);
            char *rest = hc->pend;
            size_t n = hc->pend_len;
            hc->pend = NULL;
            hc->pend_len = 0;
            const http_listener_t *hl = hc->hl;
            hc->in_run = false;
            c->xport->free(c); /* frees hc */
            c->xport = NULL;
            c->xs = NULL;
            start(c, hl, rest, n);
            xd_free(rest);
            return;
        }
        if (hc->body_paused || (r && r->complete && !r->answered)) {
            /* A held request keeps the socket read until pipelined bytes
             * come: its client's close reaches the handler (`aborted`). */
            hc->waiting = true;
            if (hc->body_paused || hc->pend_len)
                c2s_block(c);
            break;
        }
        if (e == HPE_OK && used == 0)
            break;
    }
    hc->in_run = false;
}

static int
http_input(xd_conn_t *c, const char *p, size_t n)
{
    http_conn_t *hc = c->xs;
    if (hc->dead)
        return 0;
    if (hc->req && !hc->req->complete && hc->req->method[0]) {
        /* A body goes on: its timer starts over once a piece worth it came,
         * so a trickle (slow POST) ends as a slow head does. */
        hc->body_progress += n;
        if (hc->body_progress >= HTTP_MIN_BODY_PIECE) {
            hc->body_progress = 0;
            c2s_set_timeout(c, hc->hl->header_ms);
        }
    }
    pend_add(hc, p, n);
    if (hc->waiting) {
        c2s_block(c); /* a held request: input stops at the first pipelined bytes */
        return XD_TLS_PAUSE;
    }
    http_run(hc);
    if (c->xs == hc && hc->waiting)
        return XD_TLS_PAUSE;
    return 0;
}

static void
http_resume(xd_conn_t *c)
{
    http_conn_t *hc = c->xs;
    hc->waiting = false;
    if (hc->req && !hc->req->answered && hc->req->complete) {
        hc->waiting = true; /* still held: reading goes on until bytes come */
        if (hc->pend_len)
            c2s_block(c);
        return;
    }
    http_run(hc);
}

/* The role writes stream bytes only when it closes a connection that is
 * no stream (a timeout, the server's stop): nothing to say in HTTP. */
static void
http_write(xd_conn_t *c, const char *p, size_t n)
{
    (void)c;
    (void)p;
    (void)n;
}

static void
http_drained(xd_conn_t *c)
{
    http_conn_t *hc = c->xs;
    xd_http_req_t *r = hc->req;
    if (r && r->started && r->route.h->writable)
        r->route.h->writable(r, r->route.ud);
}

static void
http_xfree(xd_conn_t *c)
{
    http_conn_t *hc = c->xs;
    if (!hc)
        return;
    xd_http_req_t *r = hc->req;
    if (r) {
        if (r->routed && !r->early && (!r->answered || r->started) && r->route.h->aborted)
            r->route.h->aborted(r, r->route.ud);
        req_free(r);
    }
    xd_free(hc->pend);
    xd_free(hc);
}

static void
http_closing(xd_conn_t *c)
{
    http_conn_t *hc = c->xs;
    xd_http_req_t *r = hc->req;
    /* A held request's handler learns now that nobody waits any more. */
    if (r && r->routed && !r->early && (!r->answered || r->started) && r->route.h->aborted) {
        r->route.h->aborted(r, r->route.ud);
        hc->req = NULL;
        req_free(r);
    }
}

static const xd_conn_xport_t http_xport = {
    .name = "http",
    .input = http_input,
    .write = http_write,
    .resume = http_resume,
    .drained = http_drained,
    .closing = http_closing,
    .free = http_xfree,
};

void
xd_http_req_pause(xd_http_req_t *r)
{
    http_conn_t *hc = r->hc;
    if (hc->body_paused || r->complete)
        return;
    hc->body_paused = true;
    http_parser_pause(&hc->p, 1);
    c2s_set_timeout(hc->c, 0);
}

void
xd_http_req_resume(xd_http_req_t *r)
{
    http_conn_t *hc = r->hc;
    if (!hc->body_paused)
        return;
    hc->body_paused = false;
    c2s_set_timeout(hc->c, hc->hl->header_ms);
    send_continue(r);
    if (hc->waiting && !hc->in_run) {
        hc->waiting = false;
        c2s_unblock(hc->c);
    }
}

void
http_upgrade(xd_http_req_t *r, const char *headers, http_upgrade_fn start)
{
    if (r->answered)
        return;
    r->keep_alive = true;
    r->upgraded = true;
    r->upgrade = start;
    r->extra = xd_realloc(r->extra, r->extra_len + strlen(headers) + 1);
    memcpy(r->extra + r->extra_len, headers, strlen(headers) + 1);
    r->extra_len += strlen(headers);
    write_head(r, 101, NULL, -1);
    access_log(r);
}

const char *
http_route_of(const xd_http_req_t *r, const char *name)
{
    const http_listener_t *hl = r->hc->hl;
    if (hl->nroutes) {
        for (size_t j = 0; j < hl->nroutes; j++)
            if (!strcmp(hl->route_handler[j], name))
                return hl->route_path[j];
        return NULL;
    }
    const char *path = NULL;
    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nregs; i++)
        if (!strcmp(regs[i].name, name))
            path = regs[i].default_path; /* registered for the process' life */
    uv_mutex_unlock(&reg_lock);
    return path;
}

/* ---- the role ------------------------------------------------------------------------------ */

static void
http_accepted(xd_conn_t *c)
{
    http_conn_t *hc = xd_new(http_conn_t);
    hc->c = c;
    hc->hl = c->listener->ext;
    http_parser_init(&hc->p, HTTP_REQUEST);
    hc->p.data = hc;
    hc->tokens = hc->hl->rate;
    hc->tokens_ms = uv_now(c->tcp.loop);
    c->xport = &http_xport;
    c->xs = hc;
}

static void
http_stream_open(xd_conn_t *c, const xd_el_t *hdr)
{
    (void)hdr;
    c2s_end(c); /* never: no XML reaches the parser of an HTTP connection */
}

static void
http_element(xd_conn_t *c, xd_stanza_t *st)
{
    xd_stanza_unref(st);
    c2s_end(c);
}

static char **
strv_dup(const xd_strlist_t *l)
{
    char **v = xd_calloc(l->count ? l->count : 1, sizeof *v);
    for (size_t i = 0; i < l->count; i++)
        v[i] = xd_strdup(l->items[i]);
    return v;
}

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        xd_free(v[i]);
    xd_free(v);
}

static int
http_listener_prepare(xd_listener_t *l, const xd_listen_conf_t *lc, char **err)
{
    (void)err;
    http_listener_t *hl = xd_new(http_listener_t);
    hl->nroutes = lc->request_handlers.count;
    hl->route_path = xd_calloc(hl->nroutes ? hl->nroutes : 1, sizeof *hl->route_path);
    hl->route_handler = xd_calloc(hl->nroutes ? hl->nroutes : 1, sizeof *hl->route_handler);
    for (size_t i = 0; i < hl->nroutes; i++) {
        const xd_http_route_conf_t *rc = &lc->request_handlers.items[i];
        hl->route_path[i] = xd_strdup(rc->name);
        /* ejabberd's module names for the same handlers */
        const char *h = rc->handler ? rc->handler : "";
        if (!strcmp(h, "ejabberd_http_ws") || !strcmp(h, "mod_websocket"))
            h = "websocket";
        else if (!strcmp(h, "mod_bosh"))
            h = "bosh";
        else if (!strcmp(h, "mod_host_meta"))
            h = "host_meta";
        hl->route_handler[i] = xd_strdup(h);
    }
    hl->max_header = lc->max_header_size ? lc->max_header_size : 8192;
    hl->max_body = lc->max_body_size;
    hl->header_ms = lc->header_timeout_ms ? lc->header_timeout_ms : 10000;
    hl->handshake_ms = lc->handshake_timeout_ms;
    hl->rate = lc->request_rate > 0 ? lc->request_rate : 50;
    hl->cors = strv_dup(&lc->cors_origins);
    hl->ncors = lc->cors_origins.count;
    hl->ws_origins = strv_dup(&lc->websocket_origins);
    hl->nws_origins = lc->websocket_origins.count;
    hl->ws_ping_ms = lc->websocket_ping_ms;
    hl->ws_see_other = lc->websocket_see_other ? xd_strdup(lc->websocket_see_other) : NULL;
    hl->bosh_inactivity_ms = lc->bosh_max_inactivity_ms ? lc->bosh_max_inactivity_ms : 60000;
    hl->bosh_wait_ms = lc->bosh_max_wait_ms ? lc->bosh_max_wait_ms : 60000;
    hl->bosh_hold = lc->bosh_max_hold > 0 ? (unsigned)lc->bosh_max_hold : 0;
    hl->bosh_requests = lc->bosh_max_requests > 0 ? (unsigned)lc->bosh_max_requests : 2;
    hl->bosh_pause_ms = lc->bosh_max_pause_ms;
    hl->bosh_queue = lc->bosh_max_queue ? lc->bosh_max_queue : 262144;
    l->ext = hl;
    /* The connection's first timer is the header timeout; WebSocket
     * streams get the handshake timeout when they start.  No STARTTLS:
     * TLS is the listener's (tls: true) or a reverse proxy's. */
    l->handshake_timeout_ms = hl->header_ms;
    l->starttls = false;
    l->starttls_required = false;
    return 0;
}

static void
http_listener_free(xd_listener_t *l)
{
    http_listener_t *hl = l->ext;
    strv_free(hl->route_path, hl->nroutes);
    strv_free(hl->route_handler, hl->nroutes);
    strv_free(hl->cors, hl->ncors);
    strv_free(hl->ws_origins, hl->nws_origins);
    xd_free(hl->ws_see_other);
    xd_free(hl);
    l->ext = NULL;
}

const xd_conn_role_t xd_http_role = {
    .name = "http",
    .content_ns = XD_NS_CLIENT,
    .accepted = http_accepted,
    .stream_open = http_stream_open,
    .element = http_element,
    .listener_prepare = http_listener_prepare,
    .listener_free = http_listener_free,
};

void
xd_http_setup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    http_ws_setup();
    http_hostmeta_setup();
    http_bosh_setup();
}
