/*
 * el.h — XML element trees and immutable stanzas (public module API;
 * DESIGN.md 3, STYLE.md 3.7).
 *
 * Two types share one node layout:
 *
 *   xd_el_t      a mutable element tree with a single owner (R3).  It is
 *                built with xd_el_new/xd_el_add_child/…, moved with
 *                xd_el_append, and ends in xd_el_free or xd_el_freeze.
 *   xd_stanza_t  an immutable, reference-counted (atomic) container holding
 *                a frozen root element and, once asked for, its cached
 *                serialization.  Everything reachable from
 *                xd_stanza_root() is read-only and safe to read from any
 *                thread; xd_stanza_edit() returns a builder copy.
 *
 * Memory: every tree lives in one arena (a few large blocks); names,
 * namespaces, attribute values and text all point into it, so a parsed
 * stanza costs one or two malloc calls and is freed in one go.  Replacing or
 * removing something in a builder leaves the old bytes in the arena until the
 * tree is freed; builders are short-lived, so this is the right trade.
 *
 * Namespaces: an element's namespace is a URI, or NULL for "the content
 * namespace of whatever stream carries it" (jabber:client, jabber:server or
 * jabber:component:accept).  The parser maps the stream's default namespace
 * to NULL, and the serializer writes a NULL-namespace root with no xmlns at
 * all, so the cached bytes of one stanza can be written unchanged to any
 * stream (DESIGN.md 3).  An element whose namespace is given explicitly
 * (e.g. <message xmlns='jabber:client'> inside XEP-0297 <forwarded/>) keeps
 * it.  An element may carry a prefix ("stream", "db"); prefixes and the
 * xmlns:p declarations made on an element are preserved on output.
 *
 * Names: xd_el_new() and xd_el_add_child() accept a qualified name
 * ("stream:error" → prefix "stream", local name "error").  Attribute names
 * are looked up by the name as written ("to", "xml:lang"); xml:lang is in
 * XD_NS_XML automatically.  Text is stored unescaped and NUL-terminated.
 *
 * Strings passed in are copied; strings returned point into the tree and
 * live as long as it does.  Allocation never fails (alloc.h).
 */
#ifndef XMPPD_EL_H
#define XMPPD_EL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct xd_el xd_el_t;
typedef struct xd_stanza xd_stanza_t;

/* ---- Builders (single owner, mutable) --------------------------------- */

/* A new root element.  `name` may be qualified ("stream:features"); `ns` is
 * its namespace URI, or NULL for the content namespace. */
xd_el_t *xd_el_new(const char *name, const char *ns);

/* Appends a new child element to `parent` and returns it (owned by the
 * parent's tree).  `ns` NULL means "same namespace as the parent". */
xd_el_t *xd_el_add_child(xd_el_t *parent, const char *name, const char *ns);

/* Moves the root `child` (and its whole tree) to the end of `parent`'s
 * children; `child` now belongs to parent's tree and must not be freed. */
void xd_el_append(xd_el_t *parent, xd_el_t *child);

/* Appends a text node (unescaped UTF-8).  Does nothing for empty text. */
void xd_el_add_text(xd_el_t *el, const char *text);
void xd_el_add_textn(xd_el_t *el, const char *text, size_t len);

/* Sets attribute `name` to `value`, replacing an existing one; a NULL value
 * removes it.  "xml:lang" goes to XD_NS_XML.  "xmlns" sets the element's
 * namespace and "xmlns:p" declares a prefix, as they would in XML. */
void xd_el_set_attr(xd_el_t *el, const char *name, const char *value);

/* Sets a namespaced attribute: `qname` is "p:local" (or "local"), `ns` the
 * URI of p; the serializer declares p where needed. */
void xd_el_set_attr_ns(xd_el_t *el, const char *qname, const char *ns, const char *value);

/* Removes attribute `name`; returns whether it was there. */
bool xd_el_remove_attr(xd_el_t *el, const char *name);

/* Unlinks `child` from `parent` and drops it (its bytes stay in the arena
 * until the tree is freed). */
void xd_el_remove_child(xd_el_t *parent, xd_el_t *child);

/* Removes every child node (elements and text) of `el`. */
void xd_el_clear_children(xd_el_t *el);

/* Mutable counterparts of the readers below, for the owner of a builder. */
xd_el_t *xd_el_child_mut(xd_el_t *el, const char *name, const char *ns);
xd_el_t *xd_el_first_child_mut(xd_el_t *el);
xd_el_t *xd_el_next_mut(xd_el_t *el);

/* Frees a root builder and everything in its tree.  NULL is a no-op. */
void xd_el_free(xd_el_t *el);

/* Turns the root builder `el` into an immutable stanza with one reference;
 * `el` is consumed.  Costs no copy. */
xd_stanza_t *xd_el_freeze(xd_el_t *el);

/* ---- Stanzas (immutable, shared) --------------------------------------- */

/* Takes a reference (atomic); returns `st` for convenience. */
xd_stanza_t *xd_stanza_ref(const xd_stanza_t *st);

/* Drops a reference; the last one frees the stanza.  NULL is a no-op. */
void xd_stanza_unref(xd_stanza_t *st);

/* The frozen root element; valid as long as the reference is held. */
const xd_el_t *xd_stanza_root(const xd_stanza_t *st);

