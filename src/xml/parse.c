/*
 * parse.c — the streaming XMPP XML parser and the one-shot element parser
 * (src/xml; API in parse.h and include/xmppd/el.h).
 *
 * libxml2's push parser runs in SAX2 mode (namespaces resolved, names from
 * its dictionary, no tree of its own).  The parser builds each top-level
 * element directly into a fresh arena (tree.h) and freezes it at its end
 * tag.  Positions are stream offsets:
 *
 *     0 ........ stanza_start ........ abs_fed == abs_consumed
 *                (last top-level       (what was handed to libxml2 and
 *                 boundary)             given up by the caller)
 *
 * A libxml2 context ("ctxt") sees the stream from `origin` on: stream
 * offset = origin + the ctxt's own byte offset (parse_pos).  A ctxt that
 * was stopped (error, pause, reset) is never fed again.  Pause needs no
 * suspended parser: the ctxt is dropped, the caller re-feeds the bytes after
 * the pause point, and a new ctxt is "primed" with a synthetic copy of the
 * stream header (same qualified name, same namespace declarations; its
 * events are swallowed), so it continues in the same namespace context:
 *
 *     ctxt bytes:   <stream:stream xmlns='…' xmlns:stream='…'>  <message…
 *                   └──────── synth (primed) ────────────────┘  └ stream
 *                   origin = pause_pos - synth_len                 bytes
 *
 * The same restart keeps libxml2's memory bounded: its input buffer grows
 * with the biggest element seen and its dictionary with every distinct name,
 * and neither ever shrinks, so after a stanza that leaves libxml2 holding
 * PARSE_TRIM_BYTES more than a fresh ctxt, parsing goes on from the end of
 * that stanza in a new primed ctxt, within the same feed.
 *
 * Stopping: libxml2 leaves its state loop at the next step when errNo is set
 * and disableSAX is on (what a fatal error does), so parse_stop sets both
 * from inside a callback; nothing after the current construct is parsed or
 * reported.  xmlStopParser is not used: it frees the input buffer from
 * inside the callback, under the feet of the function that called it.
 *
 * Held-back bytes: libxml2 parses a tag only once its '>' is in the buffer
 * and reports text only once a '<' (or 300 bytes) follows, but it parses
 * everything it can decide on before xmlParseChunk returns, so an element
 * is reported by the time its last '>' was fed.  Whitespace it holds back
 * between stanzas is counted as a boundary by parse_run.
 *
 * Invariants:
 *   - abs_fed - stanza_start <= limit + 1 whenever libxml2 runs: input is
 *     handed over in chunks of at most PARSE_CHUNK and never past the
 *     budget, so libxml2 never buffers much more than the limit;
 *   - abs_fed == abs_consumed whenever feed returns: bytes after a pause or
 *     reset point are dropped with the ctxt and fed again by the caller;
 *   - the text scratch holds the current text run and never exceeds the
 *     limit (plus slack), since a run is part of the counted bytes;
 *   - err != 0 means dead: no handler runs again until reset.
 * User handlers run inside libxml2 callbacks; the error handler runs from
 * feed after libxml2 returned.
 *
 * Memory accounting: libxml2 allocates through xmlMemSetup hooks installed
 * once per process (parse_init_once, before any other libxml2 call).  Each block
 * carries its size and the account of the parser that was running when it
 * was allocated (a thread-local), so frees and reallocs are counted right
 * whoever triggers them; an account outlives its parser while blocks that
 * name it are alive (libxml2 keeps a per-thread copy of the last error).
 */
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlmemory.h>
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "xml/parse.h"
#include "xml/tree.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/ns.h"

#define PARSE_CHUNK      4096
#define PARSE_ARENA      2048
#define PARSE_TEXT_KEEP  8192 /* text scratch kept between stanzas */
#define PARSE_TRIM_BYTES (16 * 1024) /* libxml2 growth that makes a ctxt restart */

/* Bytes libxml2 holds for one parser.  Owner: the parser's thread. */
typedef struct parse_acct {
    struct xd_xml_parser *owner; /* parser to tell about growth; NULL once freed */
    size_t bytes;                /* live bytes in blocks naming this account */
    size_t blocks;               /* live blocks naming this account */
} parse_acct_t;

/* One stream's parser.  Owner: the stream's worker (one thread); handlers
 * touch it only through the API. */
struct xd_xml_parser {
    xmlParserCtxtPtr ctxt;  /* libxml2 push parser, or NULL: made on the next feed */
    int64_t origin;         /* stream offset of the ctxt's byte 0 (see above) */
    bool priming;           /* feeding the synthetic header: events are swallowed */
    bool stopped;           /* the ctxt was told to stop: ignore its events */
    bool restart;           /* it stopped only to be replaced (see parse_end) */
    bool lib_error;         /* libxml2 raised something during this call */
    int buf_start;          /* xmlDefaultBufferSize for new ctxts (parse_buf_start) */
    parse_acct_t *acct;     /* libxml2's bytes for this parser */
    size_t acct_base;       /* acct->bytes right after the ctxt was made */

    xd_xml_handlers_t h;    /* user handlers (copy) */
    void *ud;               /* user data for the handlers */
    xd_xml_limits_t lim;    /* limits, defaults filled in */
    bool oneshot;           /* document mode: the root element is the result */
    const char *oneshot_ns; /* one-shot: namespace mapped to NULL, or NULL */

    int err;                /* 0 or the XD_EXML_* code; dead when set */
    bool err_reported;      /* the error handler ran */
    char detail[192];       /* error detail for the handler */

    unsigned depth;         /* open elements (the header counts in a stream) */
    bool header_seen;       /* stream mode: stream_open was called */
    bool closed;            /* stream mode: stream_close was called */
    xd_arena_t *hdr_arena;  /* header element, content_ns, synth */
    xd_el_t *header;        /* stream header element */
    const char *content_ns; /* default ns of the header, or NULL */
    size_t content_len;     /* strlen(content_ns) */
    char *synth;            /* synthetic header for priming, or NULL (in hdr_arena) */
    size_t synth_len;       /* strlen(synth) */

    xd_arena_t *arena;      /* arena of the element being built */
    xd_el_t *root;          /* its root */
    xd_el_t *cur;           /* innermost open element */
    xd_el_t *result;        /* one-shot: the finished root */

    char *text;             /* scratch for the current text run */
    size_t text_len;        /* bytes in text */
    size_t text_cap;        /* allocated bytes of text */

