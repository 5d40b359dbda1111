/*
 * worker.h — the worker threads (DESIGN.md 2).
 *
 * xd_workers_start() runs N threads, each with its own libuv loop.  Every live
 * entity (a stream, a room) is owned by one worker; others reach it by
 * posting a message to the owner's inbox, a lock-free MPSC queue drained on
 * the owner loop after a uv_async wake-up.  Messages posted to one worker
 * from one thread run in the order they were posted.
 *
 * Lifecycle:  start → (init hook on each loop) → running → stop requested →
 * (stop hooks on each loop: close listeners and streams) → each loop closes
 * its remaining handles and exits → join.
 */
#ifndef XMPPD_CORE_WORKER_H
#define XMPPD_CORE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "xmppd/assert.h"

typedef struct xd_worker xd_worker_t;

/* A message or hook body; runs on the worker's loop thread. */
typedef void (*xd_worker_fn)(xd_worker_t *w, void *arg);

/* A message node.  xd_worker_post allocates one per message; a poster that
 * sends many messages of one kind embeds it in its own struct instead and
 * uses xd_worker_post_msg (no allocation; the node is the inbox's until
 * fn starts, and fn may then free the struct holding it).  Fields are the
 * inbox's. */
typedef struct xd_worker_msg {
    _Atomic(struct xd_worker_msg *) next; /* newer message, or NULL */
    xd_worker_fn fn;                      /* body; NULL only for the stub */
    void *arg;                            /* fn's argument, owned by fn */
    bool embedded;                        /* in the poster's struct: not freed by the inbox */
} xd_worker_msg_t;

/* Starts `n` workers (n >= 1).  `init` runs first on each new loop.
 * `on_stop` runs on each loop when a stop is requested; it must close what
 * it opened (listeners, streams) so the loop can end.  Returns 0 or an error;
 * on error no worker is left running. */
int xd_workers_start(unsigned n, xd_worker_fn init, xd_worker_fn on_stop, void *arg);

/* Asks every worker to stop (any thread, idempotent).  Returns at once. */
void xd_workers_stop(void);

/* Waits until every worker thread has exited and frees them.  Call it after
 * xd_workers_stop() (from this or any thread, or from a worker itself); every
 * loop is closed with uv_loop_close() == 0 before its worker is freed.
 *
 * Shutdown order with the blocking pool: xd_workers_stop() → each loop runs
 * on_stop and closes its handles, but keeps its inbox open while it still
 * waits for pool results (xd_worker_hold) → xd_pool_stop() lets running jobs
 * finish and cancels queued ones; every done callback runs on its loop →
 * the inboxes close, the loops end → xd_workers_join(). */
void xd_workers_join(void);

/* Drains before stopping: with `on_drain` set, a stop first runs on_drain
 * on each loop (stop taking new input: listeners, streams' reading) and
 * lets the work in flight finish (pool results, holds of xd_worker_hold),
 * for at most timeout_ms, before on_stop closes the streams.  Call before
 * xd_workers_start. */
void xd_workers_set_drain(xd_worker_fn on_drain, uint64_t timeout_ms);

/* Waits (off-loop) until every worker has drained, closed its streams and
 * seen the pool work their closing started come back (or its grace period
 * passed), or timeout_ms passed: the blocking pool and the auth backends
 * must keep running until then.  Returns true when all drained. */
bool xd_workers_wait_drained(uint64_t timeout_ms);

/* How long a stopping loop waits for its handles to close before it logs
 * each leftover handle and closes it itself (default 5000 ms).  Call before
 * xd_workers_stop(). */
void xd_workers_set_grace_ms(uint64_t ms);

unsigned xd_workers_count(void);
xd_worker_t *xd_worker_get(unsigned index);

/* The calling thread's worker, or NULL when not on a worker loop. */
xd_worker_t *xd_worker_self(void);
unsigned xd_worker_index(const xd_worker_t *w);
uv_loop_t *xd_worker_loop(xd_worker_t *w);

/* Per-worker slot for the code above the core (c2s listener state etc). */
void *xd_worker_data(xd_worker_t *w);
void xd_worker_set_data(xd_worker_t *w, void *data);

/* Queues fn(w, arg) to run on w's loop.  Any thread.  Returns 0, or
 * XD_ECLOSED when w has stopped (fn is then not called and arg stays the
 * caller's). */
int xd_worker_post(xd_worker_t *w, xd_worker_fn fn, void *arg);

/* As xd_worker_post, with the caller's node m (see xd_worker_msg_t).  On
 * XD_ECLOSED m and arg stay the caller's. */
int xd_worker_post_msg(xd_worker_t *w, xd_worker_msg_t *m, xd_worker_fn fn, void *arg);

/* Keeps w's inbox open across a stop until the matching xd_worker_unhold:
 * for work in flight whose result will be posted back (the pool uses it).
 * Owner loop only.  Returns 0, or XD_ECLOSED when w's inbox has closed. */
int xd_worker_hold(xd_worker_t *w);
void xd_worker_unhold(xd_worker_t *w);

/* ---- the order of a stream's input (xmppd/input.h) ----
 *
 * The stream layer names the stream whose element is being handled on this
 * thread (enter/leave nest: leave restores what enter returned) and gives
 * the functions that pause and resume a stream's input by id on its owner
 * worker (hold returns false when there is no such stream), and the one
 * that bills a stream's shaper for bytes sent on its behalf (charge: a
 * stream that is gone, or has no shaper, ignores it). */
typedef bool (*xd_input_hold_fn)(xd_worker_t *w, uint64_t id);
typedef void (*xd_input_release_fn)(xd_worker_t *w, uint64_t id);
typedef void (*xd_input_charge_fn)(xd_worker_t *w, uint64_t id, size_t bytes);
void xd_input_set_handlers(xd_input_hold_fn hold, xd_input_release_fn release,
                           xd_input_charge_fn charge);
uint64_t xd_input_enter(uint64_t id);
void xd_input_leave(uint64_t prev);

/* True when the calling thread runs an event loop (a worker or the main loop). */
bool xd_on_loop(void);

/* Marks the calling thread as a loop thread (the main thread's loop). */
void xd_mark_loop_thread(bool on);

/* Blocking calls assert that they do not run on a loop (DESIGN.md 2). */
#define xd_assert_off_loop() XD_DEBUG_ASSERT(!xd_on_loop())

/* Timers on the calling worker's loop (thin and owner-only).  A timer is
 * freed with xd_timer_free, which stops it; the callback never runs after. */
typedef struct xd_timer xd_timer_t;
typedef void (*xd_timer_handler)(xd_timer_t *t, void *arg);
xd_timer_t *xd_timer_new(xd_worker_t *w, xd_timer_handler fn, void *arg);
void xd_timer_start(xd_timer_t *t, uint64_t timeout_ms, uint64_t repeat_ms);
void xd_timer_stop(xd_timer_t *t);
void xd_timer_free(xd_timer_t *t);

#endif
