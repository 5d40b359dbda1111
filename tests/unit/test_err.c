/*
 * test_err.c — unit tests for src/core/err.c: names and messages of XD_E*
 * codes (errors.def) and of negated errno values.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/err.h"

static void
test_err__xd_codes_have_names_and_messages(void **state)
{
    (void)state;
    assert_string_equal(xd_err_name(XD_EINVAL), "XD_EINVAL");
    assert_string_equal(xd_strerror(XD_EINVAL), "invalid argument");
    assert_string_equal(xd_err_name(XD_EFULL), "XD_EFULL");
    assert_string_equal(xd_strerror(XD_EFULL), "queue full");
    assert_string_equal(xd_err_name(XD_ECLOSED), "XD_ECLOSED");
    assert_string_equal(xd_err_name(XD_ECANCELED), "XD_ECANCELED");
    assert_string_equal(xd_err_name(XD_EJID_LOCAL_EMPTY), "XD_EJID_LOCAL_EMPTY");
    assert_string_equal(xd_strerror(XD_EJID_LOCAL_EMPTY), "localpart is empty");
    assert_string_equal(xd_err_name(XD_EDB_BUSY), "XD_EDB_BUSY");
}

static void
test_err__every_listed_code_is_named(void **state)
{
    (void)state;
#define XD_ERR(name, val, msg)                                   \
    assert_string_equal(xd_err_name(val), "XD_E" #name);         \
    assert_string_equal(xd_strerror(val), msg);                  \
    assert_true((val) <= -10000);
#include "xmppd/errors.def"
#undef XD_ERR
}

static void
test_err__negated_errno(void **state)
{
    (void)state;
    assert_string_equal(xd_err_name(-ENOENT), "ENOENT");
    assert_string_equal(xd_strerror(-ENOENT), "no such file or directory");
    assert_string_equal(xd_err_name(-EAGAIN), "EAGAIN");
    assert_string_equal(xd_err_name(-ECONNREFUSED), "ECONNREFUSED");
    assert_string_equal(xd_strerror(-ECONNREFUSED), "connection refused");
    /* Not in libuv's list: falls back to the C library's static tables. */
    assert_string_equal(xd_err_name(-EDEADLK), "EDEADLK");
    assert_true(strlen(xd_strerror(-EDEADLK)) > 0);
    assert_string_not_equal(xd_strerror(-EDEADLK), "unknown error");
}

static void
test_err__zero_and_unknown(void **state)
{
    (void)state;
    assert_string_equal(xd_err_name(0), "OK");
    assert_string_equal(xd_strerror(0), "success");
    assert_string_equal(xd_err_name(-9999), "UNKNOWN");
    assert_string_equal(xd_strerror(-9999), "unknown error");
    assert_string_equal(xd_err_name(12345), "UNKNOWN");
    assert_string_equal(xd_err_name(-10099), "UNKNOWN");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err__xd_codes_have_names_and_messages),
        cmocka_unit_test(test_err__every_listed_code_is_named),
        cmocka_unit_test(test_err__negated_errno),
        cmocka_unit_test(test_err__zero_and_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
