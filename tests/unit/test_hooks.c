/*
 * test_hooks.c — hook chains: priority order, stopping the chain, per-host
 * vs global handlers, and removal while other threads run the hook.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/err.h"
#include "xmppd/hooks.h"

/* Each handler appends its tag (arg) to the trace in the event. */
typedef struct trace {
    char s[64];
} trace_t;

static int
h_note(xd_module_ctx_t *ctx, xd_hook_user_t *u, void *arg)
{
    (void)ctx;
    trace_t *t = (trace_t *)(uintptr_t)u->user;
    strncat(t->s, (const char *)arg, sizeof t->s - strlen(t->s) - 1);
    return XD_HOOK_OK;
}

static int
h_stop(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    h_note(ctx, ev, arg);
    return XD_HOOK_STOP;
}

static const char *
run(const char *host, trace_t *t)
{
    t->s[0] = '\0';
    xd_hook_user_t ev = { .host = host, .user = (const char *)t };
    xd_hook_run(XD_HOOK_REMOVE_USER, host, &ev);
    return t->s;
}

static int
teardown(void **state)
{
    (void)state;
    xd_hook_clear();
    xd_hook_sync();
    return 0;
}

static void
test_hooks__priority_order(void **state)
{
    (void)state;
    trace_t t;
    assert_int_equal(xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 50, h_note, "b"), 0);
    assert_int_equal(xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 10, h_note, "a"), 0);
    assert_int_equal(xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 90, h_note, "d"), 0);
    /* Equal priority: after those already there. */
    assert_int_equal(xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 50, h_note, "c"), 0);
    assert_string_equal(run("a.test", &t), "abcd");
    /* Other hooks are separate chains. */
    assert_int_equal(xd_hook_count(XD_HOOK_SM_REGISTER_CONNECTION, "a.test"), 0);
    assert_false(xd_hook_active(XD_HOOK_SM_REGISTER_CONNECTION));
    assert_true(xd_hook_active(XD_HOOK_REMOVE_USER));
    /* The same (hook, host, fn, arg) twice is refused. */
    assert_int_equal(xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 1, h_note, "b"), XD_EEXIST);
    assert_int_equal(xd_hook_add_any(XD_HOOK_COUNT_, NULL, NULL, 1, (xd_hook_fn_any)h_note, "b"),
                     XD_EINVAL);
    assert_int_equal(xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 1, NULL, "b"), XD_EINVAL);
    assert_true(xd_hook_remove(XD_HOOK_REMOVE_USER, NULL, h_note, "b"));
    assert_false(xd_hook_remove(XD_HOOK_REMOVE_USER, NULL, h_note, "b"));
    assert_string_equal(run("a.test", &t), "acd");
    assert_string_equal(xd_hook_name(XD_HOOK_FILTER_PACKET), "filter_packet");
    assert_string_equal(xd_hook_thread(XD_HOOK_ROSTER_GET), "pool");
    assert_non_null(xd_hook_doc(XD_HOOK_USER_SEND_PACKET));
    assert_null(xd_hook_name(XD_HOOK_COUNT_));
}

/* A handler gets the context it was added with (a module instance's; NULL
 * for the core's own) and its argument. */
static int
h_ctx(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    *(xd_module_ctx_t **)arg = ctx;
    (void)ev;
    return XD_HOOK_OK;
}

static void
test_hooks__handler_gets_its_context(void **state)
{
    (void)state;
    xd_module_ctx_t *fake = (xd_module_ctx_t *)(uintptr_t)0x1234, *seen_a = NULL, *seen_b = fake;
    assert_int_equal(xd_hook_add_any(XD_HOOK_SM_REGISTER_CONNECTION, "a.test", fake, 50,
                                     (xd_hook_fn_any)h_ctx, &seen_a), 0);
    assert_int_equal(xd_hook_add(XD_HOOK_SM_REGISTER_CONNECTION, NULL, 60, h_ctx, &seen_b), 0);
    xd_hook_session_t ev = { .host = "a.test" };
    xd_hook_run(XD_HOOK_SM_REGISTER_CONNECTION, "a.test", &ev);
    assert_ptr_equal(seen_a, fake);
    assert_null(seen_b);
}

static int
h_owner(xd_module_ctx_t *ctx, xd_hook_user_t *u, void *arg)
{
    trace_t *t = (trace_t *)(uintptr_t)u->user;
    strncat(t->s, ctx == (xd_module_ctx_t *)(uintptr_t)0x1 ? "1" : "2",
            sizeof t->s - strlen(t->s) - 1);
    (void)arg;
    return XD_HOOK_OK;
}

/* Two module instances may add one handler with one argument (a shared helper with a string
 * literal the compiler merged): both run, and each removal takes its owner's entry. */
static void
test_hooks__same_handler_two_owners(void **state)
{
    (void)state;
    trace_t t;
    xd_module_ctx_t *one = (xd_module_ctx_t *)(uintptr_t)0x1, *two = (xd_module_ctx_t *)(uintptr_t)0x2;
    static const char sql[] = "DELETE";
    assert_int_equal(xd_hook_add_any(XD_HOOK_REMOVE_USER, "a.test", one, 50,
                                     (xd_hook_fn_any)h_owner, (void *)sql), 0);
    assert_int_equal(xd_hook_add_any(XD_HOOK_REMOVE_USER, "a.test", two, 50,
                                     (xd_hook_fn_any)h_owner, (void *)sql), 0);
    assert_int_equal(xd_hook_add_any(XD_HOOK_REMOVE_USER, "a.test", two, 50,
                                     (xd_hook_fn_any)h_owner, (void *)sql), XD_EEXIST);
    assert_string_equal(run("a.test", &t), "12");
    assert_true(xd_hook_remove_any(XD_HOOK_REMOVE_USER, "a.test", one, (xd_hook_fn_any)h_owner,
                                   (void *)sql));
    assert_string_equal(run("a.test", &t), "2");
    assert_false(xd_hook_remove_any(XD_HOOK_REMOVE_USER, "a.test", one, (xd_hook_fn_any)h_owner,
                                    (void *)sql));
    assert_true(xd_hook_remove_any(XD_HOOK_REMOVE_USER, "a.test", two, (xd_hook_fn_any)h_owner,
                                   (void *)sql));
    assert_string_equal(run("a.test", &t), "");
}

