/*
 * parse.c — the streaming XMPP XML parser and the one-shot element parser
 * (src/xml; API in parse.h and include/xmppd/el.h).
 *
 * Expat runs in namespace mode with triplets ("uri\1local\1prefix").  The
 * parser builds each top-level element directly into a fresh arena
 * (tree.h) and freezes it at its end tag.  Positions are stream offsets:
 *
 *     0 ........ stanza_start ........ abs_consumed ..... abs_fed
 *                (last top-level       (what the caller   (what expat
 *                 boundary)             gave up)           was given)
 *
 * Invariants:
 *   - abs_fed - stanza_start <= limit + 1 whenever expat runs: input is
 *     handed over in chunks of at most PARSE_CHUNK and never past the
 *     budget, so expat never buffers much more than the limit;
 *   - abs_fed > abs_consumed only while suspended (pause): those bytes are
 *     inside expat and the caller re-feeds them first;
 *   - the text scratch holds the current text run and never exceeds the
 *     limit (plus slack), since a run is part of the counted bytes;
 *   - err != 0 means dead: no handler runs again until reset.
 * User handlers run inside expat callbacks; the error handler runs from
 * feed after expat returned.
 */
#include <expat.h>
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

#define PARSE_SEP        '\x01'
#define PARSE_CHUNK      4096
#define PARSE_ARENA      2048
#define PARSE_TEXT_KEEP  8192 /* text scratch kept between stanzas */

struct xd_xml_parser {
    XML_Parser xp;          /* expat, namespace mode with triplets */
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
    xd_arena_t *hdr_arena;  /* header element and content_ns */
    xd_el_t *header;        /* stream header element */
    const char *content_ns; /* default ns of the header, or NULL */
    size_t content_len;     /* strlen(content_ns) */

    xd_arena_t *arena;      /* arena of the element being built */
    xd_el_t *root;          /* its root */
    xd_el_t *cur;           /* innermost open element */
    xd_nsdecl_t *pend;      /* prefixed declarations for the next element */
    uint32_t npend;         /* entries of pend */
    uint32_t pend_cap;      /* allocated entries of pend */
    xd_el_t *result;        /* one-shot: the finished root */

    char *text;             /* scratch for the current text run */
    size_t text_len;        /* bytes in text */
    size_t text_cap;        /* allocated bytes of text */

    int64_t abs_fed;        /* stream bytes given to expat */
    int64_t abs_consumed;   /* stream bytes the caller has given up */
    int64_t stanza_start;   /* offset of the last top-level boundary */
    int64_t pause_pos;      /* offset right after the element that paused */
    bool in_parse;          /* inside an expat call */
    bool pause_req;         /* a handler asked to pause */
    bool reset_req;         /* a handler asked to reset */
    bool suspended;         /* expat is suspended with bytes inside */
    bool paused;            /* waiting for resume */

    uint8_t u8_need;        /* UTF-8: continuation bytes still expected */
    uint8_t u8_lo, u8_hi;   /* UTF-8: range of the next continuation byte */

    size_t mem_expat;       /* live bytes expat allocated */
    size_t mem_peak;        /* most bytes ever held */
};

/* ---- Memory accounting for expat --------------------------------------- */

/* Every expat allocation carries its size and its parser, so frees and
 * reallocs account correctly whoever triggers them. */
typedef struct parse_mhdr {
    size_t size;
    struct xd_xml_parser *owner;
} parse_mhdr_t;

static _Thread_local struct xd_xml_parser *parse_mem_owner;

static size_t
parse_mem_now(const struct xd_xml_parser *p)
{
    return p->mem_expat + p->text_cap + (p->arena ? p->arena->bytes : 0) +
           (p->hdr_arena ? p->hdr_arena->bytes : 0);
}

static void
parse_mem_note(struct xd_xml_parser *p)
{
    size_t now = parse_mem_now(p);
    if (now > p->mem_peak)
        p->mem_peak = now;
}

static void *
parse_malloc(size_t size)
{
    parse_mhdr_t *h = xd_malloc(sizeof(*h) + size);
    h->size = size;
    h->owner = parse_mem_owner;
    if (h->owner) {
        h->owner->mem_expat += size;
        parse_mem_note(h->owner);
    }
    return h + 1;
}

static void
parse_mfree(void *ptr)
{
    if (!ptr)
        return;
    parse_mhdr_t *h = (parse_mhdr_t *)ptr - 1;
    if (h->owner)
        h->owner->mem_expat -= h->size;
    xd_free(h);
}

