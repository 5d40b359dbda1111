/*
 * mod_stun_disco.c — external service discovery (XEP-0215,
 * urn:xmpp:extdisco:2): the STUN and TURN servers a client should use for
 * audio and video calls (XEP-0479, A/V calling), with short-lived TURN
 * credentials.  The name and options follow ejabberd's module of that name.
 *
 * The services are configured (xmppd runs no STUN/TURN server itself; a
 * coturn or eturnal next to it is the usual setup):
 *
 *   modules:
 *     mod_stun_disco:
 *       secret: "the TURN server's static-auth-secret"
 *       services:
 *         - {host: turn.example.org, type: stun}
 *         - {host: turn.example.org, type: turn, transport: udp}
 *         - {host: turn.example.org, type: turns, port: 5349}
 *
 * Requests (IQ get to the served host; INLINE, nothing here blocks):
 *
 *   <services/> [type='turn']   → every service (of that type), restricted
 *                                 ones with their credentials;
 *   <credentials><service host type [port]/></credentials>
 *                               → the matching services with credentials;
 *                                 item-not-found when none matches.
 *
 * Credentials of a restricted service: its own username and password when
 * configured, else the "TURN REST API" scheme TURN servers implement
 * (coturn's use-auth-secret, eturnal's secret): username
 * "EXPIRY:user@host" (EXPIRY in seconds since the epoch, now +
 * credentials_lifetime) and password base64(HMAC-SHA1(secret, username)),
 * with `expires` (XEP-0082, UTC).  A restricted service without either is
 * refused by the configuration check.  Who may ask: the accounts of the
 * served host, or the `access` rule (forbidden otherwise).
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/base64.h"
#include "xmppd/err.h"
#include "xmppd/module.h"
#include "xmppd/opt.h"
#include "xmppd/stanza.h"

#define SD_NS "urn:xmpp:extdisco:2"

enum { SD_STUN, SD_TURN, SD_STUNS, SD_TURNS };
enum { SD_UDP, SD_TCP, SD_TRANSPORT_AUTO };
enum { SD_RESTRICTED_AUTO = -1, SD_OPEN = 0, SD_RESTRICTED = 1 };

static const xd_opt_enum_t sd_types[] = {
    { "stun", SD_STUN }, { "turn", SD_TURN }, { "stuns", SD_STUNS }, { "turns", SD_TURNS },
    { NULL, 0 },
};
static const xd_opt_enum_t sd_transports[] = {
    { "udp", SD_UDP }, { "tcp", SD_TCP }, { "auto", SD_TRANSPORT_AUTO }, { NULL, 0 },
};
static const xd_opt_enum_t sd_restricted[] = {
    { "auto", SD_RESTRICTED_AUTO }, { "true", SD_RESTRICTED }, { "false", SD_OPEN }, { NULL, 0 },
};

/* One configured service; after the check, port, transport and restricted
 * are resolved (no 0 or auto left). */
typedef struct sd_service {
    char *host;
    int port;
    int type;       /* SD_STUN … */
    int transport;  /* SD_UDP, SD_TCP */
    int restricted; /* SD_OPEN, SD_RESTRICTED */
    char *name;
    char *username, *password; /* fixed credentials, or NULL */
    char *secret;              /* this service's shared secret, or NULL: the module's */
} sd_service_t;

typedef struct sd_main {
    char *access;
    char *secret;
    uint64_t lifetime_ms;
    xd_optlist_t services; /* sd_service_t */
} sd_main_t;

typedef struct sd_conf {
    sd_main_t m;
} sd_conf_t;

/* The type's secure variant runs over TLS (TCP); the others over UDP. */
static bool
sd_tls(int type)
{
    return type == SD_STUNS || type == SD_TURNS;
}

static int
sd_service_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf)
{
    sd_service_t *s = conf;
    if (!*s->host) {
        xd_opt_error(ctx, map, "host: must not be empty");
        return -1;
    }
    if (!s->port)
        s->port = sd_tls(s->type) ? 5349 : 3478; /* RFC 8489 / RFC 8656 */
    if (s->transport == SD_TRANSPORT_AUTO)
        s->transport = sd_tls(s->type) ? SD_TCP : SD_UDP;
    if (sd_tls(s->type) && s->transport == SD_UDP) {
        xd_opt_error(ctx, map, "transport: %s runs over TLS, so over tcp, not udp",
                     xd_opt_enum_name(sd_types, s->type));
        return -1;
    }
    if (s->restricted == SD_RESTRICTED_AUTO)
        s->restricted = s->type == SD_TURN || s->type == SD_TURNS ? SD_RESTRICTED : SD_OPEN;
    if (!s->username != !s->password) {
        xd_opt_error(ctx, map, "username and password go together (fixed credentials)");
        return -1;
    }
    return 0;
}

/* A restricted service needs a way to its credentials: its own username
 * and password, its own secret or the module's. */
