/*
 * test_xml.c — unit tests for the streaming XMPP XML parser and the
 * one-shot element parser (src/xml/parse.c; API in src/xml/parse.h and
 * include/xmppd/el.h).
 *
 * Where it sits: tests/unit/, built by tests/unit/meson.build against
 * libxmppd and cmocka; run with `meson test --suite unit test_xml`.
 *
 * A recorder turns every parser callback into one line of text ("open …",
 * "stanza <bytes>", "close", "error CODE"), so tests compare whole
 * conversations.  Covers: header and namespace reporting, content-namespace
 * mapping, split feeds at every byte boundary, every RFC 6120 11
 * restriction, billion laughs, invalid UTF-8 (overlong, surrogates, above
 * U+10FFFF, truncated), size/header/depth/attribute limits, a 10 MB stanza
 * with bounded memory (parser accounting and VmRSS), reset and pause from a
 * handler with the consumed count, and errors reported exactly once.
 * The push-parser checks (libxml2 holds back bytes it cannot decide on
 * yet): every event fires by the time the last byte of its markup was fed,
 * whitespace keepalives never count toward a stanza, pausing after every
 * stanza (each resume restarts libxml2 behind a synthetic stream header)
 * gives the same conversation, namespace and attribute round trips, and
 * libxml2's memory returns after big stanzas and many distinct names.
 * Invariants: each test frees what it makes (ASan checks for leaks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "xml/parse.h"
#include "xmppd/alloc.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/ns.h"

/* ------------------------------------------------------------------------ */
/* Recorder                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct rec {
    char *log;              /* every event, one per line */
    size_t len, cap;
    int errors;             /* error callbacks seen */
    int last_err;           /* code of the last one */
    int stanzas;            /* stanzas seen */
    xd_xml_parser_t *p;     /* for handlers that pause or reset */
    const char *reset_on;   /* reset when a stanza with this name arrives */
    const char *pause_on;   /* pause when a stanza with this name arrives */
    bool pause_all;         /* pause after every stanza and the stream close */
    bool pause_on_open;     /* pause in stream_open */
    bool pause_then_resume; /* pause and resume within the stanza handler */
    int opens;              /* stream_open calls seen */
    int closes;             /* stream_close calls seen */
} rec_t;

static void
rec_add(rec_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
rec_add(rec_t *r, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    if (r->cap - r->len < (size_t)n + 2) {
        r->cap = (r->cap + (size_t)n + 2) * 2;
        r->log = xd_realloc(r->log, r->cap);
    }
    memcpy(r->log + r->len, line, (size_t)n);
    r->len += (size_t)n;
    r->log[r->len++] = '\n';
    r->log[r->len] = '\0';
}

static void
rec_open(void *ud, const xd_el_t *h)
{
    rec_t *r = ud;
    const char *content_ns = xd_xml_parser_stream_ns(r->p);
    const char *lang = xd_el_attr(h, "xml:lang");
    rec_add(r, "open %s:%s ns=%s content=%s to=%s version=%s lang=%s",
            xd_el_prefix(h) ? xd_el_prefix(h) : "-", xd_el_name(h),
            xd_el_ns(h) ? xd_el_ns(h) : "-", content_ns ? content_ns : "-",
            xd_el_attr(h, "to") ? xd_el_attr(h, "to") : "-",
            xd_el_attr(h, "version") ? xd_el_attr(h, "version") : "-", lang ? lang : "-");
    r->opens++;
    if (r->pause_on_open)
        xd_xml_parser_pause(r->p);
}

static void
rec_stanza(void *ud, xd_stanza_t *st)
{
    rec_t *r = ud;
    const xd_el_t *root = xd_stanza_root(st);
    r->stanzas++;
    rec_add(r, "stanza %s", xd_stanza_bytes(st, NULL));
    if (r->reset_on && strcmp(xd_el_name(root), r->reset_on) == 0)
        xd_xml_parser_reset(r->p);
    if (r->pause_on && strcmp(xd_el_name(root), r->pause_on) == 0)
        xd_xml_parser_pause(r->p);
    if (r->pause_all)
        xd_xml_parser_pause(r->p);
    if (r->pause_then_resume) {
        /* A hold taken and released within one element (xmppd/input.h). */
        xd_xml_parser_pause(r->p);
        xd_xml_parser_resume(r->p);
    }
    xd_stanza_unref(st);
}

static void
rec_close(void *ud)
{
    rec_t *r = ud;
    rec_add(r, "close");
    r->closes++;
    if (r->pause_all)
        xd_xml_parser_pause(r->p);
}

static void
rec_error(void *ud, int code, const char *detail)
{
    rec_t *r = ud;
    r->errors++;
    r->last_err = code;
    assert_non_null(detail);
    rec_add(r, "error %s", xd_err_name(code));
}

static const xd_xml_handlers_t rec_handlers = { rec_open, rec_stanza, rec_close, rec_error };

static xd_xml_parser_t *
rec_parser(rec_t *r, const xd_xml_limits_t *lim)
{
    memset(r, 0, sizeof(*r));
    r->p = xd_xml_parser_new(&rec_handlers, r, lim);
    return r->p;
}

static void
rec_done(rec_t *r)
{
    xd_xml_parser_free(r->p);
    xd_free(r->log);
    r->log = NULL;
}

/* Feeds `s` in one call and returns the code. */
static int
feed_all(rec_t *r, const char *s, size_t len)
{
    size_t used = 0;
    int rc = xd_xml_parser_feed(r->p, s, len, &used);
    if (rc == 0)
        assert_int_equal(used, len);
    return rc;
}

static int
feed_str(rec_t *r, const char *s)
{
    return feed_all(r, s, strlen(s));
}

#define HDR_C                                                                           \
    "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xml:lang='en'" \
    " xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

#define OPEN_C                                                                      \
    "open stream:stream ns=http://etherx.jabber.org/streams content=jabber:client " \
    "to=example.com version=1.0 lang=en\n"

/* A stream exercising most features, used for the split-feed test. */
static const char sample_stream[] =
    HDR_C "\n  <message to='juliet@example.com' type='chat' id='m1'>"
          "<body>Wherefore art thou, &lt;Romeo&gt;? \xE2\x82\xAC \xF0\x9F\x98\x80</body>"
          "<thread>t1</thread><request xmlns='urn:xmpp:receipts'/></message> "
          "<presence><show>away</show><c xmlns='http://jabber.org/protocol/caps' "
          "hash='sha-1' node='n' ver='v='/></presence>\n"
          "<iq type='result' id='r'><query xmlns='jabber:iq:roster'><item jid='a@b' "
          "name='A &amp; B'><group>G</group></item></query></iq>"
          "<a:x xmlns:a='urn:a' a:k='1' xml:lang='de'>t<![CDATA[<raw>]]>&#x263A;</a:x>"
          "</stream:stream>";

static const char sample_log[] =
    OPEN_C "stanza <message to='juliet@example.com' type='chat' id='m1'><body>Wherefore art "
           "thou, &lt;Romeo&gt;? \xE2\x82\xAC \xF0\x9F\x98\x80</body><thread>t1</thread>"
           "<request xmlns='urn:xmpp:receipts'/></message>\n"
           "stanza <presence><show>away</show><c xmlns='http://jabber.org/protocol/caps' "
           "hash='sha-1' node='n' ver='v='/></presence>\n"
           "stanza <iq type='result' id='r'><query xmlns='jabber:iq:roster'><item jid='a@b' "
           "name='A &amp; B'><group>G</group></item></query></iq>\n"
           "stanza <a:x xmlns:a='urn:a' a:k='1' xml:lang='de'>t&lt;raw&gt;\xE2\x98\xBA</a:x>\n"
           "close\n";

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */
/* ------------------------------------------------------------------------ */

static void
test_xml__stream_events_in_order(void **state)
{
    (void)state;
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, sample_stream), 0);
    assert_string_equal(r.log, sample_log);
    assert_int_equal(r.errors, 0);
    rec_done(&r);
}

static void
test_xml__split_feeds_at_every_byte_boundary(void **state)
{
    (void)state;
    size_t n = sizeof(sample_stream) - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        rec_t r;
        rec_parser(&r, NULL);
        assert_int_equal(feed_all(&r, sample_stream, cut), 0);
        assert_int_equal(feed_all(&r, sample_stream + cut, n - cut), 0);
        if (strcmp(r.log, sample_log) != 0)
            fail_msg("split at %zu gives:\n%s", cut, r.log);
        rec_done(&r);
    }
    /* And one byte at a time. */
    rec_t r;
    rec_parser(&r, NULL);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(feed_all(&r, sample_stream + i, 1), 0);
    assert_string_equal(r.log, sample_log);
    rec_done(&r);
}

