/*
 * caps.c — XEP-0115 5.1 verification strings (see include/xmppd/caps.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "xmppd/alloc.h"
#include "xmppd/base64.h"
#include "xmppd/caps.h"
#include "xmppd/err.h"
#include "xmppd/ns.h"
#include "xmppd/str.h"

#define CAPS_NS_DATA "jabber:x:data"

/* Compares the first `nkeys` `sep`-terminated segments one by one (so
 * "a/x" sorts before "a-b/x" as "a" before "a-b"), then the rest. */
static int
caps_cmp_keys(const char *a, const char *b, char sep, int nkeys)
{
    for (int k = 0; k < nkeys; k++) {
        const char *ea = strchr(a, sep), *eb = strchr(b, sep);
        if (!ea || !eb)
            break;
        size_t la = (size_t)(ea - a), lb = (size_t)(eb - b);
        int c = memcmp(a, b, la < lb ? la : lb);
        if (c || la != lb)
            return c ? c : (la < lb ? -1 : 1);
        a = ea + 1;
        b = eb + 1;
    }
    return strcmp(a, b);
}

/* Identities: category/type/lang/name< — three keys, then the name. */
static int
caps_cmp_identity(const void *a, const void *b)
{
    return caps_cmp_keys(*(char *const *)a, *(char *const *)b, '/', 3);
}

/* Forms: FORM_TYPE<fields… — the FORM_TYPE, then the fields. */
static int
caps_cmp_form(const void *a, const void *b)
{
    return caps_cmp_keys(*(char *const *)a, *(char *const *)b, '<', 1);
}

static int
caps_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Items that end in '<' (features "var<", fields "var<value<…"): ordered
 * as the strings before it are (XEP-0115 5.1 sorts the bare strings), so
 * '<' sorts below every byte: "a/tune<" before "a/tune+notify<". */
static int
caps_cmp_term(const void *a, const void *b)
{
    const unsigned char *x = *(const unsigned char *const *)a;
    const unsigned char *y = *(const unsigned char *const *)b;
    for (;; x++, y++) {
        unsigned cx = *x == '<' ? 1u : *x ? *x + 1u : 0u;
        unsigned cy = *y == '<' ? 1u : *y ? *y + 1u : 0u;
        if (cx != cy)
            return cx < cy ? -1 : 1;
        if (!cx)
            return 0;
    }
}

/* A growable array of malloc'd strings. */
typedef struct caps_list {
    char **v;     /* items */
    size_t n, cap;
} caps_list_t;

static void
caps_push(caps_list_t *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xd_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = s;
}

static void
caps_list_free(caps_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        xd_free(l->v[i]);
    xd_free(l->v);
    *l = (caps_list_t){ 0 };
}

/* Sorts l with cmp; false when two items have equal keys (5.4 rule 3:
 * duplicate identities, features or FORM_TYPEs). */
static bool
caps_sort_unique(caps_list_t *l, int (*cmp)(const void *, const void *), char sep)
{
    if (l->n > 1)
        qsort(l->v, l->n, sizeof *l->v, cmp);
    for (size_t i = 1; i < l->n; i++) {
        const char *a = l->v[i - 1], *b = l->v[i];
        if (sep) { /* forms: only the FORM_TYPE must differ */
            size_t la = strcspn(a, "<"), lb = strcspn(b, "<");
            if (la == lb && !memcmp(a, b, la))
                return false;
        } else if (!strcmp(a, b)) {
            return false;
        }
    }
    return true;
}

static const char *
caps_or_empty(const char *s)
{
    return s ? s : "";
}

/* "var<value<value<" of one field, values sorted; NULL for FORM_TYPE. */
static char *
caps_field(const xd_el_t *field)
{
    caps_list_t vals = { 0 };
    for (const xd_el_t *v = xd_el_first_child(field); v; v = xd_el_next(v))
        if (xd_el_is(v, "value", CAPS_NS_DATA))
            caps_push(&vals, xd_strdup(caps_or_empty(xd_el_text(v))));
    if (vals.n > 1)
        qsort(vals.v, vals.n, sizeof *vals.v, caps_cmp_str);
    xd_buf_t b = { 0 };
    xd_buf_puts(&b, caps_or_empty(xd_el_attr(field, "var")));
    xd_buf_puts(&b, "<");
    for (size_t i = 0; i < vals.n; i++) {
        xd_buf_puts(&b, vals.v[i]);
        xd_buf_puts(&b, "<");
    }
    caps_list_free(&vals);
    return xd_buf_take(&b);
}

