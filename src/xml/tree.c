/*
 * tree.c — element builders, readers and reference-counted stanzas (src/xml;
 * API in include/xmppd/el.h, layout in tree.h).
 *
 * A builder tree lives in one arena.  xd_el_append moves a whole tree by
 * splicing its arena's blocks into the parent's arena and repointing the
 * moved elements at their new arena.  xd_el_freeze allocates the
 * xd_stanza_t in the same arena, so a stanza is freed with one
 * xd_arena_free.  Mutators assert the tree is not frozen.
 */
#include <stdlib.h>
#include <string.h>

#include "xml/tree.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/ns.h"

const char xd_tree_empty[1] = "";

#define TREE_BUILDER_BLOCK 512

/* ---- Internal construction (shared with parse.c) ----------------------- */

xd_el_t *
xd_tree_el_new(xd_arena_t *a, const char *name, size_t name_len, const char *prefix,
               size_t prefix_len, const char *ns, size_t ns_len)
{
    xd_el_t *el = xd_arena_alloc(a, sizeof(*el));
    memset(el, 0, sizeof(*el));
    el->node.kind = TREE_NODE_EL;
    el->arena = a;
    el->name = xd_arena_strndup(a, name, name_len);
    el->name_len = (uint32_t)name_len;
    if (prefix && prefix_len) {
        el->prefix = xd_arena_strndup(a, prefix, prefix_len);
        el->prefix_len = (uint32_t)prefix_len;
    }
    if (ns) {
        el->ns = xd_arena_strndup(a, ns, ns_len);
        el->ns_len = (uint32_t)ns_len;
    }
    el->text = xd_tree_empty;
    return el;
}

void
xd_tree_link(xd_el_t *parent, xd_node_t *child)
{
    child->next = NULL;
    if (parent->last)
        parent->last->next = child;
    else
        parent->first = child;
    parent->last = child;
}

void
xd_tree_add_text(xd_el_t *parent, const char *s, size_t len)
{
    xd_arena_t *a = parent->arena;
    xd_text_node_t *t = xd_arena_alloc(a, sizeof(*t) + len + 1);
    t->node.kind = TREE_NODE_TEXT;
    t->node.len = (uint32_t)len;
    memcpy(t->text, s, len);
    t->text[len] = '\0';
    xd_tree_link(parent, &t->node);
    if (parent->text_len == 0) {
        parent->text = t->text;
        parent->text_len = (uint32_t)len;
    } else {
        /* Mixed content: keep the concatenation up to date. */
        size_t n = parent->text_len + len;
        char *cat = xd_arena_alloc(a, n + 1);
        memcpy(cat, parent->text, parent->text_len);
        memcpy(cat + parent->text_len, s, len);
        cat[n] = '\0';
        parent->text = cat;
        parent->text_len = (uint32_t)n;
    }
}

xd_stanza_t *
xd_tree_freeze(xd_el_t *root)
{
    XD_ASSERT(root->parent == NULL);
    xd_arena_t *a = root->arena;
    XD_ASSERT(!a->frozen);
    a->frozen = true;
    xd_stanza_t *st = xd_arena_alloc(a, sizeof(*st));
    atomic_init(&st->refs, 1);
    st->root = root;
    st->arena = a;
    atomic_init(&st->bytes, NULL);
    st->bytes_in_arena = false;
    for (unsigned i = 0; i < XD_STANZA_CACHE_SLOTS; i++)
        atomic_init(&st->cache[i], NULL);
    st->base = NULL;
    return st;
}

/* ---- Builders ------------------------------------------------------------ */

/* Splits "p:local" into prefix and local name. */
static void
tree_split_qname(const char *qname, const char **prefix, size_t *prefix_len, const char **local)
{
    const char *colon = strchr(qname, ':');
    if (colon) {
        *prefix = qname;
        *prefix_len = (size_t)(colon - qname);
        *local = colon + 1;
    } else {
        *prefix = NULL;
        *prefix_len = 0;
        *local = qname;
    }
}

