/*
 * test_config.c — unit tests of the YAML node tree, the option machinery and
 * the server configuration (src/core/yaml.c, opt.c, config*.c; src/xmpp/jid_opt.c, acl.c).
 *
 * Error messages are asserted as exact text, locations included, because the
 * format ("FILE:LINE:COL: PATH: MESSAGE") is part of the contract.  Files are
 * written under a mkdtemp() directory that each test removes again.
 * XD_TEST_SRCDIR (set by meson) locates examples/xmppd.yml.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mod/builtin.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/jid_opt.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/opt.h"

/* ---- A test table covering every generic type ------------------------------------------------ */

typedef struct t_sub {
    int x;       /* required */
    char *name;  /* default "n" */
} t_sub_t;

static int
t_sub_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf)
{
    t_sub_t *s = conf;
    if (s->x == 13) {
        xd_opt_error(ctx, map, "13 is unlucky");
        return -1;
    }
    return 0;
}

static const xd_opt_t t_sub_opts[] = {
    XD_OPT_FULL("x", XD_OPT_TYPE_INT, t_sub_t, x, NULL, NULL, "x", XD_OPT_REQUIRED, NULL),
    XD_OPT_STRING("name", t_sub_t, name, "n", "name"),
    XD_OPT_END,
};
static const xd_opt_sub_t t_sub = { t_sub_opts, sizeof(t_sub_t), t_sub_check, "sub" };

static const xd_opt_enum_t t_colors[] = {
    { "red", 1 }, { "green", 2 }, { "vert", 2 }, { NULL, 0 },
};

typedef struct t_conf {
    bool b;
    int i;
    uint64_t d_ms;
    size_t sz;
    char *s;
    char *path;
    int e;
    xd_strlist_t sl;
    char *dom;
    xd_strlist_t doms;
    int lvl;
    unsigned w;
    const xd_conf_node_t *node;
    t_sub_t sub;
    xd_optlist_t subs;
    xd_jid_t *jid;
} t_conf_t;

static const xd_opt_t t_opts[] = {
    XD_OPT_BOOL("b", t_conf_t, b, "true", "b"),
    XD_OPT_INT("i", t_conf_t, i, "5", 1, 100, "i"),
    XD_OPT_DURATION("d", t_conf_t, d_ms, "60s", "d"),
    XD_OPT_SIZE("sz", t_conf_t, sz, "64KB", "sz"),
    XD_OPT_STRING("s", t_conf_t, s, "hello", "s"),
    XD_OPT_PATH("path", t_conf_t, path, NULL, "path"),
    XD_OPT_ENUM("e", t_conf_t, e, "red", t_colors, "e"),
    XD_OPT_STRING_LIST("sl", t_conf_t, sl, "[a, b]", "sl"),
    XD_OPT_DOMAIN("dom", t_conf_t, dom, NULL, "dom"),
    XD_OPT_DOMAIN_LIST("doms", t_conf_t, doms, "[localhost]", "doms"),
    XD_OPT_LOGLEVEL("lvl", t_conf_t, lvl, "info", "lvl"),
    XD_OPT_WORKERS("w", t_conf_t, w, "auto", "w"),
    XD_OPT_NODE("node", t_conf_t, node, "node"),
    XD_OPT_SUB("sub", t_conf_t, sub, "{x: 1}", &t_sub, "sub"),
    XD_OPT_SUB_LIST("subs", t_conf_t, subs, "[]", &t_sub, "subs"),
    XD_OPT_JID("jid", t_conf_t, jid, NULL, "jid"),
    XD_OPT_END,
};

/* Parses `yaml` (named t.yml) with `table` into conf (size bytes, zeroed
 * first).  Returns the xd_opt_parse result; *err gets the message (caller
 * frees). */
static int
t_parse_table(const xd_opt_t *table, const char *yaml, void *conf, size_t size, char **err)
{
    xd_conf_doc_t *doc = NULL;
    memset(conf, 0, size);
    *err = NULL;
    int rc = xd_conf_parse_string("t.yml", yaml, strlen(yaml), &doc, err);
    if (rc != 0)
        return rc;
    rc = xd_opt_parse(table, xd_conf_doc_root(doc), conf, err);
    xd_conf_doc_unref(doc);
    return rc;
}

/* t_parse_table with t_opts. */
static int
t_parse(const char *yaml, t_conf_t *c, char **err)
{
    return t_parse_table(t_opts, yaml, c, sizeof *c, err);
}

/* Asserts that parsing `yaml` with `table` fails with exactly `want`. */
static void
t_expect_table_error(const xd_opt_t *table, size_t size, const char *yaml, const char *want)
{
    unsigned char conf[512];
    char *err = NULL;
    assert_true(size <= sizeof conf);
    int rc = t_parse_table(table, yaml, conf, size, &err);
    assert_int_not_equal(rc, 0);
    assert_non_null(err);
    assert_string_equal(err, want);
    /* A failed parse leaves nothing allocated and every field zero. */
    for (size_t i = 0; i < size; i++)
        assert_int_equal(conf[i], 0);
    free(err);
}

static void
t_expect_error(const char *yaml, const char *want)
{
    t_expect_table_error(t_opts, sizeof(t_conf_t), yaml, want);
}

static void
t_ok(const char *yaml, t_conf_t *c)
{
    char *err = NULL;
    int rc = t_parse(yaml, c, &err);
    if (rc != 0)
        fail_msg("unexpected error: %s", err ? err : "?");
    assert_null(err);
}

/* ---- Node tree ------------------------------------------------------------------------------ */

static void
test_config__tree_locations(void **state)
{
    (void)state;
    const char *y = "a: 1\nb:\n  - x\n  - {k: v}\n\"q\": 'yes'\n";
    xd_conf_doc_t *doc = NULL;
    char *err = NULL;
    assert_int_equal(xd_conf_parse_string("f.yml", y, strlen(y), &doc, &err), 0);
    const xd_conf_node_t *root = xd_conf_doc_root(doc);
    assert_int_equal(root->kind, XD_CONF_MAP);
    assert_int_equal(root->count, 3);
    const xd_conf_node_t *a = xd_conf_map_get(root, "a");
    assert_string_equal(a->value, "1");
    assert_int_equal(a->line, 1);
    assert_int_equal(a->col, 4);
    const xd_conf_node_t *b = xd_conf_map_get(root, "b");
    assert_int_equal(b->kind, XD_CONF_SEQ);
    assert_int_equal(b->count, 2);
    assert_int_equal(b->items[1]->kind, XD_CONF_MAP);
    assert_int_equal(b->items[1]->line, 4);
    assert_int_equal(b->items[1]->col, 5);
    assert_string_equal(xd_conf_map_get(b->items[1], "k")->value, "v");
    const xd_conf_node_t *q = xd_conf_map_get(root, "q");
    assert_true(q->quoted);
    assert_string_equal(q->value, "yes");
    assert_false(xd_conf_is_null(q));
    assert_int_equal(xd_conf_map_key(root, "q")->line, 5);
    assert_string_equal(q->file, "f.yml");
    xd_conf_doc_unref(doc);
}

static void
test_config__tree_duplicate_key(void **state)
{
    (void)state;
    const char *y = "a: 1\nb:\n  c: 1\n  c: 2\n";
    xd_conf_doc_t *doc = NULL;
    char *err = NULL;
    assert_int_equal(xd_conf_parse_string("f.yml", y, strlen(y), &doc, &err), XD_ECONF_SYNTAX);
    assert_null(doc);
    assert_string_equal(err, "f.yml:4:3: duplicate key \"c\" (first at line 3 column 3)");
    free(err);
}

static void
test_config__tree_multiple_documents(void **state)
{
    (void)state;
    const char *y = "a: 1\n---\nb: 2\n";
    xd_conf_doc_t *doc = NULL;
    char *err = NULL;
    assert_int_equal(xd_conf_parse_string("f.yml", y, strlen(y), &doc, &err), XD_ECONF_SYNTAX);
    assert_string_equal(err, "f.yml:2:1: more than one YAML document (a configuration is one "
                             "document)");
    free(err);
}

static void
test_config__tree_aliases(void **state)
{
    (void)state;
    const char *y = "base: &b {x: 1}\nsub: *b\nsubs: [*b, *b]\n";
    t_conf_t c;
    xd_conf_doc_t *doc = NULL;
    char *err = NULL;
    /* base is unknown to t_opts: parse only sub and subs with a doc of their own. */
    const char *y2 = "sub: &b {x: 7, name: shared}\nsubs: [*b, *b]\n";
    t_ok(y2, &c);
    assert_int_equal(c.sub.x, 7);
    assert_int_equal(c.subs.count, 2);
    assert_string_equal(((t_sub_t *)c.subs.items)[1].name, "shared");
    xd_opt_free(t_opts, &c);

    assert_int_equal(xd_conf_parse_string("f.yml", y, strlen(y), &doc, &err), 0);
    const xd_conf_node_t *root = xd_conf_doc_root(doc);
    assert_ptr_equal(xd_conf_map_get(root, "sub"), xd_conf_map_get(root, "base"));
    xd_conf_doc_unref(doc);

    const char *bad = "a: *nope\n";
    assert_int_equal(xd_conf_parse_string("f.yml", bad, strlen(bad), &doc, &err),
                     XD_ECONF_SYNTAX);
    assert_string_equal(err, "f.yml:1:4: unknown anchor \"nope\" (an alias must follow its "
                             "complete anchored node)");
    free(err);
}

