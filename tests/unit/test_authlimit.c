/*
 * test_authlimit.c — the failed-authentication table (src/auth/authlimit.h)
 * with a clock of the test's: a table filled past its size keeps the newest
 * entries and stays at its size, bans and their end, the window, growing
 * delays per address and per account, IPv6 by /64 and IPv4-mapped as IPv4,
 * successes, clearing, resizing, and many threads at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>

#include <cmocka.h>

#include "auth/authlimit.h"

static uint64_t fx_now = 1000000;

static uint64_t
fx_clock(void)
{
    return fx_now;
}

static struct sockaddr_storage
addr(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, s, &a6->sin6_addr), 1);
        a6->sin6_family = AF_INET6;
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static int
setup(void **state)
{
    (void)state;
    xd_auth_limits_t c = {
        .max_failures = 3,
        .ban_lifetime_ms = 60000,
        .window_ms = 10000,
        .delay_after = 1,
        .delay_ms = 100,
        .max_delay_ms = 350,
        .exempt = "none",
        .size = 16,
    };
    xd_authlimit_reset();
    xd_authlimit_test_set_clock(fx_clock);
    xd_authlimit_configure(&c);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    xd_authlimit_reset();
    xd_authlimit_configure(NULL);
    xd_authlimit_test_set_clock(NULL);
    return 0;
}

static void
fail_from(const char *a, const char *account, xd_authlimit_result_t *r)
{
    struct sockaddr_storage ss = addr(a);
    xd_authlimit_failed(SA(ss), account, r);
}

static bool
banned(const char *a)
{
    struct sockaddr_storage ss = addr(a);
    char text[XD_AUTHLIMIT_TEXT_MAX];
    return xd_authlimit_banned(SA(ss), text, sizeof text);
}

/* Collects the keys foreach shows. */
typedef struct {
    char keys[64][80];
    size_t n;
} seen_t;

static int
collect(void *arg, const xd_authlimit_entry_t *e)
{
    seen_t *s = arg;
    if (s->n < 64)
        snprintf(s->keys[s->n++], sizeof s->keys[0], "%s", e->key);
    return 0;
}

static bool
seen_has(const seen_t *s, const char *k)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->keys[i], k) == 0)
            return true;
    return false;
}

/* A table filled past its size keeps `size` entries, the newest. */
static void
test_authlimit__fill_evicts_oldest(void **state)
{
    (void)state;
    xd_authlimit_result_t r;
    char a[32];
    for (int i = 1; i <= 40; i++) {
        snprintf(a, sizeof a, "10.0.0.%d", i);
        fail_from(a, NULL, &r);
        assert_int_equal(r.addr_failures, 1);
        fx_now++;
    }
    assert_int_equal(xd_authlimit_count(), 16);
    seen_t s = { .n = 0 };
    xd_authlimit_foreach(collect, &s);
    assert_int_equal(s.n, 16);
    assert_string_equal(s.keys[0], "10.0.0.40"); /* newest first */
    assert_true(seen_has(&s, "10.0.0.25"));
    assert_false(seen_has(&s, "10.0.0.24"));
    /* Touching an old entry keeps it when the next ones come. */
    fail_from("10.0.0.25", NULL, &r);
    assert_int_equal(r.addr_failures, 2);
    fail_from("10.0.0.41", NULL, &r);
    s.n = 0;
    xd_authlimit_foreach(collect, &s);
    assert_true(seen_has(&s, "10.0.0.25"));
    assert_false(seen_has(&s, "10.0.0.26")); /* the oldest went instead */
    /* A banned address evicted by a flood is forgotten: that is the
     * price of bounded memory, and why size is an option. */
}

