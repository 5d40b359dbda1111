/*
 * yaml.c — YAML text → xd_conf_node_t tree (include/xmppd/opt.h; DESIGN.md 6).
 *
 * Sits in src/core under opt.c: it knows nothing of options, only of YAML.
 * libyaml's event parser drives a small builder: a stack of open sequences
 * and mappings; a finished node is attached to the frame on top (as an item,
 * or alternately as a key and a value of a mapping).
 *
 * Invariants:
 *   - every node belongs to exactly one document, which lists it in `nodes`
 *     and frees it; an alias attaches the anchored node itself, so a node may
 *     have several parents but is freed once;
 *   - line and column are 1-based (libyaml's marks are 0-based);
 *   - mapping keys are scalars and unique (compared as bytes);
 *   - a mapping of more than YML_INDEX_MIN keys is indexed: the document's
 *     `index` maps (mapping node, key) to the key's position, so building
 *     a mapping (its duplicate check) and every lookup in it
 *     (xd_conf_map_get/_key) take constant time whatever its size, and a
 *     parse is linear in the size of the file;
 *   - the expanded size of the tree (aliases counted as often as they are
 *     used) is at most YML_MAX_WEIGHT and nesting at most YML_MAX_DEPTH, so
 *     recursive walkers stay bounded whatever the input.
 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/map.h"
#include "xmppd/opt.h"

#define YML_MAX_DEPTH 64          /* nested collections */
#define YML_MAX_WEIGHT 1000000u   /* nodes after alias expansion */
#define YML_MAX_FILE (16u << 20)  /* bytes of one configuration file */
#define YML_INDEX_MIN 8           /* mappings with more keys are looked up through the index */

struct xd_conf_doc {
    _Atomic unsigned refs;   /* references: the parser's caller, kept subtrees */
    char *file;              /* file name used in every node's location */
    xd_conf_node_t **nodes;  /* every node of the document, for freeing */
    size_t nnodes;           /* used entries of nodes */
    size_t cap;              /* allocated entries of nodes */
    xd_conf_node_t *root;    /* the document's node (a mapping when empty) */
    xd_map_t index;          /* (mapping node address, key bytes) → position + 1, for the
                                mappings of more than YML_INDEX_MIN keys; immutable after
                                the parse */
};

typedef struct yml_frame {
    xd_conf_node_t *node;    /* the open sequence or mapping */
    size_t cap;              /* allocated entries of node->items / node->keys */
    size_t weight;           /* expanded size so far, this node included */
    char *anchor;            /* anchor to register when it closes, or NULL */
    xd_conf_node_t *key;     /* MAP: the key waiting for its value, or NULL */
} yml_frame_t;

typedef struct yml_anchor {
    char *name;              /* anchor name */
    xd_conf_node_t *node;    /* the anchored node */
    size_t weight;           /* its expanded size */
} yml_anchor_t;

typedef struct yml_builder {
    xd_conf_doc_t *doc;      /* the document being built */
    yml_frame_t stack[YML_MAX_DEPTH]; /* open collections */
    unsigned depth;          /* used frames */
    yml_anchor_t *anchors;   /* anchors seen so far */
    size_t nanchors;         /* used entries */
    size_t anchors_cap;      /* allocated entries */
    char *err;               /* first error, malloc'd */
} yml_builder_t;

static char yml_empty[] = "";

