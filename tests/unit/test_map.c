/*
 * test_map.c — the string map against a brute-force model: random puts,
 * gets and deletes over a small key space (so runs collide and wrap), then
 * every key checked; growth; foreach; free with a value callback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/map.h"

#define NKEYS 300

static void
test_map__against_model(void **state)
{
    (void)state;
    xd_map_t m = XD_MAP_INIT;
    intptr_t model[NKEYS] = { 0 }; /* 0 = absent */
    char key[32];
    srand(7);
    for (int step = 0; step < 200000; step++) {
        int k = rand() % NKEYS;
        snprintf(key, sizeof key, "user%d@example.org", k);
        int op = rand() % 3;
        if (op == 0) {
            intptr_t v = step + 1;
            void *prev = xd_map_put(&m, xd_str_c(key), (void *)v);
            assert_int_equal((intptr_t)prev, model[k]);
            model[k] = v;
        } else if (op == 1) {
            void *prev = xd_map_del(&m, xd_str_c(key));
            assert_int_equal((intptr_t)prev, model[k]);
            model[k] = 0;
        } else {
            assert_int_equal((intptr_t)xd_map_get(&m, xd_str_c(key)), model[k]);
        }
    }
    size_t n = 0;
    for (int k = 0; k < NKEYS; k++) {
        snprintf(key, sizeof key, "user%d@example.org", k);
        assert_int_equal((intptr_t)xd_map_get(&m, xd_str_c(key)), model[k]);
        n += model[k] != 0;
    }
    assert_int_equal(xd_map_count(&m), n);
    xd_map_free(&m, NULL);
    assert_int_equal(xd_map_count(&m), 0);
    assert_null(xd_map_get(&m, xd_str_c("user1@example.org")));
}

static int
sum_vals(void *arg, const char *key, void *val)
{
    (void)key;
    *(intptr_t *)arg += (intptr_t)val;
    return 0;
}

static int freed;

static void
count_free(void *v)
{
    free(v);
    freed++;
}

static void
test_map__foreach_and_free(void **state)
{
    (void)state;
    xd_map_t m = XD_MAP_INIT;
    char key[32];
    for (intptr_t i = 1; i <= 1000; i++) {
        snprintf(key, sizeof key, "k%ld", (long)i);
        assert_null(xd_map_put(&m, xd_str_c(key), (void *)i));
    }
    intptr_t sum = 0;
    xd_map_foreach(&m, sum_vals, &sum);
    assert_int_equal(sum, 1000 * 1001 / 2);
    xd_map_free(&m, NULL);
    /* Keys with embedded lengths, not NUL: "ab" and "abc" are two keys. */
    xd_str_t abc = xd_str_c("abc");
    assert_null(xd_map_put(&m, (xd_str_t){ abc.p, 2 }, malloc(1)));
    assert_null(xd_map_put(&m, abc, malloc(1)));
    assert_int_equal(xd_map_count(&m), 2);
    freed = 0;
    xd_map_free(&m, count_free);
    assert_int_equal(freed, 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map__against_model),
        cmocka_unit_test(test_map__foreach_and_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
