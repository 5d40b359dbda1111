/*
 * sasl.h — the SASL server engine of a stream (RFC 6120 6, RFC 4422):
 * PLAIN (RFC 4616), SCRAM-SHA-1/256/512 and their -PLUS variants (RFC 5802,
 * RFC 7677; channel binding tls-exporter RFC 9266 and tls-server-end-point
 * RFC 5929, advertised with XEP-0440), ANONYMOUS (RFC 4505, XEP-0175) and
 * EXTERNAL with client certificates (XEP-0178).
 *
 * Where it sits: src/stream, driven by the c2s.  The c2s parses <auth/>,
 * <response/> and <abort/>, base64-decodes the payload and hands the raw
 * bytes to this engine; it base64-encodes what comes back.  The engine is a
 * pure, synchronous state machine: it never does I/O, never blocks, never
 * logs and never runs PBKDF2.  What it cannot decide alone it asks for in
 * its result (NEED_SCRAM, NEED_CHECK, NEED_EXTERNAL); the c2s asks the auth
 * backend (include/xmppd/auth.h, asynchronous) and answers with the
 * matching xd_sasl_provide_*() call.
 *
 *           start(PLAIN) ──► NEED_CHECK ──provide_check──► SUCCESS | FAILURE
 *          ╱
 *   IDLE ──── start(SCRAM-*) ──► NEED_SCRAM ──provide_scram──► CHALLENGE
 *     ▲    ╲                         (server-first) ──step(client-final)──►
 *     │     ╲                        SUCCESS (v=…) | FAILURE
 *     │      ├─ start(ANONYMOUS) ──► SUCCESS | FAILURE
 *     │      └─ start(EXTERNAL) ──► NEED_EXTERNAL ──provide_external──► …
 *     │
 *     └── every FAILURE (abort included) returns to IDLE: the client may
 *         try again with a new start (RFC 6120 6.4.5); the c2s counts the
 *         failures (max_auth_failures) and delays them.  SUCCESS is final.
 *
 * A start without an initial response (data == NULL) gets an empty
 * CHALLENGE first; the next step carries the client's first message
 * (RFC 4422 3.3, RFC 6120 6.4.2).
 *
 * Protocol errors are results, not error codes: every start/step/provide
 * call that returns 0 has filled *r, and a FAILURE carries the condition to
 * send.  A call returns XD_EINVAL only for misuse (a provide call when that
 * answer is not awaited, e.g. from an exchange that failed meanwhile); *r is
 * then XD_SASL_NONE and the state is unchanged.  The c2s keeps reading
 * paused while a NEED_* answer is outstanding, so a stale answer cannot meet
 * a newer exchange.
 *
 * Memory: the engine is owned by one stream (owner worker only).  Pointers
 * in a result (out, text, user, password, authzid, jid) belong to the
 * engine and stay valid until the next call on it or xd_sasl_free(); copy
 * or xd_jid_ref() what you keep.  Secrets (the PLAIN password, copied
 * credentials) are wiped with OPENSSL_cleanse when the exchange ends.
 *
 * Unknown users in SCRAM: when the backend has no credential (status
 * XD_ENOTFOUND), the exchange goes on with a salt derived from
 * HMAC(secret, host, hash, user) and fake_iterations, and fails at the
 * proof with <not-authorized/>, exactly as a wrong password does.
 */
#ifndef XMPPD_STREAM_SASL_H
#define XMPPD_STREAM_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/jid.h"
#include "xmppd/scram.h"
#include "xmppd/str.h"

#define XD_SASL_MSG_MAX 8192     /* bytes: longest decoded client message accepted */
#define XD_SASL_CB_DATA_MAX 128  /* bytes: longest channel-binding data */
#define XD_SASL_NONCE_BYTES 24   /* random bytes in a server nonce (32 base64 chars) */
#define XD_SASL_TRACE_MAX 255    /* characters of an ANONYMOUS trace token (RFC 4505 2) */

