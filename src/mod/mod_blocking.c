/*
 * mod_blocking.c — the blocking command (XEP-0191, version 1.3).
 *
 * On for a host when `mod_blocking` is listed under `modules`.
 *
 * Protocol (IQs to one's own bare JID, PARALLEL: they write storage):
 *   get <blocklist/>      → the list; the requesting session is remembered
 *                           as one that "requested the blocklist" (§3.2) and
 *                           gets the pushes from then on;
 *   set <block>items      → stored, then pushed as <block/> to the sessions
 *                           that requested the list; an empty <block/> is
 *                           bad-request (§3.3); an item whose 'jid' is not a
 *                           JID is jid-malformed; more than `max_items`
 *                           in the list is not-acceptable;
 *   set <unblock>items    → removed and pushed as <unblock/>; an empty
 *                           <unblock/> removes every item (§3.5);
 *   to another account's bare JID → forbidden; anything else → bad-request.
 *
 * Enforcement (XD_HOOK_FILTER_PACKET, priority 30, before mod_presence's
 * 40): every stanza routed to a served host where the module runs.
 *   from a blocked JID to the user (§3.3): presence dropped without an
 *     answer; message → service-unavailable to the sender (an error message
 *     is dropped); IQ get/set → service-unavailable; other IQs dropped;
 *   from the user to a blocked JID: not-acceptable with
 *     <blocked xmlns='urn:xmpp:blocking:errors'/> back to the user.
 * Items match as in §5: user@domain/resource only that resource,
 * user@domain any resource, domain/resource only that, domain the domain
 * and everything at it.  A user's own resources are never blocked.
 *
 * Presence on a change: a block sends unavailable presence from each
 * available resource of the user to the blocked contacts that may see the
 * user's presence (roster subscription from/both, from mod_roster); an
 * unblock sends them each resource's current presence (§3.3, §3.4).
 *
 * Memory: every list of a host where the module runs is held in a hash
 * table keyed by the bare JID, loaded by start (one query) and changed by
 * the IQ handler after its commit; one rwlock guards the table, the filter
 * takes it for reading only.  Storage stays the truth: a stop forgets the
 * host's lists, a start reads them again.
 *
 * Stanzas that this module itself routes (bounces, presence on a change)
 * are not filtered again: a thread-local flag is set around their
 * xd_route, which runs the filter on the calling thread.
 *
 * Not here: stanzas that do not pass the router (mod_presence delivers
 * broadcasts and probe answers to local sessions itself: it should ask
 * xd_blocking_blocks), stanzas to domains this process does not serve
 * (the filter runs only for served hosts), privacy lists (XEP-0016, which
 * must share this store when it arrives).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/worker.h"
#include "mod/mod_blocking.h"
#include "mod/mod_util.h"
#include "mod/mod_roster.h"
#include "router/router.h"
#include "router/sm.h"
#include "stream/c2s.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

#define BLK_NS_ERRORS "urn:xmpp:blocking:errors"
#define BLK_MAX_RES 64 /* sessions of one account looked at for presence and pushes */

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct blk_conf {
    int max_items; /* JIDs one account may block */
} blk_conf_t;

#define C_ blk_conf_t
static const xd_opt_t blk_opts[] = {
    XD_OPT_INT("max_items", C_, max_items, "1000", 1, 100000,
               "JIDs one account may block; a block that would exceed it is refused "
               "with not-acceptable. Every list is held in memory."),
    XD_OPT_END,
};
#undef C_

const xd_opt_t *
xd_blocking_opts(void)
{
    return blk_opts;
}

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const blk_mig1[] = {
    "CREATE TABLE blocklist ("
    " host TEXT NOT NULL,"
    " username TEXT NOT NULL,"
    " jid TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (host, username, jid))",
    NULL,
};

static const xd_db_migration_t blk_migrations[] = {
    { 1, NULL, blk_mig1 },
    { 0, NULL, NULL },
};

static _Atomic(xd_db_t *) blk_db; /* set by main.c before modules start */

int
xd_blocking_register_migrations(void)
{
    int rc = xd_db_register_migrations("mod_blocking", blk_migrations);
    return rc == XD_EEXIST ? 0 : rc;
}