static void
test_authlimit__ban_and_its_end(void **state)
{
    (void)state;
    xd_authlimit_result_t r;
    fail_from("192.0.2.7", NULL, &r);
    fail_from("192.0.2.7", NULL, &r);
    assert_false(r.banned);
    assert_false(banned("192.0.2.7"));
    fail_from("192.0.2.7", NULL, &r);
    assert_true(r.banned);
    assert_int_equal(r.addr_failures, 3);
    char text[XD_AUTHLIMIT_TEXT_MAX];
    struct sockaddr_storage ss = addr("192.0.2.7");
    assert_true(xd_authlimit_banned(SA(ss), text, sizeof text));
    assert_string_equal(text, "too many failed authentications from 192.0.2.7; "
                              "refused for 60 more seconds");
    assert_false(banned("192.0.2.8"));
    fx_now += 59999;
    assert_true(banned("192.0.2.7"));
    fx_now += 1;
    assert_false(banned("192.0.2.7"));
    assert_int_equal(xd_authlimit_count(), 0); /* window and ban over: gone */
    fail_from("192.0.2.7", NULL, &r);
    assert_int_equal(r.addr_failures, 1); /* starts again */
    assert_false(r.banned);
}

static void
test_authlimit__window(void **state)
{
    (void)state;
    xd_authlimit_result_t r;
    fail_from("198.51.100.1", NULL, &r);
    fx_now += 9999;
    fail_from("198.51.100.1", NULL, &r);
    assert_int_equal(r.addr_failures, 2); /* within 10 s of the last one */
    fx_now += 10000;
    fail_from("198.51.100.1", NULL, &r);
    assert_int_equal(r.addr_failures, 1);
}

static void
test_authlimit__delays_grow_per_address_and_account(void **state)
{
    (void)state;
    xd_authlimit_result_t r;
    static const uint64_t want[] = { 0, 100, 200, 350 };
    for (int i = 0; i < 4; i++) {
        char a[32];
        snprintf(a, sizeof a, "203.0.113.%d", i + 1); /* four addresses, one account */
        fail_from(a, "juliet@example.org", &r);
        assert_int_equal(r.account_failures, i + 1);
        assert_int_equal(r.addr_failures, 1);
        assert_int_equal(r.delay_ms, want[i]);
        assert_false(r.banned); /* accounts are never banned */
    }
    fail_from("203.0.113.9", "romeo@example.org", &r);
    assert_int_equal(r.delay_ms, 0);
    xd_authlimit_succeeded("juliet@example.org");
    fail_from("203.0.113.10", "juliet@example.org", &r);
    assert_int_equal(r.account_failures, 1);
    assert_int_equal(r.delay_ms, 0);
    /* No address (NULL) and no account: nothing to count. */
    xd_authlimit_failed(NULL, NULL, &r);
    assert_int_equal(r.addr_failures, 0);
    assert_int_equal(r.delay_ms, 0);
}

static void
test_authlimit__ipv6_by_64_and_mapped_ipv4(void **state)
{
    (void)state;
    xd_authlimit_result_t r;
    fail_from("2001:db8:1:2::1", NULL, &r);
    fail_from("2001:db8:1:2:ffff::9", NULL, &r);
    assert_int_equal(r.addr_failures, 2); /* one /64 */
    fail_from("2001:db8:1:3::1", NULL, &r);
    assert_int_equal(r.addr_failures, 1);
    fail_from("2001:db8:1:2:abcd::", NULL, &r);
    assert_true(r.banned);
    assert_true(banned("2001:db8:1:2::77"));
    assert_false(banned("2001:db8:1:3::1"));
    char k[80];
    struct sockaddr_storage ss = addr("2001:db8:1:2::1");
    xd_authlimit_addr_key(SA(ss), k, sizeof k);
    assert_string_equal(k, "2001:db8:1:2::/64");
    fail_from("::ffff:192.0.2.50", NULL, &r);
    fail_from("192.0.2.50", NULL, &r);
    assert_int_equal(r.addr_failures, 2);
    ss = addr("::ffff:192.0.2.50");
    xd_authlimit_addr_key(SA(ss), k, sizeof k);
    assert_string_equal(k, "192.0.2.50");
}

