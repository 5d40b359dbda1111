/*
 * test_sasl.c — unit tests for the SASL server engine (src/stream/sasl.c).
 *
 * The SCRAM client here is written in the test: it builds its messages by
 * hand, computes ClientProof with xd_scram_client_proof() and checks the
 * server's "v=" against a ServerSignature it derives itself with OpenSSL
 * (PBKDF2 + HMAC), so a wrong AuthMessage on the server side cannot hide.
 * Stored credentials are made with xd_scram_cred_make().
 *
 * Covered: mechanism lists, condition names, the RFC 5802 (SHA-1) and RFC
 * 7677 (SHA-256) test vectors with a fixed server nonce, full exchanges for
 * SHA-1/256/512, -PLUS with tls-exporter (callback) and tls-server-end-point
 * (precomputed bytes), binding mismatch, unsupported types, the 'y'
 * downgrade rule, the combined nonce check, wrong password, unknown user
 * (same message shape, stable per-user salt), low stored iteration counts,
 * backend errors, authzid rules with and without the policy, saslname
 * escaping, malformed SCRAM messages (canonical base64 included),
 * PLAIN good/bad/malformed, ANONYMOUS, EXTERNAL (XEP-0178 cases), state
 * rules (message after success or failure, second start, too long, abort,
 * retry, stale provide) and a fuzz-style loop over random and truncated
 * inputs through every state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/secret.h"
#include "stream/sasl.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/scram.h"

#define HOST "example.org"
#define ITER 4096

/* ---- fixtures and helpers -------------------------------------------------------------------- */

static uint8_t fx_exporter[32];   /* fake tls-exporter bytes */
static uint8_t fx_endpoint[32];   /* fake tls-server-end-point bytes */
static bool fx_allow;             /* what the authz policy answers */
static int fx_authz_calls;        /* how often it was asked */
static int fx_cb_calls;           /* how often cb data was asked for */

static bool
fx_authz(void *arg, const xd_jid_t *user, const xd_jid_t *authzid)
{
    (void)arg;
    assert_non_null(user);
    assert_non_null(authzid);
    assert_true(xd_jid_is_bare(user));
    fx_authz_calls++;
    return fx_allow;
}

static int
fx_cb_data(void *arg, xd_sasl_cb type, uint8_t *out, size_t cap, size_t *out_len)
{
    (void)arg;
    fx_cb_calls++;
    const uint8_t *src = type == XD_SASL_CB_TLS_EXPORTER ? fx_exporter : fx_endpoint;
    assert_true(cap >= 32);
    memcpy(out, src, 32);
    *out_len = 32;
    return 0;
}

static xd_sasl_opts_t
fx_opts(unsigned mechs, unsigned cb_types)
{
    for (unsigned i = 0; i < 32; i++) {
        fx_exporter[i] = (uint8_t)(0xA0 + i);
        fx_endpoint[i] = (uint8_t)(0x10 + 3 * i);
    }
    fx_allow = false;
    fx_authz_calls = 0;
    fx_cb_calls = 0;
    xd_sasl_opts_t o = {
        .host = HOST,
        .mechs = mechs,
        .cb_types = cb_types,
        .authz = fx_authz,
        .secret = XD_STR("test server secret"),
        .fake_iterations = ITER,
    };
    o.cb_bytes[XD_SASL_CB_TLS_EXPORTER] = (xd_str_t){ (const char *)fx_exporter, 32 };
    o.cb_bytes[XD_SASL_CB_TLS_SERVER_END_POINT] = (xd_str_t){ (const char *)fx_endpoint, 32 };
    return o;
}

static xd_sasl_t *
fx_new(unsigned mechs, unsigned cb_types)
{
    xd_sasl_opts_t o = fx_opts(mechs, cb_types);
    return xd_sasl_new(&o);
}

#define CB_BOTH \
    (XD_SASL_CB_BIT(XD_SASL_CB_TLS_EXPORTER) | XD_SASL_CB_BIT(XD_SASL_CB_TLS_SERVER_END_POINT))

static void
expect_fail(const xd_sasl_result_t *r, xd_sasl_cond cond)
{
    if (r->kind != XD_SASL_FAILURE || r->cond != cond)
        fail_msg("expected failure %s, got kind %d cond %s (%s)", xd_sasl_cond_name(cond),
                 (int)r->kind, r->kind == XD_SASL_FAILURE ? xd_sasl_cond_name(r->cond) : "-",
                 r->text ? r->text : "");
}

static int
start_s(xd_sasl_t *s, const char *mech, const char *msg, xd_sasl_result_t *r)
{
    return xd_sasl_start(s, xd_str_c(mech), msg, msg ? strlen(msg) : 0, r);
}

static int
step_s(xd_sasl_t *s, const char *msg, xd_sasl_result_t *r)
{
    return xd_sasl_step(s, msg, strlen(msg), r);
}

static char *
b64(const void *in, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    int k = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    out[k] = '\0';
    return out;
}

static size_t
unb64(const char *in, uint8_t *out)
{
    size_t n = strlen(in);
    int k = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    assert_true(k >= 0);
    size_t pad = (n > 0 && in[n - 1] == '=') + (n > 1 && in[n - 2] == '=');
    return (size_t)k - pad;
}

static const EVP_MD *
md_of(xd_scram_hash h)
{
    return h == XD_SCRAM_SHA1 ? EVP_sha1() : h == XD_SCRAM_SHA256 ? EVP_sha256() : EVP_sha512();
}

static const char *
mech_of(xd_scram_hash h, bool plus)
{
    static const char *names[2][3] = {
        { "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512" },
        { "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS" },
    };
    return names[plus][h];
}

/* ---- the test's SCRAM client ----------------------------------------------------------------- */

typedef struct {
    xd_scram_hash hash;        /* H */
    const char *password;      /* ASCII, so OpaqueString leaves it alone */
    char gs2[256];             /* gs2 header as sent */
    char bare[512];            /* client-first-message-bare */
    char first[768];           /* client-first-message */
    char cnonce[64];           /* client nonce */
    uint8_t cb[64];            /* binding data the client believes in */
    size_t cb_len;             /* its length */
    char sfirst[512];          /* server-first as received */
    char final[2048];          /* client-final-message */
    char authmsg[4096];        /* AuthMessage */
    char expect_v[256];        /* "v=" + base64(ServerSignature), computed here */
    bool bad_nonce;            /* send (and sign) a nonce with its last byte changed */
} tc_t;

static void
tc_init(tc_t *c, xd_scram_hash hash, const char *gs2, const char *user, const char *password)
{
    memset(c, 0, sizeof *c);
    c->hash = hash;
    c->password = password;
    snprintf(c->gs2, sizeof c->gs2, "%s", gs2);
    uint8_t rnd[18];
    for (size_t i = 0; i < sizeof rnd; i++)
        rnd[i] = (uint8_t)rand();
    char *n = b64(rnd, sizeof rnd);
    snprintf(c->cnonce, sizeof c->cnonce, "%s", n);
    free(n);
    snprintf(c->bare, sizeof c->bare, "n=%s,r=%s", user, c->cnonce);
    snprintf(c->first, sizeof c->first, "%s%s", c->gs2, c->bare);
}

/* Reads the server-first, builds the client-final (optionally with a wrong
 * password or a changed nonce) and the expected server signature. */
static void
tc_final(tc_t *c, const uint8_t *sfirst, size_t len, const char *password)
{
    assert_true(len < sizeof c->sfirst);
    memcpy(c->sfirst, sfirst, len);
    c->sfirst[len] = '\0';
    char nonce[256], salt_b64[256];
    unsigned iter = 0;
    assert_int_equal(sscanf(c->sfirst, "r=%255[^,],s=%255[^,],i=%u", nonce, salt_b64, &iter), 3);
    assert_memory_equal(nonce, c->cnonce, strlen(c->cnonce)); /* RFC5802 5.1 */
    assert_true(strlen(nonce) >= strlen(c->cnonce) + 32);     /* >= 24 random bytes */
    uint8_t salt[256];
    size_t salt_len = unb64(salt_b64, salt);
    if (c->bad_nonce)
        nonce[strlen(nonce) - 1] ^= 1;

    uint8_t cbind[512];
    size_t gl = strlen(c->gs2);
    memcpy(cbind, c->gs2, gl);
    memcpy(cbind + gl, c->cb, c->cb_len);
    char *cb64 = b64(cbind, gl + c->cb_len);
    char wo[1024];
    snprintf(wo, sizeof wo, "c=%s,r=%s", cb64, nonce);
    free(cb64);
    snprintf(c->authmsg, sizeof c->authmsg, "%s,%s,%s", c->bare, c->sfirst, wo);

    uint8_t proof[XD_SCRAM_KEY_MAX];
    size_t kl = xd_scram_key_len(c->hash);
    assert_int_equal(xd_scram_client_proof(c->hash, xd_str_c(password),
                                           (xd_str_t){ (const char *)salt, salt_len }, iter,
                                           xd_str_c(c->authmsg), proof),
                     0);
    char *p64 = b64(proof, kl);
    snprintf(c->final, sizeof c->final, "%s,p=%s", wo, p64);
    free(p64);

    /* Independent ServerSignature: PBKDF2 → ServerKey → HMAC(AuthMessage). */
    uint8_t salted[XD_SCRAM_KEY_MAX], skey[XD_SCRAM_KEY_MAX], sig[XD_SCRAM_KEY_MAX];
    unsigned l = 0;
    assert_int_equal(PKCS5_PBKDF2_HMAC(c->password, (int)strlen(c->password), salt,
                                       (int)salt_len, (int)iter, md_of(c->hash), (int)kl,
                                       salted),
                     1);
    HMAC(md_of(c->hash), salted, (int)kl, (const unsigned char *)"Server Key", 10, skey, &l);
    HMAC(md_of(c->hash), skey, (int)kl, (const unsigned char *)c->authmsg, strlen(c->authmsg),
         sig, &l);
    char *s64 = b64(sig, kl);
    snprintf(c->expect_v, sizeof c->expect_v, "v=%s", s64);
    free(s64);
}