/* The mechanisms, in advertisement order: strongest first. */
typedef enum xd_sasl_mech {
    XD_SASL_SCRAM_SHA_512_PLUS = 0,
    XD_SASL_SCRAM_SHA_256_PLUS,
    XD_SASL_SCRAM_SHA_1_PLUS,
    XD_SASL_SCRAM_SHA_512,
    XD_SASL_SCRAM_SHA_256,
    XD_SASL_SCRAM_SHA_1,
    XD_SASL_PLAIN,
    XD_SASL_ANONYMOUS,
    XD_SASL_EXTERNAL,
    /* FAST tokens (XEP-0484, draft-schmaus-kitten-sasl-ht): offered in
     * SASL2's <fast/> only, never in the <mechanisms/> lists. */
    XD_SASL_HT_SHA_256_ENDP, /* channel binding tls-server-end-point */
    XD_SASL_HT_SHA_256_EXPR, /* tls-exporter */
    XD_SASL_HT_SHA_256_UNIQ, /* tls-unique on TLS 1.2, tls-exporter on TLS 1.3 */
    XD_SASL_HT_SHA_256_NONE, /* no channel binding */
    XD_SASL_MECH_COUNT
} xd_sasl_mech;

#define XD_SASL_BIT(mech) (1u << (mech)) /* a mechanism in a set */
#define XD_SASL_MECHS_SCRAM                                                       \
    (XD_SASL_BIT(XD_SASL_SCRAM_SHA_512) | XD_SASL_BIT(XD_SASL_SCRAM_SHA_256) |    \
     XD_SASL_BIT(XD_SASL_SCRAM_SHA_1))
#define XD_SASL_MECHS_SCRAM_PLUS                                                  \
    (XD_SASL_BIT(XD_SASL_SCRAM_SHA_512_PLUS) | XD_SASL_BIT(XD_SASL_SCRAM_SHA_256_PLUS) | \
     XD_SASL_BIT(XD_SASL_SCRAM_SHA_1_PLUS))
#define XD_SASL_MECHS_HT                                                          \
    (XD_SASL_BIT(XD_SASL_HT_SHA_256_ENDP) | XD_SASL_BIT(XD_SASL_HT_SHA_256_EXPR) |  \
     XD_SASL_BIT(XD_SASL_HT_SHA_256_UNIQ) | XD_SASL_BIT(XD_SASL_HT_SHA_256_NONE))
#define XD_SASL_MECHS_ALL ((1u << XD_SASL_MECH_COUNT) - 1)

#define XD_SASL_HT_KEY_LEN 32 /* bytes: SHA-256 of a FAST token, the HMAC key (see below) */

/* Flags of xd_sasl_start_ex: what the profile (RFC 6120 SASL or XEP-0388
 * SASL2) allows for this exchange. */
#define XD_SASL_START_SSDP 1u /* SCRAM: the server-first message carries XEP-0474's
                                 h= hash of the advertised mechanisms and cb types */
#define XD_SASL_START_FAST 2u /* the HT-* mechanisms may be used (SASL2 with <fast/>) */

/* Channel-binding types (IANA "Channel-binding unique prefix").  tls-unique
 * is for TLS 1.2 only: it is undefined for TLS 1.3 (RFC 9266 3), and the c2s
 * offers it only on TLS 1.2 connections, where most existing clients
 * (slixmpp, older Smack and Gajim builds) know no other type; on TLS 1.3 it
 * accepts it without advertising it (opts.cb_quiet, sasl_tls13_tls_unique). */
typedef enum xd_sasl_cb {
    XD_SASL_CB_TLS_EXPORTER = 0,     /* RFC 9266: exporter "EXPORTER-Channel-Binding", 32 bytes */
    XD_SASL_CB_TLS_SERVER_END_POINT, /* RFC 5929 4.1: hash of our certificate */
    XD_SASL_CB_TLS_UNIQUE,           /* RFC 5929 3.1: first Finished message (TLS 1.2) */
    XD_SASL_CB_COUNT
} xd_sasl_cb;

#define XD_SASL_CB_BIT(cb) (1u << (cb))

/* SASL failure conditions (RFC 6120 6.5). */
typedef enum xd_sasl_cond {
    XD_SASL_COND_ABORTED = 0,
    XD_SASL_COND_ACCOUNT_DISABLED,
    XD_SASL_COND_CREDENTIALS_EXPIRED,
    XD_SASL_COND_ENCRYPTION_REQUIRED,
    XD_SASL_COND_INCORRECT_ENCODING,
    XD_SASL_COND_INVALID_AUTHZID,
    XD_SASL_COND_INVALID_MECHANISM,
    XD_SASL_COND_MALFORMED_REQUEST,
    XD_SASL_COND_MECHANISM_TOO_WEAK,
    XD_SASL_COND_NOT_AUTHORIZED,
    XD_SASL_COND_TEMPORARY_AUTH_FAILURE,
    XD_SASL_COND_COUNT
} xd_sasl_cond;

