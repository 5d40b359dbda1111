/*
 * test_privacy.c — the privacy engine (src/mod/privacy_*.c) and the XEP-0016
 * list codec (src/mod/mod_privacy.c).
 *
 * Pure matcher: the JID rules of XEP-0016 2.1 one by one, first match by
 * ascending order, each item type (jid, group, subscription, none), each
 * stanza kind (message, iq, presence-in, presence-out, and stanzas of no
 * kind), fall-through.  Codec: every bad-request case of a <list/>, and a
 * round trip.  Store (a real SQLite file per test, fake sessions in the
 * session table, a published config so that bounces can be routed): active
 * list against default list for full and bare JIDs through the filter
 * hook, the conflicts of XEP-0016 2.5/2.8, the blocklist as a view of the
 * default list (create, prepend, shift, unblock, unblock all), group and
 * subscription items with the roster copy and its refresh, limits, reload
 * from storage, account removal, the migration of mod_blocking's old
 * table, and many accounts (spread over the store's shards) routed on
 * several threads while others change.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "mod/mod_roster.h"
#include "mod/privacy.h"
#include "router/sm.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/module.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

#define H "example.org"

extern const xd_module_t xd_mod_roster, xd_mod_privacy, xd_mod_blocking;
static mod_roster_store_t g_rs; /* the roster storage the tests write directly */
#define RS (&g_rs)

/* The modules the engine runs under, as a configuration would list them. */
#define MODS_ROSTER "  mod_roster: {}\n"
#define MODS_PRIVACY "  mod_privacy: {max_lists: 3, max_items: 6}\n"
#define MODS_BLOCKING "  mod_blocking: {max_items: 4}\n"

static xd_jid_t *
jid(const char *s)
{
    xd_jid_t *j = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c(s), &j), 0);
    return j;
}

static xd_el_t *
el(const char *xml)
{
    xd_el_t *e = NULL;
    assert_int_equal(xd_el_parse(xml, strlen(xml), &e), 0);
    return e;
}

static xd_privacy_item_t
item(xd_privacy_type t, const char *v, bool deny, uint32_t order, unsigned kinds)
{
    return (xd_privacy_item_t){ .type = t, .value = (char *)v, .deny = deny, .order = order,
                                .kinds = kinds };
}

/* Decides for other (with sub/groups) and kind k: 'a' allow by an item, 'd'
 * deny, '-' no item. */
static char
decide(const xd_privacy_list_t *l, const char *other, int sub, const char *const *groups,
       size_t ng, xd_privacy_kind k)
{
    xd_jid_t *j = jid(other);
    xd_privacy_peer_t p = { .jid = j, .sub = sub, .groups = groups, .ngroups = ng };
    const xd_privacy_item_t *it = xd_privacy_decide(l, &p, k);
    xd_jid_unref(j);
    return it ? (it->deny ? 'd' : 'a') : '-';
}

/* ---- the matcher ----------------------------------------------------------------------------- */

