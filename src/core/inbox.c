/*
 * inbox.c — the MPSC message queue of a worker (see inbox.h for the design,
 * the state diagram and who may touch what).
 *
 * Memory orders, in brief:
 *  - push: msg->next = NULL (relaxed, not yet published); prev = exchange(head,
 *    msg, acq_rel); store(prev->next, msg, release).  The release store is what
 *    publishes fn/arg to the consumer's acquire load of ->next.
 *  - wake_pending and the closed/posters handshake use seq_cst, because both
 *    are "store one variable, then load another" protocols.
 * Each message costs one xd_malloc (producer) and one xd_free (consumer),
 * unless the producer embeds the node in its own message struct
 * (xd_inbox_push_msg); bench/bench_inbox.c measures the throughput.
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <unistd.h>

#include "core/inbox.h"
#if XD_INBOX_EVENTFD
#include <sys/eventfd.h>
#endif
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"

#if XD_INBOX_EVENTFD
static void
inbox_poll_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    xd_inbox_t *q = h->data;
    uint64_t v;
    /* Reset the counter first: a post after this read writes again. */
    while (read(q->efd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    q->cb(q);
}

static void
inbox_closed_cb(uv_handle_t *h)
{
    xd_inbox_t *q = h->data;
    close(q->efd);
    q->efd = -1;
}
#else
static void
inbox_async_cb(uv_async_t *h)
{
    xd_inbox_t *q = h->data;
    q->cb(q);
}
#endif

int
xd_inbox_init(xd_inbox_t *q, uv_loop_t *loop, xd_inbox_wake_cb cb)
{
    atomic_init(&q->stub.next, NULL);
    q->stub.fn = NULL;
    q->stub.arg = NULL;
    q->stub.embedded = true;
    atomic_init(&q->head, &q->stub);
    q->tail = &q->stub;
    atomic_init(&q->wake_pending, false);
    atomic_init(&q->closed, false);
    atomic_init(&q->posters, 0u);
    q->cb = cb;
    q->data = NULL;
#if XD_INBOX_EVENTFD
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0)
        return uv_translate_sys_error(errno);
    int rc = uv_poll_init(loop, &q->poll, q->efd);
    if (rc == 0)
        rc = uv_poll_start(&q->poll, UV_READABLE, inbox_poll_cb);
    if (rc != 0) {
        close(q->efd);
        return rc;
    }
    q->poll.data = q;
    return 0;
#else
    int rc = uv_async_init(loop, &q->async, inbox_async_cb);
    q->async.data = q;
    return rc;
#endif
}

uv_handle_t *
xd_inbox_handle(xd_inbox_t *q)
{
#if XD_INBOX_EVENTFD
    return (uv_handle_t *)&q->poll;
#else
    return (uv_handle_t *)&q->async;
#endif
}

void
xd_inbox_close_handle(xd_inbox_t *q)
{
#if XD_INBOX_EVENTFD
    uv_close((uv_handle_t *)&q->poll, inbox_closed_cb);
#else
    uv_close((uv_handle_t *)&q->async, NULL);
#endif
}

/* Links msg at the head (Vyukov push).  Any thread. */
static void
inbox_link(xd_inbox_t *q, xd_inbox_msg_t *msg)
{
    atomic_store_explicit(&msg->next, NULL, memory_order_relaxed);
    xd_inbox_msg_t *prev = atomic_exchange_explicit(&q->head, msg, memory_order_acq_rel);
    /* Between the exchange and this store the consumer sees a gap and waits. */
    atomic_store_explicit(&prev->next, msg, memory_order_release);
}

/* Sends the wake-up unless one is already pending. */
static void
inbox_signal(xd_inbox_t *q)
{
    if (atomic_exchange_explicit(&q->wake_pending, true, memory_order_seq_cst))
        return;
#if XD_INBOX_EVENTFD
    uint64_t one = 1;
    /* EAGAIN only at a counter of 2^64-2: the consumer is awake anyway. */
    while (write(q->efd, &one, sizeof one) < 0 && errno == EINTR)
        ;
#else
    uv_async_send(&q->async);
#endif
}

int
xd_inbox_push_msg(xd_inbox_t *q, xd_inbox_msg_t *msg, xd_worker_fn fn, void *arg)
{
    XD_ASSERT(fn != NULL);
    atomic_fetch_add_explicit(&q->posters, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&q->closed, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit(&q->posters, 1, memory_order_release);
        return XD_ECLOSED;
    }
    msg->fn = fn;
    msg->arg = arg;
    inbox_link(q, msg);
    inbox_signal(q);
    atomic_fetch_sub_explicit(&q->posters, 1, memory_order_release);
    return 0;
}

int
xd_inbox_push(xd_inbox_t *q, xd_worker_fn fn, void *arg)
{
    xd_inbox_msg_t *msg = xd_malloc(sizeof *msg);
    msg->embedded = false;
    int rc = xd_inbox_push_msg(q, msg, fn, arg);
    if (rc != 0)
        xd_free(msg);
    return rc;
}

/* Vyukov pop: the oldest message, or NULL when the queue is empty or a
 * producer is between its two steps.  Consumer only. */
static xd_inbox_msg_t *
inbox_pop(xd_inbox_t *q)
{
    xd_inbox_msg_t *tail = q->tail;
    xd_inbox_msg_t *next = atomic_load_explicit(&tail->next, memory_order_acquire);

    if (tail == &q->stub) {
        if (next == NULL)
            return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
        return NULL; /* a producer has swapped head but not linked yet */
    /* tail is the last message: put the stub behind it so it can be taken. */
    inbox_link(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

void
xd_inbox_begin_drain(xd_inbox_t *q)
{
    /* An exchange, not a store: it reads the latest producer's write, so every
     * message linked before a producer saw "pending" is visible below. */
    (void)atomic_exchange_explicit(&q->wake_pending, false, memory_order_seq_cst);
}

void
xd_inbox_wake(xd_inbox_t *q)
{
    inbox_signal(q);
}

size_t
xd_inbox_drain(xd_inbox_t *q, xd_worker_t *owner, size_t max)
{
    size_t n = 0;
    xd_inbox_msg_t *msg;

    while (n < max && (msg = inbox_pop(q)) != NULL) {
        xd_worker_fn fn = msg->fn;
        void *arg = msg->arg;
        if (!msg->embedded)
            xd_free(msg); /* an embedded node is fn's to free, with its struct */
        fn(owner, arg);
        n++;
    }
    if (n == max) {
        /* Maybe more: come back on the next loop iteration, after I/O. */
        xd_inbox_wake(q);
    }
    return n;
}

void
xd_inbox_close(xd_inbox_t *q)
{
    atomic_store_explicit(&q->closed, true, memory_order_seq_cst);
    while (atomic_load_explicit(&q->posters, memory_order_seq_cst) != 0)
        sched_yield();
}

bool
xd_inbox_is_closed(const xd_inbox_t *q)
{
    return atomic_load_explicit(&q->closed, memory_order_acquire);
}

size_t
xd_inbox_discard(xd_inbox_t *q)
{
    size_t n = 0;
    xd_inbox_msg_t *msg;

    while ((msg = inbox_pop(q)) != NULL) {
        if (!msg->embedded)
            xd_free(msg);
        n++;
    }
    return n;
}