    int64_t abs_fed;        /* stream bytes given to libxml2 (and consumed) */
    int64_t abs_consumed;   /* stream bytes the caller has given up */
    int64_t stanza_start;   /* offset of the last top-level boundary */
    int64_t pause_pos;      /* offset right after the element that paused, reset
                               or restarted */
    bool in_parse;          /* inside a libxml2 call */
    bool pause_req;         /* a handler asked to pause */
    bool reset_req;         /* a handler asked to reset */
    bool paused;            /* waiting for resume */

    uint8_t u8_need;        /* UTF-8: continuation bytes still expected */
    uint8_t u8_lo, u8_hi;   /* UTF-8: range of the next continuation byte */
    bool u8_nul;            /* the last check stopped at a NUL byte */

    size_t mem_peak;        /* most bytes ever held */
};

/* ---- Memory accounting for libxml2 ------------------------------------- */

/* Header in front of every libxml2 block; 16 bytes keep the payload aligned
 * for any type. */
typedef struct parse_mhdr {
    size_t size;        /* payload bytes */
    parse_acct_t *acct; /* account charged, or NULL (process-wide state) */
} parse_mhdr_t;

/* The account charged for libxml2 allocations on this thread now: set
 * around every libxml2 call, saved and restored (a handler may parse). */
static _Thread_local parse_acct_t *parse_cur_acct;

static size_t
parse_mem_now(const struct xd_xml_parser *p)
{
    return p->acct->bytes + p->text_cap + (p->arena ? p->arena->bytes : 0) +
           (p->hdr_arena ? p->hdr_arena->bytes : 0);
}

static void
parse_mem_note(struct xd_xml_parser *p)
{
    size_t now = parse_mem_now(p);
    if (now > p->mem_peak)
        p->mem_peak = now;
}

static void
parse_acct_add(parse_acct_t *a, size_t size)
{
    if (!a)
        return;
    a->bytes += size;
    a->blocks++;
    if (a->owner)
        parse_mem_note(a->owner);
}

static void
parse_acct_sub(parse_acct_t *a, size_t size)
{
    if (!a)
        return;
    a->bytes -= size;
    if (--a->blocks == 0 && !a->owner)
        xd_free(a);
}

static void *
parse_malloc(size_t size)
{
    parse_mhdr_t *h = xd_malloc(sizeof(*h) + size);
    h->size = size;
    h->acct = parse_cur_acct;
    parse_acct_add(h->acct, size);
    return h + 1;
}

static void
parse_mfree(void *ptr)
{
    if (!ptr)
        return;
    parse_mhdr_t *h = (parse_mhdr_t *)ptr - 1;
    parse_acct_sub(h->acct, h->size);
    xd_free(h);
}

static void *
parse_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return parse_malloc(size);
    parse_mhdr_t *h = (parse_mhdr_t *)ptr - 1;
    parse_acct_t *a = h->acct;
    size_t old = h->size;
    h = xd_realloc(h, sizeof(*h) + size);
    h->size = size;
    if (a) {
        a->bytes = a->bytes - old + size;
        if (a->owner)
            parse_mem_note(a->owner);
    }
    return h + 1;
}

static char *
parse_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = parse_malloc(n);
    memcpy(d, s, n);
    return d;
}

static pthread_once_t parse_once = PTHREAD_ONCE_INIT;

static void
parse_init_once(void)
{
    /* The hooks must be in place before libxml2 allocates anything. */
    int rc = xmlMemSetup(parse_mfree, parse_malloc, parse_realloc, parse_strdup);
    XD_ASSERT(rc == 0);
    xmlInitParser();
}

/* ---- Errors -------------------------------------------------------------- */

/* Tells the running ctxt to stop after the current construct: the state a
 * fatal error leaves it in.  No event of it is reported afterwards. */
static void
parse_stop(struct xd_xml_parser *p)
{
    p->stopped = true;
    if (p->ctxt) {
        p->ctxt->disableSAX = 1;
        if (p->ctxt->errNo == XML_ERR_OK)
            p->ctxt->errNo = XML_ERR_USER_STOP;
    }
}

static void parse_fail(struct xd_xml_parser *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error and stops libxml2; the handler runs from feed. */
static void
parse_fail(struct xd_xml_parser *p, int code, const char *fmt, ...)
{
    if (p->err)
        return;
    p->err = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->detail, sizeof(p->detail), fmt, ap);
    va_end(ap);
    if (p->in_parse)
        parse_stop(p);
}

static void
parse_report(struct xd_xml_parser *p)
{
    if (p->err && !p->err_reported) {
        p->err_reported = true;
        if (p->h.error)
            p->h.error(p->ud, p->err, p->detail);
    }
}

/* Maps a libxml2 error to an XD_EXML_* code. */
static int
parse_map_error(const xmlError *e)
{
    if (e->domain == XML_FROM_NAMESPACE)
        return XD_EXML_BAD_NS;
    switch (e->code) {
    case XML_ERR_UNDECLARED_ENTITY:
    case XML_WAR_UNDECLARED_ENTITY:
    case XML_ERR_UNPARSED_ENTITY:
    case XML_ERR_ENTITY_IS_EXTERNAL:
    case XML_ERR_ENTITY_IS_PARAMETER:
    case XML_ERR_ENTITY_LOOP:
    case XML_ERR_ENTITY_BOUNDARY:
    case XML_ERR_ENTITY_PE_INTERNAL:
    case XML_ERR_EXT_ENTITY_STANDALONE:
    case XML_ERR_ENTITYREF_SEMICOL_MISSING:
    case XML_ERR_PEREF_AT_EOF:
    case XML_ERR_PEREF_IN_PROLOG:
    case XML_ERR_PEREF_IN_EPILOG:
    case XML_ERR_PEREF_IN_INT_SUBSET:
    case XML_ERR_PEREF_NO_NAME:
    case XML_ERR_PEREF_SEMICOL_MISSING:
    case XML_ERR_DOCTYPE_NOT_FINISHED:
    case XML_ERR_ENTITY_NOT_STARTED:
    case XML_ERR_ENTITY_NOT_FINISHED:
        return XD_EXML_RESTRICTED;
    case XML_ERR_UNKNOWN_VERSION:
        return XD_EXML_VERSION;
    case XML_ERR_UNSUPPORTED_ENCODING:
    case XML_ERR_UNKNOWN_ENCODING:
    case XML_ERR_INVALID_ENCODING:
        return XD_EXML_ENCODING;
    default:
        return XD_EXML_SYNTAX;
    }
}

