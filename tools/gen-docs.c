/*
 * gen-docs.c — prints the generated references (STYLE.md 3.4, 3.6, 3.10):
 * docs/configuration.md from the option tables and docs/hooks.md from
 * hooks.def and the payload structs of hooks.h.
 *
 * Sits in tools/, links libxmppd and reads only what the server itself is
 * built from: xd_config_doc_sections() and the built-in modules' tables,
 * the same tables that parse xmppd.yml; hooks.def, compiled in as the
 * X-macro list that makes the hook enum; and include/xmppd/hooks.h (path
 * compiled in as GD_HOOKS_H), read at run time for the payload fields and
 * their comments.  So neither reference can drift from the code.  Output
 * is deterministic (no dates, no paths).
 *
 *   gen-docs                        print docs/configuration.md
 *   gen-docs --hooks                print docs/hooks.md
 *   gen-docs [--hooks] --check FILE exit 1 (with a hint) unless FILE equals the
 *                                   output; the meson tests `configuration-doc`
 *                                   and `hooks-doc` run this
 *
 * Reading hooks.h is line-based and strict: a payload struct that is not
 * written as `typedef struct tag {` … `} type_t;` with one member per
 * declaration is an error, never a silently shorter table.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mod/builtin.h"
#include "xmppd/alloc.h"
#include "xmppd/hooks.h"
#include "xmppd/module.h"
#include "xmppd/config.h"
#include "xmppd/opt.h"

typedef struct gd_buf {
    char *p;    /* the text, NUL-terminated */
    size_t len; /* strlen(p) */
} gd_buf_t;

