/*
 * c2s_int.h — the stream connection, shared by the files of the c2s
 * (c2s.c: stream, TLS, SASL, binding; register.c: XEP-0077) and by the
 * other kinds of XML stream that reuse its transport (socket, TLS, parser,
 * write queue, timers, closing): server-to-server streams and external
 * components (src/s2s).  Owner worker only; nothing outside src/stream and
 * src/s2s includes it.
 *
 * Roles: a connection with role NULL is a client stream (c2s.c does
 * everything).  Any other kind sets c->role; c2s.c then hands the stream
 * header, every first-level element and the TLS handshake to the role and
 * calls its `closed` when the connection is freed, and keeps the rest:
 * reading, TLS, the parser and its limits, writing with a bounded queue,
 * the handshake/idle timer, stream errors and the closing handshake.
 */
#ifndef XMPPD_STREAM_C2S_INT_H
#define XMPPD_STREAM_C2S_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/worker.h"
#include "stream/listener.h"
#include "stream/sasl.h"
#include "stream/tls.h"
#include "stream/wstate.h"
#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xml/parse.h"

typedef enum { C2S_HEADER, C2S_OPEN, C2S_CLOSING } c2s_state;

struct c2s_op;
struct xd_conn;

/* What a non-client stream does with its events (all on the owner worker;
 * the connection is valid for the call). */
typedef struct xd_conn_role {
    const char *name;        /* "component", "s2s-in", "s2s-out": logs */
    const char *content_ns;  /* the stream's default namespace */
    bool request_cert;       /* server-side TLS asks for the peer's certificate (s2s) */
    bool initiator;          /* we opened the connection: our header is not an answer */
    bool dialback_ns;        /* the header declares xmlns:db (server streams) */
    /* A connection was accepted on a listener of this role (optional). */
    void (*accepted)(struct xd_conn *c);
    /* A stream header arrived (state HEADER): check it, answer (c2s_send_header). */
    void (*stream_open)(struct xd_conn *c, const xd_el_t *hdr);
    /* A first-level element in state OPEN; lent (ref it to keep it). */
    void (*element)(struct xd_conn *c, xd_stanza_t *el);
    /* The TLS handshake finished (optional). */
    void (*tls_up)(struct xd_conn *c);
    /* The connection is being freed: release c->rs (optional). */
    void (*closed)(struct xd_conn *c);
} xd_conn_role_t;

typedef struct xd_conn {
    uv_tcp_t tcp;                /* first member: the handle is the connection */
    struct xd_conn *prev, *next; /* ws->conns list */
    xd_wstate_t *ws;             /* owner worker's state */
    xd_listener_t *listener;     /* where it was accepted; counter decremented on free */
    uint64_t id;                 /* process-unique connection id (sm entries carry it) */
    xd_xml_parser_t *parser;     /* the current stream's parser */
    xd_timer_t *timer;           /* handshake, then idle timeout, then linger */
    xd_timer_t *delay;           /* SASL failure delay; shaper pause */
    xd_tls_t *tls;               /* TLS engine once STARTTLS or direct TLS began */
    xd_sasl_t *sasl;             /* SASL engine of the current exchange */
    struct c2s_op *op;           /* outstanding auth backend request, or NULL */
    xd_jid_t *jid;               /* authorized bare JID after SASL; full JID once bound */
    xd_log_t log;                /* conn= ip= [host=] [jid=] */
    c2s_state state;             /* see the diagram */
    bool header_sent;            /* our <stream:stream> of this stage is out */
    bool shut;                   /* uv_shutdown requested */
    bool restart;                /* a handler reset the parser: a new stream follows */
    bool starttls_go;            /* <proceed/> sent: the rest of the input is TLS */
    bool authenticated;          /* SASL succeeded */
    bool anonymous;              /* ... by ANONYMOUS */
    bool bound;                  /* resource bound and in the session table */
    bool reading;                /* uv_read_start is in force */
    bool blocked;                /* input paused: auth answer or failure delay pending */
    bool delayed_close;          /* the failure being delayed is the last one allowed */
    bool registered;             /* an account was registered in-band on this stream */
    bool available;              /* the session's own presence is available */
    bool nonneg_seen;            /* ... with a priority >= 0 since it became available */
    char **directed;             /* JIDs it sent directed available presence to (RFC 6121 4.6) */
    size_t ndirected;            /* how many (at most C2S_MAX_DIRECTED) */
    unsigned auth_failures;      /* SASL failures that tested credentials */
    unsigned proto_failures;     /* SASL failures that did not (bad cb type, 'y', malformed) */
    bool sasl_checked;           /* this exchange asked the backend about the credentials */
    char *host;                  /* the served domain the client asked for */
    char *inbuf;                 /* plaintext received while blocked, not yet parsed */
    size_t inbuf_len, inbuf_cap; /* bytes held, allocated */
    char *pending_failure;       /* <failure/> to send when the delay ends */
    uint64_t last_input_ms;      /* loop time of the last bytes read */
    bool trimmed;                /* the parser gave its buffers back since then */
    uint64_t ping_sent_ms;       /* loop time of an unanswered server ping (XEP-0199), 0 = none */
    double tokens;               /* shaper: bytes that may be read now */
    uint64_t tokens_ms;          /* shaper: when tokens was last refilled */
    struct sockaddr_storage peer; /* the client's address (acl ip: rules) */
    char ip[48];                 /* printable peer address */
    char lang[36];               /* xml:lang of the stream */
    char sid[33];                /* stream id of this stage, 128 random bits in hex */
    const xd_conn_role_t *role;  /* NULL: a client stream; else who handles the stream */
    void *rs;                    /* the role's state */
    bool established;            /* role streams: authenticated (the idle timer applies) */
} xd_conn_t;