static void
test_xml__content_namespace_maps_to_null(void **state)
{
    (void)state;
    /* DESIGN.md 3: the same stanza bytes on a jabber:server stream. */
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, "<stream:stream xmlns='jabber:server' "
                                  "xmlns:stream='http://etherx.jabber.org/streams' "
                                  "xmlns:db='jabber:server:dialback'>"
                                  "<message xmlns='jabber:server'><body>x</body></message>"
                                  "<db:result from='a' to='b'>key</db:result>"
                                  "<message><forwarded xmlns='urn:xmpp:forward:0'>"
                                  "<message xmlns='jabber:server'/></forwarded></message>"),
                     0);
    assert_string_equal(r.log,
                        "open stream:stream ns=http://etherx.jabber.org/streams "
                        "content=jabber:server to=- version=- lang=-\n"
                        "stanza <message><body>x</body></message>\n"
                        "stanza <db:result xmlns:db='jabber:server:dialback' from='a' "
                        "to='b'>key</db:result>\n"
                        "stanza <message><forwarded xmlns='urn:xmpp:forward:0'>"
                        "<message xmlns='jabber:server'/></forwarded></message>\n");
    assert_string_equal(xd_xml_parser_stream_ns(r.p), XD_NS_SERVER);
    assert_string_equal(xd_el_name(xd_xml_parser_header(r.p)), "stream");
    rec_done(&r);
}

static void
test_xml__wrong_stream_namespace_is_reported_not_judged(void **state)
{
    (void)state;
    /* RFC 6120 4.9.3.10: the caller sends invalid-namespace; we report. */
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, "<stream:stream xmlns='jabber:foo' "
                                  "xmlns:stream='urn:wrong'>"),
                     0);
    assert_string_equal(r.log, "open stream:stream ns=urn:wrong content=jabber:foo to=- "
                               "version=- lang=-\n");
    rec_done(&r);
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, "<stream xmlns='http://etherx.jabber.org/streams'>"), 0);
    assert_string_equal(r.log, "open -:stream ns=http://etherx.jabber.org/streams "
                               "content=http://etherx.jabber.org/streams to=- version=- "
                               "lang=-\n");
    rec_done(&r);
}

static void
test_xml__whitespace_keepalives_are_ignored_and_do_not_count(void **state)
{
    (void)state;
    xd_xml_limits_t lim = { .max_stanza_bytes = 1024 };
    rec_t r;
    rec_parser(&r, &lim);
    assert_int_equal(feed_str(&r, HDR_C), 0);
    /* 100 keepalives of 64 bytes each: 6400 bytes of whitespace in total. */
    char ws[65];
    memset(ws, ' ', 64);
    ws[64] = '\0';
    for (int i = 0; i < 100; i++)
        assert_int_equal(feed_str(&r, ws), 0);
    assert_int_equal(feed_str(&r, "<presence/>"), 0);
    assert_string_equal(r.log, OPEN_C "stanza <presence/>\n");
    rec_done(&r);
}

static void
test_xml__syntax_error_has_position_and_is_reported_once(void **state)
{
    (void)state;
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C "<message><body>x</bogus></message>"), XD_EXML_SYNTAX);
    assert_int_equal(r.errors, 1);
    /* Dead afterwards: the same code, no second callback. */
    assert_int_equal(feed_str(&r, "<presence/>"), XD_EXML_SYNTAX);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.stanzas, 0);
    /* Reset revives it for a new stream. */
    xd_xml_parser_reset(r.p);
    assert_int_equal(feed_str(&r, HDR_C "<presence/>"), 0);
    assert_int_equal(r.stanzas, 1);
    rec_done(&r);
}

typedef struct detail_rec {
    char detail[256];
} detail_rec_t;

static void
detail_error(void *ud, int code, const char *detail)
{
    (void)code;
    snprintf(((detail_rec_t *)ud)->detail, sizeof(((detail_rec_t *)ud)->detail), "%s", detail);
}

static void
test_xml__syntax_error_detail_names_line_and_column(void **state)
{
    (void)state;
    detail_rec_t d = { "" };
    xd_xml_handlers_t h = { .error = detail_error };
    xd_xml_parser_t *p = xd_xml_parser_new(&h, &d, NULL);
    const char *in = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>\n<a><b></a>";
    assert_int_equal(xd_xml_parser_feed(p, in, strlen(in), NULL), XD_EXML_SYNTAX);
    assert_non_null(strstr(d.detail, "line 2"));
    assert_non_null(strstr(d.detail, "column"));
    xd_xml_parser_free(p);
}

static void
test_xml__undeclared_prefix_is_bad_ns(void **state)
{
    (void)state;
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C "<foo:bar/>"), XD_EXML_BAD_NS);
    assert_int_equal(r.last_err, XD_EXML_BAD_NS);
    rec_done(&r);
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C "<a q:x='1'/>"), XD_EXML_BAD_NS);
    rec_done(&r);
    /* A stream header without the stream prefix declared. */
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, "<stream:stream xmlns='jabber:client'>"), XD_EXML_BAD_NS);
    rec_done(&r);
}

/* ------------------------------------------------------------------------ */
/* Restrictions, RFC 6120 11                                                */
/* ------------------------------------------------------------------------ */

/* Feeds `body` after a stream header on a fresh parser; returns the code. */
static int
stream_rc(const char *prefix, const char *body)
{
    rec_t r;
    rec_parser(&r, NULL);
    int rc = feed_str(&r, prefix);
    if (rc == 0)
        rc = feed_str(&r, body);
    if (rc != 0) {
        assert_int_equal(r.errors, 1);
        assert_int_equal(r.last_err, rc);
    }
    rec_done(&r);
    return rc;
}

static void
test_xml__restricted_xml_is_rejected(void **state)
{
    (void)state;
    /* RFC6120 11.1 */
    assert_int_equal(stream_rc("", "<!DOCTYPE stream:stream>"), XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc("", "<!DOCTYPE s [<!ENTITY x 'y'>]><s>&x;</s>"),
                     XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc("", "<!DOCTYPE s SYSTEM 'http://example.com/x.dtd'><s/>"),
                     XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc(HDR_C, "<message><!-- hi --></message>"), XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc(HDR_C, "<!-- between stanzas -->"), XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc("", "<!-- before the stream -->"), XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc(HDR_C, "<message><?php echo 1; ?></message>"),
                     XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc(HDR_C, "<?pi x?>"), XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc(HDR_C, "<message>&nbsp;</message>"), XD_EXML_RESTRICTED);
    assert_int_equal(stream_rc(HDR_C, "<message to='&foo;'/>"), XD_EXML_RESTRICTED);
    /* The five predefined entities and character references are fine. */
    assert_int_equal(stream_rc(HDR_C, "<m a='&lt;&gt;&amp;&quot;&apos;&#65;&#x42;'/>"), 0);
}

static void
test_xml__xml_declaration_only_at_start_and_utf8(void **state)
{
    (void)state;
    /* RFC6120 11.5, 11.6 */
    assert_int_equal(stream_rc("", "<?xml version='1.0' encoding='UTF-8'?><stream:stream "
                                   "xmlns:stream='http://etherx.jabber.org/streams'>"),
                     0);
    assert_int_equal(stream_rc("", "<?xml version='1.0' encoding='utf-8'?><s/>"), 0);
    assert_int_equal(stream_rc("", "<?xml version='1.0' encoding='ISO-8859-1'?><s/>"),
                     XD_EXML_ENCODING);
    assert_int_equal(stream_rc("", "<?xml version='1.0' encoding='UTF-16'?><s/>"),
                     XD_EXML_ENCODING);
    int rc = stream_rc(HDR_C, "<?xml version='1.0'?>");
    assert_true(rc == XD_EXML_SYNTAX || rc == XD_EXML_RESTRICTED);
    /* After a reset, a new stream may start with a declaration again. */
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C), 0);
    xd_xml_parser_reset(r.p);
    assert_int_equal(feed_str(&r, HDR_C "<presence/>"), 0);
    assert_int_equal(r.stanzas, 1);
    rec_done(&r);
}

static void
test_xml__billion_laughs_is_stopped_at_the_doctype(void **state)
{
    (void)state;
    const char *bomb =
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        "<!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
        "<!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>"
        "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>"
        "<!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>"
        "<!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>"
        "<!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>"
        "<!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>"
        "<!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>"
        "<!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>"
        "]><lolz>&lol9;</lolz>";
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, bomb), XD_EXML_RESTRICTED);
    assert_true(xd_xml_parser_mem_peak(r.p) < 64 * 1024);
    rec_done(&r);
    xd_el_t *el = NULL;
    assert_int_equal(xd_el_parse(bomb, strlen(bomb), &el), XD_EXML_RESTRICTED);
    assert_null(el);
}

