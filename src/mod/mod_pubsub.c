/*
 * mod_pubsub.c — the publish-subscribe service (XEP-0060 1.26) on its own
 * domain (`host`, default pubsub.@HOST@): leaf nodes (no collections),
 * their configuration, items, subscriptions and affiliations.  The node
 * configuration, forms, roster access and events are the engine PEP uses
 * too (pubsub_engine.h).
 *
 * Threads: the service route runs on the routing worker; it posts each
 * stanza to the owner worker of its node (xd_owner_of("<node>"); requests
 * that name no node go to the owner of ""), which keeps a FIFO per node
 * and runs one operation of a node at a time: the operation itself (storage,
 * the owner's roster) runs on the blocking pool through xd_db_async and its
 * answer, then its notifications, are routed when it is done, before the
 * node's next operation starts.  The sender's stream is held meanwhile, so
 * a client's round trip orders what the service sent for its earlier
 * stanzas (input.h).
 *
 * A session of the served host that becomes available gets the last item
 * of each node it (or its bare JID) is subscribed to whose
 * send_last_published_item is on_sub_and_presence (USER_AVAILABLE, on the
 * pool, reading only).  Deleting an account deletes its nodes,
 * subscriptions and affiliations (REMOVE_USER).
 *
 * Storage: pubsub_node, pubsub_item, pubsub_sub, pubsub_aff (portable SQL),
 * keyed by the service domain.  The node's configuration is one text column
 * (pse_cfg_encode).  A JID may hold several subscriptions to a node
 * (multi_subscribe), pubsub_sub rows told apart by subid, each with its
 * options (pubsub#deliver, pubsub#show-values); a notification goes once
 * per JID, naming the subscriptions that take it in SHIM headers.
 * show-values is checked against the session table (session.h, any
 * thread, never blocks) when the notification is made, on the pool.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "pubsub_engine.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/owner.h"
#include "xmppd/route.h"
#include "xmppd/service.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

#define PS_NODE_MAX 1024 /* bytes of a node name */
#define PS_ID_MAX 1024   /* bytes of an item id */
#define PS_SUBS_CAP 1000 /* subscriptions of one JID to one node read at once (max_subscriptions) */
#define PS_RES_MAX 64    /* sessions of one account looked at for pubsub#show-values */
#define PS_NS_SHIM "http://jabber.org/protocol/shim"

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct ps_conf {
    char *host;             /* the service's domain pattern */
    char *name;             /* disco identity name */
    char *access_createnode; /* access rule: who may create nodes */
    int max_items_limit;    /* "max", and the largest max_items */
    int max_nodes;          /* nodes on the service */
    int max_nodes_per_user; /* nodes one account owns (created) */
    size_t max_item_size;   /* serialized bytes of one payload */
    int max_queue;          /* operations waiting per node */
    bool multi_subscribe;   /* a JID may subscribe to a node more than once */
    int max_subscriptions;  /* subscriptions of one account to one node */
    int max_node_subscribers; /* subscriptions of one node, every JID's together */
} ps_conf_t;

#define C_ ps_conf_t
static const xd_opt_t ps_opts[] = {
    XD_OPT_STRING("host", C_, host, "pubsub.@HOST@",
                  "Domain of the publish-subscribe service; `@HOST@` is replaced by the served "
                  "host."),
    XD_OPT_STRING("name", C_, name, "Publish-Subscribe",
                  "Name of the service in its disco#info identity."),
    XD_OPT_STRING("access_createnode", C_, access_createnode, "all",
                  "Access rule: who may create nodes (others get forbidden); `all` and "
                  "`none` are built in, others come from `access_rules`."),
    XD_OPT_INT("max_items_limit", C_, max_items_limit, "1000", 1, 100000,
               "The most items a node keeps: pubsub#max_items \"max\" means this, and a larger "
               "number is refused with not-acceptable."),
    XD_OPT_INT("max_nodes", C_, max_nodes, "10000", 1, 10000000,
               "Nodes the service holds; one more is refused with resource-constraint."),
    XD_OPT_INT("max_nodes_per_user", C_, max_nodes_per_user, "100", 1, 10000000,
               "Nodes one account may own (have created) on the service, so that no account "
               "takes all of max_nodes; one more is refused with resource-constraint."),
    XD_OPT_SIZE("max_item_size", C_, max_item_size, "256KiB",
                "Largest item payload, counted as its serialized XML in bytes; a larger one "
                "is refused with not-acceptable + payload-too-big."),
    XD_OPT_INT("max_queue", C_, max_queue, "256", 1, 100000,
               "Requests for one node that wait while it handles another; one more is "
               "answered resource-constraint."),
    XD_OPT_BOOL("multi_subscribe", C_, multi_subscribe, "true",
                "A JID may subscribe to a node several times, each subscription with its own "
                "subid and options (XEP-0060 6.1.6, feature `multi-subscribe`); when off, "
                "subscribing again answers with the subscription the JID has."),
    XD_OPT_INT("max_subscriptions", C_, max_subscriptions, "16", 1, 1000,
               "Subscriptions one account (its bare JID and its full JIDs together) may hold "
               "to one node; one more is refused with policy-violation + "
               "too-many-subscriptions."),
    XD_OPT_INT("max_node_subscribers", C_, max_node_subscribers, "10000", 1, 1000000,
               "Subscriptions one node may have, of every JID (local or remote, subscribed "
               "or pending) together, so that neither many accounts nor the owner grow a "
               "node's subscriber list (and each publish's fan-out) without end.  One more "
               "subscribe is refused with policy-violation + too-many-subscriptions; a new "
               "subscription in the owner's subscriptions set (XEP-0060 8.8.2) comes back "
               "in its not-acceptable error, the request's other entries made.  Existing "
               "subscriptions are kept when the bound is lowered."),
    XD_OPT_END,
};
#undef C_

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const ps_mig1[] = {
    "CREATE TABLE pubsub_node ("
    " host {key} NOT NULL,"
    " node {key} NOT NULL,"
    " owner {text} NOT NULL,"
    " config {text} NOT NULL,"
    " created_at {int} NOT NULL,"
    " PRIMARY KEY (host, node))",
    "CREATE TABLE pubsub_item ("
    " host {key} NOT NULL,"
    " node {key} NOT NULL,"
    " id {key} NOT NULL,"
    " seq {int} NOT NULL,"
    " ts {int} NOT NULL,"
    " publisher {text} NOT NULL,"
    " xml {text} NOT NULL,"
    " PRIMARY KEY (host, node, id))",
    "CREATE INDEX pubsub_item_seq ON pubsub_item (host, node, seq)",
    "CREATE TABLE pubsub_sub ("
    " host {key} NOT NULL,"
    " node {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " subid {text} NOT NULL,"
    " state {text} NOT NULL,"
    " deliver {int} NOT NULL,"
    " PRIMARY KEY (host, node, jid))",
    "CREATE TABLE pubsub_aff ("
    " host {key} NOT NULL,"
    " node {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " aff {text} NOT NULL,"
    " PRIMARY KEY (host, node, jid))",
    NULL,
};

/* Several subscriptions per (node, jid) (XEP-0060 6.1.6): the subid joins
 * the key (a {key} now: a MySQL key cannot hold LONGTEXT), and each
 * subscription keeps its pubsub#show-values (PS_SHOW_* bits; 0: delivered
 * whatever the presence).  Portable without ALTER … RENAME (which SQL
 * Server spells otherwise): the rows move through a table of their own. */
static const char *const ps_mig2[] = {
    "CREATE TABLE pubsub_sub_v1 ("
    " host {key} NOT NULL,"
    " node {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " subid {text} NOT NULL,"
    " state {text} NOT NULL,"
    " deliver {int} NOT NULL)",
    "INSERT INTO pubsub_sub_v1 (host, node, jid, subid, state, deliver)"
    " SELECT host, node, jid, subid, state, deliver FROM pubsub_sub",
    "DROP TABLE pubsub_sub",
    "CREATE TABLE pubsub_sub ("
    " host {key} NOT NULL,"
    " node {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " subid {key} NOT NULL,"
    " state {text} NOT NULL,"
    " deliver {int} NOT NULL,"
    " shows {int} NOT NULL,"
    " PRIMARY KEY (host, node, jid, subid))",
    "INSERT INTO pubsub_sub (host, node, jid, subid, state, deliver, shows)"
    " SELECT host, node, jid, subid, state, deliver, 0 FROM pubsub_sub_v1",
    "DROP TABLE pubsub_sub_v1",
    "CREATE INDEX pubsub_sub_jid ON pubsub_sub (host, jid)",
    NULL,
};

static const xd_db_migration_t ps_migrations[] = {
    { 1, NULL, ps_mig1 },
    { 2, NULL, ps_mig2 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t ps_schemas[] = {
    { "mod_pubsub", ps_migrations },
    { NULL, NULL },
};

/* ---- state: the per-node queues, per worker ---------------------------------------------------- */

typedef struct ps_req ps_req_t;

typedef struct ps_queue {
    ps_req_t *head, *tail; /* waiting, the running one first */
    int n;                 /* how many */
} ps_queue_t;

typedef struct ps_state {
    char *domain;                        /* the service's domain */
    xd_map_t queues[XD_OWNER_MAX_WORKERS]; /* node → ps_queue_t; each touched by its worker */
} ps_state_t;

/* One stanza for the service, from the route to its done. */
struct ps_req {
    xd_module_ctx_t *ctx;
    xd_stanza_t *st;     /* the request (owned) */
    char *node;          /* its node key ("" for none) */
    unsigned worker;     /* the node's owner */
    xd_input_ref_t in;   /* the sender's stream, held */
    xd_stanza_t *reply;  /* the answer (owned), or NULL */
    xd_stanza_t **out;   /* sent after the reply (owned) */
    size_t nout, capout;
    ps_req_t *next;      /* in the node's queue */
};

static pse_limits_t
ps_limits(const ps_conf_t *conf)
{
    return (pse_limits_t){ .access = PSE_AM_OPEN | PSE_AM_PRESENCE | PSE_AM_ROSTER |
                                     PSE_AM_AUTHORIZE | PSE_AM_WHITELIST,
                           .fields = PSE_F_ALL,
                           .max_items_limit = conf->max_items_limit };
}

/* ---- on the pool: one operation -------------------------------------------------------------- */

/* What an operation sees (the pool thread's view of a ps_req_t). */
typedef struct ps_op {
    ps_req_t *r;
    xd_db_conn_t *c;
    const ps_conf_t *conf;
    pse_limits_t lim;
    const char *svc;        /* the service domain */
    const char *host;       /* the served host */
    const xd_stanza_t *iq;
    const xd_jid_t *from;
    char from_bare[3 * XD_JID_PART_MAX + 3];
    char from_full[3 * XD_JID_PART_MAX + 3];
    size_t bytes;           /* sent on the sender's behalf */
    int dberr;              /* the first failed write: the transaction rolls back */
} ps_op_t;

static void
ps_out(ps_op_t *o, xd_stanza_t *st)
{
    ps_req_t *r = o->r;
    if (!st)
        return;
    if (r->nout == r->capout) {
        r->capout = r->capout ? r->capout * 2 : 8;
        r->out = xd_realloc(r->out, r->capout * sizeof *r->out);
    }
    size_t n = 0;
    xd_stanza_bytes(st, &n);
    o->bytes += n;
    r->out[r->nout++] = st;
}

/* The message carrying event (borrowed) from the service to `to`, with a
 * SHIM header per subid (XEP-0060 12.x "Inclusion of SHIM Headers") after
 * the event when nsubids > 0. */
static void
ps_send_shim(ps_op_t *o, const char *to, const char *type, const xd_el_t *ev,
             const char *const *subids, size_t nsubids)
{
    size_t len = 0;
    char *xml = xd_el_serialize(ev, NULL, &len);
    xd_el_t *m = pse_event_message(o->svc, to, type, xml, len);
    if (m) {
        if (nsubids) {
            xd_el_t *h = xd_el_add_child(m, "headers", PS_NS_SHIM);
            for (size_t i = 0; i < nsubids; i++) {
                xd_el_t *he = xd_el_add_child(h, "header", NULL);
                xd_el_set_attr(he, "name", "SubID");
                xd_el_add_text(he, subids[i]);
            }
        }
        ps_out(o, xd_el_freeze(m));
    }
    xd_free(xml);
}

static void
ps_send(ps_op_t *o, const char *to, const char *type, const xd_el_t *ev)
{
    ps_send_shim(o, to, type, ev, NULL, 0);
}

static xd_stanza_t *
ps_err(ps_op_t *o, xd_cond cond, const char *app, const char *feature, const char *text)
{
    return pse_err(o->iq, cond, app, feature, text);
}

static int
ps_sql(ps_op_t *o, const char *sql, const xd_db_val_t *v, size_t n)
{
    int rc = xd_db_query(o->c, sql, v, n, NULL, NULL);
    if (rc != 0 && o->dberr == 0)
        o->dberr = rc < 0 ? rc : -rc;
    return rc;
}

/* ---- nodes -------------------------------------------------------------------------------------- */

typedef struct ps_node {
    bool found;
    char owner[3 * XD_JID_PART_MAX + 3];
    pse_cfg_t cfg;
} ps_node_t;

static int
ps_node_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_node_t *n = arg;
    if (ncols < 2)
        return 0;
    n->found = true;
    snprintf(n->owner, sizeof n->owner, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    pse_cfg_default(&n->cfg, true);
    pse_cfg_decode(cols[1].s.p, cols[1].s.len, &n->cfg);
    return 1;
}

static int
ps_node_load(ps_op_t *o, const char *node, ps_node_t *out)
{
    memset(out, 0, sizeof *out);
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
    return xd_db_query(o->c, "SELECT owner, config FROM pubsub_node WHERE host = ? AND node = ?",
                       k, 2, ps_node_row, out);
}

static int
ps_node_save_cfg(ps_op_t *o, const char *node, const pse_cfg_t *cfg)
{
    char *enc = pse_cfg_encode(cfg);
    xd_db_val_t v[] = { XD_DB_V_CSTR(enc), XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
    int rc = ps_sql(o, "UPDATE pubsub_node SET config = ? WHERE host = ? AND node = ?", v, 3);
    xd_free(enc);
    return rc;
}

static int
ps_str_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    char *buf = arg;
    if (ncols >= 1)
        snprintf(buf, 64, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    return 1;
}

/* The affiliation of bare JID `jid` with the node ("none" when none). */
static void
ps_aff(ps_op_t *o, const char *node, const ps_node_t *n, const char *jid, char out[64])
{
    snprintf(out, 64, "none");
    if (n->found && !strcmp(n->owner, jid)) {
        snprintf(out, 64, "owner");
        return;
    }
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(jid) };
    xd_db_query(o->c, "SELECT aff FROM pubsub_aff WHERE host = ? AND node = ? AND jid = ?", k, 3,
                ps_str_row, out);
}

/* ---- one JID's subscriptions to a node ------------------------------------------------------- */

/* pubsub#show-values as bits; none set: delivered whatever the presence. */
static const char *const ps_show_names[] = { "away", "chat", "dnd", "online", "xa", NULL };
enum { PS_SHOW_ALL = 31 };

/* A subscription's options (pubsub#subscribe_options). */
typedef struct ps_subopt {
    bool deliver;    /* pubsub#deliver */
    unsigned shows;  /* pubsub#show-values, as bits of ps_show_names; 0: no filter */
} ps_subopt_t;

typedef struct ps_sub {
    char *jid;       /* the subscriber, when a node's subscriptions were read; else NULL */
    char subid[64];
    char state[16];
    ps_subopt_t opt;
} ps_sub_t;

/* Subscriptions to one node: of one JID (exact: bare or full) by subid,
 * or of every JID by JID and subid (ps_subs_load). */
typedef struct ps_subs {
    ps_sub_t *s;
    size_t n, cap;
} ps_subs_t;

/* Columns subid, state, deliver, shows[, jid]: one JID's rows (four
 * columns) stop at PS_SUBS_CAP. */
static int
ps_sub_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_subs_t *m = arg;
    if (ncols < 4 || (ncols == 4 && m->n >= PS_SUBS_CAP))
        return 0;
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 4;
        m->s = xd_realloc(m->s, m->cap * sizeof *m->s);
    }
    ps_sub_t *r = &m->s[m->n++];
    r->jid = ncols > 4 ? xd_strndup(cols[4].s.p, cols[4].s.len) : NULL;
    snprintf(r->subid, sizeof r->subid, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    snprintf(r->state, sizeof r->state, "%.*s", (int)cols[1].s.len, cols[1].s.p);
    r->opt.deliver = cols[2].i != 0;
    r->opt.shows = (unsigned)cols[3].i & PS_SHOW_ALL;
    return 0;
}

/* The subscriptions of jid to node, or of every JID when jid is NULL. */
static int
ps_subs_load(ps_op_t *o, const char *node, const char *jid, ps_subs_t *m)
{
    if (!jid) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
        return xd_db_query(o->c,
                           "SELECT subid, state, deliver, shows, jid FROM pubsub_sub"
                           " WHERE host = ? AND node = ? ORDER BY jid, subid",
                           k, 2, ps_sub_row, m);
    }
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(jid) };
    return xd_db_query(o->c,
                       "SELECT subid, state, deliver, shows FROM pubsub_sub"
                       " WHERE host = ? AND node = ? AND jid = ? ORDER BY subid",
                       k, 3, ps_sub_row, m);
}

