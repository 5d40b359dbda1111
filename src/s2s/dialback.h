/*
 * dialback.h — server dialback (XEP-0220) with keys as XEP-0185 recommends.
 *
 * Pure functions, no state: the s2s streams (s2s_in.c, s2s_out.c) call them
 * on their owner loops.  Nothing here does I/O or keeps memory.
 *
 * The exchange (XEP-0220 2), for an Originating Server O that wants to send
 * to a Receiving Server R, whose Authoritative Server A (O's domain,
 * resolved by R) knows the secret:
 *
 *   O ──► R   <db:result from='O' to='R'>KEY</db:result>        (on O's stream)
 *   R ──► A   <db:verify from='R' to='O' id='ID'>KEY</db:verify> (R dials back)
 *   A ──► R   <db:verify from='O' to='R' id='ID' type='valid'/>  (A checks KEY)
 *   R ──► O   <db:result from='R' to='O' type='valid'/>
 *
 * KEY = xd_dialback_key(secret, R, O, ID), where ID is the id R gave O's
 * stream.  A answers with xd_dialback_key_check.  Either answer may be
 * type='invalid', or type='error' with a stanza error condition (XEP-0220
 * 2.5: item-not-found, remote-server-not-found, remote-server-timeout, ...),
 * which does not end the stream.
 *
 * Elements are built and read with el.h; they are in jabber:server:dialback
 * with the prefix "db" (the serializer declares xmlns:db on the element
 * when the stream header has not).
 */
#ifndef XMPPD_S2S_DIALBACK_H
#define XMPPD_S2S_DIALBACK_H

#include <stdbool.h>
#include <stddef.h>

#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/str.h"

/* ---- keys (XEP-0185) ---------------------------------------------------- */

#define XD_DIALBACK_KEY_LEN 64 /* hex characters of an HMAC-SHA256 key */

/* XEP-0185 2: key = HMAC-SHA256(hex(SHA256(secret)),
 *                               receiving ' ' originating ' ' stream_id)
 * written to out as 64 lower-case hex digits and a NUL.  The HMAC key is
 * the 64-character hex form of SHA256(secret), as the XEP's example uses.
 * Returns 0, or XD_EINVAL when an input is empty or a domain contains a
 * space (the concatenation would be ambiguous). */
int xd_dialback_key(xd_str_t secret, xd_str_t receiving, xd_str_t originating, xd_str_t stream_id,
                    char out[XD_DIALBACK_KEY_LEN + 1]);

/* True when key is xd_dialback_key(secret, receiving, originating,
 * stream_id).  The comparison takes the same time wherever the first
 * difference is (CRYPTO_memcmp); only the length is compared first.
 * False for inputs xd_dialback_key refuses. */
bool xd_dialback_key_check(xd_str_t secret, xd_str_t receiving, xd_str_t originating,
                           xd_str_t stream_id, xd_str_t key);

/* ---- elements (XEP-0220) ------------------------------------------------ */

typedef enum xd_dialback_kind {
    XD_DIALBACK_RESULT = 0, /* <db:result/>: on the stream being authorised */
    XD_DIALBACK_VERIFY,     /* <db:verify/>: on the stream to the authoritative server */
} xd_dialback_kind;

typedef enum xd_dialback_type {
    XD_DIALBACK_REQUEST = 0, /* no 'type': a request carrying a key */
    XD_DIALBACK_VALID,       /* type='valid' */
    XD_DIALBACK_INVALID,     /* type='invalid' */
    XD_DIALBACK_ERROR,       /* type='error', with a stanza error condition */
} xd_dialback_type;

/* One dialback element, read or to be built.  The strings are borrowed:
 * from the parsed tree (valid while it lives) or from the caller (copied by
 * xd_dialback_build).  Reader and builder both: the stream that has it. */
typedef struct xd_dialback {
    xd_dialback_kind kind; /* result or verify */
    xd_dialback_type type; /* request or one of the answers */
    const char *from;      /* sender's domain; required */
    const char *to;        /* recipient's domain; required */
    const char *id;        /* stream ID: required on verify, NULL on result (XEP-0220
                            * defines none there; a parsed one is passed on) */
    xd_str_t key;          /* request: the key, the element's text without surrounding
                            * whitespace (XEP-0220's examples are pretty-printed);
                            * answers: empty */
    xd_cond cond;          /* type error: the condition; XD_COND_UNDEFINED_CONDITION
                            * when the element carries none; otherwise unused */
} xd_dialback_t;

/* Reads el, which must be a result or verify element in
 * jabber:server:dialback (any prefix).  Returns 0 and *out, or XD_EINVAL:
 * another element; 'from' or 'to' missing or empty; a verify without 'id';
 * an unknown 'type'; a request without a key.  Text in an answer is
 * ignored.  The caller answers XD_EINVAL with a stream error
 * (improper-addressing for missing addresses, else invalid-xml). */
int xd_dialback_parse(const xd_el_t *el, xd_dialback_t *out);

/* Builds the element d describes (R2: a new builder): <db:result> or
 * <db:verify> with from, to, id (when not NULL), 'type' for answers, the key
 * as text for requests, and for errors
 * <error type='…'><COND xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
 * with the condition's default type.  The strings are copied.  The caller
 * passes a d that xd_dialback_parse would accept (asserted). */
xd_el_t *xd_dialback_build(const xd_dialback_t *d);

/* The answer to the request req: same kind and id, from and to swapped,
 * type (VALID, INVALID or ERROR) and, for ERROR, cond.  A new builder. */
xd_el_t *xd_dialback_reply(const xd_dialback_t *req, xd_dialback_type type, xd_cond cond);

/* <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>: the
 * stream feature announcing dialback with error support (XEP-0220 2.4.2).
 * A new builder, to append to <stream:features/>. */
xd_el_t *xd_dialback_feature_new(void);

/* "result"/"verify" and ""/"valid"/"invalid"/"error" for logs. */
const char *xd_dialback_kind_name(xd_dialback_kind kind);
const char *xd_dialback_type_name(xd_dialback_type type);

#endif
