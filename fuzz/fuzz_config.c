/*
 * fuzz_config.c — libFuzzer target for the configuration loader (STYLE.md 3.11).
 *
 * Feeds arbitrary bytes through the whole path an operator's file takes:
 * libyaml → node tree (depth and alias-expansion caps) → option tables →
 * host scopes and cross references.  Invariants checked by the sanitizers:
 * no crash, no leak, and an error always comes with a message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "xmppd/acl.h"
#include "xmppd/assert.h"
#include "xmppd/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xd_config_t *cfg = NULL;
    char *err = NULL;
    int rc = xd_config_load_string("fuzz.yml", (const char *)data, size, &cfg, &err);
    if (rc == 0) {
        XD_ASSERT(cfg != NULL && err == NULL);
        /* Walk what a server would read. */
        for (size_t i = 0; i < xd_config_host_count(cfg); i++)
            XD_ASSERT(xd_config_host(cfg, xd_config_host_name(cfg, i)) != NULL);
        (void)xd_access_match(cfg, xd_config_default_host(cfg), "c2s", NULL, NULL);
        xd_config_unref(cfg);
    } else {
        XD_ASSERT(cfg == NULL && err != NULL);
        free(err);
    }
    return 0;
}
