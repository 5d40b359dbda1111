/*
 * serialize.c — element trees to XML bytes (src/xml; API in
 * include/xmppd/el.h, layout in tree.h).
 *
 * Output rules (el.h has the contract):
 *   - namespaces are written minimally: a default xmlns only where the
 *     element's namespace differs from the one in scope, a root in the
 *     content namespace gets none (DESIGN.md 3), a content-namespace element
 *     inside a foreign one gets xmlns=content_ns;
 *   - an element's own xmlns:p declarations (kept by the parser) are written
 *     unless the same binding is already in scope, and any prefix used by
 *     the element or its attributes that is not bound gets declared there;
 *   - attribute values are quoted with ' and escape & < > " ' TAB LF CR;
 *     text escapes & < > CR — so parse(serialize(t)) == t;
 *   - an element without children is written as <x/>.
 * The serializer is one recursive walk with a growing output buffer; it
 * never calls strlen on tree data (every length is stored).
 */
#include <string.h>

#include "xml/tree.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/ns.h"

#define SER_ARENA_MIN 128 /* free arena bytes worth trying to serialize into */

typedef struct ser_bind {
    const char *prefix; /* bound prefix */
    const char *uri;    /* its namespace */
    uint32_t prefix_len;
    uint32_t uri_len;
} ser_bind_t;

typedef struct ser {
    char *buf;            /* output, xd_realloc'd (unless fixed) */
    bool fixed;           /* buf is not ours to realloc (an arena's free tail) */
    size_t len;           /* bytes used */
    size_t cap;           /* bytes allocated */
    const char *content;  /* resolved content namespace */
    uint32_t content_len; /* strlen(content) */
    ser_bind_t *binds;    /* prefix bindings in scope, innermost last */
    uint32_t nbinds;      /* entries used */
    uint32_t bind_cap;    /* entries allocated */
    ser_bind_t inline_binds[16]; /* first bindings, no malloc */
} ser_t;

/* Escape tables: 0 = copy, else index into ser_rep. */
static const char *const ser_rep[] = { NULL, "&amp;", "&lt;", "&gt;", "&quot;", "&apos;",
                                       "&#9;", "&#10;", "&#13;" };
static const uint8_t ser_rep_len[] = { 0, 5, 4, 4, 6, 6, 4, 5, 5 };
static const uint8_t ser_text_tbl[256] = { ['&'] = 1, ['<'] = 2, ['>'] = 3, ['\r'] = 8 };
static const uint8_t ser_attr_tbl[256] = { ['&'] = 1,  ['<'] = 2,  ['>'] = 3,
                                           ['"'] = 4,  ['\''] = 5, ['\t'] = 6,
                                           ['\n'] = 7, ['\r'] = 8 };

static void
ser_grow(ser_t *s, size_t need)
{
    size_t cap = s->cap ? s->cap : 256;
    while (cap - s->len < need)
        cap *= 2;
    if (s->fixed) {
        /* Out of the borrowed space: on to the heap with what is written. */
        char *nb = xd_malloc(cap);
        memcpy(nb, s->buf, s->len);
        s->buf = nb;
        s->fixed = false;
    } else {
        s->buf = xd_realloc(s->buf, cap);
    }
    s->cap = cap;
}

