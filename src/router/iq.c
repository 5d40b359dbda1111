/*
 * iq.c — the IQ handler registry and dispatch (see include/xmppd/iq.h).
 *
 * The registry is a small array under a rwlock: handlers are few (tens) and
 * registered at start and reload; dispatch reads it per IQ.  A handler
 * that a host registered for itself wins over one for every host.
 *
 * SERIAL: each registration owns a FIFO of requests.  Whoever finds it idle
 * submits one pool job that drains it (running the handler and routing the
 * reply for each request in arrival order); so one module sees its requests
 * one at a time and in order, without holding a pool thread while idle.
 * The FIFO is reference counted: a registration removed while requests are
 * queued leaves the drain job to finish them.  A SERIAL request holds its
 * sender's stream (xmppd/input.h) until its reply is routed, as PARALLEL
 * ones do through the pool.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/pool.h"
#include "xmppd/module.h"
#include "router/router.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/input.h"
#include "xmppd/iq.h"
#include "xmppd/stanza.h"

#define IQ_SERIAL_MAX 1024 /* queued requests per SERIAL registration before resource-constraint */

struct iq_job;

/* The FIFO of one SERIAL registration. */
typedef struct iq_serial {
    pthread_mutex_t mu;         /* guards the fields below */
    struct iq_job *head, *tail; /* waiting requests, oldest first */
    unsigned len;               /* how many */
    bool busy;                  /* a drain job is submitted or running */
    atomic_uint refs;           /* the registration + a running drain job */
} iq_serial_t;

typedef struct iq_entry {
    char *host;          /* NULL = every host */
    int target;          /* xd_iq_target */
    char *ns;            /* payload namespace */
    int discipline;      /* xd_iq_discipline */
    xd_iq_fn fn;         /* the handler; NULL for a bare disco feature */
    xd_module_ctx_t *ctx; /* the module instance that registered it, or NULL */
    void *arg;           /* its argument */
    iq_serial_t *serial; /* SERIAL: its FIFO (the entry's reference); else NULL */
    char *id_name;       /* a disco identity: its name (may be ""), else NULL; ns is then
                          * IQ_ID_PREFIX "category/type" */
} iq_entry_t;

/* Identities share the table under keys no namespace can have. */
#define IQ_ID_PREFIX "\x01id:"

static pthread_rwlock_t iq_lock = PTHREAD_RWLOCK_INITIALIZER;
static iq_entry_t *iq_tab;
static size_t iq_n, iq_cap;

static iq_serial_t *
iq_serial_new(void)
{
    iq_serial_t *q = xd_new(iq_serial_t);
    pthread_mutex_init(&q->mu, NULL);
    atomic_init(&q->refs, 1);
    return q;
}

static iq_serial_t *
iq_serial_ref(iq_serial_t *q)
{
    if (q)
        atomic_fetch_add(&q->refs, 1);
    return q;
}

