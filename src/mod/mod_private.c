/*
 * mod_private.c — private XML storage (XEP-0049, jabber:iq:private).
 *
 * On for a host when `mod_private` is listed under `modules`.  An account
 * stores any XML fragment whose root is in a namespace of its own and
 * reads it back:
 *
 *   set <query xmlns='jabber:iq:private'><a xmlns='x'/>[<b xmlns='y'/>…]</query>
 *       → every child replaces what was stored under (its namespace, its
 *         name), all of them in one transaction (all or nothing);
 *   get <query xmlns='jabber:iq:private'><a xmlns='x'/></query>
 *       → the stored <a xmlns='x'>…</a>, or the element as asked (empty)
 *         when nothing is stored under that key (as ejabberd and Prosody do).
 *
 * Errors (XEP-0049 2.3 and 3):
 *   - to another account's bare JID: forbidden (the preferred condition);
 *   - a query without a child: not-acceptable (the MUST of 2.3; the
 *     "Bad Format" of the later example is a stream error, not a stanza one);
 *   - a get naming more than one namespace: bad-request (a client MUST NOT);
 *   - a child in a reserved namespace (beginning with 'jabber:' or
 *     'http://jabber.org/', or 'vcard-temp'; also a child without a
 *     namespace of its own, which is jabber:client): not-acceptable;
 *   - a child whose serialized XML exceeds `max_size`: not-acceptable;
 *   - a set after which the account's stored bytes would exceed
 *     `max_user_size`: policy-violation, nothing stored.
 *
 * With mod_pep on the host, storage:bookmarks is converted to and from the
 * XEP-0402 node (XEP-0411; see the section below).
 *
 * Storage: table `private_storage`, one row per (host, username, ns, name)
 * with the element serialized (xd_el_serialize).  PARALLEL: the handler runs
 * on the blocking pool with the synchronous storage API; its options come
 * from the instance's context (req->ctx), valid while the request runs.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "pep_api.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct pv_conf {
    size_t max_size;      /* largest stored element, serialized bytes */
    size_t max_user_size; /* all of an account's stored elements, bytes */
} pv_conf_t;

#define C_ pv_conf_t
static const xd_opt_t pv_opts[] = {
    XD_OPT_SIZE("max_size", C_, max_size, "64KiB",
                "Largest element an account may store, counted as its serialized XML in bytes; "
                "a larger one is refused with not-acceptable."),
    XD_OPT_SIZE("max_user_size", C_, max_user_size, "1MiB",
                "Bytes all of an account's stored elements may take together; a set that would "
                "go beyond is refused with policy-violation and stores nothing."),
    XD_OPT_END,
};
#undef C_

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const pv_mig1[] = {
    "CREATE TABLE private_storage ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " ns {key} NOT NULL,"
    " name {key} NOT NULL,"
    " xml {text} NOT NULL,"
    " updated_at {int} NOT NULL,"
    " PRIMARY KEY (host, username, ns, name))",
    NULL,
};

