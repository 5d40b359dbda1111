/*
 * resolve.c — SRV/AAAA/A resolution for outgoing s2s with c-ares
 * (resolve.h, "the resolver"): the context and the requests.  Sits in
 * src/s2s below the s2s manager; the static table and the name syntax are
 * in resolve_static.c (shared: resolve_int.h), and the candidate lists made
 * here are raced by the happy-eyeballs connector (connect.c).  Depends on
 * libuv, c-ares and src/core only.
 *
 * c-ares on libuv.  c-ares tells us which sockets it wants watched through
 * its socket-state callback; each gets a uv_poll_t (rs_poll_t) that calls
 * ares_process_fd().  After every entry into c-ares we re-arm one uv timer
 * with ares_timeout(), so retries and timeouts run without polling.  c-ares
 * may call a query callback inside ares_query()/ares_getaddrinfo() (hosts
 * file, numeric names, send errors) or inside ares_destroy(); so user
 * callbacks are never called from a c-ares callback: a finished request is
 * queued on ctx->done and delivered from a zero-delay uv timer (`defer`).
 *
 * A request:
 *
 *   xd_resolve_domain ──► SRV (2 queries) ──► ADDR (1 getaddrinfo per target)
 *        │ static IP / IP domain                  │
 *        └──────────────────────────────────► DONE (on ctx->done)
 *                                                  │ defer timer
 *                                             DELIVERING ─► freed
 *   SRV/ADDR ── cancel ──► CANCELLED ─► freed when its last query returns
 *   DONE ────── cancel ──► freed
 *
 * Invariants:
 *  - ctx->reqs holds every request not yet freed; req->inflight counts its
 *    c-ares queries whose callback has not run; a request is freed only when
 *    inflight == 0 (the callbacks carry pointers into it);
 *  - ctx->pending counts requests in SRV or ADDR, ctx->ndone those on
 *    ctx->done; a request's callback runs at most once, never after cancel;
 *  - the context is freed by the close callback of its last uv handle
 *    (ctx->handles), never inside a call of this file.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <ares.h>
#include <uv.h>

#include "s2s/resolve_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define RS_DEFAULT_TIMEOUT_MS 2000
#define RS_DEFAULT_TRIES 3
#define RS_MAX_SRV 64  /* SRV records kept per service answer */

/* ---- small intrusive list ------------------------------------------------ */

static void
rs_list_init(rs_link_t *h)
{
    h->prev = h->next = h;
}

static bool
rs_list_empty(const rs_link_t *h)
{
    return h->next == h;
}

