/*
 * listener.h — TCP listeners shared by all workers (DESIGN.md 2).
 *
 * Each worker listens on every configured address with its own socket and
 * SO_REUSEPORT, so the kernel spreads new connections over the workers and a
 * connection lives on the worker that accepted it (its owner) for its whole
 * life.  A listener with the option `worker: N` is opened by worker N alone,
 * so all of its connections live there.  Before the workers start,
 * xd_listeners_prepare() binds each address once WITHOUT SO_REUSEPORT: that
 * fails when any other process holds the port, which SO_REUSEPORT alone
 * would silently share.
 */
#ifndef XMPPD_STREAM_LISTENER_H
#define XMPPD_STREAM_LISTENER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/worker.h"

#define XD_MAX_WORKERS 256 /* the config allows 1..256 */

typedef enum xd_listen_module {
    XD_LISTEN_C2S,
    XD_LISTEN_S2S,
    XD_LISTEN_COMPONENT,
    XD_LISTEN_HTTP,
} xd_listen_module;

/* One listening address, immutable after prepare except the counter. */
typedef struct xd_listener {
    struct sockaddr_storage addr; /* resolved address */
    socklen_t addrlen;            /* its length */
    char name[64];                /* "127.0.0.1:5222" / "[::1]:5222" for logs */
    xd_listen_module module;      /* what runs on accepted connections */
    int backlog;                  /* listen(2) backlog */
    unsigned max_connections;     /* across all workers */
    size_t max_stanza_bytes;      /* parser limit for this listener */
    uint64_t handshake_timeout_ms;/* until authenticated and bound (c2s) */
    uint64_t idle_timeout_ms;     /* close after this long without input; 0 = never */
    bool starttls;                /* offer STARTTLS */
    bool starttls_required;       /* no SASL or stanzas before TLS */
    bool tls;                     /* direct TLS (XEP-0368) */
    bool tls_verify;              /* c2s: request client certificates (SASL EXTERNAL) */
    char access[64];              /* access rule deciding who may log in here */
    uint64_t shaper_rate;         /* bytes/s read per connection; 0 = unlimited */
    uint64_t shaper_burst;        /* token bucket size in bytes */
    size_t max_queue_bytes;       /* write queue beyond which a stream is closed */
    int worker;                   /* the only worker that opens it; -1 = every worker */
    const struct xd_conn_role *role; /* the stream kind (stream/conn.h) */
    char *password;               /* component: the shared secret for every domain, or NULL */
    struct xd_listener_secret *secrets; /* component: per-domain secrets (`hosts`) */
    size_t nsecrets;              /* how many */
    void *ext;                    /* the role's own settings (http: src/http) */
    _Atomic unsigned connections; /* open connections, all workers */
} xd_listener_t;

/* A component domain and its XEP-0114 secret (listener option `hosts`). */
typedef struct xd_listener_secret {
    char *domain;   /* normalised */
    char *password; /* the secret */
} xd_listener_secret_t;

/* The secret for component `domain` on listener l (per-domain first, then
 * the listener's password), or NULL when the domain may not connect. */
const char *xd_listener_component_secret(const xd_listener_t *l, const char *domain);

struct xd_config;

/* Resolves and probes every c2s, s2s and component listener of `cfg`.  On error *err is a
 * malloc'd message ("cannot listen on 127.0.0.1:5222: address already in
 * use").  Call before xd_workers_start. */
int xd_listeners_prepare(const struct xd_config *cfg, char **err);

/* The stream role of listeners of `module` (client streams are built in;
 * the s2s manager installs its roles for s2s and component listeners).
 * Before xd_listeners_prepare. */
void xd_listeners_set_role(xd_listen_module module, const struct xd_conn_role *role);

/* Worker hooks: open the per-worker sockets (and start the connections'
 * sweep) / refuse new connections and close the sockets (streams are
 * closed by xd_conn_shutdown_worker). */
void xd_listeners_start_worker(xd_worker_t *w);
void xd_listeners_stop_worker(xd_worker_t *w);

/* Frees what prepare allocated (after the workers joined). */
void xd_listeners_free(void);

/* "c2s", "s2s", "component" or "http": what runs on l's connections. */
const char *xd_listener_module_name(const xd_listener_t *l);

/* Number of prepared listeners and their descriptions, for the ready log. */
size_t xd_listeners_count(void);
const xd_listener_t *xd_listeners_get(size_t i);

#endif
