/*
 * auth.c — the front of the auth backends (xmppd/auth.h): the per-host
 * backend table, request objects and their completion.  The backends are
 * internal.c (SCRAM credentials in the database, on the blocking pool) and
 * external.c (a pool of script processes per host).
 *
 * The table maps each served host to its method and, for an external host,
 * its script pool.  It is published under a rwlock: every call looks its host
 * up and hands its request to the backend under the read lock (handing over
 * never blocks: the pool and the script queue are bounded and answer
 * XD_EFULL at once), and a reload builds a new table outside the lock, swaps
 * it in under the write lock and only then stops the script pools that the
 * new table does not keep.  After the swap no reader can still reach a
 * stopped pool, so a pool is never used after it was freed.
 *
 * A request (auth_int.h) carries owned copies of its strings.  Async
 * requests come back to the requesting worker through its inbox:
 *
 *   internal:  xd_pool_submit holds the worker; the pool's done callback
 *              runs on the worker and calls auth_req_deliver.
 *   external,  auth.c holds the worker (xd_worker_hold, held = true) so its
 *   anonymous: inbox stays open across a stop; the backend thread calls
 *              auth_req_finish, which posts auth_req_deliver to the worker;
 *              deliver runs the callback and drops the hold.
 *
 * Sync requests (w == NULL) run internal work on the calling thread and
 * wait on the request's semaphore for external work.
 *
 * Method lists (auth_method: [a, b, …]) and the ldap and pam methods go
 * through the chain (au_chain_run), which runs on the blocking pool (async)
 * or the calling thread (sync) and asks each method in turn: a CHECK or
 * EXISTS stops at the first "yes"; an error of one method is kept and
 * answered only when no later method says yes; the writing operations go to
 * the first method that stores passwords (internal, external).  An external
 * step is a sync sub-request to its script pool, submitted under the read
 * lock like any other; the chain looks its host up again for every step, so
 * a reload between steps is seen and no backend is used after it was freed
 * (ldap and pam backends are reference-counted, script pools are reached
 * under the lock only).  A single internal, external or anonymous method
 * keeps its direct path.
 *
 * Invariants: au.table, au.db and au.running change only under the write
 * lock, and start/reload/stop are serialised by au.admin; a request is
 * finished exactly once; every password copy is wiped when its request is
 * freed.
 */
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/authlimit.h"
#include "auth/auth_int.h"
#include "core/pool.h"
#include "storage/dbhosts.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/auth.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

/* One served host. */
typedef struct au_host {
    char *host;          /* owned; normalised served domain (the sort key) */
    int method;          /* xd_auth_method: the first of methods */
    xd_auth_methods_t methods; /* all of them, in order */
    bool chain;          /* several methods, or ldap / pam: requests go through au_chain_run */
    auth_ldap_t *ldap;   /* ldap: the backend (the table holds a reference) */
    auth_pam_t *pam;     /* pam: the backend (the table holds a reference) */
    unsigned iterations; /* internal: scram_iterations for new credentials */
    auth_ext_t *ext;     /* external: the script pool (the table owns it) */
    bool reused;         /* reload: ext came from the previous table */
    xd_db_t *db;         /* internal: the host's database (storage/dbhosts.h), else au.db */
} au_host_t;

/* Everything served; immutable once published. */
typedef struct au_table {
    au_host_t *hosts; /* count entries sorted by host (strcmp), owned */
    size_t count;     /* number of hosts */
} au_table_t;

static struct {
    uv_rwlock_t lock;   /* guards table, db, running */
    uv_mutex_t admin;   /* serialises start, reload and stop */
    au_table_t *table;  /* the published table, or NULL when stopped */
    xd_db_t *db;        /* borrowed from xd_auth_start; NULL when no host is internal */
    bool running;       /* between start and stop */
} au;

static uv_once_t au_once = UV_ONCE_INIT;

static void
au_init_once(void)
{
    XD_ASSERT(uv_rwlock_init(&au.lock) == 0);
    XD_ASSERT(uv_mutex_init(&au.admin) == 0);
}

/* ---- requests -------------------------------------------------------------------------------- */