static void
rs_list_push(rs_link_t *h, rs_link_t *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static void
rs_list_del(rs_link_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#define RS_CONTAINER(p, T, field) ((T *)(void *)((char *)(p) - offsetof(T, field)))

/* ---- types ------------------------------------------------------------------ */

/* A c-ares socket watched by libuv.  Owner loop only. */
typedef struct rs_poll {
    uv_poll_t h;                     /* h.data = this */
    ares_socket_t fd;                /* the c-ares socket */
    struct xd_resolve_ctx *ctx;      /* owner */
    struct rs_poll *next;            /* ctx->polls (open ones only) */
} rs_poll_t;

/* One SRV record as kept between the two phases. */
typedef struct rs_srv {
    char target[XD_RESOLVE_HOST_MAX]; /* target, no trailing dot */
    uint16_t priority;               /* RFC 2782 */
    uint16_t weight;                 /* RFC 2782 */
    uint16_t port;                   /* RFC 2782 */
    xd_resolve_src src;              /* XMPPS or XMPP */
} rs_srv_t;

/* A host name to look up in the ADDR phase. */
typedef struct rs_target {
    struct xd_resolve_req *req;      /* back pointer for the c-ares callback */
    char name[XD_RESOLVE_HOST_MAX];  /* what to look up */
    uint16_t port;                   /* where to connect */
    uint16_t priority, weight;       /* SRV data, copied to candidates */
    xd_resolve_src src;              /* copied to candidates */
    int status;                      /* ARES_* of the lookup */
    struct ares_addrinfo *ai;        /* result, freed with the request */
} rs_target_t;

/* The argument of one SRV query. */
typedef struct rs_srvq {
    struct xd_resolve_req *req;      /* back pointer */
    xd_resolve_src src;              /* which service */
} rs_srvq_t;

typedef enum rs_state {
    RQ_SRV,        /* SRV queries in flight */
    RQ_ADDR,       /* address lookups in flight */
    RQ_DONE,       /* on ctx->done, callback due */
    RQ_DELIVERING, /* callback running */
    RQ_CANCELLED,  /* cancelled while queries were in flight */
} rs_state;

/* One xd_resolve_domain() call.  Owner loop only. */
struct xd_resolve_req {
    rs_link_t all;                   /* ctx->reqs */
    rs_link_t q;                     /* ctx->done while RQ_DONE */
    struct xd_resolve_ctx *ctx;      /* owner */
    rs_state state;                  /* see the diagram above */
    char domain[RS_QNAME_MAX];       /* query name: A-label, lower case, no trailing dot */
    xd_resolve_cb cb;                /* completion */
    void *arg;                       /* its argument */
    unsigned inflight;               /* c-ares callbacks still due */
    rs_srvq_t srvq[2];               /* [0] xmpps, [1] xmpp query arguments */
    int srv_status[2];               /* ARES_* of each SRV query */
    bool srv_dot[2];                 /* the answer was the single "." record */
    rs_srv_t *srv[2];                /* records of each answer */
    size_t nsrv[2];                  /* their numbers */
    rs_target_t *targets;            /* ADDR phase lookups, in order */
    size_t ntargets;                 /* their number */
    int status;                      /* result for the callback */
    xd_resolve_cand_t *cands;        /* result list (ncands entries) */
    size_t ncands;                   /* its length */
};

static void rs_timer_update(xd_resolve_ctx_t *ctx);
static void rq_start_addr(xd_resolve_req_t *req);

/* ---- helpers --------------------------------------------------------------- */

static uint64_t
rs_rand(xd_resolve_ctx_t *ctx)
{
    uint64_t x = ctx->rng; /* xorshift64* (Vigna); only spreads load */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ctx->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void
rs_copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ARES_* → XD_E* / -errno (resolve.h lists what callers see). */
static int
rs_err(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return XD_ENOTFOUND;
    case ARES_ETIMEOUT:
        return XD_ETIMEDOUT;
    case ARES_ECONNREFUSED:
        return UV_ECONNREFUSED;
    case ARES_ENOMEM:
        return UV_ENOMEM;
    case ARES_EBADNAME:
        return XD_EINVAL;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        return XD_ECANCELED;
    default:
        return XD_RESOLVE_EDNS; /* SERVFAIL, REFUSED, FORMERR, bad answer ... */
    }
}

/* How bad a failure is, to pick one status out of several. */
static int
rs_err_rank(int status)
{
    switch (status) {
    case ARES_ETIMEOUT:
        return 4;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return 1;
    case ARES_SUCCESS:
        return 0;
    case ARES_ECONNREFUSED:
        return 2;
    default:
        return 3;
    }
}

/* ---- c-ares on libuv ----------------------------------------------------------- */

static void
rs_handle_closed(uv_handle_t *h)
{
    xd_resolve_ctx_t *ctx = h->data;
    XD_ASSERT(ctx->handles > 0);
    if (--ctx->handles == 0 && ctx->closing)
        xd_free(ctx);
}

static void
rs_poll_closed(uv_handle_t *h)
{
    rs_poll_t *p = h->data;
    xd_resolve_ctx_t *ctx = p->ctx;
    xd_free(p);
    XD_ASSERT(ctx->handles > 0);
    if (--ctx->handles == 0 && ctx->closing)
        xd_free(ctx);
}

static void
rs_poll_close(rs_poll_t *p)
{
    xd_resolve_ctx_t *ctx = p->ctx;
    for (rs_poll_t **pp = &ctx->polls; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    uv_poll_stop(&p->h);
    uv_close((uv_handle_t *)&p->h, rs_poll_closed);
}

static void
rs_poll_cb(uv_poll_t *h, int status, int events)
{
    rs_poll_t *p = h->data;
    xd_resolve_ctx_t *ctx = p->ctx;
    ares_socket_t fd = p->fd;
    /* On a poll error let c-ares read and write: it sees the socket error. */
    bool r = status < 0 || (events & UV_READABLE);
    bool w = status < 0 || (events & UV_WRITABLE);
    ares_process_fd(ctx->ch, r ? fd : ARES_SOCKET_BAD, w ? fd : ARES_SOCKET_BAD);
    rs_timer_update(ctx); /* p may be closing now; ctx is alive */
}

/* c-ares: start, change or stop watching fd. */
static void
rs_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    xd_resolve_ctx_t *ctx = data;
    rs_poll_t *p = ctx->polls;
    while (p != NULL && p->fd != fd)
        p = p->next;
    if (!readable && !writable) {
        if (p != NULL)
            rs_poll_close(p);
        return;
    }
    if (p == NULL) {
        p = xd_new(rs_poll_t);
        p->fd = fd;
        p->ctx = ctx;
        int rc = uv_poll_init_socket(ctx->loop, &p->h, fd);
        if (rc != 0) {
            /* c-ares times the query out. */
            XD_LOG(&ctx->log, XD_ERROR, "dns socket watch failed", "fd=%d err=%s", (int)fd,
                   xd_err_name(rc));
            xd_free(p);
            return;
        }
        p->h.data = p;
        p->next = ctx->polls;
        ctx->polls = p;
        ctx->handles++;
    }
    uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), rs_poll_cb);
}

