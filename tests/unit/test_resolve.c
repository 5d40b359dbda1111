/*
 * test_resolve.c — unit tests for src/s2s/resolve*.c and connect.c against a REAL DNS
 * server: the group setup starts dnsmasq (posix_spawn, --no-daemon) on a
 * free loopback port with the zone below and stops it by PID at teardown.
 * A "silent" DNS server (a bound UDP socket nobody reads) gives timeouts;
 * plain listening sockets and a listener with a full accept queue (SYNs are
 * dropped: connects hang) drive the connector.
 *
 * Covered: SRV priorities and RFC 2782 weights (statistically), xmpps SRV
 * (direct TLS, XEP-0368) mixed with xmpp SRV, "." targets (RFC 6120 3.2.1),
 * no SRV → A/AAAA fallback on 5269, NXDOMAIN, IPv6/IPv4 interleave
 * (RFC 8305 4), static overrides (no DNS at all) and their syntax, IP-literal
 * and IDNA domains, cancel (in flight, queued, inside a callback, by freeing
 * the context), DNS timeout, and the happy-eyeballs connector: refused then
 * listening, all refused, the 250 ms stagger, first wins, overall timeout,
 * cancel, and resolve-then-connect end to end.  Every test closes its loop
 * with uv_loop_close() == 0, so a handle left open fails it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "s2s/resolve.h"
#include "xmppd/err.h"

extern char **environ;

#define DNSMASQ "/usr/sbin/dnsmasq"

/* ---- fixtures ------------------------------------------------------------ */

/* Shared by every test; set up once by the group setup. */
static struct {
    pid_t pid;            /* dnsmasq */
    uint16_t port;        /* its UDP/TCP port on 127.0.0.1 */
    char servers[32];     /* "127.0.0.1:<port>" for xd_resolve_opts_t */
    int e2e_fd;           /* listening socket for the end-to-end test */
    uint16_t e2e_port;    /* its port (SRV target port of e2e.test) */
} g = { .pid = -1, .e2e_fd = -1 };

/* Per test: a loop and a guard timer that bounds every wait. */
typedef struct {
    uv_loop_t loop;       /* this test's loop */
    uv_timer_t guard;     /* stops run_until */
    bool guard_fired;     /* run_until gave up */
    int silent_fd;        /* UDP socket that never answers, or -1 */
    char silent[32];      /* "127.0.0.1:<port>" of it */
    int fds[16];          /* sockets to close at teardown */
    size_t nfds;          /* how many */
} fx_t;

static int
bound_socket(int type, const char *ip, uint16_t port, uint16_t *out_port)
{
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    int fd = socket(fam, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (fam == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        inet_pton(AF_INET, ip, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        close(fd);
        return -1;
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    if (out_port)
        *out_port = ntohs(fam == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

/* A TCP listener on 127.0.0.1 (kernel completes handshakes; never accepted). */
static int
listener(uint16_t *port, int backlog)
{
    int fd = bound_socket(SOCK_STREAM, "127.0.0.1", 0, port);
    assert_true(fd >= 0);
    assert_int_equal(listen(fd, backlog), 0);
    return fd;
}

/* A 127.0.0.1 port with nobody listening (connect → ECONNREFUSED). */
static uint16_t
refused_port(void)
{
    uint16_t port;
    int fd = bound_socket(SOCK_STREAM, "127.0.0.1", 0, &port);
    assert_true(fd >= 0);
    close(fd); /* bound, never listened, closed: refused */
    return port;
}

static void
fx_keep(fx_t *f, int fd)
{
    assert_true(f->nfds < sizeof f->fds / sizeof f->fds[0]);
    f->fds[f->nfds++] = fd;
}

/* Connections accepted by the kernel on a listener, drained now. */
static int
accepted(int lfd)
{
    int n = 0;
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            break;
        close(c);
        n++;
    }
    return n;
}

/* A 127.0.0.1 port whose connects hang: a listener with backlog 0 whose
 * accept queue we fill; the kernel then drops SYNs.  Returns 0 when this
 * system does not behave so (the caller skips). */
static uint16_t
blackhole_port(fx_t *f)
{
    uint16_t port;
    int lfd = listener(&port, 0);
    fx_keep(f, lfd);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    for (int i = 0; i < 8; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        fx_keep(f, fd);
        int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (rc == 0)
            continue;
        if (errno != EINPROGRESS)
            return 0;
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, 150) == 0)
            return port; /* this connect hangs: later ones will too */
    }
    return 0;
}

/* The running test's fixture: callbacks stop its loop (uv_stop) so that
 * UV_RUN_ONCE does not go on to block in poll after a timer callback. */
static fx_t *cur_fx;

static void
wake(void)
{
    if (cur_fx != NULL)
        uv_stop(&cur_fx->loop);
}

static void
guard_cb(uv_timer_t *t)
{
    fx_t *f = t->data;
    f->guard_fired = true;
    uv_stop(&f->loop);
}

/* Runs the loop until *flag becomes nonzero or ms pass; true on the flag. */
static bool
run_until(fx_t *f, const int *flag, uint64_t ms)
{
    f->guard_fired = false;
    uv_timer_start(&f->guard, guard_cb, ms, 0);
    while (!*flag && !f->guard_fired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->guard);
    return *flag != 0;
}

/* Runs the loop for ms (to let things that must not happen not happen). */
static void
run_for(fx_t *f, uint64_t ms)
{
    int never = 0;
    run_until(f, &never, ms);
}

static int
fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    uv_timer_init(&f->loop, &f->guard);
    f->guard.data = f;
    uint16_t port;
    f->silent_fd = bound_socket(SOCK_DGRAM, "127.0.0.1", 0, &port);
    if (f->silent_fd < 0)
        return -1;
    snprintf(f->silent, sizeof f->silent, "127.0.0.1:%u", (unsigned)port);
    cur_fx = f;
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *f = *state;
    cur_fx = NULL;
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* closes whatever the test freed */
    int rc = uv_loop_close(&f->loop);  /* UV_EBUSY: a handle was left open */
    close(f->silent_fd);
    for (size_t i = 0; i < f->nfds; i++)
        close(f->fds[i]);
    free(f);
    if (rc != 0)
        fprintf(stderr, "uv_loop_close: %s (a handle was leaked)\n", uv_strerror(rc));
    return rc == 0 ? 0 : -1;
}

static xd_resolve_ctx_t *
ctx_new(fx_t *f, const char *servers, unsigned timeout_ms, unsigned tries)
{
    xd_resolve_opts_t o = { .servers = servers, .timeout_ms = timeout_ms, .tries = tries };
    xd_resolve_ctx_t *ctx = NULL;
    assert_int_equal(xd_resolve_new(&f->loop, &o, &ctx), 0);
    assert_non_null(ctx);
    return ctx;
}

static xd_resolve_ctx_t *
ctx_dns(fx_t *f)
{
    return ctx_new(f, g.servers, 1000, 3);
}

/* One resolve result, copied out of the callback. */
typedef struct {
    int calls;                                  /* callback count */
    int status;                                 /* its status */
    size_t n;                                   /* candidates */
    xd_resolve_cand_t c[XD_RESOLVE_MAX_CANDS];  /* copies */
    xd_resolve_ctx_t *free_ctx;                 /* free this context inside the callback */
} res_t;

static void
res_cb(void *arg, int status, const xd_resolve_cand_t *cands, size_t n)
{
    res_t *r = arg;
    r->calls++;
    r->status = status;
    r->n = n;
    if (n > 0)
        memcpy(r->c, cands, n * sizeof *cands);
    if (r->free_ctx != NULL)
        xd_resolve_free(r->free_ctx);
    wake();
}

static void
resolve(fx_t *f, xd_resolve_ctx_t *ctx, const char *domain, res_t *r)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(xd_resolve_domain(ctx, domain, res_cb, r, NULL), 0);
    assert_int_equal(r->calls, 0); /* never inside the call */
    assert_true(run_until(f, &r->calls, 10000));
    assert_int_equal(r->calls, 1);
}

