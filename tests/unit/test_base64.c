/*
 * test_base64.c — the base64 codec (include/xmppd/base64.h): the RFC 4648
 * 10 vectors both ways in both alphabets, padding and its misuse, every
 * byte value as a character, white space, truncation, output capacity, the
 * empty text, and all 256 byte values round-tripped (the standard alphabet
 * checked against OpenSSL's encoder).
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

#include "xmppd/base64.h"
#include "xmppd/err.h"

#define URL XD_BASE64_URL
#define WS XD_BASE64_WS

static const struct {
    const char *raw, *std, *url;
} rfc4648[] = {
    /* RFC 4648 10; the URL column is the same without padding. */
    { "", "", "" },
    { "f", "Zg==", "Zg" },
    { "fo", "Zm8=", "Zm8" },
    { "foo", "Zm9v", "Zm9v" },
    { "foob", "Zm9vYg==", "Zm9vYg" },
    { "fooba", "Zm9vYmE=", "Zm9vYmE" },
    { "foobar", "Zm9vYmFy", "Zm9vYmFy" },
};

/* Decodes the NUL-terminated s with flags; the status, and the bytes in
 * out / *n on success. */
static int
dec(const char *s, unsigned flags, char *out, size_t cap, size_t *n)
{
    return xd_base64_decode(s, strlen(s), out, cap, n, flags);
}

/* s must be refused as not base64 under flags. */
static void
bad(const char *s, unsigned flags)
{
    char out[64];
    size_t n = 12345;
    int rc = dec(s, flags, out, sizeof out, &n);
    if (rc != XD_EINVAL)
        fail_msg("\"%s\" (flags %u): expected XD_EINVAL, got %d", s, flags, rc);
    assert_int_equal(n, 12345); /* *outlen untouched on failure */
}

/* s must decode under flags to the NUL-terminated want. */
static void
good(const char *s, unsigned flags, const char *want)
{
    char out[64];
    size_t n = 0;
    int rc = dec(s, flags, out, sizeof out, &n);
    if (rc != 0)
        fail_msg("\"%s\" (flags %u): expected success, got %d", s, flags, rc);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
}

static void
test_base64__rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
        const char *raw = rfc4648[i].raw;
        size_t n = strlen(raw);
        char out[32];
        memset(out, 'x', sizeof out);
        assert_int_equal(xd_base64_encoded_len(n, 0), strlen(rfc4648[i].std));
        assert_int_equal(xd_base64_encode(raw, n, out, 0), strlen(rfc4648[i].std));
        assert_string_equal(out, rfc4648[i].std);
        memset(out, 'x', sizeof out);
        assert_int_equal(xd_base64_encoded_len(n, URL), strlen(rfc4648[i].url));
        assert_int_equal(xd_base64_encode(raw, n, out, URL), strlen(rfc4648[i].url));
        assert_string_equal(out, rfc4648[i].url);

        good(rfc4648[i].std, 0, raw);
        good(rfc4648[i].url, URL, raw);
        good(rfc4648[i].std, WS, raw);
        assert_true(xd_base64_decoded_max(strlen(rfc4648[i].std)) >= n);
        assert_int_equal(xd_base64_decoded_max(strlen(rfc4648[i].url)), n);
    }
    /* The two alphabets differ in 62 and 63 only. */
    const unsigned char hi[] = { 0xfb, 0xef, 0xbe, 0xff };
    char out[16];
    xd_base64_encode(hi, 3, out, 0);
    assert_string_equal(out, "++++");
    xd_base64_encode(hi, 3, out, URL);
    assert_string_equal(out, "----");
    xd_base64_encode(hi + 3, 1, out, 0);
    assert_string_equal(out, "/w==");
    xd_base64_encode(hi + 3, 1, out, URL);
    assert_string_equal(out, "_w");
    good("/w==", 0, "\xff");
    good("_w", URL, "\xff");
    bad("_w==", 0);
    bad("/w", URL);
    bad("++++", URL);
    bad("----", 0);
}

static void
test_base64__padding(void **state)
{
    (void)state;
    /* Required in the standard alphabet, in full, at the end only. */
    bad("Zg", 0);
    bad("Zg=", 0);
    bad("Zg===", 0);
    bad("Zm8", 0);
    bad("Zm8==", 0);
    bad("Zm9v=", 0);
    bad("Zm9v====", 0);
    bad("Z===", 0);
    bad("=", 0);
    bad("==", 0);
    bad("====", 0);
    bad("=Zg=", 0);
    bad("Z=g=", 0);
    bad("Zg=a", 0);
    bad("Zg==Zg==", 0); /* two texts run together */
    bad("Zm8=Zm9v", 0);
    bad("Zg==\n", 0);
    /* Never in the URL alphabet. */
    bad("Zg==", URL);
    bad("Zm8=", URL);
    bad("=", URL);
    /* RFC 4648 3.5: the spare bits under the padding must be zero. */
    bad("Zh==", 0);
    bad("Zv==", 0);
    bad("Zm9=", 0);
    bad("Zm/=", 0);
    bad("Zh", URL);
    bad("Zm9", URL);
    good("Zg==", 0, "f");
    good("Zm8=", 0, "fo");
}