void
auth_req_free(auth_req_t *req)
{
    if (req == NULL)
        return;
    if (req->password != NULL) {
        OPENSSL_cleanse(req->password, strlen(req->password));
        xd_free(req->password);
    }
    OPENSSL_cleanse(&req->cred, sizeof req->cred);
    xd_free(req->host);
    xd_free(req->user);
    xd_free(req);
}

void
auth_req_deliver(auth_req_t *req)
{
    xd_worker_t *w = req->w;
    bool held = req->held;
    xd_input_ref_t in = req->in;

    XD_ASSERT(w != NULL);
    XD_DEBUG_ASSERT(w == xd_worker_self());
    switch (req->op) {
    case AUTH_OP_GET_SCRAM:
        req->cb.scram(req->arg, req->status, req->status == 0 ? &req->cred : NULL);
        break;
    case AUTH_OP_CHECK:
    case AUTH_OP_EXISTS:
        req->cb.flag(req->arg, req->status, req->status == 0 && req->flag);
        break;
    default:
        req->cb.plain(req->arg, req->status);
        break;
    }
    auth_req_free(req);
    if (held)
        xd_worker_unhold(w);
    xd_input_release(in); /* after the callback: what it routes comes first */
}

/* Runs on the requesting worker's loop. */
static void
au_deliver_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    auth_req_deliver(arg);
}

void
auth_req_finish(auth_req_t *req)
{
    if (req->w == NULL) {
        uv_sem_post(&req->sem); /* the waiter owns req from here */
        return;
    }
    XD_ASSERT(req->held); /* only held requests travel through the inbox */
    int rc = xd_worker_post(req->w, au_deliver_msg, req);
    /* The hold keeps the inbox open until deliver has run. */
    XD_ASSERT(rc == 0);
}

const char *
auth_op_name(auth_op op)
{
    switch (op) {
    case AUTH_OP_GET_SCRAM: return "get_scram";
    case AUTH_OP_CHECK: return "auth";
    case AUTH_OP_EXISTS: return "isuser";
    case AUTH_OP_SET_PASSWORD: return "setpass";
    case AUTH_OP_REGISTER: return "tryregister";
    case AUTH_OP_REMOVE: return "removeuser";
    case AUTH_OP_REMOVE_CHECKED: return "removeuser3";
    }
    return "?";
}

static bool
au_op_has_password(auth_op op)
{
    return op == AUTH_OP_CHECK || op == AUTH_OP_SET_PASSWORD || op == AUTH_OP_REGISTER ||
           op == AUTH_OP_REMOVE_CHECKED;
}

/* A new request with owned copies, or NULL for bad arguments. */
static auth_req_t *
au_req_new(auth_op op, const char *host, const char *user, const char *password)
{
    if (host == NULL || *host == '\0' || user == NULL || *user == '\0')
        return NULL;
    if (au_op_has_password(op) != (password != NULL))
        return NULL;
    auth_req_t *req = xd_new(auth_req_t);
    req->op = op;
    req->host = xd_strdup(host);
    req->user = xd_strdup(user);
    req->password = password != NULL ? xd_strdup(password) : NULL;
    return req;
}

/* ---- the table ------------------------------------------------------------------------------- */

static int
au_host_cmp(const void *a, const void *b)
{
    return strcmp(((const au_host_t *)a)->host, ((const au_host_t *)b)->host);
}

/* host's entry in t, or NULL. */
static au_host_t *
au_find(const au_table_t *t, const char *host)
{
    if (t == NULL)
        return NULL;
    au_host_t key = { .host = (char *)host };
    return bsearch(&key, t->hosts, t->count, sizeof *t->hosts, au_host_cmp);
}

/* Frees t and stops the script pools it owns (those not marked kept). */
static void
au_table_free(au_table_t *t, bool stop_exts)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->count; i++) {
        if (stop_exts && t->hosts[i].ext != NULL)
            auth_ext_stop(t->hosts[i].ext);
        if (t->hosts[i].ldap != NULL)
            auth_ldap_unref(t->hosts[i].ldap);
        if (t->hosts[i].pam != NULL)
            auth_pam_unref(t->hosts[i].pam);
        xd_free(t->hosts[i].host);
    }
    xd_free(t->hosts);
    xd_free(t);
}