static void
test_xml__invalid_utf8_is_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xC0\x80",         /* overlong NUL */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\xAF",     /* overlong '/' */
        "\xF0\x80\x80\xAF", /* overlong '/' */
        "\xED\xA0\x80",     /* surrogate U+D800 */
        "\xED\xBF\xBF",     /* surrogate U+DFFF */
        "\xF4\x90\x80\x80", /* U+110000 */
        "\xF5\x80\x80\x80", /* lead byte past U+10FFFF */
        "\xFF",             /* never valid */
        "\x80",             /* lone continuation */
        "\xE2\x82<",        /* truncated, then markup */
        "\xC3",             /* truncated at the end of the element */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char body[64], attr[64];
        snprintf(body, sizeof(body), "<m>%s</m>", bad[i]);
        snprintf(attr, sizeof(attr), "<m a='%s'/>", bad[i]);
        if (stream_rc(HDR_C, body) != XD_EXML_UTF8)
            fail_msg("text case %zu not rejected as UTF-8", i);
        if (stream_rc(HDR_C, attr) != XD_EXML_UTF8)
            fail_msg("attribute case %zu not rejected as UTF-8", i);
        xd_el_t *el = NULL;
        assert_int_equal(xd_el_parse(body, strlen(body), &el), XD_EXML_UTF8);
    }
    /* Truncated at the very end of a one-shot document. */
    xd_el_t *el = NULL;
    assert_int_equal(xd_el_parse("<m/>\xE2\x82", 6, &el), XD_EXML_UTF8);
    /* Valid boundaries are accepted. */
    assert_int_equal(stream_rc(HDR_C, "<m>\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80"
                                      "\xEF\xBF\xBD\xF0\x90\x80\x80\xF4\x8F\xBF\xBF</m>"),
                     0);
    /* Control characters are not XML characters: a syntax error. */
    assert_int_equal(stream_rc(HDR_C, "<m>\x01</m>"), XD_EXML_SYNTAX);
}

static void
test_xml__utf8_split_across_feeds_is_fine(void **state)
{
    (void)state;
    const char *s = HDR_C "<m>\xF0\x9F\x98\x80\xE2\x82\xAC</m>";
    size_t n = strlen(s);
    for (size_t cut = n - 15; cut < n - 4; cut++) {
        rec_t r;
        rec_parser(&r, NULL);
        assert_int_equal(feed_all(&r, s, cut), 0);
        assert_int_equal(feed_all(&r, s + cut, n - cut), 0);
        assert_int_equal(r.stanzas, 1);
        rec_done(&r);
    }
}

/* ------------------------------------------------------------------------ */
/* Limits                                                                   */
/* ------------------------------------------------------------------------ */

/* A stanza of exactly `size` bytes: <m>xxx…</m>. */
static char *
stanza_of(size_t size)
{
    char *s = xd_malloc(size + 1);
    memcpy(s, "<m>", 3);
    memset(s + 3, 'x', size - 7);
    memcpy(s + size - 4, "</m>", 4);
    s[size] = '\0';
    return s;
}

static void
test_xml__stanza_size_limit(void **state)
{
    (void)state;
    xd_xml_limits_t lim = { .max_stanza_bytes = 1000 };
    for (int split = 0; split < 2; split++) {
        char *ok = stanza_of(1000), *big = stanza_of(1001);
        rec_t r;
        rec_parser(&r, &lim);
        assert_int_equal(feed_str(&r, HDR_C), 0);
        if (split) {
            assert_int_equal(feed_all(&r, ok, 500), 0);
            assert_int_equal(feed_all(&r, ok + 500, 500), 0);
        } else {
            assert_int_equal(feed_str(&r, ok), 0);
        }
        assert_int_equal(feed_str(&r, ok), 0);
        assert_int_equal(r.stanzas, 2);
        assert_int_equal(feed_str(&r, big), XD_EXML_TOO_BIG);
        assert_int_equal(r.stanzas, 2);
        assert_int_equal(r.last_err, XD_EXML_TOO_BIG);
        rec_done(&r);
        xd_free(ok);
        xd_free(big);
    }
    /* Two stanzas of 600 bytes in one feed are fine; the count restarts. */
    rec_t r;
    rec_parser(&r, &lim);
    char *a = stanza_of(600);
    char buf[1300];
    snprintf(buf, sizeof(buf), "%s%s", a, a);
    assert_int_equal(feed_str(&r, HDR_C), 0);
    assert_int_equal(feed_str(&r, buf), 0);
    assert_int_equal(r.stanzas, 2);
    rec_done(&r);
    xd_free(a);
}

static void
test_xml__header_size_limit(void **state)
{
    (void)state;
    xd_xml_limits_t lim = { .max_header_bytes = 256 };
    rec_t r;
    rec_parser(&r, &lim);
    char hdr[1024];
    snprintf(hdr, sizeof(hdr),
             "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='%0300d'>", 0);
    assert_int_equal(feed_str(&r, hdr), XD_EXML_TOO_BIG);
    rec_done(&r);
    rec_parser(&r, &lim);
    assert_int_equal(feed_str(&r, HDR_C), 0);
    rec_done(&r);
}

static void
test_xml__depth_limit(void **state)
{
    (void)state;
    for (unsigned depth = 31; depth <= 33; depth++) {
        char buf[1024] = HDR_C;
        for (unsigned i = 0; i < depth; i++)
            strcat(buf, "<d>");
        for (unsigned i = 0; i < depth; i++)
            strcat(buf, "</d>");
        int rc = stream_rc("", buf);
        assert_int_equal(rc, depth <= 32 ? 0 : XD_EXML_TOO_DEEP);
    }
    xd_el_t *el = NULL;
    char doc[1024] = "";
    for (int i = 0; i < 40; i++)
        strcat(doc, "<d>");
    for (int i = 0; i < 40; i++)
        strcat(doc, "</d>");
    assert_int_equal(xd_el_parse(doc, strlen(doc), &el), XD_EXML_TOO_DEEP);
}

static void
test_xml__attribute_limit(void **state)
{
    (void)state;
    for (unsigned n = 63; n <= 65; n++) {
        char buf[4096] = HDR_C "<m";
        for (unsigned i = 0; i < n; i++) {
            char a[32];
            snprintf(a, sizeof(a), " a%u='%u'", i, i);
            strcat(buf, a);
        }
        strcat(buf, "/>");
        assert_int_equal(stream_rc("", buf), n <= 64 ? 0 : XD_EXML_TOO_MANY_ATTRS);
    }
}

/* VmRSS of this process in kB. */
static long
rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

#define BIG (10 * 1024 * 1024)

/* Feeds a 10 MB top-level element `kind` (text, attribute value, tag name)
 * in one feed or in 4 KB feeds; must fail with TOO_BIG in bounded memory. */
static void
check_huge(int kind, bool small_feeds)
{
    char *buf = xd_malloc(BIG);
    size_t off = 0;
    const char *start = kind == 0 ? "<message><body>" : kind == 1 ? "<message to='" : "<m";
    memcpy(buf, start, strlen(start));
    off = strlen(start);
    memset(buf + off, 'a', BIG - off);
    /* Touch the whole buffer first so its pages do not count as growth. */
    long before = rss_kb();

    rec_t r;
    rec_parser(&r, NULL); /* default limit: 65536 */
    assert_int_equal(feed_str(&r, HDR_C), 0);
    int rc = 0;
    if (small_feeds) {
        for (size_t i = 0; i < BIG && rc == 0; i += 4096)
            rc = feed_all(&r, buf + i, 4096);
    } else {
        rc = feed_all(&r, buf, BIG);
    }
    assert_int_equal(rc, XD_EXML_TOO_BIG);
    assert_int_equal(r.errors, 1);
    size_t peak = xd_xml_parser_mem_peak(r.p);
    long after = rss_kb();
    /* The parser's own accounting: about twice the limit plus constant. */
    if (peak > 2 * 65536 + 64 * 1024)
        fail_msg("kind %d small=%d: parser peak %zu bytes", kind, small_feeds, peak);
    /* And the process did not grow by anything like the input. */
    if (before > 0 && after > 0 && after - before > 2048)
        fail_msg("kind %d small=%d: RSS grew by %ld kB", kind, small_feeds, after - before);
    rec_done(&r);
    xd_free(buf);
}

