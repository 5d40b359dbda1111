/*
 * muc_log.h — what mod_muc_log tells mod_muc: who may switch a room's
 * logging (ejabberd's access_log).
 */
#ifndef XMPPD_MOD_MUC_LOG_H
#define XMPPD_MOD_MUC_LOG_H

#include <stdbool.h>

#include "xmppd/jid.h"

/* Whether `who` may turn logging (muc#roomconfig_enablelogging) on or off
 * in the rooms of served host `host`: mod_muc_log's access_log rule there
 * allows them.  True where mod_muc_log does not run (the switch then logs
 * nothing).  Any thread. */
bool muc_log_may_switch(const char *host, const xd_jid_t *who);

#endif
