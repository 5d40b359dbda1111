/*
 * fanout.c — one stanza to many recipients, one inbox message per
 * destination worker (include/xmppd/route.h).
 *
 * The recipients are grouped by the worker given for each: the calling
 * worker's (and those of no known worker) are routed at once, every other
 * worker gets one message holding the stanza (a reference) and its
 * recipients' JIDs packed in one buffer.  On each worker a recipient's
 * copy is xd_stanza_readdress (shared body and bytes) handed to
 * xd_route_take, so that delivery is what any stanza gets.
 */
#include <string.h>

#include "core/worker.h"
#include "xmppd/alloc.h"
#include "xmppd/owner.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"

/* The recipients bound for one worker: NUL-terminated JIDs back to back. */
typedef struct fanout_dest {
    xd_worker_msg_t node; /* the inbox's until fanout_run starts */
    xd_stanza_t *st;      /* the stanza (a reference) */
    char *to;             /* JIDs, each NUL-terminated */
    size_t len, cap;      /* bytes used, allocated */
    size_t n;             /* how many */
    xd_jid_t **jids;      /* recipients given parsed (xd_fanout_add_jid), references */
    size_t njids, jcap;
} fanout_dest_t;

struct xd_fanout {
    xd_stanza_t *st;                 /* a reference */
    unsigned nworkers;               /* at xd_fanout_new */
    fanout_dest_t *here;             /* the calling thread's (and unknown workers') */
    fanout_dest_t **dest;            /* per worker, or NULL */
};

static fanout_dest_t *
fanout_dest_new(const xd_stanza_t *st)
{
    fanout_dest_t *d = xd_new(fanout_dest_t);
    d->st = xd_stanza_ref(st);
    return d;
}

static void
fanout_dest_free(fanout_dest_t *d)
{
    xd_stanza_unref(d->st);
    xd_free(d->to);
    for (size_t i = 0; i < d->njids; i++)
        if (d->jids[i])
            xd_jid_unref(d->jids[i]);
    xd_free(d->jids);
    xd_free(d);
}

/* Routes every copy of d and frees it. */
static void
fanout_deliver(fanout_dest_t *d)
{
    const char *p = d->to;
    for (size_t i = 0; i < d->n - d->njids; i++) {
        xd_route_take(xd_stanza_readdress(d->st, p));
        p += strlen(p) + 1;
    }
    for (size_t i = 0; i < d->njids; i++) {
        xd_str_t s = xd_jid_full_str(d->jids[i]); /* NUL-terminated (jid.c) */
        xd_stanza_t *copy = xd_stanza_readdress(d->st, s.p);
        xd_stanza_set_to(copy, d->jids[i]);
        xd_jid_unref(d->jids[i]);
        d->jids[i] = NULL;
        xd_route_take(copy);
    }
    fanout_dest_free(d);
}

static void
fanout_run(xd_worker_t *w, void *arg)
{
    (void)w;
    fanout_deliver(arg);
}

xd_fanout_t *
xd_fanout_new(const xd_stanza_t *st)
{
    xd_fanout_t *f = xd_new(xd_fanout_t);
    f->st = xd_stanza_ref(st);
    /* Serialized once, before the copies: each copy's bytes are these with
     * its 'to' spliced in, written into the copy's own block. */
    (void)xd_stanza_bytes(st, NULL);
    f->nworkers = xd_owner_workers();
    if (f->nworkers)
        f->dest = xd_calloc(f->nworkers, sizeof *f->dest);
    return f;
}

/* The recipients bound for `worker` (created). */
static fanout_dest_t *
fanout_dest_for(xd_fanout_t *f, int worker)
{
    int self = xd_owner_self();
    fanout_dest_t **slot;
    if (worker < 0 || worker == self || (unsigned)worker >= f->nworkers)
        slot = &f->here;
    else
        slot = &f->dest[worker];
    if (!*slot)
        *slot = fanout_dest_new(f->st);
    return *slot;
}

void
xd_fanout_add_jid(xd_fanout_t *f, xd_jid_t *to, int worker)
{
    fanout_dest_t *d = fanout_dest_for(f, worker);
    if (d->njids == d->jcap) {
        d->jcap = d->jcap ? d->jcap * 2 : 32;
        d->jids = xd_realloc(d->jids, d->jcap * sizeof *d->jids);
    }
    d->jids[d->njids++] = xd_jid_ref(to);
    d->n++;
}

void
xd_fanout_add(xd_fanout_t *f, const char *to, int worker)
{
    fanout_dest_t *d = fanout_dest_for(f, worker);
    size_t n = strlen(to) + 1;
    if (d->cap - d->len < n) {
        d->cap = d->cap ? d->cap * 2 : 256;
        while (d->cap - d->len < n)
            d->cap *= 2;
        d->to = xd_realloc(d->to, d->cap);
    }
    memcpy(d->to + d->len, to, n);
    d->len += n;
    d->n++;
}

size_t
xd_fanout_send(xd_fanout_t *f)
{
    size_t posts = 0;
    for (unsigned i = 0; i < f->nworkers; i++) {
        fanout_dest_t *d = f->dest[i];
        if (!d)
            continue;
        xd_worker_t *w = xd_worker_get(i);
        if (w && xd_worker_post_msg(w, &d->node, fanout_run, d) == 0) {
            posts++;
            continue;
        }
        /* That worker has stopped (the server is stopping): from here. */
        fanout_deliver(d);
    }
    if (f->here)
        fanout_deliver(f->here);
    xd_stanza_unref(f->st);
    xd_free(f->dest);
    xd_free(f);
    return posts;
}
