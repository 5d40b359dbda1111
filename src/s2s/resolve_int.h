/*
 * resolve_int.h — what the files of the resolver share (resolve.h is the
 * public API; nothing outside src/s2s/resolve*.c includes this header):
 *
 *   resolve.c         the context (c-ares on libuv) and the requests: SRV
 *                     and address lookups, RFC 2782 ordering, candidates,
 *                     delivery
 *   resolve_static.c  the static override table (xd_resolve_set_static)
 *                     and the name syntax both files check: domains to
 *                     query names, host names, IP-literal domains
 *
 * The happy-eyeballs connector (connect.c) uses only resolve.h.
 *
 * Invariants: a context and everything it holds are touched by its owner
 * loop only; ctx->statics is changed only by the resolve_static.c API and
 * read only by xd_resolve_domain; a query name is always in the form
 * rs_qname writes (A-label, lower case, no trailing dot, < RS_QNAME_MAX).
 */
#ifndef XMPPD_S2S_RESOLVE_INT_H
#define XMPPD_S2S_RESOLVE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ares.h>
#include <uv.h>

#include "s2s/resolve.h"
#include "xmppd/log.h"

#define RS_QNAME_MAX 254 /* 253 + NUL */

/* A link of a small circular intrusive list (resolve.c). */
typedef struct rs_link {
    struct rs_link *prev, *next; /* circular; a head points to itself when empty */
} rs_link_t;

/* A static override entry.  Owner loop only. */
typedef struct rs_static {
    char domain[RS_QNAME_MAX];       /* key: normalised like a query name */
    char host[XD_RESOLVE_HOST_MAX];  /* host name to look up, or the address text */
    uint16_t port;                   /* port to connect to */
    bool literal;                    /* addr is set: no DNS at all */
    struct sockaddr_storage addr;    /* the address when literal (port set) */
    socklen_t addrlen;               /* its length */
    struct rs_static *next;          /* ctx->statics */
} rs_static_t;

/* One resolver per worker loop.  Owner loop only. */
struct xd_resolve_ctx {
    uv_loop_t *loop;                 /* the worker's loop */
    ares_channel ch;                 /* c-ares channel; destroyed when closing */
    uv_timer_t timer;                /* c-ares timeouts (ares_timeout) */
    uv_timer_t defer;                /* delivers ctx->done outside c-ares */
    struct rs_poll *polls;           /* watched c-ares sockets */
    rs_link_t reqs;                  /* every request not yet freed */
    rs_link_t done;                  /* requests whose callback is due, FIFO */
    size_t pending;                  /* requests in SRV or ADDR */
    size_t ndone;                    /* length of done */
    rs_static_t *statics;            /* static overrides */
    uint64_t rng;                    /* xorshift64* state for RFC 2782 weights */
    unsigned handles;                /* open uv handles; freed at 0 when closing */
    bool closing;                    /* xd_resolve_free has run */
    xd_log_t log;                    /* "part=resolve" under the caller's context */
};

/* ---- resolve.c ----------------------------------------------------------- */

/* Copies src into dst[size], cut to size - 1 bytes, NUL-terminated. */
void rs_copy(char *dst, size_t size, const char *src);

/* ---- resolve_static.c ---------------------------------------------------- */

/* Host-name syntax: LDH labels of 1..63 bytes (and '_', seen in the wild),
 * 1..253 bytes in all, no trailing dot. */
bool rs_hostname_ok(const char *s, size_t n);

/* Domain → query name: trailing dot dropped, U-labels to A-labels (IDNA2008
 * + UTS-46 non-transitional, as src/xmpp/jid.c), lower case, syntax
 * checked.  Returns 0 or XD_EINVAL. */
int rs_qname(const char *domain, char out[RS_QNAME_MAX]);

/* An IP-literal domain ("192.0.2.1", "[2001:db8::1]", RFC 7622 3.2): fills
 * *ss (port XD_RESOLVE_PORT) and *len and returns true; false otherwise. */
bool rs_domain_literal(const char *domain, struct sockaddr_storage *ss, socklen_t *len);

/* The static entry for a query name, or NULL. */
rs_static_t *rs_static_find(xd_resolve_ctx_t *ctx, const char *qname);

#endif
