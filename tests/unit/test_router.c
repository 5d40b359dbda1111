/*
 * test_router.c — the router (src/router/router.c, carbons.c) and the
 * session manager's side of a session (src/router/session.c) against fake
 * sessions.
 *
 * Sessions are bound in the real session table through
 * xd_session_bind_iq; their transport is t_ops, a fake xd_session_ops_t
 * that records what it is given (deliver) and what it is told (close),
 * and on close ends the session as a stream would (xd_session_end).
 *
 * Workers: xd_session_send posts to the owner's inbox unless the caller is
 * the owner worker, and without workers there is no inbox at all
 * (xd_worker_get() is NULL: the stanza is dropped, a close does nothing).
 * So the group starts two real workers (xd_workers_start) and the tests
 * run every call that touches sessions ON a worker (t_on): routing from
 * worker 0 to a session of worker 0 is the direct path, to one of worker 1
 * the inbox path, and each record says which one it took.  Nothing is
 * added to production code for this.
 *
 * Waiting: t_settle() runs a no-op on each worker in turn, four rounds.
 * Inbox messages posted before a no-op run before it (one FIFO per
 * worker; a post that happened before another is queued ahead of it), so
 * each round carries every chain of posts one hop further: a delivery to
 * the other worker, its bounce back, a carbon, a close and the end it
 * causes.  No test here has a longer chain.  No sleeps.
 *
 * Spec tags (STYLE.md 3.10) match the code they test: RFC 6121 8.5.2 (bare
 * JID), 8.5.3 (full JID), RFC 6120 8.3.1 (no error for an error), 10.1
 * (order), 7.7.2.2 (resource conflicts), RFC 6121 4.6 (directed presence),
 * XEP-0280 (carbons).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "core/worker.h"
#include "router/router.h"
#include "router/session.h"
#include "router/sm.h"
#include "xmppd/acl.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/iq.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/service.h"
#include "xmppd/stanza.h"

#define T_WORKERS 2
#define T_MAX_SESS 32  /* sessions per test */
#define T_MAX_REC 512  /* deliveries and closes per test */
#define T_MAX_NOTE 64  /* hook and handler notes per test */
#define T_ECHO_NS "urn:xmppd:test:echo"

/* ---- the fake transport -------------------------------------------------------------------- */

/* One fake stream.  Allocated by the test thread before its worker sees it;
 * `s` and `gone` are then the owner worker's, read by the test thread only
 * after t_on/t_settle (a semaphore orders them). */
typedef struct t_sess {
    uint64_t id;        /* the transport's id: index + 1 */
    unsigned worker;    /* the owner */
    char jid[256];      /* the bound full JID; "" when the bind failed */
    xd_session_t *s;    /* the session manager's object; NULL once ended */
    bool gone;          /* deliver answers XD_ENOTFOUND (the stream is closing) */
} t_sess_t;

/* What a transport was handed (guarded by t_mu). */
typedef struct t_rec {
    uint64_t id;      /* the session */
    unsigned on;      /* the worker the call ran on */
    bool direct;      /* inside the caller's own t_on body: no inbox hop */
    char *xml;        /* deliver: the stanza; NULL for a close */
    int cond;         /* close: the stream condition */
} t_rec_t;

static t_sess_t t_sess[T_MAX_SESS];
static size_t t_nsess;
static uv_mutex_t t_mu;                 /* guards the records and the notes */
static t_rec_t t_recs[T_MAX_REC];
static size_t t_nrec;
static char *t_notes[T_MAX_NOTE];       /* hooks and IQ handlers say what they saw */
static size_t t_nnote;
static uv_sem_t t_done;                 /* posted when a t_on body has run */
static _Thread_local bool t_in_call;    /* this worker runs a t_on body now */
static xd_log_t t_log;                  /* the sessions' log context */

static t_sess_t *
t_sess_of(uint64_t id)
{
    return id >= 1 && id <= t_nsess ? &t_sess[id - 1] : NULL;
}

static unsigned
t_self(void)
{
    xd_worker_t *w = xd_worker_self();
    return w ? xd_worker_index(w) : 99;
}

static void
t_record(uint64_t id, const xd_stanza_t *st, int cond)
{
    uv_mutex_lock(&t_mu);
    if (t_nrec < T_MAX_REC) {
        t_rec_t *r = &t_recs[t_nrec++];
        r->id = id;
        r->on = t_self();
        r->direct = t_in_call;
        r->xml = st ? strdup(xd_stanza_bytes(st, NULL)) : NULL;
        r->cond = cond;
    }
    uv_mutex_unlock(&t_mu);
}

static void
t_note(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    uv_mutex_lock(&t_mu);
    if (t_nnote < T_MAX_NOTE)
        t_notes[t_nnote++] = strdup(buf);
    uv_mutex_unlock(&t_mu);
}

static int
t_deliver(uint64_t id, const xd_stanza_t *st)
{
    t_sess_t *f = t_sess_of(id);
    if (!f || f->gone) {
        /* Noted, so a test sees every stanza handed to a closing stream. */
        const xd_el_t *el = xd_stanza_root(st);
        const char *sid = xd_el_attr(el, "id"), *type = xd_el_attr(el, "type");
        t_note("gone %s id=%s type=%s", f ? f->jid : "?", sid ? sid : "", type ? type : "");
        return XD_ENOTFOUND;
    }
    t_record(id, st, 0);
    return 0;
}

/* As a stream does: the session ends when the stream closes. */
static void
t_close(uint64_t id, xd_stream_cond cond, const char *text)
{
    (void)text;
    t_sess_t *f = t_sess_of(id);
    t_record(id, NULL, (int)cond);
    if (f && f->s) {
        xd_session_t *s = f->s;
        f->s = NULL;
        f->gone = true;
        xd_session_end(s, "closed");
    }
}

static int
t_info(uint64_t id, xd_session_stats_t *out)
{
    t_sess_t *f = t_sess_of(id);
    if (!f || f->gone)
        return XD_ENOTFOUND;
    *out = (xd_session_stats_t){ 0 };
    return 0;
}

static xd_session_t *
t_session(uint64_t id)
{
    t_sess_t *f = t_sess_of(id);
    return f ? f->s : NULL;
}

static const xd_session_ops_t t_ops = {
    .name = "fake", .deliver = t_deliver, .close = t_close, .info = t_info, .session = t_session,
};

/* ---- running on a worker ------------------------------------------------------------------- */

typedef struct t_call {
    void (*fn)(void *arg); /* the body */
    void *arg;             /* its argument */
} t_call_t;

static void
t_call_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    t_call_t *c = arg;
    t_in_call = true;
    c->fn(c->arg);
    t_in_call = false;
    uv_sem_post(&t_done);
}

/* Runs fn(arg) on worker `worker` and waits for it. */
static void
t_on(unsigned worker, void (*fn)(void *), void *arg)
{
    t_call_t c = { fn, arg };
    assert_int_equal(xd_worker_post(xd_worker_get(worker), t_call_msg, &c), 0);
    uv_sem_wait(&t_done);
}

static void
t_noop(void *arg)
{
    (void)arg;
}

/* Until everything posted so far (and what it posts in turn) has run; then
 * checks that every transport call ran on its session's owner. */
static void
t_settle(void)
{
    for (int round = 0; round < 4; round++)
        for (unsigned w = 0; w < T_WORKERS; w++)
            t_on(w, t_noop, NULL);
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nrec; i++) {
        t_sess_t *f = t_sess_of(t_recs[i].id);
        assert_non_null(f);
        assert_int_equal(t_recs[i].on, f->worker);
    }
    uv_mutex_unlock(&t_mu);
}

/* Forgets the records and notes. */
static void
t_reset(void)
{
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nrec; i++)
        free(t_recs[i].xml);
    t_nrec = 0;
    for (size_t i = 0; i < t_nnote; i++)
        free(t_notes[i]);
    t_nnote = 0;
    uv_mutex_unlock(&t_mu);
}