static void
test_xml__ten_megabyte_stanza_fails_in_bounded_memory(void **state)
{
    (void)state;
    for (int kind = 0; kind < 3; kind++) {
        check_huge(kind, false);
        check_huge(kind, true);
    }
}

static void
test_xml__memory_returns_after_stanzas(void **state)
{
    (void)state;
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C), 0);
    char *s = stanza_of(60000);
    assert_int_equal(feed_str(&r, s), 0);
    xd_free(s);
    assert_int_equal(feed_str(&r, "<presence/>"), 0);
    assert_int_equal(r.stanzas, 2);
    /* Between stanzas the parser keeps libxml2's context and little else. */
    assert_true(xd_xml_parser_mem(r.p) < 200 * 1024);
    rec_done(&r);
}

/* ------------------------------------------------------------------------ */
/* Reset and pause from a handler                                           */
/* ------------------------------------------------------------------------ */

static void
test_xml__reset_mid_buffer_reports_consumed(void **state)
{
    (void)state;
    /* RFC 6120 5.4.3.3: after <starttls/> the rest of the buffer is TLS. */
    const char *first = HDR_C "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s%s<presence/>", first, HDR_C);
    rec_t r;
    rec_parser(&r, NULL);
    r.reset_on = "starttls";
    size_t used = 0;
    assert_int_equal(xd_xml_parser_feed(r.p, buf, strlen(buf), &used), 0);
    assert_int_equal(used, strlen(first));
    assert_string_equal(r.log, OPEN_C "stanza <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n");
    assert_null(xd_xml_parser_header(r.p));
    /* The rest is a new stream, XML declaration included. */
    assert_int_equal(feed_str(&r, buf + used), 0);
    assert_string_equal(r.log, OPEN_C "stanza <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n"
                               OPEN_C "stanza <presence/>\n");
    rec_done(&r);
}

static void
test_xml__reset_on_every_split(void **state)
{
    (void)state;
    const char *first = HDR_C "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AGE=</auth>";
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s%s<iq type='set' id='b'/>", first, HDR_C);
    size_t n = strlen(buf);
    for (size_t cut = 1; cut < n; cut++) {
        rec_t r;
        rec_parser(&r, NULL);
        r.reset_on = "auth";
        size_t used = 0, total = 0;
        assert_int_equal(xd_xml_parser_feed(r.p, buf, cut, &used), 0);
        total += used;
        /* Re-feed whatever was not consumed, then the rest. */
        while (total < n) {
            assert_int_equal(xd_xml_parser_feed(r.p, buf + total, n - total, &used), 0);
            total += used;
        }
        assert_int_equal(r.stanzas, 2);
        if (strstr(r.log, "stanza <iq type='set' id='b'/>") == NULL)
            fail_msg("cut %zu:\n%s", cut, r.log);
        rec_done(&r);
    }
}

/* A pause cancelled by a resume in the same handler stops nothing. */
static void
test_xml__pause_resumed_in_the_handler(void **state)
{
    (void)state;
    const char *in = HDR_C "<message id='1'/><presence id='2'/>";
    rec_t r;
    rec_parser(&r, NULL);
    r.pause_then_resume = true;
    size_t used = 0, n = strlen(in);
    assert_int_equal(xd_xml_parser_feed(r.p, in, n, &used), 0);
    assert_false(xd_xml_parser_paused(r.p));
    assert_int_equal(used, n);
    assert_int_equal(r.stanzas, 2);
    rec_done(&r);
}

static void
test_xml__pause_and_resume(void **state)
{
    (void)state;
    const char *in = HDR_C "<message id='1'/><message id='2'/> <presence id='3'/>";
    rec_t r;
    rec_parser(&r, NULL);
    r.pause_on = "message";
    size_t used = 0, total = 0, n = strlen(in);
    assert_int_equal(xd_xml_parser_feed(r.p, in, n, &used), 0);
    assert_true(xd_xml_parser_paused(r.p));
    assert_int_equal(used, strlen(HDR_C "<message id='1'/>"));
    assert_int_equal(r.stanzas, 1);
    total = used;
    /* While paused nothing is consumed. */
    assert_int_equal(xd_xml_parser_feed(r.p, in + total, n - total, &used), 0);
    assert_int_equal(used, 0);
    assert_int_equal(r.stanzas, 1);
    xd_xml_parser_resume(r.p);
    assert_int_equal(xd_xml_parser_feed(r.p, in + total, n - total, &used), 0);
    assert_int_equal(r.stanzas, 2);
    assert_int_equal(used, strlen("<message id='2'/>"));
    total += used;
    xd_xml_parser_resume(r.p);
    assert_int_equal(xd_xml_parser_feed(r.p, in + total, n - total, &used), 0);
    assert_int_equal(used, n - total);
    assert_false(xd_xml_parser_paused(r.p));
    assert_string_equal(r.log, OPEN_C "stanza <message id='1'/>\nstanza <message id='2'/>\n"
                                      "stanza <presence id='3'/>\n");
    rec_done(&r);
}

static void
test_xml__pause_then_reset_drops_buffered_bytes(void **state)
{
    (void)state;
    /* SASL: pause on <auth/>, decide later; success resets the stream. */
    const char *first = HDR_C "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s%s<presence/>", first, HDR_C);
    rec_t r;
    rec_parser(&r, NULL);
    r.pause_on = "auth";
    size_t used = 0;
    assert_int_equal(xd_xml_parser_feed(r.p, buf, strlen(buf), &used), 0);
    assert_int_equal(used, strlen(first));
    xd_xml_parser_reset(r.p);
    assert_false(xd_xml_parser_paused(r.p));
    assert_int_equal(feed_str(&r, buf + used), 0);
    assert_int_equal(r.stanzas, 2);
    rec_done(&r);
}

/* ------------------------------------------------------------------------ */
/* Push-parser behaviour: timing, keepalives, pause/resume, namespaces      */
/* ------------------------------------------------------------------------ */

/* Feeds `prefix` whole, then `s` one byte at a time: the recorder must see
 * its first new event exactly when the last byte arrives (a client sends one
 * stanza and waits for the answer), and the log must end up as `want`.
 * Then the same input in one piece, and with `s` split before its last byte. */
static void
check_event_at_last_byte(const char *prefix, const char *s, const char *want)
{
    size_t n = strlen(s);
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, prefix), 0);
    size_t before = r.len;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(feed_all(&r, s + i, 1), 0);
        bool last = i + 1 == n;
        if ((r.len != before) != last)
            fail_msg("%s: log %s after byte %zu of %zu:\n%s", s, last ? "unchanged" : "changed",
                     i + 1, n, r.log);
    }
    assert_int_equal(r.errors, 0);
    assert_string_equal(r.log, want);
    rec_done(&r);

    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, prefix), 0);
    assert_int_equal(feed_str(&r, s), 0);
    assert_string_equal(r.log, want);
    rec_done(&r);

    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, prefix), 0);
    assert_int_equal(feed_all(&r, s, n - 1), 0);
    assert_int_equal(r.len, before);
    assert_int_equal(feed_all(&r, s + n - 1, 1), 0);
    assert_string_equal(r.log, want);
    rec_done(&r);
}

static void
test_xml__events_fire_when_their_last_byte_arrives(void **state)
{
    (void)state;
    static const char *const stanzas[][2] = {
        { "<presence/>", "<presence/>" },
        { "<message to='a@b' type='chat'><body>hi</body></message>",
          "<message to='a@b' type='chat'><body>hi</body></message>" },
        { "<message><body>a &amp; b &#x263A;</body></message>",
          "<message><body>a &amp; b \xE2\x98\xBA</body></message>" },
        { "<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>",
          "<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>" },
        { "<message a='x>y'><body>1 > 0</body></message>",
          "<message a='x&gt;y'><body>1 &gt; 0</body></message>" },
        { "<m><![CDATA[<x>]]></m>", "<m>&lt;x&gt;</m>" },
        { "<m>line\r\nnext\r</m>", "<m>line\nnext\n</m>" },
        { "<m>\xE2\x82\xAC</m>", "<m>\xE2\x82\xAC</m>" },
        { "<m >  </m >", "<m>  </m>" },
        { "<m\n a = \"1\"\n/>", "<m a='1'/>" },
        { "<a><b><c>deep</c></b>tail</a>", "<a><b><c>deep</c></b>tail</a>" },
    };
    for (size_t i = 0; i < sizeof(stanzas) / sizeof(stanzas[0]); i++) {
        char want[512];
        snprintf(want, sizeof(want), OPEN_C "stanza %s\n", stanzas[i][1]);
        check_event_at_last_byte(HDR_C, stanzas[i][0], want);
    }
    /* The stream header itself (the server answers it at once) ... */
    check_event_at_last_byte("", HDR_C, OPEN_C);
    check_event_at_last_byte("", "<stream:stream xmlns='jabber:client' "
                                 "xmlns:stream='http://etherx.jabber.org/streams'>",
                             "open stream:stream ns=http://etherx.jabber.org/streams "
                             "content=jabber:client to=- version=- lang=-\n");
    /* ... and its end. */
    check_event_at_last_byte(HDR_C "<presence/>", "</stream:stream>",
                             OPEN_C "stanza <presence/>\nclose\n");
    /* A stanza followed by the start of the next one in the same feed. */
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C "<presence id='1'/><message><bo"), 0);
    assert_string_equal(r.log, OPEN_C "stanza <presence id='1'/>\n");
    assert_int_equal(feed_str(&r, "dy>x</body></message>"), 0);
    assert_string_equal(r.log, OPEN_C "stanza <presence id='1'/>\n"
                                      "stanza <message><body>x</body></message>\n");
    rec_done(&r);
}

