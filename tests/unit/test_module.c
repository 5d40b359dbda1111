/*
 * test_module.c — the module manager with built-in test modules: per-host
 * start in dependency order, registrations undone at stop, failing start,
 * reload (added / removed / options changed), config check errors, and .so
 * loading errors that name the file.  Loading a real .so is covered by
 * tests/integration/test_modules.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "xmppd/module.h"
#include "core/worker.h"
#include "xmppd/owner.h"
#include "xmppd/acl.h"
#include "xmppd/err.h"
#include "xmppd/module.h"

static char trace[256]; /* "start:a@h1 stop:b@h2 …" */

static void
note(const char *what, xd_module_ctx_t *ctx)
{
    char buf[96];
    snprintf(buf, sizeof buf, "%s:%s@%s ", what, xd_module_of(ctx)->name + 4,
             xd_module_host(ctx));
    strncat(trace, buf, sizeof trace - strlen(trace) - 1);
}

static xd_stanza_t *
iq_none(const xd_iq_req_t *req)
{
    (void)req;
    return NULL;
}

static void
svc_none(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)ctx; (void)arg;
    xd_stanza_unref(st);
}

static int
hook_none(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)ctx; (void)ev; (void)arg;
    return XD_HOOK_OK;
}

static int
hook_none_session(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    (void)ctx; (void)ev; (void)arg;
    return XD_HOOK_OK;
}

static int
cmd_none(xd_cmd_call_t *call)
{
    (void)call;
    return 0;
}

static const xd_cmd_t t_cmd = { .name = "t_mod_cmd", .doc = "test", .fn = cmd_none };

struct a_conf {
    int level;   /* option */
};
static const xd_opt_t a_opts[] = {
    XD_OPT_INT("level", struct a_conf, level, "1", 0, 9, "test level"),
    XD_OPT_END,
};

static int
a_start(xd_module_ctx_t *ctx)
{
    note("start", ctx);
    char dom[64];
    snprintf(dom, sizeof dom, "svc.%s", xd_module_host(ctx));
    int rc = xd_module_iq(ctx, XD_IQ_HOST, "urn:t:a", XD_IQ_INLINE, iq_none, NULL);
    if (rc == 0)
        rc = xd_module_service(ctx, dom, svc_none, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, 50, hook_none, NULL);
    if (rc == 0)
        rc = xd_module_command(ctx, &t_cmd);
    return rc;
}

static void
a_stop(xd_module_ctx_t *ctx)
{
    note("stop", ctx);
}

static int
a_reload(xd_module_ctx_t *ctx, const void *old)
{
    const struct a_conf *o = old, *n = xd_module_opts(ctx);
    char buf[32];
    snprintf(buf, sizeof buf, "reload%d>%d", o->level, n->level);
    note(buf, ctx);
    return 0;
}

static int
b_start(xd_module_ctx_t *ctx)
{
    note("start", ctx);
    return 0;
}

static void
b_stop(xd_module_ctx_t *ctx)
{
    note("stop", ctx);
}

static int
bad_start(xd_module_ctx_t *ctx)
{
    note("start", ctx);
    /* Registers something, then fails: the registration must be undone. */
    xd_module_hook(ctx, XD_HOOK_SM_REGISTER_CONNECTION, 50, hook_none_session, NULL);
    return xd_module_fail(ctx, XD_EINVAL, "no luck on %s", xd_module_host(ctx));
}

static const char *const b_deps[] = { "mod_ta", NULL };
static const xd_module_t mod_ta = { .abi = XD_MODULE_ABI, .name = "mod_ta", .doc = "a",
                                    .opts = a_opts, .opts_size = sizeof(struct a_conf),
                                    .start = a_start, .stop = a_stop, .reload = a_reload };
static const xd_module_t mod_tb = { .abi = XD_MODULE_ABI, .name = "mod_tb", .doc = "b",
                                    .depends = b_deps, .start = b_start, .stop = b_stop };
static const xd_module_t mod_tbad = { .abi = XD_MODULE_ABI, .name = "mod_tbad", .doc = "bad",
                                      .start = bad_start };

/* mod_tw: keeps its context for the test, registers an IQ handler that
 * reports the context it gets, and records in stop whether the call held
 * by the test had been released by then. */