static xd_el_t *
tree_el_new_q(xd_arena_t *a, const char *qname, const char *ns)
{
    const char *prefix, *local;
    size_t prefix_len;
    XD_ASSERT(qname && *qname);
    tree_split_qname(qname, &prefix, &prefix_len, &local);
    return xd_tree_el_new(a, local, strlen(local), prefix, prefix_len, ns, ns ? strlen(ns) : 0);
}

static void
tree_check_mutable(const xd_el_t *el)
{
    XD_ASSERT(el != NULL);
    XD_ASSERT(!el->arena->frozen);
}

xd_el_t *
xd_el_new(const char *name, const char *ns)
{
    xd_arena_t *a = xd_arena_new(TREE_BUILDER_BLOCK);
    return tree_el_new_q(a, name, ns);
}

xd_el_t *
xd_el_add_child(xd_el_t *parent, const char *name, const char *ns)
{
    tree_check_mutable(parent);
    xd_el_t *el;
    if (ns == NULL && parent->ns) {
        /* Same namespace as the parent: share the parent's string. */
        el = tree_el_new_q(parent->arena, name, NULL);
        el->ns = parent->ns;
        el->ns_len = parent->ns_len;
    } else {
        el = tree_el_new_q(parent->arena, name, ns);
    }
    el->parent = parent;
    xd_tree_link(parent, &el->node);
    return el;
}

static void
tree_set_arena(xd_el_t *el, xd_arena_t *a)
{
    el->arena = a;
    for (xd_node_t *n = el->first; n; n = n->next)
        if (n->kind == TREE_NODE_EL)
            tree_set_arena((xd_el_t *)n, a);
}

void
xd_el_append(xd_el_t *parent, xd_el_t *child)
{
    tree_check_mutable(parent);
    tree_check_mutable(child);
    XD_ASSERT(child->parent == NULL && child != parent);
    if (child->arena != parent->arena) {
        xd_arena_adopt(parent->arena, child->arena);
        tree_set_arena(child, parent->arena);
    }
    child->parent = parent;
    xd_tree_link(parent, &child->node);
}

void
xd_el_add_textn(xd_el_t *el, const char *text, size_t len)
{
    tree_check_mutable(el);
    if (len == 0)
        return;
    xd_tree_add_text(el, text, len);
}

void
xd_el_add_text(xd_el_t *el, const char *text)
{
    xd_el_add_textn(el, text, text ? strlen(text) : 0);
}

static xd_attr_t *
tree_find_attr(const xd_el_t *el, const char *name, size_t name_len)
{
    for (uint32_t i = 0; i < el->nattrs; i++) {
        xd_attr_t *at = &el->attrs[i];
        if (at->name_len == name_len && memcmp(at->name, name, name_len) == 0)
            return at;
    }
    return NULL;
}

static void
tree_add_decl(xd_el_t *el, const char *prefix, const char *uri)
{
    xd_arena_t *a = el->arena;
    size_t plen = strlen(prefix), ulen = strlen(uri);
    for (uint32_t i = 0; i < el->ndecls; i++) {
        xd_nsdecl_t *d = &el->decls[i];
        if (d->prefix_len == plen && memcmp(d->prefix, prefix, plen) == 0) {
            d->uri = xd_arena_strndup(a, uri, ulen);
            d->uri_len = (uint32_t)ulen;
            return;
        }
    }
    xd_nsdecl_t *nd = xd_arena_alloc(a, sizeof(*nd) * (el->ndecls + 1));
    if (el->ndecls)
        memcpy(nd, el->decls, sizeof(*nd) * el->ndecls);
    nd[el->ndecls] = (xd_nsdecl_t){ xd_arena_strndup(a, prefix, plen),
                                    xd_arena_strndup(a, uri, ulen), (uint32_t)plen,
                                    (uint32_t)ulen };
    el->decls = nd;
    el->ndecls++;
}

