/*
 * test_jid.c — unit tests for src/xmpp/jid.c (RFC 7622 JIDs).
 *
 * Where it sits: tests/unit/, built by tests/unit/meson.build against
 * libxmppd and cmocka; run with `meson test --suite unit test_jid`.
 *
 * Every rule of RFC 7622 section 3 has a passing and a failing case here,
 * tagged with the section it proves.  The examples of RFC 7622 3.5 are
 * taken literally, except "juliet@example.com/ foo", which RFC 7622 Errata
 * ID 4560 moves to the valid side (OpaqueString allows a leading space).
 * Invariants: each test frees every JID it makes (ASan checks for leaks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static xd_str_t
s_(const char *s)
{
    return xd_str_c(s);
}

/* Parses `in` (NUL-terminated), which must succeed with full string `want`. */
static void
expect_full(const char *in, const char *want)
{
    xd_jid_t *j = NULL;
    int rc = xd_jid_parse(s_(in), &j);
    if (rc != 0)
        fail_msg("parse \"%s\": %d, want success", in, rc);
    assert_non_null(j);
    xd_str_t f = xd_jid_full_str(j);
    assert_int_equal(f.len, strlen(want));
    assert_memory_equal(f.p, want, f.len);
    assert_int_equal(f.p[f.len], '\0');
    xd_jid_unref(j);
}

/* Parses `in` with an explicit length, which must fail with `code`. */
static void
expect_err_n(const char *in, size_t len, int code)
{
    xd_jid_t *j = (xd_jid_t *)(uintptr_t)1;
    int rc = xd_jid_parse((xd_str_t){ in, len }, &j);
    if (rc != code)
        fail_msg("parse \"%.*s\": %d, want %d", (int)(len > 80 ? 80 : len), in ? in : "", rc,
                 code);
    assert_null(j);
}

static void
expect_err(const char *in, int code)
{
    expect_err_n(in, strlen(in), code);
}

static bool
parse_eq(const char *a, const char *b, bool bare)
{
    xd_jid_t *ja, *jb;
    assert_int_equal(xd_jid_parse(s_(a), &ja), 0);
    assert_int_equal(xd_jid_parse(s_(b), &jb), 0);
    bool eq = bare ? xd_jid_eq_bare(ja, jb) : xd_jid_eq(ja, jb);
    xd_jid_unref(ja);
    xd_jid_unref(jb);
    return eq;
}

static void
expect_part(xd_str_t got, const char *want)
{
    assert_int_equal(got.len, strlen(want));
    assert_memory_equal(got.p, want, got.len);
    assert_int_equal(got.p[got.len], '\0');
}

