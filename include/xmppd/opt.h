/*
 * opt.h — configuration node trees and typed option tables (STYLE.md 3.4, DESIGN.md 6).
 *
 * Two layers:
 *
 *   1. A YAML file (or string) is parsed once into an immutable tree of
 *      xd_conf_node_t: scalars, sequences and mappings, each carrying the
 *      file name and the 1-based line and column of where it starts, as an
 *      editor shows them.  Duplicate keys, non-scalar keys and more than one
 *      document are errors.  Anchors and aliases are supported: an alias is
 *      the anchored node itself, shared (the tree is a DAG), and the expanded
 *      size of a document is capped so an "alias bomb" cannot make walkers
 *      run for ever.  The tree lives in a reference-counted xd_conf_doc_t, so
 *      a subtree can be kept (module options parsed later, XD_OPT_NODE).
 *
 *   2. An option table (xd_opt_t[], ended by XD_OPT_END) describes a C
 *      struct: for each YAML key its type, the offsetof of its field, its
 *      default as YAML text (parsed by the same code as the file, so a bad
 *      default fails a unit test), its range and one paragraph of docs.
 *      xd_opt_parse() fills the struct from a mapping node; tools/gen-docs
 *      prints the same tables as docs/configuration.md.
 *
 * Errors read   FILE:LINE:COL: PATH: MESSAGE   one per line, for example
 *
 *   xmppd.yml:41:7: modules.mod_ping.ping_interval: invalid duration "6x" (expected a duration such as 60s)
 *
 * where PATH is the chain of keys from the root (sequence items as [i],
 * counted from 0) and LINE:COL is where the offending node starts.  A parse
 * collects every error it finds before it fails.
 *
 * Field types per option type (the struct field at `offset`):
 *   BOOL bool · INT int · DURATION uint64_t milliseconds · SIZE size_t bytes ·
 *   STRING, PATH char * (NULL = unset) · ENUM, LOGLEVEL int ·
 *   STRING_LIST xd_strlist_t · WORKERS unsigned ·
 *   NODE const xd_conf_node_t * (holds its document) ·
 *   SUB the sub-struct itself, embedded · SUB_LIST xd_optlist_t ·
 *   MAP {T *items; size_t count;} (xd_optmap_t's layout), see xd_opt_map_t ·
 *   INLINE the sub-struct, embedded, whose keys sit in the same mapping ·
 *   CUSTOM whatever its xd_opt_custom_t parses.
 *
 * Layers: this is src/core and knows no XMPP addresses.  Values that are
 * names to prepare (domains, JIDs) are CUSTOM types of the layer that knows
 * them (XD_OPT_JID, XD_OPT_DOMAIN, XD_OPT_DOMAIN_LIST in jid_opt.h), built
 * with the helpers below (xd_opt_get_name) around a preparation function;
 * a caller hands such parsers what they need through the context's udata.
 *
 * A key written with no value (`key:` or `key: ~`) takes the option's default.
 *
 * Thread-safety: trees and parsed structs are immutable after the parse
 * and may be read from any thread; document reference counts are atomic.
 */
#ifndef XMPPD_OPT_H
#define XMPPD_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/str.h"

/* ---- Node trees ---------------------------------------------------------------------------- */

typedef enum xd_conf_kind {
    XD_CONF_SCALAR, /* a string; `quoted` tells "yes" from yes */
    XD_CONF_SEQ,    /* items[0..count) */
    XD_CONF_MAP,    /* keys[i] (scalars) → items[i], in document order, keys unique */
} xd_conf_kind;

typedef struct xd_conf_doc xd_conf_doc_t;
typedef struct xd_conf_node xd_conf_node_t;

/* One node.  Immutable after the parse; owned by its document. */
struct xd_conf_node {
    xd_conf_kind kind;      /* scalar, sequence or mapping */
    xd_conf_doc_t *doc;     /* the document that owns this node */
    const char *file;       /* file name as given to the parser (owned by doc) */
    unsigned line;          /* 1-based line of the node's first character */
    unsigned col;           /* 1-based column of the node's first character */
    const char *value;      /* SCALAR: NUL-terminated bytes; "" for other kinds */
    size_t len;             /* SCALAR: strlen(value) unless it holds a NUL */
    bool quoted;            /* SCALAR: written in quotes or as a block (never null/bool) */
    xd_conf_node_t **keys;  /* MAP: key nodes (scalars) */
    xd_conf_node_t **items; /* SEQ: items; MAP: values */
    size_t count;           /* number of items (and keys) */
};