static void
test_xml__single_byte_keepalives_never_count(void **state)
{
    (void)state;
    /* RFC6120 4.6.1: whitespace pings.  libxml2 reports text only once a
     * '<' or 300 bytes follow; held-back whitespace must not count toward
     * the next stanza, even with a limit far below 300 bytes. */
    xd_xml_limits_t lim = { .max_stanza_bytes = 64 };
    rec_t r;
    rec_parser(&r, &lim);
    assert_int_equal(feed_str(&r, HDR_C), 0);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(feed_str(&r, i % 3 ? " " : "\n"), 0);
    char s[65];
    memcpy(s, "<m>", 3);
    memset(s + 3, 'x', 57);
    memcpy(s + 60, "</m>", 5); /* exactly 64 bytes */
    assert_int_equal(feed_str(&r, s), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(feed_str(&r, "\t"), 0);
    assert_int_equal(feed_str(&r, " \r\n <presence/>  \n  <presence id='2'/>\n"), 0);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.stanzas, 3);
    /* Whitespace and a stanza in one feed: still only the stanza counts. */
    char big[1024];
    memset(big, ' ', 500);
    memcpy(big + 500, s, 65);
    assert_int_equal(feed_str(&r, big), 0);
    assert_int_equal(r.stanzas, 4);
    /* But a 65-byte stanza after whitespace is still too big. */
    char s65[3 + 65 + 1];
    memcpy(s65, "   <m>", 6);
    memset(s65 + 6, 'x', 58);
    memcpy(s65 + 64, "</m>", 5);
    assert_int_equal(feed_str(&r, s65), XD_EXML_TOO_BIG);
    rec_done(&r);
}

static void
test_xml__stream_close_then_only_whitespace(void **state)
{
    (void)state;
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C "<presence/>\n</stream:stream>\n  "), 0);
    assert_string_equal(r.log, OPEN_C "stanza <presence/>\nclose\n");
    assert_int_equal(feed_str(&r, " \n"), 0);
    assert_int_equal(feed_str(&r, "<presence/>"), XD_EXML_SYNTAX);
    assert_int_equal(r.errors, 1);
    rec_done(&r);
    /* The same when the close paused the parser: what follows is checked
     * by a fresh libxml2 context that is past its root element too. */
    rec_parser(&r, NULL);
    r.pause_all = true;
    const char *in = HDR_C "<presence/></stream:stream>\n <presence/>";
    size_t used = 0, total = 0;
    assert_int_equal(xd_xml_parser_feed(r.p, in, strlen(in), &used), 0);
    total += used;
    xd_xml_parser_resume(r.p);
    assert_int_equal(xd_xml_parser_feed(r.p, in + total, strlen(in) - total, &used), 0);
    total += used;
    assert_int_equal(r.closes, 1);
    assert_int_equal(total, strlen(HDR_C "<presence/></stream:stream>"));
    xd_xml_parser_resume(r.p);
    assert_int_equal(feed_str(&r, "\n "), 0);
    assert_int_equal(feed_str(&r, "<presence/>"), XD_EXML_SYNTAX);
    assert_int_equal(r.stanzas, 1);
    rec_done(&r);
    /* A close tag that does not match the header is not well-formed. */
    assert_int_equal(stream_rc(HDR_C, "</stream:streams>"), XD_EXML_SYNTAX);
    assert_int_equal(stream_rc(HDR_C, "</stream>"), XD_EXML_SYNTAX);
}

static void
test_xml__xml_declaration_with_and_without_encoding(void **state)
{
    (void)state;
    /* RFC6120 11.5, 11.6 */
    static const char *const good[] = {
        "",
        "<?xml version='1.0'?>",
        "<?xml version=\"1.0\"?>\n",
        "<?xml version='1.0' encoding='UTF-8'?>",
        "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>",
        "\xEF\xBB\xBF<?xml version='1.0' encoding='UTF-8'?>", /* UTF-8 byte order mark */
    };
    static const char *const bad[] = {
        "<?xml version='1.0' encoding='ISO-8859-1'?>",
        "<?xml version='1.0' encoding='latin1'?>",
        "<?xml version='1.0' encoding='US-ASCII'?>",
        "<?xml version='1.0' encoding='UTF-16'?>",
        "<?xml version='1.0' encoding='UTF8'?>",
        "<?xml version='1.0' encoding='no-such-charset'?>",
    };
    const char *stream = "<stream:stream xmlns='jabber:client' "
                         "xmlns:stream='http://etherx.jabber.org/streams'><presence/>";
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char in[512];
        snprintf(in, sizeof(in), "%s%s", good[i], stream);
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            rec_t r;
            rec_parser(&r, NULL);
            if (bytewise) {
                for (size_t k = 0; in[k]; k++)
                    assert_int_equal(feed_all(&r, in + k, 1), 0);
            } else {
                assert_int_equal(feed_str(&r, in), 0);
            }
            if (r.opens != 1 || r.stanzas != 1)
                fail_msg("declaration %zu (bytewise %d):\n%s", i, bytewise, r.log);
            assert_string_equal(xd_xml_parser_stream_ns(r.p), XD_NS_CLIENT);
            rec_done(&r);
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char in[512];
        snprintf(in, sizeof(in), "%s%s", bad[i], stream);
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            rec_t r;
            rec_parser(&r, NULL);
            int rc = 0;
            if (bytewise) {
                for (size_t k = 0; in[k] && rc == 0; k++)
                    rc = feed_all(&r, in + k, 1);
            } else {
                rc = feed_str(&r, in);
            }
            if (rc != XD_EXML_ENCODING)
                fail_msg("declaration %zu (bytewise %d) gives %s", i, bytewise, xd_err_name(rc));
            assert_int_equal(r.opens, 0);
            assert_int_equal(r.errors, 1);
            rec_done(&r);
        }
    }
    /* The one-shot parser applies the same rule. */
    xd_el_t *el = NULL;
    const char *doc = "<?xml version='1.0' encoding='ISO-8859-1'?><a/>";
    assert_int_equal(xd_el_parse(doc, strlen(doc), &el), XD_EXML_ENCODING);
    doc = "<?xml version='1.0' encoding='UTF-8'?><a/>";
    assert_int_equal(xd_el_parse(doc, strlen(doc), &el), 0);
    xd_el_free(el);
}

static void
test_xml__xml_version_other_than_1_0_is_refused(void **state)
{
    (void)state;
    /* RFC6120 11.8: XML 1.0 only.  libxml2 warns about another 1.x and
     * parses on; it fails on anything else itself. */
    static const char *const bad[] = {
        "<?xml version='1.1'?>",
        "<?xml version=\"1.1\" encoding='UTF-8'?>",
        "<?xml version='1.10'?>",
        "<?xml version='2.0'?>",
    };
    const char *stream = "<stream:stream xmlns='jabber:client' "
                         "xmlns:stream='http://etherx.jabber.org/streams'><presence/>";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char in[512];
        snprintf(in, sizeof(in), "%s%s", bad[i], stream);
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            rec_t r;
            rec_parser(&r, NULL);
            int rc = 0;
            if (bytewise) {
                for (size_t k = 0; in[k] && rc == 0; k++)
                    rc = feed_all(&r, in + k, 1);
            } else {
                rc = feed_str(&r, in);
            }
            if (rc != XD_EXML_VERSION)
                fail_msg("declaration %zu (bytewise %d) gives %s", i, bytewise, xd_err_name(rc));
            assert_int_equal(r.opens, 0);
            assert_int_equal(r.errors, 1);
            rec_done(&r);
        }
    }
    /* After a reset, the new stream's declaration is checked again. */
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C), 0); /* declares 1.0 */
    xd_xml_parser_reset(r.p);
    static const char hdr[] = HDR_C, decl[] = "<?xml version='1.0'?>";
    char again[512];
    snprintf(again, sizeof again, "<?xml version='1.1'?>%s", hdr + strlen(decl));
    assert_int_equal(feed_str(&r, again), XD_EXML_VERSION);
    assert_int_equal(r.opens, 1);
    rec_done(&r);
    /* The one-shot parser applies the same rule. */
    xd_el_t *el = NULL;
    const char *doc = "<?xml version='1.1'?><a/>";
    assert_int_equal(xd_el_parse(doc, strlen(doc), &el), XD_EXML_VERSION);
    assert_null(el);
}