static void
test_config__tree_alias_bomb_rejected(void **state)
{
    (void)state;
    /* Each level doubles: 2^30 nodes when expanded. */
    char y[4096];
    size_t n = (size_t)snprintf(y, sizeof y, "l0: &l0 [x, x]\n");
    for (int i = 1; i <= 30; i++)
        n += (size_t)snprintf(y + n, sizeof y - n, "l%d: &l%d [*l%d, *l%d]\n", i, i, i - 1,
                              i - 1);
    xd_conf_doc_t *doc = NULL;
    char *err = NULL;
    assert_int_equal(xd_conf_parse_string("f.yml", y, n, &doc, &err), XD_ECONF_SYNTAX);
    assert_non_null(strstr(err, "document too large after alias expansion"));
    free(err);
}

static void
test_config__tree_syntax_error_location(void **state)
{
    (void)state;
    char dir[] = "/tmp/xd-test-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/bad.yml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("hosts:\n  - a\nloglevel: info: debug\n", f);
    fclose(f);

    xd_config_t *cfg = NULL;
    char *err = NULL;
    assert_int_equal(xd_config_load(path, &cfg, &err), XD_ECONF_SYNTAX);
    assert_null(cfg);
    char want[512];
    snprintf(want, sizeof want, "%s:3:15: mapping values are not allowed in this context", path);
    assert_string_equal(err, want);
    free(err);

    unlink(path);
    /* A missing file is -errno with a message naming it. */
    assert_int_equal(xd_config_load(path, &cfg, &err), -ENOENT);
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", path);
    assert_string_equal(err, want);
    free(err);
    assert_int_equal(rmdir(dir), 0);
}

/* ---- Types ---------------------------------------------------------------------------------- */

static void
test_config__defaults(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("", &c);
    assert_true(c.b);
    assert_int_equal(c.i, 5);
    assert_int_equal(c.d_ms, 60000);
    assert_int_equal(c.sz, 65536);
    assert_string_equal(c.s, "hello");
    assert_null(c.path);
    assert_int_equal(c.e, 1);
    assert_int_equal(c.sl.count, 2);
    assert_string_equal(c.sl.items[1], "b");
    assert_int_equal(c.doms.count, 1);
    assert_string_equal(c.doms.items[0], "localhost");
    assert_int_equal(c.lvl, XD_LOG_INFO);
    assert_true(c.w >= 1 && c.w <= 256);
    assert_int_equal(c.sub.x, 1);
    assert_string_equal(c.sub.name, "n");
    assert_int_equal(c.subs.count, 0);
    xd_opt_free(t_opts, &c);
    assert_null(c.s);
    assert_null(c.sl.items);
}

static void
test_config__every_default_parses(void **state)
{
    (void)state;
    char *err = NULL;
    /* The server's tables parse with the config being loaded as udata (its names). */
    xd_config_t *cfg = NULL;
    assert_int_equal(xd_config_default(&cfg), 0);
    for (const xd_config_doc_section_t *s = xd_config_doc_sections(); s->title; s++) {
        if (!s->table)
            continue;
        int rc = xd_opt_check_defaults(s->table, s->size, cfg, &err);
        if (rc != 0)
            fail_msg("defaults of %s: %s", s->title, err);
    }
    /* And every built-in module's table (a default that is not what its
     * type reads, such as an unquoted "::", fails every start). */
    assert_int_equal(xd_builtin_register(), 0);
    const xd_module_t *mods[128];
    size_t nmods = xd_module_builtins(mods, 128);
    assert_true(nmods > 0 && nmods <= 128);
    for (size_t i = 0; i < nmods; i++) {
        if (!mods[i]->opts)
            continue;
        if (xd_opt_check_defaults(mods[i]->opts, mods[i]->opts_size, cfg, &err) != 0)
            fail_msg("defaults of %s: %s", mods[i]->name, err);
    }
    xd_config_unref(cfg);
    assert_int_equal(xd_opt_check_defaults(t_opts, sizeof(t_conf_t), NULL, &err), 0);

    /* And a bad default is caught. */
    static const xd_opt_t bad[] = {
        XD_OPT_DURATION("ping_interval", t_conf_t, d_ms, "6x", "broken"),
        XD_OPT_END,
    };
    assert_int_not_equal(xd_opt_check_defaults(bad, sizeof(t_conf_t), NULL, &err), 0);
    assert_string_equal(err, "(default):1:1: ping_interval: invalid duration \"6x\" (expected a "
                             "duration such as 60s)");
    free(err);
}

static void
test_config__bool(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("b: no\n", &c);
    assert_false(c.b);
    xd_opt_free(t_opts, &c);
    t_ok("b: On\n", &c);
    assert_true(c.b);
    xd_opt_free(t_opts, &c);
    t_expect_error("b: maybe\n",
                   "t.yml:1:4: b: invalid boolean \"maybe\" (expected true or false)");
    t_expect_error("b: [true]\n", "t.yml:1:4: b: expected true or false, got a sequence");
}

static void
test_config__int(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("i: 100\n", &c);
    assert_int_equal(c.i, 100);
    xd_opt_free(t_opts, &c);
    t_expect_error("i: 101\n", "t.yml:1:4: i: 101 is out of range (expected 1..100)");
    t_expect_error("i: 12abc\n", "t.yml:1:4: i: invalid integer \"12abc\" (expected an integer)");
    t_expect_error("i: {a: 1}\n", "t.yml:1:4: i: expected an integer, got a mapping");
    t_expect_error("i: 99999999999\n", "t.yml:1:4: i: invalid integer \"99999999999\" (expected "
                                       "an integer that fits in 32 bits)");
}

