/*
 * scram_cred.h — a stored SCRAM credential as plain data: the hashes, their
 * names and key sizes, and the credential record (RFC 5802, RFC 7677).
 *
 * Data only (core, docs/design.md Layers): storage persists and returns
 * credentials with it (src/storage/users.c, storage.h) without knowing how
 * they are computed; deriving and checking them is auth's (scram.h,
 * src/auth/scram.c).
 */
#ifndef XMPPD_SCRAM_CRED_H
#define XMPPD_SCRAM_CRED_H

#include <stddef.h>
#include <stdint.h>

#include "xmppd/assert.h"

typedef enum xd_scram_hash {
    XD_SCRAM_SHA1 = 0, /* SCRAM-SHA-1, RFC 5802 */
    XD_SCRAM_SHA256,   /* SCRAM-SHA-256, RFC 7677 */
    XD_SCRAM_SHA512,   /* SCRAM-SHA-512 */
    XD_SCRAM_HASH_COUNT
} xd_scram_hash;

#define XD_SCRAM_KEY_MAX 64              /* bytes: SHA-512 output */
#define XD_SCRAM_SALT_LEN 16             /* bytes of a new random salt */
#define XD_SCRAM_SALT_MAX 128            /* bytes: longest salt we store */
#define XD_SCRAM_ITERATIONS_DEFAULT 4096 /* RFC 7677 4: at least 4096 */

/* One stored credential.  Plain data; the caller owns it. */
typedef struct xd_scram_cred {
    xd_scram_hash hash;                  /* which H */
    uint8_t salt[XD_SCRAM_SALT_MAX];     /* salt[0..salt_len) */
    size_t salt_len;                     /* 1..XD_SCRAM_SALT_MAX */
    unsigned iterations;                 /* Hi() iteration count, >= 1 */
    uint8_t stored_key[XD_SCRAM_KEY_MAX]; /* [0..xd_scram_key_len(hash)) */
    uint8_t server_key[XD_SCRAM_KEY_MAX]; /* [0..xd_scram_key_len(hash)) */
} xd_scram_cred_t;

/* "SHA-1", "SHA-256", "SHA-512": the names in mechanism names and storage. */
static inline const char *
xd_scram_hash_name(xd_scram_hash hash)
{
    static const char *const names[XD_SCRAM_HASH_COUNT] = {
        [XD_SCRAM_SHA1] = "SHA-1",
        [XD_SCRAM_SHA256] = "SHA-256",
        [XD_SCRAM_SHA512] = "SHA-512",
    };
    XD_ASSERT((unsigned)hash < XD_SCRAM_HASH_COUNT);
    return names[hash];
}

/* Output size of H in bytes (20, 32, 64). */
static inline size_t
xd_scram_key_len(xd_scram_hash hash)
{
    static const size_t lens[XD_SCRAM_HASH_COUNT] = {
        [XD_SCRAM_SHA1] = 20,
        [XD_SCRAM_SHA256] = 32,
        [XD_SCRAM_SHA512] = 64,
    };
    XD_ASSERT((unsigned)hash < XD_SCRAM_HASH_COUNT);
    return lens[hash];
}

#endif
