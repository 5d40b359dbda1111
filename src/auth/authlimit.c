/*
 * authlimit.c — failed-authentication limits (authlimit.h).
 *
 * The table: `cap` entries in one array, hash chains through `hnext` over a
 * power-of-two bucket array, and one LRU list through prev/next (head =
 * touched last).  Links are indices + 1 so that 0 means none.  An entry's
 * key is 16 bytes of SHA-256(seed ‖ kind ‖ address or account): the random
 * per-process seed keeps chains short whatever addresses an attacker owns,
 * and the entry stays a fixed size whatever the account's length.
 *
 * Invariants (under al.mu): every used entry is on exactly one hash chain
 * and on the LRU list; unused ones are on the free list (through `next`);
 * used + free = cap.
 */
#include "auth/authlimit.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <uv.h>

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"

enum { AL_FREE = 0, AL_ADDR = 1, AL_ACCOUNT = 2 };

#define AL_KEY_LEN 16   /* bytes of an entry's key digest */
#define AL_LABEL_MAX 72 /* bytes of an entry's printable key (truncated) */

typedef struct al_entry {
    uint8_t kind;               /* AL_FREE, AL_ADDR or AL_ACCOUNT */
    uint8_t key[AL_KEY_LEN];    /* digest of kind and key material */
    char label[AL_LABEL_MAX];   /* the key as printed (xmppctl, ban texts) */
    uint32_t failures;          /* failures in the current window */
    uint64_t last_ms;           /* when the last one was recorded */
    uint64_t banned_until_ms;   /* AL_ADDR: end of the ban; 0 = never banned */
    uint32_t hnext;             /* next on the hash chain (index + 1; 0 = end) */
    uint32_t prev, next;        /* LRU neighbours (index + 1); `next` also links the free list */
} al_entry_t;

/* The one table.  Everything below mu is guarded by it. */
static struct {
    pthread_mutex_t mu;
    al_entry_t *e;              /* cap entries */
    size_t cap;                 /* entries allocated */
    uint32_t *buckets;          /* nb chain heads (index + 1) */
    size_t nb;                  /* buckets, a power of two */
    uint32_t head, tail;        /* LRU: touched last, touched longest ago */
    uint32_t free;              /* free list head */
    uint8_t seed[16];           /* key digest seed, random per process */
    bool seeded;                /* seed is set */
    bool override;              /* conf comes from xd_authlimit_configure */
    xd_auth_limits_t conf;      /* the override (exempt owned) */
    uint64_t (*clock)(void);    /* tests; NULL = monotonic */
} al = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* The policy in force: numbers only (exempt is evaluated by al_exempt). */
typedef struct al_policy {
    unsigned max_failures;
    uint64_t ban_ms, window_ms;
    unsigned delay_after;
    uint64_t delay_ms, max_delay_ms;
    size_t size;
} al_policy_t;

static uint64_t
al_now(void)
{
    return al.clock ? al.clock() : uv_hrtime() / 1000000u;
}

static void
al_policy_from(const xd_auth_limits_t *c, al_policy_t *p)
{
    p->max_failures = c->max_failures > 0 ? (unsigned)c->max_failures : 0;
    p->ban_ms = c->ban_lifetime_ms;
    p->window_ms = c->window_ms;
    p->delay_after = c->delay_after > 0 ? (unsigned)c->delay_after : 0;
    p->delay_ms = c->delay_ms;
    p->max_delay_ms = c->max_delay_ms;
    p->size = c->size >= 16 ? (size_t)c->size : 16;
}

/* The policy (under mu), and whether `peer` is exempt (outside mu: it reads
 * the published configuration's rules). */
static bool
al_exempt(const struct sockaddr *peer)
{
    if (!peer)
        return false;
    pthread_mutex_lock(&al.mu);
    bool over = al.override;
    pthread_mutex_unlock(&al.mu);
    if (over)
        return false; /* tests: no rules */
    xd_config_t *cfg = xd_config_get();
    bool ex = cfg && strcmp(cfg->auth_limits.exempt, "none") != 0 &&
              xd_access_match(cfg, NULL, cfg->auth_limits.exempt, NULL, peer) == XD_ACCESS_ALLOW;
    xd_config_unref(cfg);
    return ex;
}

