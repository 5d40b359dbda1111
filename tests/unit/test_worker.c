/*
 * test_worker.c — unit tests for src/core/worker.c and inbox.c: many producers
 * into 2 and 4 workers (every message exactly once, on the right worker, in
 * per-producer order), worker-to-worker ping-pong, timers, stop/join with
 * leftover handles, post after stop, and xd_on_loop.  Threaded: also run under
 * ThreadSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "core/worker.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"

enum { MAX_WORKERS = 8, PRODUCERS = 4, PER_PRODUCER = 100000 };

static unsigned wt_n;                                  /* workers in this test */
static bool wt_inited[MAX_WORKERS];                    /* owner-written by init */
static uint32_t wt_next[MAX_WORKERS][PRODUCERS];       /* owner-only: next seq */
static _Atomic unsigned wt_errors;                     /* any failed check */
static _Atomic unsigned wt_ran;                        /* messages run */
static _Atomic unsigned wt_stops;                      /* on_stop calls */
static _Atomic unsigned wt_inits;                      /* init calls */

/* Waits up to ms for *v to reach at least want; returns the last value. */
static unsigned
wait_for(_Atomic unsigned *v, unsigned want, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited++) {
        unsigned cur = atomic_load(v);
        if (cur >= want)
            return cur;
        uv_sleep(1);
    }
    return atomic_load(v);
}

static void
wt_init(xd_worker_t *w, void *arg)
{
    unsigned idx = xd_worker_index(w);
    if (arg != (void *)&wt_n || xd_worker_self() != w || !xd_on_loop() || idx >= wt_n)
        atomic_fetch_add(&wt_errors, 1);
    wt_inited[idx] = true;
    for (unsigned p = 0; p < PRODUCERS; p++)
        wt_next[idx][p] = idx;
    atomic_fetch_add(&wt_inits, 1);
}

static void
wt_on_stop(xd_worker_t *w, void *arg)
{
    if (arg != (void *)&wt_n || xd_worker_self() != w)
        atomic_fetch_add(&wt_errors, 1);
    atomic_fetch_add(&wt_stops, 1);
}

static int
wt_setup(void **state)
{
    (void)state;
    wt_n = 0;
    memset(wt_inited, 0, sizeof wt_inited);
    memset(wt_next, 0, sizeof wt_next);
    atomic_store(&wt_errors, 0);
    atomic_store(&wt_ran, 0);
    atomic_store(&wt_stops, 0);
    atomic_store(&wt_inits, 0);
    xd_workers_set_grace_ms(5000);
    return 0;
}

static void
wt_start(unsigned n)
{
    wt_n = n;
    assert_int_equal(xd_workers_start(n, wt_init, wt_on_stop, &wt_n), 0);
    assert_int_equal(xd_workers_count(), n);
    assert_int_equal(atomic_load(&wt_inits), n); /* start returns after every init */
}

static void
wt_finish(void)
{
    xd_workers_stop();
    xd_workers_stop(); /* idempotent */
    xd_workers_join();
    assert_int_equal(atomic_load(&wt_stops), wt_n);
    assert_int_equal(xd_workers_count(), 0);
    assert_null(xd_worker_get(0));
}

/* ---- many producers ---------------------------------------------------- */

static void
wt_msg(xd_worker_t *w, void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned p = (unsigned)(v >> 24), seq = (unsigned)(v & 0xffffff);
    unsigned idx = xd_worker_index(w);

    if (xd_worker_self() != w || !xd_on_loop() || seq % wt_n != idx || !wt_inited[idx])
        atomic_fetch_add(&wt_errors, 1);
    if (p >= PRODUCERS || wt_next[idx][p] != seq)
        atomic_fetch_add(&wt_errors, 1); /* lost, duplicated or reordered */
    else
        wt_next[idx][p] = seq + wt_n;
    atomic_fetch_add(&wt_ran, 1);
}

/* A message with its inbox node inside (xd_worker_post_msg): the body
 * frees it; ASan sees a node freed twice or never. */
typedef struct {
    xd_worker_msg_t node;
    uintptr_t v;
} wt_embedded_t;

static bool wt_mixed; /* producers alternate plain and embedded posts */

static void
wt_msg_embedded(xd_worker_t *w, void *arg)
{
    wt_embedded_t *m = arg;
    uintptr_t v = m->v;
    xd_free(m);
    wt_msg(w, (void *)v);
}