static void
test_privacy__jid_matching_order_of_2_1(void **state)
{
    (void)state;
    static const struct {
        const char *item, *jid;
        bool match;
    } cases[] = {
        /* user@domain/resource: only that resource. */
        { "bob@example.com/pda", "bob@example.com/pda", true },
        { "bob@example.com/pda", "bob@example.com/desk", false },
        { "bob@example.com/pda", "bob@example.com", false },
        /* user@domain: any resource, and the bare JID. */
        { "bob@example.com", "bob@example.com", true },
        { "bob@example.com", "bob@example.com/any", true },
        { "bob@example.com", "rob@example.com/any", false },
        { "bob@example.com", "example.com", false },
        /* domain/resource: that resource, whoever's. */
        { "example.com/bot", "example.com/bot", true },
        { "example.com/bot", "bob@example.com/bot", true },
        { "example.com/bot", "bob@example.com/pda", false },
        { "example.com/bot", "example.com", false },
        /* domain: everything at it, not its subdomains or its parent. */
        { "example.com", "example.com", true },
        { "example.com", "bob@example.com/x", true },
        { "example.com", "example.com/x", true },
        { "example.com", "muc.example.com", false },
        { "example.com", "bob@example.comx", false },
        { "muc.example.com", "example.com", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xd_jid_t *j = jid(cases[i].jid);
        if (xd_privacy_jid_matches(cases[i].item, j) != cases[i].match)
            fail_msg("item %s vs %s: expected %d", cases[i].item, cases[i].jid, cases[i].match);
        xd_jid_unref(j);
    }
}

static void
test_privacy__first_match_by_ascending_order(void **state)
{
    (void)state;
    xd_privacy_list_t l = { .name = xd_strdup("l") };
    /* Added out of order: the list is evaluated by 'order', not position. */
    xd_privacy_item_t a = item(XD_PRIVACY_ANY, NULL, true, 30, 0);
    xd_privacy_item_t b = item(XD_PRIVACY_JID, "bob@example.com", false, 10, 0);
    xd_privacy_item_t c = item(XD_PRIVACY_JID, "example.com", true, 20, 0);
    xd_privacy_list_add(&l, &a);
    xd_privacy_list_add(&l, &b);
    xd_privacy_list_add(&l, &c);
    assert_int_equal(xd_privacy_list_sort(&l), 0);
    assert_int_equal(l.items[0].order, 10);
    assert_int_equal(l.items[2].order, 30);
    assert_int_equal(decide(&l, "bob@example.com/x", 0, NULL, 0, XD_PRIVACY_MESSAGE), 'a');
    assert_int_equal(decide(&l, "eve@example.com", 0, NULL, 0, XD_PRIVACY_MESSAGE), 'd');
    assert_int_equal(decide(&l, "eve@example.net", 0, NULL, 0, XD_PRIVACY_MESSAGE), 'd');
    /* Renumbered: the domain deny now comes first and wins for bob too. */
    l.items[1].order = 5;
    assert_int_equal(xd_privacy_list_sort(&l), 0);
    assert_int_equal(decide(&l, "bob@example.com/x", 0, NULL, 0, XD_PRIVACY_MESSAGE), 'd');
    /* Two items with one order: refused (2.1 bad-request). */
    l.items[2].order = 10;
    assert_int_equal(xd_privacy_list_sort(&l), XD_EEXIST);
    xd_privacy_list_clear(&l);
    assert_null(l.items);
    assert_null(xd_privacy_decide(NULL, NULL, XD_PRIVACY_MESSAGE));
}

static void
test_privacy__item_types(void **state)
{
    (void)state;
    xd_privacy_list_t l = { .name = xd_strdup("t") };
    xd_privacy_item_t its[] = {
        item(XD_PRIVACY_GROUP, "Enemies", true, 1, 0),
        item(XD_PRIVACY_SUBSCRIPTION, "both", false, 2, 0),
        item(XD_PRIVACY_SUBSCRIPTION, "none", true, 3, 0),
        item(XD_PRIVACY_SUBSCRIPTION, "from", true, 4, XD_PRIVACY_MESSAGE),
    };
    for (size_t i = 0; i < 4; i++)
        xd_privacy_list_add(&l, &its[i]);
    assert_true(xd_privacy_list_needs_roster(&l));
    const char *enemies[] = { "Friends", "Enemies" }, *friends[] = { "Friends" };
    /* Group: in that group, whatever the subscription. */
    assert_int_equal(decide(&l, "a@x.org", MOD_ROSTER_SUB_BOTH, enemies, 2, XD_PRIVACY_IQ), 'd');
    /* Subscription: both allowed, none (also strangers) denied. */
    assert_int_equal(decide(&l, "a@x.org", MOD_ROSTER_SUB_BOTH, friends, 1, XD_PRIVACY_IQ), 'a');
    assert_int_equal(decide(&l, "a@x.org", MOD_ROSTER_SUB_NONE, NULL, 0, XD_PRIVACY_IQ), 'd');
    /* 'from' denies messages only; 'to' matches nothing. */
    assert_int_equal(decide(&l, "a@x.org", MOD_ROSTER_SUB_FROM, NULL, 0, XD_PRIVACY_MESSAGE), 'd');
    assert_int_equal(decide(&l, "a@x.org", MOD_ROSTER_SUB_FROM, NULL, 0, XD_PRIVACY_IQ), '-');
    assert_int_equal(decide(&l, "a@x.org", MOD_ROSTER_SUB_TO, NULL, 0, XD_PRIVACY_MESSAGE), '-');
    /* Type none: everyone. */
    xd_privacy_item_t any = item(XD_PRIVACY_ANY, NULL, false, 9, 0);
    xd_privacy_list_add(&l, &any);
    assert_int_equal(decide(&l, "a@x.org", MOD_ROSTER_SUB_TO, NULL, 0, XD_PRIVACY_MESSAGE), 'a');
    xd_privacy_list_clear(&l);
    xd_privacy_list_t j = { .name = xd_strdup("j") };
    xd_privacy_item_t ji = item(XD_PRIVACY_JID, "a@x.org", true, 1, 0);
    xd_privacy_list_add(&j, &ji);
    assert_false(xd_privacy_list_needs_roster(&j));
    assert_true(xd_privacy_is_block_item(&j.items[0]));
    j.items[0].kinds = XD_PRIVACY_MESSAGE;
    assert_false(xd_privacy_is_block_item(&j.items[0]));
    xd_privacy_list_clear(&j);
}

static void
test_privacy__stanza_kinds(void **state)
{
    (void)state;
    static const struct {
        const char *xml;
        xd_privacy_kind in, out;
    } cases[] = {
        { "<message/>", XD_PRIVACY_MESSAGE, XD_PRIVACY_OTHER },
        { "<message type='error'/>", XD_PRIVACY_MESSAGE, XD_PRIVACY_OTHER },
        { "<iq type='get'/>", XD_PRIVACY_IQ, XD_PRIVACY_OTHER },
        { "<presence/>", XD_PRIVACY_PRESENCE_IN, XD_PRIVACY_PRESENCE_OUT },
        { "<presence type='unavailable'/>", XD_PRIVACY_PRESENCE_IN, XD_PRIVACY_PRESENCE_OUT },
        /* Not notifications (2.1 note): subscriptions and probes. */
        { "<presence type='subscribe'/>", XD_PRIVACY_OTHER, XD_PRIVACY_OTHER },
        { "<presence type='probe'/>", XD_PRIVACY_OTHER, XD_PRIVACY_OTHER },
        { "<presence type='error'/>", XD_PRIVACY_OTHER, XD_PRIVACY_OTHER },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xd_el_t *e = el(cases[i].xml);
        assert_int_equal(xd_privacy_kind_of(e, false), cases[i].in);
        assert_int_equal(xd_privacy_kind_of(e, true), cases[i].out);
        xd_el_free(e);
    }
    /* One item per kind: each matches its kind only; none matches OTHER. */
    static const xd_privacy_kind kinds[] = { XD_PRIVACY_MESSAGE, XD_PRIVACY_IQ,
                                             XD_PRIVACY_PRESENCE_IN, XD_PRIVACY_PRESENCE_OUT };
    for (size_t i = 0; i < 4; i++) {
        xd_privacy_list_t l = { .name = xd_strdup("k") };
        xd_privacy_item_t it = item(XD_PRIVACY_JID, "eve@x.org", true, 1, kinds[i]);
        xd_privacy_list_add(&l, &it);
        for (size_t k = 0; k < 4; k++)
            assert_int_equal(decide(&l, "eve@x.org/r", 0, NULL, 0, kinds[k]), i == k ? 'd' : '-');
        assert_int_equal(decide(&l, "eve@x.org/r", 0, NULL, 0, XD_PRIVACY_OTHER), '-');
        /* Several kinds in one item. */
        l.items[0].kinds |= XD_PRIVACY_PRESENCE_OUT;
        assert_int_equal(decide(&l, "eve@x.org", 0, NULL, 0, XD_PRIVACY_PRESENCE_OUT), 'd');
        /* No kinds: everything, OTHER included (2.13). */
        l.items[0].kinds = 0;
        assert_int_equal(decide(&l, "eve@x.org", 0, NULL, 0, XD_PRIVACY_OTHER), 'd');
        assert_int_equal(decide(&l, "eve@x.org", 0, NULL, 0, kinds[i]), 'd');
        xd_privacy_list_clear(&l);
    }
}

static void
test_privacy__fall_through(void **state)
{
    (void)state;
    xd_privacy_list_t l = { .name = xd_strdup("f") };
    xd_privacy_item_t a = item(XD_PRIVACY_JID, "friend@x.org", false, 1, 0);
    xd_privacy_list_add(&l, &a);
    /* No match: allowed (rule 7), reported as no item. */
    assert_int_equal(decide(&l, "eve@x.org", 0, NULL, 0, XD_PRIVACY_MESSAGE), '-');
    /* A fall-through deny catches everyone not allowed before it. */
    xd_privacy_item_t d = item(XD_PRIVACY_ANY, NULL, true, 2, XD_PRIVACY_MESSAGE);
    xd_privacy_list_add(&l, &d);
    assert_int_equal(decide(&l, "eve@x.org", 0, NULL, 0, XD_PRIVACY_MESSAGE), 'd');
    assert_int_equal(decide(&l, "eve@x.org", 0, NULL, 0, XD_PRIVACY_IQ), '-');
    assert_int_equal(decide(&l, "friend@x.org/r", 0, NULL, 0, XD_PRIVACY_MESSAGE), 'a');
    xd_privacy_list_clear(&l);
}

/* ---- the codec ------------------------------------------------------------------------------- */

static int
parse(const char *xml, xd_privacy_list_t *out, const char **why)
{
    xd_el_t *e = el(xml);
    int rc = xd_privacy_list_parse(e, out, why);
    xd_el_free(e);
    return rc;
}

static void
test_privacy__list_codec(void **state)
{
    (void)state;
    xd_privacy_list_t l;
    const char *why;
    assert_int_equal(
        parse("<list xmlns='jabber:iq:privacy' name='pub'>"
              "<item type='jid' value='Tybalt@Example.COM' action='deny' order='3'>"
              "<message/><presence-in/></item>"
              "<item type='group' value='Enemies' action='deny' order='1'/>"
              "<item type='subscription' value='none' action='allow' order='4294967295'/>"
              "<item action='allow' order='0' value='ignored'/></list>",
              &l, &why),
        0);
    assert_string_equal(l.name, "pub");
    assert_int_equal(l.n, 4);
    assert_int_equal(l.items[0].order, 0);
    assert_int_equal(l.items[0].type, XD_PRIVACY_ANY);
    assert_null(l.items[0].value);
    assert_int_equal(l.items[2].type, XD_PRIVACY_JID);
    assert_string_equal(l.items[2].value, "tybalt@example.com"); /* normalised */
    assert_int_equal(l.items[2].kinds, XD_PRIVACY_MESSAGE | XD_PRIVACY_PRESENCE_IN);
    assert_int_equal(l.items[3].order, 4294967295u);
    /* Round trip through the element. */
    xd_el_t *q = xd_el_new("query", XD_NS_PRIVACY);
    xd_privacy_list_to_el(q, &l, true);
    xd_privacy_list_t back;
    assert_int_equal(xd_privacy_list_parse(xd_el_first_child(q), &back, &why), 0);
    assert_int_equal(back.n, l.n);
    for (size_t i = 0; i < l.n; i++) {
        assert_int_equal(back.items[i].type, l.items[i].type);
        assert_int_equal(back.items[i].order, l.items[i].order);
        assert_int_equal(back.items[i].deny, l.items[i].deny);
        assert_int_equal(back.items[i].kinds, l.items[i].kinds);
        if (l.items[i].value)
            assert_string_equal(back.items[i].value, l.items[i].value);
    }
    xd_privacy_list_clear(&back);
    xd_el_free(q);
    xd_privacy_list_clear(&l);

    static const char *const bad[] = {
        "<list xmlns='jabber:iq:privacy'><item action='deny' order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name=''><item action='deny' order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item action='block' order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item action='deny'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item action='deny' order='-1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item action='deny' order='1x'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item action='deny' order='4294967296'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item type='user' value='a' action='deny' "
        "order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item type='jid' action='deny' "
        "order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item type='group' value='' action='deny' "
        "order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item type='jid' value='@bad' action='deny' "
        "order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item type='subscription' value='remove' "
        "action='deny' order='1'/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item action='deny' order='1'><presence/>"
        "</item></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><thing/></list>",
        "<list xmlns='jabber:iq:privacy' name='x'><item action='deny' order='7'/>"
        "<item action='allow' order='7'/></list>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        if (parse(bad[i], &l, &why) != XD_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(why);
        assert_null(l.items);
        assert_null(l.name);
    }
}

/* ---- the store ------------------------------------------------------------------------------- */

typedef struct {
    char dir[256];      /* mkdtemp directory */
    char path[320];     /* the database */
    xd_db_params_t prm; /* sqlite params */
    xd_db_t *db;        /* open database */
    xd_session_info_t s[4]; /* bound fake sessions */
    size_t ns;          /* how many */
} fx_t;

static int
fx_open(fx_t *f)
{
    const xd_module_t *mods[] = { &xd_mod_roster, &xd_mod_privacy, &xd_mod_blocking };
    for (size_t i = 0; i < 3; i++) {
        int rc = xd_module_register_builtin(mods[i]); /* and their tables */
        if (rc != 0 && rc != XD_EEXIST)
            return -1;
    }
    if (xd_db_open(&f->prm, &f->db) != 0)
        return -1;
    xd_modules_set_db(f->db);
    g_rs = (mod_roster_store_t){ .db = f->db };
    return 0;
}

/* Runs exactly the modules listed (MODS_*) on H: starts, stops or
 * reloads as needed. */
static void
fx_modules(const char *mods)
{
    char yml[512];
    snprintf(yml, sizeof yml, "hosts: [" H "]\nmodules:\n%s", mods);
    xd_config_t *cfg = NULL;
    char *err = NULL;
    if (xd_config_load_string("t.yml", yml, strlen(yml), &cfg, &err) != 0)
        fail_msg("config: %s", err);
    static bool running;
    int rc = running ? xd_modules_reload(cfg, &err) : xd_modules_start(cfg, &err);
    if (rc != 0)
        fail_msg("modules: %s", err ? err : "?");
    running = true;
    xd_config_unref(cfg);
}

static int
fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/xd_test_privacy.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/xmppd.db", f->dir);
    f->prm = (xd_db_params_t){ .driver = "sqlite", .path = f->path, .busy_timeout_ms = 2000 };
    static const char yml[] = "hosts: [" H "]\n";
    xd_config_t *cfg = NULL;
    char *err = NULL;
    if (xd_config_load_string("t.yml", yml, sizeof yml - 1, &cfg, &err) != 0)
        return -1;
    xd_config_publish(cfg);
    if (xd_sm_init() != 0)
        return -1;
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *f = *state;
    xd_modules_stop();
    xd_modules_set_db(NULL);
    g_rs = (mod_roster_store_t){ 0 };
    for (size_t i = 0; i < f->ns; i++) {
        xd_sm_unbind(f->s[i].jid, f->s[i].ref.id);
        xd_jid_unref(f->s[i].jid);
    }
    xd_sm_shutdown();
    if (f->db)
        xd_db_close(f->db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* Opens the database and runs the engine for H (both modules). */
static void
fx_start(fx_t *f)
{
    assert_int_equal(fx_open(f), 0);
    xd_modules_stop(); /* a fresh start in every test */
    fx_modules(MODS_ROSTER MODS_PRIVACY MODS_BLOCKING);
    assert_true(xd_privacy_store_runs(H, XD_PRIVACY_BY_BLOCKING));
}

/* Binds a fake session (not available: no presence work). */
static const xd_jid_t *
fx_bind(fx_t *f, const char *full)
{
    xd_session_info_t *e = &f->s[f->ns];
    *e = (xd_session_info_t){ .jid = jid(full), .ref = { .worker = 0, .id = 100 + f->ns } };
    assert_int_equal(xd_sm_bind(e, NULL), 0);
    f->ns++;
    return e->jid;
}

/* Parses and sets a list for req. */
static int
set_list(const xd_jid_t *req, const char *xml)
{
    xd_privacy_list_t l;
    const char *why;
    assert_int_equal(parse(xml, &l, &why), 0);
    int rc = xd_privacy_set_list(req, &l);
    xd_privacy_list_clear(&l);
    return rc;
}

/* Runs the filter on a stanza: true when it passed, false when refused. */
static bool
passes(const char *xml)
{
    xd_stanza_t *st = NULL;
    assert_int_equal(xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &st), 0);
    xd_hook_filter_t ev = { .host = H, .st = st };
    int rc = xd_hook_run(XD_HOOK_FILTER_PACKET, H, &ev);
    if (ev.st) {
        assert_int_equal(rc, XD_HOOK_OK);
        xd_stanza_unref(ev.st);
        return true;
    }
    assert_int_equal(rc, XD_HOOK_STOP);
    return false;
}

static bool
allows(const char *user, const char *other, const char *xml, bool outgoing)
{
    xd_jid_t *u = jid(user), *o = jid(other);
    xd_el_t *e = el(xml);
    xd_hook_privacy_check_t ev = { .user = u, .other = o, .el = e, .outgoing = outgoing };
    xd_hook_run(XD_HOOK_PRIVACY_CHECK_PACKET, H, &ev);
    bool r = !ev.deny;
    xd_el_free(e);
    xd_jid_unref(u);
    xd_jid_unref(o);
    return r;
}

static void
test_privacy__active_list_beats_default(void **state)
{
    fx_t *f = *state;
    fx_start(f);
    const xd_jid_t *a1 = fx_bind(f, "alice@" H "/one");
    const xd_jid_t *a2 = fx_bind(f, "alice@" H "/two");
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='strict'>"
                                  "<item type='jid' value='bob@" H "' action='deny' order='1'/>"
                                  "</list>"),
                     0);
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='open'>"
                                  "<item action='allow' order='1'/></list>"),
                     0);
    /* No default, no active list: everything flows (rule 3). */
    assert_true(passes("<message from='bob@" H "/x' to='alice@" H "/one'/>"));
    assert_int_equal(xd_privacy_set_default(a1, "nosuch"), XD_ENOTFOUND);
    assert_int_equal(xd_privacy_set_default(a1, "strict"), 0);
    assert_int_equal(xd_privacy_set_active(a1, "nosuch"), XD_ENOTFOUND);
    assert_int_equal(xd_privacy_set_active(a1, "open"), 0);
    /* Session one applies its active list only (rule 1), two the default. */
    assert_true(passes("<message from='bob@" H "/x' to='alice@" H "/one'/>"));
    assert_false(passes("<message from='bob@" H "/x' to='alice@" H "/two'/>"));
    assert_true(allows("alice@" H "/one", "bob@" H, "<message/>", false));
    assert_false(allows("alice@" H "/two", "bob@" H, "<message/>", false));
    /* The account as a whole (offline, IQs to the bare JID): the default. */
    assert_false(allows("alice@" H, "bob@" H, "<iq type='get'/>", false));
    assert_false(passes("<iq type='get' id='1' from='bob@" H "/x' to='alice@" H "'/>"));
    /* Outgoing from each session, by its own list: a deny without kinds
     * covers what alice sends too (2.13). */
    assert_true(passes("<message from='alice@" H "/one' to='bob@" H "'/>"));
    assert_false(passes("<message from='alice@" H "/two' to='bob@" H "'/>"));
    xd_jid_t *bob = jid("bob@" H "/x");
    assert_true(xd_privacy_blocks(a2, bob));
    assert_false(xd_privacy_blocks(a1, bob));
    xd_jid_unref(bob);
    /* Never between alice's own resources, nor with her server. */
    assert_true(passes("<message from='alice@" H "/one' to='alice@" H "/two'/>"));
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='strict'>"
                                  "<item action='deny' order='1'/></list>"),
                     0);
    assert_true(passes("<message from='" H "' to='alice@" H "/two'/>"));
    assert_false(passes("<message from='carol@" H "' to='alice@" H "/two'/>"));
    /* The names, the active list of the asking session, the default. */
    xd_privacy_view_t v;
    assert_int_equal(xd_privacy_get(a1, NULL, &v), 0);
    assert_int_equal(v.nnames, 2);
    assert_string_equal(v.names[0], "open");
    assert_string_equal(v.names[1], "strict");
    assert_string_equal(v.active, "open");
    assert_string_equal(v.def, "strict");
    xd_privacy_view_clear(&v);
    assert_int_equal(xd_privacy_get(a2, "open", &v), 0);
    assert_null(v.active);
    assert_int_equal(v.list.n, 1);
    xd_privacy_view_clear(&v);
    assert_int_equal(xd_privacy_get(a2, "gone", &v), XD_ENOTFOUND);
    /* Declining the active list: the default applies again. */
    assert_int_equal(xd_privacy_set_active(a1, NULL), 0);
    assert_false(passes("<message from='bob@" H "/x' to='alice@" H "/one'/>"));
}

