/*
 * xmppd/http.h — request handlers of the HTTP listeners (`module: http`).
 *
 * A module registers a named handler (xd_http_register, from its start);
 * a listener's `request_handlers` maps path prefixes to handler names
 * ({"/ws": websocket, "/bosh": bosh}), and a listener without that option
 * serves every handler at its default path.  The longest matching prefix
 * wins ("/upload" matches "/upload" and "/upload/…", never "/uploads").
 *
 * Everything below runs on the worker that owns the connection (the one
 * that accepted it); a request is valid from `request` until it is answered
 * (xd_http_respond, or xd_http_response_end) or `aborted` ran.  Work on
 * another thread comes back to that worker (xd_http_req_worker) and finds
 * the request again by its handle (xd_http_req_find), which fails once the
 * request is gone: a long-held request (BOSH) is answered that way, from
 * whatever event has something to say.
 *
 * Bodies: without a `body` callback the server collects the body (up to
 * the listener's max_body_size, else 413) and calls `request` when it is
 * complete (xd_http_req_body gives it).  With `body`, `request` runs as
 * soon as the headers are in and the body streams through `body` in the
 * pieces it arrives in, then `body(…, NULL, 0)` once at its end; the
 * handler may pause the input (xd_http_req_pause, a file being written on
 * the pool) and resume it, so a 100 MB upload never sits in memory.  The
 * handler of a streamed body sets its own limit (xd_http_req_length).
 *
 * Expect: 100-continue is the server's: the interim 100 goes out when the
 * body is about to be read: after `request` of a streamed body unless the
 * handler answered or paused, else at xd_http_req_resume.  A handler that
 * refuses from the headers (or after a pause, from a check on the pool)
 * thus answers before the client sends the body.
 *
 * A handler that keeps a request open (held, or a body paused, or a
 * response started) learns that it went away unanswered through `aborted`:
 * the client closed its connection (the server reads a held request's
 * connection for that) or the server closed it (a timeout, the stop).
 *
 * Responses: xd_http_respond for a whole body; for a large one
 * xd_http_response_start (status, length) then xd_http_response_write for
 * each piece and xd_http_response_end: `writable` runs whenever the write
 * queue is empty, so a handler writes one piece per call (a ranged GET of
 * a file).  The server adds Date, Server, Content-Length, Connection and
 * the CORS headers; HEAD requests get the headers without the body.
 */
#ifndef XMPPD_HTTP_H
#define XMPPD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct xd_http_req xd_http_req_t;

/* A request that may outlive the event that started it. */
typedef struct xd_http_handle {
    unsigned worker;  /* the owner worker's index */
    uint64_t conn_id; /* the connection */
    uint64_t seq;     /* the request on it */
} xd_http_handle_t;

typedef struct xd_http_handler {
    /* Headers in (and, without `body`, the whole body): answer now or later. */
    void (*request)(xd_http_req_t *r, void *ud);
    /* Streamed body bytes; data NULL and len 0 at the end (optional). */
    void (*body)(xd_http_req_t *r, const char *data, size_t len, void *ud);
    /* The write queue emptied during a started response (optional). */
    void (*writable)(xd_http_req_t *r, void *ud);
    /* The request goes away unanswered, or in the middle of a started
     * response: its client closed the connection, or the server did
     * (optional).  r, its handle and its data are valid during the call
     * only; it must not be answered (xd_http_req_find(handle) already
     * fails), so a handler frees its per-request data here and forgets
     * the handle.  Runs on the request's worker, at most once. */
    void (*aborted)(xd_http_req_t *r, void *ud);
    /* Methods allowed (405 and OPTIONS' Allow otherwise), "GET, HEAD, POST";
     * NULL: any method. */
    const char *methods;
} xd_http_handler_t;

/* Registers handler `name` ("websocket", "bosh", "upload"), served at
 * default_path on listeners without request_handlers (NULL: only where
 * named).  0 or XD_EEXIST.  Unregistering stops new requests from
 * reaching the handler, not the callbacks of requests already begun
 * (`aborted` of a held one among them): h and ud must stay valid for as
 * long as the process runs (static data of the module). */
int xd_http_register(const char *name, const char *default_path, const xd_http_handler_t *h,
                     void *ud);
void xd_http_unregister(const char *name);

/* ---- the request ---- */

const char *xd_http_req_method(const xd_http_req_t *r);  /* "GET" */
const char *xd_http_req_path(const xd_http_req_t *r);    /* "/upload/a/b", decoded: no */
const char *xd_http_req_query(const xd_http_req_t *r);   /* after '?', or "" */
/* The path below the handler's prefix ("/a/b" for "/upload"), or "". */
const char *xd_http_req_subpath(const xd_http_req_t *r);
/* A request header (case-insensitive name; the first of several), or NULL. */
const char *xd_http_req_header(const xd_http_req_t *r, const char *name);
/* The collected body (handlers without `body`), and its length. */
const char *xd_http_req_body(const xd_http_req_t *r, size_t *len);
/* Content-Length, or -1 (chunked, or none). */
int64_t xd_http_req_length(const xd_http_req_t *r);
const char *xd_http_req_ip(const xd_http_req_t *r); /* the client's address */
bool xd_http_req_secure(const xd_http_req_t *r);    /* came over TLS */
xd_http_handle_t xd_http_req_handle(const xd_http_req_t *r);
unsigned xd_http_req_worker(const xd_http_req_t *r);
/* The request of handle h if it is still waiting for its answer, or for
 * the rest of a started response (owner worker only), or NULL. */
xd_http_req_t *xd_http_req_find(xd_http_handle_t h);

/* The handler's own pointer for request r (NULL until set): the state of a
 * transfer, found again in `body`, `writable` and `aborted`. */
void xd_http_req_set_data(xd_http_req_t *r, void *data);
void *xd_http_req_data(const xd_http_req_t *r);

/* Streamed bodies: no more `body` calls until resume. */
void xd_http_req_pause(xd_http_req_t *r);
void xd_http_req_resume(xd_http_req_t *r);

/* ---- the response ---- */

/* Adds a response header (before the response starts); name and value
 * must not contain CR or LF. */
void xd_http_add_header(xd_http_req_t *r, const char *name, const char *value);
/* The whole response; r is gone afterwards. */
void xd_http_respond(xd_http_req_t *r, int status, const char *content_type, const void *body,
                     size_t len);
/* An error page: status and a short plain-text reason. */
void xd_http_error(xd_http_req_t *r, int status, const char *text);
/* A response of `length` body bytes written piecewise (-1: unknown, the
 * connection closes at its end). */
void xd_http_response_start(xd_http_req_t *r, int status, const char *content_type,
                            int64_t length);
void xd_http_response_write(xd_http_req_t *r, const void *data, size_t len);
/* The response is complete; r is gone afterwards. */
void xd_http_response_end(xd_http_req_t *r);
/* Bytes queued on the connection (a writer waits for `writable` above a few 100 KB). */
size_t xd_http_queued(const xd_http_req_t *r);

/* ---- discovery (XEP-0156) ---- */

/* A link host-meta lists (rel "urn:xmpp:alt-connections:xbosh"), with the
 * path on this listener ("/bosh"); a BOSH module adds its own.  0 or
 * XD_EEXIST. */
int xd_http_hostmeta_link(const char *rel, const char *handler_name);

#endif
