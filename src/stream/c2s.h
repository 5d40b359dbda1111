/*
 * c2s.h — client-to-server streams (RFC 6120 4).
 *
 * A connection belongs to the worker that accepted it; only that worker's
 * loop touches it.  This is the stream skeleton the client-connections
 * issue builds on: stream header checks, features, stream errors, the
 * handshake timeout and the graceful close on both sides.
 */
#ifndef XMPPD_STREAM_C2S_H
#define XMPPD_STREAM_C2S_H

#include <uv.h>

#include "core/worker.h"
#include "stream/listener.h"
#include "stream/tls.h"
#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/jid.h"

/* Accepts one pending connection on `server` (a listener of worker w). */
void xd_c2s_accept(xd_worker_t *w, uv_stream_t *server, xd_listener_t *l);

/* Closes the session bound to the full JID with a stream error (any
 * thread; the close happens on the owner worker).  XD_ENOTFOUND. */
int xd_c2s_kick(const xd_jid_t *full, xd_stream_cond cond, const char *text);

/* Hands st to the session conn_id on worker `worker` (any thread; takes
 * over the reference).  When that session is gone by the time the message
 * arrives, the sender gets service-unavailable (RFC 6121 8.5.3.2). */
void xd_c2s_deliver(unsigned worker, uint64_t conn_id, xd_stanza_t *st);


/* Installs the certificate store used by STARTTLS and direct TLS from now
 * on (takes over the caller's reference; NULL = no TLS).  Any thread. */
void xd_c2s_set_tls_store(xd_tls_store_t *st);


/* Registers connected_users, connected_users_number and kick_session. */
void xd_c2s_register_commands(void);

/* Worker start (after its state is set): starts the idle sweep. */
void xd_c2s_start_worker(xd_worker_t *w);

/* Server stop: closes every stream of w with system-shutdown. */
void xd_c2s_shutdown_worker(xd_worker_t *w);

#endif
