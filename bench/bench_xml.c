/*
 * bench_xml.c — throughput of the XML layer: streaming parse, serialize,
 * and both (src/xml).
 *
 * Where it sits: bench/, built by bench/meson.build; run by `make bench`
 * (scripts/bench) on a release build.  Usage: bench_xml [MB] (default 50).
 *
 * The input is a realistic stanza mix — chat messages with body, thread,
 * receipt request and chat state; presence with caps and vcard-update; a
 * roster result with many items; a disco#info result; a MUC groupchat
 * message with delay; a pubsub event; an iq ping — repeated into one
 * jabber:client stream of about MB megabytes, fed in 4 KB pieces as a socket
 * would deliver it.  Figures, each in MB/s of XML and stanzas/s, best of
 * three runs:
 *   libxml2 baseline libxml2's push parser alone, SAX2 (namespaces
 *                    resolved), empty handlers — the ceiling for
 *                    everything built on it;
 *   parse            the streaming parser builds and frees every stanza;
 *   serialize        fresh serializations (xd_el_serialize, not the cache)
 *                    of a set of parsed stanzas, to the same volume;
 *   parse+serialize  the parser's stanza handler serializes each stanza;
 *   parse, pause     the handler pauses after every stanza and the feeder
 *                    resumes and re-feeds the rest (the worst case of
 *                    pause: every stanza restarts libxml2).
 * The expat figures of the parser before libxml2 are in docs/performance.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/parser.h>

#include "xml/parse.h"
#include "xmppd/alloc.h"
#include "xmppd/el.h"

static const char *const bench_mix[] = {
    "<message to='juliet@capulet.example/balcony' from='romeo@montague.example/orchard' "
    "type='chat' id='ktx72v49' xml:lang='en'><body>Art thou not Romeo, and a Montague? "
    "Neither, fair saint, if either thee dislike.</body><thread>e0ffe42b28561960c6b12b944a0927"
    "94b9683a38</thread><request xmlns='urn:xmpp:receipts'/><active "
    "xmlns='http://jabber.org/protocol/chatstates'/></message>",

    "<message to='romeo@montague.example/orchard' from='juliet@capulet.example/balcony' "
    "type='chat' id='b2'><body>How cam'st thou hither, tell me, and wherefore? &lt;3 &amp; "
    "more</body><received xmlns='urn:xmpp:receipts' id='ktx72v49'/></message>",

    "<presence from='romeo@montague.example/orchard' xml:lang='en'><show>away</show>"
    "<status>I shall return</status><priority>5</priority><c "
    "xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://gajim.org' "
    "ver='QgayPKawpkPSDYmwT/WM94uAlu0='/><x xmlns='vcard-temp:x:update'><photo>01b87fcd030b7289"
    "5ff8e88db57ec525450f000d</photo></x></presence>",

    "<iq type='result' id='roster_1' to='romeo@montague.example/orchard'><query "
    "xmlns='jabber:iq:roster' ver='ver11'>"
    "<item jid='juliet@capulet.example' name='Juliet' subscription='both'><group>Lovers"
    "</group></item><item jid='mercutio@montague.example' name='Mercutio' "
    "subscription='both'><group>Friends</group></item><item jid='benvolio@montague.example' "
    "name='Benvolio' subscription='both'><group>Friends</group><group>Family</group></item>"
    "<item jid='nurse@capulet.example' name='Nurse' subscription='to'/><item "
    "jid='tybalt@capulet.example' subscription='none' ask='subscribe'/><item "
    "jid='friar@church.example' name='Friar Laurence' subscription='both'><group>Church"
    "</group></item><item jid='paris@verona.example' name='Paris' subscription='from'/>"
    "<item jid='prince@verona.example' name='Escalus' subscription='both'><group>Verona"
    "</group></item><item jid='balthasar@montague.example' subscription='both'/><item "
    "jid='sampson@capulet.example' subscription='none'/></query></iq>",

    "<iq type='result' id='disco1' from='montague.example' to='romeo@montague.example/orchard'>"
    "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' "
    "type='im' name='xmppd'/><feature var='http://jabber.org/protocol/disco#info'/><feature "
    "var='http://jabber.org/protocol/disco#items'/><feature var='urn:xmpp:ping'/><feature "
    "var='jabber:iq:version'/><feature var='jabber:iq:roster'/><feature "
    "var='urn:xmpp:carbons:2'/><feature var='urn:xmpp:mam:2'/><feature "
    "var='urn:xmpp:blocking'/><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' "
    "type='hidden'><value>http://jabber.org/network/serverinfo</value></field><field "
    "var='admin-addresses'><value>mailto:admin@montague.example</value></field></x></query>"
    "</iq>",

    "<message from='coven@chat.shakespeare.example/firstwitch' "
    "to='hecate@shakespeare.example/broom' type='groupchat' id='162BEBB1'><body>Thrice the "
    "brinded cat hath mew'd.</body><delay xmlns='urn:xmpp:delay' "
    "from='coven@chat.shakespeare.example' stamp='2002-10-13T23:58:37Z'/><stanza-id "
    "xmlns='urn:xmpp:sid:0' id='5f3dbc5e-e1d3-4077-a492-693f3769c7ad' "
    "by='coven@chat.shakespeare.example'/></message>",

    "<message from='pubsub.shakespeare.example' to='francisco@denmark.example' id='foo'>"
    "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='princely_musings'>"
    "<item id='ae890ac52d0df67ed7cfdf51b644e901'><entry xmlns='http://www.w3.org/2005/Atom'>"
    "<title>Soliloquy</title><summary>To be, or not to be: that is the question: Whether "
    "'tis nobler in the mind to suffer The slings and arrows of outrageous fortune, or to "
    "take arms against a sea of troubles, And by opposing end them?</summary><link "
    "rel='alternate' type='text/html' href='http://denmark.example/2003/12/13/atom03'/>"
    "<id>tag:denmark.example,2003:entry-32397</id><published>2003-12-13T18:30:02Z"
    "</published><updated>2003-12-13T18:30:02Z</updated></entry></item></items></event>"
    "</message>",

    ("<iq from='capulet.example' to='juliet@capulet.example/balcony' id='s2c1' type='get'>"
     "<ping xmlns='urn:xmpp:ping'/></iq>"),
};

#define BENCH_NMIX (sizeof(bench_mix) / sizeof(bench_mix[0]))
#define BENCH_FEED 4096

static double
bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct bench_ctx {
    size_t stanzas;   /* stanzas delivered */
    size_t out_bytes; /* bytes serialized */
    bool serialize;   /* serialize each stanza in the handler */
    xd_stanza_t **keep; /* optional: keep the first keep_cap stanzas */
    size_t nkeep;       /* entries of keep used */
    size_t keep_cap;    /* entries of keep */
    xd_xml_parser_t *p; /* the parser, for handlers that pause */
    bool pause;         /* pause after every stanza */
} bench_ctx_t;

