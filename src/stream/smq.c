/*
 * smq.c — XEP-0198 counters and the unacknowledged queue (smq.h).
 */
#include "stream/smq.h"

#include <string.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/stanza.h"

void
xd_smq_init(xd_smq_t *q, uint32_t start)
{
    memset(q, 0, sizeof *q);
    q->acked = start;
}

static size_t
smq_size(const xd_stanza_t *st)
{
    size_t n = 0;
    (void)xd_stanza_bytes(st, &n);
    return n;
}

void
xd_smq_push(xd_smq_t *q, const xd_stanza_t *st)
{
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        xd_stanza_t **v = xd_malloc(cap * sizeof *v);
        for (size_t i = 0; i < q->len; i++)
            v[i] = q->v[(q->head + i) & (q->cap - 1)];
        xd_free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->len) & (q->cap - 1)] = xd_stanza_ref(st);
    q->len++;
    q->bytes += smq_size(st);
}

uint32_t
xd_smq_sent(const xd_smq_t *q)
{
    return q->acked + (uint32_t)q->len;
}

xd_stanza_t *
xd_smq_take(xd_smq_t *q)
{
    if (q->len == 0)
        return NULL;
    xd_stanza_t *st = q->v[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    q->bytes -= smq_size(st);
    q->acked++; /* out of the count of what is waiting: xd_smq_sent stays */
    return st;
}

int
xd_smq_ack(xd_smq_t *q, uint32_t h)
{
    uint32_t n = h - q->acked;
    if (n > q->len) {
        /* Behind what was acknowledged before (half the counter space
         * back): a repeated or late <a/>, nothing to drop. */
        if ((uint32_t)(q->acked - h) < 0x80000000u)
            return 0;
        return XD_EINVAL;
    }
    for (uint32_t i = 0; i < n; i++)
        xd_stanza_unref(xd_smq_take(q)); /* each advances acked */
    return 0;
}

const xd_stanza_t *
xd_smq_at(const xd_smq_t *q, size_t i)
{
    return q->v[(q->head + i) & (q->cap - 1)];
}

void
xd_smq_clear(xd_smq_t *q)
{
    xd_stanza_t *st;
    while ((st = xd_smq_take(q)) != NULL)
        xd_stanza_unref(st);
    xd_free(q->v);
    q->v = NULL;
    q->cap = q->len = q->head = q->bytes = 0;
}
