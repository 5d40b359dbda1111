/*
 * opt.c — typed option tables: YAML node → C struct (include/xmppd/opt.h; STYLE.md 3.4).
 *
 * Sits in src/core above yaml.c.  xd_opt_parse() walks a table: for each
 * option the value under its key, or else its default (YAML text parsed by
 * xd_conf_parse_string and then by the very same code), is parsed into the
 * field at `offset`.  Nested tables (SUB, SUB_LIST, INLINE) recurse, and so do
 * MAP values: one generic parser for every `{name: value}` mapping.
 *
 * Invariants:
 *   - a parse collects every error it finds, each one line of
 *     "FILE:LINE:COL: PATH: MESSAGE", where PATH is the key path kept in
 *     the context (pushed and popped around every nested value);
 *   - a type parser that fails leaves its field either zero or holding only
 *     what xd_opt_free releases, so a failed parse is freed by the same walk
 *     as a good one and every field ends zero;
 *   - nothing here keeps a pointer into a node tree except NODE fields, which
 *     hold a reference on their document;
 *   - nothing here knows XMPP addresses (src/core sits below src/xmpp): names
 *     are prepared by functions the CUSTOM types of upper layers pass to
 *     xd_opt_get_name / xd_opt_get_names.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/opt.h"

#define OPT_MAX_PATH_DEPTH 128
#define OPT_MAX_WORKERS 256

struct xd_opt_ctx {
    char *path;                            /* "listen[0].port", NUL-terminated */
    size_t path_len;                       /* strlen(path) */
    size_t path_cap;                       /* allocated bytes */
    size_t marks[OPT_MAX_PATH_DEPTH];      /* path_len before each push */
    unsigned depth;                        /* pushes outstanding */
    unsigned overflow;                     /* pushes beyond OPT_MAX_PATH_DEPTH */
    char *errs;                            /* collected lines, '\n'-separated */
    size_t errs_len;                       /* strlen(errs) */
    unsigned nerr;                         /* number of errors */
    int code;                              /* first error's code */
    bool defaults_only;                    /* xd_opt_check_defaults: ignore REQUIRED */
    const void *udata;                     /* the creator's, for CUSTOM parsers */
};

static const xd_opt_enum_t opt_loglevels[] = {
    { "none", XD_LOG_NONE },   { "critical", XD_LOG_CRIT }, { "crit", XD_LOG_CRIT },
    { "error", XD_LOG_ERROR }, { "warning", XD_LOG_WARN },  { "warn", XD_LOG_WARN },
    { "notice", XD_LOG_NOTICE }, { "info", XD_LOG_INFO },   { "debug", XD_LOG_DEBUG },
    { NULL, 0 },
};

/* ---- Context: path and errors ---------------------------------------------------------------- */

static void
opt_path_append(xd_opt_ctx_t *ctx, const char *s, size_t n)
{
    if (ctx->path_len + n + 1 > ctx->path_cap) {
        ctx->path_cap = (ctx->path_len + n + 1) * 2;
        ctx->path = xd_realloc(ctx->path, ctx->path_cap);
    }
    memcpy(ctx->path + ctx->path_len, s, n);
    ctx->path_len += n;
    ctx->path[ctx->path_len] = '\0';
}

xd_opt_ctx_t *
xd_opt_ctx_new(const char *prefix, const void *udata)
{
    xd_opt_ctx_t *ctx = xd_new(xd_opt_ctx_t);
    ctx->udata = udata;
    opt_path_append(ctx, "", 0);
    if (prefix)
        opt_path_append(ctx, prefix, strlen(prefix));
    return ctx;
}

int
xd_opt_ctx_finish(xd_opt_ctx_t *ctx, char **err)
{
    int rc = ctx->nerr ? (ctx->code ? ctx->code : XD_ECONF_TYPE) : 0;
    if (err)
        *err = NULL;
    if (rc && err) {
        *err = ctx->errs;
        ctx->errs = NULL;
    }
    xd_free(ctx->errs);
    xd_free(ctx->path);
    xd_free(ctx);
    return rc;
}

const void *
xd_opt_ctx_udata(const xd_opt_ctx_t *ctx)
{
    return ctx->udata;
}

unsigned
xd_opt_error_count(const xd_opt_ctx_t *ctx)
{
    return ctx->nerr;
}

void
xd_opt_push_key(xd_opt_ctx_t *ctx, const char *key)
{
    if (ctx->depth == OPT_MAX_PATH_DEPTH) {
        ctx->overflow++;
        return;
    }
    ctx->marks[ctx->depth++] = ctx->path_len;
    if (ctx->path_len > 0)
        opt_path_append(ctx, ".", 1);
    opt_path_append(ctx, key, strlen(key));
}

void
xd_opt_push_index(xd_opt_ctx_t *ctx, size_t i)
{
    if (ctx->depth == OPT_MAX_PATH_DEPTH) {
        ctx->overflow++;
        return;
    }
    ctx->marks[ctx->depth++] = ctx->path_len;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "[%zu]", i);
    opt_path_append(ctx, buf, (size_t)n);
}

void
xd_opt_pop(xd_opt_ctx_t *ctx)
{
    if (ctx->overflow) {
        ctx->overflow--;
        return;
    }
    XD_ASSERT(ctx->depth > 0);
    ctx->path_len = ctx->marks[--ctx->depth];
    ctx->path[ctx->path_len] = '\0';
}

