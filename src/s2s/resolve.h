/*
 * resolve.h — where to connect for a remote XMPP domain (RFC 6120 3.2,
 * XEP-0368, RFC 2782, RFC 8305), on a worker's libuv loop with c-ares.
 *
 * Two parts, both owner-loop only (DESIGN.md 2: nothing blocks a loop):
 *
 *  1. The resolver (resolve.c, the static table in resolve_static.c).  One
 *     xd_resolve_ctx_t per worker, created on that worker's thread for its
 *     loop; c-ares sockets are watched with uv_poll_t and c-ares timeouts
 *     run on a uv_timer_t.  xd_resolve_domain() turns a domain into an
 *     ordered list of connection candidates:
 *
 *       static override (s2s_hosts)  ──► that host/address only, no SRV
 *       IP-literal domain            ──► the address, port 5269
 *       otherwise, in parallel:  _xmpps-server._tcp.D  (direct TLS, XEP-0368)
 *                                _xmpp-server._tcp.D   (STARTTLS, RFC 6120)
 *         ─► SRV records ordered by priority, then weighted random
 *            (RFC 2782), the two services mixed as one record set
 *         ─► + D:5269 when _xmpp-server has no SRV records at all
 *         ─► each target to AAAA + A (ares_getaddrinfo, AF_UNSPEC)
 *         ─► per target, families interleaved starting with IPv6 (RFC 8305 4)
 *
 *  2. The connector (happy eyeballs, RFC 8305 5; connect.c).
 *     xd_connect_start() races TCP connects over a candidate list, one new
 *     attempt every 250 ms (or at once when the previous one fails), first
 *     success wins.
 *
 * Choices the RFCs leave open, made here:
 *  - XEP-0368 3 says xmpp- and xmpps- records SHOULD be ordered as one set
 *    and a client MAY prefer one kind.  We follow the SHOULD: for equal
 *    priority the two kinds are mixed by weight only, so the remote operator
 *    decides (weights 0 for STARTTLS make direct TLS win, and so on).
 *  - A "." target (RFC 2782, RFC 6120 3.2.1) counts only when it is the only
 *    record of its service: "." for _xmpp-server means "no s2s service" (no
 *    fallback to D:5269); "." for _xmpps-server only means "no direct TLS".
 *  - The D:5269 fallback (RFC 6120 3.2.1 step 4) is added whenever the
 *    _xmpp-server query answers "no such name" or "no SRV records", after any
 *    _xmpps-server candidates.  A DNS failure (timeout, SERVFAIL, REFUSED) of
 *    that query is not "no records": it never leads to the fallback.
 *  - Addresses are interleaved per target in DNS answer order (no RFC 6724
 *    sort), IPv6 first, as RFC 8305 4 does with IPv6 preferred.
 *  - Non-ASCII domains (JID domainparts are U-labels) are looked up as
 *    A-labels (IDNA2008, UTS-46 non-transitional, libidn2).
 *
 * Memory: contexts, requests and connectors are owned by this module and
 * freed by it; candidate lists given to callbacks are lent for the duration
 * of the call (STYLE.md 3.7 R6).  If a function that takes a callback
 * returns an error, the callback is never called; otherwise it is called
 * exactly once, unless the request is cancelled first (then never).
 */
#ifndef XMPPD_S2S_RESOLVE_H
#define XMPPD_S2S_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "xmppd/err.h"
#include "xmppd/log.h"

#define XD_RESOLVE_PORT 5269        /* RFC 6120 3.2.1 step 4, and static entries */
#define XD_RESOLVE_HOST_MAX 256     /* a DNS name (253) + NUL, rounded */
#define XD_RESOLVE_MAX_TARGETS 16   /* SRV targets (plus fallback) looked up per request */
#define XD_RESOLVE_MAX_CANDS 64     /* candidates per request, all targets together */
#define XD_CONNECT_DELAY_MS 250     /* RFC 8305 5 "Connection Attempt Delay" */
#define XD_CONNECT_TIMEOUT_MS 10000 /* default overall deadline of a connector */