static _Atomic(xd_module_ctx_t *) w_ctx;
static atomic_bool w_released, w_stop_saw_release;

static xd_stanza_t *
w_iq(const xd_iq_req_t *req)
{
    *(xd_module_ctx_t **)req->arg = req->ctx;
    return NULL;
}

static xd_module_ctx_t *w_iq_seen;

static int
w_start(xd_module_ctx_t *ctx)
{
    atomic_store(&w_ctx, ctx); /* no note(): it runs everywhere, in every test */
    return xd_module_iq(ctx, XD_IQ_HOST, "urn:t:w", XD_IQ_INLINE, w_iq, &w_iq_seen);
}

static void
w_stop(xd_module_ctx_t *ctx)
{
    (void)ctx;
    atomic_store(&w_stop_saw_release, atomic_load(&w_released));
}

static const xd_module_t mod_tw = { .abi = XD_MODULE_ABI, .name = "mod_tw", .doc = "w",
                                    .flags = XD_MODULE_ALWAYS, .start = w_start, .stop = w_stop };

static xd_config_t *
load(const char *yml)
{
    xd_config_t *cfg = NULL;
    char *err = NULL;
    int rc = xd_config_load_string("t.yml", yml, strlen(yml), &cfg, &err);
    if (rc != 0)
        fail_msg("config: %s", err);
    return cfg;
}

static int
setup(void **state)
{
    (void)state;
    static bool done;
    if (!done) {
        assert_int_equal(xd_module_register_builtin(&mod_ta), 0);
        assert_int_equal(xd_module_register_builtin(&mod_tb), 0);
        assert_int_equal(xd_module_register_builtin(&mod_tbad), 0);
        assert_int_equal(xd_module_register_builtin(&mod_tw), 0);
        done = true;
    }
    trace[0] = '\0';
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    xd_modules_stop();
    return 0;
}

#define TWO_HOSTS "hosts: [h1, h2]\ndata_dir: /tmp/xd-test-module\n"

static void
test_module__start_order_and_undo(void **state)
{
    (void)state;
    assert_int_equal(xd_module_register_builtin(&mod_ta), XD_EEXIST);
    /* mod_tb is listed first but depends on mod_ta: ta starts first. */
    xd_config_t *cfg = load(TWO_HOSTS "modules:\n  mod_tb: {}\n  mod_ta: {level: 3}\n");
    char *err = NULL;
    assert_int_equal(xd_modules_check(cfg, &err), 0);
    assert_int_equal(xd_modules_start(cfg, &err), 0);
    assert_string_equal(trace, "start:ta@h1 start:tb@h1 start:ta@h2 start:tb@h2 ");
    assert_int_equal(xd_modules_running("mod_ta"), 2);
    assert_int_equal(xd_hook_count(XD_HOOK_REMOVE_USER, "h1"), 1);
    assert_non_null(xd_cmd_find("t_mod_cmd"));
    /* The IQ is taken on h1 now. */
    assert_int_equal(xd_iq_register("h1", XD_IQ_HOST, "urn:t:a", XD_IQ_INLINE, iq_none, NULL),
                     XD_EEXIST);
    trace[0] = '\0';
    xd_modules_stop();
    assert_string_equal(trace, "stop:tb@h2 stop:ta@h2 stop:tb@h1 stop:ta@h1 ");
    /* Everything the module registered is gone. */
    assert_int_equal(xd_hook_count(XD_HOOK_REMOVE_USER, "h1"), 0);
    assert_null(xd_cmd_find("t_mod_cmd"));
    assert_false(xd_service_remove("svc.h1", svc_none));
    assert_int_equal(xd_iq_register("h1", XD_IQ_HOST, "urn:t:a", XD_IQ_INLINE, iq_none, NULL), 0);
    xd_iq_unregister("h1", XD_IQ_HOST, "urn:t:a");
    xd_config_unref(cfg);
}

