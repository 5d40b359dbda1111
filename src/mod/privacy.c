/*
 * privacy.c — the privacy engine shared by mod_privacy (XEP-0016) and
 * mod_blocking (XEP-0191): matcher, store, storage, filter, pushes and
 * presence after a change.  privacy.h states the rules; this file follows
 * it section by section.
 *
 * Layout of the store (all under prv_lock):
 *
 *   prv_accts (xd_map, bare JID) ─► prv_acct ─► lists[]  (xd_privacy_list_t, items sorted)
 *                                                def      (index into lists, or -1)
 *                                                sess[]   (full JID, stream, active list, flags)
 *                                                roster[] (sorted by contact JID; only while a
 *                                                          list has a group/subscription item)
 *   prv_hosts ─► prv_host (host, which modules run there, their limits)
 *
 * An account entry exists while it has lists or sessions; prv_naccts (an
 * atomic copy of the count) lets the filter return at once when nobody
 * has any.  Writers hold prv_change_mu from their first read to their
 * last push, so a read-modify-write (block, unblock, conflicts) sees no
 * other writer; readers never take it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "privacy.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

#define PRV_NS_BLOCK_ERRORS "urn:xmpp:blocking:errors"
#define PRV_MAX_RES 64 /* sessions of one account looked at (as the router does) */
#define PRV_FILTER_PRIO 30 /* before mod_presence (40): privacy is the first delivery rule */

/* ---- the matcher ----------------------------------------------------------------------------- */

void
xd_privacy_list_clear(xd_privacy_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        xd_free(l->items[i].value);
    xd_free(l->items);
    xd_free(l->name);
    memset(l, 0, sizeof *l);
}

void
xd_privacy_list_add(xd_privacy_list_t *l, const xd_privacy_item_t *it)
{
    l->items = xd_realloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n] = *it;
    l->items[l->n].value = it->value ? xd_strdup(it->value) : NULL;
    l->n++;
}

void
xd_privacy_list_copy(xd_privacy_list_t *dst, const xd_privacy_list_t *src)
{
    memset(dst, 0, sizeof *dst);
    dst->name = src->name ? xd_strdup(src->name) : NULL;
    for (size_t i = 0; i < src->n; i++)
        xd_privacy_list_add(dst, &src->items[i]);
}

static int
prv_item_cmp(const void *a, const void *b)
{
    uint32_t x = ((const xd_privacy_item_t *)a)->order, y = ((const xd_privacy_item_t *)b)->order;
    return x < y ? -1 : x > y;
}

int
xd_privacy_list_sort(xd_privacy_list_t *l)
{
    if (l->n > 1)
        qsort(l->items, l->n, sizeof *l->items, prv_item_cmp);
    for (size_t i = 1; i < l->n; i++)
        if (l->items[i].order == l->items[i - 1].order)
            return XD_EEXIST;
    return 0;
}

bool
xd_privacy_list_needs_roster(const xd_privacy_list_t *l)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (l->items[i].type == XD_PRIVACY_GROUP || l->items[i].type == XD_PRIVACY_SUBSCRIPTION)
            return true;
    return false;
}

static bool
prv_str_is(xd_str_t a, const char *b, size_t blen)
{
    return a.len == blen && (blen == 0 || memcmp(a.p, b, blen) == 0);
}

bool
xd_privacy_jid_matches(const char *item, const xd_jid_t *j)
{
    if (!item || !j)
        return false;
    size_t len = strlen(item);
    const char *slash = memchr(item, '/', len);
    size_t bare_len = slash ? (size_t)(slash - item) : len;
    bool local = memchr(item, '@', bare_len) != NULL;
    xd_str_t dom = xd_jid_domain(j);
    if (local && slash) /* user@domain/resource: only that resource */
        return prv_str_is(xd_jid_full_str(j), item, len);
    if (local) /* user@domain: any resource */
        return prv_str_is(xd_jid_bare_str(j), item, len);
    if (slash) /* domain/resource: that resource at the domain, whoever */
        return prv_str_is(dom, item, bare_len) &&
               prv_str_is(xd_jid_resource(j), slash + 1, len - bare_len - 1);
    return prv_str_is(dom, item, len); /* domain: everything at it */
}

static int
prv_sub_of(const char *v)
{
    return v ? xd_roster_sub_parse(v) : -1;
}

bool
xd_privacy_item_matches(const xd_privacy_item_t *it, const xd_privacy_peer_t *p,
                        xd_privacy_kind k)
{
    if (it->kinds != 0 && (k == XD_PRIVACY_OTHER || !(it->kinds & (unsigned)k)))
        return false;
    switch (it->type) {
    case XD_PRIVACY_ANY:
        return true;
    case XD_PRIVACY_JID:
        return xd_privacy_jid_matches(it->value, p->jid);
    case XD_PRIVACY_GROUP:
        for (size_t i = 0; it->value && i < p->ngroups; i++)
            if (strcmp(p->groups[i], it->value) == 0)
                return true;
        return false;
    case XD_PRIVACY_SUBSCRIPTION:
        return prv_sub_of(it->value) == p->sub;
    }
    return false;
}

const xd_privacy_item_t *
xd_privacy_decide(const xd_privacy_list_t *l, const xd_privacy_peer_t *p, xd_privacy_kind k)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (xd_privacy_item_matches(&l->items[i], p, k))
            return &l->items[i];
    return NULL;
}

bool
xd_privacy_is_block_item(const xd_privacy_item_t *it)
{
    return it && it->type == XD_PRIVACY_JID && it->deny && it->kinds == 0 && it->value;
}

xd_privacy_kind
xd_privacy_kind_of(const xd_el_t *el, bool outgoing)
{
    switch (xd_stanza_kind_of(el)) {
    case XD_STANZA_MESSAGE:
        return outgoing ? XD_PRIVACY_OTHER : XD_PRIVACY_MESSAGE;
    case XD_STANZA_IQ:
        return outgoing ? XD_PRIVACY_OTHER : XD_PRIVACY_IQ;
    case XD_STANZA_PRESENCE: {
        /* XEP-0016 2.1 note: notifications are presence without a type or
         * 'unavailable'; subscriptions and probes are not. */
        const char *t = xd_el_attr(el, "type");
        if (t && strcmp(t, "unavailable") != 0)
            return XD_PRIVACY_OTHER;
        return outgoing ? XD_PRIVACY_PRESENCE_OUT : XD_PRIVACY_PRESENCE_IN;
    }
    default:
        return XD_PRIVACY_OTHER;
    }
}

/* ---- the store ------------------------------------------------------------------------------- */

/* One bound session that did something the engine remembers (prv_lock). */
typedef struct prv_sess {
    char *full;          /* its full JID (owned) */
    uint64_t conn_id;    /* its stream: a later session of the same JID is another one */
    char *active;        /* its active list's name (owned), or NULL */
    bool want_privacy;   /* asked for privacy: gets list pushes (XEP-0016 2.6) */
    bool want_blocklist; /* asked for the blocklist: gets XEP-0191 pushes (3.2) */
} prv_sess_t;

/* One roster contact, as the rules need it (prv_lock). */
typedef struct prv_contact {
    char *jid;      /* its bare JID (owned), the sort key */
    int sub;        /* xd_roster_sub */
    char **groups;  /* its groups (owned) */
    size_t ngroups; /* how many */
} prv_contact_t;

/* One account (prv_lock). */
typedef struct prv_acct {
    char *bare;               /* "user@host", the key (owned) */
    xd_privacy_list_t *lists; /* its lists (owned), in no particular order */
    size_t nlists;            /* how many */
    int def;                  /* index of the default list, or -1 */
    prv_sess_t *sess;         /* remembered sessions (owned) */
    size_t nsess;             /* how many */
    size_t nactive;           /* sessions with an active list (0: the default decides alone) */
    bool has_roster;          /* roster below is kept (some list needs it) */
    prv_contact_t *roster;    /* sorted by jid (owned) */
    size_t nroster;           /* how many */
} prv_acct_t;

/* A host where mod_blocking and/or mod_privacy run (prv_lock). */
typedef struct prv_host {
    struct prv_host *next;   /* the list */
    char *host;              /* the host (owned) */
    unsigned by;             /* xd_privacy_user bits */
    xd_privacy_limits_t lim; /* the modules' limits */
} prv_host_t;

static pthread_rwlock_t prv_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t prv_change_mu = PTHREAD_MUTEX_INITIALIZER; /* writers, one at a time */
static xd_map_t prv_accts = XD_MAP_INIT; /* bare JID → prv_acct_t (prv_lock) */
static _Atomic size_t prv_naccts;  /* its count, read without the lock */
static prv_host_t *prv_hosts;      /* attached hosts (prv_lock) */
static _Atomic(xd_db_t *) prv_db;  /* the database, from the first module that attached */
static _Thread_local bool prv_inner; /* this thread routes a stanza the engine made */

/* The entry of bare JID key, or NULL.  Lock held. */
static prv_acct_t *
prv_find(xd_str_t key)
{
    return key.len ? xd_map_get(&prv_accts, key) : NULL;
}

