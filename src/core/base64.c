/*
 * base64.c — RFC 4648 base64 (see include/xmppd/base64.h).
 *
 * Characters and 6-bit values are converted with masks instead of a table
 * or branches on the value (the masks below are 0xff or 0): the data may be
 * a password, and a table look-up indexed by it would show in the cache.
 * The decoder branches only on what a text's shape shows anyway: validity,
 * '=' and, with XD_BASE64_WS, white space.
 */
#include <stdbool.h>
#include <stdint.h>

#include "xmppd/assert.h"
#include "xmppd/base64.h"
#include "xmppd/err.h"

/* 0xff when a < b, else 0; a and b below 256. */
static inline unsigned
b64_lt(unsigned a, unsigned b)
{
    return ((a - b) >> 8) & 0xffu;
}

/* 0xff when a == b, else 0; a and b below 256. */
static inline unsigned
b64_eq(unsigned a, unsigned b)
{
    return b64_lt(a ^ b, 1);
}

/* 0xff when lo <= a <= hi, else 0. */
static inline unsigned
b64_in(unsigned a, unsigned lo, unsigned hi)
{
    return (b64_lt(a, lo) | b64_lt(hi, a)) ^ 0xffu;
}

/* The character of the 6-bit value v. */
static inline char
b64_char(unsigned v, bool url)
{
    unsigned c62 = url ? '-' : '+', c63 = url ? '_' : '/';
    return (char)((b64_in(v, 0, 25) & (v + 'A')) | (b64_in(v, 26, 51) & (v - 26 + 'a')) |
                  (b64_in(v, 52, 61) & (v - 52 + '0')) | (b64_eq(v, 62) & c62) |
                  (b64_eq(v, 63) & c63));
}

/* The 6-bit value of character c, or a value above 63 when c is not in the
 * alphabet. */
static inline unsigned
b64_value(unsigned c, bool url)
{
    unsigned c62 = url ? '-' : '+', c63 = url ? '_' : '/';
    unsigned up = b64_in(c, 'A', 'Z'), lo = b64_in(c, 'a', 'z'), dig = b64_in(c, '0', '9');
    unsigned s62 = b64_eq(c, c62), s63 = b64_eq(c, c63);
    unsigned v = (up & (c - 'A')) | (lo & (c - 'a' + 26)) | (dig & (c - '0' + 52)) |
                 (s62 & 62) | (s63 & 63);
    return v | (((up | lo | dig | s62 | s63) ^ 0xffu) << 1);
}

size_t
xd_base64_encoded_len(size_t n, unsigned flags)
{
    XD_ASSERT(n / 3 < SIZE_MAX / 4 - 1);
    if (flags & XD_BASE64_URL)
        return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
    return (n + 2) / 3 * 4;
}

size_t
xd_base64_encode(const void *in, size_t n, char *out, unsigned flags)
{
    const unsigned char *p = in;
    bool url = flags & XD_BASE64_URL;
    size_t o = 0, i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64_char(v >> 18, url);
        out[o++] = b64_char(v >> 12 & 63, url);
        out[o++] = b64_char(v >> 6 & 63, url);
        out[o++] = b64_char(v & 63, url);
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)p[i] << 16 | (n - i == 2 ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = b64_char(v >> 18, url);
        out[o++] = b64_char(v >> 12 & 63, url);
        if (n - i == 2)
            out[o++] = b64_char(v >> 6 & 63, url);
        else if (!url)
            out[o++] = '=';
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

size_t
xd_base64_decoded_max(size_t len)
{
    return len / 4 * 3 + (len % 4 >= 2 ? len % 4 - 1 : 0);
}

int
xd_base64_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen,
                 unsigned flags)
{
    const unsigned char *p = (const unsigned char *)in;
    unsigned char *dst = out;
    bool url = flags & XD_BASE64_URL, ws = flags & XD_BASE64_WS;
    uint32_t acc = 0; /* the sextets of the quantum so far */
    unsigned d = 0;   /* how many (0..3) */
    unsigned pad = 0; /* '=' seen */
    size_t o = 0;     /* bytes decoded (may pass cap: then only counted) */

    for (size_t i = 0; i < len; i++) {
        unsigned c = p[i];
        if (ws && (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
            continue;
        if (c == '=' && !url) {
            /* RFC 4648 4: "xx==" or "xxx=" closes the text. */
            if (d < 2 || d + pad >= 4)
                return XD_EINVAL;
            pad++;
            continue;
        }
        unsigned v = b64_value(c, url);
        if (v > 63 || pad > 0)
            return XD_EINVAL;
        acc = acc << 6 | v;
        if (++d == 4) {
            for (int k = 16; k >= 0; k -= 8, o++)
                if (o < cap)
                    dst[o] = (unsigned char)(acc >> k);
            acc = 0;
            d = 0;
        }
    }
    if (url ? d == 1 : (pad > 0 ? d + pad != 4 : d != 0))
        return XD_EINVAL;
    if (d > 0) {
        /* 2 characters carry 1 byte and 4 spare bits, 3 carry 2 bytes and 2
         * spare bits; RFC 4648 3.5: canonical only, the spare bits are 0. */
        unsigned spare = d == 2 ? 4 : 2;
        if (acc & ((1u << spare) - 1))
            return XD_EINVAL;
        acc >>= spare;
        for (int k = 8 * ((int)d - 2); k >= 0; k -= 8, o++)
            if (o < cap)
                dst[o] = (unsigned char)(acc >> k);
    }
    if (o > cap)
        return XD_ELIMIT;
    if (outlen != NULL)
        *outlen = o;
    return 0;
}
