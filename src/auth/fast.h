/*
 * fast.h — FAST tokens (XEP-0484) in the database: per account and client
 * (the SASL2 user-agent id), two slots as XEP-0484 8.1 describes: slot 0
 * the token in use, slot 1 a newer one issued and not used yet.  Only
 * SHA-256(token) is stored (stream/sasl.h, xd_sasl_token_t, says why that
 * is enough for the HT mechanisms).  Hosts with auth_method internal only:
 * the tokens go with the account (ON DELETE CASCADE) and with its password
 * (xd_user_set_scram deletes them).
 *
 * Asynchronous like auth.h: call on a worker loop; the callback runs later
 * on it, exactly once, unless the call returns an error.  XD_ENOTSUP when
 * the host is not internal.
 */
#ifndef XMPPD_AUTH_FAST_H
#define XMPPD_AUTH_FAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/auth.h"

#define XD_FAST_KEY_LEN 32     /* SHA-256 of a token */
#define XD_FAST_MECH_MAX 24    /* room for "HT-SHA-256-ENDP" and NUL */
#define XD_FAST_CLIENT_MAX 256 /* bytes of a user-agent id */

/* A stored token. */
typedef struct xd_fast_tok {
    uint8_t key[XD_FAST_KEY_LEN]; /* SHA-256(token) */
    char mech[XD_FAST_MECH_MAX];  /* the mechanism it was issued for */
    int slot;                     /* 0 in use, 1 issued and not used yet */
    int64_t expires_ms;           /* Unix time in ms */
    int64_t count;                /* highest replay count seen (XEP-0484 'count'), 0 none */
} xd_fast_tok_t;

/* The unexpired tokens (at most 2, toks lent for the call). */
typedef void (*xd_fast_get_cb)(void *arg, int status, const xd_fast_tok_t *toks, size_t n);

int xd_fast_get(const char *host, const char *user, const char *client, xd_fast_get_cb cb,
                void *arg);

/* What a successful SASL2 authentication changes, in one transaction. */
typedef struct xd_fast_update {
    const char *host, *user, *client; /* whose tokens */
    int used_slot;          /* the token a FAST login used: 1 moves it to slot 0
                               (replacing the older one, XEP-0484 8.1); -1 none */
    int64_t count;          /* replay count to keep for the used token; -1 none */
    bool invalidate;        /* the client asked to invalidate: delete its tokens */
    bool issue;             /* store key/mech/expires_ms in slot 1 */
    uint8_t key[XD_FAST_KEY_LEN];
    const char *mech;
    int64_t expires_ms;
} xd_fast_update_t;

int xd_fast_update(const xd_fast_update_t *u, xd_auth_cb cb, void *arg);

/* Wall-clock Unix time in ms (token expiry). */
int64_t xd_fast_now_ms(void);

#endif
