/*
 * conn.c — the stream connection (conn.h): transport, TLS glue, parser,
 * limits, timers and the closing handshake, for every stream role.
 *
 * One xd_conn_t per TCP connection, owned by the worker that accepted or
 * opened it.  What is said on the stream is the role's (c2s.c for clients,
 * src/s2s for servers and components); this file only moves bytes and
 * elements and enforces the limits of the listener.  conn.h has the state
 * diagram and the input path.
 */
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/conn.h"

#include "core/worker.h"
#include "router/router.h"
#include "stream/tls.h"
#include "stream/wstate.h"
#include "xmppd/alloc.h"
#include "xmppd/cmd.h"
#include "xmppd/assert.h"
#include "xmppd/conds.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/input.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"
#include "xml/parse.h"

#define C2S_LINGER_MS 2000          /* wait for the peer's </stream:stream> */
#define C2S_SHUTDOWN_LINGER_MS 500  /* shorter while the server stops */
#define C2S_MAX_WRITE_QUEUE (4u << 20) /* queue bound of a listener that sets none */
#define C2S_SWEEP_MS 1000          /* how often idle connections are looked at */
#define C2S_TRIM_IDLE_MS 2000      /* silence after which a parser is trimmed */
#define C2S_TRIM_RELEASE 256       /* trimmed parsers in one sweep that call malloc_trim */

static _Atomic uint64_t c2s_next_id = 1;

/* The certificate store for STARTTLS and direct TLS, replaced on reload. */
static uv_mutex_t c2s_tls_lock;
static uv_once_t c2s_tls_once = UV_ONCE_INIT;
static xd_tls_store_t *c2s_tls_store;

static int c2s_input(xd_conn_t *c, const char *p, size_t n);


/* ---- connections by id (per worker) ------------------------------------------------------- */

static size_t
byid_slot(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ULL) >> 20) & (cap - 1);
}

static void
byid_put(xd_wstate_t *ws, xd_conn_t *c)
{
    if ((ws->byid_n + 1) * 2 > ws->byid_cap) {
        size_t ncap = ws->byid_cap ? ws->byid_cap * 2 : 64;
        xd_conn_t **nt = xd_calloc(ncap, sizeof *nt);
        for (size_t i = 0; i < ws->byid_cap; i++) {
            xd_conn_t *o = ws->byid[i];
            if (!o)
                continue;
            size_t j = byid_slot(o->id, ncap);
            while (nt[j])
                j = (j + 1) & (ncap - 1);
            nt[j] = o;
        }
        xd_free(ws->byid);
        ws->byid = nt;
        ws->byid_cap = ncap;
    }
    size_t j = byid_slot(c->id, ws->byid_cap);
    while (ws->byid[j])
        j = (j + 1) & (ws->byid_cap - 1);
    ws->byid[j] = c;
    ws->byid_n++;
}

static xd_conn_t *
byid_get(xd_wstate_t *ws, uint64_t id)
{
    if (!ws->byid_cap)
        return NULL;
    for (size_t j = byid_slot(id, ws->byid_cap); ws->byid[j]; j = (j + 1) & (ws->byid_cap - 1))
        if (ws->byid[j]->id == id)
            return ws->byid[j];
    return NULL;
}

static void
byid_del(xd_wstate_t *ws, xd_conn_t *c)
{
    if (!ws->byid_cap)
        return;
    size_t mask = ws->byid_cap - 1, j = byid_slot(c->id, ws->byid_cap);
    while (ws->byid[j] && ws->byid[j] != c)
        j = (j + 1) & mask;
    if (!ws->byid[j])
        return;
    ws->byid[j] = NULL;
    ws->byid_n--;
    /* Re-insert the rest of the cluster (linear probing deletion). */
    for (size_t k = (j + 1) & mask; ws->byid[k]; k = (k + 1) & mask) {
        xd_conn_t *o = ws->byid[k];
        ws->byid[k] = NULL;
        size_t s = byid_slot(o->id, ws->byid_cap);
        while (ws->byid[s])
            s = (s + 1) & mask;
        ws->byid[s] = o;
    }
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct {
    uv_write_t req;
    xd_stanza_t *st; /* the stanza whose bytes are written, or NULL: data holds a copy */
    char data[];
} c2s_wreq_t;

static void
c2s_on_write(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows up as a read error or EOF */
    c2s_wreq_t *w = req->data;
    xd_conn_t *c = (xd_conn_t *)req->handle;
    xd_stanza_unref(w->st);
    xd_free(w);
    if (c->xport && c->xport->drained && !uv_is_closing((uv_handle_t *)&c->tcp) &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
        c->xport->drained(c);
}

/* As much of data as the socket takes now, without a copy: the number of
 * bytes written (0 when a write is already queued or the socket is full). */
static size_t
c2s_write_now(xd_conn_t *c, const void *data, size_t len)
{
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) != 0)
        return 0; /* order: after what is queued */
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    return n > 0 ? (size_t)n : 0;
}

/* The rest of a write, queued: referencing st's bytes when st is given,
 * else copied (the caller's buffer may go away). */
static int
c2s_write_queue(xd_conn_t *c, const char *data, size_t len, const xd_stanza_t *st)
{
    c2s_wreq_t *w = xd_malloc(sizeof *w + (st ? 0 : len));
    w->st = st ? xd_stanza_ref(st) : NULL;
    if (!st) {
        memcpy(w->data, data, len);
        data = w->data;
    }
    w->req.data = w;
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, c2s_on_write);
    if (rc != 0) {
        xd_stanza_unref(w->st);
        xd_free(w);
    }
    return rc;
}

/* ---- writes batched per loop turn ---------------------------------------------------------------
 *
 * A fan-out writes one copy to each of many connections in one loop turn;
 * a write() each costs a system call, which in a virtual machine is most
 * of what a copy costs.  With io_uring (option io_uring, Linux), a write
 * that finds the connection's libuv queue empty is recorded instead
 * (referencing the stanza's bytes, or a copy); before the loop waits for
 * I/O again (a prepare handle), each connection with records gets one
 * sendmsg of them, all in one submission.  MSG_DONTWAIT: the kernel
 * completes every send inline (what the socket takes, or -EAGAIN), so
 * nothing stays in the ring between turns; the rest goes into libuv's
 * queue as a write that did not fit always did.  Order: a connection's
 * records are written before anything queued later (a write finding
 * records appends to them; libuv's queue is used only when it already
 * holds bytes, and then no records exist).  A connection that shuts down
 * or closes writes its records at once first (c2s_wb_flush_one). */

#define WB_NONE UINT32_MAX
#define WB_MAXIOV 64 /* records of one connection per sendmsg; more: written at once */
#define WB_MAXREC 1024 /* records of a worker; more: the turn's records are sent first */

typedef struct {
    const char *p;
    size_t len;
    xd_stanza_t *st; /* holds p; NULL: p is our copy */
    uint32_t next;   /* the connection's next record, or WB_NONE */
} c2s_wb_rec_t;

static int c2s_write_queue(xd_conn_t *c, const char *data, size_t len, const xd_stanza_t *st);
static void c2s_check_queue(xd_conn_t *c);

/* Per worker, for xmppctl write_stats (read from the control loop). */
static struct {
    _Atomic bool on;           /* batching in force */
    _Atomic uint64_t submits;  /* io_uring submissions */
    _Atomic uint64_t sends;    /* sendmsg of a connection's records */
    _Atomic uint64_t records;  /* writes recorded */
    _Atomic uint64_t rests;    /* sends whose rest went into libuv's queue */
    _Atomic uint64_t at_once;  /* connections written before the turn's end (closing, many records) */
    _Atomic uint64_t full;     /* turns whose records reached the bound (WB_MAXREC) */
    _Atomic uint64_t queued;   /* direct writes the socket did not take whole: rest queued */
} wb_stats[XD_MAX_WORKERS];

