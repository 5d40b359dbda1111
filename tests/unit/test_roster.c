/*
 * test_roster.c — roster storage of src/mod/mod_roster.c against a real
 * SQLite file in a fresh mkdtemp directory per test: set/get with groups
 * that must round-trip, validation limits, versions bumped per change,
 * remove with its cascade and remove actions, subscription events through
 * storage (items created for outbound events, hidden pending-in from a
 * stranger, pre-approval, auto-reply), the contacts filter, per-user
 * isolation, user removal, persistence across a reopen, the <item/>
 * the pushes carry, the size limits (items, groups, bytes as sent), and
 * rosters past the first allocations (many items, many groups).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mod/mod_roster.h"
#include "xmppd/alloc.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/module.h"
#include "xmppd/storage.h"

#define H "example.org"

extern const xd_module_t xd_mod_roster;
static mod_roster_store_t g_rs; /* the store the functions under test use */
#define RS (&g_rs)

typedef struct {
    char dir[256];      /* mkdtemp directory */
    char path[320];     /* the database */
    xd_db_params_t prm; /* sqlite params */
    xd_db_t *db;        /* open database */
} fx_t;

static int
fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/xd_test_roster.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/xmppd.db", f->dir);
    f->prm = (xd_db_params_t){ .driver = "sqlite", .path = f->path, .busy_timeout_ms = 2000 };
    int rc = xd_module_register_builtin(&xd_mod_roster); /* and its tables */
    if ((rc != 0 && rc != XD_EEXIST) || xd_db_open(&f->prm, &f->db) != 0)
        return -1;
    g_rs = (mod_roster_store_t){ .db = f->db };
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *f = *state;
    g_rs = (mod_roster_store_t){ 0 };
    xd_db_close(f->db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
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
test_roster__set_get_groups_roundtrip(void **state)
{
    (void)state;
    mod_roster_list_t l;
    assert_int_equal(mod_roster_get_all(RS, H, "alice", &l), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(l.version, 0);
    mod_roster_list_clear(&l);

    const char *groups[] = { "Friends", "日本語 & <x> \"q\" 'a'\n\ttab", "Friends", "A" };
    mod_roster_item_t it;
    int64_t ver = 0;
    assert_int_equal(mod_roster_set_item(RS, H, "alice", "bob@example.net", "Bob", groups, 4, &it,
                                         &ver),
                     0);
    assert_int_equal(ver, 1);
    assert_string_equal(it.jid, "bob@example.net");
    assert_string_equal(it.name, "Bob");
    assert_int_equal(it.ngroups, 3); /* duplicate collapsed */
    assert_true(it.in_roster);
    assert_int_equal(it.state.sub, MOD_ROSTER_SUB_NONE);
    mod_roster_item_clear(&it);

    assert_int_equal(mod_roster_set_item(RS, H, "alice", "carol@example.net", NULL, NULL, 0, NULL,
                                         &ver),
                     0);
    assert_int_equal(ver, 2);

    assert_int_equal(mod_roster_get_all(RS, H, "alice", &l), 0);
    assert_int_equal(l.version, 2);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].jid, "bob@example.net");
    assert_int_equal(l.items[0].ngroups, 3);
    assert_string_equal(l.items[0].groups[0], "A");
    assert_string_equal(l.items[0].groups[1], "Friends");
    assert_string_equal(l.items[0].groups[2], "日本語 & <x> \"q\" 'a'\n\ttab");
    assert_string_equal(l.items[1].jid, "carol@example.net");
    assert_null(l.items[1].name);
    assert_int_equal(l.items[1].ngroups, 0);
    mod_roster_list_clear(&l);

    /* Update replaces name and groups. */
    const char *g2[] = { "Work" };
    assert_int_equal(mod_roster_set_item(RS, H, "alice", "bob@example.net", NULL, g2, 1, NULL, &ver),
                     0);
    assert_int_equal(ver, 3);
    assert_int_equal(mod_roster_get_item(RS, H, "alice", "bob@example.net", &it), 0);
    assert_null(it.name);
    assert_int_equal(it.ngroups, 1);
    assert_string_equal(it.groups[0], "Work");
    mod_roster_item_clear(&it);
    assert_int_equal(mod_roster_get_item(RS, H, "alice", "nobody@example.net", &it), XD_ENOTFOUND);
    assert_null(it.jid);
}