/* Sets up one method of host h (au_build). */
static int
au_build_method(const xd_host_conf_t *hc, au_host_t *h, int method, const au_table_t *old,
                xd_db_t *db, char **err)
{
    int rc = 0;
    switch (method) {
    case XD_AUTH_INTERNAL:
        if (db == NULL) {
            rc = XD_EINVAL;
            if (err)
                *err = xd_asprintf("host %s: auth_method internal needs a database", hc->host);
        }
        break;
    case XD_AUTH_ANONYMOUS:
        break;
    case XD_AUTH_EXTERNAL: {
        unsigned nproc = hc->extauth_pool_size > 0 ? (unsigned)hc->extauth_pool_size : 1;
        if (hc->extauth_program == NULL || *hc->extauth_program == '\0') {
            rc = XD_EINVAL;
            if (err)
                *err = xd_asprintf("host %s: auth_method external needs extauth_program",
                                   hc->host);
            break;
        }
        const au_host_t *prev = au_find(old, hc->host);
        if (prev != NULL && prev->ext != NULL &&
            auth_ext_same(prev->ext, hc->extauth_program, nproc)) {
            h->ext = prev->ext;
            h->reused = true;
            break;
        }
        rc = auth_ext_start(hc->host, hc->extauth_program, nproc, hc->extauth_timeout_ms,
                            &h->ext, err);
        break;
    }
    case XD_AUTH_LDAP:
        h->chain = true;
        rc = auth_ldap_new(hc, &h->ldap, err);
        break;
    case XD_AUTH_PAM:
        h->chain = true;
        rc = auth_pam_new(hc, &h->pam, err);
        break;
    default:
        rc = XD_EINVAL;
        if (err)
            *err = xd_asprintf("host %s: unknown auth_method %d", hc->host, method);
        break;
    }
    return rc;
}

/* Builds the table for cfg.  External hosts of `old` whose program and pool
 * size did not change are taken over (marked reused; the old table still
 * lists them until the caller commits).  On error every pool started here is
 * stopped again and *err (may be NULL) gets a malloc'd message. */
static int
au_build(const xd_config_t *cfg, const au_table_t *old, xd_db_t *db, au_table_t **out,
         char **err)
{
    au_table_t *t = xd_new(au_table_t);
    int rc = 0;

    t->hosts = xd_calloc(cfg->hosts.count ? cfg->hosts.count : 1, sizeof *t->hosts);
    for (size_t i = 0; i < cfg->hosts.count && rc == 0; i++) {
        const xd_host_conf_t *hc = &cfg->hosts_conf[i];
        au_host_t *h = &t->hosts[t->count++];
        h->host = xd_strdup(hc->host);
        h->method = hc->auth_method;
        h->methods = hc->auth_methods;
        h->iterations = hc->scram_iterations > 0 ? (unsigned)hc->scram_iterations
                                                 : XD_SCRAM_ITERATIONS_DEFAULT;
        h->chain = h->methods.count > 1;
        /* The host's own pool when the storage layer has one (its sql_*). */
        h->db = xd_db_host(hc->host) ? xd_db_host(hc->host) : db;
        for (size_t k = 0; k < h->methods.count && rc == 0; k++)
            rc = au_build_method(hc, h, h->methods.items[k], old, h->db, err);
    }
    if (rc != 0) {
        for (size_t i = 0; i < t->count; i++)
            if (t->hosts[i].reused)
                t->hosts[i].ext = NULL; /* still the old table's */
        au_table_free(t, true);
        return rc;
    }
    qsort(t->hosts, t->count, sizeof *t->hosts, au_host_cmp);
    *out = t;
    return 0;
}

int
xd_auth_start(const xd_config_t *cfg, xd_db_t *db, char **err)
{
    au_table_t *t = NULL;
    int rc;

    xd_assert_off_loop();
    if (err)
        *err = NULL;
    if (cfg == NULL)
        return XD_EINVAL;
    uv_once(&au_once, au_init_once);
    uv_mutex_lock(&au.admin);
    if (au.running) {
        uv_mutex_unlock(&au.admin);
        return XD_EEXIST;
    }
    rc = au_build(cfg, NULL, db, &t, err);
    if (rc == 0) {
        uv_rwlock_wrlock(&au.lock);
        au.table = t;
        au.db = db;
        au.running = true;
        uv_rwlock_wrunlock(&au.lock);
        XD_LOG(NULL, XD_INFO, "auth started", "hosts=%zu", t->count);
    }
    uv_mutex_unlock(&au.admin);
    return rc;
}