/* What a result asks the c2s to do. */
typedef enum xd_sasl_kind {
    XD_SASL_NONE = 0,       /* nothing (the call returned XD_EINVAL) */
    XD_SASL_CHALLENGE,      /* send <challenge/> with out[0..out_len) */
    XD_SASL_SUCCESS,        /* send <success/> (with out as additional data when out != NULL) */
    XD_SASL_FAILURE,        /* send <failure/> with cond (and text) */
    XD_SASL_NEED_SCRAM,     /* xd_auth_get_scram(host, user, hash) → xd_sasl_provide_scram */
    XD_SASL_NEED_CHECK,     /* xd_auth_check_password(host, user, password) → provide_check */
    XD_SASL_NEED_EXTERNAL,  /* the client certificate's identities → provide_external */
    XD_SASL_NEED_TOKEN,     /* HT-*: the FAST tokens of user → provide_token */
} xd_sasl_kind;

/* Gets the channel-binding data of `type` for this stream into out[0..cap)
 * and its length into *out_len; 0 or a negative XD_E* (the exchange then
 * fails with temporary-auth-failure).  Called synchronously, on the owner
 * loop; must not block. */
typedef int (*xd_sasl_cb_data_fn)(void *arg, xd_sasl_cb type, uint8_t *out, size_t cap,
                                  size_t *out_len);

/* Authorization policy (RFC 6120 6.3.8): may the authenticated `user`
 * (bare user@host) act as `authzid` (a bare JID other than user)?
 * Synchronous; must not block. */
typedef bool (*xd_sasl_authz_fn)(void *arg, const xd_jid_t *user, const xd_jid_t *authzid);

/* How an engine is set up.  Read by xd_sasl_new() only; everything is
 * copied, so the caller may free it afterwards. */
typedef struct xd_sasl_opts {
    const char *host;          /* served domain, prepared (required) */
    unsigned mechs;            /* XD_SASL_BIT set of enabled mechanisms; the -PLUS bits
                                  count only when cb_types != 0 */
    unsigned mechs_need_tls;   /* XD_SASL_BIT set withheld for want of TLS: choosing one
                                  gives encryption-required instead of invalid-mechanism */
    unsigned cb_types;         /* XD_SASL_CB_BIT set this stream can bind to; 0 = none */
    unsigned cb_quiet;         /* XD_SASL_CB_BIT set also accepted with -PLUS but never
                                  advertised, and not enough alone to offer -PLUS (legacy
                                  tls-unique on TLS 1.3; see xd_sasl_cb_offered) */
    xd_sasl_cb_data_fn cb_data; /* gets binding data; NULL: use cb_bytes */
    xd_str_t cb_bytes[XD_SASL_CB_COUNT]; /* precomputed binding data, used when cb_data is
                                            NULL; copied (at most XD_SASL_CB_DATA_MAX) */
    xd_sasl_authz_fn authz;    /* authorization policy; NULL = only the own bare JID */
    void *arg;                 /* passed to cb_data and authz */
    xd_str_t secret;           /* key for fake SCRAM salts (copied, at most 64 bytes
                                  used); empty = the node secret's key for the purpose
                                  (core/secret.h: stable across restarts and nodes) */
    unsigned fake_iterations;  /* "i=" for unknown users: set it to the host's
                                  scram_iterations; 0 = XD_SCRAM_ITERATIONS_DEFAULT */
} xd_sasl_opts_t;

/* A result: what the c2s must do next.  Filled by every start, step,
 * provide and abort call; pointers are lent (see the file comment). */
