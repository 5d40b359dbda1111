/*
 * pepload.c — the load driver of bench/pep.py (`--driver c`): the publisher
 * pubN and its N contacts c1..cN of one PEP fan-out run, in one libuv loop.
 *
 * pep.py makes the accounts and the rosters (and measures the server); this
 * program does the rest of a run the way pep.py's Python driver does it, at
 * about 1 µs of its own CPU per notification instead of 6-7 µs, so that the
 * driver weighs less on the cores it shares with the server:
 *
 *   - pubN logs in first (plain TCP on loopback, SASL PLAIN, resource
 *     binding, a session when the server's features require one) and sends
 *     <presence/> without caps; then the contacts, 50 logins at a time, each
 *     sending <presence/> with the entity capabilities (XEP-0115) of
 *     pep.py's CAPS: the verification string is computed from the same
 *     identity and features (pep.py checks it against its own VER);
 *   - the server's disco#info queries (the caps node), pings and roster
 *     pushes are answered as pep.py answers them, any other get or set with
 *     service-unavailable;
 *   - warm-up: a publish with tag w0, w1, ... until every contact gets it
 *     (at most 10, 10 s each: the server learns the caps first);
 *   - run: publishes with --window IQs outstanding until --pubs are
 *     acknowledged or --max-seconds have passed; then the notifications
 *     still on their way, until all came or none for 5 s.
 *
 * Each item's title is the mark "pb:TAG:SEQ:SENDTIME" (SENDTIME in ns of
 * CLOCK_MONOTONIC, the clock of Python's time.perf_counter_ns() on Linux:
 * the Python driver's format).  A contact's notification counts once per
 * (contact, item) pair (Prosody sends copies to the bare and the full JID;
 * all copies are in stanzas=) and gives one publish -> notification
 * latency.  The input is split into complete top-level elements (the tags
 * are scanned, quotes in attribute values respected, no full XML parse);
 * marks are searched in <message/> elements only.
 *
 * Conversation with pep.py, one line each:
 *   stdout  READY ready=R contacts=N login_s=S warm=W caps=VER
 *           (after the warm-up: R contacts got its item)
 *   stdin   go         (pep.py has sampled the server's CPU: publish)
 *   stdout  RESULT key=value ...
 *   stdin   close, or end of file: the streams end and the program exits 0.
 * With --auto it waits for neither line.  Errors: a line on stderr, exit 1.
 *
 * Usage: pepload --port P --domain D --publisher pub100 --contacts 100
 *                --pubs 1000 --tag r1x0 [--window 16] [--max-seconds 120]
 *                [--password password] [--host 127.0.0.1] [--coalesce-us 500]
 *                [--auto]
 *
 * Where its CPU goes.  The parse is cheap (well under 1 µs per
 * notification); the kernel's side of each read is not: on this machine (a
 * paravirtualised guest, where a syscall or a wakeup costs several µs) a
 * read of a loopback TCP socket costs 4-5 µs of system time, its ACK to the
 * server's socket included, and a loop turn that sleeps and wakes for one
 * ready stream as much again.  So during the run, after each poll, the loop
 * sleeps --coalesce-us (default 500 µs; 0: never): the next poll then finds
 * many streams ready, and with 100 contacts several notifications on one.
 * A notification is read at most that much later than it could have been
 * (its latency overstated by at most 0.5 ms, against p50 of 15 ms and more
 * in these runs).  With 1,000 contacts a contact gets one notification per
 * publish, so about one read per notification stays (reads= in RESULT).
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>
#include <uv.h>

#define PL_NODE      "http://jabber.org/protocol/tune"
#define PL_CAPS_NODE "https://xmppd.invalid/pepbench"
/* pep.py's IDENTITY and FEATURES (sorted, as pep.py sorts them). */
#define PL_IDENTITY_CAT  "client"
#define PL_IDENTITY_TYPE "pc"
#define PL_IDENTITY_NAME "pepbench"
static const char *const pl_features[] = {
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/disco#info",
    PL_NODE "+notify",
    "urn:xmpp:ping",
};
#define PL_NFEATURES (sizeof pl_features / sizeof pl_features[0])

#define PL_LOGIN_PARALLEL 50           /* logins in flight (pep.py's gather_limited) */
#define PL_WARM_ROUNDS    10           /* warm-up publishes at most */
#define PL_WARM_WAIT_NS   10000000000LL /* per warm-up publish, for the contacts */
#define PL_ACK_WAIT_NS    120000000000LL /* a warm-up publish's result */
#define PL_LOGIN_WAIT_NS  600000000000LL /* all logins */
#define PL_TICK_MS        100
#define PL_IDLE_TICKS     50           /* 5 s without a notification: drained */
#define PL_READ_SIZE      (256 * 1024)
#define PL_MAX_ELEMENT    (16 * 1024 * 1024)

/* One stream's login state. */
typedef enum {
    CS_CONNECTING, /* TCP connect, then the stream header */
    CS_FEATURES1,  /* waiting for the features: then <auth/> */
    CS_AUTH,       /* waiting for <success/> */
    CS_FEATURES2,  /* after the restart: then the bind */
    CS_BIND,       /* waiting for the bind result (id b1) */
    CS_SESSION,    /* waiting for the session result (id s1) */
    CS_ONLINE,     /* presence sent */
    CS_ENDED,      /* the server ended the stream or the connection */
} pl_cstate;

