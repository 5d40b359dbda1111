/*
 * test_tls.c — unit tests for src/stream/tls_*.c: the certificate store and
 * the server engine, against real OpenSSL clients in memory (mem BIOs on
 * the client side, the engine's callbacks on the server side).
 *
 * Certificates are made at run time with the OpenSSL API in a fresh
 * mkdtemp directory per test (removed afterwards); no binary fixtures.
 *
 * Covered: handshakes with TLS 1.2 and 1.3; SNI choosing among two
 * certificates and the default host; a wildcard certificate; a chain with
 * the key in its own file, verified by the client; cert/key mismatch,
 * missing file, empty file and encrypted key errors naming the file;
 * self-signed generation (0600, 0700, SAN, P-256, one year), reuse and
 * renewal when expired; channel bindings equal on both ends (tls-exporter,
 * tls-server-end-point with SHA-256 and SHA-384, tls-unique); a record fed
 * byte by byte; garbage and random input; pause/resume keeping every byte;
 * a TLS 1.1 client refused; close_notify both ways; options (min_version,
 * ciphers); io.send failure; large transfers; renegotiation refused; a
 * TLS 1.3 KeyUpdate; ticket resumption (cache off); a pause from the
 * handshake callback; IDN hosts; and the heap cost of an idle connection,
 * measured through CRYPTO_set_mem_functions.
 *
 * s2s (client mode and peer certificates), engine against engine in
 * memory (epair_t: each side's io.send is queued and handed to the other):
 * a test CA made per test (ca_make) signs leaf certificates with SRV-ID,
 * XmppAddr, DNS-ID, wildcard and CN-only variants; RFC 6125 name rules
 * (SRV-ID, _xmpp-client refused, user XmppAddr refused, wildcard one label
 * only and not "*.test" nor partial, CN only without SAN identities, IDN);
 * chain verdicts (expired, not yet valid, self-signed, unknown CA, e-mail
 * EKU, intermediate sent or not); trust from ca_file, ca_path and the
 * default paths ($SSL_CERT_FILE), load errors; SNI and ALPN seen on both
 * ends (RFC 7301 refusal included); the client certificate presented for
 * the local domain and verified by a server that asked, none presented /
 * not asked / untrusted / expired recorded with the handshake intact; the
 * server switching certificates on SNI still asking; identities listing;
 * API rules (IP-literal domains without SNI); the client against a plain
 * OpenSSL TLS 1.2 server (tls-unique and end-point from the client side);
 * the heap of an idle client connection and the cost of one verification.
 */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "stream/tls.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"

/* ---- OpenSSL allocation accounting (set before any OpenSSL call) -------- */

static _Atomic long t_ossl_live; /* bytes OpenSSL holds (malloc_usable_size) */
static bool t_ossl_counting;     /* CRYPTO_set_mem_functions succeeded */

static void *
t_ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    void *p = malloc(n);
    if (p != NULL)
        t_ossl_live += (long)malloc_usable_size(p);
    return p;
}

static void
t_ossl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p != NULL)
        t_ossl_live -= (long)malloc_usable_size(p);
    free(p);
}

static void *
t_ossl_realloc(void *p, size_t n, const char *file, int line)
{
    if (n == 0) {
        t_ossl_free(p, file, line);
        return NULL;
    }
    long old = p != NULL ? (long)malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q != NULL)
        t_ossl_live += (long)malloc_usable_size(q) - old;
    return q;
}

/* ---- fixture: a temporary directory --------------------------------------- */

typedef struct {
    char dir[256]; /* mkdtemp directory */
} fx_t;

static int
fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/xd_test_tls.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *f = *state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static const char *
fx_path(fx_t *f, const char *name)
{
    static char buf[16][512]; /* a few live at once */
    static int n;
    char *p = buf[n++ % 16];
    snprintf(p, sizeof buf[0], "%s/%s", f->dir, name);
    return p;
}

/* ---- making certificates ------------------------------------------------------ */

static EVP_PKEY *
mk_key(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    return k;
}

/* A certificate for key with CN cn (NULL = no subject CN) and the
 * subjectAltName san in OpenSSL's config syntax ("DNS:a.test,otherName:
 * 1.3.6.1.5.5.7.8.5;UTF8:a.test"; NULL = no SAN), signed by issuer/ikey
 * (NULL = self-signed) with md, valid from now+from_days to now+to_days,
 * with extendedKeyUsage eku (NULL = none). */
static X509 *
mk_cert_san(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer, EVP_PKEY *ikey, bool ca,
            const EVP_MD *md, long from_days, long to_days, const char *eku)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    unsigned char serial[8];
    assert_int_equal(RAND_bytes(serial, sizeof serial), 1);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400);
    X509_NAME *name = X509_get_subject_name(x);
    if (cn != NULL)
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    else
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"xmppd test",
                                   -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, key);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &v3, NID_basic_constraints,
                                             ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_nconf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (issuer != NULL) {
        e = X509V3_EXT_nconf_nid(NULL, &v3, NID_authority_key_identifier, "keyid");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    if (san != NULL) {
        e = X509V3_EXT_nconf_nid(NULL, &v3, NID_subject_alt_name, san);
        if (e == NULL)
            fail_msg("bad SAN for the test: %s", san);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    if (eku != NULL) {
        e = X509V3_EXT_nconf_nid(NULL, &v3, NID_ext_key_usage, eku);
        assert_non_null(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, ikey ? ikey : key, md) > 0);
    return x;
}

/* A certificate for key with CN cn and the dNSNames dns (NULL-terminated;
 * NULL = no SAN), signed by issuer/ikey (NULL = self-signed) with md,
 * valid from now+from_days to now+to_days. */
static X509 *
mk_cert_ex(EVP_PKEY *key, const char *cn, const char *const *dns, X509 *issuer, EVP_PKEY *ikey,
           bool ca, const EVP_MD *md, long from_days, long to_days)
{
    char san[1024] = "";
    for (size_t i = 0; dns != NULL && dns[i]; i++) {
        strcat(san, i ? ",DNS:" : "DNS:");
        strcat(san, dns[i]);
    }
    return mk_cert_san(key, cn, dns != NULL ? san : NULL, issuer, ikey, ca, md, from_days, to_days,
                       NULL);
}

static X509 *
mk_cert(EVP_PKEY *key, const char *cn, const char *const *dns)
{
    return mk_cert_ex(key, cn, dns, NULL, NULL, false, EVP_sha256(), -1, 30);
}

/* Writes key (may be NULL) then the certificates (NULL-terminated). */
static void
write_pem(const char *path, EVP_PKEY *key, X509 *const *certs)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    if (key)
        assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    for (size_t i = 0; certs && certs[i]; i++)
        assert_int_equal(PEM_write_X509(f, certs[i]), 1);
    fclose(f);
}

/* Makes <dir>/<file> with a new key and a self-signed certificate for dns. */
static X509 *
mk_certfile(fx_t *f, const char *file, const char *cn, const char *const *dns)
{
    EVP_PKEY *k = mk_key();
    X509 *x = mk_cert(k, cn, dns);
    write_pem(fx_path(f, file), k, (X509 *const[]){ x, NULL });
    EVP_PKEY_free(k);
    return x;
}

static xd_tls_store_t *
load_ok(const xd_tls_store_opts_t *o)
{
    xd_tls_store_t *st = NULL;
    char *err = NULL;
    int rc = xd_tls_store_load(o, &st, &err);
    if (rc != 0)
        fail_msg("load: %s: %s", xd_err_name(rc), err ? err : "?");
    assert_null(err);
    return st;
}

/* Loads expecting failure code; returns the message (xd_free). */
static char *
load_err(const xd_tls_store_opts_t *o, int code)
{
    xd_tls_store_t *st = (xd_tls_store_t *)1;
    char *err = NULL;
    assert_int_equal(xd_tls_store_load(o, &st, &err), code);
    assert_null(st);
    assert_non_null(err);
    return err;
}

/* ---- an in-memory client/server pair --------------------------------------------- */

typedef struct pair {
    SSL *cli;             /* OpenSSL client */
    BIO *c_rd;            /* server → client ciphertext (client's rbio) */
    BIO *c_wr;            /* client → server ciphertext (client's wbio) */
    xd_tls_t *srv;        /* the engine under test */
    uint8_t *plain;       /* plaintext the server delivered (NULL: count only) */
    size_t plain_len;     /* bytes in plain / delivered */
    size_t plain_cap;     /* capacity of plain */
    size_t chunks;        /* io.plain calls */
    bool pause_each;      /* io.plain returns XD_TLS_PAUSE */
    bool keep;            /* store plaintext in plain */
    size_t hs_calls;      /* io.handshake calls */
    size_t plain_at_hs;   /* plain_len when io.handshake ran */
    bool pause_at_hs;     /* io.handshake pauses */
    int send_rc;          /* io.send returns this (0 = ok) */
    size_t sent;          /* ciphertext bytes the server sent */
} pair_t;

static int
p_send(void *ud, const uint8_t *data, size_t len)
{
    pair_t *p = ud;
    if (p->send_rc != 0)
        return p->send_rc;
    p->sent += len;
    if (p->c_rd != NULL)
        assert_int_equal(BIO_write(p->c_rd, data, (int)len), (int)len);
    return 0;
}

static int
p_plain(void *ud, const uint8_t *data, size_t len)
{
    pair_t *p = ud;
    assert_true(len > 0);
    p->chunks++;
    if (p->keep) {
        if (p->plain_len + len > p->plain_cap) {
            p->plain_cap = (p->plain_len + len) * 2;
            p->plain = realloc(p->plain, p->plain_cap);
        }
        memcpy(p->plain + p->plain_len, data, len);
    }
    p->plain_len += len;
    return p->pause_each ? XD_TLS_PAUSE : 0;
}

static void
p_handshake(void *ud)
{
    pair_t *p = ud;
    p->hs_calls++;
    p->plain_at_hs = p->plain_len;
    if (p->pause_at_hs)
        xd_tls_pause(p->srv);
}

static SSL_CTX *
cli_ctx(int min, int max)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    assert_non_null(c);
    SSL_CTX_set_min_proto_version(c, min);
    SSL_CTX_set_max_proto_version(c, max);
    return c;
}

static void
pair_init(pair_t *p, SSL_CTX *cctx, xd_tls_store_t *st, const char *default_host,
          const char *sni)
{
    memset(p, 0, sizeof *p);
    p->keep = true;
    p->cli = SSL_new(cctx);
    assert_non_null(p->cli);
    p->c_rd = BIO_new(BIO_s_mem());
    p->c_wr = BIO_new(BIO_s_mem());
    SSL_set_bio(p->cli, p->c_rd, p->c_wr);
    SSL_set_connect_state(p->cli);
    if (sni)
        SSL_set_tlsext_host_name(p->cli, sni);
    xd_tls_io_t io = { .ud = p, .send = p_send, .plain = p_plain, .handshake = p_handshake };
    assert_int_equal(xd_tls_server_new(st, default_host, &io, &p->srv), 0);
}

static void
pair_free_client(pair_t *p)
{
    SSL_free(p->cli); /* frees both BIOs */
    p->cli = NULL;
    p->c_rd = p->c_wr = NULL;
}

static void
pair_free(pair_t *p)
{
    if (p->cli)
        pair_free_client(p);
    xd_tls_free(p->srv);
    free(p->plain);
}

/* Moves the client's pending output to the server, in pieces of `step`
 * bytes (0 = all at once).  Returns the first non-zero input result. */
