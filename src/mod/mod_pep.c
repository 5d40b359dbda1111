/*
 * mod_pep.c — personal eventing (XEP-0163): a pubsub service (XEP-0060
 * subset) on every account's bare JID.
 *
 * On for a host when `mod_pep` is listed under `modules` (it needs
 * mod_roster for the presence access model).
 *
 * Protocol (IQ to an account's bare JID; the handlers run INLINE, copy the
 * request and do the work on the blocking pool with xd_module_submit, which
 * holds the sender's stream until the answer is routed: a publish's result
 * means the item is stored):
 *
 *   pubsub  set <publish node='N'><item [id]>payload</item></publish>
 *               [<publish-options><x type='submit'>…</x></publish-options>]
 *               → the node is created on first publish (auto-create) with
 *                 the default configuration, changed by the publish-options
 *                 (pubsub#access_model, persist_items, max_items incl. "max",
 *                 send_last_published_item); on an existing node a form
 *                 that differs is refused with conflict +
 *                 precondition-not-met (XEP-0060 7.1.5).  An item without
 *                 id gets one.  Owner only.
 *           set <retract node='N' [notify='true']><item id/></retract>
 *           get <items node='N' [max_items]>[<item id/>…]</items>
 *               → by the owner, and by others as the node's access model
 *                 allows: open (anyone), presence (a contact the owner's
 *                 roster has with subscription from or both), roster (a
 *                 contact in one of pubsub#roster_groups_allowed, kept in
 *                 pep_node_group), whitelist (the owner only).
 *           set <create node='N'/>[<configure>form</configure>]
 *               → an empty node (default configuration or the form's);
 *                 owner only (XEP-0060 8.1).
 *           set <subscribe node='N' jid='J'/>, <unsubscribe …/>
 *               → an explicit subscription of the requester's bare JID or
 *                 one of its full JIDs, by the node's access model as for
 *                 items (XEP-0060 6.1, 6.2); stored in pep_sub, bounded by
 *                 max_node_subscribers and max_subscriptions; the last
 *                 item follows the result (send_last_published_item).
 *           get <subscriptions [node]/>, <affiliations [node]/>
 *               → the requester's subscriptions; the owner's affiliations.
 *   pubsub#owner (owner only): <delete node/>, <purge node/>,
 *           <configure node/> (get: the pubsub#node_config form; set: a
 *           submitted one).
 *
 * Notifications (headline messages from the bare JID with a pubsub#event):
 * to every available session of the account, and to the available sessions
 * of the contacts (local accounts of the host that the owner's roster has
 * with subscription from or both; not for whitelist nodes) whose entity
 * capabilities (XEP-0115) include N+notify, and to the explicit
 * subscribers whatever their caps (a bare JID: its available sessions; a
 * full JID: that session; on another server: the JID as subscribed) that
 * the access model still lets see the node.  The subscriptions ride in the
 * roster cache entry (read with the roster, dropped with it by every
 * subscription change), so the +notify path costs one comparison more.
 * The caps' disco#info is asked
 * once per ver (an IQ from the host to the first session that shows it,
 * checked with xd_caps_ver) and kept in a bounded cache (the caps of
 * available sessions pinned, pp_pin).  When a session
 * becomes available, or its caps become known, it gets the last item of
 * every node it may see and wants (send_last_published_item not never):
 * its own account's and those of the accounts it has a subscription to;
 * and, caps or not, those of the host's accounts' nodes it subscribed to
 * explicitly that say on_sub_and_presence.
 * Contacts on other servers: the available presence their sessions send an
 * account (FILTER_PACKET; at most max_remote_resources per account, of
 * which max_remote_per_domain from one server; until their unavailable
 * presence, a bounce of a notification to them (all of the server's for
 * remote-server-not-found/-timeout: the link is down) or
 * remote_resource_ttl without a new presence) is remembered with its caps (asked from the
 * host across s2s like a local session's); they get the account's
 * notifications as local contacts do, and its last items when that
 * presence first arrives (presence and roster models checked on the
 * account's roster, as the presence alone proves no subscription).
 *
 * Storage: tables pep_node, pep_item, pep_node_group and pep_sub (portable
 * SQL).  REMOVE_USER deletes the account's rows and its subscriptions.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "pep_api.h"
#include "pubsub_engine.h"
#include "xmppd/alloc.h"
#include "xmppd/caps.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/owner.h"
#include "xmppd/roster.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

#define PP_NODE_MAX 1024 /* bytes of a node name */
#define PP_ID_MAX 1024   /* bytes of an item id */
#define PP_CAPS_PREFIX "pepcaps-"
#define PP_FILTER_PRIO 12
#define PP_MAX_SESSIONS 64 /* sessions of one account looked at */

static _Atomic(pep_watch_fn) pp_watcher; /* pep_watch_set */

/* ---- options --------------------------------------------------------------------------------- */

typedef struct pp_conf {
    int max_items_limit; /* what "max" means, and the largest max_items */
    int max_nodes;       /* per account */
    size_t max_item_size; /* serialized bytes of one item */
    int caps_cache_size; /* entries in the caps cache */
    int caps_pinned_per_account; /* distinct caps one account's available sessions pin */
    int max_remote_resources; /* remote contacts' sessions remembered per account */
    int roster_cache_size; /* accounts whose roster is kept in memory */
    int max_publishes_in_flight; /* publishes being fanned out before a publisher waits */
    int max_remote_per_domain; /* of max_remote_resources, from one other server */
    uint64_t remote_resource_ttl; /* ms a remote session is remembered after its presence */
    int max_node_subscribers; /* explicit subscriptions of one node */
    int max_subscriptions;    /* explicit subscriptions of one bare JID on the host */
} pp_conf_t;

#define C_ pp_conf_t
static const xd_opt_t pp_opts[] = {
    XD_OPT_INT("max_items_limit", C_, max_items_limit, "1000", 1, 100000,
               "The most items a node keeps: pubsub#max_items \"max\" means this, and a larger "
               "number is refused (not-acceptable in a node configuration, conflict + "
               "precondition-not-met in publish-options)."),
    XD_OPT_INT("max_nodes", C_, max_nodes, "100", 1, 100000,
               "Nodes one account may have; a publish that would create one more is refused "
               "with not-allowed."),
    XD_OPT_SIZE("max_item_size", C_, max_item_size, "256KiB",
                "Largest item, counted as its serialized XML in bytes; a larger one is refused "
                "with not-acceptable + payload-too-big."),
    XD_OPT_INT("caps_cache_size", C_, caps_cache_size, "10000", 1, 10000000,
               "Entity capabilities (XEP-0115 ver strings) whose features the server keeps to "
               "filter notifications by +notify; one more evicts an entry.  Entries that "
               "available sessions announce are pinned (see caps_pinned_per_account) and "
               "count apart: only unpinned ones are evicted."),
    XD_OPT_INT("caps_pinned_per_account", C_, caps_pinned_per_account, "8", 0, 1000,
               "Distinct entity capabilities (ver strings) of one account's available "
               "sessions that the caps cache keeps while those sessions are available, "
               "whatever caps_cache_size, so that fresh caps of others cannot make a session "
               "lose its notifications.  The caps of a session past this many of its "
               "account's are cached but may be evicted."),
    XD_OPT_INT("max_remote_resources", C_, max_remote_resources, "64", 1, 100000,
               "Sessions of contacts on other servers whose available presence an account "
               "remembers (to send them its notifications and last items); the presence of "
               "one more is not remembered, and that session gets no notifications."),
    XD_OPT_INT("max_remote_per_domain", C_, max_remote_per_domain, "16", 1, 100000,
               "Of an account's max_remote_resources, how many one other server's sessions may "
               "take; the presence of one more from that server is not remembered, so that no "
               "single server fills them."),
    XD_OPT_DURATION("remote_resource_ttl", C_, remote_resource_ttl, "1d",
                    "How long a remote session is remembered after its last available presence "
                    "(its unavailable presence, and an error bounced for a notification to it, "
                    "forget it at once; a remote-server-not-found or remote-server-timeout "
                    "bounce forgets all sessions of that server)."),
    XD_OPT_INT("roster_cache_size", C_, roster_cache_size, "10000", 1, 10000000,
               "Accounts whose roster (contacts, subscriptions, groups) a publish finds in "
               "memory instead of the database; a roster change drops the account's entry, "
               "one more account evicts an entry, and an entry is read again after a minute."),
    XD_OPT_INT("max_publishes_in_flight", C_, max_publishes_in_flight, "32", 0, 1000000,
               "Publishes of the host whose notifications are still being sent to the "
               "contacts' sessions (on any worker) before publishers wait.  A publisher's "
               "stream reads its next stanza once the item is stored, while the "
               "notifications go out; with this many publishes in flight, a new publish's "
               "stream reads on only after its own notifications have gone out, so the "
               "queue of notifications stays bounded however fast accounts publish "
               "(back-pressure, nothing refused).  0: every publisher waits for its own "
               "notifications.  The publishes and retractions of the XEP-0411 bookmarks and "
               "XEP-0398 avatar conversions count too, and hold the stream whose private XML "
               "or vCard set made them."),
    XD_OPT_INT("max_node_subscribers", C_, max_node_subscribers, "1000", 1, 1000000,
               "Explicit subscriptions (XEP-0060 6.1 subscribe) one node may have; one more "
               "is refused with policy-violation + too-many-subscriptions."),
    XD_OPT_INT("max_subscriptions", C_, max_subscriptions, "100", 1, 1000000,
               "Explicit subscriptions one bare JID (with all its resources) may hold to the "
               "nodes of the host's accounts; one more is refused with policy-violation + "
               "too-many-subscriptions."),
    XD_OPT_END,
};
#undef C_

/* ---- storage --------------------------------------------------------------------------------- */

static const char *const pp_mig1[] = {
    "CREATE TABLE pep_node ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " node {key} NOT NULL,"
    " access_model {text} NOT NULL,"
    " persist_items {int} NOT NULL,"
    " max_items {int} NOT NULL,"
    " send_last {text} NOT NULL,"
    " created_at {int} NOT NULL,"
    " PRIMARY KEY (host, username, node))",
    "CREATE TABLE pep_item ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " node {key} NOT NULL,"
    " id {key} NOT NULL,"
    " seq {int} NOT NULL,"
    " ts {int} NOT NULL,"
    " xml {text} NOT NULL,"
    " PRIMARY KEY (host, username, node, id))",
    "CREATE INDEX pep_item_seq ON pep_item (host, username, node, seq)",
    NULL,
};

/* The roster groups of nodes with the roster access model. */
static const char *const pp_mig2[] = {
    "CREATE TABLE pep_node_group ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " node {key} NOT NULL,"
    " grp {key} NOT NULL,"
    " PRIMARY KEY (host, username, node, grp))",
    NULL,
};

/* Explicit subscriptions (XEP-0060 6.1): jid as subscribed (bare or full);
 * suser and shost its localpart ("" for none) and domain (the
 * per-subscriber bound, the subscriber's lists, its account's removal). */
static const char *const pp_mig3[] = {
    "CREATE TABLE pep_sub ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " node {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " suser {key} NOT NULL,"
    " shost {key} NOT NULL,"
    " created_at {int} NOT NULL,"
    " PRIMARY KEY (host, username, node, jid))",
    "CREATE INDEX pep_sub_subscriber ON pep_sub (shost, suser)",
    NULL,
};

static const xd_db_migration_t pp_migrations[] = {
    { 1, NULL, pp_mig1 },
    { 2, NULL, pp_mig2 },
    { 3, NULL, pp_mig3 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t pp_schemas[] = {
    { "mod_pep", pp_migrations },
    { NULL, NULL },
};

/* ---- node configuration ---------------------------------------------------------------------- */

/* The engine's configuration (pubsub_engine.h); PEP stores and offers the
 * access model (open, presence, whitelist), persist_items, max_items and
 * send_last_published_item. */
typedef pse_cfg_t pp_cfg_t;
#define PP_MAX PSE_MAX

static pse_limits_t
pp_limits(const pp_conf_t *conf)
{
    return (pse_limits_t){ .access = PSE_AM_OPEN | PSE_AM_PRESENCE | PSE_AM_ROSTER |
                                     PSE_AM_WHITELIST,
                           .fields = PSE_F_ACCESS | PSE_F_PERSIST | PSE_F_MAX | PSE_F_SENDLAST |
                                     PSE_F_GROUPS,
                           .max_items_limit = conf->max_items_limit };
}

static int64_t
pp_cfg_max(const pp_cfg_t *c, const pp_conf_t *conf)
{
    pse_limits_t lim = pp_limits(conf);
    return pse_cfg_keep(c, &lim);
}

/* ---- state: the caps cache ------------------------------------------------------------------- */

typedef struct pp_caps {
    char **features; /* sorted? no: as given (owned) */
    size_t n;
} pp_caps_t;

typedef struct pp_caps_query {
    char *ver;         /* what it asks about */
    char *full;        /* the session asked */
    char *owner;       /* for a remote session: the local account it told (bare), else NULL */
    uint64_t deadline; /* monotonic ms: forgotten after (TICK), the ver asked again */
} pp_caps_query_t;

#define PP_CAPS_TIMEOUT_MS 30000

static uint64_t
pp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct pp_state {
    pthread_mutex_t mu;  /* guards the rest */
    xd_map_t caps;       /* ver → pp_caps_t */
    xd_map_t asking;     /* iq id → pp_caps_query_t */
    xd_map_t asked_ver;  /* ver → (void *)1 while a query is out */
    xd_map_t pin_sess;   /* local full JID → its pinned ver (owned): available sessions */
    xd_map_t pin_ver;    /* ver → (void *)(uintptr_t) sessions pinning it */
    xd_map_t pin_acct;   /* bare JID → pp_pins_t: the distinct vers its sessions pin */
    size_t caps_pinned;  /* entries of caps that are pinned */
    xd_map_t remote;     /* local bare JID → pp_remote_t: available sessions on other servers */
    uint64_t seq;        /* ids */
    xd_map_t rosters;    /* owner bare JID → pp_roster_t: the roster cache */
    uint64_t roster_epoch; /* bumped by every invalidation (a load that saw another is not kept) */
    uint64_t roster_hits, roster_loads, roster_evictions; /* pep_stats */
    _Atomic uint64_t in_flight;    /* publishes whose notifications are being sent */
    _Atomic uint64_t flight_waits; /* publishes whose stream waited for them (pep_stats) */
    _Atomic uint64_t next_due; /* monotonic ms of the first caps query or remote session the
                                * TICK sweep may forget (UINT64_MAX: none); earlier is harmless */
} pp_state_t;

/* Something in s may be forgotten at `due` (s->mu held). */
static void
pp_due(pp_state_t *s, uint64_t due)
{
    if (due < atomic_load(&s->next_due))
        atomic_store(&s->next_due, due);
}

/* An account's roster as a publish needs it (the cache's entries; shared,
 * read only, freed with its last reference). */
typedef struct pp_roster {
    _Atomic unsigned refs;
    uint64_t loaded_ms;  /* read again after PP_ROSTER_TTL_MS */
    pse_contacts_t c;    /* the items in the roster, whatever their subscription */
    xd_jid_t **pj;       /* c.jids parsed (NULL: not a JID) */
    /* The account's explicit subscriptions (pep_sub, by node): read with
     * the roster, dropped with it on any change, so that a publish finds
     * them without a query of its own. */
    char **sub_node, **sub_jid, **sub_bare;
    size_t nsub, subcap;
} pp_roster_t;

/* A change that bypasses ROSTER_CHANGED (an import) shows after this. */
#define PP_ROSTER_TTL_MS 60000

static void
pp_caps_free(void *v)
{
    pp_caps_t *c = v;
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        xd_free(c->features[i]);
    xd_free(c->features);
    xd_free(c);
}

static void
pp_query_free(void *v)
{
    pp_caps_query_t *q = v;
    if (!q)
        return;
    xd_free(q->ver);
    xd_free(q->full);
    xd_free(q->owner);
    xd_free(q);
}

/* The sessions of contacts on other servers that sent an account their
 * available presence (their full JIDs and caps ver, "" without caps). */
typedef struct pp_remote {
    char **full;
    char **ver;
    uint64_t *seen; /* monotonic ms of its last available presence */
    size_t n;
} pp_remote_t;

static void
pp_remote_free(void *v)
{
    pp_remote_t *r = v;
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        xd_free(r->full[i]);
        xd_free(r->ver[i]);
    }
    xd_free(r->full);
    xd_free(r->ver);
    xd_free(r->seen);
    xd_free(r);
}

/* Forgets entry i of rl (the last one takes its place). */
static void
pp_remote_drop(pp_remote_t *rl, size_t i)
{
    xd_free(rl->full[i]);
    xd_free(rl->ver[i]);
    rl->n--;
    rl->full[i] = rl->full[rl->n];
    rl->ver[i] = rl->ver[rl->n];
    rl->seen[i] = rl->seen[rl->n];
}

/* Whether full JID `full` is on domain dom (dom_len bytes). */
static bool
pp_full_on(const char *full, const char *dom, size_t dom_len)
{
    const char *at = strchr(full, '@');
    const char *d = at ? at + 1 : full;
    const char *slash = strchr(d, '/');
    size_t dl = slash ? (size_t)(slash - d) : strlen(d);
    return xd_str_eq((xd_str_t){ d, dl }, (xd_str_t){ dom, dom_len });
}

/* Forgets rl's entries older than ttl (now: monotonic ms); how many. */
static size_t
pp_remote_expire(pp_remote_t *rl, uint64_t now, uint64_t ttl)
{
    size_t gone = 0;
    for (size_t i = 0; i < rl->n;)
        if (now - rl->seen[i] >= ttl) {
            pp_remote_drop(rl, i);
            gone++;
        } else {
            i++;
        }
    return gone;
}

static void
pp_noop_free(void *v)
{
    (void)v;
}

/* The caps ver a presence announces (hash sha-1), into buf; false when none. */
static bool
pp_presence_ver(const xd_stanza_t *pres, char *buf, size_t cap)
{
    if (!pres)
        return false;
    const xd_el_t *c = xd_el_child(xd_stanza_root(pres), "c", XD_NS_CAPS);
    const char *ver = c ? xd_el_attr(c, "ver") : NULL;
    const char *hash = c ? xd_el_attr(c, "hash") : NULL;
    if (!ver || !hash || strcmp(hash, "sha-1") != 0 || strlen(ver) >= cap || !*ver)
        return false;
    snprintf(buf, cap, "%s", ver);
    return true;
}

/* 1 when the caps `ver` include `feature`, 0 when not, -1 when unknown. */
static int
pp_caps_has(pp_state_t *s, const char *ver, const char *feature)
{
    int r = -1;
    pthread_mutex_lock(&s->mu);
    pp_caps_t *c = xd_map_get(&s->caps, xd_str_c(ver));
    if (c) {
        r = 0;
        for (size_t i = 0; i < c->n && !r; i++)
            r = strcmp(c->features[i], feature) == 0;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* ---- the caps of available sessions: pinned ---------------------------------------------------
 *
 * The caps ver an available local session announces is pinned while the
 * session is available: its cache entry is not evicted, so that the fresh
 * caps of one account cannot flush the entries others' notifications need
 * (pp_fan_wants_ver: unknown caps get none).  caps_cache_size bounds the
 * unpinned entries; an account pins at most caps_pinned_per_account
 * distinct vers (its sessions' others are cached unpinned), so the pinned
 * ones are bounded by the available accounts.  s->mu held throughout. */

typedef struct pp_pins {
    char **ver;    /* distinct vers (owned) */
    unsigned *cnt; /* sessions pinning each */
    size_t n;
} pp_pins_t;

static void
pp_pins_free(void *v)
{
    pp_pins_t *p = v;
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        xd_free(p->ver[i]);
    xd_free(p->ver);
    xd_free(p->cnt);
    xd_free(p);
}

/* One session more (d = 1) or fewer (d = -1) pins ver; an entry unpinned
 * while the unpinned ones are over the bound goes. */
static void
pp_pin_ver(pp_state_t *s, const pp_conf_t *conf, const char *ver, int d)
{
    uintptr_t n = (uintptr_t)xd_map_get(&s->pin_ver, xd_str_c(ver));
    bool cached = xd_map_get(&s->caps, xd_str_c(ver)) != NULL;
    if (d > 0) {
        if (n == 0 && cached)
            s->caps_pinned++;
        xd_map_put(&s->pin_ver, xd_str_c(ver), (void *)(n + 1));
        return;
    }
    if (n > 1) {
        xd_map_put(&s->pin_ver, xd_str_c(ver), (void *)(n - 1));
        return;
    }
    xd_map_del(&s->pin_ver, xd_str_c(ver));
    if (!cached)
        return;
    s->caps_pinned--;
    if (xd_map_count(&s->caps) - s->caps_pinned > (size_t)conf->caps_cache_size)
        pp_caps_free(xd_map_del(&s->caps, xd_str_c(ver)));
}

/* Session `full` pins nothing any more. */
static void
pp_unpin(pp_state_t *s, const pp_conf_t *conf, const char *full)
{
    char *ver = xd_map_del(&s->pin_sess, xd_str_c(full));
    if (!ver)
        return;
    const char *slash = strchr(full, '/');
    xd_str_t bare = { full, slash ? (size_t)(slash - full) : strlen(full) };
    pp_pins_t *p = xd_map_get(&s->pin_acct, bare);
    for (size_t i = 0; p && i < p->n; i++)
        if (!strcmp(p->ver[i], ver)) {
            if (--p->cnt[i] == 0) {
                xd_free(p->ver[i]);
                p->n--;
                p->ver[i] = p->ver[p->n];
                p->cnt[i] = p->cnt[p->n];
            }
            break;
        }
    if (p && p->n == 0)
        pp_pins_free(xd_map_del(&s->pin_acct, bare));
    pp_pin_ver(s, conf, ver, -1);
    xd_free(ver);
}

/* Session `full` pins ver (its account's vers permitting). */
static void
pp_pin(pp_state_t *s, const pp_conf_t *conf, const char *full, const char *ver)
{
    const char *old = xd_map_get(&s->pin_sess, xd_str_c(full));
    if (old && !strcmp(old, ver))
        return;
    pp_unpin(s, conf, full);
    const char *slash = strchr(full, '/');
    xd_str_t bare = { full, slash ? (size_t)(slash - full) : strlen(full) };
    pp_pins_t *p = xd_map_get(&s->pin_acct, bare);
    size_t i = 0;
    while (p && i < p->n && strcmp(p->ver[i], ver) != 0)
        i++;
    if (!p || i == p->n) {
        if ((p ? p->n : 0) >= (size_t)conf->caps_pinned_per_account)
            return;
        if (!p) {
            p = xd_new(pp_pins_t);
            xd_map_put(&s->pin_acct, bare, p);
        }
        p->ver = xd_realloc(p->ver, (p->n + 1) * sizeof *p->ver);
        p->cnt = xd_realloc(p->cnt, (p->n + 1) * sizeof *p->cnt);
        p->ver[p->n] = xd_strdup(ver);
        p->cnt[p->n++] = 0;
    }
    p->cnt[i]++;
    xd_map_put(&s->pin_sess, xd_str_c(full), xd_strdup(ver));
    pp_pin_ver(s, conf, ver, 1);
}

/* ---- a request, on the pool ------------------------------------------------------------------ */

typedef struct pp_req {
    xd_module_ctx_t *ctx;
    xd_stanza_t *iq;      /* the request (ref) */
    xd_jid_t *from;       /* ref */
    char host[XD_JID_PART_MAX + 1];
    char user[XD_JID_PART_MAX + 1]; /* the owner's localpart */
    char owner[2 * XD_JID_PART_MAX + 2]; /* the owner's bare JID */
    bool is_owner;        /* from the account itself */
    bool owner_ns;        /* pubsub#owner */
    xd_input_ref_t in;    /* the sender's stream, billed for the fan-out */
    xd_stanza_t *reply;   /* the answer (ref) */
    struct pp_fanjob *jobs; /* those, in order */
} pp_req_t;

typedef struct pp_node_row {
    bool found;
    pp_cfg_t cfg;
} pp_node_row_t;

static int
pp_node_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_node_row_t *r = arg;
    if (ncols < 4)
        return 0;
    r->found = true;
    pse_cfg_default(&r->cfg, false);
    snprintf(r->cfg.access, sizeof r->cfg.access, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    r->cfg.persist = cols[1].i != 0;
    r->cfg.max_items = cols[2].i;
    snprintf(r->cfg.send_last, sizeof r->cfg.send_last, "%.*s", (int)cols[3].s.len,
             cols[3].s.p);
    return 1;
}

static int
pp_group_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_cfg_t *cfg = arg;
    size_t used = strlen(cfg->groups);
    if (ncols >= 1 && used + cols[0].s.len + 2 <= sizeof cfg->groups)
        snprintf(cfg->groups + used, sizeof cfg->groups - used, "%.*s\n", (int)cols[0].s.len,
                 cols[0].s.p);
    return 0;
}

/* The roster groups of a roster-model node into cfg->groups. */
static int
pp_groups_load(xd_db_conn_t *c, const char *host, const char *user, const char *node,
               pp_cfg_t *cfg)
{
    cfg->groups[0] = '\0';
    if (strcmp(cfg->access, "roster") != 0)
        return 0;
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node) };
    return xd_db_query(c,
                       "SELECT grp FROM pep_node_group WHERE host = ? AND username = ?"
                       " AND node = ? ORDER BY grp",
                       key, 3, pp_group_row, cfg);
}

static int
pp_groups_save(xd_db_conn_t *c, const char *host, const char *user, const char *node,
               const pp_cfg_t *cfg)
{
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node) };
    int rc = xd_db_query(c,
                         "DELETE FROM pep_node_group WHERE host = ? AND username = ? AND node = ?",
                         key, 3, NULL, NULL);
    for (const char *g = cfg->groups; rc == 0 && *g && !strcmp(cfg->access, "roster");) {
        const char *nl = strchr(g, '\n');
        size_t gl = nl ? (size_t)(nl - g) : strlen(g);
        xd_db_val_t row[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node),
                              XD_DB_V_TEXT(((xd_str_t){ g, gl })) };
        rc = xd_db_query(c,
                         "INSERT INTO pep_node_group (host, username, node, grp)"
                         " VALUES (?, ?, ?, ?)",
                         row, 4, NULL, NULL);
        g += gl + (nl ? 1 : 0);
    }
    return rc;
}