static void
iq_serial_unref(iq_serial_t *q)
{
    if (!q || atomic_fetch_sub(&q->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&q->mu); /* the last reference: busy is false, the FIFO empty */
    xd_free(q);
}

static bool
iq_same_host(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Adds an entry (fn NULL: a feature only). */
static int
iq_add(xd_module_ctx_t *ctx, const char *host, int target, const char *ns, int discipline,
       xd_iq_fn fn, void *arg, const char *id_name)
{
    if (!ns || !*ns || (target != XD_IQ_HOST && target != XD_IQ_USER))
        return XD_EINVAL;
    pthread_rwlock_wrlock(&iq_lock);
    for (size_t i = 0; i < iq_n; i++)
        if (iq_tab[i].target == target && !strcmp(iq_tab[i].ns, ns) &&
            iq_same_host(iq_tab[i].host, host)) {
            pthread_rwlock_unlock(&iq_lock);
            return XD_EEXIST;
        }
    if (iq_n == iq_cap) {
        iq_cap = iq_cap ? iq_cap * 2 : 16;
        iq_tab = xd_realloc(iq_tab, iq_cap * sizeof *iq_tab);
    }
    iq_tab[iq_n++] = (iq_entry_t){ host ? xd_strdup(host) : NULL, target, xd_strdup(ns),
                                   discipline, fn, ctx, arg,
                                   discipline == XD_IQ_SERIAL ? iq_serial_new() : NULL,
                                   id_name ? xd_strdup(id_name) : NULL };
    pthread_rwlock_unlock(&iq_lock);
    return 0;
}

int
xd_iq_register(const char *host, int target, const char *ns, int discipline, xd_iq_fn fn,
               void *arg)
{
    return xd_iq_register_ctx(NULL, host, target, ns, discipline, fn, arg);
}

int
xd_iq_register_ctx(xd_module_ctx_t *ctx, const char *host, int target, const char *ns,
                   int discipline, xd_iq_fn fn, void *arg)
{
    if (!fn)
        return XD_EINVAL;
    if (discipline != XD_IQ_INLINE && discipline != XD_IQ_PARALLEL && discipline != XD_IQ_SERIAL)
        return XD_EINVAL;
    return iq_add(ctx, host, target, ns, discipline, fn, arg, NULL);
}

int
xd_iq_feature_add(const char *host, int target, const char *var)
{
    if (var && var[0] == IQ_ID_PREFIX[0])
        return XD_EINVAL;
    return iq_add(NULL, host, target, var, XD_IQ_INLINE, NULL, NULL, NULL);
}

static void
iq_identity_key(char *buf, size_t cap, const char *category, const char *type)
{
    snprintf(buf, cap, IQ_ID_PREFIX "%s/%s", category, type);
}

int
xd_iq_identity_add(const char *host, int target, const char *category, const char *type,
                   const char *name)
{
    if (!category || !*category || !type || !*type || strchr(category, '/'))
        return XD_EINVAL;
    char key[512];
    iq_identity_key(key, sizeof key, category, type);
    /* Added with its name in one step: an identity never shows as a
     * feature (the features are the entries without a name). */
    return iq_add(NULL, host, target, key, XD_IQ_INLINE, NULL, NULL, name ? name : "");
}

const char *
xd_iq_identity_key(char *buf, size_t cap, const char *category, const char *type)
{
    iq_identity_key(buf, cap, category, type);
    return buf;
}

void
xd_iq_foreach_identity(const char *host, int target,
                       void (*fn)(void *arg, const char *category, const char *type,
                                  const char *name),
                       void *arg)
{
    pthread_rwlock_rdlock(&iq_lock);
    for (size_t i = 0; i < iq_n; i++) {
        const iq_entry_t *e = &iq_tab[i];
        if (!e->id_name || e->target != target || (e->host && (!host || strcmp(e->host, host))))
            continue;
        char cat[256];
        const char *ct = e->ns + strlen(IQ_ID_PREFIX);
        const char *slash = strchr(ct, '/');
        snprintf(cat, sizeof cat, "%.*s", (int)(slash - ct), ct);
        fn(arg, cat, slash + 1, e->id_name);
    }
    pthread_rwlock_unlock(&iq_lock);
}

void
xd_iq_unregister(const char *host, int target, const char *ns)
{
    pthread_rwlock_wrlock(&iq_lock);
    for (size_t i = 0; i < iq_n; i++) {
        iq_entry_t *e = &iq_tab[i];
        if (e->target == target && !strcmp(e->ns, ns) && iq_same_host(e->host, host)) {
            xd_free(e->host);
            xd_free(e->ns);
            xd_free(e->id_name);
            iq_serial_unref(e->serial);
            *e = iq_tab[--iq_n];
            break;
        }
    }
    pthread_rwlock_unlock(&iq_lock);
}

void
xd_iq_clear(void)
{
    pthread_rwlock_wrlock(&iq_lock);
    for (size_t i = 0; i < iq_n; i++) {
        xd_free(iq_tab[i].host);
        xd_free(iq_tab[i].ns);
        xd_free(iq_tab[i].id_name);
        iq_serial_unref(iq_tab[i].serial);
    }
    xd_free(iq_tab);
    iq_tab = NULL;
    iq_n = iq_cap = 0;
    pthread_rwlock_unlock(&iq_lock);
}

void
xd_iq_foreach_ns(const char *host, int target, void (*fn)(void *arg, const char *ns), void *arg)
{
    pthread_rwlock_rdlock(&iq_lock);
    for (size_t i = 0; i < iq_n; i++)
        if (iq_tab[i].target == target && !iq_tab[i].id_name &&
            (!iq_tab[i].host || (host && !strcmp(iq_tab[i].host, host))))
            fn(arg, iq_tab[i].ns);
    pthread_rwlock_unlock(&iq_lock);
}

/* The handler for (host, target, ns), copied out under the lock; a SERIAL
 * entry's FIFO comes with a reference for the caller. */
static bool
iq_find(const char *host, int target, const char *ns, iq_entry_t *out)
{
    bool found = false;
    pthread_rwlock_rdlock(&iq_lock);
    for (size_t i = 0; i < iq_n; i++) {
        const iq_entry_t *e = &iq_tab[i];
        if (e->target != target || !e->fn || strcmp(e->ns, ns) != 0)
            continue;
        if (e->host && host && !strcmp(e->host, host)) {
            *out = *e;
            found = true;
            break; /* the host's own wins */
        }
        if (!e->host && !found) {
            *out = *e;
            found = true;
        }
    }
    if (found) {
        iq_serial_ref(out->serial);
        xd_module_hold(out->ctx); /* under the lock: the instance cannot stop now */
    }
    pthread_rwlock_unlock(&iq_lock);
    return found;
}

/* A PARALLEL or SERIAL call in flight: everything the handler reads, owned. */
typedef struct iq_job {
    struct iq_job *next; /* SERIAL: the next in the FIFO */
    xd_iq_fn fn;         /* the handler; NULL for a bare disco feature */
    xd_module_ctx_t *ctx; /* the registering instance (held until the job is freed) */
    void *arg;           /* its argument */
    xd_stanza_t *iq;     /* the request (a reference) */
    xd_jid_t *from, *to; /* references */
    char host[1024];     /* the host */
    xd_stanza_t *reply;  /* the handler's answer */
    xd_input_ref_t in;   /* SERIAL: the sender's stream, held until the reply is routed */
} iq_job_t;

static xd_stanza_t *
iq_call(xd_iq_fn fn, xd_module_ctx_t *ctx, void *arg, const xd_stanza_t *iq, const xd_jid_t *from,
        const xd_jid_t *to, const char *host)
{
    xd_iq_req_t req = {
        .iq = iq,
        .payload = xd_el_first_child(xd_stanza_root(iq)),
        .from = from,
        .to = to,
        .host = host,
        .ctx = ctx,
        .arg = arg,
    };
    return fn(&req);
}

static void
iq_job_free(iq_job_t *j)
{
    xd_module_release(j->ctx);
    xd_stanza_unref(j->iq);
    xd_jid_unref(j->from);
    xd_jid_unref(j->to);
    xd_free(j);
}

static void
iq_job_work(void *arg)
{
    iq_job_t *j = arg;
    j->reply = iq_call(j->fn, j->ctx, j->arg, j->iq, j->from, j->to, j->host);
}

static void
iq_job_done(void *arg, int status)
{
    iq_job_t *j = arg;
    if (status != 0 && !j->reply)
        j->reply = xd_stanza_error(j->iq, XD_COND_INTERNAL_SERVER_ERROR, "the server is stopping");
    if (j->reply)
        xd_route_take(j->reply);
    iq_job_free(j);
}

/* SERIAL: a pool thread runs the FIFO's requests in order until it is
 * empty.  The handlers may block like PARALLEL ones; replies are routed
 * from here (xd_route works on any thread). */
static void
iq_serial_drain(void *arg)
{
    iq_serial_t *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        iq_job_t *j = q->head;
        if (!j) {
            q->busy = false;
            pthread_mutex_unlock(&q->mu);
            break;
        }
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->len--;
        pthread_mutex_unlock(&q->mu);
        xd_stanza_t *reply = iq_call(j->fn, j->ctx, j->arg, j->iq, j->from, j->to, j->host);
        if (reply)
            xd_route_take(reply);
        xd_input_release(j->in); /* the sender's next stanza comes after the reply */
        iq_job_free(j);
    }
    iq_serial_unref(q);
}

static void iq_reply(xd_stanza_t *iq, xd_cond cond, const char *text);

/* Appends j to q; starts a drain job when q was idle.  0, or the XD_E*
 * code when j could not be queued (j is then still the caller's). */
static int
iq_serial_push(iq_serial_t *q, iq_job_t *j)
{
    pthread_mutex_lock(&q->mu);
    if (q->len >= IQ_SERIAL_MAX) {
        pthread_mutex_unlock(&q->mu);
        return XD_EFULL;
    }
    if (!q->busy) {
        /* Queue first, then submit: the drain job may start at once. */
        iq_serial_ref(q);
        int rc = xd_pool_submit(iq_serial_drain, NULL, q);
        if (rc != 0) {
            pthread_mutex_unlock(&q->mu);
            iq_serial_unref(q);
            return rc;
        }
        q->busy = true;
    }
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->len++;
    pthread_mutex_unlock(&q->mu);
    return 0;
}

static void
iq_reply(xd_stanza_t *iq, xd_cond cond, const char *text)
{
    xd_route_error(iq, cond, text);
    xd_stanza_unref(iq);
}

void
xd_iq_dispatch(xd_stanza_t *iq, const xd_jid_t *to, const char *host, int target)
{
    const xd_el_t *el = xd_stanza_root(iq);
    if (!xd_iq_is_request(el)) {
        xd_stanza_unref(iq); /* results and errors to the server end here */
        return;
    }
    const xd_el_t *payload = xd_el_first_child(el);
    if (!payload) {
        /* RFC 6120 8.2.3: a get or set has exactly one payload. */
        iq_reply(iq, XD_COND_BAD_REQUEST, "an IQ get or set needs a payload");
        return;
    }
    const char *ns = xd_el_ns(payload);
    iq_entry_t e = { 0 };
    if (!ns || !iq_find(host, target, ns, &e)) {
        iq_reply(iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    const xd_jid_t *from_lent = xd_stanza_from(iq);
    xd_jid_t *from = from_lent ? xd_jid_ref((xd_jid_t *)from_lent) : NULL;
    if (!from) {
        iq_serial_unref(e.serial);
        xd_module_release(e.ctx);
        iq_reply(iq, XD_COND_BAD_REQUEST, NULL);
        return;
    }
    if (e.discipline == XD_IQ_INLINE) {
        xd_stanza_t *reply = iq_call(e.fn, e.ctx, e.arg, iq, from, to, host);
        xd_module_release(e.ctx);
        xd_stanza_unref(iq);
        xd_jid_unref(from);
        if (reply)
            xd_route_take(reply);
        return;
    }
    iq_job_t *j = xd_new(iq_job_t);
    j->fn = e.fn;
    j->ctx = e.ctx; /* the hold taken by iq_find goes with the job */
    j->arg = e.arg;
    j->iq = iq;
    j->from = from;
    j->to = xd_jid_ref((xd_jid_t *)to);
    snprintf(j->host, sizeof j->host, "%s", host);
    int rc;
    if (e.serial) {
        /* The drain job has no done callback on the sender's loop to hold
         * the stream for it (xmppd/input.h): hold it here. */
        j->in = xd_input_hold();
        rc = iq_serial_push(e.serial, j);
        iq_serial_unref(e.serial);
        if (rc != 0)
            xd_input_release(j->in);
    } else {
        rc = xd_pool_submit(iq_job_work, iq_job_done, j);
    }
    if (rc != 0) {
        /* DESIGN.md 2: a full pool answers at once. */
        xd_module_release(j->ctx);
        xd_jid_unref(j->from);
        xd_jid_unref(j->to);
        xd_free(j);
        iq_reply(iq, rc == XD_EFULL ? XD_COND_RESOURCE_CONSTRAINT : XD_COND_SERVICE_UNAVAILABLE,
                 NULL);
    }
}