static int
pair_flush(pair_t *p, size_t step, size_t *moved)
{
    uint8_t buf[65536];
    int rc = 0, n;
    while ((n = BIO_read(p->c_wr, buf, sizeof buf)) > 0) {
        *moved += (size_t)n;
        size_t s = step ? step : (size_t)n;
        for (size_t off = 0; off < (size_t)n && rc == 0; off += s)
            rc = xd_tls_input(p->srv, buf + off, off + s > (size_t)n ? (size_t)n - off : s);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Runs the client handshake against the server until neither moves. */
static int
pair_pump(pair_t *p, size_t step)
{
    for (int round = 0; round < 50; round++) {
        if (!SSL_is_init_finished(p->cli)) {
            int r = SSL_do_handshake(p->cli);
            if (r != 1 && SSL_get_error(p->cli, r) != SSL_ERROR_WANT_READ)
                return XD_ETLS; /* the client gave up (alert) */
        }
        size_t moved = 0;
        int rc = pair_flush(p, step, &moved);
        if (rc != 0)
            return rc;
        if (moved == 0 && BIO_ctrl_pending(p->c_rd) == 0)
            return 0;
        if (moved == 0 && SSL_is_init_finished(p->cli)) {
            /* post-handshake messages (tickets): let the client take them
             * without consuming application data */
            uint8_t tmp[1];
            int r = SSL_peek(p->cli, tmp, 1);
            (void)r;
            ERR_clear_error();
            if (BIO_ctrl_pending(p->c_wr) == 0)
                return 0;
        }
    }
    return 0;
}

static void
pair_handshake(pair_t *p, size_t step)
{
    assert_int_equal(pair_pump(p, step), 0);
    assert_true(SSL_is_init_finished(p->cli));
    assert_true(xd_tls_handshake_done(p->srv));
    assert_int_equal(p->hs_calls, 1);
}

/* Client writes s; returns the server's input result. */
static int
cli_write(pair_t *p, const void *s, size_t n, size_t step)
{
    size_t w = 0;
    assert_int_equal(SSL_write_ex(p->cli, s, n, &w), 1);
    assert_int_equal(w, n);
    size_t moved = 0;
    return pair_flush(p, step, &moved);
}

/* Everything the client can read now, into out (cap); returns the count. */
static size_t
cli_read(pair_t *p, uint8_t *out, size_t cap)
{
    size_t got = 0, n = 0;
    while (got < cap && SSL_read_ex(p->cli, out + got, cap - got, &n) == 1)
        got += n;
    return got;
}

/* The subject CN of the certificate the client received. */
static void
cli_peer_cn(pair_t *p, char *out, size_t cap)
{
    X509 *x = SSL_get1_peer_certificate(p->cli);
    assert_non_null(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)cap);
    X509_free(x);
}

/* A store with one certificate for "xmpp.example". */
static xd_tls_store_t *
simple_store(fx_t *f)
{
    X509 *x = mk_certfile(f, "xmpp.pem", "xmpp.example", (const char *[]){ "xmpp.example", NULL });
    X509_free(x);
    const char *files[] = { fx_path(f, "xmpp.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1 };
    return load_ok(&o);
}

/* ---- tests ---------------------------------------------------------------------- */

static void
handshake_and_echo(fx_t *f, int version, const char *vname)
{
    xd_tls_store_t *st = simple_store(f);
    SSL_CTX *cctx = cli_ctx(version, version);
    pair_t p;
    pair_init(&p, cctx, st, "xmpp.example", "xmpp.example");
    assert_false(xd_tls_handshake_done(p.srv));
    assert_int_equal(xd_tls_send(p.srv, (const uint8_t *)"x", 1), XD_EINVAL);
    pair_handshake(&p, 0);
    assert_string_equal(xd_tls_version(p.srv), vname);
    assert_string_equal(SSL_get_version(p.cli), vname);
    assert_string_equal(xd_tls_cipher(p.srv), SSL_get_cipher_name(p.cli));
    assert_string_equal(xd_tls_sni(p.srv), "xmpp.example");
    assert_null(xd_tls_error(p.srv));
    if (version == TLS1_2_VERSION) /* default list: ECDHE with AEAD only */
        assert_non_null(strstr(xd_tls_cipher(p.srv), "ECDHE-ECDSA-"));

    const char *hello = "<stream:stream to='xmpp.example'>";
    assert_int_equal(cli_write(&p, hello, strlen(hello), 0), 0);
    assert_int_equal(p.plain_len, strlen(hello));
    assert_memory_equal(p.plain, hello, strlen(hello));
    assert_int_equal(p.plain_at_hs, 0);

    const char *reply = "<stream:features/>";
    assert_int_equal(xd_tls_send(p.srv, (const uint8_t *)reply, strlen(reply)), 0);
    uint8_t buf[256];
    size_t n = cli_read(&p, buf, sizeof buf);
    assert_int_equal(n, strlen(reply));
    assert_memory_equal(buf, reply, n);

    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

static void
test_tls__handshake_tls13(void **state)
{
    handshake_and_echo(*state, TLS1_3_VERSION, "TLSv1.3");
}

static void
test_tls__handshake_tls12(void **state)
{
    handshake_and_echo(*state, TLS1_2_VERSION, "TLSv1.2");
}

static void
test_tls__sni_selects_certificate(void **state)
{
    fx_t *f = *state;
    X509_free(mk_certfile(f, "a.pem", "a.example", (const char *[]){ "a.example", NULL }));
    X509_free(mk_certfile(f, "b.pem", "b.example", (const char *[]){ "b.example", NULL }));
    const char *files[] = { fx_path(f, "*.pem") }; /* a glob */
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1 };
    xd_tls_store_t *st = load_ok(&o);
    assert_int_equal(xd_tls_store_count(st), 2);
    assert_true(xd_tls_store_has(st, "a.example"));
    assert_true(xd_tls_store_has(st, "B.Example"));
    assert_false(xd_tls_store_has(st, "c.example"));
    assert_false(xd_tls_store_has(st, "x.a.example"));

    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
    static const struct {
        const char *dflt, *sni, *want;
    } cases[] = {
        { "a.example", "b.example", "b.example" }, /* SNI wins over the default */
        { "b.example", "a.example", "a.example" },
        { "b.example", NULL, "b.example" },        /* no SNI: the default host */
        { "a.example", NULL, "a.example" },
        { "b.example", "zzz.example", "b.example" }, /* unknown SNI: the default */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pair_t p;
        pair_init(&p, cctx, st, cases[i].dflt, cases[i].sni);
        pair_handshake(&p, 0);
        char cn[64];
        cli_peer_cn(&p, cn, sizeof cn);
        assert_string_equal(cn, cases[i].want);
        if (cases[i].sni)
            assert_string_equal(xd_tls_sni(p.srv), cases[i].sni);
        else
            assert_null(xd_tls_sni(p.srv));
        pair_free(&p);
    }
    /* no default host and no SNI: some certificate, still a handshake */
    pair_t p;
    pair_init(&p, cctx, st, NULL, NULL);
    pair_handshake(&p, 0);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

static void
test_tls__wildcard_certificate(void **state)
{
    fx_t *f = *state;
    X509_free(mk_certfile(f, "w.pem", "wild", (const char *[]){ "*.example.net", NULL }));
    X509_free(mk_certfile(f, "o.pem", "other.example", (const char *[]){ "other.example", NULL }));
    const char *files[] = { fx_path(f, "o.pem"), fx_path(f, "w.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 2 };
    xd_tls_store_t *st = load_ok(&o);
    assert_true(xd_tls_store_has(st, "conference.example.net"));
    assert_true(xd_tls_store_has(st, "UPLOAD.example.NET"));
    assert_false(xd_tls_store_has(st, "example.net"));      /* RFC6125 6.4.3 */
    assert_false(xd_tls_store_has(st, "a.b.example.net")); /* one label only */
    assert_false(xd_tls_store_has(st, "*.example.net"));

    SSL_CTX *cctx = cli_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, "other.example", "muc.example.net");
    pair_handshake(&p, 0);
    char cn[64];
    cli_peer_cn(&p, cn, sizeof cn);
    assert_string_equal(cn, "wild");
    pair_free(&p);
    pair_init(&p, cctx, st, "other.example", "a.b.example.net");
    pair_handshake(&p, 0);
    cli_peer_cn(&p, cn, sizeof cn);
    assert_string_equal(cn, "other.example");
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

/* A leaf signed by an intermediate signed by a root; key in its own file;
 * the client verifies the chain it receives against the root. */
static void
test_tls__chain_split_files_cn_fallback(void **state)
{
    fx_t *f = *state;
    EVP_PKEY *rk = mk_key(), *ik = mk_key(), *lk = mk_key();
    X509 *root = mk_cert_ex(rk, "Test Root", NULL, NULL, NULL, true, EVP_sha256(), -1, 30);
    X509 *inter = mk_cert_ex(ik, "Test Intermediate", NULL, root, rk, true, EVP_sha256(), -1, 30);
    X509 *leaf = mk_cert_ex(lk, "chain.example", (const char *[]){ "chain.example", NULL }, inter,
                            ik, false, EVP_sha256(), -1, 30);
    write_pem(fx_path(f, "fullchain.pem"), NULL, (X509 *const[]){ leaf, inter, NULL });
    write_pem(fx_path(f, "privkey.pem"), lk, NULL);
    write_pem(fx_path(f, "root.pem"), NULL, (X509 *const[]){ root, NULL });
    /* CN only, no SAN: indexed by its CN */
    EVP_PKEY *ck = mk_key();
    X509 *cnonly = mk_cert(ck, "cn.example", NULL);
    write_pem(fx_path(f, "cn.pem"), ck, (X509 *const[]){ cnonly, NULL });
    /* SAN present: its CN is not a name */
    X509_free(
        mk_certfile(f, "san.pem", "notaname.example", (const char *[]){ "san.example", NULL }));

    const char *files[] = { fx_path(f, "fullchain.pem"), fx_path(f, "privkey.pem"),
                            fx_path(f, "root.pem"), fx_path(f, "cn.pem"), fx_path(f, "san.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 5 };
    xd_tls_store_t *st = load_ok(&o);
    assert_int_equal(xd_tls_store_count(st), 3);
    assert_true(xd_tls_store_has(st, "chain.example"));
    assert_true(xd_tls_store_has(st, "cn.example"));
    assert_true(xd_tls_store_has(st, "san.example"));
    assert_false(xd_tls_store_has(st, "notaname.example"));

    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), root);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    pair_t p;
    pair_init(&p, cctx, st, NULL, "chain.example");
    SSL_set1_host(p.cli, "chain.example");
    pair_handshake(&p, 0);
    assert_int_equal(SSL_get_verify_result(p.cli), X509_V_OK);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(p.cli);
    assert_int_equal(sk_X509_num(chain), 2); /* leaf + intermediate, no root */
    assert_int_equal(X509_cmp(sk_X509_value(chain, 1), inter), 0);
    pair_free(&p);

    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
    X509_free(root);
    X509_free(inter);
    X509_free(leaf);
    X509_free(cnonly);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ik);
    EVP_PKEY_free(lk);
    EVP_PKEY_free(ck);
}

static void
test_tls__cert_key_mismatch_names_file(void **state)
{
    fx_t *f = *state;
    EVP_PKEY *k1 = mk_key(), *k2 = mk_key();
    X509 *x = mk_cert(k1, "mm.example", (const char *[]){ "mm.example", NULL });
    write_pem(fx_path(f, "mismatch.pem"), k2, (X509 *const[]){ x, NULL });
    const char *files[] = { fx_path(f, "mismatch.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1 };
    char *err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, files[0]));
    assert_non_null(strstr(err, "matches no certificate"));
    xd_free(err);

    /* a leaf certificate alone, its key nowhere */
    write_pem(fx_path(f, "nokey.pem"), NULL, (X509 *const[]){ x, NULL });
    files[0] = fx_path(f, "nokey.pem");
    err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, files[0]));
    assert_non_null(strstr(err, "no private key"));
    assert_non_null(strstr(err, "mm.example"));
    xd_free(err);

    /* the key in a second file pairs up across files */
    write_pem(fx_path(f, "k1.pem"), k1, NULL);
    const char *files2[] = { fx_path(f, "nokey.pem"), fx_path(f, "k1.pem") };
    o.certfiles = files2;
    o.ncertfiles = 2;
    xd_tls_store_t *st = load_ok(&o);
    assert_true(xd_tls_store_has(st, "mm.example"));
    xd_tls_store_unref(st);

    /* an encrypted key is refused with a clear message */
    FILE *fp = fopen(fx_path(f, "enc.pem"), "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_PKCS8PrivateKey(fp, k1, EVP_aes_128_cbc(), NULL, 0, NULL,
                                               (void *)"secret"),
                     1);
    fclose(fp);
    const char *files3[] = { fx_path(f, "nokey.pem"), fx_path(f, "enc.pem") };
    o.certfiles = files3;
    err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, files3[1]));
    assert_non_null(strstr(err, "encrypted"));
    xd_free(err);

    X509_free(x);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

static void
test_tls__missing_file_names_file(void **state)
{
    fx_t *f = *state;
    const char *files[] = { fx_path(f, "does-not-exist.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1 };
    char *err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, files[0]));
    assert_non_null(strstr(err, "No such file"));
    xd_free(err);

    /* a file that holds no PEM */
    FILE *fp = fopen(fx_path(f, "empty.pem"), "w");
    fputs("not a certificate\n", fp);
    fclose(fp);
    files[0] = fx_path(f, "empty.pem");
    err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, files[0]));
    xd_free(err);

    /* a pattern that matches nothing is a warning, not an error */
    X509_free(mk_certfile(f, "ok.pem", "ok.example", (const char *[]){ "ok.example", NULL }));
    const char *files2[] = { fx_path(f, "nothing-*.pem"), fx_path(f, "ok.pem") };
    o.certfiles = files2;
    o.ncertfiles = 2;
    xd_tls_store_t *st = load_ok(&o);
    size_t nw = 0;
    const char *const *w = xd_tls_store_warnings(st, &nw);
    assert_int_equal(nw, 1);
    assert_non_null(strstr(w[0], "nothing-*.pem"));
    xd_tls_store_unref(st);

    /* nothing at all */
    xd_tls_store_opts_t none = { 0 };
    err = load_err(&none, XD_EINVAL);
    xd_free(err);
}

