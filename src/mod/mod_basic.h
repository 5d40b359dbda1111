/*
 * mod_basic.h — ping, version, time and disco handlers (see mod_basic.c).
 */
#ifndef XMPPD_MOD_MOD_BASIC_H
#define XMPPD_MOD_MOD_BASIC_H

/* Registers the handlers for every host.  0 or an error (already started). */
int xd_mod_basic_start(void);

#endif
