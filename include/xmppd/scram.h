/*
 * scram.h — SCRAM credentials and proofs, RFC 5802 with the hashes of
 * RFC 7677 (SHA-256) and SHA-512 (DESIGN.md 4).  Implemented in
 * src/auth/scram.c with OpenSSL 3.
 *
 * The server stores, per user and hash, only
 *
 *   SaltedPassword = Hi(Normalize(password), salt, i)      (PBKDF2-HMAC-H)
 *   ClientKey      = HMAC(SaltedPassword, "Client Key")
 *   StoredKey      = H(ClientKey)                            stored
 *   ServerKey      = HMAC(SaltedPassword, "Server Key")      stored
 *
 * and checks a client with
 *
 *   ClientSignature = HMAC(StoredKey, AuthMessage)
 *   ClientKey'      = ClientProof XOR ClientSignature,  H(ClientKey') == StoredKey
 *   ServerSignature = HMAC(ServerKey, AuthMessage)       sent back
 *
 * Normalize is the PRECIS OpaqueString profile (RFC 8265 4.2, which RFC 7613
 * obsoleted SASLprep with): non-ASCII spaces become U+0020, the result is NFC,
 * and control, unassigned and default-ignorable code points are refused.
 *
 * Deriving a key runs PBKDF2 and is blocking work: xd_scram_derive() asserts
 * that it is not on an event loop.  The other functions are cheap.
 *
 * Layers: the credential record, the hash names and the key sizes are plain
 * data of scram_cred.h (core), so that storage (src/storage/users.c)
 * persists and reads credentials without including or linking src/auth.
 * Everything here computes (derivation, checks, proofs): src/auth/scram.c.
 */
#ifndef XMPPD_SCRAM_H
#define XMPPD_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/scram_cred.h"
#include "xmppd/str.h"

/* The hash called `name` (as xd_scram_hash_name).  XD_EINVAL. */
int xd_scram_hash_parse(xd_str_t name, xd_scram_hash *out);

/* Prepares a password with OpaqueString.  On success *out is a new
 * NUL-terminated string (xd_free) and *out_len its length.  XD_EINVAL for
 * invalid UTF-8, a refused code point or an empty result. */
int xd_scram_normalize(xd_str_t password, char **out, size_t *out_len);

/* Fills salt[0..len) with random bytes (RAND_bytes).  XD_EINTERNAL. */
int xd_scram_salt(uint8_t *salt, size_t len);

/* Computes StoredKey and ServerKey (xd_scram_key_len(hash) bytes each) for
 * password, normalising it first.  XD_EINVAL for a refused password or
 * iterations == 0; XD_EINTERNAL when OpenSSL fails. */
int xd_scram_derive(xd_scram_hash hash, xd_str_t password, xd_str_t salt, unsigned iterations,
                    uint8_t *stored_key, uint8_t *server_key);

/* As xd_scram_derive, filling a whole credential with a new random salt of
 * XD_SCRAM_SALT_LEN bytes. */
int xd_scram_cred_make(xd_scram_hash hash, xd_str_t password, unsigned iterations,
                       xd_scram_cred_t *out);

/* The credentials stored for an account's password: one per hash
 * (XD_SCRAM_SHA512, SHA256, SHA1 in creds[0..2]), each with its own random
 * salt.  XD_EINVAL for a password OpaqueString refuses or iterations == 0;
 * then creds is wiped. */
int xd_scram_creds_make(xd_str_t password, unsigned iterations,
                        xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT]);

/* Sets *ok when `password` derives (with cred's salt and iterations) to
 * cred's StoredKey, compared in constant time.  A password OpaqueString
 * refuses was never stored: 0 with *ok false.  XD_EINTERNAL (OpenSSL). */
int xd_scram_cred_check(const xd_scram_cred_t *cred, xd_str_t password, bool *ok);

/* out = H(data); xd_scram_key_len(hash) bytes. */
int xd_scram_digest(xd_scram_hash hash, const void *data, size_t len, uint8_t *out);

/* out = HMAC-H(key, msg); xd_scram_key_len(hash) bytes. */
int xd_scram_hmac(xd_scram_hash hash, const void *key, size_t key_len, const void *msg,
                  size_t msg_len, uint8_t *out);

/* Client side, for tests and s2s/component use: ClientProof for
 * auth_message from the password (normalised), salt and iterations. */
int xd_scram_client_proof(xd_scram_hash hash, xd_str_t password, xd_str_t salt,
                          unsigned iterations, xd_str_t auth_message, uint8_t *proof);

/* Server side: true when proof (proof_len bytes) proves knowledge of the
 * password whose StoredKey is stored_key, for auth_message.  Constant time
 * in the compared bytes. */
bool xd_scram_verify_proof(xd_scram_hash hash, const uint8_t *stored_key, xd_str_t auth_message,
                           const uint8_t *proof, size_t proof_len);

/* ServerSignature = HMAC(ServerKey, AuthMessage) into out. */
int xd_scram_server_signature(xd_scram_hash hash, const uint8_t *server_key,
                              xd_str_t auth_message, uint8_t *out);

/* Compares a and b (len bytes each) in time that depends only on len. */
bool xd_scram_ct_eq(const void *a, const void *b, size_t len);

#endif