/* The entry of key, created when missing.  Write lock held. */
static prv_acct_t *
prv_get(xd_str_t key)
{
    prv_acct_t *a = prv_find(key);
    if (a)
        return a;
    a = xd_new(prv_acct_t);
    a->bare = xd_strndup(key.p, key.len);
    a->def = -1;
    xd_map_put(&prv_accts, key, a);
    atomic_store(&prv_naccts, xd_map_count(&prv_accts));
    return a;
}

static void
prv_contact_clear(prv_contact_t *c)
{
    for (size_t i = 0; i < c->ngroups; i++)
        xd_free(c->groups[i]);
    xd_free(c->groups);
    xd_free(c->jid);
    memset(c, 0, sizeof *c);
}

static void
prv_roster_drop(prv_acct_t *a)
{
    for (size_t i = 0; i < a->nroster; i++)
        prv_contact_clear(&a->roster[i]);
    xd_free(a->roster);
    a->roster = NULL;
    a->nroster = 0;
    a->has_roster = false;
}

static void
prv_acct_free(prv_acct_t *a)
{
    for (size_t i = 0; i < a->nlists; i++)
        xd_privacy_list_clear(&a->lists[i]);
    for (size_t i = 0; i < a->nsess; i++) {
        xd_free(a->sess[i].full);
        xd_free(a->sess[i].active);
    }
    prv_roster_drop(a);
    xd_free(a->lists);
    xd_free(a->sess);
    xd_free(a->bare);
    xd_free(a);
}

/* Unlinks and frees a when it holds nothing (force: in any case).  Write lock held. */
static void
prv_drop_if_empty(prv_acct_t *a, bool force)
{
    if (!force && (a->nlists || a->nsess))
        return;
    xd_map_del(&prv_accts, xd_str_c(a->bare));
    atomic_store(&prv_naccts, xd_map_count(&prv_accts));
    prv_acct_free(a);
}

static int
prv_list_index(const prv_acct_t *a, const char *name)
{
    for (size_t i = 0; name && i < a->nlists; i++)
        if (strcmp(a->lists[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const xd_privacy_list_t *
prv_default(const prv_acct_t *a)
{
    return a->def >= 0 ? &a->lists[a->def] : NULL;
}

static prv_sess_t *
prv_sess_find(const prv_acct_t *a, xd_str_t full)
{
    for (size_t i = 0; full.len && i < a->nsess; i++)
        if (prv_str_is(full, a->sess[i].full, strlen(a->sess[i].full)))
            return &a->sess[i];
    return NULL;
}

static void
prv_count_active(prv_acct_t *a)
{
    a->nactive = 0;
    for (size_t i = 0; i < a->nsess; i++)
        a->nactive += a->sess[i].active != NULL;
}

/* The entry of session (full, conn_id), created when missing; an entry of
 * an older stream of the same full JID starts over.  Write lock held. */
static prv_sess_t *
prv_sess_get(prv_acct_t *a, xd_str_t full, uint64_t conn_id)
{
    prv_sess_t *s = prv_sess_find(a, full);
    if (s && s->conn_id != conn_id) {
        xd_free(s->active);
        s->active = NULL;
        s->want_privacy = s->want_blocklist = false;
        s->conn_id = conn_id;
        prv_count_active(a);
    }
    if (s)
        return s;
    a->sess = xd_realloc(a->sess, (a->nsess + 1) * sizeof *a->sess);
    s = &a->sess[a->nsess++];
    memset(s, 0, sizeof *s);
    s->full = xd_strndup(full.p, full.len);
    s->conn_id = conn_id;
    return s;
}

static void
prv_sess_del(prv_acct_t *a, prv_sess_t *s)
{
    xd_free(s->full);
    xd_free(s->active);
    *s = a->sess[--a->nsess];
    prv_count_active(a);
}

static int
prv_contact_cmp(const void *k, const void *e)
{
    return strcmp(k, ((const prv_contact_t *)e)->jid);
}

static const prv_contact_t *
prv_contact_find(const prv_acct_t *a, xd_str_t bare)
{
    if (!a->has_roster || !a->nroster || bare.len > XD_JID_MAX)
        return NULL;
    char key[XD_JID_MAX + 1];
    memcpy(key, bare.p, bare.len);
    key[bare.len] = '\0';
    return bsearch(key, a->roster, a->nroster, sizeof *a->roster, prv_contact_cmp);
}

static void
prv_contact_set(prv_contact_t *c, const xd_roster_view_t *it)
{
    c->jid = xd_strdup(it->jid);
    c->sub = it->sub;
    c->ngroups = it->ngroups;
    c->groups = it->ngroups ? xd_calloc(it->ngroups, sizeof *c->groups) : NULL;
    for (size_t i = 0; i < it->ngroups; i++)
        c->groups[i] = xd_strdup(it->groups[i]);
}

static int
prv_contact_sort(const void *x, const void *y)
{
    return strcmp(((const prv_contact_t *)x)->jid, ((const prv_contact_t *)y)->jid);
}

/* A roster as the engine keeps it: its items in the roster. */
typedef struct prv_roster {
    prv_contact_t *items; /* owned */
    size_t n, cap;        /* used, allocated */
} prv_roster_t;

static int
prv_roster_add(void *arg, const xd_roster_view_t *it)
{
    prv_roster_t *r = arg;
    if (!it->in_roster)
        return 0;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->items = xd_realloc(r->items, r->cap * sizeof *r->items);
    }
    prv_contact_set(&r->items[r->n++], it);
    return 0;
}

static void
prv_roster_clear(prv_roster_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        prv_contact_clear(&r->items[i]);
    xd_free(r->items);
    memset(r, 0, sizeof *r);
}

/* Reads user@host's roster from whoever keeps rosters (ROSTER_GET; this
 * runs on the pool).  Without a roster module the roster is empty (0). */
static int
prv_roster_fetch(const char *host, const char *user, prv_roster_t *out)
{
    memset(out, 0, sizeof *out);
    xd_hook_roster_get_t ev = { .host = host, .user = user, .fn = prv_roster_add, .arg = out };
    xd_hook_run(XD_HOOK_ROSTER_GET, host, &ev);
    if (ev.served && ev.rc != 0) {
        prv_roster_clear(out);
        return ev.rc;
    }
    return 0;
}

/* Installs roster r as a's copy (r is emptied).  Write lock held. */
static void
prv_roster_install(prv_acct_t *a, prv_roster_t *r)
{
    prv_roster_drop(a);
    a->has_roster = true;
    a->roster = r->items;
    a->nroster = r->n;
    memset(r, 0, sizeof *r);
    if (a->nroster > 1)
        qsort(a->roster, a->nroster, sizeof *a->roster, prv_contact_sort);
}

static bool
prv_acct_needs_roster(const prv_acct_t *a)
{
    for (size_t i = 0; i < a->nlists; i++)
        if (xd_privacy_list_needs_roster(&a->lists[i]))
            return true;
    return false;
}

/* The rules' view of `other` for account a.  Lock held; the groups are lent. */
static xd_privacy_peer_t
prv_peer(const prv_acct_t *a, const xd_jid_t *other)
{
    xd_privacy_peer_t p = { .jid = other, .sub = XD_ROSTER_SUB_NONE };
    const prv_contact_t *c = prv_contact_find(a, xd_jid_bare_str(other));
    if (c) {
        p.sub = c->sub;
        p.groups = (const char *const *)c->groups;
        p.ngroups = c->ngroups;
    }
    return p;
}

/* The list for the session `full` of a (len 0: the account as a whole). */
static const xd_privacy_list_t *
prv_list_for(const prv_acct_t *a, xd_str_t full)
{
    if (full.len && a->nactive) {
        const prv_sess_t *s = prv_sess_find(a, full);
        if (s && s->active) {
            int i = prv_list_index(a, s->active);
            return i >= 0 ? &a->lists[i] : NULL;
        }
    }
    return prv_default(a);
}

/* A decision. */
typedef struct prv_verdict {
    bool deny;    /* refused */
    bool blocked; /* by a block item of the default list (XEP-0191) */
} prv_verdict_t;

/* Never filtered: one's own server (ejabberd does the same). */
static bool
prv_own_server(const prv_acct_t *a, const xd_jid_t *other)
{
    if (xd_jid_local(other).len)
        return false;
    const char *at = strchr(a->bare, '@');
    return at && xd_str_eq_c(xd_jid_domain(other), at + 1);
}

/* What a's rules for session `full` (len 0: the account) say about a
 * stanza of kind k with `other`.  Lock held. */
static prv_verdict_t
prv_judge(const prv_acct_t *a, xd_str_t full, const xd_jid_t *other, xd_privacy_kind k)
{
    prv_verdict_t v = { false, false };
    if (prv_own_server(a, other))
        return v;
    const xd_privacy_list_t *l = prv_list_for(a, full);
    if (!l)
        return v;
    xd_privacy_peer_t p = prv_peer(a, other);
    const xd_privacy_item_t *it = xd_privacy_decide(l, &p, k);
    v.deny = it && it->deny;
    v.blocked = v.deny && l == prv_default(a) && xd_privacy_is_block_item(it);
    return v;
}

static prv_host_t *
prv_host_find(const char *host)
{
    for (prv_host_t *h = prv_hosts; h; h = h->next)
        if (strcmp(h->host, host) == 0)
            return h;
    return NULL;
}

/* The blocklist of a: block items of the default list, each value once.
 * Lock held; *out malloc'd (strings owned). */
static size_t
prv_blockview(const prv_acct_t *a, char ***out)
{
    const xd_privacy_list_t *d = a ? prv_default(a) : NULL;
    size_t n = 0;
    char **v = xd_calloc(d && d->n ? d->n : 1, sizeof *v);
    for (size_t i = 0; d && i < d->n; i++) {
        if (!xd_privacy_is_block_item(&d->items[i]))
            continue;
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strcmp(v[k], d->items[i].value) == 0;
        if (!dup)
            v[n++] = xd_strdup(d->items[i].value);
    }
    *out = v;
    return n;
}

static void
prv_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        xd_free(v[i]);
    xd_free(v);
}

static bool
prv_strv_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

/* ---- reads ----------------------------------------------------------------------------------- */

bool
xd_privacy_blocks(const xd_jid_t *user, const xd_jid_t *other)
{
    if (!user || !other || atomic_load(&prv_naccts) == 0 || !xd_jid_local(user).len ||
        xd_jid_eq_bare(user, other))
        return false;
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(user));
    bool r = a && prv_judge(a, xd_jid_full_str(user), other, XD_PRIVACY_OTHER).deny;
    pthread_rwlock_unlock(&prv_lock);
    return r;
}

static bool
prv_allows(const xd_jid_t *user, const xd_jid_t *other, const xd_el_t *el, bool outgoing)
{
    if (!user || !other || !el || atomic_load(&prv_naccts) == 0 || !xd_jid_local(user).len ||
        xd_jid_eq_bare(user, other))
        return true;
    xd_privacy_kind k = xd_privacy_kind_of(el, outgoing);
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(user));
    bool deny = a && prv_judge(a, xd_jid_full_str(user), other, k).deny;
    pthread_rwlock_unlock(&prv_lock);
    return !deny;
}