static const xd_db_migration_t pv_migrations[] = {
    { 1, NULL, pv_mig1 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t pv_schemas[] = {
    { "mod_private", pv_migrations },
    { NULL, NULL },
};

/* ---- XEP-0411: bookmarks in private storage and in PEP (XEP-0402) --------------------------- *
 *
 * When mod_pep runs on the host, the PEP node urn:xmpp:bookmarks:1 is where
 * the group chat bookmarks live: a set of <storage xmlns='storage:bookmarks'/>
 * publishes each <conference/> there as an item whose id is the room's JID
 * (changed ones only) and retracts the items it no longer names, so clients
 * that use XEP-0402 get the notifications; a get of storage:bookmarks is
 * built from the node's items (and the <url/> bookmarks of the stored copy,
 * which XEP-0402 has no place for).  Without the node, the stored copy. */

#define PV_NS_BM48 "storage:bookmarks"
#define PV_NS_BM2 "urn:xmpp:bookmarks:1"

static bool
pv_truthy(const char *v)
{
    return v && (!strcmp(v, "true") || !strcmp(v, "1"));
}

/* Copies el's child (name, in ns) as a child of `to`, in ns2, text only. */
static void
pv_copy_text(xd_el_t *to, const char *ns2, const xd_el_t *from, const char *name, const char *ns)
{
    const char *t = xd_el_child_text(from, name, ns);
    if (t)
        xd_el_add_text(xd_el_add_child(to, name, ns2), t);
}

/* A re-parsed copy of el, or NULL. */
static xd_el_t *
pv_el_copy(const xd_el_t *el)
{
    size_t len;
    char *xml = xd_el_serialize(el, NULL, &len);
    xd_el_t *out = NULL;
    if (xd_el_parse(xml, len, &out) != 0)
        out = NULL;
    xd_free(xml);
    return out;
}

static const xd_el_t *
pv_item_by_id(const xd_el_t *items, const char *id)
{
    for (const xd_el_t *it = items ? xd_el_first_child(items) : NULL; it; it = xd_el_next(it)) {
        const char *iid = xd_el_attr(it, "id");
        if (iid && !strcmp(iid, id))
            return it;
    }
    return NULL;
}

static bool
pv_same_xml(const xd_el_t *a, const xd_el_t *b)
{
    if (!a || !b)
        return false;
    size_t la, lb;
    char *xa = xd_el_serialize(a, NULL, &la), *xb = xd_el_serialize(b, NULL, &lb);
    bool same = la == lb && !memcmp(xa, xb, la);
    xd_free(xa);
    xd_free(xb);
    return same;
}

/* XEP-0048 <storage/> → the items of urn:xmpp:bookmarks:1 (on the pool). */
static void
pv_bm_to_pep(const char *host, const char *user, const xd_el_t *storage)
{
    xd_module_ctx_t *pep = xd_module_instance("mod_pep", host);
    if (!pep)
        return;
    xd_el_t *have = NULL;
    int rc = pep_items_read(pep, host, user, PV_NS_BM2, &have);
    if (rc != 0 && rc != XD_ENOTFOUND) {
        XD_LOG(NULL, XD_WARN, "bookmarks not converted", "host=%s user=%s err=%s", host, user,
               xd_strerror(rc));
        xd_module_release(pep);
        return;
    }
    xd_input_ref_t in = xd_input_job(); /* the set's stream: it waits for the fan-out */
    pse_cfg_t want; /* XEP-0402 3: the node's configuration */
    pse_cfg_default(&want, false);
    snprintf(want.access, sizeof want.access, "whitelist");
    want.persist = true;
    want.max_items = PSE_MAX;
    snprintf(want.send_last, sizeof want.send_last, "never");
    size_t n = xd_el_child_count(storage), nseen = 0;
    const char **seen = xd_calloc(n ? n : 1, sizeof *seen);
    for (const xd_el_t *c = xd_el_first_child(storage); c; c = xd_el_next(c)) {
        const char *jid = xd_el_attr(c, "jid");
        xd_jid_t *j = NULL;
        if (!xd_el_is(c, "conference", PV_NS_BM48) || !jid || xd_jid_parse(xd_str_c(jid), &j))
            continue;
        bool bare = xd_jid_local(j).len && !xd_jid_resource(j).len;
        xd_jid_unref(j);
        if (!bare)
            continue;
        seen[nseen++] = jid;
        xd_el_t *conf = xd_el_new("conference", PV_NS_BM2);
        const char *name = xd_el_attr(c, "name");
        if (name)
            xd_el_set_attr(conf, "name", name);
        if (pv_truthy(xd_el_attr(c, "autojoin")))
            xd_el_set_attr(conf, "autojoin", "true");
        pv_copy_text(conf, PV_NS_BM2, c, "nick", PV_NS_BM48);
        pv_copy_text(conf, PV_NS_BM2, c, "password", PV_NS_BM48);
        const xd_el_t *old = pv_item_by_id(have, jid);
        const xd_el_t *oldconf = old ? xd_el_first_child(old) : NULL;
        const xd_el_t *ext = oldconf ? xd_el_child(oldconf, "extensions", PV_NS_BM2) : NULL;
        xd_el_t *extc = ext ? pv_el_copy(ext) : NULL; /* kept: XEP-0048 has no place for it */
        if (extc)
            xd_el_append(conf, extc);
        if (!pv_same_xml(conf, oldconf) &&
            (rc = pep_publish_as(pep, in, host, user, PV_NS_BM2, jid, conf, &want)) != 0)
            XD_LOG(NULL, XD_WARN, "bookmark not published", "host=%s user=%s room=%s err=%s",
                   host, user, jid, xd_strerror(rc));
        xd_el_free(conf);
    }
    for (const xd_el_t *it = have ? xd_el_first_child(have) : NULL; it; it = xd_el_next(it)) {
        const char *id = xd_el_attr(it, "id");
        bool kept = false;
        for (size_t i = 0; id && i < nseen && !kept; i++)
            kept = !strcmp(seen[i], id);
        if (id && !kept)
            pep_retract_as(pep, in, host, user, PV_NS_BM2, id);
    }
    xd_free(seen);
    xd_el_free(have);
    xd_module_release(pep);
}

/* The XEP-0402 items → <storage xmlns='storage:bookmarks'/>, with the <url/>
 * children of the stored copy (may be NULL). */
static xd_el_t *
pv_bm_from_pep(const xd_el_t *items, const xd_el_t *stored)
{
    xd_el_t *st = xd_el_new("storage", PV_NS_BM48);
    for (const xd_el_t *it = xd_el_first_child(items); it; it = xd_el_next(it)) {
        const char *id = xd_el_attr(it, "id");
        const xd_el_t *c = xd_el_first_child(it);
        if (!id || !c || !xd_el_is(c, "conference", PV_NS_BM2))
            continue;
        xd_el_t *ce = xd_el_add_child(st, "conference", NULL);
        xd_el_set_attr(ce, "jid", id);
        const char *name = xd_el_attr(c, "name");
        if (name)
            xd_el_set_attr(ce, "name", name);
        xd_el_set_attr(ce, "autojoin", pv_truthy(xd_el_attr(c, "autojoin")) ? "true" : "false");
        pv_copy_text(ce, NULL, c, "nick", PV_NS_BM2);
        pv_copy_text(ce, NULL, c, "password", PV_NS_BM2);
    }
    for (const xd_el_t *u = stored ? xd_el_first_child(stored) : NULL; u; u = xd_el_next(u)) {
        xd_el_t *uc = xd_el_is(u, "url", PV_NS_BM48) ? pv_el_copy(u) : NULL;
        if (uc)
            xd_el_append(st, uc);
    }
    return st;
}

/* DISCO_SM_FEATURES: the conversion is there when mod_pep runs too;
 * XEP-0411's feature, and XEP-0402's "#compat" (private XML storage and
 * the PEP node are one set of bookmarks), which clients check before they
 * keep bookmarks only in PEP. */
static int
pv_disco(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    pep_disco_conversion(ev, "urn:xmpp:bookmarks-conversion:0");
    pep_disco_conversion(ev, "urn:xmpp:bookmarks:1#compat");
    return XD_HOOK_OK;
}

/* ---- get --------------------------------------------------------------------------------------- */

typedef struct pv_row {
    char *xml;  /* the stored element (owned) or NULL */
    size_t len; /* its length */
} pv_row_t;

static int
pv_load_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pv_row_t *r = arg;
    if (ncols < 1 || cols[0].type != XD_DB_TEXT)
        return 0;
    xd_free(r->xml);
    r->xml = xd_strndup(cols[0].s.p, cols[0].s.len);
    r->len = cols[0].s.len;
    return 1;
}

/* XEP-0049 2.3: reserved namespaces.  NULL is the content namespace
 * (jabber:client), reserved as well. */
static bool
pv_reserved(const char *ns)
{
    return !ns || strncmp(ns, "jabber:", 7) == 0 || strncmp(ns, "http://jabber.org/", 18) == 0 ||
           strcmp(ns, XD_NS_VCARD) == 0;
}

static xd_stanza_t *
pv_get(const xd_iq_req_t *req, const char *user)
{
    const xd_el_t *first = xd_el_first_child(req->payload);
    for (const xd_el_t *c = first; c; c = xd_el_next(c))
        if (strcmp(xd_el_ns(c), xd_el_ns(first)) != 0) /* both non-NULL: checked before */
            return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                                   "one namespace per private storage get");
    /* XEP-0411: bookmarks come from PEP when the node is there (read
     * before our own connection is taken). */
    xd_el_t *bm = NULL;
    xd_module_ctx_t *pep = !strcmp(xd_el_ns(first), PV_NS_BM48)
                               ? xd_module_instance("mod_pep", req->host)
                               : NULL;
    if (pep) {
        int prc = pep_items_read(pep, req->host, user, PV_NS_BM2, &bm);
        if (prc != 0 && prc != XD_ENOTFOUND)
            XD_LOG(NULL, XD_WARN, "PEP bookmarks not read", "host=%s user=%s err=%s", req->host,
                   user, xd_strerror(prc));
        xd_module_release(pep);
    }
    xd_db_t *db = xd_module_db(req->ctx);
    xd_db_conn_t *conn = NULL;
    int rc = db ? xd_db_acquire(db, &conn) : XD_ECLOSED;
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_PRIVATE);
    xd_map_t asked = XD_MAP_INIT; /* names answered */
    for (const xd_el_t *c = first; c && rc == 0; c = xd_el_next(c)) {
        if (xd_map_put(&asked, xd_str_c(xd_el_name(c)), (void *)1))
            continue; /* each element once, however often it is asked (one namespace) */
        pv_row_t row = { 0 };
        xd_db_val_t key[] = { XD_DB_V_CSTR(req->host), XD_DB_V_CSTR(user),
                              XD_DB_V_CSTR(xd_el_ns(c)), XD_DB_V_CSTR(xd_el_name(c)) };
        rc = xd_db_query(conn,
                         "SELECT xml FROM private_storage"
                         " WHERE host = ? AND username = ? AND ns = ? AND name = ?",
                         key, 4, pv_load_row, &row);
        xd_el_t *el = NULL;
        if (rc == 0 && row.xml && (rc = xd_el_parse(row.xml, row.len, &el)) != 0)
            XD_LOG(NULL, XD_ERROR, "stored private XML unreadable", "host=%s user=%s ns=%s",
                   req->host, user, xd_el_ns(c));
        xd_free(row.xml);
        if (rc != 0)
            break;
        if (bm && xd_el_is(c, "storage", PV_NS_BM48)) {
            xd_el_append(q, pv_bm_from_pep(bm, el));
            xd_el_free(el);
        } else if (el) {
            xd_el_append(q, el);
        } else {
            /* Nothing stored: the element as asked, empty. */
            xd_el_add_child(q, xd_el_name(c), xd_el_ns(c));
        }
    }
    xd_map_free(&asked, NULL);
    if (conn)
        xd_db_release(conn);
    xd_el_free(bm);
    if (rc != 0) {
        xd_el_free(r);
        XD_LOG(NULL, XD_ERROR, "private storage load failed", "host=%s user=%s err=%s",
               req->host, user, xd_strerror(rc));
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    return xd_el_freeze(r);
}