static void
ps_subs_free(ps_subs_t *m)
{
    for (size_t i = 0; i < m->n; i++)
        xd_free(m->s[i].jid);
    xd_free(m->s);
    memset(m, 0, sizeof *m);
}

/* The first of m in `state`, or NULL. */
static const ps_sub_t *
ps_subs_in(const ps_subs_t *m, const char *state)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->s[i].state, state))
            return &m->s[i];
    return NULL;
}

/* The subscription a request (unsubscribe, options) is about: by its subid,
 * or the only one (XEP-0060 6.2.3, 6.3.4).  NULL and *out, or the error:
 * none (unexpected-request + not-subscribed), a subid that is not one of
 * them (not-acceptable + invalid-subid), several and no subid (bad-request
 * + subid-required). */
static xd_stanza_t *
ps_sub_pick(ps_op_t *o, const xd_el_t *op, const ps_subs_t *m, const ps_sub_t **out)
{
    if (m->n == 0)
        return ps_err(o, XD_COND_UNEXPECTED_REQUEST, "not-subscribed", NULL, NULL);
    const char *given = xd_el_attr(op, "subid");
    if (given && *given) {
        for (size_t i = 0; i < m->n; i++)
            if (!strcmp(m->s[i].subid, given)) {
                *out = &m->s[i];
                return NULL;
            }
        return ps_err(o, XD_COND_NOT_ACCEPTABLE, "invalid-subid", NULL, NULL);
    }
    if (m->n > 1)
        return ps_err(o, XD_COND_BAD_REQUEST, "subid-required", NULL, NULL);
    *out = &m->s[0];
    return NULL;
}

/* Whether the requester (bare or full JID) has a subscription in state subscribed. */
static bool
ps_subscribed(ps_op_t *o, const char *node)
{
    int64_t n = 0;
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(o->from_bare),
                        XD_DB_V_CSTR(o->from_full) };
    xd_db_query_int64(o->c,
                      "SELECT COUNT(*) FROM pubsub_sub WHERE host = ? AND node = ?"
                      " AND (jid = ? OR jid = ?) AND state = 'subscribed'",
                      k, 4, &n);
    return n > 0;
}

/* The owner's roster allows the requester (presence, roster models): the
 * owner must be an account of the served host. */
static bool
ps_roster_ok(ps_op_t *o, const ps_node_t *n)
{
    const char *at = strchr(n->owner, '@');
    if (!at || strcmp(at + 1, o->host) != 0)
        return false;
    char user[XD_JID_PART_MAX + 1];
    snprintf(user, sizeof user, "%.*s", (int)(at - n->owner), n->owner);
    return pse_roster_allows(o->host, user, o->from_bare, &n->cfg);
}

/* Whether the requester may read (items) or subscribe: NULL, or the error.
 * for_sub: authorize nodes answer with a pending subscription instead. */
static xd_stanza_t *
ps_access(ps_op_t *o, const char *node, const ps_node_t *n, const char *aff, bool for_sub)
{
    if (!strcmp(aff, "outcast"))
        return ps_err(o, XD_COND_FORBIDDEN, NULL, NULL, NULL);
    if (!strcmp(aff, "owner") || !strcmp(aff, "publisher") || !strcmp(aff, "member"))
        return NULL;
    const char *am = n->cfg.access;
    if (!strcmp(am, "open"))
        return NULL;
    if (!strcmp(am, "presence"))
        return ps_roster_ok(o, n) ? NULL
                                  : ps_err(o, XD_COND_NOT_AUTHORIZED,
                                           "presence-subscription-required", NULL, NULL);
    if (!strcmp(am, "roster"))
        return ps_roster_ok(o, n) ? NULL
                                  : ps_err(o, XD_COND_NOT_AUTHORIZED, "not-in-roster-group",
                                           NULL, NULL);
    if (!strcmp(am, "authorize")) {
        if (for_sub || ps_subscribed(o, node))
            return NULL;
        return ps_err(o, XD_COND_NOT_AUTHORIZED, "not-subscribed", NULL, NULL);
    }
    return ps_err(o, XD_COND_NOT_ALLOWED, "closed-node", NULL, NULL);
}

/* Deletes the node's expired items (pubsub#item_expire). */
static void
ps_expire(ps_op_t *o, const char *node, const pse_cfg_t *cfg)
{
    if (cfg->item_expire <= 0)
        return;
    xd_db_val_t v[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node),
                        XD_DB_V_INT((int64_t)time(NULL) - cfg->item_expire) };
    ps_sql(o, "DELETE FROM pubsub_item WHERE host = ? AND node = ? AND ts <= ?", v, 3);
}

static int
ps_seq_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    if (ncols >= 1)
        *(int64_t *)arg = cols[0].i;
    return 1;
}

/* Keeps the newest `keep` items of the node: finds the seq of the keep-th
 * newest and deletes the older ones (no LIMIT in a subquery: MySQL has
 * none there). */
static int
ps_trim(ps_op_t *o, const char *node, int64_t keep)
{
    if (keep <= 0) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
        return ps_sql(o, "DELETE FROM pubsub_item WHERE host = ? AND node = ?", k, 2);
    }
    int64_t cut = -1;
    xd_db_val_t q[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_INT(keep - 1) };
    int rc = xd_db_query(o->c,
                         "SELECT seq FROM pubsub_item WHERE host = ? AND node = ?"
                         " ORDER BY seq DESC LIMIT 1 OFFSET ?",
                         q, 3, ps_seq_row, &cut);
    if (rc != 0 || cut < 0)
        return rc;
    xd_db_val_t d[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_INT(cut) };
    return ps_sql(o, "DELETE FROM pubsub_item WHERE host = ? AND node = ? AND seq < ?", d, 3);
}

/* ---- subscribers and fan-out -------------------------------------------------------------------- */

/* The show of an available presence, as a bit of ps_show_names. */
static unsigned
ps_show_bit(const xd_stanza_t *pres)
{
    const char *show = pres ? xd_el_child_text(xd_stanza_root(pres), "show", NULL) : NULL;
    if (!show || !*show)
        show = "online";
    for (unsigned i = 0; ps_show_names[i]; i++)
        if (!strcmp(show, ps_show_names[i]))
            return 1u << i;
    return 0;
}

/* The shows of jid's available sessions that a headline to jid reaches
 * (a full JID: that session; a bare JID: those of non-negative priority,
 * RFC 6121 8.5.2.1.1), read from the session table.  A JID of another
 * domain that has no session here is not known: PS_SHOW_ALL. */
static unsigned
ps_presence_shows(ps_op_t *o, const char *jid)
{
    xd_jid_t *j = NULL;
    if (xd_jid_parse(xd_str_c(jid), &j) != 0)
        return 0;
    xd_session_info_t *si = xd_calloc(PS_RES_MAX, sizeof *si);
    size_t total = 0, n = 0;
    bool full = xd_jid_resource(j).len > 0;
    if (full) {
        if (xd_session_find(j, &si[0]) == 0)
            total = n = 1;
    } else {
        total = xd_session_list(j, si, PS_RES_MAX);
        n = total < PS_RES_MAX ? total : PS_RES_MAX;
    }
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (si[i].available && si[i].presence && (full || si[i].priority >= 0))
            bits |= ps_show_bit(si[i].presence);
        xd_session_info_clear(&si[i]);
    }
    xd_free(si);
    if (total == 0 && !xd_str_eq(xd_jid_domain(j), xd_str_c(o->host)))
        bits = PS_SHOW_ALL;
    xd_jid_unref(j);
    return bits;
}

/* Whether a subscription of jid with opt takes a delivery now: delivery
 * on, and its pubsub#show-values, if any, matching jid's presence. */
static bool
ps_sub_takes(ps_op_t *o, const char *jid, const ps_subopt_t *opt)
{
    return opt->deliver && (!opt->shows || (ps_presence_shows(o, jid) & opt->shows));
}

/* The event to every subscriber JID that has a subscription taking
 * deliveries (subscribed, pubsub#deliver on, and its pubsub#show-values,
 * if any, matching the JID's presence now): one message per JID (XEP-0060
 * 6.1.6), naming the subscriptions that asked for it in SHIM headers when
 * `shim` (items: published and retracted, 12.x). */
static void
ps_notify_ex(ps_op_t *o, const char *node, const pse_cfg_t *cfg, const xd_el_t *ev, bool shim)
{
    ps_subs_t s = { 0 };
    ps_subs_load(o, node, NULL, &s);
    const char **ids = s.n ? xd_calloc(s.n, sizeof *ids) : NULL;
    for (size_t i = 0; i < s.n;) {
        size_t j = i, nids = 0;
        unsigned have = 0;
        bool looked = false;
        for (; j < s.n && !strcmp(s.s[j].jid, s.s[i].jid); j++) {
            const ps_sub_t *sj = &s.s[j];
            if (strcmp(sj->state, "subscribed") != 0 || !sj->opt.deliver)
                continue;
            if (sj->opt.shows) {
                if (!looked) {
                    have = ps_presence_shows(o, sj->jid);
                    looked = true;
                }
                if (!(have & sj->opt.shows))
                    continue;
            }
            ids[nids++] = sj->subid;
        }
        if (nids)
            ps_send_shim(o, s.s[i].jid, cfg->notif_type, ev, ids, shim ? nids : 0);
        i = j;
    }
    xd_free(ids);
    ps_subs_free(&s);
}

static void
ps_notify(ps_op_t *o, const char *node, const pse_cfg_t *cfg, const xd_el_t *ev)
{
    ps_notify_ex(o, node, cfg, ev, false);
}

/* ---- items -------------------------------------------------------------------------------------- */

typedef struct ps_items {
    xd_el_t *parent; /* filled with <item/> */
    bool payload;    /* with the payload */
    size_t n;
} ps_items_t;

static int
ps_item_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_items_t *it = arg;
    if (ncols < 2)
        return 0;
    char id[PS_ID_MAX + 1];
    snprintf(id, sizeof id, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    xd_el_t *item = xd_el_add_child(it->parent, "item", NULL);
    xd_el_set_attr(item, "id", id);
    xd_el_t *el = NULL;
    if (it->payload && xd_el_parse(cols[1].s.p, cols[1].s.len, &el) == 0)
        xd_el_append(item, el);
    it->n++;
    return 0;
}

/* The last item of the node to `to` (send_last_published_item), for the
 * subscription subid (a SHIM header) when set. */
static void
ps_send_last(ps_op_t *o, const char *node, const pse_cfg_t *cfg, const char *to,
             const char *subid)
{
    xd_el_t *items;
    xd_el_t *ev = pse_event(node, &items);
    ps_items_t it = { .parent = items, .payload = cfg->deliver_payloads };
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
    int rc = xd_db_query(o->c,
                         "SELECT id, xml FROM pubsub_item WHERE host = ? AND node = ?"
                         " ORDER BY seq DESC LIMIT 1",
                         k, 2, ps_item_row, &it);
    if (rc == 0 && it.n == 1)
        ps_send_shim(o, to, cfg->notif_type, ev, &subid, subid ? 1 : 0);
    xd_el_free(ev);
}

static xd_el_t *
ps_result(ps_op_t *o, const char *ns, xd_el_t **ps_out)
{
    xd_el_t *res = xd_iq_result_builder(o->iq);
    *ps_out = xd_el_add_child(res, "pubsub", ns);
    return res;
}

static const char *
ps_node_attr(const xd_el_t *op)
{
    const char *n = xd_el_attr(op, "node");
    return n && *n ? n : NULL;
}

