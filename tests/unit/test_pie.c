/*
 * test_pie.c — the XEP-0227 <scram-credentials/> element (src/router/pie.h):
 * every hash written and read back equal (through serialization and the
 * parser, as a file carries it); the errors for an unknown mechanism, a
 * missing or bad iteration count, a salt or key that is not base64, and a
 * key of the wrong size for its hash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router/pie.h"
#include "xmppd/alloc.h"
#include "xmppd/el.h"
#include "xmppd/err.h"

static void
fill(xd_scram_cred_t *c, xd_scram_hash h)
{
    memset(c, 0, sizeof *c);
    c->hash = h;
    c->iterations = 4096 + (unsigned)h;
    c->salt_len = 16 + (size_t)h;
    for (size_t i = 0; i < sizeof c->salt; i++)
        c->salt[i] = (uint8_t)(i * 7 + h);
    for (size_t i = 0; i < xd_scram_key_len(h); i++) {
        c->stored_key[i] = (uint8_t)(i * 3 + 1);
        c->server_key[i] = (uint8_t)(255 - i);
    }
}

/* The credential's element, serialized and parsed again. */
static xd_el_t *
round_trip_el(const xd_scram_cred_t *c)
{
    xd_el_t *u = xd_el_new("user", NULL);
    xd_pie_scram_el(u, c);
    size_t len;
    char *xml = xd_el_serialize(xd_el_first_child_mut(u), NULL, &len);
    xd_el_free(u);
    xd_el_t *back = NULL;
    assert_int_equal(xd_el_parse(xml, len, &back), 0);
    xd_free(xml);
    return back;
}

static void
test_pie__scram_round_trip(void **state)
{
    (void)state;
    for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        xd_scram_cred_t c, out;
        fill(&c, (xd_scram_hash)h);
        xd_el_t *el = round_trip_el(&c);
        char err[256] = "";
        assert_int_equal(xd_pie_scram_parse(el, &out, err, sizeof err), 0);
        assert_int_equal(out.hash, c.hash);
        assert_int_equal(out.iterations, c.iterations);
        assert_int_equal(out.salt_len, c.salt_len);
        assert_memory_equal(out.salt, c.salt, c.salt_len);
        assert_memory_equal(out.stored_key, c.stored_key, xd_scram_key_len(c.hash));
        assert_memory_equal(out.server_key, c.server_key, xd_scram_key_len(c.hash));
        xd_el_free(el);
    }
}

static int
parse_text(const char *xml, char *err)
{
    xd_el_t *el = NULL;
    assert_int_equal(xd_el_parse(xml, strlen(xml), &el), 0);
    xd_scram_cred_t out;
    int rc = xd_pie_scram_parse(el, &out, err, 256);
    xd_el_free(el);
    return rc;
}

#define S "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='%s'>" \
          "<iter-count>%s</iter-count><salt>%s</salt><server-key>%s</server-key>" \
          "<stored-key>%s</stored-key></scram-credentials>"
#define K20 "AAAAAAAAAAAAAAAAAAAAAAAAAAA="

static void
test_pie__scram_errors(void **state)
{
    (void)state;
    char xml[1024], err[256];
    snprintf(xml, sizeof xml, S, "SCRAM-SHA-1", "4096", "c2FsdA==", K20, K20);
    assert_int_equal(parse_text(xml, err), 0);
    snprintf(xml, sizeof xml, S, "SCRAM-MD5", "4096", "c2FsdA==", K20, K20);
    assert_int_equal(parse_text(xml, err), XD_EINVAL);
    assert_non_null(strstr(err, "unknown mechanism 'SCRAM-MD5'"));
    snprintf(xml, sizeof xml, S, "SCRAM-SHA-1-PLUS", "4096", "c2FsdA==", K20, K20);
    assert_int_equal(parse_text(xml, err), XD_EINVAL);
    const char *bad_iter[] = { "0", "04096", "-1", "4096x", "", "999999999999" };
    for (size_t i = 0; i < sizeof bad_iter / sizeof *bad_iter; i++) {
        snprintf(xml, sizeof xml, S, "SCRAM-SHA-1", bad_iter[i], "c2FsdA==", K20, K20);
        assert_int_equal(parse_text(xml, err), XD_EINVAL);
        assert_non_null(strstr(err, "iter-count"));
    }
    snprintf(xml, sizeof xml, S, "SCRAM-SHA-1", "4096", "not base64!", K20, K20);
    assert_int_equal(parse_text(xml, err), XD_EINVAL);
    assert_non_null(strstr(err, "<salt/>"));
    snprintf(xml, sizeof xml, S, "SCRAM-SHA-1", "4096", "", K20, K20);
    assert_int_equal(parse_text(xml, err), XD_EINVAL);
    /* A SHA-1-sized key for SHA-256. */
    snprintf(xml, sizeof xml, S, "SCRAM-SHA-256", "4096", "c2FsdA==", K20, K20);
    assert_int_equal(parse_text(xml, err), XD_EINVAL);
    assert_non_null(strstr(err, "wrong size"));
    /* A missing child. */
    assert_int_equal(parse_text("<scram-credentials xmlns='urn:xmpp:pie:0#scram' "
                                "mechanism='SCRAM-SHA-1'><iter-count>1</iter-count>"
                                "</scram-credentials>", err),
                     XD_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pie__scram_round_trip),
        cmocka_unit_test(test_pie__scram_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
