/*
 * c2s_sm.c — stream management on client streams (XEP-0198, urn:xmpp:sm:3):
 * acknowledgements, and resumption of a session whose connection broke.
 *
 *   bound ─► <enable [resume max]/> ─► <enabled [id resume max location]/>
 *   client stanza handled ─► h_in++           <r/> ─► <a h='h_in'/>
 *   stanza delivered ─► queued (smq.h)        every sm_ack_request_every
 *                                             unacknowledged, or
 *                                             sm_ack_request_interval after
 *                                             the first not asked for: <r/>
 *   <a h/> ─► the acknowledged leave the queue; more than was sent:
 *             undefined-condition with <handled-count-too-high/> (XEP-0198 4)
 *   more than sm_max_unacked waiting: policy-violation
 *
 * The end of a stream:
 *   </stream> from the client, or a stream error of ours other than
 *   connection-timeout, or no resumption enabled ─► the session ends first,
 *   then each unacknowledged message is routed again to its 'to' (the
 *   account's other sessions, else offline storage: RFC 6121 8.5.3.2.1), an
 *   unacknowledged IQ request gets service-unavailable, presence and errors
 *   are dropped;
 *   the connection broke (or timed out) with resumption enabled ─► the
 *   session is *parked*: it stays bound and available, reached through the
 *   same handle (xd_c2s_ops with the broken connection's id, which this
 *   file answers for now), and what is delivered to it joins the queue.
 *   After the resume timeout it ends as above (unavailable is broadcast
 *   then, not at the break).
 *
 * Resumption (XEP-0198 5): <resume previd h/> on a new authenticated,
 * unbound stream of the same account, on any worker:
 *
 *   new stream (worker B)                     session's owner (worker A)
 *   resume table: previd ─► (A, id, account)
 *   account differs, or no entry: <failed><item-not-found/>
 *   block input ─── take(previd, id, B, conn, h) ─►
 *                                             parked (or still attached:
 *                                             parked now, its connection
 *                                             closed with conflict); CSI
 *                                             flushed into the queue; off
 *                                             A's lists; a forwarding entry
 *                                             (id ─► B/conn) for stanzas
 *                                             still on their way to A
 *                 ◄── give(session, queue) ───
 *   adopt (table entry switched to B/conn), drop what h acknowledges,
 *   <resumed previd h/>, resend the rest in order, unblock input
 *
 * On one worker the same steps run without the inbox.  When the new stream
 * is gone by the time the session arrives, the session is parked again
 * where it arrived, under the same resume id.  Resume ids are 128 random
 * bits, kept with the account they belong to.
 *
 * Order (RFC 6120 10.1, xmppd/input.h): <r/> is an element of the stream
 * like a stanza, handled after the work of the stanzas before it is done,
 * so <a h/> never counts a stanza whose effects (an offline store) are not
 * durable.  Owner worker only, except the resume table (its mutex).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "stream/c2s_int.h"
#include "core/worker.h"
#include "router/session.h"
#include "stream/smq.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"

#define SM_ID_LEN 32            /* resume id: 128 bits in hex */
#define SM_MOVED_KEEP_MS 60000  /* a moved session's forwarding entry lives this long */
#define SM_MAX_BYTES ((size_t)4 << 20) /* unacknowledged bytes when the listener sets none */

struct c2s_sm {
    xd_smq_t q;             /* sent (or queued while parked), not yet acknowledged */
    uint32_t h_in;          /* client stanzas handled */
    unsigned unrequested;   /* stanzas sent since our last <r/> */
    unsigned request_every; /* sm_ack_request_every (0: never) */
    size_t max_unacked;     /* sm_max_unacked */
    size_t max_bytes;       /* ... and their bytes: the listener's max_queue */
    uint64_t interval_ms;   /* sm_ack_request_interval (0: never) */
    uint64_t resume_ms;     /* how long a broken stream's session is kept (0: not resumable) */
    xd_timer_t *timer;      /* runs while something unacknowledged was not asked for */
    bool timer_on;          /* ... and is armed */
    bool closing;           /* over sm_max_unacked: the close is posted */
    char resume_id[SM_ID_LEN + 1]; /* "" when not resumable */
};

/* More waits unacknowledged than sm_max_unacked stanzas or max_queue bytes. */
static bool
c2s_sm_over(const c2s_sm_t *sm)
{
    return sm->q.len > sm->max_unacked || sm->q.bytes > sm->max_bytes;
}

/* ---- the resume table (any thread) ------------------------------------------------------------ */

/* Where a resumable session is: its owner and its transport id; or, once
 * it ended, the count of the client's stanzas it had handled, kept for a
 * while so that a late <resume/> learns it (XEP-0198 5: <failed h/>) and
 * the client knows which of its last stanzas to send again. */