static void
make_cred(xd_scram_hash h, const char *password, unsigned iter, xd_scram_cred_t *cred)
{
    assert_int_equal(xd_scram_cred_make(h, xd_str_c(password), iter, cred), 0);
}

/* Runs a whole SCRAM exchange; returns the final result in *r (lent). */
static void
scram_run(xd_sasl_t *s, tc_t *c, const char *mech, const xd_scram_cred_t *cred, int status,
          const char *client_password, xd_sasl_result_t *r)
{
    assert_int_equal(start_s(s, mech, c->first, r), 0);
    assert_int_equal(r->kind, XD_SASL_NEED_SCRAM);
    assert_int_equal(r->hash, c->hash);
    assert_int_equal(xd_sasl_provide_scram(s, status, cred, r), 0);
    assert_int_equal(r->kind, XD_SASL_CHALLENGE);
    tc_final(c, r->out, r->out_len, client_password);
    assert_int_equal(step_s(s, c->final, r), 0);
}

static void
expect_success_v(const xd_sasl_result_t *r, const tc_t *c)
{
    if (r->kind != XD_SASL_SUCCESS)
        fail_msg("expected success, got kind %d cond %s (%s)", (int)r->kind,
                 xd_sasl_cond_name(r->cond), r->text ? r->text : "");
    assert_non_null(r->out);
    assert_int_equal(r->out_len, strlen(c->expect_v));
    assert_memory_equal(r->out, c->expect_v, r->out_len);
}

/* ---- names and lists ------------------------------------------------------------------------- */

static void
expect_list(xd_sasl_t *s, const char *const *want)
{
    const char *const *got = xd_sasl_mechanisms(s);
    size_t i = 0;
    for (; want[i] != NULL; i++) {
        assert_non_null(got[i]);
        assert_string_equal(got[i], want[i]);
    }
    assert_null(got[i]);
}

static void
test_sasl__mechanism_lists(void **state)
{
    (void)state;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, CB_BOTH);
    expect_list(s, (const char *[]){ "SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS",
                                     "SCRAM-SHA-1-PLUS", "SCRAM-SHA-512", "SCRAM-SHA-256",
                                     "SCRAM-SHA-1", "PLAIN", "ANONYMOUS", "EXTERNAL", NULL });
    assert_int_equal(xd_sasl_cb_offered(s), CB_BOTH);
    xd_sasl_free(s);

    /* No channel binding: no -PLUS, nothing for XEP-0440. */
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    expect_list(s, (const char *[]){ "SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
                                     "ANONYMOUS", "EXTERNAL", NULL });
    assert_int_equal(xd_sasl_cb_offered(s), 0);
    xd_sasl_free(s);

    /* Binding available but -PLUS not enabled: not advertised either. */
    s = fx_new(XD_SASL_MECHS_SCRAM | XD_SASL_BIT(XD_SASL_PLAIN), CB_BOTH);
    expect_list(s, (const char *[]){ "SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
                                     NULL });
    assert_int_equal(xd_sasl_cb_offered(s), 0);
    xd_sasl_free(s);

    s = fx_new(XD_SASL_BIT(XD_SASL_PLAIN), 0);
    expect_list(s, (const char *[]){ "PLAIN", NULL });
    xd_sasl_free(s);
    s = fx_new(0, 0);
    expect_list(s, (const char *[]){ NULL });
    xd_sasl_free(s);
}

static void
test_sasl__names(void **state)
{
    (void)state;
    assert_string_equal(xd_sasl_cond_name(XD_SASL_COND_NOT_AUTHORIZED), "not-authorized");
    assert_string_equal(xd_sasl_cond_name(XD_SASL_COND_ABORTED), "aborted");
    assert_string_equal(xd_sasl_cond_name(XD_SASL_COND_TEMPORARY_AUTH_FAILURE),
                        "temporary-auth-failure");
    assert_string_equal(xd_sasl_cond_name(XD_SASL_COND_INVALID_AUTHZID), "invalid-authzid");
    for (int c = 0; c < XD_SASL_COND_COUNT; c++)
        assert_non_null(xd_sasl_cond_name((xd_sasl_cond)c));
    assert_null(xd_sasl_cond_name(XD_SASL_COND_COUNT));
    assert_string_equal(xd_sasl_cb_name(XD_SASL_CB_TLS_EXPORTER), "tls-exporter");
    assert_string_equal(xd_sasl_cb_name(XD_SASL_CB_TLS_SERVER_END_POINT),
                        "tls-server-end-point");
    assert_null(xd_sasl_cb_name(XD_SASL_CB_COUNT));
    for (int m = 0; m < XD_SASL_MECH_COUNT; m++)
        assert_int_equal(xd_sasl_mech_parse(xd_str_c(xd_sasl_mech_name((xd_sasl_mech)m))), m);
    assert_int_equal(xd_sasl_mech_parse(XD_STR("plain")), -1); /* case-sensitive */
    assert_int_equal(xd_sasl_mech_parse(XD_STR("DIGEST-MD5")), -1);
}

/* ---- SCRAM ----------------------------------------------------------------------------------- */

static void
vector_run(xd_scram_hash h, const char *mech, const char *snonce, const char *salt_b64,
           const char *first, const char *sfirst, const char *final, const char *v)
{
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_SCRAM, 0);
    xd_sasl_test_set_nonce(s, snonce);
    xd_sasl_result_t r;
    assert_int_equal(start_s(s, mech, first, &r), 0);
    assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
    assert_string_equal(r.user, "user");
    assert_int_equal(r.hash, h);

    xd_scram_cred_t cred = { .hash = h, .iterations = 4096 };
    cred.salt_len = unb64(salt_b64, cred.salt);
    assert_int_equal(xd_scram_derive(h, XD_STR("pencil"),
                                     (xd_str_t){ (const char *)cred.salt, cred.salt_len }, 4096,
                                     cred.stored_key, cred.server_key),
                     0);
    assert_int_equal(xd_sasl_provide_scram(s, 0, &cred, &r), 0);
    assert_int_equal(r.kind, XD_SASL_CHALLENGE);
    assert_int_equal(r.out_len, strlen(sfirst));
    assert_memory_equal(r.out, sfirst, r.out_len);

    assert_int_equal(step_s(s, final, &r), 0);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_int_equal(r.out_len, strlen(v));
    assert_memory_equal(r.out, v, r.out_len);
    assert_string_equal(r.user, "user");
    assert_null(r.authzid);
    assert_string_equal(xd_jid_full_str(r.jid).p, "user@" HOST);
    assert_int_equal(r.cb, -1);
    assert_false(r.anonymous);
    assert_true(xd_sasl_succeeded(s));
    xd_sasl_free(s);
}