static void
test_config__duration(void **state)
{
    (void)state;
    static const struct { const char *in; uint64_t ms; } good[] = {
        { "60s", 60000 },    { "5 min", 300000 }, { "1h", 3600000 }, { "500ms", 500 },
        { "90", 90000 },     { "2d", 172800000 }, { "0", 0 },        { "3 minutes", 180000 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t ms = 1;
        assert_int_equal(xd_opt_parse_duration(good[i].in, &ms), 0);
        assert_int_equal(ms, good[i].ms);
    }
    uint64_t ms;
    assert_int_equal(xd_opt_parse_duration("6x", &ms), XD_EINVAL);
    assert_int_equal(xd_opt_parse_duration("-1s", &ms), XD_EINVAL);
    assert_int_equal(xd_opt_parse_duration("s", &ms), XD_EINVAL);
    assert_int_equal(xd_opt_parse_duration("99999999999999999999d", &ms), XD_ECONF_RANGE);

    t_conf_t c;
    t_ok("d: 5 min\n", &c);
    assert_int_equal(c.d_ms, 300000);
    xd_opt_free(t_opts, &c);
    t_expect_error("d: 6x\n",
                   "t.yml:1:4: d: invalid duration \"6x\" (expected a duration such as 60s)");
}

/* The example of STYLE.md 3.4: a module's table parsed later, under a path prefix. */
static void
test_config__module_options_error_format(void **state)
{
    (void)state;
    typedef struct ping_conf {
        uint64_t ping_interval_ms;
    } ping_conf_t;
    static const xd_opt_t ping_opts[] = {
        XD_OPT_DURATION("ping_interval", ping_conf_t, ping_interval_ms, "60s", "interval"),
        XD_OPT_END,
    };
    char y[2048];
    size_t n = 0;
    n += (size_t)snprintf(y + n, sizeof y - n, "hosts: [localhost]\n");
    for (int i = 2; i <= 37; i++)
        n += (size_t)snprintf(y + n, sizeof y - n, "# line %d\n", i);
    n += (size_t)snprintf(y + n, sizeof y - n, "modules:\n  mod_ping:\n    ping_interval:\n"
                                               "      6x\n");
    xd_config_t *cfg = NULL;
    char *err = NULL;
    /* The config loader keeps module options raw; the module parses them. */
    assert_int_equal(xd_config_load_string("xmppd.yml", y, n, &cfg, &err), 0);
    const xd_module_conf_t *m = xd_config_module(cfg, "localhost", "mod_ping");
    assert_non_null(m);
    ping_conf_t pc = { 0 };
    assert_int_not_equal(xd_opt_parse_at(ping_opts, m->opts, &pc, "modules.mod_ping", &err), 0);
    assert_string_equal(err, "xmppd.yml:41:7: modules.mod_ping.ping_interval: invalid duration "
                             "\"6x\" (expected a duration such as 60s)");
    free(err);
    xd_config_unref(cfg);
}

static void
test_config__size(void **state)
{
    (void)state;
    size_t b;
    assert_int_equal(xd_opt_parse_size("64KB", &b), 0);
    assert_int_equal(b, 65536);
    assert_int_equal(xd_opt_parse_size("1MB", &b), 0);
    assert_int_equal(b, 1048576);
    assert_int_equal(xd_opt_parse_size("65536", &b), 0);
    assert_int_equal(b, 65536);
    assert_int_equal(xd_opt_parse_size("2 k", &b), 0);
    assert_int_equal(b, 2048);
    assert_int_equal(xd_opt_parse_size("12QB", &b), XD_EINVAL);
    t_expect_error("sz: 12QB\n", "t.yml:1:5: sz: invalid size \"12QB\" (expected a size such as "
                                 "64KB)");
}

static void
test_config__string_and_path(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("s: 5222\npath: /tmp/x\n", &c);
    assert_string_equal(c.s, "5222");
    assert_string_equal(c.path, "/tmp/x");
    xd_opt_free(t_opts, &c);
    /* An explicit null takes the default. */
    t_ok("s:\n", &c);
    assert_string_equal(c.s, "hello");
    xd_opt_free(t_opts, &c);
    t_expect_error("path: \"\"\n", "t.yml:1:7: path: invalid path \"\" (expected a path)");
    t_expect_error("s: [a]\n", "t.yml:1:4: s: expected a string, got a sequence");
}

static void
test_config__enum(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("e: vert\n", &c);
    assert_int_equal(c.e, 2);
    xd_opt_free(t_opts, &c);
    t_expect_error("e: blue\n",
                   "t.yml:1:4: e: invalid value \"blue\" (expected one of: red, green, vert)");
    assert_string_equal(xd_opt_enum_name(t_colors, 2), "green");
}

static void
test_config__string_list(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("sl: single\n", &c);
    assert_int_equal(c.sl.count, 1);
    assert_string_equal(c.sl.items[0], "single");
    xd_opt_free(t_opts, &c);
    t_ok("sl: [x, y, z]\n", &c);
    assert_int_equal(c.sl.count, 3);
    assert_true(xd_strlist_contains(&c.sl, "z"));
    xd_opt_free(t_opts, &c);
    t_ok("sl: []\n", &c);
    assert_int_equal(c.sl.count, 0);
    xd_opt_free(t_opts, &c);
    t_expect_error("sl: {a: b}\n",
                   "t.yml:1:5: sl: expected a string or a list of strings, got a mapping");
    t_expect_error("sl:\n  - a\n  - [b]\n", "t.yml:3:5: sl[1]: expected a string, got a sequence");
}

static void
test_config__domains(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("dom: Example.ORG\ndoms: [a.example, B.example]\n", &c);
    assert_string_equal(c.dom, "example.org");
    assert_int_equal(c.doms.count, 2);
    assert_string_equal(c.doms.items[1], "b.example");
    xd_opt_free(t_opts, &c);
    t_expect_error("doms: [a.example, A.EXAMPLE]\n",
                   "t.yml:1:19: doms[1]: duplicate domain \"a.example\"");
    t_conf_t c2;
    char *err = NULL;
    assert_int_not_equal(t_parse("dom: \"bad domain\"\n", &c2, &err), 0);
    assert_non_null(strstr(err, "t.yml:1:6: dom: invalid domain \"bad domain\" ("));
    free(err);
}

static void
test_config__jid(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("jid: Admin@Example.org/Res\n", &c);
    assert_non_null(c.jid);
    assert_true(xd_str_eq_c(xd_jid_bare_str(c.jid), "admin@example.org"));
    xd_opt_free(t_opts, &c);
    assert_null(c.jid);
    char *err = NULL;
    assert_int_not_equal(t_parse("jid: \"@example.org\"\n", &c, &err), 0);
    assert_non_null(strstr(err, "t.yml:1:6: jid: invalid JID \"@example.org\" ("));
    free(err);
}

static void
test_config__loglevel_and_workers(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("lvl: debug\nw: 4\n", &c);
    assert_int_equal(c.lvl, XD_LOG_DEBUG);
    assert_int_equal(c.w, 4);
    xd_opt_free(t_opts, &c);
    t_ok("lvl: warning\nw: auto\n", &c);
    assert_int_equal(c.lvl, XD_LOG_WARN);
    assert_true(c.w >= 1);
    xd_opt_free(t_opts, &c);
    t_expect_error("lvl: loud\n", "t.yml:1:6: lvl: invalid log level \"loud\" (expected one of: "
                                  "none, critical, crit, error, warning, warn, notice, info, "
                                  "debug)");
    t_expect_error("w: 257\n",
                   "t.yml:1:4: w: invalid workers \"257\" (expected auto or a number from 1 to "
                   "256)");
    t_expect_error("w: 0\n",
                   "t.yml:1:4: w: invalid workers \"0\" (expected auto or a number from 1 to 256)");
}

/* ---- MAP ------------------------------------------------------------------------------------ */

typedef struct t_item {
    char *name; /* the key (upper-cased by t_upper_key) */
    int x;      /* required */
    char *tag;  /* default "t" */
} t_item_t;

typedef struct t_items {
    t_item_t *items; /* owned */
    size_t count;    /* number of items */
} t_items_t;

static const xd_opt_t t_item_opts[] = {
    XD_OPT_FULL("x", XD_OPT_TYPE_INT, t_item_t, x, NULL, NULL, "x", XD_OPT_REQUIRED, NULL),
    XD_OPT_STRING("tag", t_item_t, tag, "t", "tag"),
    XD_OPT_END,
};
static const xd_opt_sub_t t_item_sub = { t_item_opts, sizeof(t_item_t), NULL, "items" };

/* Keys are case-insensitive: "a" and "A" are the same item; "bad" is refused. */
static int
t_upper_key(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out)
{
    if (strcmp(key->value, "bad") == 0) {
        xd_opt_error(ctx, key, "bad key");
        return -1;
    }
    char *u = xd_strdup(key->value);
    for (char *p = u; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    *out = u;
    return 0;
}

static const char *const t_reserved[] = { "all", NULL };
static const xd_opt_map_t t_items_map = {
    .type_name = "items",
    .expected = "a mapping of item names to items",
    .noun = "item",
    .size = sizeof(t_item_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_SUB, 0, &t_item_sub),
    .reserved = t_reserved,
    .key = t_upper_key,
};

typedef struct t_map_conf {
    t_items_t items; /* the map */
} t_map_conf_t;

static const xd_opt_t t_map_opts[] = {
    XD_OPT_MAP("items", t_map_conf_t, items, NULL, &t_items_map, "items"),
    XD_OPT_END,
};

static void
t_map_error(const char *yaml, const char *want)
{
    t_expect_table_error(t_map_opts, sizeof(t_map_conf_t), yaml, want);
}

static void
test_config__map(void **state)
{
    (void)state;
    t_map_conf_t c;
    char *err = NULL;
    assert_int_equal(t_parse_table(t_map_opts, "items:\n  b: {x: 2, tag: two}\n  a: {x: 1}\n", &c,
                                   sizeof c, &err),
                     0);
    assert_int_equal(c.items.count, 2);
    assert_string_equal(c.items.items[0].name, "B"); /* document order, key prepared */
    assert_int_equal(c.items.items[0].x, 2);
    assert_string_equal(c.items.items[0].tag, "two");
    assert_string_equal(c.items.items[1].name, "A");
    assert_string_equal(c.items.items[1].tag, "t"); /* the value table's default */
    xd_opt_free(t_map_opts, &c);
    assert_null(c.items.items);
    assert_int_equal(t_parse_table(t_map_opts, "items: ~\n", &c, sizeof c, &err), 0);
    assert_int_equal(c.items.count, 0);
    assert_int_equal(t_parse_table(t_map_opts, "items: {}\n", &c, sizeof c, &err), 0);
    assert_int_equal(c.items.count, 0);

    t_map_error("items: [a]\n",
                "t.yml:1:8: items: expected a mapping of item names to items, got a sequence");
    t_map_error("items:\n  all: {x: 1}\n",
                "t.yml:2:3: items.all: \"all\" is a built-in item and cannot be redefined");
    t_map_error("items:\n  bad: {x: 1}\n", "t.yml:2:3: items.bad: bad key");
    t_map_error("items:\n  a: {x: 1}\n  A: {x: 2}\n",
                "t.yml:3:3: items.A: item \"A\" appears twice (also at line 2 column 3)");
    /* Every error of every value, each under its key as written. */
    t_map_error("items:\n  a: {tag: q}\n  b: {x: 1, y: 2}\n  c: 3\n",
                "t.yml:2:6: items.a.x: missing required option\n"
                "t.yml:3:13: items.b.y: unknown option\n"
                "t.yml:4:6: items.c: expected a mapping, got a scalar");
    assert_string_equal(xd_opt_type_name(&t_map_opts[0]), "items");
}

static void
test_config__node_outlives_document(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("node: {deep: [1, 2, {x: y}]}\n", &c);
    /* t_parse dropped its document reference; the NODE field holds one. */
    assert_non_null(c.node);
    assert_int_equal(c.node->kind, XD_CONF_MAP);
    const xd_conf_node_t *deep = xd_conf_map_get(c.node, "deep");
    assert_string_equal(xd_conf_map_get(deep->items[2], "x")->value, "y");
    xd_opt_free(t_opts, &c);
    assert_null(c.node);
}

static void
test_config__sub_tables(void **state)
{
    (void)state;
    t_conf_t c;
    t_ok("sub: {x: 3}\nsubs:\n  - x: 1\n  - {x: 2, name: two}\n", &c);
    assert_int_equal(c.sub.x, 3);
    assert_int_equal(c.subs.count, 2);
    t_sub_t *s = c.subs.items;
    assert_string_equal(s[0].name, "n");
    assert_string_equal(s[1].name, "two");
    xd_opt_free(t_opts, &c);
    t_expect_error("subs:\n  - x: 1\n  - name: two\n",
                   "t.yml:3:5: subs[1].x: missing required option");
    t_expect_error("subs:\n  - x: 1\n  - x: 13\n", "t.yml:3:5: subs[1]: 13 is unlucky");
    t_expect_error("subs: {x: 1}\n", "t.yml:1:7: subs: expected a list of mappings, got a mapping");
    t_expect_error("sub: 3\n", "t.yml:1:6: sub: expected a mapping, got a scalar");
}

static void
test_config__unknown_key_and_many_errors(void **state)
{
    (void)state;
    t_expect_error("i: 5\nbogus: 1\n", "t.yml:2:1: bogus: unknown option");
    t_expect_error("sub: {x: 1, y: 2}\n", "t.yml:1:13: sub.y: unknown option");
    /* Every error is reported, one per line, in document order per table. */
    t_expect_error("bogus: 1\ni: 0\nd: 6x\n",
                   "t.yml:1:1: bogus: unknown option\n"
                   "t.yml:2:4: i: 0 is out of range (expected 1..100)\n"
                   "t.yml:3:4: d: invalid duration \"6x\" (expected a duration such as 60s)");
    t_expect_error("[1, 2]\n", "t.yml:1:1: (top level): expected a mapping, got a sequence");
}

/* ---- Server configuration ---------------------------------------------------------------- */

static xd_config_t *
cfg_ok(const char *yaml)
{
    xd_config_t *cfg = NULL;
    char *err = NULL;
    int rc = xd_config_load_string("xmppd.yml", yaml, strlen(yaml), &cfg, &err);
    if (rc != 0)
        fail_msg("unexpected config error: %s", err ? err : "?");
    return cfg;
}

static void
cfg_err(const char *yaml, const char *want)
{
    xd_config_t *cfg = NULL;
    char *err = NULL;
    int rc = xd_config_load_string("xmppd.yml", yaml, strlen(yaml), &cfg, &err);
    assert_int_not_equal(rc, 0);
    assert_null(cfg);
    assert_non_null(err);
    assert_string_equal(err, want);
    free(err);
}

static void
cfg_err_prefix(const char *yaml, const char *want)
{
    xd_config_t *cfg = NULL;
    char *err = NULL;
    assert_int_not_equal(xd_config_load_string("xmppd.yml", yaml, strlen(yaml), &cfg, &err), 0);
    assert_null(cfg);
    assert_non_null(err);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("\"%s\" does not start with \"%s\"", err, want);
    free(err);
}

/* The control socket must fit in sun_path (107 bytes and a NUL on Linux): checked at load,
 * not when xmppd binds it. */
static void
test_config__ctl_socket_path_length(void **state)
{
    (void)state;
    char dir[160], y[512];
    memset(dir, 'd', sizeof dir);
    dir[0] = '/';
    dir[97] = '\0'; /* "/ddd…": 97 bytes; + "/xmppd.sock" = 108 */
    snprintf(y, sizeof y, "data_dir: %s\n", dir);
    char want[512];
    snprintf(want, sizeof want,
             "xmppd.yml:1:11: data_dir: the control socket %s/xmppd.sock would be 108 bytes, "
             "more than a Unix socket path may hold (107): shorten data_dir or set ctl_socket",
             dir);
    cfg_err(y, want);
    /* With a short ctl_socket the same data_dir is fine. */
    snprintf(y, sizeof y, "data_dir: %s\nctl_socket: /run/x.sock\n", dir);
    xd_config_unref(cfg_ok(y));
    dir[96] = '\0'; /* 107 bytes: the longest that fits */
    snprintf(y, sizeof y, "data_dir: %s\n", dir);
    xd_config_unref(cfg_ok(y));
    dir[96] = 'd';
    snprintf(y, sizeof y, "ctl_socket: %s/xmppd.sock\n", dir);
    snprintf(want, sizeof want,
             "xmppd.yml:1:13: ctl_socket: path too long for a Unix socket (108 bytes, at most "
             "107): %s/xmppd.sock", dir);
    cfg_err(y, want);
}

/* Mappings past the index threshold: lookups, the duplicate check (with the first key's
 * location) and names that collide only once prepared. */
static void
test_config__large_mappings(void **state)
{
    (void)state;
    size_t cap = 64 * 1024, n = 0;
    char *y = xd_malloc(cap);
    n += (size_t)snprintf(y + n, cap - n, "hosts:\n");
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(y + n, cap - n, "  - h%d.example\n", i);
    n += (size_t)snprintf(y + n, cap - n, "acl:\n");
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(y + n, cap - n, "  a%d: {user: u%d}\n", i, i);
    n += (size_t)snprintf(y + n, cap - n, "access_rules:\n");
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(y + n, cap - n, "  r%d: {allow: a%d}\n", i, i);
    xd_config_t *cfg = cfg_ok(y);
    assert_int_equal(xd_config_host_count(cfg), 500);
    assert_true(xd_config_is_host(cfg, "h0.example") && xd_config_is_host(cfg, "h499.example"));
    assert_false(xd_config_is_host(cfg, "h500.example"));
    assert_string_equal(xd_config_host(cfg, "h321.example")->host, "h321.example");
    assert_non_null(xd_config_acl(&cfg->global, "a499"));
    const xd_conf_node_t *acl = xd_conf_map_get(xd_conf_doc_root(cfg->doc), "acl");
    assert_int_equal(xd_conf_map_key(acl, "a250")->line, 3 + 500 + 250);
    assert_null(xd_conf_map_get(acl, "a500"));
    xd_config_unref(cfg);

    /* An ACL name used but not defined, among many. */
    n += (size_t)snprintf(y + n, cap - n, "  bad: {allow: nope}\n");
    cfg_err_prefix(y, "xmppd.yml:1504:16: access_rules.bad.allow: unknown ACL \"nope\"");
    xd_free(y);

    /* Duplicates past the threshold, in the tree and after name preparation. */
    n = 0;
    y = xd_malloc(cap);
    n += (size_t)snprintf(y + n, cap - n, "acl:\n");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(y + n, cap - n, "  a%d: {user: u}\n", i);
    n += (size_t)snprintf(y + n, cap - n, "  a15: {user: u}\n");
    cfg_err(y, "xmppd.yml:22:3: duplicate key \"a15\" (first at line 17 column 3)");
    n = 0;
    n += (size_t)snprintf(y + n, cap - n, "acl:\n");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(y + n, cap - n, "  a%d: {server: [s%d.example]}\n", i, i);
    n += (size_t)snprintf(y + n, cap - n, "  b: {server: [");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(y + n, cap - n, "%s%c%d.example", i ? ", " : "",
                              i == 19 ? 'S' : 's', i == 19 ? 7 : i);
    n += (size_t)snprintf(y + n, cap - n, "]}\n");
    xd_config_t *bad = NULL;
    char *err = NULL;
    assert_int_not_equal(xd_config_load_string("xmppd.yml", y, n, &bad, &err), 0);
    assert_non_null(strstr(err, "acl.b.server[19]: duplicate domain \"s7.example\""));
    assert_int_equal(strncmp(err, "xmppd.yml:22:", 13), 0);
    free(err);
    xd_free(y);
}

/* What a reload may not change: each difference named, secrets not printed. */
static void
test_config__check_reload(void **state)
{
    (void)state;
    xd_config_t *a = cfg_ok("hosts: [a.example]\nsql_password: s3cret\nlisten:\n  - port: 5222\n");
    xd_config_t *b = cfg_ok("hosts: [a.example, b.example]\nloglevel: debug\n"
                            "sql_password: other\nlisten:\n  - port: 5222\n    backlog: 7\n");
    char *err = NULL;
    assert_int_equal(xd_config_check_reload(a, b, &err), XD_ECONF_RESTART);
    assert_string_equal(err, "xmppd.yml:6:14: listen[0].backlog: changed (was 1024, now 7): "
                             "takes effect only at a restart\nxmppd.yml:3:15: sql_password: "
                             "changed: takes effect only at a restart");
    free(err);
    xd_config_unref(b);
    /* Live changes only: accepted. */
    b = cfg_ok("hosts: [b.example, a.example]\nloglevel: debug\nsql_password: s3cret\n"
               "listen:\n  - port: 5222\n");
    assert_int_equal(xd_config_check_reload(a, b, &err), 0);
    assert_null(err);
    xd_config_unref(b);
    b = cfg_ok("hosts: [b.example]\nsql_password: s3cret\nlisten:\n  - port: 5222\n"
               "  - port: 5223\n");
    assert_int_equal(xd_config_check_reload(a, b, &err), XD_ECONF_RESTART);
    assert_string_equal(err, "xmppd.yml:1:8: hosts: serves none of the running hosts "
                             "(a.example): a reload never removes every host (restart xmppd "
                             "to replace them all)\nxmppd.yml:4:3: listen: 2 entries, were 1: "
                             "takes effect only at a restart");
    free(err);
    xd_config_unref(b);
    b = cfg_ok("# nothing\n");
    assert_int_equal(xd_config_check_reload(a, b, &err), XD_ECONF_RESTART);
    assert_string_equal(err, "xmppd.yml:1:1: (top level): the file is empty: a reload never "
                             "falls back to the built-in defaults");
    free(err);
    xd_config_unref(b);
    xd_config_unref(a);
}

static void
test_config__builtin_defaults(void **state)
{
    (void)state;
    xd_config_t *cfg = NULL;
    assert_int_equal(xd_config_default(&cfg), 0);
    assert_int_equal(xd_config_host_count(cfg), 1);
    assert_string_equal(xd_config_default_host(cfg), "localhost");
    assert_string_equal(cfg->data_dir, "./var");
    assert_string_equal(xd_config_ctl_socket(cfg), "./var/xmppd.sock");
    assert_string_equal(cfg->sql_database, "./var/xmppd.db");
    assert_int_equal(cfg->sql_type, XD_SQL_SQLITE);
    assert_int_equal(cfg->sql_port, 0);
    assert_string_equal(xd_config_log_file(cfg), "-");
    assert_int_equal(xd_config_loglevel(cfg), XD_LOG_INFO);
    assert_true(xd_config_workers(cfg) >= 1);
    assert_int_equal(xd_config_pool_threads(cfg), 8);
    assert_int_equal(xd_config_pool_queue(cfg), 4096);
    assert_null(cfg->pid_file);
    assert_int_equal(xd_config_listen_count(cfg), 2);
    const xd_listen_conf_t *l0 = xd_config_listen(cfg, 0), *l1 = xd_config_listen(cfg, 1);
    assert_string_equal(l0->ip, "127.0.0.1");
    assert_string_equal(l1->ip, "::1");
    assert_int_equal(l0->port, 5222);
    assert_int_equal(l1->port, 5222);
    assert_int_equal(l0->module, XD_LISTEN_MOD_C2S);
    assert_true(l0->starttls && l0->starttls_required && !l0->tls);
    assert_int_equal(l0->max_stanza_size, 65536);
    assert_int_equal(l0->backlog, 1024);
    assert_int_equal(l0->max_connections, 100000);
    assert_int_equal(l0->handshake_timeout_ms, 30000);
    assert_string_equal(l0->access, "all");
    assert_null(xd_config_listen(cfg, 2));
    const xd_host_conf_t *h = xd_config_host(cfg, "localhost");
    assert_non_null(h);
    assert_int_equal(h->auth_method, XD_AUTH_INTERNAL);
    assert_int_equal(h->scram_iterations, 4096);
    assert_string_equal(h->language, "en");
    assert_null(xd_config_host(cfg, "example.org"));
    assert_true(xd_config_is_host(cfg, "localhost"));
    xd_config_unref(cfg);
}

static void
test_config__hosts(void **state)
{
    (void)state;
    xd_config_t *cfg = cfg_ok("hosts:\n  - Example.ORG\n  - example.net\ndata_dir: /srv/x\n"
                              "sql_type: pgsql\n");
    assert_int_equal(xd_config_host_count(cfg), 2);
    assert_string_equal(xd_config_host_name(cfg, 0), "example.org");
    assert_null(xd_config_host_name(cfg, 2));
    assert_string_equal(cfg->ctl_socket, "/srv/x/xmppd.sock");
    assert_string_equal(cfg->sql_database, "xmppd");
    assert_int_equal(cfg->sql_port, 5432);
    xd_config_unref(cfg);
    cfg_err("hosts: []\n", "xmppd.yml:1:8: hosts: at least one host is required");
    /* A list even for one host: a scalar is a list written wrong. */
    cfg_err("hosts: a.example\n", "xmppd.yml:1:8: hosts: expected a list of domains, got a "
                                  "scalar (write `hosts: [a.example]`)");
    cfg_err("hosts: [a.example, A.example]\n",
            "xmppd.yml:1:20: hosts[1]: duplicate domain \"a.example\"");
    cfg_err("hosts: [a.example]\nworkers: 0\nsql_port: 0\n",
            "xmppd.yml:2:10: workers: invalid workers \"0\" (expected auto or a number from 1 to "
            "256)\nxmppd.yml:3:11: sql_port: 0 is out of range (expected 1..65535)");
}

/* sql_* per host (issue 18): inherited from the top level, overridden per
 * option, computed defaults per host, one pool per database. */
static void
test_config__sql_per_host(void **state)
{
    (void)state;
    xd_config_t *cfg = cfg_ok("hosts: [a.example, b.example, c.example]\ndata_dir: /srv/x\n"
                              "sql_pool_size: 4\n"
                              "host_config:\n"
                              "  b.example:\n"
                              "    sql_database: /srv/b.db\n"
                              "  c.example:\n"
                              "    sql_type: pgsql\n"
                              "    sql_server: db.example\n");
    const xd_sql_conf_t *g = xd_config_sql(cfg, NULL);
    const xd_sql_conf_t *a = xd_config_sql(cfg, "a.example");
    const xd_sql_conf_t *b = xd_config_sql(cfg, "b.example");
    const xd_sql_conf_t *c = xd_config_sql(cfg, "c.example");
    assert_null(xd_config_sql(cfg, "d.example"));
    assert_string_equal(g->database, "/srv/x/xmppd.db");
    assert_false(a->own);
    assert_string_equal(a->database, "/srv/x/xmppd.db");
    assert_true(xd_sql_conf_same_db(a, g));
    assert_true(b->own);
    assert_int_equal(b->type, XD_SQL_SQLITE);
    assert_string_equal(b->database, "/srv/b.db");
    assert_int_equal(b->pool_size, 4); /* inherited */
    assert_false(xd_sql_conf_same_db(a, b));
    assert_int_equal(c->type, XD_SQL_PGSQL);
    assert_string_equal(c->database, "xmppd"); /* computed for its type */
    assert_int_equal(c->port, 5432);
    assert_string_equal(c->server, "db.example");
    xd_config_unref(cfg);

    cfg_err("hosts: [a.example, b.example]\nhost_config:\n  b.example:\n    sql_type: oracle\n",
            "xmppd.yml:4:15: host_config.b.example.sql_type: invalid value \"oracle\" "
            "(expected one of: sqlite, pgsql, mysql, odbc)");
    cfg_err("hosts: [a.example, b.example]\nhost_config:\n  b.example:\n"
            "    sql_pool_size: 2\n",
            "xmppd.yml:4:20: host_config.b.example.sql_pool_size: names the same database as "
            "the top level (sqlite ./var/xmppd.db) with another sql_pool_size: hosts that "
            "share a database share its one pool; give them the same settings");
}

static void
test_config__listen(void **state)
{
    (void)state;
    xd_config_t *cfg = cfg_ok("listen:\n"
                              "  - port: 5222\n"
                              "  - port: 5269\n"
                              "    module: ejabberd_s2s_in\n"
                              "  - port: 5223\n"
                              "    ip: 127.0.0.1\n"
                              "    tls: true\n"
                              "    max_stanza_size: 1MB\n"
                              "    handshake_timeout: 5s\n");
    assert_int_equal(xd_config_listen_count(cfg), 3);
    const xd_listen_conf_t *l = xd_config_listen(cfg, 0);
    assert_string_equal(l->ip, "::");
    assert_int_equal(l->module, XD_LISTEN_MOD_C2S);
    l = xd_config_listen(cfg, 1);
    assert_int_equal(l->module, XD_LISTEN_MOD_S2S);
    assert_string_equal(xd_listen_module_name(l->module), "s2s");
    assert_int_equal(l->max_stanza_size, 131072);
    l = xd_config_listen(cfg, 2);
    assert_true(l->tls);
    assert_int_equal(l->max_stanza_size, 1048576);
    assert_int_equal(l->handshake_timeout_ms, 5000);
    xd_config_unref(cfg);

    cfg_err("listen:\n  - port: 5222\n  - port: 70000\n",
            "xmppd.yml:3:11: listen[1].port: 70000 is out of range (expected 1..65535)");
    cfg_err("listen:\n  - ip: 127.0.0.1\n", "xmppd.yml:2:5: listen[0].port: missing required "
                                             "option");
    cfg_err("listen:\n  - port: 1\n    ip: localhost\n",
            "xmppd.yml:3:9: listen[0].ip: invalid address \"localhost\" (expected an IPv4 or "
            "IPv6 address such as 127.0.0.1 or ::)");
    cfg_err("listen:\n  - port: 1\n    module: bosh\n",
            "xmppd.yml:3:13: listen[0].module: invalid value \"bosh\" (expected one of: c2s, "
            "s2s, component, http, ejabberd_c2s, ejabberd_s2s_in, ejabberd_service, "
            "ejabberd_http)");
    cfg_err("listen:\n  - port: 1\n    color: red\n",
            "xmppd.yml:3:5: listen[0].color: unknown option");
    cfg_err("listen:\n  - port: 1\n    module: component\n",
            "xmppd.yml:2:5: listen[0]: a component listener needs `password` or `hosts`");
    cfg_err("listen:\n  - port: 5222\n  - port: 5222\n    ip: \"::\"\n",
            "xmppd.yml:3:11: listen[1].port: address :: port 5222 is already used by listen[0]");
    cfg_err("listen:\n  - port: 5222\n    access: c2s\n    shaper: slow\n",
            "xmppd.yml:3:13: listen[0].access: unknown access rule \"c2s\"\n"
            "xmppd.yml:4:13: listen[0].shaper: unknown shaper or shaper rule \"slow\"");
    cfg_err("listen: {port: 1}\n",
            "xmppd.yml:1:9: listen: expected a list of mappings, got a mapping");
    /* A written max_stanza_size is taken as written: 0 is not "the default". */
    cfg_err("listen:\n  - port: 1\n    max_stanza_size: 0\n",
            "xmppd.yml:3:22: listen[0].max_stanza_size: 0 is too small (at least 10000 bytes: "
            "RFC 6120 13.12)");
    cfg_err("listen:\n  - port: 1\n    max_stanza_size: 9999\n",
            "xmppd.yml:3:22: listen[0].max_stanza_size: 9999 is too small (at least 10000 "
            "bytes: RFC 6120 13.12)");
    cfg = cfg_ok("listen:\n  - port: 1\n    max_stanza_size: 10000\n");
    assert_int_equal(xd_config_listen(cfg, 0)->max_stanza_size, 10000);
    xd_config_unref(cfg);
    /* auth_limits: defaults, a bad value, an exempt rule that is not defined. */
    cfg = cfg_ok("");
    assert_int_equal(cfg->auth_limits.max_failures, 20);
    assert_int_equal(cfg->auth_limits.ban_lifetime_ms, 3600000);
    assert_int_equal(cfg->auth_limits.delay_after, 5);
    assert_int_equal(cfg->auth_limits.size, 8192);
    assert_string_equal(cfg->auth_limits.exempt, "none");
    xd_config_unref(cfg);
    cfg = cfg_ok("access_rules:\n  lan: {allow: {ip: 10.0.0.0/8}}\n"
                 "auth_limits: {exempt: lan, max_failures: 0, window: 5min}\n");
    assert_int_equal(cfg->auth_limits.max_failures, 0);
    assert_int_equal(cfg->auth_limits.window_ms, 300000);
    assert_int_equal(cfg->auth_limits.delay_ms, 1000);
    xd_config_unref(cfg);
    cfg_err("auth_limits: {size: 5}\n",
            "xmppd.yml:1:21: auth_limits.size: 5 is out of range (expected 16..10000000)");
    cfg_err("auth_limits: {exempt: trusted}\n",
            "xmppd.yml:1:23: auth_limits.exempt: unknown access rule \"trusted\" (define it at "
            "the top level)");
    cfg_err("auth_limits: {bans: 3}\n", "xmppd.yml:1:15: auth_limits.bans: unknown option");
    /* `worker` pins a listener to one worker; without it every worker accepts. */
    cfg = cfg_ok("workers: 2\nlisten:\n  - port: 5222\n  - port: 5223\n    worker: 1\n"
                 "  - port: 5224\n    worker: 0\n");
    assert_int_equal(xd_config_listen(cfg, 0)->worker, -1);
    assert_int_equal(xd_config_listen(cfg, 1)->worker, 1);
    assert_int_equal(xd_config_listen(cfg, 2)->worker, 0);
    xd_config_unref(cfg);
    cfg = cfg_ok("listen:\n  - port: 5222\n");
    assert_int_equal(xd_config_listen(cfg, 0)->worker, -1);
    xd_config_unref(cfg);
    cfg_err("workers: 2\nlisten:\n  - port: 5222\n    worker: 2\n",
            "xmppd.yml:4:13: listen[0].worker: worker 2 does not exist: there are 2 "
            "(`workers`, counted from 0)");
    cfg_err("workers: 1\nlisten:\n  - port: 5222\n  - port: 5223\n    worker: 1\n",
            "xmppd.yml:5:13: listen[1].worker: worker 1 does not exist: there is 1 "
            "(`workers`, counted from 0)");
    cfg_err("listen:\n  - port: 5222\n    worker: -1\n",
            "xmppd.yml:3:13: listen[0].worker: -1 is out of range (expected 0..255)");
    cfg_err("listen:\n  - port: 5222\n    worker: first\n",
            "xmppd.yml:3:13: listen[0].worker: invalid integer \"first\" (expected an integer)");
    /* Component domains: prepared keys, a secret each, only on component listeners. */
    cfg = cfg_ok("listen:\n  - port: 5347\n    module: component\n"
                 "    hosts:\n      GW.example: {password: s1}\n      b.example: {password: s2}\n");
    l = xd_config_listen(cfg, 0);
    assert_int_equal(l->hosts.count, 2);
    assert_string_equal(l->hosts.items[0].domain, "gw.example");
    assert_string_equal(l->hosts.items[1].password, "s2");
    xd_config_unref(cfg);
    cfg_err("listen:\n  - port: 5347\n    module: component\n"
            "    hosts:\n      \"bad domain\": {password: s}\n      b.example: {secret: s}\n",
            "xmppd.yml:5:7: listen[0].hosts.bad domain: invalid domain \"bad domain\" "
            "(domainpart is not a valid domain name or IP address)\n"
            "xmppd.yml:6:19: listen[0].hosts.b.example.secret: unknown option\n"
            "xmppd.yml:6:18: listen[0].hosts.b.example.password: missing required option");
    cfg_err("listen:\n  - port: 5347\n    module: component\n"
            "    hosts: {b.example: {password: \"\"}}\n",
            "xmppd.yml:4:35: listen[0].hosts.b.example.password: the secret must not be empty");
    cfg_err("listen:\n  - port: 5222\n    hosts: {b.example: {password: s}}\n",
            "xmppd.yml:2:5: listen[0]: `hosts` is for component listeners");
    /* http listeners: paths to handler names, in document order; only there. */
    cfg = cfg_ok("listen:\n  - port: 5280\n    module: http\n"
                 "    request_handlers:\n      /ws: websocket\n      /bosh: bosh\n"
                 "    websocket_origins: [https://a.example]\n");
    l = xd_config_listen(cfg, 0);
    assert_int_equal(l->request_handlers.count, 2);
    assert_string_equal(l->request_handlers.items[1].name, "/bosh");
    assert_string_equal(l->request_handlers.items[1].handler, "bosh");
    assert_int_equal(l->max_header_size, 8192);
    assert_int_equal(l->header_timeout_ms, 10000);
    assert_int_equal(l->cors_origins.count, 1);
    assert_string_equal(l->cors_origins.items[0], "*");
    assert_int_equal(l->websocket_origins.count, 1);
    xd_config_unref(cfg);
    cfg_err("listen:\n  - port: 5222\n    request_handlers: {/ws: websocket}\n",
            "xmppd.yml:2:5: listen[0]: `request_handlers` is for http listeners");
    cfg_err("listen:\n  - port: 5280\n    module: http\n    request_handlers: {ws: websocket}\n",
            "xmppd.yml:4:24: listen[0].request_handlers: the path \"ws\" must start with /");
}

static void
jid_of(const char *s, xd_jid_t **out)
{
    assert_int_equal(xd_jid_parse(xd_str_c(s), out), 0);
}

static void
sa4(struct sockaddr_storage *ss, const char *ip)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
}

static void
sa6(struct sockaddr_storage *ss, const char *ip)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
}