/* ---- create, configure, delete, purge ----------------------------------------------------------- */

static xd_stanza_t *
ps_create(ps_op_t *o, const xd_el_t *pubsub, const xd_el_t *op)
{
    xd_config_t *gcfg = xd_config_get();
    bool may = xd_access_match(gcfg, o->host, o->conf->access_createnode, o->from, NULL) ==
               XD_ACCESS_ALLOW;
    xd_config_unref(gcfg);
    if (!may)
        return ps_err(o, XD_COND_FORBIDDEN, NULL, NULL, "you may not create nodes here");
    const char *node = ps_node_attr(op);
    char gen[21];
    bool instant = !node;
    if (instant) {
        if (strcmp(o->r->node, "") != 0 || mod_random_id(gen) != 0)
            return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        node = gen;
    }
    if (strlen(node) > PS_NODE_MAX)
        return ps_err(o, XD_COND_NOT_ACCEPTABLE, NULL, NULL, "node name too long");
    pse_cfg_t cfg;
    pse_cfg_default(&cfg, true);
    const xd_el_t *ce; /* 8.1.3 */
    if (!pse_create_configure(pubsub, op, &ce))
        return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL,
                      "<configure/> follows <create/> and names no node");
    const xd_el_t *x = ce ? xd_el_child(ce, "x", XD_NS_DATA) : NULL;
    if (x) {
        for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
            const char *var = xd_el_attr(f, "var");
            const char *v = xd_el_child_text(f, "value", NULL);
            if (var && v && !strcmp(var, "pubsub#node_type") && strcmp(v, "leaf") != 0)
                return ps_err(o, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported", "collections",
                              NULL);
        }
        unsigned set = 0;
        const char *why = pse_form_read(x, PSE_NS_NODECFG, &o->lim, &cfg, &set);
        if (why)
            return ps_err(o, XD_COND_NOT_ACCEPTABLE,
                          !strcmp(why, PSE_WHY_ACCESS) ? "unsupported-access-model" : NULL, NULL,
                          why);
    }
    ps_node_t n;
    int rc = ps_node_load(o, node, &n);
    if (rc == 0 && n.found)
        return ps_err(o, XD_COND_CONFLICT, NULL, NULL, "the node exists");
    int64_t count = 0, mine = 0;
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(o->from_bare) };
    if (rc == 0)
        rc = xd_db_query_int64(o->c,
                               "SELECT COUNT(*) FROM pubsub_node WHERE host = ? AND owner = ?", k,
                               2, &mine);
    if (rc == 0 && mine >= o->conf->max_nodes_per_user)
        return ps_err(o, XD_COND_RESOURCE_CONSTRAINT, NULL, NULL,
                      "you have as many nodes as an account may have (max_nodes_per_user)");
    if (rc == 0)
        rc = xd_db_query_int64(o->c, "SELECT COUNT(*) FROM pubsub_node WHERE host = ?", k, 1,
                               &count);
    if (rc == 0 && count >= o->conf->max_nodes)
        return ps_err(o, XD_COND_RESOURCE_CONSTRAINT, NULL, NULL, "too many nodes");
    char *enc = pse_cfg_encode(&cfg);
    xd_db_val_t row[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(o->from_bare),
                          XD_DB_V_CSTR(enc), XD_DB_V_INT(time(NULL)) };
    if (rc == 0)
        rc = ps_sql(o,
                    "INSERT INTO pubsub_node (host, node, owner, config, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    row, 5);
    xd_free(enc);
    if (rc != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!instant)
        return xd_iq_result(o->iq);
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB, &ps);
    xd_el_set_attr(xd_el_add_child(ps, "create", NULL), "node", node);
    return xd_el_freeze(res);
}

/* Loads the node for an owner operation: NULL and *n, or the error. */
static xd_stanza_t *
ps_owner_node(ps_op_t *o, const char *node, ps_node_t *n)
{
    if (!node)
        return ps_err(o, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    if (ps_node_load(o, node, n) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!n->found)
        return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    char aff[64];
    ps_aff(o, node, n, o->from_bare, aff);
    if (strcmp(aff, "owner") != 0)
        return ps_err(o, XD_COND_FORBIDDEN, NULL, NULL, NULL);
    return NULL;
}

static xd_stanza_t *
ps_configure(ps_op_t *o, const xd_el_t *op, bool set)
{
    const char *node = ps_node_attr(op);
    ps_node_t n;
    xd_stanza_t *e = ps_owner_node(o, node, &n);
    if (e)
        return e;
    if (!set) {
        xd_el_t *ps;
        xd_el_t *res = ps_result(o, XD_NS_PUBSUB_OWNER, &ps);
        xd_el_t *ce = xd_el_add_child(ps, "configure", NULL);
        xd_el_set_attr(ce, "node", node);
        pse_cfg_form(ce, "form", PSE_NS_NODECFG, &n.cfg, &o->lim);
        return xd_el_freeze(res);
    }
    const xd_el_t *x = xd_el_child(op, "x", XD_NS_DATA);
    if (!x)
        return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "a node_config form is needed");
    const char *type = xd_el_attr(x, "type");
    if (type && !strcmp(type, "cancel"))
        return xd_iq_result(o->iq);
    unsigned set_f = 0;
    const char *why = pse_form_read(x, PSE_NS_NODECFG, &o->lim, &n.cfg, &set_f);
    if (why)
        return ps_err(o, XD_COND_NOT_ACCEPTABLE, NULL, NULL, why);
    int rc = ps_node_save_cfg(o, node, &n.cfg);
    if (rc == 0 && !n.cfg.persist)
        rc = ps_trim(o, node, 0);
    else if (rc == 0)
        rc = ps_trim(o, node, pse_cfg_keep(&n.cfg, &o->lim));
    if (rc != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (n.cfg.notify_config) {
        xd_el_t *ev = xd_el_new("event", XD_NS_PUBSUB_EVENT);
        xd_el_t *c = xd_el_add_child(ev, "configuration", NULL);
        xd_el_set_attr(c, "node", node);
        pse_limits_t lim = o->lim; /* the roster groups are the owner's to read */
        lim.fields &= ~(unsigned)PSE_F_GROUPS;
        if (n.cfg.deliver_payloads)
            pse_cfg_form(c, "result", PSE_NS_NODECFG, &n.cfg, &lim);
        ps_notify(o, node, &n.cfg, ev);
        xd_el_free(ev);
    }
    return xd_iq_result(o->iq);
}

static xd_stanza_t *
ps_default(ps_op_t *o)
{
    pse_cfg_t cfg;
    pse_cfg_default(&cfg, true);
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB_OWNER, &ps);
    xd_el_t *d = xd_el_add_child(ps, "default", NULL);
    pse_cfg_form(d, "form", PSE_NS_NODECFG, &cfg, &o->lim);
    return xd_el_freeze(res);
}

static void
ps_node_sql(ps_op_t *o, const char *sql, const char *node, int *rc)
{
    if (*rc != 0)
        return;
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
    *rc = ps_sql(o, sql, k, 2);
}

static xd_stanza_t *
ps_delete_purge(ps_op_t *o, const xd_el_t *op, bool del)
{
    const char *node = ps_node_attr(op);
    ps_node_t n;
    xd_stanza_t *e = ps_owner_node(o, node, &n);
    if (e)
        return e;
    if (!del && !n.cfg.persist)
        return ps_err(o, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported", "persistent-items",
                      NULL);
    ps_subs_t subs = { 0 };
    if (del)
        ps_subs_load(o, node, NULL, &subs); /* told after they are gone */
    int rc = 0;
    ps_node_sql(o, "DELETE FROM pubsub_item WHERE host = ? AND node = ?", node, &rc);
    if (del) {
        ps_node_sql(o, "DELETE FROM pubsub_sub WHERE host = ? AND node = ?", node, &rc);
        ps_node_sql(o, "DELETE FROM pubsub_aff WHERE host = ? AND node = ?", node, &rc);
        ps_node_sql(o, "DELETE FROM pubsub_node WHERE host = ? AND node = ?", node, &rc);
    }
    if (rc != 0) {
        ps_subs_free(&subs);
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    xd_el_t *ev = xd_el_new("event", XD_NS_PUBSUB_EVENT);
    xd_el_t *d = xd_el_add_child(ev, del ? "delete" : "purge", NULL);
    xd_el_set_attr(d, "node", node);
    if (del) {
        const xd_el_t *redir = xd_el_child(op, "redirect", XD_NS_PUBSUB_OWNER);
        const char *uri = redir ? xd_el_attr(redir, "uri") : NULL;
        if (uri)
            xd_el_set_attr(xd_el_add_child(d, "redirect", NULL), "uri", uri);
        if (n.cfg.notify_delete)
            for (size_t i = 0; i < subs.n; i++) {
                const ps_sub_t *si = &subs.s[i];
                bool told = false; /* once per JID (rows are by jid) */
                for (size_t j = i; j > 0 && !strcmp(subs.s[j - 1].jid, si->jid); j--)
                    told = told || !strcmp(subs.s[j - 1].state, "subscribed");
                if (!told && !strcmp(si->state, "subscribed"))
                    ps_send(o, si->jid, n.cfg.notif_type, ev);
            }
    } else if (n.cfg.notify_retract) {
        ps_notify(o, node, &n.cfg, ev);
    }
    xd_el_free(ev);
    ps_subs_free(&subs);
    return xd_iq_result(o->iq);
}

/* ---- publish, retract, items -------------------------------------------------------------------- */

/* Whether the requester may publish to the node (publish model, affiliation). */
static bool
ps_may_publish(ps_op_t *o, const char *node, const ps_node_t *n, const char *aff)
{
    if (!strcmp(aff, "outcast"))
        return false;
    if (!strcmp(aff, "owner") || !strcmp(aff, "publisher") || !strcmp(aff, "publish-only"))
        return true;
    if (!strcmp(n->cfg.publish_model, "open"))
        return true;
    if (!strcmp(n->cfg.publish_model, "subscribers"))
        return ps_subscribed(o, node);
    return false;
}

static xd_stanza_t *
ps_publish(ps_op_t *o, const xd_el_t *pubsub, const xd_el_t *op)
{
    const char *node = ps_node_attr(op);
    if (!node)
        return ps_err(o, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    const xd_el_t *item = NULL;
    size_t nitems = 0;
    for (const xd_el_t *c = xd_el_first_child(op); c; c = xd_el_next(c))
        if (xd_el_is(c, "item", XD_NS_PUBSUB)) {
            item = c;
            nitems++;
        }
    ps_node_t n;
    if (ps_node_load(o, node, &n) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!n.found)
        return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    char aff[64];
    ps_aff(o, node, &n, o->from_bare, aff);
    if (!ps_may_publish(o, node, &n, aff))
        return ps_err(o, XD_COND_FORBIDDEN, NULL, NULL, NULL);
    if (nitems > 1)
        return ps_err(o, XD_COND_BAD_REQUEST, "invalid-payload", NULL, "one item per publish");
    size_t npay = item ? xd_el_child_count(item) : 0;
    if (n.cfg.persist && !item)
        return ps_err(o, XD_COND_BAD_REQUEST, "item-required", NULL, NULL);
    if (n.cfg.deliver_payloads && npay == 0)
        return ps_err(o, XD_COND_BAD_REQUEST, "payload-required", NULL, NULL);
    if (!n.cfg.persist && !n.cfg.deliver_payloads && item) /* 7.1.3.6: any item */
        return ps_err(o, XD_COND_BAD_REQUEST, "item-forbidden", NULL, NULL);
    if (npay > 1)
        return ps_err(o, XD_COND_BAD_REQUEST, "invalid-payload", NULL, "one payload per item");
    const xd_el_t *po = xd_el_child(pubsub, "publish-options", XD_NS_PUBSUB);
    const xd_el_t *px = po ? xd_el_child(po, "x", XD_NS_DATA) : NULL;
    if (px) {
        pse_cfg_t want = n.cfg;
        unsigned set = 0;
        const char *why = pse_form_read(px, PSE_NS_PUBOPT, &o->lim, &want, &set);
        if (why || !pse_precond_ok(&n.cfg, &want, set, &o->lim))
            return ps_err(o, XD_COND_CONFLICT, "precondition-not-met", NULL,
                          why ? why : "the node's configuration differs from the "
                                      "publish-options");
    }
    char gen[21];
    const char *id = item ? xd_el_attr(item, "id") : NULL;
    if (!id || !*id) {
        if (mod_random_id(gen) != 0)
            return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        id = gen;
    }
    if (strlen(id) > PS_ID_MAX)
        return ps_err(o, XD_COND_NOT_ACCEPTABLE, NULL, NULL, "item id too long");
    size_t len = 0;
    char *xml = npay ? xd_el_serialize(xd_el_first_child(item), NULL, &len) : xd_strdup("");
    if (len > o->conf->max_item_size) {
        xd_free(xml);
        return ps_err(o, XD_COND_NOT_ACCEPTABLE, "payload-too-big", NULL, NULL);
    }
    int rc = 0;
    ps_expire(o, node, &n.cfg);
    if (n.cfg.persist) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(id) };
        rc = ps_sql(o, "DELETE FROM pubsub_item WHERE host = ? AND node = ? AND id = ?", key, 3);
        int64_t seq = 0;
        if (rc == 0)
            rc = xd_db_query_int64(o->c,
                                   "SELECT COALESCE(MAX(seq), 0) FROM pubsub_item"
                                   " WHERE host = ? AND node = ?",
                                   key, 2, &seq);
        xd_db_val_t row[] = { XD_DB_V_CSTR(o->svc),    XD_DB_V_CSTR(node),
                              XD_DB_V_CSTR(id),        XD_DB_V_INT(seq + 1),
                              XD_DB_V_INT(time(NULL)), XD_DB_V_CSTR(o->from_bare),
                              XD_DB_V_TEXT(((xd_str_t){ xml, len })) };
        if (rc == 0)
            rc = ps_sql(o,
                        "INSERT INTO pubsub_item (host, node, id, seq, ts, publisher, xml)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        row, 7);
        if (rc == 0)
            rc = ps_trim(o, node, pse_cfg_keep(&n.cfg, &o->lim));
    }
    if (rc != 0) {
        xd_free(xml);
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    xd_el_t *items;
    xd_el_t *ev = pse_event(node, &items);
    xd_el_t *ie = xd_el_add_child(items, "item", NULL);
    xd_el_set_attr(ie, "id", id);
    xd_el_set_attr(ie, "publisher", o->from_bare);
    xd_el_t *pl = NULL;
    if (n.cfg.deliver_payloads && npay && xd_el_parse(xml, len, &pl) == 0)
        xd_el_append(ie, pl);
    xd_free(xml);
    ps_notify_ex(o, node, &n.cfg, ev, true);
    xd_el_free(ev);
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB, &ps);
    xd_el_t *pe = xd_el_add_child(ps, "publish", NULL);
    xd_el_set_attr(pe, "node", node);
    xd_el_set_attr(xd_el_add_child(pe, "item", NULL), "id", id);
    return xd_el_freeze(res);
}

static int
ps_publisher_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    char *buf = arg;
    if (ncols >= 1)
        snprintf(buf, 3 * XD_JID_PART_MAX + 3, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    return 1;
}

static xd_stanza_t *
ps_retract(ps_op_t *o, const xd_el_t *op)
{
    const char *node = ps_node_attr(op);
    if (!node)
        return ps_err(o, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    const xd_el_t *item = xd_el_child(op, "item", XD_NS_PUBSUB);
    const char *id = item ? xd_el_attr(item, "id") : NULL;
    if (!id || !*id)
        return ps_err(o, XD_COND_BAD_REQUEST, "item-required", NULL, NULL);
    ps_node_t n;
    if (ps_node_load(o, node, &n) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!n.found)
        return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    if (!n.cfg.persist)
        return ps_err(o, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported", "persistent-items",
                      NULL);
    ps_expire(o, node, &n.cfg);
    char publisher[3 * XD_JID_PART_MAX + 3] = "";
    xd_db_val_t key[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(id) };
    if (xd_db_query(o->c, "SELECT publisher FROM pubsub_item WHERE host = ? AND node = ? AND id = ?",
                    key, 3, ps_publisher_row, publisher) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!*publisher)
        return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    char aff[64];
    ps_aff(o, node, &n, o->from_bare, aff);
    bool may = !strcmp(aff, "owner") || !strcmp(aff, "publisher") ||
               !strcmp(publisher, o->from_bare);
    if (!may)
        return ps_err(o, XD_COND_FORBIDDEN, NULL, NULL, NULL);
    if (ps_sql(o, "DELETE FROM pubsub_item WHERE host = ? AND node = ? AND id = ?", key, 3) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    const char *notify = xd_el_attr(op, "notify");
    if ((notify && pse_bool(notify) == 1) || n.cfg.notify_retract) {
        xd_el_t *items;
        xd_el_t *ev = pse_event(node, &items);
        xd_el_set_attr(xd_el_add_child(items, "retract", NULL), "id", id);
        ps_notify_ex(o, node, &n.cfg, ev, true);
        xd_el_free(ev);
    }
    return xd_iq_result(o->iq);
}

static xd_stanza_t *
ps_items(ps_op_t *o, const xd_el_t *op)
{
    const char *node = ps_node_attr(op);
    if (!node)
        return ps_err(o, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    int64_t max = INT32_MAX;
    const char *mi = xd_el_attr(op, "max_items");
    if (mi) {
        char *end = NULL;
        long long v = strtoll(mi, &end, 10);
        if (!*mi || *end || v < 1)
            return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "max_items: a positive number");
        max = v;
    }
    ps_node_t n;
    if (ps_node_load(o, node, &n) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!n.found)
        return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    char aff[64];
    ps_aff(o, node, &n, o->from_bare, aff);
    xd_stanza_t *e = ps_access(o, node, &n, aff, false);
    if (e)
        return e;
    if (!n.cfg.persist)
        return ps_err(o, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported", "persistent-items",
                      NULL);
    const char *ids[PSE_ITEM_IDS_MAX];
    int nids = pse_item_ids(op, ids);
    if (nids < 0)
        return ps_err(o, XD_COND_POLICY_VIOLATION, NULL, NULL,
                      "too many item ids in one request");
    ps_expire(o, node, &n.cfg);
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB, &ps);
    xd_el_t *out = xd_el_add_child(ps, "items", NULL);
    xd_el_set_attr(out, "node", node);
    ps_items_t it = { .parent = out, .payload = true };
    int rc = 0;
    bool by_id = nids > 0;
    for (int i = 0; i < nids && rc == 0; i++) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(ids[i]) };
        rc = xd_db_query(o->c,
                         "SELECT id, xml FROM pubsub_item WHERE host = ? AND node = ? AND id = ?",
                         key, 3, ps_item_row, &it);
    }
    if (rc == 0 && !by_id) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_INT(max) };
        rc = xd_db_query(o->c,
                         "SELECT id, xml FROM pubsub_item WHERE host = ? AND node = ?"
                         " ORDER BY seq DESC LIMIT ?",
                         key, 3, ps_item_row, &it);
    }
    if (rc != 0 || (by_id && it.n == 0)) {
        xd_el_free(res);
        return rc ? ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL)
                  : ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    }
    return xd_el_freeze(res);
}

