/*
 * s2s.c — the s2s manager: routes to remote domains, policy, the registry
 * of authenticated streams and its commands (see s2s.h).
 *
 * Routes live in one table under one mutex, keyed "local remote":
 *
 *   CONNECTING  the owner worker resolves, connects and authenticates
 *               (s2s_out.c); stanzas wait in the route's queue, bounded by
 *               s2s_queue_max stanzas and S2S_QUEUE_BYTES (beyond:
 *               resource-constraint)
 *   UP          stanzas are posted to the connection's worker
 *               (c2s_deliver), which writes them in order
 *
 * A route disappears when its attempt fails or its stream ends; the queue
 * then bounces with the reason.  Dialback verifications that incoming
 * streams ask for travel on the same outgoing route (XEP-0220 2.1.3: the
 * receiving server dials back to the authoritative server).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/secret.h"
#include "router/router.h"
#include "s2s/resolve.h"
#include "s2s/s2s_int.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/service.h"
#include "xmppd/stanza.h"

/* ---- settings ------------------------------------------------------------------------------ */

static pthread_mutex_t s2s_conf_lock = PTHREAD_MUTEX_INITIALIZER;
static s2s_conf_t s2s_cur = {
    .require_encryption = true,
    .dialback = true,
    .connect_timeout_ms = 20000,
    .timeout_ms = 600000,
    .queue_max = 1000,
    .multiplex = true,
};

void
s2s_conf(s2s_conf_t *out)
{
    pthread_mutex_lock(&s2s_conf_lock);
    *out = s2s_cur;
    pthread_mutex_unlock(&s2s_conf_lock);
}

void
xd_s2s_configure(const xd_config_t *cfg)
{
    pthread_mutex_lock(&s2s_conf_lock);
    s2s_cur.require_encryption = cfg->s2s_require_encryption;
    s2s_cur.verify_certificates = cfg->s2s_verify_certificates;
    s2s_cur.dialback = cfg->s2s_dialback;
    s2s_cur.connect_timeout_ms = cfg->s2s_connect_timeout_ms;
    s2s_cur.timeout_ms = cfg->s2s_timeout_ms;
    s2s_cur.queue_max = (unsigned)cfg->s2s_queue_max;
    s2s_cur.multiplex = cfg->s2s_multiplex;
    static bool applied;
    bool first = !applied;
    applied = true;
    pthread_mutex_unlock(&s2s_conf_lock);
    if (first) {
        /* The outgoing streams' "listener" is read by the workers without a
         * lock: set before they start; a reload does not change it. */
        xd_listener_t *l = s2s_out_listener();
        l->handshake_timeout_ms = cfg->s2s_connect_timeout_ms;
        l->idle_timeout_ms = cfg->s2s_timeout_ms;
        l->max_connections = (unsigned)cfg->s2s_max_streams;
    }
}

int
xd_s2s_check_config(const xd_config_t *cfg, char **err)
{
    const xd_conf_node_t *h = cfg->s2s_hosts;
    if (!h || xd_conf_is_null(h))
        return 0;
    if (h->kind != XD_CONF_MAP) {
        if (asprintf(err, "%s:%u:%u: s2s_hosts: expected a mapping {domain: \"host:port\"}",
                     h->file, h->line, h->col) < 0)
            *err = NULL;
        return XD_ECONF_TYPE;
    }
    for (size_t i = 0; i < h->count; i++) {
        const xd_conf_node_t *v = h->items[i];
        char *dom = NULL;
        bool ok = xd_jid_prep_domain(xd_str_c(h->keys[i]->value), &dom) == 0 &&
                  v->kind == XD_CONF_SCALAR && xd_resolve_static_check(v->value) == 0;
        xd_free(dom);
        if (!ok) {
            if (asprintf(err, "%s:%u:%u: s2s_hosts.%s: expected \"ip\", \"ip:port\", "
                              "\"[v6]:port\" or \"host:port\" for a domain",
                         v->file, v->line, v->col, h->keys[i]->value) < 0)
                *err = NULL;
            return XD_ECONF_TYPE;
        }
    }
    return 0;
}

