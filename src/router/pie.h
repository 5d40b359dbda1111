/*
 * pie.h — accounts to and from XEP-0227 files (Portable Import/Export
 * Format): the xmppctl commands export_account, export_host, import_file.
 *
 * The core writes and reads <user name=…/> with its SCRAM credentials
 * (<scram-credentials xmlns='urn:xmpp:pie:0#scram'/>); everything else of
 * an account comes from and goes to the modules through the hooks
 * ACCOUNT_EXPORT and ACCOUNT_IMPORT (hooks.h), so the files are the same on
 * every storage backend.
 */
#ifndef XD_ROUTER_PIE_H
#define XD_ROUTER_PIE_H

#include "xmppd/el.h"
#include "xmppd/scram_cred.h"

#define XD_NS_PIE "urn:xmpp:pie:0"
#define XD_NS_PIE_SCRAM "urn:xmpp:pie:0#scram"

/* Registers export_account, export_host and import_file (start-up). */
void xd_pie_register_commands(void);

/* Appends cred to user as <scram-credentials mechanism='SCRAM-…'/>. */
void xd_pie_scram_el(xd_el_t *user, const xd_scram_cred_t *cred);

/* Reads a <scram-credentials/> element into *out: 0, or XD_EINVAL with a
 * message in err (an unknown mechanism, a missing or malformed child, a
 * key of the wrong size). */
int xd_pie_scram_parse(const xd_el_t *el, xd_scram_cred_t *out, char *err, size_t errcap);

#endif
