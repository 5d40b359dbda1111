/*
 * mod_httptest.c — a test module that uses every part of xmppd/http.h the
 * way BOSH and HTTP upload will (tests/integration/test_http.py).  Built
 * as a .so against the public headers alone and loaded through module_dir:
 *
 *   /test/echo    collected body: answers 200 with the request's body (GET: "echo")
 *   /test/stream  streamed body: counts it, pausing after every 256 KiB until a
 *                 trip through the blocking pool resumes it; answers "received N";
 *                 refuses a Content-Length above 200 MB with 413 before reading
 *   /test/hold    held request: answered later, from the pool's completion
 *                 (found again by its handle), "held"; ?MS: held MS ms (default
 *                 200); logs "httptest request held" when it holds it
 *   /test/big     ?N: a response of N bytes ('x') written piecewise, a
 *                 64 KiB piece whenever the write queue is empty
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/http.h"
#include "xmppd/log.h"
#include "xmppd/module.h"

#define PAUSE_EVERY (256u * 1024u)
#define PIECE 65536

static xd_module_ctx_t *ht_ctx; /* the first host's instance serves them all */

/* ---- /test/echo ---- */

static void
echo_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    if (!strcmp(xd_http_req_method(r), "GET") || !strcmp(xd_http_req_method(r), "HEAD")) {
        xd_http_respond(r, 200, "text/plain", "echo", 4);
        return;
    }
    size_t n;
    const char *b = xd_http_req_body(r, &n);
    xd_http_respond(r, 200, "application/octet-stream", b, n);
}

static const xd_http_handler_t echo_handler = {
    .request = echo_request,
    .methods = "GET, POST, PUT",
};

/* ---- /test/stream ---- */

typedef struct {
    xd_http_handle_t h;
    uint64_t count;      /* bytes so far */
    uint64_t next_pause; /* pause when count passes this */
} stream_state_t;

/* One upload at a time per test: the state lives with the handler. */
static stream_state_t st_state;

static void
pool_nothing(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    usleep(1000);
}

static void
stream_resumed(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    xd_http_handle_t *h = arg;
    xd_http_req_t *r = xd_http_req_find(*h);
    xd_free(h);
    if (r)
        xd_http_req_resume(r);
}

static void
stream_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    if (xd_http_req_length(r) > 200LL * 1024 * 1024) {
        xd_http_error(r, 413, "more than 200 MB");
        return;
    }
    st_state.h = xd_http_req_handle(r);
    st_state.count = 0;
    st_state.next_pause = PAUSE_EVERY;
}

static void
stream_body(xd_http_req_t *r, const char *data, size_t len, void *ud)
{
    (void)ud;
    (void)data;
    if (!data) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "received %llu", (unsigned long long)st_state.count);
        xd_http_respond(r, 200, "text/plain", buf, (size_t)n);
        return;
    }
    st_state.count += len;
    if (st_state.count >= st_state.next_pause) {
        st_state.next_pause = st_state.count + PAUSE_EVERY;
        xd_http_handle_t *h = xd_new(xd_http_handle_t);
        *h = xd_http_req_handle(r);
        xd_http_req_pause(r);
        if (xd_module_submit(ht_ctx, pool_nothing, stream_resumed, h) != 0) {
            xd_free(h);
            xd_http_req_resume(r);
        }
    }
}

static const xd_http_handler_t stream_handler = {
    .request = stream_request,
    .body = stream_body,
    .methods = "PUT, POST",
};

/* ---- /test/hold ---- */

typedef struct {
    xd_http_handle_t h;
    long ms;
} hold_t;

static void
pool_wait(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    hold_t *h = arg;
    usleep((useconds_t)h->ms * 1000);
}

static void
hold_answer(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    hold_t *h = arg;
    xd_http_req_t *r = xd_http_req_find(h->h);
    xd_free(h);
    if (r)
        xd_http_respond(r, 200, "text/plain", "held", 4);
}

static void
hold_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    long ms = atol(xd_http_req_query(r));
    if (ms <= 0 || ms > 60000)
        ms = 200;
    hold_t *h = xd_new(hold_t);
    h->h = xd_http_req_handle(r);
    h->ms = ms;
    if (xd_module_submit(ht_ctx, pool_wait, hold_answer, h) != 0) {
        xd_free(h);
        xd_http_error(r, 503, "pool full");
        return;
    }
    XD_LOG(NULL, XD_INFO, "httptest request held", "ms=%ld", ms);
}

static const xd_http_handler_t hold_handler = {
    .request = hold_request,
    .methods = "GET, POST",
};

/* ---- /test/big ---- */

typedef struct {
    uint64_t left;
} big_state_t;

static big_state_t big_state;
static char big_piece[PIECE];

static void
big_more(xd_http_req_t *r)
{
    if (big_state.left == 0) {
        xd_http_response_end(r);
        return;
    }
    size_t n = big_state.left < PIECE ? (size_t)big_state.left : PIECE;
    big_state.left -= n;
    xd_http_response_write(r, big_piece, n);
    if (big_state.left == 0)
        xd_http_response_end(r);
}

static void
big_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    long long n = atoll(xd_http_req_query(r));
    if (n < 0)
        n = 0;
    memset(big_piece, 'x', sizeof big_piece);
    big_state.left = (uint64_t)n;
    xd_http_response_start(r, 200, "application/octet-stream", n);
    if (!strcmp(xd_http_req_method(r), "HEAD")) {
        xd_http_response_end(r);
        return;
    }
    big_more(r);
}

static void
big_writable(xd_http_req_t *r, void *ud)
{
    (void)ud;
    big_more(r);
}

static const xd_http_handler_t big_handler = {
    .request = big_request,
    .writable = big_writable,
    .methods = "GET",
};

static int
ht_start(xd_module_ctx_t *ctx)
{
    if (ht_ctx)
        return 0;
    ht_ctx = ctx;
    xd_http_register("test_echo", "/test/echo", &echo_handler, NULL);
    xd_http_register("test_stream", "/test/stream", &stream_handler, NULL);
    xd_http_register("test_hold", "/test/hold", &hold_handler, NULL);
    xd_http_register("test_big", "/test/big", &big_handler, NULL);
    return 0;
}

static void
ht_stop(xd_module_ctx_t *ctx)
{
    if (ctx != ht_ctx)
        return;
    xd_http_unregister("test_echo");
    xd_http_unregister("test_stream");
    xd_http_unregister("test_hold");
    xd_http_unregister("test_big");
    ht_ctx = NULL;
}

XD_MODULE_EXPORT = {
    .abi = XD_MODULE_ABI,
    .name = "mod_httptest",
    .doc = "HTTP handlers for the tests of xmppd/http.h",
    .start = ht_start,
    .stop = ht_stop,
};
