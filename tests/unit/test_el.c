/*
 * test_el.c — unit tests for element trees, builders, stanzas and the
 * serializer (src/xml/tree.c, serialize.c; API in include/xmppd/el.h).
 *
 * Where it sits: tests/unit/, built by tests/unit/meson.build against
 * libxmppd and cmocka; run with `meson test --suite unit test_el`.
 *
 * Covers: the builder API, readers, attribute replacement/removal, moving
 * subtrees between arenas, text concatenation, escaping (text and attribute
 * values, round trip through the one-shot parser), minimal namespace output
 * (content namespace roots without xmlns, foreign children, explicit
 * jabber:client inside a foreign namespace, prefixes and their
 * declarations, xml:lang), freeze/ref/unref/edit and the cached bytes, also
 * from several threads at once.
 * Invariants: each test frees everything it makes (ASan checks for leaks).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "xmppd/alloc.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"
#include "xml/tree.h"

/* Serializes `el` (content ns NULL) and compares with `want`. */
static void
expect_xml(const xd_el_t *el, const char *want)
{
    size_t len = 0;
    char *s = xd_el_serialize(el, NULL, &len);
    assert_string_equal(s, want);
    assert_int_equal(len, strlen(want));
    xd_free(s);
}

/* Parses `in` with xd_el_parse (must succeed) and serializes it. */
static void
expect_roundtrip(const char *in, const char *want)
{
    xd_el_t *el = NULL;
    int rc = xd_el_parse(in, strlen(in), &el);
    if (rc != 0)
        fail_msg("parse of %s failed: %s", in, xd_err_name(rc));
    expect_xml(el, want ? want : in);
    xd_el_free(el);
}

static void
test_el__builder_reads_well(void **state)
{
    (void)state;
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_set_attr(m, "to", "juliet@example.com");
    xd_el_set_attr(m, "type", "chat");
    xd_el_add_text(xd_el_add_child(m, "body", NULL), "hi");
    expect_xml(m, "<message to='juliet@example.com' type='chat'><body>hi</body></message>");

    assert_string_equal(xd_el_name(m), "message");
    assert_null(xd_el_ns(m));
    assert_null(xd_el_prefix(m));
    assert_string_equal(xd_el_attr(m, "to"), "juliet@example.com");
    assert_null(xd_el_attr(m, "from"));
    assert_string_equal(xd_el_child_text(m, "body", NULL), "hi");
    assert_null(xd_el_child_text(m, "subject", NULL));
    assert_int_equal(xd_el_child_count(m), 1);
    const xd_el_t *body = xd_el_child(m, "body", NULL);
    assert_non_null(body);
    assert_ptr_equal(xd_el_parent(body), m);
    xd_el_free(m);
}

static void
test_el__attr_replace_and_remove(void **state)
{
    (void)state;
    xd_el_t *el = xd_el_new("iq", NULL);
    xd_el_set_attr(el, "type", "get");
    xd_el_set_attr(el, "id", "1");
    xd_el_set_attr(el, "type", "result");
    assert_string_equal(xd_el_attr(el, "type"), "result");
    assert_int_equal(xd_el_attr_count(el), 2);
    expect_xml(el, "<iq type='result' id='1'/>");
    assert_true(xd_el_remove_attr(el, "type"));
    assert_false(xd_el_remove_attr(el, "type"));
    xd_el_set_attr(el, "id", NULL);
    assert_int_equal(xd_el_attr_count(el), 0);
    expect_xml(el, "<iq/>");
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof(name), "a%d", i);
        xd_el_set_attr(el, name, name);
    }
    assert_int_equal(xd_el_attr_count(el), 40);
    assert_string_equal(xd_el_attr(el, "a39"), "a39");
    const char *n = NULL;
    assert_string_equal(xd_el_attr_at(el, 7, &n, NULL), "a7");
    assert_string_equal(n, "a7");
    assert_null(xd_el_attr_at(el, 40, &n, NULL));
    xd_el_free(el);
}

