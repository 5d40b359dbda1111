/*
 * test_caps.c — XEP-0115 verification strings against the XEP's own
 * examples (5.2, 5.3) and the 5.4 refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/caps.h"
#include "xmppd/el.h"
#include "xmppd/err.h"

static int
ver_of(const char *xml, char out[29])
{
    xd_el_t *q = NULL;
    assert_int_equal(xd_el_parse(xml, strlen(xml), &q), 0);
    int rc = xd_caps_ver(q, out);
    xd_el_free(q);
    return rc;
}

#define DI "http://jabber.org/protocol/disco#info"

static void
test_caps__simple_example(void **state)
{
    (void)state;
    char ver[29];
    /* Features deliberately out of order. */
    assert_int_equal(ver_of("<query xmlns='" DI "'>"
                            "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
                            "<feature var='http://jabber.org/protocol/muc'/>"
                            "<feature var='http://jabber.org/protocol/disco#info'/>"
                            "<feature var='http://jabber.org/protocol/caps'/>"
                            "<feature var='http://jabber.org/protocol/disco#items'/>"
                            "</query>", ver), 0);
    assert_string_equal(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

static void
test_caps__complex_example(void **state)
{
    (void)state;
    char ver[29];
    assert_int_equal(ver_of("<query xmlns='" DI "'>"
                            "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
                            "<identity xml:lang='el' category='client' name='\xce\xa8 0.11' type='pc'/>"
                            "<feature var='http://jabber.org/protocol/caps'/>"
                            "<feature var='http://jabber.org/protocol/disco#info'/>"
                            "<feature var='http://jabber.org/protocol/disco#items'/>"
                            "<feature var='http://jabber.org/protocol/muc'/>"
                            "<x xmlns='jabber:x:data' type='result'>"
                            "<field var='FORM_TYPE' type='hidden'>"
                            "<value>urn:xmpp:dataforms:softwareinfo</value></field>"
                            "<field var='ip_version' type='text-multi'>"
                            "<value>ipv6</value><value>ipv4</value></field>"
                            "<field var='os'><value>Mac</value></field>"
                            "<field var='software_version'><value>0.11</value></field>"
                            "<field var='os_version'><value>10.5.1</value></field>"
                            "<field var='software'><value>Psi</value></field>"
                            "</x></query>", ver), 0);
    assert_string_equal(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
}

static void
test_caps__refusals(void **state)
{
    (void)state;
    char ver[29];
    assert_int_equal(ver_of("<query xmlns='" DI "'><identity category='a' type='b'/>"
                            "<feature var='x'/><feature var='x'/></query>", ver), XD_EINVAL);
    assert_int_equal(ver_of("<query xmlns='" DI "'><identity category='a' type='b'/>"
                            "<identity category='a' type='b'/></query>", ver), XD_EINVAL);
    assert_int_equal(ver_of("<query xmlns='" DI "'><x xmlns='jabber:x:data' type='result'>"
                            "<field var='a'><value>1</value></field></x></query>", ver),
                     XD_EINVAL);
    assert_int_equal(ver_of("<query xmlns='" DI "'>"
                            "<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>u</value>"
                            "</field></x><x xmlns='jabber:x:data'><field var='FORM_TYPE'>"
                            "<value>u</value></field><field var='b'/></x></query>", ver),
                     XD_EINVAL);
    /* Identities differing only in language are two. */
    assert_int_equal(ver_of("<query xmlns='" DI "'><identity category='a' type='b' xml:lang='en'/>"
                            "<identity category='a' type='b' xml:lang='de'/></query>", ver), 0);
}

/* A feature that is a prefix of another sorts first, as the bare strings
 * do (XEP-0115 5.1): slixmpp, ejabberd and Prosody give this ver. */
static void
test_caps__prefix_feature_sorts_first(void **state)
{
    (void)state;
    char ver[29];
    assert_int_equal(ver_of("<query xmlns='" DI "'>"
                            "<identity category='client' type='pc' name='T'/>"
                            "<feature var='http://jabber.org/protocol/tune+notify'/>"
                            "<feature var='http://jabber.org/protocol/tune'/>"
                            "</query>",
                            ver),
                     0);
    assert_string_equal(ver, "mwdwlJLKVDw1b4bwt6urRMvMIuI=");
    /* fields of a form likewise: "f" before "f1" */
    char v2[29];
    assert_int_equal(ver_of("<query xmlns='" DI "'>"
                            "<identity category='client' type='pc' name='T'/>"
                            "<x xmlns='jabber:x:data' type='result'>"
                            "<field var='FORM_TYPE'><value>urn:x</value></field>"
                            "<field var='f1'><value>b</value></field>"
                            "<field var='f'><value>a</value></field>"
                            "</x></query>",
                            v2),
                     0);
    assert_string_equal(v2, "xuZw4EUj6zBvc/fA/hV1Uj06INw=");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_caps__simple_example),
        cmocka_unit_test(test_caps__complex_example),
        cmocka_unit_test(test_caps__refusals),
        cmocka_unit_test(test_caps__prefix_feature_sorts_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
