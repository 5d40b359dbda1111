#!/bin/bash
# Prosody (Debian 0.12.3) with its web modules (issue 17's comparison,
# bench/webcompare.py), beside the harness's plain prosody adapter: the same
# script (../prosody/server.sh) with its own port, domain and state
# ($BENCH_RUN/prosody-web/prosody), its config patched after `setup`:
#   http_ports {PRW_HTTP_PORT (15290)} on 127.0.0.1, http_default_host the
#   VirtualHost; mod_websocket (/xmpp-websocket) and mod_bosh (/http-bind,
#   bosh_max_inactivity 3600: idle BOSH sessions outlive the test);
#   Component upload.DOMAIN "http_file_share" with a 200 000 000-byte file
#   limit and a daily quota of 10 GB (/file_share/).
# usage: as ../prosody/server.sh; `env` adds HTTP_PORT WS_PATH BOSH_PATH UPLOAD_HOST
here=$(cd "$(dirname "$0")" && pwd)
export PR_PORT=${PRW_PORT:-15225} PR_DOMAIN=${PRW_DOMAIN:-prw.test}
HTTP_PORT=${PRW_HTTP_PORT:-15290}
. "$here/../common.sh"
# shellcheck source=bench/shared/servers/web.sh
. "$here/../web.sh"
export BENCH_RUN=$BENCH_RUN/prosody-web
RUN=$BENCH_RUN/prosody
CFG=$RUN/prosody.cfg.lua
inner=$here/../prosody/server.sh
WEB_CONFIG=$CFG WEB_WAIT=30
WS_PATH=/xmpp-websocket BOSH_PATH=/http-bind UPLOAD_HOST=upload.$PR_DOMAIN
web_setup() {
    sed -i -e "s|^http_ports = .*|http_ports = { $HTTP_PORT }\nhttp_interfaces = { \"127.0.0.1\" }\nhttp_default_host = \"$PR_DOMAIN\"|" \
        -e 's|^modules_enabled = {$|modules_enabled = {\n\t"websocket"; "bosh";|' "$CFG"
    # before the first VirtualHost: global options
    sed -i "s|^VirtualHost |bosh_max_inactivity = 3600\nhttp_file_share_size_limit = 200*1000*1000\nhttp_file_share_daily_quota = 10*1000*1000*1000\nVirtualHost |" "$CFG"
    printf 'Component "upload.%s" "http_file_share"\n' "$PR_DOMAIN" >> "$CFG"
    grep -q '"websocket"' "$CFG" && grep -q "http_ports = { $HTTP_PORT }" "$CFG" ||
        { log "cannot patch $CFG"; exit 1; }
    chown -R prosody:prosody "$RUN"
}
web_adapter "$@"
