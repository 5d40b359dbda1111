/*
 * listener.c — per-worker TCP listeners with SO_REUSEPORT (see listener.h).
 *
 * The table of listeners is built once by xd_listeners_prepare() on the main
 * thread and is read-only afterwards (except each listener's atomic
 * connection counter), so workers read it without locks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "stream/listener.h"

#include "stream/c2s.h"
#include "stream/conn.h"
#include "stream/wstate.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/opt.h"

static xd_listener_t *lst_table; /* immutable after prepare */
static size_t lst_count;
static const xd_conn_role_t *lst_roles[XD_LISTEN_HTTP + 1] = { [XD_LISTEN_C2S] = &xd_c2s_role };
static xd_wstate_t *lst_ws[XD_MAX_WORKERS]; /* per-worker state, freed after join */

void
xd_listeners_set_role(xd_listen_module module, const struct xd_conn_role *role)
{
    if ((unsigned)module <= XD_LISTEN_HTTP)
        lst_roles[module] = role;
}

size_t
xd_listeners_count(void)
{
    return lst_count;
}

const char *
xd_listener_module_name(const xd_listener_t *l)
{
    switch (l->module) {
    case XD_LISTEN_C2S: return "c2s";
    case XD_LISTEN_S2S: return "s2s";
    case XD_LISTEN_COMPONENT: return "component";
    case XD_LISTEN_HTTP: return "http";
    }
    return "?";
}

const xd_listener_t *
xd_listeners_get(size_t i)
{
    return i < lst_count ? &lst_table[i] : NULL;
}