static void
test_privacy__bare_jid_sessions_decide_each(void **state)
{
    fx_t *f = *state;
    fx_start(f);
    const xd_jid_t *a1 = fx_bind(f, "alice@" H "/one");
    fx_bind(f, "alice@" H "/two");
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='quiet'>"
                                  "<item type='jid' value='bob@" H "' action='deny' order='1'>"
                                  "<presence-in/></item></list>"),
                     0);
    assert_int_equal(xd_privacy_set_default(a1, "quiet"), 0);
    /* Nobody available: the default decides for the bare JID. */
    assert_false(passes("<presence from='bob@" H "/x' to='alice@" H "'/>"));
    assert_true(passes("<presence type='subscribe' from='bob@" H "/x' to='alice@" H "'/>"));
    assert_true(passes("<message from='bob@" H "/x' to='alice@" H "'/>"));
    /* Session one allows everything actively; both available. */
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='all'>"
                                  "<item action='allow' order='1'/></list>"),
                     0);
    assert_int_equal(xd_privacy_set_active(a1, "all"), 0);
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(xd_sm_set_presence(f->s[i].jid, f->s[i].ref.id, true, 0, NULL), 0);
    /* They disagree about bob's presence: the engine delivers it to the
     * session that allows it and the router gets nothing. */
    assert_false(passes("<presence from='bob@" H "/x' to='alice@" H "'/>"));
    /* They agree on carol's. */
    assert_true(passes("<presence from='carol@" H "/x' to='alice@" H "'/>"));
}