/* An outstanding auth backend request.  The connection drops its pointer
 * (c = NULL) when it closes first; the callback then only frees the op. */
typedef struct c2s_op {
    xd_conn_t *c; /* NULL once the connection is gone */
} c2s_op_t;

/* Writes stream bytes or a stanza to the client (through TLS when on). */
void c2s_write(xd_conn_t *c, const char *data, size_t len);
void c2s_send_stanza(xd_conn_t *c, const xd_stanza_t *st);
/* Answers a request with a stanza error (nothing for non-requests). */
void c2s_send_iq_error(xd_conn_t *c, const xd_stanza_t *st, xd_cond cond, const char *text);
/* Sends the stream error and closes the stream. */
void c2s_close(xd_conn_t *c, xd_stream_cond cond, const char *text);

/* Writes our stream header (a new id first when new_id): 'from' = from
 * (NULL: c->host or the default host), 'to' = to_attr (NULL: none), the
 * content namespace and dialback declaration of the role, version='1.0'
 * unless no_version (XEP-0114 streams have none). */
void c2s_send_header_as(xd_conn_t *c, const char *from, const char *to_attr, bool no_version);

/* Starts the server side of STARTTLS as c2s does (RFC 6120 5.4.2): when not
 * offered on the listener or already secure, a <failure/> and a stream
 * error. */
void c2s_starttls(xd_conn_t *c, const xd_el_t *el);

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

/* Marks a role stream authenticated: from now the listener's idle timeout
 * applies instead of its handshake timeout. */
void c2s_established(xd_conn_t *c);

/* Hands st to connection conn_id on worker `worker` (any thread; takes the
 * reference): written if it is still open and bound/established, else the
 * sender gets service-unavailable. */
void c2s_deliver(unsigned worker, uint64_t conn_id, xd_stanza_t *st);

/* Pauses input while an asynchronous answer is outstanding, and resumes
 * it (parsing what arrived meanwhile). */
void c2s_block(xd_conn_t *c);
void c2s_unblock(xd_conn_t *c);

/* An outstanding request's token (c2s_op_t) and its return: the second
 * gives the connection back, or NULL when it closed meanwhile. */
c2s_op_t *c2s_op_new(xd_conn_t *c);
xd_conn_t *c2s_op_done(c2s_op_t *op);

/* True once TLS is up on the stream. */
bool c2s_secure(const xd_conn_t *c);

/* ---- register.c (XEP-0077) ---- */

/* Whether to advertise <register xmlns='http://jabber.org/features/iq-register'/>. */
bool c2s_register_offered(const xd_conn_t *c);

/* Handles an IQ with <query xmlns='jabber:iq:register'/> before or after
 * authentication. */
void c2s_register_iq(xd_conn_t *c, const xd_stanza_t *st, const xd_el_t *query);

#endif