/* ---- sessions ------------------------------------------------------------------------------ */

static xd_stanza_t *
t_stanza(const char *xml)
{
    xd_stanza_t *st = NULL;
    int rc = xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &st);
    if (rc != 0)
        fail_msg("cannot parse %s: %s", xml, xd_strerror(rc));
    return st;
}

typedef struct t_bind {
    t_sess_t *f;           /* the stream */
    const char *user;      /* "u@a.example" */
    const char *resource;  /* requested, or NULL */
    char reply[1024];      /* out: the bind reply */
} t_bind_t;

static void
t_bind_fn(void *arg)
{
    t_bind_t *b = arg;
    xd_jid_t *user = NULL;
    if (xd_jid_parse(xd_str_c(b->user), &user) != 0)
        abort();
    char host[256], xml[2048];
    xd_str_t d = xd_jid_domain(user);
    snprintf(host, sizeof host, "%.*s", (int)d.len, d.p);
    snprintf(xml, sizeof xml,
             "<iq type='set' id='bind1'><bind xmlns='" XD_NS_BIND "'>%s%s%s</bind></iq>",
             b->resource ? "<resource>" : "", b->resource ? b->resource : "",
             b->resource ? "</resource>" : "");
    xd_stanza_t *iq = NULL;
    if (xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &iq) != 0)
        abort();
    xd_session_bind_req_t req = {
        .ref = { .ops = &t_ops, .worker = b->f->worker, .id = b->f->id },
        .user = user, .host = host, .ip = "192.0.2.1", .log = &t_log, .now_ms = 0,
    };
    xd_stanza_t *reply = xd_session_bind_iq(&req, iq, &b->f->s);
    snprintf(b->reply, sizeof b->reply, "%s", xd_stanza_bytes(reply, NULL));
    if (b->f->s)
        snprintf(b->f->jid, sizeof b->f->jid, "%s", xd_jid_full_str(b->f->s->jid).p);
    xd_stanza_unref(reply);
    xd_stanza_unref(iq);
    xd_jid_unref(user);
}

/* A new stream on `worker` asks to bind `resource` (NULL: generated) for
 * `user`; the reply goes to *reply (may be NULL). */
static t_sess_t *
t_bind(unsigned worker, const char *user, const char *resource, char *reply, size_t cap)
{
    assert_true(t_nsess < T_MAX_SESS);
    t_sess_t *f = &t_sess[t_nsess];
    *f = (t_sess_t){ .id = t_nsess + 1, .worker = worker };
    t_nsess++;
    t_bind_t b = { .f = f, .user = user, .resource = resource };
    t_on(worker, t_bind_fn, &b);
    if (reply)
        snprintf(reply, cap, "%s", b.reply);
    return f;
}

typedef struct t_input {
    t_sess_t *f;        /* the sending session */
    const char *xml;    /* what its client sends */
    int rc;             /* out: xd_session_input's answer */
} t_input_t;

static void
t_input_fn(void *arg)
{
    t_input_t *in = arg;
    xd_stanza_t *st = NULL;
    if (xd_stanza_parse(in->xml, strlen(in->xml), XD_NS_CLIENT, &st) != 0)
        abort();
    in->rc = xd_session_input(in->f->s, st); /* takes st */
}

/* The client of f sends xml (on f's worker); then settles. */
static int
t_input(t_sess_t *f, const char *xml)
{
    assert_non_null(f->s);
    t_input_t in = { .f = f, .xml = xml };
    t_on(f->worker, t_input_fn, &in);
    t_settle();
    return in.rc;
}

/* A bound session on `worker` whose client sent available presence with
 * `priority`.  "u@a.example", "r" → u@a.example/r. */
static t_sess_t *
t_online(unsigned worker, const char *user, const char *resource, int priority)
{
    t_sess_t *f = t_bind(worker, user, resource, NULL, 0);
    assert_non_null(f->s);
    char xml[128];
    snprintf(xml, sizeof xml, "<presence><priority>%d</priority></presence>", priority);
    assert_int_equal(t_input(f, xml), 0);
    return f;
}

static void
t_end_fn(void *arg)
{
    t_sess_t *f = arg;
    xd_session_t *s = f->s;
    f->s = NULL;
    f->gone = true;
    xd_session_end(s, "closed");
}

/* f's stream ends (as when its client closes it); then settles. */
static void
t_end(t_sess_t *f)
{
    assert_non_null(f->s);
    t_on(f->worker, t_end_fn, f);
    t_settle();
}

static void
t_gone_fn(void *arg)
{
    ((t_sess_t *)arg)->gone = true;
}

/* f's stream stops taking stanzas (it is closing) while the session is
 * still in the table: what a stanza in flight finds when the session
 * closed meanwhile. */
static void
t_gone(t_sess_t *f)
{
    t_on(f->worker, t_gone_fn, f);
}

static void
t_route_fn(void *arg)
{
    xd_route_take(arg);
}

/* Routes xml from worker `worker` (as if a session of it sent it); then
 * settles. */
static void
t_route(unsigned worker, const char *xml)
{
    t_on(worker, t_route_fn, t_stanza(xml));
    t_settle();
}

/* ---- what the sessions got ----------------------------------------------------------------- */

/* How many stanzas f was given that contain every needle (NULL-ended). */
static size_t
t_count_v(const t_sess_t *f, const char *first, va_list ap)
{
    const char *needles[8];
    size_t n = 0;
    for (const char *s = first; s && n < 8; s = va_arg(ap, const char *))
        needles[n++] = s;
    size_t k = 0;
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nrec; i++) {
        if (t_recs[i].id != f->id || !t_recs[i].xml)
            continue;
        bool all = true;
        for (size_t j = 0; j < n && all; j++)
            all = strstr(t_recs[i].xml, needles[j]) != NULL;
        k += all;
    }
    uv_mutex_unlock(&t_mu);
    return k;
}

#define t_got(f, ...) t_got_((f), __VA_ARGS__, (const char *)NULL)
static size_t
t_got_(const t_sess_t *f, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    size_t k = t_count_v(f, first, ap);
    va_end(ap);
    return k;
}

/* Every stanza f was given (for messages). */
static size_t
t_total(const t_sess_t *f)
{
    size_t k = 0;
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nrec; i++)
        k += t_recs[i].id == f->id && t_recs[i].xml;
    uv_mutex_unlock(&t_mu);
    return k;
}

/* Fails with what f got, when f did not get exactly `want` stanzas. */
static void
t_expect_total(const t_sess_t *f, size_t want)
{
    size_t k = t_total(f);
    if (k == want)
        return;
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nrec; i++)
        if (t_recs[i].id == f->id && t_recs[i].xml)
            print_message("%s got: %s\n", f->jid, t_recs[i].xml);
    uv_mutex_unlock(&t_mu);
    fail_msg("%s got %zu stanzas, expected %zu", f->jid, k, want);
}

/* The transport call i of session f: whether it took the direct path. */
static bool
t_direct(const t_sess_t *f, const char *needle)
{
    bool direct = false, seen = false;
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nrec; i++)
        if (t_recs[i].id == f->id && t_recs[i].xml && strstr(t_recs[i].xml, needle)) {
            direct = t_recs[i].direct;
            seen = true;
        }
    uv_mutex_unlock(&t_mu);
    assert_true(seen);
    return direct;
}

/* Closes f was told about: the stream condition of the last, or -1. */
static int
t_closed(const t_sess_t *f)
{
    int cond = -1;
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nrec; i++)
        if (t_recs[i].id == f->id && !t_recs[i].xml)
            cond = t_recs[i].cond;
    uv_mutex_unlock(&t_mu);
    return cond;
}