static const char *
cand_ip(const xd_resolve_cand_t *c, char *buf)
{
    if (c->addr.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&c->addr)->sin6_addr, buf, 64);
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&c->addr)->sin_addr, buf, 64);
    return buf;
}

static uint16_t
cand_addr_port(const xd_resolve_cand_t *c)
{
    return ntohs(c->addr.ss_family == AF_INET6
                     ? ((const struct sockaddr_in6 *)&c->addr)->sin6_port
                     : ((const struct sockaddr_in *)&c->addr)->sin_port);
}

static void
assert_cand(const xd_resolve_cand_t *c, const char *ip, uint16_t port, bool tls,
            xd_resolve_src src)
{
    char buf[64];
    assert_string_equal(cand_ip(c, buf), ip);
    assert_int_equal(c->port, port);
    assert_int_equal(cand_addr_port(c), port);
    assert_int_equal(c->direct_tls, tls);
    assert_int_equal(c->src, src);
    assert_int_equal(c->addrlen, c->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                               : sizeof(struct sockaddr_in));
}

static uint64_t
now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ---- dnsmasq ----------------------------------------------------------------- */

static uv_loop_t *ready_loop; /* dns_ready's loop */

static void
ready_cb(void *arg, int status, const xd_resolve_cand_t *cands, size_t n)
{
    (void)cands;
    (void)n;
    int *st = arg;
    *st = status == 0 ? 1 : 2;
    uv_stop(ready_loop);
}