static void
rs_timer_cb(uv_timer_t *t)
{
    xd_resolve_ctx_t *ctx = t->data;
    ares_process_fd(ctx->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rs_timer_update(ctx);
}

/* Re-arms the c-ares timer after any entry into c-ares. */
static void
rs_timer_update(xd_resolve_ctx_t *ctx)
{
    if (ctx->closing)
        return;
    struct timeval tv;
    struct timeval *tvp = ares_timeout(ctx->ch, NULL, &tv);
    if (tvp == NULL) {
        uv_timer_stop(&ctx->timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    uv_timer_start(&ctx->timer, rs_timer_cb, ms, 0);
}

/* ---- requests ---------------------------------------------------------------- */

static void
rq_free(xd_resolve_req_t *req)
{
    rs_list_del(&req->all);
    rs_list_del(&req->q);
    for (size_t i = 0; i < req->ntargets; i++)
        if (req->targets[i].ai != NULL)
            ares_freeaddrinfo(req->targets[i].ai);
    xd_free(req->targets);
    xd_free(req->srv[0]);
    xd_free(req->srv[1]);
    xd_free(req->cands);
    xd_free(req);
}

static void
rs_defer_cb(uv_timer_t *t)
{
    xd_resolve_ctx_t *ctx = t->data;
    size_t n = ctx->ndone; /* requests queued by these callbacks wait for the next round */
    while (n-- > 0 && !ctx->closing && !rs_list_empty(&ctx->done)) {
        xd_resolve_req_t *req = RS_CONTAINER(ctx->done.next, xd_resolve_req_t, q);
        rs_list_del(&req->q);
        ctx->ndone--;
        req->state = RQ_DELIVERING;
        req->cb(req->arg, req->status, req->cands, req->ncands);
        if (ctx->closing)
            return; /* xd_resolve_free, called by cb, freed every request */
        rq_free(req);
    }
}

/* Queues the completion of req. */
static void
rq_finish(xd_resolve_req_t *req, int status)
{
    xd_resolve_ctx_t *ctx = req->ctx;
    XD_ASSERT(req->state == RQ_SRV || req->state == RQ_ADDR);
    XD_ASSERT(status != 0 || req->ncands > 0);
    req->status = status;
    req->state = RQ_DONE;
    ctx->pending--;
    rs_list_push(&ctx->done, &req->q);
    ctx->ndone++;
    if (status == 0)
        XD_LOG(&ctx->log, XD_DEBUG, "dns resolved", "domain=%s candidates=%zu", req->domain,
               req->ncands);
    else
        XD_LOG(&ctx->log, XD_INFO, "dns resolution failed", "domain=%s err=%s", req->domain,
               xd_err_name(status));
    uv_timer_start(&ctx->defer, rs_defer_cb, 0, 0);
}

/* A c-ares callback of req has run; true when req is dead (cancelled and now
 * freed, or the context is being destroyed) and must not be touched. */
static bool
rq_query_done(xd_resolve_req_t *req)
{
    XD_ASSERT(req->inflight > 0);
    req->inflight--;
    if (req->ctx->closing)
        return true; /* xd_resolve_free frees it after ares_destroy */
    if (req->state == RQ_CANCELLED) {
        if (req->inflight == 0)
            rq_free(req);
        return true;
    }
    return false;
}

static bool
rs_cand_dup(const xd_resolve_req_t *req, const xd_resolve_cand_t *c)
{
    for (size_t i = 0; i < req->ncands; i++) {
        const xd_resolve_cand_t *o = &req->cands[i];
        if (o->addrlen == c->addrlen && o->direct_tls == c->direct_tls &&
            memcmp(&o->addr, &c->addr, c->addrlen) == 0)
            return true;
    }
    return false;
}

/* Appends a candidate (unless it repeats one or the list is full). */
static void
rq_add_cand(xd_resolve_req_t *req, const rs_target_t *t, const struct sockaddr *sa)
{
    if (req->ncands >= XD_RESOLVE_MAX_CANDS)
        return;
    xd_resolve_cand_t c;
    memset(&c, 0, sizeof c);
    rs_copy(c.host, sizeof c.host, t->name);
    if (sa->sa_family == AF_INET6) {
        memcpy(&c.addr, sa, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)&c.addr)->sin6_port = htons(t->port);
        c.addrlen = sizeof(struct sockaddr_in6);
    } else if (sa->sa_family == AF_INET) {
        memcpy(&c.addr, sa, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)&c.addr)->sin_port = htons(t->port);
        c.addrlen = sizeof(struct sockaddr_in);
    } else {
        return;
    }
    c.port = t->port;
    c.direct_tls = t->src == XD_RESOLVE_SRC_XMPPS;
    c.src = t->src;
    c.priority = t->priority;
    c.weight = t->weight;
    if (rs_cand_dup(req, &c))
        return;
    if (req->cands == NULL)
        req->cands = xd_calloc(XD_RESOLVE_MAX_CANDS, sizeof *req->cands);
    req->cands[req->ncands++] = c;
}

/* All address lookups are back: build the candidate list.  Per target the
 * families alternate, IPv6 first (RFC 8305 4), each in answer order. */
static void
rq_addr_done(xd_resolve_req_t *req)
{
    int worst = ARES_SUCCESS;
    for (size_t i = 0; i < req->ntargets; i++) {
        rs_target_t *t = &req->targets[i];
        if (t->status != ARES_SUCCESS || t->ai == NULL) {
            int st = t->status == ARES_SUCCESS ? ARES_ENODATA : t->status;
            XD_LOG(&req->ctx->log, XD_DEBUG, "dns target failed", "domain=%s target=%s err=%s",
                   req->domain, t->name, ares_strerror(st));
            if (rs_err_rank(st) > rs_err_rank(worst))
                worst = st;
            continue;
        }
        struct ares_addrinfo_node *n6 = t->ai->nodes, *n4 = t->ai->nodes;
        for (;;) {
            while (n6 != NULL && n6->ai_family != AF_INET6)
                n6 = n6->ai_next;
            while (n4 != NULL && n4->ai_family != AF_INET)
                n4 = n4->ai_next;
            if (n6 == NULL && n4 == NULL)
                break;
            if (n6 != NULL) {
                rq_add_cand(req, t, n6->ai_addr);
                n6 = n6->ai_next;
            }
            if (n4 != NULL) {
                rq_add_cand(req, t, n4->ai_addr);
                n4 = n4->ai_next;
            }
        }
    }
    if (req->ncands > 0)
        rq_finish(req, 0);
    else
        rq_finish(req, worst == ARES_SUCCESS ? XD_ENOTFOUND : rs_err(worst));
}

static void
rs_addr_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    rs_target_t *t = arg;
    xd_resolve_req_t *req = t->req;
    if (rq_query_done(req)) {
        if (res != NULL)
            ares_freeaddrinfo(res);
        return;
    }
    t->status = status;
    t->ai = res;
    if (req->inflight == 0)
        rq_addr_done(req);
}