static void
bench_stanza(void *ud, xd_stanza_t *st)
{
    bench_ctx_t *c = ud;
    c->stanzas++;
    if (c->serialize) {
        size_t len;
        char *s = xd_el_serialize(xd_stanza_root(st), NULL, &len);
        c->out_bytes += len;
        xd_free(s);
    }
    if (c->pause)
        xd_xml_parser_pause(c->p);
    if (c->nkeep < c->keep_cap) {
        c->keep[c->nkeep++] = st;
        return;
    }
    xd_stanza_unref(st);
}

static void
bench_error(void *ud, int code, const char *detail)
{
    (void)ud;
    fprintf(stderr, "bench_xml: parse error %d: %s\n", code, detail);
    exit(1);
}

/* Streams `in` through a new parser in BENCH_FEED pieces. */
static void
bench_parse(const char *in, size_t len, bench_ctx_t *c)
{
    xd_xml_handlers_t h = { .stanza = bench_stanza, .error = bench_error };
    xd_xml_parser_t *p = xd_xml_parser_new(&h, c, NULL);
    c->p = p;
    for (size_t off = 0; off < len; off += BENCH_FEED) {
        size_t n = len - off < BENCH_FEED ? len - off : BENCH_FEED;
        size_t done = 0;
        while (done < n) {
            size_t used = 0;
            if (xd_xml_parser_feed(p, in + off + done, n - done, &used) != 0)
                exit(1);
            done += used;
            xd_xml_parser_resume(p);
        }
    }
    xd_xml_parser_free(p);
    c->p = NULL;
}

static void
bench_x_start(void *ud, const xmlChar *local, const xmlChar *prefix, const xmlChar *uri,
              int nb_ns, const xmlChar **nss, int nb_attrs, int nb_def, const xmlChar **atts)
{
    (void)local, (void)prefix, (void)uri, (void)nb_ns, (void)nss, (void)nb_attrs,
        (void)nb_def, (void)atts;
    ++*(size_t *)ud;
}

static void
bench_x_end(void *ud, const xmlChar *local, const xmlChar *prefix, const xmlChar *uri)
{
    (void)ud, (void)local, (void)prefix, (void)uri;
}

static void
bench_x_text(void *ud, const xmlChar *s, int len)
{
    (void)ud, (void)s, (void)len;
}

/* libxml2 alone on the same input and feed size.  Its allocator hooks are
 * the parser's (installed by the first xd_xml_parser_new, the warm-up). */
