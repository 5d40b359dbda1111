/*
 * jid.h — XMPP addresses, RFC 7622.
 *
 * A JID is parsed, validated and normalised once (localpart with the PRECIS
 * UsernameCaseMapped profile, domainpart via IDNA2008/UTS-46 with libidn2 or
 * as an IP literal, resourcepart with the OpaqueString profile) and from
 * then on compared as normalised bytes.  An xd_jid_t is immutable and
 * reference-counted (atomic), so it may be shared between threads.
 */
#ifndef XMPPD_JID_H
#define XMPPD_JID_H

#include <stdbool.h>
#include <stddef.h>

#include "xmppd/str.h"

#define XD_JID_PART_MAX 1023 /* RFC 7622 3.2, 3.3, 3.4: bytes per part */
#define XD_JID_MAX 3071      /* three parts and two separators */

typedef struct xd_jid xd_jid_t;

/* Parses and normalises `in`.  On success *out is a new reference.  Errors:
 * XD_EJID_* naming the part and the rule that failed. */
int xd_jid_parse(xd_str_t in, xd_jid_t **out);

/* Builds a JID from parts (local and resource may be empty = absent). */
int xd_jid_make(xd_str_t local, xd_str_t domain, xd_str_t resource, xd_jid_t **out);

xd_jid_t *xd_jid_ref(xd_jid_t *jid);
void xd_jid_unref(xd_jid_t *jid);

/* Normalised parts; an absent part has len 0.  The bytes live as long as
 * the JID and are NUL-terminated. */
xd_str_t xd_jid_local(const xd_jid_t *jid);
xd_str_t xd_jid_domain(const xd_jid_t *jid);
xd_str_t xd_jid_resource(const xd_jid_t *jid);
xd_str_t xd_jid_bare_str(const xd_jid_t *jid); /* "local@domain" or "domain" */
xd_str_t xd_jid_full_str(const xd_jid_t *jid); /* with "/resource" when present */

bool xd_jid_is_bare(const xd_jid_t *jid);
bool xd_jid_eq(const xd_jid_t *a, const xd_jid_t *b);      /* full JIDs equal */
bool xd_jid_eq_bare(const xd_jid_t *a, const xd_jid_t *b); /* bare parts equal */

/* A new reference to the bare JID (the same object when already bare). */
xd_jid_t *xd_jid_bare(xd_jid_t *jid);

/* The bare JID of JID text, normalised ("Juliet@Example.COM/Home" gives
 * "juliet@example.com"), as a new NUL-terminated string owned by the
 * caller (xd_free); NULL when text is NULL or not a JID. */
char *xd_jid_bare_text(const char *text);

/* Part-wise preparation, for config values and SASL usernames.  On success
 * *out is a new NUL-terminated string owned by the caller (xd_free). */
int xd_jid_prep_local(xd_str_t in, char **out);
int xd_jid_prep_domain(xd_str_t in, char **out);
int xd_jid_prep_resource(xd_str_t in, char **out);

#endif