static int
pp_node_load_row(xd_db_conn_t *c, const char *host, const char *user, const char *node,
             pp_node_row_t *out)
{
    out->found = false;
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node) };
    return xd_db_query(c,
                       "SELECT access_model, persist_items, max_items, send_last FROM pep_node"
                       " WHERE host = ? AND username = ? AND node = ?",
                       key, 3, pp_node_row, out);
}

/* The node's configuration with its roster groups. */
static int
pp_node_load(xd_db_conn_t *c, const char *host, const char *user, const char *node,
             pp_node_row_t *out)
{
    int rc = pp_node_load_row(c, host, user, node, out);
    if (rc == 0 && out->found)
        rc = pp_groups_load(c, host, user, node, &out->cfg);
    return rc;
}

static int
pp_node_save_row(xd_db_conn_t *c, const char *host, const char *user, const char *node,
                 const pp_cfg_t *cfg, bool create)
{
    if (create) {
        xd_db_val_t row[] = { XD_DB_V_CSTR(host),          XD_DB_V_CSTR(user),
                              XD_DB_V_CSTR(node),          XD_DB_V_CSTR(cfg->access),
                              XD_DB_V_INT(cfg->persist),   XD_DB_V_INT(cfg->max_items),
                              XD_DB_V_CSTR(cfg->send_last), XD_DB_V_INT(time(NULL)) };
        return xd_db_query(c,
                           "INSERT INTO pep_node (host, username, node, access_model,"
                           " persist_items, max_items, send_last, created_at)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           row, 8, NULL, NULL);
    }
    xd_db_val_t row[] = { XD_DB_V_CSTR(cfg->access), XD_DB_V_INT(cfg->persist),
                          XD_DB_V_INT(cfg->max_items), XD_DB_V_CSTR(cfg->send_last),
                          XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node) };
    return xd_db_query(c,
                       "UPDATE pep_node SET access_model = ?, persist_items = ?, max_items = ?,"
                       " send_last = ? WHERE host = ? AND username = ? AND node = ?",
                       row, 7, NULL, NULL);
}

static int
pp_node_save(xd_db_conn_t *c, const char *host, const char *user, const char *node,
             const pp_cfg_t *cfg, bool create)
{
    int rc = pp_node_save_row(c, host, user, node, cfg, create);
    return rc ? rc : pp_groups_save(c, host, user, node, cfg);
}

/* The first column of the first row, an integer, into *(int64_t *)arg. */
static int
pp_seq_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    if (ncols >= 1 && cols[0].type == XD_DB_INT64)
        *(int64_t *)arg = cols[0].i;
    return 1;
}

/* Keeps the newest `keep` items of the node. */
static int
pp_trim(xd_db_conn_t *c, const char *host, const char *user, const char *node, int64_t keep)
{
    if (keep <= 0) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node) };
        return xd_db_query(c, "DELETE FROM pep_item WHERE host = ? AND username = ? AND node = ?",
                           k, 3, NULL, NULL);
    }
    /* The seq of the keep-th newest item, then the older ones go (no LIMIT
     * in an IN subquery: MySQL/MariaDB have none there). */
    int64_t cut = -1;
    xd_db_val_t q[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node),
                        XD_DB_V_INT(keep - 1) };
    int rc = xd_db_query(c,
                         "SELECT seq FROM pep_item WHERE host = ? AND username = ? AND node = ?"
                         " ORDER BY seq DESC LIMIT 1 OFFSET ?",
                         q, 4, pp_seq_row, &cut);
    if (rc != 0 || cut < 0)
        return rc;
    xd_db_val_t d[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node),
                        XD_DB_V_INT(cut) };
    return xd_db_query(c,
                       "DELETE FROM pep_item WHERE host = ? AND username = ? AND node = ?"
                       " AND seq < ?",
                       d, 4, NULL, NULL);
}

/* ---- the roster cache -------------------------------------------------------------------------- *
 *
 * A publish notifies the owner's contacts: those with subscription from or
 * both (presence and open nodes), or in an allowed group (roster nodes).
 * The roster is read once (ROSTER_GET, on the pool) and kept per account;
 * ROSTER_CHANGED (after every committed change of an item) and REMOVE_USER
 * drop the account's entry, so the next publish reads it again.  A load
 * that raced with an invalidation is used once and not kept (the epoch).
 * At most roster_cache_size accounts: one more evicts any one entry. */

static int pp_first_key(void *arg, const char *key, void *val);

static void
pp_roster_unref(pp_roster_t *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (size_t i = 0; i < r->c.n; i++)
        if (r->pj[i])
            xd_jid_unref(r->pj[i]);
    xd_free(r->pj);
    pse_contacts_free(&r->c);
    for (size_t i = 0; i < r->nsub; i++) {
        xd_free(r->sub_node[i]);
        xd_free(r->sub_jid[i]);
        xd_free(r->sub_bare[i]);
    }
    xd_free(r->sub_node);
    xd_free(r->sub_jid);
    xd_free(r->sub_bare);
    xd_free(r);
}

static int
pp_sub_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_roster_t *r = arg;
    if (ncols < 4)
        return 0;
    if (r->nsub == r->subcap) {
        r->subcap = r->subcap ? r->subcap * 2 : 4;
        r->sub_node = xd_realloc(r->sub_node, r->subcap * sizeof *r->sub_node);
        r->sub_jid = xd_realloc(r->sub_jid, r->subcap * sizeof *r->sub_jid);
        r->sub_bare = xd_realloc(r->sub_bare, r->subcap * sizeof *r->sub_bare);
    }
    r->sub_node[r->nsub] = xd_strndup(cols[0].s.p, cols[0].s.len);
    r->sub_jid[r->nsub] = xd_strndup(cols[1].s.p, cols[1].s.len);
    size_t ul = cols[2].s.len, hl = cols[3].s.len;
    char *bare = xd_malloc(ul + hl + 2);
    snprintf(bare, ul + hl + 2, "%.*s%s%.*s", (int)ul, cols[2].s.p, ul ? "@" : "", (int)hl,
             cols[3].s.p);
    r->sub_bare[r->nsub++] = bare;
    return 0;
}

static void
pp_roster_unref_v(void *v)
{
    pp_roster_unref(v);
}

/* The roster of host/user (owner: its bare JID), from the cache or read
 * (on the pool); a reference, or NULL when no roster answered. */
static pp_roster_t *
pp_roster_get(pp_state_t *s, const pp_conf_t *conf, xd_db_t *db, const char *host,
              const char *user, const char *owner)
{
    uint64_t now = pp_now_ms();
    pthread_mutex_lock(&s->mu);
    pp_roster_t *r = xd_map_get(&s->rosters, xd_str_c(owner));
    if (r && now - r->loaded_ms < PP_ROSTER_TTL_MS) {
        atomic_fetch_add(&r->refs, 1);
        s->roster_hits++;
        pthread_mutex_unlock(&s->mu);
        return r;
    }
    uint64_t epoch = s->roster_epoch;
    s->roster_loads++;
    pthread_mutex_unlock(&s->mu);
    r = xd_new(pp_roster_t);
    atomic_init(&r->refs, 1);
    r->loaded_ms = now;
    int rc = pse_roster(host, user, NULL, ~0u, &r->c);
    if (rc != 0) {
        if (rc != XD_ENOTFOUND)
            XD_LOG(NULL, XD_WARN, "pep: roster not read", "host=%s user=%s err=%s", host, user,
                   xd_strerror(rc));
        pp_roster_unref(r);
        return NULL;
    }
    r->pj = r->c.n ? xd_calloc(r->c.n, sizeof *r->pj) : NULL;
    for (size_t i = 0; i < r->c.n; i++)
        if (xd_jid_parse(xd_str_c(r->c.jids[i]), &r->pj[i]) != 0)
            r->pj[i] = NULL;
    xd_db_conn_t *c = NULL;
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    rc = db ? xd_db_acquire(db, &c) : XD_ECLOSED;
    if (rc == 0) {
        rc = xd_db_query(c,
                         "SELECT node, jid, suser, shost FROM pep_sub WHERE host = ?"
                         " AND username = ? ORDER BY node, jid",
                         key, 2, pp_sub_row, r);
        xd_db_release(c);
    }
    if (rc != 0) /* used once without them, not kept */
        XD_LOG(NULL, XD_WARN, "pep: subscriptions not read", "host=%s user=%s err=%s", host,
               user, xd_strerror(rc));
    pthread_mutex_lock(&s->mu);
    if (rc == 0 && s->roster_epoch == epoch) {
        pp_roster_t *old = xd_map_get(&s->rosters, xd_str_c(owner));
        if (!old && xd_map_count(&s->rosters) >= (size_t)conf->roster_cache_size) {
            char *victim = NULL;
            xd_map_foreach(&s->rosters, pp_first_key, &victim);
            if (victim) {
                pp_roster_unref(xd_map_del(&s->rosters, xd_str_c(victim)));
                s->roster_evictions++;
            }
            xd_free(victim);
        }
        atomic_fetch_add(&r->refs, 1);
        pp_roster_unref(xd_map_put(&s->rosters, xd_str_c(owner), r));
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Drops the cached roster of host/user. */
static void
pp_roster_forget(pp_state_t *s, const char *host, const char *user)
{
    char owner[2 * XD_JID_PART_MAX + 2];
    snprintf(owner, sizeof owner, "%s@%s", user, host);
    pthread_mutex_lock(&s->mu);
    s->roster_epoch++;
    pp_roster_unref(xd_map_del(&s->rosters, xd_str_c(owner)));
    pthread_mutex_unlock(&s->mu);
}

/* A roster change of account host/user about contact suser@shost: the
 * contact's explicit subscriptions to the account's nodes that it may no
 * longer read are cancelled (XEP-0163 10.1: the access is calculated again
 * on a change of subscription or groups; until then the notifications
 * check it themselves). */
typedef struct pp_cancel {
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    char suser[XD_JID_PART_MAX + 1], shost[XD_JID_PART_MAX + 1];
} pp_cancel_t;

typedef struct pp_names {
    char **v;
    size_t n;
} pp_names_t;

static int
pp_name_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_names_t *ns = arg;
    if (ncols < 1)
        return 0;
    ns->v = xd_realloc(ns->v, (ns->n + 1) * sizeof *ns->v);
    ns->v[ns->n++] = xd_strndup(cols[0].s.p, cols[0].s.len);
    return 0;
}

static void
pp_cancel_work(xd_module_ctx_t *ctx, void *arg)
{
    pp_cancel_t *k = arg;
    xd_db_conn_t *c = NULL;
    if (xd_db_acquire(xd_module_db(ctx), &c) != 0)
        return;
    pp_names_t ns = { 0 };
    xd_db_val_t key[] = { XD_DB_V_CSTR(k->host), XD_DB_V_CSTR(k->user), XD_DB_V_CSTR(k->suser),
                          XD_DB_V_CSTR(k->shost) };
    int rc = xd_db_query(c,
                         "SELECT DISTINCT node FROM pep_sub WHERE host = ? AND username = ?"
                         " AND suser = ? AND shost = ?",
                         key, 4, pp_name_row, &ns);
    char bare[2 * XD_JID_PART_MAX + 2];
    snprintf(bare, sizeof bare, "%s%s%s", k->suser, *k->suser ? "@" : "", k->shost);
    size_t gone = 0;
    for (size_t i = 0; rc == 0 && i < ns.n; i++) {
        pp_node_row_t row;
        if (pp_node_load(c, k->host, k->user, ns.v[i], &row) != 0 || !row.found ||
            !strcmp(row.cfg.access, "open"))
            continue;
        xd_db_release(c); /* the roster read may take a connection of its own */
        c = NULL;
        bool ok = pse_roster_allows(k->host, k->user, bare, &row.cfg);
        if (xd_db_acquire(xd_module_db(ctx), &c) != 0)
            break;
        if (ok)
            continue;
        xd_db_val_t d[] = { XD_DB_V_CSTR(k->host), XD_DB_V_CSTR(k->user), XD_DB_V_CSTR(ns.v[i]),
                            XD_DB_V_CSTR(k->suser), XD_DB_V_CSTR(k->shost) };
        if (xd_db_query(c,
                        "DELETE FROM pep_sub WHERE host = ? AND username = ? AND node = ?"
                        " AND suser = ? AND shost = ?",
                        d, 5, NULL, NULL) == 0)
            gone++;
    }
    if (c)
        xd_db_release(c);
    for (size_t i = 0; i < ns.n; i++)
        xd_free(ns.v[i]);
    xd_free(ns.v);
    if (gone)
        pp_roster_forget(xd_module_state(ctx), k->host, k->user);
}

static void
pp_cancel_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    xd_free(arg);
}

