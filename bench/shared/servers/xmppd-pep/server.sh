#!/bin/bash
# xmppd with PEP (XEP-0163, mod_pep with its defaults: SQLite, +notify
# filtering by entity capabilities) for bench/pep.py, beside the plain xmppd
# adapter: its own port, domain and state ($BENCH_RUN/xmppd-pep); mod_pep is
# appended to the rendered config (modules: is its last section) after the
# plain adapter's `setup`.
# usage: as ../xmppd/server.sh
# The port is below Linux's ephemeral range (32768-60999): 35226 was taken
# by another benchmark's client connections in TIME-WAIT (bind failed).
here=$(cd "$(dirname "$0")" && pwd)
export XD_NAME=xmppd-pep XD_PORT=${XDP_PORT:-25226} XD_DOMAIN=${XDP_DOMAIN:-xdp.test}
inner=$here/../xmppd/server.sh
case ${1:-} in
setup)
    "$inner" setup || exit 1
    . "$here/../common.sh"
    cfg=$BENCH_RUN/$XD_NAME/xmppd.yml
    printf '  mod_pep: {}\n' >> "$cfg"
    "${XMPPD_BIN:-/work/main/build-release/xmppd}" --check-config -c "$cfg" >&2 ||
        { log "xmppd rejects $cfg"; exit 1; }
    ;;
start)
    . "$here/../common.sh"
    [ -f "$BENCH_RUN/$XD_NAME/xmppd.yml" ] || "$0" setup || exit 1
    exec "$inner" start
    ;;
*) exec "$inner" "$@" ;;
esac
