/*
 * bench_privacy.c — the cost of the privacy filter (src/mod/privacy*.c) per
 * routed stanza, as the router pays it: one xd_hook_run(FILTER_PACKET) with
 * a parsed stanza and its parsed 'to'.
 *
 * Where it sits: bench/, built by bench/meson.build, run by `make bench`.
 * Usage: bench_privacy [iterations [case]]   (default 2000000 per thread and case;
 *        a case given: only the cases whose name contains it, e.g. for perf)
 *
 * The engine runs for real: mod_roster and mod_privacy started by the module
 * manager on one host, on a throw-away SQLite file, with the lists set
 * through the engine's own API.  (mod_blocking runs the same engine and adds
 * nothing to the filter.)  Cases, each on 1 thread and on 4
 * threads routing at once (every thread its own sender and recipient unless
 * the case says "one recipient"):
 *
 *   hook only        a no-op FILTER_PACKET handler in place of the engine:
 *                    what the hook machinery costs by itself;
 *   no state         the engine runs, no account has lists or sessions;
 *   others listed    256 other accounts have a 10-item default list, the
 *                    sender and the recipient have no privacy state;
 *   10-item default  the recipient has a default list of 10 jid items, none
 *                    of which matches the sender (all 10 are tried), the
 *                    sender has no state;
 *   one recipient    the same, all 4 threads to one recipient.
 *
 * Every stanza passes the filter (it is reused, never refused).  Prints ns
 * per stanza: on 4 threads the wall time divided by all stanzas routed.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mod/builtin.h"
#include "mod/privacy.h"
#include "router/sm.h"
#include "xmppd/acl.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/storage.h"

#define BP_HOST "bench.example"
#define BP_THREADS 4   /* threads of the concurrent runs */
#define BP_OTHERS 256  /* accounts with lists in "others listed" */
#define BP_ITEMS 10    /* items of each default list */

static const char *bp_only; /* run only the cases whose name contains this, or all */

/* One thread's stanza and where it goes (set up before the clock runs). */
typedef struct bp_flow {
    xd_stanza_t *st; /* the stanza (one reference, reused for every run) */
    xd_jid_t *to;    /* its 'to', parsed as the router passes it */
} bp_flow_t;

/* A timed run: the flows its threads route (the main thread's, read-only
 * while the threads run). */
typedef struct bp_run {
    bp_flow_t *flows;  /* one per thread */
    long iters;        /* stanzas per thread */
    _Atomic int ready; /* threads waiting at the start line */
    _Atomic bool go;   /* the start signal */
    _Atomic int fails; /* stanzas the filter refused (must stay 0) */
} bp_run_t;

/* One thread's share of a run. */
typedef struct bp_arg {
    bp_run_t *run; /* the run */
    size_t flow;   /* index of its flow */
} bp_arg_t;

static double
bp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void
bp_die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_privacy: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static xd_jid_t *
bp_jid(const char *s)
{
    xd_jid_t *j = NULL;
    if (xd_jid_parse(xd_str_c(s), &j) != 0)
        bp_die("bad JID", s);
    return j;
}

/* A chat message from sender to recipient (full JIDs, local parts given). */
static bp_flow_t
bp_flow(const char *from_local, const char *to_local)
{
    char xml[512], to[256];
    snprintf(to, sizeof to, "%s@" BP_HOST "/desk", to_local);
    snprintf(xml, sizeof xml,
             "<message type='chat' from='%s@" BP_HOST "/phone' to='%s'><body>hi</body></message>",
             from_local, to);
    bp_flow_t f = { .to = bp_jid(to) };
    if (xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &f.st) != 0)
        bp_die("bad stanza", xml);
    return f;
}

static void
bp_flow_clear(bp_flow_t *f)
{
    xd_stanza_unref(f->st);
    xd_jid_unref(f->to);
}

static void
bp_route_n(bp_run_t *r, bp_flow_t *f)
{
    for (long i = 0; i < r->iters; i++) {
        xd_hook_filter_t ev = { .host = BP_HOST, .st = f->st, .to = f->to };
        xd_hook_run(XD_HOOK_FILTER_PACKET, BP_HOST, &ev);
        if (ev.st != f->st) {
            atomic_fetch_add(&r->fails, 1);
            return;
        }
    }
}

static void *
bp_thread(void *p)
{
    bp_arg_t *a = p;
    atomic_fetch_add(&a->run->ready, 1);
    while (!atomic_load(&a->run->go))
        ;
    bp_route_n(a->run, &a->run->flows[a->flow]);
    return NULL;
}

/* Routes flows[0] iters times on this thread, or flows[0..nthreads) on
 * nthreads threads at once; prints ns per stanza. */