#define WB_COUNT(ws, f, n) \
    atomic_fetch_add_explicit(&wb_stats[xd_worker_index((ws)->worker)].f, (n), memory_order_relaxed)

#ifdef XD_HAVE_LIBURING
#include <liburing.h>

#define WB_RING 256 /* sends per submission */

struct c2s_wb {
    uv_prepare_t prep;    /* flushes before the loop polls */
    xd_wstate_t *ws;      /* whose */
    uint32_t maxrec;      /* WB_MAXREC (a test knob in debug builds) */
    struct io_uring ring;
    c2s_wb_rec_t *rec;    /* this turn's records */
    uint32_t nrec, caprec;
    xd_conn_t **dirty;    /* connections with records (NULL: written since) */
    uint32_t ndirty, capdirty;
    struct iovec iov[WB_RING * WB_MAXIOV > 4096 ? 4096 : WB_RING * WB_MAXIOV];
    struct msghdr msg[WB_RING];
    uint32_t sent[WB_RING]; /* the dirty slot of each send of a submission */
};
#endif

/* The end of a connection's records: `res` bytes of them were written
 * (< 0: none; an error other than EAGAIN drops the rest, as a failed
 * queued write does — the read side sees the error); the rest is queued. */
static void
c2s_wb_done(xd_conn_t *c, ssize_t res)
{
#ifdef XD_HAVE_LIBURING
    struct c2s_wb *wb = c->ws->wb;
    size_t done = res > 0 ? (size_t)res : 0;
    bool dead = res < 0 && res != UV_EAGAIN, rest = false;
    for (uint32_t i = c->wb_head; i != WB_NONE;) {
        c2s_wb_rec_t *r = &wb->rec[i];
        if (done >= r->len)
            done -= r->len;
        else if (!dead) {
            if (!rest)
                WB_COUNT(c->ws, rests, 1);
            rest = true;
            c2s_write_queue(c, r->p + done, r->len - done, r->st);
            done = 0;
        }
        if (r->st)
            xd_stanza_unref(r->st);
        else
            xd_free((char *)r->p);
        r->p = NULL;
        r->st = NULL;
        i = r->next;
    }
    wb->dirty[c->wb_slot - 1] = NULL;
#else
    (void)res;
#endif
    c->wb_slot = 0;
    c->wb_n = 0;
    c->wb_bytes = 0;
    c2s_check_queue(c);
}

/* A connection's records written now, without waiting for the turn's end. */
static void
c2s_wb_flush_one(xd_conn_t *c)
{
#ifdef XD_HAVE_LIBURING
    if (!c->wb_slot)
        return;
    struct c2s_wb *wb = c->ws->wb;
    uv_buf_t bufs[WB_MAXIOV];
    unsigned n = 0;
    for (uint32_t i = c->wb_head; i != WB_NONE && n < WB_MAXIOV; i = wb->rec[i].next)
        bufs[n++] = uv_buf_init((char *)wb->rec[i].p, (unsigned)wb->rec[i].len);
    WB_COUNT(c->ws, at_once, 1);
    c2s_wb_done(c, uv_try_write((uv_stream_t *)&c->tcp, bufs, n));
#else
    (void)c;
#endif
}

#ifdef XD_HAVE_LIBURING
static void c2s_wb_off(struct c2s_wb *wb);

/* Every connection's records: one sendmsg each, WB_RING per submission. */
static void
c2s_wb_flush(struct c2s_wb *wb)
{
    uint32_t i = 0;
    while (i < wb->ndirty) {
        unsigned n = 0;
        size_t niov = 0;
        for (; i < wb->ndirty && n < WB_RING; i++) {
            xd_conn_t *c = wb->dirty[i];
            uv_os_fd_t fd;
            if (!c)
                continue;
            if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) {
                c2s_wb_done(c, UV_EBADF);
                continue;
            }
            if (niov + c->wb_n > sizeof wb->iov / sizeof wb->iov[0])
                break; /* the next submission */
            struct msghdr *m = &wb->msg[n];
            memset(m, 0, sizeof *m);
            m->msg_iov = &wb->iov[niov];
            for (uint32_t k = c->wb_head; k != WB_NONE; k = wb->rec[k].next)
                wb->iov[niov++] = (struct iovec){ (void *)wb->rec[k].p, wb->rec[k].len };
            m->msg_iovlen = c->wb_n;
            struct io_uring_sqe *sqe = io_uring_get_sqe(&wb->ring);
            XD_ASSERT(sqe); /* the ring is empty at the start of each submission */
            io_uring_prep_sendmsg(sqe, fd, m, MSG_DONTWAIT | MSG_NOSIGNAL);
            io_uring_sqe_set_data64(sqe, i);
            wb->sent[n++] = i;
        }
        if (n == 0)
            continue;
        WB_COUNT(wb->ws, submits, 1);
        WB_COUNT(wb->ws, sends, n);
        int rc;
        do
            rc = io_uring_submit(&wb->ring);
        while (rc == -EINTR);
        unsigned got = rc > 0 ? (unsigned)rc : 0, seen = 0;
        while (seen < got) {
            struct io_uring_cqe *cqe;
            int wrc = io_uring_wait_cqe(&wb->ring, &cqe);
            if (wrc == -EINTR)
                continue;
            if (wrc != 0) {
                rc = wrc;
                break;
            }
            xd_conn_t *c = wb->dirty[io_uring_cqe_get_data64(cqe)];
            int res = cqe->res;
            io_uring_cqe_seen(&wb->ring, cqe);
            seen++;
            if (c)
                c2s_wb_done(c, res);
        }
        if (seen < n) {
            /* The ring failed us.  A send it took but did not complete
             * may have written part of its bytes: that stream is closed
             * (its records dropped); what it did not take is written at
             * once, and this worker writes that way from now on. */
            XD_LOG(NULL, XD_ERROR, "io_uring failed; writing without it", "worker=%u err=%s",
                   xd_worker_index(wb->ws->worker), strerror(rc < 0 ? -rc : EIO));
            for (unsigned k = 0; k < got; k++) {
                xd_conn_t *c = wb->dirty[wb->sent[k]];
                if (c) {
                    c2s_wb_done(c, UV_EIO);
                    c2s_post_close(xd_worker_index(wb->ws->worker), c->id,
                                   XD_STREAM_INTERNAL_SERVER_ERROR, NULL);
                }
            }
            c2s_wb_off(wb);
            return;
        }
    }
    wb->ndirty = 0;
    wb->nrec = 0;
}

static void
c2s_wb_on_prepare(uv_prepare_t *h)
{
    struct c2s_wb *wb = h->data;
    if (wb->ndirty)
        c2s_wb_flush(wb);
}

static void
c2s_wb_on_close(uv_handle_t *h)
{
    struct c2s_wb *wb = h->data;
    io_uring_queue_exit(&wb->ring);
    xd_free(wb->rec);
    xd_free(wb->dirty);
    xd_free(wb);
}

/* No more batching on this worker: what is recorded is written at once. */
static void
c2s_wb_off(struct c2s_wb *wb)
{
    for (uint32_t i = 0; i < wb->ndirty; i++)
        if (wb->dirty[i])
            c2s_wb_flush_one(wb->dirty[i]);
    wb->ndirty = 0;
    wb->nrec = 0;
    wb->ws->wb = NULL;
    atomic_store(&wb_stats[xd_worker_index(wb->ws->worker)].on, false);
    uv_close((uv_handle_t *)&wb->prep, c2s_wb_on_close);
}
#endif

/* Records a write for the end of the turn: false when it must go the
 * direct way (no batching, a transport that watches its queue, or bytes
 * already in libuv's queue, which come first). */
