/*
 * privacy_match.c — the rules of the privacy engine as data: lists and
 * their items, and the matcher that picks the item deciding for a stanza
 * (XEP-0016 2.1 and 2.2; privacy.h, "Evaluation").
 *
 * Pure: no locks, no storage, no global state.  A list is owned by whoever
 * filled it; the functions here read or change only what they are given.
 */
#include <stdlib.h>
#include <string.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/stanza.h"

void
xd_privacy_list_clear(xd_privacy_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        xd_free(l->items[i].value);
    xd_free(l->items);
    xd_free(l->name);
    memset(l, 0, sizeof *l);
}

void
xd_privacy_list_add(xd_privacy_list_t *l, const xd_privacy_item_t *it)
{
    l->items = xd_realloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n] = *it;
    l->items[l->n].value = it->value ? xd_strdup(it->value) : NULL;
    l->n++;
}

void
xd_privacy_list_copy(xd_privacy_list_t *dst, const xd_privacy_list_t *src)
{
    memset(dst, 0, sizeof *dst);
    dst->name = src->name ? xd_strdup(src->name) : NULL;
    for (size_t i = 0; i < src->n; i++)
        xd_privacy_list_add(dst, &src->items[i]);
}

static int
prv_item_cmp(const void *a, const void *b)
{
    uint32_t x = ((const xd_privacy_item_t *)a)->order, y = ((const xd_privacy_item_t *)b)->order;
    return x < y ? -1 : x > y;
}

int
xd_privacy_list_sort(xd_privacy_list_t *l)
{
    if (l->n > 1)
        qsort(l->items, l->n, sizeof *l->items, prv_item_cmp);
    for (size_t i = 1; i < l->n; i++)
        if (l->items[i].order == l->items[i - 1].order)
            return XD_EEXIST;
    return 0;
}

bool
xd_privacy_list_needs_roster(const xd_privacy_list_t *l)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (l->items[i].type == XD_PRIVACY_GROUP || l->items[i].type == XD_PRIVACY_SUBSCRIPTION)
            return true;
    return false;
}

bool
xd_privacy_jid_matches(const char *item, const xd_jid_t *j)
{
    if (!item || !j)
        return false;
    size_t len = strlen(item);
    const char *slash = memchr(item, '/', len);
    size_t bare_len = slash ? (size_t)(slash - item) : len;
    bool local = memchr(item, '@', bare_len) != NULL;
    xd_str_t dom = xd_jid_domain(j);
    if (local && slash) /* user@domain/resource: only that resource */
        return prv_str_is(xd_jid_full_str(j), item, len);
    if (local) /* user@domain: any resource */
        return prv_str_is(xd_jid_bare_str(j), item, len);
    if (slash) /* domain/resource: that resource at the domain, whoever */
        return prv_str_is(dom, item, bare_len) &&
               prv_str_is(xd_jid_resource(j), slash + 1, len - bare_len - 1);
    return prv_str_is(dom, item, len); /* domain: everything at it */
}

static int
prv_sub_of(const char *v)
{
    return v ? xd_roster_sub_parse(v) : -1;
}

bool
xd_privacy_item_matches(const xd_privacy_item_t *it, const xd_privacy_peer_t *p,
                        xd_privacy_kind k)
{
    if (it->kinds != 0 && (k == XD_PRIVACY_OTHER || !(it->kinds & (unsigned)k)))
        return false;
    switch (it->type) {
    case XD_PRIVACY_ANY:
        return true;
    case XD_PRIVACY_JID:
        return xd_privacy_jid_matches(it->value, p->jid);
    case XD_PRIVACY_GROUP:
        for (size_t i = 0; it->value && i < p->ngroups; i++)
            if (strcmp(p->groups[i], it->value) == 0)
                return true;
        return false;
    case XD_PRIVACY_SUBSCRIPTION:
        return prv_sub_of(it->value) == p->sub;
    }
    return false;
}

const xd_privacy_item_t *
xd_privacy_decide(const xd_privacy_list_t *l, const xd_privacy_peer_t *p, xd_privacy_kind k)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (xd_privacy_item_matches(&l->items[i], p, k))
            return &l->items[i];
    return NULL;
}

bool
xd_privacy_is_block_item(const xd_privacy_item_t *it)
{
    return it && it->type == XD_PRIVACY_JID && it->deny && it->kinds == 0 && it->value;
}

xd_privacy_kind
xd_privacy_kind_of(const xd_el_t *el, bool outgoing)
{
    switch (xd_stanza_kind_of(el)) {
    case XD_STANZA_MESSAGE:
        return outgoing ? XD_PRIVACY_OTHER : XD_PRIVACY_MESSAGE;
    case XD_STANZA_IQ:
        return outgoing ? XD_PRIVACY_OTHER : XD_PRIVACY_IQ;
    case XD_STANZA_PRESENCE: {
        /* XEP-0016 2.1 note: notifications are presence without a type or
         * 'unavailable'; subscriptions and probes are not. */
        const char *t = xd_el_attr(el, "type");
        if (t && strcmp(t, "unavailable") != 0)
            return XD_PRIVACY_OTHER;
        return outgoing ? XD_PRIVACY_PRESENCE_OUT : XD_PRIVACY_PRESENCE_IN;
    }
    default:
        return XD_PRIVACY_OTHER;
    }
}