/* The header of a jabber:server stream with one more prefix declared. */
#define HDR_S                                                                   \
    "<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' "  \
    "xmlns:stream='http://etherx.jabber.org/streams' to='b.example' version='1.0'>"

static const char ns_stream[] =
    HDR_S "<db:verify from='a.example' to='b.example' id='i1'>key</db:verify>"
          "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
          "</stream:error>"
          "<message xmlns='jabber:server'><p:x xmlns:p='urn:p' p:a='1' xml:lang='en'><p:y/>"
          "<z xmlns='urn:z'><w/></z></p:x><body>b</body></message>"
          "<iq><query xmlns='jabber:iq:roster'><item jid='c@d'/></query></iq>"
          "<foo xmlns='urn:foo'><bar/></foo>"
          "</stream:stream>";

static const char ns_log[] =
    "open stream:stream ns=http://etherx.jabber.org/streams content=jabber:server "
    "to=b.example version=1.0 lang=-\n"
    "stanza <db:verify xmlns:db='jabber:server:dialback' from='a.example' to='b.example' "
    "id='i1'>key</db:verify>\n"
    "stanza <stream:error xmlns:stream='http://etherx.jabber.org/streams'><not-well-formed "
    "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\n"
    "stanza <message><p:x xmlns:p='urn:p' p:a='1' xml:lang='en'><p:y/><z xmlns='urn:z'><w/>"
    "</z></p:x><body>b</body></message>\n"
    "stanza <iq><query xmlns='jabber:iq:roster'><item jid='c@d'/></query></iq>\n"
    "stanza <foo xmlns='urn:foo'><bar/></foo>\n"
    "close\n";

/* Records each stanza's root and first child namespaces and prefixes. */
static void
ns_stanza(void *ud, xd_stanza_t *st)
{
    rec_t *r = ud;
    const xd_el_t *root = xd_stanza_root(st);
    const xd_el_t *c = xd_el_first_child(root);
    rec_add(r, "%s %s %s / %s %s", xd_el_name(root), xd_el_prefix(root) ? xd_el_prefix(root) : "-",
            xd_el_ns(root) ? xd_el_ns(root) : "-", c ? xd_el_name(c) : "-",
            c && xd_el_ns(c) ? xd_el_ns(c) : "-");
    xd_stanza_unref(st);
}

static void
test_xml__prefixed_and_default_namespaces(void **state)
{
    (void)state;
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, ns_stream), 0);
    assert_string_equal(r.log, ns_log);
    rec_done(&r);

    /* What the tree says, not only the bytes. */
    xd_xml_handlers_t h = { .stanza = ns_stanza };
    memset(&r, 0, sizeof(r));
    r.p = xd_xml_parser_new(&h, &r, NULL);
    assert_int_equal(feed_str(&r, ns_stream), 0);
    assert_string_equal(r.log, "verify db jabber:server:dialback / - -\n"
                               "error stream http://etherx.jabber.org/streams / not-well-formed "
                               "urn:ietf:params:xml:ns:xmpp-streams\n"
                               "message - - / x urn:p\n"
                               "iq - - / query jabber:iq:roster\n"
                               "foo - urn:foo / bar urn:foo\n");
    rec_done(&r);

    /* A stream without a default namespace: stanzas are in none (NULL). */
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, "<stream:stream xmlns:stream='http://etherx.jabber.org/"
                                  "streams'><message><body>x</body></message>"),
                     0);
    assert_null(xd_xml_parser_stream_ns(r.p));
    assert_non_null(strstr(r.log, "stanza <message><body>x</body></message>\n"));
    rec_done(&r);

    /* Namespace names are not checked as URIs (nor were they with expat). */
    assert_int_equal(stream_rc(HDR_C, "<x xmlns='not a uri'/>"), 0);
    assert_int_equal(stream_rc(HDR_C, "<x xmlns:p=''/>"), XD_EXML_BAD_NS);
    assert_int_equal(stream_rc(HDR_C, "<x xmlns:xml='urn:not-xml'/>"), XD_EXML_BAD_NS);
}

/* Feeds `in` in pieces of `piece` bytes (0: whole), resuming after every
 * pause and re-feeding what was not consumed; checks every consumed count. */
static void
feed_resuming(rec_t *r, const char *in, size_t piece)
{
    size_t n = strlen(in), total = 0, avail = piece ? (piece < n ? piece : n) : n;
    int guard = 0;
    while (total < n) {
        size_t used = 0;
        assert_int_equal(xd_xml_parser_feed(r->p, in + total, avail - total, &used), 0);
        assert_true(used <= avail - total);
        total += used;
        if (xd_xml_parser_paused(r->p)) {
            xd_xml_parser_resume(r->p);
            /* While paused nothing more was consumed. */
        } else {
            assert_int_equal(total, avail);
            avail = piece && avail + piece < n ? avail + piece : n;
        }
        assert_true(++guard < 100000);
    }
}

static void
test_xml__pause_after_every_event_gives_the_same_conversation(void **state)
{
    (void)state;
    /* Each resume continues in a fresh libxml2 context behind a synthetic
     * copy of the stream header: prefixes and the content namespace from
     * the real header must still apply. */
    static const char *const streams[][2] = {
        { sample_stream, sample_log },
        { ns_stream, ns_log },
        /* Namespace names that need escaping in the synthetic header. */
        { "<s:s xmlns='urn:c&amp;&apos;d	' xmlns:s='urn:s' xmlns:q=\"urn:q'&lt;&#10;\">"
          "<m/><q:x/><m xmlns='urn:c&amp;&apos;d&#9;'/></s:s>",
          "open s:s ns=urn:s content=urn:c&'d  to=- version=- lang=-\n"
          "stanza <m/>\n"
          "stanza <q:x xmlns:q='urn:q&apos;&lt;&#10;'/>\n"
          "stanza <m xmlns='urn:c&amp;&apos;d&#9;'/>\n"
          "close\n" },
    };
    for (size_t k = 0; k < sizeof(streams) / sizeof(streams[0]); k++) {
        size_t n = strlen(streams[k][0]);
        size_t pieces[] = { 0, 1, 7, 64, n / 2 };
        for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
            rec_t r;
            rec_parser(&r, NULL);
            r.pause_all = true;
            r.pause_on_open = true;
            feed_resuming(&r, streams[k][0], pieces[i]);
            if (strcmp(r.log, streams[k][1]) != 0)
                fail_msg("stream %zu, pieces of %zu:\n%s", k, pieces[i], r.log);
            assert_int_equal(r.errors, 0);
            rec_done(&r);
        }
    }
    /* The consumed count ends each time right after the paused element. */
    rec_t r;
    rec_parser(&r, NULL);
    r.pause_all = true;
    const char *in = HDR_C "<a/>\n<b>x</b><c/>";
    size_t used = 0;
    assert_int_equal(xd_xml_parser_feed(r.p, in, strlen(in), &used), 0);
    assert_int_equal(used, strlen(HDR_C "<a/>"));
    xd_xml_parser_resume(r.p);
    size_t total = used;
    assert_int_equal(xd_xml_parser_feed(r.p, in + total, strlen(in) - total, &used), 0);
    assert_int_equal(used, strlen("\n<b>x</b>"));
    rec_done(&r);
}

static void
test_xml__pause_keeps_a_utf8_sequence_cut_by_the_feed(void **state)
{
    (void)state;
    /* The bytes after a pause are checked again when re-fed: the UTF-8
     * state must restart at the pause point, not continue mid-sequence. */
    rec_t r;
    rec_parser(&r, NULL);
    r.pause_on = "a";
    const char *first = HDR_C "<a/><m>\xE2\x82";
    size_t used = 0;
    assert_int_equal(xd_xml_parser_feed(r.p, first, strlen(first), &used), 0);
    assert_int_equal(used, strlen(HDR_C "<a/>"));
    xd_xml_parser_resume(r.p);
    assert_int_equal(feed_str(&r, "<m>\xE2\x82"), 0);
    assert_int_equal(feed_str(&r, "\xAC</m>"), 0);
    assert_string_equal(r.log, OPEN_C "stanza <a/>\nstanza <m>\xE2\x82\xAC</m>\n");
    rec_done(&r);
}