/* ROSTER_CHANGED (any thread): the account's next publish reads its roster;
 * the contact's explicit subscriptions are checked again. */
static int
pp_roster_changed(xd_module_ctx_t *ctx, xd_hook_roster_changed_t *ev, void *arg)
{
    (void)arg;
    pp_roster_forget(xd_module_state(ctx), ev->host, ev->user);
    const char *jid = ev->item ? ev->item->jid : NULL;
    if (!jid || !xd_module_db(ctx) || strchr(jid, '/'))
        return XD_HOOK_OK;
    const char *at = strchr(jid, '@');
    pp_cancel_t *k = xd_new(pp_cancel_t);
    snprintf(k->host, sizeof k->host, "%s", ev->host);
    snprintf(k->user, sizeof k->user, "%s", ev->user);
    snprintf(k->suser, sizeof k->suser, "%.*s", at ? (int)(at - jid) : 0, jid);
    snprintf(k->shost, sizeof k->shost, "%s", at ? at + 1 : jid);
    if (xd_module_submit(ctx, pp_cancel_work, pp_cancel_done, k) != 0)
        xd_free(k); /* stopping or full: the notifications still check access */
    return XD_HOOK_OK;
}

/* ---- notifications --------------------------------------------------------------------------- *
 *
 * One notification is one frozen <message/> without 'to' (serialized once)
 * in one fan-out (route.h): one inbox message per destination worker, each
 * recipient's copy readdressed there, as group chat does. */

typedef struct pp_fan {
    pp_state_t *s;
    xd_fanout_t *f;
    char *feature;      /* node+notify */
    const char *host;   /* the owner's host */
    char ver[64];       /* the last caps ver looked up, and its answer */
    bool ver_ok;
    size_t copies, tolen;
} pp_fan_t;

/* Whether caps ver include the node's +notify, as the caps cache `other`
 * (the contact's host's, or NULL) or the owner host's knows them (the last
 * answer kept: most contacts run the same client). */
static bool
pp_fan_wants_ver(pp_fan_t *fc, pp_state_t *other, const char *ver)
{
    if (!*ver)
        return false;
    if (strcmp(fc->ver, ver) != 0) {
        int r = other ? pp_caps_has(other, ver, fc->feature) : -1;
        if (r < 0)
            r = pp_caps_has(fc->s, ver, fc->feature);
        if (r < 0)
            return false;
        snprintf(fc->ver, sizeof fc->ver, "%s", ver);
        fc->ver_ok = r == 1;
    }
    return fc->ver_ok;
}

static void
pp_fan_add(pp_fan_t *fc, const char *to, int worker)
{
    xd_fanout_add(fc->f, to, worker);
    fc->copies++;
    fc->tolen += strlen(to);
}

/* Adds the available sessions of `bare` (parsed: pj, or NULL): all of them
 * when all; else those that want the node by their caps +notify (when caps)
 * or that one of its explicit subscriptions subs (nsubs JIDs as subscribed:
 * the bare JID takes every session, a full JID its own) names. */
static void
pp_fan_account(pp_fan_t *fc, const char *bare, const xd_jid_t *pj, bool all, bool caps,
               char *const *subs, size_t nsubs)
{
    xd_jid_t *j = NULL;
    if (pj)
        j = xd_jid_ref((xd_jid_t *)pj);
    else if (xd_jid_parse(xd_str_c(bare), &j) != 0)
        return;
    xd_session_info_t info[PP_MAX_SESSIONS];
    size_t n = xd_session_list(j, info, PP_MAX_SESSIONS);
    if (n > PP_MAX_SESSIONS)
        n = PP_MAX_SESSIONS;
    /* A contact on another local host: its sessions' caps were asked by
     * mod_pep of that host. */
    for (size_t i = 0; i < nsubs && !all; i++)
        all = !strchr(subs[i], '/');
    xd_module_ctx_t *other = NULL;
    xd_str_t dom = xd_jid_domain(j);
    if (n && !all && caps && !xd_str_eq_c(dom, fc->host)) {
        char d[XD_JID_PART_MAX + 1];
        snprintf(d, sizeof d, "%.*s", (int)dom.len, dom.p);
        other = xd_module_instance("mod_pep", d);
    }
    pp_state_t *os = other ? xd_module_state(other) : NULL;
    for (size_t i = 0; i < n; i++) {
        char ver[64];
        bool named = false;
        for (size_t k = 0; k < nsubs && !named && info[i].available; k++)
            named = !strcmp(subs[k], xd_jid_full_str(info[i].jid).p);
        if (info[i].available &&
            (all || named ||
             (caps && pp_presence_ver(info[i].presence, ver, sizeof ver) &&
              pp_fan_wants_ver(fc, os, ver))))
            pp_fan_add(fc, xd_jid_full_str(info[i].jid).p, (int)info[i].ref.worker);
        xd_session_info_clear(&info[i]);
    }
    if (other)
        xd_module_release(other);
    xd_jid_unref(j);
}

/* Whether one of ro's subscriptions to node names the JID `full` (its bare
 * JID: the first bl bytes): that subscription's copy reaches it. */
static bool
pp_sub_covers(const pp_roster_t *ro, const char *node, const char *full, size_t bl)
{
    for (size_t i = 0; ro && i < ro->nsub; i++)
        if (!strcmp(ro->sub_node[i], node) &&
            (!strcmp(ro->sub_jid[i], full) ||
             xd_str_eq_c((xd_str_t){ full, bl }, ro->sub_jid[i])))
            return true;
    return false;
}

/* Adds the remote sessions that told the owner their presence, are on its
 * roster ro with the right to see the node and want it (and are not
 * reached by an explicit subscription's copy). */
static void
pp_fan_remote(pp_fan_t *fc, const char *owner, const pp_roster_t *ro, const pp_cfg_t *cfg,
              const char *node)
{
    pp_state_t *s = fc->s;
    pp_remote_t copy = { 0 };
    pthread_mutex_lock(&s->mu);
    pp_remote_t *rl = xd_map_get(&s->remote, xd_str_c(owner));
    if (rl && rl->n) {
        copy.full = xd_calloc(rl->n, sizeof *copy.full);
        copy.ver = xd_calloc(rl->n, sizeof *copy.ver);
        for (; copy.n < rl->n; copy.n++) {
            copy.full[copy.n] = xd_strdup(rl->full[copy.n]);
            copy.ver[copy.n] = xd_strdup(rl->ver[copy.n]);
        }
    }
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < copy.n; i++) {
        const char *slash = strchr(copy.full[i], '/');
        size_t bl = slash ? (size_t)(slash - copy.full[i]) : strlen(copy.full[i]);
        bool listed = false;
        for (size_t k = 0; ro && k < ro->c.n && !listed; k++)
            listed = xd_str_eq_c((xd_str_t){ copy.full[i], bl }, ro->c.jids[k]) &&
                     pse_contact_sees(&ro->c, k, cfg);
        if (listed && pp_fan_wants_ver(fc, NULL, copy.ver[i]) &&
            !(ro->nsub && pp_sub_covers(ro, node, copy.full[i], bl)))
            pp_fan_add(fc, copy.full[i], -1);
    }
    for (size_t i = 0; i < copy.n; i++) {
        xd_free(copy.full[i]);
        xd_free(copy.ver[i]);
    }
    xd_free(copy.full);
    xd_free(copy.ver);
}

/* Whether explicit subscription i of ro (to a node with cfg of `owner`)
 * still has the right to the node: open, anyone; presence and roster, a
 * contact that sees it (its index into *k).  The owner's own are left out:
 * its sessions get every notification. */
static bool
pp_sub_sees(const pp_roster_t *ro, size_t i, const pp_cfg_t *cfg, const char *owner, size_t *k)
{
    const char *bare = ro->sub_bare[i];
    if (!strcmp(bare, owner) || !strcmp(cfg->access, "whitelist"))
        return false;
    for (size_t c = 0; c < ro->c.n; c++)
        if (!strcmp(ro->c.jids[c], bare)) {
            if (pse_contact_sees(&ro->c, c, cfg)) {
                *k = c;
                return true;
            }
            break;
        }
    return !strcmp(cfg->access, "open");
}

/* The copies to explicit subscribers on other servers: to the JID as
 * subscribed (their server spreads a bare one). */
static void
pp_subs_remote(pp_fan_t *fc, const pp_roster_t *ro, const pp_cfg_t *cfg, const char *node,
               const char *owner)
{
    xd_config_t *gc = xd_config_get();
    for (size_t i = 0; gc && i < ro->nsub; i++) {
        size_t k = SIZE_MAX;
        const char *at = strchr(ro->sub_bare[i], '@');
        if (!strcmp(ro->sub_node[i], node) && pp_sub_sees(ro, i, cfg, owner, &k) &&
            !xd_config_is_host(gc, at ? at + 1 : ro->sub_bare[i]))
            pp_fan_add(fc, ro->sub_jid[i], -1);
    }
    xd_config_unref(gc);
}

/* The local part of a notification, run on the owner's worker: the
 * account's sessions and its contacts' on this server.  Notifications of one
 * account are posted there in the order of its requests (each is posted
 * before the request's stream is released), so a contact gets them in that
 * order, while the publisher's next publish is being stored. */
/* A publish's notifications in flight: its jobs (one per worker) and, when
 * max_publishes_in_flight was reached, the hold of the publisher's stream
 * that the last job to finish releases. */
typedef struct pp_flight {
    _Atomic unsigned jobs;
    pp_state_t *s;
    xd_input_ref_t hold; /* id 0: none */
    xd_input_ref_t in;   /* pp_flight_hold: the stream to hold */
} pp_flight_t;

typedef struct pp_fanjob {
    pp_state_t *s;
    pp_flight_t *fl;     /* NULL: not counted (not a request's) */
    xd_stanza_t *st;     /* the <message/> without 'to' (ref) */
    pp_roster_t *ro;     /* the owner's roster (ref), NULL: own sessions only */
    size_t *idx, n;      /* the contacts of ro this worker sends to */
    size_t *sidx, ns;    /* the explicit subscriptions of ro (local) it sends to */
    size_t *sk;          /* for each: the contact of idx whose they are, or SIZE_MAX */
    bool own;            /* and the owner's sessions */
    char host[XD_JID_PART_MAX + 1];
    char owner[2 * XD_JID_PART_MAX + 2];
    char *feature;       /* node+notify */
    xd_input_ref_t in;   /* billed */
    size_t copies, tolen; /* the remote part's, done already */
    unsigned worker;     /* where it runs */
    struct pp_fanjob *next; /* pp_req_t.jobs */
} pp_fanjob_t;

/* One job of fl done: the last one ends the flight. */
static void
pp_flight_end(pp_flight_t *fl)
{
    if (fl && atomic_fetch_sub(&fl->jobs, 1) == 1) {
        atomic_fetch_sub(&fl->s->in_flight, 1);
        xd_input_release(fl->hold);
        xd_free(fl);
    }
}

static void
pp_fanjob_run(pp_fanjob_t *j)
{
    pp_fan_t fc = { .s = j->s, .f = xd_fanout_new(j->st), .feature = j->feature, .host = j->host,
                    .copies = j->copies, .tolen = j->tolen };
    if (j->own)
        pp_fan_account(&fc, j->owner, NULL, true, false, NULL, 0);
    char **subs = j->ns ? xd_calloc(j->ns, sizeof *subs) : NULL;
    for (size_t k = 0; k < j->n; k++) {
        size_t ns = 0; /* the contact's explicit subscriptions */
        for (size_t i = 0; i < j->ns; i++)
            if (j->sk[i] == j->idx[k])
                subs[ns++] = j->ro->sub_jid[j->sidx[i]];
        pp_fan_account(&fc, j->ro->c.jids[j->idx[k]], j->ro->pj[j->idx[k]], false, true, subs,
                       ns);
    }
    /* Subscribers that are not contacts who see the node (an open node):
     * the sessions their subscriptions name, one account at a time. */
    for (size_t i = 0; i < j->ns; i++) {
        if (j->sk[i] != SIZE_MAX)
            continue;
        const char *bare = j->ro->sub_bare[j->sidx[i]];
        size_t ns = 0;
        for (size_t m = i; m < j->ns; m++)
            if (j->sk[m] == SIZE_MAX && !strcmp(j->ro->sub_bare[j->sidx[m]], bare)) {
                subs[ns++] = j->ro->sub_jid[j->sidx[m]];
                if (m > i)
                    j->sk[m] = SIZE_MAX - 1; /* done */
            }
        pp_fan_account(&fc, bare, NULL, false, false, subs, ns);
    }
    xd_free(subs);
    size_t len = 0;
    xd_stanza_bytes(j->st, &len);
    xd_fanout_send(fc.f);
    xd_input_charge(j->in, fc.copies * (len + 6) + fc.tolen);
    pp_flight_end(j->fl);
    pp_roster_unref(j->ro);
    xd_stanza_unref(j->st);
    xd_free(j->idx);
    xd_free(j->sidx);
    xd_free(j->sk);
    xd_free(j->feature);
    xd_free(j);
}

static void
pp_fanjob_posted(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    pp_fanjob_run(arg);
}

static void
pp_fanjob_post(xd_module_ctx_t *ctx, pp_fanjob_t *j)
{
    if (xd_owner_workers() == 0 || xd_module_post(ctx, j->worker, pp_fanjob_posted, j) != 0)
        pp_fanjob_run(j);
}

/* Posts r's notification jobs (pp_notify) as one flight, counted in
 * publishes_in_flight.  When max_publishes_in_flight flights are under way
 * the requester's stream waits for this one: a hold of it that the last
 * job releases.  in_stanza: called as part of the stream's stanza (an IQ's
 * done callback; the request's own hold is released after it), so the
 * hold is taken here.  Otherwise (pep_publish_as, on the pool, r->in given
 * by the caller) a message to the stream's worker takes it: posted from
 * this thread before the caller's pool job posts its done, it runs there
 * before that job's hold of the stream is released (a worker runs one
 * thread's messages in the order posted; a release posted from another
 * worker after done comes later still), so the stream reads nothing in
 * between. */
static void pp_flight_hold(xd_module_ctx_t *ctx, void *arg);

static void
pp_flight_post(xd_module_ctx_t *ctx, pp_req_t *r, bool in_stanza)
{
    unsigned njobs = 0;
    for (pp_fanjob_t *j = r->jobs; j; j = j->next)
        njobs++;
    if (njobs) {
        pp_state_t *s = xd_module_state(ctx);
        const pp_conf_t *conf = xd_module_opts(ctx);
        pp_flight_t *fl = xd_new(pp_flight_t);
        fl->s = s;
        bool wait =
            atomic_fetch_add(&s->in_flight, 1) >= (uint64_t)conf->max_publishes_in_flight;
        bool post_hold = false;
        if (wait && in_stanza) {
            fl->hold = xd_input_hold();
            if (fl->hold.id)
                atomic_fetch_add(&s->flight_waits, 1);
        } else if (wait && r->in.id) {
            fl->in = r->in;
            post_hold = true;
        }
        atomic_init(&fl->jobs, njobs + post_hold);
        for (pp_fanjob_t *j = r->jobs; j; j = j->next)
            j->fl = fl;
        if (post_hold && xd_module_post(ctx, r->in.worker, pp_flight_hold, fl) != 0)
            pp_flight_end(fl); /* stopping: no hold */
    }
    while (r->jobs) {
        pp_fanjob_t *j = r->jobs;
        r->jobs = j->next;
        j->next = NULL;
        pp_fanjob_post(ctx, j);
    }
}

/* The event of a node change to the owner's sessions and the contacts that
 * may see it (on the pool: the roster may be read).  Sessions on other
 * servers are sent to from here; the rest from the owner's worker. */
static void
pp_notify(pp_req_t *r, const char *node, const pp_cfg_t *cfg, xd_el_t *event)
{
    pp_state_t *s = xd_module_state(r->ctx);
    const pp_conf_t *conf = xd_module_opts(r->ctx);
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_set_attr(m, "from", r->owner);
    xd_el_set_attr(m, "type", "headline");
    char id[21];
    if (mod_random_id(id) == 0)
        xd_el_set_attr(m, "id", id);
    xd_el_append(m, event);
    xd_stanza_t *st = xd_el_freeze(m);
    size_t fl = strlen(node) + 8;
    char *feature = xd_malloc(fl);
    snprintf(feature, fl, "%s+notify", node);
    pp_roster_t *ro = NULL;
    size_t rcopies = 0, rtolen = 0;
    if (strcmp(cfg->access, "whitelist") != 0) {
        ro = pp_roster_get(s, conf, xd_module_db(r->ctx), r->host, r->user, r->owner);
        pp_fan_t rc = { .s = s, .f = xd_fanout_new(st), .feature = feature, .host = r->host };
        pp_fan_remote(&rc, r->owner, ro, cfg, node);
        if (ro && ro->nsub)
            pp_subs_remote(&rc, ro, cfg, node, r->owner);
        xd_fanout_send(rc.f);
        rcopies = rc.copies;
        rtolen = rc.tolen;
    }
    /* One job per worker, each with the contacts that the owner function
     * gives it (a contact's notifications always go from the same worker,
     * in order), so that both workers look sessions up and send. */
    unsigned nw = xd_owner_workers();
    if (nw == 0)
        nw = 1;
    unsigned ow = xd_owner_workers() ? xd_owner_of(r->owner) : 0;
    pp_fanjob_t **jobs = xd_calloc(nw, sizeof *jobs);
    for (unsigned w = 0; w < nw; w++) {
        pp_fanjob_t *j = jobs[w] = xd_new(pp_fanjob_t);
        j->s = s;
        j->st = xd_stanza_ref(st);
        j->in = r->in;
        j->own = w == ow;
        snprintf(j->host, sizeof j->host, "%s", r->host);
        snprintf(j->owner, sizeof j->owner, "%s", r->owner);
        j->feature = xd_strdup(feature);
        if (ro) {
            atomic_fetch_add(&ro->refs, 1);
            j->ro = ro;
        }
        if (w == ow) {
            j->copies = rcopies;
            j->tolen = rtolen;
        }
    }
    for (size_t i = 0; ro && i < ro->c.n; i++) {
        if (!pse_contact_sees(&ro->c, i, cfg) || !strcmp(ro->c.jids[i], r->owner))
            continue;
        pp_fanjob_t *j = jobs[xd_owner_workers() ? xd_owner_of(ro->c.jids[i]) % nw : 0];
        if (!j->idx)
            j->idx = xd_calloc(ro->c.n, sizeof *j->idx);
        j->idx[j->n++] = i;
    }
    /* Explicit subscribers on this server: to the worker of their bare JID
     * (a contact's: where its contact entry went). */
    xd_config_t *gc = ro && ro->nsub ? xd_config_get() : NULL;
    for (size_t i = 0; gc && i < ro->nsub; i++) {
        size_t k = SIZE_MAX;
        const char *at = strchr(ro->sub_bare[i], '@');
        if (strcmp(ro->sub_node[i], node) != 0 || !pp_sub_sees(ro, i, cfg, r->owner, &k) ||
            !xd_config_is_host(gc, at ? at + 1 : ro->sub_bare[i]))
            continue;
        pp_fanjob_t *j = jobs[xd_owner_workers() ? xd_owner_of(ro->sub_bare[i]) % nw : 0];
        if (!j->sidx) {
            j->sidx = xd_calloc(ro->nsub, sizeof *j->sidx);
            j->sk = xd_calloc(ro->nsub, sizeof *j->sk);
        }
        j->sk[j->ns] = k;
        j->sidx[j->ns++] = i;
    }
    xd_config_unref(gc);
    for (unsigned w = 0; w < nw; w++) {
        if (!jobs[w]->own && !jobs[w]->n && !jobs[w]->ns) {
            pp_roster_unref(jobs[w]->ro);
            xd_stanza_unref(jobs[w]->st);
            xd_free(jobs[w]->feature);
            xd_free(jobs[w]);
            continue;
        }
        jobs[w]->worker = w;
        pp_fanjob_t **t = &r->jobs; /* posted by pp_flight_post */
        while (*t)
            t = &(*t)->next;
        *t = jobs[w];
    }
    xd_free(jobs);
    pp_roster_unref(ro);
    xd_free(feature);
    xd_stanza_unref(st);
}