/* ---- the in-memory lists ----------------------------------------------------------------------- */

/* A session that requested the blocklist (§3.2): it gets the pushes. */
typedef struct blk_req {
    char *full;       /* its full JID (owned) */
    uint64_t conn_id; /* its stream, so that a later session of the same JID is not taken for it */
} blk_req_t;

/* One account's list; exists while it has items or requesters. */
typedef struct blk_user {
    struct blk_user *next; /* bucket chain */
    char *bare;            /* "user@host", the key (owned) */
    char **items;          /* blocked JIDs, normalised, in the order blocked (owned) */
    size_t n, cap;         /* items used / allocated */
    blk_req_t *reqs;       /* sessions that requested the list (owned) */
    size_t nreq, capreq;   /* used / allocated */
} blk_user_t;

/* A host where the module runs. */
typedef struct blk_host {
    struct blk_host *next; /* the list */
    char *host;            /* the served host (owned) */
    int max_items;         /* its max_items */
} blk_host_t;

/* Everything below is guarded by blk_lock: readers (the filter, gets) take
 * it shared, changes exclusive.  No pointer into it escapes the lock. */
static pthread_rwlock_t blk_lock = PTHREAD_RWLOCK_INITIALIZER;
static blk_user_t **blk_tab;      /* buckets */
static size_t blk_nbuckets;       /* a power of two, or 0 before the first insert */
static _Atomic size_t blk_nusers; /* entries: 0 lets the filter return at once */
static blk_host_t *blk_hosts;     /* running instances */

/* Set while this thread routes a stanza the module made itself. */
static _Thread_local bool blk_inner;

static uint64_t
blk_hash(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* The entry of bare JID `key` (len bytes), or NULL.  Lock held. */
static blk_user_t *
blk_find(xd_str_t key)
{
    if (!blk_nbuckets)
        return NULL;
    for (blk_user_t *u = blk_tab[blk_hash(key.p, key.len) & (blk_nbuckets - 1)]; u; u = u->next)
        if (strlen(u->bare) == key.len && memcmp(u->bare, key.p, key.len) == 0)
            return u;
    return NULL;
}

/* The entry of `key`, created when missing.  Write lock held. */
static blk_user_t *
blk_get(xd_str_t key)
{
    blk_user_t *u = blk_find(key);
    if (u)
        return u;
    if (atomic_load(&blk_nusers) + 1 > blk_nbuckets * 2) {
        size_t nb = blk_nbuckets ? blk_nbuckets * 2 : 64;
        blk_user_t **tab = xd_calloc(nb, sizeof *tab);
        for (size_t i = 0; i < blk_nbuckets; i++)
            for (blk_user_t *e = blk_tab[i], *next; e; e = next) {
                next = e->next;
                size_t b = blk_hash(e->bare, strlen(e->bare)) & (nb - 1);
                e->next = tab[b];
                tab[b] = e;
            }
        xd_free(blk_tab);
        blk_tab = tab;
        blk_nbuckets = nb;
    }
    u = xd_new(blk_user_t);
    u->bare = xd_strndup(key.p, key.len);
    size_t b = blk_hash(key.p, key.len) & (blk_nbuckets - 1);
    u->next = blk_tab[b];
    blk_tab[b] = u;
    atomic_fetch_add(&blk_nusers, 1);
    return u;
}

static void
blk_user_free(blk_user_t *u)
{
    for (size_t i = 0; i < u->n; i++)
        xd_free(u->items[i]);
    for (size_t i = 0; i < u->nreq; i++)
        xd_free(u->reqs[i].full);
    xd_free(u->items);
    xd_free(u->reqs);
    xd_free(u->bare);
    xd_free(u);
}

/* Unlinks and frees u when it holds nothing (force: in any case).  Write lock held. */
static void
blk_drop_if_empty(blk_user_t *u, bool force)
{
    if (!force && (u->n || u->nreq))
        return;
    size_t b = blk_hash(u->bare, strlen(u->bare)) & (blk_nbuckets - 1);
    for (blk_user_t **pp = &blk_tab[b]; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            atomic_fetch_sub(&blk_nusers, 1);
            blk_user_free(u);
            return;
        }
}

static ssize_t
blk_item_index(const blk_user_t *u, const char *jid)
{
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->items[i], jid) == 0)
            return (ssize_t)i;
    return -1;
}