/* Items and groups past the first few allocations (the arrays grow by
 * doubling): every one comes back, in order, and an update to fewer groups
 * reuses the array. */
static void
test_roster__many_items_and_groups(void **state)
{
    (void)state;
    enum { NGROUPS = 300, NITEMS = 40 };
    static char names[NGROUPS][8];
    const char *groups[NGROUPS];
    for (int i = 0; i < NGROUPS; i++) {
        snprintf(names[i], sizeof names[i], "g%04d", i);
        groups[i] = names[i];
    }
    for (int i = 0; i < NITEMS; i++) {
        char jid[32];
        snprintf(jid, sizeof jid, "c%02d@example.net", i);
        assert_int_equal(mod_roster_set_item(RS, H, "alice", jid, NULL, groups,
                                             i == 7 ? NGROUPS : 1, NULL, NULL),
                         0);
    }
    mod_roster_list_t l;
    assert_int_equal(mod_roster_get_all(RS, H, "alice", &l), 0);
    assert_int_equal(l.n, NITEMS);
    for (int i = 0; i < NITEMS; i++) {
        char jid[32];
        snprintf(jid, sizeof jid, "c%02d@example.net", i);
        assert_string_equal(l.items[i].jid, jid);
        assert_int_equal(l.items[i].ngroups, i == 7 ? NGROUPS : 1);
    }
    for (int g = 0; g < NGROUPS; g++)
        assert_string_equal(l.items[7].groups[g], names[g]);
    mod_roster_list_clear(&l);

    mod_roster_item_t it;
    assert_int_equal(mod_roster_set_item(RS, H, "alice", "c07@example.net", NULL, groups + 10, 20,
                                         &it, NULL),
                     0);
    assert_int_equal(it.ngroups, 20);
    assert_string_equal(it.groups[0], "g0010");
    assert_string_equal(it.groups[19], "g0029");
    mod_roster_item_clear(&it);
    assert_int_equal(mod_roster_get_item(RS, H, "alice", "c07@example.net", &it), 0);
    assert_int_equal(it.ngroups, 20);
    assert_string_equal(it.groups[19], "g0029");
    mod_roster_item_clear(&it);
}

static void
test_roster__validation_limits(void **state)
{
    fx_t *f = *state;
    char big[1025];
    memset(big, 'x', 1024);
    big[1024] = 0;
    int64_t ver = 0;
    assert_int_equal(mod_roster_set_item(RS, H, "u", "c@x.org", "", NULL, 0, NULL, &ver), XD_EINVAL);
    assert_int_equal(mod_roster_set_item(RS, H, "u", "c@x.org", big, NULL, 0, NULL, &ver), XD_EINVAL);
    const char *ge[] = { "" };
    assert_int_equal(mod_roster_set_item(RS, H, "u", "c@x.org", NULL, ge, 1, NULL, &ver), XD_EINVAL);
    const char *gb[] = { "ok", big };
    assert_int_equal(mod_roster_set_item(RS, H, "u", "c@x.org", NULL, gb, 2, NULL, &ver), XD_EINVAL);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM roster_item"), 0);
    big[1023] = 0; /* 1023 bytes: the limit itself is fine */
    const char *g3[] = { big };
    assert_int_equal(mod_roster_set_item(RS, H, "u", "c@x.org", big, g3, 1, NULL, &ver), 0);
    mod_roster_item_t it;
    assert_int_equal(mod_roster_get_item(RS, H, "u", "c@x.org", &it), 0);
    assert_int_equal(strlen(it.name), 1023);
    assert_int_equal(strlen(it.groups[0]), 1023);
    mod_roster_item_clear(&it);
}

