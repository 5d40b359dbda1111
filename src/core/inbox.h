/*
 * inbox.h — a worker's inbox: a lock-free multi-producer, single-consumer
 * queue of {fn, arg} messages with a uv_async_t wake-up (DESIGN.md 2).
 *
 * Core-internal (src/core only; code above the core uses xd_worker_post).
 *
 * The queue is Dmitry Vyukov's intrusive node-based MPSC queue: producers
 * swap themselves into `head` with one atomic exchange and then link the old
 * head to the new node; the single consumer walks from `tail`.  A push is
 * wait-free; a pop may see a producer between its two steps and then reports
 * "nothing yet" (that producer's wake-up brings the consumer back).
 *
 * Wake-ups: a producer signals only when it flips `wake_pending` from false
 * to true; the consumer flips it back (atomic exchange) before it drains, so
 * a burst of posts costs one syscall and no post is missed.  The signal is a
 * write to an eventfd watched by a uv_poll_t on Linux, a uv_async_t
 * elsewhere: libuv's async handle makes the woken loop spin (and
 * sched_yield) until the sender's uv_async_send has returned, which on a
 * loaded machine costs more than the wake-up itself (bench/msgpath.py,
 * docs/performance.md).
 *
 * Closing: producers announce themselves in `posters` before they test
 * `closed`; xd_inbox_close sets `closed` and then waits for `posters` to reach
 * zero (Dekker-style, sequentially consistent), so after it returns nobody
 * touches the async handle again and every accepted message is in the queue.
 *
 *   open ──xd_inbox_close──► closed (push → XD_ECLOSED) ──final drain, uv_close──► gone
 *
 * Who may touch what: head, wake_pending, posters, closed, and the eventfd's
 * write side — any thread, via atomics and write(2); tail, stub, the wake-up
 * handle — the consumer (owner loop) only.
 */
#ifndef XMPPD_CORE_INBOX_H
#define XMPPD_CORE_INBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/worker.h"

#if defined(__linux__)
#define XD_INBOX_EVENTFD 1
#else
#define XD_INBOX_EVENTFD 0
#endif

struct xd_inbox;
typedef void (*xd_inbox_wake_cb)(struct xd_inbox *q);

/* One message; allocated by the producer and freed by the consumer before
 * fn, or embedded in the producer's struct (worker.h) and left to fn. */
typedef xd_worker_msg_t xd_inbox_msg_t;

typedef struct xd_inbox {
    _Atomic(xd_inbox_msg_t *) head;      /* newest message; producers swap here */
    char pad_[64 - sizeof(void *)];      /* keep head and the consumer's side apart */
    xd_inbox_msg_t *tail;                /* oldest message; consumer only */
    xd_inbox_msg_t stub;                 /* placeholder so the list is never empty */
    _Atomic bool wake_pending;           /* an async send is on its way */
    _Atomic bool closed;                 /* pushes are refused */
    _Atomic unsigned posters;            /* producers inside xd_inbox_push */
#if XD_INBOX_EVENTFD
    uv_poll_t poll;                      /* watches efd; consumer loop's handle */
    int efd;                             /* the eventfd producers write to */
#else
    uv_async_t async;                    /* the wake-up; consumer loop's handle */
#endif
    xd_inbox_wake_cb cb;                 /* runs on the loop when woken */
    void *data;                          /* the caller's */
} xd_inbox_t;

/* Initialises q on `loop` (call on the loop's thread, or before it starts);
 * `cb` runs on the loop when the inbox is woken; q->data is free for the
 * caller.  Returns 0 or a negative libuv code. */
int xd_inbox_init(xd_inbox_t *q, uv_loop_t *loop, xd_inbox_wake_cb cb);

/* The wake-up handle (to recognise it in uv_walk). */
uv_handle_t *xd_inbox_handle(xd_inbox_t *q);

/* Consumer: closes the wake-up handle (after xd_inbox_close and the final
 * drain, or for an inbox whose loop never ran); q must stay in place until
 * the loop has run the close. */
void xd_inbox_close_handle(xd_inbox_t *q);

/* Any thread: queues fn(owner, arg) and wakes the consumer if it is idle.
 * Returns 0 or XD_ECLOSED (then nothing was queued). */
int xd_inbox_push(xd_inbox_t *q, xd_worker_fn fn, void *arg);

/* As xd_inbox_push with the caller's embedded node (msg->embedded set). */
int xd_inbox_push_msg(xd_inbox_t *q, xd_inbox_msg_t *msg, xd_worker_fn fn, void *arg);

/* Consumer: clears the wake-pending flag; call first in the async callback,
 * before draining. */
void xd_inbox_begin_drain(xd_inbox_t *q);

/* Consumer: runs up to `max` queued messages as fn(owner, arg) in FIFO order
 * and returns how many ran.  When it stops at `max` with more waiting it
 * wakes itself again, so one busy producer cannot starve the loop. */
size_t xd_inbox_drain(xd_inbox_t *q, xd_worker_t *owner, size_t max);

/* Consumer: wakes the consumer's own loop again (idempotent). */
void xd_inbox_wake(xd_inbox_t *q);

/* Consumer: refuses further pushes and waits for producers already inside
 * xd_inbox_push to finish (a few instructions each).  The caller then drains
 * what is left and calls xd_inbox_close_handle. */
void xd_inbox_close(xd_inbox_t *q);

/* True once xd_inbox_close has run.  Any thread. */
bool xd_inbox_is_closed(const xd_inbox_t *q);

/* Consumer, after the loop is done: frees messages still queued without
 * running them (there are none after a final drain); returns how many. */
size_t xd_inbox_discard(xd_inbox_t *q);

#endif
