/*
 * privacy_sql.c — the privacy engine's storage (privacy.h, "Storage"): the
 * tables and their migrations, mod_blocking's old table moved into them,
 * the one transaction of a write, and the reading of a host's lists.
 *
 * Nothing here touches the store or takes a lock: a host's rows are read
 * into entries of the loader's own (prv_load_t), which the caller installs
 * (prv_install).  Everything here blocks on the database.
 */
#include <string.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"

static const char *const prv_mig1[] = {
    "CREATE TABLE privacy_list ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " name {key} NOT NULL,"
    " created_at {int} NOT NULL,"
    " PRIMARY KEY (host, username, name))",
    "CREATE TABLE privacy_item ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " name {key} NOT NULL,"
    " ord {int} NOT NULL CHECK (ord >= 0 AND ord <= 4294967295),"
    " type {text} NOT NULL CHECK (type IN ('', 'jid', 'group', 'subscription')),"
    " value {text} NOT NULL,"
    " action {text} NOT NULL CHECK (action IN ('allow', 'deny')),"
    " kinds {int} NOT NULL,"
    " PRIMARY KEY (host, username, name, ord),"
    " FOREIGN KEY (host, username, name) REFERENCES privacy_list (host, username, name)"
    " ON DELETE CASCADE)",
    "CREATE TABLE privacy_default ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " name {key} NOT NULL,"
    " PRIMARY KEY (host, username),"
    " FOREIGN KEY (host, username, name) REFERENCES privacy_list (host, username, name)"
    " ON DELETE CASCADE)",
    NULL,
};

static const xd_db_migration_t prv_migrations[] = {
    { 1, NULL, prv_mig1 },
    { 0, NULL, NULL },
};

/* mod_blocking's table as it was (version 1), and its move into the
 * privacy tables (version 2): a default list "Blocked contacts" per
 * account, the JIDs as block items numbered 1, 2, … in the order blocked. */
static const char *const blk_mig1[] = {
    "CREATE TABLE blocklist ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " created_at {int} NOT NULL,"
    " PRIMARY KEY (host, username, jid))",
    NULL,
};

static const char *const blk_mig2[] = {
    "INSERT INTO privacy_list (host, username, name, created_at)"
    " SELECT host, username, '" XD_PRIVACY_BLOCKED_LIST "', MIN(created_at) FROM blocklist"
    " GROUP BY host, username"
    " ON CONFLICT (host, username, name) DO NOTHING",
    "INSERT INTO privacy_item (host, username, name, ord, type, value, action, kinds)"
    " SELECT b.host, b.username, '" XD_PRIVACY_BLOCKED_LIST "',"
    " (SELECT COUNT(*) FROM blocklist o WHERE o.host = b.host AND o.username = b.username"
    "  AND (o.created_at < b.created_at OR (o.created_at = b.created_at AND o.jid < b.jid))) + 1,"
    " 'jid', b.jid, 'deny', 0 FROM blocklist b WHERE 1 = 1"
    " ON CONFLICT (host, username, name, ord) DO NOTHING",
    "INSERT INTO privacy_default (host, username, name)"
    " SELECT DISTINCT host, username, '" XD_PRIVACY_BLOCKED_LIST "' FROM blocklist WHERE 1 = 1"
    " ON CONFLICT (host, username) DO NOTHING",
    "DROP TABLE blocklist",
    NULL,
};

/* The same on MySQL: no ON CONFLICT … DO NOTHING; an update of a key
 * column to itself (table-qualified: INSERT … SELECT is ambiguous
 * otherwise) keeps an existing row, as DO NOTHING does (never INSERT
 * IGNORE, which hides every other error too). */
