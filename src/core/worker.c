/*
 * worker.c — worker threads, each running one libuv loop (worker.h,
 * DESIGN.md 2).  Sits in src/core above inbox.c; everything above the core
 * reaches another worker only through xd_worker_post.
 *
 * Life of one worker (all on its own thread unless noted):
 *
 *   xd_workers_start (caller's thread): uv_loop_init, inbox init, thread create
 *      │
 *   running: init hook → uv_run; inbox messages run in post order per producer
 *      │  xd_workers_stop (any thread) posts a stop message, once per worker
 *   draining (with xd_workers_set_drain): on_drain hook (no new input);
 *      │  when holds == 0 (the work in flight is done), or the drain timeout
 *   stopping: on_stop hook; grace timer armed (unref'd)
 *      │  (drained) when holds == 0 again: the work the streams' closing
 *      │  started is done too; xd_workers_wait_drained counts the worker
 *      │  when holds == 0 (no pool results outstanding)
 *   inbox closed: pushes refused (XD_ECLOSED), last messages drained, wake-up handle closed
 *      │  uv_run returns once every handle is closed; if the grace timer fires
 *      │  first it logs and closes what is left (xd_timers are freed), except
 *      │  an inbox still held open for pool results (it warns again each period)
 *   finished: leftover unref'd handles closed, uv_loop_close() == 0
 *      │
 *   xd_workers_join (caller's thread): uv_thread_join, free
 *
 * Invariants: wk_all/wk_count change only in start and join, while no worker
 * thread runs; every field of struct xd_worker except `inbox` and
 * `stop_requested` is touched by the owner thread only (or by start/join
 * while the thread is not running); `holds` > 0 keeps the inbox open.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "core/inbox.h"
#include "core/worker.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/input.h"
#include "xmppd/log.h"

#define WK_BATCH 1024              /* messages per loop iteration */
#define WK_GRACE_MS_DEFAULT 5000   /* stop: wait this long for handles */

struct xd_timer {
    uv_timer_t h;                  /* h.data == this; owner loop only */
    xd_worker_t *w;                /* the owner */
    xd_timer_handler fn;           /* callback */
    void *arg;                     /* callback argument */
    struct xd_timer *prev, *next;  /* w->timers list of live timers */
};

struct xd_worker {
    xd_inbox_t inbox;              /* any thread (push); owner drains */
    _Atomic bool stop_requested;   /* any thread; the stop message was posted */
    unsigned index;                /* position in wk_all; immutable */
    uv_thread_t thread;            /* set by start, joined by join */
    _Atomic bool thread_started;   /* written by start, read by stop on any thread */
    uv_loop_t loop;                /* owner only */
    xd_log_t log;                  /* "worker=N"; immutable */
    void *data;                    /* xd_worker_data slot; owner only */
    bool stopping;                 /* on_stop has run; owner only */
    bool draining;                 /* on_drain has run, on_stop not yet; owner only */
    uv_timer_t drain;              /* drain deadline; owner only */
    bool drain_armed;              /* drain was initialised; owner only */
    bool settling;                 /* drained, streams closed, their work in flight */
    bool drain_signalled;          /* counted in wk_drained; owner only */
    bool inbox_open;               /* wake-up handle open, pushes accepted; owner */
    unsigned holds;                /* xd_worker_hold count; owner only */
    uv_timer_t grace;              /* stop deadline; owner only */
    bool grace_armed;              /* grace was initialised; owner only */
    struct xd_timer *timers;       /* live xd_timers, newest first; owner only */
};

static xd_worker_t **wk_all;       /* the workers; see invariants */
static unsigned wk_count;          /* length of wk_all */
static xd_worker_fn wk_init_fn;    /* init hook */
static xd_worker_fn wk_stop_fn;    /* on_stop hook */
static void *wk_hook_arg;          /* argument of the hooks */
static xd_worker_fn wk_drain_fn;   /* on_drain hook, or NULL */
static uint64_t wk_drain_ms;       /* drain deadline */
static uv_mutex_t wk_drain_mu;     /* guards wk_drained */
static uv_cond_t wk_drain_cv;      /* signalled when a worker has drained */
static unsigned wk_drained;        /* workers done draining (or never draining) */
static xd_input_hold_fn wk_in_hold;       /* the stream layer's; set before start */
static xd_input_release_fn wk_in_release; /* idem */
static xd_input_charge_fn wk_in_charge;   /* idem */
static _Thread_local uint64_t wk_input;   /* the stream whose element is handled, or 0 */
static _Thread_local xd_input_ref_t wk_lent; /* xd_input_lend: a stream held elsewhere, or {0} */
static uv_sem_t wk_ready;          /* posted by each worker after init */
static _Atomic uint64_t wk_grace_ms = WK_GRACE_MS_DEFAULT;