/* ---- publish --------------------------------------------------------------------------------- */

typedef struct pp_pub {
    const char *host, *user, *node, *id;
    const char *xml; /* the <item/> serialized */
    size_t len;
    pp_cfg_t want;    /* the publish-options applied to the defaults */
    unsigned set;     /* fields the publish-options named */
    const pp_conf_t *conf;
    bool lax;         /* an existing node keeps its configuration (pep_publish_as) */
    pp_cfg_t cfg;     /* out: the node's configuration */
    int outcome;      /* out: 0, 1 precondition, 2 too many nodes */
} pp_pub_t;

static int
pp_pub_tx(xd_db_conn_t *c, void *arg)
{
    pp_pub_t *p = arg;
    p->outcome = 0;
    pp_node_row_t row;
    int rc = pp_node_load(c, p->host, p->user, p->node, &row);
    if (rc != 0)
        return rc;
    if (row.found) {
        pse_limits_t lim = pp_limits(p->conf);
        if (!p->lax && !pse_precond_ok(&row.cfg, &p->want, p->set, &lim)) {
            p->outcome = 1;
            return 0;
        }
        p->cfg = row.cfg;
    } else {
        xd_db_val_t key[] = { XD_DB_V_CSTR(p->host), XD_DB_V_CSTR(p->user) };
        int64_t n = 0;
        rc = xd_db_query_int64(c, "SELECT COUNT(*) FROM pep_node WHERE host = ? AND username = ?",
                               key, 2, &n);
        if (rc != 0)
            return rc;
        if (n >= p->conf->max_nodes) {
            p->outcome = 2;
            return 0;
        }
        p->cfg = p->want;
        if ((rc = pp_node_save(c, p->host, p->user, p->node, &p->cfg, true)) != 0)
            return rc;
    }
    xd_db_val_t key[] = { XD_DB_V_CSTR(p->host), XD_DB_V_CSTR(p->user), XD_DB_V_CSTR(p->node),
                          XD_DB_V_CSTR(p->id) };
    rc = xd_db_query(c,
                     "DELETE FROM pep_item WHERE host = ? AND username = ? AND node = ? AND id = ?",
                     key, 4, NULL, NULL);
    int64_t seq = 0;
    if (rc == 0)
        rc = xd_db_query_int64(c,
                               "SELECT COALESCE(MAX(seq), 0) FROM pep_item"
                               " WHERE host = ? AND username = ? AND node = ?",
                               key, 3, &seq);
    if (rc != 0)
        return rc;
    xd_db_val_t row2[] = { XD_DB_V_CSTR(p->host), XD_DB_V_CSTR(p->user), XD_DB_V_CSTR(p->node),
                           XD_DB_V_CSTR(p->id),   XD_DB_V_INT(seq + 1),  XD_DB_V_INT(time(NULL)),
                           XD_DB_V_TEXT(((xd_str_t){ p->xml, p->len })) };
    rc = xd_db_query(c,
                     "INSERT INTO pep_item (host, username, node, id, seq, ts, xml)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)",
                     row2, 7, NULL, NULL);
    if (rc == 0)
        rc = pp_trim(c, p->host, p->user, p->node, pp_cfg_max(&p->cfg, p->conf));
    return rc;
}

static xd_stanza_t *
pp_publish(pp_req_t *r, const xd_el_t *pubsub, const xd_el_t *pub)
{
    const pp_conf_t *conf = xd_module_opts(r->ctx);
    const xd_stanza_t *iq = r->iq;
    if (!r->is_owner)
        return pse_err(iq, XD_COND_FORBIDDEN, NULL, NULL, "only the account publishes here");
    const char *node = xd_el_attr(pub, "node");
    if (!node || !*node)
        return pse_err(iq, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    if (strlen(node) > PP_NODE_MAX)
        return pse_err(iq, XD_COND_NOT_ACCEPTABLE, NULL, NULL, "node name too long");
    const xd_el_t *item = NULL;
    size_t nitems = 0;
    for (const xd_el_t *c = xd_el_first_child(pub); c; c = xd_el_next(c))
        if (xd_el_is(c, "item", XD_NS_PUBSUB)) {
            item = c;
            nitems++;
        }
    if (nitems == 0)
        return pse_err(iq, XD_COND_BAD_REQUEST, "item-required", NULL, NULL);
    if (nitems > 1)
        return pse_err(iq, XD_COND_BAD_REQUEST, "invalid-payload", NULL, "one item per publish");
    size_t npay = xd_el_child_count(item);
    if (npay == 0)
        return pse_err(iq, XD_COND_BAD_REQUEST, "payload-required", NULL, NULL);
    if (npay > 1)
        return pse_err(iq, XD_COND_BAD_REQUEST, "invalid-payload", NULL, "one payload per item");
    pp_pub_t p = { .host = r->host, .user = r->user, .node = node, .conf = conf };
    pse_cfg_default(&p.want, false);
    const xd_el_t *po = xd_el_child(pubsub, "publish-options", XD_NS_PUBSUB);
    if (po) {
        const xd_el_t *x = xd_el_child(po, "x", XD_NS_DATA);
        if (x) {
            pse_limits_t lim = pp_limits(conf);
            const char *why = pse_form_read(x, PSE_NS_PUBOPT, &lim, &p.want, &p.set);
            if (why)
                return pse_err(iq, XD_COND_CONFLICT, "precondition-not-met", NULL, why);
        }
    }
    char gen[21];
    const char *id = xd_el_attr(item, "id");
    if (!id || !*id) {
        if (mod_random_id(gen) != 0)
            return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        id = gen;
    }
    if (strlen(id) > PP_ID_MAX)
        return pse_err(iq, XD_COND_NOT_ACCEPTABLE, NULL, NULL, "item id too long");
    /* The payload is stored; <item id=…/> is made in the namespace of
     * where it goes (pubsub, pubsub#event). */
    p.id = id;
    char *xml = xd_el_serialize(xd_el_first_child(item), NULL, &p.len);
    p.xml = xml;
    if (p.len > conf->max_item_size) {
        xd_free(xml);
        return pse_err(iq, XD_COND_NOT_ACCEPTABLE, "payload-too-big", NULL, NULL);
    }
    int rc = xd_db_tx(xd_module_db(r->ctx), pp_pub_tx, &p);
    xd_el_t *pl = NULL;
    if (rc >= 0 && !p.outcome && xd_el_parse(xml, p.len, &pl) != 0)
        rc = XD_EINVAL;
    xd_free(xml);
    if (rc < 0 || p.outcome) {
        if (rc < 0) {
            XD_LOG(NULL, XD_ERROR, "pep publish failed", "host=%s user=%s err=%s", r->host,
                   r->user, xd_strerror(rc));
            return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
        }
        if (p.outcome == 1)
            return pse_err(iq, XD_COND_CONFLICT, "precondition-not-met", NULL,
                          "the node's configuration differs from the publish-options");
        return pse_err(iq, XD_COND_NOT_ALLOWED, NULL, NULL, "too many nodes for this account");
    }
    xd_el_t *items;
    xd_el_t *ev = pse_event(node, &items);
    xd_el_t *stored = xd_el_add_child(items, "item", NULL);
    xd_el_set_attr(stored, "id", id);
    xd_el_append(stored, pl);
    pep_watch_fn watch = atomic_load(&pp_watcher);
    if (watch) /* before the event (and the item in it) goes */
        watch(r->ctx, r->host, r->user, node, id, pl);
    /* The item is stored: the result goes now, the notifications after it
     * (both before the stream's next stanza is read: input.h). */
    xd_el_t *res = xd_iq_result_builder(iq);
    xd_el_t *ps = xd_el_add_child(res, "pubsub", XD_NS_PUBSUB);
    xd_el_t *pe = xd_el_add_child(ps, "publish", NULL);
    xd_el_set_attr(pe, "node", node);
    xd_el_set_attr(xd_el_add_child(pe, "item", NULL), "id", id);
    xd_route_take(xd_el_freeze(res));
    pp_notify(r, node, &p.cfg, ev);
    return NULL;
}

/* Deletes item id of host/user's node (row: the node, loaded).  0,
 * XD_ENOTFOUND (no such node or item) or a storage error. */
static int
pp_item_delete(xd_db_t *db, const char *host, const char *user, const char *node,
               const char *id, pp_node_row_t *row)
{
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(db, &c);
    int64_t gone = 0;
    if (rc == 0)
        rc = pp_node_load(c, host, user, node, row);
    if (rc == 0 && row->found) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node),
                              XD_DB_V_CSTR(id) };
        rc = xd_db_query(c,
                         "DELETE FROM pep_item WHERE host = ? AND username = ? AND node = ?"
                         " AND id = ?",
                         key, 4, NULL, NULL);
        gone = rc == 0 ? xd_db_changes(c) : 0;
    }
    if (c)
        xd_db_release(c);
    if (rc != 0)
        return rc;
    return row->found && gone > 0 ? 0 : XD_ENOTFOUND;
}

/* ---- retract --------------------------------------------------------------------------------- */

static xd_stanza_t *
pp_retract(pp_req_t *r, const xd_el_t *ret)
{
    const xd_stanza_t *iq = r->iq;
    if (!r->is_owner)
        return pse_err(iq, XD_COND_FORBIDDEN, NULL, NULL, NULL);
    const char *node = xd_el_attr(ret, "node");
    if (!node || !*node)
        return pse_err(iq, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    const xd_el_t *item = xd_el_child(ret, "item", XD_NS_PUBSUB);
    const char *id = item ? xd_el_attr(item, "id") : NULL;
    if (!id || !*id)
        return pse_err(iq, XD_COND_BAD_REQUEST, "item-required", NULL, NULL);
    pp_node_row_t row = { 0 };
    int rc = pp_item_delete(xd_module_db(r->ctx), r->host, r->user, node, id, &row);
    if (rc == XD_ENOTFOUND)
        return pse_err(iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    if (rc != 0)
        return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    const char *notify = xd_el_attr(ret, "notify");
    if (notify && pse_bool(notify) == 1) {
        xd_el_t *items;
        xd_el_t *ev = pse_event(node, &items);
        xd_el_set_attr(xd_el_add_child(items, "retract", NULL), "id", id);
        pp_notify(r, node, &row.cfg, ev);
    }
    return xd_iq_result(iq);
}

/* ---- items ----------------------------------------------------------------------------------- */

/* Whether r's requester may read a node with cfg (on the pool). */
static bool
pp_may_read(pp_req_t *r, const pp_cfg_t *cfg)
{
    if (r->is_owner || !strcmp(cfg->access, "open"))
        return true;
    /* presence: subscription from or both; roster: in an allowed group. */
    xd_str_t b = xd_jid_bare_str(r->from);
    char bare[2 * XD_JID_PART_MAX + 2];
    snprintf(bare, sizeof bare, "%.*s", (int)b.len, b.p);
    return pse_roster_allows(r->host, r->user, bare, cfg);
}

typedef struct pp_items {
    xd_el_t *parent; /* <items/> being filled */
    size_t n;
    int rc;
} pp_items_t;

static int
pp_item_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_items_t *it = arg;
    if (ncols < 2)
        return 0;
    xd_el_t *el = NULL;
    if (xd_el_parse(cols[1].s.p, cols[1].s.len, &el) != 0) {
        it->rc = XD_EINVAL;
        return 0;
    }
    char id[PP_ID_MAX + 1];
    snprintf(id, sizeof id, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    xd_el_t *item = xd_el_add_child(it->parent, "item", NULL);
    xd_el_set_attr(item, "id", id);
    xd_el_append(item, el);
    it->n++;
    return 0;
}

/* The error for a requester the node's access model keeps out (XEP-0060
 * 6.1.3.2-4, 6.5.9.2-4). */
static xd_stanza_t *
pp_access_err(const xd_stanza_t *iq, const pp_cfg_t *cfg)
{
    if (!strcmp(cfg->access, "presence"))
        return pse_err(iq, XD_COND_NOT_AUTHORIZED, "presence-subscription-required", NULL, NULL);
    if (!strcmp(cfg->access, "roster"))
        return pse_err(iq, XD_COND_NOT_AUTHORIZED, "not-in-roster-group", NULL, NULL);
    return pse_err(iq, XD_COND_NOT_ALLOWED, "closed-node", NULL, NULL);
}

static xd_stanza_t *
pp_items_get(pp_req_t *r, const xd_el_t *items)
{
    const xd_stanza_t *iq = r->iq;
    const char *node = xd_el_attr(items, "node");
    if (!node || !*node)
        return pse_err(iq, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    int64_t max = INT32_MAX; /* "all": LIMIT -1 is SQLite only */
    const char *mi = xd_el_attr(items, "max_items");
    if (mi) {
        char *end = NULL;
        long long v = strtoll(mi, &end, 10);
        if (!*mi || *end || v < 1)
            return pse_err(iq, XD_COND_BAD_REQUEST, NULL, NULL, "max_items: a positive number");
        max = v;
    }
    const char *ids[PSE_ITEM_IDS_MAX];
    int nids = pse_item_ids(items, ids); /* each id once */
    if (nids < 0)
        return pse_err(iq, XD_COND_POLICY_VIOLATION, NULL, NULL,
                       "too many item ids in one request");
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(xd_module_db(r->ctx), &c);
    pp_node_row_t row = { 0 };
    if (rc == 0)
        rc = pp_node_load(c, r->host, r->user, node, &row);
    if (rc != 0 || !row.found) {
        if (c)
            xd_db_release(c);
        return rc ? pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL)
                  : pse_err(iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    }
    xd_db_release(c); /* the roster read may take a connection of its own */
    c = NULL;
    if (!pp_may_read(r, &row.cfg))
        return pp_access_err(iq, &row.cfg);
    xd_el_t *res = xd_iq_result_builder(iq);
    xd_el_t *ps = xd_el_add_child(res, "pubsub", XD_NS_PUBSUB);
    xd_el_t *out = xd_el_add_child(ps, "items", NULL);
    xd_el_set_attr(out, "node", node);
    pp_items_t it = { .parent = out };
    rc = xd_db_acquire(xd_module_db(r->ctx), &c);
    bool by_id = nids > 0;
    for (int i = 0; i < nids && rc == 0; i++) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user), XD_DB_V_CSTR(node),
                              XD_DB_V_CSTR(ids[i]) };
        rc = xd_db_query(c,
                         "SELECT id, xml FROM pep_item WHERE host = ? AND username = ? AND node = ?"
                         " AND id = ?",
                         key, 4, pp_item_row, &it);
    }
    if (rc == 0 && !by_id) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user), XD_DB_V_CSTR(node),
                              XD_DB_V_INT(max) };
        rc = xd_db_query(c,
                         "SELECT id, xml FROM pep_item WHERE host = ? AND username = ? AND node = ?"
                         " ORDER BY seq DESC LIMIT ?",
                         key, 4, pp_item_row, &it);
    }
    if (c)
        xd_db_release(c);
    if (rc == 0)
        rc = it.rc;
    if (rc != 0) {
        xd_el_free(res);
        return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    if (by_id && it.n == 0) {
        xd_el_free(res);
        return pse_err(iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    }
    return xd_el_freeze(res);
}

/* ---- create --------------------------------------------------------------------------------- */

typedef struct pp_create {
    const char *host, *user, *node;
    const pp_cfg_t *cfg;
    int max_nodes;
    int outcome; /* out: 0 made, 1 exists, 2 too many nodes */
} pp_create_t;

static int
pp_create_tx(xd_db_conn_t *c, void *arg)
{
    pp_create_t *p = arg;
    pp_node_row_t row;
    int rc = pp_node_load_row(c, p->host, p->user, p->node, &row);
    if (rc != 0 || (p->outcome = row.found ? 1 : 0))
        return rc;
    xd_db_val_t key[] = { XD_DB_V_CSTR(p->host), XD_DB_V_CSTR(p->user) };
    int64_t n = 0;
    rc = xd_db_query_int64(c, "SELECT COUNT(*) FROM pep_node WHERE host = ? AND username = ?",
                           key, 2, &n);
    if (rc == 0 && n >= p->max_nodes)
        p->outcome = 2;
    if (rc != 0 || p->outcome)
        return rc;
    return pp_node_save(c, p->host, p->user, p->node, p->cfg, true);
}

/* XEP-0060 8.1 (create-nodes, create-and-configure): by the owner, a named
 * node (no instant nodes), the default configuration changed by a
 * <configure/> form that follows <create/>. */
static xd_stanza_t *
pp_create(pp_req_t *r, const xd_el_t *pubsub, const xd_el_t *op)
{
    const pp_conf_t *conf = xd_module_opts(r->ctx);
    const xd_stanza_t *iq = r->iq;
    if (!r->is_owner)
        return pse_err(iq, XD_COND_FORBIDDEN, NULL, NULL, "only the account creates nodes here");
    const char *node = xd_el_attr(op, "node");
    if (!node || !*node)
        return pse_err(iq, XD_COND_NOT_ACCEPTABLE, "nodeid-required", NULL, NULL);
    if (strlen(node) > PP_NODE_MAX)
        return pse_err(iq, XD_COND_NOT_ACCEPTABLE, NULL, NULL, "node name too long");
    pp_cfg_t cfg;
    pse_cfg_default(&cfg, false);
    const xd_el_t *ce; /* 8.1.3 */
    if (!pse_create_configure(pubsub, op, &ce))
        return pse_err(iq, XD_COND_BAD_REQUEST, NULL, NULL,
                       "<configure/> follows <create/> and names no node");
    const xd_el_t *x = ce ? xd_el_child(ce, "x", XD_NS_DATA) : NULL;
    if (x) {
        unsigned set = 0;
        pse_limits_t lim = pp_limits(conf);
        const char *why = pse_form_read(x, PSE_NS_NODECFG, &lim, &cfg, &set);
        if (why)
            return pse_err(iq, XD_COND_NOT_ACCEPTABLE,
                           !strcmp(why, PSE_WHY_ACCESS) ? "unsupported-access-model" : NULL,
                           NULL, why);
    }
    pp_create_t p = { .host = r->host, .user = r->user, .node = node, .cfg = &cfg,
                      .max_nodes = conf->max_nodes };
    int rc = xd_db_tx(xd_module_db(r->ctx), pp_create_tx, &p);
    if (rc < 0)
        return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (p.outcome == 1)
        return pse_err(iq, XD_COND_CONFLICT, NULL, NULL, "the node exists");
    if (p.outcome == 2)
        return pse_err(iq, XD_COND_NOT_ALLOWED, "max-nodes-exceeded", NULL,
                       "too many nodes for this account");
    return xd_iq_result(iq);
}

/* ---- subscribe, unsubscribe, subscriptions, affiliations ------------------------------------ */

/* The JID a subscribe/unsubscribe names, prepared, into out (cap bytes),
 * its localpart and domain into suser and shost (XD_JID_PART_MAX + 1
 * bytes each); NULL, or the error: none (jid-required), not
 * a JID or (subscribe) not the requester's (bad-request + invalid-jid,
 * XEP-0060 6.1.3.1), not the requester's (unsubscribe: forbidden, 6.2.3.3). */
static xd_stanza_t *
pp_sub_jid(pp_req_t *r, const xd_el_t *op, bool sub, char *out, size_t cap, char *suser,
           char *shost)
{
    const char *j = xd_el_attr(op, "jid");
    if (!j || !*j)
        return pse_err(r->iq, XD_COND_BAD_REQUEST, "jid-required", NULL, NULL);
    xd_jid_t *jid = NULL;
    if (xd_jid_parse(xd_str_c(j), &jid) != 0)
        return pse_err(r->iq, XD_COND_BAD_REQUEST, "invalid-jid", NULL, NULL);
    bool mine = xd_jid_eq_bare(jid, r->from);
    xd_str_t l = xd_jid_local(jid), d = xd_jid_domain(jid);
    snprintf(out, cap, "%s", xd_jid_full_str(jid).p);
    snprintf(suser, XD_JID_PART_MAX + 1, "%.*s", (int)l.len, l.p);
    snprintf(shost, XD_JID_PART_MAX + 1, "%.*s", (int)d.len, d.p);
    xd_jid_unref(jid);
    if (mine)
        return NULL;
    return sub ? pse_err(r->iq, XD_COND_BAD_REQUEST, "invalid-jid", NULL, NULL)
               : pse_err(r->iq, XD_COND_FORBIDDEN, NULL, NULL, NULL);
}

typedef struct pp_sub {
    const char *host, *user, *node, *jid, *suser, *shost;
    const pp_conf_t *conf;
    int outcome; /* out: 0 subscribed, 1 was already, 2 node gone, 3 node full, 4 JID full */
} pp_sub_t;

static int
pp_sub_tx(xd_db_conn_t *c, void *arg)
{
    pp_sub_t *p = arg;
    pp_node_row_t row;
    int rc = pp_node_load_row(c, p->host, p->user, p->node, &row);
    if (rc != 0)
        return rc;
    if (!row.found) {
        p->outcome = 2;
        return 0;
    }
    xd_db_val_t k4[] = { XD_DB_V_CSTR(p->host), XD_DB_V_CSTR(p->user), XD_DB_V_CSTR(p->node),
                         XD_DB_V_CSTR(p->jid) };
    int64_t n = 0;
    rc = xd_db_query_int64(c,
                           "SELECT COUNT(*) FROM pep_sub WHERE host = ? AND username = ?"
                           " AND node = ? AND jid = ?",
                           k4, 4, &n);
    if (rc != 0 || (p->outcome = n > 0 ? 1 : 0))
        return rc;
    rc = xd_db_query_int64(c,
                           "SELECT COUNT(*) FROM pep_sub WHERE host = ? AND username = ?"
                           " AND node = ?",
                           k4, 3, &n);
    if (rc != 0 || (p->outcome = n >= p->conf->max_node_subscribers ? 3 : 0))
        return rc;
    xd_db_val_t kb[] = { XD_DB_V_CSTR(p->shost), XD_DB_V_CSTR(p->suser), XD_DB_V_CSTR(p->host) };
    rc = xd_db_query_int64(c,
                           "SELECT COUNT(*) FROM pep_sub WHERE shost = ? AND suser = ?"
                           " AND host = ?",
                           kb, 3, &n);
    if (rc != 0 || (p->outcome = n >= p->conf->max_subscriptions ? 4 : 0))
        return rc;
    xd_db_val_t row2[] = { XD_DB_V_CSTR(p->host),  XD_DB_V_CSTR(p->user),
                           XD_DB_V_CSTR(p->node),  XD_DB_V_CSTR(p->jid),
                           XD_DB_V_CSTR(p->suser), XD_DB_V_CSTR(p->shost),
                           XD_DB_V_INT(time(NULL)) };
    return xd_db_query(c,
                       "INSERT INTO pep_sub (host, username, node, jid, suser, shost, created_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)",
                       row2, 7, NULL, NULL);
}

/* The node's last item to `to` (XEP-0060 6.1.7, send_last_published_item
 * on_sub or on_sub_and_presence); after the subscription's result, from
 * the same thread. */
static void
pp_send_last_to(pp_req_t *r, const char *node, const char *to)
{
    xd_db_conn_t *c = NULL;
    if (xd_db_acquire(xd_module_db(r->ctx), &c) != 0)
        return;
    xd_el_t *items;
    xd_el_t *ev = pse_event(node, &items);
    pp_items_t it = { .parent = items };
    xd_db_val_t k3[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user), XD_DB_V_CSTR(node) };
    int rc = xd_db_query(c,
                         "SELECT id, xml FROM pep_item WHERE host = ? AND username = ?"
                         " AND node = ? ORDER BY seq DESC LIMIT 1",
                         k3, 3, pp_item_row, &it);
    xd_db_release(c);
    if (rc == 0 && it.rc == 0 && it.n == 1) {
        size_t len = 0;
        char *xml = xd_el_serialize(ev, NULL, &len);
        xd_input_charge(r->in, pse_send_event(r->owner, to, NULL, xml, len));
        xd_free(xml);
    }
    xd_el_free(ev);
}