/* ---- set --------------------------------------------------------------------------------------- */

typedef struct pv_item {
    const char *ns;   /* the element's namespace (lent from the request) */
    const char *name; /* its local name */
    char *xml;        /* its serialization (owned) */
    size_t len;       /* length of xml */
} pv_item_t;

typedef struct pv_set {
    const char *host;     /* the account */
    const char *user;
    pv_item_t *items;     /* what to store */
    size_t n;             /* how many */
    size_t max_user_size; /* quota */
    int64_t now;          /* seconds since the epoch */
} pv_set_t;

static int
pv_set_tx(xd_db_conn_t *c, void *arg)
{
    const pv_set_t *s = arg;
    int rc = 0;
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        const pv_item_t *it = &s->items[i];
        xd_db_val_t key[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user),
                              XD_DB_V_CSTR(it->ns), XD_DB_V_CSTR(it->name) };
        rc = xd_db_query(c,
                         "DELETE FROM private_storage"
                         " WHERE host = ? AND username = ? AND ns = ? AND name = ?",
                         key, 4, NULL, NULL);
        if (rc != 0)
            break;
        xd_db_val_t row[] = {
            XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user), XD_DB_V_CSTR(it->ns),
            XD_DB_V_CSTR(it->name), XD_DB_V_TEXT(((xd_str_t){ it->xml, it->len })),
            XD_DB_V_INT(s->now),
        };
        rc = xd_db_query(c,
                         "INSERT INTO private_storage (host, username, ns, name, xml, updated_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         row, 6, NULL, NULL);
    }
    if (rc != 0)
        return rc;
    /* The quota is checked after the writes, in the same transaction, so
     * two sets racing on the pool cannot both pass it. */
    xd_db_val_t key[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user) };
    int64_t total = 0;
    rc = xd_db_query_int64(c,
                           "SELECT COALESCE(SUM({octets:xml}), 0)"
                           " FROM private_storage WHERE host = ? AND username = ?",
                           key, 2, &total);
    if (rc != 0)
        return rc;
    return (uint64_t)total > (uint64_t)s->max_user_size ? XD_ELIMIT : 0;
}

