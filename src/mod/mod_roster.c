/*
 * mod_roster.c — rosters (RFC 6121 2), versioning (XEP-0237) and stored
 * presence subscriptions (RFC 6121 3); see mod_roster.h.
 *
 * The jabber:iq:roster handler is an XD_IQ_USER, XD_IQ_PARALLEL handler: it
 * runs on the blocking pool and uses the synchronous storage API.  A get
 * marks the requesting session as an interested resource; a set or remove
 * is committed first, then pushed to every interested resource of the user
 * (including the requester), then answered.
 *
 * Size: the whole roster goes to the client in one IQ result, and a c2s
 * stream with more than 4 MiB queued to its peer is closed, so a roster
 * must stay well below that or the session that asks for it ends.  Three
 * limits per host, checked when a change is written, keep it so:
 * `max_items` (items in the roster), `max_groups` (groups of one item) and
 * `max_roster_size` (bytes of the items as sent: serialized, escaped; at
 * most MOD_ROSTER_SIZE_CEILING).  A roster set over max_groups is
 * not-acceptable (RFC 6121 2.3.3: a server-configured limit on the item);
 * one that would add an item past max_items or grow the roster past
 * max_roster_size is resource-constraint (a limit of the account, like a
 * quota).  An outbound subscription that would add an item, or a
 * subscribe / subscribed that would grow the roster past the limit, is not
 * forwarded and goes back to the sender as a presence error.  Inbound
 * events and unsubscribes are never refused, and a change that does not
 * grow the roster always goes through, so a roster over a limit (built
 * before it, or by hand in the database) can shrink again.
 *
 * Each item's size as sent is kept with it (roster_item.wire_bytes,
 * written by every change here; NULL for rows from before schema 2 or
 * written by hand, measured and stored when the roster is next checked).
 * What is written by hand around the module can still make a roster too
 * big, so the sending side checks too: a roster result bigger than
 * MOD_ROSTER_SEND_MAX is refused with resource-constraint, and a push that
 * big is not sent (docs/admin.md, "Roster size").
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mod_roster.h"
#include "xmppd/hooks.h"
#include "xmppd/opt.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

/* ---- schema ----------------------------------------------------------------------------- */

static const char *const ros_mig1[] = {
    "CREATE TABLE roster_item ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " name {text},"
    " subscription {int} NOT NULL DEFAULT 0," /* mod_roster_subscr */
    " ask {int} NOT NULL DEFAULT 0,"
    " pending_in {int} NOT NULL DEFAULT 0,"
    " pending_status {text},"
    " approved {int} NOT NULL DEFAULT 0,"
    " in_roster {int} NOT NULL DEFAULT 1,"
    " PRIMARY KEY (host, username, jid))",
    "CREATE TABLE roster_group ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " grp {key} NOT NULL,"
    " PRIMARY KEY (host, username, jid, grp),"
    " FOREIGN KEY (host, username, jid) REFERENCES roster_item (host, username, jid)"
    " ON DELETE CASCADE)",
    "CREATE TABLE roster_version ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " version {int} NOT NULL,"
    " PRIMARY KEY (host, username))",
    NULL,
};

/* The size of each item as sent (NULL: not known yet, measured when the
 * roster is next checked against max_roster_size). */
static const char *const ros_mig2[] = {
    "ALTER TABLE roster_item ADD COLUMN wire_bytes {int}",
    NULL,
};