/* A string of `n` copies of `c`, from xd_malloc. */
static char *
repeat(char c, size_t n)
{
    char *s = xd_malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A valid LDH domain of exactly `n` bytes (n >= 1): 63-octet labels of 'a',
 * a shorter last label, never a numeric one. */
static char *
domain_of(size_t n)
{
    char *s = xd_malloc(n + 1);
    size_t o = 0;
    while (o < n) {
        size_t left = n - o;
        size_t lab = left > 63 ? 63 : left;
        if (left > 63 && left - 63 == 1)
            lab = 61; /* avoid a trailing "." with nothing after it */
        memset(s + o, 'a', lab);
        o += lab;
        if (o < n)
            s[o++] = '.';
    }
    s[n] = '\0';
    return s;
}

/* ------------------------------------------------------------------------ */
/* RFC 7622 3.5: the examples                                               */
/* ------------------------------------------------------------------------ */

/* RFC7622 3.5: "a sample of legal JIDs", with their normalised forms. */
static void
test_jid__rfc7622_valid_examples(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        { "juliet@example.com", "juliet@example.com" },
        { "juliet@example.com/foo", "juliet@example.com/foo" },
        { "juliet@example.com/foo bar", "juliet@example.com/foo bar" },
        { "juliet@example.com/foo@bar", "juliet@example.com/foo@bar" },
        { "foo\\20bar@example.com", "foo\\20bar@example.com" },
        { "fussball@example.com", "fussball@example.com" },
        { "fußball@example.com", "fußball@example.com" },
        { "π@example.com", "π@example.com" },
        { "Σ@example.com/foo", "σ@example.com/foo" },
        { "σ@example.com/foo", "σ@example.com/foo" },
        { "ς@example.com/foo", "ς@example.com/foo" },
        { "king@example.com/♚", "king@example.com/♚" },
        { "example.com", "example.com" },
        { "example.com/foobar", "example.com/foobar" },
        { "a.example.com/b@example.net", "a.example.com/b@example.net" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_full(cases[i][0], cases[i][1]);

    xd_jid_t *j;
    assert_int_equal(xd_jid_parse(s_("a.example.com/b@example.net"), &j), 0);
    expect_part(xd_jid_local(j), "");
    expect_part(xd_jid_domain(j), "a.example.com");
    expect_part(xd_jid_resource(j), "b@example.net");
    xd_jid_unref(j);
    assert_int_equal(xd_jid_parse(s_("juliet@example.com/foo@bar"), &j), 0);
    expect_part(xd_jid_local(j), "juliet");
    expect_part(xd_jid_resource(j), "foo@bar");
    xd_jid_unref(j);
}

/* RFC7622 3.5: "a sample of strings that violate the JID rules". */
static void
test_jid__rfc7622_invalid_examples(void **state)
{
    (void)state;
    expect_err("\"juliet\"@example.com", XD_EJID_LOCAL_INVALID); /* U+0022 */
    expect_err("foo bar@example.com", XD_EJID_LOCAL_INVALID);    /* U+0020 */
    expect_err("@example.com/", XD_EJID_LOCAL_EMPTY);            /* empty local and res */
    expect_err("henry\u2163@example.com", XD_EJID_LOCAL_INVALID); /* ROMAN NUMERAL FOUR */
    expect_err("♚@example.com", XD_EJID_LOCAL_INVALID);          /* BLACK CHESS KING */
    expect_err("juliet@", XD_EJID_DOMAIN_EMPTY);
    expect_err("/foobar", XD_EJID_DOMAIN_EMPTY);
}

/* RFC7622 3.5 lists "juliet@example.com/ foo" as invalid; Errata ID 4560
 * corrects that: OpaqueString (RFC8265 4.2) allows a leading space. */
static void
test_jid__leading_space_in_resource_is_valid(void **state)
{
    (void)state;
    xd_jid_t *j;
    assert_int_equal(xd_jid_parse(s_("juliet@example.com/ foo"), &j), 0);
    expect_part(xd_jid_resource(j), " foo");
    xd_jid_unref(j);
    assert_false(parse_eq("juliet@example.com/ foo", "juliet@example.com/foo", false));
}

/* RFC7622 3.5 examples 9-11, RFC8265 3.3.2: toLowerCase, not case folding. */
static void
test_jid__sigma_and_sharp_s(void **state)
{
    (void)state;
    assert_true(parse_eq("Σ@example.com/foo", "σ@example.com/foo", false));
    assert_false(parse_eq("ς@example.com/foo", "σ@example.com/foo", false));
    assert_false(parse_eq("fußball@example.com", "fussball@example.com", false));
    expect_full("ΣΑΣ@example.com", "σας@example.com"); /* final sigma in context */
}

/* ------------------------------------------------------------------------ */
/* RFC 7622 3.1: structure                                                  */
/* ------------------------------------------------------------------------ */

static void
test_jid__split(void **state)
{
    (void)state;
    xd_jid_t *j;

    /* RFC7622 3.1: the first '/' starts the resource, even before an '@'. */
    assert_int_equal(xd_jid_parse(s_("example.com/a@b/c"), &j), 0);
    expect_part(xd_jid_local(j), "");
    expect_part(xd_jid_domain(j), "example.com");
    expect_part(xd_jid_resource(j), "a@b/c");
    xd_jid_unref(j);
    assert_int_equal(xd_jid_parse(s_("u@example.com/r/s"), &j), 0);
    expect_part(xd_jid_resource(j), "r/s");
    xd_jid_unref(j);

    /* The first '@' ends the localpart; another one lands in the domain. */
    expect_err("a@b@example.com", XD_EJID_DOMAIN_INVALID);

    /* A separator with nothing on one side is an error. */
    expect_err("", XD_EJID_EMPTY);
    expect_err_n(NULL, 0, XD_EJID_EMPTY);
    expect_err("@", XD_EJID_LOCAL_EMPTY);
    expect_err("@example.com", XD_EJID_LOCAL_EMPTY);
    expect_err("local@", XD_EJID_DOMAIN_EMPTY);
    expect_err("local@/res", XD_EJID_DOMAIN_EMPTY);
    expect_err("/", XD_EJID_DOMAIN_EMPTY);
    expect_err("example.com/", XD_EJID_RES_EMPTY);
    expect_err("u@example.com/", XD_EJID_RES_EMPTY);

    /* No trimming of surrounding whitespace. */
    expect_err(" juliet@example.com", XD_EJID_LOCAL_INVALID);
    expect_err("juliet@example.com ", XD_EJID_DOMAIN_INVALID);
    expect_err("juliet@ example.com", XD_EJID_DOMAIN_INVALID);
    expect_full("juliet@example.com/foo ", "juliet@example.com/foo ");

    /* An embedded NUL is part of the input, never a terminator. */
    expect_err_n("a\0b@example.com", 15, XD_EJID_LOCAL_INVALID);
    expect_err_n("a@exa\0mple.com", 14, XD_EJID_DOMAIN_INVALID);
    expect_err_n("a@example.com/r\0", 16, XD_EJID_RES_INVALID);
}

/* RFC7622 3.1: a JID is a UTF-8 string. */
static void
test_jid__utf8(void **state)
{
    (void)state;
    expect_err("\xff@example.com", XD_EJID_UTF8);
    expect_err("a@example.com/\xc3", XD_EJID_UTF8);          /* truncated */
    expect_err("\xc0\xaf@example.com", XD_EJID_UTF8);        /* overlong '/' */
    expect_err("a@example.com/\xed\xa0\x80", XD_EJID_UTF8);  /* surrogate */
    expect_err("a@example.com/\xf4\x90\x80\x80", XD_EJID_UTF8); /* > U+10FFFF */
    xd_jid_t *j;
    assert_int_equal(xd_jid_make(s_("\xff"), s_("example.com"), XD_STR_NULL, &j), XD_EJID_UTF8);
    char *p;
    assert_int_equal(xd_jid_prep_resource(s_("\x80"), &p), XD_EJID_UTF8);
    assert_null(p);
}

/* RFC7622 3.1: 1023 bytes per part, 3071 in all. */
static void
test_jid__length_limits(void **state)
{
    (void)state;
    char buf[4000];
    char *a1023 = repeat('a', 1023), *a1024 = repeat('a', 1024);
    char *d1023 = domain_of(1023), *d1024 = domain_of(1024);
    xd_jid_t *j;

    /* RFC7622 3.3: localpart. */
    snprintf(buf, sizeof buf, "%s@example.com", a1023);
    assert_int_equal(xd_jid_parse(s_(buf), &j), 0);
    assert_int_equal(xd_jid_local(j).len, 1023);
    xd_jid_unref(j);
    snprintf(buf, sizeof buf, "%s@example.com", a1024);
    expect_err(buf, XD_EJID_LOCAL_TOO_LONG);
    /* The limit is on the prepared form: 511 two-byte "é" + "a" = 1023. */
    size_t o = 0;
    for (int i = 0; i < 511; i++)
        o += (size_t)sprintf(buf + o, "É"); /* maps to "é" */
    sprintf(buf + o, "a@example.com");
    assert_int_equal(xd_jid_parse(s_(buf), &j), 0);
    assert_int_equal(xd_jid_local(j).len, 1023);
    xd_jid_unref(j);
    sprintf(buf + o, "éa@example.com"); /* 1025 */
    expect_err(buf, XD_EJID_LOCAL_TOO_LONG);

    /* RFC7622 3.2: domainpart. */
    assert_int_equal(strlen(d1023), 1023);
    assert_int_equal(strlen(d1024), 1024);
    assert_int_equal(xd_jid_parse(s_(d1023), &j), 0);
    assert_int_equal(xd_jid_domain(j).len, 1023);
    xd_jid_unref(j);
    expect_err(d1024, XD_EJID_DOMAIN_TOO_LONG);
    snprintf(buf, sizeof buf, "%s.", d1023); /* the trailing dot does not count */
    assert_int_equal(xd_jid_parse(s_(buf), &j), 0);
    assert_int_equal(xd_jid_domain(j).len, 1023);
    xd_jid_unref(j);

    /* RFC7622 3.4: resourcepart. */
    snprintf(buf, sizeof buf, "example.com/%s", a1023);
    assert_int_equal(xd_jid_parse(s_(buf), &j), 0);
    assert_int_equal(xd_jid_resource(j).len, 1023);
    xd_jid_unref(j);
    snprintf(buf, sizeof buf, "example.com/%s", a1024);
    expect_err(buf, XD_EJID_RES_TOO_LONG);

    /* RFC7622 3.1: the whole JID, 3071 bytes with all parts at their limit. */
    snprintf(buf, sizeof buf, "%s@%s/%s", a1023, d1023, a1023);
    assert_int_equal(strlen(buf), XD_JID_MAX);
    assert_int_equal(xd_jid_parse(s_(buf), &j), 0);
    assert_int_equal(xd_jid_full_str(j).len, XD_JID_MAX);
    assert_int_equal(xd_jid_bare_str(j).len, 2047);
    xd_jid_unref(j);
    snprintf(buf, sizeof buf, "%s@%s/%sa", a1023, d1023, a1023);
    expect_err(buf, XD_EJID_TOO_LONG);

    xd_free(a1023);
    xd_free(a1024);
    xd_free(d1023);
    xd_free(d1024);
}

/* ------------------------------------------------------------------------ */
/* RFC 7622 3.2: domainpart                                                 */
/* ------------------------------------------------------------------------ */

/* RFC7622 3.2: case-insensitive ASCII host names, LDH labels. */
static void
test_jid__domain_ascii(void **state)
{
    (void)state;
    expect_full("juliet@EXAMPLE.Com", "juliet@example.com");
    assert_true(parse_eq("a@Example.COM/r", "a@example.com/r", false));
    expect_full("my-host.example-1.com", "my-host.example-1.com");
    expect_full("localhost", "localhost");

    char lab[80];
    memset(lab, 'b', 63);
    strcpy(lab + 63, ".com");
    expect_full(lab, lab); /* 63-octet label */
    memset(lab, 'b', 64);
    strcpy(lab + 64, ".com");
    expect_err(lab, XD_EJID_DOMAIN_INVALID); /* 64-octet label */

    expect_err("-a.example.com", XD_EJID_DOMAIN_INVALID);
    expect_err("a-.example.com", XD_EJID_DOMAIN_INVALID);
    expect_err("a_b.example.com", XD_EJID_DOMAIN_INVALID); /* no underscore */
    expect_err("a..example.com", XD_EJID_DOMAIN_INVALID);
    expect_err(".example.com", XD_EJID_DOMAIN_INVALID);
    expect_err("exa mple.com", XD_EJID_DOMAIN_INVALID);
    expect_err("example.com:5222", XD_EJID_DOMAIN_INVALID);
    expect_err("exa\tmple.com", XD_EJID_DOMAIN_INVALID);
}

/* RFC7622 3.2: a final '.' is stripped before anything else. */
static void
test_jid__domain_trailing_dot(void **state)
{
    (void)state;
    expect_full("juliet@example.com.", "juliet@example.com");
    expect_full("example.com./res", "example.com/res");
    assert_true(parse_eq("juliet@example.com./r", "juliet@example.com/r", false));
    expect_err("example.com..", XD_EJID_DOMAIN_INVALID);
    expect_err(".", XD_EJID_DOMAIN_EMPTY);
    expect_err("a@./r", XD_EJID_DOMAIN_EMPTY);
}

/* RFC7622 3.2.2: IDNA2008 (UTS-46 non-transitional mapping); domains
 * compare as lower-case U-labels, so A-label and U-label forms are equal. */
static void
test_jid__domain_idn(void **state)
{
    (void)state;
    xd_jid_t *u, *a;
    assert_int_equal(xd_jid_parse(s_("juliet@ÄÖÜ.example"), &u), 0);
    assert_int_equal(xd_jid_parse(s_("juliet@xn--4ca0bs.example"), &a), 0);
    assert_true(xd_jid_eq(u, a));
    expect_part(xd_jid_domain(u), "äöü.example");
    expect_part(xd_jid_domain(a), "äöü.example");
    xd_jid_unref(u);
    xd_jid_unref(a);

    assert_true(parse_eq("XN--4CA0BS.example", "äöü.example", false));
    expect_full("ｅｘａｍｐｌｅ.com", "example.com");    /* fullwidth, UTS-46 mapped */
    expect_full("bücher.example", "bücher.example");
    expect_full("example。com", "example.com");           /* U+3002 separates labels */
    expect_full("fußball.example", "fußball.example"); /* non-transitional: ß kept */
    assert_false(parse_eq("fußball.example", "fussball.example", false));
    expect_full("xn--zca.example", "ß.example");

    expect_err("xn--abc.example", XD_EJID_DOMAIN_INVALID);   /* fake A-label */
    expect_err("xn--.example", XD_EJID_DOMAIN_INVALID);
    expect_err("xn--7ba.example", XD_EJID_DOMAIN_INVALID);   /* decodes to "Ä": not a U-label */
    expect_err("xn--45h.example", XD_EJID_DOMAIN_INVALID);   /* decodes to a symbol */
    expect_err("ä_b.example", XD_EJID_DOMAIN_INVALID);
    expect_err("ä＿b.example", XD_EJID_DOMAIN_INVALID);       /* fullwidth '_' */
    expect_err("♚.example", XD_EJID_DOMAIN_INVALID);          /* symbol */
    expect_err("-ä.example", XD_EJID_DOMAIN_INVALID);
    expect_err("a＠b.example", XD_EJID_DOMAIN_INVALID);       /* maps to '@' */
    expect_err("⒈example.com", XD_EJID_DOMAIN_INVALID);
}

/* RFC7622 3.2.1: IP literals, IPv6 normalised to its canonical form. */
static void
test_jid__domain_ip_literals(void **state)
{
    (void)state;
    expect_full("juliet@192.0.2.1/r", "juliet@192.0.2.1/r");
    expect_full("juliet@192.0.2.1./r", "juliet@192.0.2.1/r");
    expect_full("juliet@[::1]/r", "juliet@[::1]/r");
    expect_full("[2001:DB8::1]", "[2001:db8::1]");
    expect_full("u@[2001:0db8:0:0:0:0:0:1]", "u@[2001:db8::1]");
    assert_true(parse_eq("u@[2001:DB8:0::1]", "u@[2001:db8::1]", false));
    expect_full("[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]");

    expect_err("[::1", XD_EJID_DOMAIN_INVALID);
    expect_err("[]", XD_EJID_DOMAIN_INVALID);
    expect_err("[192.0.2.1]", XD_EJID_DOMAIN_INVALID);
    expect_err("[fe80::1%eth0]", XD_EJID_DOMAIN_INVALID);
    expect_err("[::1]x", XD_EJID_DOMAIN_INVALID);
    expect_err("[2001:db8::g]", XD_EJID_DOMAIN_INVALID);
    expect_err("192.0.2.256", XD_EJID_DOMAIN_INVALID);
    expect_err("192.0.02.1", XD_EJID_DOMAIN_INVALID); /* not canonical */
    expect_err("192.0.2", XD_EJID_DOMAIN_INVALID);
    expect_err("example.123", XD_EJID_DOMAIN_INVALID); /* numeric TLD */
}

/* ------------------------------------------------------------------------ */
/* RFC 7622 3.3: localpart (PRECIS UsernameCaseMapped)                      */
/* ------------------------------------------------------------------------ */

/* RFC8265 3.3.2 rule 3: upper case to lower case in the localpart. */
static void
test_jid__local_case_mapping(void **state)
{
    (void)state;
    expect_full("JULIET@example.com/Balcony", "juliet@example.com/Balcony");
    expect_full("ÄÖÜ@example.com", "äöü@example.com");
    expect_full("ΠΑΝΤΑ@example.com", "παντα@example.com");
    assert_true(parse_eq("Juliet@example.com", "juliet@example.com", false));
}

/* RFC8265 3.3.2 rule 1: fullwidth and halfwidth to their decomposition. */
static void
test_jid__local_width_mapping(void **state)
{
    (void)state;
    expect_full("ｊｕｌｉｅｔ@example.com", "juliet@example.com");
    expect_full("ＪＵＬＩＥＴ@example.com", "juliet@example.com");
    expect_full("ｶ@example.com", "カ@example.com"); /* HALFWIDTH KATAKANA KA */
    expect_err("a＠b@example.com", XD_EJID_LOCAL_INVALID); /* FULLWIDTH '@' -> '@' */
    expect_err("ａ　ｂ@example.com", XD_EJID_LOCAL_INVALID); /* ideographic space */
}

/* RFC8265 3.3.2 rule 4: NFC. */
static void
test_jid__local_nfc(void **state)
{
    (void)state;
    expect_full("e\xcc\x81@example.com", "\xc3\xa9@example.com"); /* e + U+0301 */
    assert_true(parse_eq("E\xcc\x81@example.com", "é@example.com", false));
    expect_full("\xe2\x84\xab@example.com", "å@example.com"); /* ANGSTROM SIGN */
}

/* RFC7622 3.3.1: "&'/:<>@ are disallowed; other ASCII7 is allowed. */
static void
test_jid__local_prohibited_ascii(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a\"b@example.com", "a&b@example.com", "a'b@example.com",
        "a:b@example.com", "a<b@example.com", "a>b@example.com",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err(bad[i], XD_EJID_LOCAL_INVALID);
    char *p = (char *)1;
    assert_int_equal(xd_jid_prep_local(s_("a/b"), &p), XD_EJID_LOCAL_INVALID);
    assert_null(p);
    assert_int_equal(xd_jid_prep_local(s_("a@b"), &p), XD_EJID_LOCAL_INVALID);
    assert_int_equal(xd_jid_prep_local(s_("ä@b"), &p), XD_EJID_LOCAL_INVALID);
    expect_full("!#$%*+-=?^_`{|}~.\\@example.com", "!#$%*+-=?^_`{|}~.\\@example.com");
    expect_err("a\x7f@example.com", XD_EJID_LOCAL_INVALID);
    expect_err("a\tb@example.com", XD_EJID_LOCAL_INVALID);
}

/* RFC8264 9 (IdentifierClass): only letters, digits and ASCII7. */
static void
test_jid__local_identifier_class(void **state)
{
    (void)state;
    expect_full("δοκιμή@example.com", "δοκιμή@example.com"); /* Ll + Mn */
    expect_full("ユーザー@example.com", "ユーザー@example.com"); /* Lo, Lm */
    expect_full("۳۴@example.com", "۳۴@example.com");          /* Nd (EN) */
    expect_full("用户@example.com", "用户@example.com");

    expect_err("a\xc2\xa0" "b@example.com", XD_EJID_LOCAL_INVALID); /* NBSP: Zs */
    expect_err("€@example.com", XD_EJID_LOCAL_INVALID);    /* Sc */
    expect_err("a¿@example.com", XD_EJID_LOCAL_INVALID);   /* Po */
    expect_err("½@example.com", XD_EJID_LOCAL_INVALID);    /* No, HasCompat */
    expect_err("ǅ@example.com", XD_EJID_LOCAL_INVALID);    /* Lt: maps to ǆ, HasCompat */
    expect_err("a\xcd\xb8@example.com", XD_EJID_LOCAL_INVALID); /* U+0378 unassigned */
    expect_err("a\xc2\xad" "b@example.com", XD_EJID_LOCAL_INVALID); /* SOFT HYPHEN */
    expect_err("a\xe2\x80\x8b" "b@example.com", XD_EJID_LOCAL_INVALID); /* ZWSP */
    expect_err("\xe1\x84\x80@example.com", XD_EJID_LOCAL_INVALID); /* old Hangul jamo */
    expect_err("\xd8\xa8\xd9\x80\xd8\xa8@example.com", XD_EJID_LOCAL_INVALID); /* TATWEEL */
    expect_err("a\xc2\x85@example.com", XD_EJID_LOCAL_INVALID); /* NEL: Cc */
    expect_err("a\xee\x80\x80@example.com", XD_EJID_LOCAL_INVALID); /* private use */
    expect_err("a\xef\xbf\xbe@example.com", XD_EJID_LOCAL_INVALID); /* noncharacter */
}

/* RFC8264 9.5/9.6 with RFC5892 appendix A: contextual rules. */
static void
test_jid__local_context_rules(void **state)
{
    (void)state;
    expect_full("col·lega@example.com", "col·lega@example.com"); /* A.3 */
    expect_err("a·b@example.com", XD_EJID_LOCAL_INVALID);
    expect_full("\xcd\xb5\xce\xb1@example.com", "\xcd\xb5\xce\xb1@example.com"); /* A.4 */
    expect_err("\xcd\xb5" "a@example.com", XD_EJID_LOCAL_INVALID);
    expect_full("א׳@example.com", "א׳@example.com"); /* A.5 GERESH after Hebrew */
    expect_err("a׳@example.com", XD_EJID_LOCAL_INVALID);
    expect_full("カ・カ@example.com", "カ・カ@example.com"); /* A.7 */
    expect_err("a・b@example.com", XD_EJID_LOCAL_INVALID);
    expect_err("ب٠۰@example.com", XD_EJID_LOCAL_INVALID); /* A.8/A.9 (and Bidi rule 4) */
    expect_full("۰۱@example.com", "۰۱@example.com");
    /* A.1 ZWNJ: after a virama, or between joining letters. */
    expect_full("क्\xe2\x80\x8cष@example.com", "क्\xe2\x80\x8cष@example.com");
    expect_full("ب\xe2\x80\x8cب@example.com", "ب\xe2\x80\x8cب@example.com");
    expect_err("a\xe2\x80\x8c" "b@example.com", XD_EJID_LOCAL_INVALID);
    /* A.2 ZWJ: only after a virama. */
    expect_full("क्\xe2\x80\x8dष@example.com", "क्\xe2\x80\x8dष@example.com");
    expect_err("ب\xe2\x80\x8dب@example.com", XD_EJID_LOCAL_INVALID);
}

/* RFC8265 3.3.3 and RFC5893 2: the Bidi Rule for strings with RTL. */
static void
test_jid__local_bidi_rule(void **state)
{
    (void)state;
    expect_full("שלום@example.com", "שלום@example.com");
    expect_full("سلام@example.com", "سلام@example.com");
    expect_full("ש1@example.com", "ש1@example.com"); /* rule 3: may end in EN */
    expect_err("aש@example.com", XD_EJID_LOCAL_INVALID);  /* rules 1/5 */
    expect_err("1ש@example.com", XD_EJID_LOCAL_INVALID);  /* rule 1 */
    expect_err("ב1٢@example.com", XD_EJID_LOCAL_INVALID); /* rule 4: EN and AN */
    expect_err("שa@example.com", XD_EJID_LOCAL_INVALID);  /* rule 2 */
    expect_err("ש-@example.com", XD_EJID_LOCAL_INVALID);  /* rule 3 */
    expect_err("٣٤@example.com", XD_EJID_LOCAL_INVALID);  /* rule 1: starts with AN */
}

/* ------------------------------------------------------------------------ */
/* RFC 7622 3.4: resourcepart (PRECIS OpaqueString)                         */
/* ------------------------------------------------------------------------ */

static void
test_jid__resource_opaque_string(void **state)
{
    (void)state;
    /* Case, width, spaces, symbols, '@' and '/' are kept. */
    expect_full("u@example.com/Foo Bar", "u@example.com/Foo Bar");
    expect_full("u@example.com/ｆｏｏ", "u@example.com/ｆｏｏ");
    expect_full("u@example.com/½ ♚ € ¿", "u@example.com/½ ♚ € ¿");
    expect_full("u@example.com/a@b/c:d", "u@example.com/a@b/c:d");
    expect_full("u@example.com/aש", "u@example.com/aש"); /* no Bidi Rule */
    assert_false(parse_eq("u@example.com/Foo", "u@example.com/foo", false));
    assert_true(parse_eq("u@example.com/Foo", "u@example.com/foo", true));

    /* RFC8265 4.2.2 rule 2: non-ASCII spaces become U+0020; rule 4: NFC. */
    expect_full("u@example.com/a\xc2\xa0" "b", "u@example.com/a b");
    expect_full("u@example.com/a\xe3\x80\x80" "b", "u@example.com/a b");
    expect_full("u@example.com/e\xcc\x81", "u@example.com/\xc3\xa9");

    /* FreeformClass disallows controls, unassigned code points, default
     * ignorables, noncharacters, line separators. */
    expect_err("u@example.com/a\tb", XD_EJID_RES_INVALID);
    expect_err("u@example.com/a\x7f", XD_EJID_RES_INVALID);
    expect_err("u@example.com/\xc2\x85", XD_EJID_RES_INVALID);
    expect_err("u@example.com/a\xcd\xb8", XD_EJID_RES_INVALID);
    expect_err("u@example.com/a\xe2\x80\x8b", XD_EJID_RES_INVALID);
    expect_err("u@example.com/a\xef\xbf\xbf", XD_EJID_RES_INVALID);
    expect_err("u@example.com/a\xe2\x80\xa8", XD_EJID_RES_INVALID);
    expect_err("u@example.com/a\xe2\x80\x8c" "b", XD_EJID_RES_INVALID); /* ZWNJ */
}

/* ------------------------------------------------------------------------ */
/* The object: accessors, equality, bare, refcount, make, prep              */
/* ------------------------------------------------------------------------ */

static void
test_jid__accessors(void **state)
{
    (void)state;
    xd_jid_t *j;
    assert_int_equal(xd_jid_parse(s_("Juliet@Example.com/Balcony"), &j), 0);
    expect_part(xd_jid_local(j), "juliet");
    expect_part(xd_jid_domain(j), "example.com");
    expect_part(xd_jid_resource(j), "Balcony");
    expect_part(xd_jid_bare_str(j), "juliet@example.com");
    expect_part(xd_jid_full_str(j), "juliet@example.com/Balcony");
    assert_false(xd_jid_is_bare(j));
    xd_jid_unref(j);

    assert_int_equal(xd_jid_parse(s_("example.com"), &j), 0);
    expect_part(xd_jid_local(j), "");
    expect_part(xd_jid_domain(j), "example.com");
    expect_part(xd_jid_resource(j), "");
    expect_part(xd_jid_bare_str(j), "example.com");
    assert_true(xd_jid_is_bare(j));
    xd_jid_unref(j);

    assert_int_equal(xd_jid_parse(s_("example.com/r"), &j), 0);
    expect_part(xd_jid_local(j), "");
    expect_part(xd_jid_domain(j), "example.com");
    expect_part(xd_jid_bare_str(j), "example.com");
    expect_part(xd_jid_resource(j), "r");
    xd_jid_unref(j);
}

static void
test_jid__equality(void **state)
{
    (void)state;
    assert_true(parse_eq("A@B.example/c", "a@b.example/c", false));
    assert_false(parse_eq("a@b.example/c", "a@b.example/C", false));
    assert_true(parse_eq("a@b.example/c", "a@b.example/C", true));
    assert_true(parse_eq("a@b.example/c", "a@b.example", true));
    assert_false(parse_eq("a@b.example/c", "a@b.example", false));
    assert_false(parse_eq("a@b.example", "b.example", true));
    assert_false(parse_eq("a@b.example", "a@c.example", true));
    assert_false(parse_eq("ab@c.example", "a@bc.example", true));
}

static void
test_jid__bare(void **state)
{
    (void)state;
    xd_jid_t *full, *bare, *bare2;
    assert_int_equal(xd_jid_parse(s_("Juliet@example.com/balcony"), &full), 0);
    bare = xd_jid_bare(full);
    assert_ptr_not_equal(bare, full);
    assert_true(xd_jid_is_bare(bare));
    expect_part(xd_jid_full_str(bare), "juliet@example.com");
    expect_part(xd_jid_local(bare), "juliet");
    expect_part(xd_jid_domain(bare), "example.com");
    assert_true(xd_jid_eq_bare(bare, full));
    assert_false(xd_jid_eq(bare, full));
    bare2 = xd_jid_bare(bare); /* already bare: the same object, ref'd */
    assert_ptr_equal(bare2, bare);
    xd_jid_unref(full);
    xd_jid_unref(bare2);
    expect_part(xd_jid_full_str(bare), "juliet@example.com"); /* still alive */
    xd_jid_unref(bare);
}

static void
test_jid__refcount(void **state)
{
    (void)state;
    xd_jid_t *j;
    assert_int_equal(xd_jid_parse(s_("juliet@example.com/r"), &j), 0);
    xd_jid_t *k = xd_jid_ref(j);
    assert_ptr_equal(k, j);
    xd_jid_ref(j);
    xd_jid_unref(j);
    xd_jid_unref(j);
    expect_part(xd_jid_full_str(k), "juliet@example.com/r"); /* one reference left */
    xd_jid_unref(k); /* freed here; ASan reports a leak or double free otherwise */
    xd_jid_unref(NULL);
}

static void
test_jid__bare_text(void **state)
{
    (void)state;
    char *b = xd_jid_bare_text("Juliet@Example.COM./Balcony");
    assert_string_equal(b, "juliet@example.com");
    xd_free(b);
    b = xd_jid_bare_text("example.com/res");
    assert_string_equal(b, "example.com");
    xd_free(b);
    assert_null(xd_jid_bare_text(NULL));
    assert_null(xd_jid_bare_text(""));
    assert_null(xd_jid_bare_text("a@b@c"));
    assert_null(xd_jid_bare_text("juliet@/res"));
}

static void
test_jid__make(void **state)
{
    (void)state;
    xd_jid_t *j, *p;
    assert_int_equal(xd_jid_make(s_("Juliet"), s_("Example.COM."), s_("Balcony"), &j), 0);
    assert_int_equal(xd_jid_parse(s_("juliet@example.com/Balcony"), &p), 0);
    assert_true(xd_jid_eq(j, p));
    xd_jid_unref(j);
    xd_jid_unref(p);

    assert_int_equal(xd_jid_make(XD_STR_NULL, s_("example.com"), XD_STR_NULL, &j), 0);
    expect_part(xd_jid_full_str(j), "example.com");
    xd_jid_unref(j);
    assert_int_equal(xd_jid_make(XD_STR_NULL, s_("example.com"), s_("a/b@c"), &j), 0);
    expect_part(xd_jid_full_str(j), "example.com/a/b@c");
    xd_jid_unref(j);

    j = (xd_jid_t *)(uintptr_t)1;
    assert_int_equal(xd_jid_make(s_("a@b"), s_("example.com"), XD_STR_NULL, &j),
                     XD_EJID_LOCAL_INVALID);
    assert_null(j);
    assert_int_equal(xd_jid_make(s_("a/b"), s_("example.com"), XD_STR_NULL, &j),
                     XD_EJID_LOCAL_INVALID);
    assert_int_equal(xd_jid_make(s_("a"), XD_STR_NULL, XD_STR_NULL, &j),
                     XD_EJID_DOMAIN_EMPTY);
    assert_int_equal(xd_jid_make(s_("a"), s_("ex/ample.com"), XD_STR_NULL, &j),
                     XD_EJID_DOMAIN_INVALID);
    assert_int_equal(xd_jid_make(s_("a"), s_("ex@ample.com"), XD_STR_NULL, &j),
                     XD_EJID_DOMAIN_INVALID);
    assert_int_equal(xd_jid_make(s_("a"), s_("example.com"), s_("\x01"), &j),
                     XD_EJID_RES_INVALID);
}

static void
test_jid__prep_parts(void **state)
{
    (void)state;
    char *p = NULL;
    assert_int_equal(xd_jid_prep_local(s_("ＪＵＬＩＥＴ"), &p), 0);
    assert_string_equal(p, "juliet");
    xd_free(p);
    assert_int_equal(xd_jid_prep_domain(s_("Example.COM."), &p), 0);
    assert_string_equal(p, "example.com");
    xd_free(p);
    assert_int_equal(xd_jid_prep_domain(s_("XN--4CA0BS.example"), &p), 0);
    assert_string_equal(p, "äöü.example");
    xd_free(p);
    assert_int_equal(xd_jid_prep_resource(s_("Foo\xc2\xa0" "Bar"), &p), 0);
    assert_string_equal(p, "Foo Bar");
    xd_free(p);

    assert_int_equal(xd_jid_prep_local(XD_STR_NULL, &p), XD_EJID_LOCAL_EMPTY);
    assert_null(p);
    assert_int_equal(xd_jid_prep_domain(XD_STR_NULL, &p), XD_EJID_DOMAIN_EMPTY);
    assert_int_equal(xd_jid_prep_resource(XD_STR_NULL, &p), XD_EJID_RES_EMPTY);
    assert_int_equal(xd_jid_prep_local(s_("a b"), &p), XD_EJID_LOCAL_INVALID);
    assert_int_equal(xd_jid_prep_domain(s_("a_b"), &p), XD_EJID_DOMAIN_INVALID);
    assert_int_equal(xd_jid_prep_resource(s_("\x01"), &p), XD_EJID_RES_INVALID);
    assert_null(p);
}

/* Normalisation is idempotent: the full string of a JID parses to itself
 * (RFC8264 7).  The fuzz target checks the same on arbitrary input. */
static void
test_jid__reparse_is_fixed_point(void **state)
{
    (void)state;
    static const char *const in[] = {
        "ΣΑΣ@ÄÖÜ.Example./Res ource",
        "ＪＵＬＩＥＴ@ｅｘａｍｐｌｅ.com/ｆｏｏ",
        "E\xcc\x81@xn--4ca0bs.example/e\xcc\x81",
        "u@[2001:0DB8::0:1]/\xe3\x80\x80x",
        ("\xe2\x84\xaa" "elvin@example.com"), /* KELVIN SIGN */
        "İstanbul@example.com",
    };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        xd_jid_t *a, *b;
        if (xd_jid_parse(s_(in[i]), &a) != 0)
            fail_msg("parse \"%s\" failed", in[i]);
        assert_int_equal(xd_jid_parse(xd_jid_full_str(a), &b), 0);
        assert_true(xd_jid_eq(a, b));
        xd_jid_unref(a);
        xd_jid_unref(b);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jid__rfc7622_valid_examples),
        cmocka_unit_test(test_jid__rfc7622_invalid_examples),
        cmocka_unit_test(test_jid__leading_space_in_resource_is_valid),
        cmocka_unit_test(test_jid__sigma_and_sharp_s),
        cmocka_unit_test(test_jid__split),
        cmocka_unit_test(test_jid__utf8),
        cmocka_unit_test(test_jid__length_limits),
        cmocka_unit_test(test_jid__domain_ascii),
        cmocka_unit_test(test_jid__domain_trailing_dot),
        cmocka_unit_test(test_jid__domain_idn),
        cmocka_unit_test(test_jid__domain_ip_literals),
        cmocka_unit_test(test_jid__local_case_mapping),
        cmocka_unit_test(test_jid__local_width_mapping),
        cmocka_unit_test(test_jid__local_nfc),
        cmocka_unit_test(test_jid__local_prohibited_ascii),
        cmocka_unit_test(test_jid__local_identifier_class),
        cmocka_unit_test(test_jid__local_context_rules),
        cmocka_unit_test(test_jid__local_bidi_rule),
        cmocka_unit_test(test_jid__resource_opaque_string),
        cmocka_unit_test(test_jid__accessors),
        cmocka_unit_test(test_jid__equality),
        cmocka_unit_test(test_jid__bare),
        cmocka_unit_test(test_jid__refcount),
        cmocka_unit_test(test_jid__make),
        cmocka_unit_test(test_jid__bare_text),
        cmocka_unit_test(test_jid__prep_parts),
        cmocka_unit_test(test_jid__reparse_is_fixed_point),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
