/*
 * mod_version.c — software version (XEP-0092) and entity time (XEP-0202)
 * of the server: mod_version and mod_time, on every host
 * (XD_MODULE_ALWAYS).  Both INLINE: nothing here blocks.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "xmppd/err.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

static xd_stanza_t *
version_iq(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_VERSION);
    xd_el_add_text(xd_el_add_child(q, "name", NULL), "xmppd");
    xd_el_add_text(xd_el_add_child(q, "version", NULL), xd_server_version());
    return xd_el_freeze(r);
}

static xd_stanza_t *
time_iq(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char utc[96];
    snprintf(utc, sizeof utc, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *t = xd_el_add_child(r, "time", XD_NS_TIME);
    xd_el_add_text(xd_el_add_child(t, "tzo", NULL), "+00:00"); /* the server keeps UTC */
    xd_el_add_text(xd_el_add_child(t, "utc", NULL), utc);
    return xd_el_freeze(r);
}

static int
version_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_VERSION, XD_IQ_INLINE, version_iq, NULL);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

static int
time_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_TIME, XD_IQ_INLINE, time_iq, NULL);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

const xd_module_t xd_mod_version = {
    .abi = XD_MODULE_ABI,
    .name = "mod_version",
    .doc = "Software version (XEP-0092)",
    .flags = XD_MODULE_ALWAYS,
    .start = version_start,
};

const xd_module_t xd_mod_time = {
    .abi = XD_MODULE_ABI,
    .name = "mod_time",
    .doc = "Entity time (XEP-0202)",
    .flags = XD_MODULE_ALWAYS,
    .start = time_start,
};