static void
yml_fail(yml_builder_t *b, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
yml_fail(yml_builder_t *b, unsigned line, unsigned col, const char *fmt, ...)
{
    if (b->err)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(b->doc->file) + strlen(msg) + 32;
    b->err = xd_malloc(n);
    snprintf(b->err, n, "%s:%u:%u: %s", b->doc->file, line, col, msg);
}

static xd_conf_node_t *
yml_node_new(yml_builder_t *b, xd_conf_kind kind, const yaml_mark_t *mark)
{
    xd_conf_doc_t *doc = b->doc;
    if (doc->nnodes == doc->cap) {
        doc->cap = doc->cap ? doc->cap * 2 : 32;
        doc->nodes = xd_realloc(doc->nodes, doc->cap * sizeof *doc->nodes);
    }
    xd_conf_node_t *n = xd_new(xd_conf_node_t);
    n->kind = kind;
    n->doc = doc;
    n->file = doc->file;
    n->line = (unsigned)mark->line + 1;
    n->col = (unsigned)mark->column + 1;
    n->value = yml_empty;
    doc->nodes[doc->nnodes++] = n;
    return n;
}

static void
yml_node_free(xd_conf_node_t *n)
{
    if (n->value != yml_empty)
        xd_free((char *)n->value);
    xd_free(n->keys);
    xd_free(n->items);
    xd_free(n);
}

static void
yml_register_anchor(yml_builder_t *b, char *name, xd_conf_node_t *node, size_t weight)
{
    if (b->nanchors == b->anchors_cap) {
        b->anchors_cap = b->anchors_cap ? b->anchors_cap * 2 : 8;
        b->anchors = xd_realloc(b->anchors, b->anchors_cap * sizeof *b->anchors);
    }
    /* A later anchor of the same name shadows an earlier one (YAML 1.2 3.2.2.2). */
    b->anchors[b->nanchors++] = (yml_anchor_t){ name, node, weight };
}

/* The index key of `key` in mapping `map`: the node's address in hex, then the key's bytes
 * (xd_map keys are C strings, so a key holding a NUL byte is never indexed). */
static xd_str_t
yml_index_key(const xd_conf_node_t *map, const char *key, size_t len, char *buf, size_t cap,
              char **heap)
{
    size_t n = 2 * sizeof(uintptr_t) + 1 + len;
    char *p = n < cap ? buf : (*heap = xd_malloc(n + 1));
    snprintf(p, n + 1, "%0*jx:", (int)(2 * sizeof(uintptr_t)), (uintmax_t)(uintptr_t)map);
    memcpy(p + 2 * sizeof(uintptr_t) + 1, key, len);
    return (xd_str_t){ p, n };
}

static void
yml_index_put(xd_conf_doc_t *doc, const xd_conf_node_t *map, size_t pos)
{
    const xd_conf_node_t *k = map->keys[pos];
    if (memchr(k->value, '\0', k->len))
        return; /* found by yml_map_find's scan */
    char buf[128], *heap = NULL;
    xd_map_put(&doc->index, yml_index_key(map, k->value, k->len, buf, sizeof buf, &heap),
               (void *)(uintptr_t)(pos + 1));
    xd_free(heap);
}

/* Position of the key of `len` bytes in `map`, or -1. */
static ssize_t
yml_map_find(const xd_conf_node_t *map, const char *key, size_t len)
{
    if (map->count <= YML_INDEX_MIN || memchr(key, '\0', len)) {
        for (size_t i = 0; i < map->count; i++)
            if (map->keys[i]->len == len && memcmp(map->keys[i]->value, key, len) == 0)
                return (ssize_t)i;
        return -1;
    }
    char buf[128], *heap = NULL;
    void *v = xd_map_get(&map->doc->index, yml_index_key(map, key, len, buf, sizeof buf, &heap));
    xd_free(heap);
    return v ? (ssize_t)((uintptr_t)v - 1) : -1;
}

static void
yml_push_item(xd_conf_node_t *parent, size_t *cap, xd_conf_node_t *key, xd_conf_node_t *item)
{
    if (parent->count == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        parent->items = xd_realloc(parent->items, *cap * sizeof *parent->items);
        if (parent->kind == XD_CONF_MAP)
            parent->keys = xd_realloc(parent->keys, *cap * sizeof *parent->keys);
    }
    if (parent->kind == XD_CONF_MAP)
        parent->keys[parent->count] = key;
    parent->items[parent->count++] = item;
    if (parent->kind != XD_CONF_MAP || parent->count <= YML_INDEX_MIN)
        return;
    if (parent->count == YML_INDEX_MIN + 1) /* from now on looked up by the index */
        for (size_t i = 0; i < YML_INDEX_MIN; i++)
            yml_index_put(parent->doc, parent, i);
    yml_index_put(parent->doc, parent, parent->count - 1);
}

/* Attaches a finished node of expanded size `weight` to the open frame. */
static void
yml_attach(yml_builder_t *b, xd_conf_node_t *node, size_t weight)
{
    if (b->depth == 0) {
        b->doc->root = node;
        return;
    }
    yml_frame_t *f = &b->stack[b->depth - 1];
    f->weight += weight;
    if (f->weight > YML_MAX_WEIGHT) {
        yml_fail(b, node->line, node->col,
                 "document too large after alias expansion (more than %u nodes)",
                 YML_MAX_WEIGHT);
        return;
    }
    if (f->node->kind == XD_CONF_SEQ) {
        yml_push_item(f->node, &f->cap, NULL, node);
        return;
    }
    if (!f->key) {
        if (node->kind != XD_CONF_SCALAR) {
            yml_fail(b, node->line, node->col, "mapping keys must be scalars, not %s",
                     xd_conf_kind_name(node));
            return;
        }
        ssize_t at = yml_map_find(f->node, node->value, node->len);
        const xd_conf_node_t *prev = at >= 0 ? f->node->keys[at] : NULL;
        if (prev) {
            yml_fail(b, node->line, node->col, "duplicate key \"%s\" (first at line %u column %u)",
                     node->value, prev->line, prev->col);
            return;
        }
        f->key = node;
        return;
    }
    yml_push_item(f->node, &f->cap, f->key, node);
    f->key = NULL;
}

static char *
yml_take_anchor(yaml_char_t *anchor)
{
    return anchor ? xd_strdup((const char *)anchor) : NULL;
}

/* One event; returns false once the builder failed. */
static bool
yml_event(yml_builder_t *b, yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        xd_conf_node_t *n = yml_node_new(b, XD_CONF_SCALAR, &ev->start_mark);
        n->len = ev->data.scalar.length;
        n->value = xd_strndup((const char *)ev->data.scalar.value, n->len);
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE &&
                    ev->data.scalar.style != YAML_ANY_SCALAR_STYLE;
        if (ev->data.scalar.anchor)
            yml_register_anchor(b, yml_take_anchor(ev->data.scalar.anchor), n, 1);
        yml_attach(b, n, 1);
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        if (b->depth == YML_MAX_DEPTH) {
            yml_fail(b, (unsigned)ev->start_mark.line + 1, (unsigned)ev->start_mark.column + 1,
                     "nesting deeper than %d levels", YML_MAX_DEPTH);
            break;
        }
        bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
        yaml_char_t *anchor = seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;
        xd_conf_node_t *n = yml_node_new(b, seq ? XD_CONF_SEQ : XD_CONF_MAP, &ev->start_mark);
        b->stack[b->depth++] = (yml_frame_t){ .node = n, .weight = 1,
                                              .anchor = yml_take_anchor(anchor) };
        break;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        XD_ASSERT(b->depth > 0);
        yml_frame_t f = b->stack[--b->depth];
        if (f.anchor)
            yml_register_anchor(b, f.anchor, f.node, f.weight);
        yml_attach(b, f.node, f.weight);
        break;
    }
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        yml_anchor_t *a = NULL;
        for (size_t i = b->nanchors; i-- > 0;) {
            if (strcmp(b->anchors[i].name, name) == 0) {
                a = &b->anchors[i];
                break;
            }
        }
        if (!a) {
            yml_fail(b, (unsigned)ev->start_mark.line + 1, (unsigned)ev->start_mark.column + 1,
                     "unknown anchor \"%s\" (an alias must follow its complete anchored node)",
                     name);
            break;
        }
        yml_attach(b, a->node, a->weight);
        break;
    }
    default:
        break;
    }
    return b->err == NULL;
}