void
xd_el_set_attr_ns(xd_el_t *el, const char *qname, const char *ns, const char *value)
{
    tree_check_mutable(el);
    XD_ASSERT(qname && *qname);
    size_t name_len = strlen(qname);
    if (value == NULL) {
        xd_el_remove_attr(el, qname);
        return;
    }
    xd_arena_t *a = el->arena;
    size_t value_len = strlen(value);
    xd_attr_t *at = tree_find_attr(el, qname, name_len);
    if (!at) {
        if (el->nattrs == el->attr_cap) {
            uint32_t cap = el->attr_cap ? el->attr_cap * 2 : 4;
            xd_attr_t *na = xd_arena_alloc(a, sizeof(*na) * cap);
            if (el->nattrs)
                memcpy(na, el->attrs, sizeof(*na) * el->nattrs);
            el->attrs = na;
            el->attr_cap = cap;
        }
        at = &el->attrs[el->nattrs++];
        at->name = xd_arena_strndup(a, qname, name_len);
        at->name_len = (uint32_t)name_len;
        const char *colon = memchr(qname, ':', name_len);
        at->prefix_len = colon ? (uint32_t)(colon - qname) : 0;
    }
    at->value = xd_arena_strndup(a, value, value_len);
    at->value_len = (uint32_t)value_len;
    at->ns = (at->prefix_len && ns) ? xd_arena_strndup(a, ns, strlen(ns)) : NULL;
}

void
xd_el_set_attr(xd_el_t *el, const char *name, const char *value)
{
    tree_check_mutable(el);
    XD_ASSERT(name && *name);
    if (strcmp(name, "xmlns") == 0) {
        el->ns = value ? xd_arena_strndup(el->arena, value, strlen(value)) : NULL;
        el->ns_len = value ? (uint32_t)strlen(value) : 0;
        return;
    }
    if (strncmp(name, "xmlns:", 6) == 0) {
        if (value)
            tree_add_decl(el, name + 6, value);
        return;
    }
    const char *ns = NULL;
    if (strncmp(name, "xml:", 4) == 0)
        ns = XD_NS_XML;
    xd_el_set_attr_ns(el, name, ns, value);
}

bool
xd_el_remove_attr(xd_el_t *el, const char *name)
{
    tree_check_mutable(el);
    size_t name_len = strlen(name);
    xd_attr_t *at = tree_find_attr(el, name, name_len);
    if (!at)
        return false;
    size_t i = (size_t)(at - el->attrs);
    memmove(at, at + 1, sizeof(*at) * (el->nattrs - i - 1));
    el->nattrs--;
    return true;
}

void
xd_el_remove_child(xd_el_t *parent, xd_el_t *child)
{
    tree_check_mutable(parent);
    XD_ASSERT(child && child->parent == parent);
    xd_node_t *prev = NULL;
    for (xd_node_t *n = parent->first; n; prev = n, n = n->next) {
        if (n != &child->node)
            continue;
        if (prev)
            prev->next = n->next;
        else
            parent->first = n->next;
        if (parent->last == n)
            parent->last = prev;
        child->parent = NULL;
        child->node.next = NULL;
        return;
    }
    XD_ASSERT(!"child not found under parent");
}

void
xd_el_clear_children(xd_el_t *el)
{
    tree_check_mutable(el);
    el->first = el->last = NULL;
    el->text = xd_tree_empty;
    el->text_len = 0;
}

void
xd_el_free(xd_el_t *el)
{
    if (!el)
        return;
    XD_ASSERT(el->parent == NULL);
    XD_ASSERT(!el->arena->frozen);
    xd_arena_free(el->arena);
}

xd_stanza_t *
xd_el_freeze(xd_el_t *el)
{
    tree_check_mutable(el);
    return xd_tree_freeze(el);
}

/* ---- Stanzas ------------------------------------------------------------- */

static void tree_drop_cached(xd_stanza_t *st);

xd_stanza_t *
xd_stanza_ref(const xd_stanza_t *cst)
{
    xd_stanza_t *st = (xd_stanza_t *)cst;
    unsigned old = atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    XD_ASSERT(old > 0);
    return st;
}