/* PRIVACY_CHECK_PACKET: for code that delivers without the router. */
static int
prv_check(xd_module_ctx_t *ctx, xd_hook_privacy_check_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    if (prv_allows(ev->user, ev->other, ev->el, ev->outgoing))
        return XD_HOOK_OK;
    ev->deny = true;
    return XD_HOOK_STOP;
}

void
xd_privacy_view_clear(xd_privacy_view_t *v)
{
    if (!v)
        return;
    xd_free(v->active);
    xd_free(v->def);
    prv_strv_free(v->names, v->nnames);
    xd_privacy_list_clear(&v->list);
    memset(v, 0, sizeof *v);
}

static int
prv_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The requesting session: its account's parts and its stream (the
 * request's thread only). */
typedef struct prv_who {
    char *host;         /* its domain (owned) */
    char *user;         /* its localpart (owned) */
    xd_jid_t *bare;     /* its bare JID (a reference) */
    const xd_jid_t *req; /* the session (lent) */
    uint64_t conn_id;   /* its stream, 0 when not bound */
} prv_who_t;

static void
prv_who_clear(prv_who_t *w)
{
    xd_free(w->host);
    xd_free(w->user);
    if (w->bare)
        xd_jid_unref(w->bare);
    memset(w, 0, sizeof *w);
}

/* Fills w for req.  XD_EINVAL without a localpart, XD_ECLOSED when the
 * engine does not run on its host. */
static int
prv_who(const xd_jid_t *req, prv_who_t *w)
{
    memset(w, 0, sizeof *w);
    if (!req || !xd_jid_local(req).len)
        return XD_EINVAL;
    xd_str_t l = xd_jid_local(req), d = xd_jid_domain(req);
    w->host = xd_strndup(d.p, d.len);
    pthread_rwlock_rdlock(&prv_lock);
    bool on = prv_host_find(w->host) != NULL;
    pthread_rwlock_unlock(&prv_lock);
    if (!on) {
        prv_who_clear(w);
        return XD_ECLOSED;
    }
    w->user = xd_strndup(l.p, l.len);
    w->bare = xd_jid_bare((xd_jid_t *)req);
    w->req = req;
    xd_session_info_t e;
    if (!xd_jid_is_bare(req) && xd_session_find(req, &e) == 0) {
        w->conn_id = e.ref.id;
        xd_session_info_clear(&e);
    }
    return 0;
}

/* An entry made for w's session after its stream ended (its close hook
 * ran first) or was replaced must not outlive it: checked after making one. */
static void
prv_sess_recheck(const prv_who_t *w)
{
    if (!w->conn_id)
        return;
    xd_session_info_t e;
    uint64_t live = 0;
    if (xd_session_find(w->req, &e) == 0) {
        live = e.ref.id;
        xd_session_info_clear(&e);
    }
    if (live == w->conn_id)
        return;
    pthread_rwlock_wrlock(&prv_lock);
    prv_acct_t *a = prv_find(xd_jid_bare_str(w->bare));
    prv_sess_t *s = a ? prv_sess_find(a, xd_jid_full_str(w->req)) : NULL;
    if (s && s->conn_id == w->conn_id) {
        prv_sess_del(a, s);
        prv_drop_if_empty(a, false);
    }
    pthread_rwlock_unlock(&prv_lock);
}

int
xd_privacy_get(const xd_jid_t *req, const char *name, xd_privacy_view_t *out)
{
    memset(out, 0, sizeof *out);
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    pthread_rwlock_wrlock(&prv_lock);
    prv_acct_t *a = prv_get(xd_jid_bare_str(w.bare));
    if (w.conn_id)
        prv_sess_get(a, xd_jid_full_str(req), w.conn_id)->want_privacy = true;
    const prv_sess_t *s = prv_sess_find(a, xd_jid_full_str(req));
    if (s && s->active)
        out->active = xd_strdup(s->active);
    if (a->def >= 0)
        out->def = xd_strdup(a->lists[a->def].name);
    if (name) {
        int i = prv_list_index(a, name);
        if (i < 0)
            rc = XD_ENOTFOUND;
        else
            xd_privacy_list_copy(&out->list, &a->lists[i]);
    } else {
        out->names = xd_calloc(a->nlists ? a->nlists : 1, sizeof *out->names);
        for (size_t i = 0; i < a->nlists; i++)
            out->names[out->nnames++] = xd_strdup(a->lists[i].name);
        qsort(out->names, out->nnames, sizeof *out->names, prv_strcmp_p);
    }
    prv_drop_if_empty(a, false);
    pthread_rwlock_unlock(&prv_lock);
    prv_sess_recheck(&w);
    prv_who_clear(&w);
    if (rc != 0)
        xd_privacy_view_clear(out);
    return rc;
}

int
xd_privacy_blocklist(const xd_jid_t *req, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    pthread_rwlock_wrlock(&prv_lock);
    prv_acct_t *a = prv_get(xd_jid_bare_str(w.bare));
    if (w.conn_id)
        prv_sess_get(a, xd_jid_full_str(req), w.conn_id)->want_blocklist = true;
    *n = prv_blockview(a, out);
    prv_drop_if_empty(a, false);
    pthread_rwlock_unlock(&prv_lock);
    prv_sess_recheck(&w);
    prv_who_clear(&w);
    return 0;
}

/* ---- routing what the engine makes ----------------------------------------------------------- */

/* Routes st (reference taken over) without filtering it again. */
static void
prv_route(xd_stanza_t *st)
{
    if (!st)
        return;
    bool was = prv_inner;
    prv_inner = true;
    xd_route_take(st);
    prv_inner = was;
}

/* Which sessions of `bare` get a push: want_privacy or want_blocklist. */
static size_t
prv_push_targets(const xd_jid_t *bare, bool blocklist, xd_session_info_t *res, bool *want)
{
    size_t n = xd_session_list(bare, res, PRV_MAX_RES);
    if (n > PRV_MAX_RES)
        n = PRV_MAX_RES;
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(bare));
    for (size_t i = 0; i < n; i++) {
        const prv_sess_t *s = a ? prv_sess_find(a, xd_jid_full_str(res[i].jid)) : NULL;
        want[i] = s && s->conn_id == res[i].ref.id &&
                  (blocklist ? s->want_blocklist : s->want_privacy);
    }
    pthread_rwlock_unlock(&prv_lock);
    return n;
}

static _Atomic unsigned long prv_push_seq;

static xd_el_t *
prv_push_iq(const xd_jid_t *to, const char *idp)
{
    char id[48];
    snprintf(id, sizeof id, "%s%lu", idp, atomic_fetch_add(&prv_push_seq, 1) + 1);
    xd_el_t *iq = xd_el_new("iq", NULL);
    xd_el_set_attr(iq, "type", "set");
    xd_el_set_attr(iq, "id", id);
    xd_el_set_attr(iq, "to", xd_jid_full_str(to).p);
    return iq;
}

/* XEP-0016 2.6: <query><list name='…'/></query> to the sessions that asked for privacy. */
static void
prv_push_list(const xd_jid_t *bare, const char *name)
{
    xd_session_info_t res[PRV_MAX_RES];
    bool want[PRV_MAX_RES] = { 0 };
    size_t n = prv_push_targets(bare, false, res, want);
    for (size_t i = 0; i < n; i++) {
        if (want[i]) {
            xd_el_t *iq = prv_push_iq(res[i].jid, "privacypush");
            xd_el_t *q = xd_el_add_child(iq, "query", XD_NS_PRIVACY);
            xd_el_set_attr(xd_el_add_child(q, "list", XD_NS_PRIVACY), "name", name);
            xd_session_send_take(&res[i].ref, xd_el_freeze(iq));
        }
        xd_session_info_clear(&res[i]);
    }
}

