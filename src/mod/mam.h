/*
 * mam.h — the message archive engine of mod_mam (XEP-0313) for other
 * built-in modules: mod_muc keeps a room's archive in it (rows with host =
 * the service's domain, username = the room's local part, peer = the room
 * and resource = the sender's nick), written by the same batched writer and
 * read by the same queries as an account's archive.
 *
 * `mam` is the mod_mam instance of the host whose database holds the
 * archive (xd_module_instance("mod_mam", host), held by the caller).
 */
#ifndef XMPPD_MOD_MAM_H
#define XMPPD_MOD_MAM_H

#include <stdbool.h>
#include <stdint.h>

#include "xmppd/input.h"
#include "xmppd/jid.h"
#include "xmppd/module.h"
#include "xmppd/stanza.h"

#define MAM_NS_MODERATE "urn:xmpp:message-moderate:1"
#define MAM_NS_MODERATE0 "urn:xmpp:message-moderate:0"

/* Queues msg (as the room sent it: from room/nick, no 'to') for the
 * archive of room `room` (bare JID) under archive id `id`.  Worker loop,
 * while a stanza is handled.  The sender's stream is held until the record
 * is written (xd_input_hold: the stream being handled, or the one lent by
 * mod_muc when the room is on another worker, xd_input_lend).  0, XD_EFULL
 * (refuse the message) or XD_EINVAL (no database). */
int mam_room_store(xd_module_ctx_t *mam, const xd_stanza_t *msg, const xd_jid_t *room,
                   const char *id);

/* Answers a urn:xmpp:mam:2 IQ (get: the form; set: a query, its results
 * and <fin/> to the requester's full JID) on the archive of `room`.  Pool
 * thread.  NULL when answered, else the error stanza to route. */
xd_stanza_t *mam_room_iq(xd_module_ctx_t *mam, const xd_stanza_t *iq, const xd_jid_t *room);

/* XEP-0425: the archived message `id` of room `room` becomes a tombstone
 * <retracted stamp/> holding `detail` (serialized children: <moderated/>,
 * <reason/>).  Pool thread.  0, XD_ENOTFOUND, or a database error;
 * *occ_id gets the sender's occupant-id (or NULL), xd_free it. */
int mam_room_moderate(xd_module_ctx_t *mam, const xd_jid_t *room, const char *id,
                      const char *detail, char **occ_id);

/* XEP-0424: occupant `occ_id` retracts its own archived message `id` of
 * room `room`: as mam_room_moderate, but only when the archived message
 * carries that occupant-id (XEP-0421: the same account).  Pool thread.
 * 0, XD_ENOTFOUND, XD_EINVAL (another occupant's message), or a database
 * error. */
int mam_room_retract(xd_module_ctx_t *mam, const xd_jid_t *room, const char *id,
                     const char *occ_id, const char *detail);

/* One message of a room's archive as mam_room_recent hands it over: its
 * archive id, its time (µs since the epoch) and the message as the room
 * sent it (mam_room_store's msg). */
typedef void (*mam_room_msg_fn)(void *arg, const char *id, int64_t ts_us, const char *xml,
                                size_t len);

/* The newest `max` messages of room `room`'s archive that still have
 * their content (neither retracted nor moderated), newest first, each to
 * fn, the journal's records of that archive indexed first (a room's join
 * history completed from its archive after a crash).  Pool thread.  0 or
 * a database error. */
int mam_room_recent(xd_module_ctx_t *mam, const xd_jid_t *room, int max, mam_room_msg_fn fn,
                    void *arg);

/* Deletes room `room`'s archive (the room was destroyed).  Pool thread. */
int mam_room_delete(xd_module_ctx_t *mam, const xd_jid_t *room);

#endif