static xd_stanza_t *
pv_set(const xd_iq_req_t *req, const char *user, const pv_conf_t *lim)
{
    size_t n = xd_el_child_count(req->payload);
    pv_set_t s = { .host = req->host, .user = user, .items = xd_calloc(n, sizeof(pv_item_t)),
                   .max_user_size = lim->max_user_size, .now = (int64_t)time(NULL) };
    xd_stanza_t *reply = NULL;
    for (const xd_el_t *c = xd_el_first_child(req->payload); c; c = xd_el_next(c)) {
        pv_item_t *it = &s.items[s.n++];
        it->ns = xd_el_ns(c);
        it->name = xd_el_name(c);
        it->xml = xd_el_serialize(c, NULL, &it->len);
        if (it->len > lim->max_size) {
            char text[96];
            snprintf(text, sizeof text, "a stored element may take at most %zu bytes",
                     lim->max_size);
            reply = xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE, text);
            break;
        }
    }
    if (!reply) {
        xd_db_t *db = xd_module_db(req->ctx);
        int rc = db ? xd_db_tx(db, pv_set_tx, &s) : XD_ECLOSED;
        if (rc == XD_ELIMIT) {
            reply = xd_stanza_error(req->iq, XD_COND_POLICY_VIOLATION,
                                    "the account's private storage quota would be exceeded");
        } else if (rc < 0) {
            XD_LOG(NULL, XD_ERROR, "private storage store failed", "host=%s user=%s err=%s",
                   req->host, user, xd_strerror(rc));
            reply = xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        } else {
            for (const xd_el_t *c = xd_el_first_child(req->payload); c; c = xd_el_next(c))
                if (xd_el_is(c, "storage", PV_NS_BM48))
                    pv_bm_to_pep(req->host, user, c);
            reply = xd_iq_result(req->iq);
        }
    }
    for (size_t i = 0; i < s.n; i++)
        xd_free(s.items[i].xml);
    xd_free(s.items);
    return reply;
}

