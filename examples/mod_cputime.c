/*
 * mod_cputime.c — the CPU time IQ of the ejabberd Developers Guide, written
 * for the xmppd module API (docs/modules.md walks through it).
 *
 *   C: <iq type='get' to='example.org' id='1'><query xmlns='ejabberd:cputime'/></iq>
 *   S: <iq type='result' from='example.org' id='1'>
 *        <query xmlns='ejabberd:cputime'><cputime unit='ms'>1234</cputime></query></iq>
 *
 * The value is the CPU time of the whole server process (user + system),
 * in milliseconds.  It also adds the xmppctl command `cputime`.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime, CLOCK_PROCESS_CPUTIME_ID under -std=c17 */
#endif
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "xmppd/err.h"
#include "xmppd/module.h"
#include "xmppd/stanza.h"

#define NS_CPUTIME "ejabberd:cputime"

static uint64_t
cputime_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* INLINE: one system call, never blocks. */
static xd_stanza_t *
cputime_iq(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)cputime_ms());
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", NS_CPUTIME);
    xd_el_t *t = xd_el_add_child(q, "cputime", NULL);
    xd_el_set_attr(t, "unit", "ms");
    xd_el_add_text(t, buf);
    return xd_el_freeze(r);
}

static int
cputime_cmd(xd_cmd_call_t *call)
{
    xd_cmd_printf(call, "%llu\n", (unsigned long long)cputime_ms());
    return 0;
}

static const xd_cmd_t cputime_command = {
    .name = "cputime",
    .doc = "CPU time used by the server process, in milliseconds",
    .result = XD_CMD_RES_STRING,
    .fn = cputime_cmd,
};

static int
cputime_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_iq(ctx, XD_IQ_HOST, NS_CPUTIME, XD_IQ_INLINE, cputime_iq, NULL);
    if (rc == 0)
        rc = xd_module_command(ctx, &cputime_command);
    return rc; /* on failure, what was registered is undone */
}

XD_MODULE_EXPORT = {
    .abi = XD_MODULE_ABI,
    .name = "mod_cputime",
    .doc = "Answers ejabberd:cputime IQs with the server's CPU time (ejabberd guide example)",
    .start = cputime_start,
};
