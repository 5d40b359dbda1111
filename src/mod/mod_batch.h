/*
 * mod_batch.h — batched, durable writes from a worker loop (built-in
 * modules; written on the public module API only).
 *
 * What mod_offline and mod_mam share: a stanza whose effect is a row to
 * write (an offline message, an archived message) becomes an item in a
 * per-worker FIFO; the FIFO is written in batches on the blocking pool,
 * one database transaction per batch, so many senders share one commit;
 * the sender's stream is held (xmppd/input.h) until the item's batch is
 * committed and the item answered, so the sender's next stanza (an IQ
 * whose answer says "done", a stream-management ack) is handled only
 * after the row is durable, and one sender's items are written in the
 * order sent.  Group commit: the streams a finished batch releases go on
 * with their next stanzas before the next batch is cut, so what they push
 * shares one commit (before, the first of them started a batch of its own
 * at once and a busy server alternated batches of one item with batches
 * of all the rest).
 * (mod_mam's write is not a transaction but one append to its journal
 * file, mam_journal.h: the durability point; an indexer fills the
 * database later.)
 * The FIFO is bounded: beyond it mod_batch_push fails at
 * once (the caller answers resource-constraint).  A held stream adds at
 * most one stanza's items, so the bound is hit only by stanzas that come
 * from no stream, or by a database that cannot keep up.  Items pushed
 * from no stream (the server routing again what an ended session had not
 * had acknowledged: a mass disconnect ends thousands at once) get
 * MOD_BATCH_NOSTREAM times the bounds, not to bounce what was already
 * held in memory.
 *
 * Use: embed mod_batch_item_t as the first member of the module's item,
 * keep one `static _Thread_local mod_batch_q_t` per kind of write (the
 * FIFO belongs to the worker: xd_db_async brings the answer back to the
 * thread that asked), and give a mod_batch_ops_t:
 *
 *   write(db, head)      pool thread: writes the items head, head->next, …
 *                        (all of one database), normally inside one
 *                        xd_db_tx; may set each item's status; returns
 *                        0 or an error (the whole batch failed).
 *   finish(item, status) the worker loop, once per item, in order: status
 *                        is the batch's error, else the item's own; the
 *                        function answers (an error to the sender) and
 *                        frees the item.  The helper then releases the
 *                        stream and the module instance.
 */
#ifndef XMPPD_MOD_MOD_BATCH_H
#define XMPPD_MOD_MOD_BATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "xmppd/input.h"
#include "xmppd/module.h"

#define MOD_BATCH_NOSTREAM 16 /* bound factor for items from no stream */

typedef struct mod_batch_item {
    struct mod_batch_item *next; /* the FIFO; then the batch */
    xd_module_ctx_t *ctx;        /* the instance, held until finished (set by push) */
    xd_input_ref_t in;           /* the sender's stream, held until finished (set by push) */
    size_t bytes;                /* what the item weighs against the byte bounds */
    int status;                  /* write may set it: 0 or an XD_E* code */
} mod_batch_item_t;

typedef struct mod_batch_ops {
    const char *what;            /* for logs: "offline store" */
    int (*write)(xd_db_t *db, mod_batch_item_t *head);
    void (*finish)(mod_batch_item_t *item, int status);
    size_t q_max;                /* items waiting on one worker */
    size_t q_max_bytes;          /* their bytes */
    size_t batch_max;            /* items per transaction */
    size_t batch_max_bytes;      /* their bytes */
} mod_batch_ops_t;

/* One worker's FIFO of one kind of write: a zeroed _Thread_local. */
typedef struct mod_batch_q {
    mod_batch_item_t *head, *tail;
    size_t len, bytes;
    bool busy;                   /* a batch is being written */
} mod_batch_q_t;

/* Queues `it` (it->bytes set, the rest zeroed) for ctx's database, on a
 * worker loop while a stanza is handled: holds ctx and the stream being
 * handled, and starts a batch when none is being written.  0; XD_EFULL
 * when the FIFO is at its bounds (nothing is held: the caller answers and
 * frees it); XD_EINVAL without a database. */
int mod_batch_push(mod_batch_q_t *q, const mod_batch_ops_t *ops, xd_module_ctx_t *ctx,
                   mod_batch_item_t *it);

#endif