static void
gd_put(gd_buf_t *b, const char *s)
{
    size_t n = strlen(s);
    b->p = xd_realloc(b->p, b->len + n + 1);
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

/* Appends `s` for a table cell: '|' escaped, newlines as spaces. */
static void
gd_put_cell(gd_buf_t *b, const char *s)
{
    char one[3] = { 0 };
    for (; *s; s++) {
        if (*s == '|') {
            gd_put(b, "\\|");
            continue;
        }
        one[0] = *s == '\n' ? ' ' : *s;
        gd_put(b, one);
    }
}

static void
gd_range(gd_buf_t *b, const xd_opt_t *o)
{
    char tmp[64];
    switch (o->type) {
    case XD_OPT_TYPE_INT: {
        const xd_opt_range_t *r = o->range;
        if (r) {
            snprintf(tmp, sizeof tmp, "%d..%d", r->min, r->max);
            gd_put(b, tmp);
        }
        break;
    }
    case XD_OPT_TYPE_ENUM:
        for (const xd_opt_enum_t *e = o->range; e->name; e++) {
            gd_put(b, e == o->range ? "`" : ", `");
            gd_put(b, e->name);
            gd_put(b, "`");
        }
        break;
    case XD_OPT_TYPE_LOGLEVEL:
        gd_put(b, "`none`, `critical`, `error`, `warning`, `notice`, `info`, `debug`");
        break;
    case XD_OPT_TYPE_WORKERS:
        gd_put(b, "`auto`, 1..256");
        break;
    default:
        break;
    }
}

static void
gd_default(gd_buf_t *b, const xd_opt_t *o)
{
    if (o->flags & XD_OPT_REQUIRED)
        gd_put(b, "*required*");
    else if (o->def_doc)
        gd_put_cell(b, o->def_doc);
    else if (o->def && (o->flags & XD_OPT_SECRET) && strcmp(o->def, "\"\"") != 0)
        gd_put(b, "*(secret)*");
    else if (o->def) {
        gd_put(b, "`");
        gd_put_cell(b, o->def);
        gd_put(b, "`");
    } else
        gd_put(b, "—");
}

/* True when some option of `table` (or of its INLINE tables) has host scope. */
static int
gd_has_host(const xd_opt_t *table)
{
    for (const xd_opt_t *o = table; o->name; o++) {
        if (o->type == XD_OPT_TYPE_INLINE && gd_has_host(((const xd_opt_sub_t *)o->range)->table))
            return 1;
        if (o->flags & XD_OPT_HOST)
            return 1;
    }
    return 0;
}

static void
gd_rows(gd_buf_t *b, const xd_opt_t *table, int scope)
{
    for (const xd_opt_t *o = table; o->name; o++) {
        if (o->type == XD_OPT_TYPE_INLINE) {
            gd_rows(b, ((const xd_opt_sub_t *)o->range)->table, scope);
            continue;
        }
        gd_put(b, "| `");
        gd_put(b, o->name);
        gd_put(b, "` | ");
        gd_put_cell(b, xd_opt_type_name(o));
        gd_put(b, " | ");
        gd_default(b, o);
        gd_put(b, " | ");
        gd_range(b, o);
        gd_put(b, " | ");
        if (scope) {
            gd_put(b, (o->flags & XD_OPT_HOST) ? "host" : "global");
            if (o->flags & XD_OPT_RESTART)
                gd_put(b, ", *restart*");
            gd_put(b, " | ");
        }
        gd_put_cell(b, o->doc ? o->doc : "");
        gd_put(b, " |\n");
    }
}

/* The tables of a module's lists of mappings (SUB_LIST) and mappings
 * (SUB), after the module's own: what one entry of `services` holds. */
static void
gd_subs(gd_buf_t *b, const xd_opt_t *table)
{
    for (const xd_opt_t *o = table; o->name; o++) {
        const xd_opt_sub_t *sub = o->range;
        if (o->type == XD_OPT_TYPE_INLINE) {
            gd_subs(b, sub->table);
            continue;
        }
        if (o->type != XD_OPT_TYPE_SUB_LIST && o->type != XD_OPT_TYPE_SUB)
            continue;
        gd_put(b, "\n`");
        gd_put(b, o->name);
        gd_put(b, o->type == XD_OPT_TYPE_SUB_LIST ? "` entries:\n" : "`:\n");
        gd_put(b, "\n| Option | Type | Default | Range | Description |\n"
                  "|---|---|---|---|---|\n");
        gd_rows(b, sub->table, 0);
    }
}

static char *
gd_render(void)
{
    gd_buf_t b = { xd_strdup(""), 0 };
    gd_put(&b, "# Configuration reference\n\n"
               "<!-- Generated by tools/gen-docs from the option tables in src/core/config*.c.\n"
               "     Do not edit: run `make docs` after changing a table. -->\n\n"
               "xmppd reads one YAML file (`xmppd --config xmppd.yml`); without one it runs on\n"
               "the built-in defaults below. `examples/xmppd.yml` shows every option. Unknown\n"
               "keys and bad values are errors that name the file, line, column and option:\n\n"
               "```\nxmppd.yml:12:11: listen[1].port: 70000 is out of range (expected "
               "1..65535)\n```\n\n"
               "An option written with no value (`key:` or `key: ~`) takes its default.\n"
               "Anchors and aliases (`&name`, `*name`) may be used; merge keys (`<<`) may not.\n");
    for (const xd_config_doc_section_t *s = xd_config_doc_sections(); s->title; s++) {
        gd_put(&b, "\n## ");
        gd_put(&b, s->title);
        gd_put(&b, "\n\n");
        gd_put(&b, s->intro);
        gd_put(&b, "\n");
        if (!s->table)
            continue;
        int scope = gd_has_host(s->table);
        if (scope)
            gd_put(&b, "\n| Option | Type | Default | Range | Scope | Description |\n"
                       "|---|---|---|---|---|---|\n");
        else
            gd_put(&b, "\n| Option | Type | Default | Range | Description |\n"
                       "|---|---|---|---|---|\n");
        gd_rows(&b, s->table, scope);
    }
    gd_put(&b, "\n## Modules\n\n"
               "Modules run per host as listed under `modules:` (and `host_config`), each with\n"
               "its options as a map (`mod_roster: {max_items: 2000}`; `{}` or `~` for the\n"
               "defaults). The built-in ones are below; any other name is loaded from\n"
               "`<module_dir>/<name>.so` (docs/modules.md).\n");
    xd_builtin_register();
    for (const xd_builtin_doc_t *m = xd_builtin_docs(); m->name; m++) {
        gd_put(&b, "\n### ");
        gd_put(&b, m->name);
        gd_put(&b, "\n\n");
        gd_put(&b, m->doc ? m->doc : "");
        gd_put(&b, ".\n");
        if (m->flags & XD_MODULE_ALWAYS)
            gd_put(&b, "\nRuns on every host, listed or not; listing it sets its options.\n");
        if (!m->opts || !m->opts->name) {
            gd_put(&b, "\nNo options.\n");
            continue;
        }
        gd_put(&b, "\n| Option | Type | Default | Range | Description |\n"
                   "|---|---|---|---|---|\n");
        gd_rows(&b, m->opts, 0);
        gd_subs(&b, m->opts);
    }
    return b.p;
}

static char *
gd_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    gd_buf_t b = { xd_strdup(""), 0 };
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk - 1, f)) > 0) {
        chunk[n] = '\0';
        gd_put(&b, chunk);
    }
    fclose(f);
    return b.p;
}

