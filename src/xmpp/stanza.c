/*
 * stanza.c — replies, stanza errors and the parsed addresses that travel
 * with a stanza (see include/xmppd/stanza.h).
 *
 * The parsed 'to' and 'from' live in the stanza's cache slots (el.h): the
 * first reader parses, every later one (router, filters, IQ dispatch, the
 * s2s manager) takes the same xd_jid_t; the session that stamps 'from'
 * puts its own bound JID there, so a session's stanza is never parsed for
 * its sender.
 */
#include <pthread.h>
#include <string.h>

#include "xml/tree.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

enum { ST_SLOT_TO = 0, ST_SLOT_FROM = 1 };

static void
st_jid_free(void *v)
{
    xd_jid_unref(v);
}

static pthread_once_t st_slots_once = PTHREAD_ONCE_INIT;

static void
st_slots_init(void)
{
    xd_stanza_cache_slot(ST_SLOT_TO, st_jid_free);
    xd_stanza_cache_slot(ST_SLOT_FROM, st_jid_free);
}

static const xd_jid_t *
st_addr(const xd_stanza_t *st, unsigned slot, const char *attr)
{
    xd_jid_t *j = xd_stanza_cache_get(st, slot);
    if (j)
        return j;
    const char *s = xd_el_attr(xd_stanza_root(st), attr);
    if (!s || xd_jid_parse(xd_str_c(s), &j) != 0)
        return NULL; /* absent or not a JID: nothing to keep */
    pthread_once(&st_slots_once, st_slots_init);
    return xd_stanza_cache_put(st, slot, j);
}

const xd_jid_t *
xd_stanza_to(const xd_stanza_t *st)
{
    return st_addr(st, ST_SLOT_TO, "to");
}

const xd_jid_t *
xd_stanza_from(const xd_stanza_t *st)
{
    return st_addr(st, ST_SLOT_FROM, "from");
}

void
xd_stanza_set_from(const xd_stanza_t *st, xd_jid_t *jid)
{
    pthread_once(&st_slots_once, st_slots_init);
    xd_stanza_cache_put(st, ST_SLOT_FROM, xd_jid_ref(jid));
}

void
xd_stanza_set_to(const xd_stanza_t *st, xd_jid_t *jid)
{
    pthread_once(&st_slots_once, st_slots_init);
    xd_stanza_cache_put(st, ST_SLOT_TO, xd_jid_ref(jid));
}

xd_el_t *
xd_stanza_thaw_keep(xd_stanza_t *st, xd_stanza_keep_t *keep)
{
    xd_jid_t *to = xd_stanza_cache_get(st, ST_SLOT_TO), *from = xd_stanza_cache_get(st, ST_SLOT_FROM);
    keep->to = to ? xd_jid_ref(to) : NULL;
    keep->from = from ? xd_jid_ref(from) : NULL;
    return xd_stanza_thaw(st);
}

xd_stanza_t *
xd_stanza_freeze_keep(xd_el_t *el, xd_stanza_keep_t *keep)
{
    xd_stanza_t *st = xd_el_freeze(el);
    /* The values may come from a parse of the caller's own (a session's
     * 'to') rather than from a slot: register the slots all the same. */
    pthread_once(&st_slots_once, st_slots_init);
    if (keep->to)
        xd_stanza_cache_put(st, ST_SLOT_TO, keep->to);
    if (keep->from)
        xd_stanza_cache_put(st, ST_SLOT_FROM, keep->from);
    keep->to = keep->from = NULL;
    return st;
}

/* True when attribute `attr` of el is absent, not a JID (j NULL: the
 * caller refuses those), or already the canonical form j. */
static bool
st_attr_canonical(const xd_el_t *el, const char *attr, const xd_jid_t *j)
{
    const char *s = xd_el_attr(el, attr);
    return !s || !j || xd_str_eq_c(xd_jid_full_str(j), s);
}

xd_stanza_t *
xd_stanza_canonical(xd_stanza_t *st)
{
    const xd_jid_t *to = xd_stanza_to(st), *from = xd_stanza_from(st);
    const xd_el_t *root = xd_stanza_root(st);
    bool to_ok = st_attr_canonical(root, "to", to);
    bool from_ok = st_attr_canonical(root, "from", from);
    if (to_ok && from_ok)
        return st; /* the common case: nothing is copied or serialised again */
    xd_stanza_keep_t keep;
    xd_el_t *el = xd_stanza_thaw_keep(st, &keep);
    if (!to_ok)
        xd_el_set_attr(el, "to", xd_jid_full_str(keep.to).p);
    if (!from_ok)
        xd_el_set_attr(el, "from", xd_jid_full_str(keep.from).p);
    return xd_stanza_freeze_keep(el, &keep);
}