/* The run's phase (one for the whole program). */
typedef enum {
    PH_LOGIN,     /* publisher, then the contacts */
    PH_WARM_ACK,  /* warm-up publish sent, waiting for its result */
    PH_WARM_WAIT, /* waiting for the contacts to get it */
    PH_READY,     /* READY printed: waiting for "go" */
    PH_RUN,       /* publishing */
    PH_DRAIN,     /* every publish acknowledged: the last notifications */
    PH_DONE,      /* RESULT printed: waiting for "close" */
    PH_CLOSE,     /* the streams end */
} pl_phase;

/* One client stream.  Owned by pl (the program's state); never freed
 * before exit (the handle is closed in PH_CLOSE). */
typedef struct pl_conn {
    uv_tcp_t     tcp;
    uv_connect_t creq;
    int          idx;         /* 0: the publisher; i: contact ci */
    char         user[32];    /* local part */
    pl_cstate    state;
    int          need_session; /* the features required a session */
    /* Unparsed input: the incomplete top-level element (or tag) of the
     * last read.  scan: bytes of it already scanned; depth: elements open
     * inside it at scan (0: between top-level elements). */
    char        *buf;
    size_t       len, cap, scan;
    int          depth;
    /* Run: the items of the run's tag received here (bit SEQ), their count. */
    uint8_t     *seen;
    uint64_t     got;
    int          last_warm;   /* number of the last warm-up tag seen, -1: none */
    int          closing;     /* the end tag is on its way; the handle closes after it */
} pl_conn_t;

/* A write the socket did not take at once. */
typedef struct {
    uv_write_t req;
    pl_conn_t *c;
    int        close_after;
    size_t     len;
    char       data[];
} pl_wr_t;

static struct {
    /* options */
    const char *host, *domain, *publisher, *password, *tag;
    int         port, ncontacts, window, auto_go;
    long        pubs_planned;
    double      max_seconds;
    /* state */
    uv_loop_t  *loop;
    long        coalesce_us;
    uv_timer_t  tick;
    uv_check_t  check;
    uv_pipe_t   in;
    int         in_open;
    char        inbuf[256];
    size_t      inlen;
    int         in_lines, in_eof;
    pl_phase    phase;
    pl_conn_t  *conns;         /* [0] publisher, [1..N] contacts */
    int         next_login;    /* next contact to connect */
    int         online;        /* contacts online */
    int64_t     t_login0, t_login;
    int64_t     deadline;      /* of the phase's current wait */
    int         warm, ready;
    char        caps_ver[64];
    size_t      taglen;
    /* run */
    long        sent, acked, errors;
    int64_t     t_start, t_stop, t_ack, t_last;
    uint64_t    n, copies;
    uint64_t    expected;
    int64_t    *lat;
    size_t      nlat, caplat;
    uint64_t    drain_last;
    int         drain_idle;
    int         lost;          /* connections lost after the login */
    struct rusage ru0;
    double      cli_cpu, cli_sys;  /* CPU over the run: all, system */
    uint64_t    reads, iters;      /* over the run: reads with data, loop turns */             /* read callbacks with data over the run */
    char        rbuf[PL_READ_SIZE];
} pl;

static int64_t
pl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pl_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
pl_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pepload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *
pl_xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        pl_die("out of memory (%zu bytes)", n);
    return p;
}

/* ------------------------------------------------------------------ */
/* Writing                                                             */

static void
pl_close_conn(pl_conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, NULL);
}

static void
pl_written(uv_write_t *req, int status)
{
    pl_wr_t *w = (pl_wr_t *)req;
    if (status < 0 && w->c->state != CS_ENDED && pl.phase < PH_CLOSE)
        fprintf(stderr, "pepload: %s: write: %s\n", w->c->user, uv_strerror(status));
    if (w->close_after)
        pl_close_conn(w->c);
    free(w);
}

/* Sends n bytes on c (queued after earlier writes); closes the handle
 * once they are out when close_after. */
static void
pl_send_bytes(pl_conn_t *c, const char *s, size_t n, int close_after)
{
    if (c->state == CS_ENDED || uv_is_closing((uv_handle_t *)&c->tcp)) {
        return;
    }
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)n) {
        if (close_after)
            pl_close_conn(c);
        return;
    }
    if (r < 0 && r != UV_EAGAIN) {
        if (pl.phase < PH_CLOSE)
            fprintf(stderr, "pepload: %s: write: %s\n", c->user, uv_strerror(r));
        if (close_after)
            pl_close_conn(c);
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    pl_wr_t *w = pl_xrealloc(NULL, sizeof *w + n - done);
    w->c = c;
    w->close_after = close_after;
    w->len = n - done;
    memcpy(w->data, s + done, w->len);
    b = uv_buf_init(w->data, (unsigned)w->len);
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, pl_written);
    if (r < 0) {
        fprintf(stderr, "pepload: %s: write: %s\n", c->user, uv_strerror(r));
        if (close_after)
            pl_close_conn(c);
        free(w);
    }
}

