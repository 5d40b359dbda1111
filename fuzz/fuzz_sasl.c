/*
 * fuzz_sasl.c — libFuzzer target for the SASL server engine
 * (src/stream/sasl.c).
 *
 * Where it sits: fuzz/, built by fuzz/meson.build when configured with
 * -Dfuzz=true and CC=clang.
 *
 * Input layout: byte 0 picks the mechanism (low nibble) and the channel
 * binding types (bits 4-5) and whether the binding data comes from a
 * callback (bit 6); byte 1 picks the backend answers (two bits per
 * question); the rest is a sequence of client messages, each preceded by a
 * two-byte big-endian length (a short tail is the last message).  The first
 * message is the initial response, the others are responses, with an abort
 * when a length's top bit is set.
 *
 * Checks: every call returns 0 with a valid result (or XD_EINVAL with NONE
 * for a provide nobody waits for), failures carry a named condition, a
 * success has a JID unless anonymous, and SCRAM never succeeds (the fuzzer
 * cannot know the password behind the credential).  ASan/UBSan do the rest.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stream/sasl.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FS_CHECK(e) ((e) ? (void)0 : abort())

static xd_scram_cred_t fs_creds[XD_SCRAM_HASH_COUNT]; /* made once */
static int fs_ready;                                  /* fs_creds are made */

static int
fs_cb_data(void *arg, xd_sasl_cb type, uint8_t *out, size_t cap, size_t *out_len)
{
    (void)arg;
    FS_CHECK(cap >= 32);
    memset(out, 0x40 + (int)type, 32);
    *out_len = 32;
    return 0;
}

static bool
fs_authz(void *arg, const xd_jid_t *user, const xd_jid_t *authzid)
{
    (void)arg;
    FS_CHECK(user != NULL && authzid != NULL);
    return xd_jid_local(authzid).len % 2 == 0;
}

static void
fs_check(const xd_sasl_result_t *r)
{
    switch (r->kind) {
    case XD_SASL_FAILURE:
        FS_CHECK(xd_sasl_cond_name(r->cond) != NULL);
        break;
    case XD_SASL_SUCCESS:
        FS_CHECK(r->mech == XD_SASL_PLAIN || r->mech == XD_SASL_ANONYMOUS ||
                 r->mech == XD_SASL_EXTERNAL);
        FS_CHECK(r->anonymous || (r->jid != NULL && r->user != NULL));
        break;
    case XD_SASL_CHALLENGE:
        FS_CHECK(r->out != NULL);
        break;
    case XD_SASL_NEED_SCRAM:
        FS_CHECK(r->user != NULL && r->user[0] != '\0');
        break;
    case XD_SASL_NEED_CHECK:
        FS_CHECK(r->user != NULL && r->password != NULL);
        FS_CHECK(strlen(r->password) == r->password_len);
        break;
    case XD_SASL_NEED_EXTERNAL:
        break;
    default:
        abort();
    }
}

/* Answers an outstanding question with choice (0..3). */
static void
fs_answer(xd_sasl_t *s, xd_sasl_result_t *r, unsigned choice)
{
    static const int statuses[4] = { 0, XD_ENOTFOUND, XD_ETIMEDOUT, 0 };
    static const xd_str_t ids[] = { XD_STR("a@example.org"), XD_STR("bb@example.org"),
                                    XD_STR("c@other.example") };
    int rc;
    switch (r->kind) {
    case XD_SASL_NEED_SCRAM:
        rc = xd_sasl_provide_scram(s, statuses[choice], &fs_creds[r->hash], r);
        break;
    case XD_SASL_NEED_CHECK:
        rc = xd_sasl_provide_check(s, statuses[choice], choice == 3, r);
        break;
    case XD_SASL_NEED_EXTERNAL:
        rc = xd_sasl_provide_external(s, statuses[choice], ids, choice, r);
        break;
    default:
        return;
    }
    FS_CHECK(rc == 0);
    fs_check(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fs_ready) {
        xd_log_set_level(XD_LOG_CRIT);
        for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++)
            FS_CHECK(xd_scram_cred_make((xd_scram_hash)h, XD_STR("fuzz password"), 16,
                                        &fs_creds[h]) == 0);
        fs_ready = 1;
    }
    if (size < 2)
        return 0;
    unsigned mode = data[0], answers = data[1];
    data += 2;
    size -= 2;

    xd_sasl_opts_t o = {
        .host = "example.org",
        .mechs = XD_SASL_MECHS_ALL,
        .cb_types = (mode >> 4) & 3,
        .cb_data = (mode & 0x40) ? fs_cb_data : NULL,
        .authz = fs_authz,
        .secret = XD_STR("fuzz secret"),
        .fake_iterations = 16,
    };
    o.cb_bytes[XD_SASL_CB_TLS_EXPORTER] = XD_STR("exporter-bytes-0123456789abcdef!");
    xd_sasl_t *s = xd_sasl_new(&o);
    xd_sasl_result_t r;
    const char *mech = xd_sasl_mech_name((xd_sasl_mech)((mode & 0xf) % XD_SASL_MECH_COUNT));

    for (int k = 0; size > 0 || k == 0; k++) {
        size_t n = size, hdr = 0;
        bool abort_first = false;
        if (size >= 2) {
            unsigned len = ((unsigned)data[0] << 8) | data[1];
            abort_first = (len & 0x8000) != 0;
            len &= 0x7fff;
            hdr = 2;
            n = len <= size - 2 ? len : size - 2;
        }
        const void *msg = data + hdr;
        data += hdr + n;
        size -= hdr + n;
        if (k == 0) {
            FS_CHECK(xd_sasl_start(s, xd_str_c(mech), (mode & 0x80) ? NULL : msg, n, &r) == 0);
        } else {
            if (abort_first)
                xd_sasl_abort(s, &r);
            FS_CHECK(xd_sasl_step(s, msg, n, &r) == 0);
        }
        fs_check(&r);
        fs_answer(s, &r, answers & 3);
        answers >>= 2;
    }
    /* A provide nobody waits for is refused without a result. */
    if (r.kind != XD_SASL_NEED_SCRAM) {
        FS_CHECK(xd_sasl_provide_scram(s, 0, &fs_creds[0], &r) == XD_EINVAL);
        FS_CHECK(r.kind == XD_SASL_NONE);
    }
    xd_sasl_free(s);
    return 0;
}