static bool
c2s_wb_take(xd_conn_t *c, const char *data, size_t len, const xd_stanza_t *st)
{
#ifdef XD_HAVE_LIBURING
    struct c2s_wb *wb = c->ws->wb;
    if (!wb || c->xport)
        return false;
    if (len == 0)
        return true;
    if (wb->nrec >= wb->maxrec) {
        /* A turn that writes this much (a large fan-out, many inbox
         * messages) sends what it has: the copies it holds stay bounded,
         * and the first recipients need not wait for the last. */
        WB_COUNT(c->ws, full, 1);
        c2s_wb_flush(wb);
        if (c->ws->wb != wb)
            return false; /* the ring failed: batching is off */
    } else if (c->wb_slot && c->wb_n == WB_MAXIOV) {
        c2s_wb_flush_one(c);
    }
    if (!c->wb_slot) {
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) != 0)
            return false;
        if (wb->ndirty == wb->capdirty) {
            wb->capdirty = wb->capdirty ? wb->capdirty * 2 : 256;
            wb->dirty = xd_realloc(wb->dirty, wb->capdirty * sizeof *wb->dirty);
        }
        wb->dirty[wb->ndirty++] = c;
        c->wb_slot = wb->ndirty;
        c->wb_head = c->wb_tail = WB_NONE;
    }
    if (wb->nrec == wb->caprec) {
        wb->caprec = wb->caprec ? wb->caprec * 2 : 256;
        wb->rec = xd_realloc(wb->rec, wb->caprec * sizeof *wb->rec);
    }
    uint32_t i = wb->nrec++;
    c2s_wb_rec_t *r = &wb->rec[i];
    if (st) {
        r->st = xd_stanza_ref(st);
        r->p = data;
    } else {
        char *copy = xd_malloc(len);
        memcpy(copy, data, len);
        r->st = NULL;
        r->p = copy;
    }
    r->len = len;
    r->next = WB_NONE;
    if (c->wb_head == WB_NONE)
        c->wb_head = i;
    else
        wb->rec[c->wb_tail].next = i;
    c->wb_tail = i;
    WB_COUNT(c->ws, records, 1);
    c->wb_n++;
    c->wb_bytes += len;
    return true;
#else
    (void)c, (void)data, (void)len, (void)st;
    return false;
#endif
}

/* Batching for worker w when the configuration asks and the kernel lets. */
static void
c2s_wb_start(xd_worker_t *w)
{
#ifdef XD_HAVE_LIBURING
    xd_wstate_t *ws = xd_wstate(w);
    xd_config_t *cfg = xd_config_get();
    bool on = cfg->io_uring;
    xd_config_unref(cfg);
    if (!on)
        return;
    struct c2s_wb *wb = xd_new(struct c2s_wb);
    unsigned flags = 0, lean = 0;
#ifdef IORING_SETUP_SUBMIT_ALL
    flags |= IORING_SETUP_SUBMIT_ALL;
#endif
#if defined(IORING_SETUP_SINGLE_ISSUER) && defined(IORING_SETUP_DEFER_TASKRUN)
    /* Only this worker's thread submits (the ring is made here, on it):
     * the kernel skips the ring's locking and runs completion work only
     * when this thread waits for it. */
    lean = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
#endif
#ifdef XD_DEBUG_KNOBS
    const char *lk = getenv("XD_DEBUG_WB_LEAN");
    if (lk && *lk == '0')
        lean = 0;
#endif
    int rc = io_uring_queue_init(WB_RING, &wb->ring, flags | lean);
    if (rc == -EINVAL && lean)
        rc = io_uring_queue_init(WB_RING, &wb->ring, flags);
    if (rc == -EINVAL && flags)
        rc = io_uring_queue_init(WB_RING, &wb->ring, 0);
    if (rc != 0) {
        XD_LOG(NULL, XD_NOTICE, "io_uring unavailable; writing without it", "worker=%u err=%s",
               xd_worker_index(w), strerror(-rc));
        xd_free(wb);
        return;
    }
    uv_prepare_init(xd_worker_loop(w), &wb->prep);
    wb->prep.data = wb;
    wb->ws = ws;
    wb->maxrec = WB_MAXREC;
#ifdef XD_DEBUG_KNOBS
    /* Tests reach the bound with a few copies (test_write_batch.py). */
    const char *knob = getenv("XD_DEBUG_WB_MAXREC");
    if (knob && atoi(knob) > 0)
        wb->maxrec = (uint32_t)atoi(knob);
#endif
    uv_prepare_start(&wb->prep, c2s_wb_on_prepare);
    uv_unref((uv_handle_t *)&wb->prep);
    ws->wb = wb;
    atomic_store(&wb_stats[xd_worker_index(w)].on, true);
#else
    (void)w;
#endif
}

/* The worker stops: its records written, no more batching. */
static void
c2s_wb_stop(xd_worker_t *w)
{
#ifdef XD_HAVE_LIBURING
    xd_wstate_t *ws = xd_wstate(w);
    if (ws->wb)
        c2s_wb_off(ws->wb);
#else
    (void)w;
#endif
}

/* Bytes to the socket: written at once when it takes them (the common
 * case: no allocation, no copy), the rest queued. */
static int
c2s_write_raw_ref(xd_conn_t *c, const void *data, size_t len, const xd_stanza_t *st)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp) || c->shut)
        return XD_ECLOSED;
    if (c2s_wb_take(c, data, len, st))
        return 0;
    size_t n = c2s_write_now(c, data, len);
    if (n == len)
        return 0;
    WB_COUNT(c->ws, queued, 1);
    return c2s_write_queue(c, (const char *)data + n, len - n, st);
}

static int
c2s_write_raw(xd_conn_t *c, const void *data, size_t len)
{
    return c2s_write_raw_ref(c, data, len, NULL);
}

static int
c2s_tls_send(void *ud, const uint8_t *data, size_t len)
{
    return c2s_write_raw(ud, data, len);
}

/* A peer that does not read must not make us buffer without end: beyond
 * the listener's max_queue bytes the stream is closed.  The close is
 * posted: a write may come from another stream's input or a delivery,
 * which must not see this stream end under it. */
static void
c2s_check_queue(xd_conn_t *c)
{
    size_t max = c->listener->max_queue_bytes ? c->listener->max_queue_bytes
                                              : C2S_MAX_WRITE_QUEUE;
    if (c->state != C2S_CLOSING && !c->overflow &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > max) {
        XD_LOG(&c->log, XD_WARN, "write queue full", "bytes=%zu max_queue=%zu",
               uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp), max);
        c->overflow = true;
        c2s_post_close(xd_worker_index(c->ws->worker), c->id, XD_STREAM_POLICY_VIOLATION,
                       "the peer does not read its stream");
    }
}

/* Stream bytes to the client: through TLS once it is up.  st, when given,
 * owns data (its serialization), which a queued write then references. */
static void
c2s_write_wire_ref(xd_conn_t *c, const char *data, size_t len, const xd_stanza_t *st)
{
    if (c->overflow && c->state != C2S_CLOSING)
        return; /* closing soon; nothing more is queued */
    if (c->tls) {
        /* Nothing plaintext may cross a TLS connection; before the
         * handshake has finished there is nothing to say. */
        if (xd_tls_handshake_done(c->tls) && !c->shut && !uv_is_closing((uv_handle_t *)&c->tcp))
            xd_tls_send(c->tls, (const uint8_t *)data, len);
    } else {
        c2s_write_raw_ref(c, data, len, st);
    }
    c2s_check_queue(c);
}

/* What the role writes: through the transport when there is one. */
static void
c2s_write_ref(xd_conn_t *c, const char *data, size_t len, const xd_stanza_t *st)
{
    if (c->xport)
        c->xport->write(c, data, len);
    else
        c2s_write_wire_ref(c, data, len, st);
}

void
c2s_write_wire(xd_conn_t *c, const void *p, size_t n)
{
    c2s_write_wire_ref(c, p, n, NULL);
}

size_t
c2s_queued(const xd_conn_t *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) + c->wb_bytes;
}

void
c2s_write(xd_conn_t *c, const char *data, size_t len)
{
    c2s_write_ref(c, data, len, NULL);
}