/* True once dnsmasq answers ready.test (our resolver, short timeouts). */
static bool
dns_ready(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    ready_loop = &loop;
    xd_resolve_opts_t o = { .servers = g.servers, .timeout_ms = 100, .tries = 1 };
    xd_resolve_ctx_t *ctx;
    bool ok = false;
    if (xd_resolve_new(&loop, &o, &ctx) == 0) {
        int st = 0;
        if (xd_resolve_domain(ctx, "ready.test", ready_cb, &st, NULL) == 0)
            while (st == 0)
                uv_run(&loop, UV_RUN_ONCE);
        ok = st == 1;
        xd_resolve_free(ctx);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return ok;
}

static int
dns_start(void)
{
    char port[32], e2e[128];
    char *argv[64];
    int a = 0;
    int sfd = bound_socket(SOCK_DGRAM, "127.0.0.1", 0, &g.port);
    if (sfd < 0)
        return -1;
    close(sfd); /* free now; dnsmasq binds it next (retried on a race) */
    snprintf(port, sizeof port, "--port=%u", (unsigned)g.port);
    snprintf(g.servers, sizeof g.servers, "127.0.0.1:%u", (unsigned)g.port);
    snprintf(e2e, sizeof e2e, "--srv-host=_xmpp-server._tcp.e2e.test,h.e2e.test,%u,0,0",
             (unsigned)g.e2e_port);
    argv[a++] = DNSMASQ;
    argv[a++] = "--no-daemon";
    argv[a++] = port;
    argv[a++] = "--listen-address=127.0.0.1";
    argv[a++] = "--bind-interfaces";
    argv[a++] = "--no-resolv";
    argv[a++] = "--no-hosts";
    argv[a++] = "--conf-file=/dev/null";
    argv[a++] = "--pid-file";        /* none */
    argv[a++] = "--local=/test/";    /* authoritative: NXDOMAIN for unknown names */
    argv[a++] = "--cache-size=0";
    argv[a++] = "--host-record=ready.test,127.0.9.9";
    /* two.test: priorities 10 (weights 75/25) and 20. */
    argv[a++] = "--srv-host=_xmpp-server._tcp.two.test,a1.two.test,5001,10,75";
    argv[a++] = "--srv-host=_xmpp-server._tcp.two.test,a2.two.test,5002,10,25";
    argv[a++] = "--srv-host=_xmpp-server._tcp.two.test,b.two.test,5003,20,0";
    argv[a++] = "--host-record=a1.two.test,127.0.1.1";
    argv[a++] = "--host-record=a2.two.test,127.0.1.2";
    argv[a++] = "--host-record=b.two.test,127.0.1.3";
    argv[a++] = "--host-record=two.test,127.0.1.9";
    /* tls.test: xmpps at priority 5, xmpp at 10. */
    argv[a++] = "--srv-host=_xmpps-server._tcp.tls.test,t.tls.test,5223,5,0";
    argv[a++] = "--srv-host=_xmpp-server._tcp.tls.test,s.tls.test,5269,10,0";
    argv[a++] = "--host-record=t.tls.test,127.0.2.1";
    argv[a++] = "--host-record=s.tls.test,127.0.2.2";
    /* tlsonly.test: only xmpps; the domain has an address. */
    argv[a++] = "--srv-host=_xmpps-server._tcp.tlsonly.test,t.tlsonly.test,5223,0,0";
    argv[a++] = "--host-record=t.tlsonly.test,127.0.2.5";
    argv[a++] = "--host-record=tlsonly.test,127.0.2.6";
    /* dot.test: "." for xmpp-server, though the domain has an address. */
    argv[a++] = "--srv-host=_xmpp-server._tcp.dot.test";
    argv[a++] = "--host-record=dot.test,127.0.3.1";
    /* dotx.test: "." for xmpps only. */
    argv[a++] = "--srv-host=_xmpps-server._tcp.dotx.test";
    argv[a++] = "--srv-host=_xmpp-server._tcp.dotx.test,s.dotx.test,5270,0,0";
    argv[a++] = "--host-record=s.dotx.test,127.0.3.2";
    /* dots.test: "." for xmpps, no xmpp SRV: fallback. */
    argv[a++] = "--srv-host=_xmpps-server._tcp.dots.test";
    argv[a++] = "--host-record=dots.test,127.0.3.3";
    /* plain.test: no SRV at all, A + AAAA. */
    argv[a++] = "--host-record=plain.test,127.0.4.1,::1";
    /* dual.test: a target with two AAAA and two A. */
    argv[a++] = "--srv-host=_xmpp-server._tcp.dual.test,h.dual.test,5269,0,0";
    argv[a++] = "--host-record=h.dual.test,127.0.5.1,fd00::51";
    argv[a++] = "--host-record=h.dual.test,127.0.5.2,fd00::52";
    /* xn--bcher-kva.test = bücher.test */
    argv[a++] = "--host-record=xn--bcher-kva.test,127.0.6.1";
    /* e2e.test: the target has ::1 (refused) and 127.0.0.1 (listening). */
    argv[a++] = e2e;
    argv[a++] = "--host-record=h.e2e.test,127.0.0.1,::1";
    argv[a] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (getenv("XD_TEST_DNS_VERBOSE") == NULL) {
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    }
    int rc = posix_spawn(&g.pid, DNSMASQ, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s\n", DNSMASQ, strerror(rc));
        g.pid = -1;
        return -1;
    }
    for (int i = 0; i < 50; i++) {
        int wst;
        if (waitpid(g.pid, &wst, WNOHANG) == g.pid) {
            g.pid = -1; /* exited: the port was taken meanwhile */
            return 1;
        }
        if (dns_ready())
            return 0;
    }
    return -1;
}

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (access(DNSMASQ, X_OK) != 0) {
        fprintf(stderr, "%s not found: install dnsmasq-base (scripts/deps)\n", DNSMASQ);
        return -1;
    }
    g.e2e_fd = bound_socket(SOCK_STREAM, "127.0.0.1", 0, &g.e2e_port);
    if (g.e2e_fd < 0 || listen(g.e2e_fd, 64) != 0)
        return -1;
    for (int tries = 0; tries < 5; tries++) {
        int rc = dns_start();
        if (rc == 0)
            return 0;
        if (rc < 0)
            break;
    }
    fprintf(stderr, "dnsmasq did not come up\n");
    return -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (g.pid > 0) {
        kill(g.pid, SIGTERM);
        int wst;
        if (waitpid(g.pid, &wst, 0) != g.pid)
            rc = -1;
        g.pid = -1;
    }
    if (g.e2e_fd >= 0)
        close(g.e2e_fd);
    return rc;
}