/* XEP-0060 6.1: an explicit subscription of the requester (or one of its
 * full JIDs) by the node's access model; kept in pep_sub and honoured by
 * the notifications whatever the subscriber's caps say. */
static xd_stanza_t *
pp_subscribe(pp_req_t *r, const xd_el_t *op)
{
    const pp_conf_t *conf = xd_module_opts(r->ctx);
    const xd_stanza_t *iq = r->iq;
    const char *node = xd_el_attr(op, "node");
    if (!node || !*node)
        return pse_err(iq, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    char jid[3 * XD_JID_PART_MAX + 3], suser[XD_JID_PART_MAX + 1], shost[XD_JID_PART_MAX + 1];
    xd_stanza_t *e = pp_sub_jid(r, op, true, jid, sizeof jid, suser, shost);
    if (e)
        return e;
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(xd_module_db(r->ctx), &c);
    pp_node_row_t row = { 0 };
    if (rc == 0)
        rc = pp_node_load(c, r->host, r->user, node, &row);
    if (c)
        xd_db_release(c); /* the roster read may take a connection of its own */
    if (rc != 0)
        return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!row.found)
        return pse_err(iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    if (!pp_may_read(r, &row.cfg))
        return pp_access_err(iq, &row.cfg);
    pp_sub_t p = { .host = r->host, .user = r->user, .node = node, .jid = jid, .suser = suser,
                   .shost = shost, .conf = conf };
    rc = xd_db_tx(xd_module_db(r->ctx), pp_sub_tx, &p);
    if (rc < 0)
        return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (p.outcome == 2)
        return pse_err(iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    if (p.outcome == 3 || p.outcome == 4)
        return pse_err(iq, XD_COND_POLICY_VIOLATION, "too-many-subscriptions", NULL,
                       p.outcome == 3 ? "the node has too many subscribers"
                                      : "too many subscriptions of this JID");
    if (p.outcome == 0)
        pp_roster_forget(xd_module_state(r->ctx), r->host, r->user);
    xd_el_t *res = xd_iq_result_builder(iq);
    xd_el_t *ps = xd_el_add_child(res, "pubsub", XD_NS_PUBSUB);
    xd_el_t *se = xd_el_add_child(ps, "subscription", NULL);
    xd_el_set_attr(se, "node", node);
    xd_el_set_attr(se, "jid", jid);
    xd_el_set_attr(se, "subscription", "subscribed");
    xd_route_take(xd_el_freeze(res));
    if (p.outcome == 0 && strcmp(row.cfg.send_last, "never") != 0)
        pp_send_last_to(r, node, jid);
    return NULL;
}

/* XEP-0060 6.2. */
static xd_stanza_t *
pp_unsubscribe(pp_req_t *r, const xd_el_t *op)
{
    const xd_stanza_t *iq = r->iq;
    const char *node = xd_el_attr(op, "node");
    if (!node || !*node)
        return pse_err(iq, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    char jid[3 * XD_JID_PART_MAX + 3], suser[XD_JID_PART_MAX + 1], shost[XD_JID_PART_MAX + 1];
    xd_stanza_t *e = pp_sub_jid(r, op, false, jid, sizeof jid, suser, shost);
    if (e)
        return e;
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(xd_module_db(r->ctx), &c);
    pp_node_row_t row = { 0 };
    int64_t gone = 0;
    if (rc == 0)
        rc = pp_node_load_row(c, r->host, r->user, node, &row);
    if (rc == 0 && row.found) {
        xd_db_val_t k4[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user), XD_DB_V_CSTR(node),
                             XD_DB_V_CSTR(jid) };
        rc = xd_db_query(c,
                         "DELETE FROM pep_sub WHERE host = ? AND username = ? AND node = ?"
                         " AND jid = ?",
                         k4, 4, NULL, NULL);
        gone = rc == 0 ? xd_db_changes(c) : 0;
    }
    if (c)
        xd_db_release(c);
    if (rc != 0)
        return pse_err(iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    if (!row.found)
        return pse_err(iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    if (gone == 0)
        return pse_err(iq, XD_COND_UNEXPECTED_REQUEST, "not-subscribed", NULL, NULL);
    pp_roster_forget(xd_module_state(r->ctx), r->host, r->user);
    return xd_iq_result(iq);
}

typedef struct pp_list {
    xd_el_t *parent;
    bool affs; /* <affiliation node affiliation='owner'/>, else <subscription/> */
} pp_list_t;

static int
pp_list_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_list_t *l = arg;
    if (ncols < 1)
        return 0;
    char node[PP_NODE_MAX + 1];
    snprintf(node, sizeof node, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    xd_el_t *e = xd_el_add_child(l->parent, l->affs ? "affiliation" : "subscription", NULL);
    xd_el_set_attr(e, "node", node);
    if (l->affs) {
        xd_el_set_attr(e, "affiliation", "owner");
    } else if (ncols >= 2) {
        char *jid = xd_strndup(cols[1].s.p, cols[1].s.len);
        xd_el_set_attr(e, "jid", jid);
        xd_free(jid);
        xd_el_set_attr(e, "subscription", "subscribed");
    }
    return 0;
}

/* XEP-0060 5.6 and 5.7: the requester's subscriptions to the account's
 * nodes (all its JIDs), and its affiliations (owner of every node for the
 * account; subscribers have none). */
static xd_stanza_t *
pp_list(pp_req_t *r, const xd_el_t *op, bool affs)
{
    const char *node = xd_el_attr(op, "node");
    xd_el_t *res = xd_iq_result_builder(r->iq);
    xd_el_t *ps = xd_el_add_child(res, "pubsub", XD_NS_PUBSUB);
    pp_list_t l = { .parent = xd_el_add_child(ps, affs ? "affiliations" : "subscriptions", NULL),
                    .affs = affs };
    if (node)
        xd_el_set_attr(l.parent, "node", node);
    if (affs && !r->is_owner)
        return xd_el_freeze(res);
    xd_str_t fl = xd_jid_local(r->from), fd = xd_jid_domain(r->from);
    char suser[XD_JID_PART_MAX + 1], shost[XD_JID_PART_MAX + 1];
    snprintf(suser, sizeof suser, "%.*s", (int)fl.len, fl.p);
    snprintf(shost, sizeof shost, "%.*s", (int)fd.len, fd.p);
    xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user),
                          affs ? XD_DB_V_CSTR(node ? node : "") : XD_DB_V_CSTR(suser),
                          XD_DB_V_CSTR(shost), XD_DB_V_CSTR(node ? node : "") };
    const char *sql =
        affs ? (node ? "SELECT node FROM pep_node WHERE host = ? AND username = ? AND node = ?"
                     : "SELECT node FROM pep_node WHERE host = ? AND username = ? ORDER BY node")
             : (node ? "SELECT node, jid FROM pep_sub WHERE host = ? AND username = ?"
                       " AND suser = ? AND shost = ? AND node = ? ORDER BY node, jid"
                     : "SELECT node, jid FROM pep_sub WHERE host = ? AND username = ?"
                       " AND suser = ? AND shost = ? ORDER BY node, jid");
    size_t nkey = affs ? (node ? 3 : 2) : (node ? 5 : 4);
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(xd_module_db(r->ctx), &c);
    if (rc == 0) {
        rc = xd_db_query(c, sql, key, nkey, pp_list_row, &l);
        xd_db_release(c);
    }
    if (rc != 0) {
        xd_el_free(res);
        return pse_err(r->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    }
    return xd_el_freeze(res);
}

/* ---- for other modules (pep_api.h) ---------------------------------------------------------- */

/* pep_publish_as / pep_retract_as: the hold of the caller's stream, taken on
 * its worker (a job of the flight, so that the flight outlives it). */
static void
pp_flight_hold(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    pp_flight_t *fl = arg;
    xd_input_ref_t prev = xd_input_lend(fl->in);
    fl->hold = xd_input_hold();
    xd_input_unlend(prev);
    if (fl->hold.id)
        atomic_fetch_add(&fl->s->flight_waits, 1);
    pp_flight_end(fl);
}

void
pep_disco_conversion(const xd_hook_disco_t *ev, const char *var)
{
    if (ev->node)
        return;
    xd_module_ctx_t *pep = xd_module_instance("mod_pep", ev->host);
    if (pep) {
        xd_el_set_attr(xd_el_add_child(ev->query, "feature", NULL), "var", var);
        xd_module_release(pep);
    }
}

void
pep_watch_set(pep_watch_fn fn)
{
    atomic_store(&pp_watcher, fn);
}

static void
pp_req_as(pp_req_t *r, xd_module_ctx_t *ctx, xd_input_ref_t in, const char *host,
          const char *user)
{
    *r = (pp_req_t){ .ctx = ctx, .is_owner = true, .in = in };
    snprintf(r->host, sizeof r->host, "%s", host);
    snprintf(r->user, sizeof r->user, "%s", user);
    snprintf(r->owner, sizeof r->owner, "%s@%s", r->user, r->host);
}

int
pep_publish_as(xd_module_ctx_t *pep, xd_input_ref_t in, const char *host, const char *user,
               const char *node, const char *id, const xd_el_t *payload, const pse_cfg_t *want)
{
    const pp_conf_t *conf = xd_module_opts(pep);
    pp_pub_t p = { .host = host, .user = user, .node = node, .id = id, .conf = conf,
                   .want = *want, .lax = true };
    char *xml = xd_el_serialize(payload, NULL, &p.len);
    p.xml = xml;
    if (p.len > conf->max_item_size || strlen(node) > PP_NODE_MAX || strlen(id) > PP_ID_MAX) {
        xd_free(xml);
        return XD_ELIMIT;
    }
    int rc = xd_db_tx(xd_module_db(pep), pp_pub_tx, &p);
    xd_el_t *pl = NULL;
    if (rc >= 0 && p.outcome)
        rc = XD_ELIMIT;
    if (rc >= 0)
        rc = xd_el_parse(xml, p.len, &pl);
    xd_free(xml);
    if (rc < 0 || rc > 0)
        return rc < 0 ? rc : XD_EINVAL;
    pp_req_t r;
    pp_req_as(&r, pep, in, host, user);
    xd_el_t *items;
    xd_el_t *ev = pse_event(node, &items);
    xd_el_t *stored = xd_el_add_child(items, "item", NULL);
    xd_el_set_attr(stored, "id", id);
    xd_el_append(stored, pl);
    pp_notify(&r, node, &p.cfg, ev);
    pp_flight_post(pep, &r, false);
    return 0;
}

int
pep_retract_as(xd_module_ctx_t *pep, xd_input_ref_t in, const char *host, const char *user,
               const char *node, const char *id)
{
    pp_node_row_t row = { 0 };
    int rc = pp_item_delete(xd_module_db(pep), host, user, node, id, &row);
    if (rc != 0)
        return rc;
    pp_req_t r;
    pp_req_as(&r, pep, in, host, user);
    xd_el_t *items;
    xd_el_t *ev = pse_event(node, &items);
    xd_el_set_attr(xd_el_add_child(items, "retract", NULL), "id", id);
    pp_notify(&r, node, &row.cfg, ev);
    pp_flight_post(pep, &r, false);
    return 0;
}

int
pep_items_read(xd_module_ctx_t *pep, const char *host, const char *user, const char *node,
               xd_el_t **out)
{
    *out = NULL;
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(xd_module_db(pep), &c);
    pp_node_row_t row = { 0 };
    if (rc == 0)
        rc = pp_node_load_row(c, host, user, node, &row);
    pp_items_t it = { .parent = xd_el_new("items", XD_NS_PUBSUB) };
    if (rc == 0 && row.found) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node) };
        rc = xd_db_query(c,
                         "SELECT id, xml FROM pep_item WHERE host = ? AND username = ? AND node = ?"
                         " ORDER BY seq",
                         key, 3, pp_item_row, &it);
        if (rc == 0)
            rc = it.rc;
    }
    if (c)
        xd_db_release(c);
    if (rc == 0 && !row.found)
        rc = XD_ENOTFOUND;
    if (rc != 0) {
        xd_el_free(it.parent);
        return rc;
    }
    *out = it.parent;
    return 0;
}

/* ---- owner: delete, purge, configure --------------------------------------------------------- */

static int
pp_user_sql(xd_db_conn_t *c, const char *sql, const char *host, const char *user,
            const char *node)
{
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(node) };
    return xd_db_query(c, sql, key, 3, NULL, NULL);
}

typedef struct pp_del {
    const char *host, *user, *node;
    bool purge;
    bool found;
    pp_cfg_t cfg;
} pp_del_t;

static int
pp_del_tx(xd_db_conn_t *c, void *arg)
{
    pp_del_t *d = arg;
    pp_node_row_t row;
    int rc = pp_node_load(c, d->host, d->user, d->node, &row);
    d->found = row.found;
    d->cfg = row.cfg;
    if (rc != 0 || !row.found)
        return rc;
    rc = pp_user_sql(c, "DELETE FROM pep_item WHERE host = ? AND username = ? AND node = ?",
                     d->host, d->user, d->node);
    if (rc == 0 && !d->purge)
        rc = pp_user_sql(c, "DELETE FROM pep_node WHERE host = ? AND username = ? AND node = ?",
                         d->host, d->user, d->node);
    if (rc == 0 && !d->purge)
        rc = pp_user_sql(c,
                         "DELETE FROM pep_node_group WHERE host = ? AND username = ? AND node = ?",
                         d->host, d->user, d->node);
    if (rc == 0 && !d->purge)
        rc = pp_user_sql(c, "DELETE FROM pep_sub WHERE host = ? AND username = ? AND node = ?",
                         d->host, d->user, d->node);
    return rc;
}