void
c2s_write_str(xd_conn_t *c, const char *s)
{
    c2s_write(c, s, strlen(s));
}

void
c2s_send_stanza(xd_conn_t *c, const xd_stanza_t *st)
{
    size_t len;
    const char *b = xd_stanza_bytes(st, &len);
    c2s_write_ref(c, b, len, st);
}

/* ---- reading control ------------------------------------------------------------------------ */

static void c2s_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void c2s_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void
c2s_read_start(xd_conn_t *c)
{
    if (c->reading || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, c2s_alloc, c2s_on_read) == 0)
        c->reading = true;
}

static void
c2s_read_stop(xd_conn_t *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void
c2s_on_close(uv_handle_t *h)
{
    xd_conn_t *c = (xd_conn_t *)h;
    xd_wstate_t *ws = c->ws;
    XD_ASSERT(!c->wb_slot); /* c2s_destroy wrote them */
    if (c->prev)
        c->prev->next = c->next;
    else
        ws->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ws->nconns--;
    byid_del(ws, c);
    atomic_fetch_sub(&c->listener->connections, 1);
    if (c->role->closed)
        c->role->closed(c); /* also ends what a peer that went away left */
    if (c->op)
        c->op->c = NULL; /* the answer will find nobody */
    if (c->parser)
        xd_xml_parser_free(c->parser);
    if (c->tls)
        xd_tls_free(c->tls);
    if (c->xport)
        c->xport->free(c);
    xd_free(c->inbuf);
    xd_free(c->host);
    XD_LOG(&c->log, XD_INFO, "connection closed", "");
    xd_free(c);
}

static void
c2s_destroy(xd_conn_t *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->timer) {
        xd_timer_free(c->timer);
        c->timer = NULL;
    }
    if (c->delay) {
        xd_timer_free(c->delay);
        c->delay = NULL;
    }
    c->reading = false;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c2s_wb_flush_one(c); /* the worker's list must not outlive the connection */
    uv_close((uv_handle_t *)&c->tcp, c2s_on_close);
}

static void
c2s_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    xd_free(req);
}

/* Our side is closed: shut down writing once the queue drains, then wait
 * up to linger_ms for the peer to close its side (RFC 6120 4.4). */
static void
c2s_finish(xd_conn_t *c, uint64_t linger_ms)
{
    c->state = C2S_CLOSING;
    if (c->role->closing)
        c->role->closing(c); /* what the stream carried ends now, not when the socket goes */
    if (c->xport && c->xport->closing)
        c->xport->closing(c);
    if (c->tls)
        xd_tls_shutdown(c->tls);
    c2s_wb_flush_one(c); /* uv_shutdown waits for libuv's queue only */
    uv_shutdown_t *sreq = xd_malloc(sizeof *sreq);
    if (uv_shutdown(sreq, (uv_stream_t *)&c->tcp, c2s_on_shutdown) == 0)
        c->shut = true;
    else
        xd_free(sreq);
    if (c->delay)
        xd_timer_stop(c->delay);
    /* Keep reading (and discarding) so the peer's close is seen. */
    c->blocked = false;
    c->shaped = false;
    c2s_read_start(c);
    if (c->timer)
        xd_timer_start(c->timer, linger_ms, 0);
    else
        c2s_destroy(c);
}

static void
c2s_on_timer(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_conn_t *c = arg;
    if (c->state == C2S_CLOSING) {
        c2s_destroy(c); /* the peer never closed its side */
        return;
    }
    if (!c->established)
        /* RFC 6120 4.9.3.4: no bound session within the handshake time. */
        c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "handshake timeout");
    else
        c2s_close(c, XD_STREAM_CONNECTION_TIMEOUT, "idle timeout");
}

/* Input arrived: the idle timer starts over (once established). */
static void
c2s_touch(xd_conn_t *c)
{
    if (c->established && c->state != C2S_CLOSING &&
        c->listener->idle_timeout_ms && c->timer)
        xd_timer_start(c->timer, c->listener->idle_timeout_ms, 0);
}

/* ---- stream header and errors ----------------------------------------------------------------- */

void
c2s_new_sid(xd_conn_t *c)
{
    unsigned char rnd[16];
    if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(c->sid + 2 * i, 3, "%02x", rnd[i]);
}

void
c2s_send_header_as(xd_conn_t *c, const char *from, const char *to_attr, bool no_version)
{
    if (!from)
        from = c->host;
    if (!from) {
        xd_config_t *cfg = xd_config_get();
        c->host = xd_strdup(xd_config_default_host(cfg));
        xd_config_unref(cfg);
        from = c->host;
    }
    const char *ns = c->role->content_ns;
    bool db = c->role->dialback_ns;
    char buf[1400];
    int n = snprintf(buf, sizeof buf,
                     "<?xml version='1.0'?>"
                     "<stream:stream xmlns='%s' %s"
                     "xmlns:stream='http://etherx.jabber.org/streams' "
                     "id='%s' from='%s'%s%s%s%s xml:lang='%s'>",
                     ns, db ? "xmlns:db='" XD_NS_DIALBACK "' " : "", c->sid, from,
                     to_attr ? " to='" : "", to_attr ? to_attr : "", to_attr ? "'" : "",
                     no_version ? "" : " version='1.0'", c->lang[0] ? c->lang : "en");
    c2s_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    c->header_sent = true;
}

static void
c2s_send_header(xd_conn_t *c, const char *to_attr)
{
    c2s_send_header_as(c, NULL, to_attr, false);
}

void
c2s_established(xd_conn_t *c)
{
    c->established = true;
    if (c->timer) {
        if (c->listener->idle_timeout_ms)
            xd_timer_start(c->timer, c->listener->idle_timeout_ms, 0);
        else
            xd_timer_stop(c->timer);
    }
}

/* Sends the error and closes our side (RFC 6120 4.9.1.1); if no header went
 * out yet, one goes first (RFC 6120 4.9.1.2). */