/* libxml2's structured error channel (serror).  Warnings (relative
 * namespace URIs, unknown XML versions) are not errors for us. */
static void
parse_lib_error(void *ud, xmlErrorPtr e)
{
    struct xd_xml_parser *p = ud;
    p->lib_error = true;
    if (p->stopped || p->err || e->level == XML_ERR_WARNING)
        return;
    /* A namespace name that is not a URI (RFC 3986) is raised as an error;
     * Namespaces in XML does not require checking it, nor did expat. */
    if (e->code == XML_WAR_NS_URI || e->code == XML_WAR_NS_URI_RELATIVE)
        return;
    const char *msg = e->message ? e->message : "error";
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    if (n > 120)
        n = 120;
    parse_fail(p, parse_map_error(e), "%.*s at line %d column %d", (int)n, msg, e->line,
               e->int2);
}

/* ---- UTF-8 check (RFC 3629) ---------------------------------------------- */

/* Returns the length of the valid prefix of s[0..n); a sequence cut at the
 * end is valid so far and continues in the next call.  A NUL byte (never an
 * XML character) also ends the prefix, with u8_nul set. */
static size_t
parse_utf8(struct xd_xml_parser *p, const uint8_t *s, size_t n)
{
    size_t i = 0;
    unsigned need = p->u8_need;
    uint8_t lo = p->u8_lo, hi = p->u8_hi;
    p->u8_nul = false;
    while (i < n) {
        if (need == 0) {
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                /* Any byte >= 0x80 or == 0 sets its top bit here. */
                if (((w - 0x0101010101010101ULL) | w) & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            uint8_t c = s[i];
            if (c < 0x80) {
                if (c == 0) {
                    p->u8_nul = true;
                    goto bad;
                }
                i++;
                continue;
            }
            if (c < 0xC2) {
                goto bad; /* continuation byte or overlong 2-byte lead */
            } else if (c < 0xE0) {
                need = 1, lo = 0x80, hi = 0xBF;
            } else if (c < 0xF0) {
                need = 2;
                lo = c == 0xE0 ? 0xA0 : 0x80; /* overlong */
                hi = c == 0xED ? 0x9F : 0xBF; /* surrogates */
            } else if (c < 0xF5) {
                need = 3;
                lo = c == 0xF0 ? 0x90 : 0x80; /* overlong */
                hi = c == 0xF4 ? 0x8F : 0xBF; /* above U+10FFFF */
            } else {
                goto bad;
            }
            i++;
        } else {
            uint8_t c = s[i];
            if (c < lo || c > hi)
                goto bad;
            need--, lo = 0x80, hi = 0xBF;
            i++;
        }
    }
    p->u8_need = (uint8_t)need, p->u8_lo = lo, p->u8_hi = hi;
    return n;
bad:
    p->u8_need = (uint8_t)need, p->u8_lo = lo, p->u8_hi = hi;
    return i;
}

/* Fails for the byte at buf[0], which parse_utf8 refused. */
static void
parse_fail_byte(struct xd_xml_parser *p, const char *buf)
{
    if (p->u8_nul)
        parse_fail(p, XD_EXML_SYNTAX, "NUL byte at offset %lld", (long long)p->abs_fed);
    else
        parse_fail(p, XD_EXML_UTF8, "invalid UTF-8 byte 0x%02x at offset %lld",
                   (unsigned char)buf[0], (long long)p->abs_fed);
}

/* ---- Positions ------------------------------------------------------------- */

/* Stream offset of libxml2's read position.  No encoder is ever active
 * (anything but UTF-8 fails at the declaration), so bytes are input bytes. */
static int64_t
parse_pos(const struct xd_xml_parser *p)
{
    const xmlParserInput *in = p->ctxt->input;
    return p->origin + (int64_t)in->consumed + (int64_t)(in->cur - in->base);
}

/* Inside startElementNs the read position is on the '>' or "/>" that ends
 * the start tag: the stream offset right after it. */
static int64_t
parse_tag_end(const struct xd_xml_parser *p, bool *empty)
{
    const xmlChar *c = p->ctxt->input->cur;
    *empty = c[0] == '/' && c[1] == '>';
    return parse_pos(p) + (c[0] == '>' ? 1 : *empty ? 2 : 0);
}

/* Inside startElementNs: the stream offset of the start tag's '<' (the last
 * '<' before the read position: none can occur inside a start tag), or -1. */
static int64_t
parse_tag_start(const struct xd_xml_parser *p)
{
    const xmlParserInput *in = p->ctxt->input;
    const xmlChar *lt = memrchr(in->base, '<', (size_t)(in->cur - in->base));
    if (!lt)
        return -1;
    return p->origin + (int64_t)in->consumed + (int64_t)(lt - in->base);
}

/* ---- Tree building ------------------------------------------------------- */

static xd_arena_t *
parse_arena(struct xd_xml_parser *p)
{
    if (!p->oneshot && p->depth == 0) {
        if (!p->hdr_arena)
            p->hdr_arena = xd_arena_new(512);
        return p->hdr_arena;
    }
    if (!p->arena)
        p->arena = xd_arena_new(PARSE_ARENA);
    return p->arena;
}

/* Moves the pending text run into the open element. */
static void
parse_flush_text(struct xd_xml_parser *p)
{
    if (p->text_len && p->cur)
        xd_tree_add_text(p->cur, p->text, p->text_len);
    p->text_len = 0;
}

/* Called after a user handler: honours a pause or reset it asked for; `pos`
 * is the stream offset right after what was reported. */
static void
parse_after_handler(struct xd_xml_parser *p, int64_t pos)
{
    if ((p->pause_req || p->reset_req) && !p->err) {
        p->pause_pos = pos;
        parse_stop(p);
    }
}

/* Appends s[0..n) to the synthetic header, escaped as an attribute value. */
static size_t
parse_synth_esc(char *out, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '\'': rep = "&apos;"; break;
        case '\t': rep = "&#9;"; break;
        case '\n': rep = "&#10;"; break;
        case '\r': rep = "&#13;"; break;
        default: break;
        }
        if (rep) {
            size_t r = strlen(rep);
            if (out)
                memcpy(out + o, rep, r);
            o += r;
        } else {
            if (out)
                out[o] = s[i];
            o++;
        }
    }
    return o;
}

/* Writes (out NULL: measures) the synthetic header: the header's qualified
 * name with its default and prefixed namespace declarations. */