/* ---- handler ----------------------------------------------------------------------------------- */

static xd_stanza_t *
pv_iq(const xd_iq_req_t *req)
{
    if (!xd_el_is(req->payload, "query", XD_NS_PRIVATE))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                               "expected <query xmlns='jabber:iq:private'/>");
    const pv_conf_t *lim = xd_module_opts(req->ctx);
    /* XEP-0049 2.3 and 4: only the account itself. */
    if (!xd_jid_eq_bare(req->from, req->to))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN,
                               "private storage belongs to its account");
    if (!xd_el_first_child(req->payload)) /* XEP-0049 2.3: at least one child */
        return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE,
                               "name the element to get or set inside <query/>");
    for (const xd_el_t *c = xd_el_first_child(req->payload); c; c = xd_el_next(c))
        if (pv_reserved(xd_el_ns(c)))
            return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE, "reserved namespace");
    xd_str_t l = xd_jid_local(req->to);
    char user[1024];
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    if (type && strcmp(type, "get") == 0)
        return pv_get(req, user);
    return pv_set(req, user, lim);
}

/* ---- XEP-0227 export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ---------------------------- */

static int
pv_pie_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    xd_el_t *q = arg, *el = NULL;
    if (ncols < 1 || cols[0].type != XD_DB_TEXT)
        return 0;
    int rc = xd_el_parse(cols[0].s.p, cols[0].s.len, &el);
    if (rc != 0)
        return rc;
    xd_el_append(q, el);
    return 0;
}