bool
s2s_allowed(const char *remote)
{
    xd_config_t *cfg = xd_config_get();
    if (!cfg)
        return false;
    xd_jid_t *j = NULL;
    bool ok = xd_jid_parse(xd_str_c(remote), &j) == 0 &&
              xd_access_match(cfg, NULL, cfg->s2s_access ? cfg->s2s_access : "all", j, NULL) ==
                  XD_ACCESS_ALLOW;
    if (j)
        xd_jid_unref(j);
    xd_config_unref(cfg);
    return ok;
}

bool
s2s_is_local(const char *domain)
{
    xd_config_t *cfg = xd_config_get();
    bool served = cfg && xd_config_is_host(cfg, domain);
    if (cfg)
        xd_config_unref(cfg);
    return served || xd_service_exists(domain);
}

/* This node's dialback key into k; the XEP-0185 secret. */
static xd_str_t
s2s_db_secret(unsigned char k[XD_NODE_KEY_LEN])
{
    xd_node_key(XD_NODE_KEY_DIALBACK, k);
    return (xd_str_t){ (const char *)k, XD_NODE_KEY_LEN };
}

int
s2s_key(const char *receiving, const char *originating, const char *id,
        char out[XD_DIALBACK_KEY_LEN + 1])
{
    unsigned char k[XD_NODE_KEY_LEN];
    int rc = xd_dialback_key(s2s_db_secret(k), xd_str_c(receiving), xd_str_c(originating),
                             xd_str_c(id), out);
    OPENSSL_cleanse(k, sizeof k);
    return rc;
}

bool
s2s_key_ok(const char *receiving, const char *originating, const char *id, xd_str_t key)
{
    unsigned char k[XD_NODE_KEY_LEN];
    bool ok = xd_dialback_key_check(s2s_db_secret(k), xd_str_c(receiving),
                                    xd_str_c(originating), xd_str_c(id), key);
    OPENSSL_cleanse(k, sizeof k);
    return ok;
}

void
s2s_send_el(xd_conn_t *c, xd_el_t *el)
{
    xd_stanza_t *st = xd_el_freeze(el);
    c2s_send_stanza(c, st);
    xd_stanza_unref(st);
}

/* ---- routes -------------------------------------------------------------------------------- */

/* Bytes of stanzas one route holds while its stream is set up: well below
 * the outgoing stream's write queue bound (4 MiB, s2s_out.c), which they
 * all enter at once when it is up. */
#define S2S_QUEUE_BYTES ((size_t)1 << 20)

enum { ROUTE_CONNECTING, ROUTE_UP };

typedef struct s2s_route {
    char *local, *remote;   /* the pair (owned) */
    int state;              /* ROUTE_* */
    unsigned worker;        /* owner of the attempt and the stream */
    uint64_t conn_id;       /* the outgoing connection, 0 before it exists */
    xd_stanza_t **q;        /* stanzas waiting (CONNECTING) */
    size_t nq, qcap;
    size_t qbytes;          /* their serialized bytes (S2S_QUEUE_BYTES at most) */
    s2s_verify_t *verifies; /* verifications to send on the stream */
    bool mux;               /* UP: other local domains may join its stream */
    bool muxed;             /* rides on another route's stream (conn_id is that one's) */
} s2s_route_t;

static pthread_mutex_t s2s_lock = PTHREAD_MUTEX_INITIALIZER;
static xd_map_t s2s_routes = XD_MAP_INIT;

static void
route_key(char *buf, size_t cap, const char *local, const char *remote)
{
    snprintf(buf, cap, "%s %s", local, remote);
}

static void
route_free(s2s_route_t *r)
{
    for (size_t i = 0; i < r->nq; i++)
        xd_stanza_unref(r->q[i]);
    xd_free(r->q);
    for (s2s_verify_t *v = r->verifies, *n; v; v = n) {
        n = v->next;
        xd_free(v);
    }
    xd_free(r->local);
    xd_free(r->remote);
    xd_free(r);
}

/* Message to the owner worker: start the attempt. */
typedef struct {
    char local[S2S_DOMAIN_MAX], remote[S2S_DOMAIN_MAX];
} route_start_msg_t;

static void
route_start_cb(xd_worker_t *w, void *arg)
{
    route_start_msg_t *m = arg;
    s2s_out_begin(w, m->local, m->remote);
    xd_free(m);
}

typedef struct {
    uint64_t conn_id;
} route_kick_msg_t;

