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
 * The streams, their login and the split of the input into top-level
 * elements are bench/benchclient.c's, as for pepload.c.
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

#include <uv.h>

#include "benchclient.h"

#define MJ_TICK_MS     10

typedef enum { PH_LOGIN, PH_CREATE, PH_JOIN, PH_CLOSE } mj_phase;

/* Where an occupant is (its stream: bc.state). */
typedef enum {
    MJ_OUT,     /* not in the room */
    MJ_JOINING, /* join presence sent */
    MJ_JOINED,  /* self-presence (110) received */
} mj_rstate;

/* One client stream (its login: benchclient.h); never freed before exit. */
typedef struct mj_conn {
    bc_conn_t    bc;           /* first: the callbacks cast back */
    int          idx;          /* 1..N: user<idx>, nick n<idx> */
    mj_rstate    room;         /* in the room or not */
} mj_conn_t;

static struct {
    const char *service, *room;
    int         n, window, login_parallel, pid;
    bc_client_t cl;            /* host, port, domain, password, register; the callbacks */
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
} mj;

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

/* ---- login ------------------------------------------------------------------------------------- */

static void mj_login_next(void);
static void mj_join_more(void);

static void
mj_join(mj_conn_t *c)
{
    bc_sendf(&c->bc, "<presence to='%s@%s/n%d'><x xmlns='http://jabber.org/protocol/muc'>"
                "<history maxstanzas='0'/></x></presence>",
             mj.room, mj.service, c->idx);
    c->room = MJ_JOINING;
}

/* bc_client_t.online: c is bound; all are: user1 creates the room. */
static void
mj_online(bc_conn_t *c)
{
    (void)c;
    if (++mj.online < mj.n) {
        mj_login_next();
        return;
    }
    mj.t_login = bc_now_ns();
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
    mj.t_join0 = bc_now_ns();
    mj.budget = 1;
    mj_join_more();
}

/* ---- the elements ------------------------------------------------------------------------------ */

static void mj_finish(void);