/* Parses one YAML document.  `name` is the file name used in locations.
 * An empty document yields an empty mapping.  On success *out is a new
 * document reference; on failure *err is a malloc'd message with the
 * location ("x.yml:3:5: mapping values are not allowed in this context")
 * and the result is XD_ECONF_SYNTAX (or -errno when the file cannot be read). */
int xd_conf_parse_file(const char *path, xd_conf_doc_t **out, char **err);
int xd_conf_parse_string(const char *name, const char *text, size_t len, xd_conf_doc_t **out,
                         char **err);

xd_conf_doc_t *xd_conf_doc_ref(xd_conf_doc_t *doc);
void xd_conf_doc_unref(xd_conf_doc_t *doc);
const xd_conf_node_t *xd_conf_doc_root(const xd_conf_doc_t *doc);

/* MAP: the value under `key`, or NULL. */
const xd_conf_node_t *xd_conf_map_get(const xd_conf_node_t *map, const char *key);
/* MAP: the key node under `key` (for error locations), or NULL. */
const xd_conf_node_t *xd_conf_map_key(const xd_conf_node_t *map, const char *key);

/* True for a plain (unquoted) ~, null, Null, NULL or empty scalar. */
bool xd_conf_is_null(const xd_conf_node_t *node);

/* "a scalar", "a sequence", "a mapping" or "null": for messages. */
const char *xd_conf_kind_name(const xd_conf_node_t *node);

/* ---- Option tables ------------------------------------------------------------------------- */

typedef enum xd_opt_type {
    XD_OPT_TYPE_END = 0,
    XD_OPT_TYPE_BOOL,
    XD_OPT_TYPE_INT,
    XD_OPT_TYPE_DURATION,
    XD_OPT_TYPE_SIZE,
    XD_OPT_TYPE_STRING,
    XD_OPT_TYPE_PATH,
    XD_OPT_TYPE_ENUM,
    XD_OPT_TYPE_STRING_LIST,
    XD_OPT_TYPE_LOGLEVEL,
    XD_OPT_TYPE_WORKERS,
    XD_OPT_TYPE_NODE,
    XD_OPT_TYPE_SUB,
    XD_OPT_TYPE_SUB_LIST,
    XD_OPT_TYPE_MAP,
    XD_OPT_TYPE_INLINE,
    XD_OPT_TYPE_CUSTOM,
} xd_opt_type;

/* Flags. */
#define XD_OPT_HOST     0x1u /* may be overridden per host in host_config */
#define XD_OPT_REQUIRED 0x2u /* the key must be present (def is then NULL) */
#define XD_OPT_SECRET   0x4u /* never printed (docs show no default, logs hide it) */
#define XD_OPT_MERGE    0x8u /* HOST: host_config adds to the global value, see config.h */
#define XD_OPT_RESTART  0x10u /* read once at start: a reload that changes it is refused */

typedef struct xd_opt_range {
    int min; /* smallest accepted value */
    int max; /* largest accepted value */
} xd_opt_range_t;

/* ENUM names: {NULL}-terminated; several names may share a value (aliases). */
typedef struct xd_opt_enum {
    const char *name; /* YAML spelling */
    int value;        /* stored value */
} xd_opt_enum_t;

typedef struct xd_strlist {
    char **items; /* owned strings */
    size_t count; /* number of items */
} xd_strlist_t;

typedef struct xd_optlist {
    void *items;  /* count structs of the SUB_LIST element size, owned */
    size_t count; /* number of items */
} xd_optlist_t;

typedef struct xd_opt xd_opt_t;
typedef struct xd_opt_ctx xd_opt_ctx_t; /* one parse: the key path and the collected errors */

/* SUB, SUB_LIST, INLINE: the nested table.  `check` (may be NULL) runs after
 * a struct was filled without error, to validate fields against each other;
 * it reports with xd_opt_error() and returns 0 or -1. */
typedef struct xd_opt_sub {
    const xd_opt_t *table;                                            /* nested option table */
    size_t size;                                                      /* sizeof the struct */
    int (*check)(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf); /* or NULL */
    const char *title;                                                /* docs section title */
} xd_opt_sub_t;

