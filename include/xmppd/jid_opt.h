/*
 * jid_opt.h — option types for XMPP addresses (opt.h CUSTOM types, src/xmpp/jid_opt.c).
 *
 * The option tables of src/core know no JIDs (layering: core sits below
 * src/xmpp), so the types whose values are prepared with RFC 7622 live here
 * and are used like the generic ones:
 *
 *   XD_OPT_JID          xd_jid_t * (a reference; NULL = unset)   "invalid JID …"
 *   XD_OPT_DOMAIN       char *, prepared (NULL = unset)          "invalid domain …"
 *   XD_OPT_DOMAIN_LIST  xd_strlist_t, prepared, no duplicates    "duplicate domain …"
 *
 * Errors have the format of every option error (FILE:LINE:COL: PATH: MESSAGE).
 */
#ifndef XMPPD_JID_OPT_H
#define XMPPD_JID_OPT_H

#include "xmppd/jid.h"
#include "xmppd/opt.h"

extern const xd_opt_custom_t xd_opt_jid_type;         /* JID */
extern const xd_opt_custom_t xd_opt_domain_type;      /* domain */
extern const xd_opt_custom_t xd_opt_domain_list_type; /* list of domains */

#define XD_OPT_JID(key, T, f, def, doc) XD_OPT_CUSTOM(key, T, f, def, &xd_opt_jid_type, doc)
#define XD_OPT_DOMAIN(key, T, f, def, doc) \
    XD_OPT_CUSTOM(key, T, f, def, &xd_opt_domain_type, doc)
#define XD_OPT_DOMAIN_LIST(key, T, f, def, doc) \
    XD_OPT_CUSTOM(key, T, f, def, &xd_opt_domain_list_type, doc)

#endif