/* ---- subscriptions ------------------------------------------------------------------------------ */

/* The JID in a subscribe/unsubscribe/options request: NULL and *out, or the error. */
static xd_stanza_t *
ps_own_jid(ps_op_t *o, const xd_el_t *op, char *out, size_t cap)
{
    const char *j = xd_el_attr(op, "jid");
    if (!j || !*j)
        return ps_err(o, XD_COND_BAD_REQUEST, "jid-required", NULL, NULL);
    xd_jid_t *jid = NULL;
    if (xd_jid_parse(xd_str_c(j), &jid) != 0)
        return ps_err(o, XD_COND_BAD_REQUEST, "invalid-jid", NULL, NULL);
    bool mine = xd_jid_eq_bare(jid, o->from);
    snprintf(out, cap, "%s", xd_jid_full_str(jid).p);
    xd_jid_unref(jid);
    if (!mine)
        return ps_err(o, XD_COND_BAD_REQUEST, "invalid-jid", NULL, NULL);
    return NULL;
}

static xd_el_t *
ps_sub_el(xd_el_t *parent, const char *node, const char *jid, const char *subid,
          const char *state)
{
    xd_el_t *s = xd_el_add_child(parent, "subscription", NULL);
    if (node)
        xd_el_set_attr(s, "node", node);
    xd_el_set_attr(s, "jid", jid);
    if (subid && *subid)
        xd_el_set_attr(s, "subid", subid);
    xd_el_set_attr(s, "subscription", state);
    return s;
}

/* The subscription-authorization form to the node's owners (XEP-0060 8.6). */
static void
ps_ask_owner(ps_op_t *o, const char *node, const ps_node_t *n, const char *jid)
{
    xd_el_t *x = xd_el_new("x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "form");
    xd_el_add_text(xd_el_add_child(x, "title", NULL), "PubSub subscriber request");
    struct { const char *var, *type, *label, *value; } fs[] = {
        { "FORM_TYPE", "hidden", NULL, PSE_NS_SUBAUTH },
        { "pubsub#node", "text-single", "Node ID", node },
        { "pubsub#subscriber_jid", "jid-single", "Subscriber Address", jid },
        { "pubsub#allow", "boolean", "Allow this JID to subscribe to this pubsub node?",
          "false" },
    };
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
        xd_el_t *f = xd_el_add_child(x, "field", NULL);
        xd_el_set_attr(f, "var", fs[i].var);
        xd_el_set_attr(f, "type", fs[i].type);
        if (fs[i].label)
            xd_el_set_attr(f, "label", fs[i].label);
        xd_el_add_text(xd_el_add_child(f, "value", NULL), fs[i].value);
    }
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_set_attr(m, "from", o->svc);
    xd_el_set_attr(m, "to", n->owner);
    char id[21];
    if (mod_random_id(id) == 0)
        xd_el_set_attr(m, "id", id);
    xd_el_append(m, x);
    ps_out(o, xd_el_freeze(m));
}

static int
ps_sub_insert(ps_op_t *o, const char *node, const char *jid, const char *subid,
              const char *state, const ps_subopt_t *opt)
{
    xd_db_val_t row[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node),   XD_DB_V_CSTR(jid),
                          XD_DB_V_CSTR(subid),  XD_DB_V_CSTR(state),  XD_DB_V_INT(opt->deliver),
                          XD_DB_V_INT(opt->shows) };
    return ps_sql(o,
                  "INSERT INTO pubsub_sub (host, node, jid, subid, state, deliver, shows)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?)",
                  row, 7);
}

static int
ps_sub_set_opts(ps_op_t *o, const char *node, const char *jid, const char *subid,
                const ps_subopt_t *opt)
{
    xd_db_val_t v[] = { XD_DB_V_INT(opt->deliver), XD_DB_V_INT(opt->shows),
                        XD_DB_V_CSTR(o->svc),      XD_DB_V_CSTR(node),
                        XD_DB_V_CSTR(jid),         XD_DB_V_CSTR(subid) };
    return ps_sql(o,
                  "UPDATE pubsub_sub SET deliver = ?, shows = ? WHERE host = ? AND node = ?"
                  " AND jid = ? AND subid = ?",
                  v, 6);
}

static const ps_subopt_t ps_subopt_default = { .deliver = true, .shows = 0 };

/* What reading a subscribe_options form found wrong. */
typedef enum {
    PS_OPT_OK,
    PS_OPT_INVALID,     /* bad-request + invalid-options */
    PS_OPT_COLLECTIONS, /* feature-not-implemented + unsupported collections */
} ps_optres_t;

/* Reads a submitted pubsub#subscribe_options form into *opt (fields it
 * does not name keep their value).  Offered: pubsub#deliver and
 * pubsub#show-values.  Digests, message bodies and leases are not:
 * pubsub#digest and pubsub#include_body may be submitted false,
 * pubsub#digest_frequency a number (it means nothing without digests),
 * pubsub#expire empty; pubsub#subscription_type and _depth are about
 * collections, which the service has none of.  *why says what is wrong. */
static ps_optres_t
ps_subopts_read(const xd_el_t *x, ps_subopt_t *opt, const char **why)
{
    const char *type = xd_el_attr(x, "type");
    if (type && strcmp(type, "submit") != 0) {
        *why = "the form must be of type submit";
        return PS_OPT_INVALID;
    }
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        const char *var = xd_el_attr(f, "var");
        if (!var || !xd_el_is(f, "field", XD_NS_DATA))
            continue;
        const char *v = xd_el_child_text(f, "value", NULL);
        if (!v)
            v = "";
        if (!strcmp(var, "FORM_TYPE")) {
            if (strcmp(v, PSE_NS_SUBOPT) != 0) {
                *why = "unexpected FORM_TYPE";
                return PS_OPT_INVALID;
            }
        } else if (!strcmp(var, "pubsub#deliver")) {
            int b = pse_bool(v);
            if (b < 0) {
                *why = "pubsub#deliver: a boolean";
                return PS_OPT_INVALID;
            }
            opt->deliver = b;
        } else if (!strcmp(var, "pubsub#show-values")) {
            unsigned bits = 0;
            for (const xd_el_t *ve = xd_el_first_child(f); ve; ve = xd_el_next(ve)) {
                if (!xd_el_is(ve, "value", XD_NS_DATA))
                    continue;
                const char *t = xd_el_text(ve);
                unsigned bit = 0;
                for (unsigned i = 0; ps_show_names[i] && t; i++)
                    if (!strcmp(t, ps_show_names[i]))
                        bit = 1u << i;
                if (!bit) {
                    *why = "pubsub#show-values: away, chat, dnd, online or xa";
                    return PS_OPT_INVALID;
                }
                bits |= bit;
            }
            opt->shows = bits;
        } else if (!strcmp(var, "pubsub#digest") || !strcmp(var, "pubsub#include_body")) {
            int b = pse_bool(v);
            if (b != 0) {
                *why = b < 0 ? "a boolean"
                             : "digests and message bodies are not offered (false only)";
                return PS_OPT_INVALID;
            }
        } else if (!strcmp(var, "pubsub#digest_frequency")) {
            char *end = NULL;
            long long n = strtoll(v, &end, 10);
            if (!*v || *end || n < 0) {
                *why = "pubsub#digest_frequency: a number of milliseconds";
                return PS_OPT_INVALID;
            }
        } else if (!strcmp(var, "pubsub#expire")) {
            if (*v) {
                *why = "time-based subscriptions (leases) are not offered";
                return PS_OPT_INVALID;
            }
        } else if (!strcmp(var, "pubsub#subscription_type") ||
                   !strcmp(var, "pubsub#subscription_depth")) {
            *why = "the service has no collection nodes";
            return PS_OPT_COLLECTIONS;
        } else {
            *why = "unknown subscription option";
            return PS_OPT_INVALID;
        }
    }
    return PS_OPT_OK;
}