/* Adds jid to u unless present.  Write lock held. */
static void
blk_item_add(blk_user_t *u, const char *jid)
{
    if (blk_item_index(u, jid) >= 0)
        return;
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 8;
        u->items = xd_realloc(u->items, u->cap * sizeof *u->items);
    }
    u->items[u->n++] = xd_strdup(jid);
}

/* Removes jid from u, keeping the order.  Write lock held. */
static void
blk_item_del(blk_user_t *u, const char *jid)
{
    ssize_t i = blk_item_index(u, jid);
    if (i < 0)
        return;
    xd_free(u->items[i]);
    memmove(&u->items[i], &u->items[i + 1], (u->n - (size_t)i - 1) * sizeof *u->items);
    u->n--;
}

static bool
blk_str_is(xd_str_t a, const char *b)
{
    return strlen(b) == a.len && memcmp(a.p, b, a.len) == 0;
}

/* Does item (a normalised JID) match j (XEP-0191 §5)? */
static bool
blk_item_matches(const char *item, const xd_jid_t *j)
{
    xd_str_t dom = xd_jid_domain(j), res = xd_jid_resource(j);
    if (blk_str_is(xd_jid_full_str(j), item) || blk_str_is(xd_jid_bare_str(j), item) ||
        blk_str_is(dom, item))
        return true;
    if (res.len) { /* domain/resource */
        size_t il = strlen(item);
        return il == dom.len + 1 + res.len && memcmp(item, dom.p, dom.len) == 0 &&
               item[dom.len] == '/' && memcmp(item + dom.len + 1, res.p, res.len) == 0;
    }
    return false;
}

/* Does the list of user's account block j?  Read lock held. */
static bool
blk_blocked_locked(const xd_jid_t *user, const xd_jid_t *j)
{
    if (xd_jid_local(user).len == 0 || xd_jid_eq_bare(user, j))
        return false;
    const blk_user_t *u = blk_find(xd_jid_bare_str(user));
    if (!u)
        return false;
    for (size_t i = 0; i < u->n; i++)
        if (blk_item_matches(u->items[i], j))
            return true;
    return false;
}

bool
xd_blocking_blocks(const xd_jid_t *user, const xd_jid_t *other)
{
    if (!user || !other || atomic_load(&blk_nusers) == 0)
        return false;
    pthread_rwlock_rdlock(&blk_lock);
    bool r = blk_blocked_locked(user, other);
    pthread_rwlock_unlock(&blk_lock);
    return r;
}

/* Remembers that session (full, conn_id) requested the list. */
static void
blk_req_add(const xd_jid_t *full, uint64_t conn_id)
{
    const char *f = xd_jid_full_str(full).p;
    pthread_rwlock_wrlock(&blk_lock);
    blk_user_t *u = blk_get(xd_jid_bare_str(full));
    size_t i;
    for (i = 0; i < u->nreq; i++)
        if (strcmp(u->reqs[i].full, f) == 0)
            break;
    if (i == u->nreq) {
        if (u->nreq == u->capreq) {
            u->capreq = u->capreq ? u->capreq * 2 : 4;
            u->reqs = xd_realloc(u->reqs, u->capreq * sizeof *u->reqs);
        }
        u->reqs[u->nreq++].full = xd_strdup(f);
    }
    u->reqs[i].conn_id = conn_id;
    pthread_rwlock_unlock(&blk_lock);
}

/* Forgets the requester with this full JID. */
static void
blk_req_del(const xd_jid_t *full)
{
    if (atomic_load(&blk_nusers) == 0)
        return;
    pthread_rwlock_wrlock(&blk_lock);
    blk_user_t *u = blk_find(xd_jid_bare_str(full));
    if (u) {
        for (size_t i = 0; i < u->nreq; i++)
            if (blk_str_is(xd_jid_full_str(full), u->reqs[i].full)) {
                xd_free(u->reqs[i].full);
                u->reqs[i] = u->reqs[--u->nreq];
                break;
            }
        blk_drop_if_empty(u, false);
    }
    pthread_rwlock_unlock(&blk_lock);
}

