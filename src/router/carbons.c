/*
 * carbons.c — message carbons (see carbons.h).
 */
#include <stdio.h>
#include <string.h>

#include "router/carbons.h"

#include "xmppd/session.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

#define CARBONS_MAX_RESOURCES 64

bool
xd_carbons_eligible(const xd_stanza_t *st)
{
    const xd_el_t *el = xd_stanza_root(st);
    if (xd_stanza_kind_of(el) != XD_STANZA_MESSAGE)
        return false;
    const char *type = xd_el_attr(el, "type");
    bool chat = type && !strcmp(type, "chat");
    bool normal = (!type || !strcmp(type, "normal")) && xd_el_child(el, "body", NULL);
    if (!chat && !normal)
        return false;
    /* XEP-0280 6: the sender opted out with <private/>, or with the XEP-0334
     * <no-copy/> hint (honoured on bare-JID messages too: carbons are no
     * part of RFC 6121 delivery, which the hint leaves alone). */
    if (xd_el_child(el, "private", XD_NS_CARBONS) || xd_el_child(el, "no-copy", XD_NS_HINTS) ||
        xd_el_child(el, "received", XD_NS_CARBONS) || xd_el_child(el, "sent", XD_NS_CARBONS))
        return false;
    return true;
}

/* <message from=bare to=full type=…><kind><forwarded><message …/></forwarded></kind></message> */
static xd_stanza_t *
carbons_wrap(const xd_stanza_t *st, const char *kind, xd_str_t bare, xd_str_t full)
{
    const xd_el_t *orig = xd_stanza_root(st);
    char b[3072], f[3072];
    snprintf(b, sizeof b, "%.*s", (int)bare.len, bare.p);
    snprintf(f, sizeof f, "%.*s", (int)full.len, full.p);
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_set_attr(m, "from", b);
    xd_el_set_attr(m, "to", f);
    const char *type = xd_el_attr(orig, "type");
    xd_el_set_attr(m, "type", type ? type : "normal");
    xd_el_t *k = xd_el_add_child(m, kind, XD_NS_CARBONS);
    xd_el_t *fw = xd_el_add_child(k, "forwarded", XD_NS_FORWARD);
    xd_el_append(fw, xd_stanza_edit(st));
    return xd_el_freeze(m);
}

/* Copies st, wrapped as `kind`, to every available carbons-enabled session
 * in res[0..n) that is not skipped. */
static void
carbons_copy(const xd_stanza_t *st, const char *kind, const xd_session_info_t *res, size_t n,
             const bool *skip, uint64_t skip_id)
{
    for (size_t i = 0; i < n; i++) {
        if (!(res[i].flags & XD_SESSION_CARBONS) || !res[i].available ||
            (skip && skip[i]) || res[i].ref.id == skip_id)
            continue;
        xd_session_send_take(&res[i].ref, carbons_wrap(st, kind, xd_jid_bare_str(res[i].jid),
                                                       xd_jid_full_str(res[i].jid)));
    }
}

static bool
carbons_any(const xd_session_info_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (res[i].flags & XD_SESSION_CARBONS)
            return true;
    return false;
}

void
xd_carbons_received(const xd_stanza_t *st, const xd_session_info_t *res, size_t n,
                    const bool *delivered)
{
    if (carbons_any(res, n) && xd_carbons_eligible(st))
        carbons_copy(st, "received", res, n, delivered, 0);
}

void
xd_carbons_sent(const xd_stanza_t *st, const xd_jid_t *from, uint64_t self)
{
    if (!xd_carbons_eligible(st))
        return;
    xd_session_info_t res[CARBONS_MAX_RESOURCES];
    size_t n = xd_session_list(from, res, CARBONS_MAX_RESOURCES);
    if (n > CARBONS_MAX_RESOURCES)
        n = CARBONS_MAX_RESOURCES;
    carbons_copy(st, "sent", res, n, NULL, self); /* the sender's own session is skipped */
    for (size_t i = 0; i < n; i++)
        xd_session_info_clear(&res[i]);
}