typedef struct sm_where {
    unsigned worker;
    uint64_t id;
    char *account;     /* the bare JID it belongs to */
    bool ended;        /* the session is gone; h and ended_ms say when and how far */
    uint32_t h;
    uint64_t ended_ms;
} sm_where_t;

#define SM_ENDED_MAX 4096        /* ended sessions remembered (oldest forgotten first) */
#define SM_ENDED_KEEP_MS 600000  /* ... for at most this long */

static uv_once_t sm_once = UV_ONCE_INIT;
static uv_mutex_t sm_lock;
static xd_map_t sm_table;                           /* resume id ─► sm_where_t */
static char sm_ended[SM_ENDED_MAX][SM_ID_LEN + 1];  /* ring of ended ids, oldest at sm_ended_at */
static size_t sm_ended_at, sm_ended_n;

static void
sm_table_init(void)
{
    uv_mutex_init(&sm_lock);
}

static void
sm_where_free(void *v)
{
    sm_where_t *w = v;
    xd_free(w->account);
    xd_free(w);
}

static uint64_t
sm_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* Enters or moves resume id `rid` to (worker, id). */
static void
sm_table_put(const char *rid, unsigned worker, uint64_t id, const xd_jid_t *account)
{
    uv_once(&sm_once, sm_table_init);
    sm_where_t *w = xd_new(sm_where_t);
    w->worker = worker;
    w->id = id;
    xd_str_t bare = xd_jid_bare_str(account);
    w->account = xd_strndup(bare.p, bare.len);
    uv_mutex_lock(&sm_lock);
    sm_where_t *old = xd_map_put(&sm_table, xd_str_c(rid), w);
    uv_mutex_unlock(&sm_lock);
    if (old)
        sm_where_free(old);
}

/* Session id of `rid` ended having handled h of the client's stanzas. */
static void
sm_table_end(const char *rid, uint64_t id, uint32_t h)
{
    if (!rid[0])
        return;
    uv_once(&sm_once, sm_table_init);
    sm_where_t *gone = NULL;
    uv_mutex_lock(&sm_lock);
    sm_where_t *cur = xd_map_get(&sm_table, xd_str_c(rid));
    if (cur && !cur->ended && cur->id == id) {
        cur->ended = true;
        cur->h = h;
        cur->ended_ms = sm_now_ms();
        if (sm_ended_n == SM_ENDED_MAX) {
            /* The oldest is forgotten. */
            gone = xd_map_del(&sm_table, xd_str_c(sm_ended[sm_ended_at]));
            sm_ended_at = (sm_ended_at + 1) % SM_ENDED_MAX;
            sm_ended_n--;
        }
        memcpy(sm_ended[(sm_ended_at + sm_ended_n) % SM_ENDED_MAX], rid, SM_ID_LEN + 1);
        sm_ended_n++;
    }
    uv_mutex_unlock(&sm_lock);
    if (gone)
        sm_where_free(gone);
}

/* Where `rid` is, if it belongs to `account`: 0; XD_ENOTFOUND (also for
 * another account's id: nothing tells the two apart); XD_ECLOSED when the
 * session ended, with *h the count of the client's stanzas it handled. */
static int
sm_table_get(const char *rid, const xd_jid_t *account, unsigned *worker, uint64_t *id,
             uint32_t *h)
{
    uv_once(&sm_once, sm_table_init);
    xd_str_t bare = xd_jid_bare_str(account);
    int rc = XD_ENOTFOUND;
    uv_mutex_lock(&sm_lock);
    sm_where_t *w = xd_map_get(&sm_table, xd_str_c(rid));
    if (w && strlen(w->account) == bare.len && !memcmp(w->account, bare.p, bare.len)) {
        if (!w->ended) {
            *worker = w->worker;
            *id = w->id;
            rc = 0;
        } else if (sm_now_ms() - w->ended_ms < SM_ENDED_KEEP_MS) {
            *h = w->h;
            rc = XD_ECLOSED;
        }
    }
    uv_mutex_unlock(&sm_lock);
    return rc;
}

/* ---- parked sessions (owner worker) ----------------------------------------------------------- */

/* A session whose connection broke, kept for resumption; or, once it moved
 * (session NULL), where stanzas still arriving for its old id go. */
typedef struct sm_parked {
    uint64_t id;              /* the transport id the session is reached by */
    xd_session_t *session;    /* the session, or NULL once moved */
    c2s_sm_t *sm;             /* its stream management state */
    xd_timer_t *timer;        /* the resume timeout; once moved, the entry's expiry */
    xd_session_ref_t moved;   /* where it went (session NULL) */
    xd_log_t log;             /* the session's log context while parked */
    uint64_t last_input_ms;   /* when its client last sent anything */
    bool secure;              /* its connection was encrypted */
    bool ending;              /* an end is posted (over sm_max_unacked) */
} sm_parked_t;

