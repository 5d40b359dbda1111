/*
 * test_log.c — unit tests for src/core/log.c: the line format (parsed back
 * with a regex), level filtering before argument evaluation, quoting,
 * truncation, concurrent writers, and reopen after rename (logrotate).
 */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "xmppd/log.h"

typedef struct {
    char dir[256];  /* temporary directory */
    char path[300]; /* log file inside it */
} log_fixture;

static int
log_setup(void **state)
{
    log_fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/xd_test_log.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/xmppd.log", f->dir);
    if (xd_log_open(f->path) != 0)
        return -1;
    xd_log_set_level(XD_LOG_INFO);
    *state = f;
    return 0;
}

static int
log_teardown(void **state)
{
    log_fixture *f = *state;
    char cmd[300];
    xd_log_open("-");
    xd_log_set_level(XD_LOG_INFO);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Reads a whole file into a malloc'd NUL-terminated string. */
static char *
slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[4096];
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            buf = realloc(buf, cap);
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(fp);
    if (buf == NULL)
        buf = calloc(1, 1);
    buf[len] = '\0';
    return buf;
}

static size_t
count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += (*s == '\n');
    return n;
}

static void
test_log__line_format(void **state)
{
    log_fixture *f = *state;
    xd_log_t host, conn;
    regex_t re;
    regmatch_t m[8];

    xd_log_ctx(&host, NULL, "host=%s", "a.example");
    xd_log_ctx(&conn, &host, "conn=%d", 7);
    time_t before = time(NULL);
    XD_LOG(&conn, XD_WARN, "s2s \"dialback\" failed", "remote=%s n=%d", "b.example", 42);
    time_t after = time(NULL);

    char *text = slurp(f->path);
    assert_non_null(text);
    assert_int_equal(regcomp(&re,
                             "^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                             "\\.([0-9]{3})Z level=warn event=\"s2s \\\\\"dialback\\\\\" failed\" "
                             "host=a\\.example conn=7 remote=b\\.example n=42\n$",
                             REG_EXTENDED),
                     0);
    int rc = regexec(&re, text, 8, m, 0);
    if (rc != 0)
        print_error("line was: %s", text);
    assert_int_equal(rc, 0);
    regfree(&re);

    /* The timestamp is UTC and now. */
    struct tm tm = { 0 };
    assert_non_null(strptime(text, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    assert_true(t >= before - 1 && t <= after + 1);
    free(text);
}

static void
test_log__no_context_and_empty_fields(void **state)
{
    log_fixture *f = *state;
    XD_LOG(NULL, XD_NOTICE, "started", "");
    char *text = slurp(f->path);
    const char *p = strstr(text, "Z ");
    assert_non_null(p);
    assert_string_equal(p, "Z level=notice event=\"started\"\n");
    free(text);
}

static int side_effects;

static int
side_effect(void)
{
    side_effects++;
    return side_effects;
}

static void
test_log__level_filter_skips_arguments(void **state)
{
    log_fixture *f = *state;
    side_effects = 0;
    xd_log_set_level(XD_LOG_WARN);
    XD_LOG(NULL, XD_DEBUG, "hidden", "n=%d", side_effect());
    XD_LOG(NULL, XD_INFO, "hidden", "n=%d", side_effect());
    assert_int_equal(side_effects, 0);
    XD_LOG(NULL, XD_WARN, "shown", "n=%d", side_effect());
    XD_LOG(NULL, XD_ERROR, "shown", "n=%d", side_effect());
    assert_int_equal(side_effects, 2);
    xd_log_set_level(XD_LOG_NONE);
    XD_LOG(NULL, XD_CRIT, "hidden", "n=%d", side_effect());
    assert_int_equal(side_effects, 2);

    char *text = slurp(f->path);
    assert_int_equal(count_lines(text), 2);
    assert_null(strstr(text, "hidden"));
    assert_non_null(strstr(text, "level=warn event=\"shown\" n=1\n"));
    assert_non_null(strstr(text, "level=error event=\"shown\" n=2\n"));
    free(text);
}

static void
test_log__quote(void **state)
{
    char buf[64];
    (void)state;
    assert_string_equal(xd_log_quote("plain", buf, sizeof buf), "plain");
    assert_string_equal(xd_log_quote("a b", buf, sizeof buf), "\"a b\"");
    assert_string_equal(xd_log_quote("a\"b", buf, sizeof buf), "\"a\\\"b\"");
    assert_string_equal(xd_log_quote("k=v", buf, sizeof buf), "\"k=v\"");
    assert_string_equal(xd_log_quote("", buf, sizeof buf), "\"\"");
    assert_string_equal(xd_log_quote("a\nb\x01", buf, sizeof buf), "\"a\\nb\\x01\"");
    assert_string_equal(xd_log_quote("back\\slash", buf, sizeof buf), "\"back\\\\slash\"");
    assert_string_equal(xd_log_quote(NULL, buf, sizeof buf), "(null)");
    assert_string_equal(xd_log_quote("h\xc3\xa9llo", buf, sizeof buf), "h\xc3\xa9llo");
    /* Truncation never overflows and keeps the quotes balanced. */
    char small[8];
    assert_string_equal(xd_log_quote("a b c d e f", small, sizeof small), "\"a b c\"");
    assert_string_equal(xd_log_quote("abcdefghij", small, sizeof small), "abcdefg");
    assert_string_equal(xd_log_quote("\"\"\"\"", small, sizeof small), "\"\\\"\\\"\"");
    /* A cut never splits a UTF-8 sequence. */
    assert_string_equal(xd_log_quote("abcdef\xc3\xa9", small, sizeof small), "abcdef");
}

static void
test_log__control_bytes_never_split_lines(void **state)
{
    log_fixture *f = *state;
    XD_LOG(NULL, XD_WARN, "bad\nevent", "text=%s", "two\nlines");
    char *text = slurp(f->path);
    assert_int_equal(count_lines(text), 1);
    assert_non_null(strstr(text, "event=\"bad\\nevent\" text=two?lines\n"));
    free(text);
}

static void
test_log__long_line_truncated(void **state)
{
    log_fixture *f = *state;
    char *big = malloc(10000);
    memset(big, 'x', 9999);
    big[9999] = '\0';
    XD_LOG(NULL, XD_WARN, "big", "v=%s", big);
    XD_LOG(NULL, XD_WARN, "after", "");
    free(big);
    char *text = slurp(f->path);
    assert_int_equal(count_lines(text), 2);
    char *nl = strchr(text, '\n');
    size_t len = (size_t)(nl - text) + 1;
    assert_true(len <= 4096);
    assert_true(len > 4000);
    assert_memory_equal(nl - 3, "\xe2\x80\xa6", 3);
    assert_non_null(strstr(nl + 1, "event=\"after\""));
    free(text);
}

static void
test_log__reopen_after_rename(void **state)
{
    log_fixture *f = *state;
    char rotated[320];

    XD_LOG(NULL, XD_WARN, "first", "");
    snprintf(rotated, sizeof rotated, "%s.1", f->path);
    assert_int_equal(rename(f->path, rotated), 0);
    XD_LOG(NULL, XD_WARN, "second", ""); /* still goes to the renamed file */
    assert_int_equal(xd_log_reopen(), 0);
    XD_LOG(NULL, XD_WARN, "third", "");

    char *old = slurp(rotated), *cur = slurp(f->path);
    assert_non_null(old);
    assert_non_null(cur);
    assert_int_equal(count_lines(old), 2);
    assert_non_null(strstr(old, "event=\"first\""));
    assert_non_null(strstr(old, "event=\"second\""));
    assert_int_equal(count_lines(cur), 1);
    assert_non_null(strstr(cur, "event=\"third\""));

    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0137, 0); /* 0640, or narrower under the umask */
    assert_true((st.st_mode & 0600) == 0600);
    free(old);
    free(cur);
}

static void
test_log__open_error(void **state)
{
    (void)state;
    assert_true(xd_log_open("/nonexistent-dir-xd/x.log") < 0);
}

enum { LOG_THREADS = 4, LOG_LINES = 2000 };

static void
log_writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LOG_LINES; i++)
        XD_LOG(NULL, XD_WARN, "concurrent", "thread=%d i=%d pad=%0200d", id, i, 0);
}