/* ---- docs/hooks.md ------------------------------------------------------------------------- */

#ifndef GD_HOOKS_H
#define GD_HOOKS_H "include/xmppd/hooks.h"
#endif

/* One hook as hooks.def lists it. */
typedef struct gd_hook {
    const char *id;      /* "XD_HOOK_TICK" */
    const char *name;    /* "tick" */
    const char *payload; /* "xd_hook_tick_t" */
    const char *thread;  /* "loop", "pool", "any" */
    const char *doc;     /* one paragraph */
} gd_hook_t;

static const gd_hook_t gd_hooks[] = {
#define XD_HOOK(ID, name, T, thread, doc) { "XD_HOOK_" #ID, #name, #T, thread, doc },
#include "xmppd/hooks.def"
#undef XD_HOOK
};
#define GD_NHOOKS (sizeof gd_hooks / sizeof gd_hooks[0])

/* Every payload type of hooks.def is a complete type of hooks.h (a typo
 * in either stops the build here). */
#define XD_HOOK(ID, name, T, thread, doc) _Static_assert(sizeof(T) > 0, #T);
#include "xmppd/hooks.def"
#undef XD_HOOK

/* One member of a payload struct, as hooks.h writes it. */
typedef struct gd_field {
    char *name;    /* "st" */
    char *type;    /* "xd_stanza_t *" */
    char *doc;     /* its trailing comment, lines joined */
    bool fnptr;    /* a function pointer member */
} gd_field_t;

/* hooks.h as lines (the text is cut in place). */
typedef struct gd_lines {
    char **v;   /* line starts */
    size_t n;   /* count */
} gd_lines_t;

static gd_lines_t
gd_split(char *text)
{
    gd_lines_t l = { NULL, 0 };
    size_t cap = 0;
    for (char *p = text; p && *p;) {
        if (l.n == cap) {
            cap = cap ? cap * 2 : 256;
            l.v = xd_realloc(l.v, cap * sizeof *l.v);
        }
        l.v[l.n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    return l;
}

/* A new copy of s[0..n) without leading and trailing blanks. */
static char *
gd_trimn(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return xd_strndup(s, n);
}

static char *
gd_trim(const char *s)
{
    return gd_trimn(s, strlen(s));
}

static bool
gd_starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool
gd_ends(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Appends comment or doc text for Markdown prose or a table cell: as
 * gd_put_cell, with '<' and '*' escaped (`<query/>` is not HTML, `XD_E*`
 * no emphasis). */
static void
gd_put_text(gd_buf_t *b, const char *s)
{
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, "<*");
        char *piece = xd_strndup(p, n);
        gd_put_cell(b, piece);
        xd_free(piece);
        p += n;
        if (*p == '<')
            gd_put(b, "&lt;");
        else if (*p == '*')
            gd_put(b, "\\*");
        if (*p)
            p++;
    }
}

/* True for a comment that only names hooks ("SM_REGISTER_CONNECTION,
 * SM_REMOVE_CONNECTION."): the payload section says that already. */
static bool
gd_names_only(const char *s)
{
    if (!*s)
        return true;
    for (const char *p = s; *p; p++) {
        if (!strncmp(p, "and ", 4)) {
            p += 3;
            continue;
        }
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '*' ||
              *p == ',' || *p == ' ' || *p == '.'))
            return false;
    }
    return true;
}