static void
test_tls__selfsigned_created_0600_and_reused(void **state)
{
    fx_t *f = *state;
    X509_free(mk_certfile(f, "a.pem", "a.example", (const char *[]){ "a.example", NULL }));
    const char *files[] = { fx_path(f, "a.pem") };
    const char *hosts[] = { "a.example", "xmpp.test", "muc.xmpp.test" };
    char data_dir[400];
    snprintf(data_dir, sizeof data_dir, "%s/var/data", f->dir); /* does not exist yet */
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1, .hosts = hosts, .nhosts = 3,
                              .data_dir = data_dir };
    xd_tls_store_t *st = load_ok(&o);
    size_t n = 0;
    const xd_tls_selfsigned_t *ss = xd_tls_store_selfsigned(st, &n);
    assert_int_equal(n, 1); /* a.example has a cert; muc.xmpp.test is covered by *.xmpp.test */
    assert_string_equal(ss[0].host, "xmpp.test");
    assert_true(ss[0].created);
    char path[512];
    snprintf(path, sizeof path, "%s/certs/xmpp.test.pem", data_dir);
    assert_string_equal(ss[0].path, path);
    assert_true(xd_tls_store_has(st, "xmpp.test"));
    assert_true(xd_tls_store_has(st, "muc.xmpp.test"));
    assert_int_equal(xd_tls_store_count(st), 2);

    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char certs_dir[450];
    snprintf(certs_dir, sizeof certs_dir, "%s/certs", data_dir);
    assert_int_equal(stat(certs_dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);

    /* what the file holds: P-256 key, SAN host and *.host, one year */
    FILE *fp = fopen(path, "r");
    EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(k);
    assert_non_null(x);
    assert_true(EVP_PKEY_is_a(k, "EC"));
    assert_int_equal(EVP_PKEY_get_bits(k), 256);
    assert_int_equal(X509_check_private_key(x, k), 1);
    assert_int_equal(X509_check_host(x, "xmpp.test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "upload.xmpp.test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "a.b.xmpp.test", 0, 0, NULL), 0);
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)),
                     1);
    assert_true(days >= 365 && days <= 366);
    const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
    assert_true(ASN1_STRING_length(serial) >= 8);
    xd_tls_store_unref(st);

    /* a second load reuses it */
    st = load_ok(&o);
    ss = xd_tls_store_selfsigned(st, &n);
    assert_int_equal(n, 1);
    assert_false(ss[0].created);
    SSL_CTX *cctx = cli_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, "a.example", "xmpp.test");
    pair_handshake(&p, 0);
    X509 *served = SSL_get1_peer_certificate(p.cli);
    assert_int_equal(X509_cmp(served, x), 0);
    X509_free(served);
    pair_free(&p);
    xd_tls_store_unref(st);

    /* an expired one is replaced */
    EVP_PKEY *ok = mk_key();
    X509 *old = mk_cert_ex(ok, "xmpp.test", (const char *[]){ "xmpp.test", NULL }, NULL, NULL,
                           false, EVP_sha256(), -20, -10);
    write_pem(path, ok, (X509 *const[]){ old, NULL });
    st = load_ok(&o);
    ss = xd_tls_store_selfsigned(st, &n);
    assert_int_equal(n, 1);
    assert_true(ss[0].created);
    size_t nw = 0;
    const char *const *w = xd_tls_store_warnings(st, &nw);
    assert_int_equal(nw, 1);
    assert_non_null(strstr(w[0], "expired"));
    fp = fopen(path, "r");
    X509 *renewed = PEM_read_X509(fp, NULL, NULL, NULL);
    PEM_read_X509(fp, &renewed, NULL, NULL);
    fclose(fp);
    assert_non_null(renewed);
    assert_true(X509_cmp_current_time(X509_get0_notAfter(renewed)) > 0);
    X509_free(renewed);
    xd_tls_store_unref(st);

    /* no data_dir: a host without a certificate is an error naming it */
    o.data_dir = NULL;
    char *err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, "xmpp.test"));
    xd_free(err);
    /* a host that cannot be a file name */
    const char *bad[] = { "../etc" };
    xd_tls_store_opts_t ob = { .hosts = bad, .nhosts = 1, .data_dir = data_dir };
    err = load_err(&ob, XD_EINVAL);
    xd_free(err);

    SSL_CTX_free(cctx);
    X509_free(x);
    X509_free(old);
    EVP_PKEY_free(k);
    EVP_PKEY_free(ok);
}

/* Checks exporter and end-point on both ends; returns the pair (caller
 * frees). */
static void
check_bindings(pair_t *p, X509 *servercert, const EVP_MD *ep_md)
{
    uint8_t s[XD_TLS_CB_MAX], c[XD_TLS_CB_MAX];
    size_t n = 0;
    /* RFC9266 2: 32 bytes, label EXPORTER-Channel-Binding, no context */
    assert_true(xd_tls_cb_available(p->srv, XD_TLS_CB_EXPORTER));
    assert_int_equal(xd_tls_channel_binding(p->srv, XD_TLS_CB_EXPORTER, s, sizeof s, &n), 0);
    assert_int_equal(n, 32);
    assert_int_equal(SSL_export_keying_material(p->cli, c, 32, "EXPORTER-Channel-Binding", 24,
                                                NULL, 0, 0),
                     1);
    assert_memory_equal(s, c, 32);
    assert_int_equal(xd_tls_channel_binding(p->srv, XD_TLS_CB_EXPORTER, s, 31, &n), XD_ELIMIT);

    /* RFC5929 4.1: hash of the certificate the client received */
    X509 *peer = SSL_get1_peer_certificate(p->cli);
    assert_int_equal(X509_cmp(peer, servercert), 0);
    unsigned cn = 0;
    assert_int_equal(X509_digest(peer, ep_md, c, &cn), 1);
    X509_free(peer);
    assert_int_equal(xd_tls_channel_binding(p->srv, XD_TLS_CB_SERVER_END_POINT, s, sizeof s, &n),
                     0);
    assert_int_equal(n, cn);
    assert_int_equal(n, (size_t)EVP_MD_get_size(ep_md));
    assert_memory_equal(s, c, n);
}

