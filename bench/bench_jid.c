/*
 * bench_jid.c — parse throughput of xd_jid_parse() (src/xmpp/jid.c).
 *
 * Where it sits: bench/, built by bench/meson.build, run by `make bench`.
 * Usage: bench_jid [iterations]   (default 1000000 per case)
 *
 * Each case parses one JID repeatedly and frees it, and prints ns/op and
 * ops/s.  The first cases are the stanza hot path (ASCII, no libunistring or
 * libidn2 call); the others show the cost of the full PRECIS/IDNA path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "xmppd/jid.h"

static double
bj_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
bj_run(const char *name, const char *jid, long iters)
{
    xd_str_t in = xd_str_c(jid);
    xd_jid_t *j;
    double t0 = bj_now_ns();
    for (long i = 0; i < iters; i++) {
        if (xd_jid_parse(in, &j) != 0) {
            fprintf(stderr, "bench_jid: %s: \"%s\" does not parse\n", name, jid);
            return 1;
        }
        xd_jid_unref(j);
    }
    double ns = (bj_now_ns() - t0) / (double)iters;
    printf("%-22s %10.1f ns/op %12.0f ops/s  %s\n", name, ns, 1e9 / ns, jid);
    return 0;
}

int
main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 1000000;
    if (iters <= 0)
        iters = 1;
    int rc = 0;
    rc |= bj_run("ascii-full", "user@example.com/res", iters);
    rc |= bj_run("ascii-bare", "user@example.com", iters);
    rc |= bj_run("ascii-upper", "User@Example.COM/Resource", iters);
    rc |= bj_run("domain-only", "conference.example.com", iters);
    rc |= bj_run("ipv6", "user@[2001:db8::1]/res", iters / 10 + 1);
    rc |= bj_run("precis-local", "Σωκράτης@example.com/res", iters / 10 + 1);
    rc |= bj_run("precis-resource", "user@example.com/ordinateur de Zoë", iters / 10 + 1);
    rc |= bj_run("idn-domain", "user@bücher.example/res", iters / 10 + 1);
    rc |= bj_run("a-label-domain", "user@xn--bcher-kva.example/res", iters / 10 + 1);
    return rc;
}