static void
opt_verror(xd_opt_ctx_t *ctx, int code, const xd_conf_node_t *at, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    char loc[512] = "";
    if (at)
        snprintf(loc, sizeof loc, "%s:%u:%u: ", at->file, at->line, at->col);
    const char *path = ctx->path_len ? ctx->path : "(top level)";
    size_t need = strlen(loc) + strlen(path) + strlen(msg) + 4;
    ctx->errs = xd_realloc(ctx->errs, ctx->errs_len + need + 1);
    int n = snprintf(ctx->errs + ctx->errs_len, need + 1, "%s%s%s: %s", ctx->nerr ? "\n" : "",
                     loc, path, msg);
    ctx->errs_len += (size_t)n;
    if (!ctx->nerr)
        ctx->code = code;
    ctx->nerr++;
}

static void
opt_error(xd_opt_ctx_t *ctx, int code, const xd_conf_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
opt_error(xd_opt_ctx_t *ctx, int code, const xd_conf_node_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    opt_verror(ctx, code, at, fmt, ap);
    va_end(ap);
}

void
xd_opt_error(xd_opt_ctx_t *ctx, const xd_conf_node_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    opt_verror(ctx, XD_ECONF_TYPE, at, fmt, ap);
    va_end(ap);
}

/* ---- Names and phrases --------------------------------------------------------------------- */

const char *
xd_opt_type_name(const xd_opt_t *opt)
{
    switch (opt->type) {
    case XD_OPT_TYPE_END: return "end";
    case XD_OPT_TYPE_BOOL: return "boolean";
    case XD_OPT_TYPE_INT: return "integer";
    case XD_OPT_TYPE_DURATION: return "duration";
    case XD_OPT_TYPE_SIZE: return "size";
    case XD_OPT_TYPE_STRING: return "string";
    case XD_OPT_TYPE_PATH: return "path";
    case XD_OPT_TYPE_ENUM: return "enum";
    case XD_OPT_TYPE_STRING_LIST: return "list of strings";
    case XD_OPT_TYPE_LOGLEVEL: return "log level";
    case XD_OPT_TYPE_WORKERS: return "workers";
    case XD_OPT_TYPE_NODE: return "any YAML";
    case XD_OPT_TYPE_SUB: return "mapping";
    case XD_OPT_TYPE_SUB_LIST: return "list of mappings";
    case XD_OPT_TYPE_MAP:
        return opt->range ? ((const xd_opt_map_t *)opt->range)->type_name : "mapping";
    case XD_OPT_TYPE_INLINE: return "inline";
    case XD_OPT_TYPE_CUSTOM:
        return opt->range ? ((const xd_opt_custom_t *)opt->range)->type_name : "custom";
    }
    return "?";
}

/* "a duration such as 60s": what a message says is expected. */
static const char *
opt_expected(const xd_opt_t *opt)
{
    switch (opt->type) {
    case XD_OPT_TYPE_BOOL: return "true or false";
    case XD_OPT_TYPE_INT: return "an integer";
    case XD_OPT_TYPE_DURATION: return "a duration such as 60s";
    case XD_OPT_TYPE_SIZE: return "a size such as 64KB";
    case XD_OPT_TYPE_STRING: return "a string";
    case XD_OPT_TYPE_PATH: return "a path";
    case XD_OPT_TYPE_ENUM: return "a name";
    case XD_OPT_TYPE_STRING_LIST: return "a string or a list of strings";
    case XD_OPT_TYPE_LOGLEVEL: return "a log level";
    case XD_OPT_TYPE_WORKERS: return "auto or a number from 1 to 256";
    case XD_OPT_TYPE_SUB: return "a mapping";
    case XD_OPT_TYPE_SUB_LIST: return "a list of mappings";
    case XD_OPT_TYPE_MAP: return ((const xd_opt_map_t *)opt->range)->expected;
    default: return xd_opt_type_name(opt);
    }
}

const char *
xd_opt_enum_name(const xd_opt_enum_t *names, int value)
{
    for (const xd_opt_enum_t *e = names; e && e->name; e++)
        if (e->value == value)
            return e->name;
    return NULL;
}

/* ---- Low-level value parsers ----------------------------------------------------------------- */

int
xd_opt_parse_duration(const char *s, uint64_t *out_ms)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        { "ms", 1 },         { "msec", 1 },        { "millisecond", 1 }, { "milliseconds", 1 },
        { "s", 1000 },       { "sec", 1000 },      { "second", 1000 },   { "seconds", 1000 },
        { "m", 60000 },      { "min", 60000 },     { "minute", 60000 },  { "minutes", 60000 },
        { "h", 3600000 },    { "hour", 3600000 },  { "hours", 3600000 },
        { "d", 86400000 },   { "day", 86400000 },  { "days", 86400000 },
    };
    if (!isdigit((unsigned char)s[0]))
        return XD_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return XD_ECONF_RANGE;
    while (*end == ' ')
        end++;
    uint64_t mult = 1000; /* a plain number is seconds */
    if (*end) {
        mult = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcasecmp(end, units[i].unit) == 0)
                mult = units[i].ms;
        if (!mult)
            return XD_EINVAL;
    }
    if (v > UINT64_MAX / mult)
        return XD_ECONF_RANGE;
    *out_ms = (uint64_t)v * mult;
    return 0;
}

