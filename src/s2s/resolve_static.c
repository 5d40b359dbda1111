/*
 * resolve_static.c — the static override table of the resolver
 * (resolve.h: xd_resolve_set_static, xd_resolve_clear_static,
 * xd_resolve_static_check; the s2s_hosts option) and the name syntax the
 * resolver checks: a domain turned into a query name, host names (static
 * hosts, SRV targets) and IP-literal domains.  Sits in src/s2s beside
 * resolve.c (the files share resolve_int.h); depends on libidn2 and
 * src/core only.
 *
 * A static entry maps a query name to a host name to look up (AAAA + A, no
 * SRV) or to an address (no DNS at all), with a port.  The table is a
 * singly linked list on the context, one entry per domain: a lookup walks
 * it, so it is meant for a handful of entries.
 *
 * Invariants: entries are keyed by rs_qname's form of the domain, so two
 * spellings of one domain share an entry; an entry's spec was accepted by
 * rs_static_parse, so a literal entry's addr has its port set and a host
 * entry's host passes rs_hostname_ok; the table is touched by the owner
 * loop only (xd_resolve_static_check alone touches no context and runs on
 * any thread).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include <idn2.h>

#include "s2s/resolve_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"

/* ---- names --------------------------------------------------------------- */

bool
rs_hostname_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    size_t lab = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (lab == 0 || s[i - 1] == '-')
                return false; /* empty label, or one that ends with '-' */
            lab = 0;
            continue;
        }
        if (!(isalnum(c) || c == '-' || c == '_') || ++lab > 63 || (lab == 1 && c == '-'))
            return false;
    }
    return lab > 0 && s[n - 1] != '-';
}

int
rs_qname(const char *domain, char out[RS_QNAME_MAX])
{
    size_t n = strlen(domain);
    if (n > 0 && domain[n - 1] == '.')
        n--;
    if (n == 0 || n > 1023)
        return XD_EINVAL;
    bool ascii = true;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)domain[i] & 0x80)
            ascii = false;
    char *tmp = xd_strndup(domain, n);
    char *alabel = NULL;
    const char *src = tmp;
    if (!ascii) {
        if (idn2_lookup_u8((const uint8_t *)tmp, (uint8_t **)&alabel,
                           IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK) {
            idn2_free(alabel);
            xd_free(tmp);
            return XD_EINVAL;
        }
        src = alabel;
    }
    int rc = 0;
    size_t m = strlen(src);
    if (!rs_hostname_ok(src, m)) {
        rc = XD_EINVAL;
    } else {
        for (size_t i = 0; i <= m; i++)
            out[i] = (char)tolower((unsigned char)src[i]);
    }
    idn2_free(alabel);
    xd_free(tmp);
    return rc;
}

/* Fills a sockaddr from IP text ("192.0.2.1", "2001:db8::1"); false if the
 * text is not an address. */
static bool
rs_ip_parse(const char *s, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
        return true;
    }
    if (inet_pton(AF_INET6, s, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof *a6;
        return true;
    }
    return false;
}

bool
rs_domain_literal(const char *domain, struct sockaddr_storage *ss, socklen_t *len)
{
    char buf[64];
    size_t n = strlen(domain);
    if (n >= 2 && domain[0] == '[' && domain[n - 1] == ']' && n - 2 < sizeof buf) {
        memcpy(buf, domain + 1, n - 2);
        buf[n - 2] = '\0';
        struct in6_addr a;
        if (inet_pton(AF_INET6, buf, &a) != 1)
            return false;
        return rs_ip_parse(buf, XD_RESOLVE_PORT, ss, len);
    }
    struct in_addr a4;
    if (n < sizeof buf && inet_pton(AF_INET, domain, &a4) == 1)
        return rs_ip_parse(domain, XD_RESOLVE_PORT, ss, len);
    return false;
}

/* ---- the table ----------------------------------------------------------- */

/* Parses a static spec (resolve.h) into e (domain untouched). */
static int
rs_static_parse(const char *spec, rs_static_t *e)
{
    char host[XD_RESOLVE_HOST_MAX];
    const char *port_s = NULL;
    size_t n = strlen(spec);
    if (n == 0 || n >= sizeof host)
        return XD_EINVAL;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close == spec + 1)
            return XD_EINVAL;
        size_t hl = (size_t)(close - spec - 1);
        memcpy(host, spec + 1, hl);
        host[hl] = '\0';
        if (close[1] == ':')
            port_s = close + 2;
        else if (close[1] != '\0')
            return XD_EINVAL;
        struct in6_addr a;
        if (inet_pton(AF_INET6, host, &a) != 1)
            return XD_EINVAL;
    } else {
        const char *colon = strchr(spec, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL) {
            memcpy(host, spec, n + 1); /* a bare IPv6 address, no port */
        } else if (colon != NULL) {
            memcpy(host, spec, (size_t)(colon - spec));
            host[colon - spec] = '\0';
            port_s = colon + 1;
        } else {
            memcpy(host, spec, n + 1);
        }
    }
    unsigned long port = XD_RESOLVE_PORT;
    if (port_s != NULL) {
        if (*port_s == '\0' || strlen(port_s) > 5)
            return XD_EINVAL;
        port = 0;
        for (const char *p = port_s; *p; p++) {
            if (*p < '0' || *p > '9')
                return XD_EINVAL;
            port = port * 10 + (unsigned long)(*p - '0');
        }
        if (port == 0 || port > 65535)
            return XD_EINVAL;
    }
    e->port = (uint16_t)port;
    if (rs_ip_parse(host, e->port, &e->addr, &e->addrlen)) {
        e->literal = true;
    } else {
        size_t hl = strlen(host);
        if (hl > 0 && host[hl - 1] == '.')
            host[--hl] = '\0';
        if (!rs_hostname_ok(host, hl))
            return XD_EINVAL;
        e->literal = false;
    }
    rs_copy(e->host, sizeof e->host, host);
    return 0;
}

rs_static_t *
rs_static_find(xd_resolve_ctx_t *ctx, const char *qname)
{
    for (rs_static_t *e = ctx->statics; e != NULL; e = e->next)
        if (strcmp(e->domain, qname) == 0)
            return e;
    return NULL;
}

/* ---- public static-table API --------------------------------------------- */

int
xd_resolve_static_check(const char *spec)
{
    rs_static_t e;
    if (spec == NULL)
        return XD_EINVAL;
    return rs_static_parse(spec, &e);
}

int
xd_resolve_set_static(xd_resolve_ctx_t *ctx, const char *domain, const char *spec)
{
    char key[RS_QNAME_MAX];
    if (ctx == NULL || domain == NULL || rs_qname(domain, key) != 0)
        return XD_EINVAL;
    rs_static_t e;
    memset(&e, 0, sizeof e);
    if (spec != NULL) {
        int rc = rs_static_parse(spec, &e);
        if (rc != 0)
            return rc;
    }
    for (rs_static_t **pp = &ctx->statics; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->domain, key) == 0) {
            rs_static_t *old = *pp;
            *pp = old->next;
            xd_free(old);
            break;
        }
    }
    if (spec == NULL)
        return 0;
    rs_static_t *ne = xd_new(rs_static_t);
    *ne = e;
    memcpy(ne->domain, key, sizeof key);
    ne->next = ctx->statics;
    ctx->statics = ne;
    return 0;
}

void
xd_resolve_clear_static(xd_resolve_ctx_t *ctx)
{
    while (ctx->statics != NULL) {
        rs_static_t *e = ctx->statics;
        ctx->statics = e->next;
        xd_free(e);
    }
}
