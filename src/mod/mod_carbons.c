/*
 * mod_carbons.c — message carbons (XEP-0280): mod_carbons, on every host
 * (XD_MODULE_ALWAYS).  <enable/> and <disable/> set the requesting
 * session's flag in the session table; the session manager makes the
 * copies (src/router/carbons.c) for sessions with the flag.
 */
#include <string.h>

#include "xmppd/err.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

static xd_stanza_t *
carbons_iq(const xd_iq_req_t *req)
{
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    const char *name = xd_el_name(req->payload);
    if (strcmp(type, "set") != 0 || (strcmp(name, "enable") != 0 && strcmp(name, "disable") != 0))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    if (!xd_jid_eq_bare(req->from, req->to) && xd_jid_local(req->to).len)
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, NULL);
    if (xd_session_set_flag(req->from, XD_SESSION_CARBONS, !strcmp(name, "enable")) != 0)
        return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, NULL);
    return xd_iq_result(req->iq);
}

static int
carbons_start(xd_module_ctx_t *ctx)
{
    /* Clients send <enable/> without 'to' (the account) or to the server. */
    int rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_CARBONS, XD_IQ_INLINE, carbons_iq, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_CARBONS, XD_IQ_INLINE, carbons_iq, NULL);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

const xd_module_t xd_mod_carbons = {
    .abi = XD_MODULE_ABI,
    .name = "mod_carbons",
    .doc = "Message carbons (XEP-0280)",
    .flags = XD_MODULE_ALWAYS,
    .start = carbons_start,
};
