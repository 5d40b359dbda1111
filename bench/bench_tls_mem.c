/*
 * bench_tls_mem.c — heap cost of an idle server TLS connection
 * (src/stream/tls_conn.c), the figure behind the ~16 KiB per connection
 * budget.
 *
 * Makes N in-memory pairs (an OpenSSL client over mem BIOs, the engine as
 * the server), completes the handshake, exchanges a few records both ways,
 * frees the clients, and reports server-side heap bytes per connection:
 * whole heap by mallinfo2().uordblks (build without ASan for this figure)
 * and OpenSSL's share by CRYPTO_set_mem_functions.  With --sites, the
 * OpenSSL allocations still live are grouped by source file:line, largest
 * first, which says where the bytes go.  Also prints handshakes per second
 * (client and server on one thread, so a lower bound for the server).
 *
 * With --chacha the store allows only ChaCha20-Poly1305 (smaller cipher state
 * than AES-GCM), to compare.
 *
 * Usage: bench_tls_mem [N] [--sites] [--chacha]     (N defaults to 1000)
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "stream/tls.h"
#include "xmppd/err.h"

/* ---- OpenSSL allocation accounting -------------------------------------- */

/* One live OpenSSL allocation (open addressing on the pointer). */
typedef struct bt_alloc {
    void *p;          /* NULL = free slot, (void *)1 = tombstone */
    const char *file; /* OPENSSL_FILE of the call */
    int line;         /* OPENSSL_LINE of the call */
    size_t size;      /* malloc_usable_size */
} bt_alloc_t;

#define BT_SLOTS (1u << 22) /* enough for 1000 connections and their clients */
static bt_alloc_t *bt_tab;  /* BT_SLOTS entries, only with --sites */
static long bt_live;        /* bytes OpenSSL holds */

static size_t
bt_hash(void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) & (BT_SLOTS - 1);
}

static void
bt_track(void *p, const char *file, int line)
{
    size_t sz = malloc_usable_size(p);
    bt_live += (long)sz;
    if (bt_tab == NULL)
        return;
    for (size_t i = bt_hash(p);; i = (i + 1) & (BT_SLOTS - 1)) {
        if (bt_tab[i].p == NULL || bt_tab[i].p == (void *)1) {
            bt_tab[i] = (bt_alloc_t){ p, file, line, sz };
            return;
        }
    }
}

static void
bt_untrack(void *p)
{
    bt_live -= (long)malloc_usable_size(p);
    if (bt_tab == NULL)
        return;
    for (size_t i = bt_hash(p); bt_tab[i].p != NULL; i = (i + 1) & (BT_SLOTS - 1)) {
        if (bt_tab[i].p == p) {
            bt_tab[i].p = (void *)1;
            return;
        }
    }
}

static void *
bt_malloc(size_t n, const char *file, int line)
{
    void *p = malloc(n);
    if (p != NULL)
        bt_track(p, file, line);
    return p;
}

static void
bt_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p != NULL)
        bt_untrack(p);
    free(p);
}

static void *
bt_realloc(void *p, size_t n, const char *file, int line)
{
    if (n == 0) {
        bt_free(p, file, line);
        return NULL;
    }
    if (p != NULL)
        bt_untrack(p);
    void *q = realloc(p, n);
    if (q != NULL)
        bt_track(q, file, line);
    else if (p != NULL)
        bt_track(p, file, line);
    return q;
}

/* Site totals of the allocations live now. */
typedef struct bt_site {
    const char *file; /* source file */
    int line;         /* line */
    size_t bytes;     /* live bytes */
    size_t count;     /* live allocations */
} bt_site_t;

