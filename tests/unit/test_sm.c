/*
 * test_sm.c — the session table (src/router/sm.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "router/sm.h"
#include "xmppd/err.h"

static xd_jid_t *
jid(const char *s)
{
    xd_jid_t *j = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c(s), &j), 0);
    return j;
}

static int
setup(void **state)
{
    (void)state;
    return xd_sm_init();
}

static int
teardown(void **state)
{
    (void)state;
    xd_sm_shutdown();
    return 0;
}

static void
test_sm__bind_find_unbind(void **state)
{
    (void)state;
    xd_session_info_t e = { .jid = jid("Juliet@Capulet.example/balcony"), .ref = { .worker = 1, .id = 7 } };
    assert_int_equal(xd_sm_bind(&e, NULL), 0);
    xd_session_info_t out = { 0 };
    xd_jid_t *q = jid("juliet@capulet.example/balcony");
    assert_int_equal(xd_session_find(q, &out), 0);
    assert_int_equal(out.ref.worker, 1);
    assert_int_equal(out.ref.id, 7);
    xd_session_info_clear(&out);
    assert_int_equal(xd_session_count(NULL), 1);
    /* Only the holder may unbind. */
    assert_false(xd_sm_unbind(q, 8));
    assert_true(xd_sm_unbind(q, 7));
    assert_int_equal(xd_session_find(q, &out), XD_ENOTFOUND);
    assert_int_equal(xd_session_count(NULL), 0);
    xd_jid_unref(q);
    xd_jid_unref(e.jid);
}

static void
test_sm__conflict_and_replace(void **state)
{
    (void)state;
    xd_session_info_t a = { .jid = jid("romeo@montague.example/orchard"), .ref = { .worker = 0, .id = 1 } };
    xd_session_info_t b = { .jid = jid("romeo@montague.example/orchard"), .ref = { .worker = 1, .id = 2 } };
    assert_int_equal(xd_sm_bind(&a, NULL), 0);
    xd_session_info_t old = { 0 };
    assert_int_equal(xd_sm_bind(&b, &old), XD_EEXIST);
    assert_int_equal(old.ref.id, 1);
    xd_session_info_clear(&old);
    assert_int_equal(xd_sm_bind_replace(&b, &old), 1);
    assert_int_equal(old.ref.id, 1);
    assert_int_equal(old.ref.worker, 0);
    xd_session_info_clear(&old);
    /* The old stream's unbind, arriving late, must not remove the new one. */
    assert_false(xd_sm_unbind(a.jid, 1));
    assert_int_equal(xd_session_count(NULL), 1);
    assert_true(xd_sm_unbind(b.jid, 2));
    xd_jid_unref(a.jid);
    xd_jid_unref(b.jid);
}

/* The account counter the sender's session reads instead of a lookup:
 * follows enable/disable, replacement and unbind, and outlives the table
 * entry while a session holds it. */