void
c2s_close(xd_conn_t *c, xd_stream_cond cond, const char *text)
{
    if (c->state == C2S_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->tls && !xd_tls_handshake_done(c->tls)) {
        /* Nothing can be said inside an unfinished TLS handshake. */
        XD_LOG(&c->log, XD_INFO, "stream closed", "cond=%s text=\"%s\" stage=tls-handshake",
               xd_stream_cond_name(cond), text ? text : "");
        c->state = C2S_CLOSING;
        c->error_sent = true;
        c->close_cond = cond;
        c2s_destroy(c);
        return;
    }
    if (!c->header_sent)
        c2s_send_header(c, NULL);
    char buf[1024];
    int n = xd_stream_error_format(buf, sizeof buf, cond, text);
    c->state = C2S_CLOSING; /* before the write: a full queue must not recurse */
    c->error_sent = true;
    c->close_cond = cond;
    c2s_write(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    XD_LOG(&c->log, XD_INFO, "stream error sent", "cond=%s text=\"%s\"",
           xd_stream_cond_name(cond), text ? text : "");
    c2s_finish(c, c->ws->stopping ? C2S_SHUTDOWN_LINGER_MS : C2S_LINGER_MS);
}


bool
c2s_secure(const xd_conn_t *c)
{
    return (c->tls && xd_tls_handshake_done(c->tls)) || c->secure_carrier;
}

/* ---- stream open ------------------------------------------------------------------------------ */

static void
c2s_stream_open(void *ud, const xd_el_t *hdr)
{
    xd_conn_t *c = ud;
    if (c->state != C2S_HEADER)
        return;
    const char *lang = xd_el_attr(hdr, "xml:lang");
    if (lang && strlen(lang) < sizeof c->lang && !strpbrk(lang, "'<&\""))
        strcpy(c->lang, lang);
    if (!c->role->initiator) {
        /* We answer this header: a new stage with a new id. */
        c2s_new_sid(c);
        c->header_sent = false;
    }
    c->role->stream_open(c, hdr);
}

/* ---- STARTTLS (RFC 6120 5) --------------------------------------------------------------------- */

static int c2s_tls_plain(void *ud, const uint8_t *data, size_t len);
static void c2s_tls_handshake(void *ud);

static void
c2s_tls_lock_init(void)
{
    uv_mutex_init(&c2s_tls_lock);
}

xd_tls_store_t *
c2s_tls_store_get(void)
{
    uv_once(&c2s_tls_once, c2s_tls_lock_init);
    uv_mutex_lock(&c2s_tls_lock);
    xd_tls_store_t *st = c2s_tls_store ? xd_tls_store_ref(c2s_tls_store) : NULL;
    uv_mutex_unlock(&c2s_tls_lock);
    return st;
}

void
xd_conn_set_tls_store(xd_tls_store_t *st)
{
    uv_once(&c2s_tls_once, c2s_tls_lock_init);
    uv_mutex_lock(&c2s_tls_lock);
    xd_tls_store_t *old = c2s_tls_store;
    c2s_tls_store = st;
    uv_mutex_unlock(&c2s_tls_lock);
    xd_tls_store_unref(old);
}

/* The TLS engine's callbacks for connection c. */
static xd_tls_io_t
c2s_tls_io(xd_conn_t *c)
{
    return (xd_tls_io_t){
        .ud = c,
        .send = c2s_tls_send,
        .plain = c2s_tls_plain,
        .handshake = c2s_tls_handshake,
    };
}

bool
c2s_tls_begin(xd_conn_t *c, const char *default_host)
{
    xd_tls_store_t *st = c2s_tls_store_get();
    if (!st) {
        c2s_close(c, XD_STREAM_INTERNAL_SERVER_ERROR, "TLS is not available");
        return false;
    }
    xd_tls_io_t io = c2s_tls_io(c);
    int rc = xd_tls_server_new(st, default_host, &io, &c->tls);
    xd_tls_store_unref(st); /* the connection holds its own reference */
    if (rc == 0 && (c->role->request_cert || c->listener->tls_verify))
        rc = xd_tls_request_cert(c->tls);
    if (rc == 0 && c->role->request_cert && c->listener->tls)
        rc = xd_tls_set_alpn(c->tls, "xmpp-server"); /* XEP-0368 */
    if (rc != 0) {
        c2s_close(c, XD_STREAM_INTERNAL_SERVER_ERROR, "TLS is not available");
        return false;
    }
    return true;
}

static void
c2s_tls_handshake(void *ud)
{
    xd_conn_t *c = ud;
    XD_LOG(&c->log, XD_INFO, "tls established", "version=%s cipher=%s sni=%s",
           xd_tls_version(c->tls), xd_tls_cipher(c->tls),
           xd_tls_sni(c->tls) ? xd_tls_sni(c->tls) : "-");
    if (c->role->tls_up)
        c->role->tls_up(c);
}

static int
c2s_tls_plain(void *ud, const uint8_t *data, size_t len)
{
    xd_conn_t *c = ud;
    if (c->xport)
        return c->xport->input(c, (const char *)data, len);
    return c2s_input(c, (const char *)data, len);
}

void
c2s_starttls(xd_conn_t *c, const xd_el_t *el, bool allowed)
{
    (void)el;
    if (!allowed || c2s_secure(c) || c->tls || !c->listener->starttls) {
        /* RFC 6120 5.4.2.2: STARTTLS where it was not offered. */
        c2s_write_str(c, "<failure xmlns='" XD_NS_TLS "'/>");
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "STARTTLS is not offered here");
        return;
    }
    if (!c2s_tls_begin(c, c->host))
        return;
    c2s_write_raw(c, "<proceed xmlns='" XD_NS_TLS "'/>", sizeof "<proceed xmlns='" XD_NS_TLS "'/>" - 1);
    /* RFC 6120 5.4.3.3: the old stream is gone; the next bytes are TLS. */
    xd_xml_parser_reset(c->parser);
    c->starttls_go = true;
    c->tls_ws = true;
    c->state = C2S_HEADER;
    c->header_sent = false;
}

/* Input stops after the element being handled (see conn.h). */
static void
c2s_pause(xd_conn_t *c)
{
    if (c->blocked)
        return;
    c->blocked = true;
    xd_xml_parser_pause(c->parser);
    c2s_read_stop(c);
}

static void c2s_resume(xd_conn_t *c);

/* Input goes on when nothing keeps it paused: the role, holds, a stop, the
 * shaper. */
static void
c2s_maybe_resume(xd_conn_t *c)
{
    if (!c->role_blocked && c->holds == 0 && !c->quiesced && !c->shaped)
        c2s_resume(c);
}

void
c2s_block(xd_conn_t *c)
{
    c->role_blocked = true;
    c2s_pause(c);
}

void
c2s_unblock(xd_conn_t *c)
{
    c->role_blocked = false;
    c2s_maybe_resume(c);
}

/* xd_input_hold on this worker: the stream with `id` waits for a release. */
static bool
c2s_input_hold(xd_worker_t *w, uint64_t id)
{
    xd_conn_t *c = c2s_conn_find(w, id);
    if (!c || c->state == C2S_CLOSING)
        return false;
    c->holds++;
    c2s_pause(c);
    return true;
}

static void
c2s_input_release(xd_worker_t *w, uint64_t id)
{
    xd_conn_t *c = c2s_conn_find(w, id);
    if (!c || XD_NEVER(c->holds == 0))
        return;
    if (--c->holds == 0)
        c2s_maybe_resume(c);
}

static void c2s_shape(xd_conn_t *c, size_t n);

/* xd_input_charge on this worker: bytes sent on behalf of stream `id` (the
 * copies of its broadcast) count against its shaper. */
static void
c2s_input_charge(xd_worker_t *w, uint64_t id, size_t bytes)
{
    xd_conn_t *c = c2s_conn_find(w, id);
    if (!c || c->state == C2S_CLOSING)
        return;
    c->charged_bytes += bytes;
    c2s_shape(c, bytes);
}

void
xd_conn_setup(void)
{
    xd_input_set_handlers(c2s_input_hold, c2s_input_release, c2s_input_charge);
}

xd_conn_op_t *
c2s_op_new(xd_conn_t *c, size_t size)
{
    XD_ASSERT(!c->op && size >= sizeof(xd_conn_op_t));
    xd_conn_op_t *op = xd_calloc(1, size);
    op->c = c;
    c->op = op;
    return op;
}

/* Takes the connection back from an answered op; NULL when it is gone. */
xd_conn_t *
c2s_op_done(xd_conn_op_t *op)
{
    xd_conn_t *c = op->c;
    xd_free(op);
    if (c)
        c->op = NULL;
    return c;
}


void
c2s_send_iq_error(xd_conn_t *c, const xd_stanza_t *st, xd_cond cond, const char *text)
{
    xd_stanza_t *e = xd_stanza_error(st, cond, text);
    if (e) {
        c2s_send_stanza(c, e);
        xd_stanza_unref(e);
    }

}

/* ---- elements ----------------------------------------------------------------------------------- */

static void
c2s_stanza(void *ud, xd_stanza_t *st)
{
    xd_conn_t *c = ud;
    if (c->state != C2S_OPEN) {
        xd_stanza_unref(st);
        return;
    }
    /* Work this element sends off the loop holds the stream (xmppd/input.h). */
    uint64_t prev = xd_input_enter(c->id);
    c->role->element(c, st); /* takes st */
    xd_input_leave(prev);
}

static void
c2s_stream_close(void *ud)
{
    xd_conn_t *c = ud;
    if (c->state == C2S_CLOSING) {
        c2s_destroy(c); /* we had already closed ours: done */
        return;
    }
    /* RFC 6120 4.4: the peer closed; close ours and end the connection. */
    if (!c->header_sent)
        c2s_send_header(c, NULL);
    c2s_write_str(c, "</stream:stream>");
    c2s_finish(c, C2S_SHUTDOWN_LINGER_MS);
}

