/*
 * privacy_store.c — the privacy engine's in-memory store: one entry per
 * account with lists or remembered sessions, the roster copy of accounts
 * whose lists need one, and what an account's rules decide (prv_judge).
 *
 * The store is sharded (privacy_int.h has the picture and who may touch
 * what): the top PRV_SHARD_BITS of prv_hash(bare JID) pick its shard, the
 * top PRV_SLOT_BITS its slot in prv_slots, so the 64 slots of a shard
 * refine it.  prv_hash reads 8 bytes at a time: the filter hashes two JIDs
 * per stanza, most often only to find their slots empty.  The map of a
 * shard hashes its keys again, its own way, for its buckets.
 *
 * Invariant: prv_slots[s] is the number of entries, in any shard, whose
 * hash has s as its top PRV_SLOT_BITS, and prv_naccts the number of all
 * entries; both change with the map of a shard, under its write lock.
 *
 * Nothing here blocks but prv_roster_fetch and prv_load_rosters, which
 * read rosters without holding a lock.
 */
#include <stdlib.h>
#include <string.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"

#define PRV_SHARD_BITS 6 /* 64 shards */
#define PRV_NSHARDS (1u << PRV_SHARD_BITS)
#define PRV_SLOT_BITS 12 /* 4096 counters in prv_slots, 64 per shard */

/* A shard: the accounts whose bare JID hashes to it.  Padded to a cache
 * line of its own, so that readers of one shard do not slow another. */
struct prv_shard {
    _Alignas(64) pthread_rwlock_t lock; /* guards accts and every entry in it */
    pthread_mutex_t change_mu;          /* the writers of its accounts, one at a time */
    xd_map_t accts;                     /* bare JID → prv_acct_t (lock) */
};

/* Every shard is initialised statically, so no call has to come first. */
#define PRV_SHARD_INIT                                                                          \
    { .lock = PTHREAD_RWLOCK_INITIALIZER, .change_mu = PTHREAD_MUTEX_INITIALIZER }
#define PRV_SHARD_INIT4 PRV_SHARD_INIT, PRV_SHARD_INIT, PRV_SHARD_INIT, PRV_SHARD_INIT
#define PRV_SHARD_INIT16 PRV_SHARD_INIT4, PRV_SHARD_INIT4, PRV_SHARD_INIT4, PRV_SHARD_INIT4

static prv_shard_t prv_shards[] = { PRV_SHARD_INIT16, PRV_SHARD_INIT16, PRV_SHARD_INIT16,
                                    PRV_SHARD_INIT16 };
_Static_assert(sizeof prv_shards / sizeof prv_shards[0] == PRV_NSHARDS, "one init per shard");

static _Atomic uint32_t prv_slots[1u << PRV_SLOT_BITS]; /* entries per hash slot */
_Atomic size_t prv_naccts;

/* A 64-bit hash of key, 8 bytes at a time, with MurmurHash3's finaliser
 * so that its top bits depend on every byte. */
