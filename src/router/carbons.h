/*
 * carbons.h — message carbons (XEP-0280): copies of a user's one-to-one
 * chats to the user's other sessions that asked for them.
 *
 *   received: a chat message delivered to one session of U is copied, wrapped
 *             in <received><forwarded>…</forwarded></received>, to U's other
 *             carbons-enabled sessions;
 *   sent:     a chat message a session of U sends is copied, wrapped in
 *             <sent>, to U's other carbons-enabled sessions.
 *
 * Eligible (XEP-0280 6): type chat, or normal with a body; not errors; not
 * marked <private xmlns='urn:xmpp:carbons:2'/> or <no-copy
 * xmlns='urn:xmpp:hints'/>; not itself a carbon.  Enabling and disabling is
 * an IQ handler (mod_basic registers it); the flag lives in the session
 * table.
 */
#ifndef XMPPD_ROUTER_CARBONS_H
#define XMPPD_ROUTER_CARBONS_H

#include <stdbool.h>
#include <stdint.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"
#include "xmppd/session.h"

/* Whether st is eligible for carbons. */
bool xd_carbons_eligible(const xd_stanza_t *st);

/* st was delivered to the sessions res[i] with delivered[i] (the
 * recipient's sessions res[0..n)): sends received-carbons to the user's
 * other enabled sessions.  Costs a flag test per session when none has
 * carbons on. */
void xd_carbons_received(const xd_stanza_t *st, const xd_session_info_t *res, size_t n,
                         const bool *delivered);

/* The session `from` (full JID; session id `self`) sent st: sends
 * sent-carbons to the other enabled sessions of the same user. */
void xd_carbons_sent(const xd_stanza_t *st, const xd_jid_t *from, uint64_t self);

#endif