static const xd_db_migration_t ros_migrations[] = {
    { 1, NULL, ros_mig1 },
    { 2, NULL, ros_mig2 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t ros_schemas[] = {
    { "mod_roster", ros_migrations },
    { NULL, NULL },
};

/* ---- options, per-host limits ------------------------------------------------------------- */

typedef struct ros_conf {
    int max_items;          /* items one roster may hold */
    int max_groups;         /* groups one item may be in */
    size_t max_roster_size; /* bytes of a roster's items as sent */
} ros_conf_t;

#define ROS_SIZE_FLOOR ((size_t)1 << 10) /* smallest max_roster_size */

/* max_roster_size: a size from ROS_SIZE_FLOOR to MOD_ROSTER_SIZE_CEILING. */
static int
ros_parse_roster_size(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    size_t *out = field;
    if (node->kind != XD_CONF_SCALAR || xd_opt_parse_size(node->value, out) != 0) {
        xd_opt_error(ctx, node, "invalid size \"%s\" (expected a size such as 1MiB)",
                     node->kind == XD_CONF_SCALAR ? node->value : xd_conf_kind_name(node));
        return -1;
    }
    if (*out < ROS_SIZE_FLOOR || *out > MOD_ROSTER_SIZE_CEILING) {
        xd_opt_error(ctx, node, "%s is out of range (expected 1KiB..2MiB: a roster result "
                     "must stay well below the 4MiB a client stream may have queued)",
                     node->value);
        return -1;
    }
    return 0;
}

/* A size_t holds nothing to free. */
static void
ros_free_roster_size(void *field)
{
    *(size_t *)field = 0;
}

static const xd_opt_custom_t ros_roster_size = { "size", ros_parse_roster_size,
                                                 ros_free_roster_size };

#define C_ ros_conf_t
static const xd_opt_t ros_opts[] = {
    XD_OPT_INT("max_items", C_, max_items, "5000", 1, 1000000,
               "Items an account's roster may hold; a roster set or subscription request that "
               "would add one more is refused with resource-constraint."),
    XD_OPT_INT("max_groups", C_, max_groups, "64", 1, 10000,
               "Groups one roster item may be in; a roster set with more (after duplicates are "
               "collapsed) is refused with not-acceptable (RFC 6121 2.3.3)."),
    XD_OPT_("max_roster_size", XD_OPT_TYPE_CUSTOM, C_, max_roster_size, "1MiB",
            &ros_roster_size,
            "Bytes an account's roster may take as the client gets it (the items serialized "
            "and escaped, without the IQ around them), from 1KiB to 2MiB. The whole roster "
            "goes out in one IQ result and a client stream with more than 4MiB queued is "
            "closed, so a roster must stay well below that. A roster set, or a subscribe or "
            "subscribed the user sends, that would grow the roster past it is refused with "
            "resource-constraint; changes that do not grow the roster always go through. "
            "See docs/admin.md, \"Roster size\".",
            0),
    XD_OPT_END,
};
#undef C_

mod_roster_store_t
mod_roster_store_of(xd_module_ctx_t *ctx)
{
    const ros_conf_t *conf = xd_module_opts(ctx);
    return (mod_roster_store_t){ .db = xd_module_db(ctx),
                                 .max_items = (size_t)conf->max_items,
                                 .max_groups = (size_t)conf->max_groups,
                                 .max_bytes = conf->max_roster_size };
}

/* The bytes of `it` inside a roster result or push: its <item/> as
 * mod_roster_item_to_el builds and the stream serializes it. */
static size_t
item_wire_bytes(const mod_roster_item_t *it)
{
    xd_el_t *q = xd_el_new("query", XD_NS_ROSTER);
    mod_roster_item_to_el(q, it);
    size_t len = 0;
    char *s = xd_el_serialize(q, NULL, &len);
    xd_el_free(q);
    /* Less the <query ...> start tag (no '>' in its one attribute, which
     * the serializer escapes) and the end tag. */
    const char *gt = s ? strchr(s, '>') : NULL;
    size_t skip = gt ? (size_t)(gt - s) + 1 + strlen("</query>") : 0;
    xd_free(s);
    return len > skip ? len - skip : 0;
}

/* XD_EFULL when the roster of (host, user) already holds the host's
 * maximum (inside the transaction that would add one). */
static int
ros_room_for_one(xd_db_conn_t *c, size_t max, const char *host, const char *user)
{
    if (!max)
        return 0;
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    int64_t n = 0;
    int rc = xd_db_query_int64(c,
                               "SELECT COUNT(*) FROM roster_item"
                               " WHERE host = ? AND username = ? AND in_roster = 1",
                               key, 2, &n);
    if (rc != 0)
        return rc;
    return n >= (int64_t)max ? XD_EFULL : 0;
}
/* ROSTER_CHANGED for the item after a committed change. */
static void
ros_changed(const char *host, const char *user, const mod_roster_item_t *it)
{
    if (!xd_hook_active(XD_HOOK_ROSTER_CHANGED))
        return;
    xd_roster_view_t v = {
        .jid = it->jid,
        .name = it->name,
        .sub = it->state.sub,
        .ask = it->state.ask,
        .pending_in = it->state.pending_in,
        .in_roster = it->in_roster && !it->removed,
        .groups = (const char *const *)it->groups,
        .ngroups = it->ngroups,
    };
    xd_hook_roster_changed_t ev = { .host = host, .user = user, .item = &v };
    xd_hook_run(XD_HOOK_ROSTER_CHANGED, host, &ev);
}

/* ---- items -------------------------------------------------------------------------------- */

void
mod_roster_item_clear(mod_roster_item_t *it)
{
    if (!it)
        return;
    xd_free(it->jid);
    xd_free(it->name);
    xd_free(it->pending_status);
    for (size_t i = 0; i < it->ngroups; i++)
        xd_free(it->groups[i]);
    xd_free(it->groups);
    memset(it, 0, sizeof *it);
}

void
mod_roster_list_clear(mod_roster_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        mod_roster_item_clear(&l->items[i]);
    xd_free(l->items);
    memset(l, 0, sizeof *l);
}

static char *
val_dup(const xd_db_val_t *v)
{
    if (v->type != XD_DB_TEXT && v->type != XD_DB_BLOB)
        return NULL;
    return xd_strndup(v->s.p ? v->s.p : "", v->s.len);
}

/* The array grows by doubling: an item written by hand may have thousands
 * of groups, and growing it one entry at a time copies it once per group
 * (quadratic; ASan's realloc always moves the block). */
static void
item_add_group(mod_roster_item_t *it, const char *g, size_t len)
{
    if (it->ngroups >= it->groups_cap) {
        it->groups_cap = it->ngroups < 4 ? 8 : it->ngroups * 2;
        it->groups = xd_realloc(it->groups, it->groups_cap * sizeof *it->groups);
    }
    it->groups[it->ngroups++] = xd_strndup(g, len);
}

#define ITEM_COLS "jid, name, subscription, ask, pending_in, pending_status, approved, in_roster"

static void
item_from_row(mod_roster_item_t *it, const xd_db_val_t *c)
{
    it->jid = val_dup(&c[0]);
    it->name = val_dup(&c[1]);
    it->state.sub = (mod_roster_subscr)(c[2].i & 3);
    it->state.ask = c[3].i != 0;
    it->state.pending_in = c[4].i != 0;
    it->pending_status = val_dup(&c[5]);
    it->state.approved = c[6].i != 0;
    it->in_roster = c[7].i != 0;
}

static int
list_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mod_roster_list_t *l = arg;
    if (ncols < 8)
        return XD_EINTERNAL;
    if (l->n == l->cap) { /* doubling, as item_add_group */
        l->cap = l->cap ? l->cap * 2 : 16;
        l->items = xd_realloc(l->items, l->cap * sizeof *l->items);
    }
    memset(&l->items[l->n], 0, sizeof l->items[l->n]);
    item_from_row(&l->items[l->n++], cols);
    return 0;
}

/* Groups arrive ordered by (jid, grp) and items by jid: a merge. */
typedef struct grp_merge {
    mod_roster_list_t *l; /* the items */
    size_t at;            /* current item */
} grp_merge_t;

static int
group_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    grp_merge_t *m = arg;
    if (ncols < 2)
        return XD_EINTERNAL;
    xd_str_t jid = cols[0].s;
    while (m->at < m->l->n) {
        mod_roster_item_t *it = &m->l->items[m->at];
        size_t jl = strlen(it->jid);
        size_t k = jl < jid.len ? jl : jid.len;
        int cmp = memcmp(it->jid, jid.p, k);
        if (cmp == 0)
            cmp = jl < jid.len ? -1 : jl > jid.len ? 1 : 0;
        if (cmp == 0) {
            item_add_group(it, cols[1].s.p ? cols[1].s.p : "", cols[1].s.len);
            return 0;
        }
        if (cmp > 0)
            return 0; /* a group of an item we do not list */
        m->at++;
    }
    return 0;
}

typedef struct get_all {
    const char *host, *user; /* the account */
    mod_roster_list_t *out;  /* result */
} get_all_t;

static int
get_version(xd_db_conn_t *c, const char *host, const char *user, int64_t *out)
{
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    int rc = xd_db_query_int64(
        c, "SELECT version FROM roster_version WHERE host = ? AND username = ?", key, 2, out);
    if (rc == XD_ENOTFOUND) {
        *out = 0;
        rc = 0;
    }
    return rc;
}

/* The items of the roster of (host, user) into out (empty). */
static int
load_all(xd_db_conn_t *c, const char *host, const char *user, mod_roster_list_t *out)
{
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    int rc = xd_db_query(c,
                         "SELECT " ITEM_COLS " FROM roster_item WHERE host = ? AND username = ?"
                         " AND in_roster = 1 ORDER BY jid",
                         key, 2, list_row, out);
    grp_merge_t m = { out, 0 };
    if (rc == 0 && out->n)
        rc = xd_db_query(c,
                         "SELECT jid, grp FROM roster_group WHERE host = ? AND username = ?"
                         " ORDER BY jid, grp",
                         key, 2, group_row, &m);
    return rc;
}

static int
get_all_tx(xd_db_conn_t *c, void *arg)
{
    get_all_t *g = arg;
    mod_roster_list_clear(g->out); /* a retried transaction starts again */
    int rc = get_version(c, g->host, g->user, &g->out->version);
    return rc != 0 ? rc : load_all(c, g->host, g->user, g->out);
}

int
mod_roster_get_all(const mod_roster_store_t *rs, const char *host, const char *user, mod_roster_list_t *out)
{
    memset(out, 0, sizeof *out);
    if (!rs || !rs->db)
        return XD_ECLOSED;
    get_all_t g = { host, user, out };
    int rc = xd_db_tx(rs->db, get_all_tx, &g);
    if (rc < 0)
        mod_roster_list_clear(out);
    return rc < 0 ? rc : 0;
}