int
xd_auth_reload(const xd_config_t *cfg, char **err)
{
    au_table_t *t = NULL, *old;
    int rc;

    xd_assert_off_loop();
    if (err)
        *err = NULL;
    if (cfg == NULL)
        return XD_EINVAL;
    uv_once(&au_once, au_init_once);
    uv_mutex_lock(&au.admin);
    if (!au.running) {
        uv_mutex_unlock(&au.admin);
        return XD_ECLOSED;
    }
    /* Only this thread changes au.table (admin is held): reading it unlocked is safe. */
    old = au.table;
    rc = au_build(cfg, old, au.db, &t, err);
    if (rc != 0) {
        uv_mutex_unlock(&au.admin);
        return rc;
    }
    for (size_t i = 0; i < t->count; i++) {
        const xd_host_conf_t *hc = xd_config_host(cfg, t->hosts[i].host);
        if (t->hosts[i].reused && hc != NULL)
            auth_ext_set_timeout(t->hosts[i].ext, hc->extauth_timeout_ms);
    }
    uv_rwlock_wrlock(&au.lock);
    au.table = t;
    uv_rwlock_wrunlock(&au.lock);

    /* No reader can reach `old` any more: stop the pools t did not keep. */
    for (size_t i = 0; i < old->count; i++) {
        au_host_t *h = &old->hosts[i];
        const au_host_t *now = au_find(t, h->host);
        if (h->ext != NULL && now != NULL && now->ext == h->ext)
            h->ext = NULL; /* kept */
    }
    au_table_free(old, true);
    uv_mutex_unlock(&au.admin);
    XD_LOG(NULL, XD_NOTICE, "auth reloaded", "hosts=%zu", t->count);
    return 0;
}

void
xd_auth_stop(void)
{
    au_table_t *t;

    xd_assert_off_loop();
    uv_once(&au_once, au_init_once);
    uv_mutex_lock(&au.admin);
    uv_rwlock_wrlock(&au.lock);
    t = au.table;
    au.table = NULL;
    au.db = NULL;
    au.running = false;
    uv_rwlock_wrunlock(&au.lock);
    if (t != NULL) {
        au_table_free(t, true);
        XD_LOG(NULL, XD_INFO, "auth stopped", "");
    }
    uv_mutex_unlock(&au.admin);
    xd_authlimit_reset(); /* the failure table; workers that still fail start a new one */
}

/* ---- capabilities ---------------------------------------------------------------------------- */

int
xd_auth_method_of(const char *host, int *out)
{
    int rc = XD_ENOTFOUND;

    if (host == NULL)
        return XD_EINVAL;
    uv_once(&au_once, au_init_once);
    uv_rwlock_rdlock(&au.lock);
    const au_host_t *h = au_find(au.table, host);
    if (h != NULL) {
        *out = h->method;
        rc = 0;
    }
    uv_rwlock_rdunlock(&au.lock);
    return rc;
}

/* host's method list into *out; false when host is not served. */
static bool
au_methods_of(const char *host, xd_auth_methods_t *out)
{
    bool found = false;
    if (host == NULL)
        return false;
    uv_once(&au_once, au_init_once);
    uv_rwlock_rdlock(&au.lock);
    const au_host_t *h = au_find(au.table, host);
    if (h != NULL) {
        *out = h->methods;
        found = true;
    }
    uv_rwlock_rdunlock(&au.lock);
    return found;
}

static bool
au_methods_have(const xd_auth_methods_t *m, int method)
{
    for (size_t i = 0; i < m->count; i++)
        if (m->items[i] == method)
            return true;
    return false;
}

bool
xd_auth_supports_scram(const char *host)
{
    /* Every method must be able to serve the SCRAM exchange: only internal
     * keeps SCRAM credentials, so only `internal` alone. */
    xd_auth_methods_t m;
    return au_methods_of(host, &m) && m.count == 1 && m.items[0] == XD_AUTH_INTERNAL;
}