static const char *const blk_mig2_mysql[] = {
    "INSERT INTO privacy_list (host, username, name, created_at)"
    " SELECT host, username, '" XD_PRIVACY_BLOCKED_LIST "', MIN(created_at) FROM blocklist"
    " GROUP BY host, username"
    " ON DUPLICATE KEY UPDATE privacy_list.name = privacy_list.name",
    "INSERT INTO privacy_item (host, username, name, ord, type, value, action, kinds)"
    " SELECT b.host, b.username, '" XD_PRIVACY_BLOCKED_LIST "',"
    " (SELECT COUNT(*) FROM blocklist o WHERE o.host = b.host AND o.username = b.username"
    "  AND (o.created_at < b.created_at OR (o.created_at = b.created_at AND o.jid < b.jid))) + 1,"
    " 'jid', b.jid, 'deny', 0 FROM blocklist b"
    " ON DUPLICATE KEY UPDATE privacy_item.ord = privacy_item.ord",
    "INSERT INTO privacy_default (host, username, name)"
    " SELECT DISTINCT host, username, '" XD_PRIVACY_BLOCKED_LIST "' FROM blocklist"
    " ON DUPLICATE KEY UPDATE privacy_default.username = privacy_default.username",
    "DROP TABLE blocklist",
    NULL,
};

/* SQL Server (T-SQL: neither ON CONFLICT nor ON DUPLICATE KEY): its
 * support came after mod_blocking's move into the privacy tables, so no
 * SQL Server database can hold a blocklist row to move. */
static const char *const blk_mig2_mssql[] = {
    "DROP TABLE blocklist",
    NULL,
};

static const xd_db_migration_t blk_migrations[] = {
    { 1, NULL, blk_mig1 },
    { 2, NULL, blk_mig2 },
    { 2, "mysql", blk_mig2_mysql },
    { 2, "mssql", blk_mig2_mssql },
    { 0, NULL, NULL },
};

const xd_module_schema_t xd_privacy_schemas[] = {
    { "privacy", prv_migrations },
    { "mod_blocking", blk_migrations },
    { NULL, NULL },
};

static const char *
prv_type_name(xd_privacy_type t)
{
    switch (t) {
    case XD_PRIVACY_JID:
        return "jid";
    case XD_PRIVACY_GROUP:
        return "group";
    case XD_PRIVACY_SUBSCRIPTION:
        return "subscription";
    default:
        return "";
    }
}

static int
prv_type_parse(xd_str_t s)
{
    if (s.len == 0)
        return XD_PRIVACY_ANY;
    if (xd_str_eq_c(s, "jid"))
        return XD_PRIVACY_JID;
    if (xd_str_eq_c(s, "group"))
        return XD_PRIVACY_GROUP;
    if (xd_str_eq_c(s, "subscription"))
        return XD_PRIVACY_SUBSCRIPTION;
    return -1;
}

/* The xd_db_tx callback of a write: stores the prv_tx_t arg. */
int
prv_sql_tx(xd_db_conn_t *c, void *arg)
{
    const prv_tx_t *t = arg;
    int rc = 0;
    if (t->put) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(t->host), XD_DB_V_CSTR(t->user),
                            XD_DB_V_CSTR(t->put->name), XD_DB_V_INT(t->now) };
        static const char *const cols[] = { "host", "username", "name", "created_at" };
        static const xd_db_upsert_t ups = { "privacy_list", cols, 4, 3, XD_DB_UPSERT_IGNORE };
        rc = xd_db_upsert(c, &ups, k);
        if (rc >= 0)
            rc = xd_db_query(c,
                             "DELETE FROM privacy_item"
                             " WHERE host = ? AND username = ? AND name = ?",
                             k, 3, NULL, NULL);
        for (size_t i = 0; rc >= 0 && i < t->put->n; i++) {
            const xd_privacy_item_t *it = &t->put->items[i];
            xd_db_val_t v[] = { XD_DB_V_CSTR(t->host),
                                XD_DB_V_CSTR(t->user),
                                XD_DB_V_CSTR(t->put->name),
                                XD_DB_V_INT(it->order),
                                XD_DB_V_CSTR(prv_type_name(it->type)),
                                XD_DB_V_CSTR(it->value ? it->value : ""),
                                XD_DB_V_CSTR(it->deny ? "deny" : "allow"),
                                XD_DB_V_INT(it->kinds) };
            rc = xd_db_query(c,
                             "INSERT INTO privacy_item (host, username, name, ord, type, value,"
                             " action, kinds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             v, 8, NULL, NULL);
        }
    }
    if (rc >= 0 && t->drop) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(t->host), XD_DB_V_CSTR(t->user), XD_DB_V_CSTR(t->drop) };
        rc = xd_db_query(c, "DELETE FROM privacy_list WHERE host = ? AND username = ? AND name = ?",
                         k, 3, NULL, NULL);
    }
    if (rc >= 0 && t->def_op == 1) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(t->host), XD_DB_V_CSTR(t->user),
                            XD_DB_V_CSTR(t->def_name) };
        static const char *const cols[] = { "host", "username", "name" };
        static const xd_db_upsert_t ups = { "privacy_default", cols, 3, 2,
                                            XD_DB_UPSERT_REPLACE };
        rc = xd_db_upsert(c, &ups, k);
    } else if (rc >= 0 && t->def_op == 2) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(t->host), XD_DB_V_CSTR(t->user) };
        rc = xd_db_query(c, "DELETE FROM privacy_default WHERE host = ? AND username = ?", k, 2,
                         NULL, NULL);
    }
    return rc;
}