int
mod_roster_version(const mod_roster_store_t *rs, const char *host, const char *user, int64_t *out)
{
    *out = 0;
    if (!rs || !rs->db)
        return XD_ECLOSED;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(rs->db, &c);
    if (rc != 0)
        return rc;
    rc = get_version(c, host, user, out);
    xd_db_release(c);
    return rc;
}

/* Loads one item (any in_roster) into *out.  XD_ENOTFOUND. */
static int
load_item(xd_db_conn_t *c, const char *host, const char *user, const char *contact,
          mod_roster_item_t *out)
{
    mod_roster_list_t l = { 0 };
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(contact) };
    int rc = xd_db_query(c,
                         "SELECT " ITEM_COLS " FROM roster_item"
                         " WHERE host = ? AND username = ? AND jid = ?",
                         key, 3, list_row, &l);
    grp_merge_t m = { &l, 0 };
    if (rc == 0 && l.n == 1)
        rc = xd_db_query(c,
                         "SELECT jid, grp FROM roster_group WHERE host = ? AND username = ?"
                         " AND jid = ? ORDER BY grp",
                         key, 3, group_row, &m);
    if (rc == 0 && l.n != 1)
        rc = XD_ENOTFOUND;
    if (rc == 0) {
        *out = l.items[0];
        l.n = 0;
    }
    mod_roster_list_clear(&l);
    return rc;
}

typedef struct get_one {
    const char *host, *user, *contact; /* the key */
    mod_roster_item_t *out;            /* result */
} get_one_t;

static int
get_one_tx(xd_db_conn_t *c, void *arg)
{
    get_one_t *g = arg;
    mod_roster_item_clear(g->out);
    return load_item(c, g->host, g->user, g->contact, g->out);
}

int
mod_roster_get_item(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact,
                    mod_roster_item_t *out)
{
    memset(out, 0, sizeof *out);
    if (!rs || !rs->db)
        return XD_ECLOSED;
    get_one_t g = { host, user, contact, out };
    int rc = xd_db_tx(rs->db, get_one_tx, &g);
    if (rc < 0)
        mod_roster_item_clear(out);
    return rc < 0 ? rc : 0;
}

static int
bump_version(xd_db_conn_t *c, const char *host, const char *user, int64_t *out)
{
    static const char *const cols[] = { "host", "username", "version" };
    static const xd_db_upsert_t ups = { "roster_version", cols, 3, 2, XD_DB_UPSERT_ADD };
    xd_db_val_t v[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_INT(1) };
    int rc = xd_db_upsert(c, &ups, v);
    return rc != 0 ? rc : get_version(c, host, user, out);
}

/* Writes the item's row (not its groups); wire_bytes: its size as sent. */
static int
store_state(xd_db_conn_t *c, const char *host, const char *user, const mod_roster_item_t *it,
            size_t wire_bytes)
{
    xd_db_val_t v[] = {
        XD_DB_V_CSTR(host),
        XD_DB_V_CSTR(user),
        XD_DB_V_CSTR(it->jid),
        it->name ? XD_DB_V_CSTR(it->name) : XD_DB_V_NULL,
        XD_DB_V_INT(it->state.sub),
        XD_DB_V_INT(it->state.ask),
        XD_DB_V_INT(it->state.pending_in),
        it->pending_status ? XD_DB_V_CSTR(it->pending_status) : XD_DB_V_NULL,
        XD_DB_V_INT(it->state.approved),
        XD_DB_V_INT(it->in_roster),
        XD_DB_V_INT(wire_bytes),
    };
    static const char *const cols[] = { "host",       "username",       "jid",
                                        "name",       "subscription",   "ask",
                                        "pending_in", "pending_status", "approved",
                                        "in_roster",  "wire_bytes" };
    static const xd_db_upsert_t ups = { "roster_item", cols, 11, 3, XD_DB_UPSERT_REPLACE };
    return xd_db_upsert(c, &ups, v);
}

/* ---- size --------------------------------------------------------------------------------- */

/* SUM(wire_bytes) and how many rows have none. */
typedef struct size_sum {
    int64_t bytes;   /* bytes of the items whose size is known */
    int64_t unknown; /* items whose size is not */
} size_sum_t;

static int
size_sum_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    size_sum_t *t = arg;
    if (ncols < 2)
        return XD_EINTERNAL;
    t->bytes = cols[0].type == XD_DB_INT64 ? cols[0].i : 0;
    t->unknown = cols[1].type == XD_DB_INT64 ? cols[1].i : 0;
    return 0;
}

/* Measures and stores the size of every item of the roster of (host,
 * user): rows from before schema 2 or written by hand have none. */
static int
ros_measure(xd_db_conn_t *c, const char *host, const char *user)
{
    mod_roster_list_t l = { 0 };
    int rc = load_all(c, host, user, &l);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        xd_db_val_t v[] = { XD_DB_V_INT(item_wire_bytes(&l.items[i])), XD_DB_V_CSTR(host),
                            XD_DB_V_CSTR(user), XD_DB_V_CSTR(l.items[i].jid) };
        rc = xd_db_query(c,
                         "UPDATE roster_item SET wire_bytes = ?"
                         " WHERE host = ? AND username = ? AND jid = ?",
                         v, 4, NULL, NULL);
    }
    mod_roster_list_clear(&l);
    return rc;
}

/* XD_ELIMIT when the roster of (host, user), with contact's item taking
 * new_bytes instead of what it takes now (if it is in the roster), would
 * be bigger than max bytes.  Inside the transaction that changes it; the
 * caller asks only for a change that grows the roster. */
static int
ros_room_for_bytes(xd_db_conn_t *c, size_t max, const char *host, const char *user,
                   const char *contact, size_t new_bytes)
{
    if (!max)
        return 0;
    if (new_bytes > max)
        return XD_ELIMIT;
    static const char sql[] = "SELECT COALESCE(SUM(wire_bytes), 0), COUNT(*) - COUNT(wire_bytes)"
                              " FROM roster_item WHERE host = ? AND username = ?"
                              " AND in_roster = 1 AND jid != ?";
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(contact) };
    size_sum_t t = { 0, 0 };
    int rc = xd_db_query(c, sql, key, 3, size_sum_row, &t);
    if (rc == 0 && t.unknown > 0) {
        rc = ros_measure(c, host, user);
        t = (size_sum_t){ 0, 0 };
        if (rc == 0)
            rc = xd_db_query(c, sql, key, 3, size_sum_row, &t);
    }
    if (rc != 0)
        return rc;
    return t.bytes < 0 || (uint64_t)t.bytes + new_bytes > max ? XD_ELIMIT : 0;
}

/* ---- set ---------------------------------------------------------------------------------- */

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool
text_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= MOD_ROSTER_TEXT_MAX;
}

typedef struct set_args {
    const char *host, *user, *contact, *name; /* the request */
    const char **groups;                      /* sorted, unique */
    size_t ngroups;                           /* how many */
    size_t max;                               /* the host's max_items (0: none) */
    size_t max_bytes;                         /* the host's max_roster_size (0: none) */
    mod_roster_item_t item;                   /* the stored item */
    int64_t ver;                              /* the new version */
} set_args_t;

