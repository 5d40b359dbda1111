/*
 * jid.c — XMPP addresses (JIDs), RFC 7622, with the PRECIS profiles of
 * RFC 8264 / RFC 8265 and IDNA2008 (UTS-46 mapping) for domains.
 *
 * Where it sits: src/xmpp/, implements include/xmppd/jid.h.  Every stanza's
 * 'to' and 'from' goes through xd_jid_parse(), so the common case (ASCII
 * localpart, LDH domain, ASCII resource) runs on a fast path that makes no
 * libunistring or libidn2 call; anything else takes the full path below.
 *
 *   input ──► split (RFC7622 3.1) ──► localpart: UsernameCaseMapped (RFC8265 3.3)
 *                                 ├─► domainpart: IP literal | IDNA2008 per label
 *                                 └─► resourcepart: OpaqueString (RFC8265 4.2)
 *         ──► one allocation: refcount + "full\0" ["bare\0"] ["local\0"]
 *
 * Invariants:
 *  - An xd_jid_t is immutable after jid_build() and shared between threads;
 *    only `refs` changes, atomically.  It is freed when `refs` drops to 0.
 *  - Every part is stored in its normalised form: preparing a stored part
 *    again yields the same bytes (the PRECIS mapping is iterated until it is
 *    stable, RFC8264 7), so comparing JIDs is comparing bytes.
 *  - 1 <= domain_len <= 1023; local_len, res_len <= 1023 (0 = absent);
 *    full_len <= 3071.  The localpart contains none of "&'/:<>@ and the
 *    domain contains no '@' or '/', so the full string re-parses to the
 *    same parts.
 *  - Every string handed out (full, bare, local, domain, resource) is
 *    NUL-terminated inside `buf`.
 *
 * Choices the RFCs leave open, made here:
 *  - Part length limits apply to the prepared (normalised) part; the whole
 *    input is limited to 3071 bytes before any work is done.
 *  - Domain labels are processed one at a time (ASCII '.', U+3002, U+FF0E
 *    and U+FF61 separate labels), so the 1023-byte limit of RFC 7622 applies
 *    rather than the 253-byte DNS limit.  ASCII labels must be LDH (no '_');
 *    a label with "--" in positions 3-4 that is not "xn--" is accepted as a
 *    plain host name label.  A last label that is all digits is accepted
 *    only when the whole domain is a canonical dotted-quad IPv4 address.
 */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <idn2.h>
#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"

#define JID_LABEL_MAX 63       /* RFC 1035 2.3.4: octets per label (A-label form) */
#define JID_PRECIS_ROUNDS 4    /* RFC 8264 7: first application + 3 re-applications */

struct xd_jid {
    atomic_uint refs;   /* references; the last xd_jid_unref() frees the JID */
    uint16_t local_len; /* normalised localpart bytes; 0 = absent */
    uint16_t domain_len; /* normalised domainpart bytes; >= 1 */
    uint16_t res_len;   /* normalised resourcepart bytes; 0 = absent */
    uint16_t full_len;  /* bytes of the full string at buf[0] */
    uint16_t bare_off;  /* offset of the NUL-terminated bare string (0 when bare) */
    uint16_t local_off; /* offset of the NUL-terminated localpart copy, or of
                         * the full string's NUL when there is no localpart */
    char buf[];         /* "full\0" ["bare\0" if resource] ["local\0" if local] */
};

/* ======================================================================== */
/* Small helpers                                                             */
/* ======================================================================== */

static bool
jid_is_ascii(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)p[i] & 0x80)
            return false;
    }
    return true;
}

/* Valid UTF-8 (no surrogates, nothing above U+10FFFF, no overlongs). */
static bool
jid_utf8_ok(const char *p, size_t n)
{
    if (jid_is_ascii(p, n))
        return true;
    return u8_check((const uint8_t *)p, n) == NULL;
}

/* libunistring returns malloc()ed memory, or NULL with errno = ENOMEM.
 * Allocation never fails in xmppd (alloc.h), so neither may this. */
static void *
jid_unistring_ok(void *p)
{
    XD_ASSERT(p != NULL);
    return p;
}

static bool
jid_u32_eq(const uint32_t *a, size_t an, const uint32_t *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an * sizeof *a) == 0);
}

/* ======================================================================== */
/* PRECIS: derived property (RFC 8264 9) and contextual rules (RFC 5892 A)   */
/* ======================================================================== */

enum pr_prop {
    PR_PVALID,     /* allowed in both classes */
    PR_FREE_PVAL,  /* ID_DIS in IdentifierClass, FREE_PVAL in FreeformClass */
    PR_CONTEXTJ,   /* allowed if the RFC 5892 A.1/A.2 rule holds */
    PR_CONTEXTO,   /* allowed if the RFC 5892 A.3-A.9 rule holds */
    PR_DISALLOWED, /* never allowed */
    PR_UNASSIGNED, /* not assigned in our Unicode version: never allowed */
};

