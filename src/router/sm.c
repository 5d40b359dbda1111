/*
 * sm.c — the session table (see sm.h).
 *
 *   shard[hash(bare) % SM_SHARDS] ── rwlock
 *        └── buckets[] ── sm_user {bare, resources[]} ── next
 *
 * A user entry lives while it has at least one resource.  All fields of a
 * shard are guarded by its rwlock; the entries handed out are copies.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "router/sm.h"

#include "xmppd/alloc.h"
#include "xmppd/err.h"

#define SM_SHARDS 64

typedef struct sm_user {
    struct sm_user *next;  /* bucket chain */
    uint64_t hash;         /* hash of bare */
    char *bare;            /* "user@host", owned */
    xd_session_info_t *res;    /* bound resources, owned jid references */
    size_t nres, capres;   /* count and capacity */
    xd_sm_account_t *acct; /* shared with the account's sessions (one reference) */
} sm_user_t;

struct xd_sm_account {
    _Atomic unsigned refs;    /* the table's entry + each session holding it */
    _Atomic unsigned carbons; /* resources with XD_SESSION_CARBONS (changed under the shard lock) */
};

static void
sm_account_unref(xd_sm_account_t *a)
{
    if (a && atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        xd_free(a);
}

void
xd_sm_account_unref(xd_sm_account_t *a)
{
    sm_account_unref(a);
}

bool
xd_sm_account_carbons(const xd_sm_account_t *a)
{
    return a && atomic_load_explicit(&a->carbons, memory_order_relaxed) != 0;
}

/* Shard lock held for writing: e's carbons flag went from `was` to `now`. */
static void
sm_carbons_change(sm_user_t *u, bool was, bool now)
{
    if (was != now)
        atomic_fetch_add_explicit(&u->acct->carbons, now ? 1u : (unsigned)-1,
                                  memory_order_relaxed);
}

typedef struct sm_shard {
    uv_rwlock_t lock;     /* guards everything below */
    sm_user_t **buckets;  /* power-of-two count */
    size_t nbuckets;      /* bucket count */
    size_t nusers;        /* user entries */
    size_t nsessions;     /* resources across users */
} sm_shard_t;

static sm_shard_t sm_shards[SM_SHARDS];
static bool sm_ready;

static uint64_t
sm_hash(xd_str_t s)
{
    /* FNV-1a, 64 bit. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < s.len; i++) {
        h ^= (unsigned char)s.p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int
xd_sm_init(void)
{
    for (int i = 0; i < SM_SHARDS; i++) {
        sm_shard_t *sh = &sm_shards[i];
        if (uv_rwlock_init(&sh->lock) != 0)
            return XD_EINTERNAL;
        sh->nbuckets = 64;
        sh->buckets = xd_calloc(sh->nbuckets, sizeof *sh->buckets);
        sh->nusers = sh->nsessions = 0;
    }
    sm_ready = true;
    return 0;
}

void
xd_session_info_clear(xd_session_info_t *e)
{
    if (e && e->jid) {
        xd_jid_unref(e->jid);
        e->jid = NULL;
    }
    if (e && e->presence) {
        xd_stanza_unref(e->presence);
        e->presence = NULL;
    }
}

static void
sm_user_free(sm_user_t *u)
{
    for (size_t i = 0; i < u->nres; i++)
        xd_session_info_clear(&u->res[i]);
    xd_free(u->res);
    xd_free(u->bare);
    sm_account_unref(u->acct);
    xd_free(u);
}

void
xd_sm_shutdown(void)
{
    if (!sm_ready)
        return;
    for (int i = 0; i < SM_SHARDS; i++) {
        sm_shard_t *sh = &sm_shards[i];
        for (size_t b = 0; b < sh->nbuckets; b++)
            for (sm_user_t *u = sh->buckets[b], *n; u; u = n) {
                n = u->next;
                sm_user_free(u);
            }
        xd_free(sh->buckets);
        sh->buckets = NULL;
        uv_rwlock_destroy(&sh->lock);
    }
    sm_ready = false;
}

static sm_shard_t *
sm_shard_of(uint64_t h)
{
    return &sm_shards[(h >> 58) % SM_SHARDS];
}

static sm_user_t *
sm_user_find(sm_shard_t *sh, uint64_t h, xd_str_t bare)
{
    for (sm_user_t *u = sh->buckets[h & (sh->nbuckets - 1)]; u; u = u->next)
        if (u->hash == h && strlen(u->bare) == bare.len && memcmp(u->bare, bare.p, bare.len) == 0)
            return u;
    return NULL;
}

static void
sm_grow(sm_shard_t *sh)
{
    size_t n = sh->nbuckets * 2;
    sm_user_t **nb = xd_calloc(n, sizeof *nb);
    for (size_t b = 0; b < sh->nbuckets; b++)
        for (sm_user_t *u = sh->buckets[b], *next; u; u = next) {
            next = u->next;
            u->next = nb[u->hash & (n - 1)];
            nb[u->hash & (n - 1)] = u;
        }
    xd_free(sh->buckets);
    sh->buckets = nb;
    sh->nbuckets = n;
}

static sm_user_t *
sm_user_get(sm_shard_t *sh, uint64_t h, xd_str_t bare)
{
    sm_user_t *u = sm_user_find(sh, h, bare);
    if (u)
        return u;
    if (sh->nusers + 1 > sh->nbuckets)
        sm_grow(sh);
    u = xd_new(sm_user_t);
    u->hash = h;
    u->bare = xd_strndup(bare.p, bare.len);
    u->acct = xd_new(xd_sm_account_t);
    atomic_init(&u->acct->refs, 1);
    atomic_init(&u->acct->carbons, 0);
    u->next = sh->buckets[h & (sh->nbuckets - 1)];
    sh->buckets[h & (sh->nbuckets - 1)] = u;
    sh->nusers++;
    return u;
}

static void
sm_user_drop_if_empty(sm_shard_t *sh, sm_user_t *u)
{
    if (u->nres)
        return;
    sm_user_t **pp = &sh->buckets[u->hash & (sh->nbuckets - 1)];
    while (*pp != u)
        pp = &(*pp)->next;
    *pp = u->next;
    sh->nusers--;
    sm_user_free(u);
}

static xd_session_info_t *
sm_res_find(sm_user_t *u, const xd_jid_t *jid)
{
    for (size_t i = 0; i < u->nres; i++)
        if (xd_jid_eq(u->res[i].jid, jid))
            return &u->res[i];
    return NULL;
}

/* The shard of jid's bare JID; *h gets the bare JID's hash. */
static sm_shard_t *
sm_shard_for(const xd_jid_t *jid, uint64_t *h)
{
    *h = sm_hash(xd_jid_bare_str(jid));
    return sm_shard_of(*h);
}

/* The entry of the full JID in its shard (locked by the caller), or NULL;
 * *up (may be NULL) gets its user. */
static xd_session_info_t *
sm_locate(sm_shard_t *sh, uint64_t h, const xd_jid_t *jid, sm_user_t **up)
{
    sm_user_t *u = sm_user_find(sh, h, xd_jid_bare_str(jid));
    if (up)
        *up = u;
    return u ? sm_res_find(u, jid) : NULL;
}

static void
sm_copy_out(const xd_session_info_t *from, xd_session_info_t *to)
{
    *to = *from;
    to->jid = xd_jid_ref(from->jid);
    if (from->presence)
        to->presence = xd_stanza_ref(from->presence);
}

static int
sm_bind(const xd_session_info_t *e, xd_session_info_t *old, bool replace, xd_sm_account_t **acct)
{
    xd_str_t bare = xd_jid_bare_str(e->jid);
    uint64_t h = sm_hash(bare);
    sm_shard_t *sh = sm_shard_of(h);
    int rc = 0;
    uv_rwlock_wrlock(&sh->lock);
    sm_user_t *u = sm_user_get(sh, h, bare);
    xd_session_info_t *cur = sm_res_find(u, e->jid);
    if (cur && !replace) {
        if (old)
            sm_copy_out(cur, old);
        rc = XD_EEXIST;
    } else if (cur) {
        sm_carbons_change(u, cur->flags & XD_SESSION_CARBONS, e->flags & XD_SESSION_CARBONS);
        if (old)
            *old = *cur; /* hand our references over */
        else
            xd_session_info_clear(cur);
        sm_copy_out(e, cur);
        rc = 1;
    } else {
        if (u->nres == u->capres) {
            u->capres = u->capres ? u->capres * 2 : 2;
            u->res = xd_realloc(u->res, u->capres * sizeof *u->res);
        }
        sm_copy_out(e, &u->res[u->nres++]);
        sm_carbons_change(u, false, e->flags & XD_SESSION_CARBONS);
        sh->nsessions++;
    }
    if (acct && rc >= 0) {
        /* Taken under the lock that bound it: the account of this binding. */
        *acct = u->acct;
        atomic_fetch_add_explicit(&u->acct->refs, 1, memory_order_relaxed);
    }
    uv_rwlock_wrunlock(&sh->lock);
    return rc;
}

int
xd_sm_bind(const xd_session_info_t *e, xd_session_info_t *old)
{
    return sm_bind(e, old, false, NULL);
}

int
xd_sm_bind_replace(const xd_session_info_t *e, xd_session_info_t *old)
{
    return sm_bind(e, old, true, NULL);
}

int
xd_sm_bind_account(const xd_session_info_t *e, bool replace, xd_session_info_t *old,
                   xd_sm_account_t **acct)
{
    *acct = NULL;
    return sm_bind(e, old, replace, acct);
}

bool
xd_sm_unbind(const xd_jid_t *jid, uint64_t id)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(jid, &h);
    bool removed = false;
    uv_rwlock_wrlock(&sh->lock);
    sm_user_t *u;
    xd_session_info_t *cur = sm_locate(sh, h, jid, &u);
    if (cur && cur->ref.id == id) {
        sm_carbons_change(u, cur->flags & XD_SESSION_CARBONS, false);
        xd_session_info_clear(cur);
        *cur = u->res[--u->nres];
        sh->nsessions--;
        removed = true;
        sm_user_drop_if_empty(sh, u);
    }
    uv_rwlock_wrunlock(&sh->lock);
    return removed;
}

int
xd_session_find(const xd_jid_t *jid, xd_session_info_t *out)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(jid, &h);
    int rc = XD_ENOTFOUND;
    uv_rwlock_rdlock(&sh->lock);
    xd_session_info_t *cur = sm_locate(sh, h, jid, NULL);
    if (cur) {
        sm_copy_out(cur, out);
        rc = 0;
    }
    uv_rwlock_rdunlock(&sh->lock);
    return rc;
}

