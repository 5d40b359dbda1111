/*
 * mam_store_floor.c — what storing archived messages in SQLite costs at the
 * least, per row, in the layouts an archive could use; no server, no
 * journal, no XMPP: rows made in memory and written as mod_mam's indexer
 * writes them (large transactions, rows sorted by account then time).
 *
 *   mam_store_floor [-r ROWS] [-a ACCOUNTS] [-t ROWS_PER_TX] [-w WORDS] [-d DIR] [LAYOUT ...]
 *
 * Layouts (all by default):
 *   rows        mod_mam's table and its five indexes, 32 rows per INSERT,
 *               then the full-text pass (INSERT INTO archive_fts … SELECT)
 *   rows-nofts  the same without the full-text index
 *   heap        the table alone (rowid only): no index, no full-text
 *   blocks      one row per account and transaction holding its messages
 *               (length-prefixed records in a blob), indexed (host,
 *               username, last_ts)
 *   blocks-fts  blocks, and one FTS5 row per block (the block's bodies;
 *               contentless, detail=none)
 *
 * Prints per layout: rows, seconds, rows/s and the process's CPU (user +
 * system) per row in microseconds.  A server that reaches a fraction f of
 * its unarchived rate on the same cores can spend (1/f - 1) × its CPU per
 * message on archiving (docs/performance.md: the budget).
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct row {
    int acct;          /* account index */
    int64_t ts;        /* microseconds */
    char id[24];       /* archive id */
    char peer[32];
    char msgid[16];
    char body[160];
    char xml[512];
} row_t;

static double
now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double
cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec
        + (double)u.ru_stime.tv_usec / 1e6;
}

