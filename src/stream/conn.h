/*
 * conn.h — the stream connection: one XML stream over TCP, with or without
 * TLS, whatever speaks on it (RFC 6120 4, 5).  Client streams (c2s.c),
 * server-to-server streams and external components (src/s2s) are roles of
 * this one connection, so the transport is written once: reading, TLS, the
 * parser and its limits, writing with a bounded queue, the shaper, the
 * handshake/idle timer, stream headers, stream errors and the closing
 * handshake.  Owner worker only: a connection is touched by the worker that
 * accepted (or opened) it and nobody else.
 *
 * Stream states (c->state):
 *
 *   HEADER ──valid header──► OPEN ──stream restart (TLS, SASL)──► HEADER
 *     │                        │
 *     │ bad header, bad XML,   │ bad XML, timeout, kick, server stop,
 *     │ handshake timeout      │ peer </stream>, TLS error
 *     ▼                        ▼
 *   CLOSING: our header (if not yet sent), <stream:error/>, </stream:stream>
 *            written (through TLS when on), close_notify, write side shut
 *            down; read and discard until the peer closes or the linger
 *            timer fires ──► uv_close ──► freed in its close callback
 *
 * Input path: socket ─► [TLS] ─► conn input ─► XML parser ─► role.  While a
 * role waits for an asynchronous answer (auth backend, a delay) it
 * "blocks" the stream: the parser is paused after the element being
 * handled, unconsumed plaintext is kept in c->inbuf, TLS delivery is paused
 * and reading stops, so memory stays bounded and later stanzas wait
 * (RFC 6120 10.1).  Unblocking feeds c->inbuf first, then the TLS engine's
 * queue, then reads again.
 *
 * A connection is never freed inside its own callbacks: everything goes
 * through uv_close, whose callback frees it (libuv rule, STYLE.md 3.7 R5).
 * Asynchronous answers reach a connection through an xd_conn_op_t that the
 * connection detaches when it closes first.
 */
#ifndef XMPPD_STREAM_CONN_H
#define XMPPD_STREAM_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/worker.h"
#include "stream/listener.h"
#include "stream/tls.h"
#include "stream/wstate.h"
#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/log.h"
#include "xml/parse.h"

typedef enum { C2S_HEADER, C2S_OPEN, C2S_CLOSING } c2s_state;

struct xd_conn_op;
struct xd_listen_conf;
struct xd_conn;

/* A transport under the stream (HTTP, WebSocket: src/http): when c->xport
 * is set, the plaintext from the peer goes to it instead of the XML
 * parser, and what the role writes goes through it instead of to the
 * wire.  It feeds the parser with c2s_feed and writes the wire with
 * c2s_write_wire.  Owner worker only. */
typedef struct xd_conn_xport {
    const char *name; /* "http", "websocket": logs */
    /* Plaintext from the peer: 0, or XD_TLS_PAUSE when c is paused (the
     * transport keeps what it did not consume and takes it on resume). */
    int (*input)(struct xd_conn *c, const char *p, size_t n);
    /* Stream bytes the role writes (our header, stanzas, </stream:stream>). */
    void (*write)(struct xd_conn *c, const char *p, size_t n);
    /* Input resumes (c2s_unblock): what the transport kept goes first (optional). */
    void (*resume)(struct xd_conn *c);
    /* Everything queued was written (optional). */
    void (*drained)(struct xd_conn *c);
    /* Our side is closing, before the write side is shut down (optional). */
    void (*closing)(struct xd_conn *c);
    /* The connection is freed: release c->xs. */
    void (*free)(struct xd_conn *c);
} xd_conn_xport_t;

/* What a stream role does with its events (all on the owner worker; the
 * connection is valid for the call). */
