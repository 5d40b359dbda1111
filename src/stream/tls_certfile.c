/*
 * tls_certfile.c — certfiles for the certificate store (tls_store.c; the
 * parts are listed in tls_int.h): PEM files read into a batch, private keys
 * paired with the certificates that hold their public keys, chains built
 * from the other certificates of the batch, and every certificate with a
 * key committed to the store as an SSL_CTX of its own, indexed by the names
 * it covers.
 *
 * A batch lives only while the loader runs; the store takes its own
 * references (SSL_CTX_use_certificate, SSL_CTX_set1_chain), so the batch is
 * always freed with tls_batch_free, committed or not.  Invariants: a
 * certificate's key, when set, is one of the batch's keys; a key that
 * matches no certificate, or a leaf certificate without a key, fails the
 * whole load; roots (self-issued certificates) are never sent in a chain.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "stream/tls_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"

#define TLS_CHAIN_DEPTH 10 /* intermediates looked for above a leaf */

/* ---- reading PEM files --------------------------------------------------- */

void
tls_batch_free(tls_batch_t *b)
{
    for (size_t i = 0; i < b->ncerts; i++)
        X509_free(b->certs[i].x);
    for (size_t i = 0; i < b->nkeys; i++)
        EVP_PKEY_free(b->keys[i].k);
    for (size_t i = 0; i < b->nfiles; i++)
        xd_free(b->files[i]);
    xd_free(b->certs);
    xd_free(b->keys);
    xd_free(b->files);
    memset(b, 0, sizeof *b);
}

static bool
tls_pem_is_cert(const char *name)
{
    return strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0 ||
           strcmp(name, PEM_STRING_X509_TRUSTED) == 0;
}

static bool
tls_pem_is_key(const char *name)
{
    size_t n = strlen(name);
    return n >= 11 && strcmp(name + n - 11, "PRIVATE KEY") == 0;
}

int
tls_batch_read(tls_batch_t *b, const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return tls_fail(err, XD_ETLS_CERT, "%s: %s", path, strerror(errno));
    BIO *bio = BIO_new_fp(f, BIO_CLOSE);
    if (bio == NULL) {
        fclose(f);
        return tls_fail(err, XD_ETLS_CERT, "%s: %s", path, tls_ossl_reason("BIO_new_fp failed"));
    }
    b->files = xd_realloc(b->files, (b->nfiles + 1) * sizeof *b->files);
    const char *file = b->files[b->nfiles++] = xd_strdup(path);

    int rc = 0;
    size_t found = 0;
    ERR_clear_error();
    while (rc == 0) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long len = 0;
        if (PEM_read_bio(bio, &name, &header, &data, &len) != 1) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
                ERR_clear_error(); /* end of file */
            else
                rc = tls_fail(err, XD_ETLS_CERT, "%s: bad PEM: %s", path,
                              tls_ossl_reason("read error"));
            break;
        }
        const unsigned char *p = data;
        if (tls_pem_is_cert(name)) {
            X509 *x = strcmp(name, PEM_STRING_X509_TRUSTED) == 0 ? d2i_X509_AUX(NULL, &p, len)
                                                                   : d2i_X509(NULL, &p, len);
            if (x == NULL) {
                rc = tls_fail(err, XD_ETLS_CERT, "%s: bad certificate: %s", path,
                              tls_ossl_reason("cannot decode"));
            } else {
                b->certs = xd_realloc(b->certs, (b->ncerts + 1) * sizeof *b->certs);
                b->certs[b->ncerts++] = (tls_bcert_t){ .x = x, .file = file };
                found++;
            }
        } else if (tls_pem_is_key(name)) {
            EVP_PKEY *k = NULL;
            if (strstr(name, "ENCRYPTED") != NULL || strstr(header, "ENCRYPTED") != NULL)
                rc = tls_fail(err, XD_ETLS_CERT,
                              "%s: the private key is encrypted; give it without a passphrase",
                              path);
            else if ((k = d2i_AutoPrivateKey(NULL, &p, len)) == NULL)
                rc = tls_fail(err, XD_ETLS_CERT, "%s: bad private key: %s", path,
                              tls_ossl_reason("cannot decode"));
            if (k != NULL) {
                b->keys = xd_realloc(b->keys, (b->nkeys + 1) * sizeof *b->keys);
                b->keys[b->nkeys++] = (tls_bkey_t){ .k = k, .file = file };
                found++;
            }
        } /* other blocks (parameters, CRLs) are not ours */
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
    }
    BIO_free(bio);
    if (rc == 0 && found == 0)
        rc = tls_fail(err, XD_ETLS_CERT, "%s: no certificate or private key in PEM form", path);
    return rc;
}

/* ---- into the store ------------------------------------------------------ */