/* One form as "FORM_TYPE<field<…", fields sorted by var; NULL without a
 * FORM_TYPE. */
static char *
caps_form(const xd_el_t *x)
{
    const char *form_type = NULL;
    caps_list_t fields = { 0 };
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        if (!xd_el_is(f, "field", CAPS_NS_DATA))
            continue;
        const char *var = xd_el_attr(f, "var");
        if (var && !strcmp(var, "FORM_TYPE")) {
            const xd_el_t *v = xd_el_child(f, "value", CAPS_NS_DATA);
            form_type = v ? caps_or_empty(xd_el_text(v)) : "";
            continue;
        }
        caps_push(&fields, caps_field(f));
    }
    if (!form_type) {
        caps_list_free(&fields);
        return NULL;
    }
    if (fields.n > 1)
        qsort(fields.v, fields.n, sizeof *fields.v, caps_cmp_term);
    xd_buf_t b = { 0 };
    xd_buf_puts(&b, form_type);
    xd_buf_puts(&b, "<");
    for (size_t i = 0; i < fields.n; i++)
        xd_buf_puts(&b, fields.v[i]);
    caps_list_free(&fields);
    return xd_buf_take(&b);
}

int
xd_caps_ver(const xd_el_t *query, char out[29])
{
    caps_list_t ids = { 0 }, feats = { 0 }, forms = { 0 };
    bool ok = true;
    for (const xd_el_t *c = xd_el_first_child(query); c && ok; c = xd_el_next(c)) {
        if (xd_el_is(c, "identity", XD_NS_DISCO_INFO)) {
            xd_buf_t b = { 0 };
            xd_buf_puts(&b, caps_or_empty(xd_el_attr(c, "category")));
            xd_buf_puts(&b, "/");
            xd_buf_puts(&b, caps_or_empty(xd_el_attr(c, "type")));
            xd_buf_puts(&b, "/");
            xd_buf_puts(&b, caps_or_empty(xd_el_attr_ns(c, "lang", XD_NS_XML)));
            xd_buf_puts(&b, "/");
            xd_buf_puts(&b, caps_or_empty(xd_el_attr(c, "name")));
            xd_buf_puts(&b, "<");
            caps_push(&ids, xd_buf_take(&b));
        } else if (xd_el_is(c, "feature", XD_NS_DISCO_INFO)) {
            xd_buf_t b = { 0 };
            xd_buf_puts(&b, caps_or_empty(xd_el_attr(c, "var")));
            xd_buf_puts(&b, "<");
            caps_push(&feats, xd_buf_take(&b));
        } else if (xd_el_is(c, "x", CAPS_NS_DATA)) {
            char *f = caps_form(c);
            if (f)
                caps_push(&forms, f);
            else
                ok = false; /* 5.4 rule 3.6 */
        }
    }
    ok = ok && caps_sort_unique(&ids, caps_cmp_identity, 0) &&
         caps_sort_unique(&feats, caps_cmp_term, 0) && caps_sort_unique(&forms, caps_cmp_form, '<');
    if (ok) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char dig[SHA_DIGEST_LENGTH];
        unsigned dlen = 0;
        ok = md && EVP_DigestInit_ex(md, EVP_sha1(), NULL) == 1;
        caps_list_t *parts[] = { &ids, &feats, &forms };
        for (size_t p = 0; ok && p < 3; p++)
            for (size_t i = 0; ok && i < parts[p]->n; i++)
                ok = EVP_DigestUpdate(md, parts[p]->v[i], strlen(parts[p]->v[i])) == 1;
        ok = ok && EVP_DigestFinal_ex(md, dig, &dlen) == 1 && dlen == sizeof dig;
        EVP_MD_CTX_free(md);
        if (ok)
            xd_base64_encode(dig, sizeof dig, out, 0);
    }
    caps_list_free(&ids);
    caps_list_free(&feats);
    caps_list_free(&forms);
    return ok ? 0 : XD_EINVAL;
}