/* XEP-0191 3.3/3.4: <block>/<unblock> with items to the sessions that asked for the blocklist. */
static void
prv_push_block(const xd_jid_t *bare, const char *name, char *const *items, size_t nitems)
{
    xd_session_info_t res[PRV_MAX_RES];
    bool want[PRV_MAX_RES] = { 0 };
    size_t n = prv_push_targets(bare, true, res, want);
    for (size_t i = 0; i < n; i++) {
        if (want[i]) {
            xd_el_t *iq = prv_push_iq(res[i].jid, "blockpush");
            xd_el_t *q = xd_el_add_child(iq, name, XD_NS_BLOCKING);
            for (size_t k = 0; k < nitems; k++)
                xd_el_set_attr(xd_el_add_child(q, "item", XD_NS_BLOCKING), "jid", items[k]);
            xd_session_send_take(&res[i].ref, xd_el_freeze(iq));
        }
        xd_session_info_clear(&res[i]);
    }
}

/* ---- presence after a change ----------------------------------------------------------------- */

/* The presence-out decisions of every available session of an account
 * towards its from/both contacts (and the full-JID jid items naming one
 * of them), before and after a change.  The writer's, on its thread. */
typedef struct prv_pres {
    xd_session_info_t res[PRV_MAX_RES]; /* the account's sessions */
    size_t nres;                    /* how many */
    char **tgt;                     /* target JIDs (owned) */
    xd_jid_t **tj;                  /* the same, parsed (references) */
    size_t ntgt, captgt;            /* used / allocated */
    bool *before;                   /* nres × ntgt: presence-out allowed before */
} prv_pres_t;

static void
prv_pres_add(prv_pres_t *p, const char *jid)
{
    if (prv_strv_has(p->tgt, p->ntgt, jid))
        return;
    xd_jid_t *j = NULL;
    if (xd_jid_parse(xd_str_c(jid), &j) != 0)
        return;
    if (p->ntgt == p->captgt) {
        p->captgt = p->captgt ? p->captgt * 2 : 16;
        p->tgt = xd_realloc(p->tgt, p->captgt * sizeof *p->tgt);
        p->tj = xd_realloc(p->tj, p->captgt * sizeof *p->tj);
    }
    p->tgt[p->ntgt] = xd_strdup(jid);
    p->tj[p->ntgt++] = j;
}

static int
prv_pres_contact(void *arg, const xd_roster_view_t *it)
{
    prv_pres_t *p = arg;
    if (p->ntgt >= 10000) /* as the roster's broadcast: enough for any real roster */
        return 1;
    if (it->in_roster && (it->sub & XD_ROSTER_SUB_FROM))
        prv_pres_add(p, it->jid);
    return 0;
}

/* Adds `item` when it is a full JID (a resource) of one of the contacts. */
static void
prv_pres_add_full(prv_pres_t *p, size_t ncontacts, const char *item)
{
    const char *slash = item ? strchr(item, '/') : NULL;
    if (!slash || !memchr(item, '@', (size_t)(slash - item)))
        return;
    for (size_t i = 0; i < ncontacts; i++)
        if (strlen(p->tgt[i]) == (size_t)(slash - item) &&
            memcmp(p->tgt[i], item, (size_t)(slash - item)) == 0) {
            prv_pres_add(p, item);
            return;
        }
}

static void
prv_pres_add_list(prv_pres_t *p, size_t ncontacts, const xd_privacy_list_t *l)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (l->items[i].type == XD_PRIVACY_JID)
            prv_pres_add_full(p, ncontacts, l->items[i].value);
}

/* decisions[r * ntgt + t] = presence-out from session r to target t allowed. */
static void
prv_pres_decide(const prv_pres_t *p, const char *bare, bool *out)
{
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_str_c(bare));
    for (size_t r = 0; r < p->nres; r++)
        for (size_t t = 0; t < p->ntgt; t++)
            out[r * p->ntgt + t] =
                !a || !prv_judge(a, xd_jid_full_str(p->res[r].jid), p->tj[t],
                                 XD_PRIVACY_PRESENCE_OUT)
                           .deny;
    pthread_rwlock_unlock(&prv_lock);
}

/* Before a change: who is available, whom they may send presence to.
 * `extra` (optional) is a list about to be stored; `jids` JIDs about to
 * be blocked.  Blocking (roster storage). */
static void
prv_pres_before(prv_pres_t *p, const prv_who_t *w, const xd_privacy_list_t *extra,
                const char *const *jids, size_t njids)
{
    memset(p, 0, sizeof *p);
    size_t n = xd_session_list(w->bare, p->res, PRV_MAX_RES);
    p->nres = n > PRV_MAX_RES ? PRV_MAX_RES : n;
    bool any = false;
    for (size_t i = 0; i < p->nres; i++)
        any |= p->res[i].available;
    if (!any)
        return;
    /* Best effort: the contacts with a subscription from the user. */
    xd_hook_roster_get_t rev = { .host = w->host, .user = w->user, .fn = prv_pres_contact,
                                 .arg = p };
    xd_hook_run(XD_HOOK_ROSTER_GET, w->host, &rev);
    size_t ncontacts = p->ntgt;
    if (!ncontacts)
        return;
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(w->bare));
    for (size_t i = 0; a && i < a->nlists; i++)
        prv_pres_add_list(p, ncontacts, &a->lists[i]);
    pthread_rwlock_unlock(&prv_lock);
    prv_pres_add_list(p, ncontacts, extra);
    for (size_t i = 0; i < njids; i++)
        prv_pres_add_full(p, ncontacts, jids[i]);
    p->before = xd_calloc(p->nres * p->ntgt, sizeof *p->before);
    prv_pres_decide(p, xd_jid_bare_str(w->bare).p, p->before);
}

/* After the change: unavailable where presence-out became denied, the
 * session's current presence where it became allowed.  Frees p. */
static void
prv_pres_after(prv_pres_t *p, const prv_who_t *w)
{
    if (p->before) {
        bool *after = xd_calloc(p->nres * p->ntgt, sizeof *after);
        prv_pres_decide(p, xd_jid_bare_str(w->bare).p, after);
        for (size_t r = 0; r < p->nres; r++) {
            const xd_session_info_t *e = &p->res[r];
            if (!e->available)
                continue;
            for (size_t t = 0; t < p->ntgt; t++) {
                bool was = p->before[r * p->ntgt + t], now = after[r * p->ntgt + t];
                if (was == now || (now && !e->presence))
                    continue;
                xd_el_t *el;
                if (now) {
                    el = xd_stanza_edit(e->presence);
                } else {
                    el = xd_el_new("presence", NULL);
                    xd_el_set_attr(el, "type", "unavailable");
                }
                xd_el_set_attr(el, "from", xd_jid_full_str(e->jid).p);
                xd_el_set_attr(el, "to", p->tgt[t]);
                prv_route(xd_el_freeze(el));
            }
        }
        xd_free(after);
    }
    for (size_t i = 0; i < p->nres; i++)
        xd_session_info_clear(&p->res[i]);
    for (size_t i = 0; i < p->ntgt; i++) {
        xd_free(p->tgt[i]);
        xd_jid_unref(p->tj[i]);
    }
    xd_free(p->tgt);
    xd_free(p->tj);
    xd_free(p->before);
    memset(p, 0, sizeof *p);
}

/* ---- storage --------------------------------------------------------------------------------- */

static const char *const prv_mig1[] = {
    "CREATE TABLE privacy_list ("
    " host TEXT NOT NULL,"
    " username TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (host, username, name))",
    "CREATE TABLE privacy_item ("
    " host TEXT NOT NULL,"
    " username TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " ord INTEGER NOT NULL CHECK (ord >= 0 AND ord <= 4294967295),"
    " type TEXT NOT NULL CHECK (type IN ('', 'jid', 'group', 'subscription')),"
    " value TEXT NOT NULL,"
    " action TEXT NOT NULL CHECK (action IN ('allow', 'deny')),"
    " kinds INTEGER NOT NULL,"
    " PRIMARY KEY (host, username, name, ord),"
    " FOREIGN KEY (host, username, name) REFERENCES privacy_list (host, username, name)"
    " ON DELETE CASCADE)",
    "CREATE TABLE privacy_default ("
    " host TEXT NOT NULL,"
    " username TEXT NOT NULL,"
    " name TEXT NOT NULL,"
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
    " host TEXT NOT NULL,"
    " username TEXT NOT NULL,"
    " jid TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
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

static const xd_db_migration_t blk_migrations[] = {
    { 1, NULL, blk_mig1 },
    { 2, NULL, blk_mig2 },
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

/* What one write stores, in one transaction (the writer's stack). */
typedef struct prv_tx {
    const char *host, *user;       /* the account */
    const xd_privacy_list_t *put;  /* list to create or replace, or NULL */
    const char *drop;              /* list to delete, or NULL */
    int def_op;                    /* 0 keep the default, 1 set def_name, 2 none */
    const char *def_name;          /* def_op 1 */
    int64_t now;                   /* seconds since the epoch */
} prv_tx_t;

static int
prv_tx_fn(xd_db_conn_t *c, void *arg)
{
    const prv_tx_t *t = arg;
    int rc = 0;
    if (t->put) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(t->host), XD_DB_V_CSTR(t->user),
                            XD_DB_V_CSTR(t->put->name), XD_DB_V_INT(t->now) };
        rc = xd_db_query(c,
                         "INSERT INTO privacy_list (host, username, name, created_at)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT (host, username, name) DO NOTHING",
                         k, 4, NULL, NULL);
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
        rc = xd_db_query(c,
                         "INSERT INTO privacy_default (host, username, name) VALUES (?, ?, ?)"
                         " ON CONFLICT (host, username) DO UPDATE SET name = excluded.name",
                         k, 3, NULL, NULL);
    } else if (rc >= 0 && t->def_op == 2) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(t->host), XD_DB_V_CSTR(t->user) };
        rc = xd_db_query(c, "DELETE FROM privacy_default WHERE host = ? AND username = ?", k, 2,
                         NULL, NULL);
    }
    return rc;
}