/* ---- resolver tests -------------------------------------------------------------- */

/* RFC 2782: lower priority first; within a priority a weighted random
 * order.  400 runs of a 75/25 pair put the 75 first ~300 times (sd 8.7). */
static void
test_resolve__srv_priority_weight(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    /* 20 requests = 160 queries at once; bursts of 50 requests overflowed
     * dnsmasq's socket buffer here (c-ares then retries after 1 s). */
    enum { RUNS = 400, BATCH = 20 };
    static res_t r[BATCH];
    int a1_first = 0;
    for (int b = 0; b < RUNS / BATCH; b++) {
        for (int i = 0; i < BATCH; i++) {
            memset(&r[i], 0, sizeof r[i]);
            assert_int_equal(xd_resolve_domain(ctx, "two.test", res_cb, &r[i], NULL), 0);
        }
        assert_int_equal(xd_resolve_pending(ctx), BATCH);
        for (int i = 0; i < BATCH; i++) {
            assert_true(run_until(f, &r[i].calls, 10000));
            assert_int_equal(r[i].status, 0);
            assert_int_equal(r[i].n, 3); /* no fallback: SRV records exist */
            const xd_resolve_cand_t *c = r[i].c;
            for (int k = 0; k < 2; k++) {
                assert_int_equal(c[k].priority, 10);
                assert_true(c[k].port == 5001 || c[k].port == 5002);
            }
            assert_int_not_equal(c[0].port, c[1].port);
            const xd_resolve_cand_t *a1 = c[0].port == 5001 ? &c[0] : &c[1];
            const xd_resolve_cand_t *a2 = c[0].port == 5001 ? &c[1] : &c[0];
            assert_cand(a1, "127.0.1.1", 5001, false, XD_RESOLVE_SRC_XMPP);
            assert_string_equal(a1->host, "a1.two.test");
            assert_int_equal(a1->weight, 75);
            assert_cand(a2, "127.0.1.2", 5002, false, XD_RESOLVE_SRC_XMPP);
            assert_int_equal(a2->weight, 25);
            assert_cand(&c[2], "127.0.1.3", 5003, false, XD_RESOLVE_SRC_XMPP);
            assert_int_equal(c[2].priority, 20);
            assert_string_equal(c[2].host, "b.two.test");
            if (c[0].port == 5001)
                a1_first++;
        }
        run_for(f, 0);
        for (int i = 0; i < BATCH; i++)
            assert_int_equal(r[i].calls, 1); /* exactly once */
    }
    assert_int_equal(xd_resolve_pending(ctx), 0);
    print_message("a1 (weight 75) first in %d of %d\n", a1_first, RUNS);
    assert_in_range(a1_first, 240, 360);
    xd_resolve_free(ctx);
}

/* XEP-0368: _xmpps-server records are direct TLS and sort with the
 * _xmpp-server records by priority. */
static void
test_resolve__xmpps_direct_tls(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    res_t r;
    resolve(f, ctx, "tls.test", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 2);
    assert_cand(&r.c[0], "127.0.2.1", 5223, true, XD_RESOLVE_SRC_XMPPS);
    assert_string_equal(r.c[0].host, "t.tls.test");
    assert_int_equal(r.c[0].priority, 5);
    assert_cand(&r.c[1], "127.0.2.2", 5269, false, XD_RESOLVE_SRC_XMPP);
    assert_string_equal(r.c[1].host, "s.tls.test");

    /* Only xmpps records: those, then the RFC 6120 fallback D:5269. */
    resolve(f, ctx, "tlsonly.test", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 2);
    assert_cand(&r.c[0], "127.0.2.5", 5223, true, XD_RESOLVE_SRC_XMPPS);
    assert_cand(&r.c[1], "127.0.2.6", 5269, false, XD_RESOLVE_SRC_FALLBACK);
    assert_string_equal(r.c[1].host, "tlsonly.test");
    xd_resolve_free(ctx);
}

/* RFC 6120 3.2.1 / RFC 2782: "." = service decidedly not available. */
static void
test_resolve__dot_target(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    res_t r;
    resolve(f, ctx, "dot.test", &r); /* dot.test has an A record: no fallback */
    assert_int_equal(r.status, XD_ENOTFOUND);
    assert_int_equal(r.n, 0);

    resolve(f, ctx, "dotx.test", &r); /* "." for xmpps only: STARTTLS stays */
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 1);
    assert_cand(&r.c[0], "127.0.3.2", 5270, false, XD_RESOLVE_SRC_XMPP);

    resolve(f, ctx, "dots.test", &r); /* "." for xmpps, no xmpp SRV: fallback */
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 1);
    assert_cand(&r.c[0], "127.0.3.3", 5269, false, XD_RESOLVE_SRC_FALLBACK);
    xd_resolve_free(ctx);
}