static void
test_roster__remove_cascade_and_actions(void **state)
{
    fx_t *f = *state;
    const char *g[] = { "a", "b" };
    int64_t ver = 0;
    assert_int_equal(mod_roster_set_item(RS, H, "u", "c@x.org", "C", g, 2, NULL, &ver), 0);
    mod_roster_sub_outcome_t o;
    assert_int_equal(mod_roster_subscription(RS, H, "u", "c@x.org", MOD_ROSTER_OUT_SUBSCRIBE, NULL, &o),
                     0);
    mod_roster_item_clear(&o.item);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM roster_group"), 2);
    mod_roster_item_t before;
    assert_int_equal(mod_roster_remove_item(RS, H, "u", "c@x.org", &before, &ver), 0);
    assert_int_equal(ver, 3);
    assert_true(before.state.ask);
    mod_roster_remove_actions_t a = mod_roster_remove_actions(&before.state);
    assert_true(a.unsubscribe);
    assert_false(a.unsubscribed);
    mod_roster_item_clear(&before);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM roster_group"), 0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM roster_item"), 0);
    assert_int_equal(mod_roster_remove_item(RS, H, "u", "c@x.org", NULL, &ver), XD_ENOTFOUND);

    mod_roster_state_t both = { .sub = MOD_ROSTER_SUB_BOTH };
    a = mod_roster_remove_actions(&both);
    assert_true(a.unsubscribe && a.unsubscribed);
    mod_roster_state_t pin = { .sub = MOD_ROSTER_SUB_NONE, .pending_in = true };
    a = mod_roster_remove_actions(&pin);
    assert_false(a.unsubscribe);
    assert_true(a.unsubscribed);
    mod_roster_state_t none = { 0 };
    a = mod_roster_remove_actions(&none);
    assert_false(a.unsubscribe || a.unsubscribed);
}

static int
collect(void *arg, const char *jid)
{
    char *buf = arg;
    strcat(buf, jid);
    strcat(buf, ";");
    return 0;
}

static void
test_roster__subscription_through_storage(void **state)
{
    fx_t *f = *state;
    mod_roster_sub_outcome_t o;
    /* A stranger asks: remembered, not a roster item, delivered, no push. */
    assert_int_equal(mod_roster_subscription(RS, H, "u", "s@x.org", MOD_ROSTER_IN_SUBSCRIBE,
                                             "let me in", &o),
                     0);
    assert_true(o.r.forward);
    assert_false(o.r.push);
    assert_int_equal(o.version, 0);
    mod_roster_item_clear(&o.item);
    mod_roster_list_t l;
    assert_int_equal(mod_roster_get_all(RS, H, "u", &l), 0);
    assert_int_equal(l.n, 0);
    mod_roster_list_clear(&l);
    mod_roster_item_t it;
    assert_int_equal(mod_roster_get_item(RS, H, "u", "s@x.org", &it), 0);
    assert_false(it.in_roster);
    assert_true(it.state.pending_in);
    assert_string_equal(it.pending_status, "let me in");
    mod_roster_item_clear(&it);
    /* The stranger takes it back: nothing left at all. */
    assert_int_equal(mod_roster_subscription(RS, H, "u", "s@x.org", MOD_ROSTER_IN_UNSUBSCRIBE, NULL,
                                             &o),
                     0);
    assert_true(o.r.forward);
    mod_roster_item_clear(&o.item);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM roster_item"), 0);

    /* Asked again, then approved: the item joins the roster as 'from'. */
    assert_int_equal(mod_roster_subscription(RS, H, "u", "s@x.org", MOD_ROSTER_IN_SUBSCRIBE, NULL, &o),
                     0);
    mod_roster_item_clear(&o.item);
    assert_int_equal(mod_roster_subscription(RS, H, "u", "s@x.org", MOD_ROSTER_OUT_SUBSCRIBED, NULL,
                                             &o),
                     0);
    assert_true(o.r.forward && o.r.push);
    assert_int_equal(o.version, 1);
    assert_true(o.item.in_roster);
    assert_int_equal(o.item.state.sub, MOD_ROSTER_SUB_FROM);
    assert_null(o.item.pending_status);
    mod_roster_item_clear(&o.item);

    /* Outbound subscribe to someone new: item created with ask, pushed. */
    assert_int_equal(mod_roster_subscription(RS, H, "u", "t@x.org", MOD_ROSTER_OUT_SUBSCRIBE, NULL, &o),
                     0);
    assert_true(o.r.forward && o.r.push);
    assert_true(o.item.state.ask);
    assert_int_equal(o.version, 2);
    mod_roster_item_clear(&o.item);
    assert_int_equal(mod_roster_subscription(RS, H, "u", "t@x.org", MOD_ROSTER_IN_SUBSCRIBED, NULL,
                                             &o),
                     0);
    assert_int_equal(o.item.state.sub, MOD_ROSTER_SUB_TO);
    assert_false(o.item.state.ask);
    assert_int_equal(o.version, 3);
    mod_roster_item_clear(&o.item);
    /* A duplicate subscribed changes nothing and is not delivered. */
    assert_int_equal(mod_roster_subscription(RS, H, "u", "t@x.org", MOD_ROSTER_IN_SUBSCRIBED, NULL,
                                             &o),
                     0);
    assert_false(o.r.forward || o.r.push || o.r.changed);
    assert_int_equal(o.version, 3);
    mod_roster_item_clear(&o.item);

    char from[256] = "", to[256] = "";
    assert_int_equal(mod_roster_contacts(RS, H, "u", MOD_ROSTER_FROM, collect, from), 0);
    assert_int_equal(mod_roster_contacts(RS, H, "u", MOD_ROSTER_TO, collect, to), 0);
    assert_string_equal(from, "s@x.org;");
    assert_string_equal(to, "t@x.org;");

    /* A roster set keeps the subscription state. */
    assert_int_equal(mod_roster_set_item(RS, H, "u", "t@x.org", "T", NULL, 0, &it, NULL), 0);
    assert_int_equal(it.state.sub, MOD_ROSTER_SUB_TO);
    mod_roster_item_clear(&it);
    assert_int_equal(mod_roster_subscription(RS, H, "u", "t@x.org", MOD_ROSTER_EVENT_COUNT, NULL, &o),
                     XD_EINVAL);
}