static int
set_tx(xd_db_conn_t *c, void *arg)
{
    set_args_t *s = arg;
    mod_roster_item_clear(&s->item);
    int rc = load_item(c, s->host, s->user, s->contact, &s->item);
    if (rc == XD_ENOTFOUND) {
        s->item.jid = xd_strdup(s->contact);
        rc = 0;
    }
    if (rc == 0 && !s->item.in_roster)
        rc = ros_room_for_one(c, s->max, s->host, s->user);
    if (rc != 0)
        return rc;
    size_t old_bytes = s->item.in_roster ? item_wire_bytes(&s->item) : 0;
    xd_free(s->item.name);
    s->item.name = s->name ? xd_strdup(s->name) : NULL;
    s->item.in_roster = true;
    for (size_t i = 0; i < s->item.ngroups; i++)
        xd_free(s->item.groups[i]);
    s->item.ngroups = 0;
    for (size_t i = 0; i < s->ngroups; i++)
        item_add_group(&s->item, s->groups[i], strlen(s->groups[i]));
    size_t new_bytes = item_wire_bytes(&s->item);
    if (new_bytes > old_bytes &&
        (rc = ros_room_for_bytes(c, s->max_bytes, s->host, s->user, s->contact, new_bytes)) != 0)
        return rc;
    if ((rc = store_state(c, s->host, s->user, &s->item, new_bytes)) != 0)
        return rc;
    xd_db_val_t key[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user),
                          XD_DB_V_CSTR(s->contact), XD_DB_V_NULL };
    rc = xd_db_query(c, "DELETE FROM roster_group WHERE host = ? AND username = ? AND jid = ?",
                     key, 3, NULL, NULL);
    for (size_t i = 0; rc == 0 && i < s->ngroups; i++) {
        key[3] = XD_DB_V_CSTR(s->groups[i]);
        rc = xd_db_query(c,
                         "INSERT INTO roster_group (host, username, jid, grp) VALUES (?, ?, ?, ?)",
                         key, 4, NULL, NULL);
    }
    return rc != 0 ? rc : bump_version(c, s->host, s->user, &s->ver);
}

int
mod_roster_set_item(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact, const char *name,
                    const char *const *groups, size_t ngroups, mod_roster_item_t *pushed,
                    int64_t *ver)
{
    if (pushed)
        memset(pushed, 0, sizeof *pushed);
    if (!rs || !rs->db)
        return XD_ECLOSED;
    if (!contact || !*contact || (name && !text_ok(name)))
        return XD_EINVAL;
    set_args_t s = { .host = host, .user = user, .contact = contact, .name = name,
                     .max = rs->max_items, .max_bytes = rs->max_bytes };
    s.groups = xd_calloc(ngroups + 1, sizeof *s.groups);
    for (size_t i = 0; i < ngroups; i++) {
        if (!groups[i] || !text_ok(groups[i])) {
            xd_free(s.groups);
            return XD_EINVAL;
        }
        s.groups[i] = groups[i];
    }
    qsort(s.groups, ngroups, sizeof *s.groups, cmp_str);
    for (size_t i = 0; i < ngroups; i++)
        if (s.ngroups == 0 || strcmp(s.groups[s.ngroups - 1], s.groups[i]) != 0)
            s.groups[s.ngroups++] = s.groups[i];
    if (rs->max_groups && s.ngroups > rs->max_groups) {
        xd_free(s.groups);
        return XD_EINVAL;
    }
    int rc = xd_db_tx(rs->db, set_tx, &s);
    xd_free(s.groups);
    if (rc < 0) {
        mod_roster_item_clear(&s.item);
        return rc;
    }
    ros_changed(host, user, &s.item);
    if (ver)
        *ver = s.ver;
    if (pushed)
        *pushed = s.item;
    else
        mod_roster_item_clear(&s.item);
    return 0;
}

/* ---- remove ------------------------------------------------------------------------------- */

typedef struct rm_args {
    const char *host, *user, *contact; /* the key */
    mod_roster_item_t before;          /* the item as it was */
    int64_t ver;                       /* the new version */
} rm_args_t;

static int
rm_tx(xd_db_conn_t *c, void *arg)
{
    rm_args_t *r = arg;
    mod_roster_item_clear(&r->before);
    int rc = load_item(c, r->host, r->user, r->contact, &r->before);
    if (rc == 0 && !r->before.in_roster)
        rc = XD_ENOTFOUND;
    if (rc != 0)
        return rc;
    xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user), XD_DB_V_CSTR(r->contact) };
    rc = xd_db_query(c, "DELETE FROM roster_item WHERE host = ? AND username = ? AND jid = ?", key,
                     3, NULL, NULL);
    return rc != 0 ? rc : bump_version(c, r->host, r->user, &r->ver);
}

int
mod_roster_remove_item(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact,
                       mod_roster_item_t *before, int64_t *ver)
{
    if (before)
        memset(before, 0, sizeof *before);
    if (!rs || !rs->db)
        return XD_ECLOSED;
    rm_args_t r = { .host = host, .user = user, .contact = contact };
    int rc = xd_db_tx(rs->db, rm_tx, &r);
    if (rc < 0) {
        mod_roster_item_clear(&r.before);
        return rc;
    }
    mod_roster_item_t gone = { .jid = (char *)contact, .removed = true };
    ros_changed(host, user, &gone);
    if (ver)
        *ver = r.ver;
    if (before)
        *before = r.before;
    else
        mod_roster_item_clear(&r.before);
    return 0;
}

mod_roster_remove_actions_t
mod_roster_remove_actions(const mod_roster_state_t *b)
{
    mod_roster_remove_actions_t a = {
        .unsubscribe = (b->sub & MOD_ROSTER_SUB_TO) || b->ask,
        .unsubscribed = (b->sub & MOD_ROSTER_SUB_FROM) || b->pending_in || b->approved,
    };
    return a;
}


/* ---- subscriptions ------------------------------------------------------------------------ */

typedef struct sub_args {
    const char *host, *user, *contact, *status; /* the request */
    mod_roster_event ev;                        /* the event */
    size_t max;                                 /* the host's max_items (0: none) */
    size_t max_bytes;                           /* the host's max_roster_size (0: none) */
    mod_roster_sub_outcome_t *out;              /* result */
} sub_args_t;

