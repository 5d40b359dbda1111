/*
 * carbons.c — message carbons (see carbons.h).
 */
#include <string.h>

#include "router/carbons.h"

#include "router/sm.h"
#include "stream/c2s.h"
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

static void
carbons_send(const xd_stanza_t *st, const char *kind, const xd_jid_t *user, const uint64_t *skip,
             size_t nskip)
{
    xd_sm_entry_t res[CARBONS_MAX_RESOURCES];
    size_t n = xd_sm_resources(user, res, CARBONS_MAX_RESOURCES);
    if (n > CARBONS_MAX_RESOURCES)
        n = CARBONS_MAX_RESOURCES;
    for (size_t i = 0; i < n; i++) {
        bool skipped = !res[i].carbons || !res[i].available;
        for (size_t j = 0; j < nskip && !skipped; j++)
            skipped = res[i].conn_id == skip[j];
        if (!skipped)
            xd_c2s_deliver(res[i].worker, res[i].conn_id,
                           carbons_wrap(st, kind, xd_jid_bare_str(res[i].jid),
                                        xd_jid_full_str(res[i].jid)));
        xd_sm_entry_clear(&res[i]);
    }
}

void
xd_carbons_received(const xd_stanza_t *st, const xd_jid_t *to, const uint64_t *done,
                    size_t ndone)
{
    if (xd_carbons_eligible(st))
        carbons_send(st, "received", to, done, ndone);
}

void
xd_carbons_sent(const xd_stanza_t *st, const xd_jid_t *from)
{
    if (!xd_carbons_eligible(st))
        return;
    /* The sender's own session is the one to skip. */
    xd_sm_entry_t e;
    uint64_t self = 0;
    if (xd_sm_find(from, &e) == 0) {
        self = e.conn_id;
        xd_sm_entry_clear(&e);
    }
    carbons_send(st, "sent", from, &self, 1);
}
