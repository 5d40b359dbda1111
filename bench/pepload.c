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
 * are scanned, quotes in attribute values respected, no full XML parse:
 * bench/benchclient.c, which also does the streams and their login, as for
 * bench/mucjoin.c); marks are searched in <message/> elements only.
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

#include "benchclient.h"

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

/* One client stream (its login: benchclient.h).  Owned by pl (the
 * program's state); never freed before exit (the handle is closed in
 * PH_CLOSE). */
typedef struct pl_conn {
    bc_conn_t    bc;          /* first: the callbacks cast back */
    int          idx;         /* 0: the publisher; i: contact ci */
    /* Run: the items of the run's tag received here (bit SEQ), their count. */
    uint8_t     *seen;
    uint64_t     got;
    int          last_warm;   /* number of the last warm-up tag seen, -1: none */
} pl_conn_t;

static struct {
    /* options */
    const char *publisher, *tag;
    int         ncontacts, window, auto_go;
    bc_client_t cl;            /* host, port, domain, password; the callbacks */
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
    uint64_t    reads0, iters; /* cl.reads when the run started; loop turns over the run */
} pl;

/* ------------------------------------------------------------------ */
/* Looking into one element                                            */

/* The attribute's value for a single-quoted attribute of ours ('
 * becomes &apos;; the rest is already escaped as the server sent it);
 * malloc'ed, "" when absent. */
