/*
 * test_dialback.c — unit tests for src/s2s/dialback.c: XEP-0185 keys and
 * the XEP-0220 <db:result/> / <db:verify/> elements.
 *
 * Known vectors, each recomputed outside xmppd with the openssl CLI:
 *   XEP-0185 3 (also in other servers' test suites):
 *     k=$(printf %s s3cr3tf0rd14lb4ck | openssl dgst -sha256 -r | cut -d' ' -f1)
 *     printf %s "xmpp.example.com example.org D60000229F" \
 *       | openssl dgst -sha256 -mac HMAC -macopt key:$k
 *     → 37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643
 *   XEP-0220 2.2.2 (same commands with its inputs):
 *     secret d14lb4ck43v3r, "capulet.example montague.example 417GAF25"
 *     → 225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d
 * and at run time random inputs are checked against the openssl CLI when
 * it is installed (skipped otherwise).
 *
 * Covered: the vectors; every input changes the key and receiving and
 * originating are not interchangeable; bad inputs refused; the check
 * accepting only the exact key; parsing requests (whitespace around the
 * key), answers and errors (with and without a condition, from a
 * jabber:server stream), rejecting malformed elements; building requests,
 * answers and errors and reparsing them; reply swapping from/to; the stream
 * feature.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "s2s/dialback.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/ns.h"

#define S(lit) XD_STR(lit)

/* ---- keys ------------------------------------------------------------------ */

static void
test_dialback__xep_vectors(void **state)
{
    (void)state;
    char key[XD_DIALBACK_KEY_LEN + 1];
    assert_int_equal(xd_dialback_key(S("s3cr3tf0rd14lb4ck"), S("xmpp.example.com"),
                                     S("example.org"), S("D60000229F"), key),
                     0);
    assert_string_equal(key, "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643");
    assert_int_equal(xd_dialback_key(S("d14lb4ck43v3r"), S("capulet.example"),
                                     S("montague.example"), S("417GAF25"), key),
                     0);
    assert_string_equal(key, "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d");
    assert_int_equal(strlen(key), XD_DIALBACK_KEY_LEN);
}