/* RFC 5892 2.6 (Exceptions), reused by RFC 8264 9.1.  Returns -1 for a code
 * point that is not an exception. */
static int
pr_exception(ucs4_t cp)
{
    switch (cp) {
    case 0x00DF: case 0x03C2: case 0x06FD: case 0x06FE: case 0x0F0B: case 0x3007:
        return PR_PVALID;
    case 0x00B7: case 0x0375: case 0x05F3: case 0x05F4: case 0x30FB:
        return PR_CONTEXTO;
    case 0x0640: case 0x07FA: case 0x302E: case 0x302F: case 0x303B:
        return PR_DISALLOWED;
    default:
        break;
    }
    if ((cp >= 0x0660 && cp <= 0x0669) || (cp >= 0x06F0 && cp <= 0x06F9))
        return PR_CONTEXTO;
    if (cp >= 0x3031 && cp <= 0x3035)
        return PR_DISALLOWED;
    return -1;
}

/* RFC 8264 9.9 OldHangulJamo: Hangul_Syllable_Type L, V or T. */
static bool
pr_old_hangul_jamo(ucs4_t cp)
{
    return (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xA960 && cp <= 0xA97C) ||
           (cp >= 0xD7B0 && cp <= 0xD7C6) || (cp >= 0xD7CB && cp <= 0xD7FB);
}

/* RFC 8264 9.17 HasCompat: toNFKC(cp) != cp. */
static bool
pr_has_compat(ucs4_t cp)
{
    ucs4_t dec[UC_DECOMPOSITION_MAX_LENGTH];
    int tag;

    if (uc_decomposition(cp, &tag, dec) < 0)
        return false; /* no decomposition: NFKC of a lone code point is itself */
    if (tag != UC_DECOMP_CANONICAL)
        return true;
    /* A canonical decomposition may still change under NFKC (singletons such
     * as U+212B, or parts with compatibility mappings such as U+1E9B). */
    uint32_t buf[UC_DECOMPOSITION_MAX_LENGTH];
    size_t len = UC_DECOMPOSITION_MAX_LENGTH;
    uint32_t *r = jid_unistring_ok(u32_normalize(UNINORM_NFKC, &cp, 1, buf, &len));
    bool changed = !(len == 1 && r[0] == cp);
    if (r != buf)
        free(r);
    return changed;
}

/* The derived property of one code point, RFC 8264 9 (in that order). */
static enum pr_prop
pr_derive(ucs4_t cp)
{
    int ex = pr_exception(cp);
    if (ex >= 0)
        return (enum pr_prop)ex;
    /* BackwardCompatible (9.2) is empty. */
    if (uc_is_general_category(cp, UC_CATEGORY_Cn) && !uc_is_property_not_a_character(cp))
        return PR_UNASSIGNED;
    if (cp >= 0x21 && cp <= 0x7E)
        return PR_PVALID; /* ASCII7 */
    if (cp == 0x200C || cp == 0x200D)
        return PR_CONTEXTJ; /* JoinControl */
    if (pr_old_hangul_jamo(cp))
        return PR_DISALLOWED;
    if (uc_is_property_default_ignorable_code_point(cp) || uc_is_property_not_a_character(cp))
        return PR_DISALLOWED; /* PrecisIgnorableProperties */
    const char *gc = uc_general_category_name(uc_general_category(cp));
    if (gc == NULL || gc[0] == '\0')
        return PR_DISALLOWED;
    if (gc[0] == 'C' && gc[1] == 'c')
        return PR_DISALLOWED; /* Controls */
    if (pr_has_compat(cp))
        return PR_FREE_PVAL;
    switch (gc[0]) {
    case 'L': /* LetterDigits: Ll Lu Lo Lm; OtherLetterDigits: Lt */
        return gc[1] == 't' ? PR_FREE_PVAL : PR_PVALID;
    case 'M': /* LetterDigits: Mn Mc; OtherLetterDigits: Me */
        return gc[1] == 'e' ? PR_FREE_PVAL : PR_PVALID;
    case 'N': /* LetterDigits: Nd; OtherLetterDigits: Nl No */
        return gc[1] == 'd' ? PR_PVALID : PR_FREE_PVAL;
    case 'Z': /* Spaces: Zs only; Zl and Zp fall through to DISALLOWED */
        return gc[1] == 's' ? PR_FREE_PVAL : PR_DISALLOWED;
    case 'S': /* Symbols */
    case 'P': /* Punctuation */
        return PR_FREE_PVAL;
    default:
        return PR_DISALLOWED;
    }
}

static bool
pr_script_is(ucs4_t cp, const char *name)
{
    const uc_script_t *sc = uc_script(cp);
    return sc != NULL && strcmp(sc->name, name) == 0;
}