static xd_stanza_t *
pp_configure(pp_req_t *r, const xd_el_t *cf, bool set)
{
    const pp_conf_t *conf = xd_module_opts(r->ctx);
    const char *node = xd_el_attr(cf, "node");
    if (!node || !*node)
        return pse_err(r->iq, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    xd_db_t *db = xd_module_db(r->ctx);
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(db, &c);
    pp_node_row_t row = { 0 };
    if (rc == 0)
        rc = pp_node_load(c, r->host, r->user, node, &row);
    xd_stanza_t *reply = NULL;
    if (rc != 0) {
        reply = pse_err(r->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL);
    } else if (!row.found) {
        reply = pse_err(r->iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    } else if (set) {
        const xd_el_t *x = xd_el_child(cf, "x", XD_NS_DATA);
        const char *type = x ? xd_el_attr(x, "type") : NULL;
        unsigned fields = 0;
        const char *why = NULL;
        if (x && type && !strcmp(type, "cancel"))
            why = NULL;
        else if (!x)
            why = "a node_config form is needed";
        else
        {
            pse_limits_t lim = pp_limits(conf);
            why = pse_form_read(x, PSE_NS_NODECFG, &lim, &row.cfg, &fields);
        }
        if (why) {
            reply = pse_err(r->iq, XD_COND_NOT_ACCEPTABLE, NULL, NULL, why);
        } else if (fields) {
            rc = pp_node_save(c, r->host, r->user, node, &row.cfg, false);
            if (rc == 0)
                rc = pp_trim(c, r->host, r->user, node, pp_cfg_max(&row.cfg, conf));
            reply = rc ? pse_err(r->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL)
                       : xd_iq_result(r->iq);
        } else {
            reply = xd_iq_result(r->iq);
        }
    } else {
        xd_el_t *res = xd_iq_result_builder(r->iq);
        xd_el_t *ps = xd_el_add_child(res, "pubsub", XD_NS_PUBSUB_OWNER);
        xd_el_t *ce = xd_el_add_child(ps, "configure", NULL);
        xd_el_set_attr(ce, "node", node);
        pse_limits_t lim = pp_limits(conf);
        pse_cfg_form(ce, "form", PSE_NS_NODECFG, &row.cfg, &lim);
        reply = xd_el_freeze(res);
    }
    if (c)
        xd_db_release(c);
    return reply;
}

static xd_stanza_t *
pp_owner(pp_req_t *r, const xd_el_t *pubsub, bool set)
{
    if (!r->is_owner)
        return pse_err(r->iq, XD_COND_FORBIDDEN, NULL, NULL, NULL);
    const xd_el_t *op = xd_el_first_child(pubsub);
    if (!op)
        return pse_err(r->iq, XD_COND_BAD_REQUEST, NULL, NULL, NULL);
    if (xd_el_is(op, "configure", XD_NS_PUBSUB_OWNER))
        return pp_configure(r, op, set);
    bool del = xd_el_is(op, "delete", XD_NS_PUBSUB_OWNER);
    bool purge = xd_el_is(op, "purge", XD_NS_PUBSUB_OWNER);
    if (!del && !purge) {
        /* XEP-0060 8.3.3.2, 8.8.1.3, 8.9.1.3: the features not offered. */
        static const char *const feats[][2] = { { "default", "retrieve-default" },
                                                { "subscriptions", "manage-subscriptions" },
                                                { "affiliations", "modify-affiliations" } };
        const char *feature = xd_el_name(op);
        for (size_t i = 0; i < sizeof feats / sizeof *feats; i++)
            if (!strcmp(feature, feats[i][0]))
                feature = feats[i][1];
        return pse_err(r->iq, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported", feature, NULL);
    }
    if (!set)
        return pse_err(r->iq, XD_COND_BAD_REQUEST, NULL, NULL, NULL);
    const char *node = xd_el_attr(op, "node");
    if (!node || !*node)
        return pse_err(r->iq, XD_COND_BAD_REQUEST, "nodeid-required", NULL, NULL);
    pp_del_t d = { .host = r->host, .user = r->user, .node = node, .purge = purge };
    /* A deletion is told to the node's subscribers too (XEP-0060 8.4.2):
     * the cache entry read before their rows go serves pp_notify. */
    pp_state_t *s = xd_module_state(r->ctx);
    pp_roster_t *pre = del ? pp_roster_get(s, xd_module_opts(r->ctx), xd_module_db(r->ctx),
                                           r->host, r->user, r->owner)
                           : NULL;
    int rc = xd_db_tx(xd_module_db(r->ctx), pp_del_tx, &d);
    if (rc < 0 || !d.found) {
        pp_roster_unref(pre);
        return rc < 0 ? pse_err(r->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL, NULL)
                      : pse_err(r->iq, XD_COND_ITEM_NOT_FOUND, NULL, NULL, NULL);
    }
    xd_el_t *ev = xd_el_new("event", XD_NS_PUBSUB_EVENT);
    xd_el_set_attr(xd_el_add_child(ev, del ? "delete" : "purge", NULL), "node", node);
    pp_notify(r, node, &d.cfg, ev);
    if (del)
        pp_roster_forget(s, r->host, r->user);
    pp_roster_unref(pre);
    return xd_iq_result(r->iq);
}

/* ---- dispatch -------------------------------------------------------------------------------- */

static const char *const pp_unsupported[][2] = {
    { "options", "subscription-options" },
    { "default", "retrieve-default" },
};

static xd_stanza_t *
pp_handle(pp_req_t *r)
{
    const xd_el_t *root = xd_stanza_root(r->iq);
    const xd_el_t *pubsub = xd_el_first_child(root);
    bool set = !strcmp(xd_el_attr(root, "type"), "set");
    if (r->owner_ns)
        return pp_owner(r, pubsub, set);
    const xd_el_t *op = NULL;
    for (const xd_el_t *c = xd_el_first_child(pubsub); c; c = xd_el_next(c))
        if (!xd_el_is(c, "publish-options", XD_NS_PUBSUB)) {
            op = c;
            break;
        }
    if (!op || strcmp(xd_el_ns(op) ? xd_el_ns(op) : "", XD_NS_PUBSUB) != 0)
        return pse_err(r->iq, XD_COND_BAD_REQUEST, NULL, NULL, "expected a pubsub request");
    const char *name = xd_el_name(op);
    if (set && !strcmp(name, "publish"))
        return pp_publish(r, pubsub, op);
    if (set && !strcmp(name, "retract"))
        return pp_retract(r, op);
    if (!set && !strcmp(name, "items"))
        return pp_items_get(r, op);
    if (set && !strcmp(name, "create"))
        return pp_create(r, pubsub, op);
    if (set && !strcmp(name, "subscribe"))
        return pp_subscribe(r, op);
    if (set && !strcmp(name, "unsubscribe"))
        return pp_unsubscribe(r, op);
    if (!set && (!strcmp(name, "subscriptions") || !strcmp(name, "affiliations")))
        return pp_list(r, op, !strcmp(name, "affiliations"));
    for (size_t i = 0; i < sizeof pp_unsupported / sizeof *pp_unsupported; i++)
        if (!strcmp(name, pp_unsupported[i][0]))
            return pse_err(r->iq, XD_COND_FEATURE_NOT_IMPLEMENTED, "unsupported",
                          pp_unsupported[i][1], NULL);
    return pse_err(r->iq, XD_COND_BAD_REQUEST, NULL, NULL, "unknown pubsub request");
}

static void
pp_req_free(pp_req_t *r)
{
    xd_stanza_unref(r->iq);
    xd_jid_unref(r->from);
    xd_stanza_unref(r->reply);
    xd_free(r);
}

static void
pp_req_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    pp_req_t *r = arg;
    r->reply = pp_handle(r);
}

/* On the requester's worker, before its stream reads on: the answer, and
 * the notifications posted to the workers (in the order of the stream's
 * requests, each contact's from one worker).  Posted here rather than from
 * the pool so that this worker's own share queues behind this callback:
 * the stream's next request is stored while the copies go out. */
static void
pp_req_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    pp_req_t *r = arg;
    if (status != 0)
        xd_route_error(r->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    else if (r->reply)
        xd_route(r->reply);
    pp_flight_post(ctx, r, true);
    pp_req_free(r);
}

static xd_stanza_t *
pp_iq(const xd_iq_req_t *req)
{
    bool owner_ns = (bool)(uintptr_t)req->arg;
    if (!xd_el_is(req->payload, "pubsub", owner_ns ? XD_NS_PUBSUB_OWNER : XD_NS_PUBSUB))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <pubsub/>");
    if (!xd_module_db(req->ctx))
        return xd_stanza_error(req->iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
    pp_req_t *r = xd_new(pp_req_t);
    r->ctx = req->ctx;
    r->iq = xd_stanza_ref(req->iq);
    r->from = xd_jid_ref((xd_jid_t *)req->from);
    r->owner_ns = owner_ns;
    r->is_owner = xd_jid_eq_bare(req->from, req->to);
    r->in = xd_input_current();
    snprintf(r->host, sizeof r->host, "%s", req->host);
    xd_str_t l = xd_jid_local(req->to);
    snprintf(r->user, sizeof r->user, "%.*s", (int)l.len, l.p);
    snprintf(r->owner, sizeof r->owner, "%s@%s", r->user, r->host);
    int rc = xd_module_submit(req->ctx, pp_req_work, pp_req_done, r);
    if (rc != 0) {
        pp_req_free(r);
        return xd_stanza_error(req->iq,
                               rc == XD_EFULL ? XD_COND_RESOURCE_CONSTRAINT
                                              : XD_COND_SERVICE_UNAVAILABLE,
                               NULL);
    }
    return NULL;
}

/* ---- last items on presence ------------------------------------------------------------------ */

typedef struct pp_last {
    char host[XD_JID_PART_MAX + 1];
    char user[XD_JID_PART_MAX + 1]; /* the session's account */
    char *full;                     /* the session */
    char ver[64];                   /* its caps */
    char who[2 * XD_JID_PART_MAX + 2]; /* its bare JID */
    char owner_user[XD_JID_PART_MAX + 1]; /* a remote session: the one account whose
                                           * items it gets; "" for a local session */
    xd_input_ref_t in;
    bool subs_only; /* no caps: only the nodes it subscribed to explicitly */
    /* The session's explicit subscriptions to the host's accounts (its bare
     * JID's or its own): "user\nnode" each. */
    char **subs;
    size_t nsubs, subcap;
} pp_last_t;

static int
pp_last_sub_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_last_t *l = arg;
    if (ncols < 3 || (!xd_str_eq_c(cols[2].s, l->who) && !xd_str_eq_c(cols[2].s, l->full)))
        return 0;
    if (l->nsubs == l->subcap) {
        l->subcap = l->subcap ? l->subcap * 2 : 4;
        l->subs = xd_realloc(l->subs, l->subcap * sizeof *l->subs);
    }
    size_t n = cols[0].s.len + cols[1].s.len + 2;
    l->subs[l->nsubs] = xd_malloc(n);
    snprintf(l->subs[l->nsubs++], n, "%.*s\n%.*s", (int)cols[0].s.len, cols[0].s.p,
             (int)cols[1].s.len, cols[1].s.p);
    return 0;
}

/* Whether l subscribed explicitly to node of account user (of l->host). */
static bool
pp_last_subscribed(const pp_last_t *l, const char *user, const char *node)
{
    size_t ul = strlen(user);
    for (size_t i = 0; i < l->nsubs; i++)
        if (!strncmp(l->subs[i], user, ul) && l->subs[i][ul] == '\n' &&
            !strcmp(l->subs[i] + ul + 1, node))
            return true;
    return false;
}

typedef struct pp_nodes {
    char **names;
    pp_cfg_t *cfgs;
    size_t n, cap;
} pp_nodes_t;

static int
pp_nodes_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_nodes_t *ns = arg;
    if (ncols < 3)
        return 0;
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? ns->cap * 2 : 8;
        ns->names = xd_realloc(ns->names, ns->cap * sizeof *ns->names);
        ns->cfgs = xd_realloc(ns->cfgs, ns->cap * sizeof *ns->cfgs);
    }
    ns->names[ns->n] = xd_strndup(cols[0].s.p, cols[0].s.len);
    pp_cfg_t *c = &ns->cfgs[ns->n++];
    pse_cfg_default(c, false);
    snprintf(c->access, sizeof c->access, "%.*s", (int)cols[1].s.len, cols[1].s.p);
    snprintf(c->send_last, sizeof c->send_last, "%.*s", (int)cols[2].s.len, cols[2].s.p);
    return 0;
}

static void
pp_nodes_free(pp_nodes_t *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        xd_free(ns->names[i]);
    xd_free(ns->names);
    xd_free(ns->cfgs);
}

/* Sends the full JID the last item of each node of account user@ohost (c:
 * a connection to that host's database) that it may see and wants (its
 * caps as ctx's cache has them, or an explicit subscription); contact: the
 * session's account has a subscription to the account's presence.
 * Returns the bytes. */
static size_t
pp_last_of(xd_module_ctx_t *ctx, xd_db_conn_t *c, pp_last_t *l, const char *ohost,
           const char *user, bool self, bool contact)
{
    pp_state_t *s = xd_module_state(ctx);
    pp_nodes_t ns = { 0 };
    xd_db_val_t key[] = { XD_DB_V_CSTR(ohost), XD_DB_V_CSTR(user) };
    if (xd_db_query(c,
                    "SELECT node, access_model, send_last FROM pep_node"
                    " WHERE host = ? AND username = ?",
                    key, 2, pp_nodes_row, &ns) != 0) {
        pp_nodes_free(&ns);
        return 0;
    }
    char owner[2 * XD_JID_PART_MAX + 2];
    snprintf(owner, sizeof owner, "%s@%s", user, ohost);
    pse_reader_t rd = { .host = ohost, .user = user, .who = l->who }; /* read once */
    size_t bytes = 0;
    for (size_t i = 0; i < ns.n; i++) {
        if (!strcmp(ns.cfgs[i].send_last, "never"))
            continue;
        if (!self && !strcmp(ns.cfgs[i].access, "whitelist"))
            continue;
        if (!self && !strcmp(ns.cfgs[i].access, "roster")) {
            if (pp_groups_load(c, ohost, user, ns.names[i], &ns.cfgs[i]) != 0 ||
                !pse_reader_allows(&rd, &ns.cfgs[i]))
                continue;
        }
        /* A remote session's presence reached the account, which says
         * nothing of the subscription the presence model asks for. */
        if (!self && (l->owner_user[0] || !contact) && !strcmp(ns.cfgs[i].access, "presence") &&
            !pse_reader_allows(&rd, &ns.cfgs[i]))
            continue;
        size_t fl = strlen(ns.names[i]) + 8;
        char *f = xd_malloc(fl);
        snprintf(f, fl, "%s+notify", ns.names[i]);
        /* +notify counts for a contact (or the account itself), an
         * explicit subscription for anyone the node lets in. */
        bool want = (contact && !l->subs_only && pp_caps_has(s, l->ver, f) == 1) ||
                    (!self && !l->owner_user[0] && !strcmp(ohost, l->host) &&
                     !strcmp(ns.cfgs[i].send_last, "on_sub_and_presence") &&
                     pp_last_subscribed(l, user, ns.names[i]));
        xd_free(f);
        if (!want)
            continue;
        xd_el_t *items;
        xd_el_t *ev = pse_event(ns.names[i], &items);
        pp_items_t it = { .parent = items };
        xd_db_val_t k3[] = { XD_DB_V_CSTR(ohost), XD_DB_V_CSTR(user),
                             XD_DB_V_CSTR(ns.names[i]) };
        int rc = xd_db_query(c,
                             "SELECT id, xml FROM pep_item WHERE host = ? AND username = ?"
                             " AND node = ? ORDER BY seq DESC LIMIT 1",
                             k3, 3, pp_item_row, &it);
        if (rc == 0 && it.rc == 0 && it.n == 1) {
            size_t len = 0;
            char *xml = xd_el_serialize(ev, NULL, &len);
            bytes += pse_send_event(owner, l->full, NULL, xml, len);
            xd_free(xml);
        }
        xd_el_free(ev);
    }
    pse_reader_free(&rd);
    pp_nodes_free(&ns);
    return bytes;
}

static void
pp_last_work(xd_module_ctx_t *ctx, void *arg)
{
    pp_last_t *l = arg;
    if (l->owner_user[0]) {
        xd_db_conn_t *rc = NULL;
        if (xd_db_acquire(xd_module_db(ctx), &rc) != 0)
            return;
        size_t bytes = pp_last_of(ctx, rc, l, l->host, l->owner_user, false, true);
        xd_db_release(rc);
        xd_input_charge(l->in, bytes);
        return;
    }
    xd_db_conn_t *c = NULL;
    if (xd_db_acquire(xd_module_db(ctx), &c) != 0)
        return;
    /* Its explicit subscriptions to the host's accounts (XEP-0163 6.3.4:
     * on_sub_and_presence sends the last item on the subscriber's presence
     * too, whatever its caps). */
    xd_db_val_t sk[] = { XD_DB_V_CSTR(l->host), XD_DB_V_CSTR(l->user), XD_DB_V_CSTR(l->host) };
    if (xd_db_query(c,
                    "SELECT username, node, jid FROM pep_sub WHERE shost = ? AND suser = ?"
                    " AND host = ? ORDER BY username, node",
                    sk, 3, pp_last_sub_row, l) != 0 ||
        (l->subs_only && !l->nsubs)) {
        xd_db_release(c);
        return;
    }
    pse_contacts_t cs = { 0 };
    if (!l->subs_only)
        pse_roster(l->host, l->user, NULL, XD_ROSTER_SUB_TO, &cs);
    size_t bytes = l->subs_only ? 0 : pp_last_of(ctx, c, l, l->host, l->user, true, true);
    /* The accounts it subscribed to that are no contacts of it. */
    for (size_t i = 0; i < l->nsubs; i++) {
        const char *nl = strchr(l->subs[i], '\n');
        char user[XD_JID_PART_MAX + 1], bare[2 * XD_JID_PART_MAX + 2];
        snprintf(user, sizeof user, "%.*s", (int)(nl - l->subs[i]), l->subs[i]);
        snprintf(bare, sizeof bare, "%s@%s", user, l->host);
        bool seen = !strcmp(user, l->user) ||
                    (i > 0 && !strncmp(l->subs[i - 1], l->subs[i], (size_t)(nl - l->subs[i]) + 1));
        for (size_t k = 0; k < cs.n && !seen; k++)
            seen = !strcmp(cs.jids[k], bare);
        if (!seen)
            bytes += pp_last_of(ctx, c, l, l->host, user, false, false);
    }
    xd_config_t *conf = xd_config_get();
    for (size_t i = 0; i < cs.n; i++) {
        /* Local accounts: of this host, and of the other hosts served here
         * where mod_pep runs (the PEP of another server sends its own
         * last items). */
        const char *at = strchr(cs.jids[i], '@');
        if (!at || strchr(at + 1, '/'))
            continue;
        char user[XD_JID_PART_MAX + 1];
        snprintf(user, sizeof user, "%.*s", (int)(at - cs.jids[i]), cs.jids[i]);
        if (!strcmp(at + 1, l->host)) {
            if (strcmp(user, l->user) != 0)
                bytes += pp_last_of(ctx, c, l, l->host, user, false, true);
            continue;
        }
        if (!conf || !xd_config_is_host(conf, at + 1))
            continue;
        xd_module_ctx_t *o = xd_module_instance("mod_pep", at + 1);
        xd_db_conn_t *oc = NULL;
        if (o && xd_db_acquire(xd_module_db(o), &oc) == 0) {
            bytes += pp_last_of(ctx, oc, l, at + 1, user, false, true);
            xd_db_release(oc);
        }
        xd_module_release(o);
    }
    xd_config_unref(conf);
    xd_db_release(c);
    pse_contacts_free(&cs);
    xd_input_charge(l->in, bytes);
}

