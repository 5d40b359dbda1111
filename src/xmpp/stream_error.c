/*
 * stream_error.c — names of stream and stanza conditions and the wire form
 * of a stream error (RFC 6120 4.9 and 8.3).  Everything here is generated
 * from include/xmppd/conds.def.
 */
#include <stdio.h>
#include <string.h>

#include "xmppd/conds.h"

static const char *const stream_names[] = {
#define XD_STREAM_COND(name, el) el,
#include "xmppd/conds.def"
#undef XD_STREAM_COND
};

static const char *const stanza_names[] = {
#define XD_STANZA_COND(name, el, type) el,
#include "xmppd/conds.def"
#undef XD_STANZA_COND
};

static const char *const stanza_types[] = {
#define XD_STANZA_COND(name, el, type) type,
#include "xmppd/conds.def"
#undef XD_STANZA_COND
};

const char *
xd_stream_cond_name(xd_stream_cond cond)
{
    return (unsigned)cond < XD_STREAM_COND_COUNT ? stream_names[cond] : NULL;
}

const char *
xd_cond_name(xd_cond cond)
{
    return (unsigned)cond < XD_COND_COUNT ? stanza_names[cond] : NULL;
}

const char *
xd_cond_type(xd_cond cond)
{
    return (unsigned)cond < XD_COND_COUNT ? stanza_types[cond] : NULL;
}

int
xd_stream_cond_parse(const char *name)
{
    for (int i = 0; i < XD_STREAM_COND_COUNT; i++)
        if (strcmp(stream_names[i], name) == 0)
            return i;
    return -1;
}

int
xd_cond_parse(const char *name)
{
    for (int i = 0; i < XD_COND_COUNT; i++)
        if (strcmp(stanza_names[i], name) == 0)
            return i;
    return -1;
}

/* Escapes the five XML specials of a short, server-chosen text. */
static int
se_escape(char *out, unsigned size, const char *s)
{
    unsigned n = 0;
    for (; *s; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        }
        size_t len = rep ? strlen(rep) : 1;
        if (n + len + 1 > size)
            break;
        if (rep)
            memcpy(out + n, rep, len);
        else
            out[n] = *s;
        n += (unsigned)len;
    }
    if (size)
        out[n < size ? n : size - 1] = '\0';
    return (int)n;
}

int
xd_stream_error_format(char *buf, unsigned size, xd_stream_cond cond, const char *text)
{
    const char *name = xd_stream_cond_name(cond);
    if (!name)
        name = "undefined-condition";
    if (text && *text) {
        char esc[512];
        se_escape(esc, sizeof esc, text);
        /* RFC6120 4.9.2: the condition, then an optional <text/>. */
        return snprintf(buf, size,
                        "<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                        "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>%s</text>"
                        "</stream:error></stream:stream>",
                        name, esc);
    }
    return snprintf(buf, size,
                    "<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                    "</stream:error></stream:stream>",
                    name);
}