static void
test_hooks__stop_ends_chain(void **state)
{
    (void)state;
    trace_t t;
    xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 10, h_note, "a");
    xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 20, h_stop, "S");
    xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 30, h_note, "z");
    xd_hook_user_t ev = { .host = "a.test", .user = (const char *)&t };
    t.s[0] = '\0';
    assert_int_equal(xd_hook_run(XD_HOOK_REMOVE_USER, "a.test", &ev), XD_HOOK_STOP);
    assert_string_equal(t.s, "aS");
    xd_hook_remove(XD_HOOK_REMOVE_USER, NULL, h_stop, "S");
    t.s[0] = '\0';
    assert_int_equal(xd_hook_run(XD_HOOK_REMOVE_USER, "a.test", &ev), XD_HOOK_OK);
    assert_string_equal(t.s, "az");
}

static void
test_hooks__per_host_and_global(void **state)
{
    (void)state;
    trace_t t;
    xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 50, h_note, "g");
    xd_hook_add(XD_HOOK_REMOVE_USER, "a.test", 10, h_note, "A");
    xd_hook_add(XD_HOOK_REMOVE_USER, "b.test", 60, h_note, "B");
    assert_string_equal(run("a.test", &t), "Ag");
    assert_string_equal(run("b.test", &t), "gB");
    assert_string_equal(run("c.test", &t), "g");
    assert_string_equal(run(NULL, &t), "g");
    assert_int_equal(xd_hook_count(XD_HOOK_REMOVE_USER, "a.test"), 2);
    /* Removal is by host too: the global one stays. */
    assert_false(xd_hook_remove(XD_HOOK_REMOVE_USER, "b.test", h_note, "g"));
    assert_true(xd_hook_remove(XD_HOOK_REMOVE_USER, "a.test", h_note, "A"));
    assert_string_equal(run("a.test", &t), "g");
}

/* A handler that removes itself and adds another while the chain runs. */
static int
h_self_remove(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    h_note(ctx, ev, "r");
    xd_hook_remove(XD_HOOK_REMOVE_USER, NULL, h_self_remove, NULL);
    xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 5, h_note, "n");
    return XD_HOOK_OK;
}

static void
test_hooks__modify_from_handler(void **state)
{
    (void)state;
    trace_t t;
    xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 10, h_self_remove, NULL);
    xd_hook_add(XD_HOOK_REMOVE_USER, NULL, 20, h_note, "x");
    /* The running pass keeps its snapshot; the next sees the change. */
    assert_string_equal(run(NULL, &t), "rx");
    assert_string_equal(run(NULL, &t), "nx");
}

/* Removal while other threads run the hook: the counted handler stops
 * being called after remove + sync, nothing crashes (ASan), and the
 * handler that stays is called on every run. */
static atomic_long calls_removed, calls_kept;
static atomic_bool stop_runners;

static int
h_count_removed(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    (void)ctx; (void)ev; (void)arg;
    atomic_fetch_add(&calls_removed, 1);
    return XD_HOOK_OK;
}

static int
h_count_kept(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    (void)ctx; (void)ev; (void)arg;
    atomic_fetch_add(&calls_kept, 1);
    return XD_HOOK_OK;
}

static void *
runner(void *arg)
{
    (void)arg;
    xd_hook_session_t ev = { .host = "a.test" };
    while (!atomic_load(&stop_runners))
        xd_hook_run(XD_HOOK_SM_REGISTER_CONNECTION, "a.test", &ev);
    return NULL;
}

static void
test_hooks__remove_while_running(void **state)
{
    (void)state;
    atomic_store(&stop_runners, false);
    xd_hook_add(XD_HOOK_SM_REGISTER_CONNECTION, NULL, 50, h_count_kept, NULL);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, runner, NULL);
    for (int round = 0; round < 200; round++) {
        assert_int_equal(xd_hook_add(XD_HOOK_SM_REGISTER_CONNECTION, "a.test", 10, h_count_removed, NULL),
                         0);
        assert_true(xd_hook_remove(XD_HOOK_SM_REGISTER_CONNECTION, "a.test", h_count_removed, NULL));
    }
    xd_hook_sync();
    long after = atomic_load(&calls_removed);
    long kept_before = atomic_load(&calls_kept);
    while (atomic_load(&calls_kept) < kept_before + 1000)
        ;
    atomic_store(&stop_runners, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&calls_removed), after);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hooks__priority_order, teardown),
        cmocka_unit_test_teardown(test_hooks__stop_ends_chain, teardown),
        cmocka_unit_test_teardown(test_hooks__per_host_and_global, teardown),
        cmocka_unit_test_teardown(test_hooks__modify_from_handler, teardown),
        cmocka_unit_test_teardown(test_hooks__handler_gets_its_context, teardown),
        cmocka_unit_test_teardown(test_hooks__remove_while_running, teardown),
        cmocka_unit_test_teardown(test_hooks__same_handler_two_owners, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