static size_t
t_noted(const char *needle)
{
    size_t k = 0;
    uv_mutex_lock(&t_mu);
    for (size_t i = 0; i < t_nnote; i++)
        k += strstr(t_notes[i], needle) != NULL;
    uv_mutex_unlock(&t_mu);
    return k;
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static const char t_yml[] = "hosts: [a.example, r.example, n.example]\n"
                            "host_config:\n"
                            "  r.example:\n"
                            "    resource_conflict: refuse\n"
                            "  n.example:\n"
                            "    resource_conflict: rename\n";

static int
group_setup(void **state)
{
    (void)state;
    xd_log_set_level(XD_LOG_ERROR);
    xd_config_t *cfg = NULL;
    char *err = NULL;
    if (xd_config_load_string("t.yml", t_yml, sizeof t_yml - 1, &cfg, &err) != 0) {
        fprintf(stderr, "config: %s\n", err ? err : "?");
        return -1;
    }
    xd_config_publish(cfg);
    xd_log_ctx(&t_log, NULL, "conn=fake");
    if (uv_mutex_init(&t_mu) != 0 || uv_sem_init(&t_done, 0) != 0)
        return -1;
    return xd_workers_start(T_WORKERS, NULL, NULL, NULL);
}

static int
group_teardown(void **state)
{
    (void)state;
    xd_workers_stop();
    xd_workers_join();
    xd_config_publish(NULL);
    uv_sem_destroy(&t_done);
    uv_mutex_destroy(&t_mu);
    return 0;
}

static int
setup(void **state)
{
    (void)state;
    t_nsess = 0;
    return xd_sm_init();
}

static int
teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < t_nsess; i++)
        if (t_sess[i].s)
            t_on(t_sess[i].worker, t_end_fn, &t_sess[i]);
    t_settle();
    xd_hook_clear();
    xd_hook_sync();
    xd_iq_clear();
    t_reset();
    xd_sm_shutdown();
    return 0;
}

/* ---- hooks and handlers the tests install -------------------------------------------------- */

static int
t_offline_keep(xd_module_ctx_t *ctx, xd_hook_stanza_t *ev, void *arg)
{
    (void)ctx;
    t_note("offline %s to=%s host=%s %s", (const char *)arg, xd_jid_full_str(ev->to).p,
           ev->host, xd_stanza_bytes(ev->st, NULL));
    return strcmp((const char *)arg, "keep") == 0 ? XD_HOOK_STOP : XD_HOOK_OK;
}

/* A service of this process: notes what reaches it. */
static void
t_service(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)ctx;
    (void)arg;
    const char *id = xd_el_attr(xd_stanza_root(st), "id");
    t_note("service id=%s", id ? id : "");
    xd_stanza_unref(st);
}

/* Drops stanzas whose id is "drop", replaces the body of those whose id is
 * "edit". */