/* A short description of x for messages: its first SAN dNSName or CN. */
static void
tls_cert_label(X509 *x, char *out, size_t cap)
{
    snprintf(out, cap, "(no name)");
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS) {
            char *s = tls_asn1_str(g->d.dNSName);
            if (s != NULL)
                snprintf(out, cap, "%s", s);
            xd_free(s);
            GENERAL_NAMES_free(gens);
            return;
        }
    }
    GENERAL_NAMES_free(gens);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)cap);
}

static bool
tls_self_issued(X509 *x)
{
    return X509_check_issued(x, x) == X509_V_OK;
}

/* The intermediates above leaf found among b's certificates (roots are not
 * sent: the peer has them or does not trust them). */
static STACK_OF(X509) *
tls_chain(const tls_batch_t *b, X509 *leaf)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    XD_ASSERT(chain != NULL);
    X509 *cur = leaf;
    for (int depth = 0; depth < TLS_CHAIN_DEPTH && !tls_self_issued(cur); depth++) {
        X509 *issuer = NULL;
        for (size_t i = 0; i < b->ncerts && issuer == NULL; i++) {
            X509 *c = b->certs[i].x;
            if (X509_cmp(c, cur) != 0 && X509_check_issued(c, cur) == X509_V_OK)
                issuer = c;
        }
        if (issuer == NULL || tls_self_issued(issuer))
            break;
        XD_ASSERT(sk_X509_push(chain, issuer) > 0);
        cur = issuer;
    }
    return chain;
}

int
tls_batch_commit(tls_batch_t *b, xd_tls_store_t *st, const xd_tls_store_opts_t *o, char **err)
{
    char label[256];
    for (size_t k = 0; k < b->nkeys; k++) {
        bool matched = false;
        for (size_t c = 0; c < b->ncerts; c++) {
            if (EVP_PKEY_eq(X509_get0_pubkey(b->certs[c].x), b->keys[k].k) == 1) {
                matched = true;
                if (b->certs[c].key == NULL)
                    b->certs[c].key = b->keys[k].k;
            }
        }
        ERR_clear_error(); /* EVP_PKEY_eq of different key types queues errors */
        if (!matched)
            return tls_fail(err, XD_ETLS_CERT, "%s: private key matches no certificate",
                            b->keys[k].file);
    }
    for (size_t c = 0; c < b->ncerts; c++) {
        if (b->certs[c].key == NULL && X509_check_ca(b->certs[c].x) == 0) {
            tls_cert_label(b->certs[c].x, label, sizeof label);
            return tls_fail(err, XD_ETLS_CERT, "%s: no private key for the certificate of %s",
                            b->certs[c].file, label);
        }
    }
    for (size_t c = 0; c < b->ncerts; c++) {
        tls_bcert_t *bc = &b->certs[c];
        if (bc->key == NULL)
            continue;
        bool dup = false;
        for (size_t d = 0; d < c && !dup; d++)
            dup = b->certs[d].key != NULL && X509_cmp(b->certs[d].x, bc->x) == 0;
        for (size_t s = 0; s < st->ncerts && !dup; s++)
            dup = X509_cmp(SSL_CTX_get0_certificate(st->certs[s]), bc->x) == 0;
        if (dup)
            continue;

        SSL_CTX *ctx = NULL;
        int rc = tls_ctx_base(st, o, &ctx, err);
        if (rc != 0)
            return rc;
        STACK_OF(X509) *chain = tls_chain(b, bc->x);
        const char *what = NULL;
        ERR_clear_error();
        if (SSL_CTX_use_certificate(ctx, bc->x) != 1)
            what = "certificate refused";
        else if (SSL_CTX_use_PrivateKey(ctx, bc->key) != 1)
            what = "private key refused";
        else if (SSL_CTX_check_private_key(ctx) != 1)
            what = "private key does not match the certificate";
        else if (SSL_CTX_set1_chain(ctx, chain) != 1)
            what = "chain refused";
        sk_X509_free(chain);
        if (what != NULL) {
            SSL_CTX_free(ctx);
            return tls_fail(err, XD_ETLS_CERT, "%s: %s: %s", bc->file, what,
                            tls_ossl_reason("OpenSSL refused it"));
        }
        st->certs = xd_realloc(st->certs, (st->ncerts + 1) * sizeof *st->certs);
        st->certs[st->ncerts] = ctx;
        tls_cert_label(bc->x, label, sizeof label);
        if (tls_index_cert(st, bc->x, st->ncerts) == 0)
            tls_warn(st, "file=%s certificate names no host; used only as the fallback",
                     bc->file);
        if (X509_cmp_current_time(X509_get0_notAfter(bc->x)) < 0)
            tls_warn(st, "file=%s cert=%s certificate has expired", bc->file, label);
        st->ncerts++;
    }
    tls_index_finish(st);
    return 0;
}