static void
wt_producer(void *arg)
{
    uintptr_t p = (uintptr_t)arg;
    for (uintptr_t seq = 0; seq < PER_PRODUCER; seq++) {
        xd_worker_t *w = xd_worker_get((unsigned)(seq % wt_n));
        uintptr_t v = (p << 24) | seq;
        int rc;
        if (wt_mixed && (seq / wt_n) % 2) {
            wt_embedded_t *m = xd_new(wt_embedded_t);
            m->v = v;
            rc = xd_worker_post_msg(w, &m->node, wt_msg_embedded, m);
            if (rc != 0)
                xd_free(m);
        } else {
            rc = xd_worker_post(w, wt_msg, (void *)v);
        }
        if (rc != 0)
            atomic_fetch_add(&wt_errors, 1);
    }
}

static void
wt_many_producers(unsigned n)
{
    uv_thread_t th[PRODUCERS];

    wt_start(n);
    for (uintptr_t p = 0; p < PRODUCERS; p++)
        assert_int_equal(uv_thread_create(&th[p], wt_producer, (void *)p), 0);
    for (unsigned p = 0; p < PRODUCERS; p++)
        uv_thread_join(&th[p]);
    assert_int_equal(wait_for(&wt_ran, PRODUCERS * PER_PRODUCER, 60000),
                     PRODUCERS * PER_PRODUCER);
    wt_finish();
    assert_int_equal(atomic_load(&wt_errors), 0);
    assert_int_equal(atomic_load(&wt_ran), PRODUCERS * PER_PRODUCER); /* no extra runs */
    /* Every worker saw every producer's last message. */
    for (unsigned idx = 0; idx < n; idx++)
        for (unsigned p = 0; p < PRODUCERS; p++)
            assert_true(wt_next[idx][p] >= PER_PRODUCER);
}

static void
test_worker__many_producers_2_workers(void **state)
{
    (void)state;
    wt_many_producers(2);
}

/* Plain and embedded nodes interleaved in one queue keep per-producer
 * order and are each run once. */
static void
test_worker__embedded_nodes_2_workers(void **state)
{
    (void)state;
    wt_mixed = true;
    wt_many_producers(2);
    wt_mixed = false;
}

static void
test_worker__many_producers_4_workers(void **state)
{
    (void)state;
    wt_many_producers(4);
}

/* ---- ping-pong --------------------------------------------------------- */

enum { PINGPONG_HOPS = 2000 };

typedef struct {
    unsigned hops; /* touched only by the worker currently holding the ball */
} wt_ball;

static void
wt_pingpong(xd_worker_t *w, void *arg)
{
    wt_ball *b = arg;
    if (xd_worker_index(w) != b->hops % 2 || xd_worker_self() != w)
        atomic_fetch_add(&wt_errors, 1);
    b->hops++;
    if (b->hops == PINGPONG_HOPS) {
        atomic_store(&wt_ran, 1);
        return;
    }
    if (xd_worker_post(xd_worker_get(b->hops % 2), wt_pingpong, b) != 0)
        atomic_fetch_add(&wt_errors, 1);
}

static void
test_worker__post_between_workers(void **state)
{
    (void)state;
    wt_ball ball = { 0 };
    wt_start(2);
    assert_int_equal(xd_worker_post(xd_worker_get(0), wt_pingpong, &ball), 0);
    assert_int_equal(wait_for(&wt_ran, 1, 30000), 1);
    wt_finish();
    assert_int_equal(ball.hops, PINGPONG_HOPS);
    assert_int_equal(atomic_load(&wt_errors), 0);
}

/* ---- timers ------------------------------------------------------------ */

typedef struct {
    unsigned oneshot_fired;    /* one-shot callback count */
    unsigned repeat_fired;     /* repeating timer, frees itself on the 5th */
    unsigned fast_fired;       /* 1 ms repeating timer, freed by `killer` */
    unsigned fast_at_free;     /* fast_fired when it was freed */
    bool fast_freed;           /* fast was freed */
    unsigned never_fired;      /* freed before it could fire */
    xd_timer_t *fast;          /* the 1 ms timer */
} wt_timers;

static wt_timers tt; /* worker 0 only, then read after join */

static void
tt_oneshot(xd_timer_t *t, void *arg)
{
    (void)arg;
    tt.oneshot_fired++;
    xd_timer_free(t);
}

static void
tt_repeat(xd_timer_t *t, void *arg)
{
    (void)arg;
    if (++tt.repeat_fired == 5)
        xd_timer_free(t); /* freeing from inside its own callback */
}

static void
tt_fast(xd_timer_t *t, void *arg)
{
    (void)t;
    (void)arg;
    if (tt.fast_freed)
        atomic_fetch_add(&wt_errors, 1);
    tt.fast_fired++;
}

