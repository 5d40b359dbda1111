/*
 * pool.h — the bounded blocking pool (DESIGN.md 2).
 *
 * Work that may block (storage, password hashing, external auth) runs on a
 * fixed set of pool threads.  The queue is bounded: when it is full,
 * xd_pool_submit() fails at once with XD_EFULL and the caller answers with
 * `wait`/resource-constraint.  The completion callback runs on the worker
 * loop that submitted the work, through that worker's inbox.
 */
#ifndef XMPPD_CORE_POOL_H
#define XMPPD_CORE_POOL_H

/* Runs on a pool thread; may block. */
typedef void (*xd_pool_work_fn)(void *arg);

/* Runs on the submitting worker's loop, exactly once.  status is 0, or
 * XD_ECANCELED when the pool shut down before `work` ran (work is then not
 * called). */
typedef void (*xd_pool_done_cb)(void *arg, int status);

/* Starts `threads` pool threads with room for `max_queued` waiting jobs. */
int xd_pool_start(unsigned threads, unsigned max_queued);

/* Queues work.  Must be called on a worker loop thread when done != NULL.
 * Returns 0, XD_EFULL when the queue is full, XD_ECLOSED after shutdown; on
 * error neither callback is called. */
int xd_pool_submit(xd_pool_work_fn work, xd_pool_done_cb done, void *arg);

/* Jobs waiting + running, for stats. */
unsigned xd_pool_pending(void);

/* Finishes running jobs, cancels waiting ones, joins the threads. */
void xd_pool_stop(void);

#endif