typedef struct xd_sasl_result {
    xd_sasl_kind kind;        /* what to do */
    xd_sasl_mech mech;        /* the mechanism of the exchange (not set for NONE) */
    const uint8_t *out;       /* CHALLENGE: challenge (may be empty); SUCCESS: additional
                                 data, NULL = none.  Raw bytes: the c2s base64-encodes */
    size_t out_len;           /* bytes at out */
    xd_sasl_cond cond;        /* FAILURE: the condition */
    const char *text;         /* FAILURE: English text for <text/>, NULL = none */
    const char *user;         /* NEED_SCRAM, NEED_CHECK, SUCCESS: the prepared localpart
                                 (NULL for ANONYMOUS) */
    const char *password;     /* NEED_CHECK: the password as sent, NUL-terminated, not
                                 prepared (the backend prepares it) */
    size_t password_len;      /* NEED_CHECK: its length in bytes */
    xd_scram_hash hash;       /* NEED_SCRAM: the credential wanted */
    const xd_jid_t *authzid;  /* NEED_EXTERNAL, SUCCESS: the authzid the client sent (a
                                 bare JID), NULL = none */
    const xd_jid_t *jid;      /* SUCCESS: the JID the stream is authorized as (authzid,
                                 else user@host); NULL for ANONYMOUS */
    bool anonymous;           /* SUCCESS: by ANONYMOUS; the c2s picks a random localpart */
    int cb;                   /* SUCCESS: the xd_sasl_cb bound to, -1 = none */
    int token;                /* SUCCESS by HT-*: index of the token that matched */
} xd_sasl_result_t;

/* A FAST token as stored: the key is SHA-256(token).  Tokens are longer
 * than SHA-256's block (64 bytes), so HMAC (RFC 2104 2) keys with exactly
 * this hash: HMAC(token, m) == HMAC(SHA-256(token), m), and the server
 * never needs the token itself. */
typedef struct xd_sasl_token {
    uint8_t key[XD_SASL_HT_KEY_LEN]; /* SHA-256 of the token */
    xd_sasl_mech mech;               /* the HT-* mechanism it was issued for */
} xd_sasl_token_t;

typedef struct xd_sasl xd_sasl_t;

/* A new engine for one stream (owner worker only).  Aborts on a NULL host
 * (a programming error).  Free with xd_sasl_free. */
xd_sasl_t *xd_sasl_new(const xd_sasl_opts_t *o);

/* Frees s, wiping every secret it still holds.  NULL is a no-op. */
void xd_sasl_free(xd_sasl_t *s);

/* The NULL-terminated list of mechanism names to advertise, strongest
 * first; -PLUS only when channel binding is available.  Lives as long as s. */
const char *const *xd_sasl_mechanisms(const xd_sasl_t *s);

/* The XD_SASL_CB_BIT set to advertise in <sasl-channel-binding
 * xmlns='urn:xmpp:sasl-cb:0'/> (XEP-0440); 0 when no -PLUS is offered.
 * cb_quiet types are never in it.  The 'y' flag is a downgrade (RFC 5802
 * 6) whenever -PLUS is offered, whatever the client tried before. */
unsigned xd_sasl_cb_offered(const xd_sasl_t *s);

/* "SCRAM-SHA-256-PLUS", …; NULL when out of range. */
const char *xd_sasl_mech_name(xd_sasl_mech mech);

/* The mechanism called `name` (exact, case-sensitive), or -1. */
int xd_sasl_mech_parse(xd_str_t name);

/* "tls-exporter", "tls-server-end-point", "tls-unique"; NULL when out of range. */
const char *xd_sasl_cb_name(xd_sasl_cb cb);

/* The element name of a condition ("not-authorized"); NULL when out of
 * range. */
const char *xd_sasl_cond_name(xd_sasl_cond cond);

/* <auth mechanism='mech'>: starts an exchange.  data[0..len) is the decoded
 * initial response; data == NULL means none was sent ("=" is an empty one,
 * data != NULL with len 0).  Always 0 with *r filled. */
int xd_sasl_start(xd_sasl_t *s, xd_str_t mech, const void *data, size_t len,
                  xd_sasl_result_t *r);

/* As xd_sasl_start, with XD_SASL_START_* flags (xd_sasl_start: none).
 * HT-* mechanisms without XD_SASL_START_FAST are invalid-mechanism. */
int xd_sasl_start_ex(xd_sasl_t *s, xd_str_t mech, const void *data, size_t len, unsigned flags,
                     xd_sasl_result_t *r);