static void
test_privacy__conflicts_of_2_5_and_2_8(void **state)
{
    fx_t *f = *state;
    fx_start(f);
    const xd_jid_t *a1 = fx_bind(f, "alice@" H "/one");
    const xd_jid_t *a2 = fx_bind(f, "alice@" H "/two");
    const char *one = "<list xmlns='jabber:iq:privacy' name='one'>"
                      "<item action='allow' order='1'/></list>";
    const char *two = "<list xmlns='jabber:iq:privacy' name='two'>"
                      "<item action='deny' order='1'/></list>";
    assert_int_equal(set_list(a1, one), 0);
    assert_int_equal(set_list(a1, two), 0);
    assert_int_equal(xd_privacy_set_active(a1, "one"), 0);
    /* Active in another session: conflict; in one's own: removed with it. */
    assert_int_equal(xd_privacy_remove_list(a2, "one"), XD_EEXIST);
    assert_int_equal(xd_privacy_remove_list(a2, "nosuch"), XD_ENOTFOUND);
    assert_int_equal(xd_privacy_remove_list(a1, "one"), 0);
    xd_privacy_view_t v;
    assert_int_equal(xd_privacy_get(a1, NULL, &v), 0);
    assert_null(v.active);
    assert_int_equal(v.nnames, 1);
    xd_privacy_view_clear(&v);
    /* No default yet: setting one is free.  Then session two (no active
     * list) uses it: session one may neither change nor decline it. */
    assert_int_equal(xd_privacy_set_default(a1, "two"), 0);
    assert_int_equal(set_list(a1, one), 0);
    assert_int_equal(xd_privacy_set_default(a1, "one"), XD_EEXIST);
    assert_int_equal(xd_privacy_set_default(a1, NULL), XD_EEXIST);
    assert_int_equal(xd_privacy_set_default(a1, "two"), 0); /* unchanged: fine */
    /* The default cannot be removed (change it first). */
    assert_int_equal(xd_privacy_remove_list(a1, "two"), XD_EEXIST);
    /* Once session two has an active list of its own, it no longer uses the default. */
    assert_int_equal(xd_privacy_set_active(a2, "one"), 0);
    assert_int_equal(xd_privacy_set_default(a1, "one"), 0);
    assert_int_equal(xd_privacy_set_default(a1, NULL), 0);
    assert_int_equal(xd_privacy_remove_list(a1, "two"), 0);
    /* A session that ends takes its active list with it. */
    assert_int_equal(xd_privacy_remove_list(a1, "one"), XD_EEXIST);
    assert_true(xd_sm_unbind(f->s[1].jid, f->s[1].ref.id));
    xd_hook_session_t ev = { .host = H, .jid = f->s[1].jid, .reason = "disconnected" };
    xd_hook_run(XD_HOOK_SM_REMOVE_CONNECTION, H, &ev);
    assert_int_equal(xd_privacy_remove_list(a1, "one"), 0);
    /* Limits: max_lists 3, max_items 6; set with no items is not a set. */
    assert_int_equal(set_list(a1, one), 0);
    assert_int_equal(set_list(a1, two), 0);
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='three'>"
                                  "<item action='deny' order='1'/></list>"),
                     0);
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='four'>"
                                  "<item action='deny' order='1'/></list>"),
                     XD_ELIMIT);
    assert_int_equal(set_list(a1, one), 0); /* replacing is not one more */
    assert_int_equal(set_list(a1, "<list xmlns='jabber:iq:privacy' name='one'>"
                                  "<item action='deny' order='1'/><item action='deny' order='2'/>"
                                  "<item action='deny' order='3'/><item action='deny' order='4'/>"
                                  "<item action='deny' order='5'/><item action='deny' order='6'/>"
                                  "<item action='deny' order='7'/></list>"),
                     XD_ELIMIT);
    xd_privacy_list_t empty = { .name = (char *)"one" };
    assert_int_equal(xd_privacy_set_list(a1, &empty), XD_EINVAL);
}