void
xd_stanza_unref(xd_stanza_t *st)
{
    if (!st)
        return;
    /* acq_rel rather than release + an acquire fence on the last drop:
     * the same ordering, and one ThreadSanitizer can see (it does not model
     * stand-alone fences).  Stanzas crossed threads only rarely before the
     * router; now every delivery to another worker does. */
    unsigned old = atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel);
    XD_ASSERT(old > 0);
    if (old != 1)
        return;
    tree_drop_cached(st);
    xd_stanza_t *base = st->base; /* st lives in the arena */
    xd_arena_free(st->arena);
    xd_stanza_unref(base);
}

xd_stanza_t *
xd_stanza_readdress(const xd_stanza_t *cst, const char *to)
{
    xd_stanza_t *st = (xd_stanza_t *)cst;
    xd_stanza_t *base = st->base ? st->base : st; /* never a chain */
    const xd_el_t *src = st->root;
    size_t to_len = to ? strlen(to) : 0;
    /* Room for the copy's bytes too when its base has been serialized
     * (a fan-out serializes it first): the base's bytes with this 'to'
     * spliced in go into the same block (xd_stanza_bytes). */
    xd_stanza_bytes_t *bb = atomic_load_explicit(&base->bytes, memory_order_acquire);
    size_t spliced = bb && to ? offsetof(xd_stanza_bytes_t, data) + bb->len + to_len + 48 : 0;
    xd_arena_t *a = xd_arena_new(sizeof(xd_el_t) + sizeof(xd_stanza_t) + 64 + to_len +
                                 sizeof(xd_attr_t) * (src->nattrs + 1u) + spliced);
    xd_el_t *root = xd_arena_alloc(a, sizeof(*root));
    *root = *src; /* names, namespaces and children stay the base's (read-only) */
    root->node.next = NULL;
    root->parent = NULL;
    root->arena = a;
    root->attrs = xd_arena_alloc(a, sizeof(xd_attr_t) * (src->nattrs + 1u));
    root->nattrs = 0;
    if (to) {
        /* First, so that the serialization is "<name to='…'" and the rest
         * of the base's bytes (xd_stanza_bytes). */
        root->attrs[root->nattrs++] = (xd_attr_t){ .name = "to", .value = xd_arena_strndup(a, to, to_len),
                                                   .name_len = 2, .value_len = (uint32_t)to_len };
    }
    for (uint32_t i = 0; i < src->nattrs; i++)
        if (!(src->attrs[i].name_len == 2 && memcmp(src->attrs[i].name, "to", 2) == 0))
            root->attrs[root->nattrs++] = src->attrs[i];
    root->attr_cap = root->nattrs;
    xd_stanza_t *out = xd_tree_freeze(root);
    out->base = xd_stanza_ref(base);
    return out;
}

/* ---- Cached values --------------------------------------------------------- */

static void (*tree_cache_free[XD_STANZA_CACHE_SLOTS])(void *); /* set once, before a value is put */

void
xd_stanza_cache_slot(unsigned slot, void (*free_fn)(void *value))
{
    XD_ASSERT(slot < XD_STANZA_CACHE_SLOTS);
    tree_cache_free[slot] = free_fn;
}

void *
xd_stanza_cache_get(const xd_stanza_t *cst, unsigned slot)
{
    xd_stanza_t *st = (xd_stanza_t *)cst;
    return slot < XD_STANZA_CACHE_SLOTS
               ? atomic_load_explicit(&st->cache[slot], memory_order_acquire)
               : NULL;
}

void *
xd_stanza_cache_put(const xd_stanza_t *cst, unsigned slot, void *value)
{
    xd_stanza_t *st = (xd_stanza_t *)cst;
    XD_ASSERT(slot < XD_STANZA_CACHE_SLOTS && tree_cache_free[slot]);
    void *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&st->cache[slot], &expected, value,
                                                memory_order_acq_rel, memory_order_acquire))
        return value;
    tree_cache_free[slot](value); /* another thread was first */
    return expected;
}

