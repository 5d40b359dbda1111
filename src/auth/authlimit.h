/*
 * authlimit.h — failed-authentication limits shared by every stream and
 * worker (docs/design.md 4.1), in the manner of ejabberd's mod_fail2ban.
 *
 * What counts as a failure is decided by the callers: a client SASL
 * attempt that tested credentials (stream/c2s_sasl.c), a wrong component
 * handshake (s2s/component.c), a dialback key the authoritative server
 * called invalid (s2s/s2s_in.c).  Each failure is recorded for the peer's
 * address (an IPv4 address; an IPv6 address by its /64, since one host
 * usually has a whole /64) and, when there is one, for the account (a bare
 * JID, or a component's domain).  The policy is `auth_limits` of the
 * published configuration:
 *
 *   failures of the address or the account within `window` > delay_after
 *       ─► the failure is answered after a growing delay (the caller keeps
 *          its stream blocked meanwhile)
 *   failures of the address >= max_failures
 *       ─► the address is banned for ban_lifetime: its new streams get a
 *          policy-violation stream error at their header
 *
 * Accounts are only slowed down, never banned: a ban per account would let
 * anybody lock its user out.  A success forgets the account's failures,
 * never the address's.  Addresses that the access rule `exempt` allows are
 * never counted, delayed or banned.
 *
 * Memory is bounded: one table of `size` fixed-size entries (key, counts,
 * times, a printable label), hashed, with an LRU list; when it is full the
 * entry touched longest ago makes room (an attacker cannot grow memory,
 * only push out old entries).  Entries whose window and ban are over count
 * as absent and are reused first.
 *
 * Threads: every function may be called from any thread; one mutex guards
 * the table (it is taken once per failure and once per new stream header).
 */
#ifndef XMPPD_AUTH_AUTHLIMIT_H
#define XMPPD_AUTH_AUTHLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "xmppd/config.h"

#define XD_AUTHLIMIT_TEXT_MAX 160 /* bytes of a ban's stream error text */

/* What a recorded failure means for its answer. */
typedef struct xd_authlimit_result {
    uint64_t delay_ms;         /* extra wait before the failure is answered; 0 = none */
    unsigned addr_failures;    /* failures of the address in the window, this one included */
    unsigned account_failures; /* failures of the account in the window (0: no account) */
    bool banned;               /* the address is banned (now or already) */
    bool exempt;               /* the address is exempt: nothing was counted */
} xd_authlimit_result_t;

/* Records a failed authentication from `peer` (may be NULL: no address)
 * against `account` (a bare JID or domain; NULL or "" = none) and says how
 * to answer it. */
void xd_authlimit_failed(const struct sockaddr *peer, const char *account,
                         xd_authlimit_result_t *out);

/* A successful authentication of `account`: its failures are forgotten. */
void xd_authlimit_succeeded(const char *account);

/* True when `peer` is banned now; then text[0..cap) holds the stream error
 * text ("too many failed authentications from 192.0.2.7; banned for 3599
 * more seconds").  False for NULL or exempt addresses. */
bool xd_authlimit_banned(const struct sockaddr *peer, char *text, size_t cap);

/* The printable key of an address: "192.0.2.7" or "2001:db8:1:2::/64". */
void xd_authlimit_addr_key(const struct sockaddr *peer, char *out, size_t cap);

/* One entry, for xmppctl auth_bans. */
typedef struct xd_authlimit_entry {
    const char *key;        /* "192.0.2.7", "2001:db8::/64", "user@example.org" */
    bool account;           /* an account (never banned), not an address */
    unsigned failures;      /* in the current window */
    uint64_t banned_for_ms; /* time left of the ban; 0 = not banned */
} xd_authlimit_entry_t;

/* Calls fn for each live entry, newest first, under the table's lock (fn
 * must not call back into this file); stops when fn returns non-zero. */
void xd_authlimit_foreach(int (*fn)(void *arg, const xd_authlimit_entry_t *e), void *arg);

/* Forgets the entry with that key (an address as xd_authlimit_addr_key
 * prints it, a plain address, or an account), or all of them for "all".
 * Returns how many entries went. */
size_t xd_authlimit_clear(const char *key);

/* Live entries in the table. */
size_t xd_authlimit_count(void);

/* Uses `conf` instead of the published configuration's auth_limits (NULL:
 * back to the configuration).  For tests; copied. */
void xd_authlimit_configure(const xd_auth_limits_t *conf);

/* Frees the table (server stop, tests); the next call starts afresh. */
void xd_authlimit_reset(void);

/* Registers auth_bans and auth_unban (start-up, once). */
void xd_authlimit_register_commands(void);

/* Tests: the clock in milliseconds (NULL: the monotonic clock). */
void xd_authlimit_test_set_clock(uint64_t (*now_ms)(void));

#endif