static void
route_kick_cb(xd_worker_t *w, void *arg)
{
    route_kick_msg_t *m = arg;
    s2s_out_kick(w, m->conn_id);
    xd_free(m);
}

typedef struct {
    uint64_t conn_id;
    char local[S2S_DOMAIN_MAX], remote[S2S_DOMAIN_MAX];
} route_mux_msg_t;

static void
route_mux_cb(xd_worker_t *w, void *arg)
{
    route_mux_msg_t *m = arg;
    s2s_out_mux(w, m->conn_id, m->local, m->remote);
    xd_free(m);
}

typedef struct {
    const char *remote;      /* looked for */
    const s2s_route_t *host; /* found: an UP route to remote open for more domains */
} mux_find_t;

static int
mux_find(void *arg, const char *key, void *val)
{
    (void)key;
    mux_find_t *f = arg;
    const s2s_route_t *r = val;
    if (r->state == ROUTE_UP && r->mux && !r->muxed && !strcmp(r->remote, f->remote)) {
        f->host = r;
        return 1;
    }
    return 0;
}

/* A new route joining an established stream to the same remote server
 * (multiplexing); lock held.  NULL when there is none to join. */
static s2s_route_t *
route_new_mux(const char *key, const char *local, const char *remote)
{
    s2s_conf_t conf;
    s2s_conf(&conf);
    if (!conf.multiplex)
        return NULL;
    mux_find_t f = { .remote = remote };
    xd_map_foreach(&s2s_routes, mux_find, &f);
    if (!f.host)
        return NULL;
    route_mux_msg_t *m = xd_new(route_mux_msg_t);
    m->conn_id = f.host->conn_id;
    snprintf(m->local, sizeof m->local, "%s", local);
    snprintf(m->remote, sizeof m->remote, "%s", remote);
    xd_worker_t *w = xd_worker_get(f.host->worker);
    if (!w || xd_worker_post(w, route_mux_cb, m) != 0) {
        xd_free(m);
        return NULL;
    }
    s2s_route_t *r = xd_new(s2s_route_t);
    r->local = xd_strdup(local);
    r->remote = xd_strdup(remote);
    r->state = ROUTE_CONNECTING;
    r->worker = f.host->worker;
    r->conn_id = f.host->conn_id;
    r->muxed = true;
    xd_map_put(&s2s_routes, xd_str_c(key), r);
    return r;
}

/* A new route, CONNECTING on a worker; lock held.  NULL when no worker
 * takes it (stopping). */
static s2s_route_t *
route_new(const char *key, const char *local, const char *remote)
{
    s2s_route_t *mux = route_new_mux(key, local, remote);
    if (mux)
        return mux;
    unsigned nw = xd_workers_count();
    xd_worker_t *self = xd_worker_self();
    unsigned wi = self ? xd_worker_index(self)
                       : (unsigned)(xd_map_hash(xd_str_c(remote)) % (nw ? nw : 1));
    xd_worker_t *w = xd_worker_get(wi);
    route_start_msg_t *m = xd_new(route_start_msg_t);
    snprintf(m->local, sizeof m->local, "%s", local);
    snprintf(m->remote, sizeof m->remote, "%s", remote);
    if (!w || xd_worker_post(w, route_start_cb, m) != 0) {
        xd_free(m);
        return NULL;
    }
    s2s_route_t *r = xd_new(s2s_route_t);
    r->local = xd_strdup(local);
    r->remote = xd_strdup(remote);
    r->state = ROUTE_CONNECTING;
    r->worker = wi;
    xd_map_put(&s2s_routes, xd_str_c(key), r);
    return r;
}

static void
bounce(xd_stanza_t *st, xd_cond cond, const char *text)
{
    xd_stanza_t *err = xd_stanza_error(st, cond, text);
    xd_stanza_unref(st);
    if (err)
        xd_route_take(err);
}

