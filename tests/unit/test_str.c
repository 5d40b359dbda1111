/*
 * test_str.c — the growable byte buffer of include/xmppd/str.h: a zeroed
 * buffer is empty and ready, growth by one byte and by large pieces keeps
 * the bytes and their NUL, binary bytes, printf (short and longer than what
 * is allocated), sizes that would overflow size_t refused with nothing
 * changed, reset keeping the memory, free and take.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/str.h"

static void
test_str__zeroed_is_empty(void **state)
{
    (void)state;
    xd_buf_t b = { 0 };
    assert_null(b.p);
    assert_string_equal(xd_buf_cstr(&b), "");
    assert_int_equal(xd_buf_str(&b).len, 0);
    char *s = xd_buf_take(&b); /* never NULL */
    assert_string_equal(s, "");
    xd_free(s);
    xd_buf_free(&b); /* nothing held: a no-op */
    assert_null(b.p);
}

static void
test_str__grows_byte_by_byte(void **state)
{
    (void)state;
    xd_buf_t b = { 0 };
    char want[5000];
    for (size_t i = 0; i < sizeof want; i++) {
        want[i] = (char)('a' + i % 26);
        assert_int_equal(xd_buf_add(&b, &want[i], 1), 0);
        assert_int_equal(b.len, i + 1);
        assert_true(b.cap > b.len);
        assert_int_equal(b.p[b.len], '\0');
    }
    assert_memory_equal(b.p, want, sizeof want);
    /* doubling: a handful of reallocations, not one per byte */
    assert_true(b.cap < 2 * (sizeof want + 1) + 64);
    xd_buf_free(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void
test_str__large_pieces_and_binary(void **state)
{
    (void)state;
    xd_buf_t b = { 0 };
    size_t n = 1 << 20;
    char *big = xd_malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7);
    assert_int_equal(xd_buf_add(&b, "x", 1), 0);
    assert_int_equal(xd_buf_add(&b, big, n), 0); /* far beyond the doubled capacity */
    assert_int_equal(xd_buf_add(&b, "\0y", 2), 0);
    assert_int_equal(b.len, n + 3);
    assert_int_equal(b.p[0], 'x');
    assert_memory_equal(b.p + 1, big, n);
    assert_int_equal(b.p[n + 1], '\0');
    assert_int_equal(b.p[n + 2], 'y');
    assert_int_equal(b.p[n + 3], '\0');
    assert_int_equal(xd_buf_add(&b, NULL, 0), 0); /* nothing: fine */
    assert_int_equal(b.len, n + 3);
    xd_free(big);
    xd_buf_free(&b);
}

static void
test_str__puts_and_printf(void **state)
{
    (void)state;
    xd_buf_t b = { 0 };
    assert_int_equal(xd_buf_puts(&b, "id="), 0);
    assert_int_equal(xd_buf_printf(&b, "%d/%s/%%", 42, "x"), 0);
    assert_string_equal(b.p, "id=42/x/%");
    assert_int_equal(b.len, strlen("id=42/x/%"));
    assert_int_equal(xd_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, strlen("id=42/x/%"));
    /* longer than anything allocated so far */
    assert_int_equal(xd_buf_printf(&b, "%3000d|", 7), 0);
    assert_int_equal(b.len, strlen("id=42/x/%") + 3001);
    assert_int_equal(b.p[b.len - 2], '7');
    assert_int_equal(b.p[b.len - 1], '|');
    assert_int_equal(b.p[b.len], '\0');
    xd_buf_free(&b);
}

static void
test_str__reset_keeps_memory(void **state)
{
    (void)state;
    xd_buf_t b = { 0 };
    assert_int_equal(xd_buf_puts(&b, "some text to hold"), 0);
    char *p = b.p;
    size_t cap = b.cap;
    xd_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.p, p);
    assert_int_equal(b.cap, cap);
    assert_string_equal(xd_buf_cstr(&b), "");
    assert_int_equal(xd_buf_puts(&b, "again"), 0);
    assert_string_equal(b.p, "again");
    xd_buf_free(&b);
}

static void
test_str__take(void **state)
{
    (void)state;
    xd_buf_t b = { 0 };
    assert_int_equal(xd_buf_puts(&b, "abc"), 0);
    char *s = xd_buf_take(&b);
    assert_string_equal(s, "abc");
    xd_free(s);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    assert_int_equal(xd_buf_puts(&b, "d"), 0);
    assert_string_equal(b.p, "d");
    xd_buf_free(&b);
}

static void
test_str__size_overflow_refused(void **state)
{
    (void)state;
    xd_buf_t b = { 0 };
    assert_int_equal(xd_buf_puts(&b, "abc"), 0);
    /* len + n + 1 would wrap around: refused before anything is read from
     * the (too short) source or allocated */
    assert_int_equal(xd_buf_add(&b, "", SIZE_MAX), XD_ELIMIT);
    assert_int_equal(xd_buf_add(&b, "", SIZE_MAX - 3), XD_ELIMIT); /* 3 + n + 1 = 2^64 */
    /* (SIZE_MAX - 4 would fit size_t: that is an allocation that fails,
     * which aborts as every xd_ allocation does) */
    assert_int_equal(b.len, 3);
    assert_string_equal(b.p, "abc");
    xd_buf_t e = { 0 };
    assert_int_equal(xd_buf_add(&e, "", SIZE_MAX), XD_ELIMIT);
    assert_null(e.p);
    assert_int_equal(xd_buf_printf(&e, "%s", "ok"), 0); /* usable after */
    assert_string_equal(e.p, "ok");
    xd_buf_free(&e);
    xd_buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str__zeroed_is_empty),
        cmocka_unit_test(test_str__grows_byte_by_byte),
        cmocka_unit_test(test_str__large_pieces_and_binary),
        cmocka_unit_test(test_str__puts_and_printf),
        cmocka_unit_test(test_str__reset_keeps_memory),
        cmocka_unit_test(test_str__take),
        cmocka_unit_test(test_str__size_overflow_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