/* Starts one getaddrinfo per target (the targets are set). */
static void
rq_start_addr(xd_resolve_req_t *req)
{
    xd_resolve_ctx_t *ctx = req->ctx;
    req->state = RQ_ADDR;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_flags = ARES_AI_NOSORT; /* we order for RFC 8305 ourselves */
    hints.ai_family = AF_UNSPEC;     /* AAAA and A */
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    req->inflight++; /* guard: a callback may run inside ares_getaddrinfo */
    for (size_t i = 0; i < req->ntargets; i++) {
        rs_target_t *t = &req->targets[i];
        t->req = req;
        t->status = ARES_ENOTFOUND;
        req->inflight++;
        ares_getaddrinfo(ctx->ch, t->name, NULL, &hints, rs_addr_cb, t);
    }
    req->inflight--;
    if (req->inflight == 0)
        rq_addr_done(req);
}

/* RFC 2782 ordering of v[0..n): by priority, then within one priority a
 * weighted random draw repeated until every record is placed, records of
 * weight 0 being put first before each draw. */
static void
rs_srv_order(xd_resolve_ctx_t *ctx, rs_srv_t *v, size_t n)
{
    for (size_t i = 1; i < n; i++) { /* stable insertion sort by priority */
        rs_srv_t x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1].priority > x.priority) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    for (size_t g = 0; g < n;) {
        size_t e = g;
        while (e < n && v[e].priority == v[g].priority)
            e++;
        for (size_t k = g; k + 1 < e; k++) {
            /* Zero weights to the front of the unordered rest, stably. */
            size_t z = k;
            for (size_t m = k; m < e; m++) {
                if (v[m].weight == 0) {
                    rs_srv_t x = v[m];
                    memmove(&v[z + 1], &v[z], (m - z) * sizeof *v);
                    v[z++] = x;
                }
            }
            uint64_t sum = 0;
            for (size_t m = k; m < e; m++)
                sum += v[m].weight;
            uint64_t r = rs_rand(ctx) % (sum + 1); /* uniform in [0, sum] */
            uint64_t run = 0;
            size_t pick = k;
            for (size_t m = k; m < e; m++) {
                run += v[m].weight;
                if (run >= r) {
                    pick = m;
                    break;
                }
            }
            rs_srv_t x = v[pick]; /* move the pick to k, keep the rest in order */
            memmove(&v[k + 1], &v[k], (pick - k) * sizeof *v);
            v[k] = x;
        }
        g = e;
    }
}