static void
test_roster__preapproval_through_storage(void **state)
{
    (void)state;
    mod_roster_sub_outcome_t o;
    assert_int_equal(mod_roster_subscription(RS, H, "u", "p@x.org", MOD_ROSTER_OUT_SUBSCRIBED, NULL,
                                             &o),
                     0);
    assert_false(o.r.forward);
    assert_true(o.r.push && o.item.in_roster && o.item.state.approved);
    mod_roster_item_clear(&o.item);
    assert_int_equal(mod_roster_subscription(RS, H, "u", "p@x.org", MOD_ROSTER_IN_SUBSCRIBE, NULL, &o),
                     0);
    assert_false(o.r.forward);
    assert_int_equal(o.r.reply, MOD_ROSTER_REPLY_SUBSCRIBED);
    assert_int_equal(o.item.state.sub, MOD_ROSTER_SUB_FROM);
    assert_false(o.item.state.approved);
    mod_roster_item_clear(&o.item);
    /* Now 'from': a repeated subscribe is answered by the server. */
    assert_int_equal(mod_roster_subscription(RS, H, "u", "p@x.org", MOD_ROSTER_IN_SUBSCRIBE, NULL, &o),
                     0);
    assert_false(o.r.forward || o.r.changed);
    assert_int_equal(o.r.reply, MOD_ROSTER_REPLY_SUBSCRIBED);
    mod_roster_item_clear(&o.item);
}