/* Random printable inputs: letters and digits only, safe in a shell. */
static void
rand_word(char *out, size_t n)
{
    static const char a[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char r[64];
    assert_true(n < sizeof r);
    assert_int_equal(RAND_bytes(r, (int)n), 1);
    for (size_t i = 0; i < n; i++)
        out[i] = a[r[i] % (sizeof a - 1)];
    out[n] = '\0';
}

/* Runs cmd and returns its first word of output in out (cap), or false. */
static bool
run_word(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return false;
    char fmt[16];
    snprintf(fmt, sizeof fmt, "%%%zus", cap - 1);
    bool ok = fscanf(p, fmt, out) == 1;
    return pclose(p) == 0 && ok;
}

static void
test_dialback__random_vs_openssl_cli(void **state)
{
    (void)state;
    char probe[64];
    if (!run_word("openssl version 2>/dev/null", probe, sizeof probe))
        skip();
    for (int round = 0; round < 8; round++) {
        char secret[33], recv[13], orig[11], id[17];
        rand_word(secret, 32);
        rand_word(recv, 12);
        rand_word(orig, 10);
        rand_word(id, 16);
        char cmd[512], hk[80], want[80];
        snprintf(cmd, sizeof cmd, "printf %%s '%s' | openssl dgst -sha256 -r", secret);
        assert_true(run_word(cmd, hk, sizeof hk));
        snprintf(cmd, sizeof cmd,
                 "printf %%s '%s.test %s.test %s' | openssl dgst -sha256 -mac HMAC "
                 "-macopt key:%s -r",
                 recv, orig, id, hk);
        assert_true(run_word(cmd, want, sizeof want));
        char r[32], o[32], key[XD_DIALBACK_KEY_LEN + 1];
        snprintf(r, sizeof r, "%s.test", recv);
        snprintf(o, sizeof o, "%s.test", orig);
        assert_int_equal(
            xd_dialback_key(xd_str_c(secret), xd_str_c(r), xd_str_c(o), xd_str_c(id), key), 0);
        assert_string_equal(key, want);
    }
}

static void
test_dialback__every_input_counts(void **state)
{
    (void)state;
    char base[XD_DIALBACK_KEY_LEN + 1], k[XD_DIALBACK_KEY_LEN + 1];
    assert_int_equal(xd_dialback_key(S("secret"), S("a.test"), S("b.test"), S("id1"), base), 0);
    assert_int_equal(xd_dialback_key(S("secreT"), S("a.test"), S("b.test"), S("id1"), k), 0);
    assert_string_not_equal(k, base);
    assert_int_equal(xd_dialback_key(S("secret"), S("c.test"), S("b.test"), S("id1"), k), 0);
    assert_string_not_equal(k, base);
    assert_int_equal(xd_dialback_key(S("secret"), S("a.test"), S("c.test"), S("id1"), k), 0);
    assert_string_not_equal(k, base);
    assert_int_equal(xd_dialback_key(S("secret"), S("a.test"), S("b.test"), S("id2"), k), 0);
    assert_string_not_equal(k, base);
    /* the direction matters: R and O swapped is another key */
    assert_int_equal(xd_dialback_key(S("secret"), S("b.test"), S("a.test"), S("id1"), k), 0);
    assert_string_not_equal(k, base);
    /* the same inputs give the same key; xd_str_t need not be terminated */
    const char buf[] = "a.testXXXX";
    assert_int_equal(xd_dialback_key(S("secret"), (xd_str_t){ buf, 6 }, S("b.test"), S("id1"), k),
                     0);
    assert_string_equal(k, base);
    for (size_t i = 0; i < XD_DIALBACK_KEY_LEN; i++)
        assert_non_null(strchr("0123456789abcdef", base[i]));
}

static void
test_dialback__bad_key_inputs(void **state)
{
    (void)state;
    char k[XD_DIALBACK_KEY_LEN + 1];
    assert_int_equal(xd_dialback_key(S(""), S("a.test"), S("b.test"), S("id"), k), XD_EINVAL);
    assert_int_equal(xd_dialback_key(S("s"), S(""), S("b.test"), S("id"), k), XD_EINVAL);
    assert_int_equal(xd_dialback_key(S("s"), S("a.test"), S(""), S("id"), k), XD_EINVAL);
    assert_int_equal(xd_dialback_key(S("s"), S("a.test"), S("b.test"), S(""), k), XD_EINVAL);
    /* "a b" + "c" would read like "a" + "b c" */
    assert_int_equal(xd_dialback_key(S("s"), S("a b"), S("c"), S("id"), k), XD_EINVAL);
    assert_int_equal(xd_dialback_key(S("s"), S("a"), S("b c"), S("id"), k), XD_EINVAL);
}

static void
test_dialback__check(void **state)
{
    (void)state;
    char k[XD_DIALBACK_KEY_LEN + 1];
    assert_int_equal(xd_dialback_key(S("secret"), S("a.test"), S("b.test"), S("X1"), k), 0);
    xd_str_t key = { k, XD_DIALBACK_KEY_LEN };
    assert_true(xd_dialback_key_check(S("secret"), S("a.test"), S("b.test"), S("X1"), key));
    assert_false(xd_dialback_key_check(S("other"), S("a.test"), S("b.test"), S("X1"), key));
    assert_false(xd_dialback_key_check(S("secret"), S("b.test"), S("a.test"), S("X1"), key));
    assert_false(xd_dialback_key_check(S("secret"), S("a.test"), S("b.test"), S("X2"), key));
    /* one changed digit, first or last */
    for (size_t pos = 0; pos < XD_DIALBACK_KEY_LEN; pos += XD_DIALBACK_KEY_LEN - 1) {
        char bad[XD_DIALBACK_KEY_LEN + 1];
        memcpy(bad, k, sizeof bad);
        bad[pos] = bad[pos] == '0' ? '1' : '0';
        assert_false(xd_dialback_key_check(S("secret"), S("a.test"), S("b.test"), S("X1"),
                                           (xd_str_t){ bad, XD_DIALBACK_KEY_LEN }));
    }
    /* upper-case hex is another string; prefixes and extensions fail */
    char up[XD_DIALBACK_KEY_LEN + 1];
    memcpy(up, k, sizeof up);
    bool changed = false;
    for (size_t i = 0; i < XD_DIALBACK_KEY_LEN; i++)
        if (up[i] >= 'a' && up[i] <= 'f') {
            up[i] = (char)(up[i] - 'a' + 'A');
            changed = true;
        }
    if (changed)
        assert_false(xd_dialback_key_check(S("secret"), S("a.test"), S("b.test"), S("X1"),
                                           (xd_str_t){ up, XD_DIALBACK_KEY_LEN }));
    assert_false(xd_dialback_key_check(S("secret"), S("a.test"), S("b.test"), S("X1"),
                                       (xd_str_t){ k, XD_DIALBACK_KEY_LEN - 1 }));
    assert_false(
        xd_dialback_key_check(S("secret"), S("a.test"), S("b.test"), S("X1"), XD_STR_NULL));
    assert_false(xd_dialback_key_check(S(""), S("a.test"), S("b.test"), S("X1"), key));
}

/* ---- elements ------------------------------------------------------------------ */

static xd_el_t *
parse(const char *xml)
{
    xd_el_t *el = NULL;
    int rc = xd_el_parse(xml, strlen(xml), &el);
    if (rc != 0)
        fail_msg("parse %s: %s", xml, xd_err_name(rc));
    return el;
}

#define DB "xmlns:db='jabber:server:dialback'"

static void
test_dialback__parse_requests(void **state)
{
    (void)state;
    /* XEP-0220 2.2.1 example 9, pretty-printed key */
    xd_el_t *el = parse("<db:result " DB " from='capulet.example' to='montague.example'>\n"
                        "  b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3\n"
                        "</db:result>");
    xd_dialback_t d;
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.kind, XD_DIALBACK_RESULT);
    assert_int_equal(d.type, XD_DIALBACK_REQUEST);
    assert_string_equal(d.from, "capulet.example");
    assert_string_equal(d.to, "montague.example");
    assert_null(d.id);
    assert_true(
        xd_str_eq_c(d.key, "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"));
    xd_el_free(el);

    /* XEP-0220 2.2.2 example 12, checked with the XEP's secret */
    el = parse("<db:verify " DB " from='capulet.example' id='417GAF25' to='montague.example'>"
               "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"
               "</db:verify>");
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.kind, XD_DIALBACK_VERIFY);
    assert_int_equal(d.type, XD_DIALBACK_REQUEST);
    assert_string_equal(d.id, "417GAF25");
    assert_true(xd_dialback_key_check(S("d14lb4ck43v3r"), xd_str_c(d.from), xd_str_c(d.to),
                                      xd_str_c(d.id), d.key));
    xd_el_free(el);

    /* any prefix, or none: the namespace decides */
    el = parse("<verify xmlns='jabber:server:dialback' from='a' to='b' id='i'>k</verify>");
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.kind, XD_DIALBACK_VERIFY);
    assert_true(xd_str_eq_c(d.key, "k"));
    xd_el_free(el);
}