int
xd_sm_set_presence(const xd_jid_t *jid, uint64_t id, bool available, int priority,
                   const xd_stanza_t *presence)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(jid, &h);
    int rc = XD_ENOTFOUND;
    uv_rwlock_wrlock(&sh->lock);
    xd_session_info_t *cur = sm_locate(sh, h, jid, NULL);
    if (cur && cur->ref.id == id) {
        cur->available = available;
        cur->priority = priority;
        if (cur->presence)
            xd_stanza_unref(cur->presence);
        cur->presence = available && presence ? xd_stanza_ref(presence) : NULL;
        rc = 0;
    }
    uv_rwlock_wrunlock(&sh->lock);
    return rc;
}

int
xd_sm_set_csi(const xd_jid_t *jid, uint64_t id, const xd_session_csi_t *csi)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(jid, &h);
    int rc = XD_ENOTFOUND;
    uv_rwlock_wrlock(&sh->lock);
    xd_session_info_t *cur = sm_locate(sh, h, jid, NULL);
    if (cur && cur->ref.id == id) {
        cur->csi = *csi;
        rc = 0;
    }
    uv_rwlock_wrunlock(&sh->lock);
    return rc;
}

int
xd_sm_rebind(const xd_jid_t *jid, uint64_t old_id, const xd_session_ref_t *ref, const char *ip,
             bool detached)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(jid, &h);
    int rc = XD_ENOTFOUND;
    uv_rwlock_wrlock(&sh->lock);
    xd_session_info_t *cur = sm_locate(sh, h, jid, NULL);
    if (cur && cur->ref.id == old_id) {
        cur->ref = *ref;
        if (ip)
            snprintf(cur->ip, sizeof cur->ip, "%s", ip);
        if (detached)
            cur->flags |= XD_SESSION_DETACHED;
        else
            cur->flags &= ~XD_SESSION_DETACHED;
        rc = 0;
    }
    uv_rwlock_wrunlock(&sh->lock);
    return rc;
}