/* Under mu. */
static void
al_policy_locked(al_policy_t *p)
{
    if (al.override) {
        al_policy_from(&al.conf, p);
        return;
    }
    xd_config_t *cfg = xd_config_get();
    if (cfg) {
        al_policy_from(&cfg->auth_limits, p);
        xd_config_unref(cfg);
        return;
    }
    /* No configuration published (tools): the documented defaults. */
    xd_auth_limits_t d = { 20, 3600000, 3600000, 5, 1000, 30000, NULL, 8192 };
    al_policy_from(&d, p);
}

/* ---- keys ------------------------------------------------------------------------------------ */

/* The address part that identifies a peer: 4 bytes of IPv4 (also when
 * IPv4-mapped), 8 of IPv6 (the /64).  0 when not an IP address. */
static size_t
al_addr_bytes(const struct sockaddr *sa, uint8_t out[16], int *family)
{
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *family = AF_INET;
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (memcmp(a, mapped, 12) == 0) {
            memcpy(out, a + 12, 4);
            *family = AF_INET;
            return 4;
        }
        memcpy(out, a, 8);
        *family = AF_INET6;
        return 8;
    }
    return 0;
}

static void
al_label_addr(const uint8_t *b, int family, char *out, size_t cap)
{
    char buf[INET6_ADDRSTRLEN];
    if (family == AF_INET) {
        inet_ntop(AF_INET, b, buf, sizeof buf);
        snprintf(out, cap, "%s", buf);
    } else {
        uint8_t full[16] = { 0 };
        memcpy(full, b, 8);
        inet_ntop(AF_INET6, full, buf, sizeof buf);
        snprintf(out, cap, "%s/64", buf);
    }
}

void
xd_authlimit_addr_key(const struct sockaddr *peer, char *out, size_t cap)
{
    uint8_t b[16];
    int fam = 0;
    if (!peer || al_addr_bytes(peer, b, &fam) == 0)
        snprintf(out, cap, "?");
    else
        al_label_addr(b, fam, out, cap);
}

/* Under mu. */
static void
al_digest(int kind, const void *material, size_t len, uint8_t out[AL_KEY_LEN])
{
    if (!al.seeded) {
        if (RAND_bytes(al.seed, sizeof al.seed) != 1)
            uv_random(NULL, NULL, al.seed, sizeof al.seed, 0, NULL);
        al.seeded = true;
    }
    uint8_t k = (uint8_t)kind, md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, al.seed, sizeof al.seed) == 1 &&
             EVP_DigestUpdate(c, &k, 1) == 1 && EVP_DigestUpdate(c, material, len) == 1 &&
             EVP_DigestFinal_ex(c, md, &n) == 1;
    EVP_MD_CTX_free(c);
    XD_ASSERT(ok && n >= AL_KEY_LEN); /* SHA-256 over memory fails only without memory */
    memcpy(out, md, AL_KEY_LEN);
}

/* ---- the table (all under mu) ----------------------------------------------------------------- */

static uint32_t
al_bucket(const uint8_t key[AL_KEY_LEN])
{
    uint32_t h;
    memcpy(&h, key, sizeof h); /* the digest is uniform already */
    return h & (uint32_t)(al.nb - 1);
}

static void
al_lru_unlink(uint32_t i)
{
    al_entry_t *e = &al.e[i - 1];
    if (e->prev)
        al.e[e->prev - 1].next = e->next;
    else
        al.head = e->next;
    if (e->next)
        al.e[e->next - 1].prev = e->prev;
    else
        al.tail = e->prev;
    e->prev = e->next = 0;
}

static void
al_lru_push(uint32_t i)
{
    al_entry_t *e = &al.e[i - 1];
    e->prev = 0;
    e->next = al.head;
    if (al.head)
        al.e[al.head - 1].prev = i;
    al.head = i;
    if (!al.tail)
        al.tail = i;
}

static void
al_hash_unlink(uint32_t i)
{
    uint32_t *p = &al.buckets[al_bucket(al.e[i - 1].key)];
    while (*p && *p != i)
        p = &al.e[*p - 1].hnext;
    XD_ASSERT(*p == i);
    *p = al.e[i - 1].hnext;
}