static const char *cfg_acl_yaml =
    "hosts: [a.example, b.example]\n"
    "acl:\n"
    "  admin:\n"
    "    user: [\"Boss@a.example\", root]\n"
    "  peers:\n"
    "    server: b.example\n"
    "  lan:\n"
    "    ip: [\"10.1.0.0/16\", \"fd00::/8\"]\n"
    "  local:\n"
    "    user_regexp: \"^(alice|bob)$\"\n"
    "  phones:\n"
    "    resource_regexp: \"^phone\"\n"
    "  blocked:\n"
    "    user: mallory@a.example\n"
    "access_rules:\n"
    "  c2s:\n"
    "    - deny: blocked\n"
    "    - allow: all\n"
    "  admin_only:\n"
    "    allow: admin\n"
    "  order:\n"
    "    - allow: lan\n"
    "    - deny: lan\n"
    "  lan_or_local:\n"
    "    - deny: phones\n"
    "    - allow: lan\n"
    "    - allow: local\n"
    "  inline:\n"
    "    - allow: {ip: \"127.0.0.1\"}\n";

static void
test_config__acl_parsing(void **state)
{
    (void)state;
    xd_config_t *cfg = cfg_ok(cfg_acl_yaml);
    const xd_acl_t *admin = xd_config_acl(&cfg->global, "admin");
    assert_non_null(admin);
    assert_int_equal(admin->user.count, 2);
    assert_string_equal(admin->user.items[0], "boss@a.example");
    assert_string_equal(admin->user.items[1], "root");
    const xd_acl_t *lan = xd_config_acl(&cfg->global, "lan");
    assert_int_equal(lan->ip.count, 2);
    assert_int_equal(lan->ip.items[0].family, AF_INET);
    assert_int_equal(lan->ip.items[0].prefix, 16);
    assert_int_equal(lan->ip.items[1].family, AF_INET6);
    assert_int_equal(lan->ip.items[1].prefix, 8);
    assert_null(xd_config_acl(&cfg->global, "nope"));
    xd_config_unref(cfg);

    cfg_err("acl:\n  lan:\n    ip: [\"10.0.0.0/33\"]\n",
            "xmppd.yml:3:10: acl.lan.ip[0]: invalid IP range \"10.0.0.0/33\" (expected an "
            "address or a CIDR such as 127.0.0.0/8 or ::1/128)");
    /* The reason in parentheses is the C library's regerror() text. */
    cfg_err_prefix("acl:\n  bad:\n    user_regexp: \"(\"\n",
                   "xmppd.yml:3:18: acl.bad.user_regexp: invalid regular expression \"(\" (");
    cfg_err("acl:\n  all:\n    user: x\n",
            "xmppd.yml:2:3: acl.all: \"all\" is a built-in ACL and cannot be redefined");
    cfg_err("acl:\n  x:\n    user: \"a@b@c\"\n    group: g\n",
            "xmppd.yml:4:5: acl.x.group: unknown option\n"
            "xmppd.yml:3:11: acl.x.user: invalid user \"a@b@c\" (expected user@domain or a "
            "localpart: domainpart is not a valid domain name or IP address)");
    cfg_err("access_rules:\n  c2s:\n    - deny: blocked\n    - allow: all\n",
            "xmppd.yml:3:13: access_rules.c2s[0].deny: unknown ACL \"blocked\"");
    cfg_err("access_rules:\n  c2s:\n    permit: all\n",
            "xmppd.yml:3:5: access_rules.c2s.permit: invalid action \"permit\" (expected allow "
            "or deny)");
    cfg_err("access_rules:\n  c2s:\n    - {allow: all, deny: all}\n",
            "xmppd.yml:3:7: access_rules.c2s[0]: expected a mapping with one clause such as "
            "{allow: all}, got several keys");
    cfg_err("access_rules:\n  c2s: all\n",
            "xmppd.yml:2:8: access_rules.c2s: expected a list of clauses such as [{allow: all}], "
            "got a scalar");
}