/* The serialization and the cached values go (last reference, or a thaw). */
static void
tree_drop_cached(xd_stanza_t *st)
{
    xd_stanza_bytes_t *b = atomic_load_explicit(&st->bytes, memory_order_relaxed);
    if (b && !st->bytes_in_arena)
        xd_free(b);
    atomic_store_explicit(&st->bytes, NULL, memory_order_relaxed);
    st->bytes_in_arena = false;
    for (unsigned i = 0; i < XD_STANZA_CACHE_SLOTS; i++) {
        void *v = atomic_load_explicit(&st->cache[i], memory_order_relaxed);
        if (v)
            tree_cache_free[i](v);
        atomic_store_explicit(&st->cache[i], NULL, memory_order_relaxed);
    }
}

xd_el_t *
xd_stanza_thaw(xd_stanza_t *st)
{
    if (st->base || atomic_load_explicit(&st->refs, memory_order_acquire) != 1) {
        /* Shared (a readdressed stanza shares its children with its base,
         * so it is never handed back as a builder). */
        /* Shared: the others keep theirs. */
        xd_el_t *copy = xd_stanza_edit(st);
        xd_stanza_unref(st);
        return copy;
    }
    /* The only reference: nobody else can read the tree any more. */
    tree_drop_cached(st);
    st->arena->frozen = false;
    return st->root; /* its struct stays in the arena, unused, until the arena goes */
}

const xd_el_t *
xd_stanza_root(const xd_stanza_t *st)
{
    return st->root;
}

/* Deep copy of `src` into arena `a`; strings are copied once each. */
static xd_el_t *
tree_copy(xd_arena_t *a, const xd_el_t *src, xd_el_t *parent)
{
    xd_el_t *el = xd_tree_el_new(a, src->name, src->name_len, src->prefix, src->prefix_len, NULL,
                                 0);
    if (src->ns) {
        if (parent && parent->ns && parent->ns_len == src->ns_len &&
            memcmp(parent->ns, src->ns, src->ns_len) == 0) {
            el->ns = parent->ns;
        } else {
            el->ns = xd_arena_strndup(a, src->ns, src->ns_len);
        }
        el->ns_len = src->ns_len;
    }
    el->parent = parent;
    if (src->nattrs) {
        el->attrs = xd_arena_alloc(a, sizeof(xd_attr_t) * src->nattrs);
        for (uint32_t i = 0; i < src->nattrs; i++) {
            const xd_attr_t *s = &src->attrs[i];
            xd_attr_t *d = &el->attrs[i];
            *d = *s;
            d->name = xd_arena_strndup(a, s->name, s->name_len);
            d->value = xd_arena_strndup(a, s->value, s->value_len);
            d->ns = s->ns ? xd_arena_strndup(a, s->ns, strlen(s->ns)) : NULL;
        }
        el->nattrs = el->attr_cap = src->nattrs;
    }
    if (src->ndecls) {
        el->decls = xd_arena_alloc(a, sizeof(xd_nsdecl_t) * src->ndecls);
        for (uint32_t i = 0; i < src->ndecls; i++) {
            const xd_nsdecl_t *s = &src->decls[i];
            el->decls[i] = (xd_nsdecl_t){ xd_arena_strndup(a, s->prefix, s->prefix_len),
                                          xd_arena_strndup(a, s->uri, s->uri_len),
                                          s->prefix_len, s->uri_len };
        }
        el->ndecls = src->ndecls;
    }
    for (const xd_node_t *n = src->first; n; n = n->next) {
        if (n->kind == TREE_NODE_TEXT) {
            xd_tree_add_text(el, ((const xd_text_node_t *)n)->text, n->len);
        } else {
            xd_el_t *c = tree_copy(a, (const xd_el_t *)n, el);
            xd_tree_link(el, &c->node);
        }
    }
    return el;
}

