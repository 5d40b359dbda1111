/*
 * privacy_store.c — the privacy engine's in-memory store: one entry per
 * account with lists or remembered sessions, the roster copy of accounts
 * whose lists need one, and what an account's rules decide (prv_judge).
 *
 *   prv_accts (xd_map, bare JID) ─► prv_acct (privacy_int.h)
 *
 * Who may touch what: prv_lock guards prv_accts and every entry in it;
 * prv_naccts is written under the write lock and read by anyone without
 * it.  Nothing here blocks but prv_roster_fetch and prv_load_rosters,
 * which read rosters without holding the lock.
 */
#include <stdlib.h>
#include <string.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"
#include "xmppd/map.h"

pthread_rwlock_t prv_lock = PTHREAD_RWLOCK_INITIALIZER;
pthread_mutex_t prv_change_mu = PTHREAD_MUTEX_INITIALIZER;
_Atomic size_t prv_naccts;
static xd_map_t prv_accts = XD_MAP_INIT; /* bare JID → prv_acct_t (prv_lock) */

/* The entry of bare JID key, or NULL.  Lock held. */
prv_acct_t *
prv_find(xd_str_t key)
{
    return key.len ? xd_map_get(&prv_accts, key) : NULL;
}

/* The entry of key, created when missing.  Write lock held. */
prv_acct_t *
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

void
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
void
prv_drop_if_empty(prv_acct_t *a, bool force)
{
    if (!force && (a->nlists || a->nsess))
        return;
    xd_map_del(&prv_accts, xd_str_c(a->bare));
    atomic_store(&prv_naccts, xd_map_count(&prv_accts));
    prv_acct_free(a);
}

int
prv_list_index(const prv_acct_t *a, const char *name)
{
    for (size_t i = 0; name && i < a->nlists; i++)
        if (strcmp(a->lists[i].name, name) == 0)
            return (int)i;
    return -1;
}

const xd_privacy_list_t *
prv_default(const prv_acct_t *a)
{
    return a->def >= 0 ? &a->lists[a->def] : NULL;
}

prv_sess_t *
prv_sess_find(const prv_acct_t *a, xd_str_t full)
{
    for (size_t i = 0; full.len && i < a->nsess; i++)
        if (prv_str_is(full, a->sess[i].full, strlen(a->sess[i].full)))
            return &a->sess[i];
    return NULL;
}

void
prv_count_active(prv_acct_t *a)
{
    a->nactive = 0;
    for (size_t i = 0; i < a->nsess; i++)
        a->nactive += a->sess[i].active != NULL;
}

/* The entry of session (full, conn_id), created when missing; an entry of
 * an older stream of the same full JID starts over.  Write lock held. */
prv_sess_t *
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

void
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

void
prv_roster_clear(prv_roster_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        prv_contact_clear(&r->items[i]);
    xd_free(r->items);
    memset(r, 0, sizeof *r);
}

/* Reads user@host's roster from whoever keeps rosters (ROSTER_GET; this
 * runs on the pool).  Without a roster module the roster is empty (0). */
int
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
void
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

bool
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
prv_verdict_t
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

/* The blocklist of a: block items of the default list, each value once.
 * Lock held; *out malloc'd (strings owned). */
size_t
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

void
prv_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        xd_free(v[i]);
    xd_free(v);
}

bool
prv_strv_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
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
void
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
void
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

/* ROSTER_CHANGED: the engine's copy follows the roster. */
int
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