static size_t
parse_synth_write(const struct xd_xml_parser *p, char *out)
{
    const xd_el_t *h = p->header;
    size_t o = 0;
#define SYNTH_PUT(s, n)                                                                    \
    do {                                                                                   \
        if (out)                                                                           \
            memcpy(out + o, (s), (n));                                                     \
        o += (n);                                                                          \
    } while (0)
    SYNTH_PUT("<", 1);
    if (h->prefix_len) {
        SYNTH_PUT(h->prefix, h->prefix_len);
        SYNTH_PUT(":", 1);
    }
    SYNTH_PUT(h->name, h->name_len);
    if (p->content_ns) {
        SYNTH_PUT(" xmlns='", 8);
        o += parse_synth_esc(out ? out + o : NULL, p->content_ns, p->content_len);
        SYNTH_PUT("'", 1);
    }
    for (uint32_t i = 0; i < h->ndecls; i++) {
        const xd_nsdecl_t *d = &h->decls[i];
        SYNTH_PUT(" xmlns:", 7);
        SYNTH_PUT(d->prefix, d->prefix_len);
        SYNTH_PUT("='", 2);
        o += parse_synth_esc(out ? out + o : NULL, d->uri, d->uri_len);
        SYNTH_PUT("'", 1);
    }
    /* The space keeps even "<e>" at the 4 bytes libxml2 waits for before it
     * looks at a document at all. */
    SYNTH_PUT(" >", 2);
#undef SYNTH_PUT
    return o;
}

static void
parse_synth_build(struct xd_xml_parser *p)
{
    size_t n = parse_synth_write(p, NULL);
    p->synth = xd_arena_alloc(p->hdr_arena, n + 1);
    parse_synth_write(p, p->synth);
    p->synth[n] = '\0';
    p->synth_len = n;
}

/* A NUL-terminated copy of an attribute value or namespace name s[0..len)
 * in `a`; *out_len gets its length.  Without entity substitution libxml2
 * hands over every '&' of such a value (from &amp; or &#38;) as "&#38;",
 * and nothing else in it starts with '&': the copy undoes that. */
static char *
parse_value_dup(xd_arena_t *a, const char *s, size_t len, size_t *out_len)
{
    if (!memchr(s, '&', len)) {
        *out_len = len;
        return xd_arena_strndup(a, s, len);
    }
    char *q = xd_arena_alloc(a, len + 1);
    size_t o = 0;
    for (size_t k = 0; k < len; k++) {
        q[o++] = s[k];
        if (s[k] == '&' && len - k >= 5 && memcmp(s + k, "&#38;", 5) == 0)
            k += 4;
    }
    q[o] = '\0';
    *out_len = o;
    return q;
}

static void
parse_attrs(xd_arena_t *a, xd_el_t *el, const xmlChar **atts, unsigned n)
{
    el->attrs = xd_arena_alloc(a, sizeof(xd_attr_t) * n);
    el->nattrs = el->attr_cap = n;
    for (unsigned i = 0; i < n; i++) {
        const char *local = (const char *)atts[5 * i];
        const char *prefix = (const char *)atts[5 * i + 1];
        const char *uri = (const char *)atts[5 * i + 2];
        const char *v = (const char *)atts[5 * i + 3];
        size_t vlen = (size_t)((const char *)atts[5 * i + 4] - v);
        size_t local_len = strlen(local);
        xd_attr_t *at = &el->attrs[i];
        if (prefix) {
            size_t prefix_len = strlen(prefix);
            char *q = xd_arena_alloc(a, prefix_len + 1 + local_len + 1);
            memcpy(q, prefix, prefix_len);
            q[prefix_len] = ':';
            memcpy(q + prefix_len + 1, local, local_len + 1);
            at->name = q;
            at->name_len = (uint32_t)(prefix_len + 1 + local_len);
            at->prefix_len = (uint32_t)prefix_len;
            if (!uri)
                at->ns = NULL;
            else if (strcmp(uri, XD_NS_XML) == 0)
                at->ns = XD_NS_XML;
            else
                at->ns = parse_value_dup(a, uri, strlen(uri), &(size_t){ 0 });
        } else {
            at->name = xd_arena_strndup(a, local, local_len);
            at->name_len = (uint32_t)local_len;
            at->prefix_len = 0;
            at->ns = NULL;
        }
        size_t len;
        at->value = parse_value_dup(a, v, vlen, &len);
        at->value_len = (uint32_t)len;
    }
}

