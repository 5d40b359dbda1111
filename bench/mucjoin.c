/*
 * mucjoin.c — fills one group chat room with N occupants at a controlled
 * rate and measures the join phase (bench/muc_big.py --driver mucjoin; the
 * shared driver's `-m muc` join phase stops at 300 s, which a room that
 * announces every entering to everyone in, quadratic, passes beyond a few
 * thousand occupants).  One libuv loop, as bench/pepload.c:
 *
 *   - login: user1..userN (plain TCP on loopback; with --register each is
 *     first registered in-band, XEP-0077, on the same stream), SASL PLAIN,
 *     resource binding, a session when required; no initial presence (a
 *     room needs none), --login-parallel logins in flight;
 *   - user1 creates the room (its join presence, then an instant
 *     configuration: the owner form submitted empty, XEP-0045 10.1.2);
 *   - join phase: user2..userN send their join presence (with
 *     <history maxstanzas='0'/>) at --rate per second (0: as fast as
 *     --window allows), at most --window of them waiting for their
 *     self-presence (status 110) at once; every client answers the room's
 *     pings (join_chunk pacing) and reads everything the room sends;
 *   - when every join has its self-presence (or --max-seconds passed) the
 *     server's CPU (utime + stime of /proc/PID/stat) and RSS (VmRSS of
 *     /proc/PID/status) are sampled again, and one line is printed:
 *
 *   RESULT occupants=J of=N join_s=S joins_per_s=R server_cpu_s=C
 *          server_cpu_ms_per_join=M rss_online_kib=A rss_full_kib=B
 *          rss_kib_per_occupant=K presences=P drv_cpu_s=D login_s=L
 *
 * The input is split into top-level elements by scanning tags (quotes in
 * attribute values respected, no full XML parse), as pepload.c does.
 *
 * Usage: mucjoin --port P --domain D --users N --room big
 *                [--service conference.D] [--password secret] [--register]
 *                [--rate 0] [--window 200] [--login-parallel 50]
 *                [--max-seconds 3600] [--pid SERVER_PID] [--host 127.0.0.1]
 * Errors: a line on stderr, exit 1.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#define MJ_TICK_MS     10
#define MJ_READ_SIZE   (256 * 1024)
#define MJ_MAX_ELEMENT (16 * 1024 * 1024)

typedef enum {
    CS_CONNECTING,
    CS_FEATURES1, /* then <iq register/> or <auth/> */
    CS_REGISTER,  /* waiting for the registration's answer */
    CS_AUTH,
    CS_FEATURES2,
    CS_BIND,
    CS_SESSION,
    CS_ONLINE,    /* logged in, not in the room */
    CS_JOINING,   /* join presence sent */
    CS_JOINED,    /* self-presence (110) received */
    CS_ENDED,
} mj_cstate;

typedef enum { PH_LOGIN, PH_CREATE, PH_JOIN, PH_CLOSE } mj_phase;

typedef struct mj_conn {
    uv_tcp_t     tcp;
    uv_connect_t creq;
    int          idx;          /* 1..N: user<idx>, nick n<idx> */
    char         user[32];
    mj_cstate    state;
    int          need_session;
    char        *buf;
    size_t       len, cap, scan;
    int          depth;
} mj_conn_t;

typedef struct {
    uv_write_t req;
    mj_conn_t *c;
    int        close_after;
    size_t     len;
    char       data[];
} mj_wr_t;

static struct {
    const char *host, *domain, *service, *password, *room;
    int         port, n, window, login_parallel, reg, pid;
    double      rate, max_seconds;
    uv_loop_t  *loop;
    uv_timer_t  tick;
    mj_phase    phase;
    mj_conn_t  *conns;         /* [1..n] */
    int         next_login, online, next_join, joined, waiting;
    int64_t     t_login0, t_login, t_join0, t_join1;
    double      budget;        /* joins the rate allows now */
    uint64_t    presences;
    double      cpu0;
    long        rss_online;
    struct rusage ru0;
    char        rbuf[MJ_READ_SIZE];
} mj;