static void
test_tls__channel_binding_tls13(void **state)
{
    fx_t *f = *state;
    X509 *x = mk_certfile(f, "c.pem", "cb.example", (const char *[]){ "cb.example", NULL });
    const char *files[] = { fx_path(f, "c.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1 };
    xd_tls_store_t *st = load_ok(&o);
    SSL_CTX *cctx = cli_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, "cb.example", NULL);
    uint8_t s[XD_TLS_CB_MAX];
    size_t n = 0;
    assert_false(xd_tls_cb_available(p.srv, XD_TLS_CB_EXPORTER)); /* before the handshake */
    assert_int_equal(xd_tls_channel_binding(p.srv, XD_TLS_CB_EXPORTER, s, sizeof s, &n),
                     XD_ENOTSUP);
    pair_handshake(&p, 0);
    check_bindings(&p, x, EVP_sha256());
    /* RFC9266 3: tls-unique is not defined for TLS 1.3 */
    assert_false(xd_tls_cb_available(p.srv, XD_TLS_CB_UNIQUE));
    assert_int_equal(xd_tls_channel_binding(p.srv, XD_TLS_CB_UNIQUE, s, sizeof s, &n), XD_ENOTSUP);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
    X509_free(x);
}

static void
test_tls__channel_binding_tls12(void **state)
{
    fx_t *f = *state;
    /* signed with ecdsa-with-SHA384: the end-point hash is SHA-384 */
    EVP_PKEY *k = mk_key();
    X509 *x = mk_cert_ex(k, "cb12.example", (const char *[]){ "cb12.example", NULL }, NULL, NULL,
                         false, EVP_sha384(), -1, 30);
    write_pem(fx_path(f, "c.pem"), k, (X509 *const[]){ x, NULL });
    const char *files[] = { fx_path(f, "c.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1 };
    xd_tls_store_t *st = load_ok(&o);
    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, NULL, "cb12.example");
    pair_handshake(&p, 0);
    assert_int_equal(SSL_get_extms_support(p.cli), 1); /* RFC 7627 on by default */
    check_bindings(&p, x, EVP_sha384());
    /* tls-unique: the client's Finished, first in a full handshake */
    uint8_t s[XD_TLS_CB_MAX], c[XD_TLS_CB_MAX];
    size_t n = 0;
    assert_true(xd_tls_cb_available(p.srv, XD_TLS_CB_UNIQUE));
    assert_int_equal(xd_tls_channel_binding(p.srv, XD_TLS_CB_UNIQUE, s, sizeof s, &n), 0);
    size_t cn = SSL_get_finished(p.cli, c, sizeof c);
    assert_int_equal(n, cn);
    assert_int_equal(n, 12);
    assert_memory_equal(s, c, n);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void
test_tls__cb_names(void **state)
{
    (void)state;
    xd_tls_cb_type t;
    for (unsigned i = 0; i < XD_TLS_CB_COUNT; i++) {
        assert_int_equal(xd_tls_cb_parse(xd_str_c(xd_tls_cb_name((xd_tls_cb_type)i)), &t), 0);
        assert_int_equal(t, i);
    }
    assert_string_equal(xd_tls_cb_name(XD_TLS_CB_EXPORTER), "tls-exporter");
    assert_string_equal(xd_tls_cb_name(XD_TLS_CB_SERVER_END_POINT), "tls-server-end-point");
    assert_string_equal(xd_tls_cb_name(XD_TLS_CB_UNIQUE), "tls-unique");
    assert_int_equal(xd_tls_cb_parse(XD_STR("tls-exporte"), &t), XD_EINVAL);
    assert_int_equal(xd_tls_cb_parse(XD_STR("TLS-UNIQUE"), &t), XD_EINVAL);
}

static void
test_tls__fragmented_byte_by_byte(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    int versions[] = { TLS1_2_VERSION, TLS1_3_VERSION };
    for (int v = 0; v < 2; v++) {
        SSL_CTX *cctx = cli_ctx(versions[v], versions[v]);
        pair_t p;
        pair_init(&p, cctx, st, NULL, "xmpp.example");
        pair_handshake(&p, 1); /* every handshake record, one byte per call */
        char msg[3000];
        for (size_t i = 0; i < sizeof msg; i++)
            msg[i] = (char)('a' + i % 26);
        assert_int_equal(cli_write(&p, msg, sizeof msg, 1), 0);
        assert_int_equal(p.plain_len, sizeof msg);
        assert_memory_equal(p.plain, msg, sizeof msg);
        /* three records in one write, cut in 7-byte pieces */
        p.plain_len = 0;
        for (int r = 0; r < 3; r++)
            assert_int_equal(SSL_write(p.cli, msg + r * 100, 100), 100);
        size_t moved = 0;
        assert_int_equal(pair_flush(&p, 7, &moved), 0);
        assert_int_equal(p.plain_len, 300);
        assert_memory_equal(p.plain, msg, 300);
        pair_free(&p);
        SSL_CTX_free(cctx);
    }
    xd_tls_store_unref(st);
}

static void
test_tls__garbage_input(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
    pair_t p;

    /* plain XML where a ClientHello belongs */
    pair_init(&p, cctx, st, NULL, NULL);
    const char *xml = "<?xml version='1.0'?><stream:stream to='xmpp.example'>";
    assert_int_equal(xd_tls_input(p.srv, (const uint8_t *)xml, strlen(xml)), XD_ETLS);
    assert_non_null(xd_tls_error(p.srv));
    assert_int_equal(xd_tls_input(p.srv, (const uint8_t *)"x", 1), XD_ETLS);
    assert_int_equal(xd_tls_send(p.srv, (const uint8_t *)"x", 1), XD_ETLS);
    assert_int_equal(p.plain_len, 0);
    pair_free(&p);

    /* a forged application-data record after the handshake */
    pair_init(&p, cctx, st, NULL, NULL);
    pair_handshake(&p, 0);
    uint8_t rec[5 + 64] = { 0x17, 0x03, 0x03, 0x00, 64 };
    RAND_bytes(rec + 5, 64);
    assert_int_equal(xd_tls_input(p.srv, rec, sizeof rec), XD_ETLS);
    assert_non_null(xd_tls_error(p.srv));
    assert_int_equal(p.plain_len, 0);
    pair_free(&p);

    /* random bytes, random lengths, fresh and after a handshake: XD_ETLS or
     * 0 (waiting for more), never a crash */
    srand(1234);
    uint8_t buf[4096];
    for (int i = 0; i < 200; i++) {
        pair_init(&p, cctx, st, NULL, NULL);
        if (i % 2)
            pair_handshake(&p, 0);
        size_t len = 1 + (size_t)rand() % sizeof buf;
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)rand();
        if (i % 4 == 0) /* a plausible record header */
            memcpy(buf, (const uint8_t[]){ 0x16, 0x03, 0x01 }, 3);
        int rc = xd_tls_input(p.srv, buf, len);
        assert_true(rc == 0 || rc == XD_ETLS);
        if (rc == XD_ETLS)
            assert_non_null(xd_tls_error(p.srv));
        assert_int_equal(p.plain_len, 0);
        pair_free(&p);
    }
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

static void
test_tls__pause_resume_keeps_bytes(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, NULL, NULL);
    pair_handshake(&p, 0);

    /* five records in one input; the callback pauses after each */
    char want[1024];
    size_t wlen = 0;
    for (int r = 0; r < 5; r++) {
        char rec[64];
        int n = snprintf(rec, sizeof rec, "<message id='%d'>record %d</message>", r, r);
        assert_int_equal(SSL_write(p.cli, rec, n), n);
        memcpy(want + wlen, rec, (size_t)n);
        wlen += (size_t)n;
    }
    p.pause_each = true;
    size_t moved = 0;
    assert_int_equal(pair_flush(&p, 0, &moved), 0);
    assert_true(xd_tls_paused(p.srv));
    assert_int_equal(p.chunks, 1);
    size_t first = p.plain_len;
    assert_true(first > 0 && first < wlen);

    /* more arrives while paused, in uneven pieces: queued, not delivered */
    for (int r = 5; r < 8; r++) {
        char rec[64];
        int n = snprintf(rec, sizeof rec, "<message id='%d'>late %d</message>", r, r);
        assert_int_equal(SSL_write(p.cli, rec, n), n);
        memcpy(want + wlen, rec, (size_t)n);
        wlen += (size_t)n;
    }
    uint8_t ct[4096];
    int cn = BIO_read(p.c_wr, ct, sizeof ct);
    assert_true(cn > 20);
    assert_int_equal(xd_tls_input(p.srv, ct, 13), 0);
    assert_int_equal(xd_tls_input(p.srv, ct + 13, 1), 0);
    assert_int_equal(xd_tls_input(p.srv, ct + 14, (size_t)cn - 14), 0);
    assert_int_equal(p.plain_len, first);
    assert_int_equal(p.chunks, 1);

    /* each resume delivers one more chunk; nothing is lost or repeated */
    size_t resumes = 0;
    while (xd_tls_paused(p.srv)) {
        assert_int_equal(xd_tls_resume(p.srv), 0);
        resumes++;
        assert_true(resumes < 100);
    }
    assert_int_equal(p.plain_len, wlen);
    assert_memory_equal(p.plain, want, wlen);
    assert_int_equal(p.chunks, 8);
    assert_int_equal(resumes, 8); /* the last resume finds nothing and stays unpaused */

    /* xd_tls_pause from outside, then input, then resume */
    p.pause_each = false;
    xd_tls_pause(p.srv);
    assert_int_equal(cli_write(&p, "tail", 4, 0), 0);
    assert_int_equal(p.plain_len, wlen);
    assert_int_equal(xd_tls_resume(p.srv), 0);
    assert_int_equal(p.plain_len, wlen + 4);
    assert_memory_equal(p.plain + wlen, "tail", 4);
    assert_int_equal(xd_tls_resume(p.srv), 0); /* not paused: no-op */

    /* a close_notify queued behind a pause comes out on resume */
    xd_tls_pause(p.srv);
    SSL_shutdown(p.cli);
    moved = 0;
    assert_int_equal(pair_flush(&p, 0, &moved), 0);
    assert_int_equal(xd_tls_resume(p.srv), XD_ECLOSED);

    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

static void
test_tls__tls11_refused(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_1_VERSION, TLS1_1_VERSION);
    SSL_CTX_set_security_level(cctx, 0); /* let the client offer TLS 1.1 */
    assert_int_equal(SSL_CTX_set_cipher_list(cctx, "DEFAULT:@SECLEVEL=0"), 1);
    pair_t p;
    pair_init(&p, cctx, st, NULL, "xmpp.example");
    assert_int_equal(SSL_do_handshake(p.cli), -1);
    uint8_t hello[4096];
    int n = BIO_read(p.c_wr, hello, sizeof hello);
    assert_true(n > 11);
    assert_int_equal(hello[0], 0x16);                  /* handshake record */
    assert_int_equal(hello[5], 0x01);                  /* ClientHello */
    assert_int_equal((hello[9] << 8) | hello[10], 0x0302); /* client_version TLS 1.1 */
    assert_int_equal(xd_tls_input(p.srv, hello, (size_t)n), XD_ETLS);
    assert_non_null(strstr(xd_tls_error(p.srv), "protocol"));
    assert_false(xd_tls_handshake_done(p.srv));
    assert_int_equal(p.hs_calls, 0);
    /* the client receives a protocol_version alert */
    assert_true(p.sent > 0);
    assert_int_equal(SSL_do_handshake(p.cli), -1);
    assert_int_equal(SSL_get_error(p.cli, -1), SSL_ERROR_SSL);
    ERR_clear_error();
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

static void
test_tls__close_notify(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    int versions[] = { TLS1_2_VERSION, TLS1_3_VERSION };
    for (int v = 0; v < 2; v++) {
        SSL_CTX *cctx = cli_ctx(versions[v], versions[v]);
        pair_t p;
        /* the client says goodbye: data, then close_notify, in one input */
        pair_init(&p, cctx, st, NULL, NULL);
        pair_handshake(&p, 0);
        assert_int_equal(SSL_write(p.cli, "</stream:stream>", 16), 16);
        assert_int_equal(SSL_shutdown(p.cli), 0);
        size_t moved = 0;
        assert_int_equal(pair_flush(&p, 0, &moved), XD_ECLOSED);
        assert_int_equal(p.plain_len, 16);
        assert_memory_equal(p.plain, "</stream:stream>", 16);
        assert_int_equal(xd_tls_input(p.srv, (const uint8_t *)"x", 1), XD_ECLOSED);
        assert_null(xd_tls_error(p.srv));
        size_t before = p.sent;
        xd_tls_shutdown(p.srv);
        assert_true(p.sent > before);
        assert_int_equal(SSL_shutdown(p.cli), 1); /* both close_notify seen */
        pair_free(&p);

        /* the server says goodbye first */
        pair_init(&p, cctx, st, NULL, NULL);
        pair_handshake(&p, 0);
        xd_tls_shutdown(p.srv);
        before = p.sent;
        xd_tls_shutdown(p.srv); /* once only */
        assert_int_equal(p.sent, before);
        assert_int_equal(xd_tls_send(p.srv, (const uint8_t *)"x", 1), XD_ECLOSED);
        uint8_t b[16];
        assert_int_equal(SSL_read(p.cli, b, sizeof b), 0);
        assert_int_equal(SSL_get_error(p.cli, 0), SSL_ERROR_ZERO_RETURN);
        pair_free(&p);
        SSL_CTX_free(cctx);
    }
    xd_tls_store_unref(st);
}

static void
test_tls__options(void **state)
{
    fx_t *f = *state;
    X509_free(mk_certfile(f, "o.pem", "o.example", (const char *[]){ "o.example", NULL }));
    const char *files[] = { fx_path(f, "o.pem") };
    xd_tls_store_opts_t o = { .certfiles = files, .ncertfiles = 1, .min_version = "1.3" };
    xd_tls_store_t *st = load_ok(&o);
    SSL_CTX *c12 = cli_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
    pair_t p;
    pair_init(&p, c12, st, NULL, NULL);
    assert_int_equal(pair_pump(&p, 0), XD_ETLS);
    assert_non_null(strstr(xd_tls_error(p.srv), "protocol"));
    pair_free(&p);
    xd_tls_store_unref(st);

    /* an operator's TLS 1.2 cipher choice is what is negotiated */
    o.min_version = "1.2";
    o.ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305";
    st = load_ok(&o);
    pair_init(&p, c12, st, NULL, NULL);
    pair_handshake(&p, 0);
    assert_string_equal(xd_tls_cipher(p.srv), "ECDHE-ECDSA-CHACHA20-POLY1305");
    pair_free(&p);
    xd_tls_store_unref(st);

    o.ciphers = NULL;
    o.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
    st = load_ok(&o);
    SSL_CTX *c13 = cli_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair_init(&p, c13, st, NULL, NULL);
    pair_handshake(&p, 0);
    assert_string_equal(xd_tls_cipher(p.srv), "TLS_CHACHA20_POLY1305_SHA256");
    pair_free(&p);
    xd_tls_store_unref(st);

    /* bad options are XD_EINVAL naming the option */
    o.ciphersuites = NULL;
    o.min_version = "1.1";
    char *err = load_err(&o, XD_EINVAL);
    assert_non_null(strstr(err, "min_version"));
    xd_free(err);
    o.min_version = NULL;
    o.ciphers = "NO-SUCH-CIPHER";
    err = load_err(&o, XD_EINVAL);
    assert_non_null(strstr(err, "ciphers"));
    xd_free(err);
    o.ciphers = NULL;
    o.ciphersuites = "TLS_NOPE";
    err = load_err(&o, XD_EINVAL);
    assert_non_null(strstr(err, "ciphersuites"));
    xd_free(err);
    SSL_CTX_free(c12);
    SSL_CTX_free(c13);
}

static void
test_tls__send_failure_propagates(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, NULL, NULL);
    p.send_rc = -EPIPE;
    assert_int_equal(SSL_do_handshake(p.cli), -1);
    size_t moved = 0;
    assert_int_equal(pair_flush(&p, 0, &moved), -EPIPE); /* ServerHello could not go out */
    assert_non_null(xd_tls_error(p.srv));
    assert_int_equal(xd_tls_input(p.srv, (const uint8_t *)"x", 1), XD_ETLS);
    pair_free(&p);

    pair_init(&p, cctx, st, NULL, NULL);
    pair_handshake(&p, 0);
    p.send_rc = -ECONNRESET;
    assert_int_equal(xd_tls_send(p.srv, (const uint8_t *)"hello", 5), -ECONNRESET);
    assert_int_equal(xd_tls_send(p.srv, (const uint8_t *)"hello", 5), XD_ETLS);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

static void
test_tls__large_transfers(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, NULL, NULL);
    pair_handshake(&p, 0);
    size_t big = 200 * 1024;
    uint8_t *data = malloc(big), *back = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 7 + i / 251);
    assert_int_equal(xd_tls_send(p.srv, data, big), 0);
    assert_int_equal(cli_read(&p, back, big), big);
    assert_memory_equal(back, data, big);
    /* client to server: more than one record per input call */
    assert_int_equal(cli_write(&p, data, big, 0), 0);
    assert_int_equal(p.plain_len, big);
    assert_memory_equal(p.plain, data, big);
    assert_true(p.chunks >= big / 16384);
    free(data);
    free(back);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

/* TLS 1.2: a client's renegotiation is refused; no second handshake. */
static void
test_tls__renegotiation_refused(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, NULL, NULL);
    pair_handshake(&p, 0);
    assert_int_equal(SSL_renegotiate(p.cli), 1);
    SSL_do_handshake(p.cli);
    ERR_clear_error();
    size_t moved = 0;
    int rc = pair_flush(&p, 0, &moved);
    assert_true(moved > 0);
    assert_true(rc == 0 || rc == XD_ETLS);
    /* the client gets a no_renegotiation alert, not a ServerHello */
    SSL_do_handshake(p.cli);
    ERR_clear_error();
    assert_int_equal(p.hs_calls, 1);
    assert_int_equal(p.plain_len, 0);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

/* TLS 1.3: a KeyUpdate that requests ours is answered before our next
 * data, and data flows both ways after it. */
static void
test_tls__key_update(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, NULL, NULL);
    pair_handshake(&p, 0);
    assert_int_equal(SSL_key_update(p.cli, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(cli_write(&p, "after-update", 12, 0), 0);
    assert_int_equal(p.plain_len, 12);
    assert_memory_equal(p.plain, "after-update", 12);
    /* ours goes out before the next data: KeyUpdate record + data record */
    size_t before = p.sent;
    assert_int_equal(xd_tls_send(p.srv, (const uint8_t *)"pong", 4), 0);
    assert_int_equal(p.sent - before, (5 + 4 + 1 + 1 + 16) + (5 + 4 + 1 + 16));
    uint8_t b[16];
    assert_int_equal(cli_read(&p, b, sizeof b), 4);
    assert_memory_equal(b, "pong", 4);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

/* Resumption by stateless tickets works with the session cache off; on a
 * resumed TLS 1.2 handshake tls-unique is the server's Finished. */
static void
test_tls__resumption_with_tickets(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    int versions[] = { TLS1_2_VERSION, TLS1_3_VERSION };
    for (int v = 0; v < 2; v++) {
        SSL_CTX *cctx = cli_ctx(versions[v], versions[v]);
        pair_t p;
        pair_init(&p, cctx, st, "xmpp.example", "xmpp.example");
        pair_handshake(&p, 0);
        assert_int_equal(cli_write(&p, "a", 1, 0), 0);
        SSL_SESSION *sess = SSL_get1_session(p.cli);
        assert_non_null(sess);
        assert_true(SSL_SESSION_has_ticket(sess));
        /* a clean close: OpenSSL marks a session not resumable otherwise */
        SSL_shutdown(p.cli);
        size_t moved = 0;
        assert_int_equal(pair_flush(&p, 0, &moved), XD_ECLOSED);
        assert_true(SSL_SESSION_is_resumable(sess));
        pair_free(&p);

        pair_init(&p, cctx, st, "xmpp.example", "xmpp.example");
        assert_int_equal(SSL_set_session(p.cli, sess), 1);
        pair_handshake(&p, 0);
        assert_int_equal(SSL_session_reused(p.cli), 1);
        assert_string_equal(xd_tls_sni(p.srv), "xmpp.example");
        uint8_t s[XD_TLS_CB_MAX], c[XD_TLS_CB_MAX];
        size_t n = 0;
        if (versions[v] == TLS1_2_VERSION) {
            assert_int_equal(xd_tls_channel_binding(p.srv, XD_TLS_CB_UNIQUE, s, sizeof s, &n), 0);
            size_t cn = SSL_get_peer_finished(p.cli, c, sizeof c);
            assert_int_equal(n, cn);
            assert_memory_equal(s, c, n);
        }
        assert_int_equal(xd_tls_channel_binding(p.srv, XD_TLS_CB_EXPORTER, s, sizeof s, &n), 0);
        assert_int_equal(SSL_export_keying_material(p.cli, c, 32, "EXPORTER-Channel-Binding", 24,
                                                    NULL, 0, 0),
                         1);
        assert_memory_equal(s, c, 32);
        pair_free(&p);
        SSL_SESSION_free(sess);
        SSL_CTX_free(cctx);
    }
    xd_tls_store_unref(st);
}

/* A pause from io.handshake holds the plaintext that arrived with the
 * client's Finished; resume delivers it. */
static void
test_tls__pause_in_handshake_callback(void **state)
{
    xd_tls_store_t *st = simple_store(*state);
    SSL_CTX *cctx = cli_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, NULL, NULL);
    p.pause_at_hs = true;
    /* ClientHello → server flight; then Finished and data in one input */
    assert_int_equal(SSL_do_handshake(p.cli), -1);
    size_t moved = 0;
    assert_int_equal(pair_flush(&p, 0, &moved), 0);
    assert_int_equal(SSL_do_handshake(p.cli), 1);
    assert_int_equal(SSL_write(p.cli, "<stream:stream>", 15), 15);
    assert_int_equal(pair_flush(&p, 0, &moved), 0);
    assert_int_equal(p.hs_calls, 1);
    assert_true(xd_tls_paused(p.srv));
    assert_int_equal(p.plain_len, 0);
    assert_int_equal(xd_tls_resume(p.srv), 0);
    assert_int_equal(p.plain_len, 15);
    assert_memory_equal(p.plain, "<stream:stream>", 15);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

/* Internationalised hosts: the certificate carries A-labels, the store
 * answers for U-labels too. */
static void
test_tls__idn_hosts(void **state)
{
    fx_t *f = *state;
    const char *hosts[] = { "b\xc3\xbc" "cher.example" }; /* bücher.example */
    char data_dir[400];
    snprintf(data_dir, sizeof data_dir, "%s/data", f->dir);
    xd_tls_store_opts_t o = { .hosts = hosts, .nhosts = 1, .data_dir = data_dir };
    xd_tls_store_t *st = load_ok(&o);
    assert_true(xd_tls_store_has(st, "b\xc3\xbc" "cher.example"));
    assert_true(xd_tls_store_has(st, "xn--bcher-kva.example"));
    assert_true(xd_tls_store_has(st, "muc.xn--bcher-kva.example"));
    size_t n = 0;
    const xd_tls_selfsigned_t *ss = xd_tls_store_selfsigned(st, &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(ss[0].path, "/certs/xn--bcher-kva.example.pem"));
    SSL_CTX *cctx = cli_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
    pair_t p;
    pair_init(&p, cctx, st, "b\xc3\xbc" "cher.example", "xn--bcher-kva.example");
    pair_handshake(&p, 0);
    X509 *x = SSL_get1_peer_certificate(p.cli);
    assert_int_equal(X509_check_host(x, "xn--bcher-kva.example", 0, 0, NULL), 1);
    X509_free(x);
    pair_free(&p);
    SSL_CTX_free(cctx);
    xd_tls_store_unref(st);
}

/* Server heap per idle connection after handshake + a few records, with
 * the clients freed.  OpenSSL bytes come from the CRYPTO_set_mem_functions
 * hooks; whole-heap bytes from mallinfo2 where the allocator reports them
 * (not under ASan). */
static void
mem_measure(xd_tls_store_t *st, int version, size_t n, double *ossl_per, double *heap_per)
{
    SSL_CTX *cctx = cli_ctx(version, version);
    pair_t *pairs = calloc(n, sizeof *pairs);
    for (size_t i = 0; i < 4; i++) { /* warm-up: lazy OpenSSL state */
        pair_init(&pairs[i], cctx, st, NULL, NULL);
        pair_handshake(&pairs[i], 0);
        pair_free(&pairs[i]);
    }
    long o0 = t_ossl_live;
    size_t h0 = mallinfo2().uordblks;
    for (size_t i = 0; i < n; i++) {
        pair_t *p = &pairs[i];
        pair_init(p, cctx, st, "xmpp.example", "xmpp.example");
        p->keep = false;
        pair_handshake(p, 0);
        char msg[128];
        int len = snprintf(msg, sizeof msg, "<presence id='%zu'/>", i);
        assert_int_equal(cli_write(p, msg, (size_t)len, 0), 0);
        assert_int_equal(cli_write(p, "<r xmlns='urn:xmpp:sm:3'/>", 26, 0), 0);
        assert_int_equal(xd_tls_send(p->srv, (const uint8_t *)msg, (size_t)len), 0);
        uint8_t back[128];
        assert_int_equal(cli_read(p, back, sizeof back), (size_t)len);
        pair_free_client(p);
    }
    long o1 = t_ossl_live;
    size_t h1 = mallinfo2().uordblks;
    *ossl_per = (double)(o1 - o0) / (double)n;
    *heap_per = (double)((long)h1 - (long)h0) / (double)n;
    for (size_t i = 0; i < n; i++)
        pair_free(&pairs[i]);
    free(pairs);
    SSL_CTX_free(cctx);
}

static void
test_tls__memory_per_idle_connection(void **state)
{
    if (!t_ossl_counting)
        fail_msg("CRYPTO_set_mem_functions did not take: allocations happened before main");
    xd_tls_store_t *st = simple_store(*state);
    size_t n = 1000;
    double o12, h12, o13, h13;
    mem_measure(st, TLS1_2_VERSION, n, &o12, &h12);
    mem_measure(st, TLS1_3_VERSION, n, &o13, &h13);
    print_message("idle server connection, N=%zu: TLS1.2 OpenSSL %.0f B, heap %.0f B; "
                  "TLS1.3 OpenSSL %.0f B, heap %.0f B (heap 0 = not measurable here)\n",
                  n, o12, h12, o13, h13);
    assert_true(o12 > 1000 && o13 > 1000); /* the counting sees the SSL objects */
    assert_true(o12 < 16384);
    assert_true(o13 < 16384);
    if (h12 > 0 && h13 > 0) {
        assert_true(h12 < 16384);
        assert_true(h13 < 16384);
    }
    xd_tls_store_unref(st);
}

/* ---- s2s: test PKI, client mode, peer verification -------------------------------- */

#define OID_XMPPADDR "1.3.6.1.5.5.7.8.5" /* id-on-xmppAddr, RFC 6120 13.7.1.4 */
#define OID_SRVNAME "1.3.6.1.5.5.7.8.7"  /* id-on-dnsSRV, RFC 4985 */

/* A test certificate authority, made per test. */
typedef struct test_ca {
    EVP_PKEY *key;  /* its key */
    X509 *cert;     /* self-signed CA certificate */
    char file[512]; /* PEM with the certificate only: the trust anchor */
} test_ca_t;

static void
ca_make(fx_t *f, test_ca_t *ca, const char *cn, const char *file)
{
    ca->key = mk_key();
    ca->cert = mk_cert_san(ca->key, cn, NULL, NULL, NULL, true, EVP_sha256(), -1, 3650, NULL);
    snprintf(ca->file, sizeof ca->file, "%s", fx_path(f, file));
    write_pem(ca->file, NULL, (X509 *const[]){ ca->cert, NULL });
}

static void
ca_free(test_ca_t *ca)
{
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
}

/* Writes <dir>/<file>: a new key and a certificate (cn, san, validity,
 * eku) signed by ca (NULL = self-signed), followed by extra (an
 * intermediate to send along; may be NULL). */
static void
mk_leaf(fx_t *f, const char *file, const test_ca_t *ca, const char *cn, const char *san,
        long from_days, long to_days, const char *eku, X509 *extra)
{
    EVP_PKEY *k = mk_key();
    X509 *x = mk_cert_san(k, cn, san, ca ? ca->cert : NULL, ca ? ca->key : NULL, false,
                          EVP_sha256(), from_days, to_days, eku);
    write_pem(fx_path(f, file), k, (X509 *const[]){ x, extra, NULL });
    X509_free(x);
    EVP_PKEY_free(k);
}

/* A store with the given certificate files and trust anchors in ca_file. */
static xd_tls_store_t *
store_with(fx_t *f, const char *const *files, size_t n, const char *ca_file)
{
    const char *paths[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        paths[i] = fx_path(f, files[i]);
    xd_tls_store_opts_t o = { .certfiles = paths, .ncertfiles = n, .ca_file = ca_file };
    return load_ok(&o);
}

/* One end of an engine-to-engine connection. */
typedef struct eside {
    xd_tls_t *t;         /* the engine */
    uint8_t *out;        /* ciphertext it sent, not yet given to the other end */
    size_t out_len;      /* bytes in out */
    size_t out_cap;      /* capacity of out */
    uint8_t plain[4096]; /* plaintext it delivered */
    size_t plain_len;    /* bytes in plain */
    size_t hs_calls;     /* io.handshake calls */
    int rc;              /* first non-zero xd_tls_input result */
} eside_t;

typedef struct epair {
    eside_t c; /* xd_tls_client_new */
    eside_t s; /* xd_tls_server_new */
} epair_t;

static int
e_send(void *ud, const uint8_t *data, size_t len)
{
    eside_t *e = ud;
    if (e->out_len + len > e->out_cap) {
        e->out_cap = (e->out_len + len) * 2;
        e->out = realloc(e->out, e->out_cap);
    }
    memcpy(e->out + e->out_len, data, len);
    e->out_len += len;
    return 0;
}

static int
e_plain(void *ud, const uint8_t *data, size_t len)
{
    eside_t *e = ud;
    assert_true(e->plain_len + len <= sizeof e->plain);
    memcpy(e->plain + e->plain_len, data, len);
    e->plain_len += len;
    return 0;
}

static void
e_handshake(void *ud)
{
    ((eside_t *)ud)->hs_calls++;
}

static xd_tls_io_t
e_io(eside_t *e)
{
    return (xd_tls_io_t){ .ud = e, .send = e_send, .plain = e_plain, .handshake = e_handshake };
}

/* Server options for ep_init. */
typedef struct srv_opts {
    const char *default_host; /* xd_tls_server_new's */
    bool request_cert;        /* xd_tls_request_cert */
    const char *alpn;         /* xd_tls_set_alpn, NULL = not called */
} srv_opts_t;

static void
ep_init(epair_t *p, xd_tls_store_t *cst, const char *local, const char *remote, const char *alpn,
        xd_tls_store_t *sst, srv_opts_t so)
{
    memset(p, 0, sizeof *p);
    xd_tls_io_t cio = e_io(&p->c), sio = e_io(&p->s);
    assert_int_equal(xd_tls_client_new(cst, local, remote, alpn, &cio, &p->c.t), 0);
    assert_int_equal(xd_tls_server_new(sst, so.default_host, &sio, &p->s.t), 0);
    if (so.request_cert)
        assert_int_equal(xd_tls_request_cert(p->s.t), 0);
    if (so.alpn != NULL)
        assert_int_equal(xd_tls_set_alpn(p->s.t, so.alpn), 0);
    assert_true(xd_tls_is_client(p->c.t));
    assert_false(xd_tls_is_client(p->s.t));
}

/* Hands one side's output to the other. */
static bool
ep_move(eside_t *from, eside_t *to)
{
    if (from->out_len == 0 || to->rc != 0)
        return false;
    size_t n = from->out_len;
    from->out_len = 0; /* `to` writes to its own buffer only */
    int rc = xd_tls_input(to->t, from->out, n);
    if (rc != 0 && to->rc == 0)
        to->rc = rc;
    return true;
}

/* Starts the client and moves bytes both ways until nothing moves. */
static void
ep_pump(epair_t *p)
{
    if (!xd_tls_handshake_done(p->c.t) && p->c.out_len == 0 && p->s.out_len == 0 && p->c.rc == 0) {
        int rc = xd_tls_start(p->c.t);
        if (rc != XD_EINVAL) /* EINVAL: already started */
            p->c.rc = rc;
    }
    for (int round = 0; round < 100; round++) {
        bool a = ep_move(&p->c, &p->s);
        bool b = ep_move(&p->s, &p->c);
        if (!a && !b)
            return;
    }
    fail_msg("the engines keep talking");
}

static void
ep_handshake(epair_t *p)
{
    ep_pump(p);
    if (p->c.rc != 0 || p->s.rc != 0)
        fail_msg("handshake: client %s (%s), server %s (%s)", xd_err_name(p->c.rc),
                 xd_tls_error(p->c.t) ? xd_tls_error(p->c.t) : "-", xd_err_name(p->s.rc),
                 xd_tls_error(p->s.t) ? xd_tls_error(p->s.t) : "-");
    assert_true(xd_tls_handshake_done(p->c.t));
    assert_true(xd_tls_handshake_done(p->s.t));
    assert_int_equal(p->c.hs_calls, 1);
    assert_int_equal(p->s.hs_calls, 1);
}

static void
ep_free(epair_t *p)
{
    xd_tls_free(p->c.t);
    xd_tls_free(p->s.t);
    free(p->c.out);
    free(p->s.out);
}

/* The client's verdict on a server presenting a certificate for cn/san
 * (signed by ca, NULL = self-signed) when it expects domain. */
static xd_tls_peer_result_t
verdict(fx_t *f, xd_tls_store_t *cst, const test_ca_t *ca, const char *cn, const char *san,
        long from_days, long to_days, const char *eku, const char *domain)
{
    mk_leaf(f, "v.pem", ca, cn, san, from_days, to_days, eku, NULL);
    xd_tls_store_t *sst = store_with(f, (const char *[]){ "v.pem" }, 1, NULL);
    epair_t p;
    ep_init(&p, cst, NULL, domain ? domain : "a.test", NULL, sst, (srv_opts_t){ 0 });
    ep_handshake(&p);
    xd_tls_peer_result_t r;
    assert_int_equal(xd_tls_peer_verify(p.c.t, domain, &r), 0);
    assert_non_null(r.reason);
    ep_free(&p);
    xd_tls_store_unref(sst);
    return r;
}

/* A client store for "b.test" trusting ca. */
static xd_tls_store_t *
client_store(fx_t *f, const test_ca_t *ca)
{
    mk_leaf(f, "b.pem", ca, "b.test", "DNS:b.test", -1, 30, NULL, NULL);
    return store_with(f, (const char *[]){ "b.pem" }, 1, ca->file);
}

#define EXPECT_MATCH(r, kind)                                                                      \
    do {                                                                                           \
        xd_tls_peer_result_t r_ = (r);                                                             \
        if (r_.status != XD_TLS_PEER_OK || r_.matched != (kind))                                   \
            fail_msg("line %d: status %s (%s), matched %d, want ok/%d", __LINE__,                  \
                     xd_tls_peer_status_name(r_.status), r_.reason, r_.matched, (kind));           \
        assert_true(r_.chain_ok &&r_.name_ok);                                                     \
        assert_int_equal(r_.x509_err, 0);                                                          \
    } while (0)

#define EXPECT_MISMATCH(r)                                                                         \
    do {                                                                                           \
        xd_tls_peer_result_t r_ = (r);                                                             \
        if (r_.status != XD_TLS_PEER_NAME_MISMATCH)                                                \
            fail_msg("line %d: status %s (%s), want name-mismatch", __LINE__,                      \
                     xd_tls_peer_status_name(r_.status), r_.reason);                               \
        assert_true(r_.chain_ok);                                                                  \
        assert_false(r_.name_ok);                                                                  \
        assert_int_equal(r_.matched, XD_TLS_ID_NONE);                                              \
    } while (0)

/* RFC7590 3.2 / RFC6125 6 / RFC6120 13.7.1.4: SRV-ID, XmppAddr, DNS-ID,
 * each on a certificate the client trusts. */
static void
test_tls__peer_name_rules(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);

    /* SRV-ID only (the CN names another host and is ignored) */
    EXPECT_MATCH(verdict(f, cst, &ca, "other.test",
                         "otherName:" OID_SRVNAME ";IA5:_xmpp-server.a.test", -1, 30, NULL,
                         "a.test"),
                 XD_TLS_ID_SRV);
    /* an _xmpp-client SRV-ID says nothing about a server */
    EXPECT_MISMATCH(verdict(f, cst, &ca, "a.test",
                            "otherName:" OID_SRVNAME ";IA5:_xmpp-client.a.test", -1, 30, NULL,
                            "a.test"));
    /* XmppAddr with the bare domain */
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "otherName:" OID_XMPPADDR ";UTF8:a.test", -1, 30, NULL,
                         "a.test"),
                 XD_TLS_ID_XMPPADDR);
    /* an XmppAddr of a user is not the domain; the CN is not looked at */
    EXPECT_MISMATCH(verdict(f, cst, &ca, "a.test", "otherName:" OID_XMPPADDR ";UTF8:juliet@a.test",
                            -1, 30, NULL, "a.test"));
    /* DNS-ID, case-insensitive */
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "DNS:A.Test", -1, 30, NULL, "a.test"), XD_TLS_ID_DNS);
    /* all three: the strongest kind is reported */
    EXPECT_MATCH(verdict(f, cst, &ca, "a.test",
                         "DNS:a.test,otherName:" OID_XMPPADDR ";UTF8:a.test,otherName:" OID_SRVNAME
                         ";IA5:_xmpp-server.a.test",
                         -1, 30, NULL, "a.test"),
                 XD_TLS_ID_SRV);
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "DNS:a.test,otherName:" OID_XMPPADDR ";UTF8:a.test", -1,
                         30, NULL, "a.test"),
                 XD_TLS_ID_XMPPADDR);
    /* wrong name */
    EXPECT_MISMATCH(verdict(f, cst, &ca, "b.test", "DNS:b.test", -1, 30, NULL, "a.test"));
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* RFC6125 6.4.3: a wildcard stands for one whole left-most label. */
static void
test_tls__peer_wildcard_rules(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "DNS:*.a.test", -1, 30, NULL, "muc.a.test"),
                 XD_TLS_ID_DNS);
    EXPECT_MISMATCH(verdict(f, cst, &ca, NULL, "DNS:*.a.test", -1, 30, NULL, "a.test"));
    EXPECT_MISMATCH(verdict(f, cst, &ca, NULL, "DNS:*.a.test", -1, 30, NULL, "x.muc.a.test"));
    /* "*.test" would cover a whole top-level domain */
    EXPECT_MISMATCH(verdict(f, cst, &ca, NULL, "DNS:*.test", -1, 30, NULL, "a.test"));
    /* partial-label wildcards are not honoured */
    EXPECT_MISMATCH(verdict(f, cst, &ca, NULL, "DNS:m*.a.test", -1, 30, NULL, "muc.a.test"));
    EXPECT_MISMATCH(verdict(f, cst, &ca, NULL, "DNS:*uc.a.test", -1, 30, NULL, "muc.a.test"));
    /* no wildcards in SRV-IDs or XmppAddrs */
    EXPECT_MISMATCH(verdict(f, cst, &ca, NULL,
                            "otherName:" OID_SRVNAME ";IA5:_xmpp-server.*.a.test", -1, 30, NULL,
                            "muc.a.test"));
    EXPECT_MISMATCH(verdict(f, cst, &ca, NULL, "otherName:" OID_XMPPADDR ";UTF8:*.a.test", -1, 30,
                            NULL, "muc.a.test"));
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* RFC6125 6.4.4: the CN only when the SAN has no identifier at all. */
static void
test_tls__peer_cn_fallback(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);
    EXPECT_MATCH(verdict(f, cst, &ca, "a.test", NULL, -1, 30, NULL, "a.test"), XD_TLS_ID_CN);
    EXPECT_MATCH(verdict(f, cst, &ca, "*.a.test", NULL, -1, 30, NULL, "x.a.test"), XD_TLS_ID_CN);
    /* a SAN without identifiers of ours (an e-mail address) keeps the CN */
    EXPECT_MATCH(verdict(f, cst, &ca, "a.test", "email:admin@a.test", -1, 30, NULL, "a.test"),
                 XD_TLS_ID_CN);
    /* any DNS-ID, SRV-ID, XmppAddr or URI in the SAN rules the CN out */
    EXPECT_MISMATCH(verdict(f, cst, &ca, "a.test", "DNS:other.test", -1, 30, NULL, "a.test"));
    EXPECT_MISMATCH(verdict(f, cst, &ca, "a.test", "URI:xmpp:other.test", -1, 30, NULL, "a.test"));
    EXPECT_MISMATCH(verdict(f, cst, &ca, "a.test",
                            "otherName:" OID_SRVNAME ";IA5:_xmpp-server.other.test", -1, 30, NULL,
                            "a.test"));
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* Internationalised domains: U-labels in XmppAddrs and in the reference
 * identifier are compared as A-labels. */