/* Both SRV answers are in: choose the targets (resolve.h has the rules). */
static void
rq_srv_done(xd_resolve_req_t *req)
{
    xd_resolve_ctx_t *ctx = req->ctx;
    size_t total = req->nsrv[0] + req->nsrv[1];
    rs_srv_t *all = xd_calloc(total + 1, sizeof *all);
    size_t n = 0;
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < req->nsrv[s]; i++)
            all[n++] = req->srv[s][i];
    rs_srv_order(ctx, all, n);
    if (n > XD_RESOLVE_MAX_TARGETS)
        n = XD_RESOLVE_MAX_TARGETS;

    /* RFC 6120 3.2.1 step 4: no _xmpp-server records at all → D:5269. */
    int xst = req->srv_status[1];
    bool fallback = !req->srv_dot[1] && (xst == ARES_ENOTFOUND || xst == ARES_ENODATA);

    req->targets = xd_calloc(n + 1, sizeof *req->targets);
    for (size_t i = 0; i < n; i++) {
        rs_target_t *t = &req->targets[i];
        rs_copy(t->name, sizeof t->name, all[i].target);
        t->port = all[i].port;
        t->priority = all[i].priority;
        t->weight = all[i].weight;
        t->src = all[i].src;
    }
    if (fallback) {
        rs_target_t *t = &req->targets[n++];
        rs_copy(t->name, sizeof t->name, req->domain);
        t->port = XD_RESOLVE_PORT;
        t->src = XD_RESOLVE_SRC_FALLBACK;
    }
    req->ntargets = n;
    xd_free(all);
    XD_LOG(&ctx->log, XD_DEBUG, "dns srv answers",
           "domain=%s xmpps=%zu%s xmpp=%zu%s xmpp_status=%s targets=%zu", req->domain,
           req->nsrv[0], req->srv_dot[0] ? "(.)" : "", req->nsrv[1], req->srv_dot[1] ? "(.)" : "",
           ares_strerror(xst), n);
    if (n > 0) {
        rq_start_addr(req);
        return;
    }
    /* Nothing to try: "." for _xmpp-server (RFC 6120 3.2.1: the service is
     * decidedly not available), or the _xmpp-server query failed. */
    if (req->srv_dot[1] || xst == ARES_SUCCESS || xst == ARES_ENOTFOUND || xst == ARES_ENODATA)
        rq_finish(req, XD_ENOTFOUND);
    else
        rq_finish(req, rs_err(xst));
}