static uint64_t
prv_hash(xd_str_t key)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ key.len, w;
    size_t i = 0;
    for (; i + 8 <= key.len; i += 8) {
        memcpy(&w, key.p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    w = 0;
    if (i < key.len)
        memcpy(&w, key.p + i, key.len - i);
    h = (h ^ w) * 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

static prv_shard_t *
prv_shard_of(uint64_t h)
{
    return &prv_shards[h >> (64 - PRV_SHARD_BITS)];
}

/* A slot's count is read relaxed: a change that happened before the read
 * (through whatever ordered the two threads) is seen by it, and one made
 * at the same time may or may not be, exactly as with a lock taken a
 * moment earlier or later. */
static bool
prv_known_h(uint64_t h)
{
    return atomic_load_explicit(&prv_slots[h >> (64 - PRV_SLOT_BITS)], memory_order_relaxed) != 0;
}

/* An entry with hash h comes (add) or goes.  Its shard write-locked. */
static void
prv_tally(uint64_t h, bool add)
{
    _Atomic uint32_t *slot = &prv_slots[h >> (64 - PRV_SLOT_BITS)];
    if (add) {
        atomic_fetch_add(slot, 1);
        atomic_fetch_add(&prv_naccts, 1);
    } else {
        atomic_fetch_sub(slot, 1);
        atomic_fetch_sub(&prv_naccts, 1);
    }
}

bool
prv_known(xd_str_t key)
{
    return key.len && prv_known_h(prv_hash(key));
}

/* prv_read and prv_edit. */
static prv_acct_t *
prv_lock_find(xd_str_t key, prv_shard_t **sh, bool write)
{
    *sh = NULL;
    if (!key.len)
        return NULL;
    uint64_t h = prv_hash(key);
    if (!prv_known_h(h))
        return NULL;
    *sh = prv_shard_of(h);
    if (write)
        pthread_rwlock_wrlock(&(*sh)->lock);
    else
        pthread_rwlock_rdlock(&(*sh)->lock);
    return xd_map_get(&(*sh)->accts, key);
}

const prv_acct_t *
prv_read(xd_str_t key, prv_shard_t **sh)
{
    return prv_lock_find(key, sh, false);
}

prv_acct_t *
prv_edit(xd_str_t key, prv_shard_t **sh)
{
    return prv_lock_find(key, sh, true);
}

void
prv_unlock(prv_shard_t *sh)
{
    if (sh)
        pthread_rwlock_unlock(&sh->lock);
}

prv_shard_t *
prv_writer_begin(xd_str_t key)
{
    prv_shard_t *sh = prv_shard_of(prv_hash(key));
    pthread_mutex_lock(&sh->change_mu);
    return sh;
}

void
prv_writer_end(prv_shard_t *sh)
{
    pthread_mutex_unlock(&sh->change_mu);
}

prv_acct_t *
prv_acct_new(xd_str_t key)
{
    prv_acct_t *a = xd_new(prv_acct_t);
    a->bare = xd_strndup(key.p, key.len);
    a->hash = prv_hash(key);
    a->def = -1;
    return a;
}

prv_acct_t *
prv_get(xd_str_t key, prv_shard_t **sh)
{
    *sh = prv_shard_of(prv_hash(key));
    pthread_rwlock_wrlock(&(*sh)->lock);
    prv_acct_t *a = key.len ? xd_map_get(&(*sh)->accts, key) : NULL;
    if (a)
        return a;
    a = prv_acct_new(key);
    xd_map_put(&(*sh)->accts, key, a);
    prv_tally(a->hash, true);
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

void
prv_drop_if_empty(prv_acct_t *a, bool force)
{
    if (!force && (a->nlists || a->nsess))
        return;
    xd_map_del(&prv_shard_of(a->hash)->accts, xd_str_c(a->bare));
    prv_tally(a->hash, false);
    prv_acct_free(a);
}

static void
prv_acct_free_v(void *a)
{
    prv_acct_free(a);
}

void
prv_accts_free(xd_map_t *m)
{
    xd_map_free(m, prv_acct_free_v);
}

static int
prv_install_one(void *arg, const char *key, void *val)
{
    (void)arg;
    prv_acct_t *a = val;
    prv_shard_t *sh = prv_shard_of(a->hash);
    pthread_rwlock_wrlock(&sh->lock);
    prv_acct_t *old = xd_map_put(&sh->accts, xd_str_c(key), a);
    if (old)
        prv_acct_free(old);
    else
        prv_tally(a->hash, true);
    pthread_rwlock_unlock(&sh->lock);
    return 0;
}

void
prv_install(xd_map_t *m)
{
    xd_map_foreach(m, prv_install_one, NULL);
    xd_map_free(m, NULL); /* the entries are the store's now */
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
 * an older stream of the same full JID starts over.  Its shard write-locked. */
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

size_t
prv_sessions(const xd_jid_t *jid, xd_session_info_t *res)
{
    size_t n = xd_session_list(jid, res, PRV_MAX_RES);
    return n > PRV_MAX_RES ? PRV_MAX_RES : n;
}

void
prv_sessions_clear(xd_session_info_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xd_session_info_clear(&res[i]);
}

uint64_t
prv_live_id(const xd_jid_t *full)
{
    xd_session_info_t e;
    uint64_t live = 0;
    if (xd_session_find(full, &e) == 0) {
        live = e.ref.id;
        xd_session_info_clear(&e);
    }
    return live;
}

void
prv_sess_forget(const xd_jid_t *full, uint64_t conn_id, uint64_t live)
{
    prv_shard_t *sh;
    prv_acct_t *a = prv_edit(xd_jid_bare_str(full), &sh);
    prv_sess_t *s = a ? prv_sess_find(a, xd_jid_full_str(full)) : NULL;
    if (s && (live == 0 || s->conn_id != live) && (conn_id == 0 || s->conn_id == conn_id)) {
        prv_sess_del(a, s);
        prv_drop_if_empty(a, false);
    }
    prv_unlock(sh);
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

/* Installs roster r as a's copy (r is emptied).  Its shard write-locked. */
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

/* The rules' view of `other` for account a.  Its shard locked; the groups are lent. */
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
 * stanza of kind k with `other`.  Its shard locked. */
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
 * Its shard locked; *out malloc'd (strings owned). */
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

static void
prv_of_host_clear(prv_of_host_t *o)
{
    prv_strv_free(o->bare, o->n);
    o->bare = NULL;
    o->n = 0;
}

void
prv_forget_host(const char *host)
{
    prv_of_host_t o = { .host = host };
    for (size_t s = 0; s < PRV_NSHARDS; s++) {
        prv_shard_t *sh = &prv_shards[s];
        pthread_rwlock_wrlock(&sh->lock);
        xd_map_foreach(&sh->accts, prv_of_host_fn, &o);
        for (size_t i = 0; i < o.n; i++)
            prv_drop_if_empty(xd_map_get(&sh->accts, xd_str_c(o.bare[i])), true);
        pthread_rwlock_unlock(&sh->lock);
        prv_of_host_clear(&o);
    }
}

/* Reads the rosters the host's lists need, one account at a time (no
 * shard is locked while reading).  Blocking. */
void
prv_load_rosters(const char *host)
{
    prv_of_host_t o = { .host = host, .roster_only = true };
    for (size_t s = 0; s < PRV_NSHARDS; s++) {
        pthread_rwlock_rdlock(&prv_shards[s].lock);
        xd_map_foreach(&prv_shards[s].accts, prv_of_host_fn, &o);
        pthread_rwlock_unlock(&prv_shards[s].lock);
    }
    for (size_t i = 0; i < o.n; i++) {
        const char *at = strchr(o.bare[i], '@');
        char *user = xd_strndup(o.bare[i], (size_t)(at - o.bare[i]));
        prv_roster_t rl;
        if (prv_roster_fetch(host, user, &rl) != 0)
            memset(&rl, 0, sizeof rl); /* no roster: nobody is in it */
        prv_shard_t *sh;
        prv_acct_t *a = prv_edit(xd_str_c(o.bare[i]), &sh);
        if (a && !a->has_roster)
            prv_roster_install(a, &rl);
        prv_unlock(sh);
        prv_roster_clear(&rl);
        xd_free(user);
    }
    prv_of_host_clear(&o);
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
    prv_shard_t *sh;
    prv_acct_t *a = prv_edit(xd_str_c(bare), &sh);
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
    prv_unlock(sh);
    xd_free(bare);
    return XD_HOOK_OK;
}