static void
test_el__children_iteration_and_child_lookup(void **state)
{
    (void)state;
    xd_el_t *q = xd_el_new("query", XD_NS_ROSTER);
    xd_el_add_text(q, "  ");
    for (int i = 0; i < 5; i++) {
        xd_el_t *it = xd_el_add_child(q, "item", NULL);
        char jid[32];
        snprintf(jid, sizeof(jid), "u%d@example.com", i);
        xd_el_set_attr(it, "jid", jid);
        assert_string_equal(xd_el_ns(it), XD_NS_ROSTER); /* inherits parent's */
    }
    xd_el_add_child(q, "x", XD_NS_DATA);
    int n = 0;
    for (const xd_el_t *c = xd_el_first_child(q); c; c = xd_el_next(c))
        n++;
    assert_int_equal(n, 6);
    assert_int_equal(xd_el_child_count(q), 6);
    assert_non_null(xd_el_child(q, "x", XD_NS_DATA));
    assert_null(xd_el_child(q, "x", XD_NS_ROSTER));
    assert_non_null(xd_el_child(q, NULL, XD_NS_DATA));
    assert_string_equal(xd_el_attr(xd_el_child(q, "item", NULL), "jid"), "u0@example.com");
    assert_true(xd_el_is(q, "query", XD_NS_ROSTER));
    assert_true(xd_el_is(q, NULL, XD_NS_ROSTER));
    assert_false(xd_el_is(q, "query", XD_NS_DATA));

    xd_el_t *first = xd_el_first_child_mut(q);
    xd_el_remove_child(q, first);
    assert_int_equal(xd_el_child_count(q), 5);
    assert_string_equal(xd_el_attr(xd_el_first_child(q), "jid"), "u1@example.com");
    xd_el_clear_children(q);
    assert_null(xd_el_first_child(q));
    expect_xml(q, "<query xmlns='jabber:iq:roster'/>");
    xd_el_free(q);
}

static void
test_el__text_is_concatenated(void **state)
{
    (void)state;
    xd_el_t *b = xd_el_new("body", NULL);
    assert_string_equal(xd_el_text(b), "");
    assert_int_equal(xd_el_text_len(b), 0);
    xd_el_add_text(b, "hello ");
    xd_el_add_child(b, "b", NULL);
    xd_el_add_text(b, "world");
    xd_el_add_textn(b, "!!!", 1);
    xd_el_add_text(b, "");
    assert_string_equal(xd_el_text(b), "hello world!");
    assert_int_equal(xd_el_text_len(b), 12);
    expect_xml(b, "<body>hello <b/>world!</body>");

    xd_el_t *p = NULL;
    const char *in = "<p>a<i>x</i>b<i/>c</p>";
    assert_int_equal(xd_el_parse(in, strlen(in), &p), 0);
    assert_string_equal(xd_el_text(p), "abc");
    assert_string_equal(xd_el_child_text(p, "i", NULL), "x");
    xd_el_free(p);
    xd_el_free(b);
}

static void
test_el__append_moves_between_arenas(void **state)
{
    (void)state;
    xd_el_t *iq = xd_el_new("iq", NULL);
    xd_el_set_attr(iq, "type", "result");
    xd_el_t *q = xd_el_new("query", XD_NS_DISCO_INFO);
    for (int i = 0; i < 200; i++) { /* enough to need several blocks */
        xd_el_t *f = xd_el_add_child(q, "feature", NULL);
        xd_el_set_attr(f, "var", "urn:xmpp:ping");
    }
    xd_el_append(iq, q);
    /* The moved subtree is now built in iq's arena. */
    xd_el_t *qq = xd_el_child_mut(iq, "query", NULL);
    assert_ptr_equal(qq, q);
    xd_el_add_child(qq, "identity", NULL);
    assert_int_equal(xd_el_child_count(q), 201);
    size_t len;
    char *s = xd_el_serialize(iq, NULL, &len);
    const char *head = "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info'>"
                       "<feature var='urn:xmpp:ping'/>";
    assert_true(strncmp(s, head, strlen(head)) == 0);
    assert_true(strstr(s, "<identity/></query></iq>") != NULL);
    xd_free(s);
    xd_el_free(iq); /* frees both arenas */
}

static void
test_el__escaping_text_and_attributes(void **state)
{
    (void)state;
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_set_attr(m, "id", "a&b<c>d\"e'f\tg\nh\ri");
    xd_el_add_text(xd_el_add_child(m, "body", NULL), "1 < 2 && 3 > 2 \"q\" 'a' ]]> \r\n\t");
    expect_xml(m, "<message id='a&amp;b&lt;c&gt;d&quot;e&apos;f&#9;g&#10;h&#13;i'>"
                  "<body>1 &lt; 2 &amp;&amp; 3 &gt; 2 \"q\" 'a' ]]&gt; &#13;\n\t</body></message>");

    /* And it round-trips through the parser unchanged. */
    char *s = xd_el_serialize(m, NULL, NULL);
    xd_el_t *back = NULL;
    assert_int_equal(xd_el_parse(s, strlen(s), &back), 0);
    assert_string_equal(xd_el_attr(back, "id"), "a&b<c>d\"e'f\tg\nh\ri");
    assert_string_equal(xd_el_child_text(back, "body", NULL), "1 < 2 && 3 > 2 \"q\" 'a' ]]> \r\n\t");
    expect_xml(back, s);
    xd_free(s);
    xd_el_free(back);
    xd_el_free(m);
}

