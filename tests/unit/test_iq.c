/*
 * test_iq.c — the IQ handler registry: registration rules and the
 * namespaces it reports for disco, and the SERIAL discipline's ordering
 * on a real pool (the rest of dispatch is tested through the wire,
 * tests/integration/test_route.py).
 */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/pool.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/iq.h"
#include "xmppd/jid.h"
#include "xmppd/ns.h"

static xd_stanza_t *
h_none(const xd_iq_req_t *req)
{
    (void)req;
    return NULL;
}

static void
collect(void *arg, const char *ns)
{
    char *buf = arg;
    strcat(buf, ns);
    strcat(buf, " ");
}

static void
test_iq__register_rules(void **state)
{
    (void)state;
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "urn:a", XD_IQ_INLINE, h_none, NULL), 0);
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "urn:a", XD_IQ_PARALLEL, h_none, NULL),
                     XD_EEXIST);
    /* Another target or a host of its own is another registration. */
    assert_int_equal(xd_iq_register(NULL, XD_IQ_USER, "urn:a", XD_IQ_INLINE, h_none, NULL), 0);
    assert_int_equal(xd_iq_register("b.example", XD_IQ_HOST, "urn:a", XD_IQ_INLINE, h_none,
                                    NULL), 0);
    assert_int_equal(xd_iq_register(NULL, XD_IQ_USER, "urn:s", XD_IQ_SERIAL, h_none, NULL), 0);
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "urn:s2", 9, h_none, NULL), XD_EINVAL);
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "", XD_IQ_INLINE, h_none, NULL),
                     XD_EINVAL);
    assert_int_equal(xd_iq_register(NULL, 7, "urn:x", XD_IQ_INLINE, h_none, NULL), XD_EINVAL);
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "urn:x", XD_IQ_INLINE, NULL, NULL),
                     XD_EINVAL);
    assert_int_equal(xd_iq_register("b.example", XD_IQ_HOST, "urn:only-b", XD_IQ_PARALLEL,
                                    h_none, NULL), 0);

    char buf[256] = "";
    xd_iq_foreach_ns("a.example", XD_IQ_HOST, collect, buf);
    assert_string_equal(buf, "urn:a ");
    buf[0] = '\0';
    xd_iq_foreach_ns("b.example", XD_IQ_HOST, collect, buf);
    assert_non_null(strstr(buf, "urn:only-b"));
    buf[0] = '\0';
    xd_iq_foreach_ns("a.example", XD_IQ_USER, collect, buf);
    assert_string_equal(buf, "urn:a urn:s ");

    xd_iq_unregister(NULL, XD_IQ_HOST, "urn:a");
    buf[0] = '\0';
    xd_iq_foreach_ns("a.example", XD_IQ_HOST, collect, buf);
    assert_string_equal(buf, "");
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "urn:a", XD_IQ_INLINE, h_none, NULL), 0);
    xd_iq_clear();
    buf[0] = '\0';
    xd_iq_foreach_ns("b.example", XD_IQ_HOST, collect, buf);
    assert_string_equal(buf, "");
}

/* ---- identities ---- */

static void
collect_id(void *arg, const char *category, const char *type, const char *name)
{
    char *buf = arg;
    strcat(buf, category);
    strcat(buf, "/");
    strcat(buf, type);
    strcat(buf, "=");
    strcat(buf, name);
    strcat(buf, " ");
}