static void
test_roster__isolation_remove_user_persistence(void **state)
{
    fx_t *f = *state;
    int64_t ver;
    assert_int_equal(mod_roster_set_item(RS, H, "a", "x@y.org", "X", NULL, 0, NULL, &ver), 0);
    assert_int_equal(mod_roster_set_item(RS, H, "b", "x@y.org", "Y", NULL, 0, NULL, &ver), 0);
    assert_int_equal(mod_roster_set_item(RS, "other.org", "a", "x@y.org", "Z", NULL, 0, NULL, &ver), 0);
    assert_int_equal(ver, 1); /* versions are per user */
    mod_roster_item_t it;
    assert_int_equal(mod_roster_get_item(RS, H, "b", "x@y.org", &it), 0);
    assert_string_equal(it.name, "Y");
    mod_roster_item_clear(&it);
    assert_int_equal(mod_roster_remove_user(RS, H, "b"), 0);
    assert_int_equal(mod_roster_get_item(RS, H, "b", "x@y.org", &it), XD_ENOTFOUND);
    assert_int_equal(mod_roster_version(RS, H, "b", &ver), 0);
    assert_int_equal(ver, 0);

    /* Reopen: still there. */
    g_rs = (mod_roster_store_t){ 0 };
    xd_db_close(f->db);
    assert_int_equal(mod_roster_get_all(RS, H, "a", &(mod_roster_list_t){ 0 }), XD_ECLOSED);
    assert_int_equal(xd_db_open(&f->prm, &f->db), 0);
    g_rs = (mod_roster_store_t){ .db = f->db };
    assert_int_equal(mod_roster_get_item(RS, H, "a", "x@y.org", &it), 0);
    assert_string_equal(it.name, "X");
    mod_roster_item_clear(&it);
    assert_int_equal(mod_roster_version(RS, H, "a", &ver), 0);
    assert_int_equal(ver, 1);
}

static void
test_roster__item_element(void **state)
{
    (void)state;
    char *groups[] = { "G1", "G&2" };
    mod_roster_item_t it = { .jid = "bob@x.org", .name = "Bob",
                             .state = { .sub = MOD_ROSTER_SUB_FROM, .ask = true },
                             .groups = groups, .ngroups = 2 };
    xd_el_t *q = xd_el_new("query", "jabber:iq:roster");
    mod_roster_item_to_el(q, &it);
    it.state = (mod_roster_state_t){ .approved = true };
    it.name = NULL;
    it.ngroups = 0;
    mod_roster_item_to_el(q, &it);
    it.removed = true;
    mod_roster_item_to_el(q, &it);
    char *s = xd_el_serialize(q, NULL, NULL);
    assert_string_equal(s, "<query xmlns='jabber:iq:roster'>"
                           "<item jid='bob@x.org' name='Bob' subscription='from' ask='subscribe'>"
                           "<group>G1</group><group>G&amp;2</group></item>"
                           "<item jid='bob@x.org' subscription='none' approved='true'/>"
                           "<item jid='bob@x.org' subscription='remove'/></query>");
    xd_free(s);
    xd_el_free(q);
}

static void
test_roster__module_declared(void **state)
{
    (void)state;
    const xd_module_t *m = &xd_mod_roster;
    assert_string_equal(m->name, "mod_roster");
    assert_int_equal(m->abi, XD_MODULE_ABI);
    assert_non_null(m->start);
    assert_non_null(m->schemas);
    assert_string_equal(m->schemas[0].component, "mod_roster");
    assert_int_equal(xd_module_register_builtin(m), XD_EEXIST); /* registered once */
}

/* max_items: a set or an outbound subscription that would add one more
 * item is refused; updates and inbound requests are not. */
static void
test_roster__max_items(void **state)
{
    (void)state;
    g_rs.max_items = 2;
    assert_int_equal(mod_roster_set_item(RS, H, "a", "b@x.org", NULL, NULL, 0, NULL, NULL), 0);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "c@x.org", NULL, NULL, 0, NULL, NULL), 0);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "d@x.org", NULL, NULL, 0, NULL, NULL),
                     XD_EFULL);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "c@x.org", "C", NULL, 0, NULL, NULL), 0);
    mod_roster_sub_outcome_t o;
    assert_int_equal(mod_roster_subscription(RS, H, "a", "e@x.org", MOD_ROSTER_OUT_SUBSCRIBE,
                                             NULL, &o),
                     XD_EFULL);
    assert_int_equal(mod_roster_subscription(RS, H, "a", "f@x.org", MOD_ROSTER_IN_SUBSCRIBE,
                                             NULL, &o),
                     0);
    mod_roster_item_clear(&o.item);
    g_rs.max_items = 0;
}

/* max_groups and max_bytes (mod_roster.h): a set with more groups is
 * XD_EINVAL; a set or outbound subscribe that would grow the roster past
 * max_bytes (its items as sent) is refused, anything that does not grow
 * it is not; sizes unknown (NULL, rows from before schema 2 or written by
 * hand) are measured when the roster is checked. */