static void
test_el__parse_normalises_literal_whitespace_in_attributes(void **state)
{
    (void)state;
    /* XML 1.0 3.3.3: literal TAB/LF in attribute values become spaces;
     * character references survive, which is why we write those. */
    expect_roundtrip("<a x='1\t2\n3' y='1&#9;2&#10;3'/>", "<a x='1 2 3' y='1&#9;2&#10;3'/>");
    expect_roundtrip("<a>&#x1F600; &lt;&amp;&gt;&quot;&apos;</a>",
                     "<a>\xF0\x9F\x98\x80 &lt;&amp;&gt;\"'</a>");
    expect_roundtrip("<a><![CDATA[<x>&]]></a>", "<a>&lt;x&gt;&amp;</a>");
}

static void
test_el__content_namespace_root_has_no_xmlns(void **state)
{
    (void)state;
    /* DESIGN.md 3: one cached serialization for every stream type. */
    const char *in = "<message xmlns='jabber:client' to='a@b'><body>x</body></message>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    assert_null(xd_el_ns(xd_stanza_root(st)));
    assert_null(xd_el_ns(xd_el_child(xd_stanza_root(st), "body", NULL)));
    size_t len;
    const char *b = xd_stanza_bytes(st, &len);
    assert_string_equal(b, "<message to='a@b'><body>x</body></message>");
    assert_int_equal(len, strlen(b));
    xd_stanza_unref(st);

    /* The same input on a jabber:server stream keeps the foreign ns. */
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_SERVER, &st), 0);
    assert_string_equal(xd_el_ns(xd_stanza_root(st)), XD_NS_CLIENT);
    assert_string_equal(xd_stanza_bytes(st, NULL), in);
    xd_stanza_unref(st);
}

static void
test_el__foreign_namespaces_are_minimal(void **state)
{
    (void)state;
    expect_roundtrip("<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='1'>"
                     "<item jid='a@b' subscription='both'><group>G</group></item>"
                     "</query></iq>",
                     NULL);
    /* Redundant re-declarations disappear; a real change is kept. */
    expect_roundtrip("<a xmlns='urn:x'><b xmlns='urn:x'><c xmlns='urn:y'><d/></c></b></a>",
                     "<a xmlns='urn:x'><b><c xmlns='urn:y'><d/></c></b></a>");
    /* Nested re-declaration back to an outer namespace. */
    expect_roundtrip("<a xmlns='urn:x'><b xmlns='urn:y'><c xmlns='urn:x'/></b><e/></a>", NULL);
}

static void
test_el__explicit_client_ns_inside_forwarded_is_kept(void **state)
{
    (void)state;
    const char *in = "<message to='a@b'><forwarded xmlns='urn:xmpp:forward:0'>"
                     "<delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>"
                     "<message xmlns='jabber:client' from='c@d' type='chat'><body>hi</body>"
                     "</message></forwarded></message>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    const xd_el_t *fwd = xd_el_child(xd_stanza_root(st), "forwarded", XD_NS_FORWARD);
    assert_non_null(fwd);
    const xd_el_t *inner = xd_el_child(fwd, "message", NULL);
    assert_string_equal(xd_el_ns(inner), XD_NS_CLIENT);
    assert_string_equal(xd_el_ns(xd_el_child(inner, "body", NULL)), XD_NS_CLIENT);
    assert_string_equal(xd_stanza_bytes(st, NULL), in);
    xd_stanza_unref(st);

    /* A builder content-namespace element nested in a foreign one gets
     * xmlns=content_ns. */
    xd_el_t *f = xd_el_new("forwarded", XD_NS_FORWARD);
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_add_child(m, "body", NULL);
    xd_el_append(f, m);
    char *s = xd_el_serialize(f, XD_NS_SERVER, NULL);
    assert_string_equal(s, "<forwarded xmlns='urn:xmpp:forward:0'>"
                           "<message xmlns='jabber:server'><body/></message></forwarded>");
    xd_free(s);
    expect_xml(f, "<forwarded xmlns='urn:xmpp:forward:0'>"
                  "<message xmlns='jabber:client'><body/></message></forwarded>");
    xd_el_free(f);
}