/* CUSTOM: a parser for what no generic type covers.  `parse` reads `node`
 * (never NULL: a default is parsed from its YAML text first) into `field`,
 * reporting errors with xd_opt_error() and returning 0 or -1; `free`
 * releases what it allocated and leaves the field zeroed. */
typedef struct xd_opt_custom {
    const char *type_name; /* "ACL definitions": for messages and docs */
    int (*parse)(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
    void (*free)(void *field);
} xd_opt_custom_t;

/* MAP: `{name: value, …}` where the writer picks the names (ACLs, rules,
 * modules, domains), into a field {T *items; size_t count;} (the layout of
 * xd_optmap_t) holding one item per key in document order.  An item is `size`
 * bytes and begins with `char *name`: the key as written, or as `key`
 * prepared it.  `value` parses each value into its item: its offset lies
 * within the item, so a SUB at offset 0 fills the item from a table and a
 * CUSTOM parses anything else (it must leave `name` alone).  Errors carry the
 * key as written in their path ("acl.admin.user") and the standard
 * location; the map itself reports a value that is not a mapping ("expected
 * EXPECTED, got a sequence"), a reserved name ("\"all\" is a built-in ACL
 * and cannot be redefined") and two keys that prepare to the same name
 * ("host \"B.example\" appears twice (also at line 3 column 3)"). */
typedef struct xd_opt_map {
    const char *type_name;       /* "ACL definitions": docs (Type column) */
    const char *expected;        /* "a mapping of ACL names to definitions": messages */
    const char *noun;            /* "ACL": messages about one key */
    size_t size;                 /* sizeof one item */
    const xd_opt_t *value;       /* how one value is parsed; offset within the item */
    const char *const *reserved; /* names that may not be defined ({NULL}-ended), or NULL */
    /* Prepares (and checks) a key into *out (xd_free), reporting with
     * xd_opt_error; 0 or -1.  NULL: the key as written. */
    int (*key)(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out);
} xd_opt_map_t;

/* The generic view of a MAP field; declare the field with the item type. */
typedef struct xd_optmap {
    void *items;  /* count items of the map's size, owned, in document order */
    size_t count; /* number of items */
} xd_optmap_t;

struct xd_opt {
    const char *name;     /* YAML key, "ping_interval" */
    xd_opt_type type;     /* how the value is parsed and stored */
    size_t offset;        /* offsetof(conf struct, field) */
    const char *def;      /* default as YAML text, or NULL: field stays zero/NULL */
    const void *range;    /* INT xd_opt_range_t, ENUM xd_opt_enum_t[], SUB* xd_opt_sub_t, MAP
                             xd_opt_map_t, CUSTOM xd_opt_custom_t */
    const char *doc;      /* one paragraph of Markdown for docs/configuration.md */
    unsigned flags;       /* XD_OPT_HOST, XD_OPT_REQUIRED, … */
    const char *def_doc;  /* docs text for a default computed in code, or NULL */
};

/* Constructor macros: T is the conf struct type, f its field. */
#define XD_OPT_(key, ty, T, f, d, r, dc, fl) \
    { .name = (key), .type = (ty), .offset = offsetof(T, f), .def = (d), .range = (r), \
      .doc = (dc), .flags = (fl) }
/* Every field spelled out: flags (XD_OPT_HOST …) and def_doc. */
#define XD_OPT_FULL(key, ty, T, f, d, r, dc, fl, dd) \
    { .name = (key), .type = (ty), .offset = offsetof(T, f), .def = (d), .range = (r), \
      .doc = (dc), .flags = (fl), .def_doc = (dd) }
#define XD_OPT_BOOL(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_BOOL, T, f, def, NULL, doc, 0)
#define XD_OPT_INT(key, T, f, def, lo, hi, doc) \
    XD_OPT_(key, XD_OPT_TYPE_INT, T, f, def, (&(const xd_opt_range_t){ (lo), (hi) }), doc, 0)
#define XD_OPT_DURATION(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_DURATION, T, f, def, NULL, doc, 0)
#define XD_OPT_SIZE(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_SIZE, T, f, def, NULL, doc, 0)
#define XD_OPT_STRING(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_STRING, T, f, def, NULL, doc, 0)
#define XD_OPT_PATH(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_PATH, T, f, def, NULL, doc, 0)
#define XD_OPT_ENUM(key, T, f, def, names, doc) \
    XD_OPT_(key, XD_OPT_TYPE_ENUM, T, f, def, names, doc, 0)
#define XD_OPT_STRING_LIST(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_STRING_LIST, T, f, def, NULL, doc, 0)
#define XD_OPT_LOGLEVEL(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_LOGLEVEL, T, f, def, NULL, doc, 0)
#define XD_OPT_WORKERS(key, T, f, def, doc) \
    XD_OPT_(key, XD_OPT_TYPE_WORKERS, T, f, def, NULL, doc, 0)
#define XD_OPT_NODE(key, T, f, doc) \
    XD_OPT_(key, XD_OPT_TYPE_NODE, T, f, NULL, NULL, doc, 0)
#define XD_OPT_SUB(key, T, f, def, sub, doc) \
    XD_OPT_(key, XD_OPT_TYPE_SUB, T, f, def, sub, doc, 0)
#define XD_OPT_SUB_LIST(key, T, f, def, sub, doc) \
    XD_OPT_(key, XD_OPT_TYPE_SUB_LIST, T, f, def, sub, doc, 0)
#define XD_OPT_MAP(key, T, f, def, map, doc) \
    XD_OPT_(key, XD_OPT_TYPE_MAP, T, f, def, map, doc, 0)
/* The `value` of a MAP: a value of type ty (range r) parsed at offset off of the item. */
#define XD_OPT_MAP_VALUE(ty, off, r) \
    (&(const xd_opt_t){ .name = "", .type = (ty), .offset = (off), .range = (r) })
#define XD_OPT_INLINE(T, f, sub) \
    XD_OPT_("", XD_OPT_TYPE_INLINE, T, f, NULL, sub, NULL, 0)
#define XD_OPT_CUSTOM(key, T, f, def, custom, doc) \
    XD_OPT_(key, XD_OPT_TYPE_CUSTOM, T, f, def, custom, doc, 0)
#define XD_OPT_END { .name = NULL, .type = XD_OPT_TYPE_END }

/* Fills `conf` (zero-initialised by the caller) from the mapping `map`:
 * every key present is parsed, every other option gets its default; an
 * unknown key, a value of the wrong type or out of range, a missing
 * required key is an error.  `map` may be NULL or null (defaults only).
 * Returns 0, or XD_ECONF_TYPE etc. with *err a malloc'd message of one
 * line per error; then everything the parse allocated is already freed and
 * the fields are zero again. */
int xd_opt_parse(const xd_opt_t *table, const xd_conf_node_t *map, void *conf, char **err);

/* As xd_opt_parse, with `prefix` ("modules.mod_ping") before every path. */
int xd_opt_parse_at(const xd_opt_t *table, const xd_conf_node_t *map, void *conf,
                    const char *prefix, char **err);

/* Frees everything xd_opt_parse allocated in `conf` and zeroes those fields. */
void xd_opt_free(const xd_opt_t *table, void *conf);

/* Parses every default of `table` (recursively) through the production parser
 * into a scratch struct and frees it; `udata` is the context's (see
 * xd_opt_ctx_new: what the table's CUSTOM parsers expect, or NULL).  0 or an
 * error, as xd_opt_parse. */
int xd_opt_check_defaults(const xd_opt_t *table, size_t conf_size, const void *udata,
                          char **err);

/* Name of a type as shown in messages and docs ("duration", "list of strings"). */
const char *xd_opt_type_name(const xd_opt_t *opt);

/* The YAML name of an ENUM value (first listed), or NULL. */
const char *xd_opt_enum_name(const xd_opt_enum_t *names, int value);

/* ---- For CUSTOM parsers and check hooks ------------------------------------------------------ */

/* A parse context of its own, for code that runs several parses as one (config.c):
 * `prefix` may be NULL; `udata` (borrowed, may be NULL) is for the CUSTOM parsers
 * of the tables parsed in it (xd_opt_ctx_udata).  xd_opt_ctx_finish frees ctx and
 * returns 0 when no error was recorded, else the first error's code with *err the
 * message lines. */
xd_opt_ctx_t *xd_opt_ctx_new(const char *prefix, const void *udata);
int xd_opt_ctx_finish(xd_opt_ctx_t *ctx, char **err);

/* The udata given to xd_opt_ctx_new (NULL for xd_opt_parse and xd_opt_parse_at). */
const void *xd_opt_ctx_udata(const xd_opt_ctx_t *ctx);

/* Records an error at `at` (NULL: no location) under the current key path. */
void xd_opt_error(xd_opt_ctx_t *ctx, const xd_conf_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Path bookkeeping: push ".key" or "[i]" while parsing below a node. */
void xd_opt_push_key(xd_opt_ctx_t *ctx, const char *key);
void xd_opt_push_index(xd_opt_ctx_t *ctx, size_t i);
void xd_opt_pop(xd_opt_ctx_t *ctx);

/* Parses `map` with `table` into `conf` inside a running parse (nested tables in
 * CUSTOM parsers).  Returns 0 or -1 (errors recorded in ctx; conf is freed). */
int xd_opt_parse_in(xd_opt_ctx_t *ctx, const xd_opt_t *table, const xd_conf_node_t *map,
                    void *conf);

/* As xd_opt_parse_in, for layered scopes (host_config): an option missing from
 * `map` is taken from `fallback` (unless XD_OPT_MERGE), else from its default.
 * Keys of `map` are NOT checked against the table: the caller does that. */
int xd_opt_parse_layered(xd_opt_ctx_t *ctx, const xd_opt_t *table, const xd_conf_node_t *map,
                         const xd_conf_node_t *fallback, void *conf);

/* Parses one value of `opt`'s type from `node` into `field` (not offset). */
int xd_opt_parse_value(xd_opt_ctx_t *ctx, const xd_opt_t *opt, const xd_conf_node_t *node,
                       void *field);

/* Scalar helpers with the standard messages; 0 or -1 (error recorded). */
int xd_opt_get_int(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const xd_opt_range_t *range,
                   int *out);
int xd_opt_get_string(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char **out);

/* Lists for CUSTOM types: calls fn for each item of a value that is a string or
 * a list of them (one scalar counts as a list of one, null as an empty list),
 * with "[i]" pushed for sequence items; a mapping is "expected EXPECTED, got a
 * mapping".  Returns 0, or -1 when any item failed (fn records its errors). */
typedef int (*xd_opt_item_fn)(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, const char *s,
                              void *arg);
int xd_opt_each_string(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *expected,
                       xd_opt_item_fn fn, void *arg);

/* Names for CUSTOM types: a preparation function (xd_jid_prep_domain, …)
 * returns 0 with *out a new string (xd_free), or an XD_E* code. */
typedef int (*xd_opt_prep_fn)(xd_str_t in, char **out);

/* A string prepared with `prep` into *out; "invalid WHAT \"s\" (reason)" when
 * prep refuses it.  0 or -1 (error recorded). */
int xd_opt_get_name(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *what,
                    xd_opt_prep_fn prep, char **out);

/* A string or list of strings, each prepared as by xd_opt_get_name, appended
 * to `out`; with `unique`, a name already in the list is "duplicate WHAT
 * \"name\"".  A mapping is "expected a list of WHATs".  0 or -1. */
int xd_opt_get_names(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *what,
                     xd_opt_prep_fn prep, bool unique, xd_strlist_t *out);

/* Number of errors recorded so far in this parse. */
unsigned xd_opt_error_count(const xd_opt_ctx_t *ctx);

/* Low-level value parsers, shared with code that reads durations and sizes
 * from elsewhere: 0 or XD_EINVAL / XD_ECONF_RANGE. */
int xd_opt_parse_duration(const char *s, uint64_t *out_ms);
int xd_opt_parse_size(const char *s, size_t *out_bytes);

/* Compares two structs parsed with `table` (`was`, the running one, and `now`) and
 * records an error for each option flagged `flags` whose value differs: "changed
 * (was X, now Y)", X and Y left out for XD_OPT_SECRET.  Below a flagged SUB,
 * SUB_LIST or MAP every option is compared, with the path of the item that
 * differs ("listen[1].port").  The error is located at the option's node under
 * `map` (now's document), when it is written there.  CUSTOM values are not
 * compared (no generic equality).  Returns the number of options that differ. */
unsigned xd_opt_diff(xd_opt_ctx_t *ctx, const xd_opt_t *table, const void *was,
                     const void *now, const xd_conf_node_t *map, unsigned flags,
                     const char *why);

void xd_strlist_free(xd_strlist_t *l);
bool xd_strlist_contains(const xd_strlist_t *l, const char *s);

#endif
