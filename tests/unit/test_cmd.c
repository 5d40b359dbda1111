/*
 * test_cmd.c — the command registry: registration, lookup, argument
 * preparation by type, results.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "xmppd/acl.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"

static xd_config_t *
test_cfg(void)
{
    static const char yml[] = "hosts: [example.org, Example.NET]\n";
    xd_config_t *cfg = NULL;
    char *err = NULL;
    assert_int_equal(xd_config_load_string("t.yml", yml, sizeof yml - 1, &cfg, &err), 0);
    return cfg;
}

static int
echo_fn(xd_cmd_call_t *call)
{
    for (size_t i = 0; i < call->cmd->nargs; i++)
        xd_cmd_add(call, "%s", call->args[i].text ? call->args[i].text : "(none)");
    return 0;
}

static int
fail_fn(xd_cmd_call_t *call)
{
    return xd_cmd_errorf(call, XD_ENOTFOUND, "nothing called %s", call->args[0].text);
}

static const xd_cmd_arg_t echo_args[] = {
    { "user", XD_CMD_USER, "a user" },
    { "host", XD_CMD_HOST, "a host" },
    { "count", XD_CMD_INT, "a number" },
    { "secret", XD_CMD_PASSWORD, "a password" },
};

static const xd_cmd_t cmd_echo = {
    .name = "echo", .doc = "echo", .args = echo_args, .nargs = 4, .nopt = 2,
    .result = XD_CMD_RES_LIST, .fn = echo_fn,
};
static const xd_cmd_t cmd_fail = {
    .name = "afail", .doc = "fails", .args = echo_args, .nargs = 1,
    .result = XD_CMD_RES_NONE, .fn = fail_fn,
};
static const xd_cmd_t cmd_zeta = {
    .name = "zeta", .doc = "z", .result = XD_CMD_RES_NONE, .fn = fail_fn,
};

static int
collect(void *arg, const xd_cmd_t *cmd)
{
    char *buf = arg;
    strcat(buf, cmd->name);
    strcat(buf, ",");
    return 0;
}

static void
test_register_find_foreach(void **state)
{
    (void)state;
    assert_int_equal(xd_cmd_register(&cmd_zeta), 0);
    assert_int_equal(xd_cmd_register(&cmd_echo), 0);
    assert_int_equal(xd_cmd_register(&cmd_fail), 0);
    assert_int_equal(xd_cmd_register(&cmd_echo), XD_EEXIST);
    xd_cmd_t bad = { .name = "bad", .doc = "x", .nargs = 9, .args = echo_args, .fn = echo_fn };
    assert_int_equal(xd_cmd_register(&bad), XD_EINVAL);
    assert_ptr_equal(xd_cmd_find("echo"), &cmd_echo);
    assert_null(xd_cmd_find("nope"));
    char names[128] = "";
    xd_cmd_foreach(collect, names);
    assert_string_equal(names, "afail,echo,zeta,");
    xd_cmd_unregister(&cmd_zeta);
    assert_null(xd_cmd_find("zeta"));
    char syn[128];
    xd_cmd_synopsis(&cmd_echo, syn, sizeof syn);
    assert_string_equal(syn, "USER HOST [COUNT] [SECRET]");
}

static void
test_prepare_types(void **state)
{
    (void)state;
    xd_config_t *cfg = test_cfg();
    xd_cmd_call_t call;
    char *argv[] = { "Alice", "EXAMPLE.org", "42", "pw" };
    assert_int_equal(xd_cmd_prepare(&call, &cmd_echo, cfg, 4, argv, "test"), 0);
    assert_string_equal(call.args[0].text, "alice");
    assert_string_equal(call.args[1].text, "example.org");
    assert_int_equal(call.args[2].i, 42);
    assert_int_equal(xd_cmd_run(&call), 0);
    assert_int_equal(call.res.kind, XD_CMD_RES_LIST);
    assert_int_equal(call.res.n, 4);
    assert_string_equal(call.res.items[3], "pw");
    xd_cmd_call_clear(&call);

    /* Optional arguments may be left out. */
    assert_int_equal(xd_cmd_prepare(&call, &cmd_echo, cfg, 2, argv, "test"), 0);
    assert_null(call.args[2].text);
    xd_cmd_call_clear(&call);

    /* Too few, too many. */
    assert_int_equal(xd_cmd_prepare(&call, &cmd_echo, cfg, 1, argv, "test"), XD_EINVAL);
    assert_non_null(strstr(call.res.text, "usage: echo USER HOST"));
    xd_cmd_call_clear(&call);

    /* A host not served, a bad user, a bad integer: named in the message. */
    char *bad_host[] = { "alice", "other.example" };
    assert_int_equal(xd_cmd_prepare(&call, &cmd_echo, cfg, 2, bad_host, "test"), XD_EINVAL);
    assert_non_null(strstr(call.res.text, "host 'other.example'"));
    xd_cmd_call_clear(&call);
    char *bad_user[] = { "a b", "example.org" };
    assert_int_equal(xd_cmd_prepare(&call, &cmd_echo, cfg, 2, bad_user, "test"), XD_EINVAL);
    assert_non_null(strstr(call.res.text, "user 'a b'"));
    xd_cmd_call_clear(&call);
    char *bad_int[] = { "alice", "example.org", "12x" };
    assert_int_equal(xd_cmd_prepare(&call, &cmd_echo, cfg, 3, bad_int, "test"), XD_EINVAL);
    assert_non_null(strstr(call.res.text, "count '12x': not an integer"));
    xd_cmd_call_clear(&call);
    xd_config_unref(cfg);
}