int
xd_opt_parse_size(const char *s, size_t *out_bytes)
{
    static const struct { const char *unit; unsigned shift; } units[] = {
        { "b", 0 },   { "k", 10 },  { "kb", 10 }, { "kib", 10 }, { "m", 20 },
        { "mb", 20 }, { "mib", 20 }, { "g", 30 }, { "gb", 30 },  { "gib", 30 },
    };
    if (!isdigit((unsigned char)s[0]))
        return XD_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return XD_ECONF_RANGE;
    while (*end == ' ')
        end++;
    unsigned shift = 0;
    if (*end) {
        bool found = false;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            if (strcasecmp(end, units[i].unit) == 0) {
                shift = units[i].shift;
                found = true;
            }
        }
        if (!found)
            return XD_EINVAL;
    }
    if (v > (SIZE_MAX >> shift))
        return XD_ECONF_RANGE;
    *out_bytes = (size_t)v << shift;
    return 0;
}

/* ---- Scalar helpers -------------------------------------------------------------------------- */

/* A scalar of the expected kind, else an error naming what was expected. */
static bool
opt_want_scalar(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *expected)
{
    if (node->kind == XD_CONF_SCALAR)
        return true;
    opt_error(ctx, XD_ECONF_TYPE, node, "expected %s, got %s", expected, xd_conf_kind_name(node));
    return false;
}

static bool
opt_value_ok(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *what)
{
    if (strlen(node->value) != node->len) {
        opt_error(ctx, XD_ECONF_TYPE, node, "invalid %s (contains a NUL byte)", what);
        return false;
    }
    return true;
}

int
xd_opt_get_string(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char **out)
{
    if (!opt_want_scalar(ctx, node, "a string") || xd_conf_is_null(node)) {
        if (node->kind == XD_CONF_SCALAR)
            opt_error(ctx, XD_ECONF_TYPE, node, "expected a string, got null");
        return -1;
    }
    if (!opt_value_ok(ctx, node, "string"))
        return -1;
    *out = node->value;
    return 0;
}

int
xd_opt_get_int(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const xd_opt_range_t *range,
               int *out)
{
    if (!opt_want_scalar(ctx, node, "an integer"))
        return -1;
    const char *s = node->value;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || isspace((unsigned char)*s) || *end || errno == ERANGE || v < INT_MIN ||
        v > INT_MAX) {
        opt_error(ctx, XD_ECONF_TYPE, node, "invalid integer \"%s\" (expected an integer%s)", s,
                  errno == ERANGE || (*s && !*end) ? " that fits in 32 bits" : "");
        return -1;
    }
    if (range && (v < range->min || v > range->max)) {
        opt_error(ctx, XD_ECONF_RANGE, node, "%ld is out of range (expected %d..%d)", v,
                  range->min, range->max);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int
opt_get_bool(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on" };
    static const char *const no[] = { "false", "no", "off" };
    if (!opt_want_scalar(ctx, node, "true or false"))
        return -1;
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(node->value, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(node->value, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    opt_error(ctx, XD_ECONF_TYPE, node, "invalid boolean \"%s\" (expected true or false)",
              node->value);
    return -1;
}

static int
opt_get_enum(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const xd_opt_enum_t *names,
             const char *what, int *out)
{
    if (!opt_want_scalar(ctx, node, "a name"))
        return -1;
    for (const xd_opt_enum_t *e = names; e->name; e++) {
        if (strcmp(node->value, e->name) == 0) {
            *out = e->value;
            return 0;
        }
    }
    char list[512];
    size_t n = 0;
    list[0] = '\0';
    for (const xd_opt_enum_t *e = names; e->name && n < sizeof list - 64; e++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", e == names ? "" : ", ", e->name);
    opt_error(ctx, XD_ECONF_TYPE, node, "invalid %s \"%s\" (expected one of: %s)", what,
              node->value, list);
    return -1;
}

int
xd_opt_get_name(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *what,
                xd_opt_prep_fn prep, char **out)
{
    const char *s;
    if (xd_opt_get_string(ctx, node, &s) != 0)
        return -1;
    char *d = NULL;
    int rc = prep(xd_str_c(s), &d);
    if (rc != 0) {
        opt_error(ctx, XD_ECONF_TYPE, node, "invalid %s \"%s\" (%s)", what, s, xd_strerror(rc));
        return -1;
    }
    *out = d;
    return 0;
}

/* ---- Lists ---------------------------------------------------------------------------------- */

void
xd_strlist_free(xd_strlist_t *l)
{
    for (size_t i = 0; i < l->count; i++)
        xd_free(l->items[i]);
    xd_free(l->items);
    l->items = NULL;
    l->count = 0;
}

bool
xd_strlist_contains(const xd_strlist_t *l, const char *s)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i], s) == 0)
            return true;
    return false;
}

int
xd_opt_each_string(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *expected,
                   xd_opt_item_fn fn, void *arg)
{
    if (xd_conf_is_null(node))
        return 0;
    if (node->kind == XD_CONF_MAP) {
        opt_error(ctx, XD_ECONF_TYPE, node, "expected %s, got a mapping", expected);
        return -1;
    }
    bool seq = node->kind == XD_CONF_SEQ;
    size_t n = seq ? node->count : 1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const xd_conf_node_t *it = seq ? node->items[i] : node;
        if (seq)
            xd_opt_push_index(ctx, i);
        const char *s;
        if (xd_opt_get_string(ctx, it, &s) != 0 || fn(ctx, it, s, arg) != 0)
            rc = -1;
        if (seq)
            xd_opt_pop(ctx);
    }
    return rc;
}

/* Lists built here grow by doubling: the capacity is the next power of two
 * of count, so a list of n names costs O(n) copies, not O(n^2). */