static int
sub_tx(xd_db_conn_t *c, void *arg)
{
    sub_args_t *s = arg;
    mod_roster_sub_outcome_t *o = s->out;
    mod_roster_item_clear(&o->item);
    memset(o, 0, sizeof *o);
    mod_roster_item_t *it = &o->item;
    int rc = load_item(c, s->host, s->user, s->contact, it);
    bool existed = rc == 0;
    if (rc == XD_ENOTFOUND) {
        it->jid = xd_strdup(s->contact);
        rc = 0;
    }
    if (rc != 0)
        return rc;
    o->r = mod_roster_sub_apply(it->state, s->ev);
    bool outbound = s->ev <= MOD_ROSTER_OUT_UNSUBSCRIBED;
    if (o->r.changed) {
        bool had_pending = it->state.pending_in;
        bool was_in = it->in_roster;
        /* What the user chose to add or ask for may not grow the roster
         * past max_roster_size; the contact's answers and cancelling may.
         * Only then is the size before needed (an item written by hand
         * can be megabytes to serialize). */
        bool chosen = outbound && (!was_in || s->ev == MOD_ROSTER_OUT_SUBSCRIBE ||
                                   s->ev == MOD_ROSTER_OUT_SUBSCRIBED);
        size_t old_bytes = was_in && chosen ? item_wire_bytes(it) : 0;
        it->state = o->r.state;
        if (outbound && !it->in_roster) {
            rc = ros_room_for_one(c, s->max, s->host, s->user);
            if (rc != 0)
                return rc;
            it->in_roster = true; /* RFC 6121 3.1.2, 3.1.5, 3.4: the item is created */
        }
        if (!it->state.pending_in) {
            xd_free(it->pending_status);
            it->pending_status = NULL;
        } else if (!had_pending && s->status) {
            it->pending_status = xd_strdup(s->status);
        }
        size_t new_bytes = item_wire_bytes(it);
        if (it->in_roster && chosen && new_bytes > old_bytes) {
            rc = ros_room_for_bytes(c, s->max_bytes, s->host, s->user, s->contact, new_bytes);
            if (rc != 0)
                return rc == XD_ELIMIT ? XD_EFULL : rc;
        }
        xd_db_val_t key[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user),
                              XD_DB_V_CSTR(s->contact) };
        mod_roster_state_t z = { 0 };
        if (!it->in_roster && !memcmp(&it->state, &z, sizeof z)) {
            if (existed)
                rc = xd_db_query(c,
                                 "DELETE FROM roster_item WHERE host = ? AND username = ? AND jid = ?",
                                 key, 3, NULL, NULL);
        } else {
            rc = store_state(c, s->host, s->user, it, new_bytes);
        }
        if (rc != 0)
            return rc;
    }
    o->r.push = o->r.push && it->in_roster;
    if (o->r.push)
        return bump_version(c, s->host, s->user, &o->version);
    return get_version(c, s->host, s->user, &o->version);
}

int
mod_roster_subscription(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact,
                        mod_roster_event ev, const char *status, mod_roster_sub_outcome_t *out)
{
    memset(out, 0, sizeof *out);
    if (!rs || !rs->db)
        return XD_ECLOSED;
    if ((unsigned)ev >= MOD_ROSTER_EVENT_COUNT || !contact || !*contact)
        return XD_EINVAL;
    sub_args_t s = { host, user, contact, status, ev, rs->max_items, rs->max_bytes, out };
    int rc = xd_db_tx(rs->db, sub_tx, &s);
    if (rc < 0) {
        mod_roster_item_clear(&out->item);
        memset(out, 0, sizeof *out);
        return rc;
    }
    if (out->r.changed)
        ros_changed(host, user, &out->item);
    return 0;
}

/* ---- contacts, user removal --------------------------------------------------------------- */

typedef struct contacts_args {
    int (*fn)(void *arg, const char *jid); /* the caller's */
    void *arg;                             /* its argument */
} contacts_args_t;

static int
contacts_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    contacts_args_t *a = arg;
    if (ncols < 1 || cols[0].type != XD_DB_TEXT)
        return 0;
    char *jid = xd_strndup(cols[0].s.p ? cols[0].s.p : "", cols[0].s.len);
    int rc = a->fn(a->arg, jid);
    xd_free(jid);
    return rc;
}

int
mod_roster_contacts(const mod_roster_store_t *rs, const char *host, const char *user, mod_roster_filter filter,
                    int (*fn)(void *arg, const char *jid), void *arg)
{
    if (!rs || !rs->db)
        return XD_ECLOSED;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(rs->db, &c);
    if (rc != 0)
        return rc;
    contacts_args_t a = { fn, arg };
    int bit = filter == MOD_ROSTER_FROM ? MOD_ROSTER_SUB_FROM : MOD_ROSTER_SUB_TO;
    xd_db_val_t v[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_INT(bit) };
    rc = xd_db_query(c,
                     "SELECT jid FROM roster_item WHERE host = ? AND username = ?"
                     " AND (subscription & ?) != 0 ORDER BY jid",
                     v, 3, contacts_row, &a);
    xd_db_release(c);
    return rc;
}

int
mod_roster_pending_in(const mod_roster_store_t *rs, const char *host, const char *user, int (*fn)(void *arg, const char *jid),
                      void *arg)
{
    if (!rs || !rs->db)
        return XD_ECLOSED;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(rs->db, &c);
    if (rc != 0)
        return rc;
    contacts_args_t a = { fn, arg };
    xd_db_val_t v[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    rc = xd_db_query(c,
                     "SELECT jid FROM roster_item WHERE host = ? AND username = ?"
                     " AND pending_in != 0 ORDER BY jid",
                     v, 2, contacts_row, &a);
    xd_db_release(c);
    return rc;
}

typedef struct rmu_args {
    const char *host, *user; /* the account */
} rmu_args_t;

static int
rmu_tx(xd_db_conn_t *c, void *arg)
{
    rmu_args_t *r = arg;
    xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user) };
    int rc = xd_db_query(c, "DELETE FROM roster_item WHERE host = ? AND username = ?", key, 2,
                         NULL, NULL);
    if (rc == 0)
        rc = xd_db_query(c, "DELETE FROM roster_version WHERE host = ? AND username = ?", key, 2,
                         NULL, NULL);
    return rc;
}

int
mod_roster_remove_user(const mod_roster_store_t *rs, const char *host, const char *user)
{
    if (!rs || !rs->db)
        return XD_ECLOSED;
    rmu_args_t r = { host, user };
    int rc = xd_db_tx(rs->db, rmu_tx, &r);
    return rc < 0 ? rc : 0;
}

/* ---- pushes ------------------------------------------------------------------------------- */

void
mod_roster_item_to_el(xd_el_t *parent, const mod_roster_item_t *it)
{
    xd_el_t *e = xd_el_add_child(parent, "item", XD_NS_ROSTER);
    xd_el_set_attr(e, "jid", it->jid);
    if (it->removed) {
        xd_el_set_attr(e, "subscription", "remove");
        return;
    }
    if (it->name)
        xd_el_set_attr(e, "name", it->name);
    xd_el_set_attr(e, "subscription", xd_roster_sub_name(it->state.sub));
    if (it->state.ask)
        xd_el_set_attr(e, "ask", "subscribe");
    if (it->state.approved)
        xd_el_set_attr(e, "approved", "true");
    for (size_t i = 0; i < it->ngroups; i++)
        xd_el_add_text(xd_el_add_child(e, "group", XD_NS_ROSTER), it->groups[i]);
}