void
xd_s2s_route(xd_stanza_t *st, const char *remote)
{
    const xd_jid_t *fj = xd_stanza_from(st); /* parsed once, by whoever asked first */
    char local[S2S_DOMAIN_MAX];
    if (!fj) {
        xd_stanza_unref(st); /* nobody to tell */
        return;
    }
    xd_str_t d = xd_jid_domain(fj);
    snprintf(local, sizeof local, "%.*s", (int)d.len, d.p);
    if (!s2s_is_local(local)) {
        /* Not ours to federate for (a remote stanza routed on). */
        bounce(st, XD_COND_REMOTE_SERVER_NOT_FOUND, NULL);
        return;
    }
    if (!s2s_allowed(remote)) {
        bounce(st, XD_COND_REMOTE_SERVER_NOT_FOUND, "federation with that domain is not allowed");
        return;
    }
    s2s_conf_t conf;
    s2s_conf(&conf);
    char key[2 * S2S_DOMAIN_MAX];
    route_key(key, sizeof key, local, remote);
    pthread_mutex_lock(&s2s_lock);
    s2s_route_t *r = xd_map_get(&s2s_routes, xd_str_c(key));
    if (r && r->state == ROUTE_UP) {
        unsigned w = r->worker;
        uint64_t id = r->conn_id;
        pthread_mutex_unlock(&s2s_lock);
        c2s_deliver(w, id, st);
        return;
    }
    if (!r)
        r = route_new(key, local, remote);
    if (!r) {
        pthread_mutex_unlock(&s2s_lock);
        bounce(st, XD_COND_REMOTE_SERVER_NOT_FOUND, "the server is stopping");
        return;
    }
    size_t len = 0;
    xd_stanza_bytes(st, &len);
    if (r->nq >= conf.queue_max || r->qbytes + len > S2S_QUEUE_BYTES) {
        pthread_mutex_unlock(&s2s_lock);
        bounce(st, XD_COND_RESOURCE_CONSTRAINT, "too many stanzas wait for that server");
        return;
    }
    r->qbytes += len;
    if (r->nq == r->qcap) {
        r->qcap = r->qcap ? r->qcap * 2 : 8;
        r->q = xd_realloc(r->q, r->qcap * sizeof *r->q);
    }
    r->q[r->nq++] = st;
    pthread_mutex_unlock(&s2s_lock);
}

void
s2s_route_attach(const char *local, const char *remote, uint64_t conn_id)
{
    char key[2 * S2S_DOMAIN_MAX];
    route_key(key, sizeof key, local, remote);
    pthread_mutex_lock(&s2s_lock);
    s2s_route_t *r = xd_map_get(&s2s_routes, xd_str_c(key));
    if (r)
        r->conn_id = conn_id;
    pthread_mutex_unlock(&s2s_lock);
}

void
s2s_route_up(const char *local, const char *remote, xd_conn_t *c, const char *auth, bool mux)
{
    char key[2 * S2S_DOMAIN_MAX];
    route_key(key, sizeof key, local, remote);
    xd_stanza_t **q = NULL;
    size_t nq = 0;
    pthread_mutex_lock(&s2s_lock);
    s2s_route_t *r = xd_map_get(&s2s_routes, xd_str_c(key));
    if (r) {
        r->state = ROUTE_UP;
        r->mux = mux;
        r->conn_id = c->id;
        r->worker = xd_worker_index(c->ws->worker);
        q = r->q;
        nq = r->nq;
        r->q = NULL;
        r->nq = r->qcap = r->qbytes = 0;
    }
    pthread_mutex_unlock(&s2s_lock);
    /* On the owner worker: written before anything posted after the unlock. */
    for (size_t i = 0; i < nq; i++) {
        c2s_send_stanza(c, q[i]);
        xd_stanza_unref(q[i]);
    }
    xd_free(q);
    s2s_registry_add(true, local, remote, auth, xd_worker_index(c->ws->worker), c->id);
}

void
s2s_route_down(const char *local, const char *remote, uint64_t conn_id, xd_cond cond)
{
    char key[2 * S2S_DOMAIN_MAX];
    route_key(key, sizeof key, local, remote);
    pthread_mutex_lock(&s2s_lock);
    s2s_route_t *r = xd_map_get(&s2s_routes, xd_str_c(key));
    if (r && (conn_id == 0 || r->conn_id == conn_id || r->conn_id == 0))
        xd_map_del(&s2s_routes, xd_str_c(key));
    else
        r = NULL;
    pthread_mutex_unlock(&s2s_lock);
    if (conn_id)
        s2s_registry_drop(conn_id);
    if (!r)
        return;
    for (size_t i = 0; i < r->nq; i++) {
        bounce(r->q[i], cond, NULL);
        r->q[i] = NULL;
    }
    r->nq = r->qbytes = 0;
    for (s2s_verify_t *v = r->verifies; v; v = v->next)
        s2s_verify_answer(v, local, remote, XD_DIALBACK_ERROR);
    route_free(r);
}

