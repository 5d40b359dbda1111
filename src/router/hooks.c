/*
 * hooks.c — named hook chains (include/xmppd/hooks.h).
 *
 * Each hook id has a current chain: an immutable, reference-counted,
 * priority-sorted array (a snapshot).  A run takes a reference to the
 * current snapshot under the read lock, drops the lock and calls the
 * handlers; add/remove build a new array under the write lock, publish it
 * and retire the old one.  A retired snapshot stays on the `retired` list
 * until its last reader drops it, which lets xd_hook_sync() wait for runs
 * that may still call a removed handler.
 *
 * Invariants: hk_cur[id] is never NULL after first use (an empty chain has
 * n == 0); a snapshot's entries are sorted by (prio, seq); every snapshot
 * is either current (holding one "published" reference) or on the retired
 * list, never both.
 *
 * xd_preauth_answer is here too: the hook API is the router's, and the token
 * of C2S_UNAUTHENTICATED_IQ carries the answer function of the stream that
 * made it (router/preauth.h), so nothing here calls up into src/stream.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "router/preauth.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"

typedef struct hk_entry {
    char *host;            /* served host, or NULL for every host; owned by the snapshot */
    int prio;              /* lower runs first */
    unsigned long seq;     /* insertion order among equal priorities */
    xd_hook_fn_any fn;     /* the handler, converted from its hook's handler type */
    xd_module_ctx_t *ctx;  /* the module instance that added it, or NULL */
    void *arg;             /* its argument */
} hk_entry_t;

typedef struct hk_snap {
    _Atomic unsigned refs;  /* readers + 1 while current */
    struct hk_snap *next;   /* retired list link (hk_retired_lock) */
    unsigned long gen;      /* retirement number (hk_retired_lock) */
    size_t n;               /* entries used */
    hk_entry_t e[];         /* sorted by (prio, seq); immutable after publish */
} hk_snap_t;

static pthread_rwlock_t hk_lock = PTHREAD_RWLOCK_INITIALIZER; /* guards hk_cur, hk_seq */
static pthread_mutex_t hk_retired_lock = PTHREAD_MUTEX_INITIALIZER; /* guards hk_retired */
static hk_snap_t *hk_cur[XD_HOOK_COUNT_];  /* current chains; NULL = empty, never used */
static hk_snap_t *hk_retired;              /* retired snapshots still read */
static unsigned long hk_seq;               /* next insertion number (write lock) */
static unsigned long hk_retire_gen;        /* retirements so far (hk_retired_lock) */

static _Atomic size_t hk_count[XD_HOOK_COUNT_]; /* handlers in the current chain */

static const struct {
    const char *name;   /* "user_available" */
    const char *thread; /* "loop", "pool", "any" */
    const char *doc;    /* one line */
} hk_info[XD_HOOK_COUNT_] = {
#define XD_HOOK(ID, name, T, thread, doc) [XD_HOOK_##ID] = { #name, thread, doc },
#include "xmppd/hooks.def"
#undef XD_HOOK
};

const char *
xd_hook_name(xd_hook_id id)
{
    return (unsigned)id < XD_HOOK_COUNT_ ? hk_info[id].name : NULL;
}

const char *
xd_hook_thread(xd_hook_id id)
{
    return (unsigned)id < XD_HOOK_COUNT_ ? hk_info[id].thread : NULL;
}

const char *
xd_hook_doc(xd_hook_id id)
{
    return (unsigned)id < XD_HOOK_COUNT_ ? hk_info[id].doc : NULL;
}

bool
xd_hook_active(xd_hook_id id)
{
    return (unsigned)id < XD_HOOK_COUNT_ &&
           atomic_load_explicit(&hk_count[id], memory_order_relaxed) > 0;
}

static void
hk_snap_free(hk_snap_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        xd_free(s->e[i].host);
    xd_free(s);
}

/* Drops a reference; the last one of a retired snapshot frees it. */
static void
hk_snap_unref(hk_snap_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    pthread_mutex_lock(&hk_retired_lock);
    for (hk_snap_t **pp = &hk_retired; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&hk_retired_lock);
    hk_snap_free(s);
}

/* Write lock held: replaces the chain of id with `s` and retires the old one. */
static void
hk_publish(xd_hook_id id, hk_snap_t *s)
{
    hk_snap_t *old = hk_cur[id];
    atomic_store(&s->refs, 1);
    hk_cur[id] = s;
    atomic_store(&hk_count[id], s->n);
    if (old) {
        pthread_mutex_lock(&hk_retired_lock);
        old->gen = ++hk_retire_gen;
        old->next = hk_retired;
        hk_retired = old;
        pthread_mutex_unlock(&hk_retired_lock);
        hk_snap_unref(old);
    }
}

static hk_snap_t *
hk_snap_new(size_t n)
{
    hk_snap_t *s = xd_calloc(1, sizeof *s + n * sizeof(hk_entry_t));
    return s;
}