static _Thread_local xd_map_t sm_parked; /* decimal id ─► sm_parked_t, this worker's */

static sm_parked_t *
parked_get(uint64_t id)
{
    char key[24];
    snprintf(key, sizeof key, "%llu", (unsigned long long)id);
    return xd_map_get(&sm_parked, xd_str_c(key));
}

static void
parked_del(sm_parked_t *p)
{
    char key[24];
    snprintf(key, sizeof key, "%llu", (unsigned long long)p->id);
    xd_map_del(&sm_parked, xd_str_c(key));
}

static void
parked_put(sm_parked_t *p)
{
    char key[24];
    snprintf(key, sizeof key, "%llu", (unsigned long long)p->id);
    xd_map_put(&sm_parked, xd_str_c(key), p);
}

static void sm_free_rerouting(c2s_sm_t *sm, const xd_log_t *log);

/* Ends session s, which stream management holds as transport id `id`
 * with state sm (parked, or between workers): the resume id remembers h,
 * the session ends, then what it had not had acknowledged is routed
 * again and sm freed. */
static void
sm_session_end(xd_session_t *s, c2s_sm_t *sm, uint64_t id, const char *reason,
               const xd_log_t *log)
{
    sm_table_end(sm->resume_id, id, sm->h_in);
    xd_session_end(s, reason);
    sm_free_rerouting(sm, log);
}

/* Ends a parked session (or drops a forwarding entry). */
static void
parked_end(sm_parked_t *p, const char *reason)
{
    parked_del(p);
    if (p->session) {
        XD_LOG(&p->log, XD_INFO, "stream management: parked session ends", "reason=%s queued=%zu",
               reason, p->sm->q.len);
        sm_session_end(p->session, p->sm, p->id, reason, &p->log);
    }
    xd_timer_free(p->timer);
    xd_free(p);
}

static void
parked_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    parked_end(arg, "timeout");
}

typedef struct sm_end_msg {
    uint64_t id;
} sm_end_msg_t;

static void
parked_end_msg(xd_worker_t *w, void *arg)
{
    (void)w;
    sm_end_msg_t *m = arg;
    sm_parked_t *p = parked_get(m->id);
    if (p && p->session)
        parked_end(p, "overflow");
    xd_free(m);
}

/* Parks session s (with sm) as transport id `id` on the calling worker,
 * for the resume timeout. */
static void
parked_new(xd_worker_t *w, uint64_t id, xd_session_t *s, c2s_sm_t *sm, const xd_log_t *log,
           uint64_t last_input_ms, bool secure)
{
    sm_parked_t *p = xd_new(sm_parked_t);
    p->id = id;
    p->session = s;
    p->sm = sm;
    p->log = *log;
    p->last_input_ms = last_input_ms;
    p->secure = secure;
    if (sm->timer) {
        xd_timer_free(sm->timer);
        sm->timer = NULL;
        sm->timer_on = false;
    }
    sm->closing = false;
    p->timer = xd_timer_new(w, parked_fired, p);
    xd_timer_start(p->timer, sm->resume_ms, 0);
    parked_put(p);
    xd_session_detach(s, &p->log);
    XD_LOG(&p->log, XD_INFO, "stream management: session parked", "resume_ms=%llu queued=%zu",
           (unsigned long long)sm->resume_ms, sm->q.len);
}

/* ---- transport calls for parked sessions (c2s.c asks when no connection has the id) ---------- */

int
c2s_sm_parked_deliver(uint64_t id, const xd_stanza_t *st)
{
    sm_parked_t *p = parked_get(id);
    if (!p)
        return XD_ENOTFOUND;
    if (!p->session) {
        xd_session_send(&p->moved, st); /* it was on its way here when the session moved */
        return 0;
    }
    /* Queued also once the end is posted: it goes the way of the rest
     * when the end runs (the bound is passed by what arrives until then). */
    xd_smq_push(&p->sm->q, st);
    if (!p->ending && c2s_sm_over(p->sm)) {
        /* Not here: the caller is delivering. */
        p->ending = true;
        sm_end_msg_t *m = xd_new(sm_end_msg_t);
        m->id = id;
        if (xd_worker_post(xd_worker_self(), parked_end_msg, m) != 0)
            xd_free(m);
    }
    return 0;
}

bool
c2s_sm_parked_close(uint64_t id, xd_stream_cond cond, const char *text)
{
    sm_parked_t *p = parked_get(id);
    if (!p)
        return false;
    if (!p->session) {
        xd_session_close(&p->moved, cond, text);
        return true;
    }
    /* Replaced by a new login of the resource, or kicked: the session
     * ends now, what waited goes the usual way. */
    parked_end(p, cond == XD_STREAM_CONFLICT ? "replaced" : "kicked");
    return true;
}