static void
pp_last_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    pp_last_t *l = arg;
    for (size_t i = 0; i < l->nsubs; i++)
        xd_free(l->subs[i]);
    xd_free(l->subs);
    xd_free(l->full);
    xd_free(l);
}

static void
pp_last_start(xd_module_ctx_t *ctx, const char *host, const xd_jid_t *full, const char *ver)
{
    pp_last_t *l = xd_new(pp_last_t);
    l->subs_only = !*ver;
    snprintf(l->host, sizeof l->host, "%s", host);
    xd_str_t u = xd_jid_local(full);
    snprintf(l->user, sizeof l->user, "%.*s", (int)u.len, u.p);
    l->full = xd_strdup(xd_jid_full_str(full).p);
    snprintf(l->ver, sizeof l->ver, "%s", ver);
    snprintf(l->who, sizeof l->who, "%s@%s", l->user, l->host);
    l->in = xd_input_current();
    if (xd_module_submit(ctx, pp_last_work, pp_last_done, l) != 0)
        pp_last_done(ctx, l, 0);
}

/* The last items of local account `owner` (bare JID) for the remote session
 * `full` (caps `ver`) whose available presence reached it. */
static void
pp_last_remote_start(xd_module_ctx_t *ctx, const char *host, const char *owner, const char *full,
                     const char *ver)
{
    const char *at = strchr(owner, '@');
    const char *slash = strchr(full, '/');
    if (!at || !slash)
        return;
    pp_last_t *l = xd_new(pp_last_t);
    snprintf(l->host, sizeof l->host, "%s", host);
    snprintf(l->owner_user, sizeof l->owner_user, "%.*s", (int)(at - owner), owner);
    snprintf(l->who, sizeof l->who, "%.*s", (int)(slash - full), full);
    l->full = xd_strdup(full);
    snprintf(l->ver, sizeof l->ver, "%s", ver);
    l->in = xd_input_current();
    if (xd_module_submit(ctx, pp_last_work, pp_last_done, l) != 0)
        pp_last_done(ctx, l, 0);
}

/* Records a caps query about ver to session full (remote: for local account
 * owner) under a new id (into id).  s->mu held. */
static void
pp_caps_note(pp_state_t *s, const char *ver, const char *full, const char *owner, char *id,
             size_t idcap)
{
    snprintf(id, idcap, PP_CAPS_PREFIX "%llu", (unsigned long long)++s->seq);
    pp_caps_query_t *q = xd_new(pp_caps_query_t);
    q->ver = xd_strdup(ver);
    q->full = xd_strdup(full);
    q->owner = owner ? xd_strdup(owner) : NULL;
    q->deadline = pp_now_ms() + PP_CAPS_TIMEOUT_MS;
    pp_due(s, q->deadline);
    xd_map_put(&s->asking, xd_str_c(id), q);
    xd_map_put(&s->asked_ver, xd_str_c(ver), (void *)1);
}

/* Sends the disco#info query `id` about the caps in presence pres to full. */
static void
pp_caps_ask(const char *host, const char *full, const xd_stanza_t *pres, const char *ver,
            const char *id)
{
    const xd_el_t *c = xd_el_child(xd_stanza_root(pres), "c", XD_NS_CAPS);
    const char *cnode = xd_el_attr(c, "node");
    xd_el_t *iq = xd_el_new("iq", NULL);
    xd_el_set_attr(iq, "type", "get");
    xd_el_set_attr(iq, "id", id);
    xd_el_set_attr(iq, "from", host);
    xd_el_set_attr(iq, "to", full);
    xd_el_t *qe = xd_el_add_child(iq, "query", XD_NS_DISCO_INFO);
    if (cnode) {
        size_t n = strlen(cnode) + strlen(ver) + 2;
        char *nv = xd_malloc(n);
        snprintf(nv, n, "%s#%s", cnode, ver);
        xd_el_set_attr(qe, "node", nv);
        xd_free(nv);
    }
    xd_route_take(xd_el_freeze(iq));
}

/* USER_AVAILABLE: the session gets the last items it wants; unknown caps
 * are asked for first. */
static int
pp_available(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    if (!ev->presence || !xd_module_db(ctx))
        return XD_HOOK_OK;
    char ver[64];
    pp_state_t *s = xd_module_state(ctx);
    const pp_conf_t *conf = xd_module_opts(ctx);
    if (!pp_presence_ver(ev->presence, ver, sizeof ver)) {
        pthread_mutex_lock(&s->mu);
        pp_unpin(s, conf, xd_jid_full_str(ev->jid).p); /* no caps any more */
        pthread_mutex_unlock(&s->mu);
        if (ev->initial) /* its explicit subscriptions only */
            pp_last_start(ctx, ev->host, ev->jid, "");
        return XD_HOOK_OK;
    }
    pthread_mutex_lock(&s->mu);
    pp_pin(s, conf, xd_jid_full_str(ev->jid).p, ver);
    bool known = xd_map_get(&s->caps, xd_str_c(ver)) != NULL;
    bool ask = !known && !xd_map_get(&s->asked_ver, xd_str_c(ver)) &&
               xd_map_count(&s->asking) < (size_t)conf->caps_cache_size;
    char id[64];
    if (ask)
        pp_caps_note(s, ver, xd_jid_full_str(ev->jid).p, NULL, id, sizeof id);
    pthread_mutex_unlock(&s->mu);
    if (known && ev->initial)
        pp_last_start(ctx, ev->host, ev->jid, ver);
    else if (ask)
        pp_caps_ask(ev->host, xd_jid_full_str(ev->jid).p, ev->presence, ver, id);
    return XD_HOOK_OK;
}

/* USER_UNAVAILABLE: the session's caps are no longer pinned. */
static int
pp_unavailable(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    pp_state_t *s = xd_module_state(ctx);
    const pp_conf_t *conf = xd_module_opts(ctx);
    pthread_mutex_lock(&s->mu);
    pp_unpin(s, conf, xd_jid_full_str(ev->jid).p);
    pthread_mutex_unlock(&s->mu);
    return XD_HOOK_OK;
}

/* ---- contacts on other servers --------------------------------------------------------------- */

/* An available or unavailable presence from a session on another server to
 * local account `to` (FILTER_PACKET, any thread): remembered (at most
 * max_remote_resources per account), its caps asked for when unknown, and
 * the last items sent when it is new and its caps are known. */
static void
pp_remote_presence(xd_module_ctx_t *ctx, const char *host, const xd_stanza_t *st,
                   const xd_jid_t *to)
{
    const xd_el_t *el = xd_stanza_root(st);
    const xd_jid_t *from = xd_stanza_from(st);
    const char *type = xd_el_attr(el, "type");
    bool avail = !type || !*type, unavail = type && !strcmp(type, "unavailable");
    if (!from || !xd_jid_resource(from).len || !xd_jid_local(from).len || (!avail && !unavail))
        return;
    xd_str_t fd = xd_jid_domain(from);
    char fdom[XD_JID_PART_MAX + 1];
    snprintf(fdom, sizeof fdom, "%.*s", (int)fd.len, fd.p);
    xd_config_t *cfg = xd_config_get();
    bool local = !cfg || xd_config_is_host(cfg, fdom);
    xd_config_unref(cfg);
    if (local) /* sessions of served hosts are in the session table */
        return;
    xd_str_t tb = xd_jid_bare_str(to);
    char owner[2 * XD_JID_PART_MAX + 2];
    snprintf(owner, sizeof owner, "%.*s", (int)tb.len, tb.p);
    const char *full = xd_jid_full_str(from).p;
    char ver[64] = "";
    if (avail)
        pp_presence_ver(st, ver, sizeof ver);
    pp_state_t *s = xd_module_state(ctx);
    const pp_conf_t *conf = xd_module_opts(ctx);
    bool send_last = false, ask = false;
    char id[64];
    pthread_mutex_lock(&s->mu);
    pp_remote_t *rl = xd_map_get(&s->remote, xd_str_c(owner));
    size_t at = rl ? rl->n : 0;
    for (size_t i = 0; rl && i < rl->n && at == rl->n; i++)
        if (!strcmp(rl->full[i], full))
            at = i;
    if (unavail) {
        if (rl && at < rl->n) {
            pp_remote_drop(rl, at);
            if (rl->n == 0)
                pp_remote_free(xd_map_del(&s->remote, xd_str_c(owner)));
        }
        pthread_mutex_unlock(&s->mu);
        return;
    }
    uint64_t now = pp_now_ms();
    bool fresh = !rl || at == rl->n;
    if (fresh && rl && pp_remote_expire(rl, now, conf->remote_resource_ttl))
        at = rl->n;
    size_t same = 0; /* sessions of the sender's server remembered */
    for (size_t i = 0; fresh && rl && i < rl->n; i++)
        same += pp_full_on(rl->full[i], fd.p, fd.len);
    const char *full_why = !fresh || !rl ? NULL
                           : rl->n >= (size_t)conf->max_remote_resources ? "max_remote_resources"
                           : same >= (size_t)conf->max_remote_per_domain ? "max_remote_per_domain"
                                                                          : NULL;
    if (full_why) {
        pthread_mutex_unlock(&s->mu);
        XD_LOG(NULL, XD_DEBUG, "pep: remote presence not remembered", "host=%s owner=%s from=%s why=%s",
               host, owner, full, full_why);
        return;
    }
    if (!rl) {
        rl = xd_new(pp_remote_t);
        xd_map_put(&s->remote, xd_str_c(owner), rl);
    }
    if (fresh) {
        rl->full = xd_realloc(rl->full, (rl->n + 1) * sizeof *rl->full);
        rl->ver = xd_realloc(rl->ver, (rl->n + 1) * sizeof *rl->ver);
        rl->seen = xd_realloc(rl->seen, (rl->n + 1) * sizeof *rl->seen);
        rl->full[rl->n] = xd_strdup(full);
        rl->ver[rl->n] = xd_strdup("");
        at = rl->n++;
    }
    rl->seen[at] = now;
    pp_due(s, now + conf->remote_resource_ttl);
    bool changed = strcmp(rl->ver[at], ver) != 0;
    if (changed) {
        xd_free(rl->ver[at]);
        rl->ver[at] = xd_strdup(ver);
    }
    if (*ver && (fresh || changed)) {
        bool known = xd_map_get(&s->caps, xd_str_c(ver)) != NULL;
        ask = !known && !xd_map_get(&s->asked_ver, xd_str_c(ver)) &&
              xd_map_count(&s->asking) < (size_t)conf->caps_cache_size;
        send_last = known;
        if (ask)
            pp_caps_note(s, ver, full, owner, id, sizeof id);
    }
    pthread_mutex_unlock(&s->mu);
    if (send_last)
        pp_last_remote_start(ctx, host, owner, full, ver);
    else if (ask)
        pp_caps_ask(host, full, st, ver, id);
}

/* An error message to local account `to` from a remote session (FILTER_PACKET):
 * the bounce of a notification.  The session is forgotten; for
 * remote-server-not-found or -timeout (the link is down) every session of
 * that server the account remembers. */
static void
pp_remote_bounce(xd_module_ctx_t *ctx, const xd_stanza_t *st, const xd_jid_t *to)
{
    const xd_el_t *el = xd_stanza_root(st);
    const xd_jid_t *from = xd_stanza_from(st);
    if (!from || !xd_jid_resource(from).len)
        return;
    bool link_down = false;
    const xd_el_t *err = xd_el_child(el, "error", NULL);
    for (const xd_el_t *c = err ? xd_el_first_child(err) : NULL; c && !link_down;
         c = xd_el_next(c))
        link_down = !strcmp(xd_el_name(c), "remote-server-not-found") ||
                    !strcmp(xd_el_name(c), "remote-server-timeout");
    xd_str_t tb = xd_jid_bare_str(to);
    char owner[2 * XD_JID_PART_MAX + 2];
    snprintf(owner, sizeof owner, "%.*s", (int)tb.len, tb.p);
    const char *full = xd_jid_full_str(from).p;
    xd_str_t fd = xd_jid_domain(from);
    pp_state_t *s = xd_module_state(ctx);
    size_t gone = 0;
    pthread_mutex_lock(&s->mu);
    pp_remote_t *rl = xd_map_get(&s->remote, xd_str_c(owner));
    for (size_t i = 0; rl && i < rl->n;)
        if (link_down ? pp_full_on(rl->full[i], fd.p, fd.len) : !strcmp(rl->full[i], full)) {
            pp_remote_drop(rl, i);
            gone++;
        } else {
            i++;
        }
    if (rl && rl->n == 0)
        pp_remote_free(xd_map_del(&s->remote, xd_str_c(owner)));
    pthread_mutex_unlock(&s->mu);
    if (gone)
        XD_LOG(NULL, XD_DEBUG, "pep: remote sessions forgotten (bounce)", "owner=%s from=%s n=%zu",
               owner, full, gone);
}

static int
pp_first_key(void *arg, const char *key, void *val)
{
    (void)val;
    *(char **)arg = xd_strdup(key);
    return 1;
}

/* The first unpinned entry of the caps cache (xd_map_foreach over s->caps). */
typedef struct pp_victim {
    pp_state_t *s;
    char *key;
} pp_victim_t;

static int
pp_first_unpinned(void *arg, const char *key, void *val)
{
    (void)val;
    pp_victim_t *v = arg;
    if (xd_map_get(&v->s->pin_ver, xd_str_c(key)))
        return 0;
    v->key = xd_strdup(key);
    return 1;
}

/* FILTER_PACKET: the answer to a caps query of ours (to the host, with our
 * id) fills the cache, and the session that answered gets its last items. */
static int
pp_filter(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *el = xd_stanza_root(ev->st);
    xd_str_t dom = xd_jid_domain(ev->to);
    if (!xd_str_eq_c(dom, ev->host))
        return XD_HOOK_OK; /* to another server (the filter sees outgoing stanzas too) */
    if (xd_stanza_kind_of(el) == XD_STANZA_PRESENCE && xd_jid_local(ev->to).len) {
        pp_remote_presence(ctx, ev->host, ev->st, ev->to);
        return XD_HOOK_OK;
    }
    if (xd_stanza_kind_of(el) == XD_STANZA_MESSAGE && xd_jid_local(ev->to).len &&
        !xd_jid_resource(ev->to).len) {
        const char *mt = xd_el_attr(el, "type");
        if (mt && !strcmp(mt, "error"))
            pp_remote_bounce(ctx, ev->st, ev->to);
        return XD_HOOK_OK;
    }
    if (xd_stanza_kind_of(el) != XD_STANZA_IQ || xd_jid_local(ev->to).len ||
        xd_jid_resource(ev->to).len)
        return XD_HOOK_OK;
    const char *id = xd_el_attr(el, "id");
    const char *type = xd_el_attr(el, "type");
    if (!id || strncmp(id, PP_CAPS_PREFIX, sizeof PP_CAPS_PREFIX - 1) != 0 || !type ||
        (strcmp(type, "result") != 0 && strcmp(type, "error") != 0))
        return XD_HOOK_OK;
    pp_state_t *s = xd_module_state(ctx);
    const pp_conf_t *conf = xd_module_opts(ctx);
    const xd_jid_t *from = xd_stanza_from(ev->st);
    pthread_mutex_lock(&s->mu);
    pp_caps_query_t *q = xd_map_get(&s->asking, xd_str_c(id));
    bool ours = q && from && strcmp(xd_jid_full_str(from).p, q->full) == 0;
    if (ours) {
        xd_map_del(&s->asking, xd_str_c(id));
        xd_map_del(&s->asked_ver, xd_str_c(q->ver));
    }
    pthread_mutex_unlock(&s->mu);
    if (!ours)
        return XD_HOOK_OK;
    const xd_el_t *query = xd_el_child(el, "query", XD_NS_DISCO_INFO);
    char ver[29];
    bool ok = !strcmp(type, "result") && query && xd_caps_ver(query, ver) == 0 &&
              !strcmp(ver, q->ver);
    if (!ok) {
        XD_LOG(NULL, XD_DEBUG, "pep: caps answer not usable", "host=%s from=%s", ev->host,
               q->full);
    } else {
        pp_caps_t *c = xd_new(pp_caps_t);
        for (const xd_el_t *f = xd_el_first_child(query); f; f = xd_el_next(f)) {
            const char *var = xd_el_is(f, "feature", XD_NS_DISCO_INFO) ? xd_el_attr(f, "var")
                                                                        : NULL;
            if (!var)
                continue;
            c->features = xd_realloc(c->features, (c->n + 1) * sizeof *c->features);
            c->features[c->n++] = xd_strdup(var);
        }
        pthread_mutex_lock(&s->mu);
        bool had = xd_map_get(&s->caps, xd_str_c(q->ver)) != NULL;
        bool pinned = xd_map_get(&s->pin_ver, xd_str_c(q->ver)) != NULL;
        if (!had && !pinned &&
            xd_map_count(&s->caps) - s->caps_pinned >= (size_t)conf->caps_cache_size) {
            /* Evict one unpinned entry (any): the unpinned ones are bounded. */
            pp_victim_t victim = { .s = s };
            xd_map_foreach(&s->caps, pp_first_unpinned, &victim);
            if (victim.key)
                pp_caps_free(xd_map_del(&s->caps, xd_str_c(victim.key)));
            xd_free(victim.key);
        }
        pp_caps_free(xd_map_put(&s->caps, xd_str_c(q->ver), c));
        if (!had && pinned)
            s->caps_pinned++;
        pthread_mutex_unlock(&s->mu);
        xd_jid_t *fj = NULL;
        if (q->owner) {
            pp_last_remote_start(ctx, ev->host, q->owner, q->full, q->ver);
        } else if (xd_jid_parse(xd_str_c(q->full), &fj) == 0) {
            pp_last_start(ctx, ev->host, fj, q->ver);
            xd_jid_unref(fj);
        }
    }
    pp_query_free(q);
    xd_stanza_unref(ev->st);
    ev->st = NULL;
    return XD_HOOK_STOP;
}

typedef struct pp_sweep {
    uint64_t now, ttl;
    uint64_t next; /* the first deadline of what stays */
    char **keys;   /* entries to drop */
    size_t n, cap;
} pp_sweep_t;

static void
pp_sweep_key(pp_sweep_t *w, const char *key)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->keys = xd_realloc(w->keys, w->cap * sizeof *w->keys);
    }
    w->keys[w->n++] = xd_strdup(key);
}

/* A caps query past its deadline is dropped. */
static int
pp_sweep_query(void *arg, const char *key, void *val)
{
    pp_sweep_t *w = arg;
    uint64_t deadline = ((pp_caps_query_t *)val)->deadline;
    if (w->now >= deadline)
        pp_sweep_key(w, key);
    else if (deadline < w->next)
        w->next = deadline;
    return 0;
}

/* An account's remote sessions older than ttl go; the account's entry
 * with its last one. */
static int
pp_sweep_remote(void *arg, const char *key, void *val)
{
    pp_sweep_t *w = arg;
    pp_remote_t *rl = val;
    pp_remote_expire(rl, w->now, w->ttl);
    if (!rl->n)
        pp_sweep_key(w, key);
    for (size_t i = 0; i < rl->n; i++)
        if (rl->seen[i] + w->ttl < w->next)
            w->next = rl->seen[i] + w->ttl;
    return 0;
}

/* TICK: caps queries nobody answered in time are forgotten, so that the
 * next session showing that ver is asked again; remote sessions not heard
 * of for remote_resource_ttl too.  Only when one may be due (next_due). */