static void
test_tls__peer_idn(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);
    const char *u = "b\xc3\xbc"
                    "cher.test"; /* bücher.test */
    /* the config syntax would read the bytes as Latin-1: build the
     * UTF8String XmppAddr by hand */
    EVP_PKEY *k = mk_key();
    X509 *x = mk_cert_san(k, NULL, NULL, ca.cert, ca.key, false, EVP_sha256(), -1, 30, NULL);
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_TYPE *v = ASN1_TYPE_new();
    ASN1_UTF8STRING *s = ASN1_UTF8STRING_new();
    assert_int_equal(ASN1_STRING_set(s, u, (int)strlen(u)), 1);
    ASN1_TYPE_set(v, V_ASN1_UTF8STRING, s);
    assert_int_equal(GENERAL_NAME_set0_othername(g, OBJ_nid2obj(NID_XmppAddr), v), 1);
    assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
    assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT), 1);
    GENERAL_NAMES_free(gens);
    assert_true(X509_sign(x, ca.key, EVP_sha256()) > 0);
    write_pem(fx_path(f, "u.pem"), k, (X509 *const[]){ x, NULL });
    X509_free(x);
    EVP_PKEY_free(k);
    xd_tls_store_t *sst = store_with(f, (const char *[]){ "u.pem" }, 1, NULL);
    const char *domains[] = { "xn--bcher-kva.test", u, "XN--BCHER-KVA.test" };
    for (int i = 0; i < 3; i++) {
        epair_t p;
        ep_init(&p, cst, NULL, domains[i], NULL, sst, (srv_opts_t){ 0 });
        ep_handshake(&p);
        xd_tls_peer_result_t r;
        assert_int_equal(xd_tls_peer_verify(p.c.t, domains[i], &r), 0);
        EXPECT_MATCH(r, XD_TLS_ID_XMPPADDR);
        xd_tls_id_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(xd_tls_peer_identities(p.c.t, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(ids[0].value, u); /* as written */
        xd_tls_ids_free(ids, n);
        ep_free(&p);
    }
    xd_tls_store_unref(sst);
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "DNS:xn--bcher-kva.test", -1, 30, NULL, u),
                 XD_TLS_ID_DNS);
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "DNS:*.xn--bcher-kva.test", -1, 30, NULL,
                         "muc.xn--bcher-kva.test"),
                 XD_TLS_ID_DNS);
    EXPECT_MISMATCH(
        verdict(f, cst, &ca, NULL, "DNS:xn--bcher-kva.test", -1, 30, NULL, "bucher.test"));
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* Chain failures map to their reasons; the name is still checked. */
static void
test_tls__peer_chain_failures(void **state)
{
    fx_t *f = *state;
    test_ca_t ca, other;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    ca_make(f, &other, "someone else's CA", "other-ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);
    xd_tls_peer_result_t r;

    r = verdict(f, cst, &ca, NULL, "DNS:a.test", -30, -1, NULL, "a.test"); /* expired */
    assert_int_equal(r.status, XD_TLS_PEER_EXPIRED);
    assert_int_equal(r.x509_err, X509_V_ERR_CERT_HAS_EXPIRED);
    assert_false(r.chain_ok);
    assert_true(r.name_ok);
    assert_int_equal(r.matched, XD_TLS_ID_DNS);
    assert_non_null(strstr(r.reason, "expired"));

    r = verdict(f, cst, &ca, NULL, "DNS:b.test", -30, -1, NULL, "a.test"); /* both wrong */
    assert_int_equal(r.status, XD_TLS_PEER_EXPIRED);                       /* chain first */
    assert_false(r.name_ok);

    r = verdict(f, cst, &ca, NULL, "DNS:a.test", 2, 30, NULL, "a.test");
    assert_int_equal(r.status, XD_TLS_PEER_NOT_YET_VALID);
    assert_int_equal(r.x509_err, X509_V_ERR_CERT_NOT_YET_VALID);

    r = verdict(f, cst, NULL, "a.test", "DNS:a.test", -1, 30, NULL, "a.test"); /* self-signed */
    assert_int_equal(r.status, XD_TLS_PEER_UNTRUSTED);
    assert_int_equal(r.x509_err, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
    assert_true(r.name_ok);

    r = verdict(f, cst, &other, NULL, "DNS:a.test", -1, 30, NULL, "a.test"); /* unknown CA */
    assert_int_equal(r.status, XD_TLS_PEER_UNTRUSTED);
    assert_int_equal(r.x509_err, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);

    /* extended key usage: serverAuth or clientAuth will do, e-mail will not */
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "DNS:a.test", -1, 30, "serverAuth", "a.test"),
                 XD_TLS_ID_DNS);
    EXPECT_MATCH(verdict(f, cst, &ca, NULL, "DNS:a.test", -1, 30, "clientAuth", "a.test"),
                 XD_TLS_ID_DNS);
    r = verdict(f, cst, &ca, NULL, "DNS:a.test", -1, 30, "emailProtection", "a.test");
    assert_int_equal(r.status, XD_TLS_PEER_INVALID);
    assert_int_equal(r.x509_err, X509_V_ERR_INVALID_PURPOSE);

    /* domain NULL: the chain only */
    r = verdict(f, cst, &ca, NULL, "DNS:zzz.test", -1, 30, NULL, NULL);
    assert_int_equal(r.status, XD_TLS_PEER_OK);
    assert_true(r.name_ok);
    assert_int_equal(r.matched, XD_TLS_ID_NONE);
    xd_tls_store_unref(cst);
    ca_free(&ca);
    ca_free(&other);
}