static int
t_filter(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    const char *id = xd_el_attr(xd_stanza_root(ev->st), "id");
    t_note("filter host=%s to=%s id=%s", ev->host, xd_jid_full_str(ev->to).p, id ? id : "");
    if (id && !strcmp(id, "drop")) {
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    if (id && !strcmp(id, "edit")) {
        xd_el_t *e = xd_stanza_edit(ev->st);
        xd_el_t *body = xd_el_child_mut(e, "body", NULL);
        xd_el_clear_children(body);
        xd_el_add_text(body, "edited");
        xd_stanza_unref(ev->st);
        ev->st = xd_el_freeze(e);
    }
    return XD_HOOK_OK;
}

static xd_stanza_t *
t_iq_echo(const xd_iq_req_t *req)
{
    t_note("iq from=%s to=%s host=%s on=%u", xd_jid_full_str(req->from).p,
           xd_jid_full_str(req->to).p, req->host, t_self());
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_add_child(r, "echo", T_ECHO_NS);
    return xd_el_freeze(r);
}

static int
t_on_register(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    t_note("register %s", xd_jid_full_str(ev->jid).p);
    return XD_HOOK_OK;
}

static int
t_on_remove(xd_module_ctx_t *ctx, xd_hook_session_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    t_note("remove %s reason=%s", xd_jid_full_str(ev->jid).p, ev->reason ? ev->reason : "-");
    return XD_HOOK_OK;
}

static int
t_on_unavailable(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    t_note("unavailable %s presence=%s", xd_jid_full_str(ev->jid).p,
           ev->presence ? "yes" : "none");
    return XD_HOOK_OK;
}

/* ---- delivery paths ------------------------------------------------------------------------ */

/* A session of the routing worker gets the stanza within the routing call;
 * one of the other worker through that worker's inbox, on its owner.  Both
 * keep the order of one sender's stanzas (RFC 6120 10.1). */
static void
test_router__delivery_paths(void **state)
{
    (void)state;
    t_sess_t *here = t_online(0, "h@a.example", "r", 0);
    t_sess_t *there = t_online(1, "t@a.example", "r", 0);
    t_route(0, "<message from='x@a.example/x' to='h@a.example/r' type='chat' id='m1'/>");
    t_route(0, "<message from='x@a.example/x' to='t@a.example/r' type='chat' id='m2'/>");
    assert_int_equal(t_got(here, "id='m1'"), 1);
    assert_int_equal(t_got(there, "id='m2'"), 1);
    assert_true(t_direct(here, "id='m1'"));
    assert_false(t_direct(there, "id='m2'"));
    /* From worker 1 it is the other way round. */
    t_route(1, "<message from='x@a.example/x' to='h@a.example/r' type='chat' id='m3'/>");
    t_route(1, "<message from='x@a.example/x' to='t@a.example/r' type='chat' id='m4'/>");
    assert_false(t_direct(here, "id='m3'"));
    assert_true(t_direct(there, "id='m4'"));

    /* RFC 6120 10.1: in order, both ways. */
    t_reset();
    for (int i = 0; i < 100; i++) {
        char xml[200];
        snprintf(xml, sizeof xml,
                 "<message from='x@a.example/x' to='%s' type='chat' id='o%d'/>",
                 i % 2 ? "t@a.example/r" : "h@a.example/r", i);
        t_on(0, t_route_fn, t_stanza(xml));
    }
    t_settle();
    uv_mutex_lock(&t_mu);
    int last[2] = { -1, -1 };
    for (size_t i = 0; i < t_nrec; i++) {
        const char *p = strstr(t_recs[i].xml, "id='o");
        assert_non_null(p);
        int n = atoi(p + 5), who = t_recs[i].id == there->id;
        assert_int_equal(n % 2, who);
        assert_true(n > last[who]);
        last[who] = n;
    }
    uv_mutex_unlock(&t_mu);
    assert_int_equal(last[0], 98);
    assert_int_equal(last[1], 99);
}

/* ---- to a full JID (RFC 6121 8.5.3) -------------------------------------------------------- */

/* RFC 6121 8.5.3.1: a resource that matches gets every kind of stanza,
 * whatever its presence (negative priority, or none sent yet); the
 * account's other sessions get nothing. */
static void
test_router__full_jid_present(void **state)
{
    (void)state;
    t_sess_t *neg = t_online(1, "u@a.example", "neg", -5);
    t_sess_t *quiet = t_bind(0, "u@a.example", "quiet", NULL, 0); /* no presence */
    t_sess_t *other = t_online(1, "u@a.example", "other", 10);
    static const char *const kinds[] = {
        "<message from='x@a.example/x' to='%s' type='chat' id='k1'/>",
        "<message from='x@a.example/x' to='%s' type='headline' id='k2'/>",
        "<message from='x@a.example/x' to='%s' type='groupchat' id='k3'/>",
        "<message from='x@a.example/x' to='%s' id='k4'/>",
        "<iq from='x@a.example/x' to='%s' type='get' id='k5'><q xmlns='urn:x'/></iq>",
        "<iq from='x@a.example/x' to='%s' type='result' id='k6'/>",
        "<presence from='x@a.example/x' to='%s' id='k7'/>",
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char xml[300];
        snprintf(xml, sizeof xml, kinds[i], neg->jid);
        t_route(0, xml);
        snprintf(xml, sizeof xml, kinds[i], quiet->jid);
        t_route(0, xml);
    }
    t_expect_total(neg, 7);
    t_expect_total(quiet, 7);
    t_expect_total(other, 0);
}

/* RFC 6121 8.5.3.2: no such resource. */
static void
test_router__full_jid_absent(void **state)
{
    (void)state;
    t_sess_t *top = t_online(1, "u@a.example", "top", 3);
    t_sess_t *low = t_online(0, "u@a.example", "low", 1);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    /* 8.5.3.2.1: chat and normal as to the bare JID. */
    t_route(0, "<message from='x@a.example/x' to='u@a.example/gone' type='chat' id='c1'/>");
    t_route(0, "<message from='x@a.example/x' to='u@a.example/gone' type='normal' id='c2'/>");
    t_route(0, "<message from='x@a.example/x' to='u@a.example/gone' id='c3'/>");
    assert_int_equal(t_got(top, "id='c1'"), 1);
    assert_int_equal(t_got(top, "id='c2'"), 1);
    assert_int_equal(t_got(top, "id='c3'"), 1);
    t_expect_total(low, 0);
    t_expect_total(x, 0);
    /* Headline, presence and errors: dropped, and nobody is told. */
    t_reset();
    t_route(0, "<message from='x@a.example/x' to='u@a.example/gone' type='headline' id='h1'/>");
    t_route(0, "<presence from='x@a.example/x' to='u@a.example/gone' id='p1'/>");
    t_route(0, "<presence from='x@a.example/x' to='u@a.example/gone' type='unavailable'/>");
    t_route(0, "<message from='x@a.example/x' to='u@a.example/gone' type='error' id='e1'/>");
    t_route(0, "<iq from='x@a.example/x' to='u@a.example/gone' type='result' id='i0'/>");
    t_route(0, "<iq from='x@a.example/x' to='u@a.example/gone' type='error' id='i1'/>");
    t_expect_total(top, 0);
    t_expect_total(low, 0);
    t_expect_total(x, 0);
    /* Groupchat and IQ requests: service-unavailable to the sender. */
    t_route(0, "<message from='x@a.example/x' to='u@a.example/gone' type='groupchat' id='g1'/>");
    t_route(1, "<iq from='x@a.example/x' to='u@a.example/gone' type='get' id='i2'>"
               "<q xmlns='urn:x'/></iq>");
    t_route(1, "<iq from='x@a.example/x' to='u@a.example/gone' type='set' id='i3'>"
               "<q xmlns='urn:x'/></iq>");
    assert_int_equal(t_got(x, "id='g1'", "type='error'", "<service-unavailable"), 1);
    assert_int_equal(t_got(x, "id='i2'", "type='error'", "<service-unavailable"), 1);
    assert_int_equal(t_got(x, "id='i3'", "type='error'", "<service-unavailable"), 1);
    t_expect_total(x, 3);
    t_expect_total(top, 0);
    t_expect_total(low, 0);
}

/* ---- to a bare JID (RFC 6121 8.5.2) -------------------------------------------------------- */

/* 8.5.2.1.1: chat and normal to the available sessions of the highest
 * non-negative priority, all of them on a tie; headline to every
 * available one with a non-negative priority. */
static void
test_router__bare_jid_by_priority(void **state)
{
    (void)state;
    t_sess_t *a5 = t_online(0, "u@a.example", "a5", 5);
    t_sess_t *b5 = t_online(1, "u@a.example", "b5", 5);
    t_sess_t *c1 = t_online(0, "u@a.example", "c1", 1);
    t_sess_t *neg = t_online(1, "u@a.example", "neg", -1);
    t_sess_t *quiet = t_bind(0, "u@a.example", "quiet", NULL, 0);
    t_sess_t *x = t_online(1, "x@a.example", "x", 0);
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='chat' id='t1'/>");
    t_route(1, "<message from='x@a.example/x' to='u@a.example' id='t2'/>");
    for (int i = 0; i < 2; i++) {
        const char *id = i ? "id='t2'" : "id='t1'";
        assert_int_equal(t_got(a5, id), 1);
        assert_int_equal(t_got(b5, id), 1);
    }
    t_expect_total(c1, 0);
    t_expect_total(neg, 0);
    t_expect_total(quiet, 0);
    t_expect_total(x, 0);

    /* b5 drops to 3: a5 alone is the highest. */
    t_reset();
    assert_int_equal(t_input(b5, "<presence><priority>3</priority></presence>"), 0);
    t_route(1, "<message from='x@a.example/x' to='u@a.example' type='chat' id='t3'/>");
    t_expect_total(a5, 1);
    t_expect_total(b5, 0);
    /* An unavailable session is not considered, whatever its priority. */
    assert_int_equal(t_input(a5, "<presence type='unavailable'/>"), 0);
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='chat' id='t4'/>");
    assert_int_equal(t_got(b5, "id='t4'"), 1);
    assert_int_equal(t_got(a5, "id='t4'"), 0);

    /* Headline: every available session with priority >= 0. */
    t_reset();
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='headline' id='h1'/>");
    t_expect_total(b5, 1);
    t_expect_total(c1, 1);
    t_expect_total(a5, 0);
    t_expect_total(neg, 0);
    t_expect_total(quiet, 0);
    t_expect_total(x, 0);
}

/* 8.5.2.1.1: a groupchat message to a bare JID is never delivered, even
 * with available sessions: the sender gets service-unavailable. */
static void
test_router__bare_jid_groupchat_refused(void **state)
{
    (void)state;
    t_sess_t *u = t_online(1, "u@a.example", "r", 5);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='groupchat' id='g1'/>");
    t_expect_total(u, 0);
    assert_int_equal(t_got(x, "id='g1'", "type='error'", "<service-unavailable"), 1);
    /* None available: the same, and the offline hook is not asked. */
    assert_int_equal(xd_hook_add(XD_HOOK_OFFLINE_MESSAGE, NULL, 50, t_offline_keep, "keep"), 0);
    t_reset();
    t_route(0, "<message from='x@a.example/x' to='nobody@a.example' type='groupchat' id='g2'/>");
    assert_int_equal(t_got(x, "id='g2'", "<service-unavailable"), 1);
    assert_int_equal(t_noted("offline"), 0);
}

/* RFC 6121 8.5.2.1.1: a message of type error to a bare JID is silently
 * ignored, also when a session is available; its sender gets nothing. */
static void
test_router__bare_jid_error_ignored(void **state)
{
    (void)state;
    t_sess_t *u = t_online(1, "u@a.example", "r", 5);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='error' id='e1'>"
               "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
               "</error></message>");
    t_expect_total(u, 0);
    t_expect_total(x, 0);
    /* To the full JID it is delivered (8.5.3.1). */
    t_route(0, "<message from='x@a.example/x' to='u@a.example/r' type='error' id='e2'/>");
    assert_int_equal(t_got(u, "id='e2'"), 1);
}

/* 8.5.2.2.1 (and 8.5.2.1.1 for negative priorities only): chat and
 * normal go to the offline hook, else service-unavailable; headline is
 * dropped; errors never get an error. */
