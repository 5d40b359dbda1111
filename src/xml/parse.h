/*
 * parse.h — the streaming XMPP XML parser (src/xml; used by src/stream).
 *
 * One parser per XML stream (RFC 6120 4 and 11), built on libxml2's push
 * parser in SAX2 mode (namespaces resolved; DESIGN.md 3 says why).  The
 * caller feeds bytes as they arrive; the parser calls back with the stream
 * header, each complete top-level element as a frozen xd_stanza_t, the
 * stream end, or one error.  Each event fires from the feed that brought
 * the last byte of its markup (the '>'), never later: libxml2 holds back
 * only bytes it cannot decide on yet.
 *
 *      new ──► [before header] ──stream_open──► [in stream] ──stream_close──► [closed]
 *                    ▲                          │  stanza (0..n)
 *                    └──────── reset ◄──────────┘        any state ──error──► [dead]
 *
 * Restrictions (RFC 6120 11.1, 11.6): DOCTYPE/DTD, entity declarations and
 * references other than the five predefined and character references,
 * comments and processing instructions fail with XD_EXML_RESTRICTED; only an
 * XML declaration at the very start of a stream is allowed, and an encoding
 * other than UTF-8 in it fails with XD_EXML_ENCODING.  Entities are never
 * substituted and no DTD or anything else is ever loaded.  Input is checked
 * as UTF-8 before libxml2 sees it (XD_EXML_UTF8: overlong forms, surrogates,
 * values above U+10FFFF, stray or missing continuation bytes; a NUL byte is
 * XD_EXML_SYNTAX).  Other syntax errors are XD_EXML_SYNTAX with libxml2's
 * message and line:column in the detail; an undeclared prefix or another
 * namespace error is XD_EXML_BAD_NS.
 *
 * Limits are enforced while parsing: the bytes fed since the last top-level
 * boundary (end of the header, of a stanza, or of whitespace between
 * stanzas) may not pass max_stanza_bytes (max_header_bytes before the
 * header), and input is handed to libxml2 in bounded chunks, so a peer that
 * sends one endless start tag costs about the limit in memory, not what it
 * sent (XD_EXML_TOO_BIG).  Depth and attribute count are checked per
 * element (XD_EXML_TOO_DEEP, XD_EXML_TOO_MANY_ATTRS).  Whitespace between
 * stanzas (keepalives) never counts toward the next stanza.
 *
 * Namespaces: elements in the stream's default namespace (the one declared
 * on the header: jabber:client, …) or in no namespace get ns NULL in the
 * tree as long as their parent is also in the content namespace; this makes
 * a stanza's cached bytes independent of the stream (el.h).  Everything
 * else keeps its URI and prefix.
 *
 * Pause and reset: a handler may call xd_xml_parser_pause() or
 * xd_xml_parser_reset().  Parsing then stops right after the element (or
 * header) that was being reported, and feed returns 0 with *consumed set to
 * the number of bytes of `buf` up to and including that element.  The caller
 * owns the rest, buf[*consumed..len):
 *   - after reset (STARTTLS, SASL success: RFC 6120 5.4.3.3, 6.4.6) it is the
 *     start of the new stream, or TLS bytes — feed it, or hand it on;
 *   - after pause it must be fed again (the same bytes first) once
 *     xd_xml_parser_resume() was called; while paused, feed consumes nothing.
 * Handlers must not call xd_xml_parser_free or feed (they may parse other
 * XML, e.g. with xd_stanza_parse).  Not thread-safe: one owner (the
 * stream's worker).  A pause costs a little: the parser continues in a new
 * libxml2 context behind a synthetic copy of the stream header (about 2 us;
 * docs/performance.md).
 *
 * libxml2 is set up process-wide by the first xd_xml_parser_new (or
 * xd_el_parse): its allocator hooks (xmlMemSetup, for the accounting below)
 * must be in place before anything else in the process calls libxml2.
 */
#ifndef XD_XML_PARSE_H
#define XD_XML_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "xmppd/el.h"