/* The error for a ps_subopts_read result. */
static xd_stanza_t *
ps_subopts_err(ps_op_t *o, ps_optres_t res, const char *why)
{
    if (res == PS_OPT_COLLECTIONS)
        return ps_err(o, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported", "collections", why);
    return ps_err(o, XD_COND_BAD_REQUEST, "invalid-options", NULL, why);
}

/* Adds the pubsub#subscribe_options form (type "form" or "result") with
 * opt to parent. */
static void
ps_subopts_form(xd_el_t *parent, const char *type, const ps_subopt_t *opt)
{
    bool form = !strcmp(type, "form");
    xd_el_t *x = xd_el_add_child(parent, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", type);
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", "FORM_TYPE");
    xd_el_set_attr(f, "type", "hidden");
    xd_el_add_text(xd_el_add_child(f, "value", NULL), PSE_NS_SUBOPT);
    f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", "pubsub#deliver");
    xd_el_set_attr(f, "type", "boolean");
    if (form)
        xd_el_set_attr(f, "label", "Enable delivery?");
    xd_el_add_text(xd_el_add_child(f, "value", NULL), opt->deliver ? "1" : "0");
    f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", "pubsub#show-values");
    xd_el_set_attr(f, "type", "list-multi");
    if (form) {
        static const char *const labels[] = { "Away", "Want to Chat", "Do Not Disturb",
                                              "Available", "Extended Away" };
        xd_el_set_attr(f, "label",
                       "Deliver only while my presence is one of these (none: always)");
        for (unsigned i = 0; ps_show_names[i]; i++) {
            xd_el_t *op = xd_el_add_child(f, "option", NULL);
            xd_el_set_attr(op, "label", labels[i]);
            xd_el_add_text(xd_el_add_child(op, "value", NULL), ps_show_names[i]);
        }
    }
    for (unsigned i = 0; ps_show_names[i]; i++)
        if (opt->shows & (1u << i))
            xd_el_add_text(xd_el_add_child(f, "value", NULL), ps_show_names[i]);
}

/* How many subscriptions (pending ones only: `pending`) the requester's
 * account has to the node: of its bare JID and of its full JIDs together
 * (the subscriber names the resource: a bound per JID is none). */
static int
ps_account_subs(ps_op_t *o, const char *node, bool pending, int64_t *n)
{
    char lo[3 * XD_JID_PART_MAX + 4], hi[3 * XD_JID_PART_MAX + 4];
    snprintf(lo, sizeof lo, "%s/", o->from_bare);
    snprintf(hi, sizeof hi, "%s0", o->from_bare); /* '0' follows '/' */
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(o->from_bare),
                        XD_DB_V_CSTR(lo), XD_DB_V_CSTR(hi) };
    *n = 0;
    return xd_db_query_int64(o->c,
                             pending ? "SELECT COUNT(*) FROM pubsub_sub WHERE host = ? AND node = ?"
                                       " AND (jid = ? OR (jid >= ? AND jid < ?))"
                                       " AND state = 'pending'"
                                     : "SELECT COUNT(*) FROM pubsub_sub WHERE host = ? AND node = ?"
                                       " AND (jid = ? OR (jid >= ? AND jid < ?))",
                             k, 5, n);
}

/* How many subscriptions the node has, of every JID and in any state
 * (max_node_subscribers).  The node's operations run one at a time
 * (ps_queue_t), so nothing is added between this count and the insert. */
static int
ps_node_subs(ps_op_t *o, const char *node, int64_t *n)
{
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
    *n = 0;
    return xd_db_query_int64(o->c, "SELECT COUNT(*) FROM pubsub_sub WHERE host = ? AND node = ?",
                             k, 2, n);
}

static xd_stanza_t *
ps_subscribe(ps_op_t *o, const xd_el_t *pubsub, const xd_el_t *op)
{
    const char *node = ps_node_attr(op);
    if (!node)
        return ps_err(o, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    char jid[3 * XD_JID_PART_MAX + 3];
    xd_stanza_t *e = ps_own_jid(o, op, jid, sizeof jid);
    if (e)
        return e;
    ps_node_t n;
    if (ps_node_load(o, node, &n) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!n.found)
        return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    char aff[64];
    ps_aff(o, node, &n, o->from_bare, aff);
    if ((e = ps_access(o, node, &n, aff, true)) != NULL)
        return e;
    /* Subscribe and configure (6.3.7): <options/> without node or jid. */
    ps_subopt_t opt = ps_subopt_default;
    const xd_el_t *oe = xd_el_child(pubsub, "options", XD_NS_PUBSUB);
    const xd_el_t *ox = oe ? xd_el_child(oe, "x", XD_NS_DATA) : NULL;
    if (oe && (xd_el_attr(oe, "node") || xd_el_attr(oe, "jid")))
        return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL,
                      "options with subscribe name neither node nor jid");
    if (ox) {
        const char *why = NULL;
        ps_optres_t res = ps_subopts_read(ox, &opt, &why);
        if (res != PS_OPT_OK)
            return ps_subopts_err(o, res, why);
    }
    ps_subs_t mine = { 0 };
    int64_t acct = 0, acct_pending = 0, all = 0;
    if (ps_subs_load(o, node, jid, &mine) != 0 ||
        ps_account_subs(o, node, false, &acct) != 0 ||
        ps_account_subs(o, node, true, &acct_pending) != 0 || ps_node_subs(o, node, &all) != 0) {
        ps_subs_free(&mine);
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    /* One request waits for the owner per account, whatever the resource. */
    if (acct_pending > 0) {
        ps_subs_free(&mine);
        return ps_err(o, XD_COND_NOT_AUTHORIZED, "pending-subscription", NULL, NULL);
    }
    char subid[64], newstate[16];
    bool fresh = true;
    if (mine.n > 0 && !o->conf->multi_subscribe) {
        /* One subscription per JID: the one it has (6.1.6), with the options
         * given now. */
        snprintf(subid, sizeof subid, "%s", mine.s[0].subid);
        snprintf(newstate, sizeof newstate, "%s", mine.s[0].state);
        if (!ox)
            opt = mine.s[0].opt;
        fresh = false;
    } else if (acct >= o->conf->max_subscriptions) {
        ps_subs_free(&mine);
        return ps_err(o, XD_COND_POLICY_VIOLATION, "too-many-subscriptions", NULL, NULL);
    } else if (all >= o->conf->max_node_subscribers) {
        ps_subs_free(&mine);
        return ps_err(o, XD_COND_POLICY_VIOLATION, "too-many-subscriptions", NULL,
                      "the node has as many subscriptions as it may have "
                      "(max_node_subscribers)");
    } else {
        /* Approved once, approved for the next ones too. */
        bool approve = !strcmp(n.cfg.access, "authorize") && strcmp(aff, "owner") != 0 &&
                       strcmp(aff, "publisher") != 0 && strcmp(aff, "member") != 0 &&
                       !ps_subs_in(&mine, "subscribed");
        snprintf(newstate, sizeof newstate, "%s", approve ? "pending" : "subscribed");
        if (mod_random_id(subid) != 0) {
            ps_subs_free(&mine);
            return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        }
    }
    ps_subs_free(&mine);
    int rc = fresh ? ps_sub_insert(o, node, jid, subid, newstate, &opt)
                   : ps_sub_set_opts(o, node, jid, subid, &opt);
    if (rc != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (fresh && !strcmp(newstate, "pending"))
        ps_ask_owner(o, node, &n, jid);
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB, &ps);
    ps_sub_el(ps, node, jid, subid, newstate);
    if (ox)
        ps_subopts_form(xd_el_add_child(ps, "options", NULL), "result", &opt);
    xd_stanza_t *reply = xd_el_freeze(res);
    if (fresh && !strcmp(newstate, "subscribed") && strcmp(n.cfg.send_last, "never") != 0 &&
        n.cfg.persist && ps_sub_takes(o, jid, &opt))
        ps_send_last(o, node, &n.cfg, jid, subid);
    return reply;
}

/* The JID named by an unsubscribe or options request, which must be the
 * requester's (else forbidden, XEP-0060 6.2.3.3, 6.3.4.1), and the one of
 * its subscriptions to the node the request names (ps_sub_pick) in *sub. */
static xd_stanza_t *
ps_sub_request(ps_op_t *o, const xd_el_t *op, char *jid, size_t cap, ps_sub_t *sub)
{
    const char *node = ps_node_attr(op);
    if (!node)
        return ps_err(o, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    if (!xd_el_attr(op, "jid") || !*xd_el_attr(op, "jid"))
        return ps_err(o, XD_COND_BAD_REQUEST, "jid-required", NULL, NULL);
    xd_stanza_t *e = ps_own_jid(o, op, jid, cap);
    if (e) {
        xd_stanza_unref(e);
        return ps_err(o, XD_COND_FORBIDDEN, NULL, NULL, NULL);
    }
    ps_node_t n;
    if (ps_node_load(o, node, &n) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!n.found)
        return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    ps_subs_t mine = { 0 };
    if (ps_subs_load(o, node, jid, &mine) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    const ps_sub_t *picked = NULL;
    if ((e = ps_sub_pick(o, op, &mine, &picked)) == NULL)
        *sub = *picked;
    ps_subs_free(&mine);
    return e;
}

static xd_stanza_t *
ps_unsubscribe(ps_op_t *o, const xd_el_t *op)
{
    char jid[3 * XD_JID_PART_MAX + 3];
    ps_sub_t sub;
    xd_stanza_t *e = ps_sub_request(o, op, jid, sizeof jid, &sub);
    if (e)
        return e;
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(ps_node_attr(op)), XD_DB_V_CSTR(jid),
                        XD_DB_V_CSTR(sub.subid) };
    if (ps_sql(o, "DELETE FROM pubsub_sub WHERE host = ? AND node = ? AND jid = ? AND subid = ?",
               k, 4) != 0)
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    return xd_iq_result(o->iq);
}

static xd_stanza_t *
ps_options(ps_op_t *o, const xd_el_t *op, bool set)
{
    char jid[3 * XD_JID_PART_MAX + 3];
    ps_sub_t cur;
    xd_stanza_t *e = ps_sub_request(o, op, jid, sizeof jid, &cur);
    if (e)
        return e;
    const char *node = ps_node_attr(op);
    if (set) {
        const xd_el_t *x = xd_el_child(op, "x", XD_NS_DATA);
        if (!x)
            return ps_err(o, XD_COND_BAD_REQUEST, "invalid-options", NULL,
                          "a subscribe_options form is needed");
        const char *why = NULL;
        ps_optres_t res = ps_subopts_read(x, &cur.opt, &why);
        if (res != PS_OPT_OK)
            return ps_subopts_err(o, res, why);
        if (ps_sub_set_opts(o, node, jid, cur.subid, &cur.opt) != 0)
            return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        return xd_iq_result(o->iq);
    }
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB, &ps);
    xd_el_t *oe = xd_el_add_child(ps, "options", NULL);
    xd_el_set_attr(oe, "node", node);
    xd_el_set_attr(oe, "jid", jid);
    xd_el_set_attr(oe, "subid", cur.subid);
    ps_subopts_form(oe, "form", &cur.opt);
    return xd_el_freeze(res);
}

/* The default subscription options (6.4), of the service or of a node. */
static xd_stanza_t *
ps_sub_default(ps_op_t *o, const xd_el_t *op)
{
    const char *node = ps_node_attr(op);
    if (node) {
        ps_node_t n;
        if (ps_node_load(o, node, &n) != 0)
            return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        if (!n.found)
            return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    }
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB, &ps);
    xd_el_t *d = xd_el_add_child(ps, "default", NULL);
    if (node)
        xd_el_set_attr(d, "node", node);
    ps_subopts_form(d, "result", &ps_subopt_default);
    return xd_el_freeze(res);
}

/* ---- lists: the user's and the owner's ---------------------------------------------------------- */

typedef struct ps_rows {
    xd_el_t *parent;
    const char *kind;   /* "subscription" or "affiliation" */
    bool with_node;     /* node attribute from column 0 */
    size_t n;
} ps_rows_t;

/* Columns: node, jid, value[, subid]. */
static int
ps_list_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_rows_t *r = arg;
    if (ncols < 3)
        return 0;
    char node[PS_NODE_MAX + 1], jid[3 * XD_JID_PART_MAX + 3], val[64], subid[64] = "";
    snprintf(node, sizeof node, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    snprintf(jid, sizeof jid, "%.*s", (int)cols[1].s.len, cols[1].s.p);
    snprintf(val, sizeof val, "%.*s", (int)cols[2].s.len, cols[2].s.p);
    if (ncols > 3)
        snprintf(subid, sizeof subid, "%.*s", (int)cols[3].s.len, cols[3].s.p);
    xd_el_t *e = xd_el_add_child(r->parent, r->kind, NULL);
    if (r->with_node)
        xd_el_set_attr(e, "node", node);
    xd_el_set_attr(e, "jid", jid);
    if (*subid)
        xd_el_set_attr(e, "subid", subid);
    xd_el_set_attr(e, !strcmp(r->kind, "subscription") ? "subscription" : "affiliation", val);
    r->n++;
    return 0;
}

/* <subscriptions/> or <affiliations/> of the requester (XEP-0060 5.6, 5.7). */
static xd_stanza_t *
ps_user_list(ps_op_t *o, const xd_el_t *op, bool subs)
{
    const char *node = ps_node_attr(op);
    xd_el_t *ps;
    xd_el_t *res = ps_result(o, XD_NS_PUBSUB, &ps);
    xd_el_t *le = xd_el_add_child(ps, subs ? "subscriptions" : "affiliations", NULL);
    if (node)
        xd_el_set_attr(le, "node", node);
    ps_rows_t r = { .parent = le, .kind = subs ? "subscription" : "affiliation",
                    .with_node = true };
    int rc;
    if (subs) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(o->from_bare),
                            XD_DB_V_CSTR(o->from_full), XD_DB_V_CSTR(node ? node : ""),
                            XD_DB_V_CSTR(node ? node : "") };
        rc = xd_db_query(o->c,
                         "SELECT node, jid, state, subid FROM pubsub_sub WHERE host = ?"
                         " AND (jid = ? OR jid = ?) AND (? = '' OR node = ?)"
                         " ORDER BY node, jid, subid",
                         k, 5, ps_list_row, &r);
    } else {
        xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(o->from_bare),
                            XD_DB_V_CSTR(node ? node : ""), XD_DB_V_CSTR(node ? node : ""),
                            XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(o->from_bare),
                            XD_DB_V_CSTR(node ? node : ""), XD_DB_V_CSTR(node ? node : "") };
        rc = xd_db_query(o->c,
                         "SELECT node, owner, 'owner' FROM pubsub_node WHERE host = ?"
                         " AND owner = ? AND (? = '' OR node = ?)"
                         " UNION ALL SELECT node, jid, aff FROM pubsub_aff WHERE host = ?"
                         " AND jid = ? AND (? = '' OR node = ?) ORDER BY 1",
                         k, 8, ps_list_row, &r);
    }
    if (rc != 0) {
        xd_el_free(res);
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    return xd_el_freeze(res);
}

static const char *const ps_affs[] = { "owner", "publisher", "publish-only", "member", "none",
                                       "outcast", NULL };

static bool
ps_listed(const char *v, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(v, list[i]))
            return true;
    return false;
}

/* An owner sets subscription sub of jid to state v ("none" deletes it; a
 * sub just made, without a state, is only told); the subscriber is told of
 * a change (8.8.2.1), with the subid (6.1.6). */
static void
ps_owner_set_sub(ps_op_t *o, const char *node, const char *jid, const ps_sub_t *sub,
                 const char *v)
{
    xd_db_val_t ks[] = { XD_DB_V_CSTR(v), XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node),
                         XD_DB_V_CSTR(jid), XD_DB_V_CSTR(sub->subid) };
    if (!strcmp(v, "none"))
        ps_sql(o, "DELETE FROM pubsub_sub WHERE host = ? AND node = ? AND jid = ? AND subid = ?",
               ks + 1, 4);
    else if (*sub->state)
        ps_sql(o, "UPDATE pubsub_sub SET state = ? WHERE host = ? AND node = ? AND jid = ?"
                  " AND subid = ?",
               ks, 5);
    if (strcmp(sub->state, v) != 0) {
        xd_el_t *ev = xd_el_new("event", XD_NS_PUBSUB_EVENT);
        ps_sub_el(ev, node, jid, sub->subid, v);
        ps_send(o, jid, NULL, ev);
        xd_el_free(ev);
    }
}