static void
al_remove(uint32_t i)
{
    al_hash_unlink(i);
    al_lru_unlink(i);
    memset(&al.e[i - 1], 0, sizeof al.e[i - 1]);
    al.e[i - 1].next = al.free;
    al.free = i;
}

static uint32_t
al_find(int kind, const uint8_t key[AL_KEY_LEN])
{
    if (!al.e)
        return 0;
    for (uint32_t i = al.buckets[al_bucket(key)]; i; i = al.e[i - 1].hnext)
        if (al.e[i - 1].kind == kind && memcmp(al.e[i - 1].key, key, AL_KEY_LEN) == 0)
            return i;
    return 0;
}

static bool
al_live(const al_entry_t *e, uint64_t now, const al_policy_t *p)
{
    return e->banned_until_ms > now || (e->failures > 0 && now - e->last_ms < p->window_ms);
}

/* (Re)allocates the table for p->size entries, keeping the newest
 * entries that fit. */
static void
al_resize(const al_policy_t *p)
{
    al_entry_t *old = al.e;
    uint32_t old_head = al.head;
    size_t cap = p->size, nb = 16;
    while (nb < cap)
        nb <<= 1;
    al.e = xd_calloc(cap, sizeof *al.e);
    xd_free(al.buckets);
    al.buckets = xd_calloc(nb, sizeof *al.buckets);
    al.cap = cap;
    al.nb = nb;
    al.head = al.tail = 0;
    al.free = 0;
    for (size_t i = cap; i > 0; i--) {
        al.e[i - 1].next = al.free;
        al.free = (uint32_t)i;
    }
    /* From the newest, appending: the newest entries are kept, in order. */
    for (uint32_t j = old_head; j && al.free; j = old[j - 1].next) {
        uint32_t i = al.free;
        al.free = al.e[i - 1].next;
        al_entry_t *e = &al.e[i - 1];
        *e = old[j - 1];
        e->prev = al.tail;
        e->next = 0;
        if (al.tail)
            al.e[al.tail - 1].next = i;
        else
            al.head = i;
        al.tail = i;
        uint32_t *b = &al.buckets[al_bucket(e->key)];
        e->hnext = *b;
        *b = i;
    }
    xd_free(old);
}

/* The entry for (kind, key), created (evicting the LRU entry when full)
 * and made the newest; a stale one starts again from zero. */
static al_entry_t *
al_get(int kind, const uint8_t key[AL_KEY_LEN], const char *label, uint64_t now,
       const al_policy_t *p)
{
    if (al.cap != p->size)
        al_resize(p);
    uint32_t i = al_find(kind, key);
    if (i) {
        al_lru_unlink(i);
    } else {
        if (!al.free)
            al_remove(al.tail); /* full: forget the entry touched longest ago */
        i = al.free;
        al.free = al.e[i - 1].next;
        al_entry_t *e = &al.e[i - 1];
        memset(e, 0, sizeof *e);
        e->kind = (uint8_t)kind;
        memcpy(e->key, key, AL_KEY_LEN);
        uint32_t *b = &al.buckets[al_bucket(key)];
        e->hnext = *b;
        *b = i;
    }
    al_lru_push(i);
    al_entry_t *e = &al.e[i - 1];
    snprintf(e->label, sizeof e->label, "%s", label);
    if (!al_live(e, now, p)) {
        e->failures = 0;
        e->banned_until_ms = 0;
    }
    return e;
}

/* ---- the policy ------------------------------------------------------------------------------- */