size_t
mod_roster_push(const char *host, const char *user, const mod_roster_item_t *it, int64_t ver)
{
    xd_jid_t *bare = NULL;
    if (xd_jid_make(xd_str_c(user), xd_str_c(host), XD_STR_NULL, &bare) != 0)
        return 0;
    xd_session_info_t small[16], *ents = small;
    size_t n = xd_session_list(bare, ents, 16);
    if (n > 16) {
        size_t cap = n;
        ents = xd_calloc(cap, sizeof *ents);
        n = xd_session_list(bare, ents, cap);
        if (n > cap)
            n = cap; /* sessions bound meanwhile: the next push reaches them */
    }
    static _Atomic unsigned long push_seq;
    char verbuf[32];
    snprintf(verbuf, sizeof verbuf, "%" PRId64, ver);
    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].flags & XD_SESSION_INTERESTED) {
            char id[48];
            snprintf(id, sizeof id, "push%lu", (unsigned long)++push_seq);
            xd_el_t *iq = xd_el_new("iq", NULL);
            xd_el_set_attr(iq, "type", "set");
            xd_el_set_attr(iq, "id", id);
            xd_el_set_attr(iq, "to", xd_jid_full_str(ents[i].jid).p);
            xd_el_t *q = xd_el_add_child(iq, "query", XD_NS_ROSTER);
            xd_el_set_attr(q, "ver", verbuf);
            mod_roster_item_to_el(q, it);
            xd_stanza_t *st = xd_el_freeze(iq);
            size_t len = 0;
            (void)xd_stanza_bytes(st, &len); /* cached: the stream writes these bytes */
            if (len > MOD_ROSTER_SEND_MAX) {
                /* Only an item written by hand gets this big: sent, it
                 * would end the stream (mod_roster.h). */
                XD_LOG(NULL, XD_WARN, "roster push too big, not sent",
                       "host=%s user=%s contact=%s bytes=%zu limit=%zu", host, user, it->jid,
                       len, MOD_ROSTER_SEND_MAX);
                xd_stanza_unref(st);
            } else {
                xd_session_send_take(&ents[i].ref, st);
                sent++;
            }
        }
        xd_session_info_clear(&ents[i]);
    }
    if (ents != small)
        xd_free(ents);
    xd_jid_unref(bare);
    return sent;
}

/* ---- the IQ handler ------------------------------------------------------------------------ */

static xd_stanza_t *
iq_error(const xd_iq_req_t *req, xd_cond cond, const char *text)
{
    return xd_stanza_error(req->iq, cond, text);
}

static xd_stanza_t *
roster_get(const xd_iq_req_t *req, const mod_roster_store_t *rs, const char *host,
           const char *user)
{
    /* RFC 6121 2.1.6; gone sessions do not matter */
    (void)xd_session_set_flag(req->from, XD_SESSION_INTERESTED, true);
    const char *ver = xd_el_attr(req->payload, "ver");
    char cur[32];
    if (ver) {
        int64_t v = 0;
        if (mod_roster_version(rs, host, user, &v) != 0)
            return iq_error(req, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        snprintf(cur, sizeof cur, "%" PRId64, v);
        if (strcmp(cur, ver) == 0)
            return xd_iq_result(req->iq); /* XEP-0237: unchanged, pushes follow */
    }
    mod_roster_list_t l;
    int rc = mod_roster_get_all(rs, host, user, &l);
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "roster get failed", "host=%s user=%s err=%s", host, user,
               xd_strerror(rc));
        return iq_error(req, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_ROSTER);
    if (ver) {
        snprintf(cur, sizeof cur, "%" PRId64, l.version);
        xd_el_set_attr(q, "ver", cur);
    }
    for (size_t i = 0; i < l.n; i++)
        mod_roster_item_to_el(q, &l.items[i]);
    size_t nitems = l.n;
    mod_roster_list_clear(&l);
    xd_stanza_t *res = xd_el_freeze(r);
    size_t len = 0;
    (void)xd_stanza_bytes(res, &len); /* cached: the stream writes these bytes */
    if (len <= MOD_ROSTER_SEND_MAX)
        return res;
    /* Bigger than one stream can take (the write-time limits keep rosters
     * below this; this one was built before them or by hand).  One IQ
     * result cannot be split, and interim pushes (XEP-0237) would queue
     * the same bytes at once: an error instead of the end of the session. */
    xd_stanza_unref(res);
    XD_LOG(NULL, XD_WARN, "roster too big to send", "host=%s user=%s items=%zu bytes=%zu limit=%zu",
           host, user, nitems, len, MOD_ROSTER_SEND_MAX);
    char text[160];
    snprintf(text, sizeof text,
             "the roster is too big to send (%zu items, %zu bytes; at most %zu): "
             "remove items to shrink it",
             nitems, len, MOD_ROSTER_SEND_MAX);
    return iq_error(req, XD_COND_RESOURCE_CONSTRAINT, text);
}

static xd_stanza_t *
roster_set(const xd_iq_req_t *req, const mod_roster_store_t *rs, const char *host,
           const char *user)
{
    const xd_el_t *item = xd_el_first_child(req->payload);
    if (xd_el_child_count(req->payload) != 1 || !xd_el_is(item, "item", XD_NS_ROSTER))
        return iq_error(req, XD_COND_BAD_REQUEST, "a roster set holds exactly one item");
    const char *jid_s = xd_el_attr(item, "jid");
    xd_jid_t *jid = NULL;
    if (!jid_s || xd_jid_parse(xd_str_c(jid_s), &jid) != 0)
        return iq_error(req, XD_COND_BAD_REQUEST, "the item needs a valid 'jid'");
    xd_stanza_t *reply = NULL;
    const char **groups = NULL;
    if (!xd_jid_is_bare(jid)) {
        reply = iq_error(req, XD_COND_BAD_REQUEST, "a roster item's 'jid' is a bare JID");
        goto out;
    }
    if (xd_jid_eq_bare(jid, req->to)) {
        reply = iq_error(req, XD_COND_BAD_REQUEST, "the user's own JID is not a roster item");
        goto out;
    }
    const char *contact = xd_jid_bare_str(jid).p;
    const char *sub = xd_el_attr(item, "subscription");
    if (sub && strcmp(sub, "remove") != 0) {
        reply = iq_error(req, XD_COND_BAD_REQUEST, "'subscription' may only be 'remove'");
        goto out;
    }
    int64_t ver = 0;
    if (sub) {
        mod_roster_item_t before;
        int rc = mod_roster_remove_item(rs, host, user, contact, &before, &ver);
        if (rc == XD_ENOTFOUND) {
            reply = iq_error(req, XD_COND_ITEM_NOT_FOUND, NULL);
            goto out;
        }
        if (rc != 0) {
            reply = iq_error(req, XD_COND_INTERNAL_SERVER_ERROR, NULL);
            goto out;
        }
        mod_roster_item_t gone = { .jid = (char *)contact, .removed = true };
        mod_roster_push(host, user, &gone, ver);
        /* RFC 6121 2.5.2: the presence side. */
        mod_presence_roster_removed(req->ctx, host, user, contact,
                                    mod_roster_remove_actions(&before.state));
        mod_roster_item_clear(&before);
        reply = xd_iq_result(req->iq);
        goto out;
    }
    const char *name = xd_el_attr(item, "name");
    if (name && !text_ok(name)) {
        reply = iq_error(req, XD_COND_NOT_ACCEPTABLE, "the name is empty or too long");
        goto out;
    }
    size_t ng = 0, cap = xd_el_child_count(item);
    groups = xd_calloc(cap + 1, sizeof *groups);
    for (const xd_el_t *g = xd_el_first_child(item); g; g = xd_el_next(g)) {
        if (!xd_el_is(g, "group", XD_NS_ROSTER))
            continue;
        const char *t = xd_el_text(g);
        if (!text_ok(t)) {
            reply = iq_error(req, XD_COND_NOT_ACCEPTABLE, "a group name is empty or too long");
            goto out;
        }
        groups[ng++] = t;
    }
    mod_roster_item_t pushed;
    int rc = mod_roster_set_item(rs, host, user, contact, name, groups, ng, &pushed, &ver);
    if (rc == XD_EINVAL) {
        /* The name and groups are checked above: too many groups (RFC 6121
         * 2.3.3, a server-configured limit on the item). */
        char text[96];
        snprintf(text, sizeof text, "an item may be in at most %zu groups", rs->max_groups);
        reply = iq_error(req, XD_COND_NOT_ACCEPTABLE, text);
        goto out;
    }
    if (rc == XD_EFULL || rc == XD_ELIMIT) {
        char text[96];
        if (rc == XD_EFULL)
            snprintf(text, sizeof text, "the roster is full (%zu items)", rs->max_items);
        else
            snprintf(text, sizeof text, "the roster is full (%zu bytes)", rs->max_bytes);
        reply = iq_error(req, XD_COND_RESOURCE_CONSTRAINT, text);
        goto out;
    }
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "roster set failed", "host=%s user=%s err=%s", host, user,
               xd_strerror(rc));
        reply = iq_error(req, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        goto out;
    }
    mod_roster_push(host, user, &pushed, ver);
    mod_roster_item_clear(&pushed);
    reply = xd_iq_result(req->iq);
