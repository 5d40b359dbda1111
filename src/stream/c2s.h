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

/* Accepts one pending connection on `server` (a listener of worker w). */
void xd_c2s_accept(xd_worker_t *w, uv_stream_t *server, xd_listener_t *l);

/* Server stop: closes every stream of w with system-shutdown. */
void xd_c2s_shutdown_worker(xd_worker_t *w);

#endif