static void
test_module__failing_start_rolls_back(void **state)
{
    (void)state;
    xd_config_t *cfg = load(TWO_HOSTS "modules:\n  mod_ta: {}\n  mod_tbad: {}\n");
    char *err = NULL;
    assert_int_equal(xd_modules_start(cfg, &err), XD_EINVAL);
    assert_non_null(err);
    assert_non_null(strstr(err, "mod_tbad on host h1: no luck on h1"));
    free(err);
    /* ta@h1 started, then was stopped again; bad's hook was undone. */
    assert_string_equal(trace, "start:ta@h1 start:tbad@h1 stop:ta@h1 ");
    assert_int_equal(xd_modules_running(NULL), 0);
    assert_int_equal(xd_hook_count(XD_HOOK_SM_REGISTER_CONNECTION, "h1"), 0);
    assert_int_equal(xd_hook_count(XD_HOOK_REMOVE_USER, "h1"), 0);
    xd_config_unref(cfg);
}

static void
test_module__check_errors(void **state)
{
    (void)state;
    char *err = NULL;
    xd_config_t *cfg = load(TWO_HOSTS "module_dir: /nonexistent\nmodules:\n  mod_nosuch: {}\n");
    assert_int_equal(xd_modules_check(cfg, &err), XD_ENOTFOUND);
    assert_non_null(strstr(err, "mod_nosuch"));
    assert_non_null(strstr(err, "/nonexistent/mod_nosuch.so"));
    free(err);
    xd_config_unref(cfg);

    cfg = load(TWO_HOSTS "modules:\n  mod_ta:\n    level: 12\n");
    assert_int_equal(xd_modules_check(cfg, &err), XD_ECONF_RANGE);
    if (!strstr(err, "t.yml:5:12: modules.mod_ta.level"))
        fail_msg("message: %s", err);
    free(err);
    xd_config_unref(cfg);

    cfg = load(TWO_HOSTS "modules:\n  mod_tb: {}\n");
    assert_int_equal(xd_modules_check(cfg, &err), XD_ECONF_MISSING);
    assert_non_null(strstr(err, "needs mod_ta"));
    free(err);
    xd_config_unref(cfg);

    /* Every listed name is a module: the core serves none by name. */
    cfg = load(TWO_HOSTS "modules:\n  mod_ta: {level: 2}\n  mod_ping: {send_pings: true}\n");
    assert_int_equal(xd_modules_check(cfg, &err), XD_ENOTFOUND);
    assert_non_null(strstr(err, "mod_ping"));
    free(err);
    xd_config_unref(cfg);
    assert_int_equal(xd_modules_running(NULL), 0);
}

static void
test_module__so_errors_name_the_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/xd-test-modXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/mod_junk.so", dir);
    FILE *f = fopen(path, "w");
    fputs("not an ELF file\n", f);
    fclose(f);
    const xd_module_t *m = NULL;
    char *err = NULL;
    assert_int_equal(xd_module_find(dir, "mod_junk", &m, &err), XD_EINVAL);
    assert_non_null(strstr(err, path));
    free(err);
    /* No path tricks in names. */
    assert_int_equal(xd_module_find(dir, "../mod_junk", &m, &err), XD_ENOTFOUND);
    free(err);
    unlink(path);
    rmdir(dir);
}

static void
test_module__reload(void **state)
{
    (void)state;
    char *err = NULL;
    xd_config_t *c1 = load(TWO_HOSTS "modules:\n  mod_ta: {level: 1}\n");
    assert_int_equal(xd_modules_start(c1, &err), 0);
    trace[0] = '\0';
    /* Same options: nothing happens. */
    xd_config_t *c2 = load(TWO_HOSTS "modules:\n  mod_ta: {level: 1}\n");
    assert_int_equal(xd_modules_reload(c2, &err), 0);
    assert_string_equal(trace, "");
    /* Changed options: reload with the old ones; mod_tb added: started. */
    xd_config_t *c3 = load(TWO_HOSTS "modules:\n  mod_ta: {level: 4}\n  mod_tb: {}\n");
    assert_int_equal(xd_modules_reload(c3, &err), 0);
    assert_string_equal(trace, "reload1>4:ta@h2 reload1>4:ta@h1 start:tb@h1 start:tb@h2 ");
    /* h2 no longer served, mod_tb no longer listed: dependants stop first. */
    trace[0] = '\0';
    xd_config_t *c4 = load("hosts: [h1]\ndata_dir: /tmp/xd-test-module\nmodules:\n"
                           "  mod_ta: {level: 4}\n");
    assert_int_equal(xd_modules_reload(c4, &err), 0);
    assert_string_equal(trace, "stop:tb@h2 stop:tb@h1 stop:ta@h2 ");
    assert_int_equal(xd_modules_running("mod_ta"), 1);
    assert_int_equal(xd_modules_running("mod_tw"), 1); /* on h1, listed or not */
    /* A bad config changes nothing. */
    trace[0] = '\0';
    xd_config_t *c5 = load("hosts: [h1]\ndata_dir: /tmp/xd-test-module\nmodules:\n"
                           "  mod_tb: {}\n");
    assert_int_not_equal(xd_modules_reload(c5, &err), 0);
    free(err);
    assert_string_equal(trace, "");
    xd_config_unref(c1);
    xd_config_unref(c2);
    xd_config_unref(c3);
    xd_config_unref(c4);
    xd_config_unref(c5);
}