int
xd_session_set_flag(const xd_jid_t *jid, unsigned flag, bool on)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(jid, &h);
    int rc = XD_ENOTFOUND;
    uv_rwlock_wrlock(&sh->lock);
    sm_user_t *u;
    xd_session_info_t *cur = sm_locate(sh, h, jid, &u);
    if (cur) {
        bool was = cur->flags & XD_SESSION_CARBONS;
        if (on)
            cur->flags |= flag;
        else
            cur->flags &= ~flag;
        sm_carbons_change(u, was, cur->flags & XD_SESSION_CARBONS);
        rc = 0;
    }
    uv_rwlock_wrunlock(&sh->lock);
    return rc;
}

int
xd_sm_find_ref(const xd_jid_t *full, xd_session_ref_t *ref, bool *carbons)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(full, &h);
    int rc = XD_ENOTFOUND;
    uv_rwlock_rdlock(&sh->lock);
    sm_user_t *u;
    xd_session_info_t *cur = sm_locate(sh, h, full, &u);
    if (cur) {
        *ref = cur->ref;
        *carbons = atomic_load_explicit(&u->acct->carbons, memory_order_relaxed) != 0;
        rc = 0;
    }
    uv_rwlock_rdunlock(&sh->lock);
    return rc;
}

xd_sm_account_t *
xd_sm_account(const xd_jid_t *jid)
{
    uint64_t h;
    sm_shard_t *sh = sm_shard_for(jid, &h);
    xd_sm_account_t *a = NULL;
    uv_rwlock_rdlock(&sh->lock);
    sm_user_t *u = sm_user_find(sh, h, xd_jid_bare_str(jid));
    if (u) {
        a = u->acct;
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    }
    uv_rwlock_rdunlock(&sh->lock);
    return a;
}

