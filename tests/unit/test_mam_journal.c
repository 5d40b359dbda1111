/*
 * test_mam_journal.c — mod_mam's journal (src/mod/mam_journal.c): a
 * record's frame round trip (absent fields, the crc, frames cut short or
 * lying about their length), and the files: appends, the consumed offset
 * taken back at a reopen only for the same generation, a torn tail cut at
 * the reopen, a fully consumed file replaced by an empty one of a later
 * generation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "mod/mam_journal.h"
#include "xmppd/alloc.h"

static mam_rec_t
rec(const char *body)
{
    return (mam_rec_t){ .host = "h", .user = "alice", .id = "id1", .peer = "bob@h",
                        .resource = "", .msgid = NULL, .retract = NULL, .body = body,
                        .xml = "<message/>", .ts = 1234567890123456, .dir = 1 };
}

static unsigned char *
frame(const mam_rec_t *r, size_t *n)
{
    *n = mam_rec_size(r);
    unsigned char *b = xd_malloc(*n);
    mam_rec_encode(r, b);
    return b;
}

static void
test_record_round_trip(void **state)
{
    (void)state;
    mam_rec_t in = rec("hello");
    size_t n, used;
    unsigned char *b = frame(&in, &n);
    mam_rec_t out;
    assert_int_equal(mam_rec_decode(b, n, &out, &used), 0);
    assert_int_equal(used, n);
    assert_string_equal(out.host, "h");
    assert_string_equal(out.user, "alice");
    assert_string_equal(out.peer, "bob@h");
    assert_string_equal(out.resource, "");
    assert_string_equal(out.body, "hello");
    assert_string_equal(out.xml, "<message/>");
    assert_null(out.msgid);
    assert_null(out.retract);
    assert_true(out.ts == in.ts);
    assert_int_equal(out.dir, 1);
    /* Without a body. */
    xd_free(b);
    in = rec(NULL);
    b = frame(&in, &n);
    assert_int_equal(mam_rec_decode(b, n, &out, &used), 0);
    assert_null(out.body);
    xd_free(b);
}

/* A version-1 record (journals written before version 2 dropped its flags
 * byte) still decodes: a journal left by the previous release replays. */
static void
test_record_version1(void **state)
{
    (void)state;
    unsigned char b[256];
    unsigned char *p = b + 8;
    *p++ = 1;    /* version */
    *p++ = 0x3;  /* flags, never read */
    *p++ = 0;    /* dir */
    int64_t ts = 1234567890123456;
    memcpy(p, &ts, 8);
    p += 8;
    const char *s[] = { "h", "alice", "id1", "bob@h", "r", NULL, NULL, "hi", "<message/>" };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        uint32_t len = s[i] ? (uint32_t)strlen(s[i]) : UINT32_MAX;
        memcpy(p, &len, 4);
        p += 4;
        if (s[i]) {
            memcpy(p, s[i], len + 1);
            p += len + 1;
        }
    }
    uint32_t plen = (uint32_t)(p - b - 8), crc = (uint32_t)crc32(0L, b + 8, plen);
    memcpy(b, &plen, 4);
    memcpy(b + 4, &crc, 4);
    mam_rec_t out;
    size_t used;
    assert_int_equal(mam_rec_decode(b, 8 + plen, &out, &used), 0);
    assert_int_equal(used, 8 + plen);
    assert_int_equal(out.dir, 0);
    assert_true(out.ts == ts);
    assert_string_equal(out.user, "alice");
    assert_string_equal(out.resource, "r");
    assert_string_equal(out.body, "hi");
    assert_null(out.msgid);
    /* A version that never existed is not a record. */
    b[8] = 7;
    crc = (uint32_t)crc32(0L, b + 8, plen);
    memcpy(b + 4, &crc, 4);
    assert_int_equal(mam_rec_decode(b, 8 + plen, &out, &used), 1);
    /* Version 2 is one byte shorter. */
    mam_rec_t in = { .host = "h", .user = "alice", .id = "id1", .peer = "bob@h", .resource = "r",
                     .body = "hi", .xml = "<message/>", .ts = ts };
    assert_int_equal(mam_rec_size(&in), 8 + plen - 1);
}

static void
placed(void *arg, uint64_t gen, uint64_t at)
{
    uint64_t *v = arg;
    v[0] = gen;
    v[1] = at;
}