static void
opt_strlist_push(xd_strlist_t *l, char *s)
{
    if ((l->count & (l->count - 1)) == 0) /* 0, 1, 2, 4, …: full */
        l->items = xd_realloc(l->items, (l->count ? 2 * l->count : 1) * sizeof *l->items);
    l->items[l->count++] = s;
}

static int
opt_string_item(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, const char *s, void *arg)
{
    (void)ctx;
    (void)it;
    opt_strlist_push(arg, xd_strdup(s));
    return 0;
}

/* What xd_opt_get_names does per item. */
typedef struct opt_names {
    const char *what;    /* "domain" */
    xd_opt_prep_fn prep; /* the preparation */
    bool unique;         /* duplicates are errors */
    xd_strlist_t *out;   /* where the names go */
    xd_map_t seen;       /* unique: the names so far (values unused) */
} opt_names_t;

static int
opt_name_item(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, const char *s, void *arg)
{
    (void)s;
    opt_names_t *n = arg;
    char *v = NULL;
    if (xd_opt_get_name(ctx, it, n->what, n->prep, &v) != 0)
        return -1;
    if (n->unique && xd_map_put(&n->seen, xd_str_c(v), n) != NULL) {
        opt_error(ctx, XD_ECONF_TYPE, it, "duplicate %s \"%s\"", n->what, v);
        xd_free(v);
        return -1;
    }
    opt_strlist_push(n->out, v);
    return 0;
}

int
xd_opt_get_names(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *what,
                 xd_opt_prep_fn prep, bool unique, xd_strlist_t *out)
{
    char expected[128];
    snprintf(expected, sizeof expected, "a list of %ss", what);
    opt_names_t n = { what, prep, unique, out, XD_MAP_INIT };
    for (size_t i = 0; unique && i < out->count; i++)
        xd_map_put(&n.seen, xd_str_c(out->items[i]), &n);
    int rc = xd_opt_each_string(ctx, node, expected, opt_name_item, &n);
    xd_map_free(&n.seen, NULL);
    return rc;
}

/* ---- Values --------------------------------------------------------------------------------- */

static int opt_table_parse(xd_opt_ctx_t *ctx, const xd_opt_t *table, const xd_conf_node_t *map,
                           char *base);
static void opt_free_value(const xd_opt_t *opt, void *field);

static unsigned
opt_auto_workers(void)
{
    unsigned n = uv_available_parallelism();
    return n < 1 ? 1 : n > OPT_MAX_WORKERS ? OPT_MAX_WORKERS : n;
}

static int
opt_parse_sub(xd_opt_ctx_t *ctx, const xd_opt_sub_t *sub, const xd_conf_node_t *node,
              void *field)
{
    unsigned before = ctx->nerr;
    if (opt_table_parse(ctx, sub->table, node, field) != 0)
        return -1;
    if (sub->check && sub->check(ctx, node, field) != 0) {
        xd_opt_free(sub->table, field);
        return -1;
    }
    return ctx->nerr == before ? 0 : -1;
}

static bool
opt_reserved(const xd_opt_map_t *m, const char *name)
{
    for (const char *const *r = m->reserved; r && *r; r++)
        if (strcmp(*r, name) == 0)
            return true;
    return false;
}

static void
opt_map_free(const xd_opt_map_t *m, xd_optmap_t *l)
{
    for (size_t i = 0; i < l->count; i++) {
        char *item = (char *)l->items + i * m->size;
        opt_free_value(m->value, item + m->value->offset);
        xd_free(*(char **)item);
    }
    xd_free(l->items);
    l->items = NULL;
    l->count = 0;
}

/* MAP: one item per key; a key or value in error leaves no item. */
static int
opt_parse_map(xd_opt_ctx_t *ctx, const xd_opt_map_t *m, const xd_conf_node_t *node,
              xd_optmap_t *l)
{
    if (xd_conf_is_null(node))
        return 0;
    if (node->kind != XD_CONF_MAP) {
        opt_error(ctx, XD_ECONF_TYPE, node, "expected %s, got %s", m->expected,
                  xd_conf_kind_name(node));
        return -1;
    }
    if (node->count == 0)
        return 0;
    l->items = xd_calloc(node->count, m->size);
    const xd_conf_node_t **keys = xd_calloc(node->count, sizeof *keys); /* per item */
    xd_map_t names = XD_MAP_INIT; /* prepared name → its item's position + 1 */
    int rc = 0;
    for (size_t i = 0; i < node->count; i++) {
        const xd_conf_node_t *k = node->keys[i];
        char *item = (char *)l->items + l->count * m->size;
        char *name = NULL;
        bool ok = false;
        unsigned before = ctx->nerr;
        xd_opt_push_key(ctx, k->value);
        if (opt_reserved(m, k->value)) {
            opt_error(ctx, XD_ECONF_TYPE, k, "\"%s\" is a built-in %s and cannot be redefined",
                      k->value, m->noun);
        } else if (m->key && m->key(ctx, k, &name) != 0) {
            if (ctx->nerr == before)
                opt_error(ctx, XD_ECONF_TYPE, k, "invalid %s \"%s\"", m->noun, k->value);
        } else {
            if (!m->key)
                name = xd_strdup(k->value);
            size_t dup = (uintptr_t)xd_map_get(&names, xd_str_c(name));
            if (dup-- > 0) {
                opt_error(ctx, XD_ECONF_TYPE, k, "%s \"%s\" appears twice (also at line %u "
                          "column %u)", m->noun, k->value, keys[dup]->line, keys[dup]->col);
            } else if (xd_opt_parse_value(ctx, m->value, node->items[i],
                                          item + m->value->offset) == 0) {
                ok = true;
            } else {
                opt_free_value(m->value, item + m->value->offset);
                memset(item, 0, m->size);
            }
        }
        if (ok) {
            *(char **)item = name;
            keys[l->count++] = k;
            xd_map_put(&names, xd_str_c(name), (void *)(uintptr_t)l->count);
        } else {
            xd_free(name);
            rc = -1;
        }
        xd_opt_pop(ctx);
    }
    xd_map_free(&names, NULL);
    xd_free(keys);
    return rc;
}

