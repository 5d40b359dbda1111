/*
 * benchclient.c — the client streams of the C load drivers (see
 * benchclient.h): connect, stream header, in-band registration, SASL
 * PLAIN, bind, session, writes, and the tag scanner that splits the input
 * into top-level elements.
 */
#include "benchclient.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#define BC_READ_SIZE   (256 * 1024)       /* one read, any stream */
#define BC_KEEP_MIN    4096               /* first buffer of an incomplete element */
#define BC_MAX_ELEMENT (16 * 1024 * 1024) /* a bigger one ends the program */

static bc_client_t *bc_cl;      /* the program's (bc_init) */
static char bc_rbuf[BC_READ_SIZE]; /* every read lands here first */

void
bc_init(bc_client_t *cl)
{
    bc_cl = cl;
}

int64_t
bc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
bc_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", bc_cl && bc_cl->prog ? bc_cl->prog : "bench");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *
bc_xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        bc_die("out of memory (%zu bytes)", n);
    return p;
}

/* ---- writing ----------------------------------------------------------------------------------- */

/* A write the socket did not take at once. */
typedef struct {
    uv_write_t req;  /* the request (first: the callback casts back) */
    bc_conn_t *c;    /* its stream */
    int close_after; /* close the handle once written */
    size_t len;      /* bytes in data */
    char data[];     /* what is left to write */
} bc_wr_t;

void
bc_close(bc_conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, NULL);
}

static void
bc_write_error(bc_conn_t *c, int status)
{
    if (c->state != BC_ENDED && !c->cl->closing)
        fprintf(stderr, "%s: %s: write: %s\n", c->cl->prog, c->user, uv_strerror(status));
}

static void
bc_written(uv_write_t *req, int status)
{
    bc_wr_t *w = (bc_wr_t *)req;
    if (status < 0)
        bc_write_error(w->c, status);
    if (w->close_after)
        bc_close(w->c);
    free(w);
}

void
bc_send_bytes(bc_conn_t *c, const char *s, size_t n, int close_after)
{
    if (c->state == BC_ENDED || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)n) {
        if (close_after)
            bc_close(c);
        return;
    }
    if (r < 0 && r != UV_EAGAIN) {
        bc_write_error(c, r);
        if (close_after)
            bc_close(c);
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    bc_wr_t *w = bc_xrealloc(NULL, sizeof *w + n - done);
    w->c = c;
    w->close_after = close_after;
    w->len = n - done;
    memcpy(w->data, s + done, w->len);
    b = uv_buf_init(w->data, (unsigned)w->len);
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, bc_written);
    if (r < 0) {
        bc_write_error(c, r);
        if (close_after)
            bc_close(c);
        free(w);
    }
}