/* RFC5802 5: the SCRAM-SHA-1 example exchange, byte for byte. */
static void
test_sasl__scram_rfc5802_vector(void **state)
{
    (void)state;
    vector_run(XD_SCRAM_SHA1, "SCRAM-SHA-1", "3rfcNHYJY1ZVvWVs7j", "QSXCR+Q6sek8bf92",
               "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
               "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
               "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
               "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

/* RFC7677 3: the SCRAM-SHA-256 example exchange, byte for byte. */
static void
test_sasl__scram_rfc7677_vector(void **state)
{
    (void)state;
    vector_run(XD_SCRAM_SHA256, "SCRAM-SHA-256", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
               "W22ZaJ0SNY7soEsUEjb6gQ==", "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
               "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
               "i=4096",
               "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
               "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
               "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/* Full exchanges with random nonces for each hash; the user name is
 * prepared (case-mapped) before the backend is asked. */
static void
test_sasl__scram_each_hash(void **state)
{
    (void)state;
    for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
        xd_scram_cred_t cred;
        make_cred((xd_scram_hash)h, "correct horse", ITER, &cred);
        tc_t c;
        tc_init(&c, (xd_scram_hash)h, "n,,", "Juliet", "correct horse");
        xd_sasl_result_t r;
        assert_int_equal(start_s(s, mech_of((xd_scram_hash)h, false), c.first, &r), 0);
        assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
        assert_string_equal(r.user, "juliet");
        assert_int_equal(xd_sasl_provide_scram(s, 0, &cred, &r), 0);
        assert_int_equal(r.kind, XD_SASL_CHALLENGE);
        tc_final(&c, r.out, r.out_len, "correct horse");
        assert_int_equal(step_s(s, c.final, &r), 0);
        expect_success_v(&r, &c);
        assert_string_equal(r.user, "juliet");
        assert_string_equal(xd_jid_full_str(r.jid).p, "juliet@" HOST);
        /* RFC4422 3.8 / RFC6120 6.4.6: nothing after success. */
        assert_int_equal(step_s(s, "c=biws", &r), 0);
        expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
        assert_true(xd_sasl_succeeded(s));
        xd_sasl_free(s);
    }
}

/* RFC5802 6, RFC9266, RFC5929: -PLUS with both binding types, data from
 * the callback and from precomputed bytes. */
static void
test_sasl__scram_plus_both_types(void **state)
{
    (void)state;
    for (int use_cb = 0; use_cb < 2; use_cb++) {
        /* tls-unique has its own test below (TLS 1.2 streams only). */
        for (int t = 0; t <= XD_SASL_CB_TLS_SERVER_END_POINT; t++) {
            for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
                xd_sasl_opts_t o = fx_opts(XD_SASL_MECHS_ALL, CB_BOTH);
                if (use_cb)
                    o.cb_data = fx_cb_data;
                xd_sasl_t *s = xd_sasl_new(&o);
                xd_scram_cred_t cred;
                make_cred((xd_scram_hash)h, "pw", ITER, &cred);
                char gs2[64];
                snprintf(gs2, sizeof gs2, "p=%s,,", xd_sasl_cb_name((xd_sasl_cb)t));
                tc_t c;
                tc_init(&c, (xd_scram_hash)h, gs2, "romeo", "pw");
                memcpy(c.cb, t == XD_SASL_CB_TLS_EXPORTER ? fx_exporter : fx_endpoint, 32);
                c.cb_len = 32;
                xd_sasl_result_t r;
                scram_run(s, &c, mech_of((xd_scram_hash)h, true), &cred, 0, "pw", &r);
                expect_success_v(&r, &c);
                assert_int_equal(r.cb, t);
                assert_int_equal(fx_cb_calls, use_cb ? 1 : 0);
                xd_sasl_free(s);
            }
        }
    }
}

/* RFC5802 6: c= must carry exactly the binding data of this channel. */
static void
test_sasl__scram_plus_mismatch(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA256, "pw", ITER, &cred);

    /* Other bytes (another TLS channel: a MITM). */
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, CB_BOTH);
    tc_t c;
    tc_init(&c, XD_SCRAM_SHA256, "p=tls-exporter,,", "romeo", "pw");
    memcpy(c.cb, fx_exporter, 32);
    c.cb[7] ^= 1;
    c.cb_len = 32;
    xd_sasl_result_t r;
    scram_run(s, &c, "SCRAM-SHA-256-PLUS", &cred, 0, "pw", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    assert_false(xd_sasl_succeeded(s));

    /* The data of the other type. */
    tc_init(&c, XD_SCRAM_SHA256, "p=tls-exporter,,", "romeo", "pw");
    memcpy(c.cb, fx_endpoint, 32);
    c.cb_len = 32;
    scram_run(s, &c, "SCRAM-SHA-256-PLUS", &cred, 0, "pw", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);

    /* No data at all, and a gs2 header other than the one sent. */
    tc_init(&c, XD_SCRAM_SHA256, "p=tls-exporter,,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256-PLUS", &cred, 0, "pw", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    tc_init(&c, XD_SCRAM_SHA256, "n,,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_success_v(&r, &c); /* control: the same client without binding works */
    xd_sasl_free(s);

    s = fx_new(XD_SASL_MECHS_ALL, 0);
    tc_init(&c, XD_SCRAM_SHA256, "n,,", "romeo", "pw");
    assert_int_equal(start_s(s, "SCRAM-SHA-256", c.first, &r), 0);
    assert_int_equal(xd_sasl_provide_scram(s, 0, &cred, &r), 0);
    strcpy(c.gs2, "y,,"); /* the client claims another header in c= */
    tc_final(&c, r.out, r.out_len, "pw");
    assert_int_equal(step_s(s, c.final, &r), 0);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_free(s);
}

/* RFC5802 5.1: r= in the final message must be the combined nonce, even
 * when the proof is computed over the changed one (a replayed or spliced
 * final message). */
static void
test_sasl__scram_nonce_must_match(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA256, "pw", 64, &cred);
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    tc_t c;
    xd_sasl_result_t r;
    tc_init(&c, XD_SCRAM_SHA256, "n,,", "romeo", "pw");
    c.bad_nonce = true;
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    tc_init(&c, XD_SCRAM_SHA256, "n,,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_success_v(&r, &c); /* control */
    xd_sasl_free(s);
}

/* RFC5802 6: p= only with -PLUS and a type we have; -PLUS needs p=. */
static void
test_sasl__scram_plus_flag_rules(void **state)
{
    (void)state;
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, XD_SASL_CB_BIT(XD_SASL_CB_TLS_EXPORTER));

    start_s(s, "SCRAM-SHA-256-PLUS", "p=tls-unique,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED); /* known, not offered on this stream */
    start_s(s, "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED); /* known, but not on this stream */
    start_s(s, "SCRAM-SHA-256-PLUS", "p=tls exporter,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST); /* not a cb-name */
    start_s(s, "SCRAM-SHA-256-PLUS", "n,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    start_s(s, "SCRAM-SHA-256-PLUS", "y,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    start_s(s, "SCRAM-SHA-256", "p=tls-exporter,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    start_s(s, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,n=u,r=abc", &r);
    assert_int_equal(r.kind, XD_SASL_NEED_SCRAM); /* control */
    xd_sasl_free(s);

    /* -PLUS is not available without binding: invalid-mechanism. */
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    start_s(s, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_MECHANISM);
    xd_sasl_free(s);

    /* The binding data cannot be had: temporary-auth-failure. */
    xd_sasl_opts_t o = fx_opts(XD_SASL_MECHS_ALL, CB_BOTH);
    o.cb_bytes[XD_SASL_CB_TLS_EXPORTER] = XD_STR_NULL;
    s = xd_sasl_new(&o);
    start_s(s, "SCRAM-SHA-1-PLUS", "p=tls-exporter,,n=u,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE);
    xd_sasl_free(s);
}

/* RFC5802 6: 'y' (the client can bind but thinks we cannot) fails when we
 * offered -PLUS — a downgrade — and is fine when we did not. */
static void
test_sasl__scram_downgrade_y(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA1, "pw", ITER, &cred);
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, CB_BOTH);
    start_s(s, "SCRAM-SHA-1", "y,,n=romeo,r=abcdef", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_free(s);

    s = fx_new(XD_SASL_MECHS_ALL, 0);
    tc_t c;
    tc_init(&c, XD_SCRAM_SHA1, "y,,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-1", &cred, 0, "pw", &r);
    expect_success_v(&r, &c);
    xd_sasl_free(s);

    /* Binding available but -PLUS not enabled: nothing was offered, 'y' ok. */
    s = fx_new(XD_SASL_MECHS_SCRAM, CB_BOTH);
    tc_init(&c, XD_SCRAM_SHA1, "y,,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-1", &cred, 0, "pw", &r);
    expect_success_v(&r, &c);
    xd_sasl_free(s);
}

/* cb_quiet (legacy tls-unique on TLS 1.3): accepted with -PLUS, never
 * advertised, not enough alone to offer -PLUS, and no way around 'y'. */
static void
test_sasl__scram_cb_quiet(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA256, "pw", ITER, &cred);
    uint8_t uniq[12];
    for (size_t i = 0; i < sizeof uniq; i++)
        uniq[i] = (uint8_t)(0x55 ^ i);
    xd_sasl_opts_t o = fx_opts(XD_SASL_MECHS_ALL, CB_BOTH);
    o.cb_quiet = XD_SASL_CB_BIT(XD_SASL_CB_TLS_UNIQUE);
    o.cb_bytes[XD_SASL_CB_TLS_UNIQUE] = (xd_str_t){ (const char *)uniq, sizeof uniq };
    xd_sasl_t *s = xd_sasl_new(&o);
    assert_int_equal(xd_sasl_cb_offered(s), CB_BOTH);
    tc_t c;
    xd_sasl_result_t r;
    tc_init(&c, XD_SCRAM_SHA256, "p=tls-unique,,", "romeo", "pw");
    memcpy(c.cb, uniq, sizeof uniq);
    c.cb_len = sizeof uniq;
    scram_run(s, &c, "SCRAM-SHA-256-PLUS", &cred, 0, "pw", &r);
    expect_success_v(&r, &c);
    assert_int_equal(r.cb, XD_SASL_CB_TLS_UNIQUE);
    xd_sasl_free(s);

    /* Other bytes fail; 'y' after a refused type is still a downgrade. */
    s = xd_sasl_new(&o);
    tc_init(&c, XD_SCRAM_SHA256, "p=tls-unique,,", "romeo", "pw");
    memcpy(c.cb, uniq, sizeof uniq);
    c.cb[0] ^= 1;
    c.cb_len = sizeof uniq;
    scram_run(s, &c, "SCRAM-SHA-256-PLUS", &cred, 0, "pw", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    start_s(s, "SCRAM-SHA-256", "y,,n=romeo,r=abcdef", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_free(s);

    /* Quiet types alone offer no -PLUS, and then 'y' is fine. */
    o.cb_types = 0;
    s = xd_sasl_new(&o);
    assert_int_equal(xd_sasl_cb_offered(s), 0);
    start_s(s, "SCRAM-SHA-256-PLUS", "p=tls-unique,,n=romeo,r=abcdef", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_MECHANISM);
    tc_init(&c, XD_SCRAM_SHA256, "y,,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_success_v(&r, &c);
    xd_sasl_free(s);
}

static void
test_sasl__scram_wrong_password(void **state)
{
    (void)state;
    for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        xd_scram_cred_t cred;
        make_cred((xd_scram_hash)h, "right", ITER, &cred);
        xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
        tc_t c;
        tc_init(&c, (xd_scram_hash)h, "n,,", "romeo", "right");
        xd_sasl_result_t r;
        scram_run(s, &c, mech_of((xd_scram_hash)h, false), &cred, 0, "wrong", &r);
        expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
        assert_null(r.text);
        assert_false(xd_sasl_succeeded(s));
        xd_sasl_free(s);
    }
}

/* Replaces the base64 salt in a server-first with "*" to compare shapes. */
static void
shape_of(const char *sfirst, size_t cnonce_len, char *out, size_t cap)
{
    char nonce[256], salt[256];
    unsigned iter;
    assert_int_equal(sscanf(sfirst, "r=%255[^,],s=%255[^,],i=%u", nonce, salt, &iter), 3);
    snprintf(out, cap, "r=%zu,s=%zu,i=%u", strlen(nonce) - cnonce_len, strlen(salt), iter);
}

/* An unknown user gets a server-first of the same shape as a known one,
 * with a salt that is stable for that user, and the same final failure as
 * a wrong password. */
static void
test_sasl__scram_unknown_user_same_shape(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA256, "right", ITER, &cred);
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    xd_sasl_result_t known, unknown;
    tc_t ck, cu;

    tc_init(&ck, XD_SCRAM_SHA256, "n,,", "romeo", "right");
    scram_run(s, &ck, "SCRAM-SHA-256", &cred, 0, "wrong", &known);
    expect_fail(&known, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_cond kc = known.cond;
    const char *kt = known.text;

    tc_init(&cu, XD_SCRAM_SHA256, "n,,", "nobody", "right");
    scram_run(s, &cu, "SCRAM-SHA-256", NULL, XD_ENOTFOUND, "right", &unknown);
    expect_fail(&unknown, kc);
    assert_ptr_equal(unknown.text, kt);

    char sk[128], su[128];
    shape_of(ck.sfirst, strlen(ck.cnonce), sk, sizeof sk);
    shape_of(cu.sfirst, strlen(cu.cnonce), su, sizeof su);
    assert_string_equal(sk, su);

    /* Stable per user, different between users and between secrets. */
    char salt1[256], salt2[256], salt3[256], salt4[256], nn[256];
    unsigned it;
    sscanf(cu.sfirst, "r=%255[^,],s=%255[^,],i=%u", nn, salt1, &it);
    tc_init(&cu, XD_SCRAM_SHA256, "n,,", "nobody", "x");
    scram_run(s, &cu, "SCRAM-SHA-256", NULL, XD_ENOTFOUND, "x", &unknown);
    sscanf(cu.sfirst, "r=%255[^,],s=%255[^,],i=%u", nn, salt2, &it);
    assert_string_equal(salt1, salt2);
    tc_init(&cu, XD_SCRAM_SHA256, "n,,", "somebody", "x");
    scram_run(s, &cu, "SCRAM-SHA-256", NULL, XD_ENOTFOUND, "x", &unknown);
    sscanf(cu.sfirst, "r=%255[^,],s=%255[^,],i=%u", nn, salt3, &it);
    assert_string_not_equal(salt1, salt3);
    xd_sasl_free(s);

    xd_sasl_opts_t o = fx_opts(XD_SASL_MECHS_ALL, 0);
    o.secret = XD_STR("another secret");
    s = xd_sasl_new(&o);
    tc_init(&cu, XD_SCRAM_SHA256, "n,,", "nobody", "x");
    scram_run(s, &cu, "SCRAM-SHA-256", NULL, XD_ENOTFOUND, "x", &unknown);
    sscanf(cu.sfirst, "r=%255[^,],s=%255[^,],i=%u", nn, salt4, &it);
    assert_string_not_equal(salt1, salt4);
    xd_sasl_free(s);

    /* Without a configured secret the key is the node secret's for fake
     * salts (core/secret.h; here the per-process stand-in, as nothing is
     * loaded): stable, and HMAC-SHA256(key, "salt:" host 0 hash 0 user). */
    o.secret = XD_STR_NULL;
    s = xd_sasl_new(&o);
    tc_init(&cu, XD_SCRAM_SHA256, "n,,", "nobody", "x");
    scram_run(s, &cu, "SCRAM-SHA-256", NULL, XD_ENOTFOUND, "x", &unknown);
    sscanf(cu.sfirst, "r=%255[^,],s=%255[^,],i=%u", nn, salt1, &it);
    xd_sasl_free(s);
    s = xd_sasl_new(&o);
    tc_init(&cu, XD_SCRAM_SHA256, "n,,", "nobody", "x");
    scram_run(s, &cu, "SCRAM-SHA-256", NULL, XD_ENOTFOUND, "x", &unknown);
    sscanf(cu.sfirst, "r=%255[^,],s=%255[^,],i=%u", nn, salt2, &it);
    assert_string_equal(salt1, salt2);
    expect_fail(&unknown, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_free(s);
    unsigned char nkey[XD_NODE_KEY_LEN], mac[32];
    unsigned mac_len = 0;
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, nkey);
    static const char msg[] = "salt:" HOST "\0SHA-256\0nobody";
    HMAC(EVP_sha256(), nkey, sizeof nkey, (const unsigned char *)msg, sizeof msg - 1, mac,
         &mac_len);
    uint8_t got[64];
    assert_int_equal(unb64(salt1, got), XD_SCRAM_SALT_LEN);
    assert_memory_equal(got, mac, XD_SCRAM_SALT_LEN);

    /* fake_iterations follows the host's setting. */
    o.fake_iterations = 10000;
    s = xd_sasl_new(&o);
    tc_init(&cu, XD_SCRAM_SHA1, "n,,", "nobody", "x");
    assert_int_equal(start_s(s, "SCRAM-SHA-1", cu.first, &unknown), 0);
    assert_int_equal(xd_sasl_provide_scram(s, XD_ENOTFOUND, NULL, &unknown), 0);
    assert_int_equal(unknown.kind, XD_SASL_CHALLENGE);
    assert_non_null(memmem(unknown.out, unknown.out_len, ",i=10000", 8));
    xd_sasl_free(s);
}

/* Stored credentials with fewer than 4096 iterations were configured: they
 * are used as they are. */
static void
test_sasl__scram_low_stored_iterations(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA512, "pw", 100, &cred);
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    tc_t c;
    tc_init(&c, XD_SCRAM_SHA512, "n,,", "romeo", "pw");
    xd_sasl_result_t r;
    scram_run(s, &c, "SCRAM-SHA-512", &cred, 0, "pw", &r);
    assert_non_null(strstr(c.sfirst, ",i=100"));
    expect_success_v(&r, &c);
    xd_sasl_free(s);
}

static void
test_sasl__scram_backend_errors(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA1, "pw", 64, &cred);
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    const int errs[] = { XD_ETIMEDOUT, XD_EINTERNAL, XD_ECANCELED, XD_EDB, XD_ENOTSUP };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        start_s(s, "SCRAM-SHA-1", "n,,n=romeo,r=abcdef", &r);
        assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
        assert_int_equal(xd_sasl_provide_scram(s, errs[i], NULL, &r), 0);
        expect_fail(&r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE);
    }
    /* A credential for another hash is a backend bug, not the client's. */
    start_s(s, "SCRAM-SHA-256", "n,,n=romeo,r=abcdef", &r);
    assert_int_equal(xd_sasl_provide_scram(s, 0, &cred, &r), 0);
    expect_fail(&r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE);
    xd_sasl_free(s);
}

/* RFC6120 6.3.8: an authzid other than the own bare JID needs the policy. */
static void
test_sasl__scram_authzid(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA256, "pw", 64, &cred);
    xd_sasl_result_t r;
    tc_t c;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);

    tc_init(&c, XD_SCRAM_SHA256, "n,a=romeo@example.org,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_success_v(&r, &c);
    assert_string_equal(xd_jid_full_str(r.authzid).p, "romeo@" HOST);
    assert_string_equal(xd_jid_full_str(r.jid).p, "romeo@" HOST);
    assert_int_equal(fx_authz_calls, 0);
    xd_sasl_free(s);

    s = fx_new(XD_SASL_MECHS_ALL, 0); /* fx_allow = false */
    tc_init(&c, XD_SCRAM_SHA256, "n,a=juliet@example.org,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    assert_int_equal(fx_authz_calls, 1);

    /* A wrong password fails first: the policy is not consulted. */
    tc_init(&c, XD_SCRAM_SHA256, "n,a=juliet@example.org,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "bad", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    assert_int_equal(fx_authz_calls, 1);

    fx_allow = true;
    tc_init(&c, XD_SCRAM_SHA256, "n,a=juliet@example.org,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_success_v(&r, &c);
    assert_string_equal(r.user, "romeo");
    assert_string_equal(xd_jid_full_str(r.jid).p, "juliet@" HOST);

    xd_sasl_free(s);

    /* Not a bare JID / not a JID: invalid-authzid at once. */
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    start_s(s, "SCRAM-SHA-256", "n,a=juliet@example.org/balcony,n=romeo,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    start_s(s, "SCRAM-SHA-256", "n,a=@example.org,n=romeo,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    xd_sasl_free(s);

    /* No policy at all: only the own JID. */
    xd_sasl_opts_t o = fx_opts(XD_SASL_MECHS_ALL, 0);
    o.authz = NULL;
    s = xd_sasl_new(&o);
    tc_init(&c, XD_SCRAM_SHA256, "n,a=juliet@example.org,", "romeo", "pw");
    scram_run(s, &c, "SCRAM-SHA-256", &cred, 0, "pw", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    xd_sasl_free(s);
}

/* RFC5802 5.1: saslname escaping of ',' and '='; other '=' is malformed. */
static void
test_sasl__scram_saslname_escaping(void **state)
{
    (void)state;
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    fx_allow = true;

    /* "a=b" is not a valid localpart character?  RFC 7622 allows '=' in a
     * localpart, so the escaped name reaches the backend unescaped. */
    start_s(s, "SCRAM-SHA-1", "n,,n=a=3Db,r=abc", &r);
    assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
    assert_string_equal(r.user, "a=b");
    xd_sasl_abort(s, &r);
    start_s(s, "SCRAM-SHA-1", "n,,n=a=2Cb,r=abc", &r);
    assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
    assert_string_equal(r.user, "a,b");
    xd_sasl_abort(s, &r);
    start_s(s, "SCRAM-SHA-1", "n,a=x=2Cy@example.org,n=u,r=abc", &r);
    assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
    xd_sasl_abort(s, &r);

    const char *bad[] = {
        "n,,n=a=3db,r=abc", "n,,n=a=,r=abc", "n,,n=a=2,r=abc", "n,,n=a=41,r=abc",
        "n,,n=a=2C=,r=abc", "n,a=x=,n=u,r=abc", "n,a=x=3,n=u,r=abc",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        start_s(s, "SCRAM-SHA-1", bad[i], &r);
        expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    }
    /* A localpart that PRECIS refuses: not-authorized, no crash. */
    start_s(s, "SCRAM-SHA-1", "n,,n=a@b,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    start_s(s, "SCRAM-SHA-1", "n,,n=a b,r=abc", &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_free(s);
}

static void
test_sasl__scram_malformed_first(void **state)
{
    (void)state;
    const char *bad[] = {
        "",                                /* empty */
        "n",                               /* no header */
        "n,",                              /* no authzid field */
        "n,,",                             /* no bare message */
        "x,,n=u,r=abc",                    /* unknown flag */
        "nn,,n=u,r=abc",                   /* flag too long */
        "p,,n=u,r=abc",                    /* p without name */
        "p=,,n=u,r=abc",                   /* empty cb-name */
        "n,b=x,n=u,r=abc",                 /* not a= */
        "n,,m=ext,n=u,r=abc",              /* RFC5802 5.1: mandatory extension */
        "n,,n=,r=abc",                     /* empty username */
        "n,,u=u,r=abc",                    /* no n= */
        "n,,n=u",                          /* no nonce */
        "n,,n=u,",                         /* empty nonce field */
        "n,,n=u,r=",                       /* empty nonce */
        "n,,n=u,x=abc",                    /* not r= */
        "n,,r=abc,n=u",                    /* swapped */
        "n,,n=u,r=ab c",                   /* space in nonce */
        "n,,n=u,r=ab\x7f",                 /* DEL in nonce */
        "n,,n=u,r=\xc3\xa9",               /* non-ASCII nonce */
        "n,,n=u,r=abc,",                   /* empty extension */
        "n,,n=u,r=abc,x",                  /* bad extension */
        "n,,n=u,r=abc,1=x",                /* extension key not ALPHA */
        "n,,n=u,r=abc,x=",                 /* empty extension value */
        "n,,n=\xff,r=abc",                 /* invalid UTF-8 */
    };
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        start_s(s, "SCRAM-SHA-256", bad[i], &r);
        if (r.kind != XD_SASL_FAILURE || r.cond != XD_SASL_COND_MALFORMED_REQUEST)
            fail_msg("case %zu \"%s\": kind %d", i, bad[i], (int)r.kind);
    }
    /* NUL inside. */
    xd_sasl_start(s, XD_STR("SCRAM-SHA-256"), "n,,n=u\0x,r=abc", 14, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    /* Extensions after the nonce are ignored. */
    start_s(s, "SCRAM-SHA-256", "n,,n=u,r=abc,x=1,Y=two", &r);
    assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
    xd_sasl_free(s);
}

static void
test_sasl__scram_malformed_final(void **state)
{
    (void)state;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA1, "pw", 64, &cred);
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    xd_sasl_test_set_nonce(s, "SERVERNONCE");
    struct {
        const char *msg;    /* client-final */
        xd_sasl_cond cond;  /* expected */
    } cases[] = {
        { "", XD_SASL_COND_MALFORMED_REQUEST },
        { "c=biws,r=cnSERVERNONCE", XD_SASL_COND_MALFORMED_REQUEST },       /* no proof */
        { "c=biws,r=cnSERVERNONCE,p=", XD_SASL_COND_NOT_AUTHORIZED },       /* empty proof */
        { "c=biws,r=cnSERVERNONCE,p=!!!!", XD_SASL_COND_MALFORMED_REQUEST },
        { "c=biws,r=cnSERVERNONCE,p=abc", XD_SASL_COND_MALFORMED_REQUEST }, /* not %4 */
        { "c=biws,r=cnSERVERNONCE,p=a===", XD_SASL_COND_MALFORMED_REQUEST },
        { "c=biws,r=cnSERVERNONCE,p=AB==", XD_SASL_COND_MALFORMED_REQUEST }, /* RFC4648 3.5 */
        { "c=biws,r=cnSERVERNONCE,p=AAB=", XD_SASL_COND_MALFORMED_REQUEST },
        { "c=biwt,r=cnSERVERNONCE,p=AAAA", XD_SASL_COND_NOT_AUTHORIZED },   /* "n,-" */
        { "c=bixs,r=cnSERVERNONCE,p=AAAA", XD_SASL_COND_NOT_AUTHORIZED },
        { "c=bi=s,r=cnSERVERNONCE,p=AAAA", XD_SASL_COND_MALFORMED_REQUEST },
        { "r=cnSERVERNONCE,c=biws,p=AAAA", XD_SASL_COND_MALFORMED_REQUEST },
        { "c=biws,p=AAAA", XD_SASL_COND_MALFORMED_REQUEST },
        { "c=biws,r=cnSERVERNONCE,x,p=AAAA", XD_SASL_COND_MALFORMED_REQUEST },
        { "p=AAAA", XD_SASL_COND_MALFORMED_REQUEST },
        { "c=biws,r=cnSERVERNONCF,p=AAAA", XD_SASL_COND_NOT_AUTHORIZED },   /* nonce */
        { "c=biws,r=cn,p=AAAA", XD_SASL_COND_NOT_AUTHORIZED },
        { "c=eSws,r=cnSERVERNONCE,p=AAAA", XD_SASL_COND_NOT_AUTHORIZED },   /* c= "y,," */
        { "c=biws,r=cnSERVERNONCE,p=AAAA", XD_SASL_COND_NOT_AUTHORIZED },   /* short proof */
        { "c=biws,r=cnSERVERNONCE,e=x,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
          XD_SASL_COND_NOT_AUTHORIZED },                                    /* wrong proof */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        start_s(s, "SCRAM-SHA-1", "n,,n=u,r=cn", &r);
        assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
        assert_int_equal(xd_sasl_provide_scram(s, 0, &cred, &r), 0);
        assert_int_equal(r.kind, XD_SASL_CHALLENGE);
        step_s(s, cases[i].msg, &r);
        if (r.kind != XD_SASL_FAILURE || r.cond != cases[i].cond)
            fail_msg("case %zu \"%s\": kind %d cond %s", i, cases[i].msg, (int)r.kind,
                     xd_sasl_cond_name(r.cond));
    }
    xd_sasl_free(s);
}

/* ---- PLAIN ----------------------------------------------------------------------------------- */

static void
plain_start(xd_sasl_t *s, const char *msg, size_t len, xd_sasl_result_t *r)
{
    assert_int_equal(xd_sasl_start(s, XD_STR("PLAIN"), msg, len, r), 0);
}

#define PLAIN_MSG(lit) lit, sizeof(lit) - 1

static void
test_sasl__plain_good_and_bad(void **state)
{
    (void)state;
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);

    plain_start(s, PLAIN_MSG("\0Juliet\0s3cr\xc3\xa9t"), &r);
    assert_int_equal(r.kind, XD_SASL_NEED_CHECK);
    assert_string_equal(r.user, "juliet"); /* prepared */
    assert_string_equal(r.password, "s3cr\xc3\xa9t");
    assert_int_equal(r.password_len, 7);
    assert_int_equal(xd_sasl_provide_check(s, 0, true, &r), 0);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_null(r.out);
    assert_int_equal(r.out_len, 0);
    assert_string_equal(r.user, "juliet");
    assert_null(r.authzid);
    assert_string_equal(xd_jid_full_str(r.jid).p, "juliet@" HOST);
    assert_int_equal(r.mech, XD_SASL_PLAIN);
    assert_true(xd_sasl_succeeded(s));
    xd_sasl_free(s);

    /* Wrong password, unknown user, refused by the script: not-authorized;
     * backend trouble: temporary-auth-failure. */
    struct {
        int status;
        bool ok;
        xd_sasl_cond cond;
    } cases[] = {
        { 0, false, XD_SASL_COND_NOT_AUTHORIZED },
        { XD_ENOTFOUND, false, XD_SASL_COND_NOT_AUTHORIZED },
        { XD_EAUTH_REFUSED, false, XD_SASL_COND_NOT_AUTHORIZED },
        { XD_ETIMEDOUT, false, XD_SASL_COND_TEMPORARY_AUTH_FAILURE },
        { XD_EINTERNAL, true, XD_SASL_COND_TEMPORARY_AUTH_FAILURE },
    };
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plain_start(s, PLAIN_MSG("\0juliet\0pw"), &r);
        assert_int_equal(r.kind, XD_SASL_NEED_CHECK);
        assert_int_equal(xd_sasl_provide_check(s, cases[i].status, cases[i].ok, &r), 0);
        expect_fail(&r, cases[i].cond);
    }
    /* Retry after those failures still works (RFC 6120 6.4.5). */
    plain_start(s, PLAIN_MSG("\0juliet\0pw"), &r);
    xd_sasl_provide_check(s, 0, true, &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    xd_sasl_free(s);

    /* No initial response: empty challenge, then the message. */
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    assert_int_equal(xd_sasl_start(s, XD_STR("PLAIN"), NULL, 0, &r), 0);
    assert_int_equal(r.kind, XD_SASL_CHALLENGE);
    assert_int_equal(r.out_len, 0);
    assert_non_null(r.out);
    assert_int_equal(xd_sasl_step(s, "\0romeo\0pw", 9, &r), 0);
    assert_int_equal(r.kind, XD_SASL_NEED_CHECK);
    assert_string_equal(r.user, "romeo");
    xd_sasl_free(s);
}

static void
test_sasl__plain_malformed(void **state)
{
    (void)state;
    struct {
        const char *msg;
        size_t len;
        xd_sasl_cond cond;
    } cases[] = {
        { PLAIN_MSG(""), XD_SASL_COND_MALFORMED_REQUEST },
        { PLAIN_MSG("juliet"), XD_SASL_COND_MALFORMED_REQUEST },
        { PLAIN_MSG("\0juliet"), XD_SASL_COND_MALFORMED_REQUEST },
        { PLAIN_MSG("\0juliet\0"), XD_SASL_COND_MALFORMED_REQUEST },   /* empty password */
        { PLAIN_MSG("\0\0pw"), XD_SASL_COND_MALFORMED_REQUEST },       /* empty authcid */
        { PLAIN_MSG("\0juliet\0p\0w"), XD_SASL_COND_MALFORMED_REQUEST }, /* NUL in password */
        { PLAIN_MSG("\0jul\xffiet\0pw"), XD_SASL_COND_MALFORMED_REQUEST },
        { PLAIN_MSG("\0juliet\0p\xc3"), XD_SASL_COND_MALFORMED_REQUEST },
        { PLAIN_MSG("\xed\xa0\x80\0juliet\0pw"), XD_SASL_COND_MALFORMED_REQUEST }, /* surrogate */
        { PLAIN_MSG("\0jul@iet\0pw"), XD_SASL_COND_NOT_AUTHORIZED },   /* bad localpart */
        { PLAIN_MSG("\0jul iet\0pw"), XD_SASL_COND_NOT_AUTHORIZED },
        { PLAIN_MSG("@x\0juliet\0pw"), XD_SASL_COND_INVALID_AUTHZID },
        { PLAIN_MSG("juliet@example.org/r\0juliet\0pw"), XD_SASL_COND_INVALID_AUTHZID },
    };
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plain_start(s, cases[i].msg, cases[i].len, &r);
        if (r.kind != XD_SASL_FAILURE || r.cond != cases[i].cond)
            fail_msg("case %zu: kind %d cond %s", i, (int)r.kind, xd_sasl_cond_name(r.cond));
    }
    /* A 1024-byte localpart is too long for RFC 7622: not-authorized. */
    char big[1100];
    big[0] = '\0';
    memset(big + 1, 'a', 1024);
    big[1025] = '\0';
    memcpy(big + 1026, "pw", 2);
    plain_start(s, big, 1028, &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_free(s);
}

static void
test_sasl__plain_authzid(void **state)
{
    (void)state;
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);

    plain_start(s, PLAIN_MSG("Juliet@Example.org\0juliet\0pw"), &r);
    assert_int_equal(r.kind, XD_SASL_NEED_CHECK);
    xd_sasl_provide_check(s, 0, true, &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_string_equal(xd_jid_full_str(r.authzid).p, "juliet@" HOST);
    assert_int_equal(fx_authz_calls, 0);

    xd_sasl_free(s);
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    plain_start(s, PLAIN_MSG("romeo@example.org\0juliet\0pw"), &r);
    assert_int_equal(r.kind, XD_SASL_NEED_CHECK);
    xd_sasl_provide_check(s, 0, true, &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    assert_int_equal(fx_authz_calls, 1);
    /* Authentication fails first: the policy is not asked. */
    plain_start(s, PLAIN_MSG("romeo@example.org\0juliet\0pw"), &r);
    xd_sasl_provide_check(s, 0, false, &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    assert_int_equal(fx_authz_calls, 1);

    fx_allow = true;
    plain_start(s, PLAIN_MSG("admin.example.org\0juliet\0pw"), &r);
    xd_sasl_provide_check(s, 0, true, &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_string_equal(r.user, "juliet");
    assert_string_equal(xd_jid_full_str(r.jid).p, "admin.example.org");
    xd_sasl_free(s);
}

/* ---- ANONYMOUS, EXTERNAL --------------------------------------------------------------------- */

static void
test_sasl__anonymous(void **state)
{
    (void)state;
    xd_sasl_result_t r;
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    assert_int_equal(xd_sasl_start(s, XD_STR("ANONYMOUS"), "", 0, &r), 0);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_true(r.anonymous);
    assert_null(r.user);
    assert_null(r.jid);
    xd_sasl_free(s);

    s = fx_new(XD_SASL_MECHS_ALL, 0);
    start_s(s, "ANONYMOUS", "sirhc@example.com", &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_true(r.anonymous);
    xd_sasl_free(s);

    /* 255 characters (multi-byte) is the limit. */
    char tok[1024];
    size_t n = 0;
    for (int i = 0; i < 255; i++) {
        memcpy(tok + n, "\xc3\xa9", 2);
        n += 2;
    }
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    xd_sasl_start(s, XD_STR("ANONYMOUS"), tok, n, &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    xd_sasl_free(s);
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    tok[n] = 'x'; /* 256 characters */
    xd_sasl_start(s, XD_STR("ANONYMOUS"), tok, n + 1, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    xd_sasl_start(s, XD_STR("ANONYMOUS"), "a\xff", 2, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    xd_sasl_free(s);

    s = fx_new(XD_SASL_MECHS_SCRAM, 0); /* not enabled */
    start_s(s, "ANONYMOUS", "", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_MECHANISM);
    xd_sasl_free(s);
}

/* XEP-0178 3: the three certificate cases. */
static void
test_sasl__external(void **state)
{
    (void)state;
    xd_sasl_result_t r;
    const xd_str_t one[] = { XD_STR("Juliet@example.org") };
    const xd_str_t two[] = { XD_STR("juliet@example.org"), XD_STR("romeo@example.org") };
    const xd_str_t other[] = { XD_STR("juliet@other.example"), XD_STR("example.org"),
                               XD_STR("not a jid@@") };
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);

    /* One JID, no authzid ("="): authenticated as it. */
    assert_int_equal(xd_sasl_start(s, XD_STR("EXTERNAL"), "", 0, &r), 0);
    assert_int_equal(r.kind, XD_SASL_NEED_EXTERNAL);
    assert_null(r.authzid);
    assert_int_equal(xd_sasl_provide_external(s, 0, one, 1, &r), 0);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_string_equal(r.user, "juliet");
    assert_string_equal(xd_jid_full_str(r.jid).p, "juliet@" HOST);
    xd_sasl_free(s);

    /* Several JIDs: the authzid picks one; none given → invalid-authzid. */
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    start_s(s, "EXTERNAL", "romeo@example.org", &r);
    assert_int_equal(r.kind, XD_SASL_NEED_EXTERNAL);
    assert_string_equal(xd_jid_full_str(r.authzid).p, "romeo@" HOST);
    xd_sasl_provide_external(s, 0, two, 2, &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_string_equal(r.user, "romeo");
    xd_sasl_free(s);
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    xd_sasl_start(s, XD_STR("EXTERNAL"), "", 0, &r);
    xd_sasl_provide_external(s, 0, two, 2, &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    start_s(s, "EXTERNAL", "nurse@example.org", &r);
    xd_sasl_provide_external(s, 0, two, 2, &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);

    /* One JID and another authzid: the policy decides. */
    start_s(s, "EXTERNAL", "nurse@example.org", &r);
    xd_sasl_provide_external(s, 0, one, 1, &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    assert_int_equal(fx_authz_calls, 1);
    fx_allow = true;
    start_s(s, "EXTERNAL", "nurse@example.org", &r);
    xd_sasl_provide_external(s, 0, one, 1, &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_string_equal(r.user, "juliet");
    assert_string_equal(xd_jid_full_str(r.jid).p, "nurse@" HOST);
    xd_sasl_free(s);

    /* No usable identity; mapping failed; backend trouble. */
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    xd_sasl_start(s, XD_STR("EXTERNAL"), "", 0, &r);
    xd_sasl_provide_external(s, 0, other, 3, &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_start(s, XD_STR("EXTERNAL"), "", 0, &r);
    xd_sasl_provide_external(s, XD_ENOTFOUND, NULL, 0, &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    xd_sasl_start(s, XD_STR("EXTERNAL"), "", 0, &r);
    xd_sasl_provide_external(s, XD_ETIMEDOUT, NULL, 0, &r);
    expect_fail(&r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE);
    start_s(s, "EXTERNAL", "a/b/c@", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_AUTHZID);
    xd_sasl_start(s, XD_STR("EXTERNAL"), "a\0b", 3, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    xd_sasl_free(s);
}

/* ---- state rules ----------------------------------------------------------------------------- */

static void
test_sasl__state_rules(void **state)
{
    (void)state;
    xd_sasl_result_t r;
    xd_scram_cred_t cred;
    make_cred(XD_SCRAM_SHA1, "pw", 64, &cred);
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);

    /* A response with no exchange. */
    step_s(s, "hello", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);

    /* Unknown / disabled mechanism. */
    start_s(s, "DIGEST-MD5", "", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_MECHANISM);
    start_s(s, "scram-sha-1", "n,,n=u,r=a", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_MECHANISM);

    /* A second start while an exchange runs. */
    start_s(s, "SCRAM-SHA-1", "n,,n=u,r=abc", &r);
    assert_int_equal(r.kind, XD_SASL_NEED_SCRAM);
    start_s(s, "PLAIN", "", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    /* The old backend answer is stale now. */
    assert_int_equal(xd_sasl_provide_scram(s, 0, &cred, &r), XD_EINVAL);
    assert_int_equal(r.kind, XD_SASL_NONE);
    assert_int_equal(xd_sasl_provide_check(s, 0, true, &r), XD_EINVAL);
    assert_int_equal(xd_sasl_provide_external(s, 0, NULL, 0, &r), XD_EINVAL);

    /* A response while the backend is asked. */
    start_s(s, "SCRAM-SHA-1", "n,,n=u,r=abc", &r);
    step_s(s, "c=biws", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);

    /* Too long, as initial response and as response. */
    static char big[XD_SASL_MSG_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    xd_sasl_start(s, XD_STR("PLAIN"), big, XD_SASL_MSG_MAX + 1, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    xd_sasl_start(s, XD_STR("SCRAM-SHA-1"), NULL, 0, &r);
    assert_int_equal(r.kind, XD_SASL_CHALLENGE);
    xd_sasl_step(s, big, XD_SASL_MSG_MAX + 1, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);

    /* Abort at every point gives aborted; the engine can start again. */
    xd_sasl_abort(s, &r);
    expect_fail(&r, XD_SASL_COND_ABORTED);
    start_s(s, "SCRAM-SHA-1", "n,,n=u,r=abc", &r);
    xd_sasl_abort(s, &r);
    expect_fail(&r, XD_SASL_COND_ABORTED);
    assert_int_equal(xd_sasl_provide_scram(s, 0, &cred, &r), XD_EINVAL);
    start_s(s, "SCRAM-SHA-1", "n,,n=u,r=abc", &r);
    xd_sasl_provide_scram(s, 0, &cred, &r);
    assert_int_equal(r.kind, XD_SASL_CHALLENGE);
    xd_sasl_abort(s, NULL);
    step_s(s, "c=biws,r=x,p=AAAA", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    start_s(s, "PLAIN", NULL, &r);
    xd_sasl_abort(s, &r);
    expect_fail(&r, XD_SASL_COND_ABORTED);

    /* After success: everything is malformed-request and the success stands. */
    start_s(s, "ANONYMOUS", "", &r);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    start_s(s, "PLAIN", "", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    step_s(s, "", &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    xd_sasl_abort(s, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    assert_true(xd_sasl_succeeded(s));
    xd_sasl_free(s);

    /* Mechanisms withheld for want of TLS: encryption-required. */
    xd_sasl_opts_t o = fx_opts(XD_SASL_MECHS_SCRAM, 0);
    o.mechs_need_tls = XD_SASL_BIT(XD_SASL_PLAIN);
    s = xd_sasl_new(&o);
    start_s(s, "PLAIN", "", &r);
    expect_fail(&r, XD_SASL_COND_ENCRYPTION_REQUIRED);
    start_s(s, "EXTERNAL", "", &r);
    expect_fail(&r, XD_SASL_COND_INVALID_MECHANISM);
    xd_sasl_free(s);
    xd_sasl_free(NULL);
}

/* ---- fuzz-style ------------------------------------------------------------------------------ */

static uint64_t fz_state = 0x9e3779b97f4a7c15ull; /* xorshift64*, fixed seed */

static uint32_t
fz_rand(void)
{
    fz_state ^= fz_state >> 12;
    fz_state ^= fz_state << 25;
    fz_state ^= fz_state >> 27;
    return (uint32_t)((fz_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* Random bytes, mostly from SCRAM-ish characters. */
static size_t
fz_msg(uint8_t *buf, size_t cap)
{
    static const char alpha[] = "nyp=,acmrsvei0123ABCDEFabc+/=2C3D@.-tls-exporter\0\xc3\xa9\xff";
    size_t n = fz_rand() % (fz_rand() % 8 == 0 ? cap : 64);
    for (size_t i = 0; i < n; i++)
        buf[i] = (fz_rand() % 4) ? (uint8_t)alpha[fz_rand() % (sizeof alpha - 1)]
                                 : (uint8_t)fz_rand();
    return n;
}

static void
fz_check(const xd_sasl_result_t *r)
{
    switch (r->kind) {
    case XD_SASL_FAILURE:
        assert_non_null(xd_sasl_cond_name(r->cond));
        break;
    case XD_SASL_SUCCESS:
        /* Random data never passes a SCRAM proof or a PLAIN check. */
        assert_true(r->anonymous || r->mech == XD_SASL_EXTERNAL || r->mech == XD_SASL_PLAIN);
        if (!r->anonymous)
            assert_non_null(r->jid);
        break;
    case XD_SASL_CHALLENGE:
        assert_non_null(r->out);
        break;
    case XD_SASL_NEED_SCRAM:
    case XD_SASL_NEED_CHECK:
        assert_non_null(r->user);
        assert_true(strlen(r->user) > 0);
        break;
    case XD_SASL_NEED_EXTERNAL:
        break;
    default:
        fail_msg("bad kind %d", (int)r->kind);
    }
}

/* Feeds the engine's current question an answer (real, unknown or error). */
static void
fz_answer(xd_sasl_t *s, xd_sasl_result_t *r, const xd_scram_cred_t *creds)
{
    int rc = 0;
    if (r->kind == XD_SASL_NEED_SCRAM) {
        int pick = fz_rand() % 3;
        rc = xd_sasl_provide_scram(s, pick == 0 ? 0 : pick == 1 ? XD_ENOTFOUND : XD_EDB,
                                   &creds[r->hash], r);
    } else if (r->kind == XD_SASL_NEED_CHECK) {
        rc = xd_sasl_provide_check(s, 0, fz_rand() % 2, r);
    } else if (r->kind == XD_SASL_NEED_EXTERNAL) {
        const xd_str_t ids[] = { XD_STR("a@example.org"), XD_STR("b@example.org") };
        rc = xd_sasl_provide_external(s, 0, ids, fz_rand() % 3, r);
    } else {
        return;
    }
    assert_int_equal(rc, 0);
    fz_check(r);
}

static void
test_sasl__fuzz_random_and_truncated(void **state)
{
    (void)state;
    xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT];
    for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++)
        make_cred((xd_scram_hash)h, "pw", 16, &creds[h]);
    static uint8_t buf[XD_SASL_MSG_MAX + 16];
    xd_sasl_result_t r;

    /* Random messages into every mechanism and state. */
    for (int iter = 0; iter < 20000; iter++) {
        xd_sasl_opts_t o = fx_opts(XD_SASL_MECHS_ALL, fz_rand() % 4);
        if (fz_rand() % 2)
            o.cb_data = fx_cb_data;
        xd_sasl_t *s = xd_sasl_new(&o);
        xd_sasl_mech m = (xd_sasl_mech)(fz_rand() % XD_SASL_MECH_COUNT);
        size_t n = fz_msg(buf, sizeof buf);
        if (fz_rand() % 3 == 0) {
            /* A plausible SCRAM start, to reach the final message. */
            n = (size_t)snprintf((char *)buf, sizeof buf, "%s,,n=u%u,r=%u",
                                 fz_rand() % 2 ? "n" : "p=tls-exporter", fz_rand(), fz_rand());
        }
        assert_int_equal(xd_sasl_start(s, xd_str_c(xd_sasl_mech_name(m)),
                                       fz_rand() % 8 ? buf : NULL, n, &r),
                         0);
        fz_check(&r);
        for (int k = 0; k < 4; k++) {
            fz_answer(s, &r, creds);
            if (fz_rand() % 16 == 0)
                xd_sasl_abort(s, &r);
            n = fz_msg(buf, sizeof buf);
            if (r.kind == XD_SASL_CHALLENGE && r.out_len > 0 && fz_rand() % 2) {
                /* Echo parts of the server-first back: c=, r=, p= shaped. */
                n = (size_t)snprintf((char *)buf, sizeof buf, "c=%s,%.*s,p=%s",
                                     fz_rand() % 2 ? "biws" : "cD10bHM=",
                                     (int)(r.out_len < 200 ? r.out_len : 200), r.out,
                                     fz_rand() % 2 ? "AAAA" : "");
            }
            assert_int_equal(xd_sasl_step(s, buf, n, &r), 0);
            fz_check(&r);
        }
        xd_sasl_free(s);
    }

    /* Every prefix and single-byte change of a valid exchange. */
    tc_t c;
    tc_init(&c, XD_SCRAM_SHA256, "n,a=u@example.org,", "u", "pw");
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, 0);
    xd_sasl_test_set_nonce(s, "fixedSERVERnonce0123456789abcdefghij");
    assert_int_equal(start_s(s, "SCRAM-SHA-256", c.first, &r), 0);
    xd_sasl_provide_scram(s, 0, &creds[XD_SCRAM_SHA256], &r);
    tc_final(&c, r.out, r.out_len, "pw");
    xd_sasl_free(s);
    size_t fl = strlen(c.first), ll = strlen(c.final);
    for (size_t cut = 0; cut <= fl + ll; cut++) {
        for (int variant = 0; variant < 3; variant++) {
            s = fx_new(XD_SASL_MECHS_ALL, 0);
            xd_sasl_test_set_nonce(s, "fixedSERVERnonce0123456789abcdefghij");
            char first[1024], final[2048];
            memcpy(first, c.first, fl + 1);
            memcpy(final, c.final, ll + 1);
            size_t f1 = fl, f2 = ll;
            if (variant == 0) { /* truncation */
                if (cut < fl)
                    f1 = cut;
                else
                    f2 = cut - fl;
            } else { /* one byte changed */
                char *at = cut < fl ? first + cut : final + (cut - fl < ll ? cut - fl : 0);
                *at = variant == 1 ? (char)(*at ^ 0x01) : ',';
            }
            xd_sasl_start(s, XD_STR("SCRAM-SHA-256"), first, f1, &r);
            fz_check(&r);
            if (r.kind == XD_SASL_NEED_SCRAM) {
                xd_sasl_provide_scram(s, 0, &creds[XD_SCRAM_SHA256], &r);
                fz_check(&r);
                if (r.kind == XD_SASL_CHALLENGE) {
                    xd_sasl_step(s, final, f2, &r);
                    /* Only the intact exchange passes. */
                    if (r.kind == XD_SASL_SUCCESS &&
                        !(f1 == fl && f2 == ll && memcmp(first, c.first, fl) == 0 &&
                          memcmp(final, c.final, ll) == 0))
                        fail_msg("changed exchange passed: cut %zu variant %d: %.*s / %.*s",
                                 cut, variant, (int)f1, first, (int)f2, final);
                }
            }
            xd_sasl_free(s);
        }
    }
}


/* HT (draft-schmaus-kitten-sasl-ht) against vectors computed independently
 * with Python's hmac module, keyed with the token itself:
 *   tok = b"fast-" + bytes(range(32)).hex().encode()      # 69 bytes
 *   cb  = bytes(0xA0 + i for i in range(32))               # fx_exporter
 *   hashlib.sha256(tok).digest()                           -> ht_key
 *   hmac.new(tok, b"Initiator", "sha256").digest()         -> ht_ini_none
 *   hmac.new(tok, b"Initiator" + cb, "sha256").digest()    -> ht_ini_expr
 *   hmac.new(tok, b"Responder" + cb, "sha256").digest()    -> ht_resp_expr
 * The engine only ever has SHA-256(tok): equal results show that a token
 * longer than the block is hashed into the key (RFC 2104 2). */
static const uint8_t ht_key[32] = {
    0x7a, 0xde, 0xf7, 0xe3, 0x8b, 0x0f, 0xf4, 0xe1, 0xb3, 0x32, 0xfb, 0x97, 0x37, 0x57, 0xae, 0xde,
    0xee, 0xad, 0x22, 0x05, 0x60, 0xb4, 0x3b, 0x8e, 0x26, 0x5b, 0x4c, 0x88, 0x89, 0x1c, 0xfc, 0xb6,
};
static const uint8_t ht_ini_none[32] = {
    0xa6, 0x7c, 0x4a, 0x96, 0x28, 0x7c, 0x7d, 0x85, 0x86, 0xfc, 0x99, 0xce, 0x4c, 0xca, 0x97, 0x0c,
    0xc8, 0x83, 0x5a, 0x61, 0x3b, 0x72, 0x40, 0xb8, 0x7f, 0x09, 0x0a, 0x6d, 0xf6, 0x37, 0x7b, 0x42,
};
static const uint8_t ht_ini_expr[32] = {
    0x06, 0x24, 0x2b, 0x04, 0xca, 0xf4, 0xd5, 0xd8, 0x4b, 0x12, 0x7a, 0x31, 0xfb, 0x08, 0x22, 0xb9,
    0xfe, 0xd5, 0xfb, 0x95, 0x94, 0xe4, 0xc9, 0xa7, 0x68, 0x82, 0xa8, 0x46, 0x60, 0xe7, 0xa7, 0x00,
};
static const uint8_t ht_resp_expr[32] = {
    0x37, 0xe8, 0x05, 0xf9, 0x46, 0xe9, 0xc3, 0xfb, 0x44, 0x1a, 0xe1, 0x4a, 0x8c, 0x89, 0xf3, 0x9d,
    0xf2, 0x8c, 0x72, 0xdc, 0x8d, 0x09, 0x4e, 0x1a, 0xdd, 0x08, 0x42, 0x7b, 0xe6, 0x98, 0x65, 0x03,
};

static void
test_sasl__ht_vectors(void **state)
{
    (void)state;
    uint8_t out[32];
    xd_sasl_ht_hmac(ht_key, true, NULL, 0, out);
    assert_memory_equal(out, ht_ini_none, 32);
    uint8_t cb[32];
    for (unsigned i = 0; i < 32; i++)
        cb[i] = (uint8_t)(0xA0 + i);
    xd_sasl_ht_hmac(ht_key, true, cb, 32, out);
    assert_memory_equal(out, ht_ini_expr, 32);
    xd_sasl_ht_hmac(ht_key, false, cb, 32, out);
    assert_memory_equal(out, ht_resp_expr, 32);

    /* Through the engine: HT-SHA-256-EXPR with fx_exporter as binding. */
    xd_sasl_t *s = fx_new(XD_SASL_MECHS_ALL, CB_BOTH);
    assert_string_equal(xd_sasl_fast_mechanisms(s)[0], "HT-SHA-256-ENDP");
    xd_sasl_result_t r;
    uint8_t msg[4 + 32];
    memcpy(msg, "amy", 4);
    memcpy(msg + 4, ht_ini_expr, 32);
    /* Not without XD_SASL_START_FAST (RFC 6120 SASL, SASL2 without <fast/>). */
    xd_sasl_start(s, xd_str_c("HT-SHA-256-EXPR"), msg, sizeof msg, &r);
    expect_fail(&r, XD_SASL_COND_INVALID_MECHANISM);
    xd_sasl_start_ex(s, xd_str_c("HT-SHA-256-EXPR"), msg, sizeof msg, XD_SASL_START_FAST, &r);
    assert_int_equal(r.kind, XD_SASL_NEED_TOKEN);
    assert_string_equal(r.user, "amy");
    xd_sasl_token_t toks[2] = { { .mech = XD_SASL_HT_SHA_256_NONE },
                                { .mech = XD_SASL_HT_SHA_256_EXPR } };
    memcpy(toks[0].key, ht_key, 32); /* right token, other mechanism: no match */
    memcpy(toks[1].key, ht_key, 32);
    assert_int_equal(xd_sasl_provide_token(s, 0, toks, 2, &r), 0);
    assert_int_equal(r.kind, XD_SASL_SUCCESS);
    assert_int_equal(r.token, 1);
    assert_int_equal(r.out_len, 32);
    assert_memory_equal(r.out, ht_resp_expr, 32);
    xd_sasl_free(s);

    /* A wrong token, and a token of another mechanism only. */
    s = fx_new(XD_SASL_MECHS_ALL, CB_BOTH);
    msg[10] ^= 1;
    xd_sasl_start_ex(s, xd_str_c("HT-SHA-256-EXPR"), msg, sizeof msg, XD_SASL_START_FAST, &r);
    xd_sasl_provide_token(s, 0, toks, 2, &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    msg[10] ^= 1;
    xd_sasl_start_ex(s, xd_str_c("HT-SHA-256-EXPR"), msg, sizeof msg, XD_SASL_START_FAST, &r);
    xd_sasl_provide_token(s, 0, toks, 1, &r);
    expect_fail(&r, XD_SASL_COND_NOT_AUTHORIZED);
    /* No initial response, or a short hash: malformed. */
    xd_sasl_start_ex(s, xd_str_c("HT-SHA-256-EXPR"), NULL, 0, XD_SASL_START_FAST, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    xd_sasl_start_ex(s, xd_str_c("HT-SHA-256-EXPR"), msg, sizeof msg - 1, XD_SASL_START_FAST, &r);
    expect_fail(&r, XD_SASL_COND_MALFORMED_REQUEST);
    xd_sasl_free(s);

    /* Without channel binding only HT-SHA-256-NONE is offered. */
    s = fx_new(XD_SASL_MECHS_ALL, 0);
    assert_string_equal(xd_sasl_fast_mechanisms(s)[0], "HT-SHA-256-NONE");
    assert_null(xd_sasl_fast_mechanisms(s)[1]);
    for (const char *const *m = xd_sasl_mechanisms(s); *m; m++)
        assert_null(strstr(*m, "HT-")); /* never in <mechanisms/> */
    xd_sasl_free(s);
}

int
main(void)
{
    xd_log_set_level(XD_LOG_CRIT);
    srand(12345);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sasl__mechanism_lists),
        cmocka_unit_test(test_sasl__names),
        cmocka_unit_test(test_sasl__scram_rfc5802_vector),
        cmocka_unit_test(test_sasl__scram_rfc7677_vector),
        cmocka_unit_test(test_sasl__scram_each_hash),
        cmocka_unit_test(test_sasl__scram_plus_both_types),
        cmocka_unit_test(test_sasl__scram_plus_mismatch),
        cmocka_unit_test(test_sasl__scram_nonce_must_match),
        cmocka_unit_test(test_sasl__scram_plus_flag_rules),
        cmocka_unit_test(test_sasl__scram_downgrade_y),
        cmocka_unit_test(test_sasl__scram_cb_quiet),
        cmocka_unit_test(test_sasl__scram_wrong_password),
        cmocka_unit_test(test_sasl__scram_unknown_user_same_shape),
        cmocka_unit_test(test_sasl__scram_low_stored_iterations),
        cmocka_unit_test(test_sasl__scram_backend_errors),
        cmocka_unit_test(test_sasl__scram_authzid),
        cmocka_unit_test(test_sasl__scram_saslname_escaping),
        cmocka_unit_test(test_sasl__scram_malformed_first),
        cmocka_unit_test(test_sasl__scram_malformed_final),
        cmocka_unit_test(test_sasl__plain_good_and_bad),
        cmocka_unit_test(test_sasl__plain_malformed),
        cmocka_unit_test(test_sasl__plain_authzid),
        cmocka_unit_test(test_sasl__anonymous),
        cmocka_unit_test(test_sasl__external),
        cmocka_unit_test(test_sasl__state_rules),
        cmocka_unit_test(test_sasl__fuzz_random_and_truncated),
        cmocka_unit_test(test_sasl__ht_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
