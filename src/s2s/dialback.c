/*
 * dialback.c — XEP-0185 dialback keys and XEP-0220 <db:result/> and
 * <db:verify/> elements (dialback.h).
 *
 * Keys use OpenSSL's one-shot SHA-256 and HMAC; every intermediate secret
 * (the hashed secret, its hex form, the MAC) is wiped before returning.
 * Elements are read and built with el.h only; nothing is kept between
 * calls, so every function may run on any thread.
 */
#include "s2s/dialback.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/ns.h"

#define DB_SHA256_LEN 32 /* bytes of a SHA-256 digest */

/* ---- keys ----------------------------------------------------------------- */

static void
db_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
}

/* A domain for the key text: non-empty and without the separator. */
static bool
db_domain_ok(xd_str_t d)
{
    return d.len > 0 && memchr(d.p, ' ', d.len) == NULL;
}

int
xd_dialback_key(xd_str_t secret, xd_str_t receiving, xd_str_t originating, xd_str_t stream_id,
                char out[XD_DIALBACK_KEY_LEN + 1])
{
    if (secret.len == 0 || !db_domain_ok(receiving) || !db_domain_ok(originating) ||
        stream_id.len == 0)
        return XD_EINVAL;
    /* XEP-0185 2: the HMAC key is SHA256(secret) in hex. */
    unsigned char h[DB_SHA256_LEN];
    char hkey[2 * DB_SHA256_LEN];
    unsigned char mac[DB_SHA256_LEN];
    unsigned int mac_len = 0;
    int rc = 0;
    if (EVP_Digest(secret.p, secret.len, h, NULL, EVP_sha256(), NULL) != 1) {
        rc = XD_EINTERNAL;
    } else {
        db_hex(h, sizeof h, hkey);
        /* XEP-0185 2: receiving ' ' originating ' ' stream ID */
        size_t n = receiving.len + 1 + originating.len + 1 + stream_id.len;
        unsigned char *text = xd_malloc(n);
        memcpy(text, receiving.p, receiving.len);
        text[receiving.len] = ' ';
        memcpy(text + receiving.len + 1, originating.p, originating.len);
        text[receiving.len + 1 + originating.len] = ' ';
        memcpy(text + n - stream_id.len, stream_id.p, stream_id.len);
        if (HMAC(EVP_sha256(), hkey, (int)sizeof hkey, text, n, mac, &mac_len) == NULL ||
            mac_len != sizeof mac)
            rc = XD_EINTERNAL;
        xd_free(text);
    }
    if (rc == 0) {
        db_hex(mac, sizeof mac, out);
        out[XD_DIALBACK_KEY_LEN] = '\0';
    }
    OPENSSL_cleanse(h, sizeof h);
    OPENSSL_cleanse(hkey, sizeof hkey);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

bool
xd_dialback_key_check(xd_str_t secret, xd_str_t receiving, xd_str_t originating, xd_str_t stream_id,
                      xd_str_t key)
{
    char want[XD_DIALBACK_KEY_LEN + 1];
    if (key.len != XD_DIALBACK_KEY_LEN ||
        xd_dialback_key(secret, receiving, originating, stream_id, want) != 0)
        return false;
    bool ok = CRYPTO_memcmp(want, key.p, XD_DIALBACK_KEY_LEN) == 0;
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}

/* ---- elements ------------------------------------------------------------- */

static const char *const db_kind_names[] = {
    [XD_DIALBACK_RESULT] = "result",
    [XD_DIALBACK_VERIFY] = "verify",
};

static const char *const db_type_names[] = {
    [XD_DIALBACK_REQUEST] = "",
    [XD_DIALBACK_VALID] = "valid",
    [XD_DIALBACK_INVALID] = "invalid",
    [XD_DIALBACK_ERROR] = "error",
};

#define DB_COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *
xd_dialback_kind_name(xd_dialback_kind kind)
{
    return (unsigned)kind < DB_COUNT(db_kind_names) ? db_kind_names[kind] : "?";
}

const char *
xd_dialback_type_name(xd_dialback_type type)
{
    return (unsigned)type < DB_COUNT(db_type_names) ? db_type_names[type] : "?";
}

static bool
db_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
db_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* The stanza error condition inside a type='error' element (XEP-0220 2.5:
 * an <error/> in jabber:server holding a condition in the stanzas
 * namespace); UNDEFINED_CONDITION when there is none or it is unknown. */
static xd_cond
db_parse_cond(const xd_el_t *el)
{
    const xd_el_t *err = xd_el_child(el, "error", NULL);
    if (err == NULL)
        return XD_COND_UNDEFINED_CONDITION;
    for (const xd_el_t *c = xd_el_first_child(err); c != NULL; c = xd_el_next(c)) {
        if (!xd_el_is(c, NULL, XD_NS_STANZAS) || strcmp(xd_el_name(c), "text") == 0)
            continue;
        int cond = xd_cond_parse(xd_el_name(c));
        return cond >= 0 ? (xd_cond)cond : XD_COND_UNDEFINED_CONDITION;
    }
    return XD_COND_UNDEFINED_CONDITION;
}

int
xd_dialback_parse(const xd_el_t *el, xd_dialback_t *out)
{
    const char *ns = xd_el_ns(el);
    if (ns == NULL || strcmp(ns, XD_NS_DIALBACK) != 0)
        return XD_EINVAL;
    xd_dialback_t d = { .cond = XD_COND_UNDEFINED_CONDITION };
    if (strcmp(xd_el_name(el), "result") == 0)
        d.kind = XD_DIALBACK_RESULT;
    else if (strcmp(xd_el_name(el), "verify") == 0)
        d.kind = XD_DIALBACK_VERIFY;
    else
        return XD_EINVAL;
    d.from = xd_el_attr(el, "from");
    d.to = xd_el_attr(el, "to");
    d.id = xd_el_attr(el, "id");
    if (!db_nonempty(d.from) || !db_nonempty(d.to) ||
        (d.kind == XD_DIALBACK_VERIFY && !db_nonempty(d.id)))
        return XD_EINVAL;
    const char *type = xd_el_attr(el, "type");
    if (type == NULL)
        d.type = XD_DIALBACK_REQUEST;
    else if (strcmp(type, "valid") == 0)
        d.type = XD_DIALBACK_VALID;
    else if (strcmp(type, "invalid") == 0)
        d.type = XD_DIALBACK_INVALID;
    else if (strcmp(type, "error") == 0)
        d.type = XD_DIALBACK_ERROR;
    else
        return XD_EINVAL;
    if (d.type == XD_DIALBACK_REQUEST) {
        const char *p = xd_el_text(el);
        size_t n = xd_el_text_len(el);
        while (n > 0 && db_is_space(p[0])) {
            p++;
            n--;
        }
        while (n > 0 && db_is_space(p[n - 1]))
            n--;
        if (n == 0)
            return XD_EINVAL;
        d.key = (xd_str_t){ p, n };
    } else if (d.type == XD_DIALBACK_ERROR) {
        d.cond = db_parse_cond(el);
    }
    *out = d;
    return 0;
}

xd_el_t *
xd_dialback_build(const xd_dialback_t *d)
{
    XD_ASSERT(d->kind == XD_DIALBACK_RESULT || d->kind == XD_DIALBACK_VERIFY);
    XD_ASSERT((unsigned)d->type < DB_COUNT(db_type_names));
    XD_ASSERT(db_nonempty(d->from) && db_nonempty(d->to));
    XD_ASSERT(d->kind != XD_DIALBACK_VERIFY || db_nonempty(d->id));
    XD_ASSERT(d->type != XD_DIALBACK_REQUEST || d->key.len > 0);
    xd_el_t *el =
        xd_el_new(d->kind == XD_DIALBACK_VERIFY ? "db:verify" : "db:result", XD_NS_DIALBACK);
    xd_el_set_attr(el, "from", d->from);
    xd_el_set_attr(el, "to", d->to);
    if (d->id != NULL)
        xd_el_set_attr(el, "id", d->id);
    if (d->type != XD_DIALBACK_REQUEST)
        xd_el_set_attr(el, "type", db_type_names[d->type]);
    if (d->type == XD_DIALBACK_REQUEST) {
        xd_el_add_textn(el, d->key.p, d->key.len);
    } else if (d->type == XD_DIALBACK_ERROR) {
        XD_ASSERT((unsigned)d->cond < XD_COND_COUNT);
        /* XEP-0220 2.5: <error/> in the stream's content namespace. */
        xd_el_t *err = xd_el_new("error", NULL);
        xd_el_set_attr(err, "type", xd_cond_type(d->cond));
        xd_el_add_child(err, xd_cond_name(d->cond), XD_NS_STANZAS);
        xd_el_append(el, err);
    }
    return el;
}

xd_el_t *
xd_dialback_reply(const xd_dialback_t *req, xd_dialback_type type, xd_cond cond)
{
    XD_ASSERT(type == XD_DIALBACK_VALID || type == XD_DIALBACK_INVALID ||
              type == XD_DIALBACK_ERROR);
    xd_dialback_t a = {
        .kind = req->kind,
        .type = type,
        .from = req->to, /* XEP-0220 2.2.2: 'from' and 'to' swapped, 'id' copied */
        .to = req->from,
        .id = req->id,
        .cond = cond,
    };
    return xd_dialback_build(&a);
}

xd_el_t *
xd_dialback_feature_new(void)
{
    xd_el_t *f = xd_el_new("dialback", XD_NS_DIALBACK_FEAT);
    xd_el_add_child(f, "errors", NULL);
    return f;
}