static void
parse_start(void *ud, const xmlChar *xlocal, const xmlChar *xprefix, const xmlChar *xuri,
            int nb_ns, const xmlChar **nss, int nb_attrs, int nb_defaulted,
            const xmlChar **atts)
{
    struct xd_xml_parser *p = ud;
    (void)nb_defaulted; /* no DTD, so never any */
    if (p->stopped || p->priming || p->err)
        return;
    bool is_header = !p->oneshot && p->depth == 0;
    unsigned el_depth = p->oneshot ? p->depth + 1 : p->depth;
    if (!is_header && el_depth > p->lim.max_depth) {
        parse_fail(p, XD_EXML_TOO_DEEP, "element nesting deeper than %u", p->lim.max_depth);
        return;
    }
    unsigned nattrs = (unsigned)nb_attrs;
    if (nattrs > p->lim.max_attrs) {
        parse_fail(p, XD_EXML_TOO_MANY_ATTRS, "element with %u attributes (limit %u)", nattrs,
                   p->lim.max_attrs);
        return;
    }
    parse_flush_text(p);
    if (!is_header && !p->cur && !p->oneshot) {
        /* A new top-level element: whatever came before it (whitespace
         * that libxml2 had not reported yet) is not part of it. */
        int64_t lt = parse_tag_start(p);
        if (lt > p->stanza_start)
            p->stanza_start = lt;
    }

    const char *local = (const char *)xlocal, *prefix = (const char *)xprefix;
    const char *uri = (const char *)xuri;
    size_t local_len = strlen(local), prefix_len = prefix ? strlen(prefix) : 0;
    size_t uri_len = uri ? strlen(uri) : 0;
    xd_arena_t *a = parse_arena(p);
    xd_el_t *parent = is_header ? NULL : p->cur;
    bool uri_copied = false;
    if (uri && memchr(uri, '&', uri_len)) {
        uri = parse_value_dup(a, uri, uri_len, &uri_len); /* rare: see parse_value_dup */
        uri_copied = true;
    }

    xd_el_t *el = xd_tree_el_new(a, local, local_len, prefix, prefix_len, NULL, 0);
    if (uri) {
        bool parent_content = is_header ? false : (!parent || parent->ns == NULL);
        const char *cns = p->oneshot ? p->oneshot_ns : p->content_ns;
        size_t cns_len = p->oneshot ? (cns ? strlen(cns) : 0) : p->content_len;
        if (!is_header && !prefix_len && parent_content && cns && uri_len == cns_len &&
            memcmp(uri, cns, uri_len) == 0) {
            /* The stream's content namespace: NULL (DESIGN.md 3). */
        } else if (parent && parent->ns && parent->ns_len == uri_len &&
                   memcmp(parent->ns, uri, uri_len) == 0) {
            el->ns = parent->ns;
            el->ns_len = parent->ns_len;
        } else {
            el->ns = uri_copied ? uri : xd_arena_strndup(a, uri, uri_len);
            el->ns_len = (uint32_t)uri_len;
        }
    }

    /* Namespace declarations: the header's default one is the content
     * namespace; other default ones are carried by each element's own ns;
     * prefixed ones are kept on the element for the serializer. */
    uint32_t nprefixed = 0;
    for (int i = 0; i < nb_ns; i++) {
        const char *dp = (const char *)nss[2 * i], *du = (const char *)nss[2 * i + 1];
        if (dp) {
            nprefixed++;
        } else if (is_header && du && *du) {
            p->content_ns = parse_value_dup(a, du, strlen(du), &p->content_len);
        }
    }
    if (nprefixed) {
        el->decls = xd_arena_alloc(a, sizeof(xd_nsdecl_t) * nprefixed);
        for (int i = 0; i < nb_ns; i++) {
            const char *dp = (const char *)nss[2 * i], *du = (const char *)nss[2 * i + 1];
            if (!dp)
                continue;
            size_t plen = strlen(dp), ulen;
            const char *u = parse_value_dup(a, du ? du : "", du ? strlen(du) : 0, &ulen);
            el->decls[el->ndecls++] = (xd_nsdecl_t){ xd_arena_strndup(a, dp, plen), u,
                                                     (uint32_t)plen, (uint32_t)ulen };
        }
    }
    if (nattrs)
        parse_attrs(a, el, atts, nattrs);
    p->depth++;

    if (is_header) {
        bool empty;
        int64_t end = parse_tag_end(p, &empty);
        p->header = el;
        p->header_seen = true;
        p->stanza_start = end;
        parse_synth_build(p);
        if (p->h.stream_open)
            p->h.stream_open(p->ud, el);
        /* An empty header closes the stream in the same bytes: a pause or
         * reset waits for the stream_close that comes right after. */
        if (!empty)
            parse_after_handler(p, end);
        return;
    }
    el->parent = parent;
    if (parent)
        xd_tree_link(parent, &el->node);
    else
        p->root = el;
    p->cur = el;
    parse_mem_note(p);
}

static void
parse_end(void *ud, const xmlChar *local, const xmlChar *prefix, const xmlChar *uri)
{
    struct xd_xml_parser *p = ud;
    (void)local, (void)prefix, (void)uri;
    if (p->stopped || p->priming || p->err)
        return;
    parse_flush_text(p);
    p->depth--;
    if (!p->oneshot && p->depth == 0) {
        /* </stream:stream> */
        int64_t end = parse_pos(p);
        p->stanza_start = end;
        p->closed = true;
        if (p->reset_req) {
            parse_after_handler(p, end); /* reset from an empty header's open */
            return;
        }
        if (p->h.stream_close)
            p->h.stream_close(p->ud);
        parse_after_handler(p, end);
        return;
    }
    xd_el_t *el = p->cur;
    p->cur = el->parent;
    if (p->cur)
        return;
    /* A complete top-level element. */
    parse_mem_note(p);
    int64_t end = p->oneshot ? 0 : parse_pos(p);
    if (!p->oneshot && end - p->stanza_start > (int64_t)p->lim.max_stanza_bytes) {
        /* Completed inside the last byte of the budget: still too big. */
        parse_fail(p, XD_EXML_TOO_BIG, "stanza larger than %zu bytes", p->lim.max_stanza_bytes);
        return;
    }
    p->root = NULL;
    p->arena = NULL;
    if (p->text_cap > PARSE_TEXT_KEEP) {
        xd_free(p->text);
        p->text = NULL;
        p->text_cap = 0;
    }
    if (p->oneshot) {
        p->result = el;
        return;
    }
    p->stanza_start = end;
    xd_stanza_t *st = xd_tree_freeze(el);
    if (p->h.stanza)
        p->h.stanza(p->ud, st);
    else
        xd_stanza_unref(st);
    parse_after_handler(p, end);
    if (!p->stopped && p->acct->bytes > p->acct_base + PARSE_TRIM_BYTES) {
        /* libxml2 grew (a big stanza left its input buffer large, or many
         * distinct names filled its dictionary) and never shrinks: go on
         * with a fresh ctxt from here, within the same feed. */
        p->pause_pos = end;
        p->restart = true;
        parse_stop(p);
    }
}

static void
parse_text(void *ud, const xmlChar *s, int len)
{
    struct xd_xml_parser *p = ud;
    if (p->stopped || p->priming || p->err || !p->cur)
        return; /* between stanzas (whitespace keepalives): nothing to keep */
    size_t n = (size_t)len;
    if (p->text_cap - p->text_len < n) {
        size_t need = p->text_len + n;
        size_t cap = p->text_cap ? p->text_cap * 2 : 256;
        if (cap < need)
            cap = need;
        size_t most = p->lim.max_stanza_bytes + PARSE_CHUNK;
        if (cap > most && need <= most)
            cap = most;
        p->text = xd_realloc(p->text, cap);
        p->text_cap = cap;
        parse_mem_note(p);
    }
    memcpy(p->text + p->text_len, s, n);
    p->text_len += n;
}

/* Runs right after the XML declaration (or where it would have been). */
static void
parse_start_document(void *ud)
{
    struct xd_xml_parser *p = ud;
    if (p->stopped || p->priming)
        return;
    /* RFC6120 11.6: UTF-8 only.  libxml2 has switched to a decoder for any
     * other encoding it knows; the stream fails before anything is read. */
    const xmlParserCtxt *c = p->ctxt;
    const char *enc = (const char *)c->encoding;
    if (!enc)
        enc = (const char *)c->input->encoding;
    if ((enc && strcasecmp(enc, "UTF-8") != 0) || (c->input->buf && c->input->buf->encoder)) {
        parse_fail(p, XD_EXML_ENCODING, "encoding '%.64s' is not UTF-8", enc ? enc : "?");
        return;
    }
    /* RFC6120 11.8: XMPP is defined in terms of XML 1.0 only.  libxml2
     * only warns about another 1.x and would parse on (XML 1.0 fifth
     * edition lets it, treating the document as 1.0); a stream that says
     * 1.1 expects rules we do not apply (other name and line-end
     * characters, C0 controls as references), so it is refused.  Without
     * a declaration libxml2 reports "1.0". */
    const char *ver = (const char *)c->version;
    if (ver && strcmp(ver, "1.0") != 0)
        parse_fail(p, XD_EXML_VERSION, "XML version '%.16s' is not 1.0", ver);
}