static void
test_xml__attribute_escaping_round_trip(void **state)
{
    (void)state;
    const char *in = "<m a='&amp;&lt;&gt;&quot;&apos;' b=\"it's\" c='&#9;&#10;&#13;' "
                     "d='&#38;&#x26;' e='&amp;#38;' f='a&amp;b&amp;amp;' g='\xE2\x82\xAC&#x20AC;' "
                     "h='x&#38;&#38;#38;'>&amp;#38; &#38;&lt;</m>";
    static const char *const want[][2] = {
        { "a", "&<>\"'" }, { "b", "it's" },  { "c", "\t\n\r" },
        { "d", "&&" },     { "e", "&#38;" }, { "f", "a&b&amp;" },
        { "g", "\xE2\x82\xAC\xE2\x82\xAC" }, { "h", "x&&#38;" },
    };
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), NULL, &st), 0);
    for (int round = 0; round < 3; round++) {
        const xd_el_t *m = xd_stanza_root(st);
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
            const char *v = xd_el_attr(m, want[i][0]);
            if (!v || strcmp(v, want[i][1]) != 0)
                fail_msg("round %d: %s='%s'", round, want[i][0], v ? v : "(none)");
        }
        assert_string_equal(xd_el_text(m), "&#38; &<");
        /* Serialize and parse again: the same values. */
        size_t len;
        const char *bytes = xd_stanza_bytes(st, &len);
        xd_stanza_t *again = NULL;
        assert_int_equal(xd_stanza_parse(bytes, len, NULL, &again), 0);
        assert_string_equal(xd_stanza_bytes(again, NULL), bytes);
        xd_stanza_unref(st);
        st = again;
    }
    assert_string_equal(xd_stanza_bytes(st, NULL),
                        "<m a='&amp;&lt;&gt;&quot;&apos;' b='it&apos;s' c='&#9;&#10;&#13;' "
                        "d='&amp;&amp;' e='&amp;#38;' f='a&amp;b&amp;amp;' "
                        "g='\xE2\x82\xAC\xE2\x82\xAC' h='x&amp;&amp;#38;'>&amp;#38; "
                        "&amp;&lt;</m>");
    xd_stanza_unref(st);
    /* Namespace names are attribute values too. */
    const char *nsd = "<m xmlns='urn:d&amp;e' xmlns:p='urn:a&#38;b' p:x='1'><p:c/></m>";
    assert_int_equal(xd_stanza_parse(nsd, strlen(nsd), NULL, &st), 0);
    assert_string_equal(xd_el_ns(xd_stanza_root(st)), "urn:d&e");
    assert_string_equal(xd_el_attr_ns(xd_stanza_root(st), "x", "urn:a&b"), "1");
    assert_string_equal(xd_el_ns(xd_el_first_child(xd_stanza_root(st))), "urn:a&b");
    assert_string_equal(xd_stanza_bytes(st, NULL),
                        "<m xmlns='urn:d&amp;e' xmlns:p='urn:a&amp;b' p:x='1'><p:c/></m>");
    xd_stanza_unref(st);
    /* The same through the stream parser. */
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C "<m e='&amp;#38;' d='&#38;'/>"), 0);
    assert_string_equal(r.log, OPEN_C "stanza <m e='&amp;#38;' d='&amp;'/>\n");
    rec_done(&r);
}

static void
test_xml__nul_bytes_are_not_well_formed(void **state)
{
    (void)state;
    static const char *const cases[] = { "<m>a\0b</m>", "<m a='\0'/>", "\0" };
    static const size_t lens[] = { 10, 11, 1 };
    for (size_t i = 0; i < 3; i++) {
        rec_t r;
        rec_parser(&r, NULL);
        assert_int_equal(feed_str(&r, HDR_C), 0);
        assert_int_equal(feed_all(&r, cases[i], lens[i]), XD_EXML_SYNTAX);
        assert_int_equal(r.stanzas, 0);
        rec_done(&r);
    }
    xd_el_t *el = NULL;
    assert_int_equal(xd_el_parse("<m>\0</m>", 8, &el), XD_EXML_SYNTAX);
    /* Before the header too (a UTF-16 or UCS-4 stream starts with one). */
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_all(&r, "<\0?\0x\0m\0l\0", 10), XD_EXML_SYNTAX);
    assert_int_equal(r.opens, 0);
    rec_done(&r);
}

static void
test_xml__libxml2_memory_returns_after_big_stanzas_and_many_names(void **state)
{
    (void)state;
    rec_t r;
    rec_parser(&r, NULL);
    assert_int_equal(feed_str(&r, HDR_C "<presence/>"), 0);
    size_t idle = xd_xml_parser_mem(r.p);
    /* A 60 KB stanza grows libxml2's input buffer, which never shrinks;
     * the parser moves to a fresh libxml2 context after it. */
    char *s = stanza_of(60000);
    assert_int_equal(feed_str(&r, s), 0);
    xd_free(s);
    assert_true(xd_xml_parser_mem(r.p) < idle + 8 * 1024);
    assert_int_equal(feed_str(&r, "<stream:features/><presence/>"), 0);
    assert_true(xd_xml_parser_mem(r.p) < idle + 8 * 1024);
    /* Distinct element and attribute names fill libxml2's dictionary. */
    for (int i = 0; i < 5000; i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "<n%d a%d='1'><c%d/></n%d>", i, i, i, i);
        assert_int_equal(feed_str(&r, buf), 0);
    }
    assert_int_equal(r.stanzas, 5004);
    assert_int_equal(r.errors, 0);
    assert_true(xd_xml_parser_mem_peak(r.p) < 200 * 1024);
    assert_true(xd_xml_parser_mem(r.p) < idle + 32 * 1024);
    assert_non_null(strstr(r.log, "stanza <stream:features "
                                  "xmlns:stream='http://etherx.jabber.org/streams'/>\n"));
    assert_non_null(strstr(r.log, "stanza <n4999 a4999='1'><c4999/></n4999>\n"));
    rec_done(&r);
}

/* A stanza handler that parses the stanza's bytes again, one-shot. */
static void
nested_stanza(void *ud, xd_stanza_t *st)
{
    rec_t *r = ud;
    size_t len;
    const char *bytes = xd_stanza_bytes(st, &len);
    xd_stanza_t *again = NULL;
    int rc = xd_stanza_parse(bytes, len, NULL, &again);
    rec_add(r, "stanza %s again %s", bytes, rc == 0 ? xd_stanza_bytes(again, NULL) : "-");
    xd_stanza_unref(again);
    /* And a document that fails, so libxml2 reports an error in between. */
    xd_el_t *el = NULL;
    rc = xd_el_parse("<a><b></a>", 10, &el);
    assert_int_equal(rc, XD_EXML_SYNTAX);
    r->stanzas++;
    xd_stanza_unref(st);
}

static void
test_xml__handlers_may_parse_other_xml(void **state)
{
    (void)state;
    /* The one-shot parser runs libxml2 while the stream's libxml2 context
     * is inside a callback; each keeps its own memory account. */
    xd_xml_handlers_t h = { .stanza = nested_stanza };
    rec_t r;
    memset(&r, 0, sizeof(r));
    r.p = xd_xml_parser_new(&h, &r, NULL);
    assert_int_equal(feed_str(&r, HDR_C), 0);
    size_t idle = xd_xml_parser_mem(r.p);
    for (int i = 0; i < 200; i++)
        assert_int_equal(feed_str(&r, "<message><body>x</body></message><presence/>"), 0);
    assert_int_equal(r.stanzas, 400);
    assert_non_null(strstr(r.log, "stanza <presence/> again <presence/>\n"));
    assert_true(xd_xml_parser_mem(r.p) < idle + 8 * 1024);
    /* An error on the stream after all that is still reported as its own. */
    assert_int_equal(feed_str(&r, "<x></y>"), XD_EXML_SYNTAX);
    rec_done(&r);
}

/* ------------------------------------------------------------------------ */
/* One-shot parser                                                          */
/* ------------------------------------------------------------------------ */