/* ---- loading a host -------------------------------------------------------------------------- */

/* A host being loaded (the attaching thread; rows go in under the write lock). */
typedef struct prv_load {
    const char *host; /* the host being loaded */
    size_t lists;     /* list rows read */
    size_t items;     /* item rows read */
} prv_load_t;

static prv_acct_t *
prv_load_acct(const prv_load_t *l, const xd_db_val_t *user)
{
    char *bare = xd_asprintf("%.*s@%s", (int)user->s.len, user->s.p ? user->s.p : "", l->host);
    prv_acct_t *a = prv_get(xd_str_c(bare));
    xd_free(bare);
    return a;
}

/* (username, name): a list.  Write lock held. */
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

/* The accounts of one host. */
typedef struct prv_of_host {
    const char *host; /* the host */
    bool roster_only; /* only accounts that need a roster copy they do not have */
    char **bare;      /* their bare JIDs (owned) */
    size_t n;         /* how many */
} prv_of_host_t;

static int
prv_of_host_fn(void *arg, const char *key, void *val)
{
    prv_of_host_t *o = arg;
    const prv_acct_t *a = val;
    const char *at = strchr(key, '@');
    if (!at || strcmp(at + 1, o->host) != 0 ||
        (o->roster_only && (a->has_roster || !prv_acct_needs_roster(a))))
        return 0;
    o->bare = xd_realloc(o->bare, (o->n + 1) * sizeof *o->bare);
    o->bare[o->n++] = xd_strdup(key);
    return 0;
}

/* Forgets every account of host.  Write lock held. */
static void
prv_forget_host(const char *host)
{
    prv_of_host_t o = { .host = host };
    xd_map_foreach(&prv_accts, prv_of_host_fn, &o);
    for (size_t i = 0; i < o.n; i++) {
        prv_drop_if_empty(prv_find(xd_str_c(o.bare[i])), true);
        xd_free(o.bare[i]);
    }
    xd_free(o.bare);
}

/* Reads the rosters the host's lists need, one account at a time (the
 * store lock is not held while reading).  Blocking. */
static void
prv_load_rosters(const char *host)
{
    prv_of_host_t o = { .host = host, .roster_only = true };
    pthread_rwlock_rdlock(&prv_lock);
    xd_map_foreach(&prv_accts, prv_of_host_fn, &o);
    pthread_rwlock_unlock(&prv_lock);
    for (size_t i = 0; i < o.n; i++) {
        const char *at = strchr(o.bare[i], '@');
        char *user = xd_strndup(o.bare[i], (size_t)(at - o.bare[i]));
        prv_roster_t rl;
        if (prv_roster_fetch(host, user, &rl) != 0)
            memset(&rl, 0, sizeof rl); /* no roster: nobody is in it */
        pthread_rwlock_wrlock(&prv_lock);
        prv_acct_t *a = prv_find(xd_str_c(o.bare[i]));
        if (a && !a->has_roster)
            prv_roster_install(a, &rl);
        pthread_rwlock_unlock(&prv_lock);
        prv_roster_clear(&rl);
        xd_free(user);
        xd_free(o.bare[i]);
    }
    xd_free(o.bare);
}

/* ---- the filter ------------------------------------------------------------------------------ */

/* A stanza to the bare JID of an account where some session has an
 * active list: each session the router would pick decides.  Returns the
 * verdict when they agree (or nobody is there: the default list); when
 * they disagree, delivers st to those that allow and sets *taken. */
static prv_verdict_t
prv_split(xd_stanza_t *st, const xd_jid_t *to, const xd_jid_t *from, xd_privacy_kind k,
          bool *taken)
{
    xd_session_info_t res[PRV_MAX_RES];
    size_t n = xd_session_list(to, res, PRV_MAX_RES);
    if (n > PRV_MAX_RES)
        n = PRV_MAX_RES;
    bool pick[PRV_MAX_RES] = { 0 }, allow[PRV_MAX_RES] = { 0 };
    xd_session_pick(res, n, st, pick); /* the sessions the router would pick */
    size_t npick = 0, nallow = 0;
    prv_verdict_t v = { false, false };
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(to));
    for (size_t i = 0; a && i < n; i++) {
        const xd_session_info_t *e = &res[i];
        if (!pick[i])
            continue;
        npick++;
        allow[i] = !prv_judge(a, xd_jid_full_str(e->jid), from, k).deny;
        nallow += allow[i];
    }
    if (a && npick == 0)
        v = prv_judge(a, XD_STR_NULL, from, k);
    pthread_rwlock_unlock(&prv_lock);
    if (npick && nallow == 0)
        v.deny = true;
    if (npick && nallow && nallow < npick) {
        for (size_t i = 0; i < n; i++)
            if (pick[i] && allow[i])
                xd_session_send_take(&res[i].ref, xd_stanza_ref(st));
        *taken = true;
    }
    for (size_t i = 0; i < n; i++)
        xd_session_info_clear(&res[i]);
    return v;
}