static void
die_sql(sqlite3 *db, const char *what)
{
    fprintf(stderr, "mam_store_floor: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
}

static void
exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "mam_store_floor: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

static uint64_t rng = 88172645463325252ull;
static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Words of a made-up language: a vocabulary of `n` words, Zipf-ish use. */
static void
word(char *out, size_t cap, unsigned n)
{
    unsigned k = (unsigned)(rnd() % n);
    k = (unsigned)((uint64_t)k * k / n); /* skewed toward the first words */
    static const char *syl[] = { "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "po" };
    size_t len = 0;
    do {
        const char *s = syl[k % 10];
        if (len + 2 < cap) {
            memcpy(out + len, s, 2);
            len += 2;
        }
        k /= 10;
    } while (k);
    out[len] = '\0';
}

/* `nrows` rows: accounts in pairs exchanging messages, each message twice
 * (the sender's row and the recipient's), times increasing. */
static row_t *
make_rows(size_t nrows, int accounts, int words)
{
    row_t *r = calloc(nrows, sizeof *r);
    if (!r)
        exit(1);
    int64_t ts = 1765000000000000;
    for (size_t i = 0; i + 1 < nrows; i += 2) {
        int a = (int)(rnd() % (unsigned)accounts), b = a ^ 1;
        char body[160];
        size_t bl = 0;
        for (int w = 0; w < words; w++) {
            char wd[24];
            word(wd, sizeof wd, 5000);
            bl += (size_t)snprintf(body + bl, sizeof body - bl, "%s%s", w ? " " : "", wd);
            if (bl >= sizeof body - 1)
                break;
        }
        ts += 1 + (int64_t)(rnd() % 20);
        for (int k = 0; k < 2; k++) {
            row_t *x = &r[i + (size_t)k];
            x->acct = k ? b : a;
            x->ts = ts;
            snprintf(x->id, sizeof x->id, "%013lld%04x", (long long)(ts / 1000), (unsigned)(rnd() & 0xffff));
            snprintf(x->peer, sizeof x->peer, "user%d@xd.test", k ? a : b);
            snprintf(x->msgid, sizeof x->msgid, "m%llu", (unsigned long long)(rnd() % 100000000));
            snprintf(x->body, sizeof x->body, "%s", body);
            snprintf(x->xml, sizeof x->xml,
                     "<message xmlns='jabber:client' to='user%d@xd.test/r' from='user%d@xd.test/r' "
                     "type='chat' id='%s'><body>%s</body><stanza-id xmlns='urn:xmpp:sid:0' by='user%d@xd.test' "
                     "id='%s'/></message>",
                     b, a, x->msgid, body, x->acct, x->id);
        }
    }
    return r;
}

static int
by_acct(const void *pa, const void *pb)
{
    const row_t *a = pa, *b = pb;
    if (a->acct != b->acct)
        return a->acct < b->acct ? -1 : 1;
    return a->ts < b->ts ? -1 : a->ts > b->ts;
}

static const char *schema_rows =
    "CREATE TABLE archive (seq INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL,"
    " username TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, peer TEXT NOT NULL,"
    " resource TEXT NOT NULL, dir INTEGER NOT NULL, body TEXT, xml TEXT NOT NULL, msgid TEXT);"
    "CREATE UNIQUE INDEX archive_id ON archive (host, username, id);"
    "CREATE INDEX archive_ts ON archive (host, username, ts);"
    "CREATE INDEX archive_peer ON archive (host, username, peer, ts);"
    "CREATE INDEX archive_expiry ON archive (host, ts);"
    "CREATE INDEX archive_msgid_acct ON archive (host, username, msgid) WHERE msgid IS NOT NULL;";

static const char *schema_heap =
    "CREATE TABLE archive (seq INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL,"
    " username TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, peer TEXT NOT NULL,"
    " resource TEXT NOT NULL, dir INTEGER NOT NULL, body TEXT, xml TEXT NOT NULL, msgid TEXT);";

static const char *schema_blocks =
    "CREATE TABLE archive_block (seq INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL,"
    " username TEXT NOT NULL, first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL,"
    " n INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE INDEX archive_block_ts ON archive_block (host, username, last_ts);";

enum { L_ROWS, L_ROWS_NOFTS, L_HEAP, L_BLOCKS, L_BLOCKS_FTS };
static const char *layout_name[] = { "rows", "rows-nofts", "heap", "blocks", "blocks-fts" };

#define MULTI 32

/* The 32-row INSERT mod_mam's indexer uses (and a one-row one). */
static sqlite3_stmt *
prep_insert(sqlite3 *db, int n)
{
    size_t cap = 256 + (size_t)n * 40;
    char *sql = malloc(cap);
    size_t len = (size_t)snprintf(sql, cap,
                                  "INSERT INTO archive (host, username, id, ts, peer, resource, dir, body, xml, msgid) VALUES ");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(sql + len, cap - len, "%s(?,?,?,?,?,?,?,?,?,?)", i ? "," : "");
    snprintf(sql + len, cap - len, " ON CONFLICT (host, username, id) DO NOTHING");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        /* heap: no unique index for the upsert */
        sql[len] = '\0';
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
            die_sql(db, "prepare insert");
    }
    free(sql);
    return st;
}

static void
bind_row(sqlite3_stmt *st, int base, const row_t *x, char *user)
{
    sqlite3_bind_text(st, base + 1, "xd.test", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, base + 2, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, base + 3, x->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, base + 4, x->ts);
    sqlite3_bind_text(st, base + 5, x->peer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, base + 6, "r", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, base + 7, 0);
    sqlite3_bind_text(st, base + 8, x->body, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, base + 9, x->xml, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, base + 10, x->msgid, -1, SQLITE_STATIC);
}

static void
step(sqlite3 *db, sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die_sql(db, "step");
    sqlite3_reset(st);
}

static void
tx_rows(sqlite3 *db, sqlite3_stmt *multi, sqlite3_stmt *one, const row_t *r, size_t n, int fts)
{
    exec(db, "BEGIN");
    size_t i = 0;
    char user[MULTI][24];
    for (; i + MULTI <= n; i += MULTI) {
        for (int k = 0; k < MULTI; k++) {
            snprintf(user[k], sizeof user[k], "user%d", r[i + (size_t)k].acct);
            bind_row(multi, k * 10, &r[i + (size_t)k], user[k]);
        }
        step(db, multi);
    }
    for (; i < n; i++) {
        snprintf(user[0], sizeof user[0], "user%d", r[i].acct);
        bind_row(one, 0, &r[i], user[0]);
        step(db, one);
    }
    exec(db, "COMMIT");
    if (fts) {
        exec(db, "BEGIN");
        exec(db, "INSERT INTO archive_fts (rowid, body) SELECT seq, body FROM archive"
                 " WHERE seq > (SELECT pos FROM mam_fts) AND body IS NOT NULL");
        exec(db, "UPDATE mam_fts SET pos = (SELECT MAX(seq) FROM archive)");
        exec(db, "COMMIT");
    }
}

/* One block per account of the transaction: records (u16 length, then
 * ts, id, peer, msgid, body, xml each NUL-terminated) back to back. */
static void
tx_blocks(sqlite3 *db, sqlite3_stmt *ins, sqlite3_stmt *fts, const row_t *r, size_t n)
{
    exec(db, "BEGIN");
    static char *buf, *text;
    static size_t cap, tcap;
    for (size_t i = 0; i < n;) {
        size_t j = i, len = 0, tlen = 0;
        while (j < n && r[j].acct == r[i].acct) {
            const row_t *x = &r[j];
            size_t need = 16 + strlen(x->id) + strlen(x->peer) + strlen(x->msgid) + strlen(x->body)
                + strlen(x->xml) + 8;
            if (len + need > cap) {
                cap = (len + need) * 2;
                buf = realloc(buf, cap);
            }
            size_t start = len;
            len += 2;
            memcpy(buf + len, &x->ts, 8);
            len += 8;
            const char *f[] = { x->id, x->peer, x->msgid, x->body, x->xml };
            for (int k = 0; k < 5; k++) {
                size_t l = strlen(f[k]) + 1;
                memcpy(buf + len, f[k], l);
                len += l;
            }
            uint16_t rl = (uint16_t)(len - start);
            memcpy(buf + start, &rl, 2);
            if (fts) {
                size_t bl = strlen(x->body);
                if (tlen + bl + 2 > tcap) {
                    tcap = (tlen + bl + 2) * 2;
                    text = realloc(text, tcap);
                }
                memcpy(text + tlen, x->body, bl);
                tlen += bl;
                text[tlen++] = '\n';
            }
            j++;
        }
        char user[24];
        snprintf(user, sizeof user, "user%d", r[i].acct);
        sqlite3_bind_text(ins, 1, "xd.test", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, user, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, r[i].ts);
        sqlite3_bind_int64(ins, 4, r[j - 1].ts);
        sqlite3_bind_int64(ins, 5, (sqlite3_int64)(j - i));
        sqlite3_bind_blob(ins, 6, buf, (int)len, SQLITE_STATIC);
        step(db, ins);
        if (fts) {
            sqlite3_bind_int64(fts, 1, sqlite3_last_insert_rowid(db));
            sqlite3_bind_text(fts, 2, text, (int)tlen, SQLITE_STATIC);
            step(db, fts);
        }
        i = j;
    }
    exec(db, "COMMIT");
}

static void
run(int layout, const row_t *all, size_t nrows, size_t per_tx, const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/mam_store_floor.db", dir);
    const char *sfx[] = { "", "-wal", "-shm" };
    for (int k = 0; k < 3; k++) {
        char p[560];
        snprintf(p, sizeof p, "%s%s", path, sfx[k]);
        unlink(p);
    }
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die_sql(db, "open");
    /* as src/storage/sqlite.c and mod_mam's indexer set them */
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;"
             " PRAGMA temp_store=MEMORY");
    sqlite3_stmt *multi = NULL, *one = NULL, *bins = NULL, *bfts = NULL;
    switch (layout) {
    case L_ROWS:
    case L_ROWS_NOFTS:
        exec(db, schema_rows);
        if (layout == L_ROWS)
            exec(db, "CREATE VIRTUAL TABLE archive_fts USING fts5(body, content='archive', content_rowid='seq');"
                     "CREATE TABLE mam_fts (pos INTEGER NOT NULL); INSERT INTO mam_fts VALUES (0)");
        multi = prep_insert(db, MULTI);
        one = prep_insert(db, 1);
        break;
    case L_HEAP:
        exec(db, schema_heap);
        multi = prep_insert(db, MULTI);
        one = prep_insert(db, 1);
        break;
    default:
        exec(db, schema_blocks);
        if (layout == L_BLOCKS_FTS)
            exec(db, "CREATE VIRTUAL TABLE archive_block_fts USING fts5(body, content='', detail=none)");
        if (sqlite3_prepare_v2(db,
                               "INSERT INTO archive_block (host, username, first_ts, last_ts, n, data)"
                               " VALUES (?,?,?,?,?,?)",
                               -1, &bins, NULL)
            != SQLITE_OK)
            die_sql(db, "prepare block");
        if (layout == L_BLOCKS_FTS
            && sqlite3_prepare_v2(db, "INSERT INTO archive_block_fts (rowid, body) VALUES (?, ?)", -1, &bfts,
                                  NULL)
                != SQLITE_OK)
            die_sql(db, "prepare block fts");
        break;
    }
    row_t *r = malloc(per_tx * sizeof *r);
    double t0 = now_s(), c0 = cpu_s();
    for (size_t off = 0; off < nrows; off += per_tx) {
        size_t n = nrows - off < per_tx ? nrows - off : per_tx;
        memcpy(r, all + off, n * sizeof *r);
        qsort(r, n, sizeof *r, by_acct); /* as the indexer sorts a transaction */
        if (layout <= L_HEAP)
            tx_rows(db, multi, one, r, n, layout == L_ROWS);
        else
            tx_blocks(db, bins, bfts, r, n);
    }
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    printf("%-11s rows=%zu s=%.2f rows_per_s=%.0f cpu_us_per_row=%.2f\n", layout_name[layout], nrows, wall,
           (double)nrows / wall, cpu * 1e6 / (double)nrows);
    fflush(stdout);
    free(r);
    sqlite3_finalize(multi);
    sqlite3_finalize(one);
    sqlite3_finalize(bins);
    sqlite3_finalize(bfts);
    sqlite3_close(db);
    for (int k = 0; k < 3; k++) {
        char p[560];
        snprintf(p, sizeof p, "%s%s", path, sfx[k]);
        unlink(p);
    }
}

