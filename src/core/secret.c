/*
 * secret.c — the node secret (see secret.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "core/secret.h"
#include "xmppd/err.h"

static unsigned char node_secret[XD_NODE_SECRET_LEN];
static size_t node_secret_len;

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

xd_str_t
xd_node_secret(void)
{
    return (xd_str_t){ (const char *)node_secret, node_secret_len };
}

void
xd_node_secret_clear(void)
{
    OPENSSL_cleanse(node_secret, sizeof node_secret);
    node_secret_len = 0;
}