/* RFC 5892 A.1 (ZERO WIDTH NON-JOINER) and A.2 (ZERO WIDTH JOINER). */
static bool
pr_context_j(const uint32_t *s, size_t n, size_t i)
{
    if (i > 0 && uc_combining_class(s[i - 1]) == UC_CCC_VR)
        return true;
    if (s[i] != 0x200C)
        return false;
    /* (Joining_Type:{L,D})(Joining_Type:T)* ZWNJ (Joining_Type:T)*(Joining_Type:{R,D}) */
    size_t j = i;
    while (j > 0 && uc_joining_type(s[j - 1]) == UC_JOINING_TYPE_T)
        j--;
    if (j == 0)
        return false;
    int jt = uc_joining_type(s[j - 1]);
    if (jt != UC_JOINING_TYPE_L && jt != UC_JOINING_TYPE_D)
        return false;
    size_t k = i + 1;
    while (k < n && uc_joining_type(s[k]) == UC_JOINING_TYPE_T)
        k++;
    if (k == n)
        return false;
    jt = uc_joining_type(s[k]);
    return jt == UC_JOINING_TYPE_R || jt == UC_JOINING_TYPE_D;
}

/* RFC 5892 A.3-A.9. */
static bool
pr_context_o(const uint32_t *s, size_t n, size_t i)
{
    ucs4_t cp = s[i];

    if (cp == 0x00B7) /* A.3 MIDDLE DOT: between two 'l' (Catalan l·l) */
        return i > 0 && i + 1 < n && s[i - 1] == 0x006C && s[i + 1] == 0x006C;
    if (cp == 0x0375) /* A.4 GREEK KERAIA: followed by Greek */
        return i + 1 < n && pr_script_is(s[i + 1], "Greek");
    if (cp == 0x05F3 || cp == 0x05F4) /* A.5, A.6 HEBREW GERESH / GERSHAYIM */
        return i > 0 && pr_script_is(s[i - 1], "Hebrew");
    if (cp == 0x30FB) { /* A.7 KATAKANA MIDDLE DOT: some Hiragana, Katakana or Han */
        for (size_t j = 0; j < n; j++) {
            if (s[j] != 0x30FB && (pr_script_is(s[j], "Hiragana") ||
                                   pr_script_is(s[j], "Katakana") || pr_script_is(s[j], "Han")))
                return true;
        }
        return false;
    }
    if (cp >= 0x0660 && cp <= 0x0669) { /* A.8 ARABIC-INDIC DIGITS: no extended ones */
        for (size_t j = 0; j < n; j++) {
            if (s[j] >= 0x06F0 && s[j] <= 0x06F9)
                return false;
        }
        return true;
    }
    if (cp >= 0x06F0 && cp <= 0x06F9) { /* A.9 EXTENDED ARABIC-INDIC DIGITS */
        for (size_t j = 0; j < n; j++) {
            if (s[j] >= 0x0660 && s[j] <= 0x0669)
                return false;
        }
        return true;
    }
    return false;
}

/* RFC 5893 2, the Bidi Rule, for a string that contains a right-to-left
 * code point (R, AL or AN); other strings need no check (RFC8265 3.3.3).
 * Such a string fails rule 5 if it starts with L, so it must be an RTL
 * label: rules 1-4. */
static bool
pr_bidi_ok(const uint32_t *s, size_t n)
{
    bool rtl = false;
    for (size_t i = 0; i < n && !rtl; i++) {
        int bc = uc_bidi_class(s[i]);
        rtl = bc == UC_BIDI_R || bc == UC_BIDI_AL || bc == UC_BIDI_AN;
    }
    if (!rtl)
        return true;
    int first = uc_bidi_class(s[0]);
    if (first != UC_BIDI_R && first != UC_BIDI_AL)
        return false; /* rule 1, or rule 5 for an L-first string */
    bool has_en = false, has_an = false;
    for (size_t i = 0; i < n; i++) {
        switch (uc_bidi_class(s[i])) { /* rule 2 */
        case UC_BIDI_EN: has_en = true; break;
        case UC_BIDI_AN: has_an = true; break;
        case UC_BIDI_R: case UC_BIDI_AL: case UC_BIDI_ES: case UC_BIDI_CS:
        case UC_BIDI_ET: case UC_BIDI_ON: case UC_BIDI_BN: case UC_BIDI_NSM:
            break;
        default:
            return false;
        }
    }
    if (has_en && has_an)
        return false; /* rule 4 */
    size_t last = n;
    while (last > 0 && uc_bidi_class(s[last - 1]) == UC_BIDI_NSM)
        last--;
    if (last == 0)
        return false;
    int lc = uc_bidi_class(s[last - 1]); /* rule 3 */
    return lc == UC_BIDI_R || lc == UC_BIDI_AL || lc == UC_BIDI_EN || lc == UC_BIDI_AN;
}

