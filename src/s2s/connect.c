/*
 * connect.c — the happy-eyeballs connector for outgoing s2s (resolve.h,
 * "happy-eyeballs connector"; RFC 8305 5, XEP-0368).  Sits in src/s2s
 * between the resolver (resolve.c), whose ordered candidate list it races,
 * and s2s_out.c, which gets the winning TCP handle; depends on libuv and
 * src/core only.
 *
 * A race starts one TCP connect per candidate, in list order: the first at
 * once, each later one when the Connection Attempt Delay has passed since
 * the previous start, or at once when every started attempt has failed.
 * The first attempt to connect wins; the others are closed.  A deadline
 * timer ends the whole race.
 *
 *   xd_connect_start ─► RACING ─┬─ an attempt connects ────► cb(0, tcp) ──┐
 *                               ├─ all failed, or deadline ─► cb(error) ──┼─► FINISHED
 *                               └─ xd_connect_cancel ─────────────────────┘
 *
 *   FINISHED: the timers and the remaining attempts close; c is freed when
 *   the last of them has (c->refs == 0).
 *
 * Invariants: the connector keeps one attempt per started candidate; an
 * attempt's memory lives until its tcp close callback (libuv runs the
 * connect callback with UV_ECANCELED before that), except the winner's,
 * whose handle is given away.  The callback runs at most once, never after
 * xd_connect_cancel nor when xd_connect_start fails.  Owner loop only.
 */
#include <stdint.h>
#include <string.h>

#include <uv.h>

#include "s2s/resolve.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

/* One connection attempt.  Owner loop only. */
typedef struct cn_attempt {
    uv_tcp_t *tcp;                /* our handle (tcp->data = this) until it wins */
    uv_connect_t req;             /* the connect request (req.data = this) */
    struct xd_connect *c;         /* the race */
    size_t index;                 /* candidate index */
    bool closing;                 /* uv_close called; freed in its close callback */
    struct cn_attempt *next;      /* c->attempts */
} cn_attempt_t;

/* A race.  Owner loop only. */
struct xd_connect {
    uv_loop_t *loop;              /* where it runs */
    xd_resolve_cand_t *cands;     /* own copy of the list */
    size_t count;                 /* its length */
    size_t next;                  /* next candidate to start */
    unsigned running;             /* attempts whose connect callback is due */
    unsigned refs;                /* open timers + unfreed attempts; freed at 0 */
    uint64_t delay_ms;            /* Connection Attempt Delay */
    uv_timer_t delay;             /* starts the next attempt */
    uv_timer_t deadline;          /* ends the race */
    xd_connect_cb cb;             /* completion */
    void *arg;                    /* its argument */
    int last_err;                 /* error of the latest failed attempt */
    bool finished;                /* won, failed, cancelled: no more callbacks */
    cn_attempt_t *attempts;       /* not yet freed */
};

static void
cn_maybe_free(xd_connect_t *c)
{
    if (c->refs == 0) {
        xd_free(c->cands);
        xd_free(c);
    }
}

static void
cn_unlink(xd_connect_t *c, cn_attempt_t *a)
{
    for (cn_attempt_t **pp = &c->attempts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            return;
        }
    }
}

static void
cn_attempt_closed(uv_handle_t *h)
{
    cn_attempt_t *a = h->data;
    xd_connect_t *c = a->c;
    cn_unlink(c, a);
    xd_free(a->tcp);
    xd_free(a);
    c->refs--;
    cn_maybe_free(c);
}

static void
cn_timer_closed(uv_handle_t *h)
{
    xd_connect_t *c = h->data;
    c->refs--;
    cn_maybe_free(c);
}

static void
cn_close_attempt(cn_attempt_t *a)
{
    if (!a->closing) {
        a->closing = true;
        uv_close((uv_handle_t *)a->tcp, cn_attempt_closed);
    }
}

/* Ends the race: closes timers and every remaining attempt. */
static void
cn_shutdown(xd_connect_t *c)
{
    c->finished = true;
    uv_close((uv_handle_t *)&c->delay, cn_timer_closed);
    uv_close((uv_handle_t *)&c->deadline, cn_timer_closed);
    for (cn_attempt_t *a = c->attempts; a != NULL; a = a->next)
        cn_close_attempt(a);
}

static void
cn_fail(xd_connect_t *c, int status)
{
    cn_shutdown(c);
    c->cb(c->arg, status, NULL, NULL, SIZE_MAX);
}

static void cn_on_connect(uv_connect_t *r, int status);

