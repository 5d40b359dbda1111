#!/bin/bash
# xmppd with its message archive on (mod_mam, defaults: every chat message
# archived for both parties, batched writes to SQLite), beside the plain
# xmppd adapter: its own port, domain and state ($BENCH_RUN/xmppd-mam), so
# the two run interleaved in one harness run (scripts/bench-compare msg-mam).
# usage: as ../xmppd/server.sh
here=$(cd "$(dirname "$0")" && pwd)
XD_NAME=xmppd-mam XD_PORT=${XDM_PORT:-35224} XD_DOMAIN=${XDM_DOMAIN:-xdm.test} XD_MAM=1 \
    exec "$here/../xmppd/server.sh" "$@"