static void
test_dialback__parse_answers(void **state)
{
    (void)state;
    xd_dialback_t d;
    xd_el_t *el = parse("<db:result " DB " from='m.example' to='c.example' type='valid'/>");
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.type, XD_DIALBACK_VALID);
    assert_int_equal(d.key.len, 0);
    xd_el_free(el);

    el = parse("<db:verify " DB " from='m' to='c' id='x' type='invalid'/>");
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.kind, XD_DIALBACK_VERIFY);
    assert_int_equal(d.type, XD_DIALBACK_INVALID);
    xd_el_free(el);

    /* an error as it arrives on a jabber:server stream (XEP-0220 example 4) */
    const char *xml = "<db:result xmlns='jabber:server' " DB " from='montague.example' "
                      "to='capulet.example' type='error'><error type='cancel'>"
                      "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                      "</error></db:result>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(xml, strlen(xml), XD_NS_SERVER, &st), 0);
    assert_int_equal(xd_dialback_parse(xd_stanza_root(st), &d), 0);
    assert_int_equal(d.type, XD_DIALBACK_ERROR);
    assert_int_equal(d.cond, XD_COND_ITEM_NOT_FOUND);
    xd_stanza_unref(st);

    /* the condition after a <text/>; an unknown or missing one */
    el = parse("<db:verify " DB " from='m' to='c' id='x' type='error'><error type='wait'>"
               "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>t</text>"
               "<remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
               "</error></db:verify>");
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.cond, XD_COND_REMOTE_SERVER_TIMEOUT);
    xd_el_free(el);
    el = parse("<db:result " DB " from='m' to='c' type='error'><error type='cancel'>"
               "<no-such-thing xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
               "</db:result>");
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.cond, XD_COND_UNDEFINED_CONDITION);
    xd_el_free(el);
    el = parse("<db:result " DB " from='m' to='c' type='error'/>");
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.cond, XD_COND_UNDEFINED_CONDITION);
    xd_el_free(el);
}

