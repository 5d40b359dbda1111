/*
 * mod_stanza_id.h — mod_stanza_id (XEP-0359, mod_stanza_id.c): a built-in
 * module enabled per host by listing it under `modules:`.
 */
#ifndef XMPPD_MOD_MOD_STANZA_ID_H
#define XMPPD_MOD_MOD_STANZA_ID_H

/* Makes "mod_stanza_id" known to the module manager (call before the
 * configuration is checked).  0, or XD_EEXIST when already registered. */
int xd_stanza_id_register_builtin(void);

#endif