static void
test_router__bare_jid_nobody_available(void **state)
{
    (void)state;
    t_sess_t *neg = t_online(1, "u@a.example", "neg", -3);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='chat' id='n1'/>");
    t_route(0, "<message from='x@a.example/x' to='nobody@a.example' id='n2'/>");
    t_expect_total(neg, 0);
    assert_int_equal(t_got(x, "id='n1'", "type='error'", "<service-unavailable"), 1);
    assert_int_equal(t_got(x, "id='n2'", "type='error'", "<service-unavailable"), 1);
    t_reset();
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='headline' id='n3'/>");
    t_route(0, "<message from='x@a.example/x' to='u@a.example' type='error' id='n4'/>");
    t_route(0, "<presence from='x@a.example/x' to='nobody@a.example' id='n5'/>");
    t_expect_total(neg, 0);
    t_expect_total(x, 0);
}

/* The OFFLINE_MESSAGE hook: a handler that keeps the message returns
 * XD_HOOK_STOP and the sender hears nothing; one that passes leaves the
 * bounce to the router. */
static void
test_router__offline_hook_takes_or_not(void **state)
{
    (void)state;
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    assert_int_equal(xd_hook_add(XD_HOOK_OFFLINE_MESSAGE, NULL, 40, t_offline_keep, "pass"), 0);
    t_route(1, "<message from='x@a.example/x' to='u@a.example' type='chat' id='o1'/>");
    assert_int_equal(t_noted("offline pass to=u@a.example host=a.example"), 1);
    assert_int_equal(t_got(x, "id='o1'", "<service-unavailable"), 1);

    t_reset();
    assert_int_equal(xd_hook_add(XD_HOOK_OFFLINE_MESSAGE, NULL, 60, t_offline_keep, "keep"), 0);
    t_route(1, "<message from='x@a.example/x' to='u@a.example' type='chat' id='o2'><body>b</body>"
               "</message>");
    /* A message to a resource that is gone counts as to the bare JID. */
    t_route(0, "<message from='x@a.example/x' to='u@a.example/gone' id='o3'/>");
    assert_int_equal(t_noted("offline pass"), 2);
    assert_int_equal(t_noted("offline keep to=u@a.example host=a.example"), 1);
    assert_int_equal(t_noted("offline keep to=u@a.example/gone host=a.example"), 1);
    assert_int_equal(t_noted("id='o2'><body>b</body>"), 2);
    t_expect_total(x, 0);
    /* Headlines and errors are not offered to it. */
    t_reset();
    t_route(1, "<message from='x@a.example/x' to='u@a.example' type='headline' id='o4'/>");
    t_route(1, "<message from='x@a.example/x' to='u@a.example' type='error' id='o5'/>");
    assert_int_equal(t_noted("offline"), 0);
}

/* 8.5.2.1.2: presence to the bare JID goes to every available session,
 * negative priorities included; with none it is dropped. */
static void
test_router__bare_jid_presence(void **state)
{
    (void)state;
    t_sess_t *a = t_online(0, "u@a.example", "a", 2);
    t_sess_t *neg = t_online(1, "u@a.example", "neg", -2);
    t_sess_t *quiet = t_bind(1, "u@a.example", "quiet", NULL, 0);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    t_route(0, "<presence from='x@a.example/x' to='u@a.example' id='p1'/>");
    t_route(0, "<presence from='x@a.example/x' to='u@a.example' type='unavailable' id='p2'/>");
    t_expect_total(a, 2);
    t_expect_total(neg, 2);
    t_expect_total(quiet, 0);
    t_reset();
    t_route(0, "<presence from='x@a.example/x' to='nobody@a.example' id='p3'/>");
    t_expect_total(x, 0);
}

/* RFC 6121 8.5.1: an IQ to a bare JID is answered by the server for the
 * account, through the IQ handlers, never by one of its sessions;
 * results and errors to it end there (RFC 6120 8.3.1). */
static void
test_router__iq_to_bare_jid_dispatched(void **state)
{
    (void)state;
    t_sess_t *u = t_online(1, "u@a.example", "r", 9);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    assert_int_equal(xd_iq_register(NULL, XD_IQ_USER, T_ECHO_NS, XD_IQ_INLINE, t_iq_echo, NULL),
                     0);
    t_route(0, "<iq from='x@a.example/x' to='u@a.example' type='get' id='q1'>"
               "<echo xmlns='" T_ECHO_NS "'/></iq>");
    assert_int_equal(t_noted("iq from=x@a.example/x to=u@a.example host=a.example on=0"), 1);
    t_expect_total(u, 0);
    assert_int_equal(t_got(x, "id='q1'", "type='result'", "from='u@a.example'", "<echo"), 1);
    /* No handler for the namespace: service-unavailable. */
    t_route(0, "<iq from='x@a.example/x' to='u@a.example' type='get' id='q2'>"
               "<nope xmlns='urn:nope'/></iq>");
    assert_int_equal(t_got(x, "id='q2'", "type='error'", "<service-unavailable"), 1);
    /* To the host: its own registry (XD_IQ_HOST), empty here. */
    t_route(1, "<iq from='x@a.example/x' to='a.example' type='get' id='q3'>"
               "<echo xmlns='" T_ECHO_NS "'/></iq>");
    assert_int_equal(t_got(x, "id='q3'", "type='error'", "<service-unavailable"), 1);
    /* Results and errors: nothing, to nobody. */
    t_reset();
    t_route(0, "<iq from='x@a.example/x' to='u@a.example' type='result' id='q4'/>");
    t_route(0, "<iq from='x@a.example/x' to='u@a.example' type='error' id='q5'>"
               "<echo xmlns='" T_ECHO_NS "'/></iq>");
    assert_int_equal(t_noted("iq from"), 0);
    t_expect_total(u, 0);
    t_expect_total(x, 0);
}

/* RFC 6120 8.3.1: never an error for an error, also when the session an
 * error was handed to has gone meanwhile; a request to such a session
 * comes back as service-unavailable (include/xmppd/session.h), from
 * either worker. */
static void
test_router__session_gone_meanwhile(void **state)
{
    (void)state;
    t_sess_t *u0 = t_online(0, "u@a.example", "r0", 0);
    t_sess_t *u1 = t_online(1, "u@a.example", "r1", 0);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    t_gone(u0);
    t_gone(u1);
    t_route(0, "<message from='x@a.example/x' to='u@a.example/r0' type='chat' id='s0'/>");
    t_route(0, "<message from='x@a.example/x' to='u@a.example/r1' type='chat' id='s1'/>");
    t_route(1, "<iq from='x@a.example/x' to='u@a.example/r1' type='get' id='s2'>"
               "<q xmlns='urn:x'/></iq>");
    assert_int_equal(t_got(x, "id='s0'", "type='error'", "<service-unavailable"), 1);
    assert_int_equal(t_got(x, "id='s1'", "type='error'", "<service-unavailable"), 1);
    assert_int_equal(t_got(x, "id='s2'", "type='error'", "<service-unavailable"), 1);
    t_reset();
    t_route(0, "<message from='x@a.example/x' to='u@a.example/r1' type='error' id='s3'/>");
    t_route(1, "<iq from='x@a.example/x' to='u@a.example/r0' type='result' id='s4'/>");
    t_route(1, "<presence from='x@a.example/x' to='u@a.example' type='error' id='s5'/>");
    t_expect_total(x, 0);
    /* An error whose sender is gone too goes nowhere, and ends there: the
     * message is handed to u1's closing stream once, its error to x's once,
     * and nothing answers that error. */
    t_gone(x);
    t_route(0, "<message from='x@a.example/x' to='u@a.example/r1' type='chat' id='s6'/>");
    t_expect_total(x, 0);
    t_expect_total(u0, 0);
    t_expect_total(u1, 0);
    assert_int_equal(t_noted("gone u@a.example/r1 id=s6 type=chat"), 1);
    assert_int_equal(t_noted("gone x@a.example/x id=s6 type=error"), 1);
    assert_int_equal(t_noted("id=s6"), 2);
}

/* xd_session_send_take_or: a stanza handed to a session that has gone by
 * the time it gets there comes back to the sender's `gone` function (the
 * offline store routes a taken-out message again), from either worker. */
