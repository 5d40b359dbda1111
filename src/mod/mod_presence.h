/*
 * mod_presence.h — presence subscriptions, broadcast and probes on the
 * roster (see mod_presence.c).  Active where mod_roster runs.
 */
#ifndef XMPPD_MOD_MOD_PRESENCE_H
#define XMPPD_MOD_MOD_PRESENCE_H

/* Hooks the presence handling in (start-up) / out (shutdown). */
void xd_presence_start(void);
void xd_presence_stop(void);

#endif