static bool
hk_same_host(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int
xd_hook_add_any(xd_hook_id id, const char *host, xd_module_ctx_t *ctx, int prio, xd_hook_fn_any fn,
                void *arg)
{
    if ((unsigned)id >= XD_HOOK_COUNT_ || !fn)
        return XD_EINVAL;
    pthread_rwlock_wrlock(&hk_lock);
    hk_snap_t *old = hk_cur[id];
    size_t n = old ? old->n : 0;
    for (size_t i = 0; i < n; i++)
        if (old->e[i].fn == fn && old->e[i].arg == arg && old->e[i].ctx == ctx &&
            hk_same_host(old->e[i].host, host)) {
            pthread_rwlock_unlock(&hk_lock);
            return XD_EEXIST;
        }
    hk_snap_t *s = hk_snap_new(n + 1);
    size_t j = 0;
    bool placed = false;
    hk_entry_t ne = { host ? xd_strdup(host) : NULL, prio, hk_seq++, fn, ctx, arg };
    for (size_t i = 0; i < n; i++) {
        /* Equal priorities keep insertion order: the new one goes after them. */
        if (!placed && prio < old->e[i].prio) {
            s->e[j++] = ne;
            placed = true;
        }
        s->e[j] = old->e[i];
        s->e[j].host = old->e[i].host ? xd_strdup(old->e[i].host) : NULL;
        j++;
    }
    if (!placed)
        s->e[j++] = ne;
    s->n = j;
    hk_publish(id, s);
    pthread_rwlock_unlock(&hk_lock);
    return 0;
}

bool
xd_hook_remove_any(xd_hook_id id, const char *host, xd_module_ctx_t *ctx, xd_hook_fn_any fn,
                   void *arg)
{
    if ((unsigned)id >= XD_HOOK_COUNT_)
        return false;
    pthread_rwlock_wrlock(&hk_lock);
    hk_snap_t *old = hk_cur[id];
    bool found = false;
    if (old) {
        hk_snap_t *s = hk_snap_new(old->n);
        size_t j = 0;
        for (size_t i = 0; i < old->n; i++) {
            const hk_entry_t *e = &old->e[i];
            if (!found && e->fn == fn && e->arg == arg && e->ctx == ctx &&
                hk_same_host(e->host, host)) {
                found = true;
                continue;
            }
            s->e[j] = *e;
            s->e[j].host = e->host ? xd_strdup(e->host) : NULL;
            j++;
        }
        s->n = j;
        if (found)
            hk_publish(id, s);
        else
            hk_snap_free(s);
    }
    pthread_rwlock_unlock(&hk_lock);
    return found;
}

static hk_snap_t *
hk_get(xd_hook_id id)
{
    pthread_rwlock_rdlock(&hk_lock);
    hk_snap_t *s = hk_cur[id];
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_rwlock_unlock(&hk_lock);
    return s;
}

static int
hk_run(xd_hook_id id, const char *host, bool all, void *ev, xd_hook_caller call)
{
    if ((unsigned)id >= XD_HOOK_COUNT_ || !xd_hook_active(id))
        return XD_HOOK_OK;
    hk_snap_t *s = hk_get(id);
    if (!s)
        return XD_HOOK_OK;
    int rc = XD_HOOK_OK;
    for (size_t i = 0; i < s->n; i++) {
        const hk_entry_t *e = &s->e[i];
        if (!all && e->host && (!host || strcmp(e->host, host) != 0))
            continue;
        if (call(e->fn, e->ctx, ev, e->arg) == XD_HOOK_STOP) {
            rc = XD_HOOK_STOP;
            break;
        }
    }
    hk_snap_unref(s);
    return rc;
}

int
xd_hook_run_any(xd_hook_id id, const char *host, void *ev, xd_hook_caller call)
{
    return hk_run(id, host, false, ev, call);
}

int
xd_hook_run_all_any(xd_hook_id id, void *ev, xd_hook_caller call)
{
    return hk_run(id, NULL, true, ev, call);
}

size_t
xd_hook_count(xd_hook_id id, const char *host)
{
    if ((unsigned)id >= XD_HOOK_COUNT_)
        return 0;
    hk_snap_t *s = hk_get(id);
    if (!s)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        if (!s->e[i].host || (host && strcmp(s->e[i].host, host) == 0))
            n++;
    hk_snap_unref(s);
    return n;
}

void
xd_hook_sync(void)
{
    /* Wait until no snapshot retired up to now is still being read.  Runs
     * that start later read newer snapshots, without the removed entries. */
    pthread_mutex_lock(&hk_retired_lock);
    unsigned long upto = hk_retire_gen;
    for (;;) {
        bool busy = false;
        for (hk_snap_t *p = hk_retired; p && !busy; p = p->next)
            busy = p->gen <= upto;
        if (!busy)
            break;
        pthread_mutex_unlock(&hk_retired_lock);
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&hk_retired_lock);
    }
    pthread_mutex_unlock(&hk_retired_lock);
}

void
xd_hook_clear(void)
{
    pthread_rwlock_wrlock(&hk_lock);
    for (int id = 0; id < XD_HOOK_COUNT_; id++) {
        if (!hk_cur[id])
            continue;
        hk_snap_t *empty = hk_snap_new(0);
        hk_publish((xd_hook_id)id, empty);
    }
    pthread_rwlock_unlock(&hk_lock);
}

/* ---- C2S_UNAUTHENTICATED_IQ answers ------------------------------------------------------------ */

void
xd_preauth_answer(xd_preauth_t *req, const xd_stanza_t *reply, unsigned flags)
{
    req->answer(req, reply, flags); /* the stream that made the token (router/preauth.h) */
}