/* ---- loading a host -------------------------------------------------------------------------- */

/* The entry of the account of `user` in l->accts, created when missing. */
static prv_acct_t *
prv_load_acct(prv_load_t *l, const xd_db_val_t *user)
{
    char *bare = xd_asprintf("%.*s@%s", (int)user->s.len, user->s.p ? user->s.p : "", l->host);
    prv_acct_t *a = xd_map_get(&l->accts, xd_str_c(bare));
    if (!a) {
        a = prv_acct_new(xd_str_c(bare));
        xd_map_put(&l->accts, xd_str_c(bare), a);
    }
    xd_free(bare);
    return a;
}

/* (username, name): a list. */
static int
prv_load_list(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    prv_load_t *l = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    prv_acct_t *a = prv_load_acct(l, &cols[0]);
    a->lists = xd_realloc(a->lists, (a->nlists + 1) * sizeof *a->lists);
    xd_privacy_list_t *li = &a->lists[a->nlists++];
    memset(li, 0, sizeof *li);
    li->name = xd_strndup(cols[1].s.p ? cols[1].s.p : "", cols[1].s.len);
    l->lists++;
    return 0;
}

/* (username, name, ord, type, value, action, kinds): an item, in order. */
static int
prv_load_item(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    prv_load_t *l = arg;
    if (ncols < 7 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    prv_acct_t *a = prv_load_acct(l, &cols[0]);
    char *name = xd_strndup(cols[1].s.p ? cols[1].s.p : "", cols[1].s.len);
    int li = prv_list_index(a, name);
    xd_free(name);
    int type = prv_type_parse(cols[3].s);
    if (li < 0 || type < 0)
        return 0;
    xd_privacy_item_t it = {
        .type = (xd_privacy_type)type,
        .deny = xd_str_eq_c(cols[5].s, "deny"),
        .order = (uint32_t)cols[2].i,
        .kinds = (unsigned)cols[6].i & 15u,
    };
    char *value = NULL;
    if (type != XD_PRIVACY_ANY)
        value = xd_strndup(cols[4].s.p ? cols[4].s.p : "", cols[4].s.len);
    it.value = value;
    xd_privacy_list_add(&a->lists[li], &it);
    xd_free(value);
    l->items++;
    return 0;
}

/* (username, name): the default. */
static int
prv_load_default(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    prv_load_t *l = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    prv_acct_t *a = prv_load_acct(l, &cols[0]);
    char *name = xd_strndup(cols[1].s.p ? cols[1].s.p : "", cols[1].s.len);
    a->def = prv_list_index(a, name);
    xd_free(name);
    return 0;
}

int
prv_sql_load(xd_db_conn_t *c, prv_load_t *l)
{
    xd_db_val_t key[] = { XD_DB_V_CSTR(l->host) };
    int rc = xd_db_query(c, "SELECT username, name FROM privacy_list WHERE host = ?"
                            " ORDER BY username, name", key, 1, prv_load_list, l);
    if (rc >= 0)
        rc = xd_db_query(c, "SELECT username, name, ord, type, value, action, kinds"
                            " FROM privacy_item WHERE host = ? ORDER BY username, name, ord",
                         key, 1, prv_load_item, l);
    if (rc >= 0)
        rc = xd_db_query(c, "SELECT username, name FROM privacy_default WHERE host = ?", key,
                         1, prv_load_default, l);
    return rc;
}