static void pl_sendf(pl_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
pl_sendf(pl_conn_t *c, const char *fmt, ...)
{
    char stack[2048], *s = stack;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (n < 0)
        pl_die("vsnprintf failed");
    if ((size_t)n >= sizeof stack) {
        s = pl_xrealloc(NULL, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    pl_send_bytes(c, s, (size_t)n, 0);
    if (s != stack)
        free(s);
}

/* ------------------------------------------------------------------ */
/* Looking into one element                                            */

static int
pl_has(const char *el, size_t len, const char *needle)
{
    return memmem(el, len, needle, strlen(needle)) != NULL;
}

/* The element's name (after '<'), its length in *n. */
static const char *
pl_name(const char *el, size_t len, size_t *n)
{
    size_t i = 1;
    while (i < len && el[i] != ' ' && el[i] != '\t' && el[i] != '\r' && el[i] != '\n' &&
           el[i] != '>' && el[i] != '/')
        i++;
    *n = i - 1;
    return el + 1;
}

static int
pl_is(const char *name, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(name, want, n) == 0;
}

/* The raw value (entities as sent) of attribute `want` of the start tag at
 * el; NULL when absent. */
static const char *
pl_attr(const char *el, size_t len, const char *want, size_t *vlen)
{
    size_t wn = strlen(want), i;
    pl_name(el, len, &i);
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

/* The attribute's value for a single-quoted attribute of ours ('
 * becomes &apos;; the rest is already escaped as the server sent it);
 * malloc'ed, "" when absent. */
static char *
pl_attr_dup(const char *el, size_t len, const char *want)
{
    size_t vn = 0;
    const char *v = pl_attr(el, len, want, &vn);
    char *s = pl_xrealloc(NULL, vn * 6 + 1), *o = s;
    for (size_t i = 0; v && i < vn; i++) {
        if (v[i] == '\'') {
            memcpy(o, "&apos;", 6);
            o += 6;
        } else {
            *o++ = v[i];
        }
    }
    *o = '\0';
    return s;
}

/* ------------------------------------------------------------------ */
/* Login                                                               */

static void pl_login_next(void);
static void pl_warm_publish(void);

static void
pl_header(pl_conn_t *c)
{
    pl_sendf(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
             pl.domain);
}

static void
pl_auth(pl_conn_t *c)
{
    char plain[512];
    unsigned char b64[700];
    int n = snprintf(plain, sizeof plain, "%c%s%c%s", 0, c->user, 0, pl.password);
    if (n < 0 || (size_t)n >= sizeof plain)
        pl_die("password too long");
    EVP_EncodeBlock(b64, (const unsigned char *)plain, n);
    pl_sendf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
             (const char *)b64);
    c->state = CS_AUTH;
}

/* A session the features announce without <optional/> inside (RFC 3921). */
static int
pl_session_required(const char *el, size_t len)
{
    const char *s = memmem(el, len, "<session", 8), *end = el + len;
    if (!s || !pl_has(s, (size_t)(end - s), "urn:ietf:params:xml:ns:xmpp-session"))
        return 0;
    const char *gt = memchr(s, '>', (size_t)(end - s));
    if (!gt || gt[-1] == '/')
        return 1;
    const char *close = memmem(gt, (size_t)(end - gt), "</session>", 10);
    return !pl_has(gt, close ? (size_t)(close - gt) : (size_t)(end - gt), "optional");
}

static void
pl_online(pl_conn_t *c)
{
    c->state = CS_ONLINE;
    if (c->idx == 0) {
        /* no caps: the publisher wants no notifications */
        pl_sendf(c, "<presence/>");
        pl_login_next();
        return;
    }
    pl.online++;
    if (pl.online == pl.ncontacts) {
        /* all logged in: the presences (as pep.py's Python driver sends them) */
        for (int i = 1; i <= pl.ncontacts; i++)
            pl_sendf(&pl.conns[i], "<presence><c xmlns='http://jabber.org/protocol/caps' "
                     "hash='sha-1' node='" PL_CAPS_NODE "' ver='%s'/></presence>", pl.caps_ver);
        pl.t_login = pl_now();
        pl.warm = 0;
        pl_warm_publish();
    } else {
        pl_login_next();
    }
}

/* ------------------------------------------------------------------ */
/* Publishing                                                          */

static void
pl_publish(const char *id, const char *tag, long seq)
{
    pl_sendf(&pl.conns[0],
             "<iq type='set' id='%s'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
             "<publish node='" PL_NODE "'><item><tune xmlns='" PL_NODE "'><artist>pepbench"
             "</artist><title>pb:%s:%ld:%" PRId64 "</title><length>%ld</length></tune>"
             "</item></publish></pubsub></iq>",
             id, tag, seq, pl_now(), seq % 600);
}

static void
pl_warm_publish(void)
{
    char id[32], tag[32];
    snprintf(id, sizeof id, "warm%d", pl.warm);
    snprintf(tag, sizeof tag, "w%d", pl.warm);
    pl_publish(id, tag, 0);
    pl.phase = PH_WARM_ACK;
    pl.deadline = pl_now() + PL_ACK_WAIT_NS;
}

static void
pl_send_next(void)
{
    char id[32];
    pl.sent++;
    snprintf(id, sizeof id, "pb%ld", pl.sent);
    pl_publish(id, pl.tag, pl.sent);
}

static void pl_drain_check(void);

static void
pl_on_ack(int ok)
{
    pl.acked++;
    if (!ok)
        pl.errors++;
    if (pl.sent < pl.pubs_planned && pl_now() < pl.t_stop) {
        pl_send_next();
    } else if (pl.acked == pl.sent) { /* all planned, or --max-seconds */
        pl.t_ack = pl_now();
        pl.expected = (uint64_t)pl.sent * (uint64_t)pl.ready;
        pl.phase = PH_DRAIN;
        pl.drain_last = pl.n;
        pl.drain_idle = 0;
        pl_drain_check();
    }
}

static void
pl_start_run(void)
{
    pl.phase = PH_RUN;
    getrusage(RUSAGE_SELF, &pl.ru0);
    pl.t_start = pl_now();
    pl.t_stop = pl.t_start + (int64_t)(pl.max_seconds * 1e9);
    pl.deadline = pl.t_stop + 600000000000LL;
    long first = pl.window < pl.pubs_planned ? pl.window : pl.pubs_planned;
    for (long i = 0; i < first; i++)
        pl_send_next();
}

/* ------------------------------------------------------------------ */
/* The elements                                                        */

/* The marks "pb:TAG:SEQ:SENDTIME" of one <message/> to contact c. */
static void
pl_marks(pl_conn_t *c, const char *el, size_t len, int64_t now)
{
    const char *p = el, *end = el + len;
    while ((p = memmem(p, (size_t)(end - p), "pb:", 3)) != NULL) {
        p += 3;
        const char *t = p;
        while (p < end && (*p == '_' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                           (*p >= 'A' && *p <= 'Z')))
            p++;
        size_t tn = (size_t)(p - t);
        if (tn == 0 || p >= end || *p != ':')
            continue;
        uint64_t seq = 0;
        const char *d = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            seq = seq * 10 + (uint64_t)(*p++ - '0');
        if (p == d || p >= end || *p != ':')
            continue;
        int64_t sent = 0;
        d = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            sent = sent * 10 + (*p++ - '0');
        if (p == d)
            continue;
        if (tn == pl.taglen && memcmp(t, pl.tag, tn) == 0) {
            pl.copies++;
            if (seq >= 1 && seq <= (uint64_t)pl.pubs_planned) {
                if (c->seen[seq >> 3] & (1u << (seq & 7)))
                    continue; /* a second copy of the item for this contact */
                c->seen[seq >> 3] |= (uint8_t)(1u << (seq & 7));
            }
            if (pl.nlat == pl.caplat) {
                pl.caplat = pl.caplat ? pl.caplat * 2 : 1 << 16;
                pl.lat = pl_xrealloc(pl.lat, pl.caplat * sizeof *pl.lat);
            }
            pl.lat[pl.nlat++] = now - sent;
            c->got++;
            pl.n++;
            pl.t_last = now;
        } else if (t[0] == 'w' && tn > 1) {
            int w = 0;
            size_t i = 1;
            for (; i < tn && t[i] >= '0' && t[i] <= '9' && w < 1000000; i++)
                w = w * 10 + (t[i] - '0');
            if (i == tn)
                c->last_warm = w;
        }
    }
}

static void
pl_answer(pl_conn_t *c, const char *el, size_t len, int get)
{
    char *id = pl_attr_dup(el, len, "id"), *from = pl_attr_dup(el, len, "from");
    char to[1024];
    if (*from && strlen(from) < sizeof to - 8)
        snprintf(to, sizeof to, " to='%s'", from);
    else
        to[0] = '\0';
    if (get && pl_has(el, len, "http://jabber.org/protocol/disco#info")) {
        const char *q = memmem(el, len, "<query", 6);
        char *node = q ? pl_attr_dup(q, len - (size_t)(q - el), "node") : NULL;
        char feats[512];
        size_t fo = 0;
        for (size_t i = 0; i < PL_NFEATURES; i++)
            fo += (size_t)snprintf(feats + fo, sizeof feats - fo, "<feature var='%s'/>",
                                   pl_features[i]);
        if (node && *node)
            pl_sendf(c, "<iq type='result' id='%s'%s><query xmlns="
                        "'http://jabber.org/protocol/disco#info' node='%s'><identity "
                        "category='" PL_IDENTITY_CAT "' type='" PL_IDENTITY_TYPE "' name='"
                        PL_IDENTITY_NAME "'/>%s</query></iq>", id, to, node, feats);
        else
            pl_sendf(c, "<iq type='result' id='%s'%s><query xmlns="
                        "'http://jabber.org/protocol/disco#info'><identity "
                        "category='" PL_IDENTITY_CAT "' type='" PL_IDENTITY_TYPE "' name='"
                        PL_IDENTITY_NAME "'/>%s</query></iq>", id, to, feats);
        free(node);
    } else if ((!get && pl_has(el, len, "jabber:iq:roster")) || pl_has(el, len, "urn:xmpp:ping")) {
        pl_sendf(c, "<iq type='result' id='%s'%s/>", id, to);
    } else {
        pl_sendf(c, "<iq type='error' id='%s'%s><error type='cancel'><service-unavailable"
                    " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", id, to);
    }
    free(id);
    free(from);
}

static void
pl_iq(pl_conn_t *c, const char *el, size_t len)
{
    size_t tn = 0, in = 0;
    const char *type = pl_attr(el, len, "type", &tn);
    if (type && ((tn == 3 && memcmp(type, "get", 3) == 0) || (tn == 3 && memcmp(type, "set", 3) == 0))) {
        pl_answer(c, el, len, type[0] == 'g');
        return;
    }
    int ok = type && tn == 6 && memcmp(type, "result", 6) == 0;
    const char *id = pl_attr(el, len, "id", &in);
    if (!id)
        return;
    if (c->state == CS_BIND && in == 2 && memcmp(id, "b1", 2) == 0) {
        const char *j = memmem(el, len, "<jid>", 5);
        if (!ok || !j)
            pl_die("%s@%s: bind failed: %.200s", c->user, pl.domain, el);
        if (c->need_session) {
            pl_sendf(c, "<iq type='set' id='s1'><session "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
            c->state = CS_SESSION;
        } else {
            pl_online(c);
        }
    } else if (c->state == CS_SESSION && in == 2 && memcmp(id, "s1", 2) == 0) {
        if (!ok)
            pl_die("%s@%s: session failed: %.200s", c->user, pl.domain, el);
        pl_online(c);
    } else if (c->idx == 0 && in > 2 && memcmp(id, "pb", 2) == 0 &&
               (pl.phase == PH_RUN || pl.phase == PH_DRAIN)) {
        pl_on_ack(ok);
    } else if (c->idx == 0 && pl.phase == PH_WARM_ACK && in > 4 && memcmp(id, "warm", 4) == 0) {
        char want[32];
        snprintf(want, sizeof want, "warm%d", pl.warm);
        if (in == strlen(want) && memcmp(id, want, in) == 0) {
            pl.phase = PH_WARM_WAIT;
            pl.deadline = pl_now() + PL_WARM_WAIT_NS;
        }
    }
}

/* One complete top-level element of c's stream. */
static void
pl_element(pl_conn_t *c, const char *el, size_t len, int64_t now)
{
    size_t nn;
    const char *name = pl_name(el, len, &nn);
    if (pl_is(name, nn, "message")) {
        if (c->idx > 0 && c->seen)
            pl_marks(c, el, len, now);
    } else if (pl_is(name, nn, "iq")) {
        pl_iq(c, el, len);
    } else if (pl_is(name, nn, "presence")) {
        /* nothing to do: subscriptions are made by pep.py */
    } else if (pl_is(name, nn, "stream:features")) {
        if (c->state == CS_FEATURES1) {
            pl_auth(c);
        } else if (c->state == CS_FEATURES2) {
            c->need_session = pl_session_required(el, len);
            pl_sendf(c, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        "<resource>%s</resource></bind></iq>", c->idx == 0 ? "pc" : "m");
            c->state = CS_BIND;
        }
    } else if (pl_is(name, nn, "success")) {
        if (c->state == CS_AUTH) {
            c->state = CS_FEATURES2;
            pl_header(c);
        }
    } else if (pl_is(name, nn, "failure")) {
        pl_die("%s@%s: authentication failed: %.200s", c->user, pl.domain, el);
    } else if (pl_is(name, nn, "stream:error")) {
        if (pl.phase < PH_CLOSE)
            pl_die("%s@%s: stream error: %.300s", c->user, pl.domain, el);
    }
}

static void
pl_ended(pl_conn_t *c, const char *why)
{
    if (c->state == CS_ENDED)
        return;
    int was_online = c->state == CS_ONLINE;
    c->state = CS_ENDED;
    if (pl.phase >= PH_DONE)
        return;
    if (pl.phase < PH_RUN || !was_online)
        pl_die("%s@%s: %s", c->user, pl.domain, why);
    fprintf(stderr, "pepload: %s@%s: %s during the run\n", c->user, pl.domain, why);
    pl.lost++;
}

/* Splits data[0, n) into top-level elements from c->scan on (c->depth
 * elements open there) and returns where the incomplete rest starts. */
static size_t
pl_split(pl_conn_t *c, const char *data, size_t n, int64_t now)
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
                pl_die("%s: unexpected markup: %.60s", c->user, data + t);
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
                pl_ended(c, "the server ended the stream");
                continue;
            }
            if (--depth == 0)
                pl_element(c, data + elem, p - elem, now);
        } else if (data[q - 1] == '/') {
            if (depth == 0)
                pl_element(c, data + t, p - t, now);
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
pl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(pl.rbuf, sizeof pl.rbuf);
}

static void
pl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    pl_conn_t *c = s->data;
    if (nread < 0) {
        pl_ended(c, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        uv_read_stop(s);
        if (pl.phase < PH_CLOSE)
            pl_close_conn(c);
        return;
    }
    if (nread == 0 || c->state == CS_ENDED)
        return;
    int64_t now = pl_now();
    if (pl.phase == PH_RUN || pl.phase == PH_DRAIN)
        pl.reads++;
    const char *data = b->base;
    size_t n = (size_t)nread;
    if (c->len) { /* an incomplete element from before: append */
        if (c->len + n > c->cap) {
            c->cap = (c->len + n) * 2;
            c->buf = pl_xrealloc(c->buf, c->cap);
        }
        memcpy(c->buf + c->len, data, n);
        c->len += n;
        data = c->buf;
        n = c->len;
    }
    size_t rest = pl_split(c, data, n, now);
    size_t keep = n - rest;
    if (keep > PL_MAX_ELEMENT)
        pl_die("%s: an element of more than %d bytes", c->user, PL_MAX_ELEMENT);
    if (keep > c->cap) {
        c->cap = keep * 2 > 65536 ? keep * 2 : 65536;
        c->buf = pl_xrealloc(c->buf, c->cap);
    }
    if (keep)
        memmove(c->buf, data + rest, keep);
    c->len = keep;
}

static void
pl_connected(uv_connect_t *req, int status)
{
    pl_conn_t *c = req->data;
    if (status < 0)
        pl_die("%s: connect to %s:%d: %s", c->user, pl.host, pl.port, uv_strerror(status));
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&c->tcp, pl_alloc, pl_read);
    if (r < 0)
        pl_die("%s: read: %s", c->user, uv_strerror(r));
    c->state = CS_FEATURES1;
    pl_header(c);
}

static void
pl_connect(pl_conn_t *c)
{
    struct sockaddr_in sa;
    int r = uv_ip4_addr(pl.host, pl.port, &sa);
    if (r < 0)
        pl_die("%s: %s", pl.host, uv_strerror(r));
    uv_tcp_init(pl.loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, pl_connected);
    if (r < 0)
        pl_die("%s: connect: %s", c->user, uv_strerror(r));
}

/* Starts contact logins up to PL_LOGIN_PARALLEL in flight. */
static void
pl_login_next(void)
{
    while (pl.next_login <= pl.ncontacts && pl.next_login - 1 - pl.online < PL_LOGIN_PARALLEL)
        pl_connect(&pl.conns[pl.next_login++]);
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

static int
pl_cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double
pl_pct(double q)
{
    if (!pl.nlat)
        return NAN;
    size_t i = (size_t)((double)pl.nlat * q);
    return (double)pl.lat[i < pl.nlat ? i : pl.nlat - 1] / 1e6;
}

static void pl_close_all(void);

static void
pl_finish(void)
{
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    pl.cli_cpu = (double)(ru1.ru_utime.tv_sec - pl.ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - pl.ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - pl.ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - pl.ru0.ru_stime.tv_usec) / 1e6;
    pl.cli_sys = (double)(ru1.ru_stime.tv_sec - pl.ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - pl.ru0.ru_stime.tv_usec) / 1e6;
    qsort(pl.lat, pl.nlat, sizeof *pl.lat, pl_cmp64);
    int64_t last = pl.t_last > pl.t_ack ? pl.t_last : pl.t_ack;
    double wall = (double)(last - pl.t_start) / 1e9;
    double notif_wall = pl.n ? (double)(pl.t_last - pl.t_start) / 1e9 : 0.0;
    double pub_wall = (double)(pl.t_ack - pl.t_start) / 1e9;
    uint64_t cmin = UINT64_MAX, cmax = 0;
    for (int i = 1; i <= pl.ncontacts; i++) {
        uint64_t g = pl.conns[i].got;
        cmin = g < cmin ? g : cmin;
        cmax = g > cmax ? g : cmax;
    }
    printf("RESULT ready=%d publishes=%ld pub_errors=%ld notifications=%" PRIu64
           " expected=%" PRIu64 " stanzas=%" PRIu64 " notif_s=%.2f pub_s=%.2f p50_ms=%.3f"
           " p99_ms=%.3f max_ms=%.3f wall_s=%.4f notif_wall_s=%.4f pub_wall_s=%.4f"
           " cli_cpu_s=%.4f cli_sys_s=%.4f reads=%" PRIu64 " iters=%" PRIu64 " contact_min=%" PRIu64 " contact_max=%" PRIu64 " lost=%d\n",
           pl.ready, pl.sent, pl.errors, pl.n, pl.expected, pl.copies,
           pl.n && notif_wall > 0 ? (double)pl.n / notif_wall : 0.0,
           pub_wall > 0 ? (double)pl.sent / pub_wall : 0.0, pl_pct(0.50), pl_pct(0.99),
           pl.nlat ? (double)pl.lat[pl.nlat - 1] / 1e6 : 0.0, wall, notif_wall, pub_wall,
           pl.cli_cpu, pl.cli_sys, pl.reads, pl.iters, cmin, cmax, pl.lost);
    fflush(stdout);
    pl.phase = PH_DONE;
    if (pl.auto_go || pl.in_lines >= 2 || pl.in_eof)
        pl_close_all();
}

static void
pl_drain_check(void)
{
    if (pl.n >= pl.expected || pl.drain_idle >= PL_IDLE_TICKS)
        pl_finish();
}

static void
pl_close_all(void)
{
    pl.phase = PH_CLOSE;
    uv_timer_stop(&pl.tick);
    uv_close((uv_handle_t *)&pl.tick, NULL);
    if (pl.in_open) {
        uv_close((uv_handle_t *)&pl.in, NULL);
        pl.in_open = 0;
    }
    for (int i = 0; i <= pl.ncontacts; i++) {
        pl_conn_t *c = &pl.conns[i];
        if (c->state == CS_ENDED || c->state == CS_CONNECTING) {
            if (c->state == CS_ENDED)
                pl_close_conn(c);
            continue;
        }
        pl_send_bytes(c, "</stream:stream>", 16, 1);
    }
}

/* ------------------------------------------------------------------ */
/* The clock and the lines from pep.py                                 */

static void
pl_ready(void)
{
    printf("READY ready=%d contacts=%d login_s=%.3f warm=%d caps=%s\n", pl.ready, pl.ncontacts,
           (double)(pl.t_login - pl.t_login0) / 1e9, pl.warm + 1, pl.caps_ver);
    fflush(stdout);
    if (pl.ready < pl.ncontacts)
        fprintf(stderr, "pepload: only %d of %d contacts get notifications\n", pl.ready,
                pl.ncontacts);
    pl.phase = PH_READY;
    if (pl.auto_go || pl.in_lines >= 1)
        pl_start_run();
}

static void
pl_tick(uv_timer_t *t)
{
    (void)t;
    int64_t now = pl_now();
    switch (pl.phase) {
    case PH_LOGIN:
        if (now > pl.t_login0 + PL_LOGIN_WAIT_NS)
            pl_die("logins not done after %lld s (%d of %d contacts online)",
                   PL_LOGIN_WAIT_NS / 1000000000, pl.online, pl.ncontacts);
        break;
    case PH_WARM_ACK:
        if (now > pl.deadline)
            pl_die("no result for warm-up publish warm%d", pl.warm);
        break;
    case PH_WARM_WAIT:
        pl.ready = 0;
        for (int i = 1; i <= pl.ncontacts; i++)
            pl.ready += pl.conns[i].last_warm == pl.warm;
        if (pl.ready == pl.ncontacts) {
            pl_ready();
        } else if (now > pl.deadline) {
            if (pl.warm + 1 < PL_WARM_ROUNDS) {
                pl.warm++;
                pl_warm_publish();
            } else {
                pl.warm = PL_WARM_ROUNDS - 1;
                pl_ready();
            }
        }
        break;
    case PH_RUN:
        if (now > pl.deadline)
            pl_die("run: %ld of %ld publishes acknowledged after %.0f s", pl.acked, pl.sent,
                   (double)(now - pl.t_start) / 1e9);
        break;
    case PH_DRAIN:
        if (pl.n == pl.drain_last) {
            pl.drain_idle++;
        } else {
            pl.drain_idle = 0;
            pl.drain_last = pl.n;
        }
        pl_drain_check();
        break;
    default:
        break;
    }
}

static void
pl_in_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(pl.inbuf + pl.inlen, (unsigned)(sizeof pl.inbuf - pl.inlen));
}

static void
pl_in_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    (void)b;
    if (nread < 0) {
        pl.in_eof = 1;
        uv_read_stop(s);
        if (pl.in_lines == 0)
            pl_die("stdin closed before \"go\"");
    } else {
        pl.inlen += (size_t)nread;
        char *nl;
        while ((nl = memchr(pl.inbuf, '\n', pl.inlen)) != NULL) {
            pl.in_lines++;
            size_t used = (size_t)(nl - pl.inbuf) + 1;
            memmove(pl.inbuf, nl + 1, pl.inlen - used);
            pl.inlen -= used;
        }
        if (pl.inlen == sizeof pl.inbuf)
            pl.inlen = 0; /* a long line: counts at its newline */
    }
    if (pl.phase == PH_READY && pl.in_lines >= 1)
        pl_start_run();
    if (pl.phase == PH_DONE && (pl.in_lines >= 2 || pl.in_eof))
        pl_close_all();
}