void
xd_authlimit_failed(const struct sockaddr *peer, const char *account, xd_authlimit_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (al_exempt(peer)) {
        out->exempt = true;
        return;
    }
    uint8_t b[16], key[AL_KEY_LEN];
    int fam = 0;
    size_t blen = peer ? al_addr_bytes(peer, b, &fam) : 0;
    char label[AL_LABEL_MAX];
    pthread_mutex_lock(&al.mu);
    al_policy_t p;
    al_policy_locked(&p);
    uint64_t now = al_now();
    if (blen) {
        al_digest(AL_ADDR, b, blen, key);
        al_label_addr(b, fam, label, sizeof label);
        al_entry_t *e = al_get(AL_ADDR, key, label, now, &p);
        e->failures++;
        e->last_ms = now;
        if (p.max_failures && e->failures >= p.max_failures && e->banned_until_ms <= now)
            e->banned_until_ms = now + p.ban_ms;
        out->addr_failures = e->failures;
        out->banned = e->banned_until_ms > now;
    }
    if (account && *account) {
        al_digest(AL_ACCOUNT, account, strlen(account), key);
        al_entry_t *e = al_get(AL_ACCOUNT, key, account, now, &p);
        e->failures++;
        e->last_ms = now;
        out->account_failures = e->failures;
    }
    unsigned n = out->addr_failures > out->account_failures ? out->addr_failures
                                                            : out->account_failures;
    if (p.delay_after && n > p.delay_after) {
        unsigned shift = n - p.delay_after - 1;
        uint64_t d = shift >= 20 ? p.max_delay_ms : p.delay_ms << shift;
        out->delay_ms = d < p.max_delay_ms ? d : p.max_delay_ms;
    }
    pthread_mutex_unlock(&al.mu);
}

void
xd_authlimit_succeeded(const char *account)
{
    if (!account || !*account)
        return;
    uint8_t key[AL_KEY_LEN];
    pthread_mutex_lock(&al.mu);
    al_digest(AL_ACCOUNT, account, strlen(account), key);
    uint32_t i = al_find(AL_ACCOUNT, key);
    if (i)
        al_remove(i);
    pthread_mutex_unlock(&al.mu);
}

bool
xd_authlimit_banned(const struct sockaddr *peer, char *text, size_t cap)
{
    uint8_t b[16], key[AL_KEY_LEN];
    int fam = 0;
    size_t blen = peer ? al_addr_bytes(peer, b, &fam) : 0;
    if (!blen)
        return false;
    uint64_t left = 0;
    char label[AL_LABEL_MAX] = "";
    pthread_mutex_lock(&al.mu);
    if (al.e) {
        al_digest(AL_ADDR, b, blen, key);
        uint32_t i = al_find(AL_ADDR, key);
        uint64_t now = al_now();
        if (i && al.e[i - 1].banned_until_ms > now) {
            left = al.e[i - 1].banned_until_ms - now;
            snprintf(label, sizeof label, "%s", al.e[i - 1].label);
        }
    }
    pthread_mutex_unlock(&al.mu);
    if (!left || al_exempt(peer)) /* an exempt rule added since the ban wins */
        return false;
    if (text && cap)
        snprintf(text, cap,
                 "too many failed authentications from %s; refused for %" PRIu64
                 " more seconds",
                 label, (left + 999) / 1000);
    return true;
}

void
xd_authlimit_foreach(int (*fn)(void *arg, const xd_authlimit_entry_t *e), void *arg)
{
    pthread_mutex_lock(&al.mu);
    al_policy_t p;
    al_policy_locked(&p);
    uint64_t now = al_now();
    for (uint32_t i = al.head; i; i = al.e[i - 1].next) {
        const al_entry_t *e = &al.e[i - 1];
        if (!al_live(e, now, &p))
            continue;
        xd_authlimit_entry_t v = {
            .key = e->label,
            .account = e->kind == AL_ACCOUNT,
            .failures = now - e->last_ms < p.window_ms ? e->failures : 0,
            .banned_for_ms = e->banned_until_ms > now ? e->banned_until_ms - now : 0,
        };
        if (fn(arg, &v) != 0)
            break;
    }
    pthread_mutex_unlock(&al.mu);
}

size_t
xd_authlimit_count(void)
{
    size_t n = 0;
    pthread_mutex_lock(&al.mu);
    al_policy_t p;
    al_policy_locked(&p);
    uint64_t now = al_now();
    for (uint32_t i = al.head; i; i = al.e[i - 1].next)
        n += al_live(&al.e[i - 1], now, &p);
    pthread_mutex_unlock(&al.mu);
    return n;
}

/* Parses an address as typed ("192.0.2.7", "2001:db8::1", "2001:db8::/64"). */
static bool
al_parse_addr(const char *s, struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN + 8];
    snprintf(buf, sizeof buf, "%s", s);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