static _Thread_local xd_worker_t *wk_self; /* the calling thread's worker */
static _Thread_local bool wk_on_loop;      /* the calling thread runs a loop */

/* ---- inbox side --------------------------------------------------------- */

/* Closes the inbox: refuse pushes, run what is queued, close the handle. */
static void
wk_close_inbox(xd_worker_t *w)
{
    if (!w->inbox_open)
        return;
    w->inbox_open = false;
    xd_inbox_close(&w->inbox);
    while (xd_inbox_drain(&w->inbox, w, SIZE_MAX) > 0)
        ;
    xd_inbox_close_handle(&w->inbox);
}

static void
wk_maybe_close(xd_worker_t *w)
{
    if (w->stopping && w->holds == 0)
        wk_close_inbox(w);
}

static void wk_drained_now(xd_worker_t *w);
static void wk_signal_drained(xd_worker_t *w);

static void
wk_inbox_cb(xd_inbox_t *q)
{
    xd_worker_t *w = q->data;

    xd_inbox_begin_drain(&w->inbox);
    xd_inbox_drain(&w->inbox, w, WK_BATCH);
    if (w->draining && w->holds == 0)
        wk_drained_now(w);
    else if (w->settling && w->holds == 0)
        wk_signal_drained(w);
    /* Closing happens here, never inside a message, so drain is not re-entered. */
    wk_maybe_close(w);
}

/* ---- stopping ----------------------------------------------------------- */

static void
wk_timer_close_cb(uv_handle_t *h)
{
    xd_free(h->data);
}

/* Logs and closes one leftover handle (uv_walk callback). */
static void
wk_walk_close(uv_handle_t *h, void *arg)
{
    xd_worker_t *w = arg;

    if (uv_is_closing(h) || h == (uv_handle_t *)&w->grace || h == (uv_handle_t *)&w->drain)
        return;
    if (h == xd_inbox_handle(&w->inbox))
        return; /* closed by wk_close_inbox, never behind the holds' back */
    XD_LOG(&w->log, XD_WARN, "closing leftover handle", "type=%s active=%d",
           uv_handle_type_name(uv_handle_get_type(h)), uv_is_active(h));
    uv_close(h, NULL);
}

/* Frees leftover xd_timers and closes every other handle still open except
 * the inbox, which stays open while pool results are outstanding (holds):
 * dropping them would break "done runs exactly once", and xd_pool_stop waits
 * for running jobs anyway. */
static void
wk_close_leftovers(xd_worker_t *w)
{
    while (w->timers != NULL) {
        XD_LOG(&w->log, XD_WARN, "freeing leftover timer", "");
        xd_timer_free(w->timers);
    }
    uv_walk(&w->loop, wk_walk_close, w);
}

static void
wk_grace_cb(uv_timer_t *t)
{
    xd_worker_t *w = t->data;
    uint64_t grace_ms = atomic_load(&wk_grace_ms);

    XD_LOG(&w->log, XD_WARN, "stop grace period over", "grace_ms=%llu holds=%u",
           (unsigned long long)grace_ms, w->holds);
    wk_signal_drained(w); /* the pool may stop: what is left is cancelled */
    wk_close_leftovers(w);
    if (w->inbox_open) {
        /* Still waiting for pool results: say so again after another period. */
        uv_timer_start(&w->grace, wk_grace_cb, grace_ms, 0);
    }
}

static void wk_begin_stop(xd_worker_t *w);

static void
wk_drain_close_cb(uv_handle_t *h)
{
    (void)h;
}

/* Tells xd_workers_wait_drained that this worker is done with pool work:
 * the streams' own work at their close (offline stores of what a client
 * did not acknowledge, last-activity writes) included.  Once. */
static void
wk_signal_drained(xd_worker_t *w)
{
    if (w->drain_signalled || wk_drain_fn == NULL)
        return;
    w->drain_signalled = true;
    w->settling = false;
    uv_mutex_lock(&wk_drain_mu);
    wk_drained++;
    uv_cond_broadcast(&wk_drain_cv);
    uv_mutex_unlock(&wk_drain_mu);
}