static void
test_config__cidr(void **state)
{
    (void)state;
    xd_cidr_t c;
    struct sockaddr_storage ss;
    assert_int_equal(xd_cidr_parse("127.0.0.0/8", &c), 0);
    sa4(&ss, "127.9.9.9");
    assert_true(xd_cidr_match(&c, (struct sockaddr *)&ss));
    sa4(&ss, "128.0.0.1");
    assert_false(xd_cidr_match(&c, (struct sockaddr *)&ss));
    /* An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d. */
    sa6(&ss, "::ffff:127.0.0.1");
    assert_true(xd_cidr_match(&c, (struct sockaddr *)&ss));
    assert_int_equal(xd_cidr_parse("10.1.2.3/12", &c), 0); /* host bits dropped */
    sa4(&ss, "10.15.255.255");
    assert_true(xd_cidr_match(&c, (struct sockaddr *)&ss));
    sa4(&ss, "10.16.0.0");
    assert_false(xd_cidr_match(&c, (struct sockaddr *)&ss));
    assert_int_equal(xd_cidr_parse("::1", &c), 0);
    assert_int_equal(c.prefix, 128);
    sa6(&ss, "::1");
    assert_true(xd_cidr_match(&c, (struct sockaddr *)&ss));
    sa6(&ss, "::2");
    assert_false(xd_cidr_match(&c, (struct sockaddr *)&ss));
    assert_int_equal(xd_cidr_parse("2001:db8::/33", &c), 0);
    sa6(&ss, "2001:db8:7fff::1");
    assert_true(xd_cidr_match(&c, (struct sockaddr *)&ss));
    sa6(&ss, "2001:db8:8000::1");
    assert_false(xd_cidr_match(&c, (struct sockaddr *)&ss));
    assert_int_equal(xd_cidr_parse("0.0.0.0/0", &c), 0);
    sa4(&ss, "8.8.8.8");
    assert_true(xd_cidr_match(&c, (struct sockaddr *)&ss));
    sa6(&ss, "2001:db8::1");
    assert_false(xd_cidr_match(&c, (struct sockaddr *)&ss));
    assert_int_equal(xd_cidr_parse("10.0.0.0/", &c), XD_EINVAL);
    assert_int_equal(xd_cidr_parse("300.0.0.0/8", &c), XD_EINVAL);
    assert_int_equal(xd_cidr_parse("::/129", &c), XD_EINVAL);
    assert_false(xd_cidr_match(&c, NULL));
}

