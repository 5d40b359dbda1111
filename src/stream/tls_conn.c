/*
 * tls_conn.c — one TLS connection (tls.h, "one connection" and "channel
 * binding"): the engine that turns ciphertext from the socket into
 * plaintext for the caller and back, server side (c2s, s2s-in) or client
 * side (s2s-out).  The parts are listed in tls_int.h; the certificates and
 * policy come from the store (tls_store.c), the peer's certificate is judged
 * by tls_verify.c.
 *
 * A custom BIO (tls_bio_*) whose read side returns bytes from the slice
 * being fed (xd_tls_t.in) and whose write side calls io.send directly, so no
 * ciphertext is buffered here between calls.  OpenSSL keeps at most one
 * partial record, and with SSL_MODE_RELEASE_BUFFERS frees its record
 * buffers when idle.  The only copy this file makes is of ciphertext that
 * arrives or remains while the caller has paused delivery (xd_tls_t.pend,
 * freed as soon as it is drained).  The state machine is drawn in tls.h.
 *
 * Invariants: the OpenSSL error queue is cleared before every SSL call and
 * after every failure; xd_tls_t.in is non-NULL only inside tls_drive;
 * io.plain and io.handshake run only from tls_drive; a connection holds one
 * reference to its store for its whole life.
 */
#include <pthread.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "stream/tls_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"

#define TLS_PLAIN_CHUNK 16384 /* plaintext read per SSL_read: one full record */
#define TLS_EXPORTER_LABEL "EXPORTER-Channel-Binding" /* RFC 9266 2 */
#define TLS_EXPORTER_LEN 32                             /* RFC 9266 2 */

/* ---- the BIO ------------------------------------------------------------- */

static BIO_METHOD *tls_bio_method;      /* created once, never freed */
static pthread_once_t tls_bio_once = PTHREAD_ONCE_INIT;

static int
tls_bio_write(BIO *bio, const char *data, int len)
{
    xd_tls_t *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (len <= 0)
        return 0;
    int rc = t->io.send(t->io.ud, (const uint8_t *)data, (size_t)len);
    if (rc < 0) {
        if (t->send_err == 0)
            t->send_err = rc;
        return -1;
    }
    return len;
}

static int
tls_bio_read(BIO *bio, char *out, int len)
{
    xd_tls_t *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (len <= 0)
        return 0;
    if (t->in_len == 0) {
        BIO_set_retry_read(bio);
        return -1;
    }
    size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
    memcpy(out, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static long
tls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    (void)bio;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
tls_bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

static void
tls_bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "xmppd-tls");
    XD_ASSERT(m != NULL);
    BIO_meth_set_write(m, tls_bio_write);
    BIO_meth_set_read(m, tls_bio_read);
    BIO_meth_set_ctrl(m, tls_bio_ctrl);
    BIO_meth_set_create(m, tls_bio_create);
    tls_bio_method = m;
}

/* ---- new connections, ALPN ----------------------------------------------- */

/* A connection on ssl (consumed) with our BIO attached. */
static int
tls_conn_new(xd_tls_store_t *st, SSL *ssl, const xd_tls_io_t *io, xd_tls_t **out)
{
    BIO *bio = ssl != NULL ? BIO_new(tls_bio_method) : NULL;
    if (bio == NULL) {
        SSL_free(ssl);
        ERR_clear_error();
        return XD_ETLS;
    }
    xd_tls_t *t = xd_new(xd_tls_t);
    t->ssl = ssl;
    t->store = xd_tls_store_ref(st);
    t->io = *io;
    BIO_set_data(bio, t);
    SSL_set_bio(ssl, bio, bio);
    *out = t;
    return 0;
}

int
xd_tls_server_new(xd_tls_store_t *st, const char *default_host, const xd_tls_io_t *io,
                  xd_tls_t **out)
{
    XD_ASSERT(st != NULL && io != NULL && io->send != NULL && io->plain != NULL && out != NULL);
    XD_ASSERT(st->ncerts > 0);
    pthread_once(&tls_bio_once, tls_bio_method_init);
    long i = tls_lookup(st, default_host);
    ERR_clear_error();
    int rc = tls_conn_new(st, SSL_new(st->certs[i >= 0 ? i : 0]), io, out);
    if (rc == 0)
        SSL_set_accept_state((*out)->ssl);
    return rc;
}