/* Appends one line of a comment's text: the opening slash-star, a leading
 * star of a continuation line and the closing star-slash removed. */
static void
gd_comment_line(gd_buf_t *b, const char *line)
{
    char *t = gd_trim(line);
    const char *p = t;
    if (gd_starts(p, "/*"))
        p += 2;
    else if (*p == '*' && p[1] != '/')
        p++;
    char *end = strstr(p, "*/");
    char *piece = end ? gd_trimn(p, (size_t)(end - p)) : gd_trim(p);
    if (*piece) {
        if (b->len)
            gd_put(b, " ");
        gd_put(b, piece);
    }
    xd_free(piece);
    xd_free(t);
}

/* Splits one declaration ("const char *host", "int (*fn)(void *arg, …)")
 * into f's name and type; false when it is not one simple declarator. */
static bool
gd_decl(const char *decl, gd_field_t *f)
{
    const char *fp = strstr(decl, "(*");
    if (fp) {
        const char *close = strchr(fp, ')');
        if (!close || close == fp + 2)
            return false;
        f->name = gd_trimn(fp + 2, (size_t)(close - fp - 2));
        gd_buf_t t = { xd_strdup(""), 0 };
        char *head = xd_strndup(decl, (size_t)(fp - decl));
        gd_put(&t, head);
        gd_put(&t, "(*)");
        gd_put(&t, close + 1);
        xd_free(head);
        f->type = t.p;
        f->fnptr = true;
        return true;
    }
    if (strchr(decl, ',') || strchr(decl, '[') || strchr(decl, '('))
        return false;
    size_t n = strlen(decl), k = n;
    while (k && (decl[k - 1] == '_' || (decl[k - 1] >= 'a' && decl[k - 1] <= 'z') ||
                 (decl[k - 1] >= 'A' && decl[k - 1] <= 'Z') ||
                 (decl[k - 1] >= '0' && decl[k - 1] <= '9')))
        k--;
    if (k == n || k == 0)
        return false;
    f->name = xd_strdup(decl + k);
    f->type = gd_trimn(decl, k);
    f->fnptr = false;
    return true;
}

static void
gd_fields_free(gd_field_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        xd_free(f[i].name);
        xd_free(f[i].type);
        xd_free(f[i].doc);
    }
    xd_free(f);
}

/* Finds `typedef struct … {` … `} type;` in l: the comment above it into
 * *intro (malloc'd, "" when none) and its members into *fields.  0, or -1
 * with a message on stderr. */