/* RFC 7622 3.3.1: characters a localpart must not contain, after preparation. */
static bool
jid_local_prohibited(unsigned c)
{
    switch (c) {
    case '"': case '&': case '\'': case '/': case ':': case '<': case '>': case '@':
        return true;
    default:
        return false;
    }
}

/* Checks a prepared string against IdentifierClass (ident) or
 * FreeformClass, the contextual rules and, for the localpart, the Bidi Rule
 * and the RFC 7622 3.3.1 prohibitions. */
static bool
pr_check(bool ident, const uint32_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (pr_derive(s[i])) {
        case PR_PVALID:
            break;
        case PR_FREE_PVAL:
            if (ident)
                return false;
            break;
        case PR_CONTEXTJ:
            if (!pr_context_j(s, n, i))
                return false;
            break;
        case PR_CONTEXTO:
            if (!pr_context_o(s, n, i))
                return false;
            break;
        case PR_DISALLOWED:
        case PR_UNASSIGNED:
        default:
            return false;
        }
        if (ident && jid_local_prohibited(s[i]))
            return false;
    }
    return !ident || pr_bidi_ok(s, n);
}

/* ======================================================================== */
/* PRECIS mappings (RFC 8265 3.3.2 and 4.2.2)                                */
/* ======================================================================== */

/* One application of the UsernameCaseMapped mappings: width mapping
 * (fullwidth/halfwidth to their decomposition), toLowerCase, NFC.
 * Returns a malloc()ed string. */
static uint32_t *
pr_map_username(const uint32_t *s, size_t n, size_t *out_n)
{
    size_t m = 0;
    ucs4_t dec[UC_DECOMPOSITION_MAX_LENGTH];
    int tag;

    for (size_t i = 0; i < n; i++) {
        int dl = uc_decomposition(s[i], &tag, dec);
        m += (dl > 0 && (tag == UC_DECOMP_WIDE || tag == UC_DECOMP_NARROW)) ? (size_t)dl : 1;
    }
    uint32_t *w = xd_malloc((m ? m : 1) * sizeof *w);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int dl = uc_decomposition(s[i], &tag, dec);
        if (dl > 0 && (tag == UC_DECOMP_WIDE || tag == UC_DECOMP_NARROW)) {
            memcpy(w + o, dec, (size_t)dl * sizeof *w);
            o += (size_t)dl;
        } else {
            w[o++] = s[i];
        }
    }
    /* RFC8265 3.3.2 rule 3: Unicode toLowerCase (not case folding, so "ß"
     * and final "ς" stay as they are), then rule 4: NFC. */
    uint32_t *r = jid_unistring_ok(u32_tolower(w, o, NULL, UNINORM_NFC, NULL, out_n));
    xd_free(w);
    return r;
}

/* One application of the OpaqueString mappings: non-ASCII spaces to U+0020
 * (RFC8265 4.2.2 rule 2), NFC (rule 4).  No width or case mapping. */
static uint32_t *
pr_map_opaque(const uint32_t *s, size_t n, size_t *out_n)
{
    uint32_t *w = xd_malloc((n ? n : 1) * sizeof *w);
    for (size_t i = 0; i < n; i++)
        w[i] = (s[i] > 0x7F && uc_is_general_category(s[i], UC_CATEGORY_Zs)) ? 0x20 : s[i];
    uint32_t *r = jid_unistring_ok(u32_normalize(UNINORM_NFC, w, n, NULL, out_n));
    xd_free(w);
    return r;
}

/* Applies a profile's mappings until the result is stable (RFC8264 7),
 * then checks it.  Returns the malloc()ed prepared string or NULL when the
 * string is not valid for the profile. */
static uint32_t *
pr_prepare(bool ident, const uint32_t *s, size_t n, size_t *out_n)
{
    size_t cur_n, next_n;
    uint32_t *cur = ident ? pr_map_username(s, n, &cur_n) : pr_map_opaque(s, n, &cur_n);

    for (int round = 1; round < JID_PRECIS_ROUNDS; round++) {
        uint32_t *next = ident ? pr_map_username(cur, cur_n, &next_n)
                               : pr_map_opaque(cur, cur_n, &next_n);
        bool stable = jid_u32_eq(cur, cur_n, next, next_n);
        free(cur);
        cur = next;
        cur_n = next_n;
        if (stable) {
            if (cur_n == 0 || !pr_check(ident, cur, cur_n))
                break;
            *out_n = cur_n;
            return cur;
        }
    }
    free(cur);
    return NULL;
}

/* The non-ASCII path for a localpart (ident) or resourcepart.  `p` is
 * valid UTF-8.  Writes at most XD_JID_PART_MAX bytes plus a NUL to `out`. */