static void
test_iq__identities(void **state)
{
    (void)state;
    assert_int_equal(xd_iq_identity_add(NULL, XD_IQ_USER, "pubsub", "pep", NULL), 0);
    assert_int_equal(xd_iq_identity_add("b.example", XD_IQ_HOST, "store", "file", "Files"), 0);
    assert_int_equal(xd_iq_identity_add(NULL, XD_IQ_USER, "pubsub", "pep", "again"), XD_EEXIST);
    assert_int_equal(xd_iq_identity_add(NULL, XD_IQ_USER, "", "x", NULL), XD_EINVAL);
    assert_int_equal(xd_iq_feature_add(NULL, XD_IQ_USER, "urn:f"), 0);
    char buf[256] = "";
    xd_iq_foreach_identity("a.example", XD_IQ_USER, collect_id, buf);
    assert_string_equal(buf, "pubsub/pep= ");
    buf[0] = '\0';
    xd_iq_foreach_identity("a.example", XD_IQ_HOST, collect_id, buf);
    assert_string_equal(buf, "");
    xd_iq_foreach_identity("b.example", XD_IQ_HOST, collect_id, buf);
    assert_string_equal(buf, "store/file=Files ");
    /* Identities are not features, and features not identities. */
    buf[0] = '\0';
    xd_iq_foreach_ns("a.example", XD_IQ_USER, collect, buf);
    assert_string_equal(buf, "urn:f ");
    char key[512];
    xd_iq_unregister(NULL, XD_IQ_USER, xd_iq_identity_key(key, sizeof key, "pubsub", "pep"));
    buf[0] = '\0';
    xd_iq_foreach_identity("a.example", XD_IQ_USER, collect_id, buf);
    assert_string_equal(buf, "");
    xd_iq_clear();
}

/* ---- SERIAL ---- */

#define NREQ 24

static atomic_int running, max_running, done_n, slot_n;
static atomic_int order[NREQ];

/* Takes a little time so that a second pool thread would overlap it; never
 * answers (returns NULL), so nothing is routed. */
static xd_stanza_t *
h_slow(const xd_iq_req_t *req)
{
    int now = atomic_fetch_add(&running, 1) + 1;
    int m = atomic_load(&max_running);
    while (now > m && !atomic_compare_exchange_weak(&max_running, &m, now))
        ;
    int seq = atoi(xd_el_attr(xd_stanza_root(req->iq), "id"));
    usleep(1000);
    atomic_store(&order[atomic_fetch_add(&slot_n, 1)], seq);
    atomic_fetch_add(&done_n, 1);
    atomic_fetch_sub(&running, 1);
    return NULL;
}

static void
dispatch_n(const char *ns, int n)
{
    xd_jid_t *to = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c("a.example"), &to), 0);
    for (int i = 0; i < n; i++) {
        char xml[256];
        snprintf(xml, sizeof xml,
                 "<iq type='get' id='%d' from='u@a.example/r' to='a.example'>"
                 "<q xmlns='%s'/></iq>", i, ns);
        xd_stanza_t *st = NULL;
        assert_int_equal(xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &st), 0);
        xd_iq_dispatch(st, to, "a.example", XD_IQ_HOST);
    }
    xd_jid_unref(to);
}

static void
wait_done(int n)
{
    for (int i = 0; i < 5000 && atomic_load(&done_n) < n; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&done_n), n);
}

/* One at a time and in arrival order, on a pool of four threads; and a
 * registration removed while requests wait still lets them finish. */
static void
test_iq__serial_runs_in_order_one_at_a_time(void **state)
{
    (void)state;
    assert_int_equal(xd_pool_start(4, 256), 0);
    atomic_store(&running, 0);
    atomic_store(&max_running, 0);
    atomic_store(&done_n, 0);
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "urn:serial", XD_IQ_SERIAL, h_slow, NULL),
                     0);
    dispatch_n("urn:serial", NREQ);
    xd_iq_unregister(NULL, XD_IQ_HOST, "urn:serial");
    wait_done(NREQ);
    assert_int_equal(atomic_load(&max_running), 1);
    for (int i = 0; i < NREQ; i++)
        assert_int_equal(atomic_load(&order[i]), i);

    xd_pool_stop();
    xd_iq_clear();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iq__register_rules),
        cmocka_unit_test(test_iq__identities),
        cmocka_unit_test(test_iq__serial_runs_in_order_one_at_a_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
