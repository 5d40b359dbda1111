/*
 * pool.c — the bounded blocking pool (pool.h, DESIGN.md 2).  Sits in src/core
 * above worker.c: results travel back to the submitting worker through its
 * inbox.
 *
 * A fixed set of pool threads takes jobs from one FIFO guarded by a mutex and
 * a condition variable (pool jobs block anyway; a lock-free queue would buy
 * nothing here).  The FIFO holds at most max_queued waiting jobs; running
 * jobs do not count against that bound.
 *
 * Invariants:
 *  - every field of `pl` is read and written under pl.mu, except `threads`
 *    and `nthreads`, which only start and stop touch;
 *  - a job with a done callback holds its worker (xd_worker_hold) from
 *    submit until the done message has run on that worker's loop, so the
 *    worker's inbox stays open for the result even while it stops;
 *  - done runs exactly once per accepted job: with 0 after work ran, or with
 *    XD_ECANCELED when xd_pool_stop took the job off the queue unrun;
 *  - a job with a done callback submitted while a stream's stanza is handled
 *    holds that stream (xmppd/input.h) until done has run: the stream's next
 *    stanza waits for what this one started (RFC 6120 10.1).
 *
 * Shutdown order (see worker.h): xd_workers_stop → xd_pool_stop →
 * xd_workers_join.  Pool threads are not loop threads: xd_on_loop() is false
 * there, so blocking calls may assert it.
 */
#include <stdatomic.h>
#include <stdbool.h>

#include <uv.h>

#include "core/pool.h"
#include "core/worker.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/input.h"
#include "xmppd/log.h"

typedef struct pool_job {
    xd_pool_work_fn work;          /* runs on a pool thread */
    xd_pool_done_cb done;          /* runs on w's loop; may be NULL */
    void *arg;                     /* both callbacks' argument */
    xd_worker_t *w;                /* submitting worker; NULL when done == NULL */
    xd_input_ref_t in;             /* the stream held until done has run (input.h) */
    int status;                    /* 0 or XD_ECANCELED, for done */
    struct pool_job *next;         /* FIFO link */
} pool_job_t;

static struct {
    uv_mutex_t mu;                 /* guards everything below but threads */
    uv_cond_t cv;                  /* signalled on submit and stop */
    pool_job_t *head, *tail;       /* waiting jobs, oldest first */
    unsigned queued;               /* length of the FIFO */
    unsigned running;              /* jobs inside work() */
    unsigned max_queued;           /* bound on `queued` */
    bool open;                     /* accepting jobs */
    bool stopping;                 /* threads should exit when the FIFO is empty */
    uv_thread_t *threads;          /* start/stop only */
    unsigned nthreads;             /* start/stop only */
} pl;

static _Atomic bool pl_inited;     /* mu and cv exist */

/* Runs on the submitting worker's loop. */
static void
pool_done_msg(xd_worker_t *w, void *arg)
{
    pool_job_t *job = arg;

    /* done runs as part of the stream's stanza: what it sends off the loop
     * in turn holds the stream too (xmppd/input.h). */
    uint64_t prev = xd_input_enter(job->in.id);
    job->done(job->arg, job->status);
    xd_input_leave(prev);
    xd_worker_unhold(w);
    xd_input_release(job->in); /* after done: what it routes comes first */
    xd_free(job);
}

/* Sends a finished or canceled job's result home; any thread. */
static void
pool_deliver(pool_job_t *job)
{
    if (job->done == NULL) {
        xd_free(job);
        return;
    }
    int rc = xd_worker_post(job->w, pool_done_msg, job);
    if (rc != 0) {
        /* Only when the worker's stop deadline forced its inbox shut. */
        XD_LOG(NULL, XD_ERROR, "pool result dropped", "worker=%u err=%s",
               xd_worker_index(job->w), xd_err_name(rc));
        xd_free(job);
    }
}

static void
pool_thread(void *unused)
{
    (void)unused;
    xd_mark_loop_thread(false);
    uv_mutex_lock(&pl.mu);
    for (;;) {
        while (pl.head == NULL && !pl.stopping)
            uv_cond_wait(&pl.cv, &pl.mu);
        pool_job_t *job = pl.head;
        if (job == NULL)
            break; /* stopping and nothing left */
        pl.head = job->next;
        if (pl.head == NULL)
            pl.tail = NULL;
        pl.queued--;
        pl.running++;
        uv_mutex_unlock(&pl.mu);

        xd_input_ref_t lent = xd_input_lend(job->in); /* xd_input_job */
        job->work(job->arg);
        xd_input_unlend(lent);
        job->status = 0;
        pool_deliver(job);

        uv_mutex_lock(&pl.mu);
        pl.running--;
    }
    uv_mutex_unlock(&pl.mu);
}