static int
pr_prepare_u8(bool ident, const char *p, size_t n, char *out, size_t *out_len)
{
    size_t u32n, prep_n, u8n;
    uint32_t *u32 = jid_unistring_ok(u8_to_u32((const uint8_t *)p, n, NULL, &u32n));
    uint32_t *prep = pr_prepare(ident, u32, u32n, &prep_n);
    free(u32);
    if (prep == NULL)
        return ident ? XD_EJID_LOCAL_INVALID : XD_EJID_RES_INVALID;
    uint8_t *u8 = jid_unistring_ok(u32_to_u8(prep, prep_n, NULL, &u8n));
    free(prep);
    int rc = 0;
    if (u8n > XD_JID_PART_MAX) {
        rc = ident ? XD_EJID_LOCAL_TOO_LONG : XD_EJID_RES_TOO_LONG;
    } else {
        memcpy(out, u8, u8n);
        out[u8n] = '\0';
        *out_len = u8n;
    }
    free(u8);
    return rc;
}

/* ======================================================================== */
/* The three parts                                                           */
/* ======================================================================== */

/* RFC 7622 3.3: localpart, PRECIS UsernameCaseMapped (RFC 8265 3.3) plus
 * the 3.3.1 prohibitions.  `p` is valid UTF-8.  `out` holds
 * XD_JID_PART_MAX + 1 bytes. */
static int
jid_prep_local_part(const char *p, size_t n, char *out, size_t *out_len)
{
    if (n == 0)
        return XD_EJID_LOCAL_EMPTY;
    if (n > XD_JID_MAX)
        return XD_EJID_LOCAL_TOO_LONG; /* bounds the work; cannot shrink below 1023 */
    /* Fast path: ASCII.  ASCII7 (U+0021-U+007E) is PVALID, NFC and the width
     * mapping are the identity, toLowerCase is A-Z -> a-z, no RTL. */
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c & 0x80)
            break;
        if (c < 0x21 || c > 0x7E || jid_local_prohibited(c)) /* RFC7622 3.3.1 */
            return XD_EJID_LOCAL_INVALID;
    }
    if (i == n) {
        if (n > XD_JID_PART_MAX)
            return XD_EJID_LOCAL_TOO_LONG; /* RFC7622 3.3 */
        for (i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            out[i] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
        }
        out[n] = '\0';
        *out_len = n;
        return 0;
    }
    return pr_prepare_u8(true, p, n, out, out_len);
}

/* RFC 7622 3.4: resourcepart, PRECIS OpaqueString (RFC 8265 4.2). */
static int
jid_prep_res_part(const char *p, size_t n, char *out, size_t *out_len)
{
    if (n == 0)
        return XD_EJID_RES_EMPTY;
    if (n > XD_JID_MAX)
        return XD_EJID_RES_TOO_LONG;
    /* Fast path: printable ASCII and space are PVALID/FREE_PVAL and need
     * no mapping (the space is already U+0020); controls are DISALLOWED. */
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c & 0x80)
            break;
        if (c < 0x20 || c == 0x7F)
            return XD_EJID_RES_INVALID;
    }
    if (i == n) {
        if (n > XD_JID_PART_MAX)
            return XD_EJID_RES_TOO_LONG; /* RFC7622 3.4 */
        memcpy(out, p, n);
        out[n] = '\0';
        *out_len = n;
        return 0;
    }
    return pr_prepare_u8(false, p, n, out, out_len);
}

/* Appends `n` bytes to the domain being built in out[0..*o); the caller's
 * buffer holds XD_JID_PART_MAX + 1 bytes. */
static int
jid_dom_append(char *out, size_t *o, const char *p, size_t n)
{
    if (*o + n > XD_JID_PART_MAX)
        return XD_EJID_DOMAIN_TOO_LONG; /* RFC7622 3.2 */
    memcpy(out + *o, p, n);
    *o += n;
    return 0;
}

/* One ASCII label (from the input, or the output of IDNA mapping): LDH,
 * 1-63 octets, no leading or trailing hyphen; lower-cased.  An "xn--" label
 * must be a valid A-label and is stored as its U-label (RFC7622 3.2.2:
 * domains compare as U-labels). */
static int
jid_dom_ascii_label(const char *p, size_t n, char *out, size_t *o)
{
    char lab[JID_LABEL_MAX + 1];

    if (n == 0 || n > JID_LABEL_MAX)
        return XD_EJID_DOMAIN_INVALID; /* RFC 1035 2.3.4 */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return XD_EJID_DOMAIN_INVALID; /* LDH rule, RFC 5890 2.3.1; '_' too */
        lab[i] = (char)c;
    }
    lab[n] = '\0';
    if (lab[0] == '-' || lab[n - 1] == '-')
        return XD_EJID_DOMAIN_INVALID;
    if (n < 4 || memcmp(lab, "xn--", 4) != 0)
        return jid_dom_append(out, o, lab, n);

    /* An A-label: decode, then check that the U-label maps back to exactly
     * this A-label (RFC 5891 5.4 round trip; rejects fake A-labels). */
    char *ulabel = NULL, *again = NULL;
    int rc = XD_EJID_DOMAIN_INVALID;
    if (idn2_to_unicode_8z8z(lab, &ulabel, 0) == IDN2_OK &&
        idn2_lookup_u8((const uint8_t *)ulabel, (uint8_t **)&again,
                       IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) == IDN2_OK &&
        strcmp(again, lab) == 0 && !jid_is_ascii(ulabel, strlen(ulabel)))
        rc = jid_dom_append(out, o, ulabel, strlen(ulabel));
    idn2_free(ulabel);
    idn2_free(again);
    return rc;
}