/* The JID of an owner's <subscription/> or <affiliation/>, normalised, or
 * false when it has none or it does not parse. */
static bool
ps_entry_jid(const xd_el_t *c, char *out, size_t cap)
{
    const char *j = xd_el_attr(c, "jid");
    xd_jid_t *jid = NULL;
    if (!j || xd_jid_parse(xd_str_c(j), &jid) != 0)
        return false;
    snprintf(out, cap, "%s", xd_jid_full_str(jid).p);
    xd_jid_unref(jid);
    return true;
}

/* An invalid entry c of jid j as it is (8.8.2.4, 8.9.2.4), into list: the
 * affiliation, or each subscription (of c's subid, if it names one), or
 * subscription='none'. */
static void
ps_entry_original(ps_op_t *o, const char *node, const ps_node_t *n, const xd_el_t *c,
                  const char *j, xd_el_t *list)
{
    if (!strcmp(xd_el_name(c), "affiliation")) {
        char aff[64];
        ps_aff(o, node, n, j, aff);
        xd_el_t *e = xd_el_add_child(list, "affiliation", NULL);
        xd_el_set_attr(e, "jid", j);
        xd_el_set_attr(e, "affiliation", aff);
        return;
    }
    ps_subs_t mine = { 0 };
    ps_subs_load(o, node, j, &mine);
    const char *given = xd_el_attr(c, "subid");
    size_t hit = 0;
    for (size_t i = 0; i < mine.n; i++)
        if (!given || !*given || !strcmp(mine.s[i].subid, given)) {
            xd_el_t *e = xd_el_add_child(list, "subscription", NULL);
            xd_el_set_attr(e, "jid", j);
            xd_el_set_attr(e, "subid", mine.s[i].subid);
            xd_el_set_attr(e, "subscription", mine.s[i].state);
            hit++;
        }
    ps_subs_free(&mine);
    if (!hit) {
        xd_el_t *e = xd_el_add_child(list, "subscription", NULL);
        xd_el_set_attr(e, "jid", j);
        xd_el_set_attr(e, "subscription", "none");
    }
}

/* Entry c of jid j is not made: it comes back as it is in the error's
 * list, *bad, made on the first refusal. */
static void
ps_entry_refused(ps_op_t *o, const char *node, const ps_node_t *n, const xd_el_t *c,
                 const char *j, xd_el_t **bad)
{
    bool subs = !strcmp(xd_el_name(c), "subscription");
    if (!*bad) {
        *bad = xd_el_new("pubsub", XD_NS_PUBSUB_OWNER);
        xd_el_set_attr(xd_el_add_child(*bad, subs ? "subscriptions" : "affiliations", NULL),
                       "node", node);
    }
    ps_entry_original(o, node, n, c, j, xd_el_first_child_mut(*bad));
}

/* The owner's <subscriptions/> / <affiliations/>, get and set (8.8, 8.9). */
static xd_stanza_t *
ps_owner_list(ps_op_t *o, const xd_el_t *op, bool subs, bool set)
{
    const char *node = ps_node_attr(op);
    ps_node_t n;
    xd_stanza_t *e = ps_owner_node(o, node, &n);
    if (e)
        return e;
    if (!set) {
        xd_el_t *ps;
        xd_el_t *res = ps_result(o, XD_NS_PUBSUB_OWNER, &ps);
        xd_el_t *le = xd_el_add_child(ps, subs ? "subscriptions" : "affiliations", NULL);
        xd_el_set_attr(le, "node", node);
        ps_rows_t r = { .parent = le, .kind = subs ? "subscription" : "affiliation" };
        int rc;
        if (subs) {
            xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
            rc = xd_db_query(o->c,
                             "SELECT node, jid, state, subid FROM pubsub_sub"
                             " WHERE host = ? AND node = ? ORDER BY jid, subid",
                             k, 2, ps_list_row, &r);
        } else {
            xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(o->svc),
                                XD_DB_V_CSTR(node) };
            rc = xd_db_query(o->c,
                             "SELECT node, owner, 'owner' FROM pubsub_node WHERE host = ?"
                             " AND node = ? UNION ALL SELECT node, jid, aff FROM pubsub_aff"
                             " WHERE host = ? AND node = ? ORDER BY 2",
                             k, 4, ps_list_row, &r);
        }
        if (rc != 0) {
            xd_el_free(res);
            return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        }
        return xd_el_freeze(res);
    }
    /* A malformed entry (no jid or value, a JID that does not parse), or
     * one JID twice among affiliations (8.9.2.4: MUST be bad-request):
     * nothing is changed. */
    const char *kind = subs ? "subscription" : "affiliation";
    for (const xd_el_t *c = xd_el_first_child(op); c; c = xd_el_next(c)) {
        if (!xd_el_is(c, kind, XD_NS_PUBSUB_OWNER))
            continue;
        char j[3 * XD_JID_PART_MAX + 3];
        if (!xd_el_attr(c, kind) || !ps_entry_jid(c, j, sizeof j))
            return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "a jid and a value");
        for (const xd_el_t *d = subs ? NULL : xd_el_next(c); d; d = xd_el_next(d)) {
            char dj[3 * XD_JID_PART_MAX + 3];
            if (xd_el_is(d, kind, XD_NS_PUBSUB_OWNER) && ps_entry_jid(d, dj, sizeof dj) &&
                !strcmp(j, dj))
                return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "one affiliation per JID");
        }
    }
    /* 8.8.2.4, 8.9.2.4: the valid entries are made; the invalid ones come
     * back in the error with their original values.  A new subscription
     * past max_node_subscribers is one of those (`full`); `all` counts the
     * node's subscriptions once one is to be made (-1: not yet read). */
    xd_el_t *bad = NULL;
    int64_t all = -1;
    bool full = false;
    for (const xd_el_t *c = xd_el_first_child(op); c; c = xd_el_next(c)) {
        if (!xd_el_is(c, kind, XD_NS_PUBSUB_OWNER))
            continue;
        char j[3 * XD_JID_PART_MAX + 3];
        if (!ps_entry_jid(c, j, sizeof j))
            continue;
        const char *v = xd_el_attr(c, kind);
        static const char *const states[] = { "subscribed", "none", "pending", NULL };
        if (!ps_listed(v, subs ? states : ps_affs) || (!subs && strchr(j, '/')) ||
            (!subs && !strcmp(j, n.owner) && strcmp(v, "owner") != 0)) {
            ps_entry_refused(o, node, &n, c, j, &bad);
            continue;
        }
        xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(j) };
        if (subs) {
            /* With a subid: that subscription (a subid the JID does not
             * have makes a new subscription: the service names it);
             * without: every subscription of the JID, or a new one. */
            ps_subs_t mine = { 0 };
            ps_subs_load(o, node, j, &mine);
            const char *given = xd_el_attr(c, "subid");
            size_t hit = 0;
            for (size_t i = 0; i < mine.n; i++)
                if (!given || !*given || !strcmp(mine.s[i].subid, given)) {
                    ps_owner_set_sub(o, node, j, &mine.s[i], v);
                    hit++;
                }
            ps_subs_free(&mine);
            if (hit && all >= 0 && !strcmp(v, "none"))
                all -= (int64_t)hit;
            if (hit || !strcmp(v, "none"))
                continue;
            int rc = all < 0 ? ps_node_subs(o, node, &all) : 0;
            if (rc != 0) {
                if (o->dberr == 0)
                    o->dberr = rc < 0 ? rc : -rc;
                break;
            }
            if (all >= o->conf->max_node_subscribers) {
                ps_entry_refused(o, node, &n, c, j, &bad);
                full = true;
                continue;
            }
            ps_sub_t fresh = { .opt = ps_subopt_default };
            if (mod_random_id(fresh.subid) == 0 &&
                ps_sub_insert(o, node, j, fresh.subid, v, &fresh.opt) == 0) {
                ps_owner_set_sub(o, node, j, &fresh, v);
                all++;
            }
        } else if (!strcmp(j, n.owner)) {
            continue;
        } else {
            ps_sql(o, "DELETE FROM pubsub_aff WHERE host = ? AND node = ? AND jid = ?", k, 3);
            if (strcmp(v, "none") != 0) {
                xd_db_val_t row[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(j),
                                      XD_DB_V_CSTR(v) };
                ps_sql(o, "INSERT INTO pubsub_aff (host, node, jid, aff) VALUES (?, ?, ?, ?)",
                       row, 4);
            }
            if (!strcmp(v, "outcast")) {
                /* An outcast loses its subscriptions, of the bare JID and its resources. */
                size_t jl = strlen(j);
                char lo[3 * XD_JID_PART_MAX + 4], hi[3 * XD_JID_PART_MAX + 4];
                snprintf(lo, sizeof lo, "%s/", j);
                snprintf(hi, sizeof hi, "%s0", j); /* '0' follows '/' */
                (void)jl;
                xd_db_val_t k2[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(j),
                                     XD_DB_V_CSTR(lo), XD_DB_V_CSTR(hi) };
                ps_sql(o,
                       "DELETE FROM pubsub_sub WHERE host = ? AND node = ? AND (jid = ?"
                       " OR (jid >= ? AND jid < ?))",
                       k2, 5);
            }
        }
    }
    if (o->dberr) {
        xd_el_free(bad);
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    if (bad) {
        xd_el_t *er = xd_stanza_thaw(
            ps_err(o, XD_COND_NOT_ACCEPTABLE, NULL, NULL,
                   full ? "the node has as many subscriptions as it may have "
                          "(max_node_subscribers)"
                        : NULL));
        xd_el_append(er, bad);
        return xd_el_freeze(er);
    }
    return xd_iq_result(o->iq);
}

/* A submitted subscription-authorization form from the owner (8.6.2). */
static void
ps_authorization(ps_op_t *o, const xd_el_t *x)
{
    const char *node = NULL, *jid = NULL, *allow = NULL, *ftype = NULL;
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        const char *var = xd_el_attr(f, "var");
        const char *v = xd_el_child_text(f, "value", NULL);
        if (!var || !v)
            continue;
        if (!strcmp(var, "FORM_TYPE"))
            ftype = v;
        else if (!strcmp(var, "pubsub#node"))
            node = v;
        else if (!strcmp(var, "pubsub#subscriber_jid"))
            jid = v;
        else if (!strcmp(var, "pubsub#allow"))
            allow = v;
    }
    if (!ftype || strcmp(ftype, PSE_NS_SUBAUTH) != 0 || !node || !jid || !allow)
        return;
    ps_node_t n;
    if (ps_node_load(o, node, &n) != 0 || !n.found)
        return;
    char aff[64];
    ps_aff(o, node, &n, o->from_bare, aff);
    if (strcmp(aff, "owner") != 0)
        return;
    ps_subs_t mine = { 0 };
    ps_subs_load(o, node, jid, &mine);
    const ps_sub_t *p = ps_subs_in(&mine, "pending");
    if (!p) {
        ps_subs_free(&mine);
        return;
    }
    ps_sub_t sub = *p;
    ps_subs_free(&mine);
    bool yes = pse_bool(allow) == 1;
    xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node), XD_DB_V_CSTR(jid),
                        XD_DB_V_CSTR(sub.subid) };
    if (yes)
        ps_sql(o, "UPDATE pubsub_sub SET state = 'subscribed' WHERE host = ? AND node = ?"
                  " AND jid = ? AND subid = ?",
               k, 4);
    else
        ps_sql(o, "DELETE FROM pubsub_sub WHERE host = ? AND node = ? AND jid = ? AND subid = ?",
               k, 4);
    xd_el_t *ev = xd_el_new("event", XD_NS_PUBSUB_EVENT);
    ps_sub_el(ev, node, jid, sub.subid, yes ? "subscribed" : "none");
    ps_send(o, jid, NULL, ev);
    xd_el_free(ev);
    if (yes && strcmp(n.cfg.send_last, "never") != 0 && n.cfg.persist &&
        ps_sub_takes(o, jid, &sub.opt))
        ps_send_last(o, node, &n.cfg, jid, sub.subid);
}

/* ---- disco -------------------------------------------------------------------------------------- */

static const char *const ps_features[] = {
    XD_NS_PUBSUB,
    XD_NS_PUBSUB "#create-nodes",       XD_NS_PUBSUB "#create-and-configure",
    XD_NS_PUBSUB "#instant-nodes",      XD_NS_PUBSUB "#config-node",
    XD_NS_PUBSUB "#retrieve-default",   XD_NS_PUBSUB "#delete-nodes",
    XD_NS_PUBSUB "#purge-nodes",        XD_NS_PUBSUB "#publish",
    XD_NS_PUBSUB "#publish-options",    XD_NS_PUBSUB "#item-ids",
    XD_NS_PUBSUB "#retract-items",      XD_NS_PUBSUB "#delete-items",
    XD_NS_PUBSUB "#retrieve-items",
    XD_NS_PUBSUB "#persistent-items",   XD_NS_PUBSUB "#subscribe",
    XD_NS_PUBSUB "#subscription-options", XD_NS_PUBSUB "#retrieve-subscriptions",
    XD_NS_PUBSUB "#retrieve-affiliations", XD_NS_PUBSUB "#manage-subscriptions",
    XD_NS_PUBSUB "#modify-affiliations", XD_NS_PUBSUB "#member-affiliation",
    XD_NS_PUBSUB "#outcast-affiliation", XD_NS_PUBSUB "#publisher-affiliation",
    XD_NS_PUBSUB "#publish-only-affiliation", XD_NS_PUBSUB "#access-open",
    XD_NS_PUBSUB "#access-presence",    XD_NS_PUBSUB "#access-roster",
    XD_NS_PUBSUB "#access-authorize",   XD_NS_PUBSUB "#access-whitelist",
    XD_NS_PUBSUB "#last-published",
    XD_NS_PUBSUB "#meta-data",          XD_NS_PUBSUB "#config-node-max",
    XD_NS_PUBSUB "#item-expire",        XD_NS_PUBSUB "#retrieve-default-sub",
    XD_NS_PUBSUB "#presence-notifications", XD_NS_PUBSUB "#subscription-notifications",
    NULL,
};

