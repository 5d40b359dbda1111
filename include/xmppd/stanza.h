/*
 * stanza.h — helpers for the three stanza kinds (RFC 6120 8): replies,
 * stanza errors (RFC 6120 8.3) and IQ results.
 *
 * The reply functions take a received stanza (borrowed) and return a new
 * stanza with one reference, addressed back to the sender: 'to' is the
 * original 'from' and 'from' the original 'to' (either may be absent; the
 * stream stamps what is missing).
 */
#ifndef XMPPD_STANZA_H
#define XMPPD_STANZA_H

#include <stdbool.h>

#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/jid.h"

typedef enum xd_stanza_kind {
    XD_STANZA_OTHER,
    XD_STANZA_MESSAGE,
    XD_STANZA_PRESENCE,
    XD_STANZA_IQ,
} xd_stanza_kind;

/* The stanza's 'to' / 'from' as a JID, parsed once and kept with the
 * stanza (every later call, on any thread, gets the same object); NULL
 * when the attribute is absent or not a JID.  Lent while the caller holds
 * its reference to st (xd_jid_ref to keep it longer). */
const xd_jid_t *xd_stanza_to(const xd_stanza_t *st);
const xd_jid_t *xd_stanza_from(const xd_stanza_t *st);

/* Records jid (a reference is taken) as the parsed 'from' of st, whose
 * 'from' attribute must be jid's full string: for the code that stamped it
 * (a session stamping its own JID). */
void xd_stanza_set_from(const xd_stanza_t *st, xd_jid_t *jid);
/* The same for 'to' (a fan-out's copy, xd_stanza_readdress to jid's full
 * string: the router does not parse it again). */
void xd_stanza_set_to(const xd_stanza_t *st, xd_jid_t *jid);

/* RFC 7622 3: st with its 'to' and 'from' in canonical form, for the
 * stream that received it (an address is compared, routed and delivered as
 * the full string of its parsed JID: "X@Example.COM./r" becomes
 * "x@example.com/r").  Takes st and returns the stanza to pass on: st
 * itself when both were canonical already (the common case costs two
 * parses that are kept with the stanza and two comparisons), else the
 * stanza thawed, rewritten and frozen again (in place when the caller's
 * reference is the only one) with its parsed addresses kept.  An attribute
 * that is absent, or not a JID, is left as it is: the stream refuses those
 * first (xd_stanza_to / xd_stanza_from NULL with the attribute present). */
xd_stanza_t *xd_stanza_canonical(xd_stanza_t *st);

/* For a change that leaves 'to' and 'from' alone (adding a child, as a
 * stanza-id does): xd_stanza_thaw_keep thaws st (el.h: in place when the
 * caller's reference is the only one) and keeps its parsed addresses in
 * *keep; xd_stanza_freeze_keep freezes the builder and gives them to the
 * new stanza, so nobody parses them again.  A caller may also fill *keep
 * itself (references it gives away; NULL = none) with JIDs whose full
 * strings are the builder's 'to' and 'from', as the session does with the
 * 'to' it parsed and its bound JID. */
typedef struct xd_stanza_keep {
    xd_jid_t *to, *from;
} xd_stanza_keep_t;
xd_el_t *xd_stanza_thaw_keep(xd_stanza_t *st, xd_stanza_keep_t *keep);
xd_stanza_t *xd_stanza_freeze_keep(xd_el_t *el, xd_stanza_keep_t *keep);

/* message / presence / iq in the content namespace, or OTHER. */
xd_stanza_kind xd_stanza_kind_of(const xd_el_t *el);

/* True for an IQ of type get or set (a request that needs an answer). */
bool xd_iq_is_request(const xd_el_t *el);

/* The error reply to st: the original payload kept (RFC 6120 8.3.1 allows
 * it; we keep it for messages and presences, and drop it for IQs, whose
 * payload may be large), type='error' and <error type=…><cond/>[<text/>]
 * </error>.  `text` may be NULL; it is English ("en").  Returns NULL for a
 * stanza that must not be answered with an error: type='error' itself, or
 * an IQ result.  The reply's 'from' is st's 'to' in canonical form; a 'to'
 * that is not a JID is never echoed back (the reply then has no 'from'). */
xd_stanza_t *xd_stanza_error(const xd_stanza_t *st, xd_cond cond, const char *text);

/* The same, from `from` (NULL: as xd_stanza_error): for a stream that
 * answers a 'to' that is not a JID (jid-malformed) from the domain it
 * serves. */
xd_stanza_t *xd_stanza_error_from(const xd_stanza_t *st, xd_cond cond, const char *text,
                                  const char *from);

/* An empty IQ result for the request st (<iq type='result' id=…/>). */
xd_stanza_t *xd_iq_result(const xd_stanza_t *st);

/* A builder for an IQ result carrying a payload: the caller adds children
 * to the returned <iq type='result'/> and freezes it. */
xd_el_t *xd_iq_result_builder(const xd_stanza_t *st);

#endif