static void
tt_never(xd_timer_t *t, void *arg)
{
    (void)t;
    (void)arg;
    tt.never_fired++;
}

static void
tt_checker(xd_timer_t *t, void *arg)
{
    (void)arg;
    xd_timer_free(t);
    atomic_store(&wt_ran, 1);
}

static void
tt_killer(xd_timer_t *t, void *arg)
{
    (void)arg;
    xd_timer_free(t);
    tt.fast_at_free = tt.fast_fired;
    tt.fast_freed = true;
    xd_timer_free(tt.fast);
    /* Check 60 ms later that fast never ran again. */
    xd_timer_start(xd_timer_new(xd_worker_self(), tt_checker, NULL), 60, 0);
}

static void
tt_setup_msg(xd_worker_t *w, void *arg)
{
    (void)arg;
    xd_timer_start(xd_timer_new(w, tt_oneshot, NULL), 10, 0);
    xd_timer_start(xd_timer_new(w, tt_repeat, NULL), 2, 2);
    tt.fast = xd_timer_new(w, tt_fast, NULL);
    xd_timer_start(tt.fast, 1, 1);
    xd_timer_start(xd_timer_new(w, tt_killer, NULL), 40, 0);
    xd_timer_t *never = xd_timer_new(w, tt_never, NULL);
    xd_timer_start(never, 0, 0);
    xd_timer_free(never); /* before the loop could run it */
    xd_timer_t *stopped = xd_timer_new(w, tt_never, NULL);
    xd_timer_start(stopped, 5, 0);
    xd_timer_stop(stopped);
    xd_timer_start(xd_timer_new(w, tt_oneshot, NULL), 20, 0);
    xd_timer_free(stopped);
}

static void
test_worker__timers_fire_and_never_after_free(void **state)
{
    (void)state;
    memset(&tt, 0, sizeof tt);
    wt_start(2);
    assert_int_equal(xd_worker_post(xd_worker_get(0), tt_setup_msg, NULL), 0);
    assert_int_equal(wait_for(&wt_ran, 1, 30000), 1);
    wt_finish();
    assert_int_equal(tt.oneshot_fired, 2);
    assert_int_equal(tt.repeat_fired, 5);
    assert_true(tt.fast_at_free >= 2);
    assert_int_equal(tt.fast_fired, tt.fast_at_free);
    assert_int_equal(tt.never_fired, 0);
    assert_int_equal(atomic_load(&wt_errors), 0);
}

/* ---- stop with leftovers, post after stop ------------------------------ */

static uv_timer_t wt_raw[MAX_WORKERS];     /* ref'd, active: nobody closes it */
static uv_timer_t wt_raw_unref[MAX_WORKERS]; /* unref'd: loop ends, close must not fail */
static uv_timer_t wt_raw_idle[MAX_WORKERS];  /* initialised, never started */

static void
wt_raw_cb(uv_timer_t *t)
{
    (void)t;
}

static void
wt_leaky_timer(xd_timer_t *t, void *arg)
{
    (void)t;
    (void)arg;
}

static void
wt_leaky_init(xd_worker_t *w, void *arg)
{
    unsigned i = xd_worker_index(w);
    uv_loop_t *loop = xd_worker_loop(w);
    wt_init(w, arg);
    uv_timer_init(loop, &wt_raw[i]);
    uv_timer_start(&wt_raw[i], wt_raw_cb, 1, 1);
    uv_timer_init(loop, &wt_raw_unref[i]);
    uv_timer_start(&wt_raw_unref[i], wt_raw_cb, 100000, 0);
    uv_unref((uv_handle_t *)&wt_raw_unref[i]);
    uv_timer_init(loop, &wt_raw_idle[i]);
    xd_timer_start(xd_timer_new(w, wt_leaky_timer, NULL), 1, 1);
    xd_timer_new(w, wt_leaky_timer, NULL); /* never started */
}

static void
wt_count_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    (void)arg;
    atomic_fetch_add(&wt_ran, 1);
}

static void
test_worker__stop_with_leftover_handles_does_not_hang(void **state)
{
    (void)state;
    wt_n = 2;
    xd_workers_set_grace_ms(100);
    assert_int_equal(xd_workers_start(2, wt_leaky_init, wt_on_stop, &wt_n), 0);
    uint64_t t0 = uv_hrtime();
    xd_workers_stop();
    xd_workers_join(); /* asserts uv_loop_close() == 0 inside each worker */
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_true(ms >= 90);   /* it did wait for the grace period */
    assert_true(ms < 10000); /* and did not hang */
    assert_int_equal(atomic_load(&wt_stops), 2);
    assert_int_equal(atomic_load(&wt_errors), 0);
}