static void
test_xml__oneshot_parse(void **state)
{
    (void)state;
    xd_el_t *el = NULL;
    const char *in = "<?xml version='1.0'?>\n<iq type='get' id='1'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>\n";
    assert_int_equal(xd_el_parse(in, strlen(in), &el), 0);
    assert_string_equal(xd_el_name(el), "iq");
    assert_null(xd_el_ns(el));
    assert_non_null(xd_el_child(el, "ping", XD_NS_PING));
    /* A builder: it can be changed. */
    xd_el_set_attr(el, "type", "result");
    assert_string_equal(xd_el_attr(el, "type"), "result");
    xd_el_free(el);

    el = NULL;
    assert_int_equal(xd_el_parse("", 0, &el), XD_EXML_SYNTAX);
    assert_int_equal(xd_el_parse("<a/><b/>", 8, &el), XD_EXML_SYNTAX);
    assert_int_equal(xd_el_parse("<a>", 3, &el), XD_EXML_SYNTAX);
    assert_int_equal(xd_el_parse("<a><!--c--></a>", 15, &el), XD_EXML_RESTRICTED);
    assert_int_equal(xd_el_parse("<p:a/>", 6, &el), XD_EXML_BAD_NS);
    assert_null(el);

    xd_stanza_t *st = NULL;
    const char *m = "<message xmlns='jabber:component:accept'><body>b</body></message>";
    assert_int_equal(xd_stanza_parse(m, strlen(m), XD_NS_COMPONENT, &st), 0);
    assert_null(xd_el_ns(xd_stanza_root(st)));
    assert_string_equal(xd_stanza_bytes(st, NULL), "<message><body>b</body></message>");
    xd_stanza_unref(st);
}

static void
test_xml__no_handlers_is_fine(void **state)
{
    (void)state;
    xd_xml_parser_t *p = xd_xml_parser_new(NULL, NULL, NULL);
    assert_int_equal(xd_xml_parser_feed(p, sample_stream, strlen(sample_stream), NULL), 0);
    assert_int_equal(xd_xml_parser_feed(p, "<x/>", 4, NULL), XD_EXML_SYNTAX);
    xd_xml_parser_free(p);
}

/* An idle stream gives libxml2's context back and goes on exactly where it
 * was: after every top-level boundary the parser is trimmed, and the
 * conversation is the same as without trimming. */
static void
test_xml__trim_between_stanzas_keeps_the_conversation(void **state)
{
    (void)state;
    static const char *const streams[][2] = {
        { sample_stream, sample_log },
        { ns_stream, ns_log },
    };
    for (size_t k = 0; k < sizeof(streams) / sizeof(streams[0]); k++) {
        const char *in = streams[k][0];
        size_t n = strlen(in);
        rec_t r;
        rec_parser(&r, NULL);
        unsigned trimmed = 0;
        size_t low = (size_t)-1, high = 0;
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(feed_all(&r, in + i, 1), 0);
            size_t before = xd_xml_parser_mem(r.p);
            if (xd_xml_parser_trim(r.p)) {
                trimmed++;
                size_t after = xd_xml_parser_mem(r.p);
                if (after < low)
                    low = after;
                if (before > high)
                    high = before;
            }
        }
        if (strcmp(r.log, streams[k][1]) != 0)
            fail_msg("stream %zu:\n%s", k, r.log);
        assert_true(trimmed >= 2);
        /* libxml2's context is most of an idle parser's memory. */
        assert_true(low * 4 < high);
        rec_done(&r);
    }
    /* Not inside an element, and not before the header. */
    rec_t r;
    rec_parser(&r, NULL);
    assert_false(xd_xml_parser_trim(r.p));
    const char *in = HDR_C "<message><body>partial";
    assert_int_equal(feed_all(&r, in, strlen(in)), 0);
    assert_false(xd_xml_parser_trim(r.p));
    const char *rest = "</body></message>";
    assert_int_equal(feed_all(&r, rest, strlen(rest)), 0);
    assert_true(xd_xml_parser_trim(r.p));
    assert_non_null(strstr(r.log, "stanza <message><body>partial</body></message>"));
    rec_done(&r);
}

/* A reference that can no longer be completed is an error as soon as it
 * is seen, not when some later ';' arrives; a split one waits. */
static void
test_xml__broken_reference_fails_at_once(void **state)
{
    (void)state;
    static const char *const bad[] = { "&3-x</m>", "& x</m>", "&#xZ;</m>", "&#12a</m>",
                                       "&am p</m>", "&lt </m>" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rec_t r;
        rec_parser(&r, NULL);
        const char *hdr = HDR_C "<m>";
        assert_int_equal(feed_all(&r, hdr, strlen(hdr)), 0);
        int rc = feed_all(&r, bad[i], strlen(bad[i]));
        if (rc != XD_EXML_SYNTAX)
            fail_msg("%s: %d", bad[i], rc);
        rec_done(&r);
    }
    static const char *const good[][2] = { { "&am", "p;</m>" }, { "&#x4", "1;</m>" },
                                           { "&#", "65;</m>" }, { "&", "lt;</m>" } };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        rec_t r;
        rec_parser(&r, NULL);
        const char *hdr = HDR_C "<m>";
        assert_int_equal(feed_all(&r, hdr, strlen(hdr)), 0);
        assert_int_equal(feed_all(&r, good[i][0], strlen(good[i][0])), 0);
        assert_int_equal(feed_all(&r, good[i][1], strlen(good[i][1])), 0);
        assert_int_equal(r.errors, 0);
        assert_non_null(strstr(r.log, "stanza <m>"));
        rec_done(&r);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xml__stream_events_in_order),
        cmocka_unit_test(test_xml__split_feeds_at_every_byte_boundary),
        cmocka_unit_test(test_xml__content_namespace_maps_to_null),
        cmocka_unit_test(test_xml__wrong_stream_namespace_is_reported_not_judged),
        cmocka_unit_test(test_xml__whitespace_keepalives_are_ignored_and_do_not_count),
        cmocka_unit_test(test_xml__syntax_error_has_position_and_is_reported_once),
        cmocka_unit_test(test_xml__syntax_error_detail_names_line_and_column),
        cmocka_unit_test(test_xml__undeclared_prefix_is_bad_ns),
        cmocka_unit_test(test_xml__restricted_xml_is_rejected),
        cmocka_unit_test(test_xml__xml_declaration_only_at_start_and_utf8),
        cmocka_unit_test(test_xml__billion_laughs_is_stopped_at_the_doctype),
        cmocka_unit_test(test_xml__invalid_utf8_is_rejected),
        cmocka_unit_test(test_xml__utf8_split_across_feeds_is_fine),
        cmocka_unit_test(test_xml__stanza_size_limit),
        cmocka_unit_test(test_xml__header_size_limit),
        cmocka_unit_test(test_xml__depth_limit),
        cmocka_unit_test(test_xml__attribute_limit),
        cmocka_unit_test(test_xml__ten_megabyte_stanza_fails_in_bounded_memory),
        cmocka_unit_test(test_xml__memory_returns_after_stanzas),
        cmocka_unit_test(test_xml__reset_mid_buffer_reports_consumed),
        cmocka_unit_test(test_xml__reset_on_every_split),
        cmocka_unit_test(test_xml__pause_and_resume),
        cmocka_unit_test(test_xml__pause_resumed_in_the_handler),
        cmocka_unit_test(test_xml__pause_then_reset_drops_buffered_bytes),
        cmocka_unit_test(test_xml__events_fire_when_their_last_byte_arrives),
        cmocka_unit_test(test_xml__single_byte_keepalives_never_count),
        cmocka_unit_test(test_xml__stream_close_then_only_whitespace),
        cmocka_unit_test(test_xml__xml_declaration_with_and_without_encoding),
        cmocka_unit_test(test_xml__xml_version_other_than_1_0_is_refused),
        cmocka_unit_test(test_xml__prefixed_and_default_namespaces),
        cmocka_unit_test(test_xml__pause_after_every_event_gives_the_same_conversation),
        cmocka_unit_test(test_xml__pause_keeps_a_utf8_sequence_cut_by_the_feed),
        cmocka_unit_test(test_xml__attribute_escaping_round_trip),
        cmocka_unit_test(test_xml__nul_bytes_are_not_well_formed),
        cmocka_unit_test(test_xml__libxml2_memory_returns_after_big_stanzas_and_many_names),
        cmocka_unit_test(test_xml__handlers_may_parse_other_xml),
        cmocka_unit_test(test_xml__oneshot_parse),
        cmocka_unit_test(test_xml__no_handlers_is_fine),
        cmocka_unit_test(test_xml__trim_between_stanzas_keeps_the_conversation),
        cmocka_unit_test(test_xml__broken_reference_fails_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