/* Accepts every client certificate: the verdict is xd_tls_peer_verify's. */
static int
tls_verify_accept(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

int
xd_tls_request_cert(xd_tls_t *t)
{
    if (t->client || t->begun)
        return XD_EINVAL;
    SSL_set_verify(t->ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, tls_verify_accept);
    return 0;
}

static bool
tls_alpn_ok(const char *proto)
{
    size_t n = proto != NULL ? strlen(proto) : 0;
    return n > 0 && n <= 255;
}

int
xd_tls_set_alpn(xd_tls_t *t, const char *proto)
{
    if (t->client || t->begun || !tls_alpn_ok(proto))
        return XD_EINVAL;
    xd_free(t->alpn);
    t->alpn = xd_strdup(proto);
    return 0;
}

/* RFC7301 3.2: select our protocol if the client offers it; a client that
 * offers others only gets no_application_protocol.  A connection without
 * a protocol ignores ALPN. */
int
tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
            unsigned int inlen, void *arg)
{
    (void)arg;
    const xd_tls_t *t = BIO_get_data(SSL_get_rbio(ssl));
    if (t == NULL || t->alpn == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    size_t want = strlen(t->alpn);
    for (unsigned int off = 0; off < inlen;) {
        unsigned int n = in[off];
        if (n == 0 || off + 1 + n > inlen)
            break; /* malformed list; OpenSSL checks it before, so never here */
        if (n == want && memcmp(in + off + 1, t->alpn, n) == 0) {
            *out = in + off + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        off += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int
xd_tls_client_new(xd_tls_store_t *st, const char *local_host, const char *remote_host,
                  const char *alpn, const xd_tls_io_t *io, xd_tls_t **out)
{
    XD_ASSERT(st != NULL && io != NULL && io->send != NULL && io->plain != NULL && out != NULL);
    XD_ASSERT(st->ncerts > 0);
    char sni[TLS_NAME_MAX + 1];
    bool ip = remote_host != NULL && tls_is_ip_literal(remote_host); /* RFC6066 3: no SNI */
    if (remote_host == NULL || (!ip && !tls_name_norm(remote_host, sni, false)) ||
        (alpn != NULL && !tls_alpn_ok(alpn)))
        return XD_EINVAL;
    pthread_once(&tls_bio_once, tls_bio_method_init);
    long i = tls_lookup(st, local_host);
    ERR_clear_error();
    SSL *ssl = SSL_new(st->certs[i >= 0 ? i : 0]);
    if (ssl != NULL && i < 0)
        SSL_certs_clear(ssl); /* no certificate of ours covers local_host: present none */
    bool ok = ssl != NULL && (ip || SSL_set_tlsext_host_name(ssl, sni) == 1);
    if (ok && alpn != NULL) {
        unsigned char wire[256];
        size_t n = strlen(alpn);
        wire[0] = (unsigned char)n;
        memcpy(wire + 1, alpn, n);
        ok = SSL_set_alpn_protos(ssl, wire, (unsigned int)n + 1) == 0; /* 0 = success */
    }
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return XD_ETLS;
    }
    int rc = tls_conn_new(st, ssl, io, out);
    if (rc != 0)
        return rc;
    xd_tls_t *t = *out;
    t->client = true;
    t->alpn = alpn != NULL ? xd_strdup(alpn) : NULL;
    SSL_set_connect_state(ssl);
    return 0;
}

void
xd_tls_free(xd_tls_t *t)
{
    if (t == NULL)
        return;
    XD_ASSERT(!t->in_drive);
    SSL_free(t->ssl);
    xd_tls_store_unref(t->store);
    xd_free(t->pend);
    xd_free(t->alpn);
    xd_free(t);
}

/* ---- input, pause, send, shutdown ---------------------------------------- */

static int
tls_set_failed(xd_tls_t *t, const char *reason)
{
    t->state = TLS_FAILED;
    if (t->err == NULL)
        t->err = reason;
    xd_free(t->pend);
    t->pend = NULL;
    t->pend_off = t->pend_len = 0;
    return XD_ETLS;
}

/* Why SSL call result r failed; clears the error queue. */
static const char *
tls_ssl_reason(int e)
{
    switch (e) {
    case SSL_ERROR_SYSCALL:
        return tls_ossl_reason("unexpected end of the TLS stream");
    case SSL_ERROR_WANT_WRITE:
        return tls_ossl_reason("transport would block");
    default:
        return tls_ossl_reason("TLS protocol error");
    }
}

/* Runs the handshake, then SSL_read, over t->in until it is used up, the
 * caller pauses, the peer closes or something fails, delivering
 * plaintext.  The handshake is driven by SSL_do_handshake so that
 * io.handshake runs (and may pause) before any plaintext is read. */
static int
tls_drive(xd_tls_t *t)
{
    uint8_t buf[TLS_PLAIN_CHUNK];
    size_t dirty = 0; /* bytes of buf that held plaintext */
    int rc = 0;
    t->in_drive = true;
    t->begun = true;
    while (!t->paused && rc == 0) {
        size_t before = t->in_len, n = 0;
        bool hs = t->state == TLS_HANDSHAKE;
        ERR_clear_error();
        int r = hs ? SSL_do_handshake(t->ssl) : SSL_read_ex(t->ssl, buf, sizeof buf, &n);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        if (t->send_err != 0) {
            tls_set_failed(t, "transport send failed");
            rc = t->send_err;
        } else if (r == 1 && hs) {
            t->state = TLS_OPEN;
            if (t->io.handshake != NULL)
                t->io.handshake(t->io.ud);
        } else if (r == 1) {
            dirty = n > dirty ? n : dirty;
            if (t->io.plain(t->io.ud, buf, n) == XD_TLS_PAUSE)
                t->paused = true;
        } else if (e == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            if (t->in_len == 0 || t->in_len == before)
                break; /* all used, or no progress: the caller keeps the rest */
        } else if (e == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            t->state = TLS_PEER_CLOSED;
            rc = XD_ECLOSED;
        } else {
            rc = tls_set_failed(t, tls_ssl_reason(e));
        }
    }
    t->in_drive = false;
    OPENSSL_cleanse(buf, dirty);
    return rc;
}

/* Appends data[0..len) to the kept ciphertext. */
static void
tls_pend_append(xd_tls_t *t, const uint8_t *data, size_t len)
{
    if (len == 0)
        return;
    size_t keep = t->pend_len - t->pend_off;
    if (t->pend_off > 0 && keep > 0)
        memmove(t->pend, t->pend + t->pend_off, keep);
    t->pend = xd_realloc(t->pend, keep + len);
    memcpy(t->pend + keep, data, len);
    t->pend_off = 0;
    t->pend_len = keep + len;
}

/* tls_drive over the kept ciphertext; frees it once used up. */
static int
tls_drive_pend(xd_tls_t *t)
{
    t->in = t->pend + t->pend_off;
    t->in_len = t->pend_len - t->pend_off;
    int rc = tls_drive(t);
    if (t->pend != NULL) { /* still there unless the drive failed */
        t->pend_off = t->pend_len - t->in_len;
        if (t->in_len == 0) {
            xd_free(t->pend);
            t->pend = NULL;
            t->pend_off = t->pend_len = 0;
        }
    }
    t->in = NULL;
    t->in_len = 0;
    return rc;
}

static int
tls_state_rc(const xd_tls_t *t)
{
    return t->state == TLS_FAILED ? XD_ETLS : t->state == TLS_PEER_CLOSED ? XD_ECLOSED : 0;
}

int
xd_tls_input(xd_tls_t *t, const uint8_t *data, size_t len)
{
    XD_ASSERT(!t->in_drive); /* not from inside a callback */
    int rc = tls_state_rc(t);
    if (rc != 0)
        return rc;
    if (t->paused || t->pend != NULL) {
        tls_pend_append(t, data, len);
        return t->paused ? 0 : tls_drive_pend(t);
    }
    t->in = data;
    t->in_len = len;
    rc = tls_drive(t);
    if (rc == 0 && t->in_len > 0)
        tls_pend_append(t, t->in, t->in_len); /* paused part-way */
    t->in = NULL;
    t->in_len = 0;
    return rc;
}

int
xd_tls_start(xd_tls_t *t)
{
    if (!t->client || t->begun)
        return XD_EINVAL;
    return xd_tls_input(t, NULL, 0);
}

void
xd_tls_pause(xd_tls_t *t)
{
    t->paused = true;
}

bool
xd_tls_paused(const xd_tls_t *t)
{
    return t->paused;
}

int
xd_tls_resume(xd_tls_t *t)
{
    if (!t->paused)
        return 0;
    t->paused = false;
    if (t->in_drive)
        return 0; /* the running tls_drive goes on */
    int rc = tls_state_rc(t);
    if (rc != 0)
        return rc;
    if (t->pend != NULL)
        return tls_drive_pend(t);
    return tls_drive(t); /* plaintext OpenSSL still holds; in_len is 0 */
}

int
xd_tls_send(xd_tls_t *t, const uint8_t *p, size_t n)
{
    if (t->state == TLS_FAILED)
        return XD_ETLS;
    if (t->shut_sent)
        return XD_ECLOSED;
    if (t->state == TLS_HANDSHAKE)
        return XD_EINVAL;
    while (n > 0) {
        size_t w = 0;
        ERR_clear_error();
        int r = SSL_write_ex(t->ssl, p, n, &w);
        if (t->send_err != 0) {
            tls_set_failed(t, "transport send failed");
            return t->send_err;
        }
        if (r != 1)
            return tls_set_failed(t, tls_ssl_reason(SSL_get_error(t->ssl, r)));
        p += w;
        n -= w;
    }
    return 0;
}

void
xd_tls_shutdown(xd_tls_t *t)
{
    if (t->shut_sent || t->state == TLS_FAILED || t->state == TLS_HANDSHAKE)
        return;
    t->shut_sent = true;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* 0: ours sent, theirs not seen yet; fine */
    ERR_clear_error();
    if (t->send_err != 0)
        tls_set_failed(t, "transport send failed");
}

/* ---- what the connection knows ------------------------------------------- */

bool
xd_tls_handshake_done(const xd_tls_t *t)
{
    return t->state != TLS_HANDSHAKE && SSL_is_init_finished(t->ssl);
}

const char *
xd_tls_version(const xd_tls_t *t)
{
    return SSL_get_version(t->ssl);
}

const char *
xd_tls_cipher(const xd_tls_t *t)
{
    return SSL_get_cipher_name(t->ssl);
}

const char *
xd_tls_sni(const xd_tls_t *t)
{
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *
xd_tls_alpn(const xd_tls_t *t)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    /* Only ours can be selected: OpenSSL refuses a server's pick we did
     * not offer, and our callback picks nothing else. */
    return n > 0 && t->alpn != NULL && n == strlen(t->alpn) && memcmp(p, t->alpn, n) == 0 ? t->alpn
                                                                                          : NULL;
}

bool
xd_tls_is_client(const xd_tls_t *t)
{
    return t->client;
}

const char *
xd_tls_error(const xd_tls_t *t)
{
    return t->err;
}

/* ---- channel binding ----------------------------------------------------- */

static const char *const tls_cb_names[XD_TLS_CB_COUNT] = {
    [XD_TLS_CB_EXPORTER] = "tls-exporter",
    [XD_TLS_CB_SERVER_END_POINT] = "tls-server-end-point",
    [XD_TLS_CB_UNIQUE] = "tls-unique",
};

const char *
xd_tls_cb_name(xd_tls_cb_type type)
{
    XD_ASSERT((unsigned)type < XD_TLS_CB_COUNT);
    return tls_cb_names[type];
}

int
xd_tls_cb_parse(xd_str_t name, xd_tls_cb_type *out)
{
    for (unsigned i = 0; i < XD_TLS_CB_COUNT; i++) {
        if (xd_str_eq_c(name, tls_cb_names[i])) {
            *out = (xd_tls_cb_type)i;
            return 0;
        }
    }
    return XD_EINVAL;
}

/* The server's certificate: ours, or the peer's on a client connection. */
static X509 *
tls_server_cert(const xd_tls_t *t)
{
    return t->client ? SSL_get0_peer_certificate(t->ssl) : SSL_get_certificate(t->ssl);
}

/* RFC5929 4.1: the certificate's signature hash, MD5 and SHA-1 become
 * SHA-256; NULL when the signature has none (Ed25519). */
static const EVP_MD *
tls_endpoint_md(X509 *cert)
{
    int mdnid = NID_undef;
    if (cert == NULL || X509_get_signature_info(cert, &mdnid, NULL, NULL, NULL) != 1)
        return NULL;
    if (mdnid == NID_md5 || mdnid == NID_sha1)
        mdnid = NID_sha256;
    return mdnid == NID_undef ? NULL : EVP_get_digestbynid(mdnid);
}

/* RFC5929 3.1: the first Finished of the latest handshake: the client's in
 * a full handshake, the server's in a resumption (the TLS 1.2 order). */
static int
tls_unique(const xd_tls_t *t, uint8_t *out, size_t cap, size_t *len)
{
    uint8_t fin[EVP_MAX_MD_SIZE];
    bool ours = t->client != (SSL_session_reused(t->ssl) == 1);
    size_t n = ours ? SSL_get_finished(t->ssl, fin, sizeof fin)
                    : SSL_get_peer_finished(t->ssl, fin, sizeof fin);
    if (n == 0 || n > sizeof fin)
        return XD_ETLS;
    if (cap < n)
        return XD_ELIMIT;
    memcpy(out, fin, n);
    *len = n;
    return 0;
}

int
xd_tls_unique_tls13(const xd_tls_t *t, uint8_t *out, size_t cap, size_t *len)
{
    if (t->state == TLS_FAILED || !xd_tls_handshake_done(t) ||
        SSL_version(t->ssl) < TLS1_3_VERSION)
        return XD_ENOTSUP;
    ERR_clear_error();
    int rc = tls_unique(t, out, cap, len);
    ERR_clear_error();
    return rc;
}

bool
xd_tls_cb_available(const xd_tls_t *t, xd_tls_cb_type type)
{
    if (t->state == TLS_FAILED || !xd_tls_handshake_done(t))
        return false;
    bool tls13 = SSL_version(t->ssl) >= TLS1_3_VERSION;
    bool ok = false;
    switch (type) {
    case XD_TLS_CB_EXPORTER: /* RFC9266 3: TLS 1.3, or 1.2 with RFC 7627 EMS */
        ok = tls13 || SSL_get_extms_support(t->ssl) == 1;
        break;
    case XD_TLS_CB_SERVER_END_POINT:
        ok = tls_endpoint_md(tls_server_cert(t)) != NULL;
        break;
    case XD_TLS_CB_UNIQUE: /* RFC9266 3: not defined for TLS 1.3 */
        ok = !tls13;
        break;
    default:
        break;
    }
    ERR_clear_error();
    return ok;
}

int
xd_tls_channel_binding(const xd_tls_t *t, xd_tls_cb_type type, uint8_t *out, size_t cap,
                       size_t *len)
{
    if ((unsigned)type >= XD_TLS_CB_COUNT || !xd_tls_cb_available(t, type))
        return XD_ENOTSUP;
    int rc = 0;
    ERR_clear_error();
    switch (type) {
    case XD_TLS_CB_EXPORTER:
        if (cap < TLS_EXPORTER_LEN)
            return XD_ELIMIT;
        if (SSL_export_keying_material(t->ssl, out, TLS_EXPORTER_LEN, TLS_EXPORTER_LABEL,
                                       sizeof TLS_EXPORTER_LABEL - 1, NULL, 0, 0) != 1)
            rc = XD_ETLS;
        else
            *len = TLS_EXPORTER_LEN;
        break;
    case XD_TLS_CB_SERVER_END_POINT: {
        X509 *cert = tls_server_cert(t);
        const EVP_MD *md = tls_endpoint_md(cert);
        unsigned n = 0;
        if (md == NULL)
            rc = XD_ENOTSUP;
        else if (cap < (size_t)EVP_MD_get_size(md))
            rc = XD_ELIMIT;
        else if (X509_digest(cert, md, out, &n) != 1)
            rc = XD_ETLS;
        else
            *len = n;
        break;
    }
    case XD_TLS_CB_UNIQUE:
        rc = tls_unique(t, out, cap, len);
        break;
    default:
        rc = XD_ENOTSUP;
        break;
    }
    ERR_clear_error();
    return rc;
}