xd_stanza_kind
xd_stanza_kind_of(const xd_el_t *el)
{
    if (xd_el_ns(el) != NULL)
        return XD_STANZA_OTHER;
    const char *n = xd_el_name(el);
    if (!strcmp(n, "message"))
        return XD_STANZA_MESSAGE;
    if (!strcmp(n, "presence"))
        return XD_STANZA_PRESENCE;
    if (!strcmp(n, "iq"))
        return XD_STANZA_IQ;
    return XD_STANZA_OTHER;
}

bool
xd_iq_is_request(const xd_el_t *el)
{
    const char *t = xd_el_attr(el, "type");
    return xd_stanza_kind_of(el) == XD_STANZA_IQ && t &&
           (!strcmp(t, "get") || !strcmp(t, "set"));
}

/* Addresses a reply to st on a builder whose attributes come from st: 'to'
 * is st's 'from'; 'from' is `from` when given, else st's 'to' when that is
 * a JID (in its canonical form).  A 'to' that is not a JID is never echoed
 * (RFC 6120 8.3.3.8: it is what the error is about): the reply then has no
 * 'from' unless the caller names one. */
static void
swap_addresses(xd_el_t *el, const xd_stanza_t *st, const char *from)
{
    const xd_el_t *orig = xd_stanza_root(st);
    xd_el_set_attr(el, "to", xd_el_attr(orig, "from"));
    if (!from && xd_el_attr(orig, "to")) {
        const xd_jid_t *to = xd_stanza_to(st);
        from = to ? xd_jid_full_str(to).p : NULL;
    }
    xd_el_set_attr(el, "from", from);
}

static xd_el_t *
reply_shell(const xd_stanza_t *st, const char *type, const char *from)
{
    const xd_el_t *orig = xd_stanza_root(st);
    xd_el_t *el = xd_el_new(xd_el_name(orig), NULL);
    const char *id = xd_el_attr(orig, "id");
    if (id)
        xd_el_set_attr(el, "id", id);
    swap_addresses(el, st, from);
    xd_el_set_attr(el, "type", type);
    return el;
}

xd_stanza_t *
xd_stanza_error(const xd_stanza_t *st, xd_cond cond, const char *text)
{
    return xd_stanza_error_from(st, cond, text, NULL);
}

xd_stanza_t *
xd_stanza_error_from(const xd_stanza_t *st, xd_cond cond, const char *text, const char *from)
{
    const xd_el_t *orig = xd_stanza_root(st);
    const char *type = xd_el_attr(orig, "type");
    xd_stanza_kind kind = xd_stanza_kind_of(orig);
    if (type && !strcmp(type, "error"))
        return NULL; /* RFC 6120 8.3.1: never answer an error with an error */
    if (kind == XD_STANZA_IQ && type && !strcmp(type, "result"))
        return NULL; /* a result is not answered; an IQ of no known type is (8.3.3.1) */

    xd_el_t *el;
    if (kind == XD_STANZA_IQ || kind == XD_STANZA_OTHER) {
        el = reply_shell(st, "error", from);
    } else {
        el = xd_stanza_edit(st);
        swap_addresses(el, st, from);
        xd_el_set_attr(el, "type", "error");
    }
    xd_el_t *err = xd_el_add_child(el, "error", NULL);
    xd_el_set_attr(err, "type", xd_cond_type(cond));
    xd_el_add_child(err, xd_cond_name(cond), XD_NS_STANZAS);
    if (text && *text) {
        xd_el_t *t = xd_el_add_child(err, "text", XD_NS_STANZAS);
        xd_el_set_attr(t, "xml:lang", "en");
        xd_el_add_text(t, text);
    }
    return xd_el_freeze(el);
}

xd_el_t *
xd_iq_result_builder(const xd_stanza_t *st)
{
    return reply_shell(st, "result", NULL);
}

xd_stanza_t *
xd_iq_result(const xd_stanza_t *st)
{
    return xd_el_freeze(xd_iq_result_builder(st));
}