/* A new builder holding a deep copy of the stanza's tree (R2). */
xd_el_t *xd_stanza_edit(const xd_stanza_t *st);

/* The stanza as a builder again, taking the caller's reference (R3): when
 * that reference is the only one, the tree itself is handed back (no copy;
 * its cached serialization and values are dropped), else a copy is made
 * and the reference released.  For the owner of a fresh stanza that
 * changes it before passing it on (stamping 'from', adding a stanza-id). */
xd_el_t *xd_stanza_thaw(xd_stanza_t *st);

/* A new stanza (one reference) equal to st but addressed `to` (NULL: no
 * 'to'), which comes first among its attributes.  It shares st's children
 * (st is held until it goes) and, when st has no 'to' and a root in the
 * content namespace, st's serialization: its bytes are "<name to='…'" and
 * st's bytes after "<name", so a stanza sent to many recipients that only
 * 'to' tells apart (a group chat's fan-out) is serialized once.  Costs one
 * small allocation for the root and one for the bytes.  Its children's
 * parent is st's root; xd_stanza_thaw of it always copies. */
xd_stanza_t *xd_stanza_readdress(const xd_stanza_t *st, const char *to);

/* The stanza's serialization, computed once (the first caller wins an
 * atomic compare-and-swap; concurrent callers are safe) and cached for the
 * stanza's lifetime.  NUL-terminated; *len (if not NULL) gets the length. */
const char *xd_stanza_bytes(const xd_stanza_t *st, size_t *len);

/* Parses one standalone element (xd_el_parse: no-namespace elements are in
 * the content namespace) or a stanza whose elements in `content_ns` map to
 * NULL as on a stream.  Same restrictions as the stream parser (no DTD,
 * comments, PIs or entities; UTF-8 only) and its default depth and
 * attribute limits; the whole input is the size limit.  Returns 0 or an
 * XD_EXML_* code; *out is set only on success. */
int xd_el_parse(const char *xml, size_t len, xd_el_t **out);
int xd_stanza_parse(const char *xml, size_t len, const char *content_ns, xd_stanza_t **out);

/* ---- Readers (builders and frozen trees) ------------------------------- */

const char *xd_el_name(const xd_el_t *el);   /* local name */
const char *xd_el_ns(const xd_el_t *el);     /* URI, or NULL: content namespace */
const char *xd_el_prefix(const xd_el_t *el); /* "stream", or NULL when unprefixed */

/* True when `el` is named `name` in namespace `ns`; NULL name or ns = any,
 * as in xd_el_child.  (The content namespace: xd_el_ns(el) == NULL.) */
bool xd_el_is(const xd_el_t *el, const char *name, const char *ns);

/* The parent element, or NULL at the root. */
const xd_el_t *xd_el_parent(const xd_el_t *el);

/* The value of attribute `name` as written ("to", "xml:lang"), or NULL. */
const char *xd_el_attr(const xd_el_t *el, const char *name);

/* The value of the attribute with local name `local` in namespace `ns`
 * (NULL = unqualified), or NULL. */
const char *xd_el_attr_ns(const xd_el_t *el, const char *local, const char *ns);

/* Attributes in document order: for i < xd_el_attr_count(el),
 * xd_el_attr_at() returns the value and sets *name (and *ns if not NULL). */
size_t xd_el_attr_count(const xd_el_t *el);
const char *xd_el_attr_at(const xd_el_t *el, size_t i, const char **name, const char **ns);

/* The first child element named `name` in `ns`; NULL name = any name.
 * `ns` NULL = any namespace (use xd_el_is to test for the content one). */
const xd_el_t *xd_el_child(const xd_el_t *el, const char *name, const char *ns);

/* Child elements in order (text nodes skipped):
 *     for (const xd_el_t *c = xd_el_first_child(el); c; c = xd_el_next(c)) … */
const xd_el_t *xd_el_first_child(const xd_el_t *el);
const xd_el_t *xd_el_next(const xd_el_t *el);

/* Number of child elements. */
size_t xd_el_child_count(const xd_el_t *el);

/* The concatenation of the element's direct text children ("" if none),
 * NUL-terminated, valid as long as the tree.  xd_el_text_len gives its
 * length without a strlen. */
const char *xd_el_text(const xd_el_t *el);
size_t xd_el_text_len(const xd_el_t *el);

/* The text of the first child `name` in `ns` (NULL ns = any), or NULL when
 * there is no such child:  xd_el_child_text(msg, "body", NULL). */
const char *xd_el_child_text(const xd_el_t *el, const char *name, const char *ns);

/* ---- Serialization ----------------------------------------------------- */

/* Serializes `el` and its subtree.  The root, when in the content namespace,
 * gets no xmlns; an element in the content namespace nested inside another
 * namespace is written with xmlns=`content_ns` (NULL: "jabber:client").
 * Text escapes & < > and CR; attribute values escape & < > " ' and TAB, LF,
 * CR as character references, so everything round-trips through a parser.
 * Returns a NUL-terminated xd_malloc'd string (free with xd_free); *len (if
 * not NULL) gets its length. */
char *xd_el_serialize(const xd_el_t *el, const char *content_ns, size_t *len);

#endif
