/*
 * bench_inbox.c — cross-thread message throughput of the worker inbox
 * (src/core/inbox.c via xd_worker_post).
 *
 * P producer threads each post M messages to W workers (round robin); the
 * clock runs from the first post until the last message has run.  Prints
 * messages per second for a few (P, W) shapes.  Usage: bench_inbox [M]
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "core/worker.h"
#include "xmppd/log.h"

static _Atomic uint64_t bi_ran;   /* messages run, all workers */
static unsigned bi_workers;       /* workers in this round */
static uint64_t bi_per_producer;  /* M */

static void
bi_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    (void)arg;
    atomic_fetch_add_explicit(&bi_ran, 1, memory_order_relaxed);
}

static void
bi_producer(void *arg)
{
    (void)arg;
    for (uint64_t i = 0; i < bi_per_producer; i++) {
        xd_worker_t *w = xd_worker_get((unsigned)(i % bi_workers));
        if (xd_worker_post(w, bi_msg, NULL) != 0)
            abort();
    }
}

static void
bi_round(unsigned producers, unsigned workers)
{
    uv_thread_t th[16];
    uint64_t total = bi_per_producer * producers;

    bi_workers = workers;
    atomic_store(&bi_ran, 0);
    if (xd_workers_start(workers, NULL, NULL, NULL) != 0)
        abort();
    uint64_t t0 = uv_hrtime();
    for (unsigned p = 0; p < producers; p++)
        uv_thread_create(&th[p], bi_producer, NULL);
    for (unsigned p = 0; p < producers; p++)
        uv_thread_join(&th[p]);
    while (atomic_load(&bi_ran) < total)
        uv_sleep(0);
    uint64_t ns = uv_hrtime() - t0;
    xd_workers_stop();
    xd_workers_join();
    printf("producers=%u workers=%u messages=%llu seconds=%.3f msgs_per_s=%.0f\n", producers,
           workers, (unsigned long long)total, (double)ns / 1e9, (double)total * 1e9 / (double)ns);
}

int
main(int argc, char **argv)
{
    bi_per_producer = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    xd_log_set_level(XD_LOG_WARN);
    bi_round(1, 1);
    bi_round(2, 1);
    bi_round(4, 1);
    bi_round(4, 2);
    return 0;
}