static void
c2s_parse_error(void *ud, int code, const char *detail)
{
    xd_conn_t *c = ud;
    XD_LOG(&c->log, XD_INFO, "xml error", "err=%s detail=\"%s\"", xd_err_name(code),
           detail ? detail : "");
    char text[160];
    switch (code) {
    case XD_EXML_RESTRICTED:
        /* RFC 6120 11.1: DTDs, comments, PIs, entity declarations. */
        c2s_close(c, XD_STREAM_RESTRICTED_XML, detail);
        break;
    case XD_EXML_TOO_BIG:
        snprintf(text, sizeof text, "stanza too big (limit %zu bytes)",
                 c->listener->max_stanza_bytes);
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, text);
        break;
    case XD_EXML_TOO_DEEP:
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "elements nested too deeply");
        break;
    case XD_EXML_TOO_MANY_ATTRS:
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "too many attributes");
        break;
    case XD_EXML_BAD_NS:
        c2s_close(c, XD_STREAM_BAD_NAMESPACE_PREFIX, detail);
        break;
    case XD_EXML_ENCODING:
        /* RFC 6120 11.6: UTF-8 only. */
        c2s_close(c, XD_STREAM_UNSUPPORTED_ENCODING, detail);
        break;
    case XD_EXML_VERSION:
        /* RFC 6120 11.8: XML 1.0 only; no condition is more specific. */
        c2s_close(c, XD_STREAM_BAD_FORMAT, detail);
        break;
    default:
        /* Syntax errors and invalid UTF-8 byte sequences: XML 1.0 4.3.3
         * makes bad UTF-8 a well-formedness error. */
        c2s_close(c, XD_STREAM_NOT_WELL_FORMED, detail);
        break;
    }
}

static const xd_xml_handlers_t c2s_xml_handlers = {
    .stream_open = c2s_stream_open,
    .stanza = c2s_stanza,
    .stream_close = c2s_stream_close,
    .error = c2s_parse_error,
};

/* ---- input path ------------------------------------------------------------------------------ */

static void
c2s_inbuf_append(xd_conn_t *c, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (c->inbuf_len + n > c->inbuf_cap) {
        size_t cap = c->inbuf_cap ? c->inbuf_cap : 1024;
        while (cap < c->inbuf_len + n)
            cap *= 2;
        c->inbuf = xd_realloc(c->inbuf, cap);
        c->inbuf_cap = cap;
    }
    memcpy(c->inbuf + c->inbuf_len, p, n);
    c->inbuf_len += n;
}

/* Socket bytes to the TLS engine.  Right after <proceed/>, whitespace
 * before the first record still belongs to the old XML stream (a client
 * may write `<starttls/>\n` in one go): it is skipped, never fed to TLS (a
 * record starts with its content type byte, never whitespace). */
static int
c2s_tls_feed(xd_conn_t *c, const char *p, size_t n)
{
    if (c->tls_ws) {
        while (n && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
            p++;
            n--;
        }
        if (n == 0)
            return 0;
        c->tls_ws = false;
    }
    return xd_tls_input(c->tls, (const uint8_t *)p, n);
}

/* Socket bytes through TLS, and what the engine says about them: false
 * when the connection is done (a TLS failure, or the peer's close_notify). */
static bool
c2s_tls_in(xd_conn_t *c, const char *p, size_t n)
{
    int rc = c2s_tls_feed(c, p, n);
    if (rc == XD_ETLS) {
        XD_LOG(&c->log, XD_INFO, "tls failure", "reason=\"%s\"",
               xd_tls_error(c->tls) ? xd_tls_error(c->tls) : "?");
        c->state = C2S_CLOSING;
        c2s_destroy(c);
        return false;
    }
    if (rc == XD_ECLOSED) {
        /* The peer's close_notify: the stream is over. */
        if (c->state != C2S_CLOSING)
            XD_LOG(&c->log, XD_INFO, "tls closed by peer", "");
        xd_tls_shutdown(c->tls);
        c2s_destroy(c);
        return false;
    }
    if (c->tls && xd_tls_paused(c->tls))
        c2s_read_stop(c);
    return true;
}

/* Plaintext of the stream, from the socket or from TLS.  Returns 0, or
 * XD_TLS_PAUSE when the stream is blocked (the bytes were kept). */
static int
c2s_input(xd_conn_t *c, const char *p, size_t n)
{
    while (n > 0) {
        if (c->state == C2S_CLOSING && !c->parser)
            return 0;
        if (uv_is_closing((uv_handle_t *)&c->tcp))
            return 0;
        if (c->blocked || c->inbuf_len) {
            c2s_inbuf_append(c, p, n);
            return XD_TLS_PAUSE;
        }
        size_t used = n;
        c->restart = false;
        int rc = xd_xml_parser_feed(c->parser, p, n, &used);
        if (rc != 0 || uv_is_closing((uv_handle_t *)&c->tcp))
            return 0; /* errors arrive through c2s_parse_error */
        p += used;
        n -= used;
        if (c->starttls_go) {
            /* Bytes after <starttls/> are the client's first TLS records. */
            c->starttls_go = false;
            if (n)
                c2s_tls_in(c, p, n);
            return 0;
        }
        if (c->blocked) {
            c2s_inbuf_append(c, p, n);
            return XD_TLS_PAUSE;
        }
        if (c->state == C2S_CLOSING && n) {
            /* After our close, input is discarded. */
            return 0;
        }
        /* After a stream restart the rest starts the new stream. */
        if (!c->restart && used == 0)
            break;
    }
    return 0;
}

int
c2s_feed(xd_conn_t *c, const char *p, size_t n)
{
    return c2s_input(c, p, n);
}

void
c2s_set_timeout(xd_conn_t *c, uint64_t ms)
{
    if (!c->timer || c->state == C2S_CLOSING)
        return;
    if (ms)
        xd_timer_start(c->timer, ms, 0);
    else
        xd_timer_stop(c->timer);
}