static void *
parse_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return parse_malloc(size);
    parse_mhdr_t *h = (parse_mhdr_t *)ptr - 1;
    struct xd_xml_parser *owner = h->owner;
    size_t old = h->size;
    h = xd_realloc(h, sizeof(*h) + size);
    h->size = size;
    if (owner) {
        owner->mem_expat = owner->mem_expat - old + size;
        parse_mem_note(owner);
    }
    return h + 1;
}

static const XML_Memory_Handling_Suite parse_msuite = { parse_malloc, parse_realloc,
                                                        parse_mfree };

/* ---- Errors -------------------------------------------------------------- */

static void parse_fail(struct xd_xml_parser *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error and stops expat; the handler runs from feed. */
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
        XML_StopParser(p->xp, XML_FALSE);
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

/* Maps an expat error to an XD_EXML_* code. */
static int
parse_map_error(enum XML_Error e)
{
    switch (e) {
    case XML_ERROR_UNDEFINED_ENTITY:
    case XML_ERROR_RECURSIVE_ENTITY_REF:
    case XML_ERROR_BINARY_ENTITY_REF:
    case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
    case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
    case XML_ERROR_NOT_STANDALONE:
    case XML_ERROR_ENTITY_DECLARED_IN_PE:
    case XML_ERROR_PARAM_ENTITY_REF:
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 4)
    case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
#endif
        return XD_EXML_RESTRICTED;
    case XML_ERROR_UNBOUND_PREFIX:
    case XML_ERROR_UNDECLARING_PREFIX:
    case XML_ERROR_RESERVED_PREFIX_XML:
    case XML_ERROR_RESERVED_PREFIX_XMLNS:
    case XML_ERROR_RESERVED_NAMESPACE_URI:
        return XD_EXML_BAD_NS;
    case XML_ERROR_UNKNOWN_ENCODING:
    case XML_ERROR_INCORRECT_ENCODING:
        return XD_EXML_ENCODING;
    default:
        return XD_EXML_SYNTAX;
    }
}

/* ---- UTF-8 check (RFC 3629) ---------------------------------------------- */

/* Returns the length of the valid prefix of s[0..n); a sequence cut at the
 * end is valid so far and continues in the next call. */