static void
parse_doctype(void *ud, const xmlChar *name, const xmlChar *extid, const xmlChar *sysid)
{
    (void)name, (void)extid, (void)sysid;
    /* RFC6120 11.1: no DTD; stopping here means an entity bomb never expands. */
    parse_fail(ud, XD_EXML_RESTRICTED, "DOCTYPE declaration");
}

static void
parse_entity_decl(void *ud, const xmlChar *name, int type, const xmlChar *pubid,
                  const xmlChar *sysid, xmlChar *content)
{
    (void)type, (void)pubid, (void)sysid, (void)content;
    parse_fail(ud, XD_EXML_RESTRICTED, "entity declaration '%.64s'", (const char *)name);
}

static xmlEntityPtr
parse_get_entity(void *ud, const xmlChar *name)
{
    (void)ud, (void)name;
    return NULL; /* only the five predefined ones, which libxml2 resolves itself */
}

static void
parse_comment(void *ud, const xmlChar *data)
{
    (void)data;
    parse_fail(ud, XD_EXML_RESTRICTED, "comment"); /* RFC6120 11.1 */
}

static void
parse_pi(void *ud, const xmlChar *target, const xmlChar *data)
{
    (void)data;
    parse_fail(ud, XD_EXML_RESTRICTED, "processing instruction '%.64s'",
               (const char *)target); /* RFC6120 11.1 */
}

static void
parse_reference(void *ud, const xmlChar *name)
{
    parse_fail(ud, XD_EXML_RESTRICTED, "entity reference '%.64s'", (const char *)name);
}

/* The SAX2 handler; libxml2 copies it into each ctxt. */
static xmlSAXHandler parse_sax = {
    .internalSubset = parse_doctype,
    .externalSubset = parse_doctype,
    .getEntity = parse_get_entity,
    .getParameterEntity = parse_get_entity,
    .entityDecl = parse_entity_decl,
    .startDocument = parse_start_document,
    .reference = parse_reference,
    .characters = parse_text,
    .ignorableWhitespace = parse_text,
    .cdataBlock = parse_text,
    .processingInstruction = parse_pi,
    .comment = parse_comment,
    .initialized = XML_SAX2_MAGIC,
    .startElementNs = parse_start,
    .endElementNs = parse_end,
    .serror = parse_lib_error,
};

/* ---- libxml2 contexts ---------------------------------------------------- */

/* libxml2's input buffer starts at 2 * xmlDefaultBufferSize + 1 bytes and
 * doubles by allocating the new size, copying and freeing the old one.  From
 * the default start (8 KB) it doubles from 64 KB to 128 KB just past what a
 * 64 KB start tag needs, with both alive during the copy: three times the
 * limit.  Started so that a doubling lands just above the most one element
 * can make it hold (the limit, a chunk, and what libxml2 has not shrunk
 * away yet), the last growth costs 1.5 times that instead, and the first
 * block is smaller than the default. */
static int
parse_buf_start(size_t limit)
{
    size_t need = limit + 2 * PARSE_CHUNK + 512;
    while (need > 8192)
        need = (need + 1) / 2;
    return (int)(need / 2 + 1);
}

static void
parse_ctx_free(struct xd_xml_parser *p)
{
    if (!p->ctxt)
        return;
    parse_acct_t *outer = parse_cur_acct; /* a handler may parse too */
    parse_cur_acct = p->acct;
    xmlFreeParserCtxt(p->ctxt);
    if (p->lib_error)
        xmlResetLastError(); /* libxml2's per-thread copy is charged to us */
    parse_cur_acct = outer;
    p->ctxt = NULL;
    p->lib_error = false;
}

/* Makes the ctxt for the stream bytes from abs_fed on.  Inside a stream it
 * is primed with the synthetic header (after the stream's end, with an
 * empty root), so it continues in the same namespace context. */
static void
parse_ctx_open(struct xd_xml_parser *p)
{
    XD_ASSERT(!p->ctxt);
    parse_acct_t *outer = parse_cur_acct; /* a handler may parse too */
    parse_cur_acct = p->acct;
    /* The input buffer's first size comes from this per-thread default. */
    int saved = xmlDefaultBufferSize;
    xmlDefaultBufferSize = p->buf_start;
    p->ctxt = xmlCreatePushParserCtxt(&parse_sax, p, NULL, 0, NULL);
    xmlDefaultBufferSize = saved;
    XD_ASSERT(p->ctxt != NULL);
    xmlCtxtUseOptions(p->ctxt, XML_PARSE_NONET);
    p->stopped = false;
    p->origin = p->abs_fed;
    if (!p->oneshot && p->header_seen) {
        const char *s = p->closed ? "<a/>" : p->synth;
        size_t n = p->closed ? 4 : p->synth_len;
        p->priming = true;
        p->in_parse = true;
        xmlParseChunk(p->ctxt, s, (int)n, 0);
        p->in_parse = false;
        p->priming = false;
        p->origin = p->abs_fed - (int64_t)n;
        /* libxml2 accepted these names once (namespace names that are not
         * URIs only clear nsWellFormed, which we ignore as before). */
        bool ok = !p->err && p->ctxt->wellFormed &&
                  (p->closed ? p->ctxt->instate == XML_PARSER_EPILOG : p->ctxt->nameNr == 1) &&
                  parse_pos(p) == p->abs_fed;
        if (XD_NEVER(!ok)) {
            parse_fail(p, XD_EXML_SYNTAX, "stream header cannot be restored");
            parse_stop(p);
        }
    }
    if (p->lib_error) {
        xmlResetLastError();
        p->lib_error = false;
    }
    parse_cur_acct = outer;
    p->acct_base = p->acct->bytes;
}

/* The bytes after a stop position are fed again from there: the UTF-8
 * check restarts too (a stop is always right after a '>'). */
static void
parse_utf8_rewind(struct xd_xml_parser *p)
{
    p->u8_need = 0;
    p->u8_lo = 0x80;
    p->u8_hi = 0xBF;
}