static int
gd_struct(const gd_lines_t *l, const char *type, char **intro, gd_field_t **fields,
          size_t *nfields)
{
    char *want = xd_asprintf("} %s;", type);
    size_t end = l->n, start = l->n;
    for (size_t i = 0; i < l->n && end == l->n; i++) {
        char *t = gd_trim(l->v[i]);
        if (!strcmp(t, want))
            end = i;
        xd_free(t);
    }
    xd_free(want);
    for (size_t i = end; i-- > 0 && end < l->n;) {
        char *t = gd_trim(l->v[i]);
        bool open = gd_starts(t, "typedef struct ") && gd_ends(t, "{");
        xd_free(t);
        if (open) {
            start = i;
            break;
        }
    }
    if (end == l->n || start == l->n) {
        fprintf(stderr, "gen-docs: %s: no `typedef struct … { … } %s;`\n", GD_HOOKS_H, type);
        return -1;
    }

    /* The comment right above (across one-line typedefs such as
     * xd_preauth_t's); a "---- section ----" rule is not one. */
    gd_buf_t in = { xd_strdup(""), 0 };
    size_t k = start;
    for (;;) {
        if (k == 0)
            break;
        char *t = gd_trim(l->v[k - 1]);
        bool skip = gd_starts(t, "typedef ") && gd_ends(t, ";") && !strstr(t, "/*");
        xd_free(t);
        if (!skip)
            break;
        k--;
    }
    if (k > 0) {
        char *last = gd_trim(l->v[k - 1]);
        bool closes = gd_ends(last, "*/");
        xd_free(last);
        if (closes) {
            size_t first = k - 1;
            while (first > 0 && !strstr(l->v[first], "/*"))
                first--;
            char *t = gd_trim(l->v[first]);
            bool rule = gd_starts(t, "/* ----");
            xd_free(t);
            for (size_t j = first; !rule && j < k; j++)
                gd_comment_line(&in, l->v[j]);
        }
    }
    *intro = in.p;

    /* One member per line, its comment trailing (maybe over more lines). */
    gd_field_t *fv = NULL;
    size_t nf = 0;
    for (size_t i = start + 1; i < end; i++) {
        char *t = gd_trim(l->v[i]);
        if (!*t) {
            xd_free(t);
            continue;
        }
        char *semi = strchr(t, ';');
        char *com = strstr(t, "/*");
        if (!semi || (com && com < semi)) {
            fprintf(stderr, "gen-docs: %s:%zu: not a member declaration: %s\n", GD_HOOKS_H,
                    i + 1, t);
            xd_free(t);
            gd_fields_free(fv, nf);
            xd_free(*intro);
            return -1;
        }
        fv = xd_realloc(fv, (nf + 1) * sizeof *fv);
        gd_field_t *f = &fv[nf++];
        *f = (gd_field_t){ 0 };
        char *decl = gd_trimn(t, (size_t)(semi - t));
        bool ok = gd_decl(decl, f);
        xd_free(decl);
        if (!ok) {
            fprintf(stderr, "gen-docs: %s:%zu: one simple declarator per line expected: %s\n",
                    GD_HOOKS_H, i + 1, t);
            xd_free(t);
            gd_fields_free(fv, nf);
            xd_free(*intro);
            return -1;
        }
        gd_buf_t d = { xd_strdup(""), 0 };
        if (com) {
            gd_comment_line(&d, com);
            while (!strstr(com, "*/") && i + 1 < end) {
                com = l->v[++i];
                gd_comment_line(&d, com);
            }
        }
        f->doc = d.p;
        xd_free(t);
    }
    *fields = fv;
    *nfields = nf;
    return 0;
}

/* What a handler may do with the payload, read off its members: a stanza
 * it owns (xd_stanza_t *), an element to edit (xd_el_t *), an out value
 * (comment "out: …"), a function to call, another object to use. */
static void
gd_may(gd_buf_t *b, const gd_field_t *f, size_t n)
{
    size_t said = 0;
    for (size_t i = 0; i < n; i++) {
        const char *what = NULL;
        bool is_const = gd_starts(f[i].type, "const ");
        if (f[i].fnptr)
            what = "call";
        else if (!strcmp(f[i].type, "xd_stanza_t *"))
            what = "replace or drop";
        else if (!strcmp(f[i].type, "xd_el_t *"))
            what = "change";
        else if (gd_starts(f[i].doc, "out:") || gd_starts(f[i].doc, "out "))
            what = "set";
        else if (!is_const && gd_ends(f[i].type, "*") && strcmp(f[i].type, "void *") != 0)
            what = "use";
        if (!what)
            continue;
        gd_put(b, said++ ? "; " : "");
        gd_put(b, what);
        gd_put(b, " `");
        gd_put(b, f[i].name);
        gd_put(b, "`");
    }
    if (!said)
        gd_put(b, "read it");
}