static int
sd_main_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf)
{
    sd_main_t *m = conf;
    const xd_conf_node_t *list = map ? xd_conf_map_get(map, "services") : NULL;
    const sd_service_t *s = m->services.items;
    int rc = 0;
    for (size_t i = 0; i < m->services.count; i++) {
        if (s[i].restricted != SD_RESTRICTED || s[i].username || s[i].secret || m->secret)
            continue;
        const xd_conf_node_t *at =
            list && list->kind == XD_CONF_SEQ && i < list->count ? list->items[i] : map;
        xd_opt_push_key(ctx, "services");
        xd_opt_push_index(ctx, i);
        xd_opt_error(ctx, at,
                     "%s service %s:%d is restricted but has no credentials: set `secret` "
                     "(the TURN server's shared secret) on the module or the service, or "
                     "`username` and `password`, or `restricted: false`",
                     xd_opt_enum_name(sd_types, s[i].type), s[i].host, s[i].port);
        xd_opt_pop(ctx);
        xd_opt_pop(ctx);
        rc = -1;
    }
    if (m->lifetime_ms < 1000) {
        xd_opt_push_key(ctx, "credentials_lifetime");
        xd_opt_error(ctx, map ? xd_conf_map_get(map, "credentials_lifetime") : NULL,
                     "at least 1s");
        xd_opt_pop(ctx);
        rc = -1;
    }
    return rc;
}

#define S_ sd_service_t
static const xd_opt_t sd_service_opts[] = {
    XD_OPT_FULL("host", XD_OPT_TYPE_STRING, S_, host, NULL, NULL,
                "Host name or IP address of the service, as clients reach it.", XD_OPT_REQUIRED,
                NULL),
    XD_OPT_FULL("type", XD_OPT_TYPE_ENUM, S_, type, NULL, sd_types,
                "`stun`, `turn`, `stuns` or `turns` (the last two over TLS).", XD_OPT_REQUIRED,
                NULL),
    XD_OPT_FULL("port", XD_OPT_TYPE_INT, S_, port, "0", (&(const xd_opt_range_t){ 0, 65535 }),
                "Port; 0: 3478 for stun and turn, 5349 for stuns and turns.", 0, NULL),
    XD_OPT_ENUM("transport", S_, transport, "auto", sd_transports,
                "`udp` or `tcp`; `auto`: udp for stun and turn, tcp for stuns and turns."),
    XD_OPT_ENUM("restricted", S_, restricted, "auto", sd_restricted,
                "Whether the service needs credentials (they are sent with it); `auto`: true "
                "for turn and turns, false for stun and stuns."),
    XD_OPT_STRING("name", S_, name, NULL, "A name for the service shown to users, or none."),
    XD_OPT_STRING("username", S_, username, NULL,
                  "Fixed username for a restricted service (with `password`), instead of "
                  "credentials made from a secret."),
    XD_OPT_FULL("password", XD_OPT_TYPE_STRING, S_, password, NULL, NULL,
                "Fixed password, with `username`.", XD_OPT_SECRET, NULL),
    XD_OPT_FULL("secret", XD_OPT_TYPE_STRING, S_, secret, NULL, NULL,
                "Shared secret of this service's TURN server, if not the module's `secret`.",
                XD_OPT_SECRET, NULL),
    XD_OPT_END,
};
#undef S_

static const xd_opt_sub_t sd_service_sub = { sd_service_opts, sizeof(sd_service_t),
                                             sd_service_check, "mod_stun_disco services" };

#define M_ sd_main_t
static const xd_opt_t sd_main_opts[] = {
    XD_OPT_STRING("access", M_, access, NULL,
                  "Access rule: who may ask for the services (others get forbidden).  Unset: "
                  "the accounts of the served host."),
    XD_OPT_FULL("secret", XD_OPT_TYPE_STRING, M_, secret, NULL, NULL,
                "Shared secret of the TURN server (coturn's `static-auth-secret`, eturnal's "
                "`secret`): restricted services get credentials of the TURN REST API scheme, "
                "username `EXPIRY:user@host`, password base64(HMAC-SHA1(secret, username)).",
                XD_OPT_SECRET, NULL),
    XD_OPT_DURATION("credentials_lifetime", M_, lifetime_ms, "12h",
                    "How long credentials made from a secret are valid."),
    XD_OPT_SUB_LIST("services", M_, services, "[]", &sd_service_sub,
                    "The STUN and TURN services to offer (XEP-0215)."),
    XD_OPT_END,
};
#undef M_

static const xd_opt_sub_t sd_main_sub = { sd_main_opts, sizeof(sd_main_t), sd_main_check,
                                          "mod_stun_disco" };

static const xd_opt_t sd_opts[] = {
    XD_OPT_INLINE(sd_conf_t, m, &sd_main_sub),
    XD_OPT_END,
};

/* ---- requests ---------------------------------------------------------------------------- */