/* An intermediate CA: verified when the server sends it, not otherwise. */
static void
test_tls__peer_intermediate(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test root", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);
    test_ca_t mid = { .key = mk_key() };
    mid.cert = mk_cert_san(mid.key, "xmppd test intermediate", NULL, ca.cert, ca.key, true,
                           EVP_sha256(), -1, 365, NULL);
    xd_tls_peer_result_t r;
    for (int send_mid = 1; send_mid >= 0; send_mid--) {
        mk_leaf(f, "v.pem", &mid, NULL, "DNS:a.test", -1, 30, NULL, send_mid ? mid.cert : NULL);
        xd_tls_store_t *sst = store_with(f, (const char *[]){ "v.pem" }, 1, NULL);
        epair_t p;
        ep_init(&p, cst, NULL, "a.test", NULL, sst, (srv_opts_t){ 0 });
        ep_handshake(&p);
        assert_int_equal(xd_tls_peer_verify(p.c.t, "a.test", &r), 0);
        if (send_mid) {
            EXPECT_MATCH(r, XD_TLS_ID_DNS);
        } else {
            assert_int_equal(r.status, XD_TLS_PEER_UNTRUSTED);
            assert_int_equal(r.x509_err, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
        }
        ep_free(&p);
        xd_tls_store_unref(sst);
    }
    xd_tls_store_unref(cst);
    ca_free(&mid);
    ca_free(&ca);
}

/* Trust anchors from ca_path (hashed directory) and from the default
 * paths ($SSL_CERT_FILE), and load errors naming the option. */
static void
test_tls__trust_sources(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    mk_leaf(f, "b.pem", &ca, NULL, "DNS:b.test", -1, 30, NULL, NULL);
    mk_leaf(f, "a.pem", &ca, NULL, "DNS:a.test", -1, 30, NULL, NULL);
    xd_tls_store_t *sst = store_with(f, (const char *[]){ "a.pem" }, 1, NULL);
    const char *bfile[] = { fx_path(f, "b.pem") };

    /* <dir>/<subject hash>.0, as `openssl rehash` makes it */
    char dir[400], link[480];
    snprintf(dir, sizeof dir, "%s/capath", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(link, sizeof link, "%s/%08lx.0", dir, X509_subject_name_hash(ca.cert));
    write_pem(link, NULL, (X509 *const[]){ ca.cert, NULL });

    char saved[600] = "";
    const char *env = getenv("SSL_CERT_FILE");
    bool had_env = env != NULL;
    if (had_env)
        snprintf(saved, sizeof saved, "%s", env);
    for (int mode = 0; mode < 3; mode++) {
        xd_tls_store_opts_t o = { .certfiles = bfile, .ncertfiles = 1 };
        if (mode == 0)
            o.ca_path = dir;
        else if (mode == 1)
            setenv("SSL_CERT_FILE", ca.file, 1); /* default paths honour it */
        else
            unsetenv("SSL_CERT_FILE"); /* the system's anchors: not our test CA */
        xd_tls_store_t *cst = load_ok(&o);
        epair_t p;
        ep_init(&p, cst, NULL, "a.test", NULL, sst, (srv_opts_t){ 0 });
        ep_handshake(&p);
        xd_tls_peer_result_t r;
        assert_int_equal(xd_tls_peer_verify(p.c.t, "a.test", &r), 0);
        if (mode < 2)
            EXPECT_MATCH(r, XD_TLS_ID_DNS);
        else
            assert_int_equal(r.status, XD_TLS_PEER_UNTRUSTED);
        ep_free(&p);
        xd_tls_store_unref(cst);
    }
    if (had_env)
        setenv("SSL_CERT_FILE", saved, 1);
    else
        unsetenv("SSL_CERT_FILE");

    /* errors: XD_ETLS_CERT naming the option and the path */
    xd_tls_store_opts_t o = { .certfiles = bfile, .ncertfiles = 1 };
    o.ca_file = fx_path(f, "missing.pem");
    char *err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, "ca_file"));
    assert_non_null(strstr(err, "missing.pem"));
    xd_free(err);
    FILE *junk = fopen(fx_path(f, "junk.pem"), "w");
    assert_non_null(junk);
    fputs("not a certificate\n", junk);
    fclose(junk);
    o.ca_file = fx_path(f, "junk.pem");
    err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, "junk.pem"));
    xd_free(err);
    o.ca_file = NULL;
    o.ca_path = ca.file; /* a file */
    err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, "ca_path"));
    assert_non_null(strstr(err, "not a directory"));
    xd_free(err);
    o.ca_path = fx_path(f, "nodir");
    err = load_err(&o, XD_ETLS_CERT);
    assert_non_null(strstr(err, "nodir"));
    xd_free(err);
    xd_tls_store_unref(sst);
    ca_free(&ca);
}

