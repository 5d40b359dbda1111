/*
 * fuzz_xml.c — libFuzzer target for the XML layer (src/xml).
 *
 * Where it sits: fuzz/, built by fuzz/meson.build with -Dfuzz=true and
 * CC=clang; seeds in fuzz/corpus/xml/.
 *
 * Input layout: byte 0 chooses the mode, the rest is XML.
 *   bit 0    prepend a jabber:client stream header;
 *   bit 1    pause after every stanza, then resume and re-feed the rest;
 *   bits 2-7 where to split the input into two feeds (scaled to its length).
 * Properties checked (abort on violation):
 *   - every stanza the stream parser delivers serializes to bytes that the
 *     one-shot parser accepts, and re-serializing gives the same bytes;
 *   - a deep copy (xd_stanza_edit) serializes identically;
 *   - the one-shot parser on the raw input: when it accepts, the same
 *     round-trip property holds;
 *   - feed never reports more consumed bytes than it was given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml/parse.h"
#include "xmppd/alloc.h"
#include "xmppd/el.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz {
    xd_xml_parser_t *p; /* the stream parser */
    bool pause;         /* pause after each stanza */
} fz_t;

static void
fz_check(const char *a, size_t alen, const char *b, size_t blen, const char *what)
{
    if (alen != blen || memcmp(a, b, alen) != 0) {
        fprintf(stderr, "round trip mismatch (%s):\n%.*s\n%.*s\n", what, (int)alen, a,
                (int)blen, b);
        abort();
    }
}

/* serialize(parse(bytes)) == bytes, for bytes the serializer produced. */
static void
fz_roundtrip(const char *bytes, size_t len, const char *content_ns)
{
    xd_stanza_t *st = NULL;
    int rc = xd_stanza_parse(bytes, len, content_ns, &st);
    if (rc != 0) {
        fprintf(stderr, "serializer output rejected (%d): %.*s\n", rc, (int)len, bytes);
        abort();
    }
    size_t len2;
    const char *b2 = xd_stanza_bytes(st, &len2);
    fz_check(bytes, len, b2, len2, "reparse");
    xd_el_t *copy = xd_stanza_edit(st);
    size_t len3;
    char *b3 = xd_el_serialize(copy, NULL, &len3);
    fz_check(bytes, len, b3, len3, "edit copy");
    xd_free(b3);
    xd_el_free(copy);
    xd_stanza_unref(st);
}

static void
fz_open(void *ud, const xd_el_t *header)
{
    (void)ud;
    (void)xd_el_attr(header, "to");
}

static void
fz_stanza(void *ud, xd_stanza_t *st)
{
    fz_t *f = ud;
    size_t len;
    const char *bytes = xd_stanza_bytes(st, &len);
    fz_roundtrip(bytes, len, xd_xml_parser_stream_ns(f->p));
    xd_stanza_unref(st);
    if (f->pause)
        xd_xml_parser_pause(f->p);
}

static void
fz_close(void *ud)
{
    (void)ud;
}

static void
fz_error(void *ud, int code, const char *detail)
{
    (void)ud;
    (void)code;
    (void)detail;
}

/* Feeds buf[0..len), resuming after every pause. */
static int
fz_feed(fz_t *f, const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t used = 0;
        int rc = xd_xml_parser_feed(f->p, buf + off, len - off, &used);
        if (rc != 0)
            return rc;
        if (used > len - off)
            abort();
        off += used;
        if (xd_xml_parser_paused(f->p))
            xd_xml_parser_resume(f->p);
        else if (off < len)
            abort(); /* not paused, yet not everything consumed */
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const xd_xml_handlers_t h = { fz_open, fz_stanza, fz_close, fz_error };
    static const char hdr[] = "<stream:stream xmlns='jabber:client' "
                              "xmlns:stream='http://etherx.jabber.org/streams' to='a'>";
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *xml = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = len ? (size_t)(mode >> 2) * len / 63 : 0;
    if (split > len)
        split = len;

    fz_t f = { NULL, (mode & 2) != 0 };
    xd_xml_limits_t lim = { .max_stanza_bytes = 16384, .max_header_bytes = 4096 };
    f.p = xd_xml_parser_new(&h, &f, &lim);
    int rc = 0;
    if (mode & 1)
        rc = fz_feed(&f, hdr, sizeof(hdr) - 1);
    if (rc == 0)
        rc = fz_feed(&f, xml, split);
    if (rc == 0)
        rc = fz_feed(&f, xml + split, len - split);
    xd_xml_parser_free(f.p);

    xd_el_t *el = NULL;
    if (xd_el_parse(xml, len, &el) == 0) {
        size_t slen;
        char *s = xd_el_serialize(el, NULL, &slen);
        xd_el_t *again = NULL;
        if (xd_el_parse(s, slen, &again) != 0)
            abort();
        size_t s2len;
        char *s2 = xd_el_serialize(again, NULL, &s2len);
        fz_check(s, slen, s2, s2len, "one-shot");
        xd_free(s2);
        xd_el_free(again);
        xd_free(s);
        xd_el_free(el);
    }
    return 0;
}
