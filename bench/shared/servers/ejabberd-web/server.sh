#!/bin/bash
# ejabberd (Debian 23.01) with its web listener (issue 17's comparison,
# bench/webcompare.py), beside the harness's plain ejabberd adapter: the same
# script (../ejabberd/server.sh) with its own port, domain, Erlang
# distribution port, node name and state ($BENCH_RUN/ejabberd-web/ejabberd),
# its config patched after `setup`:
#   an ejabberd_http listener on 127.0.0.1:EJW_HTTP_PORT (5290) with
#   request_handlers /ws: ejabberd_http_ws, /bosh: mod_bosh,
#   /upload: mod_http_upload;
#   mod_bosh {max_inactivity: 3600} (idle BOSH sessions outlive the test);
#   mod_http_upload {put_url http://127.0.0.1:PORT/upload, docroot in the
#   state directory, max_size 200 000 000, no thumbnails}.
# usage: as ../ejabberd/server.sh; `env` adds HTTP_PORT WS_PATH BOSH_PATH UPLOAD_HOST
here=$(cd "$(dirname "$0")" && pwd)
export EJ_PORT=${EJW_PORT:-5225} EJ_DOMAIN=${EJW_DOMAIN:-ejw.test} EJ_DISTPORT=${EJW_DISTPORT:-25802}
HTTP_PORT=${EJW_HTTP_PORT:-5290}
. "$here/../common.sh"
# shellcheck source=bench/shared/servers/web.sh
. "$here/../web.sh"
export BENCH_RUN=$BENCH_RUN/ejabberd-web
RUN=$BENCH_RUN/ejabberd
inner=$here/../ejabberd/server.sh
WEB_CONFIG=$RUN/etc/ejabberd.yml WEB_WAIT=30
WS_PATH=/ws BOSH_PATH=/bosh UPLOAD_HOST=upload.$EJ_DOMAIN
web_setup() {
    local yml=$WEB_CONFIG
    sed -i 's/^ERLANG_NODE=.*/ERLANG_NODE=ejweb@localhost/' "$RUN/etc/ejabberdctl.cfg"
    mkdir -p "$RUN/upload"
    sed -i "s|^listen:\$|listen:\n  -\n    port: $HTTP_PORT\n    ip: \"127.0.0.1\"\n    module: ejabberd_http\n    request_handlers:\n      /ws: ejabberd_http_ws\n      /bosh: mod_bosh\n      /upload: mod_http_upload|" "$yml"
    sed -i "s|^modules:\$|modules:\n  mod_bosh:\n    max_inactivity: 3600\n  mod_http_upload:\n    put_url: \"http://127.0.0.1:$HTTP_PORT/upload\"\n    docroot: \"$RUN/upload\"\n    max_size: 200000000\n    thumbnail: false|" "$yml"
    grep -q '^  mod_http_upload:' "$yml" && grep -q "port: $HTTP_PORT" "$yml" ||
        { log "cannot patch $yml"; exit 1; }
    chown -R ejabberd:ejabberd "$RUN"
}
web_adapter "$@"