static void
rs_srv_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    rs_srvq_t *q = arg;
    xd_resolve_req_t *req = q->req;
    if (rq_query_done(req))
        return;
    int s = q->src == XD_RESOLVE_SRC_XMPPS ? 0 : 1;
    struct ares_srv_reply *list = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_srv_reply(abuf, alen, &list);
    req->srv_status[s] = status;
    if (status == ARES_SUCCESS) {
        size_t cnt = 0;
        for (struct ares_srv_reply *r = list; r != NULL; r = r->next)
            cnt++;
        /* RFC 2782: a single record with target "." = service not offered. */
        if (cnt == 1 && (list->host[0] == '\0' || strcmp(list->host, ".") == 0))
            req->srv_dot[s] = true;
        req->srv[s] = xd_calloc(cnt < RS_MAX_SRV ? cnt + 1 : RS_MAX_SRV, sizeof(rs_srv_t));
        for (struct ares_srv_reply *r = list; r != NULL && req->nsrv[s] < RS_MAX_SRV;
             r = r->next) {
            size_t hl = strlen(r->host);
            if (hl > 0 && r->host[hl - 1] == '.')
                hl--;
            if (hl == 0 || r->port == 0 || !rs_hostname_ok(r->host, hl))
                continue; /* "." among other records, or junk */
            rs_srv_t *v = &req->srv[s][req->nsrv[s]++];
            memcpy(v->target, r->host, hl);
            v->target[hl] = '\0';
            v->priority = r->priority;
            v->weight = r->weight;
            v->port = r->port;
            v->src = q->src;
        }
        ares_free_data(list);
    }
    if (req->inflight == 0)
        rq_srv_done(req);
}

