/*
 * scram.c — SCRAM key derivation and proof checks (RFC 5802, RFC 7677),
 * the PRECIS OpaqueString preparation of passwords (RFC 8265 4.2), and a
 * constant-time compare.  Sits in src/auth; the internal backend
 * (internal.c) makes and checks the credentials that storage keeps, the SASL
 * code runs the exchange with them.
 *
 * Invariants: no function keeps state; every buffer that held a password or
 * a SaltedPassword is wiped (OPENSSL_cleanse) before it is freed or goes out
 * of scope; keys are always xd_scram_key_len(hash) bytes.  The one blocking
 * function, xd_scram_derive(), asserts that it runs off the event loops.
 */
#include "xmppd/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "core/worker.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"

/* The hashes stored for every account, strongest first (xd_scram_creds_make). */
static const xd_scram_hash scram_stored[XD_SCRAM_HASH_COUNT] = {
    XD_SCRAM_SHA512,
    XD_SCRAM_SHA256,
    XD_SCRAM_SHA1,
};

static const EVP_MD *
scram_md(xd_scram_hash hash)
{
    switch (hash) {
    case XD_SCRAM_SHA1:
        return EVP_sha1();
    case XD_SCRAM_SHA256:
        return EVP_sha256();
    case XD_SCRAM_SHA512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

int
xd_scram_hash_parse(xd_str_t name, xd_scram_hash *out)
{
    for (unsigned i = 0; i < XD_SCRAM_HASH_COUNT; i++) {
        if (xd_str_eq_c(name, xd_scram_hash_name((xd_scram_hash)i))) {
            *out = (xd_scram_hash)i;
            return 0;
        }
    }
    return XD_EINVAL;
}

bool
xd_scram_ct_eq(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

/* FreeformClass (RFC 8264 9.11-9.13), as far as libunistring tells us:
 * controls, unassigned and default-ignorable code points are disallowed. */
static bool
scram_cp_allowed(ucs4_t uc)
{
    if (uc_is_general_category(uc, UC_CONTROL) || uc_is_general_category(uc, UC_UNASSIGNED) ||
        uc_is_general_category(uc, UC_SURROGATE))
        return false;
    if (uc_is_property_default_ignorable_code_point(uc))
        return false;
    return true;
}

int
xd_scram_normalize(xd_str_t password, char **out, size_t *out_len)
{
    const uint8_t *in = (const uint8_t *)password.p;
    size_t n = password.len;

    if (n == 0 || u8_check(in, n) != NULL)
        return XD_EINVAL;

    /* RFC 8265 4.2.1 additional mapping: non-ASCII space → U+0020.  The
     * result is never longer than the input. */
    uint8_t *mapped = xd_malloc(n);
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        ucs4_t uc;
        int k = u8_mbtouc(&uc, in + i, n - i);
        if (uc >= 0x80 && uc_is_general_category(uc, UC_SPACE_SEPARATOR)) {
            mapped[m++] = ' ';
        } else {
            memcpy(mapped + m, in + i, (size_t)k);
            m += (size_t)k;
        }
        i += (size_t)k;
    }

    /* RFC 8265 4.2.1 normalisation: NFC. */
    size_t nfc_len = 0;
    uint8_t *nfc = u8_normalize(UNINORM_NFC, mapped, m, NULL, &nfc_len);
    OPENSSL_cleanse(mapped, n);
    xd_free(mapped);
    if (nfc == NULL)
        return XD_EINVAL;

    /* RFC 8264 8 (behavioural rules): the prepared string must consist of
     * allowed code points and must not be empty. */
    int rc = nfc_len == 0 ? XD_EINVAL : 0;
    for (size_t i = 0; rc == 0 && i < nfc_len;) {
        ucs4_t uc;
        int k = u8_mbtouc(&uc, nfc + i, nfc_len - i);
        if (!scram_cp_allowed(uc))
            rc = XD_EINVAL;
        i += (size_t)k;
    }
    if (rc == 0) {
        *out = xd_strndup((const char *)nfc, nfc_len);
        *out_len = nfc_len;
    }
    OPENSSL_cleanse(nfc, nfc_len);
    free(nfc); /* libunistring allocated it with malloc */
    return rc;
}

int
xd_scram_salt(uint8_t *salt, size_t len)
{
    XD_ASSERT(len <= INT32_MAX);
    return RAND_bytes(salt, (int)len) == 1 ? 0 : XD_EINTERNAL;
}

int
xd_scram_digest(xd_scram_hash hash, const void *data, size_t len, uint8_t *out)
{
    unsigned out_len = 0;
    const EVP_MD *md = scram_md(hash);
    if (md == NULL)
        return XD_EINVAL;
    if (EVP_Digest(data, len, out, &out_len, md, NULL) != 1)
        return XD_EINTERNAL;
    XD_ASSERT(out_len == xd_scram_key_len(hash));
    return 0;
}

int
xd_scram_hmac(xd_scram_hash hash, const void *key, size_t key_len, const void *msg,
              size_t msg_len, uint8_t *out)
{
    unsigned out_len = 0;
    const EVP_MD *md = scram_md(hash);
    if (md == NULL || key_len > INT32_MAX)
        return XD_EINVAL;
    if (HMAC(md, key, (int)key_len, msg, msg_len, out, &out_len) == NULL)
        return XD_EINTERNAL;
    XD_ASSERT(out_len == xd_scram_key_len(hash));
    return 0;
}

/* SaltedPassword = Hi(Normalize(password), salt, i) (RFC 5802 2.2, 3). */
static int
scram_salted_password(xd_scram_hash hash, xd_str_t password, xd_str_t salt,
                      unsigned iterations, uint8_t *salted)
{
    const EVP_MD *md = scram_md(hash);
    if (md == NULL || iterations == 0 || iterations > INT32_MAX || salt.len > INT32_MAX)
        return XD_EINVAL;

    char *norm = NULL;
    size_t norm_len = 0;
    int rc = xd_scram_normalize(password, &norm, &norm_len);
    if (rc < 0)
        return rc;
    if (norm_len > INT32_MAX) {
        rc = XD_EINVAL;
    } else if (PKCS5_PBKDF2_HMAC(norm, (int)norm_len, (const unsigned char *)salt.p,
                                 (int)salt.len, (int)iterations, md,
                                 (int)xd_scram_key_len(hash), salted) != 1) {
        rc = XD_EINTERNAL;
    }
    OPENSSL_cleanse(norm, norm_len);
    xd_free(norm);
    return rc;
}

int
xd_scram_derive(xd_scram_hash hash, xd_str_t password, xd_str_t salt, unsigned iterations,
                uint8_t *stored_key, uint8_t *server_key)
{
    xd_assert_off_loop();

    uint8_t salted[XD_SCRAM_KEY_MAX];
    uint8_t client_key[XD_SCRAM_KEY_MAX];
    size_t klen;
    int rc = scram_salted_password(hash, password, salt, iterations, salted);
    if (rc < 0)
        return rc;
    klen = xd_scram_key_len(hash);
    /* RFC 5802 3: ClientKey, StoredKey, ServerKey. */
    rc = xd_scram_hmac(hash, salted, klen, "Client Key", 10, client_key);
    if (rc == 0)
        rc = xd_scram_digest(hash, client_key, klen, stored_key);
    if (rc == 0)
        rc = xd_scram_hmac(hash, salted, klen, "Server Key", 10, server_key);
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

int
xd_scram_cred_make(xd_scram_hash hash, xd_str_t password, unsigned iterations,
                   xd_scram_cred_t *out)
{
    if ((unsigned)hash >= XD_SCRAM_HASH_COUNT)
        return XD_EINVAL;
    memset(out, 0, sizeof *out);
    out->hash = hash;
    out->iterations = iterations;
    out->salt_len = XD_SCRAM_SALT_LEN;
    int rc = xd_scram_salt(out->salt, out->salt_len);
    if (rc < 0)
        return rc;
    return xd_scram_derive(hash, password, (xd_str_t){ (const char *)out->salt, out->salt_len },
                           iterations, out->stored_key, out->server_key);
}

int
xd_scram_creds_make(xd_str_t password, unsigned iterations,
                    xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT])
{
    if (iterations == 0)
        return XD_EINVAL;
    for (unsigned i = 0; i < XD_SCRAM_HASH_COUNT; i++) {
        int rc = xd_scram_cred_make(scram_stored[i], password, iterations, &creds[i]);
        if (rc < 0) {
            OPENSSL_cleanse(creds, XD_SCRAM_HASH_COUNT * sizeof *creds);
            return rc;
        }
    }
    return 0;
}

int
xd_scram_cred_check(const xd_scram_cred_t *cred, xd_str_t password, bool *ok)
{
    uint8_t stored[XD_SCRAM_KEY_MAX], server[XD_SCRAM_KEY_MAX];

    *ok = false;
    int rc = xd_scram_derive(cred->hash, password,
                             (xd_str_t){ (const char *)cred->salt, cred->salt_len },
                             cred->iterations, stored, server);
    if (rc == XD_EINVAL)
        return 0; /* a password OpaqueString refuses was never stored */
    if (rc == 0)
        *ok = xd_scram_ct_eq(stored, cred->stored_key, xd_scram_key_len(cred->hash));
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(server, sizeof server);
    return rc;
}

int
xd_scram_client_proof(xd_scram_hash hash, xd_str_t password, xd_str_t salt,
                      unsigned iterations, xd_str_t auth_message, uint8_t *proof)
{
    uint8_t salted[XD_SCRAM_KEY_MAX];
    uint8_t client_key[XD_SCRAM_KEY_MAX];
    uint8_t stored_key[XD_SCRAM_KEY_MAX];
    uint8_t signature[XD_SCRAM_KEY_MAX];
    int rc = scram_salted_password(hash, password, salt, iterations, salted);
    if (rc < 0)
        return rc;
    size_t klen = xd_scram_key_len(hash);
    rc = xd_scram_hmac(hash, salted, klen, "Client Key", 10, client_key);
    if (rc == 0)
        rc = xd_scram_digest(hash, client_key, klen, stored_key);
    if (rc == 0)
        rc = xd_scram_hmac(hash, stored_key, klen, auth_message.p, auth_message.len, signature);
    if (rc == 0) {
        /* RFC 5802 3: ClientProof = ClientKey XOR ClientSignature. */
        for (size_t i = 0; i < klen; i++)
            proof[i] = client_key[i] ^ signature[i];
    }
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

bool
xd_scram_verify_proof(xd_scram_hash hash, const uint8_t *stored_key, xd_str_t auth_message,
                      const uint8_t *proof, size_t proof_len)
{
    uint8_t signature[XD_SCRAM_KEY_MAX];
    uint8_t client_key[XD_SCRAM_KEY_MAX];
    uint8_t check[XD_SCRAM_KEY_MAX];
    size_t klen = xd_scram_key_len(hash);
    bool ok = false;

    if (proof_len != klen)
        return false;
    /* RFC 5802 3: the server recovers ClientKey from the proof and checks
     * that its hash is StoredKey. */
    if (xd_scram_hmac(hash, stored_key, klen, auth_message.p, auth_message.len, signature) == 0) {
        for (size_t i = 0; i < klen; i++)
            client_key[i] = proof[i] ^ signature[i];
        if (xd_scram_digest(hash, client_key, klen, check) == 0)
            ok = xd_scram_ct_eq(check, stored_key, klen);
    }
    OPENSSL_cleanse(client_key, sizeof client_key);
    return ok;
}

int
xd_scram_server_signature(xd_scram_hash hash, const uint8_t *server_key, xd_str_t auth_message,
                          uint8_t *out)
{
    return xd_scram_hmac(hash, server_key, xd_scram_key_len(hash), auth_message.p,
                         auth_message.len, out);
}