static void
mj_self_presence(mj_conn_t *c, const char *el, size_t len)
{
    if (c->room != MJ_JOINING || !bc_has(el, len, "110"))
        return;
    size_t fl = 0;
    const char *from = bc_attr(el, len, "from", &fl);
    char want[256];
    int wn = snprintf(want, sizeof want, "%s@%s/n%d", mj.room, mj.service, c->idx);
    if (!from || fl != (size_t)wn || memcmp(from, want, fl) != 0)
        return;
    size_t tl = 0;
    const char *type = bc_attr(el, len, "type", &tl);
    if (type && tl == 5 && memcmp(type, "error", 5) == 0)
        bc_die("%s: join refused: %.300s", c->bc.user, el);
    c->room = MJ_JOINED;
    if (c->idx == 1) { /* the owner: an instant room */
        bc_sendf(&c->bc, "<iq type='set' id='cfg' to='%s@%s'><query "
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
    const char *type = bc_attr(el, len, "type", &tn);
    const char *id = bc_attr(el, len, "id", &in);
    if (type && tn == 3 && (memcmp(type, "get", 3) == 0 || memcmp(type, "set", 3) == 0)) {
        const char *from = bc_attr(el, len, "from", &fn);
        int ping = bc_has(el, len, "urn:xmpp:ping");
        if (!id || in > 200 || (from && fn > 600))
            return;
        if (from)
            bc_sendf(&c->bc, ping ? "<iq type='result' id='%.*s' to='%.*s'/>"
                             : "<iq type='error' id='%.*s' to='%.*s'><error type='cancel'>"
                               "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                               "</error></iq>",
                     (int)in, id, (int)fn, from);
        else
            bc_sendf(&c->bc, "<iq type='result' id='%.*s'/>", (int)in, id);
        return;
    }
    int ok = type && tn == 6 && memcmp(type, "result", 6) == 0;
    if (!id)
        return;
    if (c->idx == 1 && in == 3 && memcmp(id, "cfg", 3) == 0) {
        if (!ok)
            bc_die("the room's configuration failed: %.300s", el);
        mj_start_joins();
    }
}

/* bc_client_t.element: one top-level element that is not the login's. */
static void
mj_element(bc_conn_t *b, const char *el, size_t len, int64_t now)
{
    (void)now;
    mj_conn_t *c = (mj_conn_t *)b;
    size_t nn;
    const char *name = bc_name(el, len, &nn);
    if (bc_is(name, nn, "presence")) {
        mj.presences++;
        mj_self_presence(c, el, len);
    } else if (bc_is(name, nn, "iq")) {
        mj_iq(c, el, len);
    }
}

/* bc_client_t.ended: a stream that ends before the close ends the run. */
static void
mj_ended(bc_conn_t *c, bc_state was, const char *why)
{
    (void)was;
    if (mj.phase < PH_CLOSE)
        bc_die("%s@%s: %s", c->user, mj.cl.domain, why);
}

static void
mj_login_next(void)
{
    while (mj.next_login <= mj.n && mj.next_login - 1 - mj.online < mj.login_parallel)
        bc_connect(&mj.conns[mj.next_login++].bc);
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
    mj.t_join1 = bc_now_ns();
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
    mj.cl.closing = 1;
    uv_timer_stop(&mj.tick);
    uv_close((uv_handle_t *)&mj.tick, NULL);
    for (int i = 1; i <= mj.n; i++) {
        bc_conn_t *c = &mj.conns[i].bc;
        if (c->state == BC_ENDED || c->state == BC_CONNECTING)
            bc_close(c);
        else
            bc_send_bytes(c, "</stream:stream>", 16, 1);
    }
}

static void
mj_tick(uv_timer_t *t)
{
    (void)t;
    int64_t now = bc_now_ns();
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
        bc_die("logins not done after 1800 s (%d of %d online)", mj.online, mj.n);
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
    mj.cl = (bc_client_t){ .prog = "mucjoin", .host = "127.0.0.1", .password = "secret",
                           .element = mj_element, .online = mj_online, .ended = mj_ended };
    bc_init(&mj.cl);
    mj.room = "big";
    mj.window = 200;
    mj.login_parallel = 50;
    mj.max_seconds = 3600;
    static char service[300];
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': mj.cl.port = atoi(optarg); break;
        case 'd': mj.cl.domain = optarg; break;
        case 'n': mj.n = atoi(optarg); break;
        case 'r': mj.room = optarg; break;
        case 's': mj.service = optarg; break;
        case 'w': mj.cl.password = optarg; break;
        case 'R': mj.cl.reg = 1; break;
        case 'a': mj.rate = atof(optarg); break;
        case 'W': mj.window = atoi(optarg); break;
        case 'l': mj.login_parallel = atoi(optarg); break;
        case 'm': mj.max_seconds = atof(optarg); break;
        case 'P': mj.pid = atoi(optarg); break;
        case 'h': mj.cl.host = optarg; break;
        default: bc_die("usage: see the comment at the top of bench/mucjoin.c");
        }
    }
    if (!mj.cl.port || !mj.cl.domain || mj.n < 2 || mj.window < 1 || mj.login_parallel < 1)
        bc_die("--port, --domain and --users (at least 2) are required");
    if (!mj.service) {
        snprintf(service, sizeof service, "conference.%s", mj.cl.domain);
        mj.service = service;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    mj.loop = uv_default_loop();
    mj.cl.loop = mj.loop;
    mj.conns = calloc((size_t)mj.n + 1, sizeof *mj.conns);
    if (!mj.conns)
        bc_die("out of memory");
    for (int i = 1; i <= mj.n; i++) {
        mj.conns[i].idx = i;
        snprintf(mj.conns[i].bc.user, sizeof mj.conns[i].bc.user, "user%d", i);
        mj.conns[i].bc.resource = "mj";
    }
    mj.t_login0 = bc_now_ns();
    mj.next_login = 1;
    uv_timer_init(mj.loop, &mj.tick);
    uv_timer_start(&mj.tick, mj_tick, MJ_TICK_MS, MJ_TICK_MS);
    mj_login_next();
    uv_run(mj.loop, UV_RUN_DEFAULT);
    return 0;
}
