/*
 * test_smq.c — XEP-0198 counters and the unacknowledged queue (src/stream/smq.h):
 * acks drop the oldest, across the 2^32 wrap; an ack of more than was sent
 * is refused and changes nothing; a late ack changes nothing; the ring grows
 * and keeps the order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stream/smq.h"
#include "xmppd/err.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

static xd_stanza_t *
msg(int i)
{
    char xml[128];
    snprintf(xml, sizeof xml, "<message id='%d'/>", i);
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &st), 0);
    return st;
}

static int
id_of(const xd_stanza_t *st)
{
    return atoi(xd_el_attr(xd_stanza_root(st), "id"));
}

static void
push_n(xd_smq_t *q, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        xd_stanza_t *st = msg(i);
        xd_smq_push(q, st);
        xd_stanza_unref(st);
    }
}

static void
test_smq__acks_across_the_wrap(void **state)
{
    (void)state;
    xd_smq_t q;
    xd_smq_init(&q, UINT32_MAX - 2); /* three before the wrap */
    push_n(&q, 0, 40);               /* the ring grows past 16 and 32 */
    assert_int_equal(q.len, 40);
    assert_int_equal(xd_smq_sent(&q), 37u); /* (2^32 - 3 + 40) mod 2^32 */
    assert_int_equal(xd_smq_ack(&q, 1), 0); /* 4 stanzas: across the wrap */
    assert_int_equal(q.len, 36);
    assert_int_equal(xd_smq_ack(&q, UINT32_MAX), 0); /* behind: nothing */
    assert_int_equal(q.len, 36);
    assert_int_equal(xd_smq_ack(&q, 1), 0); /* repeated: nothing */
    assert_int_equal(q.len, 36);
    assert_int_equal(xd_smq_ack(&q, 38), XD_EINVAL); /* one more than sent */
    assert_int_equal(q.len, 36);
    size_t bytes = q.bytes;
    assert_true(bytes > 0);
    xd_stanza_t *st = xd_smq_take(&q);
    assert_int_equal(id_of(st), 4); /* the oldest unacknowledged, in order */
    xd_stanza_unref(st);
    assert_true(q.bytes < bytes);
    assert_int_equal(xd_smq_ack(&q, 37), 0); /* ... everything */
    assert_int_equal(q.len, 0);
    assert_int_equal(q.bytes, 0);
    assert_null(xd_smq_take(&q));
    push_n(&q, 100, 3);
    assert_int_equal(xd_smq_sent(&q), 40u);
    for (int i = 100; i < 103; i++) {
        st = xd_smq_take(&q);
        assert_int_equal(id_of(st), i);
        xd_stanza_unref(st);
    }
    xd_smq_clear(&q);
}

static void
test_smq__clear_frees_what_is_left(void **state)
{
    (void)state;
    xd_smq_t q;
    xd_smq_init(&q, 0);
    push_n(&q, 0, 5);
    assert_int_equal(xd_smq_ack(&q, 2), 0);
    xd_smq_clear(&q); /* ASan: nothing leaks */
    assert_int_equal(q.len, 0);
    assert_null(q.v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smq__acks_across_the_wrap),
        cmocka_unit_test(test_smq__clear_frees_what_is_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
