/*
 * tls.h — the TLS engine and the certificate store, on OpenSSL 3
 * (RFC 6120 5 STARTTLS, XEP-0368 direct TLS, RFC 7590, RFC 6125).
 * Implemented by src/stream/tls_*.c, one file per noun (tls_int.h lists
 * them and what they share).
 *
 * Two objects:
 *
 *   xd_tls_store_t   every certificate the server has, one SSL_CTX per
 *                    certificate, indexed by the names it covers, and the
 *                    trust anchors peers are verified against.  Loaded
 *                    once off the loops (it reads files and may generate a
 *                    key), then immutable and shared by all workers through
 *                    an atomic reference count.  A config reload loads a new
 *                    store; connections keep the one they started with.
 *
 *   xd_tls_t         one TLS connection, server side (c2s, s2s-in) or
 *                    client side (s2s-out).  Owner loop only.  The engine
 *                    does no socket I/O: the caller hands in the ciphertext
 *                    it read (xd_tls_input) and gets ciphertext out through
 *                    io.send, plaintext out through io.plain.
 *
 * Data path (zero copies, no buffers kept between calls):
 *
 *      socket ──read──► xd_tls_input(slice) ──► custom BIO reads the slice
 *                                                  │ SSL_read
 *                                                  ▼
 *                             io.plain(ud, p, n) ◄── plaintext (stack buffer)
 *      socket ◄──write── io.send(ud, c, n) ◄── custom BIO write ◄── SSL_write
 *                                                  ▲
 *                             xd_tls_send(plain) ──┘
 *
 * Memory: OpenSSL's record buffers are released when idle
 * (SSL_MODE_RELEASE_BUFFERS), the BIO holds nothing, the server-side session
 * cache is off (resumption by stateless tickets), so an idle connection costs
 * only the SSL object, its session and cipher state (figures in
 * bench/bench_tls_mem.c).  Ciphertext is copied into the engine only while
 * the caller has paused delivery (xd_tls_pause).
 *
 * Connection states:
 *
 *   HANDSHAKE ──ok──► OPEN ──peer close_notify──► PEER_CLOSED (input: XD_ECLOSED)
 *       │               │
 *       └──alert/garbage┴──────────► FAILED (input/send: XD_ETLS, xd_tls_error)
 *
 *   xd_tls_shutdown() sends our close_notify from any state but FAILED;
 *   afterwards xd_tls_send() returns XD_ECLOSED, input is still decrypted.
 *
 * Peer certificates never fail a handshake.  A client connection accepts
 * whatever the server presents, and a server connection that asked for a
 * client certificate (xd_tls_request_cert) goes on without one or with one
 * that does not verify.  After the handshake xd_tls_peer_verify judges the
 * certificate (chain and name) and the caller applies its policy: for s2s
 * a valid certificate allows SASL EXTERNAL, otherwise dialback if allowed
 * (RFC 7590, XEP-0178, XEP-0220).
 */
#ifndef XMPPD_STREAM_TLS_H
#define XMPPD_STREAM_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/str.h"

typedef struct xd_tls_store xd_tls_store_t;
typedef struct xd_tls xd_tls_t;

/* ---- certificate store ------------------------------------------------- */

/* What to load.  Borrowed by xd_tls_store_load only; nothing is kept. */
typedef struct xd_tls_store_opts {
    const char *const *certfiles; /* glob(3) patterns of PEM files: certificates, chains and
                                   * unencrypted private keys, in one file or several */
    size_t ncertfiles;            /* entries in certfiles */
    const char *const *hosts;     /* served domains (U-labels or A-labels) */
    size_t nhosts;                /* entries in hosts */
    const char *data_dir;         /* self-signed certificates go to <data_dir>/certs; NULL =
                                   * a host without a certificate is an error */
    const char *min_version;      /* "1.2" (NULL = default) or "1.3" */
    const char *ciphers;          /* TLS <= 1.2 cipher list, NULL = ECDHE with AEAD only */
    const char *ciphersuites;     /* TLS 1.3 suites, NULL = OpenSSL's default */
    const char *ca_file;          /* PEM file of trusted CA certificates for verifying peers
                                   * (xd_tls_peer_verify); read at load */
    const char *ca_path;          /* directory of trusted CA certificates in OpenSSL's hashed
                                   * layout (`openssl rehash`); read when a peer is verified,
                                   * each file once.  Both NULL = the system's default trust
                                   * store (OpenSSL's default file and directory, or
                                   * $SSL_CERT_FILE / $SSL_CERT_DIR) */
} xd_tls_store_opts_t;

