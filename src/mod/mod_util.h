/*
 * mod_util.h — small helpers shared by the built-in modules, written on
 * the public module API only.
 */
#ifndef XMPPD_MOD_MOD_UTIL_H
#define XMPPD_MOD_MOD_UTIL_H

#include <stdbool.h>

#include "xmppd/el.h"
#include "xmppd/module.h"

/* Runs `sql` (one statement with two parameters: host, then user) for an
 * account on the instance's database: on the blocking pool when called on
 * a worker loop (the result is only logged), at once otherwise (xmppctl's
 * thread, the pool, tests).  No database: nothing. */
void mod_user_rows_delete(xd_module_ctx_t *ctx, const char *sql, const char *host,
                          const char *user);

/* A table of account data that goes with the account: a REMOVE_USER
 * handler on ctx that runs `sql` (static text, as for
 * mod_user_rows_delete) for the removed account. */
int mod_user_rows(xd_module_ctx_t *ctx, const char *sql);

/* A message worth keeping for later (offline storage, the archive): it has
 * a <body> or a <subject>, or an end-to-end encrypted payload that clients
 * send without a body: OMEMO (eu.siacs.conversations.axolotl and
 * urn:xmpp:omemo:2 <encrypted/>), OpenPGP (XEP-0373 <openpgp/>, legacy
 * XEP-0027 jabber:x:encrypted <x/>).  Chat states and receipts alone are
 * not (XEP-0160 3).  Hints (XEP-0334) are the caller's. */
bool mod_msg_worth_keeping(const xd_el_t *msg);

/* 120 random bits as 20 characters of the URL-safe base64 alphabet (a
 * XEP-0359 stanza-id, an archive id), from a per-thread batch of
 * RAND_bytes.  0, or XD_EINTERNAL when the DRBG fails. */
int mod_random_id(char out[21]);

/* An id that sorts by time: the milliseconds since the epoch as 8
 * characters of an alphabet in ASCII order (-0-9A-Z_a-z), then 72 random
 * bits as 12 (XEP-0359: unique and unpredictable), 20 in all.  Ids made
 * later sort after earlier ones (bytewise, as the databases compare keys),
 * so a B-tree keyed by them is appended to at its end.  0, or XD_EINTERNAL. */
int mod_sortable_id(char out[21]);

#endif
