/*
 * c2s_int.h — the client role of the stream connection, shared by its
 * files: c2s.c (stream header, features, stanzas, the session's
 * transport) and c2s_sasl.c (SASL, RFC 6120 6).  Owner worker only.
 *
 *   connect ─► [TLS] ─► header ─► features ─► STARTTLS ─► SASL ─► restart
 *           ─► features: bind ─► <bind/> ─► session (router/session.h):
 *              every stanza from here on is the session manager's
 */
#ifndef XMPPD_STREAM_C2S_INT_H
#define XMPPD_STREAM_C2S_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "router/session.h"
#include "stream/c2s.h"
#include "stream/conn.h"
#include "stream/sasl.h"
#include "xmppd/jid.h"

typedef struct c2s_sm c2s_sm_t;
typedef struct c2s_sasl2 c2s_sasl2_t;

/* A client stream's state (c->rs of a connection with role xd_c2s_role). */
typedef struct c2s {
    xd_conn_t *conn;           /* the connection */
    xd_sasl_t *sasl;           /* SASL engine of the current exchange */
    xd_jid_t *jid;             /* the authorized account (bare JID) after SASL */
    xd_session_t *session;     /* the bound session, or NULL */
    c2s_sm_t *sm;              /* stream management once enabled (c2s_sm.c), or NULL */
    c2s_sasl2_t *s2;           /* the exchange is SASL2 (XEP-0388): what <authenticate/>
                                  asked for (c2s_sasl2.c); NULL = RFC 6120 SASL */
    xd_timer_t *delay;         /* SASL failure delay */
    char *pending_failure;     /* <failure/> to send when the delay ends */
    char *tried_user;          /* localpart whose credentials this exchange tests, or NULL */
    unsigned auth_failures;    /* SASL failures that tested credentials */
    unsigned proto_failures;   /* SASL failures that did not (bad cb type, 'y', malformed) */
    bool authenticated;        /* SASL succeeded */
    bool anonymous;            /* ... by ANONYMOUS */
    bool registered;           /* an account was registered in-band on this stream */
    bool delayed_close;        /* the failure being delayed is the last one allowed */
    bool banned;               /* ... because auth_limits banned the address */
    bool sasl_checked;         /* this exchange asked the backend about the credentials */
} c2s_t;

static inline c2s_t *
c2s_of(const xd_conn_t *c)
{
    return (c2s_t *)c->rs;
}

/* ---- c2s.c ---- */

/* Writes the stream features of the stream's stage. */
void c2s_send_features(xd_conn_t *c);
/* A bind request for this stream (router/session.h). */
xd_session_bind_req_t c2s_bind_req(xd_conn_t *c);
/* c2s_of(c)->session was just bound (`how`: "bind", "bind2", for the log). */
void c2s_bound(xd_conn_t *c, const char *how);

/* ---- c2s_sasl.c ---- */

/* A fresh SASL engine for this stage, with the mechanisms the host, the
 * auth backend and the TLS state allow. */
void c2s_sasl_setup(xd_conn_t *c);

/* An element in the SASL namespace (auth, response, abort). */
void c2s_sasl_element(xd_conn_t *c, const xd_el_t *el);

/* The path SASL and SASL2 share (the profile is c2s_of(c)->s2): */
typedef enum c2s_sasl_op { C2S_SASL_START, C2S_SASL_STEP, C2S_SASL_ABORT } c2s_sasl_op;
/* Whether an exchange may start or go on; otherwise the stream is closed
 * (after an encryption-required failure when `starting`). */
bool c2s_sasl_allowed(xd_conn_t *c, bool starting);
/* Base64 text (present: SASL2 had the element) to the engine and its
 * result out; flags are XD_SASL_START_*. */
void c2s_sasl_input(xd_conn_t *c, c2s_sasl_op op, const char *mech, const char *text, size_t tlen,
                    bool present, unsigned flags);
/* An engine result: challenge, success, failure (counted, delayed,
 * limited), or a backend question. */