bool
xd_auth_supports_plain(const char *host)
{
    xd_auth_methods_t m;
    if (!au_methods_of(host, &m))
        return false;
    for (size_t i = 0; i < m.count; i++)
        if (m.items[i] != XD_AUTH_ANONYMOUS)
            return true;
    return false;
}

bool
xd_auth_anonymous_allowed(const char *host)
{
    xd_auth_methods_t m;
    return au_methods_of(host, &m) && au_methods_have(&m, XD_AUTH_ANONYMOUS);
}

/* ---- dispatch -------------------------------------------------------------------------------- */

/* What au_dispatch did with a request it accepted. */
typedef enum au_route {
    AU_QUEUED,    /* a backend has it; it finishes (async: deliver, sync: sem) */
    AU_RUN_HERE,  /* sync internal: the caller runs auth_int_run now */
    AU_ANSWERED,  /* sync: status and results are set already */
    AU_RUN_CHAIN, /* sync chain: the caller runs au_chain_run now */
} au_route;

static void au_chain_work(void *arg);
static void au_chain_done(void *arg, int status);

/* Answers req without a backend (anonymous): async through the inbox. */
static au_route
au_answer_now(auth_req_t *req, int status, bool flag)
{
    req->status = status;
    req->flag = flag;
    if (req->w == NULL)
        return AU_ANSWERED;
    auth_req_finish(req);
    return AU_QUEUED;
}

/* Hands req to host's backend.  Returns an au_route (>= 0), or an error and
 * req stays the caller's.  Async requests must have w set and, for the
 * inbox paths, be held here. */
static int
au_dispatch(auth_req_t *req)
{
    int rc;

    uv_once(&au_once, au_init_once);
    uv_rwlock_rdlock(&au.lock);
    if (!au.running) {
        rc = XD_ECLOSED;
        goto out;
    }
    const au_host_t *h = au_find(au.table, req->host);
    if (h == NULL) {
        rc = XD_ENOTFOUND;
        goto out;
    }
    if (h->chain) {
        if (req->op == AUTH_OP_GET_SCRAM) {
            rc = XD_ENOTSUP; /* only `internal` alone serves SCRAM */
        } else if (req->w == NULL) {
            rc = AU_RUN_CHAIN;
        } else {
            req->held = false; /* the pool holds the worker and the stream itself */
            rc = xd_pool_submit(au_chain_work, au_chain_done, req);
            if (rc == 0)
                rc = AU_QUEUED;
        }
        goto out;
    }
    switch (h->method) {
    case XD_AUTH_INTERNAL:
        req->db = h->db;
        req->iterations = h->iterations;
        if (req->w == NULL) {
            rc = AU_RUN_HERE;
        } else {
            req->held = false; /* the pool holds the worker itself */
            rc = auth_int_submit(req);
            if (rc == 0)
                rc = AU_QUEUED;
        }
        break;
    case XD_AUTH_EXTERNAL:
        if (req->op == AUTH_OP_GET_SCRAM) {
            rc = XD_ENOTSUP;
            break;
        }
        if (req->w != NULL) {
            rc = xd_worker_hold(req->w);
            if (rc != 0)
                break;
            req->held = true;
        }
        rc = auth_ext_submit(h->ext, req);
        if (rc != 0 && req->w != NULL) {
            xd_worker_unhold(req->w);
            req->held = false;
        } else if (rc == 0 && req->w != NULL) {
            req->in = xd_input_hold(); /* released by auth_req_deliver */
        }
        if (rc == 0)
            rc = AU_QUEUED;
        break;
    case XD_AUTH_ANONYMOUS:
        if (req->op != AUTH_OP_CHECK && req->op != AUTH_OP_EXISTS) {
            rc = XD_ENOTSUP;
            break;
        }
        if (req->w != NULL) {
            rc = xd_worker_hold(req->w);
            if (rc != 0)
                break;
            req->held = true;
            req->in = xd_input_hold(); /* released by auth_req_deliver */
        }
        rc = (int)au_answer_now(req, 0, false);
        break;
    default:
        rc = XD_EINTERNAL;
        break;
    }
out:
    uv_rwlock_rdunlock(&au.lock);
    return rc;
}