/* An XD_MODULE_ALWAYS module runs on every host without being listed, and
 * its IQ handler gets the instance's context. */
static void
test_module__always_and_handler_context(void **state)
{
    (void)state;
    char *err = NULL;
    xd_config_t *cfg = load(TWO_HOSTS);
    assert_int_equal(xd_modules_start(cfg, &err), 0);
    assert_int_equal(xd_modules_running("mod_tw"), 2);
    xd_module_ctx_t *ctx = atomic_load(&w_ctx); /* the last started: h2's */
    assert_string_equal(xd_module_host(ctx), "h2");
    xd_jid_t *to = NULL, *from = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c("h2"), &to), 0);
    xd_stanza_t *iq = NULL;
    const char *x = "<iq type='get' id='1' from='u@h2/r' to='h2'><q xmlns='urn:t:w'/></iq>";
    assert_int_equal(xd_stanza_parse(x, strlen(x), "jabber:client", &iq), 0);
    xd_iq_dispatch(iq, to, "h2", XD_IQ_HOST);
    assert_ptr_equal(w_iq_seen, ctx);
    xd_jid_unref(to);
    (void)from;
    xd_config_unref(cfg);
}

/* Stopping an instance waits for its calls in flight: the test holds a
 * call, a second thread stops the modules, the test sees the handler
 * registration gone (the stop began) and only then releases; stop must
 * have run after the release. */
static void *
w_stopper(void *arg)
{
    (void)arg;
    xd_modules_stop();
    return NULL;
}

static void
test_module__stop_waits_for_calls_in_flight(void **state)
{
    (void)state;
    char *err = NULL;
    xd_config_t *cfg = load("hosts: [h1]\ndata_dir: /tmp/xd-test-module\n");
    assert_int_equal(xd_modules_start(cfg, &err), 0);
    xd_module_ctx_t *ctx = atomic_load(&w_ctx);
    atomic_store(&w_released, false);
    atomic_store(&w_stop_saw_release, false);
    xd_module_hold(ctx);
    pthread_t th;
    pthread_create(&th, NULL, w_stopper, NULL);
    /* Registrations are undone before the wait: once the namespace is free
     * again, the stopper is waiting (or about to). */
    while (xd_iq_register("h1", XD_IQ_HOST, "urn:t:w", XD_IQ_INLINE, w_iq, NULL) != 0)
        sched_yield();
    xd_iq_unregister("h1", XD_IQ_HOST, "urn:t:w");
    atomic_store(&w_released, true);
    xd_module_release(ctx);
    pthread_join(th, NULL);
    assert_true(atomic_load(&w_stop_saw_release));
    xd_config_unref(cfg);
}

/* xd_module_post runs the module's function on the chosen worker, with the
 * instance held, in post order; xd_owner_of is stable and in range; off
 * the loops xd_owner_self is -1; after the workers stopped a post is
 * refused with XD_ECLOSED and the function never runs. */
#define P_N 3
#define P_EACH 50
static _Atomic int p_seen[P_N];      /* runs per worker */
static _Atomic int p_wrong;          /* runs on the wrong worker or out of order */
static atomic_bool p_go;            /* lets p_block return */
static int p_last[P_N];              /* owner-only: last sequence number run */

struct p_arg {
    unsigned worker;
    int seq;
    xd_module_ctx_t *expect;
};

