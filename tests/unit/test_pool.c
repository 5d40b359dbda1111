/*
 * test_pool.c — unit tests for src/core/pool.c: results come back on the
 * submitting worker, the bound (XD_EFULL), cancel on stop (XD_ECANCELED),
 * xd_on_loop() false inside work, and the shutdown order with work in
 * flight while the workers stop.  Threaded: also run under ThreadSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "core/pool.h"
#include "core/worker.h"
#include "xmppd/err.h"
#include "xmppd/input.h"

enum { JOBS = 8 };

typedef struct {
    unsigned id;                /* job number */
    xd_worker_t *submitter;     /* worker that submitted it */
    _Atomic bool worked;        /* work ran */
    _Atomic bool work_on_loop;  /* xd_on_loop() inside work */
    _Atomic bool work_had_self; /* xd_worker_self() != NULL inside work */
    _Atomic int status;         /* done's status */
    _Atomic bool done_on_submitter; /* done ran on the submitting worker */
    _Atomic unsigned done_calls;    /* how often done ran */
} pt_job;

static pt_job pt_jobs[JOBS];
static _Atomic unsigned pt_done;     /* done callbacks so far */
static _Atomic unsigned pt_msgs;     /* helper messages run */
static uv_sem_t pt_running;          /* posted when a blocker starts */
static uv_sem_t pt_release;          /* a blocker waits on it */
static int pt_submit_rc[JOBS];       /* submit results, written on a worker */

static unsigned
wait_for(_Atomic unsigned *v, unsigned want, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited++) {
        if (atomic_load(v) >= want)
            return atomic_load(v);
        uv_sleep(1);
    }
    return atomic_load(v);
}

static int
pt_setup(void **state)
{
    (void)state;
    memset(pt_jobs, 0, sizeof pt_jobs);
    for (unsigned i = 0; i < JOBS; i++) {
        pt_jobs[i].id = i;
        atomic_store(&pt_jobs[i].status, 12345);
        pt_submit_rc[i] = 12345;
    }
    atomic_store(&pt_done, 0);
    atomic_store(&pt_msgs, 0);
    uv_sem_init(&pt_running, 0);
    uv_sem_init(&pt_release, 0);
    xd_workers_set_grace_ms(5000);
    return xd_workers_start(2, NULL, NULL, NULL);
}

static int
pt_teardown(void **state)
{
    (void)state;
    xd_workers_stop();
    xd_pool_stop();
    xd_workers_join();
    uv_sem_destroy(&pt_running);
    uv_sem_destroy(&pt_release);
    return 0;
}

static void
pt_work(void *arg)
{
    pt_job *j = arg;
    atomic_store(&j->work_on_loop, xd_on_loop());
    atomic_store(&j->work_had_self, xd_worker_self() != NULL);
    atomic_store(&j->worked, true);
}

static void
pt_block(void *arg)
{
    uv_sem_post(&pt_running);
    uv_sem_wait(&pt_release);
    pt_work(arg);
}

static void
pt_done_cb(void *arg, int status)
{
    pt_job *j = arg;
    atomic_store(&j->status, status);
    atomic_store(&j->done_on_submitter, xd_worker_self() == j->submitter && xd_on_loop());
    atomic_fetch_add(&j->done_calls, 1);
    atomic_fetch_add(&pt_done, 1);
}

/* Message: submits pt_jobs[first .. first+count) from this worker; the first
 * one blocks when arg's low bit says so. */
typedef struct {
    unsigned first, count;
    bool block_first;
} pt_batch;

static void
pt_submit_msg(xd_worker_t *w, void *arg)
{
    pt_batch *b = arg;
    for (unsigned i = b->first; i < b->first + b->count; i++) {
        pt_jobs[i].submitter = w;
        pt_submit_rc[i] = xd_pool_submit(i == b->first && b->block_first ? pt_block : pt_work,
                                         pt_done_cb, &pt_jobs[i]);
    }
    atomic_fetch_add(&pt_msgs, 1);
}