/* Is the session (full JID, conn_id) one that requested u's list?  Read lock held. */
static bool
blk_is_req(const blk_user_t *u, const xd_jid_t *full, uint64_t conn_id)
{
    for (size_t i = 0; u && i < u->nreq; i++)
        if (u->reqs[i].conn_id == conn_id && blk_str_is(xd_jid_full_str(full), u->reqs[i].full))
            return true;
    return false;
}

/* ---- per-host instances ------------------------------------------------------------------------ */

/* max_items of host, or 0 when the module does not run there.  Lock held. */
static int
blk_host_max(const char *host)
{
    for (blk_host_t *h = blk_hosts; h; h = h->next)
        if (strcmp(h->host, host) == 0)
            return h->max_items;
    return 0;
}

typedef struct blk_load {
    const char *host; /* the host being loaded */
    size_t rows;      /* rows read */
} blk_load_t;

/* One stored row (username, jid) into the table.  Write lock held. */
static int
blk_load_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    blk_load_t *l = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    char *bare = xd_asprintf("%.*s@%s", (int)cols[0].s.len, cols[0].s.p, l->host);
    char *jid = xd_strndup(cols[1].s.p, cols[1].s.len);
    blk_item_add(blk_get(xd_str_c(bare)), jid);
    xd_free(jid);
    xd_free(bare);
    l->rows++;
    return 0;
}

/* Forgets every list of `host`.  Write lock held. */
static void
blk_forget_host(const char *host)
{
    for (size_t b = 0; b < blk_nbuckets; b++)
        for (blk_user_t *u = blk_tab[b], *next; u; u = next) {
            next = u->next;
            const char *at = strchr(u->bare, '@');
            if (at && strcmp(at + 1, host) == 0)
                blk_drop_if_empty(u, true);
        }
}

/* ---- routing helpers --------------------------------------------------------------------------- */

/* Routes st (reference taken over) without filtering it again. */
static void
blk_route(xd_stanza_t *st)
{
    if (!st)
        return;
    bool was = blk_inner;
    blk_inner = true;
    xd_route(st);
    blk_inner = was;
}

/* The user's presence to contacts matched by items, from each available
 * resource: unavailable (block) or the resource's current presence
 * (unblock).  Only contacts that may see it (roster from/both).  Blocking
 * (roster storage): pool only. */
typedef struct blk_pres {
    const char *const *items; /* the items changed */
    size_t nitems;            /* how many */
    xd_sm_entry_t *res;       /* the user's sessions */
    size_t nres;              /* how many */
    bool available;           /* unblock: current presence; block: unavailable */
} blk_pres_t;

static void
blk_pres_send(blk_pres_t *p, const char *to)
{
    for (size_t r = 0; r < p->nres; r++) {
        const xd_sm_entry_t *e = &p->res[r];
        if (!e->available)
            continue;
        xd_el_t *el;
        if (p->available) {
            if (!e->presence)
                continue;
            el = xd_stanza_edit(e->presence);
        } else {
            el = xd_el_new("presence", NULL);
            xd_el_set_attr(el, "type", "unavailable");
        }
        xd_el_set_attr(el, "from", xd_jid_full_str(e->jid).p);
        xd_el_set_attr(el, "to", to);
        blk_route(xd_el_freeze(el));
    }
}

static int
blk_pres_contact(void *arg, const char *contact)
{
    blk_pres_t *p = arg;
    xd_jid_t *c = NULL;
    if (xd_jid_parse(xd_str_c(contact), &c) != 0)
        return 0;
    for (size_t i = 0; i < p->nitems; i++) {
        xd_jid_t *it = NULL;
        if (xd_jid_parse(xd_str_c(p->items[i]), &it) != 0)
            continue;
        const char *to = NULL;
        if (xd_jid_eq_bare(it, c) && xd_jid_local(it).len)
            to = p->items[i]; /* bare, or one resource of the contact */
        else if (xd_jid_local(it).len == 0 && xd_jid_resource(it).len == 0 &&
                 xd_str_eq(xd_jid_domain(it), xd_jid_domain(c)))
            to = contact; /* a domain item covers the contact */
        if (to)
            blk_pres_send(p, to);
        xd_jid_unref(it);
    }
    xd_jid_unref(c);
    return 0;
}