static void
test_sm__account_carbons_count(void **state)
{
    (void)state;
    xd_session_info_t a = { .jid = jid("nurse@capulet.example/a"), .ref = { .id = 1 } };
    xd_session_info_t b = { .jid = jid("nurse@capulet.example/b"), .ref = { .id = 2 } };
    assert_null(xd_sm_account(a.jid));
    assert_int_equal(xd_sm_bind(&a, NULL), 0);
    assert_int_equal(xd_sm_bind(&b, NULL), 0);
    xd_sm_account_t *acct = xd_sm_account(a.jid), *acct_b = xd_sm_account(b.jid);
    assert_non_null(acct);
    assert_ptr_equal(acct, acct_b);
    xd_sm_account_unref(acct_b);
    assert_false(xd_sm_account_carbons(acct));
    assert_int_equal(xd_session_set_flag(b.jid, XD_SESSION_CARBONS, true), 0);
    assert_int_equal(xd_session_set_flag(b.jid, XD_SESSION_CARBONS, true), 0); /* again: once */
    assert_true(xd_sm_account_carbons(acct));
    assert_int_equal(xd_session_set_flag(b.jid, XD_SESSION_CARBONS, false), 0);
    assert_false(xd_sm_account_carbons(acct));
    assert_int_equal(xd_session_set_flag(a.jid, XD_SESSION_CARBONS, true), 0);
    assert_true(xd_sm_account_carbons(acct));
    /* A new stream taking resource a over starts without carbons. */
    xd_session_info_t a2 = { .jid = a.jid, .ref = { .id = 3 } };
    assert_int_equal(xd_sm_bind_replace(&a2, NULL), 1);
    assert_false(xd_sm_account_carbons(acct));
    assert_int_equal(xd_session_set_flag(b.jid, XD_SESSION_CARBONS, true), 0);
    assert_true(xd_sm_unbind(b.jid, 2)); /* its carbons go with it */
    assert_false(xd_sm_account_carbons(acct));
    /* The router's lookup for a full JID: the handle, and the account's
     * carbons state for deciding whether it needs the whole list. */
    xd_session_ref_t ref = { 0 };
    bool carbons = true;
    assert_int_equal(xd_sm_find_ref(a.jid, &ref, &carbons), 0);
    assert_int_equal(ref.id, 3);
    assert_false(carbons);
    assert_int_equal(xd_session_set_flag(a.jid, XD_SESSION_CARBONS, true), 0);
    assert_int_equal(xd_sm_find_ref(a.jid, &ref, &carbons), 0);
    assert_true(carbons);
    assert_int_equal(xd_sm_find_ref(b.jid, &ref, &carbons), XD_ENOTFOUND);
    assert_true(xd_sm_unbind(a.jid, 3));
    assert_int_equal(xd_sm_find_ref(a.jid, &ref, &carbons), XD_ENOTFOUND);
    assert_null(xd_sm_account(a.jid));
    assert_false(xd_sm_account_carbons(acct)); /* still readable: we hold it */
    xd_sm_account_unref(acct);
    xd_jid_unref(a.jid);
    xd_jid_unref(b.jid);
}

static void
count_cb(void *arg, const xd_session_info_t *e)
{
    (void)e;
    (*(size_t *)arg)++;
}

static void
test_sm__many_users_and_hosts(void **state)
{
    (void)state;
    char buf[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(buf, sizeof buf, "user%d@%s/r%d", i / 2, i % 3 ? "a.example" : "b.example", i);
        xd_session_info_t e = { .jid = jid(buf), .ref = { .id = (uint64_t)i } };
        assert_int_equal(xd_sm_bind(&e, NULL), 0);
        xd_jid_unref(e.jid);
    }
    assert_int_equal(xd_session_count(NULL), 5000);
    size_t n = 0;
    assert_int_equal(xd_session_foreach("b.example", count_cb, &n), 1667);
    assert_int_equal(n, 1667);
    assert_int_equal(xd_session_count("a.example"), 3333);
    for (int i = 0; i < 5000; i++) {
        snprintf(buf, sizeof buf, "user%d@%s/r%d", i / 2, i % 3 ? "a.example" : "b.example", i);
        xd_jid_t *j = jid(buf);
        assert_true(xd_sm_unbind(j, (uint64_t)i));
        xd_jid_unref(j);
    }
    assert_int_equal(xd_session_count(NULL), 0);
}

static void
sm_thread(void *arg)
{
    int base = *(int *)arg;
    char buf[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(buf, sizeof buf, "u%d@x.example/t%d", i % 50, base + i);
        xd_jid_t *j = NULL;
        if (xd_jid_parse(xd_str_c(buf), &j) != 0)
            abort();
        xd_session_info_t e = { .jid = j, .ref = { .id = (uint64_t)(base + i) } };
        if (xd_sm_bind(&e, NULL) != 0)
            abort();
        if (i % 2 && !xd_sm_unbind(j, (uint64_t)(base + i)))
            abort();
        xd_jid_unref(j);
    }
}

static void
test_sm__concurrent_binds(void **state)
{
    (void)state;
    uv_thread_t t[4];
    int base[4] = { 0, 100000, 200000, 300000 };
    for (int i = 0; i < 4; i++)
        assert_int_equal(uv_thread_create(&t[i], sm_thread, &base[i]), 0);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&t[i]);
    assert_int_equal(xd_session_count(NULL), 4 * 1000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sm__bind_find_unbind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sm__conflict_and_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sm__account_carbons_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sm__many_users_and_hosts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sm__concurrent_binds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