static void
test_el__prefixes_and_declarations_are_preserved(void **state)
{
    (void)state;
    expect_roundtrip("<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
                     "<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                     "</stream:error>",
                     NULL);
    /* A declaration made on the root for its descendants stays there. */
    expect_roundtrip("<message xmlns:x='urn:foo'><x:a x:attr='1'/><x:b/></message>", NULL);
    /* Prefixed attribute with a prefix bound only on the element. */
    expect_roundtrip("<a xmlns:p='urn:p' p:k='v' k='w'/>", NULL);
    /* Builder: qualified names declare their prefix where needed. */
    xd_el_t *e = xd_el_new("stream:error", XD_NS_STREAMS);
    assert_string_equal(xd_el_name(e), "error");
    assert_string_equal(xd_el_prefix(e), "stream");
    xd_el_add_child(e, "host-unknown", XD_NS_STREAM_ERRORS);
    expect_xml(e, "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
                  "<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
    xd_el_free(e);

    xd_el_t *r = xd_el_new("db:result", XD_NS_DIALBACK);
    xd_el_set_attr(r, "from", "a.example");
    xd_el_set_attr_ns(r, "q:flag", "urn:q", "1");
    expect_xml(r, "<db:result xmlns:db='jabber:server:dialback' xmlns:q='urn:q'"
                  " from='a.example' q:flag='1'/>");
    assert_string_equal(xd_el_attr_ns(r, "flag", "urn:q"), "1");
    assert_string_equal(xd_el_attr(r, "q:flag"), "1");
    assert_null(xd_el_attr_ns(r, "flag", NULL));
    assert_string_equal(xd_el_attr_ns(r, "from", NULL), "a.example");
    xd_el_free(r);
}

static void
test_el__xml_lang(void **state)
{
    (void)state;
    const char *in = "<message xml:lang='en'><body xml:lang='de'>Hallo</body></message>";
    xd_el_t *el = NULL;
    assert_int_equal(xd_el_parse(in, strlen(in), &el), 0);
    assert_string_equal(xd_el_attr(el, "xml:lang"), "en");
    assert_string_equal(xd_el_attr_ns(el, "lang", XD_NS_XML), "en");
    const char *ns = NULL, *name = NULL;
    xd_el_attr_at(el, 0, &name, &ns);
    assert_string_equal(name, "xml:lang");
    assert_string_equal(ns, XD_NS_XML);
    expect_xml(el, in); /* the xml prefix is never declared */
    xd_el_free(el);

    xd_el_t *b = xd_el_new("presence", NULL);
    xd_el_set_attr(b, "xml:lang", "fr");
    assert_string_equal(xd_el_attr_ns(b, "lang", XD_NS_XML), "fr");
    expect_xml(b, "<presence xml:lang='fr'/>");
    xd_el_free(b);
}

static void
test_el__xmlns_attribute_sets_namespace(void **state)
{
    (void)state;
    xd_el_t *q = xd_el_new("query", NULL);
    xd_el_set_attr(q, "xmlns", XD_NS_VERSION);
    xd_el_set_attr(q, "xmlns:x", "urn:x");
    assert_string_equal(xd_el_ns(q), XD_NS_VERSION);
    assert_int_equal(xd_el_attr_count(q), 0);
    expect_xml(q, "<query xmlns='jabber:iq:version' xmlns:x='urn:x'/>");
    xd_el_free(q);
}

static void
test_el__freeze_ref_unref_edit(void **state)
{
    (void)state;
    xd_el_t *p = xd_el_new("presence", NULL);
    xd_el_set_attr(p, "from", "a@b/r");
    xd_el_add_text(xd_el_add_child(p, "status", NULL), "away");
    xd_stanza_t *st = xd_el_freeze(p);
    const xd_el_t *root = xd_stanza_root(st);
    assert_string_equal(xd_el_attr(root, "from"), "a@b/r");

    xd_stanza_t *st2 = xd_stanza_ref(st);
    assert_ptr_equal(st2, st);
    const char *b1 = xd_stanza_bytes(st, NULL);
    const char *b2 = xd_stanza_bytes(st2, NULL);
    assert_ptr_equal(b1, b2); /* cached once */
    assert_string_equal(b1, "<presence from='a@b/r'><status>away</status></presence>");

    /* Editing makes an independent copy; the stanza stays as it was. */
    xd_el_t *e = xd_stanza_edit(st);
    xd_el_set_attr(e, "from", "x@y/z");
    xd_el_set_attr(e, "to", "c@d");
    xd_el_add_text(xd_el_child_mut(e, "status", NULL), " now");
    xd_stanza_unref(st);
    xd_stanza_unref(st2); /* last reference: freed */
    expect_xml(e, "<presence from='x@y/z' to='c@d'><status>away now</status></presence>");
    xd_stanza_t *st3 = xd_el_freeze(e);
    assert_string_equal(xd_stanza_bytes(st3, NULL),
                        "<presence from='x@y/z' to='c@d'><status>away now</status></presence>");
    xd_stanza_unref(st3);
    xd_stanza_unref(NULL);
    xd_el_free(NULL);
}

static void
test_el__edit_copy_keeps_namespaces_and_decls(void **state)
{
    (void)state;
    const char *in = "<iq type='get'><pubsub xmlns='http://jabber.org/protocol/pubsub'"
                     " xmlns:e='urn:e'><items node='n' e:x='1'/></pubsub></iq>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), NULL, &st), 0);
    xd_el_t *e = xd_stanza_edit(st);
    char *s = xd_el_serialize(e, NULL, NULL);
    assert_string_equal(s, xd_stanza_bytes(st, NULL));
    assert_string_equal(s, in);
    xd_free(s);
    xd_el_free(e);
    xd_stanza_unref(st);
}

#define BYTES_THREADS 4

static void *
bytes_thread(void *arg)
{
    const xd_stanza_t *st = arg;
    const char *b = NULL;
    for (int i = 0; i < 1000; i++) {
        const char *x = xd_stanza_bytes(st, NULL);
        if (b && x != b)
            return NULL;
        b = x;
    }
    return (void *)b;
}

static void
test_el__cached_bytes_are_shared_across_threads(void **state)
{
    (void)state;
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_add_text(xd_el_add_child(m, "body", NULL), "shared");
    xd_stanza_t *st = xd_el_freeze(m);
    pthread_t t[BYTES_THREADS];
    void *res[BYTES_THREADS];
    for (int i = 0; i < BYTES_THREADS; i++) {
        xd_stanza_ref(st);
        assert_int_equal(pthread_create(&t[i], NULL, bytes_thread, st), 0);
    }
    for (int i = 0; i < BYTES_THREADS; i++) {
        assert_int_equal(pthread_join(t[i], &res[i]), 0);
        xd_stanza_unref(st);
    }
    for (int i = 0; i < BYTES_THREADS; i++)
        assert_ptr_equal(res[i], xd_stanza_bytes(st, NULL));
    xd_stanza_unref(st);
}

static void
test_el__serialize_deep_and_large(void **state)
{
    (void)state;
    xd_el_t *root = xd_el_new("r", NULL);
    xd_el_t *cur = root;
    for (int i = 0; i < 30; i++)
        cur = xd_el_add_child(cur, "d", NULL);
    char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    xd_el_add_text(cur, big);
    size_t len;
    char *s = xd_el_serialize(root, NULL, &len);
    assert_int_equal(len, strlen("<r>") + 30 * strlen("<d>") + 9999 + 30 * strlen("</d>") +
                              strlen("</r>"));
    xd_el_t *back = NULL;
    assert_int_equal(xd_el_parse(s, len, &back), 0);
    expect_xml(back, s);
    xd_el_free(back);
    xd_free(s);
    xd_el_free(root);
}

/* The owner of the only reference changes the stanza in place; a shared
 * stanza is copied and the other holder keeps what it had. */
static void
test_el__thaw_in_place_or_copy(void **state)
{
    (void)state;
    const char *in = "<message to='b@x/r'><body>hi</body></message>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    const xd_el_t *root = xd_stanza_root(st);
    assert_string_equal(xd_stanza_bytes(st, NULL), in); /* cached, then dropped by the thaw */
    xd_el_t *e = xd_stanza_thaw(st);
    assert_ptr_equal(e, root); /* no copy */
    xd_el_set_attr(e, "from", "a@x/r");
    st = xd_el_freeze(e);
    assert_string_equal(xd_stanza_bytes(st, NULL),
                        "<message to='b@x/r' from='a@x/r'><body>hi</body></message>");

    xd_stanza_t *other = xd_stanza_ref(st);
    e = xd_stanza_thaw(st); /* shared: a copy, and our reference is gone */
    assert_ptr_not_equal(e, xd_stanza_root(other));
    xd_el_set_attr(e, "to", "c@x");
    xd_stanza_t *mine = xd_el_freeze(e);
    assert_string_equal(xd_el_attr(xd_stanza_root(other), "to"), "b@x/r");
    assert_string_equal(xd_el_attr(xd_stanza_root(mine), "to"), "c@x");
    xd_stanza_unref(other); /* the last reference of the original */
    xd_stanza_unref(mine);
}

/* xd_stanza_readdress: the same stanza to another 'to', sharing the base's
 * children and bytes (a group chat's fan-out); the base lives as long as a
 * readdressed copy does (LeakSanitizer checks both go). */
static void
test_el__readdress_shares_body_and_bytes(void **state)
{
    (void)state;
    const char *in = "<message from='r@m/n' type='groupchat' id='1'><body>a&amp;b</body></message>";
    xd_stanza_t *base = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &base), 0);
    xd_stanza_t *one = xd_stanza_readdress(base, "u@x/r'1");
    xd_stanza_t *two = xd_stanza_readdress(base, "v@x/r");
    xd_stanza_unref(base); /* held by the copies */
    size_t len;
    const char *b = xd_stanza_bytes(one, &len);
    assert_string_equal(b, "<message to='u@x/r&apos;1' from='r@m/n' type='groupchat' id='1'>"
                           "<body>a&amp;b</body></message>");
    assert_int_equal(len, strlen(b));
    assert_string_equal(xd_stanza_bytes(two, NULL),
                        "<message to='v@x/r' from='r@m/n' type='groupchat' id='1'>"
                        "<body>a&amp;b</body></message>");
    assert_string_equal(xd_jid_full_str(xd_stanza_to(two)).p, "v@x/r");
    assert_string_equal(xd_el_attr(xd_stanza_root(one), "to"), "u@x/r'1");
    assert_string_equal(xd_el_child_text(xd_stanza_root(two), "body", NULL), "a&b");
    /* Readdressing a readdressed stanza replaces its 'to'. */
    xd_stanza_t *three = xd_stanza_readdress(two, "w@x");
    assert_string_equal(xd_stanza_bytes(three, NULL),
                        "<message to='w@x' from='r@m/n' type='groupchat' id='1'>"
                        "<body>a&amp;b</body></message>");
    /* A thaw copies; the copy is a plain builder. */
    xd_el_t *e = xd_stanza_thaw(three);
    xd_el_add_child(e, "x", "urn:t");
    xd_stanza_t *four = xd_el_freeze(e);
    assert_string_equal(xd_stanza_bytes(four, NULL),
                        "<message to='w@x' from='r@m/n' type='groupchat' id='1'>"
                        "<body>a&amp;b</body><x xmlns='urn:t'/></message>");
    xd_stanza_unref(four);
    xd_stanza_unref(one);
    xd_stanza_unref(two);

    /* A base with a 'to' or a foreign root namespace: serialized whole. */
    const char *in2 = "<iq xmlns='urn:other' to='a@b' type='get' id='q'><p/></iq>";
    assert_int_equal(xd_stanza_parse(in2, strlen(in2), XD_NS_CLIENT, &base), 0);
    one = xd_stanza_readdress(base, "c@d");
    assert_string_equal(xd_stanza_bytes(one, NULL),
                        "<iq xmlns='urn:other' to='c@d' type='get' id='q'><p/></iq>");
    xd_stanza_unref(one);
    one = xd_stanza_readdress(base, NULL);
    assert_string_equal(xd_stanza_bytes(one, NULL), "<iq xmlns='urn:other' type='get' id='q'><p/></iq>");
    xd_stanza_unref(one);
    xd_stanza_unref(base);
}

