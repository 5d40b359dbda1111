/*
 * stanza.h — helpers for the three stanza kinds (RFC 6120 8): replies,
 * stanza errors (RFC 6120 8.3) and IQ results.
 *
 * All functions take a received stanza (borrowed) and return a new stanza
 * with one reference, addressed back to the sender: 'to' is the original
 * 'from' and 'from' the original 'to' (either may be absent; the stream
 * stamps what is missing).
 */
#ifndef XMPPD_STANZA_H
#define XMPPD_STANZA_H

#include <stdbool.h>

#include "xmppd/conds.h"
#include "xmppd/el.h"

typedef enum xd_stanza_kind {
    XD_STANZA_OTHER,
    XD_STANZA_MESSAGE,
    XD_STANZA_PRESENCE,
    XD_STANZA_IQ,
} xd_stanza_kind;

/* message / presence / iq in the content namespace, or OTHER. */
xd_stanza_kind xd_stanza_kind_of(const xd_el_t *el);

/* True for an IQ of type get or set (a request that needs an answer). */
bool xd_iq_is_request(const xd_el_t *el);

/* The error reply to st: the original payload kept (RFC 6120 8.3.1 allows
 * it; we keep it for messages and presences, and drop it for IQs, whose
 * payload may be large), type='error' and <error type=…><cond/>[<text/>]
 * </error>.  `text` may be NULL; it is English ("en").  Returns NULL for a
 * stanza that must not be answered with an error: type='error' itself, or
 * an IQ result. */
xd_stanza_t *xd_stanza_error(const xd_stanza_t *st, xd_cond cond, const char *text);

/* An empty IQ result for the request st (<iq type='result' id=…/>). */
xd_stanza_t *xd_iq_result(const xd_stanza_t *st);

/* A builder for an IQ result carrying a payload: the caller adds children
 * to the returned <iq type='result'/> and freezes it. */
xd_el_t *xd_iq_result_builder(const xd_stanza_t *st);

#endif
