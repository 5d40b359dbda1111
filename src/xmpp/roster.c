/*
 * roster.c — names of the subscription states of RFC 6121 2.1.2.5
 * (include/xmppd/roster.h), shared by the roster and whoever reads it.
 */
#include <string.h>

#include "xmppd/roster.h"

const char *
xd_roster_sub_name(xd_roster_sub s)
{
    static const char *const names[] = { "none", "to", "from", "both" };
    return (unsigned)s < 4 ? names[s] : NULL;
}

int
xd_roster_sub_parse(const char *s)
{
    for (int i = 0; s && i < 4; i++)
        if (strcmp(s, xd_roster_sub_name((xd_roster_sub)i)) == 0)
            return i;
    return -1;
}
