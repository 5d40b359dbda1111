/*
 * fuzz_jid.c — libFuzzer target for xd_jid_parse() (src/xmpp/jid.c).
 *
 * Where it sits: fuzz/, built by fuzz/meson.build when configured with
 * -Dfuzz=true and CC=clang; seeds in fuzz/corpus/jid/.
 *
 * For every input that parses, checks the invariants of include/xmppd/jid.h:
 * the parts respect the RFC 7622 length limits and are NUL-terminated,
 * the full and bare strings are made of the parts, and normalisation is a
 * fixed point: the full string, the bare string and xd_jid_make() on the
 * parts all give back the same JID.  Any violation aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xmppd/jid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FJ_CHECK(e) ((e) ? (void)0 : abort())

static void
fj_check_part(xd_str_t s, size_t max)
{
    FJ_CHECK(s.p != NULL);
    FJ_CHECK(s.len <= max);
    FJ_CHECK(s.p[s.len] == '\0');
    FJ_CHECK(memchr(s.p, '\0', s.len) == NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xd_jid_t *j = NULL;
    if (xd_jid_parse((xd_str_t){ (const char *)data, size }, &j) != 0) {
        FJ_CHECK(j == NULL);
        return 0;
    }
    FJ_CHECK(j != NULL);

    xd_str_t l = xd_jid_local(j), d = xd_jid_domain(j), r = xd_jid_resource(j);
    xd_str_t b = xd_jid_bare_str(j), f = xd_jid_full_str(j);
    fj_check_part(l, XD_JID_PART_MAX);
    fj_check_part(d, XD_JID_PART_MAX);
    fj_check_part(r, XD_JID_PART_MAX);
    fj_check_part(b, XD_JID_PART_MAX * 2 + 1);
    fj_check_part(f, XD_JID_MAX);
    FJ_CHECK(d.len >= 1);
    FJ_CHECK(memchr(l.p, '@', l.len) == NULL && memchr(l.p, '/', l.len) == NULL);
    FJ_CHECK(memchr(d.p, '@', d.len) == NULL && memchr(d.p, '/', d.len) == NULL);
    FJ_CHECK(b.len == (l.len ? l.len + 1 : 0) + d.len);
    FJ_CHECK(f.len == b.len + (r.len ? r.len + 1 : 0));
    FJ_CHECK(memcmp(f.p, b.p, b.len) == 0);
    FJ_CHECK(xd_jid_is_bare(j) == (r.len == 0));

    /* Fixed point: the normalised full string parses to the same JID. */
    xd_jid_t *again = NULL;
    FJ_CHECK(xd_jid_parse(f, &again) == 0);
    FJ_CHECK(xd_jid_eq(j, again));
    xd_jid_unref(again);

    /* The same parts through xd_jid_make(). */
    FJ_CHECK(xd_jid_make(l, d, r, &again) == 0);
    FJ_CHECK(xd_jid_eq(j, again));
    xd_jid_unref(again);

    /* The bare JID. */
    xd_jid_t *bare = xd_jid_bare(j);
    FJ_CHECK(xd_jid_is_bare(bare) && xd_jid_eq_bare(bare, j));
    FJ_CHECK(xd_jid_parse(b, &again) == 0);
    FJ_CHECK(xd_jid_eq(bare, again));
    xd_jid_unref(again);
    xd_jid_unref(bare);

    xd_jid_unref(j);
    return 0;
}
