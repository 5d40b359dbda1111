/*
 * base64.h — the server's one base64 codec (RFC 4648).
 *
 * Default: the alphabet of RFC 4648 4 ("+/") with '=' padding, as SASL
 * (RFC 6120 6.4.2, RFC 5802), XEP-0178 authzids, XEP-0115 'ver' strings and
 * vCard BINVAL (XEP-0054) use it.  XD_BASE64_URL selects the alphabet of
 * RFC 4648 5 ("-_") without padding (RFC 4648 3.2: the length is known),
 * for identifiers that go into attributes and URLs (XEP-0359 stanza ids).
 *
 * Decoding is strict (RFC 4648 3.3, 3.5): only characters of the alphabet,
 * no line breaks or other white space unless XD_BASE64_WS says so, padding
 * exactly where RFC 4648 4 puts it ('=' only as the last one or two
 * characters of a text whose length is a multiple of 4; none with
 * XD_BASE64_URL, whose length must then not be 1 modulo 4), and the unused
 * bits of the last character zero, so that every byte string has exactly
 * one text.  Characters are mapped without table look-ups or branches on
 * their value, so decoding a password (SASL PLAIN) does not leak it through
 * the cache.
 *
 * Pure functions of their arguments: any thread, no allocation.
 */
#ifndef XMPPD_BASE64_H
#define XMPPD_BASE64_H

#include <stddef.h>

#define XD_BASE64_URL 0x1u /* RFC 4648 5 alphabet, no padding (encode and decode) */
#define XD_BASE64_WS 0x2u  /* decode: skip XML white space (SP, HT, CR, LF) anywhere, as
                              in line-folded vCard BINVAL; encode: ignored */

/* Characters the encoding of n bytes takes, without the NUL. */
size_t xd_base64_encoded_len(size_t n, unsigned flags);

/* Writes the encoding of in[0..n) and a NUL to out, which has room for
 * xd_base64_encoded_len(n, flags) + 1 characters; returns the length.
 * in may be NULL when n is 0. */
size_t xd_base64_encode(const void *in, size_t n, char *out, unsigned flags);

/* The most bytes a text of len characters can decode to (an upper bound for
 * sizing `out`: white space and padding make the real count smaller). */
size_t xd_base64_decoded_max(size_t len);

/* Decodes in[0..len) into out (cap bytes); *outlen gets the byte count.
 * The empty text is zero bytes.  0; XD_EINVAL when the text is not
 * canonical base64 as described above (out may then hold garbage);
 * XD_ELIMIT when it is but the bytes do not fit in cap (nothing past
 * out[cap - 1] is written).  outlen may be NULL. */
int xd_base64_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen,
                     unsigned flags);

#endif