/* The blocklist of a session. */
static size_t
blocklist(const xd_jid_t *req, char out[][64])
{
    char **v;
    size_t n;
    assert_int_equal(xd_privacy_blocklist(req, &v, &n), 0);
    for (size_t i = 0; i < n; i++) {
        snprintf(out[i], 64, "%s", v[i]);
        xd_free(v[i]);
    }
    xd_free(v);
    return n;
}

static void
test_privacy__blocklist_is_a_view_of_the_default_list(void **state)
{
    fx_t *f = *state;
    fx_start(f);
    const xd_jid_t *a = fx_bind(f, "alice@" H "/one");
    char bl[8][64];
    const char *bc[] = { "bob@" H, "carol@" H };
    /* No default: a block creates "Blocked contacts", items 1, 2 in order. */
    assert_int_equal(xd_privacy_block(a, bc, 2), 0);
    assert_int_equal(blocklist(a, bl), 2);
    assert_string_equal(bl[0], "bob@" H);
    assert_string_equal(bl[1], "carol@" H);
    xd_privacy_view_t v;
    assert_int_equal(xd_privacy_get(a, XD_PRIVACY_BLOCKED_LIST, &v), 0);
    assert_string_equal(v.def, XD_PRIVACY_BLOCKED_LIST);
    assert_int_equal(v.list.n, 2);
    assert_int_equal(v.list.items[0].order, 1);
    assert_true(xd_privacy_is_block_item(&v.list.items[1]));
    xd_privacy_view_clear(&v);
    assert_false(passes("<message from='carol@" H "/x' to='alice@" H "/one'/>"));

    /* A XEP-0016 default list: its own items are not in the blocklist; a
     * block goes in front of them (order 0 is taken: everything shifts). */
    assert_int_equal(set_list(a, "<list xmlns='jabber:iq:privacy' name='mine'>"
                                 "<item type='jid' value='dave@" H "' action='allow' order='0'/>"
                                 "<item type='jid' value='eve@" H "' action='deny' order='5'>"
                                 "<message/></item>"
                                 "<item type='jid' value='frank@" H "' action='deny' order='9'/>"
                                 "<item action='deny' order='20'/></list>"),
                     0);
    assert_int_equal(xd_privacy_set_default(a, "mine"), 0);
    assert_int_equal(blocklist(a, bl), 1);
    assert_string_equal(bl[0], "frank@" H);
    const char *d[] = { "dave@" H };
    assert_int_equal(xd_privacy_block(a, d, 1), 0);
    assert_false(passes("<message from='dave@" H "/x' to='alice@" H "/one'/>"));
    assert_int_equal(xd_privacy_get(a, "mine", &v), 0);
    assert_int_equal(v.list.n, 5);
    assert_string_equal(v.list.items[0].value, "dave@" H);
    assert_true(xd_privacy_is_block_item(&v.list.items[0]));
    assert_int_equal(v.list.items[0].order, 0);
    assert_int_equal(v.list.items[1].order, 1); /* the old 0, shifted */
    assert_false(v.list.items[1].deny);
    assert_int_equal(v.list.items[4].order, 21);
    xd_privacy_view_clear(&v);
    assert_int_equal(blocklist(a, bl), 2);
    assert_string_equal(bl[0], "dave@" H);
    assert_string_equal(bl[1], "frank@" H);
    /* Blocking what is blocked changes nothing; the limit counts fresh JIDs
     * (max_blocked 4, max_items 6 with 5 items). */
    assert_int_equal(xd_privacy_block(a, d, 1), 0);
    const char *two[] = { "g1@" H, "g2@" H };
    assert_int_equal(xd_privacy_block(a, two, 2), XD_ELIMIT);
    /* Unblock dave: his allow item is back in charge. */
    assert_int_equal(xd_privacy_unblock(a, d, 1), 0);
    assert_true(passes("<message from='dave@" H "/x' to='alice@" H "/one'/>"));
    /* Unblock all: only block items go; eve's message deny and the
     * fall-through stay. */
    assert_int_equal(xd_privacy_unblock(a, NULL, 0), 0);
    assert_int_equal(blocklist(a, bl), 0);
    assert_int_equal(xd_privacy_get(a, "mine", &v), 0);
    assert_int_equal(v.list.n, 3);
    xd_privacy_view_clear(&v);
    assert_false(passes("<message from='eve@" H "/x' to='alice@" H "/one'/>"));
    assert_true(passes("<presence from='eve@" H "/x' to='alice@" H "/one'/>") == false);
    /* Blocking with room below the first item: orders just under it. */
    const char *z[] = { "zed@" H };
    assert_int_equal(xd_privacy_block(a, z, 1), 0);
    assert_int_equal(xd_privacy_get(a, "mine", &v), 0);
    assert_string_equal(v.list.items[0].value, "zed@" H);
    assert_int_equal(v.list.items[0].order, v.list.items[1].order - 1);
    xd_privacy_view_clear(&v);
    /* Outgoing to a blocked JID is refused too (with <blocked/>, seen on the wire). */
    assert_false(passes("<message from='alice@" H "/one' to='zed@" H "'/>"));
}