/* One label with non-ASCII characters: IDNA2008 with the UTS-46
 * non-transitional mapping (which also lower-cases and maps width) via
 * libidn2, then the ASCII label rules on the result. */
static int
jid_dom_idna_label(const char *p, size_t n, char *out, size_t *o)
{
    /* ASCII inside a mixed label must already be LDH (or an upper-case
     * letter): libidn2 would otherwise carry '_' and friends through. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(c & 0x80) && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                             (c >= '0' && c <= '9') || c == '-'))
            return XD_EJID_DOMAIN_INVALID;
    }
    char *z = xd_strndup(p, n);
    char *alabel = NULL;
    int rc = XD_EJID_DOMAIN_INVALID;
    if (idn2_lookup_u8((const uint8_t *)z, (uint8_t **)&alabel,
                       IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) == IDN2_OK)
        rc = jid_dom_ascii_label(alabel, strlen(alabel), out, o);
    idn2_free(alabel);
    xd_free(z);
    return rc;
}

/* Length of an IDNA label separator at p[0..n): '.', U+3002 IDEOGRAPHIC
 * FULL STOP, U+FF0E FULLWIDTH FULL STOP, U+FF61 HALFWIDTH IDEOGRAPHIC FULL
 * STOP (RFC 3490 3.1, UTS-46 mapping); 0 if none. */
static size_t
jid_dom_separator(const unsigned char *p, size_t n)
{
    if (p[0] == '.')
        return 1;
    if (n >= 3 && ((p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x82) ||
                   (p[0] == 0xEF && p[1] == 0xBC && p[2] == 0x8E) ||
                   (p[0] == 0xEF && p[1] == 0xBD && p[2] == 0xA1)))
        return 3;
    return 0;
}

/* "[IPv6]" literal (RFC 7622 3.2.1 via RFC 3986 IP-literal), normalised to
 * the canonical lower-case text form (RFC 5952). */
static int
jid_dom_ipv6(const char *p, size_t n, char *out, size_t *out_len)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    unsigned char addr[16];

    if (n < 4 || p[n - 1] != ']' || n - 2 >= sizeof tmp)
        return XD_EJID_DOMAIN_INVALID;
    memcpy(tmp, p + 1, n - 2);
    tmp[n - 2] = '\0';
    if (memchr(tmp, '\0', n - 2) != NULL || inet_pton(AF_INET6, tmp, addr) != 1 ||
        inet_ntop(AF_INET6, addr, tmp, sizeof tmp) == NULL)
        return XD_EJID_DOMAIN_INVALID;
    size_t len = strlen(tmp);
    out[0] = '[';
    memcpy(out + 1, tmp, len);
    out[len + 1] = ']';
    out[len + 2] = '\0';
    *out_len = len + 2;
    return 0;
}

/* RFC 7622 3.2: domainpart.  `p` is valid UTF-8. */
static int
jid_prep_domain_part(const char *p, size_t n, char *out, size_t *out_len)
{
    if (n == 0)
        return XD_EJID_DOMAIN_EMPTY;
    if (p[n - 1] == '.')
        n--; /* RFC7622 3.2: strip one trailing dot before anything else */
    if (n == 0)
        return XD_EJID_DOMAIN_EMPTY;
    if (n > XD_JID_MAX)
        return XD_EJID_DOMAIN_TOO_LONG;
    if (p[0] == '[')
        return jid_dom_ipv6(p, n, out, out_len); /* RFC7622 3.2.1 */

    const unsigned char *u = (const unsigned char *)p;
    size_t o = 0, start = 0, last_label = 0;
    for (size_t i = 0;; ) {
        size_t sep = i < n ? jid_dom_separator(u + i, n - i) : 0;
        if (i < n && sep == 0) {
            i++;
            continue;
        }
        /* A label is p[start..i). */
        if (i == start)
            return XD_EJID_DOMAIN_INVALID; /* empty label: "a..b", ".a" */
        last_label = o;
        int rc = jid_is_ascii(p + start, i - start)
                     ? jid_dom_ascii_label(p + start, i - start, out, &o)
                     : jid_dom_idna_label(p + start, i - start, out, &o);
        if (rc != 0)
            return rc;
        if (i == n)
            break;
        if ((rc = jid_dom_append(out, &o, ".", 1)) != 0)
            return rc;
        i += sep;
        start = i;
        if (i == n)
            return XD_EJID_DOMAIN_INVALID; /* a trailing separator after the strip */
    }
    out[o] = '\0';

    /* A numeric last label is not a host name (RFC 3696 2): the domain must
     * then be a dotted-quad IPv4 address, which glibc's inet_pton accepts
     * only in canonical form (no leading zeros). */
    bool numeric = true;
    for (size_t i = last_label; i < o && numeric; i++)
        numeric = out[i] >= '0' && out[i] <= '9';
    if (numeric) {
        unsigned char addr[4];
        if (inet_pton(AF_INET, out, addr) != 1)
            return XD_EJID_DOMAIN_INVALID;
    }
    *out_len = o;
    return 0;
}