int
xd_opt_parse_value(xd_opt_ctx_t *ctx, const xd_opt_t *opt, const xd_conf_node_t *node,
                   void *field)
{
    switch (opt->type) {
    case XD_OPT_TYPE_BOOL:
        return opt_get_bool(ctx, node, field);
    case XD_OPT_TYPE_INT:
        return xd_opt_get_int(ctx, node, opt->range, field);
    case XD_OPT_TYPE_DURATION:
    case XD_OPT_TYPE_SIZE: {
        bool dur = opt->type == XD_OPT_TYPE_DURATION;
        if (!opt_want_scalar(ctx, node, opt_expected(opt)))
            return -1;
        int rc = dur ? xd_opt_parse_duration(node->value, field)
                     : xd_opt_parse_size(node->value, field);
        if (rc != 0) {
            opt_error(ctx, XD_ECONF_TYPE, node, "invalid %s \"%s\" (expected %s%s)",
                      dur ? "duration" : "size", node->value, opt_expected(opt),
                      rc == XD_ECONF_RANGE ? " that fits in 64 bits" : "");
            return -1;
        }
        return 0;
    }
    case XD_OPT_TYPE_STRING:
    case XD_OPT_TYPE_PATH: {
        char **out = field;
        if (xd_conf_is_null(node))
            return 0;
        const char *s;
        if (xd_opt_get_string(ctx, node, &s) != 0)
            return -1;
        if (opt->type == XD_OPT_TYPE_PATH && !*s) {
            opt_error(ctx, XD_ECONF_TYPE, node, "invalid path \"\" (expected a path)");
            return -1;
        }
        *out = xd_strdup(s);
        return 0;
    }
    case XD_OPT_TYPE_ENUM:
        return opt_get_enum(ctx, node, opt->range, "value", field);
    case XD_OPT_TYPE_LOGLEVEL:
        return opt_get_enum(ctx, node, opt_loglevels, "log level", field);
    case XD_OPT_TYPE_STRING_LIST:
        return xd_opt_each_string(ctx, node, opt_expected(opt), opt_string_item, field);
    case XD_OPT_TYPE_WORKERS: {
        if (node->kind == XD_CONF_SCALAR && strcmp(node->value, "auto") == 0) {
            *(unsigned *)field = opt_auto_workers();
            return 0;
        }
        if (!opt_want_scalar(ctx, node, opt_expected(opt)))
            return -1;
        char *end;
        errno = 0;
        long v = strtol(node->value, &end, 10);
        if (!isdigit((unsigned char)node->value[0]) || *end || errno || v < 1 ||
            v > OPT_MAX_WORKERS) {
            opt_error(ctx, XD_ECONF_RANGE, node, "invalid workers \"%s\" (expected %s)",
                      node->value, opt_expected(opt));
            return -1;
        }
        *(unsigned *)field = (unsigned)v;
        return 0;
    }
    case XD_OPT_TYPE_NODE:
        if (xd_conf_is_null(node))
            return 0;
        xd_conf_doc_ref(node->doc);
        *(const xd_conf_node_t **)field = node;
        return 0;
    case XD_OPT_TYPE_SUB:
        return opt_parse_sub(ctx, opt->range, node, field);
    case XD_OPT_TYPE_SUB_LIST: {
        const xd_opt_sub_t *sub = opt->range;
        xd_optlist_t *l = field;
        if (xd_conf_is_null(node))
            return 0;
        if (node->kind != XD_CONF_SEQ) {
            opt_error(ctx, XD_ECONF_TYPE, node, "expected a list of mappings, got %s",
                      xd_conf_kind_name(node));
            return -1;
        }
        if (node->count == 0)
            return 0;
        l->items = xd_calloc(node->count, sub->size);
        l->count = node->count;
        int bad = 0;
        for (size_t i = 0; i < node->count; i++) {
            xd_opt_push_index(ctx, i);
            if (opt_parse_sub(ctx, sub, node->items[i], (char *)l->items + i * sub->size) != 0)
                bad = -1;
            xd_opt_pop(ctx);
        }
        return bad;
    }
    case XD_OPT_TYPE_MAP:
        return opt_parse_map(ctx, opt->range, node, field);
    case XD_OPT_TYPE_CUSTOM: {
        const xd_opt_custom_t *c = opt->range;
        unsigned before = ctx->nerr;
        if (c->parse(ctx, node, field) != 0 || ctx->nerr != before) {
            if (ctx->nerr == before)
                opt_error(ctx, XD_ECONF_TYPE, node, "invalid %s", c->type_name);
            return -1;
        }
        return 0;
    }
    case XD_OPT_TYPE_INLINE:
    case XD_OPT_TYPE_END:
        break;
    }
    XD_ASSERT(!"xd_opt_parse_value: bad option type");
    return -1;
}

/* ---- Tables --------------------------------------------------------------------------------- */