void c2s_sasl_result(xd_conn_t *c, const xd_sasl_result_t *r);
/* A failure through the shared path (counting, delays, auth_limits). */
void c2s_sasl_failure(xd_conn_t *c, const xd_sasl_result_t *r);

/* ---- c2s_sasl2.c (XEP-0388 SASL2, XEP-0386 Bind2, XEP-0484 FAST) ---- */

/* An element in the urn:xmpp:sasl:2 namespace (authenticate, response, abort). */
void c2s_sasl2_element(xd_conn_t *c, const xd_el_t *el);
/* The <authentication/> feature (with <inline/>) appended to buf. */
size_t c2s_sasl2_feature(xd_conn_t *c, char *buf, size_t len, size_t cap);
/* The engine's SUCCESS in a SASL2 exchange, the account set: FAST
 * bookkeeping, Bind2, then <success/> and the features. */
void c2s_sasl2_success(xd_conn_t *c, const xd_sasl_result_t *r);
/* NEED_TOKEN: reads the client's FAST tokens for the engine. */
void c2s_sasl2_need_token(xd_conn_t *c, const xd_sasl_result_t *r);
/* The answer to a resume inline in <authenticate/> (<resumed/> or
 * <failed/>): kept for <success/> (true), or false when no SASL2 exchange
 * waits for one. */
bool c2s_sasl2_resume_answer(xd_conn_t *c, const char *xml, bool resumed);
/* Forgets the SASL2 request (the stream ends, or an RFC 6120 exchange starts). */
void c2s_sasl2_free(xd_conn_t *c);

/* The SASL failure delay ended. */
void c2s_sasl_delay_done(xd_conn_t *c);

/* ---- c2s_sm.c (XEP-0198) ---- */

/* Stream management is offered on this stream's host. */
bool c2s_sm_offered(const xd_conn_t *c);
/* An element in the urn:xmpp:sm:3 namespace: handled (true), else false. */
bool c2s_sm_element(xd_conn_t *c, const xd_el_t *el);
/* <enable/> (el: its attributes resume and max count): enables stream
 * management on the bound stream and writes the answer into buf
 * (<enabled/>, or <failed/> when it cannot be: false). */
bool c2s_sm_start(xd_conn_t *c, const xd_el_t *el, char *buf, size_t cap);
/* <resume previd h/> (XEP-0198 5) on an authenticated, unbound stream,
 * standalone or inline in SASL2: the answer goes to c2s_sasl2_resume_answer
 * first, else it is written.  True when the session is on another worker:
 * the stream is blocked until the answer. */
bool c2s_sm_resume(xd_conn_t *c, const char *previd, const char *h);
/* Writes again what the resumed session's client has not acknowledged. */
void c2s_sm_resend(xd_conn_t *c);
/* A stanza of the client was handled (counts for <a h/>). */
void c2s_sm_handled(xd_conn_t *c);
/* A stanza was written to the client: kept until acknowledged. */
void c2s_sm_sent(xd_conn_t *c, const xd_stanza_t *st);
/* The session has ended: what the client did not acknowledge is routed
 * again; stream management state freed. */
void c2s_sm_end(xd_conn_t *c);
/* The connection broke: with resumption enabled the session is parked
 * (true: s->session and s->sm are taken), otherwise false. */
bool c2s_sm_detach(xd_conn_t *c);
/* The session transport's calls for an id no connection has: a parked
 * session's (or one that moved: forwarded).  deliver: 0 or XD_ENOTFOUND;
 * close and info: false when the id is unknown. */
int c2s_sm_parked_deliver(uint64_t id, const xd_stanza_t *st);
bool c2s_sm_parked_close(uint64_t id, xd_stream_cond cond, const char *text);
bool c2s_sm_parked_info(uint64_t id, uint64_t now_ms, xd_session_stats_t *out);
xd_session_t *c2s_sm_parked_session(uint64_t id);

/* ---- c2s.c ---- */

/* The session transport of client streams. */
const xd_session_ops_t *xd_c2s_session_ops(void);

#endif
