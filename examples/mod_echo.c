/*
 * mod_echo.c — the echo service of the ejabberd Developers Guide, written
 * for the xmppd module API (docs/modules.md walks through it).
 *
 * Every stanza sent to the echo domain (option `host`, default
 * "echo.<served host>") comes back to its sender, from the echo domain.
 * Errors and IQ results are not echoed (RFC 6120 8.3.1: never answer an
 * error with an error; echoing them could ping-pong forever).
 *
 * Built as a loadable .so (examples/meson.build); enable with
 *   module_dir: /path/to/build/examples
 *   modules: { mod_echo: { host: "echo.example.org" } }
 */
#include <stddef.h>
#include <string.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/module.h"
#include "xmppd/route.h"

struct echo_conf {
    char *host; /* the echo domain; NULL = "echo.<host>" */
};

static const xd_opt_t echo_opts[] = {
    XD_OPT_STRING("host", struct echo_conf, host, NULL,
                  "Domain of the echo service; `@HOST@` is replaced by the served host. "
                  "Default: `echo.` followed by the served host."),
    XD_OPT_END,
};

/* Runs on the routing worker; owns st. */
static void
echo_route(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)ctx;
    (void)arg;
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    const char *from = xd_el_attr(root, "from");
    const char *to = xd_el_attr(root, "to");
    bool is_iq = strcmp(xd_el_name(root), "iq") == 0;
    if (!from || !to || (type && strcmp(type, "error") == 0) ||
        (is_iq && type && strcmp(type, "result") == 0)) {
        xd_stanza_unref(st);
        return;
    }
    xd_el_t *b = xd_stanza_edit(st);
    char *sender = xd_strdup(from), *service = xd_strdup(to);
    xd_stanza_unref(st);
    xd_el_set_attr(b, "from", service);
    xd_el_set_attr(b, "to", sender);
    xd_free(sender);
    xd_free(service);
    xd_route_take(xd_el_freeze(b));
}

/* "@HOST@" in pattern replaced by host (a new string). */
static char *
echo_domain(const char *pattern, const char *host)
{
    if (!pattern)
        return xd_asprintf("echo.%s", host);
    const char *at = strstr(pattern, "@HOST@");
    if (!at)
        return xd_strdup(pattern);
    return xd_asprintf("%.*s%s%s", (int)(at - pattern), pattern, host, at + 6);
}

static int
echo_start(xd_module_ctx_t *ctx)
{
    const struct echo_conf *c = xd_module_opts(ctx);
    char *domain = echo_domain(c->host, xd_module_host(ctx));
    int rc = xd_module_service(ctx, domain, echo_route, NULL);
    if (rc != 0)
        rc = xd_module_fail(ctx, rc, "cannot serve %s: %s", domain, xd_strerror(rc));
    xd_free(domain);
    return rc; /* the service route is removed automatically at stop */
}

XD_MODULE_EXPORT = {
    .abi = XD_MODULE_ABI,
    .name = "mod_echo",
    .doc = "Echo service: returns every stanza to its sender (ejabberd guide example)",
    .opts = echo_opts,
    .opts_size = sizeof(struct echo_conf),
    .start = echo_start,
};