/* ---- the chain ------------------------------------------------------------------------------- */

static const char *
au_method_name(int m)
{
    switch (m) {
    case XD_AUTH_INTERNAL: return "internal";
    case XD_AUTH_EXTERNAL: return "external";
    case XD_AUTH_ANONYMOUS: return "anonymous";
    case XD_AUTH_LDAP: return "ldap";
    case XD_AUTH_PAM: return "pam";
    }
    return "?";
}

static bool
au_op_writes(auth_op op)
{
    return op != AUTH_OP_CHECK && op != AUTH_OP_EXISTS;
}

/* One external step of a chain: a sync sub-request to the script pool,
 * submitted under the read lock (which the caller holds and this releases). */
static void
au_chain_ext(auth_ext_t *x, auth_req_t *req)
{
    auth_req_t *sub = au_req_new(req->op, req->host, req->user, req->password);
    if (sub == NULL) {
        uv_rwlock_rdunlock(&au.lock);
        req->status = XD_EINVAL;
        return;
    }
    XD_ASSERT(uv_sem_init(&sub->sem, 0) == 0);
    int rc = auth_ext_submit(x, sub);
    uv_rwlock_rdunlock(&au.lock);
    if (rc == 0) {
        uv_sem_wait(&sub->sem);
        rc = sub->status;
        req->flag = sub->flag;
    }
    req->status = rc;
    uv_sem_destroy(&sub->sem);
    auth_req_free(sub);
}

/* Runs req over its host's methods in order (off-loop; see the top). */
static void
au_chain_run(auth_req_t *req)
{
    int first_err = 0;
    bool done = false, wrote = false;

    xd_assert_off_loop();
    for (size_t i = 0; !done; i++) {
        uv_rwlock_rdlock(&au.lock);
        const au_host_t *h = au.running ? au_find(au.table, req->host) : NULL;
        if (h == NULL || i >= h->methods.count) {
            if (h == NULL && i == 0)
                first_err = au.running ? XD_ENOTFOUND : XD_ECLOSED;
            uv_rwlock_rdunlock(&au.lock);
            break;
        }
        int m = h->methods.items[i];
        if (au_op_writes(req->op) && m != XD_AUTH_INTERNAL && m != XD_AUTH_EXTERNAL) {
            uv_rwlock_rdunlock(&au.lock);
            continue; /* cannot store passwords */
        }
        req->status = 0;
        req->flag = false;
        switch (m) {
        case XD_AUTH_INTERNAL:
            req->db = h->db;
            req->iterations = h->iterations;
            uv_rwlock_rdunlock(&au.lock);
            auth_int_run(req);
            break;
        case XD_AUTH_EXTERNAL:
            au_chain_ext(h->ext, req); /* unlocks */
            break;
        case XD_AUTH_LDAP: {
            auth_ldap_t *l = auth_ldap_ref(h->ldap);
            uv_rwlock_rdunlock(&au.lock);
            auth_ldap_run(l, req);
            auth_ldap_unref(l);
            break;
        }
        case XD_AUTH_PAM: {
            auth_pam_t *p = auth_pam_ref(h->pam);
            uv_rwlock_rdunlock(&au.lock);
            auth_pam_run(p, req);
            auth_pam_unref(p);
            break;
        }
        default: /* anonymous: no accounts, no passwords */
            uv_rwlock_rdunlock(&au.lock);
            break;
        }
        if (au_op_writes(req->op)) {
            wrote = done = true; /* the first method that stores decides */
        } else if (req->status == 0 && req->flag) {
            done = true;
        } else if (req->status != 0 && req->status != XD_ENOTFOUND &&
                   req->status != XD_ENOTSUP && req->status != XD_EAUTH_REFUSED) {
            XD_LOG(NULL, XD_WARN, "auth method failed", "host=%s method=%s op=%s err=%s",
                   req->host, au_method_name(m), auth_op_name(req->op),
                   xd_err_name(req->status));
            if (first_err == 0)
                first_err = req->status;
        }
    }
    if (au_op_writes(req->op)) {
        if (!wrote)
            req->status = first_err ? first_err : XD_ENOTSUP; /* nothing stores passwords */
        return;
    }
    if (done)
        return; /* a yes */
    /* Nobody said yes: an error of a method that could not answer outweighs
     * the others' no (the account may be there). */
    req->flag = false;
    req->status = first_err;
}