static int
prv_filter(xd_module_ctx_t *hctx, xd_hook_filter_t *evp, void *arg)
{
    (void)hctx;
    (void)arg;
    xd_hook_filter_t *ev = evp;
    if (prv_inner || atomic_load(&prv_naccts) == 0 || !ev->st)
        return XD_HOOK_OK;
    const xd_el_t *root = xd_stanza_root(ev->st);
    xd_stanza_kind sk = xd_stanza_kind_of(root);
    const char *from_s = xd_el_attr(root, "from"), *to_s = xd_el_attr(root, "to");
    if (sk == XD_STANZA_OTHER || !from_s || !to_s)
        return XD_HOOK_OK;
    xd_jid_t *from = NULL, *to = NULL;
    if (xd_jid_parse(xd_str_c(from_s), &from) != 0)
        return XD_HOOK_OK;
    if (ev->to)
        to = xd_jid_ref((xd_jid_t *)ev->to); /* parsed by the router */
    else if (xd_jid_parse(xd_str_c(to_s), &to) != 0)
        to = NULL;
    if (!to || xd_jid_eq_bare(from, to)) {
        /* XEP-0016 2.1: never between the resources of one account. */
        if (to)
            xd_jid_unref(to);
        xd_jid_unref(from);
        return XD_HOOK_OK;
    }
    xd_privacy_kind kout = xd_privacy_kind_of(root, true), kin = xd_privacy_kind_of(root, false);
    prv_verdict_t out = { false, false }, in = { false, false };
    bool split = false, taken = false;
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = xd_jid_local(from).len ? prv_find(xd_jid_bare_str(from)) : NULL;
    if (a)
        out = prv_judge(a, xd_jid_full_str(from), to, kout);
    a = !out.deny && xd_jid_local(to).len ? prv_find(xd_jid_bare_str(to)) : NULL;
    if (a) {
        if (!xd_jid_is_bare(to))
            in = prv_judge(a, xd_jid_full_str(to), from, kin);
        else if (sk == XD_STANZA_IQ || a->nactive == 0)
            in = prv_judge(a, XD_STR_NULL, from, kin); /* the account as a whole */
        else
            split = true;
    }
    pthread_rwlock_unlock(&prv_lock);
    if (split)
        in = prv_split(ev->st, to, from, kin, &taken);
    xd_jid_unref(from);
    xd_jid_unref(to);
    if (taken) {
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    if (!out.deny && !in.deny)
        return XD_HOOK_OK;

    xd_stanza_t *err = NULL;
    if (out.deny) {
        /* XEP-0016 2.14: not-acceptable; XEP-0191 3.3: with <blocked/>.
         * Presence notifications go nowhere, silently (privacy.h). */
        if (kout != XD_PRIVACY_PRESENCE_OUT)
            err = xd_stanza_error(ev->st, XD_COND_NOT_ACCEPTABLE, NULL);
        if (err && out.blocked) {
            xd_el_t *e = xd_stanza_edit(err);
            xd_stanza_unref(err);
            xd_el_t *eel = xd_el_child_mut(e, "error", NULL);
            if (eel)
                xd_el_add_child(eel, "blocked", PRV_NS_BLOCK_ERRORS);
            err = xd_el_freeze(e);
        }
    } else if (sk == XD_STANZA_MESSAGE || (sk == XD_STANZA_IQ && xd_iq_is_request(root))) {
        /* XEP-0016 2.14: presence never answered; messages and IQ
         * requests service-unavailable (NULL for errors and results). */
        err = xd_stanza_error(ev->st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    XD_LOG(NULL, XD_DEBUG, "privacy refused stanza", "from=%s to=%s dir=%s answer=%s", from_s,
           to_s, out.deny ? "out" : "in", err ? "error" : "none");
    prv_route(err);
    xd_stanza_unref(ev->st);
    ev->st = NULL;
    return XD_HOOK_STOP;
}

/* SESSION_CLOSED: forget the session unless its JID is bound again by the
 * stream the entry belongs to. */
static int
prv_closed(xd_module_ctx_t *hctx, xd_hook_session_t *evp, void *arg)
{
    (void)hctx;
    (void)arg;
    const xd_hook_session_t *ev = evp;
    if (atomic_load(&prv_naccts) == 0)
        return XD_HOOK_OK;
    xd_session_info_t e;
    uint64_t live = 0;
    if (xd_session_find(ev->jid, &e) == 0) {
        live = e.ref.id;
        xd_session_info_clear(&e);
    }
    pthread_rwlock_wrlock(&prv_lock);
    prv_acct_t *a = prv_find(xd_jid_bare_str(ev->jid));
    prv_sess_t *s = a ? prv_sess_find(a, xd_jid_full_str(ev->jid)) : NULL;
    if (s && (live == 0 || s->conn_id != live)) {
        prv_sess_del(a, s);
        prv_drop_if_empty(a, false);
    }
    pthread_rwlock_unlock(&prv_lock);
    return XD_HOOK_OK;
}

/* USER_REMOVED: memory (storage is mod_user_rows' job). */
static int
prv_removed(xd_module_ctx_t *hctx, xd_hook_user_t *evp, void *arg)
{
    (void)hctx;
    (void)arg;
    const xd_hook_user_t *ev = evp;
    char *bare = xd_asprintf("%s@%s", ev->user, ev->host);
    pthread_rwlock_wrlock(&prv_lock);
    prv_acct_t *a = prv_find(xd_str_c(bare));
    if (a)
        prv_drop_if_empty(a, true);
    pthread_rwlock_unlock(&prv_lock);
    xd_free(bare);
    return XD_HOOK_OK;
}

static int prv_roster_changed(xd_module_ctx_t *ctx, xd_hook_roster_changed_t *ev, void *arg);

/* The engine's hooks: global, added when the first host attaches and
 * removed with the last (a stanza between two hosts meets the outgoing
 * rules of one and the incoming rules of the other in one filter run). */
static void
prv_hooks(bool on)
{
    if (on) {
        xd_hook_add(XD_HOOK_FILTER_PACKET, NULL, PRV_FILTER_PRIO, prv_filter, NULL);
        xd_hook_add(XD_HOOK_SM_REMOVE_CONNECTION, NULL, XD_HOOK_PRIO_DEFAULT, prv_closed, NULL);
        xd_hook_add(XD_HOOK_REMOVE_USER, NULL, XD_HOOK_PRIO_DEFAULT, prv_removed, NULL);
        xd_hook_add(XD_HOOK_ROSTER_CHANGED, NULL, XD_HOOK_PRIO_DEFAULT, prv_roster_changed,
                    NULL);
        xd_hook_add(XD_HOOK_PRIVACY_CHECK_PACKET, NULL, XD_HOOK_PRIO_DEFAULT, prv_check, NULL);
    } else {
        xd_hook_remove(XD_HOOK_FILTER_PACKET, NULL, prv_filter, NULL);
        xd_hook_remove(XD_HOOK_SM_REMOVE_CONNECTION, NULL, prv_closed, NULL);
        xd_hook_remove(XD_HOOK_REMOVE_USER, NULL, prv_removed, NULL);
        xd_hook_remove(XD_HOOK_ROSTER_CHANGED, NULL, prv_roster_changed, NULL);
        xd_hook_remove(XD_HOOK_PRIVACY_CHECK_PACKET, NULL, prv_check, NULL);
        xd_hook_sync(); /* the engine's memory goes next */
    }
}

/* ---- hosts ----------------------------------------------------------------------------------- */

static void
prv_set_limits(prv_host_t *h, const xd_privacy_limits_t *lim)
{
    if (!lim)
        return;
    if (lim->max_lists)
        h->lim.max_lists = lim->max_lists;
    if (lim->max_items)
        h->lim.max_items = lim->max_items;
    if (lim->max_blocked)
        h->lim.max_blocked = lim->max_blocked;
}

int
xd_privacy_store_attach(xd_module_ctx_t *ctx, xd_privacy_user by, const xd_privacy_limits_t *lim,
                        char **err)
{
    *err = NULL;
    const char *host = xd_module_host(ctx);
    xd_db_t *db = xd_module_db(ctx);
    if (!db) {
        *err = xd_strdup("no database");
        return XD_ECLOSED;
    }
    atomic_store(&prv_db, db);
    pthread_rwlock_wrlock(&prv_lock);
    prv_host_t *h = prv_host_find(host);
    if (h) {
        h->by |= (unsigned)by;
        prv_set_limits(h, lim);
        pthread_rwlock_unlock(&prv_lock);
        return 0;
    }
    pthread_rwlock_unlock(&prv_lock);

    /* The first module of this host: load its lists.  The host is not yet
     * in prv_hosts, so no request for it changes the store meanwhile. */
    prv_load_t l = { .host = host };
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        xd_db_val_t key[] = { XD_DB_V_CSTR(host) };
        pthread_rwlock_wrlock(&prv_lock);
        prv_forget_host(host);
        rc = xd_db_query(c, "SELECT username, name FROM privacy_list WHERE host = ?"
                            " ORDER BY username, name", key, 1, prv_load_list, &l);
        if (rc >= 0)
            rc = xd_db_query(c, "SELECT username, name, ord, type, value, action, kinds"
                                " FROM privacy_item WHERE host = ? ORDER BY username, name, ord",
                             key, 1, prv_load_item, &l);
        if (rc >= 0)
            rc = xd_db_query(c, "SELECT username, name FROM privacy_default WHERE host = ?", key,
                             1, prv_load_default, &l);
        if (rc < 0)
            prv_forget_host(host);
        pthread_rwlock_unlock(&prv_lock);
        xd_db_release(c);
    }
    if (rc < 0) {
        *err = xd_asprintf("cannot load the privacy lists: %s", xd_strerror(rc));
        return rc;
    }
    prv_load_rosters(host);

    pthread_rwlock_wrlock(&prv_lock);
    bool first = prv_hosts == NULL;
    h = prv_host_find(host);
    if (!h) {
        h = xd_new(prv_host_t);
        h->host = xd_strdup(host);
        h->next = prv_hosts;
        prv_hosts = h;
    }
    h->by |= (unsigned)by;
    prv_set_limits(h, lim);
    pthread_rwlock_unlock(&prv_lock);
    if (first)
        prv_hooks(true);
    XD_LOG(NULL, XD_INFO, "privacy lists loaded", "host=%s lists=%zu items=%zu", host, l.lists,
           l.items);
    return 0;
}

void
xd_privacy_store_detach(const char *host, xd_privacy_user by)
{
    bool last = false;
    pthread_rwlock_wrlock(&prv_lock);
    for (prv_host_t **pp = &prv_hosts; *pp; pp = &(*pp)->next) {
        prv_host_t *h = *pp;
        if (strcmp(h->host, host) != 0)
            continue;
        h->by &= ~(unsigned)by;
        if (by == XD_PRIVACY_BY_BLOCKING)
            h->lim.max_blocked = 0;
        else
            h->lim.max_lists = h->lim.max_items = 0;
        if (!h->by) {
            *pp = h->next;
            prv_forget_host(h->host);
            xd_free(h->host);
            xd_free(h);
            last = prv_hosts == NULL;
        }
        break;
    }
    pthread_rwlock_unlock(&prv_lock);
    if (last)
        prv_hooks(false);
}

bool
xd_privacy_store_runs(const char *host, xd_privacy_user by)
{
    pthread_rwlock_rdlock(&prv_lock);
    const prv_host_t *h = prv_host_find(host);
    bool r = h && (h->by & (unsigned)by);
    pthread_rwlock_unlock(&prv_lock);
    return r;
}

/* ---- writes ---------------------------------------------------------------------------------- */

/* One write: what to store, what to change in memory, what to push (the
 * writer's stack; prv_change_mu held while it is used). */
typedef struct prv_op {
    prv_who_t w;                  /* the requester */
    const xd_privacy_list_t *put; /* list to store, or NULL */
    const char *drop;             /* list to remove, or NULL */
    int def_op;                   /* 0 keep, 1 set def_name, 2 none */
    const char *def_name;         /* def_op 1 */
    int act_op;                   /* 0 keep, 1 the requester's active list is act_name, 2 none */
    const char *act_name;         /* act_op 1 */
    prv_roster_t *roster;         /* a roster to install when the account keeps none yet */
    const char *push_name;        /* list name to push (XEP-0016 2.6), or NULL */
    const char *block_verb;       /* "block"/"unblock": XEP-0191 push of block_items; NULL: the
                                     difference of the blocklist, if any */
    char *const *block_items;     /* those items */
    size_t nblock;                /* how many */
    const char *const *new_jids;  /* JIDs about to be blocked (presence targets) */
    size_t nnew;                  /* how many */
} prv_op_t;

/* Stores op, applies it to memory, pushes, sends presence.  Change mutex held. */
static int
prv_commit(prv_op_t *op)
{
    prv_pres_t pres;
    prv_pres_before(&pres, &op->w, op->put, op->new_jids, op->nnew);
    char **before = NULL, **after = NULL;
    size_t nbefore, nafter;
    xd_str_t key = xd_jid_bare_str(op->w.bare);
    pthread_rwlock_rdlock(&prv_lock);
    nbefore = prv_blockview(prv_find(key), &before);
    pthread_rwlock_unlock(&prv_lock);

    int rc = 0;
    if (op->put || op->drop || op->def_op) {
        prv_tx_t t = { .host = op->w.host, .user = op->w.user, .put = op->put, .drop = op->drop,
                       .def_op = op->def_op, .def_name = op->def_name,
                       .now = (int64_t)time(NULL) };
        xd_db_t *db = atomic_load(&prv_db);
        rc = db ? xd_db_tx(db, prv_tx_fn, &t) : XD_ECLOSED;
        if (rc < 0) {
            XD_LOG(NULL, XD_ERROR, "privacy list store failed", "host=%s user=%s err=%s",
                   op->w.host, op->w.user, xd_strerror(rc));
            prv_strv_free(before, nbefore);
            prv_pres_after(&pres, &op->w); /* nothing changed: sends nothing */
            return rc;
        }
    }

    pthread_rwlock_wrlock(&prv_lock);
    prv_acct_t *a = prv_get(key);
    char *def = a->def >= 0 ? xd_strdup(a->lists[a->def].name) : NULL;
    if (op->put) {
        int i = prv_list_index(a, op->put->name);
        if (i < 0) {
            a->lists = xd_realloc(a->lists, (a->nlists + 1) * sizeof *a->lists);
            i = (int)a->nlists++;
        } else {
            xd_privacy_list_clear(&a->lists[i]);
        }
        xd_privacy_list_copy(&a->lists[i], op->put);
    }
    if (op->drop) {
        int i = prv_list_index(a, op->drop);
        if (i >= 0) {
            xd_privacy_list_clear(&a->lists[i]);
            a->lists[i] = a->lists[--a->nlists];
            for (size_t s = 0; s < a->nsess; s++)
                if (a->sess[s].active && strcmp(a->sess[s].active, op->drop) == 0) {
                    xd_free(a->sess[s].active);
                    a->sess[s].active = NULL;
                }
            if (def && strcmp(def, op->drop) == 0) {
                xd_free(def);
                def = NULL;
            }
        }
    }
    if (op->def_op == 1) {
        xd_free(def);
        def = xd_strdup(op->def_name);
    } else if (op->def_op == 2) {
        xd_free(def);
        def = NULL;
    }
    a->def = prv_list_index(a, def); /* indexes moved with a remove */
    xd_free(def);
    if (op->act_op && op->w.conn_id) {
        prv_sess_t *s = prv_sess_get(a, xd_jid_full_str(op->w.req), op->w.conn_id);
        xd_free(s->active);
        s->active = op->act_op == 1 ? xd_strdup(op->act_name) : NULL;
    }
    prv_count_active(a);
    if (!prv_acct_needs_roster(a))
        prv_roster_drop(a);
    else if (!a->has_roster && op->roster)
        prv_roster_install(a, op->roster);
    nafter = prv_blockview(a, &after);
    prv_drop_if_empty(a, false);
    pthread_rwlock_unlock(&prv_lock);

    /* Pushes: the list's name, then the blocklist. */
    if (op->push_name)
        prv_push_list(op->w.bare, op->push_name);
    if (op->block_verb) {
        prv_push_block(op->w.bare, op->block_verb, op->block_items, op->nblock);
    } else {
        char **d = xd_calloc(nbefore + nafter + 1, sizeof *d);
        size_t nd = 0;
        for (size_t i = 0; i < nafter; i++)
            if (!prv_strv_has(before, nbefore, after[i]))
                d[nd++] = after[i];
        if (nd)
            prv_push_block(op->w.bare, "block", d, nd);
        nd = 0;
        for (size_t i = 0; i < nbefore; i++)
            if (!prv_strv_has(after, nafter, before[i]))
                d[nd++] = before[i];
        if (nd)
            prv_push_block(op->w.bare, "unblock", d, nd);
        xd_free(d);
    }
    prv_strv_free(before, nbefore);
    prv_strv_free(after, nafter);
    prv_pres_after(&pres, &op->w);
    return 0;
}

/* Limits of req's host. */
static xd_privacy_limits_t
prv_limits(const char *host)
{
    xd_privacy_limits_t l = { 0, 0, 0 };
    pthread_rwlock_rdlock(&prv_lock);
    const prv_host_t *h = prv_host_find(host);
    if (h)
        l = h->lim;
    pthread_rwlock_unlock(&prv_lock);
    return l;
}

/* Is group g a group of some item of roster rl? */
static bool
prv_roster_has_group(const prv_roster_t *rl, const char *g)
{
    for (size_t i = 0; i < rl->n; i++)
        for (size_t k = 0; k < rl->items[i].ngroups; k++)
            if (strcmp(rl->items[i].groups[k], g) == 0)
                return true;
    return false;
}

int
xd_privacy_set_list(const xd_jid_t *req, const xd_privacy_list_t *l)
{
    if (!l || !l->name || !*l->name || l->n == 0)
        return XD_EINVAL;
    xd_privacy_list_t copy;
    xd_privacy_list_copy(&copy, l);
    if (xd_privacy_list_sort(&copy) != 0) {
        xd_privacy_list_clear(&copy);
        return XD_EINVAL;
    }
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0) {
        xd_privacy_list_clear(&copy);
        return rc;
    }
    prv_roster_t rl = { 0 };
    bool have_rl = false;
    xd_privacy_limits_t lim = prv_limits(w.host);
    if (lim.max_items && copy.n > (size_t)lim.max_items)
        rc = XD_ELIMIT;
    if (rc == 0 && xd_privacy_list_needs_roster(&copy)) {
        /* XEP-0016 2.1: a group not in the roster is item-not-found. */
        rc = prv_roster_fetch(w.host, w.user, &rl); /* no rosters: every group is unknown */
        have_rl = rc == 0;
        for (size_t i = 0; rc == 0 && i < copy.n; i++)
            if (copy.items[i].type == XD_PRIVACY_GROUP &&
                !prv_roster_has_group(&rl, copy.items[i].value))
                rc = XD_ENOTFOUND;
    }
    pthread_mutex_lock(&prv_change_mu);
    if (rc == 0 && lim.max_lists) {
        pthread_rwlock_rdlock(&prv_lock);
        const prv_acct_t *a = prv_find(xd_jid_bare_str(w.bare));
        if (a && prv_list_index(a, copy.name) < 0 && a->nlists >= (size_t)lim.max_lists)
            rc = XD_ELIMIT;
        pthread_rwlock_unlock(&prv_lock);
    }
    if (rc == 0) {
        prv_op_t op = { .w = w, .put = &copy, .roster = have_rl ? &rl : NULL,
                        .push_name = copy.name };
        rc = prv_commit(&op);
    }
    pthread_mutex_unlock(&prv_change_mu);
    if (have_rl)
        prv_roster_clear(&rl);
    xd_privacy_list_clear(&copy);
    prv_who_clear(&w);
    return rc;
}

/* True when the session `full` (stream conn) is bound now. */
static bool
prv_live(const xd_session_info_t *res, size_t n, const char *full, uint64_t conn)
{
    for (size_t i = 0; i < n; i++)
        if (res[i].ref.id == conn && xd_str_eq_c(xd_jid_full_str(res[i].jid), full))
            return true;
    return false;
}

int
xd_privacy_remove_list(const xd_jid_t *req, const char *name)
{
    if (!name || !*name)
        return XD_EINVAL;
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    xd_session_info_t res[PRV_MAX_RES];
    size_t n = xd_session_list(w.bare, res, PRV_MAX_RES);
    if (n > PRV_MAX_RES)
        n = PRV_MAX_RES;
    pthread_mutex_lock(&prv_change_mu);
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(w.bare));
    int i = a ? prv_list_index(a, name) : -1;
    if (i < 0)
        rc = XD_ENOTFOUND;
    else if (a->def == i)
        rc = XD_EEXIST; /* the default applies to the account: change it first */
    for (size_t s = 0; rc == 0 && s < a->nsess; s++) {
        const prv_sess_t *ss = &a->sess[s];
        bool mine = xd_str_eq_c(xd_jid_full_str(req), ss->full) && ss->conn_id == w.conn_id;
        if (ss->active && strcmp(ss->active, name) == 0 && !mine &&
            prv_live(res, n, ss->full, ss->conn_id))
            rc = XD_EEXIST; /* XEP-0016 2.8: active in another session */
    }
    pthread_rwlock_unlock(&prv_lock);
    for (size_t k = 0; k < n; k++)
        xd_session_info_clear(&res[k]);
    if (rc == 0) {
        prv_op_t op = { .w = w, .drop = name, .push_name = name };
        rc = prv_commit(&op);
    }
    pthread_mutex_unlock(&prv_change_mu);
    prv_who_clear(&w);
    return rc;
}