/* A self-signed certificate the store uses for a host that no certfile
 * covers.  The caller logs a warning for each: clients will not trust it. */
typedef struct xd_tls_selfsigned {
    const char *host; /* the served host, as given in opts.hosts */
    const char *path; /* <data_dir>/certs/<host A-label>.pem */
    bool created;     /* true: generated by this load (new or the old one expired) */
} xd_tls_selfsigned_t;

/* Loads a store.  Blocking (files, key generation): call off the loops.
 *
 * Every file matched by the patterns is read; each PEM block is a
 * certificate or a private key (other blocks are skipped).  A key is
 * paired with the certificate that holds its public key; the chain of a
 * certificate is built from the other certificates loaded (intermediates
 * only, no self-signed roots).  A certificate is indexed under its SAN
 * dNSNames ("*.example.org" covers one label), SAN otherName id-on-xmppAddr
 * and id-on-dnsSRV domains, and its subject CN only when it has no SAN
 * dNSName.  When two certificates cover a name, the one expiring last wins.
 *
 * For each host that no certificate covers, <data_dir>/certs/<host>.pem is
 * used if it exists and is still valid; otherwise a self-signed ECDSA P-256
 * certificate (SAN host and *.host, one year, random serial) is written
 * there, mode 0600, directory 0700, atomically (temporary file + rename).
 *
 * Trust anchors for xd_tls_peer_verify: every certificate of ca_file and
 * the directory ca_path; when neither is given, the system's bundle file
 * ($SSL_CERT_FILE or OpenSSL's default), read now, or only when there is
 * none the default directory (looked up lazily).  The
 * Debian bundle (~145 CAs) costs ~30 ms and ~1.2 MB per store; a reload
 * holds two stores for a while.
 *
 * Returns 0 and *out (one reference), or on failure *out = NULL and
 *   XD_ETLS_CERT  a file is missing, unreadable, not PEM, a key matches no
 *                 certificate, a leaf certificate has no key, a key is
 *                 encrypted, OpenSSL refuses a certificate (too weak, ...),
 *                 the self-signed certificate cannot be written, ca_file
 *                 holds no certificate or cannot be read, or ca_path is not
 *                 a directory;
 *   XD_EINVAL     a bad option (min_version, ciphers, host name), or no
 *                 certificate at all.
 * *err (when err != NULL) is then a message naming the file or option
 * ("/etc/x.pem: private key matches no certificate"); xd_free it. */
int xd_tls_store_load(const xd_tls_store_opts_t *o, xd_tls_store_t **out, char **err);

/* Takes one more reference (atomic; any thread).  Returns st. */
xd_tls_store_t *xd_tls_store_ref(xd_tls_store_t *st);

/* Drops a reference; the last one frees the store.  NULL is a no-op. */
void xd_tls_store_unref(xd_tls_store_t *st);

/* True when a certificate of the store covers host (exact name or a
 * wildcard one label up), case-insensitively; U-labels are converted. */
bool xd_tls_store_has(const xd_tls_store_t *st, const char *host);

/* Number of certificates (SSL_CTXs) in the store. */
size_t xd_tls_store_count(const xd_tls_store_t *st);

/* Self-signed certificates in use; *n gets the count.  Lent: valid while
 * the caller holds its reference. */
const xd_tls_selfsigned_t *xd_tls_store_selfsigned(const xd_tls_store_t *st, size_t *n);

/* Warnings found while loading ("pattern matched no file"); *n gets the
 * count.  Lent as above.  Each one is a line for XD_LOG. */
const char *const *xd_tls_store_warnings(const xd_tls_store_t *st, size_t *n);

/* ---- one connection ---------------------------------------------------- */