static void
test_privacy__groups_subscriptions_and_roster_changes(void **state)
{
    fx_t *f = *state;
    fx_start(f);
    const xd_jid_t *a = fx_bind(f, "alice@" H "/one");
    const char *enemies[] = { "Enemies" };
    assert_int_equal(mod_roster_set_item(RS, H, "alice", "bob@" H, NULL, enemies, 1, NULL, NULL), 0);
    mod_roster_sub_outcome_t o;
    assert_int_equal(mod_roster_subscription(RS, H, "alice", "carol@" H, MOD_ROSTER_OUT_SUBSCRIBE,
                                             NULL, &o),
                     0);
    mod_roster_item_clear(&o.item);
    assert_int_equal(mod_roster_subscription(RS, H, "alice", "carol@" H, MOD_ROSTER_IN_SUBSCRIBED,
                                             NULL, &o),
                     0);
    mod_roster_item_clear(&o.item);
    /* A group that is not in the roster: item-not-found (2.1). */
    assert_int_equal(set_list(a, "<list xmlns='jabber:iq:privacy' name='g'>"
                                 "<item type='group' value='Nobody' action='deny' order='1'/>"
                                 "</list>"),
                     XD_ENOTFOUND);
    assert_int_equal(set_list(a, "<list xmlns='jabber:iq:privacy' name='g'>"
                                 "<item type='group' value='Enemies' action='deny' order='1'/>"
                                 "<item type='subscription' value='to' action='allow' order='2'/>"
                                 "<item type='subscription' value='none' action='deny' order='3'>"
                                 "<message/></item></list>"),
                     0);
    assert_int_equal(xd_privacy_set_default(a, "g"), 0);
    assert_false(passes("<iq type='get' id='1' from='bob@" H "/x' to='alice@" H "/one'/>"));
    assert_true(passes("<message from='carol@" H "/x' to='alice@" H "/one'/>")); /* to */
    assert_false(passes("<message from='stranger@" H "/x' to='alice@" H "/one'/>")); /* none */
    assert_true(passes("<iq type='get' id='2' from='stranger@" H "/x' to='alice@" H "/one'/>"));
    /* Roster changes reach the copy (rule 9): bob leaves the group. */
    xd_roster_view_t it = { .jid = "bob@" H, .in_roster = true };
    xd_hook_roster_changed_t rev = { .host = H, .user = "alice", .item = &it };
    xd_hook_run(XD_HOOK_ROSTER_CHANGED, H, &rev);
    assert_true(passes("<iq type='get' id='3' from='bob@" H "/x' to='alice@" H "/one'/>"));
    assert_false(passes("<message from='bob@" H "/x' to='alice@" H "/one'/>")); /* now none */
    /* carol's item removed: she is a stranger now. */
    xd_roster_view_t gone = { .jid = "carol@" H, .in_roster = false };
    rev.item = &gone;
    xd_hook_run(XD_HOOK_ROSTER_CHANGED, H, &rev);
    assert_false(passes("<message from='carol@" H "/x' to='alice@" H "/one'/>"));
    /* The copy is read again from storage by a reload (bob: Enemies). */
    fx_modules(MODS_ROSTER);
    fx_modules(MODS_ROSTER MODS_PRIVACY);
    assert_false(passes("<iq type='get' id='4' from='bob@" H "/x' to='alice@" H "/one'/>"));
    assert_true(passes("<message from='carol@" H "/x' to='alice@" H "/one'/>"));
}

