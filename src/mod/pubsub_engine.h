/*
 * pubsub_engine.h — what PEP (mod_pep, XEP-0163) and the pubsub service
 * (mod_pubsub, XEP-0060) share: a node's configuration and its data forms
 * (node_config, publish-options preconditions, meta-data), the access
 * decisions that read the owner's roster, the errors with their pubsub#errors
 * conditions and the event messages.
 *
 * The engine holds no state and touches no storage: each module keeps its
 * own tables (pep_node/pep_item, pubsub_node/…) and its own threads; these
 * functions are pure or read the roster through ROSTER_GET, so they run on
 * the blocking pool (the roster read may block) unless marked otherwise.
 */
#ifndef XMPPD_MOD_PUBSUB_ENGINE_H
#define XMPPD_MOD_PUBSUB_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/roster.h"
#include "xmppd/stanza.h"

#define PSE_NS_ERRORS "http://jabber.org/protocol/pubsub#errors"
#define PSE_NS_PUBOPT "http://jabber.org/protocol/pubsub#publish-options"
#define PSE_NS_NODECFG "http://jabber.org/protocol/pubsub#node_config"
#define PSE_NS_META "http://jabber.org/protocol/pubsub#meta-data"
#define PSE_NS_SUBOPT "http://jabber.org/protocol/pubsub#subscribe_options"
#define PSE_NS_SUBAUTH "http://jabber.org/protocol/pubsub#subscribe_authorization"

/* Access models, as bits (a service says which it offers). */
enum {
    PSE_AM_OPEN = 1,
    PSE_AM_PRESENCE = 2,
    PSE_AM_ROSTER = 4,
    PSE_AM_AUTHORIZE = 8,
    PSE_AM_WHITELIST = 16,
};

enum { PSE_MAX = -1 }; /* max_items "max" */

#define PSE_GROUPS_MAX 512 /* bytes of roster_groups_allowed, newline-separated */

/* A node's configuration (pubsub#node_config). */
typedef struct pse_cfg {
    char access[16];         /* open, presence, roster, authorize, whitelist */
    bool persist;            /* persist_items */
    int64_t max_items;       /* a number, or PSE_MAX */
    char send_last[32];      /* never, on_sub, on_sub_and_presence */
    char publish_model[16];  /* publishers, subscribers, open */
    bool deliver_payloads;   /* notifications carry the item */
    bool notify_retract;     /* retractions are notified */
    bool notify_delete;      /* deletion is notified */
    bool notify_config;      /* configuration changes are notified */
    char notif_type[12];     /* headline, normal */
    int64_t item_expire;     /* seconds an item lives; 0: for ever */
    char groups[PSE_GROUPS_MAX]; /* roster_groups_allowed, one per line */
    char title[256];         /* pubsub#title */
} pse_cfg_t;

/* Fields of a form, as bits (which a form named; which a service offers). */
enum {
    PSE_F_ACCESS = 1,
    PSE_F_PERSIST = 2,
    PSE_F_MAX = 4,
    PSE_F_SENDLAST = 8,
    PSE_F_PUBMODEL = 16,
    PSE_F_PAYLOADS = 32,
    PSE_F_RETRACT = 64,
    PSE_F_DELETE = 128,
    PSE_F_CONFIG = 256,
    PSE_F_NOTIFTYPE = 512,
    PSE_F_EXPIRE = 1024,
    PSE_F_GROUPS = 2048,
    PSE_F_TITLE = 4096,
    PSE_F_ALL = 8191,
};

/* What a service offers: its access models and fields, and what "max" means. */
typedef struct pse_limits {
    unsigned access;       /* PSE_AM_* bits */
    unsigned fields;       /* PSE_F_* bits; others are ignored in forms */
    int64_t max_items_limit;
} pse_limits_t;

/* The defaults: presence access (open when open_access), persistent,
 * max_items 1, on_sub_and_presence, publishers, payloads, notifications on,
 * headline, no expiry. */
void pse_cfg_default(pse_cfg_t *c, bool open_access);

/* The items a node keeps (max resolved, 1 when not persistent). */
int64_t pse_cfg_keep(const pse_cfg_t *c, const pse_limits_t *lim);

/* "1"/"true" → 1, "0"/"false" → 0, else -1. */
int pse_bool(const char *v);

/* XEP-0060 8.1.3: the <configure/> of a create request in `pubsub`, which
 * must follow `create` and name no node of its own.  *ce is it (NULL:
 * none); false when one is there but misplaced (bad-request). */
bool pse_create_configure(const xd_el_t *pubsub, const xd_el_t *create, const xd_el_t **ce);

/* Reads a submitted form (publish-options or node_config, by its FORM_TYPE)
 * into *c; the fields it named into *set.  NULL, or a message for
 * not-acceptable / precondition-not-met.  A field that lim does not offer
 * fails a publish-options form (XEP-0060 7.1.5) and is ignored in a
 * node_config one. */
/* pse_form_read's message for an access model the service does not offer
 * (XEP-0060 8.1.2: not-acceptable + unsupported-access-model on create). */