static void
test_roster__max_groups_and_bytes(void **state)
{
    fx_t *f = *state;
    const char *g3[] = { "A", "B", "C" }, *g2[] = { "A", "B", "A" };
    g_rs.max_groups = 2;
    assert_int_equal(mod_roster_set_item(RS, H, "a", "h@x.org", NULL, g3, 3, NULL, NULL),
                     XD_EINVAL);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "h@x.org", NULL, g2, 3, NULL, NULL), 0);
    assert_int_equal(mod_roster_remove_item(RS, H, "a", "h@x.org", NULL, NULL), 0);
    g_rs.max_groups = 0;

    const size_t one = strlen("<item jid='b@x.org' subscription='none'/>");
    g_rs.max_bytes = 3 * one;
    assert_int_equal(mod_roster_set_item(RS, H, "a", "b@x.org", NULL, NULL, 0, NULL, NULL), 0);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "c@x.org", NULL, NULL, 0, NULL, NULL), 0);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "d@x.org", NULL, NULL, 0, NULL, NULL), 0);
    assert_int_equal(count(f, "SELECT SUM(wire_bytes) FROM roster_item"), (int64_t)(3 * one));
    assert_int_equal(mod_roster_set_item(RS, H, "a", "e@x.org", NULL, NULL, 0, NULL, NULL),
                     XD_ELIMIT);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "b@x.org", "B", NULL, 0, NULL, NULL),
                     XD_ELIMIT);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "b@x.org", NULL, NULL, 0, NULL, NULL), 0);
    /* Another account is not counted. */
    assert_int_equal(mod_roster_set_item(RS, H, "z", "e@x.org", NULL, NULL, 0, NULL, NULL), 0);

    /* Sizes not known: measured, and refused all the same. */
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(f->db, &c), 0);
    assert_int_equal(xd_db_query(c, "UPDATE roster_item SET wire_bytes = NULL", NULL, 0, NULL,
                                 NULL),
                     0);
    xd_db_release(c);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "e@x.org", NULL, NULL, 0, NULL, NULL),
                     XD_ELIMIT);
    assert_int_equal(mod_roster_remove_item(RS, H, "a", "d@x.org", NULL, NULL), 0);
    assert_int_equal(mod_roster_set_item(RS, H, "a", "e@x.org", NULL, NULL, 0, NULL, NULL), 0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM roster_item WHERE username = 'a'"
                              " AND wire_bytes IS NULL"),
                     0);
    assert_int_equal(count(f, "SELECT SUM(wire_bytes) FROM roster_item WHERE username = 'a'"),
                     (int64_t)(3 * one));

    /* Subscriptions: a new item or ask='subscribe' is refused; an inbound
     * request (kept outside the roster) is not. */
    mod_roster_sub_outcome_t o;
    assert_int_equal(mod_roster_subscription(RS, H, "a", "f@x.org", MOD_ROSTER_OUT_SUBSCRIBE,
                                             NULL, &o),
                     XD_EFULL);
    assert_int_equal(mod_roster_subscription(RS, H, "a", "e@x.org", MOD_ROSTER_OUT_SUBSCRIBE,
                                             NULL, &o),
                     XD_EFULL);
    assert_int_equal(mod_roster_subscription(RS, H, "a", "g@x.org", MOD_ROSTER_IN_SUBSCRIBE,
                                             "hi", &o),
                     0);
    mod_roster_item_clear(&o.item);
    g_rs.max_bytes = 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_roster__set_get_groups_roundtrip),
        T(test_roster__many_items_and_groups),
        T(test_roster__validation_limits),
        T(test_roster__remove_cascade_and_actions),
        T(test_roster__subscription_through_storage),
        T(test_roster__preapproval_through_storage),
        T(test_roster__isolation_remove_user_persistence),
        T(test_roster__max_items),
        T(test_roster__max_groups_and_bytes),
        cmocka_unit_test(test_roster__item_element),
        cmocka_unit_test(test_roster__module_declared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