/* The status for a DNS server failure (SERVFAIL, REFUSED, malformed
 * answer). */
#define XD_RESOLVE_EDNS XD_EDNS

/* Where a candidate came from. */
typedef enum xd_resolve_src {
    XD_RESOLVE_SRC_XMPPS,    /* _xmpps-server._tcp SRV: connect with direct TLS */
    XD_RESOLVE_SRC_XMPP,     /* _xmpp-server._tcp SRV: STARTTLS */
    XD_RESOLVE_SRC_FALLBACK, /* no SRV: the domain itself, port 5269 */
    XD_RESOLVE_SRC_STATIC,   /* the static table (xd_resolve_set_static) */
    XD_RESOLVE_SRC_LITERAL,  /* the domain is an IP address */
} xd_resolve_src;

/* One place to connect to.  Plain data; copy it freely. */
typedef struct xd_resolve_cand {
    char host[XD_RESOLVE_HOST_MAX]; /* SRV target, static host or the domain (A-label, no
                                       trailing dot); for logs: certificates are checked
                                       against the domain, not this (RFC 6120 13.7.2.1) */
    struct sockaddr_storage addr;   /* AF_INET or AF_INET6 address, port set */
    socklen_t addrlen;              /* sizeof(sockaddr_in) or sizeof(sockaddr_in6) */
    uint16_t port;                  /* the port, host order (also inside addr) */
    bool direct_tls;                /* XEP-0368: start TLS at once, no STARTTLS */
    xd_resolve_src src;             /* which rule produced it */
    uint16_t priority;              /* SRV priority; 0 when not from SRV */
    uint16_t weight;                /* SRV weight; 0 when not from SRV */
} xd_resolve_cand_t;

typedef struct xd_resolve_ctx xd_resolve_ctx_t; /* one per worker; owner loop only */
typedef struct xd_resolve_req xd_resolve_req_t; /* one xd_resolve_domain() call */

/* Resolver settings; zero values take the defaults. */
typedef struct xd_resolve_opts {
    const char *servers;     /* NULL: /etc/resolv.conf; else c-ares CSV,
                                "127.0.0.1:5353,[::1]:53" (ares_set_servers_ports_csv) */
    unsigned timeout_ms;     /* first-try timeout per query; 0 = 2000 (c-ares doubles it
                                on each later round) */
    unsigned tries;          /* tries per server; 0 = 3 */
    const xd_log_t *log;     /* parent log context (host=, worker=) or NULL */
} xd_resolve_opts_t;

/* Completion of xd_resolve_domain.  status 0: count >= 1 candidates in the
 * order to try them (lent: valid only during the call).  Otherwise count is
 * 0 and status is XD_ENOTFOUND (no such domain, no addresses, or a "."
 * _xmpp-server record), XD_ETIMEDOUT (DNS server did not answer),
 * XD_RESOLVE_EDNS (server failure), or a negated errno such as
 * -ECONNREFUSED (DNS server unreachable). */
typedef void (*xd_resolve_cb)(void *arg, int status, const xd_resolve_cand_t *cands,
                              size_t count);

/* Creates a resolver on `loop`; call on the thread that runs `loop`.  Reads
 * /etc/resolv.conf once, here, when opts->servers is NULL.  Returns 0,
 * XD_EINVAL (bad opts->servers), or XD_EINTERNAL (c-ares failed). */
int xd_resolve_new(uv_loop_t *loop, const xd_resolve_opts_t *opts, xd_resolve_ctx_t **out);

/* Cancels every request (their callbacks are never called) and closes the
 * context.  The memory is released by libuv close callbacks: run the loop
 * once more before uv_loop_close().  May be called from any callback of
 * this module, including a resolve callback. */
void xd_resolve_free(xd_resolve_ctx_t *ctx);