/* A fan-out serializes its stanza first; each copy's bytes (the base's
 * with the copy's 'to' spliced in) then go into the copy's own block, not a
 * second allocation, while the copy has one holder.  A copy with more
 * holders, or whose 'to' escapes past the room made for it, gets heap bytes;
 * the bytes are the same either way. */
static void
test_el__readdress_bytes_in_the_copys_block(void **state)
{
    (void)state;
    const char *in = "<message from='r@m/n' type='groupchat' id='1'><body>hi</body></message>";
    xd_stanza_t *base = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &base), 0);
    (void)xd_stanza_bytes(base, NULL);
    xd_stanza_t *one = xd_stanza_readdress(base, "u@x/r");
    assert_string_equal(xd_stanza_bytes(one, NULL),
                        "<message to='u@x/r' from='r@m/n' type='groupchat' id='1'>"
                        "<body>hi</body></message>");
    assert_true(one->bytes_in_arena);
    /* Two holders: another thread might serialize at the same time. */
    xd_stanza_t *two = xd_stanza_readdress(base, "v@x/r");
    xd_stanza_t *held = xd_stanza_ref(two);
    assert_string_equal(xd_stanza_bytes(two, NULL),
                        "<message to='v@x/r' from='r@m/n' type='groupchat' id='1'>"
                        "<body>hi</body></message>");
    assert_false(two->bytes_in_arena);
    xd_stanza_unref(held);
    /* Every character of the 'to' escaped: six times its length. */
    char to[64] = "a@x/";
    memset(to + 4, '\'', 40);
    to[44] = '\0';
    xd_stanza_t *three = xd_stanza_readdress(base, to);
    size_t len;
    const char *b = xd_stanza_bytes(three, &len);
    assert_int_equal(len, strlen(b));
    assert_int_equal(strncmp(b, "<message to='a@x/&apos;&apos;", 29), 0);
    assert_non_null(strstr(b, "&apos;' from='r@m/n' type='groupchat' id='1'><body>hi</body></message>"));
    assert_int_equal(len, strlen("<message to='a@x/' from='r@m/n' type='groupchat' id='1'>"
                                 "<body>hi</body></message>") + 40 * 6);
    xd_stanza_unref(base);
    xd_stanza_unref(one);
    xd_stanza_unref(two);
    xd_stanza_unref(three);
}