static void
test_base64__every_character(void **state)
{
    (void)state;
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (unsigned c = 0; c < 256; c++) {
        for (int u = 0; u < 2; u++) {
            const char *abc = u ? url : std;
            const char *hit = c ? memchr(abc, (int)c, 64) : NULL;
            if (c == '=' && !u)
                continue; /* padding: test_base64__padding */
            for (int pos = 0; pos < 4; pos++) {
                /* c at pos of "AAAA" (all-zero bits): value v there. */
                char text[4] = { 'A', 'A', 'A', 'A' };
                text[pos] = (char)c;
                unsigned char out[3] = { 0x55, 0x55, 0x55 };
                size_t n = 0;
                int rc = xd_base64_decode(text, 4, out, sizeof out, &n, u ? URL : 0);
                if (!hit) {
                    if (rc != XD_EINVAL)
                        fail_msg("byte 0x%02x at %d (url %d) accepted", c, pos, u);
                    continue;
                }
                assert_int_equal(rc, 0);
                assert_int_equal(n, 3);
                unsigned v = (unsigned)(hit - abc);
                uint32_t bits = (uint32_t)v << (6 * (3 - pos));
                assert_int_equal(out[0], (bits >> 16) & 0xff);
                assert_int_equal(out[1], (bits >> 8) & 0xff);
                assert_int_equal(out[2], bits & 0xff);
            }
        }
    }
    /* A NUL inside the given length is a character like any other. */
    char out[8];
    assert_int_equal(xd_base64_decode("Zm9v\0Zm9v", 9, out, sizeof out, NULL, 0), XD_EINVAL);
    /* Only the given length is read. */
    size_t n = 0;
    assert_int_equal(xd_base64_decode("Zm9v!!!!", 4, out, sizeof out, &n, 0), 0);
    assert_int_equal(n, 3);
}

static void
test_base64__white_space(void **state)
{
    (void)state;
    /* RFC 6120 6.4.2: none in SASL data, so none by default. */
    bad(" Zm9v", 0);
    bad("Zm9v ", 0);
    bad("Zm9v\nYmFy", 0);
    bad("Zm9v\r\nYmFy", 0);
    bad("Zm\t9v", 0);
    /* XD_BASE64_WS: XML white space anywhere (vCard BINVAL line folding). */
    good("Zm9v\nYmFy", WS, "foobar");
    good("  Zm9v\r\n  YmFy\r\n", WS, "foobar");
    good("Z m 9 v Y g = =", WS, "foob");
    good("Zm9vYg=\n=\n", WS, "foob");
    good(" \t\r\n", WS, "");
    good("Zm\n9v", WS | URL, "foo");
    /* ... and only XML white space. */
    bad("Zm9v\vYmFy", WS);
    bad("Zm9v\fYmFy", WS);
    bad("Zm9v\x85YmFy", WS);
    /* Padding rules are not loosened. */
    bad("Zg\n", WS);
    bad("Zg== Zg==", WS);
    bad("Zg=\n=\n=", WS);
}

static void
test_base64__truncated(void **state)
{
    (void)state;
    static const char full[] = "Zm9vYmFy";
    for (size_t len = 1; len < 8; len++) {
        char text[8];
        memcpy(text, full, len);
        char out[8];
        size_t n = 0;
        /* Standard: every length but 8 (and 4) is cut. */
        int rc = xd_base64_decode(text, len, out, sizeof out, &n, 0);
        assert_int_equal(rc, len == 4 ? 0 : XD_EINVAL);
        /* URL: a length of 1 mod 4 cannot be; 2 and 3 must end on zero bits. */
        rc = xd_base64_decode(text, len, out, sizeof out, &n, URL);
        if (len % 4 == 1)
            assert_int_equal(rc, XD_EINVAL);
        else if (rc == 0)
            assert_int_equal(n, len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0));
    }
    good("Zm9vYg", URL, "foob");
    bad("Zm9vY", URL);
    bad("Z", URL);
    bad("Z", 0);
    bad("Zm9vY", 0);
    bad("Zm9vYm", 0);
    bad("Zm9vYmF", 0);
}