static int log_reopen_failures;

static void
log_rotator(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++)
        if (xd_log_reopen() != 0)
            log_reopen_failures++; /* read after join */
}

static void
test_log__concurrent_lines_do_not_interleave(void **state)
{
    log_fixture *f = *state;
    uv_thread_t th[LOG_THREADS + 1];
    for (int i = 0; i < LOG_THREADS; i++)
        assert_int_equal(uv_thread_create(&th[i], log_writer, (void *)(intptr_t)i), 0);
    assert_int_equal(uv_thread_create(&th[LOG_THREADS], log_rotator, NULL), 0);
    for (int i = 0; i <= LOG_THREADS; i++)
        uv_thread_join(&th[i]);
    assert_int_equal(log_reopen_failures, 0);

    char *text = slurp(f->path);
    assert_int_equal(count_lines(text), LOG_THREADS * LOG_LINES);
    int next[LOG_THREADS] = { 0 };
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        int id, i;
        *nl = '\0';
        const char *kv = strstr(line, "event=\"concurrent\" thread=");
        assert_non_null(kv);
        assert_int_equal(sscanf(kv, "event=\"concurrent\" thread=%d i=%d", &id, &i), 2);
        assert_in_range(id, 0, LOG_THREADS - 1);
        assert_int_equal(i, next[id]); /* each writer's lines in order, none lost */
        next[id]++;
        line = nl + 1;
    }
    free(text);
}

