/*
 * privacy_host.c — the hosts of the privacy engine: which of mod_privacy
 * and mod_blocking runs on each, their limits, attaching (loading a host's
 * lists and the rosters they need) and detaching, and the engine's global
 * hooks, added with the first host and removed with the last.
 *
 * Who may touch what: prv_hosts and every prv_host_t under prv_hosts_lock,
 * a leaf lock (nothing else is taken while it is held); prv_db is atomic.
 * Attach and detach run on the main or reload thread, one at a time (the
 * module manager's rule).
 */
#include <string.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define PRV_FILTER_PRIO 30 /* before mod_presence (40): privacy is the first delivery rule */

/* A host where mod_blocking and/or mod_privacy run (prv_hosts_lock). */
typedef struct prv_host {
    struct prv_host *next;   /* the list */
    char *host;              /* the host (owned) */
    unsigned by;             /* xd_privacy_user bits */
    xd_privacy_limits_t lim; /* the modules' limits */
} prv_host_t;

static pthread_rwlock_t prv_hosts_lock = PTHREAD_RWLOCK_INITIALIZER; /* prv_hosts */
static prv_host_t *prv_hosts;     /* attached hosts (prv_hosts_lock) */
static _Atomic(xd_db_t *) prv_db; /* the database, from the first module that attached */

static prv_host_t *
prv_host_find(const char *host)
{
    for (prv_host_t *h = prv_hosts; h; h = h->next)
        if (strcmp(h->host, host) == 0)
            return h;
    return NULL;
}

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
    pthread_rwlock_wrlock(&prv_hosts_lock);
    prv_host_t *h = prv_host_find(host);
    if (h) {
        h->by |= (unsigned)by;
        prv_set_limits(h, lim);
        pthread_rwlock_unlock(&prv_hosts_lock);
        return 0;
    }
    pthread_rwlock_unlock(&prv_hosts_lock);

    /* The first module of this host: load its lists, then put them in the
     * store, each account at once.  The host is not yet in prv_hosts, so
     * no request for it changes the store meanwhile.  What the store held
     * for the host goes, whether the load succeeds or not. */
    prv_load_t l = { .host = host, .accts = XD_MAP_INIT };
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        rc = prv_sql_load(c, &l);
        xd_db_release(c);
        prv_forget_host(host);
        if (rc >= 0)
            prv_install(&l.accts);
    }
    prv_accts_free(&l.accts); /* what a failed load read */
    if (rc < 0) {
        *err = xd_asprintf("cannot load the privacy lists: %s", xd_strerror(rc));
        return rc;
    }
    prv_load_rosters(host);

    pthread_rwlock_wrlock(&prv_hosts_lock);
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
    pthread_rwlock_unlock(&prv_hosts_lock);
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
    char *gone = NULL; /* the host, when its last module went */
    pthread_rwlock_wrlock(&prv_hosts_lock);
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
            gone = h->host;
            xd_free(h);
            last = prv_hosts == NULL;
        }
        break;
    }
    pthread_rwlock_unlock(&prv_hosts_lock);
    if (gone)
        prv_forget_host(gone); /* requests for it are refused from now on */
    xd_free(gone);
    if (last)
        prv_hooks(false);
}

bool
xd_privacy_store_runs(const char *host, xd_privacy_user by)
{
    pthread_rwlock_rdlock(&prv_hosts_lock);
    const prv_host_t *h = prv_host_find(host);
    bool r = h && (h->by & (unsigned)by);
    pthread_rwlock_unlock(&prv_hosts_lock);
    return r;
}

/* Is host in prv_hosts? */
bool
prv_host_on(const char *host)
{
    pthread_rwlock_rdlock(&prv_hosts_lock);
    bool on = prv_host_find(host) != NULL;
    pthread_rwlock_unlock(&prv_hosts_lock);
    return on;
}

/* The limits of host, copied. */
xd_privacy_limits_t
prv_host_limits(const char *host)
{
    xd_privacy_limits_t l = { 0, 0, 0 };
    pthread_rwlock_rdlock(&prv_hosts_lock);
    const prv_host_t *h = prv_host_find(host);
    if (h)
        l = h->lim;
    pthread_rwlock_unlock(&prv_hosts_lock);
    return l;
}

/* The database, from the first module that attached (NULL before). */
xd_db_t *
prv_host_db(void)
{
    return atomic_load(&prv_db);
}