void
s2s_route_unmux(xd_worker_t *w, const char *local, const char *remote)
{
    char key[2 * S2S_DOMAIN_MAX];
    route_key(key, sizeof key, local, remote);
    pthread_mutex_lock(&s2s_lock);
    s2s_route_t *r = xd_map_get(&s2s_routes, xd_str_c(key));
    bool start = r && r->muxed && r->state == ROUTE_CONNECTING;
    if (start) {
        r->muxed = false;
        r->conn_id = 0;
        r->worker = xd_worker_index(w);
    }
    pthread_mutex_unlock(&s2s_lock);
    if (start)
        s2s_out_begin(w, local, remote); /* a stream of its own */
}

s2s_verify_t *
s2s_route_take_verifies(const char *local, const char *remote)
{
    char key[2 * S2S_DOMAIN_MAX];
    route_key(key, sizeof key, local, remote);
    pthread_mutex_lock(&s2s_lock);
    s2s_route_t *r = xd_map_get(&s2s_routes, xd_str_c(key));
    s2s_verify_t *v = r ? r->verifies : NULL;
    if (r)
        r->verifies = NULL;
    pthread_mutex_unlock(&s2s_lock);
    return v;
}

void
s2s_verify_request(const char *local, const char *remote, const char *id, const char *key,
                   unsigned worker, uint64_t conn_id)
{
    s2s_verify_t *v = xd_new(s2s_verify_t);
    snprintf(v->id, sizeof v->id, "%s", id);
    snprintf(v->key, sizeof v->key, "%s", key);
    snprintf(v->local, sizeof v->local, "%.255s", local);
    v->worker = worker;
    v->conn_id = conn_id;
    char rkey[2 * S2S_DOMAIN_MAX];
    route_key(rkey, sizeof rkey, local, remote);
    pthread_mutex_lock(&s2s_lock);
    s2s_route_t *r = xd_map_get(&s2s_routes, xd_str_c(rkey));
    if (!r)
        r = route_new(rkey, local, remote);
    if (!r) {
        pthread_mutex_unlock(&s2s_lock);
        s2s_verify_answer(v, local, remote, XD_DIALBACK_ERROR);
        xd_free(v);
        return;
    }
    /* Kept in arrival order. */
    s2s_verify_t **pp = &r->verifies;
    while (*pp)
        pp = &(*pp)->next;
    *pp = v;
    unsigned w = r->worker;
    uint64_t cid = r->conn_id;
    pthread_mutex_unlock(&s2s_lock);
    if (cid) {
        route_kick_msg_t *m = xd_new(route_kick_msg_t);
        m->conn_id = cid;
        xd_worker_t *wk = xd_worker_get(w);
        if (!wk || xd_worker_post(wk, route_kick_cb, m) != 0)
            xd_free(m);
    }
}

/* The answer travels to the incoming stream's worker. */
typedef struct {
    uint64_t conn_id;
    char local[S2S_DOMAIN_MAX], remote[S2S_DOMAIN_MAX];
    xd_dialback_type type;
} verify_answer_msg_t;

static void
verify_answer_cb(xd_worker_t *w, void *arg)
{
    verify_answer_msg_t *m = arg;
    xd_conn_t *c = c2s_conn_find(w, m->conn_id);
    if (c && c->role == &xd_s2s_in_role && c->state == C2S_OPEN)
        s2s_in_verified(c, m->local, m->remote, m->type);
    xd_free(m);
}

void
s2s_verify_answer(const s2s_verify_t *v, const char *local, const char *remote,
                  xd_dialback_type type)
{
    verify_answer_msg_t *m = xd_new(verify_answer_msg_t);
    m->conn_id = v->conn_id;
    snprintf(m->local, sizeof m->local, "%s", v->local[0] ? v->local : local);
    snprintf(m->remote, sizeof m->remote, "%s", remote);
    m->type = type;
    xd_worker_t *w = xd_worker_get(v->worker);
    if (!w || xd_worker_post(w, verify_answer_cb, m) != 0)
        xd_free(m);
}

static void
route_drop(void *val)
{
    route_free(val);
}