bool
c2s_sm_parked_info(uint64_t id, uint64_t now_ms, xd_session_stats_t *out)
{
    sm_parked_t *p = parked_get(id);
    if (!p || !p->session)
        return false;
    out->idle_ms = now_ms - p->last_input_ms;
    out->secure = p->secure;
    return true;
}

xd_session_t *
c2s_sm_parked_session(uint64_t id)
{
    sm_parked_t *p = parked_get(id);
    return p ? p->session : NULL;
}

void
xd_c2s_stop_worker(xd_worker_t *w)
{
    (void)w;
    /* Every parked session ends: the server stops (graceful stop waits for
     * the offline stores this starts). */
    size_t n = xd_map_count(&sm_parked), k = 0;
    sm_parked_t **all = xd_malloc((n ? n : 1) * sizeof *all);
    for (size_t i = 0; i < sm_parked.cap; i++)
        if (sm_parked.slots[i].key)
            all[k++] = sm_parked.slots[i].val;
    for (size_t i = 0; i < k; i++)
        parked_end(all[i], "shutdown");
    xd_free(all);
    xd_map_free(&sm_parked, NULL);
}

/* ---- acknowledgements --------------------------------------------------------------------------- */

bool
c2s_sm_offered(const xd_conn_t *c)
{
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = cfg ? xd_config_host(cfg, c->host) : NULL;
    bool on = hc && hc->stream_management;
    xd_config_unref(cfg);
    return on;
}

/* Asks the client for an acknowledgement. */
static void
c2s_sm_request(xd_conn_t *c, c2s_sm_t *sm)
{
    sm->unrequested = 0;
    if (sm->timer_on) {
        xd_timer_stop(sm->timer);
        sm->timer_on = false;
    }
    c2s_write_str(c, "<r xmlns='" XD_NS_SM "'/>");
}

/* sm_ack_request_interval passed with stanzas sent and not asked for. */
static void
c2s_sm_timer_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_conn_t *c = arg;
    c2s_sm_t *sm = c2s_of(c) ? c2s_of(c)->sm : NULL;
    if (!sm)
        return;
    sm->timer_on = false;
    if (sm->unrequested && c->state == C2S_OPEN)
        c2s_sm_request(c, sm);
}

/* The host's settings into sm (at enable, and again at resume: the new
 * stream's host configuration is the one in force). */
static void
c2s_sm_configure(xd_conn_t *c, c2s_sm_t *sm)
{
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    sm->request_every = hc ? (unsigned)hc->sm_ack_request_every : 5;
    sm->max_unacked = hc ? (size_t)hc->sm_max_unacked : 5000;
    /* What the server holds for a client that does not acknowledge is
     * bounded like what it queues for one that does not read. */
    sm->max_bytes = c->listener->max_queue_bytes ? c->listener->max_queue_bytes : SM_MAX_BYTES;
    sm->interval_ms = hc ? hc->sm_ack_request_interval_ms : 0;
    xd_config_unref(cfg);
    if (sm->interval_ms && !sm->timer)
        sm->timer = xd_timer_new(c->ws->worker, c2s_sm_timer_fired, c);
}

static bool
c2s_attr_true(const char *v)
{
    return v && (!strcmp(v, "true") || !strcmp(v, "1"));
}

/* Writes <enabled/> into buf (XEP-0198 3) for enable element el. */
static int
c2s_sm_enable_to(xd_conn_t *c, const xd_el_t *el, char *buf, size_t cap)
{
    c2s_t *s = c2s_of(c);
    c2s_sm_t *sm = xd_new(c2s_sm_t);
    xd_smq_init(&sm->q, 0);
    c2s_sm_configure(c, sm);
    s->sm = sm;
    if (!c2s_attr_true(xd_el_attr(el, "resume")))
        return snprintf(buf, cap, "<enabled xmlns='" XD_NS_SM "'/>");

    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    uint64_t timeout = hc ? hc->sm_resume_timeout_ms : 0;
    uint64_t max = hc && hc->sm_max_resume_timeout_ms ? hc->sm_max_resume_timeout_ms : timeout;
    char location[300] = "";
    if (hc && hc->sm_resume_location && hc->sm_resume_location[0] &&
        !strpbrk(hc->sm_resume_location, "'<&\""))
        snprintf(location, sizeof location, " location='%s'", hc->sm_resume_location);
    xd_config_unref(cfg);
    /* XEP-0198 5: the client's 'max' is a preference in seconds. */
    const char *mx = xd_el_attr(el, "max");
    char *end = NULL;
    unsigned long long want = mx ? strtoull(mx, &end, 10) : 0;
    if (timeout && mx && end != mx && !*end && want > 0)
        timeout = want * 1000 < max ? want * 1000 : max;
    if (!timeout) {
        /* Resumption off for this host: 'resume' is left out of the answer,
         * as XEP-0198 3 allows. */
        return snprintf(buf, cap, "<enabled xmlns='" XD_NS_SM "'/>");
    }
    unsigned char rnd[SM_ID_LEN / 2];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return snprintf(buf, cap, "<enabled xmlns='" XD_NS_SM "'/>");
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(sm->resume_id + 2 * i, 3, "%02x", rnd[i]);
    sm->resume_ms = timeout;
    sm_table_put(sm->resume_id, xd_worker_index(c->ws->worker), c->id, s->jid);
    return snprintf(buf, cap,
                    "<enabled xmlns='" XD_NS_SM "' id='%s' resume='true' max='%llu'%s/>",
                    sm->resume_id, (unsigned long long)((timeout + 999) / 1000), location);
}