static int64_t
count(fx_t *f, const char *sql)
{
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(f->db, &c), 0);
    int64_t n = -1;
    assert_int_equal(xd_db_query_int64(c, sql, NULL, 0, &n), 0);
    xd_db_release(c);
    return n;
}

static void
test_privacy__persistence_and_account_removal(void **state)
{
    fx_t *f = *state;
    fx_start(f);
    const xd_jid_t *a = fx_bind(f, "alice@" H "/one");
    const xd_jid_t *b = fx_bind(f, "bob@" H "/one");
    assert_int_equal(set_list(a, "<list xmlns='jabber:iq:privacy' name='p'>"
                                 "<item type='jid' value='eve@" H "' action='deny' order='4'>"
                                 "<iq/></item><item action='allow' order='8'/></list>"),
                     0);
    assert_int_equal(xd_privacy_set_default(a, "p"), 0);
    const char *e[] = { "eve@" H };
    assert_int_equal(xd_privacy_block(b, e, 1), 0);
    /* Everything comes back from storage after the last module stops. */
    fx_modules(MODS_ROSTER MODS_BLOCKING);
    assert_true(xd_privacy_store_runs(H, XD_PRIVACY_BY_BLOCKING));
    fx_modules(MODS_ROSTER);
    assert_true(passes("<iq type='get' id='1' from='eve@" H "/x' to='alice@" H "/one'/>"));
    fx_modules(MODS_ROSTER MODS_BLOCKING);
    assert_false(passes("<iq type='get' id='2' from='eve@" H "/x' to='alice@" H "/one'/>"));
    assert_true(passes("<message from='eve@" H "/x' to='alice@" H "/one'/>"));
    assert_false(passes("<message from='eve@" H "/x' to='bob@" H "/one'/>"));
    xd_privacy_view_t v;
    assert_int_equal(xd_privacy_get(a, "p", &v), 0);
    assert_string_equal(v.def, "p");
    assert_int_equal(v.list.items[0].kinds, XD_PRIVACY_IQ);
    assert_int_equal(v.list.items[1].type, XD_PRIVACY_ANY);
    xd_privacy_view_clear(&v);
    /* Account removal: memory and storage. */
    assert_int_equal(count(f, "SELECT COUNT(*) FROM privacy_item WHERE username = 'alice'"), 2);
    xd_hook_user_t ev = { .host = H, .user = "alice" };
    xd_hook_run(XD_HOOK_REMOVE_USER, H, &ev);
    assert_true(passes("<iq type='get' id='3' from='eve@" H "/x' to='alice@" H "/one'/>"));
    assert_int_equal(count(f, "SELECT COUNT(*) FROM privacy_list WHERE username = 'alice'"), 0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM privacy_item WHERE username = 'alice'"), 0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM privacy_default WHERE username = 'alice'"),
                     0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM privacy_item WHERE username = 'bob'"), 1);
}

