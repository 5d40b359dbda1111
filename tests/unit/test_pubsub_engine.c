/*
 * test_pubsub_engine.c — the pubsub engine PEP and the XEP-0060 service
 * share (src/mod/pubsub_engine.c): reading node_config and publish-options
 * forms (each field, bad values, fields and access models a service does
 * not offer), preconditions, the node_config form written back and read
 * again, the storage text round trip and roster groups.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mod/pubsub_engine.h"
#include "xmppd/alloc.h"
#include "xmppd/el.h"

static const pse_limits_t all = { .access = 31, .fields = PSE_F_ALL, .max_items_limit = 50 };
static const pse_limits_t pep = { .access = PSE_AM_OPEN | PSE_AM_PRESENCE | PSE_AM_WHITELIST,
                                  .fields = PSE_F_ACCESS | PSE_F_PERSIST | PSE_F_MAX |
                                            PSE_F_SENDLAST,
                                  .max_items_limit = 50 };

static xd_el_t *
parse(const char *xml)
{
    xd_el_t *el = NULL;
    assert_int_equal(xd_el_parse(xml, strlen(xml), &el), 0);
    return el;
}

#define FORM(type, fields)                                                                      \
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"                    \
    "http://jabber.org/protocol/pubsub#" type "</value></field>" fields "</x>"

static const char *
read_form(const char *xml, const pse_limits_t *lim, pse_cfg_t *c, unsigned *set)
{
    xd_el_t *x = parse(xml);
    const char *why = pse_form_read(x, PSE_NS_NODECFG, lim, c, set);
    xd_el_free(x);
    return why;
}

static void
test_form_fields(void **st)
{
    (void)st;
    pse_cfg_t c;
    pse_cfg_default(&c, true);
    unsigned set = 0;
    const char *why = read_form(
        FORM("node_config",
             "<field var='pubsub#access_model'><value>roster</value></field>"
             "<field var='pubsub#roster_groups_allowed'><value>A</value><value>B c</value></field>"
             "<field var='pubsub#max_items'><value>max</value></field>"
             "<field var='pubsub#item_expire'><value>60</value></field>"
             "<field var='pubsub#notification_type'><value>normal</value></field>"
             "<field var='pubsub#deliver_payloads'><value>false</value></field>"
             "<field var='pubsub#publish_model'><value>open</value></field>"),
        &all, &c, &set);
    assert_null(why);
    assert_string_equal(c.access, "roster");
    assert_string_equal(c.groups, "A\nB c\n");
    assert_int_equal(c.max_items, PSE_MAX);
    assert_int_equal(c.item_expire, 60);
    assert_string_equal(c.notif_type, "normal");
    assert_false(c.deliver_payloads);
    assert_string_equal(c.publish_model, "open");
    assert_int_equal(set, PSE_F_ACCESS | PSE_F_GROUPS | PSE_F_MAX | PSE_F_EXPIRE |
                              PSE_F_NOTIFTYPE | PSE_F_PAYLOADS | PSE_F_PUBMODEL);
    assert_int_equal(pse_cfg_keep(&c, &all), 50);
    const char *groups[] = { "Z", "B c" };
    assert_true(pse_groups_match(&c, groups, 2));
    assert_false(pse_groups_match(&c, groups, 1));
}

static void
test_form_refusals(void **st)
{
    (void)st;
    pse_cfg_t c;
    unsigned set;
    static const char *const bad[] = {
        FORM("node_config", "<field var='pubsub#max_items'><value>51</value></field>"),
        FORM("node_config", "<field var='pubsub#max_items'><value>0</value></field>"),
        FORM("node_config", "<field var='pubsub#persist_items'><value>yes</value></field>"),
        FORM("node_config", "<field var='pubsub#item_expire'><value>-1</value></field>"),
        FORM("node_config", "<field var='pubsub#notification_type'><value>chat</value></field>"),
        FORM("node_config", "<field var='pubsub#access_model'><value>x</value></field>"),
        FORM("publish-options", ""),
        "<x xmlns='jabber:x:data' type='form'/>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pse_cfg_default(&c, false);
        assert_non_null(read_form(bad[i], &all, &c, &set));
    }
    /* PEP offers three access models; roster is refused, unknown fields ignored. */
    pse_cfg_default(&c, false);
    assert_non_null(read_form(
        FORM("node_config", "<field var='pubsub#access_model'><value>roster</value></field>"),
        &pep, &c, &set));
    assert_null(read_form(
        FORM("node_config", "<field var='pubsub#notification_type'><value>chat</value></field>"
                            "<field var='pubsub#persist_items'><value>1</value></field>"),
        &pep, &c, &set));
    assert_int_equal(set, PSE_F_PERSIST);
}