bool
c2s_sm_start(xd_conn_t *c, const xd_el_t *el, char *buf, size_t cap)
{
    c2s_t *s = c2s_of(c);
    if (!s->session || s->sm || !c2s_sm_offered(c)) {
        /* XEP-0198 3: before binding, twice, or not offered. */
        snprintf(buf, cap, "<failed xmlns='" XD_NS_SM "'><unexpected-request xmlns='"
                 XD_NS_STANZAS "'/></failed>");
        return false;
    }
    c2s_sm_enable_to(c, el, buf, cap);
    XD_LOG(&c->log, XD_INFO, "stream management enabled", "resume=%s",
           s->sm->resume_id[0] ? "yes" : "no");
    return true;
}

static void
c2s_sm_enable(xd_conn_t *c, const xd_el_t *el)
{
    char buf[512];
    c2s_sm_start(c, el, buf, sizeof buf);
    c2s_write_str(c, buf);
}

/* h of an <a/> or <resume/>: 0, or -1 when it is not a 32-bit count. */
static int
c2s_sm_h(const char *hs, uint32_t *h)
{
    char *end = NULL;
    unsigned long long v = hs ? strtoull(hs, &end, 10) : 0;
    if (!hs || end == hs || *end || *hs == '-' || v > UINT32_MAX)
        return -1;
    *h = (uint32_t)v;
    return 0;
}

static void
c2s_sm_ack(xd_conn_t *c, const xd_el_t *el)
{
    c2s_sm_t *sm = c2s_of(c)->sm;
    uint32_t h;
    if (c2s_sm_h(xd_el_attr(el, "h"), &h) != 0) {
        c2s_close(c, XD_STREAM_INVALID_XML, "<a/> needs 'h', a 32-bit count");
        return;
    }
    if (xd_smq_ack(&sm->q, h) != 0) {
        /* XEP-0198 4: the peer acknowledged more than we sent. */
        char text[160];
        snprintf(text, sizeof text, "h=%u acknowledges more than the %u stanzas sent", h,
                 (unsigned)xd_smq_sent(&sm->q));
        XD_LOG(&c->log, XD_INFO, "stream management: handled count too high", "h=%u sent=%u",
               h, (unsigned)xd_smq_sent(&sm->q));
        c2s_close(c, XD_STREAM_UNDEFINED_CONDITION, text);
        return;
    }
}

/* ---- resumption ----------------------------------------------------------------------------------- */

/* What travels between the new stream's worker and the session's. */
typedef struct sm_move {
    char previd[SM_ID_LEN + 1]; /* the resume id */
    uint64_t old_id;            /* the session's transport id */
    unsigned to_worker;         /* the new stream's worker */
    uint64_t to_conn;           /* ... and connection */
    uint32_t h;                 /* what the client says it received */
    xd_session_t *session;      /* give: the session, or NULL (not found) */
    c2s_sm_t *sm;               /* give: its state */
    uint64_t last_input_ms;     /* give: when the old client last spoke */
    bool secure;                /* give: the old connection was encrypted */
    xd_log_t log;               /* give: its log context */
} sm_move_t;

static void sm_give_here(xd_worker_t *w, sm_move_t *m);

static void
sm_give_msg(xd_worker_t *w, void *arg)
{
    sm_give_here(w, arg);
}

/* Parks the session of live connection c now (a resume came for it before
 * its broken connection was noticed). */
static void c2s_sm_park(xd_conn_t *c);