/* io.plain returns this to stop delivery after the bytes it was given. */
#define XD_TLS_PAUSE 1

/* The caller's side of a connection.  Copied by xd_tls_server_new and
 * xd_tls_client_new. */
typedef struct xd_tls_io {
    void *ud; /* passed to every callback */
    /* Ciphertext out: copy data[0..len) and write it to the socket.  Returns
     * 0, or a negative code that fails the operation that caused the write
     * (xd_tls_input/send return it).  Called from xd_tls_input (handshake,
     * tickets, alerts), xd_tls_send and xd_tls_shutdown. */
    int (*send)(void *ud, const uint8_t *data, size_t len);
    /* Plaintext in, in order, possibly many times per xd_tls_input.  The
     * bytes are lent for the call.  Returns 0 to go on or XD_TLS_PAUSE to
     * stop: the rest stays in the engine until xd_tls_resume.  May call
     * xd_tls_send, xd_tls_shutdown, xd_tls_pause and xd_tls_resume; must not
     * call xd_tls_input or xd_tls_free. */
    int (*plain)(void *ud, const uint8_t *data, size_t len);
    /* Optional (NULL = none): the handshake has just finished; version,
     * cipher and SNI are known.  Called once, before any plaintext.  Same
     * rules as plain. */
    void (*handshake)(void *ud);
} xd_tls_io_t;

/* A server connection that presents the certificate for default_host
 * (the stream's 'to' for STARTTLS, the listener's host for direct TLS;
 * NULL or uncovered = any certificate) unless the client's SNI names
 * another covered host.  Takes a store reference.  Sends nothing yet: the
 * client speaks first.  Returns 0 and *out, or XD_ETLS (OpenSSL failed). */
int xd_tls_server_new(xd_tls_store_t *st, const char *default_host, const xd_tls_io_t *io,
                      xd_tls_t **out);

/* Server side, before the first xd_tls_input: asks the client for a
 * certificate (an s2s listener, for SASL EXTERNAL; c2s for XEP-0178).  The
 * handshake succeeds whether or not one comes and whether or not it
 * verifies; xd_tls_peer_verify tells afterwards.  Returns 0, or XD_EINVAL
 * on a client connection or once the handshake has begun. */
int xd_tls_request_cert(xd_tls_t *t);

/* Server side, before the first xd_tls_input: the one ALPN protocol this
 * connection speaks ("xmpp-client" or "xmpp-server" on a XEP-0368 direct TLS
 * port; copied).  A client that offers ALPN without it gets a fatal
 * no_application_protocol alert (RFC 7301 3.2); a client that offers no
 * ALPN is served.  Without this call the ALPN extension is ignored.
 * Returns 0, or XD_EINVAL (client connection, handshake begun, proto empty
 * or longer than 255 bytes). */
int xd_tls_set_alpn(xd_tls_t *t, const char *proto);

/* A client connection (outgoing s2s, STARTTLS or XEP-0368 direct TLS).
 *   local_host   our domain: when the server asks for a certificate we
 *                present the store's certificate for it (RFC 7590 / SASL
 *                EXTERNAL on the other side); NULL or not covered by the
 *                store = none (an empty Certificate message);
 *   remote_host  the peer's XMPP domain, sent as SNI (XEP-0368 3: the
 *                domain, not the SRV target; U-labels are converted; an
 *                IP-address domain such as "192.0.2.1" or "[2001:db8::1]"
 *                is not sent, RFC 6066 3); it is not checked here: call
 *                xd_tls_peer_verify after the handshake;
 *   alpn         one ALPN protocol to offer ("xmpp-server" for direct
 *                TLS), NULL = no ALPN (STARTTLS).  The server may ignore
 *                it: xd_tls_alpn tells.
 * Takes a store reference.  Sends nothing yet: call xd_tls_start.
 * Returns 0 and *out, XD_EINVAL (remote_host not a domain name, alpn empty
 * or longer than 255 bytes), or XD_ETLS (OpenSSL failed). */
int xd_tls_client_new(xd_tls_store_t *st, const char *local_host, const char *remote_host,
                      const char *alpn, const xd_tls_io_t *io, xd_tls_t **out);