static void
test_dialback__parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "<db:result xmlns:db='jabber:server' from='a' to='b'>k</db:result>", /* namespace */
        "<result from='a' to='b'>k</result>",                                /* content ns */
        "<db:other " DB " from='a' to='b'>k</db:other>",                     /* name */
        "<db:result " DB " to='b'>k</db:result>",                            /* no from */
        "<db:result " DB " from='a'>k</db:result>",                          /* no to */
        "<db:result " DB " from='' to='b'>k</db:result>",                    /* empty from */
        "<db:verify " DB " from='a' to='b'>k</db:verify>",                   /* no id */
        "<db:verify " DB " from='a' to='b' id=''>k</db:verify>",             /* empty id */
        "<db:result " DB " from='a' to='b' type='bogus'/>",                  /* type */
        "<db:result " DB " from='a' to='b'/>",                               /* no key */
        "<db:result " DB " from='a' to='b'> \n\t </db:result>",              /* blank key */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        xd_el_t *el = parse(bad[i]);
        xd_dialback_t d;
        memset(&d, 0x5a, sizeof d);
        if (xd_dialback_parse(el, &d) != XD_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        xd_el_free(el);
    }
}

static char *
ser(xd_el_t *el)
{
    char *s = xd_el_serialize(el, XD_NS_SERVER, NULL);
    xd_el_free(el);
    return s;
}