/* ======================================================================== */
/* The JID object                                                            */
/* ======================================================================== */

/* Builds the one allocation from normalised parts (local and res may be
 * absent with length 0). */
static xd_jid_t *
jid_build(const char *local, size_t ll, const char *dom, size_t dl, const char *res, size_t rl)
{
    XD_ASSERT(dl >= 1 && dl <= XD_JID_PART_MAX);
    XD_ASSERT(ll <= XD_JID_PART_MAX && rl <= XD_JID_PART_MAX);

    size_t bare_len = (ll ? ll + 1 : 0) + dl;
    size_t full_len = bare_len + (rl ? rl + 1 : 0);
    size_t size = full_len + 1 + (rl ? bare_len + 1 : 0) + (ll ? ll + 1 : 0);
    xd_jid_t *j = xd_malloc(sizeof *j + size);

    atomic_init(&j->refs, 1);
    j->local_len = (uint16_t)ll;
    j->domain_len = (uint16_t)dl;
    j->res_len = (uint16_t)rl;
    j->full_len = (uint16_t)full_len;

    char *w = j->buf;
    if (ll) {
        memcpy(w, local, ll);
        w[ll] = '@';
        w += ll + 1;
    }
    memcpy(w, dom, dl);
    w += dl;
    if (rl) {
        *w++ = '/';
        memcpy(w, res, rl);
        w += rl;
    }
    *w++ = '\0';

    j->bare_off = 0;
    if (rl) {
        j->bare_off = (uint16_t)(w - j->buf);
        memcpy(w, j->buf, bare_len);
        w[bare_len] = '\0';
        w += bare_len + 1;
    }
    j->local_off = (uint16_t)full_len; /* the full string's NUL: "" */
    if (ll) {
        j->local_off = (uint16_t)(w - j->buf);
        memcpy(w, local, ll);
        w[ll] = '\0';
        w += ll + 1;
    }
    XD_ASSERT((size_t)(w - j->buf) == size);
    return j;
}

/* Prepares the parts (absent: NULL) and builds the JID. */
static int
jid_make_parts(const char *lp, size_t ln, const char *dp, size_t dn, const char *rp,
               size_t rn, xd_jid_t **out)
{
    char local[XD_JID_PART_MAX + 1], dom[XD_JID_PART_MAX + 1], res[XD_JID_PART_MAX + 1];
    size_t ll = 0, dl = 0, rl = 0;
    int rc;

    if (lp != NULL && (rc = jid_prep_local_part(lp, ln, local, &ll)) != 0)
        return rc;
    if ((rc = jid_prep_domain_part(dp, dn, dom, &dl)) != 0)
        return rc;
    if (rp != NULL && (rc = jid_prep_res_part(rp, rn, res, &rl)) != 0)
        return rc;
    *out = jid_build(local, ll, dom, dl, res, rl);
    return 0;
}

int
xd_jid_parse(xd_str_t in, xd_jid_t **out)
{
    XD_ASSERT(out != NULL);
    *out = NULL;
    if (in.len == 0)
        return XD_EJID_EMPTY;
    if (in.len > XD_JID_MAX)
        return XD_EJID_TOO_LONG; /* RFC7622 3.1 */
    if (!jid_utf8_ok(in.p, in.len))
        return XD_EJID_UTF8; /* RFC7622 3.1: a JID is a UTF-8 string */

    /* RFC7622 3.1: the first '/' starts the resourcepart (which may hold
     * '@' and '/'); the first '@' before it ends the localpart. */
    const char *end = in.p + in.len;
    const char *slash = memchr(in.p, '/', in.len);
    const char *pre_end = slash ? slash : end;
    const char *at = memchr(in.p, '@', (size_t)(pre_end - in.p));
    const char *dp = at ? at + 1 : in.p;

    if (at != NULL && at == in.p)
        return XD_EJID_LOCAL_EMPTY;
    if (dp == pre_end)
        return XD_EJID_DOMAIN_EMPTY;
    if (slash != NULL && slash + 1 == end)
        return XD_EJID_RES_EMPTY;
    return jid_make_parts(at ? in.p : NULL, at ? (size_t)(at - in.p) : 0, dp,
                          (size_t)(pre_end - dp), slash ? slash + 1 : NULL,
                          slash ? (size_t)(end - slash - 1) : 0, out);
}