static int64_t
mj_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void mj_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
mj_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mucjoin: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *
mj_xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        mj_die("out of memory (%zu bytes)", n);
    return p;
}

/* ---- the server's CPU and RSS ------------------------------------------------------------------ */

/* utime + stime of the server in s (/proc/PID/stat fields 14 and 15). */
static double
mj_server_cpu(void)
{
    char path[64], line[4096];
    if (mj.pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", mj.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *p = strrchr(line, ')'); /* the command may hold spaces */
    if (!p)
        return 0;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long
mj_server_rss_kib(void)
{
    char path[64], line[256];
    long kib = 0;
    if (mj.pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/status", mj.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* ---- writing ----------------------------------------------------------------------------------- */

static void
mj_close_conn(mj_conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, NULL);
}

static void
mj_written(uv_write_t *req, int status)
{
    mj_wr_t *w = (mj_wr_t *)req;
    if (status < 0 && w->c->state != CS_ENDED && mj.phase < PH_CLOSE)
        fprintf(stderr, "mucjoin: %s: write: %s\n", w->c->user, uv_strerror(status));
    if (w->close_after)
        mj_close_conn(w->c);
    free(w);
}

static void
mj_send_bytes(mj_conn_t *c, const char *s, size_t n, int close_after)
{
    if (c->state == CS_ENDED || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)n) {
        if (close_after)
            mj_close_conn(c);
        return;
    }
    if (r < 0 && r != UV_EAGAIN) {
        if (close_after)
            mj_close_conn(c);
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    mj_wr_t *w = mj_xrealloc(NULL, sizeof *w + n - done);
    w->c = c;
    w->close_after = close_after;
    w->len = n - done;
    memcpy(w->data, s + done, w->len);
    b = uv_buf_init(w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, mj_written) < 0) {
        if (close_after)
            mj_close_conn(c);
        free(w);
    }
}

static void mj_sendf(mj_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
mj_sendf(mj_conn_t *c, const char *fmt, ...)
{
    char s[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s, sizeof s, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof s)
        mj_die("a stanza too long to format");
    mj_send_bytes(c, s, (size_t)n, 0);
}

/* ---- looking into one element ------------------------------------------------------------------ */

static int
mj_has(const char *el, size_t len, const char *needle)
{
    return memmem(el, len, needle, strlen(needle)) != NULL;
}

static const char *
mj_name(const char *el, size_t len, size_t *n)
{
    size_t i = 1;
    while (i < len && el[i] != ' ' && el[i] != '\t' && el[i] != '\r' && el[i] != '\n' &&
           el[i] != '>' && el[i] != '/')
        i++;
    *n = i - 1;
    return el + 1;
}

static int
mj_is(const char *name, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(name, want, n) == 0;
}

/* The raw value of attribute `want` of the start tag at el (NULL: none). */
static const char *
mj_attr(const char *el, size_t len, const char *want, size_t *vlen)
{
    size_t wn = strlen(want), i;
    mj_name(el, len, &i);
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

static void mj_login_next(void);
static void mj_join_more(void);

static void
mj_header(mj_conn_t *c)
{
    mj_sendf(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
             mj.domain);
}

static void
mj_auth(mj_conn_t *c)
{
    char plain[512];
    unsigned char b64[700];
    int n = snprintf(plain, sizeof plain, "%c%s%c%s", 0, c->user, 0, mj.password);
    if (n < 0 || (size_t)n >= sizeof plain)
        mj_die("password too long");
    EVP_EncodeBlock(b64, (const unsigned char *)plain, n);
    mj_sendf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
             (const char *)b64);
    c->state = CS_AUTH;
}

static int
mj_session_required(const char *el, size_t len)
{
    const char *s = memmem(el, len, "<session", 8), *end = el + len;
    if (!s || !mj_has(s, (size_t)(end - s), "urn:ietf:params:xml:ns:xmpp-session"))
        return 0;
    const char *gt = memchr(s, '>', (size_t)(end - s));
    if (!gt || gt[-1] == '/')
        return 1;
    const char *close = memmem(gt, (size_t)(end - gt), "</session>", 10);
    return !mj_has(gt, close ? (size_t)(close - gt) : (size_t)(end - gt), "optional");
}

static void
mj_join(mj_conn_t *c)
{
    mj_sendf(c, "<presence to='%s@%s/n%d'><x xmlns='http://jabber.org/protocol/muc'>"
                "<history maxstanzas='0'/></x></presence>",
             mj.room, mj.service, c->idx);
    c->state = CS_JOINING;
}

static void
mj_online(mj_conn_t *c)
{
    c->state = CS_ONLINE;
    if (++mj.online < mj.n) {
        mj_login_next();
        return;
    }
    mj.t_login = mj_now();
    mj.rss_online = mj_server_rss_kib();
    fprintf(stderr, "mucjoin: %d logged in after %.1f s; user1 creates %s@%s\n", mj.n,
            (double)(mj.t_login - mj.t_login0) / 1e9, mj.room, mj.service);
    mj.phase = PH_CREATE;
    mj_join(&mj.conns[1]);
}

static void
mj_start_joins(void)
{
    mj.phase = PH_JOIN;
    mj.joined = 1;
    mj.next_join = 2;
    mj.cpu0 = mj_server_cpu();
    getrusage(RUSAGE_SELF, &mj.ru0);
    mj.t_join0 = mj_now();
    mj.budget = 1;
    mj_join_more();
}

/* ---- the elements ------------------------------------------------------------------------------ */

static void mj_finish(void);

static void
mj_self_presence(mj_conn_t *c, const char *el, size_t len)
{
    if (c->state != CS_JOINING || !mj_has(el, len, "110"))
        return;
    size_t fl = 0;
    const char *from = mj_attr(el, len, "from", &fl);
    char want[256];
    int wn = snprintf(want, sizeof want, "%s@%s/n%d", mj.room, mj.service, c->idx);
    if (!from || fl != (size_t)wn || memcmp(from, want, fl) != 0)
        return;
    size_t tl = 0;
    const char *type = mj_attr(el, len, "type", &tl);
    if (type && tl == 5 && memcmp(type, "error", 5) == 0)
        mj_die("%s: join refused: %.300s", c->user, el);
    c->state = CS_JOINED;
    if (c->idx == 1) { /* the owner: an instant room */
        mj_sendf(c, "<iq type='set' id='cfg' to='%s@%s'><query "
                    "xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
                    "type='submit'/></query></iq>", mj.room, mj.service);
        return;
    }
    mj.joined++;
    mj.waiting--;
    if (mj.joined == mj.n)
        mj_finish();
    else
        mj_join_more();
}

static void
mj_iq(mj_conn_t *c, const char *el, size_t len)
{
    size_t tn = 0, in = 0, fn = 0;
    const char *type = mj_attr(el, len, "type", &tn);
    const char *id = mj_attr(el, len, "id", &in);
    if (type && tn == 3 && (memcmp(type, "get", 3) == 0 || memcmp(type, "set", 3) == 0)) {
        const char *from = mj_attr(el, len, "from", &fn);
        int ping = mj_has(el, len, "urn:xmpp:ping");
        if (!id || in > 200 || (from && fn > 600))
            return;
        if (from)
            mj_sendf(c, ping ? "<iq type='result' id='%.*s' to='%.*s'/>"
                             : "<iq type='error' id='%.*s' to='%.*s'><error type='cancel'>"
                               "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                               "</error></iq>",
                     (int)in, id, (int)fn, from);
        else
            mj_sendf(c, "<iq type='result' id='%.*s'/>", (int)in, id);
        return;
    }
    int ok = type && tn == 6 && memcmp(type, "result", 6) == 0;
    if (!id)
        return;
    if (c->state == CS_REGISTER && in == 3 && memcmp(id, "reg", 3) == 0) {
        /* registered, or there already (conflict): log in */
        mj_auth(c);
    } else if (c->state == CS_BIND && in == 2 && memcmp(id, "b1", 2) == 0) {
        if (!ok)
            mj_die("%s: bind failed: %.200s", c->user, el);
        if (c->need_session) {
            mj_sendf(c, "<iq type='set' id='s1'><session "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
            c->state = CS_SESSION;
        } else {
            mj_online(c);
        }
    } else if (c->state == CS_SESSION && in == 2 && memcmp(id, "s1", 2) == 0) {
        if (!ok)
            mj_die("%s: session failed: %.200s", c->user, el);
        mj_online(c);
    } else if (c->idx == 1 && in == 3 && memcmp(id, "cfg", 3) == 0) {
        if (!ok)
            mj_die("the room's configuration failed: %.300s", el);
        mj_start_joins();
    }
}

static void
mj_element(mj_conn_t *c, const char *el, size_t len)
{
    size_t nn;
    const char *name = mj_name(el, len, &nn);
    if (mj_is(name, nn, "presence")) {
        mj.presences++;
        mj_self_presence(c, el, len);
    } else if (mj_is(name, nn, "iq")) {
        mj_iq(c, el, len);
    } else if (mj_is(name, nn, "stream:features")) {
        if (c->state == CS_FEATURES1 && mj.reg) {
            mj_sendf(c, "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>%s"
                        "</username><password>%s</password></query></iq>",
                     c->user, mj.password);
            c->state = CS_REGISTER;
        } else if (c->state == CS_FEATURES1) {
            mj_auth(c);
        } else if (c->state == CS_FEATURES2) {
            c->need_session = mj_session_required(el, len);
            mj_sendf(c, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        "<resource>mj</resource></bind></iq>");
            c->state = CS_BIND;
        }
    } else if (mj_is(name, nn, "success")) {
        if (c->state == CS_AUTH) {
            c->state = CS_FEATURES2;
            mj_header(c);
        }
    } else if (mj_is(name, nn, "failure")) {
        mj_die("%s@%s: authentication failed: %.200s", c->user, mj.domain, el);
    } else if (mj_is(name, nn, "stream:error")) {
        if (mj.phase < PH_CLOSE)
            mj_die("%s@%s: stream error: %.300s", c->user, mj.domain, el);
    }
}

static void
mj_ended(mj_conn_t *c, const char *why)
{
    if (c->state == CS_ENDED)
        return;
    c->state = CS_ENDED;
    if (mj.phase < PH_CLOSE)
        mj_die("%s@%s: %s", c->user, mj.domain, why);
}

/* Splits data[0, n) into top-level elements (pepload.c's pl_split). */
static size_t
mj_split(mj_conn_t *c, const char *data, size_t n)
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
        if (k == '?' || k == '!') {
            if (k == '!' && t + 3 >= n)
                break;
            const char *endmark = k == '?' ? "?>" : data[t + 2] == '-' ? "-->" : "]]>";
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
            break;
        p = q + 1;
        if (k == '/') {
            if (depth == 0) {
                mj_ended(c, "the server ended the stream");
                continue;
            }
            if (--depth == 0)
                mj_element(c, data + elem, p - elem);
        } else if (data[q - 1] == '/') {
            if (depth == 0)
                mj_element(c, data + t, p - t);
        } else if (depth == 0 && q - t >= 14 && memcmp(data + t, "<stream:stream", 14) == 0) {
            /* the stream header */
        } else {
            if (depth++ == 0)
                elem = t;
        }
    }
    size_t rest = depth > 0 ? elem : p;
    c->depth = depth;
    c->scan = p - rest;
    return rest;
}

static void
mj_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(mj.rbuf, sizeof mj.rbuf);
}

static void
mj_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    mj_conn_t *c = s->data;
    if (nread < 0) {
        mj_ended(c, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        uv_read_stop(s);
        return;
    }
    if (nread == 0 || c->state == CS_ENDED)
        return;
    const char *data = b->base;
    size_t n = (size_t)nread;
    if (c->len) {
        if (c->len + n > c->cap) {
            c->cap = (c->len + n) * 2;
            c->buf = mj_xrealloc(c->buf, c->cap);
        }
        memcpy(c->buf + c->len, data, n);
        c->len += n;
        data = c->buf;
        n = c->len;
    }
    size_t rest = mj_split(c, data, n);
    size_t keep = n - rest;
    if (keep > MJ_MAX_ELEMENT)
        mj_die("%s: an element of more than %d bytes", c->user, MJ_MAX_ELEMENT);
    if (keep > c->cap) {
        c->cap = keep * 2 > 4096 ? keep * 2 : 4096;
        c->buf = mj_xrealloc(c->buf, c->cap);
    }
    if (keep)
        memmove(c->buf, data + rest, keep);
    c->len = keep;
}

static void
mj_connected(uv_connect_t *req, int status)
{
    mj_conn_t *c = req->data;
    if (status < 0)
        mj_die("%s: connect to %s:%d: %s", c->user, mj.host, mj.port, uv_strerror(status));
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&c->tcp, mj_alloc, mj_read);
    if (r < 0)
        mj_die("%s: read: %s", c->user, uv_strerror(r));
    c->state = CS_FEATURES1;
    mj_header(c);
}

static void
mj_connect(mj_conn_t *c)
{
    struct sockaddr_in sa;
    int r = uv_ip4_addr(mj.host, mj.port, &sa);
    if (r < 0)
        mj_die("%s: %s", mj.host, uv_strerror(r));
    uv_tcp_init(mj.loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, mj_connected);
    if (r < 0)
        mj_die("%s: connect: %s", c->user, uv_strerror(r));
}

static void
mj_login_next(void)
{
    while (mj.next_login <= mj.n && mj.next_login - 1 - mj.online < mj.login_parallel)
        mj_connect(&mj.conns[mj.next_login++]);
}

/* Join presences as the rate and the window allow. */
static void
mj_join_more(void)
{
    while (mj.next_join <= mj.n && mj.waiting < mj.window && (mj.rate <= 0 || mj.budget >= 1)) {
        mj_join(&mj.conns[mj.next_join++]);
        mj.waiting++;
        if (mj.rate > 0)
            mj.budget -= 1;
    }
}

/* ---- the end ----------------------------------------------------------------------------------- */

static void
mj_finish(void)
{
    mj.t_join1 = mj_now();
    double cpu = mj_server_cpu() - mj.cpu0;
    long rss = mj_server_rss_kib();
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double drv = (double)(ru1.ru_utime.tv_sec - mj.ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - mj.ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - mj.ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - mj.ru0.ru_stime.tv_usec) / 1e6;
    double s = (double)(mj.t_join1 - mj.t_join0) / 1e9;
    int joins = mj.joined - 1; /* the owner's was before */
    printf("RESULT occupants=%d of=%d join_s=%.2f joins_per_s=%.1f server_cpu_s=%.2f "
           "server_cpu_ms_per_join=%.3f rss_online_kib=%ld rss_full_kib=%ld "
           "rss_kib_per_occupant=%.2f presences=%" PRIu64 " drv_cpu_s=%.2f login_s=%.2f\n",
           mj.joined, mj.n, s, s > 0 ? joins / s : 0.0, cpu, joins ? cpu / joins * 1e3 : 0.0,
           mj.rss_online, rss, mj.joined ? (double)(rss - mj.rss_online) / mj.joined : 0.0,
           mj.presences, drv, (double)(mj.t_login - mj.t_login0) / 1e9);
    fflush(stdout);
    mj.phase = PH_CLOSE;
    uv_timer_stop(&mj.tick);
    uv_close((uv_handle_t *)&mj.tick, NULL);
    for (int i = 1; i <= mj.n; i++) {
        mj_conn_t *c = &mj.conns[i];
        if (c->state == CS_ENDED || c->state == CS_CONNECTING)
            mj_close_conn(c);
        else
            mj_send_bytes(c, "</stream:stream>", 16, 1);
    }
}

static void
mj_tick(uv_timer_t *t)
{
    (void)t;
    int64_t now = mj_now();
    if (mj.phase == PH_JOIN) {
        if (mj.rate > 0) {
            mj.budget += mj.rate * MJ_TICK_MS / 1000.0;
            if (mj.budget > mj.rate + 1)
                mj.budget = mj.rate + 1;
        }
        mj_join_more();
        static int64_t last_report;
        if (now - last_report > 10000000000LL) {
            last_report = now;
            fprintf(stderr, "mucjoin: %d of %d in after %.0f s (server CPU %.0f s)\n", mj.joined,
                    mj.n, (double)(now - mj.t_join0) / 1e9, mj_server_cpu() - mj.cpu0);
        }
        if (now - mj.t_join0 > (int64_t)(mj.max_seconds * 1e9)) {
            fprintf(stderr, "mucjoin: --max-seconds passed with %d of %d in\n", mj.joined, mj.n);
            mj_finish();
        }
    } else if (mj.phase != PH_CLOSE && now - mj.t_login0 > 1800000000000LL) {
        mj_die("logins not done after 1800 s (%d of %d online)", mj.online, mj.n);
    }
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "port", required_argument, NULL, 'p' },     { "domain", required_argument, NULL, 'd' },
        { "users", required_argument, NULL, 'n' },    { "room", required_argument, NULL, 'r' },
        { "service", required_argument, NULL, 's' },  { "password", required_argument, NULL, 'w' },
        { "register", no_argument, NULL, 'R' },       { "rate", required_argument, NULL, 'a' },
        { "window", required_argument, NULL, 'W' },   { "login-parallel", required_argument, NULL, 'l' },
        { "max-seconds", required_argument, NULL, 'm' }, { "pid", required_argument, NULL, 'P' },
        { "host", required_argument, NULL, 'h' },     { NULL, 0, NULL, 0 },
    };
    mj.host = "127.0.0.1";
    mj.password = "secret";
    mj.room = "big";
    mj.window = 200;
    mj.login_parallel = 50;
    mj.max_seconds = 3600;
    static char service[300];
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': mj.port = atoi(optarg); break;
        case 'd': mj.domain = optarg; break;
        case 'n': mj.n = atoi(optarg); break;
        case 'r': mj.room = optarg; break;
        case 's': mj.service = optarg; break;
        case 'w': mj.password = optarg; break;
        case 'R': mj.reg = 1; break;
        case 'a': mj.rate = atof(optarg); break;
        case 'W': mj.window = atoi(optarg); break;
        case 'l': mj.login_parallel = atoi(optarg); break;
        case 'm': mj.max_seconds = atof(optarg); break;
        case 'P': mj.pid = atoi(optarg); break;
        case 'h': mj.host = optarg; break;
        default: mj_die("usage: see the comment at the top of bench/mucjoin.c");
        }
    }
    if (!mj.port || !mj.domain || mj.n < 2 || mj.window < 1 || mj.login_parallel < 1)
        mj_die("--port, --domain and --users (at least 2) are required");
    if (!mj.service) {
        snprintf(service, sizeof service, "conference.%s", mj.domain);
        mj.service = service;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    mj.loop = uv_default_loop();
    mj.conns = calloc((size_t)mj.n + 1, sizeof *mj.conns);
    if (!mj.conns)
        mj_die("out of memory");
    for (int i = 1; i <= mj.n; i++) {
        mj.conns[i].idx = i;
        snprintf(mj.conns[i].user, sizeof mj.conns[i].user, "user%d", i);
    }
    mj.t_login0 = mj_now();
    mj.next_login = 1;
    uv_timer_init(mj.loop, &mj.tick);
    uv_timer_start(&mj.tick, mj_tick, MJ_TICK_MS, MJ_TICK_MS);
    mj_login_next();
    uv_run(mj.loop, UV_RUN_DEFAULT);
    return 0;
}
