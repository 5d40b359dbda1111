/*
 * wstate.h — per-worker state of the stream layer (owner worker only).
 *
 * Hung on the worker with xd_worker_set_data() by xd_listeners_start_worker()
 * and freed after the worker's loop has closed every handle.
 */
#ifndef XMPPD_STREAM_WSTATE_H
#define XMPPD_STREAM_WSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/worker.h"

struct xd_conn;

typedef struct xd_wstate {
    xd_worker_t *worker;        /* the owner */
    uv_tcp_t *listen;           /* one handle per listener, xd_listeners_count() */
    size_t nlisten;             /* how many were opened */
    struct xd_conn *conns;      /* all live connections, doubly linked */
    size_t nconns;              /* their number */
    bool stopping;              /* on_stop ran: refuse new connections */
    char rbuf[65536];           /* shared read buffer: parsing is synchronous */
    bool rbuf_busy;             /* lent to libuv between alloc_cb and read_cb */
    struct xd_conn **byid;      /* open-addressing table of conns by conn_id */
    size_t byid_cap;            /* slots, a power of two (0 = not allocated) */
    size_t byid_n;              /* live entries */
    struct xd_timer *sweep;     /* c2s: periodic trim of idle connections */
    struct s2s_worker *s2s;     /* s2s: the resolver and outgoing attempts (s2s_out.c) */
    struct c2s_wb *wb;          /* writes batched per loop turn (conn.c), NULL: off */
} xd_wstate_t;

static inline xd_wstate_t *
xd_wstate(xd_worker_t *w)
{
    return (xd_wstate_t *)xd_worker_data(w);
}

#endif