/* Drops all per-stream state (not the account). */
static void
parse_clear(struct xd_xml_parser *p)
{
    parse_ctx_free(p);
    xd_arena_free(p->arena);
    xd_arena_free(p->hdr_arena);
    p->arena = p->hdr_arena = NULL;
    p->root = p->cur = p->header = NULL;
    p->content_ns = NULL;
    p->content_len = 0;
    p->synth = NULL;
    p->synth_len = 0;
    if (p->result) {
        xd_el_free(p->result);
        p->result = NULL;
    }
    p->text_len = 0;
    p->depth = 0;
    p->header_seen = p->closed = false;
    p->err = 0;
    p->err_reported = false;
    p->detail[0] = '\0';
    p->abs_fed = p->abs_consumed = p->stanza_start = p->pause_pos = p->origin = 0;
    p->pause_req = p->reset_req = p->paused = p->stopped = p->restart = false;
    parse_utf8_rewind(p);
}

static struct xd_xml_parser *
parse_new(const xd_xml_handlers_t *h, void *ud, const xd_xml_limits_t *limits)
{
    pthread_once(&parse_once, parse_init_once);
    struct xd_xml_parser *p = xd_new(struct xd_xml_parser);
    xd_xml_limits_t def = XD_XML_LIMITS_DEFAULT;
    p->lim = limits ? *limits : def;
    if (!p->lim.max_stanza_bytes)
        p->lim.max_stanza_bytes = def.max_stanza_bytes;
    if (!p->lim.max_header_bytes)
        p->lim.max_header_bytes = def.max_header_bytes;
    if (!p->lim.max_depth)
        p->lim.max_depth = def.max_depth;
    if (!p->lim.max_attrs)
        p->lim.max_attrs = def.max_attrs;
    if (h)
        p->h = *h;
    p->ud = ud;
    p->buf_start = parse_buf_start(p->lim.max_stanza_bytes > p->lim.max_header_bytes
                                       ? p->lim.max_stanza_bytes
                                       : p->lim.max_header_bytes);
    p->acct = xd_new(parse_acct_t);
    p->acct->owner = p;
    parse_clear(p);
    return p;
}

xd_xml_parser_t *
xd_xml_parser_new(const xd_xml_handlers_t *h, void *ud, const xd_xml_limits_t *limits)
{
    return parse_new(h, ud, limits);
}

void
xd_xml_parser_free(xd_xml_parser_t *p)
{
    if (!p)
        return;
    XD_ASSERT(!p->in_parse);
    parse_clear(p);
    xd_free(p->text);
    /* Blocks libxml2 still keeps (none, normally) keep the account alive. */
    p->acct->owner = NULL;
    if (p->acct->blocks == 0)
        xd_free(p->acct);
    xd_free(p);
}

void
xd_xml_parser_reset(xd_xml_parser_t *p)
{
    if (p->in_parse) {
        p->reset_req = true;
        return;
    }
    parse_clear(p);
}

void
xd_xml_parser_pause(xd_xml_parser_t *p)
{
    if (p->in_parse)
        p->pause_req = true;
    /* Outside a handler every byte fed so far was consumed: nothing to stop. */
}

void
xd_xml_parser_resume(xd_xml_parser_t *p)
{
    /* Also a pause asked for in the handler that is still running: a hold
     * taken and released within one element must not stop the parser. */
    p->paused = false;
    p->pause_req = false;
}

bool
xd_xml_parser_paused(const xd_xml_parser_t *p)
{
    return p->paused;
}

const xd_el_t *
xd_xml_parser_header(const xd_xml_parser_t *p)
{
    return p->header;
}

const char *
xd_xml_parser_stream_ns(const xd_xml_parser_t *p)
{
    return p->content_ns;
}

bool
xd_xml_parser_trim(xd_xml_parser_t *p)
{
    XD_ASSERT(!p->in_parse);
    /* Only between top-level elements, with every byte fed parsed: the
     * next feed then starts a primed ctxt exactly where this one ended. */
    if (!p->ctxt || p->oneshot || !p->header_seen || p->closed || p->err || p->paused ||
        p->cur || p->u8_need || p->stanza_start != p->abs_fed)
        return false;
    parse_ctx_free(p);
    xd_arena_free(p->arena);
    p->arena = NULL;
    p->root = NULL;
    if (p->text_len == 0) {
        xd_free(p->text);
        p->text = NULL;
        p->text_cap = 0;
    }
    return true;
}

size_t
xd_xml_parser_mem(const xd_xml_parser_t *p)
{
    return parse_mem_now(p);
}

size_t
xd_xml_parser_mem_peak(const xd_xml_parser_t *p)
{
    return p->mem_peak;
}

/* Whether s[0..e) can still become the rest of a reference after '&'
 * (RFC 6120 allows only the predefined entities and character references;
 * names are checked for shape here, libxml2 judges them once complete). */
static bool
parse_ref_prefix_ok(const xmlChar *s, const xmlChar *e)
{
    if (e - s > 40)
        return false; /* no reference we accept is this long */
    if (s == e)
        return true;
    if (*s == '#') {
        s++;
        bool hex = s < e && *s == 'x';
        if (hex)
            s++;
        for (; s < e; s++)
            if (!(isdigit(*s) || (hex && isxdigit(*s))))
                return false;
        return true;
    }
    if (!(isalpha(*s) || *s == '_' || *s == ':' || *s >= 0x80))
        return false;
    for (s++; s < e; s++)
        if (!(isalnum(*s) || *s == '_' || *s == ':' || *s == '-' || *s == '.' || *s >= 0x80))
            return false;
    return true;
}

/* Runs libxml2 on s[0..n) (n may be 0 with `final`).  Returns true when
 * parsing must stop for now: error, pause or reset. */