static void
test_base64__capacity(void **state)
{
    (void)state;
    unsigned char out[8];
    size_t n = 99;
    /* "foobar" needs 6 bytes: 5 is too few, and nothing past out[4] changes. */
    memset(out, 0xee, sizeof out);
    assert_int_equal(xd_base64_decode("Zm9vYmFy", 8, out, 5, &n, 0), XD_ELIMIT);
    assert_int_equal(n, 99);
    assert_int_equal(out[5], 0xee);
    assert_int_equal(out[6], 0xee);
    assert_int_equal(xd_base64_decode("Zm9vYmFy", 8, out, 6, &n, 0), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "foobar", 6);
    /* A partial last quantum counts only its real bytes. */
    memset(out, 0xee, sizeof out);
    assert_int_equal(xd_base64_decode("Zm9vYg==", 8, out, 3, &n, 0), XD_ELIMIT);
    assert_int_equal(out[3], 0xee);
    assert_int_equal(xd_base64_decode("Zm9vYg==", 8, out, 4, &n, 0), 0);
    assert_int_equal(n, 4);
    assert_int_equal(out[4], 0xee);
    assert_int_equal(xd_base64_decode("Zm9vYmE", 7, out, 4, &n, URL), XD_ELIMIT);
    assert_int_equal(xd_base64_decode("Zm9vYmE", 7, out, 5, &n, URL), 0);
    assert_int_equal(n, 5);
    /* No room at all: nothing is written (out may be NULL). */
    assert_int_equal(xd_base64_decode("Zg==", 4, NULL, 0, &n, 0), XD_ELIMIT);
    /* Bad text is XD_EINVAL whatever the room. */
    assert_int_equal(xd_base64_decode("Zm9vYm!y", 8, out, 2, &n, 0), XD_EINVAL);
    assert_int_equal(xd_base64_decode("Zm9vYh==", 8, out, 2, &n, 0), XD_EINVAL);
}

static void
test_base64__empty(void **state)
{
    (void)state;
    char out[4] = "xyz";
    assert_int_equal(xd_base64_encoded_len(0, 0), 0);
    assert_int_equal(xd_base64_encoded_len(0, URL), 0);
    assert_int_equal(xd_base64_encode(NULL, 0, out, 0), 0);
    assert_string_equal(out, "");
    assert_int_equal(xd_base64_decoded_max(0), 0);
    size_t n = 7;
    assert_int_equal(xd_base64_decode("", 0, NULL, 0, &n, 0), 0);
    assert_int_equal(n, 0);
    n = 7;
    assert_int_equal(xd_base64_decode(NULL, 0, NULL, 0, &n, URL), 0);
    assert_int_equal(n, 0);
    assert_int_equal(xd_base64_decode("", 0, NULL, 0, NULL, 0), 0);
}

static void
test_base64__all_bytes_round_trip(void **state)
{
    (void)state;
    unsigned char raw[256], back[256];
    char text[400], ref[400];
    for (int i = 0; i < 256; i++)
        raw[i] = (unsigned char)(i * 167 + 13); /* a permutation: every value once */
    for (size_t off = 0; off < 3; off++) {
        for (size_t n = 0; off + n <= 256; n++) {
            const unsigned char *in = raw + off;
            /* Standard: as OpenSSL writes it. */
            size_t k = xd_base64_encode(in, n, text, 0);
            assert_int_equal(k, xd_base64_encoded_len(n, 0));
            assert_int_equal(strlen(text), k);
            int rk = EVP_EncodeBlock((unsigned char *)ref, in, (int)n);
            assert_int_equal((size_t)rk, k);
            assert_memory_equal(text, ref, k);
            size_t m = 0;
            assert_int_equal(xd_base64_decode(text, k, back, n, &m, 0), 0);
            assert_int_equal(m, n);
            assert_memory_equal(back, in, n);
            assert_true(xd_base64_decoded_max(k) >= n);

            /* URL: the same text with "-_" and no padding. */
            size_t ku = xd_base64_encode(in, n, text, URL);
            assert_int_equal(ku, xd_base64_encoded_len(n, URL));
            assert_int_equal(strlen(text), ku);
            size_t j = 0;
            for (; j < ku; j++) {
                char want = ref[j] == '+' ? '-' : ref[j] == '/' ? '_' : ref[j];
                assert_int_equal(text[j], want);
            }
            for (; j < k; j++)
                assert_int_equal(ref[j], '=');
            assert_int_equal(xd_base64_decode(text, ku, back, n, &m, URL), 0);
            assert_int_equal(m, n);
            assert_memory_equal(back, in, n);
            assert_int_equal(xd_base64_decoded_max(ku), n);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64__rfc4648_vectors),
        cmocka_unit_test(test_base64__padding),
        cmocka_unit_test(test_base64__every_character),
        cmocka_unit_test(test_base64__white_space),
        cmocka_unit_test(test_base64__truncated),
        cmocka_unit_test(test_base64__capacity),
        cmocka_unit_test(test_base64__empty),
        cmocka_unit_test(test_base64__all_bytes_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