static void
test_record_damaged(void **state)
{
    (void)state;
    mam_rec_t in = rec("hello"), out;
    size_t n, used;
    unsigned char *b = frame(&in, &n);
    for (size_t k = 0; k < n; k++) /* every cut is incomplete */
        assert_int_equal(mam_rec_decode(b, k, &out, &used), 1);
    b[n - 3] ^= 0x40; /* a byte of the xml: the crc no longer matches */
    assert_int_equal(mam_rec_decode(b, n, &out, &used), 1);
    b[n - 3] ^= 0x40;
    uint32_t huge = MAM_REC_MAX + 1;
    memcpy(b, &huge, 4); /* a length past the bound */
    assert_int_equal(mam_rec_decode(b, n, &out, &used), 1);
    xd_free(b);
}

typedef struct fx {
    char dir[64];
    mam_journal_t *j;
} fx_t;

static int
setup(void **state)
{
    fx_t *f = xd_new(fx_t);
    snprintf(f->dir, sizeof f->dir, "/tmp/xd-mamj-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->j = xd_new(mam_journal_t);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx_t *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    xd_free(f->j);
    xd_free(f);
    return 0;
}

static void
test_files(void **state)
{
    fx_t *f = *state;
    mam_journal_t *j = f->j;
    assert_int_equal(mam_journal_open(j, f->dir, "h", false), 0);
    assert_int_equal(strlen(j->node), 32);
    mam_rec_t r = rec("one");
    size_t n;
    unsigned char *b = frame(&r, &n);
    assert_int_equal(atomic_load(&j->nf), 0);
    uint64_t where[2] = { 0, 0 };
    assert_int_equal(mam_journal_append(j, 1, b, n, 1, placed, where), 0);
    assert_int_equal(atomic_load(&j->nf), 2); /* files 0 and 1 are looked at */
    assert_true(where[1] == MAM_JHDR);
    assert_int_equal(mam_journal_append(j, 1, b, n, 1, placed, where), 0);
    assert_true(where[1] == MAM_JHDR + n); /* where the second record starts */
    assert_int_equal(atomic_load(&j->pend_records), 2);
    mam_jfile_t *jf = &j->f[1];
    uint64_t gen = jf->gen;
    assert_true(where[0] == gen);
    assert_true(jf->size == MAM_JHDR + 2 * n);
    /* One consumed (committed); the process ends; a torn third record. */
    assert_int_equal(mam_journal_consumed(j, jf, MAM_JHDR + n, 1), 0);
    assert_true(jf->gen == gen); /* not empty: not rotated */
    mam_journal_close(j);
    char path[128];
    snprintf(path, sizeof path, "%s/mam-journal/h/1.log", f->dir);
    FILE *fp = fopen(path, "ab");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, n / 2, fp), n / 2);
    fclose(fp);
    char node[40];
    memcpy(node, j->node, sizeof node);
    memset(j, 0, sizeof *j);
    assert_int_equal(mam_journal_open(j, f->dir, "h", false), 0);
    assert_int_equal(atomic_load(&j->nf), 2); /* from the files found */
    assert_string_equal(j->node, node); /* the same data directory, the same node */
    assert_true(jf->gen == gen);
    /* Another generation's offset does not apply: everything is left. */
    mam_journal_set_consumed(j, jf, gen + 1, MAM_JHDR + n);
    assert_true(jf->consumed == MAM_JHDR);
    assert_int_equal(atomic_load(&j->pend_records), 2);
    assert_true(jf->size == MAM_JHDR + 2 * n); /* the torn half record cut */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_true((uint64_t)sb.st_size == MAM_JHDR + 2 * n);
    mam_journal_close(j);
    memset(j, 0, sizeof *j);
    assert_int_equal(mam_journal_open(j, f->dir, "h", false), 0);
    mam_journal_set_consumed(j, jf, gen, MAM_JHDR + n); /* this generation's */
    assert_true(jf->consumed == MAM_JHDR + n);
    assert_int_equal(atomic_load(&j->pend_records), 1);
    /* All consumed: a new, empty file of a later generation. */
    assert_int_equal(mam_journal_consumed(j, jf, MAM_JHDR + 2 * n, 1), 0);
    assert_true(jf->gen > gen);
    assert_true(jf->size == MAM_JHDR && jf->consumed == MAM_JHDR);
    assert_int_equal(atomic_load(&j->pend_records), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, MAM_JHDR);
    mam_journal_close(j);
    xd_free(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test(test_record_version1),
        cmocka_unit_test(test_record_damaged),
        cmocka_unit_test_setup_teardown(test_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