/* True when `key` names an option of `table` or of one of its INLINE tables. */
static bool
opt_knows(const xd_opt_t *table, const char *key)
{
    for (const xd_opt_t *o = table; o->name; o++) {
        if (o->type == XD_OPT_TYPE_INLINE) {
            if (opt_knows(((const xd_opt_sub_t *)o->range)->table, key))
                return true;
        } else if (strcmp(o->name, key) == 0) {
            return true;
        }
    }
    return false;
}

static int
opt_parse_default(xd_opt_ctx_t *ctx, const xd_opt_t *opt, void *field)
{
    xd_conf_doc_t *doc = NULL;
    char *err = NULL;
    if (xd_conf_parse_string("(default)", opt->def, strlen(opt->def), &doc, &err) != 0) {
        opt_error(ctx, XD_EINTERNAL, NULL, "bad default: %s", err ? err : "?");
        xd_free(err);
        return -1;
    }
    int rc = xd_opt_parse_value(ctx, opt, xd_conf_doc_root(doc), field);
    xd_conf_doc_unref(doc);
    return rc;
}

/* Parses `map` into `base`.  An option missing from `map` comes from `fallback`
 * (unless it is XD_OPT_MERGE), else from its default.  Unknown keys of `map`
 * are errors when `check_unknown`. */
static int
opt_table_walk(xd_opt_ctx_t *ctx, const xd_opt_t *table, const xd_conf_node_t *map,
               const xd_conf_node_t *fallback, char *base, bool check_unknown)
{
    unsigned before = ctx->nerr;
    if (map && xd_conf_is_null(map))
        map = NULL;
    if (map && map->kind != XD_CONF_MAP) {
        opt_error(ctx, XD_ECONF_TYPE, map, "expected a mapping, got %s", xd_conf_kind_name(map));
        return -1;
    }
    if (fallback && fallback->kind != XD_CONF_MAP)
        fallback = NULL;
    /* Unknown keys first, so they are reported in document order. */
    for (size_t i = 0; check_unknown && map && i < map->count; i++) {
        const xd_conf_node_t *k = map->keys[i];
        if (!opt_knows(table, k->value)) {
            xd_opt_push_key(ctx, k->value);
            opt_error(ctx, XD_ECONF_UNKNOWN, k, "unknown option");
            xd_opt_pop(ctx);
        }
    }
    for (const xd_opt_t *o = table; o->name; o++) {
        void *field = base + o->offset;
        if (o->type == XD_OPT_TYPE_INLINE) {
            const xd_opt_sub_t *sub = o->range;
            if (opt_table_walk(ctx, sub->table, map, fallback, field, false) == 0 && sub->check)
                sub->check(ctx, map, field);
            continue;
        }
        const xd_conf_node_t *v = xd_conf_map_get(map, o->name);
        if (!v && fallback && !(o->flags & XD_OPT_MERGE))
            v = xd_conf_map_get(fallback, o->name);
        xd_opt_push_key(ctx, o->name);
        if (v && xd_conf_is_null(v) && o->def)
            opt_parse_default(ctx, o, field); /* an explicit null means the default */
        else if (v)
            xd_opt_parse_value(ctx, o, v, field);
        else if ((o->flags & XD_OPT_REQUIRED) && !ctx->defaults_only)
            opt_error(ctx, XD_ECONF_MISSING, map, "missing required option");
        else if (o->def)
            opt_parse_default(ctx, o, field);
        xd_opt_pop(ctx);
    }
    if (ctx->nerr != before) {
        xd_opt_free(table, base);
        return -1;
    }
    return 0;
}

static int
opt_table_parse(xd_opt_ctx_t *ctx, const xd_opt_t *table, const xd_conf_node_t *map, char *base)
{
    return opt_table_walk(ctx, table, map, NULL, base, true);
}

int
xd_opt_parse_layered(xd_opt_ctx_t *ctx, const xd_opt_t *table, const xd_conf_node_t *map,
                     const xd_conf_node_t *fallback, void *conf)
{
    return opt_table_walk(ctx, table, map, fallback, conf, false);
}

int
xd_opt_parse_in(xd_opt_ctx_t *ctx, const xd_opt_t *table, const xd_conf_node_t *map, void *conf)
{
    return opt_table_parse(ctx, table, map, conf);
}

int
xd_opt_parse_at(const xd_opt_t *table, const xd_conf_node_t *map, void *conf, const char *prefix,
                char **err)
{
    xd_opt_ctx_t *ctx = xd_opt_ctx_new(prefix, NULL);
    opt_table_parse(ctx, table, map, conf);
    return xd_opt_ctx_finish(ctx, err);
}

int
xd_opt_parse(const xd_opt_t *table, const xd_conf_node_t *map, void *conf, char **err)
{
    return xd_opt_parse_at(table, map, conf, NULL, err);
}