static int
ps_disco_node_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_op_t *o = ((void **)arg)[0];
    xd_el_t *q = ((void **)arg)[1];
    if (ncols < 3)
        return 0;
    char node[PS_NODE_MAX + 1];
    snprintf(node, sizeof node, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    pse_cfg_t cfg;
    pse_cfg_default(&cfg, true);
    pse_cfg_decode(cols[2].s.p, cols[2].s.len, &cfg);
    /* Whitelist and authorize nodes are listed to their owner only. */
    bool hidden = (!strcmp(cfg.access, "whitelist") || !strcmp(cfg.access, "authorize")) &&
                  ((int)cols[1].s.len != (int)strlen(o->from_bare) ||
                   memcmp(cols[1].s.p, o->from_bare, cols[1].s.len) != 0);
    if (hidden)
        return 0;
    xd_el_t *it = xd_el_add_child(q, "item", NULL);
    xd_el_set_attr(it, "jid", o->svc);
    xd_el_set_attr(it, "node", node);
    if (*cfg.title)
        xd_el_set_attr(it, "name", cfg.title);
    return 0;
}

static int
ps_disco_item_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_op_t *o = ((void **)arg)[0];
    xd_el_t *q = ((void **)arg)[1];
    if (ncols < 1)
        return 0;
    char id[PS_ID_MAX + 1];
    snprintf(id, sizeof id, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    xd_el_t *it = xd_el_add_child(q, "item", NULL);
    xd_el_set_attr(it, "jid", o->svc);
    xd_el_set_attr(it, "name", id);
    return 0;
}

static xd_stanza_t *
ps_disco(ps_op_t *o, const xd_el_t *q, bool info)
{
    const ps_conf_t *conf = o->conf;
    const char *node = ps_node_attr(q);
    ps_node_t n = { 0 };
    if (node) {
        if (ps_node_load(o, node, &n) != 0)
            return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        if (!n.found)
            return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    }
    xd_el_t *res = xd_iq_result_builder(o->iq);
    xd_el_t *r = xd_el_add_child(res, "query", info ? XD_NS_DISCO_INFO : XD_NS_DISCO_ITEMS);
    if (node)
        xd_el_set_attr(r, "node", node);
    if (info) {
        xd_el_t *id = xd_el_add_child(r, "identity", NULL);
        xd_el_set_attr(id, "category", "pubsub");
        xd_el_set_attr(id, "type", node ? "leaf" : "service");
        if (!node)
            xd_el_set_attr(id, "name", conf->name);
        static const char *const base[] = { XD_NS_DISCO_INFO, XD_NS_DISCO_ITEMS, NULL };
        for (size_t i = 0; base[i]; i++)
            xd_el_set_attr(xd_el_add_child(r, "feature", NULL), "var", base[i]);
        if (!node) {
            for (size_t i = 0; ps_features[i]; i++)
                xd_el_set_attr(xd_el_add_child(r, "feature", NULL), "var", ps_features[i]);
            if (conf->multi_subscribe)
                xd_el_set_attr(xd_el_add_child(r, "feature", NULL), "var",
                               XD_NS_PUBSUB "#multi-subscribe");
        } else {
            /* The meta-data (XEP-0060 5.4) as the node's access model lets
             * the requester see it: to one that may not read the node, a
             * whitelist node does not exist (as in disco#items) and others
             * show their access model only; the roster groups (the owner's
             * private roster data) go to owners only. */
            char aff[64];
            ps_aff(o, node, &n, o->from_bare, aff);
            bool owner = !strcmp(aff, "owner");
            xd_stanza_t *denied = owner ? NULL : ps_access(o, node, &n, aff, false);
            pse_limits_t lim = o->lim;
            if (!owner)
                lim.fields &= ~(unsigned)PSE_F_GROUPS;
            if (denied) {
                xd_stanza_unref(denied);
                if (!strcmp(n.cfg.access, "whitelist") || !strcmp(aff, "outcast")) {
                    xd_el_free(res);
                    return ps_err(o, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
                }
                lim.fields = PSE_F_ACCESS;
            }
            xd_el_set_attr(xd_el_add_child(r, "feature", NULL), "var", XD_NS_PUBSUB);
            xd_el_t *x = pse_cfg_form(r, "result", PSE_NS_META, &n.cfg, &lim);
            if (!denied) {
                xd_el_t *f = xd_el_add_child(x, "field", NULL);
                xd_el_set_attr(f, "var", "pubsub#owner");
                xd_el_set_attr(f, "type", "jid-multi");
                xd_el_add_text(xd_el_add_child(f, "value", NULL), n.owner);
            }
        }
        return xd_el_freeze(res);
    }
    void *arg[2] = { o, r };
    int rc;
    if (!node) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc) };
        rc = xd_db_query(o->c,
                         "SELECT node, owner, config FROM pubsub_node WHERE host = ? ORDER BY node",
                         k, 1, ps_disco_node_row, arg);
    } else {
        char aff[64];
        ps_aff(o, node, &n, o->from_bare, aff);
        xd_stanza_t *e = ps_access(o, node, &n, aff, false);
        if (e) {
            xd_el_free(res);
            return e;
        }
        ps_expire(o, node, &n.cfg);
        xd_db_val_t k[] = { XD_DB_V_CSTR(o->svc), XD_DB_V_CSTR(node) };
        rc = xd_db_query(o->c,
                         "SELECT id FROM pubsub_item WHERE host = ? AND node = ? ORDER BY seq DESC",
                         k, 2, ps_disco_item_row, arg);
    }
    if (rc != 0) {
        xd_el_free(res);
        return ps_err(o, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    return xd_el_freeze(res);
}

/* ---- dispatch (on the pool, in a transaction) --------------------------------------------------- */

/* Requests the service knows but does not offer (feature-not-implemented). */
static const char *const ps_unsupported[][2] = {
    { "collection", "collections" },
    { "associate", "collections" },
    { "disassociate", "collections" },
};

static xd_stanza_t *
ps_handle_iq(ps_op_t *o)
{
    const xd_el_t *root = xd_stanza_root(o->iq);
    const char *type = xd_el_attr(root, "type");
    bool set = type && !strcmp(type, "set");
    const xd_el_t *pl = xd_el_first_child(root);
    if (!pl)
        return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, NULL);
    if (!set && xd_el_is(pl, "query", XD_NS_DISCO_INFO))
        return ps_disco(o, pl, true);
    if (!set && xd_el_is(pl, "query", XD_NS_DISCO_ITEMS))
        return ps_disco(o, pl, false);
    if (!set && xd_el_is(pl, "ping", XD_NS_PING))
        return xd_iq_result(o->iq);
    bool owner_ns = xd_el_is(pl, "pubsub", XD_NS_PUBSUB_OWNER);
    if (!owner_ns && !xd_el_is(pl, "pubsub", XD_NS_PUBSUB))
        return ps_err(o, XD_COND_SERVICE_UNAVAILABLE, NULL, NULL, NULL);
    const xd_el_t *op = NULL;
    for (const xd_el_t *c = xd_el_first_child(pl); c; c = xd_el_next(c))
        if (!xd_el_is(c, "publish-options", XD_NS_PUBSUB) &&
            !xd_el_is(c, "configure", XD_NS_PUBSUB) && !xd_el_is(c, "options", XD_NS_PUBSUB)) {
            op = c;
            break;
        }
    if (!op) {
        /* <configure/> and <options/> alone are requests of their own. */
        op = xd_el_first_child(pl);
        if (op && xd_el_is(op, "configure", XD_NS_PUBSUB))
            return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "configure goes with create");
    }
    if (!op)
        return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "expected a pubsub request");
    const char *name = xd_el_name(op);
    const char *ns = xd_el_ns(op) ? xd_el_ns(op) : "";
    if (strcmp(ns, owner_ns ? XD_NS_PUBSUB_OWNER : XD_NS_PUBSUB) != 0)
        return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "unexpected namespace");
    for (size_t i = 0; i < sizeof ps_unsupported / sizeof *ps_unsupported; i++)
        if (!strcmp(name, ps_unsupported[i][0]))
            return ps_err(o, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported",
                          ps_unsupported[i][1], NULL);
    if (owner_ns) {
        if (!strcmp(name, "configure"))
            return ps_configure(o, op, set);
        if (!strcmp(name, "default") && !set)
            return ps_default(o);
        if ((!strcmp(name, "delete") || !strcmp(name, "purge")) && set)
            return ps_delete_purge(o, op, !strcmp(name, "delete"));
        if (!strcmp(name, "subscriptions"))
            return ps_owner_list(o, op, true, set);
        if (!strcmp(name, "affiliations"))
            return ps_owner_list(o, op, false, set);
    } else {
        if (set && !strcmp(name, "create"))
            return ps_create(o, pl, op);
        if (set && !strcmp(name, "publish"))
            return ps_publish(o, pl, op);
        if (set && !strcmp(name, "retract"))
            return ps_retract(o, op);
        if (!set && !strcmp(name, "items"))
            return ps_items(o, op);
        if (set && !strcmp(name, "subscribe"))
            return ps_subscribe(o, pl, op);
        if (set && !strcmp(name, "unsubscribe"))
            return ps_unsubscribe(o, op);
        if (!strcmp(name, "options"))
            return ps_options(o, op, set);
        if (!set && !strcmp(name, "subscriptions"))
            return ps_user_list(o, op, true);
        if (!set && !strcmp(name, "affiliations"))
            return ps_user_list(o, op, false);
        if (!set && !strcmp(name, "default"))
            return ps_sub_default(o, op);
    }
    return ps_err(o, XD_COND_BAD_REQUEST, NULL, NULL, "unknown pubsub request");
}

static void
ps_req_clear_out(ps_req_t *r)
{
    for (size_t i = 0; i < r->nout; i++)
        xd_stanza_unref(r->out[i]);
    r->nout = 0;
    xd_stanza_unref(r->reply);
    r->reply = NULL;
}

static int
ps_tx(xd_db_conn_t *c, void *arg)
{
    ps_op_t *o = arg;
    ps_req_t *r = o->r;
    ps_req_clear_out(r); /* a retried transaction starts over */
    o->c = c;
    o->dberr = 0;
    o->bytes = 0;
    const xd_el_t *root = xd_stanza_root(r->st);
    if (xd_stanza_kind_of(root) == XD_STANZA_IQ) {
        r->reply = ps_handle_iq(o);
    } else {
        const xd_el_t *x = xd_el_child(root, "x", XD_NS_DATA);
        if (x)
            ps_authorization(o, x);
    }
    if (o->dberr) {
        ps_req_clear_out(r);
        return o->dberr;
    }
    return 0;
}