static int
lst_resolve(xd_listener_t *l, const char *ip, int port)
{
    memset(&l->addr, 0, sizeof l->addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&l->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&l->addr;
    if (uv_ip4_addr(ip, port, a4) == 0) {
        l->addrlen = sizeof *a4;
        snprintf(l->name, sizeof l->name, "%s:%d", ip, port);
        return 0;
    }
    if (uv_ip6_addr(ip, port, a6) == 0) {
        l->addrlen = sizeof *a6;
        snprintf(l->name, sizeof l->name, "[%s]:%d", ip, port);
        return 0;
    }
    return XD_EINVAL;
}

/* Binds the address once without SO_REUSEPORT to learn whether it is free. */
static int
lst_probe(const xd_listener_t *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&l->addr;
        int v6only = !IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    }
    int rc = 0;
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Copies a component listener's `password` and `hosts: {domain:
 * {password: …}}` (domains prepared by the configuration). */
static void
lst_component_secrets(xd_listener_t *l, const xd_listen_conf_t *lc)
{
    if (lc->password)
        l->password = xd_strdup(lc->password);
    if (lc->hosts.count == 0)
        return;
    l->secrets = xd_calloc(lc->hosts.count, sizeof *l->secrets);
    for (size_t i = 0; i < lc->hosts.count; i++) {
        l->secrets[i].domain = xd_strdup(lc->hosts.items[i].domain);
        l->secrets[i].password = xd_strdup(lc->hosts.items[i].password);
    }
    l->nsecrets = lc->hosts.count;
}

const char *
xd_listener_component_secret(const xd_listener_t *l, const char *domain)
{
    for (size_t i = 0; i < l->nsecrets; i++)
        if (!strcmp(l->secrets[i].domain, domain))
            return l->secrets[i].password;
    return l->password;
}

/* The shaper of listener l: the one its entry names (`none`: none), else
 * the default of its module (docs/admin.md "Shaper"): client streams are
 * shaped so that no client notices (a login's roster, vCard and presence
 * fit in the burst) and a flood does; server streams carry many users and
 * get ten times more; components are the server's own services. */
static void
lst_shaper(xd_listener_t *l, const xd_listen_conf_t *lc, const struct xd_config *cfg)
{
    if (!lc->shaper) {
        if (l->module == XD_LISTEN_C2S) {
            l->shaper_rate = XD_SHAPER_C2S_RATE;
            l->shaper_burst = XD_SHAPER_C2S_BURST;
        } else if (l->module == XD_LISTEN_S2S) {
            l->shaper_rate = XD_SHAPER_S2S_RATE;
            l->shaper_burst = XD_SHAPER_S2S_BURST;
        }
        return;
    }
    const xd_shaper_t *sh = xd_config_shaper(cfg, lc->shaper);
    if (sh) {
        l->shaper_rate = sh->rate_bytes;
        l->shaper_burst = sh->burst_bytes ? sh->burst_bytes : sh->rate_bytes;
    }
}

int
xd_listeners_prepare(const struct xd_config *cfg, char **err)
{
    size_t n = xd_config_listen_count(cfg);
    lst_table = xd_calloc(n ? n : 1, sizeof *lst_table);
    lst_count = 0;
    for (size_t i = 0; i < n; i++) {
        int rc;
        const xd_listen_conf_t *lc = xd_config_listen(cfg, i);
        xd_listener_t *l = &lst_table[lst_count];
        if (lst_resolve(l, lc->ip, lc->port) != 0) {
            if (asprintf(err, "listen: invalid address \"%s\"", lc->ip) < 0)
                *err = NULL;
            return XD_EINVAL;
        }
        l->module = lc->module == XD_LISTEN_MOD_COMPONENT ? XD_LISTEN_COMPONENT
                    : lc->module == XD_LISTEN_MOD_S2S     ? XD_LISTEN_S2S
                    : lc->module == XD_LISTEN_MOD_HTTP    ? XD_LISTEN_HTTP
                                                          : XD_LISTEN_C2S;
        l->role = lst_roles[l->module];
        if (!l->role) {
            if (asprintf(err, "listen: %s: no stream role for this module", l->name) < 0)
                *err = NULL;
            return XD_EINVAL;
        }
        if (l->module == XD_LISTEN_COMPONENT)
            lst_component_secrets(l, lc);
        l->backlog = lc->backlog;
        l->max_connections = lc->max_connections;
        l->max_stanza_bytes = lc->max_stanza_size;
        l->handshake_timeout_ms = lc->handshake_timeout_ms;
        l->idle_timeout_ms = lc->idle_timeout_ms;
        if (l->module == XD_LISTEN_S2S && !l->idle_timeout_ms)
            l->idle_timeout_ms = cfg->s2s_timeout_ms; /* idle server streams are closed */
        l->starttls = lc->starttls;
        l->starttls_required = lc->starttls && lc->starttls_required;
        l->tls = lc->tls;
        l->tls_verify = lc->tls_verify;
        l->worker = lc->worker;
        snprintf(l->access, sizeof l->access, "%s", lc->access ? lc->access : "all");
        lst_shaper(l, lc, cfg);
        l->max_queue_bytes = lc->max_queue;
        atomic_init(&l->connections, 0);
        rc = lst_probe(l);
        if (rc != 0) {
            if (asprintf(err, "cannot listen on %s: %s", l->name, xd_strerror(rc)) < 0)
                *err = NULL;
            return rc;
        }
        if (l->role->listener_prepare && (rc = l->role->listener_prepare(l, lc, err)) != 0)
            return rc;
        lst_count++;
    }
    return 0;
}

static void
lst_on_connection(uv_stream_t *server, int status)
{
    xd_listener_t *l = server->data;
    xd_worker_t *w = xd_worker_self();
    if (status < 0) {
        XD_LOG(NULL, XD_WARN, "accept failed", "listener=%s err=%s", l->name,
               xd_strerror(status));
        return;
    }
    xd_conn_accept(w, server, l);
}

void
xd_listeners_start_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_new(xd_wstate_t);
    ws->worker = w;
    XD_ASSERT(xd_worker_index(w) < XD_MAX_WORKERS);
    lst_ws[xd_worker_index(w)] = ws;
    xd_worker_set_data(w, ws);
    ws->listen = xd_calloc(lst_count ? lst_count : 1, sizeof *ws->listen);
    uv_loop_t *loop = xd_worker_loop(w);
    xd_conn_start_worker(w);

    for (size_t i = 0; i < lst_count; i++) {
        xd_listener_t *l = &lst_table[i];
        if (l->worker >= 0 && (unsigned)l->worker != xd_worker_index(w))
            continue; /* pinned to another worker (listener option `worker`) */
        uv_tcp_t *h = &ws->listen[ws->nlisten];
        int rc = uv_tcp_init_ex(loop, h, l->addr.ss_family);
        if (rc != 0) {
            XD_LOG(NULL, XD_ERROR, "listen failed", "listener=%s err=%s", l->name,
                   xd_strerror(rc));
            continue;
        }
        h->data = l;
        uv_os_fd_t fd;
        int one = 1;
        unsigned flags = 0;
        if (uv_fileno((uv_handle_t *)h, &fd) == 0)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (l->addr.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&l->addr;
            if (!IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr))
                flags |= UV_TCP_IPV6ONLY;
        }
        rc = uv_tcp_bind(h, (const struct sockaddr *)&l->addr, flags);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)h, l->backlog, lst_on_connection);
        if (rc != 0) {
            XD_LOG(NULL, XD_ERROR, "listen failed", "listener=%s worker=%u err=%s", l->name,
                   xd_worker_index(w), xd_strerror(rc));
            uv_close((uv_handle_t *)h, NULL);
        }
        ws->nlisten++;
    }
}

void
xd_listeners_stop_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    if (!ws)
        return;
    ws->stopping = true;
    for (size_t i = 0; i < ws->nlisten; i++)
        if (!uv_is_closing((uv_handle_t *)&ws->listen[i]))
            uv_close((uv_handle_t *)&ws->listen[i], NULL);
}

void
xd_listeners_free(void)
{
    for (unsigned i = 0; i < XD_MAX_WORKERS; i++) {
        if (lst_ws[i]) {
            xd_free(lst_ws[i]->listen);
            xd_free(lst_ws[i]->byid);
            xd_free(lst_ws[i]);
            lst_ws[i] = NULL;
        }
    }
    for (size_t i = 0; i < lst_count; i++) {
        xd_listener_t *l = &lst_table[i];
        for (size_t j = 0; j < l->nsecrets; j++) {
            xd_free(l->secrets[j].domain);
            xd_free(l->secrets[j].password);
        }
        xd_free(l->secrets);
        xd_free(l->password);
        if (l->ext && l->role->listener_free)
            l->role->listener_free(l);
    }
    xd_free(lst_table);
    lst_table = NULL;
    lst_count = 0;
}