static void
test_log__level_names(void **state)
{
    (void)state;
    assert_int_equal(xd_log_level_parse("info"), XD_LOG_INFO);
    assert_int_equal(xd_log_level_parse("WARN"), XD_LOG_WARN);
    assert_int_equal(xd_log_level_parse("warning"), XD_LOG_WARN);
    assert_int_equal(xd_log_level_parse("debug"), XD_LOG_DEBUG);
    assert_int_equal(xd_log_level_parse("none"), XD_LOG_NONE);
    assert_int_equal(xd_log_level_parse("loud"), -1);
    assert_int_equal(xd_log_level_parse(NULL), -1);
    assert_string_equal(xd_log_level_name(XD_LOG_CRIT), "crit");
    assert_string_equal(xd_log_level_name(XD_LOG_NOTICE), "notice");
    assert_string_equal(xd_log_level_name((xd_log_level)99), "unknown");
}

static void
test_log__default_level_is_info(void **state)
{
    (void)state;
    /* Runs first, before any test changed the level. */
    assert_int_equal(atomic_load(&xd_log_level_cur), XD_LOG_INFO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log__default_level_is_info),
        cmocka_unit_test_setup_teardown(test_log__line_format, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log__no_context_and_empty_fields, log_setup,
                                        log_teardown),
        cmocka_unit_test_setup_teardown(test_log__level_filter_skips_arguments, log_setup,
                                        log_teardown),
        cmocka_unit_test(test_log__quote),
        cmocka_unit_test_setup_teardown(test_log__control_bytes_never_split_lines, log_setup,
                                        log_teardown),
        cmocka_unit_test_setup_teardown(test_log__long_line_truncated, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log__reopen_after_rename, log_setup, log_teardown),
        cmocka_unit_test(test_log__open_error),
        cmocka_unit_test_setup_teardown(test_log__concurrent_lines_do_not_interleave, log_setup,
                                        log_teardown),
        cmocka_unit_test(test_log__level_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