static void
au_chain_work(void *arg)
{
    au_chain_run(arg);
}

/* The requesting worker's loop; status is XD_ECANCELED when the pool shut
 * down before au_chain_work ran. */
static void
au_chain_done(void *arg, int status)
{
    auth_req_t *req = arg;
    if (status != 0)
        req->status = status;
    auth_req_deliver(req);
}

/* Starts an async request on the calling worker.  On error req is freed. */
static int
au_async(auth_req_t *req, void *cb, void *arg)
{
    if (req == NULL || cb == NULL) {
        auth_req_free(req);
        return XD_EINVAL;
    }
    req->w = xd_worker_self();
    if (XD_NEVER(req->w == NULL)) {
        auth_req_free(req); /* async calls belong on a worker loop */
        return XD_EINVAL;
    }
    req->arg = arg;
    int rc = au_dispatch(req);
    if (rc < 0) {
        auth_req_free(req);
        return rc;
    }
    return 0;
}

/* Runs a sync request to its end; returns its status.  req stays the
 * caller's (results are read from it). */
static int
au_sync(auth_req_t *req)
{
    xd_assert_off_loop();
    if (req == NULL)
        return XD_EINVAL;
    req->w = NULL;
    XD_ASSERT(uv_sem_init(&req->sem, 0) == 0);
    int rc = au_dispatch(req);
    if (rc == AU_QUEUED) {
        uv_sem_wait(&req->sem);
        rc = req->status;
    } else if (rc == AU_RUN_HERE) {
        auth_int_run(req);
        rc = req->status;
    } else if (rc == AU_ANSWERED) {
        rc = req->status;
    } else if (rc == AU_RUN_CHAIN) {
        au_chain_run(req);
        rc = req->status;
    }
    uv_sem_destroy(&req->sem);
    return rc;
}

/* ---- asynchronous ---------------------------------------------------------------------------- */

int
xd_auth_get_scram(const char *host, const char *user, xd_scram_hash hash, xd_auth_scram_cb cb,
                  void *arg)
{
    if ((unsigned)hash >= XD_SCRAM_HASH_COUNT)
        return XD_EINVAL;
    auth_req_t *req = au_req_new(AUTH_OP_GET_SCRAM, host, user, NULL);
    if (req != NULL) {
        req->hash = hash;
        req->cb.scram = cb;
    }
    return au_async(req, (void *)cb, arg);
}

int
xd_auth_check_password(const char *host, const char *user, const char *password,
                       xd_auth_bool_cb cb, void *arg)
{
    auth_req_t *req = au_req_new(AUTH_OP_CHECK, host, user, password);
    if (req != NULL)
        req->cb.flag = cb;
    return au_async(req, (void *)cb, arg);
}

int
xd_auth_user_exists(const char *host, const char *user, xd_auth_bool_cb cb, void *arg)
{
    auth_req_t *req = au_req_new(AUTH_OP_EXISTS, host, user, NULL);
    if (req != NULL)
        req->cb.flag = cb;
    return au_async(req, (void *)cb, arg);
}

/* The four operations answered with a plain status. */
static int
au_plain(auth_op op, const char *host, const char *user, const char *password, xd_auth_cb cb,
         void *arg)
{
    auth_req_t *req = au_req_new(op, host, user, password);
    if (req != NULL)
        req->cb.plain = cb;
    return au_async(req, (void *)cb, arg);
}

int
xd_auth_set_password(const char *host, const char *user, const char *password, xd_auth_cb cb,
                     void *arg)
{
    return au_plain(AUTH_OP_SET_PASSWORD, host, user, password, cb, arg);
}

int
xd_auth_register(const char *host, const char *user, const char *password, xd_auth_cb cb,
                 void *arg)
{
    return au_plain(AUTH_OP_REGISTER, host, user, password, cb, arg);
}