static int
pp_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    if (ev->worker != 0)
        return XD_HOOK_OK;
    pp_state_t *s = xd_module_state(ctx);
    const pp_conf_t *conf = xd_module_opts(ctx);
    pp_sweep_t w = { .now = pp_now_ms(), .ttl = conf->remote_resource_ttl, .next = UINT64_MAX };
    if (w.now < atomic_load(&s->next_due))
        return XD_HOOK_OK;
    pthread_mutex_lock(&s->mu);
    xd_map_foreach(&s->asking, pp_sweep_query, &w);
    for (size_t i = 0; i < w.n; i++) {
        pp_caps_query_t *q = xd_map_del(&s->asking, xd_str_c(w.keys[i]));
        if (q)
            xd_map_del(&s->asked_ver, xd_str_c(q->ver));
        pp_query_free(q);
        xd_free(w.keys[i]);
    }
    w.n = 0;
    xd_map_foreach(&s->remote, pp_sweep_remote, &w);
    for (size_t i = 0; i < w.n; i++) {
        pp_remote_free(xd_map_del(&s->remote, xd_str_c(w.keys[i])));
        xd_free(w.keys[i]);
    }
    atomic_store(&s->next_due, w.next);
    pthread_mutex_unlock(&s->mu);
    xd_free(w.keys);
    return XD_HOOK_OK;
}

/* ---- disco ----------------------------------------------------------------------------------- */

static const char *const pp_features[] = {
    XD_NS_PUBSUB "#publish",        XD_NS_PUBSUB "#auto-create",
    XD_NS_PUBSUB "#publish-options", XD_NS_PUBSUB "#retrieve-items",
    XD_NS_PUBSUB "#retract-items",  XD_NS_PUBSUB "#delete-items",
    XD_NS_PUBSUB "#delete-nodes",   XD_NS_PUBSUB "#auto-subscribe",
    XD_NS_PUBSUB "#filtered-notifications",
    XD_NS_PUBSUB "#purge-nodes",    XD_NS_PUBSUB "#config-node",
    XD_NS_PUBSUB "#access-presence", XD_NS_PUBSUB "#access-open",
    XD_NS_PUBSUB "#access-whitelist", XD_NS_PUBSUB "#access-roster",
    XD_NS_PUBSUB "#persistent-items",
    XD_NS_PUBSUB "#last-published", XD_NS_PUBSUB "#item-ids",
    XD_NS_PUBSUB "#multi-items",    XD_NS_PUBSUB "#presence-notifications",
    XD_NS_PUBSUB "#create-nodes",   XD_NS_PUBSUB "#create-and-configure",
    XD_NS_PUBSUB "#subscribe",      XD_NS_PUBSUB "#retrieve-subscriptions",
    XD_NS_PUBSUB "#retrieve-affiliations",
    NULL,
};

/* DISCO_SM_ITEMS (on the pool: mod_disco answers an account's disco#items
 * there): the account's nodes the requester may see (XEP-0163 / XEP-0060
 * 5.2). */
static int
pp_disco_items(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)arg;
    xd_db_t *db = xd_module_db(ctx);
    if (ev->node || !ev->from || !db)
        return XD_HOOK_OK;
    bool is_owner = xd_jid_eq_bare(ev->from, ev->to);
    char user[XD_JID_PART_MAX + 1], owner[2 * XD_JID_PART_MAX + 2];
    xd_str_t l = xd_jid_local(ev->to);
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    snprintf(owner, sizeof owner, "%s@%s", user, ev->host);
    pp_nodes_t ns = { 0 };
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(user) };
        rc = xd_db_query(c,
                         "SELECT node, access_model, send_last FROM pep_node"
                         " WHERE host = ? AND username = ? ORDER BY node",
                         key, 2, pp_nodes_row, &ns);
        xd_db_release(c);
    }
    xd_str_t fb = xd_jid_bare_str(ev->from);
    char bare[2 * XD_JID_PART_MAX + 2];
    snprintf(bare, sizeof bare, "%.*s", (int)fb.len, fb.p);
    pse_reader_t rd = { .host = ev->host, .user = user, .who = bare }; /* read once */
    for (size_t i = 0; rc == 0 && i < ns.n; i++) {
        bool ok = is_owner || !strcmp(ns.cfgs[i].access, "open");
        if (!ok && !strcmp(ns.cfgs[i].access, "presence"))
            ok = pse_reader_allows(&rd, &ns.cfgs[i]);
        if (!ok && !strcmp(ns.cfgs[i].access, "roster") && xd_db_acquire(db, &c) == 0) {
            int grc = pp_groups_load(c, ev->host, user, ns.names[i], &ns.cfgs[i]);
            xd_db_release(c);
            ok = grc == 0 && pse_reader_allows(&rd, &ns.cfgs[i]);
        }
        if (!ok)
            continue;
        xd_el_t *it = xd_el_add_child(ev->query, "item", NULL);
        xd_el_set_attr(it, "jid", owner);
        xd_el_set_attr(it, "node", ns.names[i]);
    }
    if (rc != 0)
        XD_LOG(NULL, XD_WARN, "pep: nodes not listed", "host=%s user=%s err=%s", ev->host, user,
               xd_strerror(rc));
    pse_reader_free(&rd);
    pp_nodes_free(&ns);
    return XD_HOOK_OK;
}

/* ---- account removal ------------------------------------------------------------------------- */

static int
pp_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    pp_roster_forget(xd_module_state(ctx), ev->host, ev->user);
    mod_user_rows_delete(ctx, "DELETE FROM pep_item WHERE host = ? AND username = ?", ev->host,
                         ev->user);
    mod_user_rows_delete(ctx, "DELETE FROM pep_node WHERE host = ? AND username = ?", ev->host,
                         ev->user);
    mod_user_rows_delete(ctx, "DELETE FROM pep_node_group WHERE host = ? AND username = ?",
                         ev->host, ev->user);
    mod_user_rows_delete(ctx, "DELETE FROM pep_sub WHERE host = ? AND username = ?", ev->host,
                         ev->user);
    /* Its subscriptions to the host's accounts (their cached lists are
     * read again within a minute; meanwhile a copy reaches no session). */
    mod_user_rows_delete(ctx, "DELETE FROM pep_sub WHERE shost = ? AND suser = ?", ev->host,
                         ev->user);
    return XD_HOOK_OK;
}

/* ---- statistics ------------------------------------------------------------------------------ */

static int
pp_stats_cmd(xd_cmd_call_t *call)
{
    xd_module_ctx_t *ctx = xd_module_cmd_instance(call, "mod_pep", call->args[0].text);
    if (!ctx)
        return XD_ENOTFOUND;
    pp_state_t *s = xd_module_state(ctx);
    pthread_mutex_lock(&s->mu);
    size_t entries = xd_map_count(&s->rosters);
    uint64_t hits = s->roster_hits, loads = s->roster_loads, evictions = s->roster_evictions;
    pthread_mutex_unlock(&s->mu);
    xd_cmd_add(call, "roster_cache_entries %zu", entries);
    xd_cmd_add(call, "roster_cache_hits %llu", (unsigned long long)hits);
    xd_cmd_add(call, "roster_cache_loads %llu", (unsigned long long)loads);
    xd_cmd_add(call, "roster_cache_evictions %llu", (unsigned long long)evictions);
    xd_cmd_add(call, "publishes_in_flight %llu", (unsigned long long)atomic_load(&s->in_flight));
    xd_cmd_add(call, "publish_waits %llu", (unsigned long long)atomic_load(&s->flight_waits));
    xd_module_release(ctx);
    return 0;
}

static const xd_cmd_arg_t pp_stats_args[] = {
    { "host", XD_CMD_HOST, "the served host whose PEP to show" },
};

static const xd_cmd_t pp_stats = {
    .name = "pep_stats",
    .doc = "counters of a host's personal eventing (PEP)",
    .longdoc = "roster_cache_entries: accounts whose roster is in memory (at most "
               "roster_cache_size); roster_cache_hits: publishes that found the owner's roster "
               "there; roster_cache_loads: rosters read from the database (not there, changed, "
               "or older than a minute); roster_cache_evictions: entries dropped to make room "
               "for another account's; publishes_in_flight: publishes whose notifications are "
               "being sent; publish_waits: publishes whose stream waited for its own "
               "notifications (max_publishes_in_flight reached).",
    .args = pp_stats_args,
    .nargs = 1,
    .result = XD_CMD_RES_LIST,
    .fn = pp_stats_cmd,
};

/* ---- module ---------------------------------------------------------------------------------- */

/* ---- XEP-0227 export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ---------------------------- *
 *
 * XEP-0227 5.9: node configurations in <pubsub xmlns='…#owner'> as
 * <configure node=…> with a submitted node_config form, items in <pubsub
 * xmlns='…pubsub'> as <items node=…><item id=…>, oldest first. */

static int
pp_pie_node_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    xd_el_t *owner = arg;
    if (ncols < 1 || cols[0].type != XD_DB_TEXT)
        return 0;
    char node[1024];
    snprintf(node, sizeof node, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    xd_el_set_attr(xd_el_add_child(owner, "configure", XD_NS_PUBSUB_OWNER), "node", node);
    return 0;
}

/* The submitted node_config form of each <configure node=…/> the node
 * rows gave: the engine's form of the node as stored (roster groups too). */
static int
pp_pie_node_forms(xd_db_conn_t *c, const char *host, const char *user, const pp_conf_t *conf,
                  xd_el_t *owner)
{
    pse_limits_t lim = pp_limits(conf);
    for (xd_el_t *ce = xd_el_first_child_mut(owner); ce; ce = xd_el_next_mut(ce)) {
        pp_node_row_t row;
        int rc = pp_node_load(c, host, user, xd_el_attr(ce, "node"), &row);
        if (rc != 0)
            return rc;
        if (row.found)
            pse_cfg_form(ce, "submit", PSE_NS_NODECFG, &row.cfg, &lim);
    }
    return 0;
}

typedef struct pp_pie_items {
    xd_el_t *pubsub; /* <pubsub/> */
    xd_el_t *items;  /* the current node's <items/> */
    char node[1024]; /* its name */
    int rc;
} pp_pie_items_t;

static int
pp_pie_item_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    pp_pie_items_t *p = arg;
    if (ncols < 3)
        return 0;
    char node[1024], id[PP_ID_MAX + 1];
    snprintf(node, sizeof node, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    snprintf(id, sizeof id, "%.*s", (int)cols[1].s.len, cols[1].s.p);
    xd_el_t *payload = NULL;
    if (xd_el_parse(cols[2].s.p, cols[2].s.len, &payload) != 0)
        return 0; /* unreadable: not served either */
    if (!p->items || strcmp(node, p->node) != 0) {
        p->items = xd_el_add_child(p->pubsub, "items", XD_NS_PUBSUB);
        xd_el_set_attr(p->items, "node", node);
        snprintf(p->node, sizeof p->node, "%s", node);
    }
    xd_el_t *item = xd_el_add_child(p->items, "item", XD_NS_PUBSUB);
    xd_el_set_attr(item, "id", id);
    xd_el_append(item, payload);
    return 0;
}

static int
pp_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)arg;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(xd_module_db(ctx), &c);
    xd_el_t *owner = xd_el_new("pubsub", XD_NS_PUBSUB_OWNER);
    pp_pie_items_t p = { .pubsub = xd_el_new("pubsub", XD_NS_PUBSUB) };
    if (rc == 0) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user) };
        rc = xd_db_query(c,
                         "SELECT node FROM pep_node WHERE host = ? AND username = ? ORDER BY node",
                         key, 2, pp_pie_node_row, owner);
        if (rc == 0)
            rc = pp_pie_node_forms(c, ev->host, ev->user, xd_module_opts(ctx), owner);
        if (rc == 0)
            rc = xd_db_query(c,
                             "SELECT node, id, xml FROM pep_item WHERE host = ? AND username = ?"
                             " ORDER BY node, seq",
                             key, 2, pp_pie_item_row, &p);
        xd_db_release(c);
    }
    if (rc == 0 && xd_el_first_child(owner)) {
        xd_el_append(ev->user_el, owner);
        owner = NULL;
    }
    if (rc == 0 && xd_el_first_child(p.pubsub)) {
        xd_el_append(ev->user_el, p.pubsub);
        p.pubsub = NULL;
    }
    xd_el_free(owner);
    xd_el_free(p.pubsub);
    if (rc != 0) {
        ev->rc = rc;
        ev->module = "mod_pep";
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* Creates node with cfg unless it exists (then cfg is what is stored). */
static int
pp_pie_node(xd_db_conn_t *c, xd_hook_account_import_t *ev, const pp_conf_t *conf,
            const char *node, pp_cfg_t *cfg, bool replace)
{
    pp_node_row_t row;
    int rc = pp_node_load(c, ev->host, ev->user, node, &row);
    if (rc != 0 || (row.found && replace))
        return rc != 0 ? rc : pp_node_save(c, ev->host, ev->user, node, cfg, false);
    if (row.found) {
        *cfg = row.cfg;
        return 0;
    }
    xd_db_val_t key[] = { XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user) };
    int64_t n = 0;
    rc = xd_db_query_int64(c, "SELECT COUNT(*) FROM pep_node WHERE host = ? AND username = ?",
                           key, 2, &n);
    if (rc == 0 && n >= conf->max_nodes) {
        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "pep: more nodes than max_nodes");
        return XD_ELIMIT;
    }
    return rc != 0 ? rc : pp_node_save(c, ev->host, ev->user, node, cfg, true);
}

static int
pp_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)arg;
    pp_roster_forget(xd_module_state(ctx), ev->host, ev->user); /* the roster is imported too */
    const pp_conf_t *conf = xd_module_opts(ctx);
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(xd_module_db(ctx), &c);
    bool held = rc == 0;
    /* Configurations first, wherever they are in <user/>. */
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        size_t i = 0;
        for (const xd_el_t *ps = xd_el_first_child(ev->user_el); ps && rc == 0;
             ps = xd_el_next(ps), i++) {
            if (!xd_el_is(ps, "pubsub", pass == 0 ? XD_NS_PUBSUB_OWNER : XD_NS_PUBSUB))
                continue;
            ev->taken[i] = true;
            for (const xd_el_t *e = xd_el_first_child(ps); e && rc == 0; e = xd_el_next(e)) {
                const char *node = xd_el_attr(e, "node");
                bool cfgel = pass == 0 && xd_el_is(e, "configure", XD_NS_PUBSUB_OWNER);
                bool items = pass == 1 && xd_el_is(e, "items", XD_NS_PUBSUB);
                if (!cfgel && !items)
                    continue;
                if (!node || !*node || strlen(node) >= 1024) {
                    snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "pep: a node without a name");
                    rc = XD_EINVAL;
                    break;
                }
                pp_cfg_t cfg;
                pse_cfg_default(&cfg, false);
                if (cfgel) {
                    unsigned set = 0;
                    pse_limits_t lim = pp_limits(conf);
                    const char *why = pse_form_read(xd_el_child(e, "x", XD_NS_DATA),
                                                    PSE_NS_NODECFG, &lim, &cfg, &set);
                    if (why) {
                        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "pep node %s: %s", node, why);
                        rc = XD_EINVAL;
                        break;
                    }
                    rc = pp_pie_node(c, ev, conf, node, &cfg, true);
                    continue;
                }
                rc = pp_pie_node(c, ev, conf, node, &cfg, false);
                int64_t seq = 0;
                for (const xd_el_t *it = xd_el_first_child(e); it && rc == 0;
                     it = xd_el_next(it)) {
                    const char *id = xd_el_attr(it, "id");
                    const xd_el_t *payload = xd_el_first_child(it);
                    if (!xd_el_is(it, "item", XD_NS_PUBSUB))
                        continue;
                    if (!id || !*id || strlen(id) > PP_ID_MAX || !payload) {
                        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX,
                                 "pep node %s: an item without id or payload", node);
                        rc = XD_EINVAL;
                        break;
                    }
                    size_t len;
                    char *xml = xd_el_serialize(payload, NULL, &len);
                    xd_db_val_t row[] = { XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user),
                                          XD_DB_V_CSTR(node),     XD_DB_V_CSTR(id),
                                          XD_DB_V_INT(++seq),     XD_DB_V_INT(time(NULL)),
                                          XD_DB_V_TEXT(((xd_str_t){ xml, len })) };
                    rc = xd_db_query(c,
                                     "INSERT INTO pep_item (host, username, node, id, seq, ts,"
                                     " xml) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     row, 7, NULL, NULL);
                    xd_free(xml);
                }
                if (rc == 0)
                    rc = pp_trim(c, ev->host, ev->user, node, pp_cfg_max(&cfg, conf));
            }
        }
    }
    if (held)
        xd_db_release(c);
    if (rc != 0) {
        ev->rc = rc;
        if (!ev->err[0])
            snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "pep: %s", xd_strerror(rc));
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

static int
pp_start(xd_module_ctx_t *ctx)
{
    if (!xd_module_db(ctx))
        return xd_module_fail(ctx, XD_ECLOSED, "no database");
    pp_state_t *s = xd_new(pp_state_t);
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->next_due, UINT64_MAX);
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->flight_waits, 0);
    xd_module_set_state(ctx, s);
    int rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_PUBSUB, XD_IQ_INLINE, pp_iq, (void *)0);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_PUBSUB_OWNER, XD_IQ_INLINE, pp_iq,
                          (void *)(uintptr_t)1);
    if (rc == 0)
        rc = xd_module_identity(ctx, XD_IQ_USER, "pubsub", "pep", NULL);
    for (size_t i = 0; rc == 0 && pp_features[i]; i++)
        rc = xd_module_feature(ctx, XD_IQ_USER, pp_features[i]);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_AVAILABLE, XD_HOOK_PRIO_DEFAULT, pp_available,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_UNAVAILABLE, XD_HOOK_PRIO_DEFAULT,
                            pp_unavailable, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_FILTER_PACKET, PP_FILTER_PRIO, pp_filter, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_DISCO_SM_ITEMS, XD_HOOK_PRIO_DEFAULT, pp_disco_items,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_TICK, XD_HOOK_PRIO_DEFAULT, pp_tick, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, pp_removed, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ROSTER_CHANGED, XD_HOOK_PRIO_DEFAULT, pp_roster_changed,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, pp_pie_export, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, XD_HOOK_PRIO_DEFAULT, pp_pie_import, NULL);
    if (rc == 0)
        rc = xd_module_command(ctx, &pp_stats);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    return 0;
}

static void
pp_stop(xd_module_ctx_t *ctx)
{
    pp_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    xd_map_free(&s->caps, pp_caps_free);
    xd_map_free(&s->asking, pp_query_free);
    xd_map_free(&s->asked_ver, pp_noop_free);
    xd_map_free(&s->pin_sess, xd_free);
    xd_map_free(&s->pin_ver, pp_noop_free);
    xd_map_free(&s->pin_acct, pp_pins_free);
    xd_map_free(&s->remote, pp_remote_free);
    xd_map_free(&s->rosters, pp_roster_unref_v);
    pthread_mutex_destroy(&s->mu);
    xd_free(s);
}

static const char *const pp_depends[] = { "mod_roster", NULL };

const xd_module_t xd_mod_pep = {
    .abi = XD_MODULE_ABI,
    .name = "mod_pep",
    .doc = "Personal eventing (XEP-0163): pubsub nodes on every account's bare JID",
    .depends = pp_depends,
    .opts = pp_opts,
    .opts_size = sizeof(pp_conf_t),
    .schemas = pp_schemas,
    .start = pp_start,
    .stop = pp_stop,
};