typedef struct xd_conn_role {
    const char *name;        /* "c2s", "component", "s2s-in", "s2s-out": logs */
    const char *content_ns;  /* the stream's default namespace */
    bool request_cert;       /* server-side TLS asks for the peer's certificate (s2s) */
    bool initiator;          /* we opened the connection: our header is not an answer */
    bool dialback_ns;        /* the header declares xmlns:db (server streams) */
    /* A connection was accepted on a listener of this role (optional). */
    void (*accepted)(struct xd_conn *c);
    /* A stream header arrived (state HEADER): check it, answer (c2s_send_header_as). */
    void (*stream_open)(struct xd_conn *c, const xd_el_t *hdr);
    /* A first-level element in state OPEN; the role takes the reference
     * (so it may pass the stanza on, or thaw it, without a copy). */
    void (*element)(struct xd_conn *c, xd_stanza_t *el);
    /* The TLS handshake finished (optional). */
    void (*tls_up)(struct xd_conn *c);
    /* Our side of the stream is closing (the error, if any, is written):
     * end what the stream carried, now rather than when the socket goes
     * (optional; called once). */
    void (*closing)(struct xd_conn *c);
    /* The connection is being freed: release c->rs (optional). */
    void (*closed)(struct xd_conn *c);
    /* A listener of this role is prepared: its own settings from the
     * listen entry, kept in l->ext until listener_free (optional). */
    int (*listener_prepare)(struct xd_listener *l, const struct xd_listen_conf *lc, char **err);
    void (*listener_free)(struct xd_listener *l);
} xd_conn_role_t;

typedef struct xd_conn {
    uv_tcp_t tcp;                /* first member: the handle is the connection */
    struct xd_conn *prev, *next; /* ws->conns list */
    xd_wstate_t *ws;             /* owner worker's state */
    xd_listener_t *listener;     /* where it was accepted; counter decremented on free */
    uint64_t id;                 /* process-unique connection id */
    xd_xml_parser_t *parser;     /* the current stream's parser */
    xd_timer_t *timer;           /* handshake, then idle timeout, then linger */
    xd_timer_t *delay;           /* shaper pause */
    xd_tls_t *tls;               /* TLS engine once STARTTLS or direct TLS began */
    bool secure_carrier;         /* no socket of its own, carried over TLS (BOSH over
                                  * HTTPS): secure, but no channel binding */
    struct xd_conn_op *op;       /* outstanding asynchronous request, or NULL */
    xd_log_t log;                /* conn= ip= [host=] [jid=] */
    c2s_state state;             /* see the diagram */
    bool header_sent;            /* our <stream:stream> of this stage is out */
    bool shut;                   /* uv_shutdown requested */
    bool restart;                /* a handler reset the parser: a new stream follows */
    bool starttls_go;            /* <proceed/> sent: the rest of the input is TLS */
    bool tls_ws;                 /* ... once the old stream's whitespace is skipped */
    bool reading;                /* uv_read_start is in force */
    bool blocked;                /* input paused (role, holds, quiesced or shaped) */
    bool role_blocked;           /* c2s_block: the role waits for an answer */
    bool quiesced;               /* the server stops: no more input */
    unsigned holds;              /* xd_input_hold count (xmppd/input.h) */
    bool overflow;               /* the write queue overflowed: closing, writes dropped */
    bool established;            /* authenticated (and bound): the idle timer applies */
    bool error_sent;             /* we closed the stream with a stream error ... */
    xd_stream_cond close_cond;   /* ... this one */
    char *host;                  /* the served domain of the stream (owned) */
    char *inbuf;                 /* plaintext received while blocked, not yet parsed */
    size_t inbuf_len, inbuf_cap; /* bytes held, allocated */
    uint64_t last_input_ms;      /* loop time of the last bytes read */
    bool trimmed;                /* the parser gave its buffers back since then */
    double tokens;               /* shaper: bytes that may be read now (< 0: debt) */
    uint64_t tokens_ms;          /* shaper: when tokens was last refilled */
    bool shaped;                 /* shaper: input paused until the debt is paid */
    uint64_t shaped_count;       /* shaper: pauses so far (logs) */
    uint64_t charged_bytes;      /* bytes billed by xd_input_charge so far (logs) */
    struct sockaddr_storage peer; /* the peer's address (acl ip: rules) */
    char ip[48];                 /* printable peer address */
    char lang[36];               /* xml:lang of the stream */
    char sid[33];                /* stream id of this stage, 128 random bits in hex */
    const xd_conn_role_t *role;  /* who handles the stream */
    void *rs;                    /* the role's state */
    const xd_conn_xport_t *xport; /* the transport under the stream, or NULL (conn.h) */
    void *xs;                    /* the transport's state */
    uint32_t wb_slot;            /* write batch (conn.c): 1 + place in the worker's list, 0: none */
    uint32_t wb_head, wb_tail;   /* ... this turn's writes, chained, */
    uint32_t wb_n;               /* ... how many */
    size_t wb_bytes;             /* ... and their bytes */
} xd_conn_t;