int
main(int argc, char **argv)
{
    size_t nrows = 400000, per_tx = 45000;
    int accounts = 200, words = 8, opt;
    const char *dir = "/var/tmp";
    while ((opt = getopt(argc, argv, "r:a:t:w:d:")) != -1) {
        switch (opt) {
        case 'r': nrows = strtoull(optarg, NULL, 10); break;
        case 'a': accounts = atoi(optarg); break;
        case 't': per_tx = strtoull(optarg, NULL, 10); break;
        case 'w': words = atoi(optarg); break;
        case 'd': dir = optarg; break;
        default:
            fprintf(stderr, "usage: mam_store_floor [-r ROWS] [-a ACCOUNTS] [-t ROWS_PER_TX] [-w WORDS] [-d DIR]"
                            " [rows|rows-nofts|heap|blocks|blocks-fts ...]\n");
            return 2;
        }
    }
    if (accounts < 2 || accounts % 2 || per_tx < 1 || nrows < 2) {
        fprintf(stderr, "mam_store_floor: -a must be even and >= 2, -t and -r positive\n");
        return 2;
    }
    row_t *all = make_rows(nrows, accounts, words);
    printf("mam_store_floor: %zu rows (%zu messages), %d accounts, %zu rows a transaction, %d words a body\n",
           nrows, nrows / 2, accounts, per_tx, words);
    for (int l = L_ROWS; l <= L_BLOCKS_FTS; l++) {
        int want = optind >= argc;
        for (int i = optind; i < argc; i++)
            if (strcmp(argv[i], layout_name[l]) == 0)
                want = 1;
        if (want)
            run(l, all, nrows, per_tx, dir);
    }
    free(all);
    return 0;
}