/* xd_db_async work: the operation, in one transaction. */
static int
ps_work(xd_db_conn_t *c, void *arg)
{
    (void)c;
    ps_req_t *r = arg;
    ps_state_t *s = xd_module_state(r->ctx);
    const ps_conf_t *conf = xd_module_opts(r->ctx);
    ps_op_t o = { .r = r, .conf = conf, .lim = ps_limits(conf), .svc = s->domain,
                  .host = xd_module_host(r->ctx), .iq = r->st,
                  .from = xd_stanza_from(r->st) };
    xd_str_t b = xd_jid_bare_str(o.from);
    snprintf(o.from_bare, sizeof o.from_bare, "%.*s", (int)b.len, b.p);
    snprintf(o.from_full, sizeof o.from_full, "%s", xd_jid_full_str(o.from).p);
    int rc = xd_db_tx(xd_module_db(r->ctx), ps_tx, &o);
    if (rc < 0) {
        XD_LOG(NULL, XD_ERROR, "pubsub operation failed", "service=%s node=%s err=%s", o.svc,
               r->node, xd_strerror(rc));
        ps_req_clear_out(r);
        if (xd_stanza_kind_of(xd_stanza_root(r->st)) == XD_STANZA_IQ)
            r->reply = pse_err(r->st, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    xd_input_charge(r->in, o.bytes);
    return 0;
}

/* ---- the per-node queue, on the node's owner worker --------------------------------------------- */

static void ps_start_next(xd_module_ctx_t *ctx, ps_queue_t *q, unsigned w);

static void
ps_req_free(ps_req_t *r)
{
    ps_req_clear_out(r);
    xd_free(r->out);
    xd_stanza_unref(r->st);
    xd_free(r->node);
    xd_free(r);
}

static void
ps_finish(ps_req_t *r)
{
    if (r->reply) {
        xd_route_take(r->reply);
        r->reply = NULL;
    }
    for (size_t i = 0; i < r->nout; i++)
        xd_route_take(r->out[i]);
    r->nout = 0;
    xd_input_release(r->in);
}

static void
ps_done(void *arg, int status)
{
    ps_req_t *r = arg;
    xd_module_ctx_t *ctx = r->ctx;
    ps_state_t *s = xd_module_state(ctx);
    if (status != 0 && !r->reply && xd_stanza_kind_of(xd_stanza_root(r->st)) == XD_STANZA_IQ)
        r->reply = pse_err(r->st, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    ps_finish(r);
    unsigned w = r->worker;
    xd_map_t *m = &s->queues[w];
    ps_queue_t *q = xd_map_get(m, xd_str_c(r->node));
    XD_ASSERT(q && q->head == r);
    q->head = r->next;
    if (!q->head)
        q->tail = NULL;
    q->n--;
    if (q->head)
        ps_start_next(ctx, q, w);
    else
        xd_free(xd_map_del(m, xd_str_c(r->node)));
    ps_req_free(r);
    xd_module_release(ctx);
}

/* Starts the request at the head of q (on worker w). */
static void
ps_start_next(xd_module_ctx_t *ctx, ps_queue_t *q, unsigned w)
{
    for (;;) {
        ps_req_t *r = q->head;
        xd_module_hold(ctx);
        int rc = xd_db_async(xd_module_db(ctx), ps_work, ps_done, r);
        if (rc == 0)
            return;
        xd_module_release(ctx);
        /* The pool refused: this request is answered, the next one tried. */
        if (xd_stanza_kind_of(xd_stanza_root(r->st)) == XD_STANZA_IQ)
            r->reply = pse_err(r->st, rc == XD_EFULL ? XD_COND_RESOURCE_CONSTRAINT
                                                     : XD_COND_SERVICE_UNAVAILABLE,
                               NULL, NULL, NULL);
        ps_finish(r);
        q->head = r->next;
        q->n--;
        if (!q->head) {
            ps_state_t *s = xd_module_state(ctx);
            q->tail = NULL;
            xd_free(xd_map_del(&s->queues[w], xd_str_c(r->node)));
            ps_req_free(r);
            return;
        }
        ps_req_free(r);
    }
}

/* Runs on the node's owner worker: queues r behind the node's running request. */
static void
ps_enqueue(xd_module_ctx_t *ctx, void *arg)
{
    ps_req_t *r = arg;
    ps_state_t *s = xd_module_state(ctx);
    const ps_conf_t *conf = xd_module_opts(ctx);
    xd_map_t *m = &s->queues[r->worker];
    ps_queue_t *q = xd_map_get(m, xd_str_c(r->node));
    if (q && q->n > conf->max_queue) {
        if (xd_stanza_kind_of(xd_stanza_root(r->st)) == XD_STANZA_IQ)
            r->reply = pse_err(r->st, XD_COND_RESOURCE_CONSTRAINT, NULL, NULL,
                               "too many requests for this node");
        ps_finish(r);
        ps_req_free(r);
        return;
    }
    if (!q) {
        q = xd_new(ps_queue_t);
        xd_map_put(m, xd_str_c(r->node), q);
    }
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->n++;
    if (q->head == r)
        ps_start_next(ctx, q, r->worker);
}

/* ---- the route ---------------------------------------------------------------------------------- */

/* The node a stanza is about ("" for the service itself). */
static const char *
ps_key(const xd_el_t *root)
{
    const xd_el_t *pl = xd_el_first_child(root);
    if (xd_stanza_kind_of(root) == XD_STANZA_MESSAGE) {
        const xd_el_t *x = xd_el_child(root, "x", XD_NS_DATA);
        for (const xd_el_t *f = x ? xd_el_first_child(x) : NULL; f; f = xd_el_next(f)) {
            const char *var = xd_el_attr(f, "var");
            if (var && !strcmp(var, "pubsub#node"))
                return xd_el_child_text(f, "value", NULL);
        }
        return "";
    }
    if (!pl)
        return "";
    const char *n = xd_el_attr(pl, "node"); /* disco */
    if (n)
        return n;
    for (const xd_el_t *c = xd_el_first_child(pl); c; c = xd_el_next(c))
        if ((n = xd_el_attr(c, "node")) != NULL)
            return n;
    return "";
}

/* Runs on the routing worker; owns st. */
static void
ps_route(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)arg;
    const xd_jid_t *to = xd_stanza_to(st);
    const xd_jid_t *from = xd_stanza_from(st);
    const xd_el_t *root = xd_stanza_root(st);
    int kind = xd_stanza_kind_of(root);
    const char *type = xd_el_attr(root, "type");
    if (!to || !from || (type && !strcmp(type, "error"))) {
        xd_stanza_unref(st);
        return;
    }
    if (xd_jid_local(to).len || xd_jid_resource(to).len) {
        if (kind == XD_STANZA_IQ && xd_iq_is_request(root))
            xd_route_error(st, XD_COND_ITEM_NOT_FOUND, NULL);
        xd_stanza_unref(st);
        return;
    }
    bool form = kind == XD_STANZA_MESSAGE && xd_el_child(root, "x", XD_NS_DATA);
    if (!(kind == XD_STANZA_IQ && xd_iq_is_request(root)) && !form) {
        xd_stanza_unref(st); /* presences, results, plain messages: nothing to do */
        return;
    }
    const char *key = ps_key(root);
    if (!key || strlen(key) > PS_NODE_MAX) {
        if (kind == XD_STANZA_IQ)
            xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "node name too long");
        xd_stanza_unref(st);
        return;
    }
    ps_req_t *r = xd_new(ps_req_t);
    r->ctx = ctx;
    r->st = st;
    r->node = xd_strdup(key);
    r->worker = xd_owner_of(key);
    r->in = xd_input_hold();
    if (xd_module_post(ctx, r->worker, ps_enqueue, r) != 0) {
        xd_input_release(r->in);
        if (kind == XD_STANZA_IQ)
            xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, "the service is stopping");
        ps_req_free(r);
    }
}

/* ---- last items on presence (on_sub_and_presence) ----------------------------------------------- */

typedef struct ps_avail {
    const char *svc;
    char bare[2 * XD_JID_PART_MAX + 2];
    char full[3 * XD_JID_PART_MAX + 3];
    unsigned show;       /* the session's show (a bit of ps_show_names) */
    xd_input_ref_t in;
} ps_avail_t;

typedef struct ps_subnodes {
    char **nodes;
    pse_cfg_t *cfgs;
    size_t n, cap;
    unsigned show;       /* rows whose pubsub#show-values miss it are skipped */
} ps_subnodes_t;

/* Columns node, config, shows. */
static int
ps_subnode_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    ps_subnodes_t *sn = arg;
    if (ncols < 3)
        return 0;
    unsigned shows = (unsigned)cols[2].i & PS_SHOW_ALL;
    if (shows && !(shows & sn->show))
        return 0;
    if (sn->n == sn->cap) {
        sn->cap = sn->cap ? sn->cap * 2 : 8;
        sn->nodes = xd_realloc(sn->nodes, sn->cap * sizeof *sn->nodes);
        sn->cfgs = xd_realloc(sn->cfgs, sn->cap * sizeof *sn->cfgs);
    }
    sn->nodes[sn->n] = xd_strndup(cols[0].s.p, cols[0].s.len);
    pse_cfg_default(&sn->cfgs[sn->n], true);
    pse_cfg_decode(cols[1].s.p, cols[1].s.len, &sn->cfgs[sn->n]);
    sn->n++;
    return 0;
}

/* The last item of every node the session (or its bare JID) is subscribed
 * to with delivery on, its pubsub#show-values (if any) naming the session's
 * show, and send_last_published_item on_sub_and_presence. */
static void
ps_avail_work(xd_module_ctx_t *ctx, void *arg)
{
    ps_avail_t *a = arg;
    const ps_conf_t *conf = xd_module_opts(ctx);
    xd_db_conn_t *c = NULL;
    if (xd_db_acquire(xd_module_db(ctx), &c) != 0)
        return;
    ps_subnodes_t sn = { .show = a->show };
    xd_db_val_t k[] = { XD_DB_V_CSTR(a->svc), XD_DB_V_CSTR(a->svc), XD_DB_V_CSTR(a->bare),
                        XD_DB_V_CSTR(a->full) };
    int rc = xd_db_query(c,
                         "SELECT n.node, n.config, s.shows FROM pubsub_node n, pubsub_sub s"
                         " WHERE n.host = ? AND s.host = ? AND s.node = n.node"
                         " AND (s.jid = ? OR s.jid = ?) AND s.state = 'subscribed'"
                         " AND s.deliver = 1 ORDER BY n.node",
                         k, 4, ps_subnode_row, &sn);
    ps_req_t r = { .ctx = ctx };
    ps_op_t o = { .r = &r, .c = c, .conf = conf, .lim = ps_limits(conf), .svc = a->svc,
                  .host = xd_module_host(ctx) };
    for (size_t i = 0; rc == 0 && i < sn.n; i++) {
        if (strcmp(sn.cfgs[i].send_last, "on_sub_and_presence") != 0 || !sn.cfgs[i].persist)
            continue;
        if (i > 0 && !strcmp(sn.nodes[i], sn.nodes[i - 1]))
            continue; /* once per node, whatever the subscriptions (6.1.6) */
        ps_expire(&o, sn.nodes[i], &sn.cfgs[i]);
        ps_send_last(&o, sn.nodes[i], &sn.cfgs[i], a->full, NULL);
    }
    xd_db_release(c);
    for (size_t i = 0; i < r.nout; i++)
        xd_route_take(r.out[i]);
    xd_free(r.out);
    for (size_t i = 0; i < sn.n; i++)
        xd_free(sn.nodes[i]);
    xd_free(sn.nodes);
    xd_free(sn.cfgs);
    xd_input_charge(a->in, o.bytes);
}

static void
ps_avail_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    xd_free(arg);
}

/* USER_AVAILABLE: a session of the served host came online. */
static int
ps_available(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    if (!ev->presence || !ev->initial)
        return XD_HOOK_OK;
    ps_state_t *s = xd_module_state(ctx);
    ps_avail_t *a = xd_new(ps_avail_t);
    a->svc = s->domain;
    xd_str_t b = xd_jid_bare_str(ev->jid);
    snprintf(a->bare, sizeof a->bare, "%.*s", (int)b.len, b.p);
    snprintf(a->full, sizeof a->full, "%s", xd_jid_full_str(ev->jid).p);
    a->show = ps_show_bit(ev->presence);
    a->in = xd_input_current();
    if (xd_module_submit(ctx, ps_avail_work, ps_avail_done, a) != 0)
        xd_free(a);
    return XD_HOOK_OK;
}

/* ---- account removal ---------------------------------------------------------------------------- */

typedef struct ps_gone {
    const char *svc;
    char bare[2 * XD_JID_PART_MAX + 2];
} ps_gone_t;

/* The account's subscriptions (bare and full JIDs) and affiliations go,
 * and so do the nodes it owns, with their items, subscribers and
 * affiliations. */
static int
ps_gone_tx(xd_db_conn_t *c, void *arg)
{
    ps_gone_t *g = arg;
    char lo[2 * XD_JID_PART_MAX + 3], hi[2 * XD_JID_PART_MAX + 3];
    snprintf(lo, sizeof lo, "%s/", g->bare);
    snprintf(hi, sizeof hi, "%s0", g->bare); /* '0' follows '/' */
    xd_db_val_t k[] = { XD_DB_V_CSTR(g->svc), XD_DB_V_CSTR(g->bare) };
    xd_db_val_t ks[] = { XD_DB_V_CSTR(g->svc), XD_DB_V_CSTR(g->bare), XD_DB_V_CSTR(lo),
                         XD_DB_V_CSTR(hi) };
    static const char *const owned[] = {
        "DELETE FROM pubsub_item WHERE host = ? AND node IN"
        " (SELECT node FROM pubsub_node WHERE host = ? AND owner = ?)",
        "DELETE FROM pubsub_sub WHERE host = ? AND node IN"
        " (SELECT node FROM pubsub_node WHERE host = ? AND owner = ?)",
        "DELETE FROM pubsub_aff WHERE host = ? AND node IN"
        " (SELECT node FROM pubsub_node WHERE host = ? AND owner = ?)",
    };
    xd_db_val_t ko[] = { XD_DB_V_CSTR(g->svc), XD_DB_V_CSTR(g->svc), XD_DB_V_CSTR(g->bare) };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof owned / sizeof *owned; i++)
        rc = xd_db_query(c, owned[i], ko, 3, NULL, NULL);
    if (rc == 0)
        rc = xd_db_query(c, "DELETE FROM pubsub_node WHERE host = ? AND owner = ?", k, 2, NULL,
                         NULL);
    if (rc == 0)
        rc = xd_db_query(c,
                         "DELETE FROM pubsub_sub WHERE host = ? AND (jid = ?"
                         " OR (jid >= ? AND jid < ?))",
                         ks, 4, NULL, NULL);
    if (rc == 0)
        rc = xd_db_query(c, "DELETE FROM pubsub_aff WHERE host = ? AND jid = ?", k, 2, NULL,
                         NULL);
    return rc < 0 ? rc : -rc;
}

static void
ps_gone_work(xd_module_ctx_t *ctx, void *arg)
{
    ps_gone_t *g = arg;
    int rc = xd_db_tx(xd_module_db(ctx), ps_gone_tx, g);
    if (rc != 0)
        XD_LOG(NULL, XD_WARN, "pubsub: removed account's data kept", "service=%s jid=%s err=%s",
               g->svc, g->bare, xd_strerror(rc));
}

static void
ps_gone_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    xd_free(arg);
}

/* REMOVE_USER: of an account of the served host. */
static int
ps_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    ps_state_t *s = xd_module_state(ctx);
    ps_gone_t *g = xd_new(ps_gone_t);
    g->svc = s->domain;
    snprintf(g->bare, sizeof g->bare, "%s@%s", ev->user, ev->host);
    if (xd_module_submit(ctx, ps_gone_work, ps_gone_done, g) != 0)
        xd_free(g);
    return XD_HOOK_OK;
}

/* ---- module ------------------------------------------------------------------------------------- */

static void
ps_queue_free(void *v)
{
    ps_queue_t *q = v;
    while (q && q->head) {
        ps_req_t *r = q->head;
        q->head = r->next;
        xd_input_release(r->in);
        ps_req_free(r);
    }
    xd_free(q);
}

static void
ps_stop(xd_module_ctx_t *ctx)
{
    ps_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    for (size_t i = 0; i < XD_OWNER_MAX_WORKERS; i++)
        xd_map_free(&s->queues[i], ps_queue_free);
    xd_free(s->domain);
    xd_free(s);
}

static int
ps_start(xd_module_ctx_t *ctx)
{
    const ps_conf_t *c = xd_module_opts(ctx);
    if (!xd_module_db(ctx))
        return xd_module_fail(ctx, XD_ECLOSED, "no database");
    char *domain = xd_module_service_domain(ctx, c->host);
    if (!domain)
        return XD_EINVAL;
    ps_state_t *s = xd_new(ps_state_t);
    s->domain = domain;
    xd_module_set_state(ctx, s);
    int rc = xd_module_service(ctx, domain, ps_route, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, ps_removed, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_AVAILABLE, XD_HOOK_PRIO_DEFAULT, ps_available,
                            NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot serve %s: %s", domain, xd_strerror(rc));
    XD_LOG(NULL, XD_INFO, "pubsub service", "domain=%s", domain);
    return 0;
}

static int
ps_reload(xd_module_ctx_t *ctx, const void *old_opts)
{
    const ps_conf_t *o = old_opts, *n = xd_module_opts(ctx);
    if (strcmp(o->host, n->host) != 0)
        return xd_module_fail(ctx, XD_EINVAL,
                              "host cannot change on a reload (%s to %s): restart the server",
                              o->host, n->host);
    return 0;
}

const xd_module_t xd_mod_pubsub = {
    .abi = XD_MODULE_ABI,
    .name = "mod_pubsub",
    .doc = "Publish-subscribe service (XEP-0060) on its own domain: leaf nodes, items, "
           "subscriptions and affiliations, each node's requests on one worker",
    .opts = ps_opts,
    .opts_size = sizeof(ps_conf_t),
    .schemas = ps_schemas,
    .start = ps_start,
    .stop = ps_stop,
    .reload = ps_reload,
};