static void
test_authlimit__clear(void **state)
{
    (void)state;
    xd_authlimit_result_t r;
    for (int i = 0; i < 3; i++) {
        fail_from("2001:db8:9:9::1", "a@example.org", &r);
        fail_from("192.0.2.1", NULL, &r);
    }
    assert_true(banned("192.0.2.1"));
    assert_int_equal(xd_authlimit_clear("192.0.2.1"), 1);
    assert_false(banned("192.0.2.1"));
    assert_int_equal(xd_authlimit_clear("192.0.2.1"), 0);
    assert_int_equal(xd_authlimit_clear("2001:db8:9:9::/64"), 1);
    assert_int_equal(xd_authlimit_clear("2001:db8:9:9::5"), 0);
    assert_int_equal(xd_authlimit_clear("a@example.org"), 1);
    assert_int_equal(xd_authlimit_count(), 0);
    fail_from("192.0.2.2", "b@example.org", &r);
    assert_int_equal(xd_authlimit_clear("all"), 2);
    assert_int_equal(xd_authlimit_clear("all"), 0);
}

static void
test_authlimit__resize_keeps_newest(void **state)
{
    (void)state;
    xd_authlimit_result_t r;
    char a[32];
    for (int i = 1; i <= 16; i++) {
        snprintf(a, sizeof a, "10.1.0.%d", i);
        fail_from(a, NULL, &r);
    }
    xd_auth_limits_t c = {
        .max_failures = 3, .ban_lifetime_ms = 60000, .window_ms = 10000, .delay_after = 1,
        .delay_ms = 100, .max_delay_ms = 350, .exempt = "none", .size = 20,
    };
    xd_authlimit_configure(&c);
    fail_from("10.1.0.16", NULL, &r); /* the next call applies the size */
    assert_int_equal(r.addr_failures, 2);
    assert_int_equal(xd_authlimit_count(), 16);
    c.size = 16;
    xd_authlimit_configure(&c);
    for (int i = 17; i <= 20; i++) {
        snprintf(a, sizeof a, "10.1.0.%d", i);
        fail_from(a, NULL, &r);
    }
    assert_int_equal(xd_authlimit_count(), 16);
    seen_t s = { .n = 0 };
    xd_authlimit_foreach(collect, &s);
    assert_true(seen_has(&s, "10.1.0.16") && seen_has(&s, "10.1.0.20"));
    assert_false(seen_has(&s, "10.1.0.1"));
}

/* Many threads fail at once: counts add up (ASan/TSan builds look too). */
static void *
thr(void *arg)
{
    xd_authlimit_result_t r;
    const char *a = arg;
    for (int i = 0; i < 500; i++) {
        char acct[32];
        snprintf(acct, sizeof acct, "u%d@example.org", i % 7);
        fail_from(a, acct, &r);
    }
    return NULL;
}

static void
test_authlimit__threads(void **state)
{
    (void)state;
    xd_auth_limits_t c = {
        .max_failures = 0, .ban_lifetime_ms = 60000, .window_ms = 10000, .delay_after = 0,
        .delay_ms = 100, .max_delay_ms = 350, .exempt = "none", .size = 64,
    };
    xd_authlimit_configure(&c);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thr, "192.0.2.99");
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    xd_authlimit_result_t r;
    fail_from("192.0.2.99", NULL, &r);
    assert_int_equal(r.addr_failures, 2001);
    assert_false(r.banned); /* max_failures 0: never */
    assert_int_equal(r.delay_ms, 0); /* delay_after 0: never */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_authlimit__fill_evicts_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authlimit__ban_and_its_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authlimit__window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authlimit__delays_grow_per_address_and_account,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_authlimit__ipv6_by_64_and_mapped_ipv4, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_authlimit__clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authlimit__resize_keeps_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authlimit__threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