static void
yml_parser_error(yml_builder_t *b, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->context)
        yml_fail(b, (unsigned)p->problem_mark.line + 1, (unsigned)p->problem_mark.column + 1,
                 "%s (%s at line %u column %u)", problem, p->context,
                 (unsigned)p->context_mark.line + 1, (unsigned)p->context_mark.column + 1);
    else
        yml_fail(b, (unsigned)p->problem_mark.line + 1, (unsigned)p->problem_mark.column + 1,
                 "%s", problem);
}

int
xd_conf_parse_string(const char *name, const char *text, size_t len, xd_conf_doc_t **out,
                     char **err)
{
    *out = NULL;
    if (err)
        *err = NULL;
    yml_builder_t b = { 0 };
    b.doc = xd_new(xd_conf_doc_t);
    atomic_init(&b.doc->refs, 1);
    b.doc->file = xd_strdup(name ? name : "<string>");

    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        XD_ASSERT(!"yaml_parser_initialize");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);

    unsigned docs = 0;
    bool done = false;
    while (!done && !b.err) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            yml_parser_error(&b, &p);
            break;
        }
        if (ev.type == YAML_DOCUMENT_START_EVENT && ++docs > 1)
            yml_fail(&b, (unsigned)ev.start_mark.line + 1, (unsigned)ev.start_mark.column + 1,
                     "more than one YAML document (a configuration is one document)");
        else if (ev.type == YAML_STREAM_END_EVENT)
            done = true;
        else
            yml_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);

    /* The stack is non-empty only after an error: its nodes are in doc->nodes. */
    for (unsigned i = 0; i < b.depth; i++)
        xd_free(b.stack[i].anchor);
    for (size_t i = 0; i < b.nanchors; i++)
        xd_free(b.anchors[i].name);
    xd_free(b.anchors);

    if (b.err) {
        if (err)
            *err = b.err;
        else
            xd_free(b.err);
        xd_conf_doc_unref(b.doc);
        return XD_ECONF_SYNTAX;
    }
    if (!b.doc->root) {
        static const yaml_mark_t start = { 0, 0, 0 };
        b.doc->root = yml_node_new(&b, XD_CONF_MAP, &start);
    }
    *out = b.doc;
    return 0;
}

