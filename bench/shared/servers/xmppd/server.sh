#!/bin/bash
# xmppd control script for the shared XMPP benchmark harness (../shared/bench).
# usage: server.sh install|setup|start|stop|restart|pid|register [N]|register-cli USER|status|env
#
# Lives in the xmppd repository under bench/shared/servers/xmppd/ and is copied
# by scripts/bench-compare into servers/xmppd/ of a copy of the harness, next
# to common.sh, so it follows the harness's adapter interface (README.md there).
# Runtime state: $BENCH_RUN/xmppd (config as rendered, SQLite data, log,
# certificate, control socket, PID file).  Port 35222, domain xd.test,
# 127.0.0.1 only.  Environment:
#   XMPPD_BIN      server binary   (default /work/main/build-release/xmppd)
#   XMPPCTL_BIN    control tool    (default: xmppctl beside XMPPD_BIN)
#   XD_PORT XD_DOMAIN XD_WORKERS XD_LOGLEVEL   (35222 xd.test 2 warning)
#   XD_NAME        adapter name and state directory under $BENCH_RUN (xmppd)
#   XD_MAM=1       also load mod_mam (message archive, both parties' copies)
#                  with its defaults (the xmppd-mam adapter sets this)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/../common.sh"
NAME=${XD_NAME:-xmppd}
PORT=${XD_PORT:-35222}
DOMAIN=${XD_DOMAIN:-xd.test}
WORKERS=${XD_WORKERS:-2}
LOGLEVEL=${XD_LOGLEVEL:-warning}
IO_URING=${XD_IO_URING:-true}
XMPPD_BIN=${XMPPD_BIN:-/work/main/build-release/xmppd}
XMPPCTL_BIN=${XMPPCTL_BIN:-$(dirname "$XMPPD_BIN")/xmppctl}
RUN=$BENCH_RUN/$NAME
CFG=$RUN/xmppd.yml
SOCK=$RUN/xmppd.sock

pid() { [ -s "$RUN/server.pid" ] && kill -0 "$(cat "$RUN/server.pid")" 2>/dev/null && cat "$RUN/server.pid"; }
CTL() { "$XMPPCTL_BIN" -s "$SOCK" "$@"; }
need_bin() {
    [ -x "$XMPPD_BIN" ] && return 0
    log "no xmppd binary at $XMPPD_BIN: build it (meson setup build-release --buildtype=release" \
        "&& ninja -C build-release) or set XMPPD_BIN"
    exit 1
}

case ${1:-} in
install)
    # Not a Debian package: only check the binary and the tools this script uses.
    need_bin
    ensure_pkg openssl; ensure_pkg iproute2
    ;;
setup)
    "$0" install || exit 1
    mkdir -p "$RUN/data" "$RUN/cert"
    make_cert "$DOMAIN" "$RUN/cert"           # RSA-2048, like the other adapters
    chmod 600 "$RUN/cert/$DOMAIN.key" "$RUN/cert/$DOMAIN.pem"
    sed -e "s|@DOMAIN@|$DOMAIN|g; s|@PORT@|$PORT|g; s|@RUN@|$RUN|g" \
        -e "s|@WORKERS@|$WORKERS|g; s|@LOGLEVEL@|$LOGLEVEL|g; s|@IO_URING@|$IO_URING|g" "$here/xmppd.yml.in" > "$CFG"
    # modules: is the config's last section
    if [ "${XD_MAM:-0}" = 1 ]; then printf '  mod_mam: {}\n' >> "$CFG"; fi
    "$XMPPD_BIN" --check-config -c "$CFG" >&2 || { log "xmppd rejects $CFG"; exit 1; }
    ;;
start)
    [ -f "$CFG" ] || "$0" setup || exit 1
    need_bin
    if [ -n "$(pid)" ]; then log "already running: $(pid)"; exit 0; fi
    if ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q LISTEN; then
        log "port $PORT is taken by another process:"; ss -Hltnp "sport = :$PORT" >&2; exit 1
    fi
    ulimit -n "$FD_LIMIT"
    rm -f "$RUN/server.pid"
    # foreground process in the background: $! is xmppd itself
    "$XMPPD_BIN" -c "$CFG" > "$RUN/stdout.log" 2>&1 &
    p=$!
    echo "$p" > "$RUN/server.pid"
    for _ in $(seq 1 150); do   # up to 30 s; give up at once if it died
        kill -0 "$p" 2>/dev/null || { log "xmppd exited during start-up"; tail -20 "$RUN/stdout.log" "$RUN/xmppd.log" >&2; rm -f "$RUN/server.pid"; exit 1; }
        ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -q "pid=$p," && break
        sleep 0.2
    done
    wait_listen "$PORT" 1 || { tail -20 "$RUN/stdout.log" "$RUN/xmppd.log" >&2; exit 1; }
    log "xmppd started pid=$p port=$PORT domain=$DOMAIN workers=$WORKERS"
    show_listen "$p" >&2
    ;;
stop)
    p=$(pid)
    [ -z "$p" ] && { log "not running"; exit 0; }
    stop_pid "$p" 30                 # SIGTERM: graceful (system-shutdown to clients)
    rm -f "$RUN/server.pid"
    log "xmppd stopped"
    ;;
restart) "$0" stop; "$0" start ;;
pid) pid ;;
register)   # bulk: in-band registration (XEP-0077) through the load driver, as for the others
    n=${2:-$NUSERS}; ensure_driver
    "$XMPPLOAD" -m register -p "$PORT" -d "$DOMAIN" -w "$PASSWORD" -n "$n" -c 50 -L xmppd-register
    ;;
register-cli)  # one user through the control socket
    CTL register "${2:-user1}" "$DOMAIN" "$PASSWORD"
    ;;
status) if [ -n "$(pid)" ]; then echo "running $(pid)"; CTL status; else echo stopped; fi ;;
env) echo "NAME=$NAME HOST=127.0.0.1 PORT=$PORT DOMAIN=$DOMAIN PIDS=$(pid)" ;;
*) echo "usage: $0 install|setup|start|stop|restart|pid|register [N]|register-cli USER|status|env" >&2; exit 1 ;;
esac