/* Everything stored, in one jabber:iq:private <query/>. */
static int
pv_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)arg;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (rc == 0) {
        xd_el_t *q = xd_el_new("query", XD_NS_PRIVATE);
        xd_db_val_t key[] = { XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user) };
        rc = xd_db_query(c,
                         "SELECT xml FROM private_storage WHERE host = ? AND username = ?"
                         " ORDER BY ns, name",
                         key, 2, pv_pie_row, q);
        xd_db_release(c);
        if (rc == 0 && xd_el_first_child(q))
            xd_el_append(ev->user_el, q);
        else
            xd_el_free(q);
    }
    if (rc != 0) {
        ev->rc = rc;
        ev->module = "mod_private";
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

static int
pv_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)arg;
    const pv_conf_t *lim = xd_module_opts(ctx);
    size_t i = 0;
    int rc = 0;
    for (const xd_el_t *q = xd_el_first_child(ev->user_el); q && rc == 0; q = xd_el_next(q), i++) {
        if (!xd_el_is(q, "query", XD_NS_PRIVATE))
            continue;
        ev->taken[i] = true;
        size_t n = xd_el_child_count(q);
        pv_set_t s = { .host = ev->host, .user = ev->user,
                       .items = xd_calloc(n ? n : 1, sizeof(pv_item_t)),
                       .max_user_size = lim->max_user_size, .now = (int64_t)time(NULL) };
        for (const xd_el_t *c = xd_el_first_child(q); c && rc == 0; c = xd_el_next(c)) {
            if (pv_reserved(xd_el_ns(c))) {
                snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "private: reserved namespace %s",
                         xd_el_ns(c) ? xd_el_ns(c) : "jabber:client");
                rc = XD_EINVAL;
                break;
            }
            pv_item_t *it = &s.items[s.n++];
            it->ns = xd_el_ns(c);
            it->name = xd_el_name(c);
            it->xml = xd_el_serialize(c, NULL, &it->len);
            if (it->len > lim->max_size) {
                snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "private: an element is larger than max_size");
                rc = XD_EINVAL;
            }
        }
        if (rc == 0 && (rc = xd_db_tx(xd_module_db(ctx), pv_set_tx, &s)) < 0)
            snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "private: %s",
                     rc == XD_ELIMIT ? "more than max_user_size" : xd_strerror(rc));
        for (size_t k = 0; k < s.n; k++)
            xd_free(s.items[k].xml);
        xd_free(s.items);
    }
    if (rc < 0) {
        ev->rc = rc;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* ---- module ------------------------------------------------------------------------------------ */

static int
pv_start(xd_module_ctx_t *ctx)
{
    if (!xd_module_db(ctx))
        return xd_module_fail(ctx, XD_ECLOSED, "no database");
    int rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_PRIVATE, XD_IQ_PARALLEL, pv_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, pv_pie_export, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, XD_HOOK_PRIO_DEFAULT, pv_pie_import, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_DISCO_SM_FEATURES, XD_HOOK_PRIO_DEFAULT, pv_disco, NULL);
    if (rc == 0) /* the account's private data goes with it */
        rc = mod_user_rows(ctx, "DELETE FROM private_storage WHERE host = ? AND username = ?");
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register the jabber:iq:private handler: %s",
                              xd_strerror(rc));
    return 0;
}

const xd_module_t xd_mod_private = {
    .abi = XD_MODULE_ABI,
    .name = "mod_private",
    .doc = "Private XML storage (XEP-0049, jabber:iq:private)",
    .opts = pv_opts,
    .opts_size = sizeof(pv_conf_t),
    .schemas = pv_schemas,
    .start = pv_start,
};