static void
test_config__access_evaluation(void **state)
{
    (void)state;
    xd_config_t *cfg = cfg_ok(cfg_acl_yaml);
    xd_jid_t *boss, *root_a, *root_b, *mallory, *alice, *alice_b, *carol_b, *alice_phone;
    jid_of("boss@a.example", &boss);
    jid_of("root@a.example", &root_a);
    jid_of("root@b.example", &root_b);
    jid_of("mallory@a.example/x", &mallory);
    jid_of("alice@a.example", &alice);
    jid_of("alice@b.example", &alice_b);
    jid_of("carol@b.example", &carol_b);
    jid_of("alice@a.example/phone-1", &alice_phone);
    struct sockaddr_storage lan4, lan6, wan4, lo;
    sa4(&lan4, "10.1.200.3");
    sa6(&lan6, "fd12::1");
    sa4(&wan4, "10.2.0.1");
    sa4(&lo, "127.0.0.1");
    const struct sockaddr *L4 = (struct sockaddr *)&lan4, *L6 = (struct sockaddr *)&lan6,
                          *W4 = (struct sockaddr *)&wan4, *LO = (struct sockaddr *)&lo;

    /* user: a full JID, and a bare localpart meaning "at the host asked about". */
    assert_int_equal(xd_access_match(cfg, "a.example", "admin_only", boss, NULL), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "b.example", "admin_only", boss, NULL), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "admin_only", root_a, NULL),
                     XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "admin_only", root_b, NULL),
                     XD_ACCESS_DENY);
    assert_int_equal(xd_access_match(cfg, "b.example", "admin_only", root_b, NULL),
                     XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "admin_only", alice, NULL), XD_ACCESS_DENY);
    /* Deny first, then allow all. */
    assert_int_equal(xd_access_match(cfg, "a.example", "c2s", mallory, NULL), XD_ACCESS_DENY);
    assert_int_equal(xd_access_match(cfg, "a.example", "c2s", alice, NULL), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "c2s", NULL, NULL), XD_ACCESS_ALLOW);
    /* ip: v4 and v6 ranges; list order decides (first match wins). */
    assert_int_equal(xd_access_match(cfg, "a.example", "order", NULL, L4), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "order", NULL, L6), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "order", NULL, W4), XD_ACCESS_DENY);
    /* user_regexp: localparts of users of the host asked about. */
    assert_int_equal(xd_access_match(cfg, "a.example", "lan_or_local", alice, W4),
                     XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "lan_or_local", alice_b, W4),
                     XD_ACCESS_DENY);
    assert_int_equal(xd_access_match(cfg, "b.example", "lan_or_local", alice_b, W4),
                     XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "b.example", "lan_or_local", carol_b, W4),
                     XD_ACCESS_DENY);
    assert_int_equal(xd_access_match(cfg, "b.example", "lan_or_local", carol_b, L4),
                     XD_ACCESS_ALLOW);
    /* resource_regexp, checked first, denies even a matching user on the LAN. */
    assert_int_equal(xd_access_match(cfg, "a.example", "lan_or_local", alice_phone, L4),
                     XD_ACCESS_DENY);
    /* server. */
    const xd_acl_t *peers = xd_config_acl(&cfg->global, "peers");
    assert_true(xd_acl_match(&cfg->global, peers, "a.example", carol_b, NULL));
    assert_false(xd_acl_match(&cfg->global, peers, "a.example", alice, NULL));
    /* Inline ACL. */
    assert_int_equal(xd_access_match(cfg, "a.example", "inline", NULL, LO), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "inline", NULL, W4), XD_ACCESS_DENY);
    /* Built-in and unknown rules. */
    assert_int_equal(xd_access_match(cfg, "a.example", "all", NULL, NULL), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "none", boss, NULL), XD_ACCESS_DENY);
    assert_int_equal(xd_access_match(cfg, "a.example", "no_such_rule", boss, NULL),
                     XD_ACCESS_DENY);
    /* A host that is not served uses the top-level rules. */
    assert_int_equal(xd_access_match(cfg, "other.example", "c2s", alice, NULL), XD_ACCESS_ALLOW);

    xd_jid_t *all[] = { boss, root_a, root_b, mallory, alice, alice_b, carol_b, alice_phone };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        xd_jid_unref(all[i]);
    xd_config_unref(cfg);
}