static void
test_pool__results_on_submitting_worker(void **state)
{
    (void)state;
    pt_batch b0 = { 0, 3, false }, b1 = { 3, 3, false };
    assert_int_equal(xd_pool_start(2, 16), 0);
    assert_int_equal(xd_worker_post(xd_worker_get(0), pt_submit_msg, &b0), 0);
    assert_int_equal(xd_worker_post(xd_worker_get(1), pt_submit_msg, &b1), 0);
    assert_int_equal(wait_for(&pt_done, 6, 30000), 6);
    assert_int_equal(wait_for(&pt_msgs, 2, 1000), 2);
    for (unsigned i = 0; i < 6; i++) {
        assert_int_equal(pt_submit_rc[i], 0);
        assert_ptr_equal(pt_jobs[i].submitter, xd_worker_get(i < 3 ? 0 : 1));
        assert_true(atomic_load(&pt_jobs[i].worked));
        assert_false(atomic_load(&pt_jobs[i].work_on_loop));  /* pool threads are not loops */
        assert_false(atomic_load(&pt_jobs[i].work_had_self));
        assert_int_equal(atomic_load(&pt_jobs[i].status), 0);
        assert_true(atomic_load(&pt_jobs[i].done_on_submitter));
        assert_int_equal(atomic_load(&pt_jobs[i].done_calls), 1);
    }
    /* A pool thread counts itself out of `running` just after it posted the
     * result, so the last done callback may run a moment before. */
    for (unsigned ms = 0; ms < 5000 && xd_pool_pending() != 0; ms++)
        uv_sleep(1);
    assert_int_equal(xd_pool_pending(), 0);
}

static void
test_pool__full_queue_fails_at_once(void **state)
{
    (void)state;
    pt_batch blocker = { 0, 1, true }, fill = { 1, 3, false };
    assert_int_equal(xd_pool_start(1, 2), 0);
    assert_int_equal(xd_worker_post(xd_worker_get(0), pt_submit_msg, &blocker), 0);
    uv_sem_wait(&pt_running); /* the only pool thread is now busy */
    assert_int_equal(xd_pool_pending(), 1);
    assert_int_equal(xd_worker_post(xd_worker_get(1), pt_submit_msg, &fill), 0);
    assert_int_equal(wait_for(&pt_msgs, 2, 30000), 2);
    assert_int_equal(pt_submit_rc[0], 0);
    assert_int_equal(pt_submit_rc[1], 0);
    assert_int_equal(pt_submit_rc[2], 0);
    assert_int_equal(pt_submit_rc[3], XD_EFULL);
    assert_int_equal(xd_pool_pending(), 3);
    uv_sem_post(&pt_release);
    assert_int_equal(wait_for(&pt_done, 3, 30000), 3);
    uv_sleep(20);
    assert_int_equal(atomic_load(&pt_done), 3);
    assert_int_equal(atomic_load(&pt_jobs[3].done_calls), 0); /* refused: never called */
    assert_false(atomic_load(&pt_jobs[3].worked));
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(atomic_load(&pt_jobs[i].status), 0);
        assert_true(atomic_load(&pt_jobs[i].done_on_submitter));
    }
}

static void
pt_stopper(void *arg)
{
    (void)arg;
    xd_pool_stop();
}

static void
test_pool__stop_cancels_queued(void **state)
{
    (void)state;
    pt_batch b = { 0, 4, true };
    uv_thread_t stopper;
    assert_int_equal(xd_pool_start(1, 8), 0);
    assert_int_equal(xd_worker_post(xd_worker_get(1), pt_submit_msg, &b), 0);
    uv_sem_wait(&pt_running);
    assert_int_equal(wait_for(&pt_msgs, 1, 30000), 1);
    assert_int_equal(uv_thread_create(&stopper, pt_stopper, NULL), 0);
    /* The three queued jobs come back canceled while the blocker still runs. */
    assert_int_equal(wait_for(&pt_done, 3, 30000), 3);
    for (unsigned i = 1; i < 4; i++) {
        assert_int_equal(atomic_load(&pt_jobs[i].status), XD_ECANCELED);
        assert_false(atomic_load(&pt_jobs[i].worked));
        assert_true(atomic_load(&pt_jobs[i].done_on_submitter));
    }
    assert_false(atomic_load(&pt_jobs[0].worked));
    uv_sem_post(&pt_release);
    uv_thread_join(&stopper); /* stop finished the running job */
    assert_int_equal(wait_for(&pt_done, 4, 30000), 4);
    assert_int_equal(atomic_load(&pt_jobs[0].status), 0);
    assert_true(atomic_load(&pt_jobs[0].done_on_submitter));
    /* After stop: closed. */
    assert_int_equal(xd_pool_submit(pt_work, NULL, &pt_jobs[5]), XD_ECLOSED);
}