/* An outstanding asynchronous request's token.  The connection drops its
 * pointer (c = NULL) when it closes first; the answer then only frees the
 * op.  A role may embed it first in a larger struct. */
typedef struct xd_conn_op {
    xd_conn_t *c; /* NULL once the connection is gone */
} xd_conn_op_t;

/* Writes stream bytes or a stanza to the peer (through TLS when on). */
void c2s_write(xd_conn_t *c, const char *data, size_t len);
void c2s_write_str(xd_conn_t *c, const char *s);
void c2s_send_stanza(xd_conn_t *c, const xd_stanza_t *st);
/* Answers an IQ with a stanza error (nothing for a result or an error). */
void c2s_send_iq_error(xd_conn_t *c, const xd_stanza_t *st, xd_cond cond, const char *text);
/* Sends the stream error and closes the stream. */
void c2s_close(xd_conn_t *c, xd_stream_cond cond, const char *text);

/* A new stream id for this stage (called when a header is answered). */
void c2s_new_sid(xd_conn_t *c);

/* Writes our stream header (see c2s_new_sid): 'from' = from (NULL:
 * c->host or the default host), 'to' = to_attr (NULL: none), the content
 * namespace and dialback declaration of the role, version='1.0' unless
 * no_version (XEP-0114 streams have none). */
void c2s_send_header_as(xd_conn_t *c, const char *from, const char *to_attr, bool no_version);

/* Starts the server side of TLS on c (STARTTLS: after <proceed/>; direct
 * TLS: at accept) with `default_host`'s certificate unless SNI names
 * another.  false (and c closed) on failure. */
bool c2s_tls_begin(xd_conn_t *c, const char *default_host);

/* Starts the server side of STARTTLS as RFC 6120 5.4.2 says: when not
 * offered on the listener or already secure, a <failure/> and a stream
 * error.  `allowed` is the role's own say (a client after SASL: false). */
void c2s_starttls(xd_conn_t *c, const xd_el_t *el, bool allowed);

/* Opens a role connection over the connected socket fd (now ours) on
 * worker w: the limits and timeouts of l (a listener-shaped settings
 * struct for outgoing streams), the role and its state rs (set before any
 * callback).  Reading starts and l->handshake_timeout_ms runs; nothing is
 * written.  NULL (fd closed, rs untouched, no role callback) when the
 * socket cannot be adopted or l->max_connections are already open.  Owner
 * worker only. */
xd_conn_t *c2s_conn_open(xd_worker_t *w, int fd, xd_listener_t *l, const xd_conn_role_t *role,
                         void *rs);

/* Starts the client side of TLS on c (outgoing server streams): SNI and the
 * name to verify are `remote`, our certificate is the one for `local`,
 * alpn "xmpp-server" for direct TLS or NULL.  The role's tls_up runs when
 * the handshake is done.  false when it cannot start (c is then being
 * closed). */
bool c2s_tls_client(xd_conn_t *c, const char *local, const char *remote, const char *alpn);