static void
blk_presence(const char *host, const char *user, const xd_jid_t *bare, const char *const *items,
             size_t nitems, bool available)
{
    xd_sm_entry_t res[BLK_MAX_RES];
    size_t n = xd_sm_resources(bare, res, BLK_MAX_RES);
    if (n > BLK_MAX_RES)
        n = BLK_MAX_RES;
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any |= res[i].available;
    if (any) {
        blk_pres_t p = { items, nitems, res, n, available };
        mod_roster_contacts(host, user, MOD_ROSTER_FROM, blk_pres_contact, &p); /* best effort */
    }
    for (size_t i = 0; i < n; i++)
        xd_sm_entry_clear(&res[i]);
}

/* Sends <name xmlns='urn:xmpp:blocking'>items</name> as an IQ set to each
 * session of `bare` that requested the list.  Any thread. */
static void
blk_push(const xd_jid_t *bare, const char *name, const char *const *items, size_t nitems)
{
    static _Atomic unsigned long push_seq;
    xd_sm_entry_t res[BLK_MAX_RES];
    size_t n = xd_sm_resources(bare, res, BLK_MAX_RES);
    if (n > BLK_MAX_RES)
        n = BLK_MAX_RES;
    bool want[BLK_MAX_RES] = { 0 };
    pthread_rwlock_rdlock(&blk_lock);
    const blk_user_t *u = blk_find(xd_jid_bare_str(bare));
    for (size_t i = 0; i < n; i++)
        want[i] = blk_is_req(u, res[i].jid, res[i].conn_id);
    pthread_rwlock_unlock(&blk_lock);
    for (size_t i = 0; i < n; i++) {
        if (want[i]) {
            char id[48];
            snprintf(id, sizeof id, "blockpush%lu", ++push_seq);
            xd_el_t *iq = xd_el_new("iq", NULL);
            xd_el_set_attr(iq, "type", "set");
            xd_el_set_attr(iq, "id", id);
            xd_el_set_attr(iq, "to", xd_jid_full_str(res[i].jid).p);
            xd_el_t *q = xd_el_add_child(iq, name, XD_NS_BLOCKING);
            for (size_t k = 0; k < nitems; k++)
                xd_el_set_attr(xd_el_add_child(q, "item", XD_NS_BLOCKING), "jid", items[k]);
            xd_c2s_deliver(res[i].worker, res[i].conn_id, xd_el_freeze(iq));
        }
        xd_sm_entry_clear(&res[i]);
    }
}

/* ---- the filter -------------------------------------------------------------------------------- */