static void
test_privacy__migrates_the_old_blocklist(void **state)
{
    fx_t *f = *state;
    /* A database as mod_blocking version 1 left it. */
    sqlite3 *s = NULL;
    assert_int_equal(sqlite3_open(f->path, &s), SQLITE_OK);
    const char *sql =
        "CREATE TABLE schema_version (component TEXT NOT NULL PRIMARY KEY,"
        " version INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "INSERT INTO schema_version VALUES ('mod_blocking', 1, 0);"
        "CREATE TABLE blocklist (host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,"
        " created_at INTEGER NOT NULL, PRIMARY KEY (host, username, jid));"
        "INSERT INTO blocklist VALUES ('" H "', 'alice', 'zed@" H "', 100);"
        "INSERT INTO blocklist VALUES ('" H "', 'alice', 'bob@" H "', 200);"
        "INSERT INTO blocklist VALUES ('" H "', 'alice', 'amy@" H "', 200);"
        "INSERT INTO blocklist VALUES ('" H "', 'carol', 'x.org', 50);";
    char *msg = NULL;
    if (sqlite3_exec(s, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s", msg);
    sqlite3_close(s);
    fx_start(f);
    unsigned ver = 0;
    assert_int_equal(xd_db_schema_version(f->db, "mod_blocking", &ver), 0);
    assert_int_equal(ver, 2);
    const xd_jid_t *a = fx_bind(f, "alice@" H "/one");
    char bl[8][64];
    /* In the order blocked (ties by JID). */
    assert_int_equal(blocklist(a, bl), 3);
    assert_string_equal(bl[0], "zed@" H);
    assert_string_equal(bl[1], "amy@" H);
    assert_string_equal(bl[2], "bob@" H);
    xd_privacy_view_t v;
    assert_int_equal(xd_privacy_get(a, NULL, &v), 0);
    assert_string_equal(v.def, XD_PRIVACY_BLOCKED_LIST);
    xd_privacy_view_clear(&v);
    assert_false(passes("<message from='bob@" H "/x' to='alice@" H "/one'/>"));
    assert_false(passes("<presence from='who@x.org/x' to='carol@" H "/r'/>"));
    assert_true(passes("<presence from='who@y.org/x' to='carol@" H "/r'/>"));
    assert_int_equal(count(f, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'blocklist'"), 0);
}

/* ---- many accounts, several threads ------------------------------------------------------------ */

#define MANY 64       /* accounts u0..u63, each blocking spam<i> */
#define MANY_THREADS 4 /* threads routing at once */
#define MANY_ROUNDS 300 /* passes of each thread over its accounts */

/* Runs the filter without cmocka (which must not fail off the main
 * thread): 1 passed, 0 refused, -1 the stanza did not parse. */
static int
filter_once(const char *xml)
{
    xd_stanza_t *st = NULL;
    if (xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &st) != 0)
        return -1;
    xd_hook_filter_t ev = { .host = H, .st = st };
    xd_hook_run(XD_HOOK_FILTER_PACKET, H, &ev);
    if (!ev.st)
        return 0;
    xd_stanza_unref(ev.st);
    return 1;
}

/* spam<i> to u<i>: refused; spam<i + 1> to u<i> and between accounts
 * without state: passed.  How many answers were wrong. */
static int
many_check(size_t i)
{
    char xml[256];
    int wrong = 0;
    snprintf(xml, sizeof xml, "<presence from='spam%zu@" H "/x' to='u%zu@" H "/r'/>", i, i);
    wrong += filter_once(xml) != 0;
    snprintf(xml, sizeof xml, "<presence from='spam%zu@" H "/x' to='u%zu@" H "/r'/>",
             (i + 1) % MANY, i);
    wrong += filter_once(xml) != 1;
    snprintf(xml, sizeof xml, "<message from='free%zu@" H "/x' to='open%zu@" H "/r'/>", i, i);
    wrong += filter_once(xml) != 1;
    return wrong;
}

/* One routing thread: its share of the accounts, MANY_ROUNDS times. */
typedef struct many_arg {
    size_t first;        /* its first account; then every MANY_THREADS-th */
    _Atomic int *wrong;  /* answers that were wrong, all threads */
} many_arg_t;

static void *
many_thread(void *p)
{
    many_arg_t *a = p;
    for (int r = 0; r < MANY_ROUNDS; r++)
        for (size_t i = a->first; i < MANY; i += MANY_THREADS)
            atomic_fetch_add(a->wrong, many_check(i));
    return NULL;
}

static void
test_privacy__many_accounts_routed_on_threads(void **state)
{
    fx_t *f = *state;
    fx_start(f);
    char req[64], spam[64];
    for (size_t i = 0; i < MANY; i++) {
        snprintf(req, sizeof req, "u%zu@" H "/r", i);
        snprintf(spam, sizeof spam, "spam%zu@" H, i);
        xd_jid_t *j = jid(req);
        const char *b[] = { spam };
        assert_int_equal(xd_privacy_block(j, b, 1), 0);
        xd_jid_unref(j);
    }
    for (size_t i = 0; i < MANY; i++)
        assert_int_equal(many_check(i), 0);

    /* Routing on threads while other accounts (w<k>) block, unblock, ask
     * for their blocklist and go, in shards the routed accounts share. */
    _Atomic int wrong = 0;
    pthread_t t[MANY_THREADS];
    many_arg_t args[MANY_THREADS];
    for (size_t i = 0; i < MANY_THREADS; i++) {
        args[i] = (many_arg_t){ .first = i, .wrong = &wrong };
        assert_int_equal(pthread_create(&t[i], NULL, many_thread, &args[i]), 0);
    }
    for (size_t k = 0; k < 2 * MANY; k++) {
        snprintf(req, sizeof req, "w%zu@" H "/r", k);
        xd_jid_t *j = jid(req);
        const char *b[] = { "spam0@" H };
        char bl[8][64];
        assert_int_equal(xd_privacy_block(j, b, 1), 0);
        assert_int_equal(blocklist(j, bl), 1);
        assert_int_equal(xd_privacy_unblock(j, NULL, 0), 0);
        xd_hook_user_t ev = { .host = H, .user = req };
        *strchr(req, '@') = '\0';
        xd_hook_run(XD_HOOK_REMOVE_USER, H, &ev);
        xd_jid_unref(j);
    }
    for (size_t i = 0; i < MANY_THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&wrong), 0);

    /* The last module gone, every shard forgets the host; back, every
     * account is read again. */
    xd_jid_t *u1 = jid("u1@" H "/r"), *spam1 = jid("spam1@" H "/x");
    assert_true(xd_privacy_blocks(u1, spam1));
    fx_modules(MODS_ROSTER);
    assert_false(xd_privacy_blocks(u1, spam1));
    fx_modules(MODS_ROSTER MODS_BLOCKING);
    assert_true(xd_privacy_blocks(u1, spam1));
    xd_jid_unref(u1);
    xd_jid_unref(spam1);
    for (size_t i = 0; i < MANY; i++)
        assert_int_equal(many_check(i), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_privacy__jid_matching_order_of_2_1),
        cmocka_unit_test(test_privacy__first_match_by_ascending_order),
        cmocka_unit_test(test_privacy__item_types),
        cmocka_unit_test(test_privacy__stanza_kinds),
        cmocka_unit_test(test_privacy__fall_through),
        cmocka_unit_test(test_privacy__list_codec),
        cmocka_unit_test_setup_teardown(test_privacy__active_list_beats_default, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_privacy__bare_jid_sessions_decide_each, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_privacy__conflicts_of_2_5_and_2_8, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_privacy__blocklist_is_a_view_of_the_default_list,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_privacy__groups_subscriptions_and_roster_changes,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_privacy__persistence_and_account_removal, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_privacy__migrates_the_old_blocklist, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_privacy__many_accounts_routed_on_threads, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