int
xd_jid_make(xd_str_t local, xd_str_t domain, xd_str_t resource, xd_jid_t **out)
{
    XD_ASSERT(out != NULL);
    *out = NULL;
    if (domain.len == 0)
        return XD_EJID_DOMAIN_EMPTY;
    if (!jid_utf8_ok(local.p, local.len) || !jid_utf8_ok(domain.p, domain.len) ||
        !jid_utf8_ok(resource.p, resource.len))
        return XD_EJID_UTF8;
    return jid_make_parts(local.len ? local.p : NULL, local.len, domain.p, domain.len,
                          resource.len ? resource.p : NULL, resource.len, out);
}

xd_jid_t *
xd_jid_ref(xd_jid_t *jid)
{
    XD_ASSERT(jid != NULL);
    unsigned prev = atomic_fetch_add_explicit(&jid->refs, 1, memory_order_relaxed);
    XD_ASSERT(prev > 0 && prev < UINT32_MAX);
    return jid;
}

void
xd_jid_unref(xd_jid_t *jid)
{
    if (jid == NULL)
        return;
    unsigned prev = atomic_fetch_sub_explicit(&jid->refs, 1, memory_order_acq_rel);
    XD_ASSERT(prev > 0);
    if (prev == 1)
        xd_free(jid);
}

xd_str_t
xd_jid_local(const xd_jid_t *jid)
{
    return (xd_str_t){ jid->buf + jid->local_off, jid->local_len };
}

xd_str_t
xd_jid_domain(const xd_jid_t *jid)
{
    /* Inside the bare string, where the domain is followed by its NUL. */
    return (xd_str_t){ jid->buf + jid->bare_off + (jid->local_len ? jid->local_len + 1 : 0),
                       jid->domain_len };
}

xd_str_t
xd_jid_resource(const xd_jid_t *jid)
{
    return (xd_str_t){ jid->buf + jid->full_len - jid->res_len, jid->res_len };
}

xd_str_t
xd_jid_bare_str(const xd_jid_t *jid)
{
    return (xd_str_t){ jid->buf + jid->bare_off,
                       (size_t)(jid->local_len ? jid->local_len + 1 : 0) + jid->domain_len };
}

char *
xd_jid_bare_text(const char *text)
{
    xd_jid_t *j = NULL;
    if (!text || xd_jid_parse(xd_str_c(text), &j) != 0)
        return NULL;
    xd_str_t b = xd_jid_bare_str(j);
    char *out = xd_strndup(b.p, b.len);
    xd_jid_unref(j);
    return out;
}

xd_str_t
xd_jid_full_str(const xd_jid_t *jid)
{
    return (xd_str_t){ jid->buf, jid->full_len };
}

bool
xd_jid_is_bare(const xd_jid_t *jid)
{
    return jid->res_len == 0;
}

bool
xd_jid_eq(const xd_jid_t *a, const xd_jid_t *b)
{
    return a == b || xd_str_eq(xd_jid_full_str(a), xd_jid_full_str(b));
}

bool
xd_jid_eq_bare(const xd_jid_t *a, const xd_jid_t *b)
{
    return a == b || xd_str_eq(xd_jid_bare_str(a), xd_jid_bare_str(b));
}

xd_jid_t *
xd_jid_bare(xd_jid_t *jid)
{
    if (jid->res_len == 0)
        return xd_jid_ref(jid);
    xd_str_t l = xd_jid_local(jid), d = xd_jid_domain(jid);
    return jid_build(l.p, l.len, d.p, d.len, NULL, 0);
}

/* Runs one part's preparation and hands back a heap copy. */
static int
jid_prep_copy(int (*prep)(const char *, size_t, char *, size_t *), xd_str_t in, char **out)
{
    char buf[XD_JID_PART_MAX + 1];
    size_t len;

    XD_ASSERT(out != NULL);
    *out = NULL;
    if (!jid_utf8_ok(in.p, in.len))
        return XD_EJID_UTF8;
    int rc = prep(in.p, in.len, buf, &len);
    if (rc == 0)
        *out = xd_strndup(buf, len);
    return rc;
}

int
xd_jid_prep_local(xd_str_t in, char **out)
{
    return jid_prep_copy(jid_prep_local_part, in, out);
}

int
xd_jid_prep_domain(xd_str_t in, char **out)
{
    return jid_prep_copy(jid_prep_domain_part, in, out);
}

int
xd_jid_prep_resource(xd_str_t in, char **out)
{
    return jid_prep_copy(jid_prep_res_part, in, out);
}