static int
blk_filter(void *evp, void *arg)
{
    (void)arg;
    xd_hook_filter_t *ev = evp;
    if (blk_inner || atomic_load(&blk_nusers) == 0 || !ev->st)
        return XD_HOOK_OK;
    const xd_el_t *root = xd_stanza_root(ev->st);
    const char *from_s = xd_el_attr(root, "from"), *to_s = xd_el_attr(root, "to");
    xd_jid_t *from = NULL, *to = NULL;
    if (!from_s || !to_s || xd_jid_parse(xd_str_c(from_s), &from) != 0)
        return XD_HOOK_OK;
    if (xd_jid_parse(xd_str_c(to_s), &to) != 0) {
        xd_jid_unref(from);
        return XD_HOOK_OK;
    }
    pthread_rwlock_rdlock(&blk_lock);
    bool inbound = blk_blocked_locked(to, from);
    bool outbound = !inbound && blk_blocked_locked(from, to);
    pthread_rwlock_unlock(&blk_lock);
    xd_jid_unref(from);
    xd_jid_unref(to);
    if (!inbound && !outbound)
        return XD_HOOK_OK;

    xd_stanza_kind kind = xd_stanza_kind_of(root);
    xd_stanza_t *err = NULL;
    if (inbound) {
        /* §3.3: presence never answered; messages and IQ requests get
         * service-unavailable (xd_stanza_error gives NULL for errors and
         * IQ results, which are dropped). */
        if (kind == XD_STANZA_MESSAGE || (kind == XD_STANZA_IQ && xd_iq_is_request(root)))
            err = xd_stanza_error(ev->st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    } else {
        err = xd_stanza_error(ev->st, XD_COND_NOT_ACCEPTABLE, NULL);
        if (err) {
            xd_el_t *e = xd_stanza_edit(err);
            xd_stanza_unref(err);
            xd_el_t *eel = xd_el_child_mut(e, "error", NULL);
            if (eel)
                xd_el_add_child(eel, "blocked", BLK_NS_ERRORS);
            err = xd_el_freeze(e);
        }
    }
    XD_LOG(NULL, XD_DEBUG, "blocked stanza", "from=%s to=%s dir=%s answer=%s", from_s, to_s,
           inbound ? "in" : "out", err ? "error" : "none");
    blk_route(err);
    xd_stanza_unref(ev->st);
    ev->st = NULL;
    return XD_HOOK_STOP;
}

/* ---- the IQ handler ---------------------------------------------------------------------------- */

typedef struct blk_change {
    const char *host;         /* the account */
    const char *user;
    const char *const *items; /* normalised JIDs */
    size_t n;                 /* how many; 0 with !block = all */
    bool block;               /* insert (else delete) */
    int64_t now;              /* seconds since the epoch */
} blk_change_t;

static int
blk_change_tx(xd_db_conn_t *c, void *arg)
{
    const blk_change_t *ch = arg;
    int rc = 0;
    if (!ch->block && ch->n == 0) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(ch->host), XD_DB_V_CSTR(ch->user) };
        return xd_db_query(c, "DELETE FROM blocklist WHERE host = ? AND username = ?", key, 2,
                           NULL, NULL);
    }
    for (size_t i = 0; i < ch->n && rc >= 0; i++) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(ch->host), XD_DB_V_CSTR(ch->user),
                              XD_DB_V_CSTR(ch->items[i]), XD_DB_V_INT(ch->now) };
        rc = xd_db_query(c, "DELETE FROM blocklist WHERE host = ? AND username = ? AND jid = ?",
                         key, 3, NULL, NULL);
        if (rc >= 0 && ch->block)
            rc = xd_db_query(c,
                             "INSERT INTO blocklist (host, username, jid, created_at) "
                             "VALUES (?, ?, ?, ?)",
                             key, 4, NULL, NULL);
    }
    return rc;
}

static void
blk_items_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xd_free(v[i]);
    xd_free(v);
}

/* The normalised, de-duplicated 'jid's of el's <item/> children into *out.
 * 0, or the error reply to send. */
static xd_stanza_t *
blk_parse_items(const xd_iq_req_t *req, char ***out, size_t *nout)
{
    size_t cap = xd_el_child_count(req->payload), n = 0;
    char **v = xd_calloc(cap ? cap : 1, sizeof *v);
    for (const xd_el_t *c = xd_el_first_child(req->payload); c; c = xd_el_next(c)) {
        if (!xd_el_is(c, "item", XD_NS_BLOCKING))
            continue;
        const char *j = xd_el_attr(c, "jid");
        xd_jid_t *jid = NULL;
        if (!j || xd_jid_parse(xd_str_c(j), &jid) != 0) {
            blk_items_free(v, n);
            return xd_stanza_error(req->iq, XD_COND_JID_MALFORMED,
                                   j ? "an item's jid is not a JID" : "an item has no jid");
        }
        const char *s = xd_jid_full_str(jid).p;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(v[i], s) == 0;
        if (!dup)
            v[n++] = xd_strdup(s);
        xd_jid_unref(jid);
    }
    *out = v;
    *nout = n;
    return NULL;
}