static void
test_preconditions(void **st)
{
    (void)st;
    pse_cfg_t have, want;
    pse_cfg_default(&have, true);
    have.max_items = 50;
    want = have;
    want.max_items = PSE_MAX; /* "max" is the limit: the same */
    assert_true(pse_precond_ok(&have, &want, PSE_F_MAX, &all));
    want.max_items = 49;
    assert_false(pse_precond_ok(&have, &want, PSE_F_MAX, &all));
    assert_true(pse_precond_ok(&have, &want, PSE_F_ACCESS, &all)); /* not named */
    want = have;
    snprintf(want.access, sizeof want.access, "whitelist");
    assert_false(pse_precond_ok(&have, &want, PSE_F_ACCESS, &all));
    want = have;
    want.item_expire = 5;
    assert_false(pse_precond_ok(&have, &want, PSE_F_EXPIRE, &all));
}

/* The form the service sends, submitted back, gives the same configuration. */
static void
test_form_round_trip(void **st)
{
    (void)st;
    pse_cfg_t c, d;
    pse_cfg_default(&c, true);
    snprintf(c.access, sizeof c.access, "roster");
    snprintf(c.groups, sizeof c.groups, "Friends\nWork\n");
    snprintf(c.title, sizeof c.title, "A title");
    c.max_items = 7;
    c.item_expire = 3600;
    c.notify_retract = false;
    xd_el_t *parent = xd_el_new("configure", NULL);
    xd_el_t *x = pse_cfg_form(parent, "form", PSE_NS_NODECFG, &c, &all);
    xd_el_set_attr(x, "type", "submit");
    pse_cfg_default(&d, false);
    unsigned set = 0;
    assert_null(pse_form_read(x, PSE_NS_NODECFG, &all, &d, &set));
    xd_el_free(parent);
    assert_int_equal(set, PSE_F_ALL);
    assert_true(pse_precond_ok(&c, &d, PSE_F_ALL, &all));
    assert_string_equal(d.groups, c.groups);
}

static void
test_storage_text(void **st)
{
    (void)st;
    pse_cfg_t c, d;
    pse_cfg_default(&c, true);
    snprintf(c.access, sizeof c.access, "authorize");
    snprintf(c.groups, sizeof c.groups, "G1\nG=2\n");
    snprintf(c.title, sizeof c.title, "t=x");
    c.max_items = PSE_MAX;
    c.persist = false;
    c.item_expire = 99;
    char *enc = pse_cfg_encode(&c);
    pse_cfg_default(&d, false);
    pse_cfg_decode(enc, strlen(enc), &d);
    xd_free(enc);
    assert_true(pse_precond_ok(&c, &d, PSE_F_ALL, &all));
    assert_int_equal(d.max_items, PSE_MAX);
    /* Unknown keys and garbage are skipped. */
    const char junk[] = "zzz=1\x1fnovalue\x1f" "access=open";
    pse_cfg_decode(junk, sizeof junk - 1, &d);
    assert_string_equal(d.access, "open");
}

/* A row value is lent as bytes and a length, not a C string (an ODBC or
 * MySQL result buffer ends where the value ends): decoding reads no byte
 * past it, the number at the very end included. */
static void
test_storage_text_unterminated(void **st)
{
    (void)st;
    static const char text[] = "access=open\x1f" "expire=42";
    char *buf = xd_malloc(sizeof text - 1);
    memcpy(buf, text, sizeof text - 1);
    pse_cfg_t d;
    pse_cfg_default(&d, false);
    pse_cfg_decode(buf, sizeof text - 1, &d);
    xd_free(buf);
    assert_string_equal(d.access, "open");
    assert_int_equal(d.item_expire, 42);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_fields),     cmocka_unit_test(test_form_refusals),
        cmocka_unit_test(test_preconditions),   cmocka_unit_test(test_form_round_trip),
        cmocka_unit_test(test_storage_text),    cmocka_unit_test(test_storage_text_unterminated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