static void
t_back(xd_stanza_t *st)
{
    t_note("back %s", xd_el_attr(xd_stanza_root(st), "id"));
    xd_stanza_unref(st);
}

typedef struct t_or {
    xd_session_ref_t to;
    const char *xml;
} t_or_t;

static void
t_send_or_fn(void *arg)
{
    t_or_t *o = arg;
    xd_session_send_take_or(&o->to, t_stanza(o->xml), t_back);
}

static void
test_router__send_or_gives_back(void **state)
{
    (void)state;
    t_sess_t *u = t_online(1, "u@a.example", "r", 0);
    t_sess_t *v = t_online(1, "v@a.example", "r", 0);
    t_gone(u);
    t_or_t near = { { &t_ops, u->worker, u->id }, "<message to='u@a.example/r' id='near'/>" };
    t_or_t far = { { &t_ops, u->worker, u->id }, "<message to='u@a.example/r' id='far'/>" };
    t_or_t live = { { &t_ops, v->worker, v->id }, "<message to='v@a.example/r' id='live'/>" };
    t_on(1, t_send_or_fn, &near); /* same worker: a direct call */
    t_on(0, t_send_or_fn, &far);  /* through worker 1's inbox */
    t_on(0, t_send_or_fn, &live);
    t_settle();
    assert_int_equal(t_noted("back near"), 1);
    assert_int_equal(t_noted("back far"), 1);
    assert_int_equal(t_noted("back live"), 0);
    assert_int_equal(t_got(v, "id='live'"), 1);
    t_expect_total(u, 0);
}

/* ---- filters ------------------------------------------------------------------------------- */

/* FILTER_PACKET runs for every stanza to a served host: a handler may drop
 * it (nobody hears of it) or replace it (the replacement is delivered). */
static void
test_router__filter_packet_drops_and_replaces(void **state)
{
    (void)state;
    t_sess_t *u = t_online(1, "u@a.example", "r", 0);
    t_sess_t *x = t_online(0, "x@a.example", "x", 0);
    assert_int_equal(xd_hook_add(XD_HOOK_FILTER_PACKET, NULL, 50, t_filter, NULL), 0);
    t_route(0, "<message from='x@a.example/x' to='u@a.example/r' type='chat' id='drop'>"
               "<body>secret</body></message>");
    t_route(0, "<iq from='x@a.example/x' to='u@a.example/none' type='get' id='drop'>"
               "<q xmlns='urn:x'/></iq>");
    t_expect_total(u, 0);
    t_expect_total(x, 0);
    assert_int_equal(t_noted("filter host=a.example to=u@a.example/r id=drop"), 1);
    t_route(0, "<message from='x@a.example/x' to='u@a.example/r' type='chat' id='edit'>"
               "<body>original</body></message>");
    assert_int_equal(t_got(u, "id='edit'", "<body>edited</body>"), 1);
    assert_int_equal(t_got(u, "original"), 0);
    /* A stanza to another server's domain is filtered for its sender's host. */
    t_route(0, "<message from='x@a.example/x' to='y@elsewhere.example' id='drop'/>");
    assert_int_equal(t_noted("filter host=a.example to=y@elsewhere.example"), 1);
    t_expect_total(x, 0); /* dropped: no remote-server-not-found either */
    t_route(0, "<message from='x@a.example/x' to='y@elsewhere.example' id='far'/>");
    assert_int_equal(t_got(x, "id='far'", "<remote-server-not-found"), 1);
    /* So is one to a service of this process (a MUC domain, a gateway):
     * the sender's outgoing rules apply there too. */
    /* Added as the configuration wrote it, matched as a JID's domain. */
    assert_int_equal(xd_service_add("SVC.Example", t_service, NULL), 0);
    assert_int_equal(xd_service_add("svc.example", t_service, NULL), XD_EEXIST);
    assert_int_equal(xd_service_add("not a domain!", t_service, NULL), XD_EINVAL);
    t_route(0, "<message from='x@a.example/x' to='room@svc.example' id='drop'/>");
    assert_int_equal(t_noted("filter host=a.example to=room@svc.example"), 1);
    assert_int_equal(t_noted("service id=drop"), 0);
    t_route(0, "<message from='x@a.example/x' to='room@svc.example' id='kept'/>");
    assert_int_equal(t_noted("service id=kept"), 1);
    assert_true(xd_service_remove("svc.EXAMPLE", t_service));
    assert_false(xd_service_exists("svc.example"));
}

/* ---- carbons (XEP-0280) -------------------------------------------------------------------- */

static void
t_carbons_on(const t_sess_t *f)
{
    xd_jid_t *j = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c(f->jid), &j), 0);
    assert_int_equal(xd_session_set_flag(j, XD_SESSION_CARBONS, true), 0);
    xd_jid_unref(j);
}

/* Received carbons: a copy, wrapped, to each other carbons-enabled and
 * available session of the recipient that did not get the message;
 * eligible are chat, and normal with a body, unless private, no-copy or a
 * carbon itself. */
static void
test_router__carbons_received(void **state)
{
    (void)state;
    t_sess_t *c1 = t_online(0, "u@a.example", "c1", 1);
    t_sess_t *c2 = t_online(1, "u@a.example", "c2", 0);
    t_sess_t *plain = t_online(0, "u@a.example", "plain", 0);     /* carbons off */
    t_sess_t *quiet = t_bind(1, "u@a.example", "quiet", NULL, 0); /* on, not available */
    t_sess_t *v = t_online(0, "v@a.example", "v", 0);
    t_carbons_on(c1);
    t_carbons_on(c2);
    t_carbons_on(quiet);
    t_route(0, "<message from='v@a.example/v' to='u@a.example/c1' type='chat' id='r1'>"
               "<body>hi</body></message>");
    assert_int_equal(t_got(c1, "id='r1'"), 1);
    t_expect_total(c1, 1); /* no carbon of its own message */
    assert_int_equal(t_got(c2, "<message from='u@a.example' to='u@a.example/c2' type='chat'>"
                               "<received xmlns='" XD_NS_CARBONS "'>"
                               "<forwarded xmlns='" XD_NS_FORWARD "'>"
                               "<message xmlns='jabber:client' from='v@a.example/v' "
                               "to='u@a.example/c1' type='chat' id='r1'><body>hi</body>"),
                     1);
    assert_false(t_direct(c2, "id='r1'")); /* across workers */
    t_expect_total(plain, 0);
    t_expect_total(quiet, 0);
    t_expect_total(v, 0);

    /* Normal with a body is eligible; to the bare JID c1 (priority 1) gets
     * it and c2 the carbon. */
    t_reset();
    t_route(1, "<message from='v@a.example/v' to='u@a.example' id='r2'><body>x</body></message>");
    assert_int_equal(t_got(c1, "id='r2'"), 1);
    t_expect_total(c1, 1);
    assert_int_equal(t_got(c2, "<received ", "type='normal'", "id='r2'"), 1);
    t_expect_total(plain, 0);
    t_expect_total(quiet, 0);

    /* Not eligible: normal without a body, headline, groupchat (to a full
     * JID), error, private, no-copy, a carbon itself. */
    t_reset();
    static const char *const not_eligible[] = {
        "<message from='v@a.example/v' to='u@a.example/c1' id='n1'/>",
        "<message from='v@a.example/v' to='u@a.example/c1' type='headline' id='n2'>"
        "<body>x</body></message>",
        "<message from='v@a.example/v' to='u@a.example/c1' type='groupchat' id='n3'>"
        "<body>x</body></message>",
        "<message from='v@a.example/v' to='u@a.example/c1' type='error' id='n4'>"
        "<body>x</body></message>",
        "<message from='v@a.example/v' to='u@a.example/c1' type='chat' id='n5'><body>x</body>"
        "<private xmlns='" XD_NS_CARBONS "'/></message>",
        "<message from='v@a.example/v' to='u@a.example/c1' type='chat' id='n6'><body>x</body>"
        "<no-copy xmlns='" XD_NS_HINTS "'/></message>",
        "<message from='v@a.example/v' to='u@a.example/c1' type='chat' id='n7'>"
        "<received xmlns='" XD_NS_CARBONS "'/></message>",
    };
    for (size_t i = 0; i < sizeof not_eligible / sizeof not_eligible[0]; i++)
        t_route(i % 2, not_eligible[i]);
    t_expect_total(c1, 7);
    t_expect_total(c2, 0);
    t_expect_total(plain, 0);
}

