/*
 * http_int.h — inside the HTTP server (src/http): the listener settings,
 * the connection's HTTP state and what the built-in handlers (WebSocket,
 * host-meta) use beyond xmppd/http.h.
 */
#ifndef XMPPD_HTTP_INT_H
#define XMPPD_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/conn.h"
#include "xmppd/http.h"

/* An http listener's settings (l->ext), copied from its listen entry. */
typedef struct http_listener {
    char **route_path;        /* request_handlers: path prefixes ... */
    char **route_handler;     /* ... and handler names; NULL: the defaults */
    size_t nroutes;
    size_t max_header;        /* request line + headers */
    size_t max_body;          /* collected bodies */
    uint64_t header_ms;       /* header timeout, keep-alive idle */
    uint64_t handshake_ms;    /* the listener's handshake_timeout (WebSocket c2s streams) */
    int rate;                 /* requests per second per connection */
    char **cors;              /* cors_origins */
    size_t ncors;
    char **ws_origins;        /* websocket_origins */
    size_t nws_origins;
    uint64_t ws_ping_ms;      /* websocket_ping_interval */
    char *ws_see_other;       /* websocket_see_other_uri, or NULL */
    /* BOSH (bosh.c) */
    uint64_t bosh_inactivity_ms, bosh_wait_ms, bosh_pause_ms;
    unsigned bosh_hold, bosh_requests;
    size_t bosh_queue;
} http_listener_t;

/* The stream role of http listeners: a connection that is no stream
 * until a WebSocket upgrade makes it a client stream (xd_c2s_role). */
extern const xd_conn_role_t xd_http_role;

/* Registers the built-in handlers (websocket, host_meta); once at start. */
void xd_http_setup(void);

/* The listener settings of r's connection. */
const http_listener_t *http_req_listener(const xd_http_req_t *r);
xd_conn_t *http_req_conn(const xd_http_req_t *r);

/* The path prefix that serves handler `name` on r's listener, or NULL. */
const char *http_route_of(const xd_http_req_t *r, const char *name);

/* Answers 101 with the given extra header lines ("Name: v\r\n…") and
 * hands the connection to `start` once the request is complete: the
 * bytes after the request are its first input. */
typedef void (*http_upgrade_fn)(xd_conn_t *c, const http_listener_t *hl, const char *rest,
                                size_t n);
void http_upgrade(xd_http_req_t *r, const char *headers, http_upgrade_fn start);

/* Built-in handlers. */
void http_ws_setup(void);
void http_hostmeta_setup(void);
void http_bosh_setup(void);

#endif