/* The parsed addresses are parsed once, shared by every caller, dropped
 * with a thaw (the attributes may change), kept by thaw_keep; a bad 'to'
 * is NULL.  LeakSanitizer checks that the cached JIDs are released. */
static void
test_el__addresses_travel_with_the_stanza(void **state)
{
    (void)state;
    const char *in = "<message from='a@x/r' to='B@X/r2'><body>hi</body></message>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    const xd_jid_t *to = xd_stanza_to(st), *from = xd_stanza_from(st);
    assert_non_null(to);
    assert_non_null(from);
    assert_ptr_equal(xd_stanza_to(st), to); /* the same object, not parsed again */
    assert_string_equal(xd_jid_full_str(to).p, "b@x/r2");
    assert_string_equal(xd_jid_full_str(from).p, "a@x/r");

    xd_stanza_keep_t keep;
    xd_el_t *e = xd_stanza_thaw_keep(st, &keep);
    xd_el_add_child(e, "stanza-id", "urn:xmpp:sid:0");
    st = xd_stanza_freeze_keep(e, &keep);
    assert_ptr_equal(xd_stanza_to(st), to); /* kept across the change */
    assert_ptr_equal(xd_stanza_from(st), from);

    e = xd_stanza_thaw(st); /* a plain thaw forgets them */
    xd_el_set_attr(e, "to", "not a jid@");
    st = xd_el_freeze(e);
    assert_null(xd_stanza_to(st));
    assert_string_equal(xd_jid_full_str(xd_stanza_from(st)).p, "a@x/r");

    /* A session records the JID it stamped. */
    xd_jid_t *j = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c("me@x/home"), &j), 0);
    e = xd_stanza_thaw(st);
    xd_el_set_attr(e, "from", "me@x/home");
    st = xd_el_freeze(e);
    xd_stanza_set_from(st, j);
    assert_ptr_equal(xd_stanza_from(st), j);
    xd_jid_unref(j);
    xd_stanza_unref(st);
}

