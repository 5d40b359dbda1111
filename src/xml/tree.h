/*
 * tree.h — the node layout behind xd_el_t and xd_stanza_t (src/xml,
 * internal to tree.c, serialize.c and parse.c).
 *
 * A tree is a root xd_el_t and everything below it, all allocated from one
 * arena (arena.h).  Children form a singly linked list of nodes, in document
 * order, each either an element or a text run:
 *
 *     el ── first ──► [text "hi "] ─► [el <b>] ─► [text "there"] ◄── last
 *
 * Invariants:
 *   - every string (name, ns, prefix, attribute parts, text) is
 *     NUL-terminated and its *_len is its strlen;
 *   - ns == NULL means the content namespace; prefix == NULL means none;
 *   - el->text is the concatenation of the direct text children (an empty
 *     static string when there are none), kept up to date on every append;
 *   - every element of a tree has el->arena == the tree's arena;
 *   - once arena->frozen is set nothing in the tree changes again.
 * Owner: the builder's single owner; after freeze, nobody (read-only).
 */
#ifndef XD_XML_TREE_H
#define XD_XML_TREE_H

#include <stdatomic.h>
#include <stdint.h>

#include "xml/arena.h"
#include "xmppd/el.h"

enum { TREE_NODE_EL = 1, TREE_NODE_TEXT = 2 };

typedef struct xd_node {
    struct xd_node *next; /* next sibling, or NULL */
    uint32_t kind;        /* TREE_NODE_EL or TREE_NODE_TEXT */
    uint32_t len;         /* text nodes: byte length of text[] */
} xd_node_t;

typedef struct xd_text_node {
    xd_node_t node; /* kind TREE_NODE_TEXT */
    char text[];    /* unescaped UTF-8, NUL-terminated */
} xd_text_node_t;

typedef struct xd_attr {
    const char *name;    /* as written: "to", "xml:lang" */
    const char *value;   /* unescaped */
    const char *ns;      /* URI of the prefix, or NULL when unprefixed */
    uint32_t name_len;   /* strlen(name) */
    uint32_t value_len;  /* strlen(value) */
    uint32_t prefix_len; /* bytes before ':' in name, 0 when unprefixed */
} xd_attr_t;

typedef struct xd_nsdecl {
    const char *prefix;  /* declared prefix (never the default one) */
    const char *uri;     /* its namespace */
    uint32_t prefix_len; /* strlen(prefix) */
    uint32_t uri_len;    /* strlen(uri) */
} xd_nsdecl_t;

struct xd_el {
    xd_node_t node;       /* kind TREE_NODE_EL; sibling link */
    struct xd_el *parent; /* NULL at the root */
    xd_arena_t *arena;    /* the tree's arena */
    const char *name;     /* local name */
    const char *ns;       /* namespace URI, NULL = content namespace */
    const char *prefix;   /* NULL when unprefixed */
    xd_attr_t *attrs;     /* attrs[0..nattrs) in document order */
    xd_nsdecl_t *decls;   /* prefixed xmlns:p declarations made here */
    xd_node_t *first;     /* first child node */
    xd_node_t *last;      /* last child node */
    const char *text;     /* concatenated direct text, "" if none */
    uint32_t name_len;    /* strlen(name) */
    uint32_t ns_len;      /* strlen(ns), 0 when NULL */
    uint32_t prefix_len;  /* strlen(prefix), 0 when NULL */
    uint32_t nattrs;      /* used entries of attrs */
    uint32_t attr_cap;    /* allocated entries of attrs */
    uint32_t ndecls;      /* entries of decls */
    uint32_t text_len;    /* strlen(text) */
};

typedef struct xd_stanza_bytes {
    size_t len;  /* bytes in data, NUL excluded */
    char data[]; /* NUL-terminated serialization */
} xd_stanza_bytes_t;

/* Values that travel with a stanza (the parsed 'to' and 'from' of
 * src/xmpp/stanza.c, which owns both slots): each slot has a function that
 * releases its value when the stanza is freed or thawed.  Slots are set
 * once (first wins, as for the serialization); xd_stanza_cache_put returns
 * the value now in the slot (yours, or the winner's after your value was
 * released).  Any thread.  Not public: a module reads the addresses with
 * xd_stanza_to / xd_stanza_from (stanza.h). */
#define XD_STANZA_CACHE_SLOTS 2
void xd_stanza_cache_slot(unsigned slot, void (*free_fn)(void *value));
void *xd_stanza_cache_get(const xd_stanza_t *st, unsigned slot);
void *xd_stanza_cache_put(const xd_stanza_t *st, unsigned slot, void *value);

struct xd_stanza {
    atomic_uint refs;                /* references; the last unref frees */
    xd_el_t *root;                   /* frozen tree, in `arena` */
    xd_arena_t *arena;               /* owns the tree and this struct */
    _Atomic(xd_stanza_bytes_t *) bytes; /* cached serialization, set once by CAS */
    bool bytes_in_arena;             /* bytes lives in `arena` (written by the sole owner) */
    _Atomic(void *) cache[XD_STANZA_CACHE_SLOTS]; /* values of the layers above (el.h),
                                                   * released by their slot's free function */
    xd_stanza_t *base;               /* xd_stanza_readdress: the stanza whose children and
                                      * serialization this one shares (a reference), or NULL */
};

extern const char xd_tree_empty[1]; /* "" for elements without text */

/* A new element in arena `a` with copies of the given strings (ns NULL =
 * content namespace), not linked anywhere. */
xd_el_t *xd_tree_el_new(xd_arena_t *a, const char *name, size_t name_len, const char *prefix,
                        size_t prefix_len, const char *ns, size_t ns_len);

/* Links `child` (of the same arena) as the last child of `parent`. */
void xd_tree_link(xd_el_t *parent, xd_node_t *child);

/* Appends a text node with a copy of s[0..len) and updates parent->text. */
void xd_tree_add_text(xd_el_t *parent, const char *s, size_t len);

/* Wraps a frozen root (whose arena is `a`) in a stanza with one reference. */
xd_stanza_t *xd_tree_freeze(xd_el_t *root);

/* Appends the serialization of `el` to the growing buffer *buf (capacity
 * *cap, used *len), reallocating with xd_realloc as needed. */
void xd_tree_serialize(const xd_el_t *el, const char *content_ns, char **buf, size_t *len,
                       size_t *cap);

#endif