/* Client mode end to end: SNI, ALPN, data both ways, our certificate for
 * the local domain presented when asked and verified by the server, the
 * server's verified by the client.  The server also switches certificates
 * on SNI and still asks for the client's. */
static void
test_tls__client_server_s2s(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    mk_leaf(f, "a.pem", &ca, NULL, "otherName:" OID_SRVNAME ";IA5:_xmpp-server.a.test", -1, 30,
            NULL, NULL);
    mk_leaf(f, "c.pem", &ca, NULL, "DNS:c.test", -1, 30, NULL, NULL);
    mk_leaf(f, "b.pem", &ca, NULL, "otherName:" OID_XMPPADDR ";UTF8:b.test,DNS:b.test", -1, 30,
            "clientAuth,serverAuth", NULL);
    xd_tls_store_t *sst = store_with(f, (const char *[]){ "a.pem", "c.pem" }, 2, ca.file);
    xd_tls_store_t *cst = store_with(f, (const char *[]){ "b.pem" }, 1, ca.file);
    const char *remotes[] = { "a.test", "c.test" };
    for (int i = 0; i < 2; i++) {
        epair_t p;
        ep_init(
            &p, cst, "b.test", remotes[i], "xmpp-server", sst,
            (srv_opts_t){ .default_host = "a.test", .request_cert = true, .alpn = "xmpp-server" });
        ep_handshake(&p);
        assert_string_equal(xd_tls_sni(p.s.t), remotes[i]); /* SNI = the remote domain */
        assert_string_equal(xd_tls_sni(p.c.t), remotes[i]);
        assert_string_equal(xd_tls_alpn(p.c.t), "xmpp-server");
        assert_string_equal(xd_tls_alpn(p.s.t), "xmpp-server");
        assert_string_equal(xd_tls_version(p.c.t), xd_tls_version(p.s.t));
        assert_string_equal(xd_tls_cipher(p.c.t), xd_tls_cipher(p.s.t));

        xd_tls_peer_result_t r;
        assert_int_equal(xd_tls_peer_verify(p.c.t, remotes[i], &r), 0);
        EXPECT_MATCH(r, i == 0 ? XD_TLS_ID_SRV : XD_TLS_ID_DNS); /* the SNI-chosen cert */
        assert_int_equal(xd_tls_peer_verify(p.s.t, "b.test", &r), 0);
        EXPECT_MATCH(r, XD_TLS_ID_XMPPADDR);
        assert_int_equal(xd_tls_peer_verify(p.s.t, "x.test", &r), 0);
        EXPECT_MISMATCH(r);

        /* data both ways */
        const char *hello = "<stream:stream xmlns='jabber:server' to='a.test'>";
        assert_int_equal(xd_tls_send(p.c.t, (const uint8_t *)hello, strlen(hello)), 0);
        const char *back = "<stream:features/>";
        assert_int_equal(xd_tls_send(p.s.t, (const uint8_t *)back, strlen(back)), 0);
        ep_pump(&p);
        assert_int_equal(p.c.rc, 0);
        assert_int_equal(p.s.rc, 0);
        assert_int_equal(p.s.plain_len, strlen(hello));
        assert_memory_equal(p.s.plain, hello, strlen(hello));
        assert_int_equal(p.c.plain_len, strlen(back));
        assert_memory_equal(p.c.plain, back, strlen(back));

        /* the end-point binding is the server's certificate on both sides */
        uint8_t cb1[XD_TLS_CB_MAX], cb2[XD_TLS_CB_MAX];
        size_t n1 = 0, n2 = 0;
        for (int type = 0; type < 2; type++) {
            assert_int_equal(
                xd_tls_channel_binding(p.c.t, (xd_tls_cb_type)type, cb1, sizeof cb1, &n1), 0);
            assert_int_equal(
                xd_tls_channel_binding(p.s.t, (xd_tls_cb_type)type, cb2, sizeof cb2, &n2), 0);
            assert_int_equal(n1, n2);
            assert_memory_equal(cb1, cb2, n1);
        }

        /* close_notify from the client ends the server's input */
        xd_tls_shutdown(p.c.t);
        ep_pump(&p);
        assert_int_equal(p.s.rc, XD_ECLOSED);
        ep_free(&p);
    }
    xd_tls_store_unref(sst);
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* The server asks; the client has none (or not for its local domain), or
 * one that does not verify: recorded, the handshake succeeds.  A server
 * that does not ask gets none. */
static void
test_tls__client_cert_absent_or_bad(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    mk_leaf(f, "a.pem", &ca, NULL, "DNS:a.test", -1, 30, NULL, NULL);
    mk_leaf(f, "b.pem", &ca, NULL, "DNS:b.test", -1, 30, NULL, NULL);
    mk_leaf(f, "self.pem", NULL, NULL, "DNS:self.test", -1, 30, NULL, NULL);
    mk_leaf(f, "old.pem", &ca, NULL, "DNS:old.test", -30, -1, NULL, NULL);
    xd_tls_store_t *sst = store_with(f, (const char *[]){ "a.pem" }, 1, ca.file);
    xd_tls_store_t *cst =
        store_with(f, (const char *[]){ "b.pem", "self.pem", "old.pem" }, 3, ca.file);
    static const struct {
        const char *local; /* client's local domain */
        bool ask;          /* server requests a certificate */
        xd_tls_peer_status want;
        const char *domain; /* what the server checks */
    } cases[] = {
        { NULL, true, XD_TLS_PEER_NONE, "b.test" },
        { "nothere.test", true, XD_TLS_PEER_NONE, "nothere.test" },
        { "b.test", false, XD_TLS_PEER_NONE, "b.test" },
        { "b.test", true, XD_TLS_PEER_OK, "b.test" },
        { "self.test", true, XD_TLS_PEER_UNTRUSTED, "self.test" },
        { "old.test", true, XD_TLS_PEER_EXPIRED, "old.test" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        epair_t p;
        ep_init(&p, cst, cases[i].local, "a.test", NULL, sst,
                (srv_opts_t){ .request_cert = cases[i].ask });
        ep_handshake(&p);
        xd_tls_peer_result_t r;
        assert_int_equal(xd_tls_peer_verify(p.s.t, cases[i].domain, &r), 0);
        if (r.status != cases[i].want)
            fail_msg("case %zu: %s (%s)", i, xd_tls_peer_status_name(r.status), r.reason);
        xd_tls_id_t *ids = NULL;
        size_t n = 99;
        assert_int_equal(xd_tls_peer_identities(p.s.t, &ids, &n), 0);
        if (cases[i].want == XD_TLS_PEER_NONE) {
            assert_string_equal(r.reason, "no certificate presented");
            assert_false(r.chain_ok);
            assert_null(ids);
            assert_int_equal(n, 0);
        } else {
            assert_int_equal(n, 1);
            assert_int_equal(ids[0].type, XD_TLS_ID_DNS);
            assert_string_equal(ids[0].value, cases[i].local);
        }
        xd_tls_ids_free(ids, n);
        /* the client's view of the server is unaffected */
        assert_int_equal(xd_tls_peer_verify(p.c.t, "a.test", &r), 0);
        EXPECT_MATCH(r, XD_TLS_ID_DNS);
        ep_free(&p);
    }
    xd_tls_store_unref(sst);
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* xd_tls_peer_identities lists SAN identities in order, or the CN. */
static void
test_tls__peer_identities(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);
    static const struct {
        const char *cn, *san;
        size_t n;
        xd_tls_id_type types[4];
        const char *values[4];
    } cases[] = {
        { "ignored.test",
          "otherName:" OID_SRVNAME ";IA5:_xmpp-server.a.test,otherName:" OID_XMPPADDR
          ";UTF8:romeo@a.test/orchard,DNS:a.test,email:x@a.test",
          3,
          { XD_TLS_ID_SRV, XD_TLS_ID_XMPPADDR, XD_TLS_ID_DNS },
          { "_xmpp-server.a.test", "romeo@a.test/orchard", "a.test" } },
        { "a.test", NULL, 1, { XD_TLS_ID_CN }, { "a.test" } },
        { NULL, "URI:xmpp:a.test", 0, { 0 }, { NULL } },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mk_leaf(f, "v.pem", &ca, cases[i].cn, cases[i].san, -1, 30, NULL, NULL);
        xd_tls_store_t *sst = store_with(f, (const char *[]){ "v.pem" }, 1, NULL);
        epair_t p;
        ep_init(&p, cst, NULL, "a.test", NULL, sst, (srv_opts_t){ 0 });
        ep_handshake(&p);
        xd_tls_id_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(xd_tls_peer_identities(p.c.t, &ids, &n), 0);
        assert_int_equal(n, cases[i].n);
        for (size_t j = 0; j < n; j++) {
            assert_int_equal(ids[j].type, cases[i].types[j]);
            assert_string_equal(ids[j].value, cases[i].values[j]);
        }
        xd_tls_ids_free(ids, n);
        ep_free(&p);
        xd_tls_store_unref(sst);
    }
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* XEP-0368 3 / RFC7301 3.2: ALPN agreement, absence, and refusal. */
static void
test_tls__alpn(void **state)
{
    fx_t *f = *state;
    xd_tls_store_t *st = simple_store(f);
    static const struct {
        const char *cli, *srv, *want;
        bool fails;
    } cases[] = {
        { "xmpp-server", "xmpp-server", "xmpp-server", false },
        { "xmpp-client", "xmpp-client", "xmpp-client", false },
        { "xmpp-server", NULL, NULL, false },         /* server ignores ALPN */
        { NULL, "xmpp-server", NULL, false },         /* client offers none */
        { "xmpp-client", "xmpp-server", NULL, true }, /* no_application_protocol */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        epair_t p;
        ep_init(&p, st, NULL, "xmpp.example", cases[i].cli, st,
                (srv_opts_t){ .alpn = cases[i].srv });
        if (cases[i].fails) {
            ep_pump(&p);
            assert_int_equal(p.s.rc, XD_ETLS);
            assert_int_equal(p.c.rc, XD_ETLS); /* the alert reached the client */
            assert_non_null(strstr(xd_tls_error(p.c.t), "application protocol"));
            assert_false(xd_tls_handshake_done(p.c.t));
        } else {
            ep_handshake(&p);
            if (cases[i].want) {
                assert_string_equal(xd_tls_alpn(p.c.t), cases[i].want);
                assert_string_equal(xd_tls_alpn(p.s.t), cases[i].want);
            } else {
                assert_null(xd_tls_alpn(p.c.t));
                assert_null(xd_tls_alpn(p.s.t));
            }
        }
        ep_free(&p);
    }
    xd_tls_store_unref(st);
}

/* Argument and state rules of the new calls. */
static void
test_tls__client_api_rules(void **state)
{
    fx_t *f = *state;
    xd_tls_store_t *st = simple_store(f);
    eside_t e = { 0 };
    xd_tls_io_t io = e_io(&e);
    xd_tls_t *t = (xd_tls_t *)1;
    char long_alpn[300];
    memset(long_alpn, 'x', sizeof long_alpn - 1);
    long_alpn[sizeof long_alpn - 1] = '\0';
    assert_int_equal(xd_tls_client_new(st, NULL, NULL, NULL, &io, &t), XD_EINVAL);
    assert_int_equal(xd_tls_client_new(st, NULL, "not a domain", NULL, &io, &t), XD_EINVAL);
    assert_int_equal(xd_tls_client_new(st, NULL, "a.test", "", &io, &t), XD_EINVAL);
    assert_int_equal(xd_tls_client_new(st, NULL, "a.test", long_alpn, &io, &t), XD_EINVAL);
    assert_ptr_equal(t, (xd_tls_t *)1); /* untouched on failure */

    /* a U-label remote domain goes out as an A-label SNI */
    epair_t p;
    ep_init(&p, st, NULL,
            "b\xc3\xbc"
            "cher.test",
            NULL, st, (srv_opts_t){ 0 });
    assert_int_equal(xd_tls_request_cert(p.c.t), XD_EINVAL); /* client */
    assert_int_equal(xd_tls_set_alpn(p.c.t, "xmpp-server"), XD_EINVAL);
    assert_int_equal(xd_tls_set_alpn(p.s.t, ""), XD_EINVAL);
    assert_int_equal(xd_tls_set_alpn(p.s.t, long_alpn), XD_EINVAL);
    assert_int_equal(xd_tls_start(p.s.t), XD_EINVAL); /* server */
    xd_tls_peer_result_t r;
    xd_tls_id_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(xd_tls_peer_verify(p.c.t, "a.test", &r), XD_EINVAL); /* no handshake */
    assert_int_equal(xd_tls_peer_identities(p.c.t, &ids, &n), XD_EINVAL);
    assert_int_equal(xd_tls_start(p.c.t), 0);
    assert_true(p.c.out_len > 0);                     /* the ClientHello */
    assert_int_equal(xd_tls_start(p.c.t), XD_EINVAL); /* once */
    ep_handshake(&p);
    assert_string_equal(xd_tls_sni(p.s.t), "xn--bcher-kva.test");
    assert_int_equal(xd_tls_request_cert(p.s.t), XD_EINVAL); /* too late */
    assert_int_equal(xd_tls_set_alpn(p.s.t, "xmpp-server"), XD_EINVAL);
    assert_int_equal(xd_tls_peer_verify(p.c.t, "bad domain!", &r), XD_EINVAL);
    assert_int_equal(xd_tls_peer_verify(p.c.t, "xmpp.example", &r), 0);
    assert_int_equal(r.status, XD_TLS_PEER_UNTRUSTED); /* self-signed, system anchors */
    assert_true(r.name_ok);
    assert_int_equal(xd_tls_peer_verify(p.c.t, "192.0.2.1", &r), XD_EINVAL);
    ep_free(&p);

    /* RFC6066 3: no SNI for an IP-address domain */
    const char *ips[] = { "192.0.2.1", "[2001:db8::1]" };
    for (int i = 0; i < 2; i++) {
        ep_init(&p, st, NULL, ips[i], NULL, st, (srv_opts_t){ 0 });
        ep_handshake(&p);
        assert_null(xd_tls_sni(p.s.t));
        assert_null(xd_tls_sni(p.c.t));
        assert_int_equal(xd_tls_peer_verify(p.c.t, ips[i], &r), XD_EINVAL);
        assert_int_equal(xd_tls_peer_verify(p.c.t, NULL, &r), 0); /* chain only */
        ep_free(&p);
    }
    assert_int_equal(xd_tls_client_new(st, NULL, "[not-an-ip]", NULL, &io, &t), XD_EINVAL);
    xd_tls_store_unref(st);

    for (int s = 0; s <= XD_TLS_PEER_STATUS_COUNT; s++)
        assert_non_null(xd_tls_peer_status_name((xd_tls_peer_status)s));
    assert_string_equal(xd_tls_peer_status_name(XD_TLS_PEER_NAME_MISMATCH), "name-mismatch");
    assert_string_equal(xd_tls_peer_status_name(XD_TLS_PEER_STATUS_COUNT), "?");
}

/* A plain OpenSSL server limited to TLS 1.2 that asks for a certificate,
 * against the engine's client: the client side of TLS 1.2, its
 * certificate presented there, and tls-unique / end-point from the
 * client's side. */
static void
test_tls__client_tls12_vs_openssl_server(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca); /* presents b.test */
    EVP_PKEY *sk = mk_key();
    X509 *sx =
        mk_cert_san(sk, NULL, "DNS:a.test", ca.cert, ca.key, false, EVP_sha384(), -1, 30, NULL);
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(sctx);
    SSL_CTX_set_max_proto_version(sctx, TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_use_certificate(sctx, sx), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(sctx, sk), 1);
    SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(sctx), ca.cert); /* and it must verify */
    SSL *srv = SSL_new(sctx);
    BIO *s_rd = BIO_new(BIO_s_mem()), *s_wr = BIO_new(BIO_s_mem());
    SSL_set_bio(srv, s_rd, s_wr);
    SSL_set_accept_state(srv);

    eside_t c = { 0 };
    xd_tls_io_t io = e_io(&c);
    assert_int_equal(xd_tls_client_new(cst, "b.test", "a.test", NULL, &io, &c.t), 0);
    assert_int_equal(xd_tls_start(c.t), 0);
    for (int round = 0; round < 20 && !xd_tls_handshake_done(c.t); round++) {
        assert_int_equal(BIO_write(s_rd, c.out, (int)c.out_len), (int)c.out_len);
        c.out_len = 0;
        SSL_do_handshake(srv);
        ERR_clear_error();
        uint8_t buf[16384];
        int n;
        while ((n = BIO_read(s_wr, buf, sizeof buf)) > 0)
            assert_int_equal(xd_tls_input(c.t, buf, (size_t)n), 0);
    }
    assert_true(xd_tls_handshake_done(c.t));
    assert_int_equal(BIO_write(s_rd, c.out, (int)c.out_len), (int)c.out_len); /* Finished */
    c.out_len = 0;
    assert_int_equal(SSL_do_handshake(srv), 1);
    assert_string_equal(xd_tls_version(c.t), "TLSv1.2");
    assert_int_equal(SSL_get_verify_result(srv), X509_V_OK); /* our b.test certificate */
    X509 *got = SSL_get1_peer_certificate(srv);
    assert_non_null(got);
    assert_int_equal(X509_check_host(got, "b.test", 0, 0, NULL), 1);
    X509_free(got);

    xd_tls_peer_result_t r;
    assert_int_equal(xd_tls_peer_verify(c.t, "a.test", &r), 0);
    EXPECT_MATCH(r, XD_TLS_ID_DNS);
    uint8_t a[XD_TLS_CB_MAX], b[XD_TLS_CB_MAX];
    size_t n = 0;
    assert_int_equal(xd_tls_channel_binding(c.t, XD_TLS_CB_UNIQUE, a, sizeof a, &n), 0);
    assert_int_equal(SSL_get_peer_finished(srv, b, sizeof b), n); /* the client's Finished */
    assert_memory_equal(a, b, n);
    assert_int_equal(xd_tls_channel_binding(c.t, XD_TLS_CB_SERVER_END_POINT, a, sizeof a, &n), 0);
    unsigned int bn = 0;
    assert_int_equal(X509_digest(sx, EVP_sha384(), b, &bn), 1); /* of the server's cert */
    assert_int_equal(n, bn);
    assert_memory_equal(a, b, n);

    xd_tls_free(c.t);
    free(c.out);
    SSL_free(srv);
    SSL_CTX_free(sctx);
    X509_free(sx);
    EVP_PKEY_free(sk);
    xd_tls_store_unref(cst);
    ca_free(&ca);
}

/* Figures: the heap of an idle client connection and the cost of one
 * xd_tls_peer_verify. */
static void
test_tls__client_memory_and_verify_cost(void **state)
{
    fx_t *f = *state;
    test_ca_t ca;
    ca_make(f, &ca, "xmppd test CA", "ca.pem");
    xd_tls_store_t *cst = client_store(f, &ca);
    mk_leaf(f, "a.pem", &ca, NULL, "DNS:a.test", -1, 30, NULL, NULL);
    xd_tls_store_t *sst = store_with(f, (const char *[]){ "a.pem" }, 1, ca.file);
    enum { N = 200 };
    epair_t *pairs = calloc(N, sizeof *pairs);
    for (int i = 0; i < 2; i++) { /* warm-up */
        ep_init(&pairs[i], cst, "b.test", "a.test", "xmpp-server", sst, (srv_opts_t){ 0 });
        ep_handshake(&pairs[i]);
        ep_free(&pairs[i]);
    }
    long before = 0;
    for (size_t i = 0; i < N; i++) {
        epair_t *p = &pairs[i];
        ep_init(p, cst, "b.test", "a.test", "xmpp-server", sst,
                (srv_opts_t){ .request_cert = true, .alpn = "xmpp-server" });
        ep_handshake(p);
        assert_int_equal(xd_tls_send(p->c.t, (const uint8_t *)"<presence/>", 11), 0);
        ep_pump(p);
        /* count the client only: free the server side now */
        xd_tls_free(p->s.t);
        p->s.t = NULL;
        free(p->s.out);
        p->s.out = NULL;
        if (i == 0)
            before = t_ossl_live;
    }
    double per_client = (double)(t_ossl_live - before) / (N - 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    xd_tls_peer_result_t r;
    for (size_t i = 0; i < N; i++)
        assert_int_equal(xd_tls_peer_verify(pairs[i].c.t, "a.test", &r), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    EXPECT_MATCH(r, XD_TLS_ID_DNS);
    double us =
        ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e3 / N;
    print_message("idle s2s client connection: OpenSSL %.0f B; xd_tls_peer_verify %.1f us "
                  "(one intermediate-free chain, P-256)\n",
                  per_client, us);
    if (t_ossl_counting) {
        assert_true(per_client > 1000);
        assert_true(per_client < 32768);
    }
    for (size_t i = 0; i < N; i++)
        ep_free(&pairs[i]);
    free(pairs);
    xd_tls_store_unref(cst);
    xd_tls_store_unref(sst);
    ca_free(&ca);
}

int
main(void)
{
    /* before OpenSSL allocates anything */
    t_ossl_counting = CRYPTO_set_mem_functions(t_ossl_malloc, t_ossl_realloc, t_ossl_free) == 1;
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)
        T(test_tls__handshake_tls13),
        T(test_tls__handshake_tls12),
        T(test_tls__sni_selects_certificate),
        T(test_tls__wildcard_certificate),
        T(test_tls__chain_split_files_cn_fallback),
        T(test_tls__cert_key_mismatch_names_file),
        T(test_tls__missing_file_names_file),
        T(test_tls__selfsigned_created_0600_and_reused),
        T(test_tls__channel_binding_tls13),
        T(test_tls__channel_binding_tls12),
        cmocka_unit_test(test_tls__cb_names),
        T(test_tls__fragmented_byte_by_byte),
        T(test_tls__garbage_input),
        T(test_tls__pause_resume_keeps_bytes),
        T(test_tls__tls11_refused),
        T(test_tls__close_notify),
        T(test_tls__options),
        T(test_tls__send_failure_propagates),
        T(test_tls__large_transfers),
        T(test_tls__renegotiation_refused),
        T(test_tls__key_update),
        T(test_tls__resumption_with_tickets),
        T(test_tls__pause_in_handshake_callback),
        T(test_tls__idn_hosts),
        T(test_tls__memory_per_idle_connection),
        T(test_tls__peer_name_rules),
        T(test_tls__peer_wildcard_rules),
        T(test_tls__peer_cn_fallback),
        T(test_tls__peer_idn),
        T(test_tls__peer_chain_failures),
        T(test_tls__peer_intermediate),
        T(test_tls__trust_sources),
        T(test_tls__client_server_s2s),
        T(test_tls__client_cert_absent_or_bad),
        T(test_tls__peer_identities),
        T(test_tls__alpn),
        T(test_tls__client_api_rules),
        T(test_tls__client_tls12_vs_openssl_server),
        T(test_tls__client_memory_and_verify_cost),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