typedef struct xd_xml_parser xd_xml_parser_t;

typedef struct xd_xml_limits {
    size_t max_stanza_bytes; /* per top-level element; 65536 (ejabberd max_stanza_size) */
    size_t max_header_bytes; /* XML declaration + stream header; 8192 */
    unsigned max_depth;      /* element nesting in a stanza, root = 1; 32 */
    unsigned max_attrs;      /* attributes per element (xmlns excluded); 64 */
} xd_xml_limits_t;

#define XD_XML_LIMITS_DEFAULT ((xd_xml_limits_t){ 65536, 8192, 32, 64 })

typedef struct xd_xml_handlers {
    /* The stream header, as an element (name "stream", its namespace and
     * prefix, attributes to/from/id/version/xml:lang), valid until reset or
     * free.  xd_xml_parser_stream_ns() gives the default namespace it
     * declared.  The caller checks both (invalid-namespace, RFC 6120
     * 4.9.3.10); the parser only reports what it saw. */
    void (*stream_open)(void *ud, const xd_el_t *header);
    /* One complete top-level element; the handler owns the reference. */
    void (*stanza)(void *ud, xd_stanza_t *st);
    /* The closing tag of the stream. */
    void (*stream_close)(void *ud);
    /* Called once; the parser is dead until reset.  `detail` is for logs. */
    void (*error)(void *ud, int code, const char *detail);
} xd_xml_handlers_t;

/* A parser for a stream.  `limits` NULL = XD_XML_LIMITS_DEFAULT; a zero
 * field takes its default.  Handlers may be NULL (ignored; a stanza is then
 * released at once). */
xd_xml_parser_t *xd_xml_parser_new(const xd_xml_handlers_t *h, void *ud,
                                   const xd_xml_limits_t *limits);

/* Frees the parser (not from inside one of its handlers).  NULL is a no-op. */
void xd_xml_parser_free(xd_xml_parser_t *p);

/* Parses buf[0..len).  Returns 0 or the XD_EXML_* code of the error (also
 * reported once through the error handler; later calls return it again).
 * *consumed (required if a handler may pause or reset) gets the bytes used:
 * len, unless a handler paused or reset the parser (see above). */
int xd_xml_parser_feed(xd_xml_parser_t *p, const char *buf, size_t len, size_t *consumed);

/* Starts a new stream: drops the header, any partial element and any error.
 * From a handler it takes effect after that handler returns. */
void xd_xml_parser_reset(xd_xml_parser_t *p);

/* Stops delivering after the current element (see above) until resume. */
void xd_xml_parser_pause(xd_xml_parser_t *p);
void xd_xml_parser_resume(xd_xml_parser_t *p);
bool xd_xml_parser_paused(const xd_xml_parser_t *p);

/* The stream header (NULL before it arrived) and the default namespace it
 * declared (jabber:client, …; NULL when none): the stream's content
 * namespace, which the parser maps to NULL in stanzas. */
const xd_el_t *xd_xml_parser_header(const xd_xml_parser_t *p);
const char *xd_xml_parser_stream_ns(const xd_xml_parser_t *p);

/* Releases libxml2's context and scratch buffers of an idle stream: when
 * the parser sits between top-level elements with nothing held back, it
 * keeps only the stream header (about 1 KB) and the next feed starts a new
 * context primed with a synthetic copy of the header (about 2 µs).  Returns
 * whether it trimmed.  Not from inside a handler. */
bool xd_xml_parser_trim(xd_xml_parser_t *p);

/* Bytes this parser holds now (libxml2's context and buffers, text
 * scratch, the header and the partial tree) and the most it ever held:
 * per-connection memory accounting.  libxml2's buffers never shrink, so the
 * parser moves to a fresh libxml2 context after a stanza that grew them. */
size_t xd_xml_parser_mem(const xd_xml_parser_t *p);
size_t xd_xml_parser_mem_peak(const xd_xml_parser_t *p);

#endif