int
xd_pool_start(unsigned threads, unsigned max_queued)
{
    if (threads == 0 || max_queued == 0)
        return XD_EINVAL;
    if (!atomic_load(&pl_inited)) {
        if (uv_mutex_init(&pl.mu) != 0)
            return XD_EINTERNAL;
        if (uv_cond_init(&pl.cv) != 0) {
            uv_mutex_destroy(&pl.mu);
            return XD_EINTERNAL;
        }
        atomic_store(&pl_inited, true);
    }
    uv_mutex_lock(&pl.mu);
    if (pl.open || pl.threads != NULL) {
        uv_mutex_unlock(&pl.mu);
        return XD_EEXIST;
    }
    pl.head = pl.tail = NULL;
    pl.queued = pl.running = 0;
    pl.max_queued = max_queued;
    pl.stopping = false;
    pl.threads = xd_calloc(threads, sizeof *pl.threads);
    pl.nthreads = 0;
    uv_mutex_unlock(&pl.mu);

    for (unsigned i = 0; i < threads; i++) {
        int rc = uv_thread_create(&pl.threads[i], pool_thread, NULL);
        if (rc != 0) {
            XD_LOG(NULL, XD_ERROR, "pool start failed", "err=%s", uv_err_name(rc));
            xd_pool_stop();
            return rc;
        }
        pl.nthreads++;
    }
    uv_mutex_lock(&pl.mu);
    pl.open = true;
    uv_mutex_unlock(&pl.mu);
    return 0;
}

int
xd_pool_submit(xd_pool_work_fn work, xd_pool_done_cb done, void *arg)
{
    xd_worker_t *w = NULL;
    xd_input_ref_t in = { 0, 0 };
    int rc;

    XD_ASSERT(work != NULL);
    if (!atomic_load(&pl_inited))
        return XD_ECLOSED;
    if (done != NULL) {
        w = xd_worker_self();
        if (XD_NEVER(w == NULL))
            return XD_EINVAL; /* done needs a loop to run on */
        rc = xd_worker_hold(w);
        if (rc != 0)
            return rc;
        in = xd_input_hold(); /* outside pl.mu: it calls into the stream layer */
    }

    uv_mutex_lock(&pl.mu);
    if (!pl.open)
        rc = XD_ECLOSED;
    else if (pl.queued >= pl.max_queued)
        rc = XD_EFULL;
    else
        rc = 0;
    if (rc == 0) {
        pool_job_t *job = xd_new(pool_job_t);
        job->work = work;
        job->done = done;
        job->arg = arg;
        job->w = w;
        job->in = in;
        if (pl.tail != NULL)
            pl.tail->next = job;
        else
            pl.head = job;
        pl.tail = job;
        pl.queued++;
        uv_cond_signal(&pl.cv);
    }
    uv_mutex_unlock(&pl.mu);

    if (rc != 0 && w != NULL) {
        xd_worker_unhold(w);
        xd_input_release(in);
    }
    return rc;
}

unsigned
xd_pool_pending(void)
{
    unsigned n;

    if (!atomic_load(&pl_inited))
        return 0;
    uv_mutex_lock(&pl.mu);
    n = pl.queued + pl.running;
    uv_mutex_unlock(&pl.mu);
    return n;
}

void
xd_pool_stop(void)
{
    pool_job_t *canceled;
    unsigned ncanceled = 0;

    if (!atomic_load(&pl_inited))
        return;
    uv_mutex_lock(&pl.mu);
    pl.open = false;
    pl.stopping = true;
    canceled = pl.head;
    pl.head = pl.tail = NULL;
    pl.queued = 0;
    uv_cond_broadcast(&pl.cv);
    uv_mutex_unlock(&pl.mu);

    while (canceled != NULL) {
        pool_job_t *job = canceled;
        canceled = job->next;
        job->status = XD_ECANCELED;
        ncanceled++;
        pool_deliver(job);
    }
    for (unsigned i = 0; i < pl.nthreads; i++)
        uv_thread_join(&pl.threads[i]);
    xd_free(pl.threads);
    uv_mutex_lock(&pl.mu);
    pl.threads = NULL;
    pl.nthreads = 0;
    uv_mutex_unlock(&pl.mu);
    if (ncanceled > 0)
        XD_LOG(NULL, XD_NOTICE, "pool stopped", "canceled=%u", ncanceled);
}
