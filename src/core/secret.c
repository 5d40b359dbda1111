/*
 * secret.c — the node secret (see secret.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <uv.h>

#include "core/secret.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"

#define NODE_KEY_INFO "xmppd node key: " /* HKDF info prefix; the purpose follows */

static unsigned char node_secret[XD_NODE_SECRET_LEN];
static size_t node_secret_len;

/* The stand-in for a process that has not loaded the secret. */
static unsigned char proc_secret[XD_NODE_SECRET_LEN]; /* written once under proc_once */
static pthread_once_t proc_once = PTHREAD_ONCE_INIT;

static void
proc_secret_init(void)
{
    /* Without randomness the keys could be guessed; that is worth a stop. */
    int rc = uv_random(NULL, NULL, proc_secret, sizeof proc_secret, 0, NULL);
    XD_ASSERT(rc == 0);
}

int
xd_node_secret_load(const char *data_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/secret", data_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, node_secret, sizeof node_secret);
        close(fd);
        if (n == (ssize_t)sizeof node_secret) {
            node_secret_len = sizeof node_secret;
            return 0;
        }
    }
    if (uv_random(NULL, NULL, node_secret, sizeof node_secret, 0, NULL) != 0)
        return XD_EINTERNAL;
    char tmp[4120];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    bool ok = write(fd, node_secret, sizeof node_secret) == (ssize_t)sizeof node_secret &&
              fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return XD_EINTERNAL;
    }
    node_secret_len = sizeof node_secret;
    return 0;
}

void
xd_node_key(const char *purpose, unsigned char out[XD_NODE_KEY_LEN])
{
    const unsigned char *prk = node_secret;
    if (node_secret_len == 0) {
        pthread_once(&proc_once, proc_secret_init);
        prk = proc_secret;
    }
    /* HKDF-Expand, L = HashLen: T(1) = HMAC-Hash(PRK, info | 0x01). */
    size_t pl = strlen(purpose), il = sizeof NODE_KEY_INFO - 1 + pl;
    unsigned char info[128];
    XD_ASSERT(il + 1 <= sizeof info);
    memcpy(info, NODE_KEY_INFO, sizeof NODE_KEY_INFO - 1);
    memcpy(info + sizeof NODE_KEY_INFO - 1, purpose, pl);
    info[il] = 0x01;
    unsigned len = 0;
    unsigned char *r = HMAC(EVP_sha256(), prk, XD_NODE_SECRET_LEN, info, il + 1, out, &len);
    XD_ASSERT(r != NULL && len == XD_NODE_KEY_LEN); /* fails only with a broken OpenSSL */
}

void
xd_node_secret_clear(void)
{
    OPENSSL_cleanse(node_secret, sizeof node_secret);
    node_secret_len = 0;
}