void
xd_s2s_shutdown(void)
{
    pthread_mutex_lock(&s2s_lock);
    xd_map_free(&s2s_routes, route_drop);
    pthread_mutex_unlock(&s2s_lock);
}

/* ---- workers ------------------------------------------------------------------------------- */

void
xd_s2s_start_worker(xd_worker_t *w)
{
    s2s_out_worker_start(w);
}

void
xd_s2s_stop_worker(xd_worker_t *w)
{
    s2s_out_worker_stop(w);
}

/* ---- registry and commands ----------------------------------------------------------------- */

typedef struct s2s_reg {
    struct s2s_reg *next;
    bool out;
    char local[S2S_DOMAIN_MAX / 4], remote[S2S_DOMAIN_MAX / 4];
    char auth[16];
    unsigned worker;
    uint64_t conn_id;
} s2s_reg_t;

static pthread_mutex_t s2s_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static s2s_reg_t *s2s_reg;

void
s2s_registry_add(bool out, const char *local, const char *remote, const char *auth,
                 unsigned worker, uint64_t conn_id)
{
    s2s_reg_t *e = xd_new(s2s_reg_t);
    e->out = out;
    snprintf(e->local, sizeof e->local, "%s", local);
    snprintf(e->remote, sizeof e->remote, "%s", remote);
    snprintf(e->auth, sizeof e->auth, "%s", auth);
    e->worker = worker;
    e->conn_id = conn_id;
    pthread_mutex_lock(&s2s_reg_lock);
    e->next = s2s_reg;
    s2s_reg = e;
    pthread_mutex_unlock(&s2s_reg_lock);
}

void
s2s_registry_drop(uint64_t conn_id)
{
    pthread_mutex_lock(&s2s_reg_lock);
    for (s2s_reg_t **pp = &s2s_reg; *pp;) {
        s2s_reg_t *e = *pp;
        if (e->conn_id == conn_id) {
            *pp = e->next;
            xd_free(e);
        } else {
            pp = &e->next;
        }
    }
    pthread_mutex_unlock(&s2s_reg_lock);
}

static int
cmd_s2s_connections(xd_cmd_call_t *call)
{
    pthread_mutex_lock(&s2s_reg_lock);
    for (s2s_reg_t *e = s2s_reg; e; e = e->next)
        xd_cmd_add(call, "%s %s %s %s auth=%s conn=%llu", e->out ? "out" : "in", e->local,
                   e->out ? "->" : "<-", e->remote, e->auth, (unsigned long long)e->conn_id);
    pthread_mutex_unlock(&s2s_reg_lock);
    return 0;
}

static int
cmd_disconnect_s2s(xd_cmd_call_t *call)
{
    const char *remote = call->args[0].text;
    unsigned n = 0;
    pthread_mutex_lock(&s2s_reg_lock);
    for (s2s_reg_t *e = s2s_reg; e; e = e->next)
        if (!strcmp(e->remote, remote)) {
            c2s_post_close(e->worker, e->conn_id, XD_STREAM_POLICY_VIOLATION,
                           "disconnected by the administrator");
            n++;
        }
    pthread_mutex_unlock(&s2s_reg_lock);
    if (!n)
        return xd_cmd_errorf(call, XD_ENOTFOUND, "no server-to-server stream with %s", remote);
    call->res.i = n;
    return 0;
}

static const xd_cmd_arg_t s2s_domain_arg[] = {
    { "domain", XD_CMD_STRING, "the remote domain" },
};

static const xd_cmd_t s2s_cmds[] = {
    { .name = "s2s_connections",
      .doc = "List the authenticated server-to-server streams: direction, local and remote "
             "domain, how the remote side was authenticated (sasl, dialback, dialback-cert).",
      .result = XD_CMD_RES_LIST, .fn = cmd_s2s_connections },
    { .name = "disconnect_s2s",
      .doc = "Close every server-to-server stream with DOMAIN (they reopen when needed).",
      .args = s2s_domain_arg, .nargs = 1, .result = XD_CMD_RES_INT,
      .result_doc = "the number of streams closed", .fn = cmd_disconnect_s2s },
};

void
xd_s2s_register_commands(void)
{
    for (size_t i = 0; i < sizeof s2s_cmds / sizeof *s2s_cmds; i++)
        xd_cmd_register(&s2s_cmds[i]);
}