/* Sent carbons: what a session sends goes, wrapped, to the account's other
 * carbons-enabled available sessions, not back to the sender. */
static void
test_router__carbons_sent(void **state)
{
    (void)state;
    t_sess_t *c1 = t_online(0, "u@a.example", "c1", 0);
    t_sess_t *c2 = t_online(1, "u@a.example", "c2", 0);
    t_sess_t *c3 = t_online(0, "u@a.example", "c3", 0);
    t_sess_t *plain = t_online(1, "u@a.example", "plain", 0);
    t_sess_t *v = t_online(1, "v@a.example", "v", 0);
    t_carbons_on(c1);
    t_carbons_on(c2);
    t_carbons_on(c3);
    assert_int_equal(t_input(c1, "<message to='v@a.example/v' type='chat' id='s1'>"
                                 "<body>out</body></message>"),
                     0);
    assert_int_equal(t_got(v, "id='s1'", "from='u@a.example/c1'"), 1);
    assert_int_equal(t_got(c2, "<message from='u@a.example' to='u@a.example/c2' type='chat'>"
                               "<sent xmlns='" XD_NS_CARBONS "'><forwarded xmlns='" XD_NS_FORWARD
                               "'><message xmlns='jabber:client' to='v@a.example/v' type='chat' "
                               "id='s1' from='u@a.example/c1'><body>out</body>"),
                     1);
    assert_int_equal(t_got(c3, "<sent ", "id='s1'"), 1);
    assert_true(t_direct(c3, "id='s1'"));
    assert_false(t_direct(c2, "id='s1'"));
    t_expect_total(c1, 0);
    t_expect_total(plain, 0);
    /* Private: no copies. */
    t_reset();
    assert_int_equal(t_input(c2, "<message to='v@a.example/v' type='chat' id='s2'><body>p</body>"
                                 "<private xmlns='" XD_NS_CARBONS "'/></message>"),
                     0);
    assert_int_equal(t_got(v, "id='s2'"), 1);
    t_expect_total(c1, 0);
    t_expect_total(c3, 0);
}

/* ---- xd_session_pick ----------------------------------------------------------------------- */

static size_t
t_pick(const char *xml, const xd_session_info_t *s, size_t n, bool *take)
{
    xd_stanza_t *st = t_stanza(xml);
    size_t k = xd_session_pick(s, n, st, take);
    xd_stanza_unref(st);
    size_t set = 0;
    for (size_t i = 0; i < n; i++)
        set += take[i];
    assert_int_equal(set, k);
    return k;
}

/* RFC 6121 8.5.2: the choice itself, on table entries. */
static void
test_router__session_pick(void **state)
{
    (void)state;
    xd_session_info_t s[5] = {
        { .available = true, .priority = 4 },
        { .available = true, .priority = 4 },
        { .available = true, .priority = 0 },
        { .available = true, .priority = -7 },
        { .available = false, .priority = 100 },
    };
    bool take[5];
    assert_int_equal(t_pick("<message type='chat'/>", s, 5, take), 2);
    assert_true(take[0] && take[1] && !take[2] && !take[3] && !take[4]);
    assert_int_equal(t_pick("<message/>", s, 5, take), 2);
    assert_int_equal(t_pick("<message type='headline'/>", s, 5, take), 3);
    assert_true(take[0] && take[1] && take[2] && !take[3] && !take[4]);
    assert_int_equal(t_pick("<presence/>", s, 5, take), 4);
    assert_true(!take[4]);
    assert_int_equal(t_pick("<message type='groupchat'/>", s, 5, take), 0);
    /* Negative priorities only (and an unavailable one): nobody. */
    assert_int_equal(t_pick("<message type='chat'/>", s + 3, 2, take), 0);
    assert_int_equal(t_pick("<message type='headline'/>", s + 3, 2, take), 0);
    assert_int_equal(t_pick("<presence/>", s + 3, 2, take), 1);
    assert_int_equal(t_pick("<message type='chat'/>", s, 0, take), 0);
    /* A lone priority 0 wins over negatives. */
    assert_int_equal(t_pick("<message type='chat'/>", s + 2, 3, take), 1);
    assert_true(take[0]);
}

/* ---- the session manager: binding (RFC 6120 7) --------------------------------------------- */

static xd_session_ref_t
t_holder(const char *full)
{
    xd_jid_t *j = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c(full), &j), 0);
    xd_session_info_t e = { 0 };
    assert_int_equal(xd_session_find(j, &e), 0);
    xd_session_ref_t ref = e.ref;
    xd_session_info_clear(&e);
    xd_jid_unref(j);
    return ref;
}

