/*
 * mod_batch.c — batched, durable writes from a worker loop (see
 * mod_batch.h).
 */
#include "mod_batch.h"

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

typedef struct batch {
    mod_batch_q_t *q;
    const mod_batch_ops_t *ops;
    mod_batch_item_t *head; /* the items, in order */
    xd_db_t *db;            /* where they go */
} batch_t;

static void batch_done(void *arg, int status);

static int
batch_work(xd_db_conn_t *c, void *arg)
{
    (void)c;
    batch_t *b = arg;
    XD_DEBUG_DELAY("XD_DEBUG_BATCH_DELAY_MS"); /* tests: the commit comes late */
    return b->ops->write(b->db, b->head);
}

/* Writes the next batch when none is being written. */
static void
batch_run(mod_batch_q_t *q, const mod_batch_ops_t *ops)
{
    while (q->head && !q->busy) {
        batch_t *b = xd_new(batch_t);
        b->q = q;
        b->ops = ops;
        b->db = xd_module_db(q->head->ctx);
        b->head = q->head;
        mod_batch_item_t *last = q->head;
        size_t n = 1, bytes = last->bytes;
        /* One database per batch (a host's modules share one today). */
        while (last->next && n < ops->batch_max &&
               bytes + last->next->bytes <= ops->batch_max_bytes &&
               xd_module_db(last->next->ctx) == b->db) {
            last = last->next;
            n++;
            bytes += last->bytes;
        }
        q->head = last->next;
        if (!q->head)
            q->tail = NULL;
        last->next = NULL;
        q->len -= n;
        q->bytes -= bytes;
        q->busy = true;
        int rc = xd_db_async(b->db, batch_work, batch_done, b);
        if (rc != 0) /* cannot queue: these fail now, the next batch may pass */
            batch_done(b, rc == XD_EFULL ? XD_EINTERNAL : rc);
    }
}

static void
batch_done(void *arg, int status)
{
    batch_t *b = arg;
    mod_batch_q_t *q = b->q;
    const mod_batch_ops_t *ops = b->ops;
    /* Still busy while the streams are released: each handles its next
     * stanza now, and what those push waits for the batch cut below. */
    for (mod_batch_item_t *it = b->head, *next; it; it = next) {
        next = it->next;
        xd_module_ctx_t *ctx = it->ctx;
        xd_input_ref_t in = it->in;
        ops->finish(it, status != 0 ? status : it->status);
        /* What finish routed (an error to the sender) goes before the
         * sender's next stanza. */
        xd_input_release(in);
        xd_module_release(ctx);
    }
    xd_free(b);
    q->busy = false;
    batch_run(q, ops);
}

int
mod_batch_push(mod_batch_q_t *q, const mod_batch_ops_t *ops, xd_module_ctx_t *ctx,
               mod_batch_item_t *it)
{
    if (!xd_module_db(ctx))
        return XD_EINVAL;
    /* A stanza of a stream is paced by its stream (held until written), so
     * the bound is only reached by a database that cannot keep up.  One
     * from no stream is the server's own: what a session that ended had not
     * had acknowledged, routed again.  Its memory was held already (by that
     * session's bounded queue) and refusing it would bounce it to a sender
     * who may be gone, so it gets MOD_BATCH_NOSTREAM times the room: a mass
     * disconnect fits, a database that stalls for good still hits a bound. */
    size_t k = xd_input_current().id ? 1 : MOD_BATCH_NOSTREAM;
    if (q->len >= ops->q_max * k || q->bytes + it->bytes > ops->q_max_bytes * k) {
        XD_LOG(NULL, XD_WARN, "write queue full", "what=%s queued=%zu bytes=%zu stream=%s",
               ops->what, q->len, q->bytes, k == 1 ? "yes" : "no");
        return XD_EFULL;
    }
    it->next = NULL;
    it->ctx = ctx;
    xd_module_hold(ctx);
    it->in = xd_input_hold();
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->len++;
    q->bytes += it->bytes;
    batch_run(q, ops);
    return 0;
}