static char *
pl_attr_dup(const char *el, size_t len, const char *want)
{
    size_t vn = 0;
    const char *v = bc_attr(el, len, want, &vn);
    char *s = bc_xrealloc(NULL, vn * 6 + 1), *o = s;
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

/* bc_client_t.online: c is bound. */
static void
pl_online(bc_conn_t *b)
{
    pl_conn_t *c = (pl_conn_t *)b;
    if (c->idx == 0) {
        /* no caps: the publisher wants no notifications */
        bc_sendf(b, "<presence/>");
        pl_login_next();
        return;
    }
    pl.online++;
    if (pl.online == pl.ncontacts) {
        /* all logged in: the presences (as pep.py's Python driver sends them) */
        for (int i = 1; i <= pl.ncontacts; i++)
            bc_sendf(&pl.conns[i].bc, "<presence><c xmlns='http://jabber.org/protocol/caps' "
                     "hash='sha-1' node='" PL_CAPS_NODE "' ver='%s'/></presence>", pl.caps_ver);
        pl.t_login = bc_now_ns();
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
    bc_sendf(&pl.conns[0].bc,
             "<iq type='set' id='%s'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
             "<publish node='" PL_NODE "'><item><tune xmlns='" PL_NODE "'><artist>pepbench"
             "</artist><title>pb:%s:%ld:%" PRId64 "</title><length>%ld</length></tune>"
             "</item></publish></pubsub></iq>",
             id, tag, seq, bc_now_ns(), seq % 600);
}

static void
pl_warm_publish(void)
{
    char id[32], tag[32];
    snprintf(id, sizeof id, "warm%d", pl.warm);
    snprintf(tag, sizeof tag, "w%d", pl.warm);
    pl_publish(id, tag, 0);
    pl.phase = PH_WARM_ACK;
    pl.deadline = bc_now_ns() + PL_ACK_WAIT_NS;
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
    if (pl.sent < pl.pubs_planned && bc_now_ns() < pl.t_stop) {
        pl_send_next();
    } else if (pl.acked == pl.sent) { /* all planned, or --max-seconds */
        pl.t_ack = bc_now_ns();
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
    pl.t_start = bc_now_ns();
    pl.reads0 = pl.cl.reads;
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
                pl.lat = bc_xrealloc(pl.lat, pl.caplat * sizeof *pl.lat);
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
    if (get && bc_has(el, len, "http://jabber.org/protocol/disco#info")) {
        const char *q = memmem(el, len, "<query", 6);
        char *node = q ? pl_attr_dup(q, len - (size_t)(q - el), "node") : NULL;
        char feats[512];
        size_t fo = 0;
        for (size_t i = 0; i < PL_NFEATURES; i++)
            fo += (size_t)snprintf(feats + fo, sizeof feats - fo, "<feature var='%s'/>",
                                   pl_features[i]);
        if (node && *node)
            bc_sendf(&c->bc, "<iq type='result' id='%s'%s><query xmlns="
                        "'http://jabber.org/protocol/disco#info' node='%s'><identity "
                        "category='" PL_IDENTITY_CAT "' type='" PL_IDENTITY_TYPE "' name='"
                        PL_IDENTITY_NAME "'/>%s</query></iq>", id, to, node, feats);
        else
            bc_sendf(&c->bc, "<iq type='result' id='%s'%s><query xmlns="
                        "'http://jabber.org/protocol/disco#info'><identity "
                        "category='" PL_IDENTITY_CAT "' type='" PL_IDENTITY_TYPE "' name='"
                        PL_IDENTITY_NAME "'/>%s</query></iq>", id, to, feats);
        free(node);
    } else if ((!get && bc_has(el, len, "jabber:iq:roster")) || bc_has(el, len, "urn:xmpp:ping")) {
        bc_sendf(&c->bc, "<iq type='result' id='%s'%s/>", id, to);
    } else {
        bc_sendf(&c->bc, "<iq type='error' id='%s'%s><error type='cancel'><service-unavailable"
                    " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", id, to);
    }
    free(id);
    free(from);
}

static void
pl_iq(pl_conn_t *c, const char *el, size_t len)
{
    size_t tn = 0, in = 0;
    const char *type = bc_attr(el, len, "type", &tn);
    if (type && ((tn == 3 && memcmp(type, "get", 3) == 0) || (tn == 3 && memcmp(type, "set", 3) == 0))) {
        pl_answer(c, el, len, type[0] == 'g');
        return;
    }
    int ok = type && tn == 6 && memcmp(type, "result", 6) == 0;
    const char *id = bc_attr(el, len, "id", &in);
    if (!id)
        return;
    if (c->idx == 0 && in > 2 && memcmp(id, "pb", 2) == 0 &&
               (pl.phase == PH_RUN || pl.phase == PH_DRAIN)) {
        pl_on_ack(ok);
    } else if (c->idx == 0 && pl.phase == PH_WARM_ACK && in > 4 && memcmp(id, "warm", 4) == 0) {
        char want[32];
        snprintf(want, sizeof want, "warm%d", pl.warm);
        if (in == strlen(want) && memcmp(id, want, in) == 0) {
            pl.phase = PH_WARM_WAIT;
            pl.deadline = bc_now_ns() + PL_WARM_WAIT_NS;
        }
    }
}

/* bc_client_t.element: one complete top-level element of c's stream that
 * is not the login's. */
static void
pl_element(bc_conn_t *b, const char *el, size_t len, int64_t now)
{
    pl_conn_t *c = (pl_conn_t *)b;
    size_t nn;
    const char *name = bc_name(el, len, &nn);
    if (bc_is(name, nn, "message")) {
        if (c->idx > 0 && c->seen)
            pl_marks(c, el, len, now);
    } else if (bc_is(name, nn, "iq")) {
        pl_iq(c, el, len);
    }
    /* presence: nothing to do (subscriptions are made by pep.py) */
}

/* bc_client_t.ended: a stream lost during the run is counted, one lost
 * before it ends the program. */
static void
pl_ended(bc_conn_t *c, bc_state was, const char *why)
{
    if (pl.phase >= PH_DONE)
        return;
    if (pl.phase < PH_RUN || was != BC_ONLINE)
        bc_die("%s@%s: %s", c->user, pl.cl.domain, why);
    fprintf(stderr, "pepload: %s@%s: %s during the run\n", c->user, pl.cl.domain, why);
    pl.lost++;
}

/* Starts contact logins up to PL_LOGIN_PARALLEL in flight. */
static void
pl_login_next(void)
{
    while (pl.next_login <= pl.ncontacts && pl.next_login - 1 - pl.online < PL_LOGIN_PARALLEL)
        bc_connect(&pl.conns[pl.next_login++].bc);
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
           pl.cli_cpu, pl.cli_sys, pl.cl.reads - pl.reads0, pl.iters, cmin, cmax, pl.lost);
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
    pl.cl.closing = 1;
    uv_timer_stop(&pl.tick);
    uv_close((uv_handle_t *)&pl.tick, NULL);
    if (pl.in_open) {
        uv_close((uv_handle_t *)&pl.in, NULL);
        pl.in_open = 0;
    }
    for (int i = 0; i <= pl.ncontacts; i++) {
        bc_conn_t *c = &pl.conns[i].bc;
        if (c->state == BC_ENDED || c->state == BC_CONNECTING) {
            if (c->state == BC_ENDED)
                bc_close(c);
            continue;
        }
        bc_send_bytes(c, "</stream:stream>", 16, 1);
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
    int64_t now = bc_now_ns();
    switch (pl.phase) {
    case PH_LOGIN:
        if (now > pl.t_login0 + PL_LOGIN_WAIT_NS)
            bc_die("logins not done after %lld s (%d of %d contacts online)",
                   PL_LOGIN_WAIT_NS / 1000000000, pl.online, pl.ncontacts);
        break;
    case PH_WARM_ACK:
        if (now > pl.deadline)
            bc_die("no result for warm-up publish warm%d", pl.warm);
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
            bc_die("run: %ld of %ld publishes acknowledged after %.0f s", pl.acked, pl.sent,
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
            bc_die("stdin closed before \"go\"");
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
        bc_die("sha-1 failed");
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
    pl.cl = (bc_client_t){ .prog = "pepload", .host = "127.0.0.1", .password = "password",
                           .element = pl_element, .online = pl_online, .ended = pl_ended };
    bc_init(&pl.cl);
    pl.window = 16;
    pl.max_seconds = 120;
    pl.coalesce_us = 500;
    int o;
    char *end;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': pl.cl.host = optarg; break;
        case 'p': pl.cl.port = (int)strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 'd': pl.cl.domain = optarg; break;
        case 'u': pl.publisher = optarg; break;
        case 'n': pl.ncontacts = (int)strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 'k': pl.pubs_planned = strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 'w': pl.window = (int)strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        case 't': pl.tag = optarg; break;
        case 's': pl.max_seconds = strtod(optarg, &end); if (*end) pl_usage(); break;
        case 'P': pl.cl.password = optarg; break;
        case 'a': pl.auto_go = 1; break;
        case 'c': pl.coalesce_us = strtol(optarg, &end, 10); if (*end) pl_usage(); break;
        default: pl_usage();
        }
    }
    if (optind != argc || !pl.cl.domain || !pl.publisher || !pl.tag || pl.cl.port <= 0 ||
        pl.cl.port > 65535 || pl.ncontacts < 1 || pl.ncontacts > 1000000 || pl.pubs_planned < 1 ||
        pl.window < 1 || pl.max_seconds <= 0 || pl.coalesce_us < 0 || pl.coalesce_us > 100000 || strlen(pl.publisher) >= sizeof pl.conns->bc.user ||
        strlen(pl.cl.domain) > 200 || strlen(pl.tag) > 64)
        pl_usage();
    int tag_ok = pl.tag[0] != 'w' && pl.tag[0] != '\0';
    for (const char *t = pl.tag; *t; t++)
        tag_ok &= *t == '_' || (*t >= '0' && *t <= '9') || (*t >= 'a' && *t <= 'z') ||
                  (*t >= 'A' && *t <= 'Z');
    if (!tag_ok)
        bc_die("--tag: letters, digits and _ only, not starting with w (the warm-up's tags)");
    pl.taglen = strlen(pl.tag);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pl_caps();

    pl.loop = uv_default_loop();
    pl.cl.loop = pl.loop;
    pl.conns = calloc((size_t)pl.ncontacts + 1, sizeof *pl.conns);
    if (!pl.conns)
        bc_die("out of memory");
    size_t bitmap = (size_t)pl.pubs_planned / 8 + 1;
    for (int i = 0; i <= pl.ncontacts; i++) {
        pl_conn_t *c = &pl.conns[i];
        c->idx = i;
        c->last_warm = -1;
        if (i == 0) {
            snprintf(c->bc.user, sizeof c->bc.user, "%s", pl.publisher);
            c->bc.resource = "pc";
        } else {
            snprintf(c->bc.user, sizeof c->bc.user, "c%d", i);
            c->bc.resource = "m";
            c->seen = calloc(bitmap, 1);
            if (!c->seen)
                bc_die("out of memory");
        }
    }
    uv_timer_init(pl.loop, &pl.tick);
    uv_timer_start(&pl.tick, pl_tick, PL_TICK_MS, PL_TICK_MS);
    if (!pl.auto_go) {
        if (uv_guess_handle(0) != UV_NAMED_PIPE)
            bc_die("stdin must be a pipe (pep.py's), or give --auto");
        uv_pipe_init(pl.loop, &pl.in, 0);
            if (uv_pipe_open(&pl.in, 0) < 0)
            bc_die("cannot read stdin");
        uv_read_start((uv_stream_t *)&pl.in, pl_in_alloc, pl_in_read);
        pl.in_open = 1;
    }
    uv_check_init(pl.loop, &pl.check);
    uv_check_start(&pl.check, pl_checked);
    uv_unref((uv_handle_t *)&pl.check); /* it keeps no loop alive */
    pl.phase = PH_LOGIN;
    pl.t_login0 = bc_now_ns();
    pl.next_login = 1;
    bc_connect(&pl.conns[0].bc); /* the publisher first; its presence starts the contacts */
    uv_run(pl.loop, UV_RUN_DEFAULT);
    if (pl.phase != PH_CLOSE)
        bc_die("the loop stopped early");
    return 0;
}