static void
test_dialback__build_and_reparse(void **state)
{
    (void)state;
    char key[XD_DIALBACK_KEY_LEN + 1];
    assert_int_equal(xd_dialback_key(S("sec"), S("b.test"), S("a.test"), S("S1"), key), 0);
    xd_dialback_t req = { .kind = XD_DIALBACK_RESULT,
                          .type = XD_DIALBACK_REQUEST,
                          .from = "a.test",
                          .to = "b.test",
                          .key = xd_str_c(key) };
    char *s = ser(xd_dialback_build(&req));
    char want[256];
    snprintf(want, sizeof want,
             "<db:result xmlns:db='jabber:server:dialback' from='a.test' to='b.test'>%s"
             "</db:result>",
             key);
    assert_string_equal(s, want);
    xd_el_t *el = parse(s);
    xd_dialback_t d;
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_int_equal(d.kind, XD_DIALBACK_RESULT);
    assert_true(xd_str_eq_c(d.key, key));
    /* the receiving server answers: from/to swapped */
    char *r = ser(xd_dialback_reply(&d, XD_DIALBACK_VALID, XD_COND_UNDEFINED_CONDITION));
    assert_string_equal(r, "<db:result xmlns:db='jabber:server:dialback' from='b.test' "
                           "to='a.test' type='valid'/>");
    xd_free(r);
    xd_el_free(el);
    xd_free(s);

    /* verify: id kept, key checked by the authoritative side */
    xd_dialback_t v = { .kind = XD_DIALBACK_VERIFY,
                        .type = XD_DIALBACK_REQUEST,
                        .from = "b.test",
                        .to = "a.test",
                        .id = "S1",
                        .key = xd_str_c(key) };
    s = ser(xd_dialback_build(&v));
    el = parse(s);
    assert_int_equal(xd_dialback_parse(el, &d), 0);
    assert_string_equal(d.id, "S1");
    assert_true(
        xd_dialback_key_check(S("sec"), xd_str_c(d.from), xd_str_c(d.to), xd_str_c(d.id), d.key));
    r = ser(xd_dialback_reply(&d, XD_DIALBACK_INVALID, XD_COND_UNDEFINED_CONDITION));
    assert_string_equal(r, "<db:verify xmlns:db='jabber:server:dialback' from='a.test' "
                           "to='b.test' id='S1' type='invalid'/>");
    xd_free(r);

    /* an error reply, reparsed on a jabber:server stream */
    r = ser(xd_dialback_reply(&d, XD_DIALBACK_ERROR, XD_COND_REMOTE_SERVER_NOT_FOUND));
    assert_string_equal(r, "<db:verify xmlns:db='jabber:server:dialback' from='a.test' "
                           "to='b.test' id='S1' type='error'><error type='cancel'>"
                           "<remote-server-not-found "
                           "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:verify>");
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(r, strlen(r), XD_NS_SERVER, &st), 0);
    xd_dialback_t e;
    assert_int_equal(xd_dialback_parse(xd_stanza_root(st), &e), 0);
    assert_int_equal(e.type, XD_DIALBACK_ERROR);
    assert_int_equal(e.cond, XD_COND_REMOTE_SERVER_NOT_FOUND);
    assert_string_equal(e.from, "a.test");
    assert_string_equal(e.id, "S1");
    xd_stanza_unref(st);
    xd_free(r);
    xd_el_free(el);
    xd_free(s);
}

static void
test_dialback__feature_and_names(void **state)
{
    (void)state;
    char *s = ser(xd_dialback_feature_new());
    assert_string_equal(s, "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>");
    xd_free(s);
    assert_string_equal(xd_dialback_kind_name(XD_DIALBACK_RESULT), "result");
    assert_string_equal(xd_dialback_kind_name(XD_DIALBACK_VERIFY), "verify");
    assert_string_equal(xd_dialback_type_name(XD_DIALBACK_VALID), "valid");
    assert_string_equal(xd_dialback_type_name(XD_DIALBACK_INVALID), "invalid");
    assert_string_equal(xd_dialback_type_name(XD_DIALBACK_ERROR), "error");
    assert_string_equal(xd_dialback_type_name((xd_dialback_type)99), "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dialback__xep_vectors),
        cmocka_unit_test(test_dialback__random_vs_openssl_cli),
        cmocka_unit_test(test_dialback__every_input_counts),
        cmocka_unit_test(test_dialback__bad_key_inputs),
        cmocka_unit_test(test_dialback__check),
        cmocka_unit_test(test_dialback__parse_requests),
        cmocka_unit_test(test_dialback__parse_answers),
        cmocka_unit_test(test_dialback__parse_rejects),
        cmocka_unit_test(test_dialback__build_and_reparse),
        cmocka_unit_test(test_dialback__feature_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