static void
opt_free_value(const xd_opt_t *opt, void *field)
{
    switch (opt->type) {
    case XD_OPT_TYPE_STRING:
    case XD_OPT_TYPE_PATH:
        xd_free(*(char **)field);
        *(char **)field = NULL;
        break;
    case XD_OPT_TYPE_STRING_LIST:
        xd_strlist_free(field);
        break;
    case XD_OPT_TYPE_NODE: {
        const xd_conf_node_t **n = field;
        if (*n)
            xd_conf_doc_unref((*n)->doc);
        *n = NULL;
        break;
    }
    case XD_OPT_TYPE_SUB:
    case XD_OPT_TYPE_INLINE:
        xd_opt_free(((const xd_opt_sub_t *)opt->range)->table, field);
        break;
    case XD_OPT_TYPE_SUB_LIST: {
        const xd_opt_sub_t *sub = opt->range;
        xd_optlist_t *l = field;
        for (size_t i = 0; i < l->count; i++)
            xd_opt_free(sub->table, (char *)l->items + i * sub->size);
        xd_free(l->items);
        l->items = NULL;
        l->count = 0;
        break;
    }
    case XD_OPT_TYPE_MAP:
        opt_map_free(opt->range, field);
        break;
    case XD_OPT_TYPE_CUSTOM:
        ((const xd_opt_custom_t *)opt->range)->free(field);
        break;
    case XD_OPT_TYPE_BOOL:
        *(bool *)field = false;
        break;
    case XD_OPT_TYPE_INT:
    case XD_OPT_TYPE_ENUM:
    case XD_OPT_TYPE_LOGLEVEL:
        *(int *)field = 0;
        break;
    case XD_OPT_TYPE_DURATION:
        *(uint64_t *)field = 0;
        break;
    case XD_OPT_TYPE_SIZE:
        *(size_t *)field = 0;
        break;
    case XD_OPT_TYPE_WORKERS:
        *(unsigned *)field = 0;
        break;
    case XD_OPT_TYPE_END:
        break;
    }
}

void
xd_opt_free(const xd_opt_t *table, void *conf)
{
    for (const xd_opt_t *o = table; o->name; o++)
        opt_free_value(o, (char *)conf + o->offset);
}

/* ---- Differences ---------------------------------------------------------------------------- */

static bool
opt_str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool
opt_node_eq(const xd_conf_node_t *a, const xd_conf_node_t *b)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind || a->count != b->count)
        return false;
    if (a->kind == XD_CONF_SCALAR)
        return a->len == b->len && memcmp(a->value, b->value, a->len) == 0 &&
               a->quoted == b->quoted;
    for (size_t i = 0; i < a->count; i++)
        if ((a->kind == XD_CONF_MAP && !opt_node_eq(a->keys[i], b->keys[i])) ||
            !opt_node_eq(a->items[i], b->items[i]))
            return false;
    return true;
}

/* A scalar value as text for a message ("" when it has no simple form). */
static void
opt_value_text(const xd_opt_t *o, const void *f, char *buf, size_t cap)
{
    buf[0] = '\0';
    switch (o->type) {
    case XD_OPT_TYPE_BOOL: snprintf(buf, cap, "%s", *(const bool *)f ? "true" : "false"); break;
    case XD_OPT_TYPE_INT: snprintf(buf, cap, "%d", *(const int *)f); break;
    case XD_OPT_TYPE_WORKERS: snprintf(buf, cap, "%u", *(const unsigned *)f); break;
    case XD_OPT_TYPE_DURATION:
        snprintf(buf, cap, "%" PRIu64 "ms", *(const uint64_t *)f);
        break;
    case XD_OPT_TYPE_SIZE: snprintf(buf, cap, "%zu", *(const size_t *)f); break;
    case XD_OPT_TYPE_ENUM: {
        const char *n = xd_opt_enum_name(o->range, *(const int *)f);
        snprintf(buf, cap, "%s", n ? n : "?");
        break;
    }
    case XD_OPT_TYPE_LOGLEVEL: {
        const char *n = xd_opt_enum_name(opt_loglevels, *(const int *)f);
        snprintf(buf, cap, "%s", n ? n : "?");
        break;
    }
    case XD_OPT_TYPE_STRING:
    case XD_OPT_TYPE_PATH: {
        const char *v = *(char *const *)f;
        snprintf(buf, cap, v ? "\"%s\"" : "unset", v);
        break;
    }
    default: break;
    }
}

static unsigned opt_diff_table(xd_opt_ctx_t *ctx, const xd_opt_t *table, const char *was,
                               const char *now, const xd_conf_node_t *map, unsigned flags,
                               const char *why);