/* The NULL-terminated HT-* mechanism names to advertise in SASL2's <fast/>
 * (XEP-0484), channel-binding ones first.  Lives as long as s. */
const char *const *xd_sasl_fast_mechanisms(const xd_sasl_t *s);

/* True for the HT-* mechanisms. */
bool xd_sasl_mech_is_ht(xd_sasl_mech mech);

/* HT (draft-schmaus-kitten-sasl-ht 3): the initiator's or responder's
 * hashed token, HMAC-SHA-256(key, "Initiator"|"Responder" || cb), where key
 * is SHA-256(token) (xd_sasl_token_t).  out gets 32 bytes. */
void xd_sasl_ht_hmac(const uint8_t key[XD_SASL_HT_KEY_LEN], bool initiator, const uint8_t *cb,
                     size_t cb_len, uint8_t out[32]);

/* The answer to NEED_TOKEN: status 0 with toks[0..n) the user's unexpired
 * tokens for this client (read during the call only); XD_ENOTFOUND (or n
 * == 0) fails with not-authorized, other errors temporary-auth-failure.
 * A token matches when its mechanism is the exchange's and the client's
 * hashed token equals (constant time) the one computed with it; SUCCESS
 * then carries the responder's hashed token as additional data and the
 * index in r->token.  XD_EINVAL when NEED_TOKEN is not outstanding. */
int xd_sasl_provide_token(xd_sasl_t *s, int status, const xd_sasl_token_t *toks, size_t n,
                          xd_sasl_result_t *r);

/* <response/>: the next client message.  Always 0 with *r filled (a
 * message nobody waits for is a FAILURE malformed-request). */
int xd_sasl_step(xd_sasl_t *s, const void *data, size_t len, xd_sasl_result_t *r);

/* The answer to NEED_SCRAM: status and cred as xd_auth_get_scram's
 * callback gave them (cred is read during the call only).  XD_ENOTFOUND
 * goes on with a fake credential; other errors fail with
 * temporary-auth-failure.  XD_EINVAL when NEED_SCRAM is not outstanding. */
int xd_sasl_provide_scram(xd_sasl_t *s, int status, const xd_scram_cred_t *cred,
                          xd_sasl_result_t *r);

/* The answer to NEED_CHECK: status and ok as xd_auth_check_password's
 * callback gave them.  XD_ENOTFOUND and XD_EAUTH_REFUSED count as a wrong
 * password; other errors give temporary-auth-failure.  XD_EINVAL when
 * NEED_CHECK is not outstanding. */
int xd_sasl_provide_check(xd_sasl_t *s, int status, bool ok, xd_sasl_result_t *r);

/* The answer to NEED_EXTERNAL (XEP-0178 3): ids[0..n) are the verified
 * client certificate's XMPP addresses (id-on-xmppAddr), or JIDs mapped from
 * it, that correspond to existing accounts (the c2s checks existence).
 * Those not user@host are ignored.  No authzid: exactly one id → SUCCESS as
 * it, several → invalid-authzid.  An authzid: one of the ids → SUCCESS as
 * it; otherwise, with exactly one id, the authz policy decides
 * (invalid-authzid when it says no).  No usable id → not-authorized.
 * status != 0: XD_ENOTFOUND → not-authorized, others temporary-auth-failure.
 * XD_EINVAL when NEED_EXTERNAL is not outstanding. */
int xd_sasl_provide_external(xd_sasl_t *s, int status, const xd_str_t *ids, size_t n,
                             xd_sasl_result_t *r);

/* <abort/>: ends the exchange with FAILURE aborted (RFC 6120 6.4.5); after
 * SUCCESS it is a FAILURE malformed-request and the success stands.  r may
 * be NULL. */
void xd_sasl_abort(xd_sasl_t *s, xd_sasl_result_t *r);

/* True after SUCCESS. */
bool xd_sasl_succeeded(const xd_sasl_t *s);

/* ---- tests only ------------------------------------------------------------------------------ */

/* Uses `snonce` (printable ASCII without ',') as the server part of the
 * next SCRAM nonces instead of random bytes, so that the RFC 5802 / 7677
 * test vectors can be replayed.  NULL goes back to random nonces. */
void xd_sasl_test_set_nonce(xd_sasl_t *s, const char *snonce);

#endif