static void
test_errors_carry_messages(void **state)
{
    (void)state;
    xd_config_t *cfg = test_cfg();
    xd_cmd_call_t call;
    char *argv[] = { "bob" };
    assert_int_equal(xd_cmd_prepare(&call, &cmd_fail, cfg, 1, argv, "test"), 0);
    assert_int_equal(xd_cmd_run(&call), XD_ENOTFOUND);
    assert_string_equal(call.res.text, "nothing called bob");
    xd_cmd_call_clear(&call);
    xd_config_unref(cfg);
}

static const xd_cmd_t cmd_held = {
    .name = "held",
    .doc = "a command a front end is running",
    .fn = fail_fn,
};

static xd_cmd_hold_t *held_hold;
static _Atomic bool held_released;

/* The front end holding a call of cmd_held: it lets go only after the
 * command is out of the table, so that the unregister is already waiting. */
static void
held_holder(void *arg)
{
    (void)arg;
    while (xd_cmd_find("held"))
        uv_sleep(1);
    xd_cmd_hold_t *none = NULL;
    if (xd_cmd_acquire("held", &none) == NULL && none == NULL) /* no new call now */
        atomic_store(&held_released, true);
    xd_cmd_release(held_hold);
}

/* Unregistering a command waits for the calls a front end acquired: the
 * name is gone at once (no new call), the unregister returns only after
 * the release, so the module behind it never stops under a running call. */
static void
test_unregister_waits_for_running_calls(void **state)
{
    (void)state;
    assert_int_equal(xd_cmd_register(&cmd_held), 0);
    assert_ptr_equal(xd_cmd_acquire("held", &held_hold), &cmd_held);
    assert_non_null(held_hold);
    atomic_store(&held_released, false);
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, held_holder, NULL), 0);
    xd_cmd_unregister(&cmd_held); /* returns after held_holder's release */
    assert_true(atomic_load(&held_released));
    uv_thread_join(&th);
    xd_cmd_release(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_find_foreach),
        cmocka_unit_test(test_prepare_types),
        cmocka_unit_test(test_errors_carry_messages),
        cmocka_unit_test(test_unregister_waits_for_running_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
