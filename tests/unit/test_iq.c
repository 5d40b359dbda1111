/*
 * test_iq.c — the IQ handler registry: registration rules and the
 * namespaces it reports for disco (dispatch is tested through the wire,
 * tests/integration/test_route.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/err.h"
#include "xmppd/iq.h"

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
    assert_int_equal(xd_iq_register(NULL, XD_IQ_HOST, "urn:s", XD_IQ_SERIAL, h_none, NULL),
                     XD_ENOTSUP);
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
    assert_string_equal(buf, "urn:a ");

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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iq__register_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