/* Draining is over (the work in flight is done, or the deadline passed):
 * close the streams, then wait (within the grace period) for the work
 * their closing started before the pool may stop. */
static void
wk_drained_now(xd_worker_t *w)
{
    if (!w->draining)
        return;
    w->draining = false;
    if (w->drain_armed) {
        uv_timer_stop(&w->drain);
        uv_close((uv_handle_t *)&w->drain, wk_drain_close_cb);
        w->drain_armed = false;
    }
    wk_begin_stop(w);
    w->settling = true;
    if (w->holds == 0)
        wk_signal_drained(w);
}

static void
wk_drain_cb(uv_timer_t *t)
{
    xd_worker_t *w = t->data;
    XD_LOG(&w->log, XD_WARN, "stop: work still in flight after the drain period",
           "drain_ms=%llu holds=%u", (unsigned long long)wk_drain_ms, w->holds);
    wk_drained_now(w);
}

static void
wk_stop_msg(xd_worker_t *w, void *arg)
{
    (void)arg;
    if (w->stopping || w->draining)
        return;
    if (wk_drain_fn == NULL) {
        wk_begin_stop(w);
        return;
    }
    w->draining = true;
    wk_drain_fn(w, wk_hook_arg);
    if (w->holds == 0) {
        wk_drained_now(w);
        return;
    }
    uv_timer_init(&w->loop, &w->drain);
    w->drain.data = w;
    w->drain_armed = true;
    uv_timer_start(&w->drain, wk_drain_cb, wk_drain_ms, 0);
    /* wk_inbox_cb ends the drain after the batch that brings holds to 0. */
}

static void
wk_begin_stop(xd_worker_t *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    if (wk_stop_fn != NULL)
        wk_stop_fn(w, wk_hook_arg);
    uv_timer_init(&w->loop, &w->grace);
    w->grace.data = w;
    w->grace_armed = true;
    uv_timer_start(&w->grace, wk_grace_cb, atomic_load(&wk_grace_ms), 0);
    uv_unref((uv_handle_t *)&w->grace); /* a deadline, not a reason to live */
    /* wk_inbox_cb closes the inbox after this batch when holds == 0. */
}

/* ---- the thread --------------------------------------------------------- */

static void
wk_main(void *arg)
{
    xd_worker_t *w = arg;
    int rc;

    wk_self = w;
    wk_on_loop = true;
    if (wk_init_fn != NULL)
        wk_init_fn(w, wk_hook_arg);
    uv_sem_post(&wk_ready);

    uv_run(&w->loop, UV_RUN_DEFAULT);
    wk_signal_drained(w); /* the loop ended: nothing of ours is in flight */

    /* Only unref'd handles can be left: the grace timer and whatever the
     * code above us unref'd and forgot. */
    XD_ASSERT(!w->inbox_open); /* the wake-up handle kept uv_run going */
    if (w->grace_armed) {
        uv_timer_stop(&w->grace);
        uv_close((uv_handle_t *)&w->grace, NULL);
    }
    wk_close_leftovers(w);
    while (uv_run(&w->loop, UV_RUN_DEFAULT) != 0)
        ;
    rc = uv_loop_close(&w->loop);
    if (rc != 0)
        XD_LOG(&w->log, XD_CRIT, "loop close failed", "err=%s", uv_err_name(rc));
    XD_ASSERT(rc == 0);
    wk_self = NULL;
    wk_on_loop = false;
}

/* Initialises one worker's loop and inbox (not its thread). */
static int
wk_create(unsigned index, xd_worker_t **out)
{
    xd_worker_t *w = xd_new(xd_worker_t);
    int rc;

    w->index = index;
    xd_log_ctx(&w->log, NULL, "worker=%u", index);
    rc = uv_loop_init(&w->loop);
    if (rc != 0) {
        xd_free(w);
        return rc;
    }
    rc = xd_inbox_init(&w->inbox, &w->loop, wk_inbox_cb);
    if (rc != 0) {
        uv_loop_close(&w->loop);
        xd_free(w);
        return rc;
    }
    w->inbox.data = w;
    w->inbox_open = true;
    atomic_init(&w->stop_requested, false);
    *out = w;
    return 0;
}