static void
test_config__host_config(void **state)
{
    (void)state;
    const char *y = "hosts: [a.example, b.example]\n"
                    "auth_method: internal\n"
                    "language: en\n"
                    "acl:\n"
                    "  admin: {user: \"boss@a.example\"}\n"
                    "access_rules:\n"
                    "  configure: [{allow: admin}]\n"
                    "  register: [{allow: all}]\n"
                    "modules:\n"
                    "  mod_ping: {send_pings: false}\n"
                    "  mod_disco: ~\n"
                    "host_config:\n"
                    "  B.example:\n"
                    "    auth_method: anonymous\n"
                    "    acl:\n"
                    "      admin: {user: \"chief@b.example\"}\n"
                    "    access_rules:\n"
                    "      register: [{deny: all}]\n"
                    "    modules:\n"
                    "      mod_ping: {send_pings: true}\n"
                    "      mod_muc: {}\n";
    xd_config_t *cfg = cfg_ok(y);
    const xd_host_conf_t *a = xd_config_host(cfg, "a.example");
    const xd_host_conf_t *b = xd_config_host(cfg, "b.example");
    assert_int_equal(a->auth_method, XD_AUTH_INTERNAL);
    assert_int_equal(b->auth_method, XD_AUTH_ANONYMOUS);
    assert_string_equal(b->language, "en"); /* inherited */
    assert_string_equal(b->host, "b.example");

    xd_jid_t *boss, *chief;
    jid_of("boss@a.example", &boss);
    jid_of("chief@b.example", &chief);
    assert_int_equal(xd_access_match(cfg, "a.example", "configure", boss, NULL), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "a.example", "configure", chief, NULL), XD_ACCESS_DENY);
    /* On b the host's own "admin" ACL wins, used by the top-level rule. */
    assert_int_equal(xd_access_match(cfg, "b.example", "configure", chief, NULL), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "b.example", "configure", boss, NULL), XD_ACCESS_DENY);
    assert_int_equal(xd_access_match(cfg, "a.example", "register", NULL, NULL), XD_ACCESS_ALLOW);
    assert_int_equal(xd_access_match(cfg, "b.example", "register", NULL, NULL), XD_ACCESS_DENY);
    xd_jid_unref(boss);
    xd_jid_unref(chief);

    /* Modules merge by name, the host's entry winning. */
    const xd_module_conf_t *m = xd_config_module(cfg, "b.example", "mod_ping");
    assert_string_equal(xd_conf_map_get(m->opts, "send_pings")->value, "true");
    m = xd_config_module(cfg, "a.example", "mod_ping");
    assert_string_equal(xd_conf_map_get(m->opts, "send_pings")->value, "false");
    assert_non_null(xd_config_module(cfg, "b.example", "mod_disco"));
    assert_null(xd_config_module(cfg, "b.example", "mod_disco")->opts);
    assert_non_null(xd_config_module(cfg, "b.example", "mod_muc"));
    assert_null(xd_config_module(cfg, "a.example", "mod_muc"));
    xd_config_unref(cfg);

    cfg_err("hosts: [a.example]\nhost_config:\n  c.example:\n    language: de\n",
            "xmppd.yml:3:3: host_config.c.example: host \"c.example\" is not listed in hosts");
    cfg_err("hosts: [a.example]\nhost_config:\n  a.example: ~\n  A.Example: ~\n",
            "xmppd.yml:4:3: host_config.A.Example: host \"A.Example\" appears twice (also at "
            "line 3 column 3)");
    cfg_err("hosts: [a.example]\nhost_config:\n  a.example: [language]\n",
            "xmppd.yml:3:14: host_config.a.example: expected a mapping of options, got a "
            "sequence");
    cfg_err("hosts: [a.example]\nhost_config:\n  a.example:\n    workers: 2\n    colour: red\n",
            "xmppd.yml:4:5: host_config.a.example.workers: option cannot be set per host (it is "
            "not marked host in docs/configuration.md)\n"
            "xmppd.yml:5:5: host_config.a.example.colour: unknown option");
    cfg_err("hosts: [a.example]\nhost_config:\n  a.example:\n    scram_iterations: 10\n",
            "xmppd.yml:4:23: host_config.a.example.scram_iterations: 10 is out of range "
            "(expected 1024..1000000)");
    cfg_err("hosts: [a.example]\nhost_config:\n  a.example:\n"
            "    access_rules: {r: [{allow: ghost}]}\n",
            "xmppd.yml:4:32: host_config.a.example.access_rules.r[0].allow: unknown ACL "
            "\"ghost\"");
    cfg_err("hosts: [a.example]\nhost_config:\n  a.example:\n    auth_method: external\n",
            "xmppd.yml:4:18: host_config.a.example.auth_method: external authentication "
            "needs extauth_program for host a.example");
    cfg_err("auth_method: external\n",
            "xmppd.yml:1:14: auth_method: external authentication needs extauth_program");
}

