#!/bin/bash
# xmppd with its message archive on (mod_mam, defaults: every chat message
# archived for both parties, batched writes to SQLite), beside the plain
# xmppd adapter: its own port, domain and state ($BENCH_RUN/xmppd-mam), so
# the two run interleaved in one harness run (scripts/bench-compare msg-mam).
# usage: as ../xmppd/server.sh
#
# `setup` (each scripts/bench-compare run) starts from a new, empty data
# directory: the archive of earlier runs (millions of rows, gigabytes) would
# make the indexer's rate depend on how many runs came before.  The users
# are registered again (bench-compare finds they cannot log in).  XDM_KEEP=1
# keeps the data directory of the previous run.
here=$(cd "$(dirname "$0")" && pwd)
RUN=${BENCH_RUN:-/var/tmp/xmppbench}/xmppd-mam
if [ "${1:-}" = setup ] && [ "${XDM_KEEP:-0}" != 1 ]; then
    if [ -s "$RUN/server.pid" ] && kill -0 "$(cat "$RUN/server.pid")" 2>/dev/null; then
        echo "xmppd-mam: running (pid $(cat "$RUN/server.pid")): its data directory is kept" >&2
    elif [ -d "$RUN/data" ]; then
        echo "xmppd-mam: a new data directory (XDM_KEEP=1 keeps it)" >&2
        rm -rf "$RUN/data" "$RUN/.bench-compare-users"
    fi
fi
XD_NAME=xmppd-mam XD_PORT=${XDM_PORT:-35224} XD_DOMAIN=${XDM_DOMAIN:-xdm.test} XD_MAM=1 \
    exec "$here/../xmppd/server.sh" "$@"