/* Frees a worker whose thread never ran. */
static void
wk_destroy_unstarted(xd_worker_t *w)
{
    xd_inbox_close_handle(&w->inbox);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    XD_ASSERT(uv_loop_close(&w->loop) == 0);
    xd_inbox_discard(&w->inbox);
    xd_free(w);
}

/* ---- public ------------------------------------------------------------- */

int
xd_workers_start(unsigned n, xd_worker_fn init, xd_worker_fn on_stop, void *arg)
{
    unsigned i, started = 0;
    int rc = 0;

    if (n == 0)
        return XD_EINVAL;
    if (wk_all != NULL)
        return XD_EEXIST;
    if (uv_sem_init(&wk_ready, 0) != 0)
        return XD_EINTERNAL;
    static bool drain_sync;
    if (!drain_sync) {
        if (uv_mutex_init(&wk_drain_mu) != 0 || uv_cond_init(&wk_drain_cv) != 0)
            return XD_EINTERNAL;
        drain_sync = true;
    }
    wk_drained = 0;
    wk_init_fn = init;
    wk_stop_fn = on_stop;
    wk_hook_arg = arg;
    wk_all = xd_calloc(n, sizeof *wk_all);
    for (i = 0; i < n && rc == 0; i++)
        rc = wk_create(i, &wk_all[i]);
    if (rc != 0) {
        for (i = 0; i < n; i++)
            if (wk_all[i] != NULL)
                wk_destroy_unstarted(wk_all[i]);
        goto fail;
    }
    wk_count = n;
    for (i = 0; i < n; i++) {
        rc = uv_thread_create(&wk_all[i]->thread, wk_main, wk_all[i]);
        if (rc != 0)
            break;
        wk_all[i]->thread_started = true;
        started++;
    }
    for (i = 0; i < started; i++)
        uv_sem_wait(&wk_ready);
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "worker start failed", "err=%s", uv_err_name(rc));
        xd_workers_stop();
        xd_workers_join();
        return rc;
    }
    XD_LOG(NULL, XD_INFO, "workers started", "count=%u", n);
    return 0;

fail:
    xd_free(wk_all);
    wk_all = NULL;
    wk_count = 0;
    uv_sem_destroy(&wk_ready);
    return rc;
}

void
xd_workers_set_drain(xd_worker_fn on_drain, uint64_t timeout_ms)
{
    wk_drain_fn = on_drain;
    wk_drain_ms = timeout_ms;
}

bool
xd_workers_wait_drained(uint64_t timeout_ms)
{
    XD_ASSERT(wk_self == NULL);
    if (wk_drain_fn == NULL || wk_all == NULL)
        return true;
    unsigned want = 0;
    for (unsigned i = 0; i < wk_count; i++)
        if (wk_all[i]->thread_started)
            want++;
    uint64_t deadline = uv_hrtime() + timeout_ms * 1000000ull;
    bool ok = true;
    uv_mutex_lock(&wk_drain_mu);
    while (wk_drained < want) {
        uint64_t now = uv_hrtime();
        if (now >= deadline || uv_cond_timedwait(&wk_drain_cv, &wk_drain_mu, deadline - now) != 0) {
            ok = wk_drained >= want;
            break;
        }
    }
    uv_mutex_unlock(&wk_drain_mu);
    return ok;
}

void
xd_workers_stop(void)
{
    for (unsigned i = 0; i < wk_count; i++) {
        xd_worker_t *w = wk_all[i];
        if (!w->thread_started)
            continue;
        if (!atomic_exchange(&w->stop_requested, true))
            (void)xd_inbox_push(&w->inbox, wk_stop_msg, NULL);
    }
}

void
xd_workers_join(void)
{
    if (wk_all == NULL)
        return;
    XD_ASSERT(wk_self == NULL); /* a worker cannot join itself */
    for (unsigned i = 0; i < wk_count; i++) {
        xd_worker_t *w = wk_all[i];
        if (w->thread_started)
            uv_thread_join(&w->thread);
        else
            wk_destroy_unstarted(w);
    }
    for (unsigned i = 0; i < wk_count; i++) {
        if (wk_all[i]->thread_started) {
            size_t lost = xd_inbox_discard(&wk_all[i]->inbox);
            XD_ASSERT(lost == 0); /* the final drain runs every accepted message */
            xd_free(wk_all[i]);
        }
    }
    xd_free(wk_all);
    wk_all = NULL;
    wk_count = 0;
    uv_sem_destroy(&wk_ready);
}