out:
    xd_free(groups);
    xd_jid_unref(jid);
    return reply;
}

static xd_stanza_t *
roster_iq(const xd_iq_req_t *req)
{
    /* RFC 6121 2.1.5: only the user's own roster. */
    if (!xd_jid_eq_bare(req->from, req->to))
        return iq_error(req, XD_COND_FORBIDDEN, NULL);
    if (!xd_el_is(req->payload, "query", XD_NS_ROSTER))
        return iq_error(req, XD_COND_BAD_REQUEST, NULL);
    const char *user = xd_jid_local(req->to).p;
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    mod_roster_store_t rs = mod_roster_store_of(req->ctx);
    if (type && strcmp(type, "get") == 0)
        return roster_get(req, &rs, req->host, user);
    return roster_set(req, &rs, req->host, user);
}

/* ---- ROSTER_GET: the roster for other modules ------------------------------------------------ */

typedef struct ros_view_args {
    xd_hook_roster_get_t *ev; /* the request */
    int stop;                 /* the caller's fn said stop */
} ros_view_args_t;

static int
ros_view_item(ros_view_args_t *a, const mod_roster_item_t *it)
{
    xd_roster_view_t v = {
        .jid = it->jid,
        .name = it->name,
        .sub = it->state.sub,
        .ask = it->state.ask,
        .pending_in = it->state.pending_in,
        .in_roster = it->in_roster,
        .groups = (const char *const *)it->groups,
        .ngroups = it->ngroups,
    };
    return a->stop = a->ev->fn(a->ev->arg, &v);
}

/* On the pool (the hook's thread): the items from storage. */
static int
ros_get_hook(xd_module_ctx_t *ctx, xd_hook_roster_get_t *ev, void *arg)
{
    (void)arg;
    mod_roster_store_t rs = mod_roster_store_of(ctx);
    ros_view_args_t a = { ev, 0 };
    ev->served = true;
    if (ev->contact) {
        mod_roster_item_t it;
        ev->rc = mod_roster_get_item(&rs, ev->host, ev->user, ev->contact, &it);
        if (ev->rc == XD_ENOTFOUND) {
            ev->rc = 0; /* not in the roster: no item */
        } else if (ev->rc == 0) {
            ros_view_item(&a, &it);
            mod_roster_item_clear(&it);
        }
        return XD_HOOK_STOP;
    }
    mod_roster_list_t l;
    ev->rc = mod_roster_get_all(&rs, ev->host, ev->user, &l);
    for (size_t i = 0; ev->rc == 0 && i < l.n && !a.stop; i++)
        ros_view_item(&a, &l.items[i]);
    if (ev->rc == 0)
        mod_roster_list_clear(&l);
    return XD_HOOK_STOP;
}

/* ---- the module ---------------------------------------------------------------------------- */

/* C2S_STREAM_FEATURES: roster versioning (XEP-0237) and pre-approval
 * (RFC 6121 3.4) with the bind feature. */
static int
ros_features(xd_module_ctx_t *ctx, xd_hook_features_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    if (ev->authenticated) {
        xd_el_add_child(ev->features, "ver", XD_NS_ROSTERVER);
        xd_el_add_child(ev->features, "sub", XD_NS_PRE_APPROVAL);
    }
    return XD_HOOK_OK;
}

/* ---- XEP-0227 export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ---------------------------- */

typedef struct ros_pie_pending {
    xd_el_t *user_el; /* where the <presence type='subscribe'/> go */
    const char *to;   /* the account's bare JID */
} ros_pie_pending_t;

static int
ros_pie_pending_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ros_pie_pending_t *p = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT)
        return 0;
    char *jid = val_dup(&cols[0]), *status = val_dup(&cols[1]);
    xd_el_t *pr = xd_el_add_child(p->user_el, "presence", XD_NS_CLIENT);
    xd_el_set_attr(pr, "type", "subscribe");
    xd_el_set_attr(pr, "from", jid);
    xd_el_set_attr(pr, "to", p->to);
    if (status)
        xd_el_add_text(xd_el_add_child(pr, "status", XD_NS_CLIENT), status);
    xd_free(jid);
    xd_free(status);
    return 0;
}

/* The roster as a jabber:iq:roster <query/> (as a roster get shows it), and
 * pending incoming subscription requests as <presence type='subscribe'/>. */
static int
ros_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)arg;
    mod_roster_store_t rs = mod_roster_store_of(ctx);
    mod_roster_list_t l;
    int rc = mod_roster_get_all(&rs, ev->host, ev->user, &l);
    if (rc == 0) {
        xd_el_t *q = xd_el_add_child(ev->user_el, "query", XD_NS_ROSTER);
        for (size_t i = 0; i < l.n; i++)
            mod_roster_item_to_el(q, &l.items[i]);
        mod_roster_list_clear(&l);
        char *to = xd_asprintf("%s@%s", ev->user, ev->host);
        ros_pie_pending_t p = { ev->user_el, to };
        xd_db_conn_t *c;
        rc = xd_db_acquire(rs.db, &c);
        if (rc == 0) {
            xd_db_val_t key[] = { XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user) };
            rc = xd_db_query(c,
                             "SELECT jid, pending_status FROM roster_item WHERE host = ?"
                             " AND username = ? AND pending_in != 0 ORDER BY jid",
                             key, 2, ros_pie_pending_row, &p);
            xd_db_release(c);
        }
        xd_free(to);
    }
    if (rc != 0) {
        ev->rc = rc;
        ev->module = "mod_roster";
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

static int
ros_pie_fail(xd_hook_account_import_t *ev, const char *what, const char *jid)
{
    ev->rc = XD_EINVAL;
    snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "roster: %s%s%s", what, jid ? ": " : "", jid ? jid : "");
    return XD_HOOK_STOP;
}