static bool
parse_run(struct xd_xml_parser *p, const char *s, size_t n, bool final)
{
    p->in_parse = true;
    parse_acct_t *outer = parse_cur_acct; /* a handler may parse too */
    parse_cur_acct = p->acct;
    xmlParseChunk(p->ctxt, s, (int)n, final);
    if (p->lib_error) {
        xmlResetLastError();
        p->lib_error = false;
    }
    parse_cur_acct = outer;
    p->in_parse = false;
    if (!p->stopped && !p->ctxt->wellFormed && !p->err) {
        /* Defensive: libxml2 gave up without telling us why. */
        parse_fail(p, XD_EXML_SYNTAX, "not well-formed (libxml2 error %d)", p->ctxt->errNo);
    }
    if (p->err || p->stopped)
        return true;
    /* In content libxml2 parses a reference only once a ';' is somewhere in
     * its buffer, so "&3-x</message>" would wait for the next stanza's ';'
     * while the client waits for an answer.  What can no longer become a
     * reference is an error now. */
    if (p->ctxt->instate == XML_PARSER_CONTENT) {
        const xmlParserInput *in = p->ctxt->input;
        if (in->cur < in->end && *in->cur == '&' && !parse_ref_prefix_ok(in->cur + 1, in->end)) {
            parse_fail(p, XD_EXML_SYNTAX, "invalid entity or character reference at line %d",
                       in->line);
            return true;
        }
    }
    if (p->header_seen && !p->cur && !p->oneshot) {
        /* Between stanzas: what libxml2 has read, and whitespace it holds
         * back (it reports text only once a '<' or 300 bytes follow), is a
         * top-level boundary. */
        const xmlParserInput *in = p->ctxt->input;
        const xmlChar *c = in->cur;
        while (c < in->end && (*c == ' ' || *c == '\n' || *c == '\t' || *c == '\r'))
            c++;
        int64_t pos = p->origin + (int64_t)in->consumed + (int64_t)(c - in->base);
        if (pos > p->stanza_start)
            p->stanza_start = pos;
    }
    return false;
}

/* After parse_run stopped without error: settles a pause or reset. */
static void
parse_settle(struct xd_xml_parser *p, int64_t base, size_t *consumed)
{
    *consumed = (size_t)(p->pause_pos - base);
    if (p->reset_req) {
        parse_clear(p);
        return;
    }
    /* The bytes after pause_pos die with the ctxt; the caller feeds them
     * again after resume, to a primed ctxt. */
    parse_ctx_free(p);
    p->pause_req = false;
    p->stopped = false;
    p->paused = true;
    p->abs_fed = p->abs_consumed = p->pause_pos;
    parse_utf8_rewind(p);
}

int
xd_xml_parser_feed(xd_xml_parser_t *p, const char *buf, size_t len, size_t *consumed)
{
    size_t dummy;
    if (!consumed)
        consumed = &dummy;
    *consumed = 0;
    XD_ASSERT(!p->in_parse);
    if (p->err)
        return p->err;
    if (p->paused)
        return 0;
    int64_t base = p->abs_consumed;
    size_t off = 0;
    while (off < len) {
        if (!p->ctxt) {
            parse_ctx_open(p);
            if (p->err)
                break;
        }
        size_t limit = p->header_seen ? p->lim.max_stanza_bytes : p->lim.max_header_bytes;
        int64_t used = p->abs_fed - p->stanza_start;
        if (used > (int64_t)limit) {
            parse_fail(p, XD_EXML_TOO_BIG, "%s larger than %zu bytes",
                       p->header_seen ? "stanza" : "stream header", limit);
            break;
        }
        size_t n = len - off;
        if (n > PARSE_CHUNK)
            n = PARSE_CHUNK;
        if ((int64_t)n > (int64_t)limit + 1 - used)
            n = (size_t)((int64_t)limit + 1 - used);
        size_t ok = parse_utf8(p, (const uint8_t *)buf + off, n);
        if (ok) {
            bool stop = parse_run(p, buf + off, ok, false);
            p->abs_fed += (int64_t)ok;
            off += ok;
            if (stop) {
                if (p->err)
                    break;
                if (p->restart) {
                    /* Continue from the stop point with a new ctxt. */
                    parse_ctx_free(p);
                    p->restart = p->stopped = false;
                    p->abs_fed = p->pause_pos;
                    off = (size_t)(p->pause_pos - base);
                    parse_utf8_rewind(p);
                    continue;
                }
                parse_settle(p, base, consumed);
                return 0;
            }
        }
        if (ok < n) {
            parse_fail_byte(p, buf + off);
            break;
        }
    }
    if (!p->err) {
        size_t limit = p->header_seen ? p->lim.max_stanza_bytes : p->lim.max_header_bytes;
        if (p->abs_fed - p->stanza_start > (int64_t)limit)
            parse_fail(p, XD_EXML_TOO_BIG, "%s larger than %zu bytes",
                       p->header_seen ? "stanza" : "stream header", limit);
    }
    if (p->err) {
        parse_report(p);
        return p->err;
    }
    *consumed = len;
    p->abs_consumed = p->abs_fed;
    return 0;
}

/* ---- One-shot parsing ------------------------------------------------------ */

static int
parse_oneshot(const char *xml, size_t len, const char *content_ns, xd_el_t **out)
{
    xd_xml_limits_t lim = XD_XML_LIMITS_DEFAULT;
    lim.max_stanza_bytes = len + 1;
    lim.max_header_bytes = len + 1;
    struct xd_xml_parser *p = parse_new(NULL, NULL, &lim);
    p->oneshot = true;
    p->oneshot_ns = content_ns;
    p->header_seen = true;
    parse_ctx_open(p);
    size_t off = 0;
    while (off < len && !p->err) {
        size_t n = len - off > PARSE_CHUNK ? PARSE_CHUNK : len - off;
        size_t ok = parse_utf8(p, (const uint8_t *)xml + off, n);
        if (ok == len - off && p->u8_need) {
            /* Cut inside a sequence at the very end: fail before libxml2
             * sees the stray bytes and calls them something else. */
            parse_fail(p, XD_EXML_UTF8, "truncated UTF-8 sequence at the end");
            break;
        }
        if (ok && parse_run(p, xml + off, ok, false))
            break;
        off += ok;
        if (ok < n)
            parse_fail_byte(p, xml + off);
    }
    if (!p->err && p->u8_need)
        parse_fail(p, XD_EXML_UTF8, "truncated UTF-8 sequence at the end");
    if (!p->err)
        parse_run(p, NULL, 0, true);
    int rc = p->err;
    if (!rc && !p->result)
        rc = XD_EXML_SYNTAX;
    if (!rc) {
        *out = p->result;
        p->result = NULL;
    }
    xd_xml_parser_free(p);
    return rc;
}

int
xd_el_parse(const char *xml, size_t len, xd_el_t **out)
{
    return parse_oneshot(xml, len, NULL, out);
}

int
xd_stanza_parse(const char *xml, size_t len, const char *content_ns, xd_stanza_t **out)
{
    xd_el_t *el;
    int rc = parse_oneshot(xml, len, content_ns, &el);
    if (rc == 0)
        *out = xd_tree_freeze(el);
    return rc;
}