/* ------------------------------------------------------------------ */

/* XEP-0115 5.1: base64(sha-1("category/type//name<" "feature<"...)). */
static void
pl_caps(void)
{
    char s[1024];
    size_t n = (size_t)snprintf(s, sizeof s, "%s/%s//%s<", PL_IDENTITY_CAT, PL_IDENTITY_TYPE,
                                PL_IDENTITY_NAME);
    for (size_t i = 0; i < PL_NFEATURES; i++)
        n += (size_t)snprintf(s + n, sizeof s - n, "%s<", pl_features[i]);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdn = 0;
    if (!EVP_Digest(s, n, md, &mdn, EVP_sha1(), NULL))
        pl_die("sha-1 failed");
    EVP_EncodeBlock((unsigned char *)pl.caps_ver, md, (int)mdn);
}

/* After each poll of the run: --coalesce-us of sleep, so that the next
 * poll finds many streams ready and more than one notification on some. */
static void
pl_checked(uv_check_t *h)
{
    (void)h;
    if (pl.phase != PH_RUN && pl.phase != PH_DRAIN)
        return;
    pl.iters++;
    if (pl.coalesce_us > 0) {
        struct timespec ts = {pl.coalesce_us / 1000000, (pl.coalesce_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

static void
pl_usage(void)
{
    fprintf(stderr,
            "usage: pepload --port P --domain D --publisher USER --contacts N --pubs K --tag T\n"
            "               [--window 16] [--max-seconds 120] [--password password]\n"
            "               [--host 127.0.0.1] [--coalesce-us 500] [--auto]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},      {"port", required_argument, NULL, 'p'},
        {"domain", required_argument, NULL, 'd'},    {"publisher", required_argument, NULL, 'u'},
        {"contacts", required_argument, NULL, 'n'},  {"pubs", required_argument, NULL, 'k'},
        {"window", required_argument, NULL, 'w'},    {"tag", required_argument, NULL, 't'},
        {"max-seconds", required_argument, NULL, 's'},
        {"password", required_argument, NULL, 'P'},  {"auto", no_argument, NULL, 'a'},
        {"coalesce-us", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    pl.host = "127.0.0.1";
    pl.password = "password";
    pl.window = 16;
    pl.max_seconds = 120;
    pl.coalesce_us = 500;
    int o;
    char *end;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': pl.host = optarg; break;
        case 'p': pl.port = (int)strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 'd': pl.domain = optarg; break;
        case 'u': pl.publisher = optarg; break;
        case 'n': pl.ncontacts = (int)strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 'k': pl.pubs_planned = strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 'w': pl.window = (int)strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 't': pl.tag = optarg; break;
        case 's': pl.max_seconds = strtod(optarg, &end); if (*end) pl_usage(); break;
        case 'P': pl.password = optarg; break;
        case 'a': pl.auto_go = 1; break;
        case 'c': pl.coalesce_us = strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        default: pl_usage();
        }
    }
    if (optind != argc || !pl.domain || !pl.publisher || !pl.tag || pl.port <= 0 ||
        pl.port > 65535 || pl.ncontacts < 1 || pl.ncontacts > 1000000 || pl.pubs_planned < 1 ||
        pl.window < 1 || pl.max_seconds <= 0 || pl.coalesce_us < 0 || pl.coalesce_us > 100000 || strlen(pl.publisher) >= sizeof pl.conns->user ||
        strlen(pl.domain) > 200 || strlen(pl.tag) > 64)
        pl_usage();
    int tag_ok = pl.tag[0] != 'w' && pl.tag[0] != '\0';
    for (const char *t = pl.tag; *t; t++)
        tag_ok &= *t == '_' || (*t >= '0' && *t <= '9') || (*t >= 'a' && *t <= 'z') ||
                  (*t >= 'A' && *t <= 'Z');
    if (!tag_ok)
        pl_die("--tag: letters, digits and _ only, not starting with w (the warm-up's tags)");
    pl.taglen = strlen(pl.tag);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pl_caps();

    pl.loop = uv_default_loop();
    pl.conns = calloc((size_t)pl.ncontacts + 1, sizeof *pl.conns);
    if (!pl.conns)
        pl_die("out of memory");
    size_t bitmap = (size_t)pl.pubs_planned / 8 + 1;
    for (int i = 0; i <= pl.ncontacts; i++) {
        pl_conn_t *c = &pl.conns[i];
        c->idx = i;
        c->last_warm = -1;
        if (i == 0) {
            snprintf(c->user, sizeof c->user, "%s", pl.publisher);
        } else {
            snprintf(c->user, sizeof c->user, "c%d", i);
            c->seen = calloc(bitmap, 1);
            if (!c->seen)
                pl_die("out of memory");
        }
    }
    uv_timer_init(pl.loop, &pl.tick);
    uv_timer_start(&pl.tick, pl_tick, PL_TICK_MS, PL_TICK_MS);
    if (!pl.auto_go) {
        if (uv_guess_handle(0) != UV_NAMED_PIPE)
            pl_die("stdin must be a pipe (pep.py's), or give --auto");
        uv_pipe_init(pl.loop, &pl.in, 0);
            if (uv_pipe_open(&pl.in, 0) < 0)
            pl_die("cannot read stdin");
        uv_read_start((uv_stream_t *)&pl.in, pl_in_alloc, pl_in_read);
        pl.in_open = 1;
    }
    uv_check_init(pl.loop, &pl.check);
    uv_check_start(&pl.check, pl_checked);
    uv_unref((uv_handle_t *)&pl.check); /* it keeps no loop alive */
    pl.phase = PH_LOGIN;
    pl.t_login0 = pl_now();
    pl.next_login = 1;
    pl_connect(&pl.conns[0]); /* the publisher first; its presence starts the contacts */
    uv_run(pl.loop, UV_RUN_DEFAULT);
    if (pl.phase != PH_CLOSE)
        pl_die("the loop stopped early");
    return 0;
}