/* RFC 6120 3.2.1 step 4: no SRV → the domain's AAAA/A on 5269. */
static void
test_resolve__fallback_no_srv(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    const char *names[] = { "plain.test", "plain.test.", "PLAIN.Test" };
    for (size_t i = 0; i < 3; i++) {
        res_t r;
        resolve(f, ctx, names[i], &r);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.n, 2);
        assert_cand(&r.c[0], "::1", 5269, false, XD_RESOLVE_SRC_FALLBACK);
        assert_cand(&r.c[1], "127.0.4.1", 5269, false, XD_RESOLVE_SRC_FALLBACK);
        assert_string_equal(r.c[0].host, "plain.test");
    }
    xd_resolve_free(ctx);
}

static void
test_resolve__nxdomain(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    res_t r;
    resolve(f, ctx, "nx.test", &r);
    assert_int_equal(r.status, XD_ENOTFOUND);
    assert_int_equal(r.n, 0);
    xd_resolve_free(ctx);
}

/* RFC 8305 4: families alternate, IPv6 first. */
static void
test_resolve__interleave_v6_v4(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    res_t r;
    resolve(f, ctx, "dual.test", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 4);
    char buf[64];
    int seen = 0;
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(r.c[i].addr.ss_family, i % 2 == 0 ? AF_INET6 : AF_INET);
        const char *ip = cand_ip(&r.c[i], buf);
        if (strcmp(ip, "fd00::51") == 0)
            seen |= 1;
        else if (strcmp(ip, "fd00::52") == 0)
            seen |= 2;
        else if (strcmp(ip, "127.0.5.1") == 0)
            seen |= 4;
        else if (strcmp(ip, "127.0.5.2") == 0)
            seen |= 8;
        assert_int_equal(r.c[i].port, 5269);
        assert_string_equal(r.c[i].host, "h.dual.test");
    }
    assert_int_equal(seen, 15);
    xd_resolve_free(ctx);
}

/* Static overrides bypass DNS: the context's only DNS server never
 * answers, so any query would time out. */
static void
test_resolve__static_override(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_new(f, f->silent, 200, 1);
    assert_int_equal(xd_resolve_set_static(ctx, "static.test", "127.0.0.1:5999"), 0);
    assert_int_equal(xd_resolve_set_static(ctx, "v6.test", "[::1]:5270"), 0);
    assert_int_equal(xd_resolve_set_static(ctx, "bare6.test", "::1"), 0);
    assert_int_equal(xd_resolve_set_static(ctx, "Bücher.test", "127.0.0.7"), 0);
    res_t r;
    uint64_t t0 = now_ms();
    resolve(f, ctx, "static.test", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 1);
    assert_cand(&r.c[0], "127.0.0.1", 5999, false, XD_RESOLVE_SRC_STATIC);
    resolve(f, ctx, "STATIC.test.", &r);
    assert_int_equal(r.n, 1);
    resolve(f, ctx, "v6.test", &r);
    assert_cand(&r.c[0], "::1", 5270, false, XD_RESOLVE_SRC_STATIC);
    resolve(f, ctx, "bare6.test", &r);
    assert_cand(&r.c[0], "::1", 5269, false, XD_RESOLVE_SRC_STATIC);
    resolve(f, ctx, "xn--bcher-kva.test", &r); /* IDNA: the key was a U-label */
    assert_int_equal(r.status, 0);
    assert_cand(&r.c[0], "127.0.0.7", 5269, false, XD_RESOLVE_SRC_STATIC);
    /* IP-literal domains need no DNS either (RFC 7622 3.2). */
    resolve(f, ctx, "[::1]", &r);
    assert_cand(&r.c[0], "::1", 5269, false, XD_RESOLVE_SRC_LITERAL);
    resolve(f, ctx, "127.0.0.3", &r);
    assert_cand(&r.c[0], "127.0.0.3", 5269, false, XD_RESOLVE_SRC_LITERAL);
    assert_true(now_ms() - t0 < 150); /* below one DNS timeout */

    /* Replace, then remove: the domain goes to DNS, which never answers. */
    assert_int_equal(xd_resolve_set_static(ctx, "static.test", "127.0.0.2"), 0);
    resolve(f, ctx, "static.test", &r);
    assert_cand(&r.c[0], "127.0.0.2", 5269, false, XD_RESOLVE_SRC_STATIC);
    assert_int_equal(xd_resolve_set_static(ctx, "static.test", NULL), 0);
    resolve(f, ctx, "static.test", &r);
    assert_int_equal(r.status, XD_ETIMEDOUT);
    xd_resolve_clear_static(ctx);
    resolve(f, ctx, "v6.test", &r);
    assert_int_equal(r.status, XD_ETIMEDOUT);
    xd_resolve_free(ctx);

    /* A static host name is looked up as AAAA/A only, not as SRV. */
    ctx = ctx_dns(f);
    assert_int_equal(xd_resolve_set_static(ctx, "two.test", "a2.two.test:6000"), 0);
    resolve(f, ctx, "two.test", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 1);
    assert_cand(&r.c[0], "127.0.1.2", 6000, false, XD_RESOLVE_SRC_STATIC);
    assert_string_equal(r.c[0].host, "a2.two.test");
    assert_int_equal(xd_resolve_set_static(ctx, "gone.test", "nx.test"), 0);
    resolve(f, ctx, "gone.test", &r);
    assert_int_equal(r.status, XD_ENOTFOUND);
    xd_resolve_free(ctx);
}

