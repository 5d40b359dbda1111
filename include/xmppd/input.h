/*
 * input.h — the order of a stream's input (public module API; RFC 6120
 * 10.1, DESIGN.md 2).
 *
 * A stream's stanzas are handled one after another on the worker that owns
 * the stream.  When the work a stanza starts leaves the loop (the blocking
 * pool, storage, an auth backend), the stream is *held*: its next stanza is
 * not parsed until every hold is released, so nothing the server does for a
 * later stanza (an IQ result, a delivery, a stream-management ack) can
 * overtake what an earlier one started, and an answer to a later stanza
 * means the earlier ones are done (an offline message stored is durable).
 *
 * Work submitted with xd_module_submit or xd_db_async while a stanza is
 * handled holds the stream by itself, until its done callback has run.  A
 * module that parks a stanza elsewhere (its own queue, a timer, a request
 * to another entity) takes a hold itself:
 *
 *     xd_input_ref_t in = xd_input_hold();   // while handling the stanza
 *     ...
 *     xd_input_release(in);                  // when its work is done
 *
 * A hold costs the stream nothing but its reading; hold only while the
 * stanza's effects are in flight.  Streams that close meanwhile ignore the
 * release.  Stanzas that come from no stream (a module's own, a timer's,
 * another worker's delivery) hold nothing: xd_input_hold returns a ref with
 * id 0, and releasing it does nothing.
 *
 * A stanza whose handling sends many stanzas (a presence broadcast to every
 * contact, any fan-out) costs the server far more than its own bytes.  The
 * module bills the stream for the copies, and the stream's listener shaper
 * (token bucket, `shaper` in the listen entry) counts them as if the stream
 * had sent them: once it is in debt its input pauses, after the stanza
 * being handled, until the bucket has refilled.  So a client that floods
 * broadcasts is slowed by its own shaper, and only it:
 *
 *     xd_input_ref_t in = xd_input_current();  // while handling the stanza
 *     ...                                      // work on the pool, which holds it
 *     xd_input_charge(in, bytes_of_all_copies);
 */
#ifndef XMPPD_INPUT_H
#define XMPPD_INPUT_H

#include <stddef.h>
#include <stdint.h>

/* A held stream: its connection id (0: none) and owner worker. */
typedef struct xd_input_ref {
    uint64_t id;
    unsigned worker;
} xd_input_ref_t;

/* Holds the stream whose stanza the calling thread is handling (a worker
 * loop, inside a stanza's handling); {0} when there is none. */
xd_input_ref_t xd_input_hold(void);

/* The stream whose stanza the calling thread is handling, without holding
 * it ({0} when there is none), for xd_input_charge later. */
xd_input_ref_t xd_input_current(void);

/* On a blocking-pool thread, while it runs the work of a job submitted
 * with a done callback inside a stanza's handling (xd_module_submit,
 * xd_db_async, an XD_IQ_PARALLEL handler): that stanza's stream, which the
 * job holds until its done has run; {0} for other pool work.  On a worker
 * loop: xd_input_current().  For pool work that bills the stream
 * (xd_input_charge) or hands it to another module's API (pep_api.h) —
 * xd_input_current and xd_input_hold answer {0} on the pool. */
xd_input_ref_t xd_input_job(void);

/* Bills stream `ref` for `bytes` sent on its behalf (any thread; a ref with
 * id 0, a stream that has gone, or one without a shaper: nothing).  Its
 * input pauses while its shaper's bucket is in debt. */
void xd_input_charge(xd_input_ref_t ref, size_t bytes);

/* Releases a hold (any thread; a ref with id 0 does nothing).  The stream
 * goes on when its last hold is released. */
void xd_input_release(xd_input_ref_t ref);

/* Work that a stanza sent to another worker (with a hold of its stream,
 * xd_input_hold, released when the work is done) runs there from no
 * stream: what it starts would hold nothing.  Lending the hold makes that
 * worker act for the stream while the work runs: xd_input_current answers
 * `held`, and xd_input_hold takes a further hold of it (the lender's is
 * released after, so the stream waits for both), so an archive write or a
 * database call the work starts holds the sender as if it ran inside the
 * stanza's handling:
 *
 *     xd_input_ref_t prev = xd_input_lend(m->in);   // worker loop, posted work
 *     handle(m->st);
 *     xd_input_unlend(prev);
 *     xd_input_release(m->in);
 *
 * Worker loops only; lend/unlend nest.  A stream handled meanwhile
 * (xd_input_current of its own) wins over the lent one. */
xd_input_ref_t xd_input_lend(xd_input_ref_t held);
void xd_input_unlend(xd_input_ref_t prev);

#endif