#define PSE_WHY_ACCESS "pubsub#access_model: not an access model of this service"
const char *pse_form_read(const xd_el_t *x, const char *form_type, const pse_limits_t *lim,
                          pse_cfg_t *c, unsigned *set);

/* Whether the node's `have` satisfies the preconditions `want` (fields `set`). */
bool pse_precond_ok(const pse_cfg_t *have, const pse_cfg_t *want, unsigned set,
                    const pse_limits_t *lim);

/* Adds <x xmlns='jabber:x:data' type=form_type_attr> with the node's
 * configuration (the service's fields) to parent, FORM_TYPE ns; returns it. */
xd_el_t *pse_cfg_form(xd_el_t *parent, const char *type_attr, const char *ns,
                      const pse_cfg_t *c, const pse_limits_t *lim);

/* The configuration as one line of text for storage, and back (unknown
 * keys are skipped, missing ones keep c's value).  The text is the caller's. */
char *pse_cfg_encode(const pse_cfg_t *c);
void pse_cfg_decode(const char *s, size_t len, pse_cfg_t *c);

/* Whether a roster item in `groups` is in one of the allowed groups. */
bool pse_groups_match(const pse_cfg_t *c, const char *const *groups, size_t ngroups);

/* As pse_groups_match for groups given one per line (pse_contacts_t). */
bool pse_groups_match_nl(const pse_cfg_t *c, const char *groups_nl);

/* A roster item's groups, one per line ("" for none; xd_free). */
char *pse_groups_nl(const xd_roster_view_t *item);

/* The most distinct item ids one <items/> request may name (XEP-0060
 * 6.5.8); more is refused with policy-violation (pse_item_ids). */
#define PSE_ITEM_IDS_MAX 100

/* The ids of the <item id/> children (pubsub namespace) of an <items/>
 * request into ids (borrowed from items; in order, each once: a repeated id
 * is asked once).  How many (0: none named, all items asked), or -1 when
 * more than PSE_ITEM_IDS_MAX distinct ids are named. */
int pse_item_ids(const xd_el_t *items, const char *ids[PSE_ITEM_IDS_MAX]);

/* An error reply to iq: cond, with <app xmlns=pubsub#errors [feature]/>
 * when app is set. */
xd_stanza_t *pse_err(const xd_stanza_t *iq, xd_cond cond, const char *app, const char *feature,
                     const char *text);

/* <event xmlns=pubsub#event><items node=…/></event>; *items_out is the <items/>. */
xd_el_t *pse_event(const char *node, xd_el_t **items_out);

/* The message carrying the serialized <event/> from `from` to `to`, of
 * type `type` (headline when NULL), with a random id; NULL when xml does
 * not parse.  Any thread. */
xd_el_t *pse_event_message(const char *from, const char *to, const char *type, const char *xml,
                           size_t len);

/* Sends pse_event_message(…); returns its bytes (0: not sent).  Any thread. */
size_t pse_send_event(const char *from, const char *to, const char *type, const char *xml,
                      size_t len);

/* ---- the owner's roster (ROSTER_GET; on the pool) ---------------------------------------------- */

typedef struct pse_contacts {
    char **jids;      /* bare JIDs */
    char **groups;    /* their groups, one per line ("" for none) */
    unsigned char *sub; /* their subscriptions (XD_ROSTER_SUB_* bits) */
    size_t n, cap;
    unsigned mask;    /* subscriptions that count (XD_ROSTER_SUB_* bits) */
} pse_contacts_t;

/* The roster of host/user (only `contact`'s item when set): contacts whose
 * subscription has a bit of mask (~0u: every item).  0, XD_ENOTFOUND when
 * no roster answered. */
int pse_roster(const char *host, const char *user, const char *contact, unsigned mask,
               pse_contacts_t *out);
void pse_contacts_free(pse_contacts_t *c);

/* Whether contact i of cs may see a node with cfg: roster, in one of the
 * allowed groups; other models, subscription from or both (who a
 * notification goes to; pse_contacts_allow is who may read). */
bool pse_contact_sees(const pse_contacts_t *cs, size_t i, const pse_cfg_t *c);

/* Whether bare JID `who` may read a node with cfg by the roster cs (read
 * with mask ~0u): presence (subscription from or both) or roster (and in
 * one of the allowed groups).  Other models: false. */
bool pse_contacts_allow(const pse_contacts_t *cs, const char *who, const pse_cfg_t *c);

/* A requester's item in an owner's roster, read at its first use by a
 * node of the presence or roster model and kept for the rest of the
 * request (its other nodes). */
typedef struct pse_reader {
    const char *host, *user; /* the owner */
    const char *who;         /* the requester's bare JID */
    bool read;
    pse_contacts_t cs;
} pse_reader_t;

/* pse_contacts_allow for r's requester (on the pool: may read the roster). */
bool pse_reader_allows(pse_reader_t *r, const pse_cfg_t *c);
void pse_reader_free(pse_reader_t *r);

/* Whether bare JID `who` may read a node of host/user with cfg by its
 * roster (pse_contacts_allow, the roster read for this call). */
bool pse_roster_allows(const char *host, const char *user, const char *who, const pse_cfg_t *c);

#endif