static void
test_resolve__static_syntax(void **state)
{
    (void)state;
    const char *good[] = { "127.0.0.1", "127.0.0.1:1", "127.0.0.1:65535", "::1", "[::1]",
                           "[2001:db8::1]:5270", "xmpp.example.org", "xmpp.example.org.:5269",
                           "host_name.example:80" };
    const char *bad[] = { "", ":5269", "host:", "host:0", "host:65536", "host:12x", "[::1",
                          "[::1]x", "[]:5", "[127.0.0.1]:5", "[nothex]:5", "a b", "a..b",
                          "-", "host:5269:1", "a/b", "xn--\xc3\xa4.example" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(xd_resolve_static_check(good[i]), 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (xd_resolve_static_check(bad[i]) != XD_EINVAL)
            fail_msg("accepted bad spec \"%s\"", bad[i]);
    }
    assert_int_equal(xd_resolve_static_check(NULL), XD_EINVAL);
}

static void
test_resolve__bad_arguments(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = NULL;
    xd_resolve_opts_t o = { .servers = "not a server" };
    assert_int_equal(xd_resolve_new(&f->loop, &o, &ctx), XD_EINVAL);
    assert_null(ctx);
    ctx = ctx_dns(f);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *bad[] = { "", ".", "a..b", "a b", "x/y", longname, "[::1", "[nothex]" };
    res_t r = { 0 };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(xd_resolve_domain(ctx, bad[i], res_cb, &r, NULL), XD_EINVAL);
    assert_int_equal(xd_resolve_set_static(ctx, "ok.test", "bad spec"), XD_EINVAL);
    assert_int_equal(xd_resolve_set_static(ctx, "a b", "127.0.0.1"), XD_EINVAL);
    run_for(f, 50);
    assert_int_equal(r.calls, 0); /* a call that fails never calls back */
    assert_int_equal(xd_resolve_pending(ctx), 0);
    xd_resolve_free(ctx);
}

/* The DNS server never answers: XD_ETIMEDOUT after the c-ares tries. */
static void
test_resolve__dns_timeout(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_new(f, f->silent, 100, 2);
    res_t r;
    uint64_t t0 = now_ms();
    resolve(f, ctx, "example.test", &r);
    uint64_t ms = now_ms() - t0;
    print_message("DNS timeout after %llu ms (100 ms, 2 tries)\n", (unsigned long long)ms);
    assert_int_equal(r.status, XD_ETIMEDOUT);
    assert_int_equal(r.n, 0);
    assert_true(ms >= 100 && ms < 3000);
    xd_resolve_free(ctx);
}

/* Cancel: in flight (with DNS that answers and with DNS that never does),
 * after completion but before delivery, and by freeing the context. */
static void
test_resolve__cancel(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    res_t r1 = { 0 }, r2 = { 0 };
    xd_resolve_req_t *q1 = NULL;
    assert_int_equal(xd_resolve_domain(ctx, "two.test", res_cb, &r1, &q1), 0);
    assert_int_equal(xd_resolve_domain(ctx, "tls.test", res_cb, &r2, NULL), 0);
    assert_non_null(q1);
    xd_resolve_cancel(q1);
    assert_int_equal(xd_resolve_pending(ctx), 1);
    assert_true(run_until(f, &r2.calls, 5000));
    run_for(f, 100); /* the cancelled queries' answers arrive and are dropped */
    assert_int_equal(r1.calls, 0);
    assert_int_equal(r2.status, 0);
    assert_int_equal(xd_resolve_pending(ctx), 0);

    /* Completed but not yet delivered (static: done at once). */
    assert_int_equal(xd_resolve_set_static(ctx, "s.test", "127.0.0.1"), 0);
    memset(&r1, 0, sizeof r1);
    assert_int_equal(xd_resolve_domain(ctx, "s.test", res_cb, &r1, &q1), 0);
    xd_resolve_cancel(q1);
    run_for(f, 20);
    assert_int_equal(r1.calls, 0);
    xd_resolve_free(ctx);

    /* Never-answering server: cancel one, the other times out. */
    ctx = ctx_new(f, f->silent, 100, 1);
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    assert_int_equal(xd_resolve_domain(ctx, "a.test", res_cb, &r1, &q1), 0);
    assert_int_equal(xd_resolve_domain(ctx, "b.test", res_cb, &r2, NULL), 0);
    xd_resolve_cancel(q1);
    assert_true(run_until(f, &r2.calls, 5000));
    assert_int_equal(r2.status, XD_ETIMEDOUT);
    run_for(f, 300);
    assert_int_equal(r1.calls, 0);

    /* Freeing the context cancels everything in flight. */
    res_t r[3] = { { 0 } };
    for (int i = 0; i < 3; i++)
        assert_int_equal(xd_resolve_domain(ctx, "c.test", res_cb, &r[i], NULL), 0);
    run_for(f, 20);
    xd_resolve_free(ctx);
    run_for(f, 300);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].calls, 0);
}

/* Freeing the context from inside a callback: later completions queued in
 * the same round are not delivered. */