void
c2s_end(xd_conn_t *c)
{
    if (c->state == C2S_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c2s_finish(c, C2S_SHUTDOWN_LINGER_MS);
}

/* Ends a pause: parses what was kept, then the TLS engine's queue, then
 * reads again. */
static void
c2s_resume(xd_conn_t *c)
{
    if (!c->blocked || c->state == C2S_CLOSING)
        return;
    c->blocked = false;
    xd_xml_parser_resume(c->parser);
    if (c->xport && c->xport->resume) {
        c->xport->resume(c);
        if (c->blocked || c->state == C2S_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
    if (c->inbuf_len) {
        char *buf = c->inbuf;
        size_t len = c->inbuf_len;
        c->inbuf = NULL;
        c->inbuf_len = c->inbuf_cap = 0;
        c2s_input(c, buf, len);
        xd_free(buf);
        if (c->blocked || c->state == C2S_CLOSING || uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
    if (c->tls && xd_tls_paused(c->tls)) {
        int rc = xd_tls_resume(c->tls);
        if (rc == XD_ETLS || rc == XD_ECLOSED) {
            c2s_destroy(c);
            return;
        }
        if (c->blocked || uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
    c2s_read_start(c);
}

static void
c2s_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    xd_conn_t *c = (xd_conn_t *)h;
    /* One buffer per worker: read_cb consumes it before the next alloc. */
    *buf = uv_buf_init(c->ws->rbuf, sizeof c->ws->rbuf);
}

/* The per-connection shaper, a token bucket of the listener's burst bytes
 * that fills at its rate.  Bytes read take tokens, and so do the bytes a
 * stanza of the stream made the server send for it (xd_input_charge).  A
 * bucket in debt pauses the input (after the element being handled, as a
 * hold does) until it has refilled; nothing is dropped. */
static void
c2s_refill(xd_conn_t *c)
{
    const xd_listener_t *l = c->listener;
    uint64_t now = uv_now(c->tcp.loop);
    c->tokens += (double)(now - c->tokens_ms) * (double)l->shaper_rate / 1000.0;
    if (c->tokens > (double)l->shaper_burst)
        c->tokens = (double)l->shaper_burst;
    c->tokens_ms = now;
}

/* Milliseconds until the debt is paid (tokens < 0). */
static uint64_t
c2s_debt_ms(const xd_conn_t *c)
{
    return (uint64_t)(-c->tokens * 1000.0 / (double)c->listener->shaper_rate) + 1;
}

static void
c2s_shape(xd_conn_t *c, size_t n)
{
    if (!c->listener->shaper_rate || c->state == C2S_CLOSING)
        return;
    c2s_refill(c);
    c->tokens -= (double)n;
    if (c->tokens >= 0 || c->shaped)
        return; /* a pause in force re-checks the debt when it ends */
    uint64_t wait = c2s_debt_ms(c);
    c->shaped = true;
    c->shaped_count++;
    XD_LOG(&c->log, XD_DEBUG, "input shaped", "wait_ms=%llu debt=%.0f charged=%llu pauses=%llu",
           (unsigned long long)wait, -c->tokens, (unsigned long long)c->charged_bytes,
           (unsigned long long)c->shaped_count);
    c2s_pause(c);
    xd_timer_start(c->delay, wait, 0);
}

static void
c2s_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    xd_conn_t *c = (xd_conn_t *)s;
    if (nread < 0) {
        if (nread != UV_EOF)
            XD_LOG(&c->log, XD_INFO, "read error", "err=%s", xd_strerror((int)nread));
        c2s_destroy(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->state == C2S_CLOSING && (!c->tls || !xd_tls_handshake_done(c->tls)))
        return; /* discard until the peer closes */
    c2s_touch(c);
    c->last_input_ms = uv_now(c->tcp.loop);
    c->trimmed = false;
    if (c->tls) {
        if (!c2s_tls_in(c, buf->base, (size_t)nread))
            return;
    } else if (c->xport) {
        c->xport->input(c, buf->base, (size_t)nread);
    } else {
        c2s_input(c, buf->base, (size_t)nread);
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        c2s_shape(c, (size_t)nread);
}

/* The shaper's pause is over, unless what was charged meanwhile keeps the
 * bucket in debt. */
static void
c2s_on_delay_timer(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_conn_t *c = arg;
    if (!c->shaped || c->state == C2S_CLOSING)
        return;
    c2s_refill(c);
    if (c->tokens < 0) {
        xd_timer_start(c->delay, c2s_debt_ms(c), 0);
        return;
    }
    c->shaped = false;
    c2s_maybe_resume(c);
}

/* Everything a new connection needs once its socket is in c->tcp: the
 * worker's lists, ids, addresses, timers, parser and role.  Returns the
 * listener's connection count including this one. */
static unsigned
c2s_conn_init(xd_conn_t *c, xd_worker_t *w, xd_listener_t *l, const xd_conn_role_t *role,
              void *rs)
{
    xd_wstate_t *ws = xd_wstate(w);
    /* Count first, so c2s_on_close can always decrement. */
    unsigned n = atomic_fetch_add(&l->connections, 1) + 1;
    c->id = atomic_fetch_add(&c2s_next_id, 1);
    c->next = ws->conns;
    if (ws->conns)
        ws->conns->prev = c;
    ws->conns = c;
    ws->nconns++;
    byid_put(ws, c);
    c2s_new_sid(c);

    int plen = sizeof c->peer;
    snprintf(c->ip, sizeof c->ip, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &plen) == 0) {
        if (c->peer.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&c->peer, c->ip, sizeof c->ip);
        else
            uv_ip6_name((struct sockaddr_in6 *)&c->peer, c->ip, sizeof c->ip);
    }
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s", (unsigned long long)c->id, c->ip);
    c->timer = xd_timer_new(w, c2s_on_timer, c);
    c->delay = xd_timer_new(w, c2s_on_delay_timer, c);
    c->tokens = (double)l->shaper_burst;
    c->tokens_ms = uv_now(xd_worker_loop(w));
    c->last_input_ms = c->tokens_ms;

    xd_xml_limits_t lim = XD_XML_LIMITS_DEFAULT;
    lim.max_stanza_bytes = l->max_stanza_bytes;
    c->parser = xd_xml_parser_new(&c2s_xml_handlers, c, &lim);
    c->role = role;
    c->rs = rs;
    return n;
}

void
xd_conn_accept(xd_worker_t *w, uv_stream_t *server, xd_listener_t *l)
{
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = xd_new(xd_conn_t);
    c->ws = ws;
    c->listener = l;
    uv_tcp_init(xd_worker_loop(w), &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        xd_free(c);
        return;
    }
    unsigned n = c2s_conn_init(c, w, l, l->role, NULL);
    if (c->role->accepted)
        c->role->accepted(c);

    if (ws->stopping || n > l->max_connections) {
        XD_LOG(&c->log, XD_WARN, "connection refused", "listener=%s reason=%s", l->name,
               ws->stopping ? "stopping" : "max_connections");
        c2s_close(c, ws->stopping ? XD_STREAM_SYSTEM_SHUTDOWN : XD_STREAM_RESOURCE_CONSTRAINT,
                  "too many connections");
        return;
    }
    if (l->tls) {
        /* XEP-0368: TLS from the first byte; SNI picks the certificate. */
        xd_config_t *cfg = xd_config_get();
        bool ok = c2s_tls_begin(c, xd_config_default_host(cfg));
        xd_config_unref(cfg);
        if (!ok)
            return;
    }
    xd_timer_start(c->timer, l->handshake_timeout_ms, 0);
    uv_tcp_nodelay(&c->tcp, 1);
    c2s_read_start(c);
    XD_LOG(&c->log, XD_INFO, "connection accepted", "listener=%s worker=%u tls=%s", l->name,
           xd_worker_index(w), l->tls ? "direct" : "no");
}

static void
c2s_free_handle(uv_handle_t *h)
{
    xd_free(h); /* the tcp handle is the connection's first member */
}

xd_conn_t *
c2s_conn_open(xd_worker_t *w, int fd, xd_listener_t *l, const xd_conn_role_t *role, void *rs)
{
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = xd_new(xd_conn_t);
    c->ws = ws;
    c->listener = l;
    uv_tcp_init(xd_worker_loop(w), &c->tcp);
    if (uv_tcp_open(&c->tcp, (uv_os_sock_t)fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, c2s_free_handle);
        return NULL;
    }
    if (c2s_conn_init(c, w, l, role, rs) > l->max_connections) {
        XD_LOG(&c->log, XD_WARN, "connection refused", "role=%s reason=max_connections",
               role->name);
        c->rs = NULL; /* stays the caller's */
        c->state = C2S_CLOSING;
        c2s_destroy(c);
        return NULL;
    }
    xd_timer_start(c->timer, l->handshake_timeout_ms, 0);
    uv_tcp_nodelay(&c->tcp, 1);
    c2s_read_start(c);
    XD_LOG(&c->log, XD_INFO, "connection opened", "role=%s worker=%u", role->name,
           xd_worker_index(w));
    return c;
}

xd_conn_t *
c2s_conn_open_detached(xd_worker_t *w, xd_listener_t *l, const xd_conn_role_t *role,
                       const char *ip)
{
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = xd_new(xd_conn_t);
    c->ws = ws;
    c->listener = l;
    uv_tcp_init(xd_worker_loop(w), &c->tcp); /* no socket: never read or written */
    if (c2s_conn_init(c, w, l, role, NULL) > l->max_connections) {
        XD_LOG(&c->log, XD_WARN, "connection refused", "role=%s reason=max_connections",
               role->name);
        c->state = C2S_CLOSING;
        c2s_destroy(c);
        return NULL;
    }
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s", (unsigned long long)c->id, c->ip);
    xd_timer_start(c->timer, l->handshake_timeout_ms, 0);
    XD_LOG(&c->log, XD_INFO, "connection opened", "role=%s worker=%u detached=1",
           role->name, xd_worker_index(w));
    return c;
}

bool
c2s_tls_client(xd_conn_t *c, const char *local, const char *remote, const char *alpn)
{
    xd_tls_store_t *st = c2s_tls_store_get();
    if (!st) {
        c2s_close(c, XD_STREAM_INTERNAL_SERVER_ERROR, "TLS is not available");
        return false;
    }
    xd_tls_io_t io = c2s_tls_io(c);
    int rc = xd_tls_client_new(st, local, remote, alpn, &io, &c->tls);
    xd_tls_store_unref(st);
    if (rc == 0)
        rc = xd_tls_start(c->tls);
    if (rc != 0) {
        XD_LOG(&c->log, XD_WARN, "tls client failed", "err=%s", xd_strerror(rc));
        c->state = C2S_CLOSING;
        c2s_destroy(c);
        return false;
    }
    return true;
}

/* Every C2S_SWEEP_MS: connections silent for C2S_TRIM_IDLE_MS give their
 * parser's buffers back (OpenSSL releases its own by itself), which is most
 * of what an idle connection costs beyond the TLS state. */
static void
c2s_sweep(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_wstate_t *ws = arg;
    uint64_t now = uv_now(xd_worker_loop(ws->worker));
    unsigned n = 0;
    for (xd_conn_t *c = ws->conns; c; c = c->next) {
        if (c->trimmed || c->state != C2S_OPEN || c->blocked || !c->parser ||
            now - c->last_input_ms < C2S_TRIM_IDLE_MS)
            continue;
        n += xd_xml_parser_trim(c->parser);
        c->trimmed = true;
    }
    /* Many connections went quiet (the end of a login wave): hand the pages
     * their handshakes and parsers left free back to the system, or the
     * process keeps the peak's size. */
    if (n)
        XD_LOG(NULL, XD_DEBUG, "idle parsers trimmed", "worker=%u count=%u",
               xd_worker_index(ws->worker), n);
    if (n >= C2S_TRIM_RELEASE)
        malloc_trim(64 * 1024);
}

void
xd_conn_start_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    ws->sweep = xd_timer_new(w, c2s_sweep, ws);
    xd_timer_start(ws->sweep, C2S_SWEEP_MS, C2S_SWEEP_MS);
    c2s_wb_start(w);
}

void
xd_conn_quiesce_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    for (xd_conn_t *c = ws->conns; c; c = c->next) {
        if (c->state == C2S_CLOSING)
            continue;
        c->quiesced = true;
        c2s_pause(c);
    }
}

void
xd_conn_shutdown_worker(xd_worker_t *w)
{
    xd_wstate_t *ws = xd_wstate(w);
    if (ws->sweep) {
        xd_timer_free(ws->sweep);
        ws->sweep = NULL;
    }
    for (xd_conn_t *c = ws->conns, *next; c; c = next) {
        next = c->next;
        /* RFC 6120 4.9.3.20 */
        c2s_close(c, XD_STREAM_SYSTEM_SHUTDOWN, "the server is stopping");
    }
    c2s_wb_stop(w);
}

/* ---- xmppctl write_stats ----------------------------------------------------------------------- */

static int
cmd_write_stats(xd_cmd_call_t *call)
{
    unsigned n = xd_workers_count();
    for (unsigned i = 0; i < n && i < XD_MAX_WORKERS; i++)
        xd_cmd_add(call,
                   "worker=%u io_uring=%s submissions=%llu sends=%llu writes=%llu "
                   "queued_rests=%llu written_at_once=%llu full_turns=%llu queued_writes=%llu",
                   i, atomic_load(&wb_stats[i].on) ? "on" : "off",
                   (unsigned long long)atomic_load(&wb_stats[i].submits),
                   (unsigned long long)atomic_load(&wb_stats[i].sends),
                   (unsigned long long)atomic_load(&wb_stats[i].records),
                   (unsigned long long)atomic_load(&wb_stats[i].rests),
                   (unsigned long long)atomic_load(&wb_stats[i].at_once),
                   (unsigned long long)atomic_load(&wb_stats[i].full),
                   (unsigned long long)atomic_load(&wb_stats[i].queued));
    return 0;
}

static const xd_cmd_t c2s_cmds[] = {
    { .name = "write_stats",
      .doc = "per worker: whether writes are batched through io_uring (option io_uring), "
             "submissions (one per loop turn with writes), sends (one per connection and "
             "turn), writes recorded, sends whose rest waited for the socket in the queue, "
             "connections written before the turn's end (closing, or many writes), turns "
             "that reached the bound of 1,024 writes and sent them before recording more",
      .result = XD_CMD_RES_LIST, .fn = cmd_write_stats },
};

void
xd_conn_register_commands(void)
{
    for (size_t i = 0; i < sizeof c2s_cmds / sizeof c2s_cmds[0]; i++)
        xd_cmd_register(&c2s_cmds[i]);
}

/* ---- reaching a connection from another thread ------------------------------------------------- */

xd_conn_t *
c2s_conn_find(xd_worker_t *w, uint64_t id)
{
    xd_wstate_t *ws = w ? xd_wstate(w) : NULL;
    return ws ? byid_get(ws, id) : NULL;
}

typedef struct {
    uint64_t id;           /* the connection */
    xd_stream_cond cond;   /* stream error to close it with */
    char text[200];        /* its text */
} c2s_close_msg_t;

static void
c2s_close_msg(xd_worker_t *w, void *arg)
{
    c2s_close_msg_t *m = arg;
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = ws ? byid_get(ws, m->id) : NULL;
    if (c)
        c2s_close(c, m->cond, m->text[0] ? m->text : NULL);
    xd_free(m);
}

void
c2s_post_close(unsigned worker, uint64_t id, xd_stream_cond cond, const char *text)
{
    xd_worker_t *w = xd_worker_get(worker);
    if (!w)
        return;
    c2s_close_msg_t *m = xd_new(c2s_close_msg_t);
    m->id = id;
    m->cond = cond;
    snprintf(m->text, sizeof m->text, "%s", text ? text : "");
    if (xd_worker_post(w, c2s_close_msg, m) != 0)
        xd_free(m);
}

typedef struct {
    xd_worker_msg_t node; /* the inbox's until c2s_deliver_msg runs */
    uint64_t id;          /* the connection */
    xd_stanza_t *st;      /* what to write */
} c2s_deliver_msg_t;

/* On the owner worker: writes st to established connection id, or bounces
 * it.  Takes st. */
static void
c2s_deliver_here(xd_worker_t *w, uint64_t id, xd_stanza_t *st)
{
    xd_wstate_t *ws = xd_wstate(w);
    xd_conn_t *c = ws ? byid_get(ws, id) : NULL;
    if (c && c->established && c->state == C2S_OPEN) {
        c2s_send_stanza(c, st);
    } else {
        xd_stanza_t *err = xd_stanza_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        if (err)
            xd_route_take(err);
    }
    xd_stanza_unref(st);
}

static void
c2s_deliver_msg(xd_worker_t *w, void *arg)
{
    c2s_deliver_msg_t *m = arg;
    uint64_t id = m->id;
    xd_stanza_t *st = m->st;
    xd_free(m);
    c2s_deliver_here(w, id, st);
}

void
c2s_deliver(unsigned worker, uint64_t conn_id, xd_stanza_t *st)
{
    xd_worker_t *w = xd_worker_get(worker);
    if (w && w == xd_worker_self()) {
        c2s_deliver_here(w, conn_id, st); /* no detour through our own inbox */
        return;
    }
    c2s_deliver_msg_t *m = xd_new(c2s_deliver_msg_t);
    m->id = conn_id;
    m->st = st;
    if (!w || xd_worker_post_msg(w, &m->node, c2s_deliver_msg, m) != 0) {
        xd_stanza_unref(st); /* the server is stopping */
        xd_free(m);
    }
}