static void
rq_start_srv(xd_resolve_req_t *req)
{
    xd_resolve_ctx_t *ctx = req->ctx;
    static const char *const svc[2] = { "_xmpps-server._tcp.", "_xmpp-server._tcp." };
    req->state = RQ_SRV;
    req->inflight++; /* guard, as in rq_start_addr */
    for (int s = 0; s < 2; s++) {
        char name[RS_QNAME_MAX + 32];
        snprintf(name, sizeof name, "%s%s", svc[s], req->domain);
        req->srvq[s].req = req;
        req->srvq[s].src = s == 0 ? XD_RESOLVE_SRC_XMPPS : XD_RESOLVE_SRC_XMPP;
        req->srv_status[s] = ARES_ENOTFOUND;
        req->inflight++;
        ares_query(ctx->ch, name, ns_c_in, ns_t_srv, rs_srv_cb, &req->srvq[s]);
    }
    req->inflight--;
    if (req->inflight == 0)
        rq_srv_done(req);
}

/* ---- public resolver API ---------------------------------------------------- */

static uv_once_t rs_once = UV_ONCE_INIT;
static int rs_lib_status;

static void
rs_lib_init(void)
{
    rs_lib_status = ares_library_init(ARES_LIB_INIT_ALL); /* not thread-safe: once */
}

int
xd_resolve_new(uv_loop_t *loop, const xd_resolve_opts_t *opts, xd_resolve_ctx_t **out)
{
    static const xd_resolve_opts_t none;
    if (loop == NULL || out == NULL)
        return XD_EINVAL;
    if (opts == NULL)
        opts = &none;
    uv_once(&rs_once, rs_lib_init);
    if (rs_lib_status != ARES_SUCCESS)
        return XD_EINTERNAL;

    xd_resolve_ctx_t *ctx = xd_new(xd_resolve_ctx_t);
    ctx->loop = loop;
    rs_list_init(&ctx->reqs);
    rs_list_init(&ctx->done);
    xd_log_ctx(&ctx->log, opts->log, "part=resolve");
    ctx->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)ctx ^ 0x9E3779B97F4A7C15ULL;
    if (ctx->rng == 0)
        ctx->rng = 1;

    struct ares_options ao;
    memset(&ao, 0, sizeof ao);
    ao.sock_state_cb = rs_sock_state_cb;
    ao.sock_state_cb_data = ctx;
    ao.timeout = (int)(opts->timeout_ms ? opts->timeout_ms : RS_DEFAULT_TIMEOUT_MS);
    ao.tries = (int)(opts->tries ? opts->tries : RS_DEFAULT_TRIES);
    ao.ndomains = 0; /* no search list: s2s names are absolute */
    ao.domains = NULL;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_DOMAINS;
    int st = ares_init_options(&ctx->ch, &ao, mask);
    if (st != ARES_SUCCESS) {
        XD_LOG(&ctx->log, XD_ERROR, "dns init failed", "err=\"%s\"", ares_strerror(st));
        xd_free(ctx);
        return XD_EINTERNAL;
    }
    if (opts->servers != NULL) {
        st = ares_set_servers_ports_csv(ctx->ch, opts->servers);
        if (st != ARES_SUCCESS) {
            ares_destroy(ctx->ch);
            xd_free(ctx);
            return XD_EINVAL;
        }
    }
    uv_timer_init(loop, &ctx->timer);
    uv_timer_init(loop, &ctx->defer);
    ctx->timer.data = ctx;
    ctx->defer.data = ctx;
    ctx->handles = 2;
    *out = ctx;
    return 0;
}