/* Starts the attempt for candidate idx; returns 0 or the synchronous error. */
static int
cn_start_attempt(xd_connect_t *c, size_t idx)
{
    cn_attempt_t *a = xd_new(cn_attempt_t);
    a->c = c;
    a->index = idx;
    a->tcp = xd_new(uv_tcp_t);
    a->req.data = a;
    int rc = uv_tcp_init(c->loop, a->tcp);
    if (rc != 0) {
        xd_free(a->tcp);
        xd_free(a);
        return rc;
    }
    a->tcp->data = a;
    a->next = c->attempts;
    c->attempts = a;
    c->refs++;
    rc = uv_tcp_connect(&a->req, a->tcp, (const struct sockaddr *)&c->cands[idx].addr,
                        cn_on_connect);
    if (rc != 0) {
        cn_close_attempt(a);
        return rc;
    }
    c->running++;
    return 0;
}

static void cn_delay_cb(uv_timer_t *t);

/* Starts the next candidate that can be started, re-arming the delay.
 * Returns 0, or the last error when nothing runs and nothing is left. */
static int
cn_next(xd_connect_t *c)
{
    while (c->next < c->count) {
        size_t idx = c->next++;
        int rc = cn_start_attempt(c, idx);
        if (rc == 0) {
            uv_timer_start(&c->delay, cn_delay_cb, c->delay_ms, 0);
            return 0;
        }
        char buf[80];
        XD_LOG(NULL, XD_DEBUG, "connect attempt failed", "addr=%s err=%s",
               xd_resolve_cand_str(&c->cands[idx], buf, sizeof buf), xd_err_name(rc));
        c->last_err = rc;
    }
    uv_timer_stop(&c->delay);
    return c->running == 0 ? c->last_err : 0;
}

static void
cn_delay_cb(uv_timer_t *t)
{
    xd_connect_t *c = t->data;
    int rc = cn_next(c);
    if (rc != 0)
        cn_fail(c, rc);
}

static void
cn_deadline_cb(uv_timer_t *t)
{
    cn_fail(t->data, XD_ETIMEDOUT);
}

static void
cn_on_connect(uv_connect_t *r, int status)
{
    cn_attempt_t *a = r->data;
    xd_connect_t *c = a->c;
    XD_ASSERT(c->running > 0);
    c->running--;
    if (c->finished)
        return; /* closed by us (UV_ECANCELED); cn_attempt_closed frees it */
    if (status == 0) {
        size_t idx = a->index;
        uv_tcp_t *tcp = a->tcp;
        tcp->data = NULL;
        cn_unlink(c, a);
        xd_free(a);
        c->refs--;
        cn_shutdown(c); /* c stays alive until its timers have closed */
        c->cb(c->arg, 0, tcp, &c->cands[idx], idx);
        return;
    }
    char buf[80];
    XD_LOG(NULL, XD_DEBUG, "connect attempt failed", "addr=%s err=%s",
           xd_resolve_cand_str(&c->cands[a->index], buf, sizeof buf), xd_err_name(status));
    c->last_err = status;
    cn_close_attempt(a);
    int rc = cn_next(c); /* RFC 8305 5: a failure starts the next attempt at once */
    if (rc != 0)
        cn_fail(c, rc);
}

int
xd_connect_start(uv_loop_t *loop, const xd_resolve_cand_t *cands, size_t count,
                 const xd_connect_opts_t *opts, xd_connect_cb cb, void *arg, xd_connect_t **out)
{
    if (loop == NULL || cands == NULL || count == 0 || cb == NULL)
        return XD_EINVAL;
    xd_connect_t *c = xd_new(xd_connect_t);
    c->loop = loop;
    c->cands = xd_calloc(count, sizeof *cands);
    memcpy(c->cands, cands, count * sizeof *cands);
    c->count = count;
    c->cb = cb;
    c->arg = arg;
    c->last_err = XD_ENOTFOUND;
    c->delay_ms = opts && opts->attempt_delay_ms ? opts->attempt_delay_ms : XD_CONNECT_DELAY_MS;
    uint64_t timeout = opts && opts->timeout_ms ? opts->timeout_ms : XD_CONNECT_TIMEOUT_MS;
    uv_timer_init(loop, &c->delay);
    uv_timer_init(loop, &c->deadline);
    c->delay.data = c;
    c->deadline.data = c;
    c->refs = 2;
    uv_update_time(loop); /* the cached loop time may be stale: timers count from now */
    uv_timer_start(&c->deadline, cn_deadline_cb, timeout, 0);
    int rc = cn_next(c);
    if (rc != 0) {
        cn_shutdown(c); /* no callback: the call failed */
        return rc;
    }
    if (out != NULL)
        *out = c;
    return 0;
}

void
xd_connect_cancel(xd_connect_t *c)
{
    if (c == NULL || c->finished)
        return;
    cn_shutdown(c);
}

static void
cn_user_tcp_closed(uv_handle_t *h)
{
    xd_free(h);
}

void
xd_connect_tcp_close(uv_tcp_t *tcp)
{
    if (tcp != NULL && !uv_is_closing((uv_handle_t *)tcp))
        uv_close((uv_handle_t *)tcp, cn_user_tcp_closed);
}