static void
test_config__shapers(void **state)
{
    (void)state;
    xd_config_t *cfg = cfg_ok("acl:\n  admin: {user: boss}\n"
                              "shaper:\n  normal: 1000\n  fast: {rate: 50000, burst_size: 9}\n"
                              "shaper_rules:\n  max_user_sessions: 10\n"
                              "  c2s_shaper:\n    - none: admin\n    - normal: all\n"
                              "listen:\n  - port: 5222\n    shaper: c2s_shaper\n");
    const xd_shaper_t *s = xd_config_shaper(cfg, "normal");
    assert_int_equal(s->rate_bytes, 1000);
    assert_int_equal(s->burst_bytes, 1000);
    s = xd_config_shaper(cfg, "fast");
    assert_int_equal(s->rate_bytes, 50000);
    assert_int_equal(s->burst_bytes, 9);
    xd_jid_t *boss, *joe;
    jid_of("boss@localhost", &boss);
    jid_of("joe@localhost", &joe);
    assert_string_equal(xd_shaper_rule_match(cfg, "localhost", "c2s_shaper", boss, NULL), "none");
    assert_string_equal(xd_shaper_rule_match(cfg, "localhost", "c2s_shaper", joe, NULL),
                        "normal");
    assert_string_equal(xd_shaper_rule_match(cfg, "localhost", "max_user_sessions", joe, NULL),
                        "10");
    assert_null(xd_shaper_rule_match(cfg, "localhost", "nope", joe, NULL));
    xd_jid_unref(boss);
    xd_jid_unref(joe);
    xd_config_unref(cfg);

    cfg_err("shaper_rules:\n  c2s_shaper: [{turbo: all}]\n",
            "xmppd.yml:2:17: shaper_rules.c2s_shaper[0].turbo: unknown shaper \"turbo\"");
    cfg_err("shaper:\n  normal: fast\n",
            "xmppd.yml:2:11: shaper.normal: invalid integer \"fast\" (expected an integer)");
    cfg_err("shaper:\n  normal: {burst_size: 5}\n",
            "xmppd.yml:2:11: shaper.normal.rate: missing required option");
}

static void
test_config__modules(void **state)
{
    (void)state;
    cfg_err("modules:\n  mod_ping: [1]\n",
            "xmppd.yml:2:13: modules.mod_ping: expected a mapping of module options, got a "
            "sequence");
    cfg_err("modules: [mod_ping]\n",
            "xmppd.yml:1:10: modules: expected a mapping of module names to options, got a "
            "sequence");
}

static void
test_config__example_file_loads(void **state)
{
    (void)state;
    const char *src = getenv("XD_TEST_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/examples/xmppd.yml", src ? src : ".");
    xd_config_t *cfg = NULL;
    char *err = NULL;
    int rc = xd_config_load(path, &cfg, &err);
    if (rc != 0)
        fail_msg("%s: %s", path, err ? err : xd_strerror(rc));
    assert_int_equal(xd_config_host_count(cfg), 2);
    assert_int_equal(xd_config_listen_count(cfg), 4);
    assert_true(xd_config_listen(cfg, 1)->tls);
    assert_int_equal(xd_config_listen(cfg, 2)->module, XD_LISTEN_MOD_S2S);
    assert_int_equal(xd_config_listen(cfg, 3)->module, XD_LISTEN_MOD_COMPONENT);
    assert_int_equal(xd_config_host(cfg, "example.net")->auth_method, XD_AUTH_ANONYMOUS);
    assert_int_equal(xd_config_host(cfg, "example.org")->auth_method, XD_AUTH_INTERNAL);
    assert_string_equal(cfg->path, path);
    xd_config_unref(cfg);
}

static void
test_config__publish_and_get(void **state)
{
    (void)state;
    assert_null(xd_config_get());
    xd_config_t *a = NULL, *b = NULL;
    assert_int_equal(xd_config_default(&a), 0);
    assert_int_equal(xd_config_default(&b), 0);
    xd_config_publish(a); /* takes our reference */
    xd_config_t *got = xd_config_get();
    assert_ptr_equal(got, a);
    assert_int_equal(atomic_load(&a->refs), 2);
    xd_config_publish(b); /* a survives: we still hold `got` */
    assert_int_equal(atomic_load(&a->refs), 1);
    xd_config_unref(got);
    got = xd_config_get();
    assert_ptr_equal(got, b);
    xd_config_unref(got);
    xd_config_publish(NULL);
    assert_null(xd_config_get());
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config__tree_locations),
        cmocka_unit_test(test_config__tree_duplicate_key),
        cmocka_unit_test(test_config__tree_multiple_documents),
        cmocka_unit_test(test_config__tree_aliases),
        cmocka_unit_test(test_config__tree_alias_bomb_rejected),
        cmocka_unit_test(test_config__tree_syntax_error_location),
        cmocka_unit_test(test_config__defaults),
        cmocka_unit_test(test_config__every_default_parses),
        cmocka_unit_test(test_config__bool),
        cmocka_unit_test(test_config__int),
        cmocka_unit_test(test_config__duration),
        cmocka_unit_test(test_config__module_options_error_format),
        cmocka_unit_test(test_config__size),
        cmocka_unit_test(test_config__string_and_path),
        cmocka_unit_test(test_config__enum),
        cmocka_unit_test(test_config__string_list),
        cmocka_unit_test(test_config__domains),
        cmocka_unit_test(test_config__jid),
        cmocka_unit_test(test_config__loglevel_and_workers),
        cmocka_unit_test(test_config__node_outlives_document),
        cmocka_unit_test(test_config__map),
        cmocka_unit_test(test_config__sub_tables),
        cmocka_unit_test(test_config__unknown_key_and_many_errors),
        cmocka_unit_test(test_config__builtin_defaults),
        cmocka_unit_test(test_config__hosts),
        cmocka_unit_test(test_config__sql_per_host),
        cmocka_unit_test(test_config__listen),
        cmocka_unit_test(test_config__acl_parsing),
        cmocka_unit_test(test_config__cidr),
        cmocka_unit_test(test_config__access_evaluation),
        cmocka_unit_test(test_config__host_config),
        cmocka_unit_test(test_config__shapers),
        cmocka_unit_test(test_config__modules),
        cmocka_unit_test(test_config__example_file_loads),
        cmocka_unit_test(test_config__publish_and_get),
        cmocka_unit_test(test_config__ctl_socket_path_length),
        cmocka_unit_test(test_config__large_mappings),
        cmocka_unit_test(test_config__check_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
