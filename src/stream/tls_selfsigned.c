/*
 * tls_selfsigned.c — self-signed certificates for the certificate store
 * (tls_store.c; the parts are listed in tls_int.h): a served host that no
 * certfile covers gets <data_dir>/certs/<host A-label>.pem, reused while it
 * is valid for at least one more day, otherwise generated: an ECDSA P-256
 * key and a certificate for the host and *.host, valid for a year, with a
 * random serial.
 *
 * Invariants: the file is written atomically (a temporary file in the same
 * directory, fsync, rename), mode 0600, in a directory created with mode
 * 0700; the store gets the certificate only by reading that file back
 * through the certfile path (tls_batch_read, tls_batch_commit), like any
 * other, so what runs is what a restart would load.  Runs on the loader's
 * thread only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "stream/tls_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"

#define TLS_SELFSIGNED_DAYS 365 /* validity of generated certificates */

/* mkdir -p with mode 0700 for the directories it creates. */
static int
tls_mkdir_p(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char save = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -errno;
        buf[i] = save;
    }
    return 0;
}

static int
tls_add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int
tls_add_san(X509 *x, const char *ahost)
{
    char wild[TLS_NAME_MAX + 3];
    snprintf(wild, sizeof wild, "*.%s", ahost);
    const char *names[2] = { ahost, wild };
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    int ok = gens != NULL;
    for (int i = 0; ok && i < 2; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ok = g != NULL && s != NULL && ASN1_STRING_set(s, names[i], (int)strlen(names[i])) == 1;
        if (ok) {
            GENERAL_NAME_set0_value(g, GEN_DNS, s);
            ok = sk_GENERAL_NAME_push(gens, g) > 0;
            if (!ok)
                GENERAL_NAME_free(g);
        } else {
            ASN1_IA5STRING_free(s);
            GENERAL_NAME_free(g);
        }
    }
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(gens);
    return ok ? 0 : -1;
}

/* Generates key and self-signed certificate for ahost (A-label). */
static int
tls_selfsigned_build(const char *ahost, EVP_PKEY **pkey, X509 **cert)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    BIGNUM *bn = NULL;
    unsigned char serial[16];
    int ok = pk != NULL && x != NULL && X509_set_version(x, X509_VERSION_3) == 1 &&
             RAND_bytes(serial, sizeof serial) == 1;
    if (ok) {
        serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40); /* positive, 16 bytes */
        bn = BN_bin2bn(serial, sizeof serial, NULL);
        ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL && /* clock skew */
             X509_gmtime_adj(X509_getm_notAfter(x), (long)TLS_SELFSIGNED_DAYS * 86400) != NULL;
    }
    if (ok) {
        X509_NAME *name = X509_get_subject_name(x);
        ok = X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)ahost,
                                        -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, pk) == 1;
    }
    if (ok) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ok = tls_add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             tls_add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") == 0 &&
             tls_add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth") == 0 &&
             tls_add_ext(x, &v3, NID_subject_key_identifier, "hash") == 0 &&
             tls_add_san(x, ahost) == 0 && X509_sign(x, pk, EVP_sha256()) > 0;
    }
    BN_free(bn);
    if (!ok) {
        EVP_PKEY_free(pk);
        X509_free(x);
        return -1;
    }
    *pkey = pk;
    *cert = x;
    return 0;
}

/* Writes a new key and self-signed certificate for ahost to path
 * (directory dir), atomically, mode 0600. */
static int
tls_selfsigned_write(const char *dir, const char *path, const char *ahost, char **err)
{
    int rc = tls_mkdir_p(dir);
    if (rc != 0)
        return tls_fail(err, XD_ETLS_CERT, "%s: cannot create the directory: %s", dir,
                        strerror(-rc));
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    if (tls_selfsigned_build(ahost, &pk, &x) != 0)
        return tls_fail(err, XD_ETLS_CERT, "%s: cannot generate a certificate: %s", path,
                        tls_ossl_reason("OpenSSL failed"));
    size_t tlen = strlen(path) + 16;
    char *tmp = xd_malloc(tlen);
    snprintf(tmp, tlen, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp); /* 0600 */
    FILE *f = NULL;
    if (fd < 0 || fchmod(fd, 0600) != 0 || (f = fdopen(fd, "w")) == NULL) {
        rc = -errno;
    } else {
        fd = -1;
        bool ok = PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1 &&
                  PEM_write_X509(f, x) == 1 && fflush(f) == 0 && fsync(fileno(f)) == 0;
        rc = ok ? 0 : errno != 0 ? -errno : -EIO;
        if (fclose(f) != 0 && rc == 0)
            rc = -errno;
        if (rc == 0 && rename(tmp, path) != 0)
            rc = -errno;
    }
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        unlink(tmp);
        rc = tls_fail(err, XD_ETLS_CERT, "%s: cannot write the certificate: %s", path,
                      strerror(-rc));
    }
    ERR_clear_error();
    xd_free(tmp);
    EVP_PKEY_free(pk);
    X509_free(x);
    return rc;
}

/* True when b holds certificates and all of them are valid for at least
 * one more day. */
static bool
tls_batch_fresh(const tls_batch_t *b)
{
    time_t soon = time(NULL) + 86400;
    for (size_t c = 0; c < b->ncerts; c++)
        if (X509_cmp_time(X509_get0_notAfter(b->certs[c].x), &soon) <= 0)
            return false;
    return b->ncerts > 0;
}

int
tls_selfsigned(xd_tls_store_t *st, const xd_tls_store_opts_t *o, const char *host,
               const char *ahost, char **err)
{
    if (o->data_dir == NULL)
        return tls_fail(err, XD_ETLS_CERT, "no certificate covers host %s and there is no "
                        "data directory for a self-signed one", host);
    size_t dlen = strlen(o->data_dir) + sizeof "/certs";
    char *dir = xd_malloc(dlen);
    snprintf(dir, dlen, "%s/certs", o->data_dir);
    size_t plen = dlen + strlen(ahost) + 8;
    char *path = xd_malloc(plen);
    snprintf(path, plen, "%s/%s.pem", dir, ahost);

    tls_batch_t b = { 0 };
    bool created = false;
    int rc = 0;
    if (access(path, F_OK) == 0) {
        rc = tls_batch_read(&b, path, err);
        if (rc == 0 && !tls_batch_fresh(&b)) {
            tls_warn(st, "file=%s host=%s self-signed certificate expired; making a new one",
                     path, host);
            tls_batch_free(&b);
            created = true;
        }
    } else {
        created = true;
    }
    if (rc == 0 && created) {
        rc = tls_selfsigned_write(dir, path, ahost, err);
        if (rc == 0)
            rc = tls_batch_read(&b, path, err);
    }
    if (rc == 0)
        rc = tls_batch_commit(&b, st, o, err);
    if (rc == 0 && tls_lookup(st, host) < 0)
        rc = tls_fail(err, XD_ETLS_CERT, "%s: the certificate does not cover host %s", path,
                      host);
    tls_batch_free(&b);
    xd_free(dir);
    if (rc != 0) {
        xd_free(path);
        return rc;
    }
    st->self = xd_realloc(st->self, (st->nself + 1) * sizeof *st->self);
    st->self[st->nself++] =
        (xd_tls_selfsigned_t){ .host = xd_strdup(host), .path = path, .created = created };
    return 0;
}
