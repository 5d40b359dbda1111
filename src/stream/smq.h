/*
 * smq.h — the counters and the queue of XEP-0198 stream management
 * (urn:xmpp:sm:3): stanzas sent to the peer that it has not acknowledged
 * yet, in order, and the 32-bit counts that acknowledge them.
 *
 * h counts stanzas modulo 2^32 (XEP-0198 4: "the value of 'h' ... wraps to
 * zero"), so every comparison is on the difference (uint32_t)(h - acked):
 * an ack of n <= len stanzas drops the n oldest; one of more than were sent
 * is the peer's error (handled-count-too-high); one behind what it acked
 * before (a repeated or late <a/>) changes nothing.  Owner thread only.
 */
#ifndef XMPPD_STREAM_SMQ_H
#define XMPPD_STREAM_SMQ_H

#include <stddef.h>
#include <stdint.h>

#include "xmppd/el.h"

typedef struct xd_smq {
    xd_stanza_t **v; /* ring of references, oldest at head */
    size_t cap;      /* slots of v (a power of two, or 0) */
    size_t head;     /* index of the oldest */
    size_t len;      /* stanzas queued */
    size_t bytes;    /* their serialized size */
    uint32_t acked;  /* the h the peer acknowledged last */
} xd_smq_t;

/* An empty queue whose count starts at `start` (0 for a new stream; tests
 * start near 2^32 to cross the wrap). */
void xd_smq_init(xd_smq_t *q, uint32_t start);

/* Queues a sent stanza (takes a new reference of st). */
void xd_smq_push(xd_smq_t *q, const xd_stanza_t *st);

/* The h of everything sent so far. */
uint32_t xd_smq_sent(const xd_smq_t *q);

/* The peer acknowledged h: drops what it covers.  0, or XD_EINVAL when h
 * acknowledges more than was sent (nothing changes). */
int xd_smq_ack(xd_smq_t *q, uint32_t h);

/* The oldest unacknowledged stanza, taken out (the caller's reference;
 * it counts as acknowledged from now on), or NULL when none is left. */
xd_stanza_t *xd_smq_take(xd_smq_t *q);

/* The i-th unacknowledged stanza, oldest first (i < q->len; lent). */
const xd_stanza_t *xd_smq_at(const xd_smq_t *q, size_t i);

/* Drops everything and frees the ring. */
void xd_smq_clear(xd_smq_t *q);

#endif