/* On the session's owner: takes it out for m->to_conn and gives it there. */
static void
sm_take_here(xd_worker_t *w, sm_move_t *m)
{
    xd_conn_t *old = c2s_conn_find(w, m->old_id);
    if (old && old->role == &xd_c2s_role && c2s_of(old) && c2s_of(old)->sm && c2s_of(old)->session &&
        !strcmp(c2s_of(old)->sm->resume_id, m->previd)) {
        /* The client came back before we saw its old connection break
         * (XEP-0198 5: the old one is the one to end). */
        c2s_sm_park(old);
        c2s_close(old, XD_STREAM_CONFLICT, "the session was resumed on another stream");
    }
    sm_parked_t *p = parked_get(m->old_id);
    if (p && p->session && !p->ending && !strcmp(p->sm->resume_id, m->previd)) {
        /* What CSI held joins the queue (XEP-0352 5: a resumed stream is
         * active), then the session leaves this worker. */
        xd_session_csi(p->session, true);
        m->session = p->session;
        m->sm = p->sm;
        m->last_input_ms = p->last_input_ms;
        m->secure = p->secure;
        m->log = p->log;
        xd_session_release(p->session);
        /* Stanzas routed before the table entry switches still come here:
         * forwarded for a while. */
        p->session = NULL;
        p->sm = NULL;
        p->moved = (xd_session_ref_t){ .ops = xd_c2s_session_ops(), .worker = m->to_worker,
                                       .id = m->to_conn };
        xd_timer_start(p->timer, SM_MOVED_KEEP_MS, 0);
        XD_LOG(&m->log, XD_INFO, "stream management: session handed over",
               "from_worker=%u to_worker=%u", xd_worker_index(w), m->to_worker);
    }
    if (m->to_worker == xd_worker_index(w)) {
        sm_give_here(w, m);
        return;
    }
    xd_worker_t *to = xd_worker_get(m->to_worker);
    if (!to || xd_worker_post(to, sm_give_msg, m) != 0) {
        /* The server stops: the session ends here. */
        if (m->session) {
            xd_session_ref_t ref = { .ops = xd_c2s_session_ops(), .worker = xd_worker_index(w),
                                     .id = m->old_id };
            xd_session_adopt(m->session, &ref, NULL, &m->log);
            sm_session_end(m->session, m->sm, m->old_id, "shutdown", &m->log);
        }
        xd_free(m);
    }
}

static void
sm_take_msg(xd_worker_t *w, void *arg)
{
    sm_take_here(w, arg);
}

/* The answer to a resume: written, or, for one inline in SASL2's
 * <authenticate/>, handed to c2s_sasl2.c for its <success/>.  A resumed
 * session's queue is sent again right after the answer. */
static void
c2s_sm_answer(xd_conn_t *c, const char *xml, bool resumed)
{
    if (c2s_sasl2_resume_answer(c, xml, resumed))
        return; /* SASL2 writes it, then calls c2s_sm_resend */
    c2s_write_str(c, xml);
    if (resumed)
        c2s_sm_resend(c);
}

/* The session could not be resumed (gone, or the account's resource was
 * taken meanwhile): the client binds afresh. */
static void
c2s_sm_resume_failed(xd_conn_t *c, const char *cond, const char *why)
{
    char buf[200];
    XD_LOG(&c->log, XD_INFO, "stream management: resume failed", "reason=%s", why);
    snprintf(buf, sizeof buf, "<failed xmlns='" XD_NS_SM "'><%s xmlns='" XD_NS_STANZAS
             "'/></failed>", cond);
    c2s_sm_answer(c, buf, false);
}

/* The session is this stream's again: what the client has is dropped,
 * <resumed/>, then the rest again, in order (XEP-0198 5). */
static void
c2s_sm_resumed(xd_conn_t *c, uint32_t h)
{
    c2s_t *s = c2s_of(c);
    c2s_sm_t *sm = s->sm;
    c2s_sm_configure(c, sm);
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s jid=%s", (unsigned long long)c->id, c->ip,
               xd_jid_full_str(s->session->jid).p);
    char buf[320];
    if (xd_smq_ack(&sm->q, h) != 0) {
        /* The client says it got more than was ever sent. */
        snprintf(buf, sizeof buf,
                 "<failed xmlns='" XD_NS_SM "' h='%u'><undefined-condition xmlns='" XD_NS_STANZAS
                 "'/></failed>",
                 (unsigned)sm->h_in);
        c2s_write_str(c, buf);
        XD_LOG(&c->log, XD_INFO, "stream management: handled count too high", "h=%u sent=%u",
               h, (unsigned)xd_smq_sent(&sm->q));
        c2s_close(c, XD_STREAM_UNDEFINED_CONDITION, "h acknowledges more than was sent");
        return;
    }
    snprintf(buf, sizeof buf, "<resumed xmlns='" XD_NS_SM "' previd='%s' h='%u'/>",
             sm->resume_id, (unsigned)sm->h_in);
    c2s_established(c);
    XD_LOG(&c->log, XD_NOTICE, "session resumed", "worker=%u resent=%zu h=%u",
           xd_worker_index(c->ws->worker), sm->q.len, (unsigned)h);
    c2s_sm_answer(c, buf, true);
}

