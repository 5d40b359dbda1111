/*
 * pep_api.h — what other modules of src/mod do with an account's PEP nodes
 * (mod_pep) for the XEP-0411 bookmarks and XEP-0398 avatar conversions:
 * mod_private and mod_vcard publish, retract and read items as the account
 * itself would, with the same storage, limits and notifications.
 *
 * `pep` is the running mod_pep instance of the host (xd_module_instance
 * ("mod_pep", host), held by the caller).  All run on the blocking pool.
 *
 * `in` of pep_publish_as and pep_retract_as is the stream whose stanza made
 * the change: xd_input_job() in pool work submitted while the stanza was
 * handled (an XD_IQ_PARALLEL handler, xd_module_submit work), which holds
 * the stream until it is done; {0} for a change no stream asked for (the
 * server's own: then the notifications are counted but nobody waits).  The
 * notifications are counted in pep_stats publishes_in_flight as those of a
 * publish by IQ are, and that stream is billed for them (its shaper) and,
 * with max_publishes_in_flight of the host's under way, reads its next
 * stanza only after they have gone out (publish_waits), so a client that
 * pipelines private XML or vCard sets cannot queue unbounded work.  The
 * hold is taken before the calling job's own hold of the stream is
 * released: call them from that job's work, not from later work of its own.
 */
#ifndef XMPPD_MOD_PEP_API_H
#define XMPPD_MOD_PEP_API_H

#include <stdbool.h>

#include "pubsub_engine.h"
#include "xmppd/el.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/module.h"

/* Publishes `payload` as item `id` of node on host/user's account and
 * notifies as a publish by the account does.  A node that does not exist
 * is created with `want` (the fields `set` of it applied to the defaults);
 * an existing node keeps its configuration.  0, XD_ELIMIT (too big, too
 * many nodes) or a storage error. */
int pep_publish_as(xd_module_ctx_t *pep, xd_input_ref_t in, const char *host, const char *user,
                   const char *node, const char *id, const xd_el_t *payload,
                   const pse_cfg_t *want);

/* Retracts item `id` of node (notified).  0, XD_ENOTFOUND, or an error. */
int pep_retract_as(xd_module_ctx_t *pep, xd_input_ref_t in, const char *host, const char *user,
                   const char *node, const char *id);

/* The items of node, oldest first, as <item id=…>payload</item> children
 * of a new <items/> into *out (the caller frees it).  XD_ENOTFOUND when the
 * node does not exist. */
int pep_items_read(xd_module_ctx_t *pep, const char *host, const char *user, const char *node,
                   xd_el_t **out);

/* Told of every publish an account's client makes (not those of
 * pep_publish_as) after it is stored, on the pool: mod_vcard follows
 * urn:xmpp:avatar:metadata (XEP-0398).  One watcher in the process, set at
 * a module's start and kept (it looks its own instance up by host). */
typedef void (*pep_watch_fn)(xd_module_ctx_t *pep, const char *host, const char *user,
                             const char *node, const char *id, const xd_el_t *payload);
void pep_watch_set(pep_watch_fn fn);

/* DISCO_SM_FEATURES for a conversion: adds feature `var` to an account's
 * disco#info (no node) when mod_pep runs on its host. */
void pep_disco_conversion(const xd_hook_disco_t *ev, const char *var);

#endif