size_t
xd_authlimit_clear(const char *k)
{
    size_t n = 0;
    pthread_mutex_lock(&al.mu);
    if (!al.e) {
        pthread_mutex_unlock(&al.mu);
        return 0;
    }
    if (strcmp(k, "all") == 0) {
        while (al.head) {
            al_remove(al.head);
            n++;
        }
    } else {
        struct sockaddr_storage ss;
        uint8_t b[16], key[AL_KEY_LEN];
        int fam = 0;
        uint32_t i = 0;
        if (al_parse_addr(k, &ss)) {
            size_t blen = al_addr_bytes((const struct sockaddr *)&ss, b, &fam);
            al_digest(AL_ADDR, b, blen, key);
            i = al_find(AL_ADDR, key);
        } else {
            al_digest(AL_ACCOUNT, k, strlen(k), key);
            i = al_find(AL_ACCOUNT, key);
        }
        if (i) {
            al_remove(i);
            n = 1;
        }
    }
    pthread_mutex_unlock(&al.mu);
    return n;
}

void
xd_authlimit_configure(const xd_auth_limits_t *conf)
{
    pthread_mutex_lock(&al.mu);
    xd_free(al.conf.exempt);
    memset(&al.conf, 0, sizeof al.conf);
    al.override = conf != NULL;
    if (conf) {
        al.conf = *conf;
        al.conf.exempt = xd_strdup(conf->exempt ? conf->exempt : "none");
    }
    pthread_mutex_unlock(&al.mu);
}

void
xd_authlimit_reset(void)
{
    pthread_mutex_lock(&al.mu);
    xd_free(al.e);
    xd_free(al.buckets);
    al.e = NULL;
    al.buckets = NULL;
    al.cap = al.nb = 0;
    al.head = al.tail = al.free = 0;
    pthread_mutex_unlock(&al.mu);
}

void
xd_authlimit_test_set_clock(uint64_t (*now_ms)(void))
{
    pthread_mutex_lock(&al.mu);
    al.clock = now_ms;
    pthread_mutex_unlock(&al.mu);
}

/* ---- commands --------------------------------------------------------------------------------- */

static int
al_list_one(void *arg, const xd_authlimit_entry_t *e)
{
    if (e->banned_for_ms)
        xd_cmd_add(arg, "%s failures=%u banned_for=%" PRIu64 "s", e->key, e->failures,
                   (e->banned_for_ms + 999) / 1000);
    else
        xd_cmd_add(arg, "%s%s failures=%u", e->key, e->account ? " (account)" : "", e->failures);
    return 0;
}

static int
cmd_auth_bans(xd_cmd_call_t *call)
{
    xd_authlimit_foreach(al_list_one, call);
    return 0;
}

static int
cmd_auth_unban(xd_cmd_call_t *call)
{
    const char *k = call->args[0].text;
    size_t n = xd_authlimit_clear(k);
    if (n == 0 && strcmp(k, "all") != 0)
        return xd_cmd_errorf(call, XD_ENOTFOUND, "no entry for %s", k);
    xd_cmd_printf(call, "%zu entr%s cleared\n", n, n == 1 ? "y" : "ies");
    return 0;
}

static const xd_cmd_arg_t al_args_key[] = {
    { "key", XD_CMD_STRING,
      "an address (192.0.2.7; an IPv6 address or its /64), an account (user@host), or all" },
};

static const xd_cmd_t al_cmds[] = {
    { .name = "auth_bans",
      .doc = "list addresses and accounts with failed authentications, and bans",
      .result = XD_CMD_RES_LIST, .fn = cmd_auth_bans,
      .result_doc = "one line each, newest first: KEY failures=N [banned_for=Ns]",
      .longdoc = "The auth_limits table shared by all streams: addresses (an IPv4 address, an "
                 "IPv6 /64) and accounts with failures in the current window, and the "
                 "addresses that are banned." },
    { .name = "auth_unban", .doc = "forget the failures (and ban) of an address or account",
      .args = al_args_key, .nargs = 1, .result = XD_CMD_RES_NONE, .fn = cmd_auth_unban },
};

void
xd_authlimit_register_commands(void)
{
    for (size_t i = 0; i < sizeof al_cmds / sizeof al_cmds[0]; i++)
        xd_cmd_register(&al_cmds[i]);
}