/* xd_stanza_canonical: a stanza whose addresses are canonical is handed
 * back as it is (same object, same cached bytes); otherwise 'to' and 'from'
 * are rewritten to the parsed full strings, the parsed JIDs kept; absent or
 * malformed attributes are left alone. */
static void
test_el__canonical_addresses(void **state)
{
    (void)state;
    const char *in = "<message from='a@x/r' to='b@x'><body>hi</body></message>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    const char *bytes = xd_stanza_bytes(st, NULL);
    assert_ptr_equal(xd_stanza_canonical(st), st);
    assert_ptr_equal(xd_stanza_bytes(st, NULL), bytes); /* not serialised again */
    xd_stanza_unref(st);

    in = "<message from='A@X./Res' to='B@\xEF\xBC\xB8/r'><body>hi</body></message>";
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    xd_stanza_t *other = xd_stanza_ref(st); /* shared: a copy is made */
    const xd_jid_t *to = xd_stanza_to(st);
    st = xd_stanza_canonical(st);
    assert_ptr_not_equal(st, other);
    assert_string_equal(xd_stanza_bytes(st, NULL),
                        "<message from='a@x/Res' to='b@x/r'><body>hi</body></message>");
    assert_ptr_equal(xd_stanza_to(st), to); /* the parsed JIDs came along */
    assert_string_equal(xd_el_attr(xd_stanza_root(other), "from"), "A@X./Res");
    xd_stanza_unref(other);
    xd_stanza_unref(st);

    /* Only 'from' differs; the only reference: changed in place. */
    in = "<iq type='get' id='1' from='A@x' to='x'/>";
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    st = xd_stanza_canonical(st);
    assert_string_equal(xd_stanza_bytes(st, NULL), "<iq type='get' id='1' from='a@x' to='x'/>");
    xd_stanza_unref(st);

    /* Absent and malformed attributes stay as they are. */
    in = "<message to='@@bad' from='Me@X'/>";
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    st = xd_stanza_canonical(st);
    assert_null(xd_stanza_to(st));
    assert_string_equal(xd_stanza_bytes(st, NULL), "<message to='@@bad' from='me@x'/>");
    xd_stanza_unref(st);
    in = "<presence/>";
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    assert_ptr_equal(xd_stanza_canonical(st), st);
    xd_stanza_unref(st);
}

/* An error reply never echoes a 'to' that is not a JID (RFC 6120 8.3.3.8):
 * without a 'from' of the caller's, it has none; a 'to' that is a JID comes
 * back as the reply's 'from' in canonical form. */