static char *
gd_render_hooks(const char *header)
{
    char *text = gd_read(header);
    if (!text) {
        fprintf(stderr, "gen-docs: cannot read %s\n", header);
        return NULL;
    }
    gd_lines_t lines = gd_split(text);

    /* The payloads, in the order hooks.def first names them, parsed once. */
    const char *types[GD_NHOOKS];
    char *intros[GD_NHOOKS];
    gd_field_t *fields[GD_NHOOKS];
    size_t nfields[GD_NHOOKS], ntypes = 0;
    int rc = 0;
    for (size_t h = 0; h < GD_NHOOKS && rc == 0; h++) {
        size_t t = 0;
        while (t < ntypes && strcmp(types[t], gd_hooks[h].payload) != 0)
            t++;
        if (t < ntypes)
            continue;
        types[ntypes] = gd_hooks[h].payload;
        rc = gd_struct(&lines, types[ntypes], &intros[ntypes], &fields[ntypes], &nfields[ntypes]);
        if (rc == 0)
            ntypes++;
    }
    if (rc != 0) {
        for (size_t t = 0; t < ntypes; t++) {
            xd_free(intros[t]);
            gd_fields_free(fields[t], nfields[t]);
        }
        xd_free(lines.v);
        xd_free(text);
        return NULL;
    }

    gd_buf_t b = { xd_strdup(""), 0 };
    gd_put(&b,
           "# Hooks\n\n"
           "<!-- Generated by tools/gen-docs from include/xmppd/hooks.def and the payload\n"
           "     structs of include/xmppd/hooks.h.  Do not edit: run\n"
           "     `build/tools/gen-docs --hooks > docs/hooks.md` after changing either. -->\n\n"
           "A hook is an ordered chain of handlers that the server runs at one event: a\n"
           "session bound, a stanza routed, a roster changed. Every hook is listed once, in\n"
           "`include/xmppd/hooks.def`; `include/xmppd/hooks.h` makes from that list the enum\n"
           "`XD_HOOK_<ID>`, one handler type per hook and the typed calls, so a misspelled\n"
           "hook or a handler for the wrong payload does not compile. The module guide,\n"
           "[modules.md](modules.md), explains how a module uses them; this page is the\n"
           "reference.\n\n"
           "A module adds a handler for its host with\n\n"
           "```c\n"
           "static int\n"
           "on_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)\n"
           "{\n"
           "    /* ... delete ev->user's data on ev->host ... */\n"
           "    return XD_HOOK_OK;\n"
           "}\n\n"
           "    /* in start: */\n"
           "    xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, on_removed, NULL);\n"
           "```\n\n"
           "and the server removes it before the module stops. Code that raises an event\n"
           "fills the payload and calls `xd_hook_run(XD_HOOK_<ID>, host, &ev)`.\n\n"
           "- **Order.** Handlers of the host and global ones (added with host NULL) run\n"
           "  together, lower priority first (`XD_HOOK_PRIO_DEFAULT` is 50); equal\n"
           "  priorities run in the order they were added.\n"
           "- **Result.** A handler returns `XD_HOOK_OK` to let the chain go on or\n"
           "  `XD_HOOK_STOP` to end it; the description says what a stop means for the hook.\n"
           "  `xd_hook_run` returns `XD_HOOK_STOP` when a handler stopped the chain.\n"
           "- **Thread.** `loop`: a worker loop, the handler must not block; `pool`: the\n"
           "  blocking pool, it may block (synchronous storage); `any`: whichever thread\n"
           "  raises the event, it must not block. No lock is held while handlers run.\n"
           "- **Stanzas.** A payload whose `st` is an `xd_stanza_t *` (not const) owns one\n"
           "  reference while the chain runs: a handler that replaces the stanza unrefs the\n"
           "  old one and stores the new reference; one that drops it unrefs it, sets `st`\n"
           "  to NULL and returns `XD_HOOK_STOP`. A `const xd_stanza_t *` is lent for the\n"
           "  run: `xd_stanza_ref` it to keep it.\n"
           "- **Payloads** are lent for the run unless a field says otherwise.\n"
           "\n## Every hook\n\n"
           "The *Handler may* column is read off the payload's members: `replace or drop` a\n"
           "stanza it owns, `change` an element being built, `set` an out member, `call` a\n"
           "function member, `use` another object (see its comment below); otherwise it\n"
           "only reads.\n\n"
           "| Hook | Payload | Thread | Handler may | Description |\n"
           "|---|---|---|---|---|\n");
    for (size_t h = 0; h < GD_NHOOKS; h++) {
        size_t t = 0;
        while (strcmp(types[t], gd_hooks[h].payload) != 0)
            t++;
        gd_put(&b, "| `");
        gd_put(&b, gd_hooks[h].id);
        gd_put(&b, "` (");
        gd_put(&b, gd_hooks[h].name);
        gd_put(&b, ") | [`");
        gd_put(&b, types[t]);
        gd_put(&b, "`](#");
        gd_put(&b, types[t]);
        gd_put(&b, ") | ");
        gd_put(&b, gd_hooks[h].thread);
        gd_put(&b, " | ");
        gd_may(&b, fields[t], nfields[t]);
        gd_put(&b, " | ");
        gd_put_text(&b, gd_hooks[h].doc);
        gd_put(&b, " |\n");
    }
    gd_put(&b, "\n## Payloads\n\n"
               "Each struct as `include/xmppd/hooks.h` declares it, with the comments written\n"
               "there.\n");
    for (size_t t = 0; t < ntypes; t++) {
        gd_put(&b, "\n### ");
        gd_put(&b, types[t]);
        gd_put(&b, "\n\nUsed by ");
        size_t used = 0;
        for (size_t h = 0; h < GD_NHOOKS; h++) {
            if (strcmp(gd_hooks[h].payload, types[t]) != 0)
                continue;
            gd_put(&b, used++ ? ", `" : "`");
            gd_put(&b, gd_hooks[h].id);
            gd_put(&b, "`");
        }
        gd_put(&b, ".\n");
        if (!gd_names_only(intros[t])) {
            gd_put(&b, "\n");
            gd_put_text(&b, intros[t]);
            gd_put(&b, "\n");
        }
        gd_put(&b, "\n| Member | Type | Description |\n|---|---|---|\n");
        for (size_t i = 0; i < nfields[t]; i++) {
            const gd_field_t *f = &fields[t][i];
            gd_put(&b, "| `");
            gd_put(&b, f->name);
            gd_put(&b, "` | `");
            gd_put_cell(&b, f->type);
            gd_put(&b, "` | ");
            gd_put_text(&b, f->doc);
            gd_put(&b, " |\n");
        }
        xd_free(intros[t]);
        gd_fields_free(fields[t], nfields[t]);
    }
    xd_free(lines.v);
    xd_free(text);
    return b.p;
}