int
xd_auth_remove(const char *host, const char *user, xd_auth_cb cb, void *arg)
{
    return au_plain(AUTH_OP_REMOVE, host, user, NULL, cb, arg);
}

int
xd_auth_remove_checked(const char *host, const char *user, const char *password, xd_auth_cb cb,
                       void *arg)
{
    return au_plain(AUTH_OP_REMOVE_CHECKED, host, user, password, cb, arg);
}

/* ---- synchronous ----------------------------------------------------------------------------- */

int
xd_auth_get_scram_sync(const char *host, const char *user, xd_scram_hash hash,
                       xd_scram_cred_t *out)
{
    if ((unsigned)hash >= XD_SCRAM_HASH_COUNT || out == NULL)
        return XD_EINVAL;
    auth_req_t *req = au_req_new(AUTH_OP_GET_SCRAM, host, user, NULL);
    if (req != NULL)
        req->hash = hash;
    int rc = au_sync(req);
    if (rc == 0)
        *out = req->cred;
    auth_req_free(req);
    return rc;
}

/* A sync CHECK or EXISTS: *result = the flag. */
static int
au_sync_flag(auth_op op, const char *host, const char *user, const char *password, bool *result)
{
    if (result == NULL)
        return XD_EINVAL;
    *result = false;
    auth_req_t *req = au_req_new(op, host, user, password);
    int rc = au_sync(req);
    if (rc == 0)
        *result = req->flag;
    auth_req_free(req);
    return rc;
}

int
xd_auth_check_password_sync(const char *host, const char *user, const char *password, bool *ok)
{
    return au_sync_flag(AUTH_OP_CHECK, host, user, password, ok);
}

int
xd_auth_user_exists_sync(const char *host, const char *user, bool *exists)
{
    return au_sync_flag(AUTH_OP_EXISTS, host, user, NULL, exists);
}

static int
au_sync_plain(auth_op op, const char *host, const char *user, const char *password)
{
    auth_req_t *req = au_req_new(op, host, user, password);
    int rc = au_sync(req);
    auth_req_free(req);
    return rc;
}

int
xd_auth_set_password_sync(const char *host, const char *user, const char *password)
{
    return au_sync_plain(AUTH_OP_SET_PASSWORD, host, user, password);
}

int
xd_auth_register_sync(const char *host, const char *user, const char *password)
{
    return au_sync_plain(AUTH_OP_REGISTER, host, user, password);
}

int
xd_auth_remove_sync(const char *host, const char *user)
{
    return au_sync_plain(AUTH_OP_REMOVE, host, user, NULL);
}

int
xd_auth_remove_checked_sync(const char *host, const char *user, const char *password)
{
    return au_sync_plain(AUTH_OP_REMOVE_CHECKED, host, user, password);
}

int
xd_auth_list_users_sync(const char *host, xd_auth_user_handler fn, void *arg)
{
    xd_db_t *db = NULL;
    int rc;

    xd_assert_off_loop();
    if (host == NULL || fn == NULL)
        return XD_EINVAL;
    uv_once(&au_once, au_init_once);
    uv_rwlock_rdlock(&au.lock);
    const au_host_t *h = au_find(au.table, host);
    if (!au.running)
        rc = XD_ECLOSED;
    else if (h == NULL)
        rc = XD_ENOTFOUND;
    else if (!au_methods_have(&h->methods, XD_AUTH_INTERNAL))
        rc = XD_ENOTSUP;
    else {
        db = h->db;
        rc = 0;
    }
    uv_rwlock_rdunlock(&au.lock);
    if (rc != 0)
        return rc;
    /* The db outlives xd_auth_stop (auth.h lifecycle), so it may be used unlocked. */
    return xd_user_list(db, xd_str_c(host), fn, arg);
}

xd_db_t *
auth_internal_db(const char *host)
{
    xd_db_t *db = NULL;
    if (host == NULL)
        return NULL;
    uv_once(&au_once, au_init_once);
    uv_rwlock_rdlock(&au.lock);
    const au_host_t *h = au_find(au.table, host);
    if (au.running && h != NULL && h->method == XD_AUTH_INTERNAL && !h->chain)
        db = h->db;
    uv_rwlock_rdunlock(&au.lock);
    return db;
}