static void
bp_time(const char *name, bp_flow_t *flows, size_t nthreads, long iters)
{
    if (bp_only && !strstr(name, bp_only))
        return;
    bp_run_t r = { .flows = flows, .iters = iters };
    double t0, ns;
    if (nthreads == 1) {
        t0 = bp_now_ns();
        bp_route_n(&r, &flows[0]);
        ns = bp_now_ns() - t0;
    } else {
        pthread_t th[BP_THREADS];
        bp_arg_t args[BP_THREADS];
        for (size_t i = 0; i < nthreads; i++) {
            args[i] = (bp_arg_t){ .run = &r, .flow = i };
            if (pthread_create(&th[i], NULL, bp_thread, &args[i]) != 0)
                bp_die("pthread_create", NULL);
        }
        while (atomic_load(&r.ready) < (int)nthreads)
            ;
        t0 = bp_now_ns();
        atomic_store(&r.go, true);
        for (size_t i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
        ns = bp_now_ns() - t0;
    }
    if (atomic_load(&r.fails))
        bp_die("the filter refused a stanza", name);
    double total = (double)iters * (double)nthreads;
    double per = ns / total;
    printf("%-34s threads=%zu %8.1f ns/stanza %12.0f stanzas/s\n", name, nthreads, per,
           1e9 / per);
}

/* A case on one thread, then on BP_THREADS. */
static void
bp_case(const char *name, bp_flow_t *flows, long iters)
{
    bp_time(name, flows, 1, iters);
    bp_time(name, flows, BP_THREADS, iters);
}

/* Gives account `local` a default list "d" of BP_ITEMS jid items that match
 * none of the bench's senders. */
static void
bp_list(const char *local)
{
    char full[256];
    snprintf(full, sizeof full, "%s@" BP_HOST "/setup", local);
    xd_jid_t *req = bp_jid(full);
    xd_privacy_list_t l = { .name = "d" };
    xd_privacy_item_t items[BP_ITEMS];
    char values[BP_ITEMS][64];
    for (size_t i = 0; i < BP_ITEMS; i++) {
        snprintf(values[i], sizeof values[i], "spammer%zu@elsewhere.example", i);
        items[i] = (xd_privacy_item_t){ .type = XD_PRIVACY_JID, .value = values[i],
                                        .deny = true, .order = (uint32_t)(i + 1) };
    }
    l.items = items;
    l.n = BP_ITEMS;
    if (xd_privacy_set_list(req, &l) != 0 || xd_privacy_set_default(req, "d") != 0)
        bp_die("cannot set the list of", local);
    xd_jid_unref(req);
}

/* bp_list for the accounts <prefix>0 … <prefix>(n - 1). */
static void
bp_lists(const char *prefix, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char local[32];
        snprintf(local, sizeof local, "%s%zu", prefix, i);
        bp_list(local);
    }
}

static int
bp_noop(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)ctx;
    (void)ev;
    (void)arg;
    return XD_HOOK_OK;
}

/* Starts the two modules on BP_HOST with a database in dir. */
static xd_config_t *
bp_start(const char *dir, xd_db_t **db)
{
    char path[512];
    snprintf(path, sizeof path, "%s/xmppd.db", dir);
    if (xd_builtin_register() != 0)
        bp_die("xd_builtin_register", NULL);
    xd_db_params_t prm = { .driver = "sqlite", .path = path, .busy_timeout_ms = 2000 };
    if (xd_db_open(&prm, db) != 0)
        bp_die("cannot open", path);
    xd_modules_set_db(*db);
    static const char yml[] = "hosts: [" BP_HOST "]\n"
                              "modules:\n"
                              "  mod_roster: {}\n"
                              "  mod_privacy: {}\n";
    xd_config_t *cfg = NULL;
    char *err = NULL;
    if (xd_config_load_string("bench.yml", yml, sizeof yml - 1, &cfg, &err) != 0)
        bp_die("config", err);
    xd_config_publish(cfg);
    if (xd_sm_init() != 0)
        bp_die("xd_sm_init", NULL);
    if (xd_modules_start(cfg, &err) != 0)
        bp_die("modules", err);
    return cfg;
}

int
main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    if (iters <= 0)
        iters = 1;
    bp_only = argc > 2 ? argv[2] : NULL;
    xd_log_set_level(XD_LOG_WARN);
    char dir[] = "/tmp/bench_privacy.XXXXXX";
    if (!mkdtemp(dir))
        bp_die("mkdtemp", NULL);

    bp_flow_t plain[BP_THREADS], listed[BP_THREADS], one[BP_THREADS];
    for (size_t i = 0; i < BP_THREADS; i++) {
        char s[32], r[32];
        snprintf(s, sizeof s, "sender%zu", i);
        snprintf(r, sizeof r, "user%zu", i);
        plain[i] = bp_flow(s, r);
        snprintf(r, sizeof r, "rcpt%zu", i);
        listed[i] = bp_flow(s, r);
        one[i] = bp_flow(s, "rcpt0");
    }

    /* The hook machinery alone, before the engine is there. */
    xd_hook_add(XD_HOOK_FILTER_PACKET, NULL, 30, bp_noop, NULL);
    bp_case("hook only (no-op handler)", plain, iters);
    xd_hook_remove(XD_HOOK_FILTER_PACKET, NULL, bp_noop, NULL);

    xd_db_t *db = NULL;
    xd_config_t *cfg = bp_start(dir, &db);
    bp_case("no state", plain, iters);
    bp_lists("other", BP_OTHERS);
    bp_case("others listed, pair without state", plain, iters);
    bp_lists("rcpt", BP_THREADS);
    bp_case("10-item default list", listed, iters);
    bp_time("10-item default list, one recipient", one, BP_THREADS, iters);

    for (size_t i = 0; i < BP_THREADS; i++) {
        bp_flow_clear(&plain[i]);
        bp_flow_clear(&listed[i]);
        bp_flow_clear(&one[i]);
    }
    xd_modules_stop();
    xd_modules_set_db(NULL);
    xd_sm_shutdown();
    xd_db_close(db);
    xd_config_unref(cfg);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
