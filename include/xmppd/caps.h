/*
 * caps.h — the verification string of entity capabilities (XEP-0115 5.1).
 *
 * The server announces its own capabilities in stream features and answers
 * disco#info for node#ver (mod_basic); PEP and presence handling will use
 * the same function to check what clients announce.
 */
#ifndef XMPPD_CAPS_H
#define XMPPD_CAPS_H

#include "xmppd/el.h"

#define XD_NS_CAPS "http://jabber.org/protocol/caps"
#define XD_CAPS_NODE "https://xmppd.org" /* the node the server names itself by */

/* Computes the XEP-0115 'ver' for the disco#info <query/> element `query`
 * with SHA-1: identities sorted by category/type/xml:lang/name, features
 * sorted, then each XEP-0128 form (jabber:x:data with a hidden FORM_TYPE)
 * sorted by FORM_TYPE with its fields sorted by var and their values
 * sorted; base64 of the digest into out (28 characters and NUL).
 * 0, or XD_EINVAL for a query with duplicate identities or features or a
 * form without FORM_TYPE (5.4: such a ver must not be generated). */
int xd_caps_ver(const xd_el_t *query, char out[29]);

#endif