/* Credentials from `secret` for the requester: 0, or -1 (no room). */
static int
sd_rest_credentials(const char *secret, uint64_t lifetime_ms, const xd_jid_t *who,
                    char *user, size_t ucap, char *pass, size_t pcap, char *expires, size_t ecap)
{
    time_t exp = time(NULL) + (time_t)(lifetime_ms / 1000);
    xd_str_t bare = xd_jid_bare_str(who);
    int n = snprintf(user, ucap, "%lld:%.*s", (long long)exp, (int)bare.len, bare.p);
    if (n < 0 || (size_t)n >= ucap)
        return -1;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!HMAC(EVP_sha1(), secret, (int)strlen(secret), (const unsigned char *)user, (size_t)n, mac,
              &maclen))
        return -1;
    if (xd_base64_encoded_len(maclen, 0) + 1 > pcap)
        return -1;
    xd_base64_encode(mac, maclen, pass, 0);
    struct tm tm;
    gmtime_r(&exp, &tm);
    strftime(expires, ecap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return 0;
}

/* s as a <service/> child of parent; with its credentials when restricted. */
static void
sd_service_el(xd_el_t *parent, const sd_service_t *s, const sd_main_t *m, const xd_jid_t *who)
{
    xd_el_t *e = xd_el_add_child(parent, "service", NULL);
    char port[8];
    snprintf(port, sizeof port, "%d", s->port);
    xd_el_set_attr(e, "host", s->host);
    xd_el_set_attr(e, "port", port);
    xd_el_set_attr(e, "transport", s->transport == SD_TCP ? "tcp" : "udp");
    xd_el_set_attr(e, "type", xd_opt_enum_name(sd_types, s->type));
    if (s->name)
        xd_el_set_attr(e, "name", s->name);
    if (s->restricted != SD_RESTRICTED)
        return;
    xd_el_set_attr(e, "restricted", "1");
    if (s->username) {
        xd_el_set_attr(e, "username", s->username);
        xd_el_set_attr(e, "password", s->password);
        return;
    }
    char user[3 * 1024 + 32], pass[64], expires[32];
    const char *secret = s->secret ? s->secret : m->secret;
    if (secret
        && sd_rest_credentials(secret, m->lifetime_ms, who, user, sizeof user, pass, sizeof pass,
                               expires, sizeof expires)
            == 0) {
        xd_el_set_attr(e, "username", user);
        xd_el_set_attr(e, "password", pass);
        xd_el_set_attr(e, "expires", expires);
    }
}

static xd_stanza_t *
sd_services(const xd_iq_req_t *req, const sd_main_t *m)
{
    const char *type = xd_el_attr(req->payload, "type");
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "services", SD_NS);
    if (type)
        xd_el_set_attr(q, "type", type);
    const sd_service_t *s = m->services.items;
    for (size_t i = 0; i < m->services.count; i++)
        if (!type || !strcmp(type, xd_opt_enum_name(sd_types, s[i].type)))
            sd_service_el(q, &s[i], m, req->from);
    return xd_el_freeze(r);
}

static xd_stanza_t *
sd_credentials(const xd_iq_req_t *req, const sd_main_t *m)
{
    const xd_el_t *want = xd_el_child(req->payload, "service", SD_NS);
    const char *host = want ? xd_el_attr(want, "host") : NULL;
    const char *type = want ? xd_el_attr(want, "type") : NULL;
    const char *port = want ? xd_el_attr(want, "port") : NULL;
    if (!host || !type)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                               "<credentials/> names a <service/> with host and type");
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "credentials", SD_NS);
    const sd_service_t *s = m->services.items;
    size_t found = 0;
    for (size_t i = 0; i < m->services.count; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", s[i].port);
        if (strcmp(host, s[i].host) || strcmp(type, xd_opt_enum_name(sd_types, s[i].type))
            || (port && strcmp(port, p)))
            continue;
        sd_service_el(q, &s[i], m, req->from);
        found++;
    }
    if (!found) {
        xd_el_free(r);
        return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, "no such service here");
    }
    return xd_el_freeze(r);
}

static xd_stanza_t *
sd_iq(const xd_iq_req_t *req)
{
    const sd_conf_t *c = xd_module_opts(req->ctx);
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    if (strcmp(type, "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    if (!xd_access_allowed(req->host, c->m.access, req->from))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "you may not use these services");
    if (xd_el_is(req->payload, "services", SD_NS))
        return sd_services(req, &c->m);
    if (xd_el_is(req->payload, "credentials", SD_NS))
        return sd_credentials(req, &c->m);
    return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <services/> or <credentials/>");
}

static int
sd_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_iq(ctx, XD_IQ_HOST, SD_NS, XD_IQ_INLINE, sd_iq, NULL);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

const xd_module_t xd_mod_stun_disco = {
    .abi = XD_MODULE_ABI,
    .name = "mod_stun_disco",
    .doc = "External service discovery (XEP-0215): STUN and TURN servers for calls, with "
           "short-lived TURN credentials",
    .opts = sd_opts,
    .opts_size = sizeof(sd_conf_t),
    .start = sd_start,
};
