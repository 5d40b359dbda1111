/*
 * s2s_int.h — what the files of the s2s manager share (s2s.c: routes,
 * policy, commands; s2s_out.c: outgoing streams; s2s_in.c: incoming
 * streams).  Nothing outside src/s2s includes it.
 */
#ifndef XMPPD_S2S_S2S_INT_H
#define XMPPD_S2S_S2S_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "s2s/dialback.h"
#include "s2s/s2s.h"
#include "stream/conn.h"
#include "xmppd/conds.h"

#define S2S_DOMAIN_MAX 1024 /* bytes of a domain, with NUL */

/* The settings in force (xd_s2s_configure), copied out by s2s_conf(). */
typedef struct s2s_conf {
    bool require_encryption;   /* s2s_require_encryption */
    bool verify_certificates;  /* s2s_verify_certificates */
    bool dialback;             /* s2s_dialback */
    uint64_t connect_timeout_ms;
    uint64_t timeout_ms;       /* idle */
    unsigned queue_max;
    bool multiplex;            /* s2s_multiplex */
} s2s_conf_t;

void s2s_conf(s2s_conf_t *out);

/* s2s_access for `remote` (any thread). */
bool s2s_allowed(const char *remote);

/* True when `domain` is ours: a served host or a service domain. */
bool s2s_is_local(const char *domain);

/* The dialback key for (receiving, originating, stream id) with the node
 * secret, and its check. */
int s2s_key(const char *receiving, const char *originating, const char *id,
            char out[XD_DIALBACK_KEY_LEN + 1]);
bool s2s_key_ok(const char *receiving, const char *originating, const char *id, xd_str_t key);

/* Writes an element built with el.h to c and frees the builder. */
void s2s_send_el(xd_conn_t *c, xd_el_t *el);

/* ---- routes (s2s.c), called by s2s_out.c on the route's worker ---------------------------- */

/* The outgoing connection c now carries the route (local, remote). */
void s2s_route_attach(const char *local, const char *remote, uint64_t conn_id);
/* The route is authenticated: its queued stanzas are written to c.  mux:
 * other local domains may be added to this stream with dialback. */
void s2s_route_up(const char *local, const char *remote, xd_conn_t *c, const char *auth,
                  bool mux);
/* Piggybacking (below) did not work out for (local, remote): the route
 * gets a stream of its own, started on the calling worker w. */
void s2s_route_unmux(xd_worker_t *w, const char *local, const char *remote);
/* The attempt or stream of the route ended (conn_id 0: before a connection
 * existed): queued stanzas bounce with cond, waiting verifications are
 * answered with an error. */
void s2s_route_down(const char *local, const char *remote, uint64_t conn_id, xd_cond cond);

/* A dialback verification (XEP-0220 2.1.3) that an incoming stream asks the
 * authoritative server for.  Queued on the route (local, remote). */
typedef struct s2s_verify {
    struct s2s_verify *next;
    char id[128];        /* the incoming stream's id */
    char key[256];       /* the key the originating server sent */
    char local[256];     /* the domain of ours it was sent to (the route's local) */
    unsigned worker;     /* the incoming stream that waits */
    uint64_t conn_id;
} s2s_verify_t;

/* Takes the route's verifications not yet sent (a list the caller frees). */
s2s_verify_t *s2s_route_take_verifies(const char *local, const char *remote);

/* Incoming side: asks for a verification over the route (local, remote),
 * opening it when needed.  Any worker. */
void s2s_verify_request(const char *local, const char *remote, const char *id, const char *key,
                        unsigned worker, uint64_t conn_id);

/* Hands the outcome to the incoming stream that asked (any thread); the
 * pair is (v->local or local, remote). */
void s2s_verify_answer(const s2s_verify_t *v, const char *local, const char *remote,
                       xd_dialback_type type);

/* ---- s2s_out.c ---------------------------------------------------------------------------- */

/* Starts the outgoing route (local, remote) on the calling worker w. */
void s2s_out_begin(xd_worker_t *w, const char *local, const char *remote);

/* The route's stream may have verifications to send (posted by s2s.c). */
void s2s_out_kick(xd_worker_t *w, uint64_t conn_id);

/* Multiplexing (XEP-0220 2.6): authenticate `local` on the established
 * outgoing stream conn_id too, with a <db:result/> of its own; the route
 * (local, remote) comes UP on that stream, or falls back to a stream of its
 * own (s2s_route_unmux). */
void s2s_out_mux(xd_worker_t *w, uint64_t conn_id, const char *local, const char *remote);

/* Per-worker state: the resolver and the attempts without a connection. */
void s2s_out_worker_start(xd_worker_t *w);
void s2s_out_worker_stop(xd_worker_t *w);

/* The settings outgoing connections use as their "listener". */
xd_listener_t *s2s_out_listener(void);

extern const xd_conn_role_t s2s_out_role;

/* ---- s2s_in.c ----------------------------------------------------------------------------- */

/* The verification asked with s2s_verify_request came back (owner worker
 * of c). */
void s2s_in_verified(xd_conn_t *c, const char *local, const char *remote, xd_dialback_type type);

/* ---- the registry of authenticated streams (s2s_connections) ------------------------------ */

/* A stream authenticated (local, remote) with `auth` ("sasl", "dialback",
 * "dialback-cert"); direction out or in.  Removed by s2s_registry_drop. */
void s2s_registry_add(bool out, const char *local, const char *remote, const char *auth,
                      unsigned worker, uint64_t conn_id);
void s2s_registry_drop(uint64_t conn_id);

#endif