int
xd_privacy_set_active(const xd_jid_t *req, const char *name)
{
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    if (!w.conn_id) {
        prv_who_clear(&w);
        return XD_EINVAL; /* only a bound session has an active list */
    }
    pthread_mutex_lock(&prv_change_mu);
    if (name) {
        pthread_rwlock_rdlock(&prv_lock);
        const prv_acct_t *a = prv_find(xd_jid_bare_str(w.bare));
        if (!a || prv_list_index(a, name) < 0)
            rc = XD_ENOTFOUND;
        pthread_rwlock_unlock(&prv_lock);
    }
    if (rc == 0) {
        prv_op_t op = { .w = w, .act_op = name ? 1 : 2, .act_name = name };
        rc = prv_commit(&op);
    }
    pthread_mutex_unlock(&prv_change_mu);
    prv_sess_recheck(&w);
    prv_who_clear(&w);
    return rc;
}

int
xd_privacy_set_default(const xd_jid_t *req, const char *name)
{
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    xd_session_info_t res[PRV_MAX_RES];
    size_t n = xd_session_list(w.bare, res, PRV_MAX_RES);
    if (n > PRV_MAX_RES)
        n = PRV_MAX_RES;
    pthread_mutex_lock(&prv_change_mu);
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(w.bare));
    const char *cur = a && a->def >= 0 ? a->lists[a->def].name : NULL;
    if (name && (!a || prv_list_index(a, name) < 0))
        rc = XD_ENOTFOUND;
    bool change = cur && (!name || strcmp(cur, name) != 0);
    for (size_t i = 0; rc == 0 && change && i < n; i++) {
        /* XEP-0016 2.5: the current default is in use by a session other
         * than the requester, one without an active list. */
        if (xd_jid_eq(res[i].jid, req))
            continue;
        const prv_sess_t *s = prv_sess_find(a, xd_jid_full_str(res[i].jid));
        if (!s || s->conn_id != res[i].ref.id || !s->active)
            rc = XD_EEXIST;
    }
    pthread_rwlock_unlock(&prv_lock);
    for (size_t k = 0; k < n; k++)
        xd_session_info_clear(&res[k]);
    if (rc == 0 && (change || (name && !cur))) {
        prv_op_t op = { .w = w, .def_op = name ? 1 : 2, .def_name = name };
        rc = prv_commit(&op);
    }
    pthread_mutex_unlock(&prv_change_mu);
    prv_who_clear(&w);
    return rc;
}