static void
test_worker__post_after_stop_is_closed(void **state)
{
    (void)state;
    unsigned accepted = 0, refused = 0;
    wt_start(2);
    xd_worker_t *w = xd_worker_get(1);
    xd_workers_stop();
    uint64_t t0 = uv_hrtime();
    while (refused == 0 && uv_hrtime() - t0 < 10ull * 1000000000ull) {
        int rc = xd_worker_post(w, wt_count_msg, NULL);
        if (rc == 0)
            accepted++;
        else if (rc == XD_ECLOSED)
            refused++;
        else
            fail_msg("unexpected %d", rc);
    }
    assert_int_equal(refused, 1);
    assert_int_equal(xd_worker_post(xd_worker_get(0), wt_count_msg, NULL) == 0 ||
                         xd_worker_post(xd_worker_get(0), wt_count_msg, NULL) == XD_ECLOSED,
                     1);
    assert_int_equal(wait_for(&wt_stops, 2, 10000), 2);
    /* Wait for worker 0 to refuse too; then nothing can sneak in. */
    while (xd_worker_post(xd_worker_get(0), wt_count_msg, NULL) == 0)
        accepted++;
    xd_workers_join();
    /* Every accepted message ran (the extra two on worker 0 may or may not
     * have been accepted, so allow for them). */
    unsigned ran = atomic_load(&wt_ran);
    assert_true(ran >= accepted && ran <= accepted + 2);
}

/* ---- xd_on_loop and misc ----------------------------------------------- */

static _Atomic unsigned wt_on_loop_seen;

static void
wt_on_loop_msg(xd_worker_t *w, void *arg)
{
    (void)arg;
    if (xd_on_loop() && xd_worker_self() == w && xd_worker_loop(w) != NULL)
        atomic_fetch_add(&wt_on_loop_seen, 1);
    xd_worker_set_data(w, (void *)&wt_on_loop_seen);
    atomic_fetch_add(&wt_ran, 1);
}

static void
test_worker__on_loop(void **state)
{
    (void)state;
    atomic_store(&wt_on_loop_seen, 0);
    assert_false(xd_on_loop());
    assert_null(xd_worker_self());
    wt_start(2);
    assert_int_equal(xd_worker_post(xd_worker_get(0), wt_on_loop_msg, NULL), 0);
    assert_int_equal(xd_worker_post(xd_worker_get(1), wt_on_loop_msg, NULL), 0);
    assert_int_equal(wait_for(&wt_ran, 2, 10000), 2);
    assert_int_equal(atomic_load(&wt_on_loop_seen), 2);
    assert_ptr_equal(xd_worker_data(xd_worker_get(1)), &wt_on_loop_seen);
    assert_int_equal(xd_worker_index(xd_worker_get(1)), 1);
    assert_null(xd_worker_get(2));
    assert_false(xd_on_loop()); /* still false on the test thread */
    xd_mark_loop_thread(true);
    assert_true(xd_on_loop());
    xd_mark_loop_thread(false);
    assert_false(xd_on_loop());
    wt_finish();
}

static void
test_worker__start_errors(void **state)
{
    (void)state;
    assert_int_equal(xd_workers_start(0, NULL, NULL, NULL), XD_EINVAL);
    wt_start(1);
    assert_int_equal(xd_workers_start(1, NULL, NULL, NULL), XD_EEXIST);
    wt_finish();
    /* Restartable, and hooks are optional. */
    assert_int_equal(xd_workers_start(3, NULL, NULL, NULL), 0);
    xd_workers_stop();
    xd_workers_join();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_worker__many_producers_2_workers, wt_setup),
        cmocka_unit_test_setup(test_worker__many_producers_4_workers, wt_setup),
        cmocka_unit_test_setup(test_worker__embedded_nodes_2_workers, wt_setup),
        cmocka_unit_test_setup(test_worker__post_between_workers, wt_setup),
        cmocka_unit_test_setup(test_worker__timers_fire_and_never_after_free, wt_setup),
        cmocka_unit_test_setup(test_worker__stop_with_leftover_handles_does_not_hang, wt_setup),
        cmocka_unit_test_setup(test_worker__post_after_stop_is_closed, wt_setup),
        cmocka_unit_test_setup(test_worker__on_loop, wt_setup),
        cmocka_unit_test_setup(test_worker__start_errors, wt_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
