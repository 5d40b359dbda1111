/*
 * preauth.h — a pre-authentication token as the router sees it (hooks.h,
 * C2S_UNAUTHENTICATED_IQ).
 *
 * The stream that runs C2S_UNAUTHENTICATED_IQ gives the modules a token
 * (xd_preauth_t, opaque to them) and takes the answer through it:
 * xd_preauth_answer (src/router/hooks.c) calls the token's `answer`.  The
 * stream embeds this struct in its own request record and sets `answer`
 * before the hook runs.  So the hook API, in the router, names no stream
 * code, and every kind of stream answers its own tokens (docs/design.md,
 * Layers: the router sits below the streams).
 */
#ifndef XMPPD_ROUTER_PREAUTH_H
#define XMPPD_ROUTER_PREAUTH_H

#include "xmppd/hooks.h"

/* Written by the stream that makes the token, before the hook runs; read-only after. */
struct xd_preauth {
    /* Writes reply, applies flags and frees the token (xd_preauth_answer's contract). */
    void (*answer)(xd_preauth_t *req, const xd_stanza_t *reply, unsigned flags);
};

#endif