void
xd_workers_set_grace_ms(uint64_t ms)
{
    atomic_store(&wk_grace_ms, ms);
}

unsigned
xd_workers_count(void)
{
    return wk_count;
}

xd_worker_t *
xd_worker_get(unsigned index)
{
    return index < wk_count ? wk_all[index] : NULL;
}

xd_worker_t *
xd_worker_self(void)
{
    return wk_self;
}

unsigned
xd_worker_index(const xd_worker_t *w)
{
    return w->index;
}

uv_loop_t *
xd_worker_loop(xd_worker_t *w)
{
    return &w->loop;
}

void *
xd_worker_data(xd_worker_t *w)
{
    return w->data;
}

void
xd_worker_set_data(xd_worker_t *w, void *data)
{
    w->data = data;
}

int
xd_worker_post(xd_worker_t *w, xd_worker_fn fn, void *arg)
{
    XD_ASSERT(w != NULL && fn != NULL);
    return xd_inbox_push(&w->inbox, fn, arg);
}

int
xd_worker_post_msg(xd_worker_t *w, xd_worker_msg_t *m, xd_worker_fn fn, void *arg)
{
    XD_ASSERT(w != NULL && fn != NULL && m != NULL);
    m->embedded = true;
    return xd_inbox_push_msg(&w->inbox, m, fn, arg);
}

int
xd_worker_hold(xd_worker_t *w)
{
    XD_DEBUG_ASSERT(w == wk_self);
    if (!w->inbox_open)
        return XD_ECLOSED;
    w->holds++;
    return 0;
}

void
xd_worker_unhold(xd_worker_t *w)
{
    XD_DEBUG_ASSERT(w == wk_self);
    XD_ASSERT(w->holds > 0);
    w->holds--;
    /* wk_inbox_cb re-checks the stop condition after this message. */
}

bool
xd_on_loop(void)
{
    return wk_on_loop;
}

void
xd_mark_loop_thread(bool on)
{
    wk_on_loop = on;
}

/* ---- timers ------------------------------------------------------------- */

static void
wk_timer_cb(uv_timer_t *h)
{
    xd_timer_t *t = h->data;
    t->fn(t, t->arg);
}

xd_timer_t *
xd_timer_new(xd_worker_t *w, xd_timer_handler fn, void *arg)
{
    XD_ASSERT(w != NULL && fn != NULL);
    XD_DEBUG_ASSERT(w == wk_self);
    xd_timer_t *t = xd_new(xd_timer_t);
    XD_ASSERT(uv_timer_init(&w->loop, &t->h) == 0);
    t->h.data = t;
    t->w = w;
    t->fn = fn;
    t->arg = arg;
    t->next = w->timers;
    if (w->timers != NULL)
        w->timers->prev = t;
    w->timers = t;
    return t;
}

void
xd_timer_start(xd_timer_t *t, uint64_t timeout_ms, uint64_t repeat_ms)
{
    XD_DEBUG_ASSERT(t->w == wk_self);
    XD_ASSERT(uv_timer_start(&t->h, wk_timer_cb, timeout_ms, repeat_ms) == 0);
}

void
xd_timer_stop(xd_timer_t *t)
{
    XD_DEBUG_ASSERT(t->w == wk_self);
    uv_timer_stop(&t->h);
}

void
xd_timer_free(xd_timer_t *t)
{
    if (t == NULL)
        return;
    XD_DEBUG_ASSERT(t->w == wk_self);
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        t->w->timers = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    uv_timer_stop(&t->h); /* the callback cannot run after this */
    uv_close((uv_handle_t *)&t->h, wk_timer_close_cb);
}

/* ---- the order of a stream's input ------------------------------------- */

void
xd_input_set_handlers(xd_input_hold_fn hold, xd_input_release_fn release,
                      xd_input_charge_fn charge)
{
    wk_in_hold = hold;
    wk_in_release = release;
    wk_in_charge = charge;
}

uint64_t
xd_input_enter(uint64_t id)
{
    uint64_t prev = wk_input;
    wk_input = id;
    return prev;
}

void
xd_input_leave(uint64_t prev)
{
    wk_input = prev;
}

/* A hold or a release of stream `id`, posted to its worker. */
typedef struct wk_stream_msg {
    xd_worker_msg_t m; /* first: the inbox node */
    uint64_t id;
} wk_stream_msg_t;

