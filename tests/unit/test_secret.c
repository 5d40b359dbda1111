/*
 * test_secret.c — the node secret (src/core/secret.h): the file it makes,
 * keys per purpose checked against OpenSSL's HKDF (RFC 5869 Expand), the
 * same keys after a reload (a restart) and other ones from another data
 * dir, and the per-process stand-in when nothing is loaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "core/secret.h"

typedef unsigned char nkey_t[XD_NODE_KEY_LEN];

/* A new empty directory under TMPDIR. */
static char *
tmp_dir(void)
{
    const char *base = getenv("TMPDIR");
    char *path = malloc(4096);
    snprintf(path, 4096, "%s/xd-test-secret-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(path));
    return path;
}

static void
rm_dir(char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/secret", dir);
    unlink(path);
    rmdir(dir);
    free(dir);
}

/* Reads <dir>/secret; its length. */
static size_t
read_secret(const char *dir, unsigned char *buf, size_t cap)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/secret", dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* HKDF-Expand-SHA256(prk, "xmppd node key: " purpose), by OpenSSL. */
static void
hkdf_expand(const unsigned char *prk, size_t prk_len, const char *purpose, unsigned char *out)
{
    char info[128];
    int il = snprintf(info, sizeof info, "xmppd node key: %s", purpose);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    assert_non_null(ctx);
    size_t len = XD_NODE_KEY_LEN;
    assert_int_equal(EVP_PKEY_derive_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_hkdf_mode(ctx, EVP_PKEY_HKDEF_MODE_EXPAND_ONLY), 1);
    assert_int_equal(EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()), 1);
    assert_int_equal(EVP_PKEY_CTX_set1_hkdf_key(ctx, prk, (int)prk_len), 1);
    assert_int_equal(EVP_PKEY_CTX_add1_hkdf_info(ctx, (unsigned char *)info, il), 1);
    assert_int_equal(EVP_PKEY_derive(ctx, out, &len), 1);
    assert_int_equal(len, XD_NODE_KEY_LEN);
    EVP_PKEY_CTX_free(ctx);
}

static void
test_secret__stand_in_before_the_load(void **state)
{
    (void)state;
    nkey_t a1, a2, b;
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, a1);
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, a2);
    xd_node_key(XD_NODE_KEY_DIALBACK, b);
    assert_memory_equal(a1, a2, sizeof a1); /* stable for the process */
    assert_memory_not_equal(a1, b, sizeof a1); /* one key per purpose */
    nkey_t zero = { 0 };
    assert_memory_not_equal(a1, zero, sizeof a1);
}

static void
test_secret__load_derive_reload(void **state)
{
    (void)state;
    nkey_t stand_in, k1, d1, again, other;
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, stand_in);

    char *dir = tmp_dir();
    assert_int_equal(xd_node_secret_load(dir), 0);
    unsigned char file[64];
    assert_int_equal(read_secret(dir, file, sizeof file), XD_NODE_SECRET_LEN);
    char path[4200];
    snprintf(path, sizeof path, "%s/secret", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* The keys are HKDF-Expand of the file's bytes, one per purpose. */
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, k1);
    xd_node_key(XD_NODE_KEY_DIALBACK, d1);
    nkey_t want;
    hkdf_expand(file, XD_NODE_SECRET_LEN, XD_NODE_KEY_SCRAM_SALT, want);
    assert_memory_equal(k1, want, sizeof k1);
    hkdf_expand(file, XD_NODE_SECRET_LEN, XD_NODE_KEY_DIALBACK, want);
    assert_memory_equal(d1, want, sizeof d1);
    assert_memory_not_equal(k1, stand_in, sizeof k1);
    assert_memory_not_equal(k1, d1, sizeof k1);
    /* No key is the secret itself. */
    assert_memory_not_equal(k1, file, XD_NODE_KEY_LEN);
    assert_memory_not_equal(d1, file, XD_NODE_KEY_LEN);

    /* A restart: the file is read, not replaced; the keys are the same. */
    xd_node_secret_clear();
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, again);
    assert_memory_equal(again, stand_in, sizeof again); /* cleared: the stand-in */
    assert_int_equal(xd_node_secret_load(dir), 0);
    unsigned char file2[64];
    assert_int_equal(read_secret(dir, file2, sizeof file2), XD_NODE_SECRET_LEN);
    assert_memory_equal(file, file2, XD_NODE_SECRET_LEN);
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, again);
    assert_memory_equal(again, k1, sizeof again);

    /* Another data dir: another secret, other keys. */
    char *dir2 = tmp_dir();
    assert_int_equal(xd_node_secret_load(dir2), 0);
    xd_node_key(XD_NODE_KEY_SCRAM_SALT, other);
    assert_memory_not_equal(other, k1, sizeof other);

    /* A short file is replaced by a whole new secret. */
    snprintf(path, sizeof path, "%s/secret", dir2);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("short", f);
    fclose(f);
    assert_int_equal(xd_node_secret_load(dir2), 0);
    assert_int_equal(read_secret(dir2, file2, sizeof file2), XD_NODE_SECRET_LEN);
    assert_memory_not_equal(file2, "short", 5);

    xd_node_secret_clear();
    rm_dir(dir);
    rm_dir(dir2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret__stand_in_before_the_load),
        cmocka_unit_test(test_secret__load_derive_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