/* Client side: sends the ClientHello through io.send.  Same returns as
 * xd_tls_input; XD_EINVAL on a server connection or when already started
 * (feeding input also starts a client). */
int xd_tls_start(xd_tls_t *t);

/* Feeds ciphertext read from the socket (lent for the call; len may be 0).
 * Drives the handshake and delivers the plaintext of every complete
 * record through io.plain; a partial record is kept by OpenSSL until the
 * rest arrives.  While paused the bytes are queued (copied), not
 * decrypted, without a limit: stop reading the socket while paused, so the
 * queue holds at most what one read returned.
 * Returns
 *   0             all consumed or queued;
 *   XD_ECLOSED    the peer sent close_notify (plaintext before it has been
 *                 delivered); the caller answers with xd_tls_shutdown and
 *                 closes the socket;
 *   XD_ETLS       handshake failure, alert, or garbage: xd_tls_error(t)
 *                 says why; an alert may have gone out through io.send;
 *                 the connection is dead;
 *   < 0           what io.send returned.
 * After XD_ECLOSED or XD_ETLS every later call returns the same code. */
int xd_tls_input(xd_tls_t *t, const uint8_t *data, size_t len);

/* Stops plaintext delivery (as io.plain returning XD_TLS_PAUSE). */
void xd_tls_pause(xd_tls_t *t);

/* Restarts delivery: the plaintext and ciphertext kept since the pause are
 * processed now, through io.plain, before this returns (same returns as
 * xd_tls_input).  Called inside a callback it only clears the pause. */
int xd_tls_resume(xd_tls_t *t);

/* True while paused. */
bool xd_tls_paused(const xd_tls_t *t);

/* Encrypts p[0..n) and hands the records to io.send before it returns.
 * Returns 0, XD_EINVAL before the handshake has finished, XD_ECLOSED after
 * xd_tls_shutdown, XD_ETLS on failure, or what io.send returned. */
int xd_tls_send(xd_tls_t *t, const uint8_t *p, size_t n);

/* Sends close_notify (once; no-op before the handshake has finished or
 * after a failure).  The caller closes the socket when it likes; waiting
 * for the peer's close_notify is not required. */
void xd_tls_shutdown(xd_tls_t *t);

/* Frees t and drops its store reference.  Never from inside its callbacks. */
void xd_tls_free(xd_tls_t *t);

bool xd_tls_handshake_done(const xd_tls_t *t);

/* "TLSv1.3", the OpenSSL cipher name, the SNI host name the client sent
 * (NULL if none or before the handshake; on a client connection the name
 * we sent, A-label form).  Valid while t lives. */
const char *xd_tls_version(const xd_tls_t *t);
const char *xd_tls_cipher(const xd_tls_t *t);
const char *xd_tls_sni(const xd_tls_t *t);

/* The ALPN protocol both ends agreed on ("xmpp-server"), or NULL (none,
 * or before the handshake).  Valid while t lives. */
const char *xd_tls_alpn(const xd_tls_t *t);

/* True on a connection made by xd_tls_client_new. */
bool xd_tls_is_client(const xd_tls_t *t);

/* Why the connection failed (an OpenSSL reason such as "unsupported
 * protocol" or "wrong version number"), or NULL.  Static string. */
const char *xd_tls_error(const xd_tls_t *t);

/* ---- the peer's certificate (RFC 6125, RFC 7590, XEP-0178) ------------- */

/* Verdict on a peer certificate.  Names for logs: xd_tls_peer_status_name. */
typedef enum xd_tls_peer_status {
    XD_TLS_PEER_OK = 0,        /* chain valid and (when asked) the name matches */
    XD_TLS_PEER_NONE,          /* the peer presented no certificate */
    XD_TLS_PEER_EXPIRED,       /* a certificate of the chain has expired */
    XD_TLS_PEER_NOT_YET_VALID, /* a certificate of the chain is not valid yet */
    XD_TLS_PEER_UNTRUSTED,     /* no chain to a trust anchor: unknown CA, self-signed */
    XD_TLS_PEER_INVALID,       /* another chain failure: bad signature, not for TLS
                                * (extended key usage), bad extension, ... */
    XD_TLS_PEER_NAME_MISMATCH, /* valid chain, but no identity matches the domain */
    XD_TLS_PEER_STATUS_COUNT
} xd_tls_peer_status;