static void
wk_hold_msg(xd_worker_t *w, void *arg)
{
    wk_stream_msg_t *h = arg;
    (void)wk_in_hold(w, h->id); /* a stream that has gone ignores the release too */
    xd_free(h);
}

xd_input_ref_t
xd_input_lend(xd_input_ref_t held)
{
    xd_input_ref_t prev = wk_lent;
    wk_lent = held;
    return prev;
}

void
xd_input_unlend(xd_input_ref_t prev)
{
    wk_lent = prev;
}

/* A further hold of the lent stream: on its own worker at once; on another
 * one by a message, which arrives there before the release of the lender's
 * hold (posted later from this thread: a worker's messages from one thread
 * run in the order posted), so the stream never goes on in between. */
static xd_input_ref_t
wk_hold_lent(void)
{
    xd_input_ref_t ref = wk_lent, none = { 0, 0 };
    if (ref.worker >= wk_count)
        return none;
    if (wk_self->index == ref.worker)
        return wk_in_hold(wk_self, ref.id) ? ref : none;
    wk_stream_msg_t *h = xd_new(wk_stream_msg_t);
    h->id = ref.id;
    if (xd_worker_post_msg(wk_all[ref.worker], &h->m, wk_hold_msg, h) != 0) {
        xd_free(h);
        return none;
    }
    return ref;
}

xd_input_ref_t
xd_input_hold(void)
{
    xd_input_ref_t ref = { 0, 0 };
    if (wk_self != NULL && wk_input == 0 && wk_lent.id != 0 && wk_in_hold != NULL)
        return wk_hold_lent();
    if (wk_self == NULL || wk_input == 0 || wk_in_hold == NULL)
        return ref;
    if (!wk_in_hold(wk_self, wk_input))
        return ref;
    ref.id = wk_input;
    ref.worker = wk_self->index;
    return ref;
}

xd_input_ref_t
xd_input_current(void)
{
    xd_input_ref_t ref = { 0, 0 };
    if (wk_self != NULL && wk_input == 0 && wk_lent.id != 0)
        return wk_lent;
    if (wk_self == NULL || wk_input == 0)
        return ref;
    ref.id = wk_input;
    ref.worker = wk_self->index;
    return ref;
}

/* On a pool thread the job's stream is lent by pool.c around its work
 * (wk_self is NULL there: xd_input_current and xd_input_hold answer {0}). */
xd_input_ref_t
xd_input_job(void)
{
    return wk_self == NULL ? wk_lent : xd_input_current();
}

static void
wk_release_msg(xd_worker_t *w, void *arg)
{
    wk_stream_msg_t *r = arg;
    wk_in_release(w, r->id);
    xd_free(r);
}

void
xd_input_release(xd_input_ref_t ref)
{
    if (ref.id == 0 || wk_in_release == NULL || ref.worker >= wk_count)
        return;
    if (wk_self != NULL && wk_self->index == ref.worker) {
        wk_in_release(wk_self, ref.id);
        return;
    }
    wk_stream_msg_t *r = xd_new(wk_stream_msg_t);
    r->id = ref.id;
    if (xd_worker_post_msg(wk_all[ref.worker], &r->m, wk_release_msg, r) != 0)
        xd_free(r); /* the worker has stopped: its streams are gone */
}

typedef struct wk_charge_msg {
    xd_worker_msg_t m; /* first: the inbox node */
    uint64_t id;       /* the stream */
    size_t bytes;      /* what it is billed */
} wk_charge_msg_t;

static void
wk_charge_msg(xd_worker_t *w, void *arg)
{
    wk_charge_msg_t *r = arg;
    wk_in_charge(w, r->id, r->bytes);
    xd_free(r);
}

void
xd_input_charge(xd_input_ref_t ref, size_t bytes)
{
    if (ref.id == 0 || bytes == 0 || wk_in_charge == NULL || ref.worker >= wk_count)
        return;
    if (wk_self != NULL && wk_self->index == ref.worker) {
        wk_in_charge(wk_self, ref.id, bytes);
        return;
    }
    wk_charge_msg_t *r = xd_new(wk_charge_msg_t);
    r->id = ref.id;
    r->bytes = bytes;
    if (xd_worker_post_msg(wk_all[ref.worker], &r->m, wk_charge_msg, r) != 0)
        xd_free(r); /* the worker has stopped: its streams are gone */
}