void
c2s_sm_resend(xd_conn_t *c)
{
    c2s_sm_t *sm = c2s_of(c)->sm;
    if (!sm || c->state != C2S_OPEN)
        return;
    size_t n = sm->q.len;
    for (size_t i = 0; i < n; i++)
        c2s_send_stanza(c, xd_smq_at(&sm->q, i));
    if (n) {
        sm->unrequested = (unsigned)n;
        c2s_sm_request(c, sm);
    }
}

/* On the new stream's worker: the session (or its absence) arrived. */
static void
sm_give_here(xd_worker_t *w, sm_move_t *m)
{
    xd_conn_t *c = c2s_conn_find(w, m->to_conn);
    c2s_t *s = c && c->role == &xd_c2s_role ? c2s_of(c) : NULL;
    bool usable = s && c->state == C2S_OPEN && s->authenticated && !s->session && !s->sm;
    xd_session_t *sess = m->session;
    c2s_sm_t *sm = m->sm;
    unsigned wi = xd_worker_index(w);
    if (!sess) {
        if (usable)
            c2s_sm_resume_failed(c, "item-not-found", "no such session");
    } else if (!usable) {
        /* The new stream went away meanwhile: the session waits here for
         * the next resume, under the same id. */
        xd_session_ref_t ref = { .ops = xd_c2s_session_ops(), .worker = wi, .id = m->to_conn };
        if (xd_session_adopt(sess, &ref, NULL, &m->log) != 0) {
            sm_session_end(sess, sm, m->old_id, "replaced", &m->log);
        } else {
            sm_table_put(sm->resume_id, wi, m->to_conn, sess->jid);
            parked_new(w, m->to_conn, sess, sm, &m->log, m->last_input_ms, m->secure);
        }
    } else {
        xd_session_ref_t ref = { .ops = xd_c2s_session_ops(), .worker = wi, .id = c->id };
        sm_table_put(sm->resume_id, wi, c->id, sess->jid);
        s->session = sess;
        s->sm = sm;
        sm->closing = false;
        if (xd_session_adopt(sess, &ref, c->ip, &c->log) != 0) {
            /* A new login took the resource while the session was parked:
             * it ends, and what waited goes to the new holder. */
            c2s_sm_resume_failed(c, "item-not-found", "replaced");
            xd_session_end(sess, "replaced");
            s->session = NULL;
            c2s_sm_end(c);
        } else {
            c2s_sm_resumed(c, m->h);
        }
    }
    if (s && c->role_blocked)
        c2s_unblock(c); /* last: it may read and handle what the client sent next */
    xd_free(m);
}

bool
c2s_sm_resume(xd_conn_t *c, const char *previd, const char *hs)
{
    c2s_t *s = c2s_of(c);
    if (s->session || s->sm || !c2s_sm_offered(c)) {
        c2s_sm_resume_failed(c, "unexpected-request", "not now");
        return false;
    }
    uint32_t h;
    if (!previd || c2s_sm_h(hs, &h) != 0) {
        c2s_sm_resume_failed(c, "bad-request", "malformed");
        return false;
    }
    unsigned worker = 0;
    uint64_t id = 0;
    uint32_t ended_h = 0;
    int rc = strlen(previd) == SM_ID_LEN ? sm_table_get(previd, s->jid, &worker, &id, &ended_h)
                                         : XD_ENOTFOUND;
    if (rc == XD_ECLOSED) {
        /* Gone, but the client learns how far it got (XEP-0198 5). */
        char buf[200];
        XD_LOG(&c->log, XD_INFO, "stream management: resume failed", "reason=ended h=%u",
               ended_h);
        snprintf(buf, sizeof buf, "<failed xmlns='" XD_NS_SM "' h='%u'><item-not-found xmlns='"
                 XD_NS_STANZAS "'/></failed>", (unsigned)ended_h);
        c2s_sm_answer(c, buf, false);
        return false;
    }
    if (rc != 0) {
        c2s_sm_resume_failed(c, "item-not-found", "unknown id");
        return false;
    }
    sm_move_t *m = xd_new(sm_move_t);
    memcpy(m->previd, previd, SM_ID_LEN + 1);
    m->old_id = id;
    m->to_worker = xd_worker_index(c->ws->worker);
    m->to_conn = c->id;
    m->h = h;
    if (worker == m->to_worker) {
        sm_take_here(c->ws->worker, m);
        return false;
    }
    xd_worker_t *w = xd_worker_get(worker);
    if (!w || xd_worker_post(w, sm_take_msg, m) != 0) {
        xd_free(m);
        c2s_sm_resume_failed(c, "item-not-found", "stopping");
        return false;
    }
    /* Nothing more is read until the session (or its absence) is here. */
    c2s_block(c);
    return true;
}

/* ---- elements ------------------------------------------------------------------------------------- */