static size_t
parse_utf8(struct xd_xml_parser *p, const uint8_t *s, size_t n)
{
    size_t i = 0;
    unsigned need = p->u8_need;
    uint8_t lo = p->u8_lo, hi = p->u8_hi;
    while (i < n) {
        if (need == 0) {
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            uint8_t c = s[i];
            if (c < 0x80) {
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

/* Called after a user handler: honours a pause or reset it asked for. */
static void
parse_after_handler(struct xd_xml_parser *p)
{
    if ((p->pause_req || p->reset_req) && !p->err) {
        p->pause_pos = XML_GetCurrentByteIndex(p->xp) + XML_GetCurrentByteCount(p->xp);
        XML_StopParser(p->xp, XML_TRUE);
    }
}

static void XMLCALL
parse_ns_start(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
    struct xd_xml_parser *p = ud;
    if (p->err)
        return;
    if (!prefix) {
        /* A default declaration: the header's is the content namespace;
         * others are carried by each element's own ns. */
        if (!p->oneshot && p->depth == 0 && uri) {
            p->content_len = strlen(uri);
            p->content_ns = xd_arena_strndup(parse_arena(p), uri, p->content_len);
        }
        return;
    }
    xd_arena_t *a = parse_arena(p);
    if (p->npend == p->pend_cap) {
        uint32_t cap = p->pend_cap ? p->pend_cap * 2 : 4;
        xd_nsdecl_t *nd = xd_arena_alloc(a, sizeof(*nd) * cap);
        if (p->npend)
            memcpy(nd, p->pend, sizeof(*nd) * p->npend);
        p->pend = nd;
        p->pend_cap = cap;
    }
    size_t plen = strlen(prefix), ulen = uri ? strlen(uri) : 0;
    p->pend[p->npend++] = (xd_nsdecl_t){ xd_arena_strndup(a, prefix, plen),
                                         xd_arena_strndup(a, uri ? uri : "", ulen),
                                         (uint32_t)plen, (uint32_t)ulen };
}

/* Splits an expat triplet name. */
static void
parse_split(const char *name, const char **uri, size_t *uri_len, const char **local,
            size_t *local_len, const char **prefix, size_t *prefix_len)
{
    size_t n = strlen(name);
    const char *end = name + n;
    const char *s1 = memchr(name, PARSE_SEP, n);
    if (!s1) {
        *uri = NULL, *uri_len = 0;
        *local = name, *local_len = n;
        *prefix = NULL, *prefix_len = 0;
        return;
    }
    *uri = name, *uri_len = (size_t)(s1 - name);
    *local = s1 + 1;
    const char *s2 = memchr(*local, PARSE_SEP, (size_t)(end - *local));
    if (s2) {
        *local_len = (size_t)(s2 - *local);
        *prefix = s2 + 1, *prefix_len = (size_t)(end - *prefix);
    } else {
        *local_len = (size_t)(end - *local);
        *prefix = NULL, *prefix_len = 0;
    }
}

static void
parse_attrs(struct xd_xml_parser *p, xd_arena_t *a, xd_el_t *el, const XML_Char **atts,
            unsigned n)
{
    el->attrs = xd_arena_alloc(a, sizeof(xd_attr_t) * n);
    el->nattrs = el->attr_cap = n;
    for (unsigned i = 0; i < n; i++) {
        const char *uri, *local, *prefix;
        size_t uri_len, local_len, prefix_len;
        parse_split(atts[2 * i], &uri, &uri_len, &local, &local_len, &prefix, &prefix_len);
        xd_attr_t *at = &el->attrs[i];
        if (prefix_len) {
            char *q = xd_arena_alloc(a, prefix_len + 1 + local_len + 1);
            memcpy(q, prefix, prefix_len);
            q[prefix_len] = ':';
            memcpy(q + prefix_len + 1, local, local_len);
            q[prefix_len + 1 + local_len] = '\0';
            at->name = q;
            at->name_len = (uint32_t)(prefix_len + 1 + local_len);
            at->prefix_len = (uint32_t)prefix_len;
            if (uri_len == sizeof(XD_NS_XML) - 1 && memcmp(uri, XD_NS_XML, uri_len) == 0)
                at->ns = XD_NS_XML;
            else
                at->ns = xd_arena_strndup(a, uri, uri_len);
        } else {
            at->name = xd_arena_strndup(a, local, local_len);
            at->name_len = (uint32_t)local_len;
            at->prefix_len = 0;
            at->ns = NULL;
        }
        const char *v = atts[2 * i + 1];
        size_t vlen = strlen(v);
        at->value = xd_arena_strndup(a, v, vlen);
        at->value_len = (uint32_t)vlen;
    }
    (void)p;
}

static void XMLCALL
parse_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct xd_xml_parser *p = ud;
    if (p->err)
        return;
    bool is_header = !p->oneshot && p->depth == 0;
    unsigned el_depth = p->oneshot ? p->depth + 1 : p->depth;
    if (!is_header && el_depth > p->lim.max_depth) {
        parse_fail(p, XD_EXML_TOO_DEEP, "element nesting deeper than %u", p->lim.max_depth);
        return;
    }
    unsigned nattrs = 0;
    while (atts[2 * nattrs])
        nattrs++;
    if (nattrs > p->lim.max_attrs) {
        parse_fail(p, XD_EXML_TOO_MANY_ATTRS, "element with %u attributes (limit %u)", nattrs,
                   p->lim.max_attrs);
        return;
    }
    parse_flush_text(p);

    const char *uri, *local, *prefix;
    size_t uri_len, local_len, prefix_len;
    parse_split(name, &uri, &uri_len, &local, &local_len, &prefix, &prefix_len);
    xd_arena_t *a = parse_arena(p);
    xd_el_t *parent = is_header ? NULL : p->cur;

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
            el->ns = xd_arena_strndup(a, uri, uri_len);
            el->ns_len = (uint32_t)uri_len;
        }
    }
    if (nattrs)
        parse_attrs(p, a, el, atts, nattrs);
    if (p->npend) {
        el->decls = p->pend;
        el->ndecls = p->npend;
        p->pend = NULL;
        p->npend = p->pend_cap = 0;
    }
    p->depth++;

    if (is_header) {
        p->header = el;
        p->header_seen = true;
        p->stanza_start = XML_GetCurrentByteIndex(p->xp) + XML_GetCurrentByteCount(p->xp);
        if (p->h.stream_open)
            p->h.stream_open(p->ud, el);
        parse_after_handler(p);
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

static void XMLCALL
parse_end(void *ud, const XML_Char *name)
{
    struct xd_xml_parser *p = ud;
    (void)name;
    if (p->err)
        return;
    parse_flush_text(p);
    p->depth--;
    if (!p->oneshot && p->depth == 0) {
        /* </stream:stream> */
        p->stanza_start = XML_GetCurrentByteIndex(p->xp) + XML_GetCurrentByteCount(p->xp);
        if (p->h.stream_close)
            p->h.stream_close(p->ud);
        parse_after_handler(p);
        return;
    }
    xd_el_t *el = p->cur;
    p->cur = el->parent;
    if (p->cur)
        return;
    /* A complete top-level element. */
    parse_mem_note(p);
    int64_t end = XML_GetCurrentByteIndex(p->xp) + XML_GetCurrentByteCount(p->xp);
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
    parse_after_handler(p);
}

static void XMLCALL
parse_text(void *ud, const XML_Char *s, int len)
{
    struct xd_xml_parser *p = ud;
    if (p->err)
        return;
    if (!p->cur) {
        /* Between stanzas (whitespace keepalives): a top-level boundary. */
        if (!p->oneshot)
            p->stanza_start = XML_GetCurrentByteIndex(p->xp) + XML_GetCurrentByteCount(p->xp);
        return;
    }
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

static void XMLCALL
parse_xmldecl(void *ud, const XML_Char *version, const XML_Char *encoding, int standalone)
{
    struct xd_xml_parser *p = ud;
    (void)version;
    (void)standalone;
    /* RFC6120 11.6: UTF-8 only. */
    if (encoding && strcasecmp(encoding, "UTF-8") != 0)
        parse_fail(p, XD_EXML_ENCODING, "encoding '%.64s' is not UTF-8", encoding);
}

static void XMLCALL
parse_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
              int has_internal_subset)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
    /* RFC6120 11.1: no DTD; stopping here means an entity bomb never expands. */
    parse_fail(ud, XD_EXML_RESTRICTED, "DOCTYPE declaration");
}

static void XMLCALL
parse_entity_decl(void *ud, const XML_Char *name, int is_pe, const XML_Char *value, int value_len,
                  const XML_Char *base, const XML_Char *sysid, const XML_Char *pubid,
                  const XML_Char *notation)
{
    (void)is_pe, (void)value, (void)value_len, (void)base, (void)sysid, (void)pubid,
        (void)notation;
    parse_fail(ud, XD_EXML_RESTRICTED, "entity declaration '%.64s'", name);
}

static void XMLCALL
parse_comment(void *ud, const XML_Char *data)
{
    (void)data;
    parse_fail(ud, XD_EXML_RESTRICTED, "comment"); /* RFC6120 11.1 */
}

static void XMLCALL
parse_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
    (void)data;
    parse_fail(ud, XD_EXML_RESTRICTED, "processing instruction '%.64s'", target); /* RFC6120 11.1 */
}

static void XMLCALL
parse_skipped(void *ud, const XML_Char *name, int is_pe)
{
    (void)is_pe;
    parse_fail(ud, XD_EXML_RESTRICTED, "entity reference '%.64s'", name);
}

static int XMLCALL
parse_ext_entity(XML_Parser xp, const XML_Char *context, const XML_Char *base,
                 const XML_Char *sysid, const XML_Char *pubid)
{
    (void)xp, (void)context, (void)base, (void)sysid, (void)pubid;
    return XML_STATUS_ERROR; /* never fetch anything */
}

/* Installs handlers on a new or reset expat parser. */
static void
parse_install(struct xd_xml_parser *p)
{
    XML_Parser xp = p->xp;
    XML_SetUserData(xp, p);
    XML_SetReturnNSTriplet(xp, XML_TRUE);
    XML_SetElementHandler(xp, parse_start, parse_end);
    XML_SetCharacterDataHandler(xp, parse_text);
    XML_SetStartNamespaceDeclHandler(xp, parse_ns_start);
    XML_SetXmlDeclHandler(xp, parse_xmldecl);
    XML_SetStartDoctypeDeclHandler(xp, parse_doctype);
    XML_SetEntityDeclHandler(xp, parse_entity_decl);
    XML_SetCommentHandler(xp, parse_comment);
    XML_SetProcessingInstructionHandler(xp, parse_pi);
    XML_SetSkippedEntityHandler(xp, parse_skipped);
    XML_SetExternalEntityRefHandler(xp, parse_ext_entity);
    XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
    /* Deferral could hold back a complete stanza until more bytes arrive;
     * our chunking already bounds the reparse cost. */
    XML_SetReparseDeferralEnabled(xp, XML_FALSE);
#endif
}

/* Drops all per-stream state (not the expat parser itself). */
static void
parse_clear(struct xd_xml_parser *p)
{
    xd_arena_free(p->arena);
    xd_arena_free(p->hdr_arena);
    p->arena = p->hdr_arena = NULL;
    p->root = p->cur = p->header = NULL;
    p->pend = NULL;
    p->npend = p->pend_cap = 0;
    p->content_ns = NULL;
    p->content_len = 0;
    if (p->result) {
        xd_el_free(p->result);
        p->result = NULL;
    }
    p->text_len = 0;
    p->depth = 0;
    p->header_seen = false;
    p->err = 0;
    p->err_reported = false;
    p->detail[0] = '\0';
    p->abs_fed = p->abs_consumed = p->stanza_start = p->pause_pos = 0;
    p->pause_req = p->reset_req = p->suspended = p->paused = false;
    p->u8_need = 0;
    p->u8_lo = 0x80;
    p->u8_hi = 0xBF;
}

static struct xd_xml_parser *
parse_new(const xd_xml_handlers_t *h, void *ud, const xd_xml_limits_t *limits)
{
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
    static const XML_Char sep[] = { PARSE_SEP, 0 };
    parse_mem_owner = p;
    p->xp = XML_ParserCreate_MM("UTF-8", &parse_msuite, sep);
    parse_mem_owner = NULL;
    XD_ASSERT(p->xp != NULL);
    parse_install(p);
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
    XML_ParserFree(p->xp);
    xd_free(p->text);
    xd_free(p);
}

static void
parse_do_reset(struct xd_xml_parser *p)
{
    parse_clear(p);
    parse_mem_owner = p;
    XML_ParserReset(p->xp, "UTF-8");
    parse_mem_owner = NULL;
    parse_install(p);
}

void
xd_xml_parser_reset(xd_xml_parser_t *p)
{
    if (p->in_parse) {
        p->reset_req = true;
        return;
    }
    parse_do_reset(p);
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
    p->paused = false;
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

/* Runs expat on s[0..n) (or resumes it when s is NULL).  Returns true when
 * parsing must stop for now: error, pause or reset. */
static bool
parse_run(struct xd_xml_parser *p, const char *s, size_t n, bool final)
{
    enum XML_Status st;
    p->in_parse = true;
    parse_mem_owner = p;
    if (s || final)
        st = XML_Parse(p->xp, s, (int)n, final);
    else
        st = XML_ResumeParser(p->xp);
    parse_mem_owner = NULL;
    p->in_parse = false;
    if (st == XML_STATUS_ERROR) {
        if (!p->err) {
            enum XML_Error e = XML_GetErrorCode(p->xp);
            parse_fail(p, parse_map_error(e), "%s at line %lu column %lu", XML_ErrorString(e),
                       (unsigned long)XML_GetCurrentLineNumber(p->xp),
                       (unsigned long)XML_GetCurrentColumnNumber(p->xp));
        }
        return true;
    }
    if (st == XML_STATUS_SUSPENDED)
        return true;
    return p->err != 0;
}

/* After parse_run stopped without error: settles a pause or reset. */
static void
parse_settle(struct xd_xml_parser *p, int64_t base, size_t *consumed)
{
    *consumed = (size_t)(p->pause_pos - base);
    if (p->reset_req) {
        parse_do_reset(p);
        return;
    }
    p->pause_req = false;
    p->suspended = true;
    p->paused = true;
    p->abs_consumed = p->pause_pos;
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
    size_t off = (size_t)(p->abs_fed - p->abs_consumed); /* already inside expat */
    if (off > len)
        return XD_EINVAL;
    if (p->suspended) {
        p->suspended = false;
        if (parse_run(p, NULL, 0, false)) {
            if (p->err) {
                parse_report(p);
                return p->err;
            }
            parse_settle(p, base, consumed);
            return 0;
        }
    }
    while (off < len) {
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
                parse_settle(p, base, consumed);
                return 0;
            }
        }
        if (ok < n) {
            parse_fail(p, XD_EXML_UTF8, "invalid UTF-8 byte 0x%02x at offset %lld",
                       (unsigned char)buf[off], (long long)p->abs_fed);
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
    size_t off = 0;
    while (off < len && !p->err) {
        size_t n = len - off > PARSE_CHUNK ? PARSE_CHUNK : len - off;
        size_t ok = parse_utf8(p, (const uint8_t *)xml + off, n);
        if (ok && parse_run(p, xml + off, ok, false))
            break;
        off += ok;
        if (ok < n)
            parse_fail(p, XD_EXML_UTF8, "invalid UTF-8 at offset %zu", off);
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