/* Kinds of identity a certificate presents (RFC 6125 1.8, RFC 6120 13.7.1.4). */
typedef enum xd_tls_id_type {
    XD_TLS_ID_NONE = 0, /* no identity (the name was not checked) */
    XD_TLS_ID_SRV,      /* SRV-ID: SAN otherName id-on-dnsSRV, "_xmpp-server.example.org" */
    XD_TLS_ID_XMPPADDR, /* SAN otherName id-on-xmppAddr: a domain or a JID (UTF-8) */
    XD_TLS_ID_DNS,      /* DNS-ID: SAN dNSName, possibly "*.example.org" */
    XD_TLS_ID_CN,       /* subject CN, used only when the SAN has no identity */
} xd_tls_id_type;

/* What xd_tls_peer_verify found.  Filled by the call; reason is static. */
typedef struct xd_tls_peer_result {
    xd_tls_peer_status status; /* the first failure: NONE, then the chain's, then the name */
    bool chain_ok;             /* the chain verified against the store's trust anchors */
    bool name_ok;              /* an identity matched the domain (true when domain NULL) */
    xd_tls_id_type matched;    /* the kind that matched: SRV > XMPPADDR > DNS > CN; NONE
                                * when nothing matched or no domain was given */
    int x509_err;              /* OpenSSL's X509_V_ERR_* of the chain, 0 = none */
    const char *reason;        /* one line for the log: OpenSSL's text for a chain error,
                                * ours for NONE and NAME_MISMATCH, "ok" */
} xd_tls_peer_result_t;

/* Judges the peer's certificate after the handshake (RFC 6120 13.7.2,
 * RFC 7590 3.2, XEP-0178):
 *
 * Chain: built from the certificates the peer sent to one of the store's
 * trust anchors, every certificate within its validity period at the
 * current time.  The leaf must be fit for TLS: no extended key usage, or
 * one that includes serverAuth or clientAuth (either, whichever the
 * direction: a server connecting out presents its server certificate).
 *
 * Name (domain != NULL, an XMPP server domain; U-labels are converted):
 * one of the certificate's identities must match it (RFC 6125 6, RFC 7590
 * 3.2, case-insensitive, A-label form):
 *   SRV-ID    "_xmpp-server.<domain>" exactly ("_xmpp-client." never
 *             matches here);
 *   XmppAddr  exactly <domain> (after IDNA conversion); an XmppAddr with a
 *             localpart or resource is a user identity and never matches a
 *             domain;
 *   DNS-ID    exactly <domain>, or "*.<parent>" where <domain> is one label
 *             followed by <parent>, and <parent> has at least two labels:
 *             "*.example.org" matches "a.example.org", not
 *             "example.org" nor "a.b.example.org"; "*.org" matches
 *             nothing; partial-label wildcards ("a*.example.org") are
 *             ignored (RFC 6125 6.4.3, RFC 9525 6.3);
 *   CN        the last subject CN, compared as a DNS-ID, only when the SAN
 *             holds no DNS-ID, SRV-ID, XmppAddr or URI at all (RFC 6125
 *             6.4.4 fallback, for old certificates).
 * domain NULL checks the chain only (c2s SASL EXTERNAL: the caller matches
 * the user's JID against xd_tls_peer_identities).
 *
 * Returns 0 and *res (even when the verdict is a failure), or XD_EINVAL
 * (the handshake has not finished, the connection failed, or domain is not
 * a domain name: IP-address domains are not matched, there is no
 * iPAddress identity check), or XD_ETLS (OpenSSL failed).  Costs one chain
 * verification (~95 us for a P-256 leaf under one CA); call it once per
 * stream.  After a resumed handshake only the peer's leaf is known (a
 * ticket keeps no intermediates), so a leaf under an intermediate that is
 * not a trust anchor is then UNTRUSTED. */
int xd_tls_peer_verify(const xd_tls_t *t, const char *domain, xd_tls_peer_result_t *res);

