# bench/shared/servers/web.sh — what the *-web adapters (xmppd-web,
# ejabberd-web, prosody-web; bench/webcompare.py) share, sourced by them
# after the harness's common.sh (log, wait_listen).  scripts/bench-compare
# copies it beside the adapters.
#
# An adapter sets
#   inner        the plain adapter it wraps (../xmppd/server.sh, …)
#   HTTP_PORT    its web listener's port
#   WEB_CONFIG   the config its setup patches (missing: `start` sets up first)
#   WEB_WAIT     seconds `start` waits for HTTP_PORT to listen
#   WS_PATH BOSH_PATH UPLOAD_HOST   what `env` tells webcompare.py
# defines web_setup (patches the plain adapter's config; exits non-zero
# when it cannot) and ends with `web_adapter "$@"`:
#   setup   "$inner" setup, then web_setup
#   start   (setup,) "$inner" start, then waits for HTTP_PORT
#   env     the plain adapter's env and HTTP_PORT WS_PATH BOSH_PATH UPLOAD_HOST
#   *       the plain adapter's (stop, status, …)
# shellcheck shell=bash disable=SC2154  # the adapter sets inner, HTTP_PORT, …
web_adapter() {
    case ${1:-} in
    setup) "$inner" setup && web_setup ;;
    start)
        [ -f "$WEB_CONFIG" ] || "$0" setup || return 1
        "$inner" start && wait_listen "$HTTP_PORT" "$WEB_WAIT"
        ;;
    env)
        echo "$("$inner" env) HTTP_PORT=$HTTP_PORT WS_PATH=$WS_PATH BOSH_PATH=$BOSH_PATH" \
             "UPLOAD_HOST=$UPLOAD_HOST"
        ;;
    *) exec "$inner" "$@" ;;
    esac
}