int
main(int argc, char **argv)
{
    bool hooks = false;
    const char *check = NULL;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hooks"))
            hooks = true;
        else if (!strcmp(argv[i], "--check") && i + 1 < argc)
            check = argv[++i];
        else
            bad = 1;
    }
    if (bad) {
        fprintf(stderr, "usage: gen-docs [--hooks] [--check FILE]\n");
        return 2;
    }
    char *text = hooks ? gd_render_hooks(GD_HOOKS_H) : gd_render();
    if (!text)
        return 1;
    int rc = 0;
    if (check) {
        char *have = gd_read(check);
        if (!have) {
            fprintf(stderr, "gen-docs: cannot read %s\n", check);
            rc = 1;
        } else if (strcmp(have, text) != 0) {
            if (hooks)
                fprintf(stderr, "gen-docs: %s is out of date with hooks.def and hooks.h; run "
                                "`build/tools/gen-docs --hooks > docs/hooks.md` and commit the "
                                "result\n", check);
            else
                fprintf(stderr, "gen-docs: %s is out of date with the option tables; "
                                "run `make docs` and commit the result\n", check);
            rc = 1;
        } else {
            printf("ok 1 - %s matches %s\n", check,
                   hooks ? "hooks.def and hooks.h" : "the option tables");
        }
        xd_free(have);
    } else {
        fputs(text, stdout);
    }
    xd_free(text);
    return rc;
}