static void
p_fn(xd_module_ctx_t *ctx, void *arg)
{
    struct p_arg *a = arg;
    if (xd_owner_self() != (int)a->worker || ctx != a->expect || a->seq != p_last[a->worker] + 1)
        atomic_fetch_add(&p_wrong, 1);
    p_last[a->worker] = a->seq;
    atomic_fetch_add(&p_seen[a->worker], 1);
    free(a);
}

static void
p_never(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    atomic_fetch_add(&p_wrong, 1);
}

/* Blocks its worker until the test lets it go: the instance's stop must
 * wait for it (the post holds the instance). */
static void
p_block(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    while (!atomic_load(&p_go))
        sched_yield();
    atomic_store(&w_released, true);
}

static void *
p_stopper(void *arg)
{
    (void)arg;
    xd_modules_stop();
    return NULL;
}

static void
p_noop(xd_worker_t *w, void *arg)
{
    (void)w;
    (void)arg;
}

static void
test_module__post_to_owner_worker(void **state)
{
    (void)state;
    char *err = NULL;
    assert_int_equal(xd_owner_workers(), 0);
    assert_int_equal(xd_module_post(NULL, 0, p_never, NULL), XD_ECLOSED);
    xd_config_t *cfg = load("hosts: [h1]\ndata_dir: /tmp/xd-test-module\n");
    assert_int_equal(xd_workers_start(P_N, p_noop, p_noop, NULL), 0);
    assert_int_equal(xd_modules_start(cfg, &err), 0);
    xd_module_ctx_t *ctx = atomic_load(&w_ctx);
    assert_int_equal(xd_owner_workers(), P_N);
    assert_int_equal(xd_owner_self(), -1);
    unsigned o = xd_owner_of("room@conference.h1");
    assert_true(o < P_N);
    assert_int_equal(xd_owner_of("room@conference.h1"), o); /* stable */
    assert_int_equal(xd_owner_of_n("room@conference.h1xyz", 18), o);
    bool used[P_N] = { false }; /* the hash spreads keys over the workers */
    for (int i = 0; i < 64; i++) {
        char k[32];
        snprintf(k, sizeof k, "r%d@c.h1", i);
        used[xd_owner_of(k)] = true;
    }
    for (unsigned w = 0; w < P_N; w++)
        assert_true(used[w]);
    assert_int_equal(xd_module_post(ctx, P_N, p_never, NULL), XD_EINVAL);
    assert_int_equal(xd_module_post(ctx, 0, NULL, NULL), XD_EINVAL);
    for (int seq = 1; seq <= P_EACH; seq++)
        for (unsigned w = 0; w < P_N; w++) {
            struct p_arg *a = malloc(sizeof *a);
            *a = (struct p_arg){ w, seq, ctx };
            assert_int_equal(xd_module_post(ctx, w, p_fn, a), 0);
        }
    for (unsigned w = 0; w < P_N; w++)
        while (atomic_load(&p_seen[w]) < P_EACH)
            sched_yield();
    assert_int_equal(atomic_load(&p_wrong), 0);
    /* The stop waits for a post in flight. */
    atomic_store(&w_released, false);
    atomic_store(&w_stop_saw_release, false);
    assert_int_equal(xd_module_post(ctx, 1, p_block, NULL), 0);
    pthread_t th;
    pthread_create(&th, NULL, p_stopper, NULL);
    while (xd_iq_register("h1", XD_IQ_HOST, "urn:t:w", XD_IQ_INLINE, w_iq, NULL) != 0)
        sched_yield();
    xd_iq_unregister("h1", XD_IQ_HOST, "urn:t:w");
    atomic_store(&p_go, true);
    pthread_join(th, NULL);
    assert_true(atomic_load(&w_stop_saw_release));
    xd_workers_stop();
    xd_workers_join();
    assert_int_equal(xd_module_post(ctx, 0, p_never, NULL), XD_ECLOSED);
    assert_int_equal(atomic_load(&p_wrong), 0);
    xd_config_unref(cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_module__start_order_and_undo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module__failing_start_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module__check_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module__so_errors_name_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module__reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module__always_and_handler_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module__post_to_owner_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module__stop_waits_for_calls_in_flight, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