static void
bench_libxml2(const char *in, size_t len)
{
    size_t els = 0;
    xmlSAXHandler sax = { .initialized = XML_SAX2_MAGIC,
                          .startElementNs = bench_x_start,
                          .endElementNs = bench_x_end,
                          .characters = bench_x_text };
    xmlParserCtxtPtr ctxt = xmlCreatePushParserCtxt(&sax, &els, NULL, 0, NULL);
    xmlCtxtUseOptions(ctxt, XML_PARSE_NONET);
    for (size_t off = 0; off < len; off += BENCH_FEED) {
        size_t n = len - off < BENCH_FEED ? len - off : BENCH_FEED;
        if (xmlParseChunk(ctxt, in + off, (int)n, 0) != 0)
            exit(1);
    }
    xmlFreeParserCtxt(ctxt);
}

static void
bench_report(const char *what, double secs, size_t bytes, size_t stanzas)
{
    printf("%-16s %8.1f MB/s %10.0f stanzas/s  (%zu bytes, %zu stanzas, %.3f s)\n", what,
           (double)bytes / secs / 1e6, (double)stanzas / secs, bytes, stanzas, secs);
}

int
main(int argc, char **argv)
{
    size_t mb = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 50;
    size_t target = mb * 1000 * 1000;
    static const char hdr[] = "<?xml version='1.0'?><stream:stream to='montague.example' "
                              "version='1.0' xml:lang='en' xmlns='jabber:client' "
                              "xmlns:stream='http://etherx.jabber.org/streams'>";
    size_t cap = target + 64 * 1024, len = 0;
    char *in = xd_malloc(cap);
    memcpy(in, hdr, sizeof(hdr) - 1);
    len = sizeof(hdr) - 1;
    size_t mix_stanzas = 0;
    while (len < target) {
        for (size_t i = 0; i < BENCH_NMIX; i++) {
            size_t n = strlen(bench_mix[i]);
            memcpy(in + len, bench_mix[i], n);
            len += n;
            mix_stanzas++;
        }
    }

    /* Warm-up (page faults, allocator). */
    bench_ctx_t warm = { 0 };
    bench_parse(in, len < 4000000 ? len : 4000000, &warm);

    double t0, t_x = 1e9, t_parse = 1e9, t_ser = 1e9, t_both = 1e9;
    for (int run = 0; run < 3; run++) {
        t0 = bench_now();
        bench_libxml2(in, len);
        double t = bench_now() - t0;
        t_x = t < t_x ? t : t_x;
    }
    bench_report("libxml2 baseline", t_x, len, mix_stanzas);

    bench_ctx_t c1 = { 0 };
    for (int run = 0; run < 3; run++) {
        c1.stanzas = 0;
        t0 = bench_now();
        bench_parse(in, len, &c1);
        double t = bench_now() - t0;
        t_parse = t < t_parse ? t : t_parse;
    }
    if (c1.stanzas != mix_stanzas) {
        fprintf(stderr, "bench_xml: %zu stanzas parsed, %zu expected\n", c1.stanzas, mix_stanzas);
        return 1;
    }
    bench_report("parse", t_parse, len, c1.stanzas);

    /* Serialize only: 800 parsed stanzas (100 rounds of the mix), serialized
     * fresh until the same volume is written. */
    bench_ctx_t ck = { 0 };
    ck.keep_cap = 100 * BENCH_NMIX;
    ck.keep = xd_malloc(sizeof(xd_stanza_t *) * ck.keep_cap);
    bench_parse(in, len < 2000000 ? len : 2000000, &ck);
    size_t out = 0, nser = 0;
    for (int run = 0; run < 3; run++) {
        out = nser = 0;
        t0 = bench_now();
        while (out < len) {
            for (size_t i = 0; i < ck.nkeep; i++) {
                size_t n;
                char *s = xd_el_serialize(xd_stanza_root(ck.keep[i]), NULL, &n);
                out += n;
                xd_free(s);
            }
            nser += ck.nkeep;
        }
        double t = bench_now() - t0;
        t_ser = t < t_ser ? t : t_ser;
    }
    bench_report("serialize", t_ser, out, nser);
    for (size_t i = 0; i < ck.nkeep; i++)
        xd_stanza_unref(ck.keep[i]);
    xd_free(ck.keep);

    bench_ctx_t c2 = { .serialize = true };
    for (int run = 0; run < 3; run++) {
        c2.stanzas = 0;
        t0 = bench_now();
        bench_parse(in, len, &c2);
        double t = bench_now() - t0;
        t_both = t < t_both ? t : t_both;
    }
    bench_report("parse+serialize", t_both, len, c2.stanzas);

    /* Pause after every stanza: a tenth of the volume is enough. */
    size_t plen = len / 10;
    bench_ctx_t c3 = { .pause = true };
    double t_pause = 1e9;
    for (int run = 0; run < 3; run++) {
        c3.stanzas = 0;
        t0 = bench_now();
        bench_parse(in, plen, &c3);
        double t = bench_now() - t0;
        t_pause = t < t_pause ? t : t_pause;
    }
    bench_report("parse, pause", t_pause, plen, c3.stanzas);

    xd_free(in);
    return 0;
}