/* The default list as it is (copy), or a new "Blocked contacts" (the
 * existing list of that name, when there is one).  *had_def: a default
 * existed.  Lock held. */
static void
prv_default_copy(const prv_acct_t *a, xd_privacy_list_t *out, bool *had_def)
{
    const xd_privacy_list_t *d = a ? prv_default(a) : NULL;
    *had_def = d != NULL;
    if (!d && a) {
        int i = prv_list_index(a, XD_PRIVACY_BLOCKED_LIST);
        d = i >= 0 ? &a->lists[i] : NULL;
    }
    if (d) {
        xd_privacy_list_copy(out, d);
    } else {
        memset(out, 0, sizeof *out);
        out->name = xd_strdup(XD_PRIVACY_BLOCKED_LIST);
    }
}

int
xd_privacy_block(const xd_jid_t *req, const char *const *jids, size_t n)
{
    if (!n)
        return XD_EINVAL;
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    xd_privacy_limits_t lim = prv_limits(w.host);
    pthread_mutex_lock(&prv_change_mu);
    xd_privacy_list_t l;
    bool had_def;
    char **view = NULL;
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(w.bare));
    prv_default_copy(a, &l, &had_def);
    size_t nview = prv_blockview(a, &view);
    pthread_rwlock_unlock(&prv_lock);

    /* The JIDs not blocked yet, in the order given, each once. */
    char **fresh = xd_calloc(n, sizeof *fresh);
    size_t nfresh = 0;
    for (size_t i = 0; i < n; i++) {
        bool have = false;
        for (size_t k = 0; k < l.n && !have; k++)
            have = xd_privacy_is_block_item(&l.items[k]) && strcmp(l.items[k].value, jids[i]) == 0;
        if (!have && !prv_strv_has(fresh, nfresh, jids[i]))
            fresh[nfresh++] = (char *)jids[i];
    }
    if (lim.max_blocked && nview + nfresh > (size_t)lim.max_blocked)
        rc = XD_ELIMIT;
    if (lim.max_items && l.n + nfresh > (size_t)lim.max_items)
        rc = XD_ELIMIT;
    if (rc == 0 && nfresh) {
        /* In front: orders below the first item, or everything shifted up. */
        uint32_t first = l.n ? l.items[0].order : (uint32_t)nfresh + 1;
        if (first < nfresh) {
            uint64_t shift = nfresh - first, top = l.items[l.n - 1].order;
            bool dense = top + shift > UINT32_MAX; /* no room above: renumber 0, 1, … */
            for (size_t k = 0; k < l.n; k++)
                l.items[k].order = dense ? (uint32_t)(nfresh + k)
                                         : l.items[k].order + (uint32_t)shift;
            first = (uint32_t)nfresh;
        }
        for (size_t i = 0; i < nfresh; i++) {
            xd_privacy_item_t it = { .type = XD_PRIVACY_JID, .value = fresh[i], .deny = true,
                                     .order = first - (uint32_t)nfresh + (uint32_t)i };
            xd_privacy_list_add(&l, &it);
        }
        xd_privacy_list_sort(&l);
    }
    if (rc == 0) {
        prv_op_t op = { .w = w,
                        .put = nfresh || !had_def ? &l : NULL,
                        .def_op = had_def ? 0 : 1,
                        .def_name = l.name,
                        .push_name = nfresh ? l.name : NULL,
                        .block_verb = "block",
                        .block_items = (char *const *)jids,
                        .nblock = n,
                        .new_jids = (const char *const *)fresh,
                        .nnew = nfresh };
        rc = prv_commit(&op);
    }
    pthread_mutex_unlock(&prv_change_mu);
    xd_free(fresh);
    prv_strv_free(view, nview);
    xd_privacy_list_clear(&l);
    prv_who_clear(&w);
    return rc;
}

int
xd_privacy_unblock(const xd_jid_t *req, const char *const *jids, size_t n)
{
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&prv_change_mu);
    xd_privacy_list_t l = { 0 };
    pthread_rwlock_rdlock(&prv_lock);
    const prv_acct_t *a = prv_find(xd_jid_bare_str(w.bare));
    const xd_privacy_list_t *d = a ? prv_default(a) : NULL;
    if (d)
        xd_privacy_list_copy(&l, d);
    pthread_rwlock_unlock(&prv_lock);
    size_t kept = 0, gone = 0;
    for (size_t i = 0; i < l.n; i++) {
        xd_privacy_item_t *it = &l.items[i];
        bool drop = xd_privacy_is_block_item(it);
        if (drop && n) {
            drop = false;
            for (size_t k = 0; k < n && !drop; k++)
                drop = strcmp(it->value, jids[k]) == 0;
        }
        if (drop) {
            xd_free(it->value);
            gone++;
        } else {
            l.items[kept++] = *it;
        }
    }
    l.n = kept;
    prv_op_t op = { .w = w,
                    .put = gone ? &l : NULL,
                    .push_name = gone ? l.name : NULL,
                    .block_verb = "unblock",
                    .block_items = (char *const *)jids,
                    .nblock = n };
    rc = prv_commit(&op);
    pthread_mutex_unlock(&prv_change_mu);
    xd_privacy_list_clear(&l);
    prv_who_clear(&w);
    return rc;
}

/* ---- roster changes -------------------------------------------------------------------------- */

/* ROSTER_CHANGED: the engine's copy follows the roster. */
static int
prv_roster_changed(xd_module_ctx_t *ctx, xd_hook_roster_changed_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    const char *host = ev->host, *user = ev->user;
    const xd_roster_view_t *it = ev->item;
    if (!host || !user || !it || !it->jid || atomic_load(&prv_naccts) == 0)
        return XD_HOOK_OK;
    char *bare = xd_asprintf("%s@%s", user, host);
    pthread_rwlock_wrlock(&prv_lock);
    prv_acct_t *a = prv_find(xd_str_c(bare));
    if (a && a->has_roster) {
        prv_contact_t *c = (prv_contact_t *)prv_contact_find(a, xd_str_c(it->jid));
        bool gone = !it->in_roster;
        if (c) {
            prv_contact_clear(c);
            size_t i = (size_t)(c - a->roster);
            memmove(&a->roster[i], &a->roster[i + 1], (a->nroster - i - 1) * sizeof *a->roster);
            a->nroster--;
        }
        if (!gone) {
            a->roster = xd_realloc(a->roster, (a->nroster + 1) * sizeof *a->roster);
            prv_contact_set(&a->roster[a->nroster++], it);
            if (a->nroster > 1)
                qsort(a->roster, a->nroster, sizeof *a->roster, prv_contact_sort);
        }
    }
    pthread_rwlock_unlock(&prv_lock);
    xd_free(bare);
    return XD_HOOK_OK;
}
