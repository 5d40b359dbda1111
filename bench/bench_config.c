/*
 * bench_config.c — configuration load time against the number of keys
 * (src/core/yaml.c, opt.c, config*.c).
 *
 * Where it sits: bench/, built by bench/meson.build, run by `make bench`.
 * Usage: bench_config [keys]   (default 40000)
 *
 * Each shape is loaded with `keys` and with 2 x `keys` entries, and the time
 * of both and their ratio are printed: a linear loader shows a ratio near 2,
 * a quadratic one near 4 (the loader was quadratic in each of these shapes
 * before the mapping index of yaml.c and the name maps of opt.c and
 * config_acl.c).  Unknown top-level keys fail the load after the whole file
 * was read, which is what is timed there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"

static double
bc_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    char *p;
    size_t len, cap;
} bc_buf_t;

static void
bc_put(bc_buf_t *b, const char *fmt, long i)
{
    char line[128];
    int n = snprintf(line, sizeof line, fmt, i, i);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->p = xd_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, line, (size_t)n + 1);
    b->len += (size_t)n;
}

/* The text of one shape with n entries. */
static bc_buf_t
bc_make(const char *shape, long n)
{
    bc_buf_t b = { 0 };
    if (strcmp(shape, "hosts") == 0) {
        bc_put(&b, "hosts:\n", 0);
        for (long i = 0; i < n; i++)
            bc_put(&b, "  - h%ld.example\n", i);
        return b;
    }
    bc_put(&b, "hosts: [localhost]\n", 0);
    if (strcmp(shape, "top-level keys") == 0) {
        for (long i = 0; i < n; i++)
            bc_put(&b, "k%ld: 1\n", i);
    } else if (strcmp(shape, "acl + access_rules") == 0) {
        bc_put(&b, "acl:\n", 0);
        for (long i = 0; i < n / 2; i++)
            bc_put(&b, "  a%ld: {user: u%ld}\n", i);
        bc_put(&b, "access_rules:\n", 0);
        for (long i = 0; i < n / 2; i++)
            bc_put(&b, "  r%ld: {allow: a%ld}\n", i);
    } else { /* module options */
        bc_put(&b, "modules:\n  mod_x:\n", 0);
        for (long i = 0; i < n; i++)
            bc_put(&b, "    k%ld: 1\n", i);
    }
    return b;
}

static double
bc_time(const char *shape, long n)
{
    bc_buf_t b = bc_make(shape, n);
    xd_config_t *cfg = NULL;
    char *err = NULL;
    double t0 = bc_now_s();
    xd_config_load_string("bench.yml", b.p, b.len, &cfg, &err);
    double t = bc_now_s() - t0;
    xd_config_unref(cfg);
    free(err);
    xd_free(b.p);
    return t;
}

int
main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 40000;
    static const char *const shapes[] = { "top-level keys", "acl + access_rules", "hosts",
                                          "module options" };
    printf("%-20s %10s %10s %10s %8s\n", "shape", "keys", "seconds", "2x keys", "ratio");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double a = bc_time(shapes[i], n), b = bc_time(shapes[i], 2 * n);
        printf("%-20s %10ld %10.3f %10.3f %8.2f\n", shapes[i], n, a, b, a > 0 ? b / a : 0);
    }
    return 0;
}