/* Static override: connections to `domain` (case-insensitive) go to `spec`
 * without any SRV lookup.  spec is "1.2.3.4", "1.2.3.4:5270", "::1",
 * "[::1]:5270", "host.name" or "host.name:5270" (a host name is looked up
 * as AAAA + A; the default port is 5269).  spec NULL removes the entry.  A
 * second call for one domain replaces the entry.  Returns 0 or XD_EINVAL. */
int xd_resolve_set_static(xd_resolve_ctx_t *ctx, const char *domain, const char *spec);

/* Removes every static entry (config reload). */
void xd_resolve_clear_static(xd_resolve_ctx_t *ctx);

/* Checks a static spec as xd_resolve_set_static would (for config
 * validation, any thread).  Returns 0 or XD_EINVAL. */
int xd_resolve_static_check(const char *spec);

/* Starts resolving `domain` (a JID domainpart: ASCII or U-labels, at most
 * 253 bytes as DNS, an optional trailing dot).  The callback always runs
 * later from the loop, never inside this call.  *req_out (may be NULL)
 * receives a handle for xd_resolve_cancel, valid until the callback has
 * started.  Returns 0, XD_EINVAL (not a domain name), or XD_ECLOSED. */
int xd_resolve_domain(xd_resolve_ctx_t *ctx, const char *domain, xd_resolve_cb cb, void *arg,
                      xd_resolve_req_t **req_out);

/* Cancels a request whose callback has not started: the callback is never
 * called.  DNS queries already sent finish in the background. */
void xd_resolve_cancel(xd_resolve_req_t *req);

/* Requests started and not yet completed or cancelled, for stats/tests. */
size_t xd_resolve_pending(const xd_resolve_ctx_t *ctx);

/* ---- happy-eyeballs connector ------------------------------------------ */

typedef struct xd_connect xd_connect_t; /* one race; owner loop only */

typedef struct xd_connect_opts {
    uint64_t attempt_delay_ms; /* 0 = XD_CONNECT_DELAY_MS */
    uint64_t timeout_ms;       /* whole race; 0 = XD_CONNECT_TIMEOUT_MS */
} xd_connect_opts_t;

/* Completion of xd_connect_start.  status 0: `tcp` is a connected handle,
 * now the caller's (allocated with xd_malloc: close it with
 * xd_connect_tcp_close or uv_close + xd_free in the close callback); `won`
 * is the winning candidate (lent) and `index` its place in the list.
 * Otherwise tcp and won are NULL and status is XD_ETIMEDOUT or the error of
 * the last failed attempt (-ECONNREFUSED, -ENETUNREACH, ...). */
typedef void (*xd_connect_cb)(void *arg, int status, uv_tcp_t *tcp, const xd_resolve_cand_t *won,
                              size_t index);

/* Starts a race over cands[0..count) (copied).  The first attempt starts
 * now; each later one when the delay has passed since the previous start,
 * or at once when every started attempt has failed.  On success the other
 * attempts are closed.  Returns 0 or an error (XD_EINVAL for an empty list,
 * or the error of the last attempt when every connect failed synchronously);
 * *out (may be NULL) receives a handle for xd_connect_cancel, valid until
 * the callback has started. */
int xd_connect_start(uv_loop_t *loop, const xd_resolve_cand_t *cands, size_t count,
                     const xd_connect_opts_t *opts, xd_connect_cb cb, void *arg,
                     xd_connect_t **out);

/* Stops the race: every attempt is closed, the callback is never called. */
void xd_connect_cancel(xd_connect_t *c);

/* Closes and frees a handle that a connector passed to its callback. */
void xd_connect_tcp_close(uv_tcp_t *tcp);

/* "192.0.2.1:5269" / "[2001:db8::1]:5269" into buf; returns buf. */
const char *xd_resolve_cand_str(const xd_resolve_cand_t *c, char *buf, size_t size);

#endif