static void
test_el__error_reply_addresses(void **state)
{
    (void)state;
    const char *in = "<message from='a@x/r' to='not a jid@@' id='m'><body>b</body></message>";
    xd_stanza_t *st = NULL, *e;
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    e = xd_stanza_error(st, XD_COND_JID_MALFORMED, NULL);
    assert_null(xd_el_attr(xd_stanza_root(e), "from"));
    assert_string_equal(xd_el_attr(xd_stanza_root(e), "to"), "a@x/r");
    xd_stanza_unref(e);
    e = xd_stanza_error_from(st, XD_COND_JID_MALFORMED, "no", "x");
    assert_string_equal(xd_el_attr(xd_stanza_root(e), "from"), "x");
    assert_non_null(strstr(xd_stanza_bytes(e, NULL), "<jid-malformed"));
    assert_null(strstr(xd_stanza_bytes(e, NULL), "jid@@"));
    xd_stanza_unref(e);
    xd_stanza_unref(st);

    in = "<iq from='a@x/r' to='B@X.' id='q' type='get'><ping xmlns='urn:xmpp:ping'/></iq>";
    assert_int_equal(xd_stanza_parse(in, strlen(in), XD_NS_CLIENT, &st), 0);
    e = xd_stanza_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    assert_string_equal(xd_el_attr(xd_stanza_root(e), "from"), "b@x");
    xd_stanza_unref(e);
    e = xd_iq_result(st);
    assert_string_equal(xd_stanza_bytes(e, NULL),
                        "<iq id='q' to='a@x/r' from='b@x' type='result'/>");
    xd_stanza_unref(e);
    xd_stanza_unref(st);
}

/* The bytes are right whichever way they are kept: in the stanza's own
 * arena (room left) or on the heap (a stanza that outgrew it).  Where they
 * live is counted by bench/msgpath.py (allocations per message), not here. */
static void
test_el__bytes_same_in_arena_or_heap(void **state)
{
    (void)state;
    const char *small = "<message to='b@x'><body>short</body></message>";
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(small, strlen(small), XD_NS_CLIENT, &st), 0);
    size_t len = 0;
    assert_string_equal(xd_stanza_bytes(st, &len), small);
    assert_int_equal(len, strlen(small));
    xd_stanza_unref(st);

    /* A child added after parsing, whose text is larger than any arena
     * tail: the serialization starts in the arena and moves to the heap. */
    assert_int_equal(xd_stanza_parse(small, strlen(small), XD_NS_CLIENT, &st), 0);
    xd_el_t *e = xd_stanza_thaw(st);
    size_t n = 70000;
    char *big = xd_malloc(n + 1);
    memset(big, 'y', n);
    big[n] = '\0';
    xd_el_add_text(xd_el_add_child(e, "x", "urn:big"), big);
    st = xd_el_freeze(e);
    const char *b = xd_stanza_bytes(st, &len);
    assert_int_equal(len, strlen(small) + n + strlen("<x xmlns='urn:big'></x>"));
    assert_true(strstr(b, big) != NULL);
    assert_int_equal(b[len], '\0');
    assert_ptr_equal(xd_stanza_bytes(st, NULL), b); /* once */
    xd_free(big);
    xd_stanza_unref(st);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_el__builder_reads_well),
        cmocka_unit_test(test_el__attr_replace_and_remove),
        cmocka_unit_test(test_el__children_iteration_and_child_lookup),
        cmocka_unit_test(test_el__text_is_concatenated),
        cmocka_unit_test(test_el__append_moves_between_arenas),
        cmocka_unit_test(test_el__escaping_text_and_attributes),
        cmocka_unit_test(test_el__parse_normalises_literal_whitespace_in_attributes),
        cmocka_unit_test(test_el__content_namespace_root_has_no_xmlns),
        cmocka_unit_test(test_el__foreign_namespaces_are_minimal),
        cmocka_unit_test(test_el__explicit_client_ns_inside_forwarded_is_kept),
        cmocka_unit_test(test_el__prefixes_and_declarations_are_preserved),
        cmocka_unit_test(test_el__xml_lang),
        cmocka_unit_test(test_el__xmlns_attribute_sets_namespace),
        cmocka_unit_test(test_el__freeze_ref_unref_edit),
        cmocka_unit_test(test_el__edit_copy_keeps_namespaces_and_decls),
        cmocka_unit_test(test_el__cached_bytes_are_shared_across_threads),
        cmocka_unit_test(test_el__serialize_deep_and_large),
        cmocka_unit_test(test_el__thaw_in_place_or_copy),
        cmocka_unit_test(test_el__addresses_travel_with_the_stanza),
        cmocka_unit_test(test_el__canonical_addresses),
        cmocka_unit_test(test_el__error_reply_addresses),
        cmocka_unit_test(test_el__bytes_same_in_arena_or_heap),
        cmocka_unit_test(test_el__readdress_shares_body_and_bytes),
        cmocka_unit_test(test_el__readdress_bytes_in_the_copys_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