static inline void
ser_put(ser_t *s, const char *p, size_t n)
{
    if (s->cap - s->len < n)
        ser_grow(s, n);
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static inline void
ser_putc(ser_t *s, char c)
{
    if (s->cap == s->len)
        ser_grow(s, 1);
    s->buf[s->len++] = c;
}

static void
ser_escape(ser_t *s, const char *p, size_t n, const uint8_t *tbl)
{
    if (s->cap - s->len < n)
        ser_grow(s, n);
    const char *end = p + n, *run = p;
    for (; p < end; p++) {
        uint8_t r = tbl[(uint8_t)*p];
        if (r == 0)
            continue;
        ser_put(s, run, (size_t)(p - run));
        ser_put(s, ser_rep[r], ser_rep_len[r]);
        run = p + 1;
    }
    ser_put(s, run, (size_t)(end - run));
}

/* The URI bound to a prefix in scope, or NULL. */
static const ser_bind_t *
ser_lookup(const ser_t *s, const char *prefix, uint32_t prefix_len)
{
    for (uint32_t i = s->nbinds; i-- > 0;) {
        const ser_bind_t *b = &s->binds[i];
        if (b->prefix_len == prefix_len && memcmp(b->prefix, prefix, prefix_len) == 0)
            return b;
    }
    return NULL;
}

static bool
ser_is_xml_prefix(const char *prefix, uint32_t prefix_len)
{
    return prefix_len == 3 && memcmp(prefix, "xml", 3) == 0;
}

/* Declares prefix → uri on the element being written unless it is already
 * bound so in scope. */
static void
ser_bind(ser_t *s, const char *prefix, uint32_t prefix_len, const char *uri, uint32_t uri_len)
{
    if (ser_is_xml_prefix(prefix, prefix_len))
        return;
    const ser_bind_t *b = ser_lookup(s, prefix, prefix_len);
    if (b && b->uri_len == uri_len && memcmp(b->uri, uri, uri_len) == 0)
        return;
    if (s->nbinds == s->bind_cap) {
        uint32_t cap = s->bind_cap * 2;
        if (s->binds == s->inline_binds) {
            s->binds = xd_malloc(sizeof(ser_bind_t) * cap);
            memcpy(s->binds, s->inline_binds, sizeof(s->inline_binds));
        } else {
            s->binds = xd_realloc(s->binds, sizeof(ser_bind_t) * cap);
        }
        s->bind_cap = cap;
    }
    s->binds[s->nbinds++] = (ser_bind_t){ prefix, uri, prefix_len, uri_len };
    ser_put(s, " xmlns:", 7);
    ser_put(s, prefix, prefix_len);
    ser_put(s, "='", 2);
    ser_escape(s, uri, uri_len, ser_attr_tbl);
    ser_putc(s, '\'');
}

/* Writes `el`; (dflt, dflt_len) is the default namespace in scope, NULL
 * when it is the stream's content namespace. */
static void
ser_el(ser_t *s, const xd_el_t *el, const char *dflt, uint32_t dflt_len)
{
    uint32_t mark = s->nbinds;

    ser_putc(s, '<');
    if (el->prefix_len) {
        ser_put(s, el->prefix, el->prefix_len);
        ser_putc(s, ':');
    }
    ser_put(s, el->name, el->name_len);

    const char *ns = el->ns;
    uint32_t ns_len = el->ns_len;
    if (el->prefix_len) {
        /* Handled below, with the declarations. */
    } else if (!ns) {
        /* Content namespace: nothing to say unless a foreign default is in
         * scope. */
        if (dflt && !(dflt_len == s->content_len && memcmp(dflt, s->content, dflt_len) == 0)) {
            ser_put(s, " xmlns='", 8);
            ser_escape(s, s->content, s->content_len, ser_attr_tbl);
            ser_putc(s, '\'');
            dflt = s->content;
            dflt_len = s->content_len;
        }
    } else if (!dflt || dflt_len != ns_len || memcmp(dflt, ns, ns_len) != 0) {
        ser_put(s, " xmlns='", 8);
        ser_escape(s, ns, ns_len, ser_attr_tbl);
        ser_putc(s, '\'');
        dflt = ns;
        dflt_len = ns_len;
    }

    /* Declarations the element made, in their order. */
    for (uint32_t i = 0; i < el->ndecls; i++) {
        const xd_nsdecl_t *d = &el->decls[i];
        ser_bind(s, d->prefix, d->prefix_len, d->uri, d->uri_len);
    }
    if (el->prefix_len) {
        if (!ns) {
            ns = s->content;
            ns_len = s->content_len;
        }
        ser_bind(s, el->prefix, el->prefix_len, ns, ns_len);
    }

    /* Prefixes of attributes, declared before any attribute so that a
     * reparse (which keeps them as the element's declarations) writes the
     * same bytes. */
    for (uint32_t i = 0; i < el->nattrs; i++) {
        const xd_attr_t *at = &el->attrs[i];
        if (at->prefix_len && at->ns && !ser_is_xml_prefix(at->name, at->prefix_len))
            ser_bind(s, at->name, at->prefix_len, at->ns, (uint32_t)strlen(at->ns));
    }
    for (uint32_t i = 0; i < el->nattrs; i++) {
        const xd_attr_t *at = &el->attrs[i];
        ser_putc(s, ' ');
        ser_put(s, at->name, at->name_len);
        ser_put(s, "='", 2);
        ser_escape(s, at->value, at->value_len, ser_attr_tbl);
        ser_putc(s, '\'');
    }

    if (!el->first) {
        ser_put(s, "/>", 2);
    } else {
        ser_putc(s, '>');
        for (const xd_node_t *n = el->first; n; n = n->next) {
            if (n->kind == TREE_NODE_TEXT)
                ser_escape(s, ((const xd_text_node_t *)n)->text, n->len, ser_text_tbl);
            else
                ser_el(s, (const xd_el_t *)n, dflt, dflt_len);
        }
        ser_put(s, "</", 2);
        if (el->prefix_len) {
            ser_put(s, el->prefix, el->prefix_len);
            ser_putc(s, ':');
        }
        ser_put(s, el->name, el->name_len);
        ser_putc(s, '>');
    }
    s->nbinds = mark;
}

/* As xd_tree_serialize; with fixed, *buf is borrowed space of *cap bytes
 * that is never reallocated or freed: an output that does not fit moves to
 * the heap, and *fixed then says false. */
static void
ser_run(const xd_el_t *el, const char *content_ns, char **buf, size_t *len, size_t *cap,
        bool *fixed)
{
    ser_t s;
    s.fixed = fixed && *fixed;
    s.buf = *buf;
    s.len = *len;
    s.cap = *cap;
    s.content = content_ns ? content_ns : XD_NS_CLIENT;
    s.content_len = (uint32_t)strlen(s.content);
    s.binds = s.inline_binds;
    s.nbinds = 0;
    s.bind_cap = (uint32_t)(sizeof(s.inline_binds) / sizeof(s.inline_binds[0]));
    ser_el(&s, el, NULL, 0);
    ser_putc(&s, '\0');
    s.len--; /* NUL-terminated, not counted */
    if (s.binds != s.inline_binds)
        xd_free(s.binds);
    *buf = s.buf;
    *len = s.len;
    *cap = s.cap;
    if (fixed)
        *fixed = s.fixed;
}

void
xd_tree_serialize(const xd_el_t *el, const char *content_ns, char **buf, size_t *len,
                  size_t *cap)
{
    ser_run(el, content_ns, buf, len, cap, NULL);
}

char *
xd_el_serialize(const xd_el_t *el, const char *content_ns, size_t *len)
{
    char *buf = NULL;
    size_t used = 0, cap = 0;
    xd_tree_serialize(el, content_ns, &buf, &used, &cap);
    if (len)
        *len = used;
    return buf;
}

/* The bytes of a readdressed stanza (xd_stanza_readdress) whose base has
 * no 'to' and a plain root (no prefix, the content namespace): "<name",
 * its own to='…', then the base's cached bytes after "<name" — the body is
 * serialized once for every recipient.  NULL when that does not apply. */
static xd_stanza_bytes_t *
ser_spliced(const xd_stanza_t *st, char *room, size_t room_len)
{
    const xd_el_t *root = st->root, *broot = st->base->root;
    if (root->prefix_len || root->ns || root->nattrs == 0 ||
        root->nattrs != broot->nattrs + 1u || root->attrs[0].name_len != 2 ||
        memcmp(root->attrs[0].name, "to", 2) != 0)
        return NULL;
    size_t blen;
    const char *bb = xd_stanza_bytes(st->base, &blen);
    size_t skip = 1u + root->name_len; /* "<name" */
    if (blen < skip)
        return NULL;
    ser_t s = { 0 };
    size_t hdr = offsetof(xd_stanza_bytes_t, data);
    size_t need = hdr + blen + root->attrs[0].value_len + 32;
    if (room && room_len >= need) {
        /* The copy's own arena (its sole owner asks): no allocation. */
        s.buf = room;
        s.cap = room_len;
        s.fixed = true;
    } else {
        s.cap = need;
        s.buf = xd_malloc(s.cap);
    }
    s.len = hdr;
    ser_put(&s, bb, skip);
    ser_put(&s, " to='", 5);
    ser_escape(&s, root->attrs[0].value, root->attrs[0].value_len, ser_attr_tbl);
    ser_putc(&s, '\'');
    ser_put(&s, bb + skip, blen - skip);
    ser_putc(&s, '\0');
    xd_stanza_bytes_t *b = (xd_stanza_bytes_t *)s.buf;
    b->len = s.len - 1 - hdr;
    return b; /* in `room` unless it did not fit (s.fixed) */
}

const char *
xd_stanza_bytes(const xd_stanza_t *cst, size_t *len)
{
    xd_stanza_t *st = (xd_stanza_t *)cst;
    xd_stanza_bytes_t *b = atomic_load_explicit(&st->bytes, memory_order_acquire);
    size_t hdr = offsetof(xd_stanza_bytes_t, data);
    xd_arena_t *a = st->arena;
    if (!b && st->base) {
        /* The only reference: nobody else serializes or allocates in the
         * arena now, so the spliced bytes may go into its free tail
         * (xd_stanza_readdress sized it for them when the base's bytes
         * were known): one allocation per copy instead of two.  The bytes
         * are read again first, as below. */
        bool sole = atomic_load_explicit(&st->refs, memory_order_acquire) == 1;
        if (sole)
            b = atomic_load_explicit(&st->bytes, memory_order_acquire);
        if (!b) {
            char *room = sole ? (char *)xd_arena_alloc(a, 0) : NULL;
            xd_stanza_bytes_t *mine = ser_spliced(st, room, room ? (size_t)(a->end - room) : 0);
            xd_stanza_bytes_t *expected = NULL;
            if (mine && (char *)mine == room) {
                (void)xd_arena_alloc(a, hdr + mine->len + 1); /* claims what was written */
                st->bytes_in_arena = true;
                atomic_store_explicit(&st->bytes, mine, memory_order_release);
            } else if (mine && !atomic_compare_exchange_strong_explicit(
                                   &st->bytes, &expected, mine, memory_order_acq_rel,
                                   memory_order_acquire)) {
                xd_free(mine);
                mine = expected;
            }
            b = mine; /* NULL: serialized whole below */
        }
    }
    if (!b && !st->base && atomic_load_explicit(&st->refs, memory_order_acquire) == 1 &&
        /* Read again: a holder that dropped its reference just now may have
         * published heap bytes first (the acquire above makes them seen). */
        !(b = atomic_load_explicit(&st->bytes, memory_order_acquire)) &&
        (size_t)(a->end - a->cur) >= hdr + SER_ARENA_MIN) {
        /* The only reference: nobody else serializes or allocates in the
         * arena now, so the bytes go into its free tail (no malloc) and
         * stay there while the stanza lives. */
        char *buf = (char *)xd_arena_alloc(a, 0);
        size_t cap = (size_t)(a->end - buf), used = hdr;
        bool fixed = true;
        ser_run(st->root, NULL, &buf, &used, &cap, &fixed);
        b = (xd_stanza_bytes_t *)buf;
        b->len = used - hdr;
        if (fixed)
            (void)xd_arena_alloc(a, used + 1); /* claims what was written */
        st->bytes_in_arena = fixed;
        atomic_store_explicit(&st->bytes, b, memory_order_release);
    }
    if (!b) {
        /* Serialize behind a reserved header, then publish with a CAS; a
         * loser frees its copy and uses the winner's. */
        size_t cap = hdr + 256, used = hdr;
        char *buf = xd_malloc(cap);
        xd_tree_serialize(st->root, NULL, &buf, &used, &cap);
        xd_stanza_bytes_t *mine = (xd_stanza_bytes_t *)buf;
        mine->len = used - hdr;
        xd_stanza_bytes_t *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&st->bytes, &expected, mine,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire)) {
            b = mine;
        } else {
            xd_free(mine);
            b = expected;
        }
    }
    if (len)
        *len = b->len;
    return b->data;
}
