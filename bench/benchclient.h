/*
 * benchclient.h — the XMPP client streams of the C load drivers in bench/
 * (pepload.c, mucjoin.c): one libuv loop, many plain-TCP streams on
 * loopback, each logged in with SASL PLAIN (optionally registered in-band
 * first, XEP-0077), bound, and given a session when the server's features
 * require one.  Input is split into top-level elements by scanning the
 * tags (quotes in attribute values respected; comments, CDATA and the XML
 * declaration skipped; no full XML parse): a driver sees each element as
 * bytes and looks into it with bc_has / bc_name / bc_attr.
 *
 * A driver embeds bc_conn_t as the FIRST member of its own connection
 * struct (so the callbacks may cast back), fills one bc_client_t with its
 * settings and callbacks, calls bc_init, then bc_connect per stream.  The
 * login elements (features, <success/>, <failure/>, the answers to the
 * register, bind and session IQs) and a stream error are handled here;
 * every other element goes to `element`.  Everything runs on the loop's
 * thread; connections are never freed (the driver owns their memory and
 * exits with its loop).
 *
 * Errors: bc_die prints "PROG: message" on stderr and exits 1.  A failed
 * login, a <failure/> and a stream error (unless `closing`) end the
 * program that way.
 */
#ifndef XMPPD_BENCH_BENCHCLIENT_H
#define XMPPD_BENCH_BENCHCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* One stream's login state.  The driver's own states (in a room, ...) are
 * fields of its own: the stream stays BC_ONLINE until it ends. */
typedef enum {
    BC_CONNECTING, /* TCP connect, then the stream header */
    BC_FEATURES1,  /* waiting for the features: then <iq register/> or <auth/> */
    BC_REGISTER,   /* waiting for the registration's answer (id reg) */
    BC_AUTH,       /* waiting for <success/> */
    BC_FEATURES2,  /* after the restart: then the bind */
    BC_BIND,       /* waiting for the bind result (id b1) */
    BC_SESSION,    /* waiting for the session result (id s1) */
    BC_ONLINE,     /* logged in: the driver's `online` has run */
    BC_ENDED,      /* the server ended the stream or the connection */
} bc_state;

typedef struct bc_conn bc_conn_t;

/* The program's settings and callbacks; one for all its streams, set
 * before bc_init and not changed after, but for `closing`. */
typedef struct bc_client {
    const char *prog;     /* program name: the prefix of its messages */
    uv_loop_t *loop;      /* the loop of every stream */
    const char *host;     /* server address (IPv4) */
    int port;             /* its c2s port */
    const char *domain;   /* the XMPP domain: to='' of the stream, @domain of messages */
    const char *password; /* every account's */
    int reg;              /* register each account in-band before the login */
    int closing;          /* the driver ends the streams: write errors and stream errors expected */
    uint64_t reads;       /* reads that brought data, all streams (a driver samples it) */
    /* One top-level element of c's stream that the login did not take;
     * `now` is bc_now_ns() of the read that completed it. */
    void (*element)(bc_conn_t *c, const char *el, size_t len, int64_t now);
    /* c is bound (and has its session): its state is BC_ONLINE. */
    void (*online)(bc_conn_t *c);
    /* c's stream or connection ended (its state is BC_ENDED now; `was`
     * is the state before); why: what happened. */
    void (*ended)(bc_conn_t *c, bc_state was, const char *why);
} bc_client_t;

/* One stream: the driver's connection struct starts with it. */
struct bc_conn {
    uv_tcp_t tcp;         /* the connection; tcp.data is this bc_conn_t */
    uv_connect_t creq;    /* its connect request */
    bc_client_t *cl;      /* the settings (set by bc_connect) */
    char user[32];        /* the account's local part (set by the driver) */
    const char *resource; /* the resource to bind (set by the driver) */
    bc_state state;       /* login state */
    int need_session;     /* the features required a session (RFC 3921) */
    /* Unparsed input: the incomplete top-level element (or tag) of the
     * last read.  scan: bytes of it already scanned; depth: elements open
     * inside it at scan (0: between top-level elements). */
    char *buf;
    size_t len, cap, scan;
    int depth;
};

/* Sets the program name of bc_die and the client of bc_connect. */
void bc_init(bc_client_t *cl);

/* CLOCK_MONOTONIC in ns (Python's time.perf_counter_ns() on Linux). */
int64_t bc_now_ns(void);

void bc_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* realloc that dies when out of memory. */
void *bc_xrealloc(void *p, size_t n);

/* Connects c (user and resource set) to the client's server and logs it
 * in; the client's `online` or `ended` follows. */
void bc_connect(bc_conn_t *c);

/* Sends n bytes on c after what is queued (nothing once the stream has
 * ended); closes the handle once they are out when close_after. */
void bc_send_bytes(bc_conn_t *c, const char *s, size_t n, int close_after);
void bc_sendf(bc_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Closes c's handle (once). */
void bc_close(bc_conn_t *c);

/* ---- looking into one element (el, len: as `element` gets it) ---- */

/* Whether needle occurs anywhere in the element. */
int bc_has(const char *el, size_t len, const char *needle);
/* The element's name (after '<'), its length in *n. */
const char *bc_name(const char *el, size_t len, size_t *n);
/* Whether (name, n) is want. */
int bc_is(const char *name, size_t n, const char *want);
/* The raw value (entities as sent) of attribute `want` of the start tag at
 * el, its length in *vlen; NULL when absent. */
const char *bc_attr(const char *el, size_t len, const char *want, size_t *vlen);

#endif