static void
test_pool__workers_stop_while_work_in_flight(void **state)
{
    (void)state;
    pt_batch b = { 0, 2, true };
    assert_int_equal(xd_pool_start(1, 8), 0);
    assert_int_equal(xd_worker_post(xd_worker_get(0), pt_submit_msg, &b), 0);
    uv_sem_wait(&pt_running);
    xd_workers_set_grace_ms(20); /* shorter than the job: results must still arrive */
    xd_workers_stop();  /* worker 0 keeps its inbox open for the two results */
    uv_sleep(100);
    assert_int_equal(atomic_load(&pt_done), 0);
    uv_sem_post(&pt_release);
    xd_pool_stop();     /* blocker finishes; if job 1 was still queued it is canceled */
    xd_workers_join();  /* both done callbacks ran on worker 0 before it closed */
    assert_int_equal(atomic_load(&pt_done), 2);
    assert_int_equal(atomic_load(&pt_jobs[0].status), 0);
    assert_true(atomic_load(&pt_jobs[0].done_on_submitter));
    assert_true(atomic_load(&pt_jobs[1].status) == 0 ||
                atomic_load(&pt_jobs[1].status) == XD_ECANCELED);
    assert_true(atomic_load(&pt_jobs[1].done_on_submitter));
    /* Restart workers so the teardown has something to stop. */
    assert_int_equal(xd_workers_start(2, NULL, NULL, NULL), 0);
}

static _Atomic unsigned pt_fire_and_forget;

static void
pt_count_work(void *arg)
{
    (void)arg;
    atomic_fetch_add(&pt_fire_and_forget, 1);
}

static void
test_pool__no_done_from_any_thread(void **state)
{
    (void)state;
    atomic_store(&pt_fire_and_forget, 0);
    assert_int_equal(xd_pool_start(2, 64), 0);
    for (unsigned i = 0; i < 32; i++)
        assert_int_equal(xd_pool_submit(pt_count_work, NULL, NULL), 0);
    assert_int_equal(wait_for(&pt_fire_and_forget, 32, 30000), 32);
}

static void
test_pool__start_errors(void **state)
{
    (void)state;
    assert_int_equal(xd_pool_start(0, 4), XD_EINVAL);
    assert_int_equal(xd_pool_start(1, 0), XD_EINVAL);
    assert_int_equal(xd_pool_start(1, 4), 0);
    assert_int_equal(xd_pool_start(1, 4), XD_EEXIST);
    xd_pool_stop();
    assert_int_equal(xd_pool_submit(pt_work, NULL, &pt_jobs[0]), XD_ECLOSED);
    xd_pool_stop(); /* idempotent */
}

/* ---- the order of a stream's input (xmppd/input.h) ---- */

static _Atomic unsigned in_holds, in_releases; /* what the stream layer was told */
static _Atomic unsigned in_release_after_done; /* releases that came after the done callback */
static _Atomic bool in_wrong_thread;           /* a handler ran off the stream's worker */
static xd_worker_t *in_owner;                  /* the worker the stream "lives" on */
static xd_input_ref_t in_explicit;             /* taken on the worker, released from the test */

static bool
in_hold(xd_worker_t *w, uint64_t id)
{
    if (w != in_owner || xd_worker_self() != w)
        atomic_store(&in_wrong_thread, true);
    if (id != 7)
        return false; /* no such stream */
    atomic_fetch_add(&in_holds, 1);
    return true;
}