/* "ok", "none", "expired", "not-yet-valid", "untrusted", "invalid",
 * "name-mismatch"; "?" out of range. */
const char *xd_tls_peer_status_name(xd_tls_peer_status status);

/* One identity from a certificate. */
typedef struct xd_tls_id {
    xd_tls_id_type type; /* SRV, XMPPADDR, DNS or CN */
    char *value;         /* as written in the certificate, NUL-terminated UTF-8
                          * (xd_malloc'd; freed by xd_tls_ids_free) */
} xd_tls_id_t;

/* The identities the peer's certificate presents, in certificate order:
 * SAN SRVName, XmppAddr and dNSName entries, or, when the SAN holds no
 * identity, the last subject CN.  Values are not normalised (an XmppAddr
 * is a JID to parse with xd_jid_parse).  The chain is not checked: use
 * xd_tls_peer_verify for that.  *ids is NULL and *n 0 when the peer sent
 * no certificate.  Returns 0, or XD_EINVAL (handshake not finished).
 * Caller-owned: free with xd_tls_ids_free. */
int xd_tls_peer_identities(const xd_tls_t *t, xd_tls_id_t **ids, size_t *n);

/* Frees what xd_tls_peer_identities returned.  NULL is a no-op. */
void xd_tls_ids_free(xd_tls_id_t *ids, size_t n);

/* ---- channel binding (SASL SCRAM-*-PLUS, XEP-0440) --------------------- */

typedef enum xd_tls_cb_type {
    XD_TLS_CB_EXPORTER = 0,   /* "tls-exporter", RFC 9266 */
    XD_TLS_CB_SERVER_END_POINT, /* "tls-server-end-point", RFC 5929 4.1 */
    XD_TLS_CB_UNIQUE,         /* "tls-unique", RFC 5929 3.1; TLS 1.2 only */
    XD_TLS_CB_COUNT
} xd_tls_cb_type;

#define XD_TLS_CB_MAX 64 /* bytes: the longest binding (SHA-512 end-point hash) */

/* "tls-exporter", "tls-server-end-point", "tls-unique". */
const char *xd_tls_cb_name(xd_tls_cb_type type);

/* The type called name (exact, as in GS2 headers).  XD_EINVAL. */
int xd_tls_cb_parse(xd_str_t name, xd_tls_cb_type *out);

/* True when xd_tls_channel_binding(t, type) would succeed: the handshake
 * has finished and exporter: TLS 1.3 or TLS 1.2 with extended master
 * secret (RFC 9266 3); end-point: the certificate's signature has a hash;
 * unique: TLS 1.2. */
bool xd_tls_cb_available(const xd_tls_t *t, xd_tls_cb_type type);

/* Writes the channel-binding data of `type` to out[0..*len).  exporter:
 * 32 bytes of SSL_export_keying_material("EXPORTER-Channel-Binding", no
 * context); end-point: the hash of the server's certificate (ours on a
 * server connection, the peer's on a client one) with the hash of its
 * signature (SHA-256 for MD5 and SHA-1); unique: the first Finished message
 * of the handshake.  Returns 0, XD_ENOTSUP (not available, see above),
 * XD_ELIMIT (cap too small), XD_ETLS (OpenSSL failed). */
int xd_tls_channel_binding(const xd_tls_t *t, xd_tls_cb_type type, uint8_t *out, size_t cap,
                           size_t *len);

/* tls-unique computed on a TLS 1.3 connection, where RFC 9266 leaves it
 * undefined: the Finished message that RFC 5929 3.1 names for TLS 1.2 (the
 * client's after a full handshake, the server's after a resumption), as
 * OpenSSL-based clients that know no other binding compute it (CPython's
 * ssl get_channel_binding(), hence slixmpp before 1.8.5).  For SASL with
 * those clients only: never advertised (docs/admin.md, "Channel binding").
 * Returns 0, XD_ENOTSUP (not TLS 1.3, or the handshake is not done),
 * XD_ELIMIT, XD_ETLS. */
int xd_tls_unique_tls13(const xd_tls_t *t, uint8_t *out, size_t cap, size_t *len);

#endif