void
bc_sendf(bc_conn_t *c, const char *fmt, ...)
{
    char stack[2048], *s = stack;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (n < 0)
        bc_die("vsnprintf failed");
    if ((size_t)n >= sizeof stack) {
        s = bc_xrealloc(NULL, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    bc_send_bytes(c, s, (size_t)n, 0);
    if (s != stack)
        free(s);
}

/* ---- looking into one element ------------------------------------------------------------------ */

int
bc_has(const char *el, size_t len, const char *needle)
{
    return memmem(el, len, needle, strlen(needle)) != NULL;
}

const char *
bc_name(const char *el, size_t len, size_t *n)
{
    size_t i = 1;
    while (i < len && el[i] != ' ' && el[i] != '\t' && el[i] != '\r' && el[i] != '\n' &&
           el[i] != '>' && el[i] != '/')
        i++;
    *n = i - 1;
    return el + 1;
}

int
bc_is(const char *name, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(name, want, n) == 0;
}

const char *
bc_attr(const char *el, size_t len, const char *want, size_t *vlen)
{
    size_t wn = strlen(want), i;
    bc_name(el, len, &i);
    i += 1;
    for (;;) {
        while (i < len && (el[i] == ' ' || el[i] == '\t' || el[i] == '\r' || el[i] == '\n'))
            i++;
        if (i >= len || el[i] == '>' || el[i] == '/')
            return NULL;
        size_t a = i;
        while (i < len && el[i] != '=' && el[i] != ' ' && el[i] != '>')
            i++;
        size_t an = i - a;
        while (i < len && (el[i] == ' ' || el[i] == '='))
            i++;
        if (i >= len || (el[i] != '\'' && el[i] != '"'))
            return NULL;
        char q = el[i++];
        size_t v = i;
        while (i < len && el[i] != q)
            i++;
        if (i >= len)
            return NULL;
        if (an == wn && memcmp(el + a, want, wn) == 0) {
            *vlen = i - v;
            return el + v;
        }
        i++;
    }
}

/* ---- login ------------------------------------------------------------------------------------- */

static void
bc_header(bc_conn_t *c)
{
    bc_sendf(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
             c->cl->domain);
}

static void
bc_auth(bc_conn_t *c)
{
    char plain[512];
    unsigned char b64[700];
    int n = snprintf(plain, sizeof plain, "%c%s%c%s", 0, c->user, 0, c->cl->password);
    if (n < 0 || (size_t)n >= sizeof plain)
        bc_die("password too long");
    EVP_EncodeBlock(b64, (const unsigned char *)plain, n);
    bc_sendf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
             (const char *)b64);
    c->state = BC_AUTH;
}

/* A session the features announce without <optional/> inside (RFC 3921). */
static int
bc_session_required(const char *el, size_t len)
{
    const char *s = memmem(el, len, "<session", 8), *end = el + len;
    if (!s || !bc_has(s, (size_t)(end - s), "urn:ietf:params:xml:ns:xmpp-session"))
        return 0;
    const char *gt = memchr(s, '>', (size_t)(end - s));
    if (!gt || gt[-1] == '/')
        return 1;
    const char *close = memmem(gt, (size_t)(end - gt), "</session>", 10);
    return !bc_has(gt, close ? (size_t)(close - gt) : (size_t)(end - gt), "optional");
}

static void
bc_online(bc_conn_t *c)
{
    c->state = BC_ONLINE;
    c->cl->online(c);
}

static void
bc_ended(bc_conn_t *c, const char *why)
{
    if (c->state == BC_ENDED)
        return;
    bc_state was = c->state;
    c->state = BC_ENDED;
    c->cl->ended(c, was, why);
}

/* The answer to a login IQ (register, bind, session): 1 when it was one. */
static int
bc_login_iq(bc_conn_t *c, const char *el, size_t len)
{
    size_t tn = 0, in = 0;
    const char *type = bc_attr(el, len, "type", &tn);
    const char *id = bc_attr(el, len, "id", &in);
    if (!type || !id || !((tn == 6 && memcmp(type, "result", 6) == 0) ||
                          (tn == 5 && memcmp(type, "error", 5) == 0)))
        return 0;
    int ok = tn == 6;
    if (c->state == BC_REGISTER && in == 3 && memcmp(id, "reg", 3) == 0) {
        bc_auth(c); /* registered, or there already (conflict): log in */
    } else if (c->state == BC_BIND && in == 2 && memcmp(id, "b1", 2) == 0) {
        if (!ok || !memmem(el, len, "<jid>", 5))
            bc_die("%s@%s: bind failed: %.200s", c->user, c->cl->domain, el);
        if (c->need_session) {
            bc_sendf(c, "<iq type='set' id='s1'><session "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
            c->state = BC_SESSION;
        } else {
            bc_online(c);
        }
    } else if (c->state == BC_SESSION && in == 2 && memcmp(id, "s1", 2) == 0) {
        if (!ok)
            bc_die("%s@%s: session failed: %.200s", c->user, c->cl->domain, el);
        bc_online(c);
    } else {
        return 0;
    }
    return 1;
}

/* One complete top-level element of c's stream: the login's, or the
 * client's. */
static void
bc_element(bc_conn_t *c, const char *el, size_t len, int64_t now)
{
    size_t nn;
    const char *name = bc_name(el, len, &nn);
    if (bc_is(name, nn, "iq")) {
        if (c->state < BC_ONLINE && bc_login_iq(c, el, len))
            return;
    } else if (bc_is(name, nn, "stream:features")) {
        if (c->state == BC_FEATURES1 && c->cl->reg) {
            bc_sendf(c, "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>%s"
                        "</username><password>%s</password></query></iq>",
                     c->user, c->cl->password);
            c->state = BC_REGISTER;
        } else if (c->state == BC_FEATURES1) {
            bc_auth(c);
        } else if (c->state == BC_FEATURES2) {
            c->need_session = bc_session_required(el, len);
            bc_sendf(c, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        "<resource>%s</resource></bind></iq>", c->resource);
            c->state = BC_BIND;
        }
        return;
    } else if (bc_is(name, nn, "success")) {
        if (c->state == BC_AUTH) {
            c->state = BC_FEATURES2;
            bc_header(c);
        }
        return;
    } else if (bc_is(name, nn, "failure")) {
        bc_die("%s@%s: authentication failed: %.200s", c->user, c->cl->domain, el);
    } else if (bc_is(name, nn, "stream:error")) {
        if (!c->cl->closing)
            bc_die("%s@%s: stream error: %.300s", c->user, c->cl->domain, el);
        return;
    }
    c->cl->element(c, el, len, now);
}

/* ---- reading ----------------------------------------------------------------------------------- */

/* Splits data[0, n) into top-level elements from c->scan on (c->depth
 * elements open there) and returns where the incomplete rest starts. */
static size_t
bc_split(bc_conn_t *c, const char *data, size_t n, int64_t now)
{
    size_t p = c->scan, elem = 0;
    int depth = c->depth;
    while (p < n) {
        if (data[p] != '<') {
            const char *lt = memchr(data + p, '<', n - p);
            if (!lt) {
                p = n;
                break;
            }
            p = (size_t)(lt - data);
        }
        size_t t = p;
        if (t + 1 >= n)
            break;
        char k = data[t + 1];
        size_t q;
        if (k == '?' || k == '!') { /* declaration, comment, CDATA */
            if (k == '!' && t + 3 >= n)
                break;
            const char *endmark = k == '?' ? "?>" : data[t + 2] == '-' ? "-->" : "]]>";
            if (k == '!' && data[t + 2] != '-' && data[t + 2] != '[')
                bc_die("%s: unexpected markup: %.60s", c->user, data + t);
            const char *e = memmem(data + t + 2, n - t - 2, endmark, strlen(endmark));
            if (!e)
                break;
            p = (size_t)(e - data) + strlen(endmark);
            continue;
        }
        char quote = 0;
        for (q = t + 1; q < n; q++) {
            char ch = data[q];
            if (quote) {
                if (ch == quote)
                    quote = 0;
            } else if (ch == '"' || ch == '\'') {
                quote = ch;
            } else if (ch == '>') {
                break;
            }
        }
        if (q >= n)
            break; /* the tag is incomplete */
        p = q + 1;
        if (k == '/') {
            if (depth == 0) { /* </stream:stream> */
                bc_ended(c, "the server ended the stream");
                continue;
            }
            if (--depth == 0)
                bc_element(c, data + elem, p - elem, now);
        } else if (data[q - 1] == '/') {
            if (depth == 0)
                bc_element(c, data + t, p - t, now);
        } else if (depth == 0 && q - t >= 14 && memcmp(data + t, "<stream:stream", 14) == 0) {
            /* the stream header (again after SASL) */
        } else {
            if (depth++ == 0)
                elem = t;
        }
    }
    /* The rest starts at the open top-level element, or at the tag being read. */
    size_t rest = depth > 0 ? elem : p;
    c->depth = depth;
    c->scan = p - rest;
    return rest;
}

static void
bc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(bc_rbuf, sizeof bc_rbuf);
}

static void
bc_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    bc_conn_t *c = s->data;
    if (nread < 0) {
        bc_ended(c, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        uv_read_stop(s);
        bc_close(c);
        return;
    }
    if (nread == 0 || c->state == BC_ENDED)
        return;
    int64_t now = bc_now_ns();
    c->cl->reads++;
    const char *data = b->base;
    size_t n = (size_t)nread;
    if (c->len) { /* an incomplete element from before: append */
        if (c->len + n > c->cap) {
            c->cap = (c->len + n) * 2;
            c->buf = bc_xrealloc(c->buf, c->cap);
        }
        memcpy(c->buf + c->len, data, n);
        c->len += n;
        data = c->buf;
        n = c->len;
    }
    size_t rest = bc_split(c, data, n, now);
    size_t keep = n - rest;
    if (keep > BC_MAX_ELEMENT)
        bc_die("%s: an element of more than %d bytes", c->user, BC_MAX_ELEMENT);
    if (keep > c->cap) {
        c->cap = keep * 2 > BC_KEEP_MIN ? keep * 2 : BC_KEEP_MIN;
        c->buf = bc_xrealloc(c->buf, c->cap);
    }
    if (keep)
        memmove(c->buf, data + rest, keep);
    c->len = keep;
}

static void
bc_connected(uv_connect_t *req, int status)
{
    bc_conn_t *c = req->data;
    if (status < 0)
        bc_die("%s: connect to %s:%d: %s", c->user, c->cl->host, c->cl->port,
               uv_strerror(status));
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&c->tcp, bc_alloc, bc_read);
    if (r < 0)
        bc_die("%s: read: %s", c->user, uv_strerror(r));
    c->state = BC_FEATURES1;
    bc_header(c);
}

void
bc_connect(bc_conn_t *c)
{
    struct sockaddr_in sa;
    c->cl = bc_cl;
    int r = uv_ip4_addr(c->cl->host, c->cl->port, &sa);
    if (r < 0)
        bc_die("%s: %s", c->cl->host, uv_strerror(r));
    uv_tcp_init(c->cl->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, bc_connected);
    if (r < 0)
        bc_die("%s: connect: %s", c->user, uv_strerror(r));
}