int
xd_conf_parse_file(const char *path, xd_conf_doc_t **out, char **err)
{
    *out = NULL;
    if (err)
        *err = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = 0;
    char *buf = NULL;
    size_t len = 0;
    struct stat st;
    if (fd < 0) {
        rc = -errno;
    } else if (fstat(fd, &st) != 0) {
        rc = -errno;
    } else if (st.st_size > (off_t)YML_MAX_FILE) {
        rc = XD_ELIMIT;
    } else {
        buf = xd_malloc((size_t)st.st_size + 1);
        while (len < (size_t)st.st_size) {
            ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = n < 0 ? -errno : 0;
                break;
            }
            len += (size_t)n;
        }
    }
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        if (err) {
            const char *why = rc == XD_ELIMIT ? "file larger than 16 MiB" : strerror(-rc);
            size_t n = strlen(path) + strlen(why) + 32;
            *err = xd_malloc(n);
            snprintf(*err, n, "%s: cannot read: %s", path, why);
        }
        xd_free(buf);
        return rc;
    }
    rc = xd_conf_parse_string(path, buf ? buf : "", len, out, err);
    xd_free(buf);
    return rc;
}

xd_conf_doc_t *
xd_conf_doc_ref(xd_conf_doc_t *doc)
{
    if (doc)
        atomic_fetch_add_explicit(&doc->refs, 1, memory_order_relaxed);
    return doc;
}

void
xd_conf_doc_unref(xd_conf_doc_t *doc)
{
    if (!doc || atomic_fetch_sub_explicit(&doc->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < doc->nnodes; i++)
        yml_node_free(doc->nodes[i]);
    xd_free(doc->nodes);
    xd_map_free(&doc->index, NULL);
    xd_free(doc->file);
    xd_free(doc);
}

const xd_conf_node_t *
xd_conf_doc_root(const xd_conf_doc_t *doc)
{
    return doc->root;
}

const xd_conf_node_t *
xd_conf_map_key(const xd_conf_node_t *map, const char *key)
{
    if (!map || map->kind != XD_CONF_MAP)
        return NULL;
    ssize_t i = yml_map_find(map, key, strlen(key));
    return i >= 0 ? map->keys[i] : NULL;
}

const xd_conf_node_t *
xd_conf_map_get(const xd_conf_node_t *map, const char *key)
{
    if (!map || map->kind != XD_CONF_MAP)
        return NULL;
    ssize_t i = yml_map_find(map, key, strlen(key));
    return i >= 0 ? map->items[i] : NULL;
}

bool
xd_conf_is_null(const xd_conf_node_t *node)
{
    if (!node || node->kind != XD_CONF_SCALAR || node->quoted)
        return false;
    const char *v = node->value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

const char *
xd_conf_kind_name(const xd_conf_node_t *node)
{
    if (!node || xd_conf_is_null(node))
        return "null";
    switch (node->kind) {
    case XD_CONF_SCALAR: return "a scalar";
    case XD_CONF_SEQ: return "a sequence";
    case XD_CONF_MAP: return "a mapping";
    }
    return "?";
}