static void
in_release(xd_worker_t *w, uint64_t id)
{
    if (w != in_owner || xd_worker_self() != w || id != 7)
        atomic_store(&in_wrong_thread, true);
    if (atomic_load(&pt_done) > 0)
        atomic_fetch_add(&in_release_after_done, 1);
    atomic_fetch_add(&in_releases, 1);
}

/* On the owner: handling stream 7's element, a job with a done callback
 * and an explicit hold; a job without done and one outside the element
 * hold nothing; an unknown stream gives a ref with id 0. */
static void
in_msg(xd_worker_t *w, void *arg)
{
    (void)arg;
    in_owner = w;
    pt_jobs[0].submitter = w;
    pt_jobs[1].submitter = w;
    uint64_t prev = xd_input_enter(7);
    pt_submit_rc[0] = xd_pool_submit(pt_work, pt_done_cb, &pt_jobs[0]);
    pt_submit_rc[2] = xd_pool_submit(pt_work, NULL, &pt_jobs[2]);
    in_explicit = xd_input_hold();
    uint64_t inner = xd_input_enter(8); /* nested: another (unknown) stream */
    xd_input_ref_t none = xd_input_hold();
    xd_input_leave(inner);
    if (none.id != 0)
        atomic_store(&in_wrong_thread, true);
    xd_input_leave(prev);
    pt_submit_rc[1] = xd_pool_submit(pt_work, pt_done_cb, &pt_jobs[1]);
    atomic_fetch_add(&pt_msgs, 1);
}

static void
test_pool__holds_the_input_stream(void **state)
{
    (void)state;
    atomic_store(&in_holds, 0);
    atomic_store(&in_releases, 0);
    atomic_store(&in_release_after_done, 0);
    atomic_store(&in_wrong_thread, false);
    xd_input_set_handlers(in_hold, in_release, NULL);
    assert_int_equal(xd_pool_start(2, 16), 0);
    assert_int_equal(xd_worker_post(xd_worker_get(1), in_msg, NULL), 0);
    assert_int_equal(wait_for(&pt_msgs, 1, 5000), 1);
    assert_int_equal(pt_submit_rc[0], 0);
    assert_int_equal(pt_submit_rc[1], 0);
    assert_int_equal(pt_submit_rc[2], 0);
    assert_int_equal(wait_for(&pt_done, 2, 5000), 2);
    assert_int_equal(wait_for(&in_releases, 1, 5000), 1);
    /* The job with done held stream 7 and let go after done ran; the
     * explicit hold is still in force. */
    assert_int_equal(atomic_load(&in_holds), 2);
    assert_int_equal(atomic_load(&in_release_after_done), 1);
    assert_int_equal(in_explicit.id, 7);
    assert_int_equal(in_explicit.worker, 1);
    /* Released from this (non-worker) thread: runs on the owner. */
    xd_input_release(in_explicit);
    assert_int_equal(wait_for(&in_releases, 2, 5000), 2);
    xd_input_release((xd_input_ref_t){ 0, 0 }); /* nothing */
    assert_false(atomic_load(&in_wrong_thread));
    assert_int_equal(atomic_load(&in_holds), 2);
    xd_input_set_handlers(NULL, NULL, NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool__results_on_submitting_worker, pt_setup,
                                        pt_teardown),
        cmocka_unit_test_setup_teardown(test_pool__full_queue_fails_at_once, pt_setup,
                                        pt_teardown),
        cmocka_unit_test_setup_teardown(test_pool__stop_cancels_queued, pt_setup, pt_teardown),
        cmocka_unit_test_setup_teardown(test_pool__workers_stop_while_work_in_flight, pt_setup,
                                        pt_teardown),
        cmocka_unit_test_setup_teardown(test_pool__no_done_from_any_thread, pt_setup,
                                        pt_teardown),
        cmocka_unit_test_setup_teardown(test_pool__start_errors, pt_setup, pt_teardown),
        cmocka_unit_test_setup_teardown(test_pool__holds_the_input_stream, pt_setup,
                                        pt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