/* A requested resource, a generated one, and SM_REGISTER_CONNECTION. */
static void
test_router__bind(void **state)
{
    (void)state;
    assert_int_equal(xd_hook_add(XD_HOOK_SM_REGISTER_CONNECTION, NULL, 50, t_on_register, NULL),
                     0);
    char reply[1024];
    t_sess_t *a = t_bind(1, "u@a.example", "desk", reply, sizeof reply);
    assert_non_null(a->s);
    assert_string_equal(a->jid, "u@a.example/desk");
    assert_non_null(strstr(reply, "type='result'"));
    assert_non_null(strstr(reply, "<jid>u@a.example/desk</jid>"));
    t_sess_t *g = t_bind(0, "u@a.example", NULL, reply, sizeof reply);
    assert_non_null(g->s);
    assert_int_equal(strncmp(g->jid, "u@a.example/xmppd-", 18), 0);
    assert_int_equal(strlen(g->jid), 18 + 16);
    assert_int_equal(t_noted("register u@a.example/desk"), 1);
    assert_int_equal(t_noted("register u@a.example/xmppd-"), 1);
    assert_int_equal(t_holder("u@a.example/desk").worker, 1);
    assert_int_equal(xd_session_count("a.example"), 2);
    /* RFC 6120 7.7.2.1: a resource that does not prepare. */
    char big[1100];
    memset(big, 'r', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    t_sess_t *bad = t_bind(0, "u@a.example", big, reply, sizeof reply);
    assert_null(bad->s);
    assert_non_null(strstr(reply, "<bad-request"));
    /* One resource per stream: a second bind is not allowed. */
    t_reset();
    assert_int_equal(t_input(a, "<iq type='set' id='b2'><bind xmlns='" XD_NS_BIND "'/></iq>"), 0);
    assert_int_equal(t_got(a, "id='b2'", "<not-allowed"), 1);
    assert_int_equal(xd_session_count("a.example"), 2);
}

/* resource_conflict: replace (the default): the new session takes the
 * full JID and the old one is closed with <conflict/> on its own worker;
 * its end does not unbind the new one, and SM_REMOVE_CONNECTION says
 * "replaced". */
static void
test_router__bind_conflict_replace(void **state)
{
    (void)state;
    assert_int_equal(xd_hook_add(XD_HOOK_SM_REMOVE_CONNECTION, NULL, 50, t_on_remove, NULL), 0);
    t_sess_t *old = t_online(0, "u@a.example", "r", 0);
    t_sess_t *x = t_online(1, "x@a.example", "x", 0);
    t_sess_t *new = t_bind(1, "u@a.example", "r", NULL, 0);
    t_settle();
    assert_non_null(new->s);
    assert_int_equal(t_closed(old), XD_STREAM_CONFLICT); /* RFC 6120 7.7.2.2 */
    assert_int_equal(t_closed(new), -1);
    assert_null(old->s); /* it ended */
    /* hooks.def: the reason says it was replaced, though its stream closed. */
    assert_int_equal(t_noted("remove u@a.example/r reason=replaced"), 1);
    assert_int_equal(t_noted("remove u@a.example/r reason=closed"), 0);
    xd_session_ref_t h = t_holder("u@a.example/r");
    assert_int_equal(h.id, new->id);
    assert_int_equal(h.worker, 1);
    assert_int_equal(xd_session_count("a.example"), 2);
    t_route(1, "<message from='x@a.example/x' to='u@a.example/r' type='chat' id='m1'/>");
    assert_int_equal(t_got(new, "id='m1'"), 1);
    assert_int_equal(t_got(old, "id='m1'"), 0);
    t_expect_total(x, 0);
}

/* resource_conflict: refuse: the new bind fails with <conflict/>, the old
 * session stays. */
static void
test_router__bind_conflict_refuse(void **state)
{
    (void)state;
    t_sess_t *old = t_online(1, "u@r.example", "r", 0);
    char reply[1024];
    t_sess_t *new = t_bind(0, "u@r.example", "r", reply, sizeof reply);
    t_settle();
    assert_null(new->s);
    assert_non_null(strstr(reply, "type='error'"));
    assert_non_null(strstr(reply, "<conflict xmlns='" XD_NS_STANZAS "'"));
    assert_int_equal(t_closed(old), -1);
    assert_non_null(old->s);
    assert_int_equal(t_holder("u@r.example/r").id, old->id);
    assert_int_equal(xd_session_count("r.example"), 1);
}

/* resource_conflict: rename: the new session gets a generated resource,
 * the old one stays. */
static void
test_router__bind_conflict_rename(void **state)
{
    (void)state;
    t_sess_t *old = t_online(0, "u@n.example", "r", 0);
    char reply[1024];
    t_sess_t *new = t_bind(1, "u@n.example", "r", reply, sizeof reply);
    t_settle();
    assert_non_null(new->s);
    assert_int_equal(strncmp(new->jid, "u@n.example/xmppd-", 18), 0);
    assert_non_null(strstr(reply, new->jid));
    assert_int_equal(t_closed(old), -1);
    assert_int_equal(t_holder("u@n.example/r").id, old->id);
    assert_int_equal(xd_session_count("n.example"), 2);
}

/* ---- the session manager: the client's stanzas and the end --------------------------------- */

/* RFC 6120 8.1.2.1: 'from' is stamped, a foreign one refused; 10.3: a
 * message without 'to' is for the sender's bare JID. */
static void
test_router__input_from_and_to(void **state)
{
    (void)state;
    t_sess_t *a = t_online(0, "u@a.example", "a", 1);
    t_sess_t *b = t_online(1, "u@a.example", "b", 0);
    assert_int_equal(t_input(a, "<message from='v@a.example/v' to='u@a.example/b' id='f1'/>"),
                     XD_EINVAL);
    assert_int_equal(t_input(a, "<message from='u@a.example' to='u@a.example/b' id='f2'/>"), 0);
    assert_int_equal(t_input(a, "<message to='u@a.example/b' id='f3'/>"), 0);
    assert_int_equal(t_got(b, "id='f1'"), 0);
    assert_int_equal(t_got(b, "id='f2'", "from='u@a.example/a'"), 1);
    assert_int_equal(t_got(b, "id='f3'", "from='u@a.example/a'"), 1);
    assert_int_equal(t_input(b, "<message type='chat' id='f4'/>"), 0);
    assert_int_equal(t_got(a, "id='f4'", "to='u@a.example'"), 1); /* the highest priority */
}

/* The end of a session: unbound, USER_UNAVAILABLE when it was available,
 * unavailable presence to whom it sent directed presence (RFC 6121 4.6.3)
 * but not to whom it withdrew it from, SM_REMOVE_CONNECTION; afterwards
 * its full JID is no longer served. */
static void
test_router__session_end(void **state)
{
    (void)state;
    assert_int_equal(xd_hook_add(XD_HOOK_SM_REMOVE_CONNECTION, NULL, 50, t_on_remove, NULL), 0);
    assert_int_equal(xd_hook_add(XD_HOOK_USER_UNAVAILABLE, NULL, 50, t_on_unavailable, NULL), 0);
    t_sess_t *a = t_online(0, "a@a.example", "a", 0);
    t_sess_t *b = t_online(1, "b@a.example", "b", 0);
    t_sess_t *c = t_online(0, "c@a.example", "c", 0);
    t_sess_t *d = t_online(1, "d@a.example", "d", 0);
    assert_int_equal(t_input(a, "<presence to='b@a.example/b'><status>hi</status></presence>"), 0);
    assert_int_equal(t_input(a, "<presence to='c@a.example/c'/>"), 0);
    assert_int_equal(t_input(a, "<presence to='c@a.example/c' type='unavailable'/>"), 0);
    assert_int_equal(t_input(a, "<presence to='d@a.example/d' type='subscribe'/>"), 0);
    assert_int_equal(t_got(b, "from='a@a.example/a'", "<status>hi</status>"), 1);
    t_reset();
    t_end(a);
    assert_int_equal(t_got(b, "<presence from='a@a.example/a' to='b@a.example/b' "
                              "type='unavailable'/>"),
                     1);
    t_expect_total(b, 1);
    t_expect_total(c, 0); /* it withdrew its presence already */
    t_expect_total(d, 0); /* a subscription request is not directed presence */
    assert_int_equal(t_noted("unavailable a@a.example/a presence=none"), 1);
    assert_int_equal(t_noted("remove a@a.example/a reason=closed"), 1);
    xd_jid_t *j = NULL;
    assert_int_equal(xd_jid_parse(xd_str_c("a@a.example/a"), &j), 0);
    xd_session_info_t e = { 0 };
    assert_int_equal(xd_session_find(j, &e), XD_ENOTFOUND);
    xd_jid_unref(j);
    /* Its full JID now follows 8.5.3.2: chat to the bare JID, which has
     * nobody left, so the sender hears service-unavailable. */
    t_route(1, "<message from='b@a.example/b' to='a@a.example/a' type='chat' id='e1'/>");
    assert_int_equal(t_got(b, "id='e1'", "<service-unavailable"), 1);

    /* A session that never became available ends without USER_UNAVAILABLE. */
    t_reset();
    t_sess_t *q = t_bind(1, "q@a.example", "q", NULL, 0);
    t_end(q);
    assert_int_equal(t_noted("unavailable q@"), 0);
    assert_int_equal(t_noted("remove q@a.example/q reason=closed"), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_router__delivery_paths),
        T(test_router__send_or_gives_back),
        T(test_router__full_jid_present),
        T(test_router__full_jid_absent),
        T(test_router__bare_jid_by_priority),
        T(test_router__bare_jid_groupchat_refused),
        T(test_router__bare_jid_error_ignored),
        T(test_router__bare_jid_nobody_available),
        T(test_router__offline_hook_takes_or_not),
        T(test_router__bare_jid_presence),
        T(test_router__iq_to_bare_jid_dispatched),
        T(test_router__session_gone_meanwhile),
        T(test_router__filter_packet_drops_and_replaces),
        T(test_router__carbons_received),
        T(test_router__carbons_sent),
        T(test_router__session_pick),
        T(test_router__bind),
        T(test_router__bind_conflict_replace),
        T(test_router__bind_conflict_refuse),
        T(test_router__bind_conflict_rename),
        T(test_router__input_from_and_to),
        T(test_router__session_end),
#undef T
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