void
xd_resolve_free(xd_resolve_ctx_t *ctx)
{
    if (ctx == NULL || ctx->closing)
        return;
    ctx->closing = true;
    /* Runs every query callback with ARES_EDESTRUCTION (they only count down,
     * see rq_query_done) and reports every socket closed. */
    ares_destroy(ctx->ch);
    while (ctx->polls != NULL)
        rs_poll_close(ctx->polls);
    while (!rs_list_empty(&ctx->reqs)) {
        xd_resolve_req_t *req = RS_CONTAINER(ctx->reqs.next, xd_resolve_req_t, all);
        XD_ASSERT(req->inflight == 0);
        rq_free(req);
    }
    ctx->pending = ctx->ndone = 0;
    xd_resolve_clear_static(ctx);
    uv_close((uv_handle_t *)&ctx->timer, rs_handle_closed);
    uv_close((uv_handle_t *)&ctx->defer, rs_handle_closed);
}

int
xd_resolve_domain(xd_resolve_ctx_t *ctx, const char *domain, xd_resolve_cb cb, void *arg,
                  xd_resolve_req_t **req_out)
{
    if (ctx == NULL || domain == NULL || cb == NULL)
        return XD_EINVAL;
    if (ctx->closing)
        return XD_ECLOSED;
    struct sockaddr_storage lit;
    socklen_t litlen = 0;
    bool is_lit = rs_domain_literal(domain, &lit, &litlen);
    char qname[RS_QNAME_MAX];
    if (is_lit)
        rs_copy(qname, sizeof qname, domain);
    else if (rs_qname(domain, qname) != 0)
        return XD_EINVAL;

    xd_resolve_req_t *req = xd_new(xd_resolve_req_t);
    req->ctx = ctx;
    req->cb = cb;
    req->arg = arg;
    req->state = RQ_SRV;
    memcpy(req->domain, qname, sizeof qname);
    rs_list_init(&req->q);
    rs_list_push(&ctx->reqs, &req->all);
    ctx->pending++;
    if (req_out != NULL)
        *req_out = req;

    const rs_static_t *st = is_lit ? NULL : rs_static_find(ctx, qname);
    if (is_lit || (st != NULL && st->literal)) {
        rs_target_t t;
        memset(&t, 0, sizeof t);
        rs_copy(t.name, sizeof t.name, is_lit ? qname : st->host);
        t.port = is_lit ? XD_RESOLVE_PORT : st->port;
        t.src = is_lit ? XD_RESOLVE_SRC_LITERAL : XD_RESOLVE_SRC_STATIC;
        rq_add_cand(req, &t, (const struct sockaddr *)(is_lit ? &lit : &st->addr));
        rq_finish(req, 0);
    } else if (st != NULL) {
        req->targets = xd_calloc(1, sizeof *req->targets);
        req->ntargets = 1;
        rs_copy(req->targets[0].name, sizeof req->targets[0].name, st->host);
        req->targets[0].port = st->port;
        req->targets[0].src = XD_RESOLVE_SRC_STATIC;
        rq_start_addr(req);
    } else {
        rq_start_srv(req);
    }
    rs_timer_update(ctx);
    return 0;
}

void
xd_resolve_cancel(xd_resolve_req_t *req)
{
    if (req == NULL)
        return;
    xd_resolve_ctx_t *ctx = req->ctx;
    switch (req->state) {
    case RQ_DONE:
        rs_list_del(&req->q);
        ctx->ndone--;
        rq_free(req);
        break;
    case RQ_SRV:
    case RQ_ADDR:
        req->state = RQ_CANCELLED;
        ctx->pending--;
        if (req->inflight == 0)
            rq_free(req);
        break;
    case RQ_DELIVERING:
    case RQ_CANCELLED:
        break; /* too late / already done */
    }
}

size_t
xd_resolve_pending(const xd_resolve_ctx_t *ctx)
{
    return ctx->pending + ctx->ndone;
}

const char *
xd_resolve_cand_str(const xd_resolve_cand_t *c, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (c->addr.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&c->addr)->sin6_addr, ip, sizeof ip);
        snprintf(buf, size, "[%s]:%u", ip, (unsigned)c->port);
    } else {
        if (c->addr.ss_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)&c->addr)->sin_addr, ip, sizeof ip);
        snprintf(buf, size, "%s:%u", ip, (unsigned)c->port);
    }
    return buf;
}