/* The certificate store in use (a new reference, or NULL without TLS). */
xd_tls_store_t *c2s_tls_store_get(void);

/* The connection id on worker w (owner worker only), or NULL. */
xd_conn_t *c2s_conn_find(xd_worker_t *w, uint64_t id);

/* Closes connection id on `worker` with a stream error (any thread). */
void c2s_post_close(unsigned worker, uint64_t id, xd_stream_cond cond, const char *text);

/* Marks a stream authenticated: from now the listener's idle timeout
 * applies instead of its handshake timeout. */
void c2s_established(xd_conn_t *c);

/* Hands st to connection conn_id on worker `worker` (any thread; takes the
 * reference): written if it is still open and established, else the sender
 * gets service-unavailable.  For server streams and components; client
 * sessions are reached through the session manager. */
void c2s_deliver(unsigned worker, uint64_t conn_id, xd_stanza_t *st);

/* Pauses input while an asynchronous answer is outstanding, and resumes
 * it (parsing what arrived meanwhile) unless holds (xmppd/input.h) or a
 * stop keep it paused. */
void c2s_block(xd_conn_t *c);
void c2s_unblock(xd_conn_t *c);

/* An outstanding request's token (xd_conn_op_t, or a larger struct of
 * `size` bytes that starts with one) and its return: the second gives the
 * connection back, or NULL when it closed meanwhile, and frees op. */
xd_conn_op_t *c2s_op_new(xd_conn_t *c, size_t size);
xd_conn_t *c2s_op_done(xd_conn_op_t *op);

/* Transports (xd_conn_xport_t): stream text to the XML parser (0 or
 * XD_TLS_PAUSE, as xport->input), bytes to the wire (through TLS when
 * on), the connection's one timer (0: stopped; it closes the connection
 * when it fires) and the end of the connection without a stream error. */
int c2s_feed(xd_conn_t *c, const char *p, size_t n);
void c2s_write_wire(xd_conn_t *c, const void *p, size_t n);
void c2s_set_timeout(xd_conn_t *c, uint64_t ms);
void c2s_end(xd_conn_t *c);
/* The bytes waiting in the connection's write queue. */
size_t c2s_queued(const xd_conn_t *c);

/* A connection without a socket for a transport that carries its stream
 * over many requests (BOSH: src/http/bosh.c): a `role` stream on worker w
 * counted on listener l, its peer address `ip`, the handshake timer
 * running.  The caller sets c->xport and c->xs and calls the role's
 * accepted.  NULL at l's max_connections. */
xd_conn_t *c2s_conn_open_detached(xd_worker_t *w, xd_listener_t *l, const xd_conn_role_t *role,
                                  const char *ip);

/* True once TLS is up on the stream (or its carrier is TLS: secure_carrier). */
bool c2s_secure(const xd_conn_t *c);

/* ---- the worker side (listener.c, main.c) ---- */

/* Accepts one pending connection on `server` (a listener of worker w) and
 * hands it to the listener's role. */
void xd_conn_accept(xd_worker_t *w, uv_stream_t *server, xd_listener_t *l);

/* Worker start (after its state is set): starts the once-a-second sweep. */
void xd_conn_start_worker(xd_worker_t *w);

/* Registers the stream layer's input holds (xmppd/input.h) with the core;
 * once, before the workers start. */
void xd_conn_setup(void);

/* Server stop, first step: no stream of w reads more input; the work its
 * stanzas started goes on (see xd_workers_set_drain). */
void xd_conn_quiesce_worker(xd_worker_t *w);

/* Server stop: closes every stream of w with system-shutdown. */
void xd_conn_shutdown_worker(xd_worker_t *w);

/* Registers the stream layer's xmppctl commands (write_stats). */
void xd_conn_register_commands(void);

/* Installs the certificate store used by STARTTLS and direct TLS from now
 * on (takes over the caller's reference; NULL = no TLS).  Any thread. */
void xd_conn_set_tls_store(xd_tls_store_t *st);

#endif
