#!/bin/bash
# xmppd with its web listener (issue 17's comparison, bench/webcompare.py):
# the plain xmppd adapter with its own port, domain and state
# ($BENCH_RUN/xmppd-web), and after `setup` a `module: http` listener on
# 127.0.0.1:XDW_HTTP_PORT (35290) serving its default handlers (/ws
# WebSocket, /bosh BOSH, /upload for mod_upload), no shaper, BOSH sessions
# kept for an hour without a request (the idle BOSH test), and mod_upload
# with a 200 MB file limit (put_url from the listener: http://DOMAIN:PORT/upload).
# usage: as ../xmppd/server.sh; `env` adds HTTP_PORT WS_PATH BOSH_PATH UPLOAD_HOST
here=$(cd "$(dirname "$0")" && pwd)
export XD_NAME=xmppd-web XD_PORT=${XDW_PORT:-35225} XD_DOMAIN=${XDW_DOMAIN:-xdw.test}
HTTP_PORT=${XDW_HTTP_PORT:-35290}
inner=$here/../xmppd/server.sh
. "$here/../common.sh"
# shellcheck source=bench/shared/servers/web.sh
. "$here/../web.sh"
WEB_CONFIG=$BENCH_RUN/$XD_NAME/xmppd.yml WEB_WAIT=10
WS_PATH=/ws BOSH_PATH=/bosh UPLOAD_HOST=upload.$XD_DOMAIN
web_setup() {
    local cfg=$WEB_CONFIG
    # the HTTP listener first in `listen:`, mod_upload at the end of `modules:`
    # (the config's last section)
    sed -i "s|^listen:\$|listen:\n  - port: $HTTP_PORT\n    ip: \"127.0.0.1\"\n    module: http\n    shaper: none\n    max_connections: 100000\n    request_rate: 1000000\n    bosh_max_inactivity: 1h|" "$cfg"
    grep -q "port: $HTTP_PORT" "$cfg" || { log "cannot add the http listener to $cfg"; exit 1; }
    printf '  mod_upload:\n    max_size: 200000000\n' >> "$cfg"
    "${XMPPD_BIN:-/work/main/build-release/xmppd}" --check-config -c "$cfg" >&2 ||
        { log "xmppd rejects $cfg"; exit 1; }
}
web_adapter "$@"