size_t
xd_session_list(const xd_jid_t *jid, xd_session_info_t *out, size_t max)
{
    xd_str_t bare = xd_jid_bare_str(jid);
    uint64_t h = sm_hash(bare);
    sm_shard_t *sh = sm_shard_of(h);
    size_t n = 0;
    uv_rwlock_rdlock(&sh->lock);
    sm_user_t *u = sm_user_find(sh, h, bare);
    if (u) {
        n = u->nres;
        for (size_t i = 0; i < n && i < max; i++)
            sm_copy_out(&u->res[i], &out[i]);
    }
    uv_rwlock_rdunlock(&sh->lock);
    return n;
}

static bool
sm_host_match(const xd_session_info_t *e, const char *host)
{
    return !host || xd_str_eq_c(xd_jid_domain(e->jid), host);
}

size_t
xd_session_foreach(const char *host, void (*fn)(void *arg, const xd_session_info_t *e),
                   void *arg)
{
    size_t n = 0;
    for (int i = 0; i < SM_SHARDS; i++) {
        sm_shard_t *sh = &sm_shards[i];
        /* Copy the shard's matching entries, then call fn without the lock. */
        uv_rwlock_rdlock(&sh->lock);
        xd_session_info_t *snap = xd_calloc(sh->nsessions ? sh->nsessions : 1, sizeof *snap);
        size_t k = 0;
        for (size_t b = 0; b < sh->nbuckets; b++)
            for (sm_user_t *u = sh->buckets[b]; u; u = u->next)
                for (size_t r = 0; r < u->nres; r++)
                    if (sm_host_match(&u->res[r], host))
                        sm_copy_out(&u->res[r], &snap[k++]);
        uv_rwlock_rdunlock(&sh->lock);
        for (size_t j = 0; j < k; j++) {
            if (fn)
                fn(arg, &snap[j]);
            xd_session_info_clear(&snap[j]);
        }
        xd_free(snap);
        n += k;
    }
    return n;
}

size_t
xd_session_count(const char *host)
{
    if (!host) {
        size_t n = 0;
        for (int i = 0; i < SM_SHARDS; i++) {
            uv_rwlock_rdlock(&sm_shards[i].lock);
            n += sm_shards[i].nsessions;
            uv_rwlock_rdunlock(&sm_shards[i].lock);
        }
        return n;
    }
    return xd_session_foreach(host, NULL, NULL);
}