/* Stores one item (row and groups) as it is, inside the import's transaction. */
static int
ros_pie_store(xd_db_conn_t *c, const char *host, const char *user, mod_roster_item_t *it)
{
    if (it->ngroups)
        qsort(it->groups, it->ngroups, sizeof *it->groups, cmp_str);
    int rc = store_state(c, host, user, it, it->in_roster ? item_wire_bytes(it) : 0);
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(it->jid),
                          XD_DB_V_NULL };
    for (size_t i = 0; rc == 0 && i < it->ngroups; i++) {
        if (i > 0 && strcmp(it->groups[i], it->groups[i - 1]) == 0)
            continue;
        key[3] = XD_DB_V_CSTR(it->groups[i]);
        rc = xd_db_query(c,
                         "INSERT INTO roster_group (host, username, jid, grp) VALUES (?, ?, ?, ?)",
                         key, 4, NULL, NULL);
    }
    return rc;
}

static int
ros_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)arg;
    const ros_conf_t *conf = xd_module_opts(ctx);
    xd_db_conn_t *c;
    int rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (rc != 0) {
        ev->rc = rc;
        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "roster: %s", xd_strerror(rc));
        return XD_HOOK_STOP;
    }
    size_t i = 0, n = 0;
    bool changed = false;
    for (const xd_el_t *ch = xd_el_first_child(ev->user_el); ch && rc == 0;
         ch = xd_el_next(ch), i++) {
        if (xd_el_is(ch, "query", XD_NS_ROSTER)) {
            for (const xd_el_t *e = xd_el_first_child(ch); e && rc == 0; e = xd_el_next(e)) {
                if (!xd_el_is(e, "item", XD_NS_ROSTER))
                    continue;
                mod_roster_item_t it = { .in_roster = true };
                it.jid = xd_jid_bare_text(xd_el_attr(e, "jid"));
                const char *sub = xd_el_attr(e, "subscription");
                int s = sub ? xd_roster_sub_parse(sub) : XD_ROSTER_SUB_NONE;
                const char *name = xd_el_attr(e, "name");
                if (!it.jid || s < 0 || (name && !text_ok(name))) {
                    rc = ros_pie_fail(ev, "bad item", xd_el_attr(e, "jid"));
                    mod_roster_item_clear(&it);
                    break;
                }
                if (conf->max_items > 0 && ++n > (size_t)conf->max_items) {
                    rc = ros_pie_fail(ev, "more items than max_items", NULL);
                    mod_roster_item_clear(&it);
                    break;
                }
                it.name = name ? xd_strdup(name) : NULL;
                it.state.sub = (mod_roster_subscr)s;
                const char *ask = xd_el_attr(e, "ask"), *appr = xd_el_attr(e, "approved");
                it.state.ask = ask && strcmp(ask, "subscribe") == 0;
                it.state.approved = appr && (strcmp(appr, "true") == 0 || strcmp(appr, "1") == 0);
                for (const xd_el_t *g = xd_el_first_child(e); g; g = xd_el_next(g))
                    if (xd_el_is(g, "group", XD_NS_ROSTER) && xd_el_text(g) &&
                        text_ok(xd_el_text(g)))
                        item_add_group(&it, xd_el_text(g), strlen(xd_el_text(g)));
                rc = ros_pie_store(c, ev->host, ev->user, &it);
                mod_roster_item_clear(&it);
                changed = true;
            }
            ev->taken[i] = true;
        } else if (xd_el_is(ch, "presence", XD_NS_CLIENT)) {
            const char *type = xd_el_attr(ch, "type");
            if (!type || strcmp(type, "subscribe") != 0)
                continue;
            char *from = xd_jid_bare_text(xd_el_attr(ch, "from"));
            if (!from) {
                rc = ros_pie_fail(ev, "bad subscription request", xd_el_attr(ch, "from"));
                break;
            }
            mod_roster_item_t it = { 0 };
            rc = load_item(c, ev->host, ev->user, from, &it);
            if (rc == XD_ENOTFOUND) {
                it.jid = xd_strdup(from);
                rc = 0;
            }
            if (rc == 0 && !it.pending_status) {
                const char *st = xd_el_child_text(ch, "status", NULL);
                it.pending_status = st ? xd_strdup(st) : NULL;
            }
            it.state.pending_in = true;
            if (rc == 0)
                rc = store_state(c, ev->host, ev->user, &it,
                                 it.in_roster ? item_wire_bytes(&it) : 0);
            mod_roster_item_clear(&it);
            xd_free(from);
            ev->taken[i] = true;
        }
    }
    int64_t ver;
    if (rc == 0 && changed)
        rc = bump_version(c, ev->host, ev->user, &ver);
    xd_db_release(c);
    if (rc != 0 && ev->rc == 0) {
        ev->rc = rc;
        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "roster: %s", xd_strerror(rc));
    }
    return rc != 0 ? XD_HOOK_STOP : XD_HOOK_OK;
}

static int
ros_start(xd_module_ctx_t *ctx)
{
    if (!xd_module_db(ctx))
        return xd_module_fail(ctx, XD_ECLOSED, "no database");
    int rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_ROSTER, XD_IQ_PARALLEL, roster_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ROSTER_GET, XD_HOOK_PRIO_DEFAULT, ros_get_hook, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_C2S_STREAM_FEATURES, XD_HOOK_PRIO_DEFAULT, ros_features,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, ros_pie_export,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, XD_HOOK_PRIO_DEFAULT, ros_pie_import,
                            NULL);
    if (rc == 0)
        rc = mod_presence_start(ctx); /* subscriptions, broadcast, probes (mod_presence.c) */
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

static void
ros_stop(xd_module_ctx_t *ctx)
{
    mod_presence_stop(ctx);
}

/* The limit is read from the options on every change: nothing to do. */
static int
ros_reload(xd_module_ctx_t *ctx, const void *old_opts)
{
    (void)ctx;
    (void)old_opts;
    return 0;
}

const xd_module_t xd_mod_roster = {
    .abi = XD_MODULE_ABI,
    .name = "mod_roster",
    .doc = "Rosters (RFC 6121 2) with versioning (XEP-0237), presence subscriptions (RFC 6121 3) "
           "and presence broadcast (RFC 6121 4)",
    .opts = ros_opts,
    .opts_size = sizeof(ros_conf_t),
    .schemas = ros_schemas,
    .start = ros_start,
    .stop = ros_stop,
    .reload = ros_reload,
};