static xd_stanza_t *
blk_iq(const xd_iq_req_t *req)
{
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    bool get = type && strcmp(type, "get") == 0;
    const char *name = xd_el_name(req->payload);
    if (!xd_el_is(req->payload, name, XD_NS_BLOCKING))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    if (!xd_jid_eq_bare(req->from, req->to))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "only your own block list");
    xd_str_t l = xd_jid_local(req->to);
    char user[XD_JID_PART_MAX + 1];
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);

    if (get) {
        if (strcmp(name, "blocklist") != 0)
            return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <blocklist/>");
        xd_sm_entry_t e;
        if (!xd_jid_is_bare(req->from) && xd_sm_find(req->from, &e) == 0) {
            blk_req_add(req->from, e.conn_id);
            xd_sm_entry_clear(&e);
        }
        xd_el_t *r = xd_iq_result_builder(req->iq);
        xd_el_t *q = xd_el_add_child(r, "blocklist", XD_NS_BLOCKING);
        pthread_rwlock_rdlock(&blk_lock);
        const blk_user_t *u = blk_find(xd_jid_bare_str(req->to));
        for (size_t i = 0; u && i < u->n; i++)
            xd_el_set_attr(xd_el_add_child(q, "item", XD_NS_BLOCKING), "jid", u->items[i]);
        pthread_rwlock_unlock(&blk_lock);
        return xd_el_freeze(r);
    }

    bool block = strcmp(name, "block") == 0;
    if (!block && strcmp(name, "unblock") != 0)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <block/> or <unblock/>");
    char **items = NULL;
    size_t n = 0;
    xd_stanza_t *bad = blk_parse_items(req, &items, &n);
    if (bad)
        return bad;
    if (block && n == 0) { /* §3.3 */
        blk_items_free(items, n);
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "<block/> needs at least one item");
    }

    /* Unblock all: the items are the whole list, for presence. */
    bool all = !block && n == 0;
    int max;
    size_t fresh = 0;
    pthread_rwlock_rdlock(&blk_lock);
    max = blk_host_max(req->host);
    const blk_user_t *u = blk_find(xd_jid_bare_str(req->to));
    if (all && u && u->n) {
        xd_free(items);
        items = xd_calloc(u->n, sizeof *items);
        for (n = 0; n < u->n; n++)
            items[n] = xd_strdup(u->items[n]);
    }
    for (size_t i = 0; block && i < n; i++)
        fresh += !u || blk_item_index(u, items[i]) < 0;
    size_t have = u ? u->n : 0;
    pthread_rwlock_unlock(&blk_lock);
    if (!max) {
        blk_items_free(items, n);
        return xd_stanza_error(req->iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    if (block && have + fresh > (size_t)max) {
        blk_items_free(items, n);
        char text[96];
        snprintf(text, sizeof text, "a block list holds at most %d JIDs", max);
        return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE, text);
    }

    blk_change_t ch = { .host = req->host, .user = user, .items = (const char *const *)items,
                        .n = all ? 0 : n, .block = block, .now = (int64_t)time(NULL) };
    xd_db_t *db = atomic_load(&blk_db);
    int rc = db ? xd_db_tx(db, blk_change_tx, &ch) : XD_ECLOSED;
    if (rc < 0) {
        XD_LOG(NULL, XD_ERROR, "block list store failed", "host=%s user=%s err=%s", req->host,
               user, xd_strerror(rc));
        blk_items_free(items, n);
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }

    /* §3.3: unavailable to the newly blocked before the filter knows them. */
    if (block)
        blk_presence(req->host, user, req->to, (const char *const *)items, n, false);
    pthread_rwlock_wrlock(&blk_lock);
    blk_user_t *w = block ? blk_get(xd_jid_bare_str(req->to)) : blk_find(xd_jid_bare_str(req->to));
    if (w) {
        for (size_t i = 0; i < n; i++) {
            if (block)
                blk_item_add(w, items[i]);
            else
                blk_item_del(w, items[i]);
        }
        blk_drop_if_empty(w, false);
    }
    pthread_rwlock_unlock(&blk_lock);
    /* §3.4: current presence to the unblocked. */
    if (!block)
        blk_presence(req->host, user, req->to, (const char *const *)items, n, true);
    blk_push(req->to, name, (const char *const *)items, all ? 0 : n);
    blk_items_free(items, n);
    return xd_iq_result(req->iq);
}

/* ---- hooks ------------------------------------------------------------------------------------- */

static int
blk_closed(void *evp, void *arg)
{
    (void)arg;
    const xd_hook_session_t *ev = evp;
    blk_req_del(ev->jid);
    return XD_HOOK_OK;
}