bool
c2s_sm_element(xd_conn_t *c, const xd_el_t *el)
{
    const char *ns = xd_el_ns(el);
    if (!ns || strcmp(ns, XD_NS_SM) != 0)
        return false;
    c2s_t *s = c2s_of(c);
    const char *name = xd_el_name(el);
    if (!strcmp(name, "enable")) {
        c2s_sm_enable(c, el);
    } else if (!strcmp(name, "resume")) {
        c2s_sm_resume(c, xd_el_attr(el, "previd"), xd_el_attr(el, "h"));
    } else if (!s->sm) {
        /* <r/> and <a/> only once enabled (XEP-0198 4). */
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, "stream management is not enabled");
    } else if (!strcmp(name, "r")) {
        char buf[96];
        snprintf(buf, sizeof buf, "<a xmlns='" XD_NS_SM "' h='%u'/>", (unsigned)s->sm->h_in);
        c2s_write_str(c, buf);
    } else if (!strcmp(name, "a")) {
        c2s_sm_ack(c, el);
    } else {
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
    }
    return true;
}

void
c2s_sm_handled(xd_conn_t *c)
{
    c2s_sm_t *sm = c2s_of(c)->sm;
    if (sm)
        sm->h_in++;
}

void
c2s_sm_sent(xd_conn_t *c, const xd_stanza_t *st)
{
    c2s_sm_t *sm = c2s_of(c)->sm;
    if (!sm)
        return;
    xd_smq_push(&sm->q, st);
    if (c2s_sm_over(sm)) {
        if (!sm->closing) {
            /* Not here: the caller is delivering (a CSI flush may still be
             * walking this session); the close ends the session. */
            sm->closing = true;
            XD_LOG(&c->log, XD_INFO, "stream management: too many unacknowledged",
                   "count=%zu bytes=%zu", sm->q.len, sm->q.bytes);
            c2s_post_close(xd_worker_index(c->ws->worker), c->id, XD_STREAM_POLICY_VIOLATION,
                           "too many unacknowledged stanzas");
        }
        return;
    }
    sm->unrequested++;
    if (sm->request_every && sm->unrequested >= sm->request_every) {
        c2s_sm_request(c, sm);
    } else if (sm->timer && !sm->timer_on) {
        /* Asked for at the latest this long after the first one since. */
        xd_timer_start(sm->timer, sm->interval_ms, 0);
        sm->timer_on = true;
    }
}

/* ---- the end of a stream -------------------------------------------------------------------------- */

/* What becomes of one unacknowledged stanza when the session is gone. */
static void
c2s_sm_reroute(xd_stanza_t *st)
{
    const xd_el_t *el = xd_stanza_root(st);
    const char *type = xd_el_attr(el, "type");
    switch (xd_stanza_kind_of(el)) {
    case XD_STANZA_MESSAGE:
        if (type && (!strcmp(type, "error") || !strcmp(type, "groupchat") ||
                     !strcmp(type, "headline"))) {
            xd_stanza_unref(st);
            return;
        }
        /* To the full JID that is gone now: the account's other sessions or
         * offline storage take it (RFC 6121 8.5.3.2.1). */
        xd_route_take(st);
        return;
    case XD_STANZA_IQ:
        if (xd_iq_is_request(el))
            xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        xd_stanza_unref(st);
        return;
    default:
        xd_stanza_unref(st); /* presence: the contact's next one supersedes it */
        return;
    }
}

/* Frees sm after routing again what it had not seen acknowledged (the
 * session has ended). */
static void
sm_free_rerouting(c2s_sm_t *sm, const xd_log_t *log)
{
    if (sm->q.len)
        XD_LOG(log, XD_INFO, "stream management: unacknowledged stanzas routed again",
               "count=%zu", sm->q.len);
    xd_stanza_t *st;
    /* Routed as the server's own, from no stream: whatever stream's input
     * is being handled now (one whose close ended this session) is not
     * what these stanzas came from, and must not be held or billed. */
    uint64_t prev = xd_input_enter(0);
    while ((st = xd_smq_take(&sm->q)) != NULL)
        c2s_sm_reroute(st);
    xd_input_leave(prev);
    xd_smq_clear(&sm->q);
    if (sm->timer)
        xd_timer_free(sm->timer);
    xd_free(sm);
}

static void
c2s_sm_park(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    parked_new(c->ws->worker, c->id, s->session, s->sm, &c->log, c->last_input_ms,
               c2s_secure(c));
    s->session = NULL;
    s->sm = NULL;
}

bool
c2s_sm_detach(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    if (!s || !s->session || !s->sm || !s->sm->resume_ms || s->sm->closing || c->quiesced ||
        c->ws->stopping)
        return false;
    c2s_sm_park(c);
    return true;
}

void
c2s_sm_end(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    c2s_sm_t *sm = s ? s->sm : NULL;
    if (!sm)
        return;
    s->sm = NULL;
    sm_table_end(sm->resume_id, c->id, sm->h_in);
    sm_free_rerouting(sm, &c->log);
}
