/*
 * hostmeta.c — XEP-0156 discovery over HTTP: /.well-known/host-meta (XRD)
 * and /.well-known/host-meta.json (JRD) list the connection methods this
 * listener serves (WebSocket; BOSH once its module adds its link with
 * xd_http_hostmeta_link).  The URLs are built from the request: its Host
 * header, and wss/https when it came over TLS or through a proxy that
 * says so (X-Forwarded-Proto: https).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/http_int.h"

#include "xmppd/alloc.h"
#include "xmppd/err.h"

#define HM_MAX_LINKS 8

typedef struct {
    char rel[96];
    char handler[48];
} hm_link_t;

static uv_mutex_t hm_lock;
static uv_once_t hm_once = UV_ONCE_INIT;
static hm_link_t hm_links[HM_MAX_LINKS];
static size_t hm_nlinks;

static void
hm_init(void)
{
    uv_mutex_init(&hm_lock);
}

int
xd_http_hostmeta_link(const char *rel, const char *handler_name)
{
    if (strlen(rel) >= sizeof hm_links[0].rel || strlen(handler_name) >= sizeof hm_links[0].handler)
        return XD_EINVAL;
    uv_once(&hm_once, hm_init);
    uv_mutex_lock(&hm_lock);
    int rc = 0;
    for (size_t i = 0; i < hm_nlinks; i++)
        if (!strcmp(hm_links[i].rel, rel))
            rc = XD_EEXIST;
    if (rc == 0 && hm_nlinks == HM_MAX_LINKS)
        rc = XD_ELIMIT;
    if (rc == 0) {
        snprintf(hm_links[hm_nlinks].rel, sizeof hm_links[0].rel, "%s", rel);
        snprintf(hm_links[hm_nlinks].handler, sizeof hm_links[0].handler, "%s", handler_name);
        hm_nlinks++;
    }
    uv_mutex_unlock(&hm_lock);
    return rc;
}

/* A Host header value that is a host name or address with an optional port. */
static bool
host_ok(const char *h)
{
    if (!h || !*h || strlen(h) > 255)
        return false;
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == ':' || *p == '[' || *p == ']'))
            return false;
    return true;
}

static void
hm_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    const char *host = xd_http_req_header(r, "Host");
    if (!host_ok(host)) {
        xd_http_error(r, 400, "a valid Host header is needed");
        return;
    }
    const char *fwd = xd_http_req_header(r, "X-Forwarded-Proto");
    bool tls = xd_http_req_secure(r) || (fwd && !strcasecmp(fwd, "https"));
    const char *path = xd_http_req_path(r);
    size_t pl = strlen(path);
    bool json = pl >= 5 && !strcmp(path + pl - 5, ".json");

    hm_link_t links[HM_MAX_LINKS];
    uv_once(&hm_once, hm_init);
    uv_mutex_lock(&hm_lock);
    size_t n = hm_nlinks;
    memcpy(links, hm_links, n * sizeof *links);
    uv_mutex_unlock(&hm_lock);

    size_t cap = 512 + n * 600, len = 0;
    char *b = xd_malloc(cap);
    len += (size_t)snprintf(b + len, cap - len, "%s",
                            json ? "{\"links\":["
                                 : "<?xml version='1.0' encoding='utf-8'?>\n"
                                   "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        const char *prefix = http_route_of(r, links[i].handler);
        if (!prefix || prefix[0] != '/' || strpbrk(prefix, "'\"<>&\\ "))
            continue;
        bool ws = !strcmp(links[i].handler, "websocket");
        const char *scheme = ws ? (tls ? "wss" : "ws") : (tls ? "https" : "http");
        if (json)
            len += (size_t)snprintf(b + len, cap - len, "%s{\"rel\":\"%s\",\"href\":\"%s://%s%s\"}",
                                    first ? "" : ",", links[i].rel, scheme, host, prefix);
        else
            len += (size_t)snprintf(b + len, cap - len, "  <Link rel='%s' href='%s://%s%s'/>\n",
                                    links[i].rel, scheme, host, prefix);
        first = false;
    }
    len += (size_t)snprintf(b + len, cap - len, "%s", json ? "]}" : "</XRD>\n");
    xd_http_respond(r, 200, json ? "application/json" : "application/xrd+xml; charset=utf-8", b,
                    len);
    xd_free(b);
}

static const xd_http_handler_t hm_handler = {
    .request = hm_request,
    .methods = "GET, HEAD",
};

void
http_hostmeta_setup(void)
{
    xd_http_register("host_meta", "/.well-known/host-meta", &hm_handler, NULL);
    xd_http_register("host_meta_json", "/.well-known/host-meta.json", &hm_handler, NULL);
}
