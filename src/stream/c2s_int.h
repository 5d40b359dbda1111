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

/* A client stream's state (c->rs of a connection with role xd_c2s_role). */
typedef struct c2s {
    xd_conn_t *conn;           /* the connection */
    xd_sasl_t *sasl;           /* SASL engine of the current exchange */
    xd_jid_t *jid;             /* the authorized account (bare JID) after SASL */
    xd_session_t *session;     /* the bound session, or NULL */
    c2s_sm_t *sm;              /* stream management once enabled (c2s_sm.c), or NULL */
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

/* ---- c2s_sasl.c ---- */

/* A fresh SASL engine for this stage, with the mechanisms the host, the
 * auth backend and the TLS state allow. */
void c2s_sasl_setup(xd_conn_t *c);

/* An element in the SASL namespace (auth, response, abort). */
void c2s_sasl_element(xd_conn_t *c, const xd_el_t *el);

/* The SASL failure delay ended. */
void c2s_sasl_delay_done(xd_conn_t *c);

/* ---- c2s_sm.c (XEP-0198) ---- */

/* Stream management is offered on this stream's host. */
bool c2s_sm_offered(const xd_conn_t *c);
/* An element in the urn:xmpp:sm:3 namespace: handled (true), else false. */
bool c2s_sm_element(xd_conn_t *c, const xd_el_t *el);
/* <enable/>: enables stream management on the bound stream and returns
 * the answer to write (<enabled/>, or <failed/> when it cannot be). */
const char *c2s_sm_start(xd_conn_t *c);
/* A stanza of the client was handled (counts for <a h/>). */
void c2s_sm_handled(xd_conn_t *c);
/* A stanza was written to the client: kept until acknowledged. */
void c2s_sm_sent(xd_conn_t *c, const xd_stanza_t *st);
/* The session has ended: what the client did not acknowledge is routed
 * again; stream management state freed. */
void c2s_sm_end(xd_conn_t *c);

#endif