static void
test_resolve__free_inside_callback(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    assert_int_equal(xd_resolve_set_static(ctx, "s.test", "127.0.0.1"), 0);
    res_t r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
    assert_int_equal(xd_resolve_domain(ctx, "s.test", res_cb, &r1, NULL), 0);
    assert_int_equal(xd_resolve_domain(ctx, "s.test", res_cb, &r2, NULL), 0);
    assert_int_equal(xd_resolve_domain(ctx, "two.test", res_cb, &r3, NULL), 0); /* in flight */
    r1.free_ctx = ctx;
    assert_true(run_until(f, &r1.calls, 1000));
    run_for(f, 200);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r2.calls, 0);
    assert_int_equal(r3.calls, 0);
}

/* ---- connector tests ---------------------------------------------------------- */

/* One connector result. */
typedef struct {
    int calls;            /* callback count */
    int status;           /* its status */
    size_t index;         /* winner */
    xd_resolve_cand_t won;/* copy of the winner */
    uint16_t peer_port;   /* port of the connected peer */
    uint64_t at_ms;       /* when the callback ran */
} con_t;

static void
con_cb(void *arg, int status, uv_tcp_t *tcp, const xd_resolve_cand_t *won, size_t index)
{
    con_t *c = arg;
    c->calls++;
    c->status = status;
    c->index = index;
    c->at_ms = now_ms();
    wake();
    if (status == 0) {
        assert_non_null(tcp);
        c->won = *won;
        struct sockaddr_storage ss;
        int len = sizeof ss;
        assert_int_equal(uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len), 0);
        c->peer_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                      : ((struct sockaddr_in *)&ss)->sin_port);
        xd_connect_tcp_close(tcp);
    } else {
        assert_null(tcp);
        assert_null(won);
    }
}

static xd_resolve_cand_t
cand(const char *ip, uint16_t port)
{
    xd_resolve_cand_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.host, sizeof c.host, "%s", ip);
    c.port = port;
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c.addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        c.addrlen = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&c.addr;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        inet_pton(AF_INET, ip, &a->sin_addr);
        c.addrlen = sizeof *a;
    }
    return c;
}

/* A refused address does not wait for the 250 ms delay (RFC 8305 5). */
static void
test_resolve__connect_refused_then_listening(void **state)
{
    fx_t *f = *state;
    uint16_t lport;
    int lfd = listener(&lport, 16);
    fx_keep(f, lfd);
    xd_resolve_cand_t cs[2] = { cand("127.0.0.1", refused_port()), cand("127.0.0.1", lport) };
    con_t c = { 0 };
    uint64_t t0 = now_ms();
    assert_int_equal(xd_connect_start(&f->loop, cs, 2, NULL, con_cb, &c, NULL), 0);
    assert_true(run_until(f, &c.calls, 5000));
    print_message("refused + listening: connected in %llu ms\n",
                  (unsigned long long)(c.at_ms - t0));
    assert_int_equal(c.status, 0);
    assert_int_equal(c.index, 1);
    assert_int_equal(c.won.port, lport);
    assert_int_equal(c.peer_port, lport);
    assert_true(c.at_ms - t0 < 200);
    run_for(f, 20);
    assert_int_equal(c.calls, 1);
    assert_int_equal(accepted(lfd), 1);
}

static void
test_resolve__connect_all_refused(void **state)
{
    fx_t *f = *state;
    xd_resolve_cand_t cs[3] = { cand("::1", refused_port()), cand("127.0.0.1", refused_port()),
                                cand("127.0.0.1", refused_port()) };
    con_t c = { 0 };
    assert_int_equal(xd_connect_start(&f->loop, cs, 3, NULL, con_cb, &c, NULL), 0);
    assert_true(run_until(f, &c.calls, 5000));
    assert_int_equal(c.status, UV_ECONNREFUSED);
    assert_int_equal(c.index, SIZE_MAX);
    run_for(f, 20);
    assert_int_equal(c.calls, 1);
    assert_int_equal(xd_connect_start(&f->loop, cs, 0, NULL, con_cb, &c, NULL), XD_EINVAL);
}

/* RFC 8305 5: a hanging first attempt; the second starts after the delay. */
static void
test_resolve__connect_stagger(void **state)
{
    fx_t *f = *state;
    uint16_t hole = blackhole_port(f);
    if (hole == 0)
        skip(); /* this kernel does not drop SYNs on a full accept queue */
    uint16_t lport;
    int lfd = listener(&lport, 16);
    fx_keep(f, lfd);
    xd_resolve_cand_t cs[2] = { cand("127.0.0.1", hole), cand("127.0.0.1", lport) };
    con_t c = { 0 };
    uint64_t t0 = now_ms();
    assert_int_equal(xd_connect_start(&f->loop, cs, 2, NULL, con_cb, &c, NULL), 0);
    assert_true(run_until(f, &c.calls, 5000));
    uint64_t ms = c.at_ms - t0;
    print_message("hanging + listening: connected in %llu ms (delay 250)\n",
                  (unsigned long long)ms);
    assert_int_equal(c.status, 0);
    assert_int_equal(c.index, 1);
    assert_true(ms >= 240 && ms < 1000);

    /* A shorter delay is honoured. */
    xd_connect_opts_t o = { .attempt_delay_ms = 50 };
    memset(&c, 0, sizeof c);
    t0 = now_ms();
    assert_int_equal(xd_connect_start(&f->loop, cs, 2, &o, con_cb, &c, NULL), 0);
    assert_true(run_until(f, &c.calls, 5000));
    ms = c.at_ms - t0;
    assert_int_equal(c.index, 1);
    assert_true(ms >= 45 && ms < 240);
}