static int
bt_site_cmp(const void *a, const void *b)
{
    const bt_site_t *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

static void
bt_report_sites(size_t conns, size_t top)
{
    size_t cap = 4096, n = 0;
    bt_site_t *s = calloc(cap, sizeof *s);
    for (size_t i = 0; i < BT_SLOTS; i++) {
        bt_alloc_t *a = &bt_tab[i];
        if (a->p == NULL || a->p == (void *)1)
            continue;
        size_t j = 0;
        while (j < n && !(s[j].line == a->line && s[j].file == a->file))
            j++;
        if (j == n) {
            if (n == cap)
                continue;
            s[n++] = (bt_site_t){ a->file, a->line, 0, 0 };
        }
        s[j].bytes += a->size;
        s[j].count++;
    }
    qsort(s, n, sizeof *s, bt_site_cmp);
    printf("    live OpenSSL allocations by site (per connection, sites with >= 1 per conn):\n");
    for (size_t j = 0, shown = 0; j < n && shown < top; j++) {
        if (s[j].count < conns)
            continue;
        const char *f = s[j].file ? strstr(s[j].file, "ssl/") : NULL;
        if (f == NULL && s[j].file)
            f = strstr(s[j].file, "crypto/");
        printf("    %7.0f B  %4.1f allocs  %s:%d\n", (double)s[j].bytes / (double)conns,
               (double)s[j].count / (double)conns, f ? f : s[j].file ? s[j].file : "?", s[j].line);
        shown++;
    }
    free(s);
}

/* ---- in-memory pairs --------------------------------------------------------- */

typedef struct bp {
    SSL *cli;      /* OpenSSL client */
    BIO *c_rd;     /* server → client */
    BIO *c_wr;     /* client → server */
    xd_tls_t *srv; /* the engine */
    size_t got;    /* plaintext bytes the server received */
} bp_t;

static int
bp_send(void *ud, const uint8_t *d, size_t n)
{
    bp_t *p = ud;
    return p->c_rd && BIO_write(p->c_rd, d, (int)n) == (int)n ? 0 : -1;
}

static int
bp_plain(void *ud, const uint8_t *d, size_t n)
{
    (void)d;
    ((bp_t *)ud)->got += n;
    return 0;
}

static void
bp_flush(bp_t *p)
{
    uint8_t buf[16384];
    int n;
    while ((n = BIO_read(p->c_wr, buf, sizeof buf)) > 0)
        if (xd_tls_input(p->srv, buf, (size_t)n) != 0)
            abort();
}

static void
bp_open(bp_t *p, SSL_CTX *cctx, xd_tls_store_t *st)
{
    memset(p, 0, sizeof *p);
    p->cli = SSL_new(cctx);
    p->c_rd = BIO_new(BIO_s_mem());
    p->c_wr = BIO_new(BIO_s_mem());
    SSL_set_bio(p->cli, p->c_rd, p->c_wr);
    SSL_set_connect_state(p->cli);
    SSL_set_tlsext_host_name(p->cli, "bench.example");
    xd_tls_io_t io = { .ud = p, .send = bp_send, .plain = bp_plain };
    if (xd_tls_server_new(st, "bench.example", &io, &p->srv) != 0)
        abort();
    for (int i = 0; i < 10 && !SSL_is_init_finished(p->cli); i++) {
        SSL_do_handshake(p->cli);
        bp_flush(p);
    }
    if (!SSL_is_init_finished(p->cli) || !xd_tls_handshake_done(p->srv))
        abort();
    /* a few records: stream header, a stanza, an SM request; one reply */
    const char *m[] = { "<stream:stream to='bench.example' version='1.0'>",
                        "<presence><priority>1</priority></presence>",
                        "<r xmlns='urn:xmpp:sm:3'/>" };
    for (int i = 0; i < 3; i++)
        SSL_write(p->cli, m[i], (int)strlen(m[i]));
    bp_flush(p);
    const char *reply = "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                        "</stream:features>";
    if (xd_tls_send(p->srv, (const uint8_t *)reply, strlen(reply)) != 0)
        abort();
    char back[256];
    size_t got = 0, n = 0;
    while (SSL_read_ex(p->cli, back + got, sizeof back - got, &n) == 1)
        got += n;
    if (got != strlen(reply))
        abort();
}

static void
bp_free_client(bp_t *p)
{
    SSL_free(p->cli);
    p->cli = NULL;
    p->c_rd = p->c_wr = NULL;
}

static void
run(xd_tls_store_t *st, int version, const char *vname, size_t n, bool sites)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(cctx, version);
    SSL_CTX_set_max_proto_version(cctx, version);
    bp_t *pairs = calloc(n, sizeof *pairs);
    for (size_t i = 0; i < 8 && i < n; i++) { /* warm-up */
        bp_open(&pairs[i], cctx, st);
        bp_free_client(&pairs[i]);
        xd_tls_free(pairs[i].srv);
    }
    malloc_trim(0);
    long o0 = bt_live;
    size_t h0 = mallinfo2().uordblks;
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < n; i++)
        bp_open(&pairs[i], cctx, st);
    uint64_t t1 = uv_hrtime();
    for (size_t i = 0; i < n; i++)
        bp_free_client(&pairs[i]);
    long o1 = bt_live;
    size_t h1 = mallinfo2().uordblks;
    printf("%s  N=%zu  heap %6.0f B/conn  (OpenSSL %6.0f B, rest %4.0f B)  "
           "%.0f handshakes/s\n",
           vname, n, (double)((long)h1 - (long)h0) / (double)n, (double)(o1 - o0) / (double)n,
           (double)((long)h1 - (long)h0 - (o1 - o0)) / (double)n,
           (double)n / ((double)(t1 - t0) / 1e9));
    if (sites)
        bt_report_sites(n, 25);
    for (size_t i = 0; i < n; i++)
        xd_tls_free(pairs[i].srv);
    free(pairs);
    SSL_CTX_free(cctx);
}

int
main(int argc, char **argv)
{
    size_t n = 1000;
    bool sites = false, chacha = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sites") == 0)
            sites = true;
        else if (strcmp(argv[i], "--chacha") == 0)
            chacha = true;
        else
            n = (size_t)strtoul(argv[i], NULL, 10);
    }
    if (sites)
        bt_tab = calloc(BT_SLOTS, sizeof *bt_tab);
    if (CRYPTO_set_mem_functions(bt_malloc, bt_realloc, bt_free) != 1) {
        fprintf(stderr, "CRYPTO_set_mem_functions failed\n");
        return 1;
    }
    char dir[] = "/tmp/bench_tls_mem.XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    const char *hosts[] = { "bench.example" };
    xd_tls_store_opts_t o = { .hosts = hosts, .nhosts = 1, .data_dir = dir };
    if (chacha) {
        o.ciphers = "ECDHE+CHACHA20";
        o.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
    }
    xd_tls_store_t *st = NULL;
    char *err = NULL;
    if (xd_tls_store_load(&o, &st, &err) != 0) {
        fprintf(stderr, "store: %s\n", err);
        return 1;
    }
    run(st, TLS1_2_VERSION, "TLSv1.2", n, sites);
    run(st, TLS1_3_VERSION, "TLSv1.3", n, sites);
    xd_tls_store_unref(st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