/* Compares one value of `o` (fields a and b); records what differs under the current path. */
static unsigned
opt_diff_value(xd_opt_ctx_t *ctx, const xd_opt_t *o, const void *a, const void *b,
               const xd_conf_node_t *node, const char *why)
{
    bool eq = true;
    switch (o->type) {
    case XD_OPT_TYPE_BOOL: eq = *(const bool *)a == *(const bool *)b; break;
    case XD_OPT_TYPE_INT:
    case XD_OPT_TYPE_ENUM:
    case XD_OPT_TYPE_LOGLEVEL: eq = *(const int *)a == *(const int *)b; break;
    case XD_OPT_TYPE_WORKERS: eq = *(const unsigned *)a == *(const unsigned *)b; break;
    case XD_OPT_TYPE_DURATION: eq = *(const uint64_t *)a == *(const uint64_t *)b; break;
    case XD_OPT_TYPE_SIZE: eq = *(const size_t *)a == *(const size_t *)b; break;
    case XD_OPT_TYPE_STRING:
    case XD_OPT_TYPE_PATH: eq = opt_str_eq(*(char *const *)a, *(char *const *)b); break;
    case XD_OPT_TYPE_STRING_LIST: {
        const xd_strlist_t *la = a, *lb = b;
        eq = la->count == lb->count;
        for (size_t i = 0; eq && i < la->count; i++)
            eq = strcmp(la->items[i], lb->items[i]) == 0;
        break;
    }
    case XD_OPT_TYPE_NODE:
        eq = opt_node_eq(*(const xd_conf_node_t *const *)a, *(const xd_conf_node_t *const *)b);
        break;
    case XD_OPT_TYPE_SUB:
        return opt_diff_table(ctx, ((const xd_opt_sub_t *)o->range)->table, a, b, node, 0, why);
    case XD_OPT_TYPE_SUB_LIST: {
        const xd_opt_sub_t *sub = o->range;
        const xd_optlist_t *la = a, *lb = b;
        if (la->count != lb->count) {
            xd_opt_error(ctx, node, "%zu entries, were %zu: %s", lb->count, la->count, why);
            return 1;
        }
        unsigned n = 0;
        for (size_t i = 0; i < la->count; i++) {
            const xd_conf_node_t *it =
                node && node->kind == XD_CONF_SEQ && i < node->count ? node->items[i] : NULL;
            xd_opt_push_index(ctx, i);
            n += opt_diff_table(ctx, sub->table, (const char *)la->items + i * sub->size,
                                (const char *)lb->items + i * sub->size, it, 0, why);
            xd_opt_pop(ctx);
        }
        return n;
    }
    case XD_OPT_TYPE_MAP: {
        const xd_opt_map_t *m = o->range;
        const xd_optmap_t *la = a, *lb = b;
        eq = la->count == lb->count;
        for (size_t i = 0; eq && i < la->count; i++) {
            const char *ia = (const char *)la->items + i * m->size;
            const char *ib = (const char *)lb->items + i * m->size;
            if (!opt_str_eq(*(char *const *)ia, *(char *const *)ib)) {
                eq = false;
                break;
            }
            /* Values are compared quietly: the map is reported as one. */
            xd_opt_ctx_t *quiet = xd_opt_ctx_new(NULL, NULL);
            eq = opt_diff_value(quiet, m->value, ia + m->value->offset, ib + m->value->offset,
                                NULL, why) == 0;
            xd_opt_ctx_finish(quiet, NULL);
        }
        break;
    }
    case XD_OPT_TYPE_INLINE:
    case XD_OPT_TYPE_CUSTOM:
    case XD_OPT_TYPE_END:
        break;
    }
    if (eq)
        return 0;
    char va[128], vb[128];
    opt_value_text(o, a, va, sizeof va);
    opt_value_text(o, b, vb, sizeof vb);
    if (va[0] && !(o->flags & XD_OPT_SECRET))
        xd_opt_error(ctx, node, "changed (was %s, now %s): %s", va, vb, why);
    else
        xd_opt_error(ctx, node, "changed: %s", why);
    return 1;
}

static unsigned
opt_diff_table(xd_opt_ctx_t *ctx, const xd_opt_t *table, const char *was, const char *now,
               const xd_conf_node_t *map, unsigned flags, const char *why)
{
    unsigned n = 0;
    for (const xd_opt_t *o = table; o->name; o++) {
        if (o->type == XD_OPT_TYPE_INLINE) {
            n += opt_diff_table(ctx, ((const xd_opt_sub_t *)o->range)->table, was + o->offset,
                                now + o->offset, map, flags, why);
            continue;
        }
        if (flags && !(o->flags & flags))
            continue;
        xd_opt_push_key(ctx, o->name);
        n += opt_diff_value(ctx, o, was + o->offset, now + o->offset,
                            xd_conf_map_get(map, o->name), why);
        xd_opt_pop(ctx);
    }
    return n;
}

unsigned
xd_opt_diff(xd_opt_ctx_t *ctx, const xd_opt_t *table, const void *was, const void *now,
            const xd_conf_node_t *map, unsigned flags, const char *why)
{
    return opt_diff_table(ctx, table, was, now, map, flags, why);
}

static void
opt_check_defaults_in(xd_opt_ctx_t *ctx, const xd_opt_t *table, size_t size)
{
    void *scratch = xd_calloc(1, size ? size : 1);
    if (opt_table_parse(ctx, table, NULL, scratch) == 0)
        xd_opt_free(table, scratch);
    xd_free(scratch);
    for (const xd_opt_t *o = table; o->name; o++) {
        if (o->type == XD_OPT_TYPE_INLINE) {
            const xd_opt_sub_t *sub = o->range;
            opt_check_defaults_in(ctx, sub->table, sub->size);
        } else if (o->type == XD_OPT_TYPE_SUB_LIST || o->type == XD_OPT_TYPE_SUB) {
            const xd_opt_sub_t *sub = o->range;
            xd_opt_push_key(ctx, o->name);
            if (o->type == XD_OPT_TYPE_SUB_LIST)
                xd_opt_push_index(ctx, 0);
            opt_check_defaults_in(ctx, sub->table, sub->size);
            if (o->type == XD_OPT_TYPE_SUB_LIST)
                xd_opt_pop(ctx);
            xd_opt_pop(ctx);
        } else if (o->type == XD_OPT_TYPE_MAP &&
                   ((const xd_opt_map_t *)o->range)->value->type == XD_OPT_TYPE_SUB) {
            const xd_opt_sub_t *sub = ((const xd_opt_map_t *)o->range)->value->range;
            xd_opt_push_key(ctx, o->name);
            xd_opt_push_key(ctx, "NAME");
            opt_check_defaults_in(ctx, sub->table, sub->size);
            xd_opt_pop(ctx);
            xd_opt_pop(ctx);
        }
    }
}

int
xd_opt_check_defaults(const xd_opt_t *table, size_t conf_size, const void *udata, char **err)
{
    xd_opt_ctx_t *ctx = xd_opt_ctx_new(NULL, udata);
    ctx->defaults_only = true;
    opt_check_defaults_in(ctx, table, conf_size);
    return xd_opt_ctx_finish(ctx, err);
}