/* The first candidate answers: it wins and the second is never tried. */
static void
test_resolve__connect_first_wins(void **state)
{
    fx_t *f = *state;
    uint16_t p1, p2;
    int l1 = listener(&p1, 16), l2 = listener(&p2, 16);
    fx_keep(f, l1);
    fx_keep(f, l2);
    xd_resolve_cand_t cs[2] = { cand("127.0.0.1", p1), cand("127.0.0.1", p2) };
    con_t c = { 0 };
    assert_int_equal(xd_connect_start(&f->loop, cs, 2, NULL, con_cb, &c, NULL), 0);
    assert_true(run_until(f, &c.calls, 5000));
    assert_int_equal(c.status, 0);
    assert_int_equal(c.index, 0);
    run_for(f, 400); /* past the delay: nothing else starts */
    assert_int_equal(c.calls, 1);
    assert_int_equal(accepted(l1), 1);
    assert_int_equal(accepted(l2), 0);
}

static void
test_resolve__connect_timeout_and_cancel(void **state)
{
    fx_t *f = *state;
    uint16_t hole = blackhole_port(f);
    if (hole == 0)
        skip();
    xd_resolve_cand_t cs[2] = { cand("127.0.0.1", hole), cand("127.0.0.1", hole) };
    xd_connect_opts_t o = { .attempt_delay_ms = 50, .timeout_ms = 300 };
    con_t c = { 0 };
    uint64_t t0 = now_ms();
    assert_int_equal(xd_connect_start(&f->loop, cs, 2, &o, con_cb, &c, NULL), 0);
    assert_true(run_until(f, &c.calls, 5000));
    uint64_t ms = c.at_ms - t0;
    assert_int_equal(c.status, XD_ETIMEDOUT);
    assert_true(ms >= 290 && ms < 1000);

    /* Cancel: no callback, every handle closed (checked at teardown). */
    xd_connect_t *h = NULL;
    memset(&c, 0, sizeof c);
    assert_int_equal(xd_connect_start(&f->loop, cs, 2, &o, con_cb, &c, &h), 0);
    run_for(f, 80); /* both attempts running */
    xd_connect_cancel(h);
    run_for(f, 400);
    assert_int_equal(c.calls, 0);
}

/* Resolve, then race the candidates: ::1 is refused, 127.0.0.1 listens. */
static void
resolve_connect_cb(void *arg, int status, const xd_resolve_cand_t *cands, size_t n);

typedef struct {
    fx_t *f;              /* fixture */
    res_t res;            /* resolve result */
    con_t con;            /* connect result */
} e2e_t;

static void
resolve_connect_cb(void *arg, int status, const xd_resolve_cand_t *cands, size_t n)
{
    e2e_t *e = arg;
    res_cb(&e->res, status, cands, n);
    if (status == 0)
        assert_int_equal(
            xd_connect_start(&e->f->loop, cands, n, NULL, con_cb, &e->con, NULL), 0);
}

static void
test_resolve__resolve_then_connect(void **state)
{
    fx_t *f = *state;
    xd_resolve_ctx_t *ctx = ctx_dns(f);
    e2e_t e = { .f = f };
    assert_int_equal(xd_resolve_domain(ctx, "e2e.test", resolve_connect_cb, &e, NULL), 0);
    assert_true(run_until(f, &e.con.calls, 5000));
    assert_int_equal(e.res.status, 0);
    assert_int_equal(e.res.n, 2);
    assert_cand(&e.res.c[0], "::1", g.e2e_port, false, XD_RESOLVE_SRC_XMPP);
    assert_cand(&e.res.c[1], "127.0.0.1", g.e2e_port, false, XD_RESOLVE_SRC_XMPP);
    assert_int_equal(e.con.status, 0);
    assert_int_equal(e.con.index, 1);
    assert_string_equal(e.con.won.host, "h.e2e.test");
    assert_int_equal(e.con.peer_port, g.e2e_port);
    char buf[80];
    assert_string_equal(xd_resolve_cand_str(&e.con.won, buf, sizeof buf),
                        (snprintf(buf + 40, 40, "127.0.0.1:%u", (unsigned)g.e2e_port), buf + 40));
    xd_resolve_free(ctx);
    accepted(g.e2e_fd);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)
        T(test_resolve__srv_priority_weight),
        T(test_resolve__xmpps_direct_tls),
        T(test_resolve__dot_target),
        T(test_resolve__fallback_no_srv),
        T(test_resolve__nxdomain),
        T(test_resolve__interleave_v6_v4),
        T(test_resolve__static_override),
        cmocka_unit_test(test_resolve__static_syntax),
        T(test_resolve__bad_arguments),
        T(test_resolve__dns_timeout),
        T(test_resolve__cancel),
        T(test_resolve__free_inside_callback),
        T(test_resolve__connect_refused_then_listening),
        T(test_resolve__connect_all_refused),
        T(test_resolve__connect_stagger),
        T(test_resolve__connect_first_wins),
        T(test_resolve__connect_timeout_and_cancel),
        T(test_resolve__resolve_then_connect),
#undef T
    };
    if (getenv("XD_TEST_FILTER") != NULL) /* e.g. XD_TEST_FILTER='*connect*' */
        cmocka_set_test_filter(getenv("XD_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