xd_el_t *
xd_stanza_edit(const xd_stanza_t *st)
{
    /* Size the first block from the original so a copy is one malloc. */
    size_t hint = st->arena->bytes;
    if (hint > XD_ARENA_MAX_BLOCK)
        hint = XD_ARENA_MAX_BLOCK;
    xd_arena_t *a = xd_arena_new(hint);
    return tree_copy(a, st->root, NULL);
}

/* ---- Readers ------------------------------------------------------------- */

const char *
xd_el_name(const xd_el_t *el)
{
    return el->name;
}

const char *
xd_el_ns(const xd_el_t *el)
{
    return el->ns;
}

const char *
xd_el_prefix(const xd_el_t *el)
{
    return el->prefix;
}

const xd_el_t *
xd_el_parent(const xd_el_t *el)
{
    return el->parent;
}

bool
xd_el_is(const xd_el_t *el, const char *name, const char *ns)
{
    if (name && strcmp(el->name, name) != 0)
        return false;
    if (ns && (!el->ns || strcmp(el->ns, ns) != 0))
        return false;
    return true;
}

const char *
xd_el_attr(const xd_el_t *el, const char *name)
{
    const xd_attr_t *at = tree_find_attr(el, name, strlen(name));
    return at ? at->value : NULL;
}

const char *
xd_el_attr_ns(const xd_el_t *el, const char *local, const char *ns)
{
    size_t local_len = strlen(local);
    for (uint32_t i = 0; i < el->nattrs; i++) {
        const xd_attr_t *at = &el->attrs[i];
        uint32_t off = at->prefix_len ? at->prefix_len + 1 : 0;
        if (at->name_len - off != local_len || memcmp(at->name + off, local, local_len) != 0)
            continue;
        if (ns == NULL ? at->ns == NULL : (at->ns && strcmp(at->ns, ns) == 0))
            return at->value;
    }
    return NULL;
}

size_t
xd_el_attr_count(const xd_el_t *el)
{
    return el->nattrs;
}

const char *
xd_el_attr_at(const xd_el_t *el, size_t i, const char **name, const char **ns)
{
    if (i >= el->nattrs)
        return NULL;
    if (name)
        *name = el->attrs[i].name;
    if (ns)
        *ns = el->attrs[i].ns;
    return el->attrs[i].value;
}

static const xd_el_t *
tree_next_el(const xd_node_t *n)
{
    for (; n; n = n->next)
        if (n->kind == TREE_NODE_EL)
            return (const xd_el_t *)n;
    return NULL;
}

const xd_el_t *
xd_el_first_child(const xd_el_t *el)
{
    return tree_next_el(el->first);
}

const xd_el_t *
xd_el_next(const xd_el_t *el)
{
    return tree_next_el(el->node.next);
}

const xd_el_t *
xd_el_child(const xd_el_t *el, const char *name, const char *ns)
{
    for (const xd_el_t *c = xd_el_first_child(el); c; c = xd_el_next(c))
        if (xd_el_is(c, name, ns))
            return c;
    return NULL;
}

size_t
xd_el_child_count(const xd_el_t *el)
{
    size_t n = 0;
    for (const xd_el_t *c = xd_el_first_child(el); c; c = xd_el_next(c))
        n++;
    return n;
}

const char *
xd_el_text(const xd_el_t *el)
{
    return el->text;
}

size_t
xd_el_text_len(const xd_el_t *el)
{
    return el->text_len;
}

const char *
xd_el_child_text(const xd_el_t *el, const char *name, const char *ns)
{
    const xd_el_t *c = xd_el_child(el, name, ns);
    return c ? c->text : NULL;
}

xd_el_t *
xd_el_child_mut(xd_el_t *el, const char *name, const char *ns)
{
    tree_check_mutable(el);
    return (xd_el_t *)xd_el_child(el, name, ns);
}

xd_el_t *
xd_el_first_child_mut(xd_el_t *el)
{
    tree_check_mutable(el);
    return (xd_el_t *)xd_el_first_child(el);
}

xd_el_t *
xd_el_next_mut(xd_el_t *el)
{
    tree_check_mutable(el);
    return (xd_el_t *)xd_el_next(el);
}