/* XD_HOOK_USER_REMOVED: the account's list goes with it. */
static int
blk_removed(void *evp, void *arg)
{
    (void)arg;
    const xd_hook_user_t *ev = evp;
    char *bare = xd_asprintf("%s@%s", ev->user, ev->host);
    pthread_rwlock_wrlock(&blk_lock);
    blk_user_t *u = blk_find(xd_str_c(bare));
    if (u)
        blk_drop_if_empty(u, true);
    pthread_rwlock_unlock(&blk_lock);
    xd_free(bare);

    mod_user_rows_delete(atomic_load(&blk_db),
                         "DELETE FROM blocklist WHERE host = ? AND username = ?", ev->host,
                         ev->user);
    return XD_HOOK_OK;
}

void
xd_blocking_set_db(xd_db_t *db)
{
    xd_db_t *old = atomic_exchange(&blk_db, db);
    if (db && !old)
        xd_hook_add(XD_HOOK_USER_REMOVED, NULL, XD_HOOK_PRIO_DEFAULT, blk_removed, NULL);
    else if (!db && old)
        xd_hook_remove(XD_HOOK_USER_REMOVED, NULL, blk_removed, NULL);
}

/* ---- module ------------------------------------------------------------------------------------ */

static void
blk_stop(xd_module_ctx_t *ctx)
{
    blk_host_t *h = xd_module_state(ctx);
    if (!h)
        return;
    pthread_rwlock_wrlock(&blk_lock);
    for (blk_host_t **pp = &blk_hosts; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    blk_forget_host(h->host);
    pthread_rwlock_unlock(&blk_lock);
    xd_free(h->host);
    xd_free(h);
    xd_module_set_state(ctx, NULL);
}

static int
blk_start(xd_module_ctx_t *ctx)
{
    const blk_conf_t *conf = xd_module_opts(ctx);
    const char *host = xd_module_host(ctx);
    xd_db_t *db = atomic_load(&blk_db);
    if (!db)
        return xd_module_fail(ctx, XD_ECLOSED, "no database (xd_blocking_set_db not called)");

    blk_host_t *h = xd_new(blk_host_t);
    h->host = xd_strdup(host);
    h->max_items = conf->max_items;
    xd_db_conn_t *c;
    blk_load_t l = { .host = host };
    int rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(host) };
        pthread_rwlock_wrlock(&blk_lock);
        blk_forget_host(host);
        rc = xd_db_query(c,
                         "SELECT username, jid FROM blocklist WHERE host = ? "
                         "ORDER BY username, created_at, jid",
                         key, 1, blk_load_row, &l);
        if (rc >= 0) {
            h->next = blk_hosts;
            blk_hosts = h;
        } else {
            blk_forget_host(host);
        }
        pthread_rwlock_unlock(&blk_lock);
        xd_db_release(c);
    }
    if (rc < 0) {
        xd_free(h->host);
        xd_free(h);
        return xd_module_fail(ctx, rc, "cannot load the block lists: %s", xd_strerror(rc));
    }
    xd_module_set_state(ctx, h);
    rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_BLOCKING, XD_IQ_PARALLEL, blk_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_FILTER_PACKET, 30, blk_filter, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_SESSION_CLOSED, XD_HOOK_PRIO_DEFAULT, blk_closed, NULL);
    if (rc != 0) {
        blk_stop(ctx);
        return xd_module_fail(ctx, rc, "cannot register the blocking handlers: %s",
                              xd_strerror(rc));
    }
    XD_LOG(NULL, XD_INFO, "block lists loaded", "host=%s items=%zu", host, l.rows);
    return 0;
}

static const xd_module_t blk_module = {
    .abi = XD_MODULE_ABI,
    .name = "mod_blocking",
    .doc = "Blocking command (XEP-0191): block lists in storage, enforced on routing",
    .opts = blk_opts,
    .opts_size = sizeof(blk_conf_t),
    .start = blk_start,
    .stop = blk_stop,
};

int
xd_blocking_register_builtin(void)
{
    return xd_module_register_builtin(&blk_module);
}
